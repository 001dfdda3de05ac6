/*
 * sim_repl.c: replication in a simulated replica set whose members keep their own data.
 *
 * While no member has a replication lag, every member reads and writes one shared store, as
 * mongosim always did, and nothing here runs. The first lag (--lag-ms, simSetLag) splits it: every
 * member gets a copy (store_clone), the primary's store records an oplog, and each secondary
 * applies an entry once it is lag_ms old. Application is lazy: a member catches up whenever it is
 * about to answer (a command, a hello), which gives what applying each entry when it falls due
 * would, since what a member has applied depends only on the time.
 *
 * What follows from that, as on a real replica set:
 *  - a secondary reads only what it has applied;
 *  - hello's lastWrite (opTime, lastWriteDate) is what the member has applied. The primary writes
 *    all the time (MongoDB's periodic no-op writer), so a secondary's lastWriteDate trails the
 *    clock by its lag even when clients write nothing, which is what maxStalenessSeconds measures;
 *  - replies carry operationTime and $clusterTime, and a read with readConcern.afterClusterTime
 *    waits on a secondary until the member has applied that far (causal consistency);
 *  - a write waits for its write concern (w:majority by default from 5.0, or w:N): its reply leaves
 *    once enough members have applied it, or with a WriteConcernFailed writeConcernError after
 *    wtimeout;
 *  - a member that is down or removed from the set applies nothing until it is back;
 *  - an election after a step-down gives the new primary everything the old one wrote (MongoDB's
 *    catch-up phase). After the primary died, the new primary catches up only to the newest live
 *    member: the dead primary's writes that no live member had applied are rolled back (its data
 *    is reset to that point for when it returns, and the records of those retryable writes and
 *    transaction commits are forgotten, so that a retry runs the write again and a retried commit
 *    gets NoSuchTransaction). A w:majority write was acknowledged once a
 *    majority had applied it, so it survives while a majority of the members does;
 *  - a read with readConcern majority sees the data as of the majority commit point: the newest
 *    entry that a majority of the members has applied.
 *
 * Optimes: oplog entry number k (from 0) has optime Timestamp(its second, k + 1), and a member that
 * applied n entries, and everything the primary did up to time t, is at Timestamp(t / 1000, n).
 * Both orders agree, so comparing a client's afterClusterTime with a member's optime tells whether
 * the member has applied the write that the client saw.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "sim.h"

/* How long a write waits for a write concern that the live members cannot satisfy, when it has no
 * wtimeout. A real server waits until they can; the client's own timeout ends the wait first. */
#define SIM_WC_FOREVER_MS (24ull * 3600 * 1000)

static uint64_t majority_point(const struct sim *s);

int64_t sim_wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t oplog_clock(void *arg)
{
    (void)arg;
    return sim_wall_ms();
}

static int primary_of(const struct sim *s)
{
    for (int i = 0; i < s->nservers; i++)
        if (s->servers[i].primary)
            return i;
    return -1;
}

/* Members in the set's configuration. */
static int config_size(const struct sim *s)
{
    int n = 0;
    for (int i = 0; i < s->nservers; i++)
        n += !s->servers[i].removed;
    return n;
}

int sim_repl_start(struct sim *s, bool at_start)
{
    if (s->oplog || s->opt.mode != SIM_MODE_REPLSET)
        return 0;
    struct store_oplog *log = store_oplog_new(oplog_clock, NULL);
    if (!log)
        return -ENOMEM;
    /* An open transaction's writes are in the shared store, which is about to be copied, and its
     * undo log points into it: it could neither be replicated at commit nor undone everywhere. */
    for (int i = 0; i < s->nservers; i++)
        sim_abort_txns(&s->servers[i]);
    int p = primary_of(s), keep = p >= 0 ? p : 0;
    for (int i = 0; i < s->nservers; i++) {
        if (i == keep)
            continue;
        struct store *copy = store_clone(s->store);
        if (!copy) {
            for (int j = 0; j < i; j++) {
                if (s->servers[j].store != s->store)
                    store_free(s->servers[j].store);
                s->servers[j].store = s->store;
            }
            store_oplog_free(log);
            return -ENOMEM;
        }
        s->servers[i].store = copy;
    }
    /* Started with the process, the set is taken to have run with these lags all along: each
     * secondary's last write is lag_ms old. Started later, every member has had every write so
     * far, and a lag only makes it stall from now on. */
    int64_t now = sim_wall_ms();
    for (int i = 0; i < s->nservers; i++) {
        struct sim_server *srv = &s->servers[i];
        srv->applied = 0;
        srv->applied_ms = at_start && !srv->primary ? now - (int64_t)srv->lag_ms : now;
    }
    /* The data as of the majority commit point: everything so far, which every member has. */
    s->majority_store = store_clone(s->store);
    s->majority_applied = 0;
    if (!s->majority_store)
        log_warn(NULL, "replication: out of memory; readConcern majority reads the member's data");
    s->oplog = log;
    if (p >= 0)
        store_set_oplog(s->servers[p].store, log);
    log_info(NULL, "replication: every member keeps its own data from now on");
    return 0;
}

void sim_repl_free(struct sim *s)
{
    for (int i = 0; i < s->nservers; i++) {
        if (s->servers[i].store && s->servers[i].store != s->store)
            store_free(s->servers[i].store);
        s->servers[i].store = NULL;
    }
    store_oplog_free(s->oplog);
    s->oplog = NULL;
    store_free(s->majority_store);
    s->majority_store = NULL;
}

struct store *sim_repl_majority_store(struct sim_server *srv)
{
    struct sim *s = srv->sim;
    if (!s->oplog || !s->majority_store)
        return NULL;
    for (int i = 0; i < s->nservers; i++)
        sim_repl_catch_up(&s->servers[i]);
    uint64_t point = majority_point(s);
    /* A member that has nothing beyond the point reads its own data, which is all committed. */
    if (srv->applied <= point)
        return NULL;
    if (store_oplog_apply_upto(s->majority_store, s->oplog, &s->majority_applied, point) < 0)
        return NULL;
    return s->majority_store;
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* The majority commit point: how many entries a majority of the configured members has applied
 * (as last known; the primary has them all). */
static uint64_t majority_point(const struct sim *s)
{
    uint64_t count = store_oplog_count(s->oplog), a[SIM_MAX_SERVERS];
    size_t n = 0;
    for (int i = 0; i < s->nservers; i++)
        if (!s->servers[i].removed)
            a[n++] = s->servers[i].primary ? count : s->servers[i].applied;
    if (n == 0)
        return count;
    qsort(a, n, sizeof(a[0]), cmp_u64_desc);
    return a[n / 2]; /* the majority's slowest: n/2 + 1 members have at least this */
}

/* Forgets the oplog entries that every member, and the majority snapshot, has applied. The
 * majority snapshot is brought to the majority point first: it never holds trimming back. */
static void trim(struct sim *s)
{
    if (s->majority_store) {
        int rc = store_oplog_apply_upto(s->majority_store, s->oplog, &s->majority_applied,
                                        majority_point(s));
        if (rc < 0)
            log_warn(NULL, "replication: the majority snapshot cannot apply entry %llu: %s",
                     (unsigned long long)s->majority_applied, strerror(-rc));
    }
    uint64_t min = store_oplog_count(s->oplog);
    if (s->majority_store && s->majority_applied < min)
        min = s->majority_applied;
    for (int i = 0; i < s->nservers; i++)
        if (!s->servers[i].primary && s->servers[i].applied < min)
            min = s->servers[i].applied;
    store_oplog_trim(s->oplog, min);
}

void sim_repl_catch_up(struct sim_server *srv)
{
    struct sim *s = srv->sim;
    if (!s->oplog)
        return;
    int64_t now = sim_wall_ms();
    if (srv->primary) {
        srv->applied = store_oplog_count(s->oplog);
        srv->applied_ms = now;
        return;
    }
    if (!srv->listening || srv->removed)
        return;
    /* A member without lag has every write at once, as when the members share one store. A
     * lagging one has what was written before now - lag: strictly before, because a write made in
     * the very millisecond it reached may have come after that instant (the lag was set, say). */
    int64_t until = INT64_MAX;
    if (srv->lag_ms) {
        if (now - (int64_t)srv->lag_ms > srv->applied_ms)
            srv->applied_ms = now - (int64_t)srv->lag_ms;
        until = srv->applied_ms - 1;
    } else {
        srv->applied_ms = now;
    }
    uint64_t before = srv->applied;
    int rc = store_oplog_apply(srv->store, s->oplog, &srv->applied, until);
    if (rc < 0)
        log_warn(NULL, "replication: member %d cannot apply entry %llu: %s", srv->index,
                 (unsigned long long)srv->applied, strerror(-rc));
    if (srv->applied != before)
        trim(s);
}

/*
 * Rolls back the entries from number reach on, which the dead primary lost wrote and no live
 * member has: the oplog forgets them, lost's data becomes that of src (a member at reach), which
 * lost applies from when it is back, and the retryable-write records of those writes go.
 */
static void rollback(struct sim *s, int lost, const struct sim_server *src, uint64_t reach)
{
    uint64_t count = store_oplog_count(s->oplog);
    log_info(NULL,
             "rollback: member %d's last %llu oplog entries reached no live member; rolled "
             "back",
             lost, (unsigned long long)(count - reach));
    store_oplog_truncate(s->oplog, reach);
    s->rolled_back += count - reach;
    sim_forget_retries_after(s, reach);
    sim_forget_commits_after(s, reach);
    struct sim_server *o = &s->servers[lost];
    struct store *copy = store_clone(src->store);
    if (copy) {
        /* The shared store also keeps the deployment's transaction outcomes: it stays. */
        if (o->store != s->store)
            store_free(o->store);
        o->store = copy;
        o->applied = reach;
    } else {
        log_warn(NULL, "rollback: out of memory; member %d keeps its data", lost);
    }
    if (s->majority_store && s->majority_applied > reach) {
        copy = store_clone(src->store);
        if (copy) {
            store_free(s->majority_store);
            s->majority_store = copy;
            s->majority_applied = reach;
        }
    }
}

void sim_repl_elect(struct sim *s, int old, int next)
{
    if (!s->oplog)
        return;
    int64_t now = sim_wall_ms();
    if (old >= 0) {
        /* It wrote every entry: as a secondary it has them all. */
        struct sim_server *o = &s->servers[old];
        o->applied = store_oplog_count(s->oplog);
        o->applied_ms = now;
        store_set_oplog(o->store, NULL);
        /* A dead primary's newest writes may be on no other member. */
        s->lost_primary_pending = !o->listening;
        s->lost_primary = old;
    }
    if (next >= 0 && s->lost_primary_pending && !s->servers[s->lost_primary].listening) {
        /* MongoDB's catch-up phase takes what the live members have: the newest of them. */
        const struct sim_server *src = NULL;
        for (int i = 0; i < s->nservers; i++) {
            struct sim_server *m = &s->servers[i];
            if (i == s->lost_primary || !m->listening || m->removed)
                continue;
            sim_repl_catch_up(m);
            if (!src || m->applied > src->applied)
                src = m;
        }
        if (src && src->applied < store_oplog_count(s->oplog))
            rollback(s, s->lost_primary, src, src->applied);
    }
    if (next >= 0) {
        s->lost_primary_pending = false;
        struct sim_server *n = &s->servers[next];
        int rc = store_oplog_apply(n->store, s->oplog, &n->applied, INT64_MAX);
        if (rc < 0)
            log_warn(NULL, "replication: the new primary %d cannot catch up: %s", next,
                     strerror(-rc));
        n->applied_ms = now;
        store_set_oplog(n->store, s->oplog);
    }
    trim(s);
}

static void append_optime(bson_t *doc, const char *key, uint32_t secs, uint32_t inc, int64_t term)
{
    bson_t ot;
    BSON_APPEND_DOCUMENT_BEGIN(doc, key, &ot);
    BSON_APPEND_TIMESTAMP(&ot, "ts", secs, inc);
    BSON_APPEND_INT64(&ot, "t", term);
    bson_append_document_end(doc, &ot);
}

static int cmp_desc(const void *a, const void *b)
{
    const struct sim_server *x = *(const struct sim_server *const *)a;
    const struct sim_server *y = *(const struct sim_server *const *)b;
    if (x->applied_ms != y->applied_ms)
        return x->applied_ms > y->applied_ms ? -1 : 1;
    if (x->applied != y->applied)
        return x->applied > y->applied ? -1 : 1;
    return 0;
}

void sim_repl_append_last_write(struct sim_server *srv, bson_t *reply)
{
    struct sim *s = srv->sim;
    /* The majority point needs every member's position, not only this one's. */
    const struct sim_server *members[SIM_MAX_SERVERS];
    int n = 0;
    for (int i = 0; i < s->nservers; i++) {
        sim_repl_catch_up(&s->servers[i]);
        if (!s->servers[i].removed)
            members[n++] = &s->servers[i];
    }
    qsort(members, (size_t)n, sizeof(members[0]), cmp_desc);
    const struct sim_server *maj = members[n / 2]; /* the majority's slowest: n/2 + 1 are there */
    /* MongoDB stamps lastWriteDate with whole seconds (it keeps a time_t). */
    uint32_t secs = (uint32_t)(srv->applied_ms / 1000);
    uint32_t msecs = (uint32_t)(maj->applied_ms / 1000);
    bson_t lw;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "lastWrite", &lw);
    append_optime(&lw, "opTime", secs, (uint32_t)srv->applied, s->term);
    BSON_APPEND_DATE_TIME(&lw, "lastWriteDate", (int64_t)secs * 1000);
    append_optime(&lw, "majorityOpTime", msecs, (uint32_t)maj->applied, s->term);
    BSON_APPEND_DATE_TIME(&lw, "majorityWriteDate", (int64_t)msecs * 1000);
    bson_append_document_end(reply, &lw);
}

void sim_repl_append_times(struct sim_server *srv, bson_t *reply)
{
    struct sim *s = srv->sim;
    if (!s->oplog)
        return;
    sim_repl_catch_up(srv);
    int64_t now = sim_wall_ms();
    static const uint8_t no_key[20];
    bson_t ct, sig;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "$clusterTime", &ct);
    BSON_APPEND_TIMESTAMP(&ct, "clusterTime", (uint32_t)(now / 1000),
                          (uint32_t)store_oplog_count(s->oplog));
    /* Without authentication a deployment signs with key 0 and an all-zero hash. */
    BSON_APPEND_DOCUMENT_BEGIN(&ct, "signature", &sig);
    BSON_APPEND_BINARY(&sig, "hash", BSON_SUBTYPE_BINARY, no_key, sizeof(no_key));
    BSON_APPEND_INT64(&sig, "keyId", 0);
    bson_append_document_end(&ct, &sig);
    bson_append_document_end(reply, &ct);
    BSON_APPEND_TIMESTAMP(reply, "operationTime", (uint32_t)(srv->applied_ms / 1000),
                          (uint32_t)srv->applied);
}

static void error_doc(bson_t *reply, int32_t code, const char *name, const char *msg)
{
    bson_reinit(reply);
    BSON_APPEND_DOUBLE(reply, "ok", 0.0);
    BSON_APPEND_UTF8(reply, "errmsg", msg);
    BSON_APPEND_INT32(reply, "code", code);
    BSON_APPEND_UTF8(reply, "codeName", name);
}

int64_t sim_repl_read_wait(struct sim_server *srv, const bson_t *cmd, uint64_t waited_ms,
                           bson_t *reply)
{
    struct sim *s = srv->sim;
    bson_iter_t it, rc;
    if (!s->oplog || !bson_iter_init_find(&it, cmd, "readConcern") ||
        !BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &rc) ||
        !bson_iter_find(&rc, "afterClusterTime") || !BSON_ITER_HOLDS_TIMESTAMP(&rc))
        return 0;
    uint32_t ts, inc;
    bson_iter_timestamp(&rc, &ts, &inc);
    sim_repl_catch_up(srv);
    int64_t now = sim_wall_ms();
    uint32_t cs = (uint32_t)(now / 1000), ci = (uint32_t)store_oplog_count(s->oplog);
    if (ts > cs || (ts == cs && inc > ci)) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "readConcern afterClusterTime value must not be greater than the current "
                 "clusterTime. Requested clusterTime: { ts: Timestamp(%u, %u) }; current "
                 "clusterTime: { ts: Timestamp(%u, %u) }",
                 ts, inc, cs, ci);
        error_doc(reply, 72, "InvalidOptions", msg);
        return -1;
    }
    uint32_t ms = (uint32_t)(srv->applied_ms / 1000), mi = (uint32_t)srv->applied;
    if (ms > ts || (ms == ts && mi >= inc))
        return 0;
    /* Reached once the member has applied past that second, or has applied the entry inc names
     * (made at t: applied once the member is past t) and reached its second. */
    int64_t lag = (int64_t)srv->lag_ms;
    int64_t due = ((int64_t)ts + 1) * 1000 + lag;
    int64_t t = inc >= 1 ? store_oplog_time(s->oplog, inc - 1) : -1;
    if (t >= 0) {
        t++;
        if (t < (int64_t)ts * 1000)
            t = (int64_t)ts * 1000;
        if (t + lag < due)
            due = t + lag;
    }
    int64_t wait = due - now;
    if (wait < 1)
        wait = 1;
    int64_t max_ms = 0;
    if (bson_iter_init_find(&it, cmd, "maxTimeMS") && BSON_ITER_HOLDS_NUMBER(&it))
        max_ms = bson_iter_as_int64(&it);
    if (max_ms > 0) {
        if ((int64_t)waited_ms >= max_ms) {
            error_doc(reply, 50, "MaxTimeMSExpired", "operation exceeded time limit");
            return -1;
        }
        if (wait > max_ms - (int64_t)waited_ms)
            wait = max_ms - (int64_t)waited_ms;
    }
    return wait;
}

static void write_concern_error(bson_t *reply, int32_t code, const char *name, const char *msg,
                                const bson_t *wc)
{
    bson_t wce, info;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "writeConcernError", &wce);
    BSON_APPEND_INT32(&wce, "code", code);
    BSON_APPEND_UTF8(&wce, "codeName", name);
    BSON_APPEND_UTF8(&wce, "errmsg", msg);
    if (wc) {
        BSON_APPEND_DOCUMENT_BEGIN(&wce, "errInfo", &info);
        if (code == 64)
            BSON_APPEND_BOOL(&info, "wtimeout", true);
        BSON_APPEND_DOCUMENT(&info, "writeConcern", wc);
        bson_append_document_end(&wce, &info);
    }
    bson_append_document_end(reply, &wce);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void sim_repl_write_concern(struct sim_server *srv, struct sim_conn *conn, const bson_t *cmd,
                            bson_t *reply)
{
    struct sim *s = srv->sim;
    bson_iter_t it, w;
    if (!s->oplog || !srv->primary || bson_has_field(reply, "writeConcernError"))
        return;
    int n_config = config_size(s);
    int need = sim_default_write_concern_majority(s->opt.version) ? n_config / 2 + 1 : 1;
    int64_t wtimeout = 0;
    bson_t wc_view;
    const bson_t *wc = NULL;
    if (bson_iter_init_find(&it, cmd, "writeConcern") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&wc_view, data, len))
            wc = &wc_view;
    }
    if (wc && bson_iter_init_find(&w, wc, "wtimeout") && BSON_ITER_HOLDS_NUMBER(&w))
        wtimeout = bson_iter_as_int64(&w);
    if (wc && bson_iter_init_find(&w, wc, "w")) {
        if (BSON_ITER_HOLDS_NUMBER(&w)) {
            int64_t n = bson_iter_as_int64(&w);
            if (n <= 0)
                return; /* unacknowledged */
            if (n > n_config) {
                write_concern_error(reply, 100, "UnsatisfiableWriteConcern",
                                    "Not enough data-bearing nodes", wc);
                return;
            }
            need = (int)n;
        } else if (BSON_ITER_HOLDS_UTF8(&w) && strcmp(bson_iter_utf8(&w, NULL), "majority") == 0) {
            need = n_config / 2 + 1;
        } else {
            char msg[160];
            const char *mode = BSON_ITER_HOLDS_UTF8(&w) ? bson_iter_utf8(&w, NULL) : "?";
            snprintf(msg, sizeof(msg),
                     "No write concern mode named '%s' found in replica set configuration", mode);
            write_concern_error(reply, 79, "UnknownReplWriteConcern", msg, wc);
            return;
        }
    }
    uint64_t count = store_oplog_count(s->oplog);
    if (need <= 1 || count == 0)
        return;
    /* The client's last write is the newest entry (a write that changed nothing waits for the
     * newest entry too, as MongoDB makes it wait for the latest optime). */
    uint64_t last = count - 1;
    int64_t t = store_oplog_time(s->oplog, last), now = sim_wall_ms();
    int64_t due[SIM_MAX_SERVERS];
    int nd = 0;
    for (int i = 0; i < s->nservers; i++) {
        struct sim_server *m = &s->servers[i];
        if (m == srv || m->removed)
            continue;
        sim_repl_catch_up(m);
        if (m->applied > last)
            due[nd++] = now;
        else if (!m->listening || t < 0)
            due[nd++] = INT64_MAX;
        else
            due[nd++] = t + 1 + (int64_t)m->lag_ms; /* applied once it is past t */
    }
    qsort(due, (size_t)nd, sizeof(due[0]), cmp_i64);
    int64_t when = due[need - 2]; /* need - 1 secondaries besides the primary */
    int64_t wait = when == INT64_MAX ? INT64_MAX : (when > now ? when - now : 0);
    if (wtimeout > 0 && wait > wtimeout) {
        sim_conn_block(conn, (uint64_t)wtimeout);
        write_concern_error(reply, 64, "WriteConcernFailed", "waiting for replication timed out",
                            wc);
        return;
    }
    if (wait == INT64_MAX)
        sim_conn_block(conn, SIM_WC_FOREVER_MS);
    else if (wait > 0)
        sim_conn_block(conn, (uint64_t)wait);
}
