/*
 * sim_errors.c: the error labels of a simulated server. See sim_errors.h.
 *
 * The server attaches labels after a command has run, from its error code and the code of its
 * write-concern error. The lists below follow the server's error_codes.yml categories for the
 * versions the simulator can pretend to be (4.0 to 8.0); codes that the server only uses between
 * its own nodes are left out, since no client ever sees them.
 */
#include "sim_errors.h"

bool sim_error_is_retriable(int32_t code, int wire)
{
    switch (code) {
    case 6:     /* HostUnreachable */
    case 7:     /* HostNotFound */
    case 89:    /* NetworkTimeout */
    case 91:    /* ShutdownInProgress */
    case 189:   /* PrimarySteppedDown */
    case 262:   /* ExceededTimeLimit */
    case 9001:  /* SocketException */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 13436: /* NotPrimaryOrSecondary */
        return true;
    case 134: /* ReadConcernMajorityNotAvailableYet, retriable since SERVER-68328 (2022) */
    case 358: /* InternalTransactionNotSupported, new in 6.0 */
        return wire >= SIM_WIRE_6_0;
    default:
        return false;
    }
}

/* The server's SnapshotError and NeedRetargettingError categories, and the other codes it always
 * treats as transient inside a transaction. */
static bool always_transient(int32_t code)
{
    switch (code) {
    case 24:    /* LockTimeout */
    case 112:   /* WriteConflict */
    case 249:   /* StaleDbVersion */
    case 267:   /* PreparedTransactionInProgress */
    case 343:   /* ShardCannotRefreshDueToLocksHeld */
    case 239:   /* SnapshotTooOld */
    case 246:   /* SnapshotUnavailable */
    case 250:   /* StaleChunkHistory */
    case 272:   /* MigrationConflict */
    case 63:    /* StaleShardVersion */
    case 150:   /* StaleEpoch */
    case 13388: /* StaleConfig */
        return true;
    default:
        return false;
    }
}

bool sim_error_is_transient_txn(int32_t code, bool has_wce, bool commit_or_abort, int wire)
{
    /* A retriable error that the server still keeps out of this label: retrying the whole
     * transaction would not help, while retrying the write outside one does. */
    if (code == 358)
        return false;
    if (always_transient(code))
        return true;
    if (commit_or_abort)
        return code == 251 && !has_wce; /* NoSuchTransaction: nothing can have been committed */
    return code == 251 || sim_error_is_retriable(code, wire);
}

unsigned sim_error_labels(const struct sim_label_input *in)
{
    if (in->code && in->has_txn_number && in->has_autocommit && in->wire >= SIM_WIRE_4_0 &&
        sim_error_is_transient_txn(in->code, in->wc_code != 0, in->commit_or_abort, in->wire))
        return SIM_LABEL_TRANSIENT_TXN;
    /* Before 4.4 the driver decides from the code; a mongos leaves the label to the shards, which
     * do not give it to a mongos, so its clients only see it when the mongos itself shuts down. */
    if (in->mongos || in->wire < SIM_WIRE_4_4 || !in->has_txn_number)
        return 0;
    bool retryable_write = !in->has_autocommit;
    bool commit_or_abort = in->has_autocommit && in->commit_or_abort;
    if (!retryable_write && !commit_or_abort)
        return 0;
    if ((in->code && sim_error_is_retriable(in->code, in->wire)) ||
        (in->wc_code && sim_error_is_retriable(in->wc_code, in->wire)))
        return SIM_LABEL_RETRYABLE_WRITE;
    return 0;
}
