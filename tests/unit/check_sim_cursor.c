/*
 * check_sim_cursor.c: mongosim's batch filling and per-server cursor table
 * (tests/sim/sim_cursor.c), the pure parts of the simulator's cursor handling.
 */
#include <check.h>
#include <string.h>

#include "check_main.h"
#include "sim.h"

static void add_docs(struct store_results *r, size_t n, size_t pad)
{
    char *s = malloc(pad + 1);
    memset(s, 'x', pad);
    s[pad] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 8;
            r->docs = realloc(r->docs, r->cap * sizeof(*r->docs));
        }
        bson_t *d = bson_new();
        BSON_APPEND_INT64(d, "_id", (int64_t)i);
        BSON_APPEND_UTF8(d, "pad", s);
        r->docs[r->n++] = d;
    }
    free(s);
}

START_TEST(batch_respects_count)
{
    struct store_results r = {0};
    add_docs(&r, 250, 1);
    size_t pos = 0;
    bson_t arr = BSON_INITIALIZER;
    ck_assert_uint_eq(sim_batch_fill(&r, &pos, &arr, 101), 101);
    ck_assert_uint_eq(pos, 101);
    ck_assert_uint_eq(bson_count_keys(&arr), 101);
    bson_reinit(&arr);
    ck_assert_uint_eq(sim_batch_fill(&r, &pos, &arr, 0), 149);
    ck_assert_uint_eq(pos, 250);
    bson_reinit(&arr);
    ck_assert_uint_eq(sim_batch_fill(&r, &pos, &arr, 0), 0);
    bson_destroy(&arr);
    store_results_free(&r);
}
END_TEST

START_TEST(batch_respects_16mb_but_sends_one)
{
    struct store_results r = {0};
    add_docs(&r, 5, 6 * 1024 * 1024); /* 6 MB each: two fit in 16 MB, not three */
    size_t pos = 0;
    bson_t arr = BSON_INITIALIZER;
    ck_assert_uint_eq(sim_batch_fill(&r, &pos, &arr, 0), 2);
    bson_reinit(&arr);
    ck_assert_uint_eq(sim_batch_fill(&r, &pos, &arr, 1), 1);
    bson_destroy(&arr);
    store_results_free(&r);
}
END_TEST

START_TEST(cursor_table_ids_are_random_positive_and_per_server)
{
    static struct sim s;
    memset(&s, 0, sizeof(s));
    s.rng[0] = 0x1234567;
    s.rng[1] = 0x89abcdef;
    s.loop = uv_default_loop();
    s.nservers = 2;
    s.servers[0].sim = s.servers[1].sim = &s;
    int64_t ids[20];
    for (int i = 0; i < 20; i++) {
        struct store_results r = {0};
        add_docs(&r, 3, 1);
        struct sim_cursor *c = sim_cursor_open(&s.servers[i % 2], "db.c", &r);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_gt(c->id, 0);
        ck_assert_ptr_null(r.docs); /* ownership moved to the cursor */
        ids[i] = c->id;
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(ids[j], ids[i]);
    }
    ck_assert_uint_eq(s.servers[0].cursors_open, 10);
    ck_assert_ptr_nonnull(sim_cursor_find(&s.servers[0], ids[0]));
    ck_assert_ptr_null(sim_cursor_find(&s.servers[1], ids[0]));
    struct sim_cursor *c = sim_cursor_find(&s.servers[1], ids[1]);
    ck_assert_str_eq(c->ns, "db.c");
    sim_cursor_close(&s.servers[1], c);
    ck_assert_ptr_null(sim_cursor_find(&s.servers[1], ids[1]));
    /* An idle timeout of 0 ms expires every remaining cursor. */
    sim_cursor_sweep(&s.servers[1], sim_now_ms(&s), 0);
    ck_assert_uint_eq(s.servers[1].cursors_open, 0);
    ck_assert_uint_eq(s.servers[1].cursors_timed_out, 9);
    sim_cursor_close_all(&s.servers[0]);
    ck_assert_uint_eq(s.servers[0].cursors_open, 0);
}
END_TEST

static Suite *sim_cursor_suite(void)
{
    Suite *s = suite_create("sim_cursor");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, batch_respects_count);
    tcase_add_test(tc, batch_respects_16mb_but_sends_one);
    tcase_add_test(tc, cursor_table_ids_are_random_positive_and_per_server);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(sim_cursor_suite)
