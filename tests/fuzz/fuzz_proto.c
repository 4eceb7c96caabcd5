/* fuzz_proto: libFuzzer harness for the member protocol's decoders
 * (protocol/proto.c). The input is read with json_loadb (flags 0, as the
 * worker and the member client read bodies), then handed to every
 * proto_*_decode, each followed by its release.
 *
 * Properties beyond "does not crash":
 *  - a refusal fills the error: a status in 400..599 (409 for a protocol
 *    mismatch), a code, and a message that proto_error_encode can write;
 *  - a decoded struct is valid, so it encodes (never NULL), and the codec
 *    is a fixed point after one round: decode(encode(x)) succeeds and
 *    encodes to the same JSON text as encode(x);
 *  - release frees everything (LeakSanitizer checks) and is safe after a
 *    failed decode.
 */
#include "protocol/proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *type, const char *what) {
    fprintf(stderr, "fuzz_proto: property violated for %s: %s\n", type, what);
    abort();
}

static void check_refusal(const char *type, const proto_error *err) {
    if (err->status < 400 || err->status > 599) fail(type, "a refusal without a 4xx/5xx status");
    if (!err->code[0]) fail(type, "a refusal without a code");
    char *s = proto_dumps(proto_error_encode(err), NULL);
    if (!s) fail(type, "an error that cannot be encoded");
    free(s);
}

/* JSON text of a fresh encoding (consumed), or abort. */
static char *text_of(const char *type, json_t *o) {
    size_t n;
    if (!o) fail(type, "a decoded struct does not encode");
    char *s = proto_dumps(o, &n);
    if (!s) fail(type, "an encoding that cannot be written");
    return s;
}

/* decode(o); on success encode, decode again, encode again: same text.
 * DECODE(o, x, err) and ENCODE(x) are expressions; RELEASE(x) a statement. */
#define ROUND_TRIP(T, DECODE, ENCODE, RELEASE)                                        \
    do {                                                                              \
        T x, y;                                                                       \
        proto_error err;                                                              \
        memset(&x, 0, sizeof x);                                                      \
        memset(&y, 0, sizeof y);                                                      \
        memset(&err, 0, sizeof err);                                                  \
        if (DECODE(o, &x, &err) != 0) {                                               \
            check_refusal(#T, &err);                                                  \
            RELEASE(&x);                                                              \
            break;                                                                    \
        }                                                                             \
        json_t *o1 = ENCODE(&x);                                                      \
        if (!o1) fail(#T, "a decoded struct does not encode");                       \
        char *t1 = text_of(#T, json_incref(o1));                                      \
        if (DECODE(o1, &y, &err) != 0) fail(#T, "its own encoding does not decode"); \
        char *t2 = text_of(#T, ENCODE(&y));                                           \
        if (strcmp(t1, t2) != 0) {                                                    \
            fprintf(stderr, "first:  %s\nsecond: %s\n", t1, t2);                     \
            fail(#T, "encode(decode(encode(x))) differs from encode(x)");             \
        }                                                                             \
        free(t1);                                                                     \
        free(t2);                                                                     \
        RELEASE(&y);                                                                  \
        json_decref(o1);                                                              \
        RELEASE(&x);                                                                  \
    } while (0)

static void no_release(const void *p) { (void)p; }

static int detok_decode(const json_t *o, proto_detokenize_req *q, proto_error *err) {
    return proto_detokenize_req_decode(o, 50257, q, err);
}

static int error_decode(const json_t *o, proto_error *e, proto_error *err) {
    (void)err;
    int r = proto_error_decode(o, 400, e);
    if (r != 0) *err = *e;
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *o = json_loadb((const char *)data, size, 0, &jerr);
    if (!o) return 0;
    ROUND_TRIP(proto_health, proto_health_decode, proto_health_encode, no_release);
    ROUND_TRIP(proto_info, proto_info_decode, proto_info_encode, no_release);
    ROUND_TRIP(proto_vocab, proto_vocab_decode, proto_vocab_encode, proto_vocab_release);
    ROUND_TRIP(proto_tokenize_req, proto_tokenize_req_decode, proto_tokenize_req_encode, no_release);
    ROUND_TRIP(proto_tokenize_res, proto_tokenize_res_decode, proto_tokenize_res_encode,
               proto_tokenize_res_release);
    ROUND_TRIP(proto_detokenize_req, detok_decode, proto_detokenize_req_encode, proto_detokenize_req_release);
    ROUND_TRIP(proto_detokenize_res, proto_detokenize_res_decode, proto_detokenize_res_encode,
               proto_detokenize_res_release);
    ROUND_TRIP(proto_step_req, proto_step_req_decode, proto_step_req_encode, proto_step_req_release);
    ROUND_TRIP(proto_step_res, proto_step_res_decode, proto_step_res_encode, proto_step_res_release);
    ROUND_TRIP(proto_score_req, proto_score_req_decode, proto_score_req_encode, no_release);
    ROUND_TRIP(proto_score_res, proto_score_res_decode, proto_score_res_encode, proto_score_res_release);
    ROUND_TRIP(proto_error, error_decode, proto_error_encode, no_release);
    json_decref(o);
    return 0;
}
