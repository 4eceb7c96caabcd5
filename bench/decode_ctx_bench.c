/* bench/decode_ctx_bench: what one one-token llama_decode costs under the
 * context settings consort-worker uses against those llama-server uses,
 * one setting changed at a time, so that a gap between the worker's decode
 * and llama-server's token (bench/step_profile.sh) can be put on a setting.
 *
 *   decode_ctx_bench --model M.gguf [--threads 4] [--steps 64] [--rounds 5]
 *                    [--slots 4] [--ctx 4096]
 *
 * The worker's context (worker/wk_engine.c): one unified KV cache of
 * ctx x (slots + 1) + 256 cells, slots + 1 + 16 sequences, n_batch =
 * n_ubatch = 256. llama-server's (`-np slots -c 512 x slots`): one stream
 * per slot, 512 cells each, n_batch 2048, n_ubatch 512. Each variant gets a
 * fresh context; each round decodes a 5-token prompt in sequence 0, then
 * times --steps decodes of one token with its logits (read back, as a step
 * does); the variants are interleaved within each round (the same machine
 * load for all), each round starting one variant further on, best of
 * --rounds. The model is loaded once with every
 * layer offloaded (llama.cpp's default), as both servers run it in
 * bench/gpu_bench.sh. Prints ms per decode and the ratio to the worker's
 * settings, and how many decodes reused llama.cpp's previous graph. */
#include "common/clock.h"
#include "worker/wk_model.h"

#include <llama.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    uint32_t n_ctx, n_seq, n_batch, n_ubatch;
    int unified;
} variant;

/* Seconds per one-token decode (best of the rounds done so far kept by the
 * caller), or -1 when a decode fails. */
static double time_steps(struct llama_context *ctx, struct llama_batch *b, int steps) {
    llama_memory_clear(llama_get_memory(ctx), true);
    b->n_tokens = 5;
    for (int p = 0; p < 5; p++) {
        b->token[p] = 100 + p;
        b->pos[p] = p;
        b->n_seq_id[p] = 1;
        b->seq_id[p][0] = 0;
        b->logits[p] = p == 4;
    }
    if (llama_decode(ctx, *b) != 0) return -1;
    double t0 = clock_mono_s();
    for (int s = 0; s < steps; s++) {
        b->n_tokens = 1;
        b->token[0] = 200 + s % 1000;
        b->pos[0] = 5 + s;
        b->logits[0] = 1;
        if (llama_decode(ctx, *b) != 0 || !llama_get_logits_ith(ctx, 0)) return -1;
    }
    return (clock_mono_s() - t0) / steps;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int threads = 4, steps = 64, rounds = 5, slots = 4, ctx_per = 4096;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--slots")) slots = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ctx")) ctx_per = atoi(argv[i + 1]);
    }
    if (!model || steps < 1 || steps > 1000 || rounds < 1 || slots < 1 || slots > 64 || ctx_per < 256) {
        fprintf(stderr, "usage: decode_ctx_bench --model M.gguf [--threads N] [--steps 1-1000] [--rounds N] "
                        "[--slots 1-64] [--ctx N>=256]\n");
        return 2;
    }
    uint32_t wk_cells = (uint32_t)(ctx_per * (slots + 1) + 256), wk_seq = (uint32_t)(slots + 1 + 16);
    uint32_t ls_cells = (uint32_t)(512 * slots), ls_seq = (uint32_t)slots;
    const variant vs[] = {
        {"the worker's", wk_cells, wk_seq, 256, 256, 1},
        {"llama-server's", ls_cells, ls_seq, 2048, 512, 0},
        {"the worker's, llama-server's cells", ls_cells, wk_seq, 256, 256, 1},
        {"the worker's, llama-server's sequences", wk_cells, ls_seq, 256, 256, 1},
        {"the worker's, llama-server's batch sizes", wk_cells, wk_seq, 2048, 512, 1},
        {"the worker's, one stream per sequence", wk_cells, wk_seq, 256, 256, 0},
        {"llama-server's, unified", ls_cells, ls_seq, 2048, 512, 1},
    };
    enum { NV = sizeof vs / sizeof vs[0] };
    wk_backend_init();
    struct llama_model *m = llama_model_load_from_file(model, llama_model_default_params());
    if (!m) {
        fprintf(stderr, "decode_ctx_bench: cannot load %s\n", model);
        return 1;
    }
    double best[NV] = {0};
    int reused[NV] = {0};
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < NV; j++) {
            int k = (j + r) % NV; /* each round starts with another variant: no place in the order is favoured */
            struct llama_context_params cp = llama_context_default_params();
            cp.n_ctx = vs[k].n_ctx;
            cp.n_seq_max = vs[k].n_seq;
            cp.n_batch = vs[k].n_batch;
            cp.n_ubatch = vs[k].n_ubatch;
            cp.kv_unified = vs[k].unified;
            cp.n_threads = cp.n_threads_batch = threads;
            cp.no_perf = true;
            struct llama_context *ctx = llama_init_from_model(m, cp);
            if (!ctx) {
                fprintf(stderr, "decode_ctx_bench: no context for %s\n", vs[k].name);
                return 1;
            }
            struct llama_batch b = llama_batch_init((int32_t)cp.n_batch, 0, 1);
            double s = time_steps(ctx, &b, steps);
            reused[k] = llama_perf_context(ctx).n_reused;
            llama_batch_free(b);
            llama_free(ctx);
            if (s < 0) {
                fprintf(stderr, "decode_ctx_bench: llama_decode failed (%s)\n", vs[k].name);
                return 1;
            }
            if (best[k] == 0 || s < best[k]) best[k] = s;
        }
    printf("model %s, %d thread(s), %d one-token decodes after a 5-token prompt, best of %d rounds; "
           "worker: %d slots x %d tokens\n", model, threads, steps, rounds, slots, ctx_per);
    printf("| context settings | cells | sequences | n_batch / n_ubatch | KV streams | ms per decode | "
           "vs the worker's | graphs reused |\n|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < NV; k++)
        printf("| %s | %u | %u | %u / %u | %s | %.3f | %.3f | %d of %d |\n", vs[k].name, vs[k].n_ctx, vs[k].n_seq,
               vs[k].n_batch, vs[k].n_ubatch, vs[k].unified ? "one" : "one per sequence", best[k] * 1e3,
               best[k] / best[0], reused[k], steps + 1);
    llama_model_free(m);
    wk_backend_free();
    return 0;
}
