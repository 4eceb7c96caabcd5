/* sampler/strategy.h: combination strategies over a candidate set.
 *
 * Inputs per step: candidates c = 0..n-1 (byte strings after G, each with its
 * nearest proper prefix in the set, `parent`, see vocab_align/candidates.h),
 * per member m the natural log prefix masses logq[m*n + c] = log Q_m(c)
 * (-INFINITY for zero mass; NAN = unknown, treated as zero mass), for the
 * candidates m proposed itself the log probability of its own token path
 * logp[m*n + c] (NAN for the others), end_logq[m], the weights and which
 * members are alive.
 *
 * Events (disjoint, docs/STRATEGIES.md "Events"): a candidate c whose whole
 * subtree in the set (c and every listed extension of it) m proposed itself
 * is m's own token path, mass exp(logp_m(c)) (what m conditions on when c is
 * committed: it absorbs its own proposal as exactly that path); any other
 * candidate is the prefix class "the next bytes start with c and with none
 * of c's nearest extensions in the set",
 *     ev_m(c) = max(0, Q_m(c) - sum_{d: parent(d) = c} Q_m(d)),
 * plus END (index n) with mass exp(end_logq[m]). The listed events of a
 * member sum to at most 1; the rest, REST = 1 - sum, is the mass of
 * everything no event lists.
 *
 * Distributions returned here are NOT renormalised over the listed events:
 * out[e] is the strategy's probability of event e, and 1 - sum_e out[e] is
 * the probability of REST (sstrat_rest). So log out[e] is the true
 * log-probability of the step (the logprobs the API reports).
 *
 * Weights: sstrat_norm_weights() keeps alive members with weight > 0 and
 * scales them to sum 1; a member with weight 0 takes no part (contributes no
 * candidates and no mass).
 */
#ifndef CONSORT_STRATEGY_H
#define CONSORT_STRATEGY_H

#include <stddef.h>

enum sstrat_kind {
    SSTRAT_MIXTURE, SSTRAT_PRODUCT, SSTRAT_SOLO, SSTRAT_MIN_PPL, SSTRAT_MIN_PPL_CROSS, SSTRAT_SELECTIVE,
    SSTRAT_POOL
};

typedef struct {
    enum sstrat_kind kind;
    char solo[64]; /* member name for SSTRAT_SOLO */
} sstrat;

#define SSTRAT_DEFAULT_THRESHOLD 0.5

/* A generation strategy by name, through the registry (sampler/registry.h):
 * NULL or "" is mixture; "solo:NAME" fills out->solo. Evaluation-only names
 * (route_entropy, ...) and unknown names give -1 with a message. */
int sstrat_parse(const char *s, sstrat *out, char *err, size_t errlen);
/* The registry's name of a generation kind ("solo" for SSTRAT_SOLO). */
const char *sstrat_name(enum sstrat_kind k);

/* ev[0..n] (n+1 values) of one member, every candidate as a prefix class
 * (no own paths: sstrat_events_own with logp = NULL). */
void sstrat_events(size_t n, const int *parent, const double *logq, double end_logq, double *ev);

/* ev[0..n] of one member with its own token paths: logp[c] (NULL = none
 * known) is the log probability of m's own path for the candidates m
 * proposed, NAN for the others. A candidate is an own-path event when it and
 * every listed extension of it have a logp; else a prefix class. */
void sstrat_events_own(size_t n, const int *parent, const double *logq, const double *logp, double end_logq,
                       double *ev);

/* 1 - sum of out[0..ne), clipped at 0: the probability of REST. */
double sstrat_rest(size_t ne, const double *out);

/* wn[m] = w[m] / sum over alive members with w > 0 (else 0). Returns how
 * many members have wn > 0. */
size_t sstrat_norm_weights(size_t nm, const double *w, const int *alive, double *wn);

/* ev: nm rows of ne = n+1 events. out[e] = sum_m wn_m ev_m(e); returns the
 * listed mass sum_e out[e] (REST is 1 minus it). */
double sstrat_mixture(size_t nm, size_t ne, const double *ev, const double *wn, double *out);

/* Log-linear pool over the step's partition, REST included: with
 * rest_m = max(0, 1 - sum_e ev_m(e)),
 *     out[e] = prod_m ev_m(e)^wn_m / Z,  Z = sum over e and REST of the same,
 * over members with wn > 0. An event to which any such member gives zero
 * mass gets zero. If that leaves no mass at all, falls back to the mixture
 * and returns 1 (else 0). */
int sstrat_product(size_t nm, size_t ne, const double *ev, const double *wn, double *out);

/* Pooled: over the pooled set P = the events to which every member with
 * wn > 0 and alpha > 0 gives mass (g(e) > 0), the mixture decides the total
 * S = sum_{e in P} mix(e) and a normalised geometric pool shares it out,
 *     out[e] = S * g(e) / sum_{f in P} g(f),  g(e) = prod_m ev_m(e)^alpha_m;
 * every other event keeps the mixture's mix(e), and REST the mixture's
 * 1 - sum_e mix(e) (so no event the mixture gives mass to gets zero). alpha
 * NULL = 1/M for each of the M members with wn > 0. When g is zero
 * everywhere, out is the mixture and 1 is returned (else 0). */
int sstrat_pool(size_t nm, size_t ne, const double *ev, const double *wn, const double *alpha, double *out);

/* Lead member alone (its events, REST = its unlisted mass) when its
 * largest event mass (an absolute probability) is >= threshold; else the
 * mixture. Returns 1 when the lead spoke alone. */
int sstrat_selective(size_t nm, size_t ne, const double *ev, const double *wn, size_t lead,
                     double threshold, double *out);

/* min_ppl / min_ppl_cross: proposal[m] is the event index member m proposes
 * (its own choice; n = END; -1 none). A proposal c of len[c] bytes scores
 *   min_ppl:       log Q_m(c) / len[c]      under its proposer m,
 *   min_ppl_cross: sum_j wn_j log Q_j(c) / len[c] over members j with wn > 0,
 * (END counts as one byte of log mass end_logq) i.e. minus the log per-byte
 * perplexity; the highest score wins (ties: lower member index). Returns the
 * winning event index, -1 if no proposal. score[m] gets each proposal's score.
 * Here logq is laid out as logq[m*ld + c] (ld >= n, the row stride). */
int sstrat_min_ppl(size_t nm, size_t n, const double *logq, size_t ld, const double *end_logq,
                   const size_t *len, const int *proposal, const double *wn, int cross,
                   double *score);

/* Greedy mixture with some masses unknown (NaN in logq[m*ld + c]): the
 * winner if it is certain whatever the unknown values are, else -1. Per
 * member, bounds on its events: an own-path event (logp, NULL = none, laid
 * out as logq; see sstrat_events_own) is exact; a known Q with known
 * children gives the exact event; an unknown child lowers the lower bound to 0; an unknown Q is
 * at most 1 minus the lower bounds of the member's other events (its events
 * are disjoint). The winner is certain when its weighted lower bound beats
 * every other event's weighted upper bound. scratch: 4 * (n + 1) doubles. */
int sstrat_greedy_bound(size_t nm, size_t n, const int *parent, const double *logq, const double *logp,
                        size_t ld, const double *end_logq, const double *wn, double *scratch);

/* Auto weights from prompt perplexity: nll[m] = the prompt's total negative
 * log-likelihood (nats) under m, nbytes its length in bytes; members with
 * ok[m] = 0 get 0. w[m] = softmax_m(-nll[m] / nbytes), i.e. proportional to
 * the geometric-mean per-byte probability of the prompt. With nbytes = 0 or
 * nothing ok, equal weights over ok members. */
void sstrat_auto_weights(size_t nm, const double *nll, double nbytes, const int *ok, double *w);

#endif
