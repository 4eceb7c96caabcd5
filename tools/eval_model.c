/* tools/eval_model: a model's held-out loss as llama.cpp computes it (the
 * windowing is in tools/heldout.h), and optionally greedy text from a prompt.
 *
 *     build/tools/eval_model MODEL.gguf [HELDOUT.jsonl] [-c N_CTX] [-p PROMPT [-n N]]
 *     build/tools/eval_model MODEL.gguf -t TOKENS.bin [-d N_DOCS] [-m MAX_TOKENS]
 *
 * -t scores pre-tokenized documents (tools/tokenize_corpus's format), the
 * first N_DOCS of them, each cut to MAX_TOKENS: for checking the trainer's
 * reference forward pass (tools/train.py --selftest) on the same tokens.
 * Prints one line: nll_per_token, tokens, bytes, bits_per_byte; with -j NAME,
 * instead a JSON object for models/heldout_loss.json (the same figures and
 * each document's total NLL and token count); with -p, the
 * prompt followed by N (default 60) greedily chosen tokens, after the
 * doc-start token. CPU only, 2 threads.
 */
#include "tools/heldout.h"

#include <ggml-backend.h>


static int generate(struct llama_model *model, const char *prompt, int n_gen, int n_ctx) {
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    struct llama_context *ctx = heldout_context(model, n_ctx);
    if (!ctx) return -1;
    int32_t n = 0;
    llama_token *p = heldout_tokenize(vocab, prompt, (int32_t)strlen(prompt), &n);
    if (!p || n + 1 + n_gen > n_ctx) { free(p); llama_free(ctx); return -1; }
    struct llama_batch batch = llama_batch_init(n_ctx, 0, 1);
    batch.n_tokens = n + 1;
    for (int32_t i = 0; i <= n; i++) {
        batch.token[i] = i == 0 ? heldout_doc_start(vocab) : p[i - 1];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n;
    }
    printf("%s", prompt);
    int32_t pos = n + 1, rc = 0;
    for (int k = 0; k < n_gen; k++) {
        if (llama_decode(ctx, batch) != 0) { rc = -1; break; }
        const float *lg = llama_get_logits_ith(ctx, batch.n_tokens - 1);
        int32_t best = 0, nv = llama_vocab_n_tokens(vocab);
        for (int32_t v = 1; v < nv; v++) if (lg[v] > lg[best]) best = v;
        if (llama_vocab_is_eog(vocab, best)) break;
        char buf[256];
        int32_t m = llama_token_to_piece(vocab, best, buf, sizeof buf, 0, false);
        if (m > 0) fwrite(buf, 1, (size_t)m, stdout);
        batch.n_tokens = 1;
        batch.token[0] = best;
        batch.pos[0] = pos++;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
    }
    printf("\n");
    llama_batch_free(batch);
    free(p);
    llama_free(ctx);
    return rc;
}

static int score_bin(struct llama_model *model, const char *path, int n_docs, int max_tok, int n_ctx) {
    FILE *f = fopen(path, "rb");
    int32_t head[2];
    if (!f || fread(head, sizeof head, 1, f) != 1 || head[1] < 0) { if (f) fclose(f); return -1; }
    int32_t *lens = malloc(sizeof *lens * (size_t)(head[1] + 1));
    if (!lens || fread(lens, sizeof *lens, (size_t)head[1], f) != (size_t)head[1]) { free(lens); fclose(f); return -1; }
    struct llama_context *ctx = heldout_context(model, n_ctx);
    heldout_result r;
    memset(&r, 0, sizeof r);
    int rc = ctx ? 0 : -1;
    for (int d = 0; d < head[1] && d < n_docs && rc == 0; d++) {
        llama_token *t = malloc(sizeof *t * (size_t)(lens[d] + 1));
        if (!t || fread(t, sizeof *t, (size_t)lens[d], f) != (size_t)lens[d]) rc = -1;
        else rc = heldout_score_tokens(ctx, t, lens[d] < max_tok ? lens[d] : max_tok, n_ctx, &r);
        free(t);
    }
    if (rc == 0) printf("nll_per_token %.6f tokens %ld\n", heldout_mean(&r), r.n_tokens);
    if (ctx) llama_free(ctx);
    free(lens);
    fclose(f);
    return rc;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *jsonl = NULL, *prompt = NULL, *bin = NULL, *json_name = NULL;
    int n_ctx = 256, n_gen = 60, n_docs = 1 << 30, max_tok = 1 << 30;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) bin = argv[++i];
        else if (!strcmp(argv[i], "-j") && i + 1 < argc) json_name = argv[++i];
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) n_docs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) max_tok = atoi(argv[++i]);
        else
        if (!strcmp(argv[i], "-c") && i + 1 < argc) n_ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!model_path) model_path = argv[i];
        else if (!jsonl) jsonl = argv[i];
        else { model_path = NULL; break; }
    }
    if (!model_path || n_ctx < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [HELDOUT.jsonl] [-c N_CTX] [-p PROMPT [-n N]]\n", argv[0]);
        return 2;
    }
    llama_log_set(heldout_quiet_log, NULL);
    ggml_backend_load_all_from_path(CONSORT_BACKEND_DIR);
    struct llama_model_params mp = llama_model_default_params();
    mp.progress_callback = heldout_no_progress;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    int rc = 0;
    if (jsonl) {
        heldout_result r;
        static double doc_nll[HELDOUT_MAX_DOCS];
        static long doc_tok[HELDOUT_MAX_DOCS];
        if (heldout_eval(model, jsonl, n_ctx, 0, &r, doc_nll, doc_tok) != 0) rc = 1;
        else if (json_name) {
            printf("  \"%s\": {\"nll_per_token\": %.6f, \"tokens\": %ld, \"bytes\": %ld, "
                   "\"bits_per_byte\": %.6f, \"ctx\": %d,\n    \"docs\": [", json_name,
                   heldout_mean(&r), r.n_tokens, r.n_bytes, heldout_bpb(&r), n_ctx);
            for (int d = 0; d < r.n_docs; d++)
                printf("%s[%.6f, %ld]", d ? ", " : "", doc_nll[d], doc_tok[d]);
            printf("]}");
        } else printf("nll_per_token %.6f tokens %ld bytes %ld bits_per_byte %.6f docs %d params %llu size %llu\n",
                    heldout_mean(&r), r.n_tokens, r.n_bytes, heldout_bpb(&r), r.n_docs,
                    (unsigned long long)llama_model_n_params(model),
                    (unsigned long long)llama_model_size(model));
    }
    if (bin && score_bin(model, bin, n_docs, max_tok, n_ctx) != 0) rc = 1;
    if (prompt && generate(model, prompt, n_gen, n_ctx) != 0) rc = 1;
    llama_model_free(model);
    return rc;
}
