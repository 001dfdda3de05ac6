/*
 * router.h: where a request goes, decided without I/O.
 *
 * Given the topology, the request's classification and (for a transaction) its pinned server,
 * the router says: send it to server N (possibly with a $readPreference added), wait for a
 * suitable server, or answer with an error. The client state machine carries the decision out.
 */
#ifndef MONGOLB_ROUTER_H
#define MONGOLB_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "request.h"
#include "topology.h"

enum route_kind {
    ROUTE_SERVER = 0, /* send to server */
    ROUTE_WAIT,       /* no suitable server now: wait for the topology to change */
    ROUTE_ERROR,      /* answer with the error code and errmsg */
};

struct route {
    enum route_kind kind;
    int server;
    bool pinned; /* the transaction's pin decided it */
    /* The $readPreference to add to the request (a read sent to a secondary under the
     * configured default), or NULL. */
    const struct read_pref *add_read_pref;
    int32_t code;
    char errmsg[256];
};

struct router_input {
    const struct topology *topo;
    const struct request_info *ri;
    const struct read_pref *default_rp; /* replicaset mode: for reads without a preference */
    int pin;                            /* the transaction's server, or -1 */
    int exclude;                        /* a server a retry avoids, or -1 */
    int attempts;                       /* attempts made so far */
    uint32_t (*rnd)(void *);
    void *rnd_ctx;
};

/*
 * Decides where a request that is not answered locally goes (cursor commands are routed by their
 * cursor's owner, not here). rp_scratch holds a parsed $readPreference the result may point to.
 */
void router_route(const struct router_input *in, struct read_pref *rp_scratch, struct route *out);

#endif
