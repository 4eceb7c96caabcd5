/* vocab_align/va_vocab: prefix ranges and prefix masses against brute force
 * over random vocabularies with a small alphabet (so prefixes collide a lot),
 * empty tokens, duplicate byte strings and 0x00/0xFF bytes. */
#include "vocab_align/va_vocab.h"
#include "tests/tap.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static const unsigned char alpha[] = {0x00, 'a', 'b', ' ', 0xC3, 0xFF};

static void rand_str(unsigned char *s, size_t *n, size_t maxn) {
    *n = rnd() % (maxn + 1);
    for (size_t i = 0; i < *n; i++) s[i] = alpha[rnd() % sizeof alpha];
}

static int starts_with(const unsigned char *t, size_t tn, const unsigned char *x, size_t xn) {
    return tn >= xn && (xn == 0 || memcmp(t, x, xn) == 0);
}

int main(void) {
    int bad_range = 0, bad_mass = 0, bad_exact = 0, checks = 0;
    double worst = 0;
    for (int round = 0; round < 20; round++) {
        int n = 1 + (int)(rnd() % 400);
        va_vocab *v = va_vocab_create(n);
        unsigned char buf[8];
        size_t len;
        for (int i = 0; i < n; i++) {
            if (i > 0 && rnd() % 10 == 0) { /* duplicate an earlier token's bytes */
                const unsigned char *b = va_token_bytes(v, (int)(rnd() % (unsigned)i), &len);
                memcpy(buf, b, len);
            } else {
                rand_str(buf, &len, 6);
            }
            va_vocab_set(v, i, buf, len);
        }
        va_vocab_finalize(v);
        float *p = malloc((size_t)n * sizeof *p);
        double *cum = malloc((size_t)(n + 1) * sizeof *cum);
        double z = 0;
        for (int i = 0; i < n; i++) z += p[i] = (float)(rnd() % 1000 + (rnd() % 7 == 0 ? 100000 : 0));
        for (int i = 0; i < n; i++) p[i] = (float)(p[i] / z);
        va_cumsum(v, p, cum);
        for (int q = 0; q < 300; q++) {
            unsigned char x[8];
            size_t xn;
            rand_str(x, &xn, 4);
            double want = 0;
            int cnt = 0, ecnt = 0;
            for (int i = 0; i < n; i++) {
                const unsigned char *b = va_token_bytes(v, i, &len);
                if (starts_with(b, len, x, xn)) {
                    want += p[i];
                    cnt++;
                    if (len == xn) ecnt++;
                }
            }
            int lo, hi, elo, ehi;
            int got = va_prefix_range(v, x, xn, &lo, &hi);
            int rok = got == cnt;
            for (int k = lo; k < hi; k++) {
                const unsigned char *b = va_token_bytes(v, va_sorted_id(v, k), &len);
                if (!starts_with(b, len, x, xn)) rok = 0;
            }
            bad_range += !rok;
            va_exact_range(v, x, xn, &elo, &ehi);
            bad_exact += !(ehi - elo == ecnt && elo == lo);
            double m = va_mass(v, cum, x, xn);
            double d = fabs(m - want);
            if (d > worst) worst = d;
            bad_mass += d > 1e-9;
            checks++;
        }
        free(p);
        free(cum);
        va_vocab_free(v);
    }
    diag("%d queries, worst |T - brute force| = %.3g", checks, worst);
    is_int(bad_range, 0, "prefix ranges hold exactly the tokens starting with x");
    is_int(bad_exact, 0, "exact ranges hold exactly the tokens equal to x, first in the range");
    is_int(bad_mass, 0, "T(x) matches brute force to 1e-9");

    va_vocab *v = va_vocab_create(3);
    va_vocab_set(v, 0, "", 0);
    va_vocab_set(v, 1, "ab", 2);
    va_vocab_set(v, 2, "a", 1);
    va_vocab_finalize(v);
    float p[3] = {0.5f, 0.25f, 0.25f};
    double cum[4];
    va_cumsum(v, p, cum);
    is_near(va_mass(v, cum, "", 0), 1.0, 1e-12, "T(empty) is the total, control tokens included");
    is_near(va_mass(v, cum, "a", 1), 0.5, 1e-12, "T(a) = p(a) + p(ab)");
    is_near(va_mass(v, cum, "abc", 3), 0.0, 1e-12, "no token starts with abc");
    is_int(va_max_token_len(v), 2, "max token length");
    ok(va_vocab_set(v, 0, "x", 1) == -1, "a finalized vocabulary is read-only");
    va_vocab_free(v);
    ok(va_vocab_create(0) == NULL, "empty vocabulary refused");

    /* va_mass_lazy: 2000 tokens "a" + two bytes, so T("a") spans a range
     * wider than VA_DIRECT_SUM (read from the sums, built on first need)
     * and T("a" + one byte) a narrow one (summed directly). */
    enum { NW = 2000 };
    va_vocab *w = va_vocab_create(NW);
    float *pw = malloc(NW * sizeof *pw);
    double *cw = malloc((NW + 1) * sizeof *cw), tot = 0, t1 = 0;
    for (int i = 0; i < NW; i++) {
        unsigned char b[3] = {'a', (unsigned char)(i / 250), (unsigned char)(i % 250)};
        va_vocab_set(w, i, b, 3);
        pw[i] = (float)(1 + i % 7) / (float)(4 * NW);
        tot += pw[i];
        if (i / 250 == 1) t1 += pw[i];
    }
    va_vocab_finalize(w);
    cw[0] = NAN;
    unsigned char a1[2] = {'a', 1};
    is_near(va_mass_lazy(w, pw, cw, a1, 2), t1, 1e-9, "lazy T(x) over a narrow range = brute force");
    ok(isnan(cw[0]), "a narrow range builds no sums");
    is_near(va_mass_lazy(w, pw, cw, "a", 1), tot, 1e-9, "lazy T(x) over a wide range = brute force");
    ok(!isnan(cw[0]), "a wide range builds the sums");
    is_near(va_mass_lazy(w, pw, NULL, "a", 1), tot, 1e-9, "without sums a wide range is summed directly");
    is_near(va_mass_lazy(w, pw, cw, "", 0), 1.0, 0, "lazy T(empty) = 1");
    is_near(va_mass_lazy(w, pw, cw, "b", 1), 0.0, 0, "no token starts with b");
    free(pw);
    free(cw);
    va_vocab_free(w);
    return tap_done();
}
