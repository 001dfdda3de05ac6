/*
 * test_dir.h: a suite's temporary directory, files written into it and shell commands run in it
 * (the TLS suites make their certificates there with the openssl command line). Header-only:
 * each suite is its own program and has its own directory.
 */
#ifndef MONGOLB_TEST_DIR_H
#define MONGOLB_TEST_DIR_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <check.h>

static char test_dir[PATH_MAX];

/* Returns test_dir/name in one of a few rotating static buffers, so that a call may use several. */
static inline const char *test_path(const char *name)
{
    static char bufs[8][PATH_MAX + 64];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", test_dir, name);
    return b;
}

/* Writes text to test_dir/name. */
static inline void test_write_file(const char *name, const char *text)
{
    FILE *f = fopen(test_path(name), "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* Runs a shell command in test_dir, quietly; fails the test if it fails. */
static inline void test_run(const char *cmd)
{
    char *full = NULL;
    ck_assert_int_gt(asprintf(&full, "cd '%s' && ( %s ) >/dev/null 2>&1", test_dir, cmd), 0);
    int rc = system(full);
    ck_assert_msg(rc == 0, "command failed (%d): %s", rc, cmd);
    free(full);
}

#endif
