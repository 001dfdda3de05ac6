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
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(wire_suite)
