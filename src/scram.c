/*
 * scram.c: SCRAM-SHA-1 and SCRAM-SHA-256 as MongoDB speaks them, both sides, without I/O (see
 * scram.h for the rules and the call order).
 *
 * Messages are parsed left to right with one bounded cursor (struct attr_reader); nothing
 * recurses and nothing is copied beyond SCRAM_MAX_MSG. Secrets are kept in the two opaque
 * conversation objects and wiped when those are freed or fail.
 */
#include "scram.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define NONCE_PART_MAX 64 /* characters of the client's part, and of the server's part */

/* --- errors ----------------------------------------------------------------------------------- */

int scram_error_code(int rc)
{
    if (rc == SCRAM_EPROTO || rc == SCRAM_ENOTSUP)
        return SCRAM_MONGO_PROTOCOL_ERROR;
    return SCRAM_MONGO_AUTHENTICATION_FAILED;
}

const char *scram_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case SCRAM_EPROTO:
        return "malformed SCRAM message";
    case SCRAM_EAUTH:
        return "authentication failed";
    case SCRAM_ENOTSUP:
        return "SCRAM feature not supported (channel binding, authorization identity or a "
               "mandatory extension)";
    case SCRAM_EWEAK:
        return "SCRAM iteration count out of range (fewer than 4096 or absurdly many)";
    case SCRAM_ESTALE:
        return "the server's salt or iteration count differ from the stored verifier: "
               "credentials changed, refresh the verifier";
    case SCRAM_ESASLPREP:
        return "password is not printable ASCII: SASLprep of other characters is not supported";
    case -ENOMEM:
        return "out of memory";
    case -ENOSPC:
        return "output buffer too small";
    case -EIO:
        return "no random bytes available";
    case -EINVAL:
        return "invalid argument or call out of order";
    default:
        return "SCRAM error";
    }
}

/* --- mechanisms and primitives ---------------------------------------------------------------- */

const char *scram_mech_name(enum scram_mech mech)
{
    switch (mech) {
    case SCRAM_SHA_1:
        return "SCRAM-SHA-1";
    case SCRAM_SHA_256:
        return "SCRAM-SHA-256";
    }
    return "?";
}

int scram_mech_parse(const char *name, size_t len, enum scram_mech *out)
{
    if (!name || !out)
        return -EINVAL;
    if (len == 11 && memcmp(name, "SCRAM-SHA-1", 11) == 0) {
        *out = SCRAM_SHA_1;
        return 0;
    }
    if (len == 13 && memcmp(name, "SCRAM-SHA-256", 13) == 0) {
        *out = SCRAM_SHA_256;
        return 0;
    }
    return -EINVAL;
}

size_t scram_key_len(enum scram_mech mech)
{
    switch (mech) {
    case SCRAM_SHA_1:
        return 20;
    case SCRAM_SHA_256:
        return 32;
    }
    return 0;
}

static const EVP_MD *md_of(enum scram_mech mech)
{
    return mech == SCRAM_SHA_1 ? EVP_sha1() : EVP_sha256();
}

static int hmac(enum scram_mech mech, const uint8_t *key, size_t klen, const void *data,
                size_t dlen, uint8_t *out)
{
    unsigned int n = 0;
    if (!HMAC(md_of(mech), key, (int)klen, data, dlen, out, &n) || n != scram_key_len(mech))
        return -ENOMEM;
    return 0;
}

static int digest(enum scram_mech mech, const void *data, size_t len, uint8_t *out)
{
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, md_of(mech), NULL) || n != scram_key_len(mech))
        return -ENOMEM;
    return 0;
}

/* ClientKey, StoredKey and ServerKey from the prepared password (digest or SASLprep result). */
static int derive_keys(enum scram_mech mech, const char *pw, size_t pw_len, const uint8_t *salt,
                       size_t salt_len, uint32_t iterations, uint8_t *client_key,
                       uint8_t *stored_key, uint8_t *server_key)
{
    size_t kl = scram_key_len(mech);
    uint8_t salted[SCRAM_MAX_KEY];
    int rc = 0;
    if (PKCS5_PBKDF2_HMAC(pw, (int)pw_len, salt, (int)salt_len, (int)iterations, md_of(mech),
                          (int)kl, salted) != 1)
        rc = -ENOMEM;
    if (rc == 0)
        rc = hmac(mech, salted, kl, "Client Key", 10, client_key);
    if (rc == 0)
        rc = hmac(mech, salted, kl, "Server Key", 10, server_key);
    if (rc == 0)
        rc = digest(mech, client_key, kl, stored_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    return rc;
}

static int fill_random(uint8_t *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO;
}

/* --- base64 ----------------------------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t scram_b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    if (n > SIZE_MAX / 2 || cap < scram_b64_len(n) + 1)
        return -ENOSPC;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    out[o] = 0;
    return (int)o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    if (!in || !out_len || n % 4 != 0)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) /* a character after padding */
                return -EINVAL;
            v[k] = b64_value(c);
            if (v[k] < 0)
                return -EINVAL;
        }
        /* Strict: the bits padding leaves unused must be zero, so each text has one decoding. */
        if (pad == 2 && (v[1] & 15) != 0)
            return -EINVAL;
        if (pad == 1 && (v[2] & 3) != 0)
            return -EINVAL;
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t nbytes = 3 - (size_t)pad;
        if (o + nbytes > cap)
            return -ENOSPC;
        out[o++] = (uint8_t)(w >> 16);
        if (nbytes > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (nbytes > 2)
            out[o++] = (uint8_t)w;
    }
    *out_len = o;
    return 0;
}

/* --- names and passwords ---------------------------------------------------------------------- */

int scram_user_escape(const char *user, size_t n, char *out, size_t cap, size_t *out_len)
{
    if (!user || !out || !out_len || n == 0 || n > SCRAM_MAX_USER || memchr(user, 0, n))
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        if (user[i] == '=')
            rep = "=3D";
        else if (user[i] == ',')
            rep = "=2C";
        size_t need = rep ? 3 : 1;
        if (o + need + 1 > cap)
            return -ENOSPC;
        if (rep) {
            memcpy(out + o, rep, 3);
        } else {
            out[o] = user[i];
        }
        o += need;
    }
    out[o] = 0;
    *out_len = o;
    return 0;
}

int scram_user_unescape(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    if (!in || !out || !out_len)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == 0 || c == ',')
            return SCRAM_EPROTO;
        if (c == '=') {
            if (n - i < 3)
                return SCRAM_EPROTO;
            if (in[i + 1] == '3' && in[i + 2] == 'D')
                c = '=';
            else if (in[i + 1] == '2' && in[i + 2] == 'C')
                c = ',';
            else
                return SCRAM_EPROTO;
            i += 2;
        }
        if (o >= SCRAM_MAX_USER)
            return SCRAM_EPROTO;
        if (o + 2 > cap)
            return -ENOSPC;
        out[o++] = c;
    }
    if (o == 0)
        return SCRAM_EPROTO;
    out[o] = 0;
    *out_len = o;
    return 0;
}

int scram_sha1_password_digest(const char *user, const char *password, char out[33])
{
    if (!user || !password || !out)
        return -EINVAL;
    size_t ul = strlen(user), pl = strlen(password);
    if (ul == 0 || ul > SCRAM_MAX_USER || pl > SCRAM_MAX_PASSWORD)
        return -EINVAL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    uint8_t md[16];
    unsigned int mdl = 0;
    int ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, user, ul) == 1 &&
             EVP_DigestUpdate(ctx, ":mongo:", 7) == 1 && EVP_DigestUpdate(ctx, password, pl) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdl) == 1 && mdl == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(md, sizeof(md));
        return -ENOMEM;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = 0;
    OPENSSL_cleanse(md, sizeof(md));
    return 0;
}

int scram_saslprep(const char *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    if (!in || !out || !out_len)
        return -EINVAL;
    if (n + 1 > cap)
        return -ENOSPC;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x80)
            return SCRAM_ESASLPREP;
        /* RFC 4013 section 2.3 prohibits ASCII control characters (RFC 3454 table C.2.1). */
        if (c < 0x20 || c == 0x7f)
            return -EINVAL;
    }
    memcpy(out, in, n);
    out[n] = 0;
    *out_len = n;
    return 0;
}

/*
 * The password as the key derivation takes it: MongoDB's digest for SCRAM-SHA-1, SASLprep for
 * SCRAM-SHA-256. buf has SCRAM_MAX_PASSWORD + 1 bytes; the caller wipes it.
 */
static int prepare_password(enum scram_mech mech, const char *user, const char *password, char *buf,
                            size_t *len)
{
    if (!password || strlen(password) > SCRAM_MAX_PASSWORD)
        return -EINVAL;
    if (mech == SCRAM_SHA_1) {
        int rc = scram_sha1_password_digest(user, password, buf);
        if (rc == 0)
            *len = 32;
        return rc;
    }
    return scram_saslprep(password, strlen(password), buf, SCRAM_MAX_PASSWORD + 1, len);
}

/* --- verifiers -------------------------------------------------------------------------------- */

static int mech_ok(enum scram_mech mech)
{
    return mech == SCRAM_SHA_1 || mech == SCRAM_SHA_256;
}

static int iterations_ok(uint32_t i)
{
    return i >= SCRAM_MIN_ITERATIONS && i <= SCRAM_MAX_ITERATIONS;
}

/* A verifier a conversation of mechanism mech may use: its mechanism, a salt, a sane count. */
static int verifier_fits(const struct scram_verifier *v, enum scram_mech mech)
{
    return v->mech == mech && v->salt_len > 0 && v->salt_len <= SCRAM_MAX_SALT &&
           iterations_ok(v->iterations);
}

int scram_verifier_derive(enum scram_mech mech, const char *user, const char *password,
                          const uint8_t *salt, size_t salt_len, uint32_t iterations,
                          struct scram_verifier *out)
{
    if (!mech_ok(mech) || !out || !salt || salt_len == 0 || salt_len > SCRAM_MAX_SALT ||
        !iterations_ok(iterations) || (mech == SCRAM_SHA_1 && !user))
        return -EINVAL;
    char pw[SCRAM_MAX_PASSWORD + 1];
    size_t pw_len = 0;
    uint8_t client_key[SCRAM_MAX_KEY];
    memset(out, 0, sizeof(*out));
    int rc = prepare_password(mech, user, password, pw, &pw_len);
    if (rc == 0)
        rc = derive_keys(mech, pw, pw_len, salt, salt_len, iterations, client_key, out->stored_key,
                         out->server_key);
    OPENSSL_cleanse(pw, sizeof(pw));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (rc < 0) {
        scram_verifier_wipe(out);
        return rc;
    }
    out->mech = mech;
    out->iterations = iterations;
    out->salt_len = salt_len;
    memcpy(out->salt, salt, salt_len);
    return 0;
}

int scram_verifier_from_b64(enum scram_mech mech, uint32_t iterations, const char *salt_b64,
                            size_t salt_b64_len, const char *stored_b64, size_t stored_b64_len,
                            const char *server_b64, size_t server_b64_len,
                            struct scram_verifier *out)
{
    if (!mech_ok(mech) || !out || !salt_b64 || !stored_b64 || !server_b64 ||
        !iterations_ok(iterations))
        return -EINVAL;
    size_t kl = scram_key_len(mech), n = 0;
    memset(out, 0, sizeof(*out));
    out->mech = mech;
    out->iterations = iterations;
    if (scram_b64_decode(salt_b64, salt_b64_len, out->salt, sizeof(out->salt), &n) < 0 || n == 0)
        goto bad;
    out->salt_len = n;
    if (scram_b64_decode(stored_b64, stored_b64_len, out->stored_key, kl, &n) < 0 || n != kl)
        goto bad;
    if (scram_b64_decode(server_b64, server_b64_len, out->server_key, kl, &n) < 0 || n != kl)
        goto bad;
    return 0;
bad:
    scram_verifier_wipe(out);
    return -EINVAL;
}

int scram_verifier_equal(const struct scram_verifier *a, const struct scram_verifier *b)
{
    if (!a || !b || a->mech != b->mech || a->iterations != b->iterations ||
        a->salt_len != b->salt_len || !mech_ok(a->mech) || a->salt_len > SCRAM_MAX_SALT)
        return 0;
    size_t kl = scram_key_len(a->mech);
    int diff = CRYPTO_memcmp(a->salt, b->salt, a->salt_len) |
               CRYPTO_memcmp(a->stored_key, b->stored_key, kl) |
               CRYPTO_memcmp(a->server_key, b->server_key, kl);
    return diff == 0;
}

void scram_verifier_wipe(struct scram_verifier *v)
{
    if (v)
        OPENSSL_cleanse(v, sizeof(*v));
}

/* --- message parsing -------------------------------------------------------------------------- */

/* A cursor over "a=value,a=value,...": each call yields one attribute and its value. */
struct attr_reader {
    const char *p;
    size_t len, pos;
};

/*
 * The next attribute: a letter, '=', then a value up to the next ',' or the end (possibly
 * empty). Returns 1 with *attr, *val, *vlen set; 0 at the end; SCRAM_EPROTO when malformed.
 * NUL bytes are never part of a SCRAM message.
 */
static int attr_next(struct attr_reader *r, char *attr, const char **val, size_t *vlen)
{
    if (r->pos >= r->len)
        return 0;
    if (r->pos > 0) { /* after the first attribute, each one follows a ',' */
        if (r->p[r->pos] != ',')
            return SCRAM_EPROTO;
        r->pos++;
    }
    if (r->len - r->pos < 2)
        return SCRAM_EPROTO;
    char a = r->p[r->pos];
    if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || r->p[r->pos + 1] != '=')
        return SCRAM_EPROTO;
    size_t start = r->pos + 2, end = start;
    while (end < r->len && r->p[end] != ',') {
        if (r->p[end] == 0)
            return SCRAM_EPROTO;
        end++;
    }
    *attr = a;
    *val = r->p + start;
    *vlen = end - start;
    r->pos = end;
    return 1;
}

/*
 * The optional extensions that end a message: they only need to be well formed, and there may be
 * at most 64 of them. Returns 0 when the message ends there, SCRAM_EPROTO otherwise.
 */
static int attr_skip_rest(struct attr_reader *r)
{
    char a;
    const char *v;
    size_t vl;
    for (int i = 0; i < 64; i++) {
        int k = attr_next(r, &a, &v, &vl);
        if (k == 0)
            break;
        if (k < 0)
            return SCRAM_EPROTO;
    }
    return r->pos == r->len ? 0 : SCRAM_EPROTO;
}

/* RFC 5802's printable: %x21-2B / %x2D-7E. */
static int printable_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return 0;
    }
    return 1;
}

/* A decimal iteration count: digits only, no sign or leading zero, at most 10 digits. */
static int parse_count(const char *s, size_t n, uint32_t *out)
{
    if (n == 0 || n > 10 || (s[0] == '0'))
        return SCRAM_EPROTO;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return SCRAM_EPROTO;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return SCRAM_EWEAK;
    *out = (uint32_t)v;
    return 0;
}

/* Generated nonces: base64 of SCRAM_NONCE_RANDOM random bytes (32 characters, no ','). */
static int make_nonce(char *out, size_t cap, size_t *len)
{
    uint8_t raw[SCRAM_NONCE_RANDOM];
    int rc = fill_random(raw, sizeof(raw));
    if (rc == 0) {
        rc = scram_b64_encode(raw, sizeof(raw), out, cap);
        if (rc >= 0) {
            *len = (size_t)rc;
            rc = 0;
        }
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

static int set_fixed_nonce(char *dst, size_t *dst_len, const char *nonce)
{
    if (!nonce)
        return -EINVAL;
    size_t n = strlen(nonce);
    if (n == 0 || n > NONCE_PART_MAX || !printable_ok(nonce, n))
        return -EINVAL;
    memcpy(dst, nonce, n + 1);
    *dst_len = n;
    return 0;
}

/* Appends n bytes to buf[0..*len) of capacity cap; -ENOSPC when they do not fit. */
static int put(char *buf, size_t cap, size_t *len, const void *p, size_t n)
{
    if (n > cap || *len > cap - n)
        return -ENOSPC;
    memcpy(buf + *len, p, n);
    *len += n;
    return 0;
}

static int put_str(char *buf, size_t cap, size_t *len, const char *s)
{
    return put(buf, cap, len, s, strlen(s));
}

static int put_b64(char *buf, size_t cap, size_t *len, const uint8_t *p, size_t n)
{
    char tmp[SCRAM_MAX_MSG];
    int rc = scram_b64_encode(p, n, tmp, sizeof(tmp));
    if (rc < 0)
        return rc;
    return put(buf, cap, len, tmp, (size_t)rc);
}

static int put_u32(char *buf, size_t cap, size_t *len, uint32_t v)
{
    char tmp[16];
    int n = snprintf(tmp, sizeof(tmp), "%u", v);
    return put(buf, cap, len, tmp, (size_t)n);
}

/* Copies a built message to the caller's buffer. */
static int emit(const char *msg, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    if (!out || !out_len)
        return -EINVAL;
    if (n > cap)
        return -ENOSPC;
    memcpy(out, msg, n);
    *out_len = n;
    return 0;
}

/*
 * Ends both final messages the same way: appends the attribute prefix (",p=" for the
 * client's proof, "v=" for the server's signature) and the base64 of the key-sized value,
 * then copies the message to the caller's buffer.
 */
static int emit_b64_attr(char *buf, size_t buf_cap, size_t *len, const char *prefix,
                         const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    int rc = put_str(buf, buf_cap, len, prefix);
    if (rc == 0)
        rc = put_b64(buf, buf_cap, len, p, n);
    if (rc == 0)
        rc = emit(buf, *len, out, cap, out_len);
    return rc;
}

/*
 * AuthMessage = client-first-message-bare + "," + server-first-message + "," +
 * client-final-message-without-proof, then ClientSignature or ServerSignature over it.
 */
static int auth_hmac(enum scram_mech mech, const uint8_t *key, const char *cfb, size_t cfb_len,
                     const char *sf, size_t sf_len, const char *cf, size_t cf_len, uint8_t *out)
{
    char am[3 * SCRAM_MAX_MSG + 2];
    size_t n = 0;
    int rc = put(am, sizeof(am), &n, cfb, cfb_len);
    if (rc == 0)
        rc = put(am, sizeof(am), &n, ",", 1);
    if (rc == 0)
        rc = put(am, sizeof(am), &n, sf, sf_len);
    if (rc == 0)
        rc = put(am, sizeof(am), &n, ",", 1);
    if (rc == 0)
        rc = put(am, sizeof(am), &n, cf, cf_len);
    if (rc == 0)
        rc = hmac(mech, key, scram_key_len(mech), am, n, out);
    return rc;
}

/* Hands a conversation's ClientKey to the caller (a buffer of SCRAM_MAX_KEY bytes). */
static void copy_key(enum scram_mech mech, const uint8_t *client_key, uint8_t *key, size_t *key_len)
{
    size_t kl = scram_key_len(mech);
    memcpy(key, client_key, kl);
    *key_len = kl;
}

/* Frees a conversation object after wiping every secret it holds. */
static void free_wiped(void *conv, size_t size)
{
    if (!conv)
        return;
    OPENSSL_cleanse(conv, size);
    free(conv);
}

/* --- server side ------------------------------------------------------------------------------ */

enum conv_state {
    CONV_NEW,     /* nothing received (server) or sent (client) yet */
    CONV_STARTED, /* client-first parsed (server) or written (client) */
    CONV_FIRST,   /* server-first written (server) or client-final written (client) */
    CONV_DONE,    /* proven */
    CONV_FAILED,  /* over; every further call returns an error */
};

struct scram_server {
    enum scram_mech mech;
    enum conv_state state;
    int unknown_user; /* server-first was made up: the proof will fail */
    char user[SCRAM_MAX_USER + 1];
    char gs2[4]; /* "n,," or "y,," */
    char cfb[SCRAM_MAX_MSG];
    size_t cfb_len;
    char sf[SCRAM_MAX_MSG];
    size_t sf_len;
    char nonce[SCRAM_MAX_NONCE + 1]; /* client part, then ours */
    size_t cnonce_len, nonce_len;
    char fixed[NONCE_PART_MAX + 1];
    size_t fixed_len;
    struct scram_verifier v;
    uint8_t client_key[SCRAM_MAX_KEY];
};

struct scram_server *scram_server_new(enum scram_mech mech)
{
    if (!mech_ok(mech))
        return NULL;
    struct scram_server *s = calloc(1, sizeof(*s));
    if (s)
        s->mech = mech;
    return s;
}

int scram_server_set_nonce(struct scram_server *s, const char *suffix)
{
    if (!s || s->state > CONV_STARTED)
        return -EINVAL;
    return set_fixed_nonce(s->fixed, &s->fixed_len, suffix);
}

static void server_fail(struct scram_server *s)
{
    OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
    scram_verifier_wipe(&s->v);
    s->state = CONV_FAILED;
}

int scram_server_start(struct scram_server *s, const uint8_t *msg, size_t len)
{
    if (!s || !msg || s->state != CONV_NEW)
        return -EINVAL;
    const char *m = (const char *)msg;
    int rc = SCRAM_EPROTO;
    if (len > SCRAM_MAX_MSG || len < 3)
        goto fail;
    /* gs2-header = gs2-cbind-flag "," [ authzid ] "," */
    if (m[0] == 'p') {
        rc = SCRAM_ENOTSUP; /* channel binding: MongoDB has none */
        goto fail;
    }
    if ((m[0] != 'n' && m[0] != 'y') || m[1] != ',')
        goto fail;
    if (m[2] != ',') {
        rc = m[2] == 'a' ? SCRAM_ENOTSUP : SCRAM_EPROTO; /* an authorization identity */
        goto fail;
    }
    memcpy(s->gs2, m, 3);
    s->gs2[3] = 0;

    const char *bare = m + 3;
    size_t bare_len = len - 3;
    struct attr_reader r = {bare, bare_len, 0};
    char a;
    const char *v;
    size_t vl;
    int k = attr_next(&r, &a, &v, &vl);
    if (k == 1 && a == 'm') {
        rc = SCRAM_ENOTSUP; /* a mandatory extension we cannot know */
        goto fail;
    }
    if (k != 1 || a != 'n')
        goto fail;
    size_t ul = 0;
    rc = scram_user_unescape(v, vl, s->user, sizeof(s->user), &ul);
    if (rc < 0) {
        rc = SCRAM_EPROTO;
        goto fail;
    }
    rc = SCRAM_EPROTO;
    if (attr_next(&r, &a, &v, &vl) != 1 || a != 'r' || vl == 0 || vl > NONCE_PART_MAX ||
        !printable_ok(v, vl))
        goto fail;
    memcpy(s->nonce, v, vl);
    s->cnonce_len = vl;
    if (attr_skip_rest(&r) < 0)
        goto fail;
    memcpy(s->cfb, bare, bare_len);
    s->cfb_len = bare_len;
    s->state = CONV_STARTED;
    return 0;
fail:
    server_fail(s);
    return rc;
}

const char *scram_server_user(const struct scram_server *s)
{
    if (!s || s->state == CONV_NEW || s->state == CONV_FAILED)
        return NULL;
    return s->user;
}

int scram_server_first(struct scram_server *s, const struct scram_verifier *v, uint8_t *out,
                       size_t cap, size_t *out_len)
{
    if (!s || s->state != CONV_STARTED || !out || !out_len)
        return -EINVAL;
    int rc;
    if (v) {
        if (!verifier_fits(v, s->mech))
            return -EINVAL;
        s->v = *v;
    } else {
        /*
         * An unknown user gets a plausible made-up salt and count, so the conversation runs its
         * course and fails at the proof like a wrong password would: names cannot be probed.
         */
        s->unknown_user = 1;
        s->v.mech = s->mech;
        s->v.iterations = s->mech == SCRAM_SHA_1 ? 10000 : 15000;
        s->v.salt_len = s->mech == SCRAM_SHA_1 ? 16 : 28;
        rc = fill_random(s->v.salt, s->v.salt_len);
        if (rc == 0)
            rc = fill_random(s->v.stored_key, scram_key_len(s->mech));
        if (rc == 0)
            rc = fill_random(s->v.server_key, scram_key_len(s->mech));
        if (rc < 0)
            goto fail;
    }
    size_t n = s->cnonce_len;
    if (s->fixed_len) {
        memcpy(s->nonce + n, s->fixed, s->fixed_len);
        n += s->fixed_len;
    } else {
        size_t gl = 0;
        rc = make_nonce(s->nonce + n, sizeof(s->nonce) - n, &gl);
        if (rc < 0)
            goto fail;
        n += gl;
    }
    s->nonce[n] = 0;
    s->nonce_len = n;

    s->sf_len = 0;
    rc = put_str(s->sf, sizeof(s->sf), &s->sf_len, "r=");
    if (rc == 0)
        rc = put(s->sf, sizeof(s->sf), &s->sf_len, s->nonce, s->nonce_len);
    if (rc == 0)
        rc = put_str(s->sf, sizeof(s->sf), &s->sf_len, ",s=");
    if (rc == 0)
        rc = put_b64(s->sf, sizeof(s->sf), &s->sf_len, s->v.salt, s->v.salt_len);
    if (rc == 0)
        rc = put_str(s->sf, sizeof(s->sf), &s->sf_len, ",i=");
    if (rc == 0)
        rc = put_u32(s->sf, sizeof(s->sf), &s->sf_len, s->v.iterations);
    if (rc == 0)
        rc = emit(s->sf, s->sf_len, out, cap, out_len);
    if (rc < 0)
        goto fail;
    s->state = CONV_FIRST;
    return 0;
fail:
    server_fail(s);
    return rc;
}

int scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len)
{
    if (!s || !msg || s->state != CONV_FIRST || !out || !out_len)
        return -EINVAL;
    const char *m = (const char *)msg;
    size_t kl = scram_key_len(s->mech);
    uint8_t proof[SCRAM_MAX_KEY], sig[SCRAM_MAX_KEY], check[SCRAM_MAX_KEY];
    char reply[SCRAM_MAX_MSG];
    size_t reply_len = 0;
    int rc = SCRAM_EPROTO;
    if (len > SCRAM_MAX_MSG)
        goto fail;

    struct attr_reader r = {m, len, 0};
    char a;
    const char *v;
    size_t vl;
    /* c= the base64 of the gs2 header the client-first began with. */
    if (attr_next(&r, &a, &v, &vl) != 1 || a != 'c')
        goto fail;
    uint8_t cb[SCRAM_MAX_MSG];
    size_t cbl = 0;
    if (scram_b64_decode(v, vl, cb, sizeof(cb), &cbl) < 0 || cbl != 3 || memcmp(cb, s->gs2, 3))
        goto fail;
    /* r= the combined nonce, exactly. */
    if (attr_next(&r, &a, &v, &vl) != 1 || a != 'r' || vl != s->nonce_len ||
        memcmp(v, s->nonce, vl) != 0)
        goto fail;
    /* Extensions, then p= the proof, last. */
    size_t without_proof = 0;
    int have_proof = 0;
    for (int i = 0; i < 64; i++) {
        size_t before = r.pos;
        int k = attr_next(&r, &a, &v, &vl);
        if (k < 0)
            goto fail;
        if (k == 0)
            break;
        if (a == 'p') {
            without_proof = before;
            have_proof = 1;
            break;
        }
    }
    if (!have_proof || r.pos != r.len)
        goto fail;
    size_t pl = 0;
    if (scram_b64_decode(v, vl, proof, sizeof(proof), &pl) < 0 || pl != kl)
        goto fail;

    /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); then H(ClientKey) == StoredKey. */
    rc = auth_hmac(s->mech, s->v.stored_key, s->cfb, s->cfb_len, s->sf, s->sf_len, m, without_proof,
                   sig);
    if (rc < 0)
        goto fail;
    for (size_t i = 0; i < kl; i++)
        s->client_key[i] = proof[i] ^ sig[i];
    rc = digest(s->mech, s->client_key, kl, check);
    if (rc < 0)
        goto fail;
    if (CRYPTO_memcmp(check, s->v.stored_key, kl) != 0 || s->unknown_user) {
        rc = SCRAM_EAUTH;
        goto fail;
    }
    /* server-final-message = "v=" base64(HMAC(ServerKey, AuthMessage)) */
    rc = auth_hmac(s->mech, s->v.server_key, s->cfb, s->cfb_len, s->sf, s->sf_len, m, without_proof,
                   sig);
    if (rc == 0)
        rc = emit_b64_attr(reply, sizeof(reply), &reply_len, "v=", sig, kl, out, cap, out_len);
    if (rc < 0)
        goto fail;
    s->state = CONV_DONE;
    rc = 0;
    goto out;
fail:
    server_fail(s);
out:
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(check, sizeof(check));
    return rc;
}

int scram_server_done(const struct scram_server *s)
{
    return s && s->state == CONV_DONE;
}

int scram_server_client_key(const struct scram_server *s, uint8_t *key, size_t *key_len)
{
    if (!s || s->state != CONV_DONE || !key || !key_len)
        return -EINVAL;
    copy_key(s->mech, s->client_key, key, key_len);
    return 0;
}

void scram_server_free(struct scram_server *s)
{
    free_wiped(s, sizeof(*s));
}

/* --- client side ------------------------------------------------------------------------------ */

struct scram_client {
    enum scram_mech mech;
    enum conv_state state;
    int have_password, have_key;
    char user[SCRAM_MAX_USER + 1];
    char pw[SCRAM_MAX_PASSWORD + 1]; /* prepared: MongoDB's digest or SASLprep(password) */
    size_t pw_len;
    uint8_t client_key[SCRAM_MAX_KEY];
    struct scram_verifier v; /* pass-through: given; password: derived in scram_client_final */
    char cnonce[NONCE_PART_MAX + 1];
    size_t cnonce_len;
    char cfb[SCRAM_MAX_MSG];
    size_t cfb_len;
    uint8_t server_sig[SCRAM_MAX_KEY];
};

struct scram_client *scram_client_new(enum scram_mech mech, const char *user)
{
    if (!mech_ok(mech) || !user)
        return NULL;
    size_t ul = strlen(user);
    if (ul == 0 || ul > SCRAM_MAX_USER)
        return NULL;
    struct scram_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->mech = mech;
    memcpy(c->user, user, ul + 1);
    return c;
}

int scram_client_set_password(struct scram_client *c, const char *password)
{
    if (!c || c->state != CONV_NEW || c->have_key)
        return -EINVAL;
    OPENSSL_cleanse(c->pw, sizeof(c->pw));
    int rc = prepare_password(c->mech, c->user, password, c->pw, &c->pw_len);
    if (rc < 0) {
        OPENSSL_cleanse(c->pw, sizeof(c->pw));
        c->pw_len = 0;
        return rc;
    }
    c->have_password = 1;
    return 0;
}

int scram_client_set_key(struct scram_client *c, const uint8_t *key, size_t key_len,
                         const struct scram_verifier *v)
{
    if (!c || c->state != CONV_NEW || c->have_password || !key || !v ||
        key_len != scram_key_len(c->mech) || !verifier_fits(v, c->mech))
        return -EINVAL;
    uint8_t stored[SCRAM_MAX_KEY];
    int rc = digest(c->mech, key, key_len, stored);
    if (rc == 0 && CRYPTO_memcmp(stored, v->stored_key, key_len) != 0)
        rc = -EINVAL;
    OPENSSL_cleanse(stored, sizeof(stored));
    if (rc < 0)
        return rc;
    memcpy(c->client_key, key, key_len);
    c->v = *v;
    c->have_key = 1;
    return 0;
}

int scram_client_set_nonce(struct scram_client *c, const char *nonce)
{
    if (!c || c->state != CONV_NEW)
        return -EINVAL;
    return set_fixed_nonce(c->cnonce, &c->cnonce_len, nonce);
}

static void client_fail(struct scram_client *c)
{
    OPENSSL_cleanse(c->pw, sizeof(c->pw));
    OPENSSL_cleanse(c->client_key, sizeof(c->client_key));
    OPENSSL_cleanse(c->server_sig, sizeof(c->server_sig));
    scram_verifier_wipe(&c->v);
    c->have_password = c->have_key = 0;
    c->state = CONV_FAILED;
}

int scram_client_first(struct scram_client *c, uint8_t *out, size_t cap, size_t *out_len)
{
    if (!c || c->state != CONV_NEW || (!c->have_password && !c->have_key) || !out || !out_len)
        return -EINVAL;
    int rc = 0;
    if (c->cnonce_len == 0)
        rc = make_nonce(c->cnonce, sizeof(c->cnonce), &c->cnonce_len);
    char esc[3 * SCRAM_MAX_USER + 1];
    size_t el = 0;
    if (rc == 0)
        rc = scram_user_escape(c->user, strlen(c->user), esc, sizeof(esc), &el);
    c->cfb_len = 0;
    if (rc == 0)
        rc = put_str(c->cfb, sizeof(c->cfb), &c->cfb_len, "n=");
    if (rc == 0)
        rc = put(c->cfb, sizeof(c->cfb), &c->cfb_len, esc, el);
    if (rc == 0)
        rc = put_str(c->cfb, sizeof(c->cfb), &c->cfb_len, ",r=");
    if (rc == 0)
        rc = put(c->cfb, sizeof(c->cfb), &c->cfb_len, c->cnonce, c->cnonce_len);
    char msg[SCRAM_MAX_MSG];
    size_t n = 0;
    if (rc == 0)
        rc = put_str(msg, sizeof(msg), &n, "n,,");
    if (rc == 0)
        rc = put(msg, sizeof(msg), &n, c->cfb, c->cfb_len);
    if (rc == 0)
        rc = emit(msg, n, out, cap, out_len);
    if (rc < 0) {
        client_fail(c);
        return rc;
    }
    c->state = CONV_STARTED;
    return 0;
}

int scram_client_final(struct scram_client *c, const uint8_t *msg, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len)
{
    if (!c || !msg || c->state != CONV_STARTED || !out || !out_len)
        return -EINVAL;
    const char *m = (const char *)msg;
    size_t kl = scram_key_len(c->mech);
    uint8_t salt[SCRAM_MAX_SALT], sig[SCRAM_MAX_KEY], proof[SCRAM_MAX_KEY];
    uint8_t stored[SCRAM_MAX_KEY], server_key[SCRAM_MAX_KEY];
    char reply[SCRAM_MAX_MSG];
    size_t reply_len = 0, salt_len = 0;
    uint32_t iterations = 0;
    int rc = SCRAM_EPROTO;
    if (len > SCRAM_MAX_MSG)
        goto fail;

    struct attr_reader r = {m, len, 0};
    char a;
    const char *v;
    size_t vl;
    int k = attr_next(&r, &a, &v, &vl);
    if (k == 1 && a == 'm') {
        rc = SCRAM_ENOTSUP;
        goto fail;
    }
    /* r= our nonce followed by the server's part, which must not be empty. */
    if (k != 1 || a != 'r' || vl <= c->cnonce_len || vl > SCRAM_MAX_NONCE ||
        memcmp(v, c->cnonce, c->cnonce_len) != 0 || !printable_ok(v, vl))
        goto fail;
    const char *nonce = v;
    size_t nonce_len = vl;
    if (attr_next(&r, &a, &v, &vl) != 1 || a != 's' ||
        scram_b64_decode(v, vl, salt, sizeof(salt), &salt_len) < 0 || salt_len == 0)
        goto fail;
    if (attr_next(&r, &a, &v, &vl) != 1 || a != 'i')
        goto fail;
    rc = parse_count(v, vl, &iterations);
    if (rc < 0)
        goto fail;
    rc = SCRAM_EPROTO;
    if (attr_skip_rest(&r) < 0)
        goto fail;
    if (!iterations_ok(iterations)) {
        rc = SCRAM_EWEAK;
        goto fail;
    }

    if (c->have_key) {
        /* Pass-through: the key only fits the salt and count it was made with. */
        if (salt_len != c->v.salt_len || iterations != c->v.iterations ||
            CRYPTO_memcmp(salt, c->v.salt, salt_len) != 0) {
            rc = SCRAM_ESTALE;
            goto fail;
        }
        memcpy(stored, c->v.stored_key, kl);
        memcpy(server_key, c->v.server_key, kl);
    } else {
        rc = derive_keys(c->mech, c->pw, c->pw_len, salt, salt_len, iterations, c->client_key,
                         stored, server_key);
        if (rc < 0)
            goto fail;
        /* Kept for scram_client_export_key(); the password itself is no longer needed. */
        OPENSSL_cleanse(c->pw, sizeof(c->pw));
        c->pw_len = 0;
        c->v.mech = c->mech;
        c->v.iterations = iterations;
        c->v.salt_len = salt_len;
        memcpy(c->v.salt, salt, salt_len);
        memcpy(c->v.stored_key, stored, kl);
        memcpy(c->v.server_key, server_key, kl);
    }

    /* client-final-message-without-proof = "c=biws,r=<nonce>" */
    rc = put_str(reply, sizeof(reply), &reply_len, "c=biws,r=");
    if (rc == 0)
        rc = put(reply, sizeof(reply), &reply_len, nonce, nonce_len);
    size_t without_proof = reply_len;
    if (rc == 0)
        rc = auth_hmac(c->mech, stored, c->cfb, c->cfb_len, m, len, reply, without_proof, sig);
    if (rc < 0)
        goto fail;
    for (size_t i = 0; i < kl; i++)
        proof[i] = c->client_key[i] ^ sig[i];
    rc = auth_hmac(c->mech, server_key, c->cfb, c->cfb_len, m, len, reply, without_proof,
                   c->server_sig);
    if (rc == 0)
        rc = emit_b64_attr(reply, sizeof(reply), &reply_len, ",p=", proof, kl, out, cap, out_len);
    if (rc < 0)
        goto fail;
    c->state = CONV_FIRST;
    rc = 0;
    goto out;
fail:
    client_fail(c);
out:
    OPENSSL_cleanse(salt, sizeof(salt));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server_key, sizeof(server_key));
    OPENSSL_cleanse(reply, sizeof(reply));
    return rc;
}

int scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len)
{
    if (!c || !msg || c->state != CONV_FIRST)
        return -EINVAL;
    const char *m = (const char *)msg;
    size_t kl = scram_key_len(c->mech);
    uint8_t sig[SCRAM_MAX_KEY];
    int rc = SCRAM_EPROTO;
    if (len > SCRAM_MAX_MSG)
        goto fail;
    struct attr_reader r = {m, len, 0};
    char a;
    const char *v;
    size_t vl;
    int k = attr_next(&r, &a, &v, &vl);
    if (k == 1 && a == 'e') {
        rc = SCRAM_EAUTH; /* the server refused the proof */
        goto fail;
    }
    size_t sl = 0;
    if (k != 1 || a != 'v' || scram_b64_decode(v, vl, sig, sizeof(sig), &sl) < 0 || sl != kl)
        goto fail;
    if (attr_skip_rest(&r) < 0)
        goto fail;
    if (CRYPTO_memcmp(sig, c->server_sig, kl) != 0) {
        rc = SCRAM_EAUTH;
        goto fail;
    }
    c->state = CONV_DONE;
    rc = 0;
    goto out;
fail:
    client_fail(c);
out:
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

int scram_client_done(const struct scram_client *c)
{
    return c && c->state == CONV_DONE;
}

int scram_client_export_key(const struct scram_client *c, uint8_t *key, size_t *key_len,
                            struct scram_verifier *v)
{
    /*
     * Allowed from a successful scram_client_final() on, as the header promised from the start. A
     * key exported before the server proved itself is still the right key for that salt and
     * count; a server that lied about them only gets SCRAM_ESTALE on the next login, after which
     * the caller derives again. A failed conversation has wiped its key and exports nothing.
     */
    if (!c || !key || !key_len || !v || (c->state != CONV_FIRST && c->state != CONV_DONE))
        return -EINVAL;
    copy_key(c->mech, c->client_key, key, key_len);
    *v = c->v;
    return 0;
}

void scram_client_free(struct scram_client *c)
{
    free_wiped(c, sizeof(*c));
}
