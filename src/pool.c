/*
 * pool.c: backend connections, pooled per server, one request in flight on each.
 *
 * A connection is opened when a user (a client) needs one and none is idle (up to max_pool_size
 * per server), introduces itself with a hello carrying mongolb's client metadata, and then
 * carries one request at a time. Replies are read into the connection's stream buffer and handed
 * to the user, who relays them to its client from there without a copy and says when it is done
 * (bconn_reply_done). A connection whose server failed since it was opened (the topology's
 * generation moved on) is closed instead of being reused, and so is one past max_lifetime_ms.
 *
 * Failures are reported up, not decided here: a connection that could not be opened or
 * introduced goes to proxy_connect_failed(), one that broke while established to
 * proxy_socket_failed(), and the user of a broken connection hears of it through on_error.
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "log.h"

/* Replies may be as large as a maximal message plus a little: the header's length may go up to
 * the maximum message size the server itself reports, which is never above this. */
#define BCONN_MAX_REPLY (WIRE_MAX_MESSAGE_SIZE + 16 * 1024)
/* Connections kept for the fd limit: backend connections may use these, clients may not. */
#define FD_RESERVE_BACKEND 4

static const struct pool_user_ops *user_ops;

void pool_init(struct proxy *p, const struct pool_user_ops *ops)
{
    user_ops = ops;
    for (int i = 0; i < TOPOLOGY_MAX_SERVERS; i++) {
        struct pool *pl = &p->pools[i];
        memset(pl, 0, sizeof(*pl));
        pl->server = i;
        list_init(&pl->idle);
        list_init(&pl->busy);
        list_init(&pl->waiters);
    }
}

/* Moves b to state st, keeping the pool's lists and counts in step: the one place that does. */
static void set_state(struct bconn *b, enum bconn_state st)
{
    struct pool *pl = &b->p->pools[b->server];
    enum bconn_state old = b->state;
    if (old == st)
        return;
    if (old == BCONN_CONNECTING || old == BCONN_HANDSHAKE) {
        if (st != BCONN_CONNECTING && st != BCONN_HANDSHAKE)
            pl->connecting--;
    }
    if (old == BCONN_IDLE)
        pl->idle_count--;
    list_remove(&b->link);
    b->state = st;
    switch (st) {
    case BCONN_CONNECTING:
    case BCONN_HANDSHAKE:
        if (old != BCONN_CONNECTING && old != BCONN_HANDSHAKE)
            pl->connecting++;
        list_push_back(&pl->busy, &b->link);
        break;
    case BCONN_IDLE:
        pl->idle_count++;
        b->idle_since_ms = proxy_now(b->p);
        list_push_back(&pl->idle, &b->link);
        break;
    case BCONN_BUSY:
        list_push_back(&pl->busy, &b->link);
        break;
    case BCONN_CLOSING:
        pl->total--;
        break;
    }
}

/* Frees b once its last handle is closed. */
static void handle_closed(struct bconn *b)
{
    if (--b->handles_open > 0)
        return;
    wire_buf_free(&b->hbuf);
    free(b);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_stream_closed(struct stream *s)
{
    struct bconn *b = s->owner;
    b->p->fds_in_use--;
    handle_closed(b);
}

static int open_connection(struct proxy *p, int idx);

/* Opens connections for waiters that no connection being opened will serve, within
 * max_pool_size: after a connection closed, its slot must not stay empty while users wait. */
static void refill(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    while (!pl->clearing && pl->connecting < pl->n_waiters && pl->total < p->cfg.max_pool_size &&
           !p->shutting_down) {
        if (open_connection(p, idx) < 0)
            return;
    }
}

void bconn_close(struct bconn *b, const char *why)
{
    if (b->state == BCONN_CLOSING)
        return;
    log_debug(b->prefix, "closing: %s", why);
    set_state(b, BCONN_CLOSING);
    b->user = NULL;
    stream_close(&b->st);
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
    refill(b->p, b->server);
}

/*
 * Tells the user of b (if any) that b failed, after closing it. While the user holds a reply
 * frame, its client is still being sent bytes that live in b's buffer, and it could not answer
 * until that write ends: the failure waits for bconn_reply_done (and the frame loop stays
 * stopped), so that the client gets the rest of what it was sent and then the error.
 */
static void fail_user(struct bconn *b, int status, const char *why)
{
    if (b->cur_frame && b->user) {
        if (!b->fail_pending) {
            b->fail_pending = true;
            b->fail_status = status;
            snprintf(b->fail_why, sizeof(b->fail_why), "%s", why);
        }
        return;
    }
    void *user = b->user;
    b->user = NULL;
    bconn_close(b, why);
    if (user)
        user_ops->on_error(user, b, status, why);
}

/* Hands a ready connection to the first waiter, or parks it on the idle list. */
static void give_out(struct proxy *p, struct bconn *b)
{
    struct pool *pl = &p->pools[b->server];
    if (!list_empty(&pl->waiters)) {
        struct pool_waiter *w = list_entry(pl->waiters.next, struct pool_waiter, link);
        list_remove(&w->link);
        pl->n_waiters--;
        w->pool = -1;
        b->user = w->user;
        set_state(b, BCONN_BUSY);
        user_ops->on_ready(w->user, b, 0, NULL);
        return;
    }
    set_state(b, BCONN_IDLE);
}

/* True when b must not serve another request. */
static const char *retire_reason(struct proxy *p, struct bconn *b)
{
    const struct server *s = &p->topo.servers[b->server];
    if (b->generation != s->generation)
        return "pool was cleared";
    if (p->shutting_down)
        return "shutting down";
    if (b->fail_pending)
        return b->fail_why;
    if (stream_pending_bytes(&b->st) != b->cur_frame)
        return "unexpected bytes after a reply";
    if (p->cfg.max_lifetime_ms > 0 && proxy_now(p) - b->created_ms >= p->cfg.max_lifetime_ms)
        return "max_lifetime_ms reached";
    return NULL;
}

void pool_release(struct proxy *p, struct bconn *b)
{
    if (b->state == BCONN_CLOSING)
        return;
    b->user = NULL;
    b->reply_expected = false;
    const char *why = retire_reason(p, b);
    if (why) {
        bconn_close(b, why);
        return;
    }
    give_out(p, b);
}

void pool_abandon(struct proxy *p, struct bconn *b, bool reply_held)
{
    (void)p;
    if (b->state == BCONN_CLOSING)
        return;
    b->user = NULL;
    if (reply_held)
        bconn_reply_done(b);
    /* The request may run for long on the server; closing frees the pool's slot at once rather
     * than holding it until a reply nobody wants arrives. */
    bconn_close(b, "its client left during the exchange");
}

static void on_failed_later(uv_timer_t *t)
{
    struct bconn *b = t->data;
    if (b->state != BCONN_CLOSING)
        fail_user(b, b->fail_status, b->fail_why);
}

void bconn_reply_done(struct bconn *b)
{
    b->cur_frame = 0;
    if (b->fail_pending) {
        /* From the loop, not from inside the user's own write completion. */
        if (b->state != BCONN_CLOSING)
            uv_timer_start(&b->timer, on_failed_later, 0, 0);
        return;
    }
    stream_release(&b->st);
}

static int on_frame(struct stream *s, uint8_t *frame, size_t len)
{
    struct bconn *b = s->owner;
    struct proxy *p = b->p;
    if (b->state == BCONN_HANDSHAKE) {
        struct wire_msg m;
        bson_t reply;
        bson_iter_t it;
        bool ok = wire_msg_parse(frame, len, &m) == 0 && wire_msg_body(&m, &reply) &&
                  bson_iter_init_find(&it, &reply, "ok") && bson_iter_as_bool(&it);
        if (!ok) {
            int idx = b->server;
            bconn_close(b, "handshake refused");
            proxy_connect_failed(p, idx, "handshake refused");
            return -EPROTO;
        }
        uv_timer_stop(&b->timer);
        wire_buf_free(&b->hbuf);
        log_debug(b->prefix, "connected");
        give_out(p, b);
        return STREAM_NEXT;
    }
    if (b->state != BCONN_BUSY || !b->reply_expected) {
        int idx = b->server;
        bconn_close(b, "unsolicited bytes from server");
        proxy_socket_failed(p, idx, "unsolicited bytes from server");
        return -EPROTO;
    }
    /* While the frame is handed up it still counts as pending in the stream: a release from
     * inside the callback must not take it for stray bytes. */
    b->cur_frame = len;
    int rc;
    if (!b->user) {
        /* Nobody wants this exchange any more: a streamed reply continues, anything else ends. */
        bool more = len >= 20 && wire_get_i32(frame + 12) == WIRE_OP_MSG &&
                    ((uint32_t)wire_get_i32(frame + 16) & WIRE_MSG_MORE_TO_COME);
        if (!more)
            pool_release(p, b);
        rc = STREAM_NEXT;
    } else {
        rc = user_ops->on_reply(b->user, b, frame, len);
    }
    if (rc != STREAM_HOLD)
        b->cur_frame = 0;
    return rc;
}

static void on_error(struct stream *s, int status)
{
    struct bconn *b = s->owner;
    struct proxy *p = b->p;
    int idx = b->server;
    char why[240];
    if (status == -EMSGSIZE)
        snprintf(why, sizeof(why), "server sent a frame of invalid length");
    else if (status == -EPROTO && stream_tls_error(s)[0])
        snprintf(why, sizeof(why), "%s", stream_tls_error(s));
    else
        snprintf(why, sizeof(why), "read: %s", uv_strerror(status));
    enum bconn_state st = b->state;
    if (stream_tls_pending(s)) {
        /* The server (or its certificate) was refused: a new session may help next time. */
        p->stats.tls_handshake_failures++;
        struct pool *pl = &p->pools[idx];
        if (pl->tls_session) {
            SSL_SESSION_free(pl->tls_session);
            pl->tls_session = NULL;
        }
    }
    if (st == BCONN_HANDSHAKE) {
        bconn_close(b, why);
        proxy_connect_failed(p, idx, why);
        return;
    }
    bool expected = st == BCONN_BUSY && b->reply_expected;
    fail_user(b, status, why);
    /* An idle connection the server closed (its own idle timeout, a restart) says little; one
     * that broke in the middle of an exchange is worth a prompt check. */
    if (expected || status != UV_EOF)
        proxy_socket_failed(p, idx, why);
}

static void on_written(struct stream *s, int status)
{
    struct bconn *b = s->owner;
    struct proxy *p = b->p;
    int idx = b->server;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        if (b->state == BCONN_HANDSHAKE) {
            bconn_close(b, why);
            proxy_connect_failed(p, idx, why);
            return;
        }
        fail_user(b, status, why);
        proxy_socket_failed(p, idx, why);
        return;
    }
    if (b->state != BCONN_BUSY || b->reply_expected)
        return;
    /* A request that expects no reply (moreToCome, OP_KILL_CURSORS) is complete. */
    if (b->user)
        user_ops->on_sent(b->user, b);
    else
        pool_release(p, b);
}

int bconn_send(struct bconn *b, const uint8_t *data, size_t len, bool reply_expected)
{
    b->reply_expected = reply_expected;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    return stream_write(&b->st, &buf, 1);
}

static void on_deadline(uv_timer_t *t)
{
    struct bconn *b = t->data;
    if (b->state != BCONN_CONNECTING && b->state != BCONN_HANDSHAKE)
        return;
    int idx = b->server;
    b->p->stats.backend_connect_failures++;
    bconn_close(b, "connect timed out");
    proxy_connect_failed(b->p, idx, "connect timed out");
}

/* Our hello on a new connection: client metadata, so server logs show who connects. */
static int build_handshake(struct bconn *b)
{
    bson_t cmd = BSON_INITIALIZER, client, drv, os, app;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "client", &client);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "application", &app);
    BSON_APPEND_UTF8(&app, "name", "mongolb");
    bson_append_document_end(&client, &app);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "driver", &drv);
    BSON_APPEND_UTF8(&drv, "name", "mongolb");
    BSON_APPEND_UTF8(&drv, "version", MONGOLB_VERSION);
    bson_append_document_end(&client, &drv);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "os", &os);
    BSON_APPEND_UTF8(&os, "type", "Linux");
    bson_append_document_end(&client, &os);
    bson_append_document_end(&cmd, &client);
    BSON_APPEND_UTF8(&cmd, "$db", "admin");
    int rc = wire_append_msg(&b->hbuf, proxy_next_request_id(b->p), 0, 0, &cmd);
    bson_destroy(&cmd);
    return rc;
}

/* Sends our hello: the last step of opening a connection, after TLS when there is TLS. */
static void send_handshake(struct bconn *b)
{
    struct proxy *p = b->p;
    int idx = b->server;
    int rc = fault_hit(FAULT_BACKEND_HELLO) ? -ENOMEM : build_handshake(b);
    if (rc == 0) {
        uv_buf_t buf = uv_buf_init((char *)b->hbuf.data, (unsigned)b->hbuf.len);
        rc = stream_write(&b->st, &buf, 1);
    }
    if (rc < 0) {
        bconn_close(b, "handshake could not be sent");
        proxy_connect_failed(p, idx, "handshake could not be sent");
    }
}

static void on_secure(struct stream *s, int status)
{
    struct bconn *b = s->owner;
    if (status == 0 && b->state == BCONN_HANDSHAKE)
        send_handshake(b);
    /* A failure is reported through on_error, which follows. */
}

/* Starts TLS on a new connection: SNI and host name checks against the name we dialled, and the
 * server's last session to resume. Returns 0 or a negative errno. */
static int start_tls(struct bconn *b)
{
    struct proxy *p = b->p;
    struct pool *pl = &p->pools[b->server];
    SSL *ssl = fault_hit(FAULT_BACKEND_TLS) ? NULL : SSL_new(p->tls.client);
    if (!ssl)
        return -ENOMEM;
    if (tls_client_prepare(ssl, p->topo.servers[b->server].host,
                           !p->cfg.upstream_tls_allow_invalid_hostnames) < 0) {
        SSL_free(ssl);
        return -EINVAL;
    }
    SSL_set_app_data(ssl, pl);
    if (pl->tls_session)
        SSL_set_session(ssl, pl->tls_session);
    return stream_tls_client(&b->st, ssl);
}

static void on_connect(struct stream *s, int status)
{
    struct bconn *b = s->owner;
    struct proxy *p = b->p;
    int idx = b->server;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        p->stats.backend_connect_failures++;
        bconn_close(b, why);
        proxy_connect_failed(p, idx, why);
        return;
    }
    int rc = fault_hit(FAULT_BACKEND_SOCKOPT)
                 ? UV_EINVAL
                 : stream_tcp_tune(&b->st, p->cfg.tcp_keepalive_s, p->cfg.tcp_user_timeout_ms);
    if (rc < 0)
        log_warn(b->prefix, "cannot set keepalive/TCP_USER_TIMEOUT: %s", uv_strerror(rc));
    set_state(b, BCONN_HANDSHAKE);
    rc = fault_hit(FAULT_BACKEND_READ) ? UV_ENOBUFS : stream_read_start(&b->st);
    if (rc == 0 && p->tls.client) {
        rc = start_tls(b);
        if (rc < 0 && b->state != BCONN_CLOSING) {
            char why[240];
            snprintf(why, sizeof(why), "TLS: %s",
                     stream_tls_error(&b->st)[0] ? stream_tls_error(&b->st) : uv_strerror(rc));
            p->stats.tls_handshake_failures++;
            bconn_close(b, why);
            proxy_connect_failed(p, idx, why);
        }
        return;
    }
    if (rc < 0) {
        bconn_close(b, "cannot read");
        proxy_connect_failed(p, idx, "cannot read");
        return;
    }
    send_handshake(b);
}

static const struct stream_cb bconn_stream_cb = {
    .on_frame = on_frame,
    .on_error = on_error,
    .on_written = on_written,
    .on_connect = on_connect,
    .on_secure = on_secure,
    .on_closed = on_stream_closed,
};

/* Opens one more connection to server idx. Returns 0 or a negative errno. */
static int open_connection(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    if (!pl->have_addr)
        return -EHOSTUNREACH;
    if (p->fd_limit > 0 && p->fds_in_use >= p->fd_limit - FD_RESERVE_BACKEND) {
        p->stats.fd_limit_refusals++;
        return -EMFILE;
    }
    struct bconn *b = fault_hit(FAULT_BACKEND_ALLOC) ? NULL : calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->p = p;
    b->server = idx;
    b->generation = p->topo.servers[idx].generation;
    b->id = ++p->next_bconn_id;
    b->created_ms = proxy_now(p);
    snprintf(b->prefix, sizeof(b->prefix), "b%llu %.40s", (unsigned long long)b->id,
             p->topo.servers[idx].addr);
    list_init(&b->link);
    int rc = stream_init_tcp(&p->sctx, &b->st, &bconn_stream_cb, b, BCONN_MAX_REPLY);
    if (rc < 0) {
        free(b);
        return rc;
    }
    /* Pooled connections are few (max_pool_size per server) and carry every reply: they keep a
     * buffer of up to 64 KiB between replies rather than allocating one per reply. */
    stream_keep_buffer(&b->st, 64 * 1024);
    uv_timer_init(p->loop, &b->timer);
    b->timer.data = b;
    b->handles_open = 2;
    p->fds_in_use++;
    pl->total++;
    b->state = BCONN_CLOSING; /* so that set_state counts it as a new connecting one */
    set_state(b, BCONN_CONNECTING);
    p->stats.backend_connects++;
    rc = fault_hit(FAULT_BACKEND_CONNECT)
             ? UV_EADDRNOTAVAIL
             : stream_connect(&b->st, &b->connect_req, (const struct sockaddr *)&pl->addr);
    if (rc < 0) {
        bconn_close(b, "connect could not start");
        return rc;
    }
    uv_timer_start(&b->timer, on_deadline, (uint64_t)p->cfg.connect_timeout_ms, 0);
    return 0;
}

struct bconn *pool_get(struct proxy *p, int idx, struct pool_waiter *w)
{
    struct pool *pl = &p->pools[idx];
    while (!list_empty(&pl->idle)) {
        /* The most recently used connection first: the others then age out by max_idle_time. */
        struct bconn *b = list_entry(pl->idle.prev, struct bconn, link);
        const char *why = retire_reason(p, b);
        if (why) {
            bconn_close(b, why);
            continue;
        }
        b->user = w->user;
        set_state(b, BCONN_BUSY);
        return b;
    }
    list_push_back(&pl->waiters, &w->link);
    w->pool = idx;
    pl->n_waiters++;
    pl->waits++;
    if (pl->connecting < pl->n_waiters && pl->total < p->cfg.max_pool_size) {
        int rc = open_connection(p, idx);
        if (rc < 0) {
            log_warn(p->topo.servers[idx].addr, "cannot open a connection: %s",
                     rc == -EMFILE ? "the file descriptor limit is reached" : uv_strerror(rc));
            if (pl->total == 0) {
                /* Nothing will free up: fail now rather than at the deadline. */
                pool_cancel_wait(p, w);
                char why[128];
                snprintf(why, sizeof(why), "cannot open a connection to %s: %s",
                         p->topo.servers[idx].addr,
                         rc == -EMFILE ? "file descriptor limit reached" : uv_strerror(rc));
                user_ops->on_ready(w->user, NULL, rc, why);
            }
        }
    }
    return NULL;
}

void pool_cancel_wait(struct proxy *p, struct pool_waiter *w)
{
    if (w->pool < 0)
        return;
    list_remove(&w->link);
    p->pools[w->pool].n_waiters--;
    w->pool = -1;
}

static void fail_waiters(struct proxy *p, int idx, int status, const char *why)
{
    struct pool *pl = &p->pools[idx];
    /* Take the list over first: a waiter told to fail may queue again on another pool. */
    struct list pending;
    list_init(&pending);
    while (!list_empty(&pl->waiters)) {
        struct list *e = pl->waiters.next;
        list_remove(e);
        list_push_back(&pending, e);
        pl->n_waiters--;
    }
    while (!list_empty(&pending)) {
        struct pool_waiter *w = list_entry(pending.next, struct pool_waiter, link);
        list_remove(&w->link);
        w->pool = -1;
        user_ops->on_ready(w->user, NULL, status, why);
    }
}

void pool_clear(struct proxy *p, int idx, bool interrupt, const char *why)
{
    struct pool *pl = &p->pools[idx];
    pl->clearing = true;
    while (!list_empty(&pl->idle))
        bconn_close(list_entry(pl->idle.next, struct bconn, link), "pool cleared");
    /* Connections still connecting belong to the failed generation too; in-use ones finish their
     * exchange (and are closed on release) unless the server is thought frozen. */
    struct list *e = pl->busy.next;
    while (e != &pl->busy) {
        struct bconn *b = list_entry(e, struct bconn, link);
        e = e->next;
        if (b->state == BCONN_CONNECTING || b->state == BCONN_HANDSHAKE) {
            bconn_close(b, "pool cleared");
        } else if (interrupt && !b->fail_pending) {
            p->stats.backend_interrupted++;
            char msg[200];
            snprintf(msg, sizeof(msg), "interrupted: %s", why);
            /* The list may lose other entries while users react: restart the walk. */
            fail_user(b, UV_ECONNABORTED, msg);
            e = pl->busy.next;
        }
    }
    pl->clearing = false;
    fail_waiters(p, idx, -EHOSTUNREACH, why);
}

void pool_reset(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    fail_waiters(p, idx, -EHOSTUNREACH, "the server was removed");
    if (pl->tls_session)
        SSL_SESSION_free(pl->tls_session);
    memset(pl, 0, sizeof(*pl));
    pl->server = idx;
    list_init(&pl->idle);
    list_init(&pl->busy);
    list_init(&pl->waiters);
}

void pool_reap(struct proxy *p)
{
    int64_t now = proxy_now(p);
    for (int i = 0; i < p->topo.n; i++) {
        struct pool *pl = &p->pools[i];
        struct list *e = pl->idle.next;
        while (e != &pl->idle) {
            struct bconn *b = list_entry(e, struct bconn, link);
            e = e->next;
            if (p->cfg.max_idle_time_ms > 0 && now - b->idle_since_ms >= p->cfg.max_idle_time_ms)
                bconn_close(b, "max_idle_time_ms reached");
            else if (p->cfg.max_lifetime_ms > 0 && now - b->created_ms >= p->cfg.max_lifetime_ms)
                bconn_close(b, "max_lifetime_ms reached");
        }
    }
}

void pool_close_all(struct proxy *p)
{
    for (int i = 0; i < p->topo.n; i++) {
        struct pool *pl = &p->pools[i];
        fail_waiters(p, i, -ESHUTDOWN, "mongolb is shutting down");
        while (!list_empty(&pl->idle))
            bconn_close(list_entry(pl->idle.next, struct bconn, link), "shutdown");
        while (!list_empty(&pl->busy))
            bconn_close(list_entry(pl->busy.next, struct bconn, link), "shutdown");
    }
}
