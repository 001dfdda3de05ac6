/*
 * sim_cmds.c: what a simulated server answers. The handshake (hello/isMaster, awaitable), cursors
 * (getMore, killCursors and the first batch of every cursor command), replica-set role checks,
 * sessions, transactions, retryable writes, the failCommand failpoint and the sim* control
 * commands. Everything about data is delegated to the store (store_exec).
 *
 * The rules copy MongoDB's observable behaviour where the proxy depends on it: error documents
 * {ok:0, errmsg, code, codeName, errorLabels} (the labels decided as the servers decide them, by
 * sim_errors.c), per-server cursors and transactions (so a request that reaches the wrong server
 * fails as it would on a real cluster), one deployment-wide record of retryable writes (so a
 * retry that lands elsewhere still returns the first result), and one of transaction outcomes in
 * the store (so a commit retried on a new primary, or on another mongos with its recoveryToken,
 * finds that the transaction committed, as on a real deployment).
 *
 * Control commands: simStats, simTxnLog, simStepDown, simKill, simRevive, simSetLatency, and for
 * replica sets simSetLag {server, ms} (replication lag, see sim_repl.c), simReconfig {remove,
 * add} (membership and setVersion; members by index or host:port) and simSetMe {server, me} (a
 * member whose hello names another address than the one it is reached at).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sim.h"
#include "sim_errors.h"

/* --- small helpers ----------------------------------------------------------------------- */

/* The one shard behind the simulated mongoses, as their recoveryTokens name it. */
#define SIM_SHARD_ID "mongosim"

struct code_name {
    int32_t code;
    const char *name;
};

static const struct code_name code_names[] = {
    {1, "InternalError"},
    {2, "BadValue"},
    {6, "HostUnreachable"},
    {7, "HostNotFound"},
    {9, "FailedToParse"},
    {11, "UserNotFound"},
    {13, "Unauthorized"},
    {14, "TypeMismatch"},
    {18, "AuthenticationFailed"},
    {20, "IllegalOperation"},
    {24, "LockTimeout"},
    {26, "NamespaceNotFound"},
    {43, "CursorNotFound"},
    {50, "MaxTimeMSExpired"},
    {59, "CommandNotFound"},
    {63, "StaleShardVersion"},
    {64, "WriteConcernFailed"},
    {70, "ShardNotFound"},
    {89, "NetworkTimeout"},
    {91, "ShutdownInProgress"},
    {112, "WriteConflict"},
    {133, "FailedToSatisfyReadPreference"},
    {134, "ReadConcernMajorityNotAvailableYet"},
    {150, "StaleEpoch"},
    {189, "PrimarySteppedDown"},
    {225, "TransactionTooOld"},
    {239, "SnapshotTooOld"},
    {246, "SnapshotUnavailable"},
    {249, "StaleDbVersion"},
    {250, "StaleChunkHistory"},
    {251, "NoSuchTransaction"},
    {256, "TransactionCommitted"},
    {262, "ExceededTimeLimit"},
    {263, "OperationNotSupportedInTransaction"},
    {267, "PreparedTransactionInProgress"},
    {272, "MigrationConflict"},
    {343, "ShardCannotRefreshDueToLocksHeld"},
    {352, "UnsupportedOpQueryCommand"},
    {358, "InternalTransactionNotSupported"},
    {9001, "SocketException"},
    {10107, "NotWritablePrimary"},
    {11000, "DuplicateKey"},
    {11600, "InterruptedAtShutdown"},
    {11602, "InterruptedDueToReplStateChange"},
    {13388, "StaleConfig"},
    {13435, "NotPrimaryNoSecondaryOk"},
    {13436, "NotPrimaryOrSecondary"},
};

static const char *code_name_of(int32_t code)
{
    for (size_t i = 0; i < sizeof(code_names) / sizeof(code_names[0]); i++)
        if (code_names[i].code == code)
            return code_names[i].name;
    return "UnknownError";
}

void sim_error(bson_t *reply, int32_t code, const char *code_name, const char *errmsg)
{
    bson_reinit(reply);
    BSON_APPEND_DOUBLE(reply, "ok", 0.0);
    BSON_APPEND_UTF8(reply, "errmsg", errmsg);
    BSON_APPEND_INT32(reply, "code", code);
    BSON_APPEND_UTF8(reply, "codeName", code_name ? code_name : code_name_of(code));
}

/* Fills an empty array with the names of SIM_LABEL_* bits. */
static void build_labels(bson_t *arr, unsigned labels)
{
    uint32_t n = 0;
    char key[16];
    const char *k;
    if (labels & SIM_LABEL_TRANSIENT_TXN) {
        bson_uint32_to_string(n++, &k, key, sizeof(key));
        BSON_APPEND_UTF8(arr, k, "TransientTransactionError");
    }
    if (labels & SIM_LABEL_RETRYABLE_WRITE) {
        bson_uint32_to_string(n++, &k, key, sizeof(key));
        BSON_APPEND_UTF8(arr, k, "RetryableWriteError");
    }
}

static bool iter_int64(const bson_iter_t *it, int64_t *out)
{
    if (BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_DOUBLE(it)) {
        *out = bson_iter_as_int64(it);
        return true;
    }
    return false;
}

static bool get_int64(const bson_t *doc, const char *key, int64_t *out)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && iter_int64(&it, out);
}

static bool get_bool(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && bson_iter_as_bool(&it);
}

static void count_command(struct sim_server *srv, const char *name)
{
    for (int i = 0; i < srv->n_cmd_counts; i++) {
        if (strcmp(srv->cmd_counts[i].name, name) == 0) {
            srv->cmd_counts[i].count++;
            return;
        }
    }
    if (srv->n_cmd_counts < SIM_MAX_CMD_NAMES) {
        struct sim_cmd_count *cc = &srv->cmd_counts[srv->n_cmd_counts++];
        snprintf(cc->name, sizeof(cc->name), "%s", name);
        cc->count = 1;
    }
}

static void hex16(const uint8_t *b, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[32] = '\0';
}

/* --- hello ------------------------------------------------------------------------------- */

static int primary_index(const struct sim *s)
{
    for (int i = 0; i < s->nservers; i++)
        if (s->servers[i].primary)
            return i;
    return -1;
}

static void election_id(const struct sim *s, bson_oid_t *oid)
{
    /* Like a real replica set's: 7fffffff then the term, so that a later election compares
     * greater. */
    uint8_t b[12] = {0x7f, 0xff, 0xff, 0xff};
    uint64_t t = (uint64_t)s->term;
    for (int i = 0; i < 8; i++)
        b[4 + i] = (uint8_t)(t >> (56 - 8 * i));
    bson_oid_init_from_data(oid, b);
}

void sim_build_hello(struct sim_server *srv, struct sim_conn *conn, bool legacy, bool hello_ok,
                     bson_t *reply)
{
    struct sim *s = srv->sim;
    bool replset = s->opt.mode == SIM_MODE_REPLSET;
    bool writable = !replset || srv->primary;
    int64_t now = sim_wall_ms();
    bson_t sub;

    BSON_APPEND_BOOL(reply, legacy ? "ismaster" : "isWritablePrimary", writable);
    if (s->opt.mode == SIM_MODE_MONGOS)
        BSON_APPEND_UTF8(reply, "msg", "isdbgrid");
    BSON_APPEND_DOCUMENT_BEGIN(reply, "topologyVersion", &sub);
    BSON_APPEND_OID(&sub, "processId", &srv->process_id);
    BSON_APPEND_INT64(&sub, "counter", srv->topology_counter);
    bson_append_document_end(reply, &sub);
    if (replset && srv->removed) {
        /* A member that the configuration no longer lists answers as a member without a valid
         * configuration (MongoDB's HelloResponse::markAsNoConfig): no hosts, no me, and
         * isreplicaset, which drivers take for an RSGhost. */
        BSON_APPEND_UTF8(reply, "setName", s->opt.set_name);
        BSON_APPEND_BOOL(reply, "secondary", false);
        BSON_APPEND_UTF8(reply, "info", "Does not have a valid replica set config");
        BSON_APPEND_BOOL(reply, "isreplicaset", true);
    } else if (replset) {
        BSON_APPEND_UTF8(reply, "setName", s->opt.set_name);
        BSON_APPEND_INT32(reply, "setVersion", (int32_t)s->set_version);
        BSON_APPEND_BOOL(reply, "secondary", !srv->primary);
        BSON_APPEND_ARRAY_BEGIN(reply, "hosts", &sub);
        char key[16];
        uint32_t n = 0;
        for (int i = 0; i < s->nservers; i++) {
            if (s->servers[i].removed)
                continue;
            const char *k;
            bson_uint32_to_string(n++, &k, key, sizeof(key));
            BSON_APPEND_UTF8(&sub, k, s->servers[i].host_port);
        }
        bson_append_array_end(reply, &sub);
        int p = primary_index(s);
        if (p >= 0)
            BSON_APPEND_UTF8(reply, "primary", s->servers[p].host_port);
        BSON_APPEND_UTF8(reply, "me", srv->me[0] ? srv->me : srv->host_port);
        if (srv->primary) {
            bson_oid_t eid;
            election_id(s, &eid);
            BSON_APPEND_OID(reply, "electionId", &eid);
        }
    }
    if (replset && !srv->removed && s->oplog) {
        sim_repl_append_last_write(srv, reply);
        if (!bson_empty(&srv->tags))
            BSON_APPEND_DOCUMENT(reply, "tags", &srv->tags);
    } else if (replset && !srv->removed) {
        /* The members share one store: everyone has every write. The primary writes continuously
         * (MongoDB's periodic no-op writer), so every lastWriteDate is now. */
        int64_t lw = now;
        bson_t ot;
        BSON_APPEND_DOCUMENT_BEGIN(reply, "lastWrite", &sub);
        BSON_APPEND_DOCUMENT_BEGIN(&sub, "opTime", &ot);
        BSON_APPEND_TIMESTAMP(&ot, "ts", (uint32_t)(lw / 1000), 1);
        BSON_APPEND_INT64(&ot, "t", s->term);
        bson_append_document_end(&sub, &ot);
        BSON_APPEND_DATE_TIME(&sub, "lastWriteDate", lw);
        BSON_APPEND_DOCUMENT_BEGIN(&sub, "majorityOpTime", &ot);
        BSON_APPEND_TIMESTAMP(&ot, "ts", (uint32_t)(lw / 1000), 1);
        BSON_APPEND_INT64(&ot, "t", s->term);
        bson_append_document_end(&sub, &ot);
        BSON_APPEND_DATE_TIME(&sub, "majorityWriteDate", lw);
        bson_append_document_end(reply, &sub);
        if (!bson_empty(&srv->tags))
            BSON_APPEND_DOCUMENT(reply, "tags", &srv->tags);
    }
    BSON_APPEND_INT32(reply, "maxBsonObjectSize", WIRE_MAX_BSON_SIZE);
    BSON_APPEND_INT32(reply, "maxMessageSizeBytes", WIRE_MAX_MESSAGE_SIZE);
    BSON_APPEND_INT32(reply, "maxWriteBatchSize", WIRE_MAX_WRITE_BATCH);
    BSON_APPEND_DATE_TIME(reply, "localTime", now);
    BSON_APPEND_INT32(reply, "logicalSessionTimeoutMinutes", 30);
    BSON_APPEND_INT32(reply, "connectionId", (int32_t)sim_conn_id(conn));
    BSON_APPEND_INT32(reply, "minWireVersion", 0);
    BSON_APPEND_INT32(reply, "maxWireVersion", s->opt.max_wire_version);
    BSON_APPEND_BOOL(reply, "readOnly", false);
    if (hello_ok)
        BSON_APPEND_BOOL(reply, "helloOk", true);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    if (replset && s->oplog)
        sim_repl_append_times(srv, reply);
}

static bool handle_hello(struct sim_server *srv, struct sim_conn *conn,
                         const struct sim_request *req, bool legacy, bson_t *reply)
{
    bool hello_ok = get_bool(&req->cmd, "helloOk");
    bson_iter_t it, sub;
    if (bson_iter_init(&it, &req->cmd) &&
        bson_iter_find_descendant(&it, "client.application.name", &sub) &&
        BSON_ITER_HOLDS_UTF8(&sub))
        sim_conn_set_app_name(conn, bson_iter_utf8(&sub, NULL));

    int64_t max_await;
    if (req->kind == SIM_REQ_MSG && get_int64(&req->cmd, "maxAwaitTimeMS", &max_await) &&
        bson_iter_init_find(&it, &req->cmd, "topologyVersion") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        /* An awaitable hello: answer when the topology changes or after maxAwaitTimeMS, unless the
         * client's topologyVersion is already stale, in which case answer at once. */
        bool exhaust = (req->msg_flags & WIRE_MSG_EXHAUST_ALLOWED) != 0;
        bool same = false;
        bson_iter_t tv;
        if (bson_iter_recurse(&it, &tv) && bson_iter_find(&tv, "processId") &&
            BSON_ITER_HOLDS_OID(&tv) && bson_oid_equal(bson_iter_oid(&tv), &srv->process_id)) {
            bson_iter_recurse(&it, &tv);
            int64_t counter;
            same = bson_iter_find(&tv, "counter") && iter_int64(&tv, &counter) &&
                   counter == srv->topology_counter;
        }
        if (max_await < 0)
            max_await = 0;
        if (same) {
            sim_conn_await_hello(conn, (uint64_t)max_await, exhaust, hello_ok, legacy);
            return false;
        }
        if (exhaust)
            sim_conn_await_hello(conn, (uint64_t)max_await, exhaust, hello_ok, legacy);
    }
    sim_build_hello(srv, conn, legacy, hello_ok, reply);
    /* Compression, as mongod negotiates it: the compressors of the hello's list that this server
     * also has, in its own order of preference; no field when there are none. */
    struct compress_list agreed;
    if (compress_negotiate(&req->cmd, &srv->sim->opt.compressors, &agreed) > 0)
        compress_append_names(reply, "compression", &agreed);
    sim_auth_hello(srv, conn, &req->cmd, reply);
    return true;
}

/* --- transactions and retryable writes --------------------------------------------------- */

static size_t lsid_hash(const uint8_t *lsid)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++)
        h = (h ^ lsid[i]) * 1099511628211ull;
    return (size_t)h;
}

/* With --auth a session is known by its id and its user (mongod's lsid.uid): another user's
 * session of the same id is another session. owner NULL matches any. */
static bool owner_matches(const struct sim *s, const char *have, const char *want)
{
    return !want || !s->opt.auth || strcmp(have, want) == 0;
}

static struct sim_txn *txn_find(struct sim_server *srv, const uint8_t *lsid, const char *owner)
{
    for (struct sim_txn *t = srv->txns[lsid_hash(lsid) % SIM_TXN_BUCKETS]; t; t = t->next)
        if (memcmp(t->lsid, lsid, 16) == 0 && owner_matches(srv->sim, t->owner, owner))
            return t;
    return NULL;
}

/*
 * Ends an open transaction: keeps or undoes its writes, and records the outcome for the whole
 * deployment (store_txn_outcome_set), where a new primary or another mongos recovering the commit
 * decision finds it.
 */
static void txn_end(struct sim_server *srv, struct sim_txn *t, bool commit)
{
    struct sim *s = srv->sim;
    if (commit)
        store_txn_publish(t->live, t->snap, t->undo);
    else
        store_txn_abort(t->snap, t->undo);
    store_free(t->snap);
    t->snap = NULL;
    t->undo = NULL;
    t->state = commit ? SIM_TXN_COMMITTED : SIM_TXN_ABORTED;
    t->oplog_end = commit && s->oplog ? store_oplog_count(s->oplog) : 0;
    store_txn_outcome_set(s->store, t->lsid, t->txn_number,
                          commit ? STORE_TXN_COMMITTED : STORE_TXN_ABORTED);
}

void sim_forget_commits_after(struct sim *s, uint64_t upto)
{
    for (int i = 0; i < s->nservers; i++)
        for (size_t b = 0; b < SIM_TXN_BUCKETS; b++)
            for (struct sim_txn *t = s->servers[i].txns[b]; t; t = t->next)
                if (t->state == SIM_TXN_COMMITTED && t->oplog_end > upto) {
                    /* Its commit was rolled back with its config.transactions record: the
                     * transaction is unknown now, and a retried commit gets NoSuchTransaction. */
                    t->state = SIM_TXN_ABORTED;
                    store_txn_outcome_set(s->store, t->lsid, t->txn_number, STORE_TXN_ABORTED);
                }
}

static struct sim_txn *txn_create(struct sim_server *srv, const uint8_t *lsid, int64_t number,
                                  const char *owner)
{
    struct sim_txn *t = txn_find(srv, lsid, owner);
    if (t) {
        /* A newer transaction on the session replaces the old one, aborting it if still open. */
        if (t->state == SIM_TXN_ACTIVE)
            txn_end(srv, t, false);
    } else {
        t = calloc(1, sizeof(*t));
        if (!t)
            return NULL;
        memcpy(t->lsid, lsid, 16);
        snprintf(t->owner, sizeof(t->owner), "%s", owner);
        size_t b = lsid_hash(lsid) % SIM_TXN_BUCKETS;
        t->next = srv->txns[b];
        srv->txns[b] = t;
    }
    /* The snapshot the transaction reads and writes: the data as of its first statement. */
    t->undo = store_txn_new();
    t->snap = store_clone(srv->store);
    t->live = srv->store;
    t->txn_number = number;
    if (!t->undo || !t->snap) {
        store_txn_abort(t->snap, t->undo);
        store_free(t->snap);
        t->undo = NULL;
        t->snap = NULL;
        t->state = SIM_TXN_ABORTED;
        return NULL;
    }
    t->state = SIM_TXN_ACTIVE;
    return t;
}

/*
 * Whether the writes of t from number `from` on conflict (store_txn_conflicts): a document changed
 * in t's store since its snapshot, or written by another open transaction on that store, on any
 * server of the deployment (the mongos routers share one store).
 */
static bool txn_conflicts(struct sim *s, const struct sim_txn *t, size_t from)
{
    if (store_txn_conflicts(t->undo, from, t->live, NULL, 0))
        return true;
    for (int i = 0; i < s->nservers; i++)
        for (size_t b = 0; b < SIM_TXN_BUCKETS; b++)
            for (const struct sim_txn *o = s->servers[i].txns[b]; o; o = o->next) {
                const struct store_txn *other = o->undo;
                if (o != t && o->state == SIM_TXN_ACTIVE && o->live == t->live &&
                    store_txn_conflicts(t->undo, from, t->live, &other, 1))
                    return true;
            }
    return false;
}

/* MongoDB's answer to a write that conflicts inside a transaction; the labels are added with the
 * others (TransientTransactionError: the driver runs the transaction again). */
static void write_conflict(bson_t *reply)
{
    bson_reinit(reply);
    sim_error(reply, 112, "WriteConflict",
              "Write conflict during plan execution and yielding is disabled. :: Please retry "
              "your operation or multi-document transaction.");
}

void sim_abort_txns(struct sim_server *srv)
{
    for (size_t b = 0; b < SIM_TXN_BUCKETS; b++)
        for (struct sim_txn *t = srv->txns[b]; t; t = t->next)
            if (t->state == SIM_TXN_ACTIVE)
                txn_end(srv, t, false);
}

/*
 * A session's record of its latest retryable write. Like MongoDB's config.transactions, one record
 * per session is kept (the highest txnNumber), so memory is bounded by the number of sessions
 * rather than growing with every write.
 */
static struct sim_retry *retry_find(struct sim *s, const uint8_t *lsid, const char *owner)
{
    for (struct sim_retry *r = s->retries[lsid_hash(lsid) % SIM_RETRY_BUCKETS]; r; r = r->next)
        if (memcmp(r->lsid, lsid, 16) == 0 && owner_matches(s, r->owner, owner))
            return r;
    return NULL;
}

static void retry_save(struct sim *s, const uint8_t *lsid, int64_t number, const bson_t *reply,
                       const char *owner)
{
    struct sim_retry *r = retry_find(s, lsid, owner);
    if (r) {
        bson_destroy(r->reply);
    } else {
        r = calloc(1, sizeof(*r));
        if (!r)
            return;
        memcpy(r->lsid, lsid, 16);
        snprintf(r->owner, sizeof(r->owner), "%s", owner);
        size_t b = lsid_hash(lsid) % SIM_RETRY_BUCKETS;
        r->next = s->retries[b];
        s->retries[b] = r;
    }
    r->txn_number = number;
    r->reply = bson_copy(reply);
    r->oplog_end = s->oplog ? store_oplog_count(s->oplog) : 0;
}

void sim_forget_retries_after(struct sim *s, uint64_t upto)
{
    for (size_t b = 0; b < SIM_RETRY_BUCKETS; b++) {
        struct sim_retry **pp = &s->retries[b];
        while (*pp) {
            struct sim_retry *r = *pp;
            if (r->oplog_end > upto) {
                *pp = r->next;
                bson_destroy(r->reply);
                free(r);
            } else {
                pp = &r->next;
            }
        }
    }
}

void sim_free_retries(struct sim *s)
{
    for (size_t b = 0; b < SIM_RETRY_BUCKETS; b++) {
        struct sim_retry *r = s->retries[b];
        while (r) {
            struct sim_retry *n = r->next;
            bson_destroy(r->reply);
            free(r);
            r = n;
        }
        s->retries[b] = NULL;
    }
}

void sim_free_server_state(struct sim_server *srv)
{
    sim_cursor_close_all(srv);
    for (size_t b = 0; b < SIM_TXN_BUCKETS; b++) {
        struct sim_txn *t = srv->txns[b];
        while (t) {
            struct sim_txn *n = t->next;
            if (t->state == SIM_TXN_ACTIVE) {
                store_txn_abort(t->snap, t->undo);
                store_free(t->snap);
            }
            free(t);
            t = n;
        }
        srv->txns[b] = NULL;
    }
    struct sim_failpoint *fp = &srv->fp;
    if (fp->fail_commands)
        bson_destroy(fp->fail_commands);
    if (fp->error_labels)
        bson_destroy(fp->error_labels);
    if (fp->write_concern_error)
        bson_destroy(fp->write_concern_error);
    memset(fp, 0, sizeof(*fp));
    free(srv->txn_log);
    srv->txn_log = NULL;
    bson_destroy(&srv->tags);
}

static void txn_log_add(struct sim_server *srv, const uint8_t *lsid, int64_t number,
                        const char *cmd, bool in_txn)
{
    if (srv->txn_log_len >= SIM_TXN_LOG_MAX)
        return;
    if (!srv->txn_log) {
        srv->txn_log = calloc(SIM_TXN_LOG_MAX, sizeof(*srv->txn_log));
        if (!srv->txn_log)
            return;
    }
    struct sim_txn_log_entry *e = &srv->txn_log[srv->txn_log_len++];
    memcpy(e->lsid, lsid, 16);
    e->txn_number = number;
    snprintf(e->cmd, sizeof(e->cmd), "%s", cmd);
    e->in_txn = in_txn;
}

/* --- elections --------------------------------------------------------------------------- */

bool sim_electable(const struct sim_server *srv)
{
    return srv->listening && !srv->removed;
}

void sim_elect(struct sim *s, int index)
{
    sim_repl_elect(s, primary_index(s), index);
    for (int i = 0; i < s->nservers; i++)
        s->servers[i].primary = false;
    if (index >= 0) {
        s->servers[index].primary = true;
        s->term++;
    }
    /* Every member's hello changed (primary, electionId), so every topologyVersion moves on and
     * awaiting monitors are answered at once, as after a real election. */
    for (int i = 0; i < s->nservers; i++) {
        s->servers[i].topology_counter++;
        sim_server_topology_changed(&s->servers[i]);
    }
}

/*
 * A real replica set whose primary dies elects another member once the others miss its
 * heartbeats for electionTimeoutMillis (10 s by default), and the new primary's electionId and
 * term are higher. The simulator does the same after SIM_ELECTION_DELAY_MS (200 ms), so that a
 * client sees a short window without a primary, as it would, without slowing tests down. The
 * members' hellos report no primary in between. If no member is alive when the timer fires, the
 * election is retried when a member is revived (simRevive calls sim_primary_lost again).
 */
static void on_election_timer(uv_timer_t *t)
{
    struct sim *s = t->data;
    if (s->stopping || primary_index(s) >= 0)
        return; /* a simStepDown elected someone meanwhile */
    int next = -1;
    for (int d = 1; d <= s->nservers; d++) {
        int j = (s->election_after + d) % s->nservers;
        if (sim_electable(&s->servers[j])) {
            next = j;
            break;
        }
    }
    if (next < 0)
        return;
    sim_elect(s, next);
    log_info(NULL, "election: primary %d lost, %d elected (term %lld)", s->election_after, next,
             (long long)s->term);
}

void sim_elections_init(struct sim *s)
{
    uv_timer_init(s->loop, &s->election_timer);
    s->election_timer.data = s;
}

void sim_primary_lost(struct sim *s, int index)
{
    if (s->opt.mode != SIM_MODE_REPLSET || s->stopping)
        return;
    if (index >= 0 && s->servers[index].primary)
        sim_elect(s, -1); /* no primary until the election; every member's hello says so */
    if (primary_index(s) >= 0)
        return;
    if (index >= 0)
        s->election_after = index;
    uv_timer_start(&s->election_timer, on_election_timer, SIM_ELECTION_DELAY_MS, 0);
}

/* --- failpoints -------------------------------------------------------------------------- */

static void fp_clear(struct sim_failpoint *fp)
{
    if (fp->fail_commands)
        bson_destroy(fp->fail_commands);
    if (fp->error_labels)
        bson_destroy(fp->error_labels);
    if (fp->write_concern_error)
        bson_destroy(fp->write_concern_error);
    memset(fp, 0, sizeof(*fp));
}

static bool configure_fail_point(struct sim_server *srv, const bson_t *cmd, bson_t *reply)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, cmd, "configureFailPoint") || !BSON_ITER_HOLDS_UTF8(&it)) {
        sim_error(reply, 9, NULL, "configureFailPoint needs a failpoint name");
        return true;
    }
    if (strcmp(bson_iter_utf8(&it, NULL), "failCommand") != 0) {
        sim_error(reply, 2, NULL, "mongosim only implements the failCommand failpoint");
        return true;
    }
    struct sim_failpoint fp;
    memset(&fp, 0, sizeof(fp));
    if (!bson_iter_init_find(&it, cmd, "mode")) {
        sim_error(reply, 9, NULL, "configureFailPoint needs a mode");
        return true;
    }
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        const char *m = bson_iter_utf8(&it, NULL);
        if (strcmp(m, "alwaysOn") == 0)
            fp.mode = SIM_FP_ALWAYS;
        else if (strcmp(m, "off") == 0)
            fp.mode = SIM_FP_OFF;
        else {
            sim_error(reply, 2, NULL, "unknown failpoint mode");
            return true;
        }
    } else if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t m;
        fp.mode = SIM_FP_ALWAYS;
        bson_iter_recurse(&it, &m);
        while (bson_iter_next(&m)) {
            int64_t v = 0;
            iter_int64(&m, &v);
            if (strcmp(bson_iter_key(&m), "times") == 0) {
                fp.mode = SIM_FP_TIMES;
                fp.times = v;
            } else if (strcmp(bson_iter_key(&m), "skip") == 0) {
                fp.skip = v;
            }
        }
        if (fp.mode == SIM_FP_TIMES && fp.times <= 0)
            fp.mode = SIM_FP_OFF;
    } else {
        sim_error(reply, 14, NULL, "mode must be a string or a document");
        return true;
    }
    if (bson_iter_init_find(&it, cmd, "data") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t d;
        bson_iter_recurse(&it, &d);
        while (bson_iter_next(&d)) {
            const char *k = bson_iter_key(&d);
            uint32_t len;
            const uint8_t *data;
            if (strcmp(k, "failCommands") == 0 && BSON_ITER_HOLDS_ARRAY(&d)) {
                bson_iter_array(&d, &len, &data);
                fp.fail_commands = bson_new_from_data(data, len);
            } else if (strcmp(k, "errorCode") == 0) {
                int64_t v = 0;
                iter_int64(&d, &v);
                fp.has_error_code = true;
                fp.error_code = (int32_t)v;
            } else if (strcmp(k, "errorLabels") == 0 && BSON_ITER_HOLDS_ARRAY(&d)) {
                bson_iter_array(&d, &len, &data);
                fp.error_labels = bson_new_from_data(data, len);
            } else if (strcmp(k, "closeConnection") == 0) {
                fp.close_connection = bson_iter_as_bool(&d);
            } else if (strcmp(k, "blockConnection") == 0) {
                fp.block_connection = bson_iter_as_bool(&d);
            } else if (strcmp(k, "blockTimeMS") == 0) {
                iter_int64(&d, &fp.block_ms);
            } else if (strcmp(k, "writeConcernError") == 0 && BSON_ITER_HOLDS_DOCUMENT(&d)) {
                bson_iter_document(&d, &len, &data);
                fp.write_concern_error = bson_new_from_data(data, len);
            } else if (strcmp(k, "appName") == 0 && BSON_ITER_HOLDS_UTF8(&d)) {
                snprintf(fp.app_name, sizeof(fp.app_name), "%s", bson_iter_utf8(&d, NULL));
            }
        }
    }
    if (fp.mode != SIM_FP_OFF && !fp.fail_commands) {
        fp_clear(&fp);
        sim_error(reply, 9, NULL, "failCommand needs data.failCommands");
        return true;
    }
    fp_clear(&srv->fp);
    srv->fp = fp;
    bson_reinit(reply);
    BSON_APPEND_INT32(reply, "count", 0);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return true;
}

/* Whether the failpoint fires for this command; consumes one of its times/skip when it matches. */
static bool fp_fires(struct sim_server *srv, struct sim_conn *conn, const char *name)
{
    struct sim_failpoint *fp = &srv->fp;
    if (fp->mode == SIM_FP_OFF)
        return false;
    if (fp->app_name[0] && strcmp(fp->app_name, sim_conn_app_name(conn)) != 0)
        return false;
    bson_iter_t it;
    bool listed = false;
    if (bson_iter_init(&it, fp->fail_commands)) {
        while (bson_iter_next(&it)) {
            if (BSON_ITER_HOLDS_UTF8(&it) && strcmp(bson_iter_utf8(&it, NULL), name) == 0) {
                listed = true;
                break;
            }
        }
    }
    if (!listed)
        return false;
    if (fp->skip > 0) {
        fp->skip--;
        return false;
    }
    if (fp->mode == SIM_FP_TIMES && --fp->times <= 0) {
        /* Keep the data until this command is failed with it; mode off stops later matches. */
        fp->mode = SIM_FP_OFF;
    }
    return true;
}

/* --- control commands -------------------------------------------------------------------- */

static int server_arg(struct sim *s, const bson_t *cmd, const char *key, bson_t *reply)
{
    int64_t i;
    if (!get_int64(cmd, key, &i) || i < 0 || i >= s->nservers) {
        sim_error(reply, 2, NULL, "expected a server index");
        return -1;
    }
    return (int)i;
}

/* Appends serverStatus-style opcounters of srv to doc (simStats and serverStatus share it). */
static void append_opcounters(bson_t *doc, const struct sim_server *srv)
{
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(doc, "compression", &sub);
    BSON_APPEND_INT64(&sub, "msgsIn", (int64_t)srv->compressed.msgs_in);
    BSON_APPEND_INT64(&sub, "bytesIn", (int64_t)srv->compressed.bytes_in);
    BSON_APPEND_INT64(&sub, "uncompressedBytesIn", (int64_t)srv->compressed.raw_in);
    BSON_APPEND_INT64(&sub, "msgsOut", (int64_t)srv->compressed.msgs_out);
    BSON_APPEND_INT64(&sub, "bytesOut", (int64_t)srv->compressed.bytes_out);
    BSON_APPEND_INT64(&sub, "uncompressedBytesOut", (int64_t)srv->compressed.raw_out);
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "opcounters", &sub);
    BSON_APPEND_INT64(&sub, "insert", (int64_t)srv->opcounters.insert);
    BSON_APPEND_INT64(&sub, "query", (int64_t)srv->opcounters.query);
    BSON_APPEND_INT64(&sub, "update", (int64_t)srv->opcounters.update);
    BSON_APPEND_INT64(&sub, "delete", (int64_t)srv->opcounters.del);
    BSON_APPEND_INT64(&sub, "getmore", (int64_t)srv->opcounters.getmore);
    BSON_APPEND_INT64(&sub, "command", (int64_t)srv->opcounters.command);
    bson_append_document_end(doc, &sub);
}
static void append_stats(struct sim_server *srv, bson_t *doc)
{
    bson_t sub;
    BSON_APPEND_INT32(doc, "index", srv->index);
    BSON_APPEND_UTF8(doc, "host", srv->host_port);
    const char *role = "standalone";
    if (srv->sim->opt.mode == SIM_MODE_MONGOS)
        role = "mongos";
    else if (srv->sim->opt.mode == SIM_MODE_REPLSET)
        role = srv->removed ? "removed" : srv->primary ? "primary" : "secondary";
    BSON_APPEND_UTF8(doc, "role", role);
    BSON_APPEND_BOOL(doc, "alive", srv->listening);
    BSON_APPEND_INT64(doc, "latencyMs", (int64_t)srv->latency_ms);
    if (srv->sim->opt.mode == SIM_MODE_REPLSET) {
        sim_repl_catch_up(srv);
        BSON_APPEND_INT64(doc, "lagMs", (int64_t)srv->lag_ms);
        BSON_APPEND_INT64(doc, "oplogApplied", (int64_t)srv->applied);
        if (srv->me[0])
            BSON_APPEND_UTF8(doc, "me", srv->me);
    }
    BSON_APPEND_DOCUMENT_BEGIN(doc, "commands", &sub);
    for (int i = 0; i < srv->n_cmd_counts; i++)
        BSON_APPEND_INT64(&sub, srv->cmd_counts[i].name, (int64_t)srv->cmd_counts[i].count);
    bson_append_document_end(doc, &sub);
    append_opcounters(doc, srv);
    BSON_APPEND_INT64(doc, "cursorsOpen", (int64_t)srv->cursors_open);
    BSON_APPEND_INT64(doc, "cursorsTimedOut", (int64_t)srv->cursors_timed_out);
    BSON_APPEND_INT64(doc, "connections", (int64_t)srv->conns_current);
    BSON_APPEND_INT64(doc, "connectionsTotal", (int64_t)srv->conns_total);
    BSON_APPEND_INT64(doc, "txnCommands", (int64_t)srv->txn_commands);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "auth", &sub);
    BSON_APPEND_INT64(&sub, "saslStarts", (int64_t)srv->auth_stats.sasl_starts);
    BSON_APPEND_INT64(&sub, "speculative", (int64_t)srv->auth_stats.speculative);
    BSON_APPEND_INT64(&sub, "successes", (int64_t)srv->auth_stats.successes);
    BSON_APPEND_INT64(&sub, "failures", (int64_t)srv->auth_stats.failures);
    BSON_APPEND_INT64(&sub, "unauthorized", (int64_t)srv->auth_stats.unauthorized);
    bson_append_document_end(doc, &sub);
}

static void reset_stats(struct sim_server *srv)
{
    srv->n_cmd_counts = 0;
    memset(&srv->opcounters, 0, sizeof(srv->opcounters));
    memset(&srv->compressed, 0, sizeof(srv->compressed));
    srv->txn_commands = 0;
    srv->txn_log_len = 0;
    srv->cursors_timed_out = 0;
    memset(&srv->auth_stats, 0, sizeof(srv->auth_stats));
}

/* The arguments of a control command: {simX: {args}} or the command itself ({simX: 1, args}). */
static const bson_t *control_args(const bson_t *cmd, const char *name, bson_t *sub)
{
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    if (bson_iter_init_find(&it, cmd, name) && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(sub, data, len))
            return sub;
    }
    return cmd;
}

/* Every member's hello changed (hosts, setVersion, me): their topologyVersions move on and
 * awaiting monitors are answered at once, as a real reconfig makes them. */
static void topology_changed_everywhere(struct sim *s)
{
    for (int i = 0; i < s->nservers; i++) {
        s->servers[i].topology_counter++;
        sim_server_topology_changed(&s->servers[i]);
    }
}

/* simSetLag {server: i, ms: N}: member i applies the primary's writes N ms late from now on. The
 * first lag other than 0 gives every member its own copy of the data (sim_repl_start). */
static void set_lag(struct sim *s, const bson_t *args, bson_t *reply)
{
    int64_t ms;
    int i = server_arg(s, args, "server", reply);
    if (i < 0)
        return;
    if (!get_int64(args, "ms", &ms) || ms < 0 || ms > 86400000) {
        sim_error(reply, 2, NULL, "simSetLag needs 0 <= ms <= 86400000");
        return;
    }
    /* What the member applied under its old lag stays applied: a smaller lag makes it catch up,
     * a larger one makes it stall until the new lag is reached, never go back. */
    sim_repl_catch_up(&s->servers[i]);
    s->servers[i].lag_ms = (uint64_t)ms;
    if (ms > 0 && sim_repl_start(s, false) < 0) {
        sim_error(reply, 1, NULL, "simSetLag: out of memory");
        return;
    }
    BSON_APPEND_BOOL(reply, "replicating", s->oplog != NULL);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

/* simSetMe {server: i, me: "host:port" | null}: member i reports another address as its own in
 * hello (a member reached through an address that is not the one in the set's configuration). */
static void set_me(struct sim *s, const bson_t *args, bson_t *reply)
{
    bson_iter_t it;
    int i = server_arg(s, args, "server", reply);
    if (i < 0)
        return;
    struct sim_server *srv = &s->servers[i];
    if (!bson_iter_init_find(&it, args, "me") ||
        (!BSON_ITER_HOLDS_UTF8(&it) && !BSON_ITER_HOLDS_NULL(&it))) {
        sim_error(reply, 2, NULL, "simSetMe needs me: \"host:port\" or null");
        return;
    }
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        uint32_t len;
        const char *me = bson_iter_utf8(&it, &len);
        if (len == 0 || len >= sizeof(srv->me)) {
            sim_error(reply, 2, NULL, "simSetMe: me must be 1 to 95 characters");
            return;
        }
        memcpy(srv->me, me, len + 1);
    } else {
        srv->me[0] = '\0';
    }
    srv->topology_counter++;
    sim_server_topology_changed(srv);
    BSON_APPEND_UTF8(reply, "me", srv->me[0] ? srv->me : srv->host_port);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

/* Marks in set[] the members an array of simReconfig names: indexes or "host:port". Returns
 * false with an error in reply for a name that is no member. */
static bool reconfig_members(struct sim *s, const bson_t *args, const char *key, bool *set,
                             bson_t *reply)
{
    bson_iter_t it, a;
    if (!bson_iter_init_find(&it, args, key))
        return true;
    if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &a)) {
        sim_error(reply, 2, NULL, "simReconfig: add and remove are arrays of members");
        return false;
    }
    while (bson_iter_next(&a)) {
        int found = -1;
        int64_t v;
        if (iter_int64(&a, &v)) {
            if (v >= 0 && v < s->nservers)
                found = (int)v;
        } else if (BSON_ITER_HOLDS_UTF8(&a)) {
            for (int i = 0; i < s->nservers; i++)
                if (strcmp(s->servers[i].host_port, bson_iter_utf8(&a, NULL)) == 0)
                    found = i;
        }
        if (found < 0) {
            sim_error(reply, 2, NULL,
                      "simReconfig: a member is a server index or the host:port of one");
            return false;
        }
        set[found] = true;
    }
    return true;
}

/*
 * simReconfig {remove: [member...], add: [member...]}: a new configuration of the replica set
 * without the removed members and with the added ones (members of this simulator, by index or
 * host:port, that an earlier simReconfig removed). setVersion goes up by one, as with
 * replSetReconfig; a removed member answers hello as a member without a configuration (an
 * RSGhost) and serves nothing, and applies no writes until it is added back. The primary cannot
 * remove itself (replSetReconfig refuses a configuration without the node it runs on), and the
 * set keeps at least one member.
 */
static void reconfig(struct sim *s, const bson_t *args, bson_t *reply)
{
    bool rm[SIM_MAX_SERVERS] = {false}, add[SIM_MAX_SERVERS] = {false};
    if (!reconfig_members(s, args, "remove", rm, reply) ||
        !reconfig_members(s, args, "add", add, reply))
        return;
    int left = 0;
    for (int i = 0; i < s->nservers; i++) {
        if (rm[i] && add[i]) {
            sim_error(reply, 2, NULL, "simReconfig: a member cannot be both added and removed");
            return;
        }
        if (rm[i] && s->servers[i].primary) {
            sim_error(reply, 103, "NewReplicaSetConfigurationIncompatible",
                      "simReconfig: the new configuration must include the primary");
            return;
        }
        left += add[i] || (!rm[i] && !s->servers[i].removed);
    }
    if (left == 0) {
        sim_error(reply, 103, "NewReplicaSetConfigurationIncompatible",
                  "simReconfig: the new configuration has no member");
        return;
    }
    for (int i = 0; i < s->nservers; i++) {
        struct sim_server *srv = &s->servers[i];
        if (add[i] && srv->removed) {
            /* Back in the set: it starts from where it stopped and catches up with its lag. */
            srv->removed = false;
        } else if (rm[i]) {
            sim_repl_catch_up(srv);
            srv->removed = true;
        }
    }
    s->set_version++;
    topology_changed_everywhere(s);
    log_info(NULL, "simReconfig: setVersion %lld, %d members", (long long)s->set_version, left);
    bson_t hosts;
    char key[16];
    uint32_t n = 0;
    BSON_APPEND_INT64(reply, "setVersion", s->set_version);
    BSON_APPEND_ARRAY_BEGIN(reply, "hosts", &hosts);
    for (int i = 0; i < s->nservers; i++) {
        if (s->servers[i].removed)
            continue;
        const char *k;
        bson_uint32_to_string(n++, &k, key, sizeof(key));
        BSON_APPEND_UTF8(&hosts, k, s->servers[i].host_port);
    }
    bson_append_array_end(reply, &hosts);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static bool handle_sim(struct sim_server *srv, struct sim_conn *conn, const char *name,
                       const bson_t *cmd, bson_t *reply)
{
    struct sim *s = srv->sim;
    char key[16];
    bson_t arr, doc;
    if (strcmp(name, "simStats") == 0 || strcmp(name, "simTxnLog") == 0) {
        bool log = strcmp(name, "simTxnLog") == 0;
        BSON_APPEND_ARRAY_BEGIN(reply, "servers", &arr);
        for (int i = 0; i < s->nservers; i++) {
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, key, sizeof(key));
            BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &doc);
            struct sim_server *x = &s->servers[i];
            if (!log) {
                append_stats(x, &doc);
            } else {
                bson_t entries, e;
                BSON_APPEND_INT32(&doc, "index", i);
                BSON_APPEND_UTF8(&doc, "host", x->host_port);
                BSON_APPEND_ARRAY_BEGIN(&doc, "entries", &entries);
                for (size_t j = 0; j < x->txn_log_len; j++) {
                    char ekey[16], hex[33];
                    const char *ek;
                    bson_uint32_to_string((uint32_t)j, &ek, ekey, sizeof(ekey));
                    BSON_APPEND_DOCUMENT_BEGIN(&entries, ek, &e);
                    hex16(x->txn_log[j].lsid, hex);
                    BSON_APPEND_UTF8(&e, "lsid", hex);
                    BSON_APPEND_INT64(&e, "txnNumber", x->txn_log[j].txn_number);
                    BSON_APPEND_UTF8(&e, "cmd", x->txn_log[j].cmd);
                    BSON_APPEND_BOOL(&e, "inTxn", x->txn_log[j].in_txn);
                    bson_append_document_end(&entries, &e);
                }
                bson_append_array_end(&doc, &entries);
            }
            bson_append_document_end(&arr, &doc);
        }
        bson_append_array_end(reply, &arr);
        if (!log) {
            BSON_APPEND_INT64(reply, "retriedWritesDeduplicated", (int64_t)s->retries_deduplicated);
            BSON_APPEND_INT64(reply, "rolledBack", (int64_t)s->rolled_back);
        }
        if (get_bool(cmd, "reset")) {
            for (int i = 0; i < s->nservers; i++)
                reset_stats(&s->servers[i]);
            s->retries_deduplicated = 0;
        }
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "simStepDown") == 0) {
        if (s->opt.mode != SIM_MODE_REPLSET) {
            sim_error(reply, 20, NULL, "simStepDown needs a replica set");
            return true;
        }
        int old = primary_index(s), next = -1;
        bson_iter_t it, to;
        int64_t want;
        if (bson_iter_init_find(&it, cmd, "simStepDown") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
            bson_iter_recurse(&it, &to) && bson_iter_find(&to, "to") && iter_int64(&to, &want)) {
            if (want < 0 || want >= s->nservers || !sim_electable(&s->servers[want])) {
                sim_error(reply, 2, NULL,
                          "simStepDown: 'to' must name a live member of the configuration");
                return true;
            }
            next = (int)want;
        } else {
            for (int d = 1; d <= s->nservers; d++) {
                int j = ((old < 0 ? -1 : old) + d + s->nservers) % s->nservers;
                if (j != old && sim_electable(&s->servers[j])) {
                    next = j;
                    break;
                }
            }
        }
        if (old >= 0)
            sim_abort_txns(&s->servers[old]);
        sim_elect(s, next);
        log_info(NULL, "simStepDown: primary %d -> %d (term %lld)", old, next, (long long)s->term);
        if (next >= 0)
            BSON_APPEND_UTF8(reply, "primary", s->servers[next].host_port);
        else
            BSON_APPEND_NULL(reply, "primary");
        BSON_APPEND_INT64(reply, "term", s->term);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "simKill") == 0) {
        int i = server_arg(s, cmd, "simKill", reply);
        if (i < 0)
            return true;
        sim_server_kill(&s->servers[i], i == srv->index ? conn : NULL);
        log_info(NULL, "simKill: server %d is down", i);
        if (s->servers[i].primary)
            sim_primary_lost(s, i);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "simRevive") == 0) {
        int i = server_arg(s, cmd, "simRevive", reply);
        if (i < 0)
            return true;
        int rc = sim_server_revive(&s->servers[i]);
        if (rc < 0) {
            sim_error(reply, 6, NULL, "simRevive: could not listen again (retry shortly)");
            return true;
        }
        log_info(NULL, "simRevive: server %d is back on port %d", i, s->servers[i].port);
        /* A set left without any live member has no election pending: hold one now. */
        if (s->opt.mode == SIM_MODE_REPLSET && primary_index(s) < 0 &&
            !uv_is_active((uv_handle_t *)&s->election_timer))
            sim_primary_lost(s, -1);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "simSetLatency") == 0) {
        bson_iter_t it;
        const bson_t *args = cmd;
        bson_t sub;
        if (bson_iter_init_find(&it, cmd, "simSetLatency") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&it, &len, &data);
            bson_init_static(&sub, data, len);
            args = &sub;
        }
        int64_t ms;
        int i = server_arg(s, args, "server", reply);
        if (i < 0)
            return true;
        if (!get_int64(args, "ms", &ms) || ms < 0) {
            sim_error(reply, 2, NULL, "simSetLatency needs ms >= 0");
            return true;
        }
        s->servers[i].latency_ms = (uint64_t)ms;
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "simSetLag") == 0 || strcmp(name, "simSetMe") == 0 ||
        strcmp(name, "simReconfig") == 0) {
        if (s->opt.mode != SIM_MODE_REPLSET) {
            char msg[64];
            snprintf(msg, sizeof(msg), "%s needs a replica set", name);
            sim_error(reply, 20, NULL, msg);
            return true;
        }
        bson_t sub;
        const bson_t *args = control_args(cmd, name, &sub);
        if (strcmp(name, "simSetLag") == 0)
            set_lag(s, args, reply);
        else if (strcmp(name, "simSetMe") == 0)
            set_me(s, args, reply);
        else
            reconfig(s, args, reply);
        return true;
    }
    char msg[128];
    snprintf(msg, sizeof(msg),
             "no such command: '%s' (mongosim's control commands: mongosim --help)", name);
    sim_error(reply, 59, "CommandNotFound", msg);
    return true;
}

/* --- cursors ----------------------------------------------------------------------------- */

static void build_first_batch(struct sim_server *srv, const char *ns, const char *owner,
                              struct store_results *res, int64_t batch, bool single, bson_t *reply)
{
    bson_t cdoc, arr;
    size_t pos = 0;
    bson_reinit(reply);
    BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cdoc);
    BSON_APPEND_ARRAY_BEGIN(&cdoc, "firstBatch", &arr);
    sim_batch_fill(res, &pos, &arr, batch > 0 ? batch : SIM_DEFAULT_BATCH);
    bson_append_array_end(&cdoc, &arr);
    int64_t id = 0;
    if (pos < res->n && !single) {
        /* The cursor keeps the documents not yet returned; the ones already sent are freed with
         * it later, which costs nothing more than freeing them now. */
        struct sim_cursor *c = sim_cursor_open(srv, ns, res);
        if (c) {
            c->pos = pos;
            snprintf(c->owner, sizeof(c->owner), "%s", owner);
            id = c->id;
        }
    }
    BSON_APPEND_INT64(&cdoc, "id", id);
    BSON_APPEND_UTF8(&cdoc, "ns", ns);
    bson_append_document_end(reply, &cdoc);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    store_results_free(res);
}

static bool handle_get_more(struct sim_server *srv, struct sim_conn *conn,
                            const struct sim_request *req, bson_t *reply)
{
    bson_iter_t it;
    srv->opcounters.getmore++;
    if (!bson_iter_init_find(&it, &req->cmd, "getMore") || !BSON_ITER_HOLDS_INT64(&it)) {
        sim_error(reply, 14, NULL, "getMore: cursor id must be a 64-bit integer");
        return true;
    }
    int64_t id = bson_iter_int64(&it);
    struct sim_cursor *c = sim_cursor_find(srv, id);
    char msg[512];
    if (!c) {
        snprintf(msg, sizeof(msg), "cursor id %lld not found", (long long)id);
        sim_error(reply, 43, "CursorNotFound", msg);
        return true;
    }
    if (!sim_auth_owns(srv->sim, conn, c->owner)) {
        snprintf(msg, sizeof(msg), "cursor id %lld was not created by the authenticated user",
                 (long long)id);
        sim_error(reply, 13, "Unauthorized", msg);
        return true;
    }
    const char *coll = "";
    if (bson_iter_init_find(&it, &req->cmd, "collection") && BSON_ITER_HOLDS_UTF8(&it))
        coll = bson_iter_utf8(&it, NULL);
    char ns[300];
    snprintf(ns, sizeof(ns), "%s.%s", req->db, coll);
    if (strcmp(ns, c->ns) != 0) {
        snprintf(msg, sizeof(msg),
                 "Requested getMore on namespace '%s', but cursor belongs to a different "
                 "namespace %s",
                 ns, c->ns);
        sim_error(reply, 13, "Unauthorized", msg);
        return true;
    }
    int64_t batch = 0;
    get_int64(&req->cmd, "batchSize", &batch);
    bson_t cdoc, arr;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cdoc);
    BSON_APPEND_ARRAY_BEGIN(&cdoc, "nextBatch", &arr);
    sim_cursor_fill(c, &arr, batch);
    bson_append_array_end(&cdoc, &arr);
    bool done = sim_cursor_exhausted(c);
    BSON_APPEND_INT64(&cdoc, "id", done ? 0 : c->id);
    BSON_APPEND_UTF8(&cdoc, "ns", c->ns);
    bson_append_document_end(reply, &cdoc);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    c->last_used_ms = sim_now_ms(srv->sim);
    /* A server without exhaust getMore (a mongos before 7.1) ignores exhaustAllowed and answers
     * this one request, as any getMore. */
    if (done)
        sim_cursor_close(srv, c);
    else if (req->kind == SIM_REQ_MSG && (req->msg_flags & WIRE_MSG_EXHAUST_ALLOWED) &&
             sim_exhaust_get_more(srv->sim->opt.version, srv->sim->opt.mode == SIM_MODE_MONGOS))
        sim_conn_set_exhaust(conn, id, batch);
    return true;
}

static bool handle_kill_cursors(struct sim_server *srv, struct sim_conn *conn,
                                const struct sim_request *req, bson_t *reply)
{
    bson_iter_t it, ids;
    if (!bson_iter_init_find(&it, &req->cmd, "cursors") || !BSON_ITER_HOLDS_ARRAY(&it)) {
        sim_error(reply, 9, NULL, "killCursors needs a cursors array");
        return true;
    }
    /* As mongod checks before killing anything: one cursor of another user (unless the caller
     * may kill any cursor) fails the whole command, and nothing is killed. */
    bson_iter_recurse(&it, &ids);
    while (bson_iter_next(&ids)) {
        int64_t id;
        struct sim_cursor *c = iter_int64(&ids, &id) ? sim_cursor_find(srv, id) : NULL;
        if (c && !sim_auth_owns(srv->sim, conn, c->owner) &&
            !sim_auth_kill_any_cursor(srv->sim, conn)) {
            char msg[320];
            snprintf(msg, sizeof(msg), "not authorized to kill cursor on %s", c->ns);
            sim_error(reply, 13, "Unauthorized", msg);
            return true;
        }
    }
    bson_t killed, notfound, empty;
    bson_init(&killed);
    bson_init(&notfound);
    uint32_t nk = 0, nn = 0;
    char key[16];
    const char *k;
    bson_iter_recurse(&it, &ids);
    while (bson_iter_next(&ids)) {
        int64_t id;
        if (!iter_int64(&ids, &id))
            continue;
        struct sim_cursor *c = sim_cursor_find(srv, id);
        if (c) {
            sim_cursor_close(srv, c);
            bson_uint32_to_string(nk++, &k, key, sizeof(key));
            BSON_APPEND_INT64(&killed, k, id);
        } else {
            bson_uint32_to_string(nn++, &k, key, sizeof(key));
            BSON_APPEND_INT64(&notfound, k, id);
        }
    }
    /* As MongoDB does, an id this server does not know is no error: it is listed in
     * cursorsNotFound and the command succeeds. */
    bson_init(&empty);
    BSON_APPEND_ARRAY(reply, "cursorsKilled", &killed);
    BSON_APPEND_ARRAY(reply, "cursorsNotFound", &notfound);
    BSON_APPEND_ARRAY(reply, "cursorsAlive", &empty);
    BSON_APPEND_ARRAY(reply, "cursorsUnknown", &empty);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    bson_destroy(&empty);
    bson_destroy(&killed);
    bson_destroy(&notfound);
    return true;
}

/* --- dispatch ---------------------------------------------------------------------------- */

static bool is_write_command(const char *n)
{
    return strcmp(n, "insert") == 0 || strcmp(n, "update") == 0 || strcmp(n, "delete") == 0 ||
           strcmp(n, "findAndModify") == 0 || strcmp(n, "findandmodify") == 0;
}

/* Whether the command asks for readConcern {level: "majority"}. */
static bool read_concern_majority(const bson_t *cmd)
{
    bson_iter_t it, rc;
    return bson_iter_init_find(&it, cmd, "readConcern") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
           bson_iter_recurse(&it, &rc) && bson_iter_find(&rc, "level") &&
           BSON_ITER_HOLDS_UTF8(&rc) && strcmp(bson_iter_utf8(&rc, NULL), "majority") == 0;
}

static bool needs_primary(const char *n)
{
    return is_write_command(n) || strcmp(n, "create") == 0 || strcmp(n, "drop") == 0 ||
           strcmp(n, "dropDatabase") == 0 || strcmp(n, "createIndexes") == 0 ||
           strcmp(n, "dropIndexes") == 0 || strcmp(n, "commitTransaction") == 0 ||
           strcmp(n, "abortTransaction") == 0;
}

static bool is_read_command(const char *n)
{
    return strcmp(n, "find") == 0 || strcmp(n, "aggregate") == 0 || strcmp(n, "count") == 0 ||
           strcmp(n, "distinct") == 0 || strcmp(n, "listCollections") == 0 ||
           strcmp(n, "listIndexes") == 0 || strcmp(n, "listDatabases") == 0 ||
           strcmp(n, "dbStats") == 0 || strcmp(n, "collStats") == 0;
}

static bool secondary_ok(const struct sim_request *req)
{
    if (req->kind == SIM_REQ_QUERY)
        return (req->query_flags & WIRE_QUERY_SECONDARY_OK) != 0;
    bson_iter_t it, mode;
    if (bson_iter_init_find(&it, &req->cmd, "$readPreference") && bson_iter_recurse(&it, &mode) &&
        bson_iter_find(&mode, "mode") && BSON_ITER_HOLDS_UTF8(&mode))
        return strcmp(bson_iter_utf8(&mode, NULL), "primary") != 0;
    return false;
}

/* The session fields of a command. */
struct session_info {
    bool has_lsid;
    uint8_t lsid[16];
    bool has_txn_number;
    int64_t txn_number;
    bool has_autocommit; /* the field is there, as in every statement of a transaction */
    bool in_txn;         /* autocommit:false */
    bool start;          /* startTransaction:true */
    const char *owner;   /* the connection's user, "" for none (sim_auth_owner) */
};

static void parse_session(const bson_t *cmd, struct session_info *si)
{
    memset(si, 0, sizeof(*si));
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd))
        return;
    bool first = true;
    while (bson_iter_next(&it)) {
        if (first) {
            first = false;
            continue;
        }
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "lsid") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bson_iter_t l;
            bson_subtype_t st;
            uint32_t len;
            const uint8_t *bin;
            if (bson_iter_recurse(&it, &l) && bson_iter_find(&l, "id") &&
                BSON_ITER_HOLDS_BINARY(&l)) {
                bson_iter_binary(&l, &st, &len, &bin);
                if (len == 16) {
                    memcpy(si->lsid, bin, 16);
                    si->has_lsid = true;
                }
            }
        } else if (strcmp(k, "txnNumber") == 0) {
            si->has_txn_number = iter_int64(&it, &si->txn_number);
        } else if (strcmp(k, "autocommit") == 0) {
            si->has_autocommit = true;
            si->in_txn = BSON_ITER_HOLDS_BOOL(&it) && !bson_iter_bool(&it);
        } else if (strcmp(k, "startTransaction") == 0) {
            si->start = bson_iter_as_bool(&it);
        }
    }
}

static void no_such_txn(bson_t *reply, const struct session_info *si)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "Transaction with { txnNumber: %lld } has been aborted.",
             (long long)si->txn_number);
    sim_error(reply, 251, "NoSuchTransaction", msg);
}

static void txn_committed_error(bson_t *reply)
{
    sim_error(reply, 256, "TransactionCommitted",
              "Transaction has been committed and cannot be aborted");
}

/*
 * What the deployment knows of a transaction: committed if a server holds it committed or the
 * outcome record says so, aborted or unknown otherwise. With abort_open, the transaction is first
 * aborted wherever it is still open: the shard does that when a mongos asks it for the decision of
 * a transaction that has not committed, so that it can never commit afterwards.
 */
static enum store_txn_outcome deployment_outcome(struct sim *s, const uint8_t *lsid, int64_t number,
                                                 bool abort_open)
{
    for (int i = 0; i < s->nservers; i++) {
        struct sim_txn *t = txn_find(&s->servers[i], lsid, NULL);
        if (!t || t->txn_number != number)
            continue;
        if (t->state == SIM_TXN_ACTIVE && abort_open)
            txn_end(&s->servers[i], t, false);
        if (t->state == SIM_TXN_COMMITTED)
            return STORE_TXN_COMMITTED;
    }
    return store_txn_outcome_get(s->store, lsid, number);
}

/*
 * A commitTransaction reached a mongos that never routed the transaction (the driver or a proxy
 * retried it elsewhere). A real mongos then recovers the decision with the recoveryToken: it sends
 * coordinateCommitTransaction without participants to the shard the token names, and that shard
 * answers from its own record: success if the transaction committed, NoSuchTransaction otherwise
 * (after aborting it if it was still open). An empty token means the transaction only read, and is
 * NoSuchTransaction at once. Returns false, with nothing in reply, when the command carries no
 * recoveryToken document: the caller keeps its answer for that case.
 */
static bool recover_commit(struct sim_server *srv, const struct session_info *si, const bson_t *cmd,
                           bson_t *reply)
{
    bson_iter_t it, tok;
    if (!bson_iter_init_find(&it, cmd, "recoveryToken") || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return false;
    if (!bson_iter_recurse(&it, &tok) || !bson_iter_find(&tok, "recoveryShardId")) {
        sim_error(reply, 251, "NoSuchTransaction",
                  "Recovery token is empty, meaning the transaction only performed reads and can "
                  "be safely retried");
        return true;
    }
    if (!BSON_ITER_HOLDS_UTF8(&tok) || strcmp(bson_iter_utf8(&tok, NULL), SIM_SHARD_ID) != 0) {
        sim_error(reply, 70, "ShardNotFound",
                  "The recoveryToken names a shard that does not exist");
        return true;
    }
    if (deployment_outcome(srv->sim, si->lsid, si->txn_number, true) != STORE_TXN_COMMITTED) {
        sim_error(reply, 251, "NoSuchTransaction",
                  "Recovering the transaction's outcome found the transaction aborted");
        return true;
    }
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return true;
}

/*
 * Runs commitTransaction or abortTransaction into reply. *recovered is set when a mongos answered
 * a commit from the deployment's knowledge rather than from a transaction it holds.
 */
static void finish_txn(struct sim_server *srv, const char *name, const struct session_info *si,
                       const bson_t *cmd, bson_t *reply, bool *recovered)
{
    struct sim *s = srv->sim;
    struct sim_txn *t = si->has_lsid ? txn_find(srv, si->lsid, si->owner) : NULL;
    bool commit = strcmp(name, "commitTransaction") == 0;
    *recovered = false;
    if (!si->has_lsid || !si->has_txn_number) {
        no_such_txn(reply, si);
        return;
    }
    if (!t || t->txn_number != si->txn_number) {
        if (s->opt.mode == SIM_MODE_MONGOS) {
            /* Only a commit can be recovered by a mongos that did not route the transaction; an
             * abort, or a commit without a token, is NoSuchTransaction. (MongoDB answers a commit
             * without a token with error 50940; the simulator has always said NoSuchTransaction,
             * which drivers never see, since they send the token they were given.) */
            if (commit && recover_commit(srv, si, cmd, reply))
                *recovered = !bson_has_field(reply, "code");
            else
                no_such_txn(reply, si);
            return;
        }
        /* A mongod knows every transaction its replica set committed: the commit is replicated
         * in config.transactions, which a new primary reads when the session is next used. So a
         * retried commit succeeds and an abort is refused, as on the member that committed it.
         * A transaction that did not commit left nothing behind (an unprepared transaction
         * writes no oplog entry before its commit): it is unknown here. */
        if (deployment_outcome(s, si->lsid, si->txn_number, false) == STORE_TXN_COMMITTED) {
            if (commit)
                BSON_APPEND_DOUBLE(reply, "ok", 1.0);
            else
                txn_committed_error(reply);
            return;
        }
        no_such_txn(reply, si);
        return;
    }
    if (t->state == SIM_TXN_ACTIVE) {
        /* A write made outside the transaction, since its own write, to a document it wrote:
         * MongoDB makes such a write wait for the transaction to end; the simulator lets it run
         * and fails the commit instead, so that neither write is lost. */
        if (commit && txn_conflicts(s, t, 0)) {
            txn_end(srv, t, false);
            write_conflict(reply);
            return;
        }
        txn_end(srv, t, commit);
    } else if (t->state == SIM_TXN_COMMITTED && !commit) {
        txn_committed_error(reply);
        return;
    } else if (t->state == SIM_TXN_ABORTED) {
        no_such_txn(reply, si);
        return;
    }
    /* A repeated commitTransaction after a successful commit succeeds again, as in MongoDB. */
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static void simple_ok(bson_t *reply)
{
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static bool builtin(struct sim_server *srv, struct sim_conn *conn, const char *name,
                    const struct sim_request *req, bson_t *reply)
{
    struct sim *s = srv->sim;
    bson_t sub;
    if (strcmp(name, "ping") == 0 || strcmp(name, "endSessions") == 0 ||
        strcmp(name, "refreshSessions") == 0) {
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "buildInfo") == 0 || strcmp(name, "buildinfo") == 0) {
        char v[16];
        sim_version_string(s->opt.version, v, sizeof(v));
        int a = 0, b = 0, c = 0;
        sscanf(v, "%d.%d.%d", &a, &b, &c);
        BSON_APPEND_UTF8(reply, "version", v);
        BSON_APPEND_UTF8(reply, "gitVersion", "mongosim");
        BSON_APPEND_ARRAY_BEGIN(reply, "versionArray", &sub);
        BSON_APPEND_INT32(&sub, "0", a);
        BSON_APPEND_INT32(&sub, "1", b);
        BSON_APPEND_INT32(&sub, "2", c);
        BSON_APPEND_INT32(&sub, "3", 0);
        bson_append_array_end(reply, &sub);
        BSON_APPEND_INT32(reply, "bits", 64);
        BSON_APPEND_BOOL(reply, "debug", false);
        BSON_APPEND_INT32(reply, "maxBsonObjectSize", WIRE_MAX_BSON_SIZE);
        BSON_APPEND_ARRAY_BEGIN(reply, "storageEngines", &sub);
        BSON_APPEND_UTF8(&sub, "0", "mongosim");
        bson_append_array_end(reply, &sub);
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "serverStatus") == 0) {
        uint64_t up = sim_now_ms(s) - s->start_ms;
        BSON_APPEND_UTF8(reply, "host", srv->host_port);
        char v[16];
        sim_version_string(s->opt.version, v, sizeof(v));
        BSON_APPEND_UTF8(reply, "version", v);
        BSON_APPEND_UTF8(reply, "process", s->opt.mode == SIM_MODE_MONGOS ? "mongos" : "mongod");
        BSON_APPEND_INT64(reply, "pid", (int64_t)getpid());
        BSON_APPEND_INT64(reply, "uptime", (int64_t)(up / 1000));
        BSON_APPEND_INT64(reply, "uptimeMillis", (int64_t)up);
        BSON_APPEND_DATE_TIME(reply, "localTime", sim_wall_ms());
        BSON_APPEND_DOCUMENT_BEGIN(reply, "connections", &sub);
        BSON_APPEND_INT32(&sub, "current", (int32_t)srv->conns_current);
        BSON_APPEND_INT32(&sub, "available", 838860);
        BSON_APPEND_INT32(&sub, "totalCreated", (int32_t)srv->conns_total);
        bson_append_document_end(reply, &sub);
        append_opcounters(reply, srv);
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "whatsmyuri") == 0) {
        BSON_APPEND_UTF8(reply, "you", "127.0.0.1:0");
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "getCmdLineOpts") == 0) {
        BSON_APPEND_ARRAY_BEGIN(reply, "argv", &sub);
        BSON_APPEND_UTF8(&sub, "0", "mongosim");
        bson_append_array_end(reply, &sub);
        BSON_APPEND_DOCUMENT_BEGIN(reply, "parsed", &sub);
        bson_append_document_end(reply, &sub);
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "getLog") == 0) {
        BSON_APPEND_INT32(reply, "totalLinesWritten", 0);
        BSON_APPEND_ARRAY_BEGIN(reply, "log", &sub);
        bson_append_array_end(reply, &sub);
        simple_ok(reply);
        return true;
    }
    if (strcmp(name, "getParameter") == 0) {
        BSON_APPEND_DOCUMENT_BEGIN(reply, "featureCompatibilityVersion", &sub);
        char v[16];
        snprintf(v, sizeof(v), "%d.%d", s->opt.version / 100, s->opt.version % 100);
        BSON_APPEND_UTF8(&sub, "version", v);
        bson_append_document_end(reply, &sub);
        simple_ok(reply);
        return true;
    }
    (void)conn;
    (void)req;
    return false;
}

/* What the dispatcher carries from running a command to labelling its reply. */
struct dispatch {
    const char *name;
    struct session_info si;
    bool commit_or_abort;
    /* The errorLabels of a failCommand failpoint that fired, which replace the server's own. */
    const bson_t *fp_labels;
    bool labelled; /* the reply already has its labels */
};

/* Appends the failpoint's writeConcernError to the reply of a command that succeeded. */
static void append_fp_write_concern_error(struct sim_server *srv, bson_t *reply)
{
    if (srv->fp.write_concern_error)
        BSON_APPEND_DOCUMENT(reply, "writeConcernError", srv->fp.write_concern_error);
}

/* The code of an error reply ({ok: 0, code}) and of its writeConcernError, or 0 for each. */
static void reply_codes(const bson_t *reply, int32_t *code, int32_t *wc_code)
{
    bson_iter_t it, w;
    int64_t v = 0;
    *code = *wc_code = 0;
    if (bson_iter_init_find(&it, reply, "ok") && !bson_iter_as_bool(&it) &&
        get_int64(reply, "code", &v))
        *code = (int32_t)v;
    if (bson_iter_init_find(&it, reply, "writeConcernError") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &w) && bson_iter_find(&w, "code") && iter_int64(&w, &v))
        *wc_code = (int32_t)v;
}

/* Puts labels inside the reply's writeConcernError too, unless it has its own. The servers only
 * put them at the top level, but PyMongo 3.x looks for them inside writeConcernError. */
static void copy_labels_into_wce(bson_t *reply, const bson_t *labels)
{
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    bson_t wce, out;
    if (!bson_iter_init_find(&it, reply, "writeConcernError") || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return;
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&wce, data, len) || bson_has_field(&wce, "errorLabels"))
        return;
    bson_t *copy = bson_copy(&wce);
    BSON_APPEND_ARRAY(copy, "errorLabels", labels);
    bson_init(&out);
    bson_copy_to_excluding_noinit(reply, &out, "writeConcernError", NULL);
    BSON_APPEND_DOCUMENT(&out, "writeConcernError", copy);
    bson_reinit(reply);
    bson_concat(reply, &out);
    bson_destroy(&out);
    bson_destroy(copy);
}

/*
 * Labels an error reply as the server would once the command has run: from its code and its
 * write-concern error's code, the command's session fields and the kind of server, unless a
 * failpoint with errorLabels fired, whose labels are used instead (none when its list is empty).
 */
static void label_reply(struct sim_server *srv, const struct dispatch *d, bson_t *reply)
{
    int32_t code, wc_code;
    reply_codes(reply, &code, &wc_code);
    if (!code && !wc_code)
        return;
    bson_t arr;
    if (d->fp_labels) {
        if (bson_empty(d->fp_labels))
            return;
        BSON_APPEND_ARRAY(reply, "errorLabels", d->fp_labels);
        if (wc_code)
            copy_labels_into_wce(reply, d->fp_labels);
        return;
    }
    struct sim_label_input in = {
        .mongos = srv->sim->opt.mode == SIM_MODE_MONGOS,
        .wire = srv->sim->opt.max_wire_version,
        .has_txn_number = d->si.has_txn_number,
        .has_autocommit = d->si.has_autocommit,
        .commit_or_abort = d->commit_or_abort,
        .code = code,
        .wc_code = wc_code,
    };
    unsigned labels = sim_error_labels(&in);
    if (!labels)
        return;
    bson_init(&arr);
    build_labels(&arr, labels);
    BSON_APPEND_ARRAY(reply, "errorLabels", &arr);
    if (wc_code)
        copy_labels_into_wce(reply, &arr);
    bson_destroy(&arr);
}

/* Runs one command (not a control command) into reply; returns false when nothing is to be sent. */
static bool run_one(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                    struct dispatch *d, bson_t *reply)
{
    struct sim *s = srv->sim;
    const char *name = d->name;
    const struct session_info *si = &d->si;
    bool legacy_hello = strcmp(name, "isMaster") == 0 || strcmp(name, "ismaster") == 0;
    bool hello = legacy_hello || strcmp(name, "hello") == 0;
    bool retryable = si->has_lsid && si->has_txn_number && !si->in_txn && is_write_command(name);
    bool commit_or_abort = d->commit_or_abort;
    bool wce = false;

    if (fp_fires(srv, conn, name)) {
        struct sim_failpoint *fp = &srv->fp;
        if (fp->close_connection) {
            sim_conn_drop(conn);
            return false;
        }
        if (fp->block_connection && fp->block_ms > 0)
            sim_conn_block(conn, (uint64_t)fp->block_ms);
        d->fp_labels = fp->error_labels;
        if (fp->has_error_code) {
            sim_error(reply, fp->error_code, NULL, "Failing command via 'failCommand' failpoint");
            /* Labelled now, while the failpoint's labels still exist. */
            label_reply(srv, d, reply);
            d->labelled = true;
            if (fp->mode == SIM_FP_OFF)
                fp_clear(fp);
            return true;
        }
        wce = fp->write_concern_error != NULL;
    }

    if (hello)
        return handle_hello(srv, conn, req, legacy_hello, reply);

    if (!req->db) {
        sim_error(reply, 40571, "Location40571", "OP_MSG requests require a $db argument");
        return true;
    }

    if (sim_auth_command(srv, conn, req, name, reply))
        return true;
    if (strcmp(name, "getMore") == 0)
        return handle_get_more(srv, conn, req, reply);
    srv->opcounters.command += strcmp(name, "find") != 0 && !is_write_command(name);
    if (strcmp(name, "killCursors") == 0)
        return handle_kill_cursors(srv, conn, req, reply);
    if (builtin(srv, conn, name, req, reply))
        return true;

    if (s->opt.mode == SIM_MODE_REPLSET && !srv->primary) {
        /* A member that is not primary refuses to begin or continue a transaction, whatever the
         * command, as mongod's session checkout does. */
        if (si->in_txn || commit_or_abort) {
            sim_error(reply, 10107, "NotWritablePrimary",
                      "Not primary so we cannot begin or continue a transaction");
            return true;
        }
        if (needs_primary(name)) {
            sim_error(reply, 10107, "NotWritablePrimary", "not primary");
            return true;
        }
        if (is_read_command(name) && srv->removed) {
            /* A removed member is neither primary nor secondary (state REMOVED): it serves no
             * reads, whatever the read preference. */
            sim_error(reply, 13436, "NotPrimaryOrSecondary",
                      "not primary or secondary; cannot currently read from this replSet member");
            return true;
        }
        if (is_read_command(name) && !secondary_ok(req)) {
            sim_error(reply, 13435, "NotPrimaryNoSecondaryOk", "not primary and secondaryOk=false");
            return true;
        }
    }

    if (si->has_lsid && si->has_txn_number) {
        txn_log_add(srv, si->lsid, si->txn_number, name, si->in_txn || commit_or_abort);
        if (si->in_txn || commit_or_abort)
            srv->txn_commands++;
    }

    if (commit_or_abort) {
        bool recovered;
        finish_txn(srv, name, si, &req->cmd, reply, &recovered);
        if (bson_has_field(reply, "code"))
            return true;
        if (wce)
            append_fp_write_concern_error(srv, reply);
        sim_repl_write_concern(srv, conn, &req->cmd, reply);
        if (s->opt.mode == SIM_MODE_MONGOS) {
            /* A mongos appends the token of the shard that recorded the transaction's writes; one
             * that only recovered the decision knows no such shard, and its token is empty. */
            bson_t rt;
            BSON_APPEND_DOCUMENT_BEGIN(reply, "recoveryToken", &rt);
            if (!recovered)
                BSON_APPEND_UTF8(&rt, "recoveryShardId", SIM_SHARD_ID);
            bson_append_document_end(reply, &rt);
        }
        return true;
    }

    struct store_txn *undo = NULL;
    struct sim_txn *txn = NULL;
    if (si->in_txn) {
        if (!si->has_lsid || !si->has_txn_number) {
            sim_error(reply, 50768, "Location50768",
                      "txnNumber and lsid are required for transactions");
            return true;
        }
        struct sim_txn *t;
        if (si->start) {
            t = txn_create(srv, si->lsid, si->txn_number, si->owner);
            if (!t) {
                sim_error(reply, 1, NULL, "out of memory");
                return true;
            }
        } else {
            t = txn_find(srv, si->lsid, si->owner);
            if (!t || t->txn_number != si->txn_number || t->state != SIM_TXN_ACTIVE) {
                no_such_txn(reply, si);
                return true;
            }
        }
        undo = t->undo;
        txn = t;
    } else if (retryable) {
        struct sim_retry *r = retry_find(s, si->lsid, si->owner);
        if (r && si->txn_number < r->txn_number) {
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "Retryable write with txnNumber %lld is prohibited on session because a "
                     "newer retryable write with txnNumber %lld has already started",
                     (long long)si->txn_number, (long long)r->txn_number);
            sim_error(reply, 225, "TransactionTooOld", msg);
            return true;
        }
        if (r && r->txn_number == si->txn_number) {
            /* Already executed (here or on another server of the deployment): answer as the
             * first execution did, without applying the write again. */
            s->retries_deduplicated++;
            bson_concat(reply, r->reply);
            /* The retry waits for its write concern as the first execution did. */
            sim_repl_write_concern(srv, conn, &req->cmd, reply);
            return true;
        }
    }

    struct store_results res = {0};
    struct store_error err;
    bool is_cursor = false;
    char ns[256];
    ns[0] = '\0';
    memset(&err, 0, sizeof(err));
    size_t writes_before = store_txn_len(undo);
    /* A transaction reads and writes its snapshot; a read with readConcern majority reads the
     * majority-committed data. */
    struct store *data = srv->store;
    if (txn) {
        data = txn->snap;
    } else if (!needs_primary(name) && read_concern_majority(&req->cmd)) {
        struct store *maj = sim_repl_majority_store(srv);
        if (maj)
            data = maj;
    }
    int rc = store_exec(data, req->db, &req->cmd, req->seq_docs, req->n_seq, reply, &res,
                        &is_cursor, ns, sizeof(ns), undo, &err);
    if (rc == 0 && txn && txn_conflicts(s, txn, writes_before)) {
        /* As in MongoDB, the transaction is aborted and the statement fails. */
        store_results_free(&res);
        txn_end(srv, txn, false);
        write_conflict(reply);
        return true;
    }
    if (rc < 0) {
        store_results_free(&res);
        sim_error(reply, err.code ? err.code : 1, err.code_name[0] ? err.code_name : NULL,
                  err.errmsg[0] ? err.errmsg : "store error");
        if (si->in_txn && err.code != 59) {
            /* MongoDB aborts a transaction when one of its statements fails. */
            struct sim_txn *t = txn_find(srv, si->lsid, si->owner);
            if (t && t->state == SIM_TXN_ACTIVE)
                txn_end(srv, t, false);
        }
        return true;
    }

    if (strcmp(name, "find") == 0) {
        srv->opcounters.query++;
    } else if (strcmp(name, "insert") == 0) {
        int64_t n = 0;
        get_int64(reply, "n", &n);
        srv->opcounters.insert += (uint64_t)n;
    } else if (strcmp(name, "update") == 0) {
        srv->opcounters.update++;
    } else if (strcmp(name, "delete") == 0) {
        srv->opcounters.del++;
    }

    if (is_cursor) {
        int64_t batch = 0;
        bool single = get_bool(&req->cmd, "singleBatch");
        if (!get_int64(&req->cmd, "batchSize", &batch)) {
            bson_iter_t it, b;
            if (bson_iter_init_find(&it, &req->cmd, "cursor") && bson_iter_recurse(&it, &b) &&
                bson_iter_find(&b, "batchSize"))
                iter_int64(&b, &batch);
        }
        build_first_batch(srv, ns, sim_auth_owner(conn), &res, batch, single, reply);
    }

    if (retryable)
        retry_save(s, si->lsid, si->txn_number, reply, si->owner);
    /* The write was applied, only its write concern "failed": drivers retry a retryable write on
     * such an error, and the retry must then find the saved reply (saved above, without it). */
    if (wce)
        append_fp_write_concern_error(srv, reply);
    if (!si->in_txn && needs_primary(name))
        sim_repl_write_concern(srv, conn, &req->cmd, reply);
    if (si->in_txn && s->opt.mode == SIM_MODE_MONGOS) {
        bson_t rt;
        BSON_APPEND_DOCUMENT_BEGIN(reply, "recoveryToken", &rt);
        BSON_APPEND_UTF8(&rt, "recoveryShardId", SIM_SHARD_ID);
        bson_append_document_end(reply, &rt);
    }
    return true;
}

/*
 * Commands a newcomer tries in mongosh that mongosim does not model. A real server's error would
 * be wrong (CommandNotFound suggests a typo, an empty success hides that nothing happened), so
 * each fails with CommandNotSupported (115) and a message that names the simulator and why.
 */
static const struct {
    const char *name;
    const char *why;
} unsupported_cmds[] = {
    {"createIndexes", "it keeps only the _id index; queries scan the collection"},
    {"dropIndexes", "it keeps only the _id index"},
    {"explain", "it has no query planner to explain"},
    {"currentOp", "it runs one command at a time and keeps no operation table"},
    {"killOp", "it runs one command at a time and keeps no operation table"},
    {"listShards", "its mongos routers front one simulated shard and keep no shard registry"},
    {"shardCollection", "its mongos routers front one simulated shard"},
    {"balancerStatus", "its mongos routers front one simulated shard"},
    {"replSetGetStatus", "replica set state is shown by hello and simStats"},
    {"mapReduce", "use aggregate"},
};

static bool unsupported(const char *name, bson_t *reply)
{
    for (size_t i = 0; i < sizeof(unsupported_cmds) / sizeof(unsupported_cmds[0]); i++) {
        if (strcasecmp(name, unsupported_cmds[i].name) != 0)
            continue;
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "%s is not supported by mongosim, the MongoDB simulator this deployment runs "
                 "on: %s (mongosim --help lists what it does)",
                 unsupported_cmds[i].name, unsupported_cmds[i].why);
        sim_error(reply, 115, "CommandNotSupported", msg);
        return true;
    }
    return false;
}

bool sim_dispatch(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                  bson_t *reply)
{
    struct dispatch d;
    memset(&d, 0, sizeof(d));
    d.name = wire_command_name(&req->cmd);
    if (!d.name) {
        sim_error(reply, 9, "FailedToParse", "empty command document");
        return true;
    }
    struct sim *s = srv->sim;
    bool control = strncmp(d.name, "sim", 3) == 0;
    bool hello = strcmp(d.name, "hello") == 0 || strcmp(d.name, "isMaster") == 0 ||
                 strcmp(d.name, "ismaster") == 0;
    /* Members that keep their own data stamp replies with times and may make a causal read wait:
     * before anything else, so that a read run again after waiting is counted (and meets the
     * failpoint) once. */
    bool times = s->oplog && !control && !hello;
    if (s->oplog)
        sim_repl_catch_up(srv);
    /* Only a read the member will serve waits: one it refuses (no secondaryOk) fails at once. */
    if (times && !srv->primary && !srv->removed && is_read_command(d.name) && secondary_ok(req)) {
        int64_t wait = sim_repl_read_wait(srv, &req->cmd, sim_conn_waited_ms(conn), reply);
        if (wait > 0) {
            sim_conn_defer(conn, (uint64_t)wait);
            return false;
        }
        if (wait < 0) {
            count_command(srv, d.name);
            sim_repl_append_times(srv, reply);
            return true;
        }
    }
    count_command(srv, d.name);

    /* Control commands and configureFailPoint are never failed by the failpoint. */
    if (control)
        return handle_sim(srv, conn, d.name, &req->cmd, reply);
    if (strcmp(d.name, "configureFailPoint") == 0)
        return configure_fail_point(srv, &req->cmd, reply);

    if (!sim_auth_check(srv, conn, req, d.name, reply) || unsupported(d.name, reply))
        return true;
    parse_session(&req->cmd, &d.si);
    d.si.owner = sim_auth_owner(conn);
    d.commit_or_abort =
        strcmp(d.name, "commitTransaction") == 0 || strcmp(d.name, "abortTransaction") == 0;
    bool send = run_one(srv, conn, req, &d, reply);
    if (send && !d.labelled)
        label_reply(srv, &d, reply);
    if (send && times)
        sim_repl_append_times(srv, reply);
    return send;
}
