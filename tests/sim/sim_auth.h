/*
 * sim_auth.h: mongosim's users, SCRAM server and authorization (sim_auth.c).
 *
 * Users belong to the deployment (struct sim), as admin.system.users does to a replica set or to
 * the config servers behind mongoses: every simulated server sees the same users at once. Each
 * connection carries its own login state (struct sim_conn_auth): at most one authenticated user,
 * as mongod since 6.0, and the SCRAM conversation in progress.
 *
 * The SCRAM server here is the simulator's own, written from RFC 5802/7677 and MongoDB's auth
 * specification with OpenSSL's primitives (PKCS5_PBKDF2_HMAC, HMAC, EVP digests, RAND_bytes). It
 * deliberately shares no code with mongolb's src/scram.c, so that one mistake cannot pass on both
 * sides of the proxy's tests; the real drivers (PyMongo, Node, mongosh) are what checks it.
 *
 * With --auth, commands need a login and a role that grants them (sim_auth_check); without it,
 * users can still be created and can log in, and nothing is enforced, as mongod without
 * authorization.
 */
#ifndef MONGOSIM_SIM_AUTH_H
#define MONGOSIM_SIM_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#define SIM_AUTH_NAME_MAX  128 /* user names and database names, NUL included */
#define SIM_AUTH_OWNER_MAX (2 * SIM_AUTH_NAME_MAX)
#define SIM_AUTH_MAX_ROLES 16
#define SIM_AUTH_MSG_MAX   1024 /* the longest SCRAM message accepted from a client */

struct sim;
struct sim_server;
struct sim_conn;
struct sim_request;
struct sim_user;

enum sim_scram_mech {
    SIM_SCRAM_NONE = 0,
    SIM_SCRAM_SHA1 = 1,
    SIM_SCRAM_SHA256 = 2,
};

/* One connection's login state; zeroed when the connection is made. */
struct sim_conn_auth {
    bool authenticated;
    char user[SIM_AUTH_NAME_MAX];
    char db[SIM_AUTH_NAME_MAX];
    char owner[SIM_AUTH_OWNER_MAX]; /* "user@db" once authenticated, else "" */

    /* The SCRAM conversation in progress (step 0: none). */
    int step; /* 1: server-first sent; 2: server-final sent, an empty step expected */
    enum sim_scram_mech mech;
    bool skip_empty;
    char conv_user[SIM_AUTH_NAME_MAX];
    char conv_db[SIM_AUTH_NAME_MAX];
    char client_first_bare[SIM_AUTH_MSG_MAX];
    char server_first[SIM_AUTH_MSG_MAX];
    char nonce[SIM_AUTH_MSG_MAX];
};

/* Adds a user from --auth-user "user[@db]:password[:role[@db][,role[@db]...]]" (the user's
 * database defaults to admin, the role to root@admin). Returns 0 or -EINVAL / -EEXIST / -ENOMEM. */
int sim_auth_add_user_spec(struct sim *s, const char *spec);
/* Frees every user. */
void sim_auth_free(struct sim *s);

/* Wipes a connection's SCRAM state (when it closes or a conversation ends). */
void sim_auth_conn_reset(struct sim_conn_auth *a);

/*
 * With --auth: decides whether the connection may run this command. Returns true to let it
 * run, false with reply holding the 13 Unauthorized error mongod gives.
 */
bool sim_auth_check(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                    const char *name, bson_t *reply);

/* Runs the authentication and user-management commands (saslStart, saslContinue, authenticate,
 * logout, connectionStatus, createUser, updateUser, dropUser, dropAllUsersFromDatabase,
 * grantRolesToUser, revokeRolesFromUser, usersInfo). Returns false for any other command. */
bool sim_auth_command(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                      const char *name, bson_t *reply);

/* Appends to a hello reply what a hello asked about users: saslSupportedMechs for "db.user",
 * and the answer to speculativeAuthenticate (omitted when that first step fails, as mongod). */
void sim_auth_hello(struct sim_server *srv, struct sim_conn *conn, const bson_t *cmd,
                    bson_t *reply);

/* "user@db" of the connection's user, "" when none: the owner recorded on cursors and sessions. */
const char *sim_auth_owner(struct sim_conn *conn);

/* Whether the connection may use a cursor or session owned by owner: always without --auth,
 * else when owner is its own user (or both are ""). */
bool sim_auth_owns(struct sim *s, struct sim_conn *conn, const char *owner);

/* Whether the connection's user may kill any cursor (killAnyCursor: root, clusterAdmin). */
bool sim_auth_kill_any_cursor(struct sim *s, struct sim_conn *conn);

#endif
