/* sampler/sampler.c: see sampler.h. */
#include "sampler/sampler.h"

#include <math.h>

static inline double clean(double v) { return (v > 0 && isfinite(v)) ? v : 0; }

int ssample_argmax(const double *p, size_t n) {
    int best = -1;
    double bv = 0;
    for (size_t i = 0; i < n; i++) {
        double v = clean(p[i]);
        if (v > bv) { /* strict: ties keep the lower index */
            bv = v;
            best = (int)i;
        }
    }
    return best;
}

/* Insertion sort of indices by p descending, ties by index ascending (n is small). */
static void sort_desc(const double *p, size_t n, size_t *order) {
    for (size_t i = 0; i < n; i++) {
        size_t x = order[i];
        size_t j = i;
        while (j > 0 && (clean(p[order[j - 1]]) < clean(p[x]) ||
                         (clean(p[order[j - 1]]) == clean(p[x]) && order[j - 1] > x))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
}

int ssample_pick(const double *p, size_t n, const ssample_params *sp, rng_state *rng,
                 double *work, size_t *order) {
    int am = ssample_argmax(p, n);
    if (am < 0) return -1;
    if (!(sp->temperature > 1e-6)) return am;
    double total = 0;
    for (size_t i = 0; i < n; i++) total += clean(p[i]);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (clean(p[i]) > 0) order[m++] = i;
    sort_desc(p, m, order);
    size_t keep = m;
    if (sp->top_k > 0 && (size_t)sp->top_k < keep) keep = (size_t)sp->top_k;
    if (sp->top_p > 0 && sp->top_p < 1) {
        double cum = 0;
        for (size_t i = 0; i < keep; i++) {
            cum += clean(p[order[i]]) / total;
            if (cum >= sp->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (sp->min_p > 0) {
        double lim = sp->min_p * clean(p[order[0]]);
        size_t k2 = 1;
        while (k2 < keep && clean(p[order[k2]]) >= lim) k2++;
        keep = k2;
    }
    /* temperature over the survivors, in log space for stability */
    double inv_t = 1.0 / sp->temperature, lmax = log(clean(p[order[0]]));
    double z = 0;
    for (size_t i = 0; i < keep; i++) {
        work[i] = exp((log(clean(p[order[i]])) - lmax) * inv_t);
        z += work[i];
    }
    double u = rng_uniform(rng) * z, acc = 0;
    for (size_t i = 0; i < keep; i++) {
        acc += work[i];
        if (u < acc) return (int)order[i];
    }
    return (int)order[keep - 1];
}
