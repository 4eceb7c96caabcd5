/* tests/tools/mkmodel: write a tiny random-weight `llama` GGUF model with the
 * tokenizer of a vocab-only GGUF file, for end-to-end tests over real
 * tokenizers without real weights.
 *
 *   mkmodel VOCAB.gguf OUT.gguf [n_embd=32] [n_layer=1] [seed=1] [type=f32]
 *
 * Every key of VOCAB.gguf is copied (tokenizer.*), then the llama
 * hyper-parameters are set; output.weight is left out (tied to
 * token_embd.weight). Weights are deterministic pseudo-random numbers: the
 * same seed draws the same numbers whatever the type. `type` is the storage
 * of the matrices (the norm vectors stay f32): f32, f16 or q8_0 (as real
 * members are stored; q8_0 needs n_embd a multiple of 32). The bench makes
 * decode-bound models with it (bench/mkmodel_big.sh). */
#include <ggml.h>
#include <gguf.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng;
static float rnd(float scale) { /* uniform in [-scale, scale] */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return scale * (2.0f * (float)((rng >> 11) * (1.0 / 9007199254740992.0)) - 1.0f);
}

static enum ggml_type wtype = GGML_TYPE_F32; /* storage of the matrices */

/* Stores n floats drawn in f32 into t's data in t's type. */
static void store(struct ggml_tensor *t, const float *d, int64_t n) {
    if (t->type == GGML_TYPE_F16)
        ggml_fp32_to_fp16_row(d, t->data, n);
    else
        ggml_quantize_chunk(t->type, d, t->data, 0, n / t->ne[0], t->ne[0], NULL);
}

static struct ggml_tensor *add(struct ggml_context *g, struct gguf_context *out, const char *name,
                               int64_t ne0, int64_t ne1, float scale, float fill) {
    enum ggml_type type = ne1 ? wtype : GGML_TYPE_F32;
    struct ggml_tensor *t = ne1 ? ggml_new_tensor_2d(g, type, ne0, ne1) : ggml_new_tensor_1d(g, type, ne0);
    ggml_set_name(t, name);
    int64_t n = ggml_nelements(t);
    float *d = type == GGML_TYPE_F32 ? t->data : malloc((size_t)n * sizeof *d);
    if (!d) {
        fprintf(stderr, "mkmodel: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) d[i] = scale > 0 ? rnd(scale) : fill;
    if (type != GGML_TYPE_F32) {
        store(t, d, n);
        free(d);
    }
    gguf_add_tensor(out, t);
    return t;
}

/* The type named on the command line; GGML_TYPE_COUNT when unknown. */
static enum ggml_type parse_type(const char *s) {
    if (!strcmp(s, "f32")) return GGML_TYPE_F32;
    if (!strcmp(s, "f16")) return GGML_TYPE_F16;
    if (!strcmp(s, "q8_0")) return GGML_TYPE_Q8_0;
    return GGML_TYPE_COUNT;
}

/* general.file_type (llama_ftype) of a model stored in `type`. */
static uint32_t file_type(enum ggml_type type) {
    return type == GGML_TYPE_F16 ? 1 : type == GGML_TYPE_Q8_0 ? 7 : 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: mkmodel VOCAB.gguf OUT.gguf [n_embd=32] [n_layer=1] [seed=1] [type=f32|f16|q8_0]\n");
        return 2;
    }
    wtype = argc > 6 ? parse_type(argv[6]) : GGML_TYPE_F32;
    if (wtype == GGML_TYPE_COUNT) {
        fprintf(stderr, "mkmodel: type must be f32, f16 or q8_0\n");
        return 2;
    }
    int n_embd = argc > 3 ? atoi(argv[3]) : 32;
    int n_layer = argc > 4 ? atoi(argv[4]) : 1;
    rng = 0x2545F4914F6CDD1Dull ^ (uint64_t)(argc > 5 ? atoll(argv[5]) : 1);
    if (n_embd < 8 || n_embd % 4 || n_layer < 1) {
        fprintf(stderr, "mkmodel: n_embd must be a multiple of 4 (>= 8), n_layer >= 1\n");
        return 2;
    }
    if (n_embd % ggml_blck_size(wtype)) {
        fprintf(stderr, "mkmodel: %s needs n_embd a multiple of %lld\n", ggml_type_name(wtype),
                (long long)ggml_blck_size(wtype));
        return 2;
    }
    struct gguf_init_params ip = {.no_alloc = true, .ctx = NULL};
    struct gguf_context *in = gguf_init_from_file(argv[1], ip);
    if (!in) {
        fprintf(stderr, "mkmodel: cannot read %s\n", argv[1]);
        return 1;
    }
    int64_t kt = gguf_find_key(in, "tokenizer.ggml.tokens");
    if (kt < 0) {
        fprintf(stderr, "mkmodel: %s has no tokenizer.ggml.tokens\n", argv[1]);
        gguf_free(in);
        return 1;
    }
    int64_t n_vocab = (int64_t)gguf_get_arr_n(in, kt);
    int n_head = 4, n_ff = 2 * n_embd, hd = n_embd / n_head;

    struct gguf_context *out = gguf_init_empty();
    gguf_set_kv(out, in);
    gguf_free(in);
    gguf_set_val_str(out, "general.architecture", "llama");
    gguf_set_val_str(out, "general.name", "consort-test-tiny");
    gguf_set_val_u32(out, "llama.context_length", 512);
    gguf_set_val_u32(out, "llama.embedding_length", (uint32_t)n_embd);
    gguf_set_val_u32(out, "llama.block_count", (uint32_t)n_layer);
    gguf_set_val_u32(out, "llama.feed_forward_length", (uint32_t)n_ff);
    gguf_set_val_u32(out, "llama.attention.head_count", (uint32_t)n_head);
    gguf_set_val_u32(out, "llama.attention.head_count_kv", (uint32_t)n_head);
    gguf_set_val_u32(out, "llama.rope.dimension_count", (uint32_t)hd);
    gguf_set_val_f32(out, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_set_val_u32(out, "llama.vocab_size", (uint32_t)n_vocab);
    gguf_set_val_u32(out, "general.file_type", file_type(wtype));

    size_t floats = (size_t)n_vocab * n_embd + (size_t)n_embd +
                    (size_t)n_layer * (2 * n_embd + 4 * n_embd * n_embd + 3 * n_embd * n_ff);
    struct ggml_init_params gp = {.mem_size = floats * 4 + (size_t)(16 + 16 * n_layer) * ggml_tensor_overhead() + 4096,
                                  .mem_buffer = NULL, .no_alloc = false};
    struct ggml_context *g = ggml_init(gp);
    add(g, out, "token_embd.weight", n_embd, n_vocab, 0.25f, 0);
    add(g, out, "output_norm.weight", n_embd, 0, 0, 1.0f);
    char name[64];
    for (int l = 0; l < n_layer; l++) {
        float s = 1.0f / sqrtf((float)n_embd);
#define T(suffix, a, b, sc, fill) (snprintf(name, sizeof name, "blk.%d." suffix, l), add(g, out, name, a, b, sc, fill))
        T("attn_norm.weight", n_embd, 0, 0, 1.0f);
        T("attn_q.weight", n_embd, n_embd, s, 0);
        T("attn_k.weight", n_embd, n_embd, s, 0);
        T("attn_v.weight", n_embd, n_embd, s, 0);
        T("attn_output.weight", n_embd, n_embd, s, 0);
        T("ffn_norm.weight", n_embd, 0, 0, 1.0f);
        T("ffn_gate.weight", n_embd, n_ff, s, 0);
        T("ffn_up.weight", n_embd, n_ff, s, 0);
        T("ffn_down.weight", n_ff, n_embd, 1.0f / sqrtf((float)n_ff), 0);
#undef T
    }
    int okw = gguf_write_to_file(out, argv[2], false);
    ggml_free(g);
    gguf_free(out);
    if (!okw) {
        fprintf(stderr, "mkmodel: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}
