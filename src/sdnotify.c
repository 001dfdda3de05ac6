/*
 * sdnotify.c: systemd's notify protocol on a plain unix datagram socket (see sdnotify.h).
 */
#include "sdnotify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int sdnotify_open(struct sdnotify *n)
{
    memset(n, 0, sizeof(*n));
    n->fd = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    size_t len = strlen(path);
    /* sun_path need not be NUL-terminated for an abstract name, but a file path must be. */
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(n->addr.sun_path) ||
        (path[0] == '@' && len < 2)) {
        log_warn(NULL,
                 "NOTIFY_SOCKET=%s is not a unix socket path or abstract name; not "
                 "notifying systemd",
                 path);
        return -EINVAL;
    }
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@') {
        /* An abstract name: its first byte is NUL and its length is exactly what was given. */
        n->addr.sun_path[0] = '\0';
        n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        int err = errno;
        log_warn(NULL, "cannot open a socket to notify systemd: %s", strerror(err));
        return -err;
    }
    n->fd = fd;
    return 0;
}

int sdnotify_send(struct sdnotify *n, const char *msg)
{
    if (n->fd < 0)
        return 0;
    ssize_t w = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
                       (const struct sockaddr *)&n->addr, n->addr_len);
    if (w >= 0)
        return 0;
    int err = errno;
    if (!n->send_failed_logged) {
        n->send_failed_logged = true;
        log_warn(NULL, "cannot notify systemd (%s); later failures are not logged", strerror(err));
    }
    return -err;
}

int sdnotify_reloading(struct sdnotify *n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    return sdnotify_send(n, msg);
}

/* Parses a whole decimal number without sign; false for anything else or an overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

uint64_t sdnotify_watchdog_usec(void)
{
    uint64_t usec, pid;
    if (!parse_u64(getenv("WATCHDOG_USEC"), &usec) || usec == 0)
        return 0;
    const char *p = getenv("WATCHDOG_PID");
    if (p && *p && (!parse_u64(p, &pid) || pid != (uint64_t)getpid()))
        return 0;
    return usec;
}

void sdnotify_close(struct sdnotify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}
