/* coordinator/eval/eval_tune.h: tuning the step-level rules' parameters
 * (mixture weights, the pool's exponents) offline, from the steps of a dev
 * file walked once through the engine (ensemble_score_text's on_step).
 *
 * Why offline is exact. For mixture and pool with every weight and exponent
 * positive, the path the scoring takes through a text (which candidate is
 * forced at each step, where REST's pieces end) does not depend on the
 * parameters: an event has positive probability under both rules exactly
 * when the mixture gives it mass, and consistency and pieces depend on the
 * text and the members only. So one walk records, per step, each member's
 * masses of the step's events and of the piece, and the dev log-likelihood
 * of any parameters is a sum over the records (docs/EVALUATION.md, "Tuning").
 *
 * Per step, with a_m = member m's mass of what was committed (its event
 * mass ev_m(c), or for REST its REST-part R_m(u)):
 *   mixture:  log sum_m w_m a_m  (for REST: p(REST) M_R(u) / M_R = M_R(u))
 *   pool:     c in the pooled set P (every member gives it mass):
 *             log S + sum_m alpha_m log ev_m(c) - log sum_{f in P} prod_m ev_m(f)^alpha_m,
 *             S = sum_{f in P} sum_m w_m ev_m(f); c outside P, and REST: as mixture.
 *
 * Contract: ev_tune_add() copies what it needs from a step (0, or -1 out of
 * memory); the tuners return the dev log-likelihood (nats) at the result;
 * w is normalised, alpha positive. Not thread-safe per set; no I/O.
 */
#ifndef CONSORT_EVAL_TUNE_H
#define CONSORT_EVAL_TUNE_H

#include "common/limits.h"

#include <stddef.h>

typedef struct {
    double a[CONSORT_MAX_MEMBERS];   /* each member's mass of what was committed */
    double sp[CONSORT_MAX_MEMBERS];  /* sum over the pooled set of each member's mass */
    size_t off, n_pooled;            /* log masses of the pooled set: lev[off + m * n_pooled + f] */
    int at;                          /* the committed event's index in the pooled set, -1 if not pooled */
} ev_tune_step;

typedef struct {
    size_t n_members;
    ev_tune_step *steps;
    size_t n, cap;
    double *lev;
    size_t n_lev, cap_lev;
} ev_tune_set;

void ev_tune_init(ev_tune_set *t, size_t n_members);
void ev_tune_free(ev_tune_set *t);

/* One step: ev [m * n_events + e] the members' event masses, event the
 * committed one (-1: REST, with rest_part[m] = R_m(u)). */
int ev_tune_add(ev_tune_set *t, size_t n_events, const double *ev, int event, const double *rest_part);

/* Steps no member gave any mass to (skipped by the log-likelihoods). */
size_t ev_tune_dead_steps(const ev_tune_set *t);

double ev_tune_mixture_loglik(const ev_tune_set *t, const double *w);
double ev_tune_pool_loglik(const ev_tune_set *t, const double *w, const double *alpha);

/* Mixture weights by EM (the log-likelihood is concave in w). */
double ev_tune_mixture(const ev_tune_set *t, double *w, int max_iter);

/* Exponents alpha[0..n) that maximise loglik(alpha, arg): coordinate
 * search on log alpha (steps of 0.5 halved until 1e-3, at most `rounds`
 * sweeps), from alpha's values (0 or negative: start at 1/n). Returns the
 * best log-likelihood; alpha holds its exponents. */
double ev_tune_exponents(size_t n, double *alpha, int rounds, double (*loglik)(const double *alpha, void *arg),
                         void *arg);

/* The pool's exponents for fixed weights (ev_tune_exponents on
 * ev_tune_pool_loglik). */
double ev_tune_pool(const ev_tune_set *t, const double *w, double *alpha, int rounds);

#endif
