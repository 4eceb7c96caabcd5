/* fuzz_tokenize: libFuzzer harness for the worker's step inputs: the bytes
 * of append_b64 and candidates_b64 go through the tokenizer exactly as
 * wk_step sends them (worker/wk_model.c: wk_tokenize_after, the canonical
 * tokenization after an anchor token, which tries wk_tokenize_text and
 * llama_tokenize first), on a GPT-2 BPE model (models/b.gguf) and a
 * SentencePiece model (models/a.gguf), both loaded once in
 * LLVMFuzzerInitialize (vocabulary only: tokenizing needs no weights).
 *
 * Input: byte 0 picks the anchor (-1, or a token id from it and byte 1),
 * the rest is the fragment x. Properties beyond "does not crash" (the
 * crash this harness was written for: bytes F4 90 80 80 made llama.cpp
 * throw through wk_tokenize_raw and abort the worker):
 *  - wk_tokenize_after returns tokens whose bytes concatenate to x exactly,
 *    and succeeds whenever every byte of x is some token's bytes (both
 *    models have all 256);
 *  - wk_tokenize_text returns -1 or spans that tile x, with each token's
 *    bytes equal to its span (a SentencePiece leading space aside);
 *  - wk_tokenize_raw returns -1 or a count with an array.
 * The models are found under $CONSORT_ROOT (default: the current folder).
 */
#include "worker/wk_model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static wk_model *models[2];
static const char *names[2] = {"b.gguf", "a.gguf"};
static unsigned char covered[2][256]; /* byte b is the bytes of some token */

static void fail(int mi, const char *what) {
    fprintf(stderr, "fuzz_tokenize: property violated on %s: %s\n", names[mi], what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *root = getenv("CONSORT_ROOT");
    wk_backend_init();
    for (int i = 0; i < 2; i++) {
        char path[1024], err[256];
        snprintf(path, sizeof path, "%s/models/%s", root ? root : ".", names[i]);
        models[i] = wk_model_load(path, 1, err, sizeof err);
        if (!models[i]) {
            fprintf(stderr, "fuzz_tokenize: %s\n", err);
            exit(1);
        }
        for (int b = 0; b < 256; b++) {
            unsigned char c = (unsigned char)b;
            int lo, hi;
            covered[i][b] = va_exact_range(models[i]->va, &c, 1, &lo, &hi) > 0;
        }
    }
    return 0;
}

static int spells(const wk_model *m, const int *t, int k, const unsigned char *x, size_t n) {
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        if (t[i] < 0 || t[i] >= m->n_vocab) return 0;
        size_t bl;
        const unsigned char *b = va_token_bytes(m->va, t[i], &bl);
        if (off + bl > n || (bl && memcmp(x + off, b, bl) != 0)) return 0;
        off += bl;
    }
    return off == n;
}

static void check_after(int mi, int anchor, const unsigned char *x, size_t n) {
    const wk_model *m = models[mi];
    int all_covered = 1;
    for (size_t i = 0; i < n; i++) all_covered &= covered[mi][x[i]];
    int *t = NULL;
    int k = wk_tokenize_after(m, anchor, x, n, &t);
    if (k >= 0 && !spells(m, t, k, x, n)) fail(mi, "wk_tokenize_after's tokens do not spell the fragment");
    if (k < 0 && all_covered) fail(mi, "wk_tokenize_after failed on bytes every one of which is a token");
    free(t);
}

static void check_text(int mi, const unsigned char *x, size_t n) {
    const wk_model *m = models[mi];
    int *t = NULL;
    size_t *sp = NULL;
    int k = wk_tokenize_text(m, (const char *)x, n, &t, &sp);
    if (k >= 0) {
        size_t pos = 0;
        for (int i = 0; i < k; i++) {
            if (sp[2 * i] != pos || sp[2 * i + 1] < pos || sp[2 * i + 1] > n) fail(mi, "spans that do not tile");
            size_t bl, sl = sp[2 * i + 1] - sp[2 * i];
            const unsigned char *b = va_token_bytes(m->va, t[i], &bl);
            if (i == 0 && m->space_prefix && bl == sl + 1 && b[0] == ' ') b++, bl--;
            if (bl != sl || (bl && memcmp(b, x + pos, bl) != 0)) fail(mi, "a token whose bytes are not its span");
            pos = sp[2 * i + 1];
        }
        if (pos != n) fail(mi, "spans that do not cover the text");
    } else if (k != -1) {
        fail(mi, "wk_tokenize_text returned a negative count other than -1");
    }
    free(t);
    free(sp);
    k = wk_tokenize_raw(m, (const char *)x, n, 0, 0, &t);
    if (k < -1 || (k >= 0 && !t)) fail(mi, "wk_tokenize_raw broke its contract");
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    for (int mi = 0; mi < 2; mi++) {
        const wk_model *m = models[mi];
        int anchor = data[0] < 64 ? -1 : (int)(((unsigned)data[0] << 8 | data[1]) % (unsigned)m->n_vocab);
        check_after(mi, anchor, data + 2, size - 2);
        check_text(mi, data + 2, size - 2);
    }
    return 0;
}
