/*
 * sim.h: the structures shared by mongosim's server side (tests/sim/sim_*.c).
 *
 * One process simulates one deployment: a few servers (mongos routers, replica-set members or one
 * standalone) on consecutive loopback ports, sharing one in-memory store (store.h). Everything runs
 * on one libuv loop in one thread, so nothing here is locked.
 *
 * Replication: while no member of a replica set has a replication lag, the members share that one
 * store and a write is visible everywhere at once (the fast default). Once a member is given a lag
 * (--lag-ms, simSetLag), every member keeps its own copy and the secondaries apply the primary's
 * oplog lag_ms late (sim_repl.c): stale reads, lastWrite, causal reads and write concern then
 * behave as on a real replica set, including rollback of a killed primary's unreplicated writes
 * and readConcern majority.
 *
 * Transactions (sim_cmds.c, store.h): snapshot isolation and WriteConflict as on mongod. A write
 * outside a transaction to a document an open transaction wrote is not made to wait for it, as
 * mongod makes it; the transaction's commit then fails with WriteConflict instead, so that neither
 * write is lost. Each transaction works on a copy of the data (store_clone), which is fine for the
 * data sets of tests.
 *
 * Versions (--version, sim_version.c): the MongoDB version a deployment claims decides its
 * maxWireVersion and what depends on it: legacy opcodes refused from 5.1, exhaust getMore on a
 * mongos from 7.1, w:majority as the default write concern from 5.0.
 */
#ifndef MONGOSIM_SIM_H
#define MONGOSIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "compress.h"
#include "sim_auth.h"
#include "store.h"
#include "wire.h"

#define SIM_MAX_SERVERS     16
#define SIM_CURSOR_BUCKETS  256
#define SIM_TXN_BUCKETS     64
#define SIM_RETRY_BUCKETS   1024
#define SIM_MAX_CMD_NAMES   96
#define SIM_TXN_LOG_MAX     10000
#define SIM_DEFAULT_BATCH   101
#define SIM_MAX_BATCH_BYTES (16 * 1024 * 1024)

enum sim_mode {
    SIM_MODE_STANDALONE = 0,
    SIM_MODE_MONGOS = 1,
    SIM_MODE_REPLSET = 2,
};

/* A server-side cursor: the whole result set the store produced, and how far it has been read. */
struct sim_cursor {
    struct sim_cursor *next; /* bucket chain */
    int64_t id;
    char ns[256];
    struct store_results res;
    size_t pos;
    uint64_t last_used_ms;
    char owner[SIM_AUTH_OWNER_MAX]; /* "user@db" of the user that opened it, "" for none */
};

/* A multi-document transaction a server holds, keyed by lsid.id and txnNumber. */
enum sim_txn_state {
    SIM_TXN_ACTIVE = 0,
    SIM_TXN_COMMITTED = 1,
    SIM_TXN_ABORTED = 2,
};

struct sim_txn {
    struct sim_txn *next;
    uint8_t lsid[16];
    int64_t txn_number;
    enum sim_txn_state state;
    struct store_txn *undo;         /* NULL once committed or aborted */
    char owner[SIM_AUTH_OWNER_MAX]; /* the session's user: with --auth, part of its key */
    /* Snapshot isolation: the transaction runs on snap, a copy of live (the server's store) taken
     * at its first statement, and its writes reach live only at commit (store_txn_publish). */
    struct store *snap;
    struct store *live;
    uint64_t oplog_end; /* committed: the oplog's length after its commit (for a rollback) */
};

/* A saved reply of a retryable write, shared by all servers of the deployment. */
struct sim_retry {
    struct sim_retry *next;
    uint8_t lsid[16];
    int64_t txn_number;
    bson_t *reply;
    char owner[SIM_AUTH_OWNER_MAX]; /* the session's user: with --auth, part of its key */
    uint64_t oplog_end; /* the oplog's length after the write: a rollback below it forgets it */
};

/* One line of the per-server log of commands that carried a txnNumber. */
struct sim_txn_log_entry {
    uint8_t lsid[16];
    int64_t txn_number;
    char cmd[32];
    bool in_txn;
};

enum sim_fp_mode {
    SIM_FP_OFF = 0,
    SIM_FP_ALWAYS = 1,
    SIM_FP_TIMES = 2,
};

/* The failCommand failpoint of one server. */
struct sim_failpoint {
    enum sim_fp_mode mode;
    int64_t times; /* remaining, for SIM_FP_TIMES */
    int64_t skip;  /* matching commands still to let through before failing */
    bson_t *fail_commands;
    bool has_error_code;
    int32_t error_code;
    bson_t *error_labels; /* an array, or NULL */
    bool close_connection;
    bool block_connection;
    int64_t block_ms;
    bson_t *write_concern_error; /* a document, or NULL */
    char app_name[128];          /* empty: any client */
};

struct sim_cmd_count {
    char name[40];
    uint64_t count;
};

struct sim;
struct sim_conn;

struct sim_server {
    struct sim *sim;
    int index;
    char host[64];
    int port;
    char host_port[96];

    uv_tcp_t listener;
    bool listening;        /* false after simKill */
    bool listener_closing; /* uv_close issued, close callback not yet run */

    uint64_t latency_ms;
    bson_t tags; /* replica-set member tags, an empty document otherwise */

    /* topologyVersion */
    bson_oid_t process_id;
    int64_t topology_counter;

    bool primary; /* replica sets: this member is the primary */
    bool removed; /* replica sets: left out of the set's configuration by simReconfig */
    char me[96];  /* the "me" its hello reports when it differs from host_port (simSetMe) */

    /* Replication (sim_repl.c). store is the shared store until replication starts, then this
     * member's own copy. */
    struct store *store;
    uint64_t lag_ms;    /* how late this member applies the primary's writes when secondary */
    uint64_t applied;   /* oplog entries applied */
    int64_t applied_ms; /* wall time up to which it has applied the primary's writes */

    struct sim_conn *conns; /* doubly linked list of open connections */
    uint64_t conns_current;
    uint64_t conns_total;

    struct sim_cursor *cursors[SIM_CURSOR_BUCKETS];
    uint64_t cursors_open;
    uint64_t cursors_timed_out;

    struct sim_txn *txns[SIM_TXN_BUCKETS];

    struct sim_failpoint fp;

    struct sim_cmd_count cmd_counts[SIM_MAX_CMD_NAMES];
    int n_cmd_counts;
    struct {
        uint64_t insert, query, update, del, getmore, command;
    } opcounters;
    /* OP_COMPRESSED traffic: frames and bytes as they crossed the wire, and what they held. */
    struct {
        uint64_t msgs_in, bytes_in, raw_in;
        uint64_t msgs_out, bytes_out, raw_out;
    } compressed;
    uint64_t txn_commands;
    /* Logins seen (sim_auth.c): saslStart first steps (in hello too), first steps taken inside a
     * hello, logins completed, logins refused (18), commands refused with 13. */
    struct {
        uint64_t sasl_starts, speculative, successes, failures, unauthorized;
    } auth_stats;

    struct sim_txn_log_entry *txn_log;
    size_t txn_log_len;
};

struct sim_options {
    enum sim_mode mode;
    int nservers;
    char set_name[64];
    char host[64];
    int port;
    char latency[256];
    char tags[1024];
    char lag[256];      /* --lag-ms: one value, or one per member */
    int version;        /* the MongoDB version claimed, major * 100 + minor (700 for 7.0) */
    bool version_given; /* --version */
    bool wire_given;    /* --max-wire-version */
    int max_wire_version;
    uint64_t cursor_timeout_ms;
    bool verbose;
    /* TLS (--tls-cert): when tls_cert is set every listener speaks TLS only. */
    char tls_cert[4096]; /* PEM with the server certificate (and chain) and its private key */
    char tls_ca[4096];   /* CA bundle that verifies client certificates; empty: none asked for */
    bool tls_require_client_cert;
    /* --compressors: what a hello's `compression` is intersected with (default zstd,snappy,zlib);
     * OP_COMPRESSED frames with any of them are accepted. */
    struct compress_list compressors;
    /* --auth: commands need a login and a role (sim_auth.c); --auth-user seeds users. */
    bool auth;
    const char *auth_users[32]; /* --auth-user specs, pointing into argv */
    int n_auth_users;
};

struct sim {
    uv_loop_t *loop;
    struct sim_options opt;
    struct store *store;
    int nservers;
    struct sim_server servers[SIM_MAX_SERVERS];

    int64_t term;        /* replica sets: the election term, in electionId and opTime.t */
    int64_t set_version; /* replica sets: the configuration's version, one more per simReconfig */
    /* Replica sets whose members keep their own data: the primary's oplog (sim_repl.c); NULL
     * while the members share s->store. */
    struct store_oplog *oplog;
    /* Replica sets: an election pending after the primary was killed (see sim_primary_lost). */
    uv_timer_t election_timer;
    int election_after; /* the lost primary's index: the search for a live member starts after it */
    /* Rollback (sim_repl.c): a primary that died may have written what no other member has; the
     * next election gives the new primary only what the live members have, and rolls the rest
     * back. lost_primary is that member's index while such an election is pending. */
    bool lost_primary_pending;
    int lost_primary;
    uint64_t rolled_back; /* oplog entries rolled back so far (simStats) */
    /* readConcern majority (sim_repl.c): the data as of the majority commit point, a copy that
     * applies the oplog only as far as a majority of the members has; NULL until replication. */
    struct store *majority_store;
    uint64_t majority_applied;
    uint64_t start_ms;

    uint64_t next_conn_id;
    uint64_t rng[4];

    struct sim_retry *retries[SIM_RETRY_BUCKETS];
    uint64_t retries_deduplicated;

    uv_timer_t sweep_timer;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    bool stopping;

    /* The TLS context every connection's SSL is made from (mongosim.c builds it from the
     * options), or NULL when the listeners speak plaintext. */
    SSL_CTX *tls_ctx;

    /* The deployment's users (sim_auth.c), seen alike by every server. */
    struct sim_user *users;
    size_t nusers;

    /* Scratch space reused by every request, so the hot path does not allocate: the reply
     * document and the views of a kind-1 document sequence. */
    bson_t scratch;
    bson_t *seq_views;
    const bson_t **seq_ptrs;
    size_t seq_cap;
};

/* How a request reached the server, for reply framing and legacy rules. */
enum sim_req_kind {
    SIM_REQ_MSG = 0,
    SIM_REQ_QUERY = 1,
};

/* A command request handed from the connection layer to the dispatcher. */
struct sim_request {
    enum sim_req_kind kind;
    int32_t request_id;
    uint32_t msg_flags;  /* OP_MSG flags */
    int32_t query_flags; /* OP_QUERY flags */
    const char *db;      /* database name; for OP_QUERY a copy made by the caller */
    bson_t cmd;          /* read-only view of the command document */
    const bson_t *const *seq_docs;
    size_t n_seq;
    const char *seq_id; /* identifier of the first kind-1 section, or NULL */
    bool legacy_find;   /* an OP_QUERY on a collection, run as a find (servers before 5.1) */
};

/* --- sim_server.c -------------------------------------------------------------------------- */

uint64_t sim_now_ms(const struct sim *s);
uint64_t sim_random64(struct sim *s);
int sim_server_listen(struct sim_server *srv);
/* Stops listening and drops every connection; keep is a connection (the one that asked) that is
 * closed only after its pending replies are written, or NULL. */
void sim_server_kill(struct sim_server *srv, struct sim_conn *keep);
int sim_server_revive(struct sim_server *srv);
/* Wakes connections that wait in an awaitable hello: the server's topologyVersion changed. */
void sim_server_topology_changed(struct sim_server *srv);
void sim_stop(struct sim *s);

/* What the dispatcher may ask of the connection that sent a request. */
const char *sim_conn_app_name(const struct sim_conn *c);
uint64_t sim_conn_id(const struct sim_conn *c);
void sim_conn_set_app_name(struct sim_conn *c, const char *name);
/* The connection's login state (sim_auth.h). */
struct sim_conn_auth *sim_conn_auth(struct sim_conn *c);
/* The RFC 2253 subject of the certificate the client presented and the server verified, into
 * buf; false without one (plaintext, no certificate, or not verified). */
bool sim_conn_peer_subject(struct sim_conn *c, char *buf, size_t len);
/* Closes the connection right after this request, without a reply (failCommand closeConnection). */
void sim_conn_drop(struct sim_conn *c);
/* Delays the reply to the current request by ms (failCommand blockConnection). */
void sim_conn_block(struct sim_conn *c, uint64_t ms);
/* Arms an awaitable hello: reply after max_await_ms unless the topology changes first. */
void sim_conn_await_hello(struct sim_conn *c, uint64_t max_await_ms, bool exhaust, bool hello_ok,
                          bool legacy);
/* Streams the remaining batches of a cursor as moreToCome replies (OP_MSG exhaust getMore). */
void sim_conn_set_exhaust(struct sim_conn *c, int64_t cursor_id, int64_t batch_size);
/* Handles the current request again in delay_ms instead of answering it now; the connection reads
 * nothing more meanwhile (a read waiting for its afterClusterTime). */
void sim_conn_defer(struct sim_conn *c, uint64_t delay_ms);
/* How long the current request has waited in sim_conn_defer so far (0 on its first run). */
uint64_t sim_conn_waited_ms(const struct sim_conn *c);

/* --- sim_cursor.c -------------------------------------------------------------------------- */

/* Takes ownership of res. Returns the new cursor or NULL on allocation failure. */
struct sim_cursor *sim_cursor_open(struct sim_server *srv, const char *ns,
                                   struct store_results *res);
struct sim_cursor *sim_cursor_find(struct sim_server *srv, int64_t id);
void sim_cursor_close(struct sim_server *srv, struct sim_cursor *c);
void sim_cursor_close_all(struct sim_server *srv);
void sim_cursor_sweep(struct sim_server *srv, uint64_t now_ms, uint64_t timeout_ms);
/* Appends up to max_docs documents (0: no count limit) and at most SIM_MAX_BATCH_BYTES, starting
 * at the cursor's position, to the array being built in arr. Returns how many were appended. */
size_t sim_cursor_fill(struct sim_cursor *c, bson_t *arr, int64_t max_docs);
/* The same for a plain array of documents (store results that do not need a cursor). */
size_t sim_batch_fill(const struct store_results *res, size_t *pos, bson_t *arr, int64_t max_docs);
bool sim_cursor_exhausted(const struct sim_cursor *c);

/* --- sim_cmds.c ---------------------------------------------------------------------------- */

/*
 * Runs one command. Builds the reply into *reply (already initialised, empty). Returns true when a
 * reply should be sent, false when the connection layer must send nothing (the command asked for
 * the connection to be dropped, or an awaitable hello will answer later).
 */
bool sim_dispatch(struct sim_server *srv, struct sim_conn *conn, const struct sim_request *req,
                  bson_t *reply);
/* Builds the hello/isMaster reply of srv. */
void sim_build_hello(struct sim_server *srv, struct sim_conn *conn, bool legacy, bool hello_ok,
                     bson_t *reply);
/* Builds {ok:0, errmsg, code, codeName}. */
void sim_error(bson_t *reply, int32_t code, const char *code_name, const char *errmsg);
/* Aborts every active transaction srv holds (step-down, kill). */
void sim_abort_txns(struct sim_server *srv);
void sim_free_server_state(struct sim_server *srv);
void sim_free_retries(struct sim *s);
/* Forgets the retryable writes whose oplog entries from number upto on were rolled back, as
 * MongoDB rolls back their config.transactions records with them: a retry runs them again. */
void sim_forget_retries_after(struct sim *s, uint64_t upto);
/* The same for transactions whose commit entered the oplog at number upto or later. */
void sim_forget_commits_after(struct sim *s, uint64_t upto);
/* Sets roles after start: member 0 primary. */
void sim_elect(struct sim *s, int index);
/* Delay between the loss of the primary and the election of the next live member. */
#define SIM_ELECTION_DELAY_MS 200
/* Whether a replica-set member is eligible for election: alive and in the configuration. */
bool sim_electable(const struct sim_server *srv);
/* Initialises the election timer (once, at start-up); sim_stop closes it. */
void sim_elections_init(struct sim *s);
/* The primary, member index, went down (simKill): the set has no primary now, and the next live
 * member is elected after SIM_ELECTION_DELAY_MS with a higher term. */
void sim_primary_lost(struct sim *s, int index);

/* --- sim_version.c ------------------------------------------------------------------------- */

/* Parses "X.Y" (a version the simulator knows, 4.0 to 8.0) into X * 100 + Y. Returns 0 or
 * -EINVAL. */
int sim_version_parse(const char *text, int *version);
/* The maxWireVersion of a MongoDB version (700 -> 21), or -1 for a version it does not know. */
int sim_version_wire(int version);
/* The newest version whose maxWireVersion is at most wire (21 -> 700, 12 -> 404). */
int sim_version_of_wire(int wire);
/* "7.0.0" for 700. */
void sim_version_string(int version, char *buf, size_t len);
/* MongoDB 5.1 removed OP_QUERY (but for the handshake), OP_GET_MORE, OP_KILL_CURSORS and the legacy
 * writes. */
bool sim_legacy_opcodes_removed(int version);
/* Exhaust getMore (exhaustAllowed on getMore): mongod since 4.2, mongos only since 7.1. */
bool sim_exhaust_get_more(int version, bool mongos);
/* The write concern a command without one gets: w:majority since 5.0, w:1 before. */
bool sim_default_write_concern_majority(int version);

/* --- sim_repl.c ---------------------------------------------------------------------------- */

/* The wall clock in ms (what lastWriteDate, localTime and the oplog are stamped with). */
int64_t sim_wall_ms(void);
/* Gives every member its own copy of the data and starts the primary's oplog (the first lag
 * does it: at_start for --lag-ms, else simSetLag). Open transactions are aborted: their undo logs
 * belong to the shared store. Returns 0 or -ENOMEM. */
int sim_repl_start(struct sim *s, bool at_start);
/* Frees the members' copies and the oplog, at exit. */
void sim_repl_free(struct sim *s);
/* Brings srv's copy up to date with what its lag lets it have applied by now. */
void sim_repl_catch_up(struct sim_server *srv);
/* What a read with readConcern majority on srv reads: the majority snapshot when srv has applied
 * entries that a majority has not, else NULL (srv's own data, all majority-committed). */
struct store *sim_repl_majority_store(struct sim_server *srv);
/* The primary moves from old to next (either may be -1): the new one first applies everything
 * the old one wrote (MongoDB's catch-up phase), then records the oplog. */
void sim_repl_elect(struct sim *s, int old, int next);
/* Appends lastWrite to a hello reply of a member (replication started). */
void sim_repl_append_last_write(struct sim_server *srv, bson_t *reply);
/* Appends $clusterTime and operationTime, as replica-set members do in every reply. */
void sim_repl_append_times(struct sim_server *srv, bson_t *reply);
/*
 * For a command carrying readConcern.afterClusterTime on a member that has not applied that far:
 * returns how many ms to wait before trying again (and the caller defers the request), 0 to run it
 * now, or -1 with an error in reply (an afterClusterTime beyond the cluster's time, or maxTimeMS
 * spent waiting). waited_ms is how long the request has waited already.
 */
int64_t sim_repl_read_wait(struct sim_server *srv, const bson_t *cmd, uint64_t waited_ms,
                           bson_t *reply);
/* After a write on the primary: holds its reply until its write concern is satisfied, or adds a
 * writeConcernError (wtimeout, or a w the set cannot satisfy). */
void sim_repl_write_concern(struct sim_server *srv, struct sim_conn *conn, const bson_t *cmd,
                            bson_t *reply);

#endif
