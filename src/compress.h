/*
 * compress.h: OP_COMPRESSED (opcode 2012), the wire protocol's compression envelope.
 *
 * Pure: byte buffers in, byte buffers out, no I/O. The layout (S:compression/OP_COMPRESSED.md):
 *
 *   header (16 bytes, opCode 2012) | int32 originalOpcode | int32 uncompressedSize |
 *   uint8 compressorId | compressed bytes of the original message without its header
 *
 * Compressors: 0 noop, 1 snappy, 2 zlib, 3 zstd; 4-255 are reserved. Decoding a frame rebuilds the
 * original frame (its header gets the original opcode and the length 16 + uncompressedSize; the
 * request and response ids are kept) into a buffer of exactly that size, allocated only after the
 * declared size has been checked against the caller's limit. The decompressed data must fill it
 * exactly: a frame whose data decompresses to fewer or more bytes than it declares is refused (a
 * server that trusted the declared size leaked memory this way, CVE-2025-14847).
 *
 * Negotiation: a client's first hello carries `compression: [names]`; the server answers with the
 * ones it also has, and the client then uses the first of its own list that the server named.
 * Messages of the commands compress_command_allowed() refuses are never compressed.
 */
#ifndef MONGOLB_COMPRESS_H
#define MONGOLB_COMPRESS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "wire.h"

enum compressor_id {
    COMPRESSOR_NOOP = 0,
    COMPRESSOR_SNAPPY = 1,
    COMPRESSOR_ZLIB = 2,
    COMPRESSOR_ZSTD = 3,
};
#define COMPRESSOR_COUNT 4
#define COMPRESSOR_NONE  (-1) /* no compressor negotiated */

/* originalOpcode, uncompressedSize and compressorId after the 16-byte header. */
#define COMPRESS_PREFIX_LEN 9
#define COMPRESS_MIN_FRAME  (WIRE_HEADER_LEN + COMPRESS_PREFIX_LEN)

/*
 * Why a frame is refused: each its own code, so that a log line and a test can tell them apart.
 */
#define COMPRESS_ERR_TRUNCATED (-EPROTO)      /* shorter than the 25-byte prefix */
#define COMPRESS_ERR_TOO_LARGE (-EMSGSIZE)    /* declared size negative or above the limit */
#define COMPRESS_ERR_UNKNOWN   (-ENOPROTOOPT) /* a compressor id unknown or not enabled */
#define COMPRESS_ERR_OPCODE    (-EBADRQC)     /* an originalOpcode that may not be wrapped */
#define COMPRESS_ERR_SIZE      (-EBADMSG) /* the data does not decompress to the declared size */
#define COMPRESS_ERR_CORRUPT   (-EILSEQ)  /* the compressed data is not valid for its compressor */

/* An ordered list of compressor ids (a configuration's order of preference). */
struct compress_list {
    uint8_t id[COMPRESSOR_COUNT];
    uint8_t n;
};

/* Levels for the compressors that take one: zlib -1 (its default) to 9, zstd 1 to 22. */
struct compress_levels {
    int zlib;
    int zstd;
};

/* The id of a handshake name of n bytes, or COMPRESSOR_NONE. */
int compress_id(const char *name, size_t n);
/* A bit per id in l, for the allowed set of compress_decode. */
unsigned compress_mask(const struct compress_list *l);

/*
 * Parses a comma-separated list ("zstd,snappy,zlib"; spaces around names allowed; "" is empty).
 * "noop" is accepted too (for tests). Returns 0, or -EINVAL with the reason in why (an unknown or
 * repeated name).
 */
int compress_parse_list(const char *text, struct compress_list *out, char *why, size_t why_len);
/* Writes the list as text ("zstd,zlib"), truncated to len. */
void compress_format_list(const struct compress_list *l, char *buf, size_t len);

/*
 * Negotiation from the server's side: the compressors named in the `compression` array of a hello
 * command that are also in ours, in our order. Anything else in the array (unknown names, other
 * types) is skipped, as servers do. Returns the count (0 when the field is absent or nothing
 * matches).
 */
int compress_negotiate(const bson_t *hello, const struct compress_list *ours,
                       struct compress_list *agreed);
/* The hello command of a frame (OP_MSG body, or OP_QUERY query unwrapped from $query) as a view,
 * for compress_negotiate. Returns false when the frame has none. */
bool compress_hello_doc(const uint8_t *frame, size_t len, bson_t *out);
/* Negotiation from the client's side: the first of ours the server's hello reply names in its
 * `compression` array, or COMPRESSOR_NONE. */
int compress_pick(const bson_t *hello_reply, const struct compress_list *ours);
/* Appends `compression: [names]` to doc (nothing when l is empty). */
void compress_append_names(bson_t *doc, const char *key, const struct compress_list *l);

/* False for the commands whose messages must never be compressed: hello, isMaster, ismaster,
 * saslStart, saslContinue, getnonce, authenticate, createUser, updateUser, copydbSaslStart,
 * copydbgetnonce, copydb. */
bool compress_command_allowed(const char *name);
/* Whether a frame may be compressed: OP_MSG and OP_QUERY by their command name, other opcodes
 * (replies, legacy cursor operations) always; an OP_COMPRESSED never again. */
bool compress_frame_allowed(const uint8_t *frame, size_t len);

/* The largest frame compress_encode may produce for a frame of len bytes with compressor id. */
size_t compress_bound(int id, size_t len);

/*
 * Appends an OP_COMPRESSED holding the frame (len bytes, its header's length equal to len) to out,
 * compressed with id: same requestID and responseTo, originalOpcode from the frame. Returns 0,
 * -EINVAL (not a frame, or an id without a compressor), -ENOMEM, or COMPRESS_ERR_CORRUPT when the
 * library fails.
 */
MLB_MUSTCHECK int compress_encode(int id, const struct compress_levels *lv, const uint8_t *frame,
                                  size_t len, struct wire_buf *out);

/* What an OP_COMPRESSED declares, read without decompressing. */
struct compress_header {
    struct wire_header h;
    int32_t original_opcode;
    int32_t uncompressed_size;
    uint8_t compressor;
};

/*
 * Reads and checks the prefix of an OP_COMPRESSED frame of len bytes: the header's opcode is 2012,
 * the prefix is whole, originalOpcode is a known opcode other than OP_COMPRESSED, the compressor is
 * in allowed_mask (bit 1 << id), and 16 + uncompressedSize is within [16, max_frame]. Returns 0 or
 * one of the COMPRESS_ERR_* codes (-EINVAL when the frame is not an OP_COMPRESSED at all).
 */
int compress_parse_header(const uint8_t *frame, size_t len, int32_t max_frame,
                          unsigned allowed_mask, struct compress_header *ch);

/*
 * Decodes an OP_COMPRESSED frame into the original frame, which replaces out's contents (out->len
 * is then 16 + uncompressedSize). Checks as compress_parse_header, then allocates exactly the
 * declared size and refuses data that decompresses to any other size (COMPRESS_ERR_SIZE) or is
 * not valid (COMPRESS_ERR_CORRUPT). *id, when not NULL, receives the compressor's id. Returns 0,
 * a COMPRESS_ERR_* code or -ENOMEM; on error out's length is 0.
 */
MLB_MUSTCHECK int compress_decode(const uint8_t *frame, size_t len, int32_t max_frame,
                                  unsigned allowed_mask, struct wire_buf *out, int *id);

/* A short text for a negative code of this module, for log lines. */
const char *compress_strerror(int rc);

#endif
