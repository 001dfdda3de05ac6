/*
 * check_cursors.c: the cursor affinity table: adding, finding and removing cursors, refreshes by
 * getMore, id collisions between servers, idle expiry, eviction of the least recently used entry,
 * removal of a server's cursors, the counters, and growth to many entries.
 */
#include "cursors.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "check_main.h"

/* A scripted generator: returns the listed values in order, then counts upward from 1000000. */
struct script {
    const uint64_t *vals;
    int n, pos;
    uint64_t next;
    int calls;
};

static uint64_t scripted(void *ctx)
{
    struct script *s = ctx;
    s->calls++;
    if (s->pos < s->n)
        return s->vals[s->pos++];
    return s->next++;
}

/* A generator the test expects never to be called. */
static uint64_t no_rnd(void *ctx)
{
    ck_abort_msg("a fresh id was drawn where no collision should happen");
    return 0;
}

/* Adds (server, real_id) at now, asserting the return code, and returns the client id. */
static int64_t add_ok(struct cursor_table *t, int server, int64_t real_id, int64_t now, int rc)
{
    int64_t cid = 0;
    ck_assert_int_eq(cursors_add(t, server, real_id, now, no_rnd, NULL, &cid), rc);
    return cid;
}

START_TEST(add_find_remove)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 100, 60000), 0);
    ck_assert_int_eq(add_ok(&t, 2, 123456789012345LL, 10, 0), 123456789012345LL);
    ck_assert_int_eq(add_ok(&t, 0, -42, 10, 0), -42); /* ids are signed: any non-zero value */
    ck_assert_uint_eq(t.n, 2);
    ck_assert_uint_eq(t.added, 2);

    struct cursor_entry *e = cursors_find(&t, 123456789012345LL, 20);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 2);
    ck_assert_int_eq(e->id, 123456789012345LL);
    ck_assert_int_eq(e->real_id, 123456789012345LL);
    ck_assert_int_eq(e->last_used_ms, 20);
    e = cursors_find(&t, -42, 20);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 0);
    ck_assert_ptr_null(cursors_find(&t, 7, 20));

    ck_assert_int_eq(cursors_remove(&t, 123456789012345LL), 0);
    ck_assert_ptr_null(cursors_find(&t, 123456789012345LL, 30));
    ck_assert_int_eq(cursors_remove(&t, 123456789012345LL), -ENOENT);
    ck_assert_int_eq(cursors_remove(&t, 99), -ENOENT);
    ck_assert_uint_eq(t.n, 1);
    /* Removal is not eviction nor expiry. */
    ck_assert_uint_eq(t.evicted, 0);
    ck_assert_uint_eq(t.expired, 0);

    /* A recycled entry behaves like a new one. */
    ck_assert_int_eq(add_ok(&t, 1, 555, 40, 0), 555);
    e = cursors_find(&t, 555, 41);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 1);
    ck_assert_int_eq(e->real_id, 555);
    cursors_free(&t);
}
END_TEST

START_TEST(readd_refreshes)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 100, 1000), 0);
    ck_assert_int_eq(add_ok(&t, 3, 77, 0, 0), 77);
    /* A getMore reply from the same server for the same cursor: no new entry, same client id. */
    ck_assert_int_eq(add_ok(&t, 3, 77, 900, 0), 77);
    ck_assert_uint_eq(t.n, 1);
    ck_assert_uint_eq(t.added, 1);
    ck_assert_uint_eq(t.collisions, 0);
    /* The refresh counts as use: at 1500 the cursor has been idle only 600 ms. */
    ck_assert_uint_eq(cursors_expire(&t, 1500), 0);
    ck_assert_ptr_nonnull(cursors_find(&t, 77, 1500));
    /* Used at 1500, so idle longer than 1000 ms only after 2500. */
    ck_assert_uint_eq(cursors_expire(&t, 2500), 0);
    ck_assert_uint_eq(cursors_expire(&t, 2501), 1);
    ck_assert_uint_eq(t.n, 0);
    cursors_free(&t);
}
END_TEST

START_TEST(collision_gets_fresh_id)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 100, 60000), 0);
    ck_assert_int_eq(add_ok(&t, 0, 77, 0, 0), 77);
    ck_assert_int_eq(add_ok(&t, 1, 88, 0, 0), 88);

    /* Server 2 also has a cursor 77. The generator first offers 0 and two ids already in use;
     * the table must skip them. */
    const uint64_t vals[] = {0, 77, 88, 4242};
    struct script sc = {.vals = vals, .n = 4};
    int64_t cid = 0;
    ck_assert_int_eq(cursors_add(&t, 2, 77, 5, scripted, &sc, &cid), 1);
    ck_assert_int_eq(cid, 4242);
    ck_assert_int_eq(sc.calls, 4);
    ck_assert_uint_eq(t.collisions, 1);
    ck_assert_uint_eq(t.added, 3);
    ck_assert_uint_eq(t.n, 3);

    /* Each client id leads to its own server and the server's real id. */
    struct cursor_entry *e = cursors_find(&t, 4242, 6);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 2);
    ck_assert_int_eq(e->real_id, 77);
    ck_assert_int_eq(e->id, 4242);
    e = cursors_find(&t, 77, 6);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 0);
    ck_assert_int_eq(e->real_id, 77);

    /* A getMore reply from server 2 for its cursor 77 refreshes the collided entry. */
    ck_assert_int_eq(add_ok(&t, 2, 77, 7, 0), 4242);
    ck_assert_int_eq(add_ok(&t, 0, 77, 7, 0), 77);
    ck_assert_uint_eq(t.n, 3);
    ck_assert_uint_eq(t.collisions, 1);

    /* Still so after server 0's cursor 77 is gone. */
    ck_assert_int_eq(cursors_remove(&t, 77), 0);
    ck_assert_int_eq(add_ok(&t, 2, 77, 8, 0), 4242);
    ck_assert_uint_eq(t.n, 2);

    /* A server whose real id equals another's fresh client id collides too. */
    sc = (struct script){.vals = NULL, .n = 0, .next = 31337};
    ck_assert_int_eq(cursors_add(&t, 1, 4242, 9, scripted, &sc, &cid), 1);
    ck_assert_int_eq(cid, 31337);
    e = cursors_find(&t, 31337, 9);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 1);
    ck_assert_int_eq(e->real_id, 4242);
    e = cursors_find(&t, 4242, 9);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->server, 2);
    ck_assert_int_eq(e->real_id, 77);
    ck_assert_uint_eq(t.collisions, 2);
    cursors_free(&t);
}
END_TEST

/* A rewritten entry leaves the side table of real ids with it, and adds after a collision never
 * scan the whole table: 200,000 adds after one collision finish well within Check's timeout
 * (a scan per add would take minutes). */
START_TEST(rewritten_entries_are_found_without_a_scan)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 1000000, 60000), 0);
    ck_assert_int_eq(add_ok(&t, 0, 77, 0, 0), 77);
    struct script sc = {.vals = NULL, .n = 0, .next = 4242};
    int64_t cid = 0;
    ck_assert_int_eq(cursors_add(&t, 2, 77, 1, scripted, &sc, &cid), 1);
    ck_assert_int_eq(cid, 4242);
    ck_assert_int_eq(cursors_remove(&t, 4242), 0);
    /* Server 2's cursor 77 is new again: it collides again and gets a fresh id, not the old. */
    sc = (struct script){.vals = NULL, .n = 0, .next = 5151};
    ck_assert_int_eq(cursors_add(&t, 2, 77, 2, scripted, &sc, &cid), 1);
    ck_assert_int_eq(cid, 5151);
    ck_assert_uint_eq(cursors_remove_server(&t, 2), 1);
    for (int64_t i = 1; i <= 200000; i++)
        add_ok(&t, 1, 1000000 + i, 3, 0);
    ck_assert_uint_eq(t.n, 200001);
    ck_assert_int_eq(add_ok(&t, 1, 1000000 + 7, 4, 0), 1000007);
    cursors_free(&t);
}
END_TEST

/* The budget for a cursor entry: at most 64 bytes. */
START_TEST(entry_size_within_budget)
{
    ck_assert_uint_le(sizeof(struct cursor_entry), 64);
}
END_TEST

START_TEST(expire_idle_in_lru_order)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 100, 1000), 0);
    add_ok(&t, 0, 1, 0, 0);
    add_ok(&t, 0, 2, 500, 0);
    add_ok(&t, 0, 3, 900, 0);
    /* Using cursor 1 at 950 makes cursor 2 the least recently used. */
    ck_assert_ptr_nonnull(cursors_find(&t, 1, 950));
    ck_assert_uint_eq(cursors_expire(&t, 1000), 0);
    /* Exactly idle_ms idle is not "longer than" the timeout. */
    ck_assert_uint_eq(cursors_expire(&t, 1500), 0);
    ck_assert_uint_eq(cursors_expire(&t, 1501), 1);
    ck_assert_ptr_null(cursors_find(&t, 2, 1501));
    ck_assert_uint_eq(t.expired, 1);
    /* The find above was a miss; it touched nothing. Cursor 3 (900) goes before 1 (950). */
    ck_assert_uint_eq(cursors_expire(&t, 1901), 1);
    ck_assert_uint_eq(t.n, 1);
    ck_assert_ptr_nonnull(cursors_find(&t, 1, 1901));
    ck_assert_ptr_null(cursors_find(&t, 3, 1901));
    ck_assert_uint_eq(cursors_expire(&t, 2901), 0); /* cursor 1 was just used at 1901 */
    ck_assert_uint_eq(cursors_expire(&t, 2902), 1);
    ck_assert_uint_eq(t.n, 0);
    ck_assert_uint_eq(t.expired, 3);
    ck_assert_uint_eq(t.evicted, 0);
    ck_assert_uint_eq(cursors_expire(&t, 100000), 0);
    cursors_free(&t);
}
END_TEST

START_TEST(evict_lru_when_full)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 3, 60000), 0);
    add_ok(&t, 0, 1, 1, 0);
    add_ok(&t, 0, 2, 2, 0);
    add_ok(&t, 0, 3, 3, 0);
    /* find() counts as use: cursor 2 is now the least recently used. */
    ck_assert_ptr_nonnull(cursors_find(&t, 1, 4));
    add_ok(&t, 1, 4, 5, 0);
    ck_assert_uint_eq(t.n, 3);
    ck_assert_uint_eq(t.evicted, 1);
    ck_assert_ptr_null(cursors_find(&t, 2, 6));
    /* So does a refresh by add: 3 is refreshed, 1 is now the oldest. */
    ck_assert_int_eq(add_ok(&t, 0, 3, 7, 0), 3);
    ck_assert_uint_eq(t.evicted, 1);
    add_ok(&t, 1, 5, 8, 0);
    ck_assert_uint_eq(t.evicted, 2);
    ck_assert_ptr_null(cursors_find(&t, 1, 9));
    ck_assert_ptr_nonnull(cursors_find(&t, 3, 9));
    ck_assert_ptr_nonnull(cursors_find(&t, 4, 9));
    ck_assert_ptr_nonnull(cursors_find(&t, 5, 9));
    ck_assert_uint_eq(t.n, 3);
    ck_assert_uint_eq(t.added, 5);
    cursors_free(&t);
}
END_TEST

START_TEST(remove_server_exactly)
{
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 1000, 60000), 0);
    for (int i = 1; i <= 300; i++)
        add_ok(&t, i % 3, i, i, 0);
    ck_assert_uint_eq(cursors_remove_server(&t, 1), 100);
    ck_assert_uint_eq(t.n, 200);
    for (int i = 1; i <= 300; i++) {
        struct cursor_entry *e = cursors_find(&t, i, 1000);
        if (i % 3 == 1) {
            ck_assert_ptr_null(e);
        } else {
            ck_assert_ptr_nonnull(e);
            ck_assert_int_eq(e->server, i % 3);
        }
    }
    ck_assert_uint_eq(cursors_remove_server(&t, 1), 0);
    ck_assert_uint_eq(cursors_remove_server(&t, 7), 0);
    ck_assert_uint_eq(cursors_remove_server(&t, 0), 100);
    ck_assert_uint_eq(cursors_remove_server(&t, 2), 100);
    ck_assert_uint_eq(t.n, 0);
    /* Not counted as evictions or expiries. */
    ck_assert_uint_eq(t.evicted, 0);
    ck_assert_uint_eq(t.expired, 0);
    /* The table still works after emptying. */
    ck_assert_int_eq(add_ok(&t, 4, 9, 2000, 0), 9);
    ck_assert_ptr_nonnull(cursors_find(&t, 9, 2000));
    cursors_free(&t);
}
END_TEST

START_TEST(many_entries_grow)
{
    enum { N = 100000 };
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, 2 * N, 60000), 0);
    size_t nb0 = t.nbuckets;
    /* Ids like a server's: large and spread, plus small sequential ones from another server. */
    for (int64_t i = 0; i < N; i++) {
        int64_t real = (int64_t)((uint64_t)(i + 1) * UINT64_C(0x9e3779b97f4a7c15) >> 1);
        ck_assert_int_eq(add_ok(&t, (int)(i % 5), real, i, 0), real);
    }
    ck_assert_uint_eq(t.n, N);
    ck_assert_uint_gt(t.nbuckets, nb0);
    ck_assert_uint_eq(t.added, N);
    ck_assert_uint_eq(t.evicted, 0);
    for (int64_t i = 0; i < N; i++) {
        int64_t real = (int64_t)((uint64_t)(i + 1) * UINT64_C(0x9e3779b97f4a7c15) >> 1);
        struct cursor_entry *e = cursors_find(&t, real, N + i);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->server, (int)(i % 5));
        ck_assert_int_eq(e->real_id, real);
    }
    /* Remove every other one, then let the rest expire. */
    for (int64_t i = 0; i < N; i += 2) {
        int64_t real = (int64_t)((uint64_t)(i + 1) * UINT64_C(0x9e3779b97f4a7c15) >> 1);
        ck_assert_int_eq(cursors_remove(&t, real), 0);
    }
    ck_assert_uint_eq(t.n, N / 2);
    ck_assert_uint_eq(cursors_expire(&t, 2 * N + 60001), N / 2);
    ck_assert_uint_eq(t.n, 0);
    /* Reuse the freed entries with small ids. */
    for (int64_t i = 1; i <= N; i++)
        add_ok(&t, 0, i, 0, 0);
    ck_assert_uint_eq(t.n, N);
    for (int64_t i = 1; i <= N; i++)
        ck_assert_ptr_nonnull(cursors_find(&t, i, 1));
    cursors_free(&t);
}
END_TEST

START_TEST(full_table_of_many_evicts_oldest)
{
    enum { MAX = 5000 };
    struct cursor_table t;
    ck_assert_int_eq(cursors_init(&t, MAX, 60000), 0);
    for (int64_t i = 1; i <= 3 * MAX; i++)
        add_ok(&t, 0, i, i, 0);
    ck_assert_uint_eq(t.n, MAX);
    ck_assert_uint_eq(t.evicted, 2 * MAX);
    ck_assert_ptr_null(cursors_find(&t, 2 * MAX, 0));
    ck_assert_ptr_nonnull(cursors_find(&t, 2 * MAX + 1, 0));
    cursors_free(&t);
}
END_TEST

Suite *cursors_suite(void)
{
    Suite *s = suite_create("cursors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, add_find_remove);
    tcase_add_test(tc, readd_refreshes);
    tcase_add_test(tc, collision_gets_fresh_id);
    tcase_add_test(tc, rewritten_entries_are_found_without_a_scan);
    tcase_add_test(tc, entry_size_within_budget);
    tcase_add_test(tc, expire_idle_in_lru_order);
    tcase_add_test(tc, evict_lru_when_full);
    tcase_add_test(tc, remove_server_exactly);
    tcase_add_test(tc, many_entries_grow);
    tcase_add_test(tc, full_table_of_many_evicts_oldest);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(cursors_suite)
