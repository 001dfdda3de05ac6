/*
 * proxy.c: the coordinator: what happens when a server fails or goes, when members change, on
 * the janitor's tick, at shutdown and on reload.
 *
 * The pool and the monitors report events here; this file holds the policy:
 *  - a failed check (or a connection that could not be opened) marks the server unknown and
 *    clears its pool, as SDAM asks; a check that timed out also closes the connections in use,
 *    since a frozen server never answers them (CMAP's interruptInUseConnections);
 *  - a failure on one established socket only asks for a prompt check: the other connections
 *    and the server's cursors stay until the monitor confirms something is wrong;
 *  - a server's cursors and transaction pins are forgotten only when it is really gone: two failed
 *    checks in a row, or removal from the replica set's member list.
 */
#include "proxy.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mongo_errors.h"
#include "sdnotify.h"
#include "seeds.h"
#include "srv.h"

#define JANITOR_MS          1000
#define JANITOR_SHUTDOWN_MS 20
/* STATUS= lines for systemd go out when the text changes, at most this often. */
#define NOTIFY_STATUS_MS 1000

static uv_timer_t shutdown_timer;
static bool stopped;

/*
 * systemd notification (sdnotify.h): READY=1 once the listeners are up and a server suitable for
 * the default read preference is known, or once server_selection_timeout_ms has passed without
 * one (requests then wait or fail as they would anyway, and systemd should not kill a sidecar
 * whose cluster is down); the watchdog pings from a loop timer, so a stuck loop stops them.
 */
static struct sdnotify notify;
static uv_timer_t ready_timer, watchdog_timer;
static bool notified_ready, watchdog_on;
static char last_status[256];
static int64_t last_status_ms;

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
    ops_topology_changed(p);
    if (!list_empty(&p->select_waiters))
        clients_retry_waiting(p);
}

/* --- systemd notification ------------------------------------------------------------------ */

/* "2 of 3 servers up, 14 clients" (and the primary in replicaset mode), for STATUS=. */
static void status_text(struct proxy *p, char *buf, size_t len)
{
    int known = 0, up = 0;
    for (int i = 0; i < p->topo.n; i++) {
        const struct server *s = &p->topo.servers[i];
        if (!s->in_use || s->removed)
            continue;
        known++;
        up += topology_is_selectable(&p->topo, s);
    }
    int n = snprintf(buf, len, "%s%d of %d servers up, %d client%s",
                     p->shutting_down ? "shutting down; " : "", up, known, p->n_clients,
                     p->n_clients == 1 ? "" : "s");
    if (p->topo.mode == TOPOLOGY_REPLICASET && n > 0 && (size_t)n < len) {
        int primary = topology_primary(&p->topo);
        snprintf(buf + n, len - (size_t)n, ", %s%s", primary >= 0 ? "primary " : "no primary",
                 primary >= 0 ? p->topo.servers[primary].addr : "");
    }
}

/* Sends STATUS= when the text changed since the last one sent (and force is not needed). */
static void notify_status(struct proxy *p, bool force)
{
    if (notify.fd < 0)
        return;
    int64_t now = proxy_now(p);
    if (!force && now - last_status_ms < NOTIFY_STATUS_MS)
        return;
    char text[sizeof(last_status)], msg[sizeof(last_status) + 16];
    status_text(p, text, sizeof(text));
    if (!force && strcmp(text, last_status) == 0)
        return;
    memcpy(last_status, text, sizeof(last_status));
    last_status_ms = now;
    snprintf(msg, sizeof(msg), "STATUS=%s", text);
    sdnotify_send(&notify, msg);
}

static void notify_ready(struct proxy *p, const char *why)
{
    if (notified_ready || p->shutting_down)
        return;
    notified_ready = true;
    uv_timer_stop(&ready_timer);
    char text[sizeof(last_status)], msg[sizeof(last_status) + 32];
    status_text(p, text, sizeof(text));
    memcpy(last_status, text, sizeof(last_status));
    last_status_ms = proxy_now(p);
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", text);
    sdnotify_send(&notify, msg);
    log_info(NULL, "ready: %s", why);
}

/* READY=1 as soon as a server suitable for the default read preference is known. */
static void notify_ready_if_suitable(struct proxy *p)
{
    if (notified_ready)
        return;
    struct select_request req = {.write = false, .exclude_idx = -1, .rp = &p->default_read_pref};
    if (topology_select(&p->topo, &req, proxy_rand32, p) >= 0)
        notify_ready(p, "a server suitable for the default read preference is known");
}

static void on_ready_timeout(uv_timer_t *t)
{
    struct proxy *p = t->data;
    char why[160];
    snprintf(why, sizeof(why),
             "no server suitable for the default read preference after %d ms; serving anyway "
             "(requests wait for one)",
             p->cfg.server_selection_timeout_ms);
    notify_ready(p, why);
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    sdnotify_send(&notify, "WATCHDOG=1");
}

/* Opens the notify socket and starts the readiness deadline and the watchdog's timer. */
static void notify_start(struct proxy *p)
{
    sdnotify_open(&notify);
    uv_timer_init(p->loop, &ready_timer);
    ready_timer.data = p;
    uv_timer_init(p->loop, &watchdog_timer);
    watchdog_timer.data = p;
    uv_timer_start(&ready_timer, on_ready_timeout, (uint64_t)p->cfg.server_selection_timeout_ms, 0);
    uint64_t usec = sdnotify_watchdog_usec();
    if (usec > 0 && notify.fd >= 0) {
        /* Half the interval, as sd_watchdog_enabled(3) advises, so one late tick is no restart. */
        uint64_t ms = usec / 2000 > 0 ? usec / 2000 : 1;
        watchdog_on = true;
        uv_timer_start(&watchdog_timer, on_watchdog, ms, ms);
        log_info(NULL, "systemd watchdog: pinging every %llu ms", (unsigned long long)ms);
    }
}

static void notify_stop(void)
{
    uv_close((uv_handle_t *)&ready_timer, NULL);
    uv_close((uv_handle_t *)&watchdog_timer, NULL);
}

/*
 * A server is gone: forget the cursors only it held. Transaction pins are kept while the slot is
 * (so that the transaction's next statement gets NoSuchTransaction rather than wandering to
 * another server as a new write), and dropped with the slot when a removed member's is released.
 */
static void server_gone(struct proxy *p, int idx, const char *what, bool slot_released)
{
    struct server *s = &p->topo.servers[idx];
    size_t n = cursors_remove_server(&p->cursors, idx);
    size_t pins = slot_released ? txn_pins_remove_server(p, idx) : 0;
    if (n || pins)
        log_info(s->addr, "%s: forgot %zu cursors and %zu transaction pins", what, n, pins);
}

/*
 * Gives back the slots of removed servers once nothing refers to them any more: no monitor, no
 * backend connection (so no request in flight), no cursor and no pin. The topology then reuses
 * them for new members, so that membership churn (pods changing addresses) never runs out of
 * slots. If members were left out for want of a slot, the primary is asked again at once.
 */
static void reclaim_slots(struct proxy *p)
{
    bool freed = false;
    for (int i = 0; i < p->topo.n; i++) {
        struct server *s = &p->topo.servers[i];
        if (!s->in_use || !s->removed || p->monitors[i] || p->pools[i].total > 0)
            continue;
        server_gone(p, i, "removed", true);
        if (topology_release(&p->topo, i) == 0) {
            log_debug(s->addr, "slot %d released", i);
            pool_reset(p, i);
            freed = true;
        }
    }
    if (freed && p->topo.overflow_hosts > 0) {
        int primary = topology_primary(&p->topo);
        for (int i = 0; i < p->topo.n; i++)
            if (primary < 0 || i == primary)
                monitor_request_check(p, i);
    }
}

/* Starts monitors for new members and retires removed ones. */
static void members_changed(struct proxy *p)
{
    for (int i = 0; i < p->topo.n; i++) {
        struct server *s = &p->topo.servers[i];
        if (!s->in_use)
            continue;
        if (s->removed) {
            if (p->monitors[i] || p->pools[i].total > 0) {
                log_info(s->addr, "removed from the replica set's member list");
                monitor_stop(p, i);
                pool_clear(p, i, false, "removed from the replica set");
            }
            /* Always, even with an empty pool: a removed member's cursors must not survive. */
            server_gone(p, i, "removed", false);
            continue;
        }
        if (!p->monitors[i]) {
            log_info(s->addr, "discovered as a member of replica set %s", p->topo.set_name);
            if (monitor_start(p, i) < 0)
                log_error(s->addr, "cannot start monitoring");
        }
    }
    reclaim_slots(p);
}

void proxy_check_ok(struct proxy *p, int idx, int bits)
{
    struct server *s = &p->topo.servers[idx];
    if (bits & TOPO_REFUSED) {
        log_warn(s->addr, "refused: %s", s->last_error);
        pool_clear(p, idx, false, s->last_error);
    }
    if (bits & TOPO_MEMBERS_CHANGED)
        members_changed(p);
    if ((bits & TOPO_OVERFLOW) && strcmp(p->last_overflow, p->topo.overflow_msg) != 0) {
        snprintf(p->last_overflow, sizeof(p->last_overflow), "%s", p->topo.overflow_msg);
        log_warn(NULL, "%s", p->topo.overflow_msg);
    } else if (!(bits & TOPO_OVERFLOW) && p->topo.overflow_hosts == 0) {
        p->last_overflow[0] = 0;
    }
    proxy_topology_changed(p);
    notify_ready_if_suitable(p);
}

/* Marks server idx unknown and clears its pool. */
static void server_failed(struct proxy *p, int idx, const char *why, bool interrupt)
{
    struct server *s = &p->topo.servers[idx];
    bool was_known = s->type != SERVER_UNKNOWN;
    topology_on_failure(&p->topo, idx, why, proxy_now(p));
    ops_topology_changed(p);
    if (was_known)
        log_warn(s->addr, "marked unknown: %s", why);
    pool_clear(p, idx, interrupt, why);
}

void proxy_check_failed(struct proxy *p, int idx, const char *why, bool timed_out, int consecutive)
{
    server_failed(p, idx, why, timed_out);
    if (consecutive >= 2)
        server_gone(p, idx, "unreachable", false);
}

void proxy_connect_failed(struct proxy *p, int idx, const char *why)
{
    server_failed(p, idx, why, false);
    monitor_request_check(p, idx);
}

void proxy_socket_failed(struct proxy *p, int idx, const char *why)
{
    log_info(p->topo.servers[idx].addr, "a connection failed (%s); checking the server", why);
    monitor_request_check(p, idx);
}

void proxy_state_change(struct proxy *p, int idx, int32_t code)
{
    bool clear =
        code == MONGO_ERR_SHUTDOWN_IN_PROGRESS || code == MONGO_ERR_INTERRUPTED_AT_SHUTDOWN;
    char why[96];
    snprintf(why, sizeof(why), "replied with state-change error %d", code);
    log_info(p->topo.servers[idx].addr, "%s: marked unknown, re-checking", why);
    topology_mark_unknown(&p->topo, idx, clear, why);
    ops_topology_changed(p);
    if (clear)
        pool_clear(p, idx, false, why);
    /* The member that refused is out of date, and so is the topology's idea of who is primary:
     * re-check everyone, so that a new primary is found within one minimum heartbeat. */
    for (int i = 0; i < p->topo.n; i++)
        monitor_request_check(p, i);
}

/* --- janitor, shutdown ---------------------------------------------------------------------- */

static void final_stop(struct proxy *p)
{
    if (stopped)
        return;
    stopped = true;
    log_info(NULL, "stopped");
    listeners_stop(p);
    admin_stop(p);
    clients_close_all(p, "shutdown");
    monitor_stop_all(p);
    srv_stop(p);
    pool_close_all(p);
    uv_close((uv_handle_t *)&p->janitor, NULL);
    uv_close((uv_handle_t *)&shutdown_timer, NULL);
    notify_stop();
    stream_ctx_close(&p->sctx);
}

/* When many clients have left since the peak, gives the freed heap back to the system. glibc
 * keeps freed small blocks for reuse, so without this the RSS of a burst of 10,000 clients
 * stays after they are gone; malloc_trim costs a walk of the heap, hence only after an exodus
 * of at least a thousand clients and half the peak, at most once per janitor tick. */
static void trim_after_exodus(struct proxy *p)
{
    if (p->n_clients > p->clients_peak)
        p->clients_peak = p->n_clients;
    if (p->clients_peak - p->n_clients >= 1000 && p->n_clients <= p->clients_peak / 2) {
        malloc_trim(0);
        p->clients_peak = p->n_clients;
    }
}

static void on_janitor(uv_timer_t *t)
{
    struct proxy *p = t->data;
    int64_t now = proxy_now(p);
    size_t n = cursors_expire(&p->cursors, now);
    if (n)
        log_debug(NULL, "expired %zu idle cursors", n);
    txn_pins_expire(p);
    pool_reap(p);
    reclaim_slots(p);
    trim_after_exodus(p);
    if (notified_ready)
        notify_status(p, false);
    if (p->shutting_down && p->n_clients == 0)
        final_stop(p);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct proxy *p = t->data;
    log_warn(NULL, "shutdown deadline reached with %d clients still busy; closing them",
             clients_in_flight(p));
    final_stop(p);
}

void proxy_shutdown(struct proxy *p, const char *why)
{
    if (p->shutting_down) {
        log_warn(NULL, "%s again: exiting now", why);
        final_stop(p);
        return;
    }
    p->shutting_down = true;
    sdnotify_send(&notify, "STOPPING=1");
    notify_status(p, true);
    log_info(NULL, "%s: shutting down (in-flight requests have %d ms)", why,
             p->cfg.shutdown_timeout_ms);
    listeners_stop(p);
    clients_close_idle(p);
    uv_timer_start(&shutdown_timer, on_shutdown_timeout, (uint64_t)p->cfg.shutdown_timeout_ms, 0);
    /* The janitor notices when the last client has gone; check more often now. */
    uv_timer_start(&p->janitor, on_janitor, JANITOR_SHUTDOWN_MS, JANITOR_SHUTDOWN_MS);
}

/* --- configuration --------------------------------------------------------------------------- */

/* Applies the values that take effect without a restart. */
static void apply_config(struct proxy *p)
{
    log_current_level = p->cfg.log_level;
    log_current_format = p->cfg.log_format;
    p->topo.local_threshold_ms = p->cfg.local_threshold_ms;
    p->cursors.idle_ms = p->cfg.idle_timeout_ms;
    p->cursors.max = (size_t)p->cfg.max_cursors;
    if (config_default_read_pref(&p->cfg, &p->default_read_pref) < 0)
        log_error(NULL, "the default read preference cannot be represented; using primary");
    stream_ctx_set_budget(&p->sctx, (size_t)p->cfg.max_buffer_bytes);
}

/* Keeps each server's newest TLS session, so that new connections resume it instead of doing a
 * full handshake (the pool holds one reference; SSL_set_session takes its own). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct pool *pl = SSL_get_app_data(ssl);
    if (!pl)
        return 0;
    if (pl->tls_session)
        SSL_SESSION_free(pl->tls_session);
    pl->tls_session = sess;
    return 1;
}

/* Builds the TLS contexts the configuration asks for into out, with the session callback. */
static int tls_setup(const struct mlb_config *cfg, struct tls_contexts *out, char *err, size_t len)
{
    int rc = tls_build(cfg, out, err, len);
    if (rc == 0 && out->client)
        SSL_CTX_sess_set_new_cb(out->client, on_new_session);
    return rc;
}

static void log_tls_warnings(const struct mlb_config *cfg)
{
    char buf[1024];
    if (tls_warnings(cfg, buf, sizeof(buf)) <= 0)
        return;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        log_warn(NULL, "%s", line);
}

/* Moves one string setting of the running configuration into a fresh one. */
static void keep_string(char **fresh, char **running)
{
    free(*fresh);
    *fresh = *running;
    *running = NULL;
}

/* A reload whose TLS files cannot be used keeps the running TLS settings with the running
 * contexts, so that the configuration in force always describes the contexts in use. */
static void keep_tls_settings(struct mlb_config *fresh, struct mlb_config *running)
{
    keep_string(&fresh->tls_ca_file, &running->tls_ca_file);
    keep_string(&fresh->tls_certificate_key_file, &running->tls_certificate_key_file);
    fresh->tls_client_certificates = running->tls_client_certificates;
    keep_string(&fresh->upstream_tls_ca_file, &running->upstream_tls_ca_file);
    keep_string(&fresh->upstream_tls_certificate_key_file,
                &running->upstream_tls_certificate_key_file);
    keep_string(&fresh->upstream_tls_certificate_key_file_password,
                &running->upstream_tls_certificate_key_file_password);
    fresh->upstream_tls_allow_invalid_certificates =
        running->upstream_tls_allow_invalid_certificates;
    fresh->upstream_tls_allow_invalid_hostnames = running->upstream_tls_allow_invalid_hostnames;
}

/* A key's name as a reload's log lines show it: with its section when another section has a key
 * of the same name ([upstream] tls_ca_file and [mongolb] tls_ca_file). */
static void key_label(const struct config_key *k, char *buf, size_t len)
{
    for (size_t i = 0; i < config_key_count(); i++) {
        const struct config_key *o = config_key_at(i);
        if (o != k && strcmp(o->name, k->name) == 0) {
            snprintf(buf, len, "[%s] %s", k->section, k->name);
            return;
        }
    }
    snprintf(buf, len, "%s", k->name);
}

static void log_kept(void *ctx, const struct config_key *k, const char *from, const char *to,
                     bool kept)
{
    (void)ctx;
    (void)kept;
    char name[96];
    key_label(k, name, sizeof(name));
    log_warn(NULL, "reload: %s needs a restart; kept %s (the file now says %s)", name,
             *from ? from : "(none)", *to ? to : "(none)");
}

static void log_changed(void *ctx, const struct config_key *k, const char *from, const char *to,
                        bool kept)
{
    (void)kept;
    int *n = ctx;
    char name[96];
    key_label(k, name, sizeof(name));
    log_info(NULL, "reload: %s %s -> %s", name, *from ? from : "(none)", *to ? to : "(none)");
    (*n)++;
}

/* Applies what changed in cfg (from old) that needs more than a new value in p->cfg. */
static void apply_changes(struct proxy *p, const struct mlb_config *old)
{
    p->topo.heartbeat_ms = p->cfg.heartbeat_interval_ms;
    /* Monitors read the interval when they schedule their next check: check now, so that a
     * shorter interval takes effect at once rather than after the longer one runs out. */
    if (old->heartbeat_interval_ms != p->cfg.heartbeat_interval_ms)
        for (int i = 0; i < p->topo.n; i++)
            if (p->monitors[i])
                monitor_request_check(p, i);
    /* A smaller pool: idle connections above it close now, busy ones when they are released. */
    if (p->cfg.max_pool_size < old->max_pool_size)
        pool_reap(p);
    if (p->cfg.unix_socket_mode != old->unix_socket_mode ||
        strcmp(p->cfg.unix_socket_group, old->unix_socket_group) != 0)
        (void)listeners_set_access(p);
    /* Servers added and removed (monitors, pools, cursors, pins: seeds.c). */
    seeds_reloaded(p, old);
}

void proxy_reload(struct proxy *p, struct mlb_config *fresh, const char *path)
{
    char err[4096];
    int kept = config_reload_merge(&p->cfg, fresh, log_kept, NULL, err, sizeof(err));
    if (kept < 0) {
        log_error(NULL, "reload: keeping the running configuration: %s", err);
        config_free(fresh);
        return;
    }
    /* Certificates and keys are read again: new handshakes use them, connections open now keep
     * theirs. Files that cannot be used keep the running ones. */
    struct tls_contexts tls = {0};
    if (tls_setup(fresh, &tls, err, sizeof(err)) < 0) {
        log_error(NULL, "reload: keeping the running TLS certificates, keys and settings: %s", err);
        keep_tls_settings(fresh, &p->cfg);
    } else {
        tls_free(&p->tls);
        p->tls = tls;
        /* Sessions made under the old context skipped the new one's checks: start afresh. */
        for (int i = 0; i < TOPOLOGY_MAX_SERVERS; i++) {
            if (p->pools[i].tls_session) {
                SSL_SESSION_free(p->pools[i].tls_session);
                p->pools[i].tls_session = NULL;
            }
        }
        log_tls_warnings(fresh);
    }
    int changed = 0;
    if (config_diff(&p->cfg, fresh, log_changed, &changed) < 0)
        log_warn(NULL, "reload: out of memory listing the changes");
    struct mlb_config old = p->cfg;
    p->cfg = *fresh;
    apply_config(p);
    apply_changes(p, &old);
    config_free(&old);
    auth_reload(p);
    pool_login_retry_now(p);
    clients_rearm(p);
    log_info(NULL, "reloaded %s: %d key%s changed, %d kept until a restart", path, changed,
             changed == 1 ? "" : "s", kept);
}

void proxy_reload_file(struct proxy *p, const char *path)
{
    /* Only a service that said READY=1 tells systemd it reloads: before that it is still
     * starting, and READY=1 after the reload would claim a readiness not yet reached. */
    if (notified_ready)
        sdnotify_reloading(&notify);
    struct mlb_config fresh;
    char err[4096];
    if (config_load_file(path, &fresh, err, sizeof(err)) < 0)
        log_error(NULL, "reload: keeping the running configuration: %s", err);
    else
        proxy_reload(p, &fresh, path);
    if (notified_ready) {
        sdnotify_send(&notify, "READY=1");
        notify_status(p, true);
    }
}

/* Raises the soft descriptor limit to the hard one and remembers it, so that clients are refused
 * (with a log line) before accept itself starts failing. */
static void fd_limit_init(struct proxy *p)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    p->fd_limit = rl.rlim_cur > (rlim_t)INT32_MAX ? INT32_MAX : (int)rl.rlim_cur;
    /* Standard streams, the loop's own descriptors, listeners and a margin. */
    p->fds_in_use = 16 + (int)p->cfg.listen.count;
}

int proxy_start(struct proxy *p, uv_loop_t *loop)
{
    p->loop = loop;
    p->started_ms = (int64_t)uv_now(loop);
    ops_init(p);
    p->rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ uv_hrtime();
    if (p->rng_state == 0)
        p->rng_state = 88172645463325252ull;
    list_init(&p->clients);
    list_init(&p->select_waiters);
    fd_limit_init(p);
    topology_init(&p->topo,
                  p->cfg.mode == MLB_MODE_REPLICASET ? TOPOLOGY_REPLICASET : TOPOLOGY_MONGOS,
                  p->cfg.local_threshold_ms);
    p->topo.heartbeat_ms = p->cfg.heartbeat_interval_ms;
    snprintf(p->topo.set_name, sizeof(p->topo.set_name), "%s", p->cfg.replica_set);
    int rc = stream_ctx_init(&p->sctx, loop, (size_t)p->cfg.max_buffer_bytes);
    if (rc == 0)
        rc = cursors_init(&p->cursors, (size_t)p->cfg.max_cursors, p->cfg.idle_timeout_ms);
    if (rc == 0)
        rc = txn_pins_init(p);
    if (rc < 0)
        return rc;
    apply_config(p);
    char err[4096];
    rc = tls_setup(&p->cfg, &p->tls, err, sizeof(err));
    if (rc < 0) {
        log_error(NULL, "TLS: %s", err);
        return rc;
    }
    log_tls_warnings(&p->cfg);
    rc = auth_init(p, err, sizeof(err));
    if (rc < 0) {
        log_error(NULL, "auth: %s", err);
        return rc;
    }
    pool_init(p, &client_pool_ops);
    for (size_t i = 0; i < p->cfg.seeds.count; i++) {
        rc = topology_add(&p->topo, p->cfg.seeds.host[i].host, p->cfg.seeds.host[i].port);
        if (rc < 0)
            return rc;
    }
    uv_timer_init(loop, &p->janitor);
    p->janitor.data = p;
    uv_timer_init(loop, &shutdown_timer);
    shutdown_timer.data = p;
    rc = listeners_start(p);
    if (rc == 0)
        rc = admin_start(p);
    if (rc < 0) {
        admin_cleanup(p);
        listeners_cleanup(p);
        return rc;
    }
    for (int i = 0; i < p->topo.n; i++) {
        rc = monitor_start(p, i);
        if (rc < 0)
            return rc;
    }
    /* seeds = mongodb+srv://: the servers arrive with the first SRV lookup (srv.c). */
    if (p->cfg.seeds.srv[0] && (rc = srv_start(p)) < 0)
        return rc;
    uv_timer_start(&p->janitor, on_janitor, JANITOR_MS, JANITOR_MS);
    notify_start(p);
    log_info(NULL, "mongolb %s started: %s mode, %d seed%s, auth %s", MONGOLB_VERSION,
             config_mode_name(p->cfg.mode), p->topo.n, p->topo.n == 1 ? "" : "s",
             config_auth_mode_name(p->cfg.auth_mode));
    return 0;
}

void proxy_free(struct proxy *p)
{
    listeners_cleanup(p);
    admin_cleanup(p);
    cursors_free(&p->cursors);
    txn_pins_free(p);
    auth_free(p);
    free(p->sctx.shared);
    p->sctx.shared = NULL;
    for (int i = 0; i < TOPOLOGY_MAX_SERVERS; i++)
        if (p->pools[i].tls_session)
            SSL_SESSION_free(p->pools[i].tls_session);
    tls_free(&p->tls);
    config_free(&p->cfg);
    sdnotify_close(&notify);
}
