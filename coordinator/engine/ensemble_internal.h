/* coordinator/engine/ensemble_internal.h: the state of one generation,
 * shared by the engine's files (ensemble.c: the loop and its I/O;
 * ensemble_output.c: what reaches the caller). Not for other layers.
 *
 * Invariants (checked with assert where cheap):
 *  - G (g) grows only by committed candidates, and is cut only by a stop
 *    sequence; emitted <= g.n.
 *  - Every active member has, after its latest state-changing call, the
 *    text prompt + G minus its lag (the bytes committed since it was last
 *    asked); a member with fresh = 1 answered for prompt + G this step.
 *  - lq rows: member m's log prefix mass of candidate c, NAN when not known.
 */
#ifndef CONSORT_ENSEMBLE_INTERNAL_H
#define CONSORT_ENSEMBLE_INTERNAL_H

#include "common/limits.h"
#include "common/sbuf.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/engine/ensemble_decide.h"
#include "coordinator/engine/member.h"
#include "coordinator/engine/members.h"

#define ENSEMBLE_ROUND_POOL 16

struct ensemble {
    member_set *ms;
    size_t nm;
    ensemble_config cfg;      /* strategy filled in ("mixture" when none given) */
    double weights[CONSORT_MAX_MEMBERS];
    pthread_mutex_t mu;       /* guards the round pool */
    member_round *rounds[ENSEMBLE_ROUND_POOL]; /* kept: they hold the keep-alive connections */
    int n_rounds;
};

/* One member within one request. */
typedef struct {
    size_t idx;              /* index in the member set */
    int active;              /* queried this request (weight > 0 and not failed) */
    int drafting;            /* a weight-0 drafting member: it has a session and is owed the
                              * committed text, drafts for the others, never decides (ensemble_spec.c) */
    int failed;
    int unreachable;         /* its latest call got no answer */
    char failure[160];
    double w;                /* raw weight */
    member_session *s;
    int pending;             /* has a call in the current round */
    int rc;                  /* result of its latest call (0 ok) */
    const proto_step_res *res;
    const proto_step_res *root; /* the answer of its latest call (res is it or one of its drafts) */
    proto_error perr;
    double rtt_sum;
    int n_calls;
    int prompt_tokens;
    long decoded;
    int steps_won;
    size_t bytes_won;
    /* its latest answer */
    vcand_set top;           /* its top strings, in its order */
    double *top_lq;
    size_t top_cap;
    double *top_lp;          /* its own token path's log prob. per top string (NAN: not given) */
    size_t top_lp_cap;
    double *cand_lq;         /* answers to the candidates it was asked */
    size_t cand_cap;
    double end_lq;
    vcand_set asked;         /* the candidates of its latest state-changing call */
    int fresh;               /* answered for the current text this step */
    int warned_mass;         /* logged once: its masses summed above 1 (ens_rescale_inconsistent) */
    sbuf lag;                /* committed bytes not yet sent to it */
    /* speculative steps with a drafting member (ensemble_spec.c) */
    int verifying;           /* its latest call verified the drafter's pieces: its draft follows v */
    sbuf v;                  /* those pieces, back to back */
    size_t v_len[PROTO_MAX_DRAFT];
    int n_v;
    proto_str v_strs[PROTO_MAX_DRAFT]; /* (scratch: the request's draft_b64) */
} mstate;

struct ensemble_gen {
    ensemble *e;
    const ensemble_request *req;
    ensemble_on_chunk on_chunk;
    void *ud;
    ensemble_result *out;
    double t0, c0;
    member_set *ms;
    member_round *round;
    size_t nm;
    mstate m[CONSORT_MAX_MEMBERS];
    proto_msg *msgs;         /* the request's messages, as the protocol's structs */
    size_t n_msgs;
    proto_str *strs;         /* scratch: candidates of one call */
    size_t strs_cap;
    sstrat st;
    size_t lead;
    double threshold, step_timeout;
    int k_prop, k_ask;
    vcand_set cand, carry, next_carry;
    size_t mat_cap;          /* columns allocated in the matrices */
    double *lq;              /* [m * mat_cap + c] */
    double *lp;              /* [m * mat_cap + c]: m's own path log prob. of c, NAN if c is not m's */
    decide_buf buf;
    decide_memo memo;
    int choice;              /* this step's chosen event */
    rng_state rng;
    sbuf g;                  /* committed bytes G */
    size_t emitted;          /* bytes of G already emitted */
    sbuf out_text;           /* emitted (sanitised) text */
    double pending_lp;       /* log-prob of steps not yet emitted */
    int steps;
    int rounds, second_rounds, skipped_rounds, catchups, sessions_recreated;
    int lead_alone;          /* selective: steps the lead decided alone */
    int ctx_full;            /* a member's context is full: finish with "length" */
    /* speculative steps (ensemble_spec.c) */
    int spec;                /* on for this request */
    int n_draft;             /* drafted steps asked per call (adaptive) */
    int vdepth;              /* the members' answers are their drafts' [vdepth - 1]; 0 = the real ones */
    size_t piece_len[PROTO_MAX_STEPS + 1]; /* the committed pieces in the members' lag, in order */
    int n_pieces;
    proto_str piece_strs[PROTO_MAX_STEPS];
    int spec_drafted, spec_accepted;
    int drafter;             /* the drafting member (cfg.draft_member), -1 = each member drafts its own */
    int ask_draft;           /* the draft the next call asks: n_draft, or 0 while backing off */
    int asked_draft;         /* the draft the latest call asked (a re-answer asks it again) */
    int drafter_agreed;      /* the last step committed the drafter's first proposal */
    int idle, backoff;       /* calls left without a draft; the next backoff (after a walk that accepted nothing) */
    int accepted_mark;       /* spec_accepted when the last draft was asked */
    sbuf vp;                 /* the drafter's latest draft: its pieces, back to back */
    size_t vp_len[PROTO_MAX_DRAFT];
    int n_vp;
    int stopped;             /* callback asked to stop */
    int deadline_hit;        /* the request's deadline passed */
    int done;                /* no more steps */
    const char *finish;
    char err[256];
    int status;
    const char *code;        /* error code of a failure (static) */
};

/* ensemble.c, for ensemble_spec.c: member m's current answer (m->res) into
 * its top list, masses and END; n_asked candidates. 0, or -1 with why. */
int ensemble_absorb_answer(ensemble_gen *r, mstate *m, size_t n_asked, int first, int *ctx_full, char *why,
                           size_t whylen);

/* ensemble_spec.c: speculative steps (docs/STRATEGIES.md). */
/* Whether this request may and wants to use them: 0, or -1 with a 400
 * message (speculative_unsupported), -2 for an unknown draft member. */
int ensemble_spec_setup(ensemble_gen *r, char *err, size_t errlen);
/* Fills a state-changing call's draft (or draft_b64), steps_b64 and append
 * from the lag. */
void ensemble_spec_request(ensemble_gen *r, mstate *m, proto_step_req *q, int create);
/* Fills a re-answer's draft: the same kind as member m's latest call. */
void ensemble_spec_reask(ensemble_gen *r, mstate *m, proto_step_req *q);
/* The member that drafts first in a call to the members selected by sel
 * (the others then verify its draft), or -1: each drafts its own, or no
 * draft is asked. */
int ensemble_spec_drafter(const ensemble_gen *r, const int *sel);
/* Before the others' calls: the drafted pieces of the drafter (its index,
 * or -1: none, each member drafts its own), for them to verify. */
void ensemble_spec_pieces(ensemble_gen *r, int drafter);
/* After the others' calls: a drafting-only member called beside them (a
 * call that asked no draft) is read (its proposal, its statistics; never
 * absorbed), or left out when its call failed. */
void ensemble_spec_beside(ensemble_gen *r);
/* Whether member i, at weight 0, is this request's drafting member (it then
 * drafts only: mstate.drafting). */
int ensemble_spec_drafts_only(const ensemble_gen *r, size_t i);
/* The drafting member is left out for the rest of the request (down, or
 * its call failed): each member drafts its own. */
void ensemble_spec_drop_drafter(ensemble_gen *r, const char *why);
/* After a real round of state-changing calls: the lag is sent. */
void ensemble_spec_sent(ensemble_gen *r);
/* After a commit of the bytes G[from..): records the piece and, when every
 * member's draft continues with it, loads their next drafted answers (1);
 * 0: a real round is needed. */
int ensemble_spec_advance(ensemble_gen *r, size_t from);
/* After the decision chose: counts the step as accepted when it was decided
 * from drafted answers. */
void ensemble_spec_decided(ensemble_gen *r);

/* What the decision reads of each member (ensemble.c's decide_input). */
typedef struct {
    int active[CONSORT_MAX_MEMBERS], fresh[CONSORT_MAX_MEMBERS];
    double w[CONSORT_MAX_MEMBERS], end_lq[CONSORT_MAX_MEMBERS];
} decide_facts;

/* ensemble.c's step pieces, for the scoring path (ensemble_score.c), which
 * drives the same machinery with a forced choice: the candidate set from
 * round 1's answers; the decision's input; round 2 (missing masses); a
 * state-changing call to the members in sel (selective's catch-up); the
 * next round 1 (returns 1 when a member's context is full); the committed
 * bytes since `from` owed to every active member; one member's latest
 * answer absorbed (0, or -1 with why; *ctx_full for a full context). */
int ens_build_candidates(ensemble_gen *r);
decide_in ens_decide_input(const ensemble_gen *r, decide_facts *f);
void ens_fill_missing(ensemble_gen *r, const int *need, const int *only);
int ens_call_members(ensemble_gen *r, const int *sel, const vcand_set *ask);
int ens_step_round1(ensemble_gen *r);
int ens_owe_step(ensemble_gen *r, size_t from);
int ens_absorb_answer(ensemble_gen *r, mstate *m, size_t n_asked, int *ctx_full, char *why, size_t whylen);

/* ensemble_score.c: a member whose answers this step are inconsistent
 * (its outermost known prefix masses and END, or, when all are known, its
 * events, sum above 1: the canonical-tokenization approximation can give a
 * teacher-forced prefix mass larger than the class it lies in) has all its
 * masses of the step scaled so that both sums are at most 1. Generation
 * and the scoring path call it before every decision, so they decide on
 * the same masses (and invariant 7 holds). Returns how many were scaled. */
int ens_rescale_inconsistent(ensemble_gen *r);

/* ensemble_output.c: emits G[emitted, upto) (sanitised) to the callback with
 * the step's logprobs. */
int ensemble_emit(ensemble_gen *r, size_t upto, int chosen);
/* After a commit: emits what is safe (stop sequences, UTF-8 hold-back).
 * Returns 1 when a stop sequence ended the text (G is cut there). */
int ensemble_after_commit(ensemble_gen *r, int chosen);

#endif
