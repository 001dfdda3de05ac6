/*
 * main.c: mongolb's entry point: the command line, start-up, signals and graceful shutdown.
 *
 * mongolb runs in the foreground and logs to stderr, which systemd's journal takes. SIGTERM or
 * SIGINT starts a graceful shutdown: stop accepting, close idle clients, let requests in flight
 * finish up to shutdown_timeout_ms, then exit. A second signal exits at once. SIGHUP reloads the
 * reloadable keys of the configuration file.
 */
#include "proxy.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct proxy *g_proxy;

static struct proxy proxy;
static const char *config_path;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t shutdown_timer;
static bool stopped;

uint32_t proxy_rand32(void *ctx)
{
    return (uint32_t)(proxy_rand64(ctx) >> 32);
}

/* xorshift64*: fast and good enough for picking between servers and drawing cursor ids. */
uint64_t proxy_rand64(void *ctx)
{
    struct proxy *p = ctx;
    uint64_t x = p->rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng_state = x;
    return x * UINT64_C(2685821657736338717);
}

int32_t proxy_next_request_id(struct proxy *p)
{
    if (++p->next_request_id <= 0)
        p->next_request_id = 1;
    return p->next_request_id;
}

void proxy_topology_changed(struct proxy *p)
{
    if (!list_empty(&p->select_waiters))
        clients_retry_waiting(p);
}

void proxy_members_changed(struct proxy *p)
{
    for (int i = 0; i < p->topo.n; i++) {
        struct server *s = &p->topo.servers[i];
        if (s->removed) {
            if (p->pools[i].total > 0 || cursors_remove_server(&p->cursors, i) > 0) {
                log_info(s->addr, "removed from the replica set's member list");
                pool_clear(p, i);
            }
            continue;
        }
        if (!p->monitors[i]) {
            log_info(s->addr, "discovered as a member of replica set %s", p->topo.set_name);
            if (monitor_start(p, i) < 0)
                log_error(s->addr, "cannot start monitoring");
        }
    }
    proxy_topology_changed(p);
}

/* Turns the configured default read preference into the form selection uses. */
static void load_default_read_pref(struct proxy *p)
{
    struct read_pref *rp = &p->default_read_pref;
    memset(rp, 0, sizeof(*rp));
    rp->mode = (enum read_mode)p->cfg.read_preference;
    rp->max_staleness_s = p->cfg.max_staleness_seconds;
    const struct mlb_tag_sets *ts = &p->cfg.read_preference_tags;
    for (size_t i = 0; i < ts->count && rp->n_sets < READ_PREF_MAX_SETS; i++) {
        struct read_tag_set *set = &rp->sets[rp->n_sets++];
        for (size_t j = 0; j < ts->set[i].count && set->n < TOPOLOGY_MAX_TAGS; j++) {
            snprintf(set->tags[set->n].name, sizeof(set->tags[0].name), "%s",
                     ts->set[i].tag[j].name);
            snprintf(set->tags[set->n].value, sizeof(set->tags[0].value), "%s",
                     ts->set[i].tag[j].value);
            set->n++;
        }
    }
}

void proxy_server_failed(struct proxy *p, int idx, const char *why)
{
    struct server *s = &p->topo.servers[idx];
    bool was_known = s->type != SERVER_UNKNOWN;
    topology_on_failure(&p->topo, idx, why, proxy_now(p));
    if (was_known)
        log_warn(s->addr, "marked unknown: %s", why);
    size_t gone = cursors_remove_server(&p->cursors, idx);
    if (gone)
        log_info(s->addr, "forgot %zu cursors of the failed server", gone);
    pool_clear(p, idx);
    monitor_request_check(p, idx);
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: mongolb -c FILE [options]\n"
               "\n"
               "A MongoDB proxy that applications use as if it were one mongos: it routes each\n"
               "request to a nearby healthy mongos (or replica-set member) and keeps every\n"
               "cursor on the server that opened it.\n"
               "\n"
               "  -c, --config FILE    the configuration file (required)\n"
               "  -t, --check-config   check the configuration, print what is wrong, and exit\n"
               "  -V, --version        print the version and exit\n"
               "  -h, --help           print this help and exit\n");
}

static void final_stop(void)
{
    if (stopped)
        return;
    stopped = true;
    struct proxy *p = &proxy;
    log_info(NULL, "stopped");
    clients_close_all(p, "shutdown");
    monitor_stop_all(p);
    pool_close_all(p);
    uv_close((uv_handle_t *)&p->janitor, NULL);
    uv_close((uv_handle_t *)&shutdown_timer, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    (void)t;
    log_warn(NULL, "shutdown deadline reached with %d clients still busy; closing them",
             clients_in_flight(&proxy));
    final_stop();
}

static void on_janitor(uv_timer_t *t)
{
    struct proxy *p = t->data;
    int64_t now = proxy_now(p);
    size_t n = cursors_expire(&p->cursors, now);
    if (n)
        log_debug(NULL, "expired %zu idle cursors", n);
    txn_pins_expire(p);
    if (p->shutting_down && p->n_clients == 0)
        final_stop();
}

static void start_shutdown(const char *why)
{
    struct proxy *p = &proxy;
    if (p->shutting_down) {
        log_warn(NULL, "%s again: exiting now", why);
        final_stop();
        return;
    }
    p->shutting_down = true;
    log_info(NULL, "%s: shutting down (in-flight requests have %d ms)", why,
             p->cfg.shutdown_timeout_ms);
    clients_stop_listening(p);
    clients_close_idle(p);
    uv_timer_start(&shutdown_timer, on_shutdown_timeout, (uint64_t)p->cfg.shutdown_timeout_ms, 0);
    /* The janitor notices when the last client has gone; check more often now. */
    uv_timer_start(&p->janitor, on_janitor, 20, 20);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (signum == SIGHUP) {
        struct mlb_config fresh;
        char err[4096];
        if (config_load_file(config_path, &fresh, err, sizeof(err)) < 0) {
            log_error(NULL, "reload: keeping the running configuration: %s", err);
            return;
        }
        if (config_check_reload(&proxy.cfg, &fresh, err, sizeof(err)) < 0) {
            log_error(NULL, "reload: keeping the running configuration: %s", err);
            config_free(&fresh);
            return;
        }
        /* Swap in the reloadable values; the rest are equal by the check above. */
        config_free(&proxy.cfg);
        proxy.cfg = fresh;
        log_current_level = proxy.cfg.log_level;
        proxy.topo.local_threshold_ms = proxy.cfg.local_threshold_ms;
        proxy.cursors.idle_ms = proxy.cfg.idle_timeout_ms;
        proxy.cursors.max = (size_t)proxy.cfg.max_cursors;
        load_default_read_pref(&proxy);
        log_info(NULL, "reloaded %s", config_path);
        return;
    }
    start_shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int start(struct proxy *p)
{
    p->loop = uv_default_loop();
    p->started_ms = (int64_t)uv_now(p->loop);
    p->rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ uv_hrtime();
    if (p->rng_state == 0)
        p->rng_state = 88172645463325252ull;
    list_init(&p->clients);
    list_init(&p->select_waiters);
    topology_init(&p->topo,
                  p->cfg.mode == MLB_MODE_REPLICASET ? TOPOLOGY_REPLICASET : TOPOLOGY_MONGOS,
                  p->cfg.local_threshold_ms);
    p->topo.heartbeat_ms = p->cfg.heartbeat_interval_ms;
    snprintf(p->topo.set_name, sizeof(p->topo.set_name), "%s", p->cfg.replica_set);
    load_default_read_pref(p);
    int rc = cursors_init(&p->cursors, (size_t)p->cfg.max_cursors, p->cfg.idle_timeout_ms);
    if (rc == 0)
        rc = txn_pins_init(p);
    if (rc == 0)
        rc = pool_init(p);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < p->cfg.seeds.count; i++) {
        rc = topology_add(&p->topo, p->cfg.seeds.host[i].host, p->cfg.seeds.host[i].port);
        if (rc < 0)
            return rc;
    }
    rc = clients_listen(p);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < p->cfg.listen.count; i++)
        if (p->cfg.listen.addr[i].kind == MLB_LISTEN_UNIX)
            chmod(p->cfg.listen.addr[i].path, 0666);
    for (int i = 0; i < p->topo.n; i++) {
        rc = monitor_start(p, i);
        if (rc < 0)
            return rc;
    }
    uv_timer_init(p->loop, &p->janitor);
    p->janitor.data = p;
    uv_timer_start(&p->janitor, on_janitor, 1000, 1000);
    uv_timer_init(p->loop, &shutdown_timer);
    uv_signal_init(p->loop, &sig_term);
    uv_signal_init(p->loop, &sig_int);
    uv_signal_init(p->loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    log_info(NULL, "mongolb %s started: %s mode, %d seed%s", MONGOLB_VERSION,
             config_mode_name(p->cfg.mode), p->topo.n, p->topo.n == 1 ? "" : "s");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool check_only = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'V':
            printf("mongolb %s\n", MONGOLB_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    static char err[16384];
    if (config_load_file(config_path, &proxy.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check_only) {
        printf("%s: configuration is valid\n", config_path);
        config_free(&proxy.cfg);
        return 0;
    }
    log_current_level = proxy.cfg.log_level;
    signal(SIGPIPE, SIG_IGN);
    g_proxy = &proxy;
    int rc = start(&proxy);
    if (rc < 0) {
        log_error(NULL, "cannot start: %s", uv_strerror(rc));
        return 1;
    }
    uv_run(proxy.loop, UV_RUN_DEFAULT);
    /* Every handle is closed: free what remains. */
    uv_run(proxy.loop, UV_RUN_DEFAULT);
    cursors_free(&proxy.cursors);
    txn_pins_free(&proxy);
    config_free(&proxy.cfg);
    int lc = uv_loop_close(proxy.loop);
    if (lc != 0)
        log_warn(NULL, "event loop closed with handles still open");
    return 0;
}
