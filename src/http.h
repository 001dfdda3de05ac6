/*
 * http.h: a small parser for the head of an HTTP/1.0 or HTTP/1.1 request (request line and header
 * fields, RFC 9112), for mongolb's admin listener (/metrics, /healthz, /readyz).
 *
 * It reads the bytes received so far and says whether the head is complete, and if so what the
 * method and path are, or why the request is refused, as the HTTP status to answer with. It never
 * reads past len, allocates nothing and never recurses; what it returns holds no pointer (the
 * method and path are copied into the result, the Authorization field is an offset and length
 * into the caller's buffer). Pure: no I/O.
 *
 * Strict where leniency would only hide a broken client: lines end with CRLF; no control
 * characters; header names are tokens; obsolete line folding is refused; at most
 * HTTP_MAX_HEADERS header fields. A request body is not read: the admin endpoints take none, and
 * the connection is closed after each response.
 */
#ifndef MONGOLB_HTTP_H
#define MONGOLB_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 64
#define HTTP_METHOD_MAX  16  /* with the NUL */
#define HTTP_PATH_MAX    256 /* with the NUL; the query string is not kept */

struct http_request {
    char method[HTTP_METHOD_MAX];
    char path[HTTP_PATH_MAX]; /* the target up to '?' */
    int minor;                /* 0 or 1: HTTP/1.0 or HTTP/1.1 */
    int n_headers;
    size_t head_len; /* bytes of the head, the blank line included */
    /* The value of the Authorization field, without surrounding white space, as an offset and
     * length into the parsed buffer; auth_len 0 when there is none. A second Authorization field
     * is refused (400), so that no two parts of mongolb could read different credentials. */
    size_t auth_off;
    size_t auth_len;
    int has_auth;
};

/* What http_parse_head returns besides 0 (complete). */
#define HTTP_INCOMPLETE 1

/*
 * Parses the head at buf[0, len). Returns 0 when it is complete and valid (*req filled),
 * HTTP_INCOMPLETE when more bytes are needed and len is below max_head, or -EINVAL with *status set
 * to the answer: 400 (malformed), 414 (target longer than HTTP_PATH_MAX - 1), 431 (the head does
 * not end within max_head bytes, or too many header fields), 501 (method too long to be one we
 * know) or 505 (not HTTP/1.0 or 1.1).
 */
int http_parse_head(const uint8_t *buf, size_t len, size_t max_head, struct http_request *req,
                    int *status);

/* The reason phrase of a status code mongolb sends ("OK", "Not Found", ...). */
const char *http_reason(int status);

#endif
