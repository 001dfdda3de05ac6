/*
 * compress.c: OP_COMPRESSED encoding and decoding with snappy, zlib and zstd (see compress.h).
 *
 * Decoding is where a peer's bytes meet three libraries, so every size is checked before it is
 * used: the declared uncompressed size must be within the caller's limit before anything is
 * allocated, the buffer is exactly that size, and the libraries are called in their bounded forms
 * (a capacity in, the real size out), so that a frame that would decompress to more than it
 * declares stops at the buffer's end and is refused, and one that decompresses to less is refused
 * too rather than relayed with bytes nobody wrote.
 *
 * zstd's contexts are kept between calls (one per direction; the process has one thread): making
 * one costs more than compressing a small message.
 */
#include "compress.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

static const char *const names[COMPRESSOR_COUNT] = {"noop", "snappy", "zlib", "zstd"};

static ZSTD_CCtx *zstd_cctx;
static ZSTD_DCtx *zstd_dctx;

int compress_id(const char *name, size_t n)
{
    for (int i = 0; i < COMPRESSOR_COUNT; i++)
        if (strlen(names[i]) == n && memcmp(names[i], name, n) == 0)
            return i;
    return COMPRESSOR_NONE;
}

unsigned compress_mask(const struct compress_list *l)
{
    unsigned m = 0;
    for (int i = 0; i < l->n; i++)
        m |= 1u << l->id[i];
    return m;
}

int compress_parse_list(const char *text, struct compress_list *out, char *why, size_t why_len)
{
    struct compress_list l = {.n = 0};
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        size_t n = (size_t)(end - start);
        if (*p == ',')
            p++;
        if (n == 0) {
            /* Only blanks, or blanks after a last comma, end the list as "" and "zlib," do;
             * an empty name with more names after it is a mistake. */
            if (*p) {
                snprintf(why, why_len, "an empty name in the list of compressors");
                return -EINVAL;
            }
            break;
        }
        int id = compress_id(start, n);
        if (id == COMPRESSOR_NONE) {
            snprintf(why, why_len, "'%.*s' is not a compressor (zstd, snappy, zlib)", (int)n,
                     start);
            return -EINVAL;
        }
        if (compress_mask(&l) & (1u << id)) {
            snprintf(why, why_len, "'%s' is named twice", names[id]);
            return -EINVAL;
        }
        l.id[l.n++] = (uint8_t)id;
    }
    *out = l;
    return 0;
}

void compress_format_list(const struct compress_list *l, char *buf, size_t len)
{
    size_t off = 0;
    if (len)
        buf[0] = '\0';
    for (int i = 0; i < l->n && off < len; i++) {
        int n = snprintf(buf + off, len - off, "%s%s", i ? "," : "", names[l->id[i]]);
        if (n < 0)
            return;
        off += (size_t)n;
    }
}

int compress_negotiate(const bson_t *hello, const struct compress_list *ours,
                       struct compress_list *agreed)
{
    agreed->n = 0;
    bson_iter_t it, arr;
    if (!bson_iter_init_find(&it, hello, "compression") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return 0;
    unsigned theirs = 0;
    /* Bounded by the document, which the caller has checked; names repeat harmlessly. */
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_UTF8(&arr))
            continue;
        uint32_t n;
        const char *name = bson_iter_utf8(&arr, &n);
        int id = compress_id(name, n);
        if (id != COMPRESSOR_NONE)
            theirs |= 1u << id;
    }
    for (int i = 0; i < ours->n; i++)
        if (theirs & (1u << ours->id[i]))
            agreed->id[agreed->n++] = ours->id[i];
    return agreed->n;
}

bool compress_hello_doc(const uint8_t *frame, size_t len, bson_t *out)
{
    if (len < WIRE_HEADER_LEN)
        return false;
    int32_t op = wire_get_i32(frame + 12);
    if (op == WIRE_OP_MSG) {
        struct wire_msg m;
        return wire_msg_parse(frame, len, &m) == 0 && wire_msg_body(&m, out);
    }
    if (op != WIRE_OP_QUERY)
        return false;
    struct wire_query q;
    if (wire_query_parse(frame, len, &q) < 0 || !bson_init_static(out, q.query, q.query_len))
        return false;
    bson_iter_t it;
    const uint8_t *data;
    uint32_t dlen;
    if (bson_iter_init_find(&it, out, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &dlen, &data);
        return bson_init_static(out, data, dlen);
    }
    return true;
}

int compress_pick(const bson_t *hello_reply, const struct compress_list *ours)
{
    struct compress_list agreed;
    /* The reply's list has the same shape as the request's: the first of ours it names wins. */
    if (compress_negotiate(hello_reply, ours, &agreed) == 0)
        return COMPRESSOR_NONE;
    return agreed.id[0];
}

void compress_append_names(bson_t *doc, const char *key, const struct compress_list *l)
{
    if (l->n == 0)
        return;
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &arr);
    for (int i = 0; i < l->n; i++) {
        char k[4] = {(char)('0' + i), 0, 0, 0};
        BSON_APPEND_UTF8(&arr, k, names[l->id[i]]);
    }
    bson_append_array_end(doc, &arr);
}

bool compress_command_allowed(const char *name)
{
    static const char *const never[] = {
        "hello",        "isMaster",   "ismaster",   "saslStart",       "saslContinue",   "getnonce",
        "authenticate", "createUser", "updateUser", "copydbSaslStart", "copydbgetnonce", "copydb",
    };
    if (!name)
        return true;
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        if (strcmp(name, never[i]) == 0)
            return false;
    return true;
}

bool compress_frame_allowed(const uint8_t *frame, size_t len)
{
    if (len < WIRE_HEADER_LEN)
        return false;
    int32_t op = wire_get_i32(frame + 12);
    if (op == WIRE_OP_COMPRESSED)
        return false;
    if (op != WIRE_OP_MSG && op != WIRE_OP_QUERY)
        return true;
    bson_t cmd;
    if (!compress_hello_doc(frame, len, &cmd))
        return true; /* not a command anyone can read: nothing in it to protect */
    return compress_command_allowed(wire_command_name(&cmd));
}

/* The opcodes an OP_COMPRESSED may carry: every opcode of the protocol but itself (and the removed
 * OP_COMMAND pair, which no server since 4.2 reads). */
static bool opcode_wrappable(int32_t op)
{
    switch (op) {
    case WIRE_OP_REPLY:
    case WIRE_OP_UPDATE:
    case WIRE_OP_INSERT:
    case WIRE_OP_QUERY:
    case WIRE_OP_GET_MORE:
    case WIRE_OP_DELETE:
    case WIRE_OP_KILL_CURSORS:
    case WIRE_OP_MSG:
        return true;
    default:
        return false;
    }
}

size_t compress_bound(int id, size_t len)
{
    size_t body = len > WIRE_HEADER_LEN ? len - WIRE_HEADER_LEN : 0;
    size_t b;
    switch (id) {
    case COMPRESSOR_NOOP:
        b = body;
        break;
    case COMPRESSOR_SNAPPY:
        b = snappy_max_compressed_length(body);
        break;
    case COMPRESSOR_ZLIB:
        b = compressBound((uLong)body);
        break;
    case COMPRESSOR_ZSTD:
        b = ZSTD_compressBound(body);
        break;
    default:
        return 0;
    }
    return COMPRESS_MIN_FRAME + b;
}

int compress_encode(int id, const struct compress_levels *lv, const uint8_t *frame, size_t len,
                    struct wire_buf *out)
{
    if (len < WIRE_HEADER_LEN || (size_t)wire_get_i32(frame) != len || len > INT32_MAX)
        return -EINVAL;
    size_t cap = compress_bound(id, len);
    if (cap == 0)
        return -EINVAL;
    if (wire_buf_reserve(out, cap) < 0)
        return -ENOMEM;
    uint8_t *dst = out->data + out->len;
    const uint8_t *src = frame + WIRE_HEADER_LEN;
    size_t n = len - WIRE_HEADER_LEN;
    size_t room = cap - COMPRESS_MIN_FRAME;
    uint8_t *z = dst + COMPRESS_MIN_FRAME;
    size_t zlen = 0;
    switch (id) {
    case COMPRESSOR_NOOP:
        if (n)
            memcpy(z, src, n);
        zlen = n;
        break;
    case COMPRESSOR_SNAPPY:
        zlen = room;
        if (snappy_compress((const char *)src, n, (char *)z, &zlen) != SNAPPY_OK)
            return COMPRESS_ERR_CORRUPT;
        break;
    case COMPRESSOR_ZLIB: {
        uLongf dl = (uLongf)room;
        int level = lv ? lv->zlib : Z_DEFAULT_COMPRESSION;
        if (compress2(z, &dl, src, (uLong)n, level) != Z_OK)
            return COMPRESS_ERR_CORRUPT;
        zlen = dl;
        break;
    }
    case COMPRESSOR_ZSTD: {
        if (!zstd_cctx && !(zstd_cctx = ZSTD_createCCtx()))
            return -ENOMEM;
        size_t r = ZSTD_compressCCtx(zstd_cctx, z, room, src, n, lv ? lv->zstd : 1);
        if (ZSTD_isError(r))
            return COMPRESS_ERR_CORRUPT;
        zlen = r;
        break;
    }
    default:
        return -EINVAL;
    }
    size_t total = COMPRESS_MIN_FRAME + zlen;
    if (total > INT32_MAX)
        return -EINVAL;
    wire_put_i32(dst, (int32_t)total);
    memcpy(dst + 4, frame + 4, 8); /* requestID and responseTo */
    wire_put_i32(dst + 12, WIRE_OP_COMPRESSED);
    memcpy(dst + 16, frame + 12, 4); /* originalOpcode */
    wire_put_i32(dst + 20, (int32_t)n);
    dst[24] = (uint8_t)id;
    out->len += total;
    return 0;
}

int compress_parse_header(const uint8_t *frame, size_t len, int32_t max_frame,
                          unsigned allowed_mask, struct compress_header *ch)
{
    if (len < WIRE_HEADER_LEN || wire_get_i32(frame + 12) != WIRE_OP_COMPRESSED)
        return -EINVAL;
    if (len < COMPRESS_MIN_FRAME)
        return COMPRESS_ERR_TRUNCATED;
    ch->h.length = wire_get_i32(frame);
    ch->h.request_id = wire_get_i32(frame + 4);
    ch->h.response_to = wire_get_i32(frame + 8);
    ch->h.opcode = WIRE_OP_COMPRESSED;
    ch->original_opcode = wire_get_i32(frame + 16);
    ch->uncompressed_size = wire_get_i32(frame + 20);
    ch->compressor = frame[24];
    if (!opcode_wrappable(ch->original_opcode))
        return COMPRESS_ERR_OPCODE;
    if (ch->compressor >= COMPRESSOR_COUNT || !(allowed_mask & (1u << ch->compressor)))
        return COMPRESS_ERR_UNKNOWN;
    if (ch->uncompressed_size < 0 || max_frame < WIRE_HEADER_LEN ||
        ch->uncompressed_size > max_frame - WIRE_HEADER_LEN)
        return COMPRESS_ERR_TOO_LARGE;
    return 0;
}

/* Decompresses src into exactly want bytes at dst. */
static int inflate_exact(int id, const uint8_t *src, size_t n, uint8_t *dst, size_t want)
{
    switch (id) {
    case COMPRESSOR_NOOP:
        if (n != want)
            return COMPRESS_ERR_SIZE;
        if (n)
            memcpy(dst, src, n);
        return 0;
    case COMPRESSOR_SNAPPY: {
        size_t real;
        if (snappy_uncompressed_length((const char *)src, n, &real) != SNAPPY_OK)
            return COMPRESS_ERR_CORRUPT;
        if (real != want)
            return COMPRESS_ERR_SIZE;
        size_t got = want;
        if (snappy_uncompress((const char *)src, n, (char *)dst, &got) != SNAPPY_OK)
            return COMPRESS_ERR_CORRUPT;
        return got == want ? 0 : COMPRESS_ERR_SIZE;
    }
    case COMPRESSOR_ZLIB: {
        /* inflate by hand rather than uncompress(): it tells "more output than room" apart from
         * "input ended early", and leaves no doubt about how much it wrote. */
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        if (inflateInit(&zs) != Z_OK)
            return -ENOMEM;
        uint8_t spare;
        zs.next_in = (Bytef *)(uintptr_t)src;
        zs.avail_in = (uInt)n;
        zs.next_out = want ? dst : &spare;
        zs.avail_out = want ? (uInt)want : 0;
        int rc = inflate(&zs, Z_FINISH);
        size_t got = zs.total_out;
        bool in_left = zs.avail_in > 0;
        if (rc == Z_BUF_ERROR && zs.avail_out == 0 && got == want) {
            /* Full: one more byte of room says whether the stream wanted to go on. */
            zs.next_out = &spare;
            zs.avail_out = 1;
            rc = inflate(&zs, Z_FINISH);
            if (zs.total_out > got) {
                inflateEnd(&zs);
                return COMPRESS_ERR_SIZE;
            }
            in_left = zs.avail_in > 0;
        }
        inflateEnd(&zs);
        if (rc == Z_STREAM_END)
            return got == want && !in_left ? 0
                   : got == want           ? COMPRESS_ERR_CORRUPT
                                           : COMPRESS_ERR_SIZE;
        return COMPRESS_ERR_CORRUPT;
    }
    case COMPRESSOR_ZSTD: {
        unsigned long long declared = ZSTD_getFrameContentSize(src, n);
        if (declared == ZSTD_CONTENTSIZE_ERROR)
            return COMPRESS_ERR_CORRUPT;
        if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > want)
            return COMPRESS_ERR_SIZE;
        if (!zstd_dctx && !(zstd_dctx = ZSTD_createDCtx()))
            return -ENOMEM;
        size_t r = ZSTD_decompressDCtx(zstd_dctx, dst, want, src, n);
        if (ZSTD_isError(r))
            return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? COMPRESS_ERR_SIZE
                                                                       : COMPRESS_ERR_CORRUPT;
        return r == want ? 0 : COMPRESS_ERR_SIZE;
    }
    default:
        return COMPRESS_ERR_UNKNOWN;
    }
}

int compress_decode(const uint8_t *frame, size_t len, int32_t max_frame, unsigned allowed_mask,
                    struct wire_buf *out, int *id)
{
    struct compress_header ch;
    wire_buf_reset(out);
    int rc = compress_parse_header(frame, len, max_frame, allowed_mask, &ch);
    if (rc < 0)
        return rc;
    size_t want = (size_t)ch.uncompressed_size;
    if (wire_buf_reserve(out, WIRE_HEADER_LEN + want) < 0)
        return -ENOMEM;
    rc = inflate_exact(ch.compressor, frame + COMPRESS_MIN_FRAME, len - COMPRESS_MIN_FRAME,
                       out->data + WIRE_HEADER_LEN, want);
    if (rc < 0)
        return rc;
    struct wire_header h = {
        .length = (int32_t)(WIRE_HEADER_LEN + want),
        .request_id = ch.h.request_id,
        .response_to = ch.h.response_to,
        .opcode = ch.original_opcode,
    };
    wire_header_write(out->data, &h);
    out->len = WIRE_HEADER_LEN + want;
    if (id)
        *id = ch.compressor;
    return 0;
}

const char *compress_strerror(int rc)
{
    switch (rc) {
    case COMPRESS_ERR_TRUNCATED:
        return "OP_COMPRESSED shorter than its 25-byte prefix";
    case COMPRESS_ERR_TOO_LARGE:
        return "OP_COMPRESSED declares an uncompressed size that is negative or above the limit";
    case COMPRESS_ERR_UNKNOWN:
        return "OP_COMPRESSED with a compressor id that is unknown or not enabled";
    case COMPRESS_ERR_OPCODE:
        return "OP_COMPRESSED wraps an opcode that may not be wrapped";
    case COMPRESS_ERR_SIZE:
        return "OP_COMPRESSED data does not decompress to its declared size";
    case COMPRESS_ERR_CORRUPT:
        return "OP_COMPRESSED data is not valid for its compressor";
    case -ENOMEM:
        return "out of memory";
    case -EINVAL:
        return "not an OP_COMPRESSED frame";
    default:
        return "compression error";
    }
}
