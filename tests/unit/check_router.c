/*
 * check_router.c: the routing decision without I/O. Mongos mode: selection within the latency
 * window. Replica-set mode: writes to the primary, reads by $readPreference, a bare
 * {mode: "primary"} counting as none, the configured default (and add_read_pref only for a
 * secondary and an OP_MSG), invalid read preferences as errors, waiting when nothing is suitable.
 * Transactions: a usable pin decides, an unknown pinned mongos is still tried on the first attempt,
 * a lost pin is NoSuchTransaction except for commit/abort, which fall through to selection. A
 * retry's excluded server is avoided unless it is the only one.
 */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mongo_errors.h"

#include "check_main.h"

#define MONGOS_HELLO  "{\"ok\": 1, \"msg\": \"isdbgrid\", \"isWritablePrimary\": true}"
#define PRIMARY_HELLO "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true}"
#define SECONDARY_EAST                                                                             \
    "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"tags\": {\"dc\": \"east\"}}"
#define SECONDARY_WEST                                                                             \
    "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true, \"tags\": {\"dc\": \"west\"}}"
#define STEPPED_DOWN "{\"ok\": 1, \"setName\": \"rs\", \"secondary\": true}"

#define LSID                                                                                       \
    "\"lsid\": {\"id\": {\"$binary\": {\"base64\": \"AAECAwQFBgcICQoLDA0ODw==\", \"subType\": "    \
    "\"04\"}}}"
#define TXN_N "\"txnNumber\": {\"$numberLong\": \"7\"}"

/* Parses relaxed extended JSON into a new document; the test fails if it does not parse. */
static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "bad JSON in test: %s (%s)", json, e.message);
    return b;
}

/* Feeds server idx a hello reply described by json with round trip rtt. */
static void hello(struct topology *t, int idx, const char *json, double rtt)
{
    bson_t *b = doc(json);
    topology_on_hello(t, idx, b, rtt, 1000);
    bson_destroy(b);
}

/* Adds n servers named r0, r1, ..., asserting that they get indexes 0 to n - 1. */
static void add_servers(struct topology *t, int n)
{
    for (int i = 0; i < n; i++) {
        char host[16];
        snprintf(host, sizeof(host), "r%d", i);
        ck_assert_int_eq(topology_add(t, host, 27017), i);
    }
}

/* Three mongoses with the given round trips. */
static void mongoses(struct topology *t, int threshold, double r0, double r1, double r2)
{
    topology_init(t, TOPOLOGY_MONGOS, threshold);
    add_servers(t, 3);
    hello(t, 0, MONGOS_HELLO, r0);
    hello(t, 1, MONGOS_HELLO, r1);
    hello(t, 2, MONGOS_HELLO, r2);
}

/* A primary (0) and secondaries tagged dc:east (1) and dc:west (2), all equally near. */
static void replica_set(struct topology *t)
{
    topology_init(t, TOPOLOGY_REPLICASET, 15);
    t->heartbeat_ms = 10000;
    add_servers(t, 3);
    hello(t, 0, PRIMARY_HELLO, 10);
    hello(t, 1, SECONDARY_EAST, 10);
    hello(t, 2, SECONDARY_WEST, 10);
    ck_assert_int_eq(t->servers[0].type, SERVER_RS_PRIMARY);
    ck_assert_int_eq(t->servers[1].type, SERVER_RS_SECONDARY);
    ck_assert_int_eq(t->servers[2].type, SERVER_RS_SECONDARY);
}

/* A deterministic generator (xorshift32); the state must not start at zero. */
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

/* A classified request and the frame its pointers refer into. */
struct req {
    struct wire_buf frame;
    struct request_info ri;
};

/* Builds an OP_MSG with the body json and classifies it. */
static void req_msg(struct req *r, const char *json)
{
    memset(r, 0, sizeof(*r));
    bson_t *body = doc(json);
    ck_assert_int_eq(wire_append_msg(&r->frame, 11, 0, 0, body), 0);
    bson_destroy(body);
    char err[256] = "";
    ck_assert_msg(request_classify(r->frame.data, r->frame.len, &r->ri, err, sizeof(err)) == 0,
                  "classify %s: %s", json, err);
    ck_assert_int_eq(r->ri.kind, REQ_FORWARD);
}

/* Builds a legacy OP_QUERY command on db.$cmd with the query json and classifies it. */
static void req_query(struct req *r, const char *json)
{
    memset(r, 0, sizeof(*r));
    bson_t *q = doc(json);
    ck_assert_int_eq(wire_append_query(&r->frame, 12, 0, "test.$cmd", 0, -1, q), 0);
    bson_destroy(q);
    char err[256] = "";
    ck_assert_msg(request_classify(r->frame.data, r->frame.len, &r->ri, err, sizeof(err)) == 0,
                  "classify %s: %s", json, err);
    ck_assert_int_eq(r->ri.opcode, WIRE_OP_QUERY);
}

static void req_free(struct req *r)
{
    wire_buf_free(&r->frame);
}

/* The input for ri on t, with no pin, no exclusion and no attempt made yet. */
static struct router_input input(const struct topology *t, const struct request_info *ri,
                                 const struct read_pref *default_rp, uint32_t *state)
{
    return (struct router_input){
        .topo = t,
        .ri = ri,
        .default_rp = default_rp,
        .pin = -1,
        .exclude = -1,
        .attempts = 0,
        .rnd = xorshift,
        .rnd_ctx = state,
    };
}

/* Routes `draws` times and counts the chosen servers; every route must be ROUTE_SERVER, not
 * pinned. When add_rp_on_secondary is set, add_read_pref must be that pointer exactly when the
 * chosen server is a secondary (NULL otherwise); when it is NULL, add_read_pref must stay NULL. */
static void route_many(const struct router_input *in, int draws,
                       const struct read_pref *add_rp_on_secondary,
                       int counts[TOPOLOGY_MAX_SERVERS])
{
    memset(counts, 0, sizeof(int) * TOPOLOGY_MAX_SERVERS);
    for (int i = 0; i < draws; i++) {
        struct read_pref scratch;
        struct route out;
        router_route(in, &scratch, &out);
        ck_assert_msg(out.kind == ROUTE_SERVER, "route kind %d (%s)", out.kind, out.errmsg);
        ck_assert(!out.pinned);
        ck_assert_int_ge(out.server, 0);
        ck_assert_int_lt(out.server, in->topo->n);
        counts[out.server]++;
        bool secondary = in->topo->servers[out.server].type == SERVER_RS_SECONDARY;
        if (add_rp_on_secondary && secondary)
            ck_assert_ptr_eq(out.add_read_pref, add_rp_on_secondary);
        else
            ck_assert_ptr_null(out.add_read_pref);
    }
}

/* Routes once. */
static void route_once(const struct router_input *in, struct route *out)
{
    struct read_pref scratch;
    router_route(in, &scratch, out);
}

static const struct read_pref RP_PRIMARY = {.mode = READ_PRIMARY, .max_staleness_s = -1};
static const struct read_pref RP_SECONDARY = {.mode = READ_SECONDARY, .max_staleness_s = -1};
static const struct read_pref RP_SEC_PREF = {.mode = READ_SECONDARY_PREFERRED,
                                             .max_staleness_s = -1};
static const struct read_pref RP_NEAREST = {.mode = READ_NEAREST, .max_staleness_s = -1};

/* --- mongos mode --------------------------------------------------------------------------- */

START_TEST(mongos_latency_window)
{
    struct topology t;
    mongoses(&t, 15, 20, 34, 40); /* 40 > 20 + 15: outside the window */
    struct req find, insert;
    req_msg(&find, "{\"find\": \"c\", \"$db\": \"test\"}");
    req_msg(&insert, "{\"insert\": \"c\", \"documents\": [{}], \"$db\": \"test\"}");
    uint32_t state = 0x12345u;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct router_input in = input(&t, &find.ri, &RP_SECONDARY, &state);
    route_many(&in, 4000, NULL, counts);
    ck_assert_int_eq(counts[2], 0);
    ck_assert_int_gt(counts[0], 1000);
    ck_assert_int_gt(counts[1], 1000);
    /* Writes are no different: every mongos takes them. */
    in.ri = &insert.ri;
    route_many(&in, 4000, NULL, counts);
    ck_assert_int_eq(counts[2], 0);
    ck_assert_int_gt(counts[0], 1000);
    ck_assert_int_gt(counts[1], 1000);

    /* A tighter window leaves the fastest alone; a wider one takes all three. */
    mongoses(&t, 5, 20, 34, 40);
    in.ri = &find.ri;
    route_many(&in, 500, NULL, counts);
    ck_assert_int_eq(counts[0], 500);
    mongoses(&t, 100, 20, 34, 40);
    route_many(&in, 6000, NULL, counts);
    ck_assert_int_gt(counts[0], 1000);
    ck_assert_int_gt(counts[1], 1000);
    ck_assert_int_gt(counts[2], 1000);
    req_free(&find);
    req_free(&insert);
}
END_TEST

START_TEST(mongos_read_pref_passed_through)
{
    /* A mongos applies $readPreference itself: the router neither parses nor judges it, and never
     * adds one, even an invalid one or with a secondary default configured. */
    struct topology t;
    mongoses(&t, 15, 5, 5, 5);
    struct req r;
    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondary\", "
                "\"maxStalenessSeconds\": 1}, \"$db\": \"test\"}");
    uint32_t state = 99;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct router_input in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 300, NULL, counts);
    ck_assert_int_eq(counts[0] + counts[1] + counts[2], 300);
    req_free(&r);
}
END_TEST

/* --- replica-set mode ------------------------------------------------------------------------ */

START_TEST(replicaset_writes_to_primary)
{
    struct topology t;
    replica_set(&t);
    uint32_t state = 7;
    int counts[TOPOLOGY_MAX_SERVERS];
    const char *writes[] = {
        "{\"insert\": \"c\", \"documents\": [{}], \"$db\": \"test\"}",
        "{\"update\": \"c\", \"updates\": [], \"$db\": \"test\"}",
        "{\"delete\": \"c\", \"deletes\": [], \"$db\": \"test\"}",
        "{\"findAndModify\": \"c\", \"$db\": \"test\"}",
        "{\"createIndexes\": \"c\", \"indexes\": [], \"$db\": \"test\"}",
        /* A write asks for a secondary in vain: the preference is ignored. */
        "{\"insert\": \"c\", \"documents\": [{}], \"$readPreference\": {\"mode\": "
        "\"secondary\"}, \"$db\": \"test\"}",
        /* An aggregate that writes is a write. */
        "{\"aggregate\": \"c\", \"pipeline\": [{\"$out\": \"o\"}], \"cursor\": {}, "
        "\"$readPreference\": {\"mode\": \"secondaryPreferred\"}, \"$db\": \"test\"}",
    };
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        struct req r;
        req_msg(&r, writes[i]);
        ck_assert_msg(r.ri.is_write, "%s", writes[i]);
        struct router_input in = input(&t, &r.ri, &RP_SECONDARY, &state);
        route_many(&in, 200, NULL, counts);
        ck_assert_msg(counts[0] == 200, "%s went elsewhere", writes[i]);
        req_free(&r);
    }
}
END_TEST

START_TEST(replicaset_reads_by_read_preference)
{
    struct topology t;
    replica_set(&t);
    uint32_t state = 0xabcdefu;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct req r;

    /* No preference and a primary default: the primary. */
    req_msg(&r, "{\"find\": \"c\", \"$db\": \"test\"}");
    struct router_input in = input(&t, &r.ri, &RP_PRIMARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);

    /* The client's own preference is used and never added again. */
    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondary\"}, \"$db\": "
                "\"test\"}");
    in = input(&t, &r.ri, &RP_PRIMARY, &state);
    route_many(&in, 2000, NULL, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_gt(counts[1], 300);
    ck_assert_int_gt(counts[2], 300);
    req_free(&r);

    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondary\", \"tags\": "
                "[{\"dc\": \"north\"}, {\"dc\": \"west\"}]}, \"$db\": \"test\"}");
    in = input(&t, &r.ri, &RP_PRIMARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[2], 200);
    req_free(&r);

    req_msg(&r, "{\"count\": \"c\", \"$readPreference\": {\"mode\": \"nearest\"}, \"$db\": "
                "\"test\"}");
    in = input(&t, &r.ri, &RP_PRIMARY, &state);
    route_many(&in, 3000, NULL, counts);
    ck_assert_int_gt(counts[0], 300);
    ck_assert_int_gt(counts[1], 300);
    ck_assert_int_gt(counts[2], 300);
    req_free(&r);

    /* primaryPreferred with a primary: the primary, even under a secondary default. */
    req_msg(&r, "{\"distinct\": \"c\", \"key\": \"k\", \"$readPreference\": {\"mode\": "
                "\"primaryPreferred\"}, \"$db\": \"test\"}");
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);

    /* A read preference that is not the bare primary one, with tags that match nobody: secondary
     * fails (wait), secondaryPreferred falls back to the primary. */
    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondaryPreferred\", "
                "\"tags\": [{\"dc\": \"mars\"}]}, \"$db\": \"test\"}");
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 100, NULL, counts);
    ck_assert_int_eq(counts[0], 100);
    req_free(&r);

    /* The same, built by hand rather than classified. */
    struct request_info ri = {.kind = REQ_FORWARD, .opcode = WIRE_OP_MSG, .retryable_read = true};
    snprintf(ri.command, sizeof(ri.command), "find");
    bson_t *rp = doc("{\"mode\": \"secondary\", \"tags\": [{\"dc\": \"east\"}]}");
    ri.has_read_pref = true;
    ri.read_pref_doc = bson_get_data(rp);
    ri.read_pref_len = rp->len;
    in = input(&t, &ri, &RP_PRIMARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[1], 200);
    bson_destroy(rp);
}
END_TEST

START_TEST(replicaset_bare_primary_counts_as_none)
{
    struct topology t;
    replica_set(&t);
    uint32_t state = 31;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct req r;

    /* {mode: "primary"} alone says no more than no preference: the default applies, and is added
     * for the secondary. */
    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"primary\"}, \"$db\": "
                "\"test\"}");
    struct router_input in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 2000, &RP_SECONDARY, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_gt(counts[1], 300);
    ck_assert_int_gt(counts[2], 300);
    /* With a primary default, it is the primary all the same. */
    in.default_rp = &RP_PRIMARY;
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);

    /* Any other mode is the client's say: a primaryPreferred read keeps the primary even though
     * the default says secondary (a primary read with maxStalenessSeconds is not bare either: it
     * is refused, see replicaset_invalid_read_pref_is_error). */
    req_msg(&r, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"primaryPreferred\"}, "
                "\"$db\": \"test\"}");
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);
}
END_TEST

START_TEST(replicaset_default_applied_only_where_it_may)
{
    struct topology t;
    replica_set(&t);
    uint32_t state = 555;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct req r;

    /* A retryable read without a preference under a secondaryPreferred default: a secondary,
     * with the default added so that the secondary accepts it. */
    req_msg(&r, "{\"aggregate\": \"c\", \"pipeline\": [], \"cursor\": {}, \"$db\": \"test\"}");
    ck_assert(r.ri.retryable_read);
    struct router_input in = input(&t, &r.ri, &RP_SEC_PREF, &state);
    route_many(&in, 2000, &RP_SEC_PREF, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_eq(counts[1] + counts[2], 2000);

    /* nearest: the primary gets some, without anything added; secondaries get it added. */
    in.default_rp = &RP_NEAREST;
    route_many(&in, 3000, &RP_NEAREST, counts);
    ck_assert_int_gt(counts[0], 300);
    ck_assert_int_gt(counts[1] + counts[2], 300);

    /* A primary default adds nothing. */
    in.default_rp = &RP_PRIMARY;
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);

    /* secondaryPreferred with no secondary left: the primary, nothing added. */
    in.default_rp = &RP_SEC_PREF;
    struct topology t2;
    replica_set(&t2);
    topology_on_failure(&t2, 1, "down", 2000);
    topology_on_failure(&t2, 2, "down", 2000);
    in.topo = &t2;
    route_many(&in, 100, NULL, counts);
    ck_assert_int_eq(counts[0], 100);
    req_free(&r);

    /* A command that is no retryable read (ping, a write-free command without a preference)
     * goes to the primary: the default is only for reads. */
    req_msg(&r, "{\"ping\": 1, \"$db\": \"admin\"}");
    ck_assert(!r.ri.retryable_read && !r.ri.is_write);
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);

    /* A legacy OP_QUERY read goes by the default too, but nothing can be added to it. */
    req_query(&r, "{\"find\": \"c\"}");
    ck_assert(r.ri.retryable_read);
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 1000, NULL, counts);
    ck_assert_int_eq(counts[0], 0);
    ck_assert_int_eq(counts[1] + counts[2], 1000);
    req_free(&r);

    /* A read inside a transaction goes to the primary whatever the default. */
    req_msg(&r, "{\"find\": \"c\", " LSID ", " TXN_N ", \"autocommit\": false, \"$db\": "
                "\"test\"}");
    ck_assert(r.ri.autocommit_false);
    in = input(&t, &r.ri, &RP_SECONDARY, &state);
    route_many(&in, 200, NULL, counts);
    ck_assert_int_eq(counts[0], 200);
    req_free(&r);
}
END_TEST

/* Routes the find with the given $readPreference JSON and returns the route. */
static void route_rp(const struct topology *t, const char *rp_json, struct route *out)
{
    char json[512];
    snprintf(json, sizeof(json), "{\"find\": \"c\", \"$readPreference\": %s, \"$db\": \"test\"}",
             rp_json);
    struct req r;
    req_msg(&r, json);
    uint32_t state = 5;
    struct router_input in = input(t, &r.ri, &RP_SECONDARY, &state);
    route_once(&in, out);
    req_free(&r);
}

START_TEST(replicaset_invalid_read_pref_is_error)
{
    struct topology t;
    replica_set(&t);
    struct route out;

    /* maxStalenessSeconds below 90 s: MaxStalenessOutOfRange. */
    route_rp(&t, "{\"mode\": \"secondary\", \"maxStalenessSeconds\": 30}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, MONGO_ERR_MAX_STALENESS_OUT_OF_RANGE);
    ck_assert_int_eq(out.code, 160);
    ck_assert_int_gt(strlen(out.errmsg), 0);
    ck_assert_int_eq(out.server, -1);
    ck_assert_ptr_null(out.add_read_pref);
    /* Below heartbeat + 10 s. */
    t.heartbeat_ms = 95000;
    route_rp(&t, "{\"mode\": \"nearest\", \"maxStalenessSeconds\": 100}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, 160);
    t.heartbeat_ms = 10000;
    /* With mode primary (and therefore not bare). */
    route_rp(&t, "{\"mode\": \"primary\", \"maxStalenessSeconds\": 120}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, 160);
    /* Tags with primary: BadValue. */
    route_rp(&t, "{\"mode\": \"primary\", \"tags\": [{\"dc\": \"east\"}]}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, MONGO_ERR_BAD_VALUE);
    /* An unknown mode or none: FailedToParse. */
    route_rp(&t, "{\"mode\": \"fastest\"}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, MONGO_ERR_FAILED_TO_PARSE);
    ck_assert_int_gt(strlen(out.errmsg), 0);
    route_rp(&t, "{\"tags\": []}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, MONGO_ERR_FAILED_TO_PARSE);
    /* Tags that are not an array: TypeMismatch. */
    route_rp(&t, "{\"mode\": \"secondary\", \"tags\": {\"dc\": \"east\"}}", &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, 14);

    /* A valid maxStalenessSeconds routes. */
    route_rp(&t, "{\"mode\": \"secondary\", \"maxStalenessSeconds\": 120}", &out);
    ck_assert_int_eq(out.kind, ROUTE_SERVER);
    ck_assert(out.server == 1 || out.server == 2);
}
END_TEST

START_TEST(no_suitable_server_waits)
{
    uint32_t state = 77;
    struct route out;
    struct req find, insert, sec;
    req_msg(&find, "{\"find\": \"c\", \"$db\": \"test\"}");
    req_msg(&insert, "{\"insert\": \"c\", \"documents\": [{}], \"$db\": \"test\"}");
    req_msg(&sec, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondary\"}, \"$db\": "
                  "\"test\"}");

    /* Mongos mode, nothing known yet, then everything failed. */
    struct topology t;
    topology_init(&t, TOPOLOGY_MONGOS, 15);
    add_servers(&t, 2);
    struct router_input in = input(&t, &find.ri, &RP_PRIMARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    ck_assert_int_eq(out.server, -1);
    ck_assert_ptr_null(out.add_read_pref);
    ck_assert_str_eq(out.errmsg, "no mongos known");
    hello(&t, 0, MONGOS_HELLO, 5);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_SERVER);
    ck_assert_int_eq(out.server, 0);
    topology_on_failure(&t, 0, "gone", 2000);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    /* An empty topology. */
    struct topology e;
    topology_init(&e, TOPOLOGY_MONGOS, 15);
    in.topo = &e;
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);

    /* Replica set without a primary: writes and default reads wait, secondary reads do not. */
    replica_set(&t);
    topology_on_failure(&t, 0, "election", 2000);
    in = input(&t, &insert.ri, &RP_SECONDARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    ck_assert_str_eq(out.errmsg, "no primary");
    in = input(&t, &find.ri, &RP_PRIMARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    ck_assert_str_eq(out.errmsg, "no primary");
    in = input(&t, &sec.ri, &RP_PRIMARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_SERVER);
    /* A secondary default: a read that waits carries nothing to add. */
    replica_set(&t);
    topology_on_failure(&t, 1, "down", 2000);
    topology_on_failure(&t, 2, "down", 2000);
    in = input(&t, &find.ri, &RP_SECONDARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    ck_assert_ptr_null(out.add_read_pref);
    ck_assert_str_eq(out.errmsg, "no member suits the read preference");
    in = input(&t, &sec.ri, &RP_PRIMARY, &state);
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    ck_assert_str_eq(out.errmsg, "no member suits the read preference");
    req_free(&find);
    req_free(&insert);
    req_free(&sec);
}
END_TEST

/* --- transactions ---------------------------------------------------------------------------- */

#define TXN_INSERT                                                                                 \
    "{\"insert\": \"c\", \"documents\": [{}], " LSID ", " TXN_N ", \"autocommit\": false, "        \
    "\"$db\": \"test\"}"
#define TXN_FIND "{\"find\": \"c\", " LSID ", " TXN_N ", \"autocommit\": false, \"$db\": \"test\"}"
#define TXN_COMMIT                                                                                 \
    "{\"commitTransaction\": 1, " LSID ", " TXN_N ", \"autocommit\": false, \"$db\": \"admin\"}"
#define TXN_ABORT                                                                                  \
    "{\"abortTransaction\": 1, " LSID ", " TXN_N ", \"autocommit\": false, \"$db\": \"admin\"}"

START_TEST(pin_usable_decides)
{
    uint32_t state = 3;
    struct route out;
    struct req ins, find, commit;
    req_msg(&ins, TXN_INSERT);
    req_msg(&find, TXN_FIND);
    req_msg(&commit, TXN_COMMIT);
    const struct request_info *ris[] = {&ins.ri, &find.ri, &commit.ri};

    /* Mongos mode: the pinned mongos even though it is far outside the window and excluded. */
    struct topology t;
    mongoses(&t, 15, 5, 5, 500);
    for (int i = 0; i < 3; i++) {
        struct router_input in = input(&t, ris[i], &RP_SECONDARY, &state);
        in.pin = 2;
        for (int k = 0; k < 50; k++) {
            route_once(&in, &out);
            ck_assert_int_eq(out.kind, ROUTE_SERVER);
            ck_assert_int_eq(out.server, 2);
            ck_assert(out.pinned);
            ck_assert_ptr_null(out.add_read_pref);
        }
        in.attempts = 2;
        in.exclude = 2;
        route_once(&in, &out);
        ck_assert_int_eq(out.kind, ROUTE_SERVER);
        ck_assert_int_eq(out.server, 2);
        ck_assert(out.pinned);
    }

    /* Replica-set mode: the primary it is pinned to. */
    replica_set(&t);
    for (int i = 0; i < 3; i++) {
        struct router_input in = input(&t, ris[i], &RP_SECONDARY, &state);
        in.pin = 0;
        route_once(&in, &out);
        ck_assert_int_eq(out.kind, ROUTE_SERVER);
        ck_assert_int_eq(out.server, 0);
        ck_assert(out.pinned);
        ck_assert_ptr_null(out.add_read_pref);
    }
    req_free(&ins);
    req_free(&find);
    req_free(&commit);
}
END_TEST

START_TEST(pin_unknown_mongos_first_attempt)
{
    uint32_t state = 4;
    struct route out;
    struct req ins;
    req_msg(&ins, TXN_INSERT);
    struct topology t;
    mongoses(&t, 15, 5, 5, 5);
    topology_on_failure(&t, 1, "probe failed", 2000);
    ck_assert_int_eq(t.servers[1].type, SERVER_UNKNOWN);
    struct router_input in = input(&t, &ins.ri, &RP_PRIMARY, &state);
    in.pin = 1;
    /* The first attempt still goes to the unknown mongos: it may come back. */
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_SERVER);
    ck_assert_int_eq(out.server, 1);
    ck_assert(out.pinned);
    /* A later attempt: the transaction is lost. */
    in.attempts = 1;
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, MONGO_ERR_NO_SUCH_TRANSACTION);
    ck_assert_int_eq(out.code, 251);
    ck_assert_ptr_nonnull(strstr(out.errmsg, "r1:27017"));
    ck_assert_ptr_nonnull(strstr(out.errmsg, "unavailable"));
    ck_assert_ptr_nonnull(strstr(out.errmsg, "7"));
    req_free(&ins);
}
END_TEST

START_TEST(pin_gone_statement_no_such_transaction)
{
    uint32_t state = 5;
    struct route out;
    struct req ins, find;
    req_msg(&ins, TXN_INSERT);
    req_msg(&find, TXN_FIND);

    /* Replica set: the pinned primary stepped down; even a first attempt is an error (only an
     * unknown mongos gets the benefit of the doubt). */
    struct topology t;
    replica_set(&t);
    hello(&t, 0, STEPPED_DOWN, 10);
    ck_assert_int_eq(t.servers[0].type, SERVER_RS_SECONDARY);
    const struct request_info *ris[] = {&ins.ri, &find.ri};
    for (int i = 0; i < 2; i++) {
        struct router_input in = input(&t, ris[i], &RP_SECONDARY, &state);
        in.pin = 0;
        route_once(&in, &out);
        ck_assert_int_eq(out.kind, ROUTE_ERROR);
        ck_assert_int_eq(out.code, 251);
        ck_assert(!out.pinned);
        ck_assert_ptr_null(out.add_read_pref);
        ck_assert_ptr_nonnull(strstr(out.errmsg, "no longer primary"));
    }
    /* Unknown in replica-set mode: also an error on the first attempt. */
    replica_set(&t);
    topology_on_failure(&t, 0, "gone", 2000);
    struct router_input in = input(&t, &ins.ri, &RP_SECONDARY, &state);
    in.pin = 0;
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, 251);

    /* Mongos mode: a pin on a server that is no mongos any more (it answered as a standalone). */
    mongoses(&t, 15, 5, 5, 5);
    hello(&t, 0, "{\"ok\": 1, \"isWritablePrimary\": true}", 5);
    ck_assert_int_eq(t.servers[0].type, SERVER_STANDALONE);
    in = input(&t, &find.ri, &RP_SECONDARY, &state);
    in.pin = 0;
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_ERROR);
    ck_assert_int_eq(out.code, 251);
    req_free(&ins);
    req_free(&find);
}
END_TEST

START_TEST(pin_gone_commit_falls_through)
{
    uint32_t state = 6;
    struct route out;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct req commit, abort_;
    req_msg(&commit, TXN_COMMIT);
    req_msg(&abort_, TXN_ABORT);
    const struct request_info *ris[] = {&commit.ri, &abort_.ri};

    /* Mongos mode: the pinned mongos is gone; commit and abort go to another by selection, even on
     * the first attempt. */
    struct topology t;
    mongoses(&t, 15, 5, 5, 5);
    topology_on_failure(&t, 1, "gone", 2000);
    for (int i = 0; i < 2; i++) {
        struct router_input in = input(&t, ris[i], &RP_SECONDARY, &state);
        in.pin = 1;
        route_many(&in, 500, NULL, counts);
        ck_assert_int_eq(counts[1], 0);
        ck_assert_int_gt(counts[0], 50);
        ck_assert_int_gt(counts[2], 50);
        in.attempts = 2;
        route_once(&in, &out);
        ck_assert_int_eq(out.kind, ROUTE_SERVER);
        ck_assert(!out.pinned);
    }

    /* Replica set: the primary moved; commit goes to the new primary, not to a secondary. */
    replica_set(&t);
    hello(&t, 1,
          "{\"ok\": 1, \"setName\": \"rs\", \"isWritablePrimary\": true, \"electionId\": "
          "{\"$oid\": \"7fffffff0000000000000002\"}, \"setVersion\": 2}",
          10);
    ck_assert_int_eq(topology_primary(&t), 1);
    ck_assert_int_ne(t.servers[0].type, SERVER_RS_PRIMARY);
    for (int i = 0; i < 2; i++) {
        struct router_input in = input(&t, ris[i], &RP_SECONDARY, &state);
        in.pin = 0;
        route_many(&in, 100, NULL, counts);
        ck_assert_int_eq(counts[1], 100);
    }
    /* No primary at all: the commit waits for one. */
    topology_on_failure(&t, 1, "election", 3000);
    struct router_input in = input(&t, &commit.ri, &RP_SECONDARY, &state);
    in.pin = 0;
    route_once(&in, &out);
    ck_assert_int_eq(out.kind, ROUTE_WAIT);
    req_free(&commit);
    req_free(&abort_);
}
END_TEST

START_TEST(exclude_avoided_unless_sole)
{
    uint32_t state = 8;
    int counts[TOPOLOGY_MAX_SERVERS];
    struct req find;
    req_msg(&find, "{\"find\": \"c\", \"$db\": \"test\"}");
    struct topology t;
    mongoses(&t, 15, 5, 6, 7);
    struct router_input in = input(&t, &find.ri, &RP_PRIMARY, &state);
    in.exclude = 1;
    in.attempts = 1;
    route_many(&in, 2000, NULL, counts);
    ck_assert_int_eq(counts[1], 0);
    ck_assert_int_gt(counts[0], 300);
    ck_assert_int_gt(counts[2], 300);
    /* The excluded one is all that is left: it is used. */
    topology_on_failure(&t, 0, "x", 2000);
    topology_on_failure(&t, 2, "x", 2000);
    route_many(&in, 100, NULL, counts);
    ck_assert_int_eq(counts[1], 100);

    /* Replica set: secondary reads avoid the excluded secondary; a write's only primary is used
     * even when excluded. */
    replica_set(&t);
    struct req sec, ins;
    req_msg(&sec, "{\"find\": \"c\", \"$readPreference\": {\"mode\": \"secondary\"}, \"$db\": "
                  "\"test\"}");
    req_msg(&ins, "{\"insert\": \"c\", \"documents\": [{}], \"$db\": \"test\"}");
    in = input(&t, &sec.ri, &RP_PRIMARY, &state);
    in.exclude = 2;
    route_many(&in, 300, NULL, counts);
    ck_assert_int_eq(counts[1], 300);
    in = input(&t, &ins.ri, &RP_PRIMARY, &state);
    in.exclude = 0;
    route_many(&in, 100, NULL, counts);
    ck_assert_int_eq(counts[0], 100);
    req_free(&find);
    req_free(&sec);
    req_free(&ins);
}
END_TEST

static Suite *router_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("mongos");
    tcase_add_test(tc, mongos_latency_window);
    tcase_add_test(tc, mongos_read_pref_passed_through);
    suite_add_tcase(s, tc);
    tc = tcase_create("replicaset");
    tcase_add_test(tc, replicaset_writes_to_primary);
    tcase_add_test(tc, replicaset_reads_by_read_preference);
    tcase_add_test(tc, replicaset_bare_primary_counts_as_none);
    tcase_add_test(tc, replicaset_default_applied_only_where_it_may);
    tcase_add_test(tc, replicaset_invalid_read_pref_is_error);
    tcase_add_test(tc, no_suitable_server_waits);
    suite_add_tcase(s, tc);
    tc = tcase_create("transactions");
    tcase_add_test(tc, pin_usable_decides);
    tcase_add_test(tc, pin_unknown_mongos_first_attempt);
    tcase_add_test(tc, pin_gone_statement_no_such_transaction);
    tcase_add_test(tc, pin_gone_commit_falls_through);
    tcase_add_test(tc, exclude_avoided_unless_sole);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(router_suite)
