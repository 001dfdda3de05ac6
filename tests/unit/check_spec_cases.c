/*
 * check_spec_cases.c: the topology module against scenarios restated from the drivers' public
 * server-selection, max-staleness and SDAM specification tests. The scenarios live as data in
 * tests/unit/data/selection_cases.txt and tests/unit/data/sdam_cases.txt (their formats are
 * described at the top of each file); this file only reads them and runs each case through
 * topology_on_hello, topology_on_failure, read_pref_validate, topology_staleness_ms and
 * topology_select. Each data file is one test, which reports every failing case by name, and
 * names every case it skips with its reason on a line of its own:
 *
 *     SKIP tests/unit/data/selection_cases.txt: CASE: REASON
 *
 * which scripts/run-unit.sh counts as skipped and lists in make check's summary.
 *
 * The files are found relative to the repository root, where the unit tests run, or under the
 * directory named by MONGOLB_SRCDIR.
 */
#include "topology.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"

#define MAX_WORDS 64

/* The state of one run over a data file. */
struct runner {
    const char *file;
    const char *rel; /* the file as named in SKIP lines */
    int line;
    char name[128]; /* the current case, or "" between cases */
    bool skip;
    char skip_reason[400];
    int case_failures;
    int cases, skipped, failed;
    int stray_failures; /* failures of lines outside any case */
    char failed_names[4096];

    struct topology *t;
    /* Selection: the read preference of the last read or write line. */
    bool have_op;
    bool write;
    int exclude_idx; /* the server a retry avoids, or -1 */
    struct read_pref rp;
    /* SDAM: what topology_on_hello returned for the last reply. */
    int last_bits;
};

/* Records a failure of the current case with its file and line, and prints it. */
__attribute__((format(printf, 2, 3))) static void case_fail(struct runner *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d: case %s: %s\n", r->file, r->line, r->name[0] ? r->name : "(none)", msg);
    if (r->name[0])
        r->case_failures++;
    else
        r->stray_failures++;
}

/* A deterministic generator for selection (xorshift32); its state must not be zero. */
static uint32_t next_random(void *ctx)
{
    uint32_t *s = ctx;
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* Splits line in place into at most max words separated by blanks; returns how many. */
static int split_words(char *line, char **words, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " \t", &save); w && n < max; w = strtok_r(NULL, " \t", &save))
        words[n++] = w;
    return n;
}

/* Parses "host:port" or "[v6]:port" into host and port. */
static bool split_address(const char *addr, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return false;
    const char *h = addr;
    size_t n = (size_t)(colon - addr);
    if (addr[0] == '[') {
        if (n < 2 || colon[-1] != ']')
            return false;
        h = addr + 1;
        n -= 2;
    }
    if (n == 0 || n >= host_len)
        return false;
    memcpy(host, h, n);
    host[n] = 0;
    *port = atoi(colon + 1);
    return *port > 0;
}

/* The index of the server whose address is addr, or -1. */
static int find_server(const struct topology *t, const char *addr)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->servers[i].addr, addr) == 0)
            return i;
    return -1;
}

/* Like find_server, but a missing server fails the case. */
static int need_server(struct runner *r, const char *addr)
{
    int i = find_server(r->t, addr);
    if (i < 0)
        case_fail(r, "no server %s in the topology", addr);
    return i;
}

/* Adds the server at addr, failing the case when the address is malformed. Returns its index. */
static int add_server(struct runner *r, const char *addr)
{
    char host[256];
    int port;
    if (!split_address(addr, host, sizeof(host), &port)) {
        case_fail(r, "bad address %s", addr);
        return -1;
    }
    int i = topology_add(r->t, host, port);
    if (i < 0)
        case_fail(r, "cannot add %s", addr);
    return i;
}

/* Parses "k:v,k:v" into tags; returns how many, or -1 when malformed. */
static int parse_tags(char *spec, struct server_tag *tags, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *kv = strtok_r(spec, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(kv, ':');
        if (!colon || n >= max)
            return -1;
        *colon = 0;
        snprintf(tags[n].name, sizeof(tags[n].name), "%s", kv);
        snprintf(tags[n].value, sizeof(tags[n].value), "%s", colon + 1);
        n++;
    }
    return n;
}

/* Starts a case: a fresh replica-set topology for set "rs" with the specifications' defaults. */
static void begin_case(struct runner *r, const char *name)
{
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->skip = false;
    r->skip_reason[0] = 0;
    r->case_failures = 0;
    r->have_op = false;
    r->write = false;
    r->exclude_idx = -1;
    memset(&r->rp, 0, sizeof(r->rp));
    r->rp.max_staleness_s = -1;
    r->last_bits = 0;
    topology_init(r->t, TOPOLOGY_REPLICASET, 15);
    snprintf(r->t->set_name, sizeof(r->t->set_name), "rs");
    r->t->heartbeat_ms = 10000;
}

/* Ends a case, counting it as passed, failed or skipped. */
static void end_case(struct runner *r)
{
    r->cases++;
    if (r->skip) {
        r->skipped++;
        printf("SKIP %s: %s: %s\n", r->rel, r->name,
               r->skip_reason[0] ? r->skip_reason : "(no reason given)");
    } else if (r->case_failures > 0) {
        r->failed++;
        size_t used = strlen(r->failed_names);
        snprintf(r->failed_names + used, sizeof(r->failed_names) - used, "%s%s", used ? ", " : "",
                 r->name);
    }
    r->name[0] = 0;
}

/* --- selection cases -------------------------------------------------------------------- */

/* Builds the hello reply a server of the named type would send; false for an unknown type. */
static bool build_hello(const char *type, const struct server_tag *tags, int n_tags, bool has_lw,
                        int64_t lw, bson_t *b)
{
    BSON_APPEND_INT32(b, "ok", 1);
    if (strcmp(type, "mongos") == 0) {
        BSON_APPEND_UTF8(b, "msg", "isdbgrid");
        BSON_APPEND_BOOL(b, "isWritablePrimary", true);
    } else if (strcmp(type, "standalone") == 0) {
        BSON_APPEND_BOOL(b, "isWritablePrimary", true);
    } else if (strcmp(type, "ghost") == 0) {
        BSON_APPEND_BOOL(b, "isreplicaset", true);
    } else {
        BSON_APPEND_UTF8(b, "setName", "rs");
        if (strcmp(type, "primary") == 0)
            BSON_APPEND_BOOL(b, "isWritablePrimary", true);
        else if (strcmp(type, "secondary") == 0)
            BSON_APPEND_BOOL(b, "secondary", true);
        else if (strcmp(type, "arbiter") == 0)
            BSON_APPEND_BOOL(b, "arbiterOnly", true);
        else if (strcmp(type, "other") == 0) {
            BSON_APPEND_BOOL(b, "secondary", true);
            BSON_APPEND_BOOL(b, "hidden", true);
        } else
            return false;
    }
    BSON_APPEND_INT32(b, "maxWireVersion", 21);
    if (n_tags > 0) {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(b, "tags", &doc);
        for (int i = 0; i < n_tags; i++)
            BSON_APPEND_UTF8(&doc, tags[i].name, tags[i].value);
        bson_append_document_end(b, &doc);
    }
    if (has_lw) {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(b, "lastWrite", &doc);
        BSON_APPEND_DATE_TIME(&doc, "lastWriteDate", lw);
        bson_append_document_end(b, &doc);
    }
    return true;
}

/* "server ADDR TYPE [rtt=MS] [tags=K:V,...] [lw=MS] [upd=MS] [inflight=N]" */
static void sel_server(struct runner *r, char **w, int n)
{
    if (n < 3) {
        case_fail(r, "server needs an address and a type");
        return;
    }
    double rtt = 0;
    int64_t lw = 0, upd = 0;
    bool has_lw = false;
    int inflight = 0, n_tags = 0;
    struct server_tag tags[TOPOLOGY_MAX_TAGS];
    for (int i = 3; i < n; i++) {
        if (strncmp(w[i], "rtt=", 4) == 0) {
            rtt = strtod(w[i] + 4, NULL);
        } else if (strncmp(w[i], "lw=", 3) == 0) {
            lw = strtoll(w[i] + 3, NULL, 10);
            has_lw = true;
        } else if (strncmp(w[i], "upd=", 4) == 0) {
            upd = strtoll(w[i] + 4, NULL, 10);
        } else if (strncmp(w[i], "inflight=", 9) == 0) {
            inflight = atoi(w[i] + 9);
        } else if (strncmp(w[i], "tags=", 5) == 0) {
            n_tags = parse_tags(w[i] + 5, tags, TOPOLOGY_MAX_TAGS);
            if (n_tags < 0) {
                case_fail(r, "bad tags %s", w[i]);
                return;
            }
        } else {
            case_fail(r, "unknown server attribute %s", w[i]);
            return;
        }
    }
    int idx = add_server(r, w[1]);
    if (idx < 0)
        return;
    r->t->servers[idx].in_flight = inflight;
    if (strcmp(w[2], "unknown") == 0)
        return;
    bson_t b = BSON_INITIALIZER;
    if (!build_hello(w[2], tags, n_tags, has_lw, lw, &b))
        case_fail(r, "unknown server type %s", w[2]);
    else
        topology_on_hello(r->t, idx, &b, rtt, upd);
    bson_destroy(&b);
}

/* "read|write MODE [tagsets=SET;SET...] [maxstaleness=S] [exclude=ADDR]" */
static void sel_operation(struct runner *r, char **w, int n)
{
    memset(&r->rp, 0, sizeof(r->rp));
    r->rp.max_staleness_s = -1;
    r->write = strcmp(w[0], "write") == 0;
    r->exclude_idx = -1;
    r->have_op = true;
    bool found = false;
    for (int m = 0; n >= 2 && m < 5 && !found; m++) {
        if (strcmp(w[1], read_mode_name((enum read_mode)m)) == 0) {
            r->rp.mode = (enum read_mode)m;
            found = true;
        }
    }
    if (!found) {
        case_fail(r, "%s needs a read preference mode", w[0]);
        return;
    }
    for (int i = 2; i < n; i++) {
        if (strncmp(w[i], "maxstaleness=", 13) == 0) {
            r->rp.max_staleness_s = atoi(w[i] + 13);
        } else if (strncmp(w[i], "exclude=", 8) == 0) {
            r->exclude_idx = need_server(r, w[i] + 8);
        } else if (strncmp(w[i], "tagsets=", 8) == 0) {
            char *save = NULL;
            for (char *set = strtok_r(w[i] + 8, ";", &save); set;
                 set = strtok_r(NULL, ";", &save)) {
                if (r->rp.n_sets >= READ_PREF_MAX_SETS) {
                    case_fail(r, "too many tag sets");
                    return;
                }
                struct read_tag_set *ts = &r->rp.sets[r->rp.n_sets++];
                ts->n = strcmp(set, "{}") == 0 ? 0 : parse_tags(set, ts->tags, TOPOLOGY_MAX_TAGS);
                if (ts->n < 0) {
                    case_fail(r, "bad tag set %s", set);
                    return;
                }
            }
        } else {
            case_fail(r, "unknown read preference attribute %s", w[i]);
            return;
        }
    }
}

/* Selects `draws` times with the current operation and counts the choices per server. Returns
 * how many selections failed with -EAGAIN (any other failure fails the case). */
static int draw(struct runner *r, int draws, int counts[TOPOLOGY_MAX_SERVERS])
{
    struct select_request req = {.write = r->write, .exclude_idx = r->exclude_idx, .rp = &r->rp};
    uint32_t state = 0x2545f491u;
    int none = 0;
    memset(counts, 0, sizeof(int) * TOPOLOGY_MAX_SERVERS);
    for (int i = 0; i < draws; i++) {
        int idx = topology_select(r->t, &req, next_random, &state);
        if (idx == -EAGAIN) {
            none++;
        } else if (idx < 0 || idx >= r->t->n) {
            case_fail(r, "topology_select returned %d", idx);
            return none;
        } else {
            counts[idx]++;
        }
    }
    return none;
}

/* Formats the addresses of servers chosen at least once, for messages. */
static void chosen_list(const struct topology *t, const int *counts, char *out, size_t len)
{
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < t->n && used < len; i++)
        if (counts[i] > 0)
            used += (size_t)snprintf(out + used, len - used, " %s", t->servers[i].addr);
    if (out[0] == 0)
        snprintf(out, len, " (none)");
}

/* Checks that the read preference is valid, as a selection from the router would need. */
static bool check_valid(struct runner *r)
{
    char err[256];
    if (r->t->mode != TOPOLOGY_REPLICASET || r->write)
        return true;
    int code = read_pref_validate(&r->rp, r->t->heartbeat_ms, err, sizeof(err));
    if (code != 0) {
        case_fail(r, "read_pref_validate refused the read preference (%d: %s)", code, err);
        return false;
    }
    return true;
}

/* "expect suitable|window ADDR...": the set of servers selection returns over many draws, with an
 * unlimited latency window for "suitable" and the configured one for "window". */
static void sel_expect_set(struct runner *r, char **w, int n, bool unlimited)
{
    if (!check_valid(r))
        return;
    int saved = r->t->local_threshold_ms;
    if (unlimited)
        r->t->local_threshold_ms = 1000000000;
    int counts[TOPOLOGY_MAX_SERVERS];
    int none = draw(r, 400, counts);
    r->t->local_threshold_ms = saved;
    bool want[TOPOLOGY_MAX_SERVERS] = {false};
    for (int i = 2; i < n; i++) {
        int idx = need_server(r, w[i]);
        if (idx < 0)
            return;
        want[idx] = true;
    }
    char got[512];
    chosen_list(r->t, counts, got, sizeof(got));
    if (n == 2) {
        if (none != 400)
            case_fail(r, "expected no %s server, selection returned%s", w[1], got);
        return;
    }
    if (none > 0) {
        case_fail(r, "selection failed %d times of 400 where %s servers exist", none, w[1]);
        return;
    }
    for (int i = 0; i < r->t->n; i++) {
        if (want[i] != (counts[i] > 0)) {
            case_fail(r, "%s servers: %s was %s; selection returned%s", w[1], r->t->servers[i].addr,
                      want[i] ? "never chosen" : "chosen", got);
        }
    }
}

/* "expect freq draws=N tol=T ADDR=P...": how often each server is chosen. */
static void sel_expect_freq(struct runner *r, char **w, int n)
{
    int draws = 0;
    double tol = -1;
    for (int i = 2; i < n; i++) {
        if (strncmp(w[i], "draws=", 6) == 0)
            draws = atoi(w[i] + 6);
        else if (strncmp(w[i], "tol=", 4) == 0)
            tol = strtod(w[i] + 4, NULL);
    }
    if (draws <= 0 || tol < 0) {
        case_fail(r, "freq needs draws= and tol=");
        return;
    }
    int counts[TOPOLOGY_MAX_SERVERS];
    int none = draw(r, draws, counts);
    if (none > 0)
        case_fail(r, "selection failed %d times of %d", none, draws);
    for (int i = 2; i < n; i++) {
        char *eq = strchr(w[i], '=');
        if (strncmp(w[i], "draws=", 6) == 0 || strncmp(w[i], "tol=", 4) == 0 || !eq)
            continue;
        *eq = 0;
        int idx = need_server(r, w[i]);
        if (idx < 0)
            continue;
        double want = strtod(eq + 1, NULL), got = (double)counts[idx] / draws;
        if (fabs(got - want) > tol + 1e-9)
            case_fail(r, "%s chosen %.4f of the time, expected %.4f +/- %.4f", w[i], got, want,
                      tol);
    }
}

/* Runs one line of selection_cases.txt. */
static void selection_line(struct runner *r, char **w, int n)
{
    if (strcmp(w[0], "mode") == 0 && n == 2) {
        if (r->t->n > 0)
            case_fail(r, "mode must come before the servers");
        r->t->mode = strcmp(w[1], "mongos") == 0 ? TOPOLOGY_MONGOS : TOPOLOGY_REPLICASET;
    } else if (strcmp(w[0], "heartbeat") == 0 && n == 2) {
        r->t->heartbeat_ms = atoi(w[1]);
    } else if (strcmp(w[0], "threshold") == 0 && n == 2) {
        r->t->local_threshold_ms = atoi(w[1]);
    } else if (strcmp(w[0], "server") == 0) {
        sel_server(r, w, n);
    } else if (strcmp(w[0], "read") == 0 || strcmp(w[0], "write") == 0) {
        sel_operation(r, w, n);
    } else if (strcmp(w[0], "expect") == 0 && n >= 2) {
        if (!r->have_op && strcmp(w[1], "staleness") != 0) {
            case_fail(r, "expect before any read or write line");
        } else if (strcmp(w[1], "error") == 0 && n == 3) {
            char err[256] = "";
            int code = read_pref_validate(&r->rp, r->t->heartbeat_ms, err, sizeof(err));
            if (code != atoi(w[2]))
                case_fail(r, "read_pref_validate returned %d (%s), expected %s", code, err, w[2]);
        } else if (strcmp(w[1], "suitable") == 0 || strcmp(w[1], "window") == 0) {
            sel_expect_set(r, w, n, strcmp(w[1], "suitable") == 0);
        } else if (strcmp(w[1], "staleness") == 0 && n == 4) {
            int idx = need_server(r, w[2]);
            double got = idx >= 0 ? topology_staleness_ms(r->t, idx) : 0;
            if (idx >= 0 && fabs(got - strtod(w[3], NULL)) > 1e-6)
                case_fail(r, "staleness of %s is %.1f ms, expected %s", w[2], got, w[3]);
        } else if (strcmp(w[1], "freq") == 0) {
            sel_expect_freq(r, w, n);
        } else {
            case_fail(r, "unknown expectation %s", w[1]);
        }
    } else {
        case_fail(r, "unknown line starting with %s", w[0]);
    }
}

/* --- SDAM cases ------------------------------------------------------------------------- */

/* "hello ADDR [rtt=MS] JSON": raw is the whole line, so the JSON keeps its blanks. */
static void sdam_hello(struct runner *r, const char *raw, char **w, int n)
{
    const char *json = strchr(raw, '{');
    if (n < 3 || !json) {
        case_fail(r, "hello needs an address and a JSON document");
        return;
    }
    double rtt = 10;
    if (strncmp(w[2], "rtt=", 4) == 0)
        rtt = strtod(w[2] + 4, NULL);
    int idx = need_server(r, w[1]);
    if (idx < 0)
        return;
    bson_error_t err;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &err);
    if (!b) {
        case_fail(r, "bad JSON: %s", err.message);
        return;
    }
    r->last_bits = topology_on_hello(r->t, idx, b, rtt, 1000);
    bson_destroy(b);
}

/* "expect servers ADDR=TYPE...": exactly these members (servers not removed), of these types. */
static void sdam_expect_servers(struct runner *r, char **w, int n)
{
    bool listed[TOPOLOGY_MAX_SERVERS] = {false};
    for (int i = 2; i < n; i++) {
        char *eq = strchr(w[i], '=');
        if (!eq) {
            case_fail(r, "servers wants ADDR=TYPE, not %s", w[i]);
            continue;
        }
        *eq = 0;
        int idx = find_server(r->t, w[i]);
        if (idx < 0 || r->t->servers[idx].removed) {
            case_fail(r, "%s is not a member", w[i]);
            continue;
        }
        listed[idx] = true;
        const char *type = server_type_name(r->t->servers[idx].type);
        if (strcmp(type, eq + 1) != 0)
            case_fail(r, "%s is %s, expected %s", w[i], type, eq + 1);
    }
    for (int i = 0; i < r->t->n; i++)
        if (!listed[i] && !r->t->servers[i].removed)
            case_fail(r, "%s (%s) is a member, but not expected", r->t->servers[i].addr,
                      server_type_name(r->t->servers[i].type));
}

/* "expect last_error ADDR TEXT|none": the words of TEXT, one blank apart, are the error. */
static void sdam_expect_last_error(struct runner *r, char **w, int n)
{
    int idx = need_server(r, w[2]);
    if (idx < 0)
        return;
    char want[512] = "";
    size_t used = 0;
    for (int i = 3; i < n && used < sizeof(want); i++)
        used += (size_t)snprintf(want + used, sizeof(want) - used, "%s%s", i > 3 ? " " : "", w[i]);
    if (strcmp(want, "none") == 0)
        want[0] = 0;
    const char *got = r->t->servers[idx].last_error;
    if (strcmp(got, want) != 0)
        case_fail(r, "last error of %s is \"%s\", expected \"%s\"", w[2], got, want);
}

/* Runs one "expect" line of sdam_cases.txt. */
static void sdam_expect(struct runner *r, char **w, int n)
{
    const struct topology *t = r->t;
    if (strcmp(w[1], "servers") == 0) {
        sdam_expect_servers(r, w, n);
    } else if (strcmp(w[1], "removed") == 0) {
        for (int i = 2; i < n; i++) {
            int idx = need_server(r, w[i]);
            if (idx >= 0 && !t->servers[idx].removed)
                case_fail(r, "%s is still a member (%s)", w[i],
                          server_type_name(t->servers[idx].type));
        }
    } else if (strcmp(w[1], "primary") == 0 && n == 3) {
        int p = topology_primary(t);
        const char *got = p >= 0 ? t->servers[p].addr : "none";
        if (strcmp(got, w[2]) != 0)
            case_fail(r, "primary is %s, expected %s", got, w[2]);
    } else if (strcmp(w[1], "refused") == 0 && n == 3) {
        bool got = (r->last_bits & TOPO_REFUSED) != 0;
        if (got != (strcmp(w[2], "yes") == 0))
            case_fail(r, "the last reply was %s", got ? "refused" : "accepted");
    } else if (strcmp(w[1], "max_election_id") == 0 && n == 3) {
        char got[25] = "none";
        if (t->has_max_election_id)
            for (int i = 0; i < 12; i++)
                snprintf(got + 2 * i, 3, "%02x", t->max_election_id[i]);
        if (strcmp(got, w[2]) != 0)
            case_fail(r, "maxElectionId is %s, expected %s", got, w[2]);
    } else if (strcmp(w[1], "max_set_version") == 0 && n == 3) {
        char got[24] = "none";
        if (t->has_max_set_version)
            snprintf(got, sizeof(got), "%lld", (long long)t->max_set_version);
        if (strcmp(got, w[2]) != 0)
            case_fail(r, "maxSetVersion is %s, expected %s", got, w[2]);
    } else if (strcmp(w[1], "set_version") == 0 && n == 4) {
        int idx = need_server(r, w[2]);
        if (idx >= 0 && (!t->servers[idx].has_set_version ||
                         t->servers[idx].set_version != strtoll(w[3], NULL, 10)))
            case_fail(r, "setVersion of %s is not %s", w[2], w[3]);
    } else if (strcmp(w[1], "rtt") == 0 && n == 4) {
        int idx = need_server(r, w[2]);
        if (idx >= 0 && (!t->servers[idx].rtt_known ||
                         fabs(t->servers[idx].rtt_ms - strtod(w[3], NULL)) > 1e-9))
            case_fail(r, "average RTT of %s is %g, expected %s", w[2], t->servers[idx].rtt_ms,
                      w[3]);
    } else if (strcmp(w[1], "last_error") == 0 && n >= 4) {
        sdam_expect_last_error(r, w, n);
    } else if (strcmp(w[1], "session_timeout") == 0 && n == 3) {
        struct topology_limits lim;
        char got[24] = "none";
        if (topology_limits(t, &lim) && lim.session_timeout_min >= 0)
            snprintf(got, sizeof(got), "%d", lim.session_timeout_min);
        if (strcmp(got, w[2]) != 0)
            case_fail(r, "logicalSessionTimeoutMinutes is %s, expected %s", got, w[2]);
    } else {
        case_fail(r, "unknown expectation %s", w[1]);
    }
}

/* Runs one line of sdam_cases.txt. */
static void sdam_line(struct runner *r, const char *raw, char **w, int n)
{
    if (strcmp(w[0], "mode") == 0 && n == 2 && strcmp(w[1], "mongos") == 0) {
        if (r->t->n > 0)
            case_fail(r, "mode must come before the seeds");
        r->t->mode = TOPOLOGY_MONGOS;
        r->t->set_name[0] = 0;
    } else if (strcmp(w[0], "seeds") == 0) {
        for (int i = 1; i < n; i++)
            add_server(r, w[i]);
    } else if (strcmp(w[0], "hello") == 0) {
        sdam_hello(r, raw, w, n);
    } else if (strcmp(w[0], "fail") == 0 && n == 2) {
        int idx = need_server(r, w[1]);
        if (idx >= 0)
            topology_on_failure(r->t, idx, "connection refused", 1000);
        r->last_bits = 0;
    } else if (strcmp(w[0], "expect") == 0 && n >= 2) {
        sdam_expect(r, w, n);
    } else {
        case_fail(r, "unknown line starting with %s", w[0]);
    }
}

/* --- the data files --------------------------------------------------------------------- */

/* Runs every case of a data file; sdam selects which kind of lines it holds. */
static void run_file(struct runner *r, const char *rel, bool sdam)
{
    static char path[1024];
    const char *dir = getenv("MONGOLB_SRCDIR");
    snprintf(path, sizeof(path), "%s%s%s", dir ? dir : "", dir ? "/" : "", rel);
    memset(r, 0, sizeof(*r));
    r->file = path;
    r->rel = rel;
    r->t = malloc(sizeof(*r->t));
    ck_assert_ptr_nonnull(r->t);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s: %s (set MONGOLB_SRCDIR to the repository root)", path,
                  strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        r->line++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        char *raw = strdup(line);
        char *w[MAX_WORDS];
        int n = split_words(line, w, MAX_WORDS);
        if (n == 0 || w[0][0] == '#') {
            /* A blank line or a comment. */
        } else if (strcmp(w[0], "case") == 0 && n == 2) {
            if (r->name[0])
                case_fail(r, "case %s starts before the end of this one", w[1]);
            begin_case(r, w[1]);
        } else if (!r->name[0]) {
            case_fail(r, "line outside a case: %s", w[0]);
        } else if (strcmp(w[0], "end") == 0) {
            end_case(r);
        } else if (strcmp(w[0], "skip") == 0) {
            /* The reason is the rest of the line, as written. */
            const char *reason = raw + strspn(raw, " \t") + 4;
            reason += strspn(reason, " \t");
            if (!reason[0])
                case_fail(r, "skip needs a reason");
            snprintf(r->skip_reason, sizeof(r->skip_reason), "%s", reason);
            r->skip = true;
        } else if (!r->skip) {
            if (sdam)
                sdam_line(r, raw, w, n);
            else
                selection_line(r, w, n);
        }
        free(raw);
    }
    free(line);
    fclose(f);
    if (r->name[0]) {
        case_fail(r, "the file ends inside a case");
        end_case(r);
    }
    free(r->t);
    r->t = NULL;
    printf("%s: %d cases, %d skipped, %d failed\n", rel, r->cases, r->skipped, r->failed);
    fflush(stdout);
    ck_assert_msg(r->cases > 0, "%s has no cases", path);
    ck_assert_msg(r->stray_failures == 0, "%s has %d malformed lines outside cases", rel,
                  r->stray_failures);
    ck_assert_msg(r->failed == 0, "%d of %d cases in %s failed: %s", r->failed,
                  r->cases - r->skipped, rel, r->failed_names);
}

START_TEST(selection_cases)
{
    struct runner r;
    run_file(&r, "tests/unit/data/selection_cases.txt", false);
}
END_TEST

START_TEST(sdam_cases)
{
    struct runner r;
    run_file(&r, "tests/unit/data/sdam_cases.txt", true);
}
END_TEST

static Suite *spec_cases_suite(void)
{
    Suite *s = suite_create("spec_cases");
    TCase *tc = tcase_create("spec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, selection_cases);
    tcase_add_test(tc, sdam_cases);
    suite_add_tcase(s, tc);
    return s;
}

CHECK_MAIN(spec_cases_suite)
