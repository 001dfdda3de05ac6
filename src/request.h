/*
 * request.h: classifying a client's wire message before routing it.
 *
 * From one frame this reads what routing needs and nothing more: the opcode and flags, the
 * command name and $db, the cursor ids of getMore and killCursors, the session fields (lsid,
 * txnNumber, startTransaction, autocommit), and $readPreference. Pure: no allocation, no I/O; the
 * result points into the frame.
 */
#ifndef MONGOLB_REQUEST_H
#define MONGOLB_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* What the router does with a request. */
enum request_kind {
    REQ_FORWARD = 0,         /* send to a server picked by selection (or a transaction's pin) */
    REQ_HELLO,               /* hello / isMaster / ismaster: answered locally */
    REQ_STATUS,              /* mongolbStatus: answered locally */
    REQ_GET_MORE,            /* getMore command: to the cursor's owner */
    REQ_KILL_CURSORS,        /* killCursors command: split by owner */
    REQ_LEGACY_GET_MORE,     /* OP_GET_MORE: to the cursor's owner */
    REQ_LEGACY_KILL_CURSORS, /* OP_KILL_CURSORS: split by owner, no reply */
    REQ_AUTH,                /* saslStart, saslContinue, authenticate, logout: answered locally */
    REQ_UNSUPPORTED,         /* a frame we refuse: the connection is closed with a log line */
};

struct request_info {
    enum request_kind kind;
    int32_t opcode;
    int32_t request_id;
    uint32_t msg_flags;   /* OP_MSG flags */
    bool more_to_come;    /* no reply is expected */
    bool exhaust_allowed; /* the reply may stream */
    bool legacy;          /* arrived as OP_QUERY: answer with OP_REPLY */

    char command[48]; /* the command name, or "" */
    char db[128];

    /* Cursors. */
    int64_t cursor_id; /* getMore / OP_GET_MORE */
    bool opens_cursor; /* find, aggregate, listCollections, listIndexes */
    int n_kill_ids;    /* killCursors / OP_KILL_CURSORS */

    /* What kind of operation it is, for retries. */
    bool retryable_read; /* find, aggregate without $out/$merge, count, distinct, list* */
    bool is_write;       /* needs a primary in replica-set mode */

    /* Sessions and transactions. */
    bool has_lsid;
    uint8_t lsid[16];
    bool has_txn_number;
    int64_t txn_number;
    bool autocommit_false;
    bool start_transaction;

    /* The command's maxTimeMS (0 when absent), so that mongolb's own request timeout never cuts
     * a command short of the limit its client gave it. */
    int64_t max_time_ms;

    /* Read preference. */
    bool has_read_pref;
    char read_pref_mode[32];
    const uint8_t *read_pref_doc; /* the $readPreference document, inside the frame */
    uint32_t read_pref_len;
    bool secondary_ok; /* OP_QUERY flag bit 2 */

    /* hello */
    bool hello_ok;     /* the client asked for helloOk */
    bool legacy_hello; /* isMaster/ismaster rather than hello: reply with "ismaster" */

    /* Not read from the frame: the user the sending client is logged in as (auth.h's owner id,
     * 0 when none), set by the client so that pins can remember their user. */
    uint32_t owner;
};

/*
 * Classifies a whole frame (len bytes, header length already checked). Every BSON document a
 * client sent is checked with bson_check() (bson_check.h): the OP_MSG body, each document of each
 * kind-1 sequence, and the OP_QUERY query (with any $query inside it) and projection. Returns, with
 * a reason in err for the log line or the error reply:
 *   0           success; *ri is filled.
 *   -EPROTO     a malformed frame or document: close that client's connection.
 *   -EOVERFLOW  well framed, but a document nests deeper than BSON_CHECK_MAX_DEPTH: answer, as
 *               mongod does, with an error document (BSON_CHECK_DEPTH_ERROR_CODE, _NAME) rather
 *               than closing, and forward nothing. ri->opcode, request_id, legacy, msg_flags,
 *               more_to_come (no reply is expected then) and exhaust_allowed are filled, and
 *               command and db as far as they could be read; ri->kind means nothing.
 *   -ENOTSUP    an opcode mongolb does not accept from clients (OP_COMPRESSED, fire-and-forget
 *               legacy writes, OP_REPLY, unknown).
 */
int request_classify(const uint8_t *frame, size_t len, struct request_info *ri, char *err,
                     size_t err_len);

/* Collects the cursor ids a killCursors command or OP_KILL_CURSORS names, up to max. Returns the
 * count, or -EPROTO. */
int request_kill_ids(const uint8_t *frame, size_t len, int64_t *ids, int max);

/* True for the commands whose reply may open a cursor. */
bool request_command_opens_cursor(const char *name);

#endif
