/*
 * check_basic_auth.c: HTTP Basic credentials for the admin listener: the Authorization field as
 * http.c finds it (trimmed, any case, a second one refused), its parsing (scheme, base64, the
 * user@db:password split, every bound), the password checked against SCRAM-SHA-256 and
 * SCRAM-SHA-1 verifiers, and the cache of successful checks (hits, expiry, eviction, drop).
 */
#include "basic_auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "http.h"

/* "Basic " + base64(cred) into out. */
static const char *basic(const char *cred, size_t n, char *out, size_t cap)
{
    ck_assert_uint_gt(cap, 6);
    memcpy(out, "Basic ", 6);
    ck_assert_int_ge(scram_b64_encode((const uint8_t *)cred, n, out + 6, cap - 6), 0);
    return out;
}

static int parse_cred(const char *cred, struct basic_auth_cred *c)
{
    char v[4096];
    basic(cred, strlen(cred), v, sizeof(v));
    return basic_auth_parse(v, strlen(v), c);
}

START_TEST(test_header_found)
{
    const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nauthorization: \t Basic b3BzOnB3 \t\r\n"
                      "\r\n";
    struct http_request r;
    int status;
    ck_assert_int_eq(http_parse_head((const uint8_t *)req, strlen(req), 8192, &r, &status), 0);
    ck_assert(r.has_auth);
    ck_assert_uint_eq(r.auth_len, strlen("Basic b3BzOnB3"));
    ck_assert(memcmp(req + r.auth_off, "Basic b3BzOnB3", r.auth_len) == 0);
    /* An empty field is there, with nothing in it. */
    req = "GET / HTTP/1.1\r\nAuthorization:\r\n\r\n";
    ck_assert_int_eq(http_parse_head((const uint8_t *)req, strlen(req), 8192, &r, &status), 0);
    ck_assert(r.has_auth);
    ck_assert_uint_eq(r.auth_len, 0);
    /* A field whose name only starts like it is another field. */
    req = "GET / HTTP/1.1\r\nAuthorizationX: Basic x\r\nProxy-Authorization: Basic y\r\n\r\n";
    ck_assert_int_eq(http_parse_head((const uint8_t *)req, strlen(req), 8192, &r, &status), 0);
    ck_assert(!r.has_auth);
    /* Two of them: which one would count? Neither. */
    req = "GET / HTTP/1.1\r\nAuthorization: Basic a\r\nAUTHORIZATION: Basic b\r\n\r\n";
    ck_assert_int_eq(http_parse_head((const uint8_t *)req, strlen(req), 8192, &r, &status),
                     -EINVAL);
    ck_assert_int_eq(status, 400);
}
END_TEST

START_TEST(test_parse_valid)
{
    struct basic_auth_cred c;
    ck_assert_int_eq(parse_cred("ops@admin:s3cret", &c), 0);
    ck_assert_str_eq(c.user, "ops");
    ck_assert_str_eq(c.db, "admin");
    ck_assert_str_eq(c.password, "s3cret");
    /* No '@': the admin database. The password may hold colons and be empty. */
    ck_assert_int_eq(parse_cred("ops:a:b:c", &c), 0);
    ck_assert_str_eq(c.user, "ops");
    ck_assert_str_eq(c.db, "admin");
    ck_assert_str_eq(c.password, "a:b:c");
    ck_assert_int_eq(parse_cred("ops@app:", &c), 0);
    ck_assert_str_eq(c.password, "");
    /* The user-id splits at its last '@'. */
    ck_assert_int_eq(parse_cred("alice@example.com@$external:pw", &c), 0);
    ck_assert_str_eq(c.user, "alice@example.com");
    ck_assert_str_eq(c.db, "$external");
    /* The scheme in any case, several spaces before the token. */
    const char *v = "bAsIc    b3BzQGFkbWluOnB3"; /* ops@admin:pw */
    ck_assert_int_eq(basic_auth_parse(v, strlen(v), &c), 0);
    ck_assert_str_eq(c.password, "pw");
    /* UTF-8 in a password is not a control character. */
    ck_assert_int_eq(parse_cred("ops@admin:p\xc3\xa4ss", &c), 0);
    basic_auth_cred_wipe(&c);
    ck_assert_str_eq(c.password, "");
}
END_TEST

START_TEST(test_parse_refused)
{
    struct basic_auth_cred c;
    const char *v;
    /* Other schemes, and no scheme. */
    ck_assert_int_eq(basic_auth_parse("Bearer abc", 10, &c), -ENOENT);
    ck_assert_int_eq(basic_auth_parse("Basicb3Bz", 9, &c), -ENOENT);
    ck_assert_int_eq(basic_auth_parse("", 0, &c), -ENOENT);
    ck_assert_int_eq(basic_auth_parse("Bas", 3, &c), -ENOENT);
    /* The scheme with no token. */
    ck_assert_int_eq(basic_auth_parse("Basic", 5, &c), -EINVAL);
    ck_assert_int_eq(basic_auth_parse("Basic   ", 8, &c), -EINVAL);
    /* Bad base64: unpadded, a wrong alphabet, something after the token. */
    v = "Basic b3BzOnB";
    ck_assert_int_eq(basic_auth_parse(v, strlen(v), &c), -EINVAL);
    v = "Basic b3Bz-nB3";
    ck_assert_int_eq(basic_auth_parse(v, strlen(v), &c), -EINVAL);
    v = "Basic b3BzOnB3 x";
    ck_assert_int_eq(basic_auth_parse(v, strlen(v), &c), -EINVAL);
    /* No colon, an empty user-id, an empty user or database. */
    ck_assert_int_eq(parse_cred("opspw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred(":pw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred("@admin:pw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred("ops@:pw", &c), -EINVAL);
    /* Control characters (RFC 7617), a NUL, names the auth_file cannot hold. */
    ck_assert_int_eq(parse_cred("ops@admin:p\tw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred("o\x7fps@admin:pw", &c), -EINVAL);
    char nul[] = "ops@admin:p\0w";
    char buf[256];
    basic(nul, sizeof(nul) - 1, buf, sizeof(buf));
    ck_assert_int_eq(basic_auth_parse(buf, strlen(buf), &c), -EINVAL);
    ck_assert_int_eq(parse_cred("o ps@admin:pw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred("ops@ad.min:pw", &c), -EINVAL);
    ck_assert_int_eq(parse_cred("#ops@admin:pw", &c), -EINVAL);
    ck_assert_str_eq(c.user, ""); /* wiped on failure */
}
END_TEST

START_TEST(test_parse_bounds)
{
    struct basic_auth_cred c;
    static char cred[4096];
    static char v[8192];
    /* A user name of SCRAM_MAX_USER bytes passes, one more does not. */
    memset(cred, 'u', SCRAM_MAX_USER);
    strcpy(cred + SCRAM_MAX_USER, "@admin:pw");
    ck_assert_int_eq(parse_cred(cred, &c), 0);
    ck_assert_uint_eq(strlen(c.user), SCRAM_MAX_USER);
    memset(cred, 'u', SCRAM_MAX_USER + 1);
    strcpy(cred + SCRAM_MAX_USER + 1, "@admin:pw");
    ck_assert_int_eq(parse_cred(cred, &c), -EINVAL);
    /* A database name of AUTHFILE_MAX_DB bytes passes, one more does not. */
    strcpy(cred, "ops@");
    memset(cred + 4, 'd', AUTHFILE_MAX_DB);
    strcpy(cred + 4 + AUTHFILE_MAX_DB, ":pw");
    ck_assert_int_eq(parse_cred(cred, &c), 0);
    memset(cred + 4, 'd', AUTHFILE_MAX_DB + 1);
    strcpy(cred + 4 + AUTHFILE_MAX_DB + 1, ":pw");
    ck_assert_int_eq(parse_cred(cred, &c), -EINVAL);
    /* A password of SCRAM_MAX_PASSWORD bytes passes, one more does not. */
    strcpy(cred, "ops@admin:");
    memset(cred + 10, 'p', SCRAM_MAX_PASSWORD);
    cred[10 + SCRAM_MAX_PASSWORD] = '\0';
    ck_assert_int_eq(parse_cred(cred, &c), 0);
    ck_assert_uint_eq(strlen(c.password), SCRAM_MAX_PASSWORD);
    memset(cred + 10, 'p', SCRAM_MAX_PASSWORD + 1);
    cred[10 + SCRAM_MAX_PASSWORD + 1] = '\0';
    ck_assert_int_eq(parse_cred(cred, &c), -EINVAL);
    /* A token far longer than any credential is refused without decoding it. */
    memset(cred, 'x', 3000);
    cred[3000] = '\0';
    basic(cred, 3000, v, sizeof(v));
    ck_assert_int_eq(basic_auth_parse(v, strlen(v), &c), -EINVAL);
    basic_auth_cred_wipe(&c);
}
END_TEST

static void make(enum scram_mech mech, const char *user, const char *pw, struct scram_verifier *v)
{
    const uint8_t salt[16] = "0123456789abcdef";
    ck_assert_int_eq(scram_verifier_derive(mech, user, pw, salt, sizeof(salt), 4096, v), 0);
}

START_TEST(test_verify)
{
    struct scram_verifier v;
    make(SCRAM_SHA_256, "ops", "pencil", &v);
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "pencil"), 0);
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "pencil2"), SCRAM_EAUTH);
    ck_assert_int_eq(basic_auth_verify(&v, "ops", ""), SCRAM_EAUTH);
    /* SCRAM-SHA-256 preps the password; non-ASCII is the documented limitation. */
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "p\xc3\xa4"), SCRAM_ESASLPREP);
    /* SCRAM-SHA-1 digests user and password: the same password under another name fails. */
    make(SCRAM_SHA_1, "ops", "pencil", &v);
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "pencil"), 0);
    ck_assert_int_eq(basic_auth_verify(&v, "ops2", "pencil"), SCRAM_EAUTH);
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "Pencil"), SCRAM_EAUTH);
    v.mech = (enum scram_mech)7;
    ck_assert_int_eq(basic_auth_verify(&v, "ops", "pencil"), -EINVAL);
}
END_TEST

START_TEST(test_cache)
{
    static struct basic_auth_cache cache;
    ck_assert_int_eq(basic_auth_cache_init(&cache), 0);
    struct scram_verifier v;
    make(SCRAM_SHA_256, "ops", "pencil", &v);
    struct basic_auth_cred cred = {.user = "ops", .db = "admin", .password = "pencil"};
    const char *val = "Basic b3BzQGFkbWluOnBlbmNpbA==";
    size_t n = strlen(val);
    ck_assert_ptr_null(basic_auth_cache_find(&cache, val, n, 1000));
    basic_auth_cache_put(&cache, val, n, &cred, &v, 1000, 60000);
    struct basic_auth_entry *e = basic_auth_cache_find(&cache, val, n, 1001);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->user, "ops");
    ck_assert_str_eq(e->db, "admin");
    ck_assert(scram_verifier_equal(&e->v, &v));
    /* Another value, one byte shorter, one character changed: misses. */
    ck_assert_ptr_null(basic_auth_cache_find(&cache, val, n - 1, 1001));
    ck_assert_ptr_null(basic_auth_cache_find(&cache, "Basic b3BzQGFkbWluOnBlbmNpbA=x", n, 1001));
    /* Expiry. */
    ck_assert_ptr_nonnull(basic_auth_cache_find(&cache, val, n, 60999));
    ck_assert_ptr_null(basic_auth_cache_find(&cache, val, n, 61000));
    /* Put again refreshes the same slot. */
    basic_auth_cache_put(&cache, val, n, &cred, &v, 61000, 60000);
    basic_auth_cache_put(&cache, val, n, &cred, &v, 62000, 60000);
    int used = 0;
    for (int i = 0; i < BASIC_AUTH_CACHE_SLOTS; i++)
        used += cache.e[i].expires_ms != 0;
    ck_assert_int_eq(used, 1);
    /* A full cache: the entry closest to expiry gives way, the others stay. */
    char vals[BASIC_AUTH_CACHE_SLOTS + 1][32];
    for (int i = 0; i < BASIC_AUTH_CACHE_SLOTS; i++) {
        snprintf(vals[i], sizeof(vals[i]), "Basic v%d", i);
        basic_auth_cache_put(&cache, vals[i], strlen(vals[i]), &cred, &v, 100000 + i, 60000);
    }
    ck_assert_ptr_null(basic_auth_cache_find(&cache, val, n, 100000)); /* the oldest, evicted */
    snprintf(vals[BASIC_AUTH_CACHE_SLOTS], 32, "Basic new");
    basic_auth_cache_put(&cache, vals[BASIC_AUTH_CACHE_SLOTS], 9, &cred, &v, 100100, 60000);
    ck_assert_ptr_null(basic_auth_cache_find(&cache, vals[0], strlen(vals[0]), 100100));
    for (int i = 1; i <= BASIC_AUTH_CACHE_SLOTS; i++)
        ck_assert_ptr_nonnull(basic_auth_cache_find(&cache, vals[i], strlen(vals[i]), 100100));
    /* Drop forgets one entry, wiped. */
    e = basic_auth_cache_find(&cache, vals[3], strlen(vals[3]), 100100);
    basic_auth_cache_drop(e);
    ck_assert_int_eq(e->expires_ms, 0);
    ck_assert_str_eq(e->user, "");
    ck_assert_ptr_null(basic_auth_cache_find(&cache, vals[3], strlen(vals[3]), 100100));
    /* The key is random: two caches tag the same value differently. */
    static struct basic_auth_cache other;
    ck_assert_int_eq(basic_auth_cache_init(&other), 0);
    basic_auth_cache_put(&other, val, n, &cred, &v, 0, 1000);
    basic_auth_cache_put(&cache, val, n, &cred, &v, 200000, 1000);
    ck_assert(memcmp(basic_auth_cache_find(&other, val, n, 1)->tag,
                     basic_auth_cache_find(&cache, val, n, 200001)->tag, BASIC_AUTH_TAG_LEN) != 0);
    basic_auth_cache_wipe(&cache);
    basic_auth_cache_wipe(&other);
    ck_assert_ptr_null(basic_auth_cache_find(&cache, val, n, 200001));
}
END_TEST

Suite *basic_auth_suite(void)
{
    Suite *s = suite_create("basic_auth");
    TCase *tc = tcase_create("basic_auth");
    tcase_add_test(tc, test_header_found);
    tcase_add_test(tc, test_parse_valid);
    tcase_add_test(tc, test_parse_refused);
    tcase_add_test(tc, test_parse_bounds);
    tcase_add_test(tc, test_verify);
    tcase_add_test(tc, test_cache);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(basic_auth_suite)
