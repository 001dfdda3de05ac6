/*
 * check_main.h: the main() every Check suite binary shares. A suite file defines
 * `Suite *NAME_suite(void)` and ends with CHECK_MAIN(NAME_suite); the Makefile builds one binary
 * per tests/unit/check_*.c, so adding a suite never touches a shared list.
 */
#ifndef MONGOLB_CHECK_MAIN_H
#define MONGOLB_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

#define CHECK_MAIN(suite_fn)                                                                       \
    int main(void)                                                                                 \
    {                                                                                              \
        SRunner *sr = srunner_create(suite_fn());                                                  \
        srunner_run_all(sr, CK_NORMAL);                                                            \
        int failed = srunner_ntests_failed(sr);                                                    \
        srunner_free(sr);                                                                          \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                          \
    }

#endif
