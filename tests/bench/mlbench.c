/*
 * mlbench: a small MongoDB wire-protocol load generator for mongolb and mongosim.
 *
 *   mlbench --uri 127.0.0.1:27016 --conns 64 --seconds 3 --workload find_id [--setup]
 *   mlbench --uri 127.0.0.1:27016 --command '{"mongolbStatus": 1}'
 *
 * Each client connection runs in its own thread with a blocking socket. A connection keeps up to
 * --pipeline operations outstanding (1 by default, as drivers do); an operation is a small state
 * machine (a cursor workload sends a find and then getMores), and every request carries a request
 * id that names the slot it belongs to, so replies may come back in any order. The latency of each
 * operation, from its first request to its last reply, goes into a per-thread log-linear
 * histogram; the histograms are merged at the end and one line of JSON is printed on stdout.
 *
 * Workloads:
 *   ping        {ping: 1} on admin.
 *   find_id     find on bench.c by a random _id in [0, docs) with limit 1 and singleBatch.
 *   cursor1000  find on bench.c with the default batch size, then getMore until the cursor id is
 *               0; one operation is the whole cursor, which must return every document.
 *   insert      insert of one document into bench.ins.
 *   login       what a new application connection costs: connect (with the TLS handshake under
 *               TLS), hello, the SCRAM login (with credentials), close; repeated on each of
 *               --conns connections in turn. ops counts logins and the latencies are those of
 *               whole logins; phases_p50_us gives the median of each step.
 *
 * --setup drops bench.c and inserts --docs documents {_id: i, v: "..."} before the run; with
 * neither --seconds nor --ops given it only does the setup.
 *
 * --read-pref MODE adds $readPreference: {mode: MODE} to the finds of find_id and cursor1000, as a
 * driver does for a read with that preference: with "secondary" a replica-set member that is not
 * primary accepts them, and mongolb in replicaset mode routes them to a secondary. getMore carries
 * none, since it goes wherever its cursor lives.
 *
 * --tls-ca FILE speaks TLS (1.2 or newer) on every connection, verifying the server's certificate
 * against the CAs in FILE and its name against the host of --uri (its DNS names, sent as SNI too,
 * or its IP addresses for an IP literal), as a driver does with tls=true&tlsCAFile=FILE. The URI
 * may say the same itself, mongodb://HOST:PORT/?tls=true&tlsCAFile=FILE (tls=true alone verifies
 * against the system's trust store), which is how scripts/lib.sh's helpers, which take a URI
 * only, reach a TLS port. Each connection's handshake happens when it is opened, before the run
 * and its warm-up start, so handshakes never fall into the measured window. OpenSSL drives the
 * blocking socket itself (a socket BIO with read-ahead); without TLS the socket is used exactly as
 * before, with no extra copy.
 *
 * --user U --password P [--auth-source DB] [--mechanism SCRAM-SHA-256|SCRAM-SHA-1], or the URI
 * form mongodb://U:P@HOST:PORT/DB?authSource=DB&authMechanism=M (user and password
 * percent-decoded; authSource defaults to the URI's database, then to admin; the options win over
 * the URI), makes every connection log in after its hello, before the run and its warm-up start,
 * so that a run measures requests and not logins. The login is the one drivers make: saslStart
 * with options {skipEmptyExchange: true}, then saslContinue with the proof, on the authentication
 * database (scram.c's client side). The first login derives the keys from the password (PBKDF2);
 * the ClientKey, salt and iteration count are then cached and later logins skip PBKDF2, as the
 * drivers' authentication specification asks, so that the login workload measures the server
 * and the round trips rather than mlbench's own key derivation.
 *
 * A reply with ok other than 1 counts as an error (the first errmsg goes to stderr) and ends the
 * operation; the exit status is then 1. Transport failures (a closed connection, a reply timeout)
 * are fatal: the program prints what happened and exits with status 2.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "scram.h"
#include "tls.h"
#include "wire.h"

#define MAX_PIPELINE    256
#define REPLY_TIMEOUT_S 30
#define READ_CHUNK      (256 * 1024)

/* The histogram keeps values below HIST_LINEAR exactly and above that 32 sub-buckets per power of
 * two, so a percentile read from it is within about 3% of the true value. */
#define HIST_LINEAR 64
#define HIST_SUB    32
#define HIST_SHIFT  5
#define HIST_POWERS 40
#define HIST_SIZE   (HIST_LINEAR + HIST_POWERS * HIST_SUB)

enum workload {
    WL_PING = 0,
    WL_FIND_ID,
    WL_CURSOR,
    WL_INSERT,
    WL_LOGIN,
};

/* The steps of a login, timed separately by the login workload. */
#define LOGIN_PHASES 4
static const char *const phase_names[LOGIN_PHASES] = {"connect", "hello", "saslStart",
                                                      "saslContinue"};

static const char *const workload_names[] = {"ping", "find_id", "cursor1000", "insert", "login"};

struct options {
    char host[200];
    char port[16];
    int conns;
    int pipeline;
    double seconds;
    int64_t ops;
    bool have_seconds;
    bool have_ops;
    enum workload wl;
    int warmup_ms;
    bool setup;
    int docs;
    const char *command;
    const char *command_db;
    const char *read_pref; /* $readPreference mode of the finds, or NULL for none */
    bool tls;              /* --tls-ca or tls=true in the URI */
    const char *tls_ca;    /* CA file, or NULL for the system's trust store */
    long cpu_pid;          /* --cpu-pid: a process whose CPU time the measured window reports */
    const char *user;      /* log in as this user (SCRAM), or NULL for no login */
    const char *password;
    const char *auth_source; /* NULL: the URI's database, else admin */
    enum scram_mech mech;
};

static struct options opt;
static char uri_tls_ca[4096]; /* tlsCAFile from the URI */
static SSL_CTX *tls_ctx;      /* with opt.tls */
/* Credentials and database from the URI (percent-decoded); the options win over them. */
static char uri_user[SCRAM_MAX_USER + 1], uri_password[SCRAM_MAX_PASSWORD + 1];
static char uri_db[128], uri_auth_source[128];
static bool uri_have_mech, uri_have_password;
static enum scram_mech uri_mech;

/*
 * The client-side credential cache: after the first successful login, its ClientKey and the
 * verifier it was derived with (salt, iteration count, keys), so that later logins of the same
 * user skip PBKDF2. Shared by the threads of the login workload.
 */
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static bool key_cached;
static uint8_t cached_key[SCRAM_MAX_KEY];
static size_t cached_key_len;
static struct scram_verifier cached_verifier;

/* Run-wide state shared by the threads. */
static atomic_bool stop_flag;
static atomic_int_fast64_t measured_ops; /* operations finished after the warm-up */
static atomic_int_fast64_t total_errors;
static atomic_bool first_error_printed;
static uint64_t t_start_ns, t_measure_ns, t_end_ns;
static atomic_uint_fast64_t t_stopped_ns; /* when --ops was reached, 0 before */

struct hist {
    uint64_t counts[HIST_SIZE];
    uint64_t n;
    uint64_t max;
};

enum slot_state {
    SLOT_IDLE = 0,
    SLOT_WAIT,      /* a request is outstanding */
    SLOT_WAIT_KILL, /* a killCursors sent while stopping is outstanding */
};

struct slot {
    enum slot_state state;
    int32_t request_id;
    uint64_t op_start_ns;
    int64_t cursor_id;
    int64_t docs_seen;
};

struct conn {
    int index;
    int fd;
    SSL *ssl; /* NULL without TLS */
    int32_t next_seq;
    uint64_t rng;
    struct slot slots[MAX_PIPELINE];
    struct wire_buf out;
    uint8_t *in;
    size_t in_len, in_cap;
    struct hist hist;
    int64_t ops_done; /* measured operations of this connection */
    pthread_t thread;
    char fatal[640];
    /* The login workload: when each step of opening the connection ended (connected, hello,
     * saslStart, login), and the thread's histograms of each step's duration. */
    uint64_t t_phase[LOGIN_PHASES];
    struct hist *phases;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: enough randomness for picking _id values. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* --- histogram --------------------------------------------------------------------------- */

static int hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* at least 6 */
    int sub = (int)((v >> (e - HIST_SHIFT)) & (HIST_SUB - 1));
    int i = HIST_LINEAR + (e - 6) * HIST_SUB + sub;
    return i < HIST_SIZE ? i : HIST_SIZE - 1;
}

/* The middle of the range of values a bucket holds. */
static uint64_t hist_value(int i)
{
    if (i < HIST_LINEAR)
        return (uint64_t)i;
    int e = (i - HIST_LINEAR) / HIST_SUB + 6;
    uint64_t sub = (uint64_t)((i - HIST_LINEAR) % HIST_SUB);
    uint64_t width = 1ull << (e - HIST_SHIFT);
    return ((HIST_SUB + sub) << (e - HIST_SHIFT)) + width / 2;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
    for (int i = 0; i < HIST_SIZE; i++)
        into->counts[i] += from->counts[i];
    into->n += from->n;
    if (from->max > into->max)
        into->max = from->max;
}

static uint64_t hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->n);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_SIZE; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* --- sockets ------------------------------------------------------------------------------ */

static int connect_to(const char *host, const char *port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s:%s: %s", host, port, strerror(saved));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Describes, in c->fatal, why an SSL call on the connection failed: ret is what it returned, err
 * the errno right after it, what the operation ("read", "send", "TLS handshake").
 */
static void tls_fail(struct conn *c, int ret, int err, const char *what)
{
    char why[400];
    switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_ZERO_RETURN:
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: closed by the server (close_notify)",
                 c->index);
        ERR_clear_error();
        return;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        /* A blocking socket only asks to retry when SO_RCVTIMEO or SO_SNDTIMEO ran out. */
        if (strcmp(what, "read") == 0)
            snprintf(c->fatal, sizeof(c->fatal), "connection %d: no reply within %d s", c->index,
                     REPLY_TIMEOUT_S);
        else
            snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s timed out after %d s", c->index,
                     what, REPLY_TIMEOUT_S);
        ERR_clear_error();
        return;
    case SSL_ERROR_SYSCALL:
        if (err != 0 && ERR_peek_error() == 0) {
            snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s failed: %s", c->index, what,
                     strerror(err));
            return;
        }
        /* fall through */
    default:
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s failed: %s", c->index, what,
                 tls_last_error(why, sizeof(why)));
        return;
    }
}

/* conn_flush's TLS half: SSL_write_ex sends the whole buffer on a blocking socket. */
static int tls_flush(struct conn *c)
{
    size_t done = 0;
    while (done < c->out.len) {
        size_t n = 0;
        int ret = SSL_write_ex(c->ssl, c->out.data + done, c->out.len - done, &n);
        if (ret != 1) {
            int err = errno;
            if (SSL_get_error(c->ssl, ret) == SSL_ERROR_WANT_WRITE && err == EINTR)
                continue;
            tls_fail(c, ret, err, "send");
            wire_buf_reset(&c->out);
            return -1;
        }
        done += n;
    }
    wire_buf_reset(&c->out);
    return 0;
}

/* Sends what has been queued in c->out. Returns 0 or sets c->fatal and returns -1. */
static int conn_flush(struct conn *c)
{
    if (c->out.len == 0)
        return 0;
    if (c->ssl)
        return tls_flush(c);
    int rc = write_all(c->fd, c->out.data, c->out.len);
    wire_buf_reset(&c->out);
    if (rc < 0) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: send failed: %s", c->index,
                 strerror(-rc));
        return -1;
    }
    return 0;
}

/*
 * Makes sure one whole frame is at the start of c->in, reading as needed. Returns its length, or
 * -1 with c->fatal set.
 */
static ssize_t conn_read_frame(struct conn *c)
{
    for (;;) {
        struct wire_header h;
        int rc = wire_header_parse(c->in, c->in_len, WIRE_MAX_MESSAGE_SIZE, &h);
        if (rc == 0 && c->in_len >= (size_t)h.length)
            return h.length;
        if (rc != 0 && rc != -EAGAIN) {
            snprintf(c->fatal, sizeof(c->fatal), "connection %d: bad reply header", c->index);
            return -1;
        }
        size_t want = rc == 0 ? (size_t)h.length : WIRE_HEADER_LEN;
        if (want < c->in_len + READ_CHUNK)
            want = c->in_len + READ_CHUNK;
        if (want > c->in_cap) {
            uint8_t *n = realloc(c->in, want);
            if (!n) {
                snprintf(c->fatal, sizeof(c->fatal), "out of memory");
                return -1;
            }
            c->in = n;
            c->in_cap = want;
        }
        if (c->ssl) {
            /* Decrypted bytes go straight into c->in, as recv puts them there without TLS. */
            size_t got = 0;
            int ret = SSL_read_ex(c->ssl, c->in + c->in_len, c->in_cap - c->in_len, &got);
            if (ret != 1) {
                int err = errno;
                if (SSL_get_error(c->ssl, ret) == SSL_ERROR_WANT_READ && err == EINTR)
                    continue;
                tls_fail(c, ret, err, "read");
                return -1;
            }
            c->in_len += got;
            continue;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                snprintf(c->fatal, sizeof(c->fatal), "connection %d: closed by the server",
                         c->index);
            else if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(c->fatal, sizeof(c->fatal), "connection %d: no reply within %d s",
                         c->index, REPLY_TIMEOUT_S);
            else
                snprintf(c->fatal, sizeof(c->fatal), "connection %d: recv failed: %s", c->index,
                         strerror(errno));
            return -1;
        }
        c->in_len += (size_t)r;
    }
}

/* Drops the first n bytes of c->in. */
static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* --- requests and replies ----------------------------------------------------------------- */

static int32_t make_request_id(struct conn *c, int slot)
{
    int32_t seq = c->next_seq++ & 0x7fffff;
    if (c->next_seq > 0x7fffff)
        c->next_seq = 1;
    return (int32_t)((seq << 8) | slot);
}

static int queue_msg(struct conn *c, int slot, const bson_t *body)
{
    int32_t id = make_request_id(c, slot);
    c->slots[slot].request_id = id;
    return wire_append_msg(&c->out, id, 0, 0, body);
}

/* Describes a failed reply: its errmsg and code. */
static void reply_error(const bson_t *reply, char *buf, size_t len)
{
    bson_iter_t it;
    const char *msg = "(no errmsg)";
    int64_t code = 0;
    if (bson_iter_init_find(&it, reply, "errmsg") && BSON_ITER_HOLDS_UTF8(&it))
        msg = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, reply, "code") && BSON_ITER_HOLDS_NUMBER(&it))
        code = bson_iter_as_int64(&it);
    snprintf(buf, len, "%s (code %" PRId64 ")", msg, code);
}

static bool is_ok(const bson_t *reply)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, reply, "ok") && bson_iter_as_bool(&it);
}

/* Whether a reply document says ok: 1. Reports the first failure's errmsg on stderr. */
static bool reply_ok(const bson_t *reply, const char *what)
{
    if (is_ok(reply))
        return true;
    if (!atomic_exchange(&first_error_printed, true)) {
        char msg[512];
        reply_error(reply, msg, sizeof(msg));
        fprintf(stderr, "mlbench: %s failed: %s\n", what, msg);
    }
    return false;
}

/* Counts an error that is not an ok: 0 reply, printing the first such message. */
static void note_error(const char *msg)
{
    if (!atomic_exchange(&first_error_printed, true))
        fprintf(stderr, "mlbench: %s\n", msg);
}

/* Parses an OP_MSG reply frame into a read-only view of its body. */
static bool parse_reply(struct conn *c, const uint8_t *frame, size_t len, struct wire_msg *m,
                        bson_t *body)
{
    if (wire_msg_parse(frame, len, m) != 0 || !wire_msg_body(m, body)) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: malformed reply (opcode %d)", c->index,
                 wire_get_i32(frame + 12));
        return false;
    }
    return true;
}

/* Appends {$readPreference: {mode: --read-pref}} to a read command when --read-pref was given. */
static void append_read_pref(bson_t *cmd)
{
    if (!opt.read_pref)
        return;
    bson_t rp;
    BSON_APPEND_DOCUMENT_BEGIN(cmd, "$readPreference", &rp);
    BSON_APPEND_UTF8(&rp, "mode", opt.read_pref);
    bson_append_document_end(cmd, &rp);
}

/* Queues the first request of a new operation in a slot. */
static int start_op(struct conn *c, int slot)
{
    struct slot *s = &c->slots[slot];
    bson_t cmd = BSON_INITIALIZER, filter;
    int rc = 0;
    s->op_start_ns = now_ns();
    s->cursor_id = 0;
    s->docs_seen = 0;
    s->state = SLOT_WAIT;
    switch (opt.wl) {
    case WL_PING:
        BSON_APPEND_INT32(&cmd, "ping", 1);
        BSON_APPEND_UTF8(&cmd, "$db", "admin");
        rc = queue_msg(c, slot, &cmd);
        break;
    case WL_FIND_ID:
        BSON_APPEND_UTF8(&cmd, "find", "c");
        BSON_APPEND_DOCUMENT_BEGIN(&cmd, "filter", &filter);
        BSON_APPEND_INT32(&filter, "_id", (int32_t)(rng_next(&c->rng) % (uint64_t)opt.docs));
        bson_append_document_end(&cmd, &filter);
        BSON_APPEND_INT32(&cmd, "limit", 1);
        BSON_APPEND_BOOL(&cmd, "singleBatch", true);
        BSON_APPEND_UTF8(&cmd, "$db", "bench");
        append_read_pref(&cmd);
        rc = queue_msg(c, slot, &cmd);
        break;
    case WL_CURSOR:
        BSON_APPEND_UTF8(&cmd, "find", "c");
        BSON_APPEND_DOCUMENT_BEGIN(&cmd, "filter", &filter);
        bson_append_document_end(&cmd, &filter);
        BSON_APPEND_UTF8(&cmd, "$db", "bench");
        append_read_pref(&cmd);
        rc = queue_msg(c, slot, &cmd);
        break;
    case WL_INSERT: {
        bson_t doc = BSON_INITIALIZER;
        bson_oid_t oid;
        bson_oid_init(&oid, NULL);
        BSON_APPEND_OID(&doc, "_id", &oid);
        BSON_APPEND_INT64(&doc, "v", (int64_t)rng_next(&c->rng));
        BSON_APPEND_UTF8(&cmd, "insert", "ins");
        BSON_APPEND_BOOL(&cmd, "ordered", true);
        BSON_APPEND_UTF8(&cmd, "$db", "bench");
        const bson_t *docs[1] = {&doc};
        int32_t id = make_request_id(c, slot);
        s->request_id = id;
        rc = wire_append_msg_seq(&c->out, id, 0, 0, &cmd, "documents", docs, 1);
        bson_destroy(&doc);
        break;
    }
    case WL_LOGIN: /* login_main opens its own connections and sends no requests here */
        rc = -EINVAL;
        break;
    }
    bson_destroy(&cmd);
    return rc;
}

/* Queues a getMore (or, when stopping, a killCursors) for the slot's open cursor. */
static int continue_cursor(struct conn *c, int slot, bool kill)
{
    struct slot *s = &c->slots[slot];
    bson_t cmd = BSON_INITIALIZER, ids;
    if (kill) {
        BSON_APPEND_UTF8(&cmd, "killCursors", "c");
        BSON_APPEND_ARRAY_BEGIN(&cmd, "cursors", &ids);
        BSON_APPEND_INT64(&ids, "0", s->cursor_id);
        bson_append_array_end(&cmd, &ids);
        s->state = SLOT_WAIT_KILL;
    } else {
        BSON_APPEND_INT64(&cmd, "getMore", s->cursor_id);
        BSON_APPEND_UTF8(&cmd, "collection", "c");
        s->state = SLOT_WAIT;
    }
    BSON_APPEND_UTF8(&cmd, "$db", "bench");
    int rc = queue_msg(c, slot, &cmd);
    bson_destroy(&cmd);
    return rc;
}

/*
 * Reads a cursor reply: the cursor id and how many documents the batch (firstBatch or nextBatch)
 * holds. Returns false when the reply has no cursor document.
 */
static bool read_cursor(const bson_t *reply, int64_t *id, int64_t *n, bool *has_doc)
{
    bson_iter_t it, cur, batch;
    *n = 0;
    *has_doc = false;
    if (!bson_iter_init_find(&it, reply, "cursor") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !bson_iter_recurse(&it, &cur))
        return false;
    bool have_id = false;
    while (bson_iter_next(&cur)) {
        const char *k = bson_iter_key(&cur);
        if (strcmp(k, "id") == 0) {
            *id = bson_iter_as_int64(&cur);
            have_id = true;
        } else if ((strcmp(k, "firstBatch") == 0 || strcmp(k, "nextBatch") == 0) &&
                   BSON_ITER_HOLDS_ARRAY(&cur) && bson_iter_recurse(&cur, &batch)) {
            while (bson_iter_next(&batch)) {
                (*n)++;
                *has_doc = true;
            }
        }
    }
    return have_id;
}

/* Ends the slot's operation: records it if it finished after the warm-up. */
static void finish_op(struct conn *c, struct slot *s, bool ok, uint64_t t)
{
    s->state = SLOT_IDLE;
    if (!ok) {
        atomic_fetch_add(&total_errors, 1);
        return;
    }
    if (t < t_measure_ns || (opt.have_seconds && t > t_end_ns))
        return;
    /* With --ops, operations still outstanding when the count is reached are not recorded. */
    int64_t done = atomic_fetch_add(&measured_ops, 1) + 1;
    if (opt.have_ops && done > opt.ops)
        return;
    hist_add(&c->hist, (t - s->op_start_ns + 500) / 1000);
    c->ops_done++;
    if (opt.have_ops && done == opt.ops) {
        atomic_store(&t_stopped_ns, t);
        atomic_store(&stop_flag, true);
    }
}

/*
 * Handles one reply. Returns 0, or -1 with c->fatal set. May queue the slot's next request.
 */
static int handle_reply(struct conn *c, const uint8_t *frame, size_t len, bool stopping)
{
    struct wire_msg m;
    bson_t body;
    int32_t to = wire_get_i32(frame + 8);
    int slot = to & 0xff;
    if (slot >= opt.pipeline || c->slots[slot].request_id != to ||
        c->slots[slot].state == SLOT_IDLE) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: reply to unknown request %d", c->index,
                 to);
        return -1;
    }
    if (!parse_reply(c, frame, len, &m, &body))
        return -1;
    struct slot *s = &c->slots[slot];
    uint64_t t = now_ns();
    if (s->state == SLOT_WAIT_KILL) {
        s->state = SLOT_IDLE;
        return 0;
    }
    switch (opt.wl) {
    case WL_PING:
        finish_op(c, s, reply_ok(&body, "ping"), t);
        return 0;
    case WL_INSERT:
        finish_op(c, s, reply_ok(&body, "insert"), t);
        return 0;
    case WL_FIND_ID: {
        if (!reply_ok(&body, "find")) {
            finish_op(c, s, false, t);
            return 0;
        }
        int64_t id = -1, n;
        bool has_doc;
        bool cur_ok = read_cursor(&body, &id, &n, &has_doc);
        if (!cur_ok || !has_doc || id != 0) {
            note_error(!cur_ok   ? "find_id: reply without a cursor"
                       : has_doc ? "find_id: singleBatch find left a cursor open"
                                 : "find_id: no document found (was --setup run?)");
            finish_op(c, s, false, t);
            return 0;
        }
        finish_op(c, s, true, t);
        return 0;
    }
    case WL_CURSOR: {
        if (!reply_ok(&body, s->cursor_id ? "getMore" : "find")) {
            finish_op(c, s, false, t);
            return 0;
        }
        int64_t id = -1, n;
        bool has_doc;
        if (!read_cursor(&body, &id, &n, &has_doc)) {
            note_error("cursor1000: reply without a cursor");
            finish_op(c, s, false, t);
            return 0;
        }
        s->docs_seen += n;
        s->cursor_id = id;
        if (id != 0) {
            /* While stopping, an open cursor is killed rather than left to time out. */
            return continue_cursor(c, slot, stopping) == 0 ? 0 : -1;
        }
        if (s->docs_seen != opt.docs) {
            char msg[128];
            snprintf(msg, sizeof(msg), "cursor1000: cursor returned %" PRId64 " documents, not %d",
                     s->docs_seen, opt.docs);
            note_error(msg);
            finish_op(c, s, false, t);
            return 0;
        }
        finish_op(c, s, true, t);
        return 0;
    }
    case WL_LOGIN:
        break;
    }
    return 0;
}

/* Sends a hello and checks the reply, as a driver does first on every connection. */
static int conn_hello(struct conn *c)
{
    bson_t cmd = BSON_INITIALIZER, client, app;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    BSON_APPEND_BOOL(&cmd, "helloOk", true);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "client", &client);
    BSON_APPEND_DOCUMENT_BEGIN(&client, "application", &app);
    BSON_APPEND_UTF8(&app, "name", "mlbench");
    bson_append_document_end(&client, &app);
    bson_append_document_end(&cmd, &client);
    BSON_APPEND_UTF8(&cmd, "$db", "admin");
    c->slots[0].state = SLOT_WAIT;
    int rc = queue_msg(c, 0, &cmd);
    bson_destroy(&cmd);
    if (rc != 0 || conn_flush(c) != 0)
        return -1;
    ssize_t len = conn_read_frame(c);
    if (len < 0)
        return -1;
    struct wire_msg m;
    bson_t body;
    if (!parse_reply(c, c->in, (size_t)len, &m, &body))
        return -1;
    bool ok = is_ok(&body);
    if (!ok) {
        char msg[512];
        reply_error(&body, msg, sizeof(msg));
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: hello failed: %s", c->index, msg);
    }
    conn_consume(c, (size_t)len);
    c->slots[0].state = SLOT_IDLE;
    c->t_phase[1] = now_ns();
    return ok ? 0 : -1;
}

static int outstanding(const struct conn *c)
{
    int n = 0;
    for (int i = 0; i < opt.pipeline; i++)
        n += c->slots[i].state != SLOT_IDLE;
    return n;
}

static bool time_is_up(uint64_t t)
{
    if (atomic_load(&stop_flag))
        return true;
    if (opt.have_seconds && t >= t_end_ns) {
        atomic_store(&stop_flag, true);
        return true;
    }
    return false;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    for (int i = 0; i < opt.pipeline; i++) {
        if (start_op(c, i) != 0) {
            snprintf(c->fatal, sizeof(c->fatal), "out of memory");
            return NULL;
        }
    }
    if (conn_flush(c) != 0)
        return NULL;
    while (outstanding(c) > 0) {
        ssize_t len = conn_read_frame(c);
        if (len < 0)
            return NULL;
        /* Handle every whole frame already read before writing, so pipelined requests go out
         * together. */
        do {
            bool stopping = time_is_up(now_ns());
            int slot = wire_get_i32(c->in + 8) & 0xff;
            if (handle_reply(c, c->in, (size_t)len, stopping) != 0)
                return NULL;
            conn_consume(c, (size_t)len);
            if (c->slots[slot].state == SLOT_IDLE && !stopping && start_op(c, slot) != 0) {
                snprintf(c->fatal, sizeof(c->fatal), "out of memory");
                return NULL;
            }
            struct wire_header h;
            if (wire_header_parse(c->in, c->in_len, WIRE_MAX_MESSAGE_SIZE, &h) != 0 ||
                c->in_len < (size_t)h.length)
                break;
            len = h.length;
        } while (true);
        if (conn_flush(c) != 0)
            return NULL;
    }
    return NULL;
}

/* --- setup and one-off commands ------------------------------------------------------------ */

/* Sends one command on a fresh connection's slot 0 and returns the reply in *out (a copy). */
static int run_command(struct conn *c, const bson_t *cmd, const char *seq_name,
                       const bson_t *const *docs, int ndocs, bson_t *out)
{
    int32_t id = make_request_id(c, 0);
    c->slots[0].request_id = id;
    int rc = seq_name ? wire_append_msg_seq(&c->out, id, 0, 0, cmd, seq_name, docs, ndocs)
                      : wire_append_msg(&c->out, id, 0, 0, cmd);
    if (rc != 0 || conn_flush(c) != 0)
        return -1;
    ssize_t len = conn_read_frame(c);
    if (len < 0)
        return -1;
    struct wire_msg m;
    bson_t body;
    if (wire_get_i32(c->in + 8) != id) {
        snprintf(c->fatal, sizeof(c->fatal), "reply to request %d, expected %d",
                 wire_get_i32(c->in + 8), id);
        return -1;
    }
    if (!parse_reply(c, c->in, (size_t)len, &m, &body))
        return -1;
    bson_copy_to(&body, out);
    conn_consume(c, (size_t)len);
    return 0;
}

/* --- login ---------------------------------------------------------------------------------- */

/*
 * Sends one SASL command (saslStart or saslContinue) with a SCRAM message as its payload and
 * returns the server's payload in out (NUL-terminated for the error messages) and its done flag.
 * Returns 0, or -1 with c->fatal set (a transport failure or an ok: 0 reply).
 */
static int sasl_step(struct conn *c, bson_t *cmd, const uint8_t *msg, size_t len,
                     int64_t *conversation, uint8_t *out, size_t cap, size_t *out_len, bool *done)
{
    const char *what = conversation && *conversation >= 0 ? "saslContinue" : "saslStart";
    BSON_APPEND_BINARY(cmd, "payload", BSON_SUBTYPE_BINARY, msg, (uint32_t)len);
    BSON_APPEND_UTF8(cmd, "$db", opt.auth_source);
    bson_t reply;
    if (run_command(c, cmd, NULL, NULL, 0, &reply) != 0)
        return -1;
    int rc = -1;
    bson_iter_t it;
    *out_len = 0;
    *done = false;
    if (!is_ok(&reply)) {
        char msg_err[512];
        reply_error(&reply, msg_err, sizeof(msg_err));
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s as %s@%s failed: %s", c->index,
                 what, opt.user, opt.auth_source, msg_err);
        goto out;
    }
    if (bson_iter_init_find(&it, &reply, "conversationId") && BSON_ITER_HOLDS_NUMBER(&it))
        *conversation = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, &reply, "done"))
        *done = bson_iter_as_bool(&it);
    if (bson_iter_init_find(&it, &reply, "payload") && BSON_ITER_HOLDS_BINARY(&it)) {
        bson_subtype_t sub;
        uint32_t n;
        const uint8_t *data;
        bson_iter_binary(&it, &sub, &n, &data);
        if (n >= cap) {
            snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s: payload of %u bytes", c->index,
                     what, n);
            goto out;
        }
        memcpy(out, data, n);
        out[n] = '\0';
        *out_len = n;
    } else {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s reply without a payload", c->index,
                 what);
        goto out;
    }
    rc = 0;
out:
    bson_destroy(&reply);
    return rc;
}

/* A saslContinue command for the conversation, its payload still to be appended. */
static void sasl_continue_cmd(bson_t *cmd, int64_t conversation)
{
    bson_init(cmd);
    BSON_APPEND_INT32(cmd, "saslContinue", 1);
    if (conversation <= INT32_MAX)
        BSON_APPEND_INT32(cmd, "conversationId", (int32_t)conversation);
    else
        BSON_APPEND_INT64(cmd, "conversationId", conversation);
}

/*
 * Logs the connection in as opt.user with SCRAM: saslStart (skipEmptyExchange) with the
 * client-first message, saslContinue with the proof, and an empty saslContinue only if the server
 * still says it is not done. The first login derives the keys from the password; later ones use
 * the cached ClientKey. Returns 0, or -1 with c->fatal set.
 */
static int conn_login(struct conn *c)
{
    struct scram_client *sc = scram_client_new(opt.mech, opt.user);
    uint8_t msg[SCRAM_MAX_MSG], in[SCRAM_MAX_MSG + 1];
    size_t len = 0, in_len = 0;
    int64_t conversation = -1;
    bool done = false, from_cache = false;
    int rc;
    bson_t cmd, opts;
    if (!sc) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: cannot start a %s login as '%s'",
                 c->index, scram_mech_name(opt.mech), opt.user);
        return -1;
    }
    pthread_mutex_lock(&key_lock);
    if (key_cached) {
        rc = scram_client_set_key(sc, cached_key, cached_key_len, &cached_verifier);
        from_cache = true;
    } else {
        rc = scram_client_set_password(sc, opt.password);
    }
    pthread_mutex_unlock(&key_lock);
    if (rc == 0)
        rc = scram_client_first(sc, msg, sizeof(msg), &len);
    if (rc != 0) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s login: %s", c->index,
                 scram_mech_name(opt.mech), scram_strerror(rc));
        goto fail;
    }

    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "saslStart", 1);
    BSON_APPEND_UTF8(&cmd, "mechanism", scram_mech_name(opt.mech));
    BSON_APPEND_INT32(&cmd, "autoAuthorize", 1);
    BSON_APPEND_DOCUMENT_BEGIN(&cmd, "options", &opts);
    BSON_APPEND_BOOL(&opts, "skipEmptyExchange", true);
    bson_append_document_end(&cmd, &opts);
    rc = sasl_step(c, &cmd, msg, len, &conversation, in, sizeof(in), &in_len, &done);
    bson_destroy(&cmd);
    if (rc != 0)
        goto fail;
    c->t_phase[2] = now_ns();
    rc = scram_client_final(sc, in, in_len, msg, sizeof(msg), &len);
    if (rc != 0) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s login: server-first: %s%s",
                 c->index, scram_mech_name(opt.mech), scram_strerror(rc),
                 rc == SCRAM_ESTALE && from_cache ? " (the password changed during the run)" : "");
        goto fail;
    }

    sasl_continue_cmd(&cmd, conversation);
    rc = sasl_step(c, &cmd, msg, len, &conversation, in, sizeof(in), &in_len, &done);
    bson_destroy(&cmd);
    if (rc != 0)
        goto fail;
    rc = scram_client_verify(sc, in, in_len);
    if (rc != 0) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: %s login: server-final: %s", c->index,
                 scram_mech_name(opt.mech), scram_strerror(rc));
        goto fail;
    }
    if (!done) {
        /* A server that ignores skipEmptyExchange wants one more, empty, step. */
        sasl_continue_cmd(&cmd, conversation);
        rc = sasl_step(c, &cmd, (const uint8_t *)"", 0, &conversation, in, sizeof(in), &in_len,
                       &done);
        bson_destroy(&cmd);
        if (rc != 0)
            goto fail;
        if (!done) {
            snprintf(c->fatal, sizeof(c->fatal),
                     "connection %d: the server did not end the SASL conversation", c->index);
            goto fail;
        }
    }
    if (!from_cache) {
        pthread_mutex_lock(&key_lock);
        if (!key_cached &&
            scram_client_export_key(sc, cached_key, &cached_key_len, &cached_verifier) == 0)
            key_cached = true;
        pthread_mutex_unlock(&key_lock);
    }
    c->t_phase[3] = now_ns();
    OPENSSL_cleanse(msg, sizeof(msg));
    scram_client_free(sc);
    return 0;
fail:
    OPENSSL_cleanse(msg, sizeof(msg));
    scram_client_free(sc);
    return -1;
}

/* Drops bench.c and inserts opt.docs documents {_id: i, v: "value-i"} in batches. */
static int do_setup(struct conn *c)
{
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "drop", "c");
    BSON_APPEND_UTF8(&cmd, "$db", "bench");
    if (run_command(c, &cmd, NULL, NULL, 0, &reply) != 0)
        return -1;
    /* A missing collection is fine (NamespaceNotFound, code 26). */
    bson_iter_t it;
    if (!(bson_iter_init_find(&it, &reply, "ok") && bson_iter_as_bool(&it)) &&
        !(bson_iter_init_find(&it, &reply, "code") && bson_iter_as_int64(&it) == 26))
        reply_ok(&reply, "drop");
    bson_destroy(&reply);
    bson_destroy(&cmd);

    enum { BATCH = 500 };
    bson_t storage[BATCH];
    const bson_t *ptrs[BATCH];
    for (int base = 0; base < opt.docs; base += BATCH) {
        int n = opt.docs - base < BATCH ? opt.docs - base : BATCH;
        for (int i = 0; i < n; i++) {
            char v[32];
            bson_init(&storage[i]);
            BSON_APPEND_INT32(&storage[i], "_id", base + i);
            snprintf(v, sizeof(v), "value-%d", base + i);
            BSON_APPEND_UTF8(&storage[i], "v", v);
            ptrs[i] = &storage[i];
        }
        bson_init(&cmd);
        BSON_APPEND_UTF8(&cmd, "insert", "c");
        BSON_APPEND_BOOL(&cmd, "ordered", true);
        BSON_APPEND_UTF8(&cmd, "$db", "bench");
        int rc = run_command(c, &cmd, "documents", ptrs, n, &reply);
        for (int i = 0; i < n; i++)
            bson_destroy(&storage[i]);
        bson_destroy(&cmd);
        if (rc != 0)
            return -1;
        bool ok = reply_ok(&reply, "setup insert");
        int64_t inserted = bson_iter_init_find(&it, &reply, "n") ? bson_iter_as_int64(&it) : -1;
        bson_destroy(&reply);
        if (!ok)
            return -1;
        if (inserted != n) {
            fprintf(stderr, "mlbench: setup insert reported n=%" PRId64 ", expected %d\n", inserted,
                    n);
            return -1;
        }
    }
    return 0;
}

/* --- main ---------------------------------------------------------------------------------- */

/* utime + stime of process pid in clock ticks from /proc/PID/stat, or -1. The command name
 * (field 2) may hold spaces and parentheses: fields are counted from its last ')'. */
static long long cpu_ticks_of(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15). */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* VmRSS of process pid in kB, or 0. */
static long rss_kb_of(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Sleeps until the monotonic clock reaches t_ns, or the run stops. */
static void sleep_until(uint64_t t_ns)
{
    while (!atomic_load(&stop_flag)) {
        uint64_t now = now_ns();
        if (now >= t_ns)
            return;
        uint64_t left = t_ns - now;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left > 50000000 ? 50000000 : left)};
        nanosleep(&ts, NULL);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlbench [--uri HOST:PORT] [--conns N] [--pipeline K] [--seconds S | --ops N]\n"
            "               [--workload ping|find_id|cursor1000|insert|login] [--warmup-ms MS]\n"
            "               [--setup] [--docs N] [--read-pref MODE] [--tls-ca FILE]\n"
            "               [--user U --password P [--auth-source DB]\n"
            "                [--mechanism SCRAM-SHA-256|SCRAM-SHA-1]] [--cpu-pid PID]\n"
            "       mlbench [--uri HOST:PORT] [--tls-ca FILE] [--user U ...] --command JSON\n"
            "               [--db NAME]\n"
            "--uri also takes mongodb://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS] with the options\n"
            "tls=true, tlsCAFile=FILE, authSource=DB and authMechanism=M.\n"
            "With credentials every connection logs in (SCRAM) before the run starts; the login\n"
            "workload measures connect + hello + login + close.\n"
            "Prints one line of JSON: ops, ops_per_sec, p50_us, p99_us, errors, ...\n"
            "--cpu-pid adds cpu_ticks, clk_tck and rss_kb: the user+system CPU time process PID\n"
            "used during the measured window (warm-up excluded), and its VmRSS at the end.\n");
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Copies the n bytes of a URI option's value v into buf, decoding %XX. False if it is too long. */
static bool uri_decode(const char *v, size_t n, char *buf, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (ch == '%' && i + 2 < n && hex_digit(v[i + 1]) >= 0 && hex_digit(v[i + 2]) >= 0) {
            ch = (char)(hex_digit(v[i + 1]) * 16 + hex_digit(v[i + 2]));
            i += 2;
        }
        if (o + 1 >= len)
            return false;
        buf[o++] = ch;
    }
    buf[o] = '\0';
    return true;
}

/*
 * Reads the URI options mlbench knows: tls (or ssl) = true|false; tlsCAFile, which implies
 * tls=true as it does in drivers; authSource and authMechanism. Others are ignored. Returns 0 or
 * -1.
 */
static int parse_uri_options(const char *q)
{
    while (*q) {
        size_t n = strcspn(q, "&;");
        const char *eq = memchr(q, '=', n);
        if (eq) {
            size_t klen = (size_t)(eq - q), vlen = n - klen - 1;
            const char *v = eq + 1;
            if ((klen == 3 && strncasecmp(q, "tls", 3) == 0) ||
                (klen == 3 && strncasecmp(q, "ssl", 3) == 0)) {
                if (vlen == 4 && strncasecmp(v, "true", 4) == 0)
                    opt.tls = true;
                else if (vlen == 5 && strncasecmp(v, "false", 5) == 0)
                    opt.tls = false;
                else
                    return -1;
            } else if (klen == 9 && strncasecmp(q, "tlsCAFile", 9) == 0) {
                if (vlen == 0 || !uri_decode(v, vlen, uri_tls_ca, sizeof(uri_tls_ca)))
                    return -1;
                opt.tls_ca = uri_tls_ca;
                opt.tls = true;
            } else if (klen == 10 && strncasecmp(q, "authSource", 10) == 0) {
                if (vlen == 0 || !uri_decode(v, vlen, uri_auth_source, sizeof(uri_auth_source)))
                    return -1;
            } else if (klen == 13 && strncasecmp(q, "authMechanism", 13) == 0) {
                if (scram_mech_parse(v, vlen, &uri_mech) != 0)
                    return -1;
                uri_have_mech = true;
            }
        }
        q += n;
        if (*q)
            q++;
    }
    return 0;
}

static int parse_uri(const char *uri)
{
    const char *p = uri;
    if (strncmp(p, "mongodb://", 10) == 0)
        p += 10;
    /* user:password@ before the hosts (the last '@' before the path, as drivers read it). */
    size_t auth_end = strcspn(p, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < auth_end; i++)
        if (p[i] == '@')
            at = p + i;
    if (at) {
        size_t ulen = (size_t)(at - p);
        const char *colon = memchr(p, ':', ulen);
        size_t name_len = colon ? (size_t)(colon - p) : ulen;
        if (name_len == 0 || !uri_decode(p, name_len, uri_user, sizeof(uri_user)))
            return -1;
        if (colon) {
            if (!uri_decode(colon + 1, ulen - name_len - 1, uri_password, sizeof(uri_password)))
                return -1;
            uri_have_password = true;
        }
        p = at + 1;
    }
    size_t n = strcspn(p, "/?,");
    char hp[240];
    if (n == 0 || n >= sizeof(hp))
        return -1;
    memcpy(hp, p, n);
    hp[n] = '\0';
    char *colon = strrchr(hp, ':');
    const char *port = "27017";
    if (colon && !strchr(colon, ']')) {
        *colon = '\0';
        port = colon + 1;
    }
    char *host = hp;
    if (host[0] == '[') {
        host++;
        char *end = strchr(host, ']');
        if (!end)
            return -1;
        *end = '\0';
    }
    if (!*host || strlen(host) >= sizeof(opt.host) || strlen(port) >= sizeof(opt.port))
        return -1;
    strcpy(opt.host, host);
    strcpy(opt.port, port);
    const char *rest = p + n + strcspn(p + n, "/?");
    if (*rest == '/') {
        size_t dlen = strcspn(rest + 1, "?");
        if (dlen > 0 && !uri_decode(rest + 1, dlen, uri_db, sizeof(uri_db)))
            return -1;
    }
    const char *q = strchr(p + n, '?');
    return q ? parse_uri_options(q + 1) : 0;
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"uri", required_argument, NULL, 'u'},
        {"conns", required_argument, NULL, 'c'},
        {"pipeline", required_argument, NULL, 'p'},
        {"seconds", required_argument, NULL, 's'},
        {"ops", required_argument, NULL, 'n'},
        {"workload", required_argument, NULL, 'w'},
        {"warmup-ms", required_argument, NULL, 'W'},
        {"setup", no_argument, NULL, 'S'},
        {"docs", required_argument, NULL, 'd'},
        {"command", required_argument, NULL, 'C'},
        {"db", required_argument, NULL, 'D'},
        {"read-pref", required_argument, NULL, 'R'},
        {"tls-ca", required_argument, NULL, 'T'},
        {"cpu-pid", required_argument, NULL, 'K'},
        {"user", required_argument, NULL, 'U'},
        {"password", required_argument, NULL, 'P'},
        {"auth-source", required_argument, NULL, 'A'},
        {"mechanism", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    strcpy(opt.host, "127.0.0.1");
    strcpy(opt.port, "27016");
    opt.conns = 1;
    opt.pipeline = 1;
    opt.seconds = 3;
    opt.wl = WL_PING;
    opt.warmup_ms = 200;
    opt.docs = 1000;
    opt.command_db = "admin";
    int ch;
    long long v;
    int longindex = 0;
    const char *tls_ca = NULL;
    bool have_mech = false;
    opt.mech = SCRAM_SHA_256;
    while ((ch = getopt_long(argc, argv, "", longopts, &longindex)) != -1) {
        switch (ch) {
        case 'u':
            if (parse_uri(optarg) != 0) {
                /* A URI with credentials is not repeated: it may hold a password. */
                fprintf(stderr,
                        "mlbench: bad --uri '%s' (want host:port, or "
                        "mongodb://[user:password@]host:port[/db][?options])\n",
                        strchr(optarg, '@') ? "..." : optarg);
                return -1;
            }
            break;
        case 'c':
            if (!parse_int(optarg, 1, 10000, &v))
                goto bad;
            opt.conns = (int)v;
            break;
        case 'p':
            if (!parse_int(optarg, 1, MAX_PIPELINE, &v))
                goto bad;
            opt.pipeline = (int)v;
            break;
        case 's': {
            char *end;
            opt.seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(opt.seconds > 0) || opt.seconds > 86400)
                goto bad;
            opt.have_seconds = true;
            break;
        }
        case 'n':
            if (!parse_int(optarg, 0, INT64_MAX / 2, &v))
                goto bad;
            opt.ops = v;
            opt.have_ops = true;
            break;
        case 'w': {
            bool found = false;
            for (size_t i = 0; i < sizeof(workload_names) / sizeof(workload_names[0]); i++) {
                if (strcmp(optarg, workload_names[i]) == 0) {
                    opt.wl = (enum workload)i;
                    found = true;
                }
            }
            if (!found)
                goto bad;
            break;
        }
        case 'W':
            if (!parse_int(optarg, 0, 600000, &v))
                goto bad;
            opt.warmup_ms = (int)v;
            break;
        case 'S':
            opt.setup = true;
            break;
        case 'd':
            if (!parse_int(optarg, 1, 10000000, &v))
                goto bad;
            opt.docs = (int)v;
            break;
        case 'C':
            opt.command = optarg;
            break;
        case 'D':
            opt.command_db = optarg;
            break;
        case 'R':
            if (strcmp(optarg, "primary") != 0 && strcmp(optarg, "primaryPreferred") != 0 &&
                strcmp(optarg, "secondary") != 0 && strcmp(optarg, "secondaryPreferred") != 0 &&
                strcmp(optarg, "nearest") != 0)
                goto bad;
            opt.read_pref = optarg;
            break;
        case 'T':
            if (!*optarg)
                goto bad;
            tls_ca = optarg;
            break;
        case 'K':
            if (!parse_int(optarg, 1, 4194304, &v))
                goto bad;
            opt.cpu_pid = (long)v;
            break;
        case 'U':
            if (!*optarg || strlen(optarg) > SCRAM_MAX_USER)
                goto bad;
            opt.user = optarg;
            break;
        case 'P':
            if (strlen(optarg) > SCRAM_MAX_PASSWORD)
                goto bad;
            opt.password = optarg;
            break;
        case 'A':
            if (!*optarg)
                goto bad;
            opt.auth_source = optarg;
            break;
        case 'M':
            if (scram_mech_parse(optarg, strlen(optarg), &opt.mech) != 0)
                goto bad;
            have_mech = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "mlbench: bad value '%s' for --%s\n", optarg, longopts[longindex].name);
        usage(stderr);
        return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "mlbench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (opt.have_seconds && opt.have_ops) {
        fprintf(stderr, "mlbench: give --seconds or --ops, not both\n");
        return -1;
    }
    /* The options win over the URI's credentials, wherever they stand. */
    if (!opt.user && uri_user[0])
        opt.user = uri_user;
    if (!opt.password && opt.user == uri_user && uri_have_password)
        opt.password = uri_password;
    if (!opt.auth_source)
        opt.auth_source = uri_auth_source[0] ? uri_auth_source : uri_db[0] ? uri_db : "admin";
    if (!have_mech && uri_have_mech)
        opt.mech = uri_mech;
    if (opt.user && !opt.password) {
        fprintf(stderr, "mlbench: user %s needs a password (--password or user:password@)\n",
                opt.user);
        return -1;
    }
    if (opt.password && !opt.user) {
        fprintf(stderr, "mlbench: --password needs --user\n");
        return -1;
    }
    /* --tls-ca wins over the URI's options, wherever it stands. */
    if (tls_ca) {
        opt.tls = true;
        opt.tls_ca = tls_ca;
    }
    return 0;
}

/* Builds tls_ctx for opt.tls: TLS 1.2 or newer, the server's certificate verified. */
static int tls_setup(void)
{
    char why[400];
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx || SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION) != 1) {
        fprintf(stderr, "mlbench: cannot create a TLS context: %s\n",
                tls_last_error(why, sizeof(why)));
        return -1;
    }
    SSL_CTX_set_options(tls_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    if (opt.tls_ca ? SSL_CTX_load_verify_locations(tls_ctx, opt.tls_ca, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(tls_ctx) != 1) {
        fprintf(stderr, "mlbench: cannot load the CA certificates of %s: %s\n",
                opt.tls_ca ? opt.tls_ca : "the system's trust store",
                tls_last_error(why, sizeof(why)));
        return -1;
    }
    /* Read-ahead: one recv takes whatever has arrived (up to READ_CHUNK), not a record header and
     * then its body in two. */
    SSL_CTX_set_read_ahead(tls_ctx, 1);
    SSL_CTX_set_default_read_buffer_len(tls_ctx, READ_CHUNK);
    /* A server that closes while mlbench writes must not kill it with SIGPIPE: OpenSSL's socket
     * BIO writes without MSG_NOSIGNAL. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Does the TLS handshake on a connected c->fd. Returns 0 or -1 with c->fatal set. */
static int conn_tls_start(struct conn *c)
{
    char why[400];
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: cannot create a TLS connection: %s",
                 c->index, tls_last_error(why, sizeof(why)));
        return -1;
    }
    if (tls_client_prepare(c->ssl, opt.host, true) != 0) {
        snprintf(c->fatal, sizeof(c->fatal), "connection %d: cannot verify TLS against host '%s'",
                 c->index, opt.host);
        return -1;
    }
    ERR_clear_error();
    int ret = SSL_connect(c->ssl);
    if (ret == 1)
        return 0;
    int err = errno;
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        snprintf(c->fatal, sizeof(c->fatal),
                 "connection %d: TLS handshake with %s:%s failed: certificate verify failed: %s",
                 c->index, opt.host, opt.port, X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return -1;
    }
    char what[300];
    snprintf(what, sizeof(what), "TLS handshake with %s:%s", opt.host, opt.port);
    tls_fail(c, ret, err, what);
    return -1;
}

static void conn_free(struct conn *c)
{
    if (c->ssl) {
        /* A close_notify, as drivers send, unless the connection already failed. */
        if (!c->fatal[0] && SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    wire_buf_free(&c->out);
    free(c->in);
    free(c->phases);
}

static int conn_open(struct conn *c, int index, bool hello)
{
    memset(c, 0, sizeof(*c));
    c->index = index;
    c->next_seq = 1;
    c->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)index * 0x2545f4914f6cdd1dull) ^ now_ns();
    if (c->rng == 0)
        c->rng = 1;
    c->fd = connect_to(opt.host, opt.port, c->fatal, sizeof(c->fatal));
    if (c->fd < 0)
        return -1;
    if (opt.tls && conn_tls_start(c) != 0)
        return -1;
    c->t_phase[0] = now_ns();
    if (!hello)
        return 0;
    if (conn_hello(c) != 0)
        return -1;
    return opt.user ? conn_login(c) : 0;
}

/*
 * The login workload on one thread: a new connection, its hello and login, then its close, again
 * and again until the run ends. c keeps the thread's histogram and count; each login uses its own
 * short-lived connection object.
 */
static void *login_main(void *arg)
{
    struct conn *c = arg;
    struct conn *t = malloc(sizeof(*t));
    c->phases = calloc(LOGIN_PHASES, sizeof(*c->phases));
    if (!t || !c->phases) {
        free(t);
        snprintf(c->fatal, sizeof(c->fatal), "out of memory");
        return NULL;
    }
    while (!time_is_up(now_ns())) {
        uint64_t t0 = now_ns();
        int rc = conn_open(t, c->index, true);
        if (rc != 0)
            memcpy(c->fatal, t->fatal, sizeof(c->fatal));
        conn_free(t);
        if (rc != 0)
            break;
        struct slot s = {.state = SLOT_WAIT, .op_start_ns = t0};
        int64_t before = c->ops_done;
        finish_op(c, &s, true, now_ns());
        if (c->ops_done == before)
            continue; /* not measured (warm-up) */
        /* Without credentials only connect and hello happen. */
        uint64_t prev = t0;
        for (int i = 0; i < (opt.user ? LOGIN_PHASES : 2); i++) {
            hist_add(&c->phases[i], (t->t_phase[i] - prev + 500) / 1000);
            prev = t->t_phase[i];
        }
    }
    free(t);
    if (c->fatal[0])
        atomic_store(&stop_flag, true);
    return NULL;
}

/* --command: sends one JSON command and prints the reply as relaxed extended JSON. */
static int command_mode(void)
{
    bson_error_t err;
    bson_t *cmd = bson_new_from_json((const uint8_t *)opt.command, -1, &err);
    if (!cmd) {
        fprintf(stderr, "mlbench: --command is not valid JSON: %s\n", err.message);
        return 2;
    }
    if (!bson_has_field(cmd, "$db"))
        BSON_APPEND_UTF8(cmd, "$db", opt.command_db);
    struct conn c;
    bson_t reply;
    int status = 2;
    /* Without credentials the command goes first, as before; with them, after hello and login. */
    if (conn_open(&c, 0, opt.user != NULL) == 0 &&
        run_command(&c, cmd, NULL, NULL, 0, &reply) == 0) {
        char *json = bson_as_relaxed_extended_json(&reply, NULL);
        printf("%s\n", json);
        bson_free(json);
        bson_iter_t it;
        status = bson_iter_init_find(&it, &reply, "ok") && bson_iter_as_bool(&it) ? 0 : 1;
        bson_destroy(&reply);
    } else {
        fprintf(stderr, "mlbench: %s\n", c.fatal);
    }
    conn_free(&c);
    bson_destroy(cmd);
    return status;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    if (opt.tls && tls_setup() != 0)
        return 2;
    if (opt.command)
        return command_mode();

    if (opt.setup) {
        struct conn c;
        if (conn_open(&c, 0, true) != 0 || do_setup(&c) != 0) {
            if (c.fatal[0])
                fprintf(stderr, "mlbench: setup: %s\n", c.fatal);
            else
                fprintf(stderr, "mlbench: setup failed\n");
            conn_free(&c);
            return 2;
        }
        conn_free(&c);
        if (!opt.have_seconds && !opt.have_ops) {
            printf("{\"setup\":true,\"docs\":%d}\n", opt.docs);
            return 0;
        }
    }
    if (!opt.have_ops)
        opt.have_seconds = true;

    struct conn *conns = calloc((size_t)opt.conns, sizeof(*conns));
    if (!conns) {
        fprintf(stderr, "mlbench: out of memory\n");
        return 2;
    }
    int status = 0;
    int opened = 0;
    long long cpu0 = -1, cpu1 = -1;
    long rss = 0;
    if (opt.wl == WL_LOGIN) {
        /* Each thread opens its own connections; one login first fills the key cache (and shows
         * bad credentials once rather than once per thread). */
        struct conn c;
        int rc = conn_open(&c, 0, true);
        if (rc != 0)
            fprintf(stderr, "mlbench: %s\n", c.fatal);
        conn_free(&c);
        if (rc != 0) {
            free(conns);
            return 2;
        }
        for (; opened < opt.conns; opened++) {
            conns[opened].index = opened;
            conns[opened].fd = -1;
        }
    }
    for (; opened < opt.conns; opened++) {
        if (conn_open(&conns[opened], opened, true) != 0) {
            fprintf(stderr, "mlbench: %s\n", conns[opened].fatal);
            conn_free(&conns[opened]);
            status = 2;
            break;
        }
    }
    if (status != 0) {
        for (int i = 0; i < opened; i++)
            conn_free(&conns[i]);
        free(conns);
        return status;
    }
    {
        t_start_ns = now_ns();
        t_measure_ns = t_start_ns + (uint64_t)opt.warmup_ms * 1000000u;
        t_end_ns = t_measure_ns + (uint64_t)(opt.seconds * 1e9);
        if (opt.have_ops && opt.ops == 0)
            atomic_store(&stop_flag, true);
        int started = 0;
        for (; started < opt.conns; started++) {
            if (pthread_create(&conns[started].thread, NULL,
                               opt.wl == WL_LOGIN ? login_main : conn_main, &conns[started]) != 0) {
                fprintf(stderr, "mlbench: cannot start thread %d\n", started);
                atomic_store(&stop_flag, true);
                status = 2;
                break;
            }
        }
        /* The other process's CPU time over the measured window only: sampled when the
         * warm-up ends and when the run does (or, with --ops, when the threads are done). */
        if (opt.cpu_pid && started == opt.conns) {
            sleep_until(t_measure_ns);
            cpu0 = cpu_ticks_of(opt.cpu_pid);
            if (opt.have_seconds)
                sleep_until(t_end_ns);
        }
        for (int i = 0; i < started; i++)
            pthread_join(conns[i].thread, NULL);
        if (opt.cpu_pid && cpu0 >= 0) {
            cpu1 = cpu_ticks_of(opt.cpu_pid);
            rss = rss_kb_of(opt.cpu_pid);
        }
    }
    uint64_t t_done = atomic_load(&t_stopped_ns);
    if (t_done == 0)
        t_done = opt.have_ops ? now_ns() : t_end_ns;

    struct hist *total = calloc(1, sizeof(*total));
    struct hist *phases = calloc(LOGIN_PHASES, sizeof(*phases));
    int64_t ops = 0;
    for (int i = 0; i < opened; i++) {
        if (conns[i].fatal[0]) {
            fprintf(stderr, "mlbench: %s\n", conns[i].fatal);
            status = 2;
        }
        if (total)
            hist_merge(total, &conns[i].hist);
        for (int k = 0; phases && conns[i].phases && k < LOGIN_PHASES; k++)
            hist_merge(&phases[k], &conns[i].phases[k]);
        ops += conns[i].ops_done;
        conn_free(&conns[i]);
    }
    free(conns);
    if (!total || !phases) {
        fprintf(stderr, "mlbench: out of memory\n");
        free(total);
        free(phases);
        return 2;
    }
    /* The login workload also tells how long each step of a login took (medians). */
    char phase_json[256] = "";
    if (opt.wl == WL_LOGIN) {
        size_t o = (size_t)snprintf(phase_json, sizeof(phase_json), ",\"phases_p50_us\":{");
        for (int k = 0; k < (opt.user ? LOGIN_PHASES : 2); k++)
            o += (size_t)snprintf(phase_json + o, sizeof(phase_json) - o, "%s\"%s\":%" PRIu64,
                                  k ? "," : "", phase_names[k], hist_percentile(&phases[k], 50));
        snprintf(phase_json + o, sizeof(phase_json) - o, "}");
    }
    double secs = t_done > t_measure_ns ? (double)(t_done - t_measure_ns) / 1e9 : 0;
    printf("{\"workload\":\"%s\",\"conns\":%d,\"pipeline\":%d,\"ops\":%" PRId64
           ",\"seconds\":%.3f,\"ops_per_sec\":%.0f,\"p50_us\":%" PRIu64 ",\"p90_us\":%" PRIu64
           ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"errors\":%" PRId64
           ",\"read_pref\":\"%s\",\"auth\":\"%s\"%s",
           workload_names[opt.wl], opt.conns, opt.pipeline, ops, secs,
           secs > 0 ? (double)ops / secs : 0.0, hist_percentile(total, 50),
           hist_percentile(total, 90), hist_percentile(total, 99), total->max,
           (int64_t)atomic_load(&total_errors), opt.read_pref ? opt.read_pref : "",
           opt.user ? scram_mech_name(opt.mech) : "", phase_json);
    if (cpu0 >= 0 && cpu1 >= cpu0)
        printf(",\"cpu_ticks\":%lld,\"clk_tck\":%ld,\"rss_kb\":%ld", cpu1 - cpu0,
               sysconf(_SC_CLK_TCK), rss);
    printf("}\n");
    free(total);
    free(phases);
    if (status == 0 && atomic_load(&total_errors) > 0)
        status = 1;
    return status;
}
