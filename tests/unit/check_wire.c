/*
 * check_wire.c: framing, parsing and building of wire messages.
 */
#include "check_main.h"
#include "wire.h"

#include <errno.h>
#include <string.h>

/* Builds {ping: 1, $db: "admin"} into an OP_MSG in b. */
static void build_ping(struct wire_buf *b, int32_t id)
{
    bson_t cmd = BSON_INITIALIZER;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    BSON_APPEND_UTF8(&cmd, "$db", "admin");
    ck_assert_int_eq(wire_append_msg(b, id, 0, 0, &cmd), 0);
    bson_destroy(&cmd);
}

START_TEST(header_limits)
{
    uint8_t buf[16] = {0};
    struct wire_header h;
    ck_assert_int_eq(wire_header_parse(buf, 15, WIRE_MAX_MESSAGE_SIZE, &h), -EAGAIN);
    wire_put_i32(buf, 15);
    ck_assert_int_eq(wire_header_parse(buf, 16, WIRE_MAX_MESSAGE_SIZE, &h), -EMSGSIZE);
    wire_put_i32(buf, WIRE_MAX_MESSAGE_SIZE + 1);
    ck_assert_int_eq(wire_header_parse(buf, 16, WIRE_MAX_MESSAGE_SIZE, &h), -EMSGSIZE);
    wire_put_i32(buf, -5);
    ck_assert_int_eq(wire_header_parse(buf, 16, WIRE_MAX_MESSAGE_SIZE, &h), -EMSGSIZE);
    wire_put_i32(buf, WIRE_MAX_MESSAGE_SIZE);
    wire_put_i32(buf + 4, 7);
    wire_put_i32(buf + 12, WIRE_OP_MSG);
    ck_assert_int_eq(wire_header_parse(buf, 16, WIRE_MAX_MESSAGE_SIZE, &h), 0);
    ck_assert_int_eq(h.request_id, 7);
    ck_assert_int_eq(h.opcode, WIRE_OP_MSG);
}
END_TEST

START_TEST(msg_roundtrip)
{
    struct wire_buf b = {0};
    build_ping(&b, 42);
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), 0);
    ck_assert_int_eq(m.h.request_id, 42);
    ck_assert_int_eq(m.h.length, (int32_t)b.len);
    ck_assert_uint_eq(m.flags, 0);
    ck_assert_int_eq(m.nseq, 0);
    bson_t body;
    ck_assert(wire_msg_body(&m, &body));
    ck_assert_str_eq(wire_command_name(&body), "ping");
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_sequences)
{
    struct wire_buf b = {0};
    bson_t cmd = BSON_INITIALIZER, d1 = BSON_INITIALIZER, d2 = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd, "insert", "c");
    BSON_APPEND_UTF8(&cmd, "$db", "test");
    BSON_APPEND_INT32(&d1, "_id", 1);
    BSON_APPEND_INT32(&d2, "_id", 2);
    const bson_t *docs[] = {&d1, &d2};
    ck_assert_int_eq(wire_append_msg_seq(&b, 1, 0, 0, &cmd, "documents", docs, 2), 0);
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), 0);
    ck_assert_int_eq(m.nseq, 1);
    ck_assert_str_eq(m.seq[0].identifier, "documents");
    uint32_t off = 0, dlen;
    const uint8_t *d;
    int n = 0;
    while (wire_doc_seq_next(&m.seq[0], &off, &d, &dlen) == 1)
        n++;
    ck_assert_int_eq(n, 2);
    bson_destroy(&cmd);
    bson_destroy(&d1);
    bson_destroy(&d2);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_malformed)
{
    struct wire_buf b = {0};
    build_ping(&b, 1);
    struct wire_msg m;
    /* Unknown required flag bit. */
    wire_put_i32(b.data + 16, 0x4);
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), -EPROTO);
    /* Optional bits are ignored. */
    wire_put_i32(b.data + 16, 0x20000);
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), 0);
    wire_put_i32(b.data + 16, 0);
    /* A truncated frame: header length disagrees with the bytes. */
    ck_assert_int_eq(wire_msg_parse(b.data, b.len - 1, &m), -EPROTO);
    /* A body whose length runs past the frame. */
    wire_put_i32(b.data + 21, 1000);
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), -EPROTO);
    wire_buf_reset(&b);
    /* Unknown section kind. */
    build_ping(&b, 1);
    b.data[20] = 7;
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), -EPROTO);
    /* Not an OP_MSG. */
    b.data[20] = 0;
    wire_put_i32(b.data + 12, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), -EINVAL);
    wire_buf_free(&b);
}
END_TEST

START_TEST(checksum_strip)
{
    struct wire_buf b = {0};
    build_ping(&b, 1);
    size_t len0 = b.len;
    /* Add a checksum as a peer would. */
    wire_put_i32(b.data + 16, WIRE_MSG_CHECKSUM_PRESENT);
    wire_put_i32(b.data, (int32_t)(len0 + 4));
    uint32_t crc = wire_crc32c(0, b.data, len0);
    uint8_t tail[4];
    wire_put_i32(tail, (int32_t)crc);
    ck_assert_int_eq(wire_buf_append(&b, tail, 4), 0);
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), 0);
    ck_assert_uint_eq(m.flags & WIRE_MSG_CHECKSUM_PRESENT, WIRE_MSG_CHECKSUM_PRESENT);
    size_t len = b.len;
    wire_msg_strip_checksum(b.data, &len);
    ck_assert_uint_eq(len, len0);
    ck_assert_int_eq(wire_msg_parse(b.data, len, &m), 0);
    ck_assert_uint_eq(m.flags, 0);
    /* The well-known check value of CRC-32C. */
    ck_assert_uint_eq(wire_crc32c(0, (const uint8_t *)"123456789", 9), 0xE3069283u);
    wire_buf_free(&b);
}
END_TEST

START_TEST(legacy_query_reply)
{
    struct wire_buf b = {0};
    bson_t q = BSON_INITIALIZER;
    BSON_APPEND_INT32(&q, "isMaster", 1);
    ck_assert_int_eq(wire_append_query(&b, 9, WIRE_QUERY_SECONDARY_OK, "admin.$cmd", 0, -1, &q), 0);
    struct wire_query wq;
    ck_assert_int_eq(wire_query_parse(b.data, b.len, &wq), 0);
    ck_assert_str_eq(wq.ns, "admin.$cmd");
    ck_assert_int_eq(wq.n_return, -1);
    ck_assert_int_eq(wq.flags, WIRE_QUERY_SECONDARY_OK);
    ck_assert_ptr_null(wq.fields);
    wire_buf_reset(&b);
    const bson_t *docs[] = {&q};
    ck_assert_int_eq(wire_append_reply(&b, 10, 9, 0, 77, 0, docs, 1), 0);
    struct wire_reply r;
    ck_assert_int_eq(wire_reply_parse(b.data, b.len, &r), 0);
    ck_assert_int_eq(r.h.response_to, 9);
    ck_assert_int_eq(r.n_returned, 1);
    ck_assert(r.cursor_id == 77);
    /* A reply claiming more documents than it holds. */
    wire_put_i32(b.data + 32, 2);
    ck_assert_int_eq(wire_reply_parse(b.data, b.len, &r), -EPROTO);
    bson_destroy(&q);
    wire_buf_free(&b);
}
END_TEST

START_TEST(legacy_getmore_killcursors)
{
    uint8_t f[64];
    size_t len = 16 + 4 + 7 + 4 + 8;
    struct wire_header h = {(int32_t)len, 3, 0, WIRE_OP_GET_MORE};
    wire_header_write(f, &h);
    wire_put_i32(f + 16, 0);
    memcpy(f + 20, "test.c", 7);
    wire_put_i32(f + 27, 10);
    wire_put_i64(f + 31, INT64_C(0x1122334455667788));
    struct wire_get_more g;
    ck_assert_int_eq(wire_get_more_parse(f, len, &g), 0);
    ck_assert_str_eq(g.ns, "test.c");
    ck_assert(g.cursor_id == INT64_C(0x1122334455667788));

    len = 16 + 8 + 16;
    struct wire_header h2 = {(int32_t)len, 4, 0, WIRE_OP_KILL_CURSORS};
    wire_header_write(f, &h2);
    wire_put_i32(f + 16, 0);
    wire_put_i32(f + 20, 2);
    wire_put_i64(f + 24, 5);
    wire_put_i64(f + 32, -6);
    struct wire_kill_cursors k;
    ck_assert_int_eq(wire_kill_cursors_parse(f, len, &k), 0);
    ck_assert_int_eq(k.n_ids, 2);
    ck_assert(wire_kill_cursors_id(&k, 1) == -6);
    wire_put_i32(f + 20, 3);
    ck_assert_int_eq(wire_kill_cursors_parse(f, len, &k), -EPROTO);
}
END_TEST

/* Writes a 16-byte header for a frame of len bytes with the given opcode. */
static void put_header(uint8_t *f, size_t len, int32_t opcode)
{
    struct wire_header h = {(int32_t)len, 1, 0, opcode};
    wire_header_write(f, &h);
}

/* Appends the bytes of a small BSON document {a: 1} (12 bytes) at f; returns its length. */
static size_t put_doc(uint8_t *f)
{
    static const uint8_t doc[] = {12, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 0};
    memcpy(f, doc, sizeof(doc));
    return sizeof(doc);
}

/* Appends a kind-1 section named id holding one {a: 1} at f; returns its length. */
static size_t put_seq(uint8_t *f, const char *id)
{
    size_t idlen = strlen(id) + 1;
    f[0] = 1;
    wire_put_i32(f + 1, (int32_t)(4 + idlen + 12));
    memcpy(f + 5, id, idlen);
    return 5 + idlen + put_doc(f + 5 + idlen);
}

/* Every way an OP_MSG can be malformed is refused with -EPROTO, never read past its end. */
START_TEST(msg_parse_errors)
{
    uint8_t f[512] = {0};
    struct wire_msg m;
    size_t n;
    /* Shorter than a header, and a header whose own length is below 16. */
    ck_assert_int_eq(wire_msg_parse(f, 10, &m), -EPROTO);
    put_header(f, 16, WIRE_OP_MSG);
    wire_put_i32(f, 10);
    ck_assert_int_eq(wire_msg_parse(f, 16, &m), -EPROTO);
    /* A header and flags but no section. */
    put_header(f, 20, WIRE_OP_MSG);
    wire_put_i32(f + 16, 0);
    ck_assert_int_eq(wire_msg_parse(f, 20, &m), -EPROTO);
    /* A checksum flag on a frame too short to hold one after a section. */
    put_header(f, 21, WIRE_OP_MSG);
    wire_put_i32(f + 16, (int32_t)WIRE_MSG_CHECKSUM_PRESENT);
    f[20] = 0;
    ck_assert_int_eq(wire_msg_parse(f, 21, &m), -EPROTO);
    /* Two bodies. */
    n = 20;
    wire_put_i32(f + 16, 0);
    f[n++] = 0;
    n += put_doc(f + n);
    f[n++] = 0;
    n += put_doc(f + n);
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* A body with fewer than 5 bytes left for it. */
    n = 20;
    f[n++] = 0;
    memset(f + n, 0, 3);
    n += 3;
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* Sequences only, no body. */
    n = 20 + put_seq(f + 20, "documents");
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* A body, then a kind-1 section cut before its size. */
    n = 20;
    f[n++] = 0;
    n += put_doc(f + n);
    size_t body_end = n;
    f[n++] = 1;
    f[n++] = 9;
    f[n++] = 0;
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* A section size below 5, and one past the frame. */
    n = body_end;
    f[n++] = 1;
    wire_put_i32(f + n, 4);
    n += 4;
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    wire_put_i32(f + body_end + 1, 400);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* An identifier without its NUL. */
    n = body_end;
    f[n++] = 1;
    wire_put_i32(f + n, 7);
    memcpy(f + n + 4, "abc", 3);
    n += 7;
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* A document that does not fit its section. */
    n = body_end + put_seq(f + body_end, "documents");
    wire_put_i32(f + n - 12, 13);
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* The same identifier twice. */
    n = body_end + put_seq(f + body_end, "documents");
    n += put_seq(f + n, "documents");
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* Eight sequences are the limit; a ninth is refused. */
    n = body_end;
    char id[8];
    for (int i = 0; i < WIRE_MAX_DOC_SEQUENCES; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        n += put_seq(f + n, id);
    }
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), 0);
    ck_assert_int_eq(m.nseq, WIRE_MAX_DOC_SEQUENCES);
    n += put_seq(f + n, "s8");
    put_header(f, n, WIRE_OP_MSG);
    ck_assert_int_eq(wire_msg_parse(f, n, &m), -EPROTO);
    /* An empty document has no command name. */
    bson_t empty = BSON_INITIALIZER;
    ck_assert_ptr_null(wire_command_name(&empty));
}
END_TEST

/* OP_QUERY, OP_REPLY, OP_GET_MORE and OP_KILL_CURSORS: each short or inconsistent frame is
 * -EPROTO, a frame of another opcode -EINVAL. */
START_TEST(legacy_parse_errors)
{
    uint8_t f[256] = {0};
    size_t n;
    struct wire_query q;
    struct wire_reply r;
    struct wire_get_more g;
    struct wire_kill_cursors k;

    put_header(f, 16, WIRE_OP_MSG);
    ck_assert_int_eq(wire_query_parse(f, 16, &q), -EINVAL);
    ck_assert_int_eq(wire_reply_parse(f, 16, &r), -EINVAL);
    ck_assert_int_eq(wire_get_more_parse(f, 16, &g), -EINVAL);
    ck_assert_int_eq(wire_kill_cursors_parse(f, 16, &k), -EINVAL);

    /* OP_QUERY: no flags; a namespace without NUL; no skip/limit; a bad query document. */
    put_header(f, 16, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, 16, &q), -EPROTO);
    wire_put_i32(f + 16, 0);
    memcpy(f + 20, "a.b", 3);
    put_header(f, 23, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, 23, &q), -EPROTO);
    f[23] = 0;
    put_header(f, 28, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, 28, &q), -EPROTO);
    wire_put_i32(f + 24, 0);
    wire_put_i32(f + 28, -1);
    n = 32;
    wire_put_i32(f + n, 40);
    put_header(f, n + 12, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, n + 12, &q), -EPROTO);
    /* With a projection, and with bytes after it. */
    n += put_doc(f + n);
    size_t fields_at = n;
    n += put_doc(f + n);
    put_header(f, n, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, n, &q), 0);
    ck_assert_ptr_eq(q.fields, f + fields_at);
    ck_assert_uint_eq(q.fields_len, 12);
    f[n++] = 0;
    put_header(f, n, WIRE_OP_QUERY);
    ck_assert_int_eq(wire_query_parse(f, n, &q), -EPROTO);

    /* OP_REPLY: shorter than its 20 fixed bytes; a negative count. */
    put_header(f, 30, WIRE_OP_REPLY);
    ck_assert_int_eq(wire_reply_parse(f, 30, &r), -EPROTO);
    memset(f + 16, 0, 20);
    wire_put_i32(f + 32, -1);
    put_header(f, 36, WIRE_OP_REPLY);
    ck_assert_int_eq(wire_reply_parse(f, 36, &r), -EPROTO);
    /* Fewer documents than bytes: bytes left over. */
    wire_put_i32(f + 32, 0);
    n = 36 + put_doc(f + 36);
    put_header(f, n, WIRE_OP_REPLY);
    ck_assert_int_eq(wire_reply_parse(f, n, &r), -EPROTO);

    /* OP_GET_MORE: nothing after ZERO; a namespace without NUL; a wrong tail. */
    put_header(f, 20, WIRE_OP_GET_MORE);
    ck_assert_int_eq(wire_get_more_parse(f, 20, &g), -EPROTO);
    memcpy(f + 20, "a.b", 3);
    put_header(f, 23, WIRE_OP_GET_MORE);
    ck_assert_int_eq(wire_get_more_parse(f, 23, &g), -EPROTO);
    f[23] = 0;
    put_header(f, 24 + 11, WIRE_OP_GET_MORE);
    ck_assert_int_eq(wire_get_more_parse(f, 24 + 11, &g), -EPROTO);

    /* OP_KILL_CURSORS: shorter than ZERO and the count; a negative count. */
    put_header(f, 20, WIRE_OP_KILL_CURSORS);
    ck_assert_int_eq(wire_kill_cursors_parse(f, 20, &k), -EPROTO);
    wire_put_i32(f + 20, -1);
    put_header(f, 24, WIRE_OP_KILL_CURSORS);
    ck_assert_int_eq(wire_kill_cursors_parse(f, 24, &k), -EPROTO);
}
END_TEST

/* A field added to a parsed OP_MSG replaces one of the same name, keeps the flags (less the
 * checksum, which the new frame no longer carries) and the sequences. */
START_TEST(msg_with_field)
{
    struct wire_buf in = {0}, out = {0};
    bson_t cmd = BSON_INITIALIZER, d1 = BSON_INITIALIZER, rp = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd, "insert", "c");
    bson_t old = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&old, "mode", "primary");
    BSON_APPEND_DOCUMENT(&cmd, "$readPreference", &old);
    BSON_APPEND_UTF8(&cmd, "$db", "test");
    BSON_APPEND_INT32(&d1, "_id", 1);
    const bson_t *docs[] = {&d1};
    ck_assert_int_eq(
        wire_append_msg_seq(&in, 5, 0, WIRE_MSG_EXHAUST_ALLOWED, &cmd, "documents", docs, 1), 0);
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(in.data, in.len, &m), 0);
    m.flags |= WIRE_MSG_CHECKSUM_PRESENT;
    BSON_APPEND_UTF8(&rp, "mode", "secondaryPreferred");
    ck_assert_int_eq(wire_append_msg_with_field(&out, &m, "$readPreference", &rp), 0);
    struct wire_msg m2;
    ck_assert_int_eq(wire_msg_parse(out.data, out.len, &m2), 0);
    ck_assert_int_eq(m2.h.request_id, 5);
    ck_assert_uint_eq(m2.flags, WIRE_MSG_EXHAUST_ALLOWED);
    ck_assert_int_eq(m2.nseq, 1);
    ck_assert_str_eq(m2.seq[0].identifier, "documents");
    ck_assert_uint_eq(m2.seq[0].len, d1.len);
    bson_t body;
    ck_assert(wire_msg_body(&m2, &body));
    ck_assert_str_eq(wire_command_name(&body), "insert");
    bson_iter_t it, sub;
    int seen = 0;
    ck_assert(bson_iter_init(&it, &body));
    while (bson_iter_next(&it))
        seen += strcmp(bson_iter_key(&it), "$readPreference") == 0;
    ck_assert_int_eq(seen, 1);
    ck_assert(bson_iter_init(&it, &body) &&
              bson_iter_find_descendant(&it, "$readPreference.mode", &sub));
    ck_assert_str_eq(bson_iter_utf8(&sub, NULL), "secondaryPreferred");
    /* A body that is not BSON is refused and nothing is written. */
    size_t before = out.len;
    m.body_len = 3;
    ck_assert_int_eq(wire_append_msg_with_field(&out, &m, "$readPreference", &rp), -EPROTO);
    ck_assert_uint_eq(out.len, before);
    bson_destroy(&cmd);
    bson_destroy(&old);
    bson_destroy(&d1);
    bson_destroy(&rp);
    wire_buf_free(&in);
    wire_buf_free(&out);
}
END_TEST

START_TEST(opcode_names_and_checksum_edges)
{
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_REPLY), "OP_REPLY");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_UPDATE), "OP_UPDATE");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_INSERT), "OP_INSERT");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_QUERY), "OP_QUERY");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_GET_MORE), "OP_GET_MORE");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_DELETE), "OP_DELETE");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_KILL_CURSORS), "OP_KILL_CURSORS");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_COMPRESSED), "OP_COMPRESSED");
    ck_assert_str_eq(wire_opcode_name(WIRE_OP_MSG), "OP_MSG");
    ck_assert_str_eq(wire_opcode_name(3), "unknown");
    /* Stripping leaves a frame too short for a checksum, or one without the flag, alone. */
    uint8_t f[32] = {0};
    put_header(f, 23, WIRE_OP_MSG);
    wire_put_i32(f + 16, (int32_t)WIRE_MSG_CHECKSUM_PRESENT);
    size_t len = 23;
    wire_msg_strip_checksum(f, &len);
    ck_assert_uint_eq(len, 23);
    put_header(f, 30, WIRE_OP_MSG);
    wire_put_i32(f + 16, 0);
    len = 30;
    wire_msg_strip_checksum(f, &len);
    ck_assert_uint_eq(len, 30);
    ck_assert_int_eq(wire_get_i32(f), 30);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, header_limits);
    tcase_add_test(tc, msg_roundtrip);
    tcase_add_test(tc, msg_sequences);
    tcase_add_test(tc, msg_malformed);
    tcase_add_test(tc, checksum_strip);
    tcase_add_test(tc, legacy_query_reply);
    tcase_add_test(tc, legacy_getmore_killcursors);
    tcase_add_test(tc, msg_parse_errors);
    tcase_add_test(tc, legacy_parse_errors);
    tcase_add_test(tc, msg_with_field);
    tcase_add_test(tc, opcode_names_and_checksum_edges);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(wire_suite)
