/*
 * router.c: the routing decision. See router.h.
 */
#include "router.h"

#include <stdio.h>
#include <string.h>

#include "mongo_errors.h"
#include "retry.h"

static void route_error(struct route *out, int32_t code, const char *msg)
{
    out->kind = ROUTE_ERROR;
    out->code = code;
    snprintf(out->errmsg, sizeof(out->errmsg), "%s", msg);
}

/* A pinned transaction's command. Returns true when the pin decided. */
static bool route_pinned(const struct router_input *in, struct route *out)
{
    const struct topology *t = in->topo;
    const struct server *ps = &t->servers[in->pin];
    bool mongos = t->mode == TOPOLOGY_MONGOS;
    bool usable = mongos ? ps->type == SERVER_MONGOS : ps->type == SERVER_RS_PRIMARY;
    bool end = retry_is_txn_end(in->ri);
    /* A mongos that is merely unknown may come back: the first attempt still goes there and
     * fails on its own if it is really gone. */
    if (usable || (!end && ps->type == SERVER_UNKNOWN && in->attempts == 0 && mongos)) {
        out->kind = ROUTE_SERVER;
        out->server = in->pin;
        out->pinned = true;
        return true;
    }
    if (!end) {
        /* The transaction lived on a server that is gone, or on a primary that stepped down: it
         * is aborted, as a server would say. */
        out->kind = ROUTE_ERROR;
        out->code = MONGO_ERR_NO_SUCH_TRANSACTION;
        snprintf(out->errmsg, sizeof(out->errmsg),
                 "mongolb: transaction %lld was aborted: its server %s is %s",
                 (long long)in->ri->txn_number, ps->addr,
                 mongos ? "unavailable" : "no longer primary");
        return true;
    }
    /* A commit or abort may move: the recoveryToken it carries lets another mongos find the
     * outcome, and a new primary knows the transaction through replication. */
    return false;
}

void router_route(const struct router_input *in, struct read_pref *rp_scratch, struct route *out)
{
    memset(out, 0, sizeof(*out));
    out->server = -1;
    const struct request_info *ri = in->ri;
    const struct topology *t = in->topo;
    if (in->pin >= 0 && route_pinned(in, out))
        return;
    const struct read_pref *rpp = NULL;
    if (t->mode == TOPOLOGY_REPLICASET && !ri->is_write && !ri->autocommit_false) {
        char err[200];
        int code = 0;
        if (ri->read_pref_doc) {
            code =
                read_pref_parse(ri->read_pref_doc, ri->read_pref_len, rp_scratch, err, sizeof(err));
            if (!code)
                code = read_pref_validate(rp_scratch, t->heartbeat_ms, err, sizeof(err));
            if (code) {
                route_error(out, code, err);
                return;
            }
            rpp = rp_scratch;
        }
        /* Drivers never send mode primary to a mongos (the specification), yet some older ones
         * (PyMongo 3.x) do on every read: a bare {mode: "primary"} says no more than none, so the
         * configured default applies to it too. */
        bool bare_primary =
            rpp && rpp->mode == READ_PRIMARY && rpp->n_sets == 0 && rpp->max_staleness_s < 0;
        if ((!rpp || bare_primary) && ri->retryable_read) {
            rpp = in->default_rp;
            if (rpp->mode != READ_PRIMARY && ri->opcode == WIRE_OP_MSG)
                out->add_read_pref = rpp;
        }
    }
    struct select_request sr = {
        .write = ri->is_write || ri->autocommit_false,
        .exclude_idx = in->exclude,
        .rp = rpp,
    };
    int idx = topology_select(t, &sr, in->rnd, in->rnd_ctx);
    if (idx < 0) {
        out->kind = ROUTE_WAIT;
        out->add_read_pref = NULL;
        const char *why = "no mongos known";
        if (t->mode == TOPOLOGY_REPLICASET)
            why = sr.write || !rpp || rpp->mode == READ_PRIMARY
                      ? "no primary"
                      : "no member suits the read preference";
        snprintf(out->errmsg, sizeof(out->errmsg), "%s", why);
        return;
    }
    out->kind = ROUTE_SERVER;
    out->server = idx;
    if (out->add_read_pref && t->servers[idx].type != SERVER_RS_SECONDARY)
        out->add_read_pref = NULL;
}
