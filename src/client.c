/*
 * client.c: application connections, and the routing of each of their requests.
 *
 * A client handles one request at a time, as drivers send them: read a whole frame, classify it,
 * answer it locally or pick a server (the cursor's owner, the transaction's pin, or selection),
 * take a pooled connection to that server, forward the frame unchanged, and relay the reply from
 * the backend connection's buffer. Reading from the client pauses while a request is in progress,
 * so the frame stays where it is and is forwarded without a copy.
 *
 * Failures never silently drop the client: a backend that fails becomes an error document, with
 * the codes a mongos would use, and only a malformed or oversized frame from the client itself
 * closes its connection (with a log line).
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mongo_errors.h"

/* MongoDB error codes mongolb itself returns. */
#define ERR_HOST_UNREACHABLE      6
#define ERR_CURSOR_NOT_FOUND      43
#define ERR_FAILED_READ_PREF      133
#define ERR_NETWORK_IFACE_TIMEOUT 202
#define ERR_SHUTDOWN_IN_PROGRESS  91

static void client_process(struct client *c);
static void route(struct client *c);
static void dispatch(struct client *c, int idx);
static void kill_next(struct client *c);
static void finish_request(struct client *c);

/* --- teardown ---------------------------------------------------------------------------- */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (--c->handles_open > 0)
        return;
    wire_buf_free(&c->rbuf);
    wire_buf_free(&c->wbuf);
    wire_buf_free(&c->kill.out);
    wire_buf_free(&c->xbuf);
    free(c->kill.ids);
    free(c->kill.owner);
    if (c->kill.active) {
        bson_destroy(&c->kill.killed);
        bson_destroy(&c->kill.not_found);
        bson_destroy(&c->kill.alive);
        bson_destroy(&c->kill.unknown);
    }
    free(c);
}

/* Stops counting the current request against its server's in-flight figure. */
static void leave_server(struct client *c)
{
    if (c->server >= 0) {
        struct server *s = &g_proxy->topo.servers[c->server];
        if (s->in_flight > 0)
            s->in_flight--;
    }
    c->server = -1;
}

/* The one teardown path of a client. Safe to call more than once and from any callback. */
static void client_close(struct client *c, const char *why)
{
    struct proxy *p = g_proxy;
    if (c->state == CLIENT_CLOSING)
        return;
    log_info(c->prefix, "closing: %s", why);
    if (c->state == CLIENT_WAIT_SERVER)
        list_remove(&c->wait_link);
    pool_cancel_wait(p, c);
    struct bconn *b = c->bc;
    if (b) {
        c->bc = NULL;
        b->client = NULL;
        if (c->state == CLIENT_REPLYING) {
            /* The reply being relayed came from b: the write is cancelled with the socket, so the
             * bytes can be dropped. A stream that has more to come cannot be reused. */
            bconn_consume(b, c->relay_len);
            if (c->relay_more)
                bconn_close(b, "client left during a streamed reply");
            else
                pool_release(p, b);
        }
        /* In any other state the pool drops the reply when it arrives. */
    }
    leave_server(c);
    c->state = CLIENT_CLOSING;
    list_remove(&c->link);
    p->n_clients--;
    uv_timer_stop(&c->timer);
    uv_close(&c->h.handle, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

/* --- writing to the client ------------------------------------------------------------------ */

static void on_client_written(uv_write_t *req, int status)
{
    struct client *c = req->data;
    if (status == UV_ECANCELED || c->state == CLIENT_CLOSING)
        return;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        client_close(c, why);
        return;
    }
    struct bconn *b = c->bc;
    if (!b) {
        /* Our own reply was written. */
        finish_request(c);
        return;
    }
    bconn_consume(b, c->relay_len);
    if (c->relay_more) {
        /* An exhaust stream: wait for its next part. */
        c->state = CLIENT_FORWARDING;
        if (bconn_read_start(b) < 0) {
            c->bc = NULL;
            bconn_close(b, "cannot resume reading");
            client_on_backend_error(c, b, UV_EIO);
        }
        return;
    }
    c->bc = NULL;
    leave_server(c);
    pool_release(g_proxy, b);
    finish_request(c);
}

static int write_to_client(struct client *c, const uint8_t *data, size_t len)
{
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    c->write_req.data = c;
    c->state = CLIENT_REPLYING;
    int rc = uv_write(&c->write_req, &c->h.stream, &buf, 1, on_client_written);
    if (rc < 0)
        client_close(c, "cannot write to client");
    return rc;
}

/* Sends a document we built as the reply to the current request, in the request's own form:
 * OP_MSG for OP_MSG, OP_REPLY for the legacy opcodes. */
static void reply_local(struct client *c, const bson_t *doc, int32_t reply_flags)
{
    struct proxy *p = g_proxy;
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
    write_to_client(c, c->wbuf.data, c->wbuf.len);
}

/* The commands that end a transaction. */
static bool is_txn_end(const struct request_info *ri)
{
    return strcmp(ri->command, "commitTransaction") == 0 ||
           strcmp(ri->command, "abortTransaction") == 0;
}

/* A retryable write: drivers attach a txnNumber outside a transaction only to those. */
static bool is_retryable_write(const struct request_info *ri)
{
    return ri->kind == REQ_FORWARD && ri->has_txn_number && !ri->autocommit_false;
}

/*
 * Adds the error labels the drivers' transactions and retryable-writes specifications expect on
 * an error mongolb made itself because a server could not be reached or chosen: inside a
 * transaction TransientTransactionError (the driver's withTransaction then retries the whole
 * transaction); on commit UnknownTransactionCommitResult and RetryableWriteError (the driver
 * retries the commit); on abort and on retryable writes RetryableWriteError. Other errors, and
 * writes that are not retryable, get no label, so nothing is retried that could apply twice.
 */
static void append_error_labels(bson_t *doc, const struct request_info *ri, int code)
{
    bool network = code == ERR_HOST_UNREACHABLE || code == ERR_NETWORK_IFACE_TIMEOUT;
    const char *labels[2];
    int n = 0;
    if (strcmp(ri->command, "commitTransaction") == 0) {
        labels[n++] = "UnknownTransactionCommitResult";
        if (network)
            labels[n++] = "RetryableWriteError";
    } else if (strcmp(ri->command, "abortTransaction") == 0) {
        if (network)
            labels[n++] = "RetryableWriteError";
    } else if (ri->autocommit_false && code != ERR_CURSOR_NOT_FOUND) {
        labels[n++] = "TransientTransactionError";
    } else if (is_retryable_write(ri) && network) {
        labels[n++] = "RetryableWriteError";
    }
    if (n == 0)
        return;
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(doc, "errorLabels", &arr);
    for (int i = 0; i < n; i++) {
        char key[4];
        snprintf(key, sizeof(key), "%d", i);
        BSON_APPEND_UTF8(&arr, key, labels[i]);
    }
    bson_append_array_end(doc, &arr);
}

/* Replies with an error document {ok:0, errmsg, code, codeName, errorLabels?}. */
static void reply_error(struct client *c, int code, const char *code_name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(struct client *c, int code, const char *code_name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    g_proxy->stats.errors_returned++;
    log_debug(c->prefix, "%s: error %d %s: %s", c->ri.command, code, code_name, msg);
    bson_t doc = BSON_INITIALIZER;
    status_build_error(&doc, code, code_name, msg);
    append_error_labels(&doc, &c->ri, code);
    int32_t flags = 0;
    if (c->ri.kind == REQ_LEGACY_GET_MORE && code == ERR_CURSOR_NOT_FOUND)
        flags = WIRE_REPLY_CURSOR_NOT_FOUND;
    else if (c->ri.kind == REQ_LEGACY_GET_MORE)
        flags = WIRE_REPLY_QUERY_FAILURE;
    reply_local(c, &doc, flags);
    bson_destroy(&doc);
}

/* --- the request cycle ------------------------------------------------------------------ */

static void on_deadline(uv_timer_t *t);

/* Ends the current request and moves on to the next one (or back to reading). */
static void finish_request(struct client *c)
{
    struct proxy *p = g_proxy;
    if (c->state == CLIENT_CLOSING)
        return;
    uv_timer_stop(&c->timer);
    if (c->kill.active) {
        bson_destroy(&c->kill.killed);
        bson_destroy(&c->kill.not_found);
        bson_destroy(&c->kill.alive);
        bson_destroy(&c->kill.unknown);
        c->kill.active = false;
    }
    size_t n = c->frame_len;
    if (n > c->rbuf.len)
        n = c->rbuf.len;
    memmove(c->rbuf.data, c->rbuf.data + n, c->rbuf.len - n);
    c->rbuf.len -= n;
    c->frame_len = 0;
    c->server = -1;
    c->last_reply_id = 0;
    /* Give back a buffer that one large request made large. */
    if (c->rbuf.len == 0 && c->rbuf.cap > 256 * 1024)
        wire_buf_free(&c->rbuf);
    c->state = CLIENT_READING;
    if (p->shutting_down && c->rbuf.len == 0) {
        client_close(c, "shutting down");
        return;
    }
    client_process(c);
}

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)suggested;
    if (wire_buf_reserve(&c->rbuf, 16 * 1024) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = (char *)c->rbuf.data + c->rbuf.len;
    buf->len = c->rbuf.cap - c->rbuf.len;
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct client *c = s->data;
    (void)buf;
    if (nread == 0 || c->state == CLIENT_CLOSING)
        return;
    if (nread < 0) {
        client_close(c, nread == UV_EOF ? "client disconnected" : uv_strerror((int)nread));
        return;
    }
    c->rbuf.len += (size_t)nread;
    if (c->state == CLIENT_READING)
        client_process(c);
}

static void read_start(struct client *c)
{
    if (c->reading)
        return;
    if (uv_read_start(&c->h.stream, on_client_alloc, on_client_read) == 0)
        c->reading = true;
    else
        client_close(c, "cannot read from client");
}

static void read_stop(struct client *c)
{
    if (!c->reading)
        return;
    uv_read_stop(&c->h.stream);
    c->reading = false;
}

static void handle_request(struct client *c);

/* Looks for a whole request at the front of the buffer and handles it. */
static void client_process(struct client *c)
{
    if (c->state != CLIENT_READING)
        return;
    struct wire_header h;
    int rc = wire_header_parse(c->rbuf.data, c->rbuf.len, WIRE_MAX_MESSAGE_SIZE, &h);
    if (rc == -EAGAIN) {
        read_start(c);
        return;
    }
    if (rc < 0) {
        g_proxy->stats.bad_frames++;
        log_warn(c->prefix, "closing: message length %d is outside [16, %d]", h.length,
                 WIRE_MAX_MESSAGE_SIZE);
        client_close(c, "invalid message length");
        return;
    }
    if (c->rbuf.len < (size_t)h.length) {
        /* Room for the whole frame is made once its length is known to be within limits. */
        if (wire_buf_reserve(&c->rbuf, (size_t)h.length - c->rbuf.len) < 0) {
            client_close(c, "out of memory");
            return;
        }
        read_start(c);
        return;
    }
    /* The frame is complete: pause reading so the buffer stays put while it is forwarded. */
    read_stop(c);
    c->frame_len = (size_t)h.length;
    handle_request(c);
}

/* Clears OP_MSG flag bits that are neither required nor known, as the OP_MSG specification asks
 * forwarders to. They are covered by the checksum, so a checksum is stripped with them. */
static void clear_unknown_flags(struct client *c)
{
    if (c->ri.opcode != WIRE_OP_MSG)
        return;
    uint32_t unknown = c->ri.msg_flags & ~WIRE_MSG_REQUIRED_MASK & ~WIRE_MSG_KNOWN_MASK;
    if (!unknown)
        return;
    uint8_t *f = c->rbuf.data;
    size_t len = c->frame_len;
    wire_msg_strip_checksum(f, &len);
    wire_put_i32(f + 16, (int32_t)((uint32_t)wire_get_i32(f + 16) & ~unknown));
    c->out_len = len;
}

static void start_deadline(struct client *c)
{
    struct proxy *p = g_proxy;
    c->deadline_ms = proxy_now(p) + p->cfg.server_selection_timeout_ms;
    uv_timer_start(&c->timer, on_deadline, (uint64_t)p->cfg.server_selection_timeout_ms, 0);
}

static void handle_hello(struct client *c)
{
    struct proxy *p = g_proxy;
    struct topology_limits lim;
    if (!topology_limits(&p->topo, &lim)) {
        /* No backend known yet: wait for one rather than guess the limits. */
        c->state = CLIENT_WAIT_SERVER;
        list_push_back(&p->select_waiters, &c->wait_link);
        return;
    }
    bson_t doc = BSON_INITIALIZER;
    status_build_hello(p, &c->ri, (int64_t)c->id, &doc);
    reply_local(c, &doc, 0);
    bson_destroy(&doc);
}

static void handle_status(struct client *c)
{
    bson_t doc = BSON_INITIALIZER;
    status_build(g_proxy, &doc);
    reply_local(c, &doc, 0);
    bson_destroy(&doc);
}

/* getMore and OP_GET_MORE go to the server that opened the cursor, never through selection. */
static void handle_get_more(struct client *c)
{
    struct proxy *p = g_proxy;
    struct cursor_entry *e = cursors_find(&p->cursors, c->ri.cursor_id, proxy_now(p));
    if (!e) {
        p->stats.cursor_not_found++;
        reply_error(c, ERR_CURSOR_NOT_FOUND, "CursorNotFound", "cursor id %lld not found",
                    (long long)c->ri.cursor_id);
        return;
    }
    p->stats.getmores_routed++;
    struct select_request sr = {.write = false, .exclude_idx = -1};
    int would = topology_select(&p->topo, &sr, proxy_rand32, p);
    if (would >= 0 && would != e->server)
        p->stats.misroutes_avoided++;
    if (e->real_id != e->id) {
        /* This cursor's id collided with another server's: the server knows it by its own id. */
        uint8_t *f = c->rbuf.data;
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

/* Starts a killCursors: groups the ids by owner and contacts the owners one after another. */
static void handle_kill_cursors(struct client *c)
{
    struct proxy *p = g_proxy;
    struct kill_state *k = &c->kill;
    int n = c->ri.n_kill_ids;
    free(k->ids);
    free(k->owner);
    k->ids = calloc((size_t)(n ? n : 1), sizeof(*k->ids));
    k->owner = calloc((size_t)(n ? n : 1), sizeof(*k->owner));
    if (!k->ids || !k->owner) {
        client_close(c, "out of memory");
        return;
    }
    int got = request_kill_ids(c->rbuf.data, c->frame_len, k->ids, n);
    if (got < 0) {
        g_proxy->stats.bad_frames++;
        log_warn(c->prefix, "closing: malformed killCursors");
        client_close(c, "malformed killCursors");
        return;
    }
    k->n = got;
    int64_t now = proxy_now(p);
    for (int i = 0; i < got; i++) {
        struct cursor_entry *e = cursors_find(&p->cursors, k->ids[i], now);
        k->owner[i] = e ? e->server : -1;
    }
    k->active = true;
    bson_init(&k->killed);
    bson_init(&k->not_found);
    bson_init(&k->alive);
    bson_init(&k->unknown);
    k->n_killed = k->n_not_found = k->n_alive = k->n_unknown = 0;
    k->next_owner_pos = 0;
    /* Unknown ids are not found anywhere: no server is asked about them. */
    for (int i = 0; i < got; i++) {
        if (k->owner[i] < 0) {
            char key[16];
            snprintf(key, sizeof(key), "%d", k->n_not_found++);
            bson_append_int64(&k->not_found, key, -1, k->ids[i]);
        }
    }
    kill_next(c);
}

/* Appends id to one of the merged arrays. */
static void kill_note(bson_t *arr, int *n, int64_t id)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", (*n)++);
    bson_append_int64(arr, key, -1, id);
}

/* Sends the killCursors part for the next owner, or replies when every owner has answered. */
static void kill_next(struct client *c)
{
    struct proxy *p = g_proxy;
    struct kill_state *k = &c->kill;
    while (k->next_owner_pos < k->n && k->owner[k->next_owner_pos] < 0)
        k->next_owner_pos++;
    if (k->next_owner_pos >= k->n) {
        if (c->ri.kind == REQ_LEGACY_KILL_CURSORS) {
            finish_request(c);
            return;
        }
        bson_t doc = BSON_INITIALIZER;
        bson_append_array(&doc, "cursorsKilled", -1, &k->killed);
        bson_append_array(&doc, "cursorsNotFound", -1, &k->not_found);
        bson_append_array(&doc, "cursorsAlive", -1, &k->alive);
        bson_append_array(&doc, "cursorsUnknown", -1, &k->unknown);
        BSON_APPEND_DOUBLE(&doc, "ok", 1.0);
        reply_local(c, &doc, 0);
        bson_destroy(&doc);
        return;
    }
    int owner = k->owner[k->next_owner_pos];
    wire_buf_reset(&k->out);
    int64_t now = proxy_now(p);
    if (c->ri.kind == REQ_LEGACY_KILL_CURSORS) {
        /* OP_KILL_CURSORS: ZERO, count, ids; no reply. */
        int count = 0;
        for (int i = k->next_owner_pos; i < k->n; i++)
            count += k->owner[i] == owner;
        struct wire_header h = {16 + 8 + 8 * count, proxy_next_request_id(p), 0,
                                WIRE_OP_KILL_CURSORS};
        uint8_t hdr[24];
        wire_header_write(hdr, &h);
        wire_put_i32(hdr + 16, 0);
        wire_put_i32(hdr + 20, count);
        wire_buf_append(&k->out, hdr, sizeof(hdr));
        for (int i = k->next_owner_pos; i < k->n; i++) {
            if (k->owner[i] != owner)
                continue;
            struct cursor_entry *e = cursors_find(&p->cursors, k->ids[i], now);
            uint8_t idb[8];
            wire_put_i64(idb, e ? e->real_id : k->ids[i]);
            wire_buf_append(&k->out, idb, 8);
            cursors_remove(&p->cursors, k->ids[i]);
            k->owner[i] = -1;
        }
    } else {
        /* The killCursors command: the client's own fields, with only this owner's ids. */
        struct wire_msg m;
        bson_t body, part = BSON_INITIALIZER, arr;
        bson_iter_t it;
        wire_msg_parse(c->rbuf.data, c->frame_len, &m);
        wire_msg_body(&m, &body);
        bson_iter_init(&it, &body);
        while (bson_iter_next(&it)) {
            if (strcmp(bson_iter_key(&it), "cursors") == 0)
                continue;
            bson_append_iter(&part, NULL, 0, &it);
        }
        bson_append_array_begin(&part, "cursors", -1, &arr);
        int j = 0;
        for (int i = k->next_owner_pos; i < k->n; i++) {
            if (k->owner[i] != owner)
                continue;
            struct cursor_entry *e = cursors_find(&p->cursors, k->ids[i], now);
            char key[16];
            snprintf(key, sizeof(key), "%d", j++);
            bson_append_int64(&arr, key, -1, e ? e->real_id : k->ids[i]);
        }
        bson_append_array_end(&part, &arr);
        wire_append_msg(&k->out, c->ri.request_id, 0, 0, &part);
        bson_destroy(&part);
    }
    p->stats.killcursors_routed++;
    c->out = k->out.data;
    c->out_len = k->out.len;
    dispatch(c, owner);
}

/* Merges one owner's killCursors answer and moves on to the next owner. */
static void kill_on_reply(struct client *c, const uint8_t *frame, size_t len)
{
    struct proxy *p = g_proxy;
    struct kill_state *k = &c->kill;
    int owner = k->owner[k->next_owner_pos];
    struct wire_msg m;
    bson_t body;
    bool parsed = wire_msg_parse(frame, len, &m) == 0 && wire_msg_body(&m, &body);
    int64_t now = proxy_now(p);
    for (int i = k->next_owner_pos; i < k->n; i++) {
        if (k->owner[i] != owner)
            continue;
        struct cursor_entry *e = cursors_find(&p->cursors, k->ids[i], now);
        int64_t real = e ? e->real_id : k->ids[i];
        /* Find which of the server's four arrays names this cursor. */
        static const char *const arrays[] = {"cursorsKilled", "cursorsNotFound", "cursorsAlive",
                                             "cursorsUnknown"};
        int where = 3;
        for (int a = 0; parsed && a < 4 && where == 3; a++) {
            bson_iter_t it, ids;
            if (!bson_iter_init_find(&it, &body, arrays[a]) || !BSON_ITER_HOLDS_ARRAY(&it) ||
                !bson_iter_recurse(&it, &ids))
                continue;
            while (bson_iter_next(&ids)) {
                if (BSON_ITER_HOLDS_NUMBER(&ids) && bson_iter_as_int64(&ids) == real) {
                    where = a;
                    break;
                }
            }
        }
        if (!parsed)
            where = 3;
        switch (where) {
        case 0:
            kill_note(&k->killed, &k->n_killed, k->ids[i]);
            break;
        case 1:
            kill_note(&k->not_found, &k->n_not_found, k->ids[i]);
            break;
        case 2:
            kill_note(&k->alive, &k->n_alive, k->ids[i]);
            break;
        default:
            kill_note(&k->unknown, &k->n_unknown, k->ids[i]);
        }
        if (where != 2)
            cursors_remove(&p->cursors, k->ids[i]);
        k->owner[i] = -1;
    }
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

/*
 * Routes a request that goes through selection (or a transaction's pin). In replicaset mode,
 * writes, transactions and commands without a read preference go to the primary; reads go by
 * their own $readPreference, or by the configured default, which is then added to the request
 * when it goes to a secondary (a secondary refuses a read that does not allow it).
 */
static void route(struct client *c)
{
    struct proxy *p = g_proxy;
    int idx = txn_pin_lookup(p, &c->ri);
    if (idx >= 0) {
        const struct server *ps = &p->topo.servers[idx];
        bool usable = p->topo.mode == TOPOLOGY_MONGOS ? ps->type == SERVER_MONGOS
                                                      : ps->type == SERVER_RS_PRIMARY;
        if (usable || (!is_txn_end(&c->ri) && ps->type == SERVER_UNKNOWN && c->attempts == 0 &&
                       p->topo.mode == TOPOLOGY_MONGOS)) {
            /* A mongos that is merely unknown may come back: the first attempt still goes there
             * and fails on its own if it is really gone. */
            p->stats.txn_pinned++;
            dispatch(c, idx);
            return;
        }
        if (!is_txn_end(&c->ri)) {
            /* The transaction lived on a server that is gone, or on a primary that stepped down:
             * it is aborted, as a server would say. */
            if (c->state == CLIENT_WAIT_SERVER)
                list_remove(&c->wait_link);
            c->state = CLIENT_READING;
            reply_error(c, 251, "NoSuchTransaction",
                        "mongolb: transaction %lld was aborted: its server %s is %s",
                        (long long)c->ri.txn_number, ps->addr,
                        p->topo.mode == TOPOLOGY_MONGOS ? "unavailable" : "no longer primary");
            return;
        }
        /* A commit or abort may move: the recoveryToken it carries lets another mongos find the
         * outcome, and a new primary knows the transaction through replication. */
        log_info(c->prefix, "%s: pinned server %s is unavailable; trying another", c->ri.command,
                 ps->addr);
    }
    struct read_pref rp;
    const struct read_pref *rpp = NULL;
    bool add_rp = false;
    if (p->topo.mode == TOPOLOGY_REPLICASET && !c->ri.is_write && !c->ri.autocommit_false) {
        char err[200];
        int code = 0;
        if (c->ri.read_pref_doc) {
            code = read_pref_parse(c->ri.read_pref_doc, c->ri.read_pref_len, &rp, err, sizeof(err));
            if (!code)
                code = read_pref_validate(&rp, p->cfg.heartbeat_interval_ms, err, sizeof(err));
            rpp = &rp;
        }
        /* Drivers never send mode primary to a mongos (the specification), yet some older ones
         * (PyMongo 3.x) do on every read: a bare {mode: "primary"} says no more than none, so the
         * configured default applies to it too. */
        bool bare_primary =
            rpp && !code && rp.mode == READ_PRIMARY && rp.n_sets == 0 && rp.max_staleness_s < 0;
        if ((!c->ri.read_pref_doc || bare_primary) && c->ri.retryable_read) {
            rpp = &p->default_read_pref;
            add_rp = rpp->mode != READ_PRIMARY && c->ri.opcode == WIRE_OP_MSG;
        }
        if (code) {
            if (c->state == CLIENT_WAIT_SERVER)
                list_remove(&c->wait_link);
            c->state = CLIENT_READING;
            reply_error(c, code,
                        code == 160 ? "MaxStalenessOutOfRange"
                                    : (code == 2 ? "BadValue" : "FailedToParse"),
                        "%s", err);
            return;
        }
    }
    struct select_request sr = {
        .write = c->ri.is_write || c->ri.autocommit_false,
        .exclude_idx = c->exclude,
        .rp = rpp,
    };
    idx = topology_select(&p->topo, &sr, proxy_rand32, p);
    if (idx < 0) {
        if (c->state != CLIENT_WAIT_SERVER) {
            /* As the server-selection specification asks: with no suitable server, request
             * prompt checks of all servers rather than wait for the next heartbeat. */
            for (int i = 0; i < p->topo.n; i++)
                monitor_request_check(p, i);
            c->state = CLIENT_WAIT_SERVER;
            list_push_back(&p->select_waiters, &c->wait_link);
            log_info(c->prefix, "%s: no suitable server yet (%s); waiting up to %lld ms",
                     c->ri.command,
                     p->topo.mode == TOPOLOGY_REPLICASET && sr.write ? "no primary" : "none known",
                     (long long)(c->deadline_ms - proxy_now(p)));
        }
        return;
    }
    if (add_rp && p->topo.servers[idx].type == SERVER_RS_SECONDARY && c->out == c->rbuf.data) {
        struct wire_msg m;
        bson_t doc = BSON_INITIALIZER;
        append_read_pref(&doc, rpp);
        wire_buf_reset(&c->xbuf);
        if (wire_msg_parse(c->rbuf.data, c->frame_len, &m) == 0 &&
            wire_append_msg_with_field(&c->xbuf, &m, "$readPreference", &doc) == 0) {
            c->out = c->xbuf.data;
            c->out_len = c->xbuf.len;
        }
        bson_destroy(&doc);
    }
    if (c->ri.start_transaction)
        txn_pin_set(p, &c->ri, idx);
    dispatch(c, idx);
}

/* Sends the current request (c->out) to server idx. */
static void dispatch(struct client *c, int idx)
{
    struct proxy *p = g_proxy;
    if (c->state == CLIENT_WAIT_SERVER)
        list_remove(&c->wait_link);
    c->server = idx;
    c->attempts++;
    struct server *s = &p->topo.servers[idx];
    s->in_flight++;
    s->requests++;
    c->state = CLIENT_WAIT_CONN;
    struct bconn *b = pool_get(p, idx, c);
    if (b)
        client_on_bconn(c, b, 0, NULL);
}

/* Decides what to do after a failure that happened before the request reached any server. */
/*
 * Whether a failed attempt may be made again elsewhere: a request that never reached a server, a
 * retryable read, a retryable write (the server's own record of its txnNumber applies it once
 * however often it arrives) and commitTransaction/abortTransaction (which the specification
 * makes retryable). Other commands inside a transaction are not: the transaction is lost with its
 * server and the driver retries it whole. At most MAX_ATTEMPTS attempts, within the deadline.
 */
#define MAX_ATTEMPTS 3
static bool may_retry(const struct client *c, bool may_have_reached)
{
    struct proxy *p = g_proxy;
    if (p->shutting_down || c->attempts >= MAX_ATTEMPTS || proxy_now(p) >= c->deadline_ms)
        return false;
    if (c->ri.kind != REQ_FORWARD)
        return false;
    if (is_txn_end(&c->ri))
        return true;
    if (c->ri.autocommit_false)
        return false;
    return !may_have_reached || c->ri.retryable_read || is_retryable_write(&c->ri);
}

static void retry_or_fail(struct client *c, const char *why, bool may_have_reached)
{
    struct proxy *p = g_proxy;
    const char *addr = c->server >= 0 ? p->topo.servers[c->server].addr : "?";
    int failed = c->server;
    leave_server(c);
    c->server = -1;
    if (c->ri.kind == REQ_GET_MORE || c->ri.kind == REQ_LEGACY_GET_MORE) {
        /* The cursor lived on that server only: it is gone with it. */
        cursors_remove(&p->cursors, c->ri.cursor_id);
        reply_error(c, ERR_CURSOR_NOT_FOUND, "CursorNotFound",
                    "cursor id %lld not found: its server %s failed (%s)",
                    (long long)c->ri.cursor_id, addr, why);
        return;
    }
    if (c->kill.active) {
        /* That owner's cursors are as good as killed; carry on with the others. */
        kill_on_reply(c, NULL, 0);
        kill_next(c);
        return;
    }
    if (may_retry(c, may_have_reached)) {
        p->stats.retries++;
        log_info(c->prefix, "%s failed on %s (%s); retrying on another server", c->ri.command, addr,
                 why);
        c->exclude = failed;
        route(c);
        return;
    }
    reply_error(c, ERR_HOST_UNREACHABLE, "HostUnreachable", "mongolb: %s failed on %s: %s",
                c->ri.command, addr, why);
}

void client_on_bconn(struct client *c, struct bconn *b, int status, const char *why)
{
    if (c->state == CLIENT_CLOSING) {
        if (b)
            pool_release(g_proxy, b);
        return;
    }
    if (status < 0 || !b) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no connection: %s", why && *why ? why : uv_strerror(status));
        retry_or_fail(c, msg, false);
        return;
    }
    uv_timer_stop(&c->timer);
    c->bc = b;
    c->state = CLIENT_FORWARDING;
    b->reply_expected = !c->ri.more_to_come;
    int rc = bconn_write(b, c->out, c->out_len);
    if (rc < 0) {
        c->bc = NULL;
        bconn_close(b, "write could not start");
        retry_or_fail(c, uv_strerror(rc), false);
    }
}

void client_on_sent(struct client *c, struct bconn *b)
{
    if (b->reply_expected)
        return; /* the reply follows */
    /* A moreToCome request (w:0 write, OP_KILL_CURSORS): nothing comes back. */
    c->bc = NULL;
    leave_server(c);
    c->server = -1;
    pool_release(g_proxy, b);
    if (c->kill.active) {
        c->kill.next_owner_pos++;
        kill_next(c);
        return;
    }
    finish_request(c);
}

void client_on_backend_error(struct client *c, struct bconn *b, int status)
{
    (void)b;
    if (c->state == CLIENT_CLOSING)
        return;
    c->bc = NULL;
    char why[96];
    snprintf(why, sizeof(why), "%s", uv_strerror(status));
    if (c->last_reply_id) {
        /* Mid-stream: the client has part of the answer already, so this cannot be retried. */
        leave_server(c);
        c->server = -1;
        if (c->ri.kind == REQ_GET_MORE)
            cursors_remove(&g_proxy->cursors, c->ri.cursor_id);
        reply_error(c, ERR_HOST_UNREACHABLE, "HostUnreachable",
                    "mongolb: the server failed during a streamed reply: %s", why);
        return;
    }
    retry_or_fail(c, why, true);
}

/* True when an errorLabels array (at it) holds RetryableWriteError. */
static bool has_retryable_label(bson_iter_t *it)
{
    bson_iter_t arr;
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &arr))
        return false;
    while (bson_iter_next(&arr))
        if (BSON_ITER_HOLDS_UTF8(&arr) &&
            strcmp(bson_iter_utf8(&arr, NULL), "RetryableWriteError") == 0)
            return true;
    return false;
}

/*
 * Looks at a reply before it is relayed: records or forgets cursors (rewriting the id in place
 * when it collided), and reports the error code (0 when ok, -1 for an error without a code) and
 * whether the reply carries the RetryableWriteError label.
 */
static void inspect_reply(struct client *c, uint8_t *frame, size_t len, int32_t *err_code,
                          bool *retry_label)
{
    *err_code = 0;
    *retry_label = false;
    struct proxy *p = g_proxy;
    struct request_info *ri = &c->ri;
    int64_t now = proxy_now(p);
    struct wire_header h;
    wire_header_parse(frame, len, INT32_MAX, &h);
    if (h.opcode == WIRE_OP_REPLY && ri->kind == REQ_LEGACY_GET_MORE) {
        struct wire_reply r;
        if (wire_reply_parse(frame, len, &r) < 0)
            return;
        if ((r.flags & WIRE_REPLY_CURSOR_NOT_FOUND) || r.cursor_id == 0) {
            cursors_remove(&p->cursors, ri->cursor_id);
        } else if (r.cursor_id != ri->cursor_id) {
            int64_t cid;
            if (cursors_add(&p->cursors, c->server, r.cursor_id, now, proxy_rand64, p, &cid) >= 0)
                wire_put_i64(frame + 20, cid);
        }
        return;
    }
    const uint8_t *doc;
    uint32_t doc_len;
    if (h.opcode == WIRE_OP_MSG) {
        struct wire_msg m;
        if (wire_msg_parse(frame, len, &m) < 0)
            return;
        doc = m.body;
        doc_len = m.body_len;
    } else if (h.opcode == WIRE_OP_REPLY) {
        struct wire_reply r;
        if (wire_reply_parse(frame, len, &r) < 0 || r.n_returned < 1)
            return;
        doc = r.docs;
        doc_len = (uint32_t)wire_get_i32(r.docs);
    } else {
        return;
    }
    bson_t body;
    bson_iter_t it;
    if (!bson_init_static(&body, doc, doc_len) || !bson_iter_init(&it, &body))
        return;
    bool ok = true;
    int32_t code = 0;
    bson_iter_t cursor_it;
    bool has_cursor = false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "ok") == 0)
            ok = bson_iter_as_bool(&it);
        else if (strcmp(k, "code") == 0 && BSON_ITER_HOLDS_NUMBER(&it))
            code = (int32_t)bson_iter_as_int64(&it);
        else if (strcmp(k, "errorLabels") == 0)
            *retry_label = has_retryable_label(&it);
        else if (strcmp(k, "cursor") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            has_cursor = bson_iter_recurse(&it, &cursor_it);
        }
    }
    if (!ok) {
        *err_code = code ? code : -1;
        if (ri->kind == REQ_GET_MORE && code == ERR_CURSOR_NOT_FOUND)
            cursors_remove(&p->cursors, ri->cursor_id);
        return;
    }
    if (!has_cursor || !(ri->opens_cursor || ri->kind == REQ_GET_MORE))
        return;
    if (!bson_iter_find(&cursor_it, "id") || !BSON_ITER_HOLDS_INT64(&cursor_it))
        return;
    int64_t id = bson_iter_int64(&cursor_it);
    if (id == 0) {
        if (ri->kind == REQ_GET_MORE)
            cursors_remove(&p->cursors, ri->cursor_id);
        return;
    }
    int64_t cid;
    if (cursors_add(&p->cursors, c->server, id, now, proxy_rand64, p, &cid) < 0)
        return;
    if (cid != id) {
        /* The reply lives in the backend connection's buffer, which is ours to change. */
        bson_iter_overwrite_int64(&cursor_it, cid);
        if (c->ri.kind != REQ_GET_MORE)
            log_warn(c->prefix,
                     "cursor id %lld from %s collided with another server's; the "
                     "client sees %lld",
                     (long long)id, p->topo.servers[c->server].addr, (long long)cid);
    }
}

/*
 * A server answered "not writable primary" or "node is recovering": it is no longer what the
 * topology says. Mark it unknown and have it re-checked at once (clearing its pool only for
 * shutdown codes, as SDAM does).
 */
static void note_state_change(struct client *c, int32_t code)
{
    struct proxy *p = g_proxy;
    int idx = c->server;
    bool clear = code == 91 || code == 11600;
    char why[96];
    snprintf(why, sizeof(why), "replied with state-change error %d", code);
    log_info(p->topo.servers[idx].addr, "%s: marked unknown, re-checking", why);
    topology_mark_unknown(&p->topo, idx, clear, why);
    if (clear) {
        cursors_remove_server(&p->cursors, idx);
        pool_clear(p, idx);
    }
    /* The member that refused is out of date, and so is the topology's idea of who is primary:
     * re-check everyone, so that a new primary is found within one minimum heartbeat. */
    for (int i = 0; i < p->topo.n; i++)
        monitor_request_check(p, i);
}

/*
 * Decides whether an error reply is passed on or the request is taken back and routed again,
 * within its deadline: an error that means the command did not run at all (10107, 13435, 13436,
 * outside a transaction), a retryable write or a commit/abort whose error carries the
 * RetryableWriteError label (the server's record applies it once), and a retryable read with a
 * retryable code. The request then waits for a suitable server, such as the next primary.
 */
static bool should_take_back(const struct client *c, int32_t code, bool retry_label)
{
    if (c->kill.active || c->last_reply_id || !may_retry(c, true))
        return false;
    if (mongo_error_not_run(code) && !c->ri.autocommit_false)
        return true;
    if (retry_label && (is_retryable_write(&c->ri) || is_txn_end(&c->ri)))
        return true;
    return code > 0 && c->ri.retryable_read && mongo_error_is_retryable_read(code);
}

static void take_back(struct client *c, struct bconn *b, size_t len, int32_t code)
{
    struct proxy *p = g_proxy;
    int64_t left = c->deadline_ms - proxy_now(p);
    log_info(c->prefix, "%s got error %d from %s; trying again", c->ri.command, code,
             p->topo.servers[c->server].addr);
    c->exclude = c->server;
    bconn_consume(b, len);
    c->bc = NULL;
    leave_server(c);
    pool_release(p, b);
    p->stats.retries++;
    c->state = CLIENT_READING;
    uv_timer_start(&c->timer, on_deadline, (uint64_t)(left > 0 ? left : 1), 0);
    route(c);
}

void client_on_reply(struct client *c, struct bconn *b, uint8_t *frame, size_t len)
{
    struct proxy *p = g_proxy;
    if (c->kill.active && c->ri.kind == REQ_KILL_CURSORS) {
        kill_on_reply(c, frame, len);
        bconn_consume(b, len);
        c->bc = NULL;
        leave_server(c);
        c->server = -1;
        pool_release(p, b);
        kill_next(c);
        return;
    }
    int32_t code;
    bool retry_label;
    inspect_reply(c, frame, len, &code, &retry_label);
    if (code > 0 && mongo_error_is_state_change(code) && c->server >= 0)
        note_state_change(c, code);
    if ((code != 0 || retry_label) && c->server >= 0 && should_take_back(c, code, retry_label)) {
        take_back(c, b, len, code);
        return;
    }
    struct wire_header h;
    wire_header_parse(frame, len, INT32_MAX, &h);
    c->relay_len = len;
    c->relay_more = h.opcode == WIRE_OP_MSG && len >= 20 &&
                    ((uint32_t)wire_get_i32(frame + 16) & WIRE_MSG_MORE_TO_COME);
    c->last_reply_id = c->relay_more ? h.request_id : 0;
    write_to_client(c, frame, len);
}

/* --- dispatching a new request -------------------------------------------------------------- */

static void handle_request(struct client *c)
{
    struct proxy *p = g_proxy;
    char err[160];
    int rc = request_classify(c->rbuf.data, c->frame_len, &c->ri, err, sizeof(err));
    if (rc < 0) {
        p->stats.bad_frames++;
        log_warn(c->prefix, "closing: %s", err);
        client_close(c, err);
        return;
    }
    p->stats.requests++;
    c->out = c->rbuf.data;
    c->out_len = c->frame_len;
    c->server = -1;
    c->exclude = -1;
    c->attempts = 0;
    c->last_reply_id = 0;
    log_debug(c->prefix, "%s %s.%s", wire_opcode_name(c->ri.opcode), c->ri.db, c->ri.command);
    clear_unknown_flags(c);
    txn_pin_observe(p, &c->ri);
    start_deadline(c);
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
        route(c);
        return;
    case REQ_UNSUPPORTED:
        break;
    }
    client_close(c, "unsupported request");
}

static void on_deadline(uv_timer_t *t)
{
    struct client *c = t->data;
    struct proxy *p = g_proxy;
    if (c->state == CLIENT_WAIT_SERVER) {
        list_remove(&c->wait_link);
        c->state = CLIENT_READING; /* any state but waiting, for reply_local */
        if (c->ri.kind == REQ_HELLO)
            reply_error(c, ERR_HOST_UNREACHABLE, "HostUnreachable",
                        "mongolb: no backend reachable after %d ms",
                        p->cfg.server_selection_timeout_ms);
        else
            reply_error(c, ERR_FAILED_READ_PREF, "FailedToSatisfyReadPreference",
                        "mongolb: no suitable server for %s after %d ms", c->ri.command,
                        p->cfg.server_selection_timeout_ms);
    } else if (c->state == CLIENT_WAIT_CONN) {
        pool_cancel_wait(p, c);
        const char *addr = c->server >= 0 ? p->topo.servers[c->server].addr : "?";
        leave_server(c);
        c->state = CLIENT_READING;
        reply_error(c, ERR_NETWORK_IFACE_TIMEOUT, "NetworkInterfaceExceededTimeLimit",
                    "mongolb: no connection to %s became free within %d ms", addr,
                    p->cfg.server_selection_timeout_ms);
    }
}

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
        list_remove(&c->wait_link);
        c->state = CLIENT_READING; /* leaves the waiting state before routing again */
        if (c->ri.kind == REQ_HELLO) {
            handle_hello(c);
        } else {
            route(c);
        }
    }
}

/* --- accepting ------------------------------------------------------------------------------ */

struct listener {
    union stream_handle h;
    bool is_unix;
    char name[300];
};

static struct listener listeners[MLB_MAX_LISTEN];
static int n_listeners;

static void on_connection(uv_stream_t *server, int status)
{
    struct proxy *p = g_proxy;
    struct listener *l = server->data;
    if (status < 0) {
        log_warn(l->name, "accept: %s", uv_strerror(status));
        return;
    }
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    if (l->is_unix)
        uv_pipe_init(p->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(p->loop, &c->h.tcp);
    c->h.handle.data = c;
    uv_timer_init(p->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->wait_pool = -1;
    c->server = -1;
    list_init(&c->wait_link);
    list_init(&c->link);
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, on_client_closed);
        uv_close((uv_handle_t *)&c->timer, on_client_closed);
        return;
    }
    c->id = ++p->next_client_id;
    char peer[128] = "unix";
    if (!l->is_unix) {
        struct sockaddr_storage ss;
        int sl = sizeof(ss);
        if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &sl) == 0) {
            char ip[64] = "?";
            int port = 0;
            if (ss.ss_family == AF_INET6) {
                uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
                port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            } else {
                uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
                port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            }
            snprintf(peer, sizeof(peer), "%s:%d", ip, port);
        }
        uv_tcp_nodelay(&c->h.tcp, 1);
    }
    snprintf(c->prefix, sizeof(c->prefix), "c%llu %s", (unsigned long long)c->id, peer);
    list_push_back(&p->clients, &c->link);
    p->n_clients++;
    c->state = CLIENT_READING;
    if (p->n_clients > p->cfg.max_clients || p->shutting_down) {
        p->stats.clients_refused++;
        log_warn(c->prefix, "refused: %s",
                 p->shutting_down ? "shutting down" : "max_clients reached");
        client_close(c, "refused");
        return;
    }
    p->stats.clients_accepted++;
    log_debug(c->prefix, "accepted");
    read_start(c);
}

int clients_listen(struct proxy *p)
{
    for (size_t i = 0; i < p->cfg.listen.count; i++) {
        const struct mlb_listen_addr *a = &p->cfg.listen.addr[i];
        struct listener *l = &listeners[n_listeners];
        int rc;
        if (a->kind == MLB_LISTEN_UNIX) {
            l->is_unix = true;
            snprintf(l->name, sizeof(l->name), "unix:%s", a->path);
            uv_pipe_init(p->loop, &l->h.pipe, 0);
            l->h.handle.data = l;
            unlink(a->path); /* a stale socket from a previous run */
            rc = uv_pipe_bind(&l->h.pipe, a->path);
        } else {
            struct sockaddr_storage ss;
            l->is_unix = false;
            if (strchr(a->host, ':')) {
                snprintf(l->name, sizeof(l->name), "[%s]:%d", a->host, a->port);
                rc = uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss);
            } else {
                snprintf(l->name, sizeof(l->name), "%s:%d", a->host, a->port);
                rc = uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss);
            }
            if (rc < 0) {
                log_error(NULL, "listen %s: not an IP address (%s)", l->name, uv_strerror(rc));
                return rc;
            }
            uv_tcp_init(p->loop, &l->h.tcp);
            l->h.handle.data = l;
            rc = uv_tcp_bind(&l->h.tcp, (const struct sockaddr *)&ss, 0);
        }
        n_listeners++;
        if (rc == 0)
            rc = uv_listen(&l->h.stream, 1024, on_connection);
        if (rc < 0) {
            log_error(NULL, "listen %s: %s", l->name, uv_strerror(rc));
            return rc;
        }
        log_info(NULL, "listening on %s", l->name);
    }
    return 0;
}

void clients_stop_listening(struct proxy *p)
{
    (void)p;
    for (int i = 0; i < n_listeners; i++)
        if (!uv_is_closing(&listeners[i].h.handle))
            uv_close(&listeners[i].h.handle, NULL);
}

void clients_close_all(struct proxy *p, const char *why)
{
    while (!list_empty(&p->clients))
        client_close(list_entry(p->clients.next, struct client, link), why);
}

int clients_in_flight(struct proxy *p)
{
    int n = 0;
    for (struct list *e = p->clients.next; e != &p->clients; e = e->next) {
        struct client *c = list_entry(e, struct client, link);
        if (c->state != CLIENT_READING || c->rbuf.len > 0)
            n++;
    }
    return n;
}

/* Closes clients that have nothing in progress (the start of a graceful shutdown). */
void clients_close_idle(struct proxy *p)
{
    struct list *e = p->clients.next;
    while (e != &p->clients) {
        struct client *c = list_entry(e, struct client, link);
        e = e->next;
        if (c->state == CLIENT_READING && c->rbuf.len == 0)
            client_close(c, "shutting down");
    }
}
