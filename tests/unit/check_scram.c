/*
 * check_scram.c: scram.c against the published example exchanges, byte for byte, as client and
 * as server: RFC 5802's SCRAM-SHA-1 (raw password), MongoDB's SCRAM-SHA-1 (password digest) from
 * the driver authentication specification, RFC 7677's SCRAM-SHA-256. Then the pass-through
 * round trip (a ClientKey recovered by one server logs in to another holding the same verifier),
 * the password cache (export), wrong passwords, unknown users, tampered nonces and signatures,
 * weak iteration counts, a changed salt (the refresh error), and malformed messages of every kind.
 */
#include "scram.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "check_main.h"

#define BUF SCRAM_MAX_MSG

/* The messages of one exchange. */
struct exchange {
    enum scram_mech mech;
    const char *user, *password;
    const char *cnonce, *snonce; /* client nonce, server's suffix */
    const char *client_first, *server_first, *client_final, *server_final;
};

/* RFC 5802 section 5 (SCRAM-SHA-1 with the raw password "pencil"). */
static const struct exchange rfc5802 = {
    SCRAM_SHA_1,
    "user",
    "pencil",
    "fyko+d2lbbFgONRv9qkxdawL",
    "3rfcNHYJY1ZVvWVs7j",
    "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

/* The driver authentication specification's SCRAM-SHA-1 conversation (MongoDB's digest). */
static const struct exchange mongo_sha1 = {
    SCRAM_SHA_1,
    "user",
    "pencil",
    "fyko+d2lbbFgONRv9qkxdawL",
    "Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE",
    "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/"
    "9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=",
    "v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=",
};

/* RFC 7677 section 3, also the specification's SCRAM-SHA-256 conversation. */
static const struct exchange rfc7677 = {
    SCRAM_SHA_256,
    "user",
    "pencil",
    "rOprNGfwEbeRWgbNEkqO",
    "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static void assert_msg(const uint8_t *got, size_t len, const char *want)
{
    ck_assert_msg(len == strlen(want) && memcmp(got, want, len) == 0, "got '%.*s', want '%s'",
                  (int)len, (const char *)got, want);
}

/* The salt of an exchange's server-first message, decoded. */
static size_t salt_of(const struct exchange *x, uint8_t *salt)
{
    const char *s = strstr(x->server_first, ",s=") + 3;
    size_t n = (size_t)(strstr(s, ",i=") - s), out = 0;
    ck_assert_int_eq(scram_b64_decode(s, n, salt, SCRAM_MAX_SALT, &out), 0);
    return out;
}

static uint32_t iter_of(const struct exchange *x)
{
    return (uint32_t)atoi(strstr(x->server_first, ",i=") + 3);
}

/*
 * The ClientKey and verifier for a raw password, without MongoDB's digest: RFC 5802's example
 * uses "pencil" as it is, which scram.c never does for SCRAM-SHA-1, so the test derives them.
 */
static void raw_keys(const struct exchange *x, uint8_t *client_key, struct scram_verifier *v)
{
    const EVP_MD *md = x->mech == SCRAM_SHA_1 ? EVP_sha1() : EVP_sha256();
    size_t kl = scram_key_len(x->mech);
    uint8_t salted[SCRAM_MAX_KEY];
    unsigned int n;
    memset(v, 0, sizeof(*v));
    v->mech = x->mech;
    v->iterations = iter_of(x);
    v->salt_len = salt_of(x, v->salt);
    ck_assert_int_eq(PKCS5_PBKDF2_HMAC(x->password, (int)strlen(x->password), v->salt,
                                       (int)v->salt_len, (int)v->iterations, md, (int)kl, salted),
                     1);
    ck_assert_ptr_nonnull(HMAC(md, salted, (int)kl, u8("Client Key"), 10, client_key, &n));
    ck_assert_ptr_nonnull(HMAC(md, salted, (int)kl, u8("Server Key"), 10, v->server_key, &n));
    ck_assert_int_eq(EVP_Digest(client_key, kl, v->stored_key, &n, md, NULL), 1);
}

/* The verifier as scram.c derives it (MongoDB's rules). */
static void mongo_verifier(const struct exchange *x, struct scram_verifier *v)
{
    uint8_t salt[SCRAM_MAX_SALT];
    size_t sl = salt_of(x, salt);
    ck_assert_int_eq(scram_verifier_derive(x->mech, x->user, x->password, salt, sl, iter_of(x), v),
                     0);
}

/* Runs the server side of x with verifier v and checks every message it writes. */
static void run_server(const struct exchange *x, const struct scram_verifier *v,
                       const uint8_t *want_key)
{
    uint8_t out[BUF], key[SCRAM_MAX_KEY];
    size_t n = 0, kl = 0;
    struct scram_server *s = scram_server_new(x->mech);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(scram_server_set_nonce(s, x->snonce), 0);
    ck_assert_int_eq(scram_server_start(s, u8(x->client_first), strlen(x->client_first)), 0);
    ck_assert_str_eq(scram_server_user(s), x->user);
    ck_assert_int_eq(scram_server_first(s, v, out, sizeof(out), &n), 0);
    assert_msg(out, n, x->server_first);
    ck_assert(!scram_server_done(s));
    ck_assert_int_eq(scram_server_client_key(s, key, &kl), -EINVAL);
    ck_assert_int_eq(
        scram_server_final(s, u8(x->client_final), strlen(x->client_final), out, sizeof(out), &n),
        0);
    assert_msg(out, n, x->server_final);
    ck_assert(scram_server_done(s));
    ck_assert_int_eq(scram_server_client_key(s, key, &kl), 0);
    ck_assert_uint_eq(kl, scram_key_len(x->mech));
    if (want_key)
        ck_assert_mem_eq(key, want_key, kl);
    scram_server_free(s);
}

/* Runs the client side of x (password, or key + verifier) and checks every message. */
static void run_client(const struct exchange *x, const uint8_t *key, const struct scram_verifier *v)
{
    uint8_t out[BUF];
    size_t n = 0;
    struct scram_client *c = scram_client_new(x->mech, x->user);
    ck_assert_ptr_nonnull(c);
    if (key)
        ck_assert_int_eq(scram_client_set_key(c, key, scram_key_len(x->mech), v), 0);
    else
        ck_assert_int_eq(scram_client_set_password(c, x->password), 0);
    ck_assert_int_eq(scram_client_set_nonce(c, x->cnonce), 0);
    ck_assert_int_eq(scram_client_first(c, out, sizeof(out), &n), 0);
    assert_msg(out, n, x->client_first);
    ck_assert_int_eq(
        scram_client_final(c, u8(x->server_first), strlen(x->server_first), out, sizeof(out), &n),
        0);
    assert_msg(out, n, x->client_final);
    ck_assert(!scram_client_done(c));
    if (!key) {
        uint8_t k[SCRAM_MAX_KEY];
        size_t kl = 0;
        struct scram_verifier ev, dv;
        ck_assert_int_eq(scram_client_export_key(c, k, &kl, &ev), 0);
        ck_assert_uint_eq(kl, scram_key_len(x->mech));
        mongo_verifier(x, &dv);
        ck_assert(scram_verifier_equal(&ev, &dv));
    }
    ck_assert_int_eq(scram_client_verify(c, u8(x->server_final), strlen(x->server_final)), 0);
    ck_assert(scram_client_done(c));
    scram_client_free(c);
}

START_TEST(rfc5802_sha1_raw_password)
{
    uint8_t key[SCRAM_MAX_KEY];
    struct scram_verifier v;
    raw_keys(&rfc5802, key, &v);
    run_server(&rfc5802, &v, key);
    run_client(&rfc5802, key, &v);
}
END_TEST

START_TEST(mongodb_sha1_conversation)
{
    struct scram_verifier v;
    mongo_verifier(&mongo_sha1, &v);
    run_client(&mongo_sha1, NULL, NULL);
    run_server(&mongo_sha1, &v, NULL);
}
END_TEST

START_TEST(rfc7677_sha256)
{
    uint8_t key[SCRAM_MAX_KEY];
    struct scram_verifier v, mv;
    raw_keys(&rfc7677, key, &v);
    /* For ASCII, SASLprep is the identity: scram.c's verifier equals the raw one. */
    mongo_verifier(&rfc7677, &mv);
    ck_assert(scram_verifier_equal(&v, &mv));
    run_client(&rfc7677, NULL, NULL);
    run_client(&rfc7677, key, &v);
    run_server(&rfc7677, &mv, key);
}
END_TEST

START_TEST(sha1_password_digest)
{
    char d[33];
    ck_assert_int_eq(scram_sha1_password_digest("user", "pencil", d), 0);
    ck_assert_str_eq(d, "1c33006ec1ffd90f9cadcbcc0e118200");
    /* No SASLprep on either part: the bytes are hashed as they are. */
    ck_assert_int_eq(scram_sha1_password_digest("user", "p\xc3\xa9ncil", d), 0);
    ck_assert_int_eq(scram_sha1_password_digest("", "pencil", d), -EINVAL);
}
END_TEST

START_TEST(mechanism_names)
{
    enum scram_mech m;
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-1", 11, &m), 0);
    ck_assert_int_eq(m, SCRAM_SHA_1);
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-256", 13, &m), 0);
    ck_assert_int_eq(m, SCRAM_SHA_256);
    ck_assert_int_eq(scram_mech_parse("scram-sha-256", 13, &m), -EINVAL);
    ck_assert_int_eq(scram_mech_parse("SCRAM-SHA-25", 12, &m), -EINVAL);
    ck_assert_int_eq(scram_mech_parse("PLAIN", 5, &m), -EINVAL);
    ck_assert_str_eq(scram_mech_name(SCRAM_SHA_256), "SCRAM-SHA-256");
    ck_assert_str_eq(scram_mech_name(SCRAM_SHA_1), "SCRAM-SHA-1");
    ck_assert_uint_eq(scram_key_len(SCRAM_SHA_1), 20);
    ck_assert_uint_eq(scram_key_len(SCRAM_SHA_256), 32);
}
END_TEST

START_TEST(error_codes)
{
    ck_assert_int_eq(scram_error_code(SCRAM_EPROTO), 17);
    ck_assert_int_eq(scram_error_code(SCRAM_ENOTSUP), 17);
    ck_assert_int_eq(scram_error_code(SCRAM_EAUTH), 18);
    ck_assert_int_eq(scram_error_code(SCRAM_EWEAK), 18);
    ck_assert_int_eq(scram_error_code(SCRAM_ESTALE), 18);
    ck_assert_int_eq(scram_error_code(-ENOMEM), 18);
    /* Distinct codes, so the caller can tell them apart. */
    int codes[] = {SCRAM_EPROTO,    SCRAM_EAUTH, SCRAM_ENOTSUP, SCRAM_EWEAK, SCRAM_ESTALE,
                   SCRAM_ESASLPREP, -ENOMEM,     -ENOSPC,       -EINVAL,     -EIO};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ck_assert_ptr_nonnull(scram_strerror(codes[i]));
        for (size_t j = i + 1; j < sizeof(codes) / sizeof(codes[0]); j++)
            ck_assert_int_ne(codes[i], codes[j]);
    }
}
END_TEST

START_TEST(base64_vectors)
{
    /* RFC 4648 section 10. */
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char out[16];
    uint8_t dec[16];
    size_t n;
    for (int i = 0; i < 7; i++) {
        ck_assert_int_eq(scram_b64_encode(u8(plain[i]), strlen(plain[i]), out, sizeof(out)),
                         (int)strlen(enc[i]));
        ck_assert_str_eq(out, enc[i]);
        ck_assert_uint_eq(scram_b64_len(strlen(plain[i])), strlen(enc[i]));
        ck_assert_int_eq(scram_b64_decode(enc[i], strlen(enc[i]), dec, sizeof(dec), &n), 0);
        ck_assert_uint_eq(n, strlen(plain[i]));
        ck_assert_mem_eq(dec, plain[i], n);
    }
    /* Bounds: the output and its NUL must fit; the decoded bytes must fit. */
    ck_assert_int_eq(scram_b64_encode(u8("foo"), 3, out, 4), -ENOSPC);
    ck_assert_int_eq(scram_b64_encode(u8("foo"), 3, out, 5), 4);
    ck_assert_int_eq(scram_b64_decode("Zm9vYmFy", 8, dec, 5, &n), -ENOSPC);
    /* Strictness: length, alphabet, padding only at the end, unused bits zero, no blanks. */
    static const struct {
        const char *s;
        size_t n;
    } bad[] = {{"Zg=", 3},  {"Zg", 2},    {"Z===", 4}, {"Zh==", 4}, {"Zm9=", 4}, {"Zg==Zg==", 8},
               {"Zm 9", 4}, {"Zm9\n", 4}, {"Zm-_", 4}, {"=Zg=", 4}, {"Zg=a", 4}, {"Zm\0v", 4}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(scram_b64_decode(bad[i].s, bad[i].n, dec, sizeof(dec), &n) == -EINVAL,
                      "case %zu", i);
}
END_TEST

START_TEST(user_escaping)
{
    char out[64];
    size_t n;
    ck_assert_int_eq(scram_user_escape("a=b,c", 5, out, sizeof(out), &n), 0);
    ck_assert_str_eq(out, "a=3Db=2Cc");
    ck_assert_uint_eq(n, 9);
    ck_assert_int_eq(scram_user_unescape("a=3Db=2Cc", 9, out, sizeof(out), &n), 0);
    ck_assert_str_eq(out, "a=b,c");
    ck_assert_int_eq(scram_user_escape("a=b", 3, out, 4, &n), -ENOSPC);
    ck_assert_int_eq(scram_user_escape("", 0, out, sizeof(out), &n), -EINVAL);
    static const char *bad[] = {"a=", "a=3", "a=3d", "a=2c", "a=41", "a,b", "", "=", "==3D"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(scram_user_unescape(bad[i], strlen(bad[i]), out, sizeof(out), &n),
                         SCRAM_EPROTO);
    ck_assert_int_eq(scram_user_unescape("a\0b", 3, out, sizeof(out), &n), SCRAM_EPROTO);
    /* Length bound on the unescaped name. */
    char big[SCRAM_MAX_USER + 2], wide[3 * SCRAM_MAX_USER + 8];
    memset(big, 'u', sizeof(big));
    ck_assert_int_eq(scram_user_escape(big, SCRAM_MAX_USER, wide, sizeof(wide), &n), 0);
    ck_assert_int_eq(scram_user_escape(big, SCRAM_MAX_USER + 1, wide, sizeof(wide), &n), -EINVAL);
    ck_assert_int_eq(scram_user_unescape(big, SCRAM_MAX_USER + 1, wide, sizeof(wide), &n),
                     SCRAM_EPROTO);
}
END_TEST

START_TEST(saslprep_ascii_only)
{
    char out[32];
    size_t n;
    ck_assert_int_eq(scram_saslprep("pencil", 6, out, sizeof(out), &n), 0);
    ck_assert_str_eq(out, "pencil");
    ck_assert_int_eq(scram_saslprep("I X", 3, out, sizeof(out), &n), 0);
    ck_assert_int_eq(scram_saslprep("a\x07", 2, out, sizeof(out), &n), -EINVAL);
    ck_assert_int_eq(scram_saslprep("a\x7f", 2, out, sizeof(out), &n), -EINVAL);
    ck_assert_int_eq(scram_saslprep("I\xc2\xadX", 4, out, sizeof(out), &n), SCRAM_ESASLPREP);
    ck_assert_int_eq(scram_saslprep("pencil", 6, out, 6, &n), -ENOSPC);
    struct scram_verifier v;
    uint8_t salt[16] = {1};
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_256, "u", "p\xc3\xa9ncil", salt, 16, 4096, &v),
                     SCRAM_ESASLPREP);
    /* SCRAM-SHA-1 hashes the bytes and needs no SASLprep. */
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_1, "u", "p\xc3\xa9ncil", salt, 16, 4096, &v),
                     0);
    struct scram_client *c = scram_client_new(SCRAM_SHA_256, "u");
    ck_assert_int_eq(scram_client_set_password(c, "p\xc3\xa9ncil"), SCRAM_ESASLPREP);
    scram_client_free(c);
}
END_TEST

START_TEST(verifier_from_b64)
{
    struct scram_verifier v, d;
    mongo_verifier(&rfc7677, &d);
    char salt[64], stored[64], server[64];
    scram_b64_encode(d.salt, d.salt_len, salt, sizeof(salt));
    scram_b64_encode(d.stored_key, 32, stored, sizeof(stored));
    scram_b64_encode(d.server_key, 32, server, sizeof(server));
    ck_assert_int_eq(scram_verifier_from_b64(SCRAM_SHA_256, 4096, salt, strlen(salt), stored,
                                             strlen(stored), server, strlen(server), &v),
                     0);
    ck_assert(scram_verifier_equal(&v, &d));
    v.server_key[3] ^= 1;
    ck_assert(!scram_verifier_equal(&v, &d));
    /* A SHA-256 key is not a SHA-1 key; a low count, bad base64 and an empty salt are refused. */
    ck_assert_int_eq(scram_verifier_from_b64(SCRAM_SHA_1, 4096, salt, strlen(salt), stored,
                                             strlen(stored), server, strlen(server), &v),
                     -EINVAL);
    ck_assert_int_eq(scram_verifier_from_b64(SCRAM_SHA_256, 4095, salt, strlen(salt), stored,
                                             strlen(stored), server, strlen(server), &v),
                     -EINVAL);
    ck_assert_int_eq(scram_verifier_from_b64(SCRAM_SHA_256, 4096, "!!!!", 4, stored, strlen(stored),
                                             server, strlen(server), &v),
                     -EINVAL);
    ck_assert_int_eq(scram_verifier_from_b64(SCRAM_SHA_256, 4096, "", 0, stored, strlen(stored),
                                             server, strlen(server), &v),
                     -EINVAL);
    /* Derivation bounds. */
    uint8_t s16[16] = {0};
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_256, "u", "p", s16, 16, 4095, &v), -EINVAL);
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_256, "u", "p", s16, 0, 4096, &v), -EINVAL);
    ck_assert_int_eq(
        scram_verifier_derive(SCRAM_SHA_256, "u", "p", s16, SCRAM_MAX_SALT + 1, 4096, &v), -EINVAL);
}
END_TEST

/* A full login of client c against server s, with random nonces; returns the first error. */
static int login(struct scram_client *c, struct scram_server *s, const struct scram_verifier *v)
{
    uint8_t a[BUF], b[BUF];
    size_t an = 0, bn = 0;
    int rc = scram_client_first(c, a, sizeof(a), &an);
    if (rc == 0)
        rc = scram_server_start(s, a, an);
    if (rc == 0)
        rc = scram_server_first(s, v, b, sizeof(b), &bn);
    if (rc == 0)
        rc = scram_client_final(c, b, bn, a, sizeof(a), &an);
    if (rc == 0)
        rc = scram_server_final(s, a, an, b, sizeof(b), &bn);
    if (rc == 0)
        rc = scram_client_verify(c, b, bn);
    return rc;
}

static void passthrough(enum scram_mech mech)
{
    uint8_t salt[28];
    for (size_t i = 0; i < sizeof(salt); i++)
        salt[i] = (uint8_t)(i * 7 + 3);
    struct scram_verifier v;
    ck_assert_int_eq(
        scram_verifier_derive(mech, "app.user", "s3cret!", salt, sizeof(salt), 4096, &v), 0);
    /* The application logs in to mongolb with its password. */
    struct scram_client *app = scram_client_new(mech, "app.user");
    struct scram_server *lb = scram_server_new(mech);
    ck_assert_int_eq(scram_client_set_password(app, "s3cret!"), 0);
    ck_assert_int_eq(login(app, lb, &v), 0);
    uint8_t key[SCRAM_MAX_KEY], key2[SCRAM_MAX_KEY];
    size_t kl = 0, kl2 = 0;
    ck_assert_int_eq(scram_server_client_key(lb, key, &kl), 0);
    /* mongolb logs in to a backend holding the same verifier with the recovered key. */
    struct scram_client *up = scram_client_new(mech, "app.user");
    struct scram_server *backend = scram_server_new(mech);
    ck_assert_int_eq(scram_client_set_key(up, key, kl, &v), 0);
    ck_assert_int_eq(login(up, backend, &v), 0);
    ck_assert(scram_client_done(up));
    ck_assert_int_eq(scram_server_client_key(backend, key2, &kl2), 0);
    ck_assert_uint_eq(kl, kl2);
    ck_assert_mem_eq(key, key2, kl);
    /* The app's own client exports the same key and verifier for a credential cache; so does a
       client between client-final and the server's signature. */
    struct scram_verifier ev;
    ck_assert_int_eq(scram_client_export_key(app, key2, &kl2, &ev), 0);
    ck_assert_mem_eq(key, key2, kl);
    ck_assert(scram_verifier_equal(&ev, &v));
    scram_client_free(app);
    scram_client_free(up);
    scram_server_free(lb);
    scram_server_free(backend);

    /* A key that does not belong to the verifier is refused up front. */
    up = scram_client_new(mech, "app.user");
    key[0] ^= 1;
    ck_assert_int_eq(scram_client_set_key(up, key, kl, &v), -EINVAL);
    ck_assert_int_eq(scram_client_set_key(up, key, kl - 1, &v), -EINVAL);
    scram_client_free(up);
}

START_TEST(passthrough_sha256)
{
    passthrough(SCRAM_SHA_256);
}
END_TEST

START_TEST(passthrough_sha1)
{
    passthrough(SCRAM_SHA_1);
}
END_TEST

/* A password change in the cluster: new salt. The key from the old login must ask for a refresh. */
START_TEST(changed_salt_is_stale)
{
    uint8_t key[SCRAM_MAX_KEY];
    struct scram_verifier v, nv;
    raw_keys(&rfc7677, key, &v);
    uint8_t salt2[16] = {9, 9, 9};
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_256, "user", "pencil2", salt2, 16, 4096, &nv),
                     0);
    struct scram_client *c = scram_client_new(SCRAM_SHA_256, "user");
    struct scram_server *s = scram_server_new(SCRAM_SHA_256);
    ck_assert_int_eq(scram_client_set_key(c, key, 32, &v), 0);
    ck_assert_int_eq(login(c, s, &nv), SCRAM_ESTALE);
    ck_assert_int_eq(scram_error_code(SCRAM_ESTALE), 18);
    scram_client_free(c);
    scram_server_free(s);

    /* Same salt, another iteration count: also stale. */
    uint8_t out[BUF];
    size_t n;
    c = scram_client_new(SCRAM_SHA_256, "user");
    ck_assert_int_eq(scram_client_set_key(c, key, 32, &v), 0);
    ck_assert_int_eq(scram_client_set_nonce(c, rfc7677.cnonce), 0);
    ck_assert_int_eq(scram_client_first(c, out, sizeof(out), &n), 0);
    const char *sf =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4097";
    ck_assert_int_eq(scram_client_final(c, u8(sf), strlen(sf), out, sizeof(out), &n), SCRAM_ESTALE);
    scram_client_free(c);
}
END_TEST

START_TEST(wrong_password)
{
    for (int m = SCRAM_SHA_1; m <= SCRAM_SHA_256; m++) {
        uint8_t salt[16] = {1, 2, 3};
        struct scram_verifier v;
        ck_assert_int_eq(scram_verifier_derive(m, "user", "right", salt, 16, 4096, &v), 0);
        struct scram_client *c = scram_client_new(m, "user");
        struct scram_server *s = scram_server_new(m);
        ck_assert_int_eq(scram_client_set_password(c, "wrong"), 0);
        ck_assert_int_eq(login(c, s, &v), SCRAM_EAUTH);
        ck_assert_int_eq(scram_error_code(SCRAM_EAUTH), 18);
        ck_assert(!scram_server_done(s));
        uint8_t key[SCRAM_MAX_KEY];
        size_t kl;
        ck_assert_int_eq(scram_server_client_key(s, key, &kl), -EINVAL);
        scram_client_free(c);
        scram_server_free(s);
    }
}
END_TEST

/* An unknown user runs the same course as a wrong password and fails at the proof. */
START_TEST(unknown_user)
{
    struct scram_client *c = scram_client_new(SCRAM_SHA_256, "nobody");
    struct scram_server *s = scram_server_new(SCRAM_SHA_256);
    ck_assert_int_eq(scram_client_set_password(c, "x"), 0);
    ck_assert_int_eq(login(c, s, NULL), SCRAM_EAUTH);
    scram_client_free(c);
    scram_server_free(s);
}
END_TEST

START_TEST(mechanism_mismatch)
{
    struct scram_verifier v;
    mongo_verifier(&rfc7677, &v);
    struct scram_server *s = scram_server_new(SCRAM_SHA_1);
    uint8_t out[BUF];
    size_t n;
    ck_assert_int_eq(scram_server_start(s, u8(rfc7677.client_first), strlen(rfc7677.client_first)),
                     0);
    ck_assert_int_eq(scram_server_first(s, &v, out, sizeof(out), &n), -EINVAL);
    scram_server_free(s);
}
END_TEST

/* A server at the given step of the RFC 7677 exchange: 1 = started, 2 = server-first written. */
static struct scram_server *server_at(int step)
{
    static struct scram_verifier v;
    mongo_verifier(&rfc7677, &v);
    struct scram_server *s = scram_server_new(SCRAM_SHA_256);
    uint8_t out[BUF];
    size_t n;
    ck_assert_int_eq(scram_server_set_nonce(s, rfc7677.snonce), 0);
    if (step >= 1)
        ck_assert_int_eq(
            scram_server_start(s, u8(rfc7677.client_first), strlen(rfc7677.client_first)), 0);
    if (step >= 2)
        ck_assert_int_eq(scram_server_first(s, &v, out, sizeof(out), &n), 0);
    return s;
}

/* A client of the RFC 7677 exchange after step: 1 = client-first written, 2 = client-final. */
static struct scram_client *client_at(int step)
{
    struct scram_client *c = scram_client_new(SCRAM_SHA_256, "user");
    uint8_t out[BUF];
    size_t n;
    ck_assert_int_eq(scram_client_set_password(c, "pencil"), 0);
    ck_assert_int_eq(scram_client_set_nonce(c, rfc7677.cnonce), 0);
    if (step >= 1)
        ck_assert_int_eq(scram_client_first(c, out, sizeof(out), &n), 0);
    if (step >= 2)
        ck_assert_int_eq(scram_client_final(c, u8(rfc7677.server_first),
                                            strlen(rfc7677.server_first), out, sizeof(out), &n),
                         0);
    return c;
}

struct bad_msg {
    const char *msg;
    int rc;
};

START_TEST(malformed_client_first)
{
    static const struct bad_msg cases[] = {
        {"", SCRAM_EPROTO},
        {"n", SCRAM_EPROTO},
        {"n,", SCRAM_EPROTO},
        {"n,,", SCRAM_EPROTO},
        {"x,,n=user,r=abc", SCRAM_EPROTO},
        {"nn,,n=user,r=abc", SCRAM_EPROTO},
        {"p=tls-unique,,n=user,r=abc", SCRAM_ENOTSUP},
        {"n,a=admin,n=user,r=abc", SCRAM_ENOTSUP},
        {"n,x,n=user,r=abc", SCRAM_EPROTO},
        {"n,,m=ext,n=user,r=abc", SCRAM_ENOTSUP},
        {"n,,n=,r=abc", SCRAM_EPROTO},
        {"n,,n=us=er,r=abc", SCRAM_EPROTO},
        {"n,,n=user=2,r=abc", SCRAM_EPROTO},
        {"n,,n=user", SCRAM_EPROTO},
        {"n,,n=user,", SCRAM_EPROTO},
        {"n,,n=user,r=", SCRAM_EPROTO},
        {"n,,n=user,r=a b", SCRAM_EPROTO},
        {"n,,n=user,r=a\x7f", SCRAM_EPROTO},
        {"n,,n=user,r=a\xc3\xa9", SCRAM_EPROTO},
        {"n,,r=abc,n=user", SCRAM_EPROTO},
        {"n,,n=user,r=abc,", SCRAM_EPROTO},
        {"n,,n=user,r=abc,,", SCRAM_EPROTO},
        {"n,,n=user,r=abc,x", SCRAM_EPROTO},
        {"n,,n=user,r=abc,1=x", SCRAM_EPROTO},
        {"n,,N=user,r=abc", SCRAM_EPROTO},
        {"n,,n=user,R=abc", SCRAM_EPROTO},
        {"n,,n=user,r=0123456789012345678901234567890123456789012345678901234567890123456789",
         SCRAM_EPROTO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_server *s = scram_server_new(SCRAM_SHA_256);
        ck_assert_msg(scram_server_start(s, u8(cases[i].msg), strlen(cases[i].msg)) == cases[i].rc,
                      "case %zu '%s'", i, cases[i].msg);
        ck_assert_ptr_null(scram_server_user(s));
        scram_server_free(s);
    }
    /* Accepted variants: "y,," (RFC 5802 section 6), escaped names, extensions. */
    static const char *good[] = {"y,,n=user,r=abc", "n,,n=a=2Cb=3D,r=abc", "n,,n=user,r=abc,x=1",
                                 "n,,n=us\xc3\xa9r,r=abc"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct scram_server *s = scram_server_new(SCRAM_SHA_256);
        ck_assert_msg(scram_server_start(s, u8(good[i]), strlen(good[i])) == 0, "%s", good[i]);
        scram_server_free(s);
    }
    struct scram_server *s = scram_server_new(SCRAM_SHA_256);
    ck_assert_int_eq(scram_server_start(s, u8("n,,n=a=2Cb=3D,r=abc"), 19), 0);
    ck_assert_str_eq(scram_server_user(s), "a,b=");
    /* Twice is a caller's mistake. */
    ck_assert_int_eq(scram_server_start(s, u8("n,,n=user,r=abc"), 15), -EINVAL);
    scram_server_free(s);
    /* A NUL byte, and an over-long message. */
    s = scram_server_new(SCRAM_SHA_256);
    ck_assert_int_eq(scram_server_start(s, u8("n,,n=us\0er,r=abc"), 16), SCRAM_EPROTO);
    scram_server_free(s);
    char big[SCRAM_MAX_MSG + 2];
    memset(big, 'a', sizeof(big));
    memcpy(big, "n,,n=", 5);
    s = scram_server_new(SCRAM_SHA_256);
    ck_assert_int_eq(scram_server_start(s, u8(big), sizeof(big)), SCRAM_EPROTO);
    scram_server_free(s);
}
END_TEST

/* One malformed message of a case table: cases[k] (printf-formatted) and the code it must give,
 * rcs[k]; k counts them. */
#define CASE(rc_, ...)                                                                             \
    do {                                                                                           \
        snprintf(cases[k], sizeof(cases[k]), __VA_ARGS__);                                         \
        rcs[k++] = rc_;                                                                            \
    } while (0)

START_TEST(malformed_client_final)
{
    const char *n = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const char *p = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    char cases[24][256];
    int rcs[24], k = 0;
    CASE(SCRAM_EPROTO, "%s", "");
    CASE(SCRAM_EPROTO, "r=%s,p=%s", n, p);        /* no c= */
    CASE(SCRAM_EPROTO, "c=eSws,r=%s,p=%s", n, p); /* "y,," but the client sent "n,," */
    CASE(SCRAM_EPROTO, "c=cD10bHMtdW5pcXVlLCw=,r=%s,p=%s", n, p); /* channel binding data */
    CASE(SCRAM_EPROTO, "c=biw,r=%s,p=%s", n, p);                  /* bad base64 */
    CASE(SCRAM_EPROTO, "c=biws,p=%s", p);                         /* no r= */
    CASE(SCRAM_EPROTO, "c=biws,r=%sX,p=%s", n, p);                /* nonce extended */
    CASE(SCRAM_EPROTO, "c=biws,r=%.*s,p=%s", 40, n, p);           /* nonce cut */
    CASE(SCRAM_EPROTO, "c=biws,r=X%s,p=%s", n + 1, p);            /* nonce tampered */
    CASE(SCRAM_EPROTO, "c=biws,r=%s", n);                         /* no proof */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,p=", n);                      /* empty proof */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,p=%.40s", n, p);              /* short proof */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,p=%sAAAA", n, p);             /* long proof */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,p=%s,x=1", n, p);             /* proof not last */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,p=%s,", n, p);                /* trailing comma */
    CASE(SCRAM_EPROTO, "c=biws,r=%s,,p=%s", n, p);                /* empty attribute */
    CASE(SCRAM_EPROTO, "r=%s,c=biws,p=%s", n, p);                 /* order */
    CASE(SCRAM_EAUTH, "c=biws,r=%s,p=%c%s", n, p[0] == 'A' ? 'B' : 'A', p + 1); /* wrong proof */
    CASE(SCRAM_EAUTH, "c=biws,r=%s,x=1,p=%s", n, p); /* an extension changes AuthMessage */
    uint8_t out[BUF];
    size_t on;
    for (int i = 0; i < k; i++) {
        struct scram_server *s = server_at(2);
        ck_assert_msg(
            scram_server_final(s, u8(cases[i]), strlen(cases[i]), out, sizeof(out), &on) == rcs[i],
            "case %d '%s'", i, cases[i]);
        /* The conversation is over after a failure, even with the right message. */
        ck_assert_int_eq(scram_server_final(s, u8(rfc7677.client_final),
                                            strlen(rfc7677.client_final), out, sizeof(out), &on),
                         -EINVAL);
        scram_server_free(s);
    }
    /* Out of order, and an output buffer too small. */
    struct scram_server *s = server_at(1);
    ck_assert_int_eq(scram_server_final(s, u8(rfc7677.client_final), strlen(rfc7677.client_final),
                                        out, sizeof(out), &on),
                     -EINVAL);
    scram_server_free(s);
    s = server_at(2);
    ck_assert_int_eq(
        scram_server_final(s, u8(rfc7677.client_final), strlen(rfc7677.client_final), out, 10, &on),
        -ENOSPC);
    scram_server_free(s);
}
END_TEST

START_TEST(malformed_server_first)
{
    const char *n = "rOprNGfwEbeRWgbNEkqO";
    const char *salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    char cases[32][256];
    int rcs[32], k = 0;
    CASE(SCRAM_EPROTO, "%s", "");
    CASE(SCRAM_EPROTO, "r=%s,s=%s,i=4096", n, salt);            /* no server part */
    CASE(SCRAM_EPROTO, "r=X%s,s=%s,i=4096", n + 1, salt);       /* not our nonce */
    CASE(SCRAM_EPROTO, "r=%.10sXYZ,s=%s,i=4096", n, salt);      /* a prefix of ours */
    CASE(SCRAM_EPROTO, "r=%sab c,s=%s,i=4096", n, salt);        /* not printable */
    CASE(SCRAM_EPROTO, "r=%sabc,i=4096", n);                    /* no salt */
    CASE(SCRAM_EPROTO, "r=%sabc,s=,i=4096", n);                 /* empty salt */
    CASE(SCRAM_EPROTO, "r=%sabc,s=W22,i=4096", n);              /* bad base64 */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s", n, salt);                /* no count */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=", n, salt);             /* empty count */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=04096", n, salt);        /* leading zero */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=+4096", n, salt);        /* sign */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=-4096", n, salt);        /* negative */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=4096x", n, salt);        /* junk */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=4096,", n, salt);        /* trailing comma */
    CASE(SCRAM_EPROTO, "s=%s,r=%sabc,i=4096", salt, n);         /* order */
    CASE(SCRAM_EPROTO, "r=%sabc,s=%s,i=123456789012", n, salt); /* 12 digits */
    CASE(SCRAM_ENOTSUP, "m=x,r=%sabc,s=%s,i=4096", n, salt);    /* mandatory extension */
    CASE(SCRAM_EWEAK, "r=%sabc,s=%s,i=4095", n, salt);          /* below 4096 */
    CASE(SCRAM_EWEAK, "r=%sabc,s=%s,i=1", n, salt);
    CASE(SCRAM_EWEAK, "r=%sabc,s=%s,i=4294967295", n, salt); /* absurdly many */
    CASE(SCRAM_EWEAK, "r=%sabc,s=%s,i=9999999999", n, salt); /* beyond 32 bits */
    CASE(SCRAM_EPROTO, "e=other-error");
    uint8_t out[BUF];
    size_t on;
    for (int i = 0; i < k; i++) {
        struct scram_client *c = client_at(1);
        ck_assert_msg(
            scram_client_final(c, u8(cases[i]), strlen(cases[i]), out, sizeof(out), &on) == rcs[i],
            "case %d '%s'", i, cases[i]);
        scram_client_free(c);
    }
    /* An extension after the count is allowed. */
    struct scram_client *c = client_at(1);
    char ok[256];
    snprintf(ok, sizeof(ok), "r=%sabc,s=%s,i=4096,x=y", n, salt);
    ck_assert_int_eq(scram_client_final(c, u8(ok), strlen(ok), out, sizeof(out), &on), 0);
    scram_client_free(c);
    /* Nothing to export before client-final. */
    c = client_at(1);
    uint8_t key[SCRAM_MAX_KEY];
    size_t kl;
    struct scram_verifier ev;
    ck_assert_int_eq(scram_client_export_key(c, key, &kl, &ev), -EINVAL);
    scram_client_free(c);
    /* Out of order: before client-first. */
    c = client_at(0);
    ck_assert_int_eq(scram_client_final(c, u8(ok), strlen(ok), out, sizeof(out), &on), -EINVAL);
    scram_client_free(c);
    /* No credential at all. */
    c = scram_client_new(SCRAM_SHA_256, "user");
    ck_assert_int_eq(scram_client_first(c, out, sizeof(out), &on), -EINVAL);
    scram_client_free(c);
}
END_TEST

START_TEST(malformed_server_final)
{
    static const struct bad_msg cases[] = {
        {"", SCRAM_EPROTO},
        {"v=", SCRAM_EPROTO},
        {"v=!!!!", SCRAM_EPROTO},
        {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", SCRAM_EPROTO},
        {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,", SCRAM_EPROTO},
        {"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", SCRAM_EPROTO},
        {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=", SCRAM_EPROTO}, /* unused bits set */
        {"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", SCRAM_EAUTH},  /* tampered */
        {"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", SCRAM_EPROTO},                 /* SHA-1 length */
        {"e=invalid-proof", SCRAM_EAUTH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_client *c = client_at(2);
        ck_assert_msg(scram_client_verify(c, u8(cases[i].msg), strlen(cases[i].msg)) == cases[i].rc,
                      "case %zu '%s'", i, cases[i].msg);
        ck_assert(!scram_client_done(c));
        /* No key to export from a server that did not prove itself. */
        uint8_t key[SCRAM_MAX_KEY];
        size_t kl;
        struct scram_verifier v;
        ck_assert_int_eq(scram_client_export_key(c, key, &kl, &v), -EINVAL);
        scram_client_free(c);
    }
    /* An extension after the signature is allowed. */
    struct scram_client *c = client_at(2);
    const char *ok = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1";
    ck_assert_int_eq(scram_client_verify(c, u8(ok), strlen(ok)), 0);
    scram_client_free(c);
}
END_TEST

START_TEST(escaped_user_round_trip)
{
    uint8_t salt[16] = {4};
    struct scram_verifier v;
    ck_assert_int_eq(scram_verifier_derive(SCRAM_SHA_256, "a,b=c", "pw", salt, 16, 4096, &v), 0);
    struct scram_client *c = scram_client_new(SCRAM_SHA_256, "a,b=c");
    struct scram_server *s = scram_server_new(SCRAM_SHA_256);
    uint8_t out[BUF];
    size_t n;
    ck_assert_int_eq(scram_client_set_password(c, "pw"), 0);
    ck_assert_int_eq(scram_client_set_nonce(c, "abc"), 0);
    ck_assert_int_eq(scram_client_first(c, out, sizeof(out), &n), 0);
    assert_msg(out, n, "n,,n=a=2Cb=3Dc,r=abc");
    ck_assert_int_eq(scram_server_start(s, out, n), 0);
    ck_assert_str_eq(scram_server_user(s), "a,b=c");
    scram_client_free(c);
    scram_server_free(s);
}
END_TEST

START_TEST(random_nonces)
{
    /* Generated nonces are 32 base64 characters and differ between conversations. */
    uint8_t a[BUF], b[BUF];
    size_t an, bn;
    struct scram_client *c1 = scram_client_new(SCRAM_SHA_1, "u");
    struct scram_client *c2 = scram_client_new(SCRAM_SHA_1, "u");
    ck_assert_int_eq(scram_client_set_password(c1, "p"), 0);
    ck_assert_int_eq(scram_client_set_password(c2, "p"), 0);
    ck_assert_int_eq(scram_client_first(c1, a, sizeof(a), &an), 0);
    ck_assert_int_eq(scram_client_first(c2, b, sizeof(b), &bn), 0);
    ck_assert_uint_eq(an, strlen("n,,n=u,r=") + 32);
    ck_assert_uint_eq(an, bn);
    ck_assert(memcmp(a, b, an) != 0);
    scram_client_free(c1);
    scram_client_free(c2);
    /* Bad fixed nonces are refused. */
    struct scram_server *s = scram_server_new(SCRAM_SHA_1);
    ck_assert_int_eq(scram_server_set_nonce(s, ""), -EINVAL);
    ck_assert_int_eq(scram_server_set_nonce(s, "a,b"), -EINVAL);
    ck_assert_int_eq(scram_server_set_nonce(s, "a b"), -EINVAL);
    scram_server_free(s);
    /* Bad constructor arguments. */
    ck_assert_ptr_null(scram_client_new(SCRAM_SHA_1, ""));
    ck_assert_ptr_null(scram_client_new((enum scram_mech)7, "u"));
    ck_assert_ptr_null(scram_server_new((enum scram_mech)0));
    scram_client_free(NULL);
    scram_server_free(NULL);
}
END_TEST

static Suite *scram_suite(void)
{
    Suite *s = suite_create("scram");
    TCase *tc = tcase_create("examples");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rfc5802_sha1_raw_password);
    tcase_add_test(tc, mongodb_sha1_conversation);
    tcase_add_test(tc, rfc7677_sha256);
    tcase_add_test(tc, sha1_password_digest);
    suite_add_tcase(s, tc);
    tc = tcase_create("helpers");
    tcase_add_test(tc, mechanism_names);
    tcase_add_test(tc, error_codes);
    tcase_add_test(tc, base64_vectors);
    tcase_add_test(tc, user_escaping);
    tcase_add_test(tc, saslprep_ascii_only);
    tcase_add_test(tc, verifier_from_b64);
    suite_add_tcase(s, tc);
    tc = tcase_create("logins");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, passthrough_sha256);
    tcase_add_test(tc, passthrough_sha1);
    tcase_add_test(tc, changed_salt_is_stale);
    tcase_add_test(tc, wrong_password);
    tcase_add_test(tc, unknown_user);
    tcase_add_test(tc, mechanism_mismatch);
    tcase_add_test(tc, escaped_user_round_trip);
    tcase_add_test(tc, random_nonces);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, malformed_client_first);
    tcase_add_test(tc, malformed_client_final);
    tcase_add_test(tc, malformed_server_first);
    tcase_add_test(tc, malformed_server_final);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(scram_suite)
