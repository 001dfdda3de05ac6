/*
 * basic_auth.c: HTTP Basic credentials checked against SCRAM verifiers, and the cache of
 * successful checks. See basic_auth.h.
 */
#include "basic_auth.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* The base64 of the longest credentials we accept: user@db:password. */
#define CRED_MAX (SCRAM_MAX_USER + 1 + AUTHFILE_MAX_DB + 1 + SCRAM_MAX_PASSWORD)

static int has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

void basic_auth_cred_wipe(struct basic_auth_cred *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}

int basic_auth_parse(const char *value, size_t len, struct basic_auth_cred *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 5 || strncasecmp(value, "Basic", 5) != 0)
        return -ENOENT;
    size_t i = 5;
    if (i < len && value[i] != ' ')
        return -ENOENT; /* "Basicx": another scheme */
    while (i < len && value[i] == ' ')
        i++;
    if (i == len || i == 5)
        return -EINVAL;
    /* Three bytes more than CRED_MAX decode so that an over-long credential is told apart. */
    uint8_t buf[CRED_MAX + 3];
    size_t n = 0;
    if (len - i > scram_b64_len(CRED_MAX) ||
        scram_b64_decode(value + i, len - i, buf, sizeof(buf), &n) < 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return -EINVAL;
    }
    const char *text = (const char *)buf;
    const char *colon = memchr(text, ':', n);
    int rc = -EINVAL;
    if (!colon || memchr(text, '\0', n))
        goto out;
    size_t id_len = (size_t)(colon - text), pw_len = n - id_len - 1;
    if (id_len == 0 || pw_len > SCRAM_MAX_PASSWORD || has_ctl(text, n))
        goto out;
    /* The user-id splits at its last '@'; none means the admin database. */
    size_t at = id_len;
    while (at > 0 && text[at - 1] != '@')
        at--;
    size_t user_len = at ? at - 1 : id_len;
    const char *db = at ? text + at : "admin";
    size_t db_len = at ? id_len - at : 5;
    if (user_len == 0 || user_len > SCRAM_MAX_USER || db_len == 0 || db_len > AUTHFILE_MAX_DB ||
        !authfile_user_ok(text, user_len) || !authfile_db_ok(db, db_len))
        goto out;
    memcpy(out->user, text, user_len);
    memcpy(out->db, db, db_len);
    memcpy(out->password, colon + 1, pw_len);
    rc = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rc < 0)
        basic_auth_cred_wipe(out);
    return rc;
}

int basic_auth_verify(const struct scram_verifier *v, const char *user, const char *password)
{
    size_t klen = scram_key_len(v->mech);
    if (klen == 0)
        return -EINVAL;
    struct scram_verifier d;
    int rc =
        scram_verifier_derive(v->mech, user, password, v->salt, v->salt_len, v->iterations, &d);
    if (rc == 0 && CRYPTO_memcmp(d.stored_key, v->stored_key, klen) != 0)
        rc = SCRAM_EAUTH;
    scram_verifier_wipe(&d);
    return rc;
}

/* --- the cache -------------------------------------------------------------------------------- */

int basic_auth_cache_init(struct basic_auth_cache *c)
{
    memset(c, 0, sizeof(*c));
    return RAND_bytes(c->key, sizeof(c->key)) == 1 ? 0 : -EIO;
}

static void tag_of(const struct basic_auth_cache *c, const char *value, size_t len,
                   uint8_t tag[BASIC_AUTH_TAG_LEN])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), c->key, sizeof(c->key), (const unsigned char *)value, len, tag, &n) ||
        n != BASIC_AUTH_TAG_LEN)
        memset(tag, 0, BASIC_AUTH_TAG_LEN); /* matches no entry: a free slot is never compared */
}

struct basic_auth_entry *basic_auth_cache_find(struct basic_auth_cache *c, const char *value,
                                               size_t len, int64_t now_ms)
{
    uint8_t tag[BASIC_AUTH_TAG_LEN];
    tag_of(c, value, len, tag);
    struct basic_auth_entry *found = NULL;
    /* Every slot is compared, the found one or not, so that timing tells nothing. */
    for (int i = 0; i < BASIC_AUTH_CACHE_SLOTS; i++) {
        struct basic_auth_entry *e = &c->e[i];
        int same = CRYPTO_memcmp(e->tag, tag, sizeof(tag)) == 0;
        if (same && e->expires_ms > now_ms && !found)
            found = e;
    }
    OPENSSL_cleanse(tag, sizeof(tag));
    return found;
}

void basic_auth_cache_put(struct basic_auth_cache *c, const char *value, size_t len,
                          const struct basic_auth_cred *cred, const struct scram_verifier *v,
                          int64_t now_ms, int64_t ttl_ms)
{
    uint8_t tag[BASIC_AUTH_TAG_LEN];
    tag_of(c, value, len, tag);
    struct basic_auth_entry *slot = NULL;
    for (int i = 0; i < BASIC_AUTH_CACHE_SLOTS && !slot; i++)
        if (c->e[i].expires_ms && CRYPTO_memcmp(c->e[i].tag, tag, sizeof(tag)) == 0)
            slot = &c->e[i];
    /* Else a free or expired slot, else the one closest to expiry. */
    for (int i = 0; i < BASIC_AUTH_CACHE_SLOTS && !slot; i++)
        if (c->e[i].expires_ms <= now_ms)
            slot = &c->e[i];
    if (!slot) {
        slot = &c->e[0];
        for (int i = 1; i < BASIC_AUTH_CACHE_SLOTS; i++)
            if (c->e[i].expires_ms < slot->expires_ms)
                slot = &c->e[i];
    }
    basic_auth_cache_drop(slot);
    memcpy(slot->tag, tag, sizeof(tag));
    OPENSSL_cleanse(tag, sizeof(tag));
    slot->expires_ms = now_ms + ttl_ms > 0 ? now_ms + ttl_ms : 1;
    memcpy(slot->user, cred->user, sizeof(slot->user));
    memcpy(slot->db, cred->db, sizeof(slot->db));
    slot->v = *v;
}

void basic_auth_cache_drop(struct basic_auth_entry *e)
{
    OPENSSL_cleanse(e, sizeof(*e));
}

void basic_auth_cache_wipe(struct basic_auth_cache *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}
