/* coordinator/engine/member_align.c: the alignment state machine of
 * member_align.h, shared by llama-server members (member_llama.c) and
 * OpenAI-compatible members (member_openai.c).
 *
 * Why it is shaped so. A consort-worker keeps the member's state (P, C, r,
 * its KV cache) and answers a step in one call. An ordinary LLM server
 * knows nothing of sessions or byte strings: it tokenizes (or a local
 * tokenizer does), renders chat, and returns the top-n next tokens of a
 * token prompt. So this file keeps the worker's state machine on the
 * coordinator side and asks the kind's backend (align_backend) only for
 * tokenizations and next-token lists:
 *
 *   - P: the prompt's tokens (with the model's special tokens; a chat
 *     prompt rendered by the backend first);
 *   - H = bytes(C) + r: the generated text as this member covers it; C its
 *     committed tokens, r the residue (the last token backed off, t_r, when
 *     another member's text was appended: healing, docs/PROTOCOL.md);
 *   - the proposals of the latest answers (string, token path) so that the
 *     member's own choice is absorbed as whole tokens, exactly as a worker
 *     does: a one-member ensemble reproduces the server's greedy text;
 *   - the next-token lists already fetched for this state (X, X + t_r, and
 *     the teacher-forced paths of candidates), so a re-answer costs nothing.
 *
 * Masses come from a top-n list, not from the whole vocabulary: every prefix
 * mass here is a lower bound of the worker's (the tokens outside the list are
 * not counted), a candidate whose first token is outside the list has zero
 * mass, and end_logq sums the empty-piece (control) tokens of the list other
 * than BOS. Such members are marked approximate (member_ops.exact = 0).
 *
 * Asynchrony. A step needs several calls, each depending on the previous
 * one, so align_step() copies the request and starts a thread that makes
 * them (blocking, on the member's keep-alive pool); align_step_result()
 * joins it. The consort-workers of the same round run concurrently with it.
 *
 * Scoring (/v1/score for `consort ppl`): each token is scored by the
 * backend's forced_logprob over the tokens before it, in the worker's
 * rolling windows. One request per token.
 *
 * What may change: how candidates beyond the list are estimated. What must
 * not: bytes(C) + r == H after every call.
 */
#include "coordinator/engine/member_align.h"

#include "common/clock.h"
#include "common/sbuf.h"
#include "common/utf8.h"
#include "coordinator/engine/curl_pool.h"
#include "coordinator/engine/members.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LL_PATH_MAX 8        /* teacher-forced tokens per candidate */
#define LL_DIST_CACHE 64     /* next-token lists kept per state */

typedef struct {
    int path[LL_PATH_MAX + 1]; /* tokens after X */
    size_t n_path;
    align_tok *e;
    size_t n;
} ll_dist;

typedef struct {
    unsigned char *s;        /* the proposed string (after r) */
    size_t n;
    int path[2];
    size_t n_path;
} ll_prop;

/* A deep copy of a step request (the caller's memory is gone when the
 * thread reads it). */
typedef struct {
    int has_prompt, chat, heal_prompt, k;
    sbuf prompt;             /* raw prompt, or the messages as JSON text */
    sbuf append;
    sbuf cands;              /* candidate bytes, back to back */
    size_t *cand_off;        /* n_cands + 1 offsets */
    size_t n_cands;
} ll_req;

typedef struct {
    const align_backend *be;
    int live;
    int *P, *C;
    size_t nP, nC, capC;
    sbuf H;
    size_t r_n;
    int t_r;
    ll_prop *props;
    size_t n_props, cap_props;
    ll_dist dc[LL_DIST_CACHE];
    size_t n_dc;
    int decoded;
    /* the call in flight */
    ll_req req;
    pthread_t th;
    int running;
    int rc;
    proto_error err;
    /* the answer (owned here) */
    proto_step_res res;
    proto_top *tops;
    size_t cap_tops;
    double *cand_lq;
    sbuf strs;
    proto_score_res score;
    proto_score_tok *score_toks;
    member_session *s;
} ll_session;

/* ---- small helpers ----------------------------------------------------------- */

void align_fail(member_session *s, proto_error *err, int status, const char *code, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    proto_fail(err, status, code, "member '%s': %s", members_name(s->ms, s->idx), msg);
}

static int push_int(int **a, size_t *n, size_t *cap, int v) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int *p = realloc(*a, c * sizeof *p);
        if (!p) return -1;
        *a = p;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return 0;
}

/* ---- HTTP: one blocking JSON call to the server ------------------------------ */

/* POST (body non-NULL, taken) or GET path; 0 with *out (a JSON value), or
 * -1 with err (status 0: no answer; the member is then marked down). */
int align_call(member_set *ms, size_t i, const char *path, json_t *body, double timeout_s, json_t **out,
                   proto_error *err) {
    char url[600];
    snprintf(url, sizeof url, "%s%s", members_url(ms, i), path);
    size_t len = 0;
    char *text = NULL;
    *out = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        len = text ? strlen(text) : 0;
        json_decref(body);
        if (!text) return proto_fail(err, 500, "internal", "%s: out of memory", path);
    }
    sbuf b = {0};
    char cerr[200] = "";
    int st = curl_pool_call(members_pool(ms, i), url, body ? "POST" : "GET", text, len, timeout_s, &b, cerr,
                            sizeof cerr);
    free(text);
    if (st < 0) {
        free(b.p);
        proto_fail(err, 0, "", "member '%s': %s: %s", members_name(ms, i), path, cerr);
        err->status = 0;
        members_mark_down(ms, i, err->message);
        return -1;
    }
    *out = json_loadb(b.p ? b.p : "", b.n, 0, NULL);
    free(b.p);
    if (st != 200) {
        const char *m = json_string_value(json_object_get(json_object_get(*out, "error"), "message"));
        int ctx = m && (strstr(m, "context") || strstr(m, "exceed"));
        proto_fail(err, st >= 400 ? st : 502, ctx ? "context_length_exceeded" : "member_error",
                   "member '%s': %s: HTTP %d%s%s", members_name(ms, i), path, st, m ? ": " : "",
                   m ? m : "");
        json_decref(*out);
        *out = NULL;
        return -1;
    }
    if (!*out) {
        proto_fail(err, 502, "invalid_json", "member '%s': %s: the answer is not JSON", members_name(ms, i), path);
        return -1;
    }
    return 0;
}

/* The canonical tokens of a fragment x (valid UTF-8) following other text:
 * the backend tokenizes "\n" + x and the tokens after the newline are x's
 * when a token boundary falls right after it; else x alone. *len gets each
 * token's length; their sum is n, or 400 untokenizable. Returns the count. */
static int fragment_tokens(member_session *s, const unsigned char *x, size_t n, int **tok, size_t **len,
                           proto_error *err) {
    *tok = NULL;
    *len = NULL;
    char *text = malloc(n + 2);
    if (!text) return proto_fail(err, 500, "internal", "out of memory");
    text[0] = '\n';
    memcpy(text + 1, x, n);
    int *ids;
    size_t *ends;
    int k = ((ll_session *)s->impl)->be->tokenize(s, text, n + 1, 0, 0, &ids, &ends, NULL, err);
    free(text);
    if (k < 0) return -1;
    int cut = -1;
    for (int j = 0; j < k && cut < 0; j++)
        if (ends[j] == 1) cut = j + 1;
    size_t base = 1;
    if (cut < 0) {
        free(ids);
        free(ends);
        k = ((ll_session *)s->impl)->be->tokenize(s, (const char *)x, n, 0, 0, &ids, &ends, NULL, err);
        if (k < 0) return -1;
        cut = 0;
        base = 0;
    }
    int m = k - cut;
    *tok = malloc((size_t)(m + 1) * sizeof **tok);
    *len = malloc((size_t)(m + 1) * sizeof **len);
    if (!*tok || !*len) {
        free(ids), free(ends), free(*tok), free(*len);
        *tok = NULL, *len = NULL;
        return proto_fail(err, 500, "internal", "out of memory");
    }
    size_t prev = base, sum = 0;
    for (int j = 0; j < m; j++) {
        (*tok)[j] = ids[cut + j];
        (*len)[j] = ends[cut + j] - prev;
        prev = ends[cut + j];
        sum += (*len)[j];
    }
    free(ids);
    free(ends);
    if (sum != n) {
        free(*tok), free(*len);
        *tok = NULL, *len = NULL;
        return proto_fail(err, 400, "untokenizable", "the server's tokens do not spell the generated text");
    }
    return m;
}

/* ---- next-token lists ----------------------------------------------------------- */

static void dist_clear(ll_dist *d) {
    for (size_t j = 0; j < d->n; j++) free(d->e[j].b);
    free(d->e);
    memset(d, 0, sizeof *d);
}

static void cache_clear(ll_session *w) {
    for (size_t j = 0; j < w->n_dc; j++) dist_clear(&w->dc[j]);
    w->n_dc = 0;
}

/* Frees the lists of teacher-forced paths (two tokens or more), keeping X's
 * and X + t_r's; everything when that frees nothing. */
static void evict_forced(ll_session *w) {
    size_t k = 0;
    for (size_t j = 0; j < w->n_dc; j++) {
        if (w->dc[j].n_path > 1) dist_clear(&w->dc[j]);
        else w->dc[k++] = w->dc[j];
    }
    w->n_dc = k;
    if (k == LL_DIST_CACHE) cache_clear(w);
}

static const ll_dist *dist_at(member_session *s, const int *path, size_t n_path, proto_error *err) {
    ll_session *w = s->impl;
    for (size_t j = 0; j < w->n_dc; j++)
        if (w->dc[j].n_path == n_path && !memcmp(w->dc[j].path, path, n_path * sizeof *path)) return &w->dc[j];
    const proto_info *info = members_info(s->ms, s->idx);
    size_t nx = w->nP + w->nC + n_path;
    if (info && info->n_ctx > 0 && nx + 1 > (size_t)info->n_ctx) {
        align_fail(s, err, 400, "context_length_exceeded", "%zu tokens and one more do not fit in the context (%d)", nx,
                  info->n_ctx);
        return NULL;
    }
    int *toks = malloc((nx + 1) * sizeof *toks);
    if (!toks) {
        proto_fail(err, 500, "internal", "out of memory");
        return NULL;
    }
    if (w->nP) memcpy(toks, w->P, w->nP * sizeof *toks);
    if (w->nC) memcpy(toks + w->nP, w->C, w->nC * sizeof *toks);
    if (n_path) memcpy(toks + w->nP + w->nC, path, n_path * sizeof *toks);
    align_tok *e = NULL;
    size_t ne = 0;
    int rc = w->be->next_list(s, toks, nx, &e, &ne, &w->decoded, err);
    free(toks);
    if (rc) return NULL;
    if (w->n_dc == LL_DIST_CACHE) evict_forced(w);
    ll_dist *d = &w->dc[w->n_dc];
    memset(d, 0, sizeof *d);
    memcpy(d->path, path, n_path * sizeof *path);
    d->n_path = n_path;
    d->e = e;
    d->n = ne;
    w->n_dc++;
    return d;
}

/* Sum of the probabilities of the listed tokens whose bytes start with x
 * (x non-empty); *any: 1 if some token does. */
static double mass_starting(const ll_dist *d, const unsigned char *x, size_t n, int *any) {
    double m = 0;
    *any = 0;
    for (size_t j = 0; j < d->n; j++)
        if (d->e[j].n >= n && !memcmp(d->e[j].b, x, n)) {
            m += exp(d->e[j].lp);
            *any = 1;
        }
    return m;
}

static double prob_of(const ll_dist *d, int id) {
    for (size_t j = 0; j < d->n; j++)
        if (d->e[j].id == id) return exp(d->e[j].lp);
    return 0;
}

/* M(x | X + path) of docs/PROTOCOL.md from the lists: the listed mass of
 * the tokens starting with x, or else teacher forcing along the canonical
 * tokens tok[0..nt) of x. -1 on a failed call. */
static int prefix_mass(member_session *s, int *path, size_t n_path, const unsigned char *x, size_t n, const int *tok,
                       size_t nt, const size_t *tok_len, double *out, proto_error *err) {
    *out = 1;
    while (n) {
        const ll_dist *d = dist_at(s, path, n_path, err);
        if (!d) return -1;
        int any;
        double m = mass_starting(d, x, n, &any);
        if (any) {
            *out *= m;
            return 0;
        }
        if (!nt || n_path >= LL_PATH_MAX || tok_len[0] >= n) {
            *out = 0;
            return 0;
        }
        *out *= prob_of(d, tok[0]);
        if (*out == 0) return 0;
        path[n_path++] = tok[0];
        x += tok_len[0];
        n -= tok_len[0];
        tok++;
        tok_len++;
        nt--;
    }
    return 0;
}

/* r: the last r_n bytes of H ("" when there are none). */
static const unsigned char *residue_of(const ll_session *w) {
    return w->H.p ? (const unsigned char *)w->H.p + w->H.n - w->r_n : (const unsigned char *)"";
}

/* ---- the session's state ------------------------------------------------------ */

static void props_clear(ll_session *w) {
    for (size_t j = 0; j < w->n_props; j++) free(w->props[j].s);
    w->n_props = 0;
}

static int props_add(ll_session *w, const unsigned char *s, size_t n, const int *path, size_t n_path) {
    if (w->n_props == w->cap_props) {
        size_t c = w->cap_props ? w->cap_props * 2 : 64;
        ll_prop *p = realloc(w->props, c * sizeof *p);
        if (!p) return -1;
        w->props = p;
        w->cap_props = c;
    }
    ll_prop *p = &w->props[w->n_props];
    p->s = malloc(n + 1);
    if (!p->s) return -1;
    memcpy(p->s, s, n);
    p->n = n;
    memcpy(p->path, path, n_path * sizeof *path);
    p->n_path = n_path;
    w->n_props++;
    return 0;
}

/* A new prompt: render (chat), tokenize with the special tokens. */
static int set_prompt(member_session *s, proto_error *err) {
    ll_session *w = s->impl;
    ll_req *q = &w->req;
    const char *text = q->prompt.p ? q->prompt.p : "";
    size_t n = q->prompt.n;
    sbuf rendered = {0};
    if (q->chat) {
        json_t *msgs = json_loadb(text, n, 0, NULL);
        int rc = msgs ? w->be->render_chat(s, msgs, &rendered, err) : proto_fail(err, 500, "internal", "out of memory");
        json_decref(msgs);
        if (rc) {
            free(rendered.p);
            return -1;
        }
        text = rendered.p ? rendered.p : "";
        n = rendered.n;
    }
    int *ids;
    size_t *ends;
    sbuf pieces = {0};
    int k = ((ll_session *)s->impl)->be->tokenize(s, text, n, 1, q->chat, &ids, &ends, &pieces, err);
    free(rendered.p);
    if (k < 0) return -1;
    free(w->P);
    w->P = ids;
    w->nP = (size_t)k;
    w->nC = 0;
    w->H.n = 0;
    w->r_n = 0;
    w->t_r = -1;
    if (q->heal_prompt && k > 0) { /* the prompt's last token becomes r */
        size_t start = k > 1 ? ends[k - 2] : 0;
        if (ends[k - 1] > start && !sb_add(&w->H, pieces.p + start, ends[k - 1] - start)) {
            w->r_n = w->H.n;
            w->t_r = ids[k - 1];
            w->nP--;
        }
    }
    free(ends);
    free(pieces.p);
    w->live = 1;
    props_clear(w);
    cache_clear(w);
    return 0;
}

/* Appended bytes a: the member's own proposal is taken as whole tokens;
 * anything else re-tokenizes H after P and backs off its last token (an
 * incomplete UTF-8 tail of H, which the server cannot take as text, stays
 * in r too, and then there is no residue token). */
static int append_text(member_session *s, const unsigned char *a, size_t n, proto_error *err) {
    ll_session *w = s->impl;
    for (size_t j = 0; j < w->n_props; j++) {
        ll_prop *p = &w->props[j];
        if (p->n != n || memcmp(p->s, a, n)) continue;
        if (p->n_path == 2 && w->t_r != p->path[0]) continue;
        for (size_t t = 0; t < p->n_path; t++)
            if (push_int(&w->C, &w->nC, &w->capC, p->path[t])) return proto_fail(err, 500, "internal", "out of memory");
        if (sb_add(&w->H, a, n)) return proto_fail(err, 500, "internal", "out of memory");
        w->r_n = 0;
        w->t_r = -1;
        return 0;
    }
    if (sb_add(&w->H, a, n)) return proto_fail(err, 500, "internal", "out of memory");
    size_t ok = utf8_complete_len(w->H.p, w->H.n);
    int *tok = NULL;
    size_t *len = NULL;
    int k = ok ? fragment_tokens(s, (const unsigned char *)w->H.p, ok, &tok, &len, err) : 0;
    if (k < 0) {
        w->H.n -= n; /* a failing request leaves the session as it was */
        return -1;
    }
    w->nC = 0;
    for (int j = 0; j + 1 < k; j++)
        if (push_int(&w->C, &w->nC, &w->capC, tok[j])) return free(tok), free(len), -1;
    w->t_r = k > 0 && ok == w->H.n ? tok[k - 1] : -1;
    w->r_n = (k > 0 ? len[k - 1] : 0) + (w->H.n - ok);
    free(tok);
    free(len);
    assert(w->r_n <= w->H.n);
    return 0;
}

/* ---- the answer ----------------------------------------------------------------- */

/* One proposal while the answer is built: its string (an offset into
 * w->strs), Q, the token path that spells it, and its rank for ties. */
typedef struct {
    size_t off, n;
    double lq;
    int path[2];
    size_t n_path, rank;
} ll_entry;

static int add_entry(ll_session *w, ll_entry **e, size_t *n, size_t *cap, const unsigned char *str, size_t len,
                     double lq, const int *path, size_t n_path) {
    for (size_t j = 0; j < *n; j++)
        if ((*e)[j].n == len && !memcmp(w->strs.p + (*e)[j].off, str, len)) return 0; /* first path wins */
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        ll_entry *p = realloc(*e, c * sizeof *p);
        if (!p) return -1;
        *e = p;
        *cap = c;
    }
    ll_entry *x = &(*e)[*n];
    x->off = w->strs.n;
    x->n = len;
    x->lq = lq;
    memcpy(x->path, path, n_path * sizeof *path);
    x->n_path = n_path;
    x->rank = *n;
    if (sb_add(&w->strs, str, len)) return -1;
    (*n)++;
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const ll_entry *x = a, *y = b;
    if (x->lq != y->lq) return x->lq > y->lq ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* The string x = r + s's mass relative to M(r): the listed mass at X of the
 * tokens starting with x, else (after the residue token) through t_r. */
static double listed_logq(const ll_session *w, const ll_dist *d0, const ll_dist *d1, const unsigned char *x,
                          size_t xn, double m_r) {
    int any;
    double m = mass_starting(d0, x, xn, &any);
    if (!any && d1) {
        double p_r = prob_of(d0, w->t_r);
        m = p_r * mass_starting(d1, x + w->r_n, xn - w->r_n, &any);
    }
    return m > 0 && m_r > 0 ? log(m / m_r) : -INFINITY;
}

/* The proposals, as docs/PROTOCOL.md says: the k most probable tokens
 * strictly extending r (the lists are in probability order), and the k
 * most probable tokens after the residue token; each with its Q; sorted by
 * Q, the first k returned (and remembered for absorption). */
static int build_top(member_session *s, const ll_dist *d0, const ll_dist *d1, double m_r, proto_error *err) {
    ll_session *w = s->impl;
    const unsigned char *r = residue_of(w);
    size_t k = (size_t)w->req.k, n = 0, cap = 0, taken = 0;
    ll_entry *e = NULL;
    int rc = 0;
    for (size_t j = 0; !rc && taken < k && j < d0->n; j++) {
        const align_tok *t = &d0->e[j];
        if (t->n <= w->r_n || (w->r_n && memcmp(t->b, r, w->r_n))) continue;
        taken++;
        rc = add_entry(w, &e, &n, &cap, t->b + w->r_n, t->n - w->r_n, listed_logq(w, d0, d1, t->b, t->n, m_r),
                       &t->id, 1);
    }
    taken = 0;
    for (size_t j = 0; !rc && d1 && taken < k && j < d1->n; j++) {
        const align_tok *u = &d1->e[j];
        if (!u->n) continue;
        taken++;
        unsigned char *x = malloc(w->r_n + u->n);
        if (!x) {
            rc = -1;
            break;
        }
        if (w->r_n) memcpy(x, r, w->r_n);
        memcpy(x + w->r_n, u->b, u->n);
        int path[2] = {w->t_r, u->id};
        rc = add_entry(w, &e, &n, &cap, u->b, u->n, listed_logq(w, d0, d1, x, w->r_n + u->n, m_r), path, 2);
        free(x);
    }
    if (!rc && n) qsort(e, n, sizeof *e, cmp_entry);
    if (n > k) n = k;
    if (!rc && n > w->cap_tops) {
        proto_top *p = realloc(w->tops, n * sizeof *p);
        if (p) w->tops = p, w->cap_tops = n;
        else rc = -1;
    }
    for (size_t j = 0; !rc && j < n; j++) {
        w->tops[j].s = (proto_str){(const unsigned char *)w->strs.p + e[j].off, e[j].n};
        w->tops[j].logq = e[j].lq;
        w->tops[j].logp = NAN; /* absent: the lists give no own-path probability (docs/PROTOCOL.md) */
        rc = props_add(w, w->tops[j].s.p, e[j].n, e[j].path, e[j].n_path);
    }
    free(e);
    if (rc) return proto_fail(err, 500, "internal", "out of memory");
    w->res.top = w->tops;
    w->res.n_top = n;
    return 0;
}

static int candidate_logq(member_session *s, const ll_dist *d0, const ll_dist *d1, double m_r, const unsigned char *c,
                          size_t cn, double *out, proto_error *err) {
    ll_session *w = s->impl;
    if (!cn) {
        *out = 0;
        return 0;
    }
    unsigned char *x = malloc(w->r_n + cn);
    if (!x) return proto_fail(err, 500, "internal", "out of memory");
    if (w->r_n) memcpy(x, residue_of(w), w->r_n);
    memcpy(x + w->r_n, c, cn);
    size_t xn = w->r_n + cn;
    *out = listed_logq(w, d0, d1, x, xn, m_r);
    int rc = 0;
    if (*out == -INFINITY && m_r > 0) { /* beyond the lists: teacher forcing */
        int *tok;
        size_t *len;
        int nt = fragment_tokens(s, x, xn, &tok, &len, err);
        if (nt < 0) rc = -1;
        else {
            int path[LL_PATH_MAX + 1];
            double m = 0;
            rc = prefix_mass(s, path, 0, x, xn, tok, (size_t)nt, len, &m, err);
            if (!rc && m > 0) *out = log(m / m_r);
            free(tok);
            free(len);
        }
    }
    free(x);
    return rc;
}

/* The listed mass of the control tokens (empty pieces) other than BOS. */
static int end_mass(const member_session *s, const ll_dist *d, double *out) {
    const proto_info *info = members_info(s->ms, s->idx);
    int bos = info ? info->bos : -1;
    double m = 0;
    for (size_t j = 0; j < d->n; j++)
        if (!d->e[j].n && d->e[j].id != bos) m += exp(d->e[j].lp);
    *out = m;
    return 0;
}

/* The step: state change, the lists it needs, the answer. */
static int do_step(member_session *s, proto_error *err) {
    ll_session *w = s->impl;
    ll_req *q = &w->req;
    w->decoded = 0;
    if (q->has_prompt) {
        if (set_prompt(s, err)) return -1;
    } else if (!w->live) {
        align_fail(s, err, 404, "session_not_found", "no session %s", s->id);
        return -1;
    }
    if (q->append.n && append_text(s, (const unsigned char *)q->append.p, q->append.n, err)) return -1;
    if (q->append.n || q->has_prompt) {
        props_clear(w);
        cache_clear(w);
    }
    int empty[1];
    const ll_dist *d0 = dist_at(s, empty, 0, err);
    if (!d0) return -1;
    const ll_dist *d1 = NULL;
    if (w->t_r >= 0) {
        int path[1] = {w->t_r};
        d1 = dist_at(s, path, 1, err);
        if (!d1) return -1;
        d0 = dist_at(s, empty, 0, err); /* (the cache may have moved) */
    }
    const unsigned char *r = residue_of(w);
    int any;
    double m_r = w->r_n ? mass_starting(d0, r, w->r_n, &any) : 1;
    w->strs.n = 0;
    if (build_top(s, d0, d1, m_r, err)) return -1;
    free(w->cand_lq);
    w->cand_lq = calloc(q->n_cands + 1, sizeof *w->cand_lq);
    if (!w->cand_lq) return proto_fail(err, 500, "internal", "out of memory");
    for (size_t j = 0; j < q->n_cands; j++) {
        if (candidate_logq(s, d0, d1, m_r, (const unsigned char *)q->cands.p + q->cand_off[j],
                           q->cand_off[j + 1] - q->cand_off[j], &w->cand_lq[j], err))
            return -1;
        d0 = dist_at(s, empty, 0, err);
        if (w->t_r >= 0) {
            int path[1] = {w->t_r};
            d1 = dist_at(s, path, 1, err);
        }
        if (!d0) return -1;
    }
    double e = 0;
    if (!w->r_n) end_mass(s, d0, &e);
    else if (d1 && m_r > 0) {
        end_mass(s, d1, &e);
        e = e * prob_of(d0, w->t_r) / m_r;
    }
    w->res.session = s->id;
    w->res.n_past = (int)(w->nP + w->nC);
    w->res.residue = (proto_str){r, w->r_n};
    w->res.decoded = w->decoded;
    w->res.cand_logq = w->cand_lq;
    w->res.n_cands = q->n_cands;
    w->res.end_logq = e > 0 ? log(e) : -INFINITY;
    return 0;
}

/* ---- the table ------------------------------------------------------------------ */

void *align_open(member_session *s, const align_backend *be) {
    ll_session *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->be = be;
    w->t_r = -1;
    w->s = s;
    return w;
}

static void req_clear(ll_req *q) {
    free(q->prompt.p);
    free(q->append.p);
    free(q->cands.p);
    free(q->cand_off);
    memset(q, 0, sizeof *q);
}

static int req_copy(ll_req *d, const proto_step_req *q) {
    req_clear(d);
    d->k = q->k;
    d->heal_prompt = q->heal_prompt;
    int rc = 0;
    if (q->n_messages) {
        json_t *a = json_array();
        for (size_t j = 0; j < q->n_messages; j++)
            json_array_append_new(a, json_pack("{s:s, s:s}", "role", q->messages[j].role, "content",
                                               q->messages[j].content));
        char *t = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        rc = t ? sb_str(&d->prompt, t) : -1;
        free(t);
        d->has_prompt = d->chat = 1;
    } else if (q->prompt) {
        rc = sb_add(&d->prompt, q->prompt, q->prompt_len);
        d->has_prompt = 1;
    }
    if (!rc && q->append.n) rc = sb_add(&d->append, q->append.p, q->append.n);
    d->cand_off = malloc((q->n_cands + 1) * sizeof *d->cand_off);
    if (!d->cand_off) return -1;
    d->cand_off[0] = 0;
    for (size_t j = 0; !rc && j < q->n_cands; j++) {
        rc = q->cands[j].n ? sb_add(&d->cands, q->cands[j].p, q->cands[j].n) : 0;
        d->cand_off[j + 1] = d->cands.n;
    }
    d->n_cands = q->n_cands;
    return rc;
}

static void *step_thread(void *arg) {
    member_session *s = arg;
    ll_session *w = s->impl;
    double t0 = clock_mono_s();
    memset(&w->err, 0, sizeof w->err);
    w->rc = do_step(s, &w->err);
    s->last_seconds = clock_mono_s() - t0;
    return NULL;
}

static void join(ll_session *w) {
    if (w->running) pthread_join(w->th, NULL);
    w->running = 0;
}

int align_step(member_session *s, const proto_step_req *q, member_round *r) {
    (void)r;
    ll_session *w = s->impl;
    join(w);
    if (req_copy(&w->req, q)) return -1;
    memset(&w->res, 0, sizeof w->res);
    if (pthread_create(&w->th, NULL, step_thread, s)) return -1;
    w->running = 1;
    return 0;
}

int align_step_result(member_session *s, const proto_step_res **res, proto_error *err) {
    ll_session *w = s->impl;
    join(w);
    *res = NULL;
    if (w->rc) {
        *err = w->err;
        return -1;
    }
    *res = &w->res;
    return 0;
}

static int ll_score_run(member_session *s, const proto_score_req *q, proto_error *err) {
    ll_session *w = s->impl;
    int *ids;
    size_t *ends;
    int n = ((ll_session *)s->impl)->be->tokenize(s, q->text, q->text_len, 0, 0, &ids, &ends, NULL, err);
    if (n < 0) return -1;
    const proto_info *info = members_info(s->ms, s->idx);
    int off = q->doc_start && info && info->doc_start >= 0 ? 1 : 0;
    int N = n + off;
    int *all = malloc((size_t)(N + 1) * sizeof *all);
    w->score_toks = calloc((size_t)n + 1, sizeof *w->score_toks);
    if (!all || !w->score_toks) {
        free(ids), free(ends), free(all);
        return proto_fail(err, 500, "internal", "out of memory");
    }
    if (off) all[0] = info->doc_start;
    for (int j = 0; j < n; j++) {
        all[j + off] = ids[j];
        w->score_toks[j] = (proto_score_tok){ids[j], j ? ends[j - 1] : 0, ends[j], NAN, NAN, NAN};
    }
    free(ids);
    free(ends);
    int W = info && info->n_ctx > 1 ? info->n_ctx : 4096, ov = W / 2, rc = 0;
    double sum = 0;
    for (int next = 1, ws = 0; !rc && next < N;) {
        int we = ws + W < N ? ws + W : N;
        for (int t = next; !rc && t < we; t++) {
            proto_score_tok *st = &w->score_toks[t - off];
            rc = w->be->forced_logprob(s, all + ws, (size_t)(t - ws), all[t], st, err);
            if (!rc) sum += st->logprob;
        }
        next = we;
        ws = we - ov;
    }
    free(all);
    if (rc) return -1;
    w->score.tokens = w->score_toks;
    w->score.n_tokens = (size_t)n;
    w->score.sum_logprob = sum;
    w->score.n_ctx = W;
    w->score.window_overlap = ov;
    w->score.decoded = N;
    return 0;
}

int align_score(member_session *s, const proto_score_req *q, member_round *r) {
    (void)r;
    ll_session *w = s->impl;
    double t0 = clock_mono_s();
    memset(&w->err, 0, sizeof w->err);
    w->rc = ll_score_run(s, q, &w->err); /* blocking: ppl scores from its own threads */
    s->last_seconds = clock_mono_s() - t0;
    return 0;
}

int align_score_result(member_session *s, const proto_score_res **res, proto_error *err) {
    ll_session *w = s->impl;
    *res = NULL;
    if (w->rc) {
        *err = w->err;
        return -1;
    }
    *res = &w->score;
    return 0;
}

void align_close(member_session *s, member_round *r) {
    (void)r;
    join(s->impl); /* the server holds no session state */
}

void align_free(member_session *s) {
    ll_session *w = s->impl;
    if (!w) return;
    join(w);
    req_clear(&w->req);
    props_clear(w);
    free(w->props);
    cache_clear(w);
    free(w->P);
    free(w->C);
    free(w->H.p);
    free(w->tops);
    free(w->cand_lq);
    free(w->strs.p);
    free(w->score_toks);
    free(w);
    s->impl = NULL;
}
