/*
 * fault.c: test-only fault injection (see fault.h). Pure: it parses a string and counts calls.
 */
#include "fault.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fault_armed;

static const char *const names[FAULT_N_POINTS] = {
    [FAULT_CLIENT_ALLOC] = "client_alloc",       [FAULT_ACCEPT] = "accept",
    [FAULT_BACKEND_ALLOC] = "backend_alloc",     [FAULT_BACKEND_CONNECT] = "backend_connect",
    [FAULT_BACKEND_SOCKOPT] = "backend_sockopt", [FAULT_BACKEND_READ] = "backend_read",
    [FAULT_BACKEND_HELLO] = "backend_hello",     [FAULT_BACKEND_TLS] = "backend_tls",
    [FAULT_MONITOR_ALLOC] = "monitor_alloc",     [FAULT_MONITOR_CONNECT] = "monitor_connect",
    [FAULT_MONITOR_READ] = "monitor_read",       [FAULT_MONITOR_WRITE] = "monitor_write",
    [FAULT_MONITOR_TLS] = "monitor_tls",         [FAULT_TLS_CONTEXT] = "tls_context",
};

struct fault_state {
    uint64_t first; /* 0: not armed */
    uint64_t count; /* 0: every call from first on */
    uint64_t calls;
};

static struct fault_state state[FAULT_N_POINTS];

const char *fault_point_name(enum fault_point f)
{
    return (unsigned)f < FAULT_N_POINTS ? names[f] : "?";
}

/* Parses a decimal number of at most 9 digits from *s, moving *s past it. */
static int parse_number(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 10) {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || digits > 9)
        return -EINVAL;
    *s = p;
    *out = v;
    return 0;
}

int fault_init(const char *spec, char *err, size_t err_len)
{
    memset(state, 0, sizeof(state));
    fault_armed = false;
    if (err_len > 0)
        err[0] = '\0';
    if (!spec)
        return 0;
    struct fault_state parsed[FAULT_N_POINTS];
    memset(parsed, 0, sizeof(parsed));
    bool any = false;
    const char *s = spec;
    while (*s) {
        size_t n = strcspn(s, ":,");
        int f = -1;
        for (int i = 0; i < FAULT_N_POINTS; i++)
            if (strlen(names[i]) == n && strncmp(s, names[i], n) == 0)
                f = i;
        if (f < 0) {
            snprintf(err, err_len, "MONGOLB_FAULT: unknown point \"%.*s\"", (int)(n > 40 ? 40 : n),
                     s);
            return -EINVAL;
        }
        s += n;
        uint64_t first = 0, count = 1;
        if (*s != ':' || (s++, parse_number(&s, &first)) < 0 || first == 0) {
            snprintf(err, err_len, "MONGOLB_FAULT: %s needs :first, a call number from 1",
                     names[f]);
            return -EINVAL;
        }
        if (*s == ':' && (s++, parse_number(&s, &count)) < 0) {
            snprintf(err, err_len, "MONGOLB_FAULT: %s: the count is not a number", names[f]);
            return -EINVAL;
        }
        if (*s == ',')
            s++;
        else if (*s) {
            snprintf(err, err_len, "MONGOLB_FAULT: unexpected \"%c\" after %s", *s, names[f]);
            return -EINVAL;
        }
        parsed[f].first = first;
        parsed[f].count = count;
        any = true;
    }
    memcpy(state, parsed, sizeof(state));
    fault_armed = any;
    return 0;
}

bool fault_hit_slow(enum fault_point f)
{
    if ((unsigned)f >= FAULT_N_POINTS)
        return false;
    struct fault_state *st = &state[f];
    if (st->first == 0)
        return false;
    uint64_t n = ++st->calls;
    return n >= st->first && (st->count == 0 || n < st->first + st->count);
}
