/* worker/wk_engine.c: see wk_engine.h and docs/PROTOCOL.md. */
#include "worker/wk_engine.h"
#include "common/log.h"

#include <llama.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WK_MAX_PATH 64  /* tokens of one remembered path / teacher-forced prefix */
#define WK_DIRECT_SUM 512 /* ranges up to this size are summed directly */

typedef struct wk_path {
    int n;
    int tok[WK_MAX_PATH];
} wk_path;

typedef struct wk_session {
    char id[72];
    int used;
    int seq;
    uint64_t last_use;
    int *tok; /* X = P + C */
    int n_tok, n_prompt, cap_tok;
    unsigned char *g; /* healable tail: (healed prompt bytes) + G */
    size_t g_len, g_cap;
    size_t r_len;     /* residue = last r_len bytes of g */
    int t_r;          /* residue token (the token backed off), -1 = none */
    int *kv;          /* tokens held in this session's KV sequence */
    int n_kv, cap_kv;
    float *p0;        /* p(. | kv[0..p0_n)) */
    double *cum0;
    int p0_n;         /* -1 = invalid */
    float *p1;        /* p(. | kv[0..p1_n)) where kv[p1_n-1] is the residue token */
    double *cum1;
    int p1_n;
    wk_path *paths; /* token paths of the last answer (rule 1 of healing) */
    int n_paths, cap_paths;
} wk_session;

struct wk_engine {
    wk_model *m;
    struct llama_context *ctx;
    pthread_mutex_t mu;
    int n_ctx, slots, n_batch, n_vocab;
    int score_seq, scratch0;
    wk_session *s;
    uint64_t clock;
    uint64_t tokens_decoded;
    struct llama_batch batch;
    float *tmp;   /* n_vocab scratch probabilities */
    int *eog;     /* end-of-generation token ids */
    int n_eog;
};

/* ---- small helpers ------------------------------------------------------ */

static void set_err(wk_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(wk_err *e, int status, const char *code, const char *fmt, ...) {
    if (!e) return;
    e->status = status;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int grow_bytes(unsigned char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    unsigned char *q = realloc(*p, c);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Softmax of logits into probs (float; the normalizer summed in double). */
static void softmax(const float *logits, int n, float *probs) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int i = 0; i < n; i++) {
        probs[i] = expf(logits[i] - mx);
        z += probs[i];
    }
    float inv = (float)(1.0 / z);
    for (int i = 0; i < n; i++) probs[i] *= inv;
}

static double log_softmax_at(const float *logits, int n, int t) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)logits[i] - mx);
    return (double)logits[t] - mx - log(z);
}

/* T(x) from probs and their cumulative sums in byte order (cum may be
 * NULL; cum[0] = NAN means "not computed yet": done here on first need). */
static double mass(const wk_engine *e, const float *p, double *cum,
                   const unsigned char *x, size_t n) {
    if (n == 0) return 1.0;
    int lo, hi;
    va_prefix_range(e->m->va, x, n, &lo, &hi);
    if (hi - lo <= WK_DIRECT_SUM || !cum) {
        double s = 0;
        for (int i = lo; i < hi; i++) s += p[va_sorted_id(e->m->va, i)];
        return s;
    }
    if (isnan(cum[0])) va_cumsum(e->m->va, p, cum);
    double s = cum[hi] - cum[lo];
    return s < 0 ? 0 : s;
}

static int has_prefix_token(const wk_engine *e, const unsigned char *x, size_t n) {
    int lo, hi;
    return n == 0 || va_prefix_range(e->m->va, x, n, &lo, &hi) > 0;
}

/* ---- create / free ------------------------------------------------------ */

wk_engine *wk_engine_create(wk_model *m, const wk_engine_opts *o, char *err, size_t err_size) {
    char dummy[8];
    if (!err) {
        err = dummy;
        err_size = sizeof dummy;
    }
    wk_engine_opts op = o ? *o : (wk_engine_opts){0};
    if (op.slots <= 0) op.slots = 4;
    if (op.slots > 64) {
        snprintf(err, err_size, "--slots %d is too many (at most 64)", op.slots);
        return NULL;
    }
    if (op.n_ctx <= 0) op.n_ctx = m->n_ctx_train > 0 && m->n_ctx_train < 4096 ? m->n_ctx_train : 4096;
    if (op.n_ctx < 8) {
        snprintf(err, err_size, "--ctx %d is too small (at least 8)", op.n_ctx);
        return NULL;
    }
    if (op.n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        op.n_threads = nc > 0 ? (int)nc : 1;
    }
    if (op.n_batch <= 0) op.n_batch = 256;
    wk_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    e->m = m;
    e->n_ctx = op.n_ctx;
    e->slots = op.slots;
    e->n_batch = op.n_batch;
    e->n_vocab = m->n_vocab;
    e->score_seq = op.slots;
    e->scratch0 = op.slots + 1;
    pthread_mutex_init(&e->mu, NULL);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(op.n_ctx * (op.slots + 1) + op.n_batch);
    cp.n_batch = (uint32_t)op.n_batch;
    cp.n_ubatch = (uint32_t)op.n_batch;
    cp.n_seq_max = (uint32_t)(op.slots + 1 + WK_SCRATCH);
    cp.n_threads = op.n_threads;
    cp.n_threads_batch = op.n_threads;
    cp.kv_unified = true;
    cp.no_perf = true;
    e->ctx = llama_init_from_model(m->model, cp);
    if (!e->ctx) {
        snprintf(err, err_size, "llama.cpp could not create a context (n_ctx %u, %d sequences)",
                 cp.n_ctx, (int)cp.n_seq_max);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return NULL;
    }
    e->batch = llama_batch_init(op.n_batch, 0, 1);
    e->tmp = malloc((size_t)e->n_vocab * sizeof *e->tmp);
    e->s = calloc((size_t)op.slots, sizeof *e->s);
    e->eog = malloc((size_t)e->n_vocab * sizeof *e->eog);
    if (e->eog)
        for (int id = 0; id < e->n_vocab; id++)
            if (m->is_eog[id]) e->eog[e->n_eog++] = id;
    if (!e->tmp || !e->s || !e->eog) {
        wk_engine_free(e);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    for (int i = 0; i < op.slots; i++) {
        e->s[i].seq = i;
        e->s[i].p0_n = e->s[i].p1_n = -1;
    }
    return e;
}

static void session_release(wk_session *s) {
    free(s->tok);
    free(s->g);
    free(s->kv);
    free(s->p0);
    free(s->cum0);
    free(s->p1);
    free(s->cum1);
    free(s->paths);
    int seq = s->seq;
    memset(s, 0, sizeof *s);
    s->seq = seq;
    s->p0_n = s->p1_n = -1;
}

void wk_engine_free(wk_engine *e) {
    if (!e) return;
    if (e->s)
        for (int i = 0; i < e->slots; i++) session_release(&e->s[i]);
    free(e->s);
    free(e->tmp);
    free(e->eog);
    if (e->ctx) {
        llama_batch_free(e->batch);
        llama_free(e->ctx);
    }
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int wk_engine_n_ctx(const wk_engine *e) { return e->n_ctx; }
int wk_engine_slots(const wk_engine *e) { return e->slots; }

void wk_engine_stats(wk_engine *e, wk_stats *st) {
    pthread_mutex_lock(&e->mu);
    st->tokens_decoded = e->tokens_decoded;
    st->sessions_in_use = 0;
    for (int i = 0; i < e->slots; i++) st->sessions_in_use += e->s[i].used;
    pthread_mutex_unlock(&e->mu);
}

/* ---- decoding ----------------------------------------------------------- */

static void batch_add(struct llama_batch *b, int tok, int pos, int seq, int logits) {
    int i = b->n_tokens++;
    b->token[i] = tok;
    b->pos[i] = pos;
    b->n_seq_id[i] = 1;
    b->seq_id[i][0] = seq;
    b->logits[i] = (int8_t)logits;
}

static int decode(wk_engine *e) {
    int n = e->batch.n_tokens;
    if (n == 0) return 0;
    int r = llama_decode(e->ctx, e->batch);
    if (r != 0) {
        log_error("llama_decode failed (%d) on %d tokens", r, n);
        return -1;
    }
    e->tokens_decoded += (uint64_t)n;
    return n;
}

/* Truncate a session's KV to its first L tokens. */
static void kv_truncate(wk_engine *e, wk_session *s, int L) {
    if (L >= s->n_kv) return;
    llama_memory_seq_rm(llama_get_memory(e->ctx), s->seq, L, -1);
    s->n_kv = L;
    if (s->p0_n > L) s->p0_n = -1;
    if (s->p1_n > L) s->p1_n = -1;
}

static int keep_probs(wk_engine *e, int batch_index, float **dst, double **cum) {
    if (!*dst) *dst = malloc((size_t)e->n_vocab * sizeof **dst);
    if (!*cum) *cum = malloc((size_t)(e->n_vocab + 1) * sizeof **cum);
    if (!*dst || !*cum) return -1;
    softmax(llama_get_logits_ith(e->ctx, batch_index), e->n_vocab, *dst);
    (*cum)[0] = NAN; /* cumulative sums on first need (mass) */
    return 0;
}

/* Decode toks[from..n) into the session's sequence (positions from..n) and,
 * when extra >= 0, the residue token `extra` at position n, all in as few
 * llama_decode calls as the batch size allows (one, in steady state: this is
 * what keeps a healing member at about one decoded position per step).
 * Probabilities after toks[0..n) go to p0 when from < n, those after
 * toks[0..n) + extra to p1. Returns positions decoded, or -1. */
static int feed(wk_engine *e, wk_session *s, const int *toks, int from, int n, int extra) {
    int total = n + (extra >= 0);
    if (grow((void **)&s->kv, &s->cap_kv, total, sizeof(int)) != 0) return -1;
    int done = 0, i = from;
    while (i < total) {
        e->batch.n_tokens = 0;
        int end = i + e->n_batch < total ? i + e->n_batch : total;
        int i0 = -1, i1 = -1; /* batch indices of the p0 and p1 rows */
        for (int j = i; j < end; j++) {
            int tok = j < n ? toks[j] : extra;
            int want = j == n - 1 || j == n;
            if (j == n - 1) i0 = e->batch.n_tokens;
            if (j == n) i1 = e->batch.n_tokens;
            batch_add(&e->batch, tok, j, s->seq, want);
            s->kv[j] = tok;
        }
        int d = decode(e);
        if (d < 0) return -1;
        done += d;
        s->n_kv = end;
        if (i0 >= 0) {
            if (keep_probs(e, i0, &s->p0, &s->cum0) != 0) return -1;
            s->p0_n = n;
        }
        if (i1 >= 0) {
            if (keep_probs(e, i1, &s->p1, &s->cum1) != 0) return -1;
            s->p1_n = n + 1;
        }
        i = end;
    }
    return done;
}

/* ---- sessions ----------------------------------------------------------- */

static wk_session *find_session(wk_engine *e, const char *id) {
    for (int i = 0; i < e->slots; i++)
        if (e->s[i].used && !strcmp(e->s[i].id, id)) return &e->s[i];
    return NULL;
}

static wk_session *new_session(wk_engine *e, const char *id) {
    wk_session *best = NULL;
    for (int i = 0; i < e->slots; i++) {
        if (!e->s[i].used) {
            best = &e->s[i];
            break;
        }
        if (!best || e->s[i].last_use < best->last_use) best = &e->s[i];
    }
    if (best->used) {
        log_info("evicting session '%s' (least recently used)", best->id);
        llama_memory_seq_rm(llama_get_memory(e->ctx), best->seq, -1, -1);
        session_release(best);
    }
    /* a fresh slot's KV sequence is empty */
    llama_memory_seq_rm(llama_get_memory(e->ctx), best->seq, -1, -1);
    best->used = 1;
    snprintf(best->id, sizeof best->id, "%s", id);
    return best;
}

int wk_session_delete(wk_engine *e, const char *id) {
    pthread_mutex_lock(&e->mu);
    wk_session *s = find_session(e, id);
    if (s) {
        llama_memory_seq_rm(llama_get_memory(e->ctx), s->seq, -1, -1);
        session_release(s);
    }
    pthread_mutex_unlock(&e->mu);
    return s ? 0 : -1;
}

char *wk_render_chat(const wk_model *m, const wk_msg *msgs, int n, size_t *len, int *parse_special) {
    *parse_special = 0;
    if (m->chat_template) {
        struct llama_chat_message *cm = malloc((size_t)(n ? n : 1) * sizeof *cm);
        if (!cm) return NULL;
        size_t total = 64;
        for (int i = 0; i < n; i++) {
            cm[i].role = msgs[i].role;
            cm[i].content = msgs[i].content;
            total += strlen(msgs[i].role) + strlen(msgs[i].content) + 64;
        }
        char *buf = malloc(total * 2);
        int r = buf ? llama_chat_apply_template(m->chat_template, cm, (size_t)n, true, buf,
                                                (int32_t)(total * 2))
                    : -1;
        if (r > (int)(total * 2)) {
            char *b2 = realloc(buf, (size_t)r + 1);
            if (b2) {
                buf = b2;
                r = llama_chat_apply_template(m->chat_template, cm, (size_t)n, true, buf, r + 1);
            } else {
                r = -1;
            }
        }
        free(cm);
        if (r >= 0) {
            buf[r] = 0;
            *len = (size_t)r;
            *parse_special = 1;
            return buf;
        }
        free(buf);
        log_warn("the model's chat template is not supported by llama.cpp; using the plain fallback");
    }
    size_t total = 16;
    for (int i = 0; i < n; i++) total += strlen(msgs[i].role) + strlen(msgs[i].content) + 4;
    char *buf = malloc(total);
    if (!buf) return NULL;
    size_t p = 0;
    for (int i = 0; i < n; i++)
        p += (size_t)sprintf(buf + p, "%s: %s\n", msgs[i].role, msgs[i].content);
    p += (size_t)sprintf(buf + p, "assistant:");
    *len = p;
    return buf;
}

/* ---- prefix masses ------------------------------------------------------ */

/* A string x = r + s whose mass needs teacher forcing. */
typedef struct wk_job {
    int out;            /* index into the result masses */
    int path[WK_MAX_PATH]; /* u1..uj */
    int j;
    size_t rest_off;    /* x[rest_off:] is prefix-summed after the path */
    double pref;        /* p(u1 | X) */
    const unsigned char *x; /* the whole string (owned by the caller) */
    size_t n;
} wk_job;

typedef struct wk_ctx {
    wk_engine *e;
    wk_session *s;
    const unsigned char *r;
    size_t rl;
    int t_r; /* residue token or -1 */
} wk_ctx;

static void remember(wk_session *s, const int *tok, int n) {
    if (n <= 0 || n > WK_MAX_PATH) return;
    if (grow((void **)&s->paths, &s->cap_paths, s->n_paths + 1, sizeof *s->paths) != 0) return;
    wk_path *p = &s->paths[s->n_paths++];
    p->n = n;
    memcpy(p->tok, tok, (size_t)n * sizeof *tok);
}

static int best_exact(const wk_engine *e, const float *p, const unsigned char *x, size_t n) {
    int lo, hi, best = -1;
    va_exact_range(e->m->va, x, n, &lo, &hi);
    for (int i = lo; i < hi; i++) {
        int id = va_sorted_id(e->m->va, i);
        if (best < 0 || p[id] > p[best]) best = id;
    }
    return best;
}

/* M(x | X) for x = r + s when it needs no decode; else fills a job and
 * returns NAN. Returns -1.0 on an internal error. */
static double mass_or_job(wk_ctx *c, const unsigned char *x, size_t n, wk_job *job, int remember_it) {
    wk_engine *e = c->e;
    wk_session *s = c->s;
    if (has_prefix_token(e, x, n)) {
        if (remember_it) {
            int t = best_exact(e, s->p0, x, n);
            if (t >= 0) remember(s, &t, 1);
        }
        return mass(e, s->p0, s->cum0, x, n);
    }
    int *canon = NULL;
    int k = wk_tokenize_after(e->m, s->n_tok ? s->tok[s->n_tok - 1] : -1, x, n, &canon);
    if (k <= 0) {
        free(canon);
        return 0.0; /* no token covers some byte: zero mass */
    }
    size_t off = 0;
    int j = 0;
    while (j < k) {
        size_t bl;
        va_token_bytes(e->m->va, canon[j], &bl);
        off += bl;
        j++;
        if (has_prefix_token(e, x + off, n - off)) break;
    }
    if (j > WK_MAX_PATH) {
        free(canon);
        return 0.0;
    }
    job->j = j;
    memcpy(job->path, canon, (size_t)j * sizeof *canon);
    job->rest_off = off;
    job->pref = s->p0[canon[0]];
    job->x = x;
    job->n = n;
    free(canon);
    if (j == 1 && c->t_r >= 0 && job->path[0] == c->t_r && s->p1_n >= 0) {
        if (remember_it) {
            int pth[2] = {c->t_r, best_exact(e, s->p1, x + off, n - off)};
            remember(s, pth, pth[1] >= 0 ? 2 : 1);
        }
        return job->pref * mass(e, s->p1, s->cum1, x + off, n - off);
    }
    return NAN;
}

/* Run teacher-forcing jobs in batches over scratch sequences. out[job.out]
 * receives M(x). Returns tokens decoded, or -1. */
static int run_jobs(wk_ctx *c, wk_job *jobs, int nj, double *out, int remember_it) {
    wk_engine *e = c->e;
    wk_session *s = c->s;
    llama_memory_t mem = llama_get_memory(e->ctx);
    int decoded = 0;
    int n_base = s->n_tok;
    int first[WK_SCRATCH];
    for (int a = 0; a < nj;) {
        e->batch.n_tokens = 0;
        int b = a, used = 0;
        while (b < nj && b - a < WK_SCRATCH && used + jobs[b].j <= e->n_batch) {
            if (n_base + jobs[b].j > e->n_ctx) { /* would overflow the context: null */
                out[jobs[b].out] = 0.0;
                jobs[b].j = 0;
            }
            used += jobs[b].j;
            b++;
        }
        if (b == a) { /* a single job longer than a batch: give up on it */
            out[jobs[a].out] = 0.0;
            a++;
            continue;
        }
        for (int q = a; q < b; q++) {
            int seq = e->scratch0 + (q - a);
            first[q - a] = e->batch.n_tokens;
            if (!jobs[q].j) continue;
            llama_memory_seq_rm(mem, seq, -1, -1);
            llama_memory_seq_cp(mem, s->seq, seq, 0, n_base);
            for (int i = 0; i < jobs[q].j; i++)
                batch_add(&e->batch, jobs[q].path[i], n_base + i, seq, 1);
        }
        int d = decode(e);
        if (d >= 0) {
            decoded += d;
            for (int q = a; q < b; q++) {
                wk_job *jb = &jobs[q];
                if (!jb->j) continue;
                double lp = jb->pref > 0 ? log(jb->pref) : -INFINITY;
                for (int i = 1; i < jb->j; i++)
                    lp += log_softmax_at(llama_get_logits_ith(e->ctx, first[q - a] + i - 1),
                                         e->n_vocab, jb->path[i]);
                softmax(llama_get_logits_ith(e->ctx, first[q - a] + jb->j - 1), e->n_vocab, e->tmp);
                const unsigned char *rest = jb->x + jb->rest_off;
                size_t rn = jb->n - jb->rest_off;
                out[jb->out] = exp(lp) * mass(e, e->tmp, NULL, rest, rn);
                if (remember_it) {
                    int pth[WK_MAX_PATH + 1];
                    memcpy(pth, jb->path, (size_t)jb->j * sizeof *pth);
                    int np = jb->j;
                    int t = rn ? best_exact(e, e->tmp, rest, rn) : -1;
                    if (t >= 0) pth[np++] = t;
                    remember(s, pth, np);
                }
            }
        }
        for (int q = a; q < b; q++) llama_memory_seq_rm(mem, e->scratch0 + (q - a), -1, -1);
        if (d < 0) return -1;
        a = b;
    }
    return decoded;
}

/* ---- top-k selection ---------------------------------------------------- */

typedef struct {
    float p;
    int id;
} wk_cand;

static void heap_push(wk_cand *h, int *n, int k, wk_cand c) {
    if (*n < k) {
        int i = (*n)++;
        h[i] = c;
        while (i > 0) {
            int par = (i - 1) / 2;
            if (h[par].p <= h[i].p) break;
            wk_cand t = h[par];
            h[par] = h[i];
            h[i] = t;
            i = par;
        }
    } else if (k > 0 && c.p > h[0].p) {
        h[0] = c;
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < *n && h[l].p < h[m].p) m = l;
            if (r < *n && h[r].p < h[m].p) m = r;
            if (m == i) break;
            wk_cand t = h[m];
            h[m] = h[i];
            h[i] = t;
            i = m;
        }
    }
}

/* ---- the step ----------------------------------------------------------- */

typedef struct wk_item {
    unsigned char *s; /* continuation string (after r) */
    size_t len;
    unsigned char *x; /* r + s */
    size_t xn;
    double m;         /* M(x | X) */
    double logq;
} wk_item;

static int item_set(wk_item *it, const unsigned char *r, size_t rl, const unsigned char *s, size_t n) {
    it->x = malloc(rl + n + 1);
    if (!it->x) return -1;
    if (rl) memcpy(it->x, r, rl);
    if (n) memcpy(it->x + rl, s, n);
    it->xn = rl + n;
    it->s = it->x + rl;
    it->len = n;
    it->m = NAN;
    return 0;
}

static int cmp_items(const void *a, const void *b) {
    double x = ((const wk_item *)a)->logq, y = ((const wk_item *)b)->logq;
    return (x < y) - (x > y);
}

static int common_prefix(const int *a, int na, const int *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Rule 1 of healing: r + A is the byte string of a path prefix this session
 * reported; returns the number of tokens (shortest path wins) or 0. */
static int match_path(const wk_engine *e, const wk_session *s, const unsigned char *ra, size_t n,
                      const int **toks) {
    int best = 0;
    for (int i = 0; i < s->n_paths; i++) {
        const wk_path *p = &s->paths[i];
        size_t off = 0;
        for (int j = 0; j < p->n && off < n; j++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(e->m->va, p->tok[j], &bl);
            if (bl == 0 || off + bl > n || memcmp(ra + off, b, bl) != 0) break;
            off += bl;
            if (off == n) {
                if (!best || j + 1 < best) {
                    best = j + 1;
                    *toks = p->tok;
                }
                break;
            }
        }
    }
    return best;
}

int wk_step(wk_engine *e, const wk_step_req *q, wk_step_res *res, wk_err *err) {
    memset(res, 0, sizeof *res);
    res->end_logq = -INFINITY;
    err->status = 0;
    wk_model *m = e->m;
    int has_prompt = q->prompt != NULL || q->n_messages > 0;
    int *ptok = NULL, np = 0;
    if (has_prompt) {
        char *chat = NULL;
        const char *ptext = q->prompt;
        size_t plen = q->prompt_len;
        int parse_special = 0;
        if (!q->prompt) {
            chat = wk_render_chat(m, q->messages, q->n_messages, &plen, &parse_special);
            if (!chat) {
                set_err(err, 500, "internal", "out of memory");
                return -1;
            }
            ptext = chat;
        }
        np = wk_tokenize_raw(m, ptext, plen, 1, parse_special, &ptok);
        free(chat);
        if (np < 0) {
            set_err(err, 400, "invalid_prompt", "the prompt could not be tokenized");
            return -1;
        }
        if (np == 0) {
            ptok[0] = m->doc_start;
            np = 1;
        }
    }
    if (q->k < 0 || q->k > WK_MAX_K || q->n_cands < 0 || q->n_cands > WK_MAX_CANDIDATES) {
        free(ptok);
        set_err(err, 400, "invalid_value", "k or candidates out of range");
        return -1;
    }

    pthread_mutex_lock(&e->mu);
    wk_session *s = find_session(e, q->session);
    int *nt = NULL, n_nt = 0, n_np = 0, ok = 0;
    unsigned char *ng = NULL;
    size_t ng_len = 0, ng_cap = 0, nr = 0;
    wk_item *items = NULL;
    wk_job *jobs = NULL;
    int n_items = 0, n_top_items = 0, nj = 0;
    if (!s && !has_prompt) {
        set_err(err, 404, "session_not_found",
                "unknown session '%s' (never created, deleted or evicted): send a prompt", q->session);
        goto out;
    }
    /* The new state, built aside so that an error leaves the session as it was. */
    int cap_nt = 0;
    int new_t_r = has_prompt ? -1 : s->t_r;
    const unsigned char *tail_src = has_prompt ? NULL : s->g;
    size_t tail_len = has_prompt ? 0 : s->g_len;
    if (has_prompt) {
        n_np = np;
        if (q->heal_prompt && np > 1) {
            size_t bl;
            const unsigned char *b = va_token_bytes(m->va, ptok[np - 1], &bl);
            if (bl) {
                tail_src = b;
                tail_len = bl;
                nr = bl;
                n_np = np - 1;
                new_t_r = ptok[np - 1];
            }
        }
        if (grow((void **)&nt, &cap_nt, np + 2, sizeof *nt) != 0) goto oom;
        memcpy(nt, ptok, (size_t)n_np * sizeof *nt);
        n_nt = n_np;
    } else {
        if (grow((void **)&nt, &cap_nt, s->n_tok + 2, sizeof *nt) != 0) goto oom;
        memcpy(nt, s->tok, (size_t)s->n_tok * sizeof *nt);
        n_nt = s->n_tok;
        n_np = s->n_prompt;
        nr = s->r_len;
    }
    if (grow_bytes(&ng, &ng_cap, tail_len + q->append_len + 1) != 0) goto oom;
    if (tail_len) memcpy(ng, tail_src, tail_len);
    ng_len = tail_len;
    if (q->append_len) {
        memcpy(ng + ng_len, q->append, q->append_len);
        const int *pt = NULL;
        int j = has_prompt ? 0 : match_path(e, s, ng + ng_len - nr, nr + q->append_len, &pt);
        ng_len += q->append_len;
        if (j > 0) { /* rule 1: the member's own tokens */
            if (grow((void **)&nt, &cap_nt, n_nt + j + 2, sizeof *nt) != 0) goto oom;
            memcpy(nt + n_nt, pt, (size_t)j * sizeof *nt);
            n_nt += j;
            nr = 0;
            new_t_r = -1;
        } else { /* rule 2: re-tokenize the tail canonically, back off the last token */
            int *canon = NULL;
            int k = wk_tokenize_after(m, nt[n_np - 1], ng, ng_len, &canon);
            if (k <= 0) {
                free(canon);
                set_err(err, 400, "untokenizable", "the text cannot be tokenized by this model");
                goto out;
            }
            if (grow((void **)&nt, &cap_nt, n_np + k + 2, sizeof *nt) != 0) {
                free(canon);
                goto oom;
            }
            memcpy(nt + n_np, canon, (size_t)(k - 1) * sizeof *nt);
            n_nt = n_np + k - 1;
            va_token_bytes(m->va, canon[k - 1], &nr);
            new_t_r = canon[k - 1];
            free(canon);
        }
    }
    if (n_nt + (nr ? 1 : 0) > e->n_ctx) {
        set_err(err, 400, "context_length_exceeded",
                "the session needs %d tokens, over the context of %d", n_nt + (nr ? 1 : 0), e->n_ctx);
        goto out;
    }
    /* Commit. */
    if (!s) s = new_session(e, q->session);
    free(s->tok);
    s->tok = nt;
    s->cap_tok = cap_nt;
    nt = NULL;
    s->n_tok = n_nt;
    s->n_prompt = n_np;
    free(s->g);
    s->g = ng;
    s->g_cap = ng_cap;
    ng = NULL;
    s->g_len = ng_len;
    s->r_len = nr;
    s->t_r = nr ? new_t_r : -1;
    if (has_prompt || q->append_len || s->n_paths > 4096) s->n_paths = 0;
    s->last_use = ++e->clock;

    /* Decode what the KV cache lacks, in one batch with the residue token. */
    int L = common_prefix(s->kv, s->n_kv, s->tok, s->n_tok);
    if (L >= s->n_tok && s->p0_n != s->n_tok && s->p1_n == s->n_tok) {
        /* The last step's residue token is now committed: its p1 is our p0. */
        float *tp = s->p0; s->p0 = s->p1; s->p1 = tp;
        double *tc = s->cum0; s->cum0 = s->cum1; s->cum1 = tc;
        s->p0_n = s->n_tok;
        s->p1_n = -1;
    }
    int need0 = !(L >= s->n_tok && s->p0_n == s->n_tok);
    int t_r = s->r_len ? s->t_r : -1;
    int need1 = t_r >= 0 && !(s->p1_n == s->n_tok + 1 && L >= s->n_tok && s->n_kv > s->n_tok &&
                              s->kv[s->n_tok] == t_r);
    if (need0 || need1) {
        int from = need0 ? (L < s->n_tok ? L : s->n_tok - 1) : s->n_tok;
        kv_truncate(e, s, from);
        int d = feed(e, s, s->tok, from, s->n_tok, need1 ? t_r : -1);
        if (d < 0) goto decode_failed;
        res->decoded += d;
    }
    const unsigned char *r = s->g + s->g_len - s->r_len;
    wk_ctx c = {e, s, r, s->r_len, t_r};

    /* Strings to evaluate: the member's proposals, then the caller's candidates. */
    int k = q->k;
    int maxn = 2 * k + q->n_cands;
    items = calloc((size_t)(maxn ? maxn : 1), sizeof *items);
    jobs = calloc((size_t)(maxn ? maxn : 1), sizeof *jobs);
    wk_cand *heap = malloc((size_t)(k ? k : 1) * sizeof *heap);
    if (!items || !jobs || !heap) {
        free(heap);
        goto oom;
    }
    double Mr = s->r_len ? mass(e, s->p0, s->cum0, r, s->r_len) : 1.0;
    int nh = 0;
    if (k > 0) {
        if (!s->r_len) { /* every token with bytes: scan by id, in memory order */
            for (int id = 0; id < e->n_vocab; id++) {
                if (nh == k && s->p0[id] <= heap[0].p) continue;
                size_t bl;
                va_token_bytes(m->va, id, &bl);
                if (bl) heap_push(heap, &nh, k, (wk_cand){s->p0[id], id});
            }
        } else {
            int lo, hi;
            va_prefix_range(m->va, r, s->r_len, &lo, &hi);
            for (int i = lo; i < hi; i++) {
                int id = va_sorted_id(m->va, i);
                size_t bl;
                va_token_bytes(m->va, id, &bl);
                if (bl <= s->r_len) continue;
                heap_push(heap, &nh, k, (wk_cand){s->p0[id], id});
            }
        }
        for (int i = 0; i < nh; i++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(m->va, heap[i].id, &bl);
            wk_item *it = &items[n_items];
            if (item_set(it, r, s->r_len, b + s->r_len, bl - s->r_len) != 0) {
                free(heap);
                goto oom;
            }
            it->m = mass(e, s->p0, s->cum0, it->x, it->xn);
            remember(s, &heap[i].id, 1);
            n_items++;
        }
        if (c.t_r >= 0) {
            nh = 0;
            for (int id = 0; id < e->n_vocab; id++) {
                if (nh == k && s->p1[id] <= heap[0].p) continue;
                size_t bl;
                va_token_bytes(m->va, id, &bl);
                if (bl) heap_push(heap, &nh, k, (wk_cand){s->p1[id], id});
            }
            for (int i = 0; i < nh; i++) {
                size_t bl;
                const unsigned char *b = va_token_bytes(m->va, heap[i].id, &bl);
                int dup = 0;
                for (int q2 = 0; q2 < n_items && !dup; q2++)
                    dup = items[q2].len == bl && !memcmp(items[q2].s, b, bl);
                if (dup) continue;
                wk_item *it = &items[n_items];
                if (item_set(it, r, s->r_len, b, bl) != 0) {
                    free(heap);
                    goto oom;
                }
                it->m = mass_or_job(&c, it->x, it->xn, &jobs[nj], 0);
                if (isnan(it->m)) jobs[nj++].out = n_items;
                int pth[2] = {c.t_r, heap[i].id};
                remember(s, pth, 2);
                n_items++;
            }
        }
    }
    free(heap);
    n_top_items = n_items;
    for (int i = 0; i < q->n_cands; i++) {
        wk_item *it = &items[n_items];
        if (item_set(it, r, s->r_len, q->cands[i], q->cand_lens[i]) != 0) goto oom;
        /* Not remembered: a string the member was only asked about is not its
         * own choice, so committing it must heal (rule 2), not absorb. */
        it->m = q->cand_lens[i] == 0 ? Mr : mass_or_job(&c, it->x, it->xn, &jobs[nj], 0);
        if (isnan(it->m)) jobs[nj++].out = n_items;
        n_items++;
    }
    if (nj) {
        double *ms = malloc((size_t)n_items * sizeof *ms);
        if (!ms) goto oom;
        int d = run_jobs(&c, jobs, nj, ms, 0);
        for (int i = 0; i < nj; i++) items[jobs[i].out].m = ms[jobs[i].out];
        free(ms);
        if (d < 0) goto decode_failed;
        res->decoded += d;
    }
    for (int i = 0; i < n_items; i++)
        items[i].logq = items[i].m > 0 && Mr > 0 ? log(items[i].m / Mr) : -INFINITY;

    /* The answer. */
    qsort(items, (size_t)n_top_items, sizeof *items, cmp_items);
    int nt_out = n_top_items < k ? n_top_items : k;
    res->top = calloc((size_t)(nt_out ? nt_out : 1), sizeof *res->top);
    res->cand_logq = malloc((size_t)(q->n_cands ? q->n_cands : 1) * sizeof *res->cand_logq);
    res->residue = malloc(s->r_len + 1);
    if (!res->top || !res->cand_logq || !res->residue) goto oom;
    for (int i = 0; i < nt_out; i++) {
        res->top[i].s = malloc(items[i].len + 1);
        if (!res->top[i].s) goto oom;
        memcpy(res->top[i].s, items[i].s, items[i].len);
        res->top[i].len = items[i].len;
        res->top[i].logq = items[i].logq;
        res->n_top++;
    }
    for (int i = 0; i < q->n_cands; i++) res->cand_logq[i] = items[n_top_items + i].logq;
    memcpy(res->residue, r, s->r_len);
    res->residue_len = s->r_len;
    res->n_past = s->n_tok;
    double eog = 0;
    if (!s->r_len) {
        for (int i = 0; i < e->n_eog; i++) eog += s->p0[e->eog[i]];
    } else if (c.t_r >= 0) {
        for (int i = 0; i < e->n_eog; i++) eog += s->p1[e->eog[i]];
        eog *= s->p0[c.t_r] / Mr;
    }
    res->end_logq = eog > 0 ? log(eog) : -INFINITY;
    ok = 1;
    goto out;

decode_failed:
    /* the KV cache of this session is in an unknown state: drop it */
    llama_memory_seq_rm(llama_get_memory(e->ctx), s->seq, -1, -1);
    s->n_kv = 0;
    s->p0_n = s->p1_n = -1;
    set_err(err, 500, "decode_failed", "llama_decode failed");
    goto out;
oom:
    set_err(err, 500, "internal", "out of memory");
out:
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_items; i++) free(items[i].x);
    free(items);
    free(jobs);
    free(nt);
    free(ng);
    free(ptok);
    if (!ok) {
        wk_step_res_free(res);
        if (!err->status) set_err(err, 500, "internal", "internal error");
        return -1;
    }
    return 0;
}

void wk_step_res_free(wk_step_res *r) {
    if (!r) return;
    for (int i = 0; i < r->n_top; i++) free(r->top[i].s);
    free(r->top);
    free(r->cand_logq);
    free(r->residue);
    memset(r, 0, sizeof *r);
    r->end_logq = -INFINITY;
}

/* ---- scoring ------------------------------------------------------------ */

int wk_score(wk_engine *e, const char *text, size_t len, int doc_start, wk_score_res *res,
             wk_err *err) {
    memset(res, 0, sizeof *res);
    err->status = 0;
    int *tt = NULL;
    size_t *sp = NULL;
    int n = wk_tokenize_text(e->m, text, len, &tt, &sp);
    if (n < 0) {
        set_err(err, 400, "untokenizable",
                "the text does not tokenize to exactly its own bytes with this model");
        return -1;
    }
    int off = doc_start ? 1 : 0;
    int N = n + off; /* the token sequence read by the model */
    int *all = malloc((size_t)(N ? N : 1) * sizeof *all);
    res->toks = calloc((size_t)(n ? n : 1), sizeof *res->toks);
    if (!all || !res->toks) {
        free(all);
        free(tt);
        free(sp);
        wk_score_res_free(res);
        set_err(err, 500, "internal", "out of memory");
        return -1;
    }
    if (doc_start) all[0] = e->m->doc_start;
    for (int i = 0; i < n; i++) {
        all[i + off] = tt[i];
        res->toks[i] = (wk_score_tok){tt[i], sp[2 * i], sp[2 * i + 1], NAN, NAN, NAN};
    }
    res->n = n;
    res->n_ctx = e->n_ctx;
    res->overlap = e->n_ctx / 2;
    free(tt);
    free(sp);

    int W = e->n_ctx, ov = res->overlap, rc = 0;
    pthread_mutex_lock(&e->mu);
    llama_memory_t mem = llama_get_memory(e->ctx);
    int seq = e->score_seq;
    /* predicted tokens: all[1..N); token i is predicted from position i-1 */
    int next = 1; /* first token index not yet scored */
    int ws = 0;
    while (next < N) {
        int we = ws + W < N ? ws + W : N;
        llama_memory_seq_rm(mem, seq, -1, -1);
        for (int i = ws; i < we && rc == 0;) {
            e->batch.n_tokens = 0;
            int end = i + e->n_batch < we ? i + e->n_batch : we;
            int first_out = -1;
            for (int j = i; j < end; j++) {
                int out = j + 1 >= next && j + 1 < we;
                if (out && first_out < 0) first_out = j;
                batch_add(&e->batch, all[j], j - ws, seq, out);
            }
            if (first_out < 0) { /* nothing to read here: still fill the cache */
                if (decode(e) < 0) rc = -1;
                else res->decoded += end - i;
                i = end;
                continue;
            }
            if (decode(e) < 0) {
                rc = -1;
                break;
            }
            res->decoded += end - i;
            for (int j = first_out; j < end; j++) {
                if (!(j + 1 >= next && j + 1 < we)) continue;
                const float *lg = llama_get_logits_ith(e->ctx, j - i);
                float mx = lg[0];
                for (int v = 1; v < e->n_vocab; v++)
                    if (lg[v] > mx) mx = lg[v];
                double z = 0, zl = 0;
                for (int v = 0; v < e->n_vocab; v++) {
                    double w = exp((double)lg[v] - mx);
                    z += w;
                    zl += w * ((double)lg[v] - mx);
                }
                double lz = log(z);
                wk_score_tok *st = &res->toks[j + 1 - off];
                st->logprob = (double)lg[all[j + 1]] - mx - lz;
                st->entropy = lz - zl / z;
                st->top1 = 1.0 / z;
            }
            i = end;
        }
        if (rc) break;
        if (we > next) next = we;
        if (we >= N) break;
        ws = we - ov;
    }
    llama_memory_seq_rm(mem, seq, -1, -1);
    pthread_mutex_unlock(&e->mu);
    free(all);
    if (rc) {
        wk_score_res_free(res);
        set_err(err, 500, "decode_failed", "llama_decode failed");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!isnan(res->toks[i].logprob)) res->sum_logprob += res->toks[i].logprob;
    return 0;
}

void wk_score_res_free(wk_score_res *r) {
    if (!r) return;
    free(r->toks);
    memset(r, 0, sizeof *r);
}
