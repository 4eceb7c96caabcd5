/* tests/unit/engine/test_tokenizer.c: the local tokenizers of openai+
 * members (coordinator/engine/tokenizer.h).
 *
 * GGUF: the project's models (a: Llama-2 SentencePiece vocabulary, b: GPT-2
 * BPE) loaded vocabulary-only: pieces spell the text (a space prefix for
 * SentencePiece), decode inverts encode, BOS and control tokens, chat.
 * SentencePiece: no tokenizer.model ships with the project, so the test
 * writes a tiny one (the protobuf by hand: a few pieces, byte fallback) and
 * checks what the shim adds on top of libsentencepiece: "▁" read as a
 * space, byte tokens read as their byte, BOS, decode. Bad files: clear
 * errors. */
#include "coordinator/engine/tokenizer.h"

#include "tests/tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#ifndef MODEL_DIR
#define MODEL_DIR "models"
#endif

static int spells(const tokenizer *t, const char *text, int expect_space) {
    int *ids;
    int k = tokenizer_encode(t, text, strlen(text), 0, 0, &ids);
    if (k <= 0) return 0;
    sbuf b = {0};
    for (int j = 0; j < k; j++) tokenizer_piece(t, ids[j], 0, &b);
    sbuf d = {0};
    tokenizer_decode(t, ids, (size_t)k, &d);
    int good = b.n == strlen(text) + (size_t)expect_space && !memcmp(b.p + expect_space, text, strlen(text)) &&
               (!expect_space || b.p[0] == ' ') && d.n == strlen(text) && !memcmp(d.p, text, d.n);
    free(ids);
    sb_free(&b);
    sb_free(&d);
    return good;
}

static void test_gguf_spm_vocab(void) {
    char err[300] = "";
    tokenizer *t = tokenizer_load(MODEL_DIR "/a.gguf", err, sizeof err);
    ok(t != NULL, "a.gguf loads as a tokenizer");
    if (!t) {
        diag("%s", err);
        return;
    }
    is_str(tokenizer_format(t), "gguf", "format gguf");
    is_int(tokenizer_n_vocab(t), 32000, "Llama-2 vocabulary: 32000 tokens");
    is_int(tokenizer_bos(t), 1, "BOS is <s> (1)");
    ok(tokenizer_adds_bos(t), "adds BOS");
    ok(tokenizer_is_control(t, 1) && !tokenizer_is_control(t, 450), "<s> is a control token, 450 is not");
    ok(spells(t, "The old man said that", 1), "pieces spell ' ' + the text; decode gives the text back");
    ok(spells(t, "naïve café, 10\n  x", 1), "and for accents, digits, a newline and spaces");
    int *ids;
    int k = tokenizer_encode(t, "Hi", 2, 1, 0, &ids);
    ok(k >= 2 && ids[0] == 1, "add_special puts BOS first");
    sbuf d = {0};
    tokenizer_decode(t, ids, (size_t)k, &d);
    ok(d.n == 2 && !memcmp(d.p, "Hi", 2), "decode drops the leading BOS");
    free(ids);
    sb_free(&d);
    sbuf p = {0};
    tokenizer_piece(t, 1, 0, &p);
    is_int(p.n, 0, "a control token's piece is empty without special");
    tokenizer_piece(t, 1, 1, &p);
    ok(p.n == 3 && !memcmp(p.p, "<s>", 3), "and its text with special");
    sb_free(&p);
    ok(tokenizer_piece(t, 32000, 0, &p) == -1 && tokenizer_piece(t, -1, 0, &p) == -1, "ids out of range: -1");
    const char *roles[] = {"user"}, *contents[] = {"Tell me a story."};
    sbuf chat = {0};
    ok(tokenizer_chat(t, roles, contents, 1, &chat, err, sizeof err) == 0 && chat.p &&
           strstr(chat.p, "Tell me a story.") && strstr(chat.p, "assistant"),
       "a chat renders with the message and the assistant's turn opened");
    sb_free(&chat);
    tokenizer_free(t);
}

static void test_gguf_bpe_vocab(void) {
    char err[300] = "";
    tokenizer *t = tokenizer_load(MODEL_DIR "/b.gguf", err, sizeof err);
    ok(t != NULL, "b.gguf loads");
    if (!t) return;
    is_int(tokenizer_n_vocab(t), 50257, "GPT-2 vocabulary: 50257 tokens");
    ok(spells(t, "The old man said that", 0), "GPT-2 pieces spell the text exactly (no space prefix)");
    ok(spells(t, "émigré\tdone", 0), "and bytes beyond ASCII");
    tokenizer_free(t);
}

/* ---- a hand-written SentencePiece model ----------------------------------------- */

static void pb_varint(sbuf *b, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        sb_add(b, &c, 1);
    } while (v);
}
static void pb_tag(sbuf *b, int field, int wire) { pb_varint(b, (uint64_t)(field << 3 | wire)); }
static void pb_bytes(sbuf *b, int field, const void *p, size_t n) {
    pb_tag(b, field, 2);
    pb_varint(b, n);
    sb_add(b, p, n);
}
static void pb_int(sbuf *b, int field, uint64_t v) {
    pb_tag(b, field, 0);
    pb_varint(b, v);
}
static void pb_piece(sbuf *m, const char *s, float score, int type) {
    sbuf p = {0};
    pb_bytes(&p, 1, s, strlen(s));
    pb_tag(&p, 2, 5);
    sb_add(&p, &score, 4); /* little-endian float (x86, arm) */
    pb_int(&p, 3, (uint64_t)type);
    pb_bytes(m, 1, p.p, p.n);
    sb_free(&p);
}

/* Pieces: <unk> <s> </s>, 256 byte pieces, then ▁ a b ▁a ▁ab (unigram). */
static int write_spm_model(const char *path) {
    sbuf m = {0};
    pb_piece(&m, "<unk>", 0, 2);
    pb_piece(&m, "<s>", 0, 3);
    pb_piece(&m, "</s>", 0, 3);
    for (int c = 0; c < 256; c++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", c);
        pb_piece(&m, s, 0, 6);
    }
    pb_piece(&m, "\xe2\x96\x81", -2, 1);
    pb_piece(&m, "a", -3, 1);
    pb_piece(&m, "b", -3, 1);
    pb_piece(&m, "\xe2\x96\x81" "a", -1, 1);
    pb_piece(&m, "\xe2\x96\x81" "ab", -1, 1);
    sbuf ts = {0}; /* trainer_spec: unigram, byte fallback, unk 0, bos 1, eos 2, pad -1 */
    pb_int(&ts, 3, 1);
    pb_int(&ts, 35, 1);
    pb_int(&ts, 40, 0);
    pb_int(&ts, 41, 1);
    pb_int(&ts, 42, 2);
    pb_int(&ts, 43, (uint64_t)-1);
    pb_bytes(&m, 2, ts.p, ts.n);
    sbuf ns = {0}; /* normalizer_spec: identity, dummy prefix, keep spaces, escape them */
    pb_bytes(&ns, 1, "identity", 8);
    pb_int(&ns, 3, 1);
    pb_int(&ns, 4, 0);
    pb_int(&ns, 5, 1);
    pb_bytes(&m, 3, ns.p, ns.n);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(m.p, 1, m.n, f) == m.n ? 0 : -1;
    if (f) fclose(f);
    sb_free(&m);
    sb_free(&ts);
    sb_free(&ns);
    return rc;
}

static void test_sentencepiece(void) {
    char path[] = "/tmp/consort_spm_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    ok(fd >= 0 && write_spm_model(path) == 0, "a SentencePiece model file is written");
    char err[300] = "";
    tokenizer *t = tokenizer_load(path, err, sizeof err);
    ok(t != NULL, "it loads through libsentencepiece");
    if (!t) {
        diag("%s", err);
        unlink(path);
        return;
    }
    is_str(tokenizer_format(t), "sentencepiece", "format sentencepiece");
    is_int(tokenizer_n_vocab(t), 3 + 256 + 5, "all pieces counted");
    is_int(tokenizer_bos(t), 1, "BOS from the trainer spec");
    int *ids;
    int k = tokenizer_encode(t, "ab a\n", 5, 1, 0, &ids);
    int want[] = {1, 263, 262, 3 + 0x0A};
    ok(k == 4 && !memcmp(ids, want, sizeof want), "encode: BOS, ▁ab, ▁a, the byte 0x0A");
    sbuf b = {0};
    for (int j = 1; j < k; j++) tokenizer_piece(t, ids[j], 0, &b);
    ok(b.n == 6 && !memcmp(b.p, " ab a\n", 6), "pieces: ▁ as a space, <0x0A> as a newline");
    sbuf d = {0};
    tokenizer_decode(t, ids, (size_t)k, &d);
    ok(d.n == 5 && !memcmp(d.p, "ab a\n", 5), "decode: BOS dropped, no leading space");
    if (k > 0) free(ids);
    sb_free(&b);
    sb_free(&d);
    tokenizer_piece(t, 2, 1, &b);
    ok(b.n == 4 && !memcmp(b.p, "</s>", 4), "a control token's text with special");
    sb_free(&b);
    tokenizer_free(t);
    unlink(path);
}

static void test_bad_files(void) {
    char err[300] = "";
    ok(!tokenizer_load("/nonexistent/tok.model", err, sizeof err) && strstr(err, "cannot read"),
       "a missing file: 'cannot read'");
    char path[] = "/tmp/consort_junk_XXXXXX";
    int fd = mkstemp(path);
    ok(fd >= 0 && write(fd, "junk junk junk", 14) == 14, "a junk file");
    if (fd >= 0) close(fd);
    err[0] = 0;
    ok(!tokenizer_load(path, err, sizeof err) && strstr(err, "neither a GGUF file nor a SentencePiece model"),
       "junk: neither GGUF nor SentencePiece");
    fd = open(path, O_WRONLY | O_TRUNC);
    ok(fd >= 0 && write(fd, "GGUF\x03\0\0\0", 8) == 8, "a truncated GGUF");
    if (fd >= 0) close(fd);
    err[0] = 0;
    ok(!tokenizer_load(path, err, sizeof err) && strstr(err, "could not load"), "truncated GGUF: an error");
    unlink(path);
}

int main(void) {
    test_gguf_spm_vocab();
    test_gguf_bpe_vocab();
    test_sentencepiece();
    test_bad_files();
    return tap_done();
}
