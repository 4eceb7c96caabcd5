/* test_wk_hostile_bytes: bytes that make llama.cpp's tokenizer throw a C++
 * exception must not kill the worker (worker/wk_llama_safe.cpp).
 *
 * On a GPT-2 BPE vocabulary (models/b.gguf) llama_tokenize throws
 * std::invalid_argument("invalid codepoint") for a 4-byte UTF-8 lead whose
 * code point is above U+10FFFF, e.g. F4 90 80 80 (base64 9JCAgA==): before
 * the shim, the first call below aborted this program. The same bytes go
 * through every path that reaches the tokenizer from a request, on b.gguf
 * and on the SentencePiece models/a.gguf:
 *  - wk_tokenize_raw / wk_tokenize_text: -1 (b) or tokens whose spans tile it;
 *  - wk_tokenize_after (the step's canonical tokenization): falls back to
 *    longest match, and the tokens' bytes spell the fragment exactly;
 *  - wk_step with the bytes appended (append_b64) and as candidates
 *    (candidates_b64): answered, and the session serves a normal step after;
 *  - wk_score: a clear 400 `untokenizable` where the tokenizer cannot
 *    reproduce the text, then a normal score.
 * The repository root is $CONSORT_ROOT (tests/run.sh sets it), else ".".
 */
#include "tests/tap.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CRASHER "\xF4\x90\x80\x80" /* base64 9JCAgA==: U+110000, beyond Unicode */

/* Hostile shapes: beyond U+10FFFF, 5-byte and 0xFF leads, lone continuation
 * bytes, overlong forms, a surrogate, truncated sequences, embedded NUL. */
static const struct {
    const char *s;
    size_t n;
} hostile[] = {
    {CRASHER, 4},
    {"a" CRASHER "b", 6},
    {"\xF5\x80\x80\x80", 4},
    {"\xF7\xBF\xBF\xBF", 4},
    {"\xF8\x88\x80\x80\x80", 5},
    {"\xFF", 1},
    {"\x80", 1},
    {"\xC0\x80", 2},
    {"\xED\xA0\x80", 3},
    {"\xF4\x90", 2},
    {"\xF0\x9F\x98", 3},
    {"x\0y", 3},
};
#define N_HOSTILE (int)(sizeof hostile / sizeof hostile[0])

/* Do the tokens' bytes concatenate to x exactly? */
static int spells(const wk_model *m, const int *t, int k, const char *x, size_t n) {
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(m->va, t[i], &bl);
        if (off + bl > n || (bl && memcmp(x + off, b, bl) != 0)) return 0;
        off += bl;
    }
    return off == n;
}

/* Do the spans tile [0, n) (wk_tokenize_text's promise)? */
static int tiles(const size_t *sp, int k, size_t n) {
    size_t pos = 0;
    for (int i = 0; i < k; i++) {
        if (sp[2 * i] != pos || sp[2 * i + 1] < pos) return 0;
        pos = sp[2 * i + 1];
    }
    return pos == n;
}

static void check_tokenizer(const wk_model *m, const char *name) {
    char what[160];
    int raw_ok = 1, text_ok = 1, after_ok = 1;
    int *h = NULL; /* an anchor token with bytes: the first of "Hello" */
    int anchors[2] = {-1, wk_tokenize_raw(m, "Hello", 5, 0, 0, &h) > 0 ? h[0] : -1};
    free(h);
    for (int i = 0; i < N_HOSTILE; i++) {
        int *t = NULL;
        size_t *sp = NULL;
        int k = wk_tokenize_raw(m, hostile[i].s, hostile[i].n, 0, 0, &t);
        if (k < -1 || (k >= 0 && !t)) raw_ok = 0;
        free(t);
        k = wk_tokenize_text(m, hostile[i].s, hostile[i].n, &t, &sp);
        if (k >= 0 && !tiles(sp, k, hostile[i].n)) text_ok = 0;
        if (k < -1) text_ok = 0;
        free(t);
        free(sp);
        for (int a = 0; a < 2; a++) {
            int anchor = anchors[a];
            k = wk_tokenize_after(m, anchor, (const unsigned char *)hostile[i].s, hostile[i].n, &t);
            if (k <= 0 || !spells(m, t, k, hostile[i].s, hostile[i].n)) {
                diag("%s: hostile input %d, anchor %d: %d tokens that do not spell it", name, i, anchor, k);
                after_ok = 0;
            }
            free(t);
        }
    }
    snprintf(what, sizeof what, "%s: wk_tokenize_raw survives every hostile input (-1 or tokens)", name);
    ok(raw_ok, what);
    snprintf(what, sizeof what, "%s: wk_tokenize_text gives -1 or spans that tile the text", name);
    ok(text_ok, what);
    snprintf(what, sizeof what, "%s: wk_tokenize_after spells every hostile fragment exactly", name);
    ok(after_ok, what);
}

static int step(wk_engine *e, const char *sid, const char *prompt, const char *app, size_t an,
                const proto_str *cands, int nc, wk_step_res *res, wk_err *err) {
    wk_step_req q = {.session = sid, .prompt = prompt, .prompt_len = prompt ? strlen(prompt) : 0,
                     .append = (const unsigned char *)app, .append_len = an, .k = 3,
                     .cands = cands, .n_cands = nc};
    memset(err, 0, sizeof *err);
    memset(res, 0, sizeof *res);
    int r = wk_step(e, &q, res, err);
    if (r) diag("step error %d %s: %s", err->status, err->code ? err->code : "", err->message);
    return r;
}

static void check_engine(wk_model *m, const char *name) {
    char what[160], emsg[256];
    wk_engine_opts o = {.n_ctx = 128, .n_threads = 1, .slots = 2, .n_batch = 64};
    wk_engine *e = wk_engine_create(m, &o, emsg, sizeof emsg);
    snprintf(what, sizeof what, "%s: engine created", name);
    if (!ok(e != NULL, what)) {
        diag("%s", emsg);
        return;
    }
    wk_step_res res;
    wk_err err;
    ok(step(e, "s", "Hello world", NULL, 0, NULL, 0, &res, &err) == 0, "a session starts");
    int n0 = res.n_past;
    wk_step_res_free(&res);

    /* 9JCAgA== as candidates: each gets a mass (or null), nothing throws out. */
    proto_str cs[] = {{(const unsigned char *)CRASHER, 4}, {(const unsigned char *)" the", 4},
                      {(const unsigned char *)"\xFF\xFE", 2}};
    int r = step(e, "s", NULL, NULL, 0, cs, 3, &res, &err);
    snprintf(what, sizeof what, "%s: candidates_b64 with F4 90 80 80 are answered", name);
    ok(r == 0, what);
    int cand_ok = r == 0 && !isnan(res.cand_logq[0]) && res.cand_logq[0] <= 0 && isfinite(res.cand_logq[1]) &&
                  res.cand_logq[1] < 0 && !isnan(res.cand_logq[2]) && res.cand_logq[2] <= 0;
    snprintf(what, sizeof what, "%s: their logq are log-probabilities (or zero mass)", name);
    ok(cand_ok, what);
    wk_step_res_free(&res);

    /* 9JCAgA== appended: committed by longest match, exactly these bytes. */
    r = step(e, "s", NULL, CRASHER, 4, NULL, 0, &res, &err);
    snprintf(what, sizeof what, "%s: append_b64 F4 90 80 80 is answered (longest match over the vocabulary)",
             name);
    ok(r == 0 && res.n_past > n0, what);
    wk_step_res_free(&res);

    /* ...and the session goes on normally. */
    r = step(e, "s", NULL, " and then", 9, NULL, 0, &res, &err);
    snprintf(what, sizeof what, "%s: the same session then serves a normal step", name);
    ok(r == 0 && res.n_top > 0, what);
    wk_step_res_free(&res);

    /* A fresh session appending every hostile shape in turn. */
    int all = 1;
    ok(step(e, "h", "Once", NULL, 0, NULL, 0, &res, &err) == 0, "a second session starts");
    wk_step_res_free(&res);
    for (int i = 0; i < N_HOSTILE; i++) {
        r = step(e, "h", NULL, hostile[i].s, hostile[i].n, NULL, 0, &res, &err);
        if (r != 0 && !(err.status == 400 && err.code)) all = 0;
        wk_step_res_free(&res);
    }
    snprintf(what, sizeof what, "%s: every hostile append is answered or refused with a 4xx", name);
    ok(all, what);

    /* /v1/score: text the tokenizer cannot reproduce is a clear 400. */
    wk_score_res sr;
    r = wk_score(e, CRASHER, 4, 1, &sr, &err);
    snprintf(what, sizeof what, "%s: scoring F4 90 80 80 is scored or 400 untokenizable", name);
    ok(r == 0 || (err.status == 400 && !strcmp(err.code, "untokenizable")), what);
    wk_score_res_free(&sr);
    r = wk_score(e, "Hello there.", 12, 1, &sr, &err);
    snprintf(what, sizeof what, "%s: a normal score after it", name);
    ok(r == 0 && sr.n > 0 && isfinite(sr.sum_logprob), what);
    wk_score_res_free(&sr);
    wk_engine_free(e);
}

static void run(const char *root, const char *file, int gpt2) {
    char path[1024], err[256], what[160];
    snprintf(path, sizeof path, "%s/models/%s", root, file);
    wk_model *m = wk_model_load(path, 0, err, sizeof err);
    snprintf(what, sizeof what, "%s loads", file);
    if (!ok(m != NULL, what)) {
        diag("%s", err);
        return;
    }
    snprintf(what, sizeof what, "%s is %s", file, gpt2 ? "GPT-2 BPE" : "SentencePiece");
    is_str(m->vocab_type, gpt2 ? "bpe" : "spm", what);
    if (gpt2) {
        /* The call that aborted the process: llama.cpp throws, we get -1. */
        int *t = NULL;
        ok(wk_tokenize_raw(m, CRASHER, 4, 0, 0, &t) == -1 && t == NULL,
           "b.gguf: F4 90 80 80 makes llama.cpp throw; wk_tokenize_raw returns -1");
        free(t);
    }
    check_tokenizer(m, file);
    check_engine(m, file);
    wk_model_free(m);
}

int main(void) {
    const char *root = getenv("CONSORT_ROOT");
    wk_backend_init();
    run(root ? root : ".", "b.gguf", 1);
    run(root ? root : ".", "a.gguf", 0);
    wk_backend_free();
    return tap_done();
}
