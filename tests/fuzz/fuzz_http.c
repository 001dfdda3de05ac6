/*
 * fuzz_http.c: http_parse_head() on arbitrary bytes, as the admin listener feeds it: the whole
 * input, then every prefix length a read could end at (a sample of them for long inputs), with a
 * small and the real maximum head size. A complete result must describe a head within the input
 * that ends with CRLF CRLF, with NUL-terminated method and path; a refusal must carry a status;
 * and a prefix of a complete head must never be judged complete.
 *
 * The Authorization field, when there is one, must lie inside the head without surrounding white
 * space, and goes on to basic_auth_parse() as the admin listener passes it: credentials it
 * accepts must be NUL-terminated names the auth_file accepts, and a refusal must leave them wiped.
 */
#include <errno.h>
#include <string.h>

#include "basic_auth.h"
#include "fuzz_common.h"
#include "http.h"

static void check_auth(const uint8_t *head, const struct http_request *r)
{
    if (!r->has_auth) {
        FUZZ_CHECK(r->auth_len == 0);
        return;
    }
    FUZZ_CHECK(r->auth_off <= r->head_len && r->auth_len <= r->head_len - r->auth_off);
    const char *v = (const char *)head + r->auth_off;
    if (r->auth_len) {
        FUZZ_CHECK(v[0] != ' ' && v[0] != '\t');
        FUZZ_CHECK(v[r->auth_len - 1] != ' ' && v[r->auth_len - 1] != '\t');
    }
    struct basic_auth_cred c;
    int rc = basic_auth_parse(v, r->auth_len, &c);
    if (rc == 0) {
        size_t ul = strnlen(c.user, sizeof(c.user)), dl = strnlen(c.db, sizeof(c.db));
        FUZZ_CHECK(ul > 0 && ul < sizeof(c.user) && authfile_user_ok(c.user, ul));
        FUZZ_CHECK(dl > 0 && dl < sizeof(c.db) && authfile_db_ok(c.db, dl));
        FUZZ_CHECK(memchr(c.password, 0, sizeof(c.password)) != NULL);
        fuzz_touch(c.password, strlen(c.password));
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOENT);
        FUZZ_CHECK(c.user[0] == 0 && c.db[0] == 0 && c.password[0] == 0);
    }
    basic_auth_cred_wipe(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_one(const uint8_t *data, size_t len, size_t max_head)
{
    struct http_request r;
    int status = -1;
    int rc = http_parse_head(data, len, max_head, &r, &status);
    if (rc == 0) {
        FUZZ_CHECK(r.head_len >= 4 && r.head_len <= len && r.head_len <= max_head);
        FUZZ_CHECK(memcmp(data + r.head_len - 4, "\r\n\r\n", 4) == 0);
        FUZZ_CHECK(memchr(r.method, 0, sizeof(r.method)) != NULL);
        FUZZ_CHECK(memchr(r.path, 0, sizeof(r.path)) != NULL);
        FUZZ_CHECK(r.minor == 0 || r.minor == 1);
        FUZZ_CHECK(r.n_headers >= 0 && r.n_headers <= HTTP_MAX_HEADERS);
        fuzz_touch(r.method, strlen(r.method));
        fuzz_touch(r.path, strlen(r.path));
        check_auth(data, &r);
        /* Any shorter prefix that ends before the head is not complete. */
        struct http_request r2;
        int st2;
        FUZZ_CHECK(http_parse_head(data, r.head_len - 1, max_head, &r2, &st2) != 0);
    } else if (rc == HTTP_INCOMPLETE) {
        FUZZ_CHECK(len < max_head);
    } else {
        FUZZ_CHECK(rc == -EINVAL);
        FUZZ_CHECK(status >= 400 && status <= 505);
        fuzz_touch(http_reason(status), strlen(http_reason(status)));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = fuzz_copy(data, size);
    check_one(copy, size, 8192);
    check_one(copy, size, 64);
    size_t step = size > 256 ? size / 64 : 1;
    for (size_t i = 0; i < size; i += step)
        check_one(copy, i, 8192);
    free(copy);
    return 0;
}
