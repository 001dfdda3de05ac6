/*
 * fuzz_srv_txt.c: the bytes of DNS answers that mongolb reads itself (srv_parse.c): a TXT
 * record's options (srv_txt_parse) and the TTLs of an answer (srv_min_ttl); c-ares parses the
 * rest. The first byte chooses which, so one corpus serves both. Besides memory safety it checks
 * that accepted options are NUL-terminated within their fields and printable.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "srv_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    FUZZ_CHECK(n < cap);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(s[i] > 0x20 && s[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        uint32_t ttl = 0;
        int rc = srv_min_ttl(body, len, (uint16_t)(data[0] >> 1), &ttl);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOENT);
        FUZZ_CHECK(rc != 0 || ttl <= 0x7fffffffu);
        return 0;
    }
    /* A private copy, so that a read past the end is caught. */
    char *txt = malloc(len ? len : 1);
    FUZZ_CHECK(txt != NULL);
    if (len)
        memcpy(txt, body, len);
    struct srv_txt_opts o;
    char err[256];
    int rc = srv_txt_parse(txt, len, &o, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc == 0) {
        check_text(o.replica_set, sizeof(o.replica_set));
        check_text(o.auth_source, sizeof(o.auth_source));
        FUZZ_CHECK(o.load_balanced >= -1 && o.load_balanced <= 1);
    } else {
        FUZZ_CHECK(strnlen(err, sizeof(err)) < sizeof(err) && err[0]);
    }
    /* The parent-domain rule on a NUL-terminated prefix of the input. */
    char host[64];
    size_t hn = len < sizeof(host) - 1 ? len : sizeof(host) - 1;
    memcpy(host, txt, hn);
    host[hn] = '\0';
    (void)srv_host_allowed("cluster.mongolb.test", host);
    (void)srv_host_allowed(host[0] ? host : "x", "a.b.mongolb.test");
    free(txt);
    return 0;
}
