/*
 * check_srv_parse.c: the pure rules of SRV seeds (srv_parse.c) and the mongodb+srv:// seed form
 * of the configuration, with cases from the initial DNS seedlist discovery specification's tests.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "check_main.h"
#include "config.h"
#include "srv_parse.h"

static char err[512];

START_TEST(txt_allowed_options)
{
    struct srv_txt_opts o;
    const char *t = "replicaSet=repl0&authSource=thisDB&loadBalanced=false";
    ck_assert_int_eq(srv_txt_parse(t, strlen(t), &o, err, sizeof(err)), 0);
    ck_assert_str_eq(o.replica_set, "repl0");
    ck_assert_str_eq(o.auth_source, "thisDB");
    ck_assert_int_eq(o.load_balanced, 0);
    /* Keys in any case, percent-encoded values, an empty text. */
    t = "REPLICASET=a%2Db&loadbalanced=TRUE";
    ck_assert_int_eq(srv_txt_parse(t, strlen(t), &o, err, sizeof(err)), 0);
    ck_assert_str_eq(o.replica_set, "a-b");
    ck_assert_int_eq(o.load_balanced, 1);
    ck_assert_int_eq(srv_txt_parse("", 0, &o, err, sizeof(err)), 0);
    ck_assert_int_eq(o.load_balanced, -1);
    ck_assert_str_eq(o.replica_set, "");
}
END_TEST

START_TEST(txt_refused)
{
    struct srv_txt_opts o;
    const char *bad[] = {
        "ssl=true",                /* TLS cannot be set through TXT */
        "connectTimeoutMS=300000", /* txt-record-unknown-key */
        "replicaSet",              /* no value */
        "replicaSet=",             /* empty value */
        "loadBalanced=yes",        /* not a boolean */
        "authSource=a%2",          /* a cut escape */
        "authSource=a%zz",         /* not hex */
        "authSource=a b",          /* a space */
        "=x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(srv_txt_parse(bad[i], strlen(bad[i]), &o, err, sizeof(err)) == -EINVAL,
                      "%s was accepted", bad[i]);
    const char *ssl = "authSource=x&ssl=true";
    ck_assert_int_eq(srv_txt_parse(ssl, strlen(ssl), &o, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "'ssl'") != NULL, "%s", err);
}
END_TEST

START_TEST(parent_domain)
{
    /* Three labels or more: the host must end with the name less its first label. */
    ck_assert(srv_host_allowed("test1.test.build.10gen.cc", "localhost.test.build.10gen.cc"));
    ck_assert(srv_host_allowed("test1.test.build.10gen.cc", "test1.test.build.10gen.cc"));
    ck_assert(!srv_host_allowed("test1.test.build.10gen.cc", "localhost.build.10gen.cc"));
    ck_assert(!srv_host_allowed("test1.test.build.10gen.cc", "evil.example.org"));
    ck_assert(!srv_host_allowed("cluster.mongolb.test", "xmongolb.test"));
    ck_assert(!srv_host_allowed("cluster.mongolb.test", "mongolb.test"));
    ck_assert(srv_host_allowed("cluster.mongolb.test", "a.b.mongolb.test"));
    /* One or two labels: at least one label more than the name itself. */
    ck_assert(srv_host_allowed("localhost", "test.localhost"));
    ck_assert(!srv_host_allowed("localhost", "localhost"));
    ck_assert(srv_host_allowed("mongo.local", "a.mongo.local"));
    ck_assert(!srv_host_allowed("mongo.local", "mongo.local"));
    ck_assert(!srv_host_allowed("mongo.local", "evil.local"));
    ck_assert(!srv_host_allowed("mongo.local", ".mongo.local"));
}
END_TEST

/* A DNS reply to an SRV question with two answers (TTLs 300 and 120) and an A record (TTL 5). */
static const unsigned char srv_reply[] = {
    0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0,
    /* question: _m._tcp.x SRV IN */
    2, '_', 'm', 4, '_', 't', 'c', 'p', 1, 'x', 0, 0, 33, 0, 1,
    /* answer 1: pointer, SRV, IN, ttl 300, rdlen 9: 0 0 27017 "a" */
    0xC0, 12, 0, 33, 0, 1, 0, 0, 0x01, 0x2C, 0, 9, 0, 0, 0, 0, 0x69, 0x89, 1, 'a', 0,
    /* answer 2: ttl 120 */
    0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 120, 0, 9, 0, 0, 0, 0, 0x69, 0x89, 1, 'b', 0,
    /* answer 3: A record, ttl 5 */
    0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1};

START_TEST(min_ttl)
{
    uint32_t ttl = 0;
    ck_assert_int_eq(srv_min_ttl(srv_reply, sizeof(srv_reply), 33, &ttl), 0);
    ck_assert_uint_eq(ttl, 120);
    ck_assert_int_eq(srv_min_ttl(srv_reply, sizeof(srv_reply), 1, &ttl), 0);
    ck_assert_uint_eq(ttl, 5);
    ck_assert_int_eq(srv_min_ttl(srv_reply, sizeof(srv_reply), 16, &ttl), -ENOENT);
    /* Every truncation is malformed, never read past. */
    for (size_t n = 0; n < sizeof(srv_reply) - 1; n++) {
        int rc = srv_min_ttl(srv_reply, n, 33, &ttl);
        ck_assert_msg(rc == -EINVAL || (rc == 0 && n >= 12), "length %zu: %d", n, rc);
    }
}
END_TEST

static uint32_t counter_rnd(void *ctx)
{
    return (*(uint32_t *)ctx)++;
}

static void add(struct mlb_seed_list *l, const char *host, int port)
{
    snprintf(l->host[l->count].host, sizeof(l->host[0].host), "%s", host);
    l->host[l->count++].port = port;
}

START_TEST(choose_keeps_current)
{
    struct mlb_seed_list found = {0}, current = {0}, out;
    add(&found, "a.x.y", 1);
    add(&found, "b.x.y", 1);
    add(&found, "c.x.y", 1);
    add(&found, "d.x.y", 1);
    uint32_t r = 7;
    srv_choose(&found, &current, 0, counter_rnd, &r, &out);
    ck_assert_uint_eq(out.count, 4);
    srv_choose(&found, &current, 2, counter_rnd, &r, &out);
    ck_assert_uint_eq(out.count, 2);
    ck_assert(strcmp(out.host[0].host, out.host[1].host) != 0);
    /* The hosts in use that are still listed stay; only the missing ones are drawn. */
    add(&current, "c.x.y", 1);
    add(&current, "gone.x.y", 1);
    srv_choose(&found, &current, 2, counter_rnd, &r, &out);
    ck_assert_uint_eq(out.count, 2);
    ck_assert_str_eq(out.host[0].host, "c.x.y");
    ck_assert(strcmp(out.host[1].host, "c.x.y") != 0);
}
END_TEST

START_TEST(config_srv_forms)
{
    struct mlb_config c;
    const char *ok = "[upstream]\nseeds = mongodb+srv://Cluster0.example.net/\n";
    ck_assert_int_eq(config_load_string(ok, "t.ini", &c, err, sizeof(err)), 0);
    ck_assert_str_eq(c.seeds.srv, "Cluster0.example.net");
    ck_assert_uint_eq(c.seeds.count, 0);
    ck_assert_int_eq(c.upstream_tls, 1); /* implicit, as the specification asks */
    ck_assert_str_eq(c.srv_service_name, "mongodb");
    config_free(&c);
    const char *off = "[upstream]\nseeds = mongodb+srv://a.b\ntls = false\nsrv_max_hosts = 2\n";
    ck_assert_int_eq(config_load_string(off, "t.ini", &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.upstream_tls, 0);
    ck_assert_int_eq(c.srv_max_hosts, 2);
    config_free(&c);
    const char *rs = "[upstream]\nseeds = mongodb+srv://a.b.c\nmode = replicaset\n";
    ck_assert_int_eq(config_load_string(rs, "t.ini", &c, err, sizeof(err)), 0);
    config_free(&c);
    const char *bad[] = {
        "seeds = mongodb+srv://a.b.c:27017",
        "seeds = mongodb+srv://a.b.c,d.e.f",
        "seeds = mongodb+srv://u:p@a.b.c",
        "seeds = mongodb+srv://a.b.c/?tls=false",
        "seeds = mongodb+srv://a..c",
        "seeds = mongodb+srv://",
        "seeds = mongodb+srv://a b.c",
        "seeds = h\nsrv_max_hosts = 1",
        "seeds = h\ndns_server = 127.0.0.1:53",
        "seeds = mongodb+srv://a.b\nsrv_service_name = a.b",
        "seeds = mongodb+srv://a.b\nmode = replicaset\nsrv_max_hosts = 1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "[upstream]\n%s\n", bad[i]);
        ck_assert_msg(config_load_string(text, "t.ini", &c, err, sizeof(err)) == -EINVAL,
                      "accepted: %s", bad[i]);
    }
}
END_TEST

/* dns_server takes IP literals with optional ports, and is kept in the form c-ares parses. */
START_TEST(config_dns_server)
{
    struct mlb_config c;
    const char *good[][2] = {
        {"127.0.0.1", "127.0.0.1"},
        {"127.0.0.1:5353", "127.0.0.1:5353"},
        {"::1", "::1"},
        {"[::1]:53", "[::1]:53"},
        {"10.0.0.1:53 , [fe80::1]:5300,8.8.8.8", "10.0.0.1:53,[fe80::1]:5300,8.8.8.8"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "[upstream]\nseeds = mongodb+srv://a.b\ndns_server = %s\n",
                 good[i][0]);
        ck_assert_msg(config_load_string(text, "t.ini", &c, err, sizeof(err)) == 0, "%s: %s",
                      good[i][0], err);
        ck_assert_str_eq(c.dns_server, good[i][1]);
        config_free(&c);
    }
    const char *bad[][2] = {
        {"localhost:53", "'localhost:53' is not an IP address"},
        {"1.2.3", "'1.2.3' is not an IP address"},
        {"127.0.0.1:0", "'127.0.0.1:0' is not"},
        {"127.0.0.1:65536", "'127.0.0.1:65536' is not"},
        {"127.0.0.1:", "'127.0.0.1:' is not"},
        {"127.0.0.1:5x", "'127.0.0.1:5x' is not"},
        {"[::1]", "'[::1]' is not"},
        {"[::1]53", "'[::1]53' is not"},
        {"[127.0.0.1]:53", "'[127.0.0.1]:53' is not"},
        {"127.0.0.1,,127.0.0.2", "an empty address between commas"},
        {"2001:db8::1:2:3:4:5:6:7:8:9:10:11:12:13", "is not an IP address"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "[upstream]\nseeds = mongodb+srv://a.b\ndns_server = %s\n",
                 bad[i][0]);
        ck_assert_msg(config_load_string(text, "t.ini", &c, err, sizeof(err)) == -EINVAL,
                      "accepted: %s", bad[i][0]);
        ck_assert_msg(strstr(err, "dns_server") && strstr(err, bad[i][1]), "%s: %s", bad[i][0],
                      err);
    }
}
END_TEST

Suite *srv_parse_suite(void)
{
    Suite *s = suite_create("srv_parse");
    TCase *tc = tcase_create("srv_parse");
    tcase_add_test(tc, txt_allowed_options);
    tcase_add_test(tc, txt_refused);
    tcase_add_test(tc, parent_domain);
    tcase_add_test(tc, min_ttl);
    tcase_add_test(tc, choose_keeps_current);
    tcase_add_test(tc, config_srv_forms);
    tcase_add_test(tc, config_dns_server);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(srv_parse_suite)
