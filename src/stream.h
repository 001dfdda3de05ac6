/*
 * stream.h: the one transport under every socket mongolb owns (clients, pooled backend
 * connections, monitors).
 *
 * A stream frames wire messages out of a byte stream and hands whole frames to its owner through a
 * callback table; it never calls up into client, pool or monitor code by name. What it owns:
 *
 *  - The read buffer. An idle stream holds no buffer of its own: reads land in one buffer shared
 *    by the loop and the bytes are copied into a buffer sized to what they need. Frames are
 *    consumed by advancing an offset, and the buffer is compacted once per wakeup, never per frame.
 *    Room for a frame is made once its header is known to be within the stream's limit, and
 *    buffers above a small size are charged against one budget for the whole process; a stream
 *    that would exceed it stops being read until others give memory back (backpressure).
 *  - The frame loop: iterative, at most STREAM_FRAMES_PER_WAKEUP frames per wakeup (the rest are
 *    taken up on a later loop iteration), never recursive. An owner that answers a frame at once
 *    returns STREAM_NEXT and the loop moves on; one that needs time (a request being forwarded, a
 *    reply being relayed) returns STREAM_HOLD, and the frame stays where it is, unmoved, until the
 *    owner calls stream_release().
 *  - Writes: one at a time, tried at once with uv_try_write and queued for the rest. Completion is
 *    always reported later from the loop (never from inside stream_write), so owners never see
 *    their own callbacks re-entered.
 *  - Close: stream_close() is idempotent; on_closed runs once libuv has finished with the handle,
 *    and only there may the owner free the memory that holds the stream.
 *
 *  - TLS, when the owner asks for it: OpenSSL with a pair of memory BIOs between the socket and
 *    the frame loop. Ciphertext read from the socket goes into the read BIO and SSL_read yields
 *    the plaintext the frame loop sees; SSL_write's ciphertext is written to the socket. Owners
 *    see the same callbacks either way (plus on_secure when a handshake ends), so nothing above
 *    this layer knows whether a connection is encrypted. A server-side stream may sniff the first
 *    byte to accept TLS and plaintext on one port (a TLS record starts with 0x16).
 */
#ifndef MONGOLB_STREAM_H
#define MONGOLB_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "list.h"
#include "wire.h"

/* At most this many frames are handed to an owner per wakeup; the rest wait for the next loop
 * iteration, so that one connection cannot starve the others. */
#define STREAM_FRAMES_PER_WAKEUP 64
/* The shared read buffer's size. */
#define STREAM_SHARED_BUF (64 * 1024)
/* A stream's buffer up to this size is not charged against the budget: it is bounded by the
 * number of connections, and charging it would let a full budget stop small requests. */
#define STREAM_FREE_BYTES (64 * 1024)
/* Buffers one stream_write may take. */
#define STREAM_MAX_BUFS 8

/* What an owner's on_frame returns. */
enum {
    STREAM_NEXT = 0, /* done with the frame: the stream drops it and goes on */
    STREAM_HOLD = 1, /* the owner keeps the frame until stream_release() */
};

/* One per event loop: the shared read buffer, the memory budget and the deferred work. */
struct stream_ctx {
    uv_loop_t *loop;
    uint8_t *shared;
    size_t budget_used; /* bytes of stream buffers charged */
    size_t budget_max;
    size_t buffered; /* bytes of all stream buffers, charged or not, for status */
    struct list budget_waiters;
    struct list deferred;
    uv_check_t check; /* runs deferred work right after each poll */
    uv_idle_t idle;   /* keeps the next poll from blocking while work is left */
    uint64_t budget_waits;
};

struct stream;
struct stream_tls;

struct stream_cb {
    /* A whole frame of len bytes. Returns STREAM_NEXT, STREAM_HOLD, or a negative errno after the
     * owner closed the stream (or wants the loop to stop). */
    int (*on_frame)(struct stream *s, uint8_t *frame, size_t len);
    /* Optional: a frame's header is complete (the body may not be): a chance to refuse a frame,
     * by closing the stream and returning a negative errno, before any room is made for it. */
    int (*on_header)(struct stream *s, const struct wire_header *h, const uint8_t *bytes);
    /* Optional: the first bytes of a frame arrived and the frame is not whole yet. */
    void (*on_frame_begin)(struct stream *s);
    /* The read side failed: UV_EOF, a socket error, -EMSGSIZE (a header whose length is outside
     * [16, max_frame]) or -ENOMEM. The stream stops reading; the owner decides (usually closes). */
    void (*on_error)(struct stream *s, int status);
    /* The write started by stream_write() finished (0) or failed (< 0). */
    void (*on_written)(struct stream *s, int status);
    /* Optional: stream_connect() finished. */
    void (*on_connect)(struct stream *s, int status);
    /* Optional: a TLS handshake finished (0) or failed (< 0: stream_tls_error() says why). */
    void (*on_secure)(struct stream *s, int status);
    /* The handle is closed: the owner may free the stream's memory now. */
    void (*on_closed)(struct stream *s);
};

/* A TCP or unix socket, seen as whichever libuv type a call needs. */
union stream_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct stream {
    union stream_handle h;
    uv_write_t wreq;
    struct stream_ctx *ctx;
    const struct stream_cb *cb;
    void *owner;
    struct wire_buf rbuf; /* unprocessed bytes are [rpos, rbuf.len) */
    size_t rpos;
    size_t held_len; /* the frame at rpos the owner holds, 0 when none */
    size_t charged;  /* bytes of rbuf.cap charged against the budget */
    size_t keep_buf; /* an emptied buffer up to this size is kept for the next frame */
    int32_t max_frame;
    struct list link; /* on ctx->deferred or ctx->budget_waiters */
    bool on_list;
    bool want_read;   /* the owner wants bytes (stream_read_start) */
    bool reading;     /* uv_read_start is in force */
    bool starved;     /* no room to read into until the held frame is released */
    bool budget_wait; /* waiting for the budget to have room for the next frame */
    bool in_loop;
    bool partial;     /* a frame has begun and is not whole yet */
    bool header_seen; /* on_header has seen the current frame's header */
    bool write_pending;
    bool write_done; /* a write finished at once; on_written is due from the loop */
    bool closing;
    bool is_tcp;
    struct stream_tls *tls; /* NULL for a plaintext stream */
};

/* Sets up ctx on loop with a budget of budget_max bytes. Returns 0 or a negative errno. */
int stream_ctx_init(struct stream_ctx *ctx, uv_loop_t *loop, size_t budget_max);
/* Closes the context's handles (at shutdown, once no stream is left). */
void stream_ctx_close(struct stream_ctx *ctx);
/* Changes the budget (reload); waiters are retried. */
void stream_ctx_set_budget(struct stream_ctx *ctx, size_t budget_max);

/* Initialises s as a TCP or pipe stream on ctx's loop. Returns 0 or a negative errno; on error
 * nothing needs closing. */
int stream_init_tcp(struct stream_ctx *ctx, struct stream *s, const struct stream_cb *cb,
                    void *owner, int32_t max_frame);
int stream_init_pipe(struct stream_ctx *ctx, struct stream *s, const struct stream_cb *cb,
                     void *owner, int32_t max_frame);

/* Starts delivering frames. Returns 0 or a negative errno. */
MLB_MUSTCHECK int stream_read_start(struct stream *s);
/* The owner is done with the frame it held: the loop goes on with the next one (from the loop,
 * not from inside this call). */
void stream_release(struct stream *s);

/* Writes n buffers (at most STREAM_MAX_BUFS), which must stay valid until on_written. One write at
 * a time. Returns 0 (then on_written follows, always from the loop) or a negative errno (then it
 * does not). */
MLB_MUSTCHECK int stream_write(struct stream *s, const uv_buf_t *bufs, unsigned n);

/* Connects a TCP stream; on_connect follows unless this returns a negative errno. */
MLB_MUSTCHECK int stream_connect(struct stream *s, uv_connect_t *req, const struct sockaddr *addr);

/* Keeps an emptied read buffer of up to bytes for the next frame instead of freeing it: for
 * connections that are few and busy, where a malloc and free per reply would be waste. */
static inline void stream_keep_buffer(struct stream *s, size_t bytes)
{
    s->keep_buf = bytes;
}

/* Keepalive and TCP_USER_TIMEOUT on a TCP stream; 0 turns either off. Returns 0 or -errno. */
int stream_tcp_tune(struct stream *s, int keepalive_s, int user_timeout_ms);

/*
 * TLS. stream_tls_client() starts a client handshake on a connected stream with ssl (made by the
 * caller from its context, with SNI, host checks and a session to resume already set); on_secure
 * follows. stream_tls_accept() prepares a server-side stream before it reads: with plain_ok, the
 * first byte decides (0x16 starts TLS, anything else stays plaintext); without it, a plaintext
 * client is refused (on_error with -EPROTO). The stream owns ssl from then on. Each returns 0 or
 * a negative errno.
 */
MLB_MUSTCHECK int stream_tls_client(struct stream *s, SSL *ssl);
MLB_MUSTCHECK int stream_tls_accept(struct stream *s, SSL_CTX *ctx, bool plain_ok);
/* True once the stream speaks TLS (after sniffing, or from the start for a client). */
bool stream_is_tls(const struct stream *s);
/* True while a TLS handshake is under way (or the first byte of a sniffing stream is awaited). */
bool stream_tls_pending(const struct stream *s);
/* The stream's SSL, or NULL. */
SSL *stream_ssl(const struct stream *s);
/* Why the last TLS operation failed, or "". */
const char *stream_tls_error(const struct stream *s);

/* Closes the stream; on_closed follows. Safe to call more than once and from any callback. */
void stream_close(struct stream *s);

/* True when a frame has begun and is not whole. */
static inline bool stream_partial(const struct stream *s)
{
    return s->partial;
}

/* Bytes not yet handed to the owner, plus the held frame. */
static inline size_t stream_pending_bytes(const struct stream *s)
{
    return s->rbuf.len - s->rpos;
}

#endif
