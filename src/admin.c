/*
 * admin.c: the admin HTTP listener ([admin] http_listen): /metrics in Prometheus text format
 * 0.0.4, /healthz and /readyz, on the same loop as everything else.
 *
 * Off by default; loopback addresses and unix sockets only unless http_allow_remote is set (the
 * endpoints are plain HTTP; config.c enforces it). One request per connection
 * (Connection: close), which keeps the connection object small:
 *
 *   READING   the request head arrives into a fixed buffer (ADMIN_MAX_HEAD bytes); http.c says
 *             when it is whole or why it is refused (then that status is the answer)
 *   DELAYING  a failed Basic authentication waits before its 401 (see below)
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
 *
 * With [auth] mode on and http_auth = basic, /metrics and /readyz (which name the backends) need
 * HTTP Basic credentials of one of [auth] admin_users, checked against that user's auth_file
 * verifier (basic_auth.h); /healthz names nothing and stays open. Anything else gets 401 with a
 * Basic challenge, the same body whatever was wrong; the log line says what (the user name, never
 * the password). Failed attempts are counted for the whole listener (its peers are loopback or a
 * unix socket, whose addresses tell little): from the third in a row the 401 waits, 125 ms
 * doubling up to [auth] login_failure_delay_ms, as failed logins do; a success or ten quiet
 * minutes reset the count. A successful check is cached (basic_auth_cache) so that a scraper does
 * not pay PBKDF2 on every request.
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "basic_auth.h"
#include "http.h"
#include "log.h"

#define ADMIN_MAX_HEAD      8192
#define ADMIN_REFUSE_LOG_MS 1000
#define ADMIN_UNIX_MODE     0660
/* How long a quiet spell makes the count of failed Basic authentications be forgotten: the figure
 * of failed logins (auth.c), whose delays (auth_backoff_ms) the 401 gets too. */
#define ADMIN_FAIL_FORGET_MS (10 * 60 * 1000)

enum admin_conn_state {
    ADMIN_READING = 0,
    ADMIN_DELAYING,
    ADMIN_WRITING,
    ADMIN_DRAINING,
    ADMIN_CLOSING,
};

struct admin_listener {
    union stream_handle h;
    struct admin *a;
    bool is_unix;
    bool bound;
    struct unix_file_id id;
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
    /* Basic authentication: successful checks, and failures in a row. */
    struct basic_auth_cache cache;
    int fail_count;
    int64_t last_fail_ms;
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
    bool head_only; /* the request is a HEAD */
    char prefix[80];
    const char *path; /* "/metrics" or "/readyz", for the log lines of a refusal */
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

static void respond_unauthorized(struct admin_conn *c);

static void on_timeout(uv_timer_t *t)
{
    struct admin_conn *c = t->data;
    if (c->state == ADMIN_DELAYING) {
        /* The delay of a failed authentication is over; the exchange gets its time again. */
        uv_timer_start(&c->timer, on_timeout, (uint64_t)c->a->p->cfg.http_timeout_ms, 0);
        respond_unauthorized(c);
        return;
    }
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

/* Sends a whole response and moves to WRITING. extra is more header lines (each ending with
 * CRLF), or "". */
static void respond_with(struct admin_conn *c, int status, const char *type, const char *extra,
                         const uint8_t *body, size_t body_len, bool head_only)
{
    char h[512];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     status, http_reason(status), type, body_len, extra);
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

static void respond(struct admin_conn *c, int status, const char *type, const uint8_t *body,
                    size_t body_len, bool head_only)
{
    respond_with(c, status, type, "", body, body_len, head_only);
}

static void respond_text(struct admin_conn *c, int status, const char *text, bool head_only)
{
    respond(c, status, "text/plain; charset=utf-8", (const uint8_t *)text, strlen(text), head_only);
}

/* --- Basic authentication ------------------------------------------------------------------- */

static void respond_unauthorized(struct admin_conn *c)
{
    static const char text[] =
        "401 Unauthorized: this endpoint needs the HTTP Basic credentials (user@db:password) of "
        "one of [auth] admin_users\n";
    respond_with(c, 401, "text/plain; charset=utf-8",
                 "WWW-Authenticate: Basic realm=\"mongolb\", charset=\"UTF-8\"\r\n",
                 (const uint8_t *)text, sizeof(text) - 1, c->head_only);
}

/* Refuses the request with 401: at once, or after the delay that failures in a row earn. who is
 * the user named (or NULL), why what was wrong; neither is sent to the client. */
static void refuse_auth(struct admin_conn *c, const char *who, const char *why, bool counted)
{
    struct admin *a = c->a;
    struct proxy *p = a->p;
    int64_t delay = 0;
    if (!counted) {
        log_debug(c->prefix, "admin %s: 401, %s", c->path, why);
    } else {
        int64_t now = proxy_now(p);
        if (now - a->last_fail_ms > ADMIN_FAIL_FORGET_MS)
            a->fail_count = 0;
        a->last_fail_ms = now;
        if (a->fail_count < INT32_MAX)
            a->fail_count++;
        delay = auth_backoff_ms(a->fail_count, p->cfg.login_failure_delay_ms);
        log_warn(c->prefix, "admin %s refused (401): %s%s%s; %d failed in a row%s", c->path,
                 who ? who : "", who ? " " : "", why, a->fail_count,
                 delay ? ", answer delayed" : "");
    }
    if (delay == 0) {
        respond_unauthorized(c);
        return;
    }
    c->state = ADMIN_DELAYING;
    uv_timer_start(&c->timer, on_timeout, (uint64_t)delay, 0);
}

static bool is_admin_user(struct proxy *p, const char *user, const char *db)
{
    char name[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2];
    snprintf(name, sizeof(name), "%s@%s", user, db);
    return config_list_has(p->cfg.admin_users, name);
}

/*
 * Whether the request may be served. When it may not, the 401 is under way (maybe delayed).
 * Without an Authorization field it is the ordinary challenge, not counted as a failure.
 */
static bool authorized(struct admin_conn *c, const struct http_request *req)
{
    struct admin *a = c->a;
    struct proxy *p = a->p;
    if (p->cfg.auth_mode == MLB_AUTH_OFF || p->cfg.http_auth == MLB_HTTP_AUTH_NONE)
        return true;
    if (!req->has_auth) {
        refuse_auth(c, NULL, "no credentials", false);
        return false;
    }
    const char *value = (const char *)c->in + req->auth_off;
    size_t len = req->auth_len;
    int64_t now = proxy_now(p);
    struct basic_auth_entry *e = basic_auth_cache_find(&a->cache, value, len, now);
    if (e) {
        /* Still that user's verifier (no new password reloaded since) and still an admin. */
        const struct scram_verifier *v = auth_file_verifier(p, e->db, e->user);
        if (v && scram_verifier_equal(v, &e->v) && is_admin_user(p, e->user, e->db))
            return true;
        basic_auth_cache_drop(e);
    }
    struct basic_auth_cred cred;
    int rc = basic_auth_parse(value, len, &cred);
    if (rc < 0) {
        refuse_auth(c, NULL,
                    rc == -ENOENT ? "the Authorization field is not Basic"
                                  : "malformed Basic credentials",
                    true);
        return false;
    }
    char who[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2];
    snprintf(who, sizeof(who), "%s@%s", cred.user, cred.db);
    const struct scram_verifier *v = auth_file_verifier(p, cred.db, cred.user);
    const char *why = NULL;
    if (!is_admin_user(p, cred.user, cred.db)) {
        /* Not checked at all: no PBKDF2 spent, and nothing learnt about the password. */
        why = "is not in [auth] admin_users";
    } else if (!v) {
        why = "has no verifier in the auth_file";
    } else {
        rc = basic_auth_verify(v, cred.user, cred.password);
        if (rc == 0) {
            basic_auth_cache_put(&a->cache, value, len, &cred, v, now, BASIC_AUTH_CACHE_TTL_MS);
            a->fail_count = 0;
            log_debug(c->prefix, "admin %s: %s authenticated", req->path, who);
        } else {
            why = rc == SCRAM_EAUTH ? "gave a wrong password" : scram_strerror(rc);
        }
    }
    basic_auth_cred_wipe(&cred);
    if (why)
        refuse_auth(c, who, why, true);
    return why == NULL;
}

/* --- serving --------------------------------------------------------------------------------- */

static void serve(struct admin_conn *c, const struct http_request *req)
{
    struct proxy *p = c->a->p;
    bool head = strcmp(req->method, "HEAD") == 0;
    int status = 200;
    c->head_only = head;
    bool named = strcmp(req->path, "/metrics") == 0 || strcmp(req->path, "/readyz") == 0;
    c->path = strcmp(req->path, "/metrics") == 0 ? "/metrics" : "/readyz";
    if (!head && strcmp(req->method, "GET") != 0) {
        status = 405;
        respond_text(c, status, "only GET and HEAD are served\n", false);
    } else if (named && !authorized(c, req)) {
        status = 401;
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
        listener_reject(server, l->is_unix);
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
        rc = listener_unix_bind(&l->h.pipe, ad->path);
        if (rc == 0) {
            l->bound = true;
            /* The owner and its group: a scraper runs as a user an operator chooses. */
            chmod(ad->path, ADMIN_UNIX_MODE);
            listener_unix_remember(ad->path, &l->id); /* after chmod, which changes its ctime */
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
    bool basic = p->cfg.auth_mode != MLB_AUTH_OFF && p->cfg.http_auth == MLB_HTTP_AUTH_BASIC;
    log_info(NULL, "admin endpoints (/metrics, /healthz, /readyz) on http://%s%s", l->name,
             basic ? "; /metrics and /readyz need the Basic credentials of an [auth] admin_users "
                     "user"
                   : "");
    return 0;
}

/* With Basic authentication on, says at start when no admin user could ever pass it. */
static void warn_admin_users(struct proxy *p)
{
    if (p->cfg.auth_mode == MLB_AUTH_OFF || p->cfg.http_auth != MLB_HTTP_AUTH_BASIC)
        return;
    const char *s = p->cfg.admin_users;
    while (*s) {
        s += strspn(s, " \t,");
        size_t n = strcspn(s, ",");
        char name[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2];
        snprintf(name, sizeof(name), "%.*s", (int)n, s);
        s += n;
        char *end = name + strlen(name);
        while (end > name && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        char *at = strrchr(name, '@');
        if (at) {
            *at = '\0';
            if (auth_file_verifier(p, at + 1, name))
                return;
        }
    }
    log_warn(NULL, "admin http_listen: http_auth = basic, but no user of [auth] admin_users has a "
                   "verifier in the auth_file, so /metrics and /readyz will answer 401 to all; "
                   "add one (mongolb --make-verifier) or set http_auth = none");
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
    if (basic_auth_cache_init(&a->cache) < 0) {
        log_error(NULL, "admin http_listen: no random bytes for the credentials cache");
        return -EIO;
    }
    warn_admin_users(p);
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
        /* Only the file we created: another instance may have replaced a stale one since. */
        if (l->bound && listener_unix_is_ours(l->path, &l->id))
            unlink(l->path);
        l->bound = false;
    }
    /* After a failed start the handles were never closed (the process exits): keep it then. */
    if (a->stopped) {
        basic_auth_cache_wipe(&a->cache);
        free(a);
        p->admin = NULL;
    }
}
