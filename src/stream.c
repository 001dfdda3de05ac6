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

/* An emptied buffer at most this large is kept for the next frame; a larger one is given back,
 * so that an idle connection costs little. */
#define KEEP_EMPTY_BUF 1024
/* Deferred streams handled per check callback; the rest go on at the next loop iteration. */
#define DEFERRED_PER_PASS 4096

static void process(struct stream *s);
static void update_reading(struct stream *s);

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
    if (left == 0 && s->rbuf.cap > KEEP_EMPTY_BUF)
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
    if (s->rbuf.len == s->rpos && !s->held_len) {
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
    if (!s->closing) {
        compact(s);
        update_reading(s);
    }
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
    buf_free(s);
    s->cb->on_closed(s);
}

void stream_close(struct stream *s)
{
    if (s->closing)
        return;
    s->closing = true;
    s->want_read = false;
    s->held_len = 0;
    list_leave(s);
    s->budget_wait = false;
    uv_close(&s->h.handle, on_closed);
}
