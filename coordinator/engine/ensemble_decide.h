/* coordinator/engine/ensemble_decide.h: one step's decision, as a pure
 * function (no I/O, no clock; only the rng it is given).
 *
 * The generation loop (ensemble.c) asks the members, builds the candidate
 * set and the matrix of what each member said about each candidate, then
 * calls ensemble_decide(). The answer is either a choice (the event to
 * commit, END included) or what the decision still needs to know:
 *
 *   DECIDE_MASSES    the prefix masses (member m, candidate c) that are NAN
 *                    in lq, for the members in need[] (and, when `only` is
 *                    set, only the candidates c with only[c]); the loop asks
 *                    them in one concurrent round and calls again;
 *   DECIDE_CATCH_UP  selective only: the lead member is unsure, so the
 *                    members in need[] (those that did not answer this step)
 *                    must catch up with the text and propose; the loop
 *                    rebuilds the candidate set and calls again.
 *
 *     decide_memo memo;
 *     decide_memo_reset(&memo);                  // once per step
 *     for (;;) {
 *         decision d = ensemble_decide(&in, &buf, &memo, &rng);
 *         if (d.kind == DECIDE_CHOICE) break;
 *         ... ask what d says, refresh in's matrices ...
 *     }
 *
 * The memo carries what must not be drawn twice within a step (min_ppl's
 * sampled proposals) and what was already asked (a need is answered at most
 * once: what is still unknown afterwards counts as zero mass). The rules are
 * in docs/STRATEGIES.md; the formulas are sampler/strategy.h's.
 */
#ifndef CONSORT_ENSEMBLE_DECIDE_H
#define CONSORT_ENSEMBLE_DECIDE_H

#include "common/limits.h"
#include "coordinator/engine/members.h"
#include "sampler/sampler.h"
#include "sampler/strategy.h"
#include "vocab_align/candidates.h"

#include <stddef.h>

typedef struct {
    size_t nm;
    const vcand_set *cand;     /* the candidates, linked (parents, proposers) */
    const double *lq;          /* [m * ld + c]: log prefix mass; NAN = not known */
    const double *lp;          /* [m * ld + c]: log prob. of m's own token path for c (a top entry
                                * of m), NAN for the rest; NULL = none (prefix classes only) */
    size_t ld;                 /* row stride of lq and lp (>= cand->n) */
    const double *end_lq;      /* [m]: log mass of END */
    const int *active;         /* [m]: taking part (not dropped, weight > 0 asked) */
    const int *fresh;          /* [m]: answered for the current text this step */
    const double *w;           /* [m]: raw weights */
    const sstrat *st;
    size_t lead;               /* selective's lead member */
    double threshold;          /* selective's threshold */
    ssample_params sp;
    int no_round_skip;         /* never skip a second round by the greedy bound */
    const double *pool_alpha;  /* pool: [m] exponents; NULL = 1/M over the members taking part */
} decide_in;

/* Written by the decision; sized by the caller for ne = cand->n + 1 events.
 * dist[e] is the strategy's probability of event e, not renormalised over
 * the listed events: 1 - sum is REST's (sstrat_rest); sampling draws among
 * the listed events (REST excluded, docs/STRATEGIES.md "Sampling").
 * ev, own: nm * (ld + 1); dist, work, order: ld + 1; mlo: 4 * (ld + 1). */
typedef struct {
    double *ev, *own, *dist, *work, *mlo;
    size_t *order;
    double wn[CONSORT_MAX_MEMBERS];    /* normalised weights of the members alive */
    int own_choice[CONSORT_MAX_MEMBERS];/* each fresh member's greedy event over its own proposals, else -1 */
} decide_buf;

typedef struct {
    int lead_unsure;           /* selective: the lead was below its threshold */
    int masses_asked;          /* DECIDE_MASSES was returned this step (asked at most once) */
    int have_props;            /* min_ppl: proposals drawn this step */
    int prop[CONSORT_MAX_MEMBERS];
    int *only;                 /* scratch for DECIDE_MASSES' `only` */
    size_t only_cap;
} decide_memo;

typedef enum { DECIDE_CHOICE, DECIDE_MASSES, DECIDE_CATCH_UP } decide_kind;

typedef struct {
    decide_kind kind;
    int choice;                /* CHOICE: the event (cand->n = END); -1: none possible */
    int skipped;               /* CHOICE: the greedy bound made the missing masses unnecessary */
    int need[CONSORT_MAX_MEMBERS];     /* MASSES / CATCH_UP: the members to ask */
    const int *only;           /* MASSES: NULL = all unknown, else candidates c with only[c] */
} decision;

void decide_memo_reset(decide_memo *m);  /* start of a step (keeps the scratch) */
void decide_memo_free(decide_memo *m);

decision ensemble_decide(const decide_in *in, decide_buf *b, decide_memo *memo, rng_state *rng);

/* The mass member i gave to disjoint events this step: its outermost known
 * candidates (none a prefix of another) plus END. A probability, so at most
 * 1 in exact arithmetic; a member's answers can exceed it by rounding (its
 * masses come from several float32 softmaxes and f16 KV caches) or by being
 * wrong (it is input from the network), so the loop scales such a member's
 * masses down before deciding (ens_rescale_inconsistent(), ensemble_score.c). */
double ensemble_member_listed_mass(const decide_in *in, size_t i);

/* Invariant check, for assert(): for each active member that answered this
 * step, ensemble_member_listed_mass() is at most 1 (+1e-9). The loop
 * guarantees it (ens_rescale_inconsistent) before every decision. Returns 1 when it
 * holds. */
int ensemble_events_sane(const decide_in *in);

#endif
