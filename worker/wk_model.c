/* worker/wk_model.c: a GGUF model and its vocabulary as exact bytes
 * (contract: wk_model.h).
 *
 * Why it is shaped so. Everything byte-level in consort rests on one table:
 * each token id's exact bytes (llama_token_to_piece without stripping;
 * byte-fallback tokens as their one byte; control, unknown and unused
 * tokens empty). It is built once at load into m->va (vocab_align's sorted
 * vocabulary), which /v1/vocab publishes and the engine's prefix masses
 * search. The tokenizing functions exist because llama_tokenize alone does
 * not give what the protocol needs: wk_tokenize_text() returns byte spans
 * that tile the text (and refuses a tokenizer that normalizes the text),
 * wk_tokenize_after() the canonical tokenization of a fragment after a
 * given token. A SentencePiece vocabulary without byte fallback makes
 * llama.cpp abort on a character it cannot represent, so the model keeps
 * the single-character tokens (chars, byte_ok) to refuse such text first.
 * Other hostile bytes make llama.cpp throw (a GPT-2 vocabulary on a code
 * point above U+10FFFF): every llama call that sees request bytes goes
 * through worker/wk_llama_safe.cpp, so a throw is just a -1 here.
 *
 * State. A wk_model is immutable after wk_model_load(), so every function
 * here may run on any thread without a lock.
 *
 * What may change: other vocabulary types (WPM, UGM) need only the byte
 * rule above; a tokenizer that normalizes text stays refused by spans.
 */
#include "worker/wk_model.h"
#include "worker/wk_llama_safe.h"
#include "common/log.h"

#include <errno.h>
#include <ggml-backend.h>
#include <llama.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CONSORT_BACKEND_DIR
#define CONSORT_BACKEND_DIR ""
#endif

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

static void debug_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_CONT) {
        fputs(text, stderr);
        return;
    }
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n') n--;
    log_debug("llama: %.*s", (int)n, text);
}

void wk_backend_init(void) {
    const char *e = getenv("CONSORT_LOG");
    int debug = e && !strcmp(e, "debug");
    llama_log_set(debug ? debug_log : quiet_log, NULL);
    const char *dir = CONSORT_BACKEND_DIR;
    if (dir[0]) ggml_backend_load_all_from_path(dir);
    else ggml_backend_load_all();
    llama_backend_init();
}

void wk_backend_free(void) { llama_backend_free(); }

const char *wk_kind_name(int kind) {
    switch (kind) {
    case WK_CONTROL: return "control";
    case WK_BYTE: return "byte";
    case WK_USER: return "user";
    case WK_UNKNOWN: return "unknown";
    case WK_UNUSED: return "unused";
    default: return "normal";
    }
}

static const char *vocab_type_name(enum llama_vocab_type t) {
    switch (t) {
    case LLAMA_VOCAB_TYPE_SPM: return "spm";
    case LLAMA_VOCAB_TYPE_BPE: return "bpe";
    case LLAMA_VOCAB_TYPE_WPM: return "wpm";
    case LLAMA_VOCAB_TYPE_UGM: return "ugm";
    case LLAMA_VOCAB_TYPE_RWKV: return "rwkv";
    case LLAMA_VOCAB_TYPE_NONE: return "none";
    default: return "other";
    }
}

static int check_gguf(const char *path, char *err, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "cannot open model file '%s': %s", path, strerror(errno));
        return -1;
    }
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got != 4 || memcmp(magic, "GGUF", 4) != 0) {
        snprintf(err, n, "'%s' is not a GGUF file (no GGUF magic)", path);
        return -1;
    }
    return 0;
}

static int piece(const struct llama_vocab *vocab, int id, char **buf, int *cap) {
    int32_t n;
    if (wk_safe_token_to_piece(vocab, id, *buf, *cap, 0, false, &n) != 0) return -1;
    if (n < 0) {
        *cap = -n + 16;
        char *b = realloc(*buf, (size_t)*cap);
        if (!b) return -1;
        *buf = b;
        if (wk_safe_token_to_piece(vocab, id, *buf, *cap, 0, false, &n) != 0) return -1;
    }
    return n;
}

static int utf8_len_lead(unsigned char c) {
    static const int lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

static uint32_t pack_char(const unsigned char *s, int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | s[i];
    return v | ((uint32_t)n << 29); /* n in the top bits keeps lengths apart */
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int build_spm_guard(wk_model *m) {
    m->chars = malloc((size_t)m->n_vocab * sizeof *m->chars);
    if (!m->chars) return -1;
    for (int id = 0; id < m->n_vocab; id++) {
        const char *t = llama_vocab_get_text(m->vocab, id);
        if (!t) continue;
        size_t n = strlen(t);
        unsigned v;
        if (n == 6 && sscanf(t, "<0x%2X>", &v) == 1) m->byte_ok[v & 255] = 1;
        if (n >= 1 && n <= 4 && utf8_len_lead((unsigned char)t[0]) == (int)n) {
            m->chars[m->n_chars++] = pack_char((const unsigned char *)t, (int)n);
            if (n == 1) m->byte_ok[(unsigned char)t[0]] = 1;
        }
    }
    qsort(m->chars, (size_t)m->n_chars, sizeof *m->chars, cmp_u32);
    m->spm_guard = 1;
    return 0;
}

/* Would llama.cpp's SentencePiece tokenizer find a token for every character? */
static int spm_representable(const wk_model *m, const char *text, size_t len) {
    static const unsigned char space[3] = {0xE2, 0x96, 0x81};
    for (size_t i = 0; i <= len;) {
        const unsigned char *c;
        int n;
        if (i == len) { /* the prepended space, checked once */
            if (!m->space_prefix) break;
            c = space;
            n = 3;
        } else if (text[i] == ' ') {
            c = space;
            n = 3;
        } else {
            c = (const unsigned char *)text + i;
            n = utf8_len_lead(c[0]);
            if ((size_t)n > len - i) n = (int)(len - i);
        }
        uint32_t key = pack_char(c, n);
        if (!bsearch(&key, m->chars, (size_t)m->n_chars, sizeof key, cmp_u32)) {
            for (int j = 0; j < n; j++)
                if (!m->byte_ok[c[j]]) return 0;
        }
        if (i == len) break;
        i += text[i] == ' ' ? 1 : (size_t)n;
    }
    return 1;
}

wk_model *wk_model_load(const char *path, int vocab_only, char *err, size_t err_size) {
    return wk_model_load_opts(path, vocab_only, NULL, err, err_size);
}

wk_model *wk_model_load_opts(const char *path, int vocab_only, const wk_model_opts *mo, char *err, size_t err_size) {
    char dummy[8];
    if (!err) {
        err = dummy;
        err_size = sizeof dummy;
    }
    if (!path || !*path) {
        snprintf(err, err_size, "no model file given");
        return NULL;
    }
    if (check_gguf(path, err, err_size) != 0) return NULL;
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = vocab_only != 0;
    if (mo && mo->set_gpu_layers) mp.n_gpu_layers = mo->n_gpu_layers;
    if (mo && (mo->mlock || mo->no_mmap)) /* this llama.cpp spells both as one load mode */
        mp.load_mode = mo->no_mmap ? (mo->mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE)
                                   : LLAMA_LOAD_MODE_MMAP_MLOCK;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        snprintf(err, err_size, "llama.cpp could not load '%s' (unsupported or corrupt GGUF)", path);
        return NULL;
    }
    wk_model *m = calloc(1, sizeof *m);
    if (!m) {
        llama_model_free(model);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    m->model = model;
    m->vocab = llama_model_get_vocab(model);
    m->path = strdup(path);
    m->n_vocab = llama_vocab_n_tokens(m->vocab);
    m->va = va_vocab_create(m->n_vocab);
    m->kind = calloc((size_t)m->n_vocab, 1);
    m->is_eog = calloc((size_t)m->n_vocab, 1);
    char *buf = malloc(64);
    int cap = 64;
    if (!m->path || !m->va || !m->kind || !m->is_eog || !buf) goto oom;
    for (int id = 0; id < m->n_vocab; id++) {
        enum llama_token_attr a = llama_vocab_get_attr(m->vocab, id);
        int kind = (a & LLAMA_TOKEN_ATTR_CONTROL) ? WK_CONTROL
                 : (a & LLAMA_TOKEN_ATTR_BYTE) ? WK_BYTE
                 : (a & LLAMA_TOKEN_ATTR_USER_DEFINED) ? WK_USER
                 : (a & LLAMA_TOKEN_ATTR_UNKNOWN) ? WK_UNKNOWN
                 : (a & LLAMA_TOKEN_ATTR_UNUSED) ? WK_UNUSED : WK_NORMAL;
        m->kind[id] = (unsigned char)kind;
        m->is_eog[id] = llama_vocab_is_eog(m->vocab, id);
        int n = 0;
        if (kind == WK_NORMAL || kind == WK_USER || kind == WK_BYTE) {
            n = piece(m->vocab, id, &buf, &cap);
            if (n < 0) goto oom;
            if (kind == WK_BYTE && n != 1) { /* render <0xNN> ourselves */
                const char *t = llama_vocab_get_text(m->vocab, id);
                unsigned v;
                if (t && sscanf(t, "<0x%2X>", &v) == 1) {
                    buf[0] = (char)v;
                    n = 1;
                }
            }
        }
        if (va_vocab_set(m->va, id, buf, (size_t)n) != 0) goto oom;
    }
    if (va_vocab_finalize(m->va) != 0) goto oom;
    free(buf);
    buf = NULL;
    int t = llama_vocab_bos(m->vocab);
    m->bos = t == LLAMA_TOKEN_NULL ? -1 : t;
    t = llama_vocab_eos(m->vocab);
    m->eos = t == LLAMA_TOKEN_NULL ? -1 : t;
    t = llama_vocab_eot(m->vocab);
    m->eot = t == LLAMA_TOKEN_NULL ? -1 : t;
    m->add_bos = llama_vocab_get_add_bos(m->vocab) && m->bos >= 0;
    m->doc_start = m->bos >= 0 ? m->bos : m->eos >= 0 ? m->eos : 0;
    m->n_ctx_train = vocab_only ? 0 : llama_model_n_ctx_train(model);
    m->vocab_type = vocab_type_name(llama_vocab_type(m->vocab));
    if (llama_vocab_type(m->vocab) == LLAMA_VOCAB_TYPE_SPM && build_spm_guard(m) != 0) goto oom;
    const char *tmpl = llama_model_chat_template(model, NULL);
    if (tmpl && *tmpl) m->chat_template = strdup(tmpl);
    /* Does the tokenizer put a space before text at the start of a sequence? */
    int *toks = NULL;
    int nt = wk_tokenize_raw(m, "a", 1, 0, 0, &toks);
    if (nt > 0) {
        size_t len;
        const unsigned char *b = va_token_bytes(m->va, toks[0], &len);
        m->space_prefix = len >= 2 && b[0] == ' ' && b[1] == 'a';
    }
    free(toks);
    return m;
oom:
    free(buf);
    wk_model_free(m);
    snprintf(err, err_size, "out of memory while reading the vocabulary");
    return NULL;
}

void wk_model_free(wk_model *m) {
    if (!m) return;
    if (m->model) llama_model_free(m->model);
    va_vocab_free(m->va);
    free(m->kind);
    free(m->is_eog);
    free(m->path);
    free(m->chat_template);
    free(m->chars);
    free(m);
}

int wk_tokenize_raw(const wk_model *m, const char *text, size_t len, int add_special,
                    int parse_special, int **out) {
    *out = NULL;
    if (len > (size_t)INT32_MAX / 2) return -1;
    if (m->spm_guard && !spm_representable(m, text, len)) return -1;
    int cap = (int)len + 8;
    int *t = malloc((size_t)cap * sizeof *t);
    if (!t) return -1;
    int32_t n;
    if (wk_safe_tokenize(m->vocab, text, (int32_t)len, t, cap, add_special, parse_special, &n) != 0) n = -1;
    else if (n < 0 && n != INT32_MIN) {
        cap = -n;
        int *t2 = realloc(t, (size_t)cap * sizeof *t);
        if (!t2) {
            free(t);
            return -1;
        }
        t = t2;
        if (wk_safe_tokenize(m->vocab, text, (int32_t)len, t, cap, add_special, parse_special, &n) != 0) n = -1;
    }
    if (n < 0) {
        free(t);
        return -1;
    }
    *out = t;
    return n;
}

int wk_tokenize_text(const wk_model *m, const char *text, size_t len, int **out, size_t **spans) {
    *out = NULL;
    *spans = NULL;
    int *t = NULL;
    int n = wk_tokenize_raw(m, text, len, 0, 0, &t);
    if (n < 0) return -1;
    size_t *sp = malloc(((size_t)n * 2 + 1) * sizeof *sp);
    if (!sp) {
        free(t);
        return -1;
    }
    /* Walk the token bytes against " " + text (space_prefix) or text. */
    int skip = m->space_prefix && n > 0; /* one virtual leading byte to drop */
    size_t pos = 0; /* position in the virtual string */
    int okay = 1;
    for (int i = 0; i < n && okay; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(m->va, t[i], &bl);
        for (size_t j = 0; j < bl; j++) {
            size_t vpos = pos + j;
            unsigned char want;
            if (skip) want = vpos == 0 ? ' ' : (vpos - 1 < len ? (unsigned char)text[vpos - 1] : 0);
            else want = vpos < len ? (unsigned char)text[vpos] : 0;
            if ((skip ? vpos > len : vpos >= len) || b[j] != want) {
                okay = 0;
                break;
            }
        }
        size_t s = pos, e = pos + bl;
        if (skip) {
            s = s ? s - 1 : 0;
            e = e ? e - 1 : 0;
        }
        sp[2 * i] = s;
        sp[2 * i + 1] = e;
        pos += bl;
    }
    if (okay && pos != len + (size_t)skip) okay = 0;
    if (!okay) {
        free(t);
        free(sp);
        return -1;
    }
    *out = t;
    *spans = sp;
    return n;
}

static int greedy(const wk_model *m, const unsigned char *x, size_t n, int **out) {
    int *t = malloc((n + 1) * sizeof *t);
    if (!t) return -1;
    int k = 0;
    size_t pos = 0, maxl = va_max_token_len(m->va);
    while (pos < n) {
        size_t L = n - pos < maxl ? n - pos : maxl;
        int found = -1;
        for (; L > 0; L--) {
            int lo, hi;
            if (va_exact_range(m->va, x + pos, L, &lo, &hi) > 0) {
                found = va_sorted_id(m->va, lo);
                break;
            }
        }
        if (found < 0) {
            free(t);
            return -1;
        }
        t[k++] = found;
        pos += L;
    }
    *out = t;
    return k;
}

/* Tokenize anchor + x; if the first tokens cover exactly the anchor, the rest is x's. */
static int anchored(const wk_model *m, const unsigned char *a, size_t an,
                    const unsigned char *x, size_t n, int **out) {
    char *text = malloc(an + n + 1);
    if (!text) return -1;
    memcpy(text, a, an);
    if (n) memcpy(text + an, x, n);
    int *t;
    size_t *sp;
    int k = wk_tokenize_text(m, text, an + n, &t, &sp);
    free(text);
    if (k < 0) return -1;
    /* find the token index after which the anchor ends exactly */
    int cut = -1;
    for (int i = 0; i < k; i++) {
        if (sp[2 * i + 1] == an) cut = i + 1;
        if (sp[2 * i + 1] > an) break;
    }
    if (an == 0) cut = 0;
    /* the tokens after the cut must start at the anchor's end */
    if (cut < 0 || (cut < k && sp[2 * cut] != an)) {
        free(t);
        free(sp);
        return -1;
    }
    int r = k - cut;
    memmove(t, t + cut, (size_t)r * sizeof *t);
    free(sp);
    *out = t;
    return r;
}

int wk_tokenize_after(const wk_model *m, int anchor, const unsigned char *x, size_t n, int **out) {
    *out = NULL;
    if (n == 0) {
        *out = malloc(sizeof(int));
        return *out ? 0 : -1;
    }
    size_t al = 0;
    const unsigned char *ab = anchor >= 0 ? va_token_bytes(m->va, anchor, &al) : NULL;
    int k = -1;
    if (ab && al) k = anchored(m, ab, al, x, n, out);
    if (k < 0) k = anchored(m, (const unsigned char *)"\n", 1, x, n, out);
    if (k < 0) k = greedy(m, x, n, out);
    return k;
}
