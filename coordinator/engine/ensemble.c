/* coordinator/engine/ensemble.c: see ensemble.h, docs/STRATEGIES.md, docs/PROTOCOL.md.
 *
 * One request = one `run` (struct run below). Each step:
 *   1. round 1: one POST /v1/step per active member, all at once (curl multi),
 *      carrying the bytes committed last step (append_b64) and the previous
 *      step's candidates that extend them (candidates_b64);
 *   2. the candidate set = union of the members' top proposals + carried ones;
 *      each member's Q for them comes from its top list (it asks for more
 *      entries than it proposes) or from its candidate answers;
 *   3. round 2, only when the strategy needs a Q that some member has not
 *      given: a /v1/step with only candidates_b64 (no state change);
 *   4. strategy -> distribution over events -> sample -> commit.
 */
#include "coordinator/engine/ensemble.h"

#include "common/b64.h"
#include "common/log.h"
#include "common/sbuf.h"
#include "common/utf8.h"
#include "coordinator/engine/members.h"
#include "sampler/sampler.h"
#include "sampler/strategy.h"
#include "vocab_align/candidates.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MULTI_POOL 16
#define DEFAULT_K_PROP 8

struct ensemble {
    member_set *ms;
    size_t nm;
    ensemble_config cfg;    /* strategy filled in ("mixture" when none given) */
    double weights[MEMBERS_MAX];
    pthread_mutex_t mu;
    CURLM *multi[MULTI_POOL];
    int n_multi;
};

/* strncpy-like copy that always terminates (and keeps -Wformat-truncation quiet). */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static const char *find_bytes(const char *h, size_t hl, const char *n, size_t nl) {
    if (nl == 0 || hl < nl) return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && !memcmp(h + i, n, nl)) return h + i;
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- base64 into a byte buffer (common/sbuf.h) ------------------------- */

static int sb_b64(sbuf *b, const void *s, size_t n) {
    char *e = b64_encode(s, n);
    if (!e) return -1;
    int r = sb_str(b, e);
    free(e);
    return r;
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
    const char *default_strategy = cfg->strategy[0] ? cfg->strategy : "mixture";
    const double *default_weights = cfg->n_weights ? cfg->weights : NULL;
    sstrat st;
    if (check_strategy(ms, default_strategy, &st, err, errlen)) return NULL;
    ensemble *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->ms = ms;
    e->nm = members_count(ms);
    e->cfg = *cfg;
    copy_str(e->cfg.strategy, sizeof e->cfg.strategy, default_strategy);
    double s = 0;
    for (size_t i = 0; i < e->nm; i++) {
        e->weights[i] = default_weights ? default_weights[i] : 1.0;
        if (!(e->weights[i] >= 0) || !isfinite(e->weights[i])) {
            snprintf(err, errlen, "weights must be finite and non-negative");
            free(e);
            return NULL;
        }
        s += e->weights[i];
    }
    if (!(s > 0)) {
        snprintf(err, errlen, "at least one weight must be positive");
        free(e);
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

void ensemble_free(ensemble *e) {
    if (!e) return;
    for (int i = 0; i < e->n_multi; i++) curl_multi_cleanup(e->multi[i]);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int ensemble_strategy_valid(const ensemble *e, const char *strategy, char *err, size_t errlen) {
    sstrat st;
    return check_strategy(e->ms, strategy, &st, err, errlen);
}

static CURLM *multi_get(ensemble *e) {
    CURLM *m = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->n_multi > 0) m = e->multi[--e->n_multi];
    pthread_mutex_unlock(&e->mu);
    return m ? m : curl_multi_init();
}

static void multi_put(ensemble *e, CURLM *m) {
    if (!m) return;
    pthread_mutex_lock(&e->mu);
    if (e->n_multi < MULTI_POOL) {
        e->multi[e->n_multi++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    if (m) curl_multi_cleanup(m);
}

/* ---- one request ----------------------------------------------------------- */

typedef struct {
    size_t idx;              /* index in the member set */
    int active;              /* queried this request (weight > 0 and not failed) */
    int failed;
    char failure[160];
    double w;                /* raw weight */
    char session[64];
    CURL *h;
    struct curl_slist *hdr;
    sbuf body, resp;
    int pending;             /* in the current round */
    int result;              /* CURLcode of the last call */
    long status;
    double rtt_sum;
    int n_calls;
    int prompt_tokens;
    long decoded;
    int steps_won;
    size_t bytes_won;
    /* last answer */
    vcand_set top;           /* its top strings, in its order */
    double *top_lq;
    size_t top_cap;
    double *cand_lq;         /* answers to the candidates_b64 of round 1 */
    size_t cand_cap;
    double end_lq;
    int own_choice;          /* its greedy event over its own proposals */
    vcand_set asked;         /* the candidates_b64 of its latest state-changing call */
    int fresh;               /* answered for the current text this step */
    sbuf lag;                /* committed bytes not yet sent to it */
} mstate;

typedef struct {
    ensemble *e;
    const ensemble_request *req;
    member_set *ms;
    CURLM *multi;
    size_t nm;
    mstate m[MEMBERS_MAX];
    sstrat st;
    size_t lead;
    double threshold, step_timeout;
    int k_prop, k_ask;
    vcand_set cand, carry, next_carry, missing;
    size_t mat_cap;          /* columns allocated in the matrices */
    double *lq;              /* [m * mat_cap + c] */
    double *ev;              /* [m * (mat_cap + 1) + e] */
    double *own;             /* [m * (mat_cap + 1) + e] */
    double *dist, *work;
    double *mlo;             /* scratch of sstrat_greedy_bound, 4 * (mat_cap + 1) */
    size_t *order;
    double wn[MEMBERS_MAX];
    srng rng;
    sbuf g;                  /* committed bytes G */
    size_t emitted;          /* bytes of G already emitted */
    sbuf out;                /* emitted (sanitised) text */
    double pending_lp;       /* log-prob of steps not yet emitted */
    int rounds, second_rounds, skipped_rounds, catchups, sessions_recreated;
    int ctx_full;            /* a member's context is full: finish with "length" */
    int stopped;             /* callback asked to stop */
    char err[256];
    int status;
} run;

static void fail_member(run *r, mstate *m, const char *why) {
    if (m->failed) return;
    m->failed = 1;
    m->active = 0;
    copy_str(m->failure, sizeof m->failure, why);
    log_warn("request: member '%s' dropped: %s", members_name(r->ms, m->idx), why);
}

static size_t n_active(const run *r) {
    size_t k = 0;
    for (size_t i = 0; i < r->nm; i++) k += r->m[i].active;
    return k;
}

static int setup_handle(run *r, mstate *m) {
    m->h = members_handle_get(r->ms, m->idx);
    if (!m->h) return -1;
    char url[512];
    snprintf(url, sizeof url, "%s/v1/step", members_url(r->ms, m->idx));
    m->hdr = curl_slist_append(NULL, "Content-Type: application/json");
    m->hdr = curl_slist_append(m->hdr, "Expect:");
    curl_easy_reset(m->h);
    curl_easy_setopt(m->h, CURLOPT_URL, url);
    curl_easy_setopt(m->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(m->h, CURLOPT_HTTPHEADER, m->hdr);
    curl_easy_setopt(m->h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(m->h, CURLOPT_WRITEDATA, &m->resp);
    curl_easy_setopt(m->h, CURLOPT_TIMEOUT_MS, (long)(r->step_timeout * 1000));
    curl_easy_setopt(m->h, CURLOPT_CONNECTTIMEOUT_MS, (long)(r->step_timeout * 1000));
    curl_easy_setopt(m->h, CURLOPT_PRIVATE, m);
    curl_easy_setopt(m->h, CURLOPT_POST, 1L);
    return 0;
}

/* Sends every pending body at once; waits for all answers or the deadline. */
static void run_round(run *r, int count) {
    int n = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        m->resp.n = 0;
        curl_easy_setopt(m->h, CURLOPT_POSTFIELDSIZE, (long)m->body.n);
        curl_easy_setopt(m->h, CURLOPT_POSTFIELDS, m->body.p);
        curl_multi_add_handle(r->multi, m->h);
        n++;
    }
    if (!n) return;
    if (count) r->rounds++;
    int running = 0;
    do {
        CURLMcode mc = curl_multi_perform(r->multi, &running);
        if (mc != CURLM_OK) break;
        if (running) curl_multi_poll(r->multi, NULL, 0, 100, NULL);
    } while (running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(r->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        mstate *m = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&m);
        if (m) m->result = msg->data.result;
    }
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        curl_multi_remove_handle(r->multi, m->h);
        m->status = 0;
        curl_easy_getinfo(m->h, CURLINFO_RESPONSE_CODE, &m->status);
        if (count) {
            double t = 0;
            curl_easy_getinfo(m->h, CURLINFO_TOTAL_TIME, &t);
            m->rtt_sum += t;
            m->n_calls++;
        }
    }
}

/* Parses a /v1/step answer into m->top, m->top_lq, m->cand_lq, m->end_lq.
 * Returns 0, or -1 with why filled. ctx_full set for context_length_exceeded. */
static int parse_answer(run *r, mstate *m, size_t n_asked, int first, int *ctx_full, char *why, size_t whylen) {
    const char *name = members_name(r->ms, m->idx), *url = members_url(r->ms, m->idx);
    if (m->result != CURLE_OK) {
        snprintf(why, whylen, "member '%s' (%s): %s", name, url, curl_easy_strerror((CURLcode)m->result));
        if (m->result != CURLE_OK) members_mark_down(r->ms, m->idx, why);
        return -1;
    }
    json_t *j = json_loadb(m->resp.p ? m->resp.p : "", m->resp.n, 0, NULL);
    if (m->status != 200) {
        const char *msg = NULL, *code = NULL;
        json_t *e = j ? json_object_get(j, "error") : NULL;
        if (e) {
            msg = json_string_value(json_object_get(e, "message"));
            code = json_string_value(json_object_get(e, "code"));
        }
        if (code && !strcmp(code, "context_length_exceeded")) *ctx_full = 1;
        snprintf(why, whylen, "member '%s' (%s): /v1/step: HTTP %ld%s%s", name, url, m->status,
                 msg ? ": " : "", msg ? msg : "");
        json_decref(j);
        return -1;
    }
    if (!json_is_object(j)) {
        snprintf(why, whylen, "member '%s' (%s): /v1/step: the answer is not JSON", name, url);
        json_decref(j);
        return -1;
    }
    if (first) {
        json_t *np = json_object_get(j, "n_past");
        m->prompt_tokens = json_is_integer(np) ? (int)json_integer_value(np) : 0;
    }
    json_t *dj = json_object_get(j, "decoded");
    if (json_is_integer(dj)) m->decoded += (long)json_integer_value(dj);
    json_t *el = json_object_get(j, "end_logq");
    m->end_lq = json_is_number(el) ? json_number_value(el) : -INFINITY;
    json_t *top = json_object_get(j, "top");
    vcand_clear(&m->top);
    size_t nt = json_array_size(top);
    if (nt > m->top_cap) {
        double *p = realloc(m->top_lq, nt * sizeof *p);
        if (!p) goto oom;
        m->top_lq = p;
        m->top_cap = nt;
    }
    for (size_t i = 0; i < nt; i++) {
        json_t *t = json_array_get(top, i);
        const char *s = json_string_value(json_object_get(t, "s_b64"));
        json_t *lq = json_object_get(t, "logq");
        size_t len;
        unsigned char *bytes = s ? b64_decode(s, &len) : NULL;
        if (!bytes) {
            snprintf(why, whylen, "member '%s' (%s): /v1/step: bad top entry %zu", name, url, i);
            json_decref(j);
            return -1;
        }
        size_t before = m->top.n;
        int k = vcand_add(&m->top, bytes, len, -1);
        free(bytes);
        if (k >= 0 && m->top.n > before) m->top_lq[k] = json_is_number(lq) ? json_number_value(lq) : -INFINITY;
    }
    json_t *ca = json_object_get(j, "candidates");
    if (n_asked > m->cand_cap) {
        double *p = realloc(m->cand_lq, n_asked * sizeof *p);
        if (!p) goto oom;
        m->cand_lq = p;
        m->cand_cap = n_asked;
    }
    if (n_asked && json_array_size(ca) != n_asked) {
        snprintf(why, whylen, "member '%s' (%s): /v1/step: %zu candidate answers for %zu asked", name, url,
                 json_array_size(ca), n_asked);
        json_decref(j);
        return -1;
    }
    for (size_t i = 0; i < n_asked; i++) {
        json_t *v = json_array_get(ca, i);
        m->cand_lq[i] = json_is_number(v) ? json_number_value(v) : -INFINITY;
    }
    json_decref(j);
    return 0;
oom:
    snprintf(why, whylen, "out of memory");
    json_decref(j);
    return -1;
}

static int add_candidates_json(sbuf *b, const vcand_set *cs) {
    if (sb_str(b, ",\"candidates_b64\":[")) return -1;
    for (size_t i = 0; i < cs->n; i++) {
        if (i && sb_str(b, ",")) return -1;
        if (sb_str(b, "\"") || sb_b64(b, vcand_str(cs, i), cs->len[i]) || sb_str(b, "\"")) return -1;
    }
    return sb_str(b, "]");
}

/* Copies a candidate set (the strings asked of a member). */
static int vcand_copy(vcand_set *dst, const vcand_set *src) {
    vcand_clear(dst);
    for (size_t j = 0; j < src->n; j++)
        if (vcand_add(dst, vcand_str(src, j), src->len[j], -1) < 0) return -1;
    return 0;
}

/* The body that creates member m's session: the prompt (or messages) and,
 * when re-creating a session the worker evicted, every byte committed so
 * far as one append (the worker heals it like any other append), plus the
 * candidates `ask`. */
static int creating_body(run *r, mstate *m, int with_g, const vcand_set *ask) {
    json_t *o = json_object();
    json_object_set_new(o, "session", json_string(m->session));
    if (r->req->messages) json_object_set(o, "messages", (json_t *)r->req->messages);
    else json_object_set_new(o, "prompt", json_string(r->req->prompt ? r->req->prompt : ""));
    json_object_set_new(o, "k", json_integer(r->k_ask));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return -1;
    m->body.n = 0;
    int rc = sb_str(&m->body, s);
    free(s);
    if (rc) return -1;
    m->body.n--; /* reopen the object: drop its closing brace */
    if (with_g && r->g.n &&
        (sb_str(&m->body, ",\"append_b64\":\"") || sb_b64(&m->body, r->g.p, r->g.n) || sb_str(&m->body, "\"")))
        return -1;
    if (ask && ask->n && add_candidates_json(&m->body, ask)) return -1;
    if (sb_str(&m->body, "}")) return -1;
    return ask ? vcand_copy(&m->asked, ask) : (vcand_clear(&m->asked), 0);
}

/* 404 session_not_found: the worker evicted this request's session (more
 * concurrent sessions than its --slots). */
static int session_lost(const mstate *m) {
    if (m->result != CURLE_OK || m->status != 404 || !m->resp.p) return 0;
    json_t *j = json_loadb(m->resp.p, m->resp.n, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    int lost = code && !strcmp(code, "session_not_found");
    json_decref(j);
    return lost;
}

/* A state-changing call per selected member: the first creates the session
 * (prompt or messages); later ones send the member's lag (every byte
 * committed since it was last asked) and `ask` as candidates_b64. A member
 * whose session was evicted gets it re-created once, from the prompt and
 * all of G. Returns 0, 1 when a member's context is full (finish with
 * "length"), -1 on error. */
static int call_members(run *r, int first, const int *sel, const vcand_set *ask) {
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = 0;
        if (!m->active || !sel[i]) continue;
        m->body.n = 0;
        if (first) {
            if (creating_body(r, m, 0, NULL)) return -1;
        } else {
            char head[160];
            snprintf(head, sizeof head, "{\"session\":\"%s\",\"k\":%d", m->session, r->k_ask);
            if (sb_str(&m->body, head)) return -1;
            if (m->lag.n && (sb_str(&m->body, ",\"append_b64\":\"") || sb_b64(&m->body, m->lag.p, m->lag.n) ||
                             sb_str(&m->body, "\""))) return -1;
            if (ask && ask->n && add_candidates_json(&m->body, ask)) return -1;
            if (sb_str(&m->body, "}")) return -1;
            if (ask ? vcand_copy(&m->asked, ask) : (vcand_clear(&m->asked), 0)) return -1;
        }
        m->lag.n = 0;
        m->pending = 1;
    }
    run_round(r, 1);
    if (!first) {
        int again = 0;
        for (size_t i = 0; i < r->nm; i++) {
            mstate *m = &r->m[i];
            int lost = m->pending && session_lost(m);
            if (lost) {
                log_info("request: member '%s' lost its session (evicted): re-creating it",
                         members_name(r->ms, m->idx));
                if (creating_body(r, m, 1, ask)) return -1;
                r->sessions_recreated++;
            }
            m->pending = lost;
            again |= lost;
        }
        if (again) run_round(r, 1);
        for (size_t i = 0; i < r->nm; i++) r->m[i].pending = r->m[i].active && sel[i];
    }
    int any_full = 0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        char why[256];
        int ctx_full = 0;
        if (parse_answer(r, m, m->asked.n, first, &ctx_full, why, sizeof why)) {
            if (ctx_full && first) {
                r->status = 400;
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
static int step_round1(run *r, int first) {
    int sel[MEMBERS_MAX];
    int lead_only = !first && r->st.kind == SSTRAT_SELECTIVE && r->m[r->lead].active;
    for (size_t i = 0; i < r->nm; i++) {
        r->m[i].fresh = 0;
        sel[i] = !lead_only || i == r->lead;
    }
    return call_members(r, first, sel, &r->carry);
}

static int ensure_cols(run *r, size_t n) {
    if (n <= r->mat_cap) return 0;
    size_t cap = r->mat_cap ? r->mat_cap : 64;
    while (cap < n) cap *= 2;
    double *lq = realloc(r->lq, r->nm * cap * sizeof *lq);
    if (!lq) return -1;
    r->lq = lq;
    double *ev = realloc(r->ev, r->nm * (cap + 1) * sizeof *ev);
    if (!ev) return -1;
    r->ev = ev;
    double *own = realloc(r->own, r->nm * (cap + 1) * sizeof *own);
    if (!own) return -1;
    r->own = own;
    double *d = realloc(r->dist, (cap + 1) * sizeof *d);
    if (!d) return -1;
    r->dist = d;
    double *w = realloc(r->work, (cap + 1) * sizeof *w);
    if (!w) return -1;
    r->work = w;
    size_t *o = realloc(r->order, (cap + 1) * sizeof *o);
    if (!o) return -1;
    r->order = o;
    double *sc = realloc(r->mlo, 4 * (cap + 1) * sizeof *sc);
    if (!sc) return -1;
    r->mlo = sc;
    r->mat_cap = cap;
    return 0;
}

/* Events of member m over the candidates it proposed itself (its own view). */
static void own_events(run *r, size_t mi, double *out) {
    const vcand_set *cs = &r->cand;
    size_t n = cs->n;
    const double *lq = r->lq + mi * r->mat_cap;
    uint32_t bit = (uint32_t)1 << mi;
    for (size_t c = 0; c < n; c++) out[c] = (cs->proposers[c] & bit) && !isnan(lq[c]) ? exp(lq[c]) : 0;
    for (size_t c = 0; c < n; c++) {
        if (!(cs->proposers[c] & bit) || isnan(lq[c])) continue;
        int a = cs->parent[c];
        while (a >= 0 && !(cs->proposers[a] & bit)) a = cs->parent[a];
        if (a >= 0) out[a] -= exp(lq[c]);
    }
    for (size_t c = 0; c < n; c++)
        if (!(out[c] > 1e-15)) out[c] = 0;
    out[n] = exp(r->m[mi].end_lq);
}

/* Asks, in one concurrent round 2, each member in `need` for the candidates
 * whose Q it has not given; `only` (if non-NULL) restricts to those events. */
static void fill_missing(run *r, const int *need, const int *only) {
    size_t n = r->cand.n;
    int any = 0;
    size_t *map[MEMBERS_MAX] = {0};
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = 0;
        if (!m->active || !need[i]) continue;
        double *lq = r->lq + i * r->mat_cap;
        size_t k = 0;
        for (size_t c = 0; c < n; c++)
            if (isnan(lq[c]) && (!only || only[c])) k++;
        if (!k) continue;
        map[i] = malloc(k * sizeof *map[i]);
        if (!map[i]) continue;
        m->body.n = 0;
        char head[128];
        /* the same k as round 1: the worker absorbs (without healing) only
         * strings reported in its latest answer, so its own top entries must
         * stay listed there */
        snprintf(head, sizeof head, "{\"session\":\"%s\",\"k\":%d,\"candidates_b64\":[", m->session, r->k_ask);
        sb_str(&m->body, head);
        size_t j = 0;
        for (size_t c = 0; c < n; c++) {
            if (!isnan(lq[c]) || (only && !only[c])) continue;
            if (j) sb_str(&m->body, ",");
            sb_str(&m->body, "\"");
            sb_b64(&m->body, vcand_str(&r->cand, c), r->cand.len[c]);
            sb_str(&m->body, "\"");
            map[i][j++] = c;
        }
        sb_str(&m->body, "]}");
        m->pending = 1;
        any = 1;
    }
    if (!any) return;
    r->second_rounds++;
    run_round(r, 1);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) {
            free(map[i]);
            continue;
        }
        double *lq = r->lq + i * r->mat_cap;
        size_t k = 0;
        for (size_t c = 0; c < n; c++)
            if (isnan(lq[c]) && (!only || only[c])) k++;
        int ctx_full = 0;
        char why[256];
        /* parse_answer overwrites top/end with the same state's values */
        if (parse_answer(r, m, k, 0, &ctx_full, why, sizeof why)) {
            fail_member(r, m, why);
        } else {
            for (size_t j = 0; j < k; j++) lq[map[i][j]] = m->cand_lq[j];
            vcand_clear(&m->asked); /* cand_lq now answers this round's list */
        }
        free(map[i]);
    }
}

/* Builds the candidate set and the Q matrix from the round-1 answers. */
static int build_candidates(run *r) {
    vcand_clear(&r->cand);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->active || !m->fresh) continue;
        size_t kp = (size_t)r->k_prop;
        for (size_t t = 0; t < m->top.n && t < kp; t++)
            if (vcand_add(&r->cand, vcand_str(&m->top, t), m->top.len[t], (int)i) < 0) return -1;
    }
    for (size_t j = 0; j < r->carry.n; j++)
        if (vcand_add(&r->cand, vcand_str(&r->carry, j), r->carry.len[j], -1) < 0) return -1;
    vcand_link(&r->cand);
    size_t n = r->cand.n;
    if (ensure_cols(r, n + 1)) return -1;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        double *lq = r->lq + i * r->mat_cap;
        for (size_t c = 0; c < n; c++) lq[c] = NAN;
        if (!m->active || !m->fresh) continue;
        for (size_t t = 0; t < m->top.n; t++) {
            int c = vcand_find(&r->cand, vcand_str(&m->top, t), m->top.len[t]);
            if (c >= 0) lq[c] = m->top_lq[t];
        }
        for (size_t j = 0; j < m->asked.n; j++) {
            int c = vcand_find(&r->cand, vcand_str(&m->asked, j), m->asked.len[j]);
            if (c >= 0 && isnan(lq[c])) lq[c] = m->cand_lq[j];
        }
    }
    return 0;
}

static void weights_now(run *r) {
    double w[MEMBERS_MAX];
    int alive[MEMBERS_MAX];
    for (size_t i = 0; i < r->nm; i++) {
        w[i] = r->m[i].w;
        alive[i] = r->m[i].active;
    }
    sstrat_norm_weights(r->nm, w, alive, r->wn);
}

static void debug_step(run *r, int pick) {
    size_t n = r->cand.n, ne = n + 1;
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
        o += snprintf(line + o, sizeof line - (size_t)o, "\" parent %d p %.4f |", c < n ? r->cand.parent[c] : -1, r->dist[c]);
        for (size_t i = 0; i < r->nm && o < 480; i++)
            if (r->m[i].active)
                o += snprintf(line + o, sizeof line - (size_t)o, " %s: q %.4f ev %.4f", members_name(r->ms, i),
                              c < n ? exp(r->lq[i * r->mat_cap + c]) : exp(r->m[i].end_lq), r->ev[i * ne + c]);
        log_debug("%s", line);
    }
}

/* Greedy mixture without a second round when the missing masses cannot
 * change the winner (sstrat_greedy_bound). */
static int greedy_decided(run *r) {
    double endq[MEMBERS_MAX];
    for (size_t i = 0; i < r->nm; i++) endq[i] = r->m[i].active ? r->m[i].end_lq : -INFINITY;
    double wn[MEMBERS_MAX];
    for (size_t i = 0; i < r->nm; i++) wn[i] = r->m[i].active ? r->wn[i] : 0;
    return sstrat_greedy_bound(r->nm, r->cand.n, r->cand.parent, r->lq, r->mat_cap, endq, wn, r->mlo);
}

/* Each member that answered this step: its events over its own proposals
 * (r->own) and its greedy choice among them. */
static void own_choices(run *r) {
    size_t ne = r->cand.n + 1, stride = r->mat_cap + 1;
    for (size_t i = 0; i < r->nm; i++) {
        r->m[i].own_choice = -1;
        if (!r->m[i].active || !r->m[i].fresh) continue;
        own_events(r, i, r->own + i * stride);
        r->m[i].own_choice = ssample_argmax(r->own + i * stride, ne);
    }
}

/* One step's decision. Returns the chosen event (n = END), -1 none. */
static int decide(run *r) {
    size_t n = r->cand.n, ne = n + 1, stride = r->mat_cap + 1;
    const ssample_params sp = {r->req->temperature, r->req->top_p, r->req->min_p, r->req->top_k};
    int need[MEMBERS_MAX];
    weights_now(r);
    own_choices(r);
    enum sstrat_kind k = r->st.kind;
    if (k == SSTRAT_SELECTIVE && r->m[r->lead].active) {
        if (sstrat_selective(1, ne, r->own + r->lead * stride, (double[]){1}, 0, r->threshold, r->dist)) {
            return ssample_pick(r->dist, ne, &sp, &r->rng, r->work, r->order);
        }
        /* the lead is unsure: the others catch up (their lag in one append)
         * and answer for the current candidates, then everyone proposes */
        int sel[MEMBERS_MAX], any = 0;
        for (size_t i = 0; i < r->nm; i++) any |= sel[i] = r->m[i].active && !r->m[i].fresh;
        if (any) {
            r->catchups++;
            if (call_members(r, 0, sel, &r->cand) != 0) return -1;
            if (build_candidates(r)) return -1;
            n = r->cand.n;
            ne = n + 1;
            stride = r->mat_cap + 1;
            weights_now(r);
            own_choices(r);
        }
    }
    if (k == SSTRAT_MIN_PPL || k == SSTRAT_MIN_PPL_CROSS) {
        int prop[MEMBERS_MAX];
        double score[MEMBERS_MAX];
        int only_buf[1024];
        int *only = ne <= 1024 ? only_buf : calloc(ne, sizeof *only);
        if (!only) return -1;
        memset(only, 0, ne * sizeof *only);
        memset(need, 0, sizeof need);
        for (size_t i = 0; i < r->nm; i++) {
            prop[i] = -1;
            if (!r->m[i].active || !(r->wn[i] > 0)) continue;
            prop[i] = ssample_pick(r->own + i * stride, ne, &sp, &r->rng, r->work, r->order);
            if (prop[i] >= 0 && (size_t)prop[i] < n) only[prop[i]] = 1;
            need[i] = 1;
        }
        if (k == SSTRAT_MIN_PPL_CROSS) {
            fill_missing(r, need, only);
            weights_now(r);
        }
        if (only != only_buf) free(only);
        double endq[MEMBERS_MAX];
        for (size_t i = 0; i < r->nm; i++) endq[i] = r->m[i].end_lq;
        /* a proposal stays valid only while its proposer is alive */
        for (size_t i = 0; i < r->nm; i++)
            if (!r->m[i].active) prop[i] = -1;
        int win = sstrat_min_ppl(r->nm, n, r->lq, r->mat_cap, endq, r->cand.len, prop, r->wn,
                                 k == SSTRAT_MIN_PPL_CROSS, score);
        /* reported distribution: the winner's proposer's own view */
        for (size_t e = 0; e < ne; e++) r->dist[e] = 0;
        for (size_t i = 0; i < r->nm; i++)
            if (win >= 0 && prop[i] == win) {
                const double *o = r->own + i * stride;
                double s = 0;
                for (size_t e = 0; e < ne; e++) s += o[e];
                for (size_t e = 0; e < ne && s > 0; e++) r->dist[e] = o[e] / s;
                break;
            }
        return win;
    }
    /* mixture, product, solo, selective below threshold: every Q needed */
    for (size_t i = 0; i < r->nm; i++) need[i] = r->m[i].active && r->wn[i] > 0;
    int decided = -1, missing = 0;
    for (size_t i = 0; i < r->nm && !missing; i++)
        for (size_t c = 0; need[i] && c < n && !missing; c++) missing = isnan(r->lq[i * r->mat_cap + c]);
    if (missing && !(r->req->temperature > 1e-6) && k != SSTRAT_PRODUCT && !r->e->cfg.no_round_skip) decided = greedy_decided(r);
    if (decided >= 0) r->skipped_rounds++;
    else fill_missing(r, need, NULL);
    weights_now(r);
    if (n_active(r) == 0) return -1;
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active) sstrat_events(n, r->cand.parent, r->lq + i * r->mat_cap, r->m[i].end_lq, r->ev + i * ne);
        else for (size_t e = 0; e < ne; e++) r->ev[i * ne + e] = 0;
    if (k == SSTRAT_PRODUCT) sstrat_product(r->nm, ne, r->ev, r->wn, r->dist);
    else sstrat_mixture(r->nm, ne, r->ev, r->wn, r->dist);
    /* (after a skipped round the distribution counts missing masses as 0;
     * it only serves the reported logprobs) */
    int pick = decided >= 0 ? decided : ssample_pick(r->dist, ne, &sp, &r->rng, r->work, r->order);
    if (log_enabled(LOG_DEBUG)) debug_step(r, pick);
    return pick;
}

/* ---- output: stop sequences, UTF-8 hold-back ------------------------------- */

static int emit(run *r, size_t upto, ensemble_on_chunk cb, void *ud, int chosen) {
    if (upto <= r->emitted) return 0;
    size_t len;
    char *s = utf8_sanitize(r->g.p + r->emitted, upto - r->emitted, &len);
    if (!s) return -1;
    r->emitted = upto;
    sb_add(&r->out, s, len);
    ensemble_chunk ch;
    memset(&ch, 0, sizeof ch);
    ch.text = s;
    ch.len = len;
    ch.logprob = r->pending_lp;
    r->pending_lp = 0;
    if (r->req->logprobs > 0 && chosen >= 0) {
        size_t ne = r->cand.n + 1;
        int want = r->req->logprobs > ENSEMBLE_MAX_LOGPROBS ? ENSEMBLE_MAX_LOGPROBS : r->req->logprobs;
        for (size_t e = 0; e < ne; e++) r->order[e] = e;
        /* partial selection of the most probable events */
        for (int t = 0; t < want && (size_t)t < ne; t++) {
            size_t best = (size_t)t;
            for (size_t e = (size_t)t + 1; e < ne; e++)
                if (r->dist[r->order[e]] > r->dist[r->order[best]]) best = e;
            size_t tmp = r->order[t];
            r->order[t] = r->order[best];
            r->order[best] = tmp;
            size_t ev = r->order[t];
            if (!(r->dist[ev] > 0)) break;
            ch.top[t].text = ev < r->cand.n ? vcand_str(&r->cand, ev) : "";
            ch.top[t].len = ev < r->cand.n ? r->cand.len[ev] : 0;
            ch.top[t].logprob = log(r->dist[ev]);
            ch.n_top = t + 1;
        }
    }
    int stop = cb ? cb(ud, &ch) : 0;
    free(s);
    if (stop) r->stopped = 1;
    return 0;
}

/* After a commit: emits what is safe. Returns 1 when a stop sequence ended
 * the text (G is cut there). */
static int after_commit(run *r, ensemble_on_chunk cb, void *ud, int chosen) {
    const ensemble_request *q = r->req;
    size_t len = r->g.n, start = r->emitted;
    size_t stop_at = (size_t)-1;
    size_t hold = 0;
    for (size_t i = 0; i < q->n_stop; i++) {
        const char *s = q->stop[i];
        size_t sl = s ? strlen(s) : 0;
        if (!sl) continue;
        if (len - start >= sl) {
            const char *hit = find_bytes(r->g.p + start, len - start, s, sl);
            if (hit && (size_t)(hit - r->g.p) < stop_at) stop_at = (size_t)(hit - r->g.p);
        }
        size_t kmax = sl - 1 < len - start ? sl - 1 : len - start;
        for (size_t k = kmax; k > hold; k--)
            if (!memcmp(r->g.p + len - k, s, k)) {
                hold = k;
                break;
            }
    }
    if (stop_at != (size_t)-1) {
        r->g.n = stop_at;
        emit(r, stop_at, cb, ud, chosen);
        return 1;
    }
    size_t upto = len - hold;
    upto = start + utf8_complete_len(r->g.p + start, upto - start);
    emit(r, upto, cb, ud, chosen);
    return 0;
}

/* ---- auto weights ------------------------------------------------------------ */

static void auto_weights(run *r) {
    sbuf text = {0};
    if (r->req->messages) {
        size_t i;
        json_t *msg;
        json_array_foreach(r->req->messages, i, msg) {
            const char *c = json_string_value(json_object_get(msg, "content"));
            if (c) {
                if (text.n) sb_str(&text, "\n");
                sb_str(&text, c);
            }
        }
    } else if (r->req->prompt) {
        sb_str(&text, r->req->prompt);
    }
    double nll[MEMBERS_MAX], w[MEMBERS_MAX];
    int okm[MEMBERS_MAX];
    json_t *body = json_object();
    json_object_set_new(body, "text", json_stringn(text.p ? text.p : "", text.n));
    json_object_set_new(body, "doc_start", json_true());
    char *payload = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char url[512];
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        okm[i] = 0;
        nll[i] = INFINITY;
        m->pending = 0;
        if (!m->active || !payload) continue;
        m->body.n = 0;
        sb_str(&m->body, payload);
        snprintf(url, sizeof url, "%s/v1/score", members_url(r->ms, m->idx));
        curl_easy_setopt(m->h, CURLOPT_URL, url);
        m->pending = 1;
    }
    free(payload);
    if (text.n) run_round(r, 0);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!m->pending) continue;
        snprintf(url, sizeof url, "%s/v1/step", members_url(r->ms, m->idx));
        curl_easy_setopt(m->h, CURLOPT_URL, url);
        if (!text.n) {
            okm[i] = 1;
            continue;
        }
        json_t *j = m->result == CURLE_OK && m->status == 200 ? json_loadb(m->resp.p, m->resp.n, 0, NULL) : NULL;
        json_t *sl = j ? json_object_get(j, "sum_logprob") : NULL;
        if (json_is_number(sl)) {
            nll[i] = -json_number_value(sl);
            okm[i] = 1;
        } else {
            log_warn("auto weights: member '%s' (%s) gave no score (HTTP %ld); weight 0",
                     members_name(r->ms, m->idx), members_url(r->ms, m->idx), m->status);
        }
        json_decref(j);
    }
    sstrat_auto_weights(r->nm, nll, (double)text.n, okm, w);
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active) r->m[i].w = w[i];
    free(text.p);
}

/* ---- sessions cleanup -------------------------------------------------------- */

static void delete_sessions(run *r) {
    char url[512];
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        m->pending = 0;
        if (!m->h || !m->session[0] || (m->failed && m->result != CURLE_OK)) continue;
        snprintf(url, sizeof url, "%s/v1/session/%s", members_url(r->ms, m->idx), m->session);
        curl_easy_setopt(m->h, CURLOPT_URL, url);
        curl_easy_setopt(m->h, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(m->h, CURLOPT_TIMEOUT_MS, 2000L);
        m->body.n = 0;
        sb_str(&m->body, "");
        m->pending = 1;
    }
    run_round(r, 0);
}

/* ---- the request ------------------------------------------------------------- */

static unsigned long session_counter;

static int fail_req(ensemble_result *out, int status, const char *msg) {
    out->status = status;
    snprintf(out->error, sizeof out->error, "%s", msg);
    out->finish_reason = "stop";
    if (!out->text) out->text = calloc(1, 1);
    return -1;
}

int ensemble_generate(ensemble *e, const ensemble_request *req, ensemble_on_chunk on_chunk, void *ud,
                      ensemble_result *out) {
    memset(out, 0, sizeof *out);
    double t0 = now_s(), c0 = cpu_s();
    char err[256];
    run *r = calloc(1, sizeof *r);
    if (!r) return fail_req(out, 500, "out of memory");
    r->e = e;
    r->req = req;
    r->ms = e->ms;
    r->nm = e->nm;
    const ensemble_config *opt = &e->cfg;
    r->threshold = req->threshold > 0 ? req->threshold : opt->threshold > 0 ? opt->threshold : SSTRAT_DEFAULT_THRESHOLD;
    r->step_timeout = opt->step_timeout > 0 ? opt->step_timeout : 30;
    /* Proposals per member: greedy takes each member's own best token (so a
     * lone member, or a model paired with itself, reproduces its greedy text
     * exactly, see STRATEGIES.md); sampling takes several. A worker picks its
     * top-k by token probability but lists them by prefix mass, so asking
     * for more entries than we propose would hide which are its best: we ask
     * for exactly k_prop (the price: more second rounds). */
    int greedy = !(req->temperature > 1e-6);
    r->k_prop = opt->member_k > 0 ? opt->member_k : greedy ? 1 : DEFAULT_K_PROP;
    r->k_ask = r->k_prop;
    vcand_init(&r->cand);
    vcand_init(&r->carry);
    vcand_init(&r->next_carry);
    vcand_init(&r->missing);
    int rc = -1;

    out->members = calloc(r->nm, sizeof *out->members);
    out->n_members = r->nm;
    if (!out->members) {
        fail_req(out, 500, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < r->nm; i++) {
        snprintf(out->members[i].name, sizeof out->members[i].name, "%s", members_name(e->ms, i));
        vcand_init(&r->m[i].top);
        vcand_init(&r->m[i].asked);
        r->m[i].idx = i;
    }

    /* validation */
    const char *strategy = req->strategy && *req->strategy ? req->strategy : e->cfg.strategy;
    if (check_strategy(e->ms, strategy, &r->st, err, sizeof err)) {
        fail_req(out, 400, err);
        goto done;
    }
    if (req->max_tokens < 0) {
        fail_req(out, 400, "max_tokens must be >= 0");
        goto done;
    }
    if (!req->prompt && !req->messages) {
        fail_req(out, 400, "a prompt or messages is required");
        goto done;
    }
    if (req->messages && !json_is_array(req->messages)) {
        fail_req(out, 400, "messages must be an array");
        goto done;
    }
    if (!(req->temperature >= 0) || !isfinite(req->temperature)) {
        fail_req(out, 400, "temperature must be >= 0");
        goto done;
    }
    int used[MEMBERS_MAX] = {0};
    size_t n_used = 0;
    if (req->members && req->n_members) {
        for (size_t j = 0; j < req->n_members; j++) {
            int k = members_index(e->ms, req->members[j]);
            if (k < 0) {
                snprintf(err, sizeof err, "unknown member '%s'", req->members[j]);
                fail_req(out, 400, err);
                goto done;
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
        fail_req(out, 400, err);
        goto done;
    }
    {
        size_t j = 0;
        double ws = 0;
        for (size_t i = 0; i < r->nm; i++) {
            mstate *m = &r->m[i];
            if (!used[i]) continue;
            m->w = req->weights ? req->weights[j++] : e->weights[i];
            if (!(m->w >= 0) || !isfinite(m->w)) {
                fail_req(out, 400, "weights must be finite and non-negative");
                goto done;
            }
            ws += m->w;
        }
        if (!(ws > 0) && !(req->weights_auto || (e->cfg.weights_auto && !req->weights))) {
            fail_req(out, 400, "at least one weight must be positive");
            goto done;
        }
    }
    if (r->st.kind == SSTRAT_SOLO) {
        int k = members_index(e->ms, r->st.solo);
        if (!used[k]) {
            snprintf(err, sizeof err, "strategy solo:%s names a member not in this request", r->st.solo);
            fail_req(out, 400, err);
            goto done;
        }
        for (size_t i = 0; i < r->nm; i++) r->m[i].w = (int)i == k ? 1 : 0;
    }
    int want_auto = r->st.kind != SSTRAT_SOLO && (req->weights_auto || (e->cfg.weights_auto && !req->weights));
    if (want_auto)
        for (size_t i = 0; i < r->nm; i++) r->m[i].w = used[i] ? 1 : 0;

    /* members taking part */
    unsigned long sid = __atomic_fetch_add(&session_counter, 1, __ATOMIC_RELAXED);
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (!used[i] || !(m->w > 0)) continue;
        if (!members_usable(e->ms, i)) {
            snprintf(m->failure, sizeof m->failure, "member '%s' (%s) is down", members_name(e->ms, i),
                     members_url(e->ms, i));
            m->failed = 1;
            continue;
        }
        m->active = 1;
        snprintf(m->session, sizeof m->session, "cs-%d-%lu-%zu", (int)getpid(), sid, i);
        if (setup_handle(r, m)) {
            fail_req(out, 500, "out of memory");
            goto done;
        }
    }
    r->lead = 0;
    for (size_t i = 0; i < r->nm; i++)
        if (r->m[i].active) {
            r->lead = i;
            break;
        }
    if (n_active(r) == 0) {
        fail_req(out, 503, "no member is available");
        goto done;
    }
    r->multi = multi_get(e);
    if (!r->multi) {
        fail_req(out, 500, "curl multi init failed");
        goto done;
    }
    uint64_t seed = req->has_seed ? req->seed : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ sid * 0x9e3779b97f4a7c15ULL;
    srng_seed(&r->rng, seed);
    if (want_auto) auto_weights(r);

    /* the steps */
    const char *finish = "length";
    int st = step_round1(r, 1);
    if (st < 0) {
        fail_req(out, r->status ? r->status : 500, r->err[0] ? r->err : "request failed");
        goto done;
    }
    int steps = 0;
    while (1) {
        if (n_active(r) == 0) break;
        if (st == 1 || steps >= req->max_tokens) {
            finish = "length";
            break;
        }
        if (build_candidates(r)) {
            fail_req(out, 500, "out of memory");
            goto done;
        }
        int ch = decide(r);
        if (n_active(r) == 0) break;
        if (r->ctx_full) {
            finish = "length";
            break;
        }
        if (ch < 0 || (size_t)ch == r->cand.n) {
            finish = "stop";
            if (ch >= 0 && r->dist[ch] > 0) r->pending_lp += log(r->dist[ch]);
            break;
        }
        const char *bytes = vcand_str(&r->cand, (size_t)ch);
        size_t blen = r->cand.len[ch];
        r->pending_lp += r->dist[ch] > 0 ? log(r->dist[ch]) : 0;
        for (size_t i = 0; i < r->nm; i++) {
            mstate *m = &r->m[i];
            if (!m->active) continue;
            if (m->own_choice == ch) m->steps_won++;
            if (r->cand.proposers[ch] & ((uint32_t)1 << i)) m->bytes_won += blen;
        }
        if (sb_add(&r->g, bytes, blen)) {
            fail_req(out, 500, "out of memory");
            goto done;
        }
        steps++;
        /* carry the candidates that extend the committed bytes */
        vcand_clear(&r->next_carry);
        vcand_carry(&r->cand, bytes, blen, &r->next_carry);
        vcand_set tmp = r->carry;
        r->carry = r->next_carry;
        r->next_carry = tmp;
        if (after_commit(r, on_chunk, ud, ch)) {
            finish = "stop";
            break;
        }
        if (r->stopped) {
            finish = "stop";
            break;
        }
        if (steps >= req->max_tokens) {
            finish = "length";
            break;
        }
        /* the committed bytes of this step, owed to every member */
        for (size_t i = 0; i < r->nm; i++)
            if (r->m[i].active && sb_add(&r->m[i].lag, bytes, blen)) {
                fail_req(out, 500, "out of memory");
                goto done;
            }
        st = step_round1(r, 0);
        if (st < 0) {
            fail_req(out, 500, r->err[0] ? r->err : "request failed");
            goto done;
        }
    }
    if (n_active(r) == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "no member left");
        for (size_t i = 0; i < r->nm; i++)
            if (r->m[i].failed) {
                snprintf(msg, sizeof msg, "no member left: %s", r->m[i].failure);
                break;
            }
        fail_req(out, 503, msg);
        /* what was generated so far stays in out->text below */
    }
    /* flush: everything committed (stop cut already applied) */
    if (!r->stopped) emit(r, r->g.n, on_chunk, ud, -1);
    out->finish_reason = finish;
    out->steps = steps;
    if (out->status == 0) rc = 0;

done:
    if (r->multi) {
        delete_sessions(r);
        multi_put(e, r->multi);
    }
    free(out->text);
    out->text = malloc(r->out.n + 1);
    if (out->text) {
        if (r->out.n) memcpy(out->text, r->out.p, r->out.n);
        out->text[r->out.n] = 0;
        out->len = r->out.n;
    }
    if (!out->finish_reason) out->finish_reason = "stop";
    weights_now(r);
    for (size_t i = 0; i < r->nm && out->members; i++) {
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
        if (m->prompt_tokens > out->prompt_tokens) out->prompt_tokens = m->prompt_tokens;
    }
    {
        double ws = 0;
        for (size_t i = 0; i < r->nm && out->members; i++) ws += out->members[i].weight;
        for (size_t i = 0; i < r->nm && out->members && ws > 0; i++) out->members[i].weight /= ws;
    }
    out->rounds = r->rounds;
    out->second_rounds = r->second_rounds;
    out->skipped_rounds = r->skipped_rounds;
    out->sessions_recreated = r->sessions_recreated;
    out->seconds = now_s() - t0;
    out->cpu_seconds = cpu_s() - c0;
    for (size_t i = 0; i < r->nm; i++) {
        mstate *m = &r->m[i];
        if (m->h) {
            curl_easy_setopt(m->h, CURLOPT_HTTPHEADER, NULL);
            members_handle_put(e->ms, m->idx, m->h);
        }
        curl_slist_free_all(m->hdr);
        free(m->body.p);
        free(m->resp.p);
        vcand_free(&m->top);
        vcand_free(&m->asked);
        free(m->lag.p);
        free(m->top_lq);
        free(m->cand_lq);
    }
    vcand_free(&r->cand);
    vcand_free(&r->carry);
    vcand_free(&r->next_carry);
    vcand_free(&r->missing);
    free(r->lq);
    free(r->ev);
    free(r->own);
    free(r->dist);
    free(r->work);
    free(r->order);
    free(r->mlo);
    free(r->g.p);
    free(r->out.p);
    free(r);
    return rc;
}

void ensemble_result_free(ensemble_result *res) {
    if (!res) return;
    free(res->text);
    free(res->members);
    res->text = NULL;
    res->members = NULL;
    res->n_members = 0;
}
