/*
 * fuzz_common.h: what the libFuzzer targets share: a check that aborts with a message, so that
 * libFuzzer records the input, and a sink that keeps reads of parsed data from being optimized
 * away (AddressSanitizer can only report reads that happen).
 */
#ifndef MONGOLB_FUZZ_COMMON_H
#define MONGOLB_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
