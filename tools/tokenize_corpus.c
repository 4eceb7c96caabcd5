/* tools/tokenize_corpus: tokenize a JSONL corpus ({"text": ...} per document)
 * with a GGUF model's own tokenizer (a vocab-only file is enough), for
 * tools/train.py. The trainer thereby sees exactly the tokens llama.cpp makes.
 *
 *     build/tools/tokenize_corpus VOCAB.gguf IN.jsonl OUT.bin
 *
 * OUT.bin, all little-endian int32: doc_start (the token each document is
 * scored from: BOS if the vocab adds one, else EOS), n_docs, then n_docs
 * token counts, then each document's tokens (doc-start not included).
 * Each text is tokenized whole, with no special tokens added or parsed.
 */
#include "tools/heldout.h"

#include <ggml-backend.h>

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

typedef struct { int32_t *v; size_t n, cap; } ivec;

static int push(ivec *a, const int32_t *x, size_t n) {
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 1024;
        while (cap < a->n + n) cap *= 2;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    memcpy(a->v + a->n, x, n * sizeof *x);
    a->n += n;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s VOCAB.gguf IN.jsonl OUT.bin\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(CONSORT_BACKEND_DIR);
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    FILE *f = fopen(argv[2], "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
    ivec lens = {0}, toks = {0};
    char *line = NULL;
    size_t cap = 0;
    long bytes = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *doc = json_loads(line, 0, &err);
        json_t *jt = doc ? json_object_get(doc, "text") : NULL;
        if (!json_is_string(jt)) { fprintf(stderr, "bad line in %s\n", argv[2]); return 1; }
        int32_t n = 0;
        llama_token *t = heldout_tokenize(vocab, json_string_value(jt), (int32_t)json_string_length(jt), &n);
        if (!t || push(&lens, &n, 1) || push(&toks, t, (size_t)n)) { fprintf(stderr, "out of memory\n"); return 1; }
        bytes += (long)json_string_length(jt);
        free(t);
        json_decref(doc);
    }
    free(line);
    fclose(f);
    FILE *o = fopen(argv[3], "wb");
    int32_t head[2] = { heldout_doc_start(vocab), (int32_t)lens.n };
    if (!o || fwrite(head, sizeof head, 1, o) != 1 ||
        fwrite(lens.v, sizeof *lens.v, lens.n, o) != lens.n ||
        fwrite(toks.v, sizeof *toks.v, toks.n, o) != toks.n || fclose(o) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 1;
    }
    printf("%s: %zu documents, %zu tokens, %ld bytes (%.3f bytes/token), doc-start %d\n",
           argv[2], lens.n, toks.n, bytes, (double)bytes / (double)toks.n, head[0]);
    free(lens.v);
    free(toks.v);
    llama_model_free(model);
    return 0;
}
