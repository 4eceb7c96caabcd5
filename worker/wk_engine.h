/* worker/wk_engine.h: sessions, next-step prefix masses and teacher-forced
 * scoring over one llama_context (docs/PROTOCOL.md: /v1/step, /v1/score).
 *
 * Contract:
 *  - One llama_context with a unified KV cache of n_ctx * (slots + 1) +
 *    n_batch cells and slots + 1 + WK_SCRATCH sequences: one per session
 *    slot, one for scoring, and scratch sequences for teacher forcing. Every
 *    session may hold up to n_ctx positions.
 *  - Every function is thread-safe. Calls on different sessions (and one
 *    score) run at the same time: their decodes are gathered by a scheduler
 *    into shared llama_decode calls (continuous batching, round-robin between
 *    callers), and everything else a step computes (softmax, top-k, prefix
 *    masses) runs on the caller's thread outside the decode lock. Two calls
 *    on the same session run one after the other; so do two scores.
 *  - Batching changes no answer beyond the rounding the unified KV cache
 *    already allows (an f16 cache, kernels whose tiling depends on the
 *    cells in use): a caller alone gets exactly the unbatched decodes.
 *  - wk_step() decodes only the tokens not already in the session's KV cache
 *    (plus the residue token when healing, plus teacher-forced candidate
 *    tokens in scratch sequences), and answers a repeated state from the
 *    probabilities it keeps per session, decoding nothing. A session that
 *    speculated (draft, draft_b64, steps_b64) also keeps the probabilities
 *    of up to 2 * PROTO_MAX_DRAFT + 4 decoded positions while its KV cache
 *    holds them: a drafted state reached again decodes nothing. draft_b64
 *    decodes the positions it predicts for its pieces in one work first;
 *    its answers are those of the pieces sent one request each.
 *  - On an error (wk_err.status != 0, the function returns -1) the session
 *    is left as it was.
 *  - Sessions beyond `slots` evict the least recently used one.
 *  - A session belongs to the owner that created it (an opaque string, the
 *    fingerprint of the bearer token; "" = none): a request with another
 *    owner does not see it (404 as for an unknown id) and may create its
 *    own session with the same id.
 *  - Compute budget per request (wk_engine_opts), refused with 400
 *    budget_exceeded (err->param names the field): the candidates' bytes
 *    of a step and the tokens of a /v1/score text before anything is
 *    decoded; the teacher-forced positions of a step once they are known
 *    (after its tokenization, before they are decoded; the session is then
 *    left as it was).
 *  - Cancellation (wk_cancel): checked when a call starts and before each
 *    batch its decodes need (a work is queued for the scheduler, and a
 *    large work is checked again before each of its n_batch chunks); a
 *    request whose deadline passed fails with 503
 *    deadline_exceeded, one whose client left with 503 cancelled, and the
 *    session is left as it was (its text, tokens and remembered paths; the
 *    KV cache keeps whatever was already decoded, which the next step
 *    reuses). A new session that a cancelled step created is removed.
 */
#ifndef CONSORT_WK_ENGINE_H
#define CONSORT_WK_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto.h"
#include "worker/wk_model.h"

#define WK_SCRATCH 16
#define WK_BATCH_WAIT_US 2000
#define WK_MAX_K PROTO_MAX_K
#define WK_MAX_CANDIDATES PROTO_MAX_CANDIDATES

typedef struct wk_engine wk_engine;

typedef struct wk_engine_opts {
    int n_ctx;     /* per session; 0 = min(n_ctx_train, 4096) */
    int n_threads; /* 0 = number of CPUs */
    int slots;     /* 0 = 4 */
    int n_batch;   /* 0 = 256: tokens per llama_decode, shared by the callers batched together */
    int batch_wait_us; /* how long a decode may wait for callers expected to join it:
                          0 = the default (WK_BATCH_WAIT_US); the wait is at least a quarter of the
                          recent decode time and at most that time; < 0 = never */
    int max_cand_bytes;   /* bytes of all candidates of one step; 0 = WK_DEFAULT_MAX_CAND_BYTES */
    int max_forced;       /* teacher-forced positions of one step; 0 = WK_DEFAULT_MAX_FORCED */
    int max_score_tokens; /* tokens of one /v1/score text; 0 = WK_DEFAULT_MAX_SCORE_TOKENS */
    int flash_attn;/* 0 = llama.cpp's default (auto), 1 = on, 2 = off */
    int type_k;    /* KV cache types: 0 = llama.cpp's default (f16), else a ggml_type + 1 */
    int type_v;
} wk_engine_opts;

#define WK_DEFAULT_MAX_CAND_BYTES 16384
#define WK_DEFAULT_MAX_FORCED 512
#define WK_DEFAULT_MAX_SCORE_TOKENS 32768

/* When a request gives up: a deadline (clock_mono_s() seconds; 0 = none)
 * and a probe saying the client has gone (NULL = none). */
typedef struct wk_cancel {
    double deadline;
    int (*gone)(void *arg);
    void *arg;
} wk_cancel;

typedef struct wk_err {
    int status;       /* HTTP status, 0 = no error */
    const char *code; /* e.g. "session_not_found" */
    const char *param; /* the request field at fault, or NULL */
    char message[256];
} wk_err;

typedef proto_msg wk_msg; /* {role, content} */

typedef struct wk_step_req {
    const char *session;
    const char *prompt; /* NULL = none */
    size_t prompt_len;
    const wk_msg *messages; /* used when prompt is NULL and n_messages > 0 */
    int n_messages;
    int heal_prompt;
    const unsigned char *append;
    size_t append_len;
    int k;
    const proto_str *cands; /* strings whose mass is asked (after the new G) */
    int n_cands;
    const char *owner;        /* the session's owner; NULL = "" */
    const wk_cancel *cancel;  /* NULL = never cancelled */
    const proto_str *steps;   /* appends taken one step at a time (k, no candidates) before `append`;
                               * needs an existing session, no prompt */
    int n_steps;
    int draft;                /* then this many steps along the first top entry of each answer,
                               * answered in wk_step_res.draft and not committed */
    const proto_str *draft_steps; /* or (not with draft > 0) these appends as the drafted steps
                               * (another member's draft): each answered in wk_step_res.draft as
                               * if sent one request each, not committed; 0..PROTO_MAX_DRAFT
                               * non-empty pieces, their decodes batched ahead (one work) */
    int n_draft_steps;
    int next_bytes;           /* n > 0: also answer the next-byte distribution (wk_step_res.next_bytes),
                               * with tokens starting up to n - 1 committed tokens back */
} wk_step_req;

typedef struct wk_top {
    unsigned char *s;
    size_t len;
    double logq;
    double logp; /* log P(its own token path | residue), docs/PROTOCOL.md (a top entry) */
} wk_top;

typedef struct wk_step_res {
    int n_past;
    unsigned char *residue;
    size_t residue_len;
    int decoded;
    wk_top *top;
    int n_top;
    double *cand_logq; /* n_cands entries; -INFINITY = zero mass (null) */
    double end_logq;   /* -INFINITY = zero mass (null) */
    double *next_bytes; /* NULL, or PROTO_NEXT_BYTES log masses when asked (docs/PROTOCOL.md) */
    struct wk_step_res *draft; /* n_draft answers (no candidates), after each drafted step */
    int n_draft;
} wk_step_res;

typedef struct wk_score_tok {
    int id;
    size_t start, end;
    double logprob; /* NAN when not scored (doc_start = false, first token) */
    double entropy, top1;
} wk_score_tok;

typedef struct wk_score_res {
    wk_score_tok *toks;
    int n;
    double sum_logprob;
    int n_ctx, overlap;
    int decoded;
} wk_score_res;

wk_engine *wk_engine_create(wk_model *m, const wk_engine_opts *o, char *err, size_t err_size);
void wk_engine_free(wk_engine *e);
int wk_engine_n_ctx(const wk_engine *e);
int wk_engine_slots(const wk_engine *e);

int wk_step(wk_engine *e, const wk_step_req *req, wk_step_res *res, wk_err *err);
void wk_step_res_free(wk_step_res *r);
int wk_score(wk_engine *e, const char *text, size_t len, int doc_start, wk_score_res *res,
             wk_err *err);
/* wk_score with cancellation (cancel may be NULL). */
int wk_score_until(wk_engine *e, const char *text, size_t len, int doc_start, const wk_cancel *cancel,
                   wk_score_res *res, wk_err *err);
void wk_score_res_free(wk_score_res *r);
int wk_session_delete(wk_engine *e, const char *id); /* owner ""; 0, or -1 if unknown */
int wk_session_delete_as(wk_engine *e, const char *id, const char *owner); /* 0, or -1 if unknown */

/* Render chat messages: the model's template, else the documented fallback.
 * Returns a malloc'ed string and sets *parse_special (1 when the text holds
 * template markup to parse as special tokens). */
char *wk_render_chat(const wk_model *m, const wk_msg *msgs, int n, size_t *len, int *parse_special);

typedef struct wk_stats {
    uint64_t tokens_decoded;
    uint64_t decodes;        /* llama_decode calls */
    uint64_t shared_decodes; /* of those, the ones carrying the work of more than one caller */
    uint64_t graphs_reused;  /* of those, the ones that reused the previous compute graph (llama.cpp's count) */
    int sessions_in_use;
    /* Where the time went, in seconds since start (wall clock, summed over
     * threads): decode, llama_decode and the delivery of its rows (the
     * leader, under the decode lock); linger, leaders waiting for expected
     * callers before a batch; step, inside wk_step (everything a step does,
     * waiting for and running decodes included; not the HTTP handling);
     * softmax, logits rows made distributions by steps (their own rows,
     * teacher-forced paths, earlier rows, drafts; not scoring's per-row
     * sums, not the byte walk's rows). */
    double decode_s, linger_s, step_s, softmax_s;
} wk_stats;
void wk_engine_stats(wk_engine *e, wk_stats *st);

/* (Every distribution the worker answers from is worker/wk_softmax.h's.) */

/* ---- for the byte walk (worker/wk_bytes.c) -------------------------------
 * The walk over covering tokenizations holds the scoring sequence (one
 * score or walk at a time, as /v1/score) and borrows scratch sequences;
 * its decodes go through the same scheduler as everyone's.
 *  - wk_engine_walk_claim() waits for the scoring sequence and returns its
 *    id (cleared); wk_engine_walk_release() clears and frees it.
 *  - wk_engine_scratch_take() takes 1..want scratch sequences (waits for
 *    one), wk_engine_scratch_give() clears and returns them.
 *  - wk_engine_seq_fork(): dst := the first n positions of src.
 *  - wk_engine_seq_trim(): drop seq's positions from `from` on.
 *  - wk_engine_decode_rows(): decodes r's tokens (positions and sequences
 *    given), handing each wanted row's logits to on_row on the decoding
 *    thread; 0, or -1 with err set (deadline, client gone, decode failed). */
typedef struct wk_rows {
    const int *tok, *pos, *seq;
    const signed char *want;
    int n;
    void (*on_row)(void *arg, int i, const float *logits);
    void *arg;
} wk_rows;
const wk_model *wk_engine_model(const wk_engine *e);
int wk_engine_walk_claim(wk_engine *e);
void wk_engine_walk_release(wk_engine *e);
int wk_engine_scratch_take(wk_engine *e, int want, int *seqs);
void wk_engine_scratch_give(wk_engine *e, const int *seqs, int n);
void wk_engine_seq_fork(wk_engine *e, int src, int dst, int n);
void wk_engine_seq_trim(wk_engine *e, int seq, int from);
int wk_engine_decode_rows(wk_engine *e, const wk_rows *r, const wk_cancel *cancel, wk_err *err);

/* The batching wait (docs/ARCHITECTURE.md, "Waiting a little to batch"), as
 * pure functions of the configured wait and the recent decode time, in
 * seconds: how long a leader may wait for expected callers (0 when
 * batch_wait_s <= 0), and how recently an idle session must have finished
 * a call to be expected. */
double wk_linger_wait_s(double batch_wait_s, double decode_s);
double wk_recent_window_s(double decode_s);

#endif
