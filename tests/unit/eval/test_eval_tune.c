/* tests/unit/eval/test_eval_tune.c: tuning the step-level rules offline
 * (coordinator/eval/eval_tune.h). The recorded steps' log-likelihood is
 * exactly the generation rule's (sampler/strategy.h: sstrat_mixture,
 * sstrat_pool) for the committed event, REST steps are the mixture's REST
 * part, EM finds the best mixture weights (checked against a grid), and the
 * exponent search moves towards the member whose shape the data follow. */
#include "coordinator/eval/eval_tune.h"
#include "common/rng.h"
#include "sampler/strategy.h"
#include "tests/tap.h"

#include <math.h>
#include <string.h>

#define NE 4 /* three candidates and END */

/* One step's events for two members, from a seeded stream. */
static void random_step(rng_state *r, double *ev) {
    for (size_t m = 0; m < 2; m++) {
        double left = 0.9;
        for (size_t e = 0; e < NE; e++) {
            double x = left * (0.1 + 0.6 * rng_uniform(r));
            ev[m * NE + e] = e == 2 && m == 1 ? 0 : x; /* member b never gives event 2 mass */
            left -= ev[m * NE + e];
        }
    }
}

static double rule_logprob(const double *ev, int event, const double *w, const double *alpha, int pool) {
    double out[NE];
    if (pool) sstrat_pool(2, NE, ev, w, alpha, out);
    else sstrat_mixture(2, NE, ev, w, out);
    return log(out[event]);
}

static void test_formulas_match_the_rules(void) {
    rng_state r;
    rng_seed(&r, 7);
    ev_tune_set t;
    ev_tune_init(&t, 2);
    const double w[2] = {0.3, 0.7}, alpha[2] = {0.8, 0.4};
    double want_mix = 0, want_pool = 0;
    for (int i = 0; i < 200; i++) {
        double ev[2 * NE];
        random_step(&r, ev);
        int event = (int)(rng_next(&r) % NE);
        if (!(ev[event] > 0) && !(ev[NE + event] > 0)) continue;
        ev_tune_add(&t, NE, ev, event, NULL);
        want_mix += rule_logprob(ev, event, w, alpha, 0);
        want_pool += rule_logprob(ev, event, w, alpha, 1);
    }
    const double rest[2] = {0.02, 0.05};
    double ev[2 * NE] = {0};
    ev_tune_add(&t, NE, ev, -1, rest); /* a REST step: the mixture's REST part of the piece */
    want_mix += log(0.3 * 0.02 + 0.7 * 0.05);
    want_pool += log(0.3 * 0.02 + 0.7 * 0.05);
    is_near(ev_tune_mixture_loglik(&t, w), want_mix, 1e-9, "mixture: the records give sstrat_mixture's log-likelihood");
    is_near(ev_tune_pool_loglik(&t, w, alpha), want_pool, 1e-9,
            "pool: the records give sstrat_pool's log-likelihood (events outside the pooled set included)");
    is_int(ev_tune_dead_steps(&t), 0, "no step without mass");
    ev_tune_add(&t, NE, ev, -1, (double[]){0, 0});
    is_int(ev_tune_dead_steps(&t), 1, "a step nobody gave mass to is counted");
    is_near(ev_tune_mixture_loglik(&t, w), want_mix, 1e-9, "and skipped");
    ev_tune_free(&t);
}

static void test_em_finds_the_best_weights(void) {
    rng_state r;
    rng_seed(&r, 11);
    ev_tune_set t;
    ev_tune_init(&t, 2);
    for (int i = 0; i < 500; i++) {
        double ev[2 * NE];
        random_step(&r, ev);
        ev_tune_add(&t, NE, ev, (int)(rng_next(&r) % 2), NULL);
    }
    double w[2] = {0.5, 0.5};
    double ll = ev_tune_mixture(&t, w, 1000);
    double best = -INFINITY, best_w = 0;
    for (int g = 1; g < 1000; g++) {
        double x[2] = {g / 1000.0, 1 - g / 1000.0}, v = ev_tune_mixture_loglik(&t, x);
        if (v > best) best = v, best_w = x[0];
    }
    ok(ll >= best - 1e-6, "EM's log-likelihood is at least the grid's best");
    is_near(w[0], best_w, 2e-3, "EM's weight is the grid's");
    is_near(w[0] + w[1], 1, 1e-12, "weights sum to 1");
    ev_tune_free(&t);
}

/* Events drawn from member a's shape: the search gives a the larger exponent. */
static void test_pool_search_follows_the_data(void) {
    rng_state r;
    rng_seed(&r, 5);
    ev_tune_set t;
    ev_tune_init(&t, 2);
    for (int i = 0; i < 2000; i++) {
        double ev[2 * NE];
        for (size_t e = 0; e < NE; e++) {
            ev[e] = 0.05 + 0.2 * rng_uniform(&r);
            ev[NE + e] = 0.2;
        }
        double u = rng_uniform(&r) * (ev[0] + ev[1] + ev[2] + ev[3]), c = 0;
        int event = 0;
        for (int e = 0; e < NE; e++) {
            c += ev[e];
            if (u < c) {
                event = e;
                break;
            }
        }
        ev_tune_add(&t, NE, ev, event, NULL);
    }
    const double w[2] = {0.5, 0.5};
    double alpha[2] = {0, 0};
    double before = ev_tune_pool_loglik(&t, w, (double[]){0.5, 0.5});
    double after = ev_tune_pool(&t, w, alpha, 200);
    ok(after >= before, "the exponent search never lowers the log-likelihood");
    diag("exponents a %.3f b %.3f, log-likelihood %.2f -> %.2f", alpha[0], alpha[1], before, after);
    ok(alpha[0] > 0.8 && alpha[0] < 1.25, "member a's exponent goes to about 1 (the data follow its shape)");
    ev_tune_free(&t);
}

int main(void) {
    test_formulas_match_the_rules();
    test_em_finds_the_best_weights();
    test_pool_search_follows_the_data();
    return tap_done();
}
