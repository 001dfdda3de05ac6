/*
 * listener.c: accepting client connections, on TCP addresses and unix sockets.
 *
 * A unix socket path is owned with care, since two processes may be configured with the same one:
 * a path that exists and is not a socket is never replaced; a socket some process still listens
 * on is never taken over (the start fails, with a log line); only a stale socket (nobody accepts
 * on it) is removed before binding. The socket gets unix_socket_mode and unix_socket_group, which
 * decide who may connect (again on a reload). At exit the file is removed only if it is still the
 * one this process created.
 *
 * Accepting never stops the listener: if a client cannot be set up (no memory), the connection is
 * still accepted and closed at once with a log line, since libuv stops watching a listener whose
 * pending connection was not accepted.
 */
#include "proxy.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fault.h"
#include "log.h"

/* Repeated accept errors (the fd limit) are logged at most once per this many ms. */
#define ACCEPT_WARN_INTERVAL_MS 1000

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

void listener_reject(uv_stream_t *server, bool is_unix)
{
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } *h = malloc(sizeof(*h));
    if (!h)
        return;
    if (is_unix)
        uv_pipe_init(server->loop, &h->pipe, 0);
    else
        uv_tcp_init(server->loop, &h->tcp);
    (void)uv_accept(server, (uv_stream_t *)h);
    uv_close((uv_handle_t *)h, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct proxy *p = l->p;
    if (status == 0 && fault_hit(FAULT_ACCEPT)) {
        /* Test-only: as if accept(2) had failed at the descriptor limit, where libuv closes the
         * pending connection and reports UV_EMFILE. */
        listener_reject(server, l->is_unix);
        status = UV_EMFILE;
    }
    if (status < 0) {
        int64_t now = proxy_now(p);
        if (now - p->last_fd_warn_ms >= ACCEPT_WARN_INTERVAL_MS) {
            p->last_fd_warn_ms = now;
            if (status == UV_EMFILE || status == UV_ENFILE)
                log_warn(l->name,
                         "accept: %s: the file descriptor limit (%d) is reached; connections are "
                         "being closed",
                         uv_strerror(status), p->fd_limit);
            else
                log_warn(l->name, "accept: %s", uv_strerror(status));
        }
        if (status == UV_EMFILE || status == UV_ENFILE)
            p->stats.fd_limit_refusals++;
        return;
    }
    int rc = fault_hit(FAULT_CLIENT_ALLOC) ? UV_ENOMEM : client_accept(p, server, l->is_unix);
    if (rc < 0) {
        log_warn(l->name, "cannot take a connection (%s); closing it", uv_strerror(rc));
        p->stats.clients_refused++;
        listener_reject(server, l->is_unix);
    }
}

/* Makes sure path may be bound: refuses a non-socket and a live socket, removes a stale one. */
static int unix_prepare(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == -1)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_error(NULL, "listen unix:%s: the path exists and is not a socket; not replacing it",
                  path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int err = errno;
    close(fd);
    if (rc == 0) {
        log_error(NULL, "listen unix:%s: another process is listening on it", path);
        return -EADDRINUSE;
    }
    if (err == ECONNREFUSED) {
        log_info(NULL, "listen unix:%s: removing a stale socket", path);
        if (unlink(path) == -1 && errno != ENOENT)
            return -errno;
    }
    return 0;
}

/* The gid unix_socket_group names (a group name, or a number), or -1 for "leave it". Group names
 * are looked up at start and reload only, so the blocking NSS lookup never delays a request. */
static int socket_gid(const struct mlb_config *cfg, gid_t *gid)
{
    const char *name = cfg->unix_socket_group;
    if (!*name)
        return 1;
    struct group *g = getgrnam(name);
    if (g) {
        *gid = g->gr_gid;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long n = strtoul(name, &end, 10);
    if (*name >= '0' && *name <= '9' && !*end && errno == 0 && n < (unsigned long)(gid_t)-1) {
        *gid = (gid_t)n;
        return 0;
    }
    log_error(NULL, "unix_socket_group: there is no group named '%s'", name);
    return -ENOENT;
}

static int64_t ctime_ns(const struct stat *st)
{
    return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

bool listener_unix_is_ours(const char *path, const struct unix_file_id *id)
{
    struct stat st;
    return stat(path, &st) == 0 && (uint64_t)st.st_dev == id->dev &&
           (uint64_t)st.st_ino == id->ino && ctime_ns(&st) == id->ctime_ns;
}

void listener_unix_remember(const char *path, struct unix_file_id *id)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        id->dev = (uint64_t)st.st_dev;
        id->ino = (uint64_t)st.st_ino;
        id->ctime_ns = ctime_ns(&st);
    }
}

/* Gives the socket file of l its group and mode. The file is changed only while it is the one we
 * bound (same inode), by its path: a socket's mode cannot be set through its descriptor. */
static int unix_set_access(struct proxy *p, struct listener *l)
{
    gid_t gid = 0;
    int g = socket_gid(&p->cfg, &gid);
    if (g < 0)
        return g;
    struct stat st;
    if (!listener_unix_is_ours(l->path, &l->id) || stat(l->path, &st) == -1)
        return 0;
    if (g == 0 && st.st_gid != gid && chown(l->path, (uid_t)-1, gid) == -1) {
        int err = errno;
        log_error(NULL,
                  "listen %s: cannot give the socket to group '%s': %s (mongolb must be a "
                  "member of that group)",
                  l->name, p->cfg.unix_socket_group, strerror(err));
        return -err;
    }
    int rc = chmod(l->path, (mode_t)p->cfg.unix_socket_mode);
    int err = errno;
    listener_unix_remember(l->path, &l->id); /* chown and chmod changed its ctime */
    if (rc == -1) {
        log_error(NULL, "listen %s: cannot set mode %04o: %s", l->name,
                  (unsigned)p->cfg.unix_socket_mode, strerror(err));
        return -err;
    }
    return 0;
}

int listeners_set_access(struct proxy *p)
{
    int ret = 0;
    for (int i = 0; i < p->n_listeners; i++) {
        struct listener *l = &p->listeners[i];
        if (l->is_unix && l->bound) {
            int rc = unix_set_access(p, l);
            if (rc < 0 && ret == 0)
                ret = rc;
        }
    }
    return ret;
}

/*
 * Binds a unix socket at path and hands it to the pipe handle. The socket is bound here rather
 * than with uv_pipe_bind because libuv unlinks the path of a pipe it bound when the handle closes,
 * whoever the file belongs to by then; listeners_cleanup removes it only while it is ours.
 */
int listener_unix_bind(uv_pipe_t *pipe, const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        int err = errno;
        close(fd);
        return -err;
    }
    int rc = uv_pipe_open(pipe, fd);
    if (rc < 0) {
        close(fd);
        unlink(path);
    }
    return rc;
}

static int listen_one(struct proxy *p, struct listener *l, const struct mlb_listen_addr *a)
{
    int rc;
    l->p = p;
    if (a->kind == MLB_LISTEN_UNIX) {
        l->is_unix = true;
        snprintf(l->name, sizeof(l->name), "unix:%s", a->path);
        snprintf(l->path, sizeof(l->path), "%s", a->path);
        rc = unix_prepare(a->path);
        if (rc < 0)
            return rc;
        uv_pipe_init(p->loop, &l->h.pipe, 0);
        l->h.handle.data = l;
        p->n_listeners++;
        rc = listener_unix_bind(&l->h.pipe, a->path);
        if (rc == 0) {
            l->bound = true;
            listener_unix_remember(l->path, &l->id);
            /* Before listen: no client connects under the umask's mode meanwhile. */
            rc = unix_set_access(p, l);
        }
    } else {
        struct sockaddr_storage ss;
        l->is_unix = false;
        if (strchr(a->host, ':')) {
            snprintf(l->name, sizeof(l->name), "[%s]:%d", a->host, a->port);
            rc = uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss);
        } else {
            snprintf(l->name, sizeof(l->name), "%s:%d", a->host, a->port);
            rc = uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss);
        }
        if (rc < 0) {
            log_error(NULL, "listen %s: not an IP address (%s)", l->name, uv_strerror(rc));
            return rc;
        }
        uv_tcp_init(p->loop, &l->h.tcp);
        l->h.handle.data = l;
        p->n_listeners++;
        rc = uv_tcp_bind(&l->h.tcp, (const struct sockaddr *)&ss, 0);
    }
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 1024, on_connection);
    if (rc < 0) {
        log_error(NULL, "listen %s: %s", l->name, uv_strerror(rc));
        return rc;
    }
    log_info(NULL, "listening on %s", l->name);
    return 0;
}

int listeners_start(struct proxy *p)
{
    for (size_t i = 0; i < p->cfg.listen.count && i < PROXY_MAX_LISTENERS; i++) {
        int rc = listen_one(p, &p->listeners[p->n_listeners], &p->cfg.listen.addr[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void listeners_stop(struct proxy *p)
{
    for (int i = 0; i < p->n_listeners; i++)
        if (!uv_is_closing(&p->listeners[i].h.handle))
            uv_close(&p->listeners[i].h.handle, NULL);
}

void listeners_cleanup(struct proxy *p)
{
    for (int i = 0; i < p->n_listeners; i++) {
        struct listener *l = &p->listeners[i];
        if (!l->bound)
            continue;
        l->bound = false;
        /* Only the file we created: another instance may have replaced a stale one since. */
        if (listener_unix_is_ours(l->path, &l->id))
            unlink(l->path);
    }
}

int listener_unix_prepare(const char *path)
{
    return unix_prepare(path);
}

int listener_peer_name(uv_tcp_t *h, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    int rc = uv_tcp_getpeername(h, (struct sockaddr *)&ss, &sl);
    if (rc < 0)
        return rc;
    char ip[64] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(out, cap, "%s:%d", ip, port);
    return 0;
}
