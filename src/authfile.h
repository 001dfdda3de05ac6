/*
 * authfile.h: the auth_file of SCRAM verifiers, parsed, looked up and written.
 *
 * Pure module apart from authfile_load(), which reads one file with stdio (at start and on
 * SIGHUP, like the configuration). No logging; errors are returned as text.
 *
 * The format: one line per user and mechanism,
 *
 *     <db>.<user> <mechanism> <iterations> <salt-b64> <storedKey-b64> <serverKey-b64>
 *
 * for example
 *
 *     # app users, copied from the cluster (usersInfo with showCredentials: true)
 *     app.alice SCRAM-SHA-256 15000 ZLeSXUkxJGQGhRbNYi4EsWgeGc8Uu3bQXnpa1g== ... ...
 *     admin.ops SCRAM-SHA-1 10000 rQ9ZY3MntBeuP3E1TDVC4w== ... ...
 *
 * Fields are separated by spaces or tabs. The name is split at its first '.': a database name
 * cannot contain one, a user name may. Database names are 1..AUTHFILE_MAX_DB bytes of printable
 * ASCII without '/', '\\', '"', '$' (except the whole name "$external") or '.'; user names are
 * 1..SCRAM_MAX_USER bytes without spaces, tabs, control characters or '#' (a limitation of the
 * format: such users cannot be listed). Lines starting with '#' (after blanks) and blank lines are
 * ignored; a line is at most AUTHFILE_MAX_LINE bytes; a (db, user, mechanism) may appear only once.
 * The salt is 1..SCRAM_MAX_SALT bytes, the keys exactly the digest length, the iteration count
 * within [SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS]. Every error is reported as
 * "<file>:<line>: <reason>", one per line, and the whole file is refused.
 *
 * Verifiers are secrets (an offline guessing oracle): the file must not be readable by others,
 * and authfile_free() wipes every entry.
 */
#ifndef MONGOLB_AUTHFILE_H
#define MONGOLB_AUTHFILE_H

#include <stddef.h>
#include <stdint.h>

#include "scram.h"

#define AUTHFILE_MAX_DB          64         /* bytes of a database name, as MongoDB */
#define AUTHFILE_MAX_LINE        1024       /* bytes of a line, newline excluded */
#define AUTHFILE_MAX_SIZE        (4u << 20) /* bytes of a whole file (authfile_load) */
#define AUTHFILE_DEFAULT_ENTRIES 10000      /* a sensible max_entries for callers */
#define AUTHFILE_ERRORS_SHOWN    20         /* errors listed before "... and N more" */

/* Default iteration counts for new verifiers: MongoDB's defaults. */
#define AUTHFILE_ITER_SHA256 15000
#define AUTHFILE_ITER_SHA1   10000
/* Salt lengths for new verifiers, as MongoDB generates them. */
#define AUTHFILE_SALT_SHA256 28
#define AUTHFILE_SALT_SHA1   16

struct authfile_entry {
    char db[AUTHFILE_MAX_DB + 1];
    char user[SCRAM_MAX_USER + 1];
    struct scram_verifier v; /* v.mech is the entry's mechanism */
    size_t line;             /* where it was in the file, for messages */
};

/*
 * A parsed file: an array of entries sorted by (db, user, mechanism), owned. Zero-initialise
 * before the first parse.
 */
struct authfile {
    struct authfile_entry *entries;
    size_t count;
    size_t cap; /* entries allocated */
};

/*
 * Parses text[0..len) (a NUL byte anywhere is an error) named name_for_errors in messages.
 * max_entries bounds the number of entries (more is an error). On success *out holds the entries
 * (any previous content is freed first) and 0 is returned. On failure *out is left empty, err
 * holds one "<name>:<line>: <reason>" per problem (cut at err_len, always NUL-terminated) and
 * -EINVAL (or -ENOMEM) is returned.
 */
int authfile_parse(const char *text, size_t len, const char *name_for_errors, size_t max_entries,
                   struct authfile *out, char *err, size_t err_len);

/*
 * Reads path and parses it. When check_mode is set, a file that its group or others may read or
 * write (mode & 077) is refused, as is anything but a regular file, and a file larger than
 * AUTHFILE_MAX_SIZE. Returns 0 or a negative errno code with the reason in err.
 */
int authfile_load(const char *path, int check_mode, size_t max_entries, struct authfile *out,
                  char *err, size_t err_len);

/* The verifier of (db, user, mech), or NULL. Exact, case-sensitive names. */
const struct scram_verifier *authfile_lookup(const struct authfile *f, const char *db,
                                             const char *user, enum scram_mech mech);

/*
 * The mechanisms (db, user) has in the file, as a bit mask of (1u << SCRAM_SHA_1) and
 * (1u << SCRAM_SHA_256); 0 for an unknown user. For hello's saslSupportedMechs.
 */
unsigned authfile_mechs(const struct authfile *f, const char *db, const char *user);

/* Wipes and frees every entry; the authfile is then empty and may be parsed into again. */
void authfile_free(struct authfile *f);

/*
 * Formats one line (with its newline, NUL-terminated) for v. db and user must be names the
 * parser accepts. Returns the length written or -EINVAL/-ENOSPC.
 */
int authfile_format_verifier(const char *db, const char *user, const struct scram_verifier *v,
                             char *out, size_t cap);

/*
 * For `mongolb --make-verifier`: a new verifier of (db, user, password) for mech, with a random
 * salt (AUTHFILE_SALT_*) and iterations (0 means AUTHFILE_ITER_*), formatted as one line as
 * above. The password is not kept. Returns the length written or a negative code
 * (-EINVAL, SCRAM_ESASLPREP, -EIO for no random bytes, -ENOSPC).
 */
int authfile_make_line(enum scram_mech mech, const char *db, const char *user, const char *password,
                       uint32_t iterations, char *out, size_t cap);

/* True when name is a database name the format accepts (see above). */
int authfile_db_ok(const char *db, size_t len);

/* True when name is a user name the format accepts (see above). */
int authfile_user_ok(const char *user, size_t len);

#endif
