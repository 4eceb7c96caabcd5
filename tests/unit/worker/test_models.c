/* test_models: the committed fixture models (models/README.md) load with
 * llama.cpp, have the tokenizers they claim, fit the size limit, and score the
 * held-out text (data/brown-heldout.jsonl) as recorded in
 * models/heldout_loss.json, whose full-set figures models/README.md shows.
 *
 * The scoring is tools/heldout.h, the same code as tools/eval_model. By
 * default the first QUICK_DOCS document(s) are scored (a few seconds a model on
 * two cores) and compared, to 1e-3 nats/token, with the sum of those
 * documents' recorded figures. CONSORT_MODELS_FULL=1 scores the whole
 * held-out set and compares with the full figures (about a minute on two
 * cores). Under valgrind (CONSORT_VALGRIND=1) only loading is checked:
 * scoring there would take hours.
 *
 * The same models also go through the worker: the first held-out document
 * is scored by the worker's own engine (wk_score, the code behind
 * consort-worker's /v1/score: rolling windows of 256 tokens, overlap 128)
 * and compared, to 1e-3 nats/token, with "worker_doc0" in heldout_loss.json,
 * a figure made by the independent libllama loop tests/tools/ppl_direct
 * (`ppl_direct --model M --file DOC0 --ctx 256`).
 *
 * The repository root is $CONSORT_ROOT (tests/run.sh sets it), else ".".
 */
#include "tests/tap.h"
#include "tools/heldout.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

#include <ggml-backend.h>
#include <sys/stat.h>

#define QUICK_DOCS 1
#define TOL 1e-3
#define MAX_FILE_BYTES 12000000L


static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (!b) { free(buf); fclose(f); return NULL; }
            buf = b;
        }
        size_t k = fread(buf + n, 1, 4096, f);
        n += k;
        if (k == 0) break;
    }
    fclose(f);
    buf[n] = 0;
    return buf;
}

static const struct {
    const char *name;
    int n_vocab;
    enum llama_vocab_type type;
} MODELS[] = {
    { "a", 32000, LLAMA_VOCAB_TYPE_SPM },
    { "b", 50257, LLAMA_VOCAB_TYPE_BPE },
    { "c", 32000, LLAMA_VOCAB_TYPE_SPM },
};

/* The first document of the held-out file (its "text"), malloc'ed. */
static char *first_doc(const char *heldout, size_t *len) {
    FILE *f = fopen(heldout, "rb");
    if (!f) return NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    json_t *j = n > 0 ? json_loadb(line, (size_t)n, 0, NULL) : NULL;
    free(line);
    const char *t = json_string_value(json_object_get(j, "text"));
    char *out = t ? strdup(t) : NULL;
    if (out) *len = json_string_length(json_object_get(j, "text"));
    json_decref(j);
    return out;
}

/* The model through the worker's engine: held-out document 0 as recorded. */
static void worker_doc0(const char *model_path, const char *heldout, json_t *want, const char *name) {
    char what[256], emsg[256];
    double want_lp = json_real_value(json_object_get(want, "sum_logprob"));
    long want_tok = (long)json_integer_value(json_object_get(want, "tokens"));
    snprintf(what, sizeof what, "%s: worker_doc0 recorded", name);
    if (!ok(want_tok > 0, what)) return;
    size_t len = 0;
    char *doc = first_doc(heldout, &len);
    wk_model *m = doc ? wk_model_load(model_path, 0, emsg, sizeof emsg) : NULL;
    wk_engine_opts o = {.n_ctx = 256, .n_threads = 2, .slots = 1};
    wk_engine *e = m ? wk_engine_create(m, &o, emsg, sizeof emsg) : NULL;
    snprintf(what, sizeof what, "%s: loads in the worker's engine", name);
    if (ok(e != NULL, what)) {
        wk_score_res r;
        wk_err err;
        int rc = wk_score(e, doc, len, 1, &r, &err);
        snprintf(what, sizeof what, "%s: the worker scores held-out document 0 (%ld tokens)", name, want_tok);
        ok(rc == 0 && r.n == want_tok && r.overlap == 128, what);
        snprintf(what, sizeof what, "%s: worker nats/token = direct libllama's, to %g", name, TOL);
        if (rc == 0) {
            is_near(-r.sum_logprob / r.n, -want_lp / (double)want_tok, TOL, what);
            wk_score_res_free(&r);
        } else {
            ok(0, what);
        }
    }
    wk_engine_free(e);
    if (m) wk_model_free(m);
    free(doc);
}

int main(void) {
    const char *root = getenv("CONSORT_ROOT");
    if (!root || !*root) root = ".";
    const char *v = getenv("CONSORT_VALGRIND");
    const bool valgrind = v && !strcmp(v, "1");
    const char *fu = getenv("CONSORT_MODELS_FULL");
    const bool full = fu && !strcmp(fu, "1");
    char path[4096], heldout[4096];
    snprintf(heldout, sizeof heldout, "%s/data/brown-heldout.jsonl", root);

    llama_log_set(heldout_quiet_log, NULL);
    ggml_backend_load_all_from_path(CONSORT_BACKEND_DIR);

    snprintf(path, sizeof path, "%s/models/heldout_loss.json", root);
    json_error_t err;
    json_t *rec = json_load_file(path, 0, &err);
    if (!ok(rec != NULL, "models/heldout_loss.json parses")) {
        diag("%s: %s", path, err.text);
        return tap_done();
    }
    snprintf(path, sizeof path, "%s/models/README.md", root);
    char *readme = slurp(path);
    ok(readme != NULL, "models/README.md reads");

    for (size_t m = 0; m < sizeof MODELS / sizeof *MODELS; m++) {
        const char *name = MODELS[m].name;
        char what[256];
        json_t *jm = json_object_get(rec, name);
        json_t *docs = json_object_get(jm, "docs");
        double want = json_real_value(json_object_get(jm, "nll_per_token"));
        double want_bpb = json_real_value(json_object_get(jm, "bits_per_byte"));
        long want_tokens = (long)json_integer_value(json_object_get(jm, "tokens"));
        int n_ctx = (int)json_integer_value(json_object_get(jm, "ctx"));
        snprintf(what, sizeof what, "%s: recorded figures present", name);
        if (!ok(json_is_array(docs) && json_array_size(docs) > 0 && want > 0 && n_ctx > 1, what)) continue;

        /* the per-document figures add up to the full ones */
        double sum_nll = 0;
        long sum_tok = 0;
        for (size_t d = 0; d < json_array_size(docs); d++) {
            sum_nll += json_real_value(json_array_get(json_array_get(docs, d), 0));
            sum_tok += (long)json_integer_value(json_array_get(json_array_get(docs, d), 1));
        }
        snprintf(what, sizeof what, "%s: per-document figures add up", name);
        ok(sum_tok == want_tokens && fabs(sum_nll / (double)sum_tok - want) < 1e-5, what);

        /* README shows the recorded numbers */
        char num[64], num_bpb[64];
        snprintf(num, sizeof num, "%.6f", want);
        snprintf(num_bpb, sizeof num_bpb, "%.4f", want_bpb);
        snprintf(what, sizeof what, "%s: README shows held-out %s nats/token and %s bits/byte", name, num, num_bpb);
        ok(readme && strstr(readme, num) && strstr(readme, num_bpb), what);

        snprintf(path, sizeof path, "%s/models/%s.gguf", root, name);
        struct stat st;
        snprintf(what, sizeof what, "%s: file at most %ld bytes", name, MAX_FILE_BYTES);
        ok(stat(path, &st) == 0 && st.st_size <= MAX_FILE_BYTES, what);

        struct llama_model_params mp = llama_model_default_params();
        mp.progress_callback = heldout_no_progress;
        struct llama_model *model = llama_model_load_from_file(path, mp);
        snprintf(what, sizeof what, "%s: loads", name);
        if (!ok(model != NULL, what)) continue;
        const struct llama_vocab *vocab = llama_model_get_vocab(model);
        snprintf(what, sizeof what, "%s: vocabulary size", name);
        is_int(llama_vocab_n_tokens(vocab), MODELS[m].n_vocab, what);
        snprintf(what, sizeof what, "%s: vocabulary type", name);
        is_int(llama_vocab_type(vocab), MODELS[m].type, what);

        if (valgrind) {
            diag("%s: scoring skipped under valgrind", name);
        } else {
            int n_docs = full ? 0 : QUICK_DOCS;
            double exp_nll = 0;
            long exp_tok = 0;
            for (size_t d = 0; d < json_array_size(docs) && (full || d < QUICK_DOCS); d++) {
                exp_nll += json_real_value(json_array_get(json_array_get(docs, d), 0));
                exp_tok += (long)json_integer_value(json_array_get(json_array_get(docs, d), 1));
            }
            heldout_result r;
            int rc = heldout_eval(model, heldout, n_ctx, n_docs, &r, NULL, NULL);
            snprintf(what, sizeof what, "%s: scores the held-out text%s", name, full ? "" : " (first documents)");
            ok(rc == 0, what);
            snprintf(what, sizeof what, "%s: scored token count", name);
            is_int(r.n_tokens, exp_tok, what);
            snprintf(what, sizeof what, "%s: held-out nats/token as recorded (tolerance %g)", name, TOL);
            is_near(heldout_mean(&r), exp_nll / (double)exp_tok, TOL, what);
            if (full) {
                snprintf(what, sizeof what, "%s: bits per byte as recorded", name);
                is_near(heldout_bpb(&r), want_bpb, 1e-3, what);
            }
            worker_doc0(path, heldout, json_object_get(jm, "worker_doc0"), name);
        }
        llama_model_free(model);
    }
    free(readme);
    json_decref(rec);
    return tap_done();
}
