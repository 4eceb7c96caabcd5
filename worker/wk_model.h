/* worker/wk_model.h: a GGUF model loaded once with libllama, and its
 * vocabulary as exact byte strings (docs/PROTOCOL.md, /v1/info, /v1/vocab).
 *
 * Contract:
 *  - wk_backend_init() once per process before anything else: loads the CPU
 *    backends (from CONSORT_BACKEND_DIR when the build names one) and
 *    silences llama.cpp's log unless CONSORT_LOG=debug. wk_backend_free() at
 *    the end.
 *  - wk_model_load() checks that the file exists and starts with the GGUF
 *    magic before handing it to llama.cpp, so a bad path gives a clear
 *    message in err; returns NULL on any failure. vocab_only loads only the
 *    tokenizer (for tests over ggml-vocab-*.gguf).
 *  - Token bytes: llama_token_to_piece(lstrip=0, special=false); a
 *    byte-fallback token <0xNN> is that one byte; control, unknown and
 *    unused tokens have empty bytes (they never stand for text). m->va holds
 *    them sorted for prefix masses.
 *  - space_prefix: the tokenizer prepends a space to text at the start of a
 *    sequence (SentencePiece); wk_tokenize_text() removes it again from the
 *    byte accounting, so its spans always tile the text exactly.
 *  - Tokenization is thread-safe (libllama's tokenizer is).
 */
#ifndef CONSORT_WK_MODEL_H
#define CONSORT_WK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "vocab_align/va_vocab.h"

struct llama_model;
struct llama_vocab;

enum wk_kind { WK_NORMAL, WK_CONTROL, WK_BYTE, WK_USER, WK_UNKNOWN, WK_UNUSED };

typedef struct wk_model {
    struct llama_model *model;
    const struct llama_vocab *vocab;
    char *path;
    int n_vocab;
    va_vocab *va;
    unsigned char *kind;   /* enum wk_kind per token */
    unsigned char *is_eog; /* end-of-generation per token */
    int bos, eos, eot;     /* -1 when absent */
    int add_bos;
    int doc_start;         /* BOS if any, else EOS */
    int space_prefix;
    int n_ctx_train;
    const char *vocab_type; /* "spm", "bpe", ... */
    char *chat_template;    /* NULL when the model has none */
    /* SentencePiece guard: llama.cpp throws (aborting the process) on a
     * character that is neither a token nor covered by byte tokens. */
    int spm_guard;
    unsigned char byte_ok[256];
    uint32_t *chars; /* sorted single-character token texts, packed bytes */
    int n_chars;
} wk_model;

void wk_backend_init(void);
void wk_backend_free(void);
wk_model *wk_model_load(const char *path, int vocab_only, char *err, size_t err_size);

/* How to place and hold the weights (consort-worker's --n-gpu-layers,
 * --mlock, --no-mmap); a zeroed struct is llama.cpp's defaults. */
typedef struct wk_model_opts {
    int set_gpu_layers; /* 1: n_gpu_layers below applies */
    int n_gpu_layers;   /* layers offloaded to the GPU; -1 = all */
    int mlock;          /* lock the weights in RAM */
    int no_mmap;        /* read the file instead of mapping it */
} wk_model_opts;
/* wk_model_load with those options (NULL = defaults). */
wk_model *wk_model_load_opts(const char *path, int vocab_only, const wk_model_opts *mo, char *err, size_t err_size);
void wk_model_free(wk_model *m);

const char *wk_kind_name(int kind);

/* Raw llama_tokenize into a malloc'ed array; returns the count or -1
 * (also for text this SentencePiece vocabulary cannot represent, and for
 * text on which llama.cpp throws, e.g. bytes F4 90 80 80 on GPT-2 BPE). */
int wk_tokenize_raw(const wk_model *m, const char *text, size_t len, int add_special,
                    int parse_special, int **out);

/* Tokenize text (no special tokens added or parsed) with byte spans that
 * tile it exactly: spans[2i], spans[2i+1] = [start, end) of token i.
 * Returns the count, or -1 when the tokens do not reproduce the text
 * (a tokenizer that normalizes). *out and *spans are malloc'ed. */
int wk_tokenize_text(const wk_model *m, const char *text, size_t len, int **out, size_t **spans);

/* Canonical tokens of bytes x when they follow the token `anchor` (-1: none)
 * in a sequence: tokenize(bytes(anchor) + x) and keep what follows the
 * anchor's own token when it reproduces it exactly; else the same with a
 * newline as anchor; else greedy longest match over the vocabulary. The
 * returned tokens' bytes always concatenate to x exactly (-1 if impossible:
 * some byte is covered by no token). */
int wk_tokenize_after(const wk_model *m, int anchor, const unsigned char *x, size_t n, int **out);

#endif
