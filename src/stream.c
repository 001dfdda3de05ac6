/*
 * stream.c: the transport under every socket. See stream.h for what it owns and promises.
 */
#include "stream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509.h>

/* An emptied buffer at most this large is kept for the next frame; a larger one is given back,
 * so that an idle connection costs little. Owners with few, busy connections (the pool) keep
 * more, through stream_keep_buffer(). */
#define KEEP_EMPTY_BUF 1024
/* Deferred streams handled per check callback; the rest go on at the next loop iteration. */
#define DEFERRED_PER_PASS 4096

static void process(struct stream *s);
static void update_reading(struct stream *s);
static bool tls_on_read(struct stream *s, const uint8_t *data, size_t n);
static int tls_pull(struct stream *s);
static int tls_write(struct stream *s, const uv_buf_t *bufs, unsigned n);
static void tls_close(struct stream *s);
static void tls_free(struct stream *s);

/* A stream's TLS state: allocated only for streams that use TLS, so that plaintext connections
 * cost nothing more. */
struct stream_tls {
    SSL *ssl;            /* NULL while a server-side stream waits for its first byte */
    SSL_CTX *sniff_ctx;  /* for that first byte: the context to accept TLS with */
    bool plain_ok;       /* a first byte that is not a TLS record keeps the stream plaintext */
    bool done;           /* the handshake is over */
    bool failed;         /* a TLS error was reported: nothing more is read or written */
    bool more;           /* the last pull stopped with decryptable bytes left (its cap, or room) */
    struct wire_buf out; /* ciphertext not yet written to the socket */
    size_t inflight;     /* bytes of out in the uv_write under way */
    bool owner_pending;  /* the owner's stream_write completes once out is flushed to owner_end */
    size_t owner_end;
    char error[200];
};

/* --- deferred work ------------------------------------------------------------------------ */

static void list_leave(struct stream *s)
{
    if (s->on_list) {
        list_remove(&s->link);
        s->on_list = false;
    }
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* only here so that the poll does not block while work is queued */
}

/* Queues s for processing from the loop (its frames, and a finished write's callback). */
static void defer(struct stream *s)
{
    struct stream_ctx *ctx = s->ctx;
    if (s->closing || (s->on_list && !s->budget_wait))
        return;
    list_leave(s);
    s->budget_wait = false;
    list_push_back(&ctx->deferred, &s->link);
    s->on_list = true;
    uv_idle_start(&ctx->idle, on_idle);
}

static void on_check(uv_check_t *h)
{
    struct stream_ctx *ctx = h->data;
    /* Take the list over first: a stream that defers itself again during this pass (it reached
     * its per-wakeup cap) waits for the next loop iteration, so the cap holds. */
    struct list pass;
    list_init(&pass);
    int n = 0;
    while (!list_empty(&ctx->deferred) && n++ < DEFERRED_PER_PASS) {
        struct list *e = ctx->deferred.next;
        list_remove(e);
        list_push_back(&pass, e);
    }
    while (!list_empty(&pass)) {
        struct stream *s = list_entry(pass.next, struct stream, link);
        list_leave(s);
        if (s->closing)
            continue;
        if (s->write_done) {
            s->write_done = false;
            s->cb->on_written(s, 0);
            if (s->closing)
                continue;
        }
        process(s);
    }
    if (list_empty(&ctx->deferred))
        uv_idle_stop(&ctx->idle);
    else
        uv_idle_start(&ctx->idle, on_idle);
}

int stream_ctx_init(struct stream_ctx *ctx, uv_loop_t *loop, size_t budget_max)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->loop = loop;
    ctx->budget_max = budget_max;
    list_init(&ctx->budget_waiters);
    list_init(&ctx->deferred);
    ctx->shared = malloc(STREAM_SHARED_BUF);
    if (!ctx->shared)
        return -ENOMEM;
    uv_check_init(loop, &ctx->check);
    uv_idle_init(loop, &ctx->idle);
    ctx->check.data = ctx;
    ctx->idle.data = ctx;
    uv_check_start(&ctx->check, on_check);
    /* The check handle does not keep the loop alive by itself; the idle handle does, while it is
     * started, which is exactly while deferred work is queued. */
    uv_unref((uv_handle_t *)&ctx->check);
    return 0;
}

void stream_ctx_close(struct stream_ctx *ctx)
{
    if (!uv_is_closing((uv_handle_t *)&ctx->check)) {
        uv_close((uv_handle_t *)&ctx->check, NULL);
        uv_close((uv_handle_t *)&ctx->idle, NULL);
    }
}

/* Wakes every stream waiting for budget; each retries when its turn comes. */
static void budget_wake(struct stream_ctx *ctx)
{
    while (!list_empty(&ctx->budget_waiters)) {
        struct stream *s = list_entry(ctx->budget_waiters.next, struct stream, link);
        defer(s);
    }
}

void stream_ctx_set_budget(struct stream_ctx *ctx, size_t budget_max)
{
    ctx->budget_max = budget_max;
    budget_wake(ctx);
}

/* --- buffer ------------------------------------------------------------------------------ */

/* Charges or refunds the budget for s's buffer now being cap bytes. */
static void recharge(struct stream *s, size_t old_cap, size_t cap)
{
    struct stream_ctx *ctx = s->ctx;
    ctx->buffered = ctx->buffered - old_cap + cap;
    size_t want = cap > STREAM_FREE_BYTES ? cap : 0;
    if (want >= s->charged)
        ctx->budget_used += want - s->charged;
    else
        ctx->budget_used -= s->charged - want;
    bool refund = want < s->charged;
    s->charged = want;
    if (refund && !list_empty(&ctx->budget_waiters))
        budget_wake(ctx);
}

static void buf_free(struct stream *s)
{
    size_t old = s->rbuf.cap;
    wire_buf_free(&s->rbuf);
    s->rpos = 0;
    recharge(s, old, 0);
}

/* Moves the unprocessed bytes to the front of the buffer (never while a frame is held). */
static void compact(struct stream *s)
{
    if (s->held_len || s->rpos == 0)
        return;
    size_t left = s->rbuf.len - s->rpos;
    if (left)
        memmove(s->rbuf.data, s->rbuf.data + s->rpos, left);
    s->rbuf.len = left;
    s->rpos = 0;
    if (left == 0 && s->rbuf.cap > s->keep_buf)
        buf_free(s);
}

/*
 * Makes room for `need` unprocessed bytes in all (the frame about to arrive). Returns 0, -EAGAIN
 * when the budget has no room (s then waits for it, unread), or -ENOMEM.
 */
static int make_room(struct stream *s, size_t need)
{
    compact(s);
    if (s->rbuf.cap >= need)
        return 0;
    size_t cap = s->rbuf.cap ? s->rbuf.cap : 256;
    while (cap < need)
        cap *= 2;
    struct stream_ctx *ctx = s->ctx;
    size_t charge = cap > STREAM_FREE_BYTES ? cap : 0;
    if (charge > s->charged && ctx->budget_used + (charge - s->charged) > ctx->budget_max) {
        ctx->budget_waits++;
        list_leave(s);
        list_push_back(&ctx->budget_waiters, &s->link);
        s->on_list = true;
        s->budget_wait = true;
        return -EAGAIN;
    }
    uint8_t *p = realloc(s->rbuf.data, cap);
    if (!p)
        return -ENOMEM;
    size_t old = s->rbuf.cap;
    s->rbuf.data = p;
    s->rbuf.cap = cap;
    recharge(s, old, cap);
    return 0;
}

/* --- reading ----------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct stream *s = h->data;
    (void)suggested;
    if (s->tls || (s->rbuf.len == s->rpos && !s->held_len)) {
        /* Ciphertext goes into the TLS read BIO at once, so it can always use this buffer. */
        /* Nothing pending: read into the shared buffer; what arrives is copied out at once. */
        buf->base = (char *)s->ctx->shared;
        buf->len = STREAM_SHARED_BUF;
        return;
    }
    size_t spare = s->rbuf.cap - s->rbuf.len;
    if (spare == 0 && !s->held_len) {
        /* Bytes of a frame whose header is incomplete, or of frames not yet handled. */
        if (make_room(s, s->rbuf.len - s->rpos + 4096) == 0)
            spare = s->rbuf.cap - s->rbuf.len;
    }
    buf->base = spare ? (char *)s->rbuf.data + s->rbuf.len : NULL;
    buf->len = spare;
}

static void fail_read(struct stream *s, int status)
{
    s->want_read = false;
    update_reading(s);
    s->cb->on_error(s, status);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    struct stream *s = h->data;
    if (s->closing)
        return;
    if (nread == UV_ENOBUFS) {
        /* No room until the held frame is released (or the budget frees up). */
        s->starved = true;
        update_reading(s);
        return;
    }
    if (nread < 0) {
        fail_read(s, (int)nread);
        return;
    }
    if (nread == 0)
        return;
    if (s->tls && tls_on_read(s, (const uint8_t *)buf->base, (size_t)nread))
        return;
    if (buf->base == (char *)s->ctx->shared) {
        /* At most STREAM_SHARED_BUF bytes, which the budget never refuses. */
        if (make_room(s, (size_t)nread) < 0) {
            fail_read(s, -ENOMEM);
            return;
        }
        memcpy(s->rbuf.data + s->rbuf.len, buf->base, (size_t)nread);
    }
    s->rbuf.len += (size_t)nread;
    process(s);
}

/* Starts or stops uv reads to match what the stream wants and has room for. */
static void update_reading(struct stream *s)
{
    if (s->closing)
        return;
    if (s->starved && !s->held_len)
        s->starved = false;
    bool want = s->want_read && !s->budget_wait && !s->starved;
    if (want && !s->reading) {
        if (uv_read_start(&s->h.stream, on_alloc, on_read) == 0)
            s->reading = true;
    } else if (!want && s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = false;
    }
}

/* The frame loop: hands whole frames to the owner, iteratively, up to the per-wakeup cap. */
static void process(struct stream *s)
{
    if (s->in_loop || s->closing)
        return;
    bool eof = false;
    if (s->tls && s->tls->done && !s->held_len) {
        int rc = tls_pull(s);
        if (rc == UV_EOF) {
            eof = true; /* close_notify: the frames that came before it are delivered first */
        } else if (rc < 0) {
            fail_read(s, rc);
            return;
        }
    }
    s->in_loop = true;
    int n = 0;
    while (!s->closing && !s->held_len && s->want_read) {
        size_t avail = s->rbuf.len - s->rpos;
        if (avail == 0) {
            s->partial = false;
            break;
        }
        const uint8_t *at = s->rbuf.data + s->rpos;
        struct wire_header h;
        int rc = wire_header_parse(at, avail, s->max_frame, &h);
        if (rc == -EAGAIN) {
            if (!s->partial) {
                s->partial = true;
                if (s->cb->on_frame_begin)
                    s->cb->on_frame_begin(s);
            }
            break;
        }
        if (rc < 0) {
            s->in_loop = false;
            fail_read(s, -EMSGSIZE);
            return;
        }
        if (!s->header_seen) {
            s->header_seen = true;
            if (s->cb->on_header && s->cb->on_header(s, &h, at) < 0)
                break; /* the owner refused the frame and closed the stream */
        }
        if (avail < (size_t)h.length) {
            bool begun = s->partial;
            s->partial = true;
            rc = make_room(s, (size_t)h.length);
            if (rc == -ENOMEM) {
                s->in_loop = false;
                fail_read(s, -ENOMEM);
                return;
            }
            if (!begun && s->cb->on_frame_begin)
                s->cb->on_frame_begin(s);
            break;
        }
        if (++n > STREAM_FRAMES_PER_WAKEUP) {
            defer(s);
            break;
        }
        s->partial = false;
        s->header_seen = false;
        rc = s->cb->on_frame(s, s->rbuf.data + s->rpos, (size_t)h.length);
        if (rc < 0)
            break;
        if (rc == STREAM_HOLD) {
            s->held_len = (size_t)h.length;
            break;
        }
        s->rpos += (size_t)h.length;
    }
    s->in_loop = false;
    if (s->closing)
        return;
    compact(s);
    update_reading(s);
    if (eof && !s->held_len) {
        fail_read(s, UV_EOF);
        return;
    }
    /* Records already read from the socket and not decrypted yet will bring no new read event:
     * go on from the loop while the last pull stopped for its cap rather than for want of bytes. */
    if (s->tls && s->tls->more && !s->held_len && !s->budget_wait)
        defer(s);
}

int stream_read_start(struct stream *s)
{
    s->want_read = true;
    update_reading(s);
    if (!s->reading && !s->budget_wait && !s->starved)
        return -EIO;
    if (s->rbuf.len > s->rpos)
        defer(s);
    return 0;
}

void stream_release(struct stream *s)
{
    if (!s->held_len || s->closing)
        return;
    s->rpos += s->held_len;
    s->held_len = 0;
    defer(s);
    update_reading(s);
}

/* --- writing ----------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct stream *s = req->data;
    s->write_pending = false;
    if (status == UV_ECANCELED || s->closing)
        return;
    s->cb->on_written(s, status);
}

int stream_write(struct stream *s, const uv_buf_t *bufs, unsigned n)
{
    if (s->closing)
        return -ECANCELED;
    if (s->write_pending || s->write_done)
        return -EBUSY;
    if (n > STREAM_MAX_BUFS)
        return -EINVAL;
    if (s->tls)
        return tls_write(s, bufs, n);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int done = uv_try_write(&s->h.stream, bufs, n);
    if (done < 0 && done != UV_EAGAIN)
        return done;
    if (done < 0)
        done = 0;
    if ((size_t)done == total) {
        s->write_done = true;
        defer(s);
        return 0;
    }
    /* Queue what is left; uv_write copies the buffer array, not the bytes. */
    uv_buf_t rest[STREAM_MAX_BUFS];
    unsigned m = 0;
    size_t skip = (size_t)done;
    for (unsigned i = 0; i < n; i++) {
        if (skip >= bufs[i].len) {
            skip -= bufs[i].len;
            continue;
        }
        rest[m++] = uv_buf_init(bufs[i].base + skip, (unsigned)(bufs[i].len - skip));
        skip = 0;
    }
    s->wreq.data = s;
    int rc = uv_write(&s->wreq, &s->h.stream, rest, m, on_write);
    if (rc < 0)
        return rc;
    s->write_pending = true;
    return 0;
}

/* --- set-up, connect, close ------------------------------------------------------------- */

static void init_common(struct stream_ctx *ctx, struct stream *s, const struct stream_cb *cb,
                        void *owner, int32_t max_frame)
{
    memset(s, 0, sizeof(*s));
    s->ctx = ctx;
    s->cb = cb;
    s->owner = owner;
    s->max_frame = max_frame;
    s->keep_buf = KEEP_EMPTY_BUF;
    list_init(&s->link);
    s->h.handle.data = s;
}

int stream_init_tcp(struct stream_ctx *ctx, struct stream *s, const struct stream_cb *cb,
                    void *owner, int32_t max_frame)
{
    init_common(ctx, s, cb, owner, max_frame);
    s->is_tcp = true;
    int rc = uv_tcp_init(ctx->loop, &s->h.tcp);
    s->h.handle.data = s;
    return rc;
}

int stream_init_pipe(struct stream_ctx *ctx, struct stream *s, const struct stream_cb *cb,
                     void *owner, int32_t max_frame)
{
    init_common(ctx, s, cb, owner, max_frame);
    int rc = uv_pipe_init(ctx->loop, &s->h.pipe, 0);
    s->h.handle.data = s;
    return rc;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct stream *s = req->data;
    if (status == UV_ECANCELED || s->closing)
        return;
    if (status == 0)
        uv_tcp_nodelay(&s->h.tcp, 1);
    s->cb->on_connect(s, status);
}

int stream_connect(struct stream *s, uv_connect_t *req, const struct sockaddr *addr)
{
    req->data = s;
    return uv_tcp_connect(req, &s->h.tcp, addr, on_connect);
}

int stream_tcp_tune(struct stream *s, int keepalive_s, int user_timeout_ms)
{
    if (!s->is_tcp)
        return 0;
    int rc = uv_tcp_keepalive(&s->h.tcp, keepalive_s > 0, keepalive_s > 0 ? keepalive_s : 0);
    if (rc < 0)
        return rc;
    uv_os_fd_t fd;
    if (uv_fileno(&s->h.handle, &fd) < 0)
        return 0;
    unsigned int v = (unsigned int)(user_timeout_ms > 0 ? user_timeout_ms : 0);
    if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v)) == -1)
        return -errno;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct stream *s = h->data;
    tls_free(s);
    buf_free(s);
    s->cb->on_closed(s);
}

void stream_close(struct stream *s)
{
    if (s->closing)
        return;
    tls_close(s);
    s->closing = true;
    s->want_read = false;
    s->held_len = 0;
    list_leave(s);
    s->budget_wait = false;
    uv_close(&s->h.handle, on_closed);
}

/* --- TLS --------------------------------------------------------------------------------- */

/* Records why a TLS operation failed: OpenSSL's error queue, or the certificate check's verdict. */
static void tls_note_error(struct stream *s, const char *what)
{
    struct stream_tls *t = s->tls;
    char reason[160] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    long v = t->ssl ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(t->error, sizeof(t->error), "%s: certificate verification failed: %s", what,
                 X509_verify_cert_error_string(v));
    else
        snprintf(t->error, sizeof(t->error), "%s: %s", what, reason[0] ? reason : "TLS error");
    ERR_clear_error();
    t->failed = true;
}

/* Moves the ciphertext OpenSSL produced into out. */
static int tls_collect(struct stream *s)
{
    struct stream_tls *t = s->tls;
    BIO *wbio = SSL_get_wbio(t->ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0)
        return 0;
    if (wire_buf_reserve(&t->out, pending) < 0)
        return -ENOMEM;
    int n = BIO_read(wbio, t->out.data + t->out.len, (int)pending);
    if (n > 0)
        t->out.len += (size_t)n;
    return 0;
}

/* Drops the first k bytes of out (written), and completes the owner's write once its part is. */
static void tls_consume(struct stream *s, size_t k)
{
    struct stream_tls *t = s->tls;
    memmove(t->out.data, t->out.data + k, t->out.len - k);
    t->out.len -= k;
    if (!t->owner_pending)
        return;
    t->owner_end = t->owner_end > k ? t->owner_end - k : 0;
    if (t->owner_end == 0) {
        t->owner_pending = false;
        s->write_done = true;
        defer(s);
    }
}

static void tls_flush(struct stream *s);

static void tls_on_write(uv_write_t *req, int status)
{
    struct stream *s = req->data;
    struct stream_tls *t = s->tls;
    if (status == UV_ECANCELED || s->closing || !t)
        return;
    size_t k = t->inflight;
    t->inflight = 0;
    if (status < 0) {
        fail_read(s, status);
        return;
    }
    tls_consume(s, k);
    tls_flush(s);
}

/* Writes what ciphertext there is: at once where the socket takes it, the rest queued. */
static void tls_flush(struct stream *s)
{
    struct stream_tls *t = s->tls;
    /* While a write is in flight its buffer must not move: new ciphertext waits in the BIO. */
    if (!t->ssl || t->inflight || tls_collect(s) < 0 || t->out.len == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)t->out.data, (unsigned)t->out.len);
    int done = uv_try_write(&s->h.stream, &b, 1);
    if (done == UV_EAGAIN)
        done = 0;
    if (done < 0) {
        fail_read(s, done);
        return;
    }
    tls_consume(s, (size_t)done);
    if (t->out.len == 0)
        return;
    t->inflight = t->out.len;
    s->wreq.data = s;
    b = uv_buf_init((char *)t->out.data, (unsigned)t->inflight);
    if (uv_write(&s->wreq, &s->h.stream, &b, 1, tls_on_write) < 0) {
        t->inflight = 0;
        fail_read(s, -EIO);
    }
}

/* Drives the handshake. Returns 0 (done or waiting for bytes) or -EPROTO (failed). */
static int tls_handshake(struct stream *s)
{
    struct stream_tls *t = s->tls;
    ERR_clear_error(); /* SSL_get_error reads the thread's queue: nothing stale may be in it */
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->done = true;
        tls_flush(s);
        if (s->closing)
            return -ECANCELED; /* the flush failed and the owner closed the stream */
        if (s->cb->on_secure)
            s->cb->on_secure(s, 0);
        return 0;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_flush(s);
        return s->closing ? -ECANCELED : 0;
    }
    tls_note_error(s, "TLS handshake");
    tls_flush(s); /* the alert, if any */
    if (s->closing)
        return -EPROTO;
    if (s->cb->on_secure)
        s->cb->on_secure(s, -EPROTO);
    return -EPROTO;
}

/* Pulls plaintext out of OpenSSL into the read buffer, as far as there is room (never moving a
 * held frame). Returns 0, UV_EOF (close_notify) or -EPROTO. */
static int tls_pull(struct stream *s)
{
    struct stream_tls *t = s->tls;
    t->more = false;
    int i;
    for (i = 0; i < STREAM_FRAMES_PER_WAKEUP && !t->failed; i++) {
        size_t spare = s->rbuf.cap - s->rbuf.len;
        if (spare < 4096 && !s->held_len && make_room(s, s->rbuf.len - s->rpos + 16 * 1024) == 0)
            spare = s->rbuf.cap - s->rbuf.len;
        if (spare == 0) {
            /* No room now: stop reading the socket until the owner lets go of its frame (or
             * the budget has room again); either wakes the stream. */
            s->starved = s->held_len != 0;
            break;
        }
        ERR_clear_error();
        int n = SSL_read(t->ssl, s->rbuf.data + s->rbuf.len,
                         spare > INT32_MAX ? INT32_MAX : (int)spare);
        if (n > 0) {
            s->rbuf.len += (size_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            i = -1; /* wants bytes from the socket: nothing is left to pull */
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return UV_EOF;
        tls_note_error(s, "TLS");
        return -EPROTO;
    }
    t->more = i == STREAM_FRAMES_PER_WAKEUP;
    tls_flush(s); /* session tickets, alerts */
    return 0;
}

/* Whether a connection's first bytes open a TLS record (a handshake, protocol 3.x) rather than a
 * MongoDB message: a message whose length happens to start with 0x16 0x03 still carries a known
 * opcode at offset 12, which a ClientHello's random bytes almost never do. */
static bool looks_like_tls(const uint8_t *d, size_t n)
{
    if (d[0] != 0x16 || (n > 1 && d[1] != 0x03))
        return false;
    if (n >= 16) {
        switch (wire_get_i32(d + 12)) {
        case WIRE_OP_MSG:
        case WIRE_OP_QUERY:
        case WIRE_OP_GET_MORE:
        case WIRE_OP_KILL_CURSORS:
        case WIRE_OP_COMPRESSED:
            return false;
        default:
            break;
        }
    }
    return true;
}

/*
 * Takes bytes read from the socket when the stream has TLS state. Returns true when it handled
 * them; false when a sniffing stream turned out to be plaintext (the caller goes on as for any
 * plaintext stream).
 */
static bool tls_on_read(struct stream *s, const uint8_t *data, size_t n)
{
    struct stream_tls *t = s->tls;
    if (t->failed)
        return true;
    if (!t->ssl) {
        if (!looks_like_tls(data, n)) {
            if (t->plain_ok) {
                tls_free(s);
                return false;
            }
            snprintf(t->error, sizeof(t->error), "a plaintext client on a TLS-only port");
            t->failed = true;
            fail_read(s, -EPROTO);
            return true;
        }
        SSL *ssl = SSL_new(t->sniff_ctx);
        BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
        if (!ssl || !r || !w) {
            SSL_free(ssl);
            BIO_free(r);
            BIO_free(w);
            fail_read(s, -ENOMEM);
            return true;
        }
        SSL_set_bio(ssl, r, w);
        SSL_set_accept_state(ssl);
        t->ssl = ssl;
    }
    if (BIO_write(SSL_get_rbio(t->ssl), data, (int)n) != (int)n) {
        fail_read(s, -ENOMEM);
        return true;
    }
    if (s->held_len && BIO_ctrl_pending(SSL_get_rbio(t->ssl)) >= STREAM_SHARED_BUF) {
        /* The owner holds a frame and the ciphertext behind it piles up: read no more from
         * the socket until the frame is released (as a plaintext stream does). */
        s->starved = true;
        update_reading(s);
    }
    if (!t->done) {
        if (tls_handshake(s) < 0) {
            if (!s->closing)
                fail_read(s, -EPROTO);
            return true;
        }
        if (!t->done || s->closing)
            return true;
    }
    process(s);
    return true;
}

static int tls_write(struct stream *s, const uv_buf_t *bufs, unsigned n)
{
    struct stream_tls *t = s->tls;
    if (!t->done || t->failed)
        return -ENOTCONN;
    if (t->owner_pending)
        return -EBUSY;
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len == 0)
            continue;
        /* A memory BIO takes everything, so SSL_write writes the whole buffer. */
        ERR_clear_error();
        int w = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        if (w <= 0) {
            tls_note_error(s, "TLS write");
            return -EPROTO;
        }
    }
    t->owner_pending = true;
    t->owner_end = t->out.len + BIO_ctrl_pending(SSL_get_wbio(t->ssl));
    if (t->owner_end == 0) {
        t->owner_pending = false;
        s->write_done = true;
        defer(s);
        return 0;
    }
    tls_flush(s);
    return 0;
}

/* Sends close_notify on the way out, as far as the socket takes it at once. */
static void tls_close(struct stream *s)
{
    struct stream_tls *t = s->tls;
    if (!t || !t->ssl || !t->done || t->failed || s->closing)
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    if (!t->inflight && tls_collect(s) == 0 && t->out.len) {
        uv_buf_t b = uv_buf_init((char *)t->out.data, (unsigned)t->out.len);
        (void)uv_try_write(&s->h.stream, &b, 1);
    }
}

static void tls_free(struct stream *s)
{
    struct stream_tls *t = s->tls;
    if (!t)
        return;
    s->tls = NULL;
    SSL_free(t->ssl);
    SSL_CTX_free(t->sniff_ctx);
    wire_buf_free(&t->out);
    free(t);
}

int stream_tls_client(struct stream *s, SSL *ssl)
{
    struct stream_tls *t = calloc(1, sizeof(*t));
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!t || !r || !w) {
        free(t);
        BIO_free(r);
        BIO_free(w);
        SSL_free(ssl);
        return -ENOMEM;
    }
    SSL_set_bio(ssl, r, w);
    SSL_set_connect_state(ssl);
    t->ssl = ssl;
    s->tls = t;
    return tls_handshake(s);
}

int stream_tls_accept(struct stream *s, SSL_CTX *ctx, bool plain_ok)
{
    struct stream_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    SSL_CTX_up_ref(ctx);
    t->sniff_ctx = ctx;
    t->plain_ok = plain_ok;
    s->tls = t;
    return 0;
}

bool stream_is_tls(const struct stream *s)
{
    return s->tls && s->tls->ssl;
}

bool stream_tls_pending(const struct stream *s)
{
    return s->tls && !s->tls->done;
}

SSL *stream_ssl(const struct stream *s)
{
    return s->tls ? s->tls->ssl : NULL;
}

const char *stream_tls_error(const struct stream *s)
{
    return s->tls ? s->tls->error : "";
}
