/* tests/unit/sampler/test_strategy.c: events and strategies on synthetic members
 * with hand-computed expected values. */
#include "sampler/sampler.h"
#include "sampler/strategy.h"
#include "tests/tap.h"
#include "vocab_align/candidates.h"

/* Randomised check of sstrat_greedy_bound: members are distributions over
 * the 14 strings of length 1..3 over {a,b} plus END, so every prefix mass is
 * exact and consistent; some masses are hidden (NaN). Whenever the bound
 * names a winner it must be the full-information greedy mixture winner. */
static void check_greedy_bound(void) {
    static const char *tok[14] = {"a", "b", "aa", "ab", "ba", "bb", "aaa", "aab", "aba", "abb",
                                  "baa", "bab", "bba", "bbb"};
    rng_state rng;
    rng_seed(&rng, 2024);
    int decided = 0, wrong = 0, trials = 20000;
    for (int t = 0; t < trials; t++) {
        size_t nm = 1 + rng_next(&rng) % 3;
        double p[3][15], endl[3], wn[3], wsum = 0;
        for (size_t m = 0; m < nm; m++) {
            double z = 0;
            int peak = (int)(rng_next(&rng) % 15);
            for (int i = 0; i < 15; i++) {
                double u = rng_uniform(&rng);
                p[m][i] = u * u * u * (i == peak ? 30 : 1);
                z += p[m][i];
            }
            for (int i = 0; i < 15; i++) p[m][i] /= z;
            endl[m] = log(p[m][14]);
            wn[m] = 0.2 + rng_uniform(&rng);
            wsum += wn[m];
        }
        for (size_t m = 0; m < nm; m++) wn[m] /= wsum;
        vcand_set cs;
        vcand_init(&cs);
        size_t want = 2 + rng_next(&rng) % 6;
        while (cs.n < want) {
            const char *s = tok[rng_next(&rng) % 14];
            vcand_add(&cs, s, strlen(s), 0);
        }
        vcand_link(&cs);
        size_t n = cs.n, ne = n + 1;
        double lq[3 * 8], hidden[3 * 8], ev[3 * 9], mix[9], scratch[4 * 9];
        for (size_t m = 0; m < nm; m++)
            for (size_t c = 0; c < n; c++) {
                double q = 0;
                for (int i = 0; i < 14; i++)
                    if (strlen(tok[i]) >= cs.len[c] && !memcmp(tok[i], vcand_str(&cs, c), cs.len[c])) q += p[m][i];
                lq[m * 8 + c] = log(q);
                hidden[m * 8 + c] = rng_uniform(&rng) < 0.3 ? NAN : log(q);
            }
        for (size_t m = 0; m < nm; m++) sstrat_events(n, cs.parent, lq + m * 8, endl[m], ev + m * ne);
        sstrat_mixture(nm, ne, ev, wn, mix);
        int full = ssample_argmax(mix, ne);
        int b = sstrat_greedy_bound(nm, n, cs.parent, hidden, NULL, 8, endl, wn, scratch);
        if (b >= 0) {
            decided++;
            if (b != full) wrong++;
        }
        vcand_free(&cs);
    }
    diag("greedy bound: %d of %d random steps decided without the hidden masses", decided, trials);
    ok(decided > trials / 10, "the bound decides a good share of steps");
    is_int(wrong, 0, "the bound never names a winner other than the full-information one");
}

#include <math.h>

int main(void) {
    char err[256];
    sstrat st;
    ok(sstrat_parse("mixture", &st, err, sizeof err) == 0 && st.kind == SSTRAT_MIXTURE, "parse mixture");
    ok(sstrat_parse(NULL, &st, err, sizeof err) == 0 && st.kind == SSTRAT_MIXTURE, "default is mixture");
    ok(sstrat_parse("solo:b", &st, err, sizeof err) == 0 && st.kind == SSTRAT_SOLO && !strcmp(st.solo, "b"), "parse solo:b");
    ok(sstrat_parse("min_ppl_cross", &st, err, sizeof err) == 0 && st.kind == SSTRAT_MIN_PPL_CROSS, "parse min_ppl_cross");
    ok(sstrat_parse("bogus", &st, err, sizeof err) < 0 && strstr(err, "bogus"), "unknown strategy rejected");
    ok(sstrat_parse("solo:", &st, err, sizeof err) < 0, "solo without a name rejected");

    /* candidates: 0 " th", 1 " the" (extends 0), 2 " a"; event 3 = END */
    int parent[3] = {-1, 0, -1};
    double lq[6] = {log(0.5), log(0.4), log(0.3),    /* member A */
                    log(0.2), log(0.2), log(0.6)};   /* member B */
    double end[2] = {log(0.1), -INFINITY};
    double ev[8];
    sstrat_events(3, parent, lq, end[0], ev);
    sstrat_events(3, parent, lq + 3, end[1], ev + 4);
    is_near(ev[0], 0.1, 1e-12, "A: ' th' event = Q(' th') - Q(' the')");
    is_near(ev[1], 0.4, 1e-12, "A: ' the' event");
    is_near(ev[2], 0.3, 1e-12, "A: ' a' event");
    is_near(ev[3], 0.1, 1e-12, "A: END");
    is_near(ev[4], 0.0, 0, "B: ' th' event clipped to exactly 0");
    is_near(ev[7], 0.0, 0, "B: END of zero mass");
    double nan_lq[3] = {NAN, log(0.25), NAN};
    double ev2[4];
    sstrat_events(3, parent, nan_lq, NAN, ev2);
    ok(ev2[0] == 0 && fabs(ev2[1] - 0.25) < 1e-12 && ev2[3] == 0, "unknown (NaN) logq counts as zero mass");

    double w[2] = {3, 1}, wn[2], out[4];
    int alive[2] = {1, 1};
    is_int(sstrat_norm_weights(2, w, alive, wn), 2, "two weighted members");
    is_near(wn[0], 0.75, 1e-12, "weights normalised");
    double listed = sstrat_mixture(2, 4, ev, wn, out);
    is_near(listed, 0.875, 1e-12, "mixture listed mass 0.75*0.9 + 0.25*0.8");
    is_near(out[0], 0.075, 1e-12, "mixture ' th' = sum w ev (not renormalised)");
    is_near(out[1], 0.35, 1e-12, "mixture ' the'");
    is_near(out[2], 0.375, 1e-12, "mixture ' a'");
    is_near(out[3], 0.075, 1e-12, "mixture END = sum w exp(end_logq)");
    is_near(sstrat_rest(4, out), 0.125, 1e-12, "mixture REST = 1 - listed = sum w rest_m");

    alive[1] = 0;
    is_int(sstrat_norm_weights(2, w, alive, wn), 1, "dead member drops out");
    sstrat_mixture(2, 4, ev, wn, out);
    is_near(out[1], 0.4, 1e-12, "mixture with one member left = that member's own probabilities");
    double w10[2] = {1, 0};
    alive[1] = 1;
    is_int(sstrat_norm_weights(2, w10, alive, wn), 1, "weight 0 member takes no part");
    sstrat_mixture(2, 4, ev, wn, out);
    is_near(out[2], 0.3, 1e-12, "weights (1,0) = member 0");
    is_near(sstrat_rest(4, out), 0.1, 1e-12, "weights (1,0): REST = member 0's unlisted mass");

    double weq[2] = {1, 1};
    sstrat_norm_weights(2, weq, alive, wn);
    ok(sstrat_product(2, 4, ev, wn, out) == 0, "product has common support");
    /* A: ' the' .4, ' a' .3, rest .1 ... B: ' the' .2, ' a' .6, rest .2 */
    double zp = sqrt(.4 * .2) + sqrt(.3 * .6) + sqrt(.1 * .2);
    is_near(out[0], 0, 0, "product: B gives ' th' zero mass -> zero");
    is_near(out[1], sqrt(.08) / zp, 1e-12, "product ' the' = sqrt(.4*.2) / Z, Z over the events and REST");
    is_near(out[2], sqrt(.18) / zp, 1e-12, "product ' a'");
    is_near(out[3], 0, 0, "product END zero (B has no end mass)");
    is_near(sstrat_rest(4, out), sqrt(.02) / zp, 1e-12, "product REST = sqrt(rest_A rest_B) / Z");

    double disjoint[8] = {0.5, 0, 0, 0, 0, 0.5, 0, 0};
    ok(sstrat_product(2, 4, disjoint, wn, out) == 0, "product: the members share only REST");
    is_near(sstrat_rest(4, out), 1, 1e-12, "so REST takes everything");
    double full[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    ok(sstrat_product(2, 4, full, wn, out) == 1, "product with no common support at all falls back");
    is_near(out[0], 0.5, 1e-12, "fallback is the mixture");

    /* pool: the mixture's mass of the events every member gives mass to,
     * shared out geometrically; the other events keep the mixture's */
    ok(sstrat_pool(2, 4, ev, wn, NULL, out) == 0, "pool has common support");
    double mixl = 0.5 * 0.9 + 0.5 * 0.8, pooled = 0.5 * (.4 + .3) + 0.5 * (.2 + .6), zg = sqrt(.08) + sqrt(.18);
    is_near(out[1], pooled * sqrt(.08) / zg, 1e-12,
            "pool ' the' = S * sqrt(.4*.2) / (sqrt(.08)+sqrt(.18)), S the mixture's mass of ' the' and ' a'");
    is_near(out[2], pooled * sqrt(.18) / zg, 1e-12, "pool ' a'");
    is_near(out[0], 0.5 * 0.1, 1e-12, "pool ' th' (B gives it nothing): the mixture's, not zero");
    is_near(sstrat_rest(4, out), 1 - mixl, 1e-12, "pool REST = the mixture's REST");
    double alpha[2] = {1, 0};
    sstrat_pool(2, 4, ev, wn, alpha, out);
    is_near(out[1], mixl * 0.4 / (0.1 + 0.4 + 0.3 + 0.1), 1e-12, "pool exponents (1,0): member A's shape, the mixture's mass");
    ok(sstrat_pool(2, 4, full, wn, NULL, out) == 1 && fabs(out[0] - 0.5) < 1e-12, "pool without common support = mixture");

    sstrat_norm_weights(2, w, alive, wn);
    ok(sstrat_selective(2, 4, ev, wn, 0, 0.41, out) == 0, "lead max 0.4 < 0.41: ensemble (0.4/0.9 would pass)");
    is_near(out[1], 0.35, 1e-12, "selective below threshold = mixture");
    ok(sstrat_selective(2, 4, ev, wn, 0, 0.4, out) == 1, "lead max 0.4 >= 0.4: lead alone");
    is_near(out[1], 0.4, 1e-12, "selective above threshold = the lead's own probabilities");

    /* own token paths: A proposed ' the' and ' a' itself (paths .25 and .3);
     * ' th' is not A's, so ' th' stays a prefix class and its child ' the'
     * (A's own) is subtracted as a whole prefix class */
    double lp[3] = {NAN, log(0.25), log(0.3)}, evo[4];
    sstrat_events_own(3, parent, lq, lp, end[0], evo);
    is_near(evo[1], 0.25, 1e-12, "own ' the': its token path's probability, not the prefix mass .4");
    is_near(evo[0], 0.1, 1e-12, "' th' (not A's): Q(' th') - Q(' the')");
    is_near(evo[2], 0.3, 1e-12, "own ' a'");
    double lp2[3] = {log(0.2), log(0.25), NAN};
    sstrat_events_own(3, parent, lq, lp2, end[0], evo);
    is_near(evo[0], 0.2, 1e-12, "own ' th' whose extension ' the' is also own: the path, nothing subtracted");
    double lp3[3] = {log(0.2), NAN, NAN};
    sstrat_events_own(3, parent, lq, lp3, end[0], evo);
    is_near(evo[0], 0.1, 1e-12, "own ' th' with an extension that is not own: back to the prefix class");
    double sum = 0;
    for (int e = 0; e < 4; e++) sum += evo[e];
    ok(sum <= 1 + 1e-12, "events sum to at most 1");

    /* min_ppl: A proposes ' the' (log .4 / 4 bytes), B proposes ' a' (log .6 / 2) */
    size_t len[3] = {3, 4, 2};
    int prop[2] = {1, 2};
    double score[2];
    sstrat_norm_weights(2, weq, alive, wn);
    is_int(sstrat_min_ppl(2, 3, lq, 3, end, len, prop, wn, 0, score), 1, "min_ppl: ' the' has the lower per-byte ppl");
    is_near(score[0], log(0.4) / 4, 1e-12, "min_ppl score of A's proposal");
    is_near(score[1], log(0.6) / 2, 1e-12, "min_ppl score of B's proposal");
    double lq2[6] = {log(0.5), log(0.4), log(0.3), log(0.2), log(0.01), log(0.6)};
    is_int(sstrat_min_ppl(2, 3, lq2, 3, end, len, prop, wn, 0, score), 1, "min_ppl only asks the proposer");
    is_int(sstrat_min_ppl(2, 3, lq2, 3, end, len, prop, wn, 1, score), 2, "min_ppl_cross: B's ' a' wins under both");
    is_near(score[0], (0.5 * log(0.4) + 0.5 * log(0.01)) / 4, 1e-12, "cross score of ' the'");
    is_near(score[1], (0.5 * log(0.3) + 0.5 * log(0.6)) / 2, 1e-12, "cross score of ' a'");
    int prop_end[2] = {3, -1};
    is_int(sstrat_min_ppl(2, 3, lq, 3, end, len, prop_end, wn, 0, score), 3, "END proposal");
    int none[2] = {-1, -1};
    is_int(sstrat_min_ppl(2, 3, lq, 3, end, len, none, wn, 0, score), -1, "no proposals");

    double nll[2] = {10, 20}, aw[2];
    int okm[2] = {1, 1};
    sstrat_auto_weights(2, nll, 10, okm, aw);
    is_near(aw[0], 1 / (1 + exp(-1.0)), 1e-12, "auto weights softmax(-nll/bytes)");
    is_near(aw[0] + aw[1], 1, 1e-12, "auto weights sum to 1");
    okm[1] = 0;
    sstrat_auto_weights(2, nll, 10, okm, aw);
    ok(aw[0] == 1 && aw[1] == 0, "a member without a score gets 0");
    okm[1] = 1;
    sstrat_auto_weights(2, nll, 0, okm, aw);
    ok(aw[0] == 0.5 && aw[1] == 0.5, "empty prompt: equal weights");
    check_greedy_bound();
    return tap_done();
}
