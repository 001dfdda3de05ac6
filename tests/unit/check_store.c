/*
 * check_store.c: unit tests of mongosim's in-memory store (tests/sim/store.c): every command,
 * its errors, the _id index, transactions' undo, and MongoDB's value ordering.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
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

/* Builds the suite. */
static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, insert_and_find_by_id);
    tcase_add_test(tc, find_missing_collection);
    tcase_add_test(tc, update_set_inc);
    tcase_add_test(tc, delete_and_count);
    tcase_add_test(tc, create_drop_list);
    tcase_add_test(tc, aggregate_basic);
    tcase_add_test(tc, find_and_modify_basic);
    tcase_add_test(tc, unknown_command);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(store_suite)
