/* worker/wk_softmax.c: see wk_softmax.h.
 *
 * Why it is shaped so. A step's softmax over a 32,000-entry vocabulary was
 * the largest piece of the worker's own work per step besides the decode
 * (about 0.2 ms of the 0.37 ms a consort step cost more than a llama-server
 * token on the development machine's CPU, bench/RESULTS.md): one libm
 * expf call per entry and a sum whose every addition waited for the one
 * before. Here the exps are a polynomial on four lanes at a time (GCC's
 * 16-byte vector extensions: SSE2 on any x86-64, NEON on arm64, plain
 * scalar code elsewhere), and the sum has four independent accumulators.
 *
 * The exp is Cephes' expf: x = n ln2 + r with n = round(x log2 e) and
 * |r| <= ln2 / 2 (ln2 split in two so that r is exact), a degree-6
 * polynomial in r, times 2^n built in the exponent bits. x = logit - max
 * is at most 0, so n is at most 0 and exp(0) is exactly 1. Below X_LOW
 * (2^n would leave the normal range: exp(x) < 1.6e-38) it is 0. Those
 * probabilities are too small to matter to any sum and a float holds
 * them only as denormals, whose every product or conversion costs x86 a
 * microcode assist: until 2026-12 they came from libm's expf, one at a
 * time, and a random-weight model whose logits spread over hundreds spent
 * 0.26 ms a step in its softmax on the GPU machine's CPU (0.35 ms here
 * against 0.06 for a spread of 20; keeping the denormals exactly, in the
 * vector code, still took 0.35). A row whose logits all lie within X_LOW
 * of the largest (a language model's, mostly) skips the selection. The
 * scalar variant is the same arithmetic, element by element: the vector
 * code must give its numbers to the bit (the test checks), so neither may
 * use a fused multiply-add the other lacks (-std=c11 keeps GCC from
 * contracting).
 *
 * State: none.
 */
#include "worker/wk_softmax.h"

#include <stdint.h>
#include <string.h>

#define LANES 4
#define X_LOW -87.0f /* exp(X_LOW) ~ 1.6e-38: above it 2^n is a normal float */

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

/* Cephes expf's constants. */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500E-4f
#define P1 1.3981999507E-3f
#define P2 8.3334519073E-3f
#define P3 4.1665795894E-2f
#define P4 1.6666665459E-1f
#define P5 5.0000001201E-1f

/* The polynomial part, the same expression for a float and for a vf:
 * exp(r) for |r| <= ln2 / 2. */
#define EXP_POLY(r, z) ((((((P0 * (r) + P1) * (r) + P2) * (r) + P3) * (r) + P4) * (r) + P5) * (z) + (r) + 1.0f)

/* exp(x) for X_LOW <= x <= 0. */
static float exp_normal(float x) {
    float t = x * LOG2E + 0.5f;
    int32_t n = (int32_t)t;
    if ((float)n > t) n -= 1; /* floor */
    float nf = (float)n;
    float r = x - nf * LN2_HI;
    r = r - nf * LN2_LO;
    float y = EXP_POLY(r, r * r);
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* exp(x) for x <= 0, 0 below X_LOW (NaN: NaN). */
static float exp_scalar(float x) {
    if (x != x) return x;
    return x < X_LOW ? 0.0f : exp_normal(x);
}

/* exp of LANES lanes, all >= X_LOW. */
static vf exp_lanes(vf x) {
    vf t = x * LOG2E + 0.5f;
    vi n = __builtin_convertvector(t, vi);
    n += (vi)(__builtin_convertvector(n, vf) > t); /* floor: -1 where truncation went up */
    vf nf = __builtin_convertvector(n, vf);
    vf r = x - nf * LN2_HI;
    r = r - nf * LN2_LO;
    vf y = EXP_POLY(r, r * r);
    vi bits = (n + 127) << 23;
    return y * (vf)bits;
}

static vf pick(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

/* exp of LANES lanes <= 0, none NaN: exp_scalar's rule on every lane
 * (a lane below X_LOW is computed as 0's exp, then dropped: no operation
 * may make a denormal, which costs x86 a microcode assist of about a
 * hundred cycles). */
static vf exp_lanes_wide(vf x) {
    vi low = x < X_LOW;
    vf zv = {0};
    return pick(low, zv, exp_lanes(pick(low, zv, x)));
}

/* The largest and the smallest of x[0..n); returns 1 when some x is NaN
 * (then the two say nothing: wk_softmax takes every chunk lane by lane). */
static int min_max(const float *x, int n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    int i = 0, nan = 0;
    if (n >= LANES) {
        vf l, h;
        memcpy(&l, x, sizeof l);
        h = l;
        vi bad = l != l;
        for (i = LANES; i + LANES <= n; i += LANES) {
            vf v;
            memcpy(&v, x + i, sizeof v);
            h = pick(v > h, v, h);
            l = pick(v < l, v, l);
            bad |= v != v;
        }
        for (int k = 0; k < LANES; k++) {
            if (h[k] > hi) hi = h[k];
            if (l[k] < lo) lo = l[k];
            nan |= bad[k] != 0;
        }
    }
    for (; i < n; i++) {
        if (x[i] > hi) hi = x[i];
        if (x[i] < lo) lo = x[i];
        nan |= x[i] != x[i];
    }
    *mn = lo;
    *mx = hi;
    return nan;
}

/* probs[0..n) *= 1 / their sum (the sum in double, four accumulators). */
static void normalise(float *probs, int n) {
    double acc[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) acc[k] += probs[i + k];
    for (; i < n; i++) acc[0] += probs[i];
    float inv = (float)(1.0 / ((acc[0] + acc[1]) + (acc[2] + acc[3])));
    for (i = 0; i + LANES <= n; i += LANES) {
        vf v;
        memcpy(&v, probs + i, sizeof v);
        v *= inv;
        memcpy(probs + i, &v, sizeof v);
    }
    for (; i < n; i++) probs[i] *= inv;
}

void wk_softmax(const float *logits, int n, float *probs) {
    float mn, mx;
    int nan = min_max(logits, n, &mn, &mx), i = 0;
    int wide = !(mn - mx >= X_LOW); /* some exp below the normal range, or -INFINITY */
    for (; !nan && i + LANES <= n; i += LANES) { /* (a row with a NaN goes element by element: */
        vf x;                                      /* no NaN may reach a vector cast) */
        memcpy(&x, logits + i, sizeof x);
        x -= mx;
        vf y = wide ? exp_lanes_wide(x) : exp_lanes(x);
        memcpy(probs + i, &y, sizeof y);
    }
    for (; i < n; i++) probs[i] = exp_scalar(logits[i] - mx);
    normalise(probs, n);
}

void wk_softmax_scalar(const float *logits, int n, float *probs) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    for (int i = 0; i < n; i++) probs[i] = exp_scalar(logits[i] - mx);
    normalise(probs, n);
}
