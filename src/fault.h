/*
 * fault.h: test-only fault injection, inert unless MONGOLB_FAULT is set.
 *
 * Some error paths depend on failures a test cannot cause from outside: an allocation that fails,
 * a socket call the kernel refuses, an OpenSSL context that cannot be made. So that tests can
 * still check what a user sees on those paths (a log line, an error document, a refused
 * connection), each such step asks fault_hit() first, and fails as the real call would when the
 * step is armed.
 *
 * main() reads MONGOLB_FAULT once, at start: a comma-separated list of "point:first[:count]",
 * which makes the calls numbered first .. first+count-1 (from 1, in the order they happen) of
 * that point fail; count defaults to 1, and 0 means every call from the first one on. For
 * example MONGOLB_FAULT=client_alloc:2 refuses the second connection accepted, and
 * MONGOLB_FAULT=backend_connect:1:0 makes every backend connection fail to start. mongolb logs
 * a warning at start when any point is armed. The points are asked only where a connection or a
 * context is set up, never per request, and cost one load and one branch when nothing is armed.
 */
#ifndef MONGOLB_FAULT_H
#define MONGOLB_FAULT_H

#include <stdbool.h>
#include <stddef.h>

enum fault_point {
    FAULT_CLIENT_ALLOC,    /* listener: a client connection's memory (ENOMEM) */
    FAULT_ACCEPT,          /* listener: accept(2) (EMFILE, as at the descriptor limit) */
    FAULT_BACKEND_ALLOC,   /* pool: a backend connection's memory (ENOMEM) */
    FAULT_BACKEND_CONNECT, /* pool: starting a backend connect (EADDRNOTAVAIL) */
    FAULT_BACKEND_SOCKOPT, /* pool: keepalive / TCP_USER_TIMEOUT on a backend socket (EINVAL) */
    FAULT_BACKEND_READ,    /* pool: starting to read a new backend connection (ENOBUFS) */
    FAULT_BACKEND_HELLO,   /* pool: building the hello a new connection opens with (ENOMEM) */
    FAULT_BACKEND_TLS,     /* pool: SSL_new for a backend connection (ENOMEM) */
    FAULT_MONITOR_ALLOC,   /* monitor: the monitoring connection's memory (ENOMEM) */
    FAULT_MONITOR_CONNECT, /* monitor: starting its connect (EADDRNOTAVAIL) */
    FAULT_MONITOR_READ,    /* monitor: starting to read its connection (ENOBUFS) */
    FAULT_MONITOR_WRITE,   /* monitor: sending a hello (EPIPE) */
    FAULT_MONITOR_TLS,     /* monitor: SSL_new for its connection (ENOMEM) */
    FAULT_TLS_CONTEXT,     /* tls: SSL_CTX_new (ENOMEM) */
    FAULT_N_POINTS,
};

/* True while some point is armed: the one test fault_hit() makes before anything else. */
extern bool fault_armed;

/* Arms the points spec names ("point:first[:count],..."; NULL or "" arms none) and resets every
 * call count. Returns 0, or -EINVAL with the reason in err. */
int fault_init(const char *spec, char *err, size_t err_len);

/* The name of a point, as MONGOLB_FAULT spells it. */
const char *fault_point_name(enum fault_point f);

bool fault_hit_slow(enum fault_point f);

/* Counts one call of point f; true when this call must fail. */
static inline bool fault_hit(enum fault_point f)
{
    return fault_armed && fault_hit_slow(f);
}

#endif
