/*
 * bson_check.h: a non-recursive structural check of one BSON document.
 *
 * Clients control how deeply their documents nest, so nothing that reads a request may recurse
 * once per level: libbson's bson_validate() does, and a 160 KB document nested some 9,000 levels
 * deep overflows the stack. bson_check() walks nested documents with a fixed-size stack instead,
 * in one linear pass, with no allocation and no I/O.
 *
 * What it checks: the document's int32 length (at least 5, within the bytes available) and its
 * terminating NUL; for every element, a known type byte, a NUL-terminated key that is valid UTF-8
 * (libbson's bson_validate() requires that too), and a value that fits inside its parent:
 * strings, code and symbols have an int32 length of at least 1 and end with a NUL; binary has an
 * int32 length of at least 0 and a subtype, and subtype 2 (old binary) an inner length of 4 less;
 * booleans are 0 or 1; a regular expression is two C strings; a DBPointer is a string and 12
 * bytes; code with scope is a total length equal to its string plus its scope document; embedded
 * documents and arrays are checked the same way, each ending exactly at its own terminator.
 * String contents are not checked for UTF-8, as neither mongod nor bson_validate() with
 * BSON_VALIDATE_NONE rejects them.
 *
 * Everything libbson's bson_validate(BSON_VALIDATE_NONE) rejects is rejected here too; a few
 * documents it lets through because it stops looking early (after a string that is not UTF-8,
 * after a valid code-with-scope, or at an embedded document whose terminator is wrong) are
 * rejected here, as mongod rejects them.
 */
#ifndef MONGOLB_BSON_CHECK_H
#define MONGOLB_BSON_CHECK_H

#include <stddef.h>
#include <stdint.h>

/*
 * The deepest nesting mongod accepts: BSONDepth::kDefaultMaxAllowableDepth = 200 in
 * src/mongo/bson/bson_depth.h (the maxBSONDepth server parameter's default). mongod's validator
 * (src/mongo/bson/bson_validate.cpp) keeps kDefaultMaxAllowableDepth + 1 frames, one for the
 * top-level document, so documents may nest 200 levels below the top-level one and the 201st is
 * refused. Its validator counts code with scope as two levels (one frame for the element, one for
 * its scope document), and so does bson_check().
 */
#define BSON_CHECK_MAX_DEPTH 200

/*
 * How mongod answers a request whose document nests too deeply: ErrorCodes::Overflow (15, from
 * src/mongo/base/error_codes.yml), raised by bson_validate.cpp with the message "BSONObj exceeds
 * maximum nested object depth" when OpMsg::parse (src/mongo/rpc/op_msg.cpp) reads the body or a
 * document of a sequence as Validated<BSONObj>.
 */
#define BSON_CHECK_DEPTH_ERROR_CODE 15
#define BSON_CHECK_DEPTH_ERROR_NAME "Overflow"
#define BSON_CHECK_DEPTH_ERROR_MSG  "BSONObj exceeds maximum nested object depth"

/*
 * Checks the BSON document at doc, of which at most avail bytes may be read (the document's own
 * length may be less; bytes after it are not looked at). Documents may nest at most max_depth
 * levels below the top-level one; max_depth must be within [0, BSON_CHECK_MAX_DEPTH].
 *
 * Returns 0 if the document is well formed; -EPROTO if it is malformed; -EOVERFLOW if it nests
 * deeper than max_depth (what follows the first level too deep is not checked); -EINVAL if
 * max_depth is out of range. On error a one-line reason with the byte offset goes to err (which
 * may be NULL when err_len is 0).
 */
int bson_check(const uint8_t *doc, size_t avail, int max_depth, char *err, size_t err_len);

#endif
