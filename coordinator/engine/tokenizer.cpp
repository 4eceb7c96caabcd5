// coordinator/engine/tokenizer.cpp: the local tokenizers of tokenizer.h.
//
// Why C++: libsentencepiece is a C++ library, and libllama throws C++
// exceptions on hostile input; this file is the wall between both and the
// coordinator's C (the same move as worker/wk_llama_safe.cpp: call, catch,
// report). Each public function is one guarded() call of a small function
// per format. State: the loaded vocabulary (a libllama model loaded with
// vocab_only, or a SentencePieceProcessor), read-only after loading, so
// every function is thread-safe. What may change: more formats (a
// tokenizer.json), chosen in tokenizer_load by the file's first bytes.

extern "C" {
#include "common/sbuf.h" // a C header: C linkage for sb_add
}
#include "coordinator/engine/tokenizer.h"

#include <llama.h>
#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include "common/log.h"
}

struct tokenizer {
    llama_model *model = nullptr;            // GGUF: vocabulary only
    const llama_vocab *vocab = nullptr;
    std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;  // SentencePiece
};

namespace {

template <typename F> int guarded(const char *what, F call) {
    try {
        return call();
    } catch (const std::exception &ex) {
        log_debug("tokenizer: %s threw: %s", what, ex.what());
    } catch (...) {
        log_debug("tokenizer: %s threw", what);
    }
    return -1;
}

// libllama logs every key of the GGUF while loading; only its errors matter.
void quiet_llama_log(ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) log_warn("llama.cpp: %s", text);
}

int file_magic_is_gguf(const char *path, char *err, size_t errlen) {
    FILE *f = std::fopen(path, "rb");
    if (!f) {
        std::snprintf(err, errlen, "cannot read tokenizer %s: %s", path, std::strerror(errno));
        return -1;
    }
    char m[4] = {0};
    size_t got = std::fread(m, 1, 4, f);
    std::fclose(f);
    return got == 4 && !std::memcmp(m, "GGUF", 4) ? 1 : 0;
}

int load_gguf(tokenizer *t, const char *path, char *err, size_t errlen) {
    llama_log_set(quiet_llama_log, nullptr);
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    t->model = llama_model_load_from_file(path, mp);
    if (!t->model) {
        std::snprintf(err, errlen, "tokenizer %s: llama.cpp could not load its vocabulary", path);
        return -1;
    }
    t->vocab = llama_model_get_vocab(t->model);
    return 0;
}

int load_spm(tokenizer *t, const char *path, char *err, size_t errlen) {
    t->sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    auto st = t->sp->Load(std::string(path));
    if (!st.ok()) {
        std::snprintf(err, errlen, "tokenizer %s is neither a GGUF file nor a SentencePiece model (%s)", path,
                      st.ToString().c_str());
        return -1;
    }
    return 0;
}

// SentencePiece's piece for id as bytes: "▁" is a space, <0xNN> the byte.
std::string spm_piece(const tokenizer *t, int id, int special) {
    const auto &sp = *t->sp;
    if (sp.IsControl(id) || sp.IsUnknown(id)) return special ? sp.IdToPiece(id) : std::string();
    const std::string &p = sp.IdToPiece(id);
    if (sp.IsByte(id) && p.size() == 6) return std::string(1, (char)std::strtol(p.substr(3, 2).c_str(), nullptr, 16));
    std::string out;
    for (size_t k = 0; k < p.size();) {
        if (!p.compare(k, 3, "\xe2\x96\x81")) {
            out += ' ';
            k += 3;
        } else {
            out += p[k++];
        }
    }
    return out;
}

int encode_gguf(const tokenizer *t, const char *text, size_t n, int add_special, int parse_special, int **ids) {
    int cap = (int)n + 8;
    std::vector<llama_token> v((size_t)cap);
    int k = llama_tokenize(t->vocab, text, (int32_t)n, v.data(), cap, add_special, parse_special);
    if (k < 0 && k != INT32_MIN) {
        v.resize((size_t)-k);
        k = llama_tokenize(t->vocab, text, (int32_t)n, v.data(), -k, add_special, parse_special);
    }
    if (k < 0) return -1;
    *ids = (int *)std::malloc(((size_t)k + 1) * sizeof **ids);
    if (!*ids) return -1;
    for (int j = 0; j < k; j++) (*ids)[j] = v[(size_t)j];
    return k;
}

int encode_spm(const tokenizer *t, const char *text, size_t n, int add_special, int **ids) {
    std::vector<int> v;
    if (!t->sp->Encode(std::string(text, n), &v).ok()) return -1;
    int bos = add_special ? t->sp->bos_id() : -1;
    size_t k = v.size() + (bos >= 0);
    *ids = (int *)std::malloc((k + 1) * sizeof **ids);
    if (!*ids) return -1;
    size_t j = 0;
    if (bos >= 0) (*ids)[j++] = bos;
    for (int id : v) (*ids)[j++] = id;
    return (int)k;
}

int piece_gguf(const tokenizer *t, int id, int special, sbuf *out) {
    char buf[256];
    int k = llama_token_to_piece(t->vocab, id, buf, sizeof buf, 0, special);
    if (k < 0) {
        std::vector<char> big((size_t)-k);
        k = llama_token_to_piece(t->vocab, id, big.data(), -k, 0, special);
        return k < 0 ? -1 : sb_add(out, big.data(), (size_t)k);
    }
    return sb_add(out, buf, (size_t)k);
}

int decode_gguf(const tokenizer *t, const int *ids, size_t n, sbuf *out) {
    std::vector<llama_token> v(ids, ids + n);
    if (!v.empty() && v[0] == llama_vocab_bos(t->vocab)) v.erase(v.begin());
    std::vector<char> buf(v.size() * 16 + 16);
    int k = llama_detokenize(t->vocab, v.data(), (int32_t)v.size(), buf.data(), (int32_t)buf.size(), false, true);
    if (k < 0) {
        buf.resize((size_t)-k);
        k = llama_detokenize(t->vocab, v.data(), (int32_t)v.size(), buf.data(), (int32_t)buf.size(), false, true);
    }
    return k < 0 ? -1 : sb_add(out, buf.data(), (size_t)k);
}

int decode_spm(const tokenizer *t, const int *ids, size_t n, sbuf *out) {
    std::vector<int> v(ids, ids + n);
    if (!v.empty() && v[0] == t->sp->bos_id()) v.erase(v.begin());
    std::string s = t->sp->DecodeIds(v);
    return sb_add(out, s.data(), s.size());
}

int chat_render(const tokenizer *t, const char *const *roles, const char *const *contents, size_t n, sbuf *out) {
    const char *tmpl = t->model ? llama_model_chat_template(t->model, nullptr) : nullptr;
    std::vector<llama_chat_message> msgs(n);
    size_t total = 64;
    for (size_t j = 0; j < n; j++) {
        msgs[j] = {roles[j], contents[j]};
        total += std::strlen(roles[j]) + std::strlen(contents[j]) + 64;
    }
    std::vector<char> buf(total * 2);
    int k = llama_chat_apply_template(tmpl ? tmpl : "chatml", msgs.data(), n, true, buf.data(), (int32_t)buf.size());
    if (k > (int)buf.size()) {
        buf.resize((size_t)k);
        k = llama_chat_apply_template(tmpl ? tmpl : "chatml", msgs.data(), n, true, buf.data(), (int32_t)buf.size());
    }
    return k < 0 ? -1 : sb_add(out, buf.data(), (size_t)k);
}

} // namespace

extern "C" tokenizer *tokenizer_load(const char *path, char *err, size_t errlen) {
    tokenizer *t = nullptr;
    int rc = guarded("load", [&] {
        int gguf = file_magic_is_gguf(path, err, errlen);
        if (gguf < 0) return -1;
        t = new tokenizer();
        return gguf ? load_gguf(t, path, err, errlen) : load_spm(t, path, err, errlen);
    });
    if (rc) {
        if (t && !err[0]) std::snprintf(err, errlen, "tokenizer %s could not be loaded", path);
        tokenizer_free(t);
        return nullptr;
    }
    return t;
}

extern "C" void tokenizer_free(tokenizer *t) {
    if (!t) return;
    if (t->model) llama_model_free(t->model);
    delete t;
}

extern "C" const char *tokenizer_format(const tokenizer *t) { return t->model ? "gguf" : "sentencepiece"; }

extern "C" int tokenizer_n_vocab(const tokenizer *t) {
    return t->model ? llama_vocab_n_tokens(t->vocab) : t->sp->GetPieceSize();
}

extern "C" int tokenizer_bos(const tokenizer *t) {
    int b = t->model ? llama_vocab_bos(t->vocab) : t->sp->bos_id();
    return b >= 0 ? b : -1;
}

extern "C" int tokenizer_eos(const tokenizer *t) {
    int e = t->model ? llama_vocab_eos(t->vocab) : t->sp->eos_id();
    return e >= 0 ? e : -1;
}

extern "C" int tokenizer_adds_bos(const tokenizer *t) {
    return t->model ? llama_vocab_get_add_bos(t->vocab) : t->sp->bos_id() >= 0;
}

extern "C" int tokenizer_is_control(const tokenizer *t, int id) {
    if (id < 0 || id >= tokenizer_n_vocab(t)) return 0;
    return t->model ? llama_vocab_is_control(t->vocab, id) : t->sp->IsControl(id);
}

extern "C" int tokenizer_encode(const tokenizer *t, const char *text, size_t n, int add_special, int parse_special,
                                int **ids) {
    *ids = nullptr;
    if (n > (size_t)INT32_MAX / 2) return -1;
    return guarded("encode", [&] {
        return t->model ? encode_gguf(t, text, n, add_special, parse_special, ids) : encode_spm(t, text, n, add_special, ids);
    });
}

extern "C" int tokenizer_piece(const tokenizer *t, int id, int special, sbuf *out) {
    if (id < 0 || id >= tokenizer_n_vocab(t)) return -1;
    return guarded("piece", [&] {
        if (t->model) return piece_gguf(t, id, special, out);
        std::string p = spm_piece(t, id, special);
        return sb_add(out, p.data(), p.size());
    });
}

extern "C" int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, sbuf *out) {
    for (size_t j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= tokenizer_n_vocab(t)) return -1;
    return guarded("decode", [&] { return t->model ? decode_gguf(t, ids, n, out) : decode_spm(t, ids, n, out); });
}

extern "C" int tokenizer_chat(const tokenizer *t, const char *const *roles, const char *const *contents, size_t n,
                              sbuf *out, char *err, size_t errlen) {
    int rc = guarded("chat", [&] { return chat_render(t, roles, contents, n, out); });
    if (rc) std::snprintf(err, errlen, "the chat template could not be applied");
    return rc;
}
