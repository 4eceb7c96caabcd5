/* worker/wk_bytes.h: every byte's next-byte distribution along a whole
 * text, summed over the member's covering tokenizations (POST
 * /v1/next_bytes, docs/PROTOCOL.md "The next-byte walk").
 *
 * Contract:
 *  - wk_next_bytes() answers n_bytes = len rows of WK_BYTES_EVENTS floats
 *    (natural logs; byte values 0..255, then END): row i is the member's
 *    distribution of byte i given text[0..i) and nothing after it (fair:
 *    changing text[i..) changes no row <= i). Every row is normalised over
 *    its 257 events (so it is a proper distribution whatever the beam
 *    pruned); an event with no mass is -INFINITY.
 *  - beam (1..WK_BYTES_MAX_BEAM) is the number of token paths kept inside
 *    the current word (plus the best one ending at the byte when none of
 *    those does); a beam larger than the paths alive prunes nothing.
 *  - It holds the engine's scoring sequence for the whole call (one walk or
 *    score at a time) and borrows scratch sequences; its decodes share the
 *    engine's scheduler. Thread-safe.
 *  - Refused with 400: empty text, more than WK_BYTES_MAX_TEXT bytes, beam
 *    out of range (err->param names the field), a context of fewer than 32
 *    positions. Cancellation as wk_score (503). On failure res is empty.
 */
#ifndef CONSORT_WK_BYTES_H
#define CONSORT_WK_BYTES_H

#include <stddef.h>

#include "worker/wk_engine.h"

#define WK_BYTES_EVENTS 257
#define WK_BYTES_MAX_BEAM 256
#define WK_BYTES_MAX_TEXT 65536
#define WK_BYTES_MAX_SEG 32 /* bytes of a word before the walk re-anchors (at a UTF-8 boundary);
                              * n_ctx / 4 - 4 when that is less */

typedef struct wk_bytes_res {
    int n_bytes;
    float *dist;     /* n_bytes * WK_BYTES_EVENTS log-probabilities */
    int decoded;     /* token positions decoded */
    int decodes;     /* decode requests (each may share a llama_decode with other callers) */
    long paths;      /* token paths created inside words (children decoded) */
    int max_beam;    /* the most paths alive at one byte */
    int windows;     /* times the context was rolled */
    int reanchors;   /* times every path kept died and the walk re-anchored after the byte */
} wk_bytes_res;

int wk_next_bytes(wk_engine *e, const unsigned char *text, size_t len, int beam, const wk_cancel *cancel,
                  wk_bytes_res *res, wk_err *err);
void wk_bytes_res_free(wk_bytes_res *r);

#endif
