/*
 * auth_parse.h: what auth.c reads from peers, parsed without I/O (pure module, no libuv).
 *
 * From applications: the login commands (saslStart, saslContinue, and hello's saslSupportedMechs
 * and speculativeAuthenticate). From the servers: their answers to mongolb's own logins
 * (saslStart, saslContinue, authenticate) and to usersInfo with showCredentials, whose
 * credentials carry base64 salts and keys. Every field is checked for its type and bounds, and a
 * number for its range before it is converted; a field of the wrong type counts as absent.
 * Nothing here allocates or recurses: the results point into the caller's document or frame, and
 * live as long as it does. tests/fuzz/fuzz_auth_parse.c feeds these functions arbitrary bytes.
 */
#ifndef MONGOLB_AUTH_PARSE_H
#define MONGOLB_AUTH_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "authfile.h"
#include "scram.h"

/* A client's saslStart or saslContinue (or the saslStart inside speculativeAuthenticate). */
struct auth_sasl_cmd {
    const char *mechanism; /* "" when absent or not a string */
    uint32_t mechanism_len;
    bool has_payload; /* a binary or string payload */
    const uint8_t *payload;
    uint32_t payload_len;
    bool skip_empty;       /* options.skipEmptyExchange */
    bool has_conversation; /* conversationId, a whole number in int64's range */
    int64_t conversation;
};

void auth_parse_sasl(const bson_t *cmd, struct auth_sasl_cmd *out);

/* The login fields of a client's hello. */
struct auth_hello_login {
    /* saslSupportedMechs: "db.user", split at the first dot. has_mechs_for is false when the field
     * is absent; mechs_name_ok false when it is there but not a name mongolb can look up. */
    bool has_mechs_for;
    bool mechs_name_ok;
    char mechs_db[AUTHFILE_MAX_DB + 1];
    char mechs_user[SCRAM_MAX_USER + 1];
    /* speculativeAuthenticate: its document, the db it names ("admin" when absent) and whether
     * it is a saslStart (the only speculative command mongolb answers). */
    bool has_spec;
    bool spec_is_sasl_start;
    bson_t spec; /* static, into the hello document */
    const char *spec_db;
};

void auth_parse_hello(const bson_t *cmd, struct auth_hello_login *out);

/* Splits "db.user" at its first dot into bounded buffers. Returns false when there is no dot,
 * either side is empty or a side does not fit. */
bool auth_split_name(const char *full, char *db, size_t db_len, char *user, size_t user_len);

/* A server's answer to saslStart, saslContinue or authenticate. */
struct auth_server_reply {
    bool ok;
    int64_t code;       /* 0 when absent */
    const char *errmsg; /* "" when absent */
    bool has_done;
    bool done;
    bool has_conversation;
    int64_t conversation;
    bool has_payload;
    const uint8_t *payload;
    uint32_t payload_len;
};

/* Reads an OP_MSG reply frame. Returns 0, or -EPROTO when it is not a readable OP_MSG. */
int auth_parse_server_reply(const uint8_t *frame, size_t len, struct auth_server_reply *out);

/* What usersInfo (showCredentials) says of one user. */
struct auth_users_info {
    unsigned mechs;             /* 1u << SCRAM_SHA_1 | 1u << SCRAM_SHA_256: verifiers read */
    bool monitor;               /* a role on admin that may read server status */
    struct scram_verifier v[3]; /* by enum scram_mech; the caller wipes them */
};

/*
 * Reads usersInfo's reply frame for the user db.user (other users in the answer are ignored). An
 * unknown user, or one without SCRAM credentials, gives 0 with mechs 0. Returns -EPROTO for an
 * unreadable frame, -EACCES for a reply that is not ok, with the reason in why (the server's code
 * and errmsg, cut short).
 */
int auth_parse_users_info(const uint8_t *frame, size_t len, const char *db, const char *user,
                          struct auth_users_info *out, char *why, size_t why_len);

/* A BSON number as a whole int64: int32, int64, or a double with no fraction within range.
 * Returns false for anything else (a NaN or 1e300 is not converted). */
bool auth_parse_int64(const bson_iter_t *it, int64_t *out);

#endif
