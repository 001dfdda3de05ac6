/*
 * status.c: the replies mongolb writes itself: its hello, mongolbStatus, and error documents.
 *
 * mongolb always presents itself as a mongos (msg "isdbgrid"), even in front of a replica set:
 * a driver that saw a replica-set member's hello would discover the members and connect to them
 * directly, bypassing the proxy. The limits it reports are the most conservative among the
 * healthy backends, so drivers never send what some backend cannot take.
 */
#include "proxy.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

void status_build_error(bson_t *doc, int code, const char *code_name, const char *errmsg)
{
    BSON_APPEND_DOUBLE(doc, "ok", 0.0);
    BSON_APPEND_UTF8(doc, "errmsg", errmsg);
    BSON_APPEND_INT32(doc, "code", code);
    BSON_APPEND_UTF8(doc, "codeName", code_name);
}

void status_build_hello(struct proxy *p, const struct request_info *ri, int64_t connection_id,
                        bson_t *doc)
{
    struct topology_limits lim;
    /* The backends' limits; the last ones known, or MongoDB 5.0's, when none is reachable. */
    if (!ops_hello_limits(p, &lim))
        return;
    if (ri->legacy_hello)
        BSON_APPEND_BOOL(doc, "ismaster", true);
    else
        BSON_APPEND_BOOL(doc, "isWritablePrimary", true);
    BSON_APPEND_UTF8(doc, "msg", "isdbgrid");
    BSON_APPEND_INT32(doc, "maxBsonObjectSize", lim.max_bson);
    BSON_APPEND_INT32(doc, "maxMessageSizeBytes", lim.max_msg);
    BSON_APPEND_INT32(doc, "maxWriteBatchSize", lim.max_batch);
    BSON_APPEND_DATE_TIME(doc, "localTime", (int64_t)time(NULL) * 1000);
    /* Sessions exist only if every backend has them: report none otherwise. */
    if (lim.session_timeout_min >= 0)
        BSON_APPEND_INT32(doc, "logicalSessionTimeoutMinutes", lim.session_timeout_min);
    /* A unique id per client connection; a backend's would repeat across clients. */
    BSON_APPEND_INT64(doc, "connectionId", connection_id);
    BSON_APPEND_INT32(doc, "minWireVersion", lim.min_wire);
    BSON_APPEND_INT32(doc, "maxWireVersion", lim.max_wire);
    BSON_APPEND_BOOL(doc, "readOnly", false);
    if (ri->hello_ok)
        BSON_APPEND_BOOL(doc, "helloOk", true);
    BSON_APPEND_DOUBLE(doc, "ok", 1.0);
}

/* Users shown per server's pool at most; more are summed up in "otherUsers". */
#define STATUS_MAX_POOL_USERS 64

/*
 * Passthrough pools per user: the connections of server idx logged in as each user, by name only
 * ("user@db"; the service user's, or unauthenticated, connections under "" ). Never a key.
 */
void status_user_pools(struct proxy *p, int idx, bson_t *pool_doc)
{
    struct pool *pl = &p->pools[idx];
    const struct auth_user *users[STATUS_MAX_POOL_USERS];
    int total[STATUS_MAX_POOL_USERS], idle[STATUS_MAX_POOL_USERS];
    int n = 0, others = 0;
    struct list *lists[2] = {&pl->idle, &pl->busy};
    for (int l = 0; l < 2; l++) {
        for (struct list *e = lists[l]->next; e != lists[l]; e = e->next) {
            const struct bconn *b = list_entry(e, struct bconn, link);
            int k = 0;
            while (k < n && users[k] != b->au)
                k++;
            if (k == n) {
                if (n == STATUS_MAX_POOL_USERS) {
                    others++;
                    continue;
                }
                users[n] = b->au;
                total[n] = idle[n] = 0;
                n++;
            }
            total[k]++;
            idle[k] += l == 0;
        }
    }
    bson_t arr, row;
    BSON_APPEND_ARRAY_BEGIN(pool_doc, "users", &arr);
    for (int k = 0; k < n; k++) {
        char key[16], name[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2] = "";
        snprintf(key, sizeof(key), "%d", k);
        if (users[k])
            snprintf(name, sizeof(name), "%s@%s", users[k]->user, users[k]->db);
        BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &row);
        BSON_APPEND_UTF8(&row, "user", name);
        BSON_APPEND_INT32(&row, "total", total[k]);
        BSON_APPEND_INT32(&row, "idle", idle[k]);
        bson_append_document_end(&arr, &row);
    }
    bson_append_array_end(pool_doc, &arr);
    if (others)
        BSON_APPEND_INT32(pool_doc, "otherUsersConnections", others);
}

/* Resident set size in kilobytes, from /proc. */
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

void status_build(struct proxy *p, bson_t *doc)
{
    bson_t servers, s, counters, cur, tags, pool;
    BSON_APPEND_UTF8(doc, "version", MONGOLB_VERSION);
    BSON_APPEND_UTF8(doc, "mode", config_mode_name(p->cfg.mode));
    BSON_APPEND_INT64(doc, "uptimeMillis", proxy_now(p) - p->started_ms);
    BSON_APPEND_INT32(doc, "clients", p->n_clients);
    int waiting = 0;
    for (struct list *e = p->select_waiters.next; e != &p->select_waiters; e = e->next)
        waiting++;
    /* Requests waiting for a suitable server, e.g. for a primary during an election. */
    BSON_APPEND_INT32(doc, "waitingForServer", waiting);
    BSON_APPEND_INT64(doc, "rssKB", rss_kb());
    /* Bytes held in connection buffers, and the budget above which connections stop being read. */
    BSON_APPEND_INT64(doc, "bufferedBytes", (int64_t)p->sctx.buffered);
    BSON_APPEND_INT64(doc, "maxBufferBytes", (int64_t)p->sctx.budget_max);
    BSON_APPEND_ARRAY_BEGIN(doc, "servers", &servers);
    int shown = 0;
    for (int i = 0; i < p->topo.n; i++) {
        const struct server *sv = &p->topo.servers[i];
        if (!sv->in_use)
            continue; /* a released slot */
        char key[16];
        snprintf(key, sizeof(key), "%d", shown++);
        BSON_APPEND_DOCUMENT_BEGIN(&servers, key, &s);
        BSON_APPEND_UTF8(&s, "address", sv->addr);
        BSON_APPEND_UTF8(&s, "type", server_type_name(sv->type));
        if (sv->rtt_known)
            BSON_APPEND_DOUBLE(&s, "rttMillis", sv->rtt_ms);
        else
            BSON_APPEND_NULL(&s, "rttMillis");
        BSON_APPEND_INT32(&s, "inFlight", sv->in_flight);
        BSON_APPEND_INT64(&s, "requests", (int64_t)sv->requests);
        if (sv->set_name[0])
            BSON_APPEND_UTF8(&s, "setName", sv->set_name);
        if (sv->removed)
            BSON_APPEND_BOOL(&s, "removed", true);
        double stale = topology_staleness_ms(&p->topo, i);
        if (stale >= 0)
            BSON_APPEND_DOUBLE(&s, "stalenessMillis", stale);
        BSON_APPEND_DOCUMENT_BEGIN(&s, "tags", &tags);
        for (int t = 0; t < sv->n_tags; t++)
            BSON_APPEND_UTF8(&tags, sv->tags[t].name, sv->tags[t].value);
        bson_append_document_end(&s, &tags);
        const struct pool *pl = &p->pools[i];
        BSON_APPEND_DOCUMENT_BEGIN(&s, "pool", &pool);
        BSON_APPEND_INT32(&pool, "total", pl->total);
        BSON_APPEND_INT32(&pool, "idle", pl->idle_count);
        BSON_APPEND_INT32(&pool, "busy", pl->total - pl->idle_count - pl->connecting);
        BSON_APPEND_INT32(&pool, "connecting", pl->connecting);
        BSON_APPEND_INT32(&pool, "waiting", pl->n_waiters);
        BSON_APPEND_INT64(&pool, "waits", (int64_t)pl->waits);
        if (p->cfg.auth_mode == MLB_AUTH_PASSTHROUGH)
            status_user_pools(p, i, &pool);
        if (pl->login_refusals > 0) {
            /* The service user's login was refused (the reason names no secret). */
            bson_t lr;
            int64_t left = pl->login_retry_ms - proxy_now(p);
            BSON_APPEND_DOCUMENT_BEGIN(&pool, "serviceLoginRefused", &lr);
            BSON_APPEND_INT32(&lr, "inARow", pl->login_refusals);
            BSON_APPEND_INT64(&lr, "retryInMillis", left > 0 ? left : 0);
            BSON_APPEND_UTF8(&lr, "error", pl->login_error);
            bson_append_document_end(&pool, &lr);
        }
        bson_append_document_end(&s, &pool);
        /* The backend leg's bytes: on the wire, and before compression or after decompression
         * (equal when nothing is compressed). */
        BSON_APPEND_DOCUMENT_BEGIN(&s, "traffic", &pool);
        BSON_APPEND_INT64(&pool, "bytesOut", (int64_t)pl->traffic.bytes_out);
        BSON_APPEND_INT64(&pool, "bytesIn", (int64_t)pl->traffic.bytes_in);
        BSON_APPEND_INT64(&pool, "uncompressedBytesOut", (int64_t)pl->traffic.raw_out);
        BSON_APPEND_INT64(&pool, "uncompressedBytesIn", (int64_t)pl->traffic.raw_in);
        BSON_APPEND_INT64(&pool, "compressedMsgsOut", (int64_t)pl->traffic.msgs_out);
        BSON_APPEND_INT64(&pool, "compressedMsgsIn", (int64_t)pl->traffic.msgs_in);
        bson_append_document_end(&s, &pool);
        if (sv->last_error[0])
            BSON_APPEND_UTF8(&s, "lastError", sv->last_error);
        bson_append_document_end(&servers, &s);
    }
    bson_append_array_end(doc, &servers);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "cursors", &cur);
    BSON_APPEND_INT64(&cur, "open", (int64_t)p->cursors.n);
    BSON_APPEND_INT64(&cur, "max", (int64_t)p->cursors.max);
    BSON_APPEND_INT64(&cur, "opened", (int64_t)p->cursors.added);
    BSON_APPEND_INT64(&cur, "idCollisions", (int64_t)p->cursors.collisions);
    BSON_APPEND_INT64(&cur, "evicted", (int64_t)p->cursors.evicted);
    BSON_APPEND_INT64(&cur, "expired", (int64_t)p->cursors.expired);
    bson_append_document_end(doc, &cur);
    BSON_APPEND_INT64(doc, "transactionsPinned", (int64_t)txn_pins_count(p));
    auth_status(p, doc);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "counters", &counters);
    const struct proxy_stats *st = &p->stats;
    BSON_APPEND_INT64(&counters, "clientsAccepted", (int64_t)st->clients_accepted);
    BSON_APPEND_INT64(&counters, "clientsRefused", (int64_t)st->clients_refused);
    BSON_APPEND_INT64(&counters, "requests", (int64_t)st->requests);
    BSON_APPEND_INT64(&counters, "repliesLocal", (int64_t)st->replies_local);
    BSON_APPEND_INT64(&counters, "errorsReturned", (int64_t)st->errors_returned);
    BSON_APPEND_INT64(&counters, "retries", (int64_t)st->retries);
    BSON_APPEND_INT64(&counters, "getMoresRouted", (int64_t)st->getmores_routed);
    BSON_APPEND_INT64(&counters, "killCursorsRouted", (int64_t)st->killcursors_routed);
    BSON_APPEND_INT64(&counters, "cursorNotFound", (int64_t)st->cursor_not_found);
    BSON_APPEND_INT64(&counters, "misroutesAvoided", (int64_t)st->misroutes_avoided);
    BSON_APPEND_INT64(&counters, "transactionCommandsPinned", (int64_t)st->txn_pinned);
    BSON_APPEND_INT64(&counters, "badFrames", (int64_t)st->bad_frames);
    BSON_APPEND_INT64(&counters, "backendConnects", (int64_t)st->backend_connects);
    BSON_APPEND_INT64(&counters, "backendConnectFailures", (int64_t)st->backend_connect_failures);
    BSON_APPEND_INT64(&counters, "backendInterrupted", (int64_t)st->backend_interrupted);
    BSON_APPEND_INT64(&counters, "clientsTimedOut", (int64_t)st->clients_timed_out);
    BSON_APPEND_INT64(&counters, "requestsTimedOut", (int64_t)st->requests_timed_out);
    BSON_APPEND_INT64(&counters, "tooDeep", (int64_t)st->too_deep);
    BSON_APPEND_INT64(&counters, "fdLimitRefusals", (int64_t)st->fd_limit_refusals);
    BSON_APPEND_INT64(&counters, "tlsHandshakeFailures", (int64_t)st->tls_handshake_failures);
    BSON_APPEND_INT64(&counters, "compressedRequests", (int64_t)st->compressed_requests);
    BSON_APPEND_INT64(&counters, "bufferBudgetWaits", (int64_t)p->sctx.budget_waits);
    bson_append_document_end(doc, &counters);
    BSON_APPEND_DOUBLE(doc, "ok", 1.0);
}
