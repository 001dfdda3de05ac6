/*
 * check_bson_check.c: the non-recursive BSON checker: well-formed documents with every element
 * type, each class of malformation, the depth limit (exactly at it, one past it, code with scope,
 * and a document nested 9,350 levels deep), and a differential test against libbson on thousands
 * of randomly mutated documents.
 */
#include "bson_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "check_main.h"

static char err[256];

/* Checks len bytes copied into a buffer of exactly that size, so that AddressSanitizer catches any
 * read past what the checker was allowed to look at. */
static int check_exact(const uint8_t *p, size_t len, int max_depth)
{
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    if (len)
        memcpy(copy, p, len);
    err[0] = 0;
    int rc = bson_check(copy, len, max_depth, err, sizeof(err));
    free(copy);
    return rc;
}

static int check_bson(const bson_t *b)
{
    return check_exact(bson_get_data(b), b->len, BSON_CHECK_MAX_DEPTH);
}

/* What libbson's bson_validate(BSON_VALIDATE_NONE) says of the document at p. */
static bool libbson_accepts(const uint8_t *p, size_t len)
{
    bson_t b;
    return bson_init_static(&b, p, len) && bson_validate(&b, BSON_VALIDATE_NONE, NULL);
}

static int32_t get_i32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

static void put_i32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

/* A document with one element of every type, and the things inside them worth covering. */
static bson_t *every_type(void)
{
    bson_t *b = bson_new();
    bson_t child, scope;
    bson_oid_t oid;
    bson_decimal128_t dec;
    static const uint8_t bin[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    bson_oid_init_from_string(&oid, "5f1d7f3e9a1b2c3d4e5f6a7b");
    bson_decimal128_from_string("1.5E+10", &dec);
    BSON_APPEND_DOUBLE(b, "double", 3.25);
    BSON_APPEND_UTF8(b, "string", "héllo wörld");
    BSON_APPEND_UTF8(b, "empty string", "");
    bson_append_utf8(b, "embedded nul", -1, "a\0b", 3);
    BSON_APPEND_DOCUMENT_BEGIN(b, "document", &child);
    BSON_APPEND_INT32(&child, "x", 1);
    bson_append_document_end(b, &child);
    BSON_APPEND_DOCUMENT_BEGIN(b, "empty document", &child);
    bson_append_document_end(b, &child);
    BSON_APPEND_ARRAY_BEGIN(b, "array", &child);
    BSON_APPEND_INT32(&child, "0", 1);
    BSON_APPEND_UTF8(&child, "1", "two");
    bson_append_array_end(b, &child);
    BSON_APPEND_BINARY(b, "binary", BSON_SUBTYPE_BINARY, bin, 5);
    BSON_APPEND_BINARY(b, "empty binary", BSON_SUBTYPE_BINARY, bin, 0);
    BSON_APPEND_BINARY(b, "uuid", BSON_SUBTYPE_UUID, bin, 16);
    BSON_APPEND_BINARY(b, "old binary", BSON_SUBTYPE_BINARY_DEPRECATED, bin, 7);
    BSON_APPEND_BINARY(b, "user binary", BSON_SUBTYPE_USER, bin, 3);
    BSON_APPEND_UNDEFINED(b, "undefined");
    BSON_APPEND_OID(b, "oid", &oid);
    BSON_APPEND_BOOL(b, "true", true);
    BSON_APPEND_BOOL(b, "false", false);
    BSON_APPEND_DATE_TIME(b, "date", INT64_C(1700000000000));
    BSON_APPEND_NULL(b, "null");
    BSON_APPEND_REGEX(b, "regex", "^a.*b$", "im");
    BSON_APPEND_REGEX(b, "empty regex", "", "");
    BSON_APPEND_DBPOINTER(b, "dbpointer", "db.coll", &oid);
    BSON_APPEND_CODE(b, "code", "function () { return 1; }");
    BSON_APPEND_SYMBOL(b, "symbol", "sym");
    bson_init(&scope);
    BSON_APPEND_INT32(&scope, "x", 5);
    BSON_APPEND_DOCUMENT_BEGIN(&scope, "nested", &child);
    BSON_APPEND_UTF8(&child, "y", "z");
    bson_append_document_end(&scope, &child);
    BSON_APPEND_CODE_WITH_SCOPE(b, "code with scope", "function () { return x; }", &scope);
    bson_destroy(&scope);
    bson_init(&scope);
    BSON_APPEND_CODE_WITH_SCOPE(b, "code with empty scope", "", &scope);
    bson_destroy(&scope);
    BSON_APPEND_INT32(b, "int32", -7);
    BSON_APPEND_TIMESTAMP(b, "timestamp", 1700000000, 3);
    BSON_APPEND_INT64(b, "int64", INT64_C(-9000000000));
    BSON_APPEND_DECIMAL128(b, "decimal128", &dec);
    BSON_APPEND_MAXKEY(b, "maxkey");
    BSON_APPEND_MINKEY(b, "minkey");
    BSON_APPEND_INT32(b, "", 0);                                   /* an empty key */
    BSON_APPEND_INT32(b, "ключ \xe2\x82\xac \xf0\x9f\x98\x80", 1); /* 2-, 3- and 4-byte UTF-8 */
    return b;
}

START_TEST(valid_every_type)
{
    bson_t *b = every_type();
    ck_assert(libbson_accepts(bson_get_data(b), b->len));
    ck_assert_int_eq(check_bson(b), 0);

    /* Bytes after the document are not looked at. */
    uint8_t *more = malloc(b->len + 7);
    memcpy(more, bson_get_data(b), b->len);
    memset(more + b->len, 0xff, 7);
    ck_assert_int_eq(check_exact(more, b->len + 7, BSON_CHECK_MAX_DEPTH), 0);
    free(more);
    bson_destroy(b);

    /* The smallest document, and an error buffer that may be left out. */
    static const uint8_t empty[] = {5, 0, 0, 0, 0};
    ck_assert_int_eq(check_exact(empty, 5, 0), 0);
    ck_assert_int_eq(bson_check(empty, 5, 0, NULL, 0), 0);
    ck_assert_int_eq(bson_check(empty, 4, 0, NULL, 0), -EPROTO);

    /* Each type on its own, as the last element before the terminator. */
    b = every_type();
    bson_iter_t it;
    ck_assert(bson_iter_init(&it, b));
    while (bson_iter_next(&it)) {
        bson_t one = BSON_INITIALIZER;
        ck_assert(bson_append_iter(&one, NULL, 0, &it));
        ck_assert_msg(check_bson(&one) == 0, "%s: %s", bson_iter_key(&it), err);
        bson_destroy(&one);
    }
    bson_destroy(b);
}
END_TEST

START_TEST(max_depth_argument)
{
    static const uint8_t empty[] = {5, 0, 0, 0, 0};
    ck_assert_int_eq(check_exact(empty, 5, -1), -EINVAL);
    ck_assert_int_eq(check_exact(empty, 5, BSON_CHECK_MAX_DEPTH + 1), -EINVAL);
    ck_assert_str_ne(err, "");
    ck_assert_int_eq(check_exact(empty, 5, BSON_CHECK_MAX_DEPTH), 0);
}
END_TEST

/* A small document to break: {a: "xy", d: {i: 1}, z: true}. Offsets of its parts are below. */
static const uint8_t base[] = {
    37,   0,   0, 0,                        /* 0: length 37 */
    0x02, 'a', 0, 3,  0, 0, 0, 'x', 'y', 0, /* 4: "a": "xy" (length at 7) */
    0x03, 'd', 0, 12, 0, 0, 0,              /* 14: "d": { (length at 17) */
    0x10, 'i', 0, 1,  0, 0, 0, 0,           /* 21: "i": 1, } */
    0x08, 'z', 0, 1,                        /* 29: "z": true (value at 32) */
    0x0a, 'n', 0,                           /* 33: "n": null */
    0,                                      /* 36: terminator */
    0,    0,                                /* padding so that the length can grow in tests */
};
#define BASE_LEN 37

/* Copies base, applies a one-byte or int32 change, and checks the result. */
static int check_base_byte(size_t off, uint8_t v)
{
    uint8_t d[sizeof(base)];
    memcpy(d, base, sizeof(base));
    d[off] = v;
    return check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH);
}

static int check_base_i32(size_t off, int32_t v)
{
    uint8_t d[sizeof(base)];
    memcpy(d, base, sizeof(base));
    put_i32(d + off, v);
    return check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH);
}

/* Asserts that bson_check finds the document malformed, with a reason naming an offset. */
#define ck_malformed(expr)                                                                         \
    do {                                                                                           \
        ck_assert_int_eq((expr), -EPROTO);                                                         \
        ck_assert_msg(strstr(err, "offset") != NULL, "reason without an offset: %s", err);         \
    } while (0)

START_TEST(malformed_framing)
{
    uint8_t d[sizeof(base)];
    memcpy(d, base, sizeof(base));
    put_i32(d, BASE_LEN);
    ck_assert_int_eq(check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH), 0);
    ck_assert(libbson_accepts(d, BASE_LEN));
    /* Fewer than 5 bytes, a length below 5, negative, or beyond what is available. */
    ck_malformed(check_exact(d, 4, BSON_CHECK_MAX_DEPTH));
    ck_malformed(check_base_i32(0, 4));
    ck_malformed(check_base_i32(0, -1));
    ck_malformed(check_base_i32(0, INT32_MIN));
    ck_malformed(check_exact(d, BASE_LEN - 1, BSON_CHECK_MAX_DEPTH));
    /* No terminating NUL. */
    ck_malformed(check_base_byte(36, 1));
    /* A terminator before the declared end: the length says one byte more than is used. */
    memcpy(d, base, sizeof(base));
    put_i32(d, BASE_LEN + 1);
    ck_malformed(check_exact(d, BASE_LEN + 1, BSON_CHECK_MAX_DEPTH));
    /* The last element eats the terminator: "n" null becomes an int32 that runs past the end. */
    ck_malformed(check_base_byte(33, 0x10));
}
END_TEST

START_TEST(malformed_type_and_key)
{
    /* Types that do not exist, including the gaps around MaxKey. */
    const uint8_t bad_types[] = {0x14, 0x20, 0x7e, 0x80, 0xfe};
    for (size_t i = 0; i < sizeof(bad_types); i++) {
        ck_malformed(check_base_byte(4, bad_types[i]));
        ck_assert_msg(strstr(err, "type") != NULL, "%s", err);
    }
    /* The last key runs into the terminator: "n\0" becomes "nX" and the key never ends. */
    ck_malformed(check_base_byte(35, 'X'));
    /* Keys that are not UTF-8: a lone continuation byte, a byte that never starts a sequence, an
     * overlong form, a surrogate, a code point above U+10FFFF, a sequence cut short. */
    static const char *const bad_keys[] = {
        "\x80",         "\xff",         "\xc0\x80",         "\xc1\xbf",
        "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
        "\xe2\x82",     "\xf0\x9f\x98",
    };
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        uint8_t d[32];
        size_t kl = strlen(bad_keys[i]);
        size_t n = 4 + 1 + kl + 1 + 4 + 1;
        put_i32(d, (int32_t)n);
        d[4] = 0x10;
        memcpy(d + 5, bad_keys[i], kl + 1);
        put_i32(d + 5 + kl + 1, 7);
        d[n - 1] = 0;
        ck_assert_msg(!libbson_accepts(d, n), "libbson accepts key %zu", i);
        ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
        ck_assert_msg(strstr(err, "UTF-8") != NULL, "%s", err);
        /* A valid key of the same length passes. */
        memset(d + 5, 'k', kl);
        ck_assert_msg(check_exact(d, n, BSON_CHECK_MAX_DEPTH) == 0, "%zu: %s", i, err);
    }
}
END_TEST

START_TEST(malformed_strings)
{
    /* "a": "xy" has its length at 7: 3 is right. */
    ck_assert_int_eq(check_base_i32(7, 3), 0);
    ck_malformed(check_base_i32(7, 0));  /* no room for the NUL */
    ck_malformed(check_base_i32(7, -1)); /* negative */
    ck_malformed(check_base_i32(7, 2));  /* "x" then 'y' where the NUL should be */
    ck_malformed(check_base_i32(7, 200));
    ck_malformed(check_base_i32(7, INT32_MAX));
    ck_malformed(check_base_byte(13, 'z')); /* the string's NUL is gone */
    /* The same rules for code and symbol. */
    ck_assert_int_eq(check_base_byte(4, 0x0d), 0);
    ck_assert_int_eq(check_base_byte(4, 0x0e), 0);
    uint8_t d[sizeof(base)];
    memcpy(d, base, sizeof(base));
    d[4] = 0x0d;
    put_i32(d + 7, 0);
    ck_malformed(check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH));
    d[4] = 0x0e;
    put_i32(d + 7, 50);
    ck_malformed(check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH));
}
END_TEST

/* Builds {b: BinData(subtype, data)} with the length field set to declared. */
static size_t build_binary(uint8_t *d, uint8_t subtype, const uint8_t *data, size_t n,
                           int32_t declared)
{
    size_t len = 4 + 3 + 4 + 1 + n + 1;
    put_i32(d, (int32_t)len);
    d[4] = 0x05;
    d[5] = 'b';
    d[6] = 0;
    put_i32(d + 7, declared);
    d[11] = subtype;
    memcpy(d + 12, data, n);
    d[len - 1] = 0;
    return len;
}

START_TEST(malformed_binary)
{
    uint8_t d[64];
    static const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t n = build_binary(d, 0, data, 8, 8);
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), 0);
    n = build_binary(d, 0, data, 0, 0);
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), 0);
    n = build_binary(d, 0, data, 8, 9);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    n = build_binary(d, 0, data, 8, -1);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    n = build_binary(d, 0, data, 8, INT32_MIN);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    /* Subtype 2 carries its own length of the bytes that follow it. */
    uint8_t old[8] = {4, 0, 0, 0, 9, 9, 9, 9};
    n = build_binary(d, 2, old, 8, 8);
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), 0);
    ck_assert(libbson_accepts(d, n));
    old[0] = 3;
    n = build_binary(d, 2, old, 8, 8);
    ck_assert(!libbson_accepts(d, n));
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    n = build_binary(d, 2, old, 3, 3); /* too short to hold the inner length */
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    old[0] = 0;
    n = build_binary(d, 2, old, 4, 4); /* an empty old binary */
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), 0);
}
END_TEST

START_TEST(malformed_bool_regex_dbpointer)
{
    ck_assert_int_eq(check_base_byte(32, 0), 0);
    ck_malformed(check_base_byte(32, 2));
    ck_malformed(check_base_byte(32, 0xff));

    /* {r: /ab/i}: then without the options' NUL, and without the pattern's NUL. */
    uint8_t d[] = {14, 0, 0, 0, 0x0b, 'r', 0, 'a', 'b', 0, 'i', 0, 0, 0};
    put_i32(d, 13);
    ck_assert_int_eq(check_exact(d, 13, BSON_CHECK_MAX_DEPTH), 0);
    d[11] = 'x';
    ck_malformed(check_exact(d, 13, BSON_CHECK_MAX_DEPTH));
    d[11] = 0;
    d[9] = 'c';
    d[11] = 'x'; /* one NUL left in the value: the terminator cannot be the second */
    ck_malformed(check_exact(d, 13, BSON_CHECK_MAX_DEPTH));

    /* {p: DBPointer("c", oid)}. */
    uint8_t p[4 + 3 + 4 + 2 + 12 + 1];
    put_i32(p, sizeof(p));
    p[4] = 0x0c;
    p[5] = 'p';
    p[6] = 0;
    put_i32(p + 7, 2);
    p[11] = 'c';
    p[12] = 0;
    memset(p + 13, 0x11, 12);
    p[sizeof(p) - 1] = 0;
    ck_assert_int_eq(check_exact(p, sizeof(p), BSON_CHECK_MAX_DEPTH), 0);
    ck_assert(libbson_accepts(p, sizeof(p)));
    put_i32(p + 7, 0);
    ck_malformed(check_exact(p, sizeof(p), BSON_CHECK_MAX_DEPTH));
    put_i32(p + 7, 3); /* the OID no longer fits */
    ck_malformed(check_exact(p, sizeof(p), BSON_CHECK_MAX_DEPTH));
    put_i32(p + 7, 2);
    p[12] = 'x';
    ck_malformed(check_exact(p, sizeof(p), BSON_CHECK_MAX_DEPTH));
}
END_TEST

START_TEST(malformed_embedded)
{
    /* "d": {i: 1} has its length at 17 (12 is right) and its terminator at 28. */
    ck_malformed(check_base_i32(17, 4));
    ck_malformed(check_base_i32(17, 0));
    ck_malformed(check_base_i32(17, -12));
    ck_malformed(check_base_i32(17, 13)); /* runs into z */
    ck_malformed(check_base_i32(17, 16)); /* runs into the outer terminator */
    ck_malformed(check_base_i32(17, 11)); /* ends inside its own int32 */
    ck_malformed(check_base_byte(28, 7)); /* its terminator is not a NUL */
    /* libbson skips an embedded document whose terminator is wrong; mongod and we do not. */
    ck_assert(libbson_accepts(base, BASE_LEN) && check_base_byte(28, 0) == 0);
    /* The same for an array. */
    ck_assert_int_eq(check_base_byte(14, 0x04), 0);
    uint8_t d[sizeof(base)];
    memcpy(d, base, sizeof(base));
    d[14] = 0x04;
    put_i32(d + 17, 5);
    ck_malformed(check_exact(d, BASE_LEN, BSON_CHECK_MAX_DEPTH));
    /* A malformed element inside the embedded document. */
    ck_malformed(check_base_byte(21, 0x33));
    ck_malformed(check_base_byte(23, 'q')); /* the inner key runs into the inner terminator */
}
END_TEST

/* Builds {c: CodeWScope("f", {})} and returns its length; offsets: total at 7, string length at
 * 11, code at 15..16, scope at 17..21, terminator at 22. */
static size_t build_cws(uint8_t *d)
{
    static const uint8_t cws[] = {23, 0, 0, 0,   0x0f, 'c', 0, 15, 0, 0, 0, 2,
                                  0,  0, 0, 'f', 0,    5,   0, 0,  0, 0, 0};
    memcpy(d, cws, sizeof(cws));
    return sizeof(cws);
}

START_TEST(malformed_code_with_scope)
{
    uint8_t d[32];
    size_t n = build_cws(d);
    ck_assert(libbson_accepts(d, n));
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), 0);
    /* Total length that does not match the string plus the scope. */
    n = build_cws(d);
    put_i32(d + 7, 16);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    put_i32(d + 7, 14);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    put_i32(d + 7, 13);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    put_i32(d + 7, -1);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    /* String length 0, too long, or without its NUL. */
    n = build_cws(d);
    put_i32(d + 11, 0);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    put_i32(d + 11, 3);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    n = build_cws(d);
    d[16] = 'g';
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    /* A scope whose length disagrees, whose terminator is wrong, or whose content is malformed. */
    n = build_cws(d);
    put_i32(d + 17, 6);
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));
    n = build_cws(d);
    d[21] = 1;
    ck_malformed(check_exact(d, n, BSON_CHECK_MAX_DEPTH));

    bson_t scope = BSON_INITIALIZER, b = BSON_INITIALIZER;
    BSON_APPEND_INT32(&scope, "x", 1);
    BSON_APPEND_CODE_WITH_SCOPE(&b, "c", "f()", &scope);
    uint8_t *p = malloc(b.len);
    memcpy(p, bson_get_data(&b), b.len);
    ck_assert_int_eq(check_exact(p, b.len, BSON_CHECK_MAX_DEPTH), 0);
    /* The scope's int32 element becomes a type that does not exist. */
    uint8_t *x = memchr(p + 20, 0x10, b.len - 20);
    ck_assert_ptr_nonnull(x);
    *x = 0x15;
    ck_assert(!libbson_accepts(p, b.len));
    ck_malformed(check_exact(p, b.len, BSON_CHECK_MAX_DEPTH));
    free(p);
    bson_destroy(&scope);
    bson_destroy(&b);
}
END_TEST

/*
 * Builds a document nested depth levels below the top: {k: {k: ... {} ...}} with type 0x03 and
 * key "a", or arrays with key "0". Built from the outside in, without recursion: level i starts
 * at 7 * i and is 5 + 8 * (depth - i) bytes long. The caller frees the result.
 */
static uint8_t *build_nested(int depth, uint8_t type, size_t *len)
{
    size_t total = 5 + 8 * (size_t)depth;
    uint8_t *d = malloc(total);
    ck_assert_ptr_nonnull(d);
    for (int i = 0; i <= depth; i++) {
        size_t start = 7 * (size_t)i;
        size_t l = 5 + 8 * (size_t)(depth - i);
        put_i32(d + start, (int32_t)l);
        if (i < depth) {
            d[start + 4] = type;
            d[start + 5] = type == 0x04 ? '0' : 'a';
            d[start + 6] = 0;
        } else {
            d[start + 4] = 0;
        }
        d[start + l - 1] = 0;
    }
    *len = total;
    return d;
}

START_TEST(depth_limit)
{
    size_t n;
    uint8_t *d;
    /* Exactly at mongod's limit: accepted, as libbson agrees. One more level: too deep. */
    for (int t = 0; t < 2; t++) {
        uint8_t type = t ? 0x04 : 0x03;
        d = build_nested(BSON_CHECK_MAX_DEPTH, type, &n);
        ck_assert(libbson_accepts(d, n));
        ck_assert_msg(check_exact(d, n, BSON_CHECK_MAX_DEPTH) == 0, "%s", err);
        free(d);
        d = build_nested(BSON_CHECK_MAX_DEPTH + 1, type, &n);
        ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), -EOVERFLOW);
        ck_assert_msg(strstr(err, BSON_CHECK_DEPTH_ERROR_MSG) != NULL, "%s", err);
        free(d);
    }
    /* A smaller limit works the same way; 0 allows only a flat document. */
    d = build_nested(5, 0x03, &n);
    ck_assert_int_eq(check_exact(d, n, 5), 0);
    ck_assert_int_eq(check_exact(d, n, 4), -EOVERFLOW);
    ck_assert_int_eq(check_exact(d, n, 0), -EOVERFLOW);
    free(d);
    d = build_nested(0, 0x03, &n);
    ck_assert_int_eq(check_exact(d, n, 0), 0);
    free(d);

    /* Malformation met before the level that is too deep wins; after it, it is not looked at. */
    d = build_nested(BSON_CHECK_MAX_DEPTH + 1, 0x03, &n);
    d[7 * 3 + 5] = 0xff; /* the key of level 3 is not UTF-8 */
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), -EPROTO);
    free(d);
    d = build_nested(BSON_CHECK_MAX_DEPTH + 5, 0x03, &n);
    d[7 * (BSON_CHECK_MAX_DEPTH + 3) + 5] = 0xff;
    ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), -EOVERFLOW);
    free(d);
}
END_TEST

START_TEST(depth_code_with_scope)
{
    /* mongod spends two levels on code with scope: its scope sits two below its document. */
    uint8_t d[32];
    size_t n = build_cws(d);
    ck_assert_int_eq(check_exact(d, n, 2), 0);
    ck_assert_int_eq(check_exact(d, n, 1), -EOVERFLOW);
    ck_assert_int_eq(check_exact(d, n, 0), -EOVERFLOW);
    /* A code with scope inside a document nested 198 levels deep reaches 200 exactly. */
    bson_t scope = BSON_INITIALIZER, leaf = BSON_INITIALIZER;
    BSON_APPEND_CODE_WITH_SCOPE(&leaf, "c", "f", &scope);
    bson_t *cur = bson_copy(&leaf);
    for (int i = 0; i < BSON_CHECK_MAX_DEPTH - 2; i++) {
        bson_t *next = bson_new();
        BSON_APPEND_DOCUMENT(next, "a", cur);
        bson_destroy(cur);
        cur = next;
    }
    ck_assert_int_eq(check_bson(cur), 0);
    bson_t *deeper = bson_new();
    BSON_APPEND_DOCUMENT(deeper, "a", cur);
    ck_assert_int_eq(check_bson(deeper), -EOVERFLOW);
    bson_destroy(deeper);
    bson_destroy(cur);
    bson_destroy(&leaf);
    bson_destroy(&scope);
}
END_TEST

START_TEST(depth_9350_levels)
{
    /* The request that used to overflow the stack of libbson's recursive validator. */
    for (int t = 0; t < 2; t++) {
        size_t n;
        uint8_t *d = build_nested(9350, t ? 0x04 : 0x03, &n);
        ck_assert_int_eq(check_exact(d, n, BSON_CHECK_MAX_DEPTH), -EOVERFLOW);
        ck_assert_msg(strstr(err, BSON_CHECK_DEPTH_ERROR_MSG) != NULL, "%s", err);
        free(d);
    }
}
END_TEST

/* --- differential test against libbson ---------------------------------------------------- */

/*
 * The reference for "well formed": libbson's own element parser (bson_iter_next) and key check,
 * applied to every embedded document, array and scope, plus the NUL that ends the code of a code
 * with scope. bson_validate() applies the same rules but stops early in a few places (after a
 * string that is not UTF-8, after a valid code with scope, at an embedded document whose
 * terminator is wrong), so on its own it accepts some malformed documents. Recursive: only for
 * the shallow documents of this test.
 */
static bool reference_ok(const uint8_t *data, size_t len)
{
    bson_t b;
    bson_iter_t it;
    if (!bson_init_static(&b, data, len) || !bson_iter_init(&it, &b))
        return false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (!bson_utf8_validate(k, strlen(k), false))
            return false;
        uint32_t n;
        const uint8_t *d;
        switch (bson_iter_type(&it)) {
        case BSON_TYPE_DOCUMENT:
            bson_iter_document(&it, &n, &d);
            if (!reference_ok(d, n))
                return false;
            break;
        case BSON_TYPE_ARRAY:
            bson_iter_array(&it, &n, &d);
            if (!reference_ok(d, n))
                return false;
            break;
        case BSON_TYPE_CODEWSCOPE: {
            uint32_t code_len;
            const char *code = bson_iter_codewscope(&it, &code_len, &n, &d);
            if (code[code_len] != 0 || !reference_ok(d, n))
                return false;
            break;
        }
        default:
            break;
        }
    }
    /* bson_iter_next stops at the terminator with err_off 0, or at corruption with its offset. */
    return it.err_off == 0;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* The documents the mutations start from. */
static bson_t *seed_doc(int i)
{
    bson_t *b;
    bson_error_t e;
    switch (i) {
    case 0:
        return every_type();
    case 1: {
        /* Nested 30 levels, arrays and documents in turn; keys "0" and "1" suit both. */
        bson_t *cur = bson_new();
        BSON_APPEND_INT32(cur, "leaf", 1);
        for (int l = 0; l < 30; l++) {
            bson_t *next = bson_new();
            if (l % 2)
                BSON_APPEND_ARRAY(next, "0", cur);
            else
                BSON_APPEND_DOCUMENT(next, "0", cur);
            BSON_APPEND_UTF8(next, "1", "v");
            bson_destroy(cur);
            cur = next;
        }
        return cur;
    }
    case 2:
        b = bson_new_from_json(
            (const uint8_t
                 *)"{\"insert\": \"c\", \"documents\": [{\"_id\": 1, \"a\": [1, 2, {\"b\": "
                   "null}]}], \"ordered\": true, \"lsid\": {\"id\": {\"$binary\": "
                   "{\"base64\": \"AAAAAAAAAAAAAAAAAAAAAA==\", \"subType\": \"04\"}}}, "
                   "\"$db\": \"test\"}",
            -1, &e);
        ck_assert_ptr_nonnull(b);
        return b;
    default: {
        /* Code with scope whose scope nests, and regexes and pointers between them. */
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "000102030405060708090a0b");
        bson_t scope = BSON_INITIALIZER, inner;
        BSON_APPEND_DOCUMENT_BEGIN(&scope, "n", &inner);
        BSON_APPEND_REGEX(&inner, "r", "x+", "s");
        bson_append_document_end(&scope, &inner);
        b = bson_new();
        BSON_APPEND_CODE_WITH_SCOPE(b, "c", "g(n)", &scope);
        BSON_APPEND_DBPOINTER(b, "p", "a.b", &oid);
        BSON_APPEND_REGEX(b, "r", "y", "");
        BSON_APPEND_CODE_WITH_SCOPE(b, "c2", "h", &scope);
        BSON_APPEND_BOOL(b, "t", true);
        bson_destroy(&scope);
        return b;
    }
    }
}

/* Applies one random change to the n bytes at d (room for cap), returning the new length. */
static size_t mutate(uint8_t *d, size_t n, size_t cap)
{
    static const int32_t lengths[] = {0, 1, 4, 5, 6, 13, 14, -1, INT32_MAX, INT32_MIN, 255};
    static const uint8_t bytes[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
                                    0x0f, 0x7f, 0x80, 0xc3, 0xff};
    size_t pos = rnd((uint32_t)n);
    switch (rnd(6)) {
    case 0:
        d[pos] ^= (uint8_t)(1u << rnd(8));
        break;
    case 1:
        d[pos] = bytes[rnd(sizeof(bytes))];
        break;
    case 2:
        if (pos + 4 <= n) {
            int32_t v = rnd(2) ? lengths[rnd(sizeof(lengths) / sizeof(lengths[0]))]
                               : (int32_t)((uint32_t)get_i32(d + pos) + rnd(5) - 2);
            put_i32(d + pos, v);
        }
        break;
    case 3:
        d[pos] = (uint8_t)rnd(256);
        break;
    case 4: /* delete a byte */
        if (n > 5) {
            memmove(d + pos, d + pos + 1, n - pos - 1);
            n--;
        }
        break;
    default: /* insert a byte */
        if (n < cap) {
            memmove(d + pos + 1, d + pos, n - pos);
            d[pos] = bytes[rnd(sizeof(bytes))];
            n++;
        }
        break;
    }
    return n;
}

START_TEST(differential_libbson)
{
    enum { ROUNDS = 6000, CAP = 4096 };
    uint8_t *buf = malloc(CAP);
    ck_assert_ptr_nonnull(buf);
    int accepted = 0, rejected = 0, lenient = 0;
    for (int round = 0; round < ROUNDS; round++) {
        bson_t *seed = seed_doc(round % 4);
        ck_assert_uint_le(seed->len, CAP / 2);
        size_t n = seed->len;
        memcpy(buf, bson_get_data(seed), n);
        bson_destroy(seed);
        int changes = 1 + (int)rnd(3);
        for (int c = 0; c < changes; c++)
            n = mutate(buf, n, CAP);
        /* Half the time make the top-level length agree with the bytes, so that mutations get
         * past the first check. */
        if (rnd(2) && n >= 5)
            put_i32(buf, (int32_t)n);

        int rc = check_exact(buf, n, BSON_CHECK_MAX_DEPTH);
        ck_assert_msg(rc == 0 || rc == -EPROTO, "round %d: rc %d (%s)", round, rc, err);
        int32_t declared = n >= 4 ? get_i32(buf) : 0;
        if (n < 5 || declared < 5 || (size_t)declared > n) {
            ck_assert_msg(rc == -EPROTO, "round %d: bad top-level length accepted", round);
            rejected++;
            continue;
        }
        bool lib = libbson_accepts(buf, (size_t)declared);
        bool ref = reference_ok(buf, (size_t)declared);
        /* Whatever libbson refuses, bson_check refuses. */
        if (!lib)
            ck_assert_msg(rc != 0, "round %d: libbson refuses what bson_check accepts", round);
        /* Whatever libbson accepts and is well formed throughout, bson_check accepts. */
        if (lib && ref)
            ck_assert_msg(rc == 0, "round %d: libbson accepts, bson_check says: %s", round, err);
        /* And exactly those: well formed throughout is what bson_check means. */
        ck_assert_msg((rc == 0) == ref, "round %d: bson_check %d, reference %d (%s)", round, rc,
                      ref, err);
        if (lib && !ref)
            lenient++;
        if (rc == 0)
            accepted++;
        else
            rejected++;
    }
    free(buf);
    /* The mutations must exercise both outcomes for the comparison to mean anything. */
    ck_assert_int_gt(accepted, ROUNDS / 20);
    ck_assert_int_gt(rejected, ROUNDS / 5);
    fprintf(stderr, "differential: %d accepted, %d rejected, %d accepted by bson_validate only\n",
            accepted, rejected, lenient);
}
END_TEST

Suite *bson_check_suite(void)
{
    Suite *s = suite_create("bson_check");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, valid_every_type);
    tcase_add_test(tc, max_depth_argument);
    tcase_add_test(tc, malformed_framing);
    tcase_add_test(tc, malformed_type_and_key);
    tcase_add_test(tc, malformed_strings);
    tcase_add_test(tc, malformed_binary);
    tcase_add_test(tc, malformed_bool_regex_dbpointer);
    tcase_add_test(tc, malformed_embedded);
    tcase_add_test(tc, malformed_code_with_scope);
    tcase_add_test(tc, depth_limit);
    tcase_add_test(tc, depth_code_with_scope);
    tcase_add_test(tc, depth_9350_levels);
    tcase_add_test(tc, differential_libbson);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(bson_check_suite)
