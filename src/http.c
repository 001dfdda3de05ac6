/*
 * http.c: the head of an HTTP/1.x request. See http.h.
 */
#include "http.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* tchar of RFC 9110: the characters of a token (a method, a header name). */
static bool is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A visible character of a request target. */
static bool is_vchar(uint8_t c)
{
    return c > 0x20 && c < 0x7f;
}

/* The end of the head: the index just after the first CRLF CRLF, or 0 if there is none yet. */
static size_t find_end(const uint8_t *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

static int fail(int *status, int code)
{
    *status = code;
    return -EINVAL;
}

int http_parse_head(const uint8_t *buf, size_t len, size_t max_head, struct http_request *req,
                    int *status)
{
    memset(req, 0, sizeof(*req));
    *status = 0;
    size_t scan = len < max_head ? len : max_head;
    size_t end = find_end(buf, scan);
    if (end == 0)
        return len >= max_head ? fail(status, 431) : HTTP_INCOMPLETE;
    req->head_len = end;

    /* Request line: method SP target SP HTTP/1.x CRLF. */
    size_t i = 0, n = 0;
    while (i < end && is_tchar(buf[i])) {
        if (n + 1 >= sizeof(req->method))
            return fail(status, 501);
        req->method[n++] = (char)buf[i++];
    }
    if (n == 0 || i >= end || buf[i] != ' ')
        return fail(status, 400);
    i++;
    n = 0;
    bool in_query = false;
    size_t target_start = i;
    while (i < end && is_vchar(buf[i])) {
        if (buf[i] == '?')
            in_query = true;
        if (!in_query) {
            if (n + 1 >= sizeof(req->path))
                return fail(status, 414);
            req->path[n++] = (char)buf[i];
        }
        i++;
    }
    if (i == target_start || i >= end || buf[i] != ' ')
        return fail(status, 400);
    i++;
    static const char proto[] = "HTTP/1.";
    if (end - i < sizeof(proto) - 1 + 3)
        return fail(status, 400);
    if (memcmp(buf + i, "HTTP/", 5) != 0)
        return fail(status, 400);
    if (memcmp(buf + i, proto, sizeof(proto) - 1) != 0 || (buf[i + 7] != '0' && buf[i + 7] != '1'))
        return fail(status, buf[i + 5] >= '0' && buf[i + 5] <= '9' ? 505 : 400);
    req->minor = buf[i + 7] - '0';
    i += 8;
    if (buf[i] != '\r' || buf[i + 1] != '\n')
        return fail(status, 400);
    i += 2;

    /* Header fields, up to the blank line. */
    while (i < end) {
        if (buf[i] == '\r') {
            /* The blank line: find_end guarantees it is the last line. */
            if (i + 2 != end || buf[i + 1] != '\n')
                return fail(status, 400);
            return 0;
        }
        size_t name = i;
        while (i < end && is_tchar(buf[i]))
            i++;
        /* No name (a folded line starts with white space) or no colon right after it. */
        if (i == name || i >= end || buf[i] != ':')
            return fail(status, 400);
        bool is_auth =
            i - name == 13 && strncasecmp((const char *)buf + name, "Authorization", 13) == 0;
        i++;
        size_t value = i;
        while (i < end && buf[i] != '\r') {
            uint8_t c = buf[i];
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return fail(status, 400);
            i++;
        }
        if (i + 1 >= end || buf[i + 1] != '\n')
            return fail(status, 400);
        if (is_auth) {
            if (req->has_auth)
                return fail(status, 400);
            /* The field value without the optional white space around it (RFC 9110 5.5). */
            size_t a = value, b = i;
            while (a < b && (buf[a] == ' ' || buf[a] == '\t'))
                a++;
            while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t'))
                b--;
            req->has_auth = 1;
            req->auth_off = a;
            req->auth_len = b - a;
        }
        i += 2;
        if (++req->n_headers > HTTP_MAX_HEADERS)
            return fail(status, 431);
    }
    return fail(status, 400);
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}
