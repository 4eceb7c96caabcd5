/* coordinator/eval/eval_tune.c: see eval_tune.h. The records keep, per
 * step, only what the two rules' formulas read: each member's mass of what
 * was committed, and for the pool the log masses of the pooled set (every
 * member positive), so a dev walk of ~25,000 steps is a few megabytes and
 * one log-likelihood evaluation a few milliseconds. */
#include "coordinator/eval/eval_tune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ev_tune_init(ev_tune_set *t, size_t n_members) {
    memset(t, 0, sizeof *t);
    t->n_members = n_members < CONSORT_MAX_MEMBERS ? n_members : CONSORT_MAX_MEMBERS;
}

void ev_tune_free(ev_tune_set *t) {
    free(t->steps);
    free(t->lev);
    memset(t, 0, sizeof *t);
}

static int grow(ev_tune_set *t, size_t more_lev) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        ev_tune_step *p = realloc(t->steps, cap * sizeof *p);
        if (!p) return -1;
        t->steps = p;
        t->cap = cap;
    }
    if (t->n_lev + more_lev > t->cap_lev) {
        size_t cap = t->cap_lev ? 2 * t->cap_lev : 65536;
        while (cap < t->n_lev + more_lev) cap *= 2;
        double *p = realloc(t->lev, cap * sizeof *p);
        if (!p) return -1;
        t->lev = p;
        t->cap_lev = cap;
    }
    return 0;
}

/* 1 if every member gives event e mass. */
static int pooled(size_t M, size_t ne, const double *ev, size_t e) {
    for (size_t m = 0; m < M; m++)
        if (!(ev[m * ne + e] > 0)) return 0;
    return 1;
}

int ev_tune_add(ev_tune_set *t, size_t ne, const double *ev, int event, const double *rest_part) {
    size_t M = t->n_members, np = 0;
    for (size_t e = 0; e < ne; e++) np += pooled(M, ne, ev, e);
    if (grow(t, M * np)) return -1;
    ev_tune_step *s = &t->steps[t->n++];
    memset(s, 0, sizeof *s);
    s->off = t->n_lev;
    s->n_pooled = np;
    s->at = -1;
    size_t f = 0;
    for (size_t e = 0; e < ne; e++) {
        if (!pooled(M, ne, ev, e)) continue;
        if ((int)e == event) s->at = (int)f;
        for (size_t m = 0; m < M; m++) {
            t->lev[s->off + m * np + f] = log(ev[m * ne + e]);
            s->sp[m] += ev[m * ne + e];
        }
        f++;
    }
    t->n_lev += M * np;
    for (size_t m = 0; m < M; m++) s->a[m] = event >= 0 ? ev[m * ne + (size_t)event] : rest_part ? rest_part[m] : 0;
    return 0;
}

static double mix_at(const ev_tune_step *s, size_t M, const double *w) {
    double p = 0;
    for (size_t m = 0; m < M; m++) p += w[m] * s->a[m];
    return p;
}

/* Steps no member gives any mass to (the text left everything: -inf under
 * every parameter) carry no information about the parameters: skipped. */
static int informative(const ev_tune_step *s, size_t M) {
    for (size_t m = 0; m < M; m++)
        if (s->a[m] > 0) return 1;
    return 0;
}

size_t ev_tune_dead_steps(const ev_tune_set *t) {
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) k += !informative(&t->steps[i], t->n_members);
    return k;
}

double ev_tune_mixture_loglik(const ev_tune_set *t, const double *w) {
    double ll = 0;
    for (size_t i = 0; i < t->n; i++)
        if (informative(&t->steps[i], t->n_members)) ll += log(mix_at(&t->steps[i], t->n_members, w));
    return ll;
}

/* log sum_f exp(sum_m alpha_m lev[m][f]) over the pooled set, stably. */
static double log_norm(const ev_tune_set *t, const ev_tune_step *s, const double *alpha) {
    size_t M = t->n_members, np = s->n_pooled;
    const double *lev = t->lev + s->off;
    double mx = -INFINITY, sum = 0;
    for (size_t f = 0; f < np; f++) {
        double l = 0;
        for (size_t m = 0; m < M; m++) l += alpha[m] * lev[m * np + f];
        if (l > mx) mx = l;
    }
    for (size_t f = 0; f < np; f++) {
        double l = 0;
        for (size_t m = 0; m < M; m++) l += alpha[m] * lev[m * np + f];
        sum += exp(l - mx);
    }
    return mx + log(sum);
}

double ev_tune_pool_loglik(const ev_tune_set *t, const double *w, const double *alpha) {
    size_t M = t->n_members;
    double ll = 0;
    for (size_t i = 0; i < t->n; i++) {
        const ev_tune_step *s = &t->steps[i];
        if (!informative(s, M)) continue;
        if (s->at < 0) {
            ll += log(mix_at(s, M, w));
            continue;
        }
        double S = 0, l = 0;
        for (size_t m = 0; m < M; m++) {
            S += w[m] * s->sp[m];
            l += alpha[m] * t->lev[s->off + m * s->n_pooled + (size_t)s->at];
        }
        ll += log(S) + l - log_norm(t, s, alpha);
    }
    return ll;
}

double ev_tune_mixture(const ev_tune_set *t, double *w, int max_iter) {
    size_t M = t->n_members;
    double r[CONSORT_MAX_MEMBERS], prev = -INFINITY, ll = ev_tune_mixture_loglik(t, w);
    for (int it = 0; it < max_iter && ll > prev + 1e-9 * fabs(ll); it++) {
        memset(r, 0, sizeof r);
        size_t used = 0;
        for (size_t i = 0; i < t->n; i++) {
            double p = mix_at(&t->steps[i], M, w);
            if (!(p > 0)) continue;
            used++;
            for (size_t m = 0; m < M; m++) r[m] += w[m] * t->steps[i].a[m] / p;
        }
        for (size_t m = 0; m < M && used; m++) w[m] = r[m] / (double)used;
        prev = ll;
        ll = ev_tune_mixture_loglik(t, w);
    }
    return ll;
}

double ev_tune_exponents(size_t n, double *alpha, int rounds, double (*loglik)(const double *alpha, void *arg),
                         void *arg) {
    for (size_t m = 0; m < n; m++)
        if (!(alpha[m] > 0)) alpha[m] = 1.0 / (double)n;
    double best = loglik(alpha, arg);
    double step = 0.5; /* in log alpha */
    for (int r = 0; r < rounds && step > 1e-3; r++) {
        int moved = 0;
        for (size_t m = 0; m < n; m++)
            for (int dir = -1; dir <= 1; dir += 2) {
                double keep = alpha[m];
                alpha[m] = keep * exp(dir * step);
                double ll = loglik(alpha, arg);
                if (ll > best) {
                    best = ll;
                    moved = 1;
                } else {
                    alpha[m] = keep;
                }
            }
        if (!moved) step /= 2;
    }
    return best;
}

typedef struct {
    const ev_tune_set *t;
    const double *w;
} pool_tune_arg;

static double pool_tune_loglik(const double *alpha, void *arg) {
    const pool_tune_arg *a = arg;
    return ev_tune_pool_loglik(a->t, a->w, alpha);
}

double ev_tune_pool(const ev_tune_set *t, const double *w, double *alpha, int rounds) {
    pool_tune_arg a = {t, w};
    return ev_tune_exponents(t->n_members, alpha, rounds, pool_tune_loglik, &a);
}
