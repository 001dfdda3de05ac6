/*
 * mongo_errors.c: the MongoDB error codes that change what a router does. See mongo_errors.h.
 */
#include "mongo_errors.h"

bool mongo_error_is_state_change(int32_t code)
{
    switch (code) {
    case 10107: /* NotWritablePrimary */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 10058: /* LegacyNotPrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13436: /* NotPrimaryOrSecondary */
    case 189:   /* PrimarySteppedDown */
    case 91:    /* ShutdownInProgress */
        return true;
    default:
        return false;
    }
}

bool mongo_error_is_retryable_write(int32_t code)
{
    switch (code) {
    case 6:    /* HostUnreachable */
    case 7:    /* HostNotFound */
    case 89:   /* NetworkTimeout */
    case 91:   /* ShutdownInProgress */
    case 189:  /* PrimarySteppedDown */
    case 262:  /* ExceededTimeLimit */
    case 9001: /* SocketException */
    case 10107:
    case 11600:
    case 11602:
    case 13435:
    case 13436:
        return true;
    default:
        return false;
    }
}

bool mongo_error_is_retryable_read(int32_t code)
{
    /* The retryable-writes list plus 134 ReadConcernMajorityNotAvailableYet. */
    return code == 134 || mongo_error_is_retryable_write(code);
}

bool mongo_error_not_run(int32_t code)
{
    return code == 10107 || code == 13435 || code == 13436;
}

const char *mongo_error_name(int32_t code)
{
    switch (code) {
    case MONGO_ERR_BAD_VALUE:
        return "BadValue";
    case MONGO_ERR_HOST_UNREACHABLE:
        return "HostUnreachable";
    case MONGO_ERR_FAILED_TO_PARSE:
        return "FailedToParse";
    case MONGO_ERR_UNAUTHORIZED:
        return "Unauthorized";
    case MONGO_ERR_PROTOCOL_ERROR:
        return "ProtocolError";
    case MONGO_ERR_AUTHENTICATION_FAILED:
        return "AuthenticationFailed";
    case MONGO_ERR_MECHANISM_UNAVAILABLE:
        return "MechanismUnavailable";
    case MONGO_ERR_CURSOR_NOT_FOUND:
        return "CursorNotFound";
    case MONGO_ERR_NETWORK_TIMEOUT:
        return "NetworkTimeout";
    case MONGO_ERR_SHUTDOWN_IN_PROGRESS:
        return "ShutdownInProgress";
    case MONGO_ERR_FAILED_READ_PREF:
        return "FailedToSatisfyReadPreference";
    case MONGO_ERR_MAX_STALENESS_OUT_OF_RANGE:
        return "MaxStalenessOutOfRange";
    case MONGO_ERR_NETWORK_IFACE_TIMEOUT:
        return "NetworkInterfaceExceededTimeLimit";
    case MONGO_ERR_NO_SUCH_TRANSACTION:
        return "NoSuchTransaction";
    case MONGO_ERR_TOO_MANY_CONNECTIONS:
        return "SocketException";
    default:
        return "UnknownError";
    }
}
