/* tests/tools/mkmodel: write a tiny random-weight `llama` GGUF model with the
 * tokenizer of a vocab-only GGUF file, for end-to-end tests over real
 * tokenizers without real weights.
 *
 *   mkmodel VOCAB.gguf OUT.gguf [n_embd=32] [n_layer=1] [seed=1] [type=f32]
 *           [live=n_layer] [tail=1]
 *
 * Every key of VOCAB.gguf is copied (tokenizer.*), then the llama
 * hyper-parameters are set; output.weight is left out (tied to
 * token_embd.weight). Weights are deterministic pseudo-random numbers: the
 * same seed draws the same numbers whatever the type. `type` is the storage
 * of the matrices (the norm vectors stay f32): f32, f16 or q8_0 (as real
 * members are stored; q8_0 needs n_embd a multiple of 32). The bench makes
 * decode-bound models with it (bench/mkmodel_big.sh).
 *
 * `live` and `tail` make a drafter/target pair that agrees: the layers
 * l >= live have their attn_output.weight and ffn_down.weight (the two
 * matrices that write into the residual stream) multiplied by `tail` after
 * they are drawn. The draws come in the same order whatever the layer count
 * (embeddings, then layer 0, 1, ...), so `mkmodel V D.gguf E K SEED TYPE`
 * (K layers) has exactly the embeddings and the first K layers of `mkmodel V
 * T.gguf E N SEED TYPE K S` (N > K layers, the last N - K scaled by S): with
 * S = 0 the N-layer model computes the K-layer model's function at the cost
 * of N layers, with a small S the two agree on most greedy tokens but not
 * all (bench/mkmodel_pair.sh). Without the two arguments (or with tail 1)
 * the file is byte-identical to one written before they existed. */
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

/* Adds tensor `name` (ne0 x ne1, a vector when ne1 is 0): uniform draws in
 * [-scale, scale] times `mult` when scale > 0, else every element `fill`. */
static struct ggml_tensor *add(struct ggml_context *g, struct gguf_context *out, const char *name,
                               int64_t ne0, int64_t ne1, float scale, float fill, float mult) {
    enum ggml_type type = ne1 ? wtype : GGML_TYPE_F32;
    struct ggml_tensor *t = ne1 ? ggml_new_tensor_2d(g, type, ne0, ne1) : ggml_new_tensor_1d(g, type, ne0);
    ggml_set_name(t, name);
    int64_t n = ggml_nelements(t);
    float *d = type == GGML_TYPE_F32 ? t->data : malloc((size_t)n * sizeof *d);
    if (!d) {
        fprintf(stderr, "mkmodel: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) d[i] = scale > 0 ? rnd(scale) * mult : fill;
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
    if (argc < 3 || argc > 9) {
        fprintf(stderr, "usage: mkmodel VOCAB.gguf OUT.gguf [n_embd=32] [n_layer=1] [seed=1] [type=f32|f16|q8_0] "
                        "[live=n_layer] [tail=1]\n");
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
    int live = n_layer;
    float tail = 1.0f;
    if (argc > 7) {
        char *end;
        long v = strtol(argv[7], &end, 10);
        if (*end || end == argv[7] || v < 0 || v > n_layer) {
            fprintf(stderr, "mkmodel: live must be an integer in [0, n_layer]\n");
            return 2;
        }
        live = (int)v;
    }
    if (argc > 8) {
        char *end;
        tail = strtof(argv[8], &end);
        if (*end || end == argv[8] || !isfinite(tail)) {
            fprintf(stderr, "mkmodel: tail must be a finite number\n");
            return 2;
        }
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
    add(g, out, "token_embd.weight", n_embd, n_vocab, 0.25f, 0, 1.0f);
    add(g, out, "output_norm.weight", n_embd, 0, 0, 1.0f, 1.0f);
    char name[64];
    for (int l = 0; l < n_layer; l++) {
        float s = 1.0f / sqrtf((float)n_embd);
        float out_mult = l >= live ? tail : 1.0f; /* the residual-stream writers of a tail layer */
#define T(suffix, a, b, sc, fill, m) \
    (snprintf(name, sizeof name, "blk.%d." suffix, l), add(g, out, name, a, b, sc, fill, m))
        T("attn_norm.weight", n_embd, 0, 0, 1.0f, 1.0f);
        T("attn_q.weight", n_embd, n_embd, s, 0, 1.0f);
        T("attn_k.weight", n_embd, n_embd, s, 0, 1.0f);
        T("attn_v.weight", n_embd, n_embd, s, 0, 1.0f);
        T("attn_output.weight", n_embd, n_embd, s, 0, out_mult);
        T("ffn_norm.weight", n_embd, 0, 0, 1.0f, 1.0f);
        T("ffn_gate.weight", n_embd, n_ff, s, 0, 1.0f);
        T("ffn_up.weight", n_embd, n_ff, s, 0, 1.0f);
        T("ffn_down.weight", n_ff, n_embd, 1.0f / sqrtf((float)n_ff), 0, out_mult);
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
