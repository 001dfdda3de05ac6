/*
 * check_log.c: the log line formats: text with key=value fields (quoted when needed, newlines of
 * a peer's text never starting a new line), JSON objects with escaped strings and numeric
 * fields, and journald's priority prefix without a timestamp.
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"

/* Runs fn with stderr sent to a temporary file and returns what it wrote (to be freed). */
static char *capture(void (*fn)(void))
{
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long n = ftell(tmp);
    rewind(tmp);
    char *out = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(out, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return out;
}

static void write_some(void)
{
    log_write(LOG_WARN, "c1 127.0.0.1:5", "closing: %s", "bad\nframe \"x\"");
    struct log_field f[] = {{"command", "find", 0},
                            {"ns", "test.a b", 0},
                            {"code", NULL, 43},
                            {"errmsg", "a \"q\"\nb", 0}};
    log_write_fields(LOG_INFO, NULL, "slow request", f, 4);
}

START_TEST(test_text)
{
    log_current_format = LOG_FORMAT_TEXT;
    log_journald = false;
    char *out = capture(write_some);
    char *second = strchr(out, '\n');
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_nonnull(strstr(out, "Z warn  [c1 127.0.0.1:5] closing: bad frame \"x\"\n"));
    ck_assert_ptr_nonnull(strstr(second,
                                 "Z info  slow request command=find ns=\"test.a b\" code=43 "
                                 "errmsg=\"a \\\"q\\\" b\"\n"));
    /* Two events, two lines. */
    ck_assert_ptr_eq(strchr(second + 1, '\n'), out + strlen(out) - 1);
    free(out);
}
END_TEST

START_TEST(test_json)
{
    log_current_format = LOG_FORMAT_JSON;
    log_journald = false;
    char *out = capture(write_some);
    char *nl = strchr(out, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    ck_assert_ptr_nonnull(strstr(out, "{\"ts\":\""));
    ck_assert_ptr_nonnull(strstr(out, "\",\"level\":\"warn\",\"conn\":\"c1 127.0.0.1:5\","
                                      "\"msg\":\"closing: bad\\u000aframe \\\"x\\\"\"}"));
    ck_assert_ptr_nonnull(strstr(nl + 1, "\"level\":\"info\",\"msg\":\"slow request\","
                                         "\"command\":\"find\",\"ns\":\"test.a b\",\"code\":43,"
                                         "\"errmsg\":\"a \\\"q\\\"\\u000ab\"}\n"));
    free(out);
    log_current_format = LOG_FORMAT_TEXT;
}
END_TEST

START_TEST(test_journald)
{
    log_current_format = LOG_FORMAT_TEXT;
    log_journald = true;
    char *out = capture(write_some);
    ck_assert_ptr_nonnull(strstr(out, "<4>warn  [c1 127.0.0.1:5] closing: "));
    ck_assert_ptr_nonnull(strstr(out, "\n<6>info  slow request command=find"));
    free(out);
    log_current_format = LOG_FORMAT_JSON;
    out = capture(write_some);
    ck_assert_ptr_nonnull(strstr(out, "<4>{\"level\":\"warn\","));
    ck_assert_ptr_null(strstr(out, "\"ts\""));
    free(out);
    log_current_format = LOG_FORMAT_TEXT;
    log_journald = false;
    /* JOURNAL_STREAM that does not name stderr is ignored. */
    setenv("JOURNAL_STREAM", "1:2", 1);
    log_detect_journald();
    ck_assert(!log_journald);
    unsetenv("JOURNAL_STREAM");
    log_detect_journald();
    ck_assert(!log_journald);
}
END_TEST

START_TEST(test_long_line_is_cut)
{
    static char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    log_current_format = LOG_FORMAT_JSON;
    log_journald = false;
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    log_write(LOG_ERROR, NULL, "%s", big);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long n = ftell(tmp);
    char tail[4];
    fseek(tmp, n - 3, SEEK_SET);
    ck_assert_uint_eq(fread(tail, 1, 3, tmp), 3);
    fclose(tmp);
    ck_assert(n > 1000 && n <= 4096);
    /* Cut, but still one JSON object: the message's string and the object are closed. */
    ck_assert(memcmp(tail, "\"}\n", 3) == 0);
    log_current_format = LOG_FORMAT_TEXT;
}
END_TEST

Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, test_text);
    tcase_add_test(tc, test_json);
    tcase_add_test(tc, test_journald);
    tcase_add_test(tc, test_long_line_is_cut);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(log_suite)
