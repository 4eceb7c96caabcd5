/* tools/heldout.h: the held-out loss of a model, computed with llama.cpp the
 * way tools/train.py computes it (header-only: used by tools/eval_model.c and
 * tests/unit/test_models.c).
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
            double mx = lg[0];
            for (int32_t v = 1; v < n_vocab; v++) if (lg[v] > mx) mx = lg[v];
            double s = 0;
            for (int32_t v = 0; v < n_vocab; v++) s += exp((double)lg[v] - mx);
            r->nll += mx + log(s) - (double)lg[tok[off + i]];
            r->n_tokens++;
        }
    }
    llama_batch_free(batch);
    return rc;
}

/* The held-out loss of the model over a JSONL file. 0 on success. */
static inline int heldout_eval(struct llama_model *model, const char *jsonl, int n_ctx,
                               heldout_result *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(jsonl, "r");
    if (!f) { fprintf(stderr, "heldout: cannot open %s\n", jsonl); return -1; }
    struct llama_context *ctx = heldout_context(model, n_ctx);
    if (!ctx) { fclose(f); return -1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *doc = json_loads(line, 0, &err);
        const char *text = doc ? json_string_value(json_object_get(doc, "text")) : NULL;
        if (!text) { fprintf(stderr, "heldout: bad line in %s\n", jsonl); json_decref(doc); rc = -1; break; }
        size_t len = json_string_length(json_object_get(doc, "text"));
        int32_t n = 0;
        llama_token *tok = heldout_tokenize(vocab, text, (int32_t)len, &n);
        if (!tok) rc = -1;
        else rc = heldout_score_tokens(ctx, tok, n, n_ctx, r);
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
