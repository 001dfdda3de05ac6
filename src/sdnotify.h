/*
 * sdnotify.h: systemd's service notification protocol (sd_notify(3)), spoken without libsystemd.
 *
 * Under Type=notify, systemd passes the path of a datagram socket in $NOTIFY_SOCKET (a file
 * path, or an abstract name written with a leading '@'); the service sends newline-separated
 * KEY=VALUE assignments to it: READY=1 once it serves, RELOADING=1 (with MONOTONIC_USEC=) and
 * READY=1 around a reload, STOPPING=1 at shutdown, STATUS=... for `systemctl status`, and
 * WATCHDOG=1 at least every $WATCHDOG_USEC microseconds when the unit sets WatchdogSec=.
 *
 * Outside systemd ($NOTIFY_SOCKET unset) every call does nothing. A message that cannot be sent
 * is dropped (logged once): notification never holds up the daemon. The socket is non-blocking
 * and the calls never touch the event loop, so this module has no libuv in it; proxy.c owns the
 * timers that drive it.
 */
#ifndef MONGOLB_SDNOTIFY_H
#define MONGOLB_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct sdnotify {
    int fd; /* -1: not under systemd, or the socket could not be opened */
    struct sockaddr_un addr;
    socklen_t addr_len;
    bool send_failed_logged; /* a failed send is logged once, not on every watchdog ping */
};

/*
 * Opens the socket $NOTIFY_SOCKET names. Returns 0 (also when the variable is unset: n->fd is
 * then -1 and every send does nothing), or a negative errno code, with a log line, for a value
 * that is not a usable unix socket address.
 */
int sdnotify_open(struct sdnotify *n);

/* Sends one message (assignments separated by '\n', as sd_notify takes them). Returns 0, or a
 * negative errno code when it could not be sent (0 too when not under systemd). */
int sdnotify_send(struct sdnotify *n, const char *msg);

/* Sends RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now), as Type=notify-reload asks. */
int sdnotify_reloading(struct sdnotify *n);

/*
 * The watchdog interval the service manager expects, in microseconds: $WATCHDOG_USEC, when it is
 * a positive number and $WATCHDOG_PID is unset or names this process (another process of the
 * unit may be the watched one); otherwise 0, for no watchdog.
 */
uint64_t sdnotify_watchdog_usec(void);

void sdnotify_close(struct sdnotify *n);

#endif
