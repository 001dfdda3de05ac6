/*
 * check_metrics.c: the pure parts of /metrics: bucket boundaries and recording, error-code
 * tables (and their overflow into code 0), the text format's histogram lines (cumulative, +Inf
 * equal to _count, seconds), label escaping, per-slot histograms that restart for a new
 * server, and the per-code rate limit of error log lines.
 */
#include "metrics.h"

#include <stdio.h>
#include <string.h>

#include "check_main.h"

START_TEST(test_buckets)
{
    /* Boundaries increase, 100 us to 10 s. */
    ck_assert_uint_eq(metrics_bucket_ns[0], 100000);
    ck_assert_uint_eq(metrics_bucket_ns[METRICS_BUCKETS - 1], 10000000000ull);
    for (int i = 1; i < METRICS_BUCKETS; i++)
        ck_assert(metrics_bucket_ns[i] > metrics_bucket_ns[i - 1]);
    /* A boundary belongs to its own bucket (le is "less than or equal"). */
    ck_assert_int_eq(metrics_bucket_of(0), 0);
    ck_assert_int_eq(metrics_bucket_of(100000), 0);
    ck_assert_int_eq(metrics_bucket_of(100001), 1);
    ck_assert_int_eq(metrics_bucket_of(1000000), 3);
    ck_assert_int_eq(metrics_bucket_of(10000000000ull), METRICS_BUCKETS - 1);
    ck_assert_int_eq(metrics_bucket_of(10000000001ull), METRICS_BUCKETS);
    ck_assert_int_eq(metrics_bucket_of(UINT64_MAX), METRICS_BUCKETS);
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        ck_assert_int_eq(metrics_bucket_of(metrics_bucket_ns[i]), i);
        ck_assert_int_eq(metrics_bucket_of(metrics_bucket_ns[i] + 1), i + 1);
    }
}
END_TEST

START_TEST(test_hist_record)
{
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_record(&h, 50000);       /* 50 us */
    metrics_hist_record(&h, 3000000);     /* 3 ms */
    metrics_hist_record(&h, 20000000000); /* 20 s */
    ck_assert_uint_eq(h.count, 3);
    ck_assert_uint_eq(h.sum_ns, 50000ull + 3000000ull + 20000000000ull);
    ck_assert_uint_eq(h.bucket[0], 1);
    ck_assert_uint_eq(h.bucket[5], 1); /* 5 ms */
    ck_assert_uint_eq(h.bucket[METRICS_BUCKETS], 1);
}
END_TEST

START_TEST(test_hist_text)
{
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_record(&h, 200000); /* 0.2 ms: le 0.00025 */
    metrics_hist_record(&h, 200000);
    metrics_hist_record(&h, 700000000); /* 0.7 s: le 1 */
    struct wire_buf b = {0};
    ck_assert_int_eq(metrics_write_hist(&b, "x_seconds", "class=\"read\"", &h), 0);
    ck_assert_int_eq(wire_buf_append(&b, "", 1), 0);
    const char *t = (const char *)b.data;
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"0.0001\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"0.00025\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"0.5\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"1\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"10\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_bucket{class=\"read\",le=\"+Inf\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_sum{class=\"read\"} 0.7004\n"));
    ck_assert_ptr_nonnull(strstr(t, "x_seconds_count{class=\"read\"} 3\n"));
    /* Cumulative counts never decrease, line after line. */
    unsigned long long last = 0;
    int lines = 0;
    for (const char *p = strstr(t, "_bucket"); p; p = strstr(p + 1, "_bucket")) {
        unsigned long long v;
        const char *sp = strchr(p, ' ');
        ck_assert_int_eq(sscanf(sp, " %llu", &v), 1);
        ck_assert(v >= last);
        last = v;
        lines++;
    }
    ck_assert_int_eq(lines, METRICS_BUCKETS + 1);
    /* Without labels. */
    wire_buf_reset(&b);
    ck_assert_int_eq(metrics_write_hist(&b, "y", NULL, &h), 0);
    ck_assert_int_eq(wire_buf_append(&b, "", 1), 0);
    ck_assert_ptr_nonnull(strstr((const char *)b.data, "y_bucket{le=\"+Inf\"} 3\ny_sum 0.7004\n"
                                                       "y_count 3\n"));
    wire_buf_free(&b);
}
END_TEST

START_TEST(test_header_and_values)
{
    struct wire_buf b = {0};
    ck_assert_int_eq(metrics_write_header(&b, "a_total", "counter", "Things."), 0);
    ck_assert_int_eq(metrics_write_uint(&b, "a_total", NULL, 18446744073709551615ull), 0);
    ck_assert_int_eq(metrics_write_value(&b, "b", "x=\"1\"", 0.25), 0);
    ck_assert_int_eq(wire_buf_append(&b, "", 1), 0);
    ck_assert_str_eq((const char *)b.data, "# HELP a_total Things.\n# TYPE a_total counter\n"
                                           "a_total 18446744073709551615\nb{x=\"1\"} 0.25\n");
    wire_buf_free(&b);
    /* A large exposition grows the buffer as it goes. */
    struct wire_buf big = {0};
    for (int i = 0; i < 5000; i++)
        ck_assert_int_eq(metrics_write_uint(&big, "some_metric_name", "server=\"h:1\"", i), 0);
    ck_assert(big.len > 5000 * 30);
    wire_buf_free(&big);
}
END_TEST

START_TEST(test_escape)
{
    char out[64];
    metrics_escape_label("a\"b\\c\nd", out, sizeof(out));
    ck_assert_str_eq(out, "a\\\"b\\\\c\\nd");
    /* Cut, never overrun, and never half an escape. */
    char small[4];
    metrics_escape_label("ab\"", small, sizeof(small));
    ck_assert_str_eq(small, "ab");
    metrics_escape_label("plain", out, sizeof(out));
    ck_assert_str_eq(out, "plain");
}
END_TEST

START_TEST(test_codes)
{
    struct metrics_codes t;
    memset(&t, 0, sizeof(t));
    metrics_codes_add(&t, 43);
    metrics_codes_add(&t, 43);
    metrics_codes_add(&t, 6);
    ck_assert_uint_eq(metrics_codes_get(&t, 43), 2);
    ck_assert_uint_eq(metrics_codes_get(&t, 6), 1);
    ck_assert_uint_eq(metrics_codes_get(&t, 7), 0);
    /* More distinct codes than fit: the rest count as code 0, nothing is lost. */
    for (int c = 1000; c < 1100; c++)
        metrics_codes_add(&t, c);
    ck_assert_int_eq(t.n, METRICS_MAX_CODES);
    uint64_t sum = 0;
    for (int i = 0; i < t.n; i++)
        sum += t.count[i];
    ck_assert_uint_eq(sum, 103);
    ck_assert_uint_eq(metrics_codes_get(&t, 0), 100 - (METRICS_MAX_CODES - 1 - 2));
    metrics_codes_add(&t, 43);
    ck_assert_uint_eq(metrics_codes_get(&t, 43), 3);
}
END_TEST

START_TEST(test_request_done_per_server)
{
    static struct metrics_state m;
    memset(&m, 0, sizeof(m));
    metrics_request_done(&m, METRICS_READ, 2, "a:1", 1000);
    metrics_request_done(&m, METRICS_WRITE, 2, "a:1", 1000);
    metrics_request_done(&m, METRICS_COMMAND, -1, NULL, 1000); /* answered locally */
    ck_assert_uint_eq(m.cls[METRICS_READ].count, 1);
    ck_assert_uint_eq(m.cls[METRICS_WRITE].count, 1);
    ck_assert_uint_eq(m.cls[METRICS_COMMAND].count, 1);
    ck_assert_uint_eq(m.server[2].hist.count, 2);
    /* The slot now belongs to another server: its histogram starts afresh. */
    metrics_request_done(&m, METRICS_GETMORE, 2, "b:2", 1000);
    ck_assert_uint_eq(m.server[2].hist.count, 1);
    ck_assert_str_eq(m.server[2].addr, "b:2");
    ck_assert_str_eq(metrics_class_name(METRICS_GETMORE), "getMore");
    ck_assert_str_eq(metrics_class_name(METRICS_CLASSES), "command");
}
END_TEST

START_TEST(test_rate_limit)
{
    struct metrics_rl rl;
    memset(&rl, 0, sizeof(rl));
    uint64_t sup;
    for (int i = 0; i < 3; i++) {
        ck_assert(metrics_rl_take(&rl, 43, 1000 + i, 3, 10000, &sup));
        ck_assert_uint_eq(sup, 0);
    }
    for (int i = 0; i < 5; i++)
        ck_assert(!metrics_rl_take(&rl, 43, 2000, 3, 10000, &sup));
    /* Another code has its own allowance. */
    ck_assert(metrics_rl_take(&rl, 6, 2000, 3, 10000, &sup));
    /* A new window: the five suppressed are reported once, and lines flow again. */
    ck_assert(metrics_rl_take(&rl, 43, 11000, 3, 10000, &sup));
    ck_assert_uint_eq(sup, 5);
    ck_assert(metrics_rl_take(&rl, 43, 11001, 3, 10000, &sup));
    ck_assert_uint_eq(sup, 0);
    /* No limit. */
    for (int i = 0; i < 100; i++)
        ck_assert(metrics_rl_take(&rl, 1, 0, 0, 10000, &sup));
    /* More codes than slots: the oldest slot is reused, and what it held back is reported. */
    struct metrics_rl full;
    memset(&full, 0, sizeof(full));
    for (int c = 0; c < METRICS_RL_SLOTS; c++)
        ck_assert(metrics_rl_take(&full, c, 100 + c, 1, 10000, &sup));
    ck_assert(!metrics_rl_take(&full, 0, 200, 1, 10000, &sup));
    ck_assert(metrics_rl_take(&full, 999, 300, 1, 10000, &sup));
    ck_assert_uint_eq(sup, 1); /* code 0's slot was the oldest */
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_buckets);
    tcase_add_test(tc, test_hist_record);
    tcase_add_test(tc, test_hist_text);
    tcase_add_test(tc, test_header_and_values);
    tcase_add_test(tc, test_escape);
    tcase_add_test(tc, test_codes);
    tcase_add_test(tc, test_request_done_per_server);
    tcase_add_test(tc, test_rate_limit);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(metrics_suite)
