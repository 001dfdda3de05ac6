/*
 * fuzz_bson_check.c: bson_check() on arbitrary bytes. Besides memory safety (AddressSanitizer,
 * UndefinedBehaviorSanitizer), it checks two properties:
 *   - differential: a document bson_check() accepts is accepted by libbson's
 *     bson_validate(BSON_VALIDATE_NONE) too (the converse does not hold: bson_validate stops
 *     looking early in a few cases, see bson_check.h);
 *   - the depth limit only ever turns an answer into -EOVERFLOW: checked again with a limit of 3,
 *     a document keeps its verdict or becomes too deep, and one fine at 3 is fine at the default.
 */
#include <errno.h>
#include <string.h>

#include <bson/bson.h>

#include "bson_check.h"
#include "fuzz_common.h"

#define SMALL_DEPTH 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    err[0] = 0;
    int rc = bson_check(data, size, BSON_CHECK_MAX_DEPTH, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EOVERFLOW);
    FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
    FUZZ_CHECK(rc == 0 || err[0] != 0);

    int small = bson_check(data, size, SMALL_DEPTH, NULL, 0);
    if (rc == 0)
        FUZZ_CHECK(small == 0 || small == -EOVERFLOW);
    else if (rc == -EPROTO)
        FUZZ_CHECK(small == -EPROTO || small == -EOVERFLOW);
    else
        FUZZ_CHECK(small == -EOVERFLOW);

    if (rc == 0) {
        /* bson_check accepted it, so it nests at most BSON_CHECK_MAX_DEPTH deep and libbson's
         * recursion stays shallow. */
        uint32_t len = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                       (uint32_t)data[3] << 24;
        bson_t b;
        size_t off = 0;
        FUZZ_CHECK(bson_init_static(&b, data, len));
        if (!bson_validate(&b, BSON_VALIDATE_NONE, &off)) {
            fprintf(stderr, "bson_check accepts a document bson_validate refuses at offset %zu\n",
                    off);
            abort();
        }
    }
    return 0;
}
