/*
 * check_fault.c: the test-only fault injection's spec parser and call counting (src/fault.c).
 */
#include "fault.h"

#include <errno.h>
#include <string.h>

#include "check_main.h"

static char err[200];

START_TEST(inert_without_a_spec)
{
    ck_assert_int_eq(fault_init(NULL, err, sizeof(err)), 0);
    ck_assert(!fault_armed);
    for (int i = 0; i < 5; i++)
        ck_assert(!fault_hit(FAULT_CLIENT_ALLOC));
    ck_assert_int_eq(fault_init("", err, sizeof(err)), 0);
    ck_assert(!fault_armed);
}
END_TEST

START_TEST(nth_call_and_count)
{
    ck_assert_int_eq(fault_init("client_alloc:2,backend_connect:3:2", err, sizeof(err)), 0);
    ck_assert(fault_armed);
    bool want_client[] = {false, true, false, false};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(fault_hit(FAULT_CLIENT_ALLOC), want_client[i]);
    bool want_connect[] = {false, false, true, true, false};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(fault_hit(FAULT_BACKEND_CONNECT), want_connect[i]);
    /* Points not named never fail. */
    ck_assert(!fault_hit(FAULT_ACCEPT));
    /* A count of 0: every call from the first on. */
    ck_assert_int_eq(fault_init("tls_context:1:0", err, sizeof(err)), 0);
    for (int i = 0; i < 100; i++)
        ck_assert(fault_hit(FAULT_TLS_CONTEXT));
    /* init resets the counts. */
    ck_assert_int_eq(fault_init("tls_context:1", err, sizeof(err)), 0);
    ck_assert(fault_hit(FAULT_TLS_CONTEXT));
    ck_assert(!fault_hit(FAULT_TLS_CONTEXT));
    ck_assert_str_eq(fault_point_name(FAULT_MONITOR_WRITE), "monitor_write");
    ck_assert_str_eq(fault_point_name(FAULT_N_POINTS), "?");
    fault_init(NULL, err, sizeof(err));
}
END_TEST

START_TEST(bad_specs_are_refused_and_arm_nothing)
{
    static const struct {
        const char *spec, *want;
    } cases[] = {
        {"nosuch:1", "unknown point \"nosuch\""},
        {"accept", "accept needs :first"},
        {"accept:0", "accept needs :first"},
        {"accept:x", "accept needs :first"},
        {"accept:1:y", "the count is not a number"},
        {"accept:1;", "unexpected \";\" after accept"},
        {"accept:1234567890", "accept needs :first"},
        {"accept:1,nosuch:2", "unknown point"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(fault_init(cases[i].spec, err, sizeof(err)), -EINVAL);
        ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s: %s", cases[i].spec, err);
        ck_assert(!fault_armed);
        ck_assert(!fault_hit(FAULT_ACCEPT));
    }
}
END_TEST

Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, inert_without_a_spec);
    tcase_add_test(tc, nth_call_and_count);
    tcase_add_test(tc, bad_specs_are_refused_and_arm_nothing);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(fault_suite)
