/*
 * check_store.c: unit tests of mongosim's in-memory store (tests/sim/store.c): every command,
 * its errors, the _id index, transactions' undo and outcomes, MongoDB's value ordering, and
 * replication (the oplog a primary records, secondaries' copies and their catching up).
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "store.h"

/* The store under test, fresh for every test. */
static struct store *st;

/* Every command's output, reset by exec(). */
static bson_t reply;
static struct store_results res;
static struct store_error err;
static bool is_cursor;
static char ns[256];

/* Creates the store and the output variables before each test. */
static void setup(void)
{
    st = store_new();
    ck_assert_ptr_nonnull(st);
    bson_init(&reply);
    memset(&res, 0, sizeof(res));
}

/* Frees everything a test left behind. */
static void teardown(void)
{
    bson_destroy(&reply);
    store_results_free(&res);
    store_free(st);
    st = NULL;
}

/* Parses relaxed extended JSON into a new document; aborts the test on bad JSON. */
static bson_t *J(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON %s: %s", json, e.message);
    return b;
}

/*
 * Runs the command given as JSON against db with transaction t (may be NULL), after clearing
 * the previous reply and results. Returns store_exec's result.
 */
static int exec_txn(const char *db, const char *json, struct store_txn *t)
{
    bson_t *cmd = J(json);
    bson_reinit(&reply);
    store_results_free(&res);
    memset(&err, 0, sizeof(err));
    ns[0] = '\0';
    is_cursor = false;
    int rc = store_exec(st, db, cmd, NULL, 0, &reply, &res, &is_cursor, ns, sizeof(ns), t, &err);
    bson_destroy(cmd);
    return rc;
}

/* Runs a command on database "db" without a transaction. */
static int exec(const char *json)
{
    return exec_txn("db", json, NULL);
}

/* Runs a command that must succeed. */
static void ok(const char *json)
{
    int rc = exec(json);
    ck_assert_msg(rc == 0, "%s failed: %d %s", json, err.code, err.errmsg);
}

/* Returns the integer field key of the last reply (or -999 when absent). */
static int64_t reply_int(const char *key)
{
    bson_iter_t it, v;
    if (!bson_iter_init(&it, &reply) || !bson_iter_find_descendant(&it, key, &v))
        return -999;
    return bson_iter_as_int64(&v);
}

/* Returns true if the last reply has the (dotted) field key. */
static bool rhas(const char *key)
{
    bson_iter_t it, v;
    return bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, key, &v);
}

/* Returns the canonical-ish JSON of result i (freed by the next call). */
static const char *resj(size_t i)
{
    static char *last;
    bson_free(last);
    ck_assert_uint_lt(i, res.n);
    last = bson_as_relaxed_extended_json(res.docs[i], NULL);
    return last;
}

/* Returns the integer field key of result i (or -999). */
static int64_t res_int(size_t i, const char *key)
{
    bson_iter_t it, v;
    ck_assert_uint_lt(i, res.n);
    if (!bson_iter_init(&it, res.docs[i]) || !bson_iter_find_descendant(&it, key, &v))
        return -999;
    return bson_iter_as_int64(&v);
}

/* Returns the JSON of the last reply (freed by the next call). */
static const char *replyj(void)
{
    static char *last;
    bson_free(last);
    last = bson_as_relaxed_extended_json(&reply, NULL);
    return last;
}

/* Inserts documents 1..n with {_id: i, a: i, b: i % 3} into db.c. */
static void seed(int n)
{
    char buf[128];
    for (int i = 1; i <= n; i++) {
        snprintf(buf, sizeof(buf),
                 "{\"insert\": \"c\", \"documents\": [{\"_id\": %d, \"a\": %d, \"b\": %d}]}", i, i,
                 i % 3);
        ok(buf);
        ck_assert_int_eq(reply_int("n"), 1);
    }
}

START_TEST(insert_and_find_by_id)
{
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 1, \"x\": \"a\"}, {\"x\": \"b\"}]}");
    ck_assert_int_eq(reply_int("n"), 1 + 1);
    ck_assert(!rhas("writeErrors"));
    ck_assert_int_eq(reply_int("ok"), 1);
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 2);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}}");
    ck_assert(is_cursor);
    ck_assert_str_eq(ns, "db.c");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"x\" : \"a\" }");
    /* The generated _id is an ObjectId placed first. */
    ok("{\"find\": \"c\", \"filter\": {\"x\": \"b\"}}");
    ck_assert_uint_eq(res.n, 1);
    bson_iter_t it;
    ck_assert(bson_iter_init(&it, res.docs[0]) && bson_iter_next(&it));
    ck_assert_str_eq(bson_iter_key(&it), "_id");
    ck_assert(BSON_ITER_HOLDS_OID(&it));
}
END_TEST

START_TEST(find_missing_collection)
{
    ok("{\"find\": \"nope\", \"filter\": {}}");
    ck_assert(is_cursor);
    ck_assert_uint_eq(res.n, 0);
    ck_assert_str_eq(ns, "db.nope");
}
END_TEST

START_TEST(update_set_inc)
{
    seed(3);
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"$set\": {\"s\": \"x\"}, "
       "\"$inc\": {\"a\": 10}}}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("nModified"), 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 2}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 2, \"a\" : 12, \"b\" : 2, \"s\" : \"x\" }");
    /* Setting the same value again matches but modifies nothing. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"$set\": {\"s\": "
       "\"x\"}}}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("nModified"), 0);
    /* multi updates every match; without multi only the first. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {}, \"u\": {\"$inc\": {\"k\": 1}}, \"multi\": "
       "true}, {\"q\": {}, \"u\": {\"$inc\": {\"k\": 1}}}]}");
    ck_assert_int_eq(reply_int("n"), 4);
    ck_assert_int_eq(reply_int("nModified"), 4);
    ok("{\"find\": \"c\", \"filter\": {\"k\": 2}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_int_eq(res_int(0, "_id"), 1);
}
END_TEST

START_TEST(delete_and_count)
{
    seed(10);
    ok("{\"count\": \"c\"}");
    ck_assert_int_eq(reply_int("n"), 10);
    ok("{\"count\": \"c\", \"query\": {\"b\": 0}}");
    ck_assert_int_eq(reply_int("n"), 3);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"b\": 0}, \"limit\": 1}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"b\": 0}, \"limit\": 0}]}");
    ck_assert_int_eq(reply_int("n"), 2);
    ok("{\"count\": \"c\"}");
    ck_assert_int_eq(reply_int("n"), 7);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": 1}, \"limit\": 1}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}}");
    ck_assert_uint_eq(res.n, 0);
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 6);
}
END_TEST

START_TEST(create_drop_list)
{
    ok("{\"create\": \"c\"}");
    ck_assert(store_has_collection(st, "db", "c"));
    ck_assert_int_eq(exec("{\"create\": \"c\"}"), -EEXIST);
    ck_assert_int_eq(err.code, STORE_ERR_NAMESPACE_EXISTS);
    ck_assert_str_eq(err.code_name, "NamespaceExists");
    ok("{\"listCollections\": 1}");
    ck_assert(is_cursor);
    ck_assert_str_eq(ns, "db.$cmd.listCollections");
    ck_assert_uint_eq(res.n, 1);
    ok("{\"listIndexes\": \"c\"}");
    ck_assert_str_eq(ns, "db.$cmd.listIndexes.c");
    ck_assert_str_eq(resj(0), "{ \"v\" : 2, \"key\" : { \"_id\" : 1 }, \"name\" : \"_id_\" }");
    ok("{\"drop\": \"c\"}");
    ck_assert_int_eq(reply_int("nIndexesWas"), 1);
    ck_assert(!store_has_collection(st, "db", "c"));
    ck_assert_int_eq(exec("{\"drop\": \"c\"}"), -ENOENT);
    ck_assert_int_eq(err.code, STORE_ERR_NAMESPACE_NOT_FOUND);
    ck_assert_int_eq(exec("{\"listIndexes\": \"c\"}"), -ENOENT);
    ck_assert_str_eq(err.errmsg, "ns does not exist: db.c");
}
END_TEST

START_TEST(aggregate_basic)
{
    seed(10);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {\"b\": 1}}, {\"$sort\": {\"a\": -1}}, "
       "{\"$skip\": 1}, {\"$limit\": 2}], \"cursor\": {}}");
    ck_assert_str_eq(ns, "db.c");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_int_eq(res_int(0, "a"), 7);
    ck_assert_int_eq(res_int(1, "a"), 4);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {\"b\": 2}}, {\"$count\": \"total\"}], "
       "\"cursor\": {}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_str_eq(resj(0), "{ \"total\" : 3 }");
}
END_TEST

/* Drivers' countDocuments runs {$group: {_id: 1, n: {$sum: 1}}}; a constant-_id $group with $sum
 * is what the simulator supports. */
START_TEST(aggregate_group_constant)
{
    seed(10);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {\"b\": 1}}, {\"$group\": "
       "{\"_id\": 1, \"n\": {\"$sum\": 1}, \"s\": {\"$sum\": \"$a\"}}}], \"cursor\": {}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"n\" : 4, \"s\" : 22 }");
    /* No input, no group. */
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {\"a\": 99}}, {\"$group\": "
       "{\"_id\": null, \"n\": {\"$sum\": 1}}}], \"cursor\": {}}");
    ck_assert_uint_eq(res.n, 0);
    /* Grouping by a field is not simulated, and says so. */
    ck_assert_int_lt(exec("{\"aggregate\": \"c\", \"pipeline\": [{\"$group\": {\"_id\": "
                          "\"$b\"}}], \"cursor\": {}}"),
                     0);
}
END_TEST

START_TEST(find_and_modify_basic)
{
    seed(3);
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 2}, \"update\": {\"$inc\": {\"a\": 1}}, "
       "\"new\": true}");
    ck_assert_int_eq(reply_int("value.a"), 3);
    ck_assert_int_eq(reply_int("lastErrorObject.n"), 1);
    ck_assert_msg(strstr(replyj(), "\"updatedExisting\" : true") != NULL, "%s", replyj());
}
END_TEST

START_TEST(unknown_command)
{
    ck_assert_int_eq(exec("{\"frobnicate\": 1}"), -ENOENT);
    ck_assert_int_eq(err.code, STORE_ERR_COMMAND_NOT_FOUND);
    ck_assert_str_eq(err.code_name, "CommandNotFound");
    ck_assert_str_eq(err.errmsg, "no such command: 'frobnicate'");
}
END_TEST

START_TEST(insert_duplicate_ordered_unordered)
{
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 1}, {\"_id\": 1}, {\"_id\": 2}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("writeErrors.0.index"), 1);
    ck_assert_int_eq(reply_int("writeErrors.0.code"), 11000);
    ck_assert(!rhas("writeErrors.1"));
    ck_assert_msg(strstr(replyj(), "E11000 duplicate key error collection: db.c index: _id_ dup "
                                   "key: { _id: 1 }") != NULL,
                  "%s", replyj());
    ok("{\"insert\": \"d\", \"ordered\": false, \"documents\": [{\"_id\": 1}, {\"_id\": 1}, "
       "{\"_id\": 2}, {\"_id\": 2}]}");
    ck_assert_int_eq(reply_int("n"), 2);
    ck_assert_int_eq(reply_int("writeErrors.0.index"), 1);
    ck_assert_int_eq(reply_int("writeErrors.1.index"), 3);
    /* _id 1 and 1.0 are the same key, as in MongoDB. */
    ck_assert_int_eq(exec("{\"insert\": \"d\", \"documents\": [{\"_id\": 1.0}]}"), 0);
    ck_assert_int_eq(reply_int("n"), 0);
    ck_assert_int_eq(reply_int("writeErrors.0.code"), 11000);
    /* An array _id is refused. */
    ok("{\"insert\": \"d\", \"documents\": [{\"_id\": [1]}]}");
    ck_assert_int_eq(reply_int("writeErrors.0.code"), 53);
}
END_TEST

START_TEST(insert_from_sequence_and_id_first)
{
    bson_t *a = J("{\"x\": 1, \"_id\": \"k\"}"), *b = J("{\"_id\": \"m\"}");
    const bson_t *seq[] = {a, b};
    bson_t *cmd = J("{\"insert\": \"c\"}");
    bson_reinit(&reply);
    int rc =
        store_exec(st, "db", cmd, seq, 2, &reply, &res, &is_cursor, ns, sizeof(ns), NULL, &err);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(reply_int("n"), 2);
    ck_assert(!is_cursor);
    bson_destroy(cmd);
    bson_destroy(a);
    bson_destroy(b);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": \"k\"}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : \"k\", \"x\" : 1 }");
    ck_assert_int_eq(exec("{\"insert\": \"c\", \"documents\": []}"), -EINVAL);
    ck_assert_int_eq(err.code, 16);
    ck_assert_int_eq(exec("{\"insert\": \"\", \"documents\": [{}]}"), -EINVAL);
    ck_assert_int_eq(err.code, STORE_ERR_INVALID_NAMESPACE);
}
END_TEST

START_TEST(numeric_cross_type_equality)
{
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 1, \"a\": 5}, {\"_id\": 2, \"a\": "
       "{\"$numberLong\": \"5\"}}, {\"_id\": 3, \"a\": 5.0}, {\"_id\": 4, \"a\": 5.5}, {\"_id\": "
       "5, \"a\": \"5\"}]}");
    ok("{\"find\": \"c\", \"filter\": {\"a\": 5}}");
    ck_assert_uint_eq(res.n, 3);
    ok("{\"find\": \"c\", \"filter\": {\"a\": {\"$numberLong\": \"5\"}}}");
    ck_assert_uint_eq(res.n, 3);
    ok("{\"find\": \"c\", \"filter\": {\"a\": {\"$gt\": 5}}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_int_eq(res_int(0, "_id"), 4);
    /* Lookup by _id across numeric types goes through the index. */
    ok("{\"find\": \"c\", \"filter\": {\"_id\": {\"$numberLong\": \"3\"}}}");
    ck_assert_uint_eq(res.n, 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 3.0}}");
    ck_assert_uint_eq(res.n, 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 3.5}}");
    ck_assert_uint_eq(res.n, 0);
}
END_TEST

START_TEST(query_operators)
{
    seed(10);
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 11, \"s\": \"x\", \"tags\": [\"p\", \"q\"], "
       "\"n\": null, \"sub\": {\"k\": 7}}]}");
    struct {
        const char *filter;
        size_t n;
    } cases[] = {
        {"{\"a\": {\"$in\": [2, 4, 99]}}", 2},
        {"{\"a\": {\"$nin\": [2, 4]}}", 9},
        {"{\"a\": {\"$gt\": 8}}", 2},
        {"{\"a\": {\"$gte\": 8}}", 3},
        {"{\"a\": {\"$lt\": 3}}", 2},
        {"{\"a\": {\"$lte\": 3}}", 3},
        {"{\"a\": {\"$gt\": 2, \"$lt\": 5}}", 2},
        {"{\"a\": {\"$ne\": 1}}", 10},
        {"{\"a\": {\"$eq\": 1}}", 1},
        {"{\"a\": {\"$exists\": false}}", 1},
        {"{\"s\": {\"$exists\": true}}", 1},
        {"{\"$or\": [{\"a\": 1}, {\"a\": 2}, {\"s\": \"x\"}]}", 3},
        {"{\"$and\": [{\"b\": 1}, {\"a\": {\"$gt\": 4}}]}", 2},
        {"{\"$nor\": [{\"b\": 1}, {\"b\": 2}]}", 4},
        {"{\"s\": {\"$gt\": 1}}", 0},     /* type bracketing: strings are not > numbers */
        {"{\"a\": {\"$gt\": \"a\"}}", 0}, /* and numbers are not > strings */
        {"{\"n\": null}", 11},            /* null matches null and missing */
        {"{\"a\": null}", 1},
        {"{\"tags\": \"q\"}", 1},          /* equality matches an array element */
        {"{\"tags\": [\"p\", \"q\"]}", 1}, /* or the whole array */
        {"{\"tags\": {\"$in\": [\"z\", \"p\"]}}", 1},
        {"{\"tags\": {\"$size\": 2}}", 1},
        {"{\"tags\": {\"$all\": [\"q\", \"p\"]}}", 1},
        {"{\"sub.k\": 7}", 1},
        {"{\"sub.k\": {\"$gte\": 7}}", 1},
        {"{\"sub\": {\"k\": 7}}", 1},
        {"{\"a\": {\"$not\": {\"$gt\": 2}}}", 3},
        {"{\"_id\": {\"$in\": [3, 1, 77]}}", 2},
        {"{\"_id\": {\"$gt\": 9}}", 2},
        {"{\"_id\": 5, \"b\": 1}", 0},
        {"{\"_id\": 4, \"b\": 1}", 1},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"find\": \"c\", \"filter\": %s}", cases[i].filter);
        ok(buf);
        ck_assert_msg(res.n == cases[i].n, "%s: %zu results, want %zu", cases[i].filter, res.n,
                      cases[i].n);
    }
    /* $in over _id returns documents in insertion order. */
    ok("{\"find\": \"c\", \"filter\": {\"_id\": {\"$in\": [3, 1]}}}");
    ck_assert_int_eq(res_int(0, "_id"), 1);
    ck_assert_int_eq(exec("{\"find\": \"c\", \"filter\": {\"a\": {\"$bogus\": 1}}}"), -EINVAL);
    ck_assert_int_eq(err.code, STORE_ERR_BAD_VALUE);
    ck_assert_str_eq(err.errmsg, "unknown operator: $bogus");
    ck_assert_int_eq(exec("{\"find\": \"c\", \"filter\": {\"$where\": 1}}"), -EINVAL);
    ck_assert_str_eq(err.errmsg, "unknown top level operator: $where");
    ck_assert_int_eq(exec("{\"find\": \"c\", \"filter\": {\"a\": {\"$in\": 1}}}"), -EINVAL);
    /* An invalid filter is rejected even when there is nothing to scan. */
    ck_assert_int_eq(exec("{\"find\": \"none\", \"filter\": {\"a\": {\"$bogus\": 1}}}"), -EINVAL);
}
END_TEST

START_TEST(sort_skip_limit_projection)
{
    seed(10);
    ok("{\"find\": \"c\", \"sort\": {\"b\": 1, \"a\": -1}}");
    ck_assert_uint_eq(res.n, 10);
    int want[] = {9, 6, 3, 10, 7, 4, 1, 8, 5, 2};
    for (size_t i = 0; i < 10; i++)
        ck_assert_int_eq(res_int(i, "a"), want[i]);
    ok("{\"find\": \"c\", \"sort\": {\"a\": -1}, \"skip\": 2, \"limit\": 3}");
    ck_assert_uint_eq(res.n, 3);
    ck_assert_int_eq(res_int(0, "a"), 8);
    ck_assert_int_eq(res_int(2, "a"), 6);
    /* Negative limit: its absolute value. Unsorted finds keep insertion order. */
    ok("{\"find\": \"c\", \"skip\": 8, \"limit\": -5}");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_int_eq(res_int(0, "a"), 9);
    ok("{\"find\": \"c\", \"limit\": 2}");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_int_eq(exec("{\"find\": \"c\", \"skip\": -1}"), -EINVAL);
    ck_assert_int_eq(exec("{\"find\": \"c\", \"sort\": {\"a\": 0}}"), -EINVAL);

    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"projection\": {\"a\": 1}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"a\" : 1 }");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"projection\": {\"a\": 1, \"_id\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"a\" : 1 }");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"projection\": {\"a\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"b\" : 1 }");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}, \"projection\": {\"_id\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"a\" : 1, \"b\" : 1 }");
    ck_assert_int_eq(exec("{\"find\": \"c\", \"projection\": {\"a\": 1, \"b\": 0}}"), -EINVAL);
    ck_assert_int_eq(err.code, 31254);

    ok("{\"insert\": \"n\", \"documents\": [{\"_id\": 1, \"s\": {\"x\": 1, \"y\": 2}, \"t\": 3}]}");
    ok("{\"find\": \"n\", \"projection\": {\"s.y\": 1}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"s\" : { \"y\" : 2 } }");
    ok("{\"find\": \"n\", \"projection\": {\"s.y\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"s\" : { \"x\" : 1 }, \"t\" : 3 }");
}
END_TEST

START_TEST(sort_cross_type_order)
{
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 1, \"v\": true}, {\"_id\": 2, \"v\": "
       "\"s\"}, {\"_id\": 3, \"v\": 2.5}, {\"_id\": 4, \"v\": null}, {\"_id\": 5, \"v\": {\"a\": "
       "1}}, {\"_id\": 6, \"v\": {\"$oid\": \"000000000000000000000001\"}}, {\"_id\": 7}, "
       "{\"_id\": 8, \"v\": {\"$date\": {\"$numberLong\": \"0\"}}}, {\"_id\": 9, \"v\": 1}]}");
    ok("{\"find\": \"c\", \"sort\": {\"v\": 1}}");
    /* null and missing tie (insertion order), then numbers, string, object, ObjectId, bool,
     * date. */
    int want[] = {4, 7, 9, 3, 2, 5, 6, 1, 8};
    for (size_t i = 0; i < 9; i++)
        ck_assert_msg(res_int(i, "_id") == want[i], "position %zu: %s", i, resj(i));
}
END_TEST

START_TEST(compare_values_api)
{
    bson_t *d = J("{\"i\": 1, \"l\": {\"$numberLong\": \"1\"}, \"d\": 1.0, \"h\": 1.5, \"s\": "
                  "\"a\", \"t\": \"b\", \"n\": null, \"big\": {\"$numberLong\": "
                  "\"9007199254740993\"}, \"bigd\": 9007199254740992.0}");
    bson_iter_t i, l, dd, h, s, t, n, big, bigd;
    ck_assert(bson_iter_init_find(&i, d, "i") && bson_iter_init_find(&l, d, "l") &&
              bson_iter_init_find(&dd, d, "d") && bson_iter_init_find(&h, d, "h") &&
              bson_iter_init_find(&s, d, "s") && bson_iter_init_find(&t, d, "t") &&
              bson_iter_init_find(&n, d, "n") && bson_iter_init_find(&big, d, "big") &&
              bson_iter_init_find(&bigd, d, "bigd"));
    ck_assert_int_eq(store_compare_values(&i, &l), 0);
    ck_assert_int_eq(store_compare_values(&i, &dd), 0);
    ck_assert_int_lt(store_compare_values(&dd, &h), 0);
    ck_assert_int_lt(store_compare_values(&h, &s), 0);
    ck_assert_int_lt(store_compare_values(&s, &t), 0);
    ck_assert_int_eq(store_compare_values(&n, NULL), 0);
    ck_assert_int_lt(store_compare_values(NULL, &i), 0);
    /* int64 precision is kept against doubles. */
    ck_assert_int_gt(store_compare_values(&big, &bigd), 0);
    bson_destroy(d);
}
END_TEST

START_TEST(update_operators_and_errors)
{
    seed(2);
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$unset\": {\"b\": "
       "\"\"}, \"$set\": {\"x.y.z\": 1}, \"$inc\": {\"a\": 1.5}}}]}");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"a\" : 2.5, \"x\" : { \"y\" : { \"z\" : 1 } } }");
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"x.y.w\": 2}, "
       "\"$push\": {\"l\": 1}, \"$max\": {\"m\": 3}}}]}");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 1, \"a\" : 2.5, \"x\" : { \"y\" : { \"z\" : 1, \"w\" : "
                              "2 } }, \"l\" : [ 1 ], \"m\" : 3 }");
    /* A replacement keeps _id and drops the other fields. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"r\": 1}}]}");
    ck_assert_int_eq(reply_int("nModified"), 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 2}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 2, \"r\" : 1 }");
    /* Changing _id is refused with ImmutableField, both ways. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"$set\": {\"_id\": "
       "3}}}]}");
    ck_assert_int_eq(reply_int("n"), 0);
    ck_assert_int_eq(reply_int("nModified"), 0);
    ck_assert_int_eq(reply_int("writeErrors.0.code"), 66);
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"_id\": 3, \"r\": 2}}]}");
    ck_assert_int_eq(reply_int("writeErrors.0.code"), 66);
    /* Setting _id to its own value is fine. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"$set\": {\"_id\": "
       "2}}}]}");
    ck_assert(!rhas("writeErrors"));
    /* $inc on a string, conflicting paths, unknown modifiers. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"s\": "
       "\"x\"}}}, {\"q\": {\"_id\": 1}, \"u\": {\"$inc\": {\"s\": 1}}}, {\"q\": {\"_id\": 1}, "
       "\"u\": {\"$set\": {\"t\": 1}}}]}");
    ck_assert_int_eq(reply_int("writeErrors.0.index"), 1);
    ck_assert_int_eq(reply_int("writeErrors.0.code"), STORE_ERR_TYPE_MISMATCH);
    ck_assert_int_eq(reply_int("n"), 1); /* ordered: the third statement did not run */
    ok("{\"update\": \"c\", \"ordered\": false, \"updates\": [{\"q\": {}, \"u\": {\"$set\": "
       "{\"a\": 1}, \"$inc\": {\"a\": 1}}}, {\"q\": {}, \"u\": {\"$foo\": {\"a\": 1}}}, {\"q\": "
       "{\"_id\": 1}, \"u\": {\"$set\": {\"t\": 1}}}]}");
    ck_assert_int_eq(reply_int("writeErrors.0.code"), STORE_ERR_CONFLICTING_UPDATE_OPS);
    ck_assert_int_eq(reply_int("writeErrors.1.code"), STORE_ERR_FAILED_TO_PARSE);
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("nModified"), 1);
    /* int32 $inc overflowing int32 becomes int64. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"i\": "
       "2147483647}}}, {\"q\": {\"_id\": 1}, \"u\": {\"$inc\": {\"i\": 1}}}]}");
    ok("{\"find\": \"c\", \"filter\": {\"i\": 2147483648}}");
    ck_assert_uint_eq(res.n, 1);
}
END_TEST

START_TEST(upsert)
{
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"k\": \"a\", \"n\": {\"$gt\": 1}}, \"u\": "
       "{\"$set\": {\"v\": 1}, \"$setOnInsert\": {\"created\": true}}, \"upsert\": true}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("nModified"), 0);
    ck_assert_int_eq(reply_int("upserted.0.index"), 0);
    ck_assert(rhas("upserted.0._id"));
    ck_assert(store_has_collection(st, "db", "c"));
    /* New fields are added in field-name order, as MongoDB 5.0+ applies them. */
    ok("{\"find\": \"c\", \"filter\": {\"k\": \"a\"}, \"projection\": {\"_id\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"k\" : \"a\", \"created\" : true, \"v\" : 1 }");
    /* The second time it matches: $setOnInsert does not apply. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"k\": \"a\"}, \"u\": {\"$set\": {\"v\": 2}, "
       "\"$setOnInsert\": {\"created\": false}}, \"upsert\": true}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("nModified"), 1);
    ck_assert(!rhas("upserted"));
    ok("{\"find\": \"c\", \"filter\": {\"k\": \"a\"}, \"projection\": {\"_id\": 0}}");
    ck_assert_str_eq(resj(0), "{ \"k\" : \"a\", \"created\" : true, \"v\" : 2 }");
    /* Replacement upsert with the _id from the query, placed first. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 9}, \"u\": {\"z\": 1}, \"upsert\": "
       "true}]}");
    ck_assert_int_eq(reply_int("upserted.0._id"), 9);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 9}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 9, \"z\" : 1 }");
    /* Operator upsert: the query's _id and dotted equalities, $and included. */
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"$and\": [{\"_id\": 10}, {\"p.q\": 3}]}, "
       "\"u\": {\"$inc\": {\"c\": 1}}, \"upsert\": true}]}");
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 10}}");
    ck_assert_str_eq(resj(0), "{ \"_id\" : 10, \"p\" : { \"q\" : 3 }, \"c\" : 1 }");
}
END_TEST

START_TEST(delete_errors_and_order)
{
    seed(5);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {}, \"limit\": 2}]}");
    ck_assert_int_eq(reply_int("writeErrors.0.code"), STORE_ERR_FAILED_TO_PARSE);
    ck_assert_int_eq(reply_int("n"), 0);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": 3}, \"limit\": 1}, {\"q\": {\"_id\": "
       "1}, \"limit\": 1}]}");
    ck_assert_int_eq(reply_int("n"), 2);
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 3}]}");
    ok("{\"find\": \"c\"}");
    /* Insertion order: the re-inserted document comes last. */
    int want[] = {2, 4, 5, 3};
    ck_assert_uint_eq(res.n, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(res_int(i, "_id"), want[i]);
    ok("{\"delete\": \"nope\", \"deletes\": [{\"q\": {}, \"limit\": 0}]}");
    ck_assert_int_eq(reply_int("n"), 0);
}
END_TEST

START_TEST(id_index_survives_deletes_and_updates)
{
    enum { N = 2000 };
    char buf[256];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof(buf), "{\"insert\": \"c\", \"documents\": [{\"_id\": %d, \"v\": %d}]}",
                 i, i);
        ok(buf);
    }
    /* Delete all odd ids (enough tombstones to force compaction and index rebuilds). */
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"v\": {\"$in\": [1, 3, 5]}}, \"limit\": 0}]}");
    for (int i = 7; i < N; i += 2) {
        snprintf(buf, sizeof(buf),
                 "{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": %d}, \"limit\": 1}]}", i);
        ok(buf);
        ck_assert_int_eq(reply_int("n"), 1);
    }
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {}, \"u\": {\"$inc\": {\"v\": 1000000}}, "
       "\"multi\": true}]}");
    ck_assert_int_eq(reply_int("n"), N / 2);
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), N / 2);
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof(buf), "{\"find\": \"c\", \"filter\": {\"_id\": %d}}", i);
        ok(buf);
        ck_assert_uint_eq(res.n, i % 2 ? 0 : 1);
        if (!(i % 2))
            ck_assert_int_eq(res_int(0, "v"), i + 1000000);
    }
    /* Deleted ids are free again, live ones still conflict. */
    ok("{\"insert\": \"c\", \"ordered\": false, \"documents\": [{\"_id\": 1}, {\"_id\": 2}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_int_eq(reply_int("writeErrors.0.index"), 1);
    ok("{\"find\": \"c\", \"skip\": 999}");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_int_eq(res_int(0, "_id"), 1998);
    ck_assert_int_eq(res_int(1, "_id"), 1);
}
END_TEST

START_TEST(results_outlive_writes)
{
    seed(3);
    ok("{\"find\": \"c\"}");
    struct store_results keep = res;
    memset(&res, 0, sizeof(res));
    ok("{\"drop\": \"c\"}");
    ck_assert_uint_eq(keep.n, 3);
    bson_iter_t it;
    ck_assert(bson_iter_init_find(&it, keep.docs[2], "a"));
    ck_assert_int_eq(bson_iter_int32(&it), 3);
    store_results_free(&keep);
    ck_assert_uint_eq(keep.n, 0);
    ck_assert_ptr_null(keep.docs);
}
END_TEST

START_TEST(find_and_modify)
{
    seed(3);
    /* Old image by default; sort picks the target. */
    ok("{\"findAndModify\": \"c\", \"query\": {}, \"sort\": {\"a\": -1}, \"update\": {\"$set\": "
       "{\"t\": 1}}}");
    ck_assert_int_eq(reply_int("value._id"), 3);
    ck_assert(!rhas("value.t"));
    ck_assert_int_eq(reply_int("lastErrorObject.n"), 1);
    ok("{\"find\": \"c\", \"filter\": {\"t\": 1}}");
    ck_assert_int_eq(res_int(0, "_id"), 3);
    /* Lowercase name, new image, projection. */
    ok("{\"findandmodify\": \"c\", \"query\": {\"_id\": 1}, \"update\": {\"$inc\": {\"a\": 5}}, "
       "\"new\": true, \"fields\": {\"a\": 1, \"_id\": 0}}");
    ck_assert_msg(strstr(replyj(), "\"value\" : { \"a\" : 6 }") != NULL, "%s", replyj());
    /* Remove. */
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 2}, \"remove\": true}");
    ck_assert_int_eq(reply_int("value.a"), 2);
    ck_assert_int_eq(reply_int("lastErrorObject.n"), 1);
    ck_assert(!rhas("lastErrorObject.updatedExisting"));
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 2);
    /* Nothing matches. */
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 2}, \"remove\": true}");
    ck_assert_int_eq(reply_int("lastErrorObject.n"), 0);
    ck_assert_msg(strstr(replyj(), "\"value\" : null") != NULL, "%s", replyj());
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 2}, \"update\": {\"$set\": {\"a\": 1}}}");
    ck_assert_int_eq(reply_int("lastErrorObject.n"), 0);
    ck_assert_msg(strstr(replyj(), "\"updatedExisting\" : false") != NULL, "%s", replyj());
    /* Upsert, returning the new document. */
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 7}, \"update\": {\"$set\": {\"a\": 70}}, "
       "\"upsert\": true, \"new\": true}");
    ck_assert_int_eq(reply_int("lastErrorObject.upserted"), 7);
    ck_assert_int_eq(reply_int("value.a"), 70);
    ck_assert_msg(strstr(replyj(), "\"updatedExisting\" : false") != NULL, "%s", replyj());
    /* Upsert without new returns null. */
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 8}, \"update\": {\"v\": 1}, \"upsert\": "
       "true}");
    ck_assert_msg(strstr(replyj(), "\"value\" : null") != NULL, "%s", replyj());
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 4);
    /* Errors. */
    ck_assert_int_eq(exec("{\"findAndModify\": \"c\", \"query\": {}, \"remove\": true, "
                          "\"update\": {\"a\": 1}}"),
                     -EINVAL);
    ck_assert_int_eq(err.code, STORE_ERR_FAILED_TO_PARSE);
    ck_assert_int_eq(exec("{\"findAndModify\": \"c\", \"query\": {}}"), -EINVAL);
    ck_assert_int_eq(exec("{\"findAndModify\": \"c\", \"query\": {\"_id\": 1}, \"update\": "
                          "{\"$set\": {\"_id\": 5}}}"),
                     -EINVAL);
    ck_assert_int_eq(err.code, STORE_ERR_IMMUTABLE_FIELD);
}
END_TEST

START_TEST(count_distinct)
{
    seed(10);
    ok("{\"count\": \"c\", \"query\": {\"a\": {\"$gt\": 2}}, \"skip\": 2, \"limit\": 3}");
    ck_assert_int_eq(reply_int("n"), 3);
    ok("{\"count\": \"c\", \"skip\": 8}");
    ck_assert_int_eq(reply_int("n"), 2);
    ok("{\"count\": \"none\"}");
    ck_assert_int_eq(reply_int("n"), 0);
    ok("{\"insert\": \"c\", \"documents\": [{\"b\": [1, 7]}, {\"b\": \"x\"}]}");
    ok("{\"distinct\": \"c\", \"key\": \"b\"}");
    ck_assert_msg(strstr(replyj(), "\"values\" : [ 0, 1, 2, 7, \"x\" ]") != NULL, "%s", replyj());
    ok("{\"distinct\": \"c\", \"key\": \"b\", \"query\": {\"a\": {\"$lt\": 3}}}");
    ck_assert_msg(strstr(replyj(), "\"values\" : [ 1, 2 ]") != NULL, "%s", replyj());
    ck_assert_int_eq(exec("{\"distinct\": \"c\"}"), -EINVAL);
}
END_TEST

START_TEST(aggregate_more)
{
    seed(4);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$match\": {\"a\": 99}}, {\"$count\": \"n\"}], "
       "\"cursor\": {}}");
    ck_assert_uint_eq(res.n, 0);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$project\": {\"a\": 1, \"_id\": 0}}, {\"$sort\": "
       "{\"a\": -1}}, {\"$limit\": 1}], \"cursor\": {}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_str_eq(resj(0), "{ \"a\" : 4 }");
    ok("{\"aggregate\": \"c\", \"pipeline\": [], \"cursor\": {}}");
    ck_assert_uint_eq(res.n, 4);
    ok("{\"aggregate\": \"c\", \"pipeline\": [{\"$sort\": {\"a\": -1}}, {\"$match\": {\"b\": 1}}], "
       "\"cursor\": {}}");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_int_eq(res_int(0, "a"), 4);
    ck_assert_int_eq(exec("{\"aggregate\": \"c\", \"pipeline\": [{\"$frob\": {}}], \"cursor\": "
                          "{}}"),
                     -EINVAL);
    ck_assert_int_eq(err.code, STORE_ERR_UNRECOGNIZED_STAGE);
    ck_assert_str_eq(err.errmsg, "Unrecognized pipeline stage name: '$frob'");
    ck_assert_int_eq(exec("{\"aggregate\": \"c\", \"pipeline\": [{\"$limit\": 0}], \"cursor\": "
                          "{}}"),
                     -EINVAL);
    ck_assert_int_eq(exec("{\"aggregate\": \"c\", \"pipeline\": []}"), -EINVAL);
    ok("{\"aggregate\": 1, \"pipeline\": [], \"cursor\": {}}");
    ck_assert(is_cursor);
    ck_assert_str_eq(ns, "db.$cmd.aggregate");
    ck_assert_uint_eq(res.n, 0);
}
END_TEST

START_TEST(databases)
{
    ok("{\"insert\": \"a\", \"documents\": [{\"_id\": 1}]}");
    ok("{\"create\": \"b\"}");
    ck_assert_int_eq(exec_txn("other", "{\"insert\": \"z\", \"documents\": [{}]}", NULL), 0);
    ok("{\"listCollections\": 1, \"filter\": {\"name\": \"b\"}}");
    ck_assert_uint_eq(res.n, 1);
    ck_assert_msg(strstr(resj(0), "\"name\" : \"b\", \"type\" : \"collection\", \"options\" : "
                                  "{  }, \"info\" : { \"readOnly\" : false, \"uuid\"") != NULL,
                  "%s", resj(0));
    ck_assert_msg(strstr(resj(0), "\"idIndex\" : { \"v\" : 2, \"key\" : { \"_id\" : 1 }, "
                                  "\"name\" : \"_id_\" }") != NULL,
                  "%s", resj(0));
    ok("{\"listCollections\": 1, \"nameOnly\": true}");
    ck_assert_uint_eq(res.n, 2);
    ck_assert_str_eq(resj(0), "{ \"name\" : \"a\", \"type\" : \"collection\" }");
    ck_assert_uint_eq(store_count_collections(st, "db"), 2);
    ok("{\"listDatabases\": 1}");
    ck_assert(rhas("databases.1.sizeOnDisk"));
    ck_assert(!rhas("databases.2"));
    ck_assert_int_gt(reply_int("totalSize"), 0);
    ok("{\"listDatabases\": 1, \"nameOnly\": true}");
    ck_assert_msg(strcmp(replyj(), "{ \"databases\" : [ { \"name\" : \"db\" }, { \"name\" : "
                                   "\"other\" } ], \"ok\" : 1.0 }") == 0,
                  "%s", replyj());
    ok("{\"dropDatabase\": 1}");
    ck_assert_msg(strcmp(replyj(), "{ \"dropped\" : \"db\", \"ok\" : 1.0 }") == 0, "%s", replyj());
    ck_assert_uint_eq(store_count_collections(st, "db"), 0);
    ok("{\"listCollections\": 1}");
    ck_assert_uint_eq(res.n, 0);
    ok("{\"listDatabases\": 1, \"nameOnly\": true}");
    ck_assert(!rhas("databases.1"));
}
END_TEST

START_TEST(transaction_abort_and_commit)
{
    seed(3);
    struct store_txn *t = store_txn_new();
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"c\", \"documents\": [{\"_id\": 4}]}", t), 0);
    ck_assert_int_eq(exec_txn("db",
                              "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": "
                              "{\"$set\": {\"a\": 100}}}, {\"q\": {\"_id\": 1}, \"u\": "
                              "{\"$inc\": {\"a\": 1}}}]}",
                              t),
                     0);
    ck_assert_int_eq(exec_txn("db",
                              "{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": 2}, "
                              "\"limit\": 1}]}",
                              t),
                     0);
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"fresh\", \"documents\": [{\"_id\": 1}]}", t),
                     0);
    ck_assert_int_eq(exec_txn("db",
                              "{\"findAndModify\": \"c\", \"query\": {\"_id\": 3}, \"update\": "
                              "{\"$set\": {\"a\": 33}}}",
                              t),
                     0);
    ck_assert_int_eq(exec_txn("db", "{\"create\": \"made\"}", t), 0);
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 3);
    store_txn_abort(st, t);
    ck_assert(!store_has_collection(st, "db", "fresh"));
    ck_assert(!store_has_collection(st, "db", "made"));
    ok("{\"find\": \"c\", \"sort\": {\"_id\": 1}}");
    ck_assert_uint_eq(res.n, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(res_int(i, "_id"), (int64_t)i + 1);
        ck_assert_int_eq(res_int(i, "a"), (int64_t)i + 1);
    }
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 2}}");
    ck_assert_uint_eq(res.n, 1);

    t = store_txn_new();
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"c\", \"documents\": [{\"_id\": 4}]}", t), 0);
    store_txn_commit(st, t);
    ck_assert_uint_eq(store_count_docs(st, "db", "c"), 4);
    store_txn_abort(st, NULL);
    store_txn_commit(st, NULL);
}
END_TEST

/* A session id whose first bytes are n, so that tests can make many distinct ones. */
static void make_lsid(uint8_t *lsid, uint32_t n)
{
    memset(lsid, 0xab, 16);
    memcpy(lsid, &n, sizeof(n));
}

START_TEST(transaction_outcomes)
{
    uint8_t a[16], b[16];
    make_lsid(a, 1);
    make_lsid(b, 2);
    ck_assert_int_eq(store_txn_outcome_get(st, a, 1), STORE_TXN_UNKNOWN);
    ck_assert_uint_eq(store_txn_outcome_count(st), 0);
    ck_assert_int_eq(store_txn_outcome_set(st, a, 1, STORE_TXN_COMMITTED), 0);
    ck_assert_int_eq(store_txn_outcome_set(st, a, 2, STORE_TXN_ABORTED), 0);
    ck_assert_int_eq(store_txn_outcome_set(st, b, 1, STORE_TXN_ABORTED), 0);
    ck_assert_int_eq(store_txn_outcome_set(st, b, 1, STORE_TXN_UNKNOWN), -EINVAL);
    /* Keyed by session and txnNumber together. */
    ck_assert_int_eq(store_txn_outcome_get(st, a, 1), STORE_TXN_COMMITTED);
    ck_assert_int_eq(store_txn_outcome_get(st, a, 2), STORE_TXN_ABORTED);
    ck_assert_int_eq(store_txn_outcome_get(st, b, 1), STORE_TXN_ABORTED);
    ck_assert_int_eq(store_txn_outcome_get(st, b, 2), STORE_TXN_UNKNOWN);
    ck_assert_int_eq(store_txn_outcome_get(st, a, 3), STORE_TXN_UNKNOWN);
    /* Recording a transaction again updates it in place. */
    ck_assert_int_eq(store_txn_outcome_set(st, b, 1, STORE_TXN_COMMITTED), 0);
    ck_assert_int_eq(store_txn_outcome_get(st, b, 1), STORE_TXN_COMMITTED);
    ck_assert_uint_eq(store_txn_outcome_count(st), 3);
}
END_TEST

START_TEST(transaction_outcomes_forget_the_oldest)
{
    uint8_t l[16];
    ck_assert_int_eq(store_txn_outcome_limit(st, 0), -EINVAL);
    ck_assert_int_eq(store_txn_outcome_limit(st, 100), 0);
    /* 1000 outcomes through a record of 100: only the last 100 are left, whatever the hash
     * chains they were in, and the record never holds more. */
    for (uint32_t i = 0; i < 1000; i++) {
        make_lsid(l, i % 37);
        ck_assert_int_eq(
            store_txn_outcome_set(st, l, i, i % 2 ? STORE_TXN_ABORTED : STORE_TXN_COMMITTED), 0);
        ck_assert_uint_le(store_txn_outcome_count(st), 100);
    }
    ck_assert_uint_eq(store_txn_outcome_count(st), 100);
    for (uint32_t i = 0; i < 1000; i++) {
        make_lsid(l, i % 37);
        enum store_txn_outcome want = i < 900 ? STORE_TXN_UNKNOWN
                                      : i % 2 ? STORE_TXN_ABORTED
                                              : STORE_TXN_COMMITTED;
        ck_assert_int_eq(store_txn_outcome_get(st, l, i), want);
    }
    /* Updating a remembered outcome does not take a slot. */
    make_lsid(l, 999 % 37);
    ck_assert_int_eq(store_txn_outcome_set(st, l, 999, STORE_TXN_COMMITTED), 0);
    make_lsid(l, 900 % 37);
    ck_assert_int_eq(store_txn_outcome_get(st, l, 900), STORE_TXN_COMMITTED);
    /* The default bound keeps 100,000. */
    ck_assert_int_eq(store_txn_outcome_limit(st, STORE_TXN_OUTCOMES_MAX), 0);
    for (uint32_t i = 0; i < STORE_TXN_OUTCOMES_MAX + 10; i++) {
        make_lsid(l, i);
        ck_assert_int_eq(store_txn_outcome_set(st, l, 1, STORE_TXN_COMMITTED), 0);
    }
    ck_assert_uint_eq(store_txn_outcome_count(st), STORE_TXN_OUTCOMES_MAX);
    make_lsid(l, 9);
    ck_assert_int_eq(store_txn_outcome_get(st, l, 1), STORE_TXN_UNKNOWN);
    make_lsid(l, 10);
    ck_assert_int_eq(store_txn_outcome_get(st, l, 1), STORE_TXN_COMMITTED);
}
END_TEST

/* --- replication ------------------------------------------------------------------------- */

/* The fake clock the oplogs of these tests stamp their entries with. */
static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* Runs a command on store x (database db) that must succeed; the reply lands in `reply`. */
static void ok_on(struct store *x, const char *db, const char *json)
{
    struct store *saved = st;
    st = x;
    int rc = exec_txn(db, json, NULL);
    st = saved;
    ck_assert_msg(rc == 0, "%s failed: %d %s", json, err.code, err.errmsg);
}

/* Appends s to the growing string *out. */
static void cat(char **out, const char *s)
{
    size_t a = *out ? strlen(*out) : 0, b = strlen(s);
    *out = realloc(*out, a + b + 1);
    memcpy(*out + a, s, b + 1);
}

/*
 * Everything a client could see of store x, as one string: the databases, each one's collections
 * with their UUIDs, and every collection's documents by _id (natural order is not compared: an
 * aborted delete puts documents back at the end on the primary). Two stores that print the same
 * hold the same data.
 */
static char *dump(struct store *x)
{
    char *out = NULL;
    bson_t dbs = BSON_INITIALIZER;
    ok_on(x, "admin", "{\"listDatabases\": 1, \"nameOnly\": true}");
    bson_copy_to(&reply, &dbs);
    bson_iter_t it, d, name;
    ck_assert(bson_iter_init_find(&it, &dbs, "databases") && bson_iter_recurse(&it, &d));
    while (bson_iter_next(&d)) {
        ck_assert(bson_iter_recurse(&d, &name) && bson_iter_find(&name, "name"));
        char db[128];
        snprintf(db, sizeof(db), "%s", bson_iter_utf8(&name, NULL));
        cat(&out, "db ");
        cat(&out, db);
        cat(&out, "\n");
        ok_on(x, db, "{\"listCollections\": 1}");
        struct store_results colls = res;
        memset(&res, 0, sizeof(res));
        for (size_t i = 0; i < colls.n; i++) {
            char *j = bson_as_relaxed_extended_json(colls.docs[i], NULL);
            cat(&out, j);
            cat(&out, "\n");
            bson_free(j);
            bson_iter_t c;
            ck_assert(bson_iter_init_find(&c, colls.docs[i], "name"));
            char find[300];
            snprintf(find, sizeof(find), "{\"find\": \"%s\", \"sort\": {\"_id\": 1}}",
                     bson_iter_utf8(&c, NULL));
            ok_on(x, db, find);
            for (size_t k = 0; k < res.n; k++) {
                j = bson_as_relaxed_extended_json(res.docs[k], NULL);
                cat(&out, "  ");
                cat(&out, j);
                cat(&out, "\n");
                bson_free(j);
            }
        }
        store_results_free(&colls);
    }
    bson_destroy(&dbs);
    return out ? out : strdup("");
}

START_TEST(oplog_replays_every_kind_of_write)
{
    /* A secondary copied before the writes and one copied after them, both brought up to date
     * from the oplog, must read exactly like the primary. */
    seed(5);
    struct store *before = store_clone(st);
    ck_assert_ptr_nonnull(before);
    struct store_oplog *log = store_oplog_new(fake_clock, NULL);
    fake_now = 1000;
    store_set_oplog(st, log);
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 6, \"a\": 6}, {\"a\": \"no id\"}]}");
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"b\": 1}, \"u\": {\"$inc\": {\"a\": 100}}, "
       "\"multi\": true}, {\"q\": {\"_id\": 2}, \"u\": {\"replaced\": true}}, {\"q\": {\"_id\": "
       "99}, \"u\": {\"$set\": {\"up\": 1}}, \"upsert\": true}]}");
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"b\": 0}, \"limit\": 0}]}");
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 5}, \"update\": {\"$set\": {\"f\": 1}}}");
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 4}, \"remove\": true}");
    ok("{\"findAndModify\": \"c\", \"query\": {\"_id\": 77}, \"update\": {\"$set\": {\"g\": 1}}, "
       "\"upsert\": true}");
    ok("{\"insert\": \"implicit\", \"documents\": [{\"_id\": 1}]}");
    ok("{\"create\": \"empty\"}");
    ok("{\"create\": \"doomed\"}");
    ok("{\"drop\": \"doomed\"}");
    ck_assert_int_eq(exec_txn("other", "{\"insert\": \"x\", \"documents\": [{\"_id\": 1}]}", NULL),
                     0);
    ck_assert_int_eq(exec_txn("other", "{\"dropDatabase\": 1}", NULL), 0);
    ck_assert_int_eq(exec_txn("third", "{\"insert\": \"y\", \"documents\": [{\"_id\": 1}]}", NULL),
                     0);
    /* Writes that change nothing record nothing. */
    uint64_t n = store_oplog_count(log);
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1000}, \"u\": {\"$set\": {\"z\": "
       "1}}}]}");
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 6}]}");
    ck_assert(rhas("writeErrors"));
    ck_assert_uint_eq(store_oplog_count(log), n);

    struct store *after = store_clone(st);
    uint64_t applied = 0, applied_after = store_oplog_count(log);
    ck_assert_int_eq(store_oplog_apply(before, log, &applied, INT64_MAX), (int)n);
    ck_assert_uint_eq(applied, n);
    ck_assert_int_eq(store_oplog_apply(after, log, &applied_after, INT64_MAX), 0);
    char *p = dump(st), *b = dump(before), *a = dump(after);
    ck_assert_str_eq(b, p);
    ck_assert_str_eq(a, p);
    /* Applying again changes nothing: application is idempotent. */
    applied = 0;
    ck_assert_int_eq(store_oplog_apply(before, log, &applied, INT64_MAX), (int)n);
    char *b2 = dump(before);
    ck_assert_str_eq(b2, p);
    free(p);
    free(b);
    free(a);
    free(b2);
    store_set_oplog(st, NULL);
    store_oplog_free(log);
    store_free(before);
    store_free(after);
}
END_TEST

START_TEST(oplog_entries_wait_for_their_time)
{
    struct store *sec = store_clone(st);
    struct store_oplog *log = store_oplog_new(fake_clock, NULL);
    store_set_oplog(st, log);
    fake_now = 1000;
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 1}]}");
    fake_now = 2000;
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 2}]}");
    /* The clock stepping back does not reorder the oplog. */
    fake_now = 1500;
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 3}]}");
    ck_assert_uint_eq(store_oplog_count(log), 4); /* the collection's creation, then 3 inserts */
    ck_assert_int_eq(store_oplog_time(log, 0), 1000);
    ck_assert_int_eq(store_oplog_time(log, 1), 1000);
    ck_assert_int_eq(store_oplog_time(log, 2), 2000);
    ck_assert_int_eq(store_oplog_time(log, 3), 2000);
    ck_assert_int_eq(store_oplog_time(log, 4), -1);

    uint64_t applied = 0;
    ck_assert_int_eq(store_oplog_apply(sec, log, &applied, 999), 0);
    ck_assert(!store_has_collection(sec, "db", "c"));
    ck_assert_int_eq(store_oplog_apply(sec, log, &applied, 1999), 2);
    ck_assert_uint_eq(store_count_docs(sec, "db", "c"), 1);
    ck_assert_int_eq(store_oplog_apply(sec, log, &applied, 2000), 2);
    ck_assert_uint_eq(store_count_docs(sec, "db", "c"), 3);
    ck_assert_uint_eq(applied, 4);

    /* Trimmed entries are gone; a member that still needed them is told so. */
    store_oplog_trim(log, 3);
    ck_assert_uint_eq(store_oplog_count(log), 4);
    ck_assert_int_eq(store_oplog_time(log, 2), -1);
    ck_assert_int_eq(store_oplog_time(log, 3), 2000);
    uint64_t stale = 1;
    ck_assert_int_eq(store_oplog_apply(sec, log, &stale, INT64_MAX), -ERANGE);
    store_oplog_trim(log, 100);
    ck_assert_int_eq(store_oplog_time(log, 3), -1);
    ck_assert_uint_eq(store_oplog_count(log), 4);
    store_set_oplog(st, NULL);
    store_oplog_free(log);
    store_free(sec);
}
END_TEST

START_TEST(transaction_is_replicated_at_commit_only)
{
    seed(2);
    struct store *sec = store_clone(st);
    struct store_oplog *log = store_oplog_new(fake_clock, NULL);
    store_set_oplog(st, log);
    fake_now = 100;
    struct store_txn *t = store_txn_new();
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"c\", \"documents\": [{\"_id\": 3}]}", t), 0);
    ck_assert_int_eq(exec_txn("db",
                              "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": "
                              "{\"$set\": {\"a\": 10}}}]}",
                              t),
                     0);
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"new\", \"documents\": [{\"_id\": 1}]}", t), 0);
    /* Nothing reaches the oplog before the commit. */
    ck_assert_uint_eq(store_oplog_count(log), 0);
    fake_now = 500;
    store_txn_commit(st, t);
    ck_assert_uint_eq(store_oplog_count(log), 4);
    for (uint64_t i = 0; i < 4; i++)
        ck_assert_int_eq(store_oplog_time(log, i), 500);

    /* An aborted transaction leaves nothing, neither its writes nor their undoing. */
    t = store_txn_new();
    ck_assert_int_eq(exec_txn("db", "{\"insert\": \"c\", \"documents\": [{\"_id\": 4}]}", t), 0);
    ck_assert_int_eq(
        exec_txn("db", "{\"delete\": \"c\", \"deletes\": [{\"q\": {}, \"limit\": 0}]}", t), 0);
    store_txn_abort(st, t);
    ck_assert_uint_eq(store_oplog_count(log), 4);

    uint64_t applied = 0;
    ck_assert_int_eq(store_oplog_apply(sec, log, &applied, 499), 0);
    ck_assert_int_eq(store_oplog_apply(sec, log, &applied, 500), 4);
    char *p = dump(st), *s2 = dump(sec);
    ck_assert_str_eq(s2, p);
    free(p);
    free(s2);
    store_set_oplog(st, NULL);
    store_oplog_free(log);
    store_free(sec);
}
END_TEST

START_TEST(clone_is_a_separate_identical_copy)
{
    seed(40);
    ok("{\"delete\": \"c\", \"deletes\": [{\"q\": {\"b\": 1}, \"limit\": 0}]}");
    ok("{\"create\": \"empty\"}");
    ck_assert_int_eq(
        exec_txn("db2", "{\"insert\": \"d\", \"documents\": [{\"_id\": \"x\"}]}", NULL), 0);
    struct store *copy = store_clone(st);
    ck_assert_ptr_nonnull(copy);
    char *p = dump(st), *c = dump(copy);
    ck_assert_str_eq(c, p); /* the UUIDs in listCollections too */
    /* The copy's _id index works and writes to one do not reach the other. */
    ok_on(copy, "db", "{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": 3}, \"limit\": 1}]}");
    ck_assert_int_eq(reply_int("n"), 1);
    ck_assert_uint_eq(store_count_docs(copy, "db", "c"), store_count_docs(st, "db", "c") - 1);
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 3}}");
    ck_assert_uint_eq(res.n, 1);
    free(p);
    free(c);
    store_free(copy);
}
END_TEST

/* Runs a command of transaction t on its snapshot snap (database db); it must succeed. */
static void ok_txn(struct store *snap, const char *json, struct store_txn *t)
{
    struct store *saved = st;
    st = snap;
    int rc = exec_txn("db", json, t);
    st = saved;
    ck_assert_msg(rc == 0, "%s failed: %d %s", json, err.code, err.errmsg);
}

START_TEST(snapshot_transaction_publishes_its_final_state)
{
    seed(3);
    struct store_oplog *log = store_oplog_new(fake_clock, NULL);
    store_set_oplog(st, log);
    uint64_t before = store_oplog_count(log);
    struct store *snap = store_clone(st);
    struct store_txn *t = store_txn_new();
    ok_txn(snap, "{\"insert\": \"c\", \"documents\": [{\"_id\": 10}]}", t);
    ok_txn(
        snap,
        "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$inc\": {\"a\": 5}}}]}",
        t);
    ok_txn(
        snap,
        "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$inc\": {\"a\": 1}}}]}",
        t);
    ok_txn(snap, "{\"delete\": \"c\", \"deletes\": [{\"q\": {\"_id\": 2}, \"limit\": 1}]}", t);
    ok_txn(snap, "{\"insert\": \"made\", \"documents\": [{\"_id\": 1}]}", t);
    ck_assert_uint_eq(store_txn_len(t), 6); /* 4 writes, a creation and its insert */
    /* Nothing reached the live store yet. */
    ok("{\"find\": \"c\", \"filter\": {\"_id\": 1}}");
    ck_assert_int_eq(res_int(0, "a"), 1);
    ck_assert(!store_has_collection(st, "db", "made"));
    /* No conflict: live still holds what the snapshot had. */
    ck_assert(!store_txn_conflicts(t, 0, st, NULL, 0));
    fake_now = 700;
    ck_assert_int_eq(store_txn_publish(st, snap, t), 0);
    char *a = dump(st), *b = dump(snap);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    /* One oplog entry per document (its last state) and the creation, all at the commit time. */
    ck_assert_uint_eq(store_oplog_count(log) - before, 5);
    for (uint64_t i = before; i < store_oplog_count(log); i++)
        ck_assert_int_eq(store_oplog_time(log, i), 700);
    store_free(snap);
    store_set_oplog(st, NULL);
    store_oplog_free(log);
}
END_TEST

START_TEST(snapshot_transaction_conflicts)
{
    seed(3);
    struct store *snap_a = store_clone(st), *snap_b = store_clone(st);
    struct store_txn *a = store_txn_new(), *b = store_txn_new();
    ok_txn(
        snap_a,
        "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"x\": 1}}}]}",
        a);
    ok_txn(
        snap_b,
        "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 2}, \"u\": {\"$set\": {\"x\": 1}}}]}",
        b);
    const struct store_txn *others_of_b[] = {a};
    ck_assert(!store_txn_conflicts(b, 0, st, others_of_b, 1));
    /* b writes the document a wrote: a conflict, for b's new write only. */
    size_t mark = store_txn_len(b);
    ok_txn(
        snap_b,
        "{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"y\": 1}}}]}",
        b);
    ck_assert(store_txn_conflicts(b, mark, st, others_of_b, 1));
    /* Both inserting one _id conflict too. */
    mark = store_txn_len(b);
    ok_txn(snap_a, "{\"insert\": \"c\", \"documents\": [{\"_id\": 50}]}", a);
    ok_txn(snap_b, "{\"insert\": \"c\", \"documents\": [{\"_id\": 50}]}", b);
    ck_assert(store_txn_conflicts(b, mark, st, others_of_b, 1));
    store_txn_abort(snap_b, b);
    /* A write outside any transaction to a document a wrote: a's write conflicts now, by value. */
    ck_assert(!store_txn_conflicts(a, 0, st, NULL, 0));
    ok("{\"update\": \"c\", \"updates\": [{\"q\": {\"_id\": 1}, \"u\": {\"$set\": {\"z\": 1}}}]}");
    ck_assert(store_txn_conflicts(a, 0, st, NULL, 0));
    /* ... and so does one that creates a document a inserted. */
    struct store_txn *c = store_txn_new();
    struct store *snap_c = store_clone(st);
    ok_txn(snap_c, "{\"insert\": \"c\", \"documents\": [{\"_id\": 60}]}", c);
    ck_assert(!store_txn_conflicts(c, 0, st, NULL, 0));
    ok("{\"insert\": \"c\", \"documents\": [{\"_id\": 60}]}");
    ck_assert(store_txn_conflicts(c, 0, st, NULL, 0));
    store_txn_abort(snap_c, c);
    store_txn_abort(snap_a, a);
    store_free(snap_a);
    store_free(snap_b);
    store_free(snap_c);
    ck_assert_uint_eq(store_txn_len(NULL), 0);
}
END_TEST

START_TEST(oplog_truncate_and_apply_upto)
{
    struct store_oplog *log = store_oplog_new(fake_clock, NULL);
    struct store *sec = store_clone(st);
    store_set_oplog(st, log);
    seed(5); /* a creation and five inserts: entries 0 .. 5 */
    ck_assert_uint_eq(store_oplog_count(log), 6);
    uint64_t applied = 0;
    ck_assert_int_eq(store_oplog_apply_upto(sec, log, &applied, 3), 3);
    ck_assert_uint_eq(store_count_docs(sec, "db", "c"), 2);
    ck_assert_int_eq(store_oplog_apply_upto(sec, log, &applied, 3), 0);
    /* A rollback forgets entries 4 and 5; what was applied stays, the rest stops at 4. */
    store_oplog_truncate(log, 4);
    ck_assert_uint_eq(store_oplog_count(log), 4);
    ck_assert_int_eq(store_oplog_apply_upto(sec, log, &applied, 100), 1);
    ck_assert_uint_eq(store_count_docs(sec, "db", "c"), 3);
    /* Truncating below what was trimmed keeps nothing but never underflows. */
    store_oplog_trim(log, 2);
    store_oplog_truncate(log, 1);
    ck_assert_uint_eq(store_oplog_count(log), 2);
    applied = 0;
    ck_assert_int_eq(store_oplog_apply_upto(sec, log, &applied, 100), -ERANGE);
    store_set_oplog(st, NULL);
    store_oplog_free(log);
    store_free(sec);
}
END_TEST

START_TEST(find_by_id_is_fast)
{
    enum { N = 100000 };
    bson_t cmd = BSON_INITIALIZER, arr, d;
    BSON_APPEND_UTF8(&cmd, "insert", "c");
    BSON_APPEND_ARRAY_BEGIN(&cmd, "documents", &arr);
    for (int i = 0; i < N; i++) {
        char k[16];
        const char *kp;
        bson_uint32_to_string((uint32_t)i, &kp, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&arr, kp, &d);
        BSON_APPEND_INT32(&d, "_id", i);
        BSON_APPEND_INT32(&d, "v", i);
        bson_append_document_end(&arr, &d);
    }
    bson_append_array_end(&cmd, &arr);
    ck_assert_int_eq(
        store_exec(st, "db", &cmd, NULL, 0, &reply, &res, &is_cursor, ns, sizeof(ns), NULL, &err),
        0);
    ck_assert_int_eq(reply_int("n"), N);
    bson_destroy(&cmd);
    /* 100k finds by _id over 100k documents: with a scan this would take minutes. */
    int64_t t0 = bson_get_monotonic_time();
    for (int i = 0; i < N; i++) {
        bson_t q = BSON_INITIALIZER, f;
        BSON_APPEND_UTF8(&q, "find", "c");
        BSON_APPEND_DOCUMENT_BEGIN(&q, "filter", &f);
        BSON_APPEND_INT32(&f, "_id", (i * 7919) % N);
        bson_append_document_end(&q, &f);
        bson_reinit(&reply);
        store_results_free(&res);
        ck_assert_int_eq(
            store_exec(st, "db", &q, NULL, 0, &reply, &res, &is_cursor, ns, sizeof(ns), NULL, &err),
            0);
        ck_assert_uint_eq(res.n, 1);
        bson_destroy(&q);
    }
    int64_t us = bson_get_monotonic_time() - t0;
    ck_assert_msg(us < 10 * 1000 * 1000, "100k finds by _id took %lld us", (long long)us);
}
END_TEST
/* Builds the suite. */
static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, insert_and_find_by_id);
    tcase_add_test(tc, snapshot_transaction_publishes_its_final_state);
    tcase_add_test(tc, snapshot_transaction_conflicts);
    tcase_add_test(tc, oplog_truncate_and_apply_upto);
    tcase_add_test(tc, find_missing_collection);
    tcase_add_test(tc, update_set_inc);
    tcase_add_test(tc, delete_and_count);
    tcase_add_test(tc, create_drop_list);
    tcase_add_test(tc, aggregate_basic);
    tcase_add_test(tc, find_and_modify_basic);
    tcase_add_test(tc, unknown_command);
    tcase_add_test(tc, insert_duplicate_ordered_unordered);
    tcase_add_test(tc, insert_from_sequence_and_id_first);
    tcase_add_test(tc, numeric_cross_type_equality);
    tcase_add_test(tc, query_operators);
    tcase_add_test(tc, sort_skip_limit_projection);
    tcase_add_test(tc, sort_cross_type_order);
    tcase_add_test(tc, compare_values_api);
    tcase_add_test(tc, update_operators_and_errors);
    tcase_add_test(tc, upsert);
    tcase_add_test(tc, delete_errors_and_order);
    tcase_add_test(tc, id_index_survives_deletes_and_updates);
    tcase_add_test(tc, results_outlive_writes);
    tcase_add_test(tc, find_and_modify);
    tcase_add_test(tc, count_distinct);
    tcase_add_test(tc, aggregate_more);
    tcase_add_test(tc, aggregate_group_constant);
    tcase_add_test(tc, databases);
    tcase_add_test(tc, transaction_abort_and_commit);
    tcase_add_test(tc, transaction_outcomes);
    tcase_add_test(tc, transaction_outcomes_forget_the_oldest);
    tcase_add_test(tc, oplog_replays_every_kind_of_write);
    tcase_add_test(tc, oplog_entries_wait_for_their_time);
    tcase_add_test(tc, transaction_is_replicated_at_commit_only);
    tcase_add_test(tc, clone_is_a_separate_identical_copy);
    tcase_add_test(tc, find_by_id_is_fast);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(store_suite)
