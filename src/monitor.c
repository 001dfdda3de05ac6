/*
 * monitor.c: one monitor per backend, probing it with hello on its own connection.
 *
 * Each check resolves the server's name (so a DNS change is followed), connects if the monitoring
 * connection is not open, sends a plain hello and times the round trip. The reply feeds the
 * topology (type, limits, RTT as an EWMA with alpha 0.2); a failure is reported to the
 * coordinator (proxy_check_failed), which marks the server unknown and clears its pool, and, if
 * the server had been known, the check is retried once at once, as the SDAM specification asks;
 * a second failure in a row means the server is gone. Checks run every heartbeat_interval_ms, and
 * an immediate check can be requested, no sooner than 500 ms after the previous one ended. The
 * monitoring connection is never used for client requests and never authenticates.
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "log.h"
#include "srv.h"

#define MIN_HEARTBEAT_MS 500

enum monitor_state {
    MON_IDLE = 0,   /* between checks */
    MON_RESOLVING,  /* getaddrinfo in progress */
    MON_CONNECTING, /* TCP connect in progress */
    MON_CHECKING,   /* hello sent, reply awaited */
    MON_STOPPED,
};

/* The monitoring connection lives in its own allocation so that a failed one can be closed while
 * the next is opened; it is freed in its close callback. */
struct mon_conn {
    struct stream st;
    uv_connect_t connect_req;
    struct monitor *m;
    struct proxy *p;
    struct wire_buf wbuf;
};

struct monitor {
    struct proxy *p;
    int idx;
    enum monitor_state state;
    uv_getaddrinfo_t gai;
    uv_timer_t timer; /* the next check, or the current check's deadline */
    struct mon_conn *conn;
    uint64_t sent_ns;
    int64_t last_end_ms;
    int failures;       /* checks failed in a row */
    bool retry_pending; /* a failed check of a known server is retried once at once */
    bool check_requested;
    bool resolving;    /* a getaddrinfo request is out: m must outlive it */
    bool timer_closed; /* stopped, and the timer's close callback has run */
};

static void check_now(struct monitor *m);
static void schedule(struct monitor *m, uint64_t delay_ms);

static void on_conn_closed(struct stream *s)
{
    struct mon_conn *mc = s->owner;
    mc->p->fds_in_use--;
    wire_buf_free(&mc->wbuf);
    free(mc);
}

static void drop_conn(struct monitor *m)
{
    struct mon_conn *mc = m->conn;
    if (!mc)
        return;
    m->conn = NULL;
    mc->m = NULL;
    stream_close(&mc->st);
}

/* Ends a check that failed: report it and plan the next check. */
static void check_failed(struct monitor *m, const char *why, bool timed_out)
{
    struct proxy *p = m->p;
    drop_conn(m);
    m->state = MON_IDLE;
    m->last_end_ms = proxy_now(p);
    m->failures++;
    const struct server *s = &p->topo.servers[m->idx];
    bool was_known = s->type != SERVER_UNKNOWN;
    /* A server that was known gets one line, "marked unknown: why", from the coordinator; one
     * that was not gets this line when the reason changes. */
    if (!was_known && (!s->last_error[0] || strcmp(s->last_error, why) != 0))
        log_warn(s->addr, "check failed: %s", why);
    proxy_check_failed(p, m->idx, why, timed_out, m->failures);
    if (was_known && !m->retry_pending) {
        m->retry_pending = true;
        schedule(m, 0);
        return;
    }
    m->retry_pending = false;
    schedule(m, (uint64_t)p->cfg.heartbeat_interval_ms);
}

static void on_timer(uv_timer_t *t)
{
    struct monitor *m = t->data;
    if (m->state == MON_IDLE) {
        check_now(m);
        return;
    }
    if (m->state == MON_CONNECTING || m->state == MON_CHECKING) {
        check_failed(m, m->state == MON_CONNECTING ? "connect timed out" : "hello timed out", true);
    }
}

static void schedule(struct monitor *m, uint64_t delay_ms)
{
    if (m->state == MON_STOPPED)
        return;
    uv_timer_start(&m->timer, on_timer, delay_ms, 0);
}

static void on_reply(struct monitor *m, const uint8_t *frame, size_t len)
{
    struct proxy *p = m->p;
    double rtt = (double)(uv_hrtime() - m->sent_ns) / 1e6;
    struct wire_msg msg;
    bson_t reply;
    if (wire_msg_parse(frame, len, &msg) < 0 || !wire_msg_body(&msg, &reply)) {
        check_failed(m, "malformed hello reply", false);
        return;
    }
    struct server *s = &p->topo.servers[m->idx];
    enum server_type before = s->type;
    enum server_type type = topology_classify(&reply);
    if (type == SERVER_UNKNOWN) {
        check_failed(m, "hello failed", false);
        return;
    }
    int bits = topology_on_hello(&p->topo, m->idx, &reply, rtt, proxy_now(p));
    if (!(bits & TOPO_REFUSED) && before != s->type)
        log_info(s->addr, "is %s (rtt %.2f ms)", server_type_name(s->type), rtt);
    m->state = MON_IDLE;
    m->retry_pending = false;
    m->failures = 0;
    m->last_end_ms = proxy_now(p);
    schedule(m, (uint64_t)p->cfg.heartbeat_interval_ms);
    /* Last: the coordinator may stop this very monitor (a member removed). */
    proxy_check_ok(p, m->idx, bits);
}

static int on_frame(struct stream *st, uint8_t *frame, size_t len)
{
    struct mon_conn *mc = st->owner;
    struct monitor *m = mc->m;
    if (!m)
        return -ECANCELED;
    if (m->state != MON_CHECKING) {
        check_failed(m, "unexpected bytes on the monitoring connection", false);
        return -EPROTO;
    }
    uv_timer_stop(&m->timer);
    on_reply(m, frame, len);
    return m->conn == mc ? STREAM_NEXT : -ECANCELED;
}

static void on_error(struct stream *st, int status)
{
    struct mon_conn *mc = st->owner;
    if (!mc->m)
        return;
    char why[240];
    if (status == -EPROTO && stream_tls_error(st)[0]) {
        mc->p->stats.tls_handshake_failures += stream_tls_pending(st);
        snprintf(why, sizeof(why), "%s", stream_tls_error(st));
    } else {
        snprintf(why, sizeof(why), "read: %s",
                 status == -EMSGSIZE ? "a frame of invalid length" : uv_strerror(status));
    }
    check_failed(mc->m, why, false);
}

static void on_written(struct stream *st, int status)
{
    struct mon_conn *mc = st->owner;
    if (!mc->m || status == 0)
        return;
    char why[96];
    snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
    check_failed(mc->m, why, false);
}

static void on_connect(struct stream *st, int status);
static void on_secure(struct stream *st, int status);

static const struct stream_cb mon_stream_cb = {
    .on_secure = on_secure,
    .on_frame = on_frame,
    .on_error = on_error,
    .on_written = on_written,
    .on_connect = on_connect,
    .on_closed = on_conn_closed,
};

/* Sends a hello on the open monitoring connection and arms the check's deadline. */
static void send_hello(struct monitor *m)
{
    struct proxy *p = m->p;
    struct mon_conn *mc = m->conn;
    bson_t cmd = BSON_INITIALIZER;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    BSON_APPEND_UTF8(&cmd, "$db", "admin");
    wire_buf_reset(&mc->wbuf);
    int rc = wire_append_msg(&mc->wbuf, proxy_next_request_id(p), 0, 0, &cmd);
    bson_destroy(&cmd);
    if (rc < 0) {
        check_failed(m, "out of memory", false);
        return;
    }
    m->state = MON_CHECKING;
    m->sent_ns = uv_hrtime();
    uv_buf_t buf = uv_buf_init((char *)mc->wbuf.data, (unsigned)mc->wbuf.len);
    rc = fault_hit(FAULT_MONITOR_WRITE) ? UV_EPIPE : stream_write(&mc->st, &buf, 1);
    if (rc < 0) {
        check_failed(m, uv_strerror(rc), false);
        return;
    }
    uv_timer_start(&m->timer, on_timer, (uint64_t)p->cfg.connect_timeout_ms, 0);
}

static void on_connect(struct stream *st, int status)
{
    struct mon_conn *mc = st->owner;
    struct monitor *m = mc->m;
    if (!m)
        return;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        check_failed(m, why, false);
        return;
    }
    if (fault_hit(FAULT_MONITOR_READ) || stream_read_start(&mc->st) < 0) {
        check_failed(m, "cannot read", false);
        return;
    }
    struct proxy *p = m->p;
    if (p->tls.client) {
        /* The hello follows the TLS handshake (on_secure); the connect deadline still runs. */
        SSL *ssl = fault_hit(FAULT_MONITOR_TLS) ? NULL : SSL_new(p->tls.client);
        const struct server *s = &p->topo.servers[m->idx];
        if (!ssl ||
            tls_client_prepare(ssl, s->host, !p->cfg.upstream_tls_allow_invalid_hostnames) < 0) {
            SSL_free(ssl);
            check_failed(m, "TLS: cannot prepare a connection", false);
            return;
        }
        SSL_set_app_data(ssl, &p->pools[m->idx]);
        if (p->pools[m->idx].tls_session)
            SSL_set_session(ssl, p->pools[m->idx].tls_session);
        if (stream_tls_client(&mc->st, ssl) < 0 && m->conn == mc) {
            char why[240];
            snprintf(why, sizeof(why), "%s", stream_tls_error(&mc->st));
            p->stats.tls_handshake_failures++;
            check_failed(m, why[0] ? why : "TLS handshake failed", false);
        }
        return;
    }
    send_hello(m);
}

static void on_secure(struct stream *st, int status)
{
    struct mon_conn *mc = st->owner;
    if (status == 0 && mc->m && mc->m->conn == mc && mc->m->state == MON_CONNECTING)
        send_hello(mc->m);
    /* A failure is reported through on_error, which follows. */
}

static void connect_resolved(struct monitor *m);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct monitor *m = req->data;
    struct proxy *p = m->p;
    m->resolving = false;
    if (m->state == MON_STOPPED) {
        uv_freeaddrinfo(res);
        if (m->timer_closed)
            free(m);
        return;
    }
    if (status < 0 || !res) {
        char why[128];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", p->topo.servers[m->idx].host,
                 uv_strerror(status));
        uv_freeaddrinfo(res);
        check_failed(m, why, false);
        return;
    }
    struct pool *pl = &p->pools[m->idx];
    memcpy(&pl->addr, res->ai_addr, res->ai_addrlen);
    pl->have_addr = true;
    uv_freeaddrinfo(res);
    connect_resolved(m);
}

/* Opens the monitoring connection to the address in the server's pool. */
static void connect_resolved(struct monitor *m)
{
    struct proxy *p = m->p;
    struct pool *pl = &p->pools[m->idx];
    struct mon_conn *mc = fault_hit(FAULT_MONITOR_ALLOC) ? NULL : calloc(1, sizeof(*mc));
    if (!mc || stream_init_tcp(&p->sctx, &mc->st, &mon_stream_cb, mc, WIRE_MAX_MESSAGE_SIZE) < 0) {
        free(mc);
        check_failed(m, "out of memory", false);
        return;
    }
    mc->m = m;
    mc->p = p;
    p->fds_in_use++;
    m->conn = mc;
    m->state = MON_CONNECTING;
    int rc = fault_hit(FAULT_MONITOR_CONNECT)
                 ? UV_EADDRNOTAVAIL
                 : stream_connect(&mc->st, &mc->connect_req, (const struct sockaddr *)&pl->addr);
    if (rc < 0) {
        check_failed(m, uv_strerror(rc), false);
        return;
    }
    uv_timer_start(&m->timer, on_timer, (uint64_t)p->cfg.connect_timeout_ms, 0);
}

static void check_now(struct monitor *m)
{
    struct proxy *p = m->p;
    if (m->state != MON_IDLE)
        return;
    m->check_requested = false;
    const struct server *s = &p->topo.servers[m->idx];
    if (s->removed) {
        /* No longer a member: stay quiet until a primary lists it again. */
        drop_conn(m);
        schedule(m, (uint64_t)p->cfg.heartbeat_interval_ms);
        return;
    }
    if (m->conn) {
        send_hello(m);
        return;
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    m->state = MON_RESOLVING;
    /* A host named by SRV records looked up through [upstream] dns_server (srv.c). */
    if (srv_cached_addr(p, s->host, s->port, &p->pools[m->idx].addr) == 0) {
        p->pools[m->idx].have_addr = true;
        connect_resolved(m);
        return;
    }
    m->gai.data = m;
    m->resolving = true;
    int rc = uv_getaddrinfo(p->loop, &m->gai, on_resolved, s->host, port, &hints);
    if (rc < 0) {
        m->resolving = false;
        m->state = MON_IDLE;
        check_failed(m, uv_strerror(rc), false);
    }
}

int monitor_start(struct proxy *p, int idx)
{
    struct monitor *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->p = p;
    m->idx = idx;
    m->state = MON_IDLE;
    uv_timer_init(p->loop, &m->timer);
    m->timer.data = m;
    p->monitors[idx] = m;
    check_now(m);
    return 0;
}

void monitor_request_check(struct proxy *p, int idx)
{
    struct monitor *m = p->monitors[idx];
    if (!m || m->state != MON_IDLE || m->check_requested)
        return;
    m->check_requested = true;
    int64_t since = proxy_now(p) - m->last_end_ms;
    schedule(m, since >= MIN_HEARTBEAT_MS ? 0 : (uint64_t)(MIN_HEARTBEAT_MS - since));
}

static void on_monitor_timer_closed(uv_handle_t *h)
{
    struct monitor *m = h->data;
    m->timer_closed = true;
    if (!m->resolving)
        free(m);
}

void monitor_stop(struct proxy *p, int idx)
{
    struct monitor *m = p->monitors[idx];
    if (!m)
        return;
    p->monitors[idx] = NULL;
    if (m->resolving)
        uv_cancel((uv_req_t *)&m->gai);
    m->state = MON_STOPPED;
    drop_conn(m);
    uv_close((uv_handle_t *)&m->timer, on_monitor_timer_closed);
}

void monitor_stop_all(struct proxy *p)
{
    for (int i = 0; i < p->topo.n; i++)
        monitor_stop(p, i);
}
