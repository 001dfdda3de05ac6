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
 * Compression ([upstream] compressors): the hello offers the configured compressors and the
 * server's answer fixes the one this connection uses (bconn.z). Requests are then compressed
 * (except the commands the specification keeps uncompressed), and a compressed reply is
 * decompressed here, before the user sees it, so that routing, cursor bookkeeping and relaying
 * only ever see plain frames. The pool's traffic counters record both sizes.
 *
 * With authentication on, a connection logs in after its hello (auth.c runs the conversation):
 * as the service user, or in passthrough mode as the user whose request it is opened for, and it
 * then serves only that user. A login the server refuses is an error of the server for the
 * service user (proxy_connect_failed), and of that user alone in passthrough (its waiters get
 * -EACCES and its kept key is dropped, so that it logs in again).
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
    zconn_free(&b->z, &b->p->sctx);
    auth_backend_free(b->ab);
    auth_user_unref(b->p, b->au);
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

static int open_connection(struct proxy *p, int idx, struct auth_user *au);

/* Connections are pooled per user only in passthrough mode. */
static bool per_user(const struct proxy *p)
{
    return p->cfg.auth_mode == MLB_AUTH_PASSTHROUGH;
}

static bool same_user(const struct auth_user *a, const struct auth_user *b)
{
    return (a ? a->uid : 0) == (b ? b->uid : 0);
}

/* Counts the connections of a pool logged in (or logging in) as au, and those still opening. */
static void count_user(struct pool *pl, const struct auth_user *au, int *total, int *opening)
{
    *total = *opening = 0;
    for (struct list *e = pl->busy.next; e != &pl->busy; e = e->next) {
        struct bconn *b = list_entry(e, struct bconn, link);
        if (same_user(b->au, au)) {
            (*total)++;
            *opening += b->state == BCONN_CONNECTING || b->state == BCONN_HANDSHAKE;
        }
    }
    for (struct list *e = pl->idle.next; e != &pl->idle; e = e->next)
        *total += same_user(list_entry(e, struct bconn, link)->au, au);
}

static int waiting_for(struct pool *pl, const struct auth_user *au)
{
    int n = 0;
    for (struct list *e = pl->waiters.next; e != &pl->waiters; e = e->next)
        n += same_user(list_entry(e, struct pool_waiter, link)->au, au);
    return n;
}

/* Closes without refilling (the caller is about to open a connection itself). */
static void close_quietly(struct bconn *b, const char *why)
{
    log_debug(b->prefix, "closing: %s", why);
    set_state(b, BCONN_CLOSING);
    b->user = NULL;
    stream_close(&b->st);
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
}

/* Whether the service user's connections (au NULL) wait out a refused login: none is opened. */
static bool login_backing_off(struct proxy *p, struct pool *pl, const struct auth_user *au)
{
    return !au && pl->login_refusals > 0 && proxy_now(p) < pl->login_retry_ms;
}

/* Whether a connection for au's waiters may be opened now. In passthrough mode a full pool makes
 * room by closing its oldest idle connection, which is another user's. After a refused service
 * login, one connection at a time tries again once the back-off is over. */
static bool may_open(struct proxy *p, int idx, struct auth_user *au)
{
    struct pool *pl = &p->pools[idx];
    if (pl->clearing || p->shutting_down || login_backing_off(p, pl, au))
        return false;
    if (!per_user(p))
        return pl->connecting < (pl->login_refusals > 0 ? 1 : pl->n_waiters) &&
               pl->connecting < pl->n_waiters && pl->total < p->cfg.max_pool_size;
    int total, opening;
    count_user(pl, au, &total, &opening);
    if (!au && pl->login_refusals > 0 && opening > 0)
        return false;
    int cap =
        p->cfg.max_pool_size_per_user > 0 ? p->cfg.max_pool_size_per_user : p->cfg.max_pool_size;
    if (opening >= waiting_for(pl, au) || total >= cap)
        return false;
    if (pl->total >= p->cfg.max_pool_size) {
        if (list_empty(&pl->idle))
            return false;
        close_quietly(list_entry(pl->idle.next, struct bconn, link),
                      "gives way to another user's requests (max_pool_size)");
    }
    return true;
}

/* Opens connections for waiters that no connection being opened will serve, within
 * max_pool_size: after a connection closed, its slot must not stay empty while users wait. */
static void refill(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    if (!per_user(p)) {
        while (may_open(p, idx, NULL)) {
            if (open_connection(p, idx, NULL) < 0)
                return;
        }
        return;
    }
    /* Each waiter in turn, so that every user's waiters get their share of the free slots. */
    for (struct list *e = pl->waiters.next; e != &pl->waiters; e = e->next) {
        struct pool_waiter *w = list_entry(e, struct pool_waiter, link);
        if (may_open(p, idx, w->au) && open_connection(p, idx, w->au) < 0)
            return;
    }
}

void bconn_close(struct bconn *b, const char *why)
{
    if (b->state == BCONN_CLOSING)
        return;
    close_quietly(b, why);
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
            /* why may be fail_why itself (a pending failure told again): memmove, not snprintf. */
            size_t n = strnlen(why, sizeof(b->fail_why) - 1);
            memmove(b->fail_why, why, n);
            b->fail_why[n] = '\0';
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
    struct pool_waiter *w = NULL;
    for (struct list *e = pl->waiters.next; e != &pl->waiters; e = e->next) {
        struct pool_waiter *cand = list_entry(e, struct pool_waiter, link);
        if (!per_user(p) || same_user(cand->au, b->au)) {
            w = cand;
            break;
        }
    }
    if (!w && !list_empty(&pl->waiters) && pl->total >= p->cfg.max_pool_size) {
        /* Only other users wait, and the pool is full: this slot serves them better. */
        bconn_close(b, "gives way to another user's requests (max_pool_size)");
        return;
    }
    if (w) {
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

/*
 * Fails the waiters of the pool with status: all of them (all_users), or those of one user (its
 * login was refused) before anything is opened for them. The list is taken over first: a waiter
 * told to fail may queue again on another pool.
 */
static void fail_waiters_of(struct proxy *p, int idx, bool all_users, struct auth_user *au,
                            int status, const char *why)
{
    struct pool *pl = &p->pools[idx];
    struct list pending;
    list_init(&pending);
    struct list *e = pl->waiters.next;
    while (e != &pl->waiters) {
        struct pool_waiter *w = list_entry(e, struct pool_waiter, link);
        e = e->next;
        if (!all_users && !same_user(w->au, au))
            continue;
        list_remove(&w->link);
        list_push_back(&pending, &w->link);
        pl->n_waiters--;
    }
    while (!list_empty(&pending)) {
        struct pool_waiter *w = list_entry(pending.next, struct pool_waiter, link);
        list_remove(&w->link);
        w->pool = -1;
        user_ops->on_ready(w->user, NULL, status, why);
    }
}

static void fail_user_waiters(struct proxy *p, int idx, struct auth_user *au, int status,
                              const char *why)
{
    fail_waiters_of(p, idx, false, au, status, why);
}

static void fail_waiters(struct proxy *p, int idx, int status, const char *why)
{
    fail_waiters_of(p, idx, true, NULL, status, why);
}

/* The first wait after a refused service login, doubled at each refusal in a row up to the last. */
#define LOGIN_BACKOFF_FIRST_MS 250
#define LOGIN_BACKOFF_MAX_MS   10000

/*
 * The service user's login was refused by server idx: its credentials (service_password_file,
 * the user's roles, the certificate) are wrong for this cluster, and the server itself is fine.
 * Marking it unknown would only make it flap, since its monitor, which does not log in, finds it
 * healthy at the next check, and would close the connections other users have logged in. So the
 * server stays selectable with its connections, and its pool backs off: requests that need a new
 * connection of the service user fail at once with the refusal (clients retry elsewhere or get
 * HostUnreachable with the reason), and after 250 ms doubling up to 10 s one connection tries
 * again. A success, or a reload (a new password), ends it.
 */
static void service_login_refused(struct bconn *b, const char *why)
{
    struct proxy *p = b->p;
    int idx = b->server;
    struct pool *pl = &p->pools[idx];
    int shift = pl->login_refusals < 6 ? pl->login_refusals : 6;
    int64_t wait = (int64_t)LOGIN_BACKOFF_FIRST_MS << shift;
    if (wait > LOGIN_BACKOFF_MAX_MS)
        wait = LOGIN_BACKOFF_MAX_MS;
    pl->login_refusals++;
    pl->login_retry_ms = proxy_now(p) + wait;
    snprintf(pl->login_error, sizeof(pl->login_error), "%s", why);
    log_error(b->prefix, "%s (%d in a row); no new connection as %s for %lld ms", why,
              pl->login_refusals, p->cfg.service_user, (long long)wait);
    /* Its waiters first, so that closing the connection opens nothing more for them. */
    fail_user_waiters(p, idx, NULL, -EKEYREJECTED, why);
    bconn_close(b, "login refused");
}

/* A login on a new connection failed (why says how; no secret in it). */
static void login_failed(struct bconn *b, int rc, const char *why)
{
    struct proxy *p = b->p;
    int idx = b->server;
    struct auth_user *au = b->au;
    if (au && rc == -EACCES) {
        log_warn(b->prefix, "%s", why);
        /* Its waiters first, so that closing opens nothing more for a user without a key. */
        auth_user_ref(au);
        fail_user_waiters(p, idx, au, -EACCES, why);
        bconn_close(b, "login refused");
        auth_user_unref(p, au);
        return;
    }
    if (!au && rc == -EACCES) {
        service_login_refused(b, why);
        return;
    }
    log_error(b->prefix, "%s", why);
    bconn_close(b, "login refused");
    proxy_connect_failed(p, idx, why);
}

/* The connection is introduced (and logged in): it is ready for requests. */
static void connected(struct bconn *b)
{
    struct proxy *p = b->p;
    int idx = b->server;
    struct pool *pl = &p->pools[idx];
    bool backoff_ended = false;
    if (b->ab && !b->au && pl->login_refusals > 0) {
        log_info(b->prefix, "the service user's login is accepted again (after %d refusals)",
                 pl->login_refusals);
        pl->login_refusals = 0;
        pl->login_error[0] = '\0';
        backoff_ended = true;
    }
    uv_timer_stop(&b->timer);
    wire_buf_free(&b->hbuf);
    auth_backend_free(b->ab);
    b->ab = NULL;
    log_debug(b->prefix, "connected%s%s", b->au ? " as " : "", b->au ? b->au->user : "");
    give_out(p, b);
    /* During the back-off one connection at a time was opened: the other waiters get theirs now. */
    if (backoff_ended)
        refill(p, idx);
}

/* Sends the next handshake message (in hbuf). */
static int send_hbuf(struct bconn *b)
{
    uv_buf_t buf = uv_buf_init((char *)b->hbuf.data, (unsigned)b->hbuf.len);
    return stream_write(&b->st, &buf, 1);
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
    zconn_trim(&b->z, &p->sctx);
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
        char why[300] = "";
        int rc;
        if (b->ab) {
            rc = auth_backend_step(p, b->ab, frame, len, &b->hbuf, proxy_next_request_id(p), why,
                                   sizeof(why));
        } else if (!ok) {
            int idx = b->server;
            bconn_close(b, "handshake refused");
            proxy_connect_failed(p, idx, "handshake refused");
            return -EPROTO;
        } else {
            /* The hello's answer fixes the compressor; the login that may follow is never
             * compressed (the compression specification), being sent as it is from hbuf. */
            b->z.compressor = (int8_t)compress_pick(&reply, &p->cfg.upstream_compressors);
            rc = auth_backend_begin(p, b->au, &b->ab, &b->hbuf, proxy_next_request_id(p), why,
                                    sizeof(why));
        }
        if (rc == 1 && send_hbuf(b) < 0) {
            rc = -EIO;
            snprintf(why, sizeof(why), "a login message could not be sent");
        }
        if (rc < 0) {
            login_failed(b, rc, why);
            return -EPROTO;
        }
        if (rc == 0)
            connected(b);
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
    struct pool *pl = &p->pools[b->server];
    pl->traffic.bytes_in += len;
    if (len >= WIRE_HEADER_LEN && wire_get_i32(frame + 12) == WIRE_OP_COMPRESSED) {
        /* Decompressed here, bounded as an uncompressed reply is; the stream keeps holding the
         * compressed frame, and the user relays the plain one from b->z.in. */
        int rc = zconn_decode(&b->z, &p->sctx, frame, len, BCONN_MAX_REPLY,
                              ZCONN_ANY_MASK | (1u << COMPRESSOR_NOOP), NULL);
        if (rc < 0) {
            char why[160];
            snprintf(why, sizeof(why), "bad compressed reply: %s",
                     rc == -ENOBUFS ? "max_buffer_bytes reached" : compress_strerror(rc));
            log_warn(b->prefix, "%s", why);
            b->cur_frame = 0;
            int idx = b->server;
            fail_user(b, -EPROTO, why);
            proxy_socket_failed(p, idx, why);
            return -EPROTO;
        }
        pl->traffic.msgs_in++;
        frame = b->z.in.data;
        len = b->z.in.len;
    }
    pl->traffic.raw_in += len;
    /* A busy connection always has its user: one whose user leaves is closed (pool_abandon), never
     * left to drain a reply nobody wants. */
    int rc = user_ops->on_reply(b->user, b, frame, len);
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
    user_ops->on_sent(b->user, b);
}

int bconn_send(struct bconn *b, const uint8_t *data, size_t len, bool reply_expected)
{
    struct proxy *p = b->p;
    struct pool *pl = &p->pools[b->server];
    b->reply_expected = reply_expected;
    pl->traffic.raw_out += len;
    if (b->z.compressor != COMPRESSOR_NONE && compress_frame_allowed(data, len)) {
        struct compress_levels lv = {p->cfg.zlib_compression_level, p->cfg.zstd_compression_level};
        int rc = zconn_encode(&b->z, &p->sctx, b->z.compressor, &lv, data, len);
        if (rc < 0)
            return rc;
        data = b->z.out.data;
        len = b->z.out.len;
        pl->traffic.msgs_out++;
    }
    pl->traffic.bytes_out += len;
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
    /* An empty array when compression is off, as the compression specification asks. */
    bson_t none;
    if (b->p->cfg.upstream_compressors.n > 0) {
        compress_append_names(&cmd, "compression", &b->p->cfg.upstream_compressors);
    } else {
        BSON_APPEND_ARRAY_BEGIN(&cmd, "compression", &none);
        bson_append_array_end(&cmd, &none);
    }
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
    if (rc == 0)
        rc = send_hbuf(b);
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
static int open_connection(struct proxy *p, int idx, struct auth_user *au)
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
    if (per_user(p) && au) {
        b->au = au;
        auth_user_ref(au);
    }
    b->generation = p->topo.servers[idx].generation;
    b->id = ++p->next_bconn_id;
    b->created_ms = proxy_now(p);
    zconn_init(&b->z);
    snprintf(b->prefix, sizeof(b->prefix), "b%llu %.40s", (unsigned long long)b->id,
             p->topo.servers[idx].addr);
    list_init(&b->link);
    int rc = stream_init_tcp(&p->sctx, &b->st, &bconn_stream_cb, b, BCONN_MAX_REPLY);
    if (rc < 0) {
        auth_user_unref(p, b->au);
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
        /* Without a refill: the caller acts on the error, and a refill from here would open the
         * next connection from inside this call, recursing until the descriptors ran out while
         * connect keeps failing at once (no route, no local port). */
        close_quietly(b, "connect could not start");
        return rc;
    }
    uv_timer_start(&b->timer, on_deadline, (uint64_t)p->cfg.connect_timeout_ms, 0);
    return 0;
}

struct bconn *pool_get(struct proxy *p, int idx, struct pool_waiter *w)
{
    struct pool *pl = &p->pools[idx];
    struct auth_user *au = per_user(p) ? w->au : NULL;
    /* The most recently used connection first (of the waiter's user in passthrough): the others
     * then age out by max_idle_time. */
    struct list *e = pl->idle.prev;
    while (e != &pl->idle) {
        struct bconn *b = list_entry(e, struct bconn, link);
        e = e->prev;
        if (!same_user(b->au, au))
            continue;
        const char *why = retire_reason(p, b);
        if (why) {
            close_quietly(b, why);
            continue;
        }
        b->user = w->user;
        set_state(b, BCONN_BUSY);
        return b;
    }
    if (login_backing_off(p, pl, au)) {
        /* No connection of the service user can be had here before the back-off ends. */
        char why[400];
        snprintf(why, sizeof(why), "%s (login retried in %lld ms)", pl->login_error,
                 (long long)(pl->login_retry_ms - proxy_now(p)));
        user_ops->on_ready(w->user, NULL, -EKEYREJECTED, why);
        return NULL;
    }
    if (au && !au->have_key) {
        char why[600];
        snprintf(why, sizeof(why), "the server refused %s@%s's credentials; log in again", au->user,
                 au->db);
        user_ops->on_ready(w->user, NULL, -EACCES, why);
        return NULL;
    }
    list_push_back(&pl->waiters, &w->link);
    w->pool = idx;
    pl->n_waiters++;
    pl->waits++;
    if (may_open(p, idx, au)) {
        int rc = open_connection(p, idx, au);
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

void pool_login_retry_now(struct proxy *p)
{
    for (int i = 0; i < p->topo.n; i++)
        p->pools[i].login_retry_ms = 0;
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
            if (pl->total > p->cfg.max_pool_size) /* a reload made the pool smaller */
                bconn_close(b, "above max_pool_size");
            else if (p->cfg.max_idle_time_ms > 0 &&
                     now - b->idle_since_ms >= p->cfg.max_idle_time_ms)
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
