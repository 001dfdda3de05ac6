/*
 * pool.c: backend connections, pooled per server, one request in flight on each.
 *
 * A connection is opened when a client needs one and none is idle (up to max_pool_size per
 * server), introduces itself with a hello carrying mongolb's client metadata, and then carries
 * one client request at a time. Replies are read into the connection's own buffer and relayed to
 * the client from there without a copy; the client gives the connection back when the exchange is
 * complete. A connection whose server failed (its pool generation changed) is closed instead of
 * being reused.
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Replies may be as large as a maximal message plus a little: allow the header's length up to the
 * maximum message size the server itself reports, which is never above this. */
#define BCONN_MAX_REPLY (WIRE_MAX_MESSAGE_SIZE + 16 * 1024)
/* A buffer that grew beyond this for one large reply is given back when the connection is idle. */
#define BCONN_KEEP_BUF (256 * 1024)

static void on_handshake_reply(struct bconn *b, const uint8_t *frame, size_t len);
static void fail_waiters(struct proxy *p, int idx, int status, const char *why);

int pool_init(struct proxy *p)
{
    for (int i = 0; i < TOPOLOGY_MAX_SERVERS; i++) {
        struct pool *pl = &p->pools[i];
        memset(pl, 0, sizeof(*pl));
        pl->server = i;
        list_init(&pl->idle);
        list_init(&pl->busy);
        list_init(&pl->waiters);
    }
    return 0;
}

static void on_bconn_closed(uv_handle_t *h)
{
    struct bconn *b = h->data;
    if (--b->handles_open == 0) {
        wire_buf_free(&b->rbuf);
        wire_buf_free(&b->hbuf);
        free(b);
    }
}

void bconn_close(struct bconn *b, const char *why)
{
    if (b->state == BCONN_CLOSING)
        return;
    struct proxy *p = g_proxy;
    struct pool *pl = &p->pools[b->server];
    log_debug(b->prefix, "closing: %s", why);
    if (b->state == BCONN_CONNECTING || b->state == BCONN_HANDSHAKE)
        pl->connecting--;
    b->state = BCONN_CLOSING;
    list_remove(&b->link);
    pl->total--;
    b->client = NULL;
    uv_close((uv_handle_t *)&b->tcp, on_bconn_closed);
    uv_close((uv_handle_t *)&b->timer, on_bconn_closed);
}

/* Hands a ready connection to the first waiter, or parks it on the idle list. */
static void give_out(struct proxy *p, struct bconn *b)
{
    struct pool *pl = &p->pools[b->server];
    list_remove(&b->link);
    if (b->rbuf.cap > BCONN_KEEP_BUF && b->rbuf.len == 0)
        wire_buf_free(&b->rbuf);
    if (!list_empty(&pl->waiters)) {
        struct list *w = pl->waiters.next;
        list_remove(w);
        pl->n_waiters--;
        struct client *c = list_entry(w, struct client, wait_link);
        c->wait_pool = -1;
        b->state = BCONN_BUSY;
        b->client = c;
        list_push_back(&pl->busy, &b->link);
        client_on_bconn(c, b, 0, NULL);
        return;
    }
    b->state = BCONN_IDLE;
    list_push_back(&pl->idle, &b->link);
}

void pool_release(struct proxy *p, struct bconn *b)
{
    if (b->state == BCONN_CLOSING)
        return;
    b->client = NULL;
    b->reply_expected = false;
    const struct server *s = &p->topo.servers[b->server];
    if (b->generation != s->generation || p->shutting_down || b->rbuf.len != 0) {
        /* A server that failed since, or unread bytes that belong to no request: never reuse. */
        bconn_close(b, b->rbuf.len ? "unexpected bytes after a reply" : "pool was cleared");
        return;
    }
    if (!b->reading)
        bconn_read_start(b);
    give_out(p, b);
}

/* Frames complete messages out of b->rbuf and dispatches them. */
static void process_input(struct bconn *b)
{
    struct proxy *p = g_proxy;
    while (b->state != BCONN_CLOSING && b->reading) {
        struct wire_header h;
        int rc = wire_header_parse(b->rbuf.data, b->rbuf.len, BCONN_MAX_REPLY, &h);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            log_warn(b->prefix, "server sent a frame of invalid length %d", h.length);
            struct client *c = b->client;
            bconn_close(b, "invalid frame from server");
            if (c)
                client_on_backend_error(c, b, -EPROTO);
            return;
        }
        if (b->rbuf.len < (size_t)h.length) {
            wire_buf_reserve(&b->rbuf, (size_t)h.length - b->rbuf.len);
            return;
        }
        if (b->state == BCONN_HANDSHAKE) {
            on_handshake_reply(b, b->rbuf.data, (size_t)h.length);
            return;
        }
        if (b->state != BCONN_BUSY) {
            bconn_close(b, "unsolicited bytes from server");
            return;
        }
        if (!b->client) {
            /* The client left while its request was in flight: drop the reply. A streamed reply
             * is followed by more; anything else ends the exchange. */
            bool more = h.opcode == WIRE_OP_MSG && h.length >= 20 &&
                        (wire_get_i32(b->rbuf.data + 16) & WIRE_MSG_MORE_TO_COME);
            memmove(b->rbuf.data, b->rbuf.data + h.length, b->rbuf.len - (size_t)h.length);
            b->rbuf.len -= (size_t)h.length;
            if (!more)
                pool_release(p, b);
            continue;
        }
        /* The client relays the frame straight from our buffer; we stop reading until it is done
         * so the buffer does not move, and it calls bconn_consume(). */
        bconn_read_stop(b);
        client_on_reply(b->client, b, b->rbuf.data, (size_t)h.length);
        return;
    }
}

/* Removes the first len bytes of the read buffer: the frame the client finished relaying. */
void bconn_consume(struct bconn *b, size_t len)
{
    if (len > b->rbuf.len)
        len = b->rbuf.len;
    memmove(b->rbuf.data, b->rbuf.data + len, b->rbuf.len - len);
    b->rbuf.len -= len;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct bconn *b = h->data;
    (void)suggested;
    if (wire_buf_reserve(&b->rbuf, 64 * 1024) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = (char *)b->rbuf.data + b->rbuf.len;
    buf->len = b->rbuf.cap - b->rbuf.len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct bconn *b = s->data;
    (void)buf;
    if (nread == 0 || b->state == BCONN_CLOSING)
        return;
    if (nread < 0) {
        struct client *c = b->client;
        bool busy = b->state == BCONN_BUSY;
        int connecting = b->state == BCONN_HANDSHAKE;
        char why[96];
        snprintf(why, sizeof(why), "read: %s", uv_strerror((int)nread));
        bconn_close(b, why);
        if (connecting) {
            proxy_server_failed(g_proxy, b->server, why);
        } else if (busy) {
            if (nread != UV_EOF || b->reply_expected)
                proxy_server_failed(g_proxy, b->server, why);
            if (c)
                client_on_backend_error(c, b, (int)nread);
        }
        return;
    }
    b->rbuf.len += (size_t)nread;
    process_input(b);
}

int bconn_read_start(struct bconn *b)
{
    if (b->reading)
        return 0;
    int rc = uv_read_start((uv_stream_t *)&b->tcp, on_alloc, on_read);
    if (rc == 0) {
        b->reading = true;
        /* Bytes already buffered (a streamed reply's next part) are dispatched at once. */
        if (b->rbuf.len > 0)
            process_input(b);
    }
    return rc;
}

void bconn_read_stop(struct bconn *b)
{
    if (!b->reading)
        return;
    uv_read_stop((uv_stream_t *)&b->tcp);
    b->reading = false;
}

static void on_written(uv_write_t *req, int status)
{
    struct bconn *b = req->data;
    if (status == UV_ECANCELED || b->state == BCONN_CLOSING)
        return;
    if (b->state == BCONN_HANDSHAKE) {
        if (status < 0) {
            char why[96];
            snprintf(why, sizeof(why), "handshake write: %s", uv_strerror(status));
            bconn_close(b, why);
            proxy_server_failed(g_proxy, b->server, why);
        }
        return;
    }
    struct client *c = b->client;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        bconn_close(b, why);
        proxy_server_failed(g_proxy, b->server, why);
        if (c)
            client_on_backend_error(c, b, status);
        return;
    }
    if (c)
        client_on_sent(c, b);
    else if (!b->reply_expected)
        pool_release(g_proxy, b);
}

int bconn_write(struct bconn *b, const uint8_t *data, size_t len)
{
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    b->write_req.data = b;
    return uv_write(&b->write_req, (uv_stream_t *)&b->tcp, &buf, 1, on_written);
}

static void on_deadline(uv_timer_t *t)
{
    struct bconn *b = t->data;
    if (b->state != BCONN_CONNECTING && b->state != BCONN_HANDSHAKE)
        return;
    bconn_close(b, "connect timed out");
    g_proxy->stats.backend_connect_failures++;
    proxy_server_failed(g_proxy, b->server, "connect timed out");
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
    int rc = wire_append_msg(&b->hbuf, proxy_next_request_id(g_proxy), 0, 0, &cmd);
    bson_destroy(&cmd);
    return rc;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct bconn *b = req->data;
    if (status == UV_ECANCELED || b->state == BCONN_CLOSING)
        return;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        g_proxy->stats.backend_connect_failures++;
        bconn_close(b, why);
        proxy_server_failed(g_proxy, b->server, why);
        return;
    }
    uv_tcp_nodelay(&b->tcp, 1);
    b->state = BCONN_HANDSHAKE;
    int rc = build_handshake(b);
    if (rc == 0)
        rc = bconn_write(b, b->hbuf.data, b->hbuf.len);
    if (rc == 0)
        rc = bconn_read_start(b);
    if (rc < 0) {
        bconn_close(b, "handshake could not be sent");
        proxy_server_failed(g_proxy, b->server, "handshake could not be sent");
    }
}

static void on_handshake_reply(struct bconn *b, const uint8_t *frame, size_t len)
{
    struct proxy *p = g_proxy;
    struct wire_msg m;
    bson_t reply;
    bson_iter_t it;
    bool ok = wire_msg_parse(frame, len, &m) == 0 && wire_msg_body(&m, &reply) &&
              bson_iter_init_find(&it, &reply, "ok") && bson_iter_as_bool(&it);
    if (!ok) {
        bconn_close(b, "handshake refused");
        proxy_server_failed(p, b->server, "handshake refused");
        return;
    }
    bconn_consume(b, len);
    uv_timer_stop(&b->timer);
    p->pools[b->server].connecting--;
    wire_buf_free(&b->hbuf);
    log_debug(b->prefix, "connected");
    b->state = BCONN_IDLE;
    give_out(p, b);
}

/* Opens one more connection to server idx. Returns 0 or a negative errno. */
static int open_connection(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    const struct sockaddr *sa = (const struct sockaddr *)&pl->addr;
    if (!pl->have_addr)
        return -EHOSTUNREACH;
    struct bconn *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->server = idx;
    b->generation = p->topo.servers[idx].generation;
    b->id = ++p->next_bconn_id;
    snprintf(b->prefix, sizeof(b->prefix), "b%llu %s", (unsigned long long)b->id,
             p->topo.servers[idx].addr);
    list_init(&b->link);
    b->tcp.data = b;
    b->timer.data = b;
    b->connect_req.data = b;
    uv_tcp_init(p->loop, &b->tcp);
    uv_timer_init(p->loop, &b->timer);
    b->handles_open = 2;
    b->state = BCONN_CONNECTING;
    pl->total++;
    pl->connecting++;
    list_push_back(&pl->busy, &b->link);
    p->stats.backend_connects++;
    int rc = uv_tcp_connect(&b->connect_req, &b->tcp, sa, on_connect);
    if (rc < 0) {
        bconn_close(b, "connect could not start");
        return rc;
    }
    uv_timer_start(&b->timer, on_deadline, (uint64_t)p->cfg.connect_timeout_ms, 0);
    return 0;
}

struct bconn *pool_get(struct proxy *p, int idx, struct client *c)
{
    struct pool *pl = &p->pools[idx];
    if (!list_empty(&pl->idle)) {
        struct bconn *b = list_entry(pl->idle.next, struct bconn, link);
        list_remove(&b->link);
        b->state = BCONN_BUSY;
        b->client = c;
        list_push_back(&pl->busy, &b->link);
        return b;
    }
    list_push_back(&pl->waiters, &c->wait_link);
    c->wait_pool = idx;
    pl->n_waiters++;
    if (pl->connecting < pl->n_waiters && pl->total < p->cfg.max_pool_size) {
        int rc = open_connection(p, idx);
        if (rc < 0)
            log_warn(p->topo.servers[idx].addr, "cannot open a connection: %s", uv_strerror(rc));
    }
    return NULL;
}

void pool_cancel_wait(struct proxy *p, struct client *c)
{
    if (c->wait_pool < 0)
        return;
    list_remove(&c->wait_link);
    p->pools[c->wait_pool].n_waiters--;
    c->wait_pool = -1;
}

static void fail_waiters(struct proxy *p, int idx, int status, const char *why)
{
    struct pool *pl = &p->pools[idx];
    while (!list_empty(&pl->waiters)) {
        struct list *w = pl->waiters.next;
        list_remove(w);
        pl->n_waiters--;
        struct client *c = list_entry(w, struct client, wait_link);
        c->wait_pool = -1;
        client_on_bconn(c, NULL, status, why);
    }
}

void pool_clear(struct proxy *p, int idx)
{
    struct pool *pl = &p->pools[idx];
    while (!list_empty(&pl->idle))
        bconn_close(list_entry(pl->idle.next, struct bconn, link), "pool cleared");
    /* Connections still connecting belong to the failed generation too. */
    struct list *e = pl->busy.next;
    while (e != &pl->busy) {
        struct bconn *b = list_entry(e, struct bconn, link);
        e = e->next;
        if (b->state == BCONN_CONNECTING || b->state == BCONN_HANDSHAKE)
            bconn_close(b, "pool cleared");
    }
    fail_waiters(p, idx, -EHOSTUNREACH, p->topo.servers[idx].last_error);
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
