/*
 * auth_parse.c: the documents auth.c reads from applications and servers (see auth_parse.h).
 * Pure: no I/O, no allocation, no recursion; every loop walks one level of a document.
 */
#include "auth_parse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "wire.h"

bool auth_parse_int64(const bson_iter_t *it, int64_t *out)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
        *out = bson_iter_int32(it);
        return true;
    case BSON_TYPE_INT64:
        *out = bson_iter_int64(it);
        return true;
    case BSON_TYPE_DOUBLE: {
        /* A cast of a double outside int64's range (or a NaN) is undefined behaviour in C: check
         * first. 2^63 is exactly representable; anything below it and at least -2^63 fits. */
        double d = bson_iter_double(it);
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d))
            return false;
        *out = (int64_t)d;
        return true;
    }
    default:
        return false;
    }
}

/* A binary or string payload field. */
static bool get_payload(const bson_iter_t *it, const uint8_t **data, uint32_t *len)
{
    if (BSON_ITER_HOLDS_BINARY(it)) {
        bson_subtype_t st;
        bson_iter_binary(it, &st, len, data);
        return *data != NULL;
    }
    if (BSON_ITER_HOLDS_UTF8(it)) {
        *data = (const uint8_t *)bson_iter_utf8(it, len);
        return *data != NULL;
    }
    return false;
}

void auth_parse_sasl(const bson_t *cmd, struct auth_sasl_cmd *out)
{
    memset(out, 0, sizeof(*out));
    out->mechanism = "";
    bson_iter_t it, opt;
    if (!bson_iter_init(&it, cmd))
        return;
    /* The first occurrence of a key counts, as bson_iter_find would have it. */
    bool seen_mech = false, seen_payload = false, seen_options = false, seen_conv = false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (!seen_mech && strcmp(k, "mechanism") == 0) {
            seen_mech = true;
            if (BSON_ITER_HOLDS_UTF8(&it))
                out->mechanism = bson_iter_utf8(&it, &out->mechanism_len);
        } else if (!seen_payload && strcmp(k, "payload") == 0) {
            seen_payload = true;
            out->has_payload = get_payload(&it, &out->payload, &out->payload_len);
        } else if (!seen_options && strcmp(k, "options") == 0) {
            seen_options = true;
            if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &opt) &&
                bson_iter_find(&opt, "skipEmptyExchange"))
                out->skip_empty = bson_iter_as_bool(&opt);
        } else if (!seen_conv && strcmp(k, "conversationId") == 0) {
            seen_conv = true;
            out->has_conversation = auth_parse_int64(&it, &out->conversation);
        }
    }
}

bool auth_split_name(const char *full, char *db, size_t db_len, char *user, size_t user_len)
{
    const char *dot = strchr(full, '.');
    if (!dot || dot == full || !dot[1] || (size_t)(dot - full) >= db_len ||
        strlen(dot + 1) >= user_len)
        return false;
    memcpy(db, full, (size_t)(dot - full));
    db[dot - full] = '\0';
    snprintf(user, user_len, "%s", dot + 1);
    return true;
}

void auth_parse_hello(const bson_t *cmd, struct auth_hello_login *out)
{
    memset(out, 0, sizeof(*out));
    out->spec_db = "admin";
    bson_iter_t it;
    if (bson_iter_init_find(&it, cmd, "saslSupportedMechs")) {
        out->has_mechs_for = true;
        if (BSON_ITER_HOLDS_UTF8(&it))
            out->mechs_name_ok =
                auth_split_name(bson_iter_utf8(&it, NULL), out->mechs_db, sizeof(out->mechs_db),
                                out->mechs_user, sizeof(out->mechs_user));
    }
    if (bson_iter_init_find(&it, cmd, "speculativeAuthenticate") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t n = 0;
        const uint8_t *d = NULL;
        bson_iter_document(&it, &n, &d);
        if (!d || !bson_init_static(&out->spec, d, n))
            return;
        out->has_spec = true;
        bson_iter_t dbit;
        if (bson_iter_init_find(&dbit, &out->spec, "db") && BSON_ITER_HOLDS_UTF8(&dbit))
            out->spec_db = bson_iter_utf8(&dbit, NULL);
        const char *name = wire_command_name(&out->spec);
        out->spec_is_sasl_start = name && strcmp(name, "saslStart") == 0;
    }
}

int auth_parse_server_reply(const uint8_t *frame, size_t len, struct auth_server_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->errmsg = "";
    struct wire_msg m;
    bson_t body;
    bson_iter_t it;
    if (wire_msg_parse(frame, len, &m) < 0 || !wire_msg_body(&m, &body) ||
        !bson_iter_init(&it, &body))
        return -EPROTO;
    bool seen_ok = false, seen_code = false, seen_msg = false, seen_done = false, seen_conv = false,
         seen_payload = false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (!seen_ok && strcmp(k, "ok") == 0) {
            seen_ok = true;
            out->ok = bson_iter_as_bool(&it);
        } else if (!seen_code && strcmp(k, "code") == 0) {
            seen_code = true;
            if (!auth_parse_int64(&it, &out->code))
                out->code = 0;
        } else if (!seen_msg && strcmp(k, "errmsg") == 0) {
            seen_msg = true;
            if (BSON_ITER_HOLDS_UTF8(&it))
                out->errmsg = bson_iter_utf8(&it, NULL);
        } else if (!seen_done && strcmp(k, "done") == 0) {
            seen_done = true;
            out->has_done = true;
            out->done = bson_iter_as_bool(&it);
        } else if (!seen_conv && strcmp(k, "conversationId") == 0) {
            seen_conv = true;
            out->has_conversation = auth_parse_int64(&it, &out->conversation);
        } else if (!seen_payload && strcmp(k, "payload") == 0) {
            seen_payload = true;
            out->has_payload = get_payload(&it, &out->payload, &out->payload_len);
        }
    }
    return 0;
}

/* Reads one mechanism's credentials out of usersInfo's credentials document. */
static bool read_credential(const bson_iter_t *creds, enum scram_mech mech,
                            struct scram_verifier *v)
{
    bson_iter_t c;
    if (!BSON_ITER_HOLDS_DOCUMENT(creds) || !bson_iter_recurse(creds, &c))
        return false;
    int64_t iters = -1;
    const char *salt = NULL, *stored = NULL, *server = NULL;
    uint32_t salt_len = 0, stored_len = 0, server_len = 0;
    while (bson_iter_next(&c)) {
        const char *k = bson_iter_key(&c);
        if (strcmp(k, "iterationCount") == 0) {
            if (!auth_parse_int64(&c, &iters))
                iters = -1;
        } else if (strcmp(k, "salt") == 0 && BSON_ITER_HOLDS_UTF8(&c)) {
            salt = bson_iter_utf8(&c, &salt_len);
        } else if (strcmp(k, "storedKey") == 0 && BSON_ITER_HOLDS_UTF8(&c)) {
            stored = bson_iter_utf8(&c, &stored_len);
        } else if (strcmp(k, "serverKey") == 0 && BSON_ITER_HOLDS_UTF8(&c)) {
            server = bson_iter_utf8(&c, &server_len);
        }
    }
    if (iters < 0 || iters > UINT32_MAX || !salt || !stored || !server)
        return false;
    return scram_verifier_from_b64(mech, (uint32_t)iters, salt, salt_len, stored, stored_len,
                                   server, server_len, v) == 0;
}

/* Roles that may read mongolb's status as they may read a server's (clusterMonitor and above). */
static bool monitor_role(const char *role, const char *db)
{
    static const char *const roles[] = {"clusterMonitor", "clusterManager", "clusterAdmin", "root"};
    if (strcmp(db, "admin") != 0)
        return false;
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(role, roles[i]) == 0)
            return true;
    return false;
}

/* Whether the user document u is db.user. */
static bool is_user(const bson_iter_t *u, const char *db, const char *user)
{
    bson_iter_t f;
    bool match_user = false, match_db = false;
    if (!bson_iter_recurse(u, &f))
        return false;
    while (bson_iter_next(&f)) {
        const char *k = bson_iter_key(&f);
        if (strcmp(k, "user") == 0 && BSON_ITER_HOLDS_UTF8(&f))
            match_user = strcmp(bson_iter_utf8(&f, NULL), user) == 0;
        else if (strcmp(k, "db") == 0 && BSON_ITER_HOLDS_UTF8(&f))
            match_db = strcmp(bson_iter_utf8(&f, NULL), db) == 0;
    }
    return match_user && match_db;
}

static void read_credentials(const bson_iter_t *f, struct auth_users_info *out)
{
    bson_iter_t sub;
    if (!BSON_ITER_HOLDS_DOCUMENT(f) || !bson_iter_recurse(f, &sub))
        return;
    while (bson_iter_next(&sub)) {
        enum scram_mech mech;
        const char *mk = bson_iter_key(&sub);
        if (scram_mech_parse(mk, strlen(mk), &mech) == 0 && !(out->mechs & (1u << mech)) &&
            read_credential(&sub, mech, &out->v[mech]))
            out->mechs |= 1u << mech;
    }
}

static void read_roles(const bson_iter_t *f, struct auth_users_info *out)
{
    bson_iter_t sub, r;
    if (!BSON_ITER_HOLDS_ARRAY(f) || !bson_iter_recurse(f, &sub))
        return;
    while (bson_iter_next(&sub)) {
        const char *role = "", *rdb = "";
        if (!BSON_ITER_HOLDS_DOCUMENT(&sub) || !bson_iter_recurse(&sub, &r))
            continue;
        while (bson_iter_next(&r)) {
            if (strcmp(bson_iter_key(&r), "role") == 0 && BSON_ITER_HOLDS_UTF8(&r))
                role = bson_iter_utf8(&r, NULL);
            else if (strcmp(bson_iter_key(&r), "db") == 0 && BSON_ITER_HOLDS_UTF8(&r))
                rdb = bson_iter_utf8(&r, NULL);
        }
        if (monitor_role(role, rdb))
            out->monitor = true;
    }
}

int auth_parse_users_info(const uint8_t *frame, size_t len, const char *db, const char *user,
                          struct auth_users_info *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    struct auth_server_reply r;
    if (auth_parse_server_reply(frame, len, &r) < 0) {
        snprintf(why, why_len, "usersInfo: unreadable reply");
        return -EPROTO;
    }
    if (!r.ok) {
        snprintf(why, why_len, "usersInfo as service_user failed: %lld %.200s", (long long)r.code,
                 r.errmsg);
        return -EACCES;
    }
    struct wire_msg m;
    bson_t body;
    bson_iter_t it, users;
    if (wire_msg_parse(frame, len, &m) < 0 || !wire_msg_body(&m, &body))
        return -EPROTO; /* read above already */
    if (!bson_iter_init_find(&it, &body, "users") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &users))
        return 0;
    while (bson_iter_next(&users)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&users) || !is_user(&users, db, user))
            continue;
        bson_iter_t f;
        if (!bson_iter_recurse(&users, &f))
            break;
        while (bson_iter_next(&f)) {
            const char *k = bson_iter_key(&f);
            if (strcmp(k, "credentials") == 0)
                read_credentials(&f, out);
            else if (strcmp(k, "roles") == 0)
                read_roles(&f, out);
        }
        break;
    }
    return 0;
}
