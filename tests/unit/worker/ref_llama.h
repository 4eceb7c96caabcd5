/* tests/unit/worker/ref_llama.h: the brute-force reference shared by the
 * worker's unit tests (test_wk_engine, test_wk_next_bytes). Contract:
 *   - include it once, in a test's one translation unit (its state is
 *     static: M, the model under test, set by the test before ref_init;
 *     ref, a plain libllama context of one sequence; V and every token's
 *     bytes in pieces/plen, control and unknown tokens empty);
 *   - ref_init(n_ctx) after M is loaded, ref_free() before M is freed;
 *   - ref_dist(toks, n, p): p(. | toks) in double, decoded from scratch
 *     with nothing of the worker's code in the way.
 * Independent of wk_engine on purpose: what the tests compare against. */
#ifndef CONSORT_TESTS_REF_LLAMA_H
#define CONSORT_TESTS_REF_LLAMA_H
#include "worker/wk_model.h"

#include <llama.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static wk_model *M;
static struct llama_context *ref;
static int V;
static unsigned char **pieces;
static size_t *plen;

static void ref_init(int n_ctx) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    ref = llama_init_from_model(M->model, cp);
    V = llama_vocab_n_tokens(M->vocab);
    pieces = calloc((size_t)V, sizeof *pieces);
    plen = calloc((size_t)V, sizeof *plen);
    for (int id = 0; id < V; id++) {
        char buf[256];
        enum llama_token_attr a = llama_vocab_get_attr(M->vocab, id);
        int n = 0;
        if (!(a & (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_UNKNOWN | LLAMA_TOKEN_ATTR_UNUSED)))
            n = llama_token_to_piece(M->vocab, id, buf, sizeof buf, 0, false);
        if (n < 0) n = 0;
        pieces[id] = malloc((size_t)n + 1);
        memcpy(pieces[id], buf, (size_t)n);
        plen[id] = (size_t)n;
    }
}

static void ref_free(void) {
    for (int i = 0; i < V; i++) free(pieces[i]);
    free(pieces);
    free(plen);
    llama_free(ref);
}

/* p(. | toks) in double, decoded from scratch. */
static void ref_dist(const int *toks, int n, double *p) {
    llama_memory_clear(llama_get_memory(ref), true);
    int *t = malloc((size_t)n * sizeof *t);
    memcpy(t, toks, (size_t)n * sizeof *t);
    llama_decode(ref, llama_batch_get_one(t, n));
    free(t);
    const float *lg = llama_get_logits_ith(ref, -1);
    double mx = lg[0], z = 0;
    for (int i = 1; i < V; i++)
        if (lg[i] > mx) mx = lg[i];
    for (int i = 0; i < V; i++) z += exp(lg[i] - mx);
    for (int i = 0; i < V; i++) p[i] = exp(lg[i] - mx) / z;
}

#endif
