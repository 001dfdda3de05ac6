/*
 * log.c: leveled logging to stderr, as text or JSON, with syslog priorities under journald.
 * See log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_current_level = LOG_INFO;
enum log_format log_current_format = LOG_FORMAT_TEXT;
bool log_journald;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities: err, warning, info, debug. */
static const int level_priority[] = {3, 4, 6, 7};

#define LINE_MAX_BYTES 4096

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level l)
{
    return (unsigned)l < 4 ? level_names[l] : "?";
}

void log_detect_journald(void)
{
    /* systemd sets JOURNAL_STREAM to "DEV:INO" of the stream it connected stderr to; a child
     * whose stderr was redirected elsewhere inherits the variable but not the stream. */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    log_journald = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
                   (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* A line being built, cut (never overrun) at LINE_MAX_BYTES less room for the ending. */
struct line {
    char buf[LINE_MAX_BYTES];
    size_t n;
};

static void put(struct line *ln, const char *s, size_t len)
{
    size_t room = sizeof(ln->buf) - 3 - ln->n; /* "}\n" and a spare byte stay free */
    if (len > room)
        len = room;
    memcpy(ln->buf + ln->n, s, len);
    ln->n += len;
}

static void puts_(struct line *ln, const char *s)
{
    put(ln, s, strlen(s));
}

static void putf(struct line *ln, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *ln, const char *fmt, ...)
{
    char tmp[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (k > 0)
        put(ln, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* Past this, strings are cut short so that a cut line still closes every string and the object. */
#define LINE_SOFT_END (LINE_MAX_BYTES - 128)

/* A JSON string: quotes, and escapes for '"', '\\' and control characters. */
static void put_json_str(struct line *ln, const char *s)
{
    puts_(ln, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p && ln->n < LINE_SOFT_END; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            put(ln, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            putf(ln, "\\u%04x", *p);
        } else {
            put(ln, (const char *)p, 1);
        }
    }
    puts_(ln, "\"");
}

static void begin(struct line *ln, enum log_level l, const char *prefix)
{
    ln->n = 0;
    if (log_journald)
        putf(ln, "<%d>", level_priority[(unsigned)l < 4 ? l : 2]);
    char ts[96] = "";
    if (!log_journald) {
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(tv.tv_usec / 1000));
    }
    if (log_current_format == LOG_FORMAT_JSON) {
        puts_(ln, "{");
        if (ts[0]) {
            puts_(ln, "\"ts\":");
            put_json_str(ln, ts);
            puts_(ln, ",");
        }
        puts_(ln, "\"level\":");
        put_json_str(ln, log_level_name(l));
        if (prefix) {
            puts_(ln, ",\"conn\":");
            put_json_str(ln, prefix);
        }
        return;
    }
    if (ts[0])
        putf(ln, "%s ", ts);
    putf(ln, "%-5s ", log_level_name(l));
    if (prefix)
        putf(ln, "[%s] ", prefix);
}

static void finish(struct line *ln)
{
    if (log_current_format == LOG_FORMAT_JSON)
        ln->buf[ln->n++] = '}';
    ln->buf[ln->n++] = '\n';
    /* One write per line, so lines from concurrent processes in a test do not interleave. */
    fwrite(ln->buf, 1, ln->n, stderr);
}

static void put_msg(struct line *ln, const char *msg)
{
    if (log_current_format == LOG_FORMAT_JSON) {
        puts_(ln, ",\"msg\":");
        put_json_str(ln, msg);
    } else {
        /* A message is one line: a peer's text with a newline in it must not forge another. */
        for (const char *p = msg; *p; p++)
            put(ln, *p == '\n' || *p == '\r' ? " " : p, 1);
    }
}

void log_write(enum log_level l, const char *prefix, const char *fmt, ...)
{
    static struct line ln;
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    begin(&ln, l, prefix);
    put_msg(&ln, msg);
    finish(&ln);
}

void log_write_fields(enum log_level l, const char *prefix, const char *msg,
                      const struct log_field *fields, int n)
{
    static struct line ln;
    begin(&ln, l, prefix);
    put_msg(&ln, msg);
    for (int i = 0; i < n && ln.n < LINE_SOFT_END; i++) {
        const struct log_field *f = &fields[i];
        if (log_current_format == LOG_FORMAT_JSON) {
            puts_(&ln, ",");
            put_json_str(&ln, f->key);
            puts_(&ln, ":");
            if (f->str)
                put_json_str(&ln, f->str);
            else
                putf(&ln, "%lld", f->num);
        } else if (f->str) {
            bool quote = f->str[0] == '\0' || strpbrk(f->str, " \t\"=") != NULL;
            putf(&ln, " %s=", f->key);
            if (quote) {
                /* "..." with \" and \\ escaped, so that the value's end is unambiguous. */
                puts_(&ln, "\"");
                for (const char *q = f->str; *q && ln.n < LINE_SOFT_END; q++) {
                    if (*q == '"' || *q == '\\')
                        puts_(&ln, "\\");
                    put(&ln, *q == '\n' || *q == '\r' ? " " : q, 1);
                }
                puts_(&ln, "\"");
            } else {
                put_msg(&ln, f->str);
            }
        } else {
            putf(&ln, " %s=%lld", f->key, f->num);
        }
    }
    finish(&ln);
}
