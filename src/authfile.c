/*
 * authfile.c: the auth_file of SCRAM verifiers (format in authfile.h): parsed line by line
 * without recursion, every field bounded, all errors collected as "<file>:<line>: <reason>";
 * entries kept sorted by (db, user, mechanism) so that a lookup is a binary search and duplicates
 * are neighbours. Every copy of a verifier is wiped before its memory is given back.
 */
#include "authfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/* --- names ------------------------------------------------------------------------------------ */

int authfile_db_ok(const char *db, size_t len)
{
    if (!db || len == 0 || len > AUTHFILE_MAX_DB)
        return 0;
    if (len == 9 && memcmp(db, "$external", 9) == 0)
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)db[i];
        /* MongoDB's forbidden characters in database names, and '#' for the comment syntax. */
        if (c <= 0x20 || c >= 0x7f || strchr("/\\.\"$*<>:|?#", c))
            return 0;
    }
    return 1;
}

int authfile_user_ok(const char *user, size_t len)
{
    if (!user || len == 0 || len > SCRAM_MAX_USER)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c <= 0x20 || c == 0x7f || c == '#')
            return 0;
    }
    return 1;
}

/* --- errors ----------------------------------------------------------------------------------- */

struct errlist {
    char *buf;
    size_t cap, len;
    unsigned count;
    const char *name;
};

static void err_add(struct errlist *e, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends "<name>:<line>: <text>\n" (line 0: "<name>: <text>"), cut at the buffer's end. */
static void err_add(struct errlist *e, size_t line, const char *fmt, ...)
{
    e->count++;
    if (!e->buf || e->cap == 0 || e->count > AUTHFILE_ERRORS_SHOWN)
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    int n;
    if (line)
        n = snprintf(e->buf + e->len, e->cap - e->len, "%s:%zu: %s\n", e->name, line, text);
    else
        n = snprintf(e->buf + e->len, e->cap - e->len, "%s: %s\n", e->name, text);
    if (n > 0)
        e->len += (size_t)n < e->cap - e->len ? (size_t)n : e->cap - e->len - 1;
}

static void err_finish(struct errlist *e)
{
    if (!e->buf || e->cap == 0)
        return;
    if (e->count > AUTHFILE_ERRORS_SHOWN) {
        int n = snprintf(e->buf + e->len, e->cap - e->len, "%s: ... and %u more errors\n", e->name,
                         e->count - AUTHFILE_ERRORS_SHOWN);
        if (n > 0)
            e->len += (size_t)n < e->cap - e->len ? (size_t)n : e->cap - e->len - 1;
    }
    /* One error per line, without the last newline. */
    if (e->len > 0 && e->buf[e->len - 1] == '\n')
        e->buf[--e->len] = 0;
}

/* --- entries ---------------------------------------------------------------------------------- */

static int entry_cmp_key(const char *db, const char *user, enum scram_mech mech,
                         const struct authfile_entry *e)
{
    int c = strcmp(db, e->db);
    if (c == 0)
        c = strcmp(user, e->user);
    if (c == 0)
        c = (int)mech - (int)e->v.mech;
    return c;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct authfile_entry *x = a, *y = b;
    int c = entry_cmp_key(x->db, x->user, x->v.mech, y);
    if (c == 0) /* equal keys keep file order, so duplicates are reported at the later line */
        c = x->line < y->line ? -1 : x->line > y->line;
    return c;
}

static void entries_free(struct authfile_entry *e, size_t count)
{
    if (!e)
        return;
    OPENSSL_cleanse(e, count * sizeof(*e));
    free(e);
}

void authfile_free(struct authfile *f)
{
    if (!f)
        return;
    entries_free(f->entries, f->cap);
    f->entries = NULL;
    f->count = f->cap = 0;
}

/* Room for one more entry; grows by doubling, wiping the old block (realloc would not). */
static int reserve(struct authfile *f, size_t max_entries)
{
    if (f->count < f->cap)
        return 0;
    size_t ncap = f->cap ? f->cap * 2 : 16;
    if (ncap > max_entries)
        ncap = max_entries;
    if (ncap <= f->count)
        return -ENOSPC;
    struct authfile_entry *n = calloc(ncap, sizeof(*n));
    if (!n)
        return -ENOMEM;
    if (f->entries)
        memcpy(n, f->entries, f->count * sizeof(*n));
    entries_free(f->entries, f->cap);
    f->entries = n;
    f->cap = ncap;
    return 0;
}

/* --- parsing ---------------------------------------------------------------------------------- */

#define MAX_FIELDS 7 /* six, and one more to notice trailing text */

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses one line's fields into e; returns 0 or -EINVAL with the reason added to errs. */
static int parse_line(const char *p, size_t n, size_t lineno, struct errlist *errs,
                      struct authfile_entry *e)
{
    const char *f[MAX_FIELDS];
    size_t fl[MAX_FIELDS], nf = 0, i = 0;
    while (i < n) {
        while (i < n && is_blank(p[i]))
            i++;
        if (i >= n)
            break;
        if (nf == MAX_FIELDS)
            break;
        f[nf] = p + i;
        while (i < n && !is_blank(p[i]))
            i++;
        fl[nf] = (size_t)(p + i - f[nf]);
        nf++;
    }
    if (nf != 6) {
        err_add(errs, lineno,
                "%s: expected 6 fields (<db>.<user> <mechanism> <iterations> <salt> <storedKey> "
                "<serverKey>), found %s%zu",
                nf > 6 ? "trailing text" : "missing fields", nf > 6 ? "more than " : "",
                nf > 6 ? (size_t)6 : nf);
        return -EINVAL;
    }
    const char *dot = memchr(f[0], '.', fl[0]);
    if (!dot) {
        err_add(errs, lineno, "'%.*s': the name must be <db>.<user>",
                (int)(fl[0] > 80 ? 80 : fl[0]), f[0]);
        return -EINVAL;
    }
    size_t dbl = (size_t)(dot - f[0]), ul = fl[0] - dbl - 1;
    if (!authfile_db_ok(f[0], dbl)) {
        err_add(errs, lineno,
                "'%.*s' is not a valid database name (1..%d characters, none of "
                "/\\. \"$*<>:|?#)",
                (int)(dbl > 80 ? 80 : dbl), f[0], AUTHFILE_MAX_DB);
        return -EINVAL;
    }
    if (!authfile_user_ok(dot + 1, ul)) {
        err_add(errs, lineno,
                "the user name is empty, longer than %d bytes or has a control "
                "character or '#'",
                SCRAM_MAX_USER);
        return -EINVAL;
    }
    enum scram_mech mech;
    if (scram_mech_parse(f[1], fl[1], &mech) < 0) {
        err_add(errs, lineno, "'%.*s': the mechanism must be SCRAM-SHA-1 or SCRAM-SHA-256",
                (int)(fl[1] > 40 ? 40 : fl[1]), f[1]);
        return -EINVAL;
    }
    uint64_t it = 0;
    int num_ok = fl[2] > 0 && fl[2] <= 10 && f[2][0] != '0';
    for (size_t k = 0; num_ok && k < fl[2]; k++) {
        if (f[2][k] < '0' || f[2][k] > '9')
            num_ok = 0;
        else
            it = it * 10 + (uint64_t)(f[2][k] - '0');
    }
    if (!num_ok || it < SCRAM_MIN_ITERATIONS || it > SCRAM_MAX_ITERATIONS) {
        err_add(errs, lineno, "'%.*s': the iteration count must be a whole number from %d to %d",
                (int)(fl[2] > 20 ? 20 : fl[2]), f[2], SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS);
        return -EINVAL;
    }
    memset(e, 0, sizeof(*e));
    if (scram_verifier_from_b64(mech, (uint32_t)it, f[3], fl[3], f[4], fl[4], f[5], fl[5], &e->v) <
        0) {
        /* The values are secrets: the message names the fields, never their content. */
        err_add(errs, lineno,
                "the salt must be base64 of 1..%d bytes and storedKey and serverKey base64 of "
                "%zu bytes each for %s",
                SCRAM_MAX_SALT, scram_key_len(mech), scram_mech_name(mech));
        return -EINVAL;
    }
    memcpy(e->db, f[0], dbl);
    e->db[dbl] = 0;
    memcpy(e->user, dot + 1, ul);
    e->user[ul] = 0;
    e->line = lineno;
    return 0;
}

int authfile_parse(const char *text, size_t len, const char *name_for_errors, size_t max_entries,
                   struct authfile *out, char *err, size_t err_len)
{
    if (!out || (!text && len))
        return -EINVAL;
    struct errlist errs = {err, err_len, 0, 0, name_for_errors ? name_for_errors : "auth_file"};
    if (err && err_len)
        err[0] = 0;
    authfile_free(out);
    struct authfile f = {0};
    int rc = 0;

    size_t pos = 0, lineno = 0;
    while (pos < len) {
        lineno++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *p = text + pos;
        size_t n = end - pos;
        pos = nl ? end + 1 : len;
        if (memchr(p, 0, n)) {
            err_add(&errs, lineno, "the line has a NUL byte in it; an auth file is plain text");
            continue;
        }
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n > AUTHFILE_MAX_LINE) {
            err_add(&errs, lineno, "the line is longer than %d bytes", AUTHFILE_MAX_LINE);
            continue;
        }
        size_t i = 0;
        while (i < n && is_blank(p[i]))
            i++;
        if (i == n || p[i] == '#')
            continue;
        if (f.count >= max_entries) {
            err_add(&errs, lineno, "more than %zu entries, the most allowed", max_entries);
            break;
        }
        struct authfile_entry e;
        if (parse_line(p + i, n - i, lineno, &errs, &e) < 0)
            continue;
        rc = reserve(&f, max_entries);
        if (rc < 0) {
            OPENSSL_cleanse(&e, sizeof(e));
            err_add(&errs, 0, "out of memory");
            break;
        }
        f.entries[f.count++] = e;
        OPENSSL_cleanse(&e, sizeof(e));
    }
    if (f.count > 1) {
        qsort(f.entries, f.count, sizeof(*f.entries), entry_cmp);
        for (size_t i = 1; i < f.count; i++) {
            const struct authfile_entry *a = &f.entries[i - 1], *b = &f.entries[i];
            if (entry_cmp_key(a->db, a->user, a->v.mech, b) == 0)
                err_add(&errs, b->line, "%s.%s %s is listed twice (first at line %zu)", b->db,
                        b->user, scram_mech_name(b->v.mech), a->line);
        }
    }
    if (errs.count > 0) {
        err_finish(&errs);
        authfile_free(&f);
        return rc == -ENOMEM ? -ENOMEM : -EINVAL;
    }
    *out = f;
    return 0;
}

int authfile_load(const char *path, int check_mode, size_t max_entries, struct authfile *out,
                  char *err, size_t err_len)
{
    if (!path || !out)
        return -EINVAL;
    if (err && err_len)
        err[0] = 0;
    authfile_free(out); /* on failure, *out is empty as after a failed parse */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, err_len, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    size_t len = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, err_len, "%s: not a regular file", path);
    } else if (check_mode && (st.st_mode & 077)) {
        rc = -EPERM;
        snprintf(err, err_len,
                 "%s: group or others may access it (mode %04o); it holds SCRAM verifiers: "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 07777));
    } else if ((uint64_t)st.st_size > AUTHFILE_MAX_SIZE) {
        rc = -EFBIG;
        snprintf(err, err_len, "%s: the file is larger than %u bytes, the most an auth file may be",
                 path, AUTHFILE_MAX_SIZE);
    }
    if (rc == 0) {
        /* One byte more than the limit tells a file that grew since fstat. */
        buf = malloc(AUTHFILE_MAX_SIZE + 1);
        if (!buf) {
            rc = -ENOMEM;
            snprintf(err, err_len, "%s: out of memory", path);
        }
    }
    while (rc == 0 && len <= AUTHFILE_MAX_SIZE) {
        ssize_t r = read(fd, buf + len, AUTHFILE_MAX_SIZE + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, err_len, "%s: %s", path, strerror(-rc));
        }
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (rc == 0 && len > AUTHFILE_MAX_SIZE) {
        rc = -EFBIG;
        snprintf(err, err_len, "%s: the file is larger than %u bytes, the most an auth file may be",
                 path, AUTHFILE_MAX_SIZE);
    }
    if (rc == 0)
        rc = authfile_parse(buf, len, path, max_entries, out, err, err_len);
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    return rc;
}

/* --- lookup ----------------------------------------------------------------------------------- */

const struct scram_verifier *authfile_lookup(const struct authfile *f, const char *db,
                                             const char *user, enum scram_mech mech)
{
    if (!f || !f->entries || !db || !user)
        return NULL;
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = entry_cmp_key(db, user, mech, &f->entries[mid]);
        if (c == 0)
            return &f->entries[mid].v;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

unsigned authfile_mechs(const struct authfile *f, const char *db, const char *user)
{
    unsigned m = 0;
    if (authfile_lookup(f, db, user, SCRAM_SHA_1))
        m |= 1u << SCRAM_SHA_1;
    if (authfile_lookup(f, db, user, SCRAM_SHA_256))
        m |= 1u << SCRAM_SHA_256;
    return m;
}

/* --- writing ---------------------------------------------------------------------------------- */

int authfile_format_verifier(const char *db, const char *user, const struct scram_verifier *v,
                             char *out, size_t cap)
{
    if (!db || !user || !v || !out || !authfile_db_ok(db, strlen(db)) ||
        !authfile_user_ok(user, strlen(user)) || scram_key_len(v->mech) == 0 || v->salt_len == 0 ||
        v->salt_len > SCRAM_MAX_SALT || v->iterations < SCRAM_MIN_ITERATIONS ||
        v->iterations > SCRAM_MAX_ITERATIONS)
        return -EINVAL;
    size_t kl = scram_key_len(v->mech);
    char salt[SCRAM_MAX_SALT * 2], stored[SCRAM_MAX_KEY * 2], server[SCRAM_MAX_KEY * 2];
    scram_b64_encode(v->salt, v->salt_len, salt, sizeof(salt));
    scram_b64_encode(v->stored_key, kl, stored, sizeof(stored));
    scram_b64_encode(v->server_key, kl, server, sizeof(server));
    int n = snprintf(out, cap, "%s.%s %s %u %s %s %s\n", db, user, scram_mech_name(v->mech),
                     v->iterations, salt, stored, server);
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            OPENSSL_cleanse(out, cap);
        return -ENOSPC;
    }
    return n;
}

int authfile_make_line(enum scram_mech mech, const char *db, const char *user, const char *password,
                       uint32_t iterations, char *out, size_t cap)
{
    if (scram_key_len(mech) == 0 || !db || !user || !password || !authfile_db_ok(db, strlen(db)) ||
        !authfile_user_ok(user, strlen(user)))
        return -EINVAL;
    if (iterations == 0)
        iterations = mech == SCRAM_SHA_1 ? AUTHFILE_ITER_SHA1 : AUTHFILE_ITER_SHA256;
    size_t salt_len = mech == SCRAM_SHA_1 ? AUTHFILE_SALT_SHA1 : AUTHFILE_SALT_SHA256;
    uint8_t salt[SCRAM_MAX_SALT];
    if (RAND_bytes(salt, (int)salt_len) != 1)
        return -EIO;
    struct scram_verifier v;
    int rc = scram_verifier_derive(mech, user, password, salt, salt_len, iterations, &v);
    if (rc == 0)
        rc = authfile_format_verifier(db, user, &v, out, cap);
    scram_verifier_wipe(&v);
    return rc;
}
