/*
 * check_compress.c: OP_COMPRESSED. Round trips with each compressor (noop, snappy, zlib, zstd)
 * over OP_MSG, OP_QUERY and OP_REPLY frames, large and empty; each refusal of the decoder with
 * its own code (truncated prefix, declared size above the limit or negative, an unknown or
 * disabled compressor, a wrapped OP_COMPRESSED or removed opcode, data that decompresses to more
 * or fewer bytes than declared, corrupt data); that a refused declared size allocates nothing; the
 * never-compressed commands of the specification; list parsing and hello negotiation; and
 * zconn.c's buffers, charged against the streams' budget and refused past it before allocating.
 */
#include "compress.h"

#include <errno.h>
#include <string.h>

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "wire.h"
#include "zconn.h"

#include "check_main.h"

static const struct compress_levels levels = {.zlib = -1, .zstd = 1};
#define ALL_MASK 0xfu

static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON in test: %s (%s)", json, e.message);
    return b;
}

/* An OP_MSG with body json, request id 77, responseTo 5. */
static void msg(struct wire_buf *b, const char *json)
{
    wire_buf_reset(b);
    bson_t *body = doc(json);
    ck_assert_int_eq(wire_append_msg(b, 77, 5, 0, body), 0);
    bson_destroy(body);
}

/* Encodes f with id, decodes it again, and checks the result is f itself. */
static void round_trip(int id, const struct wire_buf *f)
{
    struct wire_buf z = {0}, back = {0};
    ck_assert_int_eq(compress_encode(id, &levels, f->data, f->len, &z), 0);
    ck_assert_int_eq(wire_get_i32(z.data), (int32_t)z.len);
    ck_assert_int_eq(wire_get_i32(z.data + 4), wire_get_i32(f->data + 4));
    ck_assert_int_eq(wire_get_i32(z.data + 8), wire_get_i32(f->data + 8));
    ck_assert_int_eq(wire_get_i32(z.data + 12), WIRE_OP_COMPRESSED);
    ck_assert_int_eq(wire_get_i32(z.data + 16), wire_get_i32(f->data + 12));
    ck_assert_int_eq(wire_get_i32(z.data + 20), (int32_t)(f->len - 16));
    ck_assert_int_eq(z.data[24], id);
    ck_assert_uint_le(z.len, compress_bound(id, f->len));
    int got = -1;
    ck_assert_int_eq(compress_decode(z.data, z.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &back, &got),
                     0);
    ck_assert_int_eq(got, id);
    ck_assert_uint_eq(back.len, f->len);
    ck_assert(memcmp(back.data, f->data, f->len) == 0);
    wire_buf_free(&z);
    wire_buf_free(&back);
}

START_TEST(round_trips_each_compressor)
{
    struct wire_buf f = {0};
    msg(&f, "{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"$db\": \"test\"}");
    for (int id = 0; id < COMPRESSOR_COUNT; id++)
        round_trip(id, &f);

    /* A large, compressible body: compressed frames are smaller, and decode back whole. */
    bson_t big = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&big, "insert", "c");
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(&big, "documents", &arr);
    for (int i = 0; i < 5000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_UTF8(&arr, k, "the same words again and again and again");
    }
    bson_append_array_end(&big, &arr);
    BSON_APPEND_UTF8(&big, "$db", "test");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_msg(&f, 9, 0, 0, &big), 0);
    for (int id = 0; id < COMPRESSOR_COUNT; id++) {
        round_trip(id, &f);
        if (id != COMPRESSOR_NOOP) {
            struct wire_buf z = {0};
            ck_assert_int_eq(compress_encode(id, &levels, f.data, f.len, &z), 0);
            ck_assert_uint_lt(z.len, f.len / 4);
            wire_buf_free(&z);
        }
    }
    bson_destroy(&big);

    /* OP_QUERY and OP_REPLY wrap the same way. */
    bson_t *q = doc("{\"ping\": 1}");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_query(&f, 3, 0, "admin.$cmd", 0, -1, q), 0);
    for (int id = 0; id < COMPRESSOR_COUNT; id++)
        round_trip(id, &f);
    wire_buf_reset(&f);
    const bson_t *docs[] = {q};
    ck_assert_int_eq(wire_append_reply(&f, 4, 3, 0, 0, 0, docs, 1), 0);
    for (int id = 0; id < COMPRESSOR_COUNT; id++)
        round_trip(id, &f);
    bson_destroy(q);
    wire_buf_free(&f);
}
END_TEST

START_TEST(zero_length_body)
{
    /* A bare header (nothing after it) is still a frame the envelope can carry: uncompressedSize
     * 0 round-trips with every compressor, and the result is the 16-byte header alone. */
    uint8_t hdr[16];
    struct wire_header h = {.length = 16, .request_id = 1, .response_to = 0, .opcode = WIRE_OP_MSG};
    wire_header_write(hdr, &h);
    struct wire_buf f = {0};
    ck_assert_int_eq(wire_buf_append(&f, hdr, sizeof(hdr)), 0);
    for (int id = 0; id < COMPRESSOR_COUNT; id++)
        round_trip(id, &f);
    wire_buf_free(&f);
}
END_TEST

/* An OP_COMPRESSED with a given prefix and payload. */
static void raw(struct wire_buf *b, int32_t orig, int32_t size, uint8_t id, const void *payload,
                size_t n)
{
    wire_buf_reset(b);
    uint8_t p[25];
    struct wire_header h = {(int32_t)(25 + n), 1, 0, WIRE_OP_COMPRESSED};
    wire_header_write(p, &h);
    wire_put_i32(p + 16, orig);
    wire_put_i32(p + 20, size);
    p[24] = id;
    ck_assert_int_eq(wire_buf_append(b, p, sizeof(p)), 0);
    if (n)
        ck_assert_int_eq(wire_buf_append(b, payload, n), 0);
}

START_TEST(refusals_have_distinct_codes)
{
    struct wire_buf f = {0}, z = {0}, out = {0};
    msg(&f, "{\"ping\": 1, \"$db\": \"admin\"}");
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZSTD, &levels, f.data, f.len, &z), 0);

    /* Truncated prefix. */
    ck_assert_int_eq(compress_decode(z.data, 20, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
                     COMPRESS_ERR_TRUNCATED);
    /* Not an OP_COMPRESSED. */
    ck_assert_int_eq(compress_decode(f.data, f.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
                     -EINVAL);

    /* Declared size above the limit, or negative: refused before any allocation. */
    raw(&out, WIRE_OP_MSG, 2000000000, COMPRESSOR_ZSTD, z.data + 25, z.len - 25);
    struct wire_buf fresh = {0};
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_TOO_LARGE);
    ck_assert_ptr_null(fresh.data);
    ck_assert_uint_eq(fresh.cap, 0);
    raw(&out, WIRE_OP_MSG, 1024 * 1024 + 1, COMPRESSOR_NOOP, NULL, 0);
    ck_assert_int_eq(compress_decode(out.data, out.len, 1024 * 1024 + 16, ALL_MASK, &fresh, NULL),
                     COMPRESS_ERR_TOO_LARGE);
    ck_assert_ptr_null(fresh.data);
    raw(&out, WIRE_OP_MSG, -1, COMPRESSOR_NOOP, NULL, 0);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_TOO_LARGE);
    ck_assert_ptr_null(fresh.data);

    /* Unknown ids, and known ones that are not enabled. */
    raw(&out, WIRE_OP_MSG, 4, 4, "abcd", 4);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_UNKNOWN);
    raw(&out, WIRE_OP_MSG, 4, 255, "abcd", 4);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_UNKNOWN);
    ck_assert_int_eq(compress_decode(z.data, z.len, WIRE_MAX_MESSAGE_SIZE, 1u << COMPRESSOR_SNAPPY,
                                     &fresh, NULL),
                     COMPRESS_ERR_UNKNOWN);

    /* Opcodes that may not be wrapped: OP_COMPRESSED itself, the removed OP_COMMAND, nonsense. */
    raw(&out, WIRE_OP_COMPRESSED, 4, COMPRESSOR_NOOP, "abcd", 4);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_OPCODE);
    raw(&out, 2010, 4, COMPRESSOR_NOOP, "abcd", 4);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_OPCODE);
    raw(&out, 0, 4, COMPRESSOR_NOOP, "abcd", 4);
    ck_assert_int_eq(
        compress_decode(out.data, out.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &fresh, NULL),
        COMPRESS_ERR_OPCODE);
    wire_buf_free(&fresh);
    wire_buf_free(&f);
    wire_buf_free(&z);
    wire_buf_free(&out);
}
END_TEST

/* For each compressor, the true size of a body declared one less and one more than it is. */
START_TEST(declared_size_must_be_exact)
{
    struct wire_buf f = {0}, z = {0}, bad = {0}, out = {0};
    msg(&f, "{\"insert\": \"c\", \"documents\": [{\"a\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}], "
            "\"$db\": \"t\"}");
    int32_t body = (int32_t)(f.len - 16);
    for (int id = 0; id < COMPRESSOR_COUNT; id++) {
        wire_buf_reset(&z);
        ck_assert_int_eq(compress_encode(id, &levels, f.data, f.len, &z), 0);
        for (int delta = -1; delta <= 1; delta += 2) {
            raw(&bad, WIRE_OP_MSG, body + delta, (uint8_t)id, z.data + 25, z.len - 25);
            int rc =
                compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL);
            ck_assert_msg(rc == COMPRESS_ERR_SIZE, "id %d delta %d: %d", id, delta, rc);
            ck_assert_uint_eq(out.len, 0);
        }
        /* Declared far larger than the data: the MongoBleed shape, never relayed. */
        raw(&bad, WIRE_OP_MSG, body + 4096, (uint8_t)id, z.data + 25, z.len - 25);
        ck_assert_int_eq(
            compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
            COMPRESS_ERR_SIZE);
        /* Declared 0 for a non-empty body. */
        raw(&bad, WIRE_OP_MSG, 0, (uint8_t)id, z.data + 25, z.len - 25);
        ck_assert_int_eq(
            compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
            COMPRESS_ERR_SIZE);
    }
    wire_buf_free(&f);
    wire_buf_free(&z);
    wire_buf_free(&bad);
    wire_buf_free(&out);
}
END_TEST

START_TEST(corrupt_data)
{
    struct wire_buf bad = {0}, out = {0};
    const char junk[] = "\xff\xff\xff\xff this is not compressed data at all";
    for (int id = 1; id < COMPRESSOR_COUNT; id++) {
        raw(&bad, WIRE_OP_MSG, 40, (uint8_t)id, junk, sizeof(junk) - 1);
        int rc = compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL);
        ck_assert_msg(rc == COMPRESS_ERR_CORRUPT || rc == COMPRESS_ERR_SIZE, "id %d: %d", id, rc);
        ck_assert_uint_eq(out.len, 0);
    }
    /* A truncated zlib stream and a zlib stream with bytes after its end. */
    struct wire_buf f = {0}, z = {0};
    msg(&f, "{\"ping\": 1, \"$db\": \"admin\"}");
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZLIB, &levels, f.data, f.len, &z), 0);
    raw(&bad, WIRE_OP_MSG, (int32_t)(f.len - 16), COMPRESSOR_ZLIB, z.data + 25, z.len - 25 - 3);
    ck_assert_int_eq(
        compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
        COMPRESS_ERR_CORRUPT);
    raw(&bad, WIRE_OP_MSG, (int32_t)(f.len - 16), COMPRESSOR_ZLIB, z.data + 25, z.len - 25);
    ck_assert_int_eq(wire_buf_append(&bad, "xx", 2), 0);
    wire_put_i32(bad.data, (int32_t)bad.len);
    ck_assert_int_eq(
        compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &out, NULL),
        COMPRESS_ERR_CORRUPT);
    ck_assert_str_ne(compress_strerror(COMPRESS_ERR_CORRUPT), compress_strerror(COMPRESS_ERR_SIZE));
    wire_buf_free(&f);
    wire_buf_free(&z);
    wire_buf_free(&bad);
    wire_buf_free(&out);
}
END_TEST

START_TEST(never_compressed_commands)
{
    static const char *const never[] = {
        "hello",        "isMaster",   "ismaster",   "saslStart",       "saslContinue",   "getnonce",
        "authenticate", "createUser", "updateUser", "copydbSaslStart", "copydbgetnonce", "copydb",
    };
    struct wire_buf f = {0};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
        ck_assert_msg(!compress_command_allowed(never[i]), "%s", never[i]);
        char json[128];
        snprintf(json, sizeof(json), "{\"%s\": 1, \"$db\": \"admin\"}", never[i]);
        msg(&f, json);
        ck_assert_msg(!compress_frame_allowed(f.data, f.len), "OP_MSG %s", never[i]);
        /* The legacy handshake, plain and $query-wrapped. */
        bson_t *q = doc(json);
        wire_buf_reset(&f);
        ck_assert_int_eq(wire_append_query(&f, 1, 0, "admin.$cmd", 0, -1, q), 0);
        ck_assert_msg(!compress_frame_allowed(f.data, f.len), "OP_QUERY %s", never[i]);
        bson_t wrapped = BSON_INITIALIZER;
        BSON_APPEND_DOCUMENT(&wrapped, "$query", q);
        wire_buf_reset(&f);
        ck_assert_int_eq(wire_append_query(&f, 1, 0, "admin.$cmd", 0, -1, &wrapped), 0);
        ck_assert_msg(!compress_frame_allowed(f.data, f.len), "$query %s", never[i]);
        bson_destroy(&wrapped);
        bson_destroy(q);
    }
    for (const char *const *ok =
             (const char *const[]){"find", "ping", "insert", "getMore", "Hello", "helloX", NULL};
         *ok; ok++) {
        ck_assert_msg(compress_command_allowed(*ok), "%s", *ok);
        char json[128];
        snprintf(json, sizeof(json), "{\"%s\": 1, \"$db\": \"admin\"}", *ok);
        msg(&f, json);
        ck_assert_msg(compress_frame_allowed(f.data, f.len), "OP_MSG %s", *ok);
    }
    /* Replies carry no command; an OP_COMPRESSED is never wrapped again. */
    bson_t *d = doc("{\"ok\": 1}");
    const bson_t *docs[] = {d};
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_reply(&f, 1, 1, 0, 0, 0, docs, 1), 0);
    ck_assert(compress_frame_allowed(f.data, f.len));
    wire_put_i32(f.data + 12, WIRE_OP_COMPRESSED);
    ck_assert(!compress_frame_allowed(f.data, f.len));
    bson_destroy(d);
    wire_buf_free(&f);
}
END_TEST

START_TEST(lists_and_negotiation)
{
    struct compress_list l;
    char why[128];
    ck_assert_int_eq(compress_parse_list("zstd, snappy ,zlib", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 3);
    ck_assert_int_eq(l.id[0], COMPRESSOR_ZSTD);
    ck_assert_int_eq(l.id[1], COMPRESSOR_SNAPPY);
    ck_assert_int_eq(l.id[2], COMPRESSOR_ZLIB);
    char buf[64];
    compress_format_list(&l, buf, sizeof(buf));
    ck_assert_str_eq(buf, "zstd,snappy,zlib");
    ck_assert_int_eq(compress_parse_list("", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 0);
    ck_assert_int_eq(compress_parse_list("lz4", &l, why, sizeof(why)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "lz4"));
    ck_assert_int_eq(compress_parse_list("zlib,zlib", &l, why, sizeof(why)), -EINVAL);
    ck_assert_int_eq(compress_parse_list("zlib,,zstd", &l, why, sizeof(why)), -EINVAL);

    /* The server answers with the ones it also has, in its own order; unknown names and
     * non-strings are skipped. */
    struct compress_list ours, agreed;
    ck_assert_int_eq(compress_parse_list("zstd,zlib", &ours, why, sizeof(why)), 0);
    bson_t *hello = doc("{\"hello\": 1, \"compression\": [\"snappy\", \"lz4\", 7, \"zlib\", "
                        "\"zstd\"]}");
    ck_assert_int_eq(compress_negotiate(hello, &ours, &agreed), 2);
    ck_assert_int_eq(agreed.id[0], COMPRESSOR_ZSTD);
    ck_assert_int_eq(agreed.id[1], COMPRESSOR_ZLIB);
    bson_destroy(hello);
    hello = doc("{\"hello\": 1, \"compression\": []}");
    ck_assert_int_eq(compress_negotiate(hello, &ours, &agreed), 0);
    bson_destroy(hello);
    hello = doc("{\"hello\": 1}");
    ck_assert_int_eq(compress_negotiate(hello, &ours, &agreed), 0);
    bson_destroy(hello);

    /* The client uses the first of its own that the reply names. */
    bson_t *reply = doc("{\"ok\": 1, \"compression\": [\"zlib\", \"zstd\"]}");
    ck_assert_int_eq(compress_pick(reply, &ours), COMPRESSOR_ZSTD);
    bson_destroy(reply);
    reply = doc("{\"ok\": 1}");
    ck_assert_int_eq(compress_pick(reply, &ours), COMPRESSOR_NONE);
    bson_destroy(reply);

    bson_t out = BSON_INITIALIZER;
    compress_append_names(&out, "compression", &ours);
    char *json = bson_as_relaxed_extended_json(&out, NULL);
    ck_assert_str_eq(json, "{ \"compression\" : [ \"zstd\", \"zlib\" ] }");
    bson_free(json);
    bson_destroy(&out);
}
END_TEST

START_TEST(hello_doc_from_frames)
{
    struct wire_buf f = {0};
    bson_t d;
    bson_iter_t it;
    msg(&f, "{\"hello\": 1, \"compression\": [\"zlib\"], \"$db\": \"admin\"}");
    ck_assert(compress_hello_doc(f.data, f.len, &d));
    ck_assert(bson_iter_init_find(&it, &d, "compression"));
    bson_t *q = doc("{\"$query\": {\"isMaster\": 1, \"compression\": [\"zstd\"]}}");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_query(&f, 1, 0, "admin.$cmd", 0, -1, q), 0);
    ck_assert(compress_hello_doc(f.data, f.len, &d));
    ck_assert_str_eq(wire_command_name(&d), "isMaster");
    bson_destroy(q);
    wire_buf_free(&f);
}
END_TEST

/* The edges of the helpers: an empty list, frames too short or of another opcode, an unknown
 * compressor id, a frame whose length field lies, every error code's own text, and a zstd frame
 * that does not say its size and decompresses to more than the declared size. */
START_TEST(helper_edges)
{
    struct compress_list l;
    char why[128];
    ck_assert_int_eq(compress_parse_list("", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 0);
    /* Blanks alone, and blanks after a last comma, end the list as "" and "zlib," do. */
    ck_assert_int_eq(compress_parse_list("  ", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 0);
    ck_assert_int_eq(compress_parse_list("zlib, ", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 1);
    ck_assert_int_eq(compress_parse_list("zlib,", &l, why, sizeof(why)), 0);
    ck_assert_int_eq(l.n, 1);
    ck_assert_int_eq(compress_parse_list(" ,zlib", &l, why, sizeof(why)), -EINVAL);
    ck_assert_str_eq(why, "an empty name in the list of compressors");
    ck_assert_int_eq(compress_parse_list("", &l, why, sizeof(why)), 0);
    char text[32] = "x";
    compress_format_list(&l, text, sizeof(text));
    ck_assert_str_eq(text, "");
    bson_t d = BSON_INITIALIZER;
    compress_append_names(&d, "compression", &l);
    ck_assert_uint_eq(bson_count_keys(&d), 0);
    bson_destroy(&d);

    /* hello documents: too short, an OP_REPLY, a malformed OP_QUERY. */
    struct wire_buf f = {0};
    uint8_t shortf[8] = {0};
    bson_t out;
    ck_assert(!compress_hello_doc(shortf, sizeof(shortf), &out));
    ck_assert(!compress_frame_allowed(shortf, sizeof(shortf)));
    bson_t *one = doc("{\"ok\": 1}");
    const bson_t *docs[] = {one};
    ck_assert_int_eq(wire_append_reply(&f, 1, 2, 0, 0, 0, docs, 1), 0);
    ck_assert(!compress_hello_doc(f.data, f.len, &out));
    ck_assert(compress_frame_allowed(f.data, f.len));
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_query(&f, 1, 0, "admin.$cmd", 0, -1, one), 0);
    f.data[f.len - 1] = 7; /* the query document loses its terminating NUL */
    ck_assert(!compress_hello_doc(f.data, f.len, &out));
    /* A frame nobody can read holds no command to protect: it may be compressed. */
    ck_assert(compress_frame_allowed(f.data, f.len));
    ck_assert(compress_command_allowed(NULL));

    /* Encoding: an unknown compressor, a length field that is not the frame's. */
    msg(&f, "{\"ping\": 1, \"$db\": \"admin\"}");
    struct wire_buf z = {0};
    ck_assert_uint_eq(compress_bound(COMPRESSOR_COUNT, f.len), 0);
    ck_assert_int_eq(compress_encode(COMPRESSOR_COUNT, &levels, f.data, f.len, &z), -EINVAL);
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZLIB, &levels, f.data, f.len - 1, &z), -EINVAL);
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZLIB, &levels, f.data, 10, &z), -EINVAL);
    ck_assert_uint_eq(z.len, 0);
    /* Default levels when none are given. */
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZLIB, NULL, f.data, f.len, &z), 0);
    wire_buf_reset(&z);
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZSTD, NULL, f.data, f.len, &z), 0);

    /* A streamed zstd frame (no content size) holding more than declared. */
    uint8_t plain[200], packed[400];
    memset(plain, 'a', sizeof(plain));
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ck_assert(!ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0)));
    size_t zlen = ZSTD_compress2(cc, packed, sizeof(packed), plain, sizeof(plain));
    ck_assert(!ZSTD_isError(zlen));
    ZSTD_freeCCtx(cc);
    ck_assert(ZSTD_getFrameContentSize(packed, zlen) == ZSTD_CONTENTSIZE_UNKNOWN);
    struct wire_buf bad = {0}, back = {0};
    raw(&bad, WIRE_OP_MSG, 100, COMPRESSOR_ZSTD, packed, zlen);
    ck_assert_int_eq(
        compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &back, NULL),
        COMPRESS_ERR_SIZE);
    raw(&bad, WIRE_OP_MSG, 300, COMPRESSOR_ZSTD, packed, zlen);
    ck_assert_int_eq(
        compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &back, NULL),
        COMPRESS_ERR_SIZE);
    raw(&bad, WIRE_OP_MSG, 200, COMPRESSOR_ZSTD, packed, zlen);
    ck_assert_int_eq(
        compress_decode(bad.data, bad.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &back, NULL), 0);
    ck_assert_uint_eq(back.len, 216);

    /* Each code has its own text. */
    const int codes[] = {COMPRESS_ERR_TRUNCATED,
                         COMPRESS_ERR_TOO_LARGE,
                         COMPRESS_ERR_UNKNOWN,
                         COMPRESS_ERR_OPCODE,
                         COMPRESS_ERR_SIZE,
                         COMPRESS_ERR_CORRUPT,
                         -ENOMEM,
                         -EINVAL,
                         -E2BIG};
    size_t nc = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < nc; i++)
        for (size_t j = i + 1; j < nc; j++)
            ck_assert_str_ne(compress_strerror(codes[i]), compress_strerror(codes[j]));
    ck_assert_str_eq(compress_strerror(-E2BIG), "compression error");
    bson_destroy(one);
    wire_buf_free(&f);
    wire_buf_free(&z);
    wire_buf_free(&bad);
    wire_buf_free(&back);
}
END_TEST

/* zconn: buffers above 64 KiB count against max_buffer_bytes, a frame that would take the budget
 * past it is refused with -ENOBUFS before its buffer is made, and trim/free give the charge back.
 */
START_TEST(zconn_charges_the_budget)
{
    struct stream_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.budget_max = 1024 * 1024;
    struct zconn z;
    memset(&z, 0, sizeof(z));
    zconn_init(&z);
    ck_assert_int_eq(z.compressor, COMPRESSOR_NONE);

    /* A 200 KB body of zeros compresses to almost nothing but needs 200 KB decompressed. */
    size_t body = 200 * 1024;
    struct wire_buf f = {0}, c = {0};
    ck_assert_int_eq(wire_buf_reserve(&f, 16 + body), 0);
    memset(f.data, 0, 16 + body);
    struct wire_header h = {(int32_t)(16 + body), 1, 0, WIRE_OP_MSG};
    wire_header_write(f.data, &h);
    f.len = 16 + body;
    ck_assert_int_eq(compress_encode(COMPRESSOR_ZSTD, &levels, f.data, f.len, &c), 0);
    int id;
    ck_assert_int_eq(zconn_decode(&z, &ctx, c.data, c.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &id),
                     0);
    ck_assert_uint_eq(z.in.len, f.len);
    ck_assert(memcmp(z.in.data, f.data, f.len) == 0);
    ck_assert_uint_ge(ctx.budget_used, 16 + body);
    ck_assert_uint_eq(ctx.budget_used, z.charged);

    /* Encoding a small frame costs no budget; trimming gives the large buffer back. */
    size_t before = ctx.budget_used;
    struct wire_buf small = {0};
    msg(&small, "{\"ping\": 1, \"$db\": \"admin\"}");
    ck_assert_int_eq(zconn_encode(&z, &ctx, COMPRESSOR_SNAPPY, &levels, small.data, small.len), 0);
    ck_assert_uint_eq(ctx.budget_used, before);
    wire_buf_free(&small);
    zconn_trim(&z, &ctx);
    ck_assert_uint_eq(ctx.budget_used, 0);
    ck_assert_ptr_null(z.in.data);

    /* With most of the budget used by others, the same frame is refused before allocating. */
    ctx.budget_used = ctx.budget_max - 100 * 1024;
    ck_assert_int_eq(zconn_decode(&z, &ctx, c.data, c.len, WIRE_MAX_MESSAGE_SIZE, ALL_MASK, &id),
                     -ENOBUFS);
    ck_assert_ptr_null(z.in.data);
    ck_assert_uint_eq(ctx.budget_used, ctx.budget_max - 100 * 1024);
    ctx.budget_used = 0;
    ck_assert_int_eq(zconn_encode(&z, &ctx, COMPRESSOR_ZLIB, &levels, f.data, f.len), 0);
    ck_assert_uint_eq(ctx.budget_used, z.charged);
    zconn_free(&z, &ctx);
    ck_assert_uint_eq(ctx.budget_used, 0);
    ck_assert_uint_eq(ctx.buffered, 0);
    wire_buf_free(&f);
    wire_buf_free(&c);
}
END_TEST

static Suite *compress_suite(void)
{
    Suite *s = suite_create("compress");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, round_trips_each_compressor);
    tcase_add_test(tc, zero_length_body);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_test(tc, refusals_have_distinct_codes);
    tcase_add_test(tc, declared_size_must_be_exact);
    tcase_add_test(tc, corrupt_data);
    suite_add_tcase(s, tc);
    tc = tcase_create("negotiation");
    tcase_add_test(tc, never_compressed_commands);
    tcase_add_test(tc, lists_and_negotiation);
    tcase_add_test(tc, hello_doc_from_frames);
    tcase_add_test(tc, helper_edges);
    suite_add_tcase(s, tc);
    tc = tcase_create("zconn");
    tcase_add_test(tc, zconn_charges_the_budget);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(compress_suite)
