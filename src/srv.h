/*
 * srv.h: seeds = mongodb+srv://NAME: the servers come from DNS, with c-ares on the loop.
 *
 * At start mongolb asks for the SRV records of _SERVICE._tcp.NAME and the TXT record of NAME
 * (the initial DNS seedlist discovery specification). The hosts must lie in NAME's parent domain;
 * the TXT record may set only replicaSet, authSource and loadBalanced, and there may be one. Until
 * a lookup succeeds, it is tried again every heartbeat_interval_ms with a log line, and clients
 * wait for a server as they would for an unreachable cluster (then error 133).
 *
 * In mongos mode the SRV records are polled again (the SRV polling specification) every
 * srv_rescan_ms, or by default the lowest TTL of the records but at least 60 s; hosts that
 * appeared or went are added and removed through proxy_apply_seeds (seeds.h). A failed poll, or
 * one whose hosts all lie outside the domain, changes nothing, is logged, and is tried again after
 * heartbeat_interval_ms. In replicaset mode only the first lookup counts: discovery takes over.
 *
 * With [upstream] dns_server the addresses of the hosts are looked up through it as well, and
 * the monitors use them instead of the system's resolver (srv_cached_addr).
 */
#ifndef MONGOLB_SRV_H
#define MONGOLB_SRV_H

#include <sys/socket.h>

struct proxy;

/* Starts the lookups for p->cfg.seeds.srv. Returns 0 or a negative errno (c-ares unusable). */
int srv_start(struct proxy *p);
/* Cancels lookups and closes the resolver (shutdown); harmless when none was started. */
void srv_stop(struct proxy *p);
/* The address of host from the last lookup through dns_server, with port set. Returns 0, or
 * -ENOENT when there is none (the caller resolves the name itself). */
int srv_cached_addr(struct proxy *p, const char *host, int port, struct sockaddr_storage *out);

#endif
