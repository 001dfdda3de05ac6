/*
 * fuzz_compress.c: compress_decode() on arbitrary OP_COMPRESSED frames, with every compressor
 * enabled and a 1 MiB limit (so that a declared size cannot make the fuzzer allocate much). The
 * header's length is set to the input's size so that inputs get past framing. Besides memory
 * safety it checks what the decoder promises: a result of exactly 16 + the declared size, with the
 * original opcode and the ids of the envelope, or one of the module's codes and an empty buffer;
 * and that what it decoded encodes again and decodes back to the same bytes.
 */
#include <errno.h>
#include <string.h>

#include "compress.h"
#include "fuzz_common.h"
#include "wire.h"

#define FUZZ_MAX_FRAME (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *f = fuzz_frame(data, size);
    if (size >= WIRE_HEADER_LEN && size <= INT32_MAX)
        wire_put_i32(f + 12, WIRE_OP_COMPRESSED);
    struct wire_buf out = {0}, again = {0}, back = {0};
    int id = -1;
    int rc = compress_decode(f, size, FUZZ_MAX_FRAME, 0xfu, &out, &id);
    FUZZ_CHECK(rc == 0 || rc == COMPRESS_ERR_TRUNCATED || rc == COMPRESS_ERR_TOO_LARGE ||
               rc == COMPRESS_ERR_UNKNOWN || rc == COMPRESS_ERR_OPCODE || rc == COMPRESS_ERR_SIZE ||
               rc == COMPRESS_ERR_CORRUPT || rc == -EINVAL);
    if (rc == 0) {
        FUZZ_CHECK(id >= 0 && id < COMPRESSOR_COUNT);
        FUZZ_CHECK(out.len == WIRE_HEADER_LEN + (size_t)wire_get_i32(f + 20));
        FUZZ_CHECK(wire_get_i32(out.data) == (int32_t)out.len);
        FUZZ_CHECK(memcmp(out.data + 4, f + 4, 8) == 0);
        FUZZ_CHECK(wire_get_i32(out.data + 12) == wire_get_i32(f + 16));
        fuzz_touch(out.data, out.len);
        struct compress_levels lv = {.zlib = 1, .zstd = 1};
        FUZZ_CHECK(compress_encode(id, &lv, out.data, out.len, &again) == 0);
        FUZZ_CHECK(compress_decode(again.data, again.len, FUZZ_MAX_FRAME, 0xfu, &back, NULL) == 0);
        FUZZ_CHECK(back.len == out.len && memcmp(back.data, out.data, out.len) == 0);
    } else {
        FUZZ_CHECK(out.len == 0);
    }
    /* What the never-compress rule reads must be safe on any frame too. */
    (void)compress_frame_allowed(f, size);
    wire_buf_free(&out);
    wire_buf_free(&again);
    wire_buf_free(&back);
    free(f);
    return 0;
}
