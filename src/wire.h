/*
 * wire.h: MongoDB wire-protocol framing, parsing and building.
 *
 * Everything here is pure: it works on byte buffers, allocates nothing while parsing (parsed
 * structures point into the caller's frame), and knows nothing of sockets. Both the daemon and the
 * simulator (tests/sim) use it. Functions return 0 or a negative errno-style code.
 *
 * The rules it follows are those of the Wire Protocol manual page and the OP_MSG specification:
 * a 16-byte little-endian header, OP_MSG flag bits 0-15 required (unknown ones are an error) and
 * bits 16-31 optional, section kind 0 (one body) and kind 1 (a document sequence).
 */
#ifndef MONGOLB_WIRE_H
#define MONGOLB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

/* A result the caller must look at (pgbouncer's _MUSTCHECK): the compiler refuses to let it be
 * dropped. */
#define MLB_MUSTCHECK __attribute__((warn_unused_result))

#define WIRE_HEADER_LEN 16
/* The last wire version (MongoDB 5.0) whose servers take OP_QUERY commands, OP_GET_MORE and
 * OP_KILL_CURSORS; 5.1 (wire 14) dropped them. */
#define WIRE_LEGACY_OPS_LAST   13
#define WIRE_MAX_MESSAGE_SIZE  48000000 /* maxMessageSizeBytes of every MongoDB since 2.6 */
#define WIRE_MAX_BSON_SIZE     16777216 /* maxBsonObjectSize */
#define WIRE_MAX_WRITE_BATCH   100000
#define WIRE_MAX_DOC_SEQUENCES 8

enum wire_opcode {
    WIRE_OP_REPLY = 1,
    WIRE_OP_UPDATE = 2001,
    WIRE_OP_INSERT = 2002,
    WIRE_OP_QUERY = 2004,
    WIRE_OP_GET_MORE = 2005,
    WIRE_OP_DELETE = 2006,
    WIRE_OP_KILL_CURSORS = 2007,
    WIRE_OP_COMPRESSED = 2012,
    WIRE_OP_MSG = 2013,
};

/* OP_MSG flag bits. */
#define WIRE_MSG_CHECKSUM_PRESENT 0x1u
#define WIRE_MSG_MORE_TO_COME     0x2u
#define WIRE_MSG_EXHAUST_ALLOWED  0x10000u
/* Bits 0-15 a receiver must understand; any other bit set among them is an error. */
#define WIRE_MSG_REQUIRED_MASK 0xffffu
#define WIRE_MSG_KNOWN_MASK                                                                        \
    (WIRE_MSG_CHECKSUM_PRESENT | WIRE_MSG_MORE_TO_COME | WIRE_MSG_EXHAUST_ALLOWED)

/* OP_QUERY flag bits. */
#define WIRE_QUERY_SECONDARY_OK 0x4
#define WIRE_QUERY_EXHAUST      0x40

/* OP_REPLY responseFlags. */
#define WIRE_REPLY_CURSOR_NOT_FOUND 0x1
#define WIRE_REPLY_QUERY_FAILURE    0x2
#define WIRE_REPLY_AWAIT_CAPABLE    0x8

struct wire_header {
    int32_t length; /* messageLength: the whole frame, header included */
    int32_t request_id;
    int32_t response_to;
    int32_t opcode;
};

/* A kind-1 section: a named run of back-to-back BSON documents, inside the frame. */
struct wire_doc_seq {
    const char *identifier; /* NUL-terminated, inside the frame */
    const uint8_t *docs;
    uint32_t len; /* bytes of documents, identifier excluded */
};

/* A parsed OP_MSG. Pointers refer into the frame that was parsed. */
struct wire_msg {
    struct wire_header h;
    uint32_t flags;
    const uint8_t *body; /* the single kind-0 document */
    uint32_t body_len;
    int nseq;
    struct wire_doc_seq seq[WIRE_MAX_DOC_SEQUENCES];
    uint32_t body_offset; /* where the body starts in the frame, for in-place inspection */
};

/* A parsed OP_QUERY. */
struct wire_query {
    struct wire_header h;
    int32_t flags;
    const char *ns; /* full collection name, e.g. "admin.$cmd" */
    int32_t skip;
    int32_t n_return;
    const uint8_t *query;
    uint32_t query_len;
    const uint8_t *fields; /* optional projection, NULL when absent */
    uint32_t fields_len;
};

/* A parsed OP_REPLY (used by the daemon's monitor, tests and the benchmark client). */
struct wire_reply {
    struct wire_header h;
    int32_t flags;
    int64_t cursor_id;
    int32_t starting_from;
    int32_t n_returned;
    const uint8_t *docs; /* n_returned documents back to back */
    uint32_t docs_len;
};

/* A parsed legacy OP_GET_MORE. */
struct wire_get_more {
    struct wire_header h;
    const char *ns;
    int32_t n_return;
    int64_t cursor_id;
};

/* A parsed legacy OP_KILL_CURSORS. The ids are unaligned little-endian int64s inside the frame:
 * read them with wire_kill_cursors_id(). */
struct wire_kill_cursors {
    struct wire_header h;
    int32_t n_ids;
    const uint8_t *ids;
};

/* Little-endian helpers that do not care about alignment. */
static inline int32_t wire_get_i32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

static inline int64_t wire_get_i64(const uint8_t *p)
{
    return (int64_t)((uint64_t)(uint32_t)wire_get_i32(p) | (uint64_t)(uint32_t)wire_get_i32(p + 4)
                                                               << 32);
}

static inline void wire_put_i32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

static inline void wire_put_i64(uint8_t *p, int64_t v)
{
    wire_put_i32(p, (int32_t)(uint32_t)(uint64_t)v);
    wire_put_i32(p + 4, (int32_t)(uint32_t)((uint64_t)v >> 32));
}

static inline int64_t wire_kill_cursors_id(const struct wire_kill_cursors *k, int i)
{
    return wire_get_i64(k->ids + 8 * (size_t)i);
}

/*
 * Reads a header from the first bytes of a stream buffer.
 * Returns 0 with *h filled when a whole header is there and its length is within [16, max_len];
 * -EAGAIN when fewer than 16 bytes are available; -EMSGSIZE when messageLength is below 16 or above
 * max_len. The caller learns how much more to read from h->length before allocating anything.
 */
int wire_header_parse(const uint8_t *buf, size_t avail, int32_t max_len, struct wire_header *h);

/* Writes a header into the first 16 bytes of buf. */
void wire_header_write(uint8_t *buf, const struct wire_header *h);

/*
 * Parses an OP_MSG frame of exactly len bytes (len == header length).
 * Checks flags (unknown required bits: -EPROTO), every section's bounds, that exactly one kind-0
 * section exists, that each document's own length fits its section and each document ends with a
 * NUL, and the checksum's presence (it is not verified: peers skip it under TLS and drivers ignore
 * it). Does not walk BSON beyond lengths; use bson_init_static + bson_validate where needed.
 * Returns 0 or -EPROTO (malformed), -EINVAL (not an OP_MSG).
 */
int wire_msg_parse(const uint8_t *frame, size_t len, struct wire_msg *m);

/* Parses the other frame kinds the same way. Each returns 0, -EPROTO or -EINVAL. */
int wire_query_parse(const uint8_t *frame, size_t len, struct wire_query *q);
int wire_reply_parse(const uint8_t *frame, size_t len, struct wire_reply *r);
int wire_get_more_parse(const uint8_t *frame, size_t len, struct wire_get_more *g);
int wire_kill_cursors_parse(const uint8_t *frame, size_t len, struct wire_kill_cursors *k);

/* Iterates the documents of a kind-1 section: *off starts at 0; returns 1 with *doc and *doc_len
 * set, 0 at the end, -EPROTO on a malformed document. */
int wire_doc_seq_next(const struct wire_doc_seq *s, uint32_t *off, const uint8_t **doc,
                      uint32_t *doc_len);

/* A view of the body of an OP_MSG as a read-only bson_t (no copy). Returns false if malformed. */
bool wire_msg_body(const struct wire_msg *m, bson_t *out);

/* The command name: the first key of a command document, or NULL if it is empty/malformed. */
const char *wire_command_name(const bson_t *cmd);

/* --- building messages ------------------------------------------------------------------- */

/* A growable byte buffer. A zeroed struct is an empty buffer. */
struct wire_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

MLB_MUSTCHECK int wire_buf_reserve(struct wire_buf *b, size_t extra);
MLB_MUSTCHECK int wire_buf_append(struct wire_buf *b, const void *p, size_t n);
void wire_buf_reset(struct wire_buf *b); /* len = 0, keeps the memory */
void wire_buf_free(struct wire_buf *b);

/*
 * Appends a complete OP_MSG with one kind-0 body to b. flags may carry WIRE_MSG_MORE_TO_COME.
 * Returns 0 or -ENOMEM.
 */
MLB_MUSTCHECK int wire_append_msg(struct wire_buf *b, int32_t request_id, int32_t response_to,
                                  uint32_t flags, const bson_t *body);

/* Appends an OP_MSG with a body and one kind-1 sequence of n documents. */
int wire_append_msg_seq(struct wire_buf *b, int32_t request_id, int32_t response_to, uint32_t flags,
                        const bson_t *body, const char *identifier, const bson_t *const *docs,
                        int n);

/*
 * Appends a copy of the OP_MSG m (parsed from its frame) whose body gains the field key: value at
 * its end (replacing a field of that name); kind-1 sections are copied as they are, the request id
 * is kept and a checksum is dropped. Used to add a $readPreference. Returns 0 or -ENOMEM.
 */
MLB_MUSTCHECK int wire_append_msg_with_field(struct wire_buf *b, const struct wire_msg *m,
                                             const char *key, const bson_t *value);

/* Appends an OP_REPLY carrying n documents (n may be 0). */
MLB_MUSTCHECK int wire_append_reply(struct wire_buf *b, int32_t request_id, int32_t response_to,
                                    int32_t flags, int64_t cursor_id, int32_t starting_from,
                                    const bson_t *const *docs, int n);

/* Appends an OP_QUERY (the legacy handshake and the simulator's tests use it). */
int wire_append_query(struct wire_buf *b, int32_t request_id, int32_t flags, const char *ns,
                      int32_t skip, int32_t n_return, const bson_t *query);

/*
 * Strips the CRC-32C checksum of an OP_MSG in place: clears bit 0 and shortens the frame (and its
 * header length) by 4. *len is updated. A proxy that rewrites requestID/responseTo must do this or
 * recompute the checksum, since the header is covered by it. No-op without the bit.
 */
void wire_msg_strip_checksum(uint8_t *frame, size_t *len);

/* CRC-32C (Castagnoli), for tests and for peers that want to verify. */
uint32_t wire_crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* Names an opcode for log lines ("OP_MSG", "OP_QUERY", ... or "unknown"). */
const char *wire_opcode_name(int32_t opcode);

#endif
