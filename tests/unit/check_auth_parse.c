/*
 * check_auth_parse.c: what auth.c reads from peers (auth_parse.c): numbers converted only within
 * range, the fields of a client's saslStart/saslContinue and hello, a server's login replies, and
 * usersInfo's credentials (base64 salts and keys, the roles that may read mongolb's status).
 */
#include "auth_parse.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "check_main.h"
#include "wire.h"

static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON %s: %s", json, e.message);
    return b;
}

/* An OP_MSG reply frame with the body of json. */
static void frame(struct wire_buf *w, const char *json)
{
    bson_t *b = doc(json);
    wire_buf_reset(w);
    ck_assert_int_eq(wire_append_msg(w, 9, 1, 0, b), 0);
    bson_destroy(b);
}

static bool int64_of(const char *json, int64_t *out)
{
    bson_t *b = doc(json);
    bson_iter_t it;
    ck_assert(bson_iter_init_find(&it, b, "n"));
    bool ok = auth_parse_int64(&it, out);
    bson_destroy(b);
    return ok;
}

START_TEST(test_int64_range)
{
    int64_t v = 0;
    ck_assert(int64_of("{\"n\": 1}", &v) && v == 1);
    ck_assert(int64_of("{\"n\": {\"$numberLong\": \"-9223372036854775808\"}}", &v) &&
              v == INT64_MIN);
    ck_assert(int64_of("{\"n\": 4096.0}", &v) && v == 4096);
    ck_assert(int64_of("{\"n\": -9.223372036854775808e18}", &v) && v == INT64_MIN);
    ck_assert(!int64_of("{\"n\": 9.223372036854775808e18}", &v));
    ck_assert(!int64_of("{\"n\": 1e300}", &v));
    ck_assert(!int64_of("{\"n\": -1e300}", &v));
    ck_assert(!int64_of("{\"n\": {\"$numberDouble\": \"NaN\"}}", &v));
    ck_assert(!int64_of("{\"n\": {\"$numberDouble\": \"Infinity\"}}", &v));
    ck_assert(!int64_of("{\"n\": 1.5}", &v));
    ck_assert(!int64_of("{\"n\": \"1\"}", &v));
    ck_assert(!int64_of("{\"n\": true}", &v));
}
END_TEST

START_TEST(test_sasl_fields)
{
    struct auth_sasl_cmd c;
    bson_t *b = doc("{\"saslStart\": 1, \"mechanism\": \"SCRAM-SHA-256\", \"payload\": "
                    "{\"$binary\": {\"base64\": \"bixuPXUscj1h\", \"subType\": \"00\"}}, "
                    "\"options\": {\"skipEmptyExchange\": true}}");
    auth_parse_sasl(b, &c);
    ck_assert_str_eq(c.mechanism, "SCRAM-SHA-256");
    ck_assert_uint_eq(c.mechanism_len, 13);
    ck_assert(c.has_payload && c.payload_len == 9 && memcmp(c.payload, "n,n=u,r=a", 9) == 0);
    ck_assert(c.skip_empty && !c.has_conversation);
    bson_destroy(b);

    b = doc("{\"saslContinue\": 1, \"conversationId\": 1e300, \"payload\": \"c=biws\"}");
    auth_parse_sasl(b, &c);
    ck_assert(!c.has_conversation);
    ck_assert(c.has_payload && c.payload_len == 6);
    ck_assert_str_eq(c.mechanism, "");
    bson_destroy(b);

    /* Wrong types count as absent; the first of a repeated key counts. */
    b = doc("{\"saslStart\": 1, \"mechanism\": 5, \"payload\": [1], \"options\": 1, "
            "\"conversationId\": 1, \"conversationId\": 2}");
    auth_parse_sasl(b, &c);
    ck_assert_str_eq(c.mechanism, "");
    ck_assert(!c.has_payload && !c.skip_empty);
    ck_assert(c.has_conversation && c.conversation == 1);
    bson_destroy(b);
}
END_TEST

START_TEST(test_hello_fields)
{
    struct auth_hello_login h;
    bson_t *b = doc("{\"hello\": 1, \"saslSupportedMechs\": \"app.first.last\", "
                    "\"speculativeAuthenticate\": {\"saslStart\": 1, \"mechanism\": "
                    "\"SCRAM-SHA-1\", \"payload\": \"x\", \"db\": \"app\"}}");
    auth_parse_hello(b, &h);
    ck_assert(h.has_mechs_for && h.mechs_name_ok);
    ck_assert_str_eq(h.mechs_db, "app");
    ck_assert_str_eq(h.mechs_user, "first.last");
    ck_assert(h.has_spec && h.spec_is_sasl_start);
    ck_assert_str_eq(h.spec_db, "app");
    bson_destroy(b);

    b = doc("{\"hello\": 1, \"saslSupportedMechs\": \".x\", \"speculativeAuthenticate\": "
            "{\"authenticate\": 1, \"db\": 3}}");
    auth_parse_hello(b, &h);
    ck_assert(h.has_mechs_for && !h.mechs_name_ok);
    ck_assert(h.has_spec && !h.spec_is_sasl_start);
    ck_assert_str_eq(h.spec_db, "admin");
    bson_destroy(b);

    char db[8], user[8];
    ck_assert(!auth_split_name("nodot", db, sizeof(db), user, sizeof(user)));
    ck_assert(!auth_split_name("app.", db, sizeof(db), user, sizeof(user)));
    ck_assert(!auth_split_name("toolongdb.u", db, sizeof(db), user, sizeof(user)));
    ck_assert(!auth_split_name("a.toolonguser", db, sizeof(db), user, sizeof(user)));
    ck_assert(auth_split_name("a.b.c", db, sizeof(db), user, sizeof(user)));
    ck_assert_str_eq(db, "a");
    ck_assert_str_eq(user, "b.c");
}
END_TEST

START_TEST(test_server_reply)
{
    struct wire_buf w = {0};
    struct auth_server_reply r;
    frame(&w, "{\"conversationId\": 1, \"done\": false, \"payload\": \"r=abc,s=AAAA,i=4096\", "
              "\"ok\": 1.0}");
    ck_assert_int_eq(auth_parse_server_reply(w.data, w.len, &r), 0);
    ck_assert(r.ok && r.has_done && !r.done && r.has_conversation && r.conversation == 1);
    ck_assert(r.has_payload && r.payload_len == 19);
    frame(&w, "{\"ok\": 0, \"errmsg\": \"Authentication failed.\", \"code\": 18, "
              "\"conversationId\": 1e300}");
    ck_assert_int_eq(auth_parse_server_reply(w.data, w.len, &r), 0);
    ck_assert(!r.ok && r.code == 18 && !r.has_conversation && !r.has_payload);
    ck_assert_str_eq(r.errmsg, "Authentication failed.");
    /* Not an OP_MSG, or cut short. */
    ck_assert_int_eq(auth_parse_server_reply(w.data, w.len - 1, &r), -EPROTO);
    ck_assert_int_eq(auth_parse_server_reply(w.data, 10, &r), -EPROTO);
    wire_buf_free(&w);
}
END_TEST

#define SHA1_CRED                                                                                  \
    "{\"iterationCount\": %s, \"salt\": \"xH4KYS0KmGD3bUlP89MKeA==\", \"storedKey\": "             \
    "\"xYwHIL/p0IwSmx2t8WdKN1p/0Ow=\", \"serverKey\": \"6jdtRTgt04/hUp+YNn1qqDx7IwQ=\"}"
#define SHA256_CRED                                                                                \
    "{\"iterationCount\": 15000, \"salt\": \"JBe5FdXk8meWMBHMLIhPRMHxeq1Kir0e4/f8PA==\", "         \
    "\"storedKey\": \"ezT1RF7Ow6OvpuyJnJTBQDozBc8rq7BhntA42OtK0I0=\", \"serverKey\": "             \
    "\"t3O2D7JKskgOTaJQp3ZHUWEgbFX3Pnyrb14z2Aohm1I=\"}"

START_TEST(test_users_info)
{
    struct wire_buf w = {0};
    struct auth_users_info u;
    char why[300], json[2048];
    snprintf(json, sizeof(json),
             "{\"users\": [{\"user\": \"alice\", \"db\": \"other\", \"credentials\": "
             "{\"SCRAM-SHA-1\": " SHA1_CRED "}}, {\"user\": \"alice\", \"db\": \"app\", "
             "\"credentials\": {\"SCRAM-SHA-1\": " SHA1_CRED ", \"SCRAM-SHA-256\": " SHA256_CRED
             ", \"PLAIN\": {}}, \"roles\": [{\"role\": \"clusterMonitor\", \"db\": \"admin\"}]}], "
             "\"ok\": 1}",
             "10000", "10000");
    frame(&w, json);
    ck_assert_int_eq(auth_parse_users_info(w.data, w.len, "app", "alice", &u, why, sizeof(why)), 0);
    ck_assert_uint_eq(u.mechs, (1u << SCRAM_SHA_1) | (1u << SCRAM_SHA_256));
    ck_assert(u.monitor);
    ck_assert_uint_eq(u.v[SCRAM_SHA_1].iterations, 10000);
    ck_assert_uint_eq(u.v[SCRAM_SHA_1].salt_len, 16);
    ck_assert_uint_eq(u.v[SCRAM_SHA_256].iterations, 15000);
    ck_assert_uint_eq(u.v[SCRAM_SHA_256].salt_len, 28);

    /* clusterMonitor on another db is no monitor; an iteration count out of range is no
     * credential; a user of another db is not this one. */
    snprintf(json, sizeof(json),
             "{\"users\": [{\"user\": \"alice\", \"db\": \"app\", \"credentials\": "
             "{\"SCRAM-SHA-1\": " SHA1_CRED "}, \"roles\": [{\"role\": \"clusterMonitor\", "
             "\"db\": \"app\"}]}], \"ok\": 1}",
             "1e300");
    frame(&w, json);
    ck_assert_int_eq(auth_parse_users_info(w.data, w.len, "app", "alice", &u, why, sizeof(why)), 0);
    ck_assert_uint_eq(u.mechs, 0);
    ck_assert(!u.monitor);
    ck_assert_int_eq(auth_parse_users_info(w.data, w.len, "test", "alice", &u, why, sizeof(why)),
                     0);
    ck_assert_uint_eq(u.mechs, 0);

    frame(&w, "{\"ok\": 0, \"errmsg\": \"not authorized\", \"code\": 13}");
    ck_assert_int_eq(auth_parse_users_info(w.data, w.len, "app", "alice", &u, why, sizeof(why)),
                     -EACCES);
    ck_assert_str_eq(why, "usersInfo as service_user failed: 13 not authorized");
    ck_assert_int_eq(auth_parse_users_info(w.data, 5, "app", "alice", &u, why, sizeof(why)),
                     -EPROTO);
    wire_buf_free(&w);
}
END_TEST

static Suite *auth_parse_suite(void)
{
    Suite *s = suite_create("auth_parse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_int64_range);
    tcase_add_test(tc, test_sasl_fields);
    tcase_add_test(tc, test_hello_fields);
    tcase_add_test(tc, test_server_reply);
    tcase_add_test(tc, test_users_info);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(auth_parse_suite)
