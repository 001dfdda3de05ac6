/*
 * store.c: mongosim's in-memory data engine (see store.h for the contract).
 *
 * Layout: a store is a list of databases, a database a list of collections. A collection keeps
 * its documents in an array of slots in insertion order; a deleted document leaves a NULL
 * tombstone so that deleting by _id is O(1), and the array is compacted once tombstones outnumber
 * live documents (amortised O(1) per delete). Every stored document has _id as its first field,
 * and an open-addressing hash table maps the hash of _id to the slot, so that finds, updates and
 * deletes by _id never scan.
 *
 * Commands build their replies directly in the caller's bson_t and put copies of result documents
 * into a struct store_results, so a cursor never points into the store.
 *
 * The store also remembers how transactions ended (store_txn_outcome_*), in a ring of fixed size
 * with a hash index, because it is the one state every simulated server shares.
 *
 * Replication (store_oplog_*): a store given an oplog appends every change it makes to it, as whole
 * documents by _id (the shape of MongoDB's oplog entries, which are idempotent), so that another
 * store (a secondary's copy, made by store_clone) can apply them later and end up identical. The
 * changes of a transaction wait in its store_txn until it commits, as MongoDB writes a
 * transaction's oplog entry only at commit; an aborted one leaves nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* ------------------------------------------------------------------------------------------ */
/* Data structures                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* One bucket of a collection's _id index; slot == SIZE_MAX marks an empty bucket. */
struct id_entry {
    uint64_t hash;
    size_t slot;
};

/* A collection: documents in insertion order plus the _id hash index. */
struct coll {
    char *name;
    bson_t **docs;  /* slots in insertion order; NULL is a deleted document */
    size_t n_slots; /* slots in use (live documents and tombstones) */
    size_t cap;     /* allocated slots */
    size_t n_live;  /* live documents */
    size_t bytes;   /* sum of the live documents' sizes, for listDatabases */
    struct id_entry *index;
    size_t index_cap; /* power of two, or 0 before the first insert */
    uint8_t uuid[16];
};

/* A database: its collections in creation order. */
struct db {
    char *name;
    struct coll **colls;
    size_t n, cap;
};

/* One remembered transaction outcome (store.h). The slots form a ring, so the oldest outcome is
 * the one overwritten, and a chained hash index on (lsid, txnNumber) finds them. */
struct txn_outcome {
    uint8_t lsid[16];
    int64_t txn_number;
    uint32_t next; /* the next slot in the same bucket, or NO_OUTCOME */
    uint8_t outcome;
};

#define NO_OUTCOME UINT32_MAX

/* What an oplog entry does to a secondary's copy. */
enum oplog_kind {
    OPLOG_INSERT,  /* insert doc (or replace the document with its _id) */
    OPLOG_UPDATE,  /* replace the document with doc's _id by doc (insert it if missing) */
    OPLOG_DELETE,  /* delete the document whose _id is in doc */
    OPLOG_CREATE,  /* create the collection, with uuid */
    OPLOG_DROP,    /* drop the collection */
    OPLOG_DROP_DB, /* drop the database */
};

struct oplog_entry {
    enum oplog_kind kind;
    char *db;
    char *coll;       /* NULL for OPLOG_DROP_DB */
    bson_t *doc;      /* see oplog_kind; NULL for the collection and database kinds */
    uint8_t uuid[16]; /* OPLOG_CREATE: the collection's UUID, the same on every member */
    int64_t wall_ms;  /* when the primary made the change (a transaction's: its commit) */
};

/* A growable array of entries: the oplog itself, or a transaction's changes until it commits. */
struct entry_list {
    struct oplog_entry *e;
    size_t n, cap;
};

struct store_oplog {
    struct entry_list list; /* entries first .. first + list.n - 1 */
    uint64_t first;         /* the number of list.e[0]: how many entries were trimmed */
    int64_t (*clock)(void *arg);
    void *clock_arg;
};

struct store {
    struct db **dbs;
    size_t n, cap;

    struct store_oplog *oplog; /* where changes are recorded, or NULL (no replication) */

    /* Transaction outcomes: allocated on the first one, because a test that runs no transaction
     * should not pay for the whole ring. */
    struct txn_outcome *outcomes; /* outcomes_max slots */
    uint32_t *outcome_buckets;    /* outcome_nbuckets (a power of two) chain heads */
    size_t outcomes_max;          /* 0 until set: STORE_TXN_OUTCOMES_MAX */
    size_t outcomes_len;          /* slots in use */
    size_t outcomes_next;         /* the slot the next new outcome takes (the oldest once full) */
    size_t outcome_nbuckets;
};

/* What an undo entry reverses. */
enum undo_kind {
    UNDO_INSERT, /* delete the document whose _id is in doc */
    UNDO_UPDATE, /* put doc (the previous image) back in place of the document with its _id */
    UNDO_DELETE, /* insert doc (the deleted document) again */
    UNDO_CREATE, /* drop the collection */
};

struct undo {
    enum undo_kind kind;
    char *db;
    char *coll;
    bson_t *doc;
};

struct store_txn {
    struct undo *entries;
    size_t n, cap;
    struct entry_list redo; /* the changes to replicate at commit, when the store keeps an oplog */
};

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Returns MongoDB's codeName for code, or "Location<code>" written into buf for the rest. */
static const char *code_name(int code, char *buf, size_t len)
{
    switch (code) {
    case STORE_ERR_BAD_VALUE:
        return "BadValue";
    case STORE_ERR_FAILED_TO_PARSE:
        return "FailedToParse";
    case STORE_ERR_TYPE_MISMATCH:
        return "TypeMismatch";
    case 16:
        return "InvalidLength";
    case STORE_ERR_NAMESPACE_NOT_FOUND:
        return "NamespaceNotFound";
    case STORE_ERR_CONFLICTING_UPDATE_OPS:
        return "ConflictingUpdateOperators";
    case STORE_ERR_NAMESPACE_EXISTS:
        return "NamespaceExists";
    case 53:
        return "InvalidIdField";
    case STORE_ERR_COMMAND_NOT_FOUND:
        return "CommandNotFound";
    case STORE_ERR_IMMUTABLE_FIELD:
        return "ImmutableField";
    case STORE_ERR_INVALID_NAMESPACE:
        return "InvalidNamespace";
    case STORE_ERR_DUPLICATE_KEY:
        return "DuplicateKey";
    default:
        snprintf(buf, len, "Location%d", code);
        return buf;
    }
}

/*
 * Fills err (which may be NULL) with code, its codeName and the formatted message, and returns rc
 * so that callers can write `return set_err(...)`.
 */
static int set_err(struct store_error *err, int rc, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int set_err(struct store_error *err, int rc, int code, const char *fmt, ...)
{
    if (!err)
        return rc;
    err->code = code;
    char buf[32];
    snprintf(err->code_name, sizeof(err->code_name), "%s", code_name(code, buf, sizeof(buf)));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->errmsg, sizeof(err->errmsg), fmt, ap);
    va_end(ap);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Value comparison in MongoDB's order                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Returns the canonical rank of a BSON type; a missing value (BSON_TYPE_EOD) ranks as null. */
static int canon_rank(bson_type_t t)
{
    switch (t) {
    case BSON_TYPE_MINKEY:
        return 1;
    case BSON_TYPE_EOD:
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
        return 2;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128:
        return 3;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL:
        return 4;
    case BSON_TYPE_DOCUMENT:
        return 5;
    case BSON_TYPE_ARRAY:
        return 6;
    case BSON_TYPE_BINARY:
        return 7;
    case BSON_TYPE_OID:
        return 8;
    case BSON_TYPE_BOOL:
        return 9;
    case BSON_TYPE_DATE_TIME:
        return 10;
    case BSON_TYPE_TIMESTAMP:
        return 11;
    case BSON_TYPE_REGEX:
        return 12;
    case BSON_TYPE_DBPOINTER:
        return 13;
    case BSON_TYPE_CODE:
        return 14;
    case BSON_TYPE_CODEWSCOPE:
        return 15;
    case BSON_TYPE_MAXKEY:
    default:
        return 100;
    }
}

/* Returns the type of it, or BSON_TYPE_EOD for a missing value (NULL). */
static bson_type_t type_of(const bson_iter_t *it)
{
    return it ? bson_iter_type(it) : BSON_TYPE_EOD;
}

/* Returns true if it holds an int32 or int64 (numbers exactly representable as int64). */
static bool is_integer_type(bson_type_t t)
{
    return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64;
}

/* Returns the numeric value of it as a long double (exact for every int64), NAN if not numeric. */
static long double num_value(const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
        return bson_iter_int32(it);
    case BSON_TYPE_INT64:
        return (long double)bson_iter_int64(it);
    case BSON_TYPE_DOUBLE:
        return bson_iter_double(it);
    case BSON_TYPE_DECIMAL128: {
        /* Decimal128 is rare in tests; going through its string form is exact enough. */
        bson_decimal128_t d;
        char s[BSON_DECIMAL128_STRING];
        bson_iter_decimal128(it, &d);
        bson_decimal128_to_string(&d, s);
        return strtold(s, NULL);
    }
    default:
        return NAN;
    }
}

/* Compares two numeric values across int32/int64/double/decimal128; NaN sorts below numbers. */
static int compare_numbers(const bson_iter_t *a, const bson_iter_t *b)
{
    bson_type_t ta = bson_iter_type(a), tb = bson_iter_type(b);
    if (is_integer_type(ta) && is_integer_type(tb)) {
        int64_t x = bson_iter_as_int64(a), y = bson_iter_as_int64(b);
        return x < y ? -1 : x > y;
    }
    long double x = num_value(a), y = num_value(b);
    bool nx = isnan(x), ny = isnan(y);
    if (nx || ny)
        return nx && ny ? 0 : (nx ? -1 : 1);
    return x < y ? -1 : x > y;
}

/* Compares two byte strings: common prefix first, then length. */
static int compare_bytes(const void *a, size_t la, const void *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c)
        return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

/*
 * Compares two embedded documents (or arrays, when is_array: keys are then ignored) element by
 * element: canonical type, then field name, then value; the shorter one sorts first.
 */
static int compare_containers(const bson_iter_t *a, const bson_iter_t *b, bool is_array)
{
    bson_iter_t ca, cb;
    if (!bson_iter_recurse(a, &ca) || !bson_iter_recurse(b, &cb))
        return 0;
    for (;;) {
        bool ha = bson_iter_next(&ca), hb = bson_iter_next(&cb);
        if (!ha || !hb)
            return ha == hb ? 0 : (ha ? 1 : -1);
        int c = canon_rank(bson_iter_type(&ca)) - canon_rank(bson_iter_type(&cb));
        if (c)
            return c < 0 ? -1 : 1;
        if (!is_array) {
            c = strcmp(bson_iter_key(&ca), bson_iter_key(&cb));
            if (c)
                return c < 0 ? -1 : 1;
        }
        c = store_compare_values(&ca, &cb);
        if (c)
            return c;
    }
}

int store_compare_values(const bson_iter_t *a, const bson_iter_t *b)
{
    bson_type_t ta = type_of(a), tb = type_of(b);
    int ra = canon_rank(ta), rb = canon_rank(tb);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 3:
        return compare_numbers(a, b);
    case 4: {
        uint32_t la, lb;
        const char *sa = ta == BSON_TYPE_SYMBOL ? bson_iter_symbol(a, &la) : bson_iter_utf8(a, &la);
        const char *sb = tb == BSON_TYPE_SYMBOL ? bson_iter_symbol(b, &lb) : bson_iter_utf8(b, &lb);
        return compare_bytes(sa, la, sb, lb);
    }
    case 5:
        return compare_containers(a, b, false);
    case 6:
        return compare_containers(a, b, true);
    case 7: {
        bson_subtype_t sa, sb;
        uint32_t la, lb;
        const uint8_t *da, *db;
        bson_iter_binary(a, &sa, &la, &da);
        bson_iter_binary(b, &sb, &lb, &db);
        if (la != lb)
            return la < lb ? -1 : 1;
        if (sa != sb)
            return sa < sb ? -1 : 1;
        return la ? compare_bytes(da, la, db, lb) : 0;
    }
    case 8: {
        int c = bson_oid_compare(bson_iter_oid(a), bson_iter_oid(b));
        return c < 0 ? -1 : c > 0;
    }
    case 9:
        return (int)bson_iter_bool(a) - (int)bson_iter_bool(b);
    case 10: {
        int64_t x = bson_iter_date_time(a), y = bson_iter_date_time(b);
        return x < y ? -1 : x > y;
    }
    case 11: {
        uint32_t t1, i1, t2, i2;
        bson_iter_timestamp(a, &t1, &i1);
        bson_iter_timestamp(b, &t2, &i2);
        if (t1 != t2)
            return t1 < t2 ? -1 : 1;
        return i1 < i2 ? -1 : i1 > i2;
    }
    case 12: {
        const char *fa, *fb;
        const char *pa = bson_iter_regex(a, &fa), *pb = bson_iter_regex(b, &fb);
        int c = strcmp(pa, pb);
        if (!c)
            c = strcmp(fa, fb);
        return c < 0 ? -1 : c > 0;
    }
    case 14: {
        uint32_t la, lb;
        const char *ca = bson_iter_code(a, &la), *cb = bson_iter_code(b, &lb);
        return compare_bytes(ca, la, cb, lb);
    }
    default:
        /* MinKey, null, MaxKey and the rarely used legacy types compare equal within their type. */
        return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* _id hash index                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* FNV-1a over len bytes of p, continuing from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/*
 * Returns the hash of an _id value. Values that store_compare_values calls equal must hash
 * equally, so numbers hash by value (an integral double like an int64) and the rank, not the BSON
 * type, seeds the hash. Embedded documents hash by their bytes: {a:1} and {a:1.0} as _id are
 * therefore distinct here, an accepted simplification.
 */
static uint64_t id_hash(const bson_iter_t *it)
{
    bson_type_t t = bson_iter_type(it);
    uint8_t rank = (uint8_t)canon_rank(t);
    uint64_t h = fnv(0xcbf29ce484222325ULL, &rank, 1);
    switch (t) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64: {
        int64_t v = bson_iter_as_int64(it);
        return fnv(h, &v, sizeof(v));
    }
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128: {
        long double v = num_value(it);
        if (v >= -9223372036854775808.0L && v < 9223372036854775808.0L && v == floorl(v)) {
            int64_t i = (int64_t)v;
            return fnv(h, &i, sizeof(i));
        }
        double d = (double)v;
        if (isnan(d))
            return h;
        return fnv(h, &d, sizeof(d));
    }
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL: {
        uint32_t len;
        const char *s = t == BSON_TYPE_UTF8 ? bson_iter_utf8(it, &len) : bson_iter_symbol(it, &len);
        return fnv(h, s, len);
    }
    case BSON_TYPE_OID:
        return fnv(h, bson_iter_oid(it)->bytes, 12);
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        uint32_t len;
        const uint8_t *data;
        if (t == BSON_TYPE_DOCUMENT)
            bson_iter_document(it, &len, &data);
        else
            bson_iter_array(it, &len, &data);
        return fnv(h, data, len);
    }
    case BSON_TYPE_BINARY: {
        bson_subtype_t st;
        uint32_t len;
        const uint8_t *data;
        bson_iter_binary(it, &st, &len, &data);
        return len ? fnv(h, data, len) : h;
    }
    case BSON_TYPE_BOOL: {
        uint8_t v = bson_iter_bool(it);
        return fnv(h, &v, 1);
    }
    case BSON_TYPE_DATE_TIME: {
        int64_t v = bson_iter_date_time(it);
        return fnv(h, &v, sizeof(v));
    }
    case BSON_TYPE_TIMESTAMP: {
        uint32_t ts[2];
        bson_iter_timestamp(it, &ts[0], &ts[1]);
        return fnv(h, ts, sizeof(ts));
    }
    default:
        return h;
    }
}

/* Points it at the _id of a stored document (always its first field). Returns false if none. */
static bool doc_id(const bson_t *doc, bson_iter_t *it)
{
    return bson_iter_init(it, doc) && bson_iter_next(it) && strcmp(bson_iter_key(it), "_id") == 0;
}

/* Returns the slot of the document whose _id equals id, or SIZE_MAX. O(1) expected. */
static size_t index_find(const struct coll *c, const bson_iter_t *id)
{
    if (!c->index_cap)
        return SIZE_MAX;
    uint64_t h = id_hash(id);
    size_t mask = c->index_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct id_entry *e = &c->index[i];
        if (e->slot == SIZE_MAX)
            return SIZE_MAX;
        bson_iter_t other;
        if (e->hash == h && doc_id(c->docs[e->slot], &other) &&
            store_compare_values(id, &other) == 0)
            return e->slot;
    }
}

/* Puts (h, slot) into a table known to have room and not to hold slot's _id. */
static void index_put_raw(struct id_entry *tab, size_t cap, uint64_t h, size_t slot)
{
    size_t mask = cap - 1, i = h & mask;
    while (tab[i].slot != SIZE_MAX)
        i = (i + 1) & mask;
    tab[i].hash = h;
    tab[i].slot = slot;
}

/* Rebuilds the index from the live slots with capacity cap (a power of two). Returns 0/-ENOMEM. */
static int index_rebuild(struct coll *c, size_t cap)
{
    struct id_entry *tab = malloc(cap * sizeof(*tab));
    if (!tab)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        tab[i].slot = SIZE_MAX;
    for (size_t s = 0; s < c->n_slots; s++) {
        bson_iter_t id;
        if (c->docs[s] && doc_id(c->docs[s], &id))
            index_put_raw(tab, cap, id_hash(&id), s);
    }
    free(c->index);
    c->index = tab;
    c->index_cap = cap;
    return 0;
}

/* Adds slot (whose document's _id is not yet indexed) to the index, growing it at 50% load. */
static int index_add(struct coll *c, size_t slot)
{
    if ((c->n_live + 1) * 2 > c->index_cap) {
        size_t cap = c->index_cap ? c->index_cap * 2 : 16;
        while ((c->n_live + 1) * 2 > cap)
            cap *= 2;
        int rc = index_rebuild(c, cap);
        if (rc)
            return rc;
    }
    bson_iter_t id;
    if (!doc_id(c->docs[slot], &id))
        return -EINVAL;
    index_put_raw(c->index, c->index_cap, id_hash(&id), slot);
    return 0;
}

/*
 * Removes slot from the index with backward-shift deletion, which keeps linear probing correct
 * without tombstones in the table.
 */
static void index_remove(struct coll *c, size_t slot)
{
    bson_iter_t id;
    if (!c->index_cap || !doc_id(c->docs[slot], &id))
        return;
    size_t mask = c->index_cap - 1, i = id_hash(&id) & mask;
    while (c->index[i].slot != slot) {
        if (c->index[i].slot == SIZE_MAX)
            return;
        i = (i + 1) & mask;
    }
    for (size_t j = i;;) {
        j = (j + 1) & mask;
        if (c->index[j].slot == SIZE_MAX)
            break;
        size_t k = c->index[j].hash & mask;
        /* Entry j may move into the hole at i only if its home k is not in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        c->index[i] = c->index[j];
        i = j;
    }
    c->index[i].slot = SIZE_MAX;
}

/* ------------------------------------------------------------------------------------------ */
/* Collections and databases                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Frees a collection and its documents. */
static void coll_free(struct coll *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_slots; i++)
        if (c->docs[i])
            bson_destroy(c->docs[i]);
    free(c->docs);
    free(c->index);
    free(c->name);
    free(c);
}

/* Frees a database and its collections. */
static void db_free(struct db *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        coll_free(d->colls[i]);
    free(d->colls);
    free(d->name);
    free(d);
}

struct store *store_new(void)
{
    return calloc(1, sizeof(struct store));
}

void store_free(struct store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        db_free(s->dbs[i]);
    free(s->dbs);
    free(s->outcomes);
    free(s->outcome_buckets);
    free(s);
}

/* Returns the database called name, or NULL. */
static struct db *db_find(const struct store *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->dbs[i]->name, name) == 0)
            return s->dbs[i];
    return NULL;
}

/* Returns the position of collection name in d, or SIZE_MAX. */
static size_t coll_pos(const struct db *d, const char *name)
{
    for (size_t i = 0; d && i < d->n; i++)
        if (strcmp(d->colls[i]->name, name) == 0)
            return i;
    return SIZE_MAX;
}

/* Returns collection db.name, or NULL if either does not exist. */
static struct coll *coll_find(const struct store *s, const char *db, const char *name)
{
    struct db *d = db_find(s, db);
    size_t i = coll_pos(d, name);
    return i == SIZE_MAX ? NULL : d->colls[i];
}

/* Grows a pointer array (*arr with *cap entries) to hold at least need. Returns 0 or -ENOMEM. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

/* Fills 16 bytes with a random version-4 UUID (collections' info.uuid). */
static void make_uuid(uint8_t *u)
{
    for (int i = 0; i < 16; i++)
        u[i] = (uint8_t)(rand() & 0xff);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

/*
 * Creates collection db.name (and the database if needed). The caller has checked that it does
 * not exist yet. Returns the collection, or NULL if memory is exhausted.
 */
static struct coll *coll_create(struct store *s, const char *db, const char *name)
{
    struct db *d = db_find(s, db);
    if (!d) {
        if (grow((void **)&s->dbs, &s->cap, s->n + 1, sizeof(*s->dbs)))
            return NULL;
        d = calloc(1, sizeof(*d));
        if (!d || !(d->name = strdup(db))) {
            free(d);
            return NULL;
        }
        s->dbs[s->n++] = d;
    }
    if (grow((void **)&d->colls, &d->cap, d->n + 1, sizeof(*d->colls)))
        return NULL;
    struct coll *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return NULL;
    }
    make_uuid(c->uuid);
    d->colls[d->n++] = c;
    return c;
}

/* Removes database d from the store and frees it. */
static void db_remove(struct store *s, struct db *d)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->dbs[i] == d) {
            memmove(&s->dbs[i], &s->dbs[i + 1], (s->n - i - 1) * sizeof(*s->dbs));
            s->n--;
            break;
        }
    }
    db_free(d);
}

/*
 * Drops collection db.name. A database without collections ceases to exist, as in MongoDB.
 * Returns true if the collection existed.
 */
static bool coll_drop(struct store *s, const char *db, const char *name)
{
    struct db *d = db_find(s, db);
    size_t i = coll_pos(d, name);
    if (i == SIZE_MAX)
        return false;
    coll_free(d->colls[i]);
    memmove(&d->colls[i], &d->colls[i + 1], (d->n - i - 1) * sizeof(*d->colls));
    d->n--;
    if (d->n == 0)
        db_remove(s, d);
    return true;
}

/*
 * Appends doc (ownership passes to the collection; its _id must be first and unique) and indexes
 * it. Returns 0, or -ENOMEM with doc not taken.
 */
static int coll_append(struct coll *c, bson_t *doc)
{
    if (grow((void **)&c->docs, &c->cap, c->n_slots + 1, sizeof(*c->docs)))
        return -ENOMEM;
    c->docs[c->n_slots] = doc;
    int rc = index_add(c, c->n_slots);
    if (rc) {
        c->docs[c->n_slots] = NULL;
        return rc;
    }
    c->n_slots++;
    c->n_live++;
    c->bytes += doc->len;
    return 0;
}

/* Deletes the document in slot (leaving a tombstone) and frees it. O(1). */
static void coll_delete_slot(struct coll *c, size_t slot)
{
    index_remove(c, slot);
    c->bytes -= c->docs[slot]->len;
    bson_destroy(c->docs[slot]);
    c->docs[slot] = NULL;
    c->n_live--;
}

/* Replaces the document in slot by doc (same _id; ownership passes) and frees the old one. */
static void coll_replace_slot(struct coll *c, size_t slot, bson_t *doc)
{
    c->bytes = c->bytes - c->docs[slot]->len + doc->len;
    bson_destroy(c->docs[slot]);
    c->docs[slot] = doc;
}

/*
 * Squeezes out tombstones once they outnumber live documents, so scans stay proportional to the
 * live count; the rebuild of the index is paid for by the deletes that made the tombstones. Only
 * called between statements, never while a caller holds slot numbers.
 */
static void coll_maybe_compact(struct coll *c)
{
    size_t dead = c->n_slots - c->n_live;
    if (dead < 32 || dead < c->n_live)
        return;
    size_t cap = 16;
    while (c->n_live * 2 > cap)
        cap *= 2;
    /* Allocate the new index first: without memory the tombstones simply stay. */
    struct id_entry *tab = malloc(cap * sizeof(*tab));
    if (!tab)
        return;
    for (size_t i = 0; i < cap; i++)
        tab[i].slot = SIZE_MAX;
    size_t w = 0;
    for (size_t r = 0; r < c->n_slots; r++) {
        if (!c->docs[r])
            continue;
        bson_iter_t id;
        c->docs[w] = c->docs[r];
        if (doc_id(c->docs[w], &id))
            index_put_raw(tab, cap, id_hash(&id), w);
        w++;
    }
    c->n_slots = w;
    free(c->index);
    c->index = tab;
    c->index_cap = cap;
}

size_t store_count_docs(struct store *s, const char *db, const char *coll)
{
    struct coll *c = coll_find(s, db, coll);
    return c ? c->n_live : 0;
}

size_t store_count_collections(struct store *s, const char *db)
{
    struct db *d = db_find(s, db);
    return d ? d->n : 0;
}

bool store_has_collection(struct store *s, const char *db, const char *coll)
{
    return coll_find(s, db, coll) != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Oplog entries                                                                              */
/* ------------------------------------------------------------------------------------------ */

static void entry_free(struct oplog_entry *e)
{
    free(e->db);
    free(e->coll);
    if (e->doc)
        bson_destroy(e->doc);
}

/* Frees every entry of l and its array, and leaves l empty. */
static void entries_clear(struct entry_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        entry_free(&l->e[i]);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

/* Appends an entry (doc and uuid may be NULL; doc is copied). Returns 0 or -ENOMEM, with nothing
 * appended. */
static int entries_push(struct entry_list *l, enum oplog_kind kind, const char *db,
                        const char *coll, const bson_t *doc, const uint8_t *uuid, int64_t wall_ms)
{
    if (grow((void **)&l->e, &l->cap, l->n + 1, sizeof(*l->e)))
        return -ENOMEM;
    struct oplog_entry *e = &l->e[l->n];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->wall_ms = wall_ms;
    e->db = strdup(db);
    e->coll = coll ? strdup(coll) : NULL;
    e->doc = doc ? bson_copy(doc) : NULL;
    if (uuid)
        memcpy(e->uuid, uuid, 16);
    if (!e->db || (coll && !e->coll) || (doc && !e->doc)) {
        entry_free(e);
        return -ENOMEM;
    }
    l->n++;
    return 0;
}

/* The time stamped on the next entry: the clock, never earlier than the last entry, so that the
 * oplog stays in time order even if the wall clock steps back. */
static int64_t oplog_now(const struct store_oplog *log)
{
    int64_t now = log->clock ? log->clock(log->clock_arg) : 0;
    if (log->list.n && log->list.e[log->list.n - 1].wall_ms > now)
        now = log->list.e[log->list.n - 1].wall_ms;
    return now;
}

/* ------------------------------------------------------------------------------------------ */
/* Results and transactions                                                                   */
/* ------------------------------------------------------------------------------------------ */

void store_results_free(struct store_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        bson_destroy(r->docs[i]);
    free(r->docs);
    memset(r, 0, sizeof(*r));
}

/* Appends doc to r (ownership passes, also on failure, when doc is freed). Returns 0/-ENOMEM. */
static int results_push(struct store_results *r, bson_t *doc)
{
    if (!doc)
        return -ENOMEM;
    if (grow((void **)&r->docs, &r->cap, r->n + 1, sizeof(*r->docs))) {
        bson_destroy(doc);
        return -ENOMEM;
    }
    r->docs[r->n++] = doc;
    return 0;
}

struct store_txn *store_txn_new(void)
{
    return calloc(1, sizeof(struct store_txn));
}

/* Frees t and its entries. */
static void txn_free(struct store_txn *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i].db);
        free(t->entries[i].coll);
        if (t->entries[i].doc)
            bson_destroy(t->entries[i].doc);
    }
    free(t->entries);
    entries_clear(&t->redo);
    free(t);
}

void store_txn_commit(struct store *s, struct store_txn *t)
{
    if (!t)
        return;
    /* The transaction's changes reach the oplog now, all with the commit's time, so that a
     * secondary applies all of them at once or none: nobody ever reads half a transaction. */
    if (s->oplog && t->redo.n) {
        struct entry_list *l = &s->oplog->list;
        int64_t now = oplog_now(s->oplog);
        if (grow((void **)&l->e, &l->cap, l->n + t->redo.n, sizeof(*l->e)) == 0) {
            for (size_t i = 0; i < t->redo.n; i++) {
                t->redo.e[i].wall_ms = now;
                l->e[l->n++] = t->redo.e[i];
            }
            t->redo.n = 0; /* moved, not to be freed with the transaction */
        }
    }
    txn_free(t);
}

/*
 * Records an undo entry in t (a no-op when t is NULL). doc is copied. Failure to record (memory
 * exhausted) is returned so the write can be refused rather than silently made irreversible.
 */
static int txn_record(struct store_txn *t, enum undo_kind kind, const char *db, const char *coll,
                      const bson_t *doc)
{
    if (!t)
        return 0;
    if (grow((void **)&t->entries, &t->cap, t->n + 1, sizeof(*t->entries)))
        return -ENOMEM;
    struct undo *u = &t->entries[t->n];
    u->kind = kind;
    u->db = strdup(db);
    u->coll = strdup(coll);
    u->doc = doc ? bson_copy(doc) : NULL;
    if (!u->db || !u->coll || (doc && !u->doc)) {
        free(u->db);
        free(u->coll);
        if (u->doc)
            bson_destroy(u->doc);
        return -ENOMEM;
    }
    t->n++;
    return 0;
}

/* Records the insertion of doc: the undo needs only its _id. */
static int txn_record_insert(struct store_txn *t, const char *db, const char *coll,
                             const bson_t *doc)
{
    if (!t)
        return 0;
    bson_iter_t id;
    bson_t key = BSON_INITIALIZER;
    if (doc_id(doc, &id))
        bson_append_iter(&key, "_id", 3, &id);
    int rc = txn_record(t, UNDO_INSERT, db, coll, &key);
    bson_destroy(&key);
    return rc;
}

void store_txn_abort(struct store *s, struct store_txn *t)
{
    if (!t)
        return;
    for (size_t i = t->n; i-- > 0;) {
        struct undo *u = &t->entries[i];
        struct coll *c = coll_find(s, u->db, u->coll);
        bson_iter_t id;
        size_t slot = SIZE_MAX;
        if (c && u->doc && doc_id(u->doc, &id))
            slot = index_find(c, &id);
        switch (u->kind) {
        case UNDO_INSERT:
            if (slot != SIZE_MAX)
                coll_delete_slot(c, slot);
            break;
        case UNDO_UPDATE:
            if (slot != SIZE_MAX) {
                coll_replace_slot(c, slot, u->doc);
                u->doc = NULL;
            }
            break;
        case UNDO_DELETE:
            if (!c)
                c = coll_create(s, u->db, u->coll);
            if (c && slot == SIZE_MAX && coll_append(c, u->doc) == 0)
                u->doc = NULL;
            break;
        case UNDO_CREATE:
            coll_drop(s, u->db, u->coll);
            c = NULL;
            break;
        }
        if (c)
            coll_maybe_compact(c);
    }
    txn_free(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Transaction outcomes                                                                       */
/* ------------------------------------------------------------------------------------------ */

static size_t outcome_bucket(const struct store *s, const uint8_t *lsid, int64_t txn_number)
{
    /* FNV-1a over the session id and then the txnNumber's bytes. */
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++)
        h = (h ^ lsid[i]) * 1099511628211ull;
    uint64_t v = (uint64_t)txn_number;
    for (int i = 0; i < 8; i++, v >>= 8)
        h = (h ^ (v & 0xff)) * 1099511628211ull;
    return (size_t)h & (s->outcome_nbuckets - 1);
}

static uint32_t outcome_find(const struct store *s, const uint8_t *lsid, int64_t txn_number)
{
    if (!s->outcomes)
        return NO_OUTCOME;
    uint32_t i = s->outcome_buckets[outcome_bucket(s, lsid, txn_number)];
    for (; i != NO_OUTCOME; i = s->outcomes[i].next)
        if (s->outcomes[i].txn_number == txn_number && memcmp(s->outcomes[i].lsid, lsid, 16) == 0)
            return i;
    return NO_OUTCOME;
}

static int outcomes_alloc(struct store *s)
{
    size_t max = s->outcomes_max ? s->outcomes_max : STORE_TXN_OUTCOMES_MAX;
    size_t nb = 16;
    while (nb < max)
        nb <<= 1;
    s->outcomes = calloc(max, sizeof(*s->outcomes));
    s->outcome_buckets = malloc(nb * sizeof(*s->outcome_buckets));
    if (!s->outcomes || !s->outcome_buckets) {
        free(s->outcomes);
        free(s->outcome_buckets);
        s->outcomes = NULL;
        s->outcome_buckets = NULL;
        return -ENOMEM;
    }
    for (size_t i = 0; i < nb; i++)
        s->outcome_buckets[i] = NO_OUTCOME;
    s->outcomes_max = max;
    s->outcome_nbuckets = nb;
    s->outcomes_len = 0;
    s->outcomes_next = 0;
    return 0;
}

/* Takes the slot out of its bucket's chain, before the slot is given to a newer outcome. */
static void outcome_unlink(struct store *s, uint32_t slot)
{
    const struct txn_outcome *o = &s->outcomes[slot];
    uint32_t *p = &s->outcome_buckets[outcome_bucket(s, o->lsid, o->txn_number)];
    while (*p != slot && *p != NO_OUTCOME)
        p = &s->outcomes[*p].next;
    if (*p == slot)
        *p = o->next;
}

int store_txn_outcome_set(struct store *s, const uint8_t *lsid, int64_t txn_number,
                          enum store_txn_outcome outcome)
{
    if (outcome != STORE_TXN_COMMITTED && outcome != STORE_TXN_ABORTED)
        return -EINVAL;
    if (!s->outcomes && outcomes_alloc(s) < 0)
        return -ENOMEM;
    uint32_t slot = outcome_find(s, lsid, txn_number);
    if (slot != NO_OUTCOME) {
        s->outcomes[slot].outcome = (uint8_t)outcome;
        return 0;
    }
    slot = (uint32_t)s->outcomes_next;
    if (s->outcomes_len == s->outcomes_max)
        outcome_unlink(s, slot); /* the oldest outcome is forgotten */
    else
        s->outcomes_len++;
    s->outcomes_next = (s->outcomes_next + 1) % s->outcomes_max;
    struct txn_outcome *o = &s->outcomes[slot];
    memcpy(o->lsid, lsid, 16);
    o->txn_number = txn_number;
    o->outcome = (uint8_t)outcome;
    uint32_t *head = &s->outcome_buckets[outcome_bucket(s, lsid, txn_number)];
    o->next = *head;
    *head = slot;
    return 0;
}

enum store_txn_outcome store_txn_outcome_get(const struct store *s, const uint8_t *lsid,
                                             int64_t txn_number)
{
    uint32_t slot = outcome_find(s, lsid, txn_number);
    return slot == NO_OUTCOME ? STORE_TXN_UNKNOWN
                              : (enum store_txn_outcome)s->outcomes[slot].outcome;
}

size_t store_txn_outcome_count(const struct store *s)
{
    return s->outcomes_len;
}

int store_txn_outcome_limit(struct store *s, size_t max)
{
    if (max == 0 || max >= NO_OUTCOME)
        return -EINVAL;
    free(s->outcomes);
    free(s->outcome_buckets);
    s->outcomes = NULL;
    s->outcome_buckets = NULL;
    s->outcomes_max = max;
    s->outcomes_len = 0;
    s->outcomes_next = 0;
    s->outcome_nbuckets = 0;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Returns MongoDB's name of a BSON type, as used in error messages. */
static const char *type_name(bson_type_t t)
{
    switch (t) {
    case BSON_TYPE_DOUBLE:
        return "double";
    case BSON_TYPE_UTF8:
        return "string";
    case BSON_TYPE_DOCUMENT:
        return "object";
    case BSON_TYPE_ARRAY:
        return "array";
    case BSON_TYPE_BINARY:
        return "binData";
    case BSON_TYPE_UNDEFINED:
        return "undefined";
    case BSON_TYPE_OID:
        return "objectId";
    case BSON_TYPE_BOOL:
        return "bool";
    case BSON_TYPE_DATE_TIME:
        return "date";
    case BSON_TYPE_NULL:
        return "null";
    case BSON_TYPE_REGEX:
        return "regex";
    case BSON_TYPE_INT32:
        return "int";
    case BSON_TYPE_TIMESTAMP:
        return "timestamp";
    case BSON_TYPE_INT64:
        return "long";
    case BSON_TYPE_DECIMAL128:
        return "decimal";
    case BSON_TYPE_MINKEY:
        return "minKey";
    case BSON_TYPE_MAXKEY:
        return "maxKey";
    case BSON_TYPE_EOD:
        return "missing";
    default:
        return "unknown";
    }
}

/* Returns true if it holds a number (int32, int64, double or decimal128). */
static bool is_number(const bson_iter_t *it)
{
    return canon_rank(bson_iter_type(it)) == 3;
}

/*
 * Writes a short, shell-like rendering of a value into buf (for error messages such as the
 * duplicate key one): numbers plainly, strings quoted, ObjectIds as ObjectId('...').
 */
static void fmt_value(const bson_iter_t *it, char *buf, size_t len)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        snprintf(buf, len, "%" PRId64, bson_iter_as_int64(it));
        return;
    case BSON_TYPE_DOUBLE:
        snprintf(buf, len, "%.17g", bson_iter_double(it));
        return;
    case BSON_TYPE_UTF8:
        snprintf(buf, len, "\"%s\"", bson_iter_utf8(it, NULL));
        return;
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        snprintf(buf, len, "ObjectId('%s')", hex);
        return;
    }
    case BSON_TYPE_NULL:
        snprintf(buf, len, "null");
        return;
    case BSON_TYPE_BOOL:
        snprintf(buf, len, "%s", bson_iter_bool(it) ? "true" : "false");
        return;
    default: {
        bson_t tmp = BSON_INITIALIZER;
        bson_append_iter(&tmp, "v", 1, it);
        char *json = bson_as_relaxed_extended_json(&tmp, NULL);
        /* json is `{ "v" : X }`: keep X. */
        const char *x = json ? strstr(json, ": ") : NULL;
        if (x) {
            size_t n = strlen(x + 2);
            snprintf(buf, len, "%.*s", (int)(n > 2 ? n - 2 : n), x + 2);
        } else {
            snprintf(buf, len, "?");
        }
        bson_free(json);
        bson_destroy(&tmp);
    }
    }
}

/* Makes *view a read-only bson_t over the embedded document or array that it points at. */
static bool iter_doc_view(const bson_iter_t *it, bson_t *view)
{
    uint32_t len;
    const uint8_t *data;
    if (BSON_ITER_HOLDS_DOCUMENT(it))
        bson_iter_document(it, &len, &data);
    else if (BSON_ITER_HOLDS_ARRAY(it))
        bson_iter_array(it, &len, &data);
    else
        return false;
    return bson_init_static(view, data, len);
}

/* Returns true if the document it points at is an operator document ({$op: ...}). */
static bool is_operator_doc(const bson_iter_t *it)
{
    bson_iter_t c;
    return BSON_ITER_HOLDS_DOCUMENT(it) && bson_iter_recurse(it, &c) && bson_iter_next(&c) &&
           bson_iter_key(&c)[0] == '$';
}

/* Finds field key in doc. Returns true and sets *it if present. */
static bool find_field(const bson_t *doc, const char *key, bson_iter_t *it)
{
    return doc && bson_iter_init_find(it, doc, key);
}

/* Returns field key of doc as a boolean (MongoDB truthiness), or def if absent. */
static bool get_bool(const bson_t *doc, const char *key, bool def)
{
    bson_iter_t it;
    return find_field(doc, key, &it) ? bson_iter_as_bool(&it) : def;
}

/*
 * Reads optional field key of cmd as an embedded document into *view. Returns 1 if present, 0 if
 * absent or null, or a negative value with err filled if it has another type.
 */
static int get_doc(const bson_t *cmd, const char *cname, const char *key, bson_t *view,
                   struct store_error *err)
{
    bson_iter_t it;
    if (!find_field(cmd, key, &it) || BSON_ITER_HOLDS_NULL(&it))
        return 0;
    if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !iter_doc_view(&it, view))
        return set_err(err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                       "BSON field '%s.%s' is the wrong type '%s', expected type 'object'", cname,
                       key, type_name(bson_iter_type(&it)));
    return 1;
}

/*
 * Reads optional numeric field key of cmd into *out. Returns 1 if present, 0 if absent, or a
 * negative value with err filled for a non-numeric value.
 */
static int get_int64(const bson_t *cmd, const char *cname, const char *key, int64_t *out,
                     struct store_error *err)
{
    bson_iter_t it;
    if (!find_field(cmd, key, &it) || BSON_ITER_HOLDS_NULL(&it))
        return 0;
    if (!is_number(&it))
        return set_err(err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                       "BSON field '%s.%s' is the wrong type '%s', expected types '[long, int, "
                       "decimal, double]'",
                       cname, key, type_name(bson_iter_type(&it)));
    *out = bson_iter_as_int64(&it);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Query matching                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* The positive predicates a path is tested with; negations ($ne, $nin, $not) wrap these. */
enum qop { Q_EQ, Q_IN, Q_GT, Q_GTE, Q_LT, Q_LTE, Q_EXISTS, Q_SIZE, Q_TYPE };

/* Tests one value (NULL when missing) against a comparison, without array traversal. */
static bool scalar_matches(const bson_iter_t *v, enum qop op, const bson_iter_t *operand)
{
    switch (op) {
    case Q_EQ:
        return store_compare_values(v, operand) == 0;
    case Q_IN: {
        bson_iter_t e;
        if (!bson_iter_recurse(operand, &e))
            return false;
        while (bson_iter_next(&e))
            if (store_compare_values(v, &e) == 0)
                return true;
        return false;
    }
    case Q_GT:
    case Q_GTE:
    case Q_LT:
    case Q_LTE: {
        /* MongoDB compares only within one canonical type ("type bracketing"). */
        if (canon_rank(type_of(v)) != canon_rank(bson_iter_type(operand)))
            return false;
        int c = store_compare_values(v, operand);
        return op == Q_GT ? c > 0 : op == Q_GTE ? c >= 0 : op == Q_LT ? c < 0 : c <= 0;
    }
    default:
        return false;
    }
}

/*
 * Tests the value found at a path (NULL when missing) against op. An array value matches if it
 * matches as a whole or if any of its elements does, as MongoDB's equality and range queries do.
 */
static bool value_matches(const bson_iter_t *v, enum qop op, const bson_iter_t *operand)
{
    switch (op) {
    case Q_EXISTS:
        return v != NULL;
    case Q_SIZE: {
        if (!v || !BSON_ITER_HOLDS_ARRAY(v))
            return false;
        bson_iter_t e;
        int64_t n = 0, want = bson_iter_as_int64(operand);
        if (bson_iter_recurse(v, &e))
            while (bson_iter_next(&e))
                n++;
        return n == want;
    }
    case Q_TYPE: {
        if (!v)
            return false;
        if (BSON_ITER_HOLDS_UTF8(operand)) {
            const char *name = bson_iter_utf8(operand, NULL);
            if (strcmp(name, "number") == 0)
                return is_number(v);
            return strcmp(name, type_name(bson_iter_type(v))) == 0;
        }
        return is_number(operand) && bson_iter_as_int64(operand) == (int64_t)bson_iter_type(v);
    }
    default:
        break;
    }
    if (scalar_matches(v, op, operand))
        return true;
    if (v && BSON_ITER_HOLDS_ARRAY(v)) {
        bson_iter_t e;
        if (bson_iter_recurse(v, &e))
            while (bson_iter_next(&e))
                if (scalar_matches(&e, op, operand))
                    return true;
    }
    return false;
}

/*
 * Resolves a dotted path below the container that children iterates (positioned before its first
 * element) and tests op on what it finds. Arrays on the way are traversed: the path matches if it
 * matches through any element, or through a numeric index.
 */
static bool path_matches(bson_iter_t *children, const char *path, enum qop op,
                         const bson_iter_t *operand)
{
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    bson_iter_t it = *children;
    if (!bson_iter_find_w_len(&it, path, (int)len))
        return value_matches(NULL, op, operand);
    if (!dot)
        return value_matches(&it, op, operand);
    bson_iter_t sub;
    if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
        if (!bson_iter_recurse(&it, &sub))
            return false;
        return path_matches(&sub, dot + 1, op, operand);
    }
    if (BSON_ITER_HOLDS_ARRAY(&it)) {
        bool any_doc = false;
        bson_iter_t e;
        if (dot[1] >= '0' && dot[1] <= '9' && bson_iter_recurse(&it, &sub) &&
            path_matches(&sub, dot + 1, op, operand))
            return true;
        if (bson_iter_recurse(&it, &e)) {
            while (bson_iter_next(&e)) {
                if (!BSON_ITER_HOLDS_DOCUMENT(&e))
                    continue;
                any_doc = true;
                if (bson_iter_recurse(&e, &sub) && path_matches(&sub, dot + 1, op, operand))
                    return true;
            }
        }
        return any_doc ? false : value_matches(NULL, op, operand);
    }
    return value_matches(NULL, op, operand);
}

/* Tests op at path in doc. */
static bool doc_path_matches(const bson_t *doc, const char *path, enum qop op,
                             const bson_iter_t *operand)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        return false;
    return path_matches(&it, path, op, operand);
}

static int match_doc(const bson_t *doc, const bson_t *filter, struct store_error *err);

/*
 * Evaluates the operator document ops ({$gt: 1, $lt: 5}) on path. Returns 1 (match), 0, or a
 * negative value with err filled for an unknown operator or a malformed operand.
 */
static int match_operators(const bson_t *doc, const char *path, const bson_iter_t *ops,
                           struct store_error *err)
{
    bson_iter_t o;
    if (!bson_iter_recurse(ops, &o))
        return 0;
    while (bson_iter_next(&o)) {
        const char *op = bson_iter_key(&o);
        bool ok;
        if (strcmp(op, "$eq") == 0) {
            ok = doc_path_matches(doc, path, Q_EQ, &o);
        } else if (strcmp(op, "$ne") == 0) {
            ok = !doc_path_matches(doc, path, Q_EQ, &o);
        } else if (strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0) {
            if (!BSON_ITER_HOLDS_ARRAY(&o))
                return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "%s needs an array", op);
            ok = doc_path_matches(doc, path, Q_IN, &o);
            if (op[1] == 'n')
                ok = !ok;
        } else if (strcmp(op, "$gt") == 0) {
            ok = doc_path_matches(doc, path, Q_GT, &o);
        } else if (strcmp(op, "$gte") == 0) {
            ok = doc_path_matches(doc, path, Q_GTE, &o);
        } else if (strcmp(op, "$lt") == 0) {
            ok = doc_path_matches(doc, path, Q_LT, &o);
        } else if (strcmp(op, "$lte") == 0) {
            ok = doc_path_matches(doc, path, Q_LTE, &o);
        } else if (strcmp(op, "$exists") == 0) {
            ok = doc_path_matches(doc, path, Q_EXISTS, &o) == bson_iter_as_bool(&o);
        } else if (strcmp(op, "$size") == 0) {
            if (!is_number(&o))
                return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE,
                               "Failed to parse $size. Expected a number in: $size: %s",
                               type_name(bson_iter_type(&o)));
            ok = doc_path_matches(doc, path, Q_SIZE, &o);
        } else if (strcmp(op, "$type") == 0) {
            ok = doc_path_matches(doc, path, Q_TYPE, &o);
        } else if (strcmp(op, "$all") == 0) {
            bson_iter_t e;
            if (!BSON_ITER_HOLDS_ARRAY(&o) || !bson_iter_recurse(&o, &e))
                return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "$all needs an array");
            ok = true;
            bool any = false;
            while (ok && bson_iter_next(&e)) {
                any = true;
                ok = doc_path_matches(doc, path, Q_EQ, &e);
            }
            ok = ok && any;
        } else if (strcmp(op, "$not") == 0) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&o))
                return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "$not needs a document");
            int rc = match_operators(doc, path, &o, err);
            if (rc < 0)
                return rc;
            ok = !rc;
        } else {
            return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "unknown operator: %s", op);
        }
        if (!ok)
            return 0;
    }
    return 1;
}

/*
 * Evaluates a logical operator ($and, $or, $nor) whose operand it points at. Returns 1, 0 or a
 * negative value with err filled.
 */
static int match_logical(const bson_t *doc, const char *op, const bson_iter_t *it,
                         struct store_error *err)
{
    bson_iter_t e;
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &e))
        return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "%s must be an array", op);
    bool is_and = strcmp(op, "$and") == 0, is_or = strcmp(op, "$or") == 0, any = false;
    int hits = 0;
    while (bson_iter_next(&e)) {
        bson_t sub;
        any = true;
        if (!BSON_ITER_HOLDS_DOCUMENT(&e) || !iter_doc_view(&e, &sub))
            return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE,
                           "$or/$and/$nor entries need to be full objects");
        int rc = match_doc(doc, &sub, err);
        if (rc < 0)
            return rc;
        if (is_and && !rc)
            return 0;
        if (!is_and && rc) {
            if (is_or)
                return 1;
            hits++;
        }
    }
    if (!any)
        return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "$and/$or/$nor must be a nonempty array");
    return is_and ? 1 : is_or ? 0 : hits == 0;
}

/*
 * Returns 1 if doc matches the query filter, 0 if not, or a negative value with err filled for a
 * malformed filter.
 */
static int match_doc(const bson_t *doc, const bson_t *filter, struct store_error *err)
{
    bson_iter_t f;
    if (!filter || !bson_iter_init(&f, filter))
        return 1;
    while (bson_iter_next(&f)) {
        const char *key = bson_iter_key(&f);
        int rc;
        if (key[0] == '$') {
            if (strcmp(key, "$and") == 0 || strcmp(key, "$or") == 0 || strcmp(key, "$nor") == 0)
                rc = match_logical(doc, key, &f, err);
            else if (strcmp(key, "$comment") == 0)
                rc = 1;
            else
                return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "unknown top level operator: %s",
                               key);
        } else if (is_operator_doc(&f)) {
            rc = match_operators(doc, key, &f, err);
        } else {
            rc = doc_path_matches(doc, key, Q_EQ, &f);
        }
        if (rc <= 0)
            return rc;
    }
    return 1;
}

/* Checks a filter for errors once, so a scan of an empty collection still rejects it. */
static int validate_filter(const bson_t *filter, struct store_error *err)
{
    bson_t empty = BSON_INITIALIZER;
    int rc = match_doc(&empty, filter, err);
    bson_destroy(&empty);
    return rc < 0 ? rc : 0;
}

/*
 * Visits the slots of c whose documents match filter, in insertion order. visit returns 0 to go
 * on, 1 to stop, or a negative error. A filter with _id equality (or $eq / $in on _id) is answered
 * from the hash index instead of a scan. Returns 0 or the first negative value.
 */
typedef int (*visit_fn)(struct coll *c, size_t slot, void *ctx);

/* Orders slot numbers ascending (for qsort). */
static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static int scan(struct coll *c, const bson_t *filter, visit_fn visit, void *ctx,
                struct store_error *err)
{
    int rc = validate_filter(filter, err);
    if (rc < 0 || !c)
        return rc;
    bson_iter_t id;
    if (filter && bson_iter_init_find(&id, filter, "_id")) {
        const bson_iter_t *key = NULL;
        bson_iter_t op, in_list;
        bool use_in = false;
        if (!is_operator_doc(&id)) {
            if (!BSON_ITER_HOLDS_REGEX(&id))
                key = &id;
        } else if (bson_iter_recurse(&id, &op) && bson_iter_next(&op)) {
            if (strcmp(bson_iter_key(&op), "$eq") == 0)
                key = &op;
            else if (strcmp(bson_iter_key(&op), "$in") == 0 && BSON_ITER_HOLDS_ARRAY(&op)) {
                in_list = op;
                use_in = true;
            }
        }
        if (key) {
            size_t slot = index_find(c, key);
            if (slot == SIZE_MAX)
                return 0;
            rc = match_doc(c->docs[slot], filter, err);
            if (rc <= 0)
                return rc;
            rc = visit(c, slot, ctx);
            return rc < 0 ? rc : 0;
        }
        if (use_in) {
            /* Look each listed _id up, then visit in insertion order as a scan would. */
            size_t n = 0, cap = 0, *slots = NULL;
            bson_iter_t e;
            if (bson_iter_recurse(&in_list, &e)) {
                while (bson_iter_next(&e)) {
                    size_t slot = index_find(c, &e);
                    if (slot == SIZE_MAX)
                        continue;
                    if (grow((void **)&slots, &cap, n + 1, sizeof(*slots))) {
                        free(slots);
                        return -ENOMEM;
                    }
                    slots[n++] = slot;
                }
            }
            if (n > 1)
                qsort(slots, n, sizeof(*slots), cmp_size);
            rc = 0;
            for (size_t i = 0; i < n && rc == 0; i++) {
                if (i && slots[i] == slots[i - 1])
                    continue;
                if (!c->docs[slots[i]])
                    continue;
                rc = match_doc(c->docs[slots[i]], filter, err);
                if (rc > 0)
                    rc = visit(c, slots[i], ctx);
            }
            free(slots);
            return rc < 0 ? rc : 0;
        }
    }
    bool empty = !filter || bson_empty(filter);
    for (size_t i = 0; i < c->n_slots; i++) {
        if (!c->docs[i])
            continue;
        if (!empty) {
            rc = match_doc(c->docs[i], filter, err);
            if (rc < 0)
                return rc;
            if (!rc)
                continue;
        }
        rc = visit(c, i, ctx);
        if (rc)
            return rc < 0 ? rc : 0;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sorting                                                                                    */
/* ------------------------------------------------------------------------------------------ */

#define MAX_SORT_KEYS 32

struct sort_spec {
    const char *path[MAX_SORT_KEYS];
    int dir[MAX_SORT_KEYS];
    size_t n;
};

/* An entry being sorted: a document and its original position (the tie-breaker). */
struct sort_item {
    bson_t *doc;
    size_t ord;
    bool owned; /* the item owns doc (aggregation results built by a stage) */
};

/*
 * Parses a sort document ({a: 1, b: -1}) into spec. Returns 0 or a negative value with err
 * filled for a bad direction.
 */
static int parse_sort(const bson_t *sort, struct sort_spec *spec, struct store_error *err)
{
    bson_iter_t it;
    spec->n = 0;
    if (!bson_iter_init(&it, sort))
        return 0;
    while (bson_iter_next(&it)) {
        int64_t d = is_number(&it) ? (int64_t)num_value(&it) : 0;
        if (d != 1 && d != -1)
            return set_err(err, -EINVAL, 15975,
                           "$sort key ordering must be 1 (for ascending) or -1 (for descending)");
        if (spec->n == MAX_SORT_KEYS)
            return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "too many sort keys");
        spec->path[spec->n] = bson_iter_key(&it);
        spec->dir[spec->n] = (int)d;
        spec->n++;
    }
    return 0;
}

/*
 * Finds the sort key of doc at path: the value itself, or for an array its smallest element
 * (ascending) or largest (descending), as MongoDB sorts arrays. Returns false if missing.
 */
static bool sort_value(const bson_t *doc, const char *path, int dir, bson_iter_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, out))
        return false;
    if (BSON_ITER_HOLDS_ARRAY(out)) {
        bson_iter_t e, best;
        bool have = false;
        if (bson_iter_recurse(out, &e)) {
            while (bson_iter_next(&e)) {
                if (!have || store_compare_values(&e, &best) * dir < 0) {
                    best = e;
                    have = true;
                }
            }
        }
        if (have)
            *out = best;
    }
    return true;
}

/* qsort_r comparator for struct sort_item under a struct sort_spec. */
static int cmp_items(const void *pa, const void *pb, void *arg)
{
    const struct sort_item *a = pa, *b = pb;
    const struct sort_spec *spec = arg;
    for (size_t k = 0; k < spec->n; k++) {
        bson_iter_t va, vb;
        bool ha = sort_value(a->doc, spec->path[k], spec->dir[k], &va);
        bool hb = sort_value(b->doc, spec->path[k], spec->dir[k], &vb);
        int c = store_compare_values(ha ? &va : NULL, hb ? &vb : NULL);
        if (c)
            return c * spec->dir[k];
    }
    return a->ord < b->ord ? -1 : a->ord > b->ord;
}

/* Sorts n items by spec, ties kept in their original order. */
static void sort_items(struct sort_item *items, size_t n, struct sort_spec *spec)
{
    for (size_t i = 0; i < n; i++)
        items[i].ord = i;
    if (n > 1 && spec->n)
        qsort_r(items, n, sizeof(*items), cmp_items, spec);
}

/* A growable list of sort items. */
struct item_list {
    struct sort_item *items;
    size_t n, cap;
};

/* Appends a document (owned or borrowed) to l. Returns 0 or -ENOMEM. */
static int items_push(struct item_list *l, bson_t *doc, bool owned)
{
    if (grow((void **)&l->items, &l->cap, l->n + 1, sizeof(*l->items)))
        return -ENOMEM;
    l->items[l->n].doc = doc;
    l->items[l->n].owned = owned;
    l->items[l->n].ord = l->n;
    l->n++;
    return 0;
}

/* Frees the owned documents in items [from, to) of l. */
static void items_release(struct item_list *l, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (l->items[i].owned)
            bson_destroy(l->items[i].doc);
}

/* Frees l and the documents it owns. */
static void items_free(struct item_list *l)
{
    items_release(l, 0, l->n);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* scan() visitor collecting the matching documents (borrowed) into a struct item_list. */
static int collect_visit(struct coll *c, size_t slot, void *ctx)
{
    return items_push(ctx, c->docs[slot], false);
}

/* ------------------------------------------------------------------------------------------ */
/* Projection                                                                                 */
/* ------------------------------------------------------------------------------------------ */

struct projection {
    const bson_t *spec; /* NULL: no projection */
    bool inclusion;     /* true: keep only the listed fields; false: drop them */
    bool id;            /* _id is kept */
};

/* Returns whether a projection value includes its field (1, true, or an expression). */
static bool proj_truthy(const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_BOOL(it) || is_number(it))
        return bson_iter_as_bool(it);
    return true;
}

/*
 * Parses a projection spec (top-level and dotted paths, inclusion or exclusion). Returns 0 or a
 * negative value with err filled for a mixed projection.
 */
static int parse_projection(const bson_t *spec, struct projection *p, struct store_error *err)
{
    memset(p, 0, sizeof(*p));
    p->id = true;
    if (!spec || bson_empty(spec))
        return 0;
    p->spec = spec;
    bson_iter_t it;
    int mode = -1; /* -1 unknown, 1 inclusion, 0 exclusion */
    bson_iter_init(&it, spec);
    while (bson_iter_next(&it)) {
        bool t = proj_truthy(&it);
        if (strcmp(bson_iter_key(&it), "_id") == 0) {
            p->id = t;
            continue;
        }
        if (mode == -1) {
            mode = t;
        } else if (mode != (int)t) {
            return set_err(err, -EINVAL, t ? 31253 : 31254, "Cannot do %s on field %s in %s",
                           t ? "inclusion" : "exclusion", bson_iter_key(&it),
                           t ? "exclusion projection" : "inclusion projection");
        }
    }
    /* {_id: 0} alone is an exclusion; {_id: 1} alone keeps only _id. */
    p->inclusion = mode == 1 || (mode == -1 && p->id);
    return 0;
}

/* Returns 2 if path is listed in the spec, 1 if a dotted key lies below it, else 0. */
static int proj_lookup(const bson_t *spec, const char *path, size_t plen)
{
    bson_iter_t it;
    int found = 0;
    bson_iter_init(&it, spec);
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strncmp(k, path, plen) != 0)
            continue;
        if (k[plen] == '\0')
            return 2;
        if (k[plen] == '.')
            found = 1;
    }
    return found;
}

static void project_into(bson_t *out, bson_iter_t *src, const struct projection *p, char *path,
                         size_t plen, bool top);

/* Projects the embedded document or array src (at path) into out under key. */
static void project_container(bson_t *out, const char *key, bson_iter_t *src,
                              const struct projection *p, char *path, size_t plen)
{
    bson_t child;
    bson_iter_t sub;
    if (!bson_iter_recurse(src, &sub))
        return;
    if (BSON_ITER_HOLDS_DOCUMENT(src)) {
        bson_append_document_begin(out, key, -1, &child);
        project_into(&child, &sub, p, path, plen, false);
        bson_append_document_end(out, &child);
        return;
    }
    /* Arrays are transparent to paths: project each embedded document, keep or drop scalars. */
    bson_append_array_begin(out, key, -1, &child);
    uint32_t i = 0;
    while (bson_iter_next(&sub)) {
        char ik[16];
        const char *kp;
        bson_uint32_to_string(i, &kp, ik, sizeof(ik));
        if (BSON_ITER_HOLDS_DOCUMENT(&sub)) {
            project_container(&child, kp, &sub, p, path, plen);
            i++;
        } else if (!p->inclusion) {
            bson_append_iter(&child, kp, -1, &sub);
            i++;
        }
    }
    bson_append_array_end(out, &child);
}

/* Copies the fields of src (at dotted prefix path[0..plen)) that p keeps into out. */
static void project_into(bson_t *out, bson_iter_t *src, const struct projection *p, char *path,
                         size_t plen, bool top)
{
    while (bson_iter_next(src)) {
        const char *key = bson_iter_key(src);
        size_t klen = strlen(key), nlen = plen ? plen + 1 + klen : klen;
        if (top && strcmp(key, "_id") == 0) {
            if (p->id)
                bson_append_iter(out, key, (int)klen, src);
            continue;
        }
        if (nlen >= 1024) {
            if (!p->inclusion)
                bson_append_iter(out, key, (int)klen, src);
            continue;
        }
        if (plen)
            path[plen] = '.';
        memcpy(path + (plen ? plen + 1 : 0), key, klen + 1);
        int hit = proj_lookup(p->spec, path, nlen);
        if (hit == 2) {
            if (p->inclusion)
                bson_append_iter(out, key, (int)klen, src);
        } else if (hit == 1 && (BSON_ITER_HOLDS_DOCUMENT(src) || BSON_ITER_HOLDS_ARRAY(src))) {
            project_container(out, key, src, p, path, nlen);
        } else if (!p->inclusion) {
            bson_append_iter(out, key, (int)klen, src);
        }
        path[plen] = '\0';
    }
}

/* Returns a new document: doc as projected by p (a plain copy without projection). */
static bson_t *project(const bson_t *doc, const struct projection *p)
{
    if (!p->spec)
        return bson_copy(doc);
    bson_t *out = bson_new();
    bson_iter_t it;
    char path[1024];
    path[0] = '\0';
    if (bson_iter_init(&it, doc))
        project_into(out, &it, p, path, 0, true);
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Update operators                                                                           */
/* ------------------------------------------------------------------------------------------ */

enum uop_kind { U_SET, U_UNSET, U_INC, U_MUL, U_MIN, U_MAX, U_PUSH, U_ADD_TO_SET };

/* One field assignment of an update: {$inc: {"a.b": 2}} gives {"a.b", U_INC, 2}. */
struct uop {
    const char *path;
    enum uop_kind kind;
    bson_iter_t val;
};

struct uops {
    struct uop *ops;
    size_t n, cap;
};

/* The state of applying an update to one document (for error messages). */
struct uctx {
    const bson_t *doc; /* the original document, NULL for an upsert */
    struct store_error *err;
};

/* Orders update operations by path (for qsort): MongoDB 5.0+ applies fields in that order. */
static int cmp_uop(const void *a, const void *b)
{
    return strcmp(((const struct uop *)a)->path, ((const struct uop *)b)->path);
}

/* Returns true if path a equals b or one is a dotted prefix of the other. */
static bool paths_conflict(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), n = la < lb ? la : lb;
    if (strncmp(a, b, n) != 0)
        return false;
    return la == lb || (la < lb ? b[n] == '.' : a[n] == '.');
}

/*
 * Parses an operator-style update document into ops. $setOnInsert counts only when inserting.
 * Returns 0, or a negative value with err filled (unknown modifier, non-document operand,
 * non-numeric $inc, conflicting paths).
 */
static int parse_update(const bson_t *u, bool inserting, struct uops *ops, struct store_error *err)
{
    bson_iter_t it;
    ops->n = 0;
    bson_iter_init(&it, u);
    while (bson_iter_next(&it)) {
        const char *name = bson_iter_key(&it);
        enum uop_kind kind;
        bool skip = false;
        if (strcmp(name, "$set") == 0)
            kind = U_SET;
        else if (strcmp(name, "$setOnInsert") == 0)
            kind = U_SET, skip = !inserting;
        else if (strcmp(name, "$unset") == 0)
            kind = U_UNSET;
        else if (strcmp(name, "$inc") == 0)
            kind = U_INC;
        else if (strcmp(name, "$mul") == 0)
            kind = U_MUL;
        else if (strcmp(name, "$min") == 0)
            kind = U_MIN;
        else if (strcmp(name, "$max") == 0)
            kind = U_MAX;
        else if (strcmp(name, "$push") == 0)
            kind = U_PUSH;
        else if (strcmp(name, "$addToSet") == 0)
            kind = U_ADD_TO_SET;
        else
            return set_err(err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                           "Unknown modifier: %s. Expected a valid update modifier or "
                           "pipeline-style update specified as an array",
                           name);
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            return set_err(err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                           "Modifiers operate on fields but we found type %s instead. For "
                           "example: {$mod: {<field>: ...}} not {%s: ...}",
                           type_name(bson_iter_type(&it)), name);
        bson_iter_t f;
        bson_iter_recurse(&it, &f);
        while (bson_iter_next(&f)) {
            if ((kind == U_INC || kind == U_MUL) && !is_number(&f)) {
                char v[128];
                fmt_value(&f, v, sizeof(v));
                return set_err(err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                               "Cannot %s with non-numeric argument: {%s: %s}",
                               kind == U_INC ? "increment" : "multiply", bson_iter_key(&f), v);
            }
            if (bson_iter_key(&f)[0] == '\0')
                return set_err(err, -EINVAL, 56, "An empty update path is not valid.");
            if (skip)
                continue;
            if (grow((void **)&ops->ops, &ops->cap, ops->n + 1, sizeof(*ops->ops)))
                return -ENOMEM;
            ops->ops[ops->n].path = bson_iter_key(&f);
            ops->ops[ops->n].kind = kind;
            ops->ops[ops->n].val = f;
            ops->n++;
        }
    }
    for (size_t i = 0; i < ops->n; i++)
        for (size_t j = i + 1; j < ops->n; j++)
            if (paths_conflict(ops->ops[i].path, ops->ops[j].path))
                return set_err(err, -EINVAL, STORE_ERR_CONFLICTING_UPDATE_OPS,
                               "Updating the path '%s' would create a conflict at '%s'",
                               ops->ops[j].path, ops->ops[i].path);
    if (ops->n > 1)
        qsort(ops->ops, ops->n, sizeof(*ops->ops), cmp_uop);
    return 0;
}

/* Formats the document's _id for error messages ("{_id: 1}"). */
static void fmt_doc_id(const bson_t *doc, char *buf, size_t len)
{
    bson_iter_t id;
    char v[160];
    if (doc && doc_id(doc, &id))
        fmt_value(&id, v, sizeof(v));
    else
        snprintf(v, sizeof(v), "null");
    snprintf(buf, len, "{_id: %s}", v);
}

/* Appends a + b (or a * b) with MongoDB's numeric type promotion. Returns 0 or an error. */
static int append_arith(bson_t *out, const char *key, const bson_iter_t *a, const bson_iter_t *b,
                        bool mul, struct uctx *u)
{
    bson_type_t ta = bson_iter_type(a), tb = bson_iter_type(b);
    if (is_integer_type(ta) && is_integer_type(tb)) {
        int64_t x = bson_iter_as_int64(a), y = bson_iter_as_int64(b), r;
        bool ovf = mul ? __builtin_mul_overflow(x, y, &r) : __builtin_add_overflow(x, y, &r);
        if (ovf) {
            char id[200];
            fmt_doc_id(u->doc, id, sizeof(id));
            return set_err(u->err, -EINVAL, STORE_ERR_BAD_VALUE,
                           "Failed to apply $%s operations to current value for document %s",
                           mul ? "mul" : "inc", id);
        }
        if (ta == BSON_TYPE_INT32 && tb == BSON_TYPE_INT32 && r >= INT32_MIN && r <= INT32_MAX)
            bson_append_int32(out, key, -1, (int32_t)r);
        else
            bson_append_int64(out, key, -1, r);
        return 0;
    }
    long double x = num_value(a), y = num_value(b);
    bson_append_double(out, key, -1, (double)(mul ? x * y : x + y));
    return 0;
}

/* Appends the elements of array it (may be NULL) to arr, numbering from *n. */
static void append_elements(bson_t *arr, const bson_iter_t *it, uint32_t *n)
{
    bson_iter_t e;
    if (!it || !bson_iter_recurse(it, &e))
        return;
    while (bson_iter_next(&e)) {
        char ik[16];
        const char *kp;
        bson_uint32_to_string((*n)++, &kp, ik, sizeof(ik));
        bson_append_iter(arr, kp, -1, &e);
    }
}

/* Appends the result of $push / $addToSet of op onto cur (NULL if missing) as key. */
static int append_push(bson_t *out, const char *key, const bson_iter_t *cur, const struct uop *op,
                       struct uctx *u)
{
    if (cur && !BSON_ITER_HOLDS_ARRAY(cur)) {
        char id[200];
        fmt_doc_id(u->doc, id, sizeof(id));
        return set_err(u->err, -EINVAL, STORE_ERR_BAD_VALUE,
                       "The field '%s' must be an array but is of type %s in document %s", op->path,
                       type_name(bson_iter_type(cur)), id);
    }
    bson_t arr;
    uint32_t n = 0;
    bson_append_array_begin(out, key, -1, &arr);
    append_elements(&arr, cur, &n);
    /* {$each: [...]} adds several values; anything else adds the value itself. */
    bson_iter_t each, e;
    bool has_each = BSON_ITER_HOLDS_DOCUMENT(&op->val) && bson_iter_recurse(&op->val, &each) &&
                    bson_iter_find(&each, "$each") && BSON_ITER_HOLDS_ARRAY(&each);
    bson_iter_t single = op->val;
    bool more = true;
    if (has_each)
        more = bson_iter_recurse(&each, &e) && bson_iter_next(&e);
    else
        e = single;
    while (more) {
        bool dup = false;
        if (op->kind == U_ADD_TO_SET) {
            /* Compare against what is already in the output (old elements and added ones). */
            bson_iter_t done;
            bson_iter_init(&done, &arr);
            while (!dup && bson_iter_next(&done))
                dup = store_compare_values(&done, &e) == 0;
        }
        if (!dup) {
            char ik[16];
            const char *kp;
            bson_uint32_to_string(n++, &kp, ik, sizeof(ik));
            bson_append_iter(&arr, kp, -1, &e);
        }
        more = has_each && bson_iter_next(&e);
    }
    bson_append_array_end(out, &arr);
    return 0;
}

/* Appends the new value of field key (current value cur, NULL if missing) after op. */
static int apply_leaf(bson_t *out, const char *key, const bson_iter_t *cur, const struct uop *op,
                      struct uctx *u)
{
    switch (op->kind) {
    case U_SET:
        bson_append_iter(out, key, -1, &op->val);
        return 0;
    case U_UNSET:
        return 0;
    case U_INC:
    case U_MUL:
        if (!cur) {
            if (op->kind == U_INC) {
                bson_append_iter(out, key, -1, &op->val);
            } else {
                /* $mul on a missing field sets 0 of the operand's type. */
                bson_t zero = BSON_INITIALIZER;
                bson_iter_t z;
                bson_append_int32(&zero, "z", 1, 0);
                bson_iter_init_find(&z, &zero, "z");
                append_arith(out, key, &z, &op->val, true, u);
                bson_destroy(&zero);
            }
            return 0;
        }
        if (!is_number(cur)) {
            char id[200];
            fmt_doc_id(u->doc, id, sizeof(id));
            return set_err(u->err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                           "Cannot apply %s to a value of non-numeric type. %s has the field '%s' "
                           "of non-numeric type %s",
                           op->kind == U_INC ? "$inc" : "$mul", id, key,
                           type_name(bson_iter_type(cur)));
        }
        return append_arith(out, key, cur, &op->val, op->kind == U_MUL, u);
    case U_MIN:
    case U_MAX: {
        int c = cur ? store_compare_values(&op->val, cur) : 0;
        bool take = !cur || (op->kind == U_MIN ? c < 0 : c > 0);
        bson_append_iter(out, key, -1, take ? &op->val : cur);
        return 0;
    }
    case U_PUSH:
    case U_ADD_TO_SET:
        return append_push(out, key, cur, op, u);
    }
    return 0;
}

/* Returns true if some op's path lies strictly below prefix (prefix + "." + ...). */
static bool ops_below(const struct uops *ops, const char *prefix, size_t plen, bool creating)
{
    for (size_t i = 0; i < ops->n; i++) {
        const char *p = ops->ops[i].path;
        if (strncmp(p, prefix, plen) == 0 && p[plen] == '.' &&
            (!creating || ops->ops[i].kind != U_UNSET))
            return true;
    }
    return false;
}

/* Returns the op whose path is exactly path[0..plen), or NULL. */
static const struct uop *op_at(const struct uops *ops, const char *path, size_t plen)
{
    for (size_t i = 0; i < ops->n; i++)
        if (strncmp(ops->ops[i].path, path, plen) == 0 && ops->ops[i].path[plen] == '\0')
            return &ops->ops[i];
    return NULL;
}

/*
 * Writes into out the fields of the container that src iterates (NULL: a container being
 * created), at dotted prefix path[0..plen), with ops applied: existing fields in their order,
 * then fields the ops create, in path order. Returns 0 or a negative value with u->err filled.
 */
static int apply_into(bson_t *out, const bson_iter_t *src, char *path, size_t plen,
                      const struct uops *ops, struct uctx *u)
{
    bson_iter_t it;
    int rc;
    if (src) {
        it = *src;
        while (bson_iter_next(&it)) {
            const char *key = bson_iter_key(&it);
            size_t klen = strlen(key), nlen = plen ? plen + 1 + klen : klen;
            if (nlen >= 1024) {
                bson_append_iter(out, key, (int)klen, &it);
                continue;
            }
            if (plen)
                path[plen] = '.';
            memcpy(path + (plen ? plen + 1 : 0), key, klen + 1);
            const struct uop *op = op_at(ops, path, nlen);
            rc = 0;
            if (op) {
                rc = apply_leaf(out, key, &it, op, u);
            } else if (ops_below(ops, path, nlen, false)) {
                bson_t child;
                bson_iter_t sub;
                if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
                    bson_iter_recurse(&it, &sub);
                    if (BSON_ITER_HOLDS_DOCUMENT(&it))
                        bson_append_document_begin(out, key, (int)klen, &child);
                    else
                        bson_append_array_begin(out, key, (int)klen, &child);
                    rc = apply_into(&child, &sub, path, nlen, ops, u);
                    if (BSON_ITER_HOLDS_DOCUMENT(&it))
                        bson_append_document_end(out, &child);
                    else
                        bson_append_array_end(out, &child);
                } else if (ops_below(ops, path, nlen, true)) {
                    char v[128];
                    fmt_value(&it, v, sizeof(v));
                    rc = set_err(u->err, -EINVAL, 28, "Cannot create field in element {%s: %s}",
                                 key, v);
                } else {
                    bson_append_iter(out, key, (int)klen, &it);
                }
            } else {
                bson_append_iter(out, key, (int)klen, &it);
            }
            path[plen] = '\0';
            if (rc)
                return rc;
        }
    }
    /* Fields the ops create: one per distinct next path component not present in src. */
    const char *last = NULL;
    size_t last_len = 0;
    for (size_t i = 0; i < ops->n; i++) {
        const char *p = ops->ops[i].path;
        if (plen && (strncmp(p, path, plen) != 0 || p[plen] != '.'))
            continue;
        const char *comp = plen ? p + plen + 1 : p;
        const char *dot = strchr(comp, '.');
        size_t clen = dot ? (size_t)(dot - comp) : strlen(comp);
        if (last && clen == last_len && strncmp(comp, last, clen) == 0)
            continue;
        last = comp;
        last_len = clen;
        bson_iter_t probe;
        if (src) {
            probe = *src;
            if (bson_iter_find_w_len(&probe, comp, (int)clen))
                continue;
        }
        size_t nlen = (size_t)(comp - p) + clen;
        if (nlen >= 1024)
            continue;
        char key[1024];
        memcpy(key, comp, clen);
        key[clen] = '\0';
        if (!dot) {
            rc = apply_leaf(out, key, NULL, &ops->ops[i], u);
        } else {
            memcpy(path, p, nlen);
            path[nlen] = '\0';
            rc = 0;
            if (ops_below(ops, path, nlen, true)) {
                bson_t child;
                bson_append_document_begin(out, key, (int)clen, &child);
                rc = apply_into(&child, NULL, path, nlen, ops, u);
                bson_append_document_end(out, &child);
            }
            path[plen] = '\0';
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Builds into out (initialised empty) doc with ops applied. Returns 0 or an error. */
static int apply_update(const bson_t *doc, const struct uops *ops, bson_t *out,
                        struct store_error *err)
{
    struct uctx u = {doc, err};
    char path[1024];
    path[0] = '\0';
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        return set_err(err, -EINVAL, STORE_ERR_BAD_VALUE, "corrupt document");
    return apply_into(out, &it, path, 0, ops, &u);
}

/*
 * Returns a new document with _id first: id if given, else doc's own _id, else a fresh
 * ObjectId; then every other field of doc in order. NULL only if memory is exhausted.
 */
static bson_t *with_id_first(const bson_t *doc, const bson_iter_t *id)
{
    bson_t *out = bson_new();
    bson_iter_t it, own;
    if (!id && bson_iter_init_find(&own, doc, "_id"))
        id = &own;
    if (id) {
        bson_append_iter(out, "_id", 3, id);
    } else {
        bson_oid_t oid;
        bson_oid_init(&oid, NULL);
        bson_append_oid(out, "_id", 3, &oid);
    }
    if (bson_iter_init(&it, doc))
        while (bson_iter_next(&it))
            if (strcmp(bson_iter_key(&it), "_id") != 0)
                bson_append_iter(out, bson_iter_key(&it), -1, &it);
    return out;
}

/* Returns true if u is an operator update ({$set: ...}) rather than a replacement document. */
static bool is_operator_update(const bson_t *u)
{
    bson_iter_t it;
    return bson_iter_init(&it, u) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$';
}

/*
 * Computes the new image of doc under update u (operators or replacement) into *out (a new
 * document). Changing _id is refused with ImmutableField. Returns 0 or an error.
 */
static int update_doc(const bson_t *doc, const bson_t *u, struct uops *ops, bson_t **out,
                      struct store_error *err)
{
    bson_iter_t old_id, new_id;
    bool had_id = doc_id(doc, &old_id);
    *out = NULL;
    if (!is_operator_update(u)) {
        if (bson_iter_init_find(&new_id, u, "_id") && had_id &&
            store_compare_values(&new_id, &old_id) != 0) {
            char v[160];
            fmt_value(&new_id, v, sizeof(v));
            return set_err(err, -EINVAL, STORE_ERR_IMMUTABLE_FIELD,
                           "After applying the update, the (immutable) field '_id' was found to "
                           "have been altered to _id: %s",
                           v);
        }
        *out = with_id_first(u, had_id ? &old_id : NULL);
        return 0;
    }
    int rc = parse_update(u, false, ops, err);
    if (rc)
        return rc;
    bson_t *nd = bson_new();
    rc = apply_update(doc, ops, nd, err);
    if (!rc && had_id &&
        (!doc_id(nd, &new_id) || store_compare_values(&new_id, &old_id) != 0 ||
         bson_iter_type(&new_id) != bson_iter_type(&old_id))) {
        rc = set_err(err, -EINVAL, STORE_ERR_IMMUTABLE_FIELD,
                     "Performing an update on the path '_id' would modify the immutable field "
                     "'_id'");
    }
    if (rc) {
        bson_destroy(nd);
        return rc;
    }
    *out = nd;
    return 0;
}

/*
 * Adds to ops a $set for every equality in query (top-level fields, {$eq: v}, and inside $and),
 * which is what an upsert copies from its query.
 */
static int query_equalities(const bson_t *q, struct uops *ops)
{
    bson_iter_t it;
    if (!q || !bson_iter_init(&it, q))
        return 0;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        bson_iter_t val = it;
        if (strcmp(key, "$and") == 0 && BSON_ITER_HOLDS_ARRAY(&it)) {
            bson_iter_t e;
            bson_iter_recurse(&it, &e);
            while (bson_iter_next(&e)) {
                bson_t sub;
                if (iter_doc_view(&e, &sub) && BSON_ITER_HOLDS_DOCUMENT(&e)) {
                    int rc = query_equalities(&sub, ops);
                    if (rc)
                        return rc;
                }
            }
            continue;
        }
        if (key[0] == '$' || BSON_ITER_HOLDS_REGEX(&it))
            continue;
        if (is_operator_doc(&it)) {
            bson_iter_t o;
            if (!bson_iter_recurse(&it, &o) || !bson_iter_find(&o, "$eq"))
                continue;
            val = o;
        }
        bool dup = false;
        for (size_t i = 0; i < ops->n && !dup; i++)
            dup = paths_conflict(ops->ops[i].path, key);
        if (dup)
            continue;
        if (grow((void **)&ops->ops, &ops->cap, ops->n + 1, sizeof(*ops->ops)))
            return -ENOMEM;
        ops->ops[ops->n].path = key;
        ops->ops[ops->n].kind = U_SET;
        ops->ops[ops->n].val = val;
        ops->n++;
    }
    return 0;
}

/*
 * Builds the document an upsert inserts from query q and update u into *out (_id first: from
 * the query or replacement, else a new ObjectId). Returns 0 or an error.
 */
static int upsert_doc(const bson_t *q, const bson_t *u, struct uops *ops, bson_t **out,
                      struct store_error *err)
{
    *out = NULL;
    ops->n = 0;
    int rc = query_equalities(q, ops);
    if (rc)
        return rc;
    if (ops->n > 1)
        qsort(ops->ops, ops->n, sizeof(*ops->ops), cmp_uop);
    bson_t empty = BSON_INITIALIZER, *base = bson_new();
    rc = apply_update(&empty, ops, base, err);
    bson_destroy(&empty);
    if (rc) {
        bson_destroy(base);
        return rc;
    }
    bson_t *doc;
    if (!is_operator_update(u)) {
        bson_iter_t qid, rid;
        bool has_q = bson_iter_init_find(&qid, base, "_id");
        bool has_r = bson_iter_init_find(&rid, u, "_id");
        if (has_q && has_r && store_compare_values(&qid, &rid) != 0) {
            bson_destroy(base);
            return set_err(err, -EINVAL, STORE_ERR_IMMUTABLE_FIELD,
                           "After applying the update, the (immutable) field '_id' was found to "
                           "have been altered to _id");
        }
        doc = with_id_first(u, has_r ? &rid : has_q ? &qid : NULL);
    } else {
        rc = parse_update(u, true, ops, err);
        bson_t *applied = NULL;
        if (!rc) {
            struct uctx uc = {NULL, err};
            char path[1024];
            bson_iter_t it;
            path[0] = '\0';
            applied = bson_new();
            bson_iter_init(&it, base);
            rc = apply_into(applied, &it, path, 0, ops, &uc);
        }
        if (rc) {
            if (applied)
                bson_destroy(applied);
            bson_destroy(base);
            return rc;
        }
        doc = with_id_first(applied, NULL);
        bson_destroy(applied);
    }
    bson_destroy(base);
    *out = doc;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Commands                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Everything a command handler needs. */
struct cmd_ctx {
    struct store *s;
    const char *db;
    const char *name; /* the command name as sent */
    const bson_t *cmd;
    const bson_t *const *seq;
    size_t n_seq;
    bson_t *reply;
    struct store_results *res;
    bool *is_cursor;
    char *ns;
    size_t ns_len;
    struct store_txn *txn;
    struct store_error *err;
    const char *coll; /* the collection named by the command's first field, if a string */
};

/*
 * Records a change for replication: in the transaction until it commits, or else in the store's
 * oplog with the current time. Nothing when the store keeps no oplog (no replication, or a
 * secondary's copy, which only applies). doc is copied. Returns 0 or -ENOMEM.
 */
static int repl_record(struct cmd_ctx *x, enum oplog_kind kind, const char *coll, const bson_t *doc,
                       const uint8_t *uuid)
{
    struct store_oplog *log = x->s->oplog;
    if (!log)
        return 0;
    if (x->txn)
        return entries_push(&x->txn->redo, kind, x->db, coll, doc, uuid, 0);
    return entries_push(&log->list, kind, x->db, coll, doc, uuid, oplog_now(log));
}

/* Takes back the change repl_record just recorded, when the write itself then failed. */
static void repl_unrecord(struct cmd_ctx *x)
{
    if (!x->s->oplog)
        return;
    struct entry_list *l = x->txn ? &x->txn->redo : &x->s->oplog->list;
    if (l->n)
        entry_free(&l->e[--l->n]);
}

/*
 * Checks that the command's first field names a valid collection and stores it in x->coll.
 * Returns 0 or an InvalidNamespace error.
 */
static int need_coll(struct cmd_ctx *x)
{
    bson_iter_t it;
    bson_iter_init(&it, x->cmd);
    bson_iter_next(&it);
    if (!BSON_ITER_HOLDS_UTF8(&it))
        return set_err(x->err, -EINVAL, STORE_ERR_INVALID_NAMESPACE,
                       "collection name has invalid type %s", type_name(bson_iter_type(&it)));
    uint32_t len;
    const char *name = bson_iter_utf8(&it, &len);
    if (len == 0 || strlen(name) != len || strchr(name, '$') || x->db[0] == '\0')
        return set_err(x->err, -EINVAL, STORE_ERR_INVALID_NAMESPACE,
                       "Invalid namespace specified '%s.%s'", x->db, name);
    x->coll = name;
    return 0;
}

/* Writes "db.coll" (or another cursor namespace) into the caller's ns buffer. */
static void set_cursor_ns(struct cmd_ctx *x, const char *suffix)
{
    *x->is_cursor = true;
    if (x->ns && x->ns_len)
        snprintf(x->ns, x->ns_len, "%s.%s", x->db, suffix);
}

/* Returns db.coll, creating it (recorded in the transaction) if needed; NULL on ENOMEM. */
static struct coll *coll_get_or_create(struct cmd_ctx *x, int *rc)
{
    struct coll *c = coll_find(x->s, x->db, x->coll);
    *rc = 0;
    if (c)
        return c;
    c = coll_create(x->s, x->db, x->coll);
    if (!c) {
        *rc = -ENOMEM;
        return NULL;
    }
    *rc = txn_record(x->txn, UNDO_CREATE, x->db, x->coll, NULL);
    if (!*rc)
        *rc = repl_record(x, OPLOG_CREATE, x->coll, NULL, c->uuid);
    return c;
}

/* The statements of a write: the body array, then the kind-1 sequence documents. */
struct stmt_list {
    bson_t *body;
    size_t n_body;
    const bson_t *const *seq;
    size_t n_seq;
};

/* Returns statement i of l. */
static const bson_t *stmt_at(const struct stmt_list *l, size_t i)
{
    return i < l->n_body ? &l->body[i] : l->seq[i - l->n_body];
}

/*
 * Collects the statements of field `field` (documents, updates, deletes) from the body and the
 * sequence. Returns 0 or an error (non-array field, non-document element, no statement at all).
 */
static int stmts_init(struct cmd_ctx *x, const char *field, struct stmt_list *l)
{
    bson_iter_t it, e;
    memset(l, 0, sizeof(*l));
    l->seq = x->seq;
    l->n_seq = x->seq ? x->n_seq : 0;
    if (find_field(x->cmd, field, &it)) {
        if (!BSON_ITER_HOLDS_ARRAY(&it))
            return set_err(x->err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                           "BSON field '%s.%s' is the wrong type '%s', expected type 'array'",
                           x->name, field, type_name(bson_iter_type(&it)));
        size_t n = 0;
        bson_iter_recurse(&it, &e);
        while (bson_iter_next(&e))
            n++;
        if (n) {
            l->body = calloc(n, sizeof(*l->body));
            if (!l->body)
                return -ENOMEM;
        }
        bson_iter_recurse(&it, &e);
        while (bson_iter_next(&e)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&e) || !iter_doc_view(&e, &l->body[l->n_body])) {
                free(l->body);
                l->body = NULL;
                return set_err(x->err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                               "BSON field '%s.%s.%zu' is the wrong type '%s', expected type "
                               "'object'",
                               x->name, field, l->n_body, type_name(bson_iter_type(&e)));
            }
            l->n_body++;
        }
    }
    if (l->n_body + l->n_seq == 0)
        return set_err(x->err, -EINVAL, 16,
                       "Write batch sizes must be between 1 and 100000. Got 0 operations.");
    return 0;
}

/* Appends one writeErrors entry {index, code, errmsg} to the array we. */
static void write_error(bson_t *we, uint32_t *n_we, size_t index, const struct store_error *e)
{
    bson_t d;
    char ik[16];
    const char *kp;
    bson_uint32_to_string((*n_we)++, &kp, ik, sizeof(ik));
    bson_append_document_begin(we, kp, -1, &d);
    BSON_APPEND_INT32(&d, "index", (int32_t)index);
    BSON_APPEND_INT32(&d, "code", e->code);
    BSON_APPEND_UTF8(&d, "errmsg", e->errmsg);
    bson_append_document_end(we, &d);
}

/* Fills e with the duplicate key error for _id value id in x's collection. */
static void dup_key_error(struct cmd_ctx *x, const bson_iter_t *id, struct store_error *e)
{
    char v[200];
    fmt_value(id, v, sizeof(v));
    set_err(e, -EEXIST, STORE_ERR_DUPLICATE_KEY,
            "E11000 duplicate key error collection: %s.%s index: _id_ dup key: { _id: %s }", x->db,
            x->coll, v);
}

/*
 * Inserts doc (a new document with _id first, ownership passes) into c, unless its _id is taken
 * or invalid. Records the undo entry. Returns 0, or a negative value with e filled.
 */
static int insert_one(struct cmd_ctx *x, struct coll *c, bson_t *doc, struct store_error *e)
{
    bson_iter_t id;
    if (!doc_id(doc, &id)) {
        bson_destroy(doc);
        return set_err(e, -EINVAL, STORE_ERR_BAD_VALUE, "document has no _id");
    }
    bson_type_t t = bson_iter_type(&id);
    if (t == BSON_TYPE_ARRAY || t == BSON_TYPE_REGEX || t == BSON_TYPE_UNDEFINED) {
        bson_destroy(doc);
        return set_err(e, -EINVAL, 53, "The '_id' value cannot be of type %s", type_name(t));
    }
    if (index_find(c, &id) != SIZE_MAX) {
        dup_key_error(x, &id, e);
        bson_destroy(doc);
        return -EEXIST;
    }
    int rc = txn_record_insert(x->txn, x->db, x->coll, doc);
    if (!rc)
        rc = repl_record(x, OPLOG_INSERT, x->coll, doc, NULL);
    if (!rc) {
        rc = coll_append(c, doc);
        if (rc)
            repl_unrecord(x);
    }
    if (rc) {
        bson_destroy(doc);
        return set_err(e, rc, 1, "out of memory");
    }
    return 0;
}

/* insert: {insert: coll, documents: [...], ordered} -> {n, writeErrors?}. */
static int cmd_insert(struct cmd_ctx *x)
{
    struct stmt_list l;
    int rc = need_coll(x);
    if (rc || (rc = stmts_init(x, "documents", &l)))
        return rc;
    bool ordered = get_bool(x->cmd, "ordered", true);
    struct coll *c = coll_get_or_create(x, &rc);
    if (!c) {
        free(l.body);
        return set_err(x->err, rc, 1, "out of memory");
    }
    bson_t we = BSON_INITIALIZER;
    uint32_t n_we = 0;
    int32_t n = 0;
    for (size_t i = 0; i < l.n_body + l.n_seq; i++) {
        const bson_t *src = stmt_at(&l, i);
        bson_iter_t first;
        bson_t *doc;
        /* Stored documents always start with _id, which the index relies on. */
        if (bson_iter_init(&first, src) && bson_iter_next(&first) &&
            strcmp(bson_iter_key(&first), "_id") == 0)
            doc = bson_copy(src);
        else
            doc = with_id_first(src, NULL);
        struct store_error e;
        memset(&e, 0, sizeof(e));
        if (insert_one(x, c, doc, &e) == 0) {
            n++;
            continue;
        }
        write_error(&we, &n_we, i, &e);
        if (ordered)
            break;
    }
    free(l.body);
    BSON_APPEND_INT32(x->reply, "n", n);
    if (n_we)
        BSON_APPEND_ARRAY(x->reply, "writeErrors", &we);
    bson_destroy(&we);
    return 0;
}

/* State of a find-like scan that copies results with skip and limit. */
struct find_state {
    struct store_results *res;
    const struct projection *proj;
    int64_t skip, limit; /* limit 0: none */
    int64_t seen;
};

/* scan() visitor for unsorted finds: skip, copy (projected), stop at the limit. */
static int find_visit(struct coll *c, size_t slot, void *ctx)
{
    struct find_state *f = ctx;
    if (f->seen++ < f->skip)
        return 0;
    int rc = results_push(f->res, project(c->docs[slot], f->proj));
    if (rc)
        return rc;
    return f->limit && (int64_t)f->res->n >= f->limit ? 1 : 0;
}

/*
 * Runs a query with optional sort, skip, limit and projection, copying results into res.
 * Without sort the scan stops at the limit; with sort all matches are sorted first.
 */
static int run_query(struct cmd_ctx *x, struct coll *c, const bson_t *filter, const bson_t *sort,
                     const struct projection *proj, int64_t skip, int64_t limit,
                     struct store_results *res)
{
    struct sort_spec spec = {.n = 0};
    int rc;
    if (sort && (rc = parse_sort(sort, &spec, x->err)))
        return rc;
    if (!spec.n) {
        struct find_state f = {res, proj, skip, limit, 0};
        return scan(c, filter, find_visit, &f, x->err);
    }
    struct item_list l = {0};
    rc = scan(c, filter, collect_visit, &l, x->err);
    if (!rc) {
        sort_items(l.items, l.n, &spec);
        for (size_t i = (size_t)skip; i < l.n && !rc; i++) {
            if (limit && (int64_t)(i - (size_t)skip) >= limit)
                break;
            rc = results_push(res, project(l.items[i].doc, proj));
        }
    }
    items_free(&l);
    return rc;
}

/* Reads skip (>= 0) and limit (negative means its absolute value) of a command. */
static int get_skip_limit(struct cmd_ctx *x, const char *skip_key, int64_t *skip, int64_t *limit)
{
    int rc;
    *skip = 0;
    *limit = 0;
    if ((rc = get_int64(x->cmd, x->name, skip_key, skip, x->err)) < 0 ||
        (rc = get_int64(x->cmd, x->name, "limit", limit, x->err)) < 0)
        return rc;
    if (*skip < 0)
        return set_err(x->err, -EINVAL, 51024,
                       "BSON field 'skip' value must be >= 0, actual value '%" PRId64 "'", *skip);
    if (*limit < 0)
        *limit = *limit == INT64_MIN ? INT64_MAX : -*limit;
    return 0;
}

/* find: {find: coll, filter, sort, projection, skip, limit} -> all results into x->res. */
static int cmd_find(struct cmd_ctx *x)
{
    bson_t filter, sort, pspec;
    int hf, hs, hp, rc = need_coll(x);
    int64_t skip, limit;
    struct projection proj;
    if (rc || (hf = get_doc(x->cmd, x->name, "filter", &filter, x->err)) < 0 ||
        (hs = get_doc(x->cmd, x->name, "sort", &sort, x->err)) < 0 ||
        (hp = get_doc(x->cmd, x->name, "projection", &pspec, x->err)) < 0 ||
        (rc = get_skip_limit(x, "skip", &skip, &limit)) ||
        (rc = parse_projection(hp ? &pspec : NULL, &proj, x->err)))
        return rc ? rc : -EINVAL;
    set_cursor_ns(x, x->coll);
    struct coll *c = coll_find(x->s, x->db, x->coll);
    return run_query(x, c, hf ? &filter : NULL, hs ? &sort : NULL, &proj, skip, limit, x->res);
}

/* scan() visitor counting matches (with skip/limit). */
static int count_visit(struct coll *c, size_t slot, void *ctx)
{
    (void)c;
    (void)slot;
    struct find_state *f = ctx;
    f->seen++;
    return f->limit && f->seen >= f->skip + f->limit ? 1 : 0;
}

/* count: {count: coll, query, skip, limit} -> {n}. O(1) without a query. */
static int cmd_count(struct cmd_ctx *x)
{
    bson_t q;
    int hq, rc = need_coll(x);
    int64_t skip, limit;
    if (rc || (hq = get_doc(x->cmd, x->name, "query", &q, x->err)) < 0 ||
        (rc = get_skip_limit(x, "skip", &skip, &limit)))
        return rc ? rc : -EINVAL;
    struct coll *c = coll_find(x->s, x->db, x->coll);
    int64_t n;
    if (!hq || bson_empty(&q)) {
        n = c ? (int64_t)c->n_live : 0;
    } else {
        struct find_state f = {NULL, NULL, skip, limit, 0};
        if ((rc = scan(c, &q, count_visit, &f, x->err)))
            return rc;
        n = f.seen;
    }
    n = n > skip ? n - skip : 0;
    if (limit && n > limit)
        n = limit;
    if (n <= INT32_MAX)
        BSON_APPEND_INT32(x->reply, "n", (int32_t)n);
    else
        BSON_APPEND_INT64(x->reply, "n", n);
    return 0;
}

/* A growable list of value iterators (for distinct). */
struct value_list {
    bson_iter_t *v;
    size_t n, cap;
    const char *key;
};

/* Orders iterators by store_compare_values (for qsort). */
static int cmp_values(const void *a, const void *b)
{
    return store_compare_values(a, b);
}

/* scan() visitor collecting the values at key (array elements unwound). */
static int distinct_visit(struct coll *c, size_t slot, void *ctx)
{
    struct value_list *l = ctx;
    bson_iter_t it, v;
    if (!bson_iter_init(&it, c->docs[slot]) || !bson_iter_find_descendant(&it, l->key, &v))
        return 0;
    bson_iter_t e = v;
    bool arr = BSON_ITER_HOLDS_ARRAY(&v) && bson_iter_recurse(&v, &e);
    while (!arr || bson_iter_next(&e)) {
        if (grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v)))
            return -ENOMEM;
        l->v[l->n++] = e;
        if (!arr)
            break;
    }
    return 0;
}

/* distinct: {distinct: coll, key, query} -> {values: [...]}, sorted and deduplicated. */
static int cmd_distinct(struct cmd_ctx *x)
{
    bson_t q;
    bson_iter_t k;
    int hq, rc = need_coll(x);
    if (rc || (hq = get_doc(x->cmd, x->name, "query", &q, x->err)) < 0)
        return rc ? rc : -EINVAL;
    if (!find_field(x->cmd, "key", &k) || !BSON_ITER_HOLDS_UTF8(&k))
        return set_err(x->err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                       "BSON field 'distinct.key' is missing or is not a string");
    struct value_list l = {NULL, 0, 0, bson_iter_utf8(&k, NULL)};
    struct coll *c = coll_find(x->s, x->db, x->coll);
    rc = scan(c, hq ? &q : NULL, distinct_visit, &l, x->err);
    if (!rc) {
        if (l.n > 1)
            qsort(l.v, l.n, sizeof(*l.v), cmp_values);
        bson_t arr;
        uint32_t n = 0;
        BSON_APPEND_ARRAY_BEGIN(x->reply, "values", &arr);
        for (size_t i = 0; i < l.n; i++) {
            if (i && store_compare_values(&l.v[i], &l.v[i - 1]) == 0)
                continue;
            char ik[16];
            const char *kp;
            bson_uint32_to_string(n++, &kp, ik, sizeof(ik));
            bson_append_iter(&arr, kp, -1, &l.v[i]);
        }
        bson_append_array_end(x->reply, &arr);
    }
    free(l.v);
    return rc;
}

/* State of one update statement while its matches are visited. */
struct upd_state {
    struct cmd_ctx *x;
    const bson_t *u;
    struct uops *ops;
    bool multi;
    int64_t matched, modified;
    struct store_error e;
};

/* Returns true if two documents are byte-for-byte equal (an update that changed nothing). */
static bool same_bytes(const bson_t *a, const bson_t *b)
{
    return a->len == b->len && memcmp(bson_get_data(a), bson_get_data(b), a->len) == 0;
}

/*
 * Replaces the document in slot by nd (ownership passes), recording the previous image in the
 * transaction. Returns 0, or -ENOMEM with nd freed.
 */
static int replace_recorded(struct cmd_ctx *x, struct coll *c, size_t slot, bson_t *nd)
{
    int rc = txn_record(x->txn, UNDO_UPDATE, x->db, x->coll, c->docs[slot]);
    if (!rc)
        rc = repl_record(x, OPLOG_UPDATE, x->coll, nd, NULL);
    if (rc) {
        bson_destroy(nd);
        return rc;
    }
    coll_replace_slot(c, slot, nd);
    return 0;
}

/* scan() visitor applying an update statement to one matching document. */
static int update_visit(struct coll *c, size_t slot, void *ctx)
{
    struct upd_state *st = ctx;
    bson_t *nd;
    int rc = update_doc(c->docs[slot], st->u, st->ops, &nd, &st->e);
    if (rc)
        return rc;
    /* Only documents actually updated count in n: a failed statement reports none. */
    st->matched++;
    if (same_bytes(nd, c->docs[slot])) {
        bson_destroy(nd);
    } else {
        if ((rc = replace_recorded(st->x, c, slot, nd)))
            return set_err(&st->e, rc, 1, "out of memory");
        st->modified++;
    }
    return st->multi ? 0 : 1;
}

/* Reads the q and u documents of an update statement. Returns 0 or an error in e. */
static int update_stmt_parts(const bson_t *stmt, bson_t *q, bson_t *u, struct store_error *e)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, stmt, "q") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
        !iter_doc_view(&it, q))
        return set_err(e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "BSON field 'update.updates.q' is missing but a required field");
    if (!bson_iter_init_find(&it, stmt, "u"))
        return set_err(e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "BSON field 'update.updates.u' is missing but a required field");
    if (BSON_ITER_HOLDS_ARRAY(&it))
        return set_err(e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "pipeline-style updates are not supported by mongosim");
    if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !iter_doc_view(&it, u))
        return set_err(e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Update argument must be either an object or an array");
    return 0;
}

/*
 * Inserts the upsert document for query q and update u. On success *id_out is set to the new
 * document's _id (an iterator into the stored copy). Returns 0 or an error in e.
 */
static int do_upsert(struct cmd_ctx *x, const bson_t *q, const bson_t *u, struct uops *ops,
                     bson_iter_t *id_out, struct store_error *e)
{
    bson_t *doc;
    int rc = upsert_doc(q, u, ops, &doc, e);
    if (rc)
        return rc;
    struct coll *c = coll_get_or_create(x, &rc);
    if (!c || rc) {
        bson_destroy(doc);
        return set_err(e, rc ? rc : -ENOMEM, 1, "out of memory");
    }
    if ((rc = insert_one(x, c, doc, e)))
        return rc;
    /* The stored document is the one just appended; its _id outlives this statement. */
    doc_id(c->docs[c->n_slots - 1], id_out);
    return 0;
}

/* update: {update: coll, updates: [{q, u, multi, upsert}], ordered} -> {n, nModified, ...}. */
static int cmd_update(struct cmd_ctx *x)
{
    struct stmt_list l;
    int rc = need_coll(x);
    if (rc || (rc = stmts_init(x, "updates", &l)))
        return rc;
    bool ordered = get_bool(x->cmd, "ordered", true);
    bson_t we = BSON_INITIALIZER, ups = BSON_INITIALIZER;
    uint32_t n_we = 0, n_ups = 0;
    int64_t n = 0, modified = 0;
    struct uops ops = {0};
    for (size_t i = 0; i < l.n_body + l.n_seq; i++) {
        const bson_t *stmt = stmt_at(&l, i);
        struct upd_state st = {.x = x, .ops = &ops};
        bson_t q, u;
        memset(&st.e, 0, sizeof(st.e));
        rc = update_stmt_parts(stmt, &q, &u, &st.e);
        st.u = &u;
        st.multi = get_bool(stmt, "multi", false);
        bool upsert = get_bool(stmt, "upsert", false);
        if (!rc && st.multi && !is_operator_update(&u))
            rc = set_err(&st.e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                         "multi update is not supported for replacement-style update");
        if (!rc)
            rc = scan(coll_find(x->s, x->db, x->coll), &q, update_visit, &st, &st.e);
        n += st.matched;
        modified += st.modified;
        if (!rc && st.matched == 0 && upsert) {
            bson_iter_t id;
            rc = do_upsert(x, &q, &u, &ops, &id, &st.e);
            if (!rc) {
                bson_t d;
                char ik[16];
                const char *kp;
                bson_uint32_to_string(n_ups++, &kp, ik, sizeof(ik));
                bson_append_document_begin(&ups, kp, -1, &d);
                BSON_APPEND_INT32(&d, "index", (int32_t)i);
                bson_append_iter(&d, "_id", 3, &id);
                bson_append_document_end(&ups, &d);
                n++;
            }
        }
        if (rc) {
            if (!st.e.code)
                set_err(&st.e, rc, 1, "out of memory");
            write_error(&we, &n_we, i, &st.e);
            if (ordered)
                break;
        }
    }
    free(ops.ops);
    free(l.body);
    BSON_APPEND_INT32(x->reply, "n", (int32_t)n);
    BSON_APPEND_INT32(x->reply, "nModified", (int32_t)modified);
    if (n_ups)
        BSON_APPEND_ARRAY(x->reply, "upserted", &ups);
    if (n_we)
        BSON_APPEND_ARRAY(x->reply, "writeErrors", &we);
    bson_destroy(&ups);
    bson_destroy(&we);
    return 0;
}

/* State of one delete statement. */
struct del_state {
    struct cmd_ctx *x;
    bool one;
    int64_t n;
};

/* Deletes the document in slot, recording it in the transaction. Returns 0 or -ENOMEM. */
static int delete_recorded(struct cmd_ctx *x, struct coll *c, size_t slot)
{
    int rc = txn_record(x->txn, UNDO_DELETE, x->db, x->coll, c->docs[slot]);
    if (!rc && x->s->oplog) {
        /* A secondary needs only the _id to find the document. */
        bson_iter_t id;
        bson_t key = BSON_INITIALIZER;
        if (doc_id(c->docs[slot], &id))
            bson_append_iter(&key, "_id", 3, &id);
        rc = repl_record(x, OPLOG_DELETE, x->coll, &key, NULL);
        bson_destroy(&key);
    }
    if (!rc)
        coll_delete_slot(c, slot);
    return rc;
}

/* scan() visitor deleting one matching document. */
static int delete_visit(struct coll *c, size_t slot, void *ctx)
{
    struct del_state *st = ctx;
    int rc = delete_recorded(st->x, c, slot);
    if (rc)
        return rc;
    st->n++;
    return st->one ? 1 : 0;
}

/* delete: {delete: coll, deletes: [{q, limit}], ordered} -> {n, writeErrors?}. */
static int cmd_delete(struct cmd_ctx *x)
{
    struct stmt_list l;
    int rc = need_coll(x);
    if (rc || (rc = stmts_init(x, "deletes", &l)))
        return rc;
    bool ordered = get_bool(x->cmd, "ordered", true);
    bson_t we = BSON_INITIALIZER;
    uint32_t n_we = 0;
    int64_t n = 0;
    struct coll *c = coll_find(x->s, x->db, x->coll);
    for (size_t i = 0; i < l.n_body + l.n_seq; i++) {
        const bson_t *stmt = stmt_at(&l, i);
        struct store_error e;
        struct del_state st = {x, false, 0};
        bson_iter_t it;
        bson_t q;
        int64_t limit = 0;
        memset(&e, 0, sizeof(e));
        rc = 0;
        if (!bson_iter_init_find(&it, stmt, "q") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
            !iter_doc_view(&it, &q))
            rc = set_err(&e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                         "BSON field 'delete.deletes.q' is missing but a required field");
        else if (bson_iter_init_find(&it, stmt, "limit") && is_number(&it))
            limit = bson_iter_as_int64(&it);
        if (!rc && limit != 0 && limit != 1)
            rc = set_err(&e, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                         "The limit field in delete objects must be 0 or 1. Got %" PRId64, limit);
        st.one = limit == 1;
        if (!rc)
            rc = scan(c, &q, delete_visit, &st, &e);
        n += st.n;
        if (rc) {
            if (!e.code)
                set_err(&e, rc, 1, "out of memory");
            write_error(&we, &n_we, i, &e);
            if (ordered)
                break;
        }
    }
    if (c)
        coll_maybe_compact(c);
    free(l.body);
    BSON_APPEND_INT32(x->reply, "n", (int32_t)n);
    if (n_we)
        BSON_APPEND_ARRAY(x->reply, "writeErrors", &we);
    bson_destroy(&we);
    return 0;
}

/* scan() visitor remembering the first matching slot. */
static int first_visit(struct coll *c, size_t slot, void *ctx)
{
    (void)c;
    *(size_t *)ctx = slot;
    return 1;
}

/*
 * Finds the slot of the first document matching q in sort order (insertion order without sort).
 * Returns 0 with *slot (SIZE_MAX if none), or an error.
 */
static int find_first(struct cmd_ctx *x, struct coll *c, const bson_t *q, const bson_t *sort,
                      size_t *slot)
{
    struct sort_spec spec = {.n = 0};
    int rc;
    *slot = SIZE_MAX;
    if (sort && (rc = parse_sort(sort, &spec, x->err)))
        return rc;
    if (!spec.n)
        return scan(c, q, first_visit, slot, x->err);
    struct item_list l = {0};
    rc = scan(c, q, collect_visit, &l, x->err);
    if (!rc && l.n) {
        sort_items(l.items, l.n, &spec);
        bson_iter_t id;
        if (doc_id(l.items[0].doc, &id))
            *slot = index_find(c, &id);
    }
    items_free(&l);
    return rc;
}

/* findAndModify: {findAndModify: coll, query, sort, update|remove, new, upsert, fields}. */
static int cmd_find_and_modify(struct cmd_ctx *x)
{
    bson_t q, sort, fields, u;
    bson_iter_t it;
    int hq, hs, hf, rc = need_coll(x);
    struct projection proj;
    if (rc || (hq = get_doc(x->cmd, x->name, "query", &q, x->err)) < 0 ||
        (hs = get_doc(x->cmd, x->name, "sort", &sort, x->err)) < 0 ||
        (hf = get_doc(x->cmd, x->name, "fields", &fields, x->err)) < 0 ||
        (rc = parse_projection(hf ? &fields : NULL, &proj, x->err)))
        return rc ? rc : -EINVAL;
    bool remove = get_bool(x->cmd, "remove", false), want_new = get_bool(x->cmd, "new", false);
    bool upsert = get_bool(x->cmd, "upsert", false);
    bool has_update = find_field(x->cmd, "update", &it) && !BSON_ITER_HOLDS_NULL(&it);
    if (has_update && BSON_ITER_HOLDS_ARRAY(&it))
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "pipeline-style updates are not supported by mongosim");
    if (has_update && !iter_doc_view(&it, &u))
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Update argument must be either an object or an array");
    if (remove && has_update)
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Cannot specify both an update and remove=true");
    if (!remove && !has_update)
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Either an update or remove=true must be specified");
    if (remove && upsert)
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Cannot specify both upsert=true and remove=true ");
    if (remove && want_new)
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "Cannot specify both new=true and remove=true; 'remove' always returns "
                       "the deleted document");
    struct coll *c = coll_find(x->s, x->db, x->coll);
    size_t slot;
    if ((rc = find_first(x, c, hq ? &q : NULL, hs ? &sort : NULL, &slot)))
        return rc;
    bson_t *value = NULL, leo;
    bson_init(&leo);
    if (remove) {
        if (slot != SIZE_MAX) {
            value = project(c->docs[slot], &proj);
            if ((rc = delete_recorded(x, c, slot)))
                goto fail;
            coll_maybe_compact(c);
        }
        BSON_APPEND_INT32(&leo, "n", slot != SIZE_MAX);
    } else if (slot != SIZE_MAX) {
        struct uops ops = {0};
        bson_t *nd;
        rc = update_doc(c->docs[slot], &u, &ops, &nd, x->err);
        free(ops.ops);
        if (rc)
            goto fail;
        if (!want_new)
            value = project(c->docs[slot], &proj);
        if (same_bytes(nd, c->docs[slot]))
            bson_destroy(nd);
        else if ((rc = replace_recorded(x, c, slot, nd)))
            goto fail;
        if (want_new)
            value = project(c->docs[slot], &proj);
        BSON_APPEND_INT32(&leo, "n", 1);
        BSON_APPEND_BOOL(&leo, "updatedExisting", true);
    } else if (upsert) {
        struct uops ops = {0};
        bson_iter_t id;
        rc = do_upsert(x, hq ? &q : NULL, &u, &ops, &id, x->err);
        free(ops.ops);
        if (rc)
            goto fail;
        c = coll_find(x->s, x->db, x->coll);
        BSON_APPEND_INT32(&leo, "n", 1);
        BSON_APPEND_BOOL(&leo, "updatedExisting", false);
        bson_append_iter(&leo, "upserted", -1, &id);
        if (want_new)
            value = project(c->docs[c->n_slots - 1], &proj);
    } else {
        BSON_APPEND_INT32(&leo, "n", 0);
        BSON_APPEND_BOOL(&leo, "updatedExisting", false);
    }
    BSON_APPEND_DOCUMENT(x->reply, "lastErrorObject", &leo);
    if (value)
        BSON_APPEND_DOCUMENT(x->reply, "value", value);
    else
        BSON_APPEND_NULL(x->reply, "value");
    rc = 0;
fail:
    if (value)
        bson_destroy(value);
    bson_destroy(&leo);
    return rc;
}

/* Stages MongoDB knows but mongosim does not implement: refused with a clear message. */
static const char *const unsupported_stages[] = {
    "$unwind",
    "$lookup",
    "$addFields",
    "$set",
    "$unset",
    "$facet",
    "$out",
    "$merge",
    "$sortByCount",
    "$replaceRoot",
    "$replaceWith",
    "$sample",
    "$bucket",
    "$redact",
    "$graphLookup",
    "$bucketAuto",
    "$unionWith",
    "$densify",
    "$setWindowFields",
    "$fill",
    "$geoNear",
    "$collStats",
    "$indexStats",
    "$currentOp",
    "$listSessions",
    "$changeStream",
    "$documents",
    "$planCacheStats",
    NULL,
};

/*
 * Checks the pipeline's stages before running anything: one field per stage, a known name.
 * Returns 0 or an error (40324 for an unknown stage name).
 */
static int check_pipeline(struct cmd_ctx *x, const bson_iter_t *pipeline)
{
    bson_iter_t st;
    bson_iter_recurse(pipeline, &st);
    while (bson_iter_next(&st)) {
        bson_iter_t f;
        if (!BSON_ITER_HOLDS_DOCUMENT(&st) || !bson_iter_recurse(&st, &f) || !bson_iter_next(&f))
            return set_err(x->err, -EINVAL, 40323,
                           "A pipeline stage specification object must contain exactly one "
                           "field.");
        const char *name = bson_iter_key(&f);
        bson_iter_t more = f;
        if (bson_iter_next(&more))
            return set_err(x->err, -EINVAL, 40323,
                           "A pipeline stage specification object must contain exactly one "
                           "field.");
        static const char *const known[] = {"$match", "$sort",    "$skip", "$limit",
                                            "$count", "$project", "$group"};
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
            ok = strcmp(name, known[i]) == 0;
        if (ok)
            continue;
        for (size_t i = 0; unsupported_stages[i]; i++)
            if (strcmp(name, unsupported_stages[i]) == 0)
                return set_err(x->err, -ENOTSUP, STORE_ERR_BAD_VALUE,
                               "mongosim does not support the %s stage", name);
        return set_err(x->err, -EINVAL, STORE_ERR_UNRECOGNIZED_STAGE,
                       "Unrecognized pipeline stage name: '%s'", name);
    }
    return 0;
}

/*
 * $group with a constant _id (drivers' countDocuments uses {_id: 1, n: {$sum: 1}}): every input
 * document falls in one group, and each accumulator is {$sum: number} (a count times that number)
 * or {$sum: "$field"} (the numeric values of a top-level field added up). Grouping by a field is
 * not simulated and is refused. Empty input yields no document, as in MongoDB.
 */
static int run_group(struct cmd_ctx *x, struct item_list *l, bson_iter_t *f)
{
    bson_iter_t spec, id;
    if (!BSON_ITER_HOLDS_DOCUMENT(f) || !bson_iter_recurse(f, &spec) ||
        !bson_iter_find(&spec, "_id"))
        return set_err(x->err, -EINVAL, 15955, "a group specification must include an _id");
    id = spec;
    if (BSON_ITER_HOLDS_UTF8(&id) && bson_iter_utf8(&id, NULL)[0] == '$')
        return set_err(x->err, -ENOTSUP, STORE_ERR_BAD_VALUE,
                       "mongosim supports $group only with a constant _id");
    size_t n = l->n;
    bson_t *d = bson_new();
    bson_append_iter(d, "_id", 3, &id);
    bson_iter_recurse(f, &spec);
    while (bson_iter_next(&spec)) {
        const char *field = bson_iter_key(&spec);
        bson_iter_t acc;
        if (strcmp(field, "_id") == 0)
            continue;
        if (!BSON_ITER_HOLDS_DOCUMENT(&spec) || !bson_iter_recurse(&spec, &acc) ||
            !bson_iter_next(&acc) || strcmp(bson_iter_key(&acc), "$sum") != 0) {
            bson_destroy(d);
            return set_err(x->err, -ENOTSUP, STORE_ERR_BAD_VALUE,
                           "mongosim supports only $sum accumulators in $group");
        }
        double sum = 0;
        bool integral = true;
        if (is_number(&acc)) {
            sum = bson_iter_as_double(&acc) * (double)n;
            integral = !BSON_ITER_HOLDS_DOUBLE(&acc);
        } else if (BSON_ITER_HOLDS_UTF8(&acc) && bson_iter_utf8(&acc, NULL)[0] == '$') {
            const char *path = bson_iter_utf8(&acc, NULL) + 1;
            for (size_t i = 0; i < n; i++) {
                bson_iter_t v;
                if (bson_iter_init_find(&v, l->items[i].doc, path) && is_number(&v)) {
                    sum += bson_iter_as_double(&v);
                    integral &= !BSON_ITER_HOLDS_DOUBLE(&v);
                }
            }
        }
        if (integral && sum >= INT32_MIN && sum <= INT32_MAX)
            BSON_APPEND_INT32(d, field, (int32_t)sum);
        else if (integral)
            BSON_APPEND_INT64(d, field, (int64_t)sum);
        else
            BSON_APPEND_DOUBLE(d, field, sum);
    }
    items_release(l, 0, l->n);
    l->n = 0;
    if (!n) {
        bson_destroy(d);
        return 0;
    }
    int rc = items_push(l, d, true);
    if (rc)
        bson_destroy(d);
    return rc;
}

/* Runs one stage (f points at its single field) over the working set l. */
static int run_stage(struct cmd_ctx *x, struct item_list *l, bson_iter_t *f)
{
    const char *name = bson_iter_key(f);
    bson_t spec;
    int rc;
    if (strcmp(name, "$match") == 0) {
        if (!BSON_ITER_HOLDS_DOCUMENT(f) || !iter_doc_view(f, &spec))
            return set_err(x->err, -EINVAL, 15959,
                           "the match filter must be an expression in "
                           "an object");
        size_t w = 0;
        for (size_t i = 0; i < l->n; i++) {
            rc = match_doc(l->items[i].doc, &spec, x->err);
            if (rc < 0)
                return rc;
            if (rc)
                l->items[w++] = l->items[i];
            else
                items_release(l, i, i + 1);
        }
        l->n = w;
        return validate_filter(&spec, x->err);
    }
    if (strcmp(name, "$sort") == 0) {
        struct sort_spec ss;
        if (!BSON_ITER_HOLDS_DOCUMENT(f) || !iter_doc_view(f, &spec) || bson_empty(&spec))
            return set_err(x->err, -EINVAL, 15976, "$sort stage must have at least one sort key");
        if ((rc = parse_sort(&spec, &ss, x->err)))
            return rc;
        sort_items(l->items, l->n, &ss);
        return 0;
    }
    if (strcmp(name, "$skip") == 0 || strcmp(name, "$limit") == 0) {
        bool skip = name[2] == 'k';
        int64_t v = is_number(f) ? bson_iter_as_int64(f) : -1;
        if (skip && v < 0)
            return set_err(x->err, -EINVAL, 15956, "Argument to $skip cannot be negative");
        if (!skip && v <= 0)
            return set_err(x->err, -EINVAL, 15958, "the limit must be positive");
        size_t k = (uint64_t)v < l->n ? (size_t)v : l->n;
        if (skip) {
            items_release(l, 0, k);
            memmove(l->items, l->items + k, (l->n - k) * sizeof(*l->items));
            l->n -= k;
        } else {
            items_release(l, k, l->n);
            l->n = k;
        }
        return 0;
    }
    if (strcmp(name, "$count") == 0) {
        const char *field = BSON_ITER_HOLDS_UTF8(f) ? bson_iter_utf8(f, NULL) : NULL;
        if (!field || !field[0])
            return set_err(x->err, -EINVAL, 40156, "the count field must be a non-empty string");
        if (field[0] == '$')
            return set_err(x->err, -EINVAL, 40158, "the count field cannot be a $-prefixed path");
        if (strchr(field, '.'))
            return set_err(x->err, -EINVAL, 40160, "the count field cannot contain '.'");
        size_t n = l->n;
        items_release(l, 0, l->n);
        l->n = 0;
        if (!n)
            return 0; /* MongoDB's $count yields no document for empty input */
        bson_t *d = bson_new();
        if (n <= INT32_MAX)
            BSON_APPEND_INT32(d, field, (int32_t)n);
        else
            BSON_APPEND_INT64(d, field, (int64_t)n);
        if ((rc = items_push(l, d, true)))
            bson_destroy(d);
        return rc;
    }
    if (strcmp(name, "$group") == 0)
        return run_group(x, l, f);
    /* $project */
    struct projection p;
    if (!BSON_ITER_HOLDS_DOCUMENT(f) || !iter_doc_view(f, &spec) || bson_empty(&spec))
        return set_err(x->err, -EINVAL, 51272,
                       "Invalid $project :: caused by :: projection specification must have at "
                       "least one field");
    if ((rc = parse_projection(&spec, &p, x->err)))
        return rc;
    for (size_t i = 0; i < l->n; i++) {
        bson_t *d = project(l->items[i].doc, &p);
        items_release(l, i, i + 1);
        l->items[i].doc = d;
        l->items[i].owned = true;
    }
    return 0;
}

/* aggregate: {aggregate: coll|1, pipeline: [...], cursor: {}} -> all results into x->res. */
static int cmd_aggregate(struct cmd_ctx *x)
{
    bson_iter_t first, pipeline, cur;
    bson_iter_init(&first, x->cmd);
    bson_iter_next(&first);
    if (!find_field(x->cmd, "pipeline", &pipeline))
        return set_err(x->err, -EINVAL, 40414,
                       "BSON field 'aggregate.pipeline' is missing but a required field");
    if (!BSON_ITER_HOLDS_ARRAY(&pipeline))
        return set_err(x->err, -EINVAL, STORE_ERR_TYPE_MISMATCH,
                       "BSON field 'aggregate.pipeline' is the wrong type '%s', expected type "
                       "'array'",
                       type_name(bson_iter_type(&pipeline)));
    if (!find_field(x->cmd, "cursor", &cur) && !get_bool(x->cmd, "explain", false))
        return set_err(x->err, -EINVAL, STORE_ERR_FAILED_TO_PARSE,
                       "The 'cursor' option is required, except for aggregate with the explain "
                       "argument");
    int rc = check_pipeline(x, &pipeline);
    if (rc)
        return rc;
    if (is_number(&first) && bson_iter_as_int64(&first) == 1) {
        /* Database-level aggregation ($currentOp and friends): nothing to report here. */
        set_cursor_ns(x, "$cmd.aggregate");
        return 0;
    }
    if ((rc = need_coll(x)))
        return rc;
    set_cursor_ns(x, x->coll);
    struct coll *c = coll_find(x->s, x->db, x->coll);
    struct item_list l = {0};
    bson_iter_t st, f;
    bson_iter_recurse(&pipeline, &st);
    bool have = bson_iter_next(&st) && bson_iter_recurse(&st, &f) && bson_iter_next(&f);
    /* A leading $match is run as a query, so that it can use the _id index. */
    bson_t spec;
    if (have && strcmp(bson_iter_key(&f), "$match") == 0 && BSON_ITER_HOLDS_DOCUMENT(&f) &&
        iter_doc_view(&f, &spec)) {
        rc = scan(c, &spec, collect_visit, &l, x->err);
        have = bson_iter_next(&st) && bson_iter_recurse(&st, &f) && bson_iter_next(&f);
    } else if (c) {
        for (size_t i = 0; i < c->n_slots && !rc; i++)
            if (c->docs[i])
                rc = items_push(&l, c->docs[i], false);
    }
    while (!rc && have) {
        rc = run_stage(x, &l, &f);
        have = bson_iter_next(&st) && bson_iter_recurse(&st, &f) && bson_iter_next(&f);
    }
    for (size_t i = 0; i < l.n && !rc; i++) {
        bson_t *d = l.items[i].owned ? l.items[i].doc : bson_copy(l.items[i].doc);
        l.items[i].owned = false;
        rc = results_push(x->res, d);
    }
    items_free(&l);
    return rc;
}

/* Appends {v: 2, key: {_id: 1}, name: "_id_"} as key to doc. */
static void append_id_index(bson_t *doc, const char *key)
{
    bson_t ix, k;
    bson_append_document_begin(doc, key, -1, &ix);
    BSON_APPEND_INT32(&ix, "v", 2);
    BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &k);
    BSON_APPEND_INT32(&k, "_id", 1);
    bson_append_document_end(&ix, &k);
    BSON_APPEND_UTF8(&ix, "name", "_id_");
    bson_append_document_end(doc, &ix);
}

/* listCollections: {listCollections: 1, filter, nameOnly} -> one document per collection. */
static int cmd_list_collections(struct cmd_ctx *x)
{
    bson_t filter;
    int hf = get_doc(x->cmd, x->name, "filter", &filter, x->err);
    if (hf < 0)
        return hf;
    if (hf && validate_filter(&filter, x->err))
        return -EINVAL;
    bool name_only = get_bool(x->cmd, "nameOnly", false);
    set_cursor_ns(x, "$cmd.listCollections");
    struct db *d = db_find(x->s, x->db);
    for (size_t i = 0; d && i < d->n; i++) {
        struct coll *c = d->colls[i];
        bson_t *doc = bson_new(), sub;
        BSON_APPEND_UTF8(doc, "name", c->name);
        BSON_APPEND_UTF8(doc, "type", "collection");
        if (!name_only) {
            BSON_APPEND_DOCUMENT_BEGIN(doc, "options", &sub);
            bson_append_document_end(doc, &sub);
            BSON_APPEND_DOCUMENT_BEGIN(doc, "info", &sub);
            BSON_APPEND_BOOL(&sub, "readOnly", false);
            BSON_APPEND_BINARY(&sub, "uuid", BSON_SUBTYPE_UUID, c->uuid, 16);
            bson_append_document_end(doc, &sub);
            append_id_index(doc, "idIndex");
        }
        int rc = hf ? match_doc(doc, &filter, x->err) : 1;
        if (rc <= 0) {
            bson_destroy(doc);
            if (rc < 0)
                return rc;
            continue;
        }
        if ((rc = results_push(x->res, doc)))
            return rc;
    }
    return 0;
}

/* listIndexes: {listIndexes: coll} -> the _id index; NamespaceNotFound for a missing one. */
static int cmd_list_indexes(struct cmd_ctx *x)
{
    int rc = need_coll(x);
    if (rc)
        return rc;
    if (!coll_find(x->s, x->db, x->coll))
        return set_err(x->err, -ENOENT, STORE_ERR_NAMESPACE_NOT_FOUND, "ns does not exist: %s.%s",
                       x->db, x->coll);
    char suffix[300];
    snprintf(suffix, sizeof(suffix), "$cmd.listIndexes.%s", x->coll);
    set_cursor_ns(x, suffix);
    bson_t *doc = bson_new(), k;
    BSON_APPEND_INT32(doc, "v", 2);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "key", &k);
    BSON_APPEND_INT32(&k, "_id", 1);
    bson_append_document_end(doc, &k);
    BSON_APPEND_UTF8(doc, "name", "_id_");
    return results_push(x->res, doc);
}

/* create: {create: coll} -> {}; NamespaceExists if it is there already. */
static int cmd_create(struct cmd_ctx *x)
{
    int rc = need_coll(x);
    if (rc)
        return rc;
    if (coll_find(x->s, x->db, x->coll))
        return set_err(x->err, -EEXIST, STORE_ERR_NAMESPACE_EXISTS,
                       "Collection %s.%s already exists.", x->db, x->coll);
    coll_get_or_create(x, &rc);
    return rc ? set_err(x->err, rc, 1, "out of memory") : 0;
}

/* drop: {drop: coll} -> {nIndexesWas: 1, ns}; NamespaceNotFound for a missing one. */
static int cmd_drop(struct cmd_ctx *x)
{
    int rc = need_coll(x);
    if (rc)
        return rc;
    if (!coll_drop(x->s, x->db, x->coll))
        return set_err(x->err, -ENOENT, STORE_ERR_NAMESPACE_NOT_FOUND, "ns not found");
    /* The drop is done: a failure to record it (memory) is not the client's error. */
    repl_record(x, OPLOG_DROP, x->coll, NULL, NULL);
    char ns[512];
    snprintf(ns, sizeof(ns), "%s.%s", x->db, x->coll);
    BSON_APPEND_INT32(x->reply, "nIndexesWas", 1);
    BSON_APPEND_UTF8(x->reply, "ns", ns);
    return 0;
}

/* dropDatabase: {dropDatabase: 1} -> {dropped: db}, whether or not it existed. */
static int cmd_drop_database(struct cmd_ctx *x)
{
    struct db *d = db_find(x->s, x->db);
    if (d) {
        db_remove(x->s, d);
        repl_record(x, OPLOG_DROP_DB, NULL, NULL, NULL);
    }
    BSON_APPEND_UTF8(x->reply, "dropped", x->db);
    return 0;
}

/* listDatabases: {listDatabases: 1, nameOnly, filter} -> {databases, totalSize}. */
static int cmd_list_databases(struct cmd_ctx *x)
{
    bson_t filter, arr;
    int hf = get_doc(x->cmd, x->name, "filter", &filter, x->err);
    if (hf < 0)
        return hf;
    if (hf && validate_filter(&filter, x->err))
        return -EINVAL;
    bool name_only = get_bool(x->cmd, "nameOnly", false);
    int64_t total = 0;
    uint32_t n = 0;
    BSON_APPEND_ARRAY_BEGIN(x->reply, "databases", &arr);
    for (size_t i = 0; i < x->s->n; i++) {
        struct db *d = x->s->dbs[i];
        int64_t size = 0;
        for (size_t j = 0; j < d->n; j++)
            size += (int64_t)d->colls[j]->bytes;
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&doc, "name", d->name);
        if (!name_only) {
            BSON_APPEND_INT64(&doc, "sizeOnDisk", size);
            BSON_APPEND_BOOL(&doc, "empty", size == 0);
        }
        if (!hf || match_doc(&doc, &filter, NULL) > 0) {
            char ik[16];
            const char *kp;
            bson_uint32_to_string(n++, &kp, ik, sizeof(ik));
            BSON_APPEND_DOCUMENT(&arr, kp, &doc);
            total += size;
        }
        bson_destroy(&doc);
    }
    bson_append_array_end(x->reply, &arr);
    if (!name_only) {
        BSON_APPEND_INT64(x->reply, "totalSize", total);
        BSON_APPEND_INT64(x->reply, "totalSizeMb", total / (1024 * 1024));
    }
    return 0;
}

/* dbStats: {dbStats: 1, scale} -> the counts a newcomer's db.stats() shows. mongosim keeps no
 * files and only the _id index, so the sizes are those of the documents themselves. */
static int cmd_db_stats(struct cmd_ctx *x)
{
    int64_t scale = 1;
    if (get_int64(x->cmd, x->name, "scale", &scale, x->err) < 0)
        return -EINVAL;
    if (scale < 1)
        scale = 1;
    struct db *d = db_find(x->s, x->db);
    int64_t objects = 0, bytes = 0, colls = d ? (int64_t)d->n : 0;
    for (size_t i = 0; d && i < d->n; i++) {
        objects += (int64_t)d->colls[i]->n_live;
        bytes += (int64_t)d->colls[i]->bytes;
    }
    BSON_APPEND_UTF8(x->reply, "db", x->db);
    BSON_APPEND_INT64(x->reply, "collections", colls);
    BSON_APPEND_INT64(x->reply, "views", 0);
    BSON_APPEND_INT64(x->reply, "objects", objects);
    BSON_APPEND_DOUBLE(x->reply, "avgObjSize", objects ? (double)bytes / (double)objects : 0.0);
    BSON_APPEND_INT64(x->reply, "dataSize", bytes / scale);
    BSON_APPEND_INT64(x->reply, "storageSize", bytes / scale);
    BSON_APPEND_INT64(x->reply, "indexes", colls);
    BSON_APPEND_INT64(x->reply, "indexSize", 0);
    BSON_APPEND_INT64(x->reply, "totalSize", bytes / scale);
    BSON_APPEND_INT64(x->reply, "scaleFactor", scale);
    return 0;
}

/* collStats: {collStats: coll, scale} -> count and sizes, as the deprecated command reports. */
static int cmd_coll_stats(struct cmd_ctx *x)
{
    int rc = need_coll(x);
    if (rc)
        return rc;
    int64_t scale = 1;
    if (get_int64(x->cmd, x->name, "scale", &scale, x->err) < 0)
        return -EINVAL;
    if (scale < 1)
        scale = 1;
    struct coll *c = coll_find(x->s, x->db, x->coll);
    if (!c)
        return set_err(x->err, -ENOENT, STORE_ERR_NAMESPACE_NOT_FOUND, "ns does not exist: %s.%s",
                       x->db, x->coll);
    char ns[512];
    snprintf(ns, sizeof(ns), "%s.%s", x->db, x->coll);
    bson_t sizes;
    BSON_APPEND_UTF8(x->reply, "ns", ns);
    BSON_APPEND_INT64(x->reply, "count", (int64_t)c->n_live);
    BSON_APPEND_INT64(x->reply, "size", (int64_t)c->bytes / scale);
    BSON_APPEND_INT64(x->reply, "avgObjSize", c->n_live ? (int64_t)(c->bytes / c->n_live) : 0);
    BSON_APPEND_INT64(x->reply, "storageSize", (int64_t)c->bytes / scale);
    BSON_APPEND_INT32(x->reply, "nindexes", 1);
    BSON_APPEND_INT64(x->reply, "totalIndexSize", 0);
    BSON_APPEND_DOCUMENT_BEGIN(x->reply, "indexSizes", &sizes);
    BSON_APPEND_INT64(&sizes, "_id_", 0);
    bson_append_document_end(x->reply, &sizes);
    BSON_APPEND_INT64(x->reply, "scaleFactor", scale);
    return 0;
}

/* The commands store_exec knows, by name. */
static const struct {
    const char *name;
    int (*fn)(struct cmd_ctx *x);
} commands[] = {
    {"find", cmd_find},
    {"insert", cmd_insert},
    {"update", cmd_update},
    {"delete", cmd_delete},
    {"findAndModify", cmd_find_and_modify},
    {"findandmodify", cmd_find_and_modify},
    {"count", cmd_count},
    {"distinct", cmd_distinct},
    {"aggregate", cmd_aggregate},
    {"listCollections", cmd_list_collections},
    {"listIndexes", cmd_list_indexes},
    {"create", cmd_create},
    {"drop", cmd_drop},
    {"dropDatabase", cmd_drop_database},
    {"listDatabases", cmd_list_databases},
    {"dbStats", cmd_db_stats},
    {"dbstats", cmd_db_stats},
    {"collStats", cmd_coll_stats},
    {"collstats", cmd_coll_stats},
};

int store_exec(struct store *s, const char *db, const bson_t *cmd, const bson_t *const *seq_docs,
               size_t n_seq, bson_t *reply, struct store_results *results, bool *is_cursor,
               char *ns_out, size_t ns_len, struct store_txn *txn, struct store_error *err)
{
    struct store_error scratch;
    bool scratch_cursor;
    if (!err)
        err = &scratch;
    if (!is_cursor)
        is_cursor = &scratch_cursor;
    memset(err, 0, sizeof(*err));
    *is_cursor = false;
    bson_iter_t it;
    if (!s || !db || !cmd || !reply || !results || !bson_iter_init(&it, cmd) ||
        !bson_iter_next(&it))
        return set_err(err, -EINVAL, STORE_ERR_FAILED_TO_PARSE, "empty command");
    const char *name = bson_iter_key(&it);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        struct cmd_ctx x = {s,       db,        name,   cmd,    seq_docs, n_seq, reply,
                            results, is_cursor, ns_out, ns_len, txn,      err,   NULL};
        int rc = commands[i].fn(&x);
        if (rc < 0) {
            if (!err->code)
                set_err(err, rc, 1, "%s failed: %s", name, strerror(-rc));
            return rc;
        }
        BSON_APPEND_DOUBLE(reply, "ok", 1.0);
        return 0;
    }
    return set_err(err, -ENOENT, STORE_ERR_COMMAND_NOT_FOUND, "no such command: '%s'", name);
}

/* ------------------------------------------------------------------------------------------ */
/* Replication                                                                                */
/* ------------------------------------------------------------------------------------------ */

struct store_oplog *store_oplog_new(int64_t (*clock)(void *arg), void *arg)
{
    struct store_oplog *log = calloc(1, sizeof(*log));
    if (log) {
        log->clock = clock;
        log->clock_arg = arg;
    }
    return log;
}

void store_oplog_free(struct store_oplog *log)
{
    if (!log)
        return;
    entries_clear(&log->list);
    free(log);
}

void store_set_oplog(struct store *s, struct store_oplog *log)
{
    s->oplog = log;
}

uint64_t store_oplog_count(const struct store_oplog *log)
{
    return log->first + log->list.n;
}

int64_t store_oplog_time(const struct store_oplog *log, uint64_t number)
{
    if (number < log->first || number - log->first >= log->list.n)
        return -1;
    return log->list.e[number - log->first].wall_ms;
}

/* Returns db.name of s, creating it with uuid if it is missing; NULL only without memory. */
static struct coll *coll_for_apply(struct store *s, const struct oplog_entry *e)
{
    struct coll *c = coll_find(s, e->db, e->coll);
    if (c)
        return c;
    c = coll_create(s, e->db, e->coll);
    if (c && e->kind == OPLOG_CREATE)
        memcpy(c->uuid, e->uuid, 16);
    return c;
}

/*
 * Applies one entry to s. Like MongoDB's oplog application it is idempotent and forgiving: an
 * insert of an _id already there replaces it, an update of a missing document inserts it, a
 * delete or drop of something missing does nothing. Returns 0 or -ENOMEM.
 */
static int apply_entry(struct store *s, const struct oplog_entry *e)
{
    switch (e->kind) {
    case OPLOG_CREATE:
        return coll_for_apply(s, e) ? 0 : -ENOMEM;
    case OPLOG_DROP:
        coll_drop(s, e->db, e->coll);
        return 0;
    case OPLOG_DROP_DB: {
        struct db *d = db_find(s, e->db);
        if (d)
            db_remove(s, d);
        return 0;
    }
    case OPLOG_INSERT:
    case OPLOG_UPDATE:
    case OPLOG_DELETE:
        break;
    }
    bson_iter_t id;
    if (!e->doc || !doc_id(e->doc, &id))
        return 0;
    if (e->kind == OPLOG_DELETE) {
        struct coll *c = coll_find(s, e->db, e->coll);
        size_t slot = c ? index_find(c, &id) : SIZE_MAX;
        if (slot != SIZE_MAX) {
            coll_delete_slot(c, slot);
            coll_maybe_compact(c);
        }
        return 0;
    }
    struct coll *c = coll_for_apply(s, e);
    bson_t *doc = c ? bson_copy(e->doc) : NULL;
    if (!doc)
        return -ENOMEM;
    size_t slot = index_find(c, &id);
    if (slot != SIZE_MAX) {
        coll_replace_slot(c, slot, doc);
        return 0;
    }
    if (coll_append(c, doc) < 0) {
        bson_destroy(doc);
        return -ENOMEM;
    }
    return 0;
}

int store_oplog_apply(struct store *s, const struct store_oplog *log, uint64_t *applied,
                      int64_t until_ms)
{
    if (*applied < log->first)
        return -ERANGE;
    int n = 0;
    while (*applied < log->first + log->list.n) {
        const struct oplog_entry *e = &log->list.e[*applied - log->first];
        if (e->wall_ms > until_ms)
            break;
        int rc = apply_entry(s, e);
        if (rc < 0)
            return rc;
        (*applied)++;
        n++;
    }
    return n;
}

void store_oplog_trim(struct store_oplog *log, uint64_t upto)
{
    if (upto <= log->first)
        return;
    size_t k = (size_t)(upto - log->first);
    if (k > log->list.n)
        k = log->list.n;
    for (size_t i = 0; i < k; i++)
        entry_free(&log->list.e[i]);
    memmove(log->list.e, log->list.e + k, (log->list.n - k) * sizeof(*log->list.e));
    log->list.n -= k;
    log->first += k;
    if (log->list.n == 0 && log->list.cap > 1024) {
        /* A burst of writes is over: give its memory back. */
        free(log->list.e);
        log->list.e = NULL;
        log->list.cap = 0;
    }
}

struct store *store_clone(const struct store *src)
{
    struct store *s = store_new();
    if (!s)
        return NULL;
    for (size_t i = 0; i < src->n; i++) {
        const struct db *d = src->dbs[i];
        for (size_t j = 0; j < d->n; j++) {
            const struct coll *from = d->colls[j];
            struct coll *c = coll_create(s, d->name, from->name);
            if (!c)
                goto fail;
            memcpy(c->uuid, from->uuid, 16);
            for (size_t k = 0; k < from->n_slots; k++) {
                if (!from->docs[k])
                    continue;
                bson_t *doc = bson_copy(from->docs[k]);
                if (!doc || coll_append(c, doc) < 0) {
                    if (doc)
                        bson_destroy(doc);
                    goto fail;
                }
            }
        }
    }
    return s;
fail:
    store_free(s);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshot isolation for transactions                                                        */
/* ------------------------------------------------------------------------------------------ */

/* The _id an undo entry is about, or false for a collection creation. */
static bool undo_id(const struct undo *u, bson_iter_t *id)
{
    return u->kind != UNDO_CREATE && u->doc && doc_id(u->doc, id);
}

static bool same_id(const bson_iter_t *a, const bson_iter_t *b)
{
    return bson_iter_type(a) == bson_iter_type(b) && store_compare_values(a, b) == 0;
}

/* The first undo entry of t about db.coll _id, or NULL. */
static const struct undo *txn_first_touch(const struct store_txn *t, const char *db,
                                          const char *coll, const bson_iter_t *id)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct undo *u = &t->entries[i];
        bson_iter_t uid;
        if (undo_id(u, &uid) && strcmp(u->db, db) == 0 && strcmp(u->coll, coll) == 0 &&
            same_id(&uid, id))
            return u;
    }
    return NULL;
}

/* The document db.coll _id in s, or NULL. */
static const bson_t *doc_lookup(const struct store *s, const char *db, const char *coll,
                                const bson_iter_t *id)
{
    struct coll *c = coll_find(s, db, coll);
    size_t slot = c ? index_find(c, id) : SIZE_MAX;
    return slot == SIZE_MAX ? NULL : c->docs[slot];
}

size_t store_txn_len(const struct store_txn *t)
{
    return t ? t->n : 0;
}

bool store_txn_conflicts(const struct store_txn *t, size_t from, const struct store *live,
                         const struct store_txn *const *others, size_t n_others)
{
    for (size_t i = from; t && i < t->n; i++) {
        const struct undo *u = &t->entries[i];
        bson_iter_t id;
        if (!undo_id(u, &id))
            continue;
        /* The document as the snapshot had it: its image before this transaction's first write
         * to it (absent for an insert). */
        const struct undo *first = txn_first_touch(t, u->db, u->coll, &id);
        const bson_t *then = first->kind == UNDO_INSERT ? NULL : first->doc;
        const bson_t *now = doc_lookup(live, u->db, u->coll, &id);
        if ((then == NULL) != (now == NULL) ||
            (then && (then->len != now->len ||
                      memcmp(bson_get_data(then), bson_get_data(now), then->len) != 0)))
            return true;
        for (size_t k = 0; k < n_others; k++)
            if (others[k] && others[k] != t && txn_first_touch(others[k], u->db, u->coll, &id))
                return true;
    }
    return false;
}

int store_txn_publish(struct store *live, const struct store *snap, struct store_txn *t)
{
    if (!t)
        return 0;
    struct entry_list redo = {0};
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        const struct undo *u = &t->entries[i];
        if (u->kind == UNDO_CREATE) {
            const struct coll *c = coll_find(snap, u->db, u->coll);
            if (c && !coll_find(live, u->db, u->coll))
                rc = entries_push(&redo, OPLOG_CREATE, u->db, u->coll, NULL, c->uuid, 0);
            continue;
        }
        bson_iter_t id;
        if (!undo_id(u, &id))
            continue;
        /* Only the last state matters: a document written twice is published once, at the
         * entry of its last write. */
        bool later = false;
        for (size_t k = i + 1; k < t->n && !later; k++) {
            bson_iter_t kid;
            later = undo_id(&t->entries[k], &kid) && strcmp(t->entries[k].db, u->db) == 0 &&
                    strcmp(t->entries[k].coll, u->coll) == 0 && same_id(&kid, &id);
        }
        if (later)
            continue;
        const bson_t *final = doc_lookup(snap, u->db, u->coll, &id);
        if (final) {
            rc = entries_push(&redo, OPLOG_UPDATE, u->db, u->coll, final, NULL, 0);
        } else {
            bson_t key = BSON_INITIALIZER;
            bson_append_iter(&key, "_id", 3, &id);
            rc = entries_push(&redo, OPLOG_DELETE, u->db, u->coll, &key, NULL, 0);
            bson_destroy(&key);
        }
    }
    for (size_t i = 0; i < redo.n && rc == 0; i++)
        rc = apply_entry(live, &redo.e[i]);
    if (rc == 0 && live->oplog && redo.n) {
        /* One commit time for all of them, as store_txn_commit does. */
        struct entry_list *l = &live->oplog->list;
        int64_t now = oplog_now(live->oplog);
        if (grow((void **)&l->e, &l->cap, l->n + redo.n, sizeof(*l->e)) == 0) {
            for (size_t i = 0; i < redo.n; i++) {
                redo.e[i].wall_ms = now;
                l->e[l->n++] = redo.e[i];
            }
            redo.n = 0;
        }
    }
    entries_clear(&redo);
    txn_free(t);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Rollback and the majority snapshot                                                         */
/* ------------------------------------------------------------------------------------------ */

void store_oplog_truncate(struct store_oplog *log, uint64_t upto)
{
    if (upto < log->first)
        upto = log->first;
    size_t keep = (size_t)(upto - log->first);
    while (log->list.n > keep)
        entry_free(&log->list.e[--log->list.n]);
}

int store_oplog_apply_upto(struct store *s, const struct store_oplog *log, uint64_t *applied,
                           uint64_t upto)
{
    if (*applied < log->first)
        return -ERANGE;
    int n = 0;
    while (*applied < upto && *applied < log->first + log->list.n) {
        int rc = apply_entry(s, &log->list.e[*applied - log->first]);
        if (rc < 0)
            return rc;
        (*applied)++;
        n++;
    }
    return n;
}
