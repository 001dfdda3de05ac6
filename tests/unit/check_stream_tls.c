/*
 * check_stream_tls.c: the TLS state machine of the stream (stream.c), on a real libuv loop.
 *
 * One end of a socketpair is the stream under test (uv_pipe_open). At the other end the test is
 * the peer: an OpenSSL SSL of its own on memory BIOs, whose ciphertext the test itself reads from
 * and writes to the raw socket. That way the test decides how TLS bytes are chunked: every byte in
 * its own write(2) (each read by the stream before the next is written), one record at a time,
 * or many records in one write.
 *
 * The contexts come from tls_build() with a configuration made by config_load_string(), so the
 * stream is tested with what the daemon runs (TLS 1.2 minimum, no renegotiation). Certificates are
 * made before each test case runs, with the openssl command line, in a temporary directory that is
 * removed after it: a CA, a server certificate for localhost and 127.0.0.1 signed by it, and a
 * second CA that signed nothing, for a client that must not trust the server.
 *
 * Cases: handshakes and frames with every byte in its own write, on both sides and in TLS 1.2 and
 * 1.3; frames and records (many frames in a record, a frame over many records, many records in a
 * read); holding a frame while records arrive; renegotiation refused; close_notify both ways;
 * plaintext on a TLS port; certificates that do not verify; writes, reported only once their
 * ciphertext is on the socket; key updates while a write is in flight; a stale error on OpenSSL's
 * queue.
 *
 * Every test ends with every handle closed, nothing charged to the budget, and
 * uv_loop_close() == 0. The peer runs in the same thread as the stream and therefore shares
 * OpenSSL's error queue: every peer operation empties the queue before and after it, so that what
 * the stream sees is its own.
 */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "check_main.h"
#include "test_dir.h"
#include "config.h"
#include "tls.h"

#define MiB (1024 * 1024)
/* Loop iterations a test waits for something before it gives up. */
#define GUARD 20000

/* --- certificates --------------------------------------------------------------------------- */

/*
 * ca.pem/ca.key and other-ca.pem/other-ca.key: two CAs; server.pem: a certificate for localhost
 * and 127.0.0.1 signed by the first, then its key. EC P-256 throughout, because RSA key
 * generation would make the suite's start slow.
 */
static void make_certificates(void)
{
    if (test_dir[0])
        return;
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/check_stream_tls.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    test_write_file("server.ext", "basicConstraints = CA:FALSE\n"
                                  "keyUsage = digitalSignature\n"
                                  "extendedKeyUsage = serverAuth\n"
                                  "subjectAltName = DNS:localhost,IP:127.0.0.1\n");
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    char cmd[1024];
    const char *cas[] = {"ca", "other-ca"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd),
                 "openssl req -x509 %s -keyout %s.key -out %s.pem -subj /CN=stream-tls-%s -days 2 "
                 "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign",
                 ec, cas[i], cas[i], cas[i]);
        test_run(cmd);
    }
    snprintf(cmd, sizeof(cmd),
             "openssl req -new %s -keyout server.key -out server.csr -subj /CN=localhost && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 4096 -days 2 "
             "-extfile server.ext -out server.crt && cat server.crt server.key > server.pem",
             ec);
    test_run(cmd);
}

static void remove_certificates(void)
{
    if (!test_dir[0])
        return;
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", test_dir) > 0 && system(cmd) != 0)
        fprintf(stderr, "check_stream_tls: could not remove %s\n", test_dir);
    free(cmd);
    test_dir[0] = '\0';
}

/* Builds contexts with tls_build from ini text: server (server.pem) and client (trusting ca). */
static void build_contexts(struct tls_contexts *t, const char *client_ca)
{
    char ini[4 * PATH_MAX], err[2048];
    snprintf(ini, sizeof(ini),
             "[mongolb]\ntls_mode = require\ntls_certificate_key_file = %s\n"
             "[upstream]\nseeds = 127.0.0.1:27017\ntls = true\ntls_ca_file = %s\n",
             test_path("server.pem"), test_path(client_ca));
    struct mlb_config c;
    ck_assert_msg(config_load_string(ini, "stream-tls.ini", &c, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(tls_build(&c, t, err, sizeof(err)) == 0, "%s", err);
    config_free(&c);
}

/* --- the fixture ------------------------------------------------------------------------------ */

/* The test's end of the connection: an SSL whose ciphertext the test moves itself. */
struct peer {
    SSL *ssl;
    BIO *in;  /* ciphertext from the stream, for ssl to read */
    BIO *out; /* ciphertext ssl wrote, for the test to send */
    int fd;
    struct wire_buf queue; /* ciphertext taken from out and not yet written to fd */
    size_t queue_off;
    size_t skip;       /* bytes at the front of what fd gives that are not the stream's */
    size_t recv_total; /* the stream's bytes read from fd (after skip) */
    bool done;         /* handshake finished */
    bool failed;
    char why[256]; /* OpenSSL's reason when it failed */
    bool zero_return;
    struct wire_buf plain; /* plaintext ssl read */
};

struct fx {
    uv_loop_t loop;
    struct stream_ctx ctx;
    struct stream s;
    int fd; /* the stream's end of the socketpair */
    struct peer p;
    struct tls_contexts tc;    /* the server's certificate; the client trusts its CA */
    struct tls_contexts wrong; /* its client trusts only the other CA */
    /* What the owner saw. */
    struct wire_buf got;
    int frames;
    int32_t next_id;
    int order_errors;
    int secure_calls;
    int secure_status;
    int errors;
    int last_error;
    char events[16]; /* 'S' on_secure, 'E' on_error, in order */
    char why[256];   /* stream_tls_error() when on_secure or on_error last ran */
    int nevents;
    int written;
    int write_status;
    bool in_write;
    int written_inside;
    size_t on_socket_at_written; /* stream bytes on the socket or read when on_written ran */
    int closed;
    int after_close; /* callbacks other than on_closed made once the stream was closing */
    /* What the owner does. */
    int hold_at; /* hold this frame (1-based), 0: never */
    const uint8_t *held;
    size_t held_len;
    bool close_on_error;
    int no_reneg_alerts; /* no_renegotiation warnings the stream's SSL sent */
    bool finished;       /* fx_finish() closed everything */
    /* Buffers of the test's own, freed with the fixture, so that a test that fails half-way
     * (leaving by longjmp under CK_FORK=no) leaks nothing. */
    struct wire_buf scratch[8];
    int nscratch;
};

static struct fx F;

static void note_event(struct fx *f, char c)
{
    if (f->nevents < (int)sizeof(f->events) - 1)
        f->events[f->nevents++] = c;
}

static int on_frame(struct stream *s, uint8_t *frame, size_t len)
{
    struct fx *f = s->owner;
    if (s->closing)
        f->after_close++;
    ck_assert_uint_ge(len, 16);
    ck_assert_int_eq(wire_get_i32(frame), (int32_t)len);
    int32_t id = wire_get_i32(frame + 4);
    if (id != f->next_id)
        f->order_errors++;
    f->next_id = id + 1;
    ck_assert_int_eq(wire_buf_append(&f->got, frame, len), 0);
    f->frames++;
    if (f->hold_at == f->frames) {
        f->held = frame;
        f->held_len = len;
        return STREAM_HOLD;
    }
    return STREAM_NEXT;
}

static void on_error(struct stream *s, int status)
{
    struct fx *f = s->owner;
    if (s->closing)
        f->after_close++;
    f->errors++;
    f->last_error = status;
    note_event(f, 'E');
    /* Read here: the TLS state, and its message, go with the stream once it is closed. */
    snprintf(f->why, sizeof(f->why), "%s", stream_tls_error(s));
    if (f->close_on_error)
        stream_close(s);
}

static int socket_queued(int fd)
{
    int n = 0;
    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

static void on_written(struct stream *s, int status)
{
    struct fx *f = s->owner;
    if (s->closing)
        f->after_close++;
    if (f->in_write)
        f->written_inside++;
    f->written++;
    f->write_status = status;
    /* Whatever the stream has put on the socket so far: read by the peer, or still queued. */
    f->on_socket_at_written = f->p.recv_total + (size_t)socket_queued(f->p.fd);
}

static void on_secure(struct stream *s, int status)
{
    struct fx *f = s->owner;
    if (s->closing)
        f->after_close++;
    f->secure_calls++;
    f->secure_status = status;
    note_event(f, 'S');
    snprintf(f->why, sizeof(f->why), "%s", stream_tls_error(s));
}

static void on_closed(struct stream *s)
{
    struct fx *f = s->owner;
    f->closed++;
}

static const struct stream_cb CB = {
    .on_frame = on_frame,
    .on_error = on_error,
    .on_written = on_written,
    .on_secure = on_secure,
    .on_closed = on_closed,
};

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* Checked fixture: a loop, a stream on one end of a socketpair (not reading yet), contexts. */
static void setup(void)
{
    struct fx *f = &F;
    memset(f, 0, sizeof(*f));
    /* A write to a socket whose reader has gone must be an error, not a signal, as in the daemon
     * (main.c ignores SIGPIPE); stream_close writes close_notify to whatever is there. */
    signal(SIGPIPE, SIG_IGN);
    ERR_clear_error();
    build_contexts(&f->tc, "ca.pem");
    build_contexts(&f->wrong, "other-ca.pem");
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    ck_assert_int_eq(stream_ctx_init(&f->ctx, &f->loop, 64 * MiB), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    f->next_id = 1;
    ck_assert_int_eq(stream_init_pipe(&f->ctx, &f->s, &CB, f, WIRE_MAX_MESSAGE_SIZE), 0);
    ck_assert_int_eq(uv_pipe_open(&f->s.h.pipe, sv[0]), 0);
    f->fd = sv[0];
    f->p.fd = sv[1];
    set_nonblocking(f->p.fd);
}

static void free_peer(struct fx *f);

static void teardown(void)
{
    struct fx *f = &F;
    if (!f->finished) {
        /* The test failed half-way. Close what it left, without checks, so that with CK_FORK=no
         * the next test starts clean and the sanitizers see no leak. */
        stream_close(&f->s);
        for (int i = 0; i < GUARD && !f->closed; i++)
            uv_run(&f->loop, UV_RUN_NOWAIT);
        free_peer(f);
        stream_ctx_close(&f->ctx);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        free(f->ctx.shared);
        f->ctx.shared = NULL;
        uv_loop_close(&f->loop);
    }
    tls_free(&f->tc);
    tls_free(&f->wrong);
}

/* The peer: an SSL from ctx on two memory BIOs, at most TLS version max_version (0: any). */
static void peer_new(struct fx *f, SSL_CTX *ctx, bool server, int max_version)
{
    struct peer *p = &f->p;
    p->ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(p->ssl);
    p->in = BIO_new(BIO_s_mem());
    p->out = BIO_new(BIO_s_mem());
    ck_assert(p->in && p->out);
    SSL_set_bio(p->ssl, p->in, p->out);
    if (max_version)
        ck_assert_int_eq(SSL_set_max_proto_version(p->ssl, max_version), 1);
    if (server) {
        SSL_set_accept_state(p->ssl);
    } else {
        ck_assert_int_eq(tls_client_prepare(p->ssl, "127.0.0.1", true), 0);
        SSL_set_connect_state(p->ssl);
    }
}

/* Notes the peer's failure and empties the error queue, which the stream shares. */
static void peer_failed(struct peer *p)
{
    p->failed = true;
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, p->why, sizeof(p->why));
    else
        snprintf(p->why, sizeof(p->why), "no reason");
    ERR_clear_error();
}

/* Reads what the stream wrote into the peer's input BIO. */
static void peer_recv(struct fx *f)
{
    struct peer *p = &f->p;
    for (;;) {
        uint8_t buf[65536];
        ssize_t n = read(p->fd, buf, sizeof(buf));
        if (n <= 0) {
            ck_assert_msg(n == 0 || errno == EAGAIN || errno == EWOULDBLOCK, "read: %s",
                          strerror(errno));
            return;
        }
        size_t off = 0;
        if (p->skip) {
            off = (size_t)n < p->skip ? (size_t)n : p->skip;
            p->skip -= off;
        }
        size_t k = (size_t)n - off;
        if (k == 0)
            continue;
        /* Without an SSL (a plaintext client) the bytes are the plaintext. */
        if (p->ssl)
            ck_assert_int_eq(BIO_write(p->in, buf + off, (int)k), (int)k);
        else
            ck_assert_int_eq(wire_buf_append(&p->plain, buf + off, k), 0);
        p->recv_total += k;
    }
}

/* Moves the ciphertext the peer's SSL produced to the send queue. */
static void peer_collect(struct fx *f)
{
    struct peer *p = &f->p;
    size_t n = BIO_ctrl_pending(p->out);
    if (n == 0)
        return;
    ck_assert_int_eq(wire_buf_reserve(&p->queue, n), 0);
    ck_assert_int_eq(BIO_read(p->out, p->queue.data + p->queue.len, (int)n), (int)n);
    p->queue.len += n;
}

/* Writes as much of the send queue as the socket takes now. */
static void peer_feed(struct fx *f)
{
    struct peer *p = &f->p;
    while (p->queue_off < p->queue.len) {
        ssize_t n = write(p->fd, p->queue.data + p->queue_off, p->queue.len - p->queue_off);
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "write: %s", strerror(errno));
            return;
        }
        p->queue_off += (size_t)n;
    }
    wire_buf_reset(&p->queue);
    p->queue_off = 0;
}

/* One loop iteration that does not block, with the peer's bytes moved both ways around it. */
static void pump(struct fx *f, int iterations)
{
    for (int i = 0; i < iterations; i++) {
        peer_collect(f);
        peer_feed(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        peer_recv(f);
    }
}

#define PUMP_UNTIL(f, cond)                                                                        \
    do {                                                                                           \
        int guard_ = 0;                                                                            \
        while (!(cond)) {                                                                          \
            ck_assert_msg(guard_++ < GUARD, "never happened: %s", #cond);                          \
            pump((f), 1);                                                                          \
        }                                                                                          \
    } while (0)

/* Runs the loop until the stream has read everything on its socket. */
static void settle(struct fx *f)
{
    /* Once closing, libuv has closed the stream's descriptor: nothing is left to read. */
    for (int i = 0; !f->s.closing && socket_queued(f->fd) > 0; i++) {
        ck_assert_msg(i < GUARD, "the stream does not read its socket");
        uv_run(&f->loop, UV_RUN_NOWAIT);
        peer_recv(f);
    }
}

/*
 * Sends what the peer has queued one byte per write(2), each read by the stream before the next
 * is written. Returns the number of frames the owner had before the last byte went out.
 */
static int send_bytewise(struct fx *f)
{
    struct peer *p = &f->p;
    peer_collect(f);
    int before_last = f->frames;
    while (p->queue_off < p->queue.len) {
        if (p->queue_off + 1 == p->queue.len)
            before_last = f->frames;
        ck_assert_int_eq(write(p->fd, p->queue.data + p->queue_off, 1), 1);
        p->queue_off++;
        settle(f);
    }
    wire_buf_reset(&p->queue);
    p->queue_off = 0;
    return before_last;
}

/* Sends what the peer has queued in one write(2) (it must fit) and lets the stream read it. */
static void send_whole(struct fx *f)
{
    peer_collect(f);
    peer_feed(f);
    ck_assert_uint_eq(f->p.queue.len, 0);
    settle(f);
}

/* One step of the peer's handshake. */
static void peer_handshake_step(struct fx *f)
{
    struct peer *p = &f->p;
    if (p->done || p->failed)
        return;
    ERR_clear_error();
    int r = SSL_do_handshake(p->ssl);
    if (r == 1) {
        p->done = true;
        return;
    }
    int e = SSL_get_error(p->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        peer_failed(p);
    ERR_clear_error();
}

/* Reads the plaintext the peer's SSL has (handshake messages after the handshake included). */
static void peer_read(struct fx *f)
{
    struct peer *p = &f->p;
    while (!p->failed && !p->zero_return) {
        uint8_t buf[16384];
        ERR_clear_error();
        int n = SSL_read(p->ssl, buf, sizeof(buf));
        if (n > 0) {
            ck_assert_int_eq(wire_buf_append(&p->plain, buf, (size_t)n), 0);
            continue;
        }
        int e = SSL_get_error(p->ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN)
            p->zero_return = true;
        else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            peer_failed(p);
        ERR_clear_error();
        return;
    }
}

/* The peer encrypts len bytes (as one record when len <= 16384). */
static void peer_write(struct fx *f, const void *data, size_t len)
{
    ERR_clear_error();
    ck_assert_int_eq(SSL_write(f->p.ssl, data, (int)len), (int)len);
}

/*
 * Drives both handshakes until each side has finished or failed, sending the peer's bytes one per
 * write(2) when bytewise. The peer's part of the work is done between loop iterations.
 */
static void handshake(struct fx *f, bool bytewise)
{
    struct peer *p = &f->p;
    for (int i = 0;; i++) {
        ck_assert_msg(i < GUARD, "the handshake does not end: peer done %d failed %d, stream %d",
                      p->done, p->failed, f->secure_calls);
        peer_recv(f);
        peer_handshake_step(f);
        if (bytewise)
            send_bytewise(f);
        else
            send_whole(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        bool peer_over = p->done || p->failed;
        bool stream_over = f->secure_calls > 0 || f->errors > 0;
        if (peer_over && stream_over)
            break;
    }
    pump(f, 3);
    peer_read(f); /* TLS 1.3 session tickets, alerts */
}

/* A server-side stream: stream_tls_accept before reading, as client.c does. */
static void stream_server(struct fx *f, bool plain_ok)
{
    ck_assert_int_eq(stream_tls_accept(&f->s, f->tc.server, plain_ok), 0);
    ck_assert_int_eq(stream_read_start(&f->s), 0);
}

/* A client-side stream from ctx checking host: reading first, then the handshake (pool.c). */
static void stream_client(struct fx *f, SSL_CTX *ctx, const char *host, int max_version)
{
    SSL *ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(ssl);
    ck_assert_int_eq(tls_client_prepare(ssl, host, true), 0);
    if (max_version)
        ck_assert_int_eq(SSL_set_max_proto_version(ssl, max_version), 1);
    ck_assert_int_eq(stream_read_start(&f->s), 0);
    ck_assert_int_eq(stream_tls_client(&f->s, ssl), 0);
}

/* A TLS stream fully set up against the peer (server side when server, else client side). */
static void connected(struct fx *f, bool server, int version)
{
    if (server) {
        if (version)
            ck_assert_int_eq(SSL_CTX_set_max_proto_version(f->tc.server, version), 1);
        stream_server(f, false);
        peer_new(f, f->tc.client, false, version);
    } else {
        peer_new(f, f->tc.server, true, version);
        stream_client(f, f->tc.client, "127.0.0.1", version);
    }
    handshake(f, false);
    ck_assert_msg(f->p.done, "peer: %s", f->p.why);
    ck_assert_int_eq(f->secure_calls, 1);
    ck_assert_int_eq(f->secure_status, 0);
    ck_assert_int_eq(f->errors, 0);
    if (version)
        ck_assert_int_eq(SSL_version(stream_ssl(&f->s)), version);
}

/* An empty buffer that lives until the test ends. */
static struct wire_buf *scratch(struct fx *f)
{
    ck_assert_int_lt(f->nscratch, (int)(sizeof(f->scratch) / sizeof(f->scratch[0])));
    return &f->scratch[f->nscratch++];
}

/* Frees the peer and the test's buffers. */
static void free_peer(struct fx *f)
{
    for (int i = 0; i < f->nscratch; i++)
        wire_buf_free(&f->scratch[i]);
    f->nscratch = 0;
    SSL_free(f->p.ssl); /* frees both BIOs */
    f->p.ssl = NULL;
    ERR_clear_error();
    if (f->p.fd >= 0)
        close(f->p.fd);
    f->p.fd = -1;
    wire_buf_free(&f->p.queue);
    wire_buf_free(&f->p.plain);
    wire_buf_free(&f->got);
}

/* Closes the stream, waits for on_closed, and checks that nothing is left anywhere. Everything is
 * released before the checks, so that a failed check leaves nothing behind for the next test
 * when they share a process (CK_FORK=no). */
static void fx_finish(struct fx *f)
{
    stream_close(&f->s);
    PUMP_UNTIL(f, f->closed > 0);
    pump(f, 2);
    free_peer(f);
    size_t budget_used = f->ctx.budget_used, buffered = f->ctx.buffered;
    stream_ctx_close(&f->ctx);
    int alive = uv_run(&f->loop, UV_RUN_DEFAULT);
    free(f->ctx.shared); /* as proxy_free does: stream_ctx_close only closes the handles */
    f->ctx.shared = NULL;
    int loop_close = uv_loop_close(&f->loop);
    f->finished = true;
    ck_assert_int_eq(f->closed, 1);
    ck_assert_int_eq(f->after_close, 0);
    ck_assert_int_eq(f->written_inside, 0);
    ck_assert_uint_eq(budget_used, 0);
    ck_assert_uint_eq(buffered, 0);
    ck_assert_int_eq(alive, 0);
    ck_assert_int_eq(loop_close, 0);
}

/* Appends a frame of len bytes (>= 16) with request id id, its body depending on id. */
static void put_frame(struct wire_buf *b, int32_t len, int32_t id)
{
    uint8_t h[16];
    struct wire_header hd = {len, id, 0, WIRE_OP_MSG};
    wire_header_write(h, &hd);
    ck_assert_int_eq(wire_buf_append(b, h, 16), 0);
    ck_assert_int_eq(wire_buf_reserve(b, (size_t)len - 16), 0);
    for (int32_t i = 16; i < len; i++)
        b->data[b->len++] = (uint8_t)(id * 7 + i * 13);
}

/* Calls stream_write with in_write up around it, so that on_written from inside is seen. */
static int write_flagged(struct fx *f, const uv_buf_t *bufs, unsigned n)
{
    f->in_write = true;
    int rc = stream_write(&f->s, bufs, n);
    f->in_write = false;
    return rc;
}

/* The stream writes a frame back and the peer must decrypt exactly it. */
static void reply_reaches_peer(struct fx *f, int32_t len, int32_t id)
{
    struct wire_buf *b = scratch(f);
    put_frame(b, len, id);
    uv_buf_t buf = uv_buf_init((char *)b->data, (unsigned)b->len);
    int written = f->written;
    wire_buf_reset(&f->p.plain);
    ck_assert_int_eq(write_flagged(f, &buf, 1), 0);
    ck_assert_int_eq(f->written, written); /* never from inside stream_write */
    for (int i = 0; f->written == written || f->p.plain.len < b->len; i++) {
        ck_assert_msg(i < GUARD, "the reply does not arrive: %zu of %zu bytes", f->p.plain.len,
                      b->len);
        pump(f, 1);
        peer_read(f);
    }
    ck_assert_int_eq(f->write_status, 0);
    ck_assert_uint_eq(f->p.plain.len, b->len);
    ck_assert_mem_eq(f->p.plain.data, b->data, b->len);
}

static const int VERSIONS[2] = {TLS1_3_VERSION, TLS1_2_VERSION};

/* --- (1) handshakes and frames, every byte in its own write ---------------------------------- */

/* _i: bit 0 picks TLS 1.2 over 1.3; bit 1 lets plaintext in too (the first byte is sniffed). */
START_TEST(server_bytewise)
{
    struct fx *f = &F;
    int version = VERSIONS[_i & 1];
    bool plain_ok = _i & 2;
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(f->tc.server, version), 1);
    stream_server(f, plain_ok);
    ck_assert(stream_tls_pending(&f->s)); /* the first byte is awaited */
    ck_assert(!stream_is_tls(&f->s));
    peer_new(f, f->tc.client, false, version);

    handshake(f, true);
    ck_assert_msg(f->p.done, "peer: %s", f->p.why);
    ck_assert_int_eq(f->secure_calls, 1);
    ck_assert_int_eq(f->secure_status, 0);
    ck_assert_int_eq(f->errors, 0);
    ck_assert(stream_is_tls(&f->s));
    ck_assert(!stream_tls_pending(&f->s));
    ck_assert_int_eq(SSL_version(stream_ssl(&f->s)), version);
    ck_assert_str_eq(stream_tls_error(&f->s), "");
    ck_assert_int_eq(SSL_get_verify_result(f->p.ssl), X509_V_OK);

    /* A frame in one record, its bytes one by one: delivered whole with its last byte. */
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 300, 1);
    peer_write(f, fr->data, fr->len);
    int before_last = send_bytewise(f);
    ck_assert_int_eq(before_last, 0);
    ck_assert_int_eq(f->frames, 1);
    ck_assert_mem_eq(f->got.data, fr->data, fr->len);
    ck_assert_int_eq(f->errors, 0);
    reply_reaches_peer(f, 200, 77);
    fx_finish(f);
}
END_TEST

START_TEST(client_bytewise)
{
    struct fx *f = &F;
    int version = VERSIONS[_i & 1];
    peer_new(f, f->tc.server, true, version);
    stream_client(f, f->tc.client, "127.0.0.1", version);
    ck_assert(stream_is_tls(&f->s));
    ck_assert(stream_tls_pending(&f->s));
    ck_assert_int_eq(f->secure_calls, 0);

    handshake(f, true);
    ck_assert_msg(f->p.done, "peer: %s", f->p.why);
    ck_assert_int_eq(f->secure_calls, 1);
    ck_assert_int_eq(f->secure_status, 0);
    ck_assert_int_eq(f->errors, 0);
    ck_assert(!stream_tls_pending(&f->s));
    ck_assert_int_eq(SSL_version(stream_ssl(&f->s)), version);
    ck_assert_int_eq(SSL_get_verify_result(stream_ssl(&f->s)), X509_V_OK);

    struct wire_buf *fr = scratch(f);
    put_frame(fr, 1000, 1);
    peer_write(f, fr->data, fr->len);
    ck_assert_int_eq(send_bytewise(f), 0);
    ck_assert_int_eq(f->frames, 1);
    ck_assert_mem_eq(f->got.data, fr->data, fr->len);
    reply_reaches_peer(f, 5000, 9);
    fx_finish(f);
}
END_TEST

/* --- (2) frames and records ------------------------------------------------------------------ */

START_TEST(pipelined_in_one_record)
{
    /* Far more frames than STREAM_FRAMES_PER_WAKEUP inside a single record. */
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    const int n = 5 * STREAM_FRAMES_PER_WAKEUP + 3;
    struct wire_buf *all = scratch(f);
    for (int i = 1; i <= n; i++)
        put_frame(all, 16 + i % 23, i);
    ck_assert_uint_le(all->len, 16384); /* one record */
    peer_write(f, all->data, all->len);
    send_whole(f);
    PUMP_UNTIL(f, f->frames == n);
    ck_assert_int_eq(f->order_errors, 0);
    ck_assert_uint_eq(f->got.len, all->len);
    ck_assert_mem_eq(f->got.data, all->data, all->len);
    ck_assert_int_eq(f->errors, 0);
    ck_assert_uint_eq(stream_pending_bytes(&f->s), 0);
    fx_finish(f);
}
END_TEST

START_TEST(one_frame_over_many_records)
{
    /* A 200 kB frame in records of uneven sizes, each record sent and read on its own. */
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 200 * 1000, 1);
    const size_t cuts[] = {1, 3, 12, 16384, 7000, 16384, 1, 50000};
    size_t off = 0;
    int records = 0;
    for (size_t k = 0; off < fr->len; k++) {
        size_t n = k < sizeof(cuts) / sizeof(cuts[0]) ? cuts[k] : 16384;
        if (n > fr->len - off)
            n = fr->len - off;
        peer_write(f, fr->data + off, n);
        off += n;
        send_whole(f);
        pump(f, 1);
        records++;
        if (off < fr->len)
            ck_assert_msg(f->frames == 0, "delivered after %zu of %zu bytes", off, fr->len);
    }
    ck_assert_int_gt(records, 8);
    PUMP_UNTIL(f, f->frames == 1);
    ck_assert_uint_eq(f->got.len, fr->len);
    ck_assert_mem_eq(f->got.data, fr->data, fr->len);
    ck_assert(!stream_partial(&f->s));
    ck_assert_int_eq(f->errors, 0);
    fx_finish(f);
}
END_TEST

START_TEST(many_records_in_one_read)
{
    /*
     * Drivers write each message with its own SSL_write, so pipelined messages come as one
     * record each, and many of them can arrive in one read. Here 4 * STREAM_FRAMES_PER_WAKEUP
     * records of one frame each, sent in one write(2), and nothing after them: every frame must
     * be delivered without the peer sending anything more.
     */
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    const int n = 4 * STREAM_FRAMES_PER_WAKEUP;
    struct wire_buf *all = scratch(f);
    for (int i = 1; i <= n; i++) {
        size_t at = all->len;
        put_frame(all, 40, i);
        peer_write(f, all->data + at, 40);
    }
    send_whole(f);
    for (int i = 0; i < 200 && f->frames < n; i++)
        pump(f, 1);
    ck_assert_msg(f->frames == n, "%d of %d frames delivered, the rest left in OpenSSL", f->frames,
                  n);
    ck_assert_int_eq(f->order_errors, 0);
    ck_assert_mem_eq(f->got.data, all->data, all->len);
    fx_finish(f);
}
END_TEST

/* --- (3) holding a frame --------------------------------------------------------------------- */

START_TEST(held_frame_while_records_arrive)
{
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    f->hold_at = 1;
    /* Frames 1 and 2 in one record: 2 waits behind the held 1. */
    struct wire_buf *all = scratch(f);
    put_frame(all, 100, 1);
    put_frame(all, 100, 2);
    peer_write(f, all->data, all->len);
    send_whole(f);
    pump(f, 3);
    ck_assert_int_eq(f->frames, 1);
    ck_assert_ptr_nonnull(f->held);
    ck_assert_uint_eq(f->held_len, 100);
    uint8_t copy[100];
    memcpy(copy, f->held, 100);
    ck_assert_mem_eq(copy, all->data, 100);

    /* More records arrive, of one small frame each and of big frames over several records:
     * nothing is delivered and the held bytes stay where they are, unchanged. Fewer than
     * STREAM_FRAMES_PER_WAKEUP records in all, so that this test is about holding only
     * (held_then_many_records goes past that). */
    int next = 3;
    for (int round = 0; round < 10; round++) {
        size_t at = all->len;
        put_frame(all, 60, next++);
        peer_write(f, all->data + at, all->len - at);
        at = all->len;
        put_frame(all, 40000, next++); /* three records */
        peer_write(f, all->data + at, all->len - at);
        pump(f, 2);
        ck_assert_int_eq(f->frames, 1);
        ck_assert_ptr_eq(f->held, f->s.rbuf.data + f->s.rpos);
        ck_assert_mem_eq(f->held, copy, 100);
    }
    ck_assert_int_eq(f->errors, 0);

    /* Release: delivery goes on from the loop, not from inside stream_release, up to the end. */
    f->hold_at = 0;
    stream_release(&f->s);
    ck_assert_int_eq(f->frames, 1);
    PUMP_UNTIL(f, f->frames == next - 1);
    ck_assert_int_eq(f->order_errors, 0);
    ck_assert_uint_eq(f->got.len, all->len);
    ck_assert_mem_eq(f->got.data, all->data, all->len);

    /* Holding again, then releasing: the frames behind wait, then come. */
    f->hold_at = f->frames + 1;
    size_t at = all->len;
    for (int i = 0; i < 3; i++)
        put_frame(all, 64, next++);
    peer_write(f, all->data + at, all->len - at);
    pump(f, 5);
    ck_assert_int_eq(f->frames, next - 3);
    stream_release(&f->s);
    PUMP_UNTIL(f, f->frames == next - 1);
    ck_assert_int_eq(f->order_errors, 0);
    ck_assert_int_eq(f->errors, 0);
    fx_finish(f);
}
END_TEST

START_TEST(held_then_many_records)
{
    /* The realistic way many records pile up: a request is held (forwarded to a server) while
     * the client goes on pipelining one message per record. On release, all must come. */
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    f->hold_at = 1;
    const int n = 3 * STREAM_FRAMES_PER_WAKEUP;
    struct wire_buf *all = scratch(f);
    for (int i = 1; i <= n; i++) {
        size_t at = all->len;
        put_frame(all, 50, i);
        peer_write(f, all->data + at, 50);
        send_whole(f);
    }
    pump(f, 3);
    ck_assert_int_eq(f->frames, 1);
    f->hold_at = 0;
    stream_release(&f->s);
    for (int i = 0; i < 200 && f->frames < n; i++)
        pump(f, 1);
    ck_assert_msg(f->frames == n, "%d of %d frames delivered after the release", f->frames, n);
    ck_assert_mem_eq(f->got.data, all->data, all->len);
    fx_finish(f);
}
END_TEST

START_TEST(held_frame_stops_reading)
{
    /*
     * stream.h: buffers are bounded by the budget, and a stream with no room stops being read
     * until the owner lets go of its frame (check_stream.c's hold_until_release asserts that a
     * plaintext stream stops reading). Over TLS the ciphertext behind a held frame must not pile
     * up without bound either: 8 MiB sent while the first frame is held must not all be taken.
     */
    struct fx *f = &F;
    connected(f, true, 0);
    f->hold_at = 1;
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 100, 1);
    peer_write(f, fr->data, fr->len);
    send_whole(f);
    pump(f, 3);
    ck_assert_int_eq(f->frames, 1);
    const int n = 8 * MiB / 16000;
    wire_buf_reset(fr);
    for (int i = 2; i < 2 + n; i++)
        put_frame(fr, 16000, i);
    for (size_t off = 0; off < fr->len; off += 16000)
        peer_write(f, fr->data + off, 16000);
    pump(f, 200);
    size_t left = f->p.queue.len - f->p.queue_off;
    ck_assert_msg(left > 0,
                  "all %zu bytes behind a held frame were read off the socket and buffered",
                  fr->len);
    f->hold_at = 0;
    stream_release(&f->s);
    PUMP_UNTIL(f, f->frames == n + 1);
    fx_finish(f);
}
END_TEST

/* --- (4) renegotiation ------------------------------------------------------------------------ */

/* Counts the no_renegotiation warnings an SSL sends. (Its handshake callbacks are no guide:
 * OpenSSL reports HANDSHAKE_START and HANDSHAKE_DONE around a refused renegotiation too.) */
static void count_refusals(const SSL *ssl, int where, int ret)
{
    int *n = SSL_get_app_data(ssl);
    if ((where & SSL_CB_WRITE_ALERT) && ret == (SSL3_AL_WARNING << 8 | SSL_AD_NO_RENEGOTIATION))
        (*n)++;
}

START_TEST(renegotiation_refused)
{
    /* _i = 0: the peer is a client and sends a new ClientHello to a server-side stream;
     * _i = 1: the peer is a server and sends a HelloRequest to a client-side stream. */
    struct fx *f = &F;
    bool server = _i == 0;
    connected(f, server, TLS1_2_VERSION);
    SSL *mine = stream_ssl(&f->s);
    SSL_set_app_data(mine, &f->no_reneg_alerts);
    SSL_set_info_callback(mine, count_refusals);
    /* A renegotiation that completed would have replaced both Finished messages. */
    uint8_t fin[2][64];
    size_t fin_len[2] = {SSL_get_finished(mine, fin[0], 64),
                         SSL_get_peer_finished(mine, fin[1], 64)};
    ck_assert_uint_gt(fin_len[0], 0);

    /* The peer's own context refuses renegotiation too (tls_build): let it ask. */
    SSL_clear_options(f->p.ssl, SSL_OP_NO_RENEGOTIATION);
    ERR_clear_error();
    ck_assert_int_eq(SSL_renegotiate(f->p.ssl), 1);
    ck_assert_int_eq(SSL_renegotiate_pending(f->p.ssl), 1);
    f->p.done = false;
    for (int i = 0; i < 100 && !f->p.failed && !f->errors; i++) {
        peer_recv(f);
        if (!f->p.done)
            peer_handshake_step(f);
        else
            peer_read(f);
        pump(f, 1);
    }
    pump(f, 5);
    peer_read(f);

    /* Nothing crashed, the stream said no, and no new handshake finished: on_secure came once
     * and the Finished messages are those of the first handshake. */
    ck_assert_int_eq(f->no_reneg_alerts, 1);
    ck_assert_int_eq(f->secure_calls, 1);
    uint8_t now[64];
    ck_assert_uint_eq(SSL_get_finished(mine, now, 64), fin_len[0]);
    ck_assert_mem_eq(now, fin[0], fin_len[0]);
    ck_assert_uint_eq(SSL_get_peer_finished(mine, now, 64), fin_len[1]);
    ck_assert_mem_eq(now, fin[1], fin_len[1]);
    /* Then either the peer gave up (OpenSSL's does, with a fatal alert) and the stream failed
     * the connection cleanly, or the stream went on serving. */
    if (f->errors) {
        ck_assert_int_eq(f->errors, 1);
        ck_assert_int_eq(f->last_error, -EPROTO);
        ck_assert_str_ne(f->why, "");
    } else if (!f->p.failed) {
        struct wire_buf *fr = scratch(f);
        put_frame(fr, 50, 1);
        peer_write(f, fr->data, fr->len);
        send_whole(f);
        PUMP_UNTIL(f, f->frames == 1);
    }
    ck_assert_msg(f->p.failed || f->errors, "the renegotiation is still pending");
    if (f->p.failed)
        ck_assert_msg(strstr(f->p.why, "no renegotiation") != NULL, "peer: %s", f->p.why);
    fx_finish(f);
}
END_TEST

/* --- (5) close_notify ------------------------------------------------------------------------ */

START_TEST(peer_close_notify_is_eof)
{
    struct fx *f = &F;
    connected(f, (_i & 1) == 0, VERSIONS[_i >> 1]);
    /* Frame 1 on its own; then frame 2 and close_notify in one write. Each frame sent before the
     * end is delivered before on_error(UV_EOF), as on a plaintext stream. */
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 80, 1);
    peer_write(f, fr->data, fr->len);
    send_whole(f);
    pump(f, 2);
    ck_assert_int_eq(f->frames, 1);
    put_frame(fr, 90, 2);
    peer_write(f, fr->data + 80, 90);
    ERR_clear_error();
    ck_assert_int_ge(SSL_shutdown(f->p.ssl), 0);
    send_whole(f);
    pump(f, 3);
    ck_assert_msg(f->frames == 2, "%d frames: the one that came with close_notify is lost",
                  f->frames);
    ck_assert_mem_eq(f->got.data, fr->data, fr->len);
    ck_assert_int_eq(f->errors, 1);
    ck_assert_int_eq(f->last_error, UV_EOF);
    ck_assert_str_eq(stream_tls_error(&f->s), "");
    pump(f, 3);
    ck_assert_int_eq(f->errors, 1);
    fx_finish(f);
}
END_TEST

START_TEST(close_sends_close_notify)
{
    struct fx *f = &F;
    connected(f, (_i & 1) == 0, VERSIONS[_i >> 1]);
    stream_close(&f->s);
    PUMP_UNTIL(f, f->closed == 1);
    peer_recv(f);
    peer_read(f);
    ck_assert_msg(f->p.zero_return, "no close_notify (peer: %s)", f->p.failed ? f->p.why : "-");
    ck_assert(!f->p.failed);
    fx_finish(f);
}
END_TEST

/* --- (6) plaintext on a TLS port ---------------------------------------------------------------
 */

START_TEST(plaintext_refused_in_require_mode)
{
    struct fx *f = &F;
    stream_server(f, false);
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 60, 1); /* its first byte is 60, not 0x16 */
    ck_assert_int_eq(write(f->p.fd, fr->data, fr->len), (ssize_t)fr->len);
    pump(f, 3);
    ck_assert_int_eq(f->frames, 0);
    ck_assert_int_eq(f->errors, 1);
    ck_assert_int_eq(f->last_error, -EPROTO);
    ck_assert_msg(strstr(stream_tls_error(&f->s), "plaintext") != NULL, "error: %s",
                  stream_tls_error(&f->s));
    ck_assert_int_eq(f->secure_calls, 0);
    ck_assert(!stream_is_tls(&f->s));
    ck_assert_uint_eq(f->p.recv_total, 0); /* nothing was said to it */
    pump(f, 3);
    ck_assert_int_eq(f->errors, 1);
    fx_finish(f);
}
END_TEST

START_TEST(plaintext_allowed)
{
    struct fx *f = &F;
    stream_server(f, true);
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 60, 1);
    put_frame(fr, 30, 2);
    /* The first byte alone, so that the sniffing read holds nothing else. */
    ck_assert_int_eq(write(f->p.fd, fr->data, 1), 1);
    settle(f);
    ck_assert_int_eq(write(f->p.fd, fr->data + 1, fr->len - 1), (ssize_t)fr->len - 1);
    pump(f, 3);
    ck_assert_int_eq(f->frames, 2);
    ck_assert_mem_eq(f->got.data, fr->data, fr->len);
    ck_assert_int_eq(f->errors, 0);
    ck_assert_int_eq(f->secure_calls, 0);
    ck_assert(!stream_is_tls(&f->s));
    ck_assert(!stream_tls_pending(&f->s));
    ck_assert_ptr_null(stream_ssl(&f->s));
    ck_assert_str_eq(stream_tls_error(&f->s), "");
    /* Its replies are plaintext too. */
    char hi[] = "plain reply";
    uv_buf_t b = uv_buf_init(hi, sizeof(hi));
    ck_assert_int_eq(write_flagged(f, &b, 1), 0);
    PUMP_UNTIL(f, f->written == 1 && f->p.plain.len == sizeof(hi));
    ck_assert_mem_eq(f->p.plain.data, hi, sizeof(hi));
    fx_finish(f);
}
END_TEST

/* --- (7) certificates that do not verify ----------------------------------------------------- */

START_TEST(client_distrusts_server)
{
    /* _i = 0: the stream's context trusts another CA; _i = 1: the right CA, the wrong name. */
    struct fx *f = &F;
    int version = VERSIONS[_i >> 1];
    peer_new(f, f->tc.server, true, version);
    f->close_on_error = true;
    if ((_i & 1) == 0)
        stream_client(f, f->wrong.client, "127.0.0.1", version);
    else
        stream_client(f, f->tc.client, "db.example.com", version);
    handshake(f, false);
    ck_assert_int_eq(f->secure_calls, 1);
    ck_assert_int_eq(f->secure_status, -EPROTO);
    ck_assert_int_eq(f->errors, 1);
    ck_assert_int_eq(f->last_error, -EPROTO);
    ck_assert_str_eq(f->events, "SE"); /* on_secure first, then on_error */
    const char *why = f->why;
    ck_assert_msg(strstr(why, "certificate verification failed") != NULL, "error: %s", why);
    if ((_i & 1) == 0)
        ck_assert_msg(strstr(why, "unable to get local issuer certificate") != NULL, "error: %s",
                      why);
    else
        ck_assert_msg(strstr(why, "mismatch") != NULL, "error: %s", why);
    /* The server heard why: an alert. */
    ck_assert_msg(f->p.failed && strstr(f->p.why, "alert") != NULL, "peer: %s", f->p.why);
    ck_assert_int_eq(f->frames, 0);
    fx_finish(f);
}
END_TEST

START_TEST(peer_distrusts_stream)
{
    /* A server-side stream whose client does not trust it: the client's alert fails it. */
    struct fx *f = &F;
    stream_server(f, false);
    peer_new(f, f->wrong.client, false, VERSIONS[_i]);
    handshake(f, false);
    ck_assert_msg(f->p.failed, "the peer accepted an untrusted certificate");
    ck_assert_int_eq(f->secure_calls, 1);
    ck_assert_int_eq(f->secure_status, -EPROTO);
    ck_assert_int_eq(f->errors, 1);
    ck_assert_int_eq(f->last_error, -EPROTO);
    ck_assert_str_eq(f->events, "SE");
    const char *why = f->why;
    ck_assert_msg(strstr(why, "unknown ca") != NULL, "error: %s", why);
    fx_finish(f);
}
END_TEST

/* --- (8) writing ------------------------------------------------------------------------------ */

START_TEST(write_reported_after_ciphertext_is_out)
{
    struct fx *f = &F;
    connected(f, (_i & 1) == 0, VERSIONS[_i >> 1]);

    /* Before the handshake nothing may be written; here after it, a small write completes in the
     * socket at once, and is still reported from the loop. */
    char small[] = "0123456789abcdef";
    uv_buf_t sb = uv_buf_init(small, 16);
    ck_assert_int_eq(write_flagged(f, &sb, 1), 0);
    ck_assert_int_eq(f->written, 0);
    ck_assert_int_eq(write_flagged(f, &sb, 1), -EBUSY);
    pump(f, 2);
    ck_assert_int_eq(f->written, 1);
    ck_assert_int_eq(f->write_status, 0);
    PUMP_UNTIL(f, (peer_read(f), f->p.plain.len == 16));
    ck_assert_uint_eq(f->on_socket_at_written, f->p.recv_total);

    /* A write much larger than the socket takes: no report while the peer reads nothing, and
     * when it comes, every byte of its ciphertext is on the socket. */
    int small_buf = 8192;
    ck_assert_int_eq(setsockopt(f->fd, SOL_SOCKET, SO_SNDBUF, &small_buf, sizeof(small_buf)), 0);
    size_t big = 3 * MiB;
    struct wire_buf *d = scratch(f);
    ck_assert_int_eq(wire_buf_reserve(d, big), 0);
    uint8_t *data = d->data;
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    uv_buf_t bb[3] = {uv_buf_init((char *)data, 1000), uv_buf_init((char *)data + 1000, MiB),
                      uv_buf_init((char *)data + 1000 + MiB, (unsigned)(big - 1000 - MiB))};
    wire_buf_reset(&f->p.plain);
    ck_assert_int_eq(write_flagged(f, bb, 3), 0);
    ck_assert_int_eq(f->written, 1);
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(f->written, 1);
    ck_assert_int_gt(socket_queued(f->p.fd), 0);
    /* The peer reads in small steps, so the stream's write goes out in many pieces. */
    for (int i = 0; f->written == 1; i++) {
        ck_assert_msg(i < GUARD, "on_written never came");
        uint8_t buf[4096];
        ssize_t n = read(f->p.fd, buf, sizeof(buf));
        if (n > 0) {
            ck_assert_int_eq(BIO_write(f->p.in, buf, (int)n), (int)n);
            f->p.recv_total += (size_t)n;
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    ck_assert_int_eq(f->write_status, 0);
    for (int i = 0; f->p.plain.len < big; i++) {
        ck_assert_msg(i < GUARD, "%zu of %zu bytes arrived", f->p.plain.len, big);
        pump(f, 1);
        peer_read(f);
    }
    pump(f, 3);
    /* Nothing of the write came out after it was reported. */
    ck_assert_uint_eq(f->on_socket_at_written, f->p.recv_total);
    ck_assert_uint_eq(f->p.plain.len, big);
    ck_assert_mem_eq(f->p.plain.data, data, big);
    ck_assert_int_eq(f->written_inside, 0);
    fx_finish(f);
}
END_TEST

START_TEST(write_before_handshake_refused)
{
    struct fx *f = &F;
    peer_new(f, f->tc.server, true, 0);
    stream_client(f, f->tc.client, "127.0.0.1", 0);
    char x[] = "x";
    uv_buf_t b = uv_buf_init(x, 1);
    ck_assert_int_eq(write_flagged(f, &b, 1), -ENOTCONN);
    pump(f, 2);
    ck_assert_int_eq(f->written, 0);
    fx_finish(f);
}
END_TEST

START_TEST(key_updates_while_write_in_flight)
{
    /*
     * TLS 1.3: the peer asks for key updates while a large write of the stream is stuck in the
     * socket (uv_write under way). The stream answers each with a KeyUpdate of its own, appended
     * behind the ciphertext in flight; the write in flight must still go out intact.
     *
     * The write's ciphertext is sized to end just short of a power of two (records of 16384
     * bytes cost 22 more each), so that the answers do not fit the buffer it sits in. Where the
     * stream moves that buffer under libuv's feet, ASan reports it every time; without ASan the
     * outcome depends on whether realloc moves the block (EFAULT from the write, or garbage, or
     * nothing seen).
     */
    struct fx *f = &F;
    connected(f, true, TLS1_3_VERSION);
    /* Fill the stream's direction of the socket with bytes of the test's own, which the peer
     * will skip: the stream's whole write then waits in libuv. */
    uint8_t junk[4096];
    memset(junk, 0xee, sizeof(junk));
    for (;;) {
        ssize_t n = send(f->fd, junk, sizeof(junk), MSG_DONTWAIT);
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        f->p.skip += (size_t)n;
    }
    const size_t records = 16, len = 262144 - 22 * records - 200;
    struct wire_buf *big = scratch(f);
    put_frame(big, (int32_t)len, 1);
    uv_buf_t b = uv_buf_init((char *)big->data, (unsigned)big->len);
    ck_assert_int_eq(write_flagged(f, &b, 1), 0);
    ck_assert_int_eq(f->written, 0);

    /* Key updates, each followed by a frame (OpenSSL refuses more than 32 in a row). */
    struct wire_buf *frames = scratch(f);
    for (int i = 1; i <= 40; i++) {
        ck_assert_int_eq(SSL_key_update(f->p.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
        size_t at = frames->len;
        put_frame(frames, 20, i);
        peer_write(f, frames->data + at, 20);
        peer_collect(f);
        peer_feed(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    /* The peer does not read yet; everything it sent is taken. */
    for (int i = 0; f->frames < 40; i++) {
        ck_assert_msg(i < GUARD, "%d of 40 frames", f->frames);
        peer_collect(f);
        peer_feed(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    ck_assert_int_eq(f->errors, 0);
    /* Now the peer reads everything: the junk, the frame, the key updates. */
    for (int i = 0; f->written == 0 || f->p.plain.len < big->len; i++) {
        ck_assert_msg(i < GUARD && !f->p.failed && !f->errors,
                      "%zu of %zu bytes; peer: %s; stream error %d", f->p.plain.len, big->len,
                      f->p.failed ? f->p.why : "ok", f->last_error);
        pump(f, 1);
        peer_read(f);
    }
    ck_assert_int_eq(f->write_status, 0);
    ck_assert_uint_eq(f->p.plain.len, big->len);
    ck_assert_mem_eq(f->p.plain.data, big->data, big->len);
    /* And the connection still works both ways. */
    reply_reaches_peer(f, 100, 2);
    fx_finish(f);
}
END_TEST

/* --- callbacks once the owner has closed ----------------------------------------------------- */

START_TEST(no_callbacks_after_close_on_error)
{
    /*
     * The peer finishes its handshake and stops reading at once (a probe that only checks that
     * TLS comes up). The stream's last handshake bytes cannot be written: on_error (EPIPE), and
     * the owner closes the stream there, as owners do. Nothing may be reported after that; in
     * particular not on_secure(0) for a connection the owner has just given up.
     */
    struct fx *f = &F;
    int version = VERSIONS[_i];
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(f->tc.server, version), 1);
    stream_server(f, false);
    peer_new(f, f->tc.client, false, version);
    f->close_on_error = true;
    /* The client's second flight ends with its Finished, in TLS 1.2 and 1.3 alike: it stops
     * reading right after sending it. */
    int flights = 0;
    for (int i = 0; flights < 2; i++) {
        ck_assert_msg(i < GUARD && !f->p.failed, "peer: %s", f->p.why);
        peer_recv(f);
        peer_handshake_step(f);
        size_t before = f->p.queue.len;
        peer_collect(f);
        if (f->p.queue.len > before && ++flights == 2)
            ck_assert_int_eq(shutdown(f->p.fd, SHUT_RD), 0);
        peer_feed(f);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    PUMP_UNTIL(f, f->closed == 1);
    ck_assert_int_eq(f->errors, 1);
    ck_assert_int_eq(f->last_error, UV_EPIPE);
    ck_assert_msg(f->after_close == 0, "%d callback(s) after the owner closed; events: %s",
                  f->after_close, f->events);
    f->after_close = 0; /* reported above; fx_finish checks the rest */
    fx_finish(f);
}
END_TEST

START_TEST(stale_openssl_error_does_not_fail_stream)
{
    /*
     * OpenSSL's error queue is per thread, and the whole proxy is one thread. SSL_get_error()
     * reads that queue, so SSL_read()/SSL_do_handshake() must start with it empty (SSL_get_error
     * manual page). An error some other code left on it must not fail a healthy connection that
     * merely waits for the rest of a record.
     */
    struct fx *f = &F;
    connected(f, _i == 0, 0);
    struct wire_buf *fr = scratch(f);
    put_frame(fr, 100, 1);
    peer_write(f, fr->data, fr->len);
    peer_collect(f);
    /* Half a record first, with a stale error queued, then the rest. */
    size_t half = f->p.queue.len / 2;
    ck_assert_int_eq(write(f->p.fd, f->p.queue.data, half), (ssize_t)half);
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    settle(f);
    ERR_clear_error();
    ck_assert_int_eq(write(f->p.fd, f->p.queue.data + half, f->p.queue.len - half),
                     (ssize_t)(f->p.queue.len - half));
    wire_buf_reset(&f->p.queue);
    pump(f, 3);
    ck_assert_msg(f->errors == 0, "error %d: %s", f->last_error, stream_tls_error(&f->s));
    ck_assert_int_eq(f->frames, 1);
    fx_finish(f);
}
END_TEST

/* Adds a test case named name with the fixtures every test here needs. */
static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    /* The certificates are made in the parent (openssl is slow next to a test), once per case;
     * the contexts are built per test, in the test's own process. */
    tcase_add_unchecked_fixture(tc, make_certificates, remove_certificates);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *stream_tls_suite(void)
{
    Suite *s = suite_create("stream_tls");
    /* Loop indexes: see each test (TLS version, side, variant). */
    TCase *tc = tcase(s, "handshake");
    tcase_add_loop_test(tc, server_bytewise, 0, 4);
    tcase_add_loop_test(tc, client_bytewise, 0, 2);
    tc = tcase(s, "records");
    tcase_add_loop_test(tc, pipelined_in_one_record, 0, 2);
    tcase_add_loop_test(tc, one_frame_over_many_records, 0, 2);
    tcase_add_loop_test(tc, many_records_in_one_read, 0, 2);
    tc = tcase(s, "hold");
    tcase_add_loop_test(tc, held_frame_while_records_arrive, 0, 2);
    tcase_add_loop_test(tc, held_then_many_records, 0, 2);
    tcase_add_test(tc, held_frame_stops_reading);
    tc = tcase(s, "renegotiation");
    tcase_add_loop_test(tc, renegotiation_refused, 0, 2);
    tc = tcase(s, "close");
    tcase_add_loop_test(tc, peer_close_notify_is_eof, 0, 4);
    tcase_add_loop_test(tc, close_sends_close_notify, 0, 4);
    tcase_add_loop_test(tc, no_callbacks_after_close_on_error, 0, 2);
    tc = tcase(s, "plaintext");
    tcase_add_test(tc, plaintext_refused_in_require_mode);
    tcase_add_test(tc, plaintext_allowed);
    tc = tcase(s, "verify");
    tcase_add_loop_test(tc, client_distrusts_server, 0, 4);
    tcase_add_loop_test(tc, peer_distrusts_stream, 0, 2);
    tc = tcase(s, "write");
    tcase_add_loop_test(tc, write_reported_after_ciphertext_is_out, 0, 4);
    tcase_add_test(tc, write_before_handshake_refused);
    /* Alone in its case: under ASan it aborts the process, which CK_FORK=no runs share. */
    tc = tcase(s, "write_in_flight");
    tcase_add_test(tc, key_updates_while_write_in_flight);
    tc = tcase(s, "error_queue");
    tcase_add_loop_test(tc, stale_openssl_error_does_not_fail_stream, 0, 2);
    return s;
}

CHECK_MAIN(stream_tls_suite)
