/*
 * topology.c: server state from hello replies, and server selection. See topology.h.
 */
#include "topology.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define RTT_ALPHA 0.2

void topology_init(struct topology *t, enum topology_mode mode, int local_threshold_ms)
{
    memset(t, 0, sizeof(*t));
    t->mode = mode;
    t->local_threshold_ms = local_threshold_ms;
}

int topology_add(struct topology *t, const char *host, int port)
{
    for (int i = 0; i < t->n; i++)
        if (t->servers[i].port == port && strcasecmp(t->servers[i].host, host) == 0)
            return i;
    if (t->n >= TOPOLOGY_MAX_SERVERS)
        return -ENOSPC;
    struct server *s = &t->servers[t->n];
    memset(s, 0, sizeof(*s));
    s->idx = t->n;
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->port = port;
    if (strchr(host, ':'))
        snprintf(s->addr, sizeof(s->addr), "[%s]:%d", host, port);
    else
        snprintf(s->addr, sizeof(s->addr), "%s:%d", host, port);
    s->type = SERVER_UNKNOWN;
    s->session_timeout_min = -1;
    t->version++;
    return t->n++;
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

int topology_on_hello(struct topology *t, int idx, const bson_t *reply, double rtt_ms,
                      int64_t now_ms)
{
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
    if (!get_i32(reply, "maxWireVersion", &s->max_wire))
        s->max_wire = 0;
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
    t->version++;
    return old != s->type;
}

int topology_on_failure(struct topology *t, int idx, const char *why, int64_t now_ms)
{
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
    if (t->mode == TOPOLOGY_MONGOS)
        return s->type == SERVER_MONGOS;
    return s->type == SERVER_RS_PRIMARY || s->type == SERVER_RS_SECONDARY;
}

/* Whether server s may take this request at all, before the latency window. */
static bool suitable(const struct topology *t, const struct server *s,
                     const struct select_request *req)
{
    if (!topology_is_selectable(t, s) || !s->rtt_known)
        return false;
    if (t->mode == TOPOLOGY_REPLICASET && req->write)
        return s->type == SERVER_RS_PRIMARY;
    return true;
}

int topology_select(const struct topology *t, const struct select_request *req,
                    uint32_t (*rnd)(void *), void *rnd_ctx)
{
    int cand[TOPOLOGY_MAX_SERVERS];
    int n = 0;
    /* Two passes: the excluded server counts only when nothing else is suitable, which is the
     * specification's "deprioritize the server that failed" for retries. */
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        double fastest = 0;
        bool any = false;
        for (int i = 0; i < t->n; i++) {
            const struct server *s = &t->servers[i];
            if (pass == 0 && i == req->exclude_idx)
                continue;
            if (!suitable(t, s, req))
                continue;
            if (!any || s->rtt_ms < fastest)
                fastest = s->rtt_ms;
            any = true;
        }
        if (!any)
            continue;
        for (int i = 0; i < t->n; i++) {
            const struct server *s = &t->servers[i];
            if (pass == 0 && i == req->exclude_idx)
                continue;
            if (suitable(t, s, req) && s->rtt_ms <= fastest + t->local_threshold_ms)
                cand[n++] = i;
        }
    }
    if (n == 0)
        return -EAGAIN;
    if (n == 1)
        return cand[0];
    int a = (int)(rnd(rnd_ctx) % (uint32_t)n);
    int b = (int)(rnd(rnd_ctx) % (uint32_t)(n - 1));
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
