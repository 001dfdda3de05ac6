/*
 * srv_parse.h: the pure half of SRV seeds (srv.c does the DNS): the rules of the initial DNS
 * seedlist discovery and SRV polling specifications that need no network.
 *
 *  - srv_txt_parse: the options of the TXT record. Only authSource, replicaSet and loadBalanced
 *    may be set there; anything else, or a malformed option, is an error.
 *  - srv_host_allowed: a host an SRV record names must lie in the SRV name's parent domain.
 *  - srv_min_ttl: the lowest TTL among a DNS answer's records of one type (c-ares 1.18 parses SRV
 *    records but does not hand out their TTLs, which set the polling interval).
 *  - srv_choose: which hosts to use under srvMaxHosts, keeping the ones already in use.
 *
 * Nothing here allocates or touches a socket; srv_txt_parse and srv_min_ttl read bytes from the
 * network and have a fuzz target (tests/fuzz/fuzz_srv_txt.c).
 */
#ifndef MONGOLB_SRV_PARSE_H
#define MONGOLB_SRV_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct srv_txt_opts {
    char replica_set[MLB_REPLSET_MAX]; /* "" when not given */
    char auth_source[128];             /* "" when not given */
    int load_balanced;                 /* -1 when not given, else 0 or 1 */
};

/*
 * Parses a TXT record's text (its strings already joined), "key=value&key=value", keys in any
 * case, values percent-decoded. Returns 0, or -EINVAL with the reason in err: an option other
 * than the three allowed, one without '=' or with an empty or over-long value, loadBalanced other
 * than true or false, or a byte that is not printable ASCII.
 */
int srv_txt_parse(const char *txt, size_t len, struct srv_txt_opts *out, char *err, size_t err_len);

/*
 * Whether host (lower case, no trailing dot) may be used for the SRV name srv_name: it must end
 * with "." and the parent domain of srv_name (srv_name less its first label when it has three or
 * more; srv_name itself when it has one or two, so that the host has at least one more label).
 */
bool srv_host_allowed(const char *srv_name, const char *host);

/*
 * The lowest TTL, in seconds, among the answer records of the given type in the DNS message
 * msg. Returns 0, -ENOENT when it has no such record, or -EINVAL when the message is malformed.
 */
int srv_min_ttl(const uint8_t *msg, size_t len, uint16_t type, uint32_t *ttl);

/*
 * Fills out with the hosts to use from found (the valid hosts of the SRV answer): all of them
 * when max is 0 or at least their number; otherwise the hosts of current that are still found,
 * then others drawn at random (Fisher-Yates with rnd) until there are max.
 */
void srv_choose(const struct mlb_seed_list *found, const struct mlb_seed_list *current, int max,
                uint32_t (*rnd)(void *), void *rnd_ctx, struct mlb_seed_list *out);

#endif
