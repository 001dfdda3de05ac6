/*
 * topology.c: server state from hello replies, and server selection. See topology.h.
 */
#include "topology.h"

#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RTT_ALPHA 0.2

/* MongoDB 6.0: from this wire version SDAM orders primaries by electionId before setVersion. */
#define WIRE_ELECTION_ID_FIRST 17

void topology_init(struct topology *t, enum topology_mode mode, int local_threshold_ms)
{
    memset(t, 0, sizeof(*t));
    t->mode = mode;
    t->local_threshold_ms = local_threshold_ms;
}

/* The index of the server in use at host:port, or -1. */
static int find_server(const struct topology *t, const char *host, int port)
{
    for (int i = 0; i < t->n; i++)
        if (t->servers[i].in_use && t->servers[i].port == port &&
            strcasecmp(t->servers[i].host, host) == 0)
            return i;
    return -1;
}

/* Whether idx names a slot that holds a server. */
static bool valid_server(const struct topology *t, int idx)
{
    return idx >= 0 && idx < t->n && t->servers[idx].in_use;
}

int topology_add(struct topology *t, const char *host, int port)
{
    int i = find_server(t, host, port);
    if (i >= 0)
        return i;
    if (t->n < TOPOLOGY_MAX_SERVERS) {
        i = t->n++;
    } else {
        for (int j = 0; j < t->n && i < 0; j++)
            if (!t->servers[j].in_use)
                i = j;
        if (i < 0)
            return -ENOSPC;
    }
    struct server *s = &t->servers[i];
    /* The generation outlives the previous occupant: see struct server. */
    uint64_t generation = s->generation;
    memset(s, 0, sizeof(*s));
    s->idx = i;
    s->in_use = true;
    s->generation = generation;
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->port = port;
    if (strchr(host, ':'))
        snprintf(s->addr, sizeof(s->addr), "[%s]:%d", host, port);
    else
        snprintf(s->addr, sizeof(s->addr), "%s:%d", host, port);
    s->type = SERVER_UNKNOWN;
    s->session_timeout_min = -1;
    t->version++;
    return i;
}

int topology_release(struct topology *t, int idx)
{
    if (!valid_server(t, idx))
        return -EINVAL;
    struct server *s = &t->servers[idx];
    if (!s->removed)
        return -EBUSY;
    uint64_t generation = s->generation + 1;
    memset(s, 0, sizeof(*s));
    s->idx = idx;
    s->generation = generation;
    /* Code that only knows the removed flag skips the free slot too. */
    s->removed = true;
    s->type = SERVER_UNKNOWN;
    s->session_timeout_min = -1;
    t->version++;
    return 0;
}

/* Reads a boolean-ish field: true for a true bool or a non-zero number. */
static bool get_bool(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && bson_iter_as_bool(&it);
}

static bool get_i32(const bson_t *doc, const char *key, int32_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_NUMBER(&it))
        return false;
    *out = (int32_t)bson_iter_as_int64(&it);
    return true;
}

bool topology_wire_supported(int32_t max_wire, char *why, size_t why_len)
{
    if (max_wire >= TOPOLOGY_MIN_WIRE_VERSION)
        return true;
    snprintf(why, why_len, "wire version %d is older than mongolb's minimum %d (MongoDB %s)",
             (int)max_wire, TOPOLOGY_MIN_WIRE_VERSION, TOPOLOGY_MIN_MONGODB);
    return false;
}

enum server_type topology_classify(const bson_t *reply)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, "ok") && !bson_iter_as_bool(&it))
        return SERVER_UNKNOWN;
    if (get_bool(reply, "isreplicaset"))
        return SERVER_RS_GHOST;
    if (bson_iter_init_find(&it, reply, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
        strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0)
        return SERVER_MONGOS;
    if (bson_iter_init_find(&it, reply, "setName")) {
        if (get_bool(reply, "hidden"))
            return SERVER_RS_OTHER;
        if (get_bool(reply, "isWritablePrimary") || get_bool(reply, "ismaster"))
            return SERVER_RS_PRIMARY;
        if (get_bool(reply, "secondary"))
            return SERVER_RS_SECONDARY;
        if (get_bool(reply, "arbiterOnly"))
            return SERVER_RS_ARBITER;
        return SERVER_RS_OTHER;
    }
    return SERVER_STANDALONE;
}

const char *server_type_name(enum server_type t)
{
    switch (t) {
    case SERVER_UNKNOWN:
        return "Unknown";
    case SERVER_MONGOS:
        return "Mongos";
    case SERVER_STANDALONE:
        return "Standalone";
    case SERVER_RS_PRIMARY:
        return "RSPrimary";
    case SERVER_RS_SECONDARY:
        return "RSSecondary";
    case SERVER_RS_ARBITER:
        return "RSArbiter";
    case SERVER_RS_OTHER:
        return "RSOther";
    case SERVER_RS_GHOST:
        return "RSGhost";
    }
    return "?";
}

/* Parses "host:port" or "[v6]:port" (port 27017 when absent) with the one host:port parser the
 * configuration uses too, then lower-cases the host as SDAM does. */
static bool parse_address(const char *a, char *host, size_t host_len, int *port)
{
    if (config_parse_hostport(a, 27017, host, host_len, port) < 0 || !host[0])
        return false;
    for (char *h = host; *h; h++)
        if (*h >= 'A' && *h <= 'Z')
            *h = (char)(*h - 'A' + 'a');
    return true;
}

/* What one hello's member list did to the table. */
struct member_list {
    int listed;                           /* valid addresses in the reply, in use or left out */
    bool is_member[TOPOLOGY_MAX_SERVERS]; /* by index: listed by this reply */
    bool changed;                         /* a server was added, or a removed one listed again */
    int left_out;                         /* new addresses that found no free slot */
    int named;                            /* how many of those names[] holds */
    char names[120];                      /* the first of those, for the overflow message */
};

/* Remembers an address that found no free slot, naming it while the list has room. */
static void note_left_out(struct member_list *ml, const char *addr)
{
    size_t used = strlen(ml->names), need = strlen(addr) + (used ? 2 : 0);
    if (ml->named == 0 || (ml->named == ml->left_out && used + need < sizeof(ml->names))) {
        snprintf(ml->names + used, sizeof(ml->names) - used, "%s%s", used ? ", " : "", addr);
        ml->named++;
    }
    ml->left_out++;
}

/* Collects the member addresses a hello lists (hosts, passives, arbiters), adding the servers that
 * are new while slots are free and counting those that are not. */
static void list_members(struct topology *t, const bson_t *reply, struct member_list *ml)
{
    static const char *const fields[] = {"hosts", "passives", "arbiters"};
    memset(ml, 0, sizeof(*ml));
    for (int f = 0; f < 3; f++) {
        bson_iter_t it, arr;
        if (!bson_iter_init_find(&it, reply, fields[f]) || !BSON_ITER_HOLDS_ARRAY(&it) ||
            !bson_iter_recurse(&it, &arr))
            continue;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_UTF8(&arr))
                continue;
            char host[256];
            int port;
            const char *addr = bson_iter_utf8(&arr, NULL);
            if (!parse_address(addr, host, sizeof(host), &port))
                continue;
            ml->listed++;
            int i = find_server(t, host, port);
            if (i < 0) {
                i = topology_add(t, host, port);
                if (i < 0) {
                    note_left_out(ml, addr);
                    continue;
                }
                ml->changed = true;
            } else if (t->servers[i].removed) {
                ml->changed = true;
            }
            t->servers[i].removed = false;
            ml->is_member[i] = true;
        }
    }
}

/* Records the outcome of a member list in the topology: the overflow message when addresses were
 * left out (and TOPO_OVERFLOW), nothing once a list fits. */
static int report_overflow(struct topology *t, const struct server *from,
                           const struct member_list *ml)
{
    t->overflow_hosts = ml->left_out;
    if (ml->left_out == 0) {
        t->overflow_msg[0] = 0;
        return 0;
    }
    char more[24] = "";
    if (ml->left_out > ml->named)
        snprintf(more, sizeof(more), " and %d more", ml->left_out - ml->named);
    snprintf(t->overflow_msg, sizeof(t->overflow_msg),
             "%d member%s listed by %.80s %s not tracked (all %d server slots in use): %s%s",
             ml->left_out, ml->left_out == 1 ? "" : "s", from->addr,
             ml->left_out == 1 ? "is" : "are", TOPOLOGY_MAX_SERVERS, ml->names, more);
    return TOPO_OVERFLOW;
}

/* Orders (electionId, setVersion) pairs as SDAM does for servers of wire version 17 and later:
 * electionId first. Returns <0, 0 or >0 comparing the server's pair with the topology's newest. */
static int compare_election(const struct topology *t, const struct server *s)
{
    if (s->has_election_id && t->has_max_election_id) {
        int c = memcmp(s->election_id, t->max_election_id, 12);
        if (c != 0)
            return c;
    } else if (t->has_max_election_id && !s->has_election_id) {
        return -1;
    } else if (s->has_election_id && !t->has_max_election_id) {
        return 1; /* no electionId is older than any */
    }
    if (s->has_set_version && t->has_max_set_version) {
        if (s->set_version != t->max_set_version)
            return s->set_version < t->max_set_version ? -1 : 1;
    } else if (t->has_max_set_version && !s->has_set_version) {
        return -1;
    }
    return 0;
}

/*
 * SDAM's updateRSFromPrimary for a primary's (electionId, setVersion): false when the primary is
 * stale, else true once the topology's newest pair has been updated. From wire version 17
 * (MongoDB 6.0) electionId comes first and the pair is kept whole; before, setVersion comes first,
 * only a primary that reports both can be stale, and each half of the newest pair is kept on its
 * own (the highest setVersion seen, the electionId of the last primary that had one).
 */
static bool accept_primary(struct topology *t, const struct server *s)
{
    if (s->max_wire >= WIRE_ELECTION_ID_FIRST) {
        if (compare_election(t, s) < 0)
            return false;
        /* An accepted primary's pair becomes the newest, both halves together, even when its
         * setVersion is lower than one seen before (electionId takes precedence). */
        t->has_max_election_id = s->has_election_id;
        if (s->has_election_id)
            memcpy(t->max_election_id, s->election_id, 12);
        t->has_max_set_version = s->has_set_version;
        t->max_set_version = s->set_version;
        return true;
    }
    if (s->has_set_version && s->has_election_id) {
        if (t->has_max_set_version && t->has_max_election_id &&
            (t->max_set_version > s->set_version ||
             (t->max_set_version == s->set_version &&
              memcmp(t->max_election_id, s->election_id, 12) > 0)))
            return false;
        t->has_max_election_id = true;
        memcpy(t->max_election_id, s->election_id, 12);
    }
    if (s->has_set_version && (!t->has_max_set_version || s->set_version > t->max_set_version)) {
        t->has_max_set_version = true;
        t->max_set_version = s->set_version;
    }
    return true;
}

/* Applies the replica-set rules of SDAM to a reply of server idx (already classified). */
static int apply_replset(struct topology *t, int idx, const bson_t *reply, char *why,
                         size_t why_len)
{
    struct server *s = &t->servers[idx];
    int bits = 0;
    if (s->type == SERVER_MONGOS || s->type == SERVER_STANDALONE ||
        (s->set_name[0] && t->set_name[0] && strcmp(s->set_name, t->set_name) != 0)) {
        snprintf(why, why_len, "%s is %s%s%s, not a member of replica set %s", s->addr,
                 s->set_name[0] ? "a member of replica set " : "a ",
                 s->set_name[0] ? s->set_name : server_type_name(s->type),
                 s->set_name[0] ? "" : " server", t->set_name);
        s->type = SERVER_UNKNOWN;
        s->removed = true;
        return TOPO_REFUSED | TOPO_MEMBERS_CHANGED;
    }
    bson_iter_t me;
    if ((s->type == SERVER_RS_SECONDARY || s->type == SERVER_RS_ARBITER ||
         s->type == SERVER_RS_OTHER) &&
        bson_iter_init_find(&me, reply, "me") && BSON_ITER_HOLDS_UTF8(&me)) {
        /* SDAM: a member that does not know itself by the address we reached it at is not that
         * member (a stale DNS name, a reused pod IP): it is removed. A primary is kept, as the
         * specification's tests ask (primary_mismatched_me_not_removed). */
        char host[sizeof(s->host)];
        int port = 0;
        const char *claimed = bson_iter_utf8(&me, NULL);
        if (!parse_address(claimed, host, sizeof(host), &port) || port != s->port ||
            strcasecmp(host, s->host) != 0) {
            snprintf(why, why_len,
                     "%s reports itself as %s (hello's me): not the member at that "
                     "address",
                     s->addr, claimed);
            s->type = SERVER_UNKNOWN;
            s->removed = true;
            return TOPO_REFUSED | TOPO_MEMBERS_CHANGED;
        }
    }
    struct member_list ml;
    if (s->type == SERVER_RS_PRIMARY) {
        if (!accept_primary(t, s)) {
            snprintf(why, why_len, "%s claims to be primary with an older %s", s->addr,
                     s->max_wire >= WIRE_ELECTION_ID_FIRST ? "electionId"
                                                           : "setVersion or electionId");
            s->type = SERVER_UNKNOWN;
            return TOPO_REFUSED;
        }
        /* There is one primary: any other that still says so is out of date. */
        for (int i = 0; i < t->n; i++) {
            if (i != idx && t->servers[i].in_use && t->servers[i].type == SERVER_RS_PRIMARY) {
                t->servers[i].type = SERVER_UNKNOWN;
                bits |= TOPO_TYPE_CHANGED;
            }
        }
        list_members(t, reply, &ml);
        if (ml.listed > 0) {
            /* The primary's list is the membership: whoever it leaves out is removed. A member
             * listed but left out for want of a slot removes nobody else: it only waits for a
             * slot that a removed server frees. */
            for (int i = 0; i < t->n; i++) {
                struct server *o = &t->servers[i];
                if (o->in_use && !ml.is_member[i] && !o->removed) {
                    o->removed = true;
                    o->type = SERVER_UNKNOWN;
                    ml.changed = true;
                }
            }
        }
        if (ml.changed)
            bits |= TOPO_MEMBERS_CHANGED;
        bits |= report_overflow(t, s, &ml);
    } else if (topology_primary(t) < 0) {
        list_members(t, reply, &ml);
        if (ml.changed)
            bits |= TOPO_MEMBERS_CHANGED;
        if (ml.listed > 0)
            bits |= report_overflow(t, s, &ml);
    }
    return bits;
}

int topology_on_hello(struct topology *t, int idx, const bson_t *reply, double rtt_ms,
                      int64_t now_ms)
{
    if (!valid_server(t, idx))
        return 0;
    struct server *s = &t->servers[idx];
    enum server_type old = s->type;
    s->type = topology_classify(reply);
    if (s->rtt_known) {
        s->rtt_ms = RTT_ALPHA * rtt_ms + (1.0 - RTT_ALPHA) * s->rtt_ms;
    } else {
        s->rtt_ms = rtt_ms;
        s->rtt_known = true;
    }
    s->last_ok_ms = now_ms;
    s->last_error[0] = 0;
    if (!get_i32(reply, "minWireVersion", &s->min_wire))
        s->min_wire = 0;
    bool has_max_wire = get_i32(reply, "maxWireVersion", &s->max_wire);
    if (!has_max_wire)
        s->max_wire = 0;
    char too_old[sizeof(s->last_error)];
    if (has_max_wire && !topology_wire_supported(s->max_wire, too_old, sizeof(too_old))) {
        /* Refused as a whole: neither its type nor its member list counts. */
        bool first = !s->wire_refused;
        s->wire_refused = true;
        s->type = SERVER_UNKNOWN;
        snprintf(s->last_error, sizeof(s->last_error), "%s", too_old);
        t->version++;
        return (first ? TOPO_REFUSED : 0) | (old != s->type ? TOPO_TYPE_CHANGED : 0);
    }
    s->wire_refused = false;
    if (!get_i32(reply, "maxBsonObjectSize", &s->max_bson))
        s->max_bson = 16777216;
    if (!get_i32(reply, "maxMessageSizeBytes", &s->max_msg))
        s->max_msg = 48000000;
    if (!get_i32(reply, "maxWriteBatchSize", &s->max_batch))
        s->max_batch = 100000;
    if (!get_i32(reply, "logicalSessionTimeoutMinutes", &s->session_timeout_min))
        s->session_timeout_min = -1;

    bson_iter_t it;
    s->set_name[0] = 0;
    if (bson_iter_init_find(&it, reply, "setName") && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(s->set_name, sizeof(s->set_name), "%s", bson_iter_utf8(&it, NULL));
    s->n_tags = 0;
    bson_iter_t tags;
    if (bson_iter_init_find(&it, reply, "tags") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &tags)) {
        while (bson_iter_next(&tags) && s->n_tags < TOPOLOGY_MAX_TAGS) {
            if (!BSON_ITER_HOLDS_UTF8(&tags))
                continue;
            struct server_tag *tag = &s->tags[s->n_tags++];
            snprintf(tag->name, sizeof(tag->name), "%s", bson_iter_key(&tags));
            snprintf(tag->value, sizeof(tag->value), "%s", bson_iter_utf8(&tags, NULL));
        }
    }
    bson_iter_t lw;
    if (bson_iter_init_find(&it, reply, "lastWrite") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &lw) && bson_iter_find(&lw, "lastWriteDate") &&
        BSON_ITER_HOLDS_DATE_TIME(&lw))
        s->last_write_ms = bson_iter_date_time(&lw);
    s->has_election_id = bson_iter_init_find(&it, reply, "electionId") && BSON_ITER_HOLDS_OID(&it);
    if (s->has_election_id)
        memcpy(s->election_id, bson_iter_oid(&it)->bytes, 12);
    s->has_set_version =
        bson_iter_init_find(&it, reply, "setVersion") && BSON_ITER_HOLDS_NUMBER(&it);
    if (s->has_set_version)
        s->set_version = bson_iter_as_int64(&it);

    int bits = 0;
    if (t->mode == TOPOLOGY_REPLICASET) {
        char why[400] = "";
        bits = apply_replset(t, idx, reply, why, sizeof(why));
        if (why[0])
            snprintf(s->last_error, sizeof(s->last_error), "%s", why);
    }
    if (old != s->type)
        bits |= TOPO_TYPE_CHANGED;
    t->version++;
    return bits;
}

void topology_mark_unknown(struct topology *t, int idx, bool clear_pool, const char *why)
{
    if (!valid_server(t, idx))
        return;
    struct server *s = &t->servers[idx];
    s->type = SERVER_UNKNOWN;
    if (clear_pool)
        s->generation++;
    snprintf(s->last_error, sizeof(s->last_error), "%s", why ? why : "");
    t->version++;
}

int topology_primary(const struct topology *t)
{
    for (int i = 0; i < t->n; i++)
        if (t->servers[i].in_use && t->servers[i].type == SERVER_RS_PRIMARY &&
            !t->servers[i].removed)
            return i;
    return -1;
}

double topology_staleness_ms(const struct topology *t, int idx)
{
    if (!valid_server(t, idx))
        return -1;
    const struct server *s = &t->servers[idx];
    if (s->type != SERVER_RS_SECONDARY)
        return -1;
    int p = topology_primary(t);
    if (p >= 0) {
        const struct server *ps = &t->servers[p];
        return (double)((s->last_ok_ms - s->last_write_ms) - (ps->last_ok_ms - ps->last_write_ms) +
                        t->heartbeat_ms);
    }
    int64_t smax = 0;
    bool any = false;
    for (int i = 0; i < t->n; i++) {
        const struct server *o = &t->servers[i];
        if (o->in_use && !o->removed && o->type == SERVER_RS_SECONDARY &&
            (!any || o->last_write_ms > smax)) {
            smax = o->last_write_ms;
            any = true;
        }
    }
    return (double)(smax - s->last_write_ms + t->heartbeat_ms);
}

const char *read_mode_name(enum read_mode m)
{
    static const char *const names[] = {"primary", "primaryPreferred", "secondary",
                                        "secondaryPreferred", "nearest"};
    return (unsigned)m < 5 ? names[m] : "primary";
}

int read_pref_validate(const struct read_pref *rp, int heartbeat_ms, char *err, size_t err_len)
{
    bool has_tags = false;
    for (int i = 0; i < rp->n_sets; i++)
        has_tags |= rp->sets[i].n > 0;
    if (rp->mode == READ_PRIMARY && has_tags) {
        snprintf(err, err_len, "Only empty tags are allowed with primary read preference");
        return 2;
    }
    if (rp->max_staleness_s >= 0 && rp->mode == READ_PRIMARY) {
        snprintf(err, err_len, "mode primary cannot be combined with 'maxStalenessSeconds'");
        return 160;
    }
    if (rp->max_staleness_s >= 0) {
        /* maxStalenessSeconds * 1000 >= heartbeat + idleWritePeriodMS (10 s), rounded up. */
        int min_s = (heartbeat_ms + 10000 + 999) / 1000;
        if (min_s < 90)
            min_s = 90;
        if (rp->max_staleness_s < min_s) {
            snprintf(err, err_len,
                     "maxStalenessSeconds must be a positive integer greater than "
                     "or equal to %d seconds",
                     min_s);
            return 160;
        }
    }
    return 0;
}

/* Copies a tag name or value into out (64 bytes), or fails when it is too long to keep whole. */
static bool copy_tag_string(char out[64], const char *in, size_t len)
{
    if (len >= 64)
        return false;
    memcpy(out, in, len);
    out[len] = 0;
    return true;
}

/*
 * Parses one tag set (a document of string values) into ts. Returns 0, or an error code with a
 * message: 2 BadValue for what cannot be kept whole, since a tag left out or shortened would make
 * the set match servers the client excluded.
 */
static int parse_tag_set(bson_iter_t *set, int set_no, struct read_tag_set *ts, char *err,
                         size_t err_len)
{
    bson_iter_t tag;
    ts->n = 0;
    if (!bson_iter_recurse(set, &tag)) {
        snprintf(err, err_len, "$readPreference tag set %d is not a valid document", set_no);
        return 9;
    }
    while (bson_iter_next(&tag)) {
        const char *name = bson_iter_key(&tag);
        if (!BSON_ITER_HOLDS_UTF8(&tag)) {
            snprintf(err, err_len, "$readPreference tag '%.63s' in tag set %d is not a string",
                     name, set_no);
            return 2;
        }
        if (ts->n >= TOPOLOGY_MAX_TAGS) {
            snprintf(err, err_len,
                     "$readPreference tag set %d has more than %d tags, more than mongolb "
                     "supports",
                     set_no, TOPOLOGY_MAX_TAGS);
            return 2;
        }
        uint32_t vlen;
        const char *value = bson_iter_utf8(&tag, &vlen);
        struct server_tag *out = &ts->tags[ts->n];
        if (!copy_tag_string(out->name, name, strlen(name)) ||
            !copy_tag_string(out->value, value, vlen) || strlen(out->value) != vlen) {
            snprintf(err, err_len,
                     "$readPreference tag '%.40s' in tag set %d: names and values longer than "
                     "63 bytes (or holding NUL) are not supported by mongolb",
                     name, set_no);
            return 2;
        }
        ts->n++;
    }
    return 0;
}

/* Parses the tags array of a $readPreference into rp; *dropped tells whether a non-empty set
 * after an empty one was left out. Returns 0 or an error code with err. */
static int parse_tag_sets(bson_iter_t *tags, struct read_pref *rp, bool *dropped, char *err,
                          size_t err_len)
{
    bson_iter_t sets;
    int set_no = 0;
    bool wildcard = false; /* an empty set was kept: the sets after it never matter */
    if (!bson_iter_recurse(tags, &sets)) {
        snprintf(err, err_len, "$readPreference tags is not a valid array");
        return 9;
    }
    while (bson_iter_next(&sets)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&sets)) {
            snprintf(err, err_len, "$readPreference tags must be documents");
            return 9;
        }
        struct read_tag_set scratch, *ts = &scratch;
        if (!wildcard) {
            if (rp->n_sets >= READ_PREF_MAX_SETS) {
                snprintf(err, err_len,
                         "$readPreference has more than %d tag sets, more than mongolb supports",
                         READ_PREF_MAX_SETS);
                return 2;
            }
            ts = &rp->sets[rp->n_sets++];
        }
        int code = parse_tag_set(&sets, set_no, ts, err, err_len);
        if (code)
            return code;
        *dropped |= ts == &scratch && ts->n > 0;
        wildcard |= ts->n == 0;
        set_no++;
    }
    return 0;
}

int read_pref_parse(const uint8_t *doc, uint32_t len, struct read_pref *rp, char *err,
                    size_t err_len)
{
    memset(rp, 0, sizeof(*rp));
    rp->max_staleness_s = -1;
    bson_t d;
    bson_iter_t it;
    if (!bson_init_static(&d, doc, len) || !bson_iter_init(&it, &d)) {
        snprintf(err, err_len, "invalid $readPreference");
        return 9;
    }
    bool has_mode = false, dropped = false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "mode") == 0) {
            if (!BSON_ITER_HOLDS_UTF8(&it))
                goto bad_mode;
            const char *m = bson_iter_utf8(&it, NULL);
            bool found = false;
            for (int i = 0; i < 5 && !found; i++) {
                if (strcmp(m, read_mode_name((enum read_mode)i)) == 0) {
                    rp->mode = (enum read_mode)i;
                    found = true;
                }
            }
            if (!found)
                goto bad_mode;
            has_mode = true;
        } else if (strcmp(k, "tags") == 0) {
            /* A mongos answers TypeMismatch to tags that are not an array. */
            if (!BSON_ITER_HOLDS_ARRAY(&it)) {
                snprintf(err, err_len, "$readPreference tags must be an array");
                return 14;
            }
            int code = parse_tag_sets(&it, rp, &dropped, err, err_len);
            if (code)
                return code;
        } else if (strcmp(k, "maxStalenessSeconds") == 0 && BSON_ITER_HOLDS_NUMBER(&it)) {
            rp->max_staleness_s = (int)bson_iter_as_int64(&it);
        }
    }
    /* read_pref_validate cannot see the sets left out: a mode primary with any non-empty set is
     * refused here as it would be there. */
    if (has_mode && rp->mode == READ_PRIMARY && dropped) {
        snprintf(err, err_len, "Only empty tags are allowed with primary read preference");
        return 2;
    }
    if (has_mode)
        return 0;
bad_mode:
    snprintf(err, err_len, "$readPreference has no valid mode");
    return 9;
}

int topology_on_failure(struct topology *t, int idx, const char *why, int64_t now_ms)
{
    if (!valid_server(t, idx))
        return 0;
    struct server *s = &t->servers[idx];
    int was_known = s->type != SERVER_UNKNOWN;
    s->type = SERVER_UNKNOWN;
    s->rtt_known = false;
    s->rtt_ms = 0;
    s->generation++;
    s->last_fail_ms = now_ms;
    snprintf(s->last_error, sizeof(s->last_error), "%s", why ? why : "");
    t->version++;
    return was_known;
}

bool topology_is_selectable(const struct topology *t, const struct server *s)
{
    if (!s->in_use || s->removed)
        return false;
    if (t->mode == TOPOLOGY_MONGOS)
        return s->type == SERVER_MONGOS;
    return s->type == SERVER_RS_PRIMARY || s->type == SERVER_RS_SECONDARY;
}

/* Whether server s carries every tag of set ts. */
static bool matches_tags(const struct server *s, const struct read_tag_set *ts)
{
    for (int i = 0; i < ts->n; i++) {
        bool found = false;
        for (int j = 0; j < s->n_tags && !found; j++)
            found = strcmp(s->tags[j].name, ts->tags[i].name) == 0 &&
                    strcmp(s->tags[j].value, ts->tags[i].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Keeps in cand[] only the servers matching the first tag set that matches any of them. */
static int filter_tags(const struct topology *t, const struct read_pref *rp, int *cand, int n)
{
    if (rp->n_sets == 0)
        return n;
    for (int k = 0; k < rp->n_sets; k++) {
        int m = 0;
        int out[TOPOLOGY_MAX_SERVERS];
        for (int i = 0; i < n; i++)
            if (matches_tags(&t->servers[cand[i]], &rp->sets[k]))
                out[m++] = cand[i];
        if (m > 0) {
            memcpy(cand, out, (size_t)m * sizeof(int));
            return m;
        }
    }
    return 0;
}

/* Collects the servers that may take the request before the latency window, in cand[]. */
static int eligible(const struct topology *t, const struct select_request *req, int skip, int *cand)
{
    int n = 0;
    if (t->mode == TOPOLOGY_MONGOS) {
        for (int i = 0; i < t->n; i++) {
            const struct server *s = &t->servers[i];
            if (i != skip && topology_is_selectable(t, s) && s->rtt_known)
                cand[n++] = i;
        }
        return n;
    }
    int primary = topology_primary(t);
    if (primary == skip)
        primary = -1;
    if (primary >= 0 && !t->servers[primary].rtt_known)
        primary = -1;
    const struct read_pref *rp = req->rp;
    enum read_mode mode = (req->write || !rp) ? READ_PRIMARY : rp->mode;
    if (mode == READ_PRIMARY || (mode == READ_PRIMARY_PREFERRED && primary >= 0)) {
        if (primary >= 0)
            cand[n++] = primary;
        return n;
    }
    /* Secondaries (and the primary for nearest), fresh enough, then by tags. */
    for (int i = 0; i < t->n; i++) {
        const struct server *s = &t->servers[i];
        if (i == skip || !s->in_use || !s->rtt_known || s->removed)
            continue;
        bool ok = s->type == SERVER_RS_SECONDARY ||
                  (mode == READ_NEAREST && s->type == SERVER_RS_PRIMARY);
        if (ok && rp->max_staleness_s >= 0 && s->type == SERVER_RS_SECONDARY &&
            topology_staleness_ms(t, i) > rp->max_staleness_s * 1000.0)
            ok = false;
        if (ok)
            cand[n++] = i;
    }
    n = filter_tags(t, rp, cand, n);
    if (n == 0 && mode == READ_SECONDARY_PREFERRED && primary >= 0)
        cand[n++] = primary;
    return n;
}

int topology_select(const struct topology *t, const struct select_request *req,
                    uint32_t (*rnd)(void *), void *rnd_ctx)
{
    int cand[TOPOLOGY_MAX_SERVERS];
    /* The excluded server counts only when nothing else is suitable, which is the specification's
     * "deprioritize the server that failed" for retries. */
    int n = eligible(t, req, req->exclude_idx, cand);
    if (n == 0 && req->exclude_idx >= 0)
        n = eligible(t, req, -1, cand);
    if (n == 0)
        return -EAGAIN;
    double fastest = t->servers[cand[0]].rtt_ms;
    for (int i = 1; i < n; i++)
        if (t->servers[cand[i]].rtt_ms < fastest)
            fastest = t->servers[cand[i]].rtt_ms;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (t->servers[cand[i]].rtt_ms <= fastest + t->local_threshold_ms)
            cand[m++] = cand[i];
    if (m == 1)
        return cand[0];
    int a = (int)(rnd(rnd_ctx) % (uint32_t)m);
    int b = (int)(rnd(rnd_ctx) % (uint32_t)(m - 1));
    if (b >= a)
        b++;
    const struct server *sa = &t->servers[cand[a]], *sb = &t->servers[cand[b]];
    return sb->in_flight < sa->in_flight ? cand[b] : cand[a];
}

bool topology_limits(const struct topology *t, struct topology_limits *out)
{
    bool any = false;
    for (int i = 0; i < t->n; i++) {
        const struct server *s = &t->servers[i];
        if (!topology_is_selectable(t, s))
            continue;
        if (!any) {
            out->min_wire = s->min_wire;
            out->max_wire = s->max_wire;
            out->max_bson = s->max_bson;
            out->max_msg = s->max_msg;
            out->max_batch = s->max_batch;
            out->session_timeout_min = s->session_timeout_min;
            any = true;
            continue;
        }
        if (s->min_wire > out->min_wire)
            out->min_wire = s->min_wire;
        if (s->max_wire < out->max_wire)
            out->max_wire = s->max_wire;
        if (s->max_bson < out->max_bson)
            out->max_bson = s->max_bson;
        if (s->max_msg < out->max_msg)
            out->max_msg = s->max_msg;
        if (s->max_batch < out->max_batch)
            out->max_batch = s->max_batch;
        if (s->session_timeout_min < 0 || out->session_timeout_min < 0)
            out->session_timeout_min = -1;
        else if (s->session_timeout_min < out->session_timeout_min)
            out->session_timeout_min = s->session_timeout_min;
    }
    return any;
}
