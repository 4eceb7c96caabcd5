/* coordinator/engine/ensemble_decide.c: see ensemble_decide.h.
 *
 * Why a pure function: the decision used to perform its own network calls
 * in the middle (the second round, selective's catch-up), which made the
 * rule hard to read and impossible to test without members. Here it only
 * reads the step's facts and says what it still needs; the loop does the
 * I/O and calls again. Each call recomputes everything it derives (weights
 * of the members still alive, each member's own view) from the facts, so
 * members dropped by the I/O in between simply vanish from the arithmetic.
 *
 * State: none of its own. The memo (owned by the loop, reset every step)
 * keeps what must survive a call: the min_ppl proposals already sampled
 * (drawing them again would consume the rng twice and change seeded texts)
 * and whether the missing masses were already asked.
 */
#include "coordinator/engine/ensemble_decide.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void decide_memo_reset(decide_memo *m) {
    m->lead_unsure = 0;
    m->masses_asked = 0;
    m->have_props = 0;
}

void decide_memo_free(decide_memo *m) {
    free(m->only);
    m->only = NULL;
    m->only_cap = 0;
}

static decision chosen(int event, int skipped) {
    decision d;
    memset(&d, 0, sizeof d);
    d.kind = DECIDE_CHOICE;
    d.choice = event;
    d.skipped = skipped;
    return d;
}

static int alive(const decide_in *in, size_t i) { return in->active[i]; }

static size_t n_alive(const decide_in *in) {
    size_t k = 0;
    for (size_t i = 0; i < in->nm; i++) k += alive(in, i) != 0;
    return k;
}

static void weights_now(const decide_in *in, decide_buf *b) {
    sstrat_norm_weights(in->nm, in->w, in->active, b->wn);
}

static const double *lp_row(const decide_in *in, size_t mi) { return in->lp ? in->lp + mi * in->ld : NULL; }

/* Events of member mi over the candidates it proposed itself (its own view):
 * each proposal's own token path (they are disjoint paths), or, from a
 * member that gives no path probabilities, its prefix mass minus that of
 * its nearest proposed descendants. */
static void own_events(const decide_in *in, size_t mi, double *out) {
    const vcand_set *cs = in->cand;
    size_t n = cs->n;
    const double *lq = in->lq + mi * in->ld, *lp = lp_row(in, mi);
    uint32_t bit = (uint32_t)1 << mi;
    int paths = lp != NULL;
    for (size_t c = 0; c < n && paths; c++)
        if ((cs->proposers[c] & bit) && isnan(lp[c])) paths = 0;
    if (paths) {
        for (size_t c = 0; c < n; c++) out[c] = (cs->proposers[c] & bit) ? exp(lp[c]) : 0;
        out[n] = exp(in->end_lq[mi]);
        return;
    }
    for (size_t c = 0; c < n; c++) out[c] = (cs->proposers[c] & bit) && !isnan(lq[c]) ? exp(lq[c]) : 0;
    for (size_t c = 0; c < n; c++) {
        if (!(cs->proposers[c] & bit) || isnan(lq[c])) continue;
        int a = cs->parent[c];
        while (a >= 0 && !(cs->proposers[a] & bit)) a = cs->parent[a];
        if (a >= 0) out[a] -= exp(lq[c]);
    }
    for (size_t c = 0; c < n; c++)
        if (!(out[c] > 1e-15)) out[c] = 0;
    out[n] = exp(in->end_lq[mi]);
}

/* Each member that answered this step: its own view and its greedy choice. */
static void own_choices(const decide_in *in, decide_buf *b) {
    size_t ne = in->cand->n + 1, stride = in->ld + 1;
    for (size_t i = 0; i < in->nm; i++) {
        b->own_choice[i] = -1;
        if (!alive(in, i) || !in->fresh[i]) continue;
        own_events(in, i, b->own + i * stride);
        b->own_choice[i] = ssample_argmax(b->own + i * stride, ne);
    }
}

static int greedy(const decide_in *in) { return !(in->sp.temperature > 1e-6); }

/* Greedy mixture: the winner is certain without the missing masses
 * (sstrat_greedy_bound), or -1. */
static int greedy_decided(const decide_in *in, decide_buf *b) {
    double endq[CONSORT_MAX_MEMBERS], wn[CONSORT_MAX_MEMBERS];
    for (size_t i = 0; i < in->nm; i++) {
        endq[i] = alive(in, i) ? in->end_lq[i] : -INFINITY;
        wn[i] = alive(in, i) ? b->wn[i] : 0;
    }
    return sstrat_greedy_bound(in->nm, in->cand->n, in->cand->parent, in->lq, in->lp, in->ld, endq, wn, b->mlo);
}

/* selective: the lead alone when it is sure; else the others catch up. */
static int selective_lead(const decide_in *in, decide_buf *b, decide_memo *memo, rng_state *rng, decision *d) {
    size_t ne = in->cand->n + 1, stride = in->ld + 1;
    if (!memo->lead_unsure) {
        if (sstrat_selective(1, ne, b->own + in->lead * stride, (double[]){1}, 0, in->threshold, b->dist)) {
            *d = chosen(ssample_pick(b->dist, ne, &in->sp, rng, b->work, b->order), 0);
            return 1;
        }
        memo->lead_unsure = 1;
    }
    memset(d, 0, sizeof *d);
    d->kind = DECIDE_CATCH_UP;
    int any = 0;
    for (size_t i = 0; i < in->nm; i++) any |= d->need[i] = alive(in, i) && !in->fresh[i];
    return any;
}

static int ensure_only(decide_memo *memo, size_t ne) {
    if (ne <= memo->only_cap) return 0;
    int *p = realloc(memo->only, ne * sizeof *p);
    if (!p) return -1;
    memo->only = p;
    memo->only_cap = ne;
    return 0;
}

/* min_ppl / min_ppl_cross: each member proposes (sampled from its own view,
 * once per step); the proposal with the best per-byte score wins. */
static decision min_ppl(const decide_in *in, decide_buf *b, decide_memo *memo, rng_state *rng) {
    size_t n = in->cand->n, ne = n + 1, stride = in->ld + 1;
    int cross = in->st->kind == SSTRAT_MIN_PPL_CROSS;
    if (!memo->have_props) {
        if (ensure_only(memo, ne)) return chosen(-1, 0);
        memset(memo->only, 0, ne * sizeof *memo->only);
        for (size_t i = 0; i < in->nm; i++) {
            memo->prop[i] = -1;
            if (!alive(in, i) || !(b->wn[i] > 0)) continue;
            memo->prop[i] = ssample_pick(b->own + i * stride, ne, &in->sp, rng, b->work, b->order);
            if (memo->prop[i] >= 0 && (size_t)memo->prop[i] < n) memo->only[memo->prop[i]] = 1;
        }
        memo->have_props = 1;
        if (cross && !memo->masses_asked) {
            memo->masses_asked = 1;
            decision d;
            memset(&d, 0, sizeof d);
            d.kind = DECIDE_MASSES;
            for (size_t i = 0; i < in->nm; i++) d.need[i] = alive(in, i) && b->wn[i] > 0;
            d.only = memo->only;
            return d;
        }
    }
    int prop[CONSORT_MAX_MEMBERS];
    double score[CONSORT_MAX_MEMBERS];
    /* a proposal stays valid only while its proposer is alive */
    for (size_t i = 0; i < in->nm; i++) prop[i] = alive(in, i) ? memo->prop[i] : -1;
    int win = sstrat_min_ppl(in->nm, n, in->lq, in->ld, in->end_lq, in->cand->len, prop, b->wn, cross, score);
    /* the reported distribution: the winner's proposer's own view */
    for (size_t e = 0; e < ne; e++) b->dist[e] = 0;
    for (size_t i = 0; i < in->nm; i++)
        if (win >= 0 && prop[i] == win) {
            const double *o = b->own + i * stride;
            for (size_t e = 0; e < ne; e++) b->dist[e] = o[e];
            break;
        }
    return chosen(win, 0);
}

/* 1 if a member in need[] has not given a mass of some candidate. */
static int masses_missing(const decide_in *in, const int *need) {
    for (size_t i = 0; i < in->nm; i++)
        for (size_t c = 0; need[i] && c < in->cand->n; c++)
            if (isnan(in->lq[i * in->ld + c])) return 1;
    return 0;
}

/* mixture, product, solo, selective below its threshold: every mass of every
 * member with weight, unless the greedy bound already knows the winner. */
static decision combine_all(const decide_in *in, decide_buf *b, decide_memo *memo, rng_state *rng) {
    size_t n = in->cand->n, ne = n + 1;
    enum sstrat_kind k = in->st->kind;
    int need[CONSORT_MAX_MEMBERS];
    for (size_t i = 0; i < in->nm; i++) need[i] = alive(in, i) && b->wn[i] > 0;
    int decided = -1;
    if (!memo->masses_asked && masses_missing(in, need)) {
        if (greedy(in) && k != SSTRAT_PRODUCT && k != SSTRAT_POOL && !in->no_round_skip)
            decided = greedy_decided(in, b);
        if (decided < 0) {
            memo->masses_asked = 1;
            decision d;
            memset(&d, 0, sizeof d);
            d.kind = DECIDE_MASSES;
            memcpy(d.need, need, sizeof need);
            return d;
        }
    }
    if (n_alive(in) == 0) return chosen(-1, 0);
    for (size_t i = 0; i < in->nm; i++)
        if (alive(in, i))
            sstrat_events_own(n, in->cand->parent, in->lq + i * in->ld, lp_row(in, i), in->end_lq[i], b->ev + i * ne);
        else for (size_t e = 0; e < ne; e++) b->ev[i * ne + e] = 0;
    if (k == SSTRAT_PRODUCT) sstrat_product(in->nm, ne, b->ev, b->wn, b->dist);
    else if (k == SSTRAT_POOL) sstrat_pool(in->nm, ne, b->ev, b->wn, in->pool_alpha, b->dist);
    else sstrat_mixture(in->nm, ne, b->ev, b->wn, b->dist);
    /* (after a skipped round the distribution counts missing masses as 0;
     * it only serves the reported logprobs) */
    if (decided >= 0) return chosen(decided, 1);
    return chosen(ssample_pick(b->dist, ne, &in->sp, rng, b->work, b->order), 0);
}

decision ensemble_decide(const decide_in *in, decide_buf *b, decide_memo *memo, rng_state *rng) {
    weights_now(in, b);
    own_choices(in, b);
    enum sstrat_kind k = in->st->kind;
    if (k == SSTRAT_SELECTIVE && alive(in, in->lead)) {
        decision d;
        if (selective_lead(in, b, memo, rng, &d)) return d;
    }
    if (k == SSTRAT_MIN_PPL || k == SSTRAT_MIN_PPL_CROSS) return min_ppl(in, b, memo, rng);
    return combine_all(in, b, memo, rng);
}

/* 1 if some proper prefix of candidate c has a known mass in row lq. */
static int has_known_ancestor(const vcand_set *cs, const double *lq, size_t c) {
    for (int a = cs->parent[c]; a >= 0; a = cs->parent[a])
        if (!isnan(lq[a])) return 1;
    return 0;
}

double ensemble_member_listed_mass(const decide_in *in, size_t i) {
    const vcand_set *cs = in->cand;
    const double *lq = in->lq + i * in->ld;
    /* the outermost known candidates are disjoint events, END another */
    double s = exp(in->end_lq[i]);
    for (size_t c = 0; c < cs->n; c++)
        if (!isnan(lq[c]) && !has_known_ancestor(cs, lq, c)) s += exp(lq[c]);
    return s;
}

int ensemble_events_sane(const decide_in *in) {
    for (size_t i = 0; i < in->nm; i++) {
        if (!alive(in, i) || !in->fresh[i]) continue;
        if (!(ensemble_member_listed_mass(in, i) <= 1 + 1e-9)) return 0;
    }
    return 1;
}
