/* coordinator/eval/eval_byte_pool.h: the arithmetic of `byte_pool`, the
 * evaluation-only rule of `consort ppl` that scores a text one byte at a
 * time with a normalised geometric pool of the members' next-byte
 * distributions (docs/EVALUATION.md, "byte_pool").
 *
 * At byte i every member m gives 257 masses, its prefix masses Q_m(b) of
 * the 256 one-byte continuations b and its end-of-text mass Q_m(END), all
 * after text[0..i) (the walk over the members is the engine's,
 * ensemble_score_bytes in ensemble.h). The pool is
 *
 *     P(e) = prod_m q_m(e)^alpha_m / Z,   Z = sum over the 257 events e' of prod_m q_m(e')^alpha_m
 *     q_m(e) = max(Q_m(e), EV_BPOOL_FLOOR)
 *
 * with exponents alpha_m > 0 (default 1/M; members with alpha_m = 0 take
 * no part). Dividing by Z is what makes it a distribution: the 257 values
 * sum to 1 whatever the members' masses sum to (a member's masses can sum
 * away from 1 after healing: PROTOCOL.md), so every text's score over all
 * texts of one length sums to at most 1. The floor keeps a byte one member
 * rules out possible (a member that gives the true byte no mass would make
 * the product 0 and the text impossible).
 *
 * Tuning: ev_bpool_tune_* record the per-byte masses of a dev text and pick
 * exponents that maximise its log-likelihood (coordinate search on log
 * alpha; the log-likelihood is concave in alpha: a sum of an affine term and
 * minus log-sum-exps of affine functions).
 *
 * Contract: pure functions, no I/O; lq arrays are natural logs, -INFINITY
 * (or NaN) for no mass; a tune set is used by one thread at a time.
 */
#ifndef CONSORT_EVAL_BYTE_POOL_H
#define CONSORT_EVAL_BYTE_POOL_H

#include "common/limits.h"

#include <stddef.h>

#define EV_BPOOL_EVENTS 257      /* the byte values 0..255, then END */
#define EV_BPOOL_END 256
#define EV_BPOOL_FLOOR 1e-12     /* the smallest mass a member gives an event in the pool */
#define EV_BPOOL_DEVIATION 1e-3  /* a member's masses "deviate" when |sum - 1| exceeds this */

/* The pooled log-distribution over the 257 events: lq[m * 257 + e] member
 * m's log masses, alpha[m] its exponent. Writes logp[257] (natural log,
 * sums to 1 in probability). Returns 0, or -1 when no member takes part
 * (every alpha <= 0). */
int ev_bpool_dist(const double *lq, size_t n_members, const double *alpha, double *logp);

/* log P(event) under the pool (ev_bpool_dist for one event). NAN when no
 * member takes part. */
double ev_bpool_logp(const double *lq, size_t n_members, const double *alpha, int event);

/* The sum of one member's 257 masses (exp of lq[0..257)). */
double ev_bpool_mass_sum(const double *lq_member);

/* ---- tuning the exponents on a dev text ------------------------------------ */

typedef struct ev_bpool_tune_set {
    size_t n_members;
    float *lq;           /* n * n_members * 257 log masses, floored */
    short *event;        /* n: the event that happened */
    size_t n, cap;
} ev_bpool_tune_set;

void ev_bpool_tune_init(ev_bpool_tune_set *t, size_t n_members);
void ev_bpool_tune_free(ev_bpool_tune_set *t);
/* One byte: its members' masses and the event that happened. 0, or -1 out of memory. */
int ev_bpool_tune_add(ev_bpool_tune_set *t, const double *lq, int event);
/* The recorded log-likelihood (nats) under exponents alpha. */
double ev_bpool_tune_loglik(const ev_bpool_tune_set *t, const double *alpha);
/* Coordinate search on log alpha from alpha's values (<= 0: start at 1/M);
 * returns the log-likelihood at the result. */
double ev_bpool_tune(const ev_bpool_tune_set *t, double *alpha, int rounds);

#endif
