/* tests/unit/sampler/test_registry.c: walks the strategy registry. Every
 * entry is consistent (unique names and rules, the fields its scoring
 * needs), every name parses in the layers it claims and is refused with a
 * message by the others, and the help texts and name lists list exactly the
 * names a layer accepts. */
#include "sampler/registry.h"
#include "sampler/strategy.h"
#include "tests/tap.h"

#include <stdio.h>
#include <string.h>

/* "mixture" or "solo:x": a spec that names the entry with a parameter filled. */
static void spec_of(const sreg_entry *e, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s", e->name, e->param ? ":x" : "");
}

/* "solo:NAME" or "mixture", as help texts and name lists write it. */
static void shown_of(const sreg_entry *e, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s%s", e->name, e->param ? ":" : "", e->param ? e->param : "");
}

/* Does a comma-separated list hold exactly this item? */
static int list_has(const char *list, const char *item) {
    size_t n = strlen(item);
    for (const char *p = list; (p = strstr(p, item)); p++)
        if ((p == list || (p - list >= 2 && p[-2] == ',')) && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

/* Does the help text hold a line starting "  item "? */
static int help_has(const char *help, const char *item) {
    char pat[128];
    snprintf(pat, sizeof pat, "\n  %s ", item);
    char with_nl[8192];
    snprintf(with_nl, sizeof with_nl, "\n%s", help);
    return strstr(with_nl, pat) != NULL;
}

static void test_entries_consistent(void) {
    size_t n = sreg_count();
    ok(n >= 10, "the registry has every strategy");
    int rule_seen[SREG_N_RULES] = {0};
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const sreg_entry *e = sreg_at(i);
        char what[160];
        snprintf(what, sizeof what, "%s: a rule of its own", e->name);
        ok(e->rule < SREG_N_RULES && !rule_seen[e->rule]++, what);
        ok(sreg_by_rule(e->rule) == e, "sreg_by_rule finds the entry");
        for (size_t j = 0; j < i; j++) bad |= !strcmp(sreg_at(j)->name, e->name);
        bad |= !e->summary || !*e->summary;
        int gen = e->gen_kind >= 0;
        snprintf(what, sizeof what, "%s: generation iff not evaluation-only", e->name);
        ok(gen == (e->scoring != SREG_SCORE_EVAL_ONLY), what);
        if (gen) {
            snprintf(what, sizeof what, "%s: the one entry of its generation kind", e->name);
            ok(sreg_by_gen_kind(e->gen_kind) == e, what);
        }
        if (e->scoring == SREG_SCORE_UNSUPPORTED) {
            const char *p;
            const sreg_entry *alt = sreg_lookup(e->eval_alt, &p);
            snprintf(what, sizeof what, "%s: says why ppl refuses it and names an evaluation-only rule", e->name);
            ok(e->why && *e->why && alt && alt->scoring == SREG_SCORE_EVAL_ONLY, what);
        } else {
            bad |= e->eval_alt != NULL || e->why != NULL;
        }
    }
    ok(!bad, "names unique, every entry summarised, eval_alt/why only where ppl refuses");
    ok(sreg_at(n) == NULL, "sreg_at past the end is NULL");
    ok(sreg_by_gen_kind(-1) == NULL, "no entry for gen_kind -1");
}

/* Each name parses in the layers that accept it, and only there. */
static void test_every_name_parses_where_it_claims(void) {
    for (size_t i = 0; i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        char spec[96], err[1024], what[200];
        spec_of(e, spec, sizeof spec);
        sstrat st;
        int gen_ok = sstrat_parse(spec, &st, err, sizeof err) == 0;
        if (sreg_accepts(e, SREG_GENERATION)) {
            snprintf(what, sizeof what, "generation runs '%s' as its registry kind", spec);
            ok(gen_ok && (int)st.kind == e->gen_kind && !strcmp(sstrat_name(st.kind), e->name), what);
        } else {
            snprintf(what, sizeof what, "generation refuses the evaluation-only '%s', saying so", spec);
            ok(!gen_ok && strstr(err, "evaluation-only") && strstr(err, spec) &&
                   strstr(err, "mixture, product"), what);
        }
        const char *param;
        const sreg_entry *got = sreg_parse(spec, SREG_EVALUATION, &param, err, sizeof err);
        if (sreg_accepts(e, SREG_EVALUATION)) {
            snprintf(what, sizeof what, "evaluation accepts '%s'", spec);
            ok(got == e && (!e->param || !strcmp(param, "x")), what);
        } else {
            snprintf(what, sizeof what, "evaluation refuses '%s', naming %s", spec, e->eval_alt);
            ok(!got && param == NULL && strstr(err, "cannot be scored") && strstr(err, e->eval_alt), what);
        }
    }
}

static void test_parameters_and_unknown_names(void) {
    const char *param;
    char err[1024];
    sstrat st;
    ok(sreg_lookup("solo:b", &param) == sreg_by_rule(SREG_SOLO) && !strcmp(param, "b"), "solo:b: parameter b");
    ok(sreg_lookup("mixture", &param) && param == NULL, "mixture: no parameter");
    ok(!sreg_lookup("solo", &param) && !sreg_lookup("solo:", &param), "solo needs its NAME");
    ok(!sreg_lookup("mixture:x", &param), "mixture takes no parameter");
    ok(!sreg_lookup("", &param) && !sreg_lookup(NULL, &param), "empty or missing spec: no entry");
    ok(!sreg_parse("solo:", SREG_GENERATION, &param, err, sizeof err) && strstr(err, "solo:NAME"),
       "solo: says it needs solo:NAME");
    ok(!sreg_parse("mixture:x", SREG_EVALUATION, &param, err, sizeof err) && strstr(err, "no parameter"),
       "mixture:x: says mixture takes no parameter");
    ok(sstrat_parse("vote", &st, err, sizeof err) < 0 && strstr(err, "unknown strategy 'vote'") &&
           strstr(err, "selective") && !strstr(err, "route_entropy"),
       "unknown name: generation lists its own names only");
    ok(!sreg_parse("vote", SREG_EVALUATION, &param, err, sizeof err) && strstr(err, "route_entropy") &&
           !strstr(err, "min_ppl"),
       "unknown name: ppl lists its own names only");
    ok(sstrat_parse(NULL, &st, err, sizeof err) == 0 && st.kind == SSTRAT_MIXTURE &&
           !strcmp(sstrat_name(st.kind), SREG_DEFAULT_GENERATION),
       "no name: the default, mixture");
    char longname[100];
    memset(longname, 'n', sizeof longname);
    memcpy(longname, "solo:", 5);
    longname[sizeof longname - 1] = 0;
    ok(sstrat_parse(longname, &st, err, sizeof err) < 0 && strstr(err, "longer than"),
       "solo with a member name too long for sstrat: refused");
}

/* Help texts and name lists: exactly the names a layer accepts. */
static void test_help_lists_every_name(void) {
    char gen_help[4096], ev_help[4096], gen_names[512], ev_names[512];
    sreg_help(SREG_GENERATION, gen_help, sizeof gen_help);
    sreg_help(SREG_EVALUATION, ev_help, sizeof ev_help);
    sreg_names(SREG_GENERATION, gen_names, sizeof gen_names);
    sreg_names(SREG_EVALUATION, ev_names, sizeof ev_names);
    int bad = 0;
    for (size_t i = 0; i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        char shown[96];
        shown_of(e, shown, sizeof shown);
        int gen = sreg_accepts(e, SREG_GENERATION), ev = sreg_accepts(e, SREG_EVALUATION);
        if (help_has(gen_help, shown) != gen || list_has(gen_names, shown) != gen) {
            diag("generation help/list and %s disagree", shown);
            bad = 1;
        }
        if (list_has(ev_names, shown) != ev || !help_has(ev_help, shown)) {
            diag("evaluation help/list and %s disagree", shown);
            bad = 1;
        }
        if (e->note && !strstr(ev_help, e->note)) bad = 1;
    }
    ok(!bad, "help texts and name lists hold exactly each layer's names (ppl's also the refused ones)");
    ok(strstr(gen_help, "mixture ") && strstr(gen_help, "(default)"), "generation help marks the default");
    ok(strstr(ev_help, "min_ppl         generation only") && strstr(ev_help, "related: route_entropy"),
       "ppl help says which generation rules it refuses and what to use");
    ok(strstr(ev_help, "pool ") && strstr(ev_help, "through the engine's steps") &&
           !strstr(ev_help, "product         generation only"),
       "ppl help lists the step-level rules it scores through the engine");
    char small[16];
    size_t want = sreg_help(SREG_EVALUATION, small, sizeof small);
    is_int(want, strlen(ev_help), "sreg_help reports the length it needed");
    ok(strlen(small) == sizeof small - 1, "a small buffer is filled and terminated");
    is_int(sreg_names(SREG_GENERATION, small, 0), strlen(gen_names), "cap 0: length only");
    FILE *f = tmpfile();
    sreg_fprint_help(f, SREG_GENERATION);
    char back[4096] = "";
    rewind(f);
    size_t got = fread(back, 1, sizeof back - 1, f);
    back[got] = 0;
    fclose(f);
    ok(!strncmp(back, "strategies:\n", 12) && strstr(back, gen_help), "sreg_fprint_help prints the help under a heading");
}

int main(void) {
    test_entries_consistent();
    test_every_name_parses_where_it_claims();
    test_parameters_and_unknown_names();
    test_help_lists_every_name();
    return tap_done();
}
