/*
 * reply.c: reading a backend's reply in place. See reply.h.
 */
#include "reply.h"

#include <errno.h>
#include <string.h>

#include "wire.h"

/* Notes the labels of an errorLabels array. */
static void read_labels(bson_iter_t *it, struct reply_info *out)
{
    bson_iter_t arr;
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &arr))
        return;
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_UTF8(&arr))
            continue;
        const char *l = bson_iter_utf8(&arr, NULL);
        if (strcmp(l, "RetryableWriteError") == 0)
            out->retry_label = true;
        else if (strcmp(l, "TransientTransactionError") == 0)
            out->transient_label = true;
    }
}

int reply_inspect(const uint8_t *frame, size_t len, bool command, struct reply_info *out)
{
    memset(out, 0, sizeof(*out));
    out->ok = true;
    struct wire_header h;
    if (wire_header_parse(frame, len, INT32_MAX, &h) < 0 || (size_t)h.length != len)
        return -EPROTO;
    out->opcode = h.opcode;
    out->request_id = h.request_id;
    if (h.opcode == WIRE_OP_MSG) {
        struct wire_msg m;
        if (wire_msg_parse(frame, len, &m) < 0)
            return -EPROTO;
        out->more_to_come = (m.flags & WIRE_MSG_MORE_TO_COME) != 0;
        out->body = m.body;
        out->body_len = m.body_len;
    } else if (h.opcode == WIRE_OP_REPLY) {
        struct wire_reply r;
        if (wire_reply_parse(frame, len, &r) < 0)
            return -EPROTO;
        out->legacy_not_found = (r.flags & WIRE_REPLY_CURSOR_NOT_FOUND) != 0;
        if (r.flags & WIRE_REPLY_QUERY_FAILURE)
            out->ok = false;
        if (!command) {
            /* A legacy query's or getMore's documents are data, not a command reply. */
            out->has_cursor = true;
            out->cursor_id = r.cursor_id;
            out->cursor_id_off = 20;
            if (!out->ok)
                out->code = -1;
            return 0;
        }
        if (r.n_returned >= 1 && r.docs_len >= 5) {
            out->body = r.docs;
            out->body_len = (uint32_t)wire_get_i32(r.docs);
        }
    } else {
        return -EPROTO;
    }
    if (!out->body) {
        if (!out->ok)
            out->code = -1;
        return 0;
    }
    bson_t body;
    bson_iter_t it;
    if (!bson_init_static(&body, out->body, out->body_len) || !bson_iter_init(&it, &body))
        return -EPROTO;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "ok") == 0) {
            out->ok = bson_iter_as_bool(&it);
        } else if (strcmp(k, "code") == 0 && BSON_ITER_HOLDS_NUMBER(&it)) {
            out->code = (int32_t)bson_iter_as_int64(&it);
        } else if (strcmp(k, "errorLabels") == 0) {
            read_labels(&it, out);
        } else if (strcmp(k, "cursor") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it) &&
                   h.opcode == WIRE_OP_MSG) {
            bson_iter_t c;
            if (bson_iter_recurse(&it, &c) && bson_iter_find(&c, "id") &&
                BSON_ITER_HOLDS_INT64(&c)) {
                out->has_cursor = true;
                out->cursor_id = bson_iter_int64(&c);
                out->cursor_id_off = (size_t)((c.raw + c.d1) - frame);
            }
        }
    }
    if (out->ok)
        out->code = 0;
    else if (out->code == 0)
        out->code = -1;
    return 0;
}
