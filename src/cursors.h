/*
 * cursors.h: the cursor affinity table.
 *
 * One table for the whole process maps a cursor id, as the client sees it, to the server that
 * opened the cursor, so that getMore and killCursors reach that server from any client connection.
 * Cursor ids are only unique per server, so two servers may hand out the same id. When that
 * happens the second cursor gets a fresh id that the client sees instead (the proxy rewrites the
 * 8 bytes of the id in replies and requests), and the table remembers the server's real id: no
 * getMore is ever sent to the wrong server. Such collisions are counted.
 *
 * Entries leave the table when a reply says the cursor is exhausted (id 0), when killCursors or
 * CursorNotFound says it is gone, when it has been idle longer than the idle timeout, when its
 * server goes away, or, least recently used first, when the table is full.
 *
 * Pure logic: times are passed in, nothing here does I/O.
 */
#ifndef MONGOLB_CURSORS_H
#define MONGOLB_CURSORS_H

#include <stddef.h>
#include <stdint.h>

struct cursor_entry {
    int64_t id;      /* the id the client sees */
    int64_t real_id; /* the id the server gave; equal to id unless it collided */
    int16_t server;  /* index of the owning server in the topology */
    uint16_t conn;   /* low 16 bits of the opening client connection's id (misroute counter) */
    uint32_t owner;  /* the user that opened it (auth.h's owner id; 0: no login) */
    int64_t last_used_ms;
    struct cursor_entry *hnext;
    struct cursor_entry *lru_prev; /* towards the most recently used */
    struct cursor_entry *lru_next; /* towards the least recently used */
    struct cursor_entry *rnext;    /* chain by real id, for entries whose id was rewritten */
};

/* Buckets of the small table of rewritten entries: collisions are rare, so a few suffice. */
#define CURSORS_RBUCKETS 64

struct cursor_table {
    size_t max;
    int64_t idle_ms;
    size_t n;
    size_t nbuckets; /* a power of two */
    struct cursor_entry **buckets;
    struct cursor_entry **rbuckets; /* rewritten entries by real id (CURSORS_RBUCKETS) */
    struct cursor_entry *mru;       /* most recently used */
    struct cursor_entry *lru;       /* least recently used */
    struct cursor_entry *free_list;
    /* Counters for the status command. */
    uint64_t added;
    uint64_t collisions;
    uint64_t evicted;
    uint64_t expired;
};

/* Prepares an empty table holding at most max cursors idle at most idle_ms. Returns 0 or -ENOMEM.
 */
int cursors_init(struct cursor_table *t, size_t max, int64_t idle_ms);
void cursors_free(struct cursor_table *t);

/*
 * Records that server opened (or still holds) cursor real_id at now_ms. If the same server already
 * holds it under some client id, that entry is refreshed. If another server's cursor already uses
 * the id, a fresh client id is drawn from rnd (called until it yields an unused non-zero value).
 * *client_id receives the id the client must see. Returns 0, 1 if a collision was resolved, or
 * -ENOMEM.
 */
int cursors_add(struct cursor_table *t, int server, int64_t real_id, int64_t now_ms,
                uint64_t (*rnd)(void *), void *rnd_ctx, int64_t *client_id);

/* Finds the entry for a client-visible id and marks it used at now_ms, or returns NULL. The
 * pointer is valid until the next call that changes the table. */
struct cursor_entry *cursors_find(struct cursor_table *t, int64_t client_id, int64_t now_ms);

/* Records which client connection opened a cursor (the low 16 bits of its id are kept: the
 * misroute counter may rarely miss one), and as which user. */
void cursors_set_conn(struct cursor_table *t, int64_t client_id, uint32_t conn, uint32_t owner);

/* Removes a cursor by client id. Returns 0 or -ENOENT. */
int cursors_remove(struct cursor_table *t, int64_t client_id);

/* Removes every cursor of a server (it went away). Returns how many. */
size_t cursors_remove_server(struct cursor_table *t, int server);

/* Removes the cursors idle for longer than the idle timeout. Returns how many. */
size_t cursors_expire(struct cursor_table *t, int64_t now_ms);

#endif
