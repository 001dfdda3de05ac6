/*
 * admin.c: the admin HTTP listener ([admin] http_listen): /metrics in Prometheus text format
 * 0.0.4, /healthz and /readyz, on the same loop as everything else.
 *
 * Off by default; loopback addresses and unix sockets only unless http_allow_remote is set (the
 * endpoints have no authentication; config.c enforces it). One request per connection
 * (Connection: close), which keeps the connection object small:
 *
 *   READING   the request head arrives into a fixed buffer (ADMIN_MAX_HEAD bytes); http.c says
 *             when it is whole or why it is refused (then that status is the answer)
 *   WRITING   the response is written
 *   DRAINING  our side is shut down; what the client still sends is read and dropped until it
 *             closes, so that closing never resets a response it has not read yet
 *   CLOSING   handles closing; freed in the last close callback
 *
 * One timer per connection bounds the whole exchange (http_timeout_ms), and at most
 * http_max_connections are served at once; further ones are accepted and closed at once, with a
 * log line at most once a second. A bad request costs only its own connection.
 *
 * /healthz is answered from the loop, so a loop that is stuck fails it. /readyz answers 200 when
 * some server suits the configured default read preference (ops_ready), else 503 with the
 * reason.
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "log.h"

#define ADMIN_MAX_HEAD      8192
#define ADMIN_REFUSE_LOG_MS 1000
#define ADMIN_UNIX_MODE     0660

enum admin_conn_state {
    ADMIN_READING = 0,
    ADMIN_WRITING,
    ADMIN_DRAINING,
    ADMIN_CLOSING,
};

struct admin_listener {
    union stream_handle h;
    struct admin *a;
    bool is_unix;
    bool bound;
    uint64_t ino;
    char path[MLB_UNIX_PATH_MAX];
    char name[300];
};

struct admin {
    struct proxy *p;
    struct admin_listener l[MLB_MAX_LISTEN];
    int n_listeners;
    struct list conns;
    int n_conns;
    uint64_t next_id;
    int64_t last_refuse_log_ms;
    bool stopped;
};

struct admin_conn {
    union stream_handle h;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct admin *a;
    enum admin_conn_state state;
    struct list link;
    int handles_open;
    bool is_unix;
    char prefix[80];
    size_t len;
    uint8_t in[ADMIN_MAX_HEAD];
    struct wire_buf out;
};

static void conn_close(struct admin_conn *c, const char *why);

/* --- state and teardown -------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    wire_buf_free(&c->out);
    free(c);
}

/* The one teardown path. Safe to call more than once. */
static void conn_close(struct admin_conn *c, const char *why)
{
    if (c->state == ADMIN_CLOSING)
        return;
    if (why)
        log_debug(c->prefix, "admin connection closed: %s", why);
    c->state = ADMIN_CLOSING;
    list_remove(&c->link);
    c->a->n_conns--;
    c->a->p->fds_in_use--;
    uv_close(&c->h.handle, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct admin_conn *c = t->data;
    if (c->state == ADMIN_READING)
        log_warn(c->prefix, "admin request: no whole request within http_timeout_ms (%d ms)",
                 c->a->p->cfg.http_timeout_ms);
    conn_close(c, "http_timeout_ms reached");
}

/* --- responses ------------------------------------------------------------------------------ */

/* The common start of the write and shutdown callbacks: true when the connection is closing,
 * or closed now because the request failed. */
static bool req_failed(struct admin_conn *c, int status)
{
    if (c->state == ADMIN_CLOSING)
        return true;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return true;
    }
    return false;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct admin_conn *c = req->data;
    if (req_failed(c, status))
        return;
    /* Wait for the client to close (EOF), dropping what it sends, or for the timer. */
    c->state = ADMIN_DRAINING;
}

static void on_written(uv_write_t *req, int status)
{
    struct admin_conn *c = req->data;
    if (req_failed(c, status))
        return;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown) < 0)
        conn_close(c, "shutdown failed");
}

/* Sends a whole response and moves to WRITING. */
static void respond(struct admin_conn *c, int status, const char *type, const uint8_t *body,
                    size_t body_len, bool head_only)
{
    char h[512];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, http_reason(status), type, body_len);
    wire_buf_reset(&c->out);
    if (wire_buf_append(&c->out, h, (size_t)n) < 0 ||
        (!head_only && body_len && wire_buf_append(&c->out, body, body_len) < 0)) {
        conn_close(c, "out of memory for a response");
        return;
    }
    c->state = ADMIN_WRITING;
    uv_buf_t buf = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, &c->h.stream, &buf, 1, on_written);
    if (rc < 0)
        conn_close(c, uv_strerror(rc));
}

static void respond_text(struct admin_conn *c, int status, const char *text, bool head_only)
{
    respond(c, status, "text/plain; charset=utf-8", (const uint8_t *)text, strlen(text), head_only);
}

static void serve(struct admin_conn *c, const struct http_request *req)
{
    struct proxy *p = c->a->p;
    bool head = strcmp(req->method, "HEAD") == 0;
    int status = 200;
    if (!head && strcmp(req->method, "GET") != 0) {
        status = 405;
        respond_text(c, status, "only GET and HEAD are served\n", false);
    } else if (strcmp(req->path, "/metrics") == 0) {
        struct wire_buf body = {0};
        if (ops_render_metrics(p, &body) < 0) {
            status = 500;
            respond_text(c, status, "out of memory\n", head);
        } else {
            respond(c, status, "text/plain; version=0.0.4; charset=utf-8", body.data, body.len,
                    head);
        }
        wire_buf_free(&body);
    } else if (strcmp(req->path, "/healthz") == 0) {
        /* Reaching this line means the loop runs: that is what liveness asks. */
        respond_text(c, status, "ok\n", head);
    } else if (strcmp(req->path, "/readyz") == 0) {
        char why[1024];
        int rc = ops_ready(p, why, sizeof(why) - 1);
        status = rc == 0 ? 200 : 503;
        size_t n = strlen(why);
        why[n] = '\n';
        why[n + 1] = '\0';
        respond_text(c, status, why, head);
    } else {
        status = 404;
        respond_text(c, status, "not found: try /metrics, /healthz or /readyz\n", head);
    }
    log_debug(c->prefix, "admin %s %s: %d", req->method, req->path, status);
}

/* --- reading --------------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_conn *c = h->data;
    (void)suggested;
    if (c->state != ADMIN_READING)
        c->len = 0; /* draining: what arrives is dropped */
    *buf = uv_buf_init((char *)c->in + c->len, (unsigned)(sizeof(c->in) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = s->data;
    (void)buf;
    if (c->state == ADMIN_CLOSING)
        return;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    if (c->state != ADMIN_READING)
        return; /* writing or draining: dropped */
    c->len += (size_t)nread;
    struct http_request req;
    int status;
    int rc = http_parse_head(c->in, c->len, sizeof(c->in), &req, &status);
    if (rc == HTTP_INCOMPLETE)
        return;
    if (rc < 0) {
        log_warn(c->prefix, "admin request refused: %d %s", status, http_reason(status));
        char text[128];
        snprintf(text, sizeof(text), "%d %s\n", status, http_reason(status));
        respond_text(c, status, text, false);
        return;
    }
    serve(c, &req);
}

/* --- accepting ------------------------------------------------------------------------------- */

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin_listener *l = server->data;
    struct admin *a = l->a;
    struct proxy *p = a->p;
    if (status < 0) {
        log_warn(l->name, "admin accept: %s", uv_strerror(status));
        return;
    }
    bool refuse = a->n_conns >= p->cfg.http_max_connections || a->stopped;
    struct admin_conn *c = refuse ? NULL : calloc(1, sizeof(*c));
    if (!c) {
        /* Accepted and closed, so that the listener goes on. */
        union stream_handle *h = malloc(sizeof(*h));
        if (!h)
            return;
        if (l->is_unix)
            uv_pipe_init(p->loop, &h->pipe, 0);
        else
            uv_tcp_init(p->loop, &h->tcp);
        (void)uv_accept(server, &h->stream);
        uv_close(&h->handle, on_reject_closed);
        int64_t now = proxy_now(p);
        if (now - a->last_refuse_log_ms >= ADMIN_REFUSE_LOG_MS) {
            a->last_refuse_log_ms = now;
            log_warn(l->name, "admin connection refused: http_max_connections (%d) reached",
                     p->cfg.http_max_connections);
        }
        return;
    }
    c->a = a;
    c->is_unix = l->is_unix;
    if (l->is_unix)
        uv_pipe_init(p->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(p->loop, &c->h.tcp);
    uv_timer_init(p->loop, &c->timer);
    c->h.handle.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    list_push_back(&a->conns, &c->link);
    a->n_conns++;
    p->fds_in_use++;
    snprintf(c->prefix, sizeof(c->prefix), "a%llu", (unsigned long long)++a->next_id);
    int rc = uv_accept(server, &c->h.stream);
    if (rc < 0) {
        conn_close(c, uv_strerror(rc));
        return;
    }
    if (!l->is_unix) {
        char peer[72] = "?:0";
        (void)listener_peer_name(&c->h.tcp, peer, sizeof(peer));
        snprintf(c->prefix, sizeof(c->prefix), "a%llu %s", (unsigned long long)a->next_id, peer);
    } else {
        snprintf(c->prefix, sizeof(c->prefix), "a%llu unix", (unsigned long long)a->next_id);
    }
    uv_timer_start(&c->timer, on_timeout, (uint64_t)p->cfg.http_timeout_ms, 0);
    rc = uv_read_start(&c->h.stream, on_alloc, on_read);
    if (rc < 0)
        conn_close(c, uv_strerror(rc));
}

static int listen_one(struct admin *a, struct admin_listener *l, const struct mlb_listen_addr *ad)
{
    struct proxy *p = a->p;
    int rc;
    l->a = a;
    if (ad->kind == MLB_LISTEN_UNIX) {
        l->is_unix = true;
        snprintf(l->name, sizeof(l->name), "unix:%s", ad->path);
        snprintf(l->path, sizeof(l->path), "%s", ad->path);
        rc = listener_unix_prepare(ad->path);
        if (rc < 0)
            return rc;
        uv_pipe_init(p->loop, &l->h.pipe, 0);
        l->h.handle.data = l;
        a->n_listeners++;
        rc = uv_pipe_bind(&l->h.pipe, ad->path);
        if (rc == 0) {
            struct stat st;
            l->bound = true;
            if (stat(ad->path, &st) == 0)
                l->ino = (uint64_t)st.st_ino;
            /* The owner and its group: a scraper runs as a user an operator chooses. */
            chmod(ad->path, ADMIN_UNIX_MODE);
        }
    } else {
        struct sockaddr_storage ss;
        l->is_unix = false;
        if (strchr(ad->host, ':')) {
            snprintf(l->name, sizeof(l->name), "[%s]:%d", ad->host, ad->port);
            rc = uv_ip6_addr(ad->host, ad->port, (struct sockaddr_in6 *)&ss);
        } else {
            snprintf(l->name, sizeof(l->name), "%s:%d", ad->host, ad->port);
            rc = uv_ip4_addr(ad->host, ad->port, (struct sockaddr_in *)&ss);
        }
        if (rc < 0) {
            log_error(NULL, "admin http_listen %s: not an IP address (%s)", l->name,
                      uv_strerror(rc));
            return rc;
        }
        uv_tcp_init(p->loop, &l->h.tcp);
        l->h.handle.data = l;
        a->n_listeners++;
        rc = uv_tcp_bind(&l->h.tcp, (const struct sockaddr *)&ss, 0);
    }
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 64, on_connection);
    if (rc < 0) {
        log_error(NULL, "admin http_listen %s: %s", l->name, uv_strerror(rc));
        return rc;
    }
    log_info(NULL, "admin endpoints (/metrics, /healthz, /readyz) on http://%s", l->name);
    return 0;
}

int admin_start(struct proxy *p)
{
    if (p->cfg.http_listen.count == 0)
        return 0;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->p = p;
    list_init(&a->conns);
    p->admin = a;
    for (size_t i = 0; i < p->cfg.http_listen.count && i < MLB_MAX_LISTEN; i++) {
        int rc = listen_one(a, &a->l[a->n_listeners], &p->cfg.http_listen.addr[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void admin_stop(struct proxy *p)
{
    struct admin *a = p->admin;
    if (!a || a->stopped)
        return;
    a->stopped = true;
    for (int i = 0; i < a->n_listeners; i++)
        if (!uv_is_closing(&a->l[i].h.handle))
            uv_close(&a->l[i].h.handle, NULL);
    while (!list_empty(&a->conns))
        conn_close(list_entry(a->conns.next, struct admin_conn, link), "shutting down");
}

void admin_cleanup(struct proxy *p)
{
    struct admin *a = p->admin;
    if (!a)
        return;
    for (int i = 0; i < a->n_listeners; i++) {
        struct admin_listener *l = &a->l[i];
        struct stat st;
        /* Only the file we created: another instance may have replaced a stale one since. */
        if (l->bound && stat(l->path, &st) == 0 && (uint64_t)st.st_ino == l->ino)
            unlink(l->path);
        l->bound = false;
    }
    /* After a failed start the handles were never closed (the process exits): keep it then. */
    if (a->stopped) {
        free(a);
        p->admin = NULL;
    }
}
