/* Byte exactness over real tokenizers (vocab-only GGUF files of llama.cpp):
 * token bytes concatenate to the input exactly for adversarial text, the
 * spans tile it, byte-fallback tokens are single bytes, and canonical
 * tokenization after an anchor covers exactly the fragment. */
#include "tests/tap.h"
#include "worker/wk_model.h"

#include <stdlib.h>
#include <string.h>

static const char *texts[] = {
    "Hello world",
    " leading space",
    "  two leading spaces",
    "space before punctuation , . ! ? ;",
    "runs of     spaces   and\ttabs\t\tand\nnewlines\n\n\nand \r\n crlf",
    "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD and \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
    "CJK \xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xA7\xE3\x81\x99",
    "combining e\xCC\x81 a\xCC\x8A n\xCC\x83 and precomposed \xC3\xA9",
    "trailing space ",
    "\n starts with newline",
    "mixed: x=1; y = [2,3]  // comment\n\tindent  \xE2\x80\x94 dash \xE2\x80\x9Cquotes\xE2\x80\x9D",
    "'s 're 've   'll Don't CAN'T",
    "1234567890 3.14159 -42",
    " ",
    "\t",
    "a",
};

static void run(const char *root, const char *file) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/.deps/llama.cpp/models/%s", root, file);
    wk_model *m = wk_model_load(path, 1, err, sizeof err);
    char what[256];
    snprintf(what, sizeof what, "%s loads (vocab only)", file);
    ok(m != NULL, what);
    if (!m) {
        diag("%s", err);
        return;
    }
    int bad = 0, skipped = 0, nt = (int)(sizeof texts / sizeof texts[0]);
    for (int i = 0; i < nt; i++) {
        const char *t = texts[i];
        size_t len = strlen(t);
        int *tok;
        size_t *sp;
        int n = wk_tokenize_text(m, t, len, &tok, &sp);
        if (n < 0) {
            int *raw;
            int k = wk_tokenize_raw(m, t, len, 0, 0, &raw);
            free(raw);
            if (k < 0 && m->spm_guard) { /* this vocabulary cannot represent the text */
                skipped++;
                continue;
            }
            diag("%s: text %d does not round-trip", file, i);
            bad++;
            continue;
        }
        /* concatenated token bytes == text, spans tile it */
        char *cat = malloc(len + 64);
        size_t cl = 0, pos = 0;
        int tile = 1;
        for (int j = 0; j < n; j++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(m->va, tok[j], &bl);
            if (sp[2 * j] != pos) tile = 0;
            size_t want = sp[2 * j + 1] - sp[2 * j];
            if (j == 0 && m->space_prefix && bl == want + 1 && b[0] == ' ') b++, bl--;
            if (bl != want) tile = 0;
            if (cl + bl < len + 64) memcpy(cat + cl, b, bl), cl += bl;
            pos = sp[2 * j + 1];
        }
        if (!(tile && pos == len && cl == len && !memcmp(cat, t, len))) {
            diag("%s: text %d: bytes differ", file, i);
            bad++;
        }
        free(cat);
        /* canonical tokens after an anchor token cover exactly the text */
        if (n > 0) {
            int *ct;
            int k = wk_tokenize_after(m, tok[0], (const unsigned char *)t, len, &ct);
            size_t tot = 0;
            int exact = k >= 0;
            for (int j = 0; j < k && exact; j++) {
                size_t bl;
                const unsigned char *b = va_token_bytes(m->va, ct[j], &bl);
                if (tot + bl > len || memcmp(b, t + tot, bl)) exact = 0;
                tot += bl;
            }
            if (!exact || tot != len) {
                diag("%s: text %d: canonical tokens after an anchor do not cover it", file, i);
                bad++;
            }
            free(ct);
        }
        free(tok);
        free(sp);
    }
    /* partial UTF-8 (G cut inside a character by another member's token) */
    const char *partial[] = {"ab\xF0\x9F", "\xE4\xB8", " x\xC3", "\x80\x80 y", "\xff"};
    int pbad = 0;
    for (int i = 0; i < 5; i++) {
        int *ct;
        size_t len = strlen(partial[i]), tot = 0;
        int k = wk_tokenize_after(m, m->doc_start, (const unsigned char *)partial[i], len, &ct);
        for (int j = 0; j < k; j++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(m->va, ct[j], &bl);
            if (tot + bl > len || memcmp(b, partial[i] + tot, bl)) pbad++;
            tot += bl;
        }
        if (k >= 0) pbad += tot != len;
        else { /* only when some byte has no token of its own (falcon has no 0xFF) */
            int all = 1;
            for (size_t j = 0; j < len; j++) {
                int lo, hi;
                all &= va_exact_range(m->va, partial[i] + j, 1, &lo, &hi) > 0;
            }
            pbad += all;
        }
        free(ct);
    }
    snprintf(what, sizeof what, "%s: partial UTF-8 fragments get tokens covering them exactly", file);
    ok(pbad == 0, what);
    snprintf(what, sizeof what, "%s: token bytes reproduce %d adversarial texts exactly (%d unrepresentable)",
             file, nt - skipped, skipped);
    ok(bad == 0, what);
    int bytes_ok = 1, nbyte = 0;
    for (int id = 0; id < m->n_vocab; id++) {
        if (m->kind[id] != WK_BYTE) continue;
        size_t bl;
        va_token_bytes(m->va, id, &bl);
        bytes_ok &= bl == 1;
        nbyte++;
    }
    snprintf(what, sizeof what, "%s: %d byte-fallback tokens are one byte each", file, nbyte);
    ok(bytes_ok, what);
    int ctl_ok = 1;
    for (int id = 0; id < m->n_vocab; id++) {
        size_t bl;
        va_token_bytes(m->va, id, &bl);
        if (m->kind[id] == WK_CONTROL && bl) ctl_ok = 0;
    }
    snprintf(what, sizeof what, "%s: control tokens have no bytes", file);
    ok(ctl_ok, what);
    wk_model_free(m);
}

int main(void) {
    const char *root = getenv("CONSORT_ROOT");
    if (!root) root = ".";
    wk_backend_init();
    const char *files[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-falcon.gguf",
                           "ggml-vocab-phi-3.gguf", "ggml-vocab-qwen2.gguf", "ggml-vocab-llama-bpe.gguf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) run(root, files[i]);
    wk_backend_free();
    return tap_done();
}
