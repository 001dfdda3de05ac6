/*
 * check_stream.c: the transport under every socket, driven on a real libuv loop. One end of a
 * socketpair is a stream (uv_pipe_open; one test uses TCP over loopback with uv_tcp_open); raw
 * bytes are written into the other end with write(2).
 *
 * Frames split at every byte boundary arrive whole; pipelined frames arrive in order, at most
 * STREAM_FRAMES_PER_WAKEUP per wakeup and all of them eventually; a held frame stops delivery
 * until stream_release and its bytes do not move while more arrive; a header whose length is
 * outside [16, max_frame] is -EMSGSIZE; on_header may refuse a frame before room is made for it;
 * a write's completion is reported from the loop, never from inside stream_write, and a write of
 * many buffers arrives whole; the memory budget makes a stream wait, unread, until the budget is
 * raised or another stream gives memory back, and that deferred retry runs even when nothing else
 * keeps the loop alive; EOF; stream_close twice, and from inside a callback. Every test ends with
 * every handle closed, nothing charged to the budget, and uv_loop_close() == 0.
 */
#include "stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check_main.h"

#define MAX_ENDS 2
#define MiB      (1024 * 1024)

struct fx;

/* One stream and the raw socket at its other end. */
struct end {
    struct fx *fx;
    struct stream s;
    int peer;
    /* What the owner saw. */
    struct wire_buf got; /* the frames delivered, back to back */
    int frames;
    int32_t next_id; /* the request id the next frame must carry */
    int order_errors;
    int headers;
    int begins;
    int errors;
    int last_error;
    int closed;
    int written;
    int write_status;
    bool in_write;       /* inside stream_write() */
    int written_inside;  /* on_written calls made from inside stream_write() */
    int after_close;     /* callbacks after on_closed */
    const uint8_t *held; /* the frame held, while held */
    size_t held_len;
    /* What the owner does. */
    int hold_at;         /* return STREAM_HOLD for this frame (1-based), 0: never */
    int close_at;        /* close the stream inside on_frame at this frame and return < 0 */
    int refuse_opcode;   /* on_header refuses (and closes) frames with this opcode */
    bool close_on_error; /* on_error closes the stream */
    /* Bytes still to be written into the peer, and bytes read back from it. */
    struct wire_buf out;
    size_t out_off;
    bool drain;
    struct wire_buf peer_got;
};

struct fx {
    uv_loop_t loop;
    struct stream_ctx ctx;
    struct end e[MAX_ENDS];
    int n;
    /* A referenced timer that keeps the loop alive, as the daemon's janitor timer does. */
    bool keepalive;
    uv_timer_t keep;
    /* Wakeup accounting: frames delivered since the last mark, and the most seen between two. */
    bool marks;
    uv_prepare_t prep; /* before each poll */
    uv_check_t mark;   /* after the poll, before the stream context's check */
    int seg_frames;
    int max_seg_frames;
};

/* --- the owner's callbacks ------------------------------------------------------------------ */

static int on_frame(struct stream *s, uint8_t *frame, size_t len)
{
    struct end *e = s->owner;
    if (e->closed)
        e->after_close++;
    ck_assert_int_ge(len, 16);
    ck_assert_int_eq(wire_get_i32(frame), (int32_t)len);
    int32_t id = wire_get_i32(frame + 4);
    if (id != e->next_id)
        e->order_errors++;
    e->next_id = id + 1;
    ck_assert_int_eq(wire_buf_append(&e->got, frame, len), 0);
    e->frames++;
    e->fx->seg_frames++;
    if (e->fx->seg_frames > e->fx->max_seg_frames)
        e->fx->max_seg_frames = e->fx->seg_frames;
    if (e->close_at == e->frames) {
        stream_close(s);
        return -ECANCELED;
    }
    if (e->hold_at == e->frames) {
        e->held = frame;
        e->held_len = len;
        return STREAM_HOLD;
    }
    return STREAM_NEXT;
}

static int on_header(struct stream *s, const struct wire_header *h, const uint8_t *bytes)
{
    struct end *e = s->owner;
    e->headers++;
    ck_assert_int_eq(wire_get_i32(bytes), h->length);
    ck_assert_int_eq(wire_get_i32(bytes + 12), h->opcode);
    if (e->refuse_opcode && h->opcode == e->refuse_opcode) {
        stream_close(s);
        return -EPROTO;
    }
    return 0;
}

static void on_frame_begin(struct stream *s)
{
    struct end *e = s->owner;
    e->begins++;
}

static void on_error(struct stream *s, int status)
{
    struct end *e = s->owner;
    if (e->closed)
        e->after_close++;
    e->errors++;
    e->last_error = status;
    if (e->close_on_error)
        stream_close(s);
}

static void on_written(struct stream *s, int status)
{
    struct end *e = s->owner;
    if (e->closed)
        e->after_close++;
    if (e->in_write)
        e->written_inside++;
    e->written++;
    e->write_status = status;
}

static void on_closed(struct stream *s)
{
    struct end *e = s->owner;
    e->closed++;
}

static const struct stream_cb CB = {
    .on_frame = on_frame,
    .on_header = on_header,
    .on_frame_begin = on_frame_begin,
    .on_error = on_error,
    .on_written = on_written,
    .on_closed = on_closed,
};

/* --- the fixture ------------------------------------------------------------------------------ */

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* Opens end e as a pipe stream on one end of a socketpair and starts reading. */
static void end_open(struct fx *f, struct end *e, int32_t max_frame)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    e->fx = f;
    e->next_id = 1;
    ck_assert_int_eq(stream_init_pipe(&f->ctx, &e->s, &CB, e, max_frame), 0);
    ck_assert_int_eq(uv_pipe_open(&e->s.h.pipe, sv[0]), 0);
    e->peer = sv[1];
    set_nonblocking(e->peer);
    ck_assert_int_eq(stream_read_start(&e->s), 0);
}

static void on_keep(uv_timer_t *t)
{
    (void)t;
}

/* A loop, a stream context with the given budget, and n streams. With keepalive, a referenced
 * timer keeps the loop alive whatever the streams do, as the daemon's janitor timer does. */
static void fx_init_loop(struct fx *f, int n, size_t budget, int32_t max_frame, bool keepalive)
{
    memset(f, 0, sizeof(*f));
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    ck_assert_int_eq(stream_ctx_init(&f->ctx, &f->loop, budget), 0);
    f->keepalive = keepalive;
    if (keepalive) {
        uv_timer_init(&f->loop, &f->keep);
        uv_timer_start(&f->keep, on_keep, 3600 * 1000, 3600 * 1000);
    }
    f->n = n;
    for (int i = 0; i < n; i++)
        end_open(f, &f->e[i], max_frame);
}

static void fx_init(struct fx *f, int n, size_t budget, int32_t max_frame)
{
    fx_init_loop(f, n, budget, max_frame, true);
}

static void on_mark(uv_check_t *h)
{
    struct fx *f = h->data;
    f->seg_frames = 0;
}

static void on_prep(uv_prepare_t *h)
{
    struct fx *f = h->data;
    f->seg_frames = 0;
}

/* Starts counting frames per wakeup: a mark before each poll (frames read in the poll follow it)
 * and one after the poll that runs before the context's own check (started earlier; libuv runs
 * the check handle started last first), so that each of the stream's passes is counted alone. */
static void fx_marks(struct fx *f)
{
    f->marks = true;
    uv_prepare_init(&f->loop, &f->prep);
    uv_check_init(&f->loop, &f->mark);
    f->prep.data = f;
    f->mark.data = f;
    uv_prepare_start(&f->prep, on_prep);
    uv_check_start(&f->mark, on_mark);
    uv_unref((uv_handle_t *)&f->prep);
    uv_unref((uv_handle_t *)&f->mark);
}

/* Writes what the peer socket takes of e->out, and reads back what the stream wrote. */
static void feed(struct end *e)
{
    while (e->out_off < e->out.len) {
        ssize_t n = write(e->peer, e->out.data + e->out_off, e->out.len - e->out_off);
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "write: %s", strerror(errno));
            break;
        }
        e->out_off += (size_t)n;
    }
    while (e->drain) {
        uint8_t buf[65536];
        ssize_t n = read(e->peer, buf, sizeof(buf));
        if (n <= 0) {
            ck_assert_msg(n == 0 || errno == EAGAIN || errno == EWOULDBLOCK, "read: %s",
                          strerror(errno));
            break;
        }
        ck_assert_int_eq(wire_buf_append(&e->peer_got, buf, (size_t)n), 0);
    }
}

/* Runs `iterations` non-blocking loop iterations, feeding the peers before each. */
static void pump(struct fx *f, int iterations)
{
    for (int i = 0; i < iterations; i++) {
        for (int k = 0; k < f->n; k++)
            if (f->e[k].peer >= 0)
                feed(&f->e[k]);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
}

#define PUMP_UNTIL(f, cond)                                                                        \
    do {                                                                                           \
        int guard_ = 0;                                                                            \
        while (!(cond)) {                                                                          \
            ck_assert_msg(guard_++ < 200000, "never happened: %s", #cond);                         \
            pump((f), 1);                                                                          \
        }                                                                                          \
    } while (0)

/* Queues bytes for the peer to write (feed() writes them as the socket takes them). */
static void queue_bytes(struct end *e, const void *p, size_t n)
{
    ck_assert_int_eq(wire_buf_append(&e->out, p, n), 0);
}

/* Writes n bytes into the peer now; they must fit in the socket buffer. */
static void write_now(struct end *e, const void *p, size_t n)
{
    ck_assert_int_eq(write(e->peer, p, n), (ssize_t)n);
}

static void close_peer(struct end *e)
{
    if (e->peer >= 0)
        close(e->peer);
    e->peer = -1;
}

/* Closes every stream (a second close of one already closed is a no-op), waits for on_closed,
 * and asserts that nothing is left: no charge, no buffer, no handle. */
static void fx_finish(struct fx *f)
{
    for (int i = 0; i < f->n; i++)
        stream_close(&f->e[i].s);
    for (int i = 0; i < f->n; i++)
        PUMP_UNTIL(f, f->e[i].closed > 0);
    pump(f, 2);
    for (int i = 0; i < f->n; i++) {
        struct end *e = &f->e[i];
        ck_assert_int_eq(e->closed, 1);
        ck_assert_int_eq(e->after_close, 0);
        ck_assert_int_eq(e->written_inside, 0);
        close_peer(e);
        wire_buf_free(&e->got);
        wire_buf_free(&e->out);
        wire_buf_free(&e->peer_got);
    }
    ck_assert_uint_eq(f->ctx.budget_used, 0);
    ck_assert_uint_eq(f->ctx.buffered, 0);
    if (f->keepalive)
        uv_close((uv_handle_t *)&f->keep, NULL);
    if (f->marks) {
        uv_close((uv_handle_t *)&f->prep, NULL);
        uv_close((uv_handle_t *)&f->mark, NULL);
    }
    stream_ctx_close(&f->ctx);
    ck_assert_int_eq(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    free(f->ctx.shared); /* as proxy_free does: stream_ctx_close only closes the handles */
    f->ctx.shared = NULL;
    ck_assert_int_eq(uv_loop_close(&f->loop), 0);
}

/* Appends a frame of len bytes (len >= 16) with request id `id`: a header, then a body whose
 * bytes depend on id and position. */
static void put_frame(struct wire_buf *b, int32_t len, int32_t id, int32_t opcode)
{
    uint8_t h[16];
    struct wire_header hd = {len, id, 0, opcode};
    wire_header_write(h, &hd);
    ck_assert_int_eq(wire_buf_append(b, h, 16), 0);
    ck_assert_int_eq(wire_buf_reserve(b, (size_t)len - 16), 0);
    for (int32_t i = 16; i < len; i++)
        b->data[b->len++] = (uint8_t)(id * 7 + i * 13);
}

/* --- framing --------------------------------------------------------------------------------- */

/* Three frames (a bare header among them) and where each ends. */
static void three_frames(struct wire_buf *b, size_t ends[4])
{
    wire_buf_reset(b);
    put_frame(b, 40, 1, WIRE_OP_MSG);
    ends[0] = b->len;
    put_frame(b, 16, 2, WIRE_OP_MSG);
    ends[1] = b->len;
    put_frame(b, 300, 3, WIRE_OP_MSG);
    ends[2] = b->len;
    put_frame(b, 17, 4, WIRE_OP_REPLY);
    ends[3] = b->len;
}

START_TEST(split_at_every_boundary)
{
    struct wire_buf all = {0};
    size_t ends[4];
    three_frames(&all, ends);
    for (size_t k = 1; k < all.len; k++) {
        struct fx f;
        fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
        struct end *e = &f.e[0];
        write_now(e, all.data, k);
        pump(&f, 3);
        int whole = 0;
        bool boundary = false;
        for (int i = 0; i < 4; i++) {
            whole += ends[i] <= k;
            boundary |= ends[i] == k;
        }
        ck_assert_msg(e->frames == whole, "split at %zu: %d frames, expected %d", k, e->frames,
                      whole);
        ck_assert_msg(stream_partial(&e->s) == !boundary, "split at %zu: partial %d", k,
                      stream_partial(&e->s));
        ck_assert_int_eq(e->begins, boundary ? 0 : 1);
        ck_assert_uint_eq(e->got.len, whole ? ends[whole - 1] : 0);
        write_now(e, all.data + k, all.len - k);
        pump(&f, 3);
        ck_assert_int_eq(e->frames, 4);
        ck_assert_int_eq(e->order_errors, 0);
        ck_assert_int_eq(e->errors, 0);
        ck_assert_int_eq(e->headers, 4);
        ck_assert(!stream_partial(&e->s));
        ck_assert_uint_eq(e->got.len, all.len);
        ck_assert_mem_eq(e->got.data, all.data, all.len);
        ck_assert_uint_eq(stream_pending_bytes(&e->s), 0);
        fx_finish(&f);
    }
    wire_buf_free(&all);
}
END_TEST

START_TEST(byte_by_byte)
{
    struct wire_buf all = {0};
    size_t ends[4];
    three_frames(&all, ends);
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    int next = 0;
    for (size_t k = 0; k < all.len; k++) {
        write_now(e, all.data + k, 1);
        pump(&f, 2);
        if (next < 4 && k + 1 == ends[next])
            next++;
        ck_assert_msg(e->frames == next, "after byte %zu: %d frames, expected %d", k, e->frames,
                      next);
    }
    ck_assert_int_eq(e->frames, 4);
    ck_assert_int_eq(e->begins, 4); /* each frame was begun and not whole at some point */
    ck_assert_int_eq(e->headers, 4);
    ck_assert_int_eq(e->order_errors, 0);
    ck_assert_mem_eq(e->got.data, all.data, all.len);
    fx_finish(&f);
    wire_buf_free(&all);
}
END_TEST

START_TEST(pipelined_in_order_capped_per_wakeup)
{
    const int n = 5 * STREAM_FRAMES_PER_WAKEUP + 7;
    struct wire_buf all = {0};
    for (int i = 1; i <= n; i++)
        put_frame(&all, 16 + (i % 9), i, WIRE_OP_MSG);
    ck_assert_uint_lt(all.len, STREAM_SHARED_BUF); /* one read brings them all */
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    fx_marks(&f);
    struct end *e = &f.e[0];
    write_now(e, all.data, all.len);
    int iterations = 0, max_per_iteration = 0;
    while (e->frames < n) {
        ck_assert_int_lt(iterations, 10 * n);
        int before = e->frames;
        uv_run(&f.loop, UV_RUN_ONCE);
        iterations++;
        int got = e->frames - before;
        if (got > max_per_iteration)
            max_per_iteration = got;
    }
    ck_assert_int_eq(e->frames, n);
    ck_assert_int_eq(e->order_errors, 0);
    ck_assert_mem_eq(e->got.data, all.data, all.len);
    /* Each pass of the frame loop (the read callback's, each deferred one) hands over at most
     * STREAM_FRAMES_PER_WAKEUP frames... */
    ck_assert_msg(f.max_seg_frames <= STREAM_FRAMES_PER_WAKEUP, "%d frames in one wakeup (cap %d)",
                  f.max_seg_frames, STREAM_FRAMES_PER_WAKEUP);
    /* ...and the rest wait for later loop iterations: one iteration (its poll, then its check)
     * runs at most two passes of one stream. */
    ck_assert_msg(max_per_iteration <= 2 * STREAM_FRAMES_PER_WAKEUP,
                  "%d frames in one loop iteration; %d iterations for %d frames", max_per_iteration,
                  iterations, n);
    ck_assert_int_ge(iterations,
                     (n + 2 * STREAM_FRAMES_PER_WAKEUP - 1) / (2 * STREAM_FRAMES_PER_WAKEUP));
    ck_assert_uint_eq(stream_pending_bytes(&e->s), 0);
    fx_finish(&f);
    wire_buf_free(&all);
}
END_TEST

START_TEST(hold_until_release)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    e->hold_at = 1;
    struct wire_buf all = {0};
    for (int i = 1; i <= 5; i++)
        put_frame(&all, 100, i, WIRE_OP_MSG);
    write_now(e, all.data, all.len);
    pump(&f, 3);
    ck_assert_int_eq(e->frames, 1);
    ck_assert_ptr_nonnull(e->held);
    ck_assert_uint_eq(e->held_len, 100);
    uint8_t copy[100];
    memcpy(copy, e->held, 100);
    ck_assert_mem_eq(copy, all.data, 100);
    size_t pending = stream_pending_bytes(&e->s);
    ck_assert_uint_eq(pending, 500); /* the held frame and the four behind it */

    /* Much more arrives while the frame is held: nothing is delivered, the held bytes stay put
     * (a moved or reallocated buffer would change them, or trip ASan on the old pointer). */
    const int more = 20000; /* 2 MB: more than a socketpair buffers */
    for (int i = 6; i < 6 + more; i++)
        put_frame(&all, 100, i, WIRE_OP_MSG);
    queue_bytes(e, all.data + 500, all.len - 500);
    for (int i = 0; i < 50; i++) {
        pump(&f, 1);
        ck_assert_int_eq(e->frames, 1);
        ck_assert_mem_eq(e->held, copy, 100);
    }
    ck_assert_uint_gt(stream_pending_bytes(&e->s), pending); /* bytes did arrive meanwhile */
    ck_assert_uint_lt(e->out_off, e->out.len);               /* and reading stopped */
    ck_assert_int_eq(e->errors, 0);

    /* Release: the loop goes on, from the loop, not from inside stream_release. */
    e->hold_at = 0;
    stream_release(&e->s);
    ck_assert_int_eq(e->frames, 1);
    stream_release(&e->s); /* nothing held any more: a no-op */
    PUMP_UNTIL(&f, e->frames == 5 + more);
    ck_assert_int_eq(e->order_errors, 0);
    ck_assert_uint_eq(e->got.len, all.len);
    ck_assert_mem_eq(e->got.data, all.data, all.len);

    /* Holding a later frame: the ones behind it wait again. */
    e->hold_at = e->frames + 2;
    wire_buf_reset(&all);
    for (int i = 6 + more; i < 6 + more + 4; i++)
        put_frame(&all, 64, i, WIRE_OP_MSG);
    write_now(e, all.data, all.len);
    pump(&f, 5);
    ck_assert_int_eq(e->frames, 5 + more + 2);
    stream_release(&e->s);
    pump(&f, 5);
    ck_assert_int_eq(e->frames, 5 + more + 4);
    ck_assert_int_eq(e->order_errors, 0);
    fx_finish(&f);
    wire_buf_free(&all);
}
END_TEST

/* Writes a bare header announcing len bytes into a fresh stream with max_frame 1 MiB and returns
 * what happened. */
static void bad_length(int32_t len)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, MiB);
    struct end *e = &f.e[0];
    e->close_on_error = true;
    /* A good frame first: it is delivered before the bad header is seen. */
    struct wire_buf b = {0};
    put_frame(&b, 20, 1, WIRE_OP_MSG);
    uint8_t h[16];
    struct wire_header hd = {len, 2, 0, WIRE_OP_MSG};
    wire_header_write(h, &hd);
    ck_assert_int_eq(wire_buf_append(&b, h, 16), 0);
    write_now(e, b.data, b.len);
    pump(&f, 3);
    ck_assert_int_eq(e->frames, 1);
    ck_assert_msg(e->errors == 1, "length %d: %d errors", len, e->errors);
    ck_assert_int_eq(e->last_error, -EMSGSIZE);
    ck_assert_int_eq(e->headers, 1); /* the bad one never reached on_header */
    ck_assert_uint_eq(f.ctx.budget_used, 0);
    ck_assert_int_eq(e->closed, 1);
    fx_finish(&f);
    wire_buf_free(&b);
}

START_TEST(header_length_out_of_range)
{
    bad_length(15);
    bad_length(0);
    bad_length(-1);
    bad_length(INT32_MIN);
    bad_length(MiB + 1);
    bad_length(INT32_MAX);

    /* Exactly max_frame is fine: the header is accepted and the body awaited. */
    struct fx f;
    fx_init(&f, 1, 64 * MiB, MiB);
    struct end *e = &f.e[0];
    uint8_t h[16];
    struct wire_header hd = {MiB, 1, 0, WIRE_OP_MSG};
    wire_header_write(h, &hd);
    write_now(e, h, 16);
    pump(&f, 3);
    ck_assert_int_eq(e->errors, 0);
    ck_assert_int_eq(e->headers, 1);
    ck_assert_int_eq(e->begins, 1);
    ck_assert(stream_partial(&e->s));
    /* The owner sees no error until it closes; EOF mid-frame is an error like any other. */
    close_peer(e);
    pump(&f, 3);
    ck_assert_int_eq(e->errors, 1);
    ck_assert_int_eq(e->last_error, UV_EOF);
    ck_assert_int_eq(e->frames, 0);
    fx_finish(&f);
}
END_TEST

START_TEST(on_header_refuses)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    e->refuse_opcode = WIRE_OP_COMPRESSED;
    struct wire_buf b = {0};
    put_frame(&b, 50, 1, WIRE_OP_MSG);
    /* A refused header announcing 40 MB, and a few of its bytes. */
    uint8_t h[16 + 64];
    memset(h, 0xab, sizeof(h));
    struct wire_header hd = {40 * 1000 * 1000, 2, 0, WIRE_OP_COMPRESSED};
    wire_header_write(h, &hd);
    ck_assert_int_eq(wire_buf_append(&b, h, sizeof(h)), 0);
    write_now(e, b.data, b.len);
    pump(&f, 3);
    ck_assert_int_eq(e->frames, 1);
    ck_assert_int_eq(e->headers, 2);
    ck_assert_int_eq(e->errors, 0);
    ck_assert_int_eq(e->closed, 1);
    /* No room was made for it: nothing charged, nothing near its size allocated. */
    ck_assert_uint_eq(f.ctx.budget_used, 0);
    ck_assert_uint_lt(f.ctx.buffered, 64 * 1024);
    ck_assert_uint_eq(f.ctx.budget_waits, 0);
    fx_finish(&f);
    wire_buf_free(&b);
}
END_TEST

/* --- writing ------------------------------------------------------------------------------- */

/* Calls stream_write with the in_write flag up around it. */
static int write_flagged(struct end *e, const uv_buf_t *bufs, unsigned n)
{
    e->in_write = true;
    int rc = stream_write(&e->s, bufs, n);
    e->in_write = false;
    return rc;
}

START_TEST(write_completion_from_loop)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    e->drain = true;

    /* A small write completes at once in the socket, yet is reported from the loop. */
    char a[] = "hello, ", b[] = "world";
    uv_buf_t bufs[2] = {uv_buf_init(a, 7), uv_buf_init(b, 5)};
    ck_assert_int_eq(write_flagged(e, bufs, 2), 0);
    ck_assert_int_eq(e->written, 0);
    ck_assert_int_eq(write_flagged(e, bufs, 2), -EBUSY); /* one at a time */
    pump(&f, 2);
    ck_assert_int_eq(e->written, 1);
    ck_assert_int_eq(e->write_status, 0);
    ck_assert_int_eq(e->written_inside, 0);
    PUMP_UNTIL(&f, e->peer_got.len == 12);
    ck_assert_mem_eq(e->peer_got.data, "hello, world", 12);

    /* A write larger than the socket takes: queued, completed later, bytes intact and in order. */
    size_t big = 6 * MiB;
    uint8_t *p = malloc(big);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 13);
    uv_buf_t bb[3] = {uv_buf_init((char *)p, 1000), uv_buf_init((char *)p + 1000, MiB),
                      uv_buf_init((char *)p + 1000 + MiB, (unsigned)(big - 1000 - MiB))};
    wire_buf_reset(&e->peer_got);
    ck_assert_int_eq(write_flagged(e, bb, 3), 0);
    ck_assert_int_eq(e->written, 1);
    ck_assert_int_eq(write_flagged(e, bufs, 1), -EBUSY);
    PUMP_UNTIL(&f, e->written == 2);
    ck_assert_int_eq(e->write_status, 0);
    PUMP_UNTIL(&f, e->peer_got.len == big);
    ck_assert_mem_eq(e->peer_got.data, p, big);
    ck_assert_int_eq(e->written_inside, 0);

    /* Frames still flow while writing. */
    struct wire_buf fr = {0};
    put_frame(&fr, 30, 1, WIRE_OP_MSG);
    write_now(e, fr.data, fr.len);
    ck_assert_int_eq(write_flagged(e, bufs, 2), 0);
    pump(&f, 3);
    ck_assert_int_eq(e->frames, 1);
    ck_assert_int_eq(e->written, 3);

    /* After close: refused, and nothing more is reported. */
    stream_close(&e->s);
    ck_assert_int_eq(write_flagged(e, bufs, 2), -ECANCELED);
    fx_finish(&f);
    ck_assert_int_eq(e->written, 3);
    free(p);
    wire_buf_free(&fr);
}
END_TEST

START_TEST(write_many_buffers)
{
    /* stream_write takes n buffers, with no limit said. More than the socket takes at once, in
     * eight buffers: every byte arrives, in order, before on_written reports success. */
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    e->drain = true;
    const unsigned nb = 8;
    size_t each = MiB / 2, big = nb * each;
    uint8_t *p = malloc(big);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 11);
    uv_buf_t bufs[8];
    for (unsigned i = 0; i < nb; i++)
        bufs[i] = uv_buf_init((char *)p + i * each, (unsigned)each);
    ck_assert_int_eq(write_flagged(e, bufs, nb), 0);
    PUMP_UNTIL(&f, e->written == 1);
    ck_assert_int_eq(e->write_status, 0);
    pump(&f, 20);
    ck_assert_msg(e->peer_got.len == big, "%zu of %zu bytes arrived", e->peer_got.len, big);
    ck_assert_mem_eq(e->peer_got.data, p, big);
    fx_finish(&f);
    free(p);
}
END_TEST

START_TEST(close_with_write_due)
{
    /* A write finished at once and its report is due from the loop when the owner closes: the
     * report is dropped, on_closed comes once, and nothing comes after it. */
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    char a[] = "x";
    uv_buf_t buf = uv_buf_init(a, 1);
    ck_assert_int_eq(write_flagged(e, &buf, 1), 0);
    stream_close(&e->s);
    pump(&f, 3);
    ck_assert_int_eq(e->closed, 1);
    ck_assert_int_eq(e->written, 0);
    fx_finish(&f);
}
END_TEST

/* --- the memory budget ---------------------------------------------------------------------- */

START_TEST(budget_wait_then_raised)
{
    struct fx f;
    fx_init(&f, 1, MiB, 16 * MiB);
    struct end *e = &f.e[0];
    struct wire_buf big = {0};
    put_frame(&big, 4 * MiB, 1, WIRE_OP_MSG);
    write_now(e, big.data, 1000);
    pump(&f, 3);
    /* The header is within max_frame, but room for the frame would pass the budget: the stream
     * waits, unread. */
    ck_assert_uint_eq(f.ctx.budget_waits, 1);
    ck_assert_int_eq(e->frames, 0);
    ck_assert_int_eq(e->errors, 0);
    ck_assert_int_eq(e->headers, 1);
    ck_assert_int_eq(e->begins, 1);
    ck_assert(stream_partial(&e->s));
    ck_assert(e->s.budget_wait);
    ck_assert(!e->s.reading);
    ck_assert_uint_le(f.ctx.budget_used, MiB);
    ck_assert_uint_eq(stream_pending_bytes(&e->s), 1000);
    write_now(e, big.data + 1000, 20000);
    pump(&f, 10);
    ck_assert_uint_eq(stream_pending_bytes(&e->s), 1000); /* no read */
    ck_assert_uint_eq(f.ctx.budget_waits, 1);
    ck_assert_int_eq(e->frames, 0);

    /* A reload raises the budget: the frame is read and delivered whole. */
    queue_bytes(e, big.data + 21000, big.len - 21000);
    stream_ctx_set_budget(&f.ctx, 8 * MiB);
    ck_assert_uint_eq(f.ctx.budget_max, 8 * MiB);
    PUMP_UNTIL(&f, e->frames == 1);
    ck_assert_uint_eq(e->got.len, big.len);
    ck_assert_mem_eq(e->got.data, big.data, big.len);
    ck_assert_uint_eq(f.ctx.budget_waits, 1);
    ck_assert_int_eq(e->headers, 1); /* the header was judged once */
    /* The frame's buffer is given back once the frame is done with. */
    ck_assert_uint_eq(f.ctx.budget_used, 0);
    /* Small frames go on under the same budget. */
    struct wire_buf small = {0};
    put_frame(&small, 100, 2, WIRE_OP_MSG);
    write_now(e, small.data, small.len);
    pump(&f, 3);
    ck_assert_int_eq(e->frames, 2);
    fx_finish(&f);
    wire_buf_free(&big);
    wire_buf_free(&small);
}
END_TEST

START_TEST(budget_refund_wakes_waiter)
{
    /* Two streams share a 5 MiB budget; A holds a 4 MiB frame, B's 4 MiB frame waits until A
     * gives its memory back. */
    struct fx f;
    fx_init(&f, 2, 5 * MiB, 16 * MiB);
    struct end *a = &f.e[0], *b = &f.e[1];
    a->hold_at = 1;
    struct wire_buf fa = {0}, fb = {0};
    put_frame(&fa, 4 * MiB, 1, WIRE_OP_MSG);
    put_frame(&fb, 4 * MiB, 1, WIRE_OP_MSG);
    queue_bytes(a, fa.data, fa.len);
    PUMP_UNTIL(&f, a->frames == 1);
    ck_assert_ptr_nonnull(a->held);
    ck_assert_uint_ge(f.ctx.budget_used, 4 * MiB);
    ck_assert_uint_eq(f.ctx.budget_waits, 0);

    queue_bytes(b, fb.data, fb.len);
    pump(&f, 20);
    ck_assert_uint_eq(f.ctx.budget_waits, 1);
    ck_assert(b->s.budget_wait);
    ck_assert_int_eq(b->frames, 0);
    ck_assert_uint_le(f.ctx.budget_used, 5 * MiB);

    /* A's frame is done: its buffer is given back and B goes on. */
    ck_assert_mem_eq(a->held, fa.data, fa.len);
    a->hold_at = 0;
    stream_release(&a->s);
    PUMP_UNTIL(&f, b->frames == 1);
    ck_assert_mem_eq(b->got.data, fb.data, fb.len);
    ck_assert_uint_eq(f.ctx.budget_used, 0);
    fx_finish(&f);
    wire_buf_free(&fa);
    wire_buf_free(&fb);
}
END_TEST

START_TEST(deferred_work_keeps_loop_alive)
{
    /* stream.c: the context's check and idle handles do not keep the loop alive by themselves,
     * "streams do". A stream waiting for budget is not reading, so when the budget is raised its
     * deferred retry must still run on a loop where nothing else is referenced. */
    struct fx f;
    fx_init_loop(&f, 1, MiB, 16 * MiB, false);
    struct end *e = &f.e[0];
    struct wire_buf big = {0};
    put_frame(&big, 2 * MiB, 1, WIRE_OP_MSG);
    write_now(e, big.data, 1000);
    pump(&f, 3);
    ck_assert(e->s.budget_wait);
    queue_bytes(e, big.data + 1000, big.len - 1000);
    stream_ctx_set_budget(&f.ctx, 8 * MiB);
    PUMP_UNTIL(&f, e->frames == 1);
    ck_assert_mem_eq(e->got.data, big.data, big.len);
    fx_finish(&f);
    wire_buf_free(&big);
}
END_TEST

/* --- end of stream and close ---------------------------------------------------------------- */

START_TEST(eof_is_an_error)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    struct wire_buf b = {0};
    put_frame(&b, 40, 1, WIRE_OP_MSG);
    put_frame(&b, 40, 2, WIRE_OP_MSG);
    write_now(e, b.data, b.len);
    close_peer(e);
    pump(&f, 5);
    /* The frames before the end are delivered first. */
    ck_assert_int_eq(e->frames, 2);
    ck_assert_int_eq(e->errors, 1);
    ck_assert_int_eq(e->last_error, UV_EOF);
    ck_assert_int_eq(e->closed, 0); /* the owner decides */
    ck_assert(!e->s.reading);
    pump(&f, 3);
    ck_assert_int_eq(e->errors, 1);
    fx_finish(&f);
    wire_buf_free(&b);
}
END_TEST

START_TEST(close_twice_calls_on_closed_once)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    stream_close(&e->s);
    stream_close(&e->s);
    ck_assert_int_eq(e->closed, 0); /* on_closed comes from the loop */
    pump(&f, 3);
    ck_assert_int_eq(e->closed, 1);
    stream_close(&e->s);
    stream_release(&e->s);
    pump(&f, 3);
    ck_assert_int_eq(e->closed, 1);
    fx_finish(&f);
}
END_TEST

START_TEST(close_inside_on_frame)
{
    struct fx f;
    fx_init(&f, 1, 64 * MiB, WIRE_MAX_MESSAGE_SIZE);
    struct end *e = &f.e[0];
    e->close_at = 3;
    struct wire_buf b = {0};
    for (int i = 1; i <= 10; i++)
        put_frame(&b, 32, i, WIRE_OP_MSG);
    write_now(e, b.data, b.len);
    pump(&f, 5);
    ck_assert_int_eq(e->frames, 3);
    ck_assert_int_eq(e->closed, 1);
    ck_assert_int_eq(e->errors, 0);
    fx_finish(&f);
    wire_buf_free(&b);
}
END_TEST

START_TEST(close_while_held_and_budget_waiting)
{
    /* A stream closed while it holds a frame, and another while it waits for budget: each closes
     * once, and what they had is given back. */
    struct fx f;
    fx_init(&f, 2, 5 * MiB, 16 * MiB);
    struct end *a = &f.e[0], *b = &f.e[1];
    a->hold_at = 1;
    struct wire_buf fa = {0};
    put_frame(&fa, 4 * MiB, 1, WIRE_OP_MSG);
    queue_bytes(a, fa.data, fa.len);
    PUMP_UNTIL(&f, a->frames == 1);
    queue_bytes(b, fa.data, 5000);
    pump(&f, 10);
    ck_assert(b->s.budget_wait);
    stream_close(&b->s);
    stream_close(&a->s);
    pump(&f, 5);
    ck_assert_int_eq(a->closed, 1);
    ck_assert_int_eq(b->closed, 1);
    fx_finish(&f);
    wire_buf_free(&fa);
}
END_TEST

/* --- TCP ---------------------------------------------------------------------------------------
 */

START_TEST(tcp_stream)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(ls, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(ls, 1), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int acc = accept(ls, NULL, NULL);
    ck_assert_int_ge(acc, 0);
    close(ls);

    struct fx f;
    fx_init_loop(&f, 0, 64 * MiB, WIRE_MAX_MESSAGE_SIZE, true);
    f.n = 1;
    struct end *e = &f.e[0];
    e->fx = &f;
    e->next_id = 1;
    e->drain = true;
    ck_assert_int_eq(stream_init_tcp(&f.ctx, &e->s, &CB, e, WIRE_MAX_MESSAGE_SIZE), 0);
    ck_assert_int_eq(uv_tcp_open(&e->s.h.tcp, acc), 0);
    e->peer = c;
    set_nonblocking(c);
    ck_assert_int_eq(stream_tcp_tune(&e->s, 30, 5000), 0);
    ck_assert_int_eq(stream_tcp_tune(&e->s, 0, 0), 0);
    ck_assert_int_eq(stream_read_start(&e->s), 0);

    struct wire_buf b = {0};
    for (int i = 1; i <= 100; i++)
        put_frame(&b, 16 + i * 3, i, WIRE_OP_MSG);
    queue_bytes(e, b.data, b.len);
    PUMP_UNTIL(&f, e->frames == 100);
    ck_assert_int_eq(e->order_errors, 0);
    ck_assert_mem_eq(e->got.data, b.data, b.len);
    uv_buf_t out = uv_buf_init((char *)b.data, (unsigned)b.len);
    ck_assert_int_eq(write_flagged(e, &out, 1), 0);
    PUMP_UNTIL(&f, e->written == 1 && e->peer_got.len == b.len);
    ck_assert_mem_eq(e->peer_got.data, b.data, b.len);
    e->drain = false;
    close_peer(e);
    PUMP_UNTIL(&f, e->errors == 1);
    ck_assert_int_eq(e->last_error, UV_EOF);
    fx_finish(&f);
    wire_buf_free(&b);
}
END_TEST

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("framing");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, split_at_every_boundary);
    tcase_add_test(tc, byte_by_byte);
    tcase_add_test(tc, pipelined_in_order_capped_per_wakeup);
    tcase_add_test(tc, hold_until_release);
    tcase_add_test(tc, header_length_out_of_range);
    tcase_add_test(tc, on_header_refuses);
    suite_add_tcase(s, tc);
    tc = tcase_create("writing");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, write_completion_from_loop);
    tcase_add_test(tc, write_many_buffers);
    tcase_add_test(tc, close_with_write_due);
    suite_add_tcase(s, tc);
    tc = tcase_create("budget");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, budget_wait_then_raised);
    tcase_add_test(tc, budget_refund_wakes_waiter);
    tcase_add_test(tc, deferred_work_keeps_loop_alive);
    suite_add_tcase(s, tc);
    tc = tcase_create("close");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, eof_is_an_error);
    tcase_add_test(tc, close_twice_calls_on_closed_once);
    tcase_add_test(tc, close_inside_on_frame);
    tcase_add_test(tc, close_while_held_and_budget_waiting);
    tcase_add_test(tc, tcp_stream);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(stream_suite)
