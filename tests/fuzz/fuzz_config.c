/*
 * fuzz_config.c: config_load_string() on arbitrary ini text, then config_free() (twice, as it must
 * allow). A configuration that loads is also dumped and compared with itself for a reload, which
 * must find nothing that needs a restart. LeakSanitizer reports anything parsing leaves behind.
 */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (!devnull) {
        devnull = fopen("/dev/null", "w");
        FUZZ_CHECK(devnull != NULL);
    }
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = 0;

    struct mlb_config c;
    char err[4096];
    int rc = config_load_string(text, "fuzz.ini", &c, err, sizeof(err));
    FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
    if (rc == 0) {
        config_dump(&c, devnull);
        char rerr[1024];
        FUZZ_CHECK(config_check_reload(&c, &c, rerr, sizeof(rerr)) == 0);
    } else {
        FUZZ_CHECK(rc < 0);
        FUZZ_CHECK(err[0] != 0);
    }
    config_free(&c);
    config_free(&c);
    free(text);
    return 0;
}
