/*
 * check_authfile.c: the auth_file of SCRAM verifiers. A file with comments, blank lines, tabs and
 * CRLF parsed and looked up (names with dots, $external, both mechanisms); lines written by
 * authfile_make_line() parsed back and used for a real SCRAM login; every kind of bad line
 * reported as "<file>:<line>: <reason>" (all of them, up to a cap), duplicates, the entry bound,
 * long lines and NUL bytes; authfile_load() refusing files that group or others may read.
 */
#include "authfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "test_dir.h"

#define ERR 8192

/* A verifier with a recognisable salt: derived, so the keys fit the mechanism. */
static void verifier(enum scram_mech mech, const char *user, const char *pw, uint8_t seed,
                     struct scram_verifier *v)
{
    uint8_t salt[16];
    for (int i = 0; i < 16; i++)
        salt[i] = (uint8_t)(seed + i);
    ck_assert_int_eq(scram_verifier_derive(mech, user, pw, salt, sizeof(salt), 4096, v), 0);
}

/* One formatted line for (db, user) without its newline, in one of a few static buffers. */
static const char *line_for(enum scram_mech mech, const char *db, const char *user, uint8_t seed)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    struct scram_verifier v;
    verifier(mech, user, "pw", seed, &v);
    int n = authfile_format_verifier(db, user, &v, b, sizeof(bufs[0]));
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(b[n - 1], '\n');
    b[n - 1] = 0;
    return b;
}

static int parse(const char *text, struct authfile *f, char *err)
{
    return authfile_parse(text, strlen(text), "users.auth", 100, f, err, ERR);
}

START_TEST(parse_and_lookup)
{
    char text[4096], err[ERR];
    snprintf(text, sizeof(text),
             "# verifiers copied from the cluster\n"
             "\n"
             "   # an indented comment\n"
             "%s\n"
             "\t%s\r\n"
             "%s   \n"
             "%s\n"
             "   \t  \n"
             "%s",
             line_for(SCRAM_SHA_256, "app", "alice", 1), line_for(SCRAM_SHA_1, "app", "alice", 2),
             line_for(SCRAM_SHA_256, "app", "first.last", 3),
             line_for(SCRAM_SHA_256, "$external", "bob", 4),
             line_for(SCRAM_SHA_1, "admin", "ops", 5));
    /* Tabs between fields work as well as spaces. */
    for (char *p = strstr(text, "admin.ops"); *p; p++)
        if (*p == ' ')
            *p = '\t';
    struct authfile f = {0};
    ck_assert_msg(parse(text, &f, err) == 0, "%s", err);
    ck_assert_uint_eq(f.count, 5);
    ck_assert_str_eq(err, "");

    struct scram_verifier want;
    const struct scram_verifier *got = authfile_lookup(&f, "app", "alice", SCRAM_SHA_256);
    ck_assert_ptr_nonnull(got);
    verifier(SCRAM_SHA_256, "alice", "pw", 1, &want);
    ck_assert(scram_verifier_equal(got, &want));
    got = authfile_lookup(&f, "app", "alice", SCRAM_SHA_1);
    ck_assert_ptr_nonnull(got);
    verifier(SCRAM_SHA_1, "alice", "pw", 2, &want);
    ck_assert(scram_verifier_equal(got, &want));
    ck_assert_ptr_nonnull(authfile_lookup(&f, "app", "first.last", SCRAM_SHA_256));
    ck_assert_ptr_nonnull(authfile_lookup(&f, "$external", "bob", SCRAM_SHA_256));
    ck_assert_ptr_nonnull(authfile_lookup(&f, "admin", "ops", SCRAM_SHA_1));
    /* Exact, case-sensitive names; the database is part of the identity. */
    ck_assert_ptr_null(authfile_lookup(&f, "app", "Alice", SCRAM_SHA_256));
    ck_assert_ptr_null(authfile_lookup(&f, "admin", "alice", SCRAM_SHA_256));
    ck_assert_ptr_null(authfile_lookup(&f, "app.first", "last", SCRAM_SHA_256));
    ck_assert_ptr_null(authfile_lookup(&f, "app", "first.last", SCRAM_SHA_1));
    ck_assert_ptr_null(authfile_lookup(&f, "admin", "ops", SCRAM_SHA_256));

    ck_assert_uint_eq(authfile_mechs(&f, "app", "alice"),
                      (1u << SCRAM_SHA_1) | (1u << SCRAM_SHA_256));
    ck_assert_uint_eq(authfile_mechs(&f, "admin", "ops"), 1u << SCRAM_SHA_1);
    ck_assert_uint_eq(authfile_mechs(&f, "admin", "nobody"), 0);

    authfile_free(&f);
    ck_assert_ptr_null(f.entries);
    ck_assert_uint_eq(f.count, 0);
    ck_assert_ptr_null(authfile_lookup(&f, "app", "alice", SCRAM_SHA_256));
    authfile_free(&f);

    /* Empty and comment-only files are valid and hold nobody. */
    ck_assert_int_eq(parse("", &f, err), 0);
    ck_assert_uint_eq(f.count, 0);
    ck_assert_int_eq(parse("# nobody yet\n\n", &f, err), 0);
    ck_assert_uint_eq(f.count, 0);
    ck_assert_uint_eq(authfile_mechs(&f, "app", "alice"), 0);
    authfile_free(&f);
}
END_TEST

/* A line from authfile_make_line() parses back and lets the password log in. */
static void make_line_logs_in(enum scram_mech mech, uint32_t want_iter, size_t want_salt)
{
    char line[512], err[ERR];
    int n = authfile_make_line(mech, "app", "carol", "correct horse", 0, line, sizeof(line));
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq((size_t)n, strlen(line));
    struct authfile f = {0};
    ck_assert_msg(parse(line, &f, err) == 0, "%s", err);
    const struct scram_verifier *v = authfile_lookup(&f, "app", "carol", mech);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->iterations, want_iter);
    ck_assert_uint_eq(v->salt_len, want_salt);

    uint8_t a[SCRAM_MAX_MSG], b[SCRAM_MAX_MSG];
    size_t an, bn;
    struct scram_client *c = scram_client_new(mech, "carol");
    struct scram_server *s = scram_server_new(mech);
    ck_assert_int_eq(scram_client_set_password(c, "correct horse"), 0);
    ck_assert_int_eq(scram_client_first(c, a, sizeof(a), &an), 0);
    ck_assert_int_eq(scram_server_start(s, a, an), 0);
    ck_assert_int_eq(scram_server_first(s, v, b, sizeof(b), &bn), 0);
    ck_assert_int_eq(scram_client_final(c, b, bn, a, sizeof(a), &an), 0);
    ck_assert_int_eq(scram_server_final(s, a, an, b, sizeof(b), &bn), 0);
    ck_assert_int_eq(scram_client_verify(c, b, bn), 0);
    scram_client_free(c);
    scram_server_free(s);
    authfile_free(&f);

    /* Two lines for the same user differ: the salt is random. */
    char line2[512];
    ck_assert_int_gt(
        authfile_make_line(mech, "app", "carol", "correct horse", 0, line2, sizeof(line2)), 0);
    ck_assert_str_ne(line, line2);
}

START_TEST(make_line_sha256)
{
    make_line_logs_in(SCRAM_SHA_256, AUTHFILE_ITER_SHA256, AUTHFILE_SALT_SHA256);
}
END_TEST

START_TEST(make_line_sha1)
{
    make_line_logs_in(SCRAM_SHA_1, AUTHFILE_ITER_SHA1, AUTHFILE_SALT_SHA1);
}
END_TEST

START_TEST(make_line_arguments)
{
    char line[512];
    ck_assert_int_gt(authfile_make_line(SCRAM_SHA_256, "app", "u", "p", 5000, line, sizeof(line)),
                     0);
    ck_assert_ptr_nonnull(strstr(line, " SCRAM-SHA-256 5000 "));
    ck_assert_int_eq(authfile_make_line(SCRAM_SHA_256, "app", "u", "p", 100, line, sizeof(line)),
                     -EINVAL);
    ck_assert_int_eq(authfile_make_line(SCRAM_SHA_256, "a.b", "u", "p", 0, line, sizeof(line)),
                     -EINVAL);
    ck_assert_int_eq(authfile_make_line(SCRAM_SHA_256, "app", "u v", "p", 0, line, sizeof(line)),
                     -EINVAL);
    ck_assert_int_eq(
        authfile_make_line(SCRAM_SHA_256, "app", "u", "p\xc3\xa9", 0, line, sizeof(line)),
        SCRAM_ESASLPREP);
    ck_assert_int_eq(authfile_make_line(SCRAM_SHA_256, "app", "u", "p", 0, line, 20), -ENOSPC);
    ck_assert_int_eq(authfile_make_line((enum scram_mech)9, "app", "u", "p", 0, line, sizeof(line)),
                     -EINVAL);
}
END_TEST

START_TEST(names)
{
    ck_assert(authfile_db_ok("admin", 5));
    ck_assert(authfile_db_ok("$external", 9));
    ck_assert(!authfile_db_ok("$ext", 4));
    ck_assert(!authfile_db_ok("", 0));
    ck_assert(!authfile_db_ok("a b", 3));
    ck_assert(!authfile_db_ok("a/b", 3));
    ck_assert(!authfile_db_ok("#a", 2));
    char big[AUTHFILE_MAX_DB + 1];
    memset(big, 'd', sizeof(big));
    ck_assert(authfile_db_ok(big, AUTHFILE_MAX_DB));
    ck_assert(!authfile_db_ok(big, AUTHFILE_MAX_DB + 1));
    ck_assert(authfile_user_ok("first.last", 10));
    ck_assert(authfile_user_ok("a=b,c", 5));
    ck_assert(authfile_user_ok("j\xc3\xb6rg", 5));
    ck_assert(!authfile_user_ok("a b", 3));
    ck_assert(!authfile_user_ok("a\tb", 3));
    ck_assert(!authfile_user_ok("a#b", 3));
    ck_assert(!authfile_user_ok("", 0));
}
END_TEST

struct bad_case {
    const char *line;
    const char *reason; /* a piece of the expected message */
};

START_TEST(bad_lines)
{
    const char *good = line_for(SCRAM_SHA_256, "app", "alice", 1);
    /* The fields of a good line, to build bad ones from. */
    char f[6][128];
    ck_assert_int_eq(
        sscanf(good, "%127s %127s %127s %127s %127s %127s", f[0], f[1], f[2], f[3], f[4], f[5]), 6);
    const char *sha1_keys =
        strchr(strchr(strchr(line_for(SCRAM_SHA_1, "app", "x", 9), ' ') + 1, ' ') + 1, ' ') +
        1; /* salt storedKey serverKey */
    char cases[32][1024];
    const char *reasons[32];
    int k = 0;
#define CASE(reason_, ...)                                                                         \
    do {                                                                                           \
        snprintf(cases[k], sizeof(cases[k]), __VA_ARGS__);                                         \
        reasons[k++] = reason_;                                                                    \
    } while (0)
    CASE("missing fields", "%s %s %s %s %s", f[0], f[1], f[2], f[3], f[4]);
    CASE("missing fields", "%s", f[0]);
    CASE("trailing text", "%s %s %s %s %s %s extra", f[0], f[1], f[2], f[3], f[4], f[5]);
    CASE("trailing text", "%s %s %s %s %s %s # comment", f[0], f[1], f[2], f[3], f[4], f[5]);
    CASE("<db>.<user>", "alice %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]);
    CASE("database name", ".alice %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]);
    CASE("database name", "a$b.alice %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]);
    CASE("user name", "app. %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]);
    CASE("user name", "app.a#b %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]);
    CASE("mechanism", "%s SCRAM-SHA-512 %s %s %s %s", f[0], f[2], f[3], f[4], f[5]);
    CASE("mechanism", "%s scram-sha-256 %s %s %s %s", f[0], f[2], f[3], f[4], f[5]);
    CASE("mechanism", "%s PLAIN %s %s %s %s", f[0], f[2], f[3], f[4], f[5]);
    CASE("iteration count", "%s %s 4095 %s %s %s", f[0], f[1], f[3], f[4], f[5]);
    CASE("iteration count", "%s %s 04096 %s %s %s", f[0], f[1], f[3], f[4], f[5]);
    CASE("iteration count", "%s %s 4096x %s %s %s", f[0], f[1], f[3], f[4], f[5]);
    CASE("iteration count", "%s %s -4096 %s %s %s", f[0], f[1], f[3], f[4], f[5]);
    CASE("iteration count", "%s %s 99999999999 %s %s %s", f[0], f[1], f[3], f[4], f[5]);
    CASE("base64", "%s %s %s !!!! %s %s", f[0], f[1], f[2], f[4], f[5]);
    CASE("base64", "%s %s %s %s %s %.20s", f[0], f[1], f[2], f[3], f[4], f[5]);
    CASE("base64", "%s %s %s %s %s %sAAAA", f[0], f[1], f[2], f[3], f[4], f[5]);
    CASE("base64", "%s %s %s %s", f[0], f[1], f[2], sha1_keys); /* SHA-1 keys for SHA-256 */
#undef CASE
    char err[ERR];
    struct authfile fl = {0};
    for (int i = 0; i < k; i++) {
        ck_assert_msg(parse(cases[i], &fl, err) == -EINVAL, "case %d accepted: %s", i, cases[i]);
        ck_assert_msg(strncmp(err, "users.auth:1: ", 14) == 0, "case %d: '%s'", i, err);
        ck_assert_msg(strstr(err, reasons[i]) != NULL, "case %d: '%s' lacks '%s'", i, err,
                      reasons[i]);
        ck_assert_msg(strchr(err, '\n') == NULL, "case %d: one error, one line: '%s'", i, err);
        /* Secrets never appear in messages. */
        ck_assert_msg(strstr(err, f[4]) == NULL && strstr(err, f[5]) == NULL, "case %d", i);
        ck_assert_ptr_null(fl.entries);
        ck_assert_uint_eq(fl.count, 0);
    }
}
END_TEST

START_TEST(every_error_reported)
{
    char text[4096], err[ERR];
    snprintf(text, sizeof(text), "# header\n%s\nbroken line\n%s\nalso broken\n%s\n",
             line_for(SCRAM_SHA_256, "app", "a", 1), line_for(SCRAM_SHA_256, "app", "b", 2),
             line_for(SCRAM_SHA_256, "app", "a", 3));
    struct authfile f = {0};
    ck_assert_int_eq(parse(text, &f, err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "users.auth:3: "));
    ck_assert_ptr_nonnull(strstr(err, "users.auth:5: "));
    ck_assert_ptr_nonnull(
        strstr(err, "users.auth:6: app.a SCRAM-SHA-256 is listed twice (first at line 2)"));
    ck_assert_ptr_null(f.entries);

    /* The same user with two mechanisms is not a duplicate. */
    snprintf(text, sizeof(text), "%s\n%s\n", line_for(SCRAM_SHA_256, "app", "a", 1),
             line_for(SCRAM_SHA_1, "app", "a", 1));
    ck_assert_int_eq(parse(text, &f, err), 0);
    authfile_free(&f);

    /* A previous content is dropped by a parse, successful or not. */
    ck_assert_int_eq(parse(text, &f, err), 0);
    ck_assert_int_eq(parse("junk\n", &f, err), -EINVAL);
    ck_assert_ptr_null(f.entries);

    /* Past AUTHFILE_ERRORS_SHOWN, a count. */
    char many[4096] = "";
    for (int i = 0; i < AUTHFILE_ERRORS_SHOWN + 5; i++)
        strcat(many, "bad\n");
    ck_assert_int_eq(parse(many, &f, err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "users.auth:20: "));
    ck_assert_ptr_null(strstr(err, "users.auth:21: "));
    ck_assert_ptr_nonnull(strstr(err, "... and 5 more errors"));

    /* A small error buffer is cut, NUL-terminated. */
    char small[24];
    memset(small, 'x', sizeof(small));
    ck_assert_int_eq(authfile_parse(many, strlen(many), "users.auth", 10, &f, small, sizeof(small)),
                     -EINVAL);
    ck_assert_ptr_nonnull(memchr(small, 0, sizeof(small)));
}
END_TEST

START_TEST(bounds)
{
    char err[ERR];
    struct authfile f = {0};
    /* The entry bound. */
    char text[8192] = "";
    for (int i = 0; i < 5; i++) {
        char user[8];
        snprintf(user, sizeof(user), "u%d", i);
        strcat(text, line_for(SCRAM_SHA_256, "app", user, (uint8_t)i));
        strcat(text, "\n");
    }
    ck_assert_int_eq(authfile_parse(text, strlen(text), "f", 5, &f, err, sizeof(err)), 0);
    ck_assert_uint_eq(f.count, 5);
    ck_assert_int_eq(authfile_parse(text, strlen(text), "f", 4, &f, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "f:5: more than 4 entries"));
    ck_assert_int_eq(authfile_parse(text, strlen(text), "f", 0, &f, err, sizeof(err)), -EINVAL);

    /* A NUL byte. */
    const char nul[] = "# a\0b\n";
    ck_assert_int_eq(authfile_parse(nul, sizeof(nul) - 1, "f", 5, &f, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "f:1: the line has a NUL byte"));

    /* A long line, even a comment. */
    char *lng = malloc(AUTHFILE_MAX_LINE + 16);
    memset(lng, '#', AUTHFILE_MAX_LINE + 1);
    lng[AUTHFILE_MAX_LINE + 1] = 0;
    ck_assert_int_eq(parse(lng, &f, err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "longer than"));
    lng[AUTHFILE_MAX_LINE] = 0;
    ck_assert_int_eq(parse(lng, &f, err), 0);
    free(lng);

    /* A user name of the largest size is fine; one more byte is not. */
    char user[SCRAM_MAX_USER + 2];
    memset(user, 'u', sizeof(user));
    user[SCRAM_MAX_USER] = 0;
    char line[1024];
    snprintf(line, sizeof(line), "%s\n", line_for(SCRAM_SHA_256, "app", user, 1));
    ck_assert_msg(parse(line, &f, err) == 0, "%s", err);
    ck_assert_ptr_nonnull(authfile_lookup(&f, "app", user, SCRAM_SHA_256));
    struct scram_verifier v;
    verifier(SCRAM_SHA_256, "x", "pw", 1, &v);
    user[SCRAM_MAX_USER] = 'u';
    user[SCRAM_MAX_USER + 1] = 0;
    ck_assert_int_eq(authfile_format_verifier("app", user, &v, line, sizeof(line)), -EINVAL);
    authfile_free(&f);
}
END_TEST

static void make_dir(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/check_authfile.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
}

START_TEST(load_checks_mode)
{
    make_dir();
    char text[1024], err[ERR];
    snprintf(text, sizeof(text), "%s\n", line_for(SCRAM_SHA_256, "app", "alice", 1));
    test_write_file("users.auth", text);
    const char *path = test_path("users.auth");
    struct authfile f = {0};

    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_msg(authfile_load(path, 1, 100, &f, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_nonnull(authfile_lookup(&f, "app", "alice", SCRAM_SHA_256));

    ck_assert_int_eq(chmod(path, 0640), 0);
    ck_assert_int_eq(authfile_load(path, 1, 100, &f, err, sizeof(err)), -EPERM);
    ck_assert_ptr_nonnull(strstr(err, "mode 0640"));
    ck_assert_ptr_null(f.entries);
    ck_assert_int_eq(chmod(path, 0604), 0);
    ck_assert_int_eq(authfile_load(path, 1, 100, &f, err, sizeof(err)), -EPERM);
    /* Without the check (tests, --make-verifier round trips) the same file loads. */
    ck_assert_int_eq(authfile_load(path, 0, 100, &f, err, sizeof(err)), 0);
    authfile_free(&f);

    /* Errors in a loaded file name the path and line. */
    test_write_file("bad.auth", "\nnonsense\n");
    ck_assert_int_eq(chmod(test_path("bad.auth"), 0600), 0);
    ck_assert_int_eq(authfile_load(test_path("bad.auth"), 1, 100, &f, err, sizeof(err)), -EINVAL);
    char want[4200];
    snprintf(want, sizeof(want), "%s:2: ", test_path("bad.auth"));
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);

    ck_assert_int_eq(authfile_load(test_path("missing"), 1, 100, &f, err, sizeof(err)), -ENOENT);
    ck_assert_int_eq(authfile_load(test_dir, 0, 100, &f, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));

    unlink(test_path("users.auth"));
    unlink(test_path("bad.auth"));
    rmdir(test_dir);
}
END_TEST

static Suite *authfile_suite(void)
{
    Suite *s = suite_create("authfile");
    TCase *tc = tcase_create("parse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parse_and_lookup);
    tcase_add_test(tc, names);
    tcase_add_test(tc, bad_lines);
    tcase_add_test(tc, every_error_reported);
    tcase_add_test(tc, bounds);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, make_line_sha256);
    tcase_add_test(tc, make_line_sha1);
    tcase_add_test(tc, make_line_arguments);
    suite_add_tcase(s, tc);
    tc = tcase_create("load");
    tcase_add_test(tc, load_checks_mode);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(authfile_suite)
