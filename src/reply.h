/*
 * reply.h: what a backend's reply says, read in place before it is relayed.
 *
 * Pure: no allocation, no I/O. From one reply frame (OP_MSG or OP_REPLY) it reads whether the
 * command succeeded, its error code and labels, and the cursor id a reply opens or continues,
 * with that id's offset in the frame so that a colliding id can be rewritten in its 8 bytes.
 */
#ifndef MONGOLB_REPLY_H
#define MONGOLB_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct reply_info {
    int32_t opcode;
    int32_t request_id;
    bool more_to_come;    /* OP_MSG moreToCome: an exhaust stream continues */
    bool ok;              /* false when the body says ok: 0 (or no body could be read) */
    int32_t code;         /* the error code; 0 when ok, -1 for an error without a code */
    bool retry_label;     /* errorLabels holds RetryableWriteError */
    bool transient_label; /* errorLabels holds TransientTransactionError */
    bool has_cursor;      /* a cursor id was found (cursor.id, or OP_REPLY's cursorID) */
    int64_t cursor_id;
    size_t cursor_id_off;  /* where its 8 bytes are in the frame */
    bool legacy_not_found; /* OP_REPLY's CursorNotFound flag */
    const uint8_t *body;   /* the reply document, inside the frame, or NULL */
    uint32_t body_len;
};

/*
 * Reads a reply frame of exactly len bytes. command says whether it answers a command (an OP_MSG,
 * or an OP_QUERY on $cmd) rather than a legacy query or OP_GET_MORE, whose OP_REPLY documents are
 * data. Returns 0, or -EPROTO when the frame cannot be read (it is then relayed as it is, and
 * nothing is learnt from it).
 */
MLB_MUSTCHECK int reply_inspect(const uint8_t *frame, size_t len, bool command,
                                struct reply_info *out);

#endif
