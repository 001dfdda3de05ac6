/*
 * mongosim: a fast MongoDB cluster simulator, the backend of mongolb's integration tests, demo and
 * benchmarks.
 *
 * One process is one deployment (N mongos routers, a replica set of N members, or a standalone)
 * listening on consecutive loopback ports and sharing one in-memory store (until a replica set's
 * members are given a replication lag: then each keeps its own, see sim_repl.c). Once every port
 * listens it prints one JSON line on stdout, {"ready":true,"servers":[...]}, so that scripts can
 * wait for it. With --tls-cert every listener speaks TLS only, as mongod with requireTLS does
 * (sim_server.c drives OpenSSL). SIGTERM and SIGINT stop it cleanly. --version picks the MongoDB
 * release it behaves as (sim_version.c); sim_cmds.c has the control commands (simStepDown,
 * simKill, simSetLag, simReconfig, simSetMe, ...).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "sim.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mongosim (--mongos N | --replset NAME --members N | --standalone) [options]\n"
            "  --port P               first port; the others follow (0: ephemeral ports)\n"
            "  --host H               address to listen on (default 127.0.0.1)\n"
            "  --latency MS[,MS...]   extra delay added to every reply, per server\n"
            "  --tags 'k=v,k=v;...'   replica-set member tags, ';' between members\n"
            "  --lag-ms MS[,MS...]    replication lag of secondaries, per member; any value\n"
            "                         but 0 gives every member its own data (default 0)\n"
            "  --version X.Y          the MongoDB release to behave as, 4.0 to 8.0 (default\n"
            "                         7.0): wire version, legacy opcodes, exhaust, write concern\n"
            "  --max-wire-version N   advertise this wire version (default: the release's)\n"
            "  --cursor-timeout-ms N  idle cursor timeout (default 600000)\n"
            "  --tls-cert FILE        speak TLS only, with this PEM certificate and key\n"
            "  --tls-ca FILE          CA bundle that verifies client certificates\n"
            "  --tls-require-client-cert  refuse clients without a valid certificate\n"
            "  --compressors LIST     compressors a hello may negotiate, in order of\n"
            "                         preference (default zstd,snappy,zlib; '' for none)\n"
            "  --auth                 require authentication and enforce the built-in roles\n"
            "                         (sim* commands and configureFailPoint stay open)\n"
            "  --auth-user U:P[:ROLES]  create user U (name[@db], db admin by default) with\n"
            "                         password P and ROLES (role[@db][,...], default\n"
            "                         root@admin), with SCRAM-SHA-1 and SCRAM-SHA-256\n"
            "                         credentials; repeatable\n"
            "  --verbose              log connections and bad input on stderr\n"
            "\n"
            "Fault injection and inspection: commands sent to any server of the deployment\n"
            "(db.adminCommand in mongosh); servers are named by index (0, 1, ...) or host:port.\n"
            "  {configureFailPoint: 'failCommand', mode: 'alwaysOn' | {times: N} | 'off',\n"
            "   data: {failCommands: [...], errorCode, errorLabels, closeConnection,\n"
            "          blockConnection, blockTimeMS, writeConcernError, appName}}\n"
            "                         fail commands on the server it is sent to, as mongod's\n"
            "                         failpoint of the same name\n"
            "  {simKill: I}           stop server I answering (its connections are closed)\n"
            "  {simRevive: I}         bring server I back\n"
            "  {simStepDown: 1}       the primary steps down ({simStepDown: {to: I}}: elect I)\n"
            "  {simSetLatency: {server: I, ms: MS}}  delay every reply of server I\n"
            "  {simSetLag: {server: I, ms: MS}}      replication lag of a secondary (with\n"
            "                         --lag-ms)\n"
            "  {simReconfig: {remove: [I, ...], add: [I, ...]}}  change the replica set's\n"
            "                         members (and its setVersion)\n"
            "  {simSetMe: {server: I, me: 'host:port'}}  a member whose hello names another\n"
            "                         address than the one it is reached at\n"
            "  {simStats: 1}          commands served per server ({reset: true} to zero them)\n"
            "  {simTxnLog: 1}         transaction statements each server saw\n"
            "\n"
            "Data commands: find, insert, update, delete, findAndModify, count, distinct,\n"
            "aggregate, create, drop, dropDatabase, listDatabases, listCollections,\n"
            "listIndexes (_id only), dbStats, collStats, getMore, killCursors, sessions and\n"
            "transactions. createIndexes, explain, currentOp, killOp, listShards and a few\n"
            "others fail with CommandNotSupported (115) and a message saying why.\n");
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct sim_options *o)
{
    enum {
        O_MONGOS = 256,
        O_REPLSET,
        O_MEMBERS,
        O_STANDALONE,
        O_PORT,
        O_HOST,
        O_LATENCY,
        O_TAGS,
        O_LAG,
        O_WIRE,
        O_CURSOR_TIMEOUT,
        O_VERBOSE,
        O_TLS_CERT,
        O_TLS_CA,
        O_TLS_REQUIRE_CLIENT_CERT,
        O_VERSION,
        O_COMPRESSORS,
        O_AUTH,
        O_AUTH_USER,
        O_HELP,
    };
    static const struct option opts[] = {
        {"mongos", required_argument, NULL, O_MONGOS},
        {"replset", required_argument, NULL, O_REPLSET},
        {"members", required_argument, NULL, O_MEMBERS},
        {"standalone", no_argument, NULL, O_STANDALONE},
        {"port", required_argument, NULL, O_PORT},
        {"host", required_argument, NULL, O_HOST},
        {"latency", required_argument, NULL, O_LATENCY},
        {"tags", required_argument, NULL, O_TAGS},
        {"lag-ms", required_argument, NULL, O_LAG},
        {"max-wire-version", required_argument, NULL, O_WIRE},
        {"cursor-timeout-ms", required_argument, NULL, O_CURSOR_TIMEOUT},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"tls-cert", required_argument, NULL, O_TLS_CERT},
        {"tls-ca", required_argument, NULL, O_TLS_CA},
        {"tls-require-client-cert", no_argument, NULL, O_TLS_REQUIRE_CLIENT_CERT},
        {"version", required_argument, NULL, O_VERSION},
        {"compressors", required_argument, NULL, O_COMPRESSORS},
        {"auth", no_argument, NULL, O_AUTH},
        {"auth-user", required_argument, NULL, O_AUTH_USER},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->mode = SIM_MODE_STANDALONE;
    o->nservers = 1;
    o->port = 27017;
    snprintf(o->host, sizeof(o->host), "127.0.0.1");
    o->version = 700;
    o->max_wire_version = 21;
    o->cursor_timeout_ms = 600000;
    char why[128];
    if (compress_parse_list("zstd,snappy,zlib", &o->compressors, why, sizeof(why)) < 0)
        return -EINVAL;
    int members = 3, modes = 0, c;
    long v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MONGOS:
            if (parse_int(optarg, 1, SIM_MAX_SERVERS, &v) < 0)
                return -EINVAL;
            o->mode = SIM_MODE_MONGOS;
            o->nservers = (int)v;
            modes++;
            break;
        case O_REPLSET:
            o->mode = SIM_MODE_REPLSET;
            snprintf(o->set_name, sizeof(o->set_name), "%s", optarg);
            modes++;
            break;
        case O_MEMBERS:
            if (parse_int(optarg, 1, SIM_MAX_SERVERS, &v) < 0)
                return -EINVAL;
            members = (int)v;
            break;
        case O_STANDALONE:
            o->mode = SIM_MODE_STANDALONE;
            modes++;
            break;
        case O_PORT:
            if (parse_int(optarg, 0, 65535, &v) < 0)
                return -EINVAL;
            o->port = (int)v;
            break;
        case O_HOST:
            snprintf(o->host, sizeof(o->host), "%s", optarg);
            break;
        case O_LATENCY:
            snprintf(o->latency, sizeof(o->latency), "%s", optarg);
            break;
        case O_TAGS:
            snprintf(o->tags, sizeof(o->tags), "%s", optarg);
            break;
        case O_LAG:
            if (strlen(optarg) >= sizeof(o->lag))
                return -EINVAL;
            snprintf(o->lag, sizeof(o->lag), "%s", optarg);
            break;
        case O_WIRE:
            if (parse_int(optarg, 0, 100, &v) < 0)
                return -EINVAL;
            o->max_wire_version = (int)v;
            o->wire_given = true;
            break;
        case O_VERSION: {
            int version;
            if (sim_version_parse(optarg, &version) < 0)
                return -EINVAL;
            o->version = version;
            o->version_given = true;
            break;
        }
        case O_CURSOR_TIMEOUT:
            if (parse_int(optarg, 1, 86400000L * 7, &v) < 0)
                return -EINVAL;
            o->cursor_timeout_ms = (uint64_t)v;
            break;
        case O_VERBOSE:
            o->verbose = true;
            break;
        case O_TLS_CERT:
        case O_TLS_CA: {
            char *dst = c == O_TLS_CERT ? o->tls_cert : o->tls_ca;
            size_t cap = c == O_TLS_CERT ? sizeof(o->tls_cert) : sizeof(o->tls_ca);
            if (!optarg[0] || strlen(optarg) >= cap)
                return -EINVAL;
            memcpy(dst, optarg, strlen(optarg) + 1);
            break;
        }
        case O_TLS_REQUIRE_CLIENT_CERT:
            o->tls_require_client_cert = true;
            break;
        case O_COMPRESSORS:
            if (compress_parse_list(optarg, &o->compressors, why, sizeof(why)) < 0) {
                fprintf(stderr, "mongosim: --compressors: %s\n", why);
                return -EINVAL;
            }
            break;
        case O_AUTH:
            o->auth = true;
            break;
        case O_AUTH_USER:
            if (o->n_auth_users >= (int)(sizeof(o->auth_users) / sizeof(o->auth_users[0])))
                return -EINVAL;
            o->auth_users[o->n_auth_users++] = optarg;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -EINVAL;
        }
    }
    if (optind < argc || modes > 1)
        return -EINVAL;
    /* The client-certificate options only make sense on a TLS listener, and requiring a
     * certificate needs a CA to check it against. */
    if ((o->tls_ca[0] || o->tls_require_client_cert) && !o->tls_cert[0])
        return -EINVAL;
    if (o->tls_require_client_cert && !o->tls_ca[0])
        return -EINVAL;
    if (o->mode == SIM_MODE_REPLSET)
        o->nservers = members;
    /* A release advertises its wire version unless told otherwise; a wire version alone stands
     * for the newest release that has it, so that its features follow. */
    if (o->version_given && !o->wire_given)
        o->max_wire_version = sim_version_wire(o->version);
    else if (o->wire_given && !o->version_given)
        o->version = sim_version_of_wire(o->max_wire_version);
    if (o->port > 0 && o->port + o->nservers - 1 > 65535)
        return -EINVAL;
    return 0;
}

/* Applies --latency: one value for all servers, or one per server (missing ones are 0). */
static int apply_latency(struct sim *s)
{
    if (!s->opt.latency[0])
        return 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s->opt.latency);
    int n = 0;
    long vals[SIM_MAX_SERVERS];
    char *save, *tok = strtok_r(buf, ",", &save);
    while (tok) {
        if (n >= SIM_MAX_SERVERS || parse_int(tok, 0, 3600000, &vals[n]) < 0)
            return -EINVAL;
        n++;
        tok = strtok_r(NULL, ",", &save);
    }
    for (int i = 0; i < s->nservers; i++)
        s->servers[i].latency_ms = (uint64_t)(n == 1 ? vals[0] : (i < n ? vals[i] : 0));
    return 0;
}

/* Applies --lag-ms: one value for every member, or one per member (missing ones are 0). */
static int apply_lag(struct sim *s)
{
    if (!s->opt.lag[0])
        return 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s->opt.lag);
    int n = 0;
    long vals[SIM_MAX_SERVERS];
    char *save, *tok = strtok_r(buf, ",", &save);
    while (tok) {
        if (n >= SIM_MAX_SERVERS || parse_int(tok, 0, 86400000, &vals[n]) < 0)
            return -EINVAL;
        n++;
        tok = strtok_r(NULL, ",", &save);
    }
    for (int i = 0; i < s->nservers; i++)
        s->servers[i].lag_ms = (uint64_t)(n == 1 ? vals[0] : (i < n ? vals[i] : 0));
    return 0;
}

/* Applies --tags 'dc=ny;dc=ny,rack=2;dc=sf': ';' between members, ',' between pairs. */
static int apply_tags(struct sim *s)
{
    char buf[1024];
    int i = 0;
    /* Members are split by hand rather than with strtok_r, which would skip an empty member and
     * shift the tags of the following ones. */
    snprintf(buf, sizeof(buf), "%s", s->opt.tags);
    char *p = buf;
    while (p && i < s->nservers && s->opt.tags[0]) {
        char *semi = strchr(p, ';');
        if (semi)
            *semi = '\0';
        char *psave, *pair = strtok_r(p, ",", &psave);
        while (pair) {
            char *eq = strchr(pair, '=');
            if (!eq || eq == pair)
                return -EINVAL;
            *eq = '\0';
            BSON_APPEND_UTF8(&s->servers[i].tags, pair, eq + 1);
            pair = strtok_r(NULL, ",", &psave);
        }
        i++;
        p = semi ? semi + 1 : NULL;
    }
    return 0;
}

/* Prints the oldest error OpenSSL queued (the one that says what went wrong first) after what. */
static void tls_setup_error(const char *what, const char *file)
{
    unsigned long e = ERR_peek_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    char buf[256];
    if (e && !reason) {
        ERR_error_string_n(e, buf, sizeof(buf));
        reason = buf;
    }
    fprintf(stderr, "mongosim: %s%s%s: %s\n", what, file[0] ? " " : "", file,
            reason ? reason : "unknown error");
    ERR_clear_error();
}

/* OpenSSL asks for a passphrase when a key is encrypted; mongosim takes none, and the default
 * callback would prompt on the terminal and hang a test, so the key is refused instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    return 0;
}

/*
 * Builds the TLS context from --tls-cert, --tls-ca and --tls-require-client-cert, the way mongod
 * treats tlsCertificateKeyFile, tlsCAFile and tlsAllowConnectionsWithoutCertificates. Returns NULL
 * after printing why on stderr.
 */
static SSL_CTX *tls_context(const struct sim_options *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_setup_error("cannot create a TLS context", "");
        return NULL;
    }
    /* TLS 1.2 is the minimum: 1.0 and 1.1 are deprecated (RFC 8996) and no current driver needs
     * them. Renegotiation is refused because nothing in the wire protocol needs it and it only
     * widens what a peer can make the server do. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1) {
        tls_setup_error("cannot load the certificate of --tls-cert", o->tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->tls_cert, SSL_FILETYPE_PEM) != 1) {
        tls_setup_error("cannot load the private key of --tls-cert", o->tls_cert);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_setup_error("the private key does not match the certificate in", o->tls_cert);
        goto fail;
    }
    /* Sessions are cached per context; OpenSSL refuses to resume a session of a verified client
     * unless the context names itself, so it gets a fixed name. */
    static const unsigned char sid_ctx[] = "mongosim";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (o->tls_ca[0]) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1) {
            tls_setup_error("cannot load the CA bundle of --tls-ca", o->tls_ca);
            goto fail;
        }
        /* The names of the acceptable CAs go in the certificate request, so that a client
         * holding several certificates can pick the right one. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->tls_ca);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
        /* Without --tls-require-client-cert a certificate is still asked for and checked when the
         * client sends one, but its absence is accepted. */
        int mode = SSL_VERIFY_PEER;
        if (o->tls_require_client_cert)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sim *s = h->data;
    log_info(NULL, "signal %d: stopping", signum);
    sim_stop(s);
}

static void on_sweep(uv_timer_t *t)
{
    struct sim *s = t->data;
    uint64_t now = sim_now_ms(s);
    for (int i = 0; i < s->nservers; i++)
        sim_cursor_sweep(&s->servers[i], now, s->opt.cursor_timeout_ms);
}

static void seed_rng(struct sim *s)
{
    if (getrandom(s->rng, sizeof(s->rng), 0) != (ssize_t)sizeof(s->rng)) {
        /* Not fatal: ids only need to differ between servers and runs. */
        uint64_t x = (uint64_t)getpid() ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < 4; i++) {
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            s->rng[i] = z ^ (z >> 31);
        }
    }
    if (!(s->rng[0] | s->rng[1] | s->rng[2] | s->rng[3]))
        s->rng[0] = 1;
}

int main(int argc, char **argv)
{
    static struct sim sim;
    struct sim *s = &sim;
    if (parse_args(argc, argv, &s->opt) < 0) {
        usage(stderr);
        return 2;
    }
    log_current_level = s->opt.verbose ? LOG_DEBUG : LOG_WARN;
    signal(SIGPIPE, SIG_IGN);
    seed_rng(s);
    s->loop = uv_default_loop();
    s->store = store_new();
    if (!s->store) {
        fprintf(stderr, "mongosim: out of memory\n");
        return 1;
    }
    bson_init(&s->scratch);
    s->nservers = s->opt.nservers;
    for (int i = 0; i < s->nservers; i++) {
        struct sim_server *srv = &s->servers[i];
        srv->sim = s;
        srv->index = i;
        memcpy(srv->host, s->opt.host, sizeof(srv->host));
        srv->port = s->opt.port ? s->opt.port + i : 0;
        bson_init(&srv->tags);
        bson_oid_init(&srv->process_id, NULL);
        srv->store = s->store;
    }
    s->set_version = 1;
    if (apply_latency(s) < 0 || apply_tags(s) < 0 || apply_lag(s) < 0) {
        fprintf(stderr, "mongosim: bad --latency, --tags or --lag-ms\n");
        return 2;
    }
    for (int i = 0; i < s->opt.n_auth_users; i++) {
        int rc = sim_auth_add_user_spec(s, s->opt.auth_users[i]);
        if (rc < 0) {
            /* The spec holds a password: only its user part is printed. */
            const char *spec = s->opt.auth_users[i];
            fprintf(stderr, "mongosim: bad --auth-user for %.*s: %s\n", (int)strcspn(spec, ":"),
                    spec,
                    rc == -EEXIST ? "that user is given twice"
                                  : "expected user[@db]:password"
                                    "[:role[@db],...] with known roles");
            return 2;
        }
    }
    if (s->opt.tls_cert[0]) {
        s->tls_ctx = tls_context(&s->opt);
        if (!s->tls_ctx)
            return 1;
    }
    s->start_ms = sim_now_ms(s);
    for (int i = 0; i < s->nservers; i++) {
        int rc = sim_server_listen(&s->servers[i]);
        if (rc < 0) {
            fprintf(stderr, "mongosim: cannot listen on %s:%d: %s\n", s->servers[i].host,
                    s->servers[i].port, uv_strerror(rc));
            return 1;
        }
    }
    if (s->opt.mode == SIM_MODE_REPLSET) {
        s->servers[0].primary = true;
        s->term = 1;
        bool lagging = false;
        for (int i = 0; i < s->nservers; i++)
            lagging |= s->servers[i].lag_ms > 0;
        if (lagging && sim_repl_start(s, true) < 0) {
            fprintf(stderr, "mongosim: out of memory\n");
            return 1;
        }
    }

    uv_signal_init(s->loop, &s->sig_term);
    uv_signal_init(s->loop, &s->sig_int);
    s->sig_term.data = s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_timer_init(s->loop, &s->sweep_timer);
    sim_elections_init(s);
    s->sweep_timer.data = s;
    uint64_t every = s->opt.cursor_timeout_ms / 4;
    if (every < 10)
        every = 10;
    if (every > 1000)
        every = 1000;
    uv_timer_start(&s->sweep_timer, on_sweep, every, every);

    const char *mode = s->opt.mode == SIM_MODE_MONGOS    ? "mongos"
                       : s->opt.mode == SIM_MODE_REPLSET ? "replset"
                                                         : "standalone";
    printf("{\"ready\":true,\"mode\":\"%s\",", mode);
    if (s->opt.mode == SIM_MODE_REPLSET)
        printf("\"setName\":\"%s\",", s->opt.set_name);
    printf("\"pid\":%d,\"servers\":[", (int)getpid());
    for (int i = 0; i < s->nservers; i++)
        printf("%s\"%s\"", i ? "," : "", s->servers[i].host_port);
    printf("]}\n");
    fflush(stdout);

    uv_run(s->loop, UV_RUN_DEFAULT);

    for (int i = 0; i < s->nservers; i++)
        sim_free_server_state(&s->servers[i]);
    sim_free_retries(s);
    sim_repl_free(s);
    sim_auth_free(s);
    store_free(s->store);
    bson_destroy(&s->scratch);
    free(s->seq_views);
    free(s->seq_ptrs);
    SSL_CTX_free(s->tls_ctx);
    uv_loop_close(s->loop);
    return 0;
}
