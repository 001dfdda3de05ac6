/*
 * check_topology.c: server state from hello replies (the SDAM classification table, the RTT
 * average, failures), server selection (latency window, power of two choices by requests in
 * flight, exclusion for retries, writes in replica-set mode) and the limits of mongolb's own
 * hello.
 */
#include "topology.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"

/* Parses relaxed extended JSON into a new document; the test fails if it does not parse. */
static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON in test: %s (%s)", json, e.message);
    return b;
}

/* Classifies the reply that json describes. */
static enum server_type classify(const char *json)
{
    bson_t *b = doc(json);
    enum server_type t = topology_classify(b);
    bson_destroy(b);
    return t;
}

/* Feeds server idx a hello reply described by json, with round trip rtt, and returns the result
 * of topology_on_hello. */
static int hello(struct topology *t, int idx, const char *json, double rtt)
{
    bson_t *b = doc(json);
    int r = topology_on_hello(t, idx, b, rtt, 1000);
    bson_destroy(b);
    return r;
}

#define MONGOS_HELLO    "{\"ok\": 1, \"msg\": \"isdbgrid\", \"isWritablePrimary\": true}"
#define PRIMARY_HELLO   "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true}"
#define SECONDARY_HELLO "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true}"

/* A deterministic generator for selection (xorshift32); the state must not start at zero. */
static uint32_t xorshift(void *ctx)
{
    uint32_t *s = ctx;
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* Adds n servers named h0, h1, ... on port 27017, asserting that they get indexes 0 to n - 1. */
static void add_servers(struct topology *t, int n)
{
    for (int i = 0; i < n; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        ck_assert_int_eq(topology_add(t, host, 27017), i);
    }
}

/* Adds servers h<from> to h<to - 1>, asserting that each gets a new slot. */
static void add_servers_from(struct topology *t, int from, int to)
{
    for (int i = from; i < to; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        ck_assert_int_ge(topology_add(t, host, 27017), 0);
    }
}

/* A mongos topology with the given latency window (local threshold): servers h0..h<n - 1>, each
 * known from a mongos hello with round-trip time rtts[i]. */
static void mongos_servers(struct topology *t, int local_threshold_ms, const double *rtts, int n)
{
    topology_init(t, TOPOLOGY_MONGOS, local_threshold_ms);
    add_servers(t, n);
    for (int i = 0; i < n; i++)
        hello(t, i, MONGOS_HELLO, rtts[i]);
}

/*
 * Feeds server idx the hello of a primary of set "rs" with the given setVersion and electionId
 * (24 hex digits), and maxWireVersion when max_wire >= 0. Returns what hello() returns.
 */
static int elected_primary(struct topology *t, int idx, int set_version, const char *election_id,
                           int max_wire)
{
    char json[256], wire[32] = "";
    if (max_wire >= 0)
        snprintf(wire, sizeof(wire), ", \"maxWireVersion\": %d", max_wire);
    snprintf(json, sizeof(json),
             "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"setVersion\": %d, "
             "\"electionId\": {\"$oid\": \"%s\"}%s}",
             set_version, election_id, wire);
    return hello(t, idx, json, 1);
}

/* Runs `draws` selections and counts how often each server was chosen; -EAGAIN counts nowhere
 * and fails the test. */
static void draw_many(const struct topology *t, const struct select_request *req, int draws,
                      int counts[TOPOLOGY_MAX_SERVERS])
{
    uint32_t state = 0x9e3779b9u;
    memset(counts, 0, sizeof(int) * TOPOLOGY_MAX_SERVERS);
    for (int i = 0; i < draws; i++) {
        int idx = topology_select(t, req, xorshift, &state);
        ck_assert_int_ge(idx, 0);
        ck_assert_int_lt(idx, t->n);
        counts[idx]++;
    }
}

/* Draws draws times and asserts that every draw picked server idx. */
static void always_picks(const struct topology *t, const struct select_request *req, int draws,
                         int idx)
{
    int counts[TOPOLOGY_MAX_SERVERS];
    draw_many(t, req, draws, counts);
    ck_assert_int_eq(counts[idx], draws);
}

/* --- classification ---------------------------------------------------------------------- */

START_TEST(classify_sdam_table)
{
    ck_assert_int_eq(classify(MONGOS_HELLO), SERVER_MONGOS);
    ck_assert_int_eq(classify("{\"ok\": 1, \"msg\": \"isdbgrid\", \"ismaster\": true}"),
                     SERVER_MONGOS);
    ck_assert_int_eq(classify(PRIMARY_HELLO), SERVER_RS_PRIMARY);
    /* The legacy field counts the same as isWritablePrimary. */
    ck_assert_int_eq(classify("{\"ok\": 1, \"setName\": \"rs\", \"ismaster\": true}"),
                     SERVER_RS_PRIMARY);
    ck_assert_int_eq(classify(SECONDARY_HELLO), SERVER_RS_SECONDARY);
    ck_assert_int_eq(classify("{\"ok\": 1, \"setName\": \"rs\", \"arbiterOnly\": true}"),
                     SERVER_RS_ARBITER);
    /* A hidden member is RSOther even though it says secondary. */
    ck_assert_int_eq(
        classify("{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"hidden\": true}"),
        SERVER_RS_OTHER);
    /* A member that is neither primary, secondary nor arbiter (e.g. recovering) is RSOther. */
    ck_assert_int_eq(classify("{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": false, "
                              "\"secondary\": false}"),
                     SERVER_RS_OTHER);
    ck_assert_int_eq(classify("{\"ok\": 1, \"isreplicaset\": true, \"isWritablePrimary\": false}"),
                     SERVER_RS_GHOST);
    ck_assert_int_eq(classify("{\"ok\": 1, \"isWritablePrimary\": true}"), SERVER_STANDALONE);
    ck_assert_int_eq(classify("{\"ok\": 1, \"ismaster\": true}"), SERVER_STANDALONE);
    ck_assert_int_eq(classify("{\"ok\": 0, \"errmsg\": \"no\"}"), SERVER_UNKNOWN);
    ck_assert_int_eq(classify("{\"ok\": 0.0, \"msg\": \"isdbgrid\"}"), SERVER_UNKNOWN);
    ck_assert_int_eq(classify("{\"ok\": 0, \"setName\": \"rs\", \"isWritablePrimary\": true}"),
                     SERVER_UNKNOWN);
}
END_TEST

START_TEST(type_names)
{
    ck_assert_str_eq(server_type_name(SERVER_UNKNOWN), "Unknown");
    ck_assert_str_eq(server_type_name(SERVER_MONGOS), "Mongos");
    ck_assert_str_eq(server_type_name(SERVER_STANDALONE), "Standalone");
    ck_assert_str_eq(server_type_name(SERVER_RS_PRIMARY), "RSPrimary");
    ck_assert_str_eq(server_type_name(SERVER_RS_SECONDARY), "RSSecondary");
    ck_assert_str_eq(server_type_name(SERVER_RS_ARBITER), "RSArbiter");
    ck_assert_str_eq(server_type_name(SERVER_RS_OTHER), "RSOther");
    ck_assert_str_eq(server_type_name(SERVER_RS_GHOST), "RSGhost");
}
END_TEST

/* --- adding servers ---------------------------------------------------------------------- */

START_TEST(add_dedups_case_insensitively)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    ck_assert_int_eq(topology_add(&t, "Mongos-A.example", 27017), 0);
    ck_assert_int_eq(topology_add(&t, "mongos-a.EXAMPLE", 27017), 0);
    ck_assert_int_eq(t.n, 1);
    /* Same host, another port: another server. */
    ck_assert_int_eq(topology_add(&t, "mongos-a.example", 27018), 1);
    ck_assert_int_eq(topology_add(&t, "::1", 27017), 2);
    ck_assert_int_eq(t.n, 3);
    ck_assert_str_eq(t.servers[0].addr, "Mongos-A.example:27017");
    ck_assert_str_eq(t.servers[2].addr, "[::1]:27017");
    ck_assert_int_eq(t.servers[1].idx, 1);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert(!t.servers[1].rtt_known);
    ck_assert_int_eq(t.servers[1].session_timeout_min, -1);
}
END_TEST

START_TEST(add_full_is_enospc)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(topology_add(&t, "one-too-many", 27017), -ENOSPC);
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
    /* A server already present is still found when the table is full. */
    ck_assert_int_eq(topology_add(&t, "H5", 27017), 5);
}
END_TEST

/* --- hello and failures ------------------------------------------------------------------ */

START_TEST(hello_reports_type_change)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 1);
    uint64_t v = t.version;
    ck_assert_int_eq(hello(&t, 0, SECONDARY_HELLO, 5), 1);
    ck_assert_int_eq(t.servers[0].type, SERVER_RS_SECONDARY);
    ck_assert_uint_gt(t.version, v);
    ck_assert_int_eq(hello(&t, 0, SECONDARY_HELLO, 5), 0);
    ck_assert_int_eq(hello(&t, 0, PRIMARY_HELLO, 5), 1);
    ck_assert_int_eq(t.servers[0].type, SERVER_RS_PRIMARY);
    ck_assert_str_eq(t.servers[0].set_name, "rs");
    ck_assert_int_eq(t.servers[0].last_ok_ms, 1000);
}
END_TEST

START_TEST(rtt_seed_then_ewma)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, 1);
    hello(&t, 0, MONGOS_HELLO, 10);
    ck_assert(t.servers[0].rtt_known);
    ck_assert_double_eq_tol(t.servers[0].rtt_ms, 10.0, 1e-9);
    hello(&t, 0, MONGOS_HELLO, 20);
    ck_assert_double_eq_tol(t.servers[0].rtt_ms, 12.0, 1e-9); /* 0.2 * 20 + 0.8 * 10 */
    hello(&t, 0, MONGOS_HELLO, 2);
    ck_assert_double_eq_tol(t.servers[0].rtt_ms, 10.0, 1e-9); /* 0.2 * 2 + 0.8 * 12 */
}
END_TEST

START_TEST(failure_clears_rtt_and_bumps_generation)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, 1);
    hello(&t, 0, MONGOS_HELLO, 10);
    hello(&t, 0, MONGOS_HELLO, 20);
    uint64_t gen = t.servers[0].generation;
    uint64_t v = t.version;
    ck_assert_int_eq(topology_on_failure(&t, 0, "connection refused", 5000), 1);
    ck_assert_int_eq(t.servers[0].type, SERVER_UNKNOWN);
    ck_assert(!t.servers[0].rtt_known);
    ck_assert_uint_eq(t.servers[0].generation, gen + 1);
    ck_assert_uint_gt(t.version, v);
    ck_assert_int_eq(t.servers[0].last_fail_ms, 5000);
    ck_assert_str_eq(t.servers[0].last_error, "connection refused");
    /* A second failure: it was already unknown, but the pool is cleared again. */
    ck_assert_int_eq(topology_on_failure(&t, 0, NULL, 6000), 0);
    ck_assert_uint_eq(t.servers[0].generation, gen + 2);
    ck_assert_str_eq(t.servers[0].last_error, "");
    /* After the failure the next sample seeds the average again rather than blending. */
    hello(&t, 0, MONGOS_HELLO, 50);
    ck_assert(t.servers[0].rtt_known);
    ck_assert_double_eq_tol(t.servers[0].rtt_ms, 50.0, 1e-9);
    ck_assert_str_eq(t.servers[0].last_error, "");
}
END_TEST

START_TEST(hello_reads_limits_tags_last_write)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 1);
    hello(&t, 0,
          "{\"ok\": 1, \"setName\": \"rs0\", \"secondary\": true, \"minWireVersion\": 0, "
          "\"maxWireVersion\": 21, \"maxBsonObjectSize\": 1000, \"maxMessageSizeBytes\": 2000, "
          "\"maxWriteBatchSize\": 300, \"logicalSessionTimeoutMinutes\": 30, "
          "\"tags\": {\"dc\": \"east\", \"rack\": \"r1\", \"n\": 5}, "
          "\"lastWrite\": {\"lastWriteDate\": {\"$date\": 123456}}}",
          3);
    const struct server *s = &t.servers[0];
    ck_assert_int_eq(s->max_wire, 21);
    ck_assert_int_eq(s->max_bson, 1000);
    ck_assert_int_eq(s->max_msg, 2000);
    ck_assert_int_eq(s->max_batch, 300);
    ck_assert_int_eq(s->session_timeout_min, 30);
    ck_assert_str_eq(s->set_name, "rs0");
    /* Only string tags are kept. */
    ck_assert_int_eq(s->n_tags, 2);
    ck_assert_str_eq(s->tags[0].name, "dc");
    ck_assert_str_eq(s->tags[0].value, "east");
    ck_assert_str_eq(s->tags[1].name, "rack");
    ck_assert_int_eq(s->last_write_ms, 123456);
    /* Absent fields fall back to the protocol's defaults, and no session timeout means -1. */
    hello(&t, 0, SECONDARY_HELLO, 3);
    ck_assert_int_eq(s->max_bson, 16777216);
    ck_assert_int_eq(s->max_msg, 48000000);
    ck_assert_int_eq(s->max_batch, 100000);
    ck_assert_int_eq(s->session_timeout_min, -1);
    ck_assert_int_eq(s->n_tags, 0);
}
END_TEST

/* --- selection --------------------------------------------------------------------------- */

START_TEST(select_latency_window)
{
    struct topology t;
    mongos_servers(&t, 15, (const double[]){20, 35, 40}, 3);
    struct select_request req = {.write = false, .exclude_idx = -1};
    int counts[TOPOLOGY_MAX_SERVERS];
    draw_many(&t, &req, 10000, counts);
    ck_assert_int_eq(counts[2], 0); /* 40 > 20 + 15 */
    /* With equal loads the two in the window share the work. */
    ck_assert_int_gt(counts[0], 3000);
    ck_assert_int_gt(counts[1], 3000);
    ck_assert_int_eq(counts[0] + counts[1], 10000);
}
END_TEST

START_TEST(select_fastest_alone_in_window)
{
    struct topology t;
    mongos_servers(&t, 5, (const double[]){30, 3, 9}, 3);
    struct select_request req = {.write = false, .exclude_idx = -1};
    always_picks(&t, &req, 1000, 1);
}
END_TEST

START_TEST(select_fewer_in_flight_wins)
{
    struct topology t;
    mongos_servers(&t, 15, (const double[]){5, 6}, 2);
    t.servers[0].in_flight = 4;
    t.servers[1].in_flight = 1;
    struct select_request req = {.write = false, .exclude_idx = -1};
    int counts[TOPOLOGY_MAX_SERVERS];
    always_picks(&t, &req, 1000, 1);
    t.servers[0].in_flight = 0;
    always_picks(&t, &req, 1000, 0);

    /* With three in the window, the busiest loses every pair it is drawn into, and the idlest
     * wins every pair it is in (two pairs of three). */
    topology_add(&t, "h2", 27017);
    hello(&t, 2, MONGOS_HELLO, 7);
    t.servers[0].in_flight = 9;
    t.servers[1].in_flight = 0;
    t.servers[2].in_flight = 3;
    draw_many(&t, &req, 9000, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_gt(counts[1], 5000);
    ck_assert_int_gt(counts[2], 2000);
}
END_TEST

START_TEST(select_never_unknown)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 1000);
    add_servers(&t, 4);
    struct select_request req = {.write = false, .exclude_idx = -1};
    uint32_t state = 1;
    /* Nothing checked yet. */
    ck_assert_int_eq(topology_select(&t, &req, xorshift, &state), -EAGAIN);
    hello(&t, 0, MONGOS_HELLO, 5);
    hello(&t, 1, MONGOS_HELLO, 5);
    topology_on_failure(&t, 1, "gone", 2000);
    /* A standalone is not a mongos: not selectable in mongos mode. */
    hello(&t, 2, "{\"ok\": 1, \"isWritablePrimary\": true}", 1);
    always_picks(&t, &req, 500, 0);
    topology_on_failure(&t, 0, "gone", 2000);
    ck_assert_int_eq(topology_select(&t, &req, xorshift, &state), -EAGAIN);
    /* Empty topology. */
    struct topology e;
    topology_init(&e, TOPOLOGY_MONGOS, 15);
    ck_assert_int_eq(topology_select(&e, &req, xorshift, &state), -EAGAIN);
}
END_TEST

START_TEST(select_exclude)
{
    struct topology t;
    mongos_servers(&t, 15, (const double[]){5, 6, 7}, 3);
    struct select_request req = {.write = false, .exclude_idx = 1};
    int counts[TOPOLOGY_MAX_SERVERS];
    draw_many(&t, &req, 2000, counts);
    ck_assert_int_eq(counts[1], 0);
    ck_assert_int_gt(counts[0], 0);
    ck_assert_int_gt(counts[2], 0);
    /* The excluded server is the only one left: it is used. */
    topology_on_failure(&t, 0, "x", 1);
    topology_on_failure(&t, 2, "x", 1);
    always_picks(&t, &req, 100, 1);
}
END_TEST

START_TEST(select_exclude_widens_window)
{
    /* Deprioritising the fast server that failed: the window is measured from the fastest of the
     * others, so a slower server outside the original window takes the retry. */
    struct topology t;
    mongos_servers(&t, 15, (const double[]){5, 100}, 2);
    struct select_request req = {.write = false, .exclude_idx = 0};
    always_picks(&t, &req, 100, 1);
    req.exclude_idx = -1;
    always_picks(&t, &req, 100, 0);
}
END_TEST

START_TEST(select_replicaset_writes_primary_only)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 6);
    hello(&t, 0, SECONDARY_HELLO, 2);
    hello(&t, 1, PRIMARY_HELLO, 100); /* far outside the secondaries' window */
    hello(&t, 2, SECONDARY_HELLO, 3);
    hello(&t, 3, "{\"ok\": 1, \"setName\": \"rs\", \"arbiterOnly\": true}", 1);
    hello(&t, 4, "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"hidden\": true}", 1);
    hello(&t, 5, "{\"ok\": 1, \"isreplicaset\": true}", 1);
    int counts[TOPOLOGY_MAX_SERVERS];

    struct select_request w = {.write = true, .exclude_idx = -1};
    always_picks(&t, &w, 1000, 1);
    /* A retried write whose primary is excluded still goes to the only primary. */
    w.exclude_idx = 1;
    always_picks(&t, &w, 100, 1);

    /* Reads without a read preference go to the primary. */
    struct select_request r = {.write = false, .exclude_idx = -1};
    always_picks(&t, &r, 100, 1);

    /* Reads that allow secondaries use the ones in the window; arbiters, hidden members and ghosts
     * never. */
    struct read_pref sec = {.mode = READ_SECONDARY, .max_staleness_s = -1};
    r.rp = &sec;
    draw_many(&t, &r, 2000, counts);
    ck_assert_int_gt(counts[0], 0);
    ck_assert_int_gt(counts[2], 0);
    ck_assert_int_eq(counts[0] + counts[2], 2000);

    /* No primary: writes must wait. */
    topology_on_failure(&t, 1, "stepped down", 1);
    uint32_t state = 7;
    w.exclude_idx = -1;
    ck_assert_int_eq(topology_select(&t, &w, xorshift, &state), -EAGAIN);
    ck_assert_int_ge(topology_select(&t, &r, xorshift, &state), 0);
    r.rp = NULL;
    ck_assert_int_eq(topology_select(&t, &r, xorshift, &state), -EAGAIN);
}
END_TEST

START_TEST(select_mongos_ignores_write_flag)
{
    struct topology t;
    mongos_servers(&t, 15, (const double[]){5, 5}, 2);
    struct select_request w = {.write = true, .exclude_idx = -1};
    int counts[TOPOLOGY_MAX_SERVERS];
    draw_many(&t, &w, 1000, counts);
    ck_assert_int_gt(counts[0], 0);
    ck_assert_int_gt(counts[1], 0);
}
END_TEST

START_TEST(selectable_by_mode)
{
    struct topology m, r;
    topology_init(&m, TOPOLOGY_MONGOS, 15);
    topology_init(&r, TOPOLOGY_REPLICASET, 15);
    struct server s;
    memset(&s, 0, sizeof(s));
    s.in_use = true;
    const struct {
        enum server_type type;
        bool in_mongos, in_rs;
    } cases[] = {
        {SERVER_UNKNOWN, false, false},     {SERVER_MONGOS, true, false},
        {SERVER_STANDALONE, false, false},  {SERVER_RS_PRIMARY, false, true},
        {SERVER_RS_SECONDARY, false, true}, {SERVER_RS_ARBITER, false, false},
        {SERVER_RS_OTHER, false, false},    {SERVER_RS_GHOST, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s.type = cases[i].type;
        ck_assert_msg(topology_is_selectable(&m, &s) == cases[i].in_mongos, "mongos mode, %s",
                      server_type_name(s.type));
        ck_assert_msg(topology_is_selectable(&r, &s) == cases[i].in_rs, "replica-set mode, %s",
                      server_type_name(s.type));
    }
    /* A free slot is never selectable, whatever stale type it holds. */
    s.in_use = false;
    s.type = SERVER_MONGOS;
    ck_assert(!topology_is_selectable(&m, &s));
    s.type = SERVER_RS_PRIMARY;
    ck_assert(!topology_is_selectable(&r, &s));
}
END_TEST

/* --- replica-set mode: read preferences and SDAM rules ------------------------------------------
 */

/* A primary, two secondaries tagged dc:east and dc:west, all known. */
static void replica_set(struct topology *t, int threshold)
{
    topology_init(t, TOPOLOGY_REPLICASET, threshold);
    t->heartbeat_ms = 10000;
    add_servers(t, 3);
    hello(t, 0, PRIMARY_HELLO, 10);
    hello(t, 1,
          "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"tags\": {\"dc\": \"east\"}}",
          10);
    hello(t, 2,
          "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"tags\": {\"dc\": \"west\"}}",
          10);
}

START_TEST(read_preference_modes)
{
    struct topology t;
    replica_set(&t, 15);
    int counts[TOPOLOGY_MAX_SERVERS];
    struct read_pref rp = {.mode = READ_PRIMARY, .max_staleness_s = -1};
    struct select_request r = {.write = false, .exclude_idx = -1, .rp = &rp};
    always_picks(&t, &r, 200, 0);

    rp.mode = READ_PRIMARY_PREFERRED;
    always_picks(&t, &r, 200, 0);

    rp.mode = READ_SECONDARY_PREFERRED;
    draw_many(&t, &r, 2000, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_gt(counts[1], 0);
    ck_assert_int_gt(counts[2], 0);

    rp.mode = READ_NEAREST;
    draw_many(&t, &r, 3000, counts);
    ck_assert_int_gt(counts[0], 0);
    ck_assert_int_gt(counts[1], 0);
    ck_assert_int_gt(counts[2], 0);

    /* Tag sets: the first set that matches anyone decides. */
    rp.mode = READ_SECONDARY;
    rp.n_sets = 2;
    rp.sets[0].n = 1;
    snprintf(rp.sets[0].tags[0].name, sizeof(rp.sets[0].tags[0].name), "dc");
    snprintf(rp.sets[0].tags[0].value, sizeof(rp.sets[0].tags[0].value), "north");
    rp.sets[1].n = 1;
    snprintf(rp.sets[1].tags[0].name, sizeof(rp.sets[1].tags[0].name), "dc");
    snprintf(rp.sets[1].tags[0].value, sizeof(rp.sets[1].tags[0].value), "west");
    always_picks(&t, &r, 200, 2);
    /* No set matches: secondary fails, secondaryPreferred falls back to the primary. */
    rp.n_sets = 1;
    uint32_t state = 3;
    ck_assert_int_eq(topology_select(&t, &r, xorshift, &state), -EAGAIN);
    rp.mode = READ_SECONDARY_PREFERRED;
    always_picks(&t, &r, 100, 0);

    /* Without secondaries, primaryPreferred and secondaryPreferred both use the primary, and
     * without a primary, primaryPreferred uses a secondary. */
    rp.n_sets = 0;
    topology_on_failure(&t, 1, "x", 1);
    topology_on_failure(&t, 2, "x", 1);
    always_picks(&t, &r, 100, 0);
    replica_set(&t, 15);
    topology_on_failure(&t, 0, "x", 1);
    rp.mode = READ_PRIMARY_PREFERRED;
    draw_many(&t, &r, 1000, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_eq(counts[1] + counts[2], 1000);
}
END_TEST

START_TEST(read_preference_max_staleness)
{
    struct topology t;
    replica_set(&t, 15);
    /* The primary wrote at 1000 and was checked at 1000; secondary 1 last applied a write at
     * 1000 - 200 s, secondary 2 is current. Staleness of 1 = 200 s + heartbeat 10 s. */
    t.servers[0].last_write_ms = 1000;
    t.servers[1].last_write_ms = 1000 - 200000;
    t.servers[2].last_write_ms = 1000;
    ck_assert_double_eq_tol(topology_staleness_ms(&t, 1), 210000.0, 1e-6);
    ck_assert_double_eq_tol(topology_staleness_ms(&t, 2), 10000.0, 1e-6);
    ck_assert_double_eq_tol(topology_staleness_ms(&t, 0), -1.0, 1e-9);
    struct read_pref rp = {.mode = READ_SECONDARY, .max_staleness_s = 120};
    struct select_request r = {.write = false, .exclude_idx = -1, .rp = &rp};
    int counts[TOPOLOGY_MAX_SERVERS];
    always_picks(&t, &r, 200, 2);
    rp.max_staleness_s = 300;
    draw_many(&t, &r, 1000, counts);
    ck_assert_int_gt(counts[1], 0);
    /* Without a primary, staleness is measured against the freshest secondary. */
    topology_on_failure(&t, 0, "x", 1);
    ck_assert_double_eq_tol(topology_staleness_ms(&t, 1), 210000.0, 1e-6);
}
END_TEST

START_TEST(read_preference_parse_validate)
{
    char e[200];
    struct read_pref rp;
    bson_t *d = doc("{\"mode\": \"secondaryPreferred\", \"tags\": [{\"dc\": \"east\", \"rack\": "
                    "\"1\"}, {}], \"maxStalenessSeconds\": 120}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 0);
    ck_assert_int_eq(rp.mode, READ_SECONDARY_PREFERRED);
    ck_assert_int_eq(rp.n_sets, 2);
    ck_assert_int_eq(rp.sets[0].n, 2);
    ck_assert_str_eq(rp.sets[0].tags[1].name, "rack");
    ck_assert_int_eq(rp.sets[1].n, 0);
    ck_assert_int_eq(rp.max_staleness_s, 120);
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 0);
    rp.max_staleness_s = 60; /* below the 90 s floor */
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 160);
    rp.max_staleness_s = 100; /* below heartbeat 95 s + 10 s */
    ck_assert_int_eq(read_pref_validate(&rp, 95000, e, sizeof(e)), 160);
    bson_destroy(d);

    d = doc("{\"mode\": \"primary\", \"tags\": [{\"dc\": \"east\"}]}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 0);
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 2);
    bson_destroy(d);
    d = doc("{\"mode\": \"primary\", \"tags\": [{}]}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 0);
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 0);
    ck_assert_int_eq(rp.max_staleness_s, -1);
    bson_destroy(d);
    d = doc("{\"mode\": \"primary\", \"maxStalenessSeconds\": 100}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 0);
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 160);
    bson_destroy(d);
    d = doc("{\"mode\": \"fastest\"}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 9);
    bson_destroy(d);
    d = doc("{\"tags\": []}");
    ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 9);
    bson_destroy(d);
    for (int m = READ_PRIMARY; m <= READ_NEAREST; m++) {
        char json[64];
        snprintf(json, sizeof(json), "{\"mode\": \"%s\"}", read_mode_name((enum read_mode)m));
        d = doc(json);
        ck_assert_int_eq(read_pref_parse(bson_get_data(d), d->len, &rp, e, sizeof(e)), 0);
        ck_assert_int_eq(rp.mode, m);
        bson_destroy(d);
    }
}
END_TEST

/* Parses the $readPreference that json describes; returns read_pref_parse's result. */
static int parse_rp(const char *json, struct read_pref *rp, char *err, size_t err_len)
{
    bson_t *d = doc(json);
    err[0] = 0;
    int code = read_pref_parse(bson_get_data(d), d->len, rp, err, err_len);
    bson_destroy(d);
    return code;
}

/* Builds {mode, tags: [...]} with n_sets sets of n_tags tags each ("k<j>": "v<j>"), then, when
 * trailing_empty, one more empty set. */
static int parse_generated(const char *mode, int n_sets, int n_tags, bool trailing_empty,
                           struct read_pref *rp, char *err, size_t err_len)
{
    bson_t *d = bson_new();
    bson_t arr, set;
    BSON_APPEND_UTF8(d, "mode", mode);
    BSON_APPEND_ARRAY_BEGIN(d, "tags", &arr);
    int k = 0;
    for (int i = 0; i < n_sets + trailing_empty; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", k++);
        BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &set);
        for (int j = 0; i < n_sets && j < n_tags; j++) {
            char name[16], value[16];
            snprintf(name, sizeof(name), "k%d", j);
            snprintf(value, sizeof(value), "v%d", i);
            BSON_APPEND_UTF8(&set, name, value);
        }
        bson_append_document_end(&arr, &set);
    }
    bson_append_array_end(d, &arr);
    err[0] = 0;
    int code = read_pref_parse(bson_get_data(d), d->len, rp, err, err_len);
    bson_destroy(d);
    return code;
}

START_TEST(read_preference_parse_refuses_what_it_cannot_keep)
{
    char e[200];
    struct read_pref rp;
    /* As many sets and tags as fit, with a trailing empty set: all kept, the empty one last. */
    ck_assert_int_eq(parse_generated("secondary", READ_PREF_MAX_SETS - 1, TOPOLOGY_MAX_TAGS, true,
                                     &rp, e, sizeof(e)),
                     0);
    ck_assert_int_eq(rp.n_sets, READ_PREF_MAX_SETS);
    ck_assert_int_eq(rp.sets[0].n, TOPOLOGY_MAX_TAGS);
    ck_assert_str_eq(rp.sets[READ_PREF_MAX_SETS - 2].tags[TOPOLOGY_MAX_TAGS - 1].name, "k15");
    ck_assert_int_eq(rp.sets[READ_PREF_MAX_SETS - 1].n, 0);
    /* One set too many: refused, even when the one that does not fit is the empty one. */
    ck_assert_int_eq(
        parse_generated("secondary", READ_PREF_MAX_SETS + 1, 1, false, &rp, e, sizeof(e)), 2);
    ck_assert_msg(strstr(e, "tag sets") != NULL, "%s", e);
    ck_assert_int_eq(parse_generated("nearest", READ_PREF_MAX_SETS, 1, true, &rp, e, sizeof(e)), 2);
    /* One tag too many in a set. */
    ck_assert_int_eq(
        parse_generated("secondary", 2, TOPOLOGY_MAX_TAGS + 1, true, &rp, e, sizeof(e)), 2);
    ck_assert_msg(strstr(e, "tags") != NULL, "%s", e);
    /* Sets after an empty one are never consulted by selection: checked, not kept, not counted. */
    ck_assert_int_eq(
        parse_rp("{\"mode\": \"secondary\", \"tags\": [{\"dc\": \"a\"}, {}, "
                 "{\"dc\": \"b\"}, {\"dc\": \"c\"}, {\"dc\": \"d\"}, {\"dc\": \"e\"}, "
                 "{\"dc\": \"f\"}, {\"dc\": \"g\"}, {\"dc\": \"h\"}, {\"dc\": \"i\"}]}",
                 &rp, e, sizeof(e)),
        0);
    ck_assert_int_eq(rp.n_sets, 2);
    ck_assert_int_eq(rp.sets[1].n, 0);
    ck_assert_int_eq(
        parse_rp("{\"mode\": \"secondary\", \"tags\": [{}, {\"dc\": 5}]}", &rp, e, sizeof(e)), 2);
    /* ... yet mode primary with a non-empty set is refused, as read_pref_validate would. */
    ck_assert_int_eq(
        parse_rp("{\"mode\": \"primary\", \"tags\": [{}, {\"dc\": \"b\"}]}", &rp, e, sizeof(e)), 2);
    ck_assert_int_eq(
        parse_rp("{\"tags\": [{}, {\"dc\": \"b\"}], \"mode\": \"primary\"}", &rp, e, sizeof(e)), 2);
    ck_assert_int_eq(parse_rp("{\"mode\": \"primary\", \"tags\": [{}, {}]}", &rp, e, sizeof(e)), 0);
    ck_assert_int_eq(read_pref_validate(&rp, 10000, e, sizeof(e)), 0);

    /* Names and values: 63 bytes fit, 64 do not. */
    char name63[64], name64[65], json[400];
    memset(name63, 'n', 63);
    name63[63] = 0;
    memset(name64, 'n', 64);
    name64[64] = 0;
    snprintf(json, sizeof(json), "{\"mode\": \"secondary\", \"tags\": [{\"%s\": \"%s\"}, {}]}",
             name63, name63);
    ck_assert_int_eq(parse_rp(json, &rp, e, sizeof(e)), 0);
    ck_assert_str_eq(rp.sets[0].tags[0].name, name63);
    ck_assert_str_eq(rp.sets[0].tags[0].value, name63);
    ck_assert_int_eq(rp.n_sets, 2);
    snprintf(json, sizeof(json), "{\"mode\": \"secondary\", \"tags\": [{\"%s\": \"x\"}, {}]}",
             name64);
    ck_assert_int_eq(parse_rp(json, &rp, e, sizeof(e)), 2);
    ck_assert_msg(strstr(e, "63 bytes") != NULL, "%s", e);
    snprintf(json, sizeof(json), "{\"mode\": \"secondary\", \"tags\": [{\"dc\": \"%s\"}, {}]}",
             name64);
    ck_assert_int_eq(parse_rp(json, &rp, e, sizeof(e)), 2);
    /* A value holding a NUL cannot be kept whole either. */
    ck_assert_int_eq(parse_rp("{\"mode\": \"secondary\", \"tags\": [{\"dc\": \"a\\u0000b\"}]}", &rp,
                              e, sizeof(e)),
                     2);

    /* A tag that is not a string is refused rather than skipped, which would widen the set. */
    ck_assert_int_eq(
        parse_rp("{\"mode\": \"secondary\", \"tags\": [{\"dc\": \"a\", \"rack\": 2}, {}]}", &rp, e,
                 sizeof(e)),
        2);
    ck_assert_msg(strstr(e, "rack") != NULL, "%s", e);
    /* Tags that are not an array: TypeMismatch, as a mongos answers. */
    ck_assert_int_eq(
        parse_rp("{\"mode\": \"secondary\", \"tags\": {\"dc\": \"a\"}}", &rp, e, sizeof(e)), 14);
    ck_assert_int_eq(parse_rp("{\"mode\": \"secondary\", \"tags\": [\"dc\"]}", &rp, e, sizeof(e)),
                     9);
}
END_TEST

START_TEST(replicaset_refuses_other_set_and_mongos)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    snprintf(t.set_name, sizeof(t.set_name), "rs");
    add_servers(&t, 3);
    int bits = hello(&t, 0, "{\"ok\": 1, \"setName\": \"other\", \"isWritablePrimary\": true}", 1);
    ck_assert(bits & TOPO_REFUSED);
    ck_assert_int_eq(t.servers[0].type, SERVER_UNKNOWN);
    ck_assert(t.servers[0].removed);
    ck_assert_str_ne(t.servers[0].last_error, "");
    bits = hello(&t, 1, MONGOS_HELLO, 1);
    ck_assert(bits & TOPO_REFUSED);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    bits = hello(&t, 2, PRIMARY_HELLO, 1);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(topology_primary(&t), 2);
}
END_TEST

/* SDAM's me rule: a secondary whose hello names another address is removed; a primary whose
 * does is kept (the specification's rs/secondary_mismatched_me and primary_mismatched_me_not_
 * removed); a matching me, in another letter case, changes nothing. */
START_TEST(replicaset_secondary_with_mismatched_me_is_removed)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    snprintf(t.set_name, sizeof(t.set_name), "rs");
    add_servers(&t, 3);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"me\": \"%s:%d\"}",
             "elsewhere.example", t.servers[1].port);
    int bits = hello(&t, 1, json, 1);
    ck_assert(bits & TOPO_REFUSED);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert(t.servers[1].removed);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert_msg(strstr(t.servers[1].last_error, "elsewhere.example") != NULL, "%s",
                  t.servers[1].last_error);
    /* The same name in capitals is the same member. */
    char upper[sizeof(t.servers[2].host)];
    snprintf(upper, sizeof(upper), "%s", t.servers[2].host);
    for (char *c = upper; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    snprintf(json, sizeof(json),
             "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"me\": \"%s:%d\"}", upper,
             t.servers[2].port);
    bits = hello(&t, 2, json, 1);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(t.servers[2].type, SERVER_RS_SECONDARY);
    ck_assert(!t.servers[2].removed);
    /* A primary with a mismatched me is kept. */
    snprintf(json, sizeof(json),
             "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"me\": "
             "\"elsewhere.example:1\"}");
    bits = hello(&t, 0, json, 1);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(topology_primary(&t), 0);
}
END_TEST

START_TEST(replicaset_primary_hosts_are_membership)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2); /* h0 and h1: seeds */
    int bits = hello(&t, 0,
                     "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
                     "[\"H0:27017\", \"h2:27017\"], \"arbiters\": [\"h3:27018\"]}",
                     1);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert(bits & TOPO_TYPE_CHANGED);
    ck_assert_int_eq(t.n, 4);
    ck_assert(!t.servers[0].removed); /* listed as H0: addresses compare case-insensitively */
    ck_assert(t.servers[1].removed);  /* a seed the primary does not list */
    ck_assert_str_eq(t.servers[2].host, "h2");
    ck_assert_str_eq(t.servers[3].host, "h3");
    ck_assert_int_eq(t.servers[3].port, 27018);
    ck_assert(!topology_is_selectable(&t, &t.servers[1]));
    /* The same list again changes nothing. */
    bits = hello(&t, 0,
                 "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
                 "[\"h0:27017\", \"h2:27017\"], \"arbiters\": [\"h3:27018\"]}",
                 1);
    ck_assert_int_eq(bits, 0);
}
END_TEST

START_TEST(replicaset_new_primary_demotes_old)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2);
    elected_primary(&t, 0, 1, "7fffffff0000000000000001", -1);
    ck_assert_int_eq(topology_primary(&t), 0);
    elected_primary(&t, 1, 1, "7fffffff0000000000000002", -1);
    ck_assert_int_eq(topology_primary(&t), 1);
    ck_assert_int_eq(t.servers[0].type, SERVER_UNKNOWN);
    /* The old primary's late reply is stale: refused. */
    int bits = elected_primary(&t, 0, 1, "7fffffff0000000000000001", -1);
    ck_assert(bits & TOPO_REFUSED);
    ck_assert_int_eq(topology_primary(&t), 1);
    ck_assert_int_eq(t.servers[0].type, SERVER_UNKNOWN);
}
END_TEST

/*
 * BUG (src/topology.c, apply_replset, the max_set_version update): SDAM for wire version 17+
 * compares (electionId, setVersion) as a pair and then sets maxElectionId AND maxSetVersion to the
 * new primary's values. The code only raises max_set_version, so after a primary with a newer
 * electionId but a lower setVersion is accepted, its own next heartbeat compares equal electionIds
 * and setVersion 1 < the kept max 2, and the legitimate primary is refused as stale. This is the
 * SDAM spec test rs/electionId_precedence_setVersion plus one more heartbeat.
 */
START_TEST(replicaset_election_id_precedes_set_version)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2);
    elected_primary(&t, 0, 2, "000000000000000000000001", 17);
    int bits = elected_primary(&t, 1, 1, "000000000000000000000002", 17);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(topology_primary(&t), 1);
    /* The new primary's next heartbeat, identical, must not be refused. */
    bits = elected_primary(&t, 1, 1, "000000000000000000000002", 17);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(topology_primary(&t), 1);
    ck_assert_int_eq(t.max_set_version, 1); /* the spec's expected maxSetVersion */
}
END_TEST

/* --- slots: release, reuse and overflow --------------------------------------------------- */

/* Builds the hello of primary "h<primary>" listing hosts h<first> to h<last> (port 27017) and,
 * when extra >= 0, also h<extra>. The caller frees the reply. */
static bson_t *primary_listing(int primary, int first, int last, int extra)
{
    bson_t *b = bson_new();
    bson_t arr;
    BSON_APPEND_INT32(b, "ok", 1);
    BSON_APPEND_UTF8(b, "setName", "rs");
    BSON_APPEND_BOOL(b, "isWritablePrimary", true);
    char me[32];
    snprintf(me, sizeof(me), "h%d:27017", primary);
    BSON_APPEND_UTF8(b, "me", me);
    BSON_APPEND_ARRAY_BEGIN(b, "hosts", &arr);
    int k = 0;
    for (int i = first; i <= last; i++) {
        char key[16], host[32];
        snprintf(key, sizeof(key), "%d", k++);
        snprintf(host, sizeof(host), "h%d:27017", i);
        BSON_APPEND_UTF8(&arr, key, host);
    }
    if (extra >= 0) {
        char key[16], host[32];
        snprintf(key, sizeof(key), "%d", k++);
        snprintf(host, sizeof(host), "h%d:27017", extra);
        BSON_APPEND_UTF8(&arr, key, host);
    }
    bson_append_array_end(b, &arr);
    return b;
}

/* The index of the server in use at "host:27017", or -1. */
static int slot_of(const struct topology *t, const char *host)
{
    for (int i = 0; i < t->n; i++)
        if (t->servers[i].in_use && strcmp(t->servers[i].host, host) == 0)
            return i;
    return -1;
}

/* How many slots hold a server. */
static int slots_in_use(const struct topology *t)
{
    int n = 0;
    for (int i = 0; i < t->n; i++)
        n += t->servers[i].in_use;
    return n;
}

START_TEST(release_needs_a_removed_server)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2);
    ck_assert(t.servers[0].in_use && t.servers[1].in_use);
    ck_assert_int_eq(topology_release(&t, 1), -EBUSY); /* still a member */
    ck_assert_int_eq(topology_release(&t, 2), -EINVAL);
    ck_assert_int_eq(topology_release(&t, -1), -EINVAL);
    /* The primary leaves h1 out: removed, and only then releasable. */
    hello(&t, 0,
          "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
          "[\"h0:27017\"]}",
          1);
    ck_assert(t.servers[1].removed);
    t.servers[1].generation = 7;
    uint64_t v = t.version;
    ck_assert_int_eq(topology_release(&t, 1), 0);
    ck_assert(!t.servers[1].in_use);
    ck_assert(t.servers[1].removed); /* code that only checks removed skips it too */
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert_str_eq(t.servers[1].addr, "");
    ck_assert_uint_eq(t.servers[1].generation, 8);
    ck_assert_uint_gt(t.version, v);
    ck_assert_int_eq(topology_release(&t, 1), -EINVAL); /* already free */
    /* A late reply or failure for the free slot changes nothing. */
    ck_assert_int_eq(hello(&t, 1, SECONDARY_HELLO, 1), 0);
    ck_assert_int_eq(topology_on_failure(&t, 1, "late", 5), 0);
    topology_mark_unknown(&t, 1, true, "late");
    ck_assert(!t.servers[1].in_use);
    ck_assert_uint_eq(t.servers[1].generation, 8);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    /* Once the never-used slots are gone, a new server takes the free slot, with a generation
     * that kept counting. */
    add_servers_from(&t, 2, TOPOLOGY_MAX_SERVERS);
    ck_assert(!t.servers[1].in_use);
    ck_assert_int_eq(topology_add(&t, "fresh", 27017), 1);
    ck_assert(t.servers[1].in_use && !t.servers[1].removed);
    ck_assert_str_eq(t.servers[1].addr, "fresh:27017");
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert(!t.servers[1].rtt_known);
    ck_assert_uint_eq(t.servers[1].generation, 8);
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
}
END_TEST

START_TEST(release_refused_when_listed_again)
{
    /* A removed member that a hello lists again before its slot is released stays a member. */
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2);
    hello(&t, 0,
          "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
          "[\"h0:27017\"]}",
          1);
    ck_assert(t.servers[1].removed);
    int bits = hello(&t, 0,
                     "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, "
                     "\"hosts\": [\"h0:27017\", \"h1:27017\"]}",
                     1);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert_int_eq(t.n, 2); /* the same slot, not a second one */
    ck_assert(!t.servers[1].removed);
    ck_assert_int_eq(topology_release(&t, 1), -EBUSY);
    ck_assert(t.servers[1].in_use);
}
END_TEST

START_TEST(add_prefers_unused_then_lowest_released_slot)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 4);
    for (int i = 1; i <= 2; i++)
        t.servers[i].removed = true;
    ck_assert_int_eq(topology_release(&t, 2), 0);
    ck_assert_int_eq(topology_release(&t, 1), 0);
    /* Never-used slots first: a released slot stays empty as long as possible. */
    ck_assert_int_eq(topology_add(&t, "new-a", 27017), 4);
    add_servers_from(&t, 5, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(topology_add(&t, "new-b", 27017), 1);
    ck_assert_int_eq(topology_add(&t, "new-c", 27017), 2);
    ck_assert_int_eq(topology_add(&t, "new-d", 27017), -ENOSPC);
    /* An address is found again only while its server holds a slot. */
    ck_assert_int_eq(topology_add(&t, "NEW-B", 27017), 1);
    ck_assert_int_eq(slots_in_use(&t), TOPOLOGY_MAX_SERVERS);
}
END_TEST

START_TEST(churn_reuses_slots_and_generations_grow)
{
    /* Pod IPs change: every round the primary lists one new member in place of the last one,
     * which the coordinator then releases. Far more hosts pass through than there are slots. */
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    snprintf(t.set_name, sizeof(t.set_name), "rs");
    add_servers(&t, 1);
    uint64_t last_gen[TOPOLOGY_MAX_SERVERS] = {0};
    bool seen[TOPOLOGY_MAX_SERVERS] = {false};
    int reused = 0;
    const int rounds = 5 * TOPOLOGY_MAX_SERVERS;
    for (int r = 1; r <= rounds; r++) {
        bson_t *b = primary_listing(0, 0, 0, r);
        int bits = topology_on_hello(&t, 0, b, 1, 1000 + r);
        bson_destroy(b);
        ck_assert(bits & TOPO_MEMBERS_CHANGED);
        ck_assert(!(bits & TOPO_OVERFLOW));
        char host[16];
        snprintf(host, sizeof(host), "h%d", r);
        int idx = slot_of(&t, host);
        ck_assert_int_ge(idx, 1);
        /* The slot's generation never goes back, whoever held it before. */
        if (seen[idx]) {
            ck_assert_uint_gt(t.servers[idx].generation, last_gen[idx]);
            reused++;
        }
        seen[idx] = true;
        /* A pool connection of this occupant would carry this generation. */
        last_gen[idx] = t.servers[idx].generation;
        /* The member's own hello; it may serve reads until it leaves. */
        hello(&t, idx, SECONDARY_HELLO, 1);
        ck_assert_int_eq(t.servers[idx].type, SERVER_RS_SECONDARY);
        /* The previous round's member left the list: released once torn down. */
        if (r > 1) {
            snprintf(host, sizeof(host), "h%d", r - 1);
            int old = slot_of(&t, host);
            ck_assert_int_ge(old, 0);
            ck_assert(t.servers[old].removed);
            ck_assert_int_eq(topology_release(&t, old), 0);
        }
        ck_assert_int_le(slots_in_use(&t), 3);
    }
    /* Every slot but the primary's served several hosts in turn. */
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_ge(reused, rounds - TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(topology_primary(&t), 0);
    char last[16];
    snprintf(last, sizeof(last), "h%d", rounds);
    ck_assert_int_ge(slot_of(&t, last), 0);
    ck_assert_str_eq(t.overflow_msg, "");
}
END_TEST

START_TEST(hello_with_too_many_hosts_overflows_loudly)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    snprintf(t.set_name, sizeof(t.set_name), "rs");
    add_servers(&t, 1);
    /* 70 members, h0 to h69: 64 fit, 6 are left out and named. */
    bson_t *b = primary_listing(0, 0, 69, -1);
    int bits = topology_on_hello(&t, 0, b, 1, 1000);
    bson_destroy(b);
    ck_assert(bits & TOPO_OVERFLOW);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert_int_eq(t.n, TOPOLOGY_MAX_SERVERS);
    ck_assert_int_eq(slots_in_use(&t), TOPOLOGY_MAX_SERVERS);
    for (int i = 0; i < TOPOLOGY_MAX_SERVERS; i++)
        ck_assert(!t.servers[i].removed);
    ck_assert_int_eq(t.overflow_hosts, 6);
    ck_assert_msg(strstr(t.overflow_msg, "6 members") != NULL, "%s", t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "h0:27017") != NULL, "%s", t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "h64:27017, h65:27017") != NULL, "%s", t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "64 server slots") != NULL, "%s", t.overflow_msg);
    ck_assert_int_eq(slot_of(&t, "h64"), -1);

    /* h60 to h63 leave the set (the list is h0 to h59 and h64 to h69): removed, but their slots
     * stay taken until released, so the six still wait and are reported again. */
    bson_t *mixed = bson_new();
    {
        bson_t hosts;
        BSON_APPEND_INT32(mixed, "ok", 1);
        BSON_APPEND_UTF8(mixed, "setName", "rs");
        BSON_APPEND_BOOL(mixed, "isWritablePrimary", true);
        BSON_APPEND_ARRAY_BEGIN(mixed, "hosts", &hosts);
        int k = 0;
        for (int i = 0; i < 70; i++) {
            if (i >= 60 && i <= 63)
                continue;
            char key[16], host[32];
            snprintf(key, sizeof(key), "%d", k++);
            snprintf(host, sizeof(host), "h%d:27017", i);
            BSON_APPEND_UTF8(&hosts, key, host);
        }
        bson_append_array_end(mixed, &hosts);
    }
    bits = topology_on_hello(&t, 0, mixed, 1, 2000);
    ck_assert(bits & TOPO_OVERFLOW);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert_int_eq(t.overflow_hosts, 6);
    for (int i = 60; i <= 63; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        int idx = slot_of(&t, host);
        ck_assert_int_ge(idx, 0);
        ck_assert(t.servers[idx].removed);
        ck_assert(!topology_is_selectable(&t, &t.servers[idx]));
        ck_assert_int_eq(topology_release(&t, idx), 0);
    }
    /* The next hello finds four free slots: four more members, two still left out. */
    bits = topology_on_hello(&t, 0, mixed, 1, 3000);
    bson_destroy(mixed);
    ck_assert(bits & TOPO_OVERFLOW);
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert_int_eq(t.overflow_hosts, 2);
    ck_assert_int_eq(slots_in_use(&t), TOPOLOGY_MAX_SERVERS);
    for (int i = 64; i <= 67; i++) {
        char host[16];
        snprintf(host, sizeof(host), "h%d", i);
        ck_assert_int_ge(slot_of(&t, host), 0);
    }
    ck_assert_msg(strstr(t.overflow_msg, "2 members") != NULL, "%s", t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "h68:27017, h69:27017") != NULL, "%s", t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "more") == NULL, "%s", t.overflow_msg);

    /* A list that fits clears the report. */
    b = primary_listing(0, 0, 9, -1);
    bits = topology_on_hello(&t, 0, b, 1, 4000);
    bson_destroy(b);
    ck_assert(!(bits & TOPO_OVERFLOW));
    ck_assert_int_eq(t.overflow_hosts, 0);
    ck_assert_str_eq(t.overflow_msg, "");
}
END_TEST

START_TEST(overflow_message_names_a_few_and_counts_the_rest)
{
    /* Without a primary, a secondary's list only adds; long names are not all spelled out. */
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, TOPOLOGY_MAX_SERVERS);
    bson_t *b = bson_new();
    bson_t hosts;
    BSON_APPEND_INT32(b, "ok", 1);
    BSON_APPEND_UTF8(b, "setName", "rs");
    BSON_APPEND_BOOL(b, "secondary", true);
    BSON_APPEND_ARRAY_BEGIN(b, "hosts", &hosts);
    for (int i = 0; i < 40; i++) {
        char key[16], host[128];
        snprintf(key, sizeof(key), "%d", i);
        snprintf(host, sizeof(host),
                 "a-rather-long-pod-name-%02d.mongo.example.svc.cluster.local:27017", i);
        BSON_APPEND_UTF8(&hosts, key, host);
    }
    bson_append_array_end(b, &hosts);
    int bits = topology_on_hello(&t, 3, b, 1, 1000);
    bson_destroy(b);
    ck_assert(bits & TOPO_OVERFLOW);
    ck_assert_int_eq(t.overflow_hosts, 40);
    ck_assert_msg(strstr(t.overflow_msg, "40 members listed by h3:27017") != NULL, "%s",
                  t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, "a-rather-long-pod-name-00.") != NULL, "%s",
                  t.overflow_msg);
    ck_assert_msg(strstr(t.overflow_msg, " more") != NULL, "%s", t.overflow_msg);
    ck_assert_int_lt(strlen(t.overflow_msg), sizeof(t.overflow_msg) - 1);
}
END_TEST

START_TEST(released_slots_never_selected)
{
    struct topology t;
    replica_set(&t, 1000);
    /* h2 (a secondary, tagged dc:west) leaves the set and is released. */
    hello(&t, 0,
          "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
          "[\"h0:27017\", \"h1:27017\"]}",
          1);
    ck_assert_int_eq(topology_release(&t, 2), 0);
    struct read_pref rp = {.mode = READ_NEAREST, .max_staleness_s = -1};
    struct select_request r = {.write = false, .exclude_idx = -1, .rp = &rp};
    int counts[TOPOLOGY_MAX_SERVERS];
    draw_many(&t, &r, 1000, counts);
    ck_assert_int_eq(counts[2], 0);
    ck_assert_int_gt(counts[0], 0);
    ck_assert_int_gt(counts[1], 0);
    /* Even as the one excluded server's only alternative, or by a tag only it had. */
    rp.mode = READ_SECONDARY;
    r.exclude_idx = 1;
    always_picks(&t, &r, 100, 1);
    r.exclude_idx = -1;
    rp.n_sets = 1;
    rp.sets[0].n = 1;
    snprintf(rp.sets[0].tags[0].name, sizeof(rp.sets[0].tags[0].name), "dc");
    snprintf(rp.sets[0].tags[0].value, sizeof(rp.sets[0].tags[0].value), "west");
    uint32_t state = 5;
    ck_assert_int_eq(topology_select(&t, &r, xorshift, &state), -EAGAIN);
    /* Stale fields left in the free slot would not count either. */
    t.servers[2].type = SERVER_RS_PRIMARY;
    t.servers[2].removed = false;
    t.servers[2].rtt_known = true;
    t.servers[2].max_wire = 1;
    ck_assert_int_eq(topology_primary(&t), 0);
    struct topology_limits l;
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_ne(l.max_wire, 1);
    struct select_request w = {.write = true, .exclude_idx = -1};
    always_picks(&t, &w, 100, 0);
    /* The primary's list no longer counts a free slot as a member to remove. */
    int bits = hello(&t, 0,
                     "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"hosts\": "
                     "[\"h0:27017\", \"h1:27017\"]}",
                     1);
    ck_assert_int_eq(bits & TOPO_MEMBERS_CHANGED, 0);
}
END_TEST

START_TEST(mark_unknown_keeps_pool_unless_asked)
{
    struct topology t;
    replica_set(&t, 15);
    uint64_t gen = t.servers[0].generation;
    topology_mark_unknown(&t, 0, false, "not writable primary");
    ck_assert_int_eq(t.servers[0].type, SERVER_UNKNOWN);
    ck_assert_uint_eq(t.servers[0].generation, gen);
    ck_assert_str_eq(t.servers[0].last_error, "not writable primary");
    ck_assert_int_eq(topology_primary(&t), -1);
    topology_mark_unknown(&t, 1, true, "node is shutting down");
    ck_assert_uint_eq(t.servers[1].generation, 1);
}
END_TEST

/* --- limits ------------------------------------------------------------------------------ */

START_TEST(limits_most_conservative)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, 3);
    struct topology_limits l;
    ck_assert(!topology_limits(&t, &l));
    hello(&t, 0,
          "{\"ok\": 1, \"msg\": \"isdbgrid\", \"minWireVersion\": 0, \"maxWireVersion\": 21, "
          "\"maxBsonObjectSize\": 16777216, \"maxMessageSizeBytes\": 48000000, "
          "\"maxWriteBatchSize\": 100000, \"logicalSessionTimeoutMinutes\": 30}",
          1);
    hello(&t, 1,
          "{\"ok\": 1, \"msg\": \"isdbgrid\", \"minWireVersion\": 6, \"maxWireVersion\": 17, "
          "\"maxBsonObjectSize\": 1000000, \"maxMessageSizeBytes\": 5000000, "
          "\"maxWriteBatchSize\": 1000, \"logicalSessionTimeoutMinutes\": 20}",
          1);
    /* An unknown server's values do not count. */
    t.servers[2].max_wire = 3;
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.min_wire, 6);
    ck_assert_int_eq(l.max_wire, 17);
    ck_assert_int_eq(l.max_bson, 1000000);
    ck_assert_int_eq(l.max_msg, 5000000);
    ck_assert_int_eq(l.max_batch, 1000);
    ck_assert_int_eq(l.session_timeout_min, 20);

    /* One selectable server without a session timeout: mongolb reports none. */
    hello(&t, 2, "{\"ok\": 1, \"msg\": \"isdbgrid\", \"maxWireVersion\": 21}", 1);
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.session_timeout_min, -1);
    ck_assert_int_eq(l.max_wire, 17);
    /* Whichever order the servers come in. */
    topology_on_failure(&t, 0, "x", 1);
    topology_on_failure(&t, 1, "x", 1);
    hello(&t, 0, "{\"ok\": 1, \"msg\": \"isdbgrid\", \"logicalSessionTimeoutMinutes\": 30}", 1);
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.session_timeout_min, -1);
    topology_on_failure(&t, 2, "x", 1);
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.session_timeout_min, 30);
}
END_TEST

START_TEST(limits_replicaset_skip_arbiters)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 3);
    hello(&t, 0,
          "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"maxWireVersion\": 21, "
          "\"logicalSessionTimeoutMinutes\": 30}",
          1);
    hello(&t, 1,
          "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"maxWireVersion\": 20, "
          "\"logicalSessionTimeoutMinutes\": 25}",
          1);
    /* An arbiter holds no data and has no sessions: it does not lower the limits. */
    hello(&t, 2, "{\"ok\": 1, \"setName\": \"rs\", \"arbiterOnly\": true, \"maxWireVersion\": 17}",
          1);
    struct topology_limits l;
    ck_assert_int_eq(t.servers[2].type, SERVER_RS_ARBITER);
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.max_wire, 20);
    ck_assert_int_eq(l.session_timeout_min, 25);
}
END_TEST

/* --- the minimum backend version --------------------------------------------------------- */

#define TOO_OLD_12 "wire version 12 is older than mongolb's minimum 13 (MongoDB 5.0)"

START_TEST(wire_floor_is_mongodb_5_0)
{
    ck_assert_int_eq(TOPOLOGY_MIN_WIRE_VERSION, 13);
    ck_assert_str_eq(TOPOLOGY_MIN_MONGODB, "5.0");
    char why[160] = "";
    ck_assert(topology_wire_supported(13, why, sizeof(why)));
    ck_assert(topology_wire_supported(21, why, sizeof(why)));
    ck_assert_str_eq(why, "");
    ck_assert(!topology_wire_supported(12, why, sizeof(why)));
    ck_assert_str_eq(why, TOO_OLD_12);
    ck_assert(!topology_wire_supported(0, why, sizeof(why)));
    ck_assert_str_eq(why, "wire version 0 is older than mongolb's minimum 13 (MongoDB 5.0)");
}
END_TEST

/* A mongos older than the minimum is refused with its reason, never selected, does not lower
 * mongolb's own limits, is reported once however many heartbeats say the same, and is taken as
 * soon as it reports a supported version. */
START_TEST(wire_floor_refuses_an_old_mongos)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 1000);
    add_servers(&t, 2);
    hello(&t, 0, "{\"ok\": 1, \"msg\": \"isdbgrid\", \"maxWireVersion\": 21}", 1);
    const char *old = "{\"ok\": 1, \"msg\": \"isdbgrid\", \"minWireVersion\": 0, "
                      "\"maxWireVersion\": 12, \"maxBsonObjectSize\": 1000}";
    int bits = hello(&t, 1, old, 1);
    ck_assert_int_eq(bits, TOPO_REFUSED);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert_str_eq(t.servers[1].last_error, TOO_OLD_12);
    ck_assert(!topology_is_selectable(&t, &t.servers[1]));
    struct select_request req = {.write = false, .exclude_idx = -1};
    always_picks(&t, &req, 200, 0);
    /* Even when it is the one a retry should avoid, the old server is not a fallback. */
    req.exclude_idx = 0;
    always_picks(&t, &req, 50, 0);
    struct topology_limits l;
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.max_wire, 21);
    ck_assert_int_eq(l.max_bson, 16777216);

    /* The next heartbeats say the same: still refused, not reported again. */
    ck_assert_int_eq(hello(&t, 1, old, 1), 0);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert_str_eq(t.servers[1].last_error, TOO_OLD_12);
    /* A failed check in between does not make the same refusal news. */
    topology_on_failure(&t, 1, "connection refused", 2000);
    ck_assert_int_eq(hello(&t, 1, old, 1), 0);
    ck_assert_str_eq(t.servers[1].last_error, TOO_OLD_12);

    /* Upgraded to exactly the minimum: accepted. */
    bits = hello(&t, 1, "{\"ok\": 1, \"msg\": \"isdbgrid\", \"maxWireVersion\": 13}", 1);
    ck_assert_int_eq(bits, TOPO_TYPE_CHANGED);
    ck_assert_int_eq(t.servers[1].type, SERVER_MONGOS);
    ck_assert_str_eq(t.servers[1].last_error, "");
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.max_wire, 13);
    req.exclude_idx = 0;
    always_picks(&t, &req, 50, 1);

    /* Downgraded again: a new refusal, reported, and the type change with it. */
    bits = hello(&t, 1, "{\"ok\": 1, \"msg\": \"isdbgrid\", \"maxWireVersion\": 9}", 1);
    ck_assert_int_eq(bits, TOPO_REFUSED | TOPO_TYPE_CHANGED);
    ck_assert_str_eq(t.servers[1].last_error,
                     "wire version 9 is older than mongolb's minimum 13 (MongoDB 5.0)");
    ck_assert(topology_limits(&t, &l));
    ck_assert_int_eq(l.max_wire, 21);
}
END_TEST

/* A reply without maxWireVersion (no MongoDB server since 2.6 sends one) is not judged by it. */
START_TEST(wire_floor_needs_a_reported_version)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, 1);
    ck_assert_int_eq(hello(&t, 0, MONGOS_HELLO, 1), TOPO_TYPE_CHANGED);
    ck_assert_int_eq(t.servers[0].type, SERVER_MONGOS);
    ck_assert_int_eq(t.servers[0].max_wire, 0);
}
END_TEST

/* In replica-set mode an old member is refused as a whole: an old primary neither becomes the
 * primary nor adds the members it lists nor records its (electionId, setVersion). */
START_TEST(wire_floor_refuses_an_old_primary_as_a_whole)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    snprintf(t.set_name, sizeof(t.set_name), "rs");
    add_servers(&t, 1);
    int bits = hello(&t, 0,
                     "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, "
                     "\"hosts\": [\"h0:27017\", \"h1:27017\"], \"setVersion\": 1, "
                     "\"electionId\": {\"$oid\": \"000000000000000000000001\"}, "
                     "\"maxWireVersion\": 9}",
                     1);
    ck_assert_int_eq(bits, TOPO_REFUSED);
    ck_assert_int_eq(t.n, 1);
    ck_assert_int_eq(topology_primary(&t), -1);
    ck_assert(!t.has_max_election_id);
    ck_assert(!t.has_max_set_version);
    ck_assert(!t.servers[0].removed); /* still a member: it is checked again, and may upgrade */
    ck_assert_str_eq(t.servers[0].last_error,
                     "wire version 9 is older than mongolb's minimum 13 (MongoDB 5.0)");
    /* The same primary at 5.0 is accepted and its list is the membership. */
    bits = hello(&t, 0,
                 "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, "
                 "\"hosts\": [\"h0:27017\", \"h1:27017\"], \"setVersion\": 1, "
                 "\"electionId\": {\"$oid\": \"000000000000000000000001\"}, "
                 "\"maxWireVersion\": 13}",
                 1);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert(bits & TOPO_MEMBERS_CHANGED);
    ck_assert_int_eq(t.n, 2);
    ck_assert_int_eq(topology_primary(&t), 0);
    /* A secondary it lists that is too old stays a member, unknown, never read from. */
    bits = hello(&t, 1,
                 "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, "
                 "\"hosts\": [\"h0:27017\", \"h1:27017\"], \"maxWireVersion\": 12}",
                 1);
    ck_assert_int_eq(bits, TOPO_REFUSED);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    ck_assert(!t.servers[1].removed);
    struct read_pref rp = {.mode = READ_SECONDARY_PREFERRED, .max_staleness_s = -1};
    struct select_request req = {.write = false, .exclude_idx = -1, .rp = &rp};
    always_picks(&t, &req, 50, 0);
}
END_TEST

/* Before wire version 17 (MongoDB 5.x, which mongolb accepts) SDAM compares setVersion first:
 * a primary with a newer electionId but a lower setVersion is the stale one, the opposite of
 * replicaset_election_id_precedes_set_version. */
START_TEST(replicaset_pre_6_0_set_version_precedes_election_id)
{
    struct topology t;
    topology_init(&t, TOPOLOGY_REPLICASET, 15);
    add_servers(&t, 2);
    elected_primary(&t, 0, 2, "000000000000000000000001", 16);
    int bits = elected_primary(&t, 1, 1, "000000000000000000000002", 16);
    ck_assert(bits & TOPO_REFUSED);
    ck_assert_int_eq(topology_primary(&t), 0);
    ck_assert_str_eq(t.servers[1].last_error,
                     "h1:27017 claims to be primary with an older setVersion or electionId");
    ck_assert_int_eq(t.max_set_version, 2);
    /* The same pair at wire version 17 is the newer primary. */
    bits = elected_primary(&t, 1, 1, "000000000000000000000002", 17);
    ck_assert(!(bits & TOPO_REFUSED));
    ck_assert_int_eq(topology_primary(&t), 1);
    ck_assert_int_eq(t.max_set_version, 1);
}
END_TEST

Suite *topology_suite(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, classify_sdam_table);
    tcase_add_test(tc, type_names);
    tcase_add_test(tc, add_dedups_case_insensitively);
    tcase_add_test(tc, add_full_is_enospc);
    tcase_add_test(tc, hello_reports_type_change);
    tcase_add_test(tc, rtt_seed_then_ewma);
    tcase_add_test(tc, failure_clears_rtt_and_bumps_generation);
    tcase_add_test(tc, hello_reads_limits_tags_last_write);
    tcase_add_test(tc, select_latency_window);
    tcase_add_test(tc, select_fastest_alone_in_window);
    tcase_add_test(tc, select_fewer_in_flight_wins);
    tcase_add_test(tc, select_never_unknown);
    tcase_add_test(tc, select_exclude);
    tcase_add_test(tc, select_exclude_widens_window);
    tcase_add_test(tc, select_replicaset_writes_primary_only);
    tcase_add_test(tc, select_mongos_ignores_write_flag);
    tcase_add_test(tc, selectable_by_mode);
    tcase_add_test(tc, read_preference_modes);
    tcase_add_test(tc, read_preference_max_staleness);
    tcase_add_test(tc, read_preference_parse_validate);
    tcase_add_test(tc, read_preference_parse_refuses_what_it_cannot_keep);
    tcase_add_test(tc, replicaset_refuses_other_set_and_mongos);
    tcase_add_test(tc, replicaset_secondary_with_mismatched_me_is_removed);
    tcase_add_test(tc, replicaset_primary_hosts_are_membership);
    tcase_add_test(tc, replicaset_new_primary_demotes_old);
    tcase_add_test(tc, replicaset_election_id_precedes_set_version);
    tcase_add_test(tc, release_needs_a_removed_server);
    tcase_add_test(tc, release_refused_when_listed_again);
    tcase_add_test(tc, add_prefers_unused_then_lowest_released_slot);
    tcase_add_test(tc, churn_reuses_slots_and_generations_grow);
    tcase_add_test(tc, hello_with_too_many_hosts_overflows_loudly);
    tcase_add_test(tc, overflow_message_names_a_few_and_counts_the_rest);
    tcase_add_test(tc, released_slots_never_selected);
    tcase_add_test(tc, mark_unknown_keeps_pool_unless_asked);
    tcase_add_test(tc, limits_most_conservative);
    tcase_add_test(tc, limits_replicaset_skip_arbiters);
    tcase_add_test(tc, wire_floor_is_mongodb_5_0);
    tcase_add_test(tc, wire_floor_refuses_an_old_mongos);
    tcase_add_test(tc, wire_floor_needs_a_reported_version);
    tcase_add_test(tc, wire_floor_refuses_an_old_primary_as_a_whole);
    tcase_add_test(tc, replicaset_pre_6_0_set_version_precedes_election_id);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(topology_suite)
