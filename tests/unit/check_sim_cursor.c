/*
 * check_sim_cursor.c: mongosim's batch filling and per-server cursor table
 * (tests/sim/sim_cursor.c), the pure parts of the simulator's cursor handling; and the parts of
 * the simulator that need no network: the versions it can claim (sim_version.c) and replication
 * between members that keep their own data (sim_repl.c).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "log.h"
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

START_TEST(versions_and_what_they_change)
{
    int v = 0;
    ck_assert_int_eq(sim_version_parse("7.0", &v), 0);
    ck_assert_int_eq(v, 700);
    ck_assert_int_eq(sim_version_parse("8.0", &v), 0);
    ck_assert_int_eq(v, 800);
    ck_assert_int_eq(sim_version_parse("5.1", &v), 0);
    ck_assert_int_eq(v, 501);
    ck_assert_int_eq(sim_version_parse("7.4", &v), -EINVAL);
    ck_assert_int_eq(sim_version_parse("7", &v), -EINVAL);
    ck_assert_int_eq(sim_version_parse("7.0.1", &v), -EINVAL);
    ck_assert_int_eq(sim_version_parse("", &v), -EINVAL);
    ck_assert_int_eq(v, 501); /* untouched by refusals */
    /* The servers' own wire versions (wire_version.h). */
    ck_assert_int_eq(sim_version_wire(500), 13);
    ck_assert_int_eq(sim_version_wire(501), 14);
    ck_assert_int_eq(sim_version_wire(600), 17);
    ck_assert_int_eq(sim_version_wire(700), 21);
    ck_assert_int_eq(sim_version_wire(701), 22);
    ck_assert_int_eq(sim_version_wire(800), 25);
    ck_assert_int_eq(sim_version_wire(704), -1);
    ck_assert_int_eq(sim_version_of_wire(21), 700);
    ck_assert_int_eq(sim_version_of_wire(22), 701);
    ck_assert_int_eq(sim_version_of_wire(12), 404); /* 4.7-4.9 were development releases */
    ck_assert_int_eq(sim_version_of_wire(99), 800);
    ck_assert_int_eq(sim_version_of_wire(0), 400);
    char buf[16];
    sim_version_string(701, buf, sizeof(buf));
    ck_assert_str_eq(buf, "7.1.0");
    ck_assert(!sim_legacy_opcodes_removed(500));
    ck_assert(sim_legacy_opcodes_removed(501));
    ck_assert(!sim_exhaust_get_more(700, true));
    ck_assert(sim_exhaust_get_more(701, true));
    ck_assert(sim_exhaust_get_more(700, false));
    ck_assert(!sim_default_write_concern_majority(404));
    ck_assert(sim_default_write_concern_majority(500));
}
END_TEST

/* A three-member replica set without network: member 0 primary, the others alive. */
static void fake_replset(struct sim *s)
{
    log_current_level = LOG_WARN; /* replication's start is logged at info */
    memset(s, 0, sizeof(*s));
    s->opt.mode = SIM_MODE_REPLSET;
    s->opt.version = 700;
    s->nservers = 3;
    s->term = 1;
    s->store = store_new();
    ck_assert_ptr_nonnull(s->store);
    for (int i = 0; i < 3; i++) {
        s->servers[i].sim = s;
        s->servers[i].index = i;
        s->servers[i].listening = true;
        s->servers[i].store = s->store;
        bson_init(&s->servers[i].tags);
    }
    s->servers[0].primary = true;
}

static void free_fake(struct sim *s)
{
    for (int i = 0; i < s->nservers; i++)
        sim_free_server_state(&s->servers[i]);
    sim_repl_free(s);
    store_free(s->store);
}

/* Inserts {_id: id} into db.c of member i's store. */
static void insert_on(struct sim *s, int i, int id)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"insert\": \"c\", \"documents\": [{\"_id\": %d}]}", id);
    bson_error_t e;
    bson_t *cmd = bson_new_from_json((const uint8_t *)json, -1, &e);
    bson_t reply = BSON_INITIALIZER;
    struct store_results r = {0};
    ck_assert_int_eq(
        store_exec(s->servers[i].store, "db", cmd, NULL, 0, &reply, &r, NULL, NULL, 0, NULL, NULL),
        0);
    bson_destroy(cmd);
    bson_destroy(&reply);
}

static size_t docs_on(struct sim *s, int i)
{
    sim_repl_catch_up(&s->servers[i]);
    return store_count_docs(s->servers[i].store, "db", "c");
}

START_TEST(replication_by_lag)
{
    static struct sim s;
    fake_replset(&s);
    insert_on(&s, 0, 1); /* before replication starts: every member has it */
    s.servers[2].lag_ms = 60000;
    ck_assert_int_eq(sim_repl_start(&s, true), 0);
    ck_assert_ptr_nonnull(s.oplog);
    ck_assert_ptr_ne(s.servers[1].store, s.store);
    ck_assert_ptr_ne(s.servers[2].store, s.store);
    ck_assert_uint_eq(docs_on(&s, 2), 1);
    /* Started with the process, a lagging member's last write is its lag old. */
    ck_assert_int_le(s.servers[2].applied_ms, sim_wall_ms() - 59000);

    insert_on(&s, 0, 2);
    ck_assert_uint_eq(docs_on(&s, 0), 2);
    ck_assert_uint_eq(docs_on(&s, 1), 2); /* no lag: at once */
    ck_assert_uint_eq(docs_on(&s, 2), 1); /* a minute late */
    ck_assert_uint_eq(s.servers[1].applied, store_oplog_count(s.oplog));

    /* A dead member applies nothing; with its lag gone it catches up once it is back. */
    s.servers[1].listening = false;
    insert_on(&s, 0, 3);
    ck_assert_uint_eq(docs_on(&s, 1), 2);
    s.servers[1].listening = true;
    ck_assert_uint_eq(docs_on(&s, 1), 3);

    /* hello's lastWrite: the member's own position, and the majority's. */
    bson_t hello = BSON_INITIALIZER;
    sim_repl_append_last_write(&s.servers[2], &hello);
    bson_iter_t it;
    uint32_t ts, inc;
    ck_assert(bson_iter_init(&it, &hello) &&
              bson_iter_find_descendant(&it, "lastWrite.opTime.ts", &it));
    bson_iter_timestamp(&it, &ts, &inc);
    ck_assert_uint_eq(inc, 0);
    ck_assert(bson_iter_init(&it, &hello) &&
              bson_iter_find_descendant(&it, "lastWrite.majorityOpTime.ts", &it));
    bson_iter_timestamp(&it, &ts, &inc);
    ck_assert_uint_eq(inc, store_oplog_count(s.oplog));
    bson_destroy(&hello);

    /* A causal read on the lagging member waits about its lag; one beyond the cluster's time is
     * an error. */
    bson_t reply = BSON_INITIALIZER, cmd = BSON_INITIALIZER, rc;
    BSON_APPEND_UTF8(&cmd, "find", "c");
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "readConcern", &rc);
    BSON_APPEND_TIMESTAMP(&rc, "afterClusterTime", (uint32_t)(sim_wall_ms() / 1000),
                          (uint32_t)store_oplog_count(s.oplog));
    bson_append_document_end(&cmd, &rc);
    int64_t wait = sim_repl_read_wait(&s.servers[2], &cmd, 0, &reply);
    ck_assert_int_gt(wait, 58000);
    ck_assert_int_le(wait, 61001);
    ck_assert_int_eq(sim_repl_read_wait(&s.servers[1], &cmd, 0, &reply), 0);
    bson_reinit(&cmd);
    BSON_APPEND_UTF8(&cmd, "find", "c");
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "readConcern", &rc);
    BSON_APPEND_TIMESTAMP(&rc, "afterClusterTime", (uint32_t)(sim_wall_ms() / 1000) + 100, 1);
    bson_append_document_end(&cmd, &rc);
    ck_assert_int_eq(sim_repl_read_wait(&s.servers[1], &cmd, 0, &reply), -1);
    ck_assert(bson_iter_init_find(&it, &reply, "code"));
    ck_assert_int_eq(bson_iter_int32(&it), 72);
    bson_destroy(&cmd);
    bson_destroy(&reply);

    /* An election gives the new primary everything first, and moves the oplog to it. */
    sim_repl_elect(&s, 0, 2);
    s.servers[0].primary = false;
    s.servers[2].primary = true;
    ck_assert_uint_eq(docs_on(&s, 2), 3);
    insert_on(&s, 2, 4);
    ck_assert_uint_eq(docs_on(&s, 2), 4);
    ck_assert_uint_eq(docs_on(&s, 0), 4); /* the old primary, without lag */
    ck_assert_uint_eq(docs_on(&s, 1), 4);
    free_fake(&s);
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
    tcase_add_test(tc, versions_and_what_they_change);
    tcase_add_test(tc, replication_by_lag);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(sim_cursor_suite)
