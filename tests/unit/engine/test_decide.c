/* tests/unit/engine/test_decide.c: the step decision as a pure function:
 * what it asks for (missing masses, selective's catch-up), when the greedy
 * bound spares a round, min_ppl's proposals drawn once per step, and the
 * invariant check on the members' events. No members, no network. */
#include "coordinator/engine/ensemble_decide.h"
#include "tests/tap.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define LD 8
#define NAN_ NAN

typedef struct {
    vcand_set cand;
    double lq[2 * LD];
    double lp[2 * LD];
    double end_lq[2];
    int active[2], fresh[2];
    double w[2];
    sstrat st;
    decide_buf b;
    double ev[2 * (LD + 1)], own[2 * (LD + 1)], dist[LD + 1], work[LD + 1], mlo[4 * (LD + 1)];
    size_t order[LD + 1];
    decide_memo memo;
    rng_state rng;
} fixture;

/* Two members, candidates "a" (member 0's proposal) and "b" (member 1's). */
/* (frees what the previous setup of f made: f starts zeroed) */
static void setup(fixture *f, const char *strategy) {
    vcand_free(&f->cand);
    decide_memo_free(&f->memo);
    memset(f, 0, sizeof *f);
    vcand_init(&f->cand);
    vcand_add(&f->cand, "a", 1, 0);
    vcand_add(&f->cand, "b", 1, 1);
    vcand_link(&f->cand);
    for (size_t i = 0; i < 2 * LD; i++) f->lq[i] = f->lp[i] = NAN;
    f->end_lq[0] = f->end_lq[1] = log(0.01);
    f->active[0] = f->active[1] = f->fresh[0] = f->fresh[1] = 1;
    f->w[0] = f->w[1] = 1;
    char err[128];
    sstrat_parse(strategy, &f->st, err, sizeof err);
    f->b = (decide_buf){f->ev, f->own, f->dist, f->work, f->mlo, f->order, {0}, {0}};
    rng_seed(&f->rng, 7);
}

static decide_in input(fixture *f, double temperature, int no_skip) {
    decide_in in = {2, &f->cand, f->lq, NULL, LD, f->end_lq, f->active, f->fresh, f->w, &f->st, 0, 0.5,
                    {temperature, 1, 0, 0}, no_skip, NULL};
    return in;
}

static void lq_set(fixture *f, size_t m, size_t c, double q) { f->lq[m * LD + c] = log(q); }

/* Every mass known, and each member's own path for its proposal:
 * member 0: Q(a) .6, Q(b) .3, own path a .45; member 1: Q(a) .4, Q(b) .5,
 * own path b .35; END .01 each. */
static decide_in known_input(fixture *f, double temperature) {
    lq_set(f, 0, 0, 0.6);
    lq_set(f, 0, 1, 0.3);
    lq_set(f, 1, 0, 0.4);
    lq_set(f, 1, 1, 0.5);
    f->lp[0 * LD + 0] = log(0.45);
    f->lp[1 * LD + 1] = log(0.35);
    decide_in in = input(f, temperature, 1);
    in.lp = f->lp;
    return in;
}

/* Pearson's chi-square of counts against probabilities p (renormalised). */
static double chi_square(const long *count, const double *p, size_t k, long n) {
    double s = 0, x = 0;
    for (size_t i = 0; i < k; i++) s += p[i];
    for (size_t i = 0; i < k; i++) {
        double e = (double)n * p[i] / s;
        if (e > 0) x += ((double)count[i] - e) * ((double)count[i] - e) / e;
    }
    return x;
}

/* The step's sampling matches the distribution it reports: N draws at
 * temperature 1 from a fixed step, chi-square against dist over the listed
 * events (REST is not drawn: docs/STRATEGIES.md "Sampling") at alpha = 1e-3
 * (2 degrees of freedom: critical value 13.816); a perturbed distribution
 * (one event's probability moved by 10% of it) must fail the same test. */
static void test_sampling_matches(const char *strategy) {
    static fixture f;
    enum { N = 20000 };
    long count[3] = {0};
    double dist[3];
    setup(&f, strategy);
    decide_in in = known_input(&f, 1.0);
    for (long t = 0; t < N; t++) {
        decide_memo_reset(&f.memo);
        decision d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
        if (d.kind == DECIDE_CHOICE && d.choice >= 0 && d.choice < 3) count[d.choice]++;
    }
    memcpy(dist, f.dist, sizeof dist);
    double x = chi_square(count, dist, 3, N);
    diag("%s: counts %ld %ld %ld, dist %.4f %.4f %.4f, chi2 %.2f", strategy, count[0], count[1], count[2], dist[0],
         dist[1], dist[2], x);
    char what[160];
    snprintf(what, sizeof what, "%s: %d draws match the reported distribution (chi2 %.2f < 13.816, alpha 1e-3)",
             strategy, N, x);
    ok(x < 13.816, what);
    double bent[3] = {dist[0] * 1.1, dist[1], dist[2]};
    double y = chi_square(count, bent, 3, N);
    snprintf(what, sizeof what, "%s: against a distribution bent by 10%% the same test fails (chi2 %.1f)", strategy, y);
    ok(y > 13.816, what);
}

/* A two-member mixture's step probability is the documented formula:
 * p(c) = sum_m w_m ev_m(c), own proposals as token paths, not renormalised. */
static void test_mixture_formula(void) {
    static fixture f;
    setup(&f, "mixture");
    decide_in in = known_input(&f, 0);
    decide_memo_reset(&f.memo);
    decision d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == 0, "mixture with own paths chooses 'a'");
    is_near(f.dist[0], 0.5 * 0.45 + 0.5 * 0.4, 1e-12, "p(a) = .5 * own path .45 (member 0) + .5 * Q .4 (member 1)");
    is_near(f.dist[1], 0.5 * 0.3 + 0.5 * 0.35, 1e-12, "p(b) = .5 * Q .3 + .5 * own path .35");
    is_near(f.dist[2], 0.01, 1e-12, "p(END) = sum w exp(end_logq)");
    is_near(sstrat_rest(3, f.dist), 1 - 0.425 - 0.325 - 0.01, 1e-12, "REST keeps the unlisted mass");
    is_near(f.b.own[0], 0.45, 1e-12, "member 0's own view: its path probability");
    setup(&f, "mixture");
}

int main(void) {
    static fixture f;

    test_mixture_formula();
    test_sampling_matches("mixture");
    test_sampling_matches("product");
    test_sampling_matches("pool");
    test_sampling_matches("selective");

    /* mixture, greedy, without the bound: both members miss a mass */
    setup(&f, "mixture");
    lq_set(&f, 0, 0, 0.6);
    lq_set(&f, 1, 1, 0.5);
    decide_in in = input(&f, 0, 1);
    decide_memo_reset(&f.memo);
    decision d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_MASSES && d.need[0] && d.need[1] && !d.only, "mixture: asks both members for their missing masses");
    lq_set(&f, 0, 1, 0.3);
    lq_set(&f, 1, 0, 0.4);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == 0 && !d.skipped, "then chooses 'a' (0.5 against 0.4)");
    is_near(f.dist[0], 0.5, 1e-9, "the mixture's probability of 'a' (not renormalised)");
    is_int(f.b.own_choice[1], 1, "member 1's own choice is its proposal 'b'");

    /* a need is answered once: what is still unknown afterwards counts as 0 */
    setup(&f, "mixture");
    lq_set(&f, 0, 0, 0.6);
    lq_set(&f, 1, 1, 0.5);
    in = input(&f, 0, 1);
    decide_memo_reset(&f.memo);
    ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == 0, "no answer to the masses: it still chooses, never asks twice");

    /* the greedy bound: the missing mass cannot change the winner */
    setup(&f, "mixture");
    lq_set(&f, 0, 0, 0.9);
    lq_set(&f, 1, 0, 0.85);
    lq_set(&f, 1, 1, 0.1);
    in = input(&f, 0, 0);
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == 0 && d.skipped, "greedy bound: 'a' without asking member 0 about 'b'");
    in.no_round_skip = 1;
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_MASSES && d.need[0], "no_round_skip: the same step asks instead");
    in.no_round_skip = 0;
    in.sp.temperature = 1;
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_MASSES, "sampling never skips (every mass shapes the distribution)");

    /* sampling draws only when it chooses: a decision that asks for masses
     * leaves the rng as it was (speculative steps abandon such a decision
     * at a drafted state and redo it at the real one, ensemble_spec.c) */
    for (int s = 0; s < 2; s++) {
        setup(&f, s ? "solo:x" : "mixture");
        lq_set(&f, 0, 0, 0.6);
        lq_set(&f, 1, 1, 0.5);
        if (s) f.w[1] = f.active[1] = f.fresh[1] = 0; /* (as the loop sets a solo request) */
        in = input(&f, 1, 0);
        in.sp.top_p = 0.9;
        decide_memo_reset(&f.memo);
        rng_state at_start = f.rng;
        d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
        ok(d.kind == DECIDE_MASSES && !memcmp(&at_start, &f.rng, sizeof at_start),
           s ? "solo, temperature 1: asking for masses draws nothing"
             : "mixture, temperature 1: asking for masses draws nothing");
        lq_set(&f, 0, 1, 0.3);
        lq_set(&f, 1, 0, 0.4);
        d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
        ok(d.kind == DECIDE_CHOICE && memcmp(&at_start, &f.rng, sizeof at_start),
           "... and the choice then draws");
    }

    /* selective: an unsure lead makes the lagging members catch up */
    setup(&f, "selective");
    lq_set(&f, 0, 0, 0.3);
    f.end_lq[0] = log(0.3);
    f.fresh[1] = 0;
    in = input(&f, 0, 1);
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CATCH_UP && !d.need[0] && d.need[1], "selective, lead unsure: member 1 catches up");
    f.fresh[1] = 1;
    lq_set(&f, 1, 1, 0.5);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_MASSES, "after the catch-up: the full combination asks its masses");
    setup(&f, "selective");
    lq_set(&f, 0, 0, 0.95);
    f.fresh[1] = 0;
    in = input(&f, 0, 1);
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == 0, "selective, lead sure: its choice, nobody else asked");

    /* min_ppl_cross: proposals are drawn once per step */
    setup(&f, "min_ppl_cross");
    lq_set(&f, 0, 0, 0.6);
    lq_set(&f, 1, 1, 0.5);
    in = input(&f, 1, 0);
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_MASSES && d.only && f.memo.have_props, "min_ppl_cross: asks the cross masses of the proposals");
    rng_state before = f.rng;
    int p0 = f.memo.prop[0], p1 = f.memo.prop[1];
    lq_set(&f, 0, 1, 0.3);
    lq_set(&f, 1, 0, 0.4);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && (d.choice == p0 || d.choice == p1), "then one of the proposals wins");
    ok(!memcmp(&before, &f.rng, sizeof before) && f.memo.prop[0] == p0 && f.memo.prop[1] == p1,
       "the second call draws nothing (seeded texts stay the same)");
    f.active[1] = 0;
    in = input(&f, 1, 0);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && (p0 < 0 || d.choice == p0), "a dropped member's proposal no longer counts");

    /* no member left */
    setup(&f, "mixture");
    f.active[0] = f.active[1] = 0;
    in = input(&f, 0, 0);
    decide_memo_reset(&f.memo);
    d = ensemble_decide(&in, &f.b, &f.memo, &f.rng);
    ok(d.kind == DECIDE_CHOICE && d.choice == -1, "no member alive: no choice");

    /* the invariant check */
    setup(&f, "mixture");
    lq_set(&f, 0, 0, 0.6);
    lq_set(&f, 0, 1, 0.3);
    in = input(&f, 0, 0);
    ok(ensemble_events_sane(&in), "disjoint events 0.6 + 0.3 + END 0.01: sane");
    lq_set(&f, 0, 1, 0.45);
    ok(!ensemble_events_sane(&in), "0.6 + 0.45 + 0.01 > 1: the check fails");
    vcand_clear(&f.cand);
    vcand_add(&f.cand, "a", 1, 0);
    vcand_add(&f.cand, "ab", 2, 0);
    vcand_link(&f.cand);
    lq_set(&f, 0, 0, 0.6);
    lq_set(&f, 0, 1, 0.5);
    ok(ensemble_events_sane(&in), "a prefix and its extension are one event: sane");

    vcand_free(&f.cand);
    decide_memo_free(&f.memo);
    return tap_done();
}
