/*
 * check_request.c: classifying client frames: OP_MSG commands (hello and its legacy spellings,
 * mongolbStatus, reads, writes, getMore, killCursors), session and transaction fields, read
 * preference, OP_MSG flags, legacy OP_QUERY commands with and without the $query wrapping,
 * OP_GET_MORE and OP_KILL_CURSORS, opcodes mongolb refuses, and malformed frames; every BSON
 * document checked: too deep (-EOVERFLOW, with what the error reply needs) and malformed documents
 * in kind-1 sequences and OP_QUERY projections.
 */
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bson_check.h"

#include "check_main.h"

static char err[256];

/* Parses relaxed extended JSON into a new document; the test fails if it does not parse. */
static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON in test: %s (%s)", json, e.message);
    return b;
}

/* Classifies the frame in b. */
static int classify_buf(const struct wire_buf *b, struct request_info *ri)
{
    err[0] = 0;
    return request_classify(b->data, b->len, ri, err, sizeof(err));
}

/* Builds an OP_MSG with the body json and the given flags and classifies it. */
static int classify_msg(const char *json, uint32_t flags, struct request_info *ri)
{
    struct wire_buf b = {0};
    bson_t *body = doc(json);
    ck_assert_int_eq(wire_append_msg(&b, 77, 0, flags, body), 0);
    int rc = classify_buf(&b, ri);
    bson_destroy(body);
    wire_buf_free(&b);
    return rc;
}

/* Builds an OP_QUERY on ns with the query json and flags and classifies it. */
static int classify_query(const char *ns, int32_t flags, const char *json, struct request_info *ri)
{
    struct wire_buf b = {0};
    bson_t *q = doc(json);
    ck_assert_int_eq(wire_append_query(&b, 78, flags, ns, 0, -1, q), 0);
    int rc = classify_buf(&b, ri);
    bson_destroy(q);
    wire_buf_free(&b);
    return rc;
}

/* Appends a 16-byte header for a frame of len bytes with opcode op. */
static void put_header(struct wire_buf *b, int32_t len, int32_t request_id, int32_t op)
{
    uint8_t h[16];
    wire_put_i32(h, len);
    wire_put_i32(h + 4, request_id);
    wire_put_i32(h + 8, 0);
    wire_put_i32(h + 12, op);
    ck_assert_int_eq(wire_buf_append(b, h, sizeof(h)), 0);
}

/* Appends a little-endian int32 or int64. */
static void put_i32(struct wire_buf *b, int32_t v)
{
    uint8_t p[4];
    wire_put_i32(p, v);
    ck_assert_int_eq(wire_buf_append(b, p, 4), 0);
}

static void put_i64(struct wire_buf *b, int64_t v)
{
    uint8_t p[8];
    wire_put_i64(p, v);
    ck_assert_int_eq(wire_buf_append(b, p, 8), 0);
}

/* Builds a legacy OP_GET_MORE frame. */
static void build_get_more(struct wire_buf *b, const char *ns, int32_t n_return, int64_t id)
{
    int32_t len = (int32_t)(16 + 4 + strlen(ns) + 1 + 4 + 8);
    put_header(b, len, 90, WIRE_OP_GET_MORE);
    put_i32(b, 0);
    ck_assert_int_eq(wire_buf_append(b, ns, strlen(ns) + 1), 0);
    put_i32(b, n_return);
    put_i64(b, id);
    ck_assert_uint_eq(b->len, (size_t)len);
}

/* Builds a legacy OP_KILL_CURSORS frame. */
static void build_kill_cursors(struct wire_buf *b, const int64_t *ids, int n)
{
    int32_t len = 16 + 4 + 4 + 8 * n;
    put_header(b, len, 91, WIRE_OP_KILL_CURSORS);
    put_i32(b, 0);
    put_i32(b, n);
    for (int i = 0; i < n; i++)
        put_i64(b, ids[i]);
}

/* Builds a frame with opcode op and payload bytes (their content is never looked at). */
static void build_raw(struct wire_buf *b, int32_t op, const void *payload, size_t n)
{
    put_header(b, (int32_t)(16 + n), 92, op);
    ck_assert_int_eq(wire_buf_append(b, payload, n), 0);
}

/* --- OP_MSG: hello and status ---------------------------------------------------------------- */

START_TEST(msg_hello_variants)
{
    struct request_info ri;
    ck_assert_int_eq(classify_msg("{\"hello\": 1, \"helloOk\": true, \"$db\": \"admin\"}", 0, &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert_int_eq(ri.opcode, WIRE_OP_MSG);
    ck_assert_int_eq(ri.request_id, 77);
    ck_assert_str_eq(ri.command, "hello");
    ck_assert_str_eq(ri.db, "admin");
    ck_assert(!ri.legacy_hello);
    ck_assert(ri.hello_ok);
    ck_assert(!ri.legacy);

    ck_assert_int_eq(classify_msg("{\"isMaster\": 1, \"$db\": \"admin\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert(ri.legacy_hello);
    ck_assert(!ri.hello_ok);

    ck_assert_int_eq(
        classify_msg("{\"ismaster\": true, \"helloOk\": true, \"$db\": \"test\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert(ri.legacy_hello);
    ck_assert(ri.hello_ok);
    ck_assert_str_eq(ri.db, "test");

    ck_assert_int_eq(classify_msg("{\"mongolbStatus\": 1, \"$db\": \"admin\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_STATUS);
    ck_assert_str_eq(ri.command, "mongolbStatus");

    /* Command names are case-sensitive: "Hello" is not answered locally. */
    ck_assert_int_eq(classify_msg("{\"Hello\": 1, \"$db\": \"admin\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
}
END_TEST

/* --- OP_MSG: reads and writes ------------------------------------------------------------------
 */

START_TEST(msg_find_and_reads)
{
    struct request_info ri;
    ck_assert_int_eq(
        classify_msg("{\"find\": \"c\", \"filter\": {\"a\": 1}, \"$db\": \"test\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert_str_eq(ri.command, "find");
    ck_assert_str_eq(ri.db, "test");
    ck_assert(ri.opens_cursor);
    ck_assert(ri.retryable_read);
    ck_assert(!ri.is_write);
    ck_assert(!ri.has_lsid);
    ck_assert(!ri.has_read_pref);

    const char *readers[] = {"listCollections", "listIndexes"};
    for (int i = 0; i < 2; i++) {
        char json[128];
        snprintf(json, sizeof(json), "{\"%s\": 1, \"$db\": \"test\"}", readers[i]);
        ck_assert_int_eq(classify_msg(json, 0, &ri), 0);
        ck_assert_msg(ri.opens_cursor && ri.retryable_read && !ri.is_write, "%s", readers[i]);
    }
    const char *plain_reads[] = {"count", "distinct", "listDatabases"};
    for (int i = 0; i < 3; i++) {
        char json[128];
        snprintf(json, sizeof(json), "{\"%s\": \"c\", \"$db\": \"test\"}", plain_reads[i]);
        ck_assert_int_eq(classify_msg(json, 0, &ri), 0);
        ck_assert_msg(!ri.opens_cursor && ri.retryable_read && !ri.is_write, "%s", plain_reads[i]);
    }
    /* A command that is neither: forwarded, not retried as a read, not a write. */
    ck_assert_int_eq(classify_msg("{\"ping\": 1, \"$db\": \"admin\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert(!ri.opens_cursor && !ri.retryable_read && !ri.is_write);
}
END_TEST

START_TEST(msg_aggregate_out_merge)
{
    struct request_info ri;
    ck_assert_int_eq(classify_msg("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {}}, "
                                  "{\"$group\": {\"_id\": 1}}], \"cursor\": {}, \"$db\": \"t\"}",
                                  0, &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert(ri.opens_cursor);
    ck_assert(ri.retryable_read);
    ck_assert(!ri.is_write);

    ck_assert_int_eq(classify_msg("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {}}, "
                                  "{\"$out\": \"o\"}], \"cursor\": {}, \"$db\": \"t\"}",
                                  0, &ri),
                     0);
    ck_assert(ri.opens_cursor);
    ck_assert(!ri.retryable_read);
    ck_assert(ri.is_write);

    ck_assert_int_eq(classify_msg("{\"aggregate\": 1, \"pipeline\": [{\"$merge\": {\"into\": "
                                  "\"o\"}}], \"cursor\": {}, \"$db\": \"t\"}",
                                  0, &ri),
                     0);
    ck_assert(!ri.retryable_read);
    ck_assert(ri.is_write);

    /* An empty pipeline reads. */
    ck_assert_int_eq(
        classify_msg("{\"aggregate\": \"c\", \"pipeline\": [], \"cursor\": {}, \"$db\": \"t\"}", 0,
                     &ri),
        0);
    ck_assert(ri.retryable_read);
    ck_assert(!ri.is_write);
}
END_TEST

START_TEST(msg_insert_with_sequence)
{
    struct wire_buf b = {0};
    bson_t *cmd = doc("{\"insert\": \"c\", \"ordered\": true, \"$db\": \"test\"}");
    bson_t *d1 = doc("{\"_id\": 1}"), *d2 = doc("{\"_id\": 2}");
    const bson_t *docs[] = {d1, d2};
    ck_assert_int_eq(wire_append_msg_seq(&b, 5, 0, 0, cmd, "documents", docs, 2), 0);
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert_str_eq(ri.command, "insert");
    ck_assert_str_eq(ri.db, "test");
    ck_assert(ri.is_write);
    ck_assert(!ri.retryable_read);
    ck_assert(!ri.opens_cursor);
    ck_assert_int_eq(ri.request_id, 5);
    bson_destroy(cmd);
    bson_destroy(d1);
    bson_destroy(d2);
    wire_buf_free(&b);

    const char *writes[] = {"update", "delete", "findAndModify", "createIndexes", "drop"};
    for (int i = 0; i < 5; i++) {
        char json[128];
        snprintf(json, sizeof(json), "{\"%s\": \"c\", \"$db\": \"test\"}", writes[i]);
        ck_assert_int_eq(classify_msg(json, 0, &ri), 0);
        ck_assert_msg(ri.is_write && !ri.retryable_read, "%s", writes[i]);
    }
}
END_TEST

/* --- OP_MSG: cursors ---------------------------------------------------------------------------
 */

START_TEST(msg_get_more)
{
    struct request_info ri;
    ck_assert_int_eq(classify_msg("{\"getMore\": {\"$numberLong\": \"8070450532247928832\"}, "
                                  "\"collection\": \"c\", \"$db\": \"test\"}",
                                  0, &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_GET_MORE);
    ck_assert_str_eq(ri.command, "getMore");
    ck_assert_int_eq(ri.cursor_id, INT64_C(8070450532247928832));
    ck_assert(!ri.opens_cursor);

    ck_assert_int_eq(classify_msg("{\"getMore\": {\"$numberLong\": \"-5\"}, \"collection\": \"c\", "
                                  "\"$db\": \"test\"}",
                                  0, &ri),
                     0);
    ck_assert_int_eq(ri.cursor_id, -5);

    ck_assert_int_eq(
        classify_msg("{\"getMore\": \"abc\", \"collection\": \"c\", \"$db\": \"test\"}", 0, &ri),
        -EPROTO);
    ck_assert_str_ne(err, "");
}
END_TEST

START_TEST(msg_kill_cursors)
{
    struct wire_buf b = {0};
    bson_t *cmd = doc("{\"killCursors\": \"c\", \"cursors\": [{\"$numberLong\": "
                      "\"1234567890123\"}, {\"$numberLong\": \"-2\"}, 3], \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 6, 0, 0, cmd), 0);
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_KILL_CURSORS);
    ck_assert_int_eq(ri.n_kill_ids, 3);
    int64_t ids[8];
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 8), 3);
    ck_assert_int_eq(ids[0], INT64_C(1234567890123));
    ck_assert_int_eq(ids[1], -2);
    ck_assert_int_eq(ids[2], 3);
    /* At most max ids are collected. */
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 2), 2);
    bson_destroy(cmd);
    wire_buf_reset(&b);

    /* A non-integer id makes the frame malformed for the id collector. */
    cmd = doc("{\"killCursors\": \"c\", \"cursors\": [1, \"x\"], \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 7, 0, 0, cmd), 0);
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 8), -EPROTO);
    bson_destroy(cmd);
    wire_buf_reset(&b);

    /* No cursors array at all. */
    cmd = doc("{\"killCursors\": \"c\", \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 8, 0, 0, cmd), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_KILL_CURSORS);
    ck_assert_int_eq(ri.n_kill_ids, 0);
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 8), -EPROTO);
    bson_destroy(cmd);
    wire_buf_free(&b);
}
END_TEST

START_TEST(opens_cursor_names)
{
    ck_assert(request_command_opens_cursor("find"));
    ck_assert(request_command_opens_cursor("aggregate"));
    ck_assert(request_command_opens_cursor("listCollections"));
    ck_assert(request_command_opens_cursor("listIndexes"));
    ck_assert(!request_command_opens_cursor("getMore"));
    ck_assert(!request_command_opens_cursor("count"));
    ck_assert(!request_command_opens_cursor("insert"));
    ck_assert(!request_command_opens_cursor(""));
}
END_TEST

/* Every name of request.c's command table, classified through a real frame: the table is searched
 * by bisection, so one name out of order would silently make its neighbours ordinary commands. */
START_TEST(command_table_every_name)
{
    static const struct {
        const char *name;
        enum request_kind kind;
        bool opens_cursor, retryable_read, is_write;
    } cases[] = {
        {"abortTransaction", REQ_FORWARD, false, false, true},
        {"aggregate", REQ_FORWARD, true, true, false},
        {"bulkWrite", REQ_FORWARD, false, false, true},
        {"collMod", REQ_FORWARD, false, false, true},
        {"commitTransaction", REQ_FORWARD, false, false, true},
        {"count", REQ_FORWARD, false, true, false},
        {"create", REQ_FORWARD, false, false, true},
        {"createIndexes", REQ_FORWARD, false, false, true},
        {"delete", REQ_FORWARD, false, false, true},
        {"distinct", REQ_FORWARD, false, true, false},
        {"drop", REQ_FORWARD, false, false, true},
        {"dropDatabase", REQ_FORWARD, false, false, true},
        {"dropIndexes", REQ_FORWARD, false, false, true},
        {"find", REQ_FORWARD, true, true, false},
        {"findAndModify", REQ_FORWARD, false, false, true},
        {"findandmodify", REQ_FORWARD, false, false, true},
        {"hello", REQ_HELLO, false, false, false},
        {"insert", REQ_FORWARD, false, false, true},
        {"isMaster", REQ_HELLO, false, false, false},
        {"ismaster", REQ_HELLO, false, false, false},
        {"listCollections", REQ_FORWARD, true, true, false},
        {"listDatabases", REQ_FORWARD, false, true, false},
        {"listIndexes", REQ_FORWARD, true, true, false},
        {"mongolbStatus", REQ_STATUS, false, false, false},
        {"renameCollection", REQ_FORWARD, false, false, true},
        {"update", REQ_FORWARD, false, false, true},
        {"saslStart", REQ_AUTH, false, false, false},
        {"saslContinue", REQ_AUTH, false, false, false},
        {"authenticate", REQ_AUTH, false, false, false},
        {"logout", REQ_AUTH, false, false, false},
        {"ping", REQ_FORWARD, false, false, false},
        {"Find", REQ_FORWARD, false, false, false},
        {"zzz", REQ_FORWARD, false, false, false},
        {"AAA", REQ_FORWARD, false, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[160];
        snprintf(json, sizeof(json), "{\"%s\": \"c\", \"$db\": \"d\"}", cases[i].name);
        struct request_info ri;
        ck_assert_int_eq(classify_msg(json, 0, &ri), 0);
        ck_assert_msg(ri.kind == cases[i].kind, "%s: kind %d", cases[i].name, ri.kind);
        ck_assert_msg(ri.opens_cursor == cases[i].opens_cursor, "%s: opens_cursor", cases[i].name);
        ck_assert_msg(ri.retryable_read == cases[i].retryable_read, "%s: retryable_read",
                      cases[i].name);
        ck_assert_msg(ri.is_write == cases[i].is_write, "%s: is_write", cases[i].name);
        ck_assert_str_eq(ri.command, cases[i].name);
        ck_assert_str_eq(ri.db, "d");
    }
}
END_TEST

/* --- OP_MSG: sessions, read preference, flags ------------------------------------------------- */

START_TEST(msg_session_fields)
{
    static const uint8_t uuid[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    bson_t cmd = BSON_INITIALIZER, lsid;
    BSON_APPEND_UTF8(&cmd, "insert", "c");
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "lsid", &lsid);
    BSON_APPEND_BINARY(&lsid, "id", BSON_SUBTYPE_UUID, uuid, 16);
    bson_append_document_end(&cmd, &lsid);
    BSON_APPEND_INT64(&cmd, "txnNumber", INT64_C(9000000000));
    BSON_APPEND_BOOL(&cmd, "autocommit", false);
    BSON_APPEND_BOOL(&cmd, "startTransaction", true);
    BSON_APPEND_UTF8(&cmd, "$db", "test");
    struct wire_buf b = {0};
    ck_assert_int_eq(wire_append_msg(&b, 9, 0, 0, &cmd), 0);
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert(ri.has_lsid);
    ck_assert_mem_eq(ri.lsid, uuid, 16);
    ck_assert(ri.has_txn_number);
    ck_assert_int_eq(ri.txn_number, INT64_C(9000000000));
    ck_assert(ri.autocommit_false);
    ck_assert(ri.start_transaction);
    ck_assert(ri.is_write);
    bson_destroy(&cmd);
    wire_buf_free(&b);

    /* A later statement of the transaction: no startTransaction. */
    ck_assert_int_eq(classify_msg("{\"find\": \"c\", \"txnNumber\": 3, \"autocommit\": false, "
                                  "\"$db\": \"test\"}",
                                  0, &ri),
                     0);
    ck_assert(!ri.has_lsid);
    ck_assert(ri.has_txn_number);
    ck_assert_int_eq(ri.txn_number, 3);
    ck_assert(ri.autocommit_false);
    ck_assert(!ri.start_transaction);

    /* A retryable write outside a transaction: txnNumber without autocommit. */
    ck_assert_int_eq(
        classify_msg("{\"insert\": \"c\", \"txnNumber\": {\"$numberLong\": \"1\"}, \"$db\": "
                     "\"test\"}",
                     0, &ri),
        0);
    ck_assert(ri.has_txn_number);
    ck_assert(!ri.autocommit_false);

    /* An lsid whose id is not 16 bytes is not taken. */
    bson_t cmd2 = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&cmd2, "find", "c");
    BSON_APPEND_DOCUMENT_BEGIN(&cmd2, "lsid", &lsid);
    BSON_APPEND_BINARY(&lsid, "id", BSON_SUBTYPE_UUID, uuid, 15);
    bson_append_document_end(&cmd2, &lsid);
    BSON_APPEND_UTF8(&cmd2, "$db", "test");
    ck_assert_int_eq(wire_append_msg(&b, 10, 0, 0, &cmd2), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert(!ri.has_lsid);
    bson_destroy(&cmd2);
    wire_buf_free(&b);
}
END_TEST

/* maxTimeMS is read so that mongolb's request timeout never cuts a command short of it. */
START_TEST(msg_max_time_ms)
{
    struct request_info ri;
    ck_assert_int_eq(
        classify_msg("{\"find\": \"c\", \"maxTimeMS\": 5000, \"$db\": \"test\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.max_time_ms, 5000);
    ck_assert_int_eq(
        classify_msg("{\"find\": \"c\", \"maxTimeMS\": -1, \"$db\": \"test\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.max_time_ms, 0);
    ck_assert_int_eq(classify_msg("{\"find\": \"c\", \"$db\": \"test\"}", 0, &ri), 0);
    ck_assert_int_eq(ri.max_time_ms, 0);
}
END_TEST

START_TEST(msg_read_preference)
{
    struct request_info ri;
    ck_assert_int_eq(classify_msg("{\"find\": \"c\", \"$readPreference\": {\"mode\": "
                                  "\"secondaryPreferred\", \"tags\": [{\"dc\": \"east\"}]}, "
                                  "\"$db\": \"test\"}",
                                  0, &ri),
                     0);
    ck_assert(ri.has_read_pref);
    ck_assert_str_eq(ri.read_pref_mode, "secondaryPreferred");
    ck_assert(!ri.secondary_ok);
    ck_assert(!ri.legacy);
    /* The whole document is kept for the read-preference parser (classify_msg freed the frame, so
     * only its length is checked here). */
    ck_assert_ptr_nonnull(ri.read_pref_doc);
    ck_assert_uint_gt(ri.read_pref_len, 5);

    struct wire_buf b = {0};
    bson_t *cmd = doc("{\"find\": \"c\", \"$readPreference\": {\"mode\": \"nearest\", "
                      "\"maxStalenessSeconds\": 120}, \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 13, 0, 0, cmd), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert(ri.read_pref_doc > b.data && ri.read_pref_doc < b.data + b.len);
    bson_t rp;
    bson_iter_t it;
    ck_assert(bson_init_static(&rp, ri.read_pref_doc, ri.read_pref_len));
    ck_assert(bson_iter_init_find(&it, &rp, "maxStalenessSeconds"));
    ck_assert_int_eq(bson_iter_as_int64(&it), 120);
    bson_destroy(cmd);
    wire_buf_free(&b);
}
END_TEST

START_TEST(msg_flags)
{
    struct request_info ri;
    ck_assert_int_eq(
        classify_msg("{\"insert\": \"c\", \"$db\": \"test\"}", WIRE_MSG_MORE_TO_COME, &ri), 0);
    ck_assert(ri.more_to_come);
    ck_assert(!ri.exhaust_allowed);
    ck_assert_uint_eq(ri.msg_flags, WIRE_MSG_MORE_TO_COME);

    ck_assert_int_eq(classify_msg("{\"hello\": 1, \"topologyVersion\": {}, \"maxAwaitTimeMS\": "
                                  "10000, \"$db\": \"admin\"}",
                                  WIRE_MSG_EXHAUST_ALLOWED, &ri),
                     0);
    ck_assert(!ri.more_to_come);
    ck_assert(ri.exhaust_allowed);
    ck_assert_uint_eq(ri.msg_flags, WIRE_MSG_EXHAUST_ALLOWED);

    ck_assert_int_eq(classify_msg("{\"ping\": 1, \"$db\": \"admin\"}", 0, &ri), 0);
    ck_assert(!ri.more_to_come);
    ck_assert(!ri.exhaust_allowed);

    /* An unknown required flag bit is a protocol error. */
    ck_assert_int_eq(classify_msg("{\"ping\": 1, \"$db\": \"admin\"}", 0x4, &ri), -EPROTO);
}
END_TEST

/* --- OP_MSG: malformed -------------------------------------------------------------------------
 */

START_TEST(msg_missing_db)
{
    struct request_info ri;
    ck_assert_int_eq(classify_msg("{\"find\": \"c\"}", 0, &ri), -EPROTO);
    ck_assert_str_ne(err, "");
    /* $db must be a string. */
    ck_assert_int_eq(classify_msg("{\"find\": \"c\", \"$db\": 1}", 0, &ri), -EPROTO);
    /* An empty command document. */
    ck_assert_int_eq(classify_msg("{}", 0, &ri), -EPROTO);
    ck_assert_str_ne(err, "");
}
END_TEST

START_TEST(msg_invalid_bson)
{
    struct wire_buf b = {0};
    bson_t *cmd = doc("{\"find\": \"coll\", \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 11, 0, 0, cmd), 0);
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(b.data, b.len, &m), 0);
    /* The body's framing stays intact, but the string length of "find" now runs past the end of
     * the document: {len}{0x02 "find\0" strlen ...}. */
    uint8_t *body = b.data + m.body_offset;
    ck_assert_int_eq(body[4], 0x02);
    ck_assert_str_eq((const char *)body + 5, "find");
    wire_put_i32(body + 10, 1000);
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), -EPROTO);
    ck_assert_str_ne(err, "");

    /* An element type that does not exist. */
    wire_put_i32(body + 10, 5);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    body[4] = 0x7e;
    ck_assert_int_eq(classify_buf(&b, &ri), -EPROTO);
    bson_destroy(cmd);
    wire_buf_free(&b);
}
END_TEST

START_TEST(truncated_frames)
{
    struct wire_buf b = {0};
    bson_t *cmd = doc("{\"find\": \"coll\", \"$db\": \"test\"}");
    ck_assert_int_eq(wire_append_msg(&b, 12, 0, 0, cmd), 0);
    struct request_info ri;
    /* Fewer bytes than the header says. */
    err[0] = 0;
    ck_assert_int_eq(request_classify(b.data, b.len - 1, &ri, err, sizeof(err)), -EPROTO);
    ck_assert_str_ne(err, "");
    /* Not even a header. */
    ck_assert_int_eq(request_classify(b.data, 10, &ri, err, sizeof(err)), -EPROTO);
    ck_assert_int_eq(request_classify(b.data, 0, &ri, err, sizeof(err)), -EPROTO);
    /* A header that claims less than a header. */
    uint8_t small[16];
    memcpy(small, b.data, 16);
    wire_put_i32(small, 12);
    ck_assert_int_eq(request_classify(small, 16, &ri, err, sizeof(err)), -EPROTO);
    /* A frame cut short whose header was made to agree: the body no longer fits its section. */
    size_t cut = b.len - 3;
    wire_put_i32(b.data, (int32_t)cut);
    ck_assert_int_eq(request_classify(b.data, cut, &ri, err, sizeof(err)), -EPROTO);
    int64_t ids[4];
    ck_assert_int_eq(request_kill_ids(b.data, cut, ids, 4), -EPROTO);
    ck_assert_int_eq(request_kill_ids(b.data, 10, ids, 4), -EPROTO);
    bson_destroy(cmd);
    wire_buf_free(&b);

    /* Legacy frames cut short. */
    wire_buf_reset(&b);
    build_get_more(&b, "test.c", 0, 42);
    wire_put_i32(b.data, (int32_t)(b.len - 4));
    ck_assert_int_eq(request_classify(b.data, b.len - 4, &ri, err, sizeof(err)), -EPROTO);
    wire_buf_free(&b);
    const int64_t kids[] = {1, 2};
    build_kill_cursors(&b, kids, 2);
    wire_put_i32(b.data + 20, 3); /* says three ids, carries two */
    ck_assert_int_eq(request_classify(b.data, b.len, &ri, err, sizeof(err)), -EPROTO);
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 4), -EPROTO);
    wire_buf_free(&b);
    bson_t *q = doc("{\"isMaster\": 1}");
    ck_assert_int_eq(wire_append_query(&b, 1, 0, "admin.$cmd", 0, -1, q), 0);
    wire_put_i32(b.data, (int32_t)(b.len - 2));
    ck_assert_int_eq(request_classify(b.data, b.len - 2, &ri, err, sizeof(err)), -EPROTO);
    bson_destroy(q);
    wire_buf_free(&b);
}
END_TEST

/* --- legacy opcodes ----------------------------------------------------------------------------
 */

START_TEST(query_is_master)
{
    struct request_info ri;
    ck_assert_int_eq(classify_query("admin.$cmd", 0, "{\"isMaster\": 1, \"client\": {}}", &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert_int_eq(ri.opcode, WIRE_OP_QUERY);
    ck_assert_int_eq(ri.request_id, 78);
    ck_assert(ri.legacy);
    ck_assert(ri.legacy_hello);
    ck_assert(!ri.secondary_ok);
    ck_assert(!ri.has_read_pref);
    ck_assert_str_eq(ri.command, "isMaster");
    ck_assert_str_eq(ri.db, "admin");

    ck_assert_int_eq(classify_query("admin.$cmd", 0, "{\"ismaster\": 1, \"helloOk\": true}", &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert(ri.legacy_hello);
    ck_assert(ri.hello_ok);
}
END_TEST

START_TEST(query_wrapped_is_master)
{
    struct request_info ri;
    ck_assert_int_eq(classify_query("admin.$cmd", WIRE_QUERY_SECONDARY_OK,
                                    "{\"$query\": {\"isMaster\": 1, \"helloOk\": true}, "
                                    "\"$readPreference\": {\"mode\": \"secondaryPreferred\"}}",
                                    &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_HELLO);
    ck_assert(ri.legacy);
    ck_assert(ri.legacy_hello);
    ck_assert(ri.hello_ok);
    ck_assert(ri.secondary_ok);
    ck_assert(ri.has_read_pref);
    ck_assert_str_eq(ri.read_pref_mode, "secondaryPreferred");
    ck_assert_str_eq(ri.command, "isMaster");
    ck_assert_str_eq(ri.db, "admin");

    /* A wrapped read on another database's $cmd is forwarded with its read preference. */
    ck_assert_int_eq(classify_query("sales.$cmd", 0,
                                    "{\"$query\": {\"count\": \"orders\"}, "
                                    "\"$readPreference\": {\"mode\": \"nearest\"}}",
                                    &ri),
                     0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert_str_eq(ri.command, "count");
    ck_assert_str_eq(ri.db, "sales");
    ck_assert(ri.retryable_read);
    ck_assert_str_eq(ri.read_pref_mode, "nearest");
}
END_TEST

START_TEST(query_on_collection_forwards)
{
    struct request_info ri;
    ck_assert_int_eq(classify_query("test.coll", 0, "{\"a\": 1}", &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert(ri.legacy);
    ck_assert_str_eq(ri.db, "test");
    ck_assert_str_eq(ri.command, "find");
    /* A collection whose name merely starts with $cmd is not the command namespace. */
    ck_assert_int_eq(classify_query("test.$cmdx", 0, "{\"isMaster\": 1}", &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert_str_eq(ri.command, "find");
}
END_TEST

START_TEST(legacy_get_more_and_kill_cursors)
{
    struct wire_buf b = {0};
    build_get_more(&b, "test.c", 100, INT64_C(-7000000000000));
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_LEGACY_GET_MORE);
    ck_assert_int_eq(ri.opcode, WIRE_OP_GET_MORE);
    ck_assert_int_eq(ri.request_id, 90);
    ck_assert(ri.legacy);
    ck_assert_int_eq(ri.cursor_id, INT64_C(-7000000000000));
    wire_buf_free(&b);

    const int64_t kids[] = {INT64_C(1234567890123456), 5, -9};
    build_kill_cursors(&b, kids, 3);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_LEGACY_KILL_CURSORS);
    ck_assert(ri.legacy);
    ck_assert(ri.more_to_come); /* OP_KILL_CURSORS has no reply */
    ck_assert_int_eq(ri.n_kill_ids, 3);
    int64_t ids[4] = {0};
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 4), 3);
    ck_assert_int_eq(ids[0], INT64_C(1234567890123456));
    ck_assert_int_eq(ids[1], 5);
    ck_assert_int_eq(ids[2], -9);
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 1), 1);
    wire_buf_free(&b);
}
END_TEST

START_TEST(query_kill_cursors_ids)
{
    struct wire_buf b = {0};
    struct request_info ri;
    int64_t ids[4] = {0};
    /* A killCursors command sent as a legacy OP_QUERY is forwarded unchanged: servers since 5.1
     * answer it with UnsupportedOpQueryCommand (352), older ones run it, and the router must not
     * treat its document as an OP_MSG. */
    bson_t *q = doc("{\"killCursors\": \"c\", \"cursors\": [{\"$numberLong\": \"11\"}, "
                    "{\"$numberLong\": \"12\"}]}");
    ck_assert_int_eq(wire_append_query(&b, 93, 0, "test.$cmd", 0, -1, q), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_int_eq(ri.kind, REQ_FORWARD);
    ck_assert(ri.legacy);
    ck_assert_str_eq(ri.command, "killCursors");
    ck_assert_int_eq(ri.n_kill_ids, 2);
    /* The id collector reads OP_KILL_CURSORS and OP_MSG only: it refuses this frame and leaves
     * ids alone. */
    ck_assert_int_eq(request_kill_ids(b.data, b.len, ids, 4), -EPROTO);
    ck_assert_int_eq(ids[0], 0);
    ck_assert_int_eq(ids[1], 0);
    /* Classifying changed nothing: the frame still names ids 11 and 12, in order, as int64s. */
    struct wire_query wq;
    ck_assert_int_eq(wire_query_parse(b.data, b.len, &wq), 0);
    bson_t qd;
    bson_iter_t it, c;
    ck_assert(bson_init_static(&qd, wq.query, wq.query_len));
    ck_assert(bson_iter_init_find(&it, &qd, "cursors") && bson_iter_recurse(&it, &c));
    const int64_t want[] = {11, 12};
    int n = 0;
    while (bson_iter_next(&c)) {
        ck_assert_int_lt(n, 2);
        ck_assert(BSON_ITER_HOLDS_INT64(&c));
        ck_assert_int_eq(bson_iter_int64(&c), want[n]);
        n++;
    }
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(wq.query_len, q->len);
    ck_assert_mem_eq(wq.query, bson_get_data(q), q->len);
    bson_destroy(q);
    wire_buf_free(&b);
}
END_TEST

/* --- BSON checks: depth, document sequences, projection --------------------------------------
 */

/* Builds a document nested depth levels below the top, {a: {a: ... {} ...}}, from the outside in
 * without recursion: level i starts at 7 * i and is 5 + 8 * (depth - i) bytes long. */
static bson_t *nested(int depth)
{
    size_t total = 5 + 8 * (size_t)depth;
    uint8_t *d = malloc(total);
    ck_assert_ptr_nonnull(d);
    for (int i = 0; i <= depth; i++) {
        size_t start = 7 * (size_t)i;
        size_t l = 5 + 8 * (size_t)(depth - i);
        wire_put_i32(d + start, (int32_t)l);
        d[start + 4] = i < depth ? 0x03 : 0x00;
        if (i < depth) {
            d[start + 5] = 'a';
            d[start + 6] = 0;
        }
        d[start + l - 1] = 0;
    }
    bson_t *b = bson_new_from_data(d, total);
    ck_assert_ptr_nonnull(b);
    free(d);
    return b;
}

/* {find: "c", filter: <nested below filter by depth levels>, $db: "test"}: filter itself is one
 * level below the top, so the document is depth + 1 deep. */
static bson_t *deep_find(int depth)
{
    bson_t *filter = nested(depth);
    bson_t *cmd = bson_new();
    BSON_APPEND_UTF8(cmd, "find", "c");
    BSON_APPEND_DOCUMENT(cmd, "filter", filter);
    BSON_APPEND_UTF8(cmd, "$db", "test");
    bson_destroy(filter);
    return cmd;
}

START_TEST(msg_deep_nesting)
{
    struct wire_buf b = {0};
    struct request_info ri;
    /* Exactly mongod's limit passes. */
    bson_t *cmd = deep_find(BSON_CHECK_MAX_DEPTH - 1);
    ck_assert_int_eq(wire_append_msg(&b, 31, 0, 0, cmd), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_str_eq(ri.command, "find");
    bson_destroy(cmd);
    wire_buf_reset(&b);

    /* One level more, and the 9,350 levels that used to overflow the stack: -EOVERFLOW, with what
     * the error reply needs. */
    const int depths[] = {BSON_CHECK_MAX_DEPTH, 9350};
    for (int i = 0; i < 2; i++) {
        cmd = deep_find(depths[i]);
        ck_assert_int_eq(wire_append_msg(&b, 32, 0, WIRE_MSG_MORE_TO_COME, cmd), 0);
        ck_assert_int_eq(classify_buf(&b, &ri), -EOVERFLOW);
        ck_assert_msg(strstr(err, BSON_CHECK_DEPTH_ERROR_MSG) != NULL, "%s", err);
        ck_assert_int_eq(ri.opcode, WIRE_OP_MSG);
        ck_assert_int_eq(ri.request_id, 32);
        ck_assert_str_eq(ri.command, "find");
        ck_assert_str_eq(ri.db, "test");
        ck_assert(ri.more_to_come);
        ck_assert(!ri.legacy);
        bson_destroy(cmd);
        wire_buf_reset(&b);
    }
    wire_buf_free(&b);
}
END_TEST

START_TEST(query_deep_nesting)
{
    struct wire_buf b = {0};
    struct request_info ri;
    /* {$query: {isMaster: 1, x: <deep>}}: the walk of the outer document reaches inside $query,
     * whose x is two levels below the top. */
    bson_t *deep = nested(BSON_CHECK_MAX_DEPTH - 1);
    bson_t *inner = bson_new(), *q = bson_new();
    BSON_APPEND_INT32(inner, "isMaster", 1);
    BSON_APPEND_DOCUMENT(inner, "x", deep);
    BSON_APPEND_DOCUMENT(q, "$query", inner);
    ck_assert_int_eq(wire_append_query(&b, 33, 0, "admin.$cmd", 0, -1, q), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), -EOVERFLOW);
    ck_assert_msg(strstr(err, BSON_CHECK_DEPTH_ERROR_MSG) != NULL, "%s", err);
    ck_assert_int_eq(ri.opcode, WIRE_OP_QUERY);
    ck_assert_int_eq(ri.request_id, 33);
    ck_assert(ri.legacy);
    ck_assert_str_eq(ri.command, "isMaster");
    ck_assert_str_eq(ri.db, "admin");
    bson_destroy(q);
    bson_destroy(inner);
    bson_destroy(deep);
    wire_buf_reset(&b);

    /* Unwrapped, and on a collection (a legacy find). */
    q = deep_find(9350);
    ck_assert_int_eq(wire_append_query(&b, 34, 0, "test.$cmd", 0, -1, q), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), -EOVERFLOW);
    ck_assert_str_eq(ri.command, "find");
    ck_assert_str_eq(ri.db, "test");
    wire_buf_reset(&b);
    ck_assert_int_eq(wire_append_query(&b, 35, 0, "sales.orders", 0, -1, q), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), -EOVERFLOW);
    ck_assert_str_eq(ri.command, "find");
    ck_assert_str_eq(ri.db, "sales");
    bson_destroy(q);
    wire_buf_free(&b);
}
END_TEST

/* Appends a kind-1 section named id holding the n documents. */
static void put_sequence(struct wire_buf *b, const char *id, bson_t *const *docs, int n)
{
    uint8_t kind = 1;
    size_t size = 4 + strlen(id) + 1;
    for (int i = 0; i < n; i++)
        size += docs[i]->len;
    ck_assert_int_eq(wire_buf_append(b, &kind, 1), 0);
    put_i32(b, (int32_t)size);
    ck_assert_int_eq(wire_buf_append(b, id, strlen(id) + 1), 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(wire_buf_append(b, bson_get_data(docs[i]), docs[i]->len), 0);
}

/* Builds an OP_MSG: the body, then two sequences, "documents" and "updates". */
static void build_two_sequences(struct wire_buf *b, const bson_t *body, bson_t *const *d1, int n1,
                                bson_t *const *d2, int n2)
{
    put_header(b, 0, 36, WIRE_OP_MSG);
    put_i32(b, 0);
    uint8_t kind = 0;
    ck_assert_int_eq(wire_buf_append(b, &kind, 1), 0);
    ck_assert_int_eq(wire_buf_append(b, bson_get_data(body), body->len), 0);
    put_sequence(b, "documents", d1, n1);
    put_sequence(b, "updates", d2, n2);
    wire_put_i32(b->data, (int32_t)b->len);
}

START_TEST(msg_sequences_checked)
{
    bson_t *body = doc("{\"insert\": \"c\", \"$db\": \"test\"}");
    bson_t *d[3] = {doc("{\"_id\": 1, \"a\": {\"b\": [1, 2]}}"), doc("{\"_id\": 2}"),
                    doc("{\"_id\": 3, \"s\": \"x\"}")};
    bson_t *u[2] = {doc("{\"q\": {}, \"u\": {\"$set\": {\"a\": 1}}}"), doc("{}")};
    struct wire_buf b = {0};
    struct request_info ri;

    /* Valid sequences pass. */
    build_two_sequences(&b, body, d, 3, u, 2);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    ck_assert_str_eq(ri.command, "insert");
    ck_assert(ri.is_write);
    size_t len = b.len;

    /* A malformed document in either sequence closes the client: the element type of "s" in the
     * third document, then the $set document's terminator in the first update. */
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(b.data, len, &m), 0);
    ck_assert_int_eq(m.nseq, 2);
    uint8_t *third = (uint8_t *)m.seq[0].docs + d[0]->len + d[1]->len;
    ck_assert_int_eq(third[4 + 1 + 4 + 4], 0x02); /* after {len, 0x10 "_id" 3} */
    third[4 + 1 + 4 + 4] = 0x7e;
    ck_assert_int_eq(wire_msg_parse(b.data, len, &m), 0); /* framing is intact */
    ck_assert_int_eq(classify_buf(&b, &ri), -EPROTO);
    ck_assert_msg(strstr(err, "sequence 'documents'") != NULL, "%s", err);
    third[4 + 1 + 4 + 4] = 0x02;
    ck_assert_int_eq(classify_buf(&b, &ri), 0);

    uint8_t *upd = (uint8_t *)m.seq[1].docs;
    uint8_t *set_end = upd + u[0]->len - 3; /* the $set document's NUL, then u's, then upd's */
    ck_assert_int_eq(*set_end, 0);
    *set_end = 1;
    ck_assert_int_eq(classify_buf(&b, &ri), -EPROTO);
    ck_assert_msg(strstr(err, "sequence 'updates'") != NULL, "%s", err);
    wire_buf_reset(&b);

    /* A document of a sequence that nests too deeply: the body is classified for the reply. */
    bson_t *deep = nested(BSON_CHECK_MAX_DEPTH + 1);
    bson_t *dd[2] = {d[0], deep};
    build_two_sequences(&b, body, dd, 2, u, 2);
    ck_assert_int_eq(classify_buf(&b, &ri), -EOVERFLOW);
    ck_assert_msg(strstr(err, "sequence 'documents'") != NULL, "%s", err);
    ck_assert_str_eq(ri.command, "insert");
    ck_assert_str_eq(ri.db, "test");
    ck_assert_int_eq(ri.request_id, 36);
    bson_destroy(deep);
    wire_buf_reset(&b);

    /* Through wire_append_msg_seq too, as drivers send it. */
    ck_assert_int_eq(
        wire_append_msg_seq(&b, 37, 0, 0, body, "documents", (const bson_t *const *)d, 3), 0);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);

    bson_destroy(body);
    for (int i = 0; i < 3; i++)
        bson_destroy(d[i]);
    for (int i = 0; i < 2; i++)
        bson_destroy(u[i]);
    wire_buf_free(&b);
}
END_TEST

START_TEST(query_projection_checked)
{
    struct wire_buf b = {0};
    struct request_info ri;
    bson_t *q = doc("{\"a\": 1}"), *f = doc("{\"a\": 1, \"b\": 0}");
    ck_assert_int_eq(wire_append_query(&b, 38, 0, "test.coll", 0, -1, q), 0);
    ck_assert_int_eq(wire_buf_append(&b, bson_get_data(f), f->len), 0);
    wire_put_i32(b.data, (int32_t)b.len);
    ck_assert_int_eq(classify_buf(&b, &ri), 0);
    /* The projection's second element gets a type that does not exist. */
    uint8_t *proj = b.data + b.len - f->len;
    ck_assert_int_eq(proj[4 + 1 + 2 + 4], 0x10);
    proj[4 + 1 + 2 + 4] = 0x55;
    ck_assert_int_eq(classify_buf(&b, &ri), -EPROTO);
    ck_assert_msg(strstr(err, "projection") != NULL, "%s", err);
    bson_destroy(q);
    bson_destroy(f);
    wire_buf_free(&b);
}
END_TEST

START_TEST(unsupported_opcodes)
{
    static const uint8_t payload[32] = {0};
    const int32_t ops[] = {WIRE_OP_COMPRESSED, WIRE_OP_INSERT, WIRE_OP_UPDATE,
                           WIRE_OP_DELETE,     WIRE_OP_REPLY,  9999};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        struct wire_buf b = {0};
        build_raw(&b, ops[i], payload, sizeof(payload));
        struct request_info ri;
        ck_assert_int_eq(classify_buf(&b, &ri), -ENOTSUP);
        ck_assert_int_eq(ri.kind, REQ_UNSUPPORTED);
        ck_assert_int_eq(ri.opcode, ops[i]);
        char code[16];
        snprintf(code, sizeof(code), "%d", ops[i]);
        ck_assert_msg(strstr(err, code) != NULL, "error '%s' should name opcode %d", err, ops[i]);
        wire_buf_free(&b);
    }
    /* A realistic OP_INSERT: flags, namespace, one document. */
    struct wire_buf b = {0};
    bson_t *d = doc("{\"_id\": 1}");
    put_header(&b, (int32_t)(16 + 4 + 7 + d->len), 94, WIRE_OP_INSERT);
    put_i32(&b, 0);
    ck_assert_int_eq(wire_buf_append(&b, "test.c", 7), 0);
    ck_assert_int_eq(wire_buf_append(&b, bson_get_data(d), d->len), 0);
    struct request_info ri;
    ck_assert_int_eq(classify_buf(&b, &ri), -ENOTSUP);
    ck_assert_int_eq(ri.kind, REQ_UNSUPPORTED);
    bson_destroy(d);
    wire_buf_free(&b);
}
END_TEST

Suite *request_suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, msg_hello_variants);
    tcase_add_test(tc, msg_find_and_reads);
    tcase_add_test(tc, msg_aggregate_out_merge);
    tcase_add_test(tc, msg_insert_with_sequence);
    tcase_add_test(tc, msg_get_more);
    tcase_add_test(tc, msg_kill_cursors);
    tcase_add_test(tc, opens_cursor_names);
    tcase_add_test(tc, command_table_every_name);
    tcase_add_test(tc, msg_session_fields);
    tcase_add_test(tc, msg_max_time_ms);
    tcase_add_test(tc, msg_read_preference);
    tcase_add_test(tc, msg_flags);
    tcase_add_test(tc, msg_missing_db);
    tcase_add_test(tc, msg_invalid_bson);
    tcase_add_test(tc, truncated_frames);
    tcase_add_test(tc, query_is_master);
    tcase_add_test(tc, query_wrapped_is_master);
    tcase_add_test(tc, query_on_collection_forwards);
    tcase_add_test(tc, legacy_get_more_and_kill_cursors);
    tcase_add_test(tc, query_kill_cursors_ids);
    tcase_add_test(tc, unsupported_opcodes);
    tcase_add_test(tc, msg_deep_nesting);
    tcase_add_test(tc, query_deep_nesting);
    tcase_add_test(tc, msg_sequences_checked);
    tcase_add_test(tc, query_projection_checked);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(request_suite)
