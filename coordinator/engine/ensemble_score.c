/* coordinator/engine/ensemble_score.c: scoring a given text through
 * generation's own steps (ensemble_score_text, contract in ensemble.h).
 *
 * Why through the engine. `consort ppl` used to score ensembles on units
 * built from each member's token scores, which can only express rules
 * that are functions of whole-unit probabilities: a step-level mixture,
 * product, pool or selective is none of those (their distributions depend
 * on the step's candidate set, the members' own token paths and REST). So
 * this file drives the very machinery generation runs (ensemble.c's
 * sessions, rounds, candidate set and ensemble_decide()) on the true
 * text, and only replaces the sampled choice with a forced one: the
 * longest positive candidate that the text starts with, or REST and the
 * tail rule where the text leaves every listed event. Whatever a strategy
 * computes for generation is, by construction, what is scored here.
 *
 * The tail rule, and why the result is a proper (sub-)distribution over
 * texts. Let P+ be the step's candidates with positive probability.
 * Texts are grouped by their forced step: a candidate c (probability
 * dist[c], then the rest of the text scored from G + c by a
 * sub-distribution), or REST. A text in REST starts with no member of P+;
 * its piece u (the shortest prefix that is not a prefix of any member of
 * P+) is scored REST * M(u) / M(R+), where M is the step's mixture of the
 * members' prefix masses and M(R+) = 1 - M(END) - sum of M over P+'s
 * roots. The pieces u of different texts are never prefixes of one
 * another and never overlap a P+ candidate, so their M sum to at most
 * M(R+): the tail is a sub-distribution inside REST. At the end of a text
 * (its rest a proper prefix of some c in P+), the score is the
 * probability that the next bytes start with the rest: the events that
 * extend it plus REST's share of M(rest) outside P+. Summed over every
 * text of one length the scores are therefore at most 1
 * (docs/EVALUATION.md, "Scoring through the steps"). One path is scored
 * per text (the longest-match segmentation): other step sequences that
 * produce the same bytes are not summed, so the figure is a lower bound of
 * the process's probability of the text (pessimistic bits per byte).
 *
 * State: one scorer per call, on the stack: the generation (sessions,
 * candidates, G = the text scored so far), the position in the text, each
 * member's window start. What may change: the tail rule (it only has to
 * stay a sub-distribution inside REST), the window policy.
 */
#include "coordinator/engine/ensemble_internal.h"

#include "common/clock.h"
#include "common/log.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REOPENS 8

typedef struct {
    ensemble_gen *g;
    const ensemble_score_request *q;
    ensemble_score_result *out;
    size_t pos;                            /* bytes of the text committed (= G's length) */
    size_t win[CONSORT_MAX_MEMBERS];       /* each member's window start in G */
    int started[CONSORT_MAX_MEMBERS];      /* taking part when the scoring began */
    char base_id[CONSORT_MAX_MEMBERS][PROTO_SESSION_MAX + 1];
    unsigned reopens;
    size_t *ends[CONSORT_MAX_MEMBERS];     /* each member's canonical token ends in the text, ascending */
    size_t n_ends[CONSORT_MAX_MEMBERS];
    double *ev;                            /* scratch: one member's events */
    size_t ev_cap;
    double *evm;                           /* every step member's events, for on_step */
    size_t evm_cap;
    double rpart[CONSORT_MAX_MEMBERS], rmass[CONSORT_MAX_MEMBERS]; /* the latest tail's R_m(u), rest_m */
} scorer;

static int ignore_chunk(void *ud, const ensemble_chunk *c) {
    (void)ud;
    (void)c;
    return 0;
}

static int fail(scorer *s, int status, const char *msg) {
    if (!s->out->status) {
        s->out->status = status;
        snprintf(s->out->error, sizeof s->out->error, "%.250s", msg);
    }
    return -1;
}

/* A member that took part and was dropped fails the scoring: renormalising
 * over the others would score a different rule. */
static int members_lost(scorer *s) {
    ensemble_gen *r = s->g;
    for (size_t i = 0; i < r->nm; i++)
        if (s->started[i] && r->m[i].failed) {
            char msg[256];
            snprintf(msg, sizeof msg, "member '%s' failed: %s", members_name(r->ms, i), r->m[i].failure);
            return fail(s, 503, msg);
        }
    return 0;
}

static int context_full(const mstate *m) {
    return m->active && !m->fresh && m->rc && !strcmp(m->perr.code, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED);
}

/* Where member i's next window starts: half-way through its current one,
 * moved forward to a space or newline (a word start), else to a UTF-8
 * character boundary. */
static size_t next_window(const scorer *s, size_t i) {
    const sbuf *g = &s->g->g;
    size_t s0 = s->win[i], n = g->n, mid = s0 + (n - s0) / 2, cut = mid;
    while (cut < n && g->p[cut] != ' ' && g->p[cut] != '\n') cut++;
    if (cut < n) return cut;
    cut = mid;
    while (cut < n && ((unsigned char)g->p[cut] & 0xC0) == 0x80) cut++;
    return cut;
}

/* The strings of a candidate set as the protocol's byte strings (malloc'ed). */
static proto_str *strs_of(const vcand_set *cs) {
    proto_str *v = malloc((cs->n ? cs->n : 1) * sizeof *v);
    for (size_t j = 0; v && j < cs->n; j++) v[j] = (proto_str){(const unsigned char *)vcand_str(cs, j), cs->len[j]};
    return v;
}

/* One call that opens a new session for member i on its window of G (the
 * prompt "" stands for its document-start token), asking `ask`. 0, 1 when
 * the window is still too long, -1 on error. */
static int open_window(scorer *s, size_t i, const vcand_set *ask) {
    ensemble_gen *r = s->g;
    mstate *m = &r->m[i];
    member_close(m->s, r->round);
    member_round_run(r->round);
    member_session_free(m->s);
    char id[PROTO_SESSION_MAX + 1];
    snprintf(id, sizeof id, "%.48s-w%u", s->base_id[i], ++s->reopens);
    m->s = member_open(r->ms, i, id, r->step_timeout);
    proto_str *cands = strs_of(ask);
    if (!m->s || !cands) {
        free(cands);
        return fail(s, 500, "out of memory");
    }
    proto_step_req q;
    memset(&q, 0, sizeof q);
    q.session = m->s->id;
    q.k = r->k_ask;
    q.prompt = "";
    q.append = (proto_str){(const unsigned char *)r->g.p + s->win[i], r->g.n - s->win[i]};
    q.cands = cands;
    q.n_cands = ask->n;
    int rc = m->s->ops->step(m->s, &q, r->round);
    if (!rc) {
        member_round_run(r->round);
        m->rc = m->s->ops->step_result(m->s, &m->res, &m->perr);
    }
    free(cands);
    if (rc) return fail(s, 500, "out of memory");
    char why[256];
    int full = 0;
    if (ens_absorb_answer(r, m, ask->n, &full, why, sizeof why)) return full ? 1 : fail(s, 502, why);
    vcand_clear(&m->asked);
    for (size_t j = 0; j < ask->n; j++)
        if (vcand_add(&m->asked, vcand_str(ask, j), ask->len[j], -1) < 0) return fail(s, 500, "out of memory");
    m->fresh = 1;
    m->pending = 0;
    m->lag.n = 0;
    return 0;
}

/* Every member whose context was full gets a new window (halved until it
 * fits). */
static int reopen_full(scorer *s, const vcand_set *ask) {
    ensemble_gen *r = s->g;
    for (size_t i = 0; i < r->nm; i++) {
        if (!context_full(&r->m[i])) continue;
        int st = 1;
        for (int k = 0; st == 1 && k < MAX_REOPENS; k++) {
            s->win[i] = next_window(s, i);
            st = open_window(s, i, ask);
        }
        if (st) return st < 0 ? -1 : fail(s, 400, "a member's context cannot hold even a short window of the text");
        s->out->windows++;
    }
    r->ctx_full = 0;
    return 0;
}

/* 1 when member i gave a mass for every candidate (its events are then
 * exact; before that an unknown child counts as 0 and the sum means nothing). */
static int all_known(const ensemble_gen *r, size_t i) {
    for (size_t c = 0; c < r->cand.n; c++)
        if (isnan(r->lq[i * r->mat_cap + c])) return 0;
    return 1;
}

/* 1 if some proper prefix of candidate c has a known mass in member i's row. */
static int known_ancestor(const ensemble_gen *r, size_t i, size_t c) {
    for (int a = r->cand.parent[c]; a >= 0; a = r->cand.parent[a])
        if (!isnan(r->lq[i * r->mat_cap + (size_t)a])) return 1;
    return 0;
}

int ens_rescale_inconsistent(ensemble_gen *r) {
    int k = 0;
    size_t n = r->cand.n;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->active || !m->fresh) continue;
        double *lq = r->lq + i * r->mat_cap, *lp = r->lp + i * r->mat_cap;
        double outer = exp(m->end_lq), events = 0;
        for (size_t c = 0; c < n; c++)
            if (!isnan(lq[c]) && !known_ancestor(r, i, c)) outer += exp(lq[c]);
        if (all_known(r, i)) {
            sstrat_events_own(n, r->cand.parent, lq, lp, m->end_lq, r->buf.work);
            for (size_t e = 0; e <= n; e++) events += r->buf.work[e];
        }
        double sum = outer > events ? outer : events;
        if (!(sum > 1 + 1e-9)) continue;
        if (sum > 1 + 1e-3 && !m->warned_mass) { /* beyond rounding: say so, once per request */
            m->warned_mass = 1;
            log_warn("request: member '%s' gave masses summing to %.6g > 1; scaled down", members_name(r->ms, i), sum);
        }
        double d = isfinite(sum) ? log(sum) : INFINITY;
        for (size_t c = 0; c < n; c++) {
            lq[c] -= d;
            lp[c] -= d;
        }
        m->end_lq -= d;
        k++;
    }
    return k;
}

/* The step's distribution (r->buf.dist over cand.n + 1 events) by the
 * strategy's own decision, with every I/O it asks for. */
static int decide_all(scorer *s) {
    ensemble_gen *r = s->g;
    decide_memo_reset(&r->memo);
    for (;;) {
        s->out->rescaled += ens_rescale_inconsistent(r);
        decide_facts f;
        decide_in in = ens_decide_input(r, &f);
        in.no_round_skip = 1;
        decision d = ensemble_decide(&in, &r->buf, &r->memo, &r->rng);
        if (members_lost(s)) return -1;
        if (d.kind == DECIDE_CHOICE) return 0;
        if (d.kind == DECIDE_MASSES) {
            ens_fill_missing(r, d.need, d.only);
            continue;
        }
        int full = ens_call_members(r, d.need, &r->cand);
        if (full < 0) return fail(s, r->status ? r->status : 500, r->err[0] ? r->err : "member call failed");
        if (full > 0 && reopen_full(s, &r->cand)) return -1;
        if (ens_build_candidates(r)) return fail(s, 500, "out of memory");
    }
}

/* ---- who takes part in the step, and what each member's events are ------------ */

/* selective with its lead sure: the step's distribution is the lead's own
 * view over its proposals (ensemble_decide.c), and the others were not asked. */
static int lead_alone(const ensemble_gen *r) {
    return r->st.kind == SSTRAT_SELECTIVE && r->m[r->lead].active && !r->memo.lead_unsure;
}

/* The members that answered this step with a positive weight, their
 * weights renormalised into w. Returns how many. */
static size_t step_members(const ensemble_gen *r, double *w) {
    double sum = 0;
    size_t k = 0;
    for (size_t i = 0; i < r->nm; i++) {
        const mstate *m = &r->m[i];
        int in = lead_alone(r) ? i == r->lead : m->active && m->fresh && r->buf.wn[i] > 0;
        w[i] = in ? (lead_alone(r) ? 1 : r->buf.wn[i]) : 0;
        sum += w[i];
        k += w[i] > 0;
    }
    for (size_t i = 0; i < r->nm && sum > 0; i++) w[i] /= sum;
    return k;
}

static int has_path(const ensemble_gen *r, size_t i, size_t c) { return !isnan(r->lp[i * r->mat_cap + c]); }

/* 1 if d lies strictly below c in the candidate tree. */
static int below(const vcand_set *cs, size_t d, size_t c) {
    for (int a = cs->parent[d]; a >= 0; a = cs->parent[a])
        if ((size_t)a == c) return 1;
    return 0;
}

/* Is candidate c member i's own token path in this step's events? (the rule
 * of sstrat_events_own: c and every listed extension carry a path
 * probability; with selective's lead alone, every proposal of the lead) */
static int own_path(const ensemble_gen *r, size_t i, size_t c) {
    if (!has_path(r, i, c)) return 0;
    if (lead_alone(r)) return (r->cand.proposers[c] >> i) & 1u;
    for (size_t d = 0; d < r->cand.n; d++)
        if (below(&r->cand, d, c) && !has_path(r, i, d)) return 0;
    return 1;
}

/* Is c one of member i's events this step? (with the lead alone: its proposals) */
static int is_event_of(const ensemble_gen *r, size_t i, size_t c) {
    return !lead_alone(r) || ((r->cand.proposers[c] >> i) & 1u);
}

static int ensure_ev(scorer *s, size_t ne) {
    if (ne <= s->ev_cap) return 0;
    double *p = realloc(s->ev, ne * sizeof *p);
    if (!p) return fail(s, 500, "out of memory");
    s->ev = p;
    s->ev_cap = ne;
    return 0;
}

/* Member i's events this step into s->ev (cand.n + 1 values, END last). */
static int member_events(scorer *s, size_t i) {
    ensemble_gen *r = s->g;
    size_t n = r->cand.n, ne = n + 1;
    if (ensure_ev(s, ne)) return -1;
    if (lead_alone(r)) memcpy(s->ev, r->buf.own + i * (r->mat_cap + 1), ne * sizeof *s->ev);
    else sstrat_events_own(n, r->cand.parent, r->lq + i * r->mat_cap, r->lp + i * r->mat_cap, r->m[i].end_lq, s->ev);
    return 0;
}

/* ---- the forced choice ------------------------------------------------------------ */

static int is_end_of_token(const scorer *s, size_t i, size_t at) {
    size_t lo = 0, hi = s->n_ends[i];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->ends[i][mid] < at) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n_ends[i] && s->ends[i][lo] == at;
}

/* Candidate c is consistent with the text: every member of the step for
 * which c is its own token path has a token of its canonical tokenization
 * of the text ending where c ends (otherwise that member's event is "my
 * next token is c", which the text is not in). */
static int consistent(const scorer *s, const double *w, size_t c) {
    const ensemble_gen *r = s->g;
    size_t end = s->pos + r->cand.len[c];
    for (size_t i = 0; i < r->nm; i++)
        if (w[i] > 0 && own_path(r, i, c) && !is_end_of_token(s, i, end)) return 0;
    return 1;
}

/* The longest candidate with positive probability, consistent with the
 * text, that rest starts with; -1 when none. */
static int forced_event(const scorer *s, const double *w, const char *rest, size_t rl) {
    const ensemble_gen *r = s->g;
    int best = -1;
    for (size_t c = 0; c < r->cand.n; c++) {
        size_t l = r->cand.len[c];
        if (!(r->buf.dist[c] > 0) || l > rl || memcmp(vcand_str(&r->cand, c), rest, l)) continue;
        if (best >= 0 && l <= r->cand.len[best]) continue;
        if (consistent(s, w, c)) best = (int)c;
    }
    return best;
}

/* ---- REST and the tail ------------------------------------------------------------ */

/* Common prefix length of a and b. */
static size_t lcp(const char *a, size_t na, const char *b, size_t nb) {
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

static int starts_with(const char *a, size_t na, const char *b, size_t nb) {
    return na >= nb && !memcmp(a, b, nb);
}

/* Member i's mass of "the next bytes start with u" that lies in its REST
 * (none of its listed events): 0 when u lies inside one of its non-empty
 * prefix-class events (the longest of its event candidates that is a proper
 * prefix of u is not its own token path); else its prefix mass of u minus
 * its events that extend u. ev: its events (member_events). */
static double rest_part(const scorer *s, size_t i, const double *ev, const char *u, size_t ul, double qu) {
    const ensemble_gen *r = s->g;
    int inside = -1;
    double ext = 0;
    for (size_t c = 0; c < r->cand.n; c++) {
        if (!is_event_of(r, i, c)) continue;
        const char *cs = vcand_str(&r->cand, c);
        size_t cl = r->cand.len[c];
        if (cl < ul && starts_with(u, ul, cs, cl)) {
            if (inside < 0 || cl > r->cand.len[inside]) inside = (int)c;
        } else if (starts_with(cs, cl, u, ul)) {
            ext += ev[c];
        }
    }
    /* (a prefix-class event the canonical-tokenization approximation left
     * empty, its children's masses exceeding its own, holds nothing: the
     * piece's mass then counts as REST) */
    if (inside >= 0 && !own_path(r, i, (size_t)inside) && ev[inside] > 0) return 0;
    return qu > ext ? qu - ext : 0;
}

/* The first position >= from where a token of every step member's
 * canonical tokenization ends (the end of the text at the latest). */
static size_t next_common_end(const scorer *s, const double *w, size_t from) {
    const ensemble_gen *r = s->g;
    size_t len = s->q->len;
    for (size_t at = from; at < len; at++) {
        int all = 1;
        for (size_t i = 0; i < r->nm && all; i++)
            if (w[i] > 0 && !is_end_of_token(s, i, at)) all = 0;
        if (all) return at;
    }
    return len;
}

/* Each step member's prefix mass of u (a candidates-only call: no state
 * change, the same k, so the member's own entries stay its latest answer). */
static int ask_piece(scorer *s, const double *w, const char *u, size_t ul, double *q) {
    ensemble_gen *r = s->g;
    proto_str piece = {(const unsigned char *)u, ul};
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = 0;
        q[i] = 0;
        if (!(w[i] > 0)) continue;
        proto_step_req req;
        memset(&req, 0, sizeof req);
        req.session = m->s->id;
        req.k = r->k_ask;
        req.cands = &piece;
        req.n_cands = 1;
        if (m->s->ops->step(m->s, &req, r->round)) return fail(s, 500, "out of memory");
        m->pending = 1;
    }
    member_round_run(r->round);
    s->out->rounds++;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        m->pending = 0;
        m->rc = m->s->ops->step_result(m->s, &m->res, &m->perr);
        if (m->rc || m->res->n_cands != 1) {
            char msg[256];
            snprintf(msg, sizeof msg, "member '%s': %s", members_name(r->ms, i),
                     m->rc ? m->perr.message : "no answer for the tail piece");
            return fail(s, 502, msg);
        }
        q[i] = exp(m->res->cand_logq[0]);
        vcand_clear(&m->asked); /* its candidate answers now belong to this call */
    }
    return 0;
}

static double clip01(double x) { return x > 1 ? 1 : x > 0 ? x : 0; }

/* REST and the tail rule for the text's rest (no consistent positive
 * candidate is a prefix of it): *p the probability, *take the bytes to
 * commit. u = rest up to one byte past its longest common prefix with a
 * positive candidate (so the pieces of different texts are never prefixes
 * of one another); at the end of the text, when all of the rest is a
 * proper prefix of a positive candidate, u = the rest and the events that
 * extend it count too. The tail: REST * M_R(u) / M_R, M_R(u) the step
 * members' REST-part of u (rest_part), M_R their REST mass. */
static int tail(scorer *s, const double *w, const char *rest, size_t rl, double *p, size_t *take) {
    ensemble_gen *r = s->g;
    size_t n = r->cand.n, j = 0;
    for (size_t c = 0; c < n; c++)
        if (r->buf.dist[c] > 0) {
            size_t k = lcp(rest, rl, vcand_str(&r->cand, c), r->cand.len[c]);
            if (k > j) j = k;
        }
    int at_end = j >= rl;
    size_t ul = at_end ? rl : next_common_end(s, w, s->pos + j + 1) - s->pos;
    double qu[CONSORT_MAX_MEMBERS];
    if (ask_piece(s, w, rest, ul, qu)) return -1;
    double mu = 0, z = 0, events = 0;
    for (size_t i = 0; i < r->nm; i++) {
        s->rpart[i] = s->rmass[i] = 0;
        if (!(w[i] > 0)) continue;
        if (member_events(s, i)) return -1;
        double listed = 0;
        for (size_t e = 0; e <= n; e++) listed += s->ev[e];
        s->rmass[i] = listed < 1 ? 1 - listed : 0;
        s->rpart[i] = rest_part(s, i, s->ev, rest, ul, qu[i]);
        z += w[i] * s->rmass[i];
        mu += w[i] * s->rpart[i];
    }
    if (at_end)
        for (size_t c = 0; c < n; c++)
            if (r->buf.dist[c] > 0 && starts_with(vcand_str(&r->cand, c), r->cand.len[c], rest, rl)) {
                events += r->buf.dist[c];
                for (size_t i = 0; i < r->nm; i++) /* for on_step: the mixture's view of the same set */
                    if (w[i] > 0 && !member_events(s, i)) s->rpart[i] += s->ev[c];
            }
    double share = z > 0 ? clip01(mu / z) : (mu > 0 ? 1 : 0);
    *p = events + sstrat_rest(n + 1, r->buf.dist) * share;
    *take = ul;
    return 0;
}

/* G grows by the text's next `len` bytes; the candidates extending them are
 * carried; unless the text is done, the next round 1. */
static int commit_text(scorer *s, size_t len) {
    ensemble_gen *r = s->g;
    const char *b = s->q->text + s->pos;
    size_t from = r->g.n;
    if (sb_add(&r->g, b, len)) return fail(s, 500, "out of memory");
    s->pos += len;
    r->steps++;
    vcand_clear(&r->next_carry);
    vcand_carry(&r->cand, b, len, &r->next_carry);
    vcand_set tmp = r->carry;
    r->carry = r->next_carry;
    r->next_carry = tmp;
    if (s->pos >= s->q->len) return 0;
    if (ens_owe_step(r, from)) return fail(s, 500, "out of memory");
    int full = ens_step_round1(r);
    if (full < 0) return fail(s, r->status ? r->status : 500, r->err[0] ? r->err : "member call failed");
    if (full > 0 && reopen_full(s, &r->carry)) return -1;
    return members_lost(s);
}

/* The step's detail for on_step: every step member's events. */
static int step_detail(scorer *s, const double *w, ensemble_score_step *st, int event) {
    ensemble_gen *r = s->g;
    size_t ne = r->cand.n + 1, need = r->nm * ne;
    if (need > s->evm_cap) {
        double *p = realloc(s->evm, need * sizeof *p);
        if (!p) return fail(s, 500, "out of memory");
        s->evm = p;
        s->evm_cap = need;
    }
    for (size_t i = 0; i < r->nm; i++) {
        double *row = s->evm + i * ne;
        if (!(w[i] > 0)) {
            memset(row, 0, ne * sizeof *row);
            continue;
        }
        if (member_events(s, i)) return -1;
        memcpy(row, s->ev, ne * sizeof *row);
    }
    st->n_members = r->nm;
    st->n_events = ne;
    st->ev = s->evm;
    st->event = event;
    st->rest_part = st->rest ? s->rpart : NULL;
    st->rest_mass = st->rest ? s->rmass : NULL;
    return 0;
}

static int score_step(scorer *s) {
    ensemble_gen *r = s->g;
    if (ens_build_candidates(r)) return fail(s, 500, "out of memory");
    if (decide_all(s)) return -1;
    const char *rest = s->q->text + s->pos;
    size_t rl = s->q->len - s->pos;
    ensemble_score_step st;
    memset(&st, 0, sizeof st);
    st.from = s->pos;
    double w[CONSORT_MAX_MEMBERS];
    if (!step_members(r, w)) return fail(s, 503, "no member answered the step");
    int c = forced_event(s, w, rest, rl);
    double p;
    if (c >= 0) {
        p = r->buf.dist[c];
        st.len = r->cand.len[c];
    } else {
        if (tail(s, w, rest, rl, &p, &st.len)) return -1;
        st.rest = 1;
        s->out->rest_steps++;
    }
    st.logprob = log(p);
    if (log_enabled(LOG_DEBUG)) {
        log_debug("score: at %zu %s \"%.*s\" logp %.4f (REST %.4f)", s->pos, st.rest ? "REST" : "event", (int)st.len,
                  rest, st.logprob, sstrat_rest(r->cand.n + 1, r->buf.dist));
        for (size_t c = 0; !isfinite(st.logprob) && c <= r->cand.n; c++) {
            char line[400];
            int o = snprintf(line, sizeof line, "  cand %zu \"%.*s\" parent %d p %.5f |", c, c < r->cand.n ? (int)r->cand.len[c] : 5,
                             c < r->cand.n ? vcand_str(&r->cand, c) : "<END>", c < r->cand.n ? r->cand.parent[c] : -1, r->buf.dist[c]);
            for (size_t i = 0; i < r->nm && o < 300; i++)
                o += snprintf(line + o, sizeof line - (size_t)o, " q%zu %.5f lp %.5f", i,
                              c < r->cand.n ? exp(r->lq[i * r->mat_cap + c]) : exp(r->m[i].end_lq),
                              c < r->cand.n ? exp(r->lp[i * r->mat_cap + c]) : NAN);
            log_debug("%s", line);
        }
    }
    s->out->logprob += st.logprob;
    s->out->steps++;
    if (s->q->on_step && step_detail(s, w, &st, c)) return -1;
    if (s->q->on_step && s->q->on_step(s->q->ud, &st)) return fail(s, 500, "stopped by the caller");
    return commit_text(s, st.len);
}

/* Refuses the rules that have no distribution to score. */
static int scorable(ensemble *e, const char *strategy, char *err, size_t errlen) {
    sstrat st;
    if (ensemble_strategy_valid(e, strategy, err, errlen)) return 0;
    sstrat_parse(strategy, &st, err, errlen);
    if (st.kind == SSTRAT_MIN_PPL || st.kind == SSTRAT_MIN_PPL_CROSS) {
        snprintf(err, errlen, "strategy '%s' chooses among the members' proposals and has no distribution to score",
                 strategy);
        return 0;
    }
    return 1;
}

/* Each member's canonical tokenization of the text (its POST /v1/score
 * spans, concurrently): where its tokens end. */
static int fetch_token_ends(scorer *s) {
    ensemble_gen *r = s->g;
    proto_score_req q = {s->q->text, s->q->len, 1};
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = m->active && m->s->ops->score(m->s, &q, r->round) == 0;
        if (m->active && !m->pending) return fail(s, 500, "out of memory");
    }
    member_round_run(r->round);
    s->out->rounds++;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        m->pending = 0;
        const proto_score_res *res;
        proto_error err;
        if (m->s->ops->score_result(m->s, &res, &err)) {
            char msg[512];
            snprintf(msg, sizeof msg, "member '%s': %s: %.200s", members_name(r->ms, i), PROTO_PATH_SCORE, err.message);
            return fail(s, err.status ? err.status : 502, msg);
        }
        s->ends[i] = malloc((res->n_tokens ? res->n_tokens : 1) * sizeof *s->ends[i]);
        if (!s->ends[i]) return fail(s, 500, "out of memory");
        for (size_t t = 0; t < res->n_tokens; t++) {
            size_t e = res->tokens[t].end;
            if (!s->n_ends[i] || e > s->ends[i][s->n_ends[i] - 1]) s->ends[i][s->n_ends[i]++] = e;
        }
    }
    return 0;
}

static int begin_scorer(scorer *s) {
    ensemble_gen *r = s->g;
    for (size_t i = 0; i < r->nm; i++) {
        s->started[i] = r->m[i].active;
        if (r->m[i].s) snprintf(s->base_id[i], sizeof s->base_id[i], "%s", r->m[i].s->id);
    }
    return s->q->len ? fetch_token_ends(s) : 0;
}

static void free_scorer(scorer *s) {
    for (size_t i = 0; i < CONSORT_MAX_MEMBERS; i++) free(s->ends[i]);
    free(s->ev);
    free(s->evm);
}

int ensemble_score_text(ensemble *e, const ensemble_score_request *q, ensemble_score_result *out) {
    memset(out, 0, sizeof *out);
    double t0 = clock_mono_s();
    const char *strategy = q->strategy && *q->strategy ? q->strategy : e->cfg.strategy;
    char err[256];
    if (!q->text && q->len) return snprintf(out->error, sizeof out->error, "no text"), out->status = 400, -1;
    if (!scorable(e, strategy, err, sizeof err)) return snprintf(out->error, sizeof out->error, "%s", err), out->status = 400, -1;
    ensemble_request req;
    memset(&req, 0, sizeof req);
    req.prompt = q->context ? q->context : "";
    req.max_tokens = INT_MAX;
    req.temperature = 1;
    req.top_p = 1;
    req.speculative = -1; /* one real step at a time: the forced choice is not a drafted one */
    req.has_seed = 1;
    req.seed = 1;
    req.strategy = strategy;
    req.weights = q->weights;
    req.n_weights = q->n_weights;
    ensemble_result res;
    ensemble_gen *g = ensemble_begin(e, &req, ignore_chunk, NULL, &res);
    scorer s = {.g = g, .q = q, .out = out};
    int rc = g && !g->done && !res.status ? 0 : -1;
    if (!rc) rc = begin_scorer(&s);
    if (!rc && g->ctx_full && reopen_full(&s, &g->carry)) rc = -1;
    while (!rc && s.pos < q->len) rc = score_step(&s);
    if (g) {
        out->rounds += g->rounds;
        g->stopped = 1; /* nothing to emit */
    }
    ensemble_end(g);
    if (rc && !out->status) {
        out->status = res.status ? res.status : 500;
        snprintf(out->error, sizeof out->error, "%s", res.error[0] ? res.error : "scoring failed");
    }
    ensemble_result_free(&res);
    free_scorer(&s);
    out->bytes = s.pos;
    out->seconds = clock_mono_s() - t0;
    return rc;
}
