/*
 * log.h: leveled logging to stderr, one line per event, for systemd's journal.
 *
 * Every line carries a level and, where it concerns one connection, that connection's prefix
 * (e.g. "c42 127.0.0.1:51234" or "b7 10.0.0.1:27017"), so a connection's story can be grepped.
 * Debug lines cost one comparison when debug is off.
 *
 * Two formats (log_format): text, "<time> <level> [<prefix>] <message> key=value ...", and json,
 * one object per line {"ts", "level", "conn", "msg", and the event's fields}. When stderr is
 * the journal's stream (JOURNAL_STREAM names stderr's device and inode, as systemd sets it), each
 * line starts with its syslog priority ("<4>" for warn) and carries no time of its own: the
 * journal stamps and classifies it.
 */
#ifndef MONGOLB_LOG_H
#define MONGOLB_LOG_H

#include <stdbool.h>

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

enum log_format {
    LOG_FORMAT_TEXT = 0,
    LOG_FORMAT_JSON = 1,
};

extern enum log_level log_current_level;
extern enum log_format log_current_format;
/* True when lines go to the journal (see above). */
extern bool log_journald;

/* Parses "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

/* Sets log_journald from JOURNAL_STREAM and stderr (once, at start). */
void log_detect_journald(void);

/* Writes one line: "<time> <level> [<prefix>] <message>". prefix may be NULL. */
void log_write(enum log_level l, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A field of a structured line: a string (str non-NULL) or a number. */
struct log_field {
    const char *key;
    const char *str;
    long long num;
};

/* Writes one line with fields: text appends key=value (strings quoted when they hold spaces),
 * json adds them as members. */
void log_write_fields(enum log_level l, const char *prefix, const char *msg,
                      const struct log_field *fields, int n);

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
