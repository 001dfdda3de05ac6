/*
 * fuzz_wire.c: the wire-protocol parsers on arbitrary bytes: wire_header_parse, wire_msg_parse
 * (and wire_doc_seq_next over each sequence, wire_msg_body, wire_command_name,
 * wire_msg_strip_checksum), wire_query_parse, wire_reply_parse, wire_get_more_parse and
 * wire_kill_cursors_parse.
 *
 * Each input is parsed as it is, then, if it has a header, again with its length fixed up to the
 * input's size and its opcode set to each parser's in turn, so that every input reaches every
 * parser. What a parser accepts is read in full and checked to lie inside the frame.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A document a parser returned: inside the frame, at least 5 bytes, its own length, NUL-ended. */
static void check_doc(const uint8_t *doc, uint32_t len, const uint8_t *f, size_t flen)
{
    FUZZ_CHECK(fuzz_within(doc, len, f, flen));
    FUZZ_CHECK(len >= 5);
    FUZZ_CHECK((uint32_t)wire_get_i32(doc) == len);
    FUZZ_CHECK(doc[len - 1] == 0);
}

/* A C string a parser returned: it ends inside the frame. */
static void check_cstring(const char *s, const uint8_t *f, size_t flen)
{
    FUZZ_CHECK(fuzz_within(s, 1, f, flen));
    size_t room = flen - (size_t)((const uint8_t *)s - f);
    FUZZ_CHECK(memchr(s, 0, room) != NULL);
}

static void parse_msg(const uint8_t *f, size_t len)
{
    struct wire_msg m;
    int rc = wire_msg_parse(f, len, &m);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
    if (rc < 0)
        return;
    check_doc(m.body, m.body_len, f, len);
    FUZZ_CHECK(f + m.body_offset == m.body);
    FUZZ_CHECK(m.nseq >= 0 && m.nseq <= WIRE_MAX_DOC_SEQUENCES);
    bson_t body;
    FUZZ_CHECK(wire_msg_body(&m, &body));
    const char *name = wire_command_name(&body);
    if (name)
        fuzz_touch(name, strlen(name));
    for (int i = 0; i < m.nseq; i++) {
        const struct wire_doc_seq *s = &m.seq[i];
        check_cstring(s->identifier, f, len);
        FUZZ_CHECK(fuzz_within(s->docs, s->len, f, len));
        uint32_t off = 0, dlen;
        const uint8_t *d;
        int r;
        while ((r = wire_doc_seq_next(s, &off, &d, &dlen)) == 1) {
            check_doc(d, dlen, s->docs, s->len);
            fuzz_touch(d, dlen);
        }
        /* wire_msg_parse walked every sequence already, so none can be malformed now. */
        FUZZ_CHECK(r == 0 && off == s->len);
    }
    if (m.flags & WIRE_MSG_CHECKSUM_PRESENT) {
        /* Without its checksum the message still parses, with the same sections. */
        uint8_t *copy = malloc(len);
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, f, len);
        size_t len2 = len;
        wire_msg_strip_checksum(copy, &len2);
        FUZZ_CHECK(len2 == len - 4);
        struct wire_msg m2;
        FUZZ_CHECK(wire_msg_parse(copy, len2, &m2) == 0);
        FUZZ_CHECK(!(m2.flags & WIRE_MSG_CHECKSUM_PRESENT));
        FUZZ_CHECK(m2.nseq == m.nseq && m2.body_len == m.body_len);
        FUZZ_CHECK(m2.body_offset == m.body_offset);
        free(copy);
    }
}

static void parse_others(const uint8_t *f, size_t len)
{
    struct wire_query q;
    int rc = wire_query_parse(f, len, &q);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
    if (rc == 0) {
        check_cstring(q.ns, f, len);
        check_doc(q.query, q.query_len, f, len);
        if (q.fields)
            check_doc(q.fields, q.fields_len, f, len);
    }

    struct wire_reply r;
    rc = wire_reply_parse(f, len, &r);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
    if (rc == 0) {
        FUZZ_CHECK(r.n_returned >= 0);
        FUZZ_CHECK(fuzz_within(r.docs, r.docs_len, f, len));
        /* The documents fill the rest exactly. */
        uint32_t off = 0;
        for (int32_t i = 0; i < r.n_returned; i++) {
            FUZZ_CHECK(r.docs_len - off >= 5);
            uint32_t n = (uint32_t)wire_get_i32(r.docs + off);
            check_doc(r.docs + off, n, r.docs, r.docs_len);
            off += n;
        }
        FUZZ_CHECK(off == r.docs_len);
    }

    struct wire_get_more g;
    rc = wire_get_more_parse(f, len, &g);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
    if (rc == 0)
        check_cstring(g.ns, f, len);

    struct wire_kill_cursors k;
    rc = wire_kill_cursors_parse(f, len, &k);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
    if (rc == 0) {
        FUZZ_CHECK(k.n_ids >= 0);
        FUZZ_CHECK(fuzz_within(k.ids, 8 * (size_t)k.n_ids, f, len));
        int64_t sum = 0;
        for (int i = 0; i < k.n_ids; i++)
            sum += wire_kill_cursors_id(&k, i) & 1;
        fuzz_sink = (uint8_t)sum;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wire_header h;
    int rc = wire_header_parse(data, size, WIRE_MAX_MESSAGE_SIZE, &h);
    FUZZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EMSGSIZE);
    FUZZ_CHECK(rc != -EAGAIN || size < WIRE_HEADER_LEN);
    if (rc == 0)
        FUZZ_CHECK(h.length >= WIRE_HEADER_LEN && h.length <= WIRE_MAX_MESSAGE_SIZE);

    parse_msg(data, size);
    parse_others(data, size);

    if (size < WIRE_HEADER_LEN || size > WIRE_MAX_MESSAGE_SIZE)
        return 0;
    /* An exactly sized copy, so that AddressSanitizer sees any read past the frame. */
    uint8_t *f = malloc(size);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data, size);
    wire_put_i32(f, (int32_t)size);
    static const int32_t ops[] = {WIRE_OP_MSG, WIRE_OP_QUERY, WIRE_OP_REPLY, WIRE_OP_GET_MORE,
                                  WIRE_OP_KILL_CURSORS};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        wire_put_i32(f + 12, ops[i]);
        FUZZ_CHECK(wire_header_parse(f, size, WIRE_MAX_MESSAGE_SIZE, &h) == 0);
        FUZZ_CHECK((size_t)h.length == size && h.opcode == ops[i]);
        if (ops[i] == WIRE_OP_MSG)
            parse_msg(f, size);
        else
            parse_others(f, size);
    }
    free(f);
    return 0;
}
