/*
 * fuzz_auth_parse.c: arbitrary bytes to auth_parse.c, what auth.c reads from peers.
 *
 * Input: one byte of control, then the data. Control modulo 5 chooses the parser:
 *   0  a client's saslStart/saslContinue document (auth_parse_sasl)
 *   1  a client's hello document: saslSupportedMechs and speculativeAuthenticate
 *      (auth_parse_hello), and the speculative saslStart through auth_parse_sasl as auth.c does
 *   2  a server's reply frame to saslStart/saslContinue/authenticate (auth_parse_server_reply)
 *   3  a server's reply frame to usersInfo with showCredentials, read for the user app.alice
 *      (auth_parse_users_info), whose credentials carry base64 salts and keys
 *   4  a "db.user" name (auth_split_name)
 * Everything a parser returns must point inside the input, strings must end inside it, and the
 * verifiers read must be whole (their mechanism, key and salt lengths, iteration count).
 */
#include <errno.h>
#include <string.h>

#include "auth_parse.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sasl(const struct auth_sasl_cmd *c, const uint8_t *d, size_t n)
{
    FUZZ_CHECK(c->mechanism != NULL);
    if (c->mechanism_len > 0) {
        FUZZ_CHECK(fuzz_within(c->mechanism, c->mechanism_len + 1, d, n));
        FUZZ_CHECK(c->mechanism[c->mechanism_len] == '\0');
        enum scram_mech mech;
        (void)scram_mech_parse(c->mechanism, c->mechanism_len, &mech);
    }
    if (c->has_payload) {
        FUZZ_CHECK(c->payload != NULL && fuzz_within(c->payload, c->payload_len, d, n));
        fuzz_touch(c->payload, c->payload_len);
    }
}

static void fuzz_sasl(const uint8_t *d, size_t n)
{
    bson_t doc;
    if (!bson_init_static(&doc, d, n))
        return;
    struct auth_sasl_cmd c;
    auth_parse_sasl(&doc, &c);
    check_sasl(&c, d, n);
}

static void fuzz_hello(const uint8_t *d, size_t n)
{
    bson_t doc;
    if (!bson_init_static(&doc, d, n))
        return;
    struct auth_hello_login h;
    auth_parse_hello(&doc, &h);
    if (h.mechs_name_ok) {
        FUZZ_CHECK(h.has_mechs_for);
        FUZZ_CHECK(h.mechs_db[0] && strlen(h.mechs_db) <= AUTHFILE_MAX_DB);
        FUZZ_CHECK(h.mechs_user[0] && strlen(h.mechs_user) <= SCRAM_MAX_USER);
    }
    FUZZ_CHECK(h.spec_db != NULL);
    fuzz_touch(h.spec_db, strlen(h.spec_db));
    if (h.has_spec) {
        const uint8_t *sd = bson_get_data(&h.spec);
        FUZZ_CHECK(fuzz_within(sd, h.spec.len, d, n));
        struct auth_sasl_cmd c;
        auth_parse_sasl(&h.spec, &c);
        check_sasl(&c, d, n);
    }
}

static void fuzz_server_reply(const uint8_t *d, size_t n)
{
    struct auth_server_reply r;
    if (auth_parse_server_reply(d, n, &r) < 0)
        return;
    FUZZ_CHECK(r.errmsg != NULL);
    fuzz_touch(r.errmsg, strlen(r.errmsg));
    if (r.errmsg[0])
        FUZZ_CHECK(fuzz_within(r.errmsg, strlen(r.errmsg) + 1, d, n));
    if (r.has_payload) {
        FUZZ_CHECK(r.payload != NULL && fuzz_within(r.payload, r.payload_len, d, n));
        fuzz_touch(r.payload, r.payload_len);
    }
}

static void fuzz_users_info(const uint8_t *d, size_t n)
{
    struct auth_users_info u;
    char why[300];
    why[0] = '\0';
    int rc = auth_parse_users_info(d, n, "app", "alice", &u, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EACCES);
    if (rc < 0) {
        FUZZ_CHECK(why[0] != '\0' && strlen(why) < sizeof(why));
        FUZZ_CHECK(u.mechs == 0);
        return;
    }
    FUZZ_CHECK((u.mechs & ~((1u << SCRAM_SHA_1) | (1u << SCRAM_SHA_256))) == 0);
    for (int m = 0; m < 3; m++) {
        if (!(u.mechs & (1u << m)))
            continue;
        const struct scram_verifier *v = &u.v[m];
        FUZZ_CHECK(v->mech == (enum scram_mech)m);
        FUZZ_CHECK(v->salt_len >= 1 && v->salt_len <= SCRAM_MAX_SALT);
        FUZZ_CHECK(v->iterations > 0);
        FUZZ_CHECK(scram_key_len(v->mech) > 0);
        fuzz_touch(v->salt, v->salt_len);
        fuzz_touch(v->stored_key, scram_key_len(v->mech));
        fuzz_touch(v->server_key, scram_key_len(v->mech));
    }
    scram_verifier_wipe(&u.v[0]);
    scram_verifier_wipe(&u.v[1]);
    scram_verifier_wipe(&u.v[2]);
}

static void fuzz_name(const uint8_t *d, size_t n)
{
    char full[1024];
    if (n >= sizeof(full))
        n = sizeof(full) - 1;
    memcpy(full, d, n);
    full[n] = '\0';
    char db[AUTHFILE_MAX_DB + 1], user[SCRAM_MAX_USER + 1];
    if (!auth_split_name(full, db, sizeof(db), user, sizeof(user)))
        return;
    /* The name is db, a dot, then user, all of it. */
    size_t dl = strlen(db), ul = strlen(user);
    FUZZ_CHECK(dl > 0 && ul > 0 && !strchr(db, '.'));
    FUZZ_CHECK(dl + 1 + ul == strlen(full));
    FUZZ_CHECK(memcmp(full, db, dl) == 0 && full[dl] == '.' && strcmp(full + dl + 1, user) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0:
        fuzz_sasl(d, n);
        break;
    case 1:
        fuzz_hello(d, n);
        break;
    case 2:
        fuzz_server_reply(d, n);
        break;
    case 3:
        fuzz_users_info(d, n);
        break;
    default:
        fuzz_name(d, n);
        break;
    }
    return 0;
}
