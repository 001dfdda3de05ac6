/*
 * store.h: mongosim's in-memory data engine.
 *
 * A store holds every database and collection of one simulated deployment. Documents are kept as
 * bson_t copies in insertion order, with a hash index on _id per collection so that lookups and
 * writes by _id cost O(1). store_exec runs one command (insert, find, update, delete,
 * findAndModify, count, distinct, aggregate, listCollections, listIndexes, create, drop,
 * dropDatabase, listDatabases) the way MongoDB 7.0 answers it, as far as a test can observe.
 *
 * Ownership: the store owns its documents; result sets (struct store_results) own copies, so a
 * cursor may outlive any later write, drop or store_free. Nothing here is thread-safe: one store
 * is used by one thread (the simulator's event loop). Functions return 0 or a negative
 * errno-style code.
 */
#ifndef MONGOSIM_STORE_H
#define MONGOSIM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

/* MongoDB error codes the store reports (and the server may reuse). */
#define STORE_ERR_BAD_VALUE              2
#define STORE_ERR_FAILED_TO_PARSE        9
#define STORE_ERR_TYPE_MISMATCH          14
#define STORE_ERR_NAMESPACE_NOT_FOUND    26
#define STORE_ERR_CONFLICTING_UPDATE_OPS 40
#define STORE_ERR_NAMESPACE_EXISTS       48
#define STORE_ERR_COMMAND_NOT_FOUND      59
#define STORE_ERR_IMMUTABLE_FIELD        66
#define STORE_ERR_INVALID_NAMESPACE      73
#define STORE_ERR_DUPLICATE_KEY          11000
#define STORE_ERR_UNRECOGNIZED_STAGE     40324

struct store; /* every database and collection of one simulated deployment */

/* Creates an empty store. Returns NULL only if memory is exhausted. */
struct store *store_new(void);

/* Frees the store and every document in it. Result sets already handed out stay valid. */
void store_free(struct store *s);

/* A result set that a cursor serves in batches: documents owned by the set. */
struct store_results {
    bson_t **docs;
    size_t n;
    size_t cap;
};

/* Frees every document of r and its array, and leaves r zeroed (so it can be reused). */
void store_results_free(struct store_results *r);

/* A MongoDB-style error to put in a reply: {ok:0, errmsg, code, codeName}. */
struct store_error {
    int code;
    char code_name[64];
    char errmsg[256];
};

/*
 * A transaction's undo log: writes made with a non-NULL txn are recorded so that store_txn_abort
 * can roll them back (commit just drops the log). Inserts, updates, deletes and implicit or
 * explicit collection creation are undone; drop and dropDatabase are not recorded (MongoDB
 * refuses them inside a transaction anyway, and the caller should too).
 */
struct store_txn;

/* Creates an empty undo log. Returns NULL only if memory is exhausted. */
struct store_txn *store_txn_new(void);

/* Keeps the transaction's writes and frees t. t may be NULL. */
void store_txn_commit(struct store *s, struct store_txn *t);

/* Undoes the transaction's writes, newest first, and frees t. t may be NULL. */
void store_txn_abort(struct store *s, struct store_txn *t);

/*
 * Snapshot isolation (as MongoDB's transactions have it). The simulator runs a transaction on a
 * private copy of the data taken at its first statement (store_clone), with an undo log that
 * names every document it wrote; nobody else sees those writes until store_txn_publish copies the
 * final state of each into the live store at commit, as one oplog batch.
 */

/* How many writes t has recorded (a statement's writes are those past the count before it). */
size_t store_txn_len(const struct store_txn *t);

/*
 * Whether the writes of t from number `from` on conflict, as MongoDB's WriteConflict: a document
 * written that live holds in another state than the transaction's snapshot had (someone changed
 * it since; compared by value), or that one of the other open transactions (others, n_others;
 * t itself and NULLs are skipped) has written too.
 */
bool store_txn_conflicts(const struct store_txn *t, size_t from, const struct store *live,
                         const struct store_txn *const *others, size_t n_others);

/* Copies the writes of t, made on snap, into live (the final state in snap of every document t
 * wrote, and the collections it created), recording them in live's oplog with one commit time;
 * frees t. Returns 0 or -ENOMEM. */
int store_txn_publish(struct store *live, const struct store *snap, struct store_txn *t);

/*
 * The outcomes of finished transactions, by session id (lsid.id, 16 bytes) and txnNumber: the
 * deployment-wide knowledge that a real deployment keeps in config.transactions and replicates, so
 * that a new primary, or the shard a mongos asks with a recoveryToken, can tell whether a
 * transaction committed. Only the latest STORE_TXN_OUTCOMES_MAX outcomes are kept, the oldest
 * being forgotten first, so that a long run does not grow without bound.
 */
enum store_txn_outcome {
    STORE_TXN_UNKNOWN = 0, /* never recorded, or forgotten */
    STORE_TXN_COMMITTED = 1,
    STORE_TXN_ABORTED = 2,
};

#define STORE_TXN_OUTCOMES_MAX 100000

/* Records (or updates) the outcome of one transaction. Returns 0, or -ENOMEM (nothing recorded),
 * or -EINVAL for STORE_TXN_UNKNOWN. */
int store_txn_outcome_set(struct store *s, const uint8_t *lsid, int64_t txn_number,
                          enum store_txn_outcome outcome);

/* The recorded outcome of a transaction, or STORE_TXN_UNKNOWN. */
enum store_txn_outcome store_txn_outcome_get(const struct store *s, const uint8_t *lsid,
                                             int64_t txn_number);

/* How many outcomes are remembered now (at most the bound). */
size_t store_txn_outcome_count(const struct store *s);

/* Changes the bound (1 to UINT32_MAX - 1) and forgets every outcome; tests use a small bound to
 * see the oldest dropped. Returns 0 or -EINVAL. */
int store_txn_outcome_limit(struct store *s, size_t max);

/*
 * Runs one command against the store.
 *  db:      the command's $db.
 *  cmd:     the command body (first key is the command name).
 *  seq_docs/n_seq: documents from an OP_MSG kind-1 section (insert "documents", update "updates",
 *           delete "deletes"), used in addition to the same-named array in cmd; may be NULL/0.
 *  reply:   initialised empty by the caller; on success the command's result fields are appended
 *           (n, nModified, upserted, writeErrors, value/lastErrorObject, ...) and then "ok":1.0.
 *  results: for cursor-producing commands (find, aggregate, listCollections, listIndexes) this is
 *           filled with ALL result documents and nothing cursor-related is put in reply: the
 *           caller builds {cursor:{id, ns, firstBatch}} itself. *is_cursor is set to true and the
 *           cursor namespace is written into ns_out ("db.coll", "db.$cmd.listCollections",
 *           "db.$cmd.aggregate"). For other commands *is_cursor is false and results untouched.
 *  txn:     NULL, or the transaction to record undo entries into.
 * Returns 0, or a negative errno-style value with *err filled (the caller turns it into
 * {ok:0, errmsg, code, codeName}); reply may then hold partial fields and should be discarded.
 * Unknown command names return -ENOENT with code 59 CommandNotFound ("no such command: 'x'").
 */
int store_exec(struct store *s, const char *db, const bson_t *cmd, const bson_t *const *seq_docs,
               size_t n_seq, bson_t *reply, struct store_results *results, bool *is_cursor,
               char *ns_out, size_t ns_len, struct store_txn *txn, struct store_error *err);

/* Returns the number of documents in db.coll, 0 if it does not exist. O(1). */
size_t store_count_docs(struct store *s, const char *db, const char *coll);

/* Returns the number of collections in db, 0 if the database does not exist. */
size_t store_count_collections(struct store *s, const char *db);

/* Returns true if db.coll exists. */
bool store_has_collection(struct store *s, const char *db, const char *coll);

/*
 * Replication. A replica set whose members keep their own data gives the primary's store an oplog:
 * from then on the store appends every change it makes (inserts, updates and deletes as whole
 * documents by _id, collection creations with their UUID, drops), each stamped with the oplog's
 * clock. A transaction's changes are appended when it commits (store_txn_commit), all with the
 * commit's time, and never if it aborts, as MongoDB writes a transaction's oplog entry at commit.
 * A secondary's store, a copy made with store_clone, applies the entries in order with
 * store_oplog_apply. Entries are numbered from 0 in the order they were appended; a member that
 * applied n entries has applied numbers 0 .. n-1.
 */
struct store_oplog;

/* Creates an empty oplog whose entries are stamped with clock(arg), a wall time in ms. NULL only
 * if memory is exhausted. */
struct store_oplog *store_oplog_new(int64_t (*clock)(void *arg), void *arg);

/* Frees the oplog and its entries; the stores that recorded into it must not any more. */
void store_oplog_free(struct store_oplog *log);

/* Makes s record its changes into log from now on; NULL stops recording. */
void store_set_oplog(struct store *s, struct store_oplog *log);

/* How many entries were ever appended (trimmed ones included): the number the next one gets. */
uint64_t store_oplog_count(const struct store_oplog *log);

/* The time of entry number, or -1 if it was trimmed or does not exist yet. */
int64_t store_oplog_time(const struct store_oplog *log, uint64_t number);

/*
 * Applies to s, in order, the entries from number *applied on whose time is at most until_ms
 * (INT64_MAX: all of them), advancing *applied past each one. Application is idempotent, as
 * MongoDB's is. Returns how many were applied, -ERANGE if entry *applied was trimmed already, or
 * -ENOMEM (then *applied stops before the entry that failed).
 */
int store_oplog_apply(struct store *s, const struct store_oplog *log, uint64_t *applied,
                      int64_t until_ms);

/* Forgets the entries numbered below upto, which every member has applied. */
void store_oplog_trim(struct store_oplog *log, uint64_t upto);

/* Forgets the entries numbered upto and above: a dead primary's writes that no live member had
 * when another was elected, which a replica set rolls back. */
void store_oplog_truncate(struct store_oplog *log, uint64_t upto);

/* Like store_oplog_apply, but bounded by entry number rather than time: applies entries up to
 * number upto - 1. */
int store_oplog_apply_upto(struct store *s, const struct store_oplog *log, uint64_t *applied,
                           uint64_t upto);

/* A copy of every database, collection (with its UUID) and document of src, for a new secondary;
 * no oplog and no transaction outcomes. NULL if memory is exhausted. */
struct store *store_clone(const struct store *src);

/*
 * Compares two BSON values in MongoDB's order: first by canonical type (MinKey < null < numbers <
 * strings < objects < arrays < binData < ObjectId < bool < date < timestamp < regex < MaxKey), then
 * by value, numbers compared by value across int32/int64/double/decimal128. a or b may be NULL
 * (a missing field), which sorts like null. Returns <0, 0 or >0.
 */
int store_compare_values(const bson_iter_t *a, const bson_iter_t *b);

#endif
