/*
 * retry.c: retry and error-label policy. See retry.h.
 */
#include "retry.h"

#include <stdio.h>
#include <string.h>

#include "mongo_errors.h"

bool retry_is_txn_end(const struct request_info *ri)
{
    return strcmp(ri->command, "commitTransaction") == 0 ||
           strcmp(ri->command, "abortTransaction") == 0;
}

bool retry_is_retryable_write(const struct request_info *ri)
{
    return ri->kind == REQ_FORWARD && ri->has_txn_number && !ri->autocommit_false;
}

bool retry_may(const struct request_info *ri, int attempts, bool may_have_reached)
{
    if (attempts >= RETRY_MAX_ATTEMPTS || ri->kind != REQ_FORWARD)
        return false;
    if (retry_is_txn_end(ri))
        return true;
    if (ri->autocommit_false)
        return false;
    return !may_have_reached || ri->retryable_read || retry_is_retryable_write(ri);
}

bool retry_take_back(const struct request_info *ri, int attempts, int32_t code, bool retry_label)
{
    /* An error that says the command did not run at all is as if it never reached the server:
     * any command outside a transaction may go elsewhere, a plain write included. */
    if (mongo_error_not_run(code) && !ri->autocommit_false)
        return retry_may(ri, attempts, false);
    if (!retry_may(ri, attempts, true))
        return false;
    /* A mongos never labels its own errors RetryableWriteError, so the retryable-writes
     * specification's list of codes counts too; the server's record of the txnNumber applies a
     * retried write once whatever made it fail. */
    if ((retry_label || mongo_error_is_retryable_write(code)) &&
        (retry_is_retryable_write(ri) || retry_is_txn_end(ri)))
        return true;
    return code > 0 && ri->retryable_read && mongo_error_is_retryable_read(code);
}

int retry_error_labels(const struct request_info *ri, int32_t code, const char **labels)
{
    bool network = code == MONGO_ERR_HOST_UNREACHABLE || code == MONGO_ERR_NETWORK_TIMEOUT ||
                   code == MONGO_ERR_NETWORK_IFACE_TIMEOUT;
    int n = 0;
    if (strcmp(ri->command, "commitTransaction") == 0) {
        labels[n++] = "UnknownTransactionCommitResult";
        if (network)
            labels[n++] = "RetryableWriteError";
    } else if (strcmp(ri->command, "abortTransaction") == 0) {
        if (network)
            labels[n++] = "RetryableWriteError";
    } else if (ri->autocommit_false) {
        /* Every error mongolb makes inside a transaction comes from a server that failed or
         * cannot be chosen, CursorNotFound included (a cursor is forgotten only once its server
         * is gone): only running the transaction again can succeed. */
        labels[n++] = "TransientTransactionError";
    } else if (retry_is_retryable_write(ri) && network) {
        labels[n++] = "RetryableWriteError";
    }
    return n;
}

void retry_append_labels(bson_t *doc, const char *const *labels, int n)
{
    if (n <= 0)
        return;
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(doc, "errorLabels", &arr);
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", i);
        BSON_APPEND_UTF8(&arr, key, labels[i]);
    }
    bson_append_array_end(doc, &arr);
}
