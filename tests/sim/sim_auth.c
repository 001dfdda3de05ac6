/*
 * sim_auth.c: users, SCRAM-SHA-1/SCRAM-SHA-256 on the server side, and authorization, as mongod
 * 7.0 answers them (see sim_auth.h for the model).
 *
 * What is faithful, because drivers or mongolb observe it: the saslStart/saslContinue exchange
 * (conversationId 1, payload as BinData, options.skipEmptyExchange, the extra empty step without
 * it), speculativeAuthenticate and saslSupportedMechs inside hello, SCRAM-SHA-1's password digest
 * (hex MD5 of "user:mongo:password"), the default iteration counts (10000 and 15000) and salt
 * sizes (16 and 28 bytes), usersInfo's credentials, the error codes (18 for a wrong password and
 * for an unknown user alike, 334 for a mechanism, 17 for a broken conversation, 13 for anything
 * not allowed) and cursor and session ownership.
 *
 * Simplified, and said so in the README: SASLprep is the identity on printable ASCII (what the
 * tests use); other passwords are taken as their UTF-8 bytes, which SASLprep also leaves alone
 * unless they hold characters it maps or forbids. A malformed SCRAM message gets 18, as mongod
 * turns every failure inside a step but 17 and 334 into AuthenticationFailed; a broken envelope
 * (no payload, no conversation, a wrong conversationId) gets 17 ProtocolError. The built-in roles
 * are coarse classes of commands rather than mongod's privilege lists. The sim* control commands
 * and configureFailPoint stay open without a login, so that the test harness keeps steering a
 * deployment that requires authentication.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sim.h"
#include "sim_auth.h"

#define SHA1_ITERATIONS   10000
#define SHA256_ITERATIONS 15000
#define SHA1_SALT_LEN     16
#define SHA256_SALT_LEN   28
#define MAX_KEY_LEN       32
#define NONCE_RANDOM      24
#define CONVERSATION_ID   1

struct sim_role {
    char role[64];
    char db[SIM_AUTH_NAME_MAX];
};

/* The stored verifier of one mechanism: what admin.system.users keeps, never the password. */
struct sim_cred {
    bool set;
    int32_t iterations;
    uint8_t salt[SHA256_SALT_LEN];
    size_t salt_len;
    uint8_t stored_key[MAX_KEY_LEN];
    uint8_t server_key[MAX_KEY_LEN];
};

struct sim_user {
    struct sim_user *next;
    char user[SIM_AUTH_NAME_MAX];
    char db[SIM_AUTH_NAME_MAX];
    uint8_t uuid[16];
    struct sim_role roles[SIM_AUTH_MAX_ROLES];
    int nroles;
    struct sim_cred sha1, sha256;
};

/* --- crypto helpers ------------------------------------------------------------------------ */

static const EVP_MD *mech_md(enum sim_scram_mech m)
{
    return m == SIM_SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

static size_t mech_len(enum sim_scram_mech m)
{
    return m == SIM_SCRAM_SHA1 ? 20 : 32;
}

static const char *mech_name(enum sim_scram_mech m)
{
    return m == SIM_SCRAM_SHA1 ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
}

static enum sim_scram_mech mech_parse(const char *name)
{
    if (strcmp(name, "SCRAM-SHA-1") == 0)
        return SIM_SCRAM_SHA1;
    if (strcmp(name, "SCRAM-SHA-256") == 0)
        return SIM_SCRAM_SHA256;
    return SIM_SCRAM_NONE;
}

/* Standard padded base64 of in into out (cap bytes, NUL included). Returns the length or -1. */
static int b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    if (cap < 4 * ((n + 2) / 3) + 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decodes padded base64 (length a multiple of 4). Returns the byte count or -1. */
static int b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 || n / 4 * 3 > cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)in[i]) && in[i] != '+' && in[i] != '/' &&
            !(in[i] == '=' && i >= n - 2))
            return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (n && in[n - 1] == '=')
        len--;
    if (n > 1 && in[n - 2] == '=')
        len--;
    return len;
}

static int hmac(enum sim_scram_mech m, const uint8_t *key, size_t klen, const void *data,
                size_t dlen, uint8_t *out)
{
    unsigned int olen = 0;
    if (!HMAC(mech_md(m), key, (int)klen, data, dlen, out, &olen))
        return -1;
    return 0;
}

static int digest(enum sim_scram_mech m, const void *data, size_t len, uint8_t *out)
{
    unsigned int olen = 0;
    return EVP_Digest(data, len, out, &olen, mech_md(m), NULL) == 1 ? 0 : -1;
}

/*
 * Derives StoredKey and ServerKey from a password, as createUser does. SCRAM-SHA-1 hashes
 * MongoDB's digest (hex MD5 of "user:mongo:password"), SCRAM-SHA-256 the password itself
 * (SASLprep is the identity on what the simulator accepts).
 */
static int derive_cred(enum sim_scram_mech m, const char *user, const char *pwd, struct sim_cred *c)
{
    char input[1024];
    if (m == SIM_SCRAM_SHA1) {
        char tmp[1024];
        uint8_t md5[16];
        unsigned int l = 0;
        int n = snprintf(tmp, sizeof(tmp), "%s:mongo:%s", user, pwd);
        if (n < 0 || (size_t)n >= sizeof(tmp) ||
            EVP_Digest(tmp, (size_t)n, md5, &l, EVP_md5(), NULL) != 1)
            return -EINVAL;
        OPENSSL_cleanse(tmp, sizeof(tmp));
        for (int i = 0; i < 16; i++)
            snprintf(input + 2 * i, 3, "%02x", md5[i]);
        c->iterations = SHA1_ITERATIONS;
        c->salt_len = SHA1_SALT_LEN;
    } else {
        if (snprintf(input, sizeof(input), "%s", pwd) >= (int)sizeof(input))
            return -EINVAL;
        c->iterations = SHA256_ITERATIONS;
        c->salt_len = SHA256_SALT_LEN;
    }
    uint8_t salted[MAX_KEY_LEN], client_key[MAX_KEY_LEN];
    size_t kl = mech_len(m);
    int rc = -EIO;
    if (RAND_bytes(c->salt, (int)c->salt_len) != 1)
        goto out;
    if (PKCS5_PBKDF2_HMAC(input, (int)strlen(input), c->salt, (int)c->salt_len, c->iterations,
                          mech_md(m), (int)kl, salted) != 1)
        goto out;
    if (hmac(m, salted, kl, "Client Key", 10, client_key) < 0 ||
        digest(m, client_key, kl, c->stored_key) < 0 ||
        hmac(m, salted, kl, "Server Key", 10, c->server_key) < 0)
        goto out;
    c->set = true;
    rc = 0;
out:
    OPENSSL_cleanse(input, sizeof(input));
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

/* --- users --------------------------------------------------------------------------------- */

static struct sim_user *user_find(struct sim *s, const char *user, const char *db)
{
    for (struct sim_user *u = s->users; u; u = u->next)
        if (strcmp(u->user, user) == 0 && strcmp(u->db, db) == 0)
            return u;
    return NULL;
}

static void user_free(struct sim_user *u)
{
    OPENSSL_cleanse(u, sizeof(*u));
    free(u);
}

void sim_auth_free(struct sim *s)
{
    struct sim_user *u = s->users;
    while (u) {
        struct sim_user *n = u->next;
        user_free(u);
        u = n;
    }
    s->users = NULL;
    s->nusers = 0;
}

/* Roles that exist only on admin and grant across databases or on the cluster. */
static bool admin_only_role(const char *r)
{
    static const char *const names[] = {
        "root",
        "readAnyDatabase",
        "readWriteAnyDatabase",
        "dbAdminAnyDatabase",
        "userAdminAnyDatabase",
        "clusterMonitor",
        "clusterManager",
        "clusterAdmin",
        "hostManager",
        "backup",
        "restore",
        "__system",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(r, names[i]) == 0)
            return true;
    return false;
}

static bool db_role(const char *r)
{
    return strcmp(r, "read") == 0 || strcmp(r, "readWrite") == 0 || strcmp(r, "dbAdmin") == 0 ||
           strcmp(r, "userAdmin") == 0 || strcmp(r, "dbOwner") == 0;
}

static bool role_exists(const char *role, const char *db)
{
    return db_role(role) || (admin_only_role(role) && strcmp(db, "admin") == 0);
}

static bool name_ok(const char *n)
{
    size_t l = strlen(n);
    return l > 0 && l < SIM_AUTH_NAME_MAX;
}

/* Sets the credentials of the mechanisms asked for (both by default) from pwd. */
static int set_password(struct sim_user *u, const char *pwd, bool sha1, bool sha256)
{
    struct sim_cred c1 = {0}, c256 = {0};
    if ((sha1 && derive_cred(SIM_SCRAM_SHA1, u->user, pwd, &c1) < 0) ||
        (sha256 && derive_cred(SIM_SCRAM_SHA256, u->user, pwd, &c256) < 0))
        return -EIO;
    u->sha1 = c1;
    u->sha256 = c256;
    OPENSSL_cleanse(&c1, sizeof(c1));
    OPENSSL_cleanse(&c256, sizeof(c256));
    return 0;
}

static struct sim_user *user_add(struct sim *s, const char *user, const char *db)
{
    struct sim_user *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    snprintf(u->user, sizeof(u->user), "%s", user);
    snprintf(u->db, sizeof(u->db), "%s", db);
    RAND_bytes(u->uuid, sizeof(u->uuid));
    u->uuid[6] = (uint8_t)((u->uuid[6] & 0x0f) | 0x40);
    u->uuid[8] = (uint8_t)((u->uuid[8] & 0x3f) | 0x80);
    /* Appended, so that usersInfo lists users in the order they were created. */
    struct sim_user **pp = &s->users;
    while (*pp)
        pp = &(*pp)->next;
    *pp = u;
    s->nusers++;
    return u;
}

static void user_remove(struct sim *s, struct sim_user *u)
{
    struct sim_user **pp = &s->users;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = u->next;
        s->nusers--;
        user_free(u);
    }
}

int sim_auth_add_user_spec(struct sim *s, const char *spec)
{
    char buf[1024];
    if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
        return -EINVAL;
    char *colon = strchr(buf, ':');
    if (!colon)
        return -EINVAL;
    *colon = '\0';
    char *user = buf, *pwd = colon + 1, *roles = NULL;
    char *udb = strrchr(user, '@');
    const char *db = "admin";
    if (udb) {
        *udb = '\0';
        db = udb + 1;
    }
    /* The last ':' starts the roles only if what follows names known roles, so that a password
     * may hold ':' when no role is given. */
    char *last = strrchr(pwd, ':');
    if (last) {
        char probe[512];
        snprintf(probe, sizeof(probe), "%s", last + 1);
        bool all_roles = probe[0] != '\0';
        char *save, *tok = strtok_r(probe, ",", &save);
        while (tok && all_roles) {
            char *at = strchr(tok, '@');
            if (at)
                *at = '\0';
            all_roles = db_role(tok) || admin_only_role(tok);
            tok = strtok_r(NULL, ",", &save);
        }
        if (all_roles) {
            *last = '\0';
            roles = last + 1;
        }
    }
    /* $external users (X.509 subjects) have no password; everyone else must have one. */
    bool external = strcmp(db, "$external") == 0;
    if (!name_ok(user) || !name_ok(db) || (pwd[0] != '\0') == external)
        return -EINVAL;
    if (user_find(s, user, db))
        return -EEXIST;
    struct sim_user *u = user_add(s, user, db);
    if (!u)
        return -ENOMEM;
    if (!roles) {
        snprintf(u->roles[0].role, sizeof(u->roles[0].role), "root");
        snprintf(u->roles[0].db, sizeof(u->roles[0].db), "admin");
        u->nroles = 1;
    } else {
        char *save, *tok = strtok_r(roles, ",", &save);
        while (tok) {
            char *at = strchr(tok, '@');
            const char *rdb = at ? at + 1 : (admin_only_role(tok) ? "admin" : db);
            if (at)
                *at = '\0';
            if (u->nroles >= SIM_AUTH_MAX_ROLES || !role_exists(tok, rdb) || !name_ok(rdb)) {
                user_remove(s, u);
                return -EINVAL;
            }
            snprintf(u->roles[u->nroles].role, sizeof(u->roles[0].role), "%s", tok);
            snprintf(u->roles[u->nroles].db, sizeof(u->roles[0].db), "%s", rdb);
            u->nroles++;
            tok = strtok_r(NULL, ",", &save);
        }
    }
    int rc = external ? 0 : set_password(u, pwd, true, true);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rc < 0) {
        user_remove(s, u);
        return rc;
    }
    return 0;
}

/* --- privileges ---------------------------------------------------------------------------- */

/* What a command needs, coarsely: the classes the built-in roles grant. */
enum need {
    NEED_NONE = 0,      /* allowed before login */
    NEED_LOGIN,         /* any authenticated user */
    NEED_READ,          /* on the command's database */
    NEED_WRITE,         /* on the command's database */
    NEED_DB_ADMIN,      /* on the command's database */
    NEED_USER_ADMIN,    /* on the command's database */
    NEED_CLUSTER_MON,   /* on the cluster */
    NEED_CLUSTER_ADMIN, /* on the cluster: everything else */
};

struct cmd_need {
    const char *name;
    enum need need;
};

static const struct cmd_need cmd_needs[] = {
    {"hello", NEED_NONE},
    {"isMaster", NEED_NONE},
    {"ismaster", NEED_NONE},
    {"ping", NEED_NONE},
    {"buildInfo", NEED_NONE},
    {"buildinfo", NEED_NONE},
    {"saslStart", NEED_NONE},
    {"saslContinue", NEED_NONE},
    {"authenticate", NEED_NONE},
    {"logout", NEED_NONE},
    {"getnonce", NEED_NONE},
    {"connectionStatus", NEED_NONE},
    {"endSessions", NEED_LOGIN},
    {"refreshSessions", NEED_LOGIN},
    {"startSession", NEED_LOGIN},
    {"commitTransaction", NEED_LOGIN},
    {"abortTransaction", NEED_LOGIN},
    {"listDatabases", NEED_LOGIN},
    {"whatsmyuri", NEED_LOGIN},
    {"getMore", NEED_LOGIN},     /* the cursor's owner decides */
    {"killCursors", NEED_LOGIN}, /* the cursor's owner decides */
    {"usersInfo", NEED_LOGIN},   /* one's own user; others need userAdmin (checked inside) */
    {"find", NEED_READ},
    {"aggregate", NEED_READ}, /* NEED_WRITE with $out or $merge */
    {"count", NEED_READ},
    {"distinct", NEED_READ},
    {"listCollections", NEED_READ},
    {"listIndexes", NEED_READ},
    {"dbStats", NEED_READ},
    {"collStats", NEED_READ},
    {"dataSize", NEED_READ},
    {"explain", NEED_READ},
    {"insert", NEED_WRITE},
    {"update", NEED_WRITE},
    {"delete", NEED_WRITE},
    {"findAndModify", NEED_WRITE},
    {"findandmodify", NEED_WRITE},
    {"create", NEED_WRITE},
    {"drop", NEED_WRITE},
    {"createIndexes", NEED_WRITE},
    {"dropIndexes", NEED_WRITE},
    {"dropDatabase", NEED_DB_ADMIN},
    {"collMod", NEED_DB_ADMIN},
    {"compact", NEED_DB_ADMIN},
    {"validate", NEED_DB_ADMIN},
    {"profile", NEED_DB_ADMIN},
    {"createUser", NEED_USER_ADMIN},
    {"updateUser", NEED_USER_ADMIN},
    {"dropUser", NEED_USER_ADMIN},
    {"dropAllUsersFromDatabase", NEED_USER_ADMIN},
    {"grantRolesToUser", NEED_USER_ADMIN},
    {"revokeRolesFromUser", NEED_USER_ADMIN},
    {"rolesInfo", NEED_LOGIN},
    {"serverStatus", NEED_CLUSTER_MON},
    {"currentOp", NEED_CLUSTER_MON},
    {"getCmdLineOpts", NEED_CLUSTER_MON},
    {"getLog", NEED_CLUSTER_MON},
    {"getParameter", NEED_CLUSTER_MON},
    {"hostInfo", NEED_CLUSTER_MON},
    {"replSetGetStatus", NEED_CLUSTER_MON},
    {"replSetGetConfig", NEED_CLUSTER_MON},
    {"listShards", NEED_CLUSTER_MON},
    {"connPoolStats", NEED_CLUSTER_MON},
    {"top", NEED_CLUSTER_MON},
};

static enum need need_of(const char *name)
{
    for (size_t i = 0; i < sizeof(cmd_needs) / sizeof(cmd_needs[0]); i++)
        if (strcmp(cmd_needs[i].name, name) == 0)
            return cmd_needs[i].need;
    return NEED_CLUSTER_ADMIN;
}

/* Whether one role grants a class of commands on database db. */
static bool role_grants(const struct sim_role *r, enum need need, const char *db)
{
    const char *n = r->role;
    bool admin = strcmp(r->db, "admin") == 0;
    if (admin && (strcmp(n, "root") == 0 || strcmp(n, "__system") == 0))
        return true;
    bool same = strcmp(r->db, db) == 0;
    switch (need) {
    case NEED_NONE:
    case NEED_LOGIN:
        return true;
    case NEED_READ:
        return (same && (strcmp(n, "read") == 0 || strcmp(n, "readWrite") == 0 ||
                         strcmp(n, "dbOwner") == 0)) ||
               (admin && (strcmp(n, "readAnyDatabase") == 0 ||
                          strcmp(n, "readWriteAnyDatabase") == 0 || strcmp(n, "backup") == 0));
    case NEED_WRITE:
        return (same && (strcmp(n, "readWrite") == 0 || strcmp(n, "dbOwner") == 0)) ||
               (admin && (strcmp(n, "readWriteAnyDatabase") == 0 || strcmp(n, "restore") == 0));
    case NEED_DB_ADMIN:
        return (same && (strcmp(n, "dbAdmin") == 0 || strcmp(n, "dbOwner") == 0)) ||
               (admin && strcmp(n, "dbAdminAnyDatabase") == 0);
    case NEED_USER_ADMIN:
        return (same && (strcmp(n, "userAdmin") == 0 || strcmp(n, "dbOwner") == 0)) ||
               (admin && strcmp(n, "userAdminAnyDatabase") == 0);
    case NEED_CLUSTER_MON:
        return admin && (strcmp(n, "clusterMonitor") == 0 || strcmp(n, "clusterManager") == 0 ||
                         strcmp(n, "clusterAdmin") == 0);
    case NEED_CLUSTER_ADMIN:
        return admin && strcmp(n, "clusterAdmin") == 0;
    }
    return false;
}

static bool user_may(const struct sim_user *u, enum need need, const char *db)
{
    if (!u)
        return false;
    for (int i = 0; i < u->nroles; i++)
        if (role_grants(&u->roles[i], need, db))
            return true;
    return false;
}

static struct sim_user *conn_user(struct sim *s, struct sim_conn *conn)
{
    struct sim_conn_auth *a = sim_conn_auth(conn);
    return a->authenticated ? user_find(s, a->user, a->db) : NULL;
}

/* An aggregate that writes ($out or $merge as its last stage) needs write access. */
static bool aggregate_writes(const bson_t *cmd)
{
    bson_iter_t it, p, st;
    if (!bson_iter_init_find(&it, cmd, "pipeline") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &p))
        return false;
    while (bson_iter_next(&p)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&p) && bson_iter_recurse(&p, &st) && bson_iter_next(&st) &&
            (strcmp(bson_iter_key(&st), "$out") == 0 || strcmp(bson_iter_key(&st), "$merge") == 0))
            return true;
    }
    return false;
}

/* "{ find: "c", filter: {...} }" cut to a readable length, as mongod's message shows it. */
static void unauthorized(bson_t *reply, const char *db, const bson_t *cmd)
{
    char *json = bson_as_relaxed_extended_json(cmd, NULL);
    char msg[512];
    snprintf(msg, sizeof(msg), "not authorized on %s to execute command %.400s", db,
             json ? json : "{}");
    bson_free(json);
    sim_error(reply, 13, "Unauthorized", msg);
}

bool sim_auth_check(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                    const char *name, bson_t *reply)
{
    struct sim *s = srv->sim;
    if (!s->opt.auth)
        return true;
    enum need need = need_of(name);
    if (need == NEED_NONE)
        return true;
    const char *db = req->db ? req->db : "admin";
    struct sim_user *u = conn_user(s, conn);
    if (!u) {
        /* The localhost exception: with no user at all, the first one may be created on admin
         * without logging in. */
        if (!s->users && strcmp(name, "createUser") == 0 && strcmp(db, "admin") == 0)
            return true;
        char msg[160];
        snprintf(msg, sizeof(msg), "Command %s requires authentication", name);
        sim_error(reply, 13, "Unauthorized", msg);
        srv->auth_stats.unauthorized++;
        return false;
    }
    if (need == NEED_READ && strcmp(name, "aggregate") == 0 && aggregate_writes(&req->cmd))
        need = NEED_WRITE;
    if (user_may(u, need, db))
        return true;
    unauthorized(reply, db, &req->cmd);
    srv->auth_stats.unauthorized++;
    return false;
}

const char *sim_auth_owner(struct sim_conn *conn)
{
    return sim_conn_auth(conn)->owner;
}

bool sim_auth_owns(struct sim *s, struct sim_conn *conn, const char *owner)
{
    return !s->opt.auth || strcmp(owner, sim_auth_owner(conn)) == 0;
}

bool sim_auth_kill_any_cursor(struct sim *s, struct sim_conn *conn)
{
    return !s->opt.auth || user_may(conn_user(s, conn), NEED_CLUSTER_ADMIN, "admin");
}

/* --- SCRAM server -------------------------------------------------------------------------- */

void sim_auth_conn_reset(struct sim_conn_auth *a)
{
    a->step = 0;
    a->mech = SIM_SCRAM_NONE;
    a->skip_empty = false;
    OPENSSL_cleanse(a->conv_user, sizeof(a->conv_user));
    OPENSSL_cleanse(a->conv_db, sizeof(a->conv_db));
    OPENSSL_cleanse(a->client_first_bare, sizeof(a->client_first_bare));
    OPENSSL_cleanse(a->server_first, sizeof(a->server_first));
    OPENSSL_cleanse(a->nonce, sizeof(a->nonce));
}

static void auth_failed(bson_t *reply)
{
    sim_error(reply, 18, "AuthenticationFailed", "Authentication failed.");
}

/* Un-escapes a SCRAM user name (=2C is ',', =3D is '='). Returns 0 or -1 on a bad escape. */
static int unescape_user(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '=') {
            if (i + 3 > n)
                return -1;
            if (strncmp(in + i, "=2C", 3) == 0)
                c = ',';
            else if (strncmp(in + i, "=3D", 3) == 0)
                c = '=';
            else
                return -1;
            i += 2;
        } else if (c == ',') {
            return -1;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return o ? 0 : -1;
}

/* Copies a BinData (or, from old shells, string) payload out of a command. Returns its length,
 * -1 when missing or of another type, -2 when too long. */
static int get_payload(const bson_t *cmd, char *out, size_t cap)
{
    bson_iter_t it;
    const uint8_t *data = NULL;
    uint32_t len = 0;
    if (!bson_iter_init_find(&it, cmd, "payload"))
        return -1;
    if (BSON_ITER_HOLDS_BINARY(&it)) {
        bson_subtype_t st;
        bson_iter_binary(&it, &st, &len, &data);
    } else if (BSON_ITER_HOLDS_UTF8(&it)) {
        data = (const uint8_t *)bson_iter_utf8(&it, &len);
    } else {
        return -1;
    }
    if (len >= cap)
        return -2;
    memcpy(out, data, len);
    out[len] = '\0';
    /* A NUL inside the payload would cut the message short: refused as malformed. */
    if (strlen(out) != len)
        return -2;
    return (int)len;
}

static void append_payload(bson_t *reply, const char *msg)
{
    BSON_APPEND_BINARY(reply, "payload", BSON_SUBTYPE_BINARY, (const uint8_t *)msg,
                       (uint32_t)strlen(msg));
}

/* A SASL step's answer: the conversation, whether it is done, the payload. */
static void sasl_reply(bson_t *reply, bool done, const char *payload)
{
    BSON_APPEND_INT32(reply, "conversationId", CONVERSATION_ID);
    BSON_APPEND_BOOL(reply, "done", done);
    append_payload(reply, payload);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

/* 334 MechanismUnavailable, as mongod words it. Returns -1. */
static int mech_unavailable(bson_t *reply, const char *mechanism)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "Received authentication for mechanism %.64s which is not enabled",
             mechanism);
    sim_error(reply, 334, "MechanismUnavailable", msg);
    return -1;
}

/* Ends a conversation that failed: nothing of it is kept, the reply is 18, and it counts. */
static int conv_failed(struct sim_server *srv, struct sim_conn_auth *a, bson_t *reply)
{
    sim_auth_conn_reset(a);
    auth_failed(reply);
    srv->auth_stats.failures++;
    return -1;
}

/*
 * The first step: client-first "n,,n=user,r=nonce" -> server-first "r=nonce+snonce,s=salt,i=n".
 * Returns 0 with the reply built, or an error code put in reply (18, 17, 334).
 */
static int sasl_start(struct sim_server *srv, struct sim_conn_auth *a, const char *db,
                      const char *mechanism, const bson_t *cmd, bson_t *reply)
{
    struct sim *s = srv->sim;
    sim_auth_conn_reset(a);
    srv->auth_stats.sasl_starts++;
    enum sim_scram_mech m = mech_parse(mechanism);
    if (m == SIM_SCRAM_NONE)
        return mech_unavailable(reply, mechanism);
    char msg[SIM_AUTH_MSG_MAX];
    int len = get_payload(cmd, msg, sizeof(msg));
    if (len == -1) {
        sim_error(reply, 17, "ProtocolError", "saslStart needs a payload");
        return -1;
    }
    if (len < 0)
        goto fail;
    bool skip = false;
    bson_iter_t it, o;
    if (bson_iter_init_find(&it, cmd, "options") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &o) && bson_iter_find(&o, "skipEmptyExchange"))
        skip = bson_iter_as_bool(&o);

    /* gs2 header: "n," or "y," (no channel binding), an optional "a=authzid", then ",". */
    const char *p = msg;
    if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',')
        goto fail;
    p += 2;
    if (p[0] == 'a' && p[1] == '=') {
        p = strchr(p, ',');
        if (!p)
            goto fail;
    } else if (p[0] != ',') {
        goto fail;
    }
    p++;
    const char *bare = p;
    if (strncmp(p, "n=", 2) != 0)
        goto fail;
    const char *uend = strchr(p + 2, ',');
    if (!uend || strncmp(uend, ",r=", 3) != 0)
        goto fail;
    char user[SIM_AUTH_NAME_MAX];
    if (unescape_user(p + 2, (size_t)(uend - p - 2), user, sizeof(user)) < 0)
        goto fail;
    const char *cnonce = uend + 3;
    size_t cn_len = strcspn(cnonce, ",");
    if (cn_len == 0)
        goto fail;
    for (size_t i = 0; i < cn_len; i++)
        if (cnonce[i] < 0x21 || cnonce[i] > 0x7e)
            goto fail;
    /* Extensions after the nonce ("m=" is mandatory to understand) are not supported. */
    if (cnonce[cn_len] == ',')
        goto fail;

    struct sim_user *u = user_find(s, user, db);
    if (!u)
        goto fail; /* the same answer as a wrong password, so names cannot be probed */
    struct sim_cred *c = m == SIM_SCRAM_SHA1 ? &u->sha1 : &u->sha256;
    if (!c->set) {
        char emsg[256];
        snprintf(emsg, sizeof(emsg),
                 "Unable to use %s based authentication for user without any %s credentials "
                 "registered",
                 mech_name(m), mech_name(m));
        sim_error(reply, 334, "MechanismUnavailable", emsg);
        return -1;
    }
    uint8_t rnd[NONCE_RANDOM];
    char rnd64[64];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1 || b64_encode(rnd, sizeof(rnd), rnd64, sizeof(rnd64)) < 0)
        goto fail;
    char salt64[64];
    if (b64_encode(c->salt, c->salt_len, salt64, sizeof(salt64)) < 0)
        goto fail;
    int n = snprintf(a->nonce, sizeof(a->nonce), "%.*s%s", (int)cn_len, cnonce, rnd64);
    if (n < 0 || (size_t)n >= sizeof(a->nonce))
        goto fail;
    n = snprintf(a->server_first, sizeof(a->server_first), "r=%s,s=%s,i=%d", a->nonce, salt64,
                 c->iterations);
    if (n < 0 || (size_t)n >= sizeof(a->server_first))
        goto fail;
    snprintf(a->client_first_bare, sizeof(a->client_first_bare), "%s", bare);
    snprintf(a->conv_user, sizeof(a->conv_user), "%s", user);
    snprintf(a->conv_db, sizeof(a->conv_db), "%s", db);
    a->mech = m;
    a->skip_empty = skip;
    a->step = 1;
    OPENSSL_cleanse(msg, sizeof(msg));
    sasl_reply(reply, false, a->server_first);
    return 0;
fail:
    OPENSSL_cleanse(msg, sizeof(msg));
    return conv_failed(srv, a, reply);
}

/* Makes the conversation's user the connection's user. Returns -1 (reply: 18) when the
 * connection is already someone else's: mongod allows one user per connection. */
static int login(struct sim_server *srv, struct sim_conn_auth *a, bson_t *reply)
{
    if (a->authenticated &&
        (strcmp(a->user, a->conv_user) != 0 || strcmp(a->db, a->conv_db) != 0)) {
        return conv_failed(srv, a, reply);
    }
    srv->auth_stats.successes++;
    a->authenticated = true;
    snprintf(a->user, sizeof(a->user), "%s", a->conv_user);
    snprintf(a->db, sizeof(a->db), "%s", a->conv_db);
    snprintf(a->owner, sizeof(a->owner), "%s@%s", a->user, a->db);
    return 0;
}

/* The second step: client-final "c=biws,r=nonce,p=proof" -> server-final "v=signature". */
static int sasl_continue(struct sim_server *srv, struct sim_conn_auth *a, const bson_t *cmd,
                         bson_t *reply)
{
    struct sim *s = srv->sim;
    char msg[SIM_AUTH_MSG_MAX];
    int len = get_payload(cmd, msg, sizeof(msg));
    if (len == -1) {
        sim_error(reply, 17, "ProtocolError", "saslContinue needs a payload");
        return -1;
    }
    if (len < 0)
        goto fail;
    if (a->step == 2) {
        /* The empty exchange of a client that did not ask to skip it. */
        if (len != 0)
            goto fail;
        if (login(srv, a, reply) < 0)
            return -1;
        sim_auth_conn_reset(a);
        sasl_reply(reply, true, "");
        return 0;
    }
    enum sim_scram_mech m = a->mech;
    size_t kl = mech_len(m);
    /* "c=" then the channel binding, "r=" the nonce, then "p=" the proof, last. */
    if (strncmp(msg, "c=", 2) != 0)
        goto fail;
    const char *cb = msg + 2;
    const char *cb_end = strchr(cb, ',');
    if (!cb_end || strncmp(cb_end, ",r=", 3) != 0)
        goto fail;
    /* Without channel binding the value is the gs2 header, "n,," or "y,," in base64. */
    if (!((cb_end - cb == 4) && (strncmp(cb, "biws", 4) == 0 || strncmp(cb, "eSws", 4) == 0)))
        goto fail;
    const char *r = cb_end + 3;
    const char *r_end = strchr(r, ',');
    if (!r_end || strncmp(r_end, ",p=", 3) != 0)
        goto fail;
    if ((size_t)(r_end - r) != strlen(a->nonce) || strncmp(r, a->nonce, strlen(a->nonce)) != 0)
        goto fail;
    const char *proof64 = r_end + 3;
    uint8_t proof[MAX_KEY_LEN + 4];
    if (b64_decode(proof64, strlen(proof64), proof, sizeof(proof)) != (int)kl)
        goto fail;

    struct sim_user *u = user_find(s, a->conv_user, a->conv_db);
    struct sim_cred *c = u ? (m == SIM_SCRAM_SHA1 ? &u->sha1 : &u->sha256) : NULL;
    if (!c || !c->set)
        goto fail; /* dropped (or changed) while the conversation ran */
    char auth_msg[3 * SIM_AUTH_MSG_MAX];
    int am = snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%.*s", a->client_first_bare,
                      a->server_first, (int)(r_end - msg), msg);
    if (am < 0 || (size_t)am >= sizeof(auth_msg))
        goto fail;
    uint8_t sig[MAX_KEY_LEN], client_key[MAX_KEY_LEN], stored[MAX_KEY_LEN], server_sig[MAX_KEY_LEN];
    bool ok = hmac(m, c->stored_key, kl, auth_msg, (size_t)am, sig) == 0;
    for (size_t i = 0; i < kl; i++)
        client_key[i] = proof[i] ^ sig[i];
    ok = ok && digest(m, client_key, kl, stored) == 0;
    ok = ok && CRYPTO_memcmp(stored, c->stored_key, kl) == 0;
    ok = ok && hmac(m, c->server_key, kl, auth_msg, (size_t)am, server_sig) == 0;
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(auth_msg, sizeof(auth_msg));
    if (!ok)
        goto fail;
    char final[128] = "v=";
    if (b64_encode(server_sig, kl, final + 2, sizeof(final) - 2) < 0)
        goto fail;
    if (a->skip_empty) {
        if (login(srv, a, reply) < 0)
            return -1;
        sim_auth_conn_reset(a);
    } else {
        a->step = 2;
    }
    OPENSSL_cleanse(msg, sizeof(msg));
    sasl_reply(reply, a->step == 0, final);
    return 0;
fail:
    OPENSSL_cleanse(msg, sizeof(msg));
    return conv_failed(srv, a, reply);
}

/* --- commands ------------------------------------------------------------------------------ */

static const char *get_utf8(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static void append_roles(bson_t *doc, const char *key, const struct sim_user *u)
{
    bson_t arr, r;
    char k[16];
    const char *ks;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &arr);
    for (int i = 0; i < u->nroles; i++) {
        bson_uint32_to_string((uint32_t)i, &ks, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&arr, ks, &r);
        BSON_APPEND_UTF8(&r, "role", u->roles[i].role);
        BSON_APPEND_UTF8(&r, "db", u->roles[i].db);
        bson_append_document_end(&arr, &r);
    }
    bson_append_array_end(doc, &arr);
}

static void append_mechanisms(bson_t *doc, const char *key, const struct sim_user *u)
{
    bson_t arr;
    uint32_t n = 0;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &arr);
    if (strcmp(u->db, "$external") == 0)
        BSON_APPEND_UTF8(&arr, "0", "external");
    if (u->sha1.set)
        BSON_APPEND_UTF8(&arr, "0", "SCRAM-SHA-1");
    n += u->sha1.set;
    if (u->sha256.set)
        BSON_APPEND_UTF8(&arr, n ? "1" : "0", "SCRAM-SHA-256");
    bson_append_array_end(doc, &arr);
}

static void append_cred(bson_t *doc, const char *key, const struct sim_cred *c, size_t kl)
{
    char b[128];
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(doc, key, &sub);
    BSON_APPEND_INT32(&sub, "iterationCount", c->iterations);
    b64_encode(c->salt, c->salt_len, b, sizeof(b));
    BSON_APPEND_UTF8(&sub, "salt", b);
    b64_encode(c->stored_key, kl, b, sizeof(b));
    BSON_APPEND_UTF8(&sub, "storedKey", b);
    b64_encode(c->server_key, kl, b, sizeof(b));
    BSON_APPEND_UTF8(&sub, "serverKey", b);
    bson_append_document_end(doc, &sub);
}

static void append_user(bson_t *arr, uint32_t i, const struct sim_user *u, bool creds)
{
    char k[16], id[2 * SIM_AUTH_NAME_MAX + 2];
    const char *ks;
    bson_t d;
    bson_uint32_to_string(i, &ks, k, sizeof(k));
    BSON_APPEND_DOCUMENT_BEGIN(arr, ks, &d);
    snprintf(id, sizeof(id), "%s.%s", u->db, u->user);
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_BINARY(&d, "userId", BSON_SUBTYPE_UUID, u->uuid, sizeof(u->uuid));
    BSON_APPEND_UTF8(&d, "user", u->user);
    BSON_APPEND_UTF8(&d, "db", u->db);
    append_roles(&d, "roles", u);
    if (creds) {
        bson_t c;
        BSON_APPEND_DOCUMENT_BEGIN(&d, "credentials", &c);
        if (u->sha1.set)
            append_cred(&c, "SCRAM-SHA-1", &u->sha1, 20);
        if (u->sha256.set)
            append_cred(&c, "SCRAM-SHA-256", &u->sha256, 32);
        bson_append_document_end(&d, &c);
    }
    append_mechanisms(&d, "mechanisms", u);
    bson_append_document_end(arr, &d);
}

/* Parses roles: ["read", {role: "readWrite", db: "x"}, ...]. Returns 0, or -1 with reply set. */
static int parse_roles(const bson_t *cmd, const char *db, struct sim_role *roles, int *n,
                       bson_t *reply)
{
    bson_iter_t it, arr;
    *n = 0;
    if (!bson_iter_init_find(&it, cmd, "roles") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr)) {
        sim_error(reply, 9, "FailedToParse", "\"roles\" must be an array");
        return -1;
    }
    while (bson_iter_next(&arr)) {
        const char *role = NULL, *rdb = db;
        if (BSON_ITER_HOLDS_UTF8(&arr)) {
            role = bson_iter_utf8(&arr, NULL);
        } else if (BSON_ITER_HOLDS_DOCUMENT(&arr)) {
            uint32_t len;
            const uint8_t *data;
            bson_t sub;
            bson_iter_document(&arr, &len, &data);
            if (bson_init_static(&sub, data, len)) {
                role = get_utf8(&sub, "role");
                rdb = get_utf8(&sub, "db");
            }
        }
        if (!role || !rdb) {
            sim_error(reply, 2, "BadValue", "a role must be a name or {role, db}");
            return -1;
        }
        if (!role_exists(role, rdb) || *n >= SIM_AUTH_MAX_ROLES ||
            strlen(rdb) >= SIM_AUTH_NAME_MAX) {
            char msg[256];
            snprintf(msg, sizeof(msg), "Could not find role: %.64s@%.64s", role, rdb);
            sim_error(reply, 31, "RoleNotFound", msg);
            return -1;
        }
        snprintf(roles[*n].role, sizeof(roles[0].role), "%s", role);
        snprintf(roles[*n].db, sizeof(roles[0].db), "%s", rdb);
        (*n)++;
    }
    return 0;
}

/* mechanisms: [...] of createUser/updateUser; both when absent. Returns 0 or -1 (reply set). */
static int parse_mechanisms(const bson_t *cmd, bool *sha1, bool *sha256, bson_t *reply)
{
    bson_iter_t it, arr;
    *sha1 = *sha256 = true;
    if (!bson_iter_init_find(&it, cmd, "mechanisms"))
        return 0;
    *sha1 = *sha256 = false;
    if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr))
        goto bad;
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_UTF8(&arr))
            goto bad;
        enum sim_scram_mech m = mech_parse(bson_iter_utf8(&arr, NULL));
        if (m == SIM_SCRAM_NONE)
            goto bad;
        *(m == SIM_SCRAM_SHA1 ? sha1 : sha256) = true;
    }
    if (*sha1 || *sha256)
        return 0;
bad:
    sim_error(reply, 2, "BadValue", "mechanisms field must be a subset of the server's mechanisms");
    return -1;
}

static void user_not_found(bson_t *reply, const char *user, const char *db)
{
    char msg[320];
    snprintf(msg, sizeof(msg), "Could not find user \"%.128s\" for db \"%.128s\"", user, db);
    sim_error(reply, 11, "UserNotFound", msg);
}

static bool create_or_update_user(struct sim *s, const char *db, const bson_t *cmd, bool create,
                                  bson_t *reply)
{
    const char *name = get_utf8(cmd, create ? "createUser" : "updateUser");
    if (!name || !name_ok(name) || strlen(db) >= SIM_AUTH_NAME_MAX) {
        sim_error(reply, 2, "BadValue", "User name must be a non-empty string");
        return true;
    }
    bson_iter_t it;
    const char *pwd = get_utf8(cmd, "pwd");
    bool has_pwd = bson_iter_init_find(&it, cmd, "pwd");
    if (has_pwd && (!pwd || !pwd[0])) {
        sim_error(reply, 2, "BadValue", "User passwords must not be empty");
        return true;
    }
    bool external = strcmp(db, "$external") == 0;
    if (external && has_pwd) {
        sim_error(reply, 2, "BadValue",
                  "Cannot set the password for users defined on the '$external' database");
        return true;
    }
    if (create && !pwd && !external) {
        sim_error(reply, 2, "BadValue",
                  "Must provide a 'pwd' field for all user documents, except those with "
                  "'$external' as the user's source db");
        return true;
    }
    struct sim_role roles[SIM_AUTH_MAX_ROLES];
    int nroles = 0;
    bool has_roles = bson_iter_init_find(&it, cmd, "roles");
    if (create && !has_roles) {
        sim_error(reply, 40414, "Location40414",
                  "BSON field 'createUser.roles' is missing but a required field");
        return true;
    }
    if (has_roles && parse_roles(cmd, db, roles, &nroles, reply) < 0)
        return true;
    bool sha1, sha256;
    if (parse_mechanisms(cmd, &sha1, &sha256, reply) < 0)
        return true;
    struct sim_user *u = user_find(s, name, db);
    if (create && u) {
        char msg[320];
        snprintf(msg, sizeof(msg), "User \"%.128s@%.128s\" already exists", name, db);
        sim_error(reply, 51003, "Location51003", msg);
        return true;
    }
    if (!create && !u) {
        user_not_found(reply, name, db);
        return true;
    }
    if (!create && bson_iter_init_find(&it, cmd, "mechanisms") && !pwd) {
        /* Mechanisms may only shrink without a new password: the others' verifiers need it. */
        if ((sha1 && !u->sha1.set) || (sha256 && !u->sha256.set)) {
            sim_error(reply, 2, "BadValue",
                      "mechanisms field must be a subset of previously set mechanisms");
            return true;
        }
        if (!sha1)
            OPENSSL_cleanse(&u->sha1, sizeof(u->sha1));
        if (!sha256)
            OPENSSL_cleanse(&u->sha256, sizeof(u->sha256));
    }
    if (create) {
        u = user_add(s, name, db);
        if (!u) {
            sim_error(reply, 1, "InternalError", "out of memory");
            return true;
        }
    }
    if (pwd && set_password(u, pwd, sha1, sha256) < 0) {
        if (create)
            user_remove(s, u);
        sim_error(reply, 1, "InternalError", "cannot derive the credentials");
        return true;
    }
    if (has_roles) {
        memcpy(u->roles, roles, sizeof(roles));
        u->nroles = nroles;
    }
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return true;
}

/* One usersInfo selector: "name" (on db), {user, db}. Appends the matching user, if any. */
static void users_info_one(struct sim *s, const char *db, bson_iter_t *sel, bson_t *arr,
                           uint32_t *n, bool creds)
{
    const char *user = NULL, *udb = db;
    if (BSON_ITER_HOLDS_UTF8(sel)) {
        user = bson_iter_utf8(sel, NULL);
    } else if (BSON_ITER_HOLDS_DOCUMENT(sel)) {
        uint32_t len;
        const uint8_t *data;
        bson_t sub;
        bson_iter_document(sel, &len, &data);
        if (bson_init_static(&sub, data, len)) {
            user = get_utf8(&sub, "user");
            udb = get_utf8(&sub, "db");
        }
    }
    if (!user || !udb)
        return;
    struct sim_user *u = user_find(s, user, udb);
    if (u)
        append_user(arr, (*n)++, u, creds);
}

/* Whether the selector names only the connection's own user (which needs no privilege). */
static bool users_info_self(struct sim_conn_auth *a, const char *db, const bson_t *cmd)
{
    bson_iter_t it;
    if (!a->authenticated || !bson_iter_init_find(&it, cmd, "usersInfo"))
        return false;
    if (BSON_ITER_HOLDS_UTF8(&it))
        return strcmp(bson_iter_utf8(&it, NULL), a->user) == 0 && strcmp(db, a->db) == 0;
    if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t sub;
        const char *u = NULL, *d = NULL;
        bson_iter_recurse(&it, &sub);
        while (bson_iter_next(&sub)) {
            if (strcmp(bson_iter_key(&sub), "user") == 0 && BSON_ITER_HOLDS_UTF8(&sub))
                u = bson_iter_utf8(&sub, NULL);
            else if (strcmp(bson_iter_key(&sub), "db") == 0 && BSON_ITER_HOLDS_UTF8(&sub))
                d = bson_iter_utf8(&sub, NULL);
        }
        return u && d && strcmp(u, a->user) == 0 && strcmp(d, a->db) == 0;
    }
    return false;
}

static bool users_info(struct sim *s, struct sim_conn *conn, const char *db, const bson_t *cmd,
                       bson_t *reply)
{
    bson_iter_t it;
    bool creds = false;
    if (bson_iter_init_find(&it, cmd, "showCredentials"))
        creds = bson_iter_as_bool(&it);
    if (s->opt.auth && !users_info_self(sim_conn_auth(conn), db, cmd) &&
        !user_may(conn_user(s, conn), NEED_USER_ADMIN, db)) {
        unauthorized(reply, db, cmd);
        return true;
    }
    bson_t arr;
    uint32_t n = 0;
    bson_iter_init_find(&it, cmd, "usersInfo");
    BSON_APPEND_ARRAY_BEGIN(reply, "users", &arr);
    if (BSON_ITER_HOLDS_ARRAY(&it)) {
        bson_iter_t sel;
        bson_iter_recurse(&it, &sel);
        while (bson_iter_next(&sel))
            users_info_one(s, db, &sel, &arr, &n, creds);
    } else if (BSON_ITER_HOLDS_UTF8(&it) ||
               (BSON_ITER_HOLDS_DOCUMENT(&it) && !bson_has_field(cmd, "usersInfo.forAllDBs"))) {
        users_info_one(s, db, &it, &arr, &n, creds);
    } else {
        /* 1: every user of this database; {forAllDBs: true}: every user (admin only). */
        bool all = BSON_ITER_HOLDS_DOCUMENT(&it);
        if (all && s->opt.auth && !user_may(conn_user(s, conn), NEED_USER_ADMIN, "admin") &&
            !(strcmp(db, "admin") == 0 && user_may(conn_user(s, conn), NEED_USER_ADMIN, db))) {
            bson_append_array_end(reply, &arr);
            unauthorized(reply, db, cmd);
            return true;
        }
        for (struct sim_user *u = s->users; u; u = u->next)
            if (all || strcmp(u->db, db) == 0)
                append_user(&arr, n++, u, creds);
    }
    bson_append_array_end(reply, &arr);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return true;
}

static bool grant_or_revoke(struct sim *s, const char *db, const bson_t *cmd, bool grant,
                            bson_t *reply)
{
    const char *name = get_utf8(cmd, grant ? "grantRolesToUser" : "revokeRolesFromUser");
    struct sim_user *u = name ? user_find(s, name, db) : NULL;
    if (!u) {
        user_not_found(reply, name ? name : "", db);
        return true;
    }
    struct sim_role roles[SIM_AUTH_MAX_ROLES];
    int n;
    if (parse_roles(cmd, db, roles, &n, reply) < 0)
        return true;
    for (int i = 0; i < n; i++) {
        int at = -1;
        for (int j = 0; j < u->nroles; j++)
            if (strcmp(u->roles[j].role, roles[i].role) == 0 &&
                strcmp(u->roles[j].db, roles[i].db) == 0)
                at = j;
        if (grant && at < 0 && u->nroles < SIM_AUTH_MAX_ROLES)
            u->roles[u->nroles++] = roles[i];
        else if (!grant && at >= 0)
            u->roles[at] = u->roles[--u->nroles];
    }
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return true;
}

static void connection_status(struct sim *s, struct sim_conn *conn, bson_t *reply)
{
    struct sim_conn_auth *a = sim_conn_auth(conn);
    struct sim_user *u = conn_user(s, conn);
    bson_t ai, arr, d;
    BSON_APPEND_DOCUMENT_BEGIN(reply, "authInfo", &ai);
    BSON_APPEND_ARRAY_BEGIN(&ai, "authenticatedUsers", &arr);
    if (a->authenticated) {
        BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &d);
        BSON_APPEND_UTF8(&d, "user", a->user);
        BSON_APPEND_UTF8(&d, "db", a->db);
        bson_append_document_end(&arr, &d);
    }
    bson_append_array_end(&ai, &arr);
    if (u) {
        append_roles(&ai, "authenticatedUserRoles", u);
    } else {
        BSON_APPEND_ARRAY_BEGIN(&ai, "authenticatedUserRoles", &arr);
        bson_append_array_end(&ai, &arr);
    }
    bson_append_document_end(reply, &ai);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

/*
 * MONGODB-X509: the user is the subject of the client certificate the TLS handshake verified,
 * and must exist on $external. Returns 0 with {dbname, user} appended to out, or -1 with the
 * error mongod gives there (UserNotFound passes through; anything else is 18).
 */
static int x509_authenticate(struct sim_server *srv, struct sim_conn *conn, const char *db,
                             const bson_t *cmd, bson_t *out)
{
    struct sim_conn_auth *a = sim_conn_auth(conn);
    const char *mech = get_utf8(cmd, "mechanism");
    if (!mech || strcmp(mech, "MONGODB-X509") != 0)
        return mech_unavailable(out, mech ? mech : "");
    char subject[SIM_AUTH_NAME_MAX];
    const char *user = get_utf8(cmd, "user");
    if (strcmp(db, "$external") != 0 || !sim_conn_peer_subject(conn, subject, sizeof(subject)) ||
        (user && strcmp(user, subject) != 0)) {
        auth_failed(out);
        srv->auth_stats.failures++;
        return -1;
    }
    if (!user_find(srv->sim, subject, "$external")) {
        user_not_found(out, subject, "$external");
        srv->auth_stats.failures++;
        return -1;
    }
    sim_auth_conn_reset(a);
    snprintf(a->conv_user, sizeof(a->conv_user), "%s", subject);
    snprintf(a->conv_db, sizeof(a->conv_db), "%s", "$external");
    int rc = login(srv, a, out);
    sim_auth_conn_reset(a);
    if (rc < 0)
        return -1;
    BSON_APPEND_UTF8(out, "dbname", "$external");
    BSON_APPEND_UTF8(out, "user", subject);
    return 0;
}

bool sim_auth_command(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                      const char *name, bson_t *reply)
{
    struct sim *s = srv->sim;
    struct sim_conn_auth *a = sim_conn_auth(conn);
    const char *db = req->db ? req->db : "admin";
    const bson_t *cmd = &req->cmd;
    if (strcmp(name, "saslStart") == 0) {
        const char *mech = get_utf8(cmd, "mechanism");
        if (!mech) {
            sim_error(reply, 17, "ProtocolError", "saslStart needs a mechanism");
            return true;
        }
        sasl_start(srv, a, db, mech, cmd, reply);
        return true;
    }
    if (strcmp(name, "saslContinue") == 0) {
        bson_iter_t it;
        if (a->step == 0) {
            sim_error(reply, 17, "ProtocolError", "No SASL session state found");
            return true;
        }
        if (!bson_iter_init_find(&it, cmd, "conversationId") || !BSON_ITER_HOLDS_NUMBER(&it) ||
            bson_iter_as_int64(&it) != CONVERSATION_ID) {
            sim_auth_conn_reset(a);
            sim_error(reply, 17, "ProtocolError", "sasl: Mismatched conversation id");
            return true;
        }
        sasl_continue(srv, a, cmd, reply);
        return true;
    }
    if (strcmp(name, "authenticate") == 0) {
        if (x509_authenticate(srv, conn, db, cmd, reply) == 0)
            BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "logout") == 0) {
        sim_auth_conn_reset(a);
        a->authenticated = false;
        a->user[0] = a->db[0] = a->owner[0] = '\0';
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "connectionStatus") == 0) {
        connection_status(s, conn, reply);
        return true;
    }
    if (strcmp(name, "createUser") == 0 || strcmp(name, "updateUser") == 0)
        return create_or_update_user(s, db, cmd, strcmp(name, "createUser") == 0, reply);
    if (strcmp(name, "dropUser") == 0) {
        const char *user = get_utf8(cmd, "dropUser");
        struct sim_user *u = user ? user_find(s, user, db) : NULL;
        if (!u) {
            user_not_found(reply, user ? user : "", db);
            return true;
        }
        user_remove(s, u);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "dropAllUsersFromDatabase") == 0) {
        int32_t n = 0;
        struct sim_user *u = s->users;
        while (u) {
            struct sim_user *next = u->next;
            if (strcmp(u->db, db) == 0) {
                user_remove(s, u);
                n++;
            }
            u = next;
        }
        BSON_APPEND_INT32(reply, "n", n);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return true;
    }
    if (strcmp(name, "grantRolesToUser") == 0 || strcmp(name, "revokeRolesFromUser") == 0)
        return grant_or_revoke(s, db, cmd, strcmp(name, "grantRolesToUser") == 0, reply);
    if (strcmp(name, "usersInfo") == 0)
        return users_info(s, conn, db, cmd, reply);
    return false;
}

void sim_auth_hello(struct sim_server *srv, struct sim_conn *conn, const bson_t *cmd, bson_t *reply)
{
    struct sim *s = srv->sim;
    bson_iter_t it;
    const char *mechs = get_utf8(cmd, "saslSupportedMechs");
    if (mechs) {
        /* "db.user": the database is what comes before the first dot. */
        const char *dot = strchr(mechs, '.');
        char db[SIM_AUTH_NAME_MAX];
        if (dot && (size_t)(dot - mechs) < sizeof(db)) {
            memcpy(db, mechs, (size_t)(dot - mechs));
            db[dot - mechs] = '\0';
            struct sim_user *u = user_find(s, dot + 1, db);
            if (u)
                append_mechanisms(reply, "saslSupportedMechs", u);
        }
    }
    if (bson_iter_init_find(&it, cmd, "speculativeAuthenticate") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t spec;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&spec, data, len))
            return;
        const char *mech = get_utf8(&spec, "mechanism");
        const char *db = get_utf8(&spec, "db");
        if (!mech)
            return;
        if (bson_has_field(&spec, "authenticate")) {
            /* Drivers leave the database out of an X.509 attempt: mongod takes $external. */
            if (!db)
                db = "$external";
            bson_t out = BSON_INITIALIZER;
            if (x509_authenticate(srv, conn, db, &spec, &out) == 0) {
                srv->auth_stats.speculative++;
                BSON_APPEND_DOCUMENT(reply, "speculativeAuthenticate", &out);
            }
            bson_destroy(&out);
            return;
        }
        if (!db || !bson_has_field(&spec, "saslStart"))
            return;
        /* A failed speculative first step is not reported: the field is left out and the
         * driver starts over with saslStart, which then gets the error. */
        bson_t out = BSON_INITIALIZER;
        if (sasl_start(srv, sim_conn_auth(conn), db, mech, &spec, &out) == 0) {
            srv->auth_stats.speculative++;
            bson_t sub;
            bson_iter_t o;
            BSON_APPEND_DOCUMENT_BEGIN(reply, "speculativeAuthenticate", &sub);
            bson_iter_init(&o, &out);
            while (bson_iter_next(&o))
                if (strcmp(bson_iter_key(&o), "ok") != 0)
                    bson_append_iter(&sub, NULL, 0, &o);
            bson_append_document_end(reply, &sub);
        }
        bson_destroy(&out);
    }
}
