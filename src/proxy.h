/*
 * proxy.h: the daemon's runtime objects and how they meet.
 *
 * One libuv loop runs everything. The objects, each in its own file:
 *  - struct proxy (proxy.c): the process: config, topology, cursor table, pins, pools, clients,
 *    counters; and the coordinator that reacts to topology events (a server failed or is gone,
 *    members changed), the janitor, shutdown and reload.
 *  - struct listener (listener.c): accepting, refusing over limits, unix socket ownership.
 *  - struct client (client.c): one application connection and its state machine. It handles one
 *    request at a time: classify, route (router.c), forward, relay the reply, then the next.
 *  - struct bconn (pool.c): one pooled backend connection, one request in flight on it.
 *  - struct monitor (monitor.c): one per server, probing it with hello on its own connection.
 * Every socket is a struct stream (stream.c).
 *
 * Calls go down, events come up through callback tables: the pool tells its user (a client)
 * about a connection through struct pool_user_ops, and the pool and monitors tell the
 * coordinator about servers through the proxy_* functions below, which own the policy.
 *
 * Ownership: every object with libuv handles is freed only in its last close callback, and every
 * teardown goes through one function per object (client_close, bconn_close, monitor_stop).
 */
#ifndef MONGOLB_PROXY_H
#define MONGOLB_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "auth.h"
#include "config.h"
#include "cursors.h"
#include "list.h"
#include "metrics.h"
#include "request.h"
#include "stream.h"
#include "tls.h"
#include "topology.h"
#include "wire.h"
#include "zconn.h"

struct client;
struct bconn;
struct monitor;
struct txn_pins;
struct srv;
struct admin;

/* A user (a client) waiting for a pooled connection. */
struct pool_waiter {
    struct list link;
    int pool; /* which pool's waiters it is on, or -1 */
    void *user;
    struct auth_user *au; /* passthrough: the user its connection must be logged in as */
};

/*
 * One server's pool of backend connections. In passthrough mode its connections are each logged
 * in as one user (struct bconn.au) and only ever serve that user: a waiter gets a connection of its
 * own user, the per-user cap (max_pool_size_per_user) and the pool's cap (max_pool_size) both
 * hold, and an idle connection of another user gives way when the pool is full.
 */
struct pool {
    int server;
    int total;                    /* connections open or opening */
    int connecting;               /* of which still connecting or handshaking */
    int idle_count;               /* of which on idle */
    int n_waiters;                /* users on waiters */
    struct list idle;             /* struct bconn.link, ready for a request, oldest first */
    struct list busy;             /* struct bconn.link, with a request or connecting */
    struct list waiters;          /* struct pool_waiter.link */
    struct sockaddr_storage addr; /* resolved by the monitor */
    bool have_addr;
    bool clearing;            /* pool_clear is closing connections: open no new ones meanwhile */
    SSL_SESSION *tls_session; /* the server's last TLS session, to resume on new connections */
    uint64_t waits;           /* requests that had to wait for a connection */
    /* The backend leg's traffic on pooled connections (monitors not counted): bytes as they
     * crossed the wire, and as they were before compression or after decompression. */
    struct {
        uint64_t bytes_out, bytes_in, raw_out, raw_in, msgs_out, msgs_in;
    } traffic;
    /* The service user's login was refused here (pool.c, "Refused service logins" in
     * ARCHITECTURE.md): the server stays selectable, but no connection of that user is opened
     * before login_retry_ms, and its requests fail at once with login_error meanwhile. */
    int login_refusals; /* in a row; 0 once a login succeeds */
    int64_t login_retry_ms;
    char login_error[256];
};

struct proxy_stats {
    uint64_t clients_accepted;
    uint64_t clients_refused;
    uint64_t clients_timed_out; /* closed by the frame, idle or write timeouts */
    uint64_t requests;
    uint64_t requests_timed_out; /* request_timeout_ms reached on a backend */
    uint64_t replies_local;      /* hello, status, and errors answered by mongolb itself */
    uint64_t errors_returned;    /* error documents mongolb made (backend failures, timeouts) */
    uint64_t retries;            /* requests retried on another server */
    uint64_t getmores_routed;    /* getMores sent to their cursor's owner */
    uint64_t killcursors_routed; /* killCursors parts sent to owners */
    uint64_t cursor_not_found;   /* getMores for unknown cursors answered locally with 43 */
    uint64_t misroutes_avoided;  /* getMores from another connection than the cursor's opener */
    uint64_t txn_pinned;         /* transaction commands sent to their pinned server */
    uint64_t bad_frames;         /* client connections closed for malformed or oversized frames */
    uint64_t too_deep;           /* requests refused for nesting deeper than BSON allows */
    uint64_t backend_connects;
    uint64_t backend_connect_failures;
    uint64_t backend_interrupted;    /* in-use connections closed because their server failed */
    uint64_t fd_limit_refusals;      /* connections refused or not opened near the fd limit */
    uint64_t tls_handshake_failures; /* TLS handshakes that failed, with clients or servers */
    uint64_t compressed_requests;    /* OP_COMPRESSED requests from clients, decompressed */
};

#define PROXY_MAX_LISTENERS MLB_MAX_LISTEN

/* A unix socket file's identity, so that we never remove another's: an inode number alone is not
 * enough, since a file created after ours was unlinked may get the same one. */
struct unix_file_id {
    uint64_t dev, ino;
    int64_t ctime_ns; /* the file's ctime after our last chmod/chown of it */
};

struct listener {
    union stream_handle h;
    struct proxy *p;
    bool is_unix;
    bool bound; /* a unix socket file we created, to be removed at exit */
    struct unix_file_id id;
    char path[MLB_UNIX_PATH_MAX];
    char name[300];
};

struct proxy {
    uv_loop_t *loop;
    struct mlb_config cfg;
    struct topology topo;
    struct cursor_table cursors;
    struct txn_pins *pins;
    struct auth_state *auth;            /* auth.c */
    struct read_pref default_read_pref; /* from the configuration, for reads without one */
    struct stream_ctx sctx;
    struct tls_contexts tls; /* replaced on reload; connections keep the context they began with */
    struct pool pools[TOPOLOGY_MAX_SERVERS];
    struct monitor *monitors[TOPOLOGY_MAX_SERVERS];
    struct listener listeners[PROXY_MAX_LISTENERS];
    int n_listeners;
    struct list clients;        /* every client, struct client.link */
    struct list select_waiters; /* clients waiting for a suitable server */
    int n_clients;
    int clients_peak; /* the most clients since the heap was last trimmed (trim_after_exodus) */
    int fds_in_use;   /* sockets of clients, backend connections and monitors */
    int fd_limit;     /* RLIMIT_NOFILE */
    uint64_t next_client_id;
    uint64_t next_bconn_id;
    int32_t next_request_id;
    uint64_t rng_state;
    int64_t started_ms;
    int64_t last_fd_warn_ms;
    char last_overflow[320]; /* the member overflow last logged, so it is logged once */
    bool shutting_down;
    struct proxy_stats stats;
    struct metrics_state metrics; /* histograms and counts for /metrics (ops.c) */
    struct admin *admin;          /* the admin HTTP listener, or NULL (admin.c) */
    /* What hello reported last while some backend was known, for when none is (ops.c). */
    struct topology_limits last_limits;
    bool limits_seen;
    bool fallback_logged;
    uv_timer_t janitor;
    struct srv *srv; /* seeds = mongodb+srv://: the resolver and its polls (srv.c), else NULL */
};

/* Milliseconds on the loop's monotonic clock. */
static inline int64_t proxy_now(const struct proxy *p)
{
    return (int64_t)uv_now(p->loop);
}

uint32_t proxy_rand32(void *ctx);
uint64_t proxy_rand64(void *ctx);
int32_t proxy_next_request_id(struct proxy *p);

/* --- proxy.c: the coordinator --- */

/* Prepares the runtime from p->cfg (already loaded) and starts listening and monitoring. */
int proxy_start(struct proxy *p, uv_loop_t *loop);
/* Starts a graceful shutdown (a second call stops at once). */
void proxy_shutdown(struct proxy *p, const char *why);
/* Applies a freshly loaded configuration: what may change live changes; keys that need a restart
 * keep their running values, with a log line each. */
void proxy_reload(struct proxy *p, struct mlb_config *fresh, const char *path);
/* SIGHUP: reads path again and reloads it (a file that does not load keeps everything), telling
 * systemd RELOADING=1 and then READY=1. */
void proxy_reload_file(struct proxy *p, const char *path);
/* Frees what is left once the loop has ended. */
void proxy_free(struct proxy *p);

/* The topology changed in a way selection may care about: wakes waiting clients. */
void proxy_topology_changed(struct proxy *p);
/* A monitor's check succeeded with these topology_on_hello bits. */
void proxy_check_ok(struct proxy *p, int idx, int bits);
/* A monitor's check failed: mark the server unknown and clear its pool (closing in-use
 * connections too when the check timed out, since a frozen server never answers them); after
 * `consecutive` >= 2 failures in a row the server is taken as gone and its cursors and pins are
 * forgotten. */
void proxy_check_failed(struct proxy *p, int idx, const char *why, bool timed_out, int consecutive);
/* A new connection to server idx could not be opened or introduced: the server is unreachable,
 * as a failed check says. */
void proxy_connect_failed(struct proxy *p, int idx, const char *why);
/* An established connection to server idx failed: only a prompt re-check; the pool, the other
 * connections and the cursors stay until the monitor confirms. */
void proxy_socket_failed(struct proxy *p, int idx, const char *why);
/* A reply carried a state-change error ("not writable primary", "node is recovering"). */
void proxy_state_change(struct proxy *p, int idx, int32_t code);

/* --- listener.c --- */

int listeners_start(struct proxy *p);
void listeners_stop(struct proxy *p);
/* Removes the unix socket files we created (at exit). */
void listeners_cleanup(struct proxy *p);
/* Gives the unix sockets unix_socket_group and unix_socket_mode again (after a reload). Returns 0
 * or the first negative errno code, with a log line for each failure. */
int listeners_set_access(struct proxy *p);
/* Makes sure a unix socket path may be bound: refuses a non-socket and a live socket, removes a
 * stale one. Returns 0 or a negative errno. */
int listener_unix_prepare(const char *path);
/* Binds a unix socket at path for pipe without uv_pipe_bind, whose close unlinks the path whoever
 * owns it by then. Returns 0 or a negative errno. */
int listener_unix_bind(uv_pipe_t *pipe, const char *path);
/* Records the identity of the file at path (just bound, or just changed by us). */
void listener_unix_remember(const char *path, struct unix_file_id *id);
/* Whether the file at path is still the one id was recorded from (safe to remove at exit). */
bool listener_unix_is_ours(const char *path, const struct unix_file_id *id);
/* Writes an accepted TCP connection's peer as "ip:port" (for log prefixes). Returns 0, or a
 * negative errno code (out untouched) when the peer is unknown. */
int listener_peer_name(uv_tcp_t *h, char *out, size_t cap);
/* Accepts a connection we cannot serve and closes it at once, since libuv stops watching a
 * listener whose pending connection was not accepted. */
void listener_reject(uv_stream_t *server, bool is_unix);

/* --- pool.c --- */

enum bconn_state {
    BCONN_CONNECTING = 0, /* TCP connect in progress */
    BCONN_HANDSHAKE,      /* our hello (then our login, auth.c) sent, waiting for its reply */
    BCONN_IDLE,           /* in the pool, ready */
    BCONN_BUSY,           /* a request is in flight, or its reply is being relayed */
    BCONN_CLOSING,        /* closed; freed in the close callback */
};

/* What a pool tells the user of a connection (the client module registers these). */
struct pool_user_ops {
    /* A connection is ready for the user's request (b), or none could be had (status < 0). */
    void (*on_ready)(void *user, struct bconn *b, int status, const char *why);
    /* A request that expects no reply was written. */
    void (*on_sent)(void *user, struct bconn *b);
    /* A whole reply frame arrived: STREAM_NEXT when the user is done with it, STREAM_HOLD when
     * it keeps it (relaying it) until bconn_reply_done(). */
    int (*on_reply)(void *user, struct bconn *b, uint8_t *frame, size_t len);
    /* The connection failed while carrying the user's request; it is already closed. */
    void (*on_error)(void *user, struct bconn *b, int status, const char *why);
};

struct bconn {
    struct stream st;
    uv_connect_t connect_req;
    uv_timer_t timer; /* connect and handshake deadline */
    struct proxy *p;
    enum bconn_state state;
    int server;
    uint64_t generation;
    uint64_t id;
    char prefix[64];
    void *user; /* the client whose request it carries, or NULL */
    struct list link;
    struct wire_buf hbuf;    /* our handshake message */
    struct auth_user *au;    /* passthrough: the user it is logged in as (a reference), or NULL */
    struct auth_backend *ab; /* the login in progress */
    bool reply_expected;     /* a reply is due for the request in flight */
    size_t cur_frame;        /* the reply frame being handed to or held by the user */
    /* A failure that came while the user held a reply frame (its client still being sent it):
     * told to the user once the frame is released (pool.c, fail_user). */
    bool fail_pending;
    int fail_status;
    char fail_why[240];
    int handles_open;
    int64_t created_ms;
    int64_t idle_since_ms;
    struct zconn z; /* the compressor the server agreed to, and the buffers compression needs */
};

void pool_init(struct proxy *p, const struct pool_user_ops *ops);
/*
 * Gets a connection to server idx for a waiter. If one is idle it is attached and returned.
 * Otherwise the waiter waits on the pool (a new connection is opened if the pool is below
 * max_pool_size) and on_ready follows, with a connection or an error. NULL when it waits.
 */
struct bconn *pool_get(struct proxy *p, int idx, struct pool_waiter *w);
/* Takes a waiter off its pool's wait list (harmless when it is on none). */
void pool_cancel_wait(struct proxy *p, struct pool_waiter *w);
/* Gives a connection back after a complete exchange; it goes to a waiter or the idle list. */
void pool_release(struct proxy *p, struct bconn *b);
/* The user leaves an exchange early: the connection is closed if the exchange cannot be ended
 * cleanly, else drained and reused. */
void pool_abandon(struct proxy *p, struct bconn *b, bool reply_held);
/* Closes a connection (after an error, or when its exchange cannot be finished). */
void bconn_close(struct bconn *b, const char *why);
/* Sends a request on a busy connection. Returns 0 or a negative errno. */
MLB_MUSTCHECK int bconn_send(struct bconn *b, const uint8_t *data, size_t len, bool reply_expected);
/* The user is done with the reply frame it held. */
void bconn_reply_done(struct bconn *b);
/* Closes every idle connection of a server and retires the others (bumps nothing itself: the
 * topology's generation decides reuse). With interrupt, in-use connections are closed too and
 * their users told. */
void pool_clear(struct proxy *p, int idx, bool interrupt, const char *why);
/* Empties the pool of a released server slot (it has no connection left) for its next use. */
void pool_reset(struct proxy *p, int idx);
/* Closes idle connections past max_idle_time_ms or max_lifetime_ms. */
void pool_reap(struct proxy *p);
/* After a reload (maybe a new service password): refused service logins are tried again at once. */
void pool_login_retry_now(struct proxy *p);
void pool_close_all(struct proxy *p);

/* --- client.c --- */

/* Accepts one connection from a listener's stream. Returns 0 or a negative errno. */
int client_accept(struct proxy *p, uv_stream_t *server, bool is_unix);
/* Retries routing for clients waiting for a server. */
void clients_retry_waiting(struct proxy *p);
/* Closes every client (shutdown). */
void clients_close_all(struct proxy *p, const char *why);
/* Closes clients with nothing in progress (the start of a graceful shutdown). */
void clients_close_idle(struct proxy *p);
int clients_in_flight(struct proxy *p);
/* Re-arms every client's timer (after a reload changed timeouts). */
void clients_rearm(struct proxy *p);
/* The client module's callbacks for the pool. */
extern const struct pool_user_ops client_pool_ops;

/* --- monitor.c --- */

int monitor_start(struct proxy *p, int idx);
/* Asks for a check soon: at once, or 500 ms after the previous check if that was more recent. */
void monitor_request_check(struct proxy *p, int idx);
void monitor_stop(struct proxy *p, int idx);
void monitor_stop_all(struct proxy *p);

/* --- status.c --- */

/* Builds mongolb's own hello reply for a client into doc. */
void status_build_hello(struct proxy *p, const struct request_info *ri, int64_t connection_id,
                        bson_t *doc);
/* Builds the mongolbStatus reply into doc. */
void status_build(struct proxy *p, bson_t *doc);
/* Adds mongolbStatus's per-user pool rows for server idx (user names only). */
void status_user_pools(struct proxy *p, int idx, bson_t *pool_doc);
/* Builds an error document {ok:0, errmsg, code, codeName}. */
void status_build_error(bson_t *doc, int code, const char *code_name, const char *errmsg);

/* --- ops.c: accounting, error and slow-request lines, exposition, local answers --- */

void ops_init(struct proxy *p);
enum metrics_class ops_class(const struct request_info *ri);
/* An error document mongolb made for a request is being returned: count it, and log it at warn
 * (rate limited per code by error_log_limit) with the command, namespace, server and code. */
void ops_error_returned(struct proxy *p, const char *prefix, const struct request_info *ri,
                        const uint8_t *frame, size_t len, int server, int32_t code,
                        const char *msg);
/* A request that began at start_ns (uv_hrtime) is over: its latency goes into the histograms,
 * and a line is logged if it reached slow_request_ms. code is the error mongolb returned (0 for
 * none), relayed_code an error reply relayed from the server. */
void ops_request_done(struct proxy *p, const char *prefix, const struct request_info *ri,
                      const uint8_t *frame, size_t len, int server, int32_t code,
                      int32_t relayed_code, uint64_t start_ns);
/* The topology changed: counts failovers and servers lost. */
void ops_topology_changed(struct proxy *p);
/* The limits hello reports: the backends', the last ones known once none is reachable, or
 * MongoDB 5.0's once the first checks have all failed. False while hello should wait (until
 * ops_hello_wait_until). */
bool ops_hello_limits(struct proxy *p, struct topology_limits *out);
int64_t ops_hello_wait_until(struct proxy *p);
/* Builds the reply to a command mongolb answers itself without a backend (ping, buildInfo) and
 * returns true, or returns false for any other request. */
bool ops_local_command(struct proxy *p, const struct request_info *ri, bson_t *doc);
/* 0 when some server suits the default read preference, else a negative errno; why says which
 * or why not. */
int ops_ready(struct proxy *p, char *why, size_t why_len);
/* The Prometheus text exposition (format 0.0.4). Returns 0 or -ENOMEM. */
int ops_render_metrics(struct proxy *p, struct wire_buf *b);

/* --- admin.c: the admin HTTP listener --- */

/* Starts listening on [admin] http_listen (nothing when it is empty). Returns 0 or -errno. */
int admin_start(struct proxy *p);
/* Closes the listeners and every admin connection (at the final stop). */
void admin_stop(struct proxy *p);
/* Removes the unix socket files it created; frees the object once admin_stop has run. */
void admin_cleanup(struct proxy *p);

/* --- txnpin.c --- */

int txn_pins_init(struct proxy *p);
void txn_pins_free(struct proxy *p);
/* Returns the server a transaction command must go to, or -1 when it is not pinned. */
int txn_pin_lookup(struct proxy *p, const struct request_info *ri);
/* Records that the transaction ri starts went to server idx. */
void txn_pin_set(struct proxy *p, const struct request_info *ri, int idx);
/* Ends the session's pin when ri is a command that is not part of the pinned transaction. */
void txn_pin_observe(struct proxy *p, const struct request_info *ri);
void txn_pins_expire(struct proxy *p);
/* Drops every pin to server idx (it is gone). Returns how many. */
size_t txn_pins_remove_server(struct proxy *p, int idx);
size_t txn_pins_count(struct proxy *p);

#endif
