/*
 * wire.c: MongoDB wire-protocol framing, parsing and building. See wire.h.
 */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int wire_header_parse(const uint8_t *buf, size_t avail, int32_t max_len, struct wire_header *h)
{
    if (avail < WIRE_HEADER_LEN)
        return -EAGAIN;
    h->length = wire_get_i32(buf);
    h->request_id = wire_get_i32(buf + 4);
    h->response_to = wire_get_i32(buf + 8);
    h->opcode = wire_get_i32(buf + 12);
    if (h->length < WIRE_HEADER_LEN || h->length > max_len)
        return -EMSGSIZE;
    return 0;
}

void wire_header_write(uint8_t *buf, const struct wire_header *h)
{
    wire_put_i32(buf, h->length);
    wire_put_i32(buf + 4, h->request_id);
    wire_put_i32(buf + 8, h->response_to);
    wire_put_i32(buf + 12, h->opcode);
}

/* Reads the header of a frame whose length the caller has already checked against its limit,
 * and verifies that it describes exactly len bytes with the expected opcode. */
static int frame_header(const uint8_t *frame, size_t len, int32_t opcode, struct wire_header *h)
{
    if (len < WIRE_HEADER_LEN)
        return -EPROTO;
    int rc = wire_header_parse(frame, len, INT32_MAX, h);
    if (rc < 0)
        return -EPROTO;
    if ((size_t)h->length != len)
        return -EPROTO;
    if (h->opcode != opcode)
        return -EINVAL;
    return 0;
}

/* Checks that a BSON document starts at p with at most avail bytes available: its int32 length is
 * at least 5, fits, and the last byte is the terminating NUL. Returns the length or -EPROTO. */
static int64_t doc_extent(const uint8_t *p, size_t avail)
{
    if (avail < 5)
        return -EPROTO;
    int32_t n = wire_get_i32(p);
    if (n < 5 || (size_t)n > avail || p[n - 1] != 0)
        return -EPROTO;
    return n;
}

/* Finds the NUL ending a C string that starts at p; returns its length or -EPROTO if none fits. */
static int64_t cstring_extent(const uint8_t *p, size_t avail)
{
    const uint8_t *nul = memchr(p, 0, avail);
    if (!nul)
        return -EPROTO;
    return nul - p;
}

int wire_msg_parse(const uint8_t *frame, size_t len, struct wire_msg *m)
{
    int rc = frame_header(frame, len, WIRE_OP_MSG, &m->h);
    if (rc < 0)
        return rc;
    if (len < WIRE_HEADER_LEN + 4 + 1)
        return -EPROTO;
    m->flags = (uint32_t)wire_get_i32(frame + 16);
    if ((m->flags & WIRE_MSG_REQUIRED_MASK) & ~WIRE_MSG_KNOWN_MASK)
        return -EPROTO;
    size_t end = len;
    if (m->flags & WIRE_MSG_CHECKSUM_PRESENT) {
        if (len < WIRE_HEADER_LEN + 4 + 1 + 4)
            return -EPROTO;
        end -= 4;
    }
    m->body = NULL;
    m->body_len = 0;
    m->body_offset = 0;
    m->nseq = 0;
    size_t off = WIRE_HEADER_LEN + 4;
    while (off < end) {
        uint8_t kind = frame[off++];
        if (kind == 0) {
            if (m->body)
                return -EPROTO; /* exactly one body */
            int64_t n = doc_extent(frame + off, end - off);
            if (n < 0)
                return -EPROTO;
            m->body = frame + off;
            m->body_len = (uint32_t)n;
            m->body_offset = (uint32_t)off;
            off += (size_t)n;
        } else if (kind == 1) {
            if (end - off < 4)
                return -EPROTO;
            int32_t size = wire_get_i32(frame + off);
            if (size < 5 || (size_t)size > end - off)
                return -EPROTO;
            const uint8_t *sec = frame + off + 4;
            size_t sec_len = (size_t)size - 4;
            int64_t id_len = cstring_extent(sec, sec_len);
            if (id_len < 0)
                return -EPROTO;
            if (m->nseq >= WIRE_MAX_DOC_SEQUENCES)
                return -EPROTO;
            struct wire_doc_seq *s = &m->seq[m->nseq++];
            s->identifier = (const char *)sec;
            s->docs = sec + id_len + 1;
            s->len = (uint32_t)(sec_len - (size_t)id_len - 1);
            /* Every document must fit its section exactly, so later walks need no checks. */
            uint32_t doff = 0;
            const uint8_t *d;
            uint32_t dlen;
            int r;
            while ((r = wire_doc_seq_next(s, &doff, &d, &dlen)) == 1)
                ;
            if (r < 0)
                return -EPROTO;
            off += (size_t)size;
        } else {
            return -EPROTO;
        }
    }
    if (!m->body)
        return -EPROTO;
    /* An identifier must be unique in the message. */
    for (int i = 0; i < m->nseq; i++)
        for (int j = i + 1; j < m->nseq; j++)
            if (strcmp(m->seq[i].identifier, m->seq[j].identifier) == 0)
                return -EPROTO;
    return 0;
}

int wire_doc_seq_next(const struct wire_doc_seq *s, uint32_t *off, const uint8_t **doc,
                      uint32_t *doc_len)
{
    if (*off >= s->len)
        return 0;
    int64_t n = doc_extent(s->docs + *off, s->len - *off);
    if (n < 0)
        return -EPROTO;
    *doc = s->docs + *off;
    *doc_len = (uint32_t)n;
    *off += (uint32_t)n;
    return 1;
}

bool wire_msg_body(const struct wire_msg *m, bson_t *out)
{
    return bson_init_static(out, m->body, m->body_len);
}

const char *wire_command_name(const bson_t *cmd)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it))
        return NULL;
    return bson_iter_key(&it);
}

int wire_query_parse(const uint8_t *frame, size_t len, struct wire_query *q)
{
    int rc = frame_header(frame, len, WIRE_OP_QUERY, &q->h);
    if (rc < 0)
        return rc;
    size_t off = WIRE_HEADER_LEN;
    if (len - off < 4)
        return -EPROTO;
    q->flags = wire_get_i32(frame + off);
    off += 4;
    int64_t ns_len = cstring_extent(frame + off, len - off);
    if (ns_len < 0)
        return -EPROTO;
    q->ns = (const char *)frame + off;
    off += (size_t)ns_len + 1;
    if (len - off < 8)
        return -EPROTO;
    q->skip = wire_get_i32(frame + off);
    q->n_return = wire_get_i32(frame + off + 4);
    off += 8;
    int64_t n = doc_extent(frame + off, len - off);
    if (n < 0)
        return -EPROTO;
    q->query = frame + off;
    q->query_len = (uint32_t)n;
    off += (size_t)n;
    q->fields = NULL;
    q->fields_len = 0;
    if (off < len) {
        n = doc_extent(frame + off, len - off);
        if (n < 0 || off + (size_t)n != len)
            return -EPROTO;
        q->fields = frame + off;
        q->fields_len = (uint32_t)n;
    }
    return 0;
}

int wire_reply_parse(const uint8_t *frame, size_t len, struct wire_reply *r)
{
    int rc = frame_header(frame, len, WIRE_OP_REPLY, &r->h);
    if (rc < 0)
        return rc;
    if (len < WIRE_HEADER_LEN + 20)
        return -EPROTO;
    r->flags = wire_get_i32(frame + 16);
    r->cursor_id = wire_get_i64(frame + 20);
    r->starting_from = wire_get_i32(frame + 28);
    r->n_returned = wire_get_i32(frame + 32);
    r->docs = frame + 36;
    r->docs_len = (uint32_t)(len - 36);
    if (r->n_returned < 0)
        return -EPROTO;
    /* Verify that exactly n_returned documents fill the rest. */
    size_t off = 0;
    for (int32_t i = 0; i < r->n_returned; i++) {
        int64_t n = doc_extent(r->docs + off, r->docs_len - off);
        if (n < 0)
            return -EPROTO;
        off += (size_t)n;
    }
    if (off != r->docs_len)
        return -EPROTO;
    return 0;
}

int wire_get_more_parse(const uint8_t *frame, size_t len, struct wire_get_more *g)
{
    int rc = frame_header(frame, len, WIRE_OP_GET_MORE, &g->h);
    if (rc < 0)
        return rc;
    size_t off = WIRE_HEADER_LEN + 4; /* ZERO */
    if (len < off + 1)
        return -EPROTO;
    int64_t ns_len = cstring_extent(frame + off, len - off);
    if (ns_len < 0)
        return -EPROTO;
    g->ns = (const char *)frame + off;
    off += (size_t)ns_len + 1;
    if (len - off != 12)
        return -EPROTO;
    g->n_return = wire_get_i32(frame + off);
    g->cursor_id = wire_get_i64(frame + off + 4);
    return 0;
}

int wire_kill_cursors_parse(const uint8_t *frame, size_t len, struct wire_kill_cursors *k)
{
    int rc = frame_header(frame, len, WIRE_OP_KILL_CURSORS, &k->h);
    if (rc < 0)
        return rc;
    if (len < WIRE_HEADER_LEN + 8)
        return -EPROTO;
    k->n_ids = wire_get_i32(frame + 20);
    if (k->n_ids < 0 || (size_t)k->n_ids * 8 != len - WIRE_HEADER_LEN - 8)
        return -EPROTO;
    k->ids = frame + 24;
    return 0;
}

/* --- building ------------------------------------------------------------------------------ */

int wire_buf_reserve(struct wire_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int wire_buf_append(struct wire_buf *b, const void *p, size_t n)
{
    int rc = wire_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void wire_buf_reset(struct wire_buf *b)
{
    b->len = 0;
}

void wire_buf_free(struct wire_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Starts a frame: reserves room and writes a header whose length is fixed up by frame_end().
 * Returns the frame's offset in b, or a negative errno. */
static int64_t frame_begin(struct wire_buf *b, size_t hint, int32_t request_id, int32_t response_to,
                           int32_t opcode)
{
    if (wire_buf_reserve(b, WIRE_HEADER_LEN + hint) < 0)
        return -ENOMEM;
    size_t start = b->len;
    struct wire_header h = {0, request_id, response_to, opcode};
    wire_header_write(b->data + start, &h);
    b->len += WIRE_HEADER_LEN;
    return (int64_t)start;
}

static void frame_end(struct wire_buf *b, size_t start)
{
    wire_put_i32(b->data + start, (int32_t)(b->len - start));
}

static int append_i32(struct wire_buf *b, int32_t v)
{
    uint8_t tmp[4];
    wire_put_i32(tmp, v);
    return wire_buf_append(b, tmp, 4);
}

static int append_i64(struct wire_buf *b, int64_t v)
{
    uint8_t tmp[8];
    wire_put_i64(tmp, v);
    return wire_buf_append(b, tmp, 8);
}

static int append_doc(struct wire_buf *b, const bson_t *doc)
{
    return wire_buf_append(b, bson_get_data(doc), doc->len);
}

int wire_append_msg(struct wire_buf *b, int32_t request_id, int32_t response_to, uint32_t flags,
                    const bson_t *body)
{
    return wire_append_msg_seq(b, request_id, response_to, flags, body, NULL, NULL, 0);
}

int wire_append_msg_seq(struct wire_buf *b, int32_t request_id, int32_t response_to, uint32_t flags,
                        const bson_t *body, const char *identifier, const bson_t *const *docs,
                        int n)
{
    size_t before = b->len;
    int64_t start = frame_begin(b, 5 + body->len, request_id, response_to, WIRE_OP_MSG);
    if (start < 0)
        return (int)start;
    uint8_t kind0 = 0;
    int rc = append_i32(b, (int32_t)(flags & ~WIRE_MSG_CHECKSUM_PRESENT));
    rc = rc ? rc : wire_buf_append(b, &kind0, 1);
    rc = rc ? rc : append_doc(b, body);
    if (!rc && identifier) {
        uint8_t kind1 = 1;
        rc = wire_buf_append(b, &kind1, 1);
        size_t size_at = b->len;
        rc = rc ? rc : append_i32(b, 0);
        rc = rc ? rc : wire_buf_append(b, identifier, strlen(identifier) + 1);
        for (int i = 0; !rc && i < n; i++)
            rc = append_doc(b, docs[i]);
        if (!rc)
            wire_put_i32(b->data + size_at, (int32_t)(b->len - size_at));
    }
    if (rc) {
        b->len = before;
        return rc;
    }
    frame_end(b, (size_t)start);
    return 0;
}

int wire_append_msg_with_field(struct wire_buf *b, const struct wire_msg *m, const char *key,
                               const bson_t *value)
{
    size_t before = b->len;
    bson_t body, copy;
    if (!bson_init_static(&body, m->body, m->body_len))
        return -EPROTO;
    /* A field of the same name is replaced, not repeated. */
    bson_init(&copy);
    bson_copy_to_excluding_noinit(&body, &copy, key, NULL);
    bson_append_document(&copy, key, -1, value);
    int64_t start =
        frame_begin(b, 5 + copy.len + m->h.length, m->h.request_id, m->h.response_to, WIRE_OP_MSG);
    int rc = start < 0 ? (int)start : 0;
    uint8_t kind = 0;
    rc = rc ? rc : append_i32(b, (int32_t)(m->flags & ~WIRE_MSG_CHECKSUM_PRESENT));
    rc = rc ? rc : wire_buf_append(b, &kind, 1);
    rc = rc ? rc : append_doc(b, &copy);
    for (int i = 0; !rc && i < m->nseq; i++) {
        const struct wire_doc_seq *sq = &m->seq[i];
        size_t idlen = strlen(sq->identifier) + 1;
        kind = 1;
        rc = wire_buf_append(b, &kind, 1);
        rc = rc ? rc : append_i32(b, (int32_t)(4 + idlen + sq->len));
        rc = rc ? rc : wire_buf_append(b, sq->identifier, idlen);
        rc = rc ? rc : wire_buf_append(b, sq->docs, sq->len);
    }
    bson_destroy(&copy);
    if (rc) {
        b->len = before;
        return rc;
    }
    frame_end(b, (size_t)start);
    return 0;
}

int wire_append_reply(struct wire_buf *b, int32_t request_id, int32_t response_to, int32_t flags,
                      int64_t cursor_id, int32_t starting_from, const bson_t *const *docs, int n)
{
    size_t before = b->len;
    int64_t start = frame_begin(b, 20, request_id, response_to, WIRE_OP_REPLY);
    if (start < 0)
        return (int)start;
    int rc = append_i32(b, flags);
    rc = rc ? rc : append_i64(b, cursor_id);
    rc = rc ? rc : append_i32(b, starting_from);
    rc = rc ? rc : append_i32(b, n);
    for (int i = 0; !rc && i < n; i++)
        rc = append_doc(b, docs[i]);
    if (rc) {
        b->len = before;
        return rc;
    }
    frame_end(b, (size_t)start);
    return 0;
}

int wire_append_query(struct wire_buf *b, int32_t request_id, int32_t flags, const char *ns,
                      int32_t skip, int32_t n_return, const bson_t *query)
{
    size_t before = b->len;
    int64_t start = frame_begin(b, 16 + strlen(ns) + query->len, request_id, 0, WIRE_OP_QUERY);
    if (start < 0)
        return (int)start;
    int rc = append_i32(b, flags);
    rc = rc ? rc : wire_buf_append(b, ns, strlen(ns) + 1);
    rc = rc ? rc : append_i32(b, skip);
    rc = rc ? rc : append_i32(b, n_return);
    rc = rc ? rc : append_doc(b, query);
    if (rc) {
        b->len = before;
        return rc;
    }
    frame_end(b, (size_t)start);
    return 0;
}

void wire_msg_strip_checksum(uint8_t *frame, size_t *len)
{
    if (*len < WIRE_HEADER_LEN + 4 + 4)
        return;
    uint32_t flags = (uint32_t)wire_get_i32(frame + 16);
    if (!(flags & WIRE_MSG_CHECKSUM_PRESENT))
        return;
    wire_put_i32(frame + 16, (int32_t)(flags & ~WIRE_MSG_CHECKSUM_PRESENT));
    *len -= 4;
    wire_put_i32(frame, (int32_t)*len);
}

/* CRC-32C with the reflected polynomial 0x82F63B78, computed bitwise from a table built once.
 * Only tests use it, so a simple table is enough. */
uint32_t wire_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    static bool ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    crc = ~crc;
    while (n--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

const char *wire_opcode_name(int32_t opcode)
{
    switch (opcode) {
    case WIRE_OP_REPLY:
        return "OP_REPLY";
    case WIRE_OP_UPDATE:
        return "OP_UPDATE";
    case WIRE_OP_INSERT:
        return "OP_INSERT";
    case WIRE_OP_QUERY:
        return "OP_QUERY";
    case WIRE_OP_GET_MORE:
        return "OP_GET_MORE";
    case WIRE_OP_DELETE:
        return "OP_DELETE";
    case WIRE_OP_KILL_CURSORS:
        return "OP_KILL_CURSORS";
    case WIRE_OP_COMPRESSED:
        return "OP_COMPRESSED";
    case WIRE_OP_MSG:
        return "OP_MSG";
    default:
        return "unknown";
    }
}
