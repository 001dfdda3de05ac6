/*
 * sim_cursor.c: each simulated server's own cursor table.
 *
 * A cursor holds every document its command produced (the store computes results eagerly), and
 * hands them out batch by batch. Ids are random, positive and non-zero, drawn from the process's
 * PRNG, so a cursor id of one server means nothing to another: a getMore sent to the wrong mongos
 * fails with CursorNotFound, as on a real cluster.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static size_t bucket_of(int64_t id)
{
    uint64_t u = (uint64_t)id;
    return (size_t)((u ^ (u >> 29) ^ (u >> 47)) % SIM_CURSOR_BUCKETS);
}

struct sim_cursor *sim_cursor_open(struct sim_server *srv, const char *ns,
                                   struct store_results *res)
{
    struct sim_cursor *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    int64_t id;
    do {
        /* MongoDB's ids are positive; keeping the sign bit clear avoids surprising any client. */
        id = (int64_t)(sim_random64(srv->sim) & INT64_MAX);
    } while (id == 0 || sim_cursor_find(srv, id));
    c->id = id;
    snprintf(c->ns, sizeof(c->ns), "%s", ns);
    c->res = *res;
    memset(res, 0, sizeof(*res));
    c->last_used_ms = sim_now_ms(srv->sim);
    size_t b = bucket_of(id);
    c->next = srv->cursors[b];
    srv->cursors[b] = c;
    srv->cursors_open++;
    return c;
}

struct sim_cursor *sim_cursor_find(struct sim_server *srv, int64_t id)
{
    for (struct sim_cursor *c = srv->cursors[bucket_of(id)]; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

void sim_cursor_close(struct sim_server *srv, struct sim_cursor *c)
{
    struct sim_cursor **pp = &srv->cursors[bucket_of(c->id)];
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    store_results_free(&c->res);
    free(c);
    srv->cursors_open--;
}

void sim_cursor_close_all(struct sim_server *srv)
{
    for (size_t b = 0; b < SIM_CURSOR_BUCKETS; b++) {
        while (srv->cursors[b])
            sim_cursor_close(srv, srv->cursors[b]);
    }
}

void sim_cursor_sweep(struct sim_server *srv, uint64_t now_ms, uint64_t timeout_ms)
{
    for (size_t b = 0; b < SIM_CURSOR_BUCKETS; b++) {
        struct sim_cursor *c = srv->cursors[b];
        while (c) {
            struct sim_cursor *next = c->next;
            if (now_ms - c->last_used_ms >= timeout_ms) {
                sim_cursor_close(srv, c);
                srv->cursors_timed_out++;
            }
            c = next;
        }
    }
}

size_t sim_batch_fill(const struct store_results *res, size_t *pos, bson_t *arr, int64_t max_docs)
{
    size_t n = 0, bytes = 0;
    char keybuf[16];
    while (*pos < res->n) {
        if (max_docs > 0 && (int64_t)n >= max_docs)
            break;
        const bson_t *d = res->docs[*pos];
        /* A batch always carries at least one document, however large, as MongoDB's does. */
        if (n > 0 && bytes + d->len > SIM_MAX_BATCH_BYTES)
            break;
        const char *key;
        bson_uint32_to_string((uint32_t)n, &key, keybuf, sizeof(keybuf));
        bson_append_document(arr, key, -1, d);
        bytes += d->len;
        n++;
        (*pos)++;
    }
    return n;
}

size_t sim_cursor_fill(struct sim_cursor *c, bson_t *arr, int64_t max_docs)
{
    return sim_batch_fill(&c->res, &c->pos, arr, max_docs);
}

bool sim_cursor_exhausted(const struct sim_cursor *c)
{
    return c->pos >= c->res.n;
}
