/*
 * fuzz_killcursors.c: a killCursors split by owner and merged, on arbitrary input. The input is
 * cut in two at its first byte's value: the client's request frame, then the bytes every owner
 * "answers" with (each frame's length fixed up to its size). The cursor table holds cursors of
 * three servers, one of them with a rewritten (collided) id. Besides memory safety, it checks
 * that every id the request names is settled exactly once: the four merged arrays together hold
 * as many ids as the request named, whatever the owners answer.
 */
#include <errno.h>
#include <string.h>

#include "cursors.h"
#include "fuzz_common.h"
#include "killcursors.h"
#include "request.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next_id(void *ctx)
{
    uint64_t *x = ctx;
    return ++*x;
}

static uint32_t array_count(const bson_t *doc, const char *key)
{
    bson_iter_t it, arr;
    uint32_t n = 0;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = 1 + (size_t)data[0] * 4;
    if (cut > size)
        cut = size;
    size_t req_len = cut - 1, ans_len = size - cut;
    uint8_t *req = fuzz_frame(data + 1, req_len);
    uint8_t *ans = fuzz_frame(data + cut, ans_len);

    struct cursor_table t;
    FUZZ_CHECK(cursors_init(&t, 64, 60000) == 0);
    uint64_t ctr = 1000;
    int64_t cid;
    for (int64_t id = 1; id <= 9; id++)
        FUZZ_CHECK(cursors_add(&t, (int)(id % 3), id, 0, next_id, &ctr, &cid) >= 0);
    /* Server 2 also holds cursor 1: it collides and the client sees a fresh id (1001). */
    FUZZ_CHECK(cursors_add(&t, 2, 1, 0, next_id, &ctr, &cid) == 1);

    struct request_info ri;
    char err[160];
    if (request_classify(req, req_len, &ri, err, sizeof(err)) == 0 &&
        (ri.kind == REQ_KILL_CURSORS || ri.kind == REQ_LEGACY_KILL_CURSORS)) {
        struct kc k;
        int rc = kc_begin(&k, req, req_len, ri.opcode, ri.n_kill_ids, &t, 1);
        FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -E2BIG || rc == -ENOMEM);
        if (rc == 0) {
            int n = k.n, owner, rounds = 0;
            struct wire_buf out = {0};
            while ((owner = kc_next_owner(&k)) >= 0) {
                FUZZ_CHECK(owner <= 2 && ++rounds <= 3);
                rc = kc_build_part(&k, owner, req, req_len, 7, &t, 2, &out);
                FUZZ_CHECK(rc == 0 || rc == -EPROTO);
                if (!k.legacy)
                    kc_merge(&k, owner, ans_len ? ans : NULL, ans_len, &t, 3);
                FUZZ_CHECK(kc_next_owner(&k) != owner);
            }
            if (!k.legacy) {
                bson_t doc = BSON_INITIALIZER;
                kc_build_reply(&k, &doc);
                uint32_t settled =
                    array_count(&doc, "cursorsKilled") + array_count(&doc, "cursorsNotFound") +
                    array_count(&doc, "cursorsAlive") + array_count(&doc, "cursorsUnknown");
                FUZZ_CHECK(settled == (uint32_t)n);
                bson_destroy(&doc);
            }
            wire_buf_free(&out);
            kc_end(&k);
            kc_end(&k);
        }
    }
    cursors_free(&t);
    free(req);
    free(ans);
    return 0;
}
