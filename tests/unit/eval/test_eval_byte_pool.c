/* tests/unit/eval/test_eval_byte_pool.c: the arithmetic of byte_pool
 * (coordinator/eval/eval_byte_pool.h). A one-member pool with exponent 1 is
 * the member's own next-byte distribution; the pool of a member with
 * itself (exponents 1/2) is the member; the 257 probabilities sum to 1
 * even when the members' masses do not (the check fails if the
 * normaliser is dropped); a zero mass is floored, not fatal; the exponent
 * search moves towards the member the data follow. */
#include "coordinator/eval/eval_byte_pool.h"
#include "common/rng.h"
#include "tests/tap.h"

#include <math.h>
#include <string.h>

#define NE EV_BPOOL_EVENTS

/* A random distribution over the 257 events, scaled to sum `total`. */
static void random_member(rng_state *r, double *lq, double total) {
    double p[NE], z = 0;
    for (int e = 0; e < NE; e++) {
        p[e] = pow(rng_uniform(r), 4) + 1e-9;
        z += p[e];
    }
    for (int e = 0; e < NE; e++) lq[e] = log(total * p[e] / z);
}

static double prob_sum(const double *logp) {
    double s = 0;
    for (int e = 0; e < NE; e++) s += exp(logp[e]);
    return s;
}

static void test_one_member_is_the_member(void) {
    rng_state r;
    rng_seed(&r, 1);
    double lq[NE], logp[NE], alpha[1] = {1};
    random_member(&r, lq, 1.0);
    ok(ev_bpool_dist(lq, 1, alpha, logp) == 0, "a one-member pool");
    double worst = 0;
    for (int e = 0; e < NE; e++) worst = fmax(worst, fabs(logp[e] - lq[e]));
    ok(worst < 1e-12, "one member, exponent 1, consistent masses: the pool is the member");
    is_near(ev_bpool_logp(lq, 1, alpha, 'a'), lq['a'], 1e-12, "ev_bpool_logp agrees");
}

static void test_two_copies_are_the_member(void) {
    rng_state r;
    rng_seed(&r, 2);
    double lq[2 * NE], logp[NE], alpha[2] = {0.5, 0.5};
    random_member(&r, lq, 1.0);
    memcpy(lq + NE, lq, NE * sizeof *lq);
    ev_bpool_dist(lq, 2, alpha, logp);
    double worst = 0;
    for (int e = 0; e < NE; e++) worst = fmax(worst, fabs(logp[e] - lq[e]));
    ok(worst < 1e-12, "the pool of a member with itself, exponents 1/2: the member");
}

static void test_normalised_whatever_the_masses(void) {
    rng_state r;
    rng_seed(&r, 3);
    double lq[3 * NE], logp[NE], alpha[3] = {0.2, 0.5, 0.3};
    random_member(&r, lq, 0.4);           /* a healed state: masses sum to 0.4 */
    random_member(&r, lq + NE, 1.7);      /* and one above 1 */
    random_member(&r, lq + 2 * NE, 1.0);
    is_near(ev_bpool_mass_sum(lq), 0.4, 1e-9, "the first member's masses sum to 0.4");
    ev_bpool_dist(lq, 3, alpha, logp);
    is_near(prob_sum(logp), 1.0, 1e-12, "the pooled distribution sums to 1 (the normaliser is applied)");
    double one[1] = {1};
    ev_bpool_dist(lq, 1, one, logp);
    is_near(prob_sum(logp), 1.0, 1e-12, "one member whose masses sum to 0.4: still a distribution");
    is_near(logp[7], lq[7] - log(0.4), 1e-12, "its probabilities are the masses over their sum");
    for (int e = 0; e < NE; e++) {
        double want = ev_bpool_logp(lq, 3, alpha, e), raw = 0;
        for (int m = 0; m < 3; m++) raw += alpha[m] * lq[m * NE + e];
        if (e == 'x') ok(fabs(want - raw) > 1e-3, "the pool is not the unnormalised product");
    }
}

static void test_floor_and_members_left_out(void) {
    rng_state r;
    rng_seed(&r, 4);
    double lq[2 * NE], logp[NE], alpha[2] = {0.5, 0.5};
    random_member(&r, lq, 1.0);
    random_member(&r, lq + NE, 1.0);
    lq[NE + 'q'] = -INFINITY; /* the second member rules 'q' out */
    ev_bpool_dist(lq, 2, alpha, logp);
    ok(isfinite(logp['q']), "a byte one member gives no mass stays possible (floor)");
    double with_floor = lq[NE + 'q'];
    lq[NE + 'q'] = log(EV_BPOOL_FLOOR);
    double logp2[NE];
    ev_bpool_dist(lq, 2, alpha, logp2);
    is_near(logp['q'], logp2['q'], 1e-12, "the floor is EV_BPOOL_FLOOR");
    lq[NE + 'q'] = with_floor;
    double only_first[2] = {1, 0}, logp3[NE];
    ev_bpool_dist(lq, 2, only_first, logp3);
    is_near(logp3['q'], lq['q'], 1e-12, "exponent 0: the member takes no part");
    double none[2] = {0, 0};
    ok(ev_bpool_dist(lq, 2, none, logp3) == -1 && isnan(ev_bpool_logp(lq, 2, none, 0)), "no member: refused");
}

/* Events drawn from member a's distribution: the search raises a's exponent. */
static void test_tuning_follows_the_data(void) {
    rng_state r;
    rng_seed(&r, 5);
    ev_bpool_tune_set t;
    ev_bpool_tune_init(&t, 2);
    double lq[2 * NE];
    int bad = 0;
    for (int i = 0; i < 400; i++) {
        random_member(&r, lq, 1.0);
        random_member(&r, lq + NE, 1.0);
        double u = rng_uniform(&r), c = 0;
        int ev = NE - 1;
        for (int e = 0; e < NE; e++) {
            c += exp(lq[e]);
            if (u < c) {
                ev = e;
                break;
            }
        }
        bad += ev_bpool_tune_add(&t, lq, ev) != 0;
    }
    ok(!bad && t.n == 400, "400 bytes recorded");
    double alpha[2] = {0, 0};
    double ll0 = ev_bpool_tune_loglik(&t, (double[]){0.5, 0.5});
    double ll = ev_bpool_tune(&t, alpha, 200);
    ok(ll > ll0, "tuning raises the dev log-likelihood");
    ok(alpha[0] > 0.8 && alpha[1] < 0.2, "the member the data follow gets the weight");
    diag("tuned exponents %.3f %.3f, log-likelihood %.1f -> %.1f", alpha[0], alpha[1], ll0, ll);
    ok(ev_bpool_tune_add(&t, lq, 257) == -1, "an event out of range is refused");
    ev_bpool_tune_free(&t);
}

int main(void) {
    test_one_member_is_the_member();
    test_two_copies_are_the_member();
    test_normalised_whatever_the_masses();
    test_floor_and_members_left_out();
    test_tuning_follows_the_data();
    return tap_done();
}
