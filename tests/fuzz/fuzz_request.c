/*
 * fuzz_request.c: request_classify() and request_kill_ids() on arbitrary frames. The header's
 * length is set to the input's size so that inputs get past framing (an input shorter than a
 * header is passed as it is). Besides memory safety, it checks that:
 *   - the result is one of the documented codes, with a reason on failure;
 *   - a classified OP_MSG or OP_QUERY carries only documents bson_check() accepts, so nothing
 *     malformed or too deep is ever forwarded;
 *   - what the result points to ($readPreference) lies inside the frame, and the strings it
 *     copies are terminated;
 *   - request_kill_ids() never reports more ids than it was given room for.
 */
#include <errno.h>
#include <string.h>

#include "bson_check.h"
#include "fuzz_common.h"
#include "request.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every document a classified frame carries passes bson_check(). */
static void check_documents(const uint8_t *f, size_t len, int32_t opcode)
{
    if (opcode == WIRE_OP_MSG) {
        struct wire_msg m;
        FUZZ_CHECK(wire_msg_parse(f, len, &m) == 0);
        FUZZ_CHECK(bson_check(m.body, m.body_len, BSON_CHECK_MAX_DEPTH, NULL, 0) == 0);
        for (int i = 0; i < m.nseq; i++) {
            uint32_t off = 0, dlen;
            const uint8_t *d;
            while (wire_doc_seq_next(&m.seq[i], &off, &d, &dlen) == 1)
                FUZZ_CHECK(bson_check(d, dlen, BSON_CHECK_MAX_DEPTH, NULL, 0) == 0);
        }
    } else if (opcode == WIRE_OP_QUERY) {
        struct wire_query q;
        FUZZ_CHECK(wire_query_parse(f, len, &q) == 0);
        FUZZ_CHECK(bson_check(q.query, q.query_len, BSON_CHECK_MAX_DEPTH, NULL, 0) == 0);
        if (q.fields)
            FUZZ_CHECK(bson_check(q.fields, q.fields_len, BSON_CHECK_MAX_DEPTH, NULL, 0) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *f = fuzz_frame(data, size);

    struct request_info ri;
    char err[160];
    err[0] = 0;
    int rc = request_classify(f, size, &ri, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EOVERFLOW || rc == -ENOTSUP);
    FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL);
    FUZZ_CHECK(memchr(ri.command, 0, sizeof(ri.command)) != NULL);
    FUZZ_CHECK(memchr(ri.db, 0, sizeof(ri.db)) != NULL);
    FUZZ_CHECK(memchr(ri.read_pref_mode, 0, sizeof(ri.read_pref_mode)) != NULL);
    if (rc != 0)
        FUZZ_CHECK(err[0] != 0);
    if (rc == -EOVERFLOW)
        FUZZ_CHECK(ri.opcode == WIRE_OP_MSG || ri.opcode == WIRE_OP_QUERY);
    if (rc == 0) {
        check_documents(f, size, ri.opcode);
        if (ri.opcode == WIRE_OP_MSG)
            FUZZ_CHECK(ri.db[0] != 0);
        if (ri.has_read_pref) {
            FUZZ_CHECK(fuzz_within(ri.read_pref_doc, ri.read_pref_len, f, size));
            bson_t rp;
            FUZZ_CHECK(bson_init_static(&rp, ri.read_pref_doc, ri.read_pref_len));
        }
        FUZZ_CHECK(ri.n_kill_ids >= 0);
    }

    int64_t ids[8];
    int n = request_kill_ids(f, size, ids, 8);
    FUZZ_CHECK(n == -EPROTO || (n >= 0 && n <= 8));
    if (n > 0)
        fuzz_touch(ids, sizeof(ids[0]) * (size_t)n);
    free(f);
    return 0;
}
