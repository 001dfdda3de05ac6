/*
 * auth.c: logins to mongolb and mongolb's logins to the servers (see auth.h for the modes).
 *
 * A client's SCRAM conversation is run here with scram.c's server side against the user's
 * verifier (auth_file, or usersInfo in passthrough); a backend connection's login is run with
 * scram.c's client side, with the service password (whose ClientKey is kept after the first
 * login, so PBKDF2 runs once) or with the ClientKey recovered from the application's own login.
 * Nothing here touches a socket: client.c and pool.c carry the messages.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth_parse.h"
#include "log.h"
#include "mongo_errors.h"
#include "proxy.h"

/* Peers whose failed logins are counted at once; the oldest entry gives way to a new peer. */
#define AUTH_FAIL_SLOTS 1024
/* A peer's count of failures is forgotten after this long without one. */
#define AUTH_FAIL_FORGET_MS (10 * 60 * 1000)
/* Failures before replies are delayed, and the first delay. */
#define AUTH_FAIL_FREE       2
#define AUTH_FAIL_FIRST_MS   125
#define AUTH_CONVERSATION_ID 1

struct auth_fail {
    char ip[48];
    int count;
    int64_t last_ms;
};

struct auth_login {
    struct scram_server *ss; /* a SCRAM conversation in progress */
    enum scram_mech mech;
    bool ss_done;         /* proof checked; an empty saslContinue may follow */
    bool skip_empty;      /* the client asked for skipEmptyExchange */
    bool unknown_user;    /* the conversation runs on made-up values: it will fail */
    bool cluster_monitor; /* roles of the user the conversation is for */
    bool cached;          /* the verifier came from the user's cached usersInfo answer */
    char db[AUTHFILE_MAX_DB + 1];
    char user[SCRAM_MAX_USER + 1]; /* the conversation's user (scram.c forgets it on a failure) */
    struct scram_verifier v;       /* the verifier the conversation checks against */
    /* A verifier fetch with usersInfo (passthrough with service_user). */
    char fetch_db[AUTHFILE_MAX_DB + 1];
    char fetch_user[SCRAM_MAX_USER + 1];
    bool fetching; /* a usersInfo for fetch_db.fetch_user is wanted or under way */
    bool fetched;  /* answer is usersInfo's for fetch_db.fetch_user */
    struct auth_users_info answer;
};

struct auth_state {
    struct authfile file;
    bool have_file;
    char password[SCRAM_MAX_PASSWORD + 1]; /* service_user's, wiped on free */
    bool have_password;
    /* The service user's ClientKey after a first login with the password. */
    bool svc_have_key;
    struct scram_verifier svc_v;
    uint8_t svc_key[SCRAM_MAX_KEY];
    size_t svc_key_len;
    struct list users; /* struct auth_user.link */
    size_t n_users;
    uint32_t next_uid;
    struct auth_fail fails[AUTH_FAIL_SLOTS];
    uint64_t logins, login_failures, refused, fetches, backend_logins, backend_login_failures;
    uint64_t cache_hits, cache_drops;
};

/* --- files ----------------------------------------------------------------------------------- */

/* Reads the first line of a password file that only its owner may read. */
static int read_password_file(const char *path, char *out, size_t cap, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int open_errno = errno;
        snprintf(err, err_len, "cannot open service_password_file %s: %s", path,
                 strerror(open_errno));
        return -open_errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_len, "service_password_file %s is not a regular file", path);
        return -EINVAL;
    }
    if (st.st_mode & 077) {
        close(fd);
        snprintf(err, err_len,
                 "service_password_file %s may be read by group or others (mode %03o); chmod 600 "
                 "it",
                 path, (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    char buf[SCRAM_MAX_PASSWORD + 2];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int read_errno = errno; /* close() may change errno */
    close(fd);
    if (n < 0) {
        snprintf(err, err_len, "cannot read service_password_file %s: %s", path,
                 strerror(read_errno));
        return -read_errno;
    }
    buf[n] = '\0';
    size_t len = strcspn(buf, "\r\n");
    if (len == 0 || len > SCRAM_MAX_PASSWORD || len + 1 > cap) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, err_len, "service_password_file %s: the first line must hold the password",
                 path);
        return -EINVAL;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int auth_check_files(const struct mlb_config *cfg, char *err, size_t err_len)
{
    err[0] = '\0';
    if (cfg->auth_mode == MLB_AUTH_OFF)
        return 0;
    if (cfg->auth_file) {
        struct authfile f = {0};
        int rc = authfile_load(cfg->auth_file, 1, AUTHFILE_DEFAULT_ENTRIES, &f, err, err_len);
        authfile_free(&f);
        if (rc < 0)
            return rc;
    }
    if (cfg->service_password_file) {
        char pw[SCRAM_MAX_PASSWORD + 1];
        int rc = read_password_file(cfg->service_password_file, pw, sizeof(pw), err, err_len);
        OPENSSL_cleanse(pw, sizeof(pw));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Loads the files of cfg into a (fresh or running) state. */
static int load_files(struct auth_state *a, const struct mlb_config *cfg, char *err, size_t len)
{
    struct authfile f = {0};
    bool have_file = false;
    if (cfg->auth_file) {
        int rc = authfile_load(cfg->auth_file, 1, AUTHFILE_DEFAULT_ENTRIES, &f, err, len);
        if (rc < 0)
            return rc;
        have_file = true;
    }
    char pw[SCRAM_MAX_PASSWORD + 1] = "";
    bool have_pw = false;
    if (cfg->service_password_file) {
        int rc = read_password_file(cfg->service_password_file, pw, sizeof(pw), err, len);
        if (rc < 0) {
            authfile_free(&f);
            return rc;
        }
        have_pw = true;
    }
    authfile_free(&a->file);
    a->file = f;
    a->have_file = have_file;
    /* Secrets are compared in constant time, as everywhere else (both buffers are the same size
     * and zero-filled past the password). */
    if (!have_pw || CRYPTO_memcmp(pw, a->password, sizeof(pw)) != 0) {
        /* A new password: the key derived from the old one is no longer ours to use. */
        a->svc_have_key = false;
        OPENSSL_cleanse(a->svc_key, sizeof(a->svc_key));
    }
    OPENSSL_cleanse(a->password, sizeof(a->password));
    memcpy(a->password, pw, sizeof(pw));
    a->have_password = have_pw;
    OPENSSL_cleanse(pw, sizeof(pw));
    return 0;
}

int auth_init(struct proxy *p, char *err, size_t err_len)
{
    struct auth_state *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    list_init(&a->users);
    p->auth = a;
    if (p->cfg.auth_mode == MLB_AUTH_OFF)
        return 0;
    return load_files(a, &p->cfg, err, err_len);
}

static void flush_infos(struct proxy *p);

void auth_reload(struct proxy *p)
{
    if (p->cfg.auth_mode == MLB_AUTH_OFF)
        return;
    /* A reload is also how an operator makes a password change or dropUser count at once: every
     * login after it reads its verifier from the cluster again. */
    flush_infos(p);
    char err[2048];
    if (load_files(p->auth, &p->cfg, err, sizeof(err)) < 0)
        log_error(NULL, "reload: keeping the running auth_file and password: %s", err);
    else
        log_info(NULL, "reload: auth_file%s read again (%zu verifiers)",
                 p->cfg.service_password_file ? " and service_password_file" : "",
                 p->auth->file.count);
}

static void user_free(struct auth_user *au)
{
    OPENSSL_cleanse(au, sizeof(*au));
    free(au);
}

void auth_free(struct proxy *p)
{
    struct auth_state *a = p->auth;
    if (!a)
        return;
    authfile_free(&a->file);
    while (!list_empty(&a->users)) {
        struct auth_user *au = list_entry(a->users.next, struct auth_user, link);
        list_remove(&au->link);
        user_free(au);
    }
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
    p->auth = NULL;
}

/* --- users ---------------------------------------------------------------------------------- */

void auth_user_ref(struct auth_user *au)
{
    au->refs++;
}

/* Frees users nobody holds beyond max_cached_users, the least recently released first. */
static void trim_cache(struct proxy *p)
{
    struct auth_state *a = p->auth;
    struct list *e = a->users.next;
    while (a->n_users > (size_t)p->cfg.max_cached_users && e != &a->users) {
        struct auth_user *au = list_entry(e, struct auth_user, link);
        e = e->next;
        if (au->refs > 0)
            continue;
        list_remove(&au->link);
        a->n_users--;
        user_free(au);
    }
}

void auth_user_unref(struct proxy *p, struct auth_user *au)
{
    if (!au || --au->refs > 0)
        return;
    /* Most recently released at the back: trimming starts at the front. */
    list_remove(&au->link);
    list_push_back(&p->auth->users, &au->link);
    trim_cache(p);
}

/* The user (db, user) when known, else NULL. Not referenced. */
static struct auth_user *user_find(struct proxy *p, const char *db, const char *user)
{
    struct auth_state *a = p->auth;
    for (struct list *e = a->users.next; e != &a->users; e = e->next) {
        struct auth_user *au = list_entry(e, struct auth_user, link);
        if (strcmp(au->db, db) == 0 && strcmp(au->user, user) == 0)
            return au;
    }
    return NULL;
}

/* The user (db, user), created when unknown; NULL when out of memory. Not referenced. */
static struct auth_user *user_get(struct proxy *p, const char *db, const char *user)
{
    struct auth_state *a = p->auth;
    struct auth_user *au = user_find(p, db, user);
    if (au)
        return au;
    au = calloc(1, sizeof(*au));
    if (!au)
        return NULL;
    au->uid = ++a->next_uid;
    snprintf(au->db, sizeof(au->db), "%s", db);
    snprintf(au->user, sizeof(au->user), "%s", user);
    list_init(&au->link);
    list_push_back(&a->users, &au->link);
    a->n_users++;
    return au;
}

/* --- cached verifiers (passthrough with service_user) ----------------------------------------
 *
 * usersInfo's answer for a user is kept in its struct auth_user, so that a login within
 * verifier_cache_ms of the last read costs no round trip to the cluster. The price is that for
 * that long a password changed (or a user dropped) in the cluster may still pass mongolb's own
 * check; three rules shorten it. A proof that fails against a cached verifier drops it, so that
 * the next attempt reads it again (the attempt itself cannot be saved: the salt and iteration
 * count it was answered with are the cached ones, and the client's proof was computed from them,
 * so a fresh verifier cannot check that proof). A server that refuses the key recovered with it,
 * or whose salt or iteration count differ from it, drops it (drop_key). A read that finds no such
 * user drops it. Only known users are cached: a name that does not exist is read every time, so
 * that made-up names cannot push real users out of the cache, and a user just created can log in
 * at once. */

static void drop_info(struct auth_user *au)
{
    au->have_info = false;
    au->info_ms = 0;
    OPENSSL_cleanse(&au->info, sizeof(au->info));
}

static void flush_infos(struct proxy *p)
{
    struct auth_state *a = p->auth;
    for (struct list *e = a->users.next; e != &a->users; e = e->next)
        drop_info(list_entry(e, struct auth_user, link));
}

/* The cached usersInfo answer of db.user while it is fresh, else NULL (an expired one is wiped). */
static const struct auth_users_info *cached_info(struct proxy *p, const char *db, const char *user)
{
    int64_t ttl = p->cfg.verifier_cache_ms;
    struct auth_user *au = user_find(p, db, user);
    if (!au || !au->have_info)
        return NULL;
    if (ttl <= 0 || proxy_now(p) - au->info_ms >= ttl) {
        drop_info(au);
        return NULL;
    }
    return &au->info;
}

/* A cached verifier proved wrong (or its user was not found): the next login reads it again. */
static void forget_info(struct proxy *p, const char *db, const char *user)
{
    struct auth_user *au = user_find(p, db, user);
    if (au && au->have_info) {
        drop_info(au);
        p->auth->cache_drops++;
    }
}

/* Keeps a known user's usersInfo answer for later logins. */
static void cache_info(struct proxy *p, const char *db, const char *user,
                       const struct auth_users_info *info)
{
    if (p->cfg.verifier_cache_ms <= 0)
        return;
    struct auth_user *au = user_get(p, db, user);
    if (!au)
        return; /* out of memory: the next login reads it again */
    au->info = *info;
    au->info_ms = proxy_now(p);
    au->have_info = true;
    trim_cache(p); /* a new entry may take the cache past max_cached_users */
}

uint32_t auth_owner(const struct auth_session *s)
{
    return s->au ? s->au->uid : 0;
}

struct auth_user *auth_pool_user(const struct proxy *p, const struct auth_session *s)
{
    return p->cfg.auth_mode == MLB_AUTH_PASSTHROUGH ? s->au : NULL;
}

/* The session's login state, allocated when a login starts; NULL when out of memory. */
static struct auth_login *login_state(struct auth_session *s)
{
    if (!s->login)
        s->login = calloc(1, sizeof(*s->login));
    return s->login;
}

static void login_free(struct auth_session *s)
{
    struct auth_login *l = s->login;
    if (!l)
        return;
    scram_server_free(l->ss);
    OPENSSL_cleanse(l, sizeof(*l));
    free(l);
    s->login = NULL;
}

/* Frees the login state once it holds nothing more: no conversation and no verifier fetch. */
static void settle(struct auth_session *s)
{
    struct auth_login *l = s->login;
    if (l && !l->ss && !l->fetching && !l->fetched)
        login_free(s);
}

static void reset_conversation(struct auth_login *l)
{
    scram_server_free(l->ss);
    l->ss = NULL;
    l->ss_done = false;
    scram_verifier_wipe(&l->v);
}

static void end_conversation(struct auth_session *s)
{
    if (!s->login)
        return;
    reset_conversation(s->login);
    settle(s);
}

/* The session's fetched answer serves one login only; later logins find it in the user cache. */
static void forget_fetch(struct auth_login *l)
{
    l->fetching = false;
    l->fetched = false;
    OPENSSL_cleanse(&l->answer, sizeof(l->answer));
}

/* Asks for the verifier of db.user to be read first. */
static void want_fetch(struct auth_login *l, const char *db, const char *user)
{
    forget_fetch(l);
    snprintf(l->fetch_db, sizeof(l->fetch_db), "%s", db);
    snprintf(l->fetch_user, sizeof(l->fetch_user), "%s", user);
    l->fetching = true;
}

/* Whether l holds usersInfo's answer for db.user. */
static bool have_fetched(const struct auth_login *l, const char *db, const char *user)
{
    return l && l->fetched && strcmp(l->fetch_db, db) == 0 && strcmp(l->fetch_user, user) == 0;
}

const char *auth_fetch_name(const struct auth_session *s, char *buf, size_t len)
{
    if (s->login)
        snprintf(buf, len, "%s@%s", s->login->fetch_user, s->login->fetch_db);
    else
        snprintf(buf, len, "?");
    return buf;
}

void auth_fetch_abandon(struct auth_session *s)
{
    if (!s->login)
        return;
    forget_fetch(s->login);
    settle(s);
}

void auth_session_end(struct proxy *p, struct auth_session *s)
{
    login_free(s);
    if (s->au) {
        auth_user_unref(p, s->au);
        s->au = NULL;
    }
}

/* --- failed logins ---------------------------------------------------------------------------- */

static struct auth_fail *fail_slot(struct auth_state *a, const char *ip, bool create, int64_t now)
{
    struct auth_fail *oldest = &a->fails[0];
    for (int i = 0; i < AUTH_FAIL_SLOTS; i++) {
        struct auth_fail *f = &a->fails[i];
        if (f->ip[0] && strcmp(f->ip, ip) == 0)
            return f;
        if (!f->ip[0] || f->last_ms < oldest->last_ms || (oldest->ip[0] && !f->ip[0]))
            oldest = f;
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->ip, sizeof(oldest->ip), "%s", ip);
    oldest->last_ms = now;
    return oldest;
}

int64_t auth_failure_delay(struct proxy *p, const char *ip)
{
    struct auth_state *a = p->auth;
    int64_t now = proxy_now(p);
    a->login_failures++;
    struct auth_fail *f = fail_slot(a, ip, true, now);
    if (now - f->last_ms > AUTH_FAIL_FORGET_MS)
        f->count = 0;
    f->count++;
    f->last_ms = now;
    int64_t d = auth_backoff_ms(f->count, p->cfg.login_failure_delay_ms);
    if (d > 0 && f->count == AUTH_FAIL_FREE + 1)
        log_warn(NULL, "%s: %d failed logins in a row; its replies are now delayed", ip, f->count);
    return d;
}

int64_t auth_backoff_ms(int count, int64_t max)
{
    if (count <= AUTH_FAIL_FREE || max <= 0)
        return 0;
    int shift = count - AUTH_FAIL_FREE - 1;
    int64_t d = shift > 20 ? max : (int64_t)AUTH_FAIL_FIRST_MS << shift;
    return d < max ? d : max;
}

void auth_login_ok(struct proxy *p, const char *ip)
{
    struct auth_state *a = p->auth;
    a->logins++;
    struct auth_fail *f = fail_slot(a, ip, false, 0);
    if (f)
        memset(f, 0, sizeof(*f));
}

/* --- the client side: SASL commands ------------------------------------------------------------
 */

static void error_doc(bson_t *reply, int code, const char *msg)
{
    status_build_error(reply, code, mongo_error_name(code), msg);
}

static enum auth_result auth_failed(struct auth_session *s, bson_t *reply)
{
    end_conversation(s);
    /* One message for a wrong password and an unknown user, so that names cannot be probed. */
    error_doc(reply, MONGO_ERR_AUTHENTICATION_FAILED, "Authentication failed.");
    return AUTH_FAILED;
}

/* The verifier of (db, user, mech) from the auth_file or a fetch; NULL when unknown. *fetch is
 * set when it must be fetched first. */
static const struct scram_verifier *find_verifier(struct proxy *p, struct auth_login *l,
                                                  const char *db, const char *user,
                                                  enum scram_mech mech, bool *fetch)
{
    struct auth_state *a = p->auth;
    *fetch = false;
    l->cluster_monitor = false;
    l->cached = false;
    if (a->have_file) {
        const struct scram_verifier *v = authfile_lookup(&a->file, db, user, mech);
        if (v || p->cfg.auth_mode == MLB_AUTH_SERVICE || !p->cfg.service_user[0])
            return v;
    }
    if (p->cfg.auth_mode != MLB_AUTH_PASSTHROUGH || !p->cfg.service_user[0])
        return NULL;
    if (!have_fetched(l, db, user)) {
        /* A cached answer serves only if it has this mechanism: one without it may be older than
         * the user's credentials, so it is read again rather than failed on. */
        const struct auth_users_info *ci = cached_info(p, db, user);
        if (!ci || !(ci->mechs & (1u << mech))) {
            want_fetch(l, db, user);
            *fetch = true;
            return NULL;
        }
        l->cached = true;
        p->auth->cache_hits++;
        l->cluster_monitor = ci->monitor;
        return &ci->v[mech];
    }
    l->cluster_monitor = l->answer.monitor;
    return (l->answer.mechs & (1u << mech)) ? &l->answer.v[mech] : NULL;
}

static const char off_message[] =
    "mongolb: authentication is turned off ([auth] mode = off), so mongolb takes no credentials; "
    "remove them from the connection string, or set [auth] mode = service or passthrough";

/* saslStart, in a command or inside hello's speculativeAuthenticate. */
static enum auth_result sasl_start(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                                   const char *db, bson_t *reply)
{
    struct auth_sasl_cmd sc;
    auth_parse_sasl(cmd, &sc);
    enum scram_mech mech;
    if (scram_mech_parse(sc.mechanism, sc.mechanism_len, &mech) < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "mongolb: mechanism '%.40s' is not available; use SCRAM-SHA-256 or SCRAM-SHA-1",
                 sc.mechanism);
        error_doc(reply, MONGO_ERR_MECHANISM_UNAVAILABLE, msg);
        return AUTH_REPLY;
    }
    if (!sc.has_payload) {
        error_doc(reply, MONGO_ERR_PROTOCOL_ERROR, "saslStart without a payload");
        return AUTH_REPLY;
    }
    struct auth_login *l = login_state(s);
    if (!l) {
        error_doc(reply, MONGO_ERR_AUTHENTICATION_FAILED, "mongolb: out of memory");
        return AUTH_REPLY;
    }
    l->skip_empty = sc.skip_empty;
    reset_conversation(l);
    l->ss = scram_server_new(mech);
    if (!l->ss) {
        end_conversation(s);
        error_doc(reply, MONGO_ERR_AUTHENTICATION_FAILED, "mongolb: out of memory");
        return AUTH_REPLY;
    }
    l->mech = mech;
    int rc = scram_server_start(l->ss, sc.payload, sc.payload_len);
    if (rc < 0) {
        end_conversation(s);
        error_doc(reply, scram_error_code(rc), scram_strerror(rc));
        return AUTH_REPLY;
    }
    const char *user = scram_server_user(l->ss);
    if (strlen(db) > AUTHFILE_MAX_DB)
        return auth_failed(s, reply);
    snprintf(l->db, sizeof(l->db), "%s", db);
    snprintf(l->user, sizeof(l->user), "%s", user);
    bool fetch;
    const struct scram_verifier *v = find_verifier(p, l, db, user, mech, &fetch);
    if (fetch) {
        reset_conversation(l); /* the login state stays for the fetch */
        return AUTH_FETCH;
    }
    /* An unknown user gets a made-up salt and count from scram.c: the conversation fails at the
     * proof, as a wrong password does, so user names cannot be probed. */
    if (v)
        l->v = *v;
    l->unknown_user = v == NULL;
    forget_fetch(l);
    uint8_t out[SCRAM_MAX_MSG];
    size_t out_len;
    rc = scram_server_first(l->ss, v ? &l->v : NULL, out, sizeof(out), &out_len);
    if (rc < 0)
        return auth_failed(s, reply);
    BSON_APPEND_INT32(reply, "conversationId", AUTH_CONVERSATION_ID);
    BSON_APPEND_BOOL(reply, "done", false);
    BSON_APPEND_BINARY(reply, "payload", BSON_SUBTYPE_BINARY, out, (uint32_t)out_len);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    return AUTH_REPLY;
}

/* The proof was good: the session is logged in, and in passthrough the user's key is kept. */
static int login(struct proxy *p, struct auth_session *s)
{
    struct auth_login *l = s->login;
    const char *user = scram_server_user(l->ss);
    struct auth_user *au = user_get(p, l->db, user);
    if (!au)
        return -ENOMEM;
    if (p->cfg.auth_mode == MLB_AUTH_PASSTHROUGH) {
        uint8_t key[SCRAM_MAX_KEY];
        size_t key_len;
        if (scram_server_client_key(l->ss, key, &key_len) == 0) {
            /* The verifier this login was checked against is the one the key belongs to. */
            au->v = l->v;
            memcpy(au->key, key, key_len);
            au->key_len = key_len;
            au->have_key = true;
            OPENSSL_cleanse(key, sizeof(key));
        }
    }
    au->cluster_monitor = l->cluster_monitor;
    auth_user_ref(au);
    if (s->au)
        auth_user_unref(p, s->au);
    s->au = au;
    return 0;
}

static enum auth_result sasl_continue(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                                      bson_t *reply)
{
    struct auth_sasl_cmd sc;
    auth_parse_sasl(cmd, &sc);
    struct auth_login *l = s->login;
    if (!l || !l->ss || !sc.has_conversation || sc.conversation != AUTH_CONVERSATION_ID) {
        error_doc(reply, MONGO_ERR_PROTOCOL_ERROR, "No SASL session state found");
        return AUTH_REPLY;
    }
    if (l->ss_done) {
        /* The empty last step of a client that did not ask for skipEmptyExchange. */
        end_conversation(s);
        BSON_APPEND_INT32(reply, "conversationId", AUTH_CONVERSATION_ID);
        BSON_APPEND_BOOL(reply, "done", true);
        BSON_APPEND_BINARY(reply, "payload", BSON_SUBTYPE_BINARY, (const uint8_t *)"", 0);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return AUTH_REPLY;
    }
    if (!sc.has_payload) {
        end_conversation(s);
        error_doc(reply, MONGO_ERR_PROTOCOL_ERROR, "saslContinue without a payload");
        return AUTH_REPLY;
    }
    uint8_t out[SCRAM_MAX_MSG];
    size_t out_len;
    int rc = scram_server_final(l->ss, sc.payload, sc.payload_len, out, sizeof(out), &out_len);
    if (rc == SCRAM_EPROTO || rc == SCRAM_ENOTSUP) {
        end_conversation(s);
        error_doc(reply, scram_error_code(rc), scram_strerror(rc));
        return AUTH_REPLY;
    }
    if (rc < 0 && l->cached) {
        /* Perhaps the password was changed in the cluster since the verifier was read: the next
         * attempt reads it again. This one cannot be retried with a fresh verifier, since the
         * client computed its proof from the cached salt and iteration count it was sent. */
        log_info(NULL,
                 "a login of %s@%s failed against its cached verifier: the next one reads "
                 "it from the cluster again",
                 l->user, l->db);
        forget_info(p, l->db, l->user);
    }
    if (rc < 0 || login(p, s) < 0)
        return auth_failed(s, reply);
    BSON_APPEND_INT32(reply, "conversationId", AUTH_CONVERSATION_ID);
    BSON_APPEND_BOOL(reply, "done", l->skip_empty);
    BSON_APPEND_BINARY(reply, "payload", BSON_SUBTYPE_BINARY, out, (uint32_t)out_len);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
    if (l->skip_empty)
        end_conversation(s);
    else
        l->ss_done = true; /* the login state stays for the empty last step */
    return AUTH_REPLY;
}

enum auth_result auth_command(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                              const char *db, bson_t *reply)
{
    const char *name = wire_command_name(cmd);
    if (!name)
        name = "";
    if (strcmp(name, "logout") == 0) {
        auth_session_end(p, s);
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return AUTH_REPLY;
    }
    if (p->cfg.auth_mode == MLB_AUTH_OFF) {
        error_doc(reply, MONGO_ERR_AUTHENTICATION_FAILED, off_message);
        return AUTH_REPLY;
    }
    if (strcmp(name, "authenticate") == 0) {
        error_doc(reply, MONGO_ERR_MECHANISM_UNAVAILABLE,
                  "mongolb: applications log in with SCRAM-SHA-256 or SCRAM-SHA-1; MONGODB-X509 "
                  "and other mechanisms are not available through mongolb");
        return AUTH_REPLY;
    }
    if (strcmp(name, "saslStart") == 0)
        return sasl_start(p, s, cmd, db, reply);
    return sasl_continue(p, s, cmd, reply);
}

enum auth_result auth_hello(struct proxy *p, struct auth_session *s, const bson_t *cmd,
                            bson_t *reply)
{
    if (p->cfg.auth_mode == MLB_AUTH_OFF)
        return AUTH_REPLY; /* no mechanisms, no speculative answer: the driver's saslStart gets
                              the error that names the setting */
    struct auth_hello_login h;
    auth_parse_hello(cmd, &h);
    /* Mechanisms first: a fetch it needs serves the speculative first step too. */
    if (h.mechs_name_ok) {
        const char *db = h.mechs_db, *user = h.mechs_user;
        unsigned mechs = p->auth->have_file ? authfile_mechs(&p->auth->file, db, user) : 0;
        if (!mechs && p->cfg.auth_mode == MLB_AUTH_PASSTHROUGH && p->cfg.service_user[0]) {
            const struct auth_users_info *ci = NULL;
            if (have_fetched(s->login, db, user)) {
                /* The answer stays for the saslStart that follows. */
                mechs = s->login->answer.mechs;
            } else if ((ci = cached_info(p, db, user)) != NULL) {
                mechs = ci->mechs;
            } else {
                struct auth_login *l = login_state(s);
                if (!l)
                    return AUTH_REPLY; /* out of memory: no mechanisms listed */
                want_fetch(l, db, user);
                return AUTH_FETCH;
            }
        }
        if (mechs) {
            bson_t arr;
            bool sha256 = (mechs & (1u << SCRAM_SHA_256)) != 0;
            BSON_APPEND_ARRAY_BEGIN(reply, "saslSupportedMechs", &arr);
            if (sha256)
                BSON_APPEND_UTF8(&arr, "0", "SCRAM-SHA-256");
            if (mechs & (1u << SCRAM_SHA_1))
                BSON_APPEND_UTF8(&arr, sha256 ? "1" : "0", "SCRAM-SHA-1");
            bson_append_array_end(reply, &arr);
        }
    }
    if (!h.has_spec)
        return AUTH_REPLY;
    bson_t inner = BSON_INITIALIZER;
    enum auth_result r = AUTH_REPLY;
    if (h.spec_is_sasl_start)
        r = sasl_start(p, s, &h.spec, h.spec_db, &inner);
    if (r == AUTH_FETCH) {
        bson_destroy(&inner);
        return AUTH_FETCH;
    }
    bson_iter_t ok;
    /* Only a good first step of a known user is answered, as mongod does (a driver that got no
     * saslSupportedMechs may continue with another mechanism than it speculated with); anything
     * else makes the driver fall back to saslStart. */
    if (bson_iter_init_find(&ok, &inner, "ok") && bson_iter_as_bool(&ok) && s->login &&
        !s->login->unknown_user) {
        bson_t sub;
        BSON_APPEND_DOCUMENT_BEGIN(reply, "speculativeAuthenticate", &sub);
        bson_iter_t f;
        bson_iter_init(&f, &inner);
        while (bson_iter_next(&f))
            if (strcmp(bson_iter_key(&f), "ok") != 0)
                bson_append_iter(&sub, NULL, 0, &f);
        bson_append_document_end(reply, &sub);
    } else {
        end_conversation(s);
    }
    bson_destroy(&inner);
    return AUTH_REPLY;
}

int auth_build_fetch(struct proxy *p, struct auth_session *s, struct wire_buf *out, int32_t rid)
{
    struct auth_login *l = s->login;
    if (!l || !l->fetching)
        return -EINVAL;
    p->auth->fetches++;
    bson_t cmd = BSON_INITIALIZER, who;
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "usersInfo", &who);
    BSON_APPEND_UTF8(&who, "user", l->fetch_user);
    BSON_APPEND_UTF8(&who, "db", l->fetch_db);
    bson_append_document_end(&cmd, &who);
    BSON_APPEND_BOOL(&cmd, "showCredentials", true);
    BSON_APPEND_UTF8(&cmd, "$db", l->fetch_db);
    wire_buf_reset(out);
    int rc = wire_append_msg(out, rid, 0, 0, &cmd);
    bson_destroy(&cmd);
    return rc;
}

int auth_fetch_reply(struct proxy *p, struct auth_session *s, const uint8_t *frame, size_t len,
                     char *why, size_t why_len)
{
    struct auth_login *l = s->login;
    if (!l) {
        snprintf(why, why_len, "usersInfo: no login in progress");
        return -EINVAL;
    }
    forget_fetch(l);
    int rc =
        auth_parse_users_info(frame, len, l->fetch_db, l->fetch_user, &l->answer, why, why_len);
    if (rc < 0) {
        OPENSSL_cleanse(&l->answer, sizeof(l->answer));
        return rc;
    }
    l->fetched = true;
    if (l->answer.mechs)
        cache_info(p, l->fetch_db, l->fetch_user, &l->answer);
    else
        forget_info(p, l->fetch_db, l->fetch_user);
    return 0;
}

/* --- what a client may do ----------------------------------------------------------------------
 */

/* Open before a login, as mongod leaves them open. */
static bool open_before_login(const char *name)
{
    static const char *const open_cmds[] = {"ping", "buildInfo", "buildinfo", "getnonce"};
    for (size_t i = 0; i < sizeof(open_cmds) / sizeof(open_cmds[0]); i++)
        if (strcmp(name, open_cmds[i]) == 0)
            return true;
    return false;
}

static bool is_admin(struct proxy *p, const struct auth_session *s)
{
    if (!s->au)
        return false;
    if (s->au->cluster_monitor)
        return true;
    char name[SCRAM_MAX_USER + AUTHFILE_MAX_DB + 2];
    snprintf(name, sizeof(name), "%s@%s", s->au->user, s->au->db);
    return config_list_has(p->cfg.admin_users, name);
}

const char *auth_gate(struct proxy *p, const struct auth_session *s, const struct request_info *ri,
                      char *buf, size_t len, bool *logged)
{
    const char *name = ri->command;
    *logged = false;
    if (ri->kind == REQ_HELLO || ri->kind == REQ_AUTH)
        return NULL;
    if (p->cfg.auth_mode != MLB_AUTH_OFF && !s->au) {
        if (ri->kind == REQ_FORWARD && open_before_login(name))
            return NULL;
        snprintf(buf, len, "Command %s requires authentication", name[0] ? name : "(legacy op)");
        p->auth->refused++;
        return buf;
    }
    if (ri->kind == REQ_STATUS) {
        if (p->cfg.auth_mode == MLB_AUTH_OFF || is_admin(p, s))
            return NULL;
        snprintf(buf, len,
                 "mongolb: mongolbStatus needs a user listed in [auth] admin_users or one with "
                 "the clusterMonitor role; %s@%s is neither",
                 s->au->user, s->au->db);
        p->auth->refused++;
        return buf;
    }
    if (ri->kind != REQ_FORWARD || !name[0])
        return NULL; /* getMore and killCursors continue a command that was let through */
    if (config_list_has(p->cfg.deny_commands, name)) {
        snprintf(buf, len, "mongolb: command %s is refused by [auth] deny_commands", name);
    } else if (p->cfg.allow_commands[0] && !config_list_has(p->cfg.allow_commands, name)) {
        snprintf(buf, len, "mongolb: command %s is not in [auth] allow_commands", name);
    } else {
        return NULL;
    }
    p->auth->refused++;
    *logged = true;
    return buf;
}

/* --- backend logins -------------------------------------------------------------------------- */

struct auth_backend {
    struct scram_client *sc;
    struct auth_user *au; /* NULL: the service user */
    bool x509;
    bool with_key; /* logging in with a kept ClientKey rather than a password */
    int32_t conversation;
    bool proven; /* the server's signature was checked; an empty step may remain */
    char db[MLB_AUTH_NAME_MAX];
};

void auth_backend_free(struct auth_backend *ab)
{
    if (!ab)
        return;
    scram_client_free(ab->sc);
    OPENSSL_cleanse(ab, sizeof(*ab));
    free(ab);
}

static int send_cmd(bson_t *cmd, const char *db, struct wire_buf *out, int32_t rid)
{
    BSON_APPEND_UTF8(cmd, "$db", db);
    wire_buf_reset(out);
    int rc = wire_append_msg(out, rid, 0, 0, cmd);
    bson_destroy(cmd);
    return rc;
}

int auth_backend_begin(struct proxy *p, struct auth_user *au, struct auth_backend **abp,
                       struct wire_buf *out, int32_t rid, char *why, size_t why_len)
{
    struct auth_state *a = p->auth;
    const struct mlb_config *cfg = &p->cfg;
    *abp = NULL;
    if (cfg->auth_mode == MLB_AUTH_OFF || (!au && !cfg->service_user[0]))
        return 0;
    struct auth_backend *ab = calloc(1, sizeof(*ab));
    if (!ab)
        return -ENOMEM;
    ab->au = au;
    *abp = ab;
    if (!au && cfg->service_mechanism == MLB_SVC_X509) {
        ab->x509 = true;
        bson_t cmd = BSON_INITIALIZER;
        BSON_APPEND_INT32(&cmd, "authenticate", 1);
        BSON_APPEND_UTF8(&cmd, "mechanism", "MONGODB-X509");
        if (cfg->service_user[0])
            BSON_APPEND_UTF8(&cmd, "user", cfg->service_user);
        return send_cmd(&cmd, "$external", out, rid) < 0 ? -ENOMEM : 1;
    }
    enum scram_mech mech;
    int rc;
    if (au) {
        if (!au->have_key) {
            snprintf(why, why_len, "no key for %s@%s: it must log in again", au->user, au->db);
            return -EACCES;
        }
        mech = au->v.mech;
        snprintf(ab->db, sizeof(ab->db), "%s", au->db);
        ab->sc = scram_client_new(mech, au->user);
        rc = ab->sc ? scram_client_set_key(ab->sc, au->key, au->key_len, &au->v) : -ENOMEM;
        ab->with_key = true;
    } else {
        mech = cfg->service_mechanism == MLB_SVC_SCRAM_SHA_1 ? SCRAM_SHA_1 : SCRAM_SHA_256;
        snprintf(ab->db, sizeof(ab->db), "%s", cfg->service_auth_source);
        ab->sc = scram_client_new(mech, cfg->service_user);
        if (!ab->sc) {
            rc = -ENOMEM;
        } else if (a->svc_have_key && a->svc_v.mech == mech) {
            rc = scram_client_set_key(ab->sc, a->svc_key, a->svc_key_len, &a->svc_v);
            ab->with_key = true;
        } else if (a->have_password) {
            rc = scram_client_set_password(ab->sc, a->password);
        } else {
            rc = -EINVAL;
        }
    }
    uint8_t msg[SCRAM_MAX_MSG];
    size_t len = 0;
    if (rc == 0)
        rc = scram_client_first(ab->sc, msg, sizeof(msg), &len);
    if (rc < 0) {
        snprintf(why, why_len, "cannot start a login: %s", scram_strerror(rc));
        return rc == -ENOMEM ? rc : -EACCES;
    }
    bson_t cmd = BSON_INITIALIZER, opt;
    BSON_APPEND_INT32(&cmd, "saslStart", 1);
    BSON_APPEND_UTF8(&cmd, "mechanism", scram_mech_name(mech));
    BSON_APPEND_BINARY(&cmd, "payload", BSON_SUBTYPE_BINARY, msg, (uint32_t)len);
    BSON_APPEND_BOOL(&cmd, "autoAuthorize", true);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "options", &opt);
    BSON_APPEND_BOOL(&opt, "skipEmptyExchange", true);
    bson_append_document_end(&cmd, &opt);
    return send_cmd(&cmd, ab->db, out, rid) < 0 ? -ENOMEM : 1;
}

/* After a refused login: a kept key is dropped, so that the next login starts afresh, and so is
 * the user's cached verifier (the key was recovered with it: the password may have changed), so
 * that the next login reads the verifier from the cluster again. */
static void drop_key(struct proxy *p, struct auth_backend *ab)
{
    if (ab->au) {
        ab->au->have_key = false;
        OPENSSL_cleanse(ab->au->key, sizeof(ab->au->key));
        if (ab->au->have_info) {
            drop_info(ab->au);
            p->auth->cache_drops++;
        }
    } else if (ab->with_key) {
        p->auth->svc_have_key = false;
        OPENSSL_cleanse(p->auth->svc_key, sizeof(p->auth->svc_key));
    }
}

int auth_backend_step(struct proxy *p, struct auth_backend *ab, const uint8_t *frame, size_t len,
                      struct wire_buf *out, int32_t rid, char *why, size_t why_len)
{
    struct auth_state *a = p->auth;
    struct auth_server_reply r;
    const char *who = ab->au ? ab->au->user : p->cfg.service_user;
    if (auth_parse_server_reply(frame, len, &r) < 0) {
        snprintf(why, why_len, "login as %s: unreadable reply", who);
        return -EPROTO;
    }
    if (!r.ok) {
        snprintf(why, why_len, "the server refused the login of %s: %.200s", who, r.errmsg);
        a->backend_login_failures++;
        drop_key(p, ab);
        return -EACCES;
    }
    if (ab->x509 || (ab->proven && ab->sc && scram_client_done(ab->sc))) {
        if (ab->x509 || !r.has_done || r.done) {
            a->backend_logins++;
            return 0;
        }
    }
    /* Our saslContinue echoes the server's conversationId; one outside int32 is not a server's. */
    if (r.has_conversation) {
        if (r.conversation < INT32_MIN || r.conversation > INT32_MAX) {
            snprintf(why, why_len, "login as %s: conversationId %lld out of range", who,
                     (long long)r.conversation);
            return -EPROTO;
        }
        ab->conversation = (int32_t)r.conversation;
    }
    if (!r.has_payload) {
        snprintf(why, why_len, "login as %s: a reply without a payload", who);
        return -EPROTO;
    }
    const uint8_t *payload = r.payload;
    uint32_t plen = r.payload_len;
    uint8_t msg[SCRAM_MAX_MSG];
    size_t mlen = 0;
    int rc;
    if (!ab->proven && scram_client_done(ab->sc) == 0 && plen > 2 && payload[0] == 'r' &&
        payload[1] == '=') {
        rc = scram_client_final(ab->sc, payload, plen, msg, sizeof(msg), &mlen);
        if (rc < 0) {
            snprintf(why, why_len, "login as %s: %s", who, scram_strerror(rc));
            a->backend_login_failures++;
            drop_key(p, ab);
            return -EACCES;
        }
        if (!ab->au && !ab->with_key) {
            /* Keep the service user's key: later connections skip PBKDF2. */
            if (scram_client_export_key(ab->sc, a->svc_key, &a->svc_key_len, &a->svc_v) == 0)
                a->svc_have_key = true;
        }
    } else {
        rc = scram_client_verify(ab->sc, payload, plen);
        if (rc == SCRAM_EAUTH) {
            /* The server accepted our proof but its own does not match (or it sent e=): said
             * plainly, since "authentication failed" would read as our credential refused. */
            snprintf(why, why_len,
                     "login as %s: the server's signature is wrong: it did not prove it holds "
                     "this user's credentials",
                     who);
        } else if (rc < 0) {
            snprintf(why, why_len, "login as %s: %s", who, scram_strerror(rc));
        }
        if (rc < 0) {
            a->backend_login_failures++;
            drop_key(p, ab);
            return -EACCES;
        }
        ab->proven = true;
        if (r.has_done && r.done) {
            a->backend_logins++;
            return 0;
        }
        mlen = 0; /* the empty last step */
    }
    bson_t cmd = BSON_INITIALIZER;
    BSON_APPEND_INT32(&cmd, "saslContinue", 1);
    BSON_APPEND_INT32(&cmd, "conversationId", ab->conversation);
    BSON_APPEND_BINARY(&cmd, "payload", BSON_SUBTYPE_BINARY, msg, (uint32_t)mlen);
    OPENSSL_cleanse(msg, sizeof(msg));
    return send_cmd(&cmd, ab->db, out, rid) < 0 ? -ENOMEM : 1;
}

/* --- status ------------------------------------------------------------------------------------
 */

void auth_status(struct proxy *p, bson_t *doc)
{
    struct auth_state *a = p->auth;
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(doc, "auth", &sub);
    BSON_APPEND_UTF8(&sub, "mode", config_auth_mode_name(p->cfg.auth_mode));
    if (a) {
        BSON_APPEND_INT64(&sub, "logins", (int64_t)a->logins);
        BSON_APPEND_INT64(&sub, "loginFailures", (int64_t)a->login_failures);
        BSON_APPEND_INT64(&sub, "commandsRefused", (int64_t)a->refused);
        BSON_APPEND_INT64(&sub, "verifierFetches", (int64_t)a->fetches);
        BSON_APPEND_INT64(&sub, "verifierCacheHits", (int64_t)a->cache_hits);
        BSON_APPEND_INT64(&sub, "verifierCacheDrops", (int64_t)a->cache_drops);
        BSON_APPEND_INT64(&sub, "backendLogins", (int64_t)a->backend_logins);
        BSON_APPEND_INT64(&sub, "backendLoginFailures", (int64_t)a->backend_login_failures);
        BSON_APPEND_INT64(&sub, "cachedUsers", (int64_t)a->n_users);
        BSON_APPEND_INT64(&sub, "authFileUsers", (int64_t)a->file.count);
    }
    bson_append_document_end(doc, &sub);
}

/* --- the admin listener ----------------------------------------------------------------------- */

const struct scram_verifier *auth_file_verifier(struct proxy *p, const char *db, const char *user)
{
    struct auth_state *a = p->auth;
    if (!a || !a->have_file)
        return NULL;
    const struct scram_verifier *v = authfile_lookup(&a->file, db, user, SCRAM_SHA_256);
    return v ? v : authfile_lookup(&a->file, db, user, SCRAM_SHA_1);
}
