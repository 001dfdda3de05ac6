/*
 * check_retry.c: the retry and error-label policy as truth tables. Which failed attempts may be
 * made again (retryable reads, retryable writes with a txnNumber, writes without one,
 * commit/abort, statements inside a transaction, the attempt limit, never for cursor commands),
 * which error replies are taken back, and the labels of the errors mongolb makes itself.
 */
#include "retry.h"

#include <stdio.h>
#include <string.h>

#include "mongo_errors.h"

#include "check_main.h"

/* What a request is, for the policy. */
enum profile {
    P_READ,       /* find: a retryable read */
    P_RW,         /* insert with txnNumber outside a transaction: a retryable write */
    P_PLAIN,      /* insert without txnNumber (retryWrites=false) */
    P_AGG_OUT,    /* aggregate with $out: a write that is no retryable read */
    P_COMMIT,     /* commitTransaction */
    P_ABORT,      /* abortTransaction */
    P_STMT,       /* insert inside a transaction */
    P_TXN_READ,   /* find inside a transaction */
    P_PING,       /* a command that is neither */
    P_GET_MORE,   /* getMore command */
    P_KILL,       /* killCursors command */
    P_LEGACY_GM,  /* OP_GET_MORE */
    P_LEGACY_KC,  /* OP_KILL_CURSORS */
    P_TXN_GETMORE /* getMore inside a transaction */
};

static const char *const profile_names[] = {
    "read",
    "retryable write",
    "plain write",
    "aggregate $out",
    "commit",
    "abort",
    "stmt",
    "txn read",
    "ping",
    "getMore",
    "killCursors",
    "OP_GET_MORE",
    "OP_KILL_CURSORS",
    "txn getMore",
};

static struct request_info make(enum profile p)
{
    struct request_info ri;
    memset(&ri, 0, sizeof(ri));
    ri.kind = REQ_FORWARD;
    ri.opcode = WIRE_OP_MSG;
    const char *cmd = "";
    switch (p) {
    case P_READ:
        cmd = "find";
        ri.retryable_read = true;
        ri.opens_cursor = true;
        break;
    case P_RW:
        cmd = "insert";
        ri.is_write = true;
        ri.has_lsid = true;
        ri.has_txn_number = true;
        ri.txn_number = 4;
        break;
    case P_PLAIN:
        cmd = "insert";
        ri.is_write = true;
        break;
    case P_AGG_OUT:
        cmd = "aggregate";
        ri.is_write = true;
        ri.opens_cursor = true;
        break;
    case P_COMMIT:
    case P_ABORT:
        cmd = p == P_COMMIT ? "commitTransaction" : "abortTransaction";
        ri.is_write = true;
        ri.has_lsid = true;
        ri.has_txn_number = true;
        ri.txn_number = 9;
        ri.autocommit_false = true;
        break;
    case P_STMT:
    case P_TXN_READ:
        cmd = p == P_STMT ? "insert" : "find";
        ri.is_write = p == P_STMT;
        ri.retryable_read = p == P_TXN_READ;
        ri.has_lsid = true;
        ri.has_txn_number = true;
        ri.txn_number = 9;
        ri.autocommit_false = true;
        break;
    case P_PING:
        cmd = "ping";
        break;
    case P_GET_MORE:
        cmd = "getMore";
        ri.kind = REQ_GET_MORE;
        ri.cursor_id = 1234;
        break;
    case P_KILL:
        cmd = "killCursors";
        ri.kind = REQ_KILL_CURSORS;
        ri.n_kill_ids = 2;
        break;
    case P_LEGACY_GM:
        cmd = "OP_GET_MORE";
        ri.kind = REQ_LEGACY_GET_MORE;
        ri.opcode = WIRE_OP_GET_MORE;
        ri.legacy = true;
        ri.cursor_id = 1234;
        break;
    case P_LEGACY_KC:
        cmd = "OP_KILL_CURSORS";
        ri.kind = REQ_LEGACY_KILL_CURSORS;
        ri.opcode = WIRE_OP_KILL_CURSORS;
        ri.legacy = true;
        ri.more_to_come = true;
        break;
    case P_TXN_GETMORE:
        cmd = "getMore";
        ri.kind = REQ_GET_MORE;
        ri.cursor_id = 1234;
        ri.has_lsid = true;
        ri.has_txn_number = true;
        ri.txn_number = 9;
        ri.autocommit_false = true;
        break;
    }
    snprintf(ri.command, sizeof(ri.command), "%s", cmd);
    return ri;
}

START_TEST(kinds_of_request)
{
    for (int p = P_READ; p <= P_TXN_GETMORE; p++) {
        struct request_info ri = make((enum profile)p);
        bool end = p == P_COMMIT || p == P_ABORT;
        ck_assert_msg(retry_is_txn_end(&ri) == end, "%s", profile_names[p]);
        ck_assert_msg(retry_is_retryable_write(&ri) == (p == P_RW), "%s", profile_names[p]);
    }
    /* A txnNumber on a cursor command does not make it a retryable write. */
    struct request_info ri = make(P_GET_MORE);
    ri.has_txn_number = true;
    ck_assert(!retry_is_retryable_write(&ri));
}
END_TEST

/* retry_may over the profiles: expected results for (attempts 0, not reached), (0, reached),
 * (2, reached), and then with attempts at the limit. */
struct may_row {
    enum profile p;
    bool unreached, reached, reached_late;
};

START_TEST(may_truth_table)
{
    static const struct may_row rows[] = {
        {P_READ, true, true, true},         {P_RW, true, true, true},
        {P_PLAIN, true, false, false},      {P_AGG_OUT, true, false, false},
        {P_COMMIT, true, true, true},       {P_ABORT, true, true, true},
        {P_STMT, false, false, false},      {P_TXN_READ, false, false, false},
        {P_PING, true, false, false},       {P_GET_MORE, false, false, false},
        {P_KILL, false, false, false},      {P_LEGACY_GM, false, false, false},
        {P_LEGACY_KC, false, false, false}, {P_TXN_GETMORE, false, false, false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct may_row *r = &rows[i];
        struct request_info ri = make(r->p);
        const char *n = profile_names[r->p];
        ck_assert_msg(retry_may(&ri, 0, false) == r->unreached, "%s unreached", n);
        ck_assert_msg(retry_may(&ri, 1, false) == r->unreached, "%s unreached, 1", n);
        ck_assert_msg(retry_may(&ri, 0, true) == r->reached, "%s reached", n);
        ck_assert_msg(retry_may(&ri, 2, true) == r->reached_late, "%s reached, 2", n);
        ck_assert_msg(retry_may(&ri, 2, false) == r->unreached, "%s unreached, 2", n);
        /* RETRY_MAX_ATTEMPTS made: never again, whatever the request. */
        ck_assert_msg(!retry_may(&ri, RETRY_MAX_ATTEMPTS, false), "%s at the limit", n);
        ck_assert_msg(!retry_may(&ri, RETRY_MAX_ATTEMPTS, true), "%s at the limit", n);
        ck_assert_msg(!retry_may(&ri, RETRY_MAX_ATTEMPTS + 5, false), "%s past the limit", n);
    }
    ck_assert_int_eq(RETRY_MAX_ATTEMPTS, 3);
}
END_TEST

/* One case of retry_take_back. */
struct take_row {
    enum profile p;
    int attempts;
    int32_t code;
    bool label;
    bool expect;
};

START_TEST(take_back_truth_table)
{
    static const struct take_row rows[] = {
        /* Retryable reads: retryable codes, not others. */
        {P_READ, 0, 91, false, true},
        {P_READ, 0, 134, false, true}, /* ReadConcernMajorityNotAvailableYet */
        {P_READ, 0, 6, false, true},
        {P_READ, 0, 11600, false, true},
        {P_READ, 0, 10107, false, true},
        {P_READ, 0, 13436, false, true},
        {P_READ, 2, 189, false, true},
        {P_READ, 3, 189, false, false}, /* the limit */
        {P_READ, 0, 2, false, false},
        {P_READ, 0, 43, false, false},
        {P_READ, 0, 13, false, false},
        {P_READ, 0, -1, false, false},
        {P_READ, 0, 0, true, false}, /* the write label means nothing for a read */
        {P_READ, 0, 2, true, false},
        /* Retryable writes: by the label, or a "did not run" code. */
        {P_RW, 0, 91, true, true},
        {P_RW, 0, 2, true, true},
        {P_RW, 2, 189, true, true},
        {P_RW, 3, 189, true, false},
        /* Without a label too, on the retryable-writes specification's codes: a mongos never
         * labels its own errors (retry.c, since 38a773d). */
        {P_RW, 0, 91, false, true},
        {P_RW, 0, 189, false, true},
        {P_RW, 0, 6, false, true},
        {P_RW, 0, 9001, false, true},
        {P_RW, 2, 262, false, true},
        {P_RW, 3, 262, false, false},
        {P_RW, 0, 11000, false, false}, /* DuplicateKey: it ran */
        {P_RW, 0, 2, false, false},
        {P_RW, 0, 134, false, false}, /* a read code, not a write one */
        {P_RW, 0, 10107, false, true},
        {P_RW, 0, 13435, false, true},
        {P_RW, 0, 13436, false, true},
        /* A plain write that ran, or may have: never again. */
        {P_PLAIN, 0, 91, true, false},
        {P_PLAIN, 0, 189, false, false},
        {P_PLAIN, 0, 6, false, false},
        {P_AGG_OUT, 0, 91, false, false},
        /* commit / abort: by the label, or a retryable-write code, within the attempt limit. */
        {P_COMMIT, 0, 91, true, true},
        {P_COMMIT, 2, 91, true, true},
        {P_COMMIT, 3, 91, true, false},
        {P_ABORT, 0, 189, true, true},
        {P_COMMIT, 0, 2, true, true},
        {P_COMMIT, 0, 91, false, true},
        {P_COMMIT, 0, 10107, false, true},
        {P_ABORT, 0, 10107, false, true},
        {P_ABORT, 0, 11602, false, true},
        {P_COMMIT, 3, 91, false, false},
        {P_COMMIT, 0, 251, false, false}, /* NoSuchTransaction: the outcome is known */
        {P_ABORT, 0, 251, false, false},
        {P_COMMIT, 0, 2, false, false},
        {P_COMMIT, 0, 50, false, false}, /* MaxTimeMSExpired */
        /* Statements inside a transaction: never. */
        {P_STMT, 0, 91, true, false},
        {P_STMT, 0, 10107, false, false},
        {P_TXN_READ, 0, 91, false, false},
        {P_TXN_READ, 0, 10107, false, false},
        /* Cursor commands: never. */
        {P_GET_MORE, 0, 91, true, false},
        {P_GET_MORE, 0, 10107, false, false},
        {P_KILL, 0, 10107, false, false},
        {P_LEGACY_GM, 0, 91, false, false},
        {P_LEGACY_KC, 0, 91, false, false},
        {P_TXN_GETMORE, 0, 91, false, false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct take_row *r = &rows[i];
        struct request_info ri = make(r->p);
        ck_assert_msg(retry_take_back(&ri, r->attempts, r->code, r->label) == r->expect,
                      "row %zu: %s, attempts %d, code %d, label %d: expected %d", i,
                      profile_names[r->p], r->attempts, r->code, r->label, r->expect);
    }
}
END_TEST

/*
 * "Not writable primary" (10107, 13435, 13436) outside a transaction means the command did not
 * run, so running it elsewhere is safe even for a write that is not retryable (README,
 * "Transactions, retries and failovers"): a write without txnNumber is taken back too, within the
 * attempt limit.
 */
START_TEST(take_back_not_run_plain_write)
{
    static const int32_t not_run[] = {10107, 13435, 13436};
    for (size_t i = 0; i < 3; i++) {
        struct request_info ri = make(P_PLAIN);
        ck_assert_msg(retry_take_back(&ri, 0, not_run[i], false),
                      "plain write, code %d: not taken back", not_run[i]);
        ri = make(P_PING);
        ck_assert_msg(retry_take_back(&ri, 0, not_run[i], false), "ping, code %d: not taken back",
                      not_run[i]);
        ri = make(P_PLAIN);
        ck_assert(!retry_take_back(&ri, RETRY_MAX_ATTEMPTS, not_run[i], false));
    }
}
END_TEST

/* Fills labels for (p, code) and checks them against the expected list (NULL-terminated). */
static void expect_labels(enum profile p, int32_t code, const char *e0, const char *e1)
{
    struct request_info ri = make(p);
    const char *labels[4] = {"x", "x", "x", "x"};
    int n = retry_error_labels(&ri, code, labels);
    int want = (e0 != NULL) + (e1 != NULL);
    ck_assert_msg(n == want, "%s, code %d: %d labels, expected %d", profile_names[p], code, n,
                  want);
    ck_assert_int_le(n, 2);
    if (e0)
        ck_assert_str_eq(labels[0], e0);
    if (e1)
        ck_assert_str_eq(labels[1], e1);
    /* Nothing written past what was returned. */
    for (int i = n; i < 4; i++)
        ck_assert_str_eq(labels[i], "x");
}

#define UTCR "UnknownTransactionCommitResult"
#define RWE  "RetryableWriteError"
#define TTE  "TransientTransactionError"

START_TEST(labels_commit)
{
    /* Network codes: the commit may have happened; the driver retries the commit. */
    expect_labels(P_COMMIT, MONGO_ERR_HOST_UNREACHABLE, UTCR, RWE);
    expect_labels(P_COMMIT, MONGO_ERR_NETWORK_TIMEOUT, UTCR, RWE);
    expect_labels(P_COMMIT, MONGO_ERR_NETWORK_IFACE_TIMEOUT, UTCR, RWE);
    expect_labels(P_COMMIT, 6, UTCR, RWE);
    expect_labels(P_COMMIT, 89, UTCR, RWE);
    expect_labels(P_COMMIT, 202, UTCR, RWE);
    /* Other codes: only the unknown result. */
    expect_labels(P_COMMIT, MONGO_ERR_FAILED_READ_PREF, UTCR, NULL);
    expect_labels(P_COMMIT, MONGO_ERR_NO_SUCH_TRANSACTION, UTCR, NULL);
    expect_labels(P_COMMIT, MONGO_ERR_SHUTDOWN_IN_PROGRESS, UTCR, NULL);
    expect_labels(P_COMMIT, 7, UTCR, NULL);
    /* abort: RetryableWriteError for network codes only. */
    expect_labels(P_ABORT, 6, RWE, NULL);
    expect_labels(P_ABORT, 89, RWE, NULL);
    expect_labels(P_ABORT, 202, RWE, NULL);
    expect_labels(P_ABORT, 251, NULL, NULL);
    expect_labels(P_ABORT, 133, NULL, NULL);
}
END_TEST

START_TEST(labels_in_transaction)
{
    expect_labels(P_STMT, 6, TTE, NULL);
    expect_labels(P_STMT, 89, TTE, NULL);
    expect_labels(P_STMT, 133, TTE, NULL);
    expect_labels(P_STMT, 251, TTE, NULL);
    expect_labels(P_STMT, 2, TTE, NULL);
    expect_labels(P_TXN_READ, 6, TTE, NULL);
    expect_labels(P_TXN_GETMORE, 6, TTE, NULL);
    /* CursorNotFound too: mongolb forgets a cursor only once its server is gone, and the
     * transaction with it (retry.c, since 986f6e1). */
    expect_labels(P_STMT, MONGO_ERR_CURSOR_NOT_FOUND, TTE, NULL);
    expect_labels(P_TXN_GETMORE, 43, TTE, NULL);
    expect_labels(P_TXN_READ, 43, TTE, NULL);
}
END_TEST

START_TEST(labels_outside_transaction)
{
    /* A retryable write that failed on the network may be retried by the driver. */
    expect_labels(P_RW, 6, RWE, NULL);
    expect_labels(P_RW, 89, RWE, NULL);
    expect_labels(P_RW, 202, RWE, NULL);
    expect_labels(P_RW, 133, NULL, NULL);
    expect_labels(P_RW, 2, NULL, NULL);
    expect_labels(P_RW, 43, NULL, NULL);
    /* A plain write: nothing, ever (it must not be sent twice). */
    expect_labels(P_PLAIN, 6, NULL, NULL);
    expect_labels(P_PLAIN, 89, NULL, NULL);
    expect_labels(P_PLAIN, 202, NULL, NULL);
    expect_labels(P_PLAIN, 133, NULL, NULL);
    expect_labels(P_AGG_OUT, 6, NULL, NULL);
    /* Reads and other commands: nothing. */
    expect_labels(P_READ, 6, NULL, NULL);
    expect_labels(P_READ, 133, NULL, NULL);
    expect_labels(P_PING, 6, NULL, NULL);
    expect_labels(P_GET_MORE, 6, NULL, NULL);
    expect_labels(P_GET_MORE, 43, NULL, NULL);
    expect_labels(P_LEGACY_GM, 43, NULL, NULL);
}
END_TEST

START_TEST(append_labels)
{
    bson_t d = BSON_INITIALIZER;
    BSON_APPEND_INT32(&d, "ok", 0);
    retry_append_labels(&d, NULL, 0);
    ck_assert_uint_eq(bson_count_keys(&d), 1);
    const char *labels[] = {UTCR, RWE};
    retry_append_labels(&d, labels, 2);
    bson_iter_t it, arr;
    ck_assert(bson_iter_init_find(&it, &d, "errorLabels"));
    ck_assert(BSON_ITER_HOLDS_ARRAY(&it));
    ck_assert(bson_iter_recurse(&it, &arr));
    ck_assert(bson_iter_next(&arr));
    ck_assert_str_eq(bson_iter_key(&arr), "0");
    ck_assert_str_eq(bson_iter_utf8(&arr, NULL), UTCR);
    ck_assert(bson_iter_next(&arr));
    ck_assert_str_eq(bson_iter_key(&arr), "1");
    ck_assert_str_eq(bson_iter_utf8(&arr, NULL), RWE);
    ck_assert(!bson_iter_next(&arr));
    bson_destroy(&d);

    /* The labels retry_error_labels gives, appended as they come. */
    bson_t e = BSON_INITIALIZER;
    struct request_info ri = make(P_STMT);
    const char *l[2];
    int n = retry_error_labels(&ri, 6, l);
    retry_append_labels(&e, l, n);
    char *json = bson_as_relaxed_extended_json(&e, NULL);
    ck_assert_str_eq(json, "{ \"errorLabels\" : [ \"TransientTransactionError\" ] }");
    bson_free(json);
    bson_destroy(&e);
}
END_TEST

static Suite *retry_suite(void)
{
    Suite *s = suite_create("retry");
    TCase *tc = tcase_create("policy");
    tcase_add_test(tc, kinds_of_request);
    tcase_add_test(tc, may_truth_table);
    tcase_add_test(tc, take_back_truth_table);
    tcase_add_test(tc, take_back_not_run_plain_write);
    suite_add_tcase(s, tc);
    tc = tcase_create("labels");
    tcase_add_test(tc, labels_commit);
    tcase_add_test(tc, labels_in_transaction);
    tcase_add_test(tc, labels_outside_transaction);
    tcase_add_test(tc, append_labels);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(retry_suite)
