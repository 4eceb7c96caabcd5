/* tools/heldout.h: the held-out loss of a model, computed with llama.cpp the
 * way tools/train.py computes it (header-only: used by tools/eval_model.c and
 * tests/unit/worker/test_models.c).
 *
 * Windowing (models/README.md states the same): the file is JSONL, one
 * {"text": ...} per document. Each document's text is tokenized whole with the
 * model's own tokenizer (no special tokens added, none parsed). Its tokens are
 * cut into consecutive pieces of at most n_ctx - 1 tokens. Each piece is
 * decoded from an empty KV cache as [doc-start] + piece, and every token of
 * the piece is scored: -log p(token | doc-start and the piece before it),
 * from the full logits, in double precision. doc-start is BOS when the vocab
 * adds one (llama_vocab_get_add_bos), else EOS. Mean NLL = total NLL / total
 * scored tokens; bits per byte = total NLL / ln 2 / total UTF-8 bytes of the
 * texts.
 *
 * The context is made with n_threads 2, F32 K and V caches, flash attention
 * off, n_batch = n_ubatch = n_ctx, so the result does not depend on the
 * machine's core count or cache type.
 */
#ifndef CONSORT_TOOLS_HELDOUT_H
#define CONSORT_TOOLS_HELDOUT_H

#include <jansson.h>
#include <llama.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp log callback: errors only (for llama_log_set). */
static inline void heldout_quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

/* Model-loading progress callback that prints nothing and never cancels. */
static inline bool heldout_no_progress(float progress, void *user) {
    (void)progress;
    (void)user;
    return true;
}

typedef struct {
    double nll;       /* total, nats */
    long n_tokens;    /* scored tokens */
    long n_bytes;     /* UTF-8 bytes of the texts */
    int n_docs;
} heldout_result;

static inline llama_token heldout_doc_start(const struct llama_vocab *vocab) {
    llama_token bos = llama_vocab_bos(vocab), eos = llama_vocab_eos(vocab);
    if (llama_vocab_get_add_bos(vocab) && bos != LLAMA_TOKEN_NULL) return bos;
    return eos != LLAMA_TOKEN_NULL ? eos : bos;
}

/* Tokenize text whole (no special tokens). Returns a malloc'd array, *n set. */
static inline llama_token *heldout_tokenize(const struct llama_vocab *vocab, const char *text,
                                            int32_t len, int32_t *n) {
    int32_t cap = len + 16;
    llama_token *t = malloc(sizeof *t * (size_t)cap);
    if (!t) return NULL;
    int32_t k = llama_tokenize(vocab, text, len, t, cap, false, false);
    if (k < 0) {
        cap = -k;
        llama_token *t2 = realloc(t, sizeof *t * (size_t)cap);
        if (!t2) { free(t); return NULL; }
        t = t2;
        k = llama_tokenize(vocab, text, len, t, cap, false, false);
    }
    if (k < 0) { free(t); return NULL; }
    *n = k;
    return t;
}

static inline struct llama_context *heldout_context(struct llama_model *model, int n_ctx) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    return llama_init_from_model(model, cp);
}

/* exp(x) for x <= 0 in float, relative error about 1e-7: 2^(x log2 e) split
 * into 2^k * 2^f with f in [-0.5, 0.5] and a degree-7 series for 2^f. Plain
 * arithmetic so that the compiler can vectorize the loop below (glibc's exp
 * made the softmax a third of the whole evaluation's time). */
static inline float heldout_exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x; /* e^-87 is below any sum's last bit */
    float t = x * 1.44269504088896341f;
    float k = (t + 12582912.0f) - 12582912.0f; /* round to nearest (1.5 * 2^23) */
    float f = (t - k) * 0.693147180559945309f; /* e^f, |f| <= 0.347 */
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 +
              f * (1.0f / 720 + f * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log(sum(exp(lg))) of n logits. Sixteen lanes written out so that plain
 * -O2 vectorizes them; each block of 16 is summed in float, the blocks in
 * double. */
#define HELDOUT_LANES 16
static inline double heldout_logsumexp(const float *lg, int32_t n) {
    float m[HELDOUT_LANES];
    int32_t v = 0;
    for (int j = 0; j < HELDOUT_LANES; j++) m[j] = lg[0];
    for (; v + HELDOUT_LANES <= n; v += HELDOUT_LANES)
        for (int j = 0; j < HELDOUT_LANES; j++) m[j] = lg[v + j] > m[j] ? lg[v + j] : m[j];
    float mx = m[0];
    for (int j = 1; j < HELDOUT_LANES; j++) mx = m[j] > mx ? m[j] : mx;
    for (; v < n; v++) mx = lg[v] > mx ? lg[v] : mx;
    double s = 0;
    for (v = 0; v + HELDOUT_LANES <= n; v += HELDOUT_LANES) {
        float e[HELDOUT_LANES];
        for (int j = 0; j < HELDOUT_LANES; j++) e[j] = heldout_exp_neg(lg[v + j] - mx);
        float b = 0;
        for (int j = 0; j < HELDOUT_LANES; j++) b += e[j];
        s += b;
    }
    for (; v < n; v++) s += heldout_exp_neg(lg[v] - mx);
    return (double)mx + log(s);
}

/* Score one document's tokens (without doc-start); adds to *r. 0 on success. */
static inline int heldout_score_tokens(struct llama_context *ctx, const llama_token *tok, int32_t n,
                                       int n_ctx, heldout_result *r) {
    const struct llama_model *model = llama_get_model(ctx);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    const llama_token start = heldout_doc_start(vocab);
    struct llama_batch batch = llama_batch_init(n_ctx, 0, 1);
    int rc = 0;
    for (int32_t off = 0; off < n && rc == 0; off += n_ctx - 1) {
        int32_t len = n - off < n_ctx - 1 ? n - off : n_ctx - 1;
        llama_memory_clear(llama_get_memory(ctx), true);
        batch.n_tokens = len + 1;
        for (int32_t i = 0; i <= len; i++) {
            batch.token[i] = i == 0 ? start : tok[off + i - 1];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = i < len; /* position i predicts tok[off + i] */
        }
        if (llama_decode(ctx, batch) != 0) { rc = -1; break; }
        for (int32_t i = 0; i < len; i++) {
            const float *lg = llama_get_logits_ith(ctx, i);
            if (!lg) { rc = -1; break; }
            r->nll += heldout_logsumexp(lg, n_vocab) - (double)lg[tok[off + i]];
            r->n_tokens++;
        }
    }
    llama_batch_free(batch);
    return rc;
}

/* The held-out loss of the model over a JSONL file: its first max_docs
 * documents (all if max_docs <= 0). With doc_nll and doc_tok (room for
 * max_docs, or HELDOUT_MAX_DOCS), each document's total NLL and token count.
 * 0 on success. */
#define HELDOUT_MAX_DOCS 1024
static inline int heldout_eval(struct llama_model *model, const char *jsonl, int n_ctx, int max_docs,
                               heldout_result *r, double *doc_nll, long *doc_tok) {
    if (max_docs <= 0 || max_docs > HELDOUT_MAX_DOCS) max_docs = HELDOUT_MAX_DOCS;
    memset(r, 0, sizeof *r);
    FILE *f = fopen(jsonl, "r");
    if (!f) { fprintf(stderr, "heldout: cannot open %s\n", jsonl); return -1; }
    struct llama_context *ctx = heldout_context(model, n_ctx);
    if (!ctx) { fclose(f); return -1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && r->n_docs < max_docs && getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *doc = json_loads(line, 0, &err);
        const char *text = doc ? json_string_value(json_object_get(doc, "text")) : NULL;
        if (!text) { fprintf(stderr, "heldout: bad line in %s\n", jsonl); json_decref(doc); rc = -1; break; }
        size_t len = json_string_length(json_object_get(doc, "text"));
        int32_t n = 0;
        double nll0 = r->nll;
        long tok0 = r->n_tokens;
        llama_token *tok = heldout_tokenize(vocab, text, (int32_t)len, &n);
        if (!tok) rc = -1;
        else rc = heldout_score_tokens(ctx, tok, n, n_ctx, r);
        if (doc_nll) doc_nll[r->n_docs] = r->nll - nll0;
        if (doc_tok) doc_tok[r->n_docs] = r->n_tokens - tok0;
        r->n_bytes += (long)len;
        r->n_docs++;
        free(tok);
        json_decref(doc);
    }
    free(line);
    fclose(f);
    llama_free(ctx);
    return rc;
}

static inline double heldout_mean(const heldout_result *r) {
    return r->n_tokens ? r->nll / (double)r->n_tokens : NAN;
}

static inline double heldout_bpb(const heldout_result *r) {
    return r->n_bytes ? r->nll / log(2.0) / (double)r->n_bytes : NAN;
}

#endif
