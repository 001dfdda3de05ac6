/*
 * seeds.h: changing the set of servers while running.
 *
 * The seed list changes on a reload (an edited [upstream] seeds line) and, with
 * seeds = mongodb+srv://..., whenever an SRV poll finds other hosts (srv.c). Both end here.
 *
 * In mongos mode the seeds ARE the servers: a server no longer listed is removed (its monitor
 * stopped, its idle connections closed, the connections in use closed once their exchange ends,
 * its cursors forgotten so that a getMore for one gets CursorNotFound as from a mongos whose
 * cursor is gone, clients waiting for its connections sent to another server) and its slot is
 * released by the janitor once nothing refers to it any more (transaction pins go then, so that
 * the next statement of a transaction pinned there gets NoSuchTransaction rather than wandering);
 * a new one is added as Unknown and monitored at once. Servers listed before and after are left
 * alone.
 *
 * In replicaset mode the seeds are only where discovery starts: the primary's member list is the
 * membership. New seeds are added and monitored (a host that turns out to be no member is then
 * removed by the usual SDAM rules); seeds that are no longer listed stay as long as the replica
 * set lists them, and the log says so.
 */
#ifndef MONGOLB_SEEDS_H
#define MONGOLB_SEEDS_H

#include "config.h"

struct proxy;

/*
 * Makes the running server set follow seeds (see above). why names the cause in the log lines
 * ("reload", "SRV poll"). Returns the number of servers added or removed (0 when nothing
 * changed), or -EINVAL for an empty list (nothing is changed: a list without servers is always a
 * mistake, never a request to stop routing).
 */
int proxy_apply_seeds(struct proxy *p, const struct mlb_seed_list *seeds, const char *why);

/*
 * After a reload swapped in p->cfg: applies a changed seed list. A change between a list and
 * mongodb+srv://, or of the SRV name, needs a restart: config_reload_merge kept the running seeds
 * with the other restart-only keys (and a log line saying so), so it never reaches this.
 */
void seeds_reloaded(struct proxy *p, const struct mlb_config *old);

#endif
