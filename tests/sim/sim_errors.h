/*
 * sim_errors.h: which errorLabels a simulated server attaches to an error reply, decided the way
 * MongoDB's servers decide them, with the simulator's own code lists.
 *
 * The lists are written from the server's behaviour (its RetriableError category and its
 * transient-transaction rule), not taken from mongolb's src/mongo_errors.c: the simulator is the
 * reference that mongolb is tested against, so a wrong list on one side must not pass on both.
 */
#ifndef MONGOSIM_SIM_ERRORS_H
#define MONGOSIM_SIM_ERRORS_H

#include <stdbool.h>
#include <stdint.h>

/* Wire versions at which the servers' rules changed. */
#define SIM_WIRE_4_0 7  /* transactions, and the TransientTransactionError label */
#define SIM_WIRE_4_4 9  /* the server labels RetryableWriteError itself */
#define SIM_WIRE_6_0 17 /* RetriableError gained codes 134 and 358 */

/* Whether a server of wire version wire counts code in its RetriableError category: the
 * not-primary and shutting-down codes, network errors and ExceededTimeLimit. */
bool sim_error_is_retriable(int32_t code, int wire);

/*
 * Whether an error with this code leaves a transaction safe to run again from the start, by the
 * server's rule: write conflicts, lock timeouts, snapshot and routing errors always; for
 * commitTransaction and abortTransaction only NoSuchTransaction without a write-concern error (the
 * outcome of a commit is otherwise unknown); for other commands any retriable error and
 * NoSuchTransaction.
 */
bool sim_error_is_transient_txn(int32_t code, bool has_wce, bool commit_or_abort, int wire);

/* What the label decision looks at: the server, the command's session fields and its errors. */
struct sim_label_input {
    bool mongos;          /* a mongos never labels RetryableWriteError on its own errors */
    int wire;             /* the server's maxWireVersion */
    bool has_txn_number;  /* the command carried txnNumber */
    bool has_autocommit;  /* ... and autocommit (false): a statement of a transaction */
    bool commit_or_abort; /* commitTransaction or abortTransaction */
    int32_t code;         /* the command's error code, 0 when it succeeded */
    int32_t wc_code;      /* the writeConcernError's code, 0 when there is none */
};

#define SIM_LABEL_TRANSIENT_TXN   0x1 /* "TransientTransactionError" */
#define SIM_LABEL_RETRYABLE_WRITE 0x2 /* "RetryableWriteError" */

/*
 * The labels a server attaches, as SIM_LABEL_* bits. TransientTransactionError goes to statements
 * of a transaction (txnNumber and autocommit) whose error is transient; otherwise
 * RetryableWriteError goes to retryable writes (txnNumber without autocommit) and to
 * commitTransaction and abortTransaction whose error or write-concern error is retriable, from a
 * mongod of wire version 9 (4.4) or later. The two are never given together.
 */
unsigned sim_error_labels(const struct sim_label_input *in);

#endif
