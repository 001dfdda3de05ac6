/*
 * client.c: one application connection and its state machine.
 *
 * A client handles one request at a time, as drivers send them. Its stream hands it a whole frame;
 * the client classifies it, answers it locally or routes it (router.c decides: the cursor's owner,
 * the transaction's pin, or selection), takes a pooled connection, forwards the frame, and relays
 * the reply from the backend connection's buffer. The frame stays held in the client's stream
 * until the request is over, so it is forwarded without a copy.
 *
 * The state says what the client is doing, and client_set_state() is the only place that changes
 * it: it takes the client off the wait list of its old state, puts it on the list of the new one,
 * and arms the client's one timer for whichever limit that state has (the request's deadline while
 * waiting, the request timeout while forwarding, the write timeout while replying, the frame and
 * idle timeouts while reading). No path can leave a waiting request without a deadline.
 *
 * Compression: a client whose hello asks for it gets the compressors of [mongolb] compressors it
 * also named. Its OP_COMPRESSED requests are decompressed into c->z.in (and handled from there as
 * if they had arrived so), and every reply to such a request is compressed with the request's
 * compressor on its way out (write_to_client), as mongod does.
 *
 * With authentication on (auth.h), the client's login is answered here with auth.c's help and
 * never forwarded; until it has logged in only the handshake and a few harmless commands pass. A
 * passthrough verifier read from the cluster (usersInfo) is one exchange on a service user's
 * connection, made the way any request is (the `fetching` flag). Cursors and transaction pins
 * remember the user that created them: another user's getMore or killCursors of them is refused
 * with 13, as mongod refuses it, and never reaches the owner's connection.
 *
 * Failures never silently drop the client: a backend that fails becomes an error document, with
 * the codes a mongos would use; only the client's own faults (a malformed frame, a timeout)
 * close its connection, with a log line.
 */
#include "proxy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bson_check.h"
#include "killcursors.h"
#include "log.h"
#include "mongo_errors.h"
#include "reply.h"
#include "retry.h"
#include "router.h"

/* Clients are refused this many descriptors before the process limit, so that backend
 * connections can still be opened. */
#define FD_RESERVE_CLIENTS 16

enum client_state {
    CLIENT_READING = 0, /* no request in progress; waiting for (the rest of) the next frame */
    CLIENT_WAIT_SERVER, /* no suitable server yet: on proxy.select_waiters */
    CLIENT_WAIT_CONN,   /* waiting for a pooled connection: on a pool's waiters */
    CLIENT_FORWARDING,  /* request sent or being sent; its reply is awaited */
    CLIENT_REPLYING,    /* a reply (relayed or our own) is being written to the client */
    CLIENT_AUTH_DELAY,  /* a failed login's reply (in wbuf) waits before it is written */
    CLIENT_CLOSING,     /* closed; freed in the last close callback */
};

struct client {
    struct stream st;
    uv_timer_t timer; /* the one limit of the current state */
    struct proxy *p;
    enum client_state state;
    uint64_t id;
    char prefix[64];
    struct list link;      /* proxy.clients */
    struct list wait_link; /* proxy.select_waiters while CLIENT_WAIT_SERVER */
    struct pool_waiter pw; /* on a pool's waiters while CLIENT_WAIT_CONN */
    int handles_open;
    bool in_frame; /* inside on_frame: a request finished now needs no stream_release */
    int64_t state_since_ms;
    int64_t accepted_ms;
    int64_t frame_began_ms;
    int64_t last_active_ms;

    /* The current request. */
    uint8_t *frame;   /* held in the stream */
    size_t frame_len; /* its length now (4 less once a checksum is stripped) */
    size_t raw_len;   /* its length as it arrived, which the stream holds */
    struct request_info ri;
    const uint8_t *out; /* the bytes sent to the server: the frame or a rewritten one */
    size_t out_len;
    int server;  /* where it went, or -1 */
    int exclude; /* a server a retry avoids */
    int attempts;
    int64_t deadline_ms;
    struct bconn *bc;
    bool relay_more;       /* the reply relayed from bc has moreToCome: more follows */
    bool relay_from_bc;    /* the write in progress is bc's reply (else our own wbuf) */
    int32_t last_reply_id; /* requestID of the last reply relayed, for exhaust chains */
    struct kc kill;
    struct wire_buf wbuf; /* our own replies */
    struct wire_buf xbuf; /* a request rewritten before forwarding */
    struct zconn z;       /* compression: what the hello agreed, and the buffers it needs */

    /* For /metrics and the log (ops.c): when the request began (uv_hrtime, 0 when none is being
     * timed), the server it last went to, the error mongolb returned and the one relayed. */
    uint64_t m_start_ns;
    int m_server;
    int32_t m_code;
    int32_t m_relayed;
    bool close_logged; /* the closing line was logged at warn already */

    /* The login (auth.h): a user pointer, and the state of a login only while one runs. The
     * peer's address for the failed-login count is read from the prefix, and a delayed reply's
     * time from deadline_ms, so that an idle client carries nothing more for authentication. */
    struct auth_session auth;
    bool fetching; /* the exchange in progress reads a verifier (usersInfo) */
};

static void route(struct client *c);
static void start_fetch(struct client *c);
static bool command_doc(const struct client *c, bson_t *out);
static void dispatch(struct client *c, int idx);
static void kill_next(struct client *c);
static void finish_request(struct client *c);
static void on_timer(uv_timer_t *t);

/* --- state ---------------------------------------------------------------------------------- */

/* Arms the timer for the current state's limit, or stops it when the state has none. */
static void arm_timer(struct client *c)
{
    struct proxy *p = c->p;
    const struct mlb_config *cfg = &p->cfg;
    int64_t due = -1;
    switch (c->state) {
    case CLIENT_READING:
        if (stream_tls_pending(&c->st))
            due = c->accepted_ms + cfg->connect_timeout_ms; /* a handshake that stalls */
        else if (stream_partial(&c->st))
            due = c->frame_began_ms + cfg->client_frame_timeout_ms;
        else if (cfg->client_idle_timeout_ms > 0)
            due = c->last_active_ms + cfg->client_idle_timeout_ms;
        break;
    case CLIENT_WAIT_SERVER:
    case CLIENT_WAIT_CONN:
        due = c->deadline_ms;
        break;
    case CLIENT_FORWARDING:
        if (cfg->request_timeout_ms > 0) {
            /* A command's own time limit, when longer, is the server's to enforce. */
            int64_t limit = cfg->request_timeout_ms;
            if (c->ri.max_time_ms > limit)
                limit = c->ri.max_time_ms + 1000;
            due = c->state_since_ms + limit;
        }
        break;
    case CLIENT_REPLYING:
        due = c->state_since_ms + cfg->client_write_timeout_ms;
        break;
    case CLIENT_AUTH_DELAY:
        due = c->deadline_ms; /* when the failed login's reply is due */
        break;
    case CLIENT_CLOSING:
        break;
    }
    if (due < 0) {
        uv_timer_stop(&c->timer);
        return;
    }
    int64_t left = due - proxy_now(p);
    uv_timer_start(&c->timer, on_timer, (uint64_t)(left > 0 ? left : 0), 0);
}

/*
 * The one function that changes a client's state: it leaves the old state's wait list, enters the
 * new one's, and arms the timer for the new state's limit. (A pool's wait list is entered by
 * pool_get itself, which needs to know the pool; leaving it is here.)
 */
static void client_set_state(struct client *c, enum client_state st)
{
    struct proxy *p = c->p;
    if (c->state == CLIENT_WAIT_SERVER)
        list_remove(&c->wait_link);
    if (c->state == CLIENT_WAIT_CONN)
        pool_cancel_wait(p, &c->pw);
    c->state = st;
    c->state_since_ms = proxy_now(p);
    if (st == CLIENT_WAIT_SERVER)
        list_push_back(&p->select_waiters, &c->wait_link);
    arm_timer(c);
}

/* --- teardown ------------------------------------------------------------------------------- */

static void handle_closed(struct client *c)
{
    if (--c->handles_open > 0)
        return;
    wire_buf_free(&c->wbuf);
    wire_buf_free(&c->xbuf);
    zconn_free(&c->z, &c->p->sctx);
    kc_end(&c->kill);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_stream_closed(struct stream *s)
{
    struct client *c = s->owner;
    c->p->fds_in_use--;
    handle_closed(c);
}

/* Stops counting the current request against its server's in-flight figure. */
static void leave_server(struct client *c)
{
    if (c->server >= 0) {
        struct server *s = &c->p->topo.servers[c->server];
        if (s->in_flight > 0)
            s->in_flight--;
    }
    c->server = -1;
}

/* Copies the address of the server the current request went to (kept for messages written after
 * the request has left that server). */
static const char *server_addr(const struct client *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s", c->server >= 0 ? c->p->topo.servers[c->server].addr : "?");
    return buf;
}

/* Ends a complete exchange with backend connection b: it goes back to its pool, and the request
 * no longer counts against its server. */
static void end_exchange(struct client *c, struct bconn *b)
{
    c->bc = NULL;
    leave_server(c);
    pool_release(c->p, b);
}

/* The one teardown path of a client. Safe to call more than once and from any callback. */
static void client_close(struct client *c, const char *why)
{
    struct proxy *p = c->p;
    if (c->state == CLIENT_CLOSING)
        return;
    if (!c->close_logged)
        log_info(c->prefix, "closing: %s", why);
    struct bconn *b = c->bc;
    if (b) {
        /* A reply being relayed is held in b; a request in flight may run long. */
        c->bc = NULL;
        pool_abandon(p, b, c->state == CLIENT_REPLYING && c->relay_from_bc);
    }
    leave_server(c);
    auth_session_end(p, &c->auth);
    client_set_state(c, CLIENT_CLOSING);
    list_remove(&c->link);
    p->n_clients--;
    stream_close(&c->st);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* Closes the client for a fault of its own or a limit it reached: one line at warn with the
 * reason, instead of a warning followed by client_close's own line. */
static void client_close_warn(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void client_close_warn(struct client *c, const char *fmt, ...)
{
    if (c->state == CLIENT_CLOSING)
        return;
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    log_warn(c->prefix, "closing: %s", why);
    c->close_logged = true;
    client_close(c, why);
}

/* --- writing to the client ------------------------------------------------------------------ */

static void write_to_client(struct client *c, const uint8_t *data, size_t len, bool from_bc)
{
    if (c->z.reply_with != COMPRESSOR_NONE) {
        /* A compressed request gets compressed replies, each part of an exhaust stream too. */
        struct compress_levels lv = {c->p->cfg.zlib_compression_level,
                                     c->p->cfg.zstd_compression_level};
        int rc = zconn_encode(&c->z, &c->p->sctx, c->z.reply_with, &lv, data, len);
        if (rc < 0) {
            client_close(c, rc == -ENOBUFS ? "max_buffer_bytes reached compressing a reply"
                                           : "cannot compress a reply");
            return;
        }
        data = c->z.out.data;
        len = c->z.out.len;
    }
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    c->relay_from_bc = from_bc;
    client_set_state(c, CLIENT_REPLYING);
    int rc = stream_write(&c->st, &buf, 1);
    if (rc < 0) {
        char why[96];
        snprintf(why, sizeof(why), "cannot write: %s", uv_strerror(rc));
        client_close(c, why);
    }
}

/* Sends a document we built as the reply to the current request, in the request's own form:
 * OP_MSG for OP_MSG, OP_REPLY for the legacy opcodes; after delay_ms when that is positive (a
 * failed login's reply). */
static void reply_local_after(struct client *c, const bson_t *doc, int32_t reply_flags,
                              int64_t delay_ms)
{
    struct proxy *p = c->p;
    p->stats.replies_local++;
    if (c->ri.more_to_come && c->ri.opcode == WIRE_OP_MSG) {
        /* The client expects no reply (w:0): there is nobody to tell. */
        finish_request(c);
        return;
    }
    wire_buf_reset(&c->wbuf);
    int32_t id = proxy_next_request_id(p);
    int32_t to = c->last_reply_id ? c->last_reply_id : c->ri.request_id;
    int rc;
    if (c->ri.opcode == WIRE_OP_MSG) {
        rc = wire_append_msg(&c->wbuf, id, to, 0, doc);
    } else {
        const bson_t *docs[] = {doc};
        rc = wire_append_reply(&c->wbuf, id, to, reply_flags, 0, 0, docs, 1);
    }
    if (rc < 0) {
        client_close(c, "out of memory building a reply");
        return;
    }
    if (delay_ms > 0) {
        c->deadline_ms = proxy_now(c->p) + delay_ms;
        client_set_state(c, CLIENT_AUTH_DELAY);
        return;
    }
    write_to_client(c, c->wbuf.data, c->wbuf.len, false);
}

static void reply_local(struct client *c, const bson_t *doc, int32_t reply_flags)
{
    reply_local_after(c, doc, reply_flags, 0);
}

/* Replies with an error document {ok:0, errmsg, code, codeName, errorLabels?}. */
static void reply_error(struct client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(struct client *c, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->p->stats.errors_returned++;
    c->m_code = code;
    ops_error_returned(c->p, c->prefix, &c->ri, c->frame, c->frame_len, c->m_server, code, msg);
    bson_t doc = BSON_INITIALIZER;
    status_build_error(&doc, code, mongo_error_name(code), msg);
    const char *labels[2];
    int n = retry_error_labels(&c->ri, code, labels);
    retry_append_labels(&doc, labels, n);
    int32_t flags = 0;
    if (c->ri.kind == REQ_LEGACY_GET_MORE && code == MONGO_ERR_CURSOR_NOT_FOUND)
        flags = WIRE_REPLY_CURSOR_NOT_FOUND;
    else if (c->ri.kind == REQ_LEGACY_GET_MORE)
        flags = WIRE_REPLY_QUERY_FAILURE;
    reply_local(c, &doc, flags);
    bson_destroy(&doc);
}

static void on_written(struct stream *s, int status)
{
    struct client *c = s->owner;
    if (c->state == CLIENT_CLOSING)
        return;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        client_close(c, why);
        return;
    }
    if (!c->relay_from_bc) {
        /* Our own reply was written. */
        finish_request(c);
        return;
    }
    struct bconn *b = c->bc;
    c->relay_from_bc = false;
    bconn_reply_done(b);
    if (c->relay_more) {
        /* An exhaust stream: wait for its next part, which the connection delivers next. */
        client_set_state(c, CLIENT_FORWARDING);
        return;
    }
    end_exchange(c, b);
    finish_request(c);
}

/* --- the request cycle ---------------------------------------------------------------------- */

/* Ends the current request and moves on to the next one (or back to reading). */
static void finish_request(struct client *c)
{
    struct proxy *p = c->p;
    if (c->state == CLIENT_CLOSING)
        return;
    if (c->m_start_ns) {
        ops_request_done(p, c->prefix, &c->ri, c->frame, c->frame_len, c->m_server, c->m_code,
                         c->m_relayed, c->m_start_ns);
        c->m_start_ns = 0;
    }
    kc_end(&c->kill);
    c->server = -1;
    c->bc = NULL;
    c->last_reply_id = 0;
    c->frame = NULL;
    c->last_active_ms = proxy_now(p);
    /* Give back buffers that one large request made large. */
    if (c->wbuf.cap > 64 * 1024)
        wire_buf_free(&c->wbuf);
    if (c->xbuf.cap > 64 * 1024)
        wire_buf_free(&c->xbuf);
    zconn_trim(&c->z, &p->sctx);
    client_set_state(c, CLIENT_READING);
    /* The frame is still held by the stream here, whether the request ended at once or later. */
    size_t next = stream_pending_bytes(&c->st) - c->raw_len;
    if (!c->in_frame)
        stream_release(&c->st);
    if (p->shutting_down && next == 0)
        client_close(c, "shutting down");
}

/* Clears OP_MSG flag bits that are neither required nor known, as the OP_MSG specification asks
 * forwarders to. They are covered by the checksum, so a checksum is stripped with them, and the
 * frame is then 4 bytes shorter: every later view of it uses the new length. */
static void clear_unknown_flags(struct client *c)
{
    if (c->ri.opcode != WIRE_OP_MSG)
        return;
    uint32_t unknown = c->ri.msg_flags & ~WIRE_MSG_REQUIRED_MASK & ~WIRE_MSG_KNOWN_MASK;
    if (!unknown)
        return;
    uint8_t *f = c->frame;
    size_t len = c->frame_len;
    wire_msg_strip_checksum(f, &len);
    wire_put_i32(f + 16, (int32_t)((uint32_t)wire_get_i32(f + 16) & ~unknown));
    c->ri.msg_flags &= ~(unknown | WIRE_MSG_CHECKSUM_PRESENT);
    c->frame_len = len;
    c->out_len = len;
}

/* The command document of the current request (OP_MSG body, or OP_QUERY's query without its
 * $query wrapper), pointing into the frame. */
static bool command_doc(const struct client *c, bson_t *out)
{
    if (c->ri.opcode == WIRE_OP_MSG) {
        struct wire_msg m;
        return wire_msg_parse(c->frame, c->frame_len, &m) == 0 && wire_msg_body(&m, out);
    }
    struct wire_query q;
    bson_iter_t it;
    if (wire_query_parse(c->frame, c->frame_len, &q) < 0 ||
        !bson_init_static(out, q.query, q.query_len))
        return false;
    if (bson_iter_init_find(&it, out, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t n;
        const uint8_t *d;
        bson_iter_document(&it, &n, &d);
        return bson_init_static(out, d, n);
    }
    return true;
}

static void handle_hello(struct client *c)
{
    struct proxy *p = c->p;
    struct topology_limits lim;
    if (!ops_hello_limits(p, &lim)) {
        /* No backend known yet, and the first checks are still under way: wait for them rather
         * than guess the limits (ops_hello_limits answers once they have all ended). */
        int64_t until = ops_hello_wait_until(p);
        if (until < c->deadline_ms)
            c->deadline_ms = until;
        client_set_state(c, CLIENT_WAIT_SERVER);
        return;
    }
    bson_t extra = BSON_INITIALIZER, cmd;
    if (command_doc(c, &cmd) && auth_hello(p, &c->auth, &cmd, &extra) == AUTH_FETCH) {
        bson_destroy(&extra);
        start_fetch(c);
        return;
    }
    bson_t doc = BSON_INITIALIZER;
    status_build_hello(p, &c->ri, (int64_t)c->id, &doc);
    /* Compression, as a server negotiates it: a hello that names compressors gets the ones we
     * also have, and from then on may send OP_COMPRESSED. */
    bson_t hello;
    struct compress_list agreed;
    bson_iter_t it;
    if (compress_hello_doc(c->frame, c->frame_len, &hello) &&
        bson_iter_init_find(&it, &hello, "compression")) {
        c->z.agreed_mask = (uint8_t)(compress_negotiate(&hello, &p->cfg.compressors, &agreed) > 0
                                         ? compress_mask(&agreed)
                                         : 0);
        compress_append_names(&doc, "compression", &agreed);
    }
    bson_concat(&doc, &extra);
    bson_destroy(&extra);
    reply_local(c, &doc, 0);
    bson_destroy(&doc);
}

/* ping and buildInfo: answered by mongolb itself, as a mongos does, without a backend. */
static bool handle_local(struct client *c)
{
    bson_t doc = BSON_INITIALIZER;
    bool mine = ops_local_command(c->p, &c->ri, &doc);
    if (mine)
        reply_local(c, &doc, 0);
    bson_destroy(&doc);
    return mine;
}

/* The peer's address without its port, for the failed-login count: the prefix is "c12 ip:port"
 * (an IPv6 address unbracketed) or "c12 unix". */
static const char *peer_ip(const struct client *c, char *buf, size_t len)
{
    const char *sp = strchr(c->prefix, ' ');
    const char *addr = sp ? sp + 1 : "?";
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    snprintf(buf, len, "%.*s", (int)n, addr);
    return buf;
}

/* The login commands: answered here, never forwarded. */
static void handle_auth(struct client *c)
{
    struct proxy *p = c->p;
    bson_t cmd;
    if (!command_doc(c, &cmd)) {
        client_close(c, "unreadable login command");
        return;
    }
    struct auth_user *before = c->auth.au;
    bson_t reply = BSON_INITIALIZER;
    enum auth_result r = auth_command(p, &c->auth, &cmd, c->ri.db, &reply);
    if (r == AUTH_FETCH) {
        bson_destroy(&reply);
        start_fetch(c);
        return;
    }
    int64_t delay = 0;
    char ip[64];
    if (r == AUTH_FAILED) {
        delay = auth_failure_delay(p, peer_ip(c, ip, sizeof(ip)));
        log_info(c->prefix, "login failed (%s on %s)%s", c->ri.command, c->ri.db,
                 delay > 0 ? "; its reply is delayed" : "");
    } else if (c->auth.au && c->auth.au != before) {
        auth_login_ok(p, peer_ip(c, ip, sizeof(ip)));
        log_info(c->prefix, "logged in as %s@%s", c->auth.au->user, c->auth.au->db);
    } else if (strcmp(c->ri.command, "logout") == 0 && before) {
        log_info(c->prefix, "logged out");
    }
    reply_local_after(c, &reply, 0, delay);
    bson_destroy(&reply);
}

/* The verifier of a login is read from the cluster first (passthrough with service_user): one
 * exchange on a service user's connection, routed as any request is. */
static void start_fetch(struct client *c)
{
    struct proxy *p = c->p;
    if (auth_build_fetch(p, &c->auth, &c->xbuf, proxy_next_request_id(p)) < 0) {
        client_close(c, "out of memory building usersInfo");
        return;
    }
    c->fetching = true;
    c->out = c->xbuf.data;
    c->out_len = c->xbuf.len;
    route(c);
}

/* The verifier could not be read: a hello is answered without the login parts (the driver's
 * saslStart then tries again), a saslStart gets the reason. */
static void fetch_failed(struct client *c, const char *why)
{
    char who[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2];
    auth_fetch_name(&c->auth, who, sizeof(who));
    auth_fetch_abandon(&c->auth);
    c->fetching = false;
    c->out = c->frame;
    c->out_len = c->frame_len;
    log_warn(c->prefix, "cannot read the verifier of %s: %s", who, why);
    if (c->ri.kind == REQ_HELLO) {
        bson_t doc = BSON_INITIALIZER;
        status_build_hello(c->p, &c->ri, (int64_t)c->id, &doc);
        reply_local(c, &doc, 0);
        bson_destroy(&doc);
        return;
    }
    reply_error(c, MONGO_ERR_HOST_UNREACHABLE, "mongolb: cannot read the verifier of %s: %s", who,
                why);
}

static void handle_status(struct client *c)
{
    bson_t doc = BSON_INITIALIZER;
    status_build(c->p, &doc);
    reply_local(c, &doc, 0);
    bson_destroy(&doc);
}

/* getMore and OP_GET_MORE go to the server that opened the cursor, never through selection. */
static void handle_get_more(struct client *c)
{
    struct proxy *p = c->p;
    struct cursor_entry *e = cursors_find(&p->cursors, c->ri.cursor_id, proxy_now(p));
    if (!e) {
        p->stats.cursor_not_found++;
        reply_error(c, MONGO_ERR_CURSOR_NOT_FOUND, "cursor id %lld not found",
                    (long long)c->ri.cursor_id);
        return;
    }
    if (e->owner != c->ri.owner) {
        /* As mongod answers it: the cursor is another user's, so this never reaches it. */
        log_warn(c->prefix, "getMore of another user's cursor %lld refused",
                 (long long)c->ri.cursor_id);
        reply_error(c, MONGO_ERR_UNAUTHORIZED,
                    "cursor id %lld was not created by the "
                    "authenticated user",
                    (long long)c->ri.cursor_id);
        return;
    }
    p->stats.getmores_routed++;
    /* A balancer that picks a server per connection would have sent this getMore elsewhere
     * whenever it comes on another connection than the one that opened the cursor. */
    if (e->conn != (uint16_t)c->id && p->topo.n > 1)
        p->stats.misroutes_avoided++;
    if (e->real_id != e->id) {
        /* This cursor's id collided with another server's: the server knows it by its own id. */
        uint8_t *f = c->frame;
        if (c->ri.kind == REQ_LEGACY_GET_MORE) {
            wire_put_i64(f + c->frame_len - 8, e->real_id);
        } else {
            struct wire_msg m;
            bson_t body;
            bson_iter_t it;
            if (wire_msg_parse(f, c->frame_len, &m) == 0 && wire_msg_body(&m, &body) &&
                bson_iter_init(&it, &body) && bson_iter_next(&it) && BSON_ITER_HOLDS_INT64(&it))
                bson_iter_overwrite_int64(&it, e->real_id);
        }
    }
    dispatch(c, e->server);
}

/* Starts a killCursors: groups the ids by owner and asks the owners one after another. */
static void handle_kill_cursors(struct client *c)
{
    struct proxy *p = c->p;
    int rc = kc_begin(&c->kill, c->frame, c->frame_len, c->ri.opcode, c->ri.n_kill_ids, &p->cursors,
                      proxy_now(p));
    if (rc == -E2BIG) {
        reply_error(c, MONGO_ERR_BAD_VALUE, "killCursors names %d cursors; at most %d are accepted",
                    c->ri.n_kill_ids, KC_MAX_IDS);
        return;
    }
    if (rc < 0) {
        p->stats.bad_frames++;
        client_close_warn(c, "malformed killCursors");
        return;
    }
    if (p->cfg.auth_mode != MLB_AUTH_OFF) {
        /* Another user's cursor is refused before any part is sent, as mongod refuses it. */
        for (int i = 0; i < c->kill.n; i++) {
            struct cursor_entry *e = cursors_find(&p->cursors, c->kill.ids[i], proxy_now(p));
            if (e && e->owner != c->ri.owner) {
                long long id = (long long)c->kill.ids[i];
                kc_end(&c->kill);
                log_warn(c->prefix, "killCursors of another user's cursor %lld refused", id);
                reply_error(c, MONGO_ERR_UNAUTHORIZED,
                            "not authorized to kill cursor id %lld: it was not created by the "
                            "authenticated user",
                            id);
                return;
            }
        }
    }
    kill_next(c);
}

/* Sends the killCursors part for the next owner, or replies when every owner has answered. */
static void kill_next(struct client *c)
{
    struct proxy *p = c->p;
    struct kc *k = &c->kill;
    int owner = kc_next_owner(k);
    /* Servers since 5.1 (wire 14) no longer take OP_KILL_CURSORS: they drop the connection. The
     * client asked for no answer, so its cursors are forgotten here and left to the server's own
     * idle timeout, and no pooled connection is lost. */
    while (k->legacy && owner >= 0 && p->topo.servers[owner].max_wire >= WIRE_LEGACY_OPS_LAST + 1) {
        log_debug(c->prefix, "OP_KILL_CURSORS not sent to %s: it refuses legacy opcodes",
                  p->topo.servers[owner].addr);
        kc_merge(k, owner, NULL, 0, &p->cursors, proxy_now(p));
        owner = kc_next_owner(k);
    }
    if (owner < 0) {
        if (k->legacy) {
            finish_request(c);
            return;
        }
        bson_t doc = BSON_INITIALIZER;
        kc_build_reply(k, &doc);
        reply_local(c, &doc, 0);
        bson_destroy(&doc);
        return;
    }
    if (kc_build_part(k, owner, c->frame, c->frame_len, c->ri.request_id, &p->cursors, proxy_now(p),
                      &c->xbuf) < 0) {
        client_close(c, "out of memory building a killCursors");
        return;
    }
    p->stats.killcursors_routed++;
    c->out = c->xbuf.data;
    c->out_len = c->xbuf.len;
    c->exclude = -1;
    c->attempts = 0;
    dispatch(c, owner);
}

/* Builds the $readPreference document for rp. */
static void append_read_pref(bson_t *doc, const struct read_pref *rp)
{
    BSON_APPEND_UTF8(doc, "mode", read_mode_name(rp->mode));
    if (rp->n_sets > 0) {
        bson_t arr, set;
        BSON_APPEND_ARRAY_BEGIN(doc, "tags", &arr);
        for (int i = 0; i < rp->n_sets; i++) {
            char key[16];
            snprintf(key, sizeof(key), "%d", i);
            BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &set);
            for (int j = 0; j < rp->sets[i].n; j++)
                BSON_APPEND_UTF8(&set, rp->sets[i].tags[j].name, rp->sets[i].tags[j].value);
            bson_append_document_end(&arr, &set);
        }
        bson_append_array_end(doc, &arr);
    }
    if (rp->max_staleness_s >= 0)
        BSON_APPEND_INT32(doc, "maxStalenessSeconds", rp->max_staleness_s);
}

/* Routes a request that goes through selection (or a transaction's pin). */
static void route(struct client *c)
{
    struct proxy *p = c->p;
    if (proxy_now(p) >= c->deadline_ms) {
        reply_error(c, MONGO_ERR_FAILED_READ_PREF, "mongolb: no suitable server for %s after %d ms",
                    c->ri.command, p->cfg.server_selection_timeout_ms);
        return;
    }
    struct read_pref rp;
    struct route r;
    struct router_input in = {
        .topo = &p->topo,
        .ri = &c->ri,
        .default_rp = &p->default_read_pref,
        .pin = txn_pin_lookup(p, &c->ri),
        .exclude = c->exclude,
        .attempts = c->attempts,
        .rnd = proxy_rand32,
        .rnd_ctx = p,
    };
    router_route(&in, &rp, &r);
    switch (r.kind) {
    case ROUTE_ERROR:
        reply_error(c, r.code, "%s", r.errmsg);
        return;
    case ROUTE_WAIT:
        if (c->state != CLIENT_WAIT_SERVER) {
            /* As the server-selection specification asks: with no suitable server, request
             * prompt checks of all servers rather than wait for the next heartbeat. */
            for (int i = 0; i < p->topo.n; i++)
                monitor_request_check(p, i);
            log_info(c->prefix, "%s: no suitable server yet (%s); waiting up to %lld ms",
                     c->ri.command, r.errmsg, (long long)(c->deadline_ms - proxy_now(p)));
            client_set_state(c, CLIENT_WAIT_SERVER);
        }
        return;
    case ROUTE_SERVER:
        break;
    }
    if (in.pin >= 0 && !r.pinned)
        log_info(c->prefix, "%s: pinned server %s is unavailable; trying another", c->ri.command,
                 p->topo.servers[in.pin].addr);
    if (r.pinned)
        p->stats.txn_pinned++;
    if (r.add_read_pref && c->out == c->frame) {
        struct wire_msg m;
        bson_t doc = BSON_INITIALIZER;
        append_read_pref(&doc, r.add_read_pref);
        wire_buf_reset(&c->xbuf);
        if (wire_msg_parse(c->frame, c->frame_len, &m) == 0 &&
            wire_append_msg_with_field(&c->xbuf, &m, "$readPreference", &doc) == 0) {
            c->out = c->xbuf.data;
            c->out_len = c->xbuf.len;
        }
        bson_destroy(&doc);
    }
    if (c->ri.start_transaction)
        txn_pin_set(p, &c->ri, r.server);
    dispatch(c, r.server);
}

/* Sends the current request (c->out) to server idx. */
static void dispatch(struct client *c, int idx)
{
    struct proxy *p = c->p;
    c->server = idx;
    c->m_server = idx;
    c->attempts++;
    struct server *s = &p->topo.servers[idx];
    s->in_flight++;
    s->requests++;
    client_set_state(c, CLIENT_WAIT_CONN);
    /* A verifier is read on a service user's connection; anything else on the client's user's. */
    c->pw.au = c->fetching ? NULL : auth_pool_user(p, &c->auth);
    struct bconn *b = pool_get(p, idx, &c->pw);
    if (b)
        client_pool_ops.on_ready(c, b, 0, NULL);
}

/* After an attempt failed: retry elsewhere when allowed, else answer with an error. */
static void retry_or_fail(struct client *c, const char *why, bool may_have_reached)
{
    struct proxy *p = c->p;
    char where[300];
    server_addr(c, where, sizeof(where));
    int failed = c->server;
    leave_server(c);
    if (c->fetching) {
        fetch_failed(c, why);
        return;
    }
    if (c->ri.kind == REQ_GET_MORE || c->ri.kind == REQ_LEGACY_GET_MORE) {
        /* The cursor lived on that server only: this getMore cannot go anywhere else. */
        reply_error(c, MONGO_ERR_HOST_UNREACHABLE,
                    "mongolb: getMore of cursor %lld failed on %s: %s", (long long)c->ri.cursor_id,
                    where, why);
        return;
    }
    if (c->kill.active) {
        /* That owner's cursors cannot be confirmed killed: report them unknown, go on. */
        kc_merge(&c->kill, failed, NULL, 0, &p->cursors, proxy_now(p));
        kill_next(c);
        return;
    }
    if (!p->shutting_down && proxy_now(p) < c->deadline_ms &&
        retry_may(&c->ri, c->attempts, may_have_reached)) {
        p->stats.retries++;
        log_info(c->prefix, "%s failed on %s (%s); retrying on another server", c->ri.command,
                 where, why);
        c->exclude = failed;
        route(c);
        return;
    }
    reply_error(c, MONGO_ERR_HOST_UNREACHABLE, "mongolb: %s failed on %s: %s", c->ri.command, where,
                why);
}

/* --- pool events ---------------------------------------------------------------------------- */

static void on_ready(void *user, struct bconn *b, int status, const char *why)
{
    struct client *c = user;
    if (c->state == CLIENT_CLOSING) {
        if (b)
            pool_release(c->p, b);
        return;
    }
    if (status == -EACCES) {
        /* The server refused this user's kept key (its password changed): it logs in again. */
        leave_server(c);
        reply_error(c, MONGO_ERR_AUTHENTICATION_FAILED, "mongolb: %s", why ? why : "");
        return;
    }
    if (status < 0 || !b) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no connection: %s", why && *why ? why : uv_strerror(status));
        retry_or_fail(c, msg, false);
        return;
    }
    c->bc = b;
    client_set_state(c, CLIENT_FORWARDING);
    int rc = bconn_send(b, c->out, c->out_len, !c->ri.more_to_come);
    if (rc < 0) {
        c->bc = NULL;
        bconn_close(b, "write could not start");
        retry_or_fail(c, uv_strerror(rc), false);
    }
}

static void on_sent(void *user, struct bconn *b)
{
    struct client *c = user;
    /* A moreToCome request (w:0 write, OP_KILL_CURSORS): nothing comes back. */
    end_exchange(c, b);
    if (c->kill.active) {
        kill_next(c);
        return;
    }
    finish_request(c);
}

static void on_backend_error(void *user, struct bconn *b, int status, const char *why)
{
    struct client *c = user;
    (void)b;
    (void)status;
    if (c->state == CLIENT_CLOSING)
        return;
    c->bc = NULL;
    if (c->last_reply_id) {
        /* Mid-stream: the client has part of the answer already, so this cannot be retried. */
        leave_server(c);
        if (c->ri.kind == REQ_GET_MORE)
            cursors_remove(&c->p->cursors, c->ri.cursor_id);
        reply_error(c, MONGO_ERR_HOST_UNREACHABLE,
                    "mongolb: the server failed during a streamed reply: %s", why);
        return;
    }
    retry_or_fail(c, why, true);
}

/* Records or forgets the cursor a reply opens, continues or ends; rewrites a colliding id. */
static void note_cursor(struct client *c, uint8_t *frame, const struct reply_info *r)
{
    struct proxy *p = c->p;
    const struct request_info *ri = &c->ri;
    bool get_more = ri->kind == REQ_GET_MORE || ri->kind == REQ_LEGACY_GET_MORE;
    if (!r->ok) {
        if (get_more && (r->code == MONGO_ERR_CURSOR_NOT_FOUND || r->legacy_not_found))
            cursors_remove(&p->cursors, ri->cursor_id);
        return;
    }
    if (r->legacy_not_found) {
        cursors_remove(&p->cursors, ri->cursor_id);
        return;
    }
    if (!r->has_cursor || !(ri->opens_cursor || get_more || ri->legacy))
        return;
    if (r->cursor_id == 0) {
        if (get_more)
            cursors_remove(&p->cursors, ri->cursor_id);
        return;
    }
    if (get_more && r->opcode == WIRE_OP_REPLY && r->cursor_id == ri->cursor_id)
        return;
    int64_t cid;
    if (cursors_add(&p->cursors, c->server, r->cursor_id, proxy_now(p), proxy_rand64, p, &cid) < 0)
        return;
    cursors_set_conn(&p->cursors, cid, (uint32_t)c->id, c->ri.owner);
    if (cid != r->cursor_id) {
        /* The reply lives in the backend connection's buffer, which is ours to change. */
        wire_put_i64(frame + r->cursor_id_off, cid);
        if (!get_more)
            log_warn(c->prefix,
                     "cursor id %lld from %s collided with another server's; the client sees "
                     "%lld",
                     (long long)r->cursor_id, p->topo.servers[c->server].addr, (long long)cid);
    }
}

/* The errmsg of a reply's body, or "" (for a log line or a wrapped error). */
static const char *reply_errmsg(const struct reply_info *r)
{
    bson_t body;
    bson_iter_t it;
    if (r->body && bson_init_static(&body, r->body, r->body_len) &&
        bson_iter_init_find(&it, &body, "errmsg") && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return "";
}

static int on_reply(void *user, struct bconn *b, uint8_t *frame, size_t len)
{
    struct client *c = user;
    struct proxy *p = c->p;
    if (c->fetching) {
        char why[300];
        int rc = auth_fetch_reply(p, &c->auth, frame, len, why, sizeof(why));
        end_exchange(c, b);
        if (rc < 0) {
            fetch_failed(c, why);
            return STREAM_NEXT;
        }
        c->fetching = false;
        c->out = c->frame;
        c->out_len = c->frame_len;
        if (c->ri.kind == REQ_HELLO)
            handle_hello(c);
        else
            handle_auth(c);
        return STREAM_NEXT;
    }
    if (c->kill.active && !c->kill.legacy) {
        kc_merge(&c->kill, c->server, frame, len, &p->cursors, proxy_now(p));
        end_exchange(c, b);
        kill_next(c);
        return STREAM_NEXT;
    }
    struct reply_info r;
    bool command = c->ri.opcode == WIRE_OP_MSG || c->ri.kind == REQ_FORWARD;
    if (c->ri.opcode == WIRE_OP_QUERY && strcmp(c->ri.command, "find") == 0 && !c->ri.opens_cursor)
        command = false; /* a legacy query on a collection answers with documents */
    if (reply_inspect(frame, len, command, &r) < 0) {
        /* Relay what we cannot read as it is: the client's driver will judge it. */
        memset(&r, 0, sizeof(r));
        r.ok = true;
    } else {
        note_cursor(c, frame, &r);
    }
    if (r.code > 0 && mongo_error_is_state_change(r.code) && c->server >= 0)
        proxy_state_change(p, c->server, r.code);
    if ((r.code != 0 || r.retry_label) && c->server >= 0 && !c->last_reply_id && !c->kill.active &&
        retry_take_back(&c->ri, c->attempts, r.code, r.retry_label) && !p->shutting_down &&
        proxy_now(p) < c->deadline_ms) {
        log_info(c->prefix, "%s got error %d from %s; trying again", c->ri.command, r.code,
                 p->topo.servers[c->server].addr);
        c->exclude = c->server;
        end_exchange(c, b);
        p->stats.retries++;
        route(c);
        return STREAM_NEXT;
    }
    if (r.code > 0 && mongo_error_is_state_change(r.code) && !r.more_to_come && !c->last_reply_id &&
        r.opcode == WIRE_OP_MSG) {
        /*
         * "Not writable primary" and "shutting down" describe one backend, not mongolb: relayed
         * as they are, they would make the driver mark mongolb itself unknown and drop every
         * pooled connection to it. The request could not be taken back (it may have run), so it
         * becomes what a lost server is: HostUnreachable, with the labels the specifications
         * give it (TransientTransactionError inside a transaction, UnknownTransactionCommitResult
         * on commit), and the server's own answer in the message.
         */
        char addr[300], msg[300];
        snprintf(addr, sizeof(addr), "%s", p->topo.servers[c->server].addr);
        snprintf(msg, sizeof(msg), "%s", reply_errmsg(&r));
        int32_t code = r.code;
        end_exchange(c, b);
        reply_error(c, MONGO_ERR_HOST_UNREACHABLE, "mongolb: %s on %s answered %d: %s",
                    c->ri.command, addr, code, msg);
        return STREAM_NEXT;
    }
    if (!r.ok && r.code > 0) {
        c->m_relayed = r.code;
        metrics_codes_add(&p->metrics.relayed_errors, r.code);
    }
    c->relay_more = r.more_to_come;
    c->last_reply_id = r.more_to_come ? r.request_id : 0;
    write_to_client(c, frame, len, true);
    return c->state == CLIENT_CLOSING ? STREAM_NEXT : STREAM_HOLD;
}

const struct pool_user_ops client_pool_ops = {
    .on_ready = on_ready,
    .on_sent = on_sent,
    .on_reply = on_reply,
    .on_error = on_backend_error,
};

/* --- frames from the client ------------------------------------------------------------------ */

/* Refuses a frame before its body is buffered: a TLS handshake on a plaintext port, or an opcode
 * mongolb never takes, so that a stray protocol fails at once instead of waiting for megabytes. */
static int on_header(struct stream *s, const struct wire_header *h, const uint8_t *bytes)
{
    struct client *c = s->owner;
    switch (h->opcode) {
    case WIRE_OP_MSG:
    case WIRE_OP_QUERY:
    case WIRE_OP_GET_MORE:
    case WIRE_OP_KILL_CURSORS:
        return 0;
    case WIRE_OP_COMPRESSED:
        /* Only from a client whose hello agreed on compression. */
        if (c->z.agreed_mask)
            return 0;
        /* fall through */
    default:
        c->p->stats.bad_frames++;
        if (bytes[0] == 0x16 && bytes[1] == 0x03) {
            /* A TLS record header: 0x16 (handshake), then the protocol version 3.x. */
            client_close_warn(c, "a TLS handshake on a plaintext port");
        } else {
            client_close_warn(c, "unsupported opcode %d (%s)", h->opcode,
                              wire_opcode_name(h->opcode));
        }
        return -EPROTO;
    }
}

static void on_frame_begin(struct stream *s)
{
    struct client *c = s->owner;
    c->frame_began_ms = proxy_now(c->p);
    if (c->state == CLIENT_READING)
        arm_timer(c);
}

/* Classifies and starts one request. */
static void handle_request(struct client *c)
{
    struct proxy *p = c->p;
    char err[200];
    int rc = request_classify(c->frame, c->frame_len, &c->ri, err, sizeof(err));
    c->out = c->frame;
    c->out_len = c->frame_len;
    c->server = -1;
    c->exclude = -1;
    c->attempts = 0;
    c->last_reply_id = 0;
    c->deadline_ms = proxy_now(p) + p->cfg.server_selection_timeout_ms;
    c->m_server = -1;
    c->m_code = 0;
    c->m_relayed = 0;
    if (rc == -EOVERFLOW) {
        /* Well framed but nested deeper than BSON allows: refused as mongod does, with an error
         * the client can read; the connection stays usable. */
        p->stats.too_deep++;
        /* reply_error logs it, with the command and the code. */
        /* A moreToCome request expects no reply: reply_local then sends none. */
        reply_error(c, BSON_CHECK_DEPTH_ERROR_CODE, "%s", err);
        return;
    }
    if (rc < 0) {
        p->stats.bad_frames++;
        client_close_warn(c, "%s", err);
        return;
    }
    p->stats.requests++;
    c->m_start_ns = uv_hrtime();
    log_debug(c->prefix, "%s %s.%s", wire_opcode_name(c->ri.opcode), c->ri.db, c->ri.command);
    clear_unknown_flags(c);
    c->fetching = false;
    c->ri.owner = auth_owner(&c->auth);
    char refusal[300];
    bool log_it;
    if (auth_gate(p, &c->auth, &c->ri, refusal, sizeof(refusal), &log_it)) {
        if (log_it)
            log_warn(c->prefix, "refused: %s", refusal);
        reply_error(c, MONGO_ERR_UNAUTHORIZED, "%s", refusal);
        return;
    }
    txn_pin_observe(p, &c->ri);
    switch (c->ri.kind) {
    case REQ_HELLO:
        handle_hello(c);
        return;
    case REQ_STATUS:
        handle_status(c);
        return;
    case REQ_GET_MORE:
    case REQ_LEGACY_GET_MORE:
        handle_get_more(c);
        return;
    case REQ_KILL_CURSORS:
    case REQ_LEGACY_KILL_CURSORS:
        handle_kill_cursors(c);
        return;
    case REQ_FORWARD:
        if (!handle_local(c))
            route(c);
        return;
    case REQ_AUTH:
        handle_auth(c);
        return;
    case REQ_UNSUPPORTED:
        break;
    }
    client_close(c, "unsupported request");
}

/* Decompresses an OP_COMPRESSED request into c->z.in: bounded by max_message_bytes and the
 * buffer budget, from one of the compressors this client's hello agreed on. A frame that is
 * refused closes this client only. Returns 0 or a negative errno (the client is closed). */
static int decompress_request(struct client *c, const uint8_t *frame, size_t len)
{
    struct proxy *p = c->p;
    int id;
    int rc =
        zconn_decode(&c->z, &p->sctx, frame, len, p->cfg.max_message_bytes, c->z.agreed_mask, &id);
    if (rc < 0) {
        p->stats.bad_frames++;
        const char *why = rc == -ENOBUFS ? "no room in max_buffer_bytes for a decompressed request"
                                         : compress_strerror(rc);
        log_warn(c->prefix, "closing: %s (compressor %d, declared %d bytes, frame %zu bytes)", why,
                 len >= COMPRESS_MIN_FRAME ? frame[24] : -1,
                 len >= COMPRESS_MIN_FRAME ? wire_get_i32(frame + 20) : -1, len);
        client_close(c, why);
        return rc;
    }
    c->z.reply_with = (int8_t)id;
    p->stats.compressed_requests++;
    return 0;
}

static int on_frame(struct stream *s, uint8_t *frame, size_t len)
{
    struct client *c = s->owner;
    c->raw_len = len;
    c->z.reply_with = COMPRESSOR_NONE;
    if (len >= WIRE_HEADER_LEN && wire_get_i32(frame + 12) == WIRE_OP_COMPRESSED) {
        if (decompress_request(c, frame, len) < 0)
            return -ECANCELED;
        frame = c->z.in.data;
        len = c->z.in.len;
    }
    c->frame = frame;
    c->frame_len = len;
    c->last_active_ms = proxy_now(c->p);
    c->in_frame = true;
    handle_request(c);
    c->in_frame = false;
    if (c->state == CLIENT_CLOSING)
        return -ECANCELED;
    /* Answered at once with nothing to write (moreToCome, OP_KILL_CURSORS of unknown ids): the
     * loop goes on with the next frame, iteratively. */
    return c->state == CLIENT_READING ? STREAM_NEXT : STREAM_HOLD;
}

static void on_stream_error(struct stream *s, int status)
{
    struct client *c = s->owner;
    if (status == UV_EOF) {
        client_close(c, "client disconnected");
    } else if (status == -EPROTO && stream_tls_error(s)[0]) {
        c->p->stats.tls_handshake_failures += stream_tls_pending(s);
        client_close_warn(c, "%s", stream_tls_error(s));
    } else if (status == -EMSGSIZE) {
        c->p->stats.bad_frames++;
        client_close_warn(c, "message length is outside [16, %d]", c->p->cfg.max_message_bytes);
    } else {
        client_close(c, uv_strerror(status));
    }
}

static const struct stream_cb client_stream_cb = {
    .on_frame = on_frame,
    .on_header = on_header,
    .on_frame_begin = on_frame_begin,
    .on_error = on_stream_error,
    .on_written = on_written,
    .on_closed = on_stream_closed,
};

static void on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    struct proxy *p = c->p;
    int64_t now = proxy_now(p);
    switch (c->state) {
    case CLIENT_READING:
        if (stream_tls_pending(&c->st)) {
            if (now - c->accepted_ms >= p->cfg.connect_timeout_ms) {
                p->stats.clients_timed_out++;
                client_close_warn(c, "no TLS handshake within connect_timeout_ms (%d ms)",
                                  p->cfg.connect_timeout_ms);
                return;
            }
        } else if (stream_partial(&c->st)) {
            if (now - c->frame_began_ms >= p->cfg.client_frame_timeout_ms) {
                p->stats.clients_timed_out++;
                client_close_warn(c,
                                  "a frame did not arrive whole within %d ms "
                                  "(client_frame_timeout_ms)",
                                  p->cfg.client_frame_timeout_ms);
                return;
            }
        } else if (p->cfg.client_idle_timeout_ms > 0 &&
                   now - c->last_active_ms >= p->cfg.client_idle_timeout_ms) {
            p->stats.clients_timed_out++;
            char why[96];
            snprintf(why, sizeof(why), "idle for %d ms (client_idle_timeout_ms)",
                     p->cfg.client_idle_timeout_ms);
            client_close(c, why);
            return;
        }
        arm_timer(c);
        return;
    case CLIENT_WAIT_SERVER:
        if (c->ri.kind == REQ_HELLO && now >= ops_hello_wait_until(p)) {
            /* The first checks have ended: hello answers with what is known. */
            handle_hello(c);
            return;
        }
        if (c->ri.kind == REQ_HELLO)
            reply_error(c, MONGO_ERR_HOST_UNREACHABLE, "mongolb: no backend reachable after %d ms",
                        p->cfg.server_selection_timeout_ms);
        else
            reply_error(c, MONGO_ERR_FAILED_READ_PREF,
                        "mongolb: no suitable server for %s after %d ms", c->ri.command,
                        p->cfg.server_selection_timeout_ms);
        return;
    case CLIENT_WAIT_CONN: {
        char addr[300];
        server_addr(c, addr, sizeof(addr));
        leave_server(c);
        reply_error(c, MONGO_ERR_NETWORK_IFACE_TIMEOUT,
                    "mongolb: no connection to %s became free within %d ms", addr,
                    p->cfg.server_selection_timeout_ms);
        return;
    }
    case CLIENT_FORWARDING: {
        p->stats.requests_timed_out++;
        struct bconn *b = c->bc;
        char addr[300];
        server_addr(c, addr, sizeof(addr));
        /* One line for it: reply_error's, with the command, the server and the code. */
        c->bc = NULL;
        if (b)
            bconn_close(b, "request_timeout_ms reached");
        leave_server(c);
        reply_error(c, MONGO_ERR_NETWORK_TIMEOUT, "mongolb: %s on %s got no reply within %lld ms",
                    c->ri.command, addr, (long long)(now - c->state_since_ms));
        return;
    }
    case CLIENT_AUTH_DELAY:
        write_to_client(c, c->wbuf.data, c->wbuf.len, false);
        return;
    case CLIENT_REPLYING:
        p->stats.clients_timed_out++;
        client_close_warn(c, "the reply was not taken within %d ms (client_write_timeout_ms)",
                          p->cfg.client_write_timeout_ms);
        return;
    case CLIENT_CLOSING:
        return;
    }
}

/* --- waiting clients, shutdown ------------------------------------------------------------- */

void clients_retry_waiting(struct proxy *p)
{
    /* Take the list over first: a waiter may go straight back onto it. */
    struct list pending;
    list_init(&pending);
    while (!list_empty(&p->select_waiters)) {
        struct list *e = p->select_waiters.next;
        list_remove(e);
        list_push_back(&pending, e);
    }
    while (!list_empty(&pending)) {
        struct client *c = list_entry(pending.next, struct client, wait_link);
        /* Back on the wait list, still waiting; routing moves it on if a server suits now. */
        list_remove(&c->wait_link);
        list_push_back(&p->select_waiters, &c->wait_link);
        if (c->ri.kind == REQ_HELLO)
            handle_hello(c);
        else
            route(c);
    }
}

void clients_close_all(struct proxy *p, const char *why)
{
    while (!list_empty(&p->clients))
        client_close(list_entry(p->clients.next, struct client, link), why);
}

static bool is_idle(const struct client *c)
{
    return c->state == CLIENT_READING && stream_pending_bytes(&c->st) == 0;
}

int clients_in_flight(struct proxy *p)
{
    int n = 0;
    for (struct list *e = p->clients.next; e != &p->clients; e = e->next)
        n += !is_idle(list_entry(e, struct client, link));
    return n;
}

void clients_close_idle(struct proxy *p)
{
    struct list *e = p->clients.next;
    while (e != &p->clients) {
        struct client *c = list_entry(e, struct client, link);
        e = e->next;
        if (is_idle(c))
            client_close(c, "shutting down");
    }
}

void clients_rearm(struct proxy *p)
{
    for (struct list *e = p->clients.next; e != &p->clients; e = e->next)
        arm_timer(list_entry(e, struct client, link));
}

/* --- accepting ------------------------------------------------------------------------------ */

int client_accept(struct proxy *p, uv_stream_t *server, bool is_unix)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rc =
        is_unix ? stream_init_pipe(&p->sctx, &c->st, &client_stream_cb, c, p->cfg.max_message_bytes)
                : stream_init_tcp(&p->sctx, &c->st, &client_stream_cb, c, p->cfg.max_message_bytes);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->p = p;
    zconn_init(&c->z);
    uv_timer_init(p->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->server = -1;
    c->m_server = -1;
    c->pw.pool = -1;
    c->pw.user = c;
    list_init(&c->pw.link);
    list_init(&c->wait_link);
    list_init(&c->link);
    list_push_back(&p->clients, &c->link);
    p->n_clients++;
    p->fds_in_use++;
    c->id = ++p->next_client_id;
    c->state = CLIENT_READING;
    c->state_since_ms = c->last_active_ms = c->accepted_ms = proxy_now(p);
    snprintf(c->prefix, sizeof(c->prefix), "c%llu", (unsigned long long)c->id);
    rc = uv_accept(server, &c->st.h.stream);
    if (rc < 0) {
        log_warn(NULL, "accept: %s", uv_strerror(rc));
        client_close(c, "accept failed");
        return 0;
    }
    char peer[64] = "unix";
    if (!is_unix) {
        (void)listener_peer_name(&c->st.h.tcp, peer, sizeof(peer));
        uv_tcp_nodelay(&c->st.h.tcp, 1);
    }
    snprintf(c->prefix, sizeof(c->prefix), "c%llu %s", (unsigned long long)c->id, peer);
    const char *refuse = NULL;
    char why[128];
    if (p->shutting_down) {
        refuse = "shutting down";
    } else if (p->n_clients > p->cfg.max_clients) {
        snprintf(why, sizeof(why), "max_clients (%d) reached", p->cfg.max_clients);
        refuse = why;
    } else if (p->fd_limit > 0 && p->fds_in_use > p->fd_limit - FD_RESERVE_CLIENTS) {
        p->stats.fd_limit_refusals++;
        snprintf(why, sizeof(why), "the file descriptor limit (%d) is nearly reached", p->fd_limit);
        refuse = why;
    }
    if (refuse) {
        p->stats.clients_refused++;
        client_close_warn(c, "refused: %s", refuse);
        return 0;
    }
    p->stats.clients_accepted++;
    /* At the level of the closing line, so that both ends of a connection are in the log. */
    log_info(c->prefix, "accepted");
    if (p->tls.server &&
        stream_tls_accept(&c->st, p->tls.server, p->cfg.tls_mode != MLB_TLS_REQUIRE) < 0) {
        client_close(c, "out of memory for TLS");
        return 0;
    }
    if (stream_read_start(&c->st) < 0)
        client_close(c, "cannot read from client");
    else
        arm_timer(c);
    return 0;
}
