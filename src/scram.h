/*
 * scram.h: SCRAM-SHA-1 and SCRAM-SHA-256 as MongoDB speaks them (RFC 5802, RFC 7677 and the
 * driver authentication specification), both sides of the conversation, without I/O.
 *
 * Pure module: no sockets, no libuv, no logging. OpenSSL's libcrypto provides PBKDF2, HMAC, the
 * digests and the random bytes. Every message from a peer is bounded (SCRAM_MAX_MSG) and checked
 * field by field; nothing recurses. Secrets (passwords, salted passwords, ClientKey, proofs) live
 * only inside the opaque conversation objects and are wiped with OPENSSL_cleanse when freed.
 *
 * MongoDB's rules on top of the RFCs:
 *   - SCRAM-SHA-1's "password" is the lowercase hex of MD5("<user>:mongo:<password>"), with no
 *     SASLprep of either; SCRAM-SHA-256 uses SASLprep(password) and never preps the user name.
 *   - No channel binding: a client-first message starts with "n,," (or "y,,", which RFC 5802 lets
 *     a client send when it supports binding but thinks the server does not); "p=" is refused, as
 *     is an authorization identity.
 *   - A client refuses fewer than 4096 iterations and a server nonce that does not begin with its
 *     own nonce.
 *
 * The SERVER side is what mongolb runs when an application logs in to it:
 *     s = scram_server_new(mech)
 *     scram_server_start(s, client_first)         -> the user name (scram_server_user)
 *     ... the caller finds that user's verifier, maybe asynchronously ...
 *     scram_server_first(s, &verifier, out)       -> server-first message
 *     scram_server_final(s, client_final, out)    -> server-final "v=..." once the proof is good
 *     scram_server_client_key(s, key)             -> the recovered ClientKey (pass-through)
 *     scram_server_free(s)
 *
 * The CLIENT side is what mongolb runs when it logs in to a backend, either with a password
 * (service mode) or with a ClientKey recovered from the application's own login plus the user's
 * verifier (pass-through):
 *     c = scram_client_new(mech, user)
 *     scram_client_set_password(c, password)   or   scram_client_set_key(c, key, &verifier)
 *     scram_client_first(c, out)                  -> client-first message
 *     scram_client_final(c, server_first, out)    -> client-final message with the proof
 *     scram_client_verify(c, server_final)        -> 0 once the server proved it knows the key
 *     scram_client_free(c)
 *
 * Functions return 0 or a negative code: SCRAM_E* below or -ENOMEM/-ENOSPC/-EINVAL (a caller's
 * mistake: a NULL, a call out of order, an output buffer too small). The caller maps them to
 * MongoDB's codes with scram_error_code().
 */
#ifndef MONGOLB_SCRAM_H
#define MONGOLB_SCRAM_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* --- bounds ----------------------------------------------------------------------------------- */

#define SCRAM_MAX_KEY        32      /* the largest digest (SHA-256) */
#define SCRAM_MAX_SALT       64      /* bytes of salt; MongoDB uses 16 (SHA-1) and 28 (SHA-256) */
#define SCRAM_MAX_USER       256     /* bytes of a user name, unescaped, without its NUL */
#define SCRAM_MAX_PASSWORD   1024    /* bytes of a password, without its NUL */
#define SCRAM_MAX_NONCE      128     /* characters of a combined (client + server) nonce */
#define SCRAM_MAX_MSG        2048    /* bytes of any one SCRAM message, in or out */
#define SCRAM_MIN_ITERATIONS 4096    /* fewer is refused (driver authentication specification) */
#define SCRAM_MAX_ITERATIONS 1000000 /* more is refused: PBKDF2 would stall the caller */
#define SCRAM_NONCE_RANDOM   24      /* random bytes behind a generated nonce (base64: 32) */

/* --- errors ----------------------------------------------------------------------------------- */

/* A message that does not follow the grammar: MongoDB's 17 ProtocolError. */
#define SCRAM_EPROTO (-EPROTO)
/* A proof or server signature that does not match: MongoDB's 18 AuthenticationFailed. */
#define SCRAM_EAUTH (-EACCES)
/* Channel binding ("p=") or an authorization identity requested: 17 ProtocolError. */
#define SCRAM_ENOTSUP (-ENOTSUP)
/* A client saw fewer than SCRAM_MIN_ITERATIONS (or more than the maximum): 18. */
#define SCRAM_EWEAK (-ERANGE)
/*
 * Pass-through only: the server's salt or iteration count differ from the verifier the ClientKey
 * was recovered against, so the user's credentials changed in the cluster. The caller refreshes
 * its verifier (usersInfo) and the application logs in again.
 */
#define SCRAM_ESTALE (-ESTALE)
/*
 * SCRAM-SHA-256 with a password that is not printable ASCII. SASLprep (RFC 4013) is implemented
 * for ASCII only (where it is the identity, control characters prohibited); a password with other
 * bytes is refused with this code rather than prepared wrongly. Known limitation.
 */
#define SCRAM_ESASLPREP (-EILSEQ)

/* MongoDB's error codes the caller sends for the codes above. */
#define SCRAM_MONGO_PROTOCOL_ERROR        17
#define SCRAM_MONGO_AUTHENTICATION_FAILED 18

/*
 * The MongoDB error code for a negative return of this module: 17 ProtocolError for malformed
 * messages (SCRAM_EPROTO, SCRAM_ENOTSUP), 18 AuthenticationFailed for everything else (a bad proof,
 * a stale verifier, a weak count, and internal failures, which must not tell a peer more).
 */
int scram_error_code(int rc);

/* A short English text for a negative return, without any secret; never NULL. */
const char *scram_strerror(int rc);

/* --- mechanisms and verifiers ----------------------------------------------------------------- */

enum scram_mech {
    SCRAM_SHA_1 = 1,
    SCRAM_SHA_256 = 2,
};

/* "SCRAM-SHA-1" or "SCRAM-SHA-256"; "?" for anything else. */
const char *scram_mech_name(enum scram_mech mech);

/* Parses a mechanism name (exact, case-sensitive as MongoDB). Returns 0 or -EINVAL. */
int scram_mech_parse(const char *name, size_t len, enum scram_mech *out);

/* Digest length: 20 for SHA-1, 32 for SHA-256, 0 for anything else. */
size_t scram_key_len(enum scram_mech mech);

/*
 * A user's stored credential for one mechanism, as MongoDB keeps it in admin.system.users and
 * returns with usersInfo's showCredentials: salt, iteration count, StoredKey = H(ClientKey) and
 * ServerKey = HMAC(SaltedPassword, "Server Key"). It holds no password, but it lets anyone who
 * has it test guesses offline: treat it as a secret (wipe it, never log it).
 */
struct scram_verifier {
    enum scram_mech mech;
    uint32_t iterations;
    size_t salt_len;
    uint8_t salt[SCRAM_MAX_SALT];
    uint8_t stored_key[SCRAM_MAX_KEY]; /* scram_key_len(mech) bytes used */
    uint8_t server_key[SCRAM_MAX_KEY];
};

/*
 * Derives the verifier of user/password for mech with the given salt and iteration count
 * (SCRAM-SHA-1 digests user and password first; SCRAM-SHA-256 SASLpreps the password). user is
 * only used by SCRAM-SHA-1. The salt must be 1..SCRAM_MAX_SALT bytes and the iteration count
 * within [SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS]. Returns 0, -EINVAL, SCRAM_ESASLPREP or
 * -ENOMEM.
 */
int scram_verifier_derive(enum scram_mech mech, const char *user, const char *password,
                          const uint8_t *salt, size_t salt_len, uint32_t iterations,
                          struct scram_verifier *out);

/*
 * Builds a verifier from usersInfo's (or an auth file's) base64 strings. Checks that the salt is
 * 1..SCRAM_MAX_SALT bytes, the keys exactly scram_key_len(mech) bytes and iterations within
 * [SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS]. Lengths are explicit; the strings need no NUL.
 * Returns 0 or -EINVAL.
 */
int scram_verifier_from_b64(enum scram_mech mech, uint32_t iterations, const char *salt_b64,
                            size_t salt_b64_len, const char *stored_b64, size_t stored_b64_len,
                            const char *server_b64, size_t server_b64_len,
                            struct scram_verifier *out);

/* True when a and b are the same credential (compared in constant time where secret). */
int scram_verifier_equal(const struct scram_verifier *a, const struct scram_verifier *b);

/* Wipes a verifier (OPENSSL_cleanse). */
void scram_verifier_wipe(struct scram_verifier *v);

/* --- helpers ---------------------------------------------------------------------------------- */

/* Characters base64 needs for n bytes, padding included, without the NUL: 4 * ceil(n / 3). */
size_t scram_b64_len(size_t n);

/*
 * Standard base64 (RFC 4648, "+/", padded) of in[0..n) into out, NUL-terminated. Returns the
 * length written (without the NUL) or -ENOSPC when cap < scram_b64_len(n) + 1.
 */
int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/*
 * Strict decoding of in[0..n): a multiple of 4 characters from the standard alphabet, padding
 * only at the end, no whitespace, unused bits zero. Writes at most cap bytes. Returns 0 with
 * *out_len set, -EINVAL for bad input, -ENOSPC if the result would not fit.
 */
int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len);

/*
 * SCRAM's saslname escaping: "=" becomes "=3D" and "," becomes "=2C". The output is
 * NUL-terminated; returns 0 with *out_len set, -EINVAL for an empty name, a NUL byte or a name
 * longer than SCRAM_MAX_USER, -ENOSPC if it does not fit.
 */
int scram_user_escape(const char *user, size_t n, char *out, size_t cap, size_t *out_len);

/*
 * The reverse: "=3D" and "=2C" decoded, any other "=" refused, as are NUL and "," and a result
 * longer than SCRAM_MAX_USER. The output is NUL-terminated. Returns 0, SCRAM_EPROTO or -ENOSPC.
 */
int scram_user_unescape(const char *in, size_t n, char *out, size_t cap, size_t *out_len);

/*
 * MongoDB's SCRAM-SHA-1 password digest: lowercase hex MD5 of "<user>:mongo:<password>" into
 * out (33 bytes with the NUL). Returns 0 or -EINVAL/-ENOMEM. The caller wipes out.
 */
int scram_sha1_password_digest(const char *user, const char *password, char out[33]);

/*
 * SASLprep (RFC 4013) of in[0..n) for SCRAM-SHA-256 passwords: printable ASCII maps to itself;
 * ASCII control characters are prohibited (-EINVAL); any byte >= 0x80 gives SCRAM_ESASLPREP (the
 * documented limitation). Returns 0 with *out_len set, or -ENOSPC.
 */
int scram_saslprep(const char *in, size_t n, char *out, size_t cap, size_t *out_len);

/* --- server side ------------------------------------------------------------------------------ */

struct scram_server;

/* A conversation for one application login. NULL when out of memory or mech is unknown. */
struct scram_server *scram_server_new(enum scram_mech mech);

/*
 * Tests only: use suffix (printable ASCII except ',', 1..64 characters) after the client's nonce
 * instead of base64 of SCRAM_NONCE_RANDOM random bytes. Call before scram_server_first().
 * Returns 0 or -EINVAL.
 */
int scram_server_set_nonce(struct scram_server *s, const char *suffix);

/*
 * Parses the client-first message: gs2 header "n,," or "y,," ("p=" -> SCRAM_ENOTSUP; a non-empty
 * authzid -> SCRAM_ENOTSUP), then "n=<saslname>,r=<nonce>" with no extensions ("m=" ->
 * SCRAM_ENOTSUP). Returns 0 or SCRAM_EPROTO/SCRAM_ENOTSUP/-EINVAL (called twice).
 */
int scram_server_start(struct scram_server *s, const uint8_t *msg, size_t len);

/* The user name from the client-first message, unescaped and NUL-terminated (after start). */
const char *scram_server_user(const struct scram_server *s);

/*
 * Writes the server-first message "r=<client nonce><server nonce>,s=<salt>,i=<count>" for the
 * user's verifier, which must be of the conversation's mechanism. The verifier is copied. Returns
 * 0 with *out_len set, or -EINVAL (order, mechanism), -ENOSPC, -EIO (no random bytes).
 */
int scram_server_first(struct scram_server *s, const struct scram_verifier *v, uint8_t *out,
                       size_t cap, size_t *out_len);

/*
 * Checks the client-final message "c=<b64 gs2 header>,r=<combined nonce>[,extensions],p=<proof>"
 * (c= must decode to the exact gs2 header of the client-first; r= must equal the combined nonce),
 * verifies the proof in constant time (H(ClientProof XOR ClientSignature) == StoredKey), and
 * writes the server-final message "v=<ServerSignature>". Returns 0 with *out_len set, SCRAM_EAUTH
 * for a wrong proof, SCRAM_EPROTO for a malformed message or a nonce that differs, -EINVAL
 * (order), -ENOSPC. After a failure the conversation is over.
 */
int scram_server_final(struct scram_server *s, const uint8_t *msg, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len);

/* True once scram_server_final() succeeded. */
int scram_server_done(const struct scram_server *s);

/*
 * The ClientKey recovered from the client's proof (after a successful scram_server_final), for a
 * pass-through login to the backends as the same user. Copies scram_key_len() bytes into key
 * (SCRAM_MAX_KEY bytes of room) and sets *key_len. The caller wipes its copy. Returns 0 or
 * -EINVAL.
 */
int scram_server_client_key(const struct scram_server *s, uint8_t *key, size_t *key_len);

/* Wipes and frees; NULL is fine. */
void scram_server_free(struct scram_server *s);

/* --- client side ------------------------------------------------------------------------------ */

struct scram_client;

/*
 * A conversation for one backend login as user (1..SCRAM_MAX_USER bytes, sent escaped and
 * without SASLprep, as drivers do). NULL when out of memory or arguments are bad.
 */
struct scram_client *scram_client_new(enum scram_mech mech, const char *user);

/*
 * Service mode: log in with a password. SCRAM-SHA-1 digests it with the user name;
 * SCRAM-SHA-256 SASLpreps it (SCRAM_ESASLPREP for non-ASCII). The password is not kept beyond
 * what the derivation needs and is wiped with the conversation. Returns 0 or an error.
 */
int scram_client_set_password(struct scram_client *c, const char *password);

/*
 * Pass-through: log in with a ClientKey (key_len == scram_key_len(mech)) recovered from the
 * user's own login, checked against v (H(key) must equal v's StoredKey, else -EINVAL). The
 * server-first message must then carry v's salt and iteration count (else SCRAM_ESTALE), and the
 * server signature is checked with v's ServerKey. Returns 0 or -EINVAL.
 */
int scram_client_set_key(struct scram_client *c, const uint8_t *key, size_t key_len,
                         const struct scram_verifier *v);

/* Tests only: use nonce (printable ASCII except ',', 1..64 characters) instead of a random one. */
int scram_client_set_nonce(struct scram_client *c, const char *nonce);

/* Writes the client-first message "n,,n=<escaped user>,r=<nonce>". Returns 0 or an error. */
int scram_client_first(struct scram_client *c, uint8_t *out, size_t cap, size_t *out_len);

/*
 * Parses the server-first message "r=<nonce>,s=<salt>,i=<count>[,extensions]" (the nonce must
 * extend ours, the count be >= SCRAM_MIN_ITERATIONS; "m=" -> SCRAM_ENOTSUP), derives the keys
 * (PBKDF2 with a password: the only slow call of this module) and writes the client-final
 * message "c=biws,r=<nonce>,p=<proof>". Returns 0, SCRAM_EPROTO, SCRAM_EWEAK, SCRAM_ESTALE
 * (pass-through), SCRAM_ENOTSUP, -EINVAL (order), -ENOSPC.
 */
int scram_client_final(struct scram_client *c, const uint8_t *msg, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len);

/*
 * Checks the server-final message: "v=<signature>" compared in constant time (SCRAM_EAUTH when
 * it differs), or "e=<error>" (SCRAM_EAUTH). Returns 0 once the server is proven, else an error.
 */
int scram_client_verify(struct scram_client *c, const uint8_t *msg, size_t len);

/* True once scram_client_verify() succeeded. */
int scram_client_done(const struct scram_client *c);

/*
 * After a successful scram_client_final() (and until a failure): the ClientKey and the verifier
 * this login used (salt and count from the server), so that later logins of the same user use
 * scram_client_set_key() and skip PBKDF2 (the credential cache the authentication specification
 * asks drivers for). Caching only after scram_client_verify() succeeded is the safer habit.
 * Returns 0 or -EINVAL (before client-final, or after any failure).
 */
int scram_client_export_key(const struct scram_client *c, uint8_t *key, size_t *key_len,
                            struct scram_verifier *v);

/* Wipes and frees; NULL is fine. */
void scram_client_free(struct scram_client *c);

#endif
