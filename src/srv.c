/*
 * srv.c: SRV seeds with c-ares on the libuv loop (see srv.h for the rules it follows).
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB): each gets a uv_poll_t,
 * and one timer carries c-ares' own timeouts (ares_timeout), so no lookup ever blocks the loop. A
 * lookup is the SRV query (and, the first time, the TXT query), then, with dns_server, the hosts'
 * addresses; its outcome is applied in one place (finish).
 */
#include "srv.h"

#include <ares.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "proxy.h"
#include "seeds.h"
#include "srv_parse.h"

#define SRV_PREFIX        "srv"
#define SRV_MIN_RESCAN_MS 60000 /* the polling specification's floor */
#define SRV_LOG_REPEAT_MS 60000 /* the same failure is logged again at most this often */
#define DNS_TYPE_SRV      33
#define DNS_TYPE_TXT      16
#define DNS_CLASS_IN      1
#define TXT_MAX           4096 /* a TXT record's strings joined; far above any real options */

struct srv_watch {
    uv_poll_t h;
    ares_socket_t fd;
    struct srv *srv;
    struct srv_watch *next;
};

struct srv_addr {
    char host[MLB_HOST_MAX];
    struct sockaddr_storage ss;
};

struct srv {
    struct proxy *p;
    ares_channel ch;
    bool stopping;
    int handles_open; /* timers and watches not yet closed: srv is freed when none is left */
    uv_timer_t ares_timer;
    uv_timer_t poll_timer;
    struct srv_watch *watches;
    char qname[MLB_HOST_MAX + 80]; /* _SERVICE._tcp.NAME */

    /* The lookup in progress. */
    bool busy;
    bool with_txt;
    int pending;
    char failure[320]; /* the first reason this lookup fails, "" while it has none */
    struct mlb_seed_list found;
    bool have_ttl;
    uint32_t ttl_s;
    struct srv_txt_opts txt;
    struct srv_addr addrs[MLB_MAX_SEEDS];
    int n_addrs;

    /* What is in force. */
    bool resolved; /* a lookup has succeeded */
    struct mlb_seed_list in_use;
    struct srv_addr cur_addrs[MLB_MAX_SEEDS];
    int n_cur_addrs;
    char last_failure[320];
    int64_t last_failure_ms;
};

static void lookup_start(struct srv *srv);

/* --- c-ares on the loop ---------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct srv *srv = h->data;
    if (h->type == UV_POLL)
        free((struct srv_watch *)h); /* h is its first member */
    if (--srv->handles_open == 0)
        free(srv);
}

static void on_ares_timer(uv_timer_t *t);

/* Arms the timer for c-ares' next timeout (retransmissions, query deadlines). */
static void arm_ares_timer(struct srv *srv)
{
    if (srv->stopping)
        return;
    struct timeval tv, *t = ares_timeout(srv->ch, NULL, &tv);
    if (!t) {
        uv_timer_stop(&srv->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)t->tv_sec * 1000 + (uint64_t)(t->tv_usec + 999) / 1000;
    uv_timer_start(&srv->ares_timer, on_ares_timer, ms ? ms : 1, 0);
}

static void on_ares_timer(uv_timer_t *t)
{
    struct srv *srv = t->data;
    ares_process_fd(srv->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_ares_timer(srv);
}

static void on_watch_event(uv_poll_t *h, int status, int events)
{
    struct srv_watch *w = (struct srv_watch *)h; /* h is its first member */
    struct srv *srv = w->srv;
    ares_socket_t fd = w->fd;
    /* On an error c-ares reads or writes the socket and notices it itself. */
    bool rd = status < 0 || (events & UV_READABLE), wr = status < 0 || (events & UV_WRITABLE);
    ares_process_fd(srv->ch, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
    arm_ares_timer(srv);
}

/* c-ares opens, watches and closes its sockets through this. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct srv *srv = data;
    struct srv_watch **pw = &srv->watches, *w;
    while ((w = *pw) && w->fd != fd)
        pw = &w->next;
    if (!readable && !writable) {
        if (w) {
            *pw = w->next;
            uv_poll_stop(&w->h);
            uv_close((uv_handle_t *)&w->h, on_handle_closed);
        }
        return;
    }
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w || uv_poll_init_socket(srv->p->loop, &w->h, fd) < 0) {
            free(w);
            log_error(SRV_PREFIX, "cannot watch a DNS socket");
            return;
        }
        w->fd = fd;
        w->srv = srv;
        w->h.data = srv;
        w->next = srv->watches;
        srv->watches = w;
        srv->handles_open++;
    }
    uv_poll_start(&w->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                  on_watch_event);
}

/* --- a lookup ------------------------------------------------------------------------------- */

static void fail(struct srv *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct srv *srv, const char *fmt, ...)
{
    if (srv->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(srv->failure, sizeof(srv->failure), fmt, ap);
    va_end(ap);
}

static void on_poll_timer(uv_timer_t *t)
{
    lookup_start(t->data);
}

/* Logs a failed lookup (the same reason again only once a minute) and tries again after
 * heartbeat_interval_ms, as the polling specification asks; nothing in force changes. */
static void lookup_failed(struct srv *srv)
{
    struct proxy *p = srv->p;
    int64_t now = proxy_now(p);
    int retry = p->cfg.heartbeat_interval_ms;
    if (strcmp(srv->failure, srv->last_failure) != 0 ||
        now - srv->last_failure_ms >= SRV_LOG_REPEAT_MS) {
        if (srv->resolved)
            log_warn(SRV_PREFIX, "%s; keeping the %zu servers in use, trying again in %d ms",
                     srv->failure, srv->in_use.count, retry);
        else
            log_error(SRV_PREFIX, "%s; no server is known yet, trying again in %d ms", srv->failure,
                      retry);
        snprintf(srv->last_failure, sizeof(srv->last_failure), "%s", srv->failure);
        srv->last_failure_ms = now;
    }
    uv_timer_start(&srv->poll_timer, on_poll_timer, (uint64_t)retry, 0);
}

/* The first lookup's TXT options. Returns false (with the reason in failure) if they forbid
 * going on. */
static bool apply_txt(struct srv *srv)
{
    struct proxy *p = srv->p;
    const struct srv_txt_opts *o = &srv->txt;
    if (o->load_balanced == 1) {
        fail(srv,
             "the TXT record of %s sets loadBalanced=true: mongolb does not route to "
             "load-balanced clusters",
             p->cfg.seeds.srv);
        return false;
    }
    if (o->replica_set[0] && p->topo.mode == TOPOLOGY_MONGOS) {
        fail(srv,
             "the TXT record of %s names replica set %s, but mode = mongos; set mode = "
             "replicaset",
             p->cfg.seeds.srv, o->replica_set);
        return false;
    }
    if (p->topo.mode == TOPOLOGY_REPLICASET) {
        if (!p->cfg.replica_set[0] && !o->replica_set[0]) {
            fail(srv,
                 "mode = replicaset needs the replica set's name: set replica_set, since the "
                 "TXT record of %s names none",
                 p->cfg.seeds.srv);
            return false;
        }
        if (p->cfg.replica_set[0] && o->replica_set[0] &&
            strcmp(p->cfg.replica_set, o->replica_set) != 0)
            log_info(SRV_PREFIX, "the TXT record names replica set %s; replica_set = %s is used",
                     o->replica_set, p->cfg.replica_set);
        if (!p->cfg.replica_set[0]) {
            snprintf(p->topo.set_name, sizeof(p->topo.set_name), "%s", o->replica_set);
            log_info(SRV_PREFIX, "replica set %s, from the TXT record", o->replica_set);
        }
    }
    if (o->auth_source[0])
        log_info(SRV_PREFIX,
                 "the TXT record sets authSource=%s; applications authenticate through mongolb "
                 "with their own authSource",
                 o->auth_source);
    return true;
}

/* Everything the lookup asked for has arrived: apply it, or keep what is in force. */
static void finish(struct srv *srv)
{
    struct proxy *p = srv->p;
    srv->busy = false;
    if (!srv->failure[0] && srv->found.count == 0)
        fail(srv, "%s names no host inside %s's domain", srv->qname, p->cfg.seeds.srv);
    if (!srv->failure[0] && srv->with_txt)
        (void)apply_txt(srv); /* a refusal is left in failure */
    if (srv->failure[0]) {
        lookup_failed(srv);
        return;
    }
    bool mongos = p->topo.mode == TOPOLOGY_MONGOS;
    struct mlb_seed_list chosen;
    srv_choose(&srv->found, &srv->in_use, mongos ? p->cfg.srv_max_hosts : 0, proxy_rand32, p,
               &chosen);
    memcpy(srv->cur_addrs, srv->addrs, sizeof(srv->addrs));
    srv->n_cur_addrs = srv->n_addrs;
    bool first = !srv->resolved;
    int rc = proxy_apply_seeds(p, &chosen, first ? "SRV lookup" : "SRV poll");
    srv->resolved = true;
    srv->in_use = chosen;
    srv->last_failure[0] = '\0';
    char names[512];
    size_t used = 0;
    names[0] = '\0';
    for (size_t i = 0; i < chosen.count && used < sizeof(names); i++)
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s:%d", i ? ", " : "",
                                 chosen.host[i].host, chosen.host[i].port);
    if (!mongos) {
        log_info(SRV_PREFIX,
                 "%s: %s; discovery continues from them (no polling in replicaset "
                 "mode)",
                 srv->qname, names);
        return;
    }
    uint64_t next = (uint64_t)p->cfg.srv_rescan_ms;
    if (next == 0) {
        next = srv->have_ttl ? (uint64_t)srv->ttl_s * 1000 : SRV_MIN_RESCAN_MS;
        if (next < SRV_MIN_RESCAN_MS)
            next = SRV_MIN_RESCAN_MS;
    }
    if (first || rc > 0)
        log_info(SRV_PREFIX, "%s: %zu of %zu hosts in use (%s); next poll in %llu ms", srv->qname,
                 chosen.count, srv->found.count, names, (unsigned long long)next);
    uv_timer_start(&srv->poll_timer, on_poll_timer, next, 0);
}

static void done_one(struct srv *srv)
{
    if (--srv->pending == 0 && !srv->stopping)
        finish(srv);
}

/* One address query per host, through dns_server. */
struct addr_req {
    struct srv *srv;
    int slot;
};

static void on_host_addr(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct addr_req *r = arg;
    struct srv *srv = r->srv;
    (void)timeouts;
    if (status == ARES_SUCCESS && res && res->nodes &&
        res->nodes->ai_addrlen <= sizeof(struct sockaddr_storage)) {
        memcpy(&srv->addrs[r->slot].ss, res->nodes->ai_addr, res->nodes->ai_addrlen);
    } else if (status != ARES_EDESTRUCTION && status != ARES_ECANCELLED) {
        /* The monitor's own resolver gets its chance; its failure is logged there. */
        log_warn(SRV_PREFIX, "no address for %s from dns_server: %s", srv->addrs[r->slot].host,
                 ares_strerror(status));
        srv->addrs[r->slot].host[0] = '\0';
    }
    if (res)
        ares_freeaddrinfo(res);
    free(r);
    done_one(srv);
}

/* With dns_server, the hosts' addresses come from it too; else the lookup is complete. */
static void resolve_hosts(struct srv *srv)
{
    if (!srv->p->cfg.dns_server[0] || srv->failure[0]) {
        done_one(srv);
        return;
    }
    srv->n_addrs = (int)srv->found.count;
    srv->pending += srv->n_addrs;
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    for (int i = 0; i < srv->n_addrs; i++) {
        struct srv_addr *a = &srv->addrs[i];
        memset(a, 0, sizeof(*a));
        snprintf(a->host, sizeof(a->host), "%s", srv->found.host[i].host);
        struct addr_req *r = malloc(sizeof(*r));
        if (!r) {
            a->host[0] = '\0';
            done_one(srv);
            continue;
        }
        r->srv = srv;
        r->slot = i;
        ares_getaddrinfo(srv->ch, a->host, NULL, &hints, on_host_addr, r);
    }
    done_one(srv); /* the SRV answer's own count */
}

/* Lower case without the trailing dot, as the parent-domain rule compares names. */
static void normalize(char *host)
{
    size_t n = strlen(host);
    if (n > 0 && host[n - 1] == '.')
        host[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        host[i] = (char)tolower((unsigned char)host[i]);
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct srv *srv = arg;
    struct proxy *p = srv->p;
    (void)timeouts;
    if (status == ARES_EDESTRUCTION || srv->stopping)
        return;
    struct ares_srv_reply *replies = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &replies);
    if (status != ARES_SUCCESS) {
        fail(srv, "cannot resolve the SRV records %s: %s", srv->qname, ares_strerror(status));
        done_one(srv);
        return;
    }
    uint32_t ttl;
    srv->have_ttl = srv_min_ttl(abuf, (size_t)alen, DNS_TYPE_SRV, &ttl) == 0;
    srv->ttl_s = srv->have_ttl ? ttl : 0;
    for (struct ares_srv_reply *r = replies; r; r = r->next) {
        char host[MLB_HOST_MAX];
        if (strlen(r->host) >= sizeof(host)) {
            fail(srv, "%s names a host name longer than %d", srv->qname, MLB_HOST_MAX - 1);
            continue;
        }
        snprintf(host, sizeof(host), "%s", r->host);
        normalize(host);
        if (!srv_host_allowed(p->cfg.seeds.srv, host)) {
            /* The first lookup fails (initial discovery's rule); a poll only leaves it out. */
            if (!srv->resolved)
                fail(srv, "%s names %s, which is outside %s's domain: refused", srv->qname, host,
                     p->cfg.seeds.srv);
            else
                log_warn(SRV_PREFIX, "%s names %s, which is outside %s's domain: left out",
                         srv->qname, host, p->cfg.seeds.srv);
            continue;
        }
        struct mlb_hostport h = {.port = r->port};
        snprintf(h.host, sizeof(h.host), "%s", host);
        bool dup = false;
        for (size_t i = 0; i < srv->found.count && !dup; i++)
            dup = srv->found.host[i].port == h.port && strcmp(srv->found.host[i].host, host) == 0;
        if (dup)
            continue;
        if (srv->found.count == MLB_MAX_SEEDS) {
            log_warn(SRV_PREFIX, "%s names more than %d hosts; %s:%d and later ones are left out",
                     srv->qname, MLB_MAX_SEEDS, host, h.port);
            break;
        }
        srv->found.host[srv->found.count++] = h;
    }
    ares_free_data(replies);
    resolve_hosts(srv);
}

static void on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct srv *srv = arg;
    struct proxy *p = srv->p;
    (void)timeouts;
    if (status == ARES_EDESTRUCTION || srv->stopping)
        return;
    /* No TXT record at all is fine: there are no options. */
    if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
        done_one(srv);
        return;
    }
    struct ares_txt_ext *recs = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_txt_reply_ext(abuf, alen, &recs);
    if (status == ARES_ENODATA) {
        done_one(srv);
        return;
    }
    if (status != ARES_SUCCESS) {
        fail(srv, "cannot resolve the TXT record of %s: %s", p->cfg.seeds.srv,
             ares_strerror(status));
        done_one(srv);
        return;
    }
    char text[TXT_MAX];
    size_t len = 0;
    int records = 0;
    bool too_long = false;
    for (struct ares_txt_ext *t = recs; t; t = t->next) {
        records += t->record_start ? 1 : 0;
        if (len + t->length > sizeof(text))
            too_long = true;
        else if (records == 1) {
            memcpy(text + len, t->txt, t->length);
            len += t->length;
        }
    }
    ares_free_data(recs);
    char err[256];
    if (records > 1)
        fail(srv, "%s has %d TXT records; at most one is allowed", p->cfg.seeds.srv, records);
    else if (too_long)
        fail(srv, "the TXT record of %s is longer than %d bytes", p->cfg.seeds.srv, TXT_MAX);
    else if (srv_txt_parse(text, len, &srv->txt, err, sizeof(err)) < 0)
        fail(srv, "%s: %s", p->cfg.seeds.srv, err);
    done_one(srv);
}

static void lookup_start(struct srv *srv)
{
    if (srv->stopping || srv->busy)
        return;
    srv->busy = true;
    srv->failure[0] = '\0';
    srv->found.count = 0;
    srv->found.srv[0] = '\0';
    srv->have_ttl = false;
    srv->n_addrs = 0;
    /* TXT options are read with the first successful lookup only: a poll looks for hosts. */
    srv->with_txt = !srv->resolved;
    memset(&srv->txt, 0, sizeof(srv->txt));
    srv->txt.load_balanced = -1;
    srv->pending = srv->with_txt ? 2 : 1;
    ares_query(srv->ch, srv->qname, DNS_CLASS_IN, DNS_TYPE_SRV, on_srv, srv);
    if (srv->with_txt)
        ares_query(srv->ch, srv->p->cfg.seeds.srv, DNS_CLASS_IN, DNS_TYPE_TXT, on_txt, srv);
    arm_ares_timer(srv);
}

/* --- start, stop, addresses ---------------------------------------------------------------- */

int srv_start(struct proxy *p)
{
    static bool library_ready;
    if (!library_ready) {
        int rc = ares_library_init(ARES_LIB_INIT_ALL);
        if (rc != ARES_SUCCESS) {
            log_error(SRV_PREFIX, "c-ares: %s", ares_strerror(rc));
            return -ENOMEM;
        }
        library_ready = true;
    }
    struct srv *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->p = p;
    snprintf(srv->qname, sizeof(srv->qname), "_%s._tcp.%s", p->cfg.srv_service_name,
             p->cfg.seeds.srv);
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = srv;
    opts.timeout = 2000; /* per try, in ms with ARES_OPT_TIMEOUTMS */
    opts.tries = 3;
    int rc = ares_init_options(&srv->ch, &opts,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        log_error(SRV_PREFIX, "c-ares: %s", ares_strerror(rc));
        free(srv);
        return -ENOMEM;
    }
    if (p->cfg.dns_server[0]) {
        rc = ares_set_servers_ports_csv(srv->ch, p->cfg.dns_server);
        if (rc != ARES_SUCCESS) {
            log_error(SRV_PREFIX, "dns_server = %s: %s", p->cfg.dns_server, ares_strerror(rc));
            ares_destroy(srv->ch);
            free(srv);
            return -EINVAL;
        }
    }
    uv_timer_init(p->loop, &srv->ares_timer);
    srv->ares_timer.data = srv;
    uv_timer_init(p->loop, &srv->poll_timer);
    srv->poll_timer.data = srv;
    srv->handles_open = 2;
    p->srv = srv;
    log_info(SRV_PREFIX, "looking up %s%s%s", srv->qname, p->cfg.dns_server[0] ? " at " : "",
             p->cfg.dns_server);
    lookup_start(srv);
    return 0;
}

void srv_stop(struct proxy *p)
{
    struct srv *srv = p->srv;
    if (!srv)
        return;
    p->srv = NULL;
    srv->stopping = true;
    /* Every query's callback runs now with ARES_EDESTRUCTION, and every socket is reported
     * closed, which closes its watch. */
    ares_destroy(srv->ch);
    uv_close((uv_handle_t *)&srv->ares_timer, on_handle_closed);
    uv_close((uv_handle_t *)&srv->poll_timer, on_handle_closed);
}

int srv_cached_addr(struct proxy *p, const char *host, int port, struct sockaddr_storage *out)
{
    struct srv *srv = p->srv;
    if (!srv)
        return -ENOENT;
    for (int i = 0; i < srv->n_cur_addrs; i++) {
        const struct srv_addr *a = &srv->cur_addrs[i];
        if (!a->host[0] || strcasecmp(a->host, host) != 0)
            continue;
        *out = a->ss;
        if (out->ss_family == AF_INET)
            ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
        else if (out->ss_family == AF_INET6)
            ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
        else
            return -ENOENT;
        return 0;
    }
    return -ENOENT;
}
