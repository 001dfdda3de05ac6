/*
 * fuzz_scram.c: arbitrary SCRAM messages to both sides of scram.c.
 *
 * Input: one byte of control, two bytes (big-endian) of length for the first message, the first
 * message, then the second message (the rest). Control bits 0-1 choose what runs:
 *   0  server: the first message as client-first, then the second as client-final
 *   1  client with a recovered key (pass-through): the first as server-first, the second as
 *      server-final (a client with a password is not fuzzed: PBKDF2 at the server's chosen count
 *      would only measure OpenSSL)
 *   2  helpers: base64 decoding, name unescaping and SASLprep of the first message, each result
 *      encoded back and compared
 *   3  server for an unknown user: as 0, and the login must never succeed
 * Bit 2 chooses SCRAM-SHA-256 (set) or SCRAM-SHA-1. Nonces are fixed to those of the published
 * examples (RFC 7677; the authentication specification's SCRAM-SHA-1), so the seeds, which are
 * those exchanges, reach every step, and a complete login is checked for consistency: the
 * recovered ClientKey must hash to the StoredKey.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct example {
    const char *user, *password, *cnonce, *snonce, *client_first, *client_final;
    uint32_t iterations;
    const char *salt_b64;
    struct scram_verifier v;
    uint8_t key[SCRAM_MAX_KEY];
};

static struct example ex[2] = {
    {"user",
     "pencil",
     "fyko+d2lbbFgONRv9qkxdawL",
     "Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE",
     "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,"
     "p=MC2T8BvbmWRckDw8oWl5IVghwCY=",
     10000,
     "rQ9ZY3MntBeuP3E1TDVC4w==",
     {0},
     {0}},
    {"user",
     "pencil",
     "rOprNGfwEbeRWgbNEkqO",
     "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
     "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     4096,
     "W22ZaJ0SNY7soEsUEjb6gQ==",
     {0},
     {0}},
};

/* Once: each example's verifier, and its ClientKey recovered by a server from the example. */
static void setup(void)
{
    for (int i = 0; i < 2; i++) {
        struct example *x = &ex[i];
        enum scram_mech mech = i ? SCRAM_SHA_256 : SCRAM_SHA_1;
        uint8_t salt[SCRAM_MAX_SALT], out[SCRAM_MAX_MSG];
        size_t sl = 0, n = 0, kl = 0;
        FUZZ_CHECK(scram_b64_decode(x->salt_b64, strlen(x->salt_b64), salt, sizeof(salt), &sl) ==
                   0);
        FUZZ_CHECK(
            scram_verifier_derive(mech, x->user, x->password, salt, sl, x->iterations, &x->v) == 0);
        struct scram_server *s = scram_server_new(mech);
        FUZZ_CHECK(s && scram_server_set_nonce(s, x->snonce) == 0);
        FUZZ_CHECK(
            scram_server_start(s, (const uint8_t *)x->client_first, strlen(x->client_first)) == 0);
        FUZZ_CHECK(scram_server_first(s, &x->v, out, sizeof(out), &n) == 0);
        FUZZ_CHECK(scram_server_final(s, (const uint8_t *)x->client_final, strlen(x->client_final),
                                      out, sizeof(out), &n) == 0);
        FUZZ_CHECK(scram_server_client_key(s, x->key, &kl) == 0);
        scram_server_free(s);
    }
}

static void run_server(const struct example *x, enum scram_mech mech, int unknown,
                       const uint8_t *m1, size_t n1, const uint8_t *m2, size_t n2)
{
    uint8_t out[SCRAM_MAX_MSG], key[SCRAM_MAX_KEY];
    size_t n = 0, kl = 0;
    struct scram_server *s = scram_server_new(mech);
    FUZZ_CHECK(s != NULL);
    FUZZ_CHECK(scram_server_set_nonce(s, x->snonce) == 0);
    int rc = scram_server_start(s, m1, n1);
    FUZZ_CHECK(rc <= 0);
    if (rc == 0) {
        const char *user = scram_server_user(s);
        FUZZ_CHECK(user != NULL && user[0] && strlen(user) <= SCRAM_MAX_USER);
        FUZZ_CHECK(scram_server_first(s, unknown ? NULL : &x->v, out, sizeof(out), &n) == 0);
        FUZZ_CHECK(n <= sizeof(out) && n > 2 && memcmp(out, "r=", 2) == 0);
        fuzz_touch(out, n);
        rc = scram_server_final(s, m2, n2, out, sizeof(out), &n);
        FUZZ_CHECK(rc <= 0);
        FUZZ_CHECK(!unknown || rc != 0);
        if (rc == 0) {
            FUZZ_CHECK(scram_server_done(s));
            FUZZ_CHECK(n > 2 && memcmp(out, "v=", 2) == 0);
            FUZZ_CHECK(scram_server_client_key(s, key, &kl) == 0 && kl == scram_key_len(mech));
            /* The recovered key must belong to the verifier: set_key checks H(key). */
            struct scram_client *c = scram_client_new(mech, user);
            FUZZ_CHECK(c && scram_client_set_key(c, key, kl, &x->v) == 0);
            scram_client_free(c);
        } else {
            FUZZ_CHECK(!scram_server_done(s));
            FUZZ_CHECK(scram_server_client_key(s, key, &kl) == -EINVAL);
        }
    } else {
        FUZZ_CHECK(scram_server_user(s) == NULL);
    }
    scram_server_free(s);
}

static void run_client(const struct example *x, enum scram_mech mech, const uint8_t *m1, size_t n1,
                       const uint8_t *m2, size_t n2)
{
    uint8_t out[SCRAM_MAX_MSG];
    size_t n = 0;
    struct scram_client *c = scram_client_new(mech, x->user);
    FUZZ_CHECK(c != NULL);
    FUZZ_CHECK(scram_client_set_key(c, x->key, scram_key_len(mech), &x->v) == 0);
    FUZZ_CHECK(scram_client_set_nonce(c, x->cnonce) == 0);
    FUZZ_CHECK(scram_client_first(c, out, sizeof(out), &n) == 0);
    int rc = scram_client_final(c, m1, n1, out, sizeof(out), &n);
    FUZZ_CHECK(rc <= 0);
    if (rc == 0) {
        FUZZ_CHECK(n > 9 && memcmp(out, "c=biws,r=", 9) == 0);
        fuzz_touch(out, n);
        rc = scram_client_verify(c, m2, n2);
        FUZZ_CHECK(rc <= 0);
        FUZZ_CHECK(scram_client_done(c) == (rc == 0));
    }
    scram_client_free(c);
}

static void run_helpers(const uint8_t *m, size_t n)
{
    uint8_t bin[SCRAM_MAX_MSG];
    char text[4 * SCRAM_MAX_MSG];
    size_t bl = 0, tl = 0;
    /* Strict base64 has one text per value: decoding then encoding gives the input back. */
    if (scram_b64_decode((const char *)m, n, bin, sizeof(bin), &bl) == 0) {
        int e = scram_b64_encode(bin, bl, text, sizeof(text));
        FUZZ_CHECK(e >= 0 && (size_t)e == n && memcmp(text, m, n) == 0);
    }
    char user[SCRAM_MAX_USER + 1];
    size_t ul = 0;
    if (scram_user_unescape((const char *)m, n, user, sizeof(user), &ul) == 0) {
        FUZZ_CHECK(ul > 0 && ul <= SCRAM_MAX_USER && user[ul] == 0);
        FUZZ_CHECK(scram_user_escape(user, ul, text, sizeof(text), &tl) == 0);
        FUZZ_CHECK(tl == n && memcmp(text, m, n) == 0);
    }
    if (scram_saslprep((const char *)m, n, text, sizeof(text), &tl) == 0)
        FUZZ_CHECK(tl == n && memcmp(text, m, n) == 0);
    enum scram_mech mech;
    if (scram_mech_parse((const char *)m, n, &mech) == 0)
        FUZZ_CHECK(strlen(scram_mech_name(mech)) == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 3)
        return 0;
    int mode = data[0] & 3;
    enum scram_mech mech = (data[0] & 4) ? SCRAM_SHA_256 : SCRAM_SHA_1;
    const struct example *x = &ex[mech == SCRAM_SHA_256];
    size_t n1 = (size_t)data[1] << 8 | data[2];
    const uint8_t *m1 = data + 3;
    if (n1 > size - 3)
        n1 = size - 3;
    const uint8_t *m2 = m1 + n1;
    size_t n2 = size - 3 - n1;
    switch (mode) {
    case 0:
    case 3:
        run_server(x, mech, mode == 3, m1, n1, m2, n2);
        break;
    case 1:
        run_client(x, mech, m1, n1, m2, n2);
        break;
    default:
        run_helpers(m1, n1);
        break;
    }
    return 0;
}
