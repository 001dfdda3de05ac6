/*
 * cursors.c: the cursor affinity table. See cursors.h.
 *
 * A chained hash table for lookups plus a doubly linked list in order of use, so that expiry and
 * eviction take the oldest entries first without a scan. Entries are recycled through a free list.
 */
#include "cursors.h"

#include <errno.h>
#include <stdlib.h>

/* A 64-bit mix (splitmix64's finaliser): cursor ids are random already, but clients and tests may
 * use small ones, and the low bits must spread. */
static size_t hash_id(int64_t id, size_t nbuckets)
{
    uint64_t x = (uint64_t)id;
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return (size_t)(x & (nbuckets - 1));
}

int cursors_init(struct cursor_table *t, size_t max, int64_t idle_ms)
{
    t->max = max ? max : 1;
    t->idle_ms = idle_ms;
    t->n = 0;
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    t->rbuckets = calloc(CURSORS_RBUCKETS, sizeof(*t->rbuckets));
    t->mru = t->lru = t->free_list = NULL;
    t->added = t->collisions = t->evicted = t->expired = 0;
    if (!t->buckets || !t->rbuckets) {
        free(t->buckets);
        free(t->rbuckets);
        t->buckets = t->rbuckets = NULL;
        return -ENOMEM;
    }
    return 0;
}

void cursors_free(struct cursor_table *t)
{
    for (struct cursor_entry *e = t->mru, *next; e; e = next) {
        next = e->lru_next;
        free(e);
    }
    for (struct cursor_entry *e = t->free_list, *next; e; e = next) {
        next = e->hnext;
        free(e);
    }
    free(t->buckets);
    free(t->rbuckets);
    t->buckets = t->rbuckets = NULL;
    t->mru = t->lru = t->free_list = NULL;
    t->n = 0;
}

static void lru_unlink(struct cursor_table *t, struct cursor_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        t->mru = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        t->lru = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct cursor_table *t, struct cursor_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = t->mru;
    if (t->mru)
        t->mru->lru_prev = e;
    t->mru = e;
    if (!t->lru)
        t->lru = e;
}

static struct cursor_entry *lookup(const struct cursor_table *t, int64_t id)
{
    for (struct cursor_entry *e = t->buckets[hash_id(id, t->nbuckets)]; e; e = e->hnext)
        if (e->id == id)
            return e;
    return NULL;
}

/* Unlinks e from its bucket and the use list and recycles it. */
static void drop(struct cursor_table *t, struct cursor_entry *e)
{
    struct cursor_entry **pp = &t->buckets[hash_id(e->id, t->nbuckets)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->id != e->real_id) {
        struct cursor_entry **rp = &t->rbuckets[hash_id(e->real_id, CURSORS_RBUCKETS)];
        while (*rp != e)
            rp = &(*rp)->rnext;
        *rp = e->rnext;
    }
    lru_unlink(t, e);
    e->hnext = t->free_list;
    t->free_list = e;
    t->n--;
}

/* Doubles the bucket array when the table gets dense; failure just leaves chains longer. */
static void maybe_grow(struct cursor_table *t)
{
    if (t->n < t->nbuckets)
        return;
    size_t nb = t->nbuckets * 2;
    struct cursor_entry **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct cursor_entry *e = t->buckets[i], *next; e; e = next) {
            next = e->hnext;
            size_t h = hash_id(e->id, nb);
            e->hnext = b[h];
            b[h] = e;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

/* Finds the entry a server holds for its real id, if any (only collided entries differ). */
static struct cursor_entry *find_real(const struct cursor_table *t, int server, int64_t real_id)
{
    struct cursor_entry *e = lookup(t, real_id);
    if (e && e->server == server && e->real_id == real_id)
        return e;
    /* A rewritten entry is found by its real id in the small side table, never by a scan. */
    for (e = t->rbuckets[hash_id(real_id, CURSORS_RBUCKETS)]; e; e = e->rnext)
        if (e->server == server && e->real_id == real_id)
            return e;
    return NULL;
}

int cursors_add(struct cursor_table *t, int server, int64_t real_id, int64_t now_ms,
                uint64_t (*rnd)(void *), void *rnd_ctx, int64_t *client_id)
{
    struct cursor_entry *e = find_real(t, server, real_id);
    if (e) {
        e->last_used_ms = now_ms;
        lru_unlink(t, e);
        lru_push_front(t, e);
        *client_id = e->id;
        return 0;
    }
    int collided = 0;
    int64_t id = real_id;
    if (lookup(t, id)) {
        collided = 1;
        do {
            id = (int64_t)rnd(rnd_ctx);
        } while (id == 0 || lookup(t, id));
    }
    if (t->n >= t->max && t->lru) {
        drop(t, t->lru);
        t->evicted++;
    }
    if (t->free_list) {
        e = t->free_list;
        t->free_list = e->hnext;
    } else {
        e = malloc(sizeof(*e));
        if (!e)
            return -ENOMEM;
    }
    e->id = id;
    e->real_id = real_id;
    e->server = (int16_t)server;
    e->last_used_ms = now_ms;
    e->conn = 0;
    e->owner = 0;
    size_t h = hash_id(id, t->nbuckets);
    e->hnext = t->buckets[h];
    t->buckets[h] = e;
    e->rnext = NULL;
    if (collided) {
        size_t r = hash_id(real_id, CURSORS_RBUCKETS);
        e->rnext = t->rbuckets[r];
        t->rbuckets[r] = e;
    }
    lru_push_front(t, e);
    t->n++;
    t->added++;
    t->collisions += (uint64_t)collided;
    maybe_grow(t);
    *client_id = id;
    return collided;
}

struct cursor_entry *cursors_find(struct cursor_table *t, int64_t client_id, int64_t now_ms)
{
    struct cursor_entry *e = lookup(t, client_id);
    if (!e)
        return NULL;
    e->last_used_ms = now_ms;
    lru_unlink(t, e);
    lru_push_front(t, e);
    return e;
}

int cursors_remove(struct cursor_table *t, int64_t client_id)
{
    struct cursor_entry *e = lookup(t, client_id);
    if (!e)
        return -ENOENT;
    drop(t, e);
    return 0;
}

size_t cursors_remove_server(struct cursor_table *t, int server)
{
    size_t n = 0;
    for (struct cursor_entry *e = t->mru, *next; e; e = next) {
        next = e->lru_next;
        if (e->server == server) {
            drop(t, e);
            n++;
        }
    }
    return n;
}

size_t cursors_expire(struct cursor_table *t, int64_t now_ms)
{
    size_t n = 0;
    while (t->lru && now_ms - t->lru->last_used_ms > t->idle_ms) {
        drop(t, t->lru);
        n++;
    }
    t->expired += n;
    return n;
}

void cursors_set_conn(struct cursor_table *t, int64_t client_id, uint32_t conn, uint32_t owner)
{
    struct cursor_entry *e = lookup(t, client_id);
    if (e) {
        e->conn = (uint16_t)conn;
        e->owner = owner;
    }
}
