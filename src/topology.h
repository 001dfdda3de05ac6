/*
 * topology.h: what mongolb knows of its backends, and server selection.
 *
 * This module is pure: the monitor feeds it hello replies and failures, the router asks it for a
 * server, and nothing here touches a socket or a clock (times are passed in). That keeps the rules
 * of the drivers' SDAM and server-selection specifications testable without a network.
 */
#ifndef MONGOLB_TOPOLOGY_H
#define MONGOLB_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#define TOPOLOGY_MAX_SERVERS 64
#define TOPOLOGY_MAX_TAGS    16

enum server_type {
    SERVER_UNKNOWN = 0,
    SERVER_MONGOS,
    SERVER_STANDALONE,
    SERVER_RS_PRIMARY,
    SERVER_RS_SECONDARY,
    SERVER_RS_ARBITER,
    SERVER_RS_OTHER,
    SERVER_RS_GHOST,
};

enum topology_mode {
    TOPOLOGY_MONGOS = 0,
    TOPOLOGY_REPLICASET = 1,
};

struct server_tag {
    char name[64];
    char value[64];
};

/*
 * One backend as the monitor last saw it, in one slot of the topology's table.
 *
 * A slot is in use from topology_add until topology_release. A released slot (in_use false) holds
 * no server: everything that walks the table skips it, and topology_add hands it to the next new
 * server. Only generation survives the release, so that whatever still refers to the old occupant
 * by (idx, generation) compares unequal to the new one.
 */
struct server {
    int idx;
    bool in_use; /* false: a free slot (never used, or released), to be skipped */
    char host[256];
    int port;
    char addr[300]; /* "host:port", as shown in logs and status */

    enum server_type type;
    bool rtt_known;
    double rtt_ms;        /* EWMA of hello round trips, alpha 0.2 */
    int in_flight;        /* requests sent and not yet answered: the "operationCount" */
    uint64_t generation;  /* bumped whenever the pool must be cleared; never reset, even when the
                           * slot is released and reused */
    int64_t last_ok_ms;   /* when the last successful check ended */
    int64_t last_fail_ms; /* when the last check failed */
    char last_error[160];

    /* From the last hello. */
    int32_t min_wire;
    int32_t max_wire;
    int32_t max_bson;
    int32_t max_msg;
    int32_t max_batch;
    int32_t session_timeout_min; /* -1 when absent */
    char set_name[64];
    int n_tags;
    struct server_tag tags[TOPOLOGY_MAX_TAGS];
    int64_t last_write_ms; /* lastWrite.lastWriteDate */

    bool wire_refused; /* refused for its wire version: see TOPOLOGY_MIN_WIRE_VERSION */

    /* Replica-set fields. */
    bool removed; /* no longer a member per the primary's hosts list, or refused; its slot stays
                   * taken until topology_release (a released slot also reads removed) */
    bool has_election_id;
    uint8_t election_id[12];
    bool has_set_version;
    int64_t set_version;

    /* Counters for the status command. */
    uint64_t requests;
    uint64_t errors;
};

/* Read preference modes, as the server-selection specification names them. */
enum read_mode {
    READ_PRIMARY = 0,
    READ_PRIMARY_PREFERRED,
    READ_SECONDARY,
    READ_SECONDARY_PREFERRED,
    READ_NEAREST,
};

#define READ_PREF_MAX_SETS 8

struct read_tag_set {
    int n; /* 0 matches any server */
    struct server_tag tags[TOPOLOGY_MAX_TAGS];
};

struct read_pref {
    enum read_mode mode;
    int n_sets; /* 0: no tag filtering */
    struct read_tag_set sets[READ_PREF_MAX_SETS];
    int max_staleness_s; /* -1: no limit */
};

struct topology {
    enum topology_mode mode;
    /* Slots 0 to n - 1 have been used; each of them may have been released since (check in_use
     * in every loop over the table). */
    int n;
    struct server servers[TOPOLOGY_MAX_SERVERS];
    int local_threshold_ms;
    int heartbeat_ms;   /* for the staleness formula */
    char set_name[128]; /* the replica set required in replicaset mode */
    bool has_max_election_id;
    uint8_t max_election_id[12];
    bool has_max_set_version;
    int64_t max_set_version;
    uint64_t version; /* bumped on every change selection could care about */
    /* Members a hello listed that found no free slot: how many, and a sentence naming the first
     * few, for the caller to log when topology_on_hello returns TOPO_OVERFLOW. Both are cleared
     * when a later member list fits. */
    int overflow_hosts;
    char overflow_msg[320];
};

/*
 * The oldest backend mongolb works with: MongoDB 5.0, maxWireVersion 13. mongolb's monitors and
 * pooled connections open with the hello command, which every 5.0 release has but only some patch
 * releases of 4.4 and 4.2 (4.4.2, 4.2.10 and later), and a wire version cannot tell those apart.
 * What else mongolb uses is older: retryable writes and reads (3.6), transactions on sharded
 * clusters with recoveryToken (4.2, wire 8), RetryableWriteError labels set by the server (4.4,
 * wire 9). A server that reports a lower maxWireVersion is refused, as a driver refuses an
 * incompatible server.
 */
#define TOPOLOGY_MIN_WIRE_VERSION 13
#define TOPOLOGY_MIN_MONGODB      "5.0"

/*
 * Whether a server that reports max_wire can be used: true, or false with the reason in why
 * ("wire version 9 is older than mongolb's minimum 13 (MongoDB 5.0)").
 */
bool topology_wire_supported(int32_t max_wire, char *why, size_t why_len);

/* What topology_on_hello reports, as bits. A server refused for its wire version reports
 * TOPO_REFUSED on the first reply of the refusal only, so that the caller logs it once. */
#define TOPO_TYPE_CHANGED    0x1 /* the server's type changed */
#define TOPO_MEMBERS_CHANGED 0x2 /* servers were added, removed or re-added */
#define TOPO_REFUSED         0x4 /* the reply was refused (old wire version, wrong set, stale) */
#define TOPO_OVERFLOW        0x8 /* members were left out for want of a free slot: overflow_msg */

/* Initialises an empty topology. */
void topology_init(struct topology *t, enum topology_mode mode, int local_threshold_ms);

/*
 * Adds a server by address (compared case-insensitively). Returns the index of the server already
 * in use at that address (even one marked removed), or the index of a new server, or -ENOSPC when
 * every slot is in use. A new server takes a slot that was never used if one is left, otherwise
 * the lowest released one, so a released slot stays empty as long as possible.
 */
int topology_add(struct topology *t, const char *host, int port);

/*
 * Frees the slot of server idx, which must be marked removed: its caller has stopped its monitor,
 * emptied its pool and forgotten its cursors and pinned transactions. The slot then holds no server
 * (in_use false) until topology_add reuses it; its generation is bumped, and kept across the
 * reuse. Returns 0, -EINVAL if idx is not a server in use, or -EBUSY if it is no longer removed (a
 * hello listed it again meanwhile): it is then a member again and keeps its slot.
 */
int topology_release(struct topology *t, int idx);

/*
 * Applies a successful hello reply from server idx measured with round-trip rtt_ms at now_ms.
 * Sets the type per the SDAM table and the limits; updates the RTT average (seeded with the first
 * sample). A server whose maxWireVersion is below TOPOLOGY_MIN_WIRE_VERSION is refused and stays
 * unknown, with the reason in last_error, until a reply reports a supported version (a reply
 * without maxWireVersion is not judged by it); nothing else of its reply is applied. In
 * replicaset mode it also follows the SDAM rules: a member of another set, a standalone or a
 * mongos is refused and removed; a primary whose (electionId, setVersion) is older than the
 * newest seen is stale and marked unknown (electionId first from wire version 17, MongoDB 6.0;
 * setVersion first before it); a new primary demotes any other to unknown;
 * the primary's hosts, passives and arbiters become the member list (others are removed), and
 * while there is no primary any member's list only adds. When the reply is refused the reason is
 * left in the server's last_error. New members that find no free slot are left out and reported
 * with TOPO_OVERFLOW and t->overflow_msg; the next hello listing them adds them once slots have
 * been released. A reply for a released slot changes nothing and returns 0. Returns TOPO_* bits.
 */
int topology_on_hello(struct topology *t, int idx, const bson_t *reply, double rtt_ms,
                      int64_t now_ms);

/* Marks server idx unknown after a state-change error in a reply ("not writable primary",
 * "node is recovering"), keeping its pool unless clear_pool. A released slot is left alone. */
void topology_mark_unknown(struct topology *t, int idx, bool clear_pool, const char *why);

/* The index of the current primary, or -1. */
int topology_primary(const struct topology *t);

/* A secondary's estimated staleness in milliseconds by the max-staleness specification's
 * formula, or -1 when idx is not a secondary or it cannot be computed. */
double topology_staleness_ms(const struct topology *t, int idx);

/* Checks a read preference against the specification's rules: tags or maxStalenessSeconds with
 * primary are an error, and maxStalenessSeconds must be at least 90 and at least
 * heartbeat + 10 s. Returns 0, or a MongoDB error code (2 BadValue, 160 MaxStalenessOutOfRange)
 * with a message in err. */
int read_pref_validate(const struct read_pref *rp, int heartbeat_ms, char *err, size_t err_len);

/*
 * Parses a $readPreference document ({mode, tags, maxStalenessSeconds}). Returns 0, or a MongoDB
 * error code with a message in err: 9 FailedToParse for a missing or unknown mode or a tag set that
 * is not a document, 14 TypeMismatch for tags that are not an array, and 2 BadValue for a tag
 * value that is not a string (a mongos cannot match one either) or for what does not fit in struct
 * read_pref: more than READ_PREF_MAX_SETS tag sets, more than TOPOLOGY_MAX_TAGS tags in a set, or a
 * tag name or value longer than 63 bytes. Nothing is ever truncated: a read that would go by a
 * shortened preference is refused instead. Tag sets after the first empty one are checked but not
 * kept, since selection never reaches them (an empty set matches any server); with mode primary a
 * non-empty one among them is refused here (2), as read_pref_validate would refuse it.
 */
int read_pref_parse(const uint8_t *doc, uint32_t len, struct read_pref *rp, char *err,
                    size_t err_len);

/* Names a mode as $readPreference spells it. */
const char *read_mode_name(enum read_mode m);

/* Marks server idx unknown after a failed check or a network error; clears its RTT and bumps its
 * pool generation. Returns 1 if it was known before; a released slot is left alone (0). */
int topology_on_failure(struct topology *t, int idx, const char *why, int64_t now_ms);

/* Classifies a hello reply the way the SDAM specification's table does. */
enum server_type topology_classify(const bson_t *reply);
const char *server_type_name(enum server_type t);

/* True when a server of this type can take requests in the topology's mode; never for a free slot
 * or a removed server. */
bool topology_is_selectable(const struct topology *t, const struct server *s);

/* What a request needs of the server it goes to. */
struct select_request {
    bool write;      /* needs a writable server (ignored in mongos mode: every mongos is one) */
    int exclude_idx; /* a server to avoid (the one a retry failed on), or -1 */
    const struct read_pref *rp; /* for reads in replicaset mode; NULL means primary */
};

/*
 * Picks a server for a request: the suitable servers whose RTT lies within local_threshold_ms of
 * the fastest; among them two at random (rnd supplies randomness), the one with fewer requests in
 * flight. A server in exclude_idx is used only if it is the sole suitable one. Returns the index,
 * or -EAGAIN when no server is suitable now.
 */
int topology_select(const struct topology *t, const struct select_request *req,
                    uint32_t (*rnd)(void *), void *rnd_ctx);

/* The values mongolb's own hello reports: the most conservative over selectable servers.
 * Returns false when no server is selectable yet. */
struct topology_limits {
    int32_t min_wire;
    int32_t max_wire;
    int32_t max_bson;
    int32_t max_msg;
    int32_t max_batch;
    int32_t session_timeout_min; /* -1: some server reports none, so mongolb reports none */
};
bool topology_limits(const struct topology *t, struct topology_limits *out);

#endif
