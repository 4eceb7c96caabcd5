/* tests/unit/sampler/test_sampler.c: greedy, temperature, top-k/top-p/min-p cut
 * points, seeded reproducibility of the PRNG. */
#include "sampler/sampler.h"
#include "tests/tap.h"

static void freq(const double *p, size_t n, const ssample_params *sp, uint64_t seed, int draws, double *f) {
    rng_state r;
    rng_seed(&r, seed);
    double work[16];
    size_t order[16];
    for (size_t i = 0; i < n; i++) f[i] = 0;
    for (int i = 0; i < draws; i++) {
        int k = ssample_pick(p, n, sp, &r, work, order);
        if (k >= 0) f[k] += 1.0 / draws;
    }
}

int main(void) {
    rng_state a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_next(&a) == rng_next(&b);
    ok(same, "same seed, same sequence");
    rng_seed(&b, 43);
    ok(rng_next(&a) != rng_next(&b), "different seeds differ");
    double u = 0, mn = 1, mx = 0;
    for (int i = 0; i < 10000; i++) {
        double x = rng_uniform(&a);
        u += x;
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    ok(mn >= 0 && mx < 1, "uniform in [0,1)");
    is_near(u / 10000, 0.5, 0.02, "uniform mean");

    double tie[3] = {0.2, 0.4, 0.4};
    is_int(ssample_argmax(tie, 3), 1, "greedy tie goes to the lower index");
    double zero[3] = {0, 0, 0};
    is_int(ssample_argmax(zero, 3), -1, "no mass, no choice");
    ssample_params g = {0, 1, 0, 0};
    rng_seed(&a, 1);
    double work[16];
    size_t order[16];
    int all = 1;
    for (int i = 0; i < 100; i++) all &= ssample_pick(tie, 3, &g, &a, work, order) == 1;
    ok(all, "temperature 0 is deterministic greedy");

    double p[4] = {0.5, 0.3, 0.15, 0.05}, f[4];
    ssample_params t1 = {1, 1, 0, 0};
    freq(p, 4, &t1, 7, 40000, f);
    is_near(f[0], 0.5, 0.015, "T=1 draws follow p (0)");
    is_near(f[3], 0.05, 0.01, "T=1 draws follow p (3)");
    ssample_params k2 = {1, 1, 0, 2};
    freq(p, 4, &k2, 7, 40000, f);
    ok(f[2] == 0 && f[3] == 0, "top-k 2 keeps two");
    is_near(f[0], 0.625, 0.015, "top-k renormalises");
    ssample_params tp = {1, 0.75, 0, 0};
    freq(p, 4, &tp, 7, 40000, f);
    ok(f[2] == 0 && f[3] == 0 && f[1] > 0, "top-p 0.75 keeps 0.5+0.3");
    ssample_params tp2 = {1, 0.85, 0, 0};
    freq(p, 4, &tp2, 7, 40000, f);
    ok(f[2] > 0 && f[3] == 0, "top-p 0.85 keeps three");
    ssample_params tp3 = {1, 0.1, 0, 0};
    freq(p, 4, &tp3, 7, 1000, f);
    ok(f[1] == 0 && f[0] > 0.999, "top-p smaller than the top keeps the top alone");
    ssample_params mp = {1, 1, 0.5, 0};
    freq(p, 4, &mp, 7, 40000, f);
    ok(f[1] > 0 && f[2] == 0, "min-p 0.5 cuts below 0.25");
    ssample_params mp2 = {1, 1, 0.2, 0};
    freq(p, 4, &mp2, 7, 40000, f);
    ok(f[2] > 0 && f[3] == 0, "min-p 0.2 cuts below 0.1");
    ssample_params th = {0.5, 1, 0, 0};
    freq(p, 4, &th, 9, 40000, f);
    double z = 0.25 + 0.09 + 0.0225 + 0.0025;
    is_near(f[0], 0.25 / z, 0.015, "T=0.5 sharpens to p^2");
    is_near(f[1], 0.09 / z, 0.015, "T=0.5 second");
    double unnorm[3] = {2, 6, 0};
    freq(unnorm, 3, &t1, 5, 40000, f);
    is_near(f[1], 0.75, 0.015, "unnormalised input is fine");
    double f2[4];
    freq(p, 4, &t1, 123, 500, f);
    freq(p, 4, &t1, 123, 500, f2);
    ok(!memcmp(f, f2, sizeof f), "same seed, same draws");
    return tap_done();
}
