/* sampler/strategy.c: see strategy.h and docs/STRATEGIES.md. */
#include "sampler/strategy.h"
#include "sampler/registry.h"
#include "common/limits.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int sstrat_parse(const char *s, sstrat *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!s || !*s) s = SREG_DEFAULT_GENERATION;
    const char *param;
    const sreg_entry *e = sreg_parse(s, SREG_GENERATION, &param, err, errlen);
    if (!e) return -1;
    if (param && strlen(param) >= sizeof out->solo) {
        snprintf(err, errlen, "strategy '%s': member name longer than %zu bytes", s, sizeof out->solo - 1);
        return -1;
    }
    out->kind = (enum sstrat_kind)e->gen_kind;
    if (param) snprintf(out->solo, sizeof out->solo, "%s", param);
    return 0;
}

const char *sstrat_name(enum sstrat_kind k) {
    const sreg_entry *e = sreg_by_gen_kind((int)k);
    return e ? e->name : "?";
}

static inline double q_of(double lq) { return isnan(lq) ? 0 : exp(lq); }

void sstrat_events(size_t n, const int *parent, const double *logq, double end_logq, double *ev) {
    sstrat_events_own(n, parent, logq, NULL, end_logq, ev);
}

/* 1 if c is an own-path event: c and every listed extension of it have a logp. */
static int own_path(size_t n, const int *parent, const double *logp, size_t c) {
    if (!logp || isnan(logp[c])) return 0;
    for (size_t d = 0; d < n; d++) {
        if (!isnan(logp[d])) continue;
        for (int a = parent[d]; a >= 0; a = parent[a])
            if ((size_t)a == c) return 0;
    }
    return 1;
}

void sstrat_events_own(size_t n, const int *parent, const double *logq, const double *logp, double end_logq,
                       double *ev) {
    for (size_t c = 0; c < n; c++) {
        if (own_path(n, parent, logp, c)) {
            ev[c] = q_of(logp[c]); /* exactly the path's probability: own children are other paths */
            continue;
        }
        ev[c] = q_of(logq[c]);
        for (size_t d = 0; d < n; d++)
            if (parent[d] == (int)c) ev[c] -= q_of(logq[d]); /* a child's whole prefix class */
    }
    for (size_t c = 0; c < n; c++)
        if (!(ev[c] > 1e-15)) ev[c] = 0; /* clip (rounding, teacher-forcing approximations) */
    ev[n] = q_of(end_logq);
}

double sstrat_rest(size_t ne, const double *out) {
    double s = 0;
    for (size_t e = 0; e < ne; e++) s += out[e];
    return s < 1 ? 1 - s : 0;
}

size_t sstrat_norm_weights(size_t nm, const double *w, const int *alive, double *wn) {
    double s = 0;
    size_t k = 0;
    for (size_t m = 0; m < nm; m++)
        if ((!alive || alive[m]) && w[m] > 0 && isfinite(w[m])) s += w[m];
    for (size_t m = 0; m < nm; m++) {
        wn[m] = ((!alive || alive[m]) && w[m] > 0 && isfinite(w[m]) && s > 0) ? w[m] / s : 0;
        k += wn[m] > 0;
    }
    return k;
}

double sstrat_mixture(size_t nm, size_t ne, const double *ev, const double *wn, double *out) {
    for (size_t e = 0; e < ne; e++) out[e] = 0;
    for (size_t m = 0; m < nm; m++) {
        if (!(wn[m] > 0)) continue;
        const double *row = ev + m * ne;
        for (size_t e = 0; e < ne; e++) out[e] += wn[m] * row[e];
    }
    double s = 0;
    for (size_t e = 0; e < ne; e++) s += out[e];
    return s;
}

/* 1 - the member's listed mass, clipped at 0: its REST. */
static double member_rest(const double *row, size_t ne) { return sstrat_rest(ne, row); }

/* log prod_m v_m^x_m over members with x_m > 0 (-INFINITY if a v is 0). */
static double log_pool_at(size_t nm, size_t ne, const double *ev, size_t e, const double *x, int rest) {
    double l = 0;
    for (size_t m = 0; m < nm && l > -INFINITY; m++) {
        if (!(x[m] > 0)) continue;
        double v = rest ? member_rest(ev + m * ne, ne) : ev[m * ne + e];
        l = v > 0 ? l + x[m] * log(v) : -INFINITY;
    }
    return l;
}

int sstrat_product(size_t nm, size_t ne, const double *ev, const double *wn, double *out) {
    double lrest = log_pool_at(nm, ne, ev, 0, wn, 1), lmax = lrest;
    for (size_t e = 0; e < ne; e++) {
        out[e] = log_pool_at(nm, ne, ev, e, wn, 0);
        if (out[e] > lmax) lmax = out[e];
    }
    if (lmax == -INFINITY) {
        sstrat_mixture(nm, ne, ev, wn, out);
        return 1;
    }
    double z = lrest > -INFINITY ? exp(lrest - lmax) : 0;
    for (size_t e = 0; e < ne; e++) {
        out[e] = out[e] > -INFINITY ? exp(out[e] - lmax) : 0;
        z += out[e];
    }
    for (size_t e = 0; e < ne; e++) out[e] /= z;
    return 0;
}

int sstrat_pool(size_t nm, size_t ne, const double *ev, const double *wn, const double *alpha, double *out) {
    double a[CONSORT_MAX_MEMBERS], mix_listed = 0;
    size_t k = 0;
    if (nm > CONSORT_MAX_MEMBERS) nm = CONSORT_MAX_MEMBERS;
    for (size_t m = 0; m < nm; m++) k += wn[m] > 0;
    for (size_t m = 0; m < nm; m++) a[m] = !(wn[m] > 0) ? 0 : alpha ? alpha[m] : 1.0 / (double)k;
    double lmax = -INFINITY;
    for (size_t e = 0; e < ne; e++) {
        out[e] = log_pool_at(nm, ne, ev, e, a, 0);
        if (out[e] > lmax) lmax = out[e];
    }
    if (lmax == -INFINITY) {
        sstrat_mixture(nm, ne, ev, wn, out);
        return 1;
    }
    /* the pooled set: the events every member with a weight gives mass to;
     * it gets the mixture's mass of the set, the other events keep theirs */
    double g = 0;
    for (size_t e = 0; e < ne; e++) {
        double mix = 0;
        for (size_t m = 0; m < nm; m++)
            if (wn[m] > 0) mix += wn[m] * ev[m * ne + e];
        int pooled = out[e] > -INFINITY;
        out[e] = pooled ? exp(out[e] - lmax) : 0;
        g += out[e];
        if (pooled) mix_listed += mix;
    }
    for (size_t e = 0; e < ne; e++) {
        if (out[e] > 0) {
            out[e] *= mix_listed / g;
            continue;
        }
        out[e] = 0;
        for (size_t m = 0; m < nm; m++)
            if (wn[m] > 0) out[e] += wn[m] * ev[m * ne + e];
    }
    return 0;
}

int sstrat_selective(size_t nm, size_t ne, const double *ev, const double *wn, size_t lead,
                     double threshold, double *out) {
    if (lead < nm) {
        const double *row = ev + lead * ne;
        double s = 0, mx = 0;
        for (size_t e = 0; e < ne; e++) {
            s += row[e];
            if (row[e] > mx) mx = row[e];
        }
        if (s > 0 && mx >= threshold) {
            for (size_t e = 0; e < ne; e++) out[e] = row[e];
            return 1;
        }
    }
    sstrat_mixture(nm, ne, ev, wn, out);
    return 0;
}

static double lq_at(const double *logq, size_t ld, const double *end_logq, size_t n, size_t m, int c) {
    double v = (size_t)c == n ? end_logq[m] : logq[m * ld + (size_t)c];
    return isnan(v) ? -INFINITY : v;
}

int sstrat_min_ppl(size_t nm, size_t n, const double *logq, size_t ld, const double *end_logq,
                   const size_t *len, const int *proposal, const double *wn, int cross,
                   double *score) {
    int best = -1;
    double bs = -INFINITY;
    int any = 0;
    for (size_t m = 0; m < nm; m++) {
        score[m] = -INFINITY;
        int c = proposal[m];
        if (c < 0 || (size_t)c > n || !(wn[m] > 0)) continue;
        double bytes = (size_t)c == n ? 1.0 : (double)len[c];
        double s;
        if (!cross) {
            s = lq_at(logq, ld, end_logq, n, m, c);
        } else {
            s = 0;
            for (size_t j = 0; j < nm; j++)
                if (wn[j] > 0) s += wn[j] * lq_at(logq, ld, end_logq, n, j, c);
        }
        s /= bytes;
        score[m] = s;
        if (!any || s > bs) {
            any = 1;
            bs = s;
            best = c;
        }
    }
    return best;
}

void sstrat_auto_weights(size_t nm, const double *nll, double nbytes, const int *ok, double *w) {
    size_t k = 0;
    double mx = -INFINITY;
    for (size_t m = 0; m < nm; m++)
        if (ok[m] && isfinite(nll[m])) {
            k++;
            if (nbytes > 0 && -nll[m] / nbytes > mx) mx = -nll[m] / nbytes;
        }
    double s = 0;
    for (size_t m = 0; m < nm; m++) {
        if (!ok[m] || !isfinite(nll[m]) || k == 0) w[m] = 0;
        else if (nbytes > 0) w[m] = exp(-nll[m] / nbytes - mx);
        else w[m] = 1;
        s += w[m];
    }
    if (s > 0)
        for (size_t m = 0; m < nm; m++) w[m] /= s;
}

int sstrat_greedy_bound(size_t nm, size_t n, const int *parent, const double *logq, const double *logp,
                        size_t ld, const double *end_logq, const double *wn, double *scratch) {
    size_t ne = n + 1;
    double *mlo = scratch, *mhi = scratch + ne, *blo = scratch + 2 * ne, *bhi = scratch + 3 * ne;
    for (size_t e = 0; e < ne; e++) mlo[e] = mhi[e] = 0;
    for (size_t m = 0; m < nm; m++) {
        if (!(wn[m] > 0)) continue;
        const double *lq = logq + m * ld;
        for (size_t c = 0; c < n; c++) {
            blo[c] = isnan(lq[c]) ? 0 : exp(lq[c]);
            bhi[c] = isnan(lq[c]) ? NAN : blo[c];
        }
        for (size_t c = 0; c < n; c++) {
            int p = parent[c];
            if (p < 0) continue;
            if (isnan(lq[c])) {
                blo[p] = -INFINITY; /* unknown child: lower bound 0 */
            } else {
                blo[p] -= exp(lq[c]);
                if (!isnan(bhi[p])) bhi[p] -= exp(lq[c]);
            }
        }
        const double *lp = logp ? logp + m * ld : NULL;
        for (size_t c = 0; c < n; c++)
            if (own_path(n, parent, lp, c)) blo[c] = bhi[c] = exp(lp[c]); /* exact, known from round 1 */
        double endm = isnan(end_logq[m]) ? 0 : exp(end_logq[m]);
        double sum_lo = endm;
        for (size_t c = 0; c < n; c++) {
            if (!(blo[c] > 0)) blo[c] = 0;
            if (!isnan(bhi[c]) && !(bhi[c] > 0)) bhi[c] = 0;
            sum_lo += blo[c];
        }
        for (size_t c = 0; c < n; c++) {
            if (isnan(bhi[c])) bhi[c] = 1 - (sum_lo - blo[c]);
            if (bhi[c] < blo[c]) bhi[c] = blo[c];
            mlo[c] += wn[m] * blo[c];
            mhi[c] += wn[m] * bhi[c];
        }
        mlo[n] += wn[m] * endm;
        mhi[n] += wn[m] * endm;
    }
    int best = -1;
    double bv = 0;
    for (size_t e = 0; e < ne; e++)
        if (mlo[e] > bv) {
            bv = mlo[e];
            best = (int)e;
        }
    if (best < 0) return -1;
    for (size_t e = 0; e < ne; e++)
        if ((int)e != best && !(mhi[e] < mlo[best])) return -1;
    return best;
}
