/*
 * zconn.c: a connection's OP_COMPRESSED buffers and their share of the memory budget (zconn.h).
 *
 * Buffers above STREAM_FREE_BYTES are charged against the budget the streams share
 * (max_buffer_bytes), as a stream's own buffer is: a connection that has compressed traffic holds
 * up to two more buffers, and a peer that declares large frames must not get memory the budget
 * would refuse it uncompressed. Unlike a stream, which can stop reading and wait, a frame here is
 * already whole when it needs its buffer, so a frame that does not fit is refused at once.
 */
#include "zconn.h"

#include <errno.h>

void zconn_init(struct zconn *z)
{
    z->compressor = COMPRESSOR_NONE;
    z->reply_with = COMPRESSOR_NONE;
    z->agreed_mask = 0;
}

static size_t chargeable(const struct wire_buf *b)
{
    return b->cap > STREAM_FREE_BYTES ? b->cap : 0;
}

/* Brings the charge in line with the buffers' capacities now. */
static void recharge(struct zconn *z, struct stream_ctx *ctx)
{
    size_t now = chargeable(&z->in) + chargeable(&z->out);
    ctx->budget_used = ctx->budget_used - z->charged + now;
    ctx->buffered = ctx->buffered - z->charged + now;
    z->charged = now;
}

/* Whether b may grow to hold need bytes within the budget. */
static bool fits(const struct zconn *z, const struct stream_ctx *ctx, const struct wire_buf *b,
                 size_t need)
{
    if (need <= b->cap || need <= STREAM_FREE_BYTES)
        return true;
    size_t after = ctx->budget_used - chargeable(b) + need;
    return after <= ctx->budget_max;
}

int zconn_decode(struct zconn *z, struct stream_ctx *ctx, const uint8_t *frame, size_t len,
                 int32_t max_frame, unsigned allowed_mask, int *id)
{
    struct compress_header ch;
    int rc = compress_parse_header(frame, len, max_frame, allowed_mask, &ch);
    if (rc < 0)
        return rc;
    size_t need = WIRE_HEADER_LEN + (size_t)ch.uncompressed_size;
    if (!fits(z, ctx, &z->in, need))
        return -ENOBUFS;
    wire_buf_reset(&z->in);
    if (wire_buf_reserve(&z->in, need) < 0)
        return -ENOMEM;
    recharge(z, ctx);
    return compress_decode(frame, len, max_frame, allowed_mask, &z->in, id);
}

int zconn_encode(struct zconn *z, struct stream_ctx *ctx, int id, const struct compress_levels *lv,
                 const uint8_t *frame, size_t len)
{
    size_t need = compress_bound(id, len);
    if (!fits(z, ctx, &z->out, need))
        return -ENOBUFS;
    wire_buf_reset(&z->out);
    if (wire_buf_reserve(&z->out, need) < 0)
        return -ENOMEM;
    recharge(z, ctx);
    return compress_encode(id, lv, frame, len, &z->out);
}

void zconn_trim(struct zconn *z, struct stream_ctx *ctx)
{
    if (z->in.cap > STREAM_FREE_BYTES)
        wire_buf_free(&z->in);
    if (z->out.cap > STREAM_FREE_BYTES)
        wire_buf_free(&z->out);
    if (z->charged)
        recharge(z, ctx);
}

void zconn_free(struct zconn *z, struct stream_ctx *ctx)
{
    wire_buf_free(&z->in);
    wire_buf_free(&z->out);
    recharge(z, ctx);
}
