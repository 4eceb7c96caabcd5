/* tests/unit/engine/test_score.c: ensemble_score_text, the scoring path that
 * walks a given text through generation's own steps (coordinator/engine/
 * ensemble_score.c), against in-process mock members with two different
 * vocabularies (tests/support/mock_member.c).
 *
 * The central check (issue 10, "ppl scores what generation samples"): for
 * each generation strategy, N seeded one-step generations from a fixed
 * context give event frequencies that match the probabilities the scoring
 * path assigns to those events (Pearson's chi-square at alpha = 1e-3 over
 * the events seen, conditional on not ending: END is not a text); and the
 * same test rejects the scores of a rule broken on purpose (the scoring
 * path run under another strategy's rule, and the right scores bent).
 * Also: mixture with weights (1, 0) scores exactly as solo of member 0; the
 * steps tile the text and their log-probabilities sum to the total; the
 * rules without a distribution are refused; a failing member fails the
 * scoring instead of being renormalised away. */
#include "coordinator/engine/ensemble.h"
#include "coordinator/engine/members.h"
#include "tests/support/mock_member.h"
#include "tests/tap.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRIPT "Hello world, hello world. "
#define CONTEXT "Once upon a time"
#define N_SAMPLES 1500
#define MAX_CAT 64

static const char *vocab_a[] = {"H", "e", "l", "o", " ", "w", "r", "d", ",", ".", "h",
                                "Hello", " w", "ld", "ll", "x", "yz", "Hel", NULL};
static const char *vocab_b[] = {"H", "e", "l", "o", " ", "w", "r", "d", ",", ".", "h",
                                "He", "llo", " wo", "rld", ", h", "q", "Hell", NULL};

static mock_member A, B, F;

static void init_mock(mock_member *m, const char *name, const char **vocab, double bonus) {
    memset(m, 0, sizeof *m);
    m->name = name;
    mock_set_vocab(m, vocab);
    m->script = SCRIPT;
    m->bonus = bonus;
    m->eos_w = 0.2;
    m->score_nll = 5;
}

static member_set *open_set(mock_member *m1, mock_member *m2) {
    char err[256], url[64];
    member_set *ms = members_new();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", m1->port);
    members_add(ms, m1->name, url, err, sizeof err);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", m2->port);
    members_add(ms, m2->name, url, err, sizeof err);
    if (members_connect(ms, NULL, err, sizeof err)) {
        diag("connect: %s", err);
        members_free(ms);
        return NULL;
    }
    return ms;
}

static ensemble *new_ensemble(member_set *ms, double threshold) {
    char err[256];
    ensemble_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.step_timeout = 5;
    cfg.threshold = threshold;
    ensemble *e = ensemble_new(ms, &cfg, err, sizeof err);
    if (!e) diag("ensemble_new: %s", err);
    return e;
}

/* ---- the scoring path's view of one text ------------------------------------ */

typedef struct {
    int n, rests;
    size_t next;      /* the steps tile the text: each starts where the last ended */
    int tiled;
    double sum;
} steps_seen;

static int on_step(void *ud, const ensemble_score_step *s) {
    steps_seen *k = ud;
    if (s->from != k->next || s->len == 0) k->tiled = 0;
    k->next = s->from + s->len;
    k->n++;
    k->rests += s->rest;
    k->sum += s->logprob;
    return 0;
}

static double score(ensemble *e, const char *strategy, const double *w, size_t nw, const char *text,
                    size_t len, steps_seen *k, ensemble_score_result *res) {
    memset(k, 0, sizeof *k);
    k->tiled = 1;
    ensemble_score_request q = {strategy, w, nw, CONTEXT, text, len, on_step, k};
    if (ensemble_score_text(e, &q, res)) {
        diag("score %s \"%.*s\": %d %s", strategy, (int)len, text, res->status, res->error);
        return NAN;
    }
    return res->logprob;
}

/* ---- sampling against scoring -------------------------------------------------- */

typedef struct {
    char s[64][16];
    long count[MAX_CAT];
    double p[MAX_CAT];
    int k;
    long n;          /* samples that produced text (END excluded) */
} categories;

static void count_text(categories *c, const char *t, size_t n) {
    if (!n) return;
    c->n++;
    for (int i = 0; i < c->k; i++)
        if (strlen(c->s[i]) == n && !memcmp(c->s[i], t, n)) {
            c->count[i]++;
            return;
        }
    if (c->k == MAX_CAT || n >= sizeof c->s[0]) return;
    memcpy(c->s[c->k], t, n);
    c->s[c->k][n] = 0;
    c->count[c->k++] = 1;
}

static int ignore_chunk(void *ud, const ensemble_chunk *ch) {
    (void)ud;
    (void)ch;
    return 0;
}

/* N seeded one-step generations at temperature 1: what the first step commits. */
static void sample(ensemble *e, const char *strategy, categories *c) {
    memset(c, 0, sizeof *c);
    for (long t = 0; t < N_SAMPLES; t++) {
        ensemble_request q;
        memset(&q, 0, sizeof q);
        q.prompt = CONTEXT;
        q.max_tokens = 1;
        q.temperature = 1;
        q.top_p = 1;
        q.has_seed = 1;
        q.seed = 1000 + (uint64_t)t;
        q.strategy = strategy;
        ensemble_result res;
        if (ensemble_generate(e, &q, ignore_chunk, NULL, &res) == 0) count_text(c, res.text, res.len);
        ensemble_result_free(&res);
    }
}

/* The scoring path's probability of each category under `rule` (a
 * one-step text: its event; 0 when it takes REST, which sampling never
 * draws). Returns 0, -1 when a text could not be scored. */
static int score_categories(ensemble *e, const char *rule, categories *c) {
    for (int i = 0; i < c->k; i++) {
        steps_seen k;
        ensemble_score_result res;
        double lp = score(e, rule, NULL, 0, c->s[i], strlen(c->s[i]), &k, &res);
        if (isnan(lp)) return -1;
        c->p[i] = k.n == 1 && !k.rests ? exp(lp) : 0;
        if (getenv("TEST_SCORE_VERBOSE"))
            diag("  scored \"%s\" under %s: %d steps, %d rest, %d rescaled, lp %.4f", c->s[i], rule, k.n, k.rests,
                 res.rescaled, lp);
    }
    return 0;
}

/* Pearson's chi-square of the counts against p (renormalised over the
 * categories), cells with expectation < 5 pooled; *df its degrees of freedom. */
static double chi_square(const categories *c, const double *p, int *df) {
    double s = 0, x = 0, pool_o = 0, pool_e = 0;
    int cells = 0;
    for (int i = 0; i < c->k; i++) s += p[i];
    for (int i = 0; i < c->k; i++) {
        double e = s > 0 ? (double)c->n * p[i] / s : 0;
        if (e < 5) {
            pool_o += (double)c->count[i];
            pool_e += e;
            continue;
        }
        x += ((double)c->count[i] - e) * ((double)c->count[i] - e) / e;
        cells++;
    }
    if (pool_o > 0 || pool_e > 0) {
        x += pool_e > 0 ? (pool_o - pool_e) * (pool_o - pool_e) / pool_e : INFINITY;
        cells++;
    }
    *df = cells > 1 ? cells - 1 : 1;
    return x;
}

/* The chi-square quantile at 1 - 1e-3 (Wilson-Hilferty). */
static double critical_1e3(int df) {
    double z = 3.090232, a = 2.0 / (9.0 * df), t = 1 - a + z * sqrt(a);
    return df * t * t * t;
}

static void test_sampling_matches_scoring(ensemble *e, const char *strategy, const char *broken) {
    categories c;
    sample(e, strategy, &c);
    char what[200];
    snprintf(what, sizeof what, "%s: %d seeded one-step generations, %d distinct events", strategy, N_SAMPLES, c.k);
    if (!ok(c.k >= 3 && c.n > N_SAMPLES / 2, what)) return;
    if (!ok(score_categories(e, strategy, &c) == 0, "every sampled event is scored")) return;
    int all_events = 1;
    for (int i = 0; i < c.k; i++) all_events &= c.p[i] > 0;
    snprintf(what, sizeof what, "%s: every sampled text is one listed event of the scoring path", strategy);
    ok(all_events, what);
    int df;
    double x = chi_square(&c, c.p, &df), crit = critical_1e3(df);
    diag("%s: %ld texts in %d events; chi2 %.2f, df %d, critical %.2f", strategy, c.n, c.k, x, df, crit);
    if (getenv("TEST_SCORE_VERBOSE"))
        for (int i = 0; i < c.k; i++) diag("  \"%s\" %ld %.5f", c.s[i], c.count[i], c.p[i]);
    snprintf(what, sizeof what, "%s: frequencies match the scored probabilities (chi2 %.1f < %.1f, alpha 1e-3)",
             strategy, x, crit);
    ok(x < crit, what);
    /* broken on purpose: the right scores bent (squared), and another rule's */
    double bent[MAX_CAT];
    for (int i = 0; i < c.k; i++) bent[i] = c.p[i] * c.p[i];
    double y = chi_square(&c, bent, &df);
    snprintf(what, sizeof what, "%s: the scores squared fail the same test (chi2 %.1f > %.1f)", strategy, y,
             critical_1e3(df));
    ok(y > critical_1e3(df), what);
    if (!broken) return;
    double right[MAX_CAT];
    memcpy(right, c.p, sizeof right);
    if (score_categories(e, broken, &c)) return;
    double z = chi_square(&c, c.p, &df);
    snprintf(what, sizeof what, "%s: scored with %s's rule instead, the test fails (chi2 %.1f > %.1f)", strategy,
             broken, z, critical_1e3(df));
    ok(z > critical_1e3(df), what);
    memcpy(c.p, right, sizeof right);
}

/* ---- exactness and errors -------------------------------------------------------- */

static void test_weights_one_zero_is_solo(ensemble *e) {
    const char *text = "Hello world, hello wo";
    size_t len = strlen(text);
    steps_seen k1, k2;
    ensemble_score_result r1, r2;
    double solo = score(e, "solo:a", NULL, 0, text, len, &k1, &r1);
    double w10[] = {1, 0};
    double mix = score(e, "mixture", w10, 2, text, len, &k2, &r2);
    ok(isfinite(solo) && solo < 0, "solo:a scores the text");
    is_near(mix, solo, 0, "mixture with weights (1, 0) = solo:a exactly");
    is_near(score(e, "pool", w10, 2, text, len, &k2, &r2), solo, 1e-12, "pool with weights (1, 0) = solo:a");
    ok(k1.tiled && k1.next == len && r1.bytes == len, "the steps tile the text");
    is_near(k1.sum, solo, 1e-9, "the steps' log-probabilities sum to the total");
    is_int(r1.steps, k1.n, "steps counted");
    diag("solo:a: %d steps, %d of them REST + tail, %.3f nats", r1.steps, r1.rest_steps, solo);
    double both = score(e, "mixture", NULL, 0, text, len, &k2, &r2);
    ok(isfinite(both) && fabs(both - solo) > 1e-6, "an equal mixture scores the same text differently");
    steps_seen k0;
    ensemble_score_result r0;
    is_near(score(e, "mixture", NULL, 0, "", 0, &k0, &r0), 0, 0, "an empty text: log-probability 0");
    is_int(r0.steps, 0, "no steps");
}

static void test_refusals(ensemble *e, ensemble *ef) {
    ensemble_score_result res;
    ensemble_score_request q = {"min_ppl", NULL, 0, CONTEXT, "Hello", 5, NULL, NULL};
    ok(ensemble_score_text(e, &q, &res) != 0 && res.status == 400 && strstr(res.error, "no distribution"),
       "min_ppl is refused: it has no distribution to score");
    q.strategy = "route_entropy";
    ok(ensemble_score_text(e, &q, &res) != 0 && res.status == 400, "an evaluation-only name is refused");
    q.strategy = "solo:zz";
    ok(ensemble_score_text(e, &q, &res) != 0 && res.status == 400, "an unknown member is refused");
    q.strategy = "mixture";
    const char *text = "Hello world, hello world. Hello world, hello world. Hello world.";
    q.text = text;
    q.len = strlen(text);
    ok(ensemble_score_text(ef, &q, &res) != 0 && res.status >= 500 && strstr(res.error, "f"),
       "a member that fails mid-text fails the scoring (not renormalised away)");
    diag("failure: %d %s", res.status, res.error);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    init_mock(&A, "a", vocab_a, 1.0);
    init_mock(&B, "b", vocab_b, 3.0);
    init_mock(&F, "f", vocab_b, 3.0);
    F.fail_after = 4;
    if (!ok(!mock_start(&A) && !mock_start(&B) && !mock_start(&F), "mock members listening")) return tap_done();
    member_set *ms = open_set(&A, &B), *mf = open_set(&A, &F);
    ensemble *e = ms ? new_ensemble(ms, 0) : NULL, *lead = ms ? new_ensemble(ms, 0.05) : NULL;
    ensemble *ef = mf ? new_ensemble(mf, 0) : NULL;
    if (!ok(e && lead && ef, "ensembles over two vocabularies")) return tap_done();

    test_weights_one_zero_is_solo(e);
    test_refusals(e, ef);
    test_sampling_matches_scoring(e, "mixture", "product");
    test_sampling_matches_scoring(e, "product", "mixture");
    test_sampling_matches_scoring(e, "pool", "mixture");
    test_sampling_matches_scoring(e, "solo:b", "solo:a");
    test_sampling_matches_scoring(e, "selective", NULL);         /* the lead unsure: mixture over everyone */
    test_sampling_matches_scoring(lead, "selective", "mixture"); /* the lead sure: it alone */

    ensemble_free(e);
    ensemble_free(lead);
    ensemble_free(ef);
    members_free(ms);
    members_free(mf);
    mock_stop(&A);
    mock_stop(&B);
    mock_stop(&F);
    curl_global_cleanup();
    return tap_done();
}
