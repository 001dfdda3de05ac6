/*
 * txnpin.c: transactions pinned to one server.
 *
 * Every command of a sharded transaction must reach the mongos that started it, from whichever
 * client connection it comes. The pin is per session (lsid) and transaction number: it is set
 * when a command with startTransaction:true is routed, followed by every later command of that
 * transaction (getMores included, which go to their cursor's owner anyway), and ends with the next
 * transaction number or a command of that session outside a transaction. Pins also expire with
 * the session timeout the backends report, since a driver that vanished never ends them.
 *
 * With authentication on, a pin belongs to the user whose command set it (request_info.owner), as
 * mongod keys sessions by lsid and user: another user's command with the same lsid neither follows
 * nor ends it.
 */
#include "proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PIN_BUCKETS         4096
#define PIN_DEFAULT_TTL_MIN 30

struct pin {
    uint8_t lsid[16];
    int64_t txn_number;
    int server;
    uint32_t owner; /* the user that started the transaction (0: no login) */
    int64_t last_used_ms;
    struct pin *next;
};

struct txn_pins {
    struct pin *buckets[PIN_BUCKETS];
    size_t n;
};

static size_t bucket_of(const uint8_t *lsid)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ lsid[i]) * 16777619u;
    return h % PIN_BUCKETS;
}

int txn_pins_init(struct proxy *p)
{
    p->pins = calloc(1, sizeof(*p->pins));
    return p->pins ? 0 : -ENOMEM;
}

void txn_pins_free(struct proxy *p)
{
    if (!p->pins)
        return;
    for (size_t i = 0; i < PIN_BUCKETS; i++) {
        for (struct pin *e = p->pins->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(p->pins);
    p->pins = NULL;
}

static struct pin **find(struct txn_pins *t, const uint8_t *lsid, uint32_t owner)
{
    struct pin **pp = &t->buckets[bucket_of(lsid)];
    while (*pp && (memcmp((*pp)->lsid, lsid, 16) != 0 || (*pp)->owner != owner))
        pp = &(*pp)->next;
    return pp;
}

static void unpin(struct txn_pins *t, struct pin **pp)
{
    struct pin *e = *pp;
    *pp = e->next;
    free(e);
    t->n--;
}

int txn_pin_lookup(struct proxy *p, const struct request_info *ri)
{
    if (!ri->has_lsid || !ri->has_txn_number || !ri->autocommit_false || ri->start_transaction)
        return -1;
    struct pin **pp = find(p->pins, ri->lsid, ri->owner);
    if (!*pp || (*pp)->txn_number != ri->txn_number)
        return -1;
    (*pp)->last_used_ms = proxy_now(p);
    return (*pp)->server;
}

void txn_pin_set(struct proxy *p, const struct request_info *ri, int idx)
{
    if (!ri->has_lsid || !ri->has_txn_number)
        return;
    struct pin **pp = find(p->pins, ri->lsid, ri->owner);
    struct pin *e = *pp;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return;
        memcpy(e->lsid, ri->lsid, 16);
        e->owner = ri->owner;
        *pp = e;
        p->pins->n++;
    }
    e->txn_number = ri->txn_number;
    e->server = idx;
    e->last_used_ms = proxy_now(p);
}

void txn_pin_observe(struct proxy *p, const struct request_info *ri)
{
    if (!ri->has_lsid)
        return;
    struct pin **pp = find(p->pins, ri->lsid, ri->owner);
    if (!*pp)
        return;
    /* A command outside a transaction, or of a newer transaction, ends the old pin. */
    bool in_txn = ri->has_txn_number && ri->autocommit_false;
    if (!in_txn || ri->txn_number != (*pp)->txn_number)
        unpin(p->pins, pp);
}

/* A session lives as long as the backends' logicalSessionTimeoutMinutes (30 by default), and so
 * may its transaction's pin. */
static int64_t pin_ttl_ms(struct proxy *p)
{
    struct topology_limits lim;
    int minutes = PIN_DEFAULT_TTL_MIN;
    if (topology_limits(&p->topo, &lim) && lim.session_timeout_min > 0)
        minutes = lim.session_timeout_min;
    return (int64_t)minutes * 60 * 1000;
}

void txn_pins_expire(struct proxy *p)
{
    int64_t now = proxy_now(p);
    int64_t ttl = pin_ttl_ms(p);
    for (size_t i = 0; i < PIN_BUCKETS; i++) {
        struct pin **pp = &p->pins->buckets[i];
        while (*pp) {
            if (now - (*pp)->last_used_ms > ttl)
                unpin(p->pins, pp);
            else
                pp = &(*pp)->next;
        }
    }
}

size_t txn_pins_remove_server(struct proxy *p, int idx)
{
    size_t n = 0;
    for (size_t i = 0; p->pins && i < PIN_BUCKETS; i++) {
        struct pin **pp = &p->pins->buckets[i];
        while (*pp) {
            if ((*pp)->server == idx) {
                unpin(p->pins, pp);
                n++;
            } else {
                pp = &(*pp)->next;
            }
        }
    }
    return n;
}

size_t txn_pins_count(struct proxy *p)
{
    return p->pins ? p->pins->n : 0;
}
