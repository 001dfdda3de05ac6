/*
 * ops.c: what an operator sees of the request path: the per-request accounting behind /metrics
 * (latency histograms, errors by code), the warning logged for every error mongolb returns (rate
 * limited per code), the slow-request line, the Prometheus exposition, the readiness check of
 * /readyz, and the commands mongolb answers for itself without a backend (ping, buildInfo, and
 * hello's limits once no backend is reachable).
 *
 * The request path only adds numbers here (metrics.c): formatting happens when /metrics is
 * scraped or a line is logged.
 */
#include "proxy.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "mongo_errors.h"

_Static_assert(METRICS_MAX_SERVERS >= TOPOLOGY_MAX_SERVERS, "a histogram per server slot");

/* Error lines: at most error_log_limit per code per this window. */
#define ERROR_LOG_WINDOW_MS 10000

enum metrics_class ops_class(const struct request_info *ri)
{
    if (ri->kind == REQ_GET_MORE || ri->kind == REQ_LEGACY_GET_MORE)
        return METRICS_GETMORE;
    if (ri->is_write)
        return METRICS_WRITE;
    if (ri->retryable_read || ri->opens_cursor)
        return METRICS_READ;
    return METRICS_COMMAND;
}

/* "db.collection" when the command's first value names a collection, else "db". Only for log
 * lines, which are rare: it parses the frame again. */
static void request_ns(const struct request_info *ri, const uint8_t *frame, size_t len, char *out,
                       size_t out_len)
{
    snprintf(out, out_len, "%s", ri->db);
    struct wire_msg m;
    bson_t body;
    bson_iter_t it;
    if (!frame || ri->opcode != WIRE_OP_MSG || wire_msg_parse(frame, len, &m) != 0 ||
        !wire_msg_body(&m, &body) || !bson_iter_init(&it, &body) || !bson_iter_next(&it) ||
        !BSON_ITER_HOLDS_UTF8(&it))
        return;
    uint32_t n;
    const char *coll = bson_iter_utf8(&it, &n);
    snprintf(out, out_len, "%s.%.*s", ri->db, (int)(n < 120 ? n : 120), coll);
}

static const char *slot_addr(struct proxy *p, int server)
{
    if (server < 0 || server >= p->topo.n || !p->topo.servers[server].in_use)
        return NULL;
    return p->topo.servers[server].addr;
}

void ops_error_returned(struct proxy *p, const char *prefix, const struct request_info *ri,
                        const uint8_t *frame, size_t len, int server, int32_t code, const char *msg)
{
    struct metrics_state *m = &p->metrics;
    metrics_codes_add(&m->errors, code);
    uint64_t suppressed;
    bool take = metrics_rl_take(&m->rl, code, proxy_now(p), p->cfg.error_log_limit,
                                ERROR_LOG_WINDOW_MS, &suppressed);
    if (suppressed > 0) {
        char line[160];
        snprintf(line, sizeof(line),
                 "%llu more errors with code %d were not logged in the last "
                 "%d s",
                 (unsigned long long)suppressed, code, ERROR_LOG_WINDOW_MS / 1000);
        struct log_field f[] = {{"code", NULL, code}, {"suppressed", NULL, (long long)suppressed}};
        if (LOG_WARN <= log_current_level)
            log_write_fields(LOG_WARN, NULL, line, f, 2);
    }
    if (!take) {
        m->log_suppressed++;
        return;
    }
    if (LOG_WARN > log_current_level)
        return;
    char ns[200];
    request_ns(ri, frame, len, ns, sizeof(ns));
    const char *addr = slot_addr(p, server);
    struct log_field f[] = {
        {"command", ri->command[0] ? ri->command : "?", 0},
        {"ns", ns, 0},
        {"server", addr ? addr : "-", 0},
        {"code", NULL, code},
        {"codeName", mongo_error_name(code), 0},
        {"errmsg", msg, 0},
    };
    log_write_fields(LOG_WARN, prefix, "error returned", f, 6);
}

void ops_request_done(struct proxy *p, const char *prefix, const struct request_info *ri,
                      const uint8_t *frame, size_t len, int server, int32_t code,
                      int32_t relayed_code, uint64_t start_ns)
{
    uint64_t ns = uv_hrtime() - start_ns;
    const char *addr = slot_addr(p, server);
    enum metrics_class cls = ops_class(ri);
    metrics_request_done(&p->metrics, cls, addr ? server : -1, addr, ns);
    int slow = p->cfg.slow_request_ms;
    if (slow <= 0 || ns < (uint64_t)slow * 1000000u)
        return;
    /* A getMore with maxTimeMS is an awaitData getMore (change streams, tailable cursors): it
     * waits by design. */
    if (cls == METRICS_GETMORE && ri->max_time_ms > 0)
        return;
    p->metrics.slow_requests++;
    if (LOG_INFO > log_current_level)
        return;
    char ns_buf[200], outcome[48];
    request_ns(ri, frame, len, ns_buf, sizeof(ns_buf));
    if (code)
        snprintf(outcome, sizeof(outcome), "error %d", code);
    else if (relayed_code)
        snprintf(outcome, sizeof(outcome), "server error %d", relayed_code);
    else
        snprintf(outcome, sizeof(outcome), "ok");
    struct log_field f[] = {
        {"command", ri->command[0] ? ri->command : "?", 0},
        {"ns", ns_buf, 0},
        {"server", addr ? addr : "-", 0},
        {"durationMillis", NULL, (long long)(ns / 1000000u)},
        {"outcome", outcome, 0},
    };
    log_write_fields(LOG_INFO, prefix, "slow request", f, 5);
}

void ops_topology_changed(struct proxy *p)
{
    struct metrics_state *m = &p->metrics;
    uint64_t usable = 0;
    for (int i = 0; i < p->topo.n && i < 64; i++)
        if (topology_is_selectable(&p->topo, &p->topo.servers[i]))
            usable |= 1ull << i;
    m->servers_lost += (uint64_t)__builtin_popcountll(m->usable_mask & ~usable);
    m->usable_mask = usable;
    int primary = topology_primary(&p->topo);
    if (primary >= 0 && primary != m->last_primary) {
        /* The first primary seen is no failover. */
        if (m->last_primary != -2)
            m->failovers++;
        m->last_primary = primary;
    }
}

void ops_init(struct proxy *p)
{
    p->metrics.last_primary = -2; /* no primary seen yet */
}

/* --- commands answered without a backend --------------------------------------------------- */

/* What hello reports when no backend has ever answered: MongoDB 5.0's values, mongolb's minimum
 * backend version, so that a driver never uses what some backend could not take. */
static const struct topology_limits fallback_limits = {
    .min_wire = 0,
    .max_wire = TOPOLOGY_MIN_WIRE_VERSION,
    .max_bson = 16 * 1024 * 1024,
    .max_msg = 48000000,
    .max_batch = 100000,
    .session_timeout_min = 30,
};

bool ops_hello_limits(struct proxy *p, struct topology_limits *out)
{
    if (topology_limits(&p->topo, out)) {
        p->last_limits = *out;
        p->limits_seen = true;
        return true;
    }
    if (p->limits_seen) {
        /* Every backend is down now: answer as a mongos does without its shards, with what they
         * last reported. */
        *out = p->last_limits;
        return true;
    }
    if (proxy_now(p) - p->started_ms >= p->cfg.connect_timeout_ms) {
        /* The first checks have all ended and none succeeded. */
        if (!p->fallback_logged) {
            p->fallback_logged = true;
            log_warn(NULL,
                     "no backend has answered yet; hello reports MongoDB %s limits until "
                     "one does",
                     TOPOLOGY_MIN_MONGODB);
        }
        *out = fallback_limits;
        return true;
    }
    return false;
}

int64_t ops_hello_wait_until(struct proxy *p)
{
    return p->started_ms + p->cfg.connect_timeout_ms;
}

/* The release a wire version stands for (the lowest one that reports it). */
static void wire_to_version(int32_t wire, int *major, int *minor)
{
    static const struct {
        int32_t wire;
        int major, minor;
    } table[] = {
        {13, 5, 0}, {14, 5, 1}, {15, 5, 2}, {16, 5, 3}, {17, 6, 0}, {18, 6, 1}, {19, 6, 2},
        {20, 6, 3}, {21, 7, 0}, {22, 7, 1}, {23, 7, 2}, {24, 7, 3}, {25, 8, 0},
    };
    size_t n = sizeof(table) / sizeof(table[0]);
    *major = 0;
    *minor = 0;
    for (size_t i = 0; i < n; i++) {
        if (table[i].wire <= wire) {
            *major = table[i].major;
            *minor = table[i].minor;
        }
    }
}

static void build_info(struct proxy *p, bson_t *doc)
{
    struct topology_limits lim;
    bool known = topology_limits(&p->topo, &lim);
    if (!known && p->limits_seen) {
        lim = p->last_limits;
        known = true;
    }
    int v[3] = {0, 0, 0};
    char version[32];
    if (known && lim.max_wire >= TOPOLOGY_MIN_WIRE_VERSION) {
        /* The backends' release, as far as their wire version tells it: drivers and tools
         * decide features by it, as they would talking to the mongos itself. */
        wire_to_version(lim.max_wire, &v[0], &v[1]);
        snprintf(version, sizeof(version), "%d.%d.0", v[0], v[1]);
    } else {
        sscanf(MONGOLB_VERSION, "%d.%d.%d", &v[0], &v[1], &v[2]);
        snprintf(version, sizeof(version), "%s", MONGOLB_VERSION);
    }
    bson_t arr, sub;
    BSON_APPEND_UTF8(doc, "version", version);
    BSON_APPEND_UTF8(doc, "gitVersion", "mongolb-" MONGOLB_VERSION);
    BSON_APPEND_ARRAY_BEGIN(doc, "modules", &arr);
    bson_append_array_end(doc, &arr);
    BSON_APPEND_UTF8(doc, "sysInfo", "deprecated");
    BSON_APPEND_ARRAY_BEGIN(doc, "versionArray", &arr);
    BSON_APPEND_INT32(&arr, "0", v[0]);
    BSON_APPEND_INT32(&arr, "1", v[1]);
    BSON_APPEND_INT32(&arr, "2", v[2]);
    BSON_APPEND_INT32(&arr, "3", 0);
    bson_append_array_end(doc, &arr);
    BSON_APPEND_INT32(doc, "bits", (int32_t)(sizeof(void *) * 8));
    BSON_APPEND_BOOL(doc, "debug", false);
    BSON_APPEND_INT32(doc, "maxBsonObjectSize", known ? lim.max_bson : 16 * 1024 * 1024);
    BSON_APPEND_ARRAY_BEGIN(doc, "storageEngines", &arr);
    bson_append_array_end(doc, &arr);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "mongolb", &sub);
    BSON_APPEND_UTF8(&sub, "version", MONGOLB_VERSION);
    BSON_APPEND_BOOL(&sub, "backendVersionKnown", known);
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOUBLE(doc, "ok", 1.0);
}

bool ops_local_command(struct proxy *p, const struct request_info *ri, bson_t *doc)
{
    if (ri->kind != REQ_FORWARD || ri->more_to_come)
        return false;
    if (strcmp(ri->command, "ping") == 0) {
        /* A mongos answers ping itself, without its shards: so does mongolb, so that a liveness
         * probe built on ping does not restart it whenever the cluster is down. */
        BSON_APPEND_DOUBLE(doc, "ok", 1.0);
        return true;
    }
    if (strcmp(ri->command, "buildInfo") == 0 || strcmp(ri->command, "buildinfo") == 0) {
        build_info(p, doc);
        return true;
    }
    return false;
}

/* --- readiness ------------------------------------------------------------------------------ */

int ops_ready(struct proxy *p, char *why, size_t why_len)
{
    if (p->shutting_down) {
        snprintf(why, why_len, "shutting down");
        return -ESHUTDOWN;
    }
    struct select_request req = {
        .write = false,
        .exclude_idx = -1,
        .rp = p->cfg.mode == MLB_MODE_REPLICASET ? &p->default_read_pref : NULL,
    };
    int idx = topology_select(&p->topo, &req, proxy_rand32, p);
    bool mongos = p->cfg.mode == MLB_MODE_MONGOS;
    const char *rp = config_read_pref_name(p->cfg.read_preference);
    if (idx >= 0) {
        if (mongos)
            snprintf(why, why_len, "ready: mongos %s is usable", p->topo.servers[idx].addr);
        else
            snprintf(why, why_len, "ready: %s can serve read preference %s",
                     p->topo.servers[idx].addr, rp);
        return 0;
    }
    int n = mongos ? snprintf(why, why_len, "no mongos is usable:")
                   : snprintf(why, why_len, "no server is suitable for read preference %s:", rp);
    for (int i = 0; i < p->topo.n && n >= 0 && (size_t)n < why_len; i++) {
        const struct server *s = &p->topo.servers[i];
        if (!s->in_use)
            continue;
        n += snprintf(why + n, why_len - (size_t)n, " %s is %s%s%s%s;", s->addr,
                      server_type_name(s->type), s->last_error[0] ? " (" : "", s->last_error,
                      s->last_error[0] ? ")" : "");
    }
    return -EAGAIN;
}

/* --- the Prometheus exposition --------------------------------------------------------------- */

/* One metric without labels: HELP, TYPE and the value. */
static int one(struct wire_buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    if (metrics_write_header(b, name, type, help) < 0)
        return -ENOMEM;
    return metrics_write_uint(b, name, NULL, v);
}

/* A label list with the server's address: server="host:port". */
static void server_label(const struct server *s, char *out, size_t len)
{
    char esc[400];
    metrics_escape_label(s->addr, esc, sizeof(esc));
    snprintf(out, len, "server=\"%s\"", esc);
}

/* Which per-server value a row prints. */
enum per_server {
    PS_UP,
    PS_RTT,
    PS_IN_FLIGHT,
    PS_REQUESTS,
    PS_POOL_OPEN,
    PS_POOL_IDLE,
    PS_POOL_BUSY,
    PS_POOL_CONNECTING,
    PS_POOL_WAITERS,
    PS_POOL_WAITS,
};

static int per_server(struct proxy *p, struct wire_buf *b, const char *name, const char *type,
                      const char *help, enum per_server what)
{
    if (metrics_write_header(b, name, type, help) < 0)
        return -ENOMEM;
    for (int i = 0; i < p->topo.n; i++) {
        const struct server *s = &p->topo.servers[i];
        const struct pool *pl = &p->pools[i];
        if (!s->in_use)
            continue;
        char labels[512];
        server_label(s, labels, sizeof(labels));
        int rc = 0;
        switch (what) {
        case PS_UP: {
            char esc[64];
            metrics_escape_label(server_type_name(s->type), esc, sizeof(esc));
            size_t n = strlen(labels);
            snprintf(labels + n, sizeof(labels) - n, ",type=\"%s\"", esc);
            rc = metrics_write_uint(b, name, labels, topology_is_selectable(&p->topo, s));
            break;
        }
        case PS_RTT:
            if (s->rtt_known)
                rc = metrics_write_value(b, name, labels, s->rtt_ms / 1000.0);
            break;
        case PS_IN_FLIGHT:
            rc = metrics_write_uint(b, name, labels,
                                    (uint64_t)(s->in_flight > 0 ? s->in_flight : 0));
            break;
        case PS_REQUESTS:
            rc = metrics_write_uint(b, name, labels, s->requests);
            break;
        case PS_POOL_OPEN:
            rc = metrics_write_uint(b, name, labels, (uint64_t)pl->total);
            break;
        case PS_POOL_IDLE:
            rc = metrics_write_uint(b, name, labels, (uint64_t)pl->idle_count);
            break;
        case PS_POOL_BUSY: {
            int busy = pl->total - pl->idle_count - pl->connecting;
            rc = metrics_write_uint(b, name, labels, (uint64_t)(busy > 0 ? busy : 0));
            break;
        }
        case PS_POOL_CONNECTING:
            rc = metrics_write_uint(b, name, labels, (uint64_t)pl->connecting);
            break;
        case PS_POOL_WAITERS:
            rc = metrics_write_uint(b, name, labels, (uint64_t)pl->n_waiters);
            break;
        case PS_POOL_WAITS:
            rc = metrics_write_uint(b, name, labels, pl->waits);
            break;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int codes(struct wire_buf *b, const char *name, const char *help,
                 const struct metrics_codes *t, bool with_name)
{
    if (metrics_write_header(b, name, "counter", help) < 0)
        return -ENOMEM;
    for (int i = 0; i < t->n; i++) {
        char labels[128];
        if (with_name)
            snprintf(labels, sizeof(labels), "code=\"%d\",codeName=\"%s\"", t->code[i],
                     mongo_error_name(t->code[i]));
        else
            snprintf(labels, sizeof(labels), "code=\"%d\"", t->code[i]);
        if (metrics_write_uint(b, name, labels, t->count[i]) < 0)
            return -ENOMEM;
    }
    return 0;
}

int ops_render_metrics(struct proxy *p, struct wire_buf *b)
{
    const struct proxy_stats *st = &p->stats;
    const struct metrics_state *m = &p->metrics;
    int waiting = 0;
    for (struct list *e = p->select_waiters.next; e != &p->select_waiters; e = e->next)
        waiting++;
    char labels[512];
    snprintf(labels, sizeof(labels), "version=\"%s\",mode=\"%s\"", MONGOLB_VERSION,
             config_mode_name(p->cfg.mode));
    int rc = 0;
    rc |= metrics_write_header(b, "mongolb_build_info", "gauge",
                               "Always 1; the labels say which mongolb runs in which mode.");
    rc |= metrics_write_uint(b, "mongolb_build_info", labels, 1);
    rc |= metrics_write_header(b, "mongolb_uptime_seconds", "gauge",
                               "Seconds since mongolb started.");
    rc |= metrics_write_value(b, "mongolb_uptime_seconds", NULL,
                              (double)(proxy_now(p) - p->started_ms) / 1000.0);
    rc |= one(b, "mongolb_requests_total", "counter", "Requests received from applications.",
              st->requests);
    rc |= one(b, "mongolb_local_replies_total", "counter",
              "Replies mongolb wrote itself (hello, ping, buildInfo, mongolbStatus, errors).",
              st->replies_local);
    rc |= codes(b, "mongolb_errors_total",
                "Error documents mongolb made itself and returned to applications, by code.",
                &m->errors, true);
    rc |= codes(b, "mongolb_server_errors_total",
                "Error replies relayed from servers to applications, by code.", &m->relayed_errors,
                false);
    rc |= one(b, "mongolb_retries_total", "counter",
              "Requests tried again on another server after a failure.", st->retries);
    rc |= one(b, "mongolb_failovers_total", "counter",
              "Times the replica set's primary changed to another member.", m->failovers);
    rc |= one(b, "mongolb_servers_lost_total", "counter",
              "Times a usable server became unusable (a failed check, a step-down).",
              m->servers_lost);
    rc |= one(b, "mongolb_requests_timed_out_total", "counter",
              "Requests cut at request_timeout_ms.", st->requests_timed_out);
    rc |= one(b, "mongolb_slow_requests_total", "counter",
              "Requests that took at least slow_request_ms (when it is set).", m->slow_requests);
    rc |= one(b, "mongolb_cursors_open", "gauge", "Cursors in the cursor table.", p->cursors.n);
    rc |= one(b, "mongolb_cursors_opened_total", "counter", "Cursors recorded.", p->cursors.added);
    rc |= one(b, "mongolb_getmores_routed_total", "counter",
              "getMores sent to the server that owns their cursor.", st->getmores_routed);
    rc |= one(b, "mongolb_killcursors_routed_total", "counter",
              "killCursors parts sent to the servers owning the cursors.", st->killcursors_routed);
    rc |= one(b, "mongolb_cursors_not_found_total", "counter",
              "getMores for unknown cursors, answered with CursorNotFound.", st->cursor_not_found);
    rc |= one(b, "mongolb_misroutes_avoided_total", "counter",
              "getMores that came on another connection than the one that opened their cursor "
              "(a per-connection balancer would have sent them elsewhere).",
              st->misroutes_avoided);
    rc |=
        one(b, "mongolb_cursor_id_collisions_total", "counter",
            "Cursor ids two servers both handed out, rewritten by mongolb.", p->cursors.collisions);
    rc |= one(b, "mongolb_cursors_expired_total", "counter",
              "Cursors forgotten after cursors.idle_timeout_ms.", p->cursors.expired);
    rc |= one(b, "mongolb_cursors_evicted_total", "counter",
              "Cursors forgotten because cursors.max_cursors was reached.", p->cursors.evicted);
    rc |= one(b, "mongolb_transactions_pinned", "gauge",
              "Transactions pinned to the server they started on.", txn_pins_count(p));
    rc |= one(b, "mongolb_transaction_commands_pinned_total", "counter",
              "Transaction commands sent to their pinned server.", st->txn_pinned);
    rc |= one(b, "mongolb_clients", "gauge", "Client connections open.",
              (uint64_t)(p->n_clients > 0 ? p->n_clients : 0));
    rc |= one(b, "mongolb_clients_accepted_total", "counter", "Client connections accepted.",
              st->clients_accepted);
    rc |= one(b, "mongolb_clients_refused_total", "counter",
              "Client connections refused (max_clients, the fd limit, shutting down).",
              st->clients_refused);
    rc |= one(b, "mongolb_clients_timed_out_total", "counter",
              "Client connections closed by the frame, idle or write timeouts.",
              st->clients_timed_out);
    rc |= one(b, "mongolb_bad_frames_total", "counter",
              "Client connections closed for malformed or oversized frames.", st->bad_frames);
    rc |= one(b, "mongolb_waiters", "gauge", "Requests waiting for a suitable server.",
              (uint64_t)waiting);
    rc |= one(b, "mongolb_buffered_bytes", "gauge", "Bytes held in connection buffers.",
              p->sctx.buffered);
    rc |= one(b, "mongolb_buffer_limit_bytes", "gauge", "max_buffer_bytes.", p->sctx.budget_max);
    rc |= one(b, "mongolb_buffer_waits_total", "counter",
              "Times a connection waited for the buffer budget.", p->sctx.budget_waits);
    rc |= one(b, "mongolb_backend_connects_total", "counter", "Server connections opened.",
              st->backend_connects);
    rc |= one(b, "mongolb_backend_connect_failures_total", "counter",
              "Server connections that could not be opened.", st->backend_connect_failures);
    rc |= one(b, "mongolb_backend_interrupted_total", "counter",
              "In-use server connections closed because their server failed.",
              st->backend_interrupted);
    rc |= one(b, "mongolb_tls_handshake_failures_total", "counter",
              "TLS handshakes that failed, with clients or servers.", st->tls_handshake_failures);
    rc |= one(b, "mongolb_fd_limit_refusals_total", "counter",
              "Connections refused or not opened near the file descriptor limit.",
              st->fd_limit_refusals);
    rc |= one(b, "mongolb_log_lines_suppressed_total", "counter",
              "Error warnings left out by error_log_limit.", m->log_suppressed);
    if (rc < 0)
        return -ENOMEM;
    if (per_server(p, b, "mongolb_server_up", "gauge",
                   "1 when the server can take requests, else 0; type is its SDAM type.",
                   PS_UP) < 0 ||
        per_server(p, b, "mongolb_server_rtt_seconds", "gauge",
                   "Average round trip of the server's hello checks (EWMA).", PS_RTT) < 0 ||
        per_server(p, b, "mongolb_server_in_flight", "gauge", "Requests in flight on the server.",
                   PS_IN_FLIGHT) < 0 ||
        per_server(p, b, "mongolb_server_requests_total", "counter",
                   "Requests sent to the server (retries included).", PS_REQUESTS) < 0 ||
        per_server(p, b, "mongolb_pool_open_connections", "gauge",
                   "Connections to the server, open or opening.", PS_POOL_OPEN) < 0 ||
        per_server(p, b, "mongolb_pool_idle_connections", "gauge",
                   "Connections to the server idle in the pool.", PS_POOL_IDLE) < 0 ||
        per_server(p, b, "mongolb_pool_busy_connections", "gauge",
                   "Connections to the server carrying a request.", PS_POOL_BUSY) < 0 ||
        per_server(p, b, "mongolb_pool_connecting_connections", "gauge",
                   "Connections to the server being opened.", PS_POOL_CONNECTING) < 0 ||
        per_server(p, b, "mongolb_pool_waiters", "gauge",
                   "Requests waiting for a connection to the server.", PS_POOL_WAITERS) < 0 ||
        per_server(p, b, "mongolb_pool_waits_total", "counter",
                   "Requests that had to wait for a connection to the server.", PS_POOL_WAITS) < 0)
        return -ENOMEM;
    if (metrics_write_header(b, "mongolb_request_duration_seconds", "histogram",
                             "Time from a request's arrival to the end of its reply, by command "
                             "class (read, write, getMore, command).") < 0)
        return -ENOMEM;
    for (int c = 0; c < METRICS_CLASSES; c++) {
        snprintf(labels, sizeof(labels), "class=\"%s\"", metrics_class_name(c));
        if (metrics_write_hist(b, "mongolb_request_duration_seconds", labels, &m->cls[c]) < 0)
            return -ENOMEM;
    }
    if (metrics_write_header(b, "mongolb_server_request_duration_seconds", "histogram",
                             "Time from a request's arrival to the end of its reply, by the "
                             "server it last went to.") < 0)
        return -ENOMEM;
    for (int i = 0; i < p->topo.n; i++) {
        const struct server *s = &p->topo.servers[i];
        if (!s->in_use)
            continue;
        static const struct metrics_hist empty;
        const struct metrics_hist *h =
            strcmp(m->server[i].addr, s->addr) == 0 ? &m->server[i].hist : &empty;
        server_label(s, labels, sizeof(labels));
        if (metrics_write_hist(b, "mongolb_server_request_duration_seconds", labels, h) < 0)
            return -ENOMEM;
    }
    return 0;
}
