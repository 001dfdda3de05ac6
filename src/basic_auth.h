/*
 * basic_auth.h: HTTP Basic authentication (RFC 7617) for the admin listener's /metrics and
 * /readyz, checked against the SCRAM verifiers of the auth_file, and a small cache of successful
 * checks.
 *
 * Pure module: no sockets, no libuv, no logging; times are arguments. OpenSSL provides PBKDF2
 * (through scram.c), HMAC, the constant-time comparison and the random cache key.
 *
 * The credentials are "user@db:password": the user-id is split at its last '@' (user names may
 * hold one, database names do not in practice); without '@' the database is "admin". The password
 * is checked by deriving the SCRAM verifier with the stored verifier's salt and iteration count
 * (SCRAM-SHA-1 with MongoDB's password digest) and comparing the StoredKeys in constant time, so
 * mongolb needs no password of its own for anyone.
 *
 * PBKDF2 costs milliseconds (15000 iterations of SHA-256 by default), which a scraper would pay
 * on every request. basic_auth_cache remembers a successful check: an HMAC, under a key drawn at
 * start, of the whole Authorization value (the header itself is not kept), the user and a copy of
 * the verifier it was checked against, for BASIC_AUTH_CACHE_TTL_MS. The caller checks on a hit
 * that the user still has that verifier (an auth_file reloaded with a new password ends the
 * entry) and is still an admin. BASIC_AUTH_CACHE_SLOTS entries at most; the one closest to expiry
 * gives way. Every slot is compared on a lookup, in constant time, so that the time taken tells
 * nothing about which credentials are cached.
 */
#ifndef MONGOLB_BASIC_AUTH_H
#define MONGOLB_BASIC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "authfile.h"
#include "scram.h"

#define BASIC_AUTH_CACHE_SLOTS  32
#define BASIC_AUTH_CACHE_TTL_MS (60 * 1000)
#define BASIC_AUTH_TAG_LEN      32 /* HMAC-SHA-256 */

/* Credentials from an Authorization field; wipe with basic_auth_cred_wipe. */
struct basic_auth_cred {
    char user[SCRAM_MAX_USER + 1];
    char db[AUTHFILE_MAX_DB + 1];
    char password[SCRAM_MAX_PASSWORD + 1];
};

/*
 * Parses an Authorization field value (without surrounding white space): the scheme "Basic" in
 * any case, one or more spaces, and the standard, padded base64 of "user-id:password" with
 * nothing after it. The user-id must be a user name and database name the auth_file accepts; the
 * password at most SCRAM_MAX_PASSWORD bytes; neither may hold control characters (RFC 7617 2).
 * Returns 0, -ENOENT when the scheme is not Basic, or -EINVAL when the value is malformed; on
 * failure *out is wiped.
 */
int basic_auth_parse(const char *value, size_t len, struct basic_auth_cred *out);

/* Wipes credentials (OPENSSL_cleanse). */
void basic_auth_cred_wipe(struct basic_auth_cred *c);

/*
 * Checks password against v, the verifier of user: 0 when it matches, SCRAM_EAUTH when it does
 * not, another negative code when it cannot be checked (SCRAM_ESASLPREP for a SCRAM-SHA-256
 * password that is not printable ASCII, -EINVAL, -ENOMEM). Runs PBKDF2: slow.
 */
int basic_auth_verify(const struct scram_verifier *v, const char *user, const char *password);

struct basic_auth_entry {
    uint8_t tag[BASIC_AUTH_TAG_LEN]; /* HMAC of the Authorization value */
    int64_t expires_ms;              /* 0: a free slot */
    char user[SCRAM_MAX_USER + 1];
    char db[AUTHFILE_MAX_DB + 1];
    struct scram_verifier v; /* what the password was checked against */
};

struct basic_auth_cache {
    uint8_t key[32];
    struct basic_auth_entry e[BASIC_AUTH_CACHE_SLOTS];
};

/* Zeroes the cache and draws its key. Returns 0 or -EIO (no random bytes). */
int basic_auth_cache_init(struct basic_auth_cache *c);

/* The entry of this Authorization value that has not expired at now_ms, or NULL. */
struct basic_auth_entry *basic_auth_cache_find(struct basic_auth_cache *c, const char *value,
                                               size_t len, int64_t now_ms);

/* Remembers a successful check of value by cred against v until now_ms + ttl_ms. */
void basic_auth_cache_put(struct basic_auth_cache *c, const char *value, size_t len,
                          const struct basic_auth_cred *cred, const struct scram_verifier *v,
                          int64_t now_ms, int64_t ttl_ms);

/* Forgets one entry (wiped). */
void basic_auth_cache_drop(struct basic_auth_entry *e);

/* Forgets every entry and the key (wiped). */
void basic_auth_cache_wipe(struct basic_auth_cache *c);

#endif
