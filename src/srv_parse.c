/*
 * srv_parse.c: TXT options, the parent-domain rule, SRV TTLs and srvMaxHosts (see srv_parse.h).
 */
#include "srv_parse.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes v[0..n) into out (cap bytes with the NUL). Returns 0 or -EINVAL. */
static int decode(const char *v, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -EINVAL;
            int hi = hexval(v[i + 1]), lo = hexval(v[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x21 || c > 0x7e || o + 1 >= cap)
            return -EINVAL;
        out[o++] = (char)c;
    }
    if (o == 0)
        return -EINVAL;
    out[o] = '\0';
    return 0;
}

int srv_txt_parse(const char *txt, size_t len, struct srv_txt_opts *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    out->load_balanced = -1;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && txt[end] != '&')
            end++;
        const char *item = txt + pos;
        size_t n = end - pos;
        pos = end + 1;
        if (n == 0)
            continue;
        const char *eq = memchr(item, '=', n);
        size_t kn = eq ? (size_t)(eq - item) : n;
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)item[i] < 0x21 || (unsigned char)item[i] > 0x7e) {
                snprintf(err, err_len, "the TXT record holds a byte that is not printable ASCII");
                return -EINVAL;
            }
        }
        if (!eq || kn == 0) {
            snprintf(err, err_len, "the TXT record's option '%.*s' is not key=value",
                     (int)(n > 64 ? 64 : n), item);
            return -EINVAL;
        }
        const char *v = eq + 1;
        size_t vn = n - kn - 1;
        char *dst = NULL;
        size_t cap = 0;
        char lb[8];
        if (kn == 10 && strncasecmp(item, "replicaSet", kn) == 0) {
            dst = out->replica_set;
            cap = sizeof(out->replica_set);
        } else if (kn == 10 && strncasecmp(item, "authSource", kn) == 0) {
            dst = out->auth_source;
            cap = sizeof(out->auth_source);
        } else if (kn == 12 && strncasecmp(item, "loadBalanced", kn) == 0) {
            dst = lb;
            cap = sizeof(lb);
        } else {
            snprintf(err, err_len,
                     "the TXT record sets '%.*s', but only authSource, replicaSet and loadBalanced "
                     "may be set there",
                     (int)(kn > 64 ? 64 : kn), item);
            return -EINVAL;
        }
        if (decode(v, vn, dst, cap) < 0) {
            snprintf(err, err_len,
                     "the TXT record's %.*s has an empty, malformed or too long value", (int)kn,
                     item);
            return -EINVAL;
        }
        if (dst == lb) {
            if (strcasecmp(lb, "true") == 0) {
                out->load_balanced = 1;
            } else if (strcasecmp(lb, "false") == 0) {
                out->load_balanced = 0;
            } else {
                snprintf(err, err_len, "the TXT record's loadBalanced is '%s', not true or false",
                         lb);
                return -EINVAL;
            }
        }
    }
    return 0;
}

bool srv_host_allowed(const char *srv_name, const char *host)
{
    size_t labels = 1;
    for (const char *c = srv_name; *c; c++)
        labels += *c == '.';
    const char *domain = srv_name;
    if (labels >= 3)
        domain = strchr(srv_name, '.') + 1;
    size_t dn = strlen(domain), hn = strlen(host);
    /* At least one label of the host's own before ".domain". */
    if (dn == 0 || hn < dn + 2 || host[hn - dn - 1] != '.' || host[0] == '.')
        return false;
    return strcasecmp(host + hn - dn, domain) == 0;
}

/* Skips a (possibly compressed) name at *pos. Returns 0 or -EINVAL. */
static int skip_name(const uint8_t *msg, size_t len, size_t *pos)
{
    size_t p = *pos;
    /* A name has at most 127 labels; a longer run is malformed. */
    for (int labels = 0; labels < 128; labels++) {
        if (p >= len)
            return -EINVAL;
        uint8_t b = msg[p];
        if (b == 0) {
            *pos = p + 1;
            return 0;
        }
        if ((b & 0xC0) == 0xC0) {
            if (p + 2 > len)
                return -EINVAL;
            *pos = p + 2;
            return 0;
        }
        if (b & 0xC0)
            return -EINVAL;
        p += 1 + (size_t)b;
    }
    return -EINVAL;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

int srv_min_ttl(const uint8_t *msg, size_t len, uint16_t type, uint32_t *ttl)
{
    if (len < 12)
        return -EINVAL;
    unsigned qd = get16(msg + 4), an = get16(msg + 6);
    size_t pos = 12;
    for (unsigned i = 0; i < qd; i++) {
        if (skip_name(msg, len, &pos) < 0 || pos + 4 > len)
            return -EINVAL;
        pos += 4;
    }
    bool found = false;
    uint32_t min = 0;
    for (unsigned i = 0; i < an; i++) {
        if (skip_name(msg, len, &pos) < 0 || pos + 10 > len)
            return -EINVAL;
        uint16_t t = get16(msg + pos);
        uint32_t v = ((uint32_t)msg[pos + 4] << 24) | ((uint32_t)msg[pos + 5] << 16) |
                     ((uint32_t)msg[pos + 6] << 8) | msg[pos + 7];
        size_t rdlen = get16(msg + pos + 8);
        pos += 10;
        if (pos + rdlen > len)
            return -EINVAL;
        pos += rdlen;
        /* RFC 2181: a TTL with the top bit set is read as 0. */
        if (v & 0x80000000u)
            v = 0;
        if (t == type && (!found || v < min)) {
            min = v;
            found = true;
        }
    }
    if (!found)
        return -ENOENT;
    *ttl = min;
    return 0;
}

static bool contains(const struct mlb_seed_list *l, const struct mlb_hostport *h)
{
    for (size_t i = 0; i < l->count; i++)
        if (l->host[i].port == h->port && strcasecmp(l->host[i].host, h->host) == 0)
            return true;
    return false;
}

void srv_choose(const struct mlb_seed_list *found, const struct mlb_seed_list *current, int max,
                uint32_t (*rnd)(void *), void *rnd_ctx, struct mlb_seed_list *out)
{
    out->count = 0;
    out->srv[0] = '\0';
    if (max <= 0 || (size_t)max >= found->count) {
        for (size_t i = 0; i < found->count; i++)
            out->host[out->count++] = found->host[i];
        return;
    }
    /* The hosts in use that are still listed stay, as the polling specification asks. */
    size_t cand[MLB_MAX_SEEDS], nc = 0;
    for (size_t i = 0; i < found->count; i++) {
        if (contains(current, &found->host[i])) {
            if (out->count < (size_t)max)
                out->host[out->count++] = found->host[i];
        } else {
            cand[nc++] = i;
        }
    }
    /* Fisher-Yates over the others, taking as many as are missing. */
    for (size_t i = 0; i < nc && out->count < (size_t)max; i++) {
        size_t j = i + rnd(rnd_ctx) % (nc - i);
        size_t t = cand[i];
        cand[i] = cand[j];
        cand[j] = t;
        out->host[out->count++] = found->host[cand[i]];
    }
}
