/*
 * mongo_errors.h: the MongoDB error codes that change what a router does, in one place.
 *
 * The lists come from the drivers' specifications: SDAM's "not writable primary" and "node is
 * recovering" codes, the retryable-writes specification's codes for servers older than 4.4 (later
 * servers label such errors RetryableWriteError themselves), and the retryable-reads
 * specification's codes. The daemon and the simulator both use them.
 */
#ifndef MONGOLB_MONGO_ERRORS_H
#define MONGOLB_MONGO_ERRORS_H

#include <stdbool.h>
#include <stdint.h>

/* "Not writable primary" (10107, 13435, 10058) or "node is recovering" (11600, 11602, 13436,
 * 189, 91): the server is no longer what the topology says. */
bool mongo_error_is_state_change(int32_t code);

/* Codes after which a retryable write may be retried (the pre-4.4 list). */
bool mongo_error_is_retryable_write(int32_t code);

/* Codes after which a read may be retried. */
bool mongo_error_is_retryable_read(int32_t code);

/* Codes that mean the command did not run at all on that server, so running it elsewhere is
 * safe even for a write that is not retryable. */
bool mongo_error_not_run(int32_t code);

#endif
