/*
 * bson_check.c: a non-recursive structural check of one BSON document. See bson_check.h.
 */
#include "bson_check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Element types of the BSON specification (bsonspec.org). */
enum {
    BT_EOO = 0x00,
    BT_DOUBLE = 0x01,
    BT_STRING = 0x02,
    BT_DOCUMENT = 0x03,
    BT_ARRAY = 0x04,
    BT_BINARY = 0x05,
    BT_UNDEFINED = 0x06,
    BT_OID = 0x07,
    BT_BOOL = 0x08,
    BT_DATE = 0x09,
    BT_NULL = 0x0a,
    BT_REGEX = 0x0b,
    BT_DBPOINTER = 0x0c,
    BT_CODE = 0x0d,
    BT_SYMBOL = 0x0e,
    BT_CODE_W_SCOPE = 0x0f,
    BT_INT32 = 0x10,
    BT_TIMESTAMP = 0x11,
    BT_INT64 = 0x12,
    BT_DECIMAL128 = 0x13,
    BT_MAXKEY = 0x7f,
    BT_MINKEY = 0xff,
};

/* The binary subtype whose data starts with a redundant int32 length of the rest. */
#define BSON_SUBTYPE_OLD_BINARY 0x02

/* One document being walked: where it ends and how deep it is. */
struct frame {
    uint32_t end;   /* offset just past its terminating NUL */
    uint32_t depth; /* 0 for the top-level document */
};

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes "<what> at offset <off>: <reason>" into err and returns rc. */
static int report(char *err, size_t err_len, int rc, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int report(char *err, size_t err_len, int rc, size_t off, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return rc;
    int n = snprintf(err, err_len, "%s at offset %zu: ",
                     rc == -EOVERFLOW ? BSON_CHECK_DEPTH_ERROR_MSG : "malformed BSON", off);
    if (n >= 0 && (size_t)n < err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/*
 * Walks the key that starts at offset p and must end with a NUL before offset limit (the
 * enclosing document's terminator, which leaves no room for a value). The key must be UTF-8 as
 * RFC 3629 defines it, which is what libbson's bson_validate() demands of keys: no overlong forms,
 * no surrogates, nothing above U+10FFFF. Returns the offset just past the NUL, or 0 with *why set.
 */
static size_t scan_key(const uint8_t *doc, size_t p, size_t limit, const char **why)
{
    while (p < limit) {
        uint8_t c = doc[p];
        if (c == 0)
            return p + 1;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            *why = "key is not valid UTF-8";
            return 0;
        }
        /* A sequence cut short by the limit is invalid whatever follows, so no byte past the
         * limit is ever read. A NUL is not a continuation byte, so a key cannot end inside one. */
        if (limit - p < n) {
            *why = "key is not valid UTF-8";
            return 0;
        }
        for (size_t i = 1; i < n; i++) {
            uint8_t b = doc[p + i];
            if ((b & 0xc0) != 0x80) {
                *why = "key is not valid UTF-8";
                return 0;
            }
            cp = cp << 6 | (b & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            *why = "key is not valid UTF-8";
            return 0;
        }
        p += n;
    }
    *why = "key runs into the end of its document";
    return 0;
}

int bson_check(const uint8_t *doc, size_t avail, int max_depth, char *err, size_t err_len)
{
    if (max_depth < 0 || max_depth > BSON_CHECK_MAX_DEPTH)
        return report(err, err_len, -EINVAL, 0, "maximum depth %d is not within [0, %d]", max_depth,
                      BSON_CHECK_MAX_DEPTH);
    if (avail < 5)
        return report(err, err_len, -EPROTO, 0, "%zu bytes cannot hold a document", avail);
    uint32_t len = get_u32(doc);
    if (len < 5 || len > INT32_MAX || len > avail)
        return report(err, err_len, -EPROTO, 0, "document length %d is not within [5, %zu]",
                      (int32_t)len, avail);
    if (doc[len - 1] != 0)
        return report(err, err_len, -EPROTO, len - 1, "document does not end with a NUL");

    /* Depths only grow along the stack and never pass max_depth, so one frame per level and one
     * for the top-level document always suffice. */
    struct frame stack[BSON_CHECK_MAX_DEPTH + 1];
    int sp = 0;
    stack[0].end = len;
    stack[0].depth = 0;

    /* Invariant: p is at an element's type byte, or at the terminator, of the innermost open
     * document, so p < stack[sp].end and doc[stack[sp].end - 1] is known to be 0. */
    size_t p = 4;
    for (;;) {
        const size_t end = stack[sp].end;
        const uint8_t type = doc[p];
        if (type == BT_EOO) {
            if (p != end - 1)
                return report(err, err_len, -EPROTO, p,
                              "document ends %zu bytes before its declared length", end - 1 - p);
            if (sp == 0)
                return 0;
            sp--;
            p = end;
            continue;
        }
        const char *why = NULL;
        size_t v = scan_key(doc, p + 1, end - 1, &why);
        if (v == 0)
            return report(err, err_len, -EPROTO, p, "%s", why);
        /* The value must end before the document's terminator. */
        const size_t room = end - 1 - v;
        size_t need;
        switch (type) {
        case BT_NULL:
        case BT_UNDEFINED:
        case BT_MAXKEY:
        case BT_MINKEY:
            need = 0;
            break;
        case BT_INT32:
            need = 4;
            break;
        case BT_DOUBLE:
        case BT_DATE:
        case BT_TIMESTAMP:
        case BT_INT64:
            need = 8;
            break;
        case BT_OID:
            need = 12;
            break;
        case BT_DECIMAL128:
            need = 16;
            break;
        case BT_BOOL:
            need = 1;
            if (room >= 1 && doc[v] > 1)
                return report(err, err_len, -EPROTO, v, "boolean is %u, neither 0 nor 1",
                              (unsigned)doc[v]);
            break;
        case BT_STRING:
        case BT_CODE:
        case BT_SYMBOL: {
            if (room < 4)
                return report(err, err_len, -EPROTO, v, "string length runs past its document");
            uint32_t l = get_u32(doc + v);
            if (l < 1 || l > room - 4)
                return report(err, err_len, -EPROTO, v, "string length %d is not within [1, %zu]",
                              (int32_t)l, room - 4);
            if (doc[v + 4 + l - 1] != 0)
                return report(err, err_len, -EPROTO, v, "string does not end with a NUL");
            need = 4 + (size_t)l;
            break;
        }
        case BT_BINARY: {
            if (room < 5)
                return report(err, err_len, -EPROTO, v, "binary header runs past its document");
            uint32_t l = get_u32(doc + v);
            if (l > room - 5)
                return report(err, err_len, -EPROTO, v, "binary length %d is not within [0, %zu]",
                              (int32_t)l, room - 5);
            if (doc[v + 4] == BSON_SUBTYPE_OLD_BINARY && (l < 4 || get_u32(doc + v + 5) != l - 4))
                return report(err, err_len, -EPROTO, v,
                              "old binary (subtype 2) inner length does not match its length %u",
                              l);
            need = 5 + (size_t)l;
            break;
        }
        case BT_REGEX: {
            const uint8_t *a = memchr(doc + v, 0, room);
            const uint8_t *b = a ? memchr(a + 1, 0, (size_t)(doc + end - 1 - (a + 1))) : NULL;
            if (!b)
                return report(err, err_len, -EPROTO, v,
                              "regular expression runs past its document");
            need = (size_t)(b + 1 - (doc + v));
            break;
        }
        case BT_DBPOINTER: {
            if (room < 4 + 1 + 12)
                return report(err, err_len, -EPROTO, v, "DBPointer runs past its document");
            uint32_t l = get_u32(doc + v);
            if (l < 1 || l > room - 4 - 12)
                return report(err, err_len, -EPROTO, v,
                              "DBPointer string length %d is not within [1, %zu]", (int32_t)l,
                              room - 16);
            if (doc[v + 4 + l - 1] != 0)
                return report(err, err_len, -EPROTO, v, "DBPointer string does not end with a NUL");
            need = 4 + (size_t)l + 12;
            break;
        }
        case BT_DOCUMENT:
        case BT_ARRAY: {
            if (room < 5)
                return report(err, err_len, -EPROTO, v, "embedded document runs past its document");
            uint32_t l = get_u32(doc + v);
            if (l < 5 || l > room)
                return report(err, err_len, -EPROTO, v,
                              "embedded document length %d is not within [5, %zu]", (int32_t)l,
                              room);
            if (doc[v + l - 1] != 0)
                return report(err, err_len, -EPROTO, v + l - 1,
                              "embedded document does not end with a NUL");
            if (stack[sp].depth + 1 > (uint32_t)max_depth)
                return report(err, err_len, -EOVERFLOW, v, "more than %d levels", max_depth);
            sp++;
            stack[sp].end = (uint32_t)(v + l);
            stack[sp].depth = stack[sp - 1].depth + 1;
            p = v + 4;
            continue;
        }
        case BT_CODE_W_SCOPE: {
            /* int32 total length, then a string, then the scope document, filling it exactly. */
            if (room < 4 + 4 + 1 + 5)
                return report(err, err_len, -EPROTO, v, "code with scope runs past its document");
            uint32_t total = get_u32(doc + v);
            if (total < 4 + 4 + 1 + 5 || total > room)
                return report(err, err_len, -EPROTO, v,
                              "code with scope length %d is not within [14, %zu]", (int32_t)total,
                              room);
            uint32_t sl = get_u32(doc + v + 4);
            if (sl < 1 || sl > total - 4 - 4 - 5)
                return report(err, err_len, -EPROTO, v + 4, "code length %d is not within [1, %u]",
                              (int32_t)sl, total - 13);
            if (doc[v + 8 + sl - 1] != 0)
                return report(err, err_len, -EPROTO, v + 4, "code does not end with a NUL");
            size_t s = v + 8 + sl;
            uint32_t dl = get_u32(doc + s);
            if (dl != total - 8 - sl)
                return report(err, err_len, -EPROTO, s,
                              "scope length %d does not fill code with scope (%u bytes)",
                              (int32_t)dl, total - 8 - sl);
            if (doc[s + dl - 1] != 0)
                return report(err, err_len, -EPROTO, s + dl - 1, "scope does not end with a NUL");
            /* mongod spends two levels on it: the element itself and its scope document. */
            if (stack[sp].depth + 2 > (uint32_t)max_depth)
                return report(err, err_len, -EOVERFLOW, v, "more than %d levels", max_depth);
            sp++;
            stack[sp].end = (uint32_t)(s + dl);
            stack[sp].depth = stack[sp - 1].depth + 2;
            p = s + 4;
            continue;
        }
        default:
            return report(err, err_len, -EPROTO, p, "unknown element type 0x%02x", type);
        }
        if (need > room)
            return report(err, err_len, -EPROTO, v, "value of type 0x%02x runs past its document",
                          type);
        p = v + need;
    }
}
