/* coordinator/eval/eval_strategies.h: how an ensemble's held-out log-probability
 * is computed on units (eval_units.h). docs/EVALUATION.md has the reasoning.
 *
 * For unit u with history h (all bytes before u), member m gives
 * L_m(u) = log p_m(u | h). Weights w are normalised to sum to 1. The names
 * come from the strategy registry (sampler/registry.h); a name means the
 * same rule here as in generation, and ppl refuses the generation rules
 * that define no distribution to score (min_ppl, min_ppl_cross), naming the
 * evaluation-only rule below that is related.
 *
 *  solo:NAME  L_NAME(u): the member's own teacher-forced figure.
 *  mixture, product, pool, selective: not on units. These are step-level
 *             rules (their distributions depend on each step's candidates),
 *             scored by walking the text through the engine's own steps
 *             (ensemble.h, ensemble_score_text) via ev_ppl_opts.steps;
 *             ev_strategy.steps is 1 for them.
 *  byte_pool  not on units either: the text one byte at a time, a
 *             normalised geometric pool of the members' next-byte
 *             distributions (eval_byte_pool.h), from their prefix masses
 *             along the text (ensemble.h, ensemble_score_bytes), also via
 *             ev_ppl_opts.steps (ev_strategy.steps is 1); evaluation only.
 *  mixture_units  log sum_m w_m exp(L_m(u)) (members with w_m = 0 do not
 *             take part, so weights (1, 0) give solo of the first member
 *             exactly): a linear pool of whole units with fixed weights.
 *             Not generation's mixture, which mixes step by step (a unit
 *             of several steps gets a product of per-step mixtures, not a
 *             mixture of products); formerly ppl's `mixture`.
 *  route_entropy  the member whose predictive distribution at its first
 *             token of u has the lowest entropy (most confident) speaks for
 *             u; that entropy depends only on h, never on u's text.
 *             Missing entropies fall back to 1 - top1. Ties: first member.
 *  route_prev the member with the lowest loss per byte on the previous unit
 *             of the document speaks (first unit: as route_entropy).
 *  product_bound  sum_m w_m L_m(u), the log-linear pool WITHOUT its
 *             normaliser Z = sum_v prod_m p_m(v|h)^w_m over all unit strings
 *             v, which cannot be enumerated. By Hoelder's inequality Z <= 1,
 *             so this log-prob is a lower bound of the normalised product's:
 *             the reported bits per byte are an UPPER bound (pessimistic,
 *             never flattering). It is also never better than mixture
 *             (weighted geometric <= arithmetic mean), per unit.
 *  oracle     max_m L_m(u): the best member per unit chosen with hindsight.
 *             Not a probability model; an UPPER BOUND for any routing.
 *
 * Contract: ev_strategy_parse() returns 0 and fills *out, or -1 with a message.
 * ev_strategy_doc_logprob() returns the document's total log-probability
 * (natural log) under the strategy; routed (may be NULL) has n_members
 * counters incremented with the units each member spoke for (routing
 * strategies, oracle and solo).
 */
#ifndef CONSORT_EVAL_STRATEGIES_H
#define CONSORT_EVAL_STRATEGIES_H

#include "coordinator/eval/eval_units.h"
#include "sampler/registry.h"

#include <stddef.h>

typedef struct {
    sreg_rule kind;    /* SREG_SOLO, a generation rule, or an evaluation-only rule */
    size_t member;     /* for solo */
    int steps;         /* 1: scored through the members, not from units (byte_pool),
                        * or a generation rule scored through the engine's steps
                        * (mixture, product, pool, selective): not from units,
                        * see ev_ppl_opts.steps */
    char name[80];     /* as reported: "solo:a", "mixture", ... */
} ev_strategy;

int ev_strategy_parse(const char *spec, const char *const *member_names, size_t n_members,
                      ev_strategy *out, char *err, size_t errlen);

/* The default --strategies of ppl: solo:NAME for every member, then (with
 * more than one member) every other name ppl scores from units, in
 * registry order (the rules scored through the engine's steps or byte by
 * byte (byte_pool) cost a round
 * of member calls per step: they are scored when named).
 * snprintf-style into buf. */
size_t ev_strategy_default_list(const char *const *member_names, size_t n_members, char *buf,
                                size_t cap);

/* Parse a comma-separated list into a malloc'ed array (*out, *n). */
int ev_strategy_parse_list(const char *list, const char *const *member_names, size_t n_members,
                           ev_strategy **out, size_t *n, char *err, size_t errlen);

double ev_strategy_doc_logprob(const ev_strategy *s, const ev_units *u, const double *weights,
                               const char *text, size_t *routed);

/* Normalise w[0..n) to sum 1 in place; -1 when a weight is negative or
 * non-finite, or all are 0. */
int ev_weights_normalise(double *w, size_t n);

/* Parse "0.7,0.3" into w (n values expected); -1 with a message otherwise. */
int ev_weights_parse(const char *s, double *w, size_t n, char *err, size_t errlen);

/* Mixture weights that maximise the total log-likelihood of the given units
 * (EM on fixed components; the objective is concave so EM reaches the
 * optimum). docs: array of n_docs unit sets with the same n_members.
 * w: in = start (normalised), out = result. Returns the iterations run. */
int ev_weights_tune(const ev_units *docs, size_t n_docs, double *w, size_t n_members,
                    int max_iter, double tol);

/* log(sum_i exp(a_i)) over finite inputs, stable. */
double ev_logsumexp(const double *a, size_t n);

#endif
