/*
 * auth.h: authentication in mongolb, the glue between the pure SCRAM and auth_file modules
 * (scram.h, authfile.h) and the connections (client.c, pool.c).
 *
 * Three modes ([auth] mode, docs/CONFIG.md):
 *  - off: no credentials. A client's saslStart or authenticate is refused here with an error that
 *    names the setting; nothing about logins is ever forwarded.
 *  - service: applications log in to mongolb with users of the auth_file; every backend
 *    connection logs in as service_user (SCRAM with a password from service_password_file, or
 *    MONGODB-X509 with the [upstream] TLS certificate).
 *  - passthrough: applications log in as their own cluster users. The verifier comes from the
 *    auth_file or, with service_user set, from usersInfo (showCredentials) run on a backend
 *    connection logged in as service_user, kept in the user's struct auth_user for
 *    verifier_cache_ms (0: read for every login) and dropped sooner when a proof fails against it
 *    or a server refuses the key recovered with it. The ClientKey recovered from the
 *    application's proof is kept in memory only (struct auth_user, wiped when freed) and backend
 *    connections log in as that same user with it; pool.c never gives a connection logged in as
 *    one user to another (pools per server and user).
 *
 * An auth_user is one user known to mongolb, refcounted by the clients logged in as it and the
 * backend connections logged in as it, and cached (max_cached_users, least recently used out)
 * once nobody holds it. Its uid is the "owner" of the cursors and transaction pins its clients
 * create; uids are never reused within a process.
 *
 * Secrets (passwords, verifiers, ClientKeys) never reach a log line or mongolbStatus.
 */
#ifndef MONGOLB_AUTH_H
#define MONGOLB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "auth_parse.h"
#include "authfile.h"
#include "config.h"
#include "list.h"
#include "request.h"
#include "scram.h"
#include "wire.h"

struct proxy;

struct auth_user {
    struct list link; /* auth_state.users, least recently released first */
    uint32_t uid;     /* the owner id of its cursors and pins; never reused; 0 is nobody */
    int refs;         /* clients logged in as it and backend connections logged in as it */
    char db[AUTHFILE_MAX_DB + 1];
    char user[SCRAM_MAX_USER + 1];
    /* Passthrough: the ClientKey recovered from the user's last login and its verifier. */
    bool have_key;
    struct scram_verifier v;
    uint8_t key[SCRAM_MAX_KEY];
    size_t key_len;
    bool cluster_monitor; /* usersInfo listed a role that may read server status */
    /* Passthrough with service_user: usersInfo's answer for this user, read at info_ms and used
     * instead of a new read until verifier_cache_ms have passed (never a secret to log). */
    bool have_info;
    int64_t info_ms;
    struct auth_users_info info;
};

/* A login in progress (auth.c): the SCRAM conversation, the verifier it checks against and a
 * verifier read with usersInfo. Allocated when a login starts and freed when it ends, so that a
 * client that never logs in, or has logged in, carries none of it. */
struct auth_login;

/* One client connection's login state. Zeroed is "not logged in". */
struct auth_session {
    struct auth_user *au;     /* logged in as (a reference), or NULL */
    struct auth_login *login; /* while a login runs, else NULL */
};

enum auth_result {
    AUTH_REPLY,  /* reply holds the answer (success or an error document) */
    AUTH_FAILED, /* reply holds 18 AuthenticationFailed: a failed login, to be slowed down */
    AUTH_FETCH,  /* the verifier must be fetched first: auth_build_fetch, then call again */
};

/* Loads the auth_file and the service password (start). Returns 0 or a negative errno with the
 * reason in err. */
int auth_init(struct proxy *p, char *err, size_t err_len);
/* Re-reads the auth_file and the password file on SIGHUP; a broken file keeps the running one
 * (with a log line). */
void auth_reload(struct proxy *p);
void auth_free(struct proxy *p);
/* --check-config: the files are read and their modes checked as at start. */
int auth_check_files(const struct mlb_config *cfg, char *err, size_t err_len);

/* Answers saslStart, saslContinue, authenticate and logout (cmd is the command document, db its
 * $db). The reply document is built into reply (initialised, empty). */
enum auth_result auth_command(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                              const char *db, bson_t *reply);
/* Adds saslSupportedMechs and speculativeAuthenticate to a hello reply being built, when the
 * hello asks for them and the mode allows. AUTH_FETCH: nothing was added; fetch, then call again.
 */
enum auth_result auth_hello(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                            bson_t *reply);
/* The usersInfo command for the pending fetch, as an OP_MSG. Returns 0 or -ENOMEM. */
int auth_build_fetch(struct proxy *p, struct auth_session *s, struct wire_buf *out, int32_t rid);
/* Takes usersInfo's reply. Returns 0 (the session holds the answer, and a known user's is cached
 * for verifier_cache_ms; an unknown user has no mechanisms and drops any cached answer) or a
 * negative errno with the reason in why. */
int auth_fetch_reply(struct proxy *p, struct auth_session *s, const uint8_t *frame, size_t len,
                     char *why, size_t why_len);
/* The user a verifier is being read for, as "user@db" into buf (for a log line). */
const char *auth_fetch_name(const struct auth_session *s, char *buf, size_t len);
/* The verifier could not be read (the exchange failed): the fetch is forgotten. */
void auth_fetch_abandon(struct auth_session *s);
/* The client leaves: its login ends, its conversation is wiped. */
void auth_session_end(struct proxy *p, struct auth_session *s);

/* The owner id of what the client creates: its user's uid, or 0. */
uint32_t auth_owner(const struct auth_session *s);
/* The user whose pool the client's requests use: the logged-in user in passthrough, else NULL
 * (connections of the service user, or not logged in at all in mode off). */
struct auth_user *auth_pool_user(const struct proxy *p, const struct auth_session *s);

/*
 * Whether a request may go on: NULL when it may, else the message of a 13 Unauthorized answer
 * (written into buf): not logged in (only hello, the login commands, ping, buildInfo and getnonce
 * are open before a login), a command of deny_commands or not in allow_commands, or mongolbStatus
 * for a user that is not in admin_users. *logged tells whether the refusal deserves a log line.
 */
const char *auth_gate(struct proxy *p, const struct auth_session *s, const struct request_info *ri,
                      char *buf, size_t len, bool *logged);

/* A failed login from ip: returns how long its reply waits (ms). A success clears the count. */
int64_t auth_failure_delay(struct proxy *p, const char *ip);
/* The delay (ms) that count failures in a row earn, at most max: none for the first
 * AUTH_FAIL_FREE, then doubling from AUTH_FAIL_FIRST_MS. The admin listener's Basic
 * authentication uses the same figures. */
int64_t auth_backoff_ms(int count, int64_t max);
void auth_login_ok(struct proxy *p, const char *ip);

void auth_user_ref(struct auth_user *au);
void auth_user_unref(struct proxy *p, struct auth_user *au);

/* --- backend logins (pool.c) --- */

struct auth_backend;

/*
 * Starts a backend connection's login as au (passthrough) or as the service user (au NULL).
 * Returns 1 with the first message in out, 0 when this connection logs in as nobody, or a negative
 * errno with the reason in why. *ab is the conversation, freed with auth_backend_free.
 */
int auth_backend_begin(struct proxy *p, struct auth_user *au, struct auth_backend **ab,
                       struct wire_buf *out, int32_t rid, char *why, size_t why_len);
/* The server's answer to the last message: 1 with the next one in out, 0 once logged in, or a
 * negative errno (-EACCES: the credentials were refused) with the reason in why. */
int auth_backend_step(struct proxy *p, struct auth_backend *ab, const uint8_t *frame, size_t len,
                      struct wire_buf *out, int32_t rid, char *why, size_t why_len);
void auth_backend_free(struct auth_backend *ab);

/* The auth_file's verifier of (db, user) for the admin listener's Basic authentication:
 * SCRAM-SHA-256's when the file has one, else SCRAM-SHA-1's, else NULL. Valid until the next
 * auth_reload. */
const struct scram_verifier *auth_file_verifier(struct proxy *p, const char *db, const char *user);

/* Counters and the users, for mongolbStatus (names only). */
void auth_status(struct proxy *p, bson_t *doc);

#endif
