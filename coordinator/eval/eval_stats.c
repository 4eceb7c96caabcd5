/* coordinator/eval/eval_stats.c: see eval_stats.h. */
#include "coordinator/eval/eval_stats.h"

#include "common/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ev_metrics_compute(double nll, double bytes, double words, double tokens, ev_metrics *o) {
    o->bits_per_byte = bytes > 0 ? nll / (bytes * M_LN2) : NAN;
    o->byte_perplexity = bytes > 0 ? exp(nll / bytes) : NAN;
    o->word_perplexity = words > 0 ? exp(nll / words) : NAN;
    o->token_perplexity = tokens > 0 ? exp(nll / tokens) : NAN;
}

static int ev_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double ev_percentile(double *v, size_t n, double pct) {
    size_t k = 0; /* NaNs are left out */
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i])) v[k++] = v[i];
    n = k;
    if (!n) return NAN;
    qsort(v, n, sizeof *v, ev_cmp_double);
    double pos = pct / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    if (lo >= n - 1) return v[n - 1];
    double f = pos - (double)lo;
    return v[lo] + f * (v[lo + 1] - v[lo]);
}

int ev_bootstrap(const double *nll, const double *bytes, size_t S, size_t D, size_t ref,
                 unsigned R, uint64_t seed, double (*ci)[2], double (*diff_ci)[2]) {
    if (!S) return 0;
    if (!D || !R) {
        for (size_t s = 0; s < S; s++) {
            ci[s][0] = ci[s][1] = NAN;
            if (diff_ci) diff_ci[s][0] = diff_ci[s][1] = NAN;
        }
        return 0;
    }
    double *bpb = malloc((size_t)R * S * sizeof *bpb);
    size_t *cnt = calloc(D, sizeof *cnt);
    double *col = malloc((size_t)R * sizeof *col);
    if (!bpb || !cnt || !col) {
        free(bpb);
        free(cnt);
        free(col);
        return -1;
    }
    uint64_t st = seed;
    for (unsigned r = 0; r < R; r++) {
        double b = 0;
        /* a resample of only empty documents has no bits per byte: draw again
         * (at most a bounded number of times; all-empty corpora stay NaN) */
        for (int tries = 0; tries < 64 && !(b > 0); tries++) {
            memset(cnt, 0, D * sizeof *cnt);
            for (size_t i = 0; i < D; i++) cnt[rng_splitmix64(&st) % D]++;
            b = 0;
            for (size_t d = 0; d < D; d++) b += (double)cnt[d] * bytes[d];
        }
        for (size_t s = 0; s < S; s++) {
            double x = 0;
            const double *row = nll + s * D;
            for (size_t d = 0; d < D; d++)
                if (cnt[d]) x += (double)cnt[d] * row[d];
            bpb[(size_t)r * S + s] = b > 0 ? x / (b * M_LN2) : NAN;
        }
    }
    for (size_t s = 0; s < S; s++) {
        for (unsigned r = 0; r < R; r++) col[r] = bpb[(size_t)r * S + s];
        ci[s][0] = ev_percentile(col, R, 2.5);
        ci[s][1] = ev_percentile(col, R, 97.5);
        if (diff_ci) {
            if (ref >= S) {
                diff_ci[s][0] = diff_ci[s][1] = NAN;
                continue;
            }
            for (unsigned r = 0; r < R; r++)
                col[r] = bpb[(size_t)r * S + s] - bpb[(size_t)r * S + ref];
            diff_ci[s][0] = ev_percentile(col, R, 2.5);
            diff_ci[s][1] = ev_percentile(col, R, 97.5);
        }
    }
    free(bpb);
    free(cnt);
    free(col);
    return 0;
}

int ev_bootstrap_rows(const double *num, const double *den, size_t S, size_t n, size_t ref, unsigned R,
                      uint64_t seed, double (*ci)[2], double (*diff_ci)[2]) {
    if (!S) return 0;
    for (size_t s = 0; s < S; s++) {
        ci[s][0] = ci[s][1] = NAN;
        if (diff_ci) diff_ci[s][0] = diff_ci[s][1] = NAN;
    }
    if (!n || !R) return 0;
    double *val = malloc((size_t)R * S * sizeof *val), *col = malloc((size_t)R * sizeof *col);
    size_t *cnt = calloc(n, sizeof *cnt);
    if (!val || !col || !cnt) {
        free(val);
        free(col);
        free(cnt);
        return -1;
    }
    uint64_t st = seed;
    for (unsigned r = 0; r < R; r++) {
        memset(cnt, 0, n * sizeof *cnt);
        for (size_t i = 0; i < n; i++) cnt[rng_splitmix64(&st) % n]++;
        for (size_t s = 0; s < S; s++) {
            double x = 0, b = 0;
            for (size_t i = 0; i < n; i++) {
                x += (double)cnt[i] * num[s * n + i];
                b += (double)cnt[i] * den[s * n + i];
            }
            val[(size_t)r * S + s] = b > 0 ? x / (b * M_LN2) : NAN;
        }
    }
    for (size_t s = 0; s < S; s++) {
        for (unsigned r = 0; r < R; r++) col[r] = val[(size_t)r * S + s];
        ci[s][0] = ev_percentile(col, R, 2.5);
        ci[s][1] = ev_percentile(col, R, 97.5);
        if (!diff_ci || ref >= S) continue;
        for (unsigned r = 0; r < R; r++) col[r] = val[(size_t)r * S + s] - val[(size_t)r * S + ref];
        diff_ci[s][0] = ev_percentile(col, R, 2.5);
        diff_ci[s][1] = ev_percentile(col, R, 97.5);
    }
    free(val);
    free(col);
    free(cnt);
    return 0;
}
