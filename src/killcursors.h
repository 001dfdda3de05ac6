/*
 * killcursors.h: a killCursors split by owner, and the owners' answers merged.
 *
 * A client's killCursors (or legacy OP_KILL_CURSORS) may name cursors of several servers. The
 * ids are grouped by owner from the cursor table; each owner gets a part with only its ids (its
 * real ids, where a colliding id was rewritten), and the four arrays of the answers are merged
 * into one reply in the client's ids. Ids no server owns are reported in cursorsNotFound without
 * asking anyone. Pure: the cursor table is passed in, nothing here does I/O.
 *
 * A killCursors naming more than KC_MAX_IDS cursors is refused: its merged reply could pass the
 * 16 MB document limit, and no driver sends more than a batch of ids at once.
 */
#ifndef MONGOLB_KILLCURSORS_H
#define MONGOLB_KILLCURSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "cursors.h"
#include "wire.h"

#define KC_MAX_IDS 100000

struct kc {
    int64_t *ids;  /* client-visible ids, in request order */
    int64_t *real; /* the owners' own ids for them, read once at the start: an entry may leave
                      the table before its owner is asked */
    int *owner;    /* owning server per id, or -1 once settled */
    int n;
    bool legacy; /* OP_KILL_CURSORS: no reply is sent */
    /* The merged answer, as arrays being built. Allocated by kc_begin only: every client embeds
     * a struct kc, and four bson_t (512 bytes) in each idle client would be paid for nothing. */
    struct kc_answer {
        bson_t killed, not_found, alive, unknown;
    } * ans;
    int n_killed, n_not_found, n_alive, n_unknown;
    bool active;
};

/*
 * Starts a killCursors from the client's frame: reads its ids (at most KC_MAX_IDS), looks up
 * their owners and settles the unknown ones. Returns 0, -EPROTO (malformed), -E2BIG (too many
 * ids) or -ENOMEM. kc_end() must follow a successful start.
 */
MLB_MUSTCHECK int kc_begin(struct kc *k, const uint8_t *frame, size_t len, int32_t opcode,
                           int n_ids, struct cursor_table *t, int64_t now_ms);

/* The next owner to ask, or -1 when every id is settled. */
int kc_next_owner(const struct kc *k);

/*
 * Builds the part for owner into out: an OP_MSG killCursors with the client's other fields (from
 * frame) and only this owner's real ids, or an OP_KILL_CURSORS. For OP_KILL_CURSORS, which gets
 * no reply, the ids are settled (and forgotten) at once. Returns 0 or -ENOMEM.
 */
MLB_MUSTCHECK int kc_build_part(struct kc *k, int owner, const uint8_t *frame, size_t len,
                                int32_t request_id, struct cursor_table *t, int64_t now_ms,
                                struct wire_buf *out);

/* Merges owner's answer (reply frame, or NULL when that owner could not be asked: its ids go to
 * cursorsUnknown) and settles its ids. */
void kc_merge(struct kc *k, int owner, const uint8_t *reply, size_t len, struct cursor_table *t,
              int64_t now_ms);

/* The merged reply: {cursorsKilled, cursorsNotFound, cursorsAlive, cursorsUnknown, ok: 1}. */
void kc_build_reply(struct kc *k, bson_t *doc);

/* Frees what kc_begin allocated. Safe to call more than once. */
void kc_end(struct kc *k);

#endif
