/*
 * gen_corpus.c: writes the seed corpora of the libFuzzer targets (make fuzz-corpus). Run once and
 * commit the result; seeds are small on purpose, since libFuzzer only mutates what it is given.
 *
 *   gen_fuzz_corpus DIR    writes DIR/fuzz_wire, DIR/fuzz_request, DIR/fuzz_bson_check,
 *                          DIR/fuzz_config, DIR/fuzz_scram, DIR/fuzz_authfile and
 *                          DIR/fuzz_auth_parse, a few dozen files each at most, replacing files
 *                          of the same name
 *
 * Frames are built with wire.c's builders and documents with libbson, so the valid seeds are valid
 * by construction; a few broken ones give the error paths a start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <bson/bson.h>

#include "compress.h"
#include "wire.h"

/* The generator stops at the first failure: a seed corpus is all or nothing. */
static void must(int rc)
{
    if (rc < 0) {
        fprintf(stderr, "gen_corpus: out of memory\n");
        exit(1);
    }
}

static const char *root;

static void write_file(const char *target, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static bson_t *json(const char *s)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)s, -1, &e);
    if (!b) {
        fprintf(stderr, "gen_corpus: bad JSON %s: %s\n", s, e.message);
        exit(1);
    }
    return b;
}

/* A document nested depth levels below the top, {a: {a: ... {} ...}}, built without recursion. */
static bson_t *nested(int depth)
{
    size_t total = 5 + 8 * (size_t)depth;
    uint8_t *d = calloc(1, total);
    for (int i = 0; i <= depth; i++) {
        size_t start = 7 * (size_t)i, l = 5 + 8 * (size_t)(depth - i);
        wire_put_i32(d + start, (int32_t)l);
        if (i < depth) {
            d[start + 4] = 0x03;
            d[start + 5] = 'a';
        }
    }
    bson_t *b = bson_new_from_data(d, total);
    free(d);
    return b;
}

/* --- fuzz_bson_check ------------------------------------------------------------------------ */

static void bson_seed(const char *name, const bson_t *b)
{
    write_file("fuzz_bson_check", name, bson_get_data(b), b->len);
}

static void gen_bson(void)
{
    static const uint8_t bin[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t old_bin[8] = {4, 0, 0, 0, 7, 7, 7, 7};
    bson_oid_t oid;
    bson_decimal128_t dec;
    bson_oid_init_from_string(&oid, "5f1d7f3e9a1b2c3d4e5f6a7b");
    bson_decimal128_from_string("-0.25", &dec);
    bson_t *b, scope = BSON_INITIALIZER, child;

    /* One element of each type, each on its own. */
    struct {
        const char *name;
        bson_t *doc;
    } one[32];
    int n = 0;
#define ONE(nm, stmt)                                                                              \
    do {                                                                                           \
        b = bson_new();                                                                            \
        stmt;                                                                                      \
        one[n].name = nm;                                                                          \
        one[n++].doc = b;                                                                          \
    } while (0)
    ONE("double", BSON_APPEND_DOUBLE(b, "d", 1.5));
    ONE("string", BSON_APPEND_UTF8(b, "s", "h\xc3\xa9llo"));
    ONE("document", BSON_APPEND_DOCUMENT_BEGIN(b, "o", &child); BSON_APPEND_INT32(&child, "x", 1);
        bson_append_document_end(b, &child));
    ONE("array", BSON_APPEND_ARRAY_BEGIN(b, "a", &child); BSON_APPEND_INT32(&child, "0", 1);
        BSON_APPEND_NULL(&child, "1"); bson_append_array_end(b, &child));
    ONE("binary", BSON_APPEND_BINARY(b, "b", BSON_SUBTYPE_UUID, bin, 16));
    ONE("old_binary", BSON_APPEND_BINARY(b, "b", BSON_SUBTYPE_BINARY_DEPRECATED, old_bin, 8));
    ONE("undefined", BSON_APPEND_UNDEFINED(b, "u"));
    ONE("oid", BSON_APPEND_OID(b, "_id", &oid));
    ONE("bool", BSON_APPEND_BOOL(b, "t", true));
    ONE("date", BSON_APPEND_DATE_TIME(b, "d", 1700000000000));
    ONE("null", BSON_APPEND_NULL(b, "n"));
    ONE("regex", BSON_APPEND_REGEX(b, "r", "^a+$", "i"));
    ONE("dbpointer", BSON_APPEND_DBPOINTER(b, "p", "db.c", &oid));
    ONE("code", BSON_APPEND_CODE(b, "c", "f()"));
    ONE("symbol", BSON_APPEND_SYMBOL(b, "y", "s"));
    BSON_APPEND_INT32(&scope, "x", 1);
    ONE("code_w_scope", BSON_APPEND_CODE_WITH_SCOPE(b, "w", "f(x)", &scope));
    ONE("int32", BSON_APPEND_INT32(b, "i", -1));
    ONE("timestamp", BSON_APPEND_TIMESTAMP(b, "ts", 1, 2));
    ONE("int64", BSON_APPEND_INT64(b, "l", 1234567890123));
    ONE("decimal128", BSON_APPEND_DECIMAL128(b, "m", &dec));
    ONE("maxkey", BSON_APPEND_MAXKEY(b, "max"));
    ONE("minkey", BSON_APPEND_MINKEY(b, "min"));
    ONE("utf8_key", BSON_APPEND_INT32(b, "\xd0\xba\xe2\x82\xac\xf0\x9f\x98\x80", 1));
    ONE("empty_key", BSON_APPEND_INT32(b, "", 1));
#undef ONE
    bson_t *all = bson_new();
    for (int i = 0; i < n; i++) {
        bson_seed(one[i].name, one[i].doc);
        bson_concat(all, one[i].doc);
        bson_destroy(one[i].doc);
    }
    bson_seed("every_type", all);
    bson_destroy(all);

    static const uint8_t empty[] = {5, 0, 0, 0, 0};
    write_file("fuzz_bson_check", "empty", empty, sizeof(empty));

    b = json("{\"find\": \"c\", \"filter\": {\"a\": {\"$in\": [1, 2, {\"b\": [[]]}]}}, "
             "\"$db\": \"test\"}");
    bson_seed("command", b);
    bson_destroy(b);

    /* Scope nesting, and depth around small limits and around mongod's. */
    bson_t *inner = nested(3);
    bson_t sc = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT(&sc, "n", inner);
    b = bson_new();
    BSON_APPEND_CODE_WITH_SCOPE(b, "w", "g()", &sc);
    bson_seed("code_w_scope_nested", b);
    bson_destroy(b);
    bson_destroy(&sc);
    bson_destroy(inner);
    const int depths[] = {2, 3, 4, 8, 200, 201};
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "nested_%d", depths[i]);
        b = nested(depths[i]);
        bson_seed(name, b);
        bson_destroy(b);
    }

    /* Broken: a bad key, an early end, a bad bool, a string that runs over. */
    static const uint8_t bad_key[] = {12, 0, 0, 0, 0x10, 0xc0, 0, 1, 0, 0, 0, 0};
    static const uint8_t early_end[] = {10, 0, 0, 0, 0x0a, 'n', 0, 0, 0, 0};
    static const uint8_t bad_bool[] = {9, 0, 0, 0, 0x08, 'b', 0, 2, 0};
    static const uint8_t long_string[] = {14, 0, 0, 0, 0x02, 's', 0, 9, 0, 0, 0, 'x', 0, 0};
    write_file("fuzz_bson_check", "bad_key", bad_key, sizeof(bad_key));
    write_file("fuzz_bson_check", "early_end", early_end, sizeof(early_end));
    write_file("fuzz_bson_check", "bad_bool", bad_bool, sizeof(bad_bool));
    write_file("fuzz_bson_check", "long_string", long_string, sizeof(long_string));
    bson_destroy(&scope);
}

/* --- fuzz_wire and fuzz_request ------------------------------------------------------------- */

/* Writes one frame to both frame corpora. */
static void frame_seed(const char *name, const struct wire_buf *b)
{
    write_file("fuzz_wire", name, b->data, b->len);
    write_file("fuzz_request", name, b->data, b->len);
}

static void msg_seed(const char *name, const char *body_json, uint32_t flags)
{
    struct wire_buf b = {0};
    bson_t *body = json(body_json);
    must(wire_append_msg(&b, 1, 0, flags, body));
    if (flags & WIRE_MSG_CHECKSUM_PRESENT) {
        /* wire_append_msg does not write a checksum: add one and fix the length. */
        uint8_t crc[4];
        wire_put_i32(crc, (int32_t)wire_crc32c(0, b.data, b.len));
        must(wire_buf_append(&b, crc, 4));
        wire_put_i32(b.data, (int32_t)b.len);
    }
    frame_seed(name, &b);
    bson_destroy(body);
    wire_buf_free(&b);
}

static void query_seed(const char *name, const char *ns, int32_t flags, const char *q_json,
                       const char *fields_json)
{
    struct wire_buf b = {0};
    bson_t *q = json(q_json);
    must(wire_append_query(&b, 2, flags, ns, 0, -1, q));
    if (fields_json) {
        bson_t *f = json(fields_json);
        must(wire_buf_append(&b, bson_get_data(f), f->len));
        wire_put_i32(b.data, (int32_t)b.len);
        bson_destroy(f);
    }
    frame_seed(name, &b);
    bson_destroy(q);
    wire_buf_free(&b);
}

static void put_header(struct wire_buf *b, int32_t op)
{
    uint8_t h[16] = {0};
    wire_put_i32(h + 4, 3);
    wire_put_i32(h + 12, op);
    must(wire_buf_append(b, h, 16));
}

static void put_i32(struct wire_buf *b, int32_t v)
{
    uint8_t p[4];
    wire_put_i32(p, v);
    must(wire_buf_append(b, p, 4));
}

static void put_i64(struct wire_buf *b, int64_t v)
{
    uint8_t p[8];
    wire_put_i64(p, v);
    must(wire_buf_append(b, p, 8));
}

static void gen_frames(void)
{
    msg_seed("msg_hello", "{\"hello\": 1, \"helloOk\": true, \"$db\": \"admin\"}", 0);
    msg_seed("msg_ismaster", "{\"isMaster\": 1, \"$db\": \"admin\"}", 0);
    msg_seed("msg_status", "{\"mongolbStatus\": 1, \"$db\": \"admin\"}", 0);
    msg_seed("msg_find_rp",
             "{\"find\": \"c\", \"filter\": {\"a\": 1}, \"$readPreference\": {\"mode\": "
             "\"secondaryPreferred\", \"tags\": [{\"dc\": \"e\"}]}, \"$db\": \"test\"}",
             0);
    msg_seed("msg_aggregate_out",
             "{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {}}, {\"$out\": \"o\"}], "
             "\"cursor\": {}, \"$db\": \"t\"}",
             0);
    msg_seed("msg_get_more",
             "{\"getMore\": {\"$numberLong\": \"77\"}, \"collection\": \"c\", \"$db\": \"t\"}", 0);
    msg_seed("msg_kill_cursors",
             "{\"killCursors\": \"c\", \"cursors\": [{\"$numberLong\": \"5\"}, 6], \"$db\": \"t\"}",
             0);
    msg_seed("msg_txn",
             "{\"insert\": \"c\", \"lsid\": {\"id\": {\"$binary\": {\"base64\": "
             "\"AAECAwQFBgcICQoLDA0ODw==\", \"subType\": \"04\"}}}, \"txnNumber\": "
             "{\"$numberLong\": \"3\"}, \"autocommit\": false, \"startTransaction\": true, "
             "\"$db\": \"t\"}",
             0);
    msg_seed("msg_more_to_come", "{\"insert\": \"c\", \"$db\": \"t\"}", WIRE_MSG_MORE_TO_COME);
    msg_seed("msg_exhaust", "{\"hello\": 1, \"$db\": \"admin\"}", WIRE_MSG_EXHAUST_ALLOWED);
    msg_seed("msg_checksum", "{\"ping\": 1, \"$db\": \"admin\"}", WIRE_MSG_CHECKSUM_PRESENT);
    msg_seed("msg_no_db", "{\"ping\": 1}", 0);

    /* Sequences: one through the builder, then two and an empty one by hand. */
    struct wire_buf b = {0};
    bson_t *cmd = json("{\"insert\": \"c\", \"$db\": \"test\"}");
    bson_t *d1 = json("{\"_id\": 1, \"a\": [1]}"), *d2 = json("{\"_id\": 2}");
    const bson_t *docs[] = {d1, d2};
    must(wire_append_msg_seq(&b, 4, 0, 0, cmd, "documents", docs, 2));
    frame_seed("msg_sequence", &b);
    wire_buf_reset(&b);
    put_header(&b, WIRE_OP_MSG);
    put_i32(&b, 0);
    uint8_t kind = 1;
    const char *ids[] = {"documents", "updates", "x"};
    for (int s = 0; s < 3; s++) {
        must(wire_buf_append(&b, &kind, 1));
        int nd = s == 2 ? 0 : 2;
        put_i32(&b, (int32_t)(4 + strlen(ids[s]) + 1 + (nd ? d1->len + d2->len : 0)));
        must(wire_buf_append(&b, ids[s], strlen(ids[s]) + 1));
        for (int i = 0; i < nd; i++)
            must(wire_buf_append(&b, bson_get_data(docs[i]), docs[i]->len));
    }
    kind = 0;
    must(wire_buf_append(&b, &kind, 1));
    must(wire_buf_append(&b, bson_get_data(cmd), cmd->len));
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("msg_sequences", &b);
    wire_buf_reset(&b);

    /* Too deep: in the body, and in a sequence. */
    bson_t *deep = nested(201);
    bson_t *dcmd = bson_new();
    BSON_APPEND_UTF8(dcmd, "find", "c");
    BSON_APPEND_DOCUMENT(dcmd, "filter", deep);
    BSON_APPEND_UTF8(dcmd, "$db", "t");
    must(wire_append_msg(&b, 5, 0, 0, dcmd));
    frame_seed("msg_deep_body", &b);
    wire_buf_reset(&b);
    const bson_t *ddocs[] = {d1, deep};
    must(wire_append_msg_seq(&b, 6, 0, 0, cmd, "documents", ddocs, 2));
    frame_seed("msg_deep_sequence", &b);
    wire_buf_reset(&b);
    bson_destroy(dcmd);
    bson_destroy(deep);
    bson_destroy(cmd);

    /* Legacy OP_QUERY: a handshake, wrapped or not, a command elsewhere, a find, a projection. */
    query_seed("query_ismaster", "admin.$cmd", 0, "{\"isMaster\": 1, \"client\": {}}", NULL);
    query_seed("query_wrapped", "admin.$cmd", WIRE_QUERY_SECONDARY_OK,
               "{\"$query\": {\"ismaster\": 1, \"helloOk\": true}, \"$readPreference\": "
               "{\"mode\": \"nearest\"}}",
               NULL);
    query_seed("query_kill_cursors", "t.$cmd", 0, "{\"killCursors\": \"c\", \"cursors\": [1, 2]}",
               NULL);
    query_seed("query_find", "t.c", 0, "{\"a\": {\"$gt\": 1}}", "{\"a\": 1, \"_id\": 0}");

    /* OP_REPLY with no document and with two. */
    must(wire_append_reply(&b, 7, 1, 0, 0, 0, NULL, 0));
    frame_seed("reply_empty", &b);
    wire_buf_reset(&b);
    must(wire_append_reply(&b, 8, 1, WIRE_REPLY_AWAIT_CAPABLE, 123, 0, docs, 2));
    frame_seed("reply_two", &b);
    wire_buf_reset(&b);

    /* OP_GET_MORE and OP_KILL_CURSORS. */
    put_header(&b, WIRE_OP_GET_MORE);
    put_i32(&b, 0);
    must(wire_buf_append(&b, "t.c", 4));
    put_i32(&b, 10);
    put_i64(&b, -42);
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("get_more", &b);
    wire_buf_reset(&b);
    for (int n = 0; n <= 3; n += 3) {
        put_header(&b, WIRE_OP_KILL_CURSORS);
        put_i32(&b, 0);
        put_i32(&b, n);
        for (int i = 0; i < n; i++)
            put_i64(&b, 1000 + i);
        wire_put_i32(b.data, (int32_t)b.len);
        frame_seed(n ? "kill_cursors_3" : "kill_cursors_0", &b);
        wire_buf_reset(&b);
    }

    /* Opcodes mongolb refuses: OP_COMPRESSED and OP_INSERT. */
    put_header(&b, WIRE_OP_COMPRESSED);
    put_i32(&b, WIRE_OP_MSG);
    put_i32(&b, 20);
    uint8_t zlib = 2;
    must(wire_buf_append(&b, &zlib, 1));
    must(wire_buf_append(&b, "\x78\x9c\x03\x00\x00\x00\x00\x01", 8));
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("compressed", &b);
    wire_buf_reset(&b);
    put_header(&b, WIRE_OP_INSERT);
    put_i32(&b, 0);
    must(wire_buf_append(&b, "t.c", 4));
    must(wire_buf_append(&b, bson_get_data(d1), d1->len));
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("insert", &b);
    wire_buf_reset(&b);

    /* Broken frames: an unknown required flag, two bodies, a repeated sequence identifier, a
     * sequence that runs past the frame, and an OP_KILL_CURSORS whose count disagrees. */
    msg_seed("msg_bad_flag", "{\"ping\": 1, \"$db\": \"admin\"}", 0x4);
    bson_t *ping = json("{\"ping\": 1, \"$db\": \"admin\"}");
    put_header(&b, WIRE_OP_MSG);
    put_i32(&b, 0);
    for (int i = 0; i < 2; i++) {
        kind = 0;
        must(wire_buf_append(&b, &kind, 1));
        must(wire_buf_append(&b, bson_get_data(ping), ping->len));
    }
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("msg_two_bodies", &b);
    wire_buf_reset(&b);
    put_header(&b, WIRE_OP_MSG);
    put_i32(&b, 0);
    for (int i = 0; i < 2; i++) {
        kind = 1;
        must(wire_buf_append(&b, &kind, 1));
        put_i32(&b, (int32_t)(4 + 2 + d2->len));
        must(wire_buf_append(&b, "d", 2));
        must(wire_buf_append(&b, bson_get_data(d2), d2->len));
    }
    kind = 0;
    must(wire_buf_append(&b, &kind, 1));
    must(wire_buf_append(&b, bson_get_data(ping), ping->len));
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("msg_repeated_sequence", &b);
    wire_put_i32(b.data + 21, 200);
    frame_seed("msg_sequence_overrun", &b);
    wire_buf_reset(&b);
    bson_destroy(ping);
    put_header(&b, WIRE_OP_KILL_CURSORS);
    put_i32(&b, 0);
    put_i32(&b, 2);
    put_i64(&b, 1);
    wire_put_i32(b.data, (int32_t)b.len);
    frame_seed("kill_cursors_short", &b);
    wire_buf_free(&b);
    bson_destroy(d1);
    bson_destroy(d2);

    /* A bare header. */
    uint8_t h[16] = {16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0x07, 0, 0};
    write_file("fuzz_wire", "header_only", h, sizeof(h));
    write_file("fuzz_request", "header_only", h, sizeof(h));
}

/* --- fuzz_config ---------------------------------------------------------------------------- */

/* --- fuzz_compress -------------------------------------------------------------------------- */

/* OP_COMPRESSED frames: each compressor over a command, a reply and an empty body, and the shapes
 * the decoder refuses (a declared size that is wrong or too large, unknown ids, a nested
 * OP_COMPRESSED, a truncated prefix). */
static void gen_compress(void)
{
    static const char *const names[COMPRESSOR_COUNT] = {"noop", "snappy", "zlib", "zstd"};
    const struct compress_levels lv = {.zlib = -1, .zstd = 1};
    struct wire_buf m = {0}, z = {0};
    char name[64];
    bson_t *body = json("{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"$db\": \"test\"}");
    must(wire_append_msg(&m, 1, 0, 0, body));
    bson_destroy(body);
    for (int id = 0; id < COMPRESSOR_COUNT; id++) {
        wire_buf_reset(&z);
        must(compress_encode(id, &lv, m.data, m.len, &z));
        snprintf(name, sizeof(name), "msg_%s", names[id]);
        write_file("fuzz_compress", name, z.data, z.len);
        /* The same data declared one byte longer: refused, never padded. */
        wire_put_i32(z.data + 20, wire_get_i32(z.data + 20) + 1);
        snprintf(name, sizeof(name), "size_plus_one_%s", names[id]);
        write_file("fuzz_compress", name, z.data, z.len);
        wire_put_i32(z.data + 20, wire_get_i32(z.data + 20) - 2);
        snprintf(name, sizeof(name), "size_minus_one_%s", names[id]);
        write_file("fuzz_compress", name, z.data, z.len);
    }
    bson_t *reply = json("{\"cursor\": {\"id\": 0, \"ns\": \"test.c\", \"firstBatch\": "
                         "[{\"_id\": 1, \"v\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}]}, "
                         "\"ok\": 1}");
    wire_buf_reset(&m);
    must(wire_append_msg(&m, 2, 1, 0, reply));
    bson_destroy(reply);
    for (int id = 1; id < COMPRESSOR_COUNT; id++) {
        wire_buf_reset(&z);
        must(compress_encode(id, &lv, m.data, m.len, &z));
        snprintf(name, sizeof(name), "reply_%s", names[id]);
        write_file("fuzz_compress", name, z.data, z.len);
    }
    uint8_t hdr[16] = {0};
    wire_put_i32(hdr, 16);
    wire_put_i32(hdr + 12, WIRE_OP_MSG);
    for (int id = 0; id < COMPRESSOR_COUNT; id++) {
        wire_buf_reset(&m);
        wire_buf_reset(&z);
        must(wire_buf_append(&m, hdr, 16));
        must(compress_encode(id, &lv, m.data, m.len, &z));
        snprintf(name, sizeof(name), "empty_%s", names[id]);
        write_file("fuzz_compress", name, z.data, z.len);
    }
    /* Refusals: a huge declared size, an unknown id, a nested OP_COMPRESSED, a short prefix. */
    wire_buf_reset(&z);
    put_header(&z, WIRE_OP_COMPRESSED);
    put_i32(&z, WIRE_OP_MSG);
    put_i32(&z, 2000000000);
    must(wire_buf_append(&z, "\003abcdefgh", 9));
    wire_put_i32(z.data, (int32_t)z.len);
    write_file("fuzz_compress", "huge_declared", z.data, z.len);
    z.data[24] = 9;
    wire_put_i32(z.data + 20, 8);
    write_file("fuzz_compress", "unknown_id", z.data, z.len);
    z.data[24] = 0;
    wire_put_i32(z.data + 16, WIRE_OP_COMPRESSED);
    write_file("fuzz_compress", "nested", z.data, z.len);
    write_file("fuzz_compress", "short_prefix", z.data, 20);
    wire_buf_free(&m);
    wire_buf_free(&z);
}

static void ini_seed(const char *name, const char *text)
{
    write_file("fuzz_config", name, text, strlen(text));
}

static void gen_config(void)
{
    ini_seed("minimal", "[upstream]\nseeds = db1:27017\n");
    ini_seed("full", "[mongolb]\n"
                     "listen = 127.0.0.1:27016, [::1]:27016, unix:/run/mongolb.sock\n"
                     "log_level = debug\n"
                     "max_clients = 500\n"
                     "shutdown_timeout_ms = 2000\n"
                     "\n"
                     "[upstream]\n"
                     "seeds = a.example:27017,[2001:db8::1]:27018, b\n"
                     "mode = replicaset\n"
                     "replica_set = rs0\n"
                     "read_preference = secondaryPreferred\n"
                     "read_preference_tags = dc:ny,rack:1;dc:ny;\n"
                     "max_staleness_seconds = 120\n"
                     "connect_timeout_ms = 1000\n"
                     "heartbeat_interval_ms = 500\n"
                     "local_threshold_ms = 20\n"
                     "max_pool_size = 10\n"
                     "server_selection_timeout_ms = 5000\n"
                     "\n"
                     "[cursors]\n"
                     "idle_timeout_ms = 60000\n"
                     "max_cursors = 1000\n");
    ini_seed("comments", "; a comment\n# another\n[upstream]\nseeds = h:1 ; inline\n\n");
    ini_seed("mongos", "[upstream]\nmode = mongos\nseeds = m1:27017,m2:27017,m3:27017\n"
                       "local_threshold_ms = 0\n");
    ini_seed("bad_number", "[upstream]\nseeds = h\nlocal_threshold_ms = abc\n");
    ini_seed("bad_range", "[upstream]\nseeds = h\nheartbeat_interval_ms = 10\n");
    ini_seed("unknown_key", "[upstream]\nseeds = h\nnope = 1\n[nosuch]\nx = y\n");
    ini_seed("no_seeds", "[mongolb]\nlog_level = warn\n");
    ini_seed("bad_address", "[upstream]\nseeds = [::1:27017, host:99999, :1\n");
    ini_seed("bad_enum", "[upstream]\nseeds = h\nmode = cluster\nread_preference = any\n");
    ini_seed("replset_no_name", "[upstream]\nseeds = h\nmode = replicaset\n");
    ini_seed("tags_with_primary",
             "[upstream]\nseeds = h\nmode = replicaset\nreplica_set = r\nread_preference_tags = "
             "a:b\n");
    ini_seed("staleness", "[upstream]\nseeds = h\nmode = replicaset\nreplica_set = r\n"
                          "read_preference = nearest\nmax_staleness_seconds = 89\n");
    ini_seed("duplicate", "[upstream]\nseeds = h\nseeds = g\n");
    ini_seed("no_section", "seeds = h\n");
    ini_seed("long_line",
             "[upstream]\nseeds = "
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1\n");
    ini_seed("empty", "");
    ini_seed("crlf", "[upstream]\r\nseeds = h:27017\r\n");
    ini_seed("unix_listen", "[mongolb]\nlisten = unix:/tmp/m.sock,127.0.0.1:1\n[upstream]\nseeds = "
                            "h\n");
    ini_seed("ipv6", "[mongolb]\nlisten = [::]:27016\n[upstream]\nseeds = [fe80::1]:27017,[::1]\n");
    ini_seed("many_tags",
             "[upstream]\nseeds = h\nmode = replicaset\nreplica_set = r\n"
             "read_preference = secondary\nread_preference_tags = a:1,b:2,c:3;d:4;;\n");
    ini_seed("negative", "[upstream]\nseeds = h\nmax_pool_size = -1\nmax_staleness_seconds = -1\n");
    ini_seed("overflow", "[upstream]\nseeds = h\nconnect_timeout_ms = 99999999999999999999\n");
    ini_seed("spaces", "  [ upstream ]  \n   seeds   =   h:1 , g:2   \n");
    ini_seed("quotes", "[upstream]\nseeds = \"h:1\"\nmode = 'mongos'\n");
    ini_seed("continuation", "[upstream]\nseeds = h:1,\n  g:2\n");
}

/* --- fuzz_http ------------------------------------------------------------------------------ */

static void http_seed(const char *name, const char *text)
{
    write_file("fuzz_http", name, text, strlen(text));
}

static void gen_http(void)
{
    http_seed("metrics", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9216\r\nUser-Agent: "
                         "Prometheus/2.45.0\r\nAccept: application/openmetrics-text;version=1.0.0,"
                         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
                         "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n");
    http_seed("healthz_10", "GET /healthz HTTP/1.0\r\n\r\n");
    http_seed("readyz_head", "HEAD /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    http_seed("curl", "GET /readyz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\n"
                      "Accept: */*\r\n\r\n");
    http_seed("post_body", "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    http_seed("http2", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    http_seed("folded", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n");
    http_seed("bare_lf", "GET / HTTP/1.1\nHost: x\n\n");
    http_seed("no_end", "GET / HTTP/1.1\r\nHost: x\r\n");
    http_seed("empty_header", "GET / HTTP/1.1\r\nX-Empty:\r\n:\r\n\r\n");
    http_seed("tls_hello", "\x16\x03\x01\x02\x01\x01\r\n\r\n");
    http_seed("mongo_frame", "\x3a\x01\x01\x01\x01\x01\x01\x01\xdd\x07\x01\x01\r\n\r\n");
    http_seed("long_method", "PROPPATCHPROPPATCH / HTTP/1.1\r\n\r\n");
    /* Authorization fields for basic_auth_parse: Prometheus's, odd spacing and case, a user-id
     * with two '@', no colon, bad base64, another scheme, two fields. */
    http_seed("auth_basic", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9216\r\nAuthorization: "
                            "Basic b3BzQGFkbWluOnMzY3JldA==\r\n\r\n");
    http_seed("auth_spaces", "GET /readyz HTTP/1.1\r\nauthorization:\t bAsIc    "
                             "b3BzOmE6Yjpj \t\r\n\r\n");
    http_seed("auth_two_at", "GET /metrics HTTP/1.1\r\nAuthorization: Basic "
                             "YWxpY2VAZXhhbXBsZS5jb21AJGV4dGVybmFsOnB3\r\n\r\n");
    http_seed("auth_no_colon", "GET /metrics HTTP/1.1\r\nAuthorization: Basic b3BzcHc=\r\n\r\n");
    http_seed("auth_bad_b64", "GET /metrics HTTP/1.1\r\nAuthorization: Basic b3BzOnB\r\n\r\n");
    http_seed("auth_bearer", "GET /metrics HTTP/1.1\r\nAuthorization: Bearer abc.def\r\n\r\n");
    http_seed("auth_empty", "GET /metrics HTTP/1.1\r\nAuthorization:\r\n\r\n");
    http_seed("auth_twice", "GET /metrics HTTP/1.1\r\nAuthorization: Basic b3BzOnB3\r\n"
                            "AUTHORIZATION: Basic b3BzOnB3\r\n\r\n");
}

/* --- fuzz_scram and fuzz_authfile ------------------------------------------------------------ */

/* fuzz_scram's input: control byte, big-endian length of the first message, both messages. */
static void scram_seed(const char *name, int control, const char *m1, const char *m2)
{
    size_t n1 = strlen(m1), n2 = strlen(m2);
    uint8_t b[1024];
    b[0] = (uint8_t)control;
    b[1] = (uint8_t)(n1 >> 8);
    b[2] = (uint8_t)n1;
    memcpy(b + 3, m1, n1);
    memcpy(b + 3 + n1, m2, n2);
    write_file("fuzz_scram", name, b, 3 + n1 + n2);
}

static void gen_auth(void)
{
    /* The published exchanges (fuzz_scram.c fixes the nonces to theirs): 4 = SCRAM-SHA-256. */
    const char *r256 = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const char *r1 = "fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE";
    char a[256], b[256];
    snprintf(b, sizeof(b), "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", r256);
    scram_seed("server_sha256", 4, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", b);
    scram_seed("server_unknown_user", 7, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", b);
    snprintf(a, sizeof(a), "r=%s,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", r256);
    scram_seed("client_sha256", 5, a, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    snprintf(b, sizeof(b), "c=biws,r=%s,p=MC2T8BvbmWRckDw8oWl5IVghwCY=", r1);
    scram_seed("server_sha1", 0, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", b);
    snprintf(a, sizeof(a), "r=%s,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000", r1);
    scram_seed("client_sha1", 1, a, "v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=");
    scram_seed("client_error", 1, a, "e=invalid-proof");
    scram_seed("server_escaped", 4, "y,,n=a=2Cb=3D,r=abc,x=ext", "c=eSws,r=abc,p=AAAA");
    scram_seed("server_binding", 4, "p=tls-unique,a=admin,n=user,r=abc", "");
    scram_seed("helpers_b64", 2, "Zm9vYmE=", "");
    scram_seed("helpers_name", 2, "a=2Cb=3Dc", "");
    scram_seed("helpers_mech", 6, "SCRAM-SHA-256", "");

    static const char *files[][2] = {
        {"two_mechs",
         "# verifiers\n\n"
         "app.alice SCRAM-SHA-256 15000 JBe5FdXk8meWMBHMLIhPRMHxeq1Kir0e4/f8PA== "
         "ezT1RF7Ow6OvpuyJnJTBQDozBc8rq7BhntA42OtK0I0= "
         "t3O2D7JKskgOTaJQp3ZHUWEgbFX3Pnyrb14z2Aohm1I=\n"
         "app.alice\tSCRAM-SHA-1\t10000 xH4KYS0KmGD3bUlP89MKeA== xYwHIL/p0IwSmx2t8WdKN1p/0Ow= "
         "6jdtRTgt04/hUp+YNn1qqDx7IwQ=\r\n"},
        {"external",
         "$external.first.last SCRAM-SHA-256 4096 BkhwCgaOZkgKUry+Id6f8yJnw2LFVgXw7Dolhg== "
         "pW9ZO/0L7atOpplxlpftAjppBG5pV99f/+CcsrNjkWo= "
         "BPVAbfBB0p46atJdvbutRtg1zqOT+zpbinVYmNTSrIQ="},
        {"duplicate", "app.a SCRAM-SHA-1 10000 xH4KYS0KmGD3bUlP89MKeA== "
                      "xYwHIL/p0IwSmx2t8WdKN1p/0Ow= 6jdtRTgt04/hUp+YNn1qqDx7IwQ=\n"
                      "app.a SCRAM-SHA-1 10000 xH4KYS0KmGD3bUlP89MKeA== "
                      "xYwHIL/p0IwSmx2t8WdKN1p/0Ow= 6jdtRTgt04/hUp+YNn1qqDx7IwQ=\n"},
        {"bad_fields", "app.a SCRAM-SHA-512 99 !!!! x\nnodot SCRAM-SHA-1 4096 a b c\n#\n"},
        {"empty", ""},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        write_file("fuzz_authfile", files[i][0], files[i][1], strlen(files[i][1]));
}

/* --- fuzz_auth_parse ------------------------------------------------------------------------ */

/* A control byte (fuzz_auth_parse.c's parser choice), then the bytes. */
static void auth_parse_seed(const char *name, int control, const uint8_t *p, size_t n)
{
    uint8_t *b = malloc(n + 1);
    if (!b)
        must(-ENOMEM);
    b[0] = (uint8_t)control;
    memcpy(b + 1, p, n);
    write_file("fuzz_auth_parse", name, b, n + 1);
    free(b);
}

static void auth_doc_seed(const char *name, int control, const bson_t *doc)
{
    auth_parse_seed(name, control, bson_get_data(doc), doc->len);
}

/* A reply frame (OP_MSG) with body doc. */
static void auth_frame_seed(const char *name, int control, const bson_t *doc)
{
    struct wire_buf b = {0};
    must(wire_append_msg(&b, 7, 1, 0, doc));
    auth_parse_seed(name, control, b.data, b.len);
    wire_buf_free(&b);
}

static void gen_auth_parse(void)
{
    /* RFC 7677's client-first and server-first, as drivers and servers carry them. */
    static const char cfirst[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    static const char sfirst[] = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                 "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    bson_t *d, opt;

    /* 0: a client's saslStart and saslContinue. */
    d = bson_new();
    BSON_APPEND_INT32(d, "saslStart", 1);
    BSON_APPEND_UTF8(d, "mechanism", "SCRAM-SHA-256");
    BSON_APPEND_BINARY(d, "payload", BSON_SUBTYPE_BINARY, (const uint8_t *)cfirst,
                       sizeof(cfirst) - 1);
    BSON_APPEND_BOOL(d, "autoAuthorize", true);
    BSON_APPEND_DOCUMENT_BEGIN(d, "options", &opt);
    BSON_APPEND_BOOL(&opt, "skipEmptyExchange", true);
    bson_append_document_end(d, &opt);
    BSON_APPEND_UTF8(d, "$db", "app");
    auth_doc_seed("sasl_start", 0, d);
    bson_destroy(d);
    static const char *sasl_json[][2] = {
        {"sasl_start_string", "{\"saslStart\": 1, \"mechanism\": \"SCRAM-SHA-1\", \"payload\": "
                              "\"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL\", \"$db\": \"admin\"}"},
        {"sasl_continue", "{\"saslContinue\": 1, \"conversationId\": 1, \"payload\": "
                          "{\"$binary\": {\"base64\": \"Yz1iaXdz\", \"subType\": \"00\"}}}"},
        {"sasl_continue_double",
         "{\"saslContinue\": 1, \"conversationId\": 1.0, \"payload\": \"\"}"},
        {"sasl_continue_huge",
         "{\"saslContinue\": 1, \"conversationId\": 1e300, \"payload\": \"\"}"},
        {"sasl_continue_nan",
         "{\"saslContinue\": 1, \"conversationId\": {\"$numberDouble\": \"NaN\"}}"},
        {"sasl_continue_long",
         "{\"saslContinue\": 1, \"conversationId\": {\"$numberLong\": \"-9223372036854775808\"}}"},
        {"sasl_wrong_types",
         "{\"saslStart\": 1, \"mechanism\": 5, \"payload\": [1], \"options\": 1}"},
    };
    for (size_t i = 0; i < sizeof(sasl_json) / sizeof(sasl_json[0]); i++) {
        d = json(sasl_json[i][1]);
        auth_doc_seed(sasl_json[i][0], 0, d);
        bson_destroy(d);
    }

    /* 1: hello with saslSupportedMechs and a speculative saslStart. */
    bson_t spec;
    d = bson_new();
    BSON_APPEND_INT32(d, "hello", 1);
    BSON_APPEND_UTF8(d, "saslSupportedMechs", "app.alice");
    BSON_APPEND_DOCUMENT_BEGIN(d, "speculativeAuthenticate", &spec);
    BSON_APPEND_INT32(&spec, "saslStart", 1);
    BSON_APPEND_UTF8(&spec, "mechanism", "SCRAM-SHA-256");
    BSON_APPEND_BINARY(&spec, "payload", BSON_SUBTYPE_BINARY, (const uint8_t *)cfirst,
                       sizeof(cfirst) - 1);
    BSON_APPEND_DOCUMENT_BEGIN(&spec, "options", &opt);
    BSON_APPEND_BOOL(&opt, "skipEmptyExchange", true);
    bson_append_document_end(&spec, &opt);
    BSON_APPEND_UTF8(&spec, "db", "app");
    bson_append_document_end(d, &spec);
    BSON_APPEND_UTF8(d, "$db", "admin");
    auth_doc_seed("hello_speculative", 1, d);
    bson_destroy(d);
    static const char *hello_json[][2] = {
        {"hello_x509", "{\"hello\": 1, \"speculativeAuthenticate\": {\"authenticate\": 1, "
                       "\"mechanism\": \"MONGODB-X509\", \"db\": \"$external\"}}"},
        {"hello_bad_names", "{\"isMaster\": 1, \"saslSupportedMechs\": \".alice\", "
                            "\"speculativeAuthenticate\": {}}"},
        {"hello_no_dot", "{\"hello\": 1, \"saslSupportedMechs\": \"alice\"}"},
    };
    for (size_t i = 0; i < sizeof(hello_json) / sizeof(hello_json[0]); i++) {
        d = json(hello_json[i][1]);
        auth_doc_seed(hello_json[i][0], 1, d);
        bson_destroy(d);
    }

    /* 2: servers' answers to mongolb's logins. */
    d = bson_new();
    BSON_APPEND_INT32(d, "conversationId", 1);
    BSON_APPEND_BOOL(d, "done", false);
    BSON_APPEND_BINARY(d, "payload", BSON_SUBTYPE_BINARY, (const uint8_t *)sfirst,
                       sizeof(sfirst) - 1);
    BSON_APPEND_DOUBLE(d, "ok", 1.0);
    auth_frame_seed("server_first", 2, d);
    bson_destroy(d);
    static const char *reply_json[][2] = {
        {"server_final", "{\"conversationId\": 1, \"done\": true, \"payload\": "
                         "\"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=\", \"ok\": 1}"},
        {"server_refused", "{\"ok\": 0, \"errmsg\": \"Authentication failed.\", \"code\": 18, "
                           "\"codeName\": \"AuthenticationFailed\"}"},
        {"server_huge_code", "{\"ok\": 0.0, \"code\": 1e300, \"conversationId\": -1e300}"},
        {"server_x509", "{\"dbname\": \"$external\", \"user\": \"CN=client\", \"ok\": 1}"},
    };
    for (size_t i = 0; i < sizeof(reply_json) / sizeof(reply_json[0]); i++) {
        d = json(reply_json[i][1]);
        auth_frame_seed(reply_json[i][0], 2, d);
        bson_destroy(d);
    }

    /* 3: usersInfo with showCredentials (the verifiers of gen_auth's auth files). */
    static const char *users_json[][2] = {
        {"users_info",
         "{\"users\": [{\"_id\": \"app.bob\", \"user\": \"bob\", \"db\": \"app\"}, "
         "{\"_id\": \"app.alice\", \"userId\": {\"$binary\": {\"base64\": "
         "\"AAAAAAAAAAAAAAAAAAAAAA==\", "
         "\"subType\": \"04\"}}, \"user\": \"alice\", \"db\": \"app\", \"credentials\": "
         "{\"SCRAM-SHA-1\": {\"iterationCount\": 10000, \"salt\": \"xH4KYS0KmGD3bUlP89MKeA==\", "
         "\"storedKey\": \"xYwHIL/p0IwSmx2t8WdKN1p/0Ow=\", \"serverKey\": "
         "\"6jdtRTgt04/hUp+YNn1qqDx7IwQ=\"}, \"SCRAM-SHA-256\": {\"iterationCount\": 15000, "
         "\"salt\": \"JBe5FdXk8meWMBHMLIhPRMHxeq1Kir0e4/f8PA==\", \"storedKey\": "
         "\"ezT1RF7Ow6OvpuyJnJTBQDozBc8rq7BhntA42OtK0I0=\", \"serverKey\": "
         "\"t3O2D7JKskgOTaJQp3ZHUWEgbFX3Pnyrb14z2Aohm1I=\"}}, \"roles\": [{\"role\": "
         "\"readWrite\", \"db\": \"app\"}, {\"role\": \"clusterMonitor\", \"db\": \"admin\"}], "
         "\"mechanisms\": [\"SCRAM-SHA-1\", \"SCRAM-SHA-256\"]}], \"ok\": 1}"},
        {"users_info_double_count",
         "{\"users\": [{\"user\": \"alice\", \"db\": \"app\", \"credentials\": {\"SCRAM-SHA-1\": "
         "{\"iterationCount\": 1e300, \"salt\": \"xH4KYS0KmGD3bUlP89MKeA==\", \"storedKey\": "
         "\"xYwHIL/p0IwSmx2t8WdKN1p/0Ow=\", \"serverKey\": \"6jdtRTgt04/hUp+YNn1qqDx7IwQ=\"}}}], "
         "\"ok\": 1}"},
        {"users_info_bad_b64",
         "{\"users\": [{\"user\": \"alice\", \"db\": \"app\", \"credentials\": {\"SCRAM-SHA-256\": "
         "{\"iterationCount\": 4096, \"salt\": \"!!!\", \"storedKey\": \"AA==\", \"serverKey\": "
         "\"\"}}}], \"ok\": 1}"},
        {"users_info_empty", "{\"users\": [], \"ok\": 1}"},
        {"users_info_refused",
         "{\"ok\": 0, \"errmsg\": \"not authorized on app to execute command\", "
         "\"code\": 13}"},
    };
    for (size_t i = 0; i < sizeof(users_json) / sizeof(users_json[0]); i++) {
        d = json(users_json[i][1]);
        auth_frame_seed(users_json[i][0], 3, d);
        bson_destroy(d);
    }

    /* 4: names. */
    static const char *names[][2] = {
        {"name", "app.alice"}, {"name_dots", "app.first.last"}, {"name_empty_user", "app."}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        auth_parse_seed(names[i][0], 4, (const uint8_t *)names[i][1], strlen(names[i][1]));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) < 0 && errno != EEXIST) {
        perror(root);
        return 1;
    }
    gen_bson();
    gen_frames();
    gen_config();
    gen_compress();
    gen_http();
    gen_auth();
    gen_auth_parse();
    return 0;
}
