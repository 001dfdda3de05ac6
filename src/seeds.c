/*
 * seeds.c: the running server set follows a new seed list (reload, SRV poll). See seeds.h for
 * what changes in each mode and why.
 */
#include "seeds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "proxy.h"

/* Whether server s is named in seeds (host names compare case-insensitively, as in topology). */
static bool listed(const struct mlb_seed_list *seeds, const struct server *s)
{
    for (size_t i = 0; i < seeds->count; i++)
        if (seeds->host[i].port == s->port && strcasecmp(seeds->host[i].host, s->host) == 0)
            return true;
    return false;
}

/* The slot of the server in use at host:port, or -1. */
static int find_server(const struct proxy *p, const struct mlb_hostport *h)
{
    for (int i = 0; i < p->topo.n; i++) {
        const struct server *s = &p->topo.servers[i];
        if (s->in_use && s->port == h->port && strcasecmp(s->host, h->host) == 0)
            return i;
    }
    return -1;
}

/*
 * Takes mongos idx out of service. Marking it removed keeps selection away from it at once; the
 * generation bump makes the connections still carrying a request close when their exchange ends
 * instead of going back to the pool; the cursors are forgotten now, because the server will not
 * be asked again, so that a getMore for one gets CursorNotFound (43) from mongolb itself. Pins
 * stay until the janitor releases the slot (proxy.c's reclaim_slots), for the reason given there.
 */
static void remove_server(struct proxy *p, int idx, const char *why)
{
    struct server *s = &p->topo.servers[idx];
    s->removed = true;
    s->type = SERVER_UNKNOWN;
    s->rtt_known = false;
    s->generation++;
    p->topo.version++;
    monitor_stop(p, idx);
    char msg[96];
    snprintf(msg, sizeof(msg), "removed from the seeds (%s)", why);
    pool_clear(p, idx, false, msg);
    size_t n = cursors_remove_server(&p->cursors, idx);
    log_info(s->addr, "%s: no longer routed to; forgot %zu cursors", msg, n);
}

/* Starts using the server at h: a new slot, or one removed earlier whose slot is still held. */
static int add_server(struct proxy *p, const struct mlb_hostport *h, const char *why)
{
    int idx = topology_add(&p->topo, h->host, h->port);
    if (idx < 0) {
        log_error(NULL, "%s: cannot add %s:%d: all %d server slots are in use; it is left out", why,
                  h->host, h->port, TOPOLOGY_MAX_SERVERS);
        return idx;
    }
    struct server *s = &p->topo.servers[idx];
    if (s->removed) {
        s->removed = false;
        p->topo.version++;
    }
    if (!p->monitors[idx] && monitor_start(p, idx) < 0) {
        log_error(s->addr, "%s: cannot start monitoring", why);
        return -ENOMEM;
    }
    log_info(s->addr, "added as a seed (%s)", why);
    return 0;
}

int proxy_apply_seeds(struct proxy *p, const struct mlb_seed_list *seeds, const char *why)
{
    if (seeds->count == 0) {
        log_error(NULL, "%s: an empty seed list is ignored; the servers stay as they are", why);
        return -EINVAL;
    }
    bool mongos = p->topo.mode == TOPOLOGY_MONGOS;
    int changes = 0;
    if (mongos) {
        for (int i = 0; i < p->topo.n; i++) {
            const struct server *s = &p->topo.servers[i];
            if (s->in_use && !s->removed && !listed(seeds, s)) {
                remove_server(p, i, why);
                changes++;
            }
        }
    }
    for (size_t i = 0; i < seeds->count; i++) {
        int idx = find_server(p, &seeds->host[i]);
        /* In replicaset mode a known host, even one SDAM removed, is the member list's business. */
        if (idx >= 0 && (!mongos || !p->topo.servers[idx].removed))
            continue;
        if (add_server(p, &seeds->host[i], why) == 0)
            changes++;
    }
    if (!mongos) {
        for (int i = 0; i < p->topo.n; i++) {
            const struct server *s = &p->topo.servers[i];
            if (s->in_use && !s->removed && !listed(seeds, s))
                log_info(s->addr,
                         "%s: no longer a seed, but stays while the replica set lists it as a "
                         "member (in replicaset mode the seeds only start discovery)",
                         why);
        }
    }
    if (changes) {
        int up = 0;
        for (int i = 0; i < p->topo.n; i++)
            if (p->topo.servers[i].in_use && !p->topo.servers[i].removed)
                up++;
        log_info(NULL, "%s: %d server%s added or removed; %d now in use", why, changes,
                 changes == 1 ? "" : "s", up);
        proxy_topology_changed(p);
    }
    return changes;
}

/* Whether two plain seed lists name the same servers in the same order. */
static bool same_list(const struct mlb_seed_list *a, const struct mlb_seed_list *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (a->host[i].port != b->host[i].port || strcasecmp(a->host[i].host, b->host[i].host))
            return false;
    return true;
}

void seeds_reloaded(struct proxy *p, const struct mlb_config *old)
{
    const struct mlb_seed_list *now = &p->cfg.seeds, *was = &old->seeds;
    /* A change between a list and mongodb+srv://, or of the SRV name, never gets here: the
     * reload kept it as needing a restart (config_reload_merge). An SRV name's hosts come from
     * its polls. */
    if (now->srv[0])
        return;
    if (!same_list(now, was))
        (void)proxy_apply_seeds(p, now, "reload");
}
