/*
 * zconn.h: compression on one connection (a client, or a pooled backend connection): what was
 * negotiated and the two buffers OP_COMPRESSED needs, charged against the streams' memory budget.
 *
 * compress.c does the encoding and checking; this adds what a connection needs around it: a
 * decompressed frame is made in `in` (bounded by the caller's limit before anything is allocated,
 * then by max_buffer_bytes like any stream buffer), a compressed one in `out`, and both stay until
 * the connection's next frame, because the frame that uses them is held (a request being
 * forwarded, a reply being relayed) until its write completes. One request at a time per
 * connection makes one buffer per direction enough.
 */
#ifndef MONGOLB_ZCONN_H
#define MONGOLB_ZCONN_H

#include <stddef.h>
#include <stdint.h>

#include "compress.h"
#include "stream.h"
#include "wire.h"

struct zconn {
    int8_t compressor;   /* backend: the one the server agreed to; COMPRESSOR_NONE when off */
    int8_t reply_with;   /* client: the compressor of the current request, or COMPRESSOR_NONE */
    uint8_t agreed_mask; /* client: the compressors its hello negotiated (bit 1 << id) */
    struct wire_buf in;  /* a decompressed frame */
    struct wire_buf out; /* a compressed frame */
    size_t charged;      /* bytes of in and out charged against the budget */
};

/* Compressors a peer may use towards us once any compression is agreed: every real one (a
 * peer decides per message, and the message names its compressor). */
#define ZCONN_ANY_MASK                                                                             \
    ((1u << COMPRESSOR_SNAPPY) | (1u << COMPRESSOR_ZLIB) | (1u << COMPRESSOR_ZSTD))

/* A zeroed struct is not ready: this sets the compressors to none. */
void zconn_init(struct zconn *z);

/*
 * Decodes an OP_COMPRESSED frame into z->in (compress_decode's checks, with max_frame and
 * allowed_mask); *id gets its compressor. Refuses with -ENOBUFS, before allocating, a frame whose
 * size would take the buffer budget past max_buffer_bytes. Returns 0 or a negative code
 * (compress_strerror() names the COMPRESS_ERR_* ones).
 */
MLB_MUSTCHECK int zconn_decode(struct zconn *z, struct stream_ctx *ctx, const uint8_t *frame,
                               size_t len, int32_t max_frame, unsigned allowed_mask, int *id);

/* Compresses frame with id into z->out (replacing what it held). Returns 0, -ENOBUFS (budget) or a
 * negative code from compress_encode. */
MLB_MUSTCHECK int zconn_encode(struct zconn *z, struct stream_ctx *ctx, int id,
                               const struct compress_levels *lv, const uint8_t *frame, size_t len);

/* Gives back buffers that one large message made large (above 64 KiB); keeps small ones. */
void zconn_trim(struct zconn *z, struct stream_ctx *ctx);
/* Frees both buffers and their charge (the connection is gone). */
void zconn_free(struct zconn *z, struct stream_ctx *ctx);

#endif
