/* bench/decode_batch_bench: what one llama_decode costs by the number of
 * sessions it carries, on the worker's kind of context, so that the
 * concurrency benchmarks can be read (batching pays only where a decode of
 * B sessions costs less than B decodes of one).
 *
 *   decode_batch_bench --model M.gguf [--threads 1] [--steps 16] [--rounds 3]
 *                      [--batches "1 2 4 8 16"]
 *
 * The context is configured as consort-worker's (one unified KV cache,
 * 1024 cells per sequence, as many sequences as the largest batch + 1).
 * For each batch size B: clear the cache, decode an 8-token prompt in each
 * of B sequences, then time --steps decodes of B tokens (one new position
 * in each sequence, logits wanted for every row, as a worker's step asks).
 * The batch sizes are interleaved within each round (the same machine load
 * for all); best of --rounds. Prints ms per decode, tokens/s, and the cost
 * of a decode of B relative to B decodes of one. */
#include "common/clock.h"
#include "worker/wk_model.h"

#include <llama.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_B 64

/* Seconds per decode of B one-token rows, after an 8-token prompt in each
 * of the B sequences. */
static double time_batch(struct llama_context *ctx, struct llama_batch *b, int B, int steps) {
    llama_memory_clear(llama_get_memory(ctx), true);
    b->n_tokens = 0;
    for (int s = 0; s < B; s++)
        for (int p = 0; p < 8; p++) {
            int i = b->n_tokens++;
            b->token[i] = 100 + p;
            b->pos[i] = p;
            b->n_seq_id[i] = 1;
            b->seq_id[i][0] = s;
            b->logits[i] = p == 7;
        }
    if (llama_decode(ctx, *b) != 0) return -1;
    double t0 = clock_mono_s();
    for (int st = 0; st < steps; st++) {
        b->n_tokens = 0;
        for (int s = 0; s < B; s++) {
            int i = b->n_tokens++;
            b->token[i] = 200 + st;
            b->pos[i] = 8 + st;
            b->n_seq_id[i] = 1;
            b->seq_id[i][0] = s;
            b->logits[i] = 1;
        }
        if (llama_decode(ctx, *b) != 0) return -1;
    }
    return (clock_mono_s() - t0) / steps;
}

int main(int argc, char **argv) {
    const char *model = NULL, *list = "1 2 4 8 16";
    int threads = 1, steps = 16, rounds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches")) list = argv[i + 1];
    }
    int bs[MAX_B], nb = 0, max_b = 1;
    for (char *p = (char *)list, *end; nb < MAX_B; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v < 1 || v > MAX_B) {
            fprintf(stderr, "decode_batch_bench: batch sizes are 1 to %d\n", MAX_B);
            return 2;
        }
        bs[nb++] = (int)v;
        if (v > max_b) max_b = (int)v;
    }
    if (!model || nb == 0 || steps < 1 || rounds < 1) {
        fprintf(stderr, "usage: decode_batch_bench --model M.gguf [--threads N] [--steps N] [--rounds N] [--batches \"1 2 4\"]\n");
        return 2;
    }
    wk_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(model, mp);
    if (!m) {
        fprintf(stderr, "decode_batch_bench: cannot load %s\n", model);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(1024 * (max_b + 1));
    cp.n_batch = cp.n_ubatch = (uint32_t)(8 * max_b > 256 ? 8 * max_b : 256);
    cp.n_seq_max = (uint32_t)(max_b + 1);
    cp.n_threads = cp.n_threads_batch = threads;
    cp.kv_unified = true;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    struct llama_batch b = llama_batch_init((int32_t)cp.n_batch, 0, 1);
    double best[MAX_B];
    for (int k = 0; k < nb; k++) best[k] = 0;
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < nb; k++) {
            double s = time_batch(ctx, &b, bs[k], steps);
            if (s < 0) {
                fprintf(stderr, "decode_batch_bench: llama_decode failed at batch %d\n", bs[k]);
                return 1;
            }
            if (best[k] == 0 || s < best[k]) best[k] = s;
        }
    printf("model %s, %d thread(s), %d decodes per batch size, best of %d rounds\n", model, threads, steps, rounds);
    printf("| sessions per decode | ms per decode | tokens/s | cost vs that many decodes of one |\n|---|---|---|---|\n");
    double one = 0;
    for (int k = 0; k < nb; k++)
        if (bs[k] == 1) one = best[k];
    for (int k = 0; k < nb; k++) {
        printf("| %d | %.2f | %.1f |", bs[k], best[k] * 1e3, bs[k] / best[k]);
        if (one > 0) printf(" %.2f |\n", best[k] / (bs[k] * one));
        else printf(" - |\n");
    }
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    wk_backend_free();
    return 0;
}
