/*
 * metrics.c: latency histograms, error-code counts, the Prometheus text format, and the rate limit
 * of error log lines. See metrics.h.
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/*
 * 100 us to 10 s in 1-2.5-5 steps: a proxied request on one host takes a few hundred
 * microseconds, one across a region tens of milliseconds, and anything beyond ten seconds is an
 * outage (it lands in +Inf, and _sum still holds its time).
 */
const uint64_t metrics_bucket_ns[METRICS_BUCKETS] = {
    100000ull,     250000ull,     500000ull,     1000000ull,     2500000ull,   5000000ull,
    10000000ull,   25000000ull,   50000000ull,   100000000ull,   250000000ull, 500000000ull,
    1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull,
};

int metrics_bucket_of(uint64_t ns)
{
    /* A binary search over 16 boundaries: four comparisons. */
    int lo = 0, hi = METRICS_BUCKETS;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ns <= metrics_bucket_ns[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void metrics_hist_record(struct metrics_hist *h, uint64_t ns)
{
    h->bucket[metrics_bucket_of(ns)]++;
    h->sum_ns += ns;
    h->count++;
}

void metrics_codes_add(struct metrics_codes *t, int32_t code)
{
    for (int i = 0; i < t->n; i++) {
        if (t->code[i] == code) {
            t->count[i]++;
            return;
        }
    }
    if (t->n < METRICS_MAX_CODES - 1 || (t->n == METRICS_MAX_CODES - 1 && code == 0)) {
        t->code[t->n] = code;
        t->count[t->n++] = 1;
        return;
    }
    /* Full: the last slot is kept for code 0, "other", so that nothing goes uncounted. */
    metrics_codes_add(t, 0);
}

uint64_t metrics_codes_get(const struct metrics_codes *t, int32_t code)
{
    for (int i = 0; i < t->n; i++)
        if (t->code[i] == code)
            return t->count[i];
    return 0;
}

/* Appends printf-formatted text to b. */
static int appendf(struct wire_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int appendf(struct wire_buf *b, const char *fmt, ...)
{
    va_list ap;
    for (int pass = 0; pass < 2; pass++) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(room ? (char *)b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (wire_buf_reserve(b, (size_t)n + 1 < 4096 ? 4096 : (size_t)n + 1) < 0)
            return -ENOMEM;
    }
    return -ENOMEM;
}

int metrics_write_header(struct wire_buf *b, const char *name, const char *type, const char *help)
{
    return appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *brace(const char *labels, int which)
{
    if (!labels || !*labels)
        return "";
    return which == 0 ? "{" : "}";
}

int metrics_write_value(struct wire_buf *b, const char *name, const char *labels, double value)
{
    return appendf(b, "%s%s%s%s %.9g\n", name, brace(labels, 0), labels ? labels : "",
                   brace(labels, 1), value);
}

int metrics_write_uint(struct wire_buf *b, const char *name, const char *labels, uint64_t value)
{
    return appendf(b, "%s%s%s%s %" PRIu64 "\n", name, brace(labels, 0), labels ? labels : "",
                   brace(labels, 1), value);
}

int metrics_write_hist(struct wire_buf *b, const char *name, const char *labels,
                       const struct metrics_hist *h)
{
    const char *sep = labels && *labels ? "," : "";
    const char *l = labels ? labels : "";
    uint64_t cum = 0;
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += h->bucket[i];
        int rc;
        if (i < METRICS_BUCKETS)
            rc = appendf(b, "%s_bucket{%s%sle=\"%.6g\"} %" PRIu64 "\n", name, l, sep,
                         (double)metrics_bucket_ns[i] / 1e9, cum);
        else
            rc = appendf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, l, sep, cum);
        if (rc < 0)
            return rc;
    }
    char sum_name[160], count_name[160];
    snprintf(sum_name, sizeof(sum_name), "%s_sum", name);
    snprintf(count_name, sizeof(count_name), "%s_count", name);
    if (metrics_write_value(b, sum_name, labels, (double)h->sum_ns / 1e9) < 0 ||
        metrics_write_uint(b, count_name, labels, h->count) < 0)
        return -ENOMEM;
    return 0;
}

void metrics_escape_label(const char *v, char *out, size_t out_len)
{
    size_t o = 0;
    if (out_len == 0)
        return;
    for (; *v; v++) {
        const char *rep = NULL;
        char one[2] = {*v, 0};
        if (*v == '\\')
            rep = "\\\\";
        else if (*v == '"')
            rep = "\\\"";
        else if (*v == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        if (o + n >= out_len)
            break;
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
}

bool metrics_rl_take(struct metrics_rl *rl, int32_t code, int64_t now_ms, int limit,
                     int64_t window_ms, uint64_t *suppressed_before)
{
    *suppressed_before = 0;
    if (limit <= 0)
        return true;
    struct metrics_rl_slot *s = NULL;
    for (int i = 0; i < rl->n; i++) {
        if (rl->slot[i].code == code) {
            s = &rl->slot[i];
            break;
        }
    }
    if (!s) {
        if (rl->n < METRICS_RL_SLOTS) {
            s = &rl->slot[rl->n++];
        } else {
            /* The slot whose window began longest ago; what it suppressed is reported now. */
            s = &rl->slot[0];
            for (int i = 1; i < rl->n; i++)
                if (rl->slot[i].window_start_ms < s->window_start_ms)
                    s = &rl->slot[i];
            *suppressed_before = s->suppressed;
        }
        s->code = code;
        s->window_start_ms = now_ms;
        s->lines = 0;
        s->suppressed = 0;
    } else if (now_ms - s->window_start_ms >= window_ms) {
        *suppressed_before = s->suppressed;
        s->window_start_ms = now_ms;
        s->lines = 0;
        s->suppressed = 0;
    }
    if (s->lines < (uint32_t)limit) {
        s->lines++;
        return true;
    }
    s->suppressed++;
    return false;
}

const char *metrics_class_name(enum metrics_class c)
{
    static const char *const names[] = {"read", "write", "getMore", "command"};
    return (unsigned)c < METRICS_CLASSES ? names[c] : "command";
}

void metrics_request_done(struct metrics_state *m, enum metrics_class cls, int server,
                          const char *addr, uint64_t ns)
{
    metrics_hist_record(&m->cls[(unsigned)cls < METRICS_CLASSES ? cls : METRICS_COMMAND], ns);
    if (server < 0 || server >= METRICS_MAX_SERVERS || !addr)
        return;
    struct metrics_server *s = &m->server[server];
    if (strcmp(s->addr, addr) != 0) {
        /* A slot released and given to another server: its figures start from zero. */
        memset(&s->hist, 0, sizeof(s->hist));
        snprintf(s->addr, sizeof(s->addr), "%s", addr);
    }
    metrics_hist_record(&s->hist, ns);
}
