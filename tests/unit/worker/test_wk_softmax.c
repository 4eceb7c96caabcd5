/* worker/wk_softmax.c against a double-precision softmax of the same
 * float differences: every probability within relative 1e-6 (a few float
 * ulps: about 2e-7 seen), the largest logit's exp exactly 1 before
 * normalising, order kept for neighbouring floats over the whole range,
 * the vectorised and the scalar variants equal bit for bit (tails, in
 * place, logits 87 or more below the largest, -INFINITY), a NaN logit
 * making the whole row NaN, and a row of 32,000 logits timed against
 * libm's expf loop (a diagnostic, not a check). */
#include "tests/tap.h"
#include "common/clock.h"
#include "common/rng.h"
#include "worker/wk_softmax.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The softmax in double, as a reference, of the same differences
 * logit - max as the worker's, rounded to float (a difference of 20 is
 * only known to 1e-6 in float: that rounding is the worker's input, not
 * the exp's error). */
static void softmax_double(const float *lg, int n, double *p) {
    float mx = lg[0];
    double z = 0;
    for (int i = 1; i < n; i++)
        if (lg[i] > mx) mx = lg[i];
    for (int i = 0; i < n; i++) z += p[i] = exp((double)(lg[i] - mx));
    for (int i = 0; i < n; i++) p[i] /= z;
}

/* The worst relative error of wk_softmax over one row (probabilities above
 * 1e-36; below, where floats lose precision, an absolute 1e-36). */
static double worst_error(const float *lg, int n) {
    float *p = malloc((size_t)n * sizeof *p);
    double *q = malloc((size_t)n * sizeof *q), worst = 0;
    wk_softmax(lg, n, p);
    softmax_double(lg, n, q);
    for (int i = 0; i < n; i++) {
        double e = q[i] > 1e-36 ? fabs(p[i] - q[i]) / q[i] : fabs(p[i] - q[i]) > 1e-36 ? INFINITY : 0;
        if (e > worst) worst = e;
    }
    free(p);
    free(q);
    return worst;
}

static int same_bits(const float *lg, int n) {
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    wk_softmax(lg, n, a);
    wk_softmax_scalar(lg, n, b);
    int same = memcmp(a, b, (size_t)n * sizeof *a) == 0;
    memcpy(a, lg, (size_t)n * sizeof *a); /* in place */
    wk_softmax(a, n, a);
    same = same && memcmp(a, b, (size_t)n * sizeof *a) == 0;
    free(a);
    free(b);
    return same;
}

int main(void) {
    rng_state r;
    rng_seed(&r, 7);
    enum { V = 32000 };
    float *lg = malloc(V * sizeof *lg), *p = malloc(V * sizeof *p);

    /* logits as a language model's: a spread of about 10 */
    for (int i = 0; i < V; i++) lg[i] = (float)(rng_uniform(&r) * 20 - 10);
    double e = worst_error(lg, V);
    diag("32000 logits in [-10, 10]: worst relative error %.3g", e);
    ok(e < 1e-6, "a row of 32000 logits: every probability within relative 1e-6");
    ok(same_bits(lg, V), "... the vectorised and the scalar variants agree bit for bit, also in place");

    /* a wide spread: exps far below the normal range */
    for (int i = 0; i < V; i++) lg[i] = (float)(rng_uniform(&r) * 200 - 150);
    lg[123] = -INFINITY;
    e = worst_error(lg, V);
    diag("logits in [-150, 50] and one -inf: worst relative error %.3g", e);
    ok(e < 1e-6, "logits spread over 200 (exps below the normal range: 0) and -INFINITY: within relative 1e-6 (absolute 1e-36 below)");
    wk_softmax(lg, V, p);
    ok(p[123] == 0, "... -INFINITY gives 0");
    ok(same_bits(lg, V), "... and agree bit for bit");

    /* short rows and tails */
    int tails_ok = 1;
    for (int n = 1; n <= 19; n++) tails_ok &= same_bits(lg + 3, n) && worst_error(lg + 3, n) < 1e-6;
    ok(tails_ok, "rows of 1 to 19 entries (tails shorter than a vector): exact to 1e-6, the same bits");

    /* a NaN logit (a broken model): every probability NaN, as a sum with it is */
    for (int i = 0; i < 64; i++) lg[i] = (float)i / 8;
    lg[37] = NAN;
    wk_softmax(lg, 64, p);
    int all_nan = 1;
    for (int i = 0; i < 64; i++) all_nan &= isnan(p[i]) != 0;
    ok(all_nan, "a NaN logit: every probability NaN (taken lane by lane: no NaN reaches a vector cast)");

    /* the largest logit: exp exactly 1, so probability 1 / sum */
    float two[2] = {3.0f, 3.0f};
    wk_softmax(two, 2, two);
    ok(two[0] == 0.5f && two[1] == 0.5f, "two equal logits: exactly 0.5 each");

    /* order: neighbouring floats never swap (x and the next float above it) */
    long swaps = 0, pairs = 0;
    enum { CH = 4096 };
    float row[CH + 1], pr[CH + 1];
    for (double start = -110; start < 0; start += 0.37) {
        row[0] = 0; /* the largest: x = logit */
        float x = (float)start;
        for (int i = 1; i <= CH; i++) {
            row[i] = x;
            x = nextafterf(x, 1.0f);
        }
        wk_softmax(row, CH + 1, pr);
        for (int i = 1; i < CH; i++, pairs++) swaps += pr[i + 1] < pr[i];
    }
    diag("%ld pairs of neighbouring floats in [-110, 0): %ld in the wrong order", pairs, swaps);
    ok(swaps == 0, "a larger logit never gets a smaller probability (neighbouring floats over [-110, 0), exps below the normal range included: 0)");

    /* timing, for the record */
    for (int i = 0; i < V; i++) lg[i] = (float)(rng_uniform(&r) * 20 - 10);
    double t0 = clock_mono_s();
    for (int k = 0; k < 200; k++) wk_softmax(lg, V, p);
    double t1 = clock_mono_s();
    for (int k = 0; k < 200; k++) {
        float mx = lg[0];
        for (int i = 1; i < V; i++) mx = lg[i] > mx ? lg[i] : mx;
        double z = 0;
        for (int i = 0; i < V; i++) z += p[i] = expf(lg[i] - mx);
        for (int i = 0; i < V; i++) p[i] *= (float)(1 / z);
    }
    double t2 = clock_mono_s();
    diag("softmax over 32000 logits: %.1f us; libm expf loop %.1f us", (t1 - t0) / 200 * 1e6, (t2 - t1) / 200 * 1e6);
    for (int i = 0; i < V; i++) lg[i] = (float)(rng_uniform(&r) * 300 - 300); /* most exps below 1e-38 */
    t0 = clock_mono_s();
    for (int k = 0; k < 200; k++) wk_softmax(lg, V, p);
    diag("... logits spread over 300: %.1f us", (clock_mono_s() - t0) / 200 * 1e6);
    free(lg);
    free(p);
    return tap_done();
}
