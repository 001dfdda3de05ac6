/*
 * metrics.h: the pure parts of mongolb's Prometheus metrics and of its error-log rate limit.
 *
 *  - A latency histogram with fixed bucket boundaries (METRICS_BUCKETS, from 100 us to 10 s, the
 *    same for every histogram so that they can be summed). Recording a sample is a short search
 *    over the boundaries and three additions: no allocation, no formatting, no clock (the caller
 *    passes the duration in nanoseconds).
 *  - A table of counts per MongoDB error code, fixed in size (METRICS_MAX_CODES distinct codes;
 *    later codes are counted under code 0, "other").
 *  - The Prometheus text format 0.0.4: HELP and TYPE lines, label values escaped, a histogram's
 *    cumulative _bucket lines with le="..." then _sum and _count, into a growable buffer.
 *  - A rate limit per error code for log lines: at most `limit` lines per code per window, then
 *    one line saying how many were suppressed when the window ends.
 *
 * Pure: no I/O, no libuv; times are arguments.
 */
#ifndef MONGOLB_METRICS_H
#define MONGOLB_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* Finite bucket boundaries; a last bucket (+Inf) takes what is above the largest. */
#define METRICS_BUCKETS 16
extern const uint64_t metrics_bucket_ns[METRICS_BUCKETS];

struct metrics_hist {
    uint64_t bucket[METRICS_BUCKETS + 1]; /* counts per bucket, not cumulative; last is +Inf */
    uint64_t sum_ns;
    uint64_t count;
};

/* Adds one sample of ns nanoseconds. */
void metrics_hist_record(struct metrics_hist *h, uint64_t ns);
/* The index of the bucket ns falls in (METRICS_BUCKETS for +Inf). */
int metrics_bucket_of(uint64_t ns);

#define METRICS_MAX_CODES 48

struct metrics_codes {
    int32_t code[METRICS_MAX_CODES];
    uint64_t count[METRICS_MAX_CODES];
    int n;
};

/* Counts one error of code (code 0 collects the codes that find no room). */
void metrics_codes_add(struct metrics_codes *t, int32_t code);
/* The count for code, 0 when never seen. */
uint64_t metrics_codes_get(const struct metrics_codes *t, int32_t code);

/*
 * Text format writers. Each appends to b and returns 0 or -ENOMEM. `labels` is a preformatted
 * label list without braces ("server=\"a:1\",class=\"read\"") or NULL/"" for none.
 */
int metrics_write_header(struct wire_buf *b, const char *name, const char *type, const char *help);
int metrics_write_value(struct wire_buf *b, const char *name, const char *labels, double value);
int metrics_write_uint(struct wire_buf *b, const char *name, const char *labels, uint64_t value);
/* name_bucket{labels,le="..."}, name_sum{labels} (seconds) and name_count{labels}. */
int metrics_write_hist(struct wire_buf *b, const char *name, const char *labels,
                       const struct metrics_hist *h);
/* Writes the label value v to out (at most out_len bytes with the NUL) with \\, \" and \n escaped,
 * as the text format asks; cut, never overrun, if it does not fit. */
void metrics_escape_label(const char *v, char *out, size_t out_len);

/* The rate limit for error log lines: per code, `limit` lines per window of `window_ms`. */
#define METRICS_RL_SLOTS 32

struct metrics_rl_slot {
    int32_t code;
    int64_t window_start_ms;
    uint32_t lines;      /* lines logged in the current window */
    uint64_t suppressed; /* lines not logged in the current window */
};

struct metrics_rl {
    struct metrics_rl_slot slot[METRICS_RL_SLOTS];
    int n;
};

/*
 * Whether a line for code may be logged at now_ms. Returns true when it may. When a new window
 * begins for a code whose previous window suppressed lines, *suppressed_before receives that
 * number (else 0), so that the caller logs "suppressed K" first. limit 0 means no limit. Codes
 * beyond METRICS_RL_SLOTS share the least recently used slot.
 */
bool metrics_rl_take(struct metrics_rl *rl, int32_t code, int64_t now_ms, int limit,
                     int64_t window_ms, uint64_t *suppressed_before);

/* Command classes of the per-class latency histograms. */
enum metrics_class {
    METRICS_READ = 0, /* find, aggregate (without $out/$merge), count, distinct, list* */
    METRICS_WRITE,    /* insert, update, delete, findAndModify, aggregate with $out/$merge... */
    METRICS_GETMORE,  /* getMore and OP_GET_MORE */
    METRICS_COMMAND,  /* everything else, the commands mongolb answers itself included */
    METRICS_CLASSES,
};

const char *metrics_class_name(enum metrics_class c);

#define METRICS_MAX_SERVERS 64

/* One server slot's histogram, and the address it belongs to (a reused slot starts afresh). */
struct metrics_server {
    char addr[300];
    struct metrics_hist hist;
};

/* What the request path and the coordinator count for /metrics, besides struct proxy_stats. */
struct metrics_state {
    struct metrics_hist cls[METRICS_CLASSES];
    struct metrics_server server[METRICS_MAX_SERVERS];
    struct metrics_codes errors;         /* error documents mongolb made, by code */
    struct metrics_codes relayed_errors; /* error replies relayed from servers, by code */
    uint64_t failovers;                  /* the primary changed to another member */
    uint64_t servers_lost;               /* a usable server became unusable */
    uint64_t slow_requests;              /* requests at or above slow_request_ms */
    uint64_t log_suppressed;             /* error lines left out by the rate limit */
    struct metrics_rl rl;
    int last_primary;     /* for failovers: -1 when none */
    uint64_t usable_mask; /* servers usable at the last topology change */
};

/* Records a finished request of class cls that took ns; server is the slot it last went to (or -1
 * for one answered locally) and addr that slot's address. */
void metrics_request_done(struct metrics_state *m, enum metrics_class cls, int server,
                          const char *addr, uint64_t ns);

#endif
