/* sampler/registry.c: the strategy table and its look-ups (registry.h).
 *
 * Why a table. A strategy name used to be spelled in the engine's parser,
 * the API's validation, ppl's parser and five help texts, and the same name
 * ended up meaning two rules (ppl's `min_ppl` routed by entropy while
 * generation's picked a proposal by per-byte likelihood). Here each name is
 * one row saying which rule it is, what it needs, and whether generation
 * runs it and ppl scores it; every parser, error message and help text is
 * derived from the rows, so a new strategy is one new row (plus its rule).
 *
 * State: none but the static const table. What may change: new rows (a rule
 * gets a new sreg_rule value); an UNSUPPORTED row becomes SAME once ppl can
 * score the rule exactly as generation runs it (mixture, product, pool and
 * selective became SAME with the engine's scoring path; the unit-level
 * linear pool ppl used to call `mixture` is now `mixture_units`; byte_pool
 * is scored from the members' next-byte masses, not from units).
 */
#include "sampler/registry.h"

#include <stdio.h>
#include <string.h>

static const sreg_entry table[] = {
    {"mixture", NULL, SREG_MIXTURE, SREG_NEEDS_ALL_MASSES, SREG_SCORE_SAME, SSTRAT_MIXTURE,
     "linear pool of the members' masses, step by step", NULL, NULL, NULL},
    {"product", NULL, SREG_PRODUCT, SREG_NEEDS_ALL_MASSES, SREG_SCORE_SAME, SSTRAT_PRODUCT,
     "log-linear pool over the step's events and the rest", NULL, NULL, NULL},
    {"solo", "NAME", SREG_SOLO, SREG_NEEDS_ONE_MEMBER, SREG_SCORE_SAME, SSTRAT_SOLO,
     "the named member alone", NULL, NULL, NULL},
    {"min_ppl", NULL, SREG_MIN_PPL, SREG_NEEDS_OWN_PROPOSALS, SREG_SCORE_UNSUPPORTED, SSTRAT_MIN_PPL,
     "each member proposes; the lowest per-byte perplexity under its proposer wins", "route_entropy",
     "it chooses among the members' own proposals (no distribution over the step's events), and held-out "
     "text is nobody's proposal",
     NULL},
    {"min_ppl_cross", NULL, SREG_MIN_PPL_CROSS, SREG_NEEDS_CROSS_PROPOSALS, SREG_SCORE_UNSUPPORTED,
     SSTRAT_MIN_PPL_CROSS, "as min_ppl, each proposal scored under every member (weighted)", "route_prev",
     "it chooses among the members' own proposals (no distribution over the step's events), and held-out "
     "text is nobody's proposal",
     NULL},
    {"selective", NULL, SREG_SELECTIVE, SREG_NEEDS_LEAD, SREG_SCORE_SAME, SSTRAT_SELECTIVE,
     "the lead member alone while its top mass >= --threshold, else mixture", NULL, NULL, NULL},
    {"pool", NULL, SREG_POOL, SREG_NEEDS_ALL_MASSES, SREG_SCORE_SAME, SSTRAT_POOL,
     "the mixture's mass for the candidates, shared out by a normalised geometric pool", NULL, NULL, NULL},
    {"mixture_units", NULL, SREG_MIXTURE_UNITS, SREG_NEEDS_UNIT_LOGPROBS, SREG_SCORE_EVAL_ONLY, -1,
     "linear pool of the members' whole-unit probabilities (fixed weights per unit)", NULL, NULL, NULL},
    {"product_bound", NULL, SREG_PRODUCT_BOUND, SREG_NEEDS_UNIT_LOGPROBS, SREG_SCORE_EVAL_ONLY, -1,
     "log-linear pool without its normaliser", NULL, NULL,
     "an upper bound of bits/byte, pessimistic"},
    {"route_entropy", NULL, SREG_ROUTE_ENTROPY, SREG_NEEDS_UNIT_ENTROPY, SREG_SCORE_EVAL_ONLY, -1,
     "each unit scored by the member with the lowest entropy before it", NULL, NULL, NULL},
    {"route_prev", NULL, SREG_ROUTE_PREV, SREG_NEEDS_UNIT_LOGPROBS, SREG_SCORE_EVAL_ONLY, -1,
     "each unit scored by the member with the lowest loss per byte on the previous unit", NULL, NULL,
     NULL},
    {"oracle", NULL, SREG_ORACLE, SREG_NEEDS_UNIT_LOGPROBS, SREG_SCORE_EVAL_ONLY, -1,
     "the best member per unit, chosen with hindsight", NULL, NULL,
     "not a model, a hindsight bound"},
    {"byte_pool", NULL, SREG_BYTE_POOL, SREG_NEEDS_BYTE_MASSES, SREG_SCORE_EVAL_ONLY, -1,
     "one byte at a time: a normalised geometric pool of the members' next-byte distributions", NULL, NULL,
     NULL},
};

#define N_ENTRIES (sizeof table / sizeof table[0])

size_t sreg_count(void) { return N_ENTRIES; }

const sreg_entry *sreg_at(size_t i) { return i < N_ENTRIES ? &table[i] : NULL; }

const sreg_entry *sreg_by_rule(sreg_rule rule) {
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (table[i].rule == rule) return &table[i];
    return NULL;
}

const sreg_entry *sreg_by_gen_kind(int gen_kind) {
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (gen_kind >= 0 && table[i].gen_kind == gen_kind) return &table[i];
    return NULL;
}

int sreg_accepts(const sreg_entry *e, sreg_layer layer) {
    if (!e) return 0;
    if (layer == SREG_GENERATION) return e->gen_kind >= 0;
    return e->scoring == SREG_SCORE_SAME || e->scoring == SREG_SCORE_EVAL_ONLY;
}

/* The entry whose name is spec's part before ':' (or all of it). */
static const sreg_entry *entry_named(const char *spec, size_t len) {
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (strlen(table[i].name) == len && !strncmp(table[i].name, spec, len)) return &table[i];
    return NULL;
}

const sreg_entry *sreg_lookup(const char *spec, const char **param) {
    *param = NULL;
    if (!spec) return NULL;
    const char *colon = strchr(spec, ':');
    const sreg_entry *e = entry_named(spec, colon ? (size_t)(colon - spec) : strlen(spec));
    if (!e) return NULL;
    if (!e->param) return colon ? NULL : e;
    if (!colon || !colon[1]) return NULL;
    *param = colon + 1;
    return e;
}

/* "solo:NAME" or "mixture" into buf. */
static void display_name(const sreg_entry *e, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s%s", e->name, e->param ? ":" : "", e->param ? e->param : "");
}

static const char *layer_words(sreg_layer layer) {
    return layer == SREG_GENERATION ? "generation strategies" : "ppl strategies";
}

static void refuse_unknown(const char *spec, sreg_layer layer, char *err, size_t errlen) {
    char names[512];
    sreg_names(layer, names, sizeof names);
    const char *colon = strchr(spec, ':');
    const sreg_entry *e = entry_named(spec, colon ? (size_t)(colon - spec) : strlen(spec));
    if (e && e->param)
        snprintf(err, errlen, "strategy '%s' needs a %s: %s:%s", spec, e->param, e->name, e->param);
    else if (e)
        snprintf(err, errlen, "strategy '%s': %s takes no parameter", spec, e->name);
    else
        snprintf(err, errlen, "unknown strategy '%s' (%s: %s)", spec, layer_words(layer), names);
}

static void refuse_for_layer(const sreg_entry *e, sreg_layer layer, char *err, size_t errlen) {
    char names[512];
    sreg_names(layer, names, sizeof names);
    if (layer == SREG_EVALUATION) {
        const char *no_param;
        const sreg_entry *alt = sreg_lookup(e->eval_alt, &no_param);
        snprintf(err, errlen,
                 "strategy '%s' cannot be scored by consort ppl as generation runs it: %s; "
                 "the evaluation-only '%s' (%s) measures something related",
                 e->name, e->why, e->eval_alt, alt ? alt->summary : "?");
    } else
        snprintf(err, errlen,
                 "strategy '%s' is an evaluation-only rule of consort ppl (%s), not a generation "
                 "strategy (%s: %s)",
                 e->name, e->summary, layer_words(layer), names);
}

const sreg_entry *sreg_parse(const char *spec, sreg_layer layer, const char **param, char *err,
                             size_t errlen) {
    const sreg_entry *e = sreg_lookup(spec, param);
    if (!e) {
        refuse_unknown(spec ? spec : "", layer, err, errlen);
        return NULL;
    }
    if (!sreg_accepts(e, layer)) {
        refuse_for_layer(e, layer, err, errlen);
        *param = NULL;
        return NULL;
    }
    return e;
}

/* snprintf-style append: *len counts what was wanted, buf stays terminated. */
static void append(char *buf, size_t cap, size_t *len, const char *fmt, const char *a, const char *b,
                   const char *c) {
    size_t room = *len < cap ? cap - *len : 0;
    int n = snprintf(room ? buf + *len : NULL, room, fmt, a, b, c);
    if (n > 0) *len += (size_t)n;
}

size_t sreg_names(sreg_layer layer, char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        if (!sreg_accepts(&table[i], layer)) continue;
        char name[64];
        display_name(&table[i], name, sizeof name);
        append(buf, cap, &len, "%s%s%s", len ? ", " : "", name, "");
    }
    return len;
}

size_t sreg_help(sreg_layer layer, char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const sreg_entry *e = &table[i];
        if (!sreg_accepts(e, layer)) continue;
        char name[64];
        display_name(e, name, sizeof name);
        append(buf, cap, &len, "  %-15s %s%s", name, e->summary, "");
        if (e->note) append(buf, cap, &len, "; %s%s%s", e->note, "", "");
        if (layer == SREG_EVALUATION && e->gen_kind >= 0 && e->rule != SREG_SOLO)
            append(buf, cap, &len, " (scored through the engine's steps)%s%s%s", "", "", "");
        if (layer == SREG_GENERATION && !strcmp(e->name, SREG_DEFAULT_GENERATION))
            append(buf, cap, &len, " (default)%s%s%s", "", "", "");
        append(buf, cap, &len, "\n%s%s%s", "", "", "");
    }
    if (layer != SREG_EVALUATION) return len;
    for (size_t i = 0; i < N_ENTRIES; i++) {
        const sreg_entry *e = &table[i];
        if (e->scoring != SREG_SCORE_UNSUPPORTED) continue;
        append(buf, cap, &len, "  %-15s generation only, not scored here (related: %s)%s\n", e->name,
               e->eval_alt, "");
    }
    return len;
}

void sreg_fprint_help(FILE *f, sreg_layer layer) {
    char buf[4096];
    sreg_help(layer, buf, sizeof buf);
    fprintf(f, "strategies%s:\n%s", layer == SREG_EVALUATION ? " (consort ppl)" : "", buf);
}
