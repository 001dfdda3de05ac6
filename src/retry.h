/*
 * retry.h: what may be tried again, and which error labels an error carries.
 *
 * Pure policy, from the drivers' retryable-reads, retryable-writes and transactions
 * specifications, applied by a proxy that sees every backend:
 *  - a request that never reached a server may go elsewhere; so may a retryable read, a retryable
 *    write (the server's record of its txnNumber applies it once however often it arrives), and
 *    commitTransaction/abortTransaction, which the specification makes retryable;
 *  - other commands inside a transaction may not: the transaction is lost with its server and the
 *    driver retries it whole, which the TransientTransactionError label tells it to do;
 *  - at most RETRY_MAX_ATTEMPTS attempts (the caller also holds the request's deadline).
 */
#ifndef MONGOLB_RETRY_H
#define MONGOLB_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "reply.h"
#include "request.h"

#define RETRY_MAX_ATTEMPTS 3

/* commitTransaction or abortTransaction. */
bool retry_is_txn_end(const struct request_info *ri);
/* A retryable write: drivers attach a txnNumber outside a transaction only to those. */
bool retry_is_retryable_write(const struct request_info *ri);

/* Whether an attempt that failed on the network (may_have_reached: the request may have reached
 * the server) may be made again, after `attempts` attempts. */
bool retry_may(const struct request_info *ri, int attempts, bool may_have_reached);

/* Whether an error reply is taken back and the request routed again rather than relayed: an error
 * that means the command did not run (outside a transaction, whatever the command), a retryable
 * write or commit/abort labelled RetryableWriteError, and a retryable read with a retryable
 * code. */
bool retry_take_back(const struct request_info *ri, int attempts, int32_t code, bool retry_label);

/* The labels an error mongolb makes itself carries (code is the MongoDB code it returns). Fills
 * labels (at most 2) and returns how many. */
int retry_error_labels(const struct request_info *ri, int32_t code, const char **labels);

/* Appends {errorLabels: [labels...]} to doc (nothing when n is 0). */
void retry_append_labels(bson_t *doc, const char *const *labels, int n);

#endif
