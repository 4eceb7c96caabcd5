/* coordinator/engine/tokenizer.h: a local tokenizer for members whose server
 * tokenizes nothing for us (openai+ members, docs/MEMBERS.md).
 *
 * The coordinator aligns such a member itself (member_align.h), so it needs
 * the member's tokenizer on its own side: the user names the file with
 * `--tokenizer NAME=PATH`. Two formats:
 *   - a GGUF file (magic "GGUF"): only its vocabulary is loaded, through
 *     libllama's vocab_only (the model's own file works; so does a
 *     vocab-only GGUF); tokenizes exactly as llama.cpp does, knows the
 *     model's chat template;
 *   - a SentencePiece model (`tokenizer.model`, libsentencepiece): the
 *     tokenizer of Llama-2-style models as their trainers ship it; no chat
 *     template (a chat prompt is rendered as ChatML) and no special-token
 *     parsing inside text.
 * The format is chosen from the file's first bytes, not its name.
 *
 *     tokenizer *t = tokenizer_load("models/a.gguf", err, sizeof err);
 *     int *ids;
 *     int n = tokenizer_encode(t, "Hello", 5, 1, 0, &ids);   // BOS, "▁Hello"
 *     sbuf b = {0};
 *     tokenizer_piece(t, ids[1], 0, &b);                      // " Hello"
 *     free(ids); sb_free(&b); tokenizer_free(t);
 *
 * Contract:
 *  - A loaded tokenizer is read-only: every function may be called from
 *    many threads at once.
 *  - Functions return -1 on failure (out of memory, a library error or
 *    exception, an id out of range); nothing throws into C.
 *  - Pieces are bytes: SentencePiece's "▁" is a space and byte tokens
 *    (<0x0A>) their byte, as llama.cpp renders them. With special = 0 a
 *    control token's piece is empty; with special = 1 it is its text.
 */
#ifndef CONSORT_TOKENIZER_H
#define CONSORT_TOKENIZER_H

#include "common/sbuf.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tokenizer tokenizer;

/* Loads path (GGUF or SentencePiece); NULL with err naming the file. */
tokenizer *tokenizer_load(const char *path, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

const char *tokenizer_format(const tokenizer *t); /* "gguf" or "sentencepiece" */
int tokenizer_n_vocab(const tokenizer *t);
int tokenizer_bos(const tokenizer *t);            /* -1 when there is none */
int tokenizer_eos(const tokenizer *t);            /* -1 when there is none */
int tokenizer_adds_bos(const tokenizer *t);       /* 1 if encoding with add_special adds BOS */
int tokenizer_is_control(const tokenizer *t, int id);

/* The tokens of text[0..n) into *ids (malloc'd, the caller frees); BOS
 * first when add_special and the model adds one; parse_special: special
 * tokens written in the text become their ids (GGUF only). Count or -1. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t n, int add_special, int parse_special, int **ids);

/* Appends token id's bytes to out (see the contract for special). 0 or -1. */
int tokenizer_piece(const tokenizer *t, int id, int special, sbuf *out);

/* Appends the text a server takes for ids[0..n): a leading BOS dropped (the
 * server adds its own), control tokens as their text, SentencePiece's
 * leading space removed, so that encoding the text with add_special gives
 * ids back for canonical tokenizations. 0 or -1. */
int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, sbuf *out);

/* Renders a chat with the model's template (ChatML when it has none, as
 * llama-server does), ending with the assistant's turn opened. 0, or -1
 * with err. */
int tokenizer_chat(const tokenizer *t, const char *const *roles, const char *const *contents, size_t n, sbuf *out,
                   char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
