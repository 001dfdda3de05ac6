/*
 * fuzz_authfile.c: authfile_parse() on arbitrary text. The error text must be NUL-terminated and
 * present exactly when parsing fails; a file that parses must hold at most the bound of entries,
 * find every entry by lookup, and write each one back as a line that parses to the same
 * verifier. LeakSanitizer reports anything a parse leaves behind.
 */
#include <errno.h>
#include <string.h>

#include "authfile.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ENTRIES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    struct authfile f = {0};
    int rc =
        authfile_parse((const char *)data, size, "fuzz.auth", MAX_ENTRIES, &f, err, sizeof(err));
    FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
    if (rc < 0) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM);
        FUZZ_CHECK(err[0] != 0);
        FUZZ_CHECK(f.entries == NULL && f.count == 0);
        return 0;
    }
    FUZZ_CHECK(rc == 0 && err[0] == 0 && f.count <= MAX_ENTRIES);
    for (size_t i = 0; i < f.count; i++) {
        const struct authfile_entry *e = &f.entries[i];
        const struct scram_verifier *v = authfile_lookup(&f, e->db, e->user, e->v.mech);
        FUZZ_CHECK(v == &e->v);
        FUZZ_CHECK(authfile_mechs(&f, e->db, e->user) & (1u << e->v.mech));
        char line[AUTHFILE_MAX_LINE + 2];
        int n = authfile_format_verifier(e->db, e->user, &e->v, line, sizeof(line));
        FUZZ_CHECK(n > 0);
        struct authfile g = {0};
        FUZZ_CHECK(authfile_parse(line, (size_t)n, "line", 1, &g, err, sizeof(err)) == 0);
        FUZZ_CHECK(g.count == 1 && strcmp(g.entries[0].db, e->db) == 0 &&
                   strcmp(g.entries[0].user, e->user) == 0);
        FUZZ_CHECK(scram_verifier_equal(&g.entries[0].v, &e->v));
        authfile_free(&g);
    }
    authfile_free(&f);
    authfile_free(&f);
    return 0;
}
