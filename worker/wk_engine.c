/* worker/wk_engine.c: sessions, prefix masses and scoring over one
 * llama_context (contract: wk_engine.h; semantics: docs/PROTOCOL.md).
 *
 * Why it is shaped so.
 *  - One context, one unified KV cache. A worker serves several sessions and
 *    a scorer from one model; llama.cpp's unified cache lets each be a
 *    sequence id in the same cells (slots + 1 + WK_SCRATCH sequences), so a
 *    session costs only the positions it holds and sequences can be copied
 *    cheaply (llama_memory_seq_cp) for teacher forcing.
 *  - Sessions. A session is X = P + C (prompt and committed tokens), the
 *    healable tail g (healed prompt bytes + G, the text common to all
 *    members) whose last r_len bytes are the residue r, the residue token t_r
 *    that spells r, and a mirror of its KV sequence (kv[0..n_kv)). It also
 *    keeps p0 = p(. | X) and p1 = p(. | X + t_r) with the positions they
 *    belong to, which is what makes a re-answer free and a healing step cost
 *    one decoded position (see sync_kv). The invariant bytes(C) + r == g is
 *    checked by session_sane() in assert() wherever a session changes.
 *  - The residue / healing rule. Text another member chose is re-tokenized
 *    canonically and its last token backed off into r; only continuations
 *    that start with r are proposed. Text this member proposed itself
 *    (remembered token paths) is committed as those tokens (rule 1).
 *  - Prefix masses. T(x | X) is a range sum over the vocabulary sorted by
 *    bytes (va_vocab: va_prefix_range, cumulative sums on first need); a
 *    string that no single token starts with is teacher-forced along its
 *    canonical tokenization in scratch sequences (run_jobs), the one
 *    approximation of the protocol.
 *  - A step is a sequence of named phases (wk_step at the end): plan the new
 *    state aside, commit it, sync the KV cache, propose, evaluate candidates,
 *    answer (with, when asked, the next-byte distribution: range sums, and
 *    for depth > 1 the distributions before the last committed tokens
 *    decoded again in a scratch sequence). Planning aside is what lets
 *    every failing request leave the session as it was.
 *
 * State and locking: a decode scheduler (continuous batching).
 *  - Several HTTP threads call in at once. Everything a step computes that
 *    is not a decode (planning, tokenizing, softmax, top-k, prefix masses,
 *    rule-1 paths) runs on the caller's own thread, holding only its
 *    session (`busy`, claimed under `mu`). Decodes are described as a work
 *    (tokens, positions, sequences, which rows are wanted, a row callback)
 *    and queued; whichever waiting thread finds no leader becomes the
 *    leader, gathers one batch from the queue, decodes it under `dmu`,
 *    hands each wanted row to its owner's callback (copied, or reduced to
 *    a log-probability) and wakes the owners. So N sessions stepping at once
 *    share about one llama_decode per step, and their softmaxes run in
 *    parallel while the next batch decodes.
 *  - What a batch may hold (gather): small works (a step's new tokens, the
 *    residue token, short teacher-forced paths; at most WK_SHARED_TOKENS)
 *    share a batch of at most WK_SHARED_TOKENS tokens; a large work (a
 *    prompt, a scoring window) is decoded alone in the n_batch chunks it
 *    always used. llama.cpp's CPU kernels compute each row of a batch under
 *    64 tokens exactly as alone (checked bit for bit on the project's
 *    models), so batching changes nobody's numbers; what remains is the
 *    unified cache's own rounding (cells of one session in another order:
 *    large with CPU flash attention, whose V accumulator is f16; see
 *    docs/WORKER.md, "Concurrent sessions and rounding").
 *    Fairness: the queue's head picks the kind; a large work with tokens
 *    left goes to the tail after each chunk; a leader lingers (at most
 *    batch_wait_s or a quarter of a recent decode, whichever is longer,
 *    never longer than a recent decode) for callers expected to join:
 *    sessions inside a call or that finished one within 50 ms or two
 *    recent decodes (an ensemble's sessions come back only after the other
 *    members have answered).
 *  - Locks: `mu` guards the session table's bookkeeping, the queue, the
 *    scratch-sequence pool, the score slot and the counters; `dmu` guards
 *    the llama_context (decodes, KV-cache operations, the batch). No thread
 *    ever holds both. One call per session at a time (a second waits), one
 *    score at a time (the scoring sequence), WK_SCRATCH scratch sequences
 *    shared by all sessions (taken per group of teacher-forced jobs).
 *
 * Budgets and cancellation. Limits that can be decided from the request
 * (candidate bytes, score tokens) are checked before any work; the
 * teacher-forced positions once evaluate() knows them. A call carries its
 * wk_cancel in a wk_call (which also records why it stopped); run_work
 * checks it before queueing a work, and the leader before each further
 * n_batch chunk of a large work, so a stopped call never starts another
 * batch of its own (other callers' works in a shared batch go on). A step
 * that stops after committing its plan is rolled back: commit swaps the
 * plan's arrays with the session's (the plan keeps the old ones), and the
 * remembered paths of the new answer are appended after the old ones until
 * the step succeeds, so undo is a swap back and a count; the KV sequence
 * keeps what was decoded (the mirror kv[] says what that is).
 *
 * Speculative steps (docs/PROTOCOL.md, draft, draft_b64 and steps_b64).
 * Several steps of one session in one call reuse the phases unchanged:
 * inner_step() is one step of a claimed session, undone when it fails; a
 * draft runs it along the session's own first proposal (draft) or along
 * the caller's pieces (draft_b64) and then puts the text state, paths and
 * kept distributions back (wk_snapshot), leaving the drafted KV positions
 * for the next call; steps_b64 runs it once per piece before the request's
 * own step, all undone together on a failure. Two things make this cheaper
 * than plain steps without changing a number:
 *  - a row cache (wk_rowcache, only in sessions that speculated): the
 *    distributions after kv[0..pos) for positions decoded with their rows
 *    wanted, valid while the mirror's first pos tokens stay (kv_truncate
 *    drops the rest). feed() stores its rows there and sync_kv() takes p0
 *    and p1 from it when the mirror holds X (and X + t_r), so a steps_b64
 *    over pieces drafted in the previous call decodes nothing for them;
 *  - a prefetch for draft_b64 (prefetch_draft): the pieces are known
 *    before the draft starts, so the positions they will most likely need
 *    (X, then the canonical tokens of r + p1 + ... + pn after X's last
 *    token) are decoded in one work, every row into the cache; each drafted
 *    step whose X (and t_r) is on that prediction then decodes nothing.
 *    The prediction only decides what is decoded early: a step off it
 *    (a piece ending inside a word) decodes as usual. A row of a small
 *    batch of one sequence's positions is computed on the CPU exactly as
 *    that position alone (checked bit for bit on the project's models,
 *    tests/unit/worker/test_wk_draft.c), so the answers are those of the
 *    pieces sent one request each.
 * A draft along the member's own proposals cannot be predicted: its steps
 * are still decoded one after another (what may change).
 *
 * The byte walk (worker/wk_bytes.c, POST /v1/next_bytes) is a client of
 * this engine through a few calls at the end of this file: it holds the
 * scoring sequence as a score does, forks it into scratch sequences and
 * queues its decodes to the same scheduler (wk_engine_decode_rows).
 *
 * What may change: larger shared batches on backends whose kernels do not
 * depend on the batch size; a draft along the member's own proposals
 * decoded as a tree in one batch (several proposals per position, in
 * scratch sequences) instead of one step after another; a prediction that
 * also covers drafted states ending inside a word (today they decode their
 * residue token alone, and the truncation drops the prefetched positions
 * after it); context shifting instead of
 * context_length_exceeded, more scratch sequences when candidate sets grow,
 * a KV budget for scratch cells (today cells beyond n_ctx * (slots + 1) +
 * n_batch make a decode fail cleanly with decode_failed).
 */
#include "worker/wk_engine.h"
#include "worker/wk_llama_safe.h"
#include "worker/wk_softmax.h"
#include "common/clock.h"
#include "common/log.h"

#include <assert.h>
#include <stdatomic.h>
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
#define WK_SHARED_TOKENS 32 /* the most tokens of a batch shared by several callers (gather) */

typedef struct wk_path {
    int n;
    int tok[WK_MAX_PATH];
} wk_path;

/* The row cache of a speculating session: probabilities after kv[0..pos)
 * for positions decoded with their logits wanted, valid while the KV
 * mirror's first pos tokens are unchanged (kv_truncate drops the rows
 * beyond the cut). WK_ROWS rows at most; a full cache evicts the lowest
 * position. */
#define WK_ROWS (2 * PROTO_MAX_DRAFT + 4)
#define WK_PREFETCH (WK_ROWS - 4) /* the most positions one draft_b64 decodes ahead */

typedef struct wk_rowcache {
    int pos[WK_ROWS]; /* -1 = empty */
    float *p;         /* WK_ROWS rows of n_vocab probabilities */
} wk_rowcache;

typedef struct wk_session {
    char id[72];
    char owner[24];   /* who created it (token fingerprint), "" = nobody */
    int used, busy; /* busy: a call owns the session (under e->mu) */
    int seq;
    uint64_t last_use;
    double last_done; /* clock_mono_s() when its last call ended */
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
    wk_rowcache *rows; /* NULL until the session speculates (draft, draft_b64, steps_b64) */
} wk_session;

struct wk_work;
typedef struct wk_brow { /* which caller's token a batch row is */
    struct wk_work *w;
    int i;
} wk_brow;

struct wk_engine {
    wk_model *m;
    struct llama_context *ctx;
    int n_ctx, slots, n_batch, n_vocab;
    int score_seq, scratch0;
    int *eog;     /* end-of-generation token ids */
    int n_eog;
    int max_cand_bytes, max_forced, max_score_tokens;
    double batch_wait_s;
    /* under mu: the session table, the queue of work, the counters */
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* broadcast on every change a waiter may wait for */
    wk_session *s;
    uint64_t clock;
    struct wk_work *q_head, *q_tail;
    int n_queued;       /* works in the queue (one per waiting caller) */
    int leader;         /* a thread is gathering or decoding a batch */
    int inside;         /* calls holding a session or the scoring sequence */
    int score_busy;
    unsigned scratch_free; /* bit i: sequence scratch0 + i is free */
    double decode_s;    /* recent decode time (moving average) */
    uint64_t tokens_decoded, decodes, shared_decodes;
    double decode_total_s, linger_total_s; /* where the time went (wk_stats) */
    uint64_t graphs_reused; /* llama.cpp's count, read after each decode */
    _Atomic uint64_t step_ns, softmax_ns; /* added by callers outside mu */
    /* under dmu: the llama_context (decodes, KV-cache operations) and the
     * batch with its row owners, used by the leader only */
    pthread_mutex_t dmu;
    struct llama_batch batch;
    wk_brow *brow;
};

enum { WK_STOP_NONE, WK_STOP_DEADLINE, WK_STOP_GONE, WK_STOP_BUDGET };

/* ---- small helpers ------------------------------------------------------ */

static void set_err(wk_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(wk_err *e, int status, const char *code, const char *fmt, ...) {
    if (!e) return;
    e->status = status;
    e->code = code;
    e->param = NULL;
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

/* log softmax(logits)[t], in double (scoring: one token's log-probability). */
static double log_softmax_at(const float *logits, int n, int t) {
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)logits[i] - mx);
    return (double)logits[t] - mx - log(z);
}

/* T(x) from probs and their cumulative sums in byte order (vocab_align's
 * va_mass_lazy: cum may be NULL; cum[0] = NAN means "not computed yet"). */
static double mass(const wk_engine *e, const float *p, double *cum,
                   const unsigned char *x, size_t n) {
    return va_mass_lazy(e->m->va, p, cum, x, n);
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
    if (op.n_batch < op.slots + 1 + WK_SCRATCH) { /* llama.cpp aborts on fewer outputs than sequences */
        snprintf(err, err_size, "a batch of %d tokens is too small for %d sequences", op.n_batch,
                 op.slots + 1 + WK_SCRATCH);
        return NULL;
    }
    wk_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    e->m = m;
    e->n_ctx = op.n_ctx;
    e->slots = op.slots;
    e->n_batch = op.n_batch;
    e->max_cand_bytes = op.max_cand_bytes > 0 ? op.max_cand_bytes : WK_DEFAULT_MAX_CAND_BYTES;
    e->max_forced = op.max_forced > 0 ? op.max_forced : WK_DEFAULT_MAX_FORCED;
    e->max_score_tokens = op.max_score_tokens > 0 ? op.max_score_tokens : WK_DEFAULT_MAX_SCORE_TOKENS;
    e->n_vocab = m->n_vocab;
    e->score_seq = op.slots;
    e->scratch0 = op.slots + 1;
    e->batch_wait_s = op.batch_wait_us < 0 ? 0 : (op.batch_wait_us ? op.batch_wait_us : WK_BATCH_WAIT_US) * 1e-6;
    e->scratch_free = (1u << WK_SCRATCH) - 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->dmu, NULL);
    pthread_cond_init(&e->cv, NULL);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(op.n_ctx * (op.slots + 1) + op.n_batch);
    cp.n_batch = (uint32_t)op.n_batch;
    cp.n_ubatch = (uint32_t)op.n_batch;
    cp.n_seq_max = (uint32_t)(op.slots + 1 + WK_SCRATCH);
    cp.n_threads = op.n_threads;
    cp.n_threads_batch = op.n_threads;
    cp.kv_unified = true;
    cp.no_perf = true;
    if (op.flash_attn) cp.flash_attn_type = op.flash_attn == 1 ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (op.type_k) cp.type_k = (enum ggml_type)(op.type_k - 1);
    if (op.type_v) cp.type_v = (enum ggml_type)(op.type_v - 1);
    e->ctx = llama_init_from_model(m->model, cp);
    if (!e->ctx) {
        snprintf(err, err_size, "llama.cpp could not create a context (n_ctx %u, %d sequences)",
                 cp.n_ctx, (int)cp.n_seq_max);
        pthread_mutex_destroy(&e->mu);
        pthread_mutex_destroy(&e->dmu);
        pthread_cond_destroy(&e->cv);
        free(e);
        return NULL;
    }
    e->batch = llama_batch_init(op.n_batch, 0, 1);
    e->brow = malloc((size_t)op.n_batch * sizeof *e->brow);
    e->s = calloc((size_t)op.slots, sizeof *e->s);
    e->eog = malloc((size_t)e->n_vocab * sizeof *e->eog);
    if (e->eog)
        for (int id = 0; id < e->n_vocab; id++)
            if (m->is_eog[id]) e->eog[e->n_eog++] = id;
    if (!e->brow || !e->s || !e->eog) {
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
    if (s->rows) free(s->rows->p);
    free(s->rows);
    int seq = s->seq, busy = s->busy;
    memset(s, 0, sizeof *s);
    s->seq = seq;
    s->busy = busy;
    s->p0_n = s->p1_n = -1;
}

void wk_engine_free(wk_engine *e) {
    if (!e) return;
    if (e->s)
        for (int i = 0; i < e->slots; i++) session_release(&e->s[i]);
    free(e->s);
    free(e->brow);
    free(e->eog);
    if (e->ctx) {
        llama_batch_free(e->batch);
        llama_free(e->ctx);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->dmu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int wk_engine_n_ctx(const wk_engine *e) { return e->n_ctx; }
int wk_engine_slots(const wk_engine *e) { return e->slots; }

void wk_engine_stats(wk_engine *e, wk_stats *st) {
    pthread_mutex_lock(&e->mu);
    st->tokens_decoded = e->tokens_decoded;
    st->decodes = e->decodes;
    st->shared_decodes = e->shared_decodes;
    st->graphs_reused = e->graphs_reused;
    st->decode_s = e->decode_total_s;
    st->linger_s = e->linger_total_s;
    st->step_s = (double)atomic_load(&e->step_ns) * 1e-9;
    st->softmax_s = (double)atomic_load(&e->softmax_ns) * 1e-9;
    st->sessions_in_use = 0;
    for (int i = 0; i < e->slots; i++) st->sessions_in_use += e->s[i].used;
    pthread_mutex_unlock(&e->mu);
}

/* ---- the decode scheduler ---------------------------------------------- */

/* A caller's share of the context's work: tokens in order, each with its
 * position, sequence and whether its logits are wanted. The scheduler may
 * hand them to several consecutive batches (tokens of one sequence stay in
 * order, which is all causal decoding needs); each wanted row is delivered
 * to on_row(arg, token index, logits) by the thread that ran the decode,
 * under the decode lock, before the work is marked done. */
typedef void (*wk_row_fn)(void *arg, int i, const float *logits);

typedef struct wk_work {
    int *tok, *pos, *seq;
    int8_t *want;
    int n, cap;
    wk_row_fn on_row;
    void *arg;
    struct wk_call *call; /* checked before each further chunk of a large work; NULL = never stops */
    /* scheduler state, under e->mu */
    int next;          /* first token not yet given to a batch */
    int status;        /* 0 pending, 1 done, -1 a decode failed */
    int in_batch;      /* has tokens in the batch being decoded */
    int stopped;       /* its call stopped before its next chunk */
    struct wk_work *qnext;
} wk_work;

static void work_free(wk_work *w) {
    free(w->tok);
    free(w->pos);
    free(w->seq);
    free(w->want);
    memset(w, 0, sizeof *w);
}

static int work_add(wk_work *w, int tok, int pos, int seq, int want) {
    if (w->n == w->cap) {
        int c = w->cap ? 2 * w->cap : 16;
        int *t = realloc(w->tok, (size_t)c * sizeof *t);
        if (t) w->tok = t;
        int *p = realloc(w->pos, (size_t)c * sizeof *p);
        if (p) w->pos = p;
        int *s = realloc(w->seq, (size_t)c * sizeof *s);
        if (s) w->seq = s;
        int8_t *o = realloc(w->want, (size_t)c * sizeof *o);
        if (o) w->want = o;
        if (!t || !p || !s || !o) return -1;
        w->cap = c;
    }
    w->tok[w->n] = tok;
    w->pos[w->n] = pos;
    w->seq[w->n] = seq;
    w->want[w->n] = (int8_t)want;
    w->n++;
    return 0;
}

static void batch_add(struct llama_batch *b, int tok, int pos, int seq, int logits) {
    int i = b->n_tokens++;
    b->token[i] = tok;
    b->pos[i] = pos;
    b->n_seq_id[i] = 1;
    b->seq_id[i][0] = seq;
    b->logits[i] = (int8_t)logits;
}

/* One call's cancellation and why it stopped (WK_STOP_*), on its stack. */
typedef struct wk_call wk_call;
struct wk_call {
    const wk_cancel *cancel;
    int stop;
    int stop_forced; /* teacher-forced positions asked, for the message */
};

/* Why a call must stop now (WK_STOP_*), or 0. */
static int stop_reason(const wk_cancel *c) {
    if (!c) return WK_STOP_NONE;
    if (c->deadline > 0 && clock_mono_s() >= c->deadline) return WK_STOP_DEADLINE;
    if (c->gone && c->gone(c->arg)) return WK_STOP_GONE;
    return WK_STOP_NONE;
}

/* Records and returns whether the call must stop now. */
static int call_stopped(wk_call *call) {
    if (!call) return 0;
    if (!call->stop) call->stop = stop_reason(call->cancel);
    return call->stop != WK_STOP_NONE;
}

/* The error of a stopped call. */
static int fail_stopped(const wk_engine *e, const wk_call *call, wk_err *err) {
    if (call->stop == WK_STOP_DEADLINE)
        set_err(err, 503, PROTO_ERR_DEADLINE_EXCEEDED, "the request's deadline passed before its work was done");
    else if (call->stop == WK_STOP_GONE)
        set_err(err, 503, PROTO_ERR_CANCELLED, "the client closed its connection");
    else {
        set_err(err, 400, PROTO_ERR_BUDGET_EXCEEDED,
                "the candidates need %d teacher-forced positions, over this worker's budget of %d per step",
                call->stop_forced, e->max_forced);
        err->param = PROTO_PARAM_CANDIDATES;
    }
    return -1;
}

static void enqueue(wk_engine *e, wk_work *w) {
    w->qnext = NULL;
    if (e->q_tail) e->q_tail->qnext = w;
    else e->q_head = w;
    e->q_tail = w;
    e->n_queued++;
}

/* Callers that will probably want the next batch: every thread inside a
 * step or a score, and every idle session that finished a step within
 * WK_RECENT_S or two recent decodes, whichever is longer (its coordinator
 * is likely to send the next one while we decode; in an ensemble it first
 * waits for the other members, whose decodes take about as long as ours). */
#define WK_RECENT_S 0.05
double wk_recent_window_s(double decode_s) { return WK_RECENT_S > 2 * decode_s ? WK_RECENT_S : 2 * decode_s; }

static int expected_callers(const wk_engine *e, double now) {
    int n = e->inside;
    double recent = wk_recent_window_s(e->decode_s);
    for (int i = 0; i < e->slots; i++)
        if (e->s[i].used && !e->s[i].busy && now - e->s[i].last_done < recent) n++;
    return n;
}

/* The leader waits a little for expected callers to queue their work, so
 * that sessions stepping in lock-step share one decode rather than
 * alternating between a batch of one and a batch of the rest. At most the
 * configured wait or a quarter of the recent decode time, whichever is
 * longer (a decode whose cost hardly grows with its batch gains more from
 * a fuller batch than a quarter decode of waiting costs: the mixture's
 * sessions, which reach a worker out of step, were split into batches of
 * about 5 of 8 on a 200M-parameter model with the fixed 2 ms; see
 * bench/RESULTS.md), and never longer than a recent decode (waiting longer
 * than a decode cannot pay). linger() is called and returns with e->mu
 * held. */
double wk_linger_wait_s(double batch_wait_s, double decode_s) {
    if (batch_wait_s <= 0 || decode_s <= 0) return 0;
    double wait = batch_wait_s > decode_s / 4 ? batch_wait_s : decode_s / 4;
    return wait < decode_s ? wait : decode_s;
}

static void linger(wk_engine *e) {
    double wait = wk_linger_wait_s(e->batch_wait_s, e->decode_s);
    if (wait <= 0) return;
    double t0 = clock_mono_s();
    struct timespec until = clock_abs_after(wait);
    while (e->n_queued < expected_callers(e, t0))
        if (pthread_cond_timedwait(&e->cv, &e->mu, &until) != 0) break;
    e->linger_total_s += clock_mono_s() - t0;
}

/* Fills e->batch from the queue. Two kinds of batch, so that batching
 * changes no caller's numbers:
 *  - small works (at most WK_SHARED_TOKENS tokens: a step's new token or
 *    two, a residue token, short teacher-forced paths) share a batch of at
 *    most WK_SHARED_TOKENS tokens, taken whole in queue order. llama.cpp's
 *    CPU kernels compute each row of so small a batch exactly as they would
 *    alone (checked bit for bit on the project's models; their matrix
 *    kernels change tiling only from 64 rows up);
 *  - a large work (a prompt, a scoring window) is decoded alone, n_batch
 *    tokens at a time: exactly the chunks it would get with no one else
 *    around.
 * Fairness: the queue's head decides the kind; a large work that keeps
 * tokens goes to the tail after its chunk (settle), so small works wait for
 * at most one chunk of n_batch tokens, and several large works take turns.
 * Records which work each batch row belongs to. */
static int gather(wk_engine *e) {
    e->batch.n_tokens = 0;
    wk_work *h = e->q_head;
    if (!h) return 0;
    if (h->n > WK_SHARED_TOKENS) {
        if (h->next > 0 && call_stopped(h->call)) { /* between its chunks: no further batch */
            h->stopped = 1;
            h->in_batch = 1;
            return 0;
        }
        int take = h->n - h->next < e->n_batch ? h->n - h->next : e->n_batch;
        for (int k = 0; k < take; k++, h->next++) {
            e->brow[k] = (wk_brow){h, h->next};
            batch_add(&e->batch, h->tok[h->next], h->pos[h->next], h->seq[h->next], h->want[h->next]);
        }
        h->in_batch = 1;
        return take;
    }
    for (wk_work *w = h; w; w = w->qnext) {
        if (w->n > WK_SHARED_TOKENS || e->batch.n_tokens + w->n > WK_SHARED_TOKENS) continue;
        for (; w->next < w->n; w->next++) {
            e->brow[e->batch.n_tokens] = (wk_brow){w, w->next};
            batch_add(&e->batch, w->tok[w->next], w->pos[w->next], w->seq[w->next], w->want[w->next]);
        }
        w->in_batch = 1;
    }
    return e->batch.n_tokens;
}

/* After a batch: finished and failed works leave the queue (their callers
 * are woken); works with tokens left move to its tail (round-robin). */
static int settle(wk_engine *e, int ok) {
    wk_work *keep = NULL, *keep_tail = NULL, *again = NULL, *again_tail = NULL;
    int callers = 0;
    for (wk_work *w = e->q_head, *nx; w; w = nx) {
        nx = w->qnext;
        w->qnext = NULL;
        int was_in = w->in_batch;
        w->in_batch = 0;
        callers += was_in;
        if (was_in && (!ok || w->stopped || w->next == w->n)) {
            w->status = ok && !w->stopped ? 1 : -1;
            e->n_queued--;
            continue;
        }
        wk_work **h = was_in ? &again : &keep, **t = was_in ? &again_tail : &keep_tail;
        if (*t) (*t)->qnext = w;
        else *h = w;
        *t = w;
    }
    if (keep_tail) keep_tail->qnext = again;
    e->q_head = keep ? keep : again;
    e->q_tail = again_tail ? again_tail : keep_tail;
    return callers;
}

static int rows_wanted(const wk_engine *e, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += e->batch.logits[i] != 0;
    return k;
}

/* One batch, led by the calling thread: gather, decode, deliver the wanted
 * rows, settle. Called with e->mu held and e->leader clear; returns with
 * e->mu held. The decode itself runs under e->dmu only, so callers keep
 * queueing work (and computing their answers) while it runs. */
static void lead_one_batch(wk_engine *e) {
    e->leader = 1;
    if (e->q_head && e->q_head->n <= WK_SHARED_TOKENS) linger(e);
    int n = gather(e);
    pthread_mutex_unlock(&e->mu);

    pthread_mutex_lock(&e->dmu);
    double t0 = clock_mono_s();
    int32_t r = 0;
    if (n && wk_safe_decode(e->ctx, e->batch, &r) != 0) r = -1; /* a C++ exception, contained */
    if (r != 0) log_error("llama_decode failed (%d) on %d tokens", (int)r, n);
    for (int i = 0; r == 0 && i < n; i++)
        if (e->batch.logits[i]) {
            wk_work *w = e->brow[i].w;
            w->on_row(w->arg, e->brow[i].i, llama_get_logits_ith(e->ctx, i));
        }
    double dt = clock_mono_s() - t0;
    int reused = llama_perf_context(e->ctx).n_reused;
    pthread_mutex_unlock(&e->dmu);

    pthread_mutex_lock(&e->mu);
    int callers = settle(e, r == 0);
    e->decodes += n > 0;
    e->shared_decodes += n > 0 && callers > 1;
    if (r == 0) e->tokens_decoded += (uint64_t)n;
    e->decode_total_s += dt;
    if (n > 0 && log_enabled(LOG_DEBUG))
        log_debug("decode: %d token(s), %d row(s) wanted, %d caller(s), %.3f ms, graph %s", n, rows_wanted(e, n),
                  callers, dt * 1e3, (uint64_t)(reused > 0 ? reused : 0) > e->graphs_reused ? "reused" : "built");
    e->graphs_reused = reused > 0 ? (uint64_t)reused : 0;
    e->decode_s = e->decode_s > 0 ? 0.8 * e->decode_s + 0.2 * dt : dt;
    e->leader = 0;
    pthread_cond_broadcast(&e->cv);
}

/* Decodes a work for a call: queues it (unless the call must stop now), and
 * either leads batches (when no other thread does) or waits for them,
 * until every one of its tokens has been decoded. Returns 0, or -1 when a
 * decode carrying its tokens failed or the call stopped (call->stop says
 * so; some of a large work's chunks may have been decoded). */
static int run_work(wk_engine *e, wk_work *w, wk_call *call) {
    if (w->n == 0) return 0;
    if (call_stopped(call)) return -1;
    w->call = call;
    w->next = 0;
    w->status = 0;
    w->in_batch = 0;
    w->stopped = 0;
    pthread_mutex_lock(&e->mu);
    enqueue(e, w);
    pthread_cond_broadcast(&e->cv); /* a lingering leader may be waiting for us */
    while (w->status == 0) {
        if (e->leader) pthread_cond_wait(&e->cv, &e->mu);
        else lead_one_batch(e);
    }
    int st = w->status;
    pthread_mutex_unlock(&e->mu);
    return st > 0 ? 0 : -1;
}

/* KV-cache operations take the decode lock (never together with e->mu). */
static void kv_rm(wk_engine *e, int seq, int from) {
    pthread_mutex_lock(&e->dmu);
    llama_memory_seq_rm(llama_get_memory(e->ctx), seq, from, -1);
    pthread_mutex_unlock(&e->dmu);
}

/* ---- the row cache (speculating sessions only) ---- */

/* Starts caching rows for the session (no-op when it already does). */
static int rows_enable(const wk_engine *e, wk_session *s) {
    if (s->rows) return 0;
    wk_rowcache *rc = malloc(sizeof *rc);
    float *p = malloc((size_t)WK_ROWS * e->n_vocab * sizeof *p);
    if (!rc || !p) {
        free(rc);
        free(p);
        return -1;
    }
    for (int i = 0; i < WK_ROWS; i++) rc->pos[i] = -1;
    rc->p = p;
    s->rows = rc;
    return 0;
}

/* Forgets the rows that depend on KV positions from L on. */
static void rows_drop_from(wk_session *s, int L) {
    if (!s->rows) return;
    for (int i = 0; i < WK_ROWS; i++)
        if (s->rows->pos[i] > L) s->rows->pos[i] = -1;
}

/* The cached probabilities after kv[0..pos), or NULL. */
static const float *rows_find(const wk_engine *e, const wk_session *s, int pos) {
    if (!s->rows || pos < 1) return NULL;
    for (int i = 0; i < WK_ROWS; i++)
        if (s->rows->pos[i] == pos) return s->rows->p + (size_t)i * e->n_vocab;
    return NULL;
}

/* Caches the probabilities after kv[0..pos) (replacing an older row for
 * pos; a full cache gives up its lowest position, unless pos is lower). */
static void rows_put(const wk_engine *e, wk_session *s, int pos, const float *probs) {
    if (!s->rows || pos < 1) return;
    int at = -1;
    for (int i = 0; i < WK_ROWS && at < 0; i++)
        if (s->rows->pos[i] == pos) at = i;
    for (int i = 0; i < WK_ROWS && at < 0; i++)
        if (s->rows->pos[i] < 0) at = i;
    if (at < 0) { /* full: the lowest position goes */
        at = 0;
        for (int i = 1; i < WK_ROWS; i++)
            if (s->rows->pos[i] < s->rows->pos[at]) at = i;
        if (s->rows->pos[at] > pos) return;
    }
    s->rows->pos[at] = pos;
    memcpy(s->rows->p + (size_t)at * e->n_vocab, probs, (size_t)e->n_vocab * sizeof *probs);
}

/* Truncate a session's KV to its first L tokens. */
static void kv_truncate(wk_engine *e, wk_session *s, int L) {
    if (L >= s->n_kv) return;
    kv_rm(e, s->seq, L);
    s->n_kv = L;
    if (s->p0_n > L) s->p0_n = -1;
    if (s->p1_n > L) s->p1_n = -1;
    rows_drop_from(s, L);
}

/* A row's softmax in place, its time counted (wk_stats.softmax_s). */
static void softmax_row(wk_engine *e, float *row) {
    double t0 = clock_mono_s();
    wk_softmax(row, e->n_vocab, row);
    atomic_fetch_add(&e->softmax_ns, (uint64_t)((clock_mono_s() - t0) * 1e9));
}

static int alloc_probs(const wk_engine *e, float **dst, double **cum) {
    if (!*dst) *dst = malloc((size_t)e->n_vocab * sizeof **dst);
    if (!*cum) *cum = malloc((size_t)(e->n_vocab + 1) * sizeof **cum);
    return *dst && *cum ? 0 : -1;
}

/* Logits rows of a feed: the row after toks[0..n) into p0, the row after the
 * residue token into p1 (softmax later, on the caller's thread). */
typedef struct wk_feed_rows {
    const wk_engine *e;
    int i0, i1; /* work indices of the two rows, -1 = not wanted */
    float *p0, *p1;
} wk_feed_rows;

static void feed_row(void *arg, int i, const float *logits) {
    wk_feed_rows *f = arg;
    float *dst = i == f->i0 ? f->p0 : i == f->i1 ? f->p1 : NULL;
    if (dst) memcpy(dst, logits, (size_t)f->e->n_vocab * sizeof *dst);
}

/* Decode toks[from..n) into the session's sequence (positions from..n) and,
 * when extra >= 0, the residue token `extra` at position n, as one work (one
 * llama_decode in steady state, shared with the other sessions' steps: this
 * is what keeps a healing member at about one decoded position per step).
 * Probabilities after toks[0..n) go to p0 when from < n, those after
 * toks[0..n) + extra to p1. Returns positions decoded, or -1. */
static int feed(wk_engine *e, wk_session *s, const int *toks, int from, int n, int extra, wk_call *call) {
    int total = n + (extra >= 0);
    if (grow((void **)&s->kv, &s->cap_kv, total, sizeof(int)) != 0) return -1;
    wk_feed_rows rows = {e, from <= n - 1 ? n - 1 - from : -1, extra >= 0 ? n - from : -1, NULL, NULL};
    if (rows.i0 >= 0 && alloc_probs(e, &s->p0, &s->cum0) != 0) return -1;
    if (rows.i1 >= 0 && alloc_probs(e, &s->p1, &s->cum1) != 0) return -1;
    rows.p0 = s->p0;
    rows.p1 = s->p1;
    if (rows.i0 >= 0) s->p0_n = -1; /* overwritten by the rows, valid again on success */
    if (rows.i1 >= 0) s->p1_n = -1;
    wk_work w = {.on_row = feed_row, .arg = &rows};
    for (int j = from; j < total; j++) {
        int tok = j < n ? toks[j] : extra;
        if (work_add(&w, tok, j, s->seq, j == n - 1 || j == n) != 0) {
            work_free(&w);
            return -1;
        }
        s->kv[j] = tok;
    }
    int rc = run_work(e, &w, call);
    work_free(&w);
    if (rc != 0) { /* a stopped call may have decoded some chunks: the mirror says none */
        kv_rm(e, s->seq, from);
        return -1;
    }
    s->n_kv = total;
    if (rows.i0 >= 0) {
        softmax_row(e, s->p0);
        s->cum0[0] = NAN; /* cumulative sums on first need (mass) */
        s->p0_n = n;
        rows_put(e, s, n, s->p0);
    }
    if (rows.i1 >= 0) {
        softmax_row(e, s->p1);
        s->cum1[0] = NAN;
        s->p1_n = n + 1;
        rows_put(e, s, n + 1, s->p1);
    }
    return total - from;
}

/* ---- sessions ----------------------------------------------------------- */

/* A session is used by one call at a time: a call claims it (busy) under
 * e->mu, then reads and changes its state without the lock; the table's
 * fields (used, id, owner, busy, last_use, last_done) are only touched
 * under e->mu. */

static wk_session *find_session(wk_engine *e, const char *id, const char *owner) {
    if (!owner) owner = "";
    for (int i = 0; i < e->slots; i++)
        if (e->s[i].used && !strcmp(e->s[i].id, id) && !strcmp(e->s[i].owner, owner)) return &e->s[i];
    return NULL;
}

/* The session `id`, waited for until no other call uses it; NULL if unknown.
 * Under e->mu. */
static wk_session *wait_session(wk_engine *e, const char *id, const char *owner) {
    wk_session *s;
    while ((s = find_session(e, id, owner)) && s->busy) pthread_cond_wait(&e->cv, &e->mu);
    return s;
}

/* A slot for a new session: a free one, else the least recently used one
 * that no call is using (evicted), waiting while every slot is busy. Under
 * e->mu; the slot's KV sequence is cleared by the caller (without the lock). */
static wk_session *new_session(wk_engine *e, const char *id, const char *owner) {
    wk_session *best = NULL;
    for (;;) {
        for (int i = 0; i < e->slots && !(best && !best->used); i++) {
            wk_session *c = &e->s[i];
            if (c->busy) continue;
            if (!best || !c->used || c->last_use < best->last_use) best = c;
        }
        if (best) break;
        pthread_cond_wait(&e->cv, &e->mu);
    }
    if (best->used) {
        log_info("evicting session '%s' (least recently used)", best->id);
        session_release(best);
    }
    best->used = 1;
    snprintf(best->id, sizeof best->id, "%s", id);
    snprintf(best->owner, sizeof best->owner, "%s", owner ? owner : "");
    return best;
}

/* Claims the session for one call (creating it when `create`), counting the
 * call as inside the engine; NULL for an unknown session without create.
 * *fresh is set when the slot is new (its KV sequence must be cleared). */
static wk_session *claim_session(wk_engine *e, const char *id, const char *owner, int create, int *fresh) {
    pthread_mutex_lock(&e->mu);
    wk_session *s = wait_session(e, id, owner);
    *fresh = 0;
    if (!s && create) {
        s = new_session(e, id, owner);
        *fresh = 1;
    }
    if (s) {
        s->busy = 1;
        s->last_use = ++e->clock;
        e->inside++;
    }
    pthread_mutex_unlock(&e->mu);
    return s;
}

static void release_session(wk_engine *e, wk_session *s) {
    pthread_mutex_lock(&e->mu);
    s->busy = 0;
    s->last_done = clock_mono_s();
    e->inside--;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int wk_session_delete(wk_engine *e, const char *id) { return wk_session_delete_as(e, id, ""); }

int wk_session_delete_as(wk_engine *e, const char *id, const char *owner) {
    pthread_mutex_lock(&e->mu);
    wk_session *s = wait_session(e, id, owner);
    if (s) {
        s->busy = 1;
        s->used = 0; /* no longer found; not reused while busy */
    }
    pthread_mutex_unlock(&e->mu);
    if (!s) return -1;
    kv_rm(e, s->seq, -1);
    session_release(s);
    pthread_mutex_lock(&e->mu);
    s->busy = 0;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
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
        int32_t r = -1;
        if (!buf || wk_safe_chat_apply_template(m->chat_template, cm, (size_t)n, true, buf,
                                                (int32_t)(total * 2), &r) != 0)
            r = -1;
        if (r > (int)(total * 2)) {
            char *b2 = realloc(buf, (size_t)r + 1);
            if (b2) {
                buf = b2;
                if (wk_safe_chat_apply_template(m->chat_template, cm, (size_t)n, true, buf, r + 1, &r) != 0) r = -1;
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
    double lp;          /* log p(u1..uj | X), summed as the rows arrive */
    const unsigned char *x; /* the whole string (owned by the caller) */
    size_t n;
} wk_job;

typedef struct wk_ctx {
    wk_engine *e;
    wk_session *s;
    wk_call *call;
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

static size_t token_len(const wk_engine *e, int t) {
    size_t bl;
    va_token_bytes(e->m->va, t, &bl);
    return bl;
}

/* A healing session allows as its next token only tokens whose bytes start
 * with the residue r (or the residue token t_r itself). The canonical
 * tokenization of x = r + s can begin with a token shorter than r (it splits
 * r differently); teacher forcing along it would count a path the session
 * does not allow, and its mass, divided by M(r), could exceed 1 (seen: a
 * GPT-2 member's listed masses summing to 10.9). Such an x follows t_r, then
 * the canonical tokenization of s after t_r. Replaces *canon; returns its
 * new length, 0 when no allowed path exists (zero mass), -1 out of memory. */
static int path_through_residue(wk_ctx *c, const unsigned char *x, size_t n, int **canon) {
    free(*canon);
    *canon = NULL;
    if (c->t_r < 0 || n <= c->rl) return 0;
    int *rest = NULL;
    int k2 = wk_tokenize_after(c->e->m, c->t_r, x + c->rl, n - c->rl, &rest);
    if (k2 <= 0) {
        free(rest);
        return 0;
    }
    int *path = malloc(((size_t)k2 + 1) * sizeof *path);
    if (!path) {
        free(rest);
        return -1;
    }
    path[0] = c->t_r;
    memcpy(path + 1, rest, (size_t)k2 * sizeof *rest);
    free(rest);
    *canon = path;
    return k2 + 1;
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
    if (k > 0 && c->rl > 0 && token_len(e, canon[0]) < c->rl)
        k = path_through_residue(c, x, n, &canon);
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

/* Scratch sequences for teacher forcing are shared by every session: a call
 * takes up to `want` of them (at least one, waiting when none is free). */
static int scratch_take(wk_engine *e, int want, int *seqs) {
    int n = 0;
    pthread_mutex_lock(&e->mu);
    while (!e->scratch_free) pthread_cond_wait(&e->cv, &e->mu);
    for (int i = 0; i < WK_SCRATCH && n < want; i++)
        if (e->scratch_free & (1u << i)) {
            e->scratch_free &= ~(1u << i);
            seqs[n++] = e->scratch0 + i;
        }
    pthread_mutex_unlock(&e->mu);
    return n;
}

static void scratch_give(wk_engine *e, const int *seqs, int n) {
    pthread_mutex_lock(&e->dmu);
    for (int i = 0; i < n; i++) llama_memory_seq_rm(llama_get_memory(e->ctx), seqs[i], -1, -1);
    pthread_mutex_unlock(&e->dmu);
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < n; i++) e->scratch_free |= 1u << (seqs[i] - e->scratch0);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Logits rows of a group of teacher-forcing jobs: an interior row of a path
 * only needs the log-probability of the path's next token (computed right
 * away, by the decoding thread); the last row of each path is kept whole
 * (softmax later, on the caller's thread). */
typedef struct wk_job_rows {
    const wk_engine *e;
    wk_job *jobs;      /* the group's jobs */
    int nj;
    const int *first;  /* work index of each job's first token */
    float *last;       /* nj rows of n_vocab */
} wk_job_rows;

static void job_row(void *arg, int i, const float *logits) {
    wk_job_rows *g = arg;
    int q = 0;
    while (q + 1 < g->nj && g->first[q + 1] <= i) q++;
    wk_job *jb = &g->jobs[q];
    int at = i - g->first[q]; /* position along the path */
    if (at + 1 < jb->j) jb->lp += log_softmax_at(logits, g->e->n_vocab, jb->path[at + 1]);
    else memcpy(g->last + (size_t)q * g->e->n_vocab, logits, (size_t)g->e->n_vocab * sizeof *logits);
}

/* M(x) of a decoded job from its path's log-probability and its last row. */
static double job_mass(wk_ctx *c, wk_job *jb, float *last, int remember_it) {
    wk_engine *e = c->e;
    softmax_row(e, last);
    const unsigned char *rest = jb->x + jb->rest_off;
    size_t rn = jb->n - jb->rest_off;
    double m = exp(jb->lp) * mass(e, last, NULL, rest, rn);
    if (remember_it) {
        int pth[WK_MAX_PATH + 1];
        memcpy(pth, jb->path, (size_t)jb->j * sizeof *pth);
        int np = jb->j;
        int t = rn ? best_exact(e, last, rest, rn) : -1;
        if (t >= 0) pth[np++] = t;
        remember(c->s, pth, np);
    }
    return m;
}

/* Decodes one group of jobs (each on its own scratch sequence, a copy of
 * the session's) as one work. Returns tokens decoded, or -1. */
static int run_job_group(wk_ctx *c, wk_job *jobs, int nj, const int *seqs, double *out, int remember_it) {
    wk_engine *e = c->e;
    wk_session *s = c->s;
    int n_base = s->n_tok, first[WK_SCRATCH], rc = -1;
    wk_job_rows g = {e, jobs, nj, first, malloc((size_t)nj * e->n_vocab * sizeof(float))};
    wk_work w = {.on_row = job_row, .arg = &g};
    if (!g.last) return -1;
    pthread_mutex_lock(&e->dmu);
    for (int q = 0; q < nj; q++) {
        llama_memory_t mem = llama_get_memory(e->ctx);
        llama_memory_seq_rm(mem, seqs[q], -1, -1);
        if (jobs[q].j) llama_memory_seq_cp(mem, s->seq, seqs[q], 0, n_base);
    }
    pthread_mutex_unlock(&e->dmu);
    for (int q = 0; q < nj; q++) {
        first[q] = w.n;
        jobs[q].lp = jobs[q].pref > 0 ? log(jobs[q].pref) : -INFINITY;
        for (int i = 0; i < jobs[q].j; i++)
            if (work_add(&w, jobs[q].path[i], n_base + i, seqs[q], 1) != 0) goto out;
    }
    if (run_work(e, &w, c->call) != 0) goto out;
    for (int q = 0; q < nj; q++)
        if (jobs[q].j) out[jobs[q].out] = job_mass(c, &jobs[q], g.last + (size_t)q * e->n_vocab, remember_it);
    rc = w.n;
out:
    work_free(&w);
    free(g.last);
    return rc;
}

/* Run teacher-forcing jobs in groups over scratch sequences (as many jobs
 * per group as scratch sequences could be taken and n_batch tokens allow).
 * out[job.out] receives M(x). Returns tokens decoded, or -1. */
static int run_jobs(wk_ctx *c, wk_job *jobs, int nj, double *out, int remember_it) {
    wk_engine *e = c->e;
    int decoded = 0, n_base = c->s->n_tok;
    int seqs[WK_SCRATCH];
    for (int a = 0; a < nj;) {
        int ns = scratch_take(e, nj - a < WK_SCRATCH ? nj - a : WK_SCRATCH, seqs);
        int b = a, used = 0;
        while (b < nj && b - a < ns && used + jobs[b].j <= e->n_batch) {
            if (n_base + jobs[b].j > e->n_ctx) { /* would overflow the context: null */
                out[jobs[b].out] = 0.0;
                jobs[b].j = 0;
            }
            used += jobs[b].j;
            b++;
        }
        if (b == a) { /* a single job longer than a batch: give up on it */
            scratch_give(e, seqs, ns);
            out[jobs[a].out] = 0.0;
            a++;
            continue;
        }
        int d = run_job_group(c, jobs + a, b - a, seqs, out, remember_it);
        scratch_give(e, seqs, ns);
        if (d < 0) return -1;
        decoded += d;
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
    double path_p;    /* own proposals: P(this token path | X), before dividing by M(r); NAN otherwise */
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
    it->path_p = NAN;
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

/* The session's next state, built aside from the session so that a request
 * that fails (untokenizable text, context overflow, out of memory) leaves
 * the session exactly as it was. */
typedef struct wk_plan {
    int *tok;          /* X = P + C */
    int n_tok, cap_tok, n_prompt;
    unsigned char *g;  /* healable tail: (healed prompt bytes) + G */
    size_t g_len, g_cap;
    size_t r_len;      /* residue = last r_len bytes of g */
    int t_r;           /* residue token, -1 = none */
} wk_plan;

static void plan_free(wk_plan *pl) {
    free(pl->tok);
    free(pl->g);
    memset(pl, 0, sizeof *pl);
}

/* The strings a step evaluates: the member's proposals (items[0..n_top)),
 * then the caller's candidates; jobs are those that need teacher forcing. */
typedef struct wk_eval {
    wk_item *items;
    int n_items, n_top;
    wk_job *jobs;
    int nj;
    double Mr;         /* M(r | X): the mass every Q is relative to */
} wk_eval;

static void eval_free(wk_eval *ev) {
    for (int i = 0; i < ev->n_items; i++) free(ev->items[i].x);
    free(ev->items);
    free(ev->jobs);
    memset(ev, 0, sizeof *ev);
}

static int fail_oom(wk_err *err) {
    set_err(err, 500, "internal", "out of memory");
    return -1;
}

/* After a failed llama_decode the session's KV sequence is in an unknown
 * state: drop it (the next step decodes the session again). */
static int fail_decode(wk_engine *e, wk_session *s, wk_err *err) {
    kv_rm(e, s->seq, -1);
    s->n_kv = 0;
    s->p0_n = s->p1_n = -1;
    rows_drop_from(s, 0);
    set_err(err, 500, "decode_failed", "llama_decode failed");
    return -1;
}

#ifndef NDEBUG
/* The session invariant of docs/PROTOCOL.md, bytes(C) + r == G, in the form
 * the session keeps: the committed tokens after the prompt spell g up to the
 * residue (g starts with the healed prompt bytes when heal_prompt backed a
 * prompt token off, then G), and the residue token spells r exactly. Also
 * the KV bookkeeping: the kept distributions never claim positions the KV
 * sequence does not hold. Used only inside assert(). */
static int session_sane(const wk_engine *e, const wk_session *s) {
    if (!s->used) return 1;
    if (s->n_prompt < 1 || s->n_prompt > s->n_tok || s->r_len > s->g_len) return 0;
    size_t off = 0, clen = s->g_len - s->r_len;
    for (int i = s->n_prompt; i < s->n_tok; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(e->m->va, s->tok[i], &bl);
        if (off + bl > clen || (bl && memcmp(s->g + off, b, bl) != 0)) return 0;
        off += bl;
    }
    if (off != clen) return 0;
    if (s->r_len) {
        size_t bl;
        const unsigned char *b = s->t_r >= 0 ? va_token_bytes(e->m->va, s->t_r, &bl) : NULL;
        if (!b || bl != s->r_len || memcmp(b, s->g + clen, bl) != 0) return 0;
    } else if (s->t_r != -1) {
        return 0;
    }
    if (s->rows)
        for (int i = 0; i < WK_ROWS; i++)
            if (s->rows->pos[i] > s->n_kv) return 0; /* a cached row beyond what the mirror holds */
    return s->n_kv <= s->cap_kv && s->p0_n <= s->n_kv && s->p1_n <= s->n_kv;
}
#endif

/* Phase 0: a request's prompt (raw text or chat messages rendered with the
 * model's template) as tokens; an empty one becomes [doc_start]. Runs
 * outside the engine's lock (tokenizing is thread-safe). */
static int tokenize_prompt(const wk_model *m, const wk_step_req *q, int **ptok, int *np, wk_err *err) {
    char *chat = NULL;
    const char *ptext = q->prompt;
    size_t plen = q->prompt_len;
    int parse_special = 0;
    if (!q->prompt) {
        chat = wk_render_chat(m, q->messages, q->n_messages, &plen, &parse_special);
        if (!chat) return fail_oom(err);
        ptext = chat;
    }
    *np = wk_tokenize_raw(m, ptext, plen, 1, parse_special, ptok);
    free(chat);
    if (*np < 0) {
        set_err(err, 400, "invalid_prompt", "the prompt could not be tokenized");
        return -1;
    }
    if (*np == 0) {
        (*ptok)[0] = m->doc_start;
        *np = 1;
    }
    return 0;
}

/* Appends n tokens to the plan's X. */
static int plan_push(wk_plan *pl, const int *t, int n) {
    if (grow((void **)&pl->tok, &pl->cap_tok, pl->n_tok + n + 2, sizeof *pl->tok) != 0) return -1;
    if (n) memcpy(pl->tok + pl->n_tok, t, (size_t)n * sizeof *t);
    pl->n_tok += n;
    return 0;
}

/* The plan's starting point: a new prompt (its last token backed off into
 * the tail with heal_prompt), or a copy of the session's state. */
static int plan_start(const wk_engine *e, const wk_session *s, const int *ptok, int np, int heal,
                      wk_plan *pl) {
    const unsigned char *tail = NULL;
    size_t tail_len = 0;
    pl->t_r = -1;
    if (ptok) {
        pl->n_prompt = np;
        if (heal && np > 1) {
            size_t bl;
            const unsigned char *b = va_token_bytes(e->m->va, ptok[np - 1], &bl);
            if (bl) {
                tail = b;
                tail_len = pl->r_len = bl;
                pl->n_prompt = np - 1;
                pl->t_r = ptok[np - 1];
            }
        }
        if (plan_push(pl, ptok, pl->n_prompt) != 0) return -1;
    } else {
        if (plan_push(pl, s->tok, s->n_tok) != 0) return -1;
        pl->n_prompt = s->n_prompt;
        pl->r_len = s->r_len;
        pl->t_r = s->t_r;
        tail = s->g;
        tail_len = s->g_len;
    }
    if (grow_bytes(&pl->g, &pl->g_cap, tail_len + 1) != 0) return -1;
    if (tail_len) memcpy(pl->g, tail, tail_len);
    pl->g_len = tail_len;
    return 0;
}

/* Absorbs appended bytes A into the plan (docs/PROTOCOL.md, "Healing"):
 * rule 1, r + A is a token path this session proposed itself (own = 1 only
 * for an existing session): commit those tokens, r becomes empty; rule 2,
 * anything else: re-tokenize the whole tail canonically after the prompt and
 * back off its last token into r. */
static int plan_append(const wk_engine *e, const wk_session *s, int own, const unsigned char *a, size_t an,
                       wk_plan *pl, wk_err *err) {
    if (grow_bytes(&pl->g, &pl->g_cap, pl->g_len + an + 1) != 0) return fail_oom(err);
    memcpy(pl->g + pl->g_len, a, an);
    const int *path = NULL;
    int j = own ? match_path(e, s, pl->g + pl->g_len - pl->r_len, pl->r_len + an, &path) : 0;
    pl->g_len += an;
    if (j > 0) { /* rule 1: the member's own tokens */
        if (plan_push(pl, path, j) != 0) return fail_oom(err);
        pl->r_len = 0;
        pl->t_r = -1;
        return 0;
    }
    int *canon = NULL; /* rule 2 */
    int k = wk_tokenize_after(e->m, pl->tok[pl->n_prompt - 1], pl->g, pl->g_len, &canon);
    if (k <= 0) {
        free(canon);
        set_err(err, 400, "untokenizable", "the text cannot be tokenized by this model");
        return -1;
    }
    pl->n_tok = pl->n_prompt;
    int rc = plan_push(pl, canon, k - 1);
    va_token_bytes(e->m->va, canon[k - 1], &pl->r_len);
    pl->t_r = canon[k - 1];
    free(canon);
    return rc == 0 ? 0 : fail_oom(err);
}

/* Phase 1, plan: the session's next state for this request, or an error
 * (404 for an unknown session without a prompt, 400 for text that cannot be
 * tokenized or a state over the context). Touches nothing in the session. */
static int plan_step(wk_engine *e, const wk_session *s, const wk_step_req *q, const int *ptok, int np,
                     wk_plan *pl, wk_err *err) {
    if (!s && !ptok) {
        set_err(err, 404, "session_not_found",
                "unknown session '%s' (never created, deleted or evicted): send a prompt", q->session);
        return -1;
    }
    if (plan_start(e, s, ptok, np, q->heal_prompt, pl) != 0) return fail_oom(err);
    if (q->append_len && plan_append(e, s, ptok == NULL, q->append, q->append_len, pl, err) != 0) return -1;
    int need = pl->n_tok + (pl->r_len ? 1 : 0);
    if (need > e->n_ctx) {
        set_err(err, 400, "context_length_exceeded",
                "the session needs %d tokens, over this member's context of %d tokens per session", need, e->n_ctx);
        err->param = q->append_len && s ? PROTO_PARAM_APPEND : PROTO_PARAM_PROMPT;
        return -1;
    }
    return 0;
}

/* Exchanges the session's text state with the plan's (both ways: commit
 * and undo are the same swap). */
static void swap_state(wk_session *s, wk_plan *pl) {
#define WK_SWAP(T, a, b) do { T t_ = (a); (a) = (b); (b) = t_; } while (0)
    WK_SWAP(int *, s->tok, pl->tok);
    WK_SWAP(int, s->cap_tok, pl->cap_tok);
    WK_SWAP(int, s->n_tok, pl->n_tok);
    WK_SWAP(int, s->n_prompt, pl->n_prompt);
    WK_SWAP(unsigned char *, s->g, pl->g);
    WK_SWAP(size_t, s->g_cap, pl->g_cap);
    WK_SWAP(size_t, s->g_len, pl->g_len);
    WK_SWAP(size_t, s->r_len, pl->r_len);
    WK_SWAP(int, s->t_r, pl->t_r);
#undef WK_SWAP
}

/* What undoing a committed step needs besides the swap. */
typedef struct wk_undo {
    int created;     /* the step created the session */
    int old_paths;   /* remembered paths before the step */
    int reset_paths; /* the step's answer replaces them */
} wk_undo;

/* Phase 2, commit: install the plan in the claimed session; the plan keeps the old state until
 * the step succeeds (finish_step) or is undone (undo_step). The paths
 * remembered for rule 1 are those of the answers since the last call that
 * changed the text: the new ones are appended after the old ones and moved
 * to the front by finish_step. */
static void commit_plan(wk_engine *e, wk_session *s, const wk_step_req *q, int reset, int created, wk_plan *pl,
                        wk_undo *u) {
    (void)e;
    u->created = created;
    if (!pl->r_len) pl->t_r = -1;
    swap_state(s, pl);
    u->old_paths = s->n_paths;
    u->reset_paths = reset || q->append_len || s->n_paths > 4096;
    assert(session_sane(e, s));
}

static void finish_step(wk_session *s, const wk_undo *u) {
    if (!u->reset_paths || !u->old_paths) return;
    s->n_paths -= u->old_paths;
    memmove(s->paths, s->paths + u->old_paths, (size_t)s->n_paths * sizeof *s->paths);
}

/* Puts a stopped step's session back as it was (a created one goes). */
static void undo_step(wk_engine *e, wk_session *s, wk_plan *pl, const wk_undo *u) {
    if (u->created) { /* still claimed (busy): nobody else touches it */
        pthread_mutex_lock(&e->mu);
        s->used = 0;
        pthread_mutex_unlock(&e->mu);
        kv_rm(e, s->seq, -1);
        session_release(s);
        return;
    }
    swap_state(s, pl);
    s->n_paths = u->old_paths;
    assert(session_sane(e, s));
}

/* p0 (which = 0) or p1 := the cached row after kv[0..pos), if any; 1 when taken. */
static int take_row(const wk_engine *e, wk_session *s, int pos, int which) {
    const float *row = rows_find(e, s, pos);
    float **dst = which ? &s->p1 : &s->p0;
    double **cum = which ? &s->cum1 : &s->cum0;
    if (!row || alloc_probs(e, dst, cum) != 0) return 0;
    memcpy(*dst, row, (size_t)e->n_vocab * sizeof **dst);
    (*cum)[0] = NAN;
    if (which) s->p1_n = pos;
    else s->p0_n = pos;
    return 1;
}

/* Phase 3, sync the KV cache to X = P + C (and the residue token t_r).
 *
 * The session's KV sequence holds kv[0..n_kv), which may differ from the
 * new X: a reset prompt shares a prefix with the old one, rule 2 may have
 * re-tokenized the last few tokens, rule 1 appended tokens. We keep the
 * longest common prefix L of kv and X and decode the rest. What a step needs
 * is two distributions: p0 = p(. | X) always, and p1 = p(. | X + t_r) when
 * there is a residue. Both are kept with the positions they belong to
 * (p0_n, p1_n), so that:
 *  - a re-answer (nothing appended) finds both valid and decodes nothing;
 *  - the usual step after healing, which commits t_r itself, finds X one
 *    token longer and equal to the old X + t_r: the old p1 *is* the new p0,
 *    swapped in without a decode;
 *  - a speculating session (s->rows) takes p0 and p1 from its row cache
 *    when the KV mirror holds X (and X + t_r) and the row is there: a
 *    state drafted or prefetched in an earlier call costs no decode;
 *  - otherwise we truncate the sequence to the first position we must
 *    decode (L, or one less to recompute p0's logits when X is all cached)
 *    and feed the rest, t_r included, in one batch (feed()): decoding p0
 *    again always decodes t_r again too, since the truncation drops it.
 * Returns the positions decoded, or -1 (the caller drops the sequence). */
static int sync_kv(wk_engine *e, wk_session *s, wk_call *call) {
    int L = common_prefix(s->kv, s->n_kv, s->tok, s->n_tok);
    if (L >= s->n_tok && s->p0_n != s->n_tok && s->p1_n == s->n_tok) {
        float *tp = s->p0; s->p0 = s->p1; s->p1 = tp;
        double *tc = s->cum0; s->cum0 = s->cum1; s->cum1 = tc;
        s->p0_n = s->n_tok;
        s->p1_n = -1;
    }
    int t_r = s->r_len ? s->t_r : -1;
    int holds_tr = t_r >= 0 && L >= s->n_tok && s->n_kv > s->n_tok && s->kv[s->n_tok] == t_r;
    if (s->rows && L >= s->n_tok) {
        if (s->p0_n != s->n_tok) take_row(e, s, s->n_tok, 0);
        if (holds_tr && s->p1_n != s->n_tok + 1) take_row(e, s, s->n_tok + 1, 1);
    }
    int need0 = !(L >= s->n_tok && s->p0_n == s->n_tok);
    int need1 = t_r >= 0 && (need0 || !(s->p1_n == s->n_tok + 1 && holds_tr));
    if (!need0 && !need1) return 0;
    int from = need0 ? (L < s->n_tok ? L : s->n_tok - 1) : s->n_tok;
    kv_truncate(e, s, from);
    return feed(e, s, s->tok, from, s->n_tok, need1 ? t_r : -1, call);
}

/* The k most probable tokens of p whose bytes are not empty (by id). */
static int top_tokens(const wk_engine *e, const float *p, wk_cand *heap, int k) {
    int nh = 0;
    for (int id = 0; id < e->n_vocab; id++) {
        if (nh == k && p[id] <= heap[0].p) continue;
        size_t bl;
        va_token_bytes(e->m->va, id, &bl);
        if (bl) heap_push(heap, &nh, k, (wk_cand){p[id], id});
    }
    return nh;
}

/* The k most probable tokens of p whose bytes strictly extend r. */
static int top_extending(const wk_engine *e, const float *p, const unsigned char *r, size_t rl, wk_cand *heap,
                         int k) {
    int lo, hi, nh = 0;
    va_prefix_range(e->m->va, r, rl, &lo, &hi);
    for (int i = lo; i < hi; i++) {
        int id = va_sorted_id(e->m->va, i);
        size_t bl;
        va_token_bytes(e->m->va, id, &bl);
        if (bl > rl) heap_push(heap, &nh, k, (wk_cand){p[id], id});
    }
    return nh;
}

static int has_item(const wk_eval *ev, const unsigned char *b, size_t bl) {
    for (int i = 0; i < ev->n_items; i++)
        if (ev->items[i].len == bl && !memcmp(ev->items[i].s, b, bl)) return 1;
    return 0;
}

/* Phase 4, propose: the member's own continuations. The k most probable
 * tokens extending r (their string: the bytes after r) and, with a residue
 * token, the k most probable tokens after it (their whole bytes; their mass
 * needs p1, or teacher forcing when the canonical path differs). Each is
 * remembered as a token path for rule 1 of the next append. */
static int propose(wk_ctx *c, int k, wk_eval *ev) {
    wk_engine *e = c->e;
    wk_session *s = c->s;
    if (k <= 0) return 0;
    wk_cand *heap = malloc((size_t)k * sizeof *heap);
    if (!heap) return -1;
    int nh = s->r_len ? top_extending(e, s->p0, c->r, c->rl, heap, k) : top_tokens(e, s->p0, heap, k);
    for (int i = 0; i < nh; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(e->m->va, heap[i].id, &bl);
        wk_item *it = &ev->items[ev->n_items];
        if (item_set(it, c->r, c->rl, b + c->rl, bl - c->rl) != 0) goto oom;
        it->m = mass(e, s->p0, s->cum0, it->x, it->xn);
        it->path_p = heap[i].p;
        remember(s, &heap[i].id, 1);
        ev->n_items++;
    }
    if (c->t_r >= 0) {
        nh = top_tokens(e, s->p1, heap, k);
        for (int i = 0; i < nh; i++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(e->m->va, heap[i].id, &bl);
            if (has_item(ev, b, bl)) continue;
            wk_item *it = &ev->items[ev->n_items];
            if (item_set(it, c->r, c->rl, b, bl) != 0) goto oom;
            it->m = mass_or_job(c, it->x, it->xn, &ev->jobs[ev->nj], 0);
            if (isnan(it->m)) ev->jobs[ev->nj++].out = ev->n_items;
            it->path_p = (double)s->p0[c->t_r] * heap[i].p;
            int pth[2] = {c->t_r, heap[i].id};
            remember(s, pth, 2);
            ev->n_items++;
        }
    }
    free(heap);
    return 0;
oom:
    free(heap);
    return -1;
}

/* Phase 5, evaluate candidates: the caller's strings join the proposals;
 * the teacher-forced ones of both are decoded in scratch sequences; every
 * item gets logq = log(M(r + s) / M(r)). A candidate is not remembered: a
 * string the member was only asked about is not its own choice, so
 * committing it must heal (rule 2), not absorb. Returns positions decoded,
 * -1 when out of memory, -2 when a decode failed. */
static int evaluate(wk_ctx *c, const wk_step_req *q, wk_eval *ev) {
    for (int i = 0; i < q->n_cands; i++) {
        wk_item *it = &ev->items[ev->n_items];
        if (item_set(it, c->r, c->rl, q->cands[i].p, q->cands[i].n) != 0) return -1;
        it->m = q->cands[i].n == 0 ? ev->Mr : mass_or_job(c, it->x, it->xn, &ev->jobs[ev->nj], 0);
        if (isnan(it->m)) ev->jobs[ev->nj++].out = ev->n_items;
        ev->n_items++;
    }
    int d = 0, forced = 0;
    for (int i = 0; i < ev->nj; i++) forced += ev->jobs[i].j;
    if (forced > c->e->max_forced) {
        c->call->stop = WK_STOP_BUDGET;
        c->call->stop_forced = forced;
        return -2;
    }
    if (ev->nj) {
        double *ms = malloc((size_t)ev->n_items * sizeof *ms);
        if (!ms) return -1;
        d = run_jobs(c, ev->jobs, ev->nj, ms, 0);
        for (int i = 0; i < ev->nj; i++) ev->items[ev->jobs[i].out].m = ms[ev->jobs[i].out];
        free(ms);
        if (d < 0) return -2;
    }
    for (int i = 0; i < ev->n_items; i++)
        ev->items[i].logq = ev->items[i].m > 0 && ev->Mr > 0 ? log(ev->items[i].m / ev->Mr) : -INFINITY;
    return d;
}

/* log P(the text ends at G): end-of-generation mass after X, or after
 * X + t_r times p(t_r | X) / M(r | X) with a residue. */
static double end_logq(const wk_ctx *c, double Mr) {
    const wk_engine *e = c->e;
    const wk_session *s = c->s;
    double eog = 0;
    if (!s->r_len) {
        for (int i = 0; i < e->n_eog; i++) eog += s->p0[e->eog[i]];
    } else if (c->t_r >= 0) {
        for (int i = 0; i < e->n_eog; i++) eog += s->p1[e->eog[i]];
        eog *= s->p0[c->t_r] / Mr;
    }
    return eog > 0 ? log(eog) : -INFINITY;
}

/* A proposal's `logp`: its own token path's probability given the residue,
 * p(t | X) / M(r | X), or p(t_r | X) p(u | X + t_r) / M(r | X) for a path
 * through the residue token. This is the event a member conditions on when
 * its own proposal is committed (rule 1 absorbs it as exactly that path). */
static double own_path_logp(const wk_item *it, double Mr) {
    return it->path_p > 0 && Mr > 0 ? log(it->path_p / Mr) : -INFINITY;
}

/* p(. | tok[0..n-d)) for d = 1..nd, the distributions before the last nd
 * committed tokens (never into the prompt), decoded again in a scratch
 * sequence from the session's KV: rows[(d - 1) * n_vocab ...], as
 * probabilities. Returns nd (0 when there is nothing to go back to), -1 on
 * error. */
typedef struct {
    const wk_engine *e;
    float *rows;
    int nd;
} wk_back_rows;

static void back_row(void *arg, int i, const float *logits) {
    wk_back_rows *b = arg;
    int d = b->nd - i; /* work row i is position n - 1 - nd + i: p(. | tok[0..n - d)) */
    if (d >= 1 && d <= b->nd) memcpy(b->rows + (size_t)(d - 1) * b->e->n_vocab, logits, (size_t)b->e->n_vocab * sizeof *logits);
}

static int earlier_rows(wk_ctx *c, int want, float **out) {
    wk_engine *e = c->e;
    const wk_session *s = c->s;
    int n = s->n_tok, nd = want < n - s->n_prompt ? want : n - s->n_prompt;
    *out = NULL;
    if (nd <= 0 || n - 1 - nd < 0) return 0;
    wk_back_rows b = {e, malloc((size_t)nd * e->n_vocab * sizeof(float)), nd};
    if (!b.rows) return -1;
    int seq;
    scratch_take(e, 1, &seq);
    pthread_mutex_lock(&e->dmu);
    llama_memory_t mem = llama_get_memory(e->ctx);
    llama_memory_seq_rm(mem, seq, -1, -1);
    llama_memory_seq_cp(mem, s->seq, seq, 0, n - 1 - nd);
    pthread_mutex_unlock(&e->dmu);
    wk_work w = {.on_row = back_row, .arg = &b};
    int rc = 0;
    for (int j = n - 1 - nd; !rc && j <= n - 2; j++) rc = work_add(&w, s->tok[j], j, seq, 1);
    if (!rc) rc = run_work(e, &w, c->call);
    work_free(&w);
    scratch_give(e, &seq, 1);
    if (rc) {
        free(b.rows);
        return -1;
    }
    for (int d = 0; d < nd; d++) softmax_row(e, b.rows + (size_t)d * e->n_vocab);
    *out = b.rows;
    return nd;
}

/* The next-byte distribution of the session (request field next_bytes =
 * depth): for each byte b, the mass of every token sequence the healing
 * session allows whose bytes continue G with b, relative to the mass of
 * those that continue G at all:
 *   - tokens extending r + b after X, T(r + b | X);
 *   - the residue token, then a token starting with b: p(t_r | X) T(b | X + t_r);
 *   - (depth > 1) for d = 1..depth - 1, a token that starts where the
 *     committed token tok[n - d] starts and extends y_d + b, y_d = the bytes
 *     of tok[n - d..n) + r: T(y_d + b | tok[0..n - d)) / prod_{j <= d} p(tok[n - j] | tok[0..n - j))
 *     (its weight relative to X), from the distributions before those
 *     tokens (earlier_rows: depth - 1 more decoded positions).
 * These sequences are disjoint; the denominator is M(r | X) plus the depth
 * terms' T(y_d | ...). END last. A one-byte *candidate*'s mass counts only
 * the first kind when some token extends r + b. Returns decoded positions,
 * or -1. */
static int next_byte_masses(wk_ctx *c, int depth, double Mr, double endq, double *out) {
    const wk_engine *e = c->e;
    const wk_session *s = c->s;
    size_t ymax = c->rl + 1 + (size_t)(depth > 1 ? depth - 1 : 0) * 512;
    unsigned char *x = malloc(ymax + 1);
    double num[256];
    if (!x) return -1;
    memcpy(x, c->r, c->rl);
    int via_residue = c->rl && c->t_r >= 0 && s->p1_n >= 0;
    double pr = via_residue ? s->p0[c->t_r] : 0, den = Mr;
    for (int b = 0; b < 256; b++) {
        x[c->rl] = (unsigned char)b;
        num[b] = mass(e, s->p0, s->cum0, x, c->rl + 1);
        if (via_residue) num[b] += pr * mass(e, s->p1, s->cum1, x + c->rl, 1);
    }
    float *rows = NULL;
    int nd = c->rl && depth > 1 ? earlier_rows(c, depth - 1, &rows) : 0;
    if (nd < 0) {
        free(x);
        return -1;
    }
    /* y_d, built backwards: x holds y at x + off .. x + off + yl */
    size_t yl = c->rl, off = ymax - c->rl;
    memmove(x + off, c->r, c->rl);
    double wgt = 1;
    for (int d = 1; d <= nd; d++) {
        const float *q = rows + (size_t)(d - 1) * e->n_vocab;
        int t = s->tok[s->n_tok - d];
        size_t bl;
        const unsigned char *tb = va_token_bytes(e->m->va, t, &bl);
        if (!(q[t] > 0) || bl > off) break;
        wgt /= q[t];
        off -= bl;
        memcpy(x + off, tb, bl);
        yl += bl;
        den += wgt * mass(e, q, NULL, x + off, yl);
        unsigned char *last = x + off + yl; /* the byte after y (x has ymax + 1 bytes) */
        for (int b = 0; b < 256; b++) {
            *last = (unsigned char)b;
            num[b] += wgt * mass(e, q, NULL, x + off, yl + 1);
        }
    }
    for (int b = 0; b < 256; b++) out[b] = num[b] > 0 && den > 0 ? log(num[b] / den) : -INFINITY;
    out[256] = isfinite(endq) && den > 0 ? endq + log(Mr / den) : -INFINITY;
    free(rows);
    free(x);
    return nd;
}

/* Phase 6, answer: the k best proposals by logq, the candidates' logq in
 * the order asked, the residue, n_past and the end-of-text mass. */
static int answer(wk_ctx *c, const wk_step_req *q, wk_eval *ev, wk_step_res *res) {
    const wk_session *s = c->s;
    qsort(ev->items, (size_t)ev->n_top, sizeof *ev->items, cmp_items);
    int nt_out = ev->n_top < q->k ? ev->n_top : q->k;
    res->top = calloc((size_t)(nt_out ? nt_out : 1), sizeof *res->top);
    res->cand_logq = malloc((size_t)(q->n_cands ? q->n_cands : 1) * sizeof *res->cand_logq);
    res->residue = malloc(s->r_len + 1);
    if (!res->top || !res->cand_logq || !res->residue) return -1;
    for (int i = 0; i < nt_out; i++) {
        res->top[i].s = malloc(ev->items[i].len + 1);
        if (!res->top[i].s) return -1;
        memcpy(res->top[i].s, ev->items[i].s, ev->items[i].len);
        res->top[i].len = ev->items[i].len;
        res->top[i].logq = ev->items[i].logq;
        res->top[i].logp = own_path_logp(&ev->items[i], ev->Mr);
        res->n_top++;
    }
    for (int i = 0; i < q->n_cands; i++) res->cand_logq[i] = ev->items[ev->n_top + i].logq;
    memcpy(res->residue, c->r, s->r_len);
    res->residue_len = s->r_len;
    res->n_past = s->n_tok;
    res->end_logq = end_logq(c, ev->Mr);
    if (q->next_bytes > 0) {
        res->next_bytes = malloc(PROTO_NEXT_BYTES * sizeof *res->next_bytes);
        int d = res->next_bytes ? next_byte_masses(c, q->next_bytes, ev->Mr, res->end_logq, res->next_bytes) : -1;
        if (d < 0) return -1;
        res->decoded += d;
    }
    return 0;
}

/* Phases 4-6 on a synced session. */
static int step_answer(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call, wk_step_res *res,
                       wk_err *err) {
    const unsigned char *r = s->g + s->g_len - s->r_len;
    wk_ctx c = {e, s, call, r, s->r_len, s->r_len ? s->t_r : -1};
    wk_eval ev = {0};
    int maxn = 2 * q->k + q->n_cands, rc = -1;
    ev.items = calloc((size_t)(maxn ? maxn : 1), sizeof *ev.items);
    ev.jobs = calloc((size_t)(maxn ? maxn : 1), sizeof *ev.jobs);
    if (!ev.items || !ev.jobs) goto oom;
    ev.Mr = s->r_len ? mass(e, s->p0, s->cum0, r, s->r_len) : 1.0;
    if (propose(&c, q->k, &ev) != 0) goto oom;
    ev.n_top = ev.n_items;
    int d = evaluate(&c, q, &ev);
    if (d == -2) {
        rc = call->stop ? -1 : fail_decode(e, s, err);
        goto out;
    }
    if (d < 0) goto oom;
    res->decoded += d;
    if (answer(&c, q, &ev, res) != 0) goto oom;
    rc = 0;
    goto out;
oom:
    rc = fail_oom(err);
out:
    eval_free(&ev);
    return rc;
}

/* Phase 1 with the session claimed: a request with a prompt is planned
 * before its session is claimed or created (a failing one evicts nothing);
 * one without is planned from the claimed session's state. Returns the
 * claimed session (*fresh: a new slot, KV sequence still to clear), or NULL
 * with err set. */
static void run_draft(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call, wk_step_res *res);

static wk_session *plan_and_claim(wk_engine *e, const wk_step_req *q, const int *ptok, int np, wk_plan *pl,
                                  int *fresh, wk_err *err) {
    if (ptok) {
        if (plan_step(e, NULL, q, ptok, np, pl, err) != 0) return NULL;
        return claim_session(e, q->session, q->owner, 1, fresh);
    }
    wk_session *s = claim_session(e, q->session, q->owner, 0, fresh);
    if (plan_step(e, s, q, NULL, 0, pl, err) == 0) return s;
    if (s) release_session(e, s);
    return NULL;
}

/* One step: plan, commit, sync the KV cache, propose, evaluate candidates,
 * answer (docs/PROTOCOL.md, POST /v1/step). */
/* The budget that can be checked before anything is decoded. */
static int check_step_budget(const wk_engine *e, const wk_step_req *q, wk_err *err) {
    size_t bytes = 0;
    for (int i = 0; i < q->n_cands; i++) bytes += q->cands[i].n;
    if (bytes <= (size_t)e->max_cand_bytes) return 0;
    set_err(err, 400, PROTO_ERR_BUDGET_EXCEEDED,
            "the candidates total %zu bytes, over this worker's budget of %d bytes per step", bytes,
            e->max_cand_bytes);
    err->param = PROTO_PARAM_CANDIDATES;
    return -1;
}

/* Phases 1-6 with the session claimed, and undo when the call stops
 * midway. Only the decodes (sync_kv, the teacher-forced candidates) go
 * through the scheduler; the rest runs here, on the caller's thread,
 * holding nothing but the session. */
static int step_claimed(wk_engine *e, const wk_step_req *q, const int *ptok, int np, wk_call *call,
                        wk_step_res *res, wk_err *err) {
    wk_plan pl = {0};
    wk_undo u = {0};
    int fresh = 0, rc = -1;
    wk_session *s = plan_and_claim(e, q, ptok, np, &pl, &fresh, err);
    if (!s) {
        plan_free(&pl);
        return -1;
    }
    if (fresh) kv_rm(e, s->seq, -1); /* a fresh slot's KV sequence is empty */
    commit_plan(e, s, q, ptok != NULL, fresh, &pl, &u);
    int d = sync_kv(e, s, call);
    if (d >= 0) {
        res->decoded += d;
        rc = step_answer(e, s, q, call, res, err);
    }
    if (rc != 0 && call->stop) {
        undo_step(e, s, &pl, &u);
        fail_stopped(e, call, err);
    } else if (d < 0) {
        fail_decode(e, s, err);
    }
    if (rc == 0) finish_step(s, &u);
    if (rc == 0 && (q->draft || q->n_draft_steps)) run_draft(e, s, q, call, res);
    assert(session_sane(e, s));
    release_session(e, s);
    plan_free(&pl);
    return rc;
}

/* ---- speculative steps: several steps of one session in one call ----------

 * A session's text state and remembered paths, kept aside so that steps
 * taken within one call (steps_b64, a draft) can be undone together. The
 * KV sequence is not part of it: its mirror kv[] always says what it
 * holds, so drafted positions stay and a later step reuses them. */
typedef struct wk_snapshot {
    wk_plan text;
    wk_path *paths;
    int n_paths;
    /* the kept distributions, moved aside (the steps allocate their own),
     * and the KV tokens they belong to: restored when still valid */
    float *p0, *p1;
    double *cum0, *cum1;
    int p0_n, p1_n;
    int *kv, n_kv;
} wk_snapshot;

static int snapshot_take(const wk_engine *e, const wk_session *s, wk_snapshot *sn) {
    memset(sn, 0, sizeof *sn);
    if (plan_start(e, s, NULL, 0, 0, &sn->text) != 0) return -1;
    sn->n_paths = s->n_paths;
    sn->paths = malloc((size_t)(s->n_paths ? s->n_paths : 1) * sizeof *sn->paths);
    if (!sn->paths) {
        plan_free(&sn->text);
        return -1;
    }
    if (s->n_paths) memcpy(sn->paths, s->paths, (size_t)s->n_paths * sizeof *s->paths);
    sn->kv = malloc((size_t)(s->n_kv ? s->n_kv : 1) * sizeof *sn->kv);
    if (!sn->kv) {
        free(sn->paths);
        plan_free(&sn->text);
        return -1;
    }
    sn->n_kv = s->n_kv;
    if (s->n_kv) memcpy(sn->kv, s->kv, (size_t)s->n_kv * sizeof *s->kv);
    return 0;
}

/* Moves the session's kept distributions into the snapshot. */
static void snapshot_probs(wk_session *s, wk_snapshot *sn) {
    sn->p0 = s->p0, sn->cum0 = s->cum0, sn->p0_n = s->p0_n;
    sn->p1 = s->p1, sn->cum1 = s->cum1, sn->p1_n = s->p1_n;
    s->p0 = s->p1 = NULL;
    s->cum0 = s->cum1 = NULL;
    s->p0_n = s->p1_n = -1;
}

/* Gives the snapshot's distributions back when the KV sequence still holds
 * the positions they belong to (else the steps' own stay). */
static void restore_probs(wk_session *s, wk_snapshot *sn) {
    int keep = sn->p0 && sn->p0_n >= 0 && s->n_kv >= sn->p0_n && s->n_kv >= sn->p1_n &&
               common_prefix(s->kv, s->n_kv, sn->kv, sn->n_kv) >= (sn->p0_n > sn->p1_n ? sn->p0_n : sn->p1_n);
    if (keep) {
        free(s->p0), free(s->cum0), free(s->p1), free(s->cum1);
        s->p0 = sn->p0, s->cum0 = sn->cum0, s->p0_n = sn->p0_n;
        s->p1 = sn->p1, s->cum1 = sn->cum1, s->p1_n = sn->p1_n;
    } else {
        free(sn->p0), free(sn->cum0), free(sn->p1), free(sn->cum1);
    }
    sn->p0 = sn->p1 = NULL;
    sn->cum0 = sn->cum1 = NULL;
}

static void snapshot_free(wk_snapshot *sn) {
    plan_free(&sn->text);
    free(sn->paths);
    free(sn->kv);
    free(sn->p0), free(sn->cum0), free(sn->p1), free(sn->cum1);
    memset(sn, 0, sizeof *sn);
}

/* Puts the session back as the snapshot has it (cannot fail: the session's
 * paths array only grew since, so it holds the old ones). */
static void snapshot_restore(const wk_engine *e, wk_session *s, wk_snapshot *sn) {
    if (!sn->text.r_len) sn->text.t_r = -1;
    swap_state(s, &sn->text);
    assert(s->cap_paths >= sn->n_paths);
    if (sn->n_paths) memcpy(s->paths, sn->paths, (size_t)sn->n_paths * sizeof *s->paths);
    s->n_paths = sn->n_paths;
    snapshot_free(sn);
    assert(session_sane(e, s));
    (void)e;
}

/* One step of an existing, claimed session (phases 1-6), undone when it
 * fails. Returns 0 or -1 with err set (a stopped call: call->stop). */
static int inner_step(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call, wk_step_res *res,
                      wk_err *err) {
    memset(res, 0, sizeof *res);
    res->end_logq = -INFINITY;
    wk_plan pl = {0};
    wk_undo u = {0};
    int rc = -1;
    if (plan_step(e, s, q, NULL, 0, &pl, err) == 0) {
        commit_plan(e, s, q, 0, 0, &pl, &u);
        int d = sync_kv(e, s, call);
        if (d >= 0) {
            res->decoded += d;
            rc = step_answer(e, s, q, call, res, err);
        }
        if (rc != 0) {
            undo_step(e, s, &pl, &u);
            if (call->stop) fail_stopped(e, call, err);
            else if (d < 0) fail_decode(e, s, err);
        } else {
            finish_step(s, &u);
        }
    }
    plan_free(&pl);
    if (rc != 0) wk_step_res_free(res);
    return rc;
}

/* The steps_b64 of a request: each piece as its own step (k, no
 * candidates; answers dropped), exactly as if sent one request each. The
 * session keeps a row cache from now on: pieces drafted in the previous
 * call find their rows there. */
static int take_steps(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call, int *decoded,
                      wk_err *err) {
    if (rows_enable(e, s) != 0) return fail_oom(err);
    for (int i = 0; i < q->n_steps; i++) {
        wk_step_req vq = {.session = q->session, .owner = q->owner, .append = q->steps[i].p,
                          .append_len = q->steps[i].n, .k = q->k};
        wk_step_res tmp;
        if (inner_step(e, s, &vq, call, &tmp, err) != 0) return -1;
        *decoded += tmp.decoded;
        wk_step_res_free(&tmp);
    }
    return 0;
}

/* Rows of a prefetch work: copied as they come (softmax later). */
typedef struct wk_ahead_rows {
    const wk_engine *e;
    float *rows;
} wk_ahead_rows;

static void ahead_row(void *arg, int i, const float *logits) {
    wk_ahead_rows *a = arg;
    memcpy(a->rows + (size_t)i * a->e->n_vocab, logits, (size_t)a->e->n_vocab * sizeof *logits);
}

/* draft_b64's decodes, ahead of its steps, as one work: the predicted
 * tokens of the drafted text are X followed by the tokenization of
 * r + p1 + ... + pn after X's last token (what rule 2 would make of the
 * whole draft); every predicted position the KV sequence does not hold
 * yet (at most WK_PREFETCH) is decoded with its row wanted, into the row
 * cache. A drafted step whose X (and t_r) is a prefix of the prediction
 * then finds both its rows cached (sync_kv); one that is not decodes as
 * usual. Nothing here decides an answer: a failure only leaves less
 * cached. The KV positions beyond X that it replaces are dropped through
 * kv_truncate (the kept distributions that depended on them are no longer
 * valid; restore_probs checks the same against the mirror). Returns the
 * positions decoded (counted in the request's own answer). */
static int prefetch_draft(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call) {
    size_t len = s->r_len;
    int done = 0;
    for (int i = 0; i < q->n_draft_steps; i++) len += q->draft_steps[i].n;
    unsigned char *b = malloc(len + 1);
    if (!b) return 0;
    memcpy(b, s->g + s->g_len - s->r_len, s->r_len);
    size_t off = s->r_len;
    for (int i = 0; i < q->n_draft_steps; i++) {
        memcpy(b + off, q->draft_steps[i].p, q->draft_steps[i].n);
        off += q->draft_steps[i].n;
    }
    int *t = NULL;
    int k = wk_tokenize_after(e->m, s->tok[s->n_tok - 1], b, len, &t);
    free(b);
    int n = s->n_tok + (k > 0 ? k : 0);
    if (n > e->n_ctx) n = e->n_ctx;
    int *pred = malloc((size_t)n * sizeof *pred);
    if (!pred) {
        free(t);
        return 0;
    }
    memcpy(pred, s->tok, (size_t)s->n_tok * sizeof *pred);
    if (n > s->n_tok) memcpy(pred + s->n_tok, t, (size_t)(n - s->n_tok) * sizeof *pred);
    free(t);
    int L = common_prefix(s->kv, s->n_kv, pred, n);
    if (n - L > WK_PREFETCH) n = L + WK_PREFETCH;
    wk_ahead_rows a = {e, NULL};
    wk_work w = {.on_row = ahead_row, .arg = &a};
    if (L >= n || grow((void **)&s->kv, &s->cap_kv, n, sizeof(int)) != 0 ||
        !(a.rows = malloc((size_t)(n - L) * e->n_vocab * sizeof *a.rows)))
        goto out;
    kv_truncate(e, s, L);
    for (int j = L; j < n; j++) {
        if (work_add(&w, pred[j], j, s->seq, 1) != 0) goto out;
        s->kv[j] = pred[j];
    }
    if (run_work(e, &w, call) != 0) { /* the mirror says none of it is there */
        kv_rm(e, s->seq, L);
        goto out;
    }
    s->n_kv = n;
    done = n - L;
    for (int j = L; j < n; j++) {
        float *row = a.rows + (size_t)(j - L) * e->n_vocab;
        softmax_row(e, row);
        rows_put(e, s, j + 1, row);
    }
out:
    work_free(&w);
    free(a.rows);
    free(pred);
    return done;
}

/* A draft: q->draft more steps, each appending the first top entry of the
 * previous answer (the member's own proposal, absorbed as its own path),
 * or the q->n_draft_steps given pieces (draft_b64: each absorbed as any
 * append is, rule 1 when it is a path of the previous answer, else rule
 * 2), answered into res->draft and then undone. A step that fails ends the
 * draft early (the answers so far stand). The session keeps a row cache
 * from now on, seeded with its kept distributions; draft_b64 decodes its
 * predicted positions first, in one work (prefetch_draft). */
static void run_draft(wk_engine *e, wk_session *s, const wk_step_req *q, wk_call *call, wk_step_res *res) {
    wk_snapshot sn;
    int n = q->n_draft_steps ? q->n_draft_steps : q->draft;
    res->draft = calloc((size_t)n, sizeof *res->draft);
    if (!res->draft || snapshot_take(e, s, &sn) != 0) return;
    if (rows_enable(e, s) == 0) {
        if (s->p0_n >= 1) rows_put(e, s, s->p0_n, s->p0);
        if (s->p1_n >= 1) rows_put(e, s, s->p1_n, s->p1);
    }
    snapshot_probs(s, &sn);
    if (q->n_draft_steps && s->rows) res->decoded += prefetch_draft(e, s, q, call);
    const wk_step_res *prev = res;
    for (int j = 0; j < n; j++) {
        const unsigned char *a = q->n_draft_steps ? q->draft_steps[j].p : NULL;
        size_t al = q->n_draft_steps ? q->draft_steps[j].n : 0;
        if (!q->n_draft_steps && prev->n_top > 0) a = prev->top[0].s, al = prev->top[0].len;
        if (!al) break;
        wk_step_req vq = {.session = q->session, .owner = q->owner, .append = a, .append_len = al, .k = q->k};
        wk_err derr;
        if (inner_step(e, s, &vq, call, &res->draft[j], &derr) != 0) break;
        res->n_draft = j + 1;
        prev = &res->draft[j];
    }
    restore_probs(s, &sn);
    snapshot_restore(e, s, &sn);
}

/* A request with steps_b64: the session takes each piece as a step, then
 * the request's own step and draft; all undone together when one fails. */
static int step_with_steps(wk_engine *e, const wk_step_req *q, wk_call *call, wk_step_res *res, wk_err *err) {
    int fresh = 0;
    wk_session *s = claim_session(e, q->session, q->owner, 0, &fresh);
    if (!s) {
        set_err(err, 404, "session_not_found",
                "unknown session '%s' (never created, deleted or evicted): send a prompt", q->session);
        return -1;
    }
    wk_snapshot sn;
    int rc = -1;
    if (snapshot_take(e, s, &sn) != 0) {
        fail_oom(err);
    } else {
        int decoded = 0;
        rc = take_steps(e, s, q, call, &decoded, err);
        if (rc == 0) rc = inner_step(e, s, q, call, res, err);
        if (rc == 0) res->decoded += decoded;
        if (rc == 0 && (q->draft || q->n_draft_steps)) run_draft(e, s, q, call, res);
        if (rc != 0) snapshot_restore(e, s, &sn);
        else snapshot_free(&sn);
    }
    release_session(e, s);
    return rc;
}

/* The speculative fields (steps_b64, draft, draft_b64), checked as the
 * protocol checks them, for callers that do not come through it. */
static int check_speculative(const wk_step_req *q, int has_prompt, wk_err *err) {
    if (q->n_steps < 0 || q->n_steps > PROTO_MAX_STEPS || q->draft < 0 || q->draft > PROTO_MAX_DRAFT ||
        (q->n_steps && has_prompt)) {
        set_err(err, 400, "invalid_value", "steps (at most %d, not with a prompt) or draft (at most %d) out of range",
                PROTO_MAX_STEPS, PROTO_MAX_DRAFT);
        return -1;
    }
    if (q->n_draft_steps < 0 || q->n_draft_steps > PROTO_MAX_DRAFT || (q->n_draft_steps && !q->draft_steps)) {
        set_err(err, 400, PROTO_ERR_INVALID_VALUE, "draft_b64: at most %d pieces", PROTO_MAX_DRAFT);
        err->param = "draft_b64";
        return -1;
    }
    for (int i = 0; i < q->n_draft_steps; i++)
        if (q->draft_steps[i].n == 0) {
            set_err(err, 400, PROTO_ERR_INVALID_VALUE, "draft_b64[%d] is empty", i);
            err->param = "draft_b64";
            return -1;
        }
    if (q->n_draft_steps && q->draft > 0) {
        set_err(err, 400, PROTO_ERR_INVALID_REQUEST, "give 'draft' or 'draft_b64', not both");
        err->param = "draft_b64";
        return -1;
    }
    return 0;
}

/* One step: plan, commit, sync the KV cache, propose, evaluate candidates,
 * answer (docs/PROTOCOL.md, POST /v1/step). */
int wk_step(wk_engine *e, const wk_step_req *q, wk_step_res *res, wk_err *err) {
    double t0 = clock_mono_s();
    memset(res, 0, sizeof *res);
    res->end_logq = -INFINITY;
    err->status = 0;
    err->param = NULL;
    int has_prompt = q->prompt != NULL || q->n_messages > 0;
    int *ptok = NULL, np = 0, rc = -1;
    if (q->k < 0 || q->k > WK_MAX_K || q->n_cands < 0 || q->n_cands > WK_MAX_CANDIDATES) {
        set_err(err, 400, "invalid_value", "k or candidates out of range");
        goto done;
    }
    if (check_step_budget(e, q, err) != 0) goto done;
    if (has_prompt && tokenize_prompt(e->m, q, &ptok, &np, err) != 0) goto done;
    if (has_prompt && np > e->n_ctx) { /* refused before any work; plan_step checks exactly */
        set_err(err, 400, "context_length_exceeded",
                "the prompt is %d tokens, over this member's context of %d tokens per session", np, e->n_ctx);
        err->param = PROTO_PARAM_PROMPT;
        goto done;
    }
    if (check_speculative(q, has_prompt, err) != 0) goto done;
    wk_call call = {q->cancel, WK_STOP_NONE, 0};
    if (call_stopped(&call)) fail_stopped(e, &call, err);
    else if (q->n_steps) rc = step_with_steps(e, q, &call, res, err);
    else rc = step_claimed(e, q, has_prompt ? ptok : NULL, np, &call, res, err);
done:
    free(ptok);
    if (rc != 0) {
        wk_step_res_free(res);
        if (!err->status) set_err(err, 500, "internal", "internal error");
    }
    atomic_fetch_add(&e->step_ns, (uint64_t)((clock_mono_s() - t0) * 1e9));
    return rc;
}

void wk_step_res_free(wk_step_res *r) {
    if (!r) return;
    for (int i = 0; i < r->n_draft; i++) wk_step_res_free(&r->draft[i]);
    free(r->draft);
    for (int i = 0; i < r->n_top; i++) free(r->top[i].s);
    free(r->top);
    free(r->cand_logq);
    free(r->residue);
    free(r->next_bytes);
    memset(r, 0, sizeof *r);
    r->end_logq = -INFINITY;
}

/* ---- scoring ------------------------------------------------------------ */

/* Rows of a scoring chunk: token `all[first + i + 1]` is predicted by work
 * row i; its log-probability, the entropy and the top probability are
 * computed by the decoding thread (copying up to n_batch whole rows would
 * cost n_batch * n_vocab floats per chunk). */
typedef struct wk_score_rows {
    const wk_engine *e;
    const int *all;
    int first, off;
    wk_score_res *res;
} wk_score_rows;

static void score_row(void *arg, int i, const float *lg) {
    wk_score_rows *sr = arg;
    int nv = sr->e->n_vocab, j = sr->first + i;
    float mx = lg[0];
    for (int v = 1; v < nv; v++)
        if (lg[v] > mx) mx = lg[v];
    double z = 0, zl = 0;
    for (int v = 0; v < nv; v++) {
        double w = exp((double)lg[v] - mx);
        z += w;
        zl += w * ((double)lg[v] - mx);
    }
    double lz = log(z);
    wk_score_tok *st = &sr->res->toks[j + 1 - sr->off];
    st->logprob = (double)lg[sr->all[j + 1]] - mx - lz;
    st->entropy = lz - zl / z;
    st->top1 = 1.0 / z;
}

/* One score at a time owns the scoring sequence. */
static void score_claim(wk_engine *e) {
    pthread_mutex_lock(&e->mu);
    while (e->score_busy) pthread_cond_wait(&e->cv, &e->mu);
    e->score_busy = 1;
    e->inside++;
    pthread_mutex_unlock(&e->mu);
}

static void score_release(wk_engine *e) {
    kv_rm(e, e->score_seq, -1);
    pthread_mutex_lock(&e->mu);
    e->score_busy = 0;
    e->inside--;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Decodes all[ws..we) into the scoring sequence in chunks of n_batch (the
 * chunks a lone scorer always used), scoring the predictions of tokens
 * next..we-1. Returns 0 or -1. */
static int score_window(wk_engine *e, const int *all, int off, int ws, int we, int next, wk_call *call,
                        wk_score_res *res) {
    kv_rm(e, e->score_seq, -1);
    for (int i = ws; i < we;) {
        int end = i + e->n_batch < we ? i + e->n_batch : we;
        wk_score_rows rows = {e, all, i, off, res};
        wk_work w = {.on_row = score_row, .arg = &rows};
        int rc = 0;
        for (int j = i; j < end && rc == 0; j++)
            rc = work_add(&w, all[j], j - ws, e->score_seq, j + 1 >= next && j + 1 < we);
        if (rc == 0) rc = run_work(e, &w, call);
        work_free(&w);
        if (rc != 0) return -1;
        res->decoded += end - i;
        i = end;
    }
    return 0;
}

int wk_score(wk_engine *e, const char *text, size_t len, int doc_start, wk_score_res *res,
             wk_err *err) {
    return wk_score_until(e, text, len, doc_start, NULL, res, err);
}

int wk_score_until(wk_engine *e, const char *text, size_t len, int doc_start, const wk_cancel *cancel,
                   wk_score_res *res, wk_err *err) {
    memset(res, 0, sizeof *res);
    err->status = 0;
    err->param = NULL;
    int *tt = NULL;
    size_t *sp = NULL;
    int n = wk_tokenize_text(e->m, text, len, &tt, &sp);
    if (n < 0) {
        set_err(err, 400, "untokenizable",
                "the text does not tokenize to exactly its own bytes with this model");
        return -1;
    }
    if (n > e->max_score_tokens) {
        free(tt);
        free(sp);
        set_err(err, 400, PROTO_ERR_BUDGET_EXCEEDED,
                "the text is %d tokens, over this worker's budget of %d tokens per /v1/score request", n,
                e->max_score_tokens);
        err->param = PROTO_PARAM_TEXT;
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

    /* predicted tokens: all[1..N); token i is predicted from position i-1 */
    int W = e->n_ctx, ov = res->overlap, rc = 0;
    wk_call call = {cancel, WK_STOP_NONE, 0};
    score_claim(e);
    for (int next = 1, ws = 0; next < N;) { /* next: first token not yet scored */
        int we = ws + W < N ? ws + W : N;
        if ((rc = score_window(e, all, off, ws, we, next, &call, res)) != 0) break;
        if (we > next) next = we;
        if (we >= N) break;
        ws = we - ov;
    }
    score_release(e);
    if (rc && call.stop) fail_stopped(e, &call, err);
    free(all);
    if (rc) {
        wk_score_res_free(res);
        if (!call.stop) set_err(err, 500, "decode_failed", "llama_decode failed");
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

/* ---- for the byte walk (worker/wk_bytes.c) ------------------------------ */

const wk_model *wk_engine_model(const wk_engine *e) { return e->m; }

int wk_engine_walk_claim(wk_engine *e) {
    score_claim(e);
    kv_rm(e, e->score_seq, -1);
    return e->score_seq;
}

void wk_engine_walk_release(wk_engine *e) { score_release(e); }

int wk_engine_scratch_take(wk_engine *e, int want, int *seqs) {
    return scratch_take(e, want < 1 ? 1 : want > WK_SCRATCH ? WK_SCRATCH : want, seqs);
}

void wk_engine_scratch_give(wk_engine *e, const int *seqs, int n) { scratch_give(e, seqs, n); }

void wk_engine_seq_fork(wk_engine *e, int src, int dst, int n) {
    pthread_mutex_lock(&e->dmu);
    llama_memory_t mem = llama_get_memory(e->ctx);
    llama_memory_seq_rm(mem, dst, -1, -1);
    if (n > 0) llama_memory_seq_cp(mem, src, dst, 0, n);
    pthread_mutex_unlock(&e->dmu);
}

void wk_engine_seq_trim(wk_engine *e, int seq, int from) { kv_rm(e, seq, from); }

int wk_engine_decode_rows(wk_engine *e, const wk_rows *r, const wk_cancel *cancel, wk_err *err) {
    wk_work w = {.on_row = r->on_row, .arg = r->arg};
    wk_call call = {cancel, WK_STOP_NONE, 0};
    int rc = 0;
    for (int i = 0; i < r->n && rc == 0; i++) rc = work_add(&w, r->tok[i], r->pos[i], r->seq[i], r->want[i]);
    if (rc) {
        work_free(&w);
        set_err(err, 500, "internal", "out of memory");
        return -1;
    }
    rc = run_work(e, &w, &call);
    work_free(&w);
    if (rc == 0) return 0;
    if (call.stop) return fail_stopped(e, &call, err);
    set_err(err, 500, "decode_failed", "llama_decode failed");
    return -1;
}
