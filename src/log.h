/*
 * log.h: leveled logging to stderr, one line per event, for systemd's journal.
 *
 * Every line carries a level and, where it concerns one connection, that connection's prefix
 * (e.g. "c42 127.0.0.1:51234" or "b7 10.0.0.1:27017"), so a connection's story can be grepped.
 * Debug lines cost one comparison when debug is off.
 */
#ifndef MONGOLB_LOG_H
#define MONGOLB_LOG_H

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

extern enum log_level log_current_level;

/* Parses "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

/* Writes one line: "<time> <level> [<prefix>] <message>". prefix may be NULL. */
void log_write(enum log_level l, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(l, prefix, ...)                                                                     \
    do {                                                                                           \
        if ((l) <= log_current_level)                                                              \
            log_write((l), (prefix), __VA_ARGS__);                                                 \
    } while (0)

#define log_error(prefix, ...) log_at(LOG_ERROR, prefix, __VA_ARGS__)
#define log_warn(prefix, ...)  log_at(LOG_WARN, prefix, __VA_ARGS__)
#define log_info(prefix, ...)  log_at(LOG_INFO, prefix, __VA_ARGS__)
#define log_debug(prefix, ...) log_at(LOG_DEBUG, prefix, __VA_ARGS__)

#endif
