/*
 * proxy.h: the daemon's runtime objects and how they meet.
 *
 * One libuv loop runs everything. The objects:
 *  - struct proxy: the process: config, topology, cursor table, pools, clients, counters.
 *  - struct client: one application connection (client.c). It handles one request at a time, as
 *    drivers do: classify, route, forward, relay the reply, then the next.
 *  - struct bconn: one pooled backend connection (pool.c), one request in flight on it.
 *  - struct monitor: one per server (monitor.c), probing it with hello on its own connection.
 *
 * Ownership: every object with libuv handles is freed only in its last close callback, and every
 * teardown goes through one function per object (client_close, bconn_close, monitor_stop).
 */
#ifndef MONGOLB_PROXY_H
#define MONGOLB_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "config.h"
#include "cursors.h"
#include "request.h"
#include "topology.h"
#include "wire.h"

struct client;
struct bconn;
struct monitor;

/* An intrusive doubly linked list, for the per-state lists of clients and connections. */
struct list {
    struct list *prev, *next;
};

static inline void list_init(struct list *l)
{
    l->prev = l->next = l;
}
static inline bool list_empty(const struct list *l)
{
    return l->next == l;
}
static inline void list_push_back(struct list *head, struct list *e)
{
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}
static inline void list_remove(struct list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}
#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* One server's pool of backend connections. */
struct pool {
    int server;
    int total;                    /* connections open or opening */
    int connecting;               /* of which still connecting or handshaking */
    int n_waiters;                /* clients on waiters */
    struct list idle;             /* struct bconn.link, ready for a request */
    struct list busy;             /* struct bconn.link, with a request or connecting */
    struct list waiters;          /* struct client.wait_link, waiting for a connection */
    struct sockaddr_storage addr; /* resolved by the monitor */
    bool have_addr;
};

struct proxy_stats {
    uint64_t clients_accepted;
    uint64_t clients_refused;
    uint64_t requests;
    uint64_t replies_local;      /* hello, status, and errors answered by mongolb itself */
    uint64_t errors_returned;    /* error documents mongolb made (backend failures, timeouts) */
    uint64_t retries;            /* requests retried on another server */
    uint64_t getmores_routed;    /* getMores sent to their cursor's owner */
    uint64_t killcursors_routed; /* killCursors parts sent to owners */
    uint64_t cursor_not_found;   /* getMores for unknown cursors answered locally with 43 */
    uint64_t misroutes_avoided;  /* getMores whose owner differs from what selection would pick */
    uint64_t txn_pinned;         /* transaction commands sent to their pinned server */
    uint64_t bad_frames;         /* client connections closed for malformed or oversized frames */
    uint64_t backend_connects;
    uint64_t backend_connect_failures;
};

struct txn_pins;

struct proxy {
    uv_loop_t *loop;
    struct mlb_config cfg;
    struct topology topo;
    struct cursor_table cursors;
    struct txn_pins *pins;
    struct read_pref default_read_pref; /* from the configuration, for reads without one */
    struct pool pools[TOPOLOGY_MAX_SERVERS];
    struct monitor *monitors[TOPOLOGY_MAX_SERVERS];
    struct list clients;        /* every client, struct client.link */
    struct list select_waiters; /* clients waiting for a suitable server, struct client.wait_link */
    int n_clients;
    uint64_t next_client_id;
    uint64_t next_bconn_id;
    int32_t next_request_id;
    uint64_t rng_state;
    int64_t started_ms;
    bool shutting_down;
    struct proxy_stats stats;
    uv_timer_t janitor;
};

extern struct proxy *g_proxy;

/* Milliseconds on the loop's monotonic clock. */
static inline int64_t proxy_now(const struct proxy *p)
{
    return (int64_t)uv_now(p->loop);
}

uint32_t proxy_rand32(void *ctx);
uint64_t proxy_rand64(void *ctx);
int32_t proxy_next_request_id(struct proxy *p);

/* Called when the topology changed in a way selection may care about: wakes waiting clients. */
void proxy_topology_changed(struct proxy *p);

/* Called when servers were added to or removed from the topology (replica-set discovery): starts
 * monitors for new servers and clears the pools of removed ones. */
void proxy_members_changed(struct proxy *p);

/* Called on a network error talking to server idx: mark it unknown, drop its pool and cursors,
 * and ask its monitor for a prompt re-check. */
void proxy_server_failed(struct proxy *p, int idx, const char *why);

/* --- pool.c --- */

enum bconn_state {
    BCONN_CONNECTING = 0, /* TCP connect in progress */
    BCONN_HANDSHAKE,      /* our hello sent, waiting for its reply */
    BCONN_IDLE,           /* in the pool, ready */
    BCONN_BUSY,           /* a client's request is in flight, or its reply is being relayed */
    BCONN_CLOSING,        /* uv_close called; freed in the close callback */
};

struct bconn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t timer; /* connect and handshake deadline */
    enum bconn_state state;
    int server;
    uint64_t generation;
    uint64_t id;
    char prefix[64];
    struct client *client; /* the client whose request it carries, or NULL */
    struct list link;
    struct wire_buf rbuf; /* bytes read from the server */
    struct wire_buf hbuf; /* our handshake message */
    bool reading;
    bool reply_expected; /* a reply is due for the request in flight */
    int handles_open;
};

int pool_init(struct proxy *p);
/*
 * Gets a connection to server idx for client c. If one is idle it is attached at once and
 * returned. Otherwise the client waits (it is put on the pool's waiters, a new connection is
 * opened if the pool is below max_pool_size) and client_on_bconn() is called later with the
 * connection or an error. Returns the connection, or NULL when the client waits.
 */
struct bconn *pool_get(struct proxy *p, int idx, struct client *c);
/* Gives a connection back after a complete exchange; it goes to a waiter or the idle list. */
void pool_release(struct proxy *p, struct bconn *b);
/* Closes a connection (after an error, or when its exchange cannot be finished). */
void bconn_close(struct bconn *b, const char *why);
/* Closes every idle connection of a server and marks the busy ones for closing on release. */
void pool_clear(struct proxy *p, int idx);
/* Removes a client from whatever pool wait list it is on. */
void pool_cancel_wait(struct proxy *p, struct client *c);
/* Drops the first len bytes of b's read buffer: the reply frame a client finished relaying. */
void bconn_consume(struct bconn *b, size_t len);
/* Starts/stops reading replies on a busy connection. */
int bconn_read_start(struct bconn *b);
void bconn_read_stop(struct bconn *b);
/* Sends bytes on a busy connection; bconn_on_written()-style completion goes to the client. */
int bconn_write(struct bconn *b, const uint8_t *data, size_t len);
void pool_close_all(struct proxy *p);

/* --- client.c --- */

enum client_state {
    CLIENT_READING = 0, /* waiting for (the rest of) a request */
    CLIENT_WAIT_SERVER, /* no suitable server yet: on proxy.select_waiters */
    CLIENT_WAIT_CONN,   /* waiting for a pooled connection: on a pool's waiters */
    CLIENT_FORWARDING,  /* request sent or being sent; its reply is awaited */
    CLIENT_REPLYING,    /* a reply (relayed or our own) is being written to the client */
    CLIENT_CLOSING,     /* uv_close called; freed in the last close callback */
};

/* A killCursors that names cursors of several servers is sent to each owner in turn. */
struct kill_state {
    int64_t *ids; /* client-visible ids, in request order */
    int *owner;   /* owning server per id, or -1 when unknown */
    int n;
    int next_owner_pos;                       /* where to look for the next owner to contact */
    struct wire_buf out;                      /* the part being sent */
    bson_t killed, not_found, alive, unknown; /* merged answer, as arrays being built */
    int n_killed, n_not_found, n_alive, n_unknown;
    bool active;
};

/* A stream that is a TCP socket or a unix socket, seen as whichever libuv type a call needs. */
union stream_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct client {
    union stream_handle h;
    uv_write_t write_req;
    uv_timer_t timer; /* the current request's deadline */
    enum client_state state;
    uint64_t id;
    char prefix[96];
    struct list link;      /* proxy.clients */
    struct list wait_link; /* proxy.select_waiters or a pool's waiters */
    int wait_pool;         /* which pool's waiters, or -1 */
    int handles_open;
    bool reading;

    struct wire_buf rbuf; /* bytes read from the client; the current request is at the front */
    size_t frame_len;     /* length of the current request, 0 when none */
    struct wire_buf wbuf; /* our own replies */

    /* The current request. */
    struct request_info ri;
    const uint8_t *out; /* the bytes sent to the server: the request itself or a rewritten part */
    size_t out_len;
    int server;  /* where it went, or -1 */
    int exclude; /* a server a retry avoids */
    int attempts;
    int64_t deadline_ms;
    struct bconn *bc;
    size_t relay_len;      /* length of the reply frame being relayed from bc */
    bool relay_more;       /* that reply has moreToCome: more will follow */
    int32_t last_reply_id; /* requestID of the last reply relayed, for exhaust chains */
    struct kill_state kill;
    struct wire_buf xbuf; /* a request rewritten before forwarding ($readPreference added) */
};

int clients_listen(struct proxy *p);
void clients_stop_listening(struct proxy *p);
/* Called by the pool: a connection is ready for c's request, or status < 0 if none could be had. */
void client_on_bconn(struct client *c, struct bconn *b, int status, const char *why);
/* Called by the pool: a complete frame arrived on b for c's request. */
void client_on_reply(struct client *c, struct bconn *b, uint8_t *frame, size_t len);
/* Called by the pool: the request's bytes were written (a failed write comes through
 * client_on_backend_error instead). */
void client_on_sent(struct client *c, struct bconn *b);
/* Called by the pool: b failed while carrying c's request (EOF, reset, ...). */
void client_on_backend_error(struct client *c, struct bconn *b, int status);
/* Retries selection for clients waiting for a server. */
void clients_retry_waiting(struct proxy *p);
/* Closes every client (shutdown). */
void clients_close_all(struct proxy *p, const char *why);
/* Closes clients with nothing in progress (the start of a graceful shutdown). */
void clients_close_idle(struct proxy *p);
int clients_in_flight(struct proxy *p);

/* --- monitor.c --- */

int monitor_start(struct proxy *p, int idx);
/* Asks for a check soon: at once, or 500 ms after the previous check if that was more recent. */
void monitor_request_check(struct proxy *p, int idx);
void monitor_stop_all(struct proxy *p);

/* --- status.c --- */

/* Builds mongolb's own hello reply for a client into doc. */
void status_build_hello(struct proxy *p, const struct request_info *ri, int64_t connection_id,
                        bson_t *doc);
/* Builds the mongolbStatus reply into doc. */
void status_build(struct proxy *p, bson_t *doc);
/* Builds an error document {ok:0, errmsg, code, codeName}. */
void status_build_error(bson_t *doc, int code, const char *code_name, const char *errmsg);

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
size_t txn_pins_count(struct proxy *p);

#endif
