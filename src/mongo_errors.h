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

/* The codes mongolb itself returns, with the names MongoDB gives them. */
#define MONGO_ERR_BAD_VALUE                  2
#define MONGO_ERR_HOST_UNREACHABLE           6
#define MONGO_ERR_FAILED_TO_PARSE            9
#define MONGO_ERR_UNAUTHORIZED               13
#define MONGO_ERR_PROTOCOL_ERROR             17
#define MONGO_ERR_AUTHENTICATION_FAILED      18
#define MONGO_ERR_CURSOR_NOT_FOUND           43
#define MONGO_ERR_NETWORK_TIMEOUT            89
#define MONGO_ERR_SHUTDOWN_IN_PROGRESS       91
#define MONGO_ERR_INTERRUPTED_AT_SHUTDOWN    11600
#define MONGO_ERR_FAILED_READ_PREF           133
#define MONGO_ERR_MAX_STALENESS_OUT_OF_RANGE 160
#define MONGO_ERR_NETWORK_IFACE_TIMEOUT      202
#define MONGO_ERR_NO_SUCH_TRANSACTION        251
#define MONGO_ERR_MECHANISM_UNAVAILABLE      334
#define MONGO_ERR_TOO_MANY_CONNECTIONS       9001 /* SocketException, as a refused connection */

/* The name MongoDB gives a code mongolb returns, or "UnknownError". */
const char *mongo_error_name(int32_t code);

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
