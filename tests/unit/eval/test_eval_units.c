/* Units, strategies and statistics of held-out evaluation, on synthetic
 * token scores with hand-computed expectations (no network, no model). */
#include "coordinator/eval/eval_stats.h"
#include "coordinator/eval/eval_strategies.h"
#include "coordinator/eval/eval_units.h"
#include "tests/tap.h"

#include <stdlib.h>

#define T(s, e, lp) {(s), (e), (lp), NAN, NAN}
#define TE(s, e, lp, ent) {(s), (e), (lp), (ent), NAN}

static void test_words(void) {
    is_int(ev_count_words("", 0), 0, "no words in empty text");
    is_int(ev_count_words("  a b\n\tcd  ", 11), 3, "three whitespace-separated words");
    is_int(ev_count_words("abc", 3), 1, "one word");
    is_int(ev_unit_kind_parse("word"), EV_UNIT_WORD, "parse word");
    is_int(ev_unit_kind_parse("bogus"), -1, "reject unknown unit");
}

static void test_word_units(void) {
    const char *doc = "ab cd";
    ev_token a[] = {T(0, 2, -1.0), T(2, 5, -2.0)};
    ev_token b[] = {TE(0, 1, -0.5, 3.0), TE(1, 2, -0.7, 2.0), TE(2, 4, -1.0, 0.5), TE(4, 5, -0.3, 1.0)};
    a[0].entropy = 1.0;
    a[1].entropy = 1.5;
    ev_member_doc m[] = {{a, 2}, {b, 4}};
    ev_units u;
    char err[256];
    ok(ev_units_build(doc, 5, m, 2, EV_UNIT_WORD, &u, err, sizeof err) == 0, "build word units");
    is_int(u.n_units, 2, "two word units");
    is_int(u.bounds[0], 0, "bound 0");
    is_int(u.bounds[1], 2, "bound before the space");
    is_int(u.bounds[2], 5, "bound at the end");
    is_near(u.lp[0], -1.0, 1e-12, "A unit 0");
    is_near(u.lp[1], -2.0, 1e-12, "A unit 1");
    is_near(u.lp[2], -1.2, 1e-12, "B unit 0 = sum of its two tokens");
    is_near(u.lp[3], -1.3, 1e-12, "B unit 1");
    is_near(u.entropy0[2], 3.0, 0, "B's entropy at its first token of unit 0");
    is_near(u.entropy0[3], 0.5, 0, "B's entropy at its first token of unit 1");

    double w[] = {0.5, 0.5};
    const char *names[] = {"a", "b"};
    ev_strategy s;
    ok(ev_strategy_parse("mixture_units", names, 2, &s, err, sizeof err) == 0, "parse mixture_units");
    double want = log(0.5 * exp(-1.0) + 0.5 * exp(-1.2)) + log(0.5 * exp(-2.0) + 0.5 * exp(-1.3));
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, NULL), want, 1e-12, "mixture_units by hand");
    ok(ev_strategy_parse("product_bound", names, 2, &s, err, sizeof err) == 0, "parse product_bound");
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, NULL), 0.5 * (-3.0) + 0.5 * (-2.5), 1e-12,
            "product_bound (unnormalised) by hand");
    ok(ev_strategy_parse("solo:b", names, 2, &s, err, sizeof err) == 0, "parse solo:b");
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, NULL), -2.5, 1e-12, "solo:b = sum of B's tokens");
    size_t routed[2] = {0, 0};
    ok(ev_strategy_parse("route_entropy", names, 2, &s, err, sizeof err) == 0, "parse route_entropy");
    /* unit 0: entropies A 1.0, B 3.0 -> A (-1.0); unit 1: A 1.5, B 0.5 -> B (-1.3) */
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, routed), -2.3, 1e-12, "route_entropy routes on entropy");
    ok(routed[0] == 1 && routed[1] == 1, "route_entropy routed one unit to each");
    ok(ev_strategy_parse("route_prev", names, 2, &s, err, sizeof err) == 0, "parse route_prev");
    /* unit 0 by entropy: A (-1.0); unit 1: previous losses A 1.0, B 1.2 -> A (-2.0) */
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, NULL), -3.0, 1e-12, "route_prev routes on the previous unit");
    ok(ev_strategy_parse("oracle", names, 2, &s, err, sizeof err) == 0, "parse oracle");
    is_near(ev_strategy_doc_logprob(&s, &u, w, doc, NULL), -1.0 + -1.3, 1e-12, "oracle takes the best per unit");
    double w10[] = {1, 0};
    ok(ev_strategy_parse("mixture_units", names, 2, &s, err, sizeof err) == 0, "parse mixture_units again");
    is_near(ev_strategy_doc_logprob(&s, &u, w10, doc, NULL), -3.0, 1e-15, "mixture_units (1,0) = solo:a exactly");
    ok(ev_strategy_parse("solo:zz", names, 2, &s, err, sizeof err) != 0, "unknown member rejected");
    ok(ev_strategy_parse("avg", names, 2, &s, err, sizeof err) != 0, "unknown strategy rejected");
    ev_units_free(&u);

    ev_strategy *list;
    size_t n;
    ok(ev_strategy_parse_list("solo:a,solo:b,mixture,mixture", names, 2, &list, &n, err, sizeof err) == 0,
       "parse a list");
    is_int(n, 3, "duplicates dropped");
    free(list);
}

static void test_token_units(void) {
    const char *doc = "ab.cd";
    ev_token a[] = {T(0, 2, -1), T(2, 3, -1), T(3, 5, -1)};
    ev_token b[] = {T(0, 1, -2), T(1, 3, -2), T(3, 5, -2)};
    ev_member_doc m[] = {{a, 3}, {b, 3}};
    ev_units u;
    char err[256];
    ok(ev_units_build(doc, 5, m, 2, EV_UNIT_WORD, &u, err, sizeof err) == 0, "word units without spaces");
    is_int(u.n_units, 1, "no space: one unit");
    is_near(u.lp[0], -3, 1e-12, "A's whole document");
    is_near(u.lp[1], -6, 1e-12, "B's whole document");
    ev_units_free(&u);
    ok(ev_units_build(doc, 5, m, 2, EV_UNIT_TOKEN, &u, err, sizeof err) == 0, "token units");
    is_int(u.n_units, 2, "one common interior token boundary");
    is_int(u.bounds[1], 3, "at 3");
    is_near(u.lp[0], -2, 1e-12, "A unit 0");
    is_near(u.lp[3], -2, 1e-12, "B unit 1");
    ev_units_free(&u);
    ok(ev_units_build(doc, 5, m, 1, EV_UNIT_BYTE, &u, err, sizeof err) == 0, "byte units, one member");
    is_int(u.n_units, 3, "one member: its tokens");
    ev_units_free(&u);
}

static void test_edges(void) {
    char err[256];
    ev_units u;
    /* SentencePiece at a document that starts with a space: a zero-length
     * first token (its space stripped) is counted in the first unit */
    const char *doc = " hi yo";
    ev_token a[] = {TE(0, 0, -0.1, 7.0), T(0, 3, -2), T(3, 6, -1)};
    ev_token b[] = {T(0, 2, -1), T(2, 3, -0.5), T(3, 4, -0.25), T(4, 6, -0.25)};
    ev_member_doc m[] = {{a, 3}, {b, 4}};
    ok(ev_units_build(doc, 6, m, 2, EV_UNIT_WORD, &u, err, sizeof err) == 0, "zero-length token accepted");
    is_int(u.n_units, 2, "two units");
    is_near(u.lp[0], -2.1, 1e-12, "zero-length token counted in the first unit");
    is_near(u.lp[0] + u.lp[1], -3.1, 1e-12, "A's unit log-probs sum to its token log-probs");
    is_near(u.entropy0[0], 7.0, 0, "first token of unit 0 is the zero-length one");
    ev_units_free(&u);

    ev_token gap[] = {T(0, 2, -1), T(3, 6, -1)};
    ev_member_doc g[] = {{gap, 2}};
    ok(ev_units_build(doc, 6, g, 1, EV_UNIT_WORD, &u, err, sizeof err) != 0, "a gap in the spans is an error");
    diag("%s", err);
    ev_token shortc[] = {T(0, 2, -1), T(2, 5, -1)};
    ev_member_doc s[] = {{shortc, 2}};
    ok(ev_units_build(doc, 6, s, 1, EV_UNIT_WORD, &u, err, sizeof err) != 0, "uncovered bytes are an error");
    ok(ev_units_build("", 0, s, 0, EV_UNIT_WORD, &u, err, sizeof err) != 0, "no members is an error");
    ev_member_doc e[] = {{NULL, 0}};
    ok(ev_units_build("", 0, e, 1, EV_UNIT_WORD, &u, err, sizeof err) == 0, "empty document");
    is_int(u.n_units, 0, "empty document has no units");
    ev_units_free(&u);

    /* multi-byte UTF-8 in byte-fallback tokens: the boundary inside the
     * character is not common, so the character stays in one unit */
    const char *utf = "\xc3\xa9 x";
    ev_token c1[] = {T(0, 1, -3), T(1, 2, -3), T(2, 4, -1)};
    ev_token c2[] = {T(0, 2, -2), T(2, 4, -1)};
    ev_member_doc cm[] = {{c1, 3}, {c2, 2}};
    ok(ev_units_build(utf, 4, cm, 2, EV_UNIT_TOKEN, &u, err, sizeof err) == 0, "byte-fallback tokens");
    is_int(u.n_units, 2, "the split character is one unit");
    is_near(u.lp[0], -6, 1e-12, "both byte tokens in it");
    ev_units_free(&u);
}

static void test_weights(void) {
    double w[3];
    char err[256];
    ok(ev_weights_parse("1,3", w, 2, err, sizeof err) == 0, "parse weights");
    is_near(w[0], 0.25, 1e-15, "normalised 0");
    is_near(w[1], 0.75, 1e-15, "normalised 1");
    ok(ev_weights_parse("1,0", w, 2, err, sizeof err) == 0, "(1,0) accepted");
    ok(ev_weights_parse("1", w, 2, err, sizeof err) != 0, "too few weights");
    ok(ev_weights_parse("1,2,3", w, 2, err, sizeof err) != 0, "too many weights");
    ok(ev_weights_parse("0,0", w, 2, err, sizeof err) != 0, "all zero rejected");
    ok(ev_weights_parse("-1,2", w, 2, err, sizeof err) != 0, "negative rejected");

    /* EM: two units of (0.4, 0.1), one of (0.1, 0.4): the optimum is
     * 2*0.3/(0.1+0.3w) = 0.3/(0.4-0.3w), i.e. w = 7/9 */
    ev_units docs[2];
    size_t b1[] = {0, 1, 2}, b2[] = {0, 1};
    double lp1[] = {log(0.4), log(0.4), log(0.1), log(0.1)};
    double lp2[] = {log(0.1), log(0.4)};
    docs[0] = (ev_units){2, 2, b1, lp1, NULL, NULL};
    docs[1] = (ev_units){1, 2, b2, lp2, NULL, NULL};
    double tw[2] = {0.5, 0.5};
    int it = ev_weights_tune(docs, 2, tw, 2, 1000, 1e-14);
    ok(it > 0, "EM ran");
    is_near(tw[0], 7.0 / 9.0, 1e-5, "EM finds the optimal weight");
    is_near(tw[0] + tw[1], 1.0, 1e-12, "weights sum to 1");
}

static void test_stats(void) {
    ev_metrics m;
    ev_metrics_compute(10 * M_LN2, 10, 2, 5, &m);
    is_near(m.bits_per_byte, 1.0, 1e-12, "1 bit per byte");
    is_near(m.byte_perplexity, 2.0, 1e-12, "byte perplexity 2");
    is_near(m.word_perplexity, 32.0, 1e-9, "word perplexity = exp(NLL/words)");
    is_near(m.token_perplexity, 4.0, 1e-12, "token perplexity = exp(NLL/tokens)");
    ev_metrics_compute(1, 10, 2, 0, &m);
    ok(isnan(m.token_perplexity), "no tokens: token perplexity NaN");

    double v[] = {5, 1, 4, 2, 3};
    is_near(ev_percentile(v, 5, 50), 3, 1e-12, "median");
    is_near(ev_percentile(v, 5, 2.5), 1.1, 1e-12, "2.5th percentile interpolates");
    is_near(ev_percentile(v, 5, 100), 5, 1e-12, "max");

    /* 3 strategies x 4 documents; strategy 2 is strategy 0 again */
    double bytes[] = {10, 20, 30, 40};
    double nll[12];
    for (int d = 0; d < 4; d++) {
        nll[0 * 4 + d] = bytes[d] * M_LN2 * (1.0 + 0.1 * d);
        nll[1 * 4 + d] = bytes[d] * M_LN2 * 2.0; /* exactly 2 bits per byte everywhere */
        nll[2 * 4 + d] = nll[0 * 4 + d];
    }
    double ci[3][2], dci[3][2], ci2[3][2], dci2[3][2];
    ok(ev_bootstrap(nll, bytes, 3, 4, 0, 1000, 42, ci, dci) == 0, "bootstrap runs");
    ok(ci[0][0] <= 1.2 && ci[0][1] >= 1.2 && ci[0][0] < ci[0][1], "CI contains the point and has width");
    ok(ci[0][0] >= 1.0 && ci[0][1] <= 1.3, "CI within the per-document range");
    is_near(ci[1][0], 2.0, 1e-12, "constant strategy: degenerate interval (lo)");
    is_near(ci[1][1], 2.0, 1e-12, "constant strategy: degenerate interval (hi)");
    ok(dci[2][0] == 0 && dci[2][1] == 0, "identical strategy: difference interval [0, 0]");
    ok(dci[1][0] > 0, "a strategy that is always worse: difference interval above 0");
    ev_bootstrap(nll, bytes, 3, 4, 0, 1000, 42, ci2, dci2);
    ok(!memcmp(ci, ci2, sizeof ci) && !memcmp(dci, dci2, sizeof dci), "same seed, same intervals");
    ok(ev_bootstrap(nll, bytes, 3, 1, 0, 100, 1, ci, dci) == 0, "one document");
    is_near(ci[0][0], 1.0, 1e-12, "one document: interval is the point");
    /* an empty document among others: resamples of only it are drawn again */
    double eb[] = {0, 8};
    double en[] = {0, 8 * M_LN2, 0, 16 * M_LN2};
    ok(ev_bootstrap(en, eb, 2, 2, 0, 500, 3, ci, dci) == 0, "bootstrap with an empty document");
    ok(ci[0][0] == 1.0 && ci[0][1] == 1.0 && ci[1][0] == 2.0 && ci[1][1] == 2.0, "finite intervals");
    double nv[] = {NAN, 2, 1, NAN};
    is_near(ev_percentile(nv, 4, 100), 2, 0, "percentile leaves NaN out");
}

int main(void) {
    test_words();
    test_word_units();
    test_token_units();
    test_edges();
    test_weights();
    test_stats();
    return tap_done();
}
