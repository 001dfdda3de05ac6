/*
 * check_txnpin.c: transactions pinned to the server that started them (txnpin.c): a pin set by a
 * transaction's first command and found by its later ones, the commands that end it (a newer
 * txnNumber, a command of the session outside a transaction), expiry after the session timeout
 * the backends report (30 minutes when they report none), and removal of a gone server's pins.
 *
 * txnpin.c reads the time from the proxy's loop and the session timeout from its topology: the
 * tests build a minimal struct proxy with a loop of their own, whose cached time they set (libuv's
 * uv_now() returns loop->time; nothing here runs the loop), and a topology fed hello replies.
 * Requests are real OP_MSG frames classified by request_classify(), as the client module does.
 */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"

#define NO_TXN (-1)

struct fixture {
    struct proxy *p;
    uv_loop_t loop;
    struct wire_buf frame;
};

static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    f->p = calloc(1, sizeof(*f->p));
    ck_assert_ptr_nonnull(f->p);
    f->p->loop = &f->loop;
    topology_init(&f->p->topo, TOPOLOGY_MONGOS, 15);
    ck_assert_int_eq(txn_pins_init(f->p), 0);
    ck_assert_uint_eq(txn_pins_count(f->p), 0);
}

static void teardown(struct fixture *f)
{
    txn_pins_free(f->p);
    ck_assert_ptr_null(f->p->pins);
    free(f->p);
    wire_buf_free(&f->frame);
    ck_assert_int_eq(uv_loop_close(&f->loop), 0);
}

/* Sets the loop's cached time, which proxy_now() returns. */
static void set_now(struct fixture *f, uint64_t ms)
{
    f->loop.time = ms;
    ck_assert_int_eq(proxy_now(f->p), (int64_t)ms);
}

/*
 * Classifies a command of session `session` (its lsid is 16 bytes of that value; 0: no lsid) into
 * *ri: with txnNumber txn unless NO_TXN, autocommit: false when in_txn, startTransaction: true
 * when start.
 */
static void command(struct fixture *f, struct request_info *ri, const char *name, int session,
                    int64_t txn, bool in_txn, bool start)
{
    bson_t cmd = BSON_INITIALIZER, lsid;
    if (strcmp(name, "commitTransaction") == 0 || strcmp(name, "abortTransaction") == 0)
        BSON_APPEND_INT32(&cmd, name, 1);
    else
        BSON_APPEND_UTF8(&cmd, name, "c");
    if (session) {
        uint8_t uuid[16];
        memset(uuid, session, sizeof(uuid));
        BSON_APPEND_DOCUMENT_BEGIN(&cmd, "lsid", &lsid);
        BSON_APPEND_BINARY(&lsid, "id", BSON_SUBTYPE_UUID, uuid, 16);
        bson_append_document_end(&cmd, &lsid);
    }
    if (txn != NO_TXN)
        BSON_APPEND_INT64(&cmd, "txnNumber", txn);
    if (start)
        BSON_APPEND_BOOL(&cmd, "startTransaction", true);
    if (in_txn)
        BSON_APPEND_BOOL(&cmd, "autocommit", false);
    BSON_APPEND_UTF8(&cmd, "$db", "test");
    wire_buf_reset(&f->frame);
    ck_assert_int_eq(wire_append_msg(&f->frame, 7, 0, 0, &cmd), 0);
    bson_destroy(&cmd);
    char err[200];
    ck_assert_msg(request_classify(f->frame.data, f->frame.len, ri, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_int_eq(ri->has_lsid, session != 0);
    ck_assert_int_eq(ri->has_txn_number, txn != NO_TXN);
    ck_assert_int_eq(ri->autocommit_false, in_txn);
    ck_assert_int_eq(ri->start_transaction, start);
}

/* The transaction's first command, its next command, and its commit. */
static void first(struct fixture *f, struct request_info *ri, int session, int64_t txn)
{
    command(f, ri, "insert", session, txn, true, true);
}

static void next(struct fixture *f, struct request_info *ri, int session, int64_t txn)
{
    command(f, ri, "find", session, txn, true, false);
}

/* Where the transaction's next command (a find) of session/txn goes, or -1. */
static int lookup_next(struct fixture *f, int session, int64_t txn)
{
    struct request_info ri;
    next(f, &ri, session, txn);
    return txn_pin_lookup(f->p, &ri);
}

/* Pins session/txn to server idx, as the client module does when its first command is routed. */
static void pin(struct fixture *f, int session, int64_t txn, int idx)
{
    struct request_info ri;
    first(f, &ri, session, txn);
    txn_pin_observe(f->p, &ri);
    ck_assert_int_eq(txn_pin_lookup(f->p, &ri), -1); /* a start is never routed by a pin */
    txn_pin_set(f->p, &ri, idx);
}

/* Makes server 0 a known mongos that reports this logicalSessionTimeoutMinutes (< 0: none). */
static void mongos_with_session_timeout(struct fixture *f, int minutes)
{
    struct topology *t = &f->p->topo;
    if (t->n == 0)
        ck_assert_int_eq(topology_add(t, "h0", 27017), 0);
    char json[200];
    if (minutes >= 0)
        snprintf(json, sizeof(json),
                 "{\"ok\": 1, \"msg\": \"isdbgrid\", \"isWritablePrimary\": true, "
                 "\"logicalSessionTimeoutMinutes\": %d}",
                 minutes);
    else
        snprintf(json, sizeof(json),
                 "{\"ok\": 1, \"msg\": \"isdbgrid\", \"isWritablePrimary\": true}");
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "%s", e.message);
    topology_on_hello(t, 0, b, 1.0, proxy_now(f->p));
    bson_destroy(b);
    struct topology_limits lim;
    ck_assert(topology_limits(t, &lim));
    ck_assert_int_eq(lim.session_timeout_min, minutes >= 0 ? minutes : -1);
}

START_TEST(set_and_lookup)
{
    struct fixture f;
    setup(&f);
    set_now(&f, 1000);
    pin(&f, 1, 5, 2);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    /* Every later command of the transaction, the commit included, goes to server 2. */
    ck_assert_int_eq(lookup_next(&f, 1, 5), 2);
    struct request_info ri;
    command(&f, &ri, "update", 1, 5, true, false);
    ck_assert_int_eq(txn_pin_lookup(f.p, &ri), 2);
    command(&f, &ri, "commitTransaction", 1, 5, true, false);
    ck_assert_int_eq(txn_pin_lookup(f.p, &ri), 2);
    /* Another session, another transaction number of the session, or a command that is not
     * part of a transaction is not pinned. */
    ck_assert_int_eq(lookup_next(&f, 9, 5), -1);
    ck_assert_int_eq(lookup_next(&f, 1, 4), -1);
    ck_assert_int_eq(lookup_next(&f, 1, 6), -1);
    command(&f, &ri, "find", 1, NO_TXN, false, false);
    ck_assert_int_eq(txn_pin_lookup(f.p, &ri), -1);
    command(&f, &ri, "insert", 1, 5, false, false); /* a retryable write with the same number */
    ck_assert_int_eq(txn_pin_lookup(f.p, &ri), -1);
    command(&f, &ri, "find", 0, 5, true, false); /* no lsid */
    ck_assert_int_eq(txn_pin_lookup(f.p, &ri), -1);
    /* Lookups change nothing. */
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 5), 2);

    /* Two sessions pinned to different servers keep their own pins. */
    pin(&f, 2, 1, 0);
    ck_assert_uint_eq(txn_pins_count(f.p), 2);
    ck_assert_int_eq(lookup_next(&f, 2, 1), 0);
    ck_assert_int_eq(lookup_next(&f, 1, 5), 2);

    /* Nothing is pinned without a session or a transaction number. */
    command(&f, &ri, "insert", 0, 3, true, true);
    txn_pin_set(f.p, &ri, 1);
    command(&f, &ri, "insert", 3, NO_TXN, false, false);
    txn_pin_set(f.p, &ri, 1);
    ck_assert_uint_eq(txn_pins_count(f.p), 2);
    ck_assert_int_eq(lookup_next(&f, 3, 3), -1);
    teardown(&f);
}
END_TEST

START_TEST(set_again_moves_the_pin)
{
    struct fixture f;
    setup(&f);
    pin(&f, 1, 5, 2);
    /* The session starts its next transaction without a command in between (the start ends the
     * old pin, then sets the new one): one pin, on the new server, for the new number. */
    pin(&f, 1, 6, 3);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 6), 3);
    ck_assert_int_eq(lookup_next(&f, 1, 5), -1);
    /* txn_pin_set on a pinned session replaces its number and server in place. */
    struct request_info ri;
    first(&f, &ri, 1, 7);
    txn_pin_set(f.p, &ri, 1);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 7), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 6), -1);
    teardown(&f);
}
END_TEST

START_TEST(newer_txn_number_ends_the_pin)
{
    struct fixture f;
    setup(&f);
    pin(&f, 1, 5, 2);
    pin(&f, 2, 5, 1);
    struct request_info ri;
    /* Commands of the same transaction leave the pin alone. */
    next(&f, &ri, 1, 5);
    txn_pin_observe(f.p, &ri);
    command(&f, &ri, "commitTransaction", 1, 5, true, false);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 2);
    ck_assert_int_eq(lookup_next(&f, 1, 5), 2);
    /* A command of transaction 6 of session 1 ends that session's pin for transaction 5, even
     * before anything pins transaction 6; session 2 keeps its own. */
    next(&f, &ri, 1, 6);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 5), -1);
    ck_assert_int_eq(lookup_next(&f, 1, 6), -1);
    ck_assert_int_eq(lookup_next(&f, 2, 5), 1);
    /* An older number ends it too: only the pinned number is kept. */
    next(&f, &ri, 2, 4);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    ck_assert_int_eq(lookup_next(&f, 2, 5), -1);
    teardown(&f);
}
END_TEST

START_TEST(command_outside_a_transaction_ends_the_pin)
{
    struct fixture f;
    setup(&f);
    pin(&f, 1, 5, 2);
    pin(&f, 2, 8, 0);
    pin(&f, 3, 1, 1);
    struct request_info ri;
    /* Commands without a session, and of other sessions, leave the pins alone. */
    command(&f, &ri, "find", 0, NO_TXN, false, false);
    txn_pin_observe(f.p, &ri);
    command(&f, &ri, "find", 4, NO_TXN, false, false);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 3);
    /* A plain read of session 1 ends its pin. */
    command(&f, &ri, "find", 1, NO_TXN, false, false);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 2);
    ck_assert_int_eq(lookup_next(&f, 1, 5), -1);
    /* So does a retryable write (a txnNumber without autocommit: false), even with the pinned
     * transaction's number. */
    command(&f, &ri, "insert", 2, 8, false, false);
    txn_pin_observe(f.p, &ri);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 2, 8), -1);
    /* The one left is intact. */
    ck_assert_int_eq(lookup_next(&f, 3, 1), 1);
    teardown(&f);
}
END_TEST

START_TEST(pins_expire_with_the_default_session_timeout)
{
    struct fixture f;
    setup(&f);
    const uint64_t ttl = 30 * 60 * 1000;
    /* No server known: the default of 30 minutes. */
    set_now(&f, 1000);
    pin(&f, 1, 1, 0);
    set_now(&f, 2000);
    pin(&f, 2, 1, 0);
    set_now(&f, 1000 + ttl);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 2); /* idle exactly the timeout is not longer */
    set_now(&f, 1001 + ttl);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 1), -1);
    ck_assert_int_eq(lookup_next(&f, 2, 1), 0);
    /* That lookup used session 2's pin at 1001 + ttl: it lives a full timeout from then. */
    set_now(&f, 1001 + 2 * ttl);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    set_now(&f, 1002 + 2 * ttl);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);

    /* A known server that reports no session timeout: still 30 minutes. */
    mongos_with_session_timeout(&f, -1);
    set_now(&f, 10 * ttl);
    pin(&f, 3, 1, 0);
    set_now(&f, 11 * ttl);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    set_now(&f, 11 * ttl + 1);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    teardown(&f);
}
END_TEST

START_TEST(pins_expire_with_the_reported_session_timeout)
{
    struct fixture f;
    setup(&f);
    set_now(&f, 5000);
    mongos_with_session_timeout(&f, 1); /* one minute */
    pin(&f, 1, 1, 0);
    pin(&f, 2, 1, 0);
    /* Session 2's transaction goes on at 50 s; session 1's is idle. */
    set_now(&f, 55000);
    ck_assert_int_eq(lookup_next(&f, 2, 1), 0);
    set_now(&f, 65000);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 2);
    set_now(&f, 65001);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    ck_assert_int_eq(lookup_next(&f, 1, 1), -1);
    /* Session 2 was last used at 55 s: it goes once idle longer than a minute from then. */
    set_now(&f, 115000);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 1);
    set_now(&f, 115001);
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    /* Expiring an empty table is harmless. */
    txn_pins_expire(f.p);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    teardown(&f);
}
END_TEST

START_TEST(remove_server_drops_exactly_its_pins)
{
    struct fixture f;
    setup(&f);
    /* Enough sessions that buckets hold chains, so that removal unlinks from their middles. */
    enum { N = 250 };
    for (int s = 1; s <= N; s++)
        pin(&f, s, s, s % 3);
    ck_assert_uint_eq(txn_pins_count(f.p), N);
    size_t on1 = 0;
    for (int s = 1; s <= N; s++)
        on1 += s % 3 == 1;
    ck_assert_uint_eq(txn_pins_remove_server(f.p, 1), on1);
    ck_assert_uint_eq(txn_pins_count(f.p), N - on1);
    for (int s = 1; s <= N; s++)
        ck_assert_int_eq(lookup_next(&f, s, s), s % 3 == 1 ? -1 : s % 3);
    ck_assert_uint_eq(txn_pins_remove_server(f.p, 1), 0);
    ck_assert_uint_eq(txn_pins_remove_server(f.p, 7), 0);
    ck_assert_uint_eq(txn_pins_count(f.p), N - on1);
    size_t rest = txn_pins_remove_server(f.p, 0);
    rest += txn_pins_remove_server(f.p, 2);
    ck_assert_uint_eq(rest, N - on1);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    /* The table works again after emptying, and pins left at the end are freed by teardown. */
    pin(&f, 1, 2, 5);
    ck_assert_int_eq(lookup_next(&f, 1, 2), 5);
    teardown(&f);
}
END_TEST

START_TEST(free_and_count_without_a_table)
{
    struct fixture f;
    setup(&f);
    pin(&f, 1, 1, 0);
    txn_pins_free(f.p);
    ck_assert_ptr_null(f.p->pins);
    ck_assert_uint_eq(txn_pins_count(f.p), 0);
    ck_assert_uint_eq(txn_pins_remove_server(f.p, 0), 0);
    txn_pins_free(f.p); /* twice is harmless */
    teardown(&f);
}
END_TEST

Suite *txnpin_suite(void)
{
    Suite *s = suite_create("txnpin");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, set_and_lookup);
    tcase_add_test(tc, set_again_moves_the_pin);
    tcase_add_test(tc, newer_txn_number_ends_the_pin);
    tcase_add_test(tc, command_outside_a_transaction_ends_the_pin);
    tcase_add_test(tc, pins_expire_with_the_default_session_timeout);
    tcase_add_test(tc, pins_expire_with_the_reported_session_timeout);
    tcase_add_test(tc, remove_server_drops_exactly_its_pins);
    tcase_add_test(tc, free_and_count_without_a_table);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(txnpin_suite)
