/* coordinator/eval/eval_byte_pool.c: see eval_byte_pool.h.
 *
 * Small on purpose: the walk that asks the members for their next-byte
 * masses lives in the engine (ensemble_score_bytes), the glue in `consort
 * ppl`; this file owns only the pool's formula, its floor and the offline
 * tuning of its exponents, so that the unit tests can check the formula
 * without members. State: none but a tune set's records (floats: 257 per
 * member per byte, about 3 KB per byte with three members, which is why
 * the command tunes on a bounded prefix of the dev file).
 */
#include "coordinator/eval/eval_byte_pool.h"
#include "coordinator/eval/eval_tune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double floored(double lq) {
    const double lfloor = log(EV_BPOOL_FLOOR); /* a constant the compiler folds */
    return isnan(lq) || lq < lfloor ? lfloor : lq;
}

static int takes_part(const double *alpha, size_t n_members) {
    for (size_t m = 0; m < n_members; m++)
        if (alpha[m] > 0) return 1;
    return 0;
}

/* s[e] = sum_m alpha_m log q_m(e); returns log sum_e exp s[e]. */
static double pooled_scores(const double *lq, size_t M, const double *alpha, double *s) {
    double mx = -INFINITY;
    for (int e = 0; e < EV_BPOOL_EVENTS; e++) {
        double x = 0;
        for (size_t m = 0; m < M; m++)
            if (alpha[m] > 0) x += alpha[m] * floored(lq[m * EV_BPOOL_EVENTS + (size_t)e]);
        s[e] = x;
        if (x > mx) mx = x;
    }
    double z = 0;
    for (int e = 0; e < EV_BPOOL_EVENTS; e++) z += exp(s[e] - mx);
    return mx + log(z);
}

int ev_bpool_dist(const double *lq, size_t M, const double *alpha, double *logp) {
    if (!takes_part(alpha, M)) return -1;
    double lz = pooled_scores(lq, M, alpha, logp);
    for (int e = 0; e < EV_BPOOL_EVENTS; e++) logp[e] -= lz;
    return 0;
}

double ev_bpool_logp(const double *lq, size_t M, const double *alpha, int event) {
    double s[EV_BPOOL_EVENTS];
    if (event < 0 || event >= EV_BPOOL_EVENTS || !takes_part(alpha, M)) return NAN;
    double lz = pooled_scores(lq, M, alpha, s);
    return s[event] - lz;
}

double ev_bpool_mass_sum(const double *lq) {
    double t = 0;
    for (int e = 0; e < EV_BPOOL_EVENTS; e++)
        if (!isnan(lq[e])) t += exp(lq[e]);
    return t;
}

/* ---- tuning ------------------------------------------------------------------ */

void ev_bpool_tune_init(ev_bpool_tune_set *t, size_t n_members) {
    memset(t, 0, sizeof *t);
    t->n_members = n_members;
}

void ev_bpool_tune_free(ev_bpool_tune_set *t) {
    free(t->lq);
    free(t->event);
    memset(t, 0, sizeof *t);
}

int ev_bpool_tune_add(ev_bpool_tune_set *t, const double *lq, int event) {
    size_t row = t->n_members * EV_BPOOL_EVENTS;
    if (event < 0 || event >= EV_BPOOL_EVENTS) return -1;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        float *l = realloc(t->lq, cap * row * sizeof *l);
        if (!l) return -1;
        t->lq = l;
        short *ev = realloc(t->event, cap * sizeof *ev);
        if (!ev) return -1;
        t->event = ev;
        t->cap = cap;
    }
    for (size_t k = 0; k < row; k++) t->lq[t->n * row + k] = (float)floored(lq[k]);
    t->event[t->n++] = (short)event;
    return 0;
}

double ev_bpool_tune_loglik(const ev_bpool_tune_set *t, const double *alpha) {
    size_t M = t->n_members, row = M * EV_BPOOL_EVENTS;
    double total = 0, lq[CONSORT_MAX_MEMBERS * EV_BPOOL_EVENTS];
    for (size_t i = 0; i < t->n; i++) {
        for (size_t k = 0; k < row; k++) lq[k] = t->lq[i * row + k];
        total += ev_bpool_logp(lq, M, alpha, t->event[i]);
    }
    return total;
}

static double bpool_tune_loglik(const double *alpha, void *arg) {
    return ev_bpool_tune_loglik(arg, alpha);
}

double ev_bpool_tune(const ev_bpool_tune_set *t, double *alpha, int rounds) {
    return ev_tune_exponents(t->n_members, alpha, rounds, bpool_tune_loglik, (void *)t);
}
