/*
 * killcursors.c: killCursors split by owner and merged. See killcursors.h.
 */
#include "killcursors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

/* Appends id to one of the merged arrays. */
static void note(bson_t *arr, int *n, int64_t id)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", (*n)++);
    bson_append_int64(arr, key, -1, id);
}

int kc_begin(struct kc *k, const uint8_t *frame, size_t len, int32_t opcode, int n_ids,
             struct cursor_table *t, int64_t now_ms)
{
    memset(k, 0, sizeof(*k));
    if (n_ids > KC_MAX_IDS)
        return -E2BIG;
    size_t n = (size_t)(n_ids > 0 ? n_ids : 1);
    k->ids = calloc(n, sizeof(*k->ids));
    k->real = calloc(n, sizeof(*k->real));
    k->owner = calloc(n, sizeof(*k->owner));
    k->ans = malloc(sizeof(*k->ans));
    int got = k->ids && k->real && k->owner && k->ans ? request_kill_ids(frame, len, k->ids, n_ids)
                                                      : -ENOMEM;
    if (got < 0) {
        free(k->ids);
        free(k->real);
        free(k->owner);
        free(k->ans);
        memset(k, 0, sizeof(*k));
        return got == -ENOMEM ? -ENOMEM : -EPROTO;
    }
    k->n = got;
    k->legacy = opcode == WIRE_OP_KILL_CURSORS;
    k->active = true;
    bson_init(&k->ans->killed);
    bson_init(&k->ans->not_found);
    bson_init(&k->ans->alive);
    bson_init(&k->ans->unknown);
    for (int i = 0; i < got; i++) {
        struct cursor_entry *e = cursors_find(t, k->ids[i], now_ms);
        k->owner[i] = e ? e->server : -1;
        k->real[i] = e ? e->real_id : k->ids[i];
        /* Unknown ids are not found anywhere: no server is asked about them. */
        if (!e)
            note(&k->ans->not_found, &k->n_not_found, k->ids[i]);
    }
    return 0;
}

int kc_next_owner(const struct kc *k)
{
    for (int i = 0; i < k->n; i++)
        if (k->owner[i] >= 0)
            return k->owner[i];
    return -1;
}

int kc_build_part(struct kc *k, int owner, const uint8_t *frame, size_t len, int32_t request_id,
                  struct cursor_table *t, int64_t now_ms, struct wire_buf *out)
{
    wire_buf_reset(out);
    if (k->legacy) {
        /* OP_KILL_CURSORS: ZERO, count, ids; no reply comes, so the ids are settled now. */
        int count = 0;
        for (int i = 0; i < k->n; i++)
            count += k->owner[i] == owner;
        struct wire_header h = {16 + 8 + 8 * count, request_id, 0, WIRE_OP_KILL_CURSORS};
        uint8_t hdr[24];
        wire_header_write(hdr, &h);
        wire_put_i32(hdr + 16, 0);
        wire_put_i32(hdr + 20, count);
        if (wire_buf_append(out, hdr, sizeof(hdr)) < 0)
            return -ENOMEM;
        for (int i = 0; i < k->n; i++) {
            if (k->owner[i] != owner)
                continue;
            uint8_t idb[8];
            wire_put_i64(idb, k->real[i]);
            if (wire_buf_append(out, idb, 8) < 0)
                return -ENOMEM;
            cursors_remove(t, k->ids[i]);
            k->owner[i] = -1;
        }
        return 0;
    }
    /* The killCursors command: the client's own fields, with only this owner's ids. */
    struct wire_msg m;
    bson_t body, part = BSON_INITIALIZER, arr;
    bson_iter_t it;
    if (wire_msg_parse(frame, len, &m) < 0 || !wire_msg_body(&m, &body) ||
        !bson_iter_init(&it, &body)) {
        bson_destroy(&part);
        return -EPROTO;
    }
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "cursors") == 0)
            continue;
        bson_append_iter(&part, NULL, 0, &it);
    }
    bson_append_array_begin(&part, "cursors", -1, &arr);
    int j = 0;
    for (int i = 0; i < k->n; i++) {
        if (k->owner[i] != owner)
            continue;
        char key[16];
        snprintf(key, sizeof(key), "%d", j++);
        bson_append_int64(&arr, key, -1, k->real[i]);
    }
    bson_append_array_end(&part, &arr);
    int rc = wire_append_msg(out, request_id, 0, 0, &part);
    bson_destroy(&part);
    return rc;
}

struct id_pos {
    int64_t real;
    int idx;
};

static int cmp_id_pos(const void *a, const void *b)
{
    int64_t x = ((const struct id_pos *)a)->real, y = ((const struct id_pos *)b)->real;
    return x < y ? -1 : x > y;
}

/*
 * Merges owner's answer (reply frame, or NULL when that owner could not be asked: its ids go to
 * cursorsUnknown). The owner's ids are sorted by real id once, so that each id the server lists is
 * found by binary search: a large killCursors costs n log n, not n squared.
 */
void kc_merge(struct kc *k, int owner, const uint8_t *reply, size_t len, struct cursor_table *t,
              int64_t now_ms)
{
    static const char *const arrays[] = {"cursorsKilled", "cursorsNotFound", "cursorsAlive",
                                         "cursorsUnknown"};
    int count = 0;
    for (int i = 0; i < k->n; i++)
        count += k->owner[i] == owner;
    struct id_pos *pos = count ? calloc((size_t)count, sizeof(*pos)) : NULL;
    int *where = count ? calloc((size_t)count, sizeof(*where)) : NULL;
    if (count && (!pos || !where)) {
        free(pos);
        free(where);
        pos = NULL;
        where = NULL;
    }
    int m_ids = 0;
    for (int i = 0; pos && i < k->n; i++) {
        if (k->owner[i] != owner)
            continue;
        where[m_ids] = 3;
        pos[m_ids].real = k->real[i];
        pos[m_ids].idx = m_ids;
        m_ids++;
    }
    struct wire_msg m;
    bson_t body;
    bool parsed = pos && reply && wire_msg_parse(reply, len, &m) == 0 && wire_msg_body(&m, &body);
    if (parsed) {
        qsort(pos, (size_t)m_ids, sizeof(*pos), cmp_id_pos);
        for (int a = 0; a < 4; a++) {
            bson_iter_t it, ids;
            if (!bson_iter_init_find(&it, &body, arrays[a]) || !BSON_ITER_HOLDS_ARRAY(&it) ||
                !bson_iter_recurse(&it, &ids))
                continue;
            while (bson_iter_next(&ids)) {
                if (!BSON_ITER_HOLDS_NUMBER(&ids))
                    continue;
                struct id_pos key = {bson_iter_as_int64(&ids), 0};
                struct id_pos *hit = bsearch(&key, pos, (size_t)m_ids, sizeof(*pos), cmp_id_pos);
                if (hit && where[hit->idx] == 3)
                    where[hit->idx] = a;
            }
        }
    }
    int j = 0;
    for (int i = 0; i < k->n; i++) {
        if (k->owner[i] != owner)
            continue;
        int w = where ? where[j] : 3;
        j++;
        switch (w) {
        case 0:
            note(&k->ans->killed, &k->n_killed, k->ids[i]);
            break;
        case 1:
            note(&k->ans->not_found, &k->n_not_found, k->ids[i]);
            break;
        case 2:
            note(&k->ans->alive, &k->n_alive, k->ids[i]);
            break;
        default:
            note(&k->ans->unknown, &k->n_unknown, k->ids[i]);
        }
        if (w != 2)
            cursors_remove(t, k->ids[i]);
        k->owner[i] = -1;
    }
    free(pos);
    free(where);
}

void kc_build_reply(struct kc *k, bson_t *doc)
{
    bson_append_array(doc, "cursorsKilled", -1, &k->ans->killed);
    bson_append_array(doc, "cursorsNotFound", -1, &k->ans->not_found);
    bson_append_array(doc, "cursorsAlive", -1, &k->ans->alive);
    bson_append_array(doc, "cursorsUnknown", -1, &k->ans->unknown);
    BSON_APPEND_DOUBLE(doc, "ok", 1.0);
}

void kc_end(struct kc *k)
{
    if (k->active) {
        bson_destroy(&k->ans->killed);
        bson_destroy(&k->ans->not_found);
        bson_destroy(&k->ans->alive);
        bson_destroy(&k->ans->unknown);
    }
    free(k->ans);
    free(k->ids);
    free(k->real);
    free(k->owner);
    memset(k, 0, sizeof(*k));
}
