/* worker/wk_bytes (the next-byte walk over covering tokenizations) against
 * brute force computed here with plain libllama teacher forcing: for every
 * row, every token path from the anchor that covers the text exactly, its
 * probability decoded from scratch, and the mass of the tokens continuing
 * the rest of the text with each byte; on real tiny models (SentencePiece)
 * and a random-weight GPT-2 model. Also: rows are proper distributions,
 * fairness (a row never depends on its own byte or later ones), a smaller
 * beam changes rows, the window rolls in a small context (fairly), and bad
 * input is refused. */
#include "tests/tap.h"
#include "worker/wk_bytes.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

#include <llama.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/worker/ref_llama.h"


/* ---- brute force ------------------------------------------------------------ */

typedef struct {
    const unsigned char *vt;
    size_t row;             /* the position predicted, in the virtual text */
    int *seq;               /* main tokens, then the path */
    int n_main;
    double num[WK_BYTES_EVENTS];
} brute;

/* Every path extending seq[0..n) (which covers vt[anchor..j)) exactly. */
static void paths_from(brute *b, int n, size_t j, double P) {
    double *p = malloc((size_t)V * sizeof *p);
    ref_dist(b->seq, n, p);
    const unsigned char *y = b->vt + j;
    size_t yl = b->row - j;
    for (int t = 0; t < V; t++) {
        if (plen[t] > yl && !memcmp(pieces[t], y, yl)) b->num[pieces[t][yl]] += P * p[t];
        if (yl == 0 && llama_vocab_is_eog(M->vocab, t)) b->num[256] += P * p[t];
    }
    for (int t = 0; t < V; t++)
        if (plen[t] >= 1 && plen[t] <= yl && !memcmp(pieces[t], y, plen[t]) && p[t] > 0) {
            b->seq[n] = t;
            paths_from(b, n + 1, j + plen[t], P * p[t]);
        }
    free(p);
}

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Row `row` (of the real text) by brute force: the walk's anchors (the
 * documented rule), the words before the anchor as canonical tokens. */
static void brute_row(const char *text, size_t row, double *out) {
    size_t off = M->space_prefix ? 1 : 0, len = strlen(text);
    unsigned char *vt = malloc(len + 1);
    if (off) vt[0] = ' ';
    memcpy(vt + off, text, len);
    brute b = {.vt = vt, .row = row + off, .seq = malloc(1024 * sizeof(int))};
    int n = 0;
    b.seq[n++] = M->doc_start;
    size_t anchor = 0;
    for (size_t k = 1; k < b.row; k++)
        if (is_space(vt[k]) && !is_space(vt[k - 1])) {
            int *t;
            int nt = wk_tokenize_after(M, b.seq[n - 1], vt + anchor, k - anchor, &t);
            for (int q = 0; q < nt; q++) b.seq[n++] = t[q];
            free(t);
            anchor = k;
        }
    paths_from(&b, n, anchor, 1.0);
    double z = 0;
    for (int e = 0; e < WK_BYTES_EVENTS; e++) z += b.num[e];
    for (int e = 0; e < WK_BYTES_EVENTS; e++) out[e] = b.num[e] / z;
    free(b.seq);
    free(vt);
}

static int walk(wk_engine *e, const char *text, size_t len, int beam, wk_bytes_res *r) {
    wk_err err = {0};
    int rc = wk_next_bytes(e, (const unsigned char *)text, len, beam, NULL, r, &err);
    if (rc) diag("walk: %d %s: %s", err.status, err.code ? err.code : "", err.message);
    return rc;
}

static const char *text1 = "Lily saw a big dog.";

static void check_brute(wk_engine *e, const char *name) {
    wk_bytes_res r;
    size_t len = strlen(text1);
    if (walk(e, text1, len, WK_BYTES_MAX_BEAM, &r)) {
        ok(0, "the walk answers");
        return;
    }
    int bad = 0, proper = 1;
    double worst = 0, worst_log = 0;
    for (size_t i = 0; i < len; i++) {
        double bf[WK_BYTES_EVENTS], s = 0;
        brute_row(text1, i, bf);
        for (int ev = 0; ev < WK_BYTES_EVENTS; ev++) {
            double q = exp(r.dist[i * WK_BYTES_EVENTS + ev]);
            s += q;
            double d = fabs(q - bf[ev]);
            if (d > worst) worst = d;
            if (d > 1e-4) bad++;
        }
        double dl = fabs(r.dist[i * WK_BYTES_EVENTS + (unsigned char)text1[i]] - log(bf[(unsigned char)text1[i]]));
        if (dl > worst_log) worst_log = dl;
        if (dl > 1e-3) bad++;
        if (fabs(s - 1) > 1e-4) proper = 0;
    }
    char what[200];
    snprintf(what, sizeof what, "%s: every row equals brute force over covering paths (worst |dp| %.2g, "
             "worst |dlog p(byte)| %.2g; %ld paths, beam at most %d)", name, worst, worst_log, r.paths, r.max_beam);
    ok(bad == 0, what);
    ok(proper, "every row sums to 1");
    ok(r.max_beam > 1, "the walk kept more than one path somewhere (covering tokenizations exist)");
    wk_bytes_res_free(&r);
}

/* Rows 0..L of two texts that agree on text[0..L) are equal, whatever the
 * byte at L (a space or not, which moves anchors) and after it; and the rows
 * of a truncated text are the first rows of the whole. */
static void check_fair(wk_engine *e) {
    const char *a = "The dog ran to the park, and then it sat down in the sun.";
    size_t len = strlen(a);
    wk_bytes_res ra;
    if (walk(e, a, len, 8, &ra)) {
        ok(0, "the walk answers");
        return;
    }
    int bad = 0, cuts = 0;
    for (size_t L = 1; L + 1 < len; L += 3) {
        char *b = strdup(a);
        b[L] = b[L] == ' ' ? 'x' : ' ';
        for (size_t k = L + 1; k < len; k++) b[k] = "qz e,k"[k % 6];
        wk_bytes_res rb, rt;
        if (walk(e, b, len, 8, &rb) || walk(e, a, L, 8, &rt)) {
            bad++;
            free(b);
            continue;
        }
        for (size_t i = 0; i <= L; i++)
            for (int ev = 0; ev < WK_BYTES_EVENTS; ev++) {
                float x = ra.dist[i * WK_BYTES_EVENTS + ev];
                if (!(x == rb.dist[i * WK_BYTES_EVENTS + ev] || fabsf(x - rb.dist[i * WK_BYTES_EVENTS + ev]) < 1e-6f)) bad++;
                if (i < L && !(x == rt.dist[i * WK_BYTES_EVENTS + ev] || fabsf(x - rt.dist[i * WK_BYTES_EVENTS + ev]) < 1e-6f))
                    bad++;
            }
        int differs = 0; /* the rows after L may differ: the test could fail */
        for (int ev = 0; ev < WK_BYTES_EVENTS; ev++)
            differs |= ra.dist[(L + 1) * WK_BYTES_EVENTS + ev] != rb.dist[(L + 1) * WK_BYTES_EVENTS + ev];
        cuts += differs;
        wk_bytes_res_free(&rb);
        wk_bytes_res_free(&rt);
        free(b);
    }
    ok(bad == 0, "fair: rows 0..L agree for texts that share text[0..L) (byte L flipped space <-> letter), and a "
                 "truncated text's rows are the first rows of the whole");
    ok(cuts > 0, "the row after a changed byte does change (the comparison can fail)");
    wk_bytes_res_free(&ra);
}

/* A beam of 1 keeps one path; its rows differ from the wider beam's
 * somewhere (pruning shows), never at row 0 (one path there for both). */
static void check_beam(wk_engine *e) {
    const char *t = "Tom was happy because the cat came back.";
    size_t len = strlen(t);
    wk_bytes_res r1, rk;
    if (walk(e, t, len, 1, &r1) || walk(e, t, len, 64, &rk)) {
        ok(0, "the walks answer");
        return;
    }
    double s1 = 0, sk = 0;
    int differ = 0;
    for (size_t i = 0; i < len; i++) {
        s1 += r1.dist[i * WK_BYTES_EVENTS + (unsigned char)t[i]];
        sk += rk.dist[i * WK_BYTES_EVENTS + (unsigned char)t[i]];
        for (int ev = 0; ev < WK_BYTES_EVENTS; ev++)
            differ |= fabsf(r1.dist[i * WK_BYTES_EVENTS + ev] - rk.dist[i * WK_BYTES_EVENTS + ev]) > 1e-4f;
    }
    diag("log-likelihood of the text: beam 1 %.4f, beam 64 %.4f nats", s1, sk);
    ok(r1.max_beam <= 2 && rk.max_beam > 2, "beam 1 keeps at most two paths (the best, and the best ending at the byte), beam 64 more");
    ok(isfinite(s1) && isfinite(sk), "every byte of the text has mass, whatever the beam");
    ok(differ, "the beam changes some row");
    int same0 = 1;
    for (int ev = 0; ev < WK_BYTES_EVENTS && M->space_prefix == 0; ev++)
        same0 &= r1.dist[ev] == rk.dist[ev] || fabsf(r1.dist[ev] - rk.dist[ev]) < 1e-6f;
    ok(same0, "row 0 is the same for every beam (without a virtual space, one path there)");
    wk_bytes_res_free(&r1);
    wk_bytes_res_free(&rk);
}

/* A 64-position context: the walk rolls its window on a long text; every
 * row stays a distribution giving the text's bytes mass, and rows still
 * depend only on the text before them across the rolls. */
static void check_windows(void) {
    char emsg[256];
    wk_engine_opts o = {.n_ctx = 64, .n_threads = 1, .slots = 1};
    wk_engine *e = wk_engine_create(M, &o, emsg, sizeof emsg);
    if (!ok(e != NULL, "a 64-position engine")) return;
    char text[1200] = "";
    for (int k = 0; k < 9; k++) strcat(text, "Once upon a time, Lily and Ben went to the park to play. ");
    size_t len = strlen(text), cut = len - 100;
    wk_bytes_res r, rt;
    if (walk(e, text, len, 4, &r) || walk(e, text, cut, 4, &rt)) {
        ok(0, "the walks answer");
        wk_engine_free(e);
        return;
    }
    int finite = 1, same = 1;
    for (size_t i = 0; i < len; i++) finite &= isfinite(r.dist[i * WK_BYTES_EVENTS + (unsigned char)text[i]]);
    for (size_t i = 0; i < cut * WK_BYTES_EVENTS; i++)
        same &= r.dist[i] == rt.dist[i] || fabsf(r.dist[i] - rt.dist[i]) < 1e-6f;
    char what[160];
    snprintf(what, sizeof what, "a %zu-byte text in a 64-position context: the window rolled (%d times)", len, r.windows);
    ok(r.windows > 0, what);
    ok(finite, "every byte of the text keeps mass across the rolls");
    ok(same, "a truncated text's rows are the first rows of the whole, across the rolls");
    wk_bytes_res_free(&r);
    wk_bytes_res_free(&rt);
    wk_err err = {0};
    wk_engine_opts tiny = {.n_ctx = 16, .n_threads = 1, .slots = 1};
    wk_engine *t = wk_engine_create(M, &tiny, emsg, sizeof emsg);
    ok(t && wk_next_bytes(t, (const unsigned char *)"abc", 3, 4, NULL, &r, &err) == -1 && err.status == 400,
       "a 16-position context: 400 (the walk needs 32)");
    wk_engine_free(t);
    wk_engine_free(e);
}

static void check_refusals(wk_engine *e) {
    wk_bytes_res r;
    wk_err err = {0};
    int rc = wk_next_bytes(e, (const unsigned char *)"abc", 3, 0, NULL, &r, &err);
    ok(rc == -1 && err.status == 400 && err.param && !strcmp(err.param, "beam"), "beam 0: 400 naming beam");
    rc = wk_next_bytes(e, (const unsigned char *)"abc", 3, WK_BYTES_MAX_BEAM + 1, NULL, &r, &err);
    ok(rc == -1 && err.status == 400, "beam over the limit: 400");
    rc = wk_next_bytes(e, (const unsigned char *)"", 0, 4, NULL, &r, &err);
    ok(rc == -1 && err.status == 400 && r.dist == NULL, "empty text: 400, nothing answered");
    wk_cancel past = {.deadline = 1e-9};
    rc = wk_next_bytes(e, (const unsigned char *)"abc def", 7, 4, &past, &r, &err);
    ok(rc == -1 && err.status == 503, "a deadline already passed: 503");
}

static void run_model(const char *path, const char *name, int full) {
    char emsg[256];
    M = wk_model_load(path, 0, emsg, sizeof emsg);
    if (!ok(M != NULL, name)) {
        diag("%s", emsg);
        return;
    }
    ref_init(512);
    wk_engine_opts o = {.n_ctx = 256, .n_threads = 1, .slots = 2};
    wk_engine *e = wk_engine_create(M, &o, emsg, sizeof emsg);
    if (ok(e != NULL, "engine created")) {
        check_brute(e, name);
        if (full) {
            check_fair(e);
            check_beam(e);
            check_refusals(e);
            check_windows();
        }
        wk_engine_free(e);
    }
    ref_free();
    wk_model_free(M);
}

int main(void) {
    const char *root = getenv("CONSORT_ROOT"), *build = getenv("CONSORT_BUILD");
    char path[1024];
    wk_backend_init();
    snprintf(path, sizeof path, "%s/models/external/stories260K.gguf", root ? root : ".");
    run_model(path, "stories260K", 1);
    snprintf(path, sizeof path, "%s/models/external/TinyStories-656K-Q8_0.gguf", root ? root : ".");
    run_model(path, "TinyStories-656K", 0);
    /* a GPT-2 tokenizer (no space prefix), random weights, made by test_wk_engine or here */
    char cmd[4096];
    snprintf(path, sizeof path, "%s/%s/models/tiny-gpt-2.gguf", root ? root : ".", build ? build : "build");
    snprintf(cmd, sizeof cmd, "test -f '%s' || { mkdir -p \"$(dirname '%s')\" && '%s/%s/tools/mkmodel' "
             "'%s/.deps/llama.cpp/models/ggml-vocab-gpt-2.gguf' '%s' 32 2; }",
             path, path, root ? root : ".", build ? build : "build", root ? root : ".", path);
    if (ok(system(cmd) == 0, "the tiny GPT-2 model exists")) run_model(path, "tiny GPT-2 (random weights)", 0);
    wk_backend_free();
    return tap_done();
}
