/* sampler/registry.h: the one table of strategy names. One name, one rule.
 *
 * Contract. Every strategy name the project accepts anywhere (the engine's
 * --strategy and the API's ensemble.strategy, `consort ab --strategies`,
 * `consort ppl --strategies`) is an entry of this table, and a name means
 * the same rule wherever it is accepted. Each entry says:
 *
 *  - its name, and whether it takes a parameter (`solo:NAME`);
 *  - its rule (sreg_rule), unique in the table;
 *  - what the rule needs from the members (sreg_needs);
 *  - whether generation runs it (gen_kind >= 0: the sstrat_kind of
 *    strategy.h the engine runs), and how `consort ppl` treats it
 *    (sreg_scoring): SREG_SCORE_SAME = ppl scores exactly the rule
 *    generation runs (solo:NAME as the member's own teacher-forced figure;
 *    mixture, product, pool and selective by walking the text through the
 *    engine's own steps, ensemble_score_text); SREG_SCORE_UNSUPPORTED = a generation rule that ppl
 *    cannot score as generation runs it, so ppl refuses the name (the entry
 *    says why and names the evaluation-only rule that measures something
 *    related); SREG_SCORE_EVAL_ONLY = a rule of ppl alone, with its own name,
 *    that generation refuses;
 *  - a one-line summary for help texts, and for bounds a label (`note`)
 *    printed with the figure.
 *
 * Users: sstrat_parse (generation) and ev_strategy_parse (evaluation) look
 * names up here with sreg_parse(); the API validates ensemble.strategy
 * through sstrat_parse and lists sreg_names(); the commands print
 * sreg_help(). The entries are static and immutable: every function here
 * is thread-safe.
 */
#ifndef CONSORT_REGISTRY_H
#define CONSORT_REGISTRY_H

#include "sampler/strategy.h"

#include <stddef.h>
#include <stdio.h>

typedef enum {
    SREG_MIXTURE,
    SREG_PRODUCT,
    SREG_SOLO,
    SREG_MIN_PPL,
    SREG_MIN_PPL_CROSS,
    SREG_SELECTIVE,
    SREG_POOL,
    SREG_MIXTURE_UNITS,
    SREG_ROUTE_ENTROPY,
    SREG_ROUTE_PREV,
    SREG_PRODUCT_BOUND,
    SREG_ORACLE,
    SREG_BYTE_POOL,
    SREG_N_RULES
} sreg_rule;

/* What a rule needs from the members. */
typedef enum {
    SREG_NEEDS_ALL_MASSES,       /* every member's mass for every candidate */
    SREG_NEEDS_ONE_MEMBER,       /* the named member's masses only */
    SREG_NEEDS_OWN_PROPOSALS,    /* each member's mass of its own proposals only */
    SREG_NEEDS_CROSS_PROPOSALS,  /* every member's mass of every member's proposal */
    SREG_NEEDS_LEAD,             /* the lead's own proposals; everyone's masses when it is unsure */
    SREG_NEEDS_UNIT_ENTROPY,     /* unit log-probabilities and each member's entropy before the unit */
    SREG_NEEDS_UNIT_LOGPROBS,    /* unit log-probabilities of every member */
    SREG_NEEDS_BYTE_MASSES       /* every member's masses of the 256 next bytes and END, at every byte */
} sreg_needs;

typedef enum { SREG_SCORE_SAME, SREG_SCORE_UNSUPPORTED, SREG_SCORE_EVAL_ONLY } sreg_scoring;

/* The generation strategy when none is named. */
#define SREG_DEFAULT_GENERATION "mixture"

/* Who asks: generation (engine, API, ab) or evaluation (ppl). */
typedef enum { SREG_GENERATION, SREG_EVALUATION } sreg_layer;

typedef struct {
    const char *name;     /* "mixture"; for a parameterised rule the part before ':' ("solo") */
    const char *param;    /* NULL, or the parameter's placeholder ("NAME" of solo:NAME) */
    sreg_rule rule;
    sreg_needs needs;
    sreg_scoring scoring;
    int gen_kind;         /* the enum sstrat_kind generation runs; -1 for evaluation-only */
    const char *summary;  /* one line: the rule in words */
    const char *eval_alt; /* SREG_SCORE_UNSUPPORTED: the evaluation-only name to use instead */
    const char *why;      /* SREG_SCORE_UNSUPPORTED: why ppl cannot score it */
    const char *note;     /* bounds: the label printed with the figure; else NULL */
} sreg_entry;

/* The table, in help order: sreg_at(i) for i < sreg_count(). */
size_t sreg_count(void);
const sreg_entry *sreg_at(size_t i);

/* The entry of a rule / of a generation kind; NULL if none. */
const sreg_entry *sreg_by_rule(sreg_rule rule);
const sreg_entry *sreg_by_gen_kind(int gen_kind);

/* Does this layer accept the entry's name? Generation: gen_kind >= 0.
 * Evaluation: SREG_SCORE_SAME or SREG_SCORE_EVAL_ONLY. */
int sreg_accepts(const sreg_entry *e, sreg_layer layer);

/* The entry a spec names, whatever the layer: "mixture" -> mixture;
 * "solo:b" -> solo with *param = "b" (a pointer into spec). NULL when the
 * name is unknown or a parameter is missing or unexpected ("solo:",
 * "solo", "mixture:x"); *param is NULL for entries without a parameter. */
const sreg_entry *sreg_lookup(const char *spec, const char **param);

/* sreg_lookup() for one layer: NULL with a message in err when the spec is
 * unknown ("unknown strategy 'x' (generation strategies: ...)"), lacks its
 * parameter, or is not accepted by the layer (for ppl: why, and which
 * evaluation-only name measures something related; for generation: that the
 * name is an evaluation-only rule of consort ppl). */
const sreg_entry *sreg_parse(const char *spec, sreg_layer layer, const char **param, char *err,
                             size_t errlen);

/* The names a layer accepts, comma-separated, parameters as placeholders:
 * "mixture, product, solo:NAME, min_ppl, min_ppl_cross, selective".
 * Returns the length it wanted (snprintf-style); buf is always terminated. */
size_t sreg_names(sreg_layer layer, char *buf, size_t cap);

/* Help text for a layer: one line "  NAME  summary" per accepted name (with
 * the note for bounds), and for evaluation a closing line naming the
 * generation rules ppl refuses and what to use instead. snprintf-style. */
size_t sreg_help(sreg_layer layer, char *buf, size_t cap);

/* sreg_help() under a "strategies:" heading, onto f (the commands' --help). */
void sreg_fprint_help(FILE *f, sreg_layer layer);

#endif
