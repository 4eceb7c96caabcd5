/* sampler/sampler.h: sampling from the ensemble's final distribution over
 * events. Draws come from common/rng's seeded xoshiro256** (rng_state), so
 * the same seed gives the same output on every platform.
 *
 * Order of operations (llama.cpp's default chain order): the filters top-k,
 * top-p and min-p are applied to the renormalised distribution, then the
 * temperature p^(1/T) over the survivors, then one draw.
 *  - temperature 0 (or below 1e-6): greedy, the largest probability; ties go
 *    to the LOWEST index (the candidate set keeps insertion order: member
 *    order, then each member's own ranking).
 *  - top_k > 0: keep the k most probable (ties: lower index first).
 *  - top_p < 1: keep the smallest most-probable prefix whose mass >= top_p
 *    (at least one).
 *  - min_p > 0: keep events with p >= min_p * max p.
 *
 * Contract: ssample_pick() never allocates; it needs n doubles and n size_t
 * of scratch. It returns -1 only when every probability is zero or NaN.
 */
#ifndef CONSORT_SAMPLER_H
#define CONSORT_SAMPLER_H

#include "common/rng.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double temperature;
    double top_p;   /* 1 = off (<= 0 also off) */
    double min_p;   /* 0 = off */
    int top_k;      /* 0 = off */
} ssample_params;

int ssample_argmax(const double *p, size_t n);
int ssample_pick(const double *p, size_t n, const ssample_params *sp, rng_state *rng,
                 double *work, size_t *order);

#endif
