/* worker/wk_llama_safe.h: the calls into llama.cpp that can throw a C++
 * exception on input, made safe to call from C.
 *
 * Why. libllama is C++ behind a C API, and some of its functions let an
 * exception escape: llama_tokenize throws std::invalid_argument ("invalid
 * codepoint") on a GPT-2 vocabulary for bytes that decode to a code point
 * above U+10FFFF, std::out_of_range for a character a SentencePiece
 * vocabulary cannot represent, and any of them std::bad_alloc. An exception
 * that reaches a C frame terminates the process, so one hostile request
 * would kill the worker. Every input-dependent call goes through here.
 *
 * Contract (each wrapper): runs the llama.cpp function of the same name
 * with the same arguments inside try/catch. Returns 0 and stores the
 * function's own result in *out when it returned normally; returns -1 (and
 * logs the exception's message: at debug level for the tokenizer, whose
 * throws hostile bytes trigger at will, else as a warning) when it threw,
 * in which case *out is untouched and any output buffer holds unspecified
 * bytes. Safe on any thread where the wrapped function is.
 */
#ifndef CONSORT_WK_LLAMA_SAFE_H
#define CONSORT_WK_LLAMA_SAFE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llama.h>

#ifdef __cplusplus
extern "C" {
#endif

int wk_safe_tokenize(const struct llama_vocab *vocab, const char *text, int32_t text_len, llama_token *tokens,
                     int32_t n_tokens_max, bool add_special, bool parse_special, int32_t *out);

int wk_safe_token_to_piece(const struct llama_vocab *vocab, llama_token token, char *buf, int32_t length,
                           int32_t lstrip, bool special, int32_t *out);

int wk_safe_chat_apply_template(const char *tmpl, const struct llama_chat_message *chat, size_t n_msg,
                                bool add_ass, char *buf, int32_t length, int32_t *out);

int wk_safe_decode(struct llama_context *ctx, struct llama_batch batch, int32_t *out);

#ifdef __cplusplus
}
#endif

#endif
