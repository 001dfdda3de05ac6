/*
 * sim_server.c: mongosim's network side. Listeners, connections, framing, reply writing, reply
 * delays (latency and blockConnection), awaitable hello, exhaust streams, and the legacy opcodes.
 *
 * Each connection reads into its own growable buffer and frames messages in place; replies for all
 * the requests of one read are appended to one reused output buffer and written with a single
 * uv_try_write/uv_write, so pipelined clients cost no allocation per request on the hot path.
 *
 * A connection has one teardown path (conn_close): it unlinks the connection and closes its three
 * handles; memory is freed only in the last close callback, never inside a running callback.
 *
 * With --tls-cert (sim->tls_ctx set) every connection is TLS only, driven through a pair of
 * OpenSSL memory BIOs so that libuv keeps doing all the I/O: ciphertext read from the socket is
 * written into the read BIO and SSL_read turns it into plaintext in the same buffer the plaintext
 * path frames from; replies are still built in c->out as plaintext, and the flush passes them
 * through SSL_write and sends what OpenSSL left in the write BIO. Both paths share the framing and
 * the request handling; a plaintext connection only pays a test of c->ssl in the read callbacks
 * and the flush.
 *
 * OP_COMPRESSED (compress.h): a compressed request is decompressed into the connection's zin
 * buffer and handled as if it had arrived so; its replies are compressed with the compressor the
 * request used, as mongod does, when they are framed (finish_reply), before any delay holds them.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"
#include "sim.h"

enum conn_state {
    CONN_OPEN = 0,
    CONN_CLOSING = 1,
};

/* A reply held back until its due time (server latency or failCommand blockConnection). */
struct delayed {
    struct delayed *next;
    uint64_t due_ms;
    size_t len;
    uint8_t data[];
};

struct sim_conn {
    uv_tcp_t tcp;
    uv_timer_t delay_timer;
    uv_timer_t hello_timer;
    uv_timer_t defer_timer;
    uv_write_t wreq;

    struct sim_server *srv;
    struct sim_conn *prev, *next;
    enum conn_state state;
    int pending_closes;

    uint64_t id;
    char prefix[48];
    char app_name[128];

    uint8_t *rbuf;
    size_t rlen, rcap;

    struct wire_buf out;     /* replies not yet handed to the kernel */
    struct wire_buf writing; /* the buffer of the write in flight */
    bool write_in_flight;
    bool close_after_flush;

    struct delayed *dq_head, *dq_tail;

    struct wire_buf zin;  /* the request an OP_COMPRESSED carried, decompressed */
    struct wire_buf zout; /* replies being compressed */
    int req_compressor;   /* the compressor of the request being handled, or COMPRESSOR_NONE */

    /* TLS; ssl is NULL on a plaintext listener. The SSL owns both memory BIOs. */
    SSL *ssl;
    BIO *rbio;              /* ciphertext from the socket, not yet consumed by OpenSSL */
    BIO *wbio;              /* ciphertext OpenSSL produced, not yet taken for the socket */
    size_t out_off;         /* how much of out was already passed to SSL_write */
    bool tls_established;   /* the handshake completed */
    bool tls_failed;        /* a fatal TLS error: OpenSSL forbids a close_notify after one */
    bool tls_peer_closed;   /* the client sent close_notify */
    bool tls_seen_input;    /* tls_first_byte holds the first byte the client sent */
    uint8_t tls_first_byte; /* 0x16 for a TLS handshake record */

    /* Set by the dispatcher for the request being processed. */
    bool req_drop;
    uint64_t req_block_ms;
    bool exhaust_pending;
    int64_t exhaust_cursor;
    int64_t exhaust_batch;
    bool hello_arm;
    bool hello_replied_now;
    bool defer_req;       /* the dispatcher asked to run the request again later */
    uint64_t defer_ms;    /* ... in this many ms */
    bool deferred;        /* a request waits in rbuf[0] for defer_timer; nothing else is read */
    uint64_t defer_since; /* loop time the waiting request first arrived, 0 when none waits */

    /* An awaitable hello in progress. */
    bool hello_waiting;
    bool hello_exhaust, hello_ok, hello_legacy;
    uint64_t hello_await_ms;
    int32_t hello_response_to;

    /* Who is logged in, and the SCRAM conversation in progress (sim_auth.c). */
    struct sim_conn_auth auth;
};

static int32_t request_counter;

static int32_t next_request_id(void)
{
    request_counter = (int32_t)(((uint32_t)request_counter + 1) & 0x7fffffff);
    if (request_counter == 0)
        request_counter = 1;
    return request_counter;
}

uint64_t sim_now_ms(const struct sim *s)
{
    return uv_now(s->loop);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**, seeded from getrandom() in main. */
uint64_t sim_random64(struct sim *s)
{
    uint64_t *st = s->rng;
    uint64_t result = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

const char *sim_conn_app_name(const struct sim_conn *c)
{
    return c->app_name;
}

struct sim_conn_auth *sim_conn_auth(struct sim_conn *c)
{
    return &c->auth;
}

bool sim_conn_peer_subject(struct sim_conn *c, char *buf, size_t len)
{
    if (!c->ssl || len == 0 || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
#else
    X509 *peer = SSL_get_peer_certificate(c->ssl);
#endif
    if (!peer)
        return false;
    /* RFC 2253, the form mongod matches $external user names against. */
    BIO *b = BIO_new(BIO_s_mem());
    int n = -1;
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_read(b, buf, (int)len - 1);
    BIO_free(b);
    X509_free(peer);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

uint64_t sim_conn_id(const struct sim_conn *c)
{
    return c->id;
}

void sim_conn_set_app_name(struct sim_conn *c, const char *name)
{
    snprintf(c->app_name, sizeof(c->app_name), "%s", name);
}

void sim_conn_drop(struct sim_conn *c)
{
    c->req_drop = true;
}

void sim_conn_block(struct sim_conn *c, uint64_t ms)
{
    c->req_block_ms += ms;
}

void sim_conn_set_exhaust(struct sim_conn *c, int64_t cursor_id, int64_t batch_size)
{
    c->exhaust_pending = true;
    c->exhaust_cursor = cursor_id;
    c->exhaust_batch = batch_size;
}

void sim_conn_defer(struct sim_conn *c, uint64_t delay_ms)
{
    c->defer_req = true;
    c->defer_ms = delay_ms;
}

uint64_t sim_conn_waited_ms(const struct sim_conn *c)
{
    return c->defer_since ? uv_now(c->srv->sim->loop) - c->defer_since : 0;
}

void sim_conn_await_hello(struct sim_conn *c, uint64_t max_await_ms, bool exhaust, bool hello_ok,
                          bool legacy)
{
    c->hello_arm = true;
    c->hello_await_ms = max_await_ms;
    c->hello_exhaust = exhaust;
    c->hello_ok = hello_ok;
    c->hello_legacy = legacy;
}

/* --- teardown ---------------------------------------------------------------------------- */

static void conn_free(struct sim_conn *c)
{
    struct delayed *d = c->dq_head;
    while (d) {
        struct delayed *n = d->next;
        free(d);
        d = n;
    }
    wire_buf_free(&c->out);
    wire_buf_free(&c->writing);
    wire_buf_free(&c->zin);
    wire_buf_free(&c->zout);
    free(c->rbuf);
    SSL_free(c->ssl);
    OPENSSL_cleanse(&c->auth, sizeof(c->auth));
    free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct sim_conn *c = h->data;
    if (--c->pending_closes == 0)
        conn_free(c);
}

static void tls_close_notify(struct sim_conn *c);

static void conn_close(struct sim_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    struct sim_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->conns_current--;
    log_debug(c->prefix, "closed");
    if (c->ssl)
        tls_close_notify(c);
    c->pending_closes = 4;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->delay_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->hello_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->defer_timer, on_conn_handle_closed);
}

/* --- writing ----------------------------------------------------------------------------- */

static void conn_flush(struct sim_conn *c);
static void tls_flush(struct sim_conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct sim_conn *c = req->data;
    c->write_in_flight = false;
    wire_buf_reset(&c->writing);
    if (c->writing.cap > (1u << 20))
        wire_buf_free(&c->writing);
    if (c->state != CONN_OPEN)
        return;
    if (status < 0) {
        log_debug(c->prefix, "write failed: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static void conn_flush(struct sim_conn *c)
{
    if (c->ssl) {
        tls_flush(c);
        return;
    }
    if (c->state != CONN_OPEN || c->write_in_flight)
        return;
    if (c->out.len == 0) {
        if (c->close_after_flush && !c->dq_head)
            conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->out.len) {
        wire_buf_reset(&c->out);
        if (c->out.cap > (1u << 20))
            wire_buf_free(&c->out);
        if (c->close_after_flush && !c->dq_head)
            conn_close(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        log_debug(c->prefix, "write failed: %s", uv_strerror(n));
        conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    struct wire_buf tmp = c->writing;
    c->writing = c->out;
    c->out = tmp;
    wire_buf_reset(&c->out);
    b = uv_buf_init((char *)c->writing.data + done, (unsigned)(c->writing.len - done));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    c->write_in_flight = true;
}

static void on_delay_timer(uv_timer_t *t);

static void arm_delay_timer(struct sim_conn *c)
{
    if (!c->dq_head)
        return;
    uint64_t now = uv_now(c->srv->sim->loop);
    uint64_t wait = c->dq_head->due_ms > now ? c->dq_head->due_ms - now : 0;
    uv_timer_start(&c->delay_timer, on_delay_timer, wait, 0);
}

static void on_delay_timer(uv_timer_t *t)
{
    struct sim_conn *c = t->data;
    if (c->state != CONN_OPEN)
        return;
    uint64_t now = uv_now(c->srv->sim->loop);
    while (c->dq_head && c->dq_head->due_ms <= now) {
        struct delayed *d = c->dq_head;
        c->dq_head = d->next;
        if (!c->dq_head)
            c->dq_tail = NULL;
        if (wire_buf_append(&c->out, d->data, d->len) < 0) {
            free(d);
            conn_close(c);
            return;
        }
        free(d);
    }
    arm_delay_timer(c);
    conn_flush(c);
}

/*
 * Called after the reply (or replies) to one request were appended to c->out from offset start:
 * holds them back when the server has latency, the request was blocked, or earlier replies are
 * still held (replies leave in order).
 */
static void compress_replies(struct sim_conn *c, size_t start);

static void finish_reply(struct sim_conn *c, size_t start)
{
    if (c->req_compressor != COMPRESSOR_NONE)
        compress_replies(c, start);
    if (c->state != CONN_OPEN)
        return;
    uint64_t delay = c->srv->latency_ms + c->req_block_ms;
    if (delay == 0 && !c->dq_head)
        return;
    size_t len = c->out.len - start;
    if (len == 0)
        return;
    struct delayed *d = malloc(sizeof(*d) + len);
    if (!d) {
        conn_close(c);
        return;
    }
    d->next = NULL;
    /* The loop's clock was read when this loop iteration began and counts whole milliseconds:
     * refresh it and round up, so that a reply never leaves before `delay` has passed since its
     * request arrived (a test timing the latency would otherwise see a little less). */
    uv_update_time(c->srv->sim->loop);
    d->due_ms = uv_now(c->srv->sim->loop) + delay + (delay > 0);
    d->len = len;
    memcpy(d->data, c->out.data + start, len);
    c->out.len = start;
    bool was_empty = c->dq_head == NULL;
    if (c->dq_tail)
        c->dq_tail->next = d;
    else
        c->dq_head = d;
    c->dq_tail = d;
    if (was_empty)
        arm_delay_timer(c);
}

/* Compresses the replies framed in c->out from start with the compressor the request used (the
 * frames of an exhaust stream each on its own). */
static void compress_replies(struct sim_conn *c, size_t start)
{
    struct sim_server *srv = c->srv;
    static const struct compress_levels levels = {.zlib = -1, .zstd = 1};
    wire_buf_reset(&c->zout);
    size_t off = start;
    while (off + WIRE_HEADER_LEN <= c->out.len) {
        size_t len = (size_t)wire_get_i32(c->out.data + off);
        if (len < WIRE_HEADER_LEN || len > c->out.len - off)
            break;
        const uint8_t *f = c->out.data + off;
        size_t before = c->zout.len;
        int rc = compress_frame_allowed(f, len)
                     ? compress_encode(c->req_compressor, &levels, f, len, &c->zout)
                     : wire_buf_append(&c->zout, f, len);
        if (rc < 0) {
            conn_close(c);
            return;
        }
        if (wire_get_i32(c->zout.data + before + 12) == WIRE_OP_COMPRESSED) {
            srv->compressed.msgs_out++;
            srv->compressed.bytes_out += c->zout.len - before;
            srv->compressed.raw_out += len;
        }
        off += len;
    }
    c->out.len = start;
    if (wire_buf_append(&c->out, c->zout.data, c->zout.len) < 0)
        conn_close(c);
    if (c->zout.cap > (1u << 20))
        wire_buf_free(&c->zout);
}

/* --- awaitable hello --------------------------------------------------------------------- */

static void on_hello_timer(uv_timer_t *t);

static void send_awaited_hello(struct sim_conn *c)
{
    struct sim_server *srv = c->srv;
    bson_t reply;
    bson_init(&reply);
    sim_build_hello(srv, c, c->hello_legacy, c->hello_ok, &reply);
    size_t start = c->out.len;
    int32_t rid = next_request_id();
    int rc = wire_append_msg(&c->out, rid, c->hello_response_to,
                             c->hello_exhaust ? WIRE_MSG_MORE_TO_COME : 0, &reply);
    bson_destroy(&reply);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    c->req_block_ms = 0;
    finish_reply(c, start);
    if (c->hello_exhaust) {
        /* The exhaust stream goes on: the next reply answers this one, after another wait. */
        c->hello_response_to = rid;
        uv_timer_start(&c->hello_timer, on_hello_timer, c->hello_await_ms, 0);
    } else {
        c->hello_waiting = false;
    }
    conn_flush(c);
}

static void on_hello_timer(uv_timer_t *t)
{
    struct sim_conn *c = t->data;
    if (c->state != CONN_OPEN || !c->hello_waiting)
        return;
    send_awaited_hello(c);
}

void sim_server_topology_changed(struct sim_server *srv)
{
    struct sim_conn *next;
    for (struct sim_conn *c = srv->conns; c; c = next) {
        next = c->next; /* sending may close c, which unlinks it */
        if (c->state == CONN_OPEN && c->hello_waiting) {
            uv_timer_stop(&c->hello_timer);
            send_awaited_hello(c);
        }
    }
}

/* --- request handling -------------------------------------------------------------------- */

static void reset_request_state(struct sim_conn *c)
{
    c->req_drop = false;
    c->req_block_ms = 0;
    c->exhaust_pending = false;
    c->hello_arm = false;
    c->defer_req = false;
}

/* Streams the rest of a cursor after the first getMore reply (at out[start]) of an exhaust
 * request: every reply but the last has moreToCome, each answers the previous one. */
static void stream_exhaust(struct sim_conn *c, size_t start, int32_t first_rid)
{
    struct sim_server *srv = c->srv;
    struct sim_cursor *cur = sim_cursor_find(srv, c->exhaust_cursor);
    if (!cur)
        return;
    wire_put_i32(c->out.data + start + WIRE_HEADER_LEN, (int32_t)WIRE_MSG_MORE_TO_COME);
    int32_t prev = first_rid;
    bson_t *reply = &srv->sim->scratch;
    for (;;) {
        bson_reinit(reply);
        bson_t cdoc, arr;
        BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cdoc);
        BSON_APPEND_ARRAY_BEGIN(&cdoc, "nextBatch", &arr);
        sim_cursor_fill(cur, &arr, c->exhaust_batch);
        bson_append_array_end(&cdoc, &arr);
        bool done = sim_cursor_exhausted(cur);
        BSON_APPEND_INT64(&cdoc, "id", done ? 0 : cur->id);
        BSON_APPEND_UTF8(&cdoc, "ns", cur->ns);
        bson_append_document_end(reply, &cdoc);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        cur->last_used_ms = sim_now_ms(srv->sim);
        srv->opcounters.getmore++;
        if (done)
            sim_cursor_close(srv, cur);
        int32_t rid = next_request_id();
        if (wire_append_msg(&c->out, rid, prev, done ? 0 : WIRE_MSG_MORE_TO_COME, reply) < 0) {
            conn_close(c);
            return;
        }
        prev = rid;
        if (done)
            return;
    }
}

static int ensure_seq_capacity(struct sim *s, size_t n)
{
    if (n <= s->seq_cap)
        return 0;
    size_t cap = s->seq_cap ? s->seq_cap : 64;
    while (cap < n)
        cap *= 2;
    bson_t *v = realloc(s->seq_views, cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->seq_views = v;
    const bson_t **p = realloc(s->seq_ptrs, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    s->seq_ptrs = p;
    s->seq_cap = cap;
    return 0;
}

static void bad_input(struct sim_conn *c, const char *why)
{
    log_info(c->prefix, "closing connection: %s", why);
    conn_close(c);
}

/* Nesting deeper than BSON allows, as mongod refuses it (BSONDepth: 200 levels, code 15
 * Overflow): the request gets an error and the connection stays open. */
#define SIM_MAX_DEPTH 200

/* How deep a well-formed document nests, walked without recursion (a peer controls the depth);
 * stops counting past limit. */
static int doc_depth(const bson_t *doc, int limit)
{
    /* Wrapped: bson_iter_t is more aligned than it is large, so it cannot be an array element. */
    struct frame {
        bson_iter_t it;
    } stack[SIM_MAX_DEPTH + 2];
    int top = 0, deepest = 1;
    if (!bson_iter_init(&stack[0].it, doc))
        return 0;
    while (top >= 0) {
        if (!bson_iter_next(&stack[top].it)) {
            top--;
            continue;
        }
        if (BSON_ITER_HOLDS_DOCUMENT(&stack[top].it) || BSON_ITER_HOLDS_ARRAY(&stack[top].it)) {
            if (top + 2 > limit)
                return limit + 1;
            if (bson_iter_recurse(&stack[top].it, &stack[top + 1].it)) {
                top++;
                if (top + 1 > deepest)
                    deepest = top + 1;
            }
        }
    }
    return deepest;
}

/* 0 for a valid document, -EPROTO for malformed BSON, -EOVERFLOW for one nested too deep. The
 * depth is checked first: libbson's own validation recurses and must never see such a
 * document. */
static int validate_doc(const uint8_t *p, size_t len)
{
    bson_t b;
    if (!bson_init_static(&b, p, len))
        return -EPROTO;
    /* A frame's length bounds how deep it can nest: a shallow document skips the walk. */
    if (len > 5 * SIM_MAX_DEPTH && doc_depth(&b, SIM_MAX_DEPTH + 1) > SIM_MAX_DEPTH + 1)
        return -EOVERFLOW;
    size_t off;
    return bson_validate(&b, BSON_VALIDATE_NONE, &off) ? 0 : -EPROTO;
}

/* mongod's answer to a document nested too deep: an error, the connection kept. */
static void reply_too_deep(struct sim_conn *c, bool msg, int32_t response_to)
{
    bson_t doc;
    bson_init(&doc);
    BSON_APPEND_DOUBLE(&doc, "ok", 0.0);
    BSON_APPEND_UTF8(&doc, "errmsg", "BSONObj exceeds maximum nested object depth");
    BSON_APPEND_INT32(&doc, "code", 15);
    BSON_APPEND_UTF8(&doc, "codeName", "Overflow");
    size_t start = c->out.len;
    const bson_t *docs[1] = {&doc};
    int rc = msg ? wire_append_msg(&c->out, next_request_id(), response_to, 0, &doc)
                 : wire_append_reply(&c->out, next_request_id(), response_to,
                                     WIRE_REPLY_QUERY_FAILURE, 0, 0, docs, 1);
    bson_destroy(&doc);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    finish_reply(c, start);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void process_input(struct sim_conn *c);

/* A deferred request's time has come: read again, and handle it (first in rbuf) and what
 * followed it. */
static void on_defer_timer(uv_timer_t *t)
{
    struct sim_conn *c = t->data;
    if (c->state != CONN_OPEN || !c->deferred)
        return;
    c->deferred = false;
    if (!c->tls_peer_closed && !c->close_after_flush)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    process_input(c);
}

/* The reply to an OP_QUERY on a collection (a legacy find, servers before 5.1), made from the
 * find command's reply: the first batch as the reply's documents, or the error as {$err, code}
 * with QueryFailure. */
static int append_legacy_find_reply(struct sim_conn *c, int32_t rid, int32_t response_to,
                                    const bson_t *reply)
{
    bson_iter_t it, cur, batch;
    if (!bson_iter_init_find(&it, reply, "ok") || !bson_iter_as_bool(&it)) {
        bson_t err = BSON_INITIALIZER;
        const char *msg = "query failed";
        int32_t code = 0;
        if (bson_iter_init_find(&it, reply, "errmsg") && BSON_ITER_HOLDS_UTF8(&it))
            msg = bson_iter_utf8(&it, NULL);
        if (bson_iter_init_find(&it, reply, "code") && BSON_ITER_HOLDS_NUMBER(&it))
            code = (int32_t)bson_iter_as_int64(&it);
        BSON_APPEND_UTF8(&err, "$err", msg);
        BSON_APPEND_INT32(&err, "code", code);
        const bson_t *docs[1] = {&err};
        int rc =
            wire_append_reply(&c->out, rid, response_to, WIRE_REPLY_QUERY_FAILURE, 0, 0, docs, 1);
        bson_destroy(&err);
        return rc;
    }
    int64_t id = 0;
    size_t n = 0;
    if (bson_iter_init_find(&it, reply, "cursor") && bson_iter_recurse(&it, &cur)) {
        while (bson_iter_next(&cur)) {
            if (strcmp(bson_iter_key(&cur), "id") == 0)
                id = bson_iter_as_int64(&cur);
            else if (strcmp(bson_iter_key(&cur), "firstBatch") == 0 &&
                     bson_iter_recurse(&cur, &batch))
                while (bson_iter_next(&batch))
                    n++;
        }
    }
    /* bson_t asks for more alignment than malloc promises. */
    bson_t *views = n ? aligned_alloc(_Alignof(bson_t), n * sizeof(*views)) : NULL;
    const bson_t **ptrs = n ? calloc(n, sizeof(*ptrs)) : NULL;
    if (n && (!views || !ptrs)) {
        free(views);
        free(ptrs);
        return -ENOMEM;
    }
    size_t i = 0;
    if (n && bson_iter_init_find(&it, reply, "cursor") && bson_iter_recurse(&it, &cur) &&
        bson_iter_find(&cur, "firstBatch") && bson_iter_recurse(&cur, &batch)) {
        while (i < n && bson_iter_next(&batch)) {
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&batch, &len, &data);
            if (bson_init_static(&views[i], data, len)) {
                ptrs[i] = &views[i];
                i++;
            }
        }
    }
    int rc = wire_append_reply(&c->out, rid, response_to, WIRE_REPLY_AWAIT_CAPABLE, id, 0,
                               (const bson_t *const *)ptrs, (int)i);
    free(views);
    free(ptrs);
    return rc;
}

/* Runs the dispatcher and frames its reply. kind selects OP_MSG or OP_REPLY framing. */
static void run_command(struct sim_conn *c, struct sim_request *req)
{
    struct sim_server *srv = c->srv;
    bson_t *reply = &srv->sim->scratch;
    bson_reinit(reply);
    reset_request_state(c);
    bool send = sim_dispatch(srv, c, req, reply);
    if (c->state != CONN_OPEN)
        return;
    if (c->defer_req) {
        /* Not answered yet: the frame stays first in rbuf (frame_input stops at it) and is
         * handled again when the timer fires. Reading stops meanwhile, so that the requests
         * behind it wait, as they do behind a command that a server is still running. */
        if (!c->defer_since)
            c->defer_since = uv_now(srv->sim->loop);
        c->deferred = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_timer_start(&c->defer_timer, on_defer_timer, c->defer_ms, 0);
        return;
    }
    c->defer_since = 0;
    if (c->req_drop) {
        log_debug(c->prefix, "dropping the connection (failCommand closeConnection)");
        conn_close(c);
        return;
    }
    if (req->kind == SIM_REQ_MSG && (req->msg_flags & WIRE_MSG_MORE_TO_COME))
        return;
    if (c->hello_arm && !send) {
        /* The reply comes later, from the hello timer or a topology change. */
        c->hello_waiting = true;
        c->hello_response_to = req->request_id;
        uv_timer_start(&c->hello_timer, on_hello_timer, c->hello_await_ms, 0);
        return;
    }
    if (!send)
        return;
    size_t start = c->out.len;
    int32_t rid = next_request_id();
    int rc;
    if (req->kind == SIM_REQ_MSG)
        rc = wire_append_msg(&c->out, rid, req->request_id, 0, reply);
    else if (req->legacy_find)
        rc = append_legacy_find_reply(c, rid, req->request_id, reply);
    else
        rc = wire_append_reply(&c->out, rid, req->request_id, 0, 0, 0,
                               (const bson_t *const *)&reply, 1);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (req->kind == SIM_REQ_MSG && c->exhaust_pending)
        stream_exhaust(c, start, rid);
    if (req->kind == SIM_REQ_MSG && c->hello_arm && c->hello_exhaust) {
        /* An exhaust hello answered at once: mark it moreToCome and keep streaming. */
        wire_put_i32(c->out.data + start + WIRE_HEADER_LEN, (int32_t)WIRE_MSG_MORE_TO_COME);
        c->hello_waiting = true;
        c->hello_response_to = rid;
        uv_timer_start(&c->hello_timer, on_hello_timer, c->hello_await_ms, 0);
    }
    if (c->state == CONN_OPEN)
        finish_reply(c, start);
}

static void handle_msg(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    struct wire_msg m;
    if (wire_msg_parse(frame, len, &m) < 0) {
        bad_input(c, "malformed OP_MSG");
        return;
    }
    int vrc = validate_doc(m.body, m.body_len);
    if (vrc == -EOVERFLOW) {
        reply_too_deep(c, true, m.h.request_id);
        return;
    }
    if (vrc < 0) {
        bad_input(c, "invalid BSON in OP_MSG body");
        return;
    }
    struct sim *s = c->srv->sim;
    struct sim_request req;
    memset(&req, 0, sizeof(req));
    req.kind = SIM_REQ_MSG;
    req.request_id = m.h.request_id;
    req.msg_flags = m.flags;
    bson_init_static(&req.cmd, m.body, m.body_len);
    for (int i = 0; i < m.nseq; i++) {
        uint32_t off = 0;
        const uint8_t *doc;
        uint32_t dlen;
        size_t n = 0;
        int rc;
        while ((rc = wire_doc_seq_next(&m.seq[i], &off, &doc, &dlen)) == 1) {
            int drc = validate_doc(doc, dlen);
            if (drc == -EOVERFLOW) {
                reply_too_deep(c, true, m.h.request_id);
                return;
            }
            if (drc < 0) {
                bad_input(c, "invalid BSON in a document sequence");
                return;
            }
            n++;
        }
        if (rc < 0) {
            bad_input(c, "malformed document sequence");
            return;
        }
        /* Only the first sequence is handed to the store: commands carry one. The views are
         * made only once the array has its final size, because a static bson_t points into
         * itself and must not be moved by realloc after bson_init_static. */
        if (i != 0)
            continue;
        if (ensure_seq_capacity(s, n) < 0) {
            conn_close(c);
            return;
        }
        off = 0;
        for (size_t j = 0; j < n && wire_doc_seq_next(&m.seq[0], &off, &doc, &dlen) == 1; j++) {
            bson_init_static(&s->seq_views[j], doc, dlen);
            s->seq_ptrs[j] = &s->seq_views[j];
        }
        req.seq_docs = s->seq_ptrs;
        req.n_seq = n;
        req.seq_id = m.seq[0].identifier;
    }
    bson_iter_t it;
    if (bson_iter_init_find(&it, &req.cmd, "$db") && BSON_ITER_HOLDS_UTF8(&it))
        req.db = bson_iter_utf8(&it, NULL);
    run_command(c, &req);
}

static void reply_query_failure(struct sim_conn *c, int32_t response_to, int32_t code,
                                const char *code_name, const char *msg)
{
    bson_t doc;
    bson_init(&doc);
    BSON_APPEND_UTF8(&doc, "$err", msg);
    BSON_APPEND_INT32(&doc, "code", code);
    BSON_APPEND_UTF8(&doc, "codeName", code_name);
    BSON_APPEND_DOUBLE(&doc, "ok", 0.0);
    size_t start = c->out.len;
    const bson_t *docs[1] = {&doc};
    int rc = wire_append_reply(&c->out, next_request_id(), response_to, WIRE_REPLY_QUERY_FAILURE, 0,
                               0, docs, 1);
    bson_destroy(&doc);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    finish_reply(c, start);
}

/* Where MongoDB 5.1 and later explain the removal of the legacy opcodes. */
#define LEGACY_REMOVED_HINT                                                                        \
    ". The client driver may require an upgrade. For more details see "                            \
    "https://dochub.mongodb.org/core/legacy-opcode-removal"

/* An OP_REPLY with QueryFailure and {$err: msg, code, ok: 0}: how mongod fails a legacy
 * request. */
static void reply_legacy_failure(struct sim_conn *c, int32_t response_to, const char *msg,
                                 int32_t code)
{
    bson_t doc;
    bson_init(&doc);
    BSON_APPEND_UTF8(&doc, "$err", msg);
    BSON_APPEND_INT32(&doc, "code", code);
    BSON_APPEND_DOUBLE(&doc, "ok", 0.0);
    size_t start = c->out.len;
    const bson_t *docs[1] = {&doc};
    int rc = wire_append_reply(&c->out, next_request_id(), response_to, WIRE_REPLY_QUERY_FAILURE, 0,
                               0, docs, 1);
    bson_destroy(&doc);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    finish_reply(c, start);
}

/* MongoDB 5.1+'s answer to an OP_QUERY on a collection or an OP_GET_MORE: code 5739101
 * (makeErrorResponseToUnsupportedOpQuery). */
static void reply_legacy_removed(struct sim_conn *c, int32_t response_to, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s%s", what, LEGACY_REMOVED_HINT);
    reply_legacy_failure(c, response_to, msg, 5739101);
}

/* Code 13: a legacy OP_GET_MORE on a cursor of another user (or before login), under --auth. */
static void reply_legacy_unauthorized(struct sim_conn *c, int32_t response_to, int64_t id)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "cursor id %lld was not created by the authenticated user",
             (long long)id);
    reply_legacy_failure(c, response_to, msg, 13);
}

/* The commands MongoDB 5.1+ still takes over OP_QUERY (checkAllowedOpQueryCommand): the
 * handshake, and a few that old drivers need to authenticate before they send anything else. */
static bool allowed_over_op_query(const char *name)
{
    static const char *const allowed[] = {"hello",     "isMaster",     "ismaster",
                                          "_isSelf",   "authenticate", "buildinfo",
                                          "buildInfo", "saslContinue", "saslStart"};
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (name && strcmp(name, allowed[i]) == 0)
            return true;
    return false;
}

/* MongoDB 5.1+'s answer to any other command over OP_QUERY: a command error, 352. */
static void reply_op_query_command_refused(struct sim_conn *c, int32_t response_to,
                                           const char *name)
{
    bson_t doc;
    bson_init(&doc);
    char msg[256];
    snprintf(msg, sizeof(msg), "Unsupported OP_QUERY command: %s%s", name ? name : "",
             LEGACY_REMOVED_HINT);
    BSON_APPEND_DOUBLE(&doc, "ok", 0.0);
    BSON_APPEND_UTF8(&doc, "errmsg", msg);
    BSON_APPEND_INT32(&doc, "code", 352);
    BSON_APPEND_UTF8(&doc, "codeName", "UnsupportedOpQueryCommand");
    size_t start = c->out.len;
    const bson_t *docs[1] = {&doc};
    int rc = wire_append_reply(&c->out, next_request_id(), response_to, 0, 0, 0, docs, 1);
    bson_destroy(&doc);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    finish_reply(c, start);
}

/* Marks a legacy request as allowed on a secondary when its $readPreference (the wrapper of old
 * drivers and of mongos) asks for anything but the primary. */
static void legacy_read_preference(const bson_t *wrapper, int32_t *flags)
{
    bson_iter_t rp, mode;
    if (bson_iter_init_find(&rp, wrapper, "$readPreference") && bson_iter_recurse(&rp, &mode) &&
        bson_iter_find(&mode, "mode") && BSON_ITER_HOLDS_UTF8(&mode) &&
        strcmp(bson_iter_utf8(&mode, NULL), "primary") != 0)
        *flags |= WIRE_QUERY_SECONDARY_OK;
}

/*
 * An OP_QUERY on a collection, as servers before 5.1 answer it: run as the find command it stands
 * for ({$query, $orderby} or a plain filter, the projection, nToSkip; nToReturn 1 or negative
 * for one batch and no cursor), its first batch returned as the reply's documents, the rest
 * through OP_GET_MORE.
 */
static void run_legacy_find(struct sim_conn *c, const struct wire_query *q, const char *db,
                            const char *coll)
{
    bson_t query, find = BSON_INITIALIZER, part;
    bson_iter_t it;
    struct sim_request req;
    memset(&req, 0, sizeof(req));
    req.query_flags = q->flags;
    bson_init_static(&query, q->query, q->query_len);
    BSON_APPEND_UTF8(&find, "find", coll);
    if (bson_iter_init_find(&it, &query, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t dl;
        const uint8_t *data;
        bson_iter_document(&it, &dl, &data);
        if (bson_init_static(&part, data, dl))
            BSON_APPEND_DOCUMENT(&find, "filter", &part);
        if (bson_iter_init_find(&it, &query, "$orderby") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bson_iter_document(&it, &dl, &data);
            if (bson_init_static(&part, data, dl))
                BSON_APPEND_DOCUMENT(&find, "sort", &part);
        }
        legacy_read_preference(&query, &req.query_flags);
    } else {
        BSON_APPEND_DOCUMENT(&find, "filter", &query);
    }
    if (q->fields && bson_init_static(&part, q->fields, q->fields_len) && !bson_empty(&part))
        BSON_APPEND_DOCUMENT(&find, "projection", &part);
    if (q->skip > 0)
        BSON_APPEND_INT64(&find, "skip", q->skip);
    if (q->n_return == 1 || q->n_return < 0) {
        int64_t n = q->n_return == 1 ? 1 : -(int64_t)q->n_return;
        BSON_APPEND_INT64(&find, "limit", n);
        BSON_APPEND_INT64(&find, "batchSize", n);
        BSON_APPEND_BOOL(&find, "singleBatch", true);
    } else if (q->n_return > 1) {
        BSON_APPEND_INT64(&find, "batchSize", q->n_return);
    }
    req.kind = SIM_REQ_QUERY;
    req.request_id = q->h.request_id;
    req.db = db;
    req.legacy_find = true;
    bson_init_static(&req.cmd, bson_get_data(&find), find.len);
    run_command(c, &req);
    bson_destroy(&find);
}

static void handle_query(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    struct wire_query q;
    if (wire_query_parse(frame, len, &q) < 0) {
        bad_input(c, "malformed OP_QUERY");
        return;
    }
    int qrc = validate_doc(q.query, q.query_len);
    if (qrc == 0 && q.fields)
        qrc = validate_doc(q.fields, q.fields_len);
    if (qrc == -EOVERFLOW) {
        reply_too_deep(c, false, q.h.request_id);
        return;
    }
    if (qrc < 0) {
        bad_input(c, "invalid BSON in OP_QUERY");
        return;
    }
    reset_request_state(c);
    bool removed = sim_legacy_opcodes_removed(c->srv->sim->opt.version);
    const char *dot = strchr(q.ns, '.');
    char db[128];
    size_t dl = dot ? (size_t)(dot - q.ns) : 0;
    if (dl >= sizeof(db))
        dl = sizeof(db) - 1;
    memcpy(db, q.ns, dl);
    db[dl] = '\0';
    if (!dot || strcmp(dot, ".$cmd") != 0) {
        if (removed) {
            c->srv->opcounters.query++;
            reply_legacy_removed(c, q.h.request_id, "OP_QUERY is no longer supported");
        } else if (!dot || !dot[1] || !db[0]) {
            reply_query_failure(c, q.h.request_id, 73, "InvalidNamespace", "Invalid ns");
        } else {
            run_legacy_find(c, &q, db, dot + 1);
        }
        return;
    }

    struct sim_request req;
    memset(&req, 0, sizeof(req));
    req.kind = SIM_REQ_QUERY;
    req.request_id = q.h.request_id;
    req.query_flags = q.flags;
    req.db = db;
    bson_init_static(&req.cmd, q.query, q.query_len);
    /* Old drivers wrap the command as {$query: cmd, $readPreference: ...}. */
    bson_iter_t it;
    if (bson_iter_init_find(&it, &req.cmd, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_t wrapper = req.cmd;
        uint32_t dlen;
        const uint8_t *data;
        bson_iter_document(&it, &dlen, &data);
        bson_init_static(&req.cmd, data, dlen);
        legacy_read_preference(&wrapper, &req.query_flags);
    }
    if (removed && !allowed_over_op_query(wire_command_name(&req.cmd))) {
        reply_op_query_command_refused(c, q.h.request_id, wire_command_name(&req.cmd));
        return;
    }
    run_command(c, &req);
}

static void handle_get_more(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    struct wire_get_more g;
    if (wire_get_more_parse(frame, len, &g) < 0) {
        bad_input(c, "malformed OP_GET_MORE");
        return;
    }
    struct sim_server *srv = c->srv;
    srv->opcounters.getmore++;
    if (sim_legacy_opcodes_removed(srv->sim->opt.version)) {
        reply_legacy_removed(c, g.h.request_id, "OP_GET_MORE is no longer supported");
        return;
    }
    struct sim_cursor *cur = sim_cursor_find(srv, g.cursor_id);
    if (cur && !sim_auth_owns(srv->sim, c, cur->owner)) {
        reply_legacy_unauthorized(c, g.h.request_id, g.cursor_id);
        return;
    }
    size_t start = c->out.len;
    int rc;
    if (!cur || strcmp(cur->ns, g.ns) != 0) {
        rc = wire_append_reply(&c->out, next_request_id(), g.h.request_id,
                               WIRE_REPLY_CURSOR_NOT_FOUND, 0, 0, NULL, 0);
    } else {
        size_t n = 0, bytes = 0;
        size_t max = g.n_return > 0 ? (size_t)g.n_return : SIZE_MAX;
        if (g.n_return < 0)
            max = (size_t)(-(int64_t)g.n_return);
        while (cur->pos + n < cur->res.n && n < max) {
            size_t l = cur->res.docs[cur->pos + n]->len;
            if (n > 0 && bytes + l > SIM_MAX_BATCH_BYTES)
                break;
            bytes += l;
            n++;
        }
        int32_t from = (int32_t)cur->pos;
        const bson_t *const *docs = (const bson_t *const *)&cur->res.docs[cur->pos];
        cur->pos += n;
        cur->last_used_ms = sim_now_ms(srv->sim);
        bool done = sim_cursor_exhausted(cur);
        int64_t id = done ? 0 : cur->id;
        rc = wire_append_reply(&c->out, next_request_id(), g.h.request_id, 0, id, from, docs,
                               (int)n);
        if (done)
            sim_cursor_close(srv, cur);
    }
    if (rc < 0) {
        conn_close(c);
        return;
    }
    finish_reply(c, start);
}

static void handle_kill_cursors(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    struct wire_kill_cursors k;
    if (wire_kill_cursors_parse(frame, len, &k) < 0) {
        bad_input(c, "malformed OP_KILL_CURSORS");
        return;
    }
    if (sim_legacy_opcodes_removed(c->srv->sim->opt.version)) {
        /* No reply is possible (fire-and-forget), so MongoDB 5.1+ fails the request and ends the
         * session: the connection closes. */
        bad_input(c, "OP_KILL_CURSORS is no longer supported (MongoDB 5.1)");
        return;
    }
    for (int i = 0; i < k.n_ids; i++) {
        struct sim_cursor *cur = sim_cursor_find(c->srv, wire_kill_cursors_id(&k, i));
        /* Fire-and-forget: another user's cursor is left alone without a word. */
        if (cur &&
            (sim_auth_owns(c->srv->sim, c, cur->owner) || sim_auth_kill_any_cursor(c->srv->sim, c)))
            sim_cursor_close(c->srv, cur);
    }
}

static void handle_compressed(struct sim_conn *c, const uint8_t *frame, size_t len);

static void handle_frame(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    int32_t opcode = wire_get_i32(frame + 12);
    c->req_block_ms = 0;
    switch (opcode) {
    case WIRE_OP_COMPRESSED:
        handle_compressed(c, frame, len);
        break;
    case WIRE_OP_MSG:
        handle_msg(c, frame, len);
        break;
    case WIRE_OP_QUERY:
        handle_query(c, frame, len);
        break;
    case WIRE_OP_GET_MORE:
        handle_get_more(c, frame, len);
        break;
    case WIRE_OP_KILL_CURSORS:
        handle_kill_cursors(c, frame, len);
        break;
    default: {
        /* OP_INSERT/UPDATE/DELETE were removed in MongoDB 5.1 (and before, mongosim never ran
         * these fire-and-forget writes): these and unknown opcodes close the connection, as
         * mongod 5.1+ does. */
        char why[64];
        snprintf(why, sizeof(why), "unsupported opcode %d (%s)", opcode, wire_opcode_name(opcode));
        bad_input(c, why);
        break;
    }
    }
}

/*
 * An OP_COMPRESSED request: decompressed (with the checks of compress_decode: the declared size
 * within the maximum message size and exactly what the data holds, a compressor this server has,
 * an opcode that may be wrapped) and handled as the frame it carries, whose replies are then
 * compressed the same way. A frame the decoder refuses closes the connection, as mongod does.
 */
static void handle_compressed(struct sim_conn *c, const uint8_t *frame, size_t len)
{
    struct sim_server *srv = c->srv;
    int id;
    int rc = compress_decode(frame, len, WIRE_MAX_MESSAGE_SIZE,
                             compress_mask(&srv->sim->opt.compressors), &c->zin, &id);
    if (rc < 0) {
        bad_input(c, compress_strerror(rc));
        return;
    }
    srv->compressed.msgs_in++;
    srv->compressed.bytes_in += len;
    srv->compressed.raw_in += c->zin.len;
    c->req_compressor = id;
    /* compress_decode never yields an OP_COMPRESSED, so this goes one level down at most. */
    handle_frame(c, c->zin.data, c->zin.len);
    c->req_compressor = COMPRESSOR_NONE;
    if (c->zin.cap > (1u << 20))
        wire_buf_free(&c->zin);
}

/* --- reading ----------------------------------------------------------------------------- */

static int ensure_rcap(struct sim_conn *c, size_t need)
{
    if (need <= c->rcap)
        return 0;
    uint8_t *p = realloc(c->rbuf, need);
    if (!p)
        return -ENOMEM;
    c->rbuf = p;
    c->rcap = need;
    return 0;
}

/* Ciphertext lands here before it is copied into a connection's read BIO. One buffer serves every
 * connection: libuv fills it and calls on_read at once, which empties it before anything else can
 * read. */
static uint8_t tls_inbuf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sim_conn *c = h->data;
    if (c->ssl) {
        buf->base = (char *)tls_inbuf;
        buf->len = sizeof(tls_inbuf);
        return;
    }
    if (c->rcap - c->rlen < 4096 && ensure_rcap(c, c->rcap + 65536) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = (char *)c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

/* Handles every complete frame in rbuf, keeps the partial one at its start, and makes room for all
 * of that one once its header is known. */
static void frame_input(struct sim_conn *c)
{
    size_t off = 0;
    while (c->state == CONN_OPEN && !c->deferred) {
        struct wire_header h;
        int rc = wire_header_parse(c->rbuf + off, c->rlen - off, WIRE_MAX_MESSAGE_SIZE, &h);
        if (rc == -EAGAIN)
            break;
        if (rc < 0) {
            bad_input(c, "message length out of range");
            return;
        }
        if (c->rlen - off < (size_t)h.length)
            break;
        handle_frame(c, c->rbuf + off, (size_t)h.length);
        if (c->deferred)
            break; /* it stays, to be handled again when its wait is over */
        off += (size_t)h.length;
    }
    if (c->state != CONN_OPEN)
        return;
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    /* A partial frame whose header is known: make room for all of it now, once. */
    struct wire_header h;
    if (wire_header_parse(c->rbuf, c->rlen, WIRE_MAX_MESSAGE_SIZE, &h) == 0 &&
        ensure_rcap(c, (size_t)h.length) < 0) {
        conn_close(c);
        return;
    }
    if (c->rlen == 0 && c->rcap > (1u << 20)) {
        free(c->rbuf);
        c->rbuf = malloc(65536);
        c->rcap = c->rbuf ? 65536 : 0;
    }
}

static void process_input(struct sim_conn *c)
{
    frame_input(c);
    if (c->state == CONN_OPEN)
        conn_flush(c);
}

static void tls_on_read(struct sim_conn *c, ssize_t nread, const uv_buf_t *buf);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sim_conn *c = stream->data;
    if (c->state != CONN_OPEN)
        return;
    if (c->ssl && nread > 0) {
        tls_on_read(c, nread, buf);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && c->rlen > 0)
            bad_input(c, "truncated frame at end of stream");
        else
            conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->rlen += (size_t)nread;
    process_input(c);
}

/* --- TLS --------------------------------------------------------------------------------- */

/* How much plaintext one SSL_write is given: the ciphertext waiting in the write BIO, and the
 * copy of it that a partial write keeps in c->writing, stay this small however large a reply is. */
#define SIM_TLS_CHUNK (64 * 1024)

/* Creates the connection's SSL and its two memory BIOs. */
static int tls_attach(struct sim_conn *c)
{
    c->ssl = SSL_new(c->srv->sim->tls_ctx);
    if (!c->ssl)
        return -ENOMEM;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        return -ENOMEM;
    }
    /* An empty memory BIO must read as "retry later" (SSL_ERROR_WANT_READ) and never as the end
     * of the stream: more ciphertext may always arrive from the socket. */
    BIO_set_mem_eof_return(c->rbio, -1);
    BIO_set_mem_eof_return(c->wbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    return 0;
}

/*
 * Writes why OpenSSL failed into buf: the reason of the oldest queued error (the first thing that
 * went wrong), and the certificate check's verdict when a client certificate was refused. Empties
 * the error queue, which every connection of this thread shares.
 */
static void tls_reason(struct sim_conn *c, int sslerr, char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *reason = "unknown error";
    char code[256];
    if (e) {
        reason = ERR_reason_error_string(e);
        if (!reason) {
            ERR_error_string_n(e, code, sizeof(code));
            reason = code;
        }
    } else if (sslerr == SSL_ERROR_SYSCALL) {
        reason = "unexpected end of the TLS stream";
    }
    long verify = SSL_get_verify_result(c->ssl);
    if (verify != X509_V_OK)
        snprintf(buf, len, "%s (client certificate: %s)", reason,
                 X509_verify_cert_error_string(verify));
    else
        snprintf(buf, len, "%s", reason);
    ERR_clear_error();
}

/* Hands what OpenSSL left in the write BIO (an alert, a close_notify) to the kernel if it takes it
 * at once. Only used just before the connection closes, when there is no later chance to write,
 * so bytes the kernel refuses are dropped. */
static void tls_try_send(struct sim_conn *c)
{
    /* Ciphertext of an earlier write is still queued: anything sent now would overtake it. */
    if (c->write_in_flight)
        return;
    char buf[1024];
    int n;
    while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0) {
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != n)
            break;
    }
}

/* Called by conn_close: says goodbye with close_notify when the session is in a state that allows
 * one. The client's own close_notify is not waited for; the socket closes right after. */
static void tls_close_notify(struct sim_conn *c)
{
    if (c->tls_failed || !c->tls_established)
        return;
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
    tls_try_send(c);
}

/* A fatal TLS error: logs OpenSSL's reason, sends the alert OpenSSL queued for the client if the
 * kernel takes it, and closes this connection only. */
static void tls_fail(struct sim_conn *c, const char *what, int sslerr)
{
    char reason[512];
    tls_reason(c, sslerr, reason, sizeof(reason));
    c->tls_failed = true;
    if (!c->tls_established && c->tls_seen_input && c->tls_first_byte != 0x16)
        log_warn(c->prefix,
                 "%s: %s (the first byte is not a TLS handshake record: a plaintext "
                 "client on a TLS-only port?)",
                 what, reason);
    else
        log_warn(c->prefix, "%s: %s", what, reason);
    tls_try_send(c);
    conn_close(c);
}

static void tls_log_established(struct sim_conn *c)
{
    if (LOG_DEBUG > log_current_level)
        return;
    char subject[256] = "none";
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
#else
    X509 *peer = SSL_get_peer_certificate(c->ssl);
#endif
    if (peer) {
        X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
        X509_free(peer);
    }
    log_debug(c->prefix, "TLS established: %s, %s, client certificate %s", SSL_get_version(c->ssl),
              SSL_get_cipher_name(c->ssl), subject);
}

/*
 * Encrypts c->out and sends it: the TLS counterpart of the plaintext flush. Plaintext goes
 * through SSL_write a chunk at a time; each chunk's ciphertext is taken out of the write BIO and
 * written with uv_try_write, and what the kernel does not take at once leaves with uv_write, whose
 * completion (on_write) calls back here for the rest. Handshake messages, session tickets and
 * alerts that OpenSSL queued in the write BIO leave the same way, even when c->out is empty.
 */
static void tls_flush(struct sim_conn *c)
{
    while (c->state == CONN_OPEN && !c->write_in_flight) {
        if (c->out_off < c->out.len) {
            size_t n = c->out.len - c->out_off;
            if (n > SIM_TLS_CHUNK)
                n = SIM_TLS_CHUNK;
            ERR_clear_error();
            int w = SSL_write(c->ssl, c->out.data + c->out_off, (int)n);
            if (w <= 0) {
                tls_fail(c, "TLS write failed", SSL_get_error(c->ssl, w));
                return;
            }
            c->out_off += (size_t)w;
            if (c->out_off == c->out.len) {
                wire_buf_reset(&c->out);
                c->out_off = 0;
                if (c->out.cap > (1u << 20))
                    wire_buf_free(&c->out);
            }
        }
        size_t pending = BIO_ctrl_pending(c->wbio);
        if (pending == 0) {
            if (c->out.len == 0 && c->close_after_flush && !c->dq_head)
                conn_close(c);
            return;
        }
        if (pending > INT_MAX || wire_buf_reserve(&c->writing, pending) < 0) {
            conn_close(c);
            return;
        }
        int got = BIO_read(c->wbio, c->writing.data, (int)pending);
        if (got <= 0) {
            conn_close(c);
            return;
        }
        c->writing.len = (size_t)got;
        uv_buf_t b = uv_buf_init((char *)c->writing.data, (unsigned)got);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == got) {
            wire_buf_reset(&c->writing);
            continue;
        }
        if (n < 0 && n != UV_EAGAIN) {
            log_debug(c->prefix, "write failed: %s", uv_strerror(n));
            conn_close(c);
            return;
        }
        size_t done = n > 0 ? (size_t)n : 0;
        b = uv_buf_init((char *)c->writing.data + done, (unsigned)((size_t)got - done));
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
            conn_close(c);
            return;
        }
        c->write_in_flight = true;
        return;
    }
}

/*
 * Feeds ciphertext from the socket to OpenSSL: finishes the handshake first, then decrypts into
 * rbuf, framing whenever rbuf runs short of room so that it grows exactly as on the plaintext
 * path (one frame at most, bounded by WIRE_MAX_MESSAGE_SIZE). Everything is a loop: nothing a
 * peer sends makes the stack deeper.
 */
static void tls_on_read(struct sim_conn *c, ssize_t nread, const uv_buf_t *buf)
{
    if (!c->tls_seen_input) {
        c->tls_seen_input = true;
        c->tls_first_byte = (uint8_t)buf->base[0];
    }
    /* A read is at most sizeof(tls_inbuf), and the loop below drains the BIO before the next one,
     * so the read BIO never holds more than that plus one partial record. */
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        log_warn(c->prefix, "closing: cannot buffer TLS input (out of memory)");
        ERR_clear_error();
        conn_close(c);
        return;
    }
    ERR_clear_error();
    if (!c->tls_established) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                /* Send the part of the handshake OpenSSL produced, then wait for the client. */
                conn_flush(c);
                return;
            }
            tls_fail(c, "TLS handshake failed", err);
            return;
        }
        c->tls_established = true;
        tls_log_established(c);
    }
    while (c->state == CONN_OPEN && !c->tls_peer_closed) {
        if (c->rcap - c->rlen < 4096) {
            frame_input(c);
            if (c->state != CONN_OPEN)
                return;
            if (c->rcap - c->rlen < 4096 && ensure_rcap(c, c->rcap + 65536) < 0) {
                conn_close(c);
                return;
            }
        }
        size_t room = c->rcap - c->rlen;
        if (room > INT_MAX)
            room = INT_MAX;
        /* The framing above may have run code that touched OpenSSL for other connections;
         * SSL_get_error below must only see what this SSL_read queued. */
        ERR_clear_error();
        int n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)room);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            /* The client's close_notify: what it sent before still gets its replies, then this
             * side answers with its own close_notify (conn_close) and closes. */
            log_debug(c->prefix, "the client sent close_notify");
            c->tls_peer_closed = true;
            c->close_after_flush = true;
            uv_read_stop((uv_stream_t *)&c->tcp);
            break;
        }
        tls_fail(c, "TLS error", err);
        return;
    }
    /* Frames what was decrypted and flushes, which also sends what OpenSSL queued while reading
     * (session tickets after the handshake, a key update). */
    if (c->state == CONN_OPEN)
        process_input(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct sim_server *srv = server->data;
    if (status < 0)
        return;
    struct sim_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->rbuf = malloc(16384);
    c->rcap = c->rbuf ? 16384 : 0;
    c->req_compressor = COMPRESSOR_NONE;
    uv_tcp_init(srv->sim->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || !c->rbuf) {
        c->srv = srv;
        c->pending_closes = 1;
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_init(srv->sim->loop, &c->delay_timer);
    uv_timer_init(srv->sim->loop, &c->hello_timer);
    uv_timer_init(srv->sim->loop, &c->defer_timer);
    c->delay_timer.data = c;
    c->hello_timer.data = c;
    c->defer_timer.data = c;
    c->srv = srv;
    c->id = ++srv->sim->next_conn_id;
    snprintf(c->prefix, sizeof(c->prefix), "s%d c%llu", srv->index, (unsigned long long)c->id);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->conns_current++;
    srv->conns_total++;
    log_debug(c->prefix, "accepted");
    if (srv->sim->tls_ctx && tls_attach(c) < 0) {
        log_warn(c->prefix, "closing: cannot set up TLS (out of memory)");
        ERR_clear_error();
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* --- listeners --------------------------------------------------------------------------- */

int sim_server_listen(struct sim_server *srv)
{
    struct sim *s = srv->sim;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } addr;
    if (uv_ip4_addr(srv->host, srv->port, &addr.in4) != 0 &&
        uv_ip6_addr(srv->host, srv->port, &addr.in6) != 0)
        return -EINVAL;
    int rc = uv_tcp_init(s->loop, &srv->listener);
    if (rc < 0)
        return rc;
    srv->listener.data = srv;
    rc = uv_tcp_bind(&srv->listener, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc < 0) {
        srv->listener_closing = true;
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return rc;
    }
    int alen = sizeof(addr);
    if (uv_tcp_getsockname(&srv->listener, &addr.sa, &alen) == 0)
        srv->port = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);
    if (strchr(srv->host, ':'))
        snprintf(srv->host_port, sizeof(srv->host_port), "[%s]:%d", srv->host, srv->port);
    else
        snprintf(srv->host_port, sizeof(srv->host_port), "%s:%d", srv->host, srv->port);
    srv->listening = true;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct sim_server *srv = h->data;
    srv->listener_closing = false;
}

void sim_server_kill(struct sim_server *srv, struct sim_conn *keep)
{
    if (srv->listening) {
        srv->listening = false;
        srv->listener_closing = true;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    }
    struct sim_conn *c = srv->conns;
    while (c) {
        struct sim_conn *next = c->next;
        if (c == keep) {
            c->close_after_flush = true;
        } else {
            conn_close(c);
        }
        c = next;
    }
    sim_cursor_close_all(srv);
    sim_abort_txns(srv);
}

int sim_server_revive(struct sim_server *srv)
{
    if (srv->listening)
        return 0;
    if (srv->listener_closing)
        return -EBUSY;
    bson_oid_init(&srv->process_id, NULL);
    srv->topology_counter = 0;
    return sim_server_listen(srv);
}

static void on_sim_handle_closed(uv_handle_t *h)
{
    (void)h;
}

void sim_stop(struct sim *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    for (int i = 0; i < s->nservers; i++) {
        struct sim_server *srv = &s->servers[i];
        if (srv->listening) {
            srv->listening = false;
            uv_close((uv_handle_t *)&srv->listener, on_sim_handle_closed);
        }
        while (srv->conns)
            conn_close(srv->conns);
    }
    uv_close((uv_handle_t *)&s->sweep_timer, on_sim_handle_closed);
    uv_close((uv_handle_t *)&s->election_timer, on_sim_handle_closed);
    uv_close((uv_handle_t *)&s->sig_term, on_sim_handle_closed);
    uv_close((uv_handle_t *)&s->sig_int, on_sim_handle_closed);
}
