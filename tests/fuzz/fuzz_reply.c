/*
 * fuzz_reply.c: reply_inspect() on arbitrary reply frames, read both as a command's reply and as
 * a legacy query's. The header's length is set to the input's size so that inputs get past
 * framing. Besides memory safety, it checks that what the result points to lies inside the
 * frame: the body, and the 8 bytes of the cursor id that mongolb may rewrite in place.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "reply.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *f = fuzz_frame(data, size);
    for (int command = 0; command < 2; command++) {
        struct reply_info r;
        int rc = reply_inspect(f, size, command, &r);
        FUZZ_CHECK(rc == 0 || rc == -EPROTO);
        if (rc != 0)
            continue;
        FUZZ_CHECK(r.ok ? r.code == 0 : r.code != 0);
        if (r.body) {
            FUZZ_CHECK(fuzz_within(r.body, r.body_len, f, size));
            fuzz_touch(r.body, r.body_len);
        }
        if (r.has_cursor) {
            FUZZ_CHECK(r.cursor_id_off + 8 <= size);
            FUZZ_CHECK(wire_get_i64(f + r.cursor_id_off) == r.cursor_id);
        }
    }
    free(f);
    return 0;
}
