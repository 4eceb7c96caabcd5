/* coordinator/engine/ensemble_spec.c: speculative ensemble steps (greedy
 * and sampled).
 *
 * Why it is shaped so. Every committed step costs every member a round trip
 * (and the coordinator its I/O); when the members agree, most of those round
 * trips only confirm what a member already proposed. So every
 * state-changing call also asks for a draft (docs/PROTOCOL.md, "draft"):
 * the member takes n more steps along its own first proposal and answers
 * each, without committing them. The loop (ensemble.c) then decides the
 * next steps from those drafted answers instead of asking again, for as
 * long as every member's draft continues with exactly the piece the
 * ensemble committed. The decision itself does not change: it runs on
 * answers that are, by the protocol's contract, the very answers the
 * members would give to the same steps sent one by one. So the text is the
 * non-speculative text (to the KV cache's rounding), for any strategy whose
 * decision reads only the members' answers and the rng: mixture and solo.
 *
 * Sampling. A draft is a point mass on the member's first proposal x, and
 * the standard speculative rule for such a draft (accept x with probability
 * min(1, p(x)/1) = p(x); on rejection draw from (p - q)+ normalised, which
 * is p without x) is the same as: draw from the ensemble's own p at the
 * drafted state; if the draw is x, go on; else commit the draw and stop.
 * That is what the walk does, since the decision at a drafted state is the
 * real step's sampling decision. It is also the same seeded text, because
 * the rng stream is consumed as without speculation: one draw per
 * committed step, none by a decision that is abandoned at a drafted state
 * (when it needs a mass a draft lacks) and redone at the real state. The
 * decision draws only when it chooses, after every mass it needs is known
 * (ensemble_decide.c's combine_all; tests/unit/engine/test_decide.c checks
 * that asking for masses leaves the rng as it was, and ensemble.c asserts
 * it where a drafted decision is abandoned). A strategy that draws before
 * it asks (min_ppl_cross's proposals) would need its rng state restored
 * there; it is refused, with the other strategies, for now.
 *
 * A walk stops when a member's draft does not continue with the committed
 * piece, when the decision needs something a draft lacks (a missing mass:
 * a round 2 must run at the real state), when a carried candidate would have
 * to be asked, or when the drafts run out. The members' sessions are then
 * brought to the walked state in one call: the committed pieces since their
 * last call go as steps_b64 (each taken as its own step, so each member
 * absorbs or heals each piece exactly as it would have one call at a time)
 * and the last as append_b64. When sampling, every member proposes several
 * candidates, so a walk also stops more often: a sampled piece that a
 * longer candidate extends leaves a carried candidate, and members with
 * different tokenizers rarely list each other's proposals (missing masses).
 *
 * A drafting member (cfg.draft_member / the request's draft_member). A
 * member's own draft costs it a decode per drafted step, so alone it saves
 * round trips only. With a drafter, the drafter is called first and every
 * other member then verifies its pieces (draft_b64: the same steps, decoded
 * by the worker in one batch), so a slow member pays about one decode per
 * call instead of one per step. Each member keeps a copy of the pieces it
 * verified (mstate.v), and the walk follows, per member, the piece its own
 * drafted answers follow (its first proposal, or that copy): exactness
 * never depends on which pieces were drafted, only speed does. Sampling
 * is exact the same way (the drafter's draft is a point mass on its first
 * proposal; the walk goes on only when the draw is that piece).
 *
 * With a drafter, a call asks a draft only when the step before it
 * committed the drafter's own first proposal: on text the drafter
 * disagrees with, the others would verify its draft (a second round trip
 * and a batch) for nothing, and the drafter's own draft costs little.
 *
 * A drafter at weight 0 drafts only (mstate.drafting): ensemble.c opens
 * its session and owes it the committed text like a member's, and calls it
 * at every call (first and alone when the call asks a draft, else beside
 * the others: ensemble_spec_beside reads it), asked no candidates; its
 * answers are read here only (its pieces, its proposal, statistics), never
 * absorbed into a decision. The "committed the drafter's proposal" rule
 * holds for it as for a deciding drafter (drafter_answer: its latest
 * answer, or its drafted answer where the walk of its own draft is). A
 * failure leaves it out for the rest of the request.
 *
 * Backing off. A walk that accepts fewer than two steps means the draft
 * was decoded mostly for nothing (text the members disagree on); the next
 * 1, 2, 4, ... SPEC_BACKOFF_MAX calls then ask no draft, and a walk that
 * accepts two or more resets it. (A deterministic rule, so that the
 * statistics of a text do not depend on the machine's timing.)
 *
 * State (in ensemble_gen): spec, n_draft (adapted: doubled, up to the
 * protocol's 16, when a walk used every drafted answer; else the walk's
 * length + 1, at least 2), ask_draft / asked_draft / idle /
 * backoff (what the next and the latest call ask, the back-off),
 * drafter_agreed (the last step committed the drafter's proposal), vdepth
 * (which draft the members' current answers are), the committed pieces of
 * the lag, the drafter and its latest pieces (vp), and the counts reported
 * as acceptance statistics: drafted steps asked, and steps decided from
 * drafted answers (a drafted state whose decision is abandoned for a real
 * round is not one; so, for the same text and one round trip per call,
 * the round trips without speculation are those with it plus the accepted
 * steps; a drafter adds one round trip per call that asks a draft).
 *
 * What may change: drafts that are not point masses (a draft distribution
 * q would need the general rule, min(1, p/q) and the residual); a drafter
 * that drafts the next chunk while the others verify this one (pipelined);
 * carrying candidates into drafts; the other strategies once their
 * decisions are shown to draw the same way.
 */
#include "coordinator/engine/ensemble_internal.h"

#include "common/log.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define SPEC_DRAFT_START 4
#define SPEC_DRAFT_MIN 2
#define SPEC_BACKOFF_MAX 32
#define SPEC_PAYS 2 /* accepted steps from one draft below which drafting backs off */

int ensemble_spec_setup(ensemble_gen *r, char *err, size_t errlen) {
    int want = r->req->speculative ? r->req->speculative > 0 : r->e->cfg.speculative;
    r->spec = 0;
    r->drafter = -1;
    if (!want) return 0;
    if (r->st.kind != SSTRAT_MIXTURE && r->st.kind != SSTRAT_SOLO) {
        snprintf(err, errlen, "speculative steps are exact only for the mixture and solo strategies, not %s",
                 sstrat_name(r->st.kind));
        return -1;
    }
    const char *d = r->req->draft_member ? r->req->draft_member : r->e->cfg.draft_member;
    if (d[0] && (r->drafter = members_index(r->ms, d)) < 0) {
        snprintf(err, errlen, "draft_member '%s' is not a member", d);
        return -2;
    }
    r->spec = 1;
    r->n_draft = r->ask_draft = SPEC_DRAFT_START;
    r->backoff = 1;
    r->drafter_agreed = 1;
    return 0;
}

/* The drafting member, when it takes part, deciding or drafting only
 * (else each member drafts its own). */
static int active_drafter(const ensemble_gen *r) {
    return r->drafter >= 0 && (r->m[r->drafter].active || r->m[r->drafter].drafting) ? r->drafter : -1;
}

int ensemble_spec_drafts_only(const ensemble_gen *r, size_t i) { return r->spec && r->drafter == (int)i; }

void ensemble_spec_drop_drafter(ensemble_gen *r, const char *why) {
    if (r->drafter < 0) return;
    log_warn("request: drafting member '%s' left out (%s): each member drafts its own",
             members_name(r->ms, (size_t)r->drafter), why);
    r->m[r->drafter].drafting = 0;
    r->drafter = -1;
}

/* The draft the call being queued asks: none while backing off, nor, with a
 * drafter, when the ensemble did not commit the drafter's own proposal at
 * the last step (on text the drafter disagrees with, its draft would be
 * verified, at the price of a second round trip and a batch, for nothing). */
static int draft_now(const ensemble_gen *r) {
    return active_drafter(r) >= 0 && !r->drafter_agreed ? 0 : r->ask_draft;
}

int ensemble_spec_drafter(const ensemble_gen *r, const int *sel) {
    int d = active_drafter(r);
    return r->spec && draft_now(r) > 0 && d >= 0 && sel[d] ? d : -1;
}

/* A drafting-only member's answer to its latest call: read for its
 * statistics only (nothing else absorbs it), or, when the call failed, the
 * member is left out (a deciding drafter that fails fails as a member).
 * Returns the answer, or NULL. */
static const proto_step_res *read_drafting(ensemble_gen *r, mstate *d) {
    if (d->rc) {
        ensemble_spec_drop_drafter(r, d->perr.message);
        return NULL;
    }
    const proto_step_res *a = d->root;
    if (!d->prompt_tokens) d->prompt_tokens = a->n_past;
    d->decoded += a->decoded;
    for (size_t j = 0; j < a->n_draft; j++) d->decoded += a->draft[j].decoded;
    return a;
}

void ensemble_spec_pieces(ensemble_gen *r, int drafter) {
    mstate *d = drafter >= 0 ? &r->m[drafter] : NULL;
    const proto_step_res *a = !d ? NULL : d->drafting ? read_drafting(r, d) : d->rc ? NULL : d->root;
    r->vp.n = 0;
    r->n_vp = 0;
    for (size_t j = 0; a && j < a->n_draft; j++) { /* draft[j] follows the first proposal before it */
        const proto_step_res *prev = j ? &a->draft[j - 1] : a;
        if (prev->n_top == 0 || prev->top[0].s.n == 0 || sb_add(&r->vp, prev->top[0].s.p, prev->top[0].s.n)) break;
        r->vp_len[r->n_vp++] = prev->top[0].s.n;
    }
}

void ensemble_spec_beside(ensemble_gen *r) {
    int d = active_drafter(r);
    if (d < 0 || !r->m[d].drafting || !r->m[d].pending) return; /* (not called beside the others) */
    r->m[d].pending = 0;
    read_drafting(r, &r->m[d]);
}

/* Member m verifies the pieces it keeps (m->v) in q's draft_b64. */
static void ask_verify(mstate *m, proto_step_req *q) {
    size_t off = 0;
    for (int j = 0; j < m->n_v; j++) {
        m->v_strs[j] = (proto_str){(const unsigned char *)m->v.p + off, m->v_len[j]};
        off += m->v_len[j];
    }
    q->draft_steps = m->v_strs;
    q->n_draft_steps = (size_t)m->n_v;
}

/* The draft of a state-changing call: the drafter's own (draft: n); with a
 * drafter, the others verify its latest pieces (draft_b64, copied: the
 * member's drafted answers follow exactly these). */
static void ask_draft(ensemble_gen *r, mstate *m, proto_step_req *q) {
    m->verifying = 0;
    m->n_v = 0;
    int d = active_drafter(r);
    if (d < 0 || m == &r->m[d]) {
        q->draft = draft_now(r);
        return;
    }
    m->verifying = 1;
    m->v.n = 0;
    if (draft_now(r) > 0 && sb_add(&m->v, r->vp.p ? r->vp.p : "", r->vp.n) == 0) {
        memcpy(m->v_len, r->vp_len, (size_t)r->n_vp * sizeof *m->v_len);
        m->n_v = r->n_vp;
    }
    ask_verify(m, q);
}

void ensemble_spec_reask(ensemble_gen *r, mstate *m, proto_step_req *q) {
    if (!r->spec) return;
    if (m->verifying) ask_verify(m, q);
    else q->draft = r->asked_draft; /* (the re-answer replaces the one whose draft is walked) */
}

void ensemble_spec_request(ensemble_gen *r, mstate *m, proto_step_req *q, int create) {
    if (!r->spec) return;
    ask_draft(r, m, q);
    if (create || r->n_pieces < 2) return;
    size_t off = 0, owed = 0;
    for (int i = 0; i < r->n_pieces; i++) owed += r->piece_len[i];
    assert(m->lag.n == owed); /* (every member taking part, drafting-only too, is sent every committed piece) */
    for (int i = 0; i < r->n_pieces - 1; i++) {
        r->piece_strs[i] = (proto_str){(const unsigned char *)m->lag.p + off, r->piece_len[i]};
        off += r->piece_len[i];
    }
    assert(off < m->lag.n);
    q->steps = r->piece_strs;
    q->n_steps = (size_t)r->n_pieces - 1;
    q->append = (proto_str){(const unsigned char *)m->lag.p + off, m->lag.n - off};
}

/* After a real round of state-changing calls (which asked ask_draft): the
 * walk over the previous call's draft has ended (vdepth drafted answers
 * used). When that call asked a draft, adapt the next one to how far the
 * walk went, and back off while walks accept fewer than SPEC_PAYS steps
 * (text the members disagree on: the draft is decoded and mostly thrown
 * away; one accepted step does not pay for a drafter's call, a second
 * round trip and a verifying batch), asking no draft for 1, 2, 4, ...
 * SPEC_BACKOFF_MAX calls. */
void ensemble_spec_sent(ensemble_gen *r) {
    if (!r->spec) return;
    int asked = draft_now(r);
    r->spec_drafted += asked;
    if (r->asked_draft > 0) { /* (the previous call's draft, walked until now) */
        int n = r->vdepth >= r->n_draft ? 2 * r->n_draft : r->vdepth + 1;
        r->n_draft = n > PROTO_MAX_DRAFT ? PROTO_MAX_DRAFT : n < SPEC_DRAFT_MIN ? SPEC_DRAFT_MIN : n;
        if (r->spec_accepted - r->accepted_mark < SPEC_PAYS) {
            r->idle = r->backoff;
            r->backoff = r->backoff * 2 > SPEC_BACKOFF_MAX ? SPEC_BACKOFF_MAX : r->backoff * 2;
        } else {
            r->backoff = 1;
        }
    }
    r->asked_draft = asked;
    r->ask_draft = r->idle > 0 ? (r->idle--, 0) : r->n_draft;
    r->accepted_mark = r->spec_accepted;
    r->vdepth = 0;
    r->n_pieces = 0;
}

/* The piece member m's next drafted answer follows: the first proposal of
 * its current answer, or the drafter's piece it was asked to verify. */
static const proto_str *followed(const ensemble_gen *r, const mstate *m) {
    if (m->verifying) return r->vdepth < m->n_v ? &m->v_strs[r->vdepth] : NULL;
    return m->res && m->res->n_top > 0 ? &m->res->top[0].s : NULL;
}

/* Whether member m's current answer is followed, in its draft, by the
 * answer after appending exactly the piece p. */
static int draft_continues(const ensemble_gen *r, const mstate *m, const char *p, size_t n) {
    const proto_step_res *root = m->root;
    const proto_str *next = followed(r, m);
    return root && next && r->vdepth < (int)root->n_draft && next->n == n && memcmp(next->p, p, n) == 0;
}

/* The drafter's answer at the state the walk is at, whose first proposal
 * is the drafter's own: a deciding drafter's current answer; for a
 * drafting-only member (called at every call, never walked), its latest
 * call's answer, or, vdepth steps into the walk of its own draft, the
 * drafted answer there (NULL when not known). */
static const proto_step_res *drafter_answer(const ensemble_gen *r) {
    const mstate *d = &r->m[r->drafter];
    if (!d->drafting) return d->res;
    const proto_step_res *a = d->root;
    if (!a || r->vdepth == 0) return a;
    return (size_t)r->vdepth <= a->n_draft ? &a->draft[r->vdepth - 1] : NULL;
}

int ensemble_spec_advance(ensemble_gen *r, size_t from) {
    if (!r->spec) return 0;
    size_t n = r->g.n - from;
    if (active_drafter(r) >= 0) { /* (before the walk moves the answers on) */
        const proto_step_res *a = drafter_answer(r);
        r->drafter_agreed = a && a->n_top > 0 && a->top[0].s.n == n && memcmp(a->top[0].s.p, r->g.p + from, n) == 0;
    }
    if (r->n_pieces > PROTO_MAX_STEPS) return 0; /* (cannot happen: drafts are shorter) */
    r->piece_len[r->n_pieces++] = n;
    if (r->carry.n) return 0;
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active && !draft_continues(r, &r->m[i], r->g.p + from, n)) return 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->active) continue;
        m->res = &m->root->draft[r->vdepth];
        vcand_clear(&m->asked);
        char why[256];
        int ctx_full = 0;
        if (ensemble_absorb_answer(r, m, 0, 0, &ctx_full, why, sizeof why)) return 0; /* a real round decides */
        m->fresh = 1;
    }
    r->vdepth++; /* (counted as accepted once the decision there chooses: ensemble_spec_decided) */
    return 1;
}

void ensemble_spec_decided(ensemble_gen *r) { r->spec_accepted += r->vdepth > 0; }
