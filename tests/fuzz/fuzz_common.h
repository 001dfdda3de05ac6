/*
 * fuzz_common.h: what the libFuzzer targets share: a check that aborts with a message, so that
 * libFuzzer records the input, a sink that keeps reads of parsed data from being optimized away
 * (AddressSanitizer can only report reads that happen), and exact-size copies of the input.
 */
#ifndef MONGOLB_FUZZ_COMMON_H
#define MONGOLB_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static volatile uint8_t fuzz_sink;

/* Reads every byte of [p, p + n). */
static inline void fuzz_touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    fuzz_sink = x;
}

/* True when [p, p + n) lies within [base, base + len). */
static inline int fuzz_within(const void *p, size_t n, const void *base, size_t len)
{
    const uint8_t *a = p, *b = base;
    return a >= b && (size_t)(a - b) <= len && n <= len - (size_t)(a - b);
}

/* A copy of exactly size bytes, so that ASan sees any read past the end; free() it. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    FUZZ_CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

/* fuzz_copy() of a wire frame whose header's length is set to the input's size (when it has a
 * header), so that inputs get past framing. */
static inline uint8_t *fuzz_frame(const uint8_t *data, size_t size)
{
    uint8_t *f = fuzz_copy(data, size);
    if (size >= WIRE_HEADER_LEN && size <= INT32_MAX)
        wire_put_i32(f, (int32_t)size);
    return f;
}

#endif
