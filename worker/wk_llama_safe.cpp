// worker/wk_llama_safe.cpp: the only C++ of the project, a wall between
// llama.cpp's exceptions and the worker's C (contract: wk_llama_safe.h).
//
// Each wrapper is the same three moves: call, catch, report. Nothing else
// belongs here: the logic that decides what a failed call means (a 400
// `untokenizable`, a 500 `decode_failed`) stays in the C callers, which
// already handle llama.cpp's error returns; a caught exception simply
// becomes one more error return. No state, no allocation of our own.

#include "worker/wk_llama_safe.h"

#include <exception>

extern "C" {
#include "common/log.h"
}

namespace {

// Runs call(); returns 0, or -1 after logging what escaped from llama.cpp.
// The tokenizer throws on hostile bytes that the callers then handle (the
// worker falls back to longest match), so its throws log at debug level: a
// client must not be able to flood the log. Anything else is a warning.
template <typename F> int guarded(const char *what, enum log_level level, F call) {
    try {
        call();
        return 0;
    } catch (const std::exception &ex) {
        log_msg(level, "llama.cpp %s threw: %s", what, ex.what());
    } catch (...) {
        log_msg(level, "llama.cpp %s threw a non-standard exception", what);
    }
    return -1;
}

} // namespace

extern "C" int wk_safe_tokenize(const struct llama_vocab *vocab, const char *text, int32_t text_len,
                                llama_token *tokens, int32_t n_tokens_max, bool add_special, bool parse_special,
                                int32_t *out) {
    return guarded("llama_tokenize", LOG_DEBUG, [&] {
        *out = llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special);
    });
}

extern "C" int wk_safe_token_to_piece(const struct llama_vocab *vocab, llama_token token, char *buf,
                                      int32_t length, int32_t lstrip, bool special, int32_t *out) {
    return guarded("llama_token_to_piece", LOG_WARN,
                   [&] { *out = llama_token_to_piece(vocab, token, buf, length, lstrip, special); });
}

extern "C" int wk_safe_chat_apply_template(const char *tmpl, const struct llama_chat_message *chat, size_t n_msg,
                                           bool add_ass, char *buf, int32_t length, int32_t *out) {
    return guarded("llama_chat_apply_template", LOG_WARN,
                   [&] { *out = llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); });
}

extern "C" int wk_safe_decode(struct llama_context *ctx, struct llama_batch batch, int32_t *out) {
    return guarded("llama_decode", LOG_WARN, [&] { *out = llama_decode(ctx, batch); });
}
