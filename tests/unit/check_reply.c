/*
 * check_reply.c: reading a backend's reply in place. OP_MSG replies: success, errors with and
 * without a code, error labels, the cursor id and its offset (rewritten in place and read again),
 * moreToCome. OP_REPLY to a command and to a legacy query or getMore (cursorID at offset 20, the
 * CursorNotFound and QueryFailure flags). Malformed frames.
 */
#include "reply.h"

#include <errno.h>
#include <string.h>

#include "wire.h"

#include "check_main.h"

/* Parses relaxed extended JSON into a new document; the test fails if it does not parse. */
static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON in test: %s (%s)", json, e.message);
    return b;
}

/* Builds an OP_MSG reply with the body json and flags into b (emptied first). */
static void msg(struct wire_buf *b, const char *json, uint32_t flags)
{
    wire_buf_reset(b);
    bson_t *body = doc(json);
    ck_assert_int_eq(wire_append_msg(b, 500, 42, flags, body), 0);
    bson_destroy(body);
}

/* Builds an OP_MSG reply and inspects it as a command reply, asserting success. */
static void inspect_msg(struct wire_buf *b, const char *json, uint32_t flags, struct reply_info *r)
{
    msg(b, json, flags);
    ck_assert_int_eq(reply_inspect(b->data, b->len, true, r), 0);
    ck_assert_int_eq(r->opcode, WIRE_OP_MSG);
    ck_assert_int_eq(r->request_id, 500);
}

START_TEST(msg_ok)
{
    struct wire_buf b = {0};
    struct reply_info r;
    inspect_msg(&b, "{\"n\": 1, \"ok\": 1.0}", 0, &r);
    ck_assert(r.ok);
    ck_assert_int_eq(r.code, 0);
    ck_assert(!r.retry_label);
    ck_assert(!r.transient_label);
    ck_assert(!r.has_cursor);
    ck_assert(!r.more_to_come);
    ck_assert(!r.legacy_not_found);
    /* The body is the document inside the frame, not a copy. */
    ck_assert_ptr_nonnull(r.body);
    ck_assert(r.body >= b.data && r.body + r.body_len <= b.data + b.len);
    ck_assert_uint_eq(r.body_len, (uint32_t)wire_get_i32(r.body));
    bson_t body;
    ck_assert(bson_init_static(&body, r.body, r.body_len));
    ck_assert(bson_has_field(&body, "n"));

    /* ok as an int, as a bool; a code next to ok: 1 does not make an error. */
    inspect_msg(&b, "{\"ok\": 1}", 0, &r);
    ck_assert(r.ok);
    inspect_msg(&b, "{\"ok\": true}", 0, &r);
    ck_assert(r.ok);
    inspect_msg(&b, "{\"ok\": 1, \"code\": 123}", 0, &r);
    ck_assert(r.ok);
    ck_assert_int_eq(r.code, 0);
    /* A body without ok: nothing says it failed. */
    inspect_msg(&b, "{\"n\": 0}", 0, &r);
    ck_assert(r.ok);
    ck_assert_int_eq(r.code, 0);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_error_with_code)
{
    struct wire_buf b = {0};
    struct reply_info r;
    inspect_msg(&b,
                "{\"ok\": 0.0, \"errmsg\": \"not primary\", \"code\": 10107, \"codeName\": "
                "\"NotWritablePrimary\"}",
                0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, 10107);
    ck_assert(!r.retry_label);
    ck_assert(!r.transient_label);
    /* The code before ok, as an int64 and as a double. */
    inspect_msg(&b, "{\"code\": {\"$numberLong\": \"11600\"}, \"ok\": 0}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, 11600);
    inspect_msg(&b, "{\"ok\": 0, \"code\": 43.0}", 0, &r);
    ck_assert_int_eq(r.code, 43);
    inspect_msg(&b, "{\"ok\": false, \"code\": 2}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, 2);
    /* A code that is no number is no code. */
    inspect_msg(&b, "{\"ok\": 0, \"code\": \"11600\"}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_error_without_code)
{
    struct wire_buf b = {0};
    struct reply_info r;
    inspect_msg(&b, "{\"ok\": 0, \"errmsg\": \"something\"}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);
    inspect_msg(&b, "{\"ok\": 0.0}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);
    inspect_msg(&b, "{\"errmsg\": \"x\", \"ok\": false, \"code\": 0}", 0, &r);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_error_labels)
{
    struct wire_buf b = {0};
    struct reply_info r;
    inspect_msg(&b, "{\"ok\": 0, \"code\": 91, \"errorLabels\": [\"RetryableWriteError\"]}", 0, &r);
    ck_assert(r.retry_label);
    ck_assert(!r.transient_label);
    ck_assert_int_eq(r.code, 91);
    inspect_msg(&b,
                "{\"errorLabels\": [\"SomethingElse\", \"TransientTransactionError\"], \"ok\": 0, "
                "\"code\": 251}",
                0, &r);
    ck_assert(!r.retry_label);
    ck_assert(r.transient_label);
    ck_assert_int_eq(r.code, 251);
    inspect_msg(&b,
                "{\"ok\": 0, \"code\": 189, \"errorLabels\": [\"TransientTransactionError\", "
                "\"RetryableWriteError\"]}",
                0, &r);
    ck_assert(r.retry_label);
    ck_assert(r.transient_label);
    /* Labels that are not strings, an array that is not one, and near misses are ignored. */
    inspect_msg(&b,
                "{\"ok\": 0, \"code\": 6, \"errorLabels\": [1, {\"a\": \"RetryableWriteError\"}, "
                "\"retryableWriteError\", \"RetryableWriteErrors\"]}",
                0, &r);
    ck_assert(!r.retry_label);
    ck_assert(!r.transient_label);
    inspect_msg(&b, "{\"ok\": 0, \"code\": 6, \"errorLabels\": \"RetryableWriteError\"}", 0, &r);
    ck_assert(!r.retry_label);
    /* A successful write reply may carry labels too (a writeConcernError's). */
    inspect_msg(&b, "{\"ok\": 1, \"errorLabels\": [\"RetryableWriteError\"]}", 0, &r);
    ck_assert(r.ok);
    ck_assert(r.retry_label);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_cursor_id_and_offset)
{
    struct wire_buf b = {0};
    struct reply_info r;
    /* id after the batch, so that its offset depends on what comes before. */
    inspect_msg(&b,
                "{\"cursor\": {\"firstBatch\": [{\"_id\": 1, \"s\": \"abcdefgh\"}, {\"_id\": 2}], "
                "\"ns\": \"test.c\", \"id\": {\"$numberLong\": \"1234567890123\"}}, \"ok\": 1}",
                0, &r);
    ck_assert(r.ok);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, INT64_C(1234567890123));
    ck_assert_uint_gt(r.cursor_id_off, 16);
    ck_assert_uint_le(r.cursor_id_off + 8, b.len);
    ck_assert_int_eq(wire_get_i64(b.data + r.cursor_id_off), INT64_C(1234567890123));
    /* The element before it is an int64 named "id". */
    ck_assert_int_eq(b.data[r.cursor_id_off - 4], 0x12);
    ck_assert_str_eq((const char *)b.data + r.cursor_id_off - 3, "id");

    /* Rewriting the 8 bytes in place changes what is read, and nothing else. */
    size_t off = r.cursor_id_off;
    wire_put_i64(b.data + off, INT64_C(-987654321987));
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, INT64_C(-987654321987));
    ck_assert_uint_eq(r.cursor_id_off, off);
    ck_assert(r.ok);
    bson_t body;
    ck_assert(bson_init_static(&body, r.body, r.body_len));
    ck_assert(bson_validate(&body, BSON_VALIDATE_NONE, NULL));
    bson_iter_t it, d;
    ck_assert(bson_iter_init(&it, &body));
    ck_assert(bson_iter_find_descendant(&it, "cursor.ns", &d));
    ck_assert_str_eq(bson_iter_utf8(&d, NULL), "test.c");

    /* A getMore reply: nextBatch, id 0 (exhausted). */
    inspect_msg(&b,
                "{\"cursor\": {\"id\": {\"$numberLong\": \"0\"}, \"ns\": \"test.c\", "
                "\"nextBatch\": []}, \"ok\": 1}",
                0, &r);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, 0);
    ck_assert_int_eq(wire_get_i64(b.data + r.cursor_id_off), 0);

    /* Where cursor comes after other fields at the top level. */
    inspect_msg(&b,
                "{\"$clusterTime\": {\"clusterTime\": {\"$timestamp\": {\"t\": 1, \"i\": 2}}}, "
                "\"cursor\": {\"ns\": \"a.b\", \"id\": {\"$numberLong\": \"77\"}, "
                "\"firstBatch\": []}, \"ok\": 1}",
                0, &r);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, 77);
    wire_put_i64(b.data + r.cursor_id_off, 4242);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert_int_eq(r.cursor_id, 4242);

    /* No cursor: an id that is no int64, a cursor that is no document, a top-level id. */
    inspect_msg(&b, "{\"cursor\": {\"id\": 5, \"firstBatch\": []}, \"ok\": 1}", 0, &r);
    ck_assert(!r.has_cursor);
    inspect_msg(&b, "{\"cursor\": 5, \"ok\": 1}", 0, &r);
    ck_assert(!r.has_cursor);
    inspect_msg(&b, "{\"id\": {\"$numberLong\": \"5\"}, \"ok\": 1}", 0, &r);
    ck_assert(!r.has_cursor);
    /* An error reply that opens nothing. */
    inspect_msg(&b, "{\"ok\": 0, \"code\": 43, \"errmsg\": \"cursor id 5 not found\"}", 0, &r);
    ck_assert(!r.has_cursor);
    ck_assert_int_eq(r.code, 43);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_more_to_come)
{
    struct wire_buf b = {0};
    struct reply_info r;
    const char *batch = "{\"cursor\": {\"nextBatch\": [], \"id\": {\"$numberLong\": \"9\"}, "
                        "\"ns\": \"t.c\"}, \"ok\": 1}";
    inspect_msg(&b, batch, WIRE_MSG_MORE_TO_COME, &r);
    ck_assert(r.more_to_come);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, 9);
    inspect_msg(&b, batch, 0, &r);
    ck_assert(!r.more_to_come);
    /* exhaustAllowed is a request flag; in a reply it says nothing of more to come. */
    inspect_msg(&b, batch, WIRE_MSG_EXHAUST_ALLOWED, &r);
    ck_assert(!r.more_to_come);
    wire_buf_free(&b);
}
END_TEST

/* Builds an OP_REPLY with the given flags, cursor id and documents (JSON, n of them). */
static void op_reply(struct wire_buf *b, int32_t flags, int64_t cursor_id, const char *const *json,
                     int n)
{
    wire_buf_reset(b);
    bson_t *docs[4];
    ck_assert_int_le(n, 4);
    for (int i = 0; i < n; i++)
        docs[i] = doc(json[i]);
    ck_assert_int_eq(
        wire_append_reply(b, 600, 43, flags, cursor_id, 0, (const bson_t *const *)docs, n), 0);
    for (int i = 0; i < n; i++)
        bson_destroy(docs[i]);
}

START_TEST(op_reply_to_command)
{
    struct wire_buf b = {0};
    struct reply_info r;
    const char *ok[] = {"{\"ismaster\": true, \"ok\": 1.0}"};
    op_reply(&b, WIRE_REPLY_AWAIT_CAPABLE, 0, ok, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert_int_eq(r.opcode, WIRE_OP_REPLY);
    ck_assert_int_eq(r.request_id, 600);
    ck_assert(r.ok);
    ck_assert_int_eq(r.code, 0);
    ck_assert_ptr_nonnull(r.body);
    ck_assert_ptr_eq(r.body, b.data + 36);
    ck_assert(!r.has_cursor);
    ck_assert(!r.more_to_come);

    const char *err[] = {"{\"ok\": 0, \"errmsg\": \"auth\", \"code\": 13, \"errorLabels\": "
                         "[\"TransientTransactionError\"]}"};
    op_reply(&b, 0, 0, err, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, 13);
    ck_assert(r.transient_label);
    ck_assert(!r.has_cursor);

    /* A command's OP_REPLY: the cursor is read from OP_MSG replies only, not from cursorID. */
    const char *cur[] = {"{\"cursor\": {\"id\": {\"$numberLong\": \"31\"}, \"firstBatch\": []}, "
                         "\"ok\": 1}"};
    op_reply(&b, 0, 55, cur, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(r.ok);
    ck_assert(!r.has_cursor);

    /* QueryFailure with a $err document: an error with the document's code. */
    const char *qf[] = {"{\"$err\": \"bad query\", \"code\": 17287}"};
    op_reply(&b, WIRE_REPLY_QUERY_FAILURE, 0, qf, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, 17287);
    /* ... and without a code. */
    const char *qf2[] = {"{\"$err\": \"bad query\"}"};
    op_reply(&b, WIRE_REPLY_QUERY_FAILURE, 0, qf2, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);

    /* No document at all: nothing to read, nothing says it failed. */
    op_reply(&b, 0, 0, NULL, 0);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(r.ok);
    ck_assert_ptr_null(r.body);
    wire_buf_free(&b);
}
END_TEST

/* reply.h: code is "0 when ok, -1 for an error without a code". A command's OP_REPLY with the
 * QueryFailure flag and no document is an error without a code. */
START_TEST(op_reply_query_failure_without_document)
{
    struct wire_buf b = {0};
    struct reply_info r;
    op_reply(&b, WIRE_REPLY_QUERY_FAILURE, 0, NULL, 0);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    ck_assert(!r.ok);
    ck_assert_ptr_null(r.body);
    ck_assert_int_eq(r.code, -1);
    wire_buf_free(&b);
}
END_TEST

START_TEST(op_reply_to_legacy_get_more)
{
    struct wire_buf b = {0};
    struct reply_info r;
    /* Data documents: an "ok: 0" among them is data, not an error. */
    const char *docs[] = {"{\"_id\": 1, \"ok\": 0, \"code\": 5}", "{\"_id\": 2}"};
    op_reply(&b, WIRE_REPLY_AWAIT_CAPABLE, INT64_C(0x0102030405060708), docs, 2);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert_int_eq(r.opcode, WIRE_OP_REPLY);
    ck_assert(r.ok);
    ck_assert_int_eq(r.code, 0);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, INT64_C(0x0102030405060708));
    ck_assert_uint_eq(r.cursor_id_off, 20);
    ck_assert_int_eq(wire_get_i64(b.data + 20), r.cursor_id);
    ck_assert(!r.legacy_not_found);
    ck_assert_ptr_null(r.body);
    /* Rewritten in place, read again. */
    wire_put_i64(b.data + r.cursor_id_off, -5);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert_int_eq(r.cursor_id, -5);

    /* Exhausted. */
    op_reply(&b, 0, 0, docs, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, 0);

    /* CursorNotFound: the flag is reported; the reply itself is no error document. */
    op_reply(&b, WIRE_REPLY_CURSOR_NOT_FOUND, 0, NULL, 0);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert(r.legacy_not_found);
    ck_assert(r.has_cursor);
    ck_assert_int_eq(r.cursor_id, 0);

    /* QueryFailure: an error without a code. */
    const char *qf[] = {"{\"$err\": \"boom\", \"code\": 12}"};
    op_reply(&b, WIRE_REPLY_QUERY_FAILURE, 0, qf, 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert(!r.ok);
    ck_assert_int_eq(r.code, -1);
    ck_assert(!r.legacy_not_found);
    op_reply(&b, WIRE_REPLY_QUERY_FAILURE | WIRE_REPLY_CURSOR_NOT_FOUND, 0, NULL, 0);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), 0);
    ck_assert(!r.ok);
    ck_assert(r.legacy_not_found);
    wire_buf_free(&b);
}
END_TEST

START_TEST(malformed_frames)
{
    struct wire_buf b = {0};
    struct reply_info r;
    msg(&b, "{\"ok\": 1}", 0);
    /* Shorter than a header, and a length that is not the frame's. */
    ck_assert_int_eq(reply_inspect(b.data, 0, true, &r), -EPROTO);
    ck_assert_int_eq(reply_inspect(b.data, 15, true, &r), -EPROTO);
    ck_assert_int_eq(reply_inspect(b.data, b.len - 1, true, &r), -EPROTO);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), 0);
    /* Extra bytes after the frame. */
    ck_assert_int_eq(wire_buf_append(&b, "\0\0\0\0", 4), 0);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);

    /* A header length below 16. */
    msg(&b, "{\"ok\": 1}", 0);
    int32_t good = wire_get_i32(b.data);
    wire_put_i32(b.data, 12);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_put_i32(b.data, -1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_put_i32(b.data, good);

    /* An unknown required flag bit. */
    wire_put_i32(b.data + 16, 0x4);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_put_i32(b.data + 16, 0);
    /* A body whose own length overruns the frame, and a body without its final NUL. */
    wire_put_i32(b.data + 21, wire_get_i32(b.data + 21) + 1);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    msg(&b, "{\"ok\": 1}", 0);
    b.data[b.len - 1] = 1;
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    /* An unknown section kind. */
    msg(&b, "{\"ok\": 1}", 0);
    b.data[20] = 7;
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);

    /* Opcodes that are no reply. */
    msg(&b, "{\"ok\": 1}", 0);
    wire_put_i32(b.data + 12, WIRE_OP_QUERY);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_put_i32(b.data + 12, WIRE_OP_COMPRESSED);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_put_i32(b.data + 12, 9999);
    ck_assert_int_eq(reply_inspect(b.data, b.len, false, &r), -EPROTO);

    /* An OP_REPLY cut short of its fixed fields, and one whose document overruns. */
    const char *one[] = {"{\"ok\": 1}"};
    op_reply(&b, 0, 0, one, 1);
    uint8_t shortr[30];
    memcpy(shortr, b.data, sizeof(shortr));
    wire_put_i32(shortr, (int32_t)sizeof(shortr));
    ck_assert_int_eq(reply_inspect(shortr, sizeof(shortr), true, &r), -EPROTO);
    ck_assert_int_eq(reply_inspect(shortr, sizeof(shortr), false, &r), -EPROTO);
    wire_put_i32(b.data + 36, wire_get_i32(b.data + 36) + 8);
    ck_assert_int_eq(reply_inspect(b.data, b.len, true, &r), -EPROTO);
    wire_buf_free(&b);
}
END_TEST

static Suite *reply_suite(void)
{
    Suite *s = suite_create("reply");
    TCase *tc = tcase_create("op_msg");
    tcase_add_test(tc, msg_ok);
    tcase_add_test(tc, msg_error_with_code);
    tcase_add_test(tc, msg_error_without_code);
    tcase_add_test(tc, msg_error_labels);
    tcase_add_test(tc, msg_cursor_id_and_offset);
    tcase_add_test(tc, msg_more_to_come);
    suite_add_tcase(s, tc);
    tc = tcase_create("op_reply");
    tcase_add_test(tc, op_reply_to_command);
    tcase_add_test(tc, op_reply_query_failure_without_document);
    tcase_add_test(tc, op_reply_to_legacy_get_more);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, malformed_frames);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(reply_suite)
