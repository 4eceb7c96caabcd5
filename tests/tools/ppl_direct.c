/* tests/tools/ppl_direct.c: held-out log-probability of a file computed
 * directly with libllama, in process, independent of the worker and the
 * coordinator. It is the reference of the ppl integration test (invariant 5
 * of docs/ARCHITECTURE.md) and the baseline of bench/ppl_bench.sh.
 *
 *   ppl_direct --model M.gguf --file FILE [--ctx N] [--overlap K]
 *              [--threads T] [--window-doc-start 0|1] [--kv-size C]
 *
 * FILE: JSONL with a "text" per line, or else plain text (one document),
 * parsed here on its own (jansson) rather than with the coordinator's code.
 * Each document: tokens = llama_tokenize(text, add_special=false,
 * parse_special=false); scored after the document-start token (BOS when
 * the vocabulary has one, else EOS). Windows: the first holds the
 * doc-start token and up to N-1 text tokens; each later window re-reads the
 * previous K tokens as context and scores up to N-K new ones (the worker's
 * /v1/score policy, docs/PROTOCOL.md; with --window-doc-start 1 the
 * doc-start token is repeated at the head of every window instead).
 * --kv-size C allocates a KV cache of C cells (windows stay N tokens), to
 * measure what a larger cache costs.
 * Prints one JSON object: documents, bytes, tokens, sum_logprob (natural
 * log), bits_per_byte, seconds (scoring only: tokenize + decode + softmax),
 * tokens_per_s, n_ctx, window_overlap.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    char **text;
    size_t *len;
    size_t n;
} docs_t;

static void add_doc(docs_t *d, const char *s, size_t n) {
    d->text = realloc(d->text, (d->n + 1) * sizeof *d->text);
    d->len = realloc(d->len, (d->n + 1) * sizeof *d->len);
    d->text[d->n] = malloc(n + 1);
    memcpy(d->text[d->n], s, n);
    d->text[d->n][n] = 0;
    d->len[d->n] = n;
    d->n++;
}

static int load(const char *path, docs_t *d) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    buf[sz] = 0;
    size_t i = 0;
    while (i < (size_t)sz && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    int jsonl = i < (size_t)sz && buf[i] == '{';
    if (jsonl) {
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_error_t je;
            json_t *o = json_loads(line, JSON_ALLOW_NUL, &je);
            json_t *t = o ? json_object_get(o, "text") : NULL;
            if (json_is_string(t)) add_doc(d, json_string_value(t), json_string_length(t));
            else if (o || strspn(line, " \t\r") != strlen(line)) {
                fprintf(stderr, "ppl_direct: bad JSONL line\n");
                json_decref(o);
                free(buf);
                return -1;
            }
            json_decref(o);
        }
    } else {
        add_doc(d, buf, (size_t)sz);
    }
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL;
    int n_ctx = 0, overlap = -1, threads = 2, window_doc_start = 0, kv_size = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model_path = argv[i + 1];
        else if (!strcmp(argv[i], "--file")) file = argv[i + 1];
        else if (!strcmp(argv[i], "--ctx")) n_ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--overlap")) overlap = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--window-doc-start")) window_doc_start = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-size")) kv_size = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "ppl_direct: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!model_path || !file) {
        fprintf(stderr, "usage: ppl_direct --model M.gguf --file FILE [--ctx N] [--overlap K] [--threads T]\n");
        return 2;
    }
    docs_t docs = {0};
    if (load(file, &docs)) {
        fprintf(stderr, "ppl_direct: cannot read %s\n", file);
        return 1;
    }
    llama_log_set(quiet, NULL);
    if (CONSORT_BACKEND_DIR[0]) ggml_backend_load_all_from_path(CONSORT_BACKEND_DIR);
    else ggml_backend_load_all();
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "ppl_direct: cannot load %s\n", model_path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    if (n_ctx <= 0) n_ctx = llama_model_n_ctx_train(model);
    if (overlap < 0) overlap = n_ctx / 2;
    if (overlap > n_ctx - 2 - window_doc_start) overlap = n_ctx - 2 - window_doc_start;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(kv_size > n_ctx ? kv_size : n_ctx); /* --kv-size: a larger KV cache, same windows */
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)(n_ctx < 512 ? n_ctx : 512);
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.n_seq_max = 1;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "ppl_direct: cannot create a context\n");
        return 1;
    }
    llama_token doc_start = llama_vocab_bos(vocab);
    if (doc_start == LLAMA_TOKEN_NULL) doc_start = llama_vocab_eos(vocab);
    struct llama_batch batch = llama_batch_init(n_ctx, 0, 1);

    double sum = 0;
    size_t bytes = 0, n_tokens = 0;
    double t0 = now();
    for (size_t d = 0; d < docs.n; d++) {
        bytes += docs.len[d];
        if (!docs.len[d]) continue;
        int cap = (int)docs.len[d] + 8;
        llama_token *tok = malloc((size_t)cap * sizeof *tok);
        int n = llama_tokenize(vocab, docs.text[d], (int32_t)docs.len[d], tok, cap, false, false);
        if (n < 0) {
            cap = -n;
            tok = realloc(tok, (size_t)cap * sizeof *tok);
            n = llama_tokenize(vocab, docs.text[d], (int32_t)docs.len[d], tok, cap, false, false);
        }
        if (n < 0) {
            fprintf(stderr, "ppl_direct: tokenize failed\n");
            return 1;
        }
        n_tokens += (size_t)n;
        int next = 0; /* first token not yet scored */
        while (next < n) {
            int ctx_from = next == 0 ? 0 : next - overlap; /* context tokens re-read */
            if (ctx_from < 0) ctx_from = 0;
            int lead = (next == 0 || window_doc_start) ? 1 : 0; /* doc-start in this window */
            int room = n_ctx - lead - (next - ctx_from);
            int end = next + room;
            if (end > n) end = n;
            llama_memory_clear(llama_get_memory(ctx), true);
            batch.n_tokens = 0;
            int pos = 0;
            if (lead) {
                batch.token[pos] = doc_start;
                batch.pos[pos] = pos;
                batch.n_seq_id[pos] = 1;
                batch.seq_id[pos][0] = 0;
                batch.logits[pos] = 0;
                pos++;
            }
            for (int i = ctx_from; i < end; i++) {
                batch.token[pos] = tok[i];
                batch.pos[pos] = pos;
                batch.n_seq_id[pos] = 1;
                batch.seq_id[pos][0] = 0;
                batch.logits[pos] = 0;
                pos++;
            }
            batch.n_tokens = pos;
            /* the logits at position p predict the token at p + 1 */
            int first_pred = lead + (next - ctx_from) - 1; /* predicts tok[next] */
            for (int p = first_pred; p < pos - 1; p++) batch.logits[p] = 1;
            if (first_pred < 0) {
                fprintf(stderr, "ppl_direct: a window with no context (overlap 0 and no doc-start)\n");
                return 1;
            }
            if (llama_decode(ctx, batch)) {
                fprintf(stderr, "ppl_direct: decode failed\n");
                return 1;
            }
            for (int p = first_pred; p < pos - 1; p++) {
                const float *lg = llama_get_logits_ith(ctx, p);
                int target = batch.token[p + 1];
                double mx = -INFINITY;
                for (int v = 0; v < n_vocab; v++)
                    if (lg[v] > mx) mx = lg[v];
                double z = 0;
                for (int v = 0; v < n_vocab; v++) z += exp((double)lg[v] - mx);
                sum += (double)lg[target] - mx - log(z);
            }
            next = end;
        }
        free(tok);
    }
    double secs = now() - t0;
    json_t *o = json_object();
    json_object_set_new(o, "documents", json_integer((json_int_t)docs.n));
    json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(o, "tokens", json_integer((json_int_t)n_tokens));
    json_object_set_new(o, "sum_logprob", json_real(sum));
    json_object_set_new(o, "bits_per_byte", bytes ? json_real(-sum / ((double)bytes * M_LN2)) : json_null());
    json_object_set_new(o, "seconds", json_real(secs));
    json_object_set_new(o, "tokens_per_s", json_real(secs > 0 ? (double)n_tokens / secs : 0));
    json_object_set_new(o, "n_ctx", json_integer(n_ctx));
    json_object_set_new(o, "window_overlap", json_integer(overlap));
    json_object_set_new(o, "threads", json_integer(threads));
    char *s = json_dumps(o, JSON_REAL_PRECISION(17));
    puts(s);
    free(s);
    json_decref(o);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    for (size_t d = 0; d < docs.n; d++) free(docs.text[d]);
    free(docs.text);
    free(docs.len);
    return 0;
}
