/* tests/unit/eval/test_eval_registry.c: one name, one rule between
 * generation and `consort ppl`. Walks the strategy registry: every
 * generation name is either scored by ppl under exactly the rule generation
 * runs (solo from units, checked on numbers: ppl's unit log-probability
 * equals the generation formula of sampler/strategy.h; the step-level rules
 * marked for the engine's scoring path, never computed from units, whose
 * numbers tests/unit/engine/test_score.c checks against sampling) or
 * refused with a message naming the related evaluation-only rule; every
 * name ppl accepts is implemented (byte_pool byte by byte, through the
 * members); the default list holds every name ppl
 * scores from units. */
#include "coordinator/eval/eval_strategies.h"
#include "coordinator/eval/eval_units.h"
#include "sampler/registry.h"
#include "sampler/strategy.h"
#include "tests/tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"a", "b"};

/* One document "ab cd" of two word units; member a: p(unit) = 0.6, 0.3;
 * member b: 0.2, 0.5 (entropies make the routing rules route). */
static int build_units(ev_units *u) {
    static ev_token a[] = {{0, 2, 0, 1.0, NAN}, {2, 5, 0, 2.0, NAN}};
    static ev_token b[] = {{0, 2, 0, 3.0, NAN}, {2, 5, 0, 0.5, NAN}};
    a[0].logprob = log(0.6), a[1].logprob = log(0.3);
    b[0].logprob = log(0.2), b[1].logprob = log(0.5);
    ev_member_doc m[] = {{a, 2}, {b, 2}};
    char err[256];
    return ev_units_build("ab cd", 5, m, 2, EV_UNIT_WORD, u, err, sizeof err);
}

/* Generation's rule on one unit: the two disjoint events "the unit" (index
 * 0) and "anything else" (index 1, standing for the END slot), each member's
 * events being (p, 1 - p); returns log p(unit) under the rule. */
static double generation_logprob(const sstrat *st, const double *p, const double *w) {
    double ev[2 * 2], wn[2], out[2];
    for (size_t m = 0; m < 2; m++) ev[m * 2] = p[m], ev[m * 2 + 1] = 1 - p[m];
    double one_hot[2] = {st->kind == SSTRAT_SOLO && !strcmp(st->solo, "a"),
                         st->kind == SSTRAT_SOLO && !strcmp(st->solo, "b")};
    sstrat_norm_weights(2, st->kind == SSTRAT_SOLO ? one_hot : w, NULL, wn);
    switch (st->kind) {
    case SSTRAT_PRODUCT: sstrat_product(2, 2, ev, wn, out); break;
    case SSTRAT_MIXTURE:
    case SSTRAT_SOLO: sstrat_mixture(2, 2, ev, wn, out); break;
    default: return NAN; /* rules that pick a proposal: no formula on given text */
    }
    return log(out[0]);
}

/* ppl's log-probability of the whole document under a spec. */
static double eval_logprob(const char *spec, const ev_units *u, const double *w) {
    ev_strategy s;
    char err[1024];
    if (ev_strategy_parse(spec, names, 2, &s, err, sizeof err)) return NAN;
    return ev_strategy_doc_logprob(&s, u, w, "ab cd", NULL);
}

static void test_same_rule_or_refused(const ev_units *u) {
    const double w[2] = {0.7, 0.3};
    const double p[2][2] = {{0.6, 0.2}, {0.3, 0.5}}; /* [unit][member] */
    for (size_t i = 0; i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        if (!sreg_accepts(e, SREG_GENERATION)) continue;
        char spec[96], err[1024], what[256];
        snprintf(spec, sizeof spec, "%s%s", e->name, e->param ? ":b" : "");
        sstrat st;
        ok(sstrat_parse(spec, &st, err, sizeof err) == 0, "generation parses its own name");
        ev_strategy es;
        int scored = ev_strategy_parse(spec, names, 2, &es, err, sizeof err) == 0;
        if (e->scoring == SREG_SCORE_SAME && e->rule != SREG_SOLO) {
            snprintf(what, sizeof what, "%s: ppl scores it through the engine's steps, as the registry's rule", spec);
            ok(scored && es.kind == e->rule && es.steps && sreg_by_gen_kind((int)st.kind)->rule == es.kind, what);
            snprintf(what, sizeof what, "%s: never computed from units (no unit formula stands in for it)", spec);
            ok(isnan(eval_logprob(spec, u, w)), what);
        } else if (e->scoring == SREG_SCORE_SAME) {
            snprintf(what, sizeof what, "%s: ppl scores it, as the registry's rule", spec);
            ok(scored && es.kind == e->rule && !es.steps && sreg_by_gen_kind((int)st.kind)->rule == es.kind, what);
            double want = generation_logprob(&st, p[0], w) + generation_logprob(&st, p[1], w);
            snprintf(what, sizeof what, "%s: ppl's figure = generation's rule on the same units", spec);
            is_near(eval_logprob(spec, u, w), want, 1e-12, what);
        } else {
            snprintf(what, sizeof what, "%s: ppl refuses it, naming %s", spec, e->eval_alt);
            ok(!scored && strstr(err, "cannot be scored") && strstr(err, e->eval_alt), what);
            ev_strategy alt;
            snprintf(what, sizeof what, "%s: the related %s is another rule", spec, e->eval_alt);
            ok(ev_strategy_parse(e->eval_alt, names, 2, &alt, err, sizeof err) == 0 && alt.kind != e->rule,
               what);
        }
    }
}

/* Why product_bound is a separate name: the unnormalised pool is not the
 * product generation runs (normalised over the listed events). */
static void test_product_bound_is_not_product(const ev_units *u) {
    const double w[2] = {0.5, 0.5};
    const double p[2][2] = {{0.6, 0.2}, {0.3, 0.5}};
    sstrat st;
    char err[256];
    sstrat_parse("product", &st, err, sizeof err);
    double gen = generation_logprob(&st, p[0], w) + generation_logprob(&st, p[1], w);
    double bound = eval_logprob("product_bound", u, w);
    ok(isfinite(bound) && bound < gen - 1e-3, "product_bound gives less probability than generation's product");
    is_near(bound, 0.5 * (log(0.6) + log(0.2)) + 0.5 * (log(0.3) + log(0.5)), 1e-12,
            "product_bound = the weighted sum of log-probabilities");
}

/* Every name ppl accepts is implemented (finite), and none is a generation
 * name with another rule. */
static void test_every_ppl_name_implemented(const ev_units *u) {
    const double w[2] = {0.5, 0.5};
    for (size_t i = 0; i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        if (!sreg_accepts(e, SREG_EVALUATION)) continue;
        char spec[96], what[160];
        snprintf(spec, sizeof spec, "%s%s", e->name, e->param ? ":a" : "");
        ev_strategy es;
        char perr[1024];
        int steps = ev_strategy_parse(spec, names, 2, &es, perr, sizeof perr) == 0 && es.steps;
        int bytes = e->needs == SREG_NEEDS_BYTE_MASSES;
        snprintf(what, sizeof what, "ppl implements %s%s", spec,
                 bytes ? " (byte by byte, through the members)" : steps ? " (through the engine's steps)" : "");
        ok(bytes ? steps && e->gen_kind < 0 : steps ? e->gen_kind >= 0 : isfinite(eval_logprob(spec, u, w)), what);
        sstrat st;
        char err[1024];
        int gen = sstrat_parse(spec, &st, err, sizeof err) == 0;
        snprintf(what, sizeof what, "%s: generation runs it only when ppl scores it the same", spec);
        ok(gen ? e->scoring == SREG_SCORE_SAME && sreg_by_gen_kind((int)st.kind) == e
               : e->scoring == SREG_SCORE_EVAL_ONLY,
           what);
    }
}

static void test_default_list(void) {
    char buf[1024];
    ev_strategy_default_list(names, 2, buf, sizeof buf);
    ev_strategy *list = NULL;
    size_t n = 0;
    char err[1024];
    ok(ev_strategy_parse_list(buf, names, 2, &list, &n, err, sizeof err) == 0, "the default list parses");
    size_t want = 2; /* solo:a, solo:b */
    for (size_t i = 0; i < sreg_count(); i++)
        want += sreg_accepts(sreg_at(i), SREG_EVALUATION) && !sreg_at(i)->param && sreg_at(i)->gen_kind < 0 &&
                sreg_at(i)->needs != SREG_NEEDS_BYTE_MASSES;
    is_int(n, want, "the default list: every member alone, then every other rule ppl scores from units");
    ok(!strstr(buf, "pool") && strstr(buf, "mixture_units"), "the step-level rules and byte_pool are scored when named");
    ok(strstr(buf, "route_entropy") && !strstr(buf, "min_ppl"), "the default list uses the evaluation names");
    free(list);
    ev_strategy_default_list(names, 1, buf, sizeof buf);
    is_str(buf, "solo:a", "one member: only solo");
    char small[8];
    ok(ev_strategy_default_list(names, 2, small, sizeof small) > sizeof small && strlen(small) == 7,
       "a small buffer is truncated and terminated");
}

int main(void) {
    ev_units u;
    if (!ok(build_units(&u) == 0, "synthetic units")) return tap_done();
    is_int(u.n_units, 2, "two units");
    test_same_rule_or_refused(&u);
    test_product_bound_is_not_product(&u);
    test_every_ppl_name_implemented(&u);
    test_default_list();
    ev_units_free(&u);
    return tap_done();
}
