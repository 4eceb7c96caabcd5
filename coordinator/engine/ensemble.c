/* coordinator/engine/ensemble.c: the generation loop (see ensemble.h).
 *
 * Shape. A request is an ensemble_gen (ensemble_internal.h) driven by
 * ensemble_begin / ensemble_step / ensemble_end; ensemble_generate is the
 * three-line loop over them. Each step:
 *   1. round 1 (sent at the end of the previous step, or by begin for the
 *      prompt): one step call per active member, all at once, carrying the
 *      bytes committed since the member was last asked (its lag) and the
 *      previous step's candidates that extend them;
 *   2. the candidate set = union of the members' top proposals + the carried
 *      ones; each member's mass for them comes from its top list or from its
 *      candidate answers (lq, NAN where unknown);
 *   3. the decision (ensemble_decide.c, pure) picks an event or names what
 *      it still needs: missing masses (round 2: candidates only, no state
 *      change) or, for selective, the lagging members' catch-up; this file
 *      does that I/O and asks again;
 *   4. commit: G grows by the chosen candidate, the safe part of G goes to
 *      the caller (ensemble_output.c), the next round 1 is sent.
 *
 * State. The ensemble owns its configuration and a pool of rounds (a round
 * keeps its keep-alive connections between requests); it is shared by every
 * request and only the pool is locked. Each request owns its generation:
 * one member session per active member (member.h), the candidate set and
 * the matrices, the rng, G and the emitted text. Many requests run at once
 * on one ensemble, each on its own thread, each with its own sessions.
 *
 * What may change: the strategies (sampler/ and ensemble_decide.c), a new
 * kind of member (member.h; nothing here), the number of proposals per
 * member. What must not: one committed candidate per step, G the same for
 * every member, a member dropped for the rest of a request when it fails.
 */
#include "coordinator/engine/ensemble_internal.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/rng.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_K_PROP 8

/* strncpy-like copy that always terminates (and keeps -Wformat-truncation quiet). */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}


/* ---- the ensemble ---------------------------------------------------------- */

static int check_strategy(const member_set *ms, const char *strategy, sstrat *st, char *err, size_t errlen) {
    if (sstrat_parse(strategy, st, err, errlen)) return -1;
    if (st->kind == SSTRAT_SOLO && members_index(ms, st->solo) < 0) {
        snprintf(err, errlen, "strategy %s: no member named '%s'", strategy, st->solo);
        return -1;
    }
    return 0;
}

static int check_default_weights(ensemble *e, const double *w, char *err, size_t errlen) {
    double s = 0;
    for (size_t i = 0; i < e->nm; i++) {
        e->weights[i] = w ? w[i] : 1.0;
        if (!(e->weights[i] >= 0) || !isfinite(e->weights[i])) {
            snprintf(err, errlen, "weights must be finite and non-negative");
            return -1;
        }
        s += e->weights[i];
    }
    if (!(s > 0)) {
        snprintf(err, errlen, "at least one weight must be positive");
        return -1;
    }
    return 0;
}

ensemble *ensemble_new(member_set *ms, const ensemble_config *cfg, char *err, size_t errlen) {
    if (!ms || members_count(ms) == 0) {
        snprintf(err, errlen, "an ensemble needs at least one member");
        return NULL;
    }
    ensemble_config defaults;
    if (!cfg) {
        memset(&defaults, 0, sizeof defaults);
        cfg = &defaults;
    }
    if (cfg->n_weights && cfg->n_weights != members_count(ms)) {
        snprintf(err, errlen, "%zu weights for %zu members", cfg->n_weights, members_count(ms));
        return NULL;
    }
    if (cfg->draft_member[0] && members_index(ms, cfg->draft_member) < 0) {
        snprintf(err, errlen, "draft member '%s' is not a member", cfg->draft_member);
        return NULL;
    }
    const char *strategy = cfg->strategy[0] ? cfg->strategy : "mixture";
    sstrat st;
    if (check_strategy(ms, strategy, &st, err, errlen)) return NULL;
    ensemble *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->ms = ms;
    e->nm = members_count(ms);
    e->cfg = *cfg;
    copy_str(e->cfg.strategy, sizeof e->cfg.strategy, strategy);
    if (check_default_weights(e, cfg->n_weights ? cfg->weights : NULL, err, errlen)) {
        free(e);
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

void ensemble_free(ensemble *e) {
    if (!e) return;
    for (int i = 0; i < e->n_rounds; i++) member_round_free(e->rounds[i]);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int ensemble_strategy_valid(const ensemble *e, const char *strategy, char *err, size_t errlen) {
    sstrat st;
    return check_strategy(e->ms, strategy, &st, err, errlen);
}

static member_round *round_get(ensemble *e) {
    member_round *r = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->n_rounds > 0) r = e->rounds[--e->n_rounds];
    pthread_mutex_unlock(&e->mu);
    return r ? r : member_round_new();
}

static void round_put(ensemble *e, member_round *r) {
    if (!r) return;
    pthread_mutex_lock(&e->mu);
    if (e->n_rounds < ENSEMBLE_ROUND_POOL) {
        e->rounds[e->n_rounds++] = r;
        r = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    member_round_free(r);
}

/* ---- members within a request ------------------------------------------------ */

static int past_deadline(const ensemble_gen *r) {
    return r->req->deadline > 0 && clock_mono_s() >= r->req->deadline;
}

static void fail_member(ensemble_gen *r, mstate *m, const char *why) {
    if (m->failed) return;
    /* not the member's fault: the request ends (the member kind says so when
     * the call's time was the request's; the clock check covers the rest) */
    if (past_deadline(r) || (m->rc && !strcmp(m->perr.code, PROTO_ERR_DEADLINE_EXCEEDED))) r->deadline_hit = 1;
    m->failed = 1;
    m->active = 0;
    copy_str(m->failure, sizeof m->failure, why);
    log_warn("request: member '%s' (%s) dropped: %s", members_name(r->ms, m->idx), members_url(r->ms, m->idx), why);
}

static size_t n_active(const ensemble_gen *r) {
    size_t k = 0;
    for (size_t i = 0; i < r->nm; i++) k += r->m[i].active;
    return k;
}

/* The strings of a candidate set as the protocol's byte strings (scratch
 * owned by r, valid until the next call). */
static const proto_str *as_strs(ensemble_gen *r, const vcand_set *cs) {
    if (cs->n > r->strs_cap) {
        size_t cap = cs->n < 64 ? 64 : cs->n;
        proto_str *p = realloc(r->strs, cap * sizeof *p);
        if (!p) return NULL;
        r->strs = p;
        r->strs_cap = cap;
    }
    for (size_t j = 0; j < cs->n; j++) {
        r->strs[j].p = (const unsigned char *)vcand_str(cs, j);
        r->strs[j].n = cs->len[j];
    }
    return r->strs;
}

/* Copies a candidate set (the strings asked of a member). */
static int vcand_copy(vcand_set *dst, const vcand_set *src) {
    vcand_clear(dst);
    for (size_t j = 0; j < src->n; j++)
        if (vcand_add(dst, vcand_str(src, j), src->len[j], -1) < 0) return -1;
    return 0;
}

/* Queues a state-changing step for member m: creating its session (the
 * prompt or messages; with_g: re-creating an evicted one, all of G as one
 * append, which the worker heals like any other), or continuing it (its
 * lag). ask: the candidates to score (NULL: none). */
static int queue_state_step(ensemble_gen *r, mstate *m, int create, int with_g, const vcand_set *ask) {
    proto_step_req q;
    memset(&q, 0, sizeof q);
    q.session = m->s->id;
    q.k = r->k_ask;
    if (create) {
        if (r->req->messages) {
            q.messages = r->msgs;
            q.n_messages = r->n_msgs;
        } else {
            q.prompt = r->req->prompt ? r->req->prompt : "";
            q.prompt_len = strlen(q.prompt);
        }
        if (with_g) q.append = (proto_str){(const unsigned char *)r->g.p, r->g.n};
    } else {
        q.append = (proto_str){(const unsigned char *)m->lag.p, m->lag.n};
    }
    ensemble_spec_request(r, m, &q, create);
    if (ask && ask->n) {
        q.cands = as_strs(r, ask);
        q.n_cands = ask->n;
        if (!q.cands) return -1;
    }
    if (m->s->ops->step(m->s, &q, r->round)) return -1;
    m->pending = 1;
    return ask ? vcand_copy(&m->asked, ask) : (vcand_clear(&m->asked), 0);
}

/* Runs the round; reads the step answer of every pending member into m->rc,
 * m->res, m->perr. count: a round of the generation (stats). */
static void run_steps(ensemble_gen *r, int count) {
    int n = member_round_run(r->round);
    if (count && n) r->rounds++;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        m->rc = m->s->ops->step_result(m->s, &m->res, &m->perr);
        m->root = m->rc ? NULL : m->res;
        m->unreachable = m->rc && m->perr.status == 0;
        if (count) {
            m->rtt_sum += m->s->last_seconds;
            m->n_calls++;
        }
    }
}

static int grow_doubles(double **p, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    double *q = realloc(*p, n * sizeof *q);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Member m's latest step answer into m->top, top_lq, cand_lq, end_lq.
 * 0, or -1 with why (ctx_full set for a full context). */
int ensemble_absorb_answer(ensemble_gen *r, mstate *m, size_t n_asked, int first, int *ctx_full, char *why,
                           size_t whylen) {
    if (m->rc) {
        if (!strcmp(m->perr.code, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED)) *ctx_full = 1;
        copy_str(why, whylen, m->perr.message);
        return -1;
    }
    const proto_step_res *a = m->res;
    if (first) m->prompt_tokens = a->n_past;
    m->decoded += a->decoded;
    m->end_lq = a->end_logq;
    vcand_clear(&m->top);
    if (grow_doubles(&m->top_lq, &m->top_cap, a->n_top) || grow_doubles(&m->top_lp, &m->top_lp_cap, a->n_top) ||
        grow_doubles(&m->cand_lq, &m->cand_cap, n_asked)) {
        copy_str(why, whylen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < a->n_top; i++) {
        size_t before = m->top.n;
        int k = vcand_add(&m->top, (const char *)a->top[i].s.p, a->top[i].s.n, -1);
        if (k >= 0 && m->top.n > before) {
            m->top_lq[k] = a->top[i].logq;
            m->top_lp[k] = a->top[i].logp;
        }
    }
    if (n_asked && a->n_cands != n_asked) {
        snprintf(why, whylen, "member '%s': %s: %zu candidate answers for %zu asked", members_name(r->ms, m->idx),
                 PROTO_PATH_STEP, a->n_cands, n_asked);
        return -1;
    }
    for (size_t i = 0; i < n_asked; i++) m->cand_lq[i] = a->cand_logq[i];
    return 0;
}

/* The worker evicted this request's session (more concurrent sessions than
 * its slots). */
static int session_lost(const mstate *m) {
    return m->rc && m->perr.status == 404 && !strcmp(m->perr.code, PROTO_ERR_SESSION_NOT_FOUND);
}

/* Re-creates, once, the sessions that were evicted: prompt + all of G. */
static int recreate_lost_sessions(ensemble_gen *r, const vcand_set *ask) {
    int again = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        int lost = m->pending && session_lost(m);
        m->pending = 0;
        if (!lost) continue;
        log_info("request: member '%s' lost its session (evicted): re-creating it", members_name(r->ms, m->idx));
        if (queue_state_step(r, m, 1, 1, ask)) return -1;
        r->sessions_recreated++;
        again = 1;
    }
    if (again) run_steps(r, 1);
    return 0;
}

/* Queues a state-changing call for every selected member (only: just that
 * one; skip: all but that one, -1 = none). A drafting-only member is
 * called too (asked no candidates), beside the others when it drafts
 * nothing this call. */
static int queue_members(ensemble_gen *r, int first, const int *sel, const vcand_set *ask, int only, int skip) {
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!(m->active || m->drafting) || !sel[i] || (only >= 0 && (int)i != only) || (int)i == skip) continue;
        if (queue_state_step(r, m, first, 0, first || m->drafting ? NULL : ask)) return -1;
        m->lag.n = 0;
    }
    return 0;
}

/* A state-changing call per selected member: the first creates the session;
 * later ones send the member's lag and `ask` as candidates. With a drafting
 * member (speculative steps), it is called first and the others then
 * verify its draft, in a second round trip. Returns 0, 1 when a member's
 * context is full (finish with "length"), -1 on error. */
static int call_members(ensemble_gen *r, int first, const int *sel, const vcand_set *ask) {
    for (size_t i = 0; i < r->nm; i++) r->m[i].pending = 0;
    int d = ensemble_spec_drafter(r, sel);
    if (d >= 0) { /* the drafter first, alone */
        if (queue_members(r, first, sel, ask, d, -1)) return -1;
        run_steps(r, 1);
        r->m[d].pending = 0; /* (read: the next round must not read it again) */
    }
    ensemble_spec_pieces(r, d); /* its draft, for the others to verify (none without a drafter) */
    if (queue_members(r, first, sel, ask, -1, d)) return -1;
    run_steps(r, 1);
    if (d >= 0) r->m[d].pending = r->m[d].active; /* (a drafting-only member's answer is not absorbed) */
    ensemble_spec_beside(r);
    ensemble_spec_sent(r);
    if (!first) {
        if (recreate_lost_sessions(r, ask)) return -1;
        for (size_t i = 0; i < r->nm; i++) r->m[i].pending = r->m[i].active && sel[i];
    }
    int any_full = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        char why[256];
        int ctx_full = 0;
        if (ensemble_absorb_answer(r, m, m->asked.n, first, &ctx_full, why, sizeof why)) {
            if (ctx_full && first) {
                r->status = 400;
                r->code = PROTO_ERR_CONTEXT_LENGTH_EXCEEDED;
                copy_str(r->err, sizeof r->err, why);
                return -1;
            }
            if (ctx_full) any_full = 1; /* finish with "length" */
            else fail_member(r, m, why);
        } else {
            m->fresh = 1;
        }
    }
    if (any_full) r->ctx_full = 1;
    return any_full;
}

/* Round 1 of a step. selective asks only its lead while the lead is alive:
 * the others lag behind and catch up (in one append) when consulted. */
static int step_round1(ensemble_gen *r, int first) {
    int sel[CONSORT_MAX_MEMBERS];
    int lead_only = !first && r->st.kind == SSTRAT_SELECTIVE && r->m[r->lead].active;
    for (size_t i = 0; i < r->nm; i++) {
        r->m[i].fresh = 0;
        sel[i] = !lead_only || i == r->lead;
    }
    return call_members(r, first, sel, &r->carry);
}

/* 1 if member i's mass of candidate c is wanted in round 2. */
static int wanted(const ensemble_gen *r, size_t i, size_t c, const int *only) {
    return isnan(r->lq[i * r->mat_cap + c]) && (!only || only[c]);
}

/* Round 2: asks each member in `need` for the candidates whose mass it has
 * not given (only those with only[c], when given). No state change: the
 * same k as round 1, since the worker absorbs (without healing) only the
 * strings of its latest answer, so its own top entries must stay listed. */
static void fill_missing(ensemble_gen *r, const int *need, const int *only) {
    size_t n = r->cand.n;
    int any = 0;
    vcand_set ask;
    vcand_init(&ask);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = 0;
        if (!m->active || !need[i]) continue;
        vcand_clear(&ask);
        for (size_t c = 0; c < n; c++)
            if (wanted(r, i, c, only)) vcand_add(&ask, vcand_str(&r->cand, c), r->cand.len[c], -1);
        if (!ask.n) continue;
        proto_step_req q;
        memset(&q, 0, sizeof q);
        q.session = m->s->id;
        q.k = r->k_ask;
        q.cands = as_strs(r, &ask);
        q.n_cands = ask.n;
        ensemble_spec_reask(r, m, &q);
        if (!q.cands || m->s->ops->step(m->s, &q, r->round)) continue;
        m->pending = 1;
        any = 1;
    }
    vcand_free(&ask);
    if (!any) return;
    r->second_rounds++;
    run_steps(r, 1);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        size_t k = 0;
        for (size_t c = 0; c < n; c++) k += wanted(r, i, c, only);
        int ctx_full = 0;
        char why[256];
        /* (the answer's top and END are the same state's values again) */
        if (ensemble_absorb_answer(r, m, k, 0, &ctx_full, why, sizeof why)) {
            fail_member(r, m, why);
            continue;
        }
        double *lq = r->lq + i * r->mat_cap;
        size_t j = 0;
        for (size_t c = 0; c < n; c++)
            if (wanted(r, i, c, only)) lq[c] = m->cand_lq[j++];
        vcand_clear(&m->asked); /* cand_lq now answers this round's list */
    }
}

static int ensure_cols(ensemble_gen *r, size_t n) {
    if (n <= r->mat_cap) return 0;
    size_t cap = r->mat_cap ? r->mat_cap : 64;
    while (cap < n) cap *= 2;
    decide_buf *b = &r->buf;
    double *lq = realloc(r->lq, r->nm * cap * sizeof *lq);
    if (!lq) return -1;
    r->lq = lq;
    double *lp = realloc(r->lp, r->nm * cap * sizeof *lp);
    if (!lp) return -1;
    r->lp = lp;
    double *ev = realloc(b->ev, r->nm * (cap + 1) * sizeof *ev);
    if (!ev) return -1;
    b->ev = ev;
    double *own = realloc(b->own, r->nm * (cap + 1) * sizeof *own);
    if (!own) return -1;
    b->own = own;
    double *d = realloc(b->dist, (cap + 1) * sizeof *d);
    if (!d) return -1;
    b->dist = d;
    double *w = realloc(b->work, (cap + 1) * sizeof *w);
    if (!w) return -1;
    b->work = w;
    size_t *o = realloc(b->order, (cap + 1) * sizeof *o);
    if (!o) return -1;
    b->order = o;
    double *sc = realloc(b->mlo, 4 * (cap + 1) * sizeof *sc);
    if (!sc) return -1;
    b->mlo = sc;
    r->mat_cap = cap;
    return 0;
}

/* The candidate set and the mass matrix from the round-1 answers. */
static int build_candidates(ensemble_gen *r) {
    vcand_clear(&r->cand);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->active || !m->fresh) continue;
        for (size_t t = 0; t < m->top.n && t < (size_t)r->k_prop; t++)
            if (vcand_add(&r->cand, vcand_str(&m->top, t), m->top.len[t], (int)i) < 0) return -1;
    }
    for (size_t j = 0; j < r->carry.n; j++)
        if (vcand_add(&r->cand, vcand_str(&r->carry, j), r->carry.len[j], -1) < 0) return -1;
    vcand_link(&r->cand);
    size_t n = r->cand.n;
    if (ensure_cols(r, n + 1)) return -1;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        double *lq = r->lq + i * r->mat_cap, *lp = r->lp + i * r->mat_cap;
        for (size_t c = 0; c < n; c++) lq[c] = lp[c] = NAN;
        if (!m->active || !m->fresh) continue;
        for (size_t t = 0; t < m->top.n; t++) {
            int c = vcand_find(&r->cand, vcand_str(&m->top, t), m->top.len[t]);
            if (c >= 0) {
                lq[c] = m->top_lq[t];
                lp[c] = m->top_lp[t]; /* any top entry: the member absorbs it as its own path */
            }
        }
        for (size_t j = 0; j < m->asked.n; j++) {
            int c = vcand_find(&r->cand, vcand_str(&m->asked, j), m->asked.len[j]);
            if (c >= 0 && isnan(lq[c])) lq[c] = m->cand_lq[j];
        }
    }
    return 0;
}

/* ---- the decision's I/O ------------------------------------------------------- */

static decide_in decide_input(const ensemble_gen *r, decide_facts *f) {
    for (size_t i = 0; i < r->nm; i++) {
        f->active[i] = r->m[i].active;
        f->fresh[i] = r->m[i].fresh;
        f->w[i] = r->m[i].w;
        f->end_lq[i] = r->m[i].end_lq;
    }
    decide_in in = {r->nm, &r->cand, r->lq, r->lp, r->mat_cap, f->end_lq, f->active, f->fresh, f->w, &r->st,
                    r->lead, r->threshold,
                    {r->req->temperature, r->req->top_p, r->req->min_p, r->req->top_k},
                    r->e->cfg.no_round_skip,
                    r->e->cfg.n_pool_exponents ? r->e->cfg.pool_exponents : NULL};
    return in;
}

static void debug_step(ensemble_gen *r, int pick) {
    size_t n = r->cand.n;
    for (size_t c = 0; c <= n; c++) {
        char line[512];
        int o = snprintf(line, sizeof line, "%s cand %zu \"", (int)c == pick ? "*" : " ", c);
        if (c < n)
            for (size_t j = 0; j < r->cand.len[c] && o < 200; j++) {
                unsigned char ch = (unsigned char)vcand_str(&r->cand, c)[j];
                o += snprintf(line + o, sizeof line - (size_t)o, ch >= 32 && ch < 127 && ch != '"' ? "%c" : "\\x%02x", ch);
            }
        else
            o += snprintf(line + o, sizeof line - (size_t)o, "<END>");
        o += snprintf(line + o, sizeof line - (size_t)o, "\" parent %d p %.4f |", c < n ? r->cand.parent[c] : -1,
                      r->buf.dist[c]);
        for (size_t i = 0; i < r->nm && o < 480; i++)
            if (r->m[i].active)
                o += snprintf(line + o, sizeof line - (size_t)o, " %s: q %.4f lp %.4f", members_name(r->ms, i),
                              c < n ? exp(r->lq[i * r->mat_cap + c]) : exp(r->m[i].end_lq),
                              c < n ? exp(r->lp[i * r->mat_cap + c]) : NAN);
        log_debug("%s", line);
    }
}

/* One step's choice: the decision, and the I/O it asks for, until it
 * chooses. Returns the event (n = END), -1 for none. */
static int decide_step(ensemble_gen *r) {
    decide_memo_reset(&r->memo);
    rng_state at_start = r->rng; /* (for the check below) */
    for (;;) {
        ens_rescale_inconsistent(r); /* member answers are input: never above 1 (invariant 7) */
        decide_facts f;
        decide_in in = decide_input(r, &f);
        assert(ensemble_events_sane(&in));
        decision d = ensemble_decide(&in, &r->buf, &r->memo, &r->rng);
        if (d.kind == DECIDE_CHOICE) {
            ensemble_spec_decided(r);
            r->skipped_rounds += d.skipped;
            r->lead_alone += r->st.kind == SSTRAT_SELECTIVE && r->m[r->lead].active && !r->memo.lead_unsure;
            if (log_enabled(LOG_DEBUG) && d.choice >= 0) debug_step(r, d.choice);
            return d.choice;
        }
        if (d.kind == DECIDE_MASSES && r->vdepth > 0) { /* drafted answers: bring the members here first */
            /* abandoned here, redone below: it must have drawn nothing, or a
             * seeded sampled text would change with speculative steps */
            assert(!memcmp(&at_start, &r->rng, sizeof at_start));
            (void)at_start;
            if (step_round1(r, 0) != 0) return -1;
            if (build_candidates(r)) return -1;
            decide_memo_reset(&r->memo); /* the same step, asked afresh at the real state */
            continue;
        }
        if (d.kind == DECIDE_MASSES) {
            fill_missing(r, d.need, d.only);
            continue;
        }
        /* DECIDE_CATCH_UP: the others catch up (their lag in one append),
         * answer for the current candidates, and propose */
        r->catchups++;
        if (call_members(r, 0, d.need, &r->cand) != 0) return -1;
        if (build_candidates(r)) return -1;
    }
}

/* ---- auto weights ------------------------------------------------------------ */

/* The prompt's text as the members score it: the messages' contents, one
 * per line, or the raw prompt. */
static void prompt_text(const ensemble_gen *r, sbuf *text) {
    if (r->req->messages) {
        for (size_t i = 0; i < r->n_msgs; i++) {
            if (text->n) sb_str(text, "\n");
            sb_str(text, r->msgs[i].content);
        }
    } else if (r->req->prompt) {
        sb_str(text, r->req->prompt);
    }
}

static void auto_weights(ensemble_gen *r) {
    sbuf text = {0};
    prompt_text(r, &text);
    double nll[CONSORT_MAX_MEMBERS], w[CONSORT_MAX_MEMBERS];
    int okm[CONSORT_MAX_MEMBERS];
    proto_score_req q = {text.p ? text.p : "", text.n, 1};
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        okm[i] = m->active && !text.n;
        nll[i] = INFINITY;
        m->pending = m->active && text.n && m->s->ops->score(m->s, &q, r->round) == 0;
    }
    if (text.n) member_round_run(r->round);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        const proto_score_res *res;
        proto_error err;
        if (m->s->ops->score_result(m->s, &res, &err) == 0) {
            nll[i] = -res->sum_logprob;
            okm[i] = 1;
        } else {
            log_warn("auto weights: member '%s' gave no score (%s); weight 0", members_name(r->ms, m->idx), err.message);
        }
    }
    sstrat_auto_weights(r->nm, nll, (double)text.n, okm, w);
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active) r->m[i].w = w[i];
    free(text.p);
}

/* ---- beginning a request ------------------------------------------------------ */

static unsigned long session_counter;

/* Ends the generation with an error before (or instead of) its steps. */
static void fail_gen(ensemble_gen *r, int status, const char *msg) {
    r->out->status = status;
    if (!r->out->code) r->out->code = r->code ? r->code : status == 503 ? "no_member_available" : NULL;
    snprintf(r->out->error, sizeof r->out->error, "%s", msg);
    r->finish = "stop";
    r->done = 1;
}

/* The request's messages as the protocol's structs (strings borrowed). */
static int read_messages(ensemble_gen *r, char *err, size_t errlen) {
    const json_t *ms = r->req->messages;
    if (!json_is_array(ms)) {
        snprintf(err, errlen, "messages must be an array");
        return -1;
    }
    r->n_msgs = json_array_size(ms);
    r->msgs = calloc(r->n_msgs ? r->n_msgs : 1, sizeof *r->msgs);
    if (!r->msgs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < r->n_msgs; i++) {
        json_t *mi = json_array_get(ms, i);
        r->msgs[i].role = json_string_value(json_object_get(mi, "role"));
        r->msgs[i].content = json_string_value(json_object_get(mi, "content"));
        if (!r->msgs[i].role || !r->msgs[i].content) {
            snprintf(err, errlen, "messages[%zu] must be {\"role\": string, \"content\": string}", i);
            return -1;
        }
    }
    return 0;
}

/* Checks the request; sets each member's weight and whether it is used.
 * 0, or -1 with the generation failed (status 400). */
static int check_request(ensemble_gen *r, int *used, int *want_auto) {
    ensemble *e = r->e;
    const ensemble_request *req = r->req;
    char err[256];
    const char *strategy = req->strategy && *req->strategy ? req->strategy : e->cfg.strategy;
    if (check_strategy(e->ms, strategy, &r->st, err, sizeof err)) goto bad;
    if (req->max_tokens < 0) return fail_gen(r, 400, "max_tokens must be >= 0"), -1;
    if (!req->prompt && !req->messages) return fail_gen(r, 400, "a prompt or messages is required"), -1;
    if (req->messages && read_messages(r, err, sizeof err)) goto bad;
    if (!(req->temperature >= 0) || !isfinite(req->temperature))
        return fail_gen(r, 400, "temperature must be >= 0"), -1;
    int spec = ensemble_spec_setup(r, err, sizeof err);
    if (spec == -2) goto bad;
    if (spec) {
        fail_gen(r, 400, err);
        r->out->code = "speculative_unsupported";
        return -1;
    }
    size_t n_used = 0;
    if (req->members && req->n_members) {
        for (size_t j = 0; j < req->n_members; j++) {
            int k = members_index(e->ms, req->members[j]);
            if (k < 0) {
                snprintf(err, sizeof err, "unknown member '%s'", req->members[j]);
                goto bad;
            }
            if (!used[k]) n_used++;
            used[k] = 1;
        }
    } else {
        for (size_t i = 0; i < r->nm; i++) used[i] = 1;
        n_used = r->nm;
    }
    if (req->weights && req->n_weights != n_used) {
        snprintf(err, sizeof err, "%zu weights given for %zu members", req->n_weights, n_used);
        goto bad;
    }
    size_t j = 0;
    double ws = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!used[i]) continue;
        m->w = req->weights ? req->weights[j++] : e->weights[i];
        if (!(m->w >= 0) || !isfinite(m->w)) return fail_gen(r, 400, "weights must be finite and non-negative"), -1;
        ws += m->w;
    }
    int auto_w = req->weights_auto || (e->cfg.weights_auto && !req->weights);
    if (!(ws > 0) && !auto_w) return fail_gen(r, 400, "at least one weight must be positive"), -1;
    if (r->st.kind == SSTRAT_SOLO) {
        int k = members_index(e->ms, r->st.solo);
        if (!used[k]) {
            snprintf(err, sizeof err, "strategy solo:%s names a member not in this request", r->st.solo);
            goto bad;
        }
        for (size_t i = 0; i < r->nm; i++) r->m[i].w = (int)i == k ? 1 : 0;
    }
    *want_auto = r->st.kind != SSTRAT_SOLO && auto_w;
    if (*want_auto)
        for (size_t i = 0; i < r->nm; i++) r->m[i].w = used[i] ? 1 : 0;
    return 0;
bad:
    fail_gen(r, 400, err);
    return -1;
}

/* Opens a session on every member taking part. 0, or -1 (generation failed). */
/* A session id: "cs-" and 128 bits from the OS random source in hex, so
 * that nobody who can reach a worker can guess a live session. -1 when the
 * source fails (no guessable fallback). */
static int make_session_id(char *id, size_t n) {
    unsigned char b[16];
    if (rng_os_bytes(b, sizeof b)) return -1;
    size_t k = (size_t)snprintf(id, n, "cs-");
    for (size_t i = 0; i < sizeof b && k + 2 < n; i++, k += 2) snprintf(id + k, n - k, "%02x", b[i]);
    return 0;
}

static int open_sessions(ensemble_gen *r, const int *used) {
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        int drafts_only = !(m->w > 0) && ensemble_spec_drafts_only(r, i);
        if (!used[i] || (!(m->w > 0) && !drafts_only)) continue;
        if (drafts_only && !members_usable(r->ms, i)) { /* (then each member drafts its own) */
            ensemble_spec_drop_drafter(r, "it is down");
            continue;
        }
        if (!members_usable(r->ms, i)) {
            snprintf(m->failure, sizeof m->failure, "member '%s' is down", members_name(r->ms, i));
            m->failed = 1;
            continue;
        }
        char id[PROTO_SESSION_MAX + 1];
        if (make_session_id(id, sizeof id)) return fail_gen(r, 500, "the OS random source failed"), -1;
        m->s = member_open(r->ms, i, id, r->step_timeout);
        if (!m->s) return fail_gen(r, 500, "out of memory"), -1;
        m->s->deadline = r->req->deadline;
        if (drafts_only) m->drafting = 1;
        else m->active = 1;
    }
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active) {
            r->lead = i;
            break;
        }
    if (n_active(r) == 0) return fail_gen(r, 503, "no member is available"), -1;
    return 0;
}

/* Settings of this request from the ensemble's configuration. Proposals per
 * member: greedy takes each member's own best token (so a lone member, or a
 * model paired with itself, reproduces its greedy text exactly, see
 * STRATEGIES.md); sampling takes several. A worker picks its top-k by token
 * probability but lists them by prefix mass, so asking for more entries
 * than we propose would hide which are its best: we ask for exactly k_prop
 * (the price: more second rounds). */
static void settings(ensemble_gen *r) {
    const ensemble_config *c = &r->e->cfg;
    const ensemble_request *req = r->req;
    r->threshold = req->threshold > 0 ? req->threshold : c->threshold > 0 ? c->threshold : SSTRAT_DEFAULT_THRESHOLD;
    r->step_timeout = c->step_timeout > 0 ? c->step_timeout : 30;
    int greedy = !(req->temperature > 1e-6);
    r->k_prop = c->member_k > 0 ? c->member_k : greedy ? 1 : DEFAULT_K_PROP;
    r->k_ask = r->k_prop;
}

ensemble_gen *ensemble_begin(ensemble *e, const ensemble_request *req, ensemble_on_chunk on_chunk, void *ud,
                             ensemble_result *out) {
    memset(out, 0, sizeof *out);
    ensemble_gen *r = calloc(1, sizeof *r);
    out->members = calloc(e->nm, sizeof *out->members);
    if (!r || !out->members) {
        free(r);
        free(out->members);
        out->members = NULL;
        out->status = 500;
        snprintf(out->error, sizeof out->error, "out of memory");
        out->finish_reason = "stop";
        out->text = calloc(1, 1);
        return NULL;
    }
    r->t0 = clock_mono_s();
    r->c0 = clock_thread_cpu_s();
    r->e = e;
    r->req = req;
    r->on_chunk = on_chunk;
    r->ud = ud;
    r->out = out;
    r->ms = e->ms;
    r->nm = e->nm;
    r->finish = "length";
    out->n_members = r->nm;
    settings(r);
    vcand_init(&r->cand);
    vcand_init(&r->carry);
    vcand_init(&r->next_carry);
    for (size_t i = 0; i < r->nm; i++) {
        snprintf(out->members[i].name, sizeof out->members[i].name, "%s", members_name(e->ms, i));
        vcand_init(&r->m[i].top);
        vcand_init(&r->m[i].asked);
        r->m[i].idx = i;
    }
    int used[CONSORT_MAX_MEMBERS] = {0}, want_auto = 0;
    if (check_request(r, used, &want_auto)) return r;
    unsigned long sid = __atomic_fetch_add(&session_counter, 1, __ATOMIC_RELAXED);
    if (open_sessions(r, used)) return r;
    r->round = round_get(e);
    if (!r->round) return fail_gen(r, 500, "cannot make a round of calls"), r;
    uint64_t seed = req->has_seed ? req->seed
                                  : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ sid * 0x9e3779b97f4a7c15ULL;
    rng_seed(&r->rng, seed);
    /* The prompt first: a member whose context it does not fit refuses it
     * before anything is scored (auto weights score the whole prompt on
     * every member, which must not happen for a prompt that cannot run). */
    int st = step_round1(r, 1);
    if (st < 0) fail_gen(r, r->status ? r->status : 500, r->err[0] ? r->err : "request failed");
    else if (want_auto) auto_weights(r);
    return r;
}

/* ---- one step ------------------------------------------------------------------- */

/* G grows by the chosen candidate; stats; the candidates that extend it are
 * carried into the next step. */
static int commit(ensemble_gen *r, int ch) {
    const char *bytes = vcand_str(&r->cand, (size_t)ch);
    size_t blen = r->cand.len[ch];
    size_t before = r->g.n;
    r->pending_lp += r->buf.dist[ch] > 0 ? log(r->buf.dist[ch]) : 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->active) continue;
        if (r->buf.own_choice[i] == ch) m->steps_won++;
        if (r->cand.proposers[ch] & ((uint32_t)1 << i)) m->bytes_won += blen;
    }
    if (sb_add(&r->g, bytes, blen)) return -1;
    assert(r->g.n == before + blen && blen > 0);
    (void)before;
    r->steps++;
    vcand_clear(&r->next_carry);
    vcand_carry(&r->cand, bytes, blen, &r->next_carry);
    vcand_set tmp = r->carry;
    r->carry = r->next_carry;
    r->next_carry = tmp;
    return 0;
}

/* The committed bytes of this step, owed to every active member. */
static int owe_step(ensemble_gen *r, size_t from) {
    for (size_t i = 0; i < r->nm; i++)
        if ((r->m[i].active || r->m[i].drafting) && sb_add(&r->m[i].lag, r->g.p + from, r->g.n - from)) return -1;
    return 0;
}

static int finish(ensemble_gen *r, const char *reason) {
    r->finish = reason;
    r->done = 1;
    return 0;
}

/* Whether the request must end before this step: its deadline passed, or
 * its owner asked (a client gone). */
static int must_end(ensemble_gen *r) {
    if (past_deadline(r)) r->deadline_hit = 1;
    if (r->deadline_hit) return finish(r, "length"), 1;
    if (r->req->should_stop && r->req->should_stop(r->ud)) {
        r->stopped = 1;
        return finish(r, "stop"), 1;
    }
    return 0;
}

int ensemble_step(ensemble_gen *r) {
    if (!r || r->done) return 0;
    if (must_end(r)) return 0;
    if (n_active(r) == 0) return finish(r, r->finish);
    if (r->ctx_full || r->steps >= r->req->max_tokens) return finish(r, "length");
    if (build_candidates(r)) return fail_gen(r, 500, "out of memory"), 0;
    int ch = decide_step(r);
    if (r->deadline_hit) return finish(r, "length");
    if (n_active(r) == 0) return finish(r, r->finish);
    if (r->ctx_full) return finish(r, "length");
    if (ch < 0 || (size_t)ch == r->cand.n) {
        if (ch >= 0 && r->buf.dist[ch] > 0) r->pending_lp += log(r->buf.dist[ch]);
        return finish(r, "stop");
    }
    size_t from = r->g.n;
    if (commit(r, ch)) return fail_gen(r, 500, "out of memory"), 0;
    if (ensemble_after_commit(r, ch) || r->stopped) return finish(r, "stop");
    if (r->steps >= r->req->max_tokens) return finish(r, "length");
    if (owe_step(r, from)) return fail_gen(r, 500, "out of memory"), 0;
    if (ensemble_spec_advance(r, from)) return 1; /* the next step from the members' drafts */
    if (step_round1(r, 0) < 0) return fail_gen(r, 500, r->err[0] ? r->err : "request failed"), 0;
    return 1;
}

/* ---- the end ---------------------------------------------------------------------- */

/* Every session this request opened is deleted, the failed members' too: a
 * member that missed the step deadline may still be computing for it (the
 * deletion, with a short deadline of its own, tells it to drop the
 * session; a refused connection fails at once). */
static void delete_sessions(ensemble_gen *r) {
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (m->s) member_close(m->s, r->round);
    }
    member_round_run(r->round);
}

static void fill_stats(ensemble_gen *r) {
    ensemble_result *out = r->out;
    double ws = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        ensemble_member_stats *s = &out->members[i];
        s->failed = m->failed;
        snprintf(s->failure, sizeof s->failure, "%s", m->failure);
        s->steps_won = m->steps_won;
        s->bytes_proposed_won = m->bytes_won;
        s->mean_step_ms = m->n_calls ? 1000.0 * m->rtt_sum / m->n_calls : 0;
        s->weight = m->w;
        s->prompt_tokens = m->prompt_tokens;
        s->decoded = m->decoded;
        s->approximate = !members_ops(r->ms, m->idx)->exact;
        if (m->prompt_tokens > out->prompt_tokens) out->prompt_tokens = m->prompt_tokens;
        ws += s->weight;
    }
    for (size_t i = 0; i < r->nm && ws > 0; i++) out->members[i].weight /= ws;
    out->rounds = r->rounds;
    out->second_rounds = r->second_rounds;
    out->skipped_rounds = r->skipped_rounds;
    out->sessions_recreated = r->sessions_recreated;
    out->speculative = r->spec;
    out->spec_drafted = r->spec_drafted;
    out->spec_accepted = r->spec_accepted;
    out->lead_alone_steps = r->lead_alone;
    out->steps = r->steps;
}

static void free_gen(ensemble_gen *r) {
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        member_session_free(m->s);
        vcand_free(&m->top);
        vcand_free(&m->asked);
        free(m->lag.p);
        free(m->v.p);
        free(m->top_lq);
        free(m->top_lp);
        free(m->cand_lq);
    }
    round_put(r->e, r->round);
    vcand_free(&r->cand);
    vcand_free(&r->carry);
    vcand_free(&r->next_carry);
    free(r->vp.p);
    decide_memo_free(&r->memo);
    free(r->lq);
    free(r->lp);
    free(r->buf.ev);
    free(r->buf.own);
    free(r->buf.dist);
    free(r->buf.work);
    free(r->buf.order);
    free(r->buf.mlo);
    free(r->msgs);
    free(r->strs);
    free(r->g.p);
    free(r->out_text.p);
    free(r);
}

/* No member left: 503, naming the first failure; the text so far stays. */
static void no_member_left(ensemble_gen *r) {
    char msg[256];
    snprintf(msg, sizeof msg, "no member left");
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].failed) {
            snprintf(msg, sizeof msg, "no member left: %s", r->m[i].failure);
            break;
        }
    r->out->status = 503;
    r->out->code = "no_member_available";
    snprintf(r->out->error, sizeof r->out->error, "%s", msg);
}

int ensemble_end(ensemble_gen *r) {
    if (!r) return -1;
    ensemble_result *out = r->out;
    int failed_early = out->status != 0;
    if (!failed_early) {
        if (!r->done) r->finish = "stop"; /* the caller stopped early */
        if (n_active(r) == 0 && !r->deadline_hit) no_member_left(r);
        if (!r->stopped) ensemble_emit(r, r->g.n, -1); /* everything committed (stop cut already applied) */
    }
    out->finish_reason = r->finish ? r->finish : "stop";
    if (r->round) delete_sessions(r);
    out->text = malloc(r->out_text.n + 1);
    if (out->text) {
        if (r->out_text.n) memcpy(out->text, r->out_text.p, r->out_text.n);
        out->text[r->out_text.n] = 0;
        out->len = r->out_text.n;
    }
    fill_stats(r);
    out->deadline_exceeded = r->deadline_hit;
    if (failed_early) out->steps = 0;
    out->seconds = clock_mono_s() - r->t0;
    out->cpu_seconds = clock_thread_cpu_s() - r->c0;
    int rc = out->status == 0 ? 0 : -1;
    free_gen(r);
    return rc;
}

int ensemble_generate(ensemble *e, const ensemble_request *req, ensemble_on_chunk on_chunk, void *ud,
                      ensemble_result *out) {
    ensemble_gen *g = ensemble_begin(e, req, on_chunk, ud, out);
    while (ensemble_step(g)) {}
    return ensemble_end(g);
}

void ensemble_result_free(ensemble_result *res) {
    if (!res) return;
    free(res->text);
    free(res->members);
    res->text = NULL;
    res->members = NULL;
    res->n_members = 0;
}

/* ---- for the scoring path (ensemble_score.c; ensemble_internal.h) --------------- */

int ens_build_candidates(ensemble_gen *r) { return build_candidates(r); }
decide_in ens_decide_input(const ensemble_gen *r, decide_facts *f) { return decide_input(r, f); }
void ens_fill_missing(ensemble_gen *r, const int *need, const int *only) { fill_missing(r, need, only); }
int ens_call_members(ensemble_gen *r, const int *sel, const vcand_set *ask) { return call_members(r, 0, sel, ask); }
int ens_step_round1(ensemble_gen *r) { return step_round1(r, 0); }
int ens_owe_step(ensemble_gen *r, size_t from) { return owe_step(r, from); }
int ens_absorb_answer(ensemble_gen *r, mstate *m, size_t n_asked, int *ctx_full, char *why, size_t whylen) {
    return ensemble_absorb_answer(r, m, n_asked, 0, ctx_full, why, whylen);
}
