/*
 * check_http.c: the HTTP/1.x request head parser: complete heads, heads that need more bytes,
 * and each refusal with its status (400, 414, 431, 501, 505), at every split point of a valid
 * request so that partial reads never change the outcome.
 */
#include "http.h"

#include <errno.h>
#include <string.h>

#include "check_main.h"

static int parse(const char *text, struct http_request *r, int *status)
{
    return http_parse_head((const uint8_t *)text, strlen(text), 8192, r, status);
}

static void expect_status(const char *text, int want)
{
    struct http_request r;
    int status;
    ck_assert_int_eq(parse(text, &r, &status), -EINVAL);
    ck_assert_msg(status == want, "%s: status %d, want %d", text, status, want);
}

START_TEST(test_valid)
{
    struct http_request r;
    int status;
    const char *req = "GET /metrics?x=1 HTTP/1.1\r\nHost: localhost:9216\r\nUser-Agent: "
                      "Prometheus/2.45\r\nAccept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\n"
                      "X-Empty:\r\n\r\n";
    ck_assert_int_eq(parse(req, &r, &status), 0);
    ck_assert_str_eq(r.method, "GET");
    ck_assert_str_eq(r.path, "/metrics");
    ck_assert_int_eq(r.minor, 1);
    ck_assert_int_eq(r.n_headers, 4);
    ck_assert_uint_eq(r.head_len, strlen(req));
    ck_assert_int_eq(parse("HEAD /healthz HTTP/1.0\r\n\r\n", &r, &status), 0);
    ck_assert_str_eq(r.method, "HEAD");
    ck_assert_int_eq(r.minor, 0);
    ck_assert_int_eq(r.n_headers, 0);
    /* Bytes after the head (a body, a pipelined request) are not the head's. */
    ck_assert_int_eq(parse("GET / HTTP/1.1\r\n\r\nGARBAGE", &r, &status), 0);
    ck_assert_uint_eq(r.head_len, 18);
}
END_TEST

START_TEST(test_incomplete_at_every_split)
{
    const char *req = "GET /readyz HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
    size_t n = strlen(req);
    struct http_request r;
    int status;
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(http_parse_head((const uint8_t *)req, i, 8192, &r, &status),
                         HTTP_INCOMPLETE);
    ck_assert_int_eq(http_parse_head((const uint8_t *)req, n, 8192, &r, &status), 0);
}
END_TEST

START_TEST(test_refusals)
{
    expect_status("\r\n\r\n", 400);
    expect_status("GET\r\n\r\n", 400);
    expect_status("GET  / HTTP/1.1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1 extra\r\n\r\n", 400);
    expect_status("GET / FTP/1.1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\n\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", 400);
    expect_status("GET /\x7f HTTP/1.1\r\n\r\n", 400);
    expect_status("\x16\x03\x01\x02\x01\r\n\r\n", 400);
    expect_status("GET / HTTP/2.0\r\n\r\n", 505);
    expect_status("GET / HTTP/1.2\r\n\r\n", 505);
    expect_status("GET / HTTP/0.9\r\n\r\n", 505);
    expect_status("AVERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", 501);
    char longpath[600];
    memset(longpath, 0, sizeof(longpath));
    strcpy(longpath, "GET /");
    memset(longpath + 5, 'a', 300);
    strcat(longpath, " HTTP/1.1\r\n\r\n");
    expect_status(longpath, 414);
    /* The query string does not count against the path's room. */
    memset(longpath, 0, sizeof(longpath));
    strcpy(longpath, "GET /metrics?");
    memset(longpath + 13, 'q', 400);
    strcat(longpath, " HTTP/1.1\r\n\r\n");
    struct http_request r;
    int status;
    ck_assert_int_eq(parse(longpath, &r, &status), 0);
    ck_assert_str_eq(r.path, "/metrics");
}
END_TEST

START_TEST(test_limits)
{
    struct http_request r;
    int status;
    /* A head that does not end within max_head bytes. */
    char big[300];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    ck_assert_int_eq(http_parse_head((const uint8_t *)big, 100, 256, &r, &status), HTTP_INCOMPLETE);
    ck_assert_int_eq(http_parse_head((const uint8_t *)big, 256, 256, &r, &status), -EINVAL);
    ck_assert_int_eq(status, 431);
    ck_assert_int_eq(http_parse_head((const uint8_t *)big, sizeof(big), 256, &r, &status), -EINVAL);
    ck_assert_int_eq(status, 431);
    /* Too many header fields. */
    char many[4096] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        strcat(many, "A: b\r\n");
    strcat(many, "\r\n");
    expect_status(many, 431);
    ck_assert_str_eq(http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(http_reason(503), "Service Unavailable");
    ck_assert_str_eq(http_reason(299), "Error");
}
END_TEST

Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");
    tcase_add_test(tc, test_valid);
    tcase_add_test(tc, test_incomplete_at_every_split);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_limits);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(http_suite)
