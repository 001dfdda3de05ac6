/*
 * request.c: classifying a client's wire message before routing it. See request.h.
 */
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bson_check.h"

/*
 * What the router needs to know of a command's name, from one sorted table searched by bisection
 * (about five comparisons), instead of chains of strcmp on every request. Names not listed are
 * ordinary commands: forwarded with the read preference, not retried as reads, not writes.
 */
enum {
    CMD_OPENS_CURSOR = 1,   /* its reply may hold a cursor that getMores follow */
    CMD_RETRYABLE_READ = 2, /* the retryable reads specification's list */
    CMD_WRITE = 4,          /* a failure counts as a write's for retries */
    CMD_AGGREGATE = 8,      /* a read unless its pipeline ends in $out or $merge */
    CMD_HELLO = 16,         /* answered by mongolb: hello */
    CMD_LEGACY_HELLO = 32,  /* answered by mongolb: isMaster, ismaster */
    CMD_STATUS = 64,        /* answered by mongolb: mongolbStatus */
    CMD_GET_MORE = 128,     /* routed to its cursor's owner */
    CMD_KILL_CURSORS = 256, /* split by owner */
    CMD_AUTH = 512,         /* a login command, answered by mongolb */
};

struct command_class {
    const char *name;
    unsigned flags;
};

/* Sorted by strcmp order (upper case before lower case). */
static const struct command_class command_classes[] = {
    {"abortTransaction", CMD_WRITE},
    {"aggregate", CMD_OPENS_CURSOR | CMD_RETRYABLE_READ | CMD_AGGREGATE},
    {"authenticate", CMD_AUTH},
    {"bulkWrite", CMD_WRITE},
    {"collMod", CMD_WRITE},
    {"commitTransaction", CMD_WRITE},
    {"count", CMD_RETRYABLE_READ},
    {"create", CMD_WRITE},
    {"createIndexes", CMD_WRITE},
    {"delete", CMD_WRITE},
    {"distinct", CMD_RETRYABLE_READ},
    {"drop", CMD_WRITE},
    {"dropDatabase", CMD_WRITE},
    {"dropIndexes", CMD_WRITE},
    {"find", CMD_OPENS_CURSOR | CMD_RETRYABLE_READ},
    {"findAndModify", CMD_WRITE},
    {"findandmodify", CMD_WRITE},
    {"getMore", CMD_GET_MORE},
    {"hello", CMD_HELLO},
    {"insert", CMD_WRITE},
    {"isMaster", CMD_LEGACY_HELLO},
    {"ismaster", CMD_LEGACY_HELLO},
    {"killCursors", CMD_KILL_CURSORS},
    {"listCollections", CMD_OPENS_CURSOR | CMD_RETRYABLE_READ},
    {"listDatabases", CMD_RETRYABLE_READ},
    {"listIndexes", CMD_OPENS_CURSOR | CMD_RETRYABLE_READ},
    {"logout", CMD_AUTH},
    {"mongolbStatus", CMD_STATUS},
    {"renameCollection", CMD_WRITE},
    {"saslContinue", CMD_AUTH},
    {"saslStart", CMD_AUTH},
    {"update", CMD_WRITE},
};

static unsigned command_flags(const char *name)
{
    size_t lo = 0, hi = sizeof(command_classes) / sizeof(command_classes[0]);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(name, command_classes[mid].name);
        if (cmp == 0)
            return command_classes[mid].flags;
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

bool request_command_opens_cursor(const char *name)
{
    return (command_flags(name) & CMD_OPENS_CURSOR) != 0;
}

/* Copies a NUL-terminated string into a fixed field, truncating; cheaper than snprintf("%s") on
 * the request path. */
static void copy_field(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* True when an aggregate pipeline ends in a stage that writes. */
static bool pipeline_writes(const bson_t *cmd)
{
    bson_iter_t it, stages, stage;
    if (!bson_iter_init_find(&it, cmd, "pipeline") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &stages))
        return false;
    while (bson_iter_next(&stages)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&stages) || !bson_iter_recurse(&stages, &stage) ||
            !bson_iter_next(&stage))
            continue;
        const char *k = bson_iter_key(&stage);
        if (strcmp(k, "$out") == 0 || strcmp(k, "$merge") == 0)
            return true;
    }
    return false;
}

/* Reads the session and read-preference fields of a command document into ri. */
static void read_command_fields(const bson_t *cmd, struct request_info *ri)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd))
        return;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        /* Most keys of a command are none of these: one look at the first letter skips them. */
        switch (k[0]) {
        case '$':
        case 'l':
        case 't':
        case 'a':
        case 's':
        case 'm':
        case 'h':
            break;
        default:
            continue;
        }
        if (k[0] == '$' && strcmp(k, "$db") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
            copy_field(ri->db, sizeof(ri->db), bson_iter_utf8(&it, NULL));
        } else if (strcmp(k, "lsid") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bson_iter_t l;
            if (bson_iter_recurse(&it, &l) && bson_iter_find(&l, "id") &&
                BSON_ITER_HOLDS_BINARY(&l)) {
                bson_subtype_t st;
                uint32_t n;
                const uint8_t *bin;
                bson_iter_binary(&l, &st, &n, &bin);
                if (n == 16) {
                    memcpy(ri->lsid, bin, 16);
                    ri->has_lsid = true;
                }
            }
        } else if (strcmp(k, "txnNumber") == 0 && BSON_ITER_HOLDS_NUMBER(&it)) {
            ri->has_txn_number = true;
            ri->txn_number = bson_iter_as_int64(&it);
        } else if (strcmp(k, "autocommit") == 0) {
            ri->autocommit_false = !bson_iter_as_bool(&it);
        } else if (strcmp(k, "startTransaction") == 0) {
            ri->start_transaction = bson_iter_as_bool(&it);
        } else if (strcmp(k, "$readPreference") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bson_iter_t rp;
            ri->has_read_pref = true;
            bson_iter_document(&it, &ri->read_pref_len, &ri->read_pref_doc);
            if (bson_iter_recurse(&it, &rp) && bson_iter_find(&rp, "mode") &&
                BSON_ITER_HOLDS_UTF8(&rp))
                copy_field(ri->read_pref_mode, sizeof(ri->read_pref_mode),
                           bson_iter_utf8(&rp, NULL));
        } else if (strcmp(k, "maxTimeMS") == 0 && BSON_ITER_HOLDS_NUMBER(&it)) {
            int64_t v = bson_iter_as_int64(&it);
            ri->max_time_ms = v > 0 ? v : 0;
        } else if (strcmp(k, "helloOk") == 0) {
            ri->hello_ok = bson_iter_as_bool(&it);
        }
    }
}

/* Fills the command-derived fields of ri from a command document. */
static int classify_command(const bson_t *cmd, struct request_info *ri, char *err, size_t err_len)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it)) {
        snprintf(err, err_len, "empty command document");
        return -EPROTO;
    }
    copy_field(ri->command, sizeof(ri->command), bson_iter_key(&it));
    read_command_fields(cmd, ri);
    unsigned f = command_flags(ri->command);
    if (f & (CMD_HELLO | CMD_LEGACY_HELLO)) {
        ri->kind = REQ_HELLO;
        ri->legacy_hello = (f & CMD_LEGACY_HELLO) != 0;
    } else if (f & CMD_STATUS) {
        ri->kind = REQ_STATUS;
    } else if (f & CMD_AUTH) {
        /* Logins end in mongolb, never on a pooled connection that other clients share. */
        ri->kind = REQ_AUTH;
    } else if (f & CMD_GET_MORE) {
        if (!BSON_ITER_HOLDS_INT64(&it) && !BSON_ITER_HOLDS_INT32(&it)) {
            snprintf(err, err_len, "getMore without an integer cursor id");
            return -EPROTO;
        }
        ri->kind = REQ_GET_MORE;
        ri->cursor_id = bson_iter_as_int64(&it);
    } else if (f & CMD_KILL_CURSORS) {
        ri->kind = REQ_KILL_CURSORS;
        bson_iter_t c, ids;
        if (bson_iter_init_find(&c, cmd, "cursors") && BSON_ITER_HOLDS_ARRAY(&c) &&
            bson_iter_recurse(&c, &ids)) {
            while (bson_iter_next(&ids))
                ri->n_kill_ids++;
        }
    } else {
        ri->kind = REQ_FORWARD;
        bool agg_writes = (f & CMD_AGGREGATE) && pipeline_writes(cmd);
        ri->opens_cursor = (f & CMD_OPENS_CURSOR) != 0;
        ri->retryable_read = (f & CMD_RETRYABLE_READ) && !agg_writes;
        ri->is_write = (f & CMD_WRITE) || agg_writes;
    }
    return 0;
}

/*
 * Checks one document a client sent with bson_check(), at mongod's depth limit. what names the
 * document in the reason written to err. Returns 0, -EPROTO or -EOVERFLOW.
 *
 * Why every document is checked whole rather than only the fields routing reads: the documents
 * are forwarded as they are to servers shared by every client, and mongolb itself walks parts of
 * them later (a killCursors' ids, a hello's fields, an error's labels), so a malformed or too
 * deep document must cost its sender the connection here, with mongod's own error, before it
 * reaches anything shared. The check is one linear pass without recursion or allocation; under
 * a find-by-_id load it is about 0.2% of mongolb's CPU time (perf record, make bench's find_id
 * at 64 connections), against about 88% in the kernel, so checking less would gain nothing
 * measurable. The fuzz targets fuzz_request and fuzz_bson_check keep it honest.
 */
static int check_doc(const uint8_t *doc, size_t len, const char *what, char *err, size_t err_len)
{
    char why[160];
    int rc = bson_check(doc, len, BSON_CHECK_MAX_DEPTH, why, sizeof(why));
    if (rc < 0)
        snprintf(err, err_len, "%s in %s", why, what);
    return rc;
}

/*
 * Checks every document of every kind-1 section of m. They are forwarded as they are, so one
 * malformed document would reach the server, which answers it by closing the connection; one
 * client could so keep breaking pooled connections. Returns 0, -EPROTO or -EOVERFLOW.
 */
static int check_sequences(const struct wire_msg *m, char *err, size_t err_len)
{
    for (int i = 0; i < m->nseq; i++) {
        uint32_t off = 0, dlen;
        const uint8_t *d;
        int n = 0, r;
        while ((r = wire_doc_seq_next(&m->seq[i], &off, &d, &dlen)) == 1) {
            char what[96];
            snprintf(what, sizeof(what), "document %d of sequence '%.48s'", n++,
                     m->seq[i].identifier);
            int rc = check_doc(d, dlen, what, err, err_len);
            if (rc < 0)
                return rc;
        }
        if (r < 0) {
            snprintf(err, err_len, "malformed document sequence '%.48s'", m->seq[i].identifier);
            return -EPROTO;
        }
    }
    return 0;
}

/*
 * Reads the command name (the first key) and $db of a command document that nests too deeply to
 * be classified, so that the error reply and the log line can name them. Only the top level is
 * read, element by element with libbson's bounds-checked iterator, which does not descend.
 */
static void read_names_shallow(const bson_t *cmd, struct request_info *ri)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, cmd))
        return;
    bool first = true;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (first)
            copy_field(ri->command, sizeof(ri->command), k);
        first = false;
        if (strcmp(k, "$db") == 0 && BSON_ITER_HOLDS_UTF8(&it))
            copy_field(ri->db, sizeof(ri->db), bson_iter_utf8(&it, NULL));
    }
}

int request_classify(const uint8_t *frame, size_t len, struct request_info *ri, char *err,
                     size_t err_len)
{
    memset(ri, 0, sizeof(*ri));
    struct wire_header h;
    if (wire_header_parse(frame, len, INT32_MAX, &h) < 0 || (size_t)h.length != len) {
        snprintf(err, err_len, "bad frame length");
        return -EPROTO;
    }
    ri->opcode = h.opcode;
    ri->request_id = h.request_id;
    bson_t cmd;
    switch (h.opcode) {
    case WIRE_OP_MSG: {
        struct wire_msg m;
        if (wire_msg_parse(frame, len, &m) < 0) {
            snprintf(err, err_len, "malformed OP_MSG");
            return -EPROTO;
        }
        ri->msg_flags = m.flags;
        ri->more_to_come = (m.flags & WIRE_MSG_MORE_TO_COME) != 0;
        ri->exhaust_allowed = (m.flags & WIRE_MSG_EXHAUST_ALLOWED) != 0;
        /* bson_check, not bson_validate: the latter recurses once per level of nesting, and a
         * client decides how deep that goes. */
        int brc = check_doc(m.body, m.body_len, "OP_MSG body", err, err_len);
        if (brc == -EPROTO)
            return brc;
        if (!wire_msg_body(&m, &cmd)) {
            snprintf(err, err_len, "invalid BSON in OP_MSG body");
            return -EPROTO;
        }
        if (brc == -EOVERFLOW) {
            read_names_shallow(&cmd, ri);
            return brc;
        }
        char seq_err[320] = ""; /* room for any reason check_doc() writes */
        int src = check_sequences(&m, seq_err, sizeof(seq_err));
        if (src == -EPROTO) {
            snprintf(err, err_len, "%s", seq_err);
            return src;
        }
        int rc = classify_command(&cmd, ri, err, err_len);
        if (rc < 0)
            return rc;
        if (!ri->db[0]) {
            snprintf(err, err_len, "OP_MSG command '%s' without $db", ri->command);
            return -EPROTO;
        }
        if (src == -EOVERFLOW) {
            /* The body is fine and classified, so the error reply can say what it was for. */
            snprintf(err, err_len, "%s", seq_err);
            return src;
        }
        return 0;
    }
    case WIRE_OP_QUERY: {
        struct wire_query q;
        if (wire_query_parse(frame, len, &q) < 0) {
            snprintf(err, err_len, "malformed OP_QUERY");
            return -EPROTO;
        }
        ri->legacy = true;
        ri->secondary_ok = (q.flags & WIRE_QUERY_SECONDARY_OK) != 0;
        const char *dot = strchr(q.ns, '.');
        size_t dblen = dot ? (size_t)(dot - q.ns) : strlen(q.ns);
        if (dblen >= sizeof(ri->db))
            dblen = sizeof(ri->db) - 1;
        memcpy(ri->db, q.ns, dblen);
        ri->db[dblen] = 0;
        bool is_cmd = dot && strcmp(dot + 1, "$cmd") == 0;
        /* The walk of the query covers a $query document inside it, at its true depth. The
         * projection is forwarded too, so it gets the same check. */
        int qrc = check_doc(q.query, q.query_len, "OP_QUERY query", err, err_len);
        if (qrc == 0 && q.fields)
            qrc = check_doc(q.fields, q.fields_len, "OP_QUERY projection", err, err_len);
        if (qrc == -EPROTO)
            return qrc;
        if (!bson_init_static(&cmd, q.query, q.query_len)) {
            snprintf(err, err_len, "invalid BSON in OP_QUERY");
            return -EPROTO;
        }
        /* A legacy command may be wrapped as {$query: {...}, $readPreference: {...}}. */
        bson_iter_t it, in;
        bson_t inner;
        if (qrc == -EOVERFLOW) {
            /* Name the command for the error reply; only what the iterator bounds-checks is read,
             * since the query was not checked beyond the level that was too deep. */
            if (!is_cmd) {
                snprintf(ri->command, sizeof(ri->command), "%s", "find");
            } else if (bson_iter_init_find(&it, &cmd, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
                       bson_iter_recurse(&it, &in) && bson_iter_next(&in)) {
                snprintf(ri->command, sizeof(ri->command), "%s", bson_iter_key(&in));
            } else if (bson_iter_init(&it, &cmd) && bson_iter_next(&it)) {
                copy_field(ri->command, sizeof(ri->command), bson_iter_key(&it));
            }
            return qrc;
        }
        if (bson_iter_init_find(&it, &cmd, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            uint32_t n;
            const uint8_t *d;
            bson_iter_document(&it, &n, &d);
            if (!bson_init_static(&inner, d, n)) {
                snprintf(err, err_len, "invalid $query document");
                return -EPROTO;
            }
            read_command_fields(&cmd, ri); /* picks up the outer $readPreference */
            cmd = inner;
        }
        if (!is_cmd) {
            /* A legacy find on a collection: servers since 5.1 refuse it, and so do we, by
             * forwarding it so the client gets the server's own error. */
            ri->kind = REQ_FORWARD;
            snprintf(ri->command, sizeof(ri->command), "%s", "find");
            return 0;
        }
        int rc = classify_command(&cmd, ri, err, err_len);
        if (rc == 0 && (ri->kind == REQ_GET_MORE || ri->kind == REQ_KILL_CURSORS)) {
            /* Cursor commands over OP_QUERY: servers since 5.1 refuse them (352), older ones
             * answer them. Either way the server's own answer is the right one, so they are
             * forwarded unchanged rather than routed by cursor. */
            ri->kind = REQ_FORWARD;
        }
        return rc;
    }
    case WIRE_OP_GET_MORE: {
        struct wire_get_more g;
        if (wire_get_more_parse(frame, len, &g) < 0) {
            snprintf(err, err_len, "malformed OP_GET_MORE");
            return -EPROTO;
        }
        ri->kind = REQ_LEGACY_GET_MORE;
        ri->legacy = true;
        ri->cursor_id = g.cursor_id;
        snprintf(ri->command, sizeof(ri->command), "%s", "OP_GET_MORE");
        return 0;
    }
    case WIRE_OP_KILL_CURSORS: {
        struct wire_kill_cursors k;
        if (wire_kill_cursors_parse(frame, len, &k) < 0) {
            snprintf(err, err_len, "malformed OP_KILL_CURSORS");
            return -EPROTO;
        }
        ri->kind = REQ_LEGACY_KILL_CURSORS;
        ri->legacy = true;
        ri->more_to_come = true;
        ri->n_kill_ids = k.n_ids;
        snprintf(ri->command, sizeof(ri->command), "%s", "OP_KILL_CURSORS");
        return 0;
    }
    default:
        ri->kind = REQ_UNSUPPORTED;
        snprintf(err, err_len, "unsupported opcode %d (%s)", h.opcode, wire_opcode_name(h.opcode));
        return -ENOTSUP;
    }
}

int request_kill_ids(const uint8_t *frame, size_t len, int64_t *ids, int max)
{
    struct wire_header h;
    if (wire_header_parse(frame, len, INT32_MAX, &h) < 0)
        return -EPROTO;
    int n = 0;
    if (h.opcode == WIRE_OP_KILL_CURSORS) {
        struct wire_kill_cursors k;
        if (wire_kill_cursors_parse(frame, len, &k) < 0)
            return -EPROTO;
        for (int i = 0; i < k.n_ids && n < max; i++)
            ids[n++] = wire_kill_cursors_id(&k, i);
        return n;
    }
    struct wire_msg m;
    bson_t cmd;
    bson_iter_t c, it;
    if (h.opcode != WIRE_OP_MSG || wire_msg_parse(frame, len, &m) < 0 || !wire_msg_body(&m, &cmd))
        return -EPROTO;
    if (!bson_iter_init_find(&c, &cmd, "cursors") || !BSON_ITER_HOLDS_ARRAY(&c) ||
        !bson_iter_recurse(&c, &it))
        return -EPROTO;
    while (bson_iter_next(&it) && n < max) {
        if (!BSON_ITER_HOLDS_INT64(&it) && !BSON_ITER_HOLDS_INT32(&it))
            return -EPROTO;
        ids[n++] = bson_iter_as_int64(&it);
    }
    return n;
}
