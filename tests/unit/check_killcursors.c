/*
 * check_killcursors.c: a killCursors split by owner and merged. Ids spread over three owners and
 * ids nobody owns (settled at once as not found); the order owners are asked in; each owner's part
 * carries the client's other fields and only that owner's real ids (a colliding id rewritten back);
 * legacy OP_KILL_CURSORS parts settled at once; merging answers listed in any order back to the
 * client's ids, with alive cursors kept in the table and the others removed; an owner that could
 * not be asked; too many ids; a merge of KC_MAX_IDS ids; malformed frames; kc_end twice.
 */
#include "killcursors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"

#define NOW 1000

/* A scripted generator for colliding ids: returns the listed values, then counts upward. */
struct script {
    const uint64_t *vals;
    int n, pos;
    uint64_t next;
};

static uint64_t scripted(void *ctx)
{
    struct script *s = ctx;
    if (s->pos < s->n)
        return s->vals[s->pos++];
    return s->next++;
}

/* Adds server's cursor real_id and returns the id the client sees. */
static int64_t add(struct cursor_table *t, int server, int64_t real_id, struct script *sc)
{
    int64_t cid = 0;
    ck_assert_int_ge(cursors_add(t, server, real_id, NOW, scripted, sc, &cid), 0);
    return cid;
}

/*
 * The table used by most tests. Server 0 owns 11, 12, 13, 14 and 77; server 1 owns 21 and 22;
 * server 2 owns 31, 32 and its own cursor 77, which collides with server 0's and is shown to the
 * client as 9002.
 */
static void table(struct cursor_table *t)
{
    static const uint64_t fresh[] = {9002};
    struct script sc = {.vals = fresh, .n = 1, .next = 500000};
    ck_assert_int_eq(cursors_init(t, 1000, 600000), 0);
    ck_assert_int_eq(add(t, 0, 11, &sc), 11);
    ck_assert_int_eq(add(t, 0, 12, &sc), 12);
    ck_assert_int_eq(add(t, 0, 13, &sc), 13);
    ck_assert_int_eq(add(t, 0, 14, &sc), 14);
    ck_assert_int_eq(add(t, 0, 77, &sc), 77);
    ck_assert_int_eq(add(t, 1, 21, &sc), 21);
    ck_assert_int_eq(add(t, 1, 22, &sc), 22);
    ck_assert_int_eq(add(t, 2, 31, &sc), 31);
    ck_assert_int_eq(add(t, 2, 77, &sc), 9002); /* the collision */
    ck_assert_int_eq(add(t, 2, 32, &sc), 32);
    ck_assert_uint_eq(t->collisions, 1);
    struct cursor_entry *e = cursors_find(t, 9002, NOW);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 2);
    ck_assert_int_eq(e->real_id, 77);
}

/* The client's ids, in request order: owners 1, 0, 2, -, 2, 0, 0, 1, 0, -, 0, 2. */
static const int64_t REQ_IDS[] = {21, 11, 9002, 999, 31, 12, 77, 22, 13, 888, 14, 32};
static const int REQ_OWNERS[] = {1, 0, 2, -1, 2, 0, 0, 1, 0, -1, 0, 2};
#define N_REQ ((int)(sizeof(REQ_IDS) / sizeof(REQ_IDS[0])))

/* Appends an array of int64 ids under key. */
static void append_ids(bson_t *doc, const char *key, const int64_t *ids, int n)
{
    bson_t arr;
    bson_append_array_begin(doc, key, -1, &arr);
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        bson_append_int64(&arr, k, -1, ids[i]);
    }
    bson_append_array_end(doc, &arr);
}

/* A client's killCursors OP_MSG: {killCursors: "coll", cursors: [...], $db, lsid, comment}. */
static void kill_msg(struct wire_buf *b, const int64_t *ids, int n)
{
    bson_t body = BSON_INITIALIZER, lsid;
    BSON_APPEND_UTF8(&body, "killCursors", "coll");
    append_ids(&body, "cursors", ids, n);
    BSON_APPEND_UTF8(&body, "$db", "test");
    BSON_APPEND_DOCUMENT_BEGIN(&body, "lsid", &lsid);
    static const uint8_t uuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    BSON_APPEND_BINARY(&lsid, "id", BSON_SUBTYPE_UUID, uuid, 16);
    bson_append_document_end(&body, &lsid);
    BSON_APPEND_UTF8(&body, "comment", "cleanup");
    wire_buf_reset(b);
    ck_assert_int_eq(wire_append_msg(b, 70, 0, 0, &body), 0);
    bson_destroy(&body);
}

/* A client's OP_KILL_CURSORS: header, ZERO, numberOfCursorIDs, ids. */
static void kill_legacy(struct wire_buf *b, const int64_t *ids, int n)
{
    wire_buf_reset(b);
    uint8_t h[24];
    struct wire_header hd = {24 + 8 * n, 71, 0, WIRE_OP_KILL_CURSORS};
    wire_header_write(h, &hd);
    wire_put_i32(h + 16, 0);
    wire_put_i32(h + 20, n);
    ck_assert_int_eq(wire_buf_append(b, h, sizeof(h)), 0);
    for (int i = 0; i < n; i++) {
        uint8_t id[8];
        wire_put_i64(id, ids[i]);
        ck_assert_int_eq(wire_buf_append(b, id, 8), 0);
    }
}

/* An owner's reply: {<arrays in the order given>, ok: 1}. names[i] gets ids[i] (n[i] of them). */
static void owner_reply(struct wire_buf *b, const char *const *names, const int64_t *const *ids,
                        const int *n, int arrays)
{
    bson_t body = BSON_INITIALIZER;
    for (int a = 0; a < arrays; a++)
        append_ids(&body, names[a], ids[a], n[a]);
    BSON_APPEND_DOUBLE(&body, "ok", 1.0);
    wire_buf_reset(b);
    ck_assert_int_eq(wire_append_msg(b, 900, 70, 0, &body), 0);
    bson_destroy(&body);
}

/*
 * The start most tests share: the table, the client's request for REQ_IDS (OP_MSG, or
 * OP_KILL_CURSORS when opcode says so), and a kc begun over it.
 */
static void begin_request(struct cursor_table *t, struct wire_buf *f, struct kc *k, int32_t opcode)
{
    table(t);
    if (opcode == WIRE_OP_KILL_CURSORS)
        kill_legacy(f, REQ_IDS, N_REQ);
    else
        kill_msg(f, REQ_IDS, N_REQ);
    ck_assert_int_eq(kc_begin(k, f->data, f->len, opcode, N_REQ, t, NOW), 0);
}

/* Ends the kc and frees the request and the table. */
static void end_request(struct kc *k, struct wire_buf *f, struct cursor_table *t)
{
    kc_end(k);
    wire_buf_free(f);
    cursors_free(t);
}

/* Asserts that doc's array key holds exactly the ids want, in that order. */
static void expect_array(const bson_t *doc, const char *key, const int64_t *want, int n)
{
    bson_iter_t it, arr;
    ck_assert_msg(bson_iter_init_find(&it, doc, key), "no %s", key);
    ck_assert_msg(BSON_ITER_HOLDS_ARRAY(&it), "%s is no array", key);
    ck_assert(bson_iter_recurse(&it, &arr));
    int i = 0;
    while (bson_iter_next(&arr)) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        ck_assert_str_eq(bson_iter_key(&arr), k);
        ck_assert_msg(i < n, "%s: more than %d ids", key, n);
        ck_assert_msg(BSON_ITER_HOLDS_INT64(&arr), "%s[%d] is no int64", key, i);
        ck_assert_msg(bson_iter_int64(&arr) == want[i], "%s[%d] = %lld, expected %lld", key, i,
                      (long long)bson_iter_int64(&arr), (long long)want[i]);
        i++;
    }
    ck_assert_msg(i == n, "%s: %d ids, expected %d", key, i, n);
}

/* Wraps the bson_t array k holds as a document for expect_array. */
static void expect_kc_array(const bson_t *arr, const int64_t *want, int n)
{
    bson_t doc = BSON_INITIALIZER;
    bson_append_array(&doc, "a", -1, arr);
    expect_array(&doc, "a", want, n);
    bson_destroy(&doc);
}

START_TEST(begin_groups_by_owner)
{
    struct cursor_table t;
    struct wire_buf f = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_MSG);
    ck_assert(k.active);
    ck_assert(!k.legacy);
    ck_assert_int_eq(k.n, N_REQ);
    for (int i = 0; i < N_REQ; i++) {
        ck_assert_int_eq(k.ids[i], REQ_IDS[i]);
        ck_assert_msg(k.owner[i] == REQ_OWNERS[i], "id %lld: owner %d, expected %d",
                      (long long)REQ_IDS[i], k.owner[i], REQ_OWNERS[i]);
    }
    /* Nobody owns 999 and 888: not found, without asking anyone. */
    static const int64_t nf[] = {999, 888};
    ck_assert_int_eq(k.n_not_found, 2);
    expect_kc_array(&k.ans->not_found, nf, 2);
    ck_assert_int_eq(k.n_killed + k.n_alive + k.n_unknown, 0);
    /* Beginning changes nothing in the table. */
    ck_assert_uint_eq(t.n, 10);
    kc_end(&k);
    ck_assert(!k.active);
    ck_assert_ptr_null(k.ids);
    kc_end(&k); /* twice is safe */

    /* Only unknown ids: nobody to ask, the reply is ready. */
    static const int64_t unknown[] = {5, 6, 7};
    kill_msg(&f, unknown, 3);
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, 3, &t, NOW), 0);
    ck_assert_int_eq(kc_next_owner(&k), -1);
    bson_t reply = BSON_INITIALIZER;
    kc_build_reply(&k, &reply);
    expect_array(&reply, "cursorsNotFound", unknown, 3);
    expect_array(&reply, "cursorsKilled", NULL, 0);
    expect_array(&reply, "cursorsAlive", NULL, 0);
    expect_array(&reply, "cursorsUnknown", NULL, 0);
    bson_destroy(&reply);
    kc_end(&k);

    /* No ids at all. */
    kill_msg(&f, NULL, 0);
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, 0, &t, NOW), 0);
    ck_assert_int_eq(k.n, 0);
    ck_assert_int_eq(kc_next_owner(&k), -1);
    end_request(&k, &f, &t);
}
END_TEST

START_TEST(next_owner_order)
{
    struct cursor_table t;
    struct wire_buf f = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_MSG);
    /* The owner of the first unsettled id in request order: 1 (21), then 0 (11), then 2. */
    ck_assert_int_eq(kc_next_owner(&k), 1);
    kc_merge(&k, 1, NULL, 0, &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), 0);
    ck_assert_int_eq(kc_next_owner(&k), 0); /* asking does not settle anything */
    kc_merge(&k, 0, NULL, 0, &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), 2);
    kc_merge(&k, 2, NULL, 0, &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), -1);
    end_request(&k, &f, &t);
}
END_TEST

/* Parses an OP_MSG part into a view of its body. */
static void part_body(const struct wire_buf *part, int32_t request_id, bson_t *body)
{
    struct wire_msg m;
    ck_assert_int_eq(wire_msg_parse(part->data, part->len, &m), 0);
    ck_assert_int_eq(m.h.request_id, request_id);
    ck_assert_int_eq(m.h.response_to, 0);
    ck_assert_int_eq(m.h.opcode, WIRE_OP_MSG);
    ck_assert_uint_eq(m.flags, 0);
    ck_assert_int_eq(m.nseq, 0);
    ck_assert(wire_msg_body(&m, body));
}

/* Builds owner's part of the request in f, with request id request_id, and views its body. */
static void build_part_body(struct kc *k, int owner, const struct wire_buf *f, int32_t request_id,
                            struct cursor_table *t, struct wire_buf *part, bson_t *body)
{
    ck_assert_int_eq(kc_build_part(k, owner, f->data, f->len, request_id, t, NOW, part), 0);
    part_body(part, request_id, body);
}

START_TEST(build_part_keeps_fields_real_ids_only)
{
    struct cursor_table t;
    struct wire_buf f = {0}, part = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_MSG);

    /* Server 2: 9002 goes as its real id 77, then 31, 32. */
    bson_t body;
    build_part_body(&k, 2, &f, 4001, &t, &part, &body);
    static const char *const keys[] = {"killCursors", "$db", "lsid", "comment", "cursors"};
    bson_iter_t it;
    ck_assert(bson_iter_init(&it, &body));
    for (int i = 0; i < 5; i++) {
        ck_assert(bson_iter_next(&it));
        ck_assert_str_eq(bson_iter_key(&it), keys[i]);
    }
    ck_assert(!bson_iter_next(&it));
    ck_assert(bson_iter_init_find(&it, &body, "killCursors"));
    ck_assert_str_eq(bson_iter_utf8(&it, NULL), "coll");
    ck_assert(bson_iter_init_find(&it, &body, "$db"));
    ck_assert_str_eq(bson_iter_utf8(&it, NULL), "test");
    ck_assert(bson_iter_init_find(&it, &body, "comment"));
    ck_assert_str_eq(bson_iter_utf8(&it, NULL), "cleanup");
    bson_iter_t l;
    ck_assert(bson_iter_init(&it, &body));
    ck_assert(bson_iter_find_descendant(&it, "lsid.id", &l));
    ck_assert(BSON_ITER_HOLDS_BINARY(&l));
    static const int64_t ids2[] = {77, 31, 32};
    expect_array(&body, "cursors", ids2, 3);

    /* Server 0: its 77 is the client's 77. */
    build_part_body(&k, 0, &f, 4002, &t, &part, &body);
    static const int64_t ids0[] = {11, 12, 77, 13, 14};
    expect_array(&body, "cursors", ids0, 5);
    ck_assert(bson_iter_init(&it, &body) && bson_iter_next(&it));
    ck_assert_str_eq(bson_iter_key(&it), "killCursors");

    /* Server 1. */
    build_part_body(&k, 1, &f, 4003, &t, &part, &body);
    static const int64_t ids1[] = {21, 22};
    expect_array(&body, "cursors", ids1, 2);

    /* Building parts settles nothing: the answers do. */
    for (int i = 0; i < N_REQ; i++)
        ck_assert_int_eq(k.owner[i], REQ_OWNERS[i]);
    ck_assert_uint_eq(t.n, 10);
    ck_assert_int_eq(kc_next_owner(&k), 1);
    wire_buf_free(&part);
    end_request(&k, &f, &t);
}
END_TEST

/* The owners' real ids are read once, at the start: a rewritten entry that leaves the table
 * (idle expiry, its server gone) before its owner is asked still goes out under the real id. */
START_TEST(real_ids_kept_from_the_start)
{
    struct cursor_table t;
    struct wire_buf f = {0}, part = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_MSG);
    ck_assert_int_eq(cursors_remove(&t, 9002), 0);
    bson_t body;
    build_part_body(&k, 2, &f, 4101, &t, &part, &body);
    static const int64_t ids2[] = {77, 31, 32};
    expect_array(&body, "cursors", ids2, 3);
    wire_buf_free(&part);
    end_request(&k, &f, &t);
}
END_TEST

START_TEST(legacy_parts_settle_at_once)
{
    struct cursor_table t;
    struct wire_buf f = {0}, part = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_KILL_CURSORS);
    ck_assert(k.legacy);
    ck_assert_int_eq(k.n, N_REQ);
    ck_assert_int_eq(k.n_not_found, 2);

    static const struct {
        int owner;
        int n;
        int64_t real[5];
        int64_t client[5];
    } parts[] = {
        {1, 2, {21, 22}, {21, 22}},
        {0, 5, {11, 12, 77, 13, 14}, {11, 12, 77, 13, 14}},
        {2, 3, {77, 31, 32}, {9002, 31, 32}},
    };
    for (int p = 0; p < 3; p++) {
        ck_assert_int_eq(kc_next_owner(&k), parts[p].owner);
        ck_assert_int_eq(kc_build_part(&k, parts[p].owner, f.data, f.len, 5000 + p, &t, NOW, &part),
                         0);
        struct wire_kill_cursors kcm;
        ck_assert_int_eq(wire_kill_cursors_parse(part.data, part.len, &kcm), 0);
        ck_assert_int_eq(kcm.h.request_id, 5000 + p);
        ck_assert_int_eq(kcm.h.length, (int32_t)part.len);
        ck_assert_int_eq(kcm.n_ids, parts[p].n);
        ck_assert_int_eq(wire_get_i32(part.data + 16), 0);
        for (int i = 0; i < parts[p].n; i++) {
            ck_assert_int_eq(wire_kill_cursors_id(&kcm, i), parts[p].real[i]);
            /* No reply will come: the ids are forgotten now. */
            ck_assert_ptr_null(cursors_find(&t, parts[p].client[i], NOW));
        }
    }
    ck_assert_int_eq(kc_next_owner(&k), -1);
    ck_assert_uint_eq(t.n, 0);
    kc_end(&k);
    wire_buf_free(&part);
    end_request(&k, &f, &t);
}
END_TEST

START_TEST(merge_maps_back_to_client_ids)
{
    struct cursor_table t;
    struct wire_buf f = {0}, r = {0};
    struct kc k;
    begin_request(&t, &f, &k, WIRE_OP_MSG);

    /* Server 2 answers in its own (real) ids, in its own order: 77 is its cursor, the client's
     * 9002. Server 0's 77 must not be touched. */
    {
        static const int64_t killed[] = {32, 77}, alive[] = {31};
        const char *names[] = {"cursorsAlive", "cursorsKilled"};
        const int64_t *ids[] = {alive, killed};
        int n[] = {1, 2};
        owner_reply(&r, names, ids, n, 2);
    }
    kc_merge(&k, 2, r.data, r.len, &t, NOW);
    ck_assert_ptr_null(cursors_find(&t, 9002, NOW));
    ck_assert_ptr_null(cursors_find(&t, 32, NOW));
    ck_assert_ptr_nonnull(cursors_find(&t, 31, NOW));
    struct cursor_entry *e = cursors_find(&t, 77, NOW);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 0);
    ck_assert_int_eq(kc_next_owner(&k), 1);

    /* Server 0: every array, shuffled, with ids that are not its own or no number mixed in. */
    {
        static const int64_t unknown[] = {13}, alive[] = {12}, killed[] = {5555, 14, 21, 11},
                             not_found[] = {77};
        const char *names[] = {"cursorsUnknown", "cursorsAlive", "cursorsKilled",
                               "cursorsNotFound"};
        const int64_t *ids[] = {unknown, alive, killed, not_found};
        int n[] = {1, 1, 4, 1};
        owner_reply(&r, names, ids, n, 4);
    }
    kc_merge(&k, 0, r.data, r.len, &t, NOW);
    /* Server 1 could not be asked. */
    kc_merge(&k, 1, NULL, 0, &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), -1);

    bson_t reply = BSON_INITIALIZER;
    kc_build_reply(&k, &reply);
    static const int64_t killed[] = {9002, 32, 11, 14}, not_found[] = {999, 888, 77},
                         alive[] = {31, 12}, unknown[] = {13, 21, 22};
    expect_array(&reply, "cursorsKilled", killed, 4);
    expect_array(&reply, "cursorsNotFound", not_found, 3);
    expect_array(&reply, "cursorsAlive", alive, 2);
    expect_array(&reply, "cursorsUnknown", unknown, 3);
    bson_iter_t it;
    ck_assert(bson_iter_init_find(&it, &reply, "ok"));
    ck_assert(bson_iter_as_bool(&it));
    ck_assert_int_eq(k.n_killed, 4);
    ck_assert_int_eq(k.n_not_found, 3);
    ck_assert_int_eq(k.n_alive, 2);
    ck_assert_int_eq(k.n_unknown, 3);
    bson_destroy(&reply);

    /* Alive cursors stay; the others left the table. */
    ck_assert_uint_eq(t.n, 2);
    ck_assert_ptr_nonnull(cursors_find(&t, 31, NOW));
    ck_assert_ptr_nonnull(cursors_find(&t, 12, NOW));
    static const int64_t gone[] = {9002, 32, 11, 14, 77, 13, 21, 22};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        ck_assert_ptr_null(cursors_find(&t, gone[i], NOW));
    kc_end(&k);
    wire_buf_free(&r);
    end_request(&k, &f, &t);
}
END_TEST

START_TEST(merge_unreachable_or_unreadable_is_unknown)
{
    struct cursor_table t;
    table(&t);
    struct wire_buf f = {0}, r = {0};
    static const int64_t ids[] = {11, 21, 12, 31, 13};
    kill_msg(&f, ids, 5);
    struct kc k;
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, 5, &t, NOW), 0);
    /* Owner 0 unreachable: all its ids unknown. */
    kc_merge(&k, 0, NULL, 0, &t, NOW);
    /* Owner 1 answered with an error document: nothing is listed, so unknown. */
    bson_t err = BSON_INITIALIZER;
    BSON_APPEND_DOUBLE(&err, "ok", 0.0);
    BSON_APPEND_INT32(&err, "code", 13);
    ck_assert_int_eq(wire_append_msg(&r, 1, 2, 0, &err), 0);
    bson_destroy(&err);
    kc_merge(&k, 1, r.data, r.len, &t, NOW);
    /* Owner 2 answered with bytes that are no OP_MSG. */
    uint8_t junk[40];
    memset(junk, 0xee, sizeof(junk));
    kc_merge(&k, 2, junk, sizeof(junk), &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), -1);
    bson_t reply = BSON_INITIALIZER;
    kc_build_reply(&k, &reply);
    static const int64_t unknown[] = {11, 12, 13, 21, 31};
    expect_array(&reply, "cursorsUnknown", unknown, 5);
    expect_array(&reply, "cursorsKilled", NULL, 0);
    expect_array(&reply, "cursorsNotFound", NULL, 0);
    expect_array(&reply, "cursorsAlive", NULL, 0);
    bson_destroy(&reply);
    for (int i = 0; i < 5; i++)
        ck_assert_ptr_null(cursors_find(&t, ids[i], NOW));
    ck_assert_uint_eq(t.n, 5);
    wire_buf_free(&r);
    end_request(&k, &f, &t);
}
END_TEST

START_TEST(too_many_ids)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 16, 600000), 0);
    int n = KC_MAX_IDS + 1;
    int64_t *ids = malloc(sizeof(*ids) * (size_t)n);
    ck_assert_ptr_nonnull(ids);
    for (int i = 0; i < n; i++)
        ids[i] = i + 1;
    struct wire_buf f = {0};
    kill_msg(&f, ids, n);
    struct kc k;
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, n, &t, NOW), -E2BIG);
    ck_assert(!k.active);
    kc_end(&k);
    kc_end(&k);
    kill_legacy(&f, ids, n);
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_KILL_CURSORS, n, &t, NOW), -E2BIG);
    kc_end(&k);
    /* Exactly KC_MAX_IDS is fine. */
    kill_msg(&f, ids, KC_MAX_IDS);
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, KC_MAX_IDS, &t, NOW), 0);
    ck_assert_int_eq(k.n, KC_MAX_IDS);
    ck_assert_int_eq(k.n_not_found, KC_MAX_IDS);
    kc_end(&k);
    free(ids);
    wire_buf_free(&f);
    cursors_free(&t);
}
END_TEST

/* xorshift64 for the shuffle. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

START_TEST(merge_many_ids)
{
    /* KC_MAX_IDS cursors of one server, answered in a shuffled order: each answer is found by
     * search, not by a scan (n squared would be 10^10 steps here; the tcase timeout catches it). */
    const int n = KC_MAX_IDS;
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, (size_t)n * 2, 600000), 0);
    int64_t *ids = malloc(sizeof(*ids) * (size_t)n);
    int64_t *answer = malloc(sizeof(*answer) * (size_t)n);
    ck_assert(ids && answer);
    for (int i = 0; i < n; i++) {
        ids[i] = INT64_C(1000000007) * (i + 1);
        int64_t cid;
        ck_assert_int_eq(cursors_add(&t, 1, ids[i], NOW, NULL, NULL, &cid), 0);
        ck_assert_int_eq(cid, ids[i]);
    }
    memcpy(answer, ids, sizeof(*ids) * (size_t)n);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(next_rand(&s) % (uint64_t)(i + 1));
        int64_t tmp = answer[i];
        answer[i] = answer[j];
        answer[j] = tmp;
    }
    struct wire_buf f = {0}, r = {0}, part = {0};
    kill_msg(&f, ids, n);
    struct kc k;
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, n, &t, NOW), 0);
    ck_assert_int_eq(kc_next_owner(&k), 1);
    bson_t body;
    build_part_body(&k, 1, &f, 1, &t, &part, &body);
    bson_iter_t it, arr;
    ck_assert(bson_iter_init_find(&it, &body, "cursors") && bson_iter_recurse(&it, &arr));
    int count = 0;
    while (bson_iter_next(&arr))
        count++;
    ck_assert_int_eq(count, n);

    /* The last tenth alive, the rest killed. */
    int n_alive = n / 10;
    const char *names[] = {"cursorsKilled", "cursorsAlive"};
    const int64_t *lists[] = {answer, answer + (n - n_alive)};
    int counts[] = {n - n_alive, n_alive};
    owner_reply(&r, names, lists, counts, 2);
    kc_merge(&k, 1, r.data, r.len, &t, NOW);
    ck_assert_int_eq(kc_next_owner(&k), -1);
    ck_assert_int_eq(k.n_killed, n - n_alive);
    ck_assert_int_eq(k.n_alive, n_alive);
    ck_assert_int_eq(k.n_unknown, 0);
    ck_assert_int_eq(k.n_not_found, 0);
    ck_assert_uint_eq(t.n, (size_t)n_alive);
    for (int i = n - n_alive; i < n; i++)
        ck_assert_ptr_nonnull(cursors_find(&t, answer[i], NOW));
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_null(cursors_find(&t, answer[i], NOW));
    kc_end(&k);
    free(ids);
    free(answer);
    wire_buf_free(&part);
    wire_buf_free(&r);
    wire_buf_free(&f);
    cursors_free(&t);
}
END_TEST

/* kc_begin on a malformed frame must fail with -EPROTO and leave nothing to free. */
static void expect_eproto(const uint8_t *frame, size_t len, int32_t opcode, int n_ids,
                          struct cursor_table *t)
{
    struct kc k;
    ck_assert_int_eq(kc_begin(&k, frame, len, opcode, n_ids, t, NOW), -EPROTO);
    ck_assert(!k.active);
    ck_assert_ptr_null(k.ids);
    ck_assert_ptr_null(k.owner);
    kc_end(&k);
    kc_end(&k);
}

START_TEST(malformed_frames)
{
    struct cursor_table t;
    table(&t);
    struct wire_buf f = {0};
    static const int64_t ids[] = {11, 21};

    /* Cut short, and a header length that is not the frame's. */
    kill_msg(&f, ids, 2);
    expect_eproto(f.data, f.len - 1, WIRE_OP_MSG, 2, &t);
    expect_eproto(f.data, 10, WIRE_OP_MSG, 2, &t);
    wire_put_i32(f.data, (int32_t)f.len + 4);
    expect_eproto(f.data, f.len, WIRE_OP_MSG, 2, &t);

    /* No cursors array, cursors that is no array, an id that is no integer. */
    bson_t body = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&body, "killCursors", "coll");
    BSON_APPEND_UTF8(&body, "$db", "test");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_msg(&f, 1, 0, 0, &body), 0);
    expect_eproto(f.data, f.len, WIRE_OP_MSG, 0, &t);
    bson_reinit(&body);
    BSON_APPEND_UTF8(&body, "killCursors", "coll");
    BSON_APPEND_INT64(&body, "cursors", 11);
    BSON_APPEND_UTF8(&body, "$db", "test");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_msg(&f, 1, 0, 0, &body), 0);
    expect_eproto(f.data, f.len, WIRE_OP_MSG, 1, &t);
    bson_reinit(&body);
    BSON_APPEND_UTF8(&body, "killCursors", "coll");
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(&body, "cursors", &arr);
    BSON_APPEND_INT64(&arr, "0", 11);
    BSON_APPEND_UTF8(&arr, "1", "21");
    bson_append_array_end(&body, &arr);
    BSON_APPEND_UTF8(&body, "$db", "test");
    wire_buf_reset(&f);
    ck_assert_int_eq(wire_append_msg(&f, 1, 0, 0, &body), 0);
    expect_eproto(f.data, f.len, WIRE_OP_MSG, 2, &t);
    bson_destroy(&body);

    /* An opcode that carries no killCursors. */
    kill_msg(&f, ids, 2);
    wire_put_i32(f.data + 12, WIRE_OP_QUERY);
    expect_eproto(f.data, f.len, WIRE_OP_QUERY, 2, &t);

    /* OP_KILL_CURSORS whose count promises more ids than it carries, and a negative count. */
    kill_legacy(&f, ids, 2);
    wire_put_i32(f.data + 20, 3);
    expect_eproto(f.data, f.len, WIRE_OP_KILL_CURSORS, 3, &t);
    wire_put_i32(f.data + 20, -1);
    expect_eproto(f.data, f.len, WIRE_OP_KILL_CURSORS, 2, &t);
    kill_legacy(&f, ids, 2);
    expect_eproto(f.data, f.len - 3, WIRE_OP_KILL_CURSORS, 2, &t);

    /* The table is untouched by all of that. */
    ck_assert_uint_eq(t.n, 10);
    wire_buf_free(&f);
    cursors_free(&t);
}
END_TEST

START_TEST(end_is_idempotent)
{
    struct kc k;
    memset(&k, 0, sizeof(k));
    kc_end(&k);
    kc_end(&k);
    struct cursor_table t;
    table(&t);
    struct wire_buf f = {0};
    kill_msg(&f, REQ_IDS, N_REQ);
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, N_REQ, &t, NOW), 0);
    kc_merge(&k, 0, NULL, 0, &t, NOW);
    kc_end(&k);
    ck_assert(!k.active);
    ck_assert_ptr_null(k.ids);
    ck_assert_ptr_null(k.owner);
    ck_assert_int_eq(k.n, 0);
    kc_end(&k);
    kc_end(&k);
    /* A fresh begin on the same struct works after it. */
    ck_assert_int_eq(kc_begin(&k, f.data, f.len, WIRE_OP_MSG, N_REQ, &t, NOW), 0);
    ck_assert_int_eq(kc_next_owner(&k), 1);
    kc_end(&k);
    end_request(&k, &f, &t);
}
END_TEST

static Suite *killcursors_suite(void)
{
    Suite *s = suite_create("killcursors");
    TCase *tc = tcase_create("split");
    tcase_add_test(tc, begin_groups_by_owner);
    tcase_add_test(tc, next_owner_order);
    tcase_add_test(tc, build_part_keeps_fields_real_ids_only);
    tcase_add_test(tc, real_ids_kept_from_the_start);
    tcase_add_test(tc, legacy_parts_settle_at_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("merge");
    tcase_add_test(tc, merge_maps_back_to_client_ids);
    tcase_add_test(tc, merge_unreachable_or_unreadable_is_unknown);
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, too_many_ids);
    tcase_add_test(tc, malformed_frames);
    tcase_add_test(tc, end_is_idempotent);
    suite_add_tcase(s, tc);
    /* A bound, not a timing: a quadratic merge of KC_MAX_IDS ids would take far longer. */
    tc = tcase_create("many");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, merge_many_ids);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(killcursors_suite)
