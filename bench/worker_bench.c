/* bench/worker_bench: greedy tokens/s through consort-worker's /v1/step over
 * loopback vs a direct in-process libllama greedy loop, side by side in one
 * run on the same model, threads and prompt.
 *
 *   worker_bench --model M.gguf [--worker build/consort-worker] [--tokens 64]
 *                [--threads 1] [--prompt TEXT] [--rounds 3]
 *
 * Direct loop: decode the prompt, then per token: argmax over the logits,
 * decode that one token (what a minimal llama.cpp greedy generator does).
 * Worker: one HTTP keep-alive connection (libcurl); per token one /v1/step
 * with k=1 that appends the previous top string (the worker decodes one
 * token, computes the full softmax and prefix masses, answers JSON).
 * Timing excludes the prompt on both sides. Best of --rounds for each. */
#include "common/clock.h"
#include "common/sbuf.h"
#include "protocol/proto.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

#include <curl/curl.h>
#include <jansson.h>
#include <llama.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double direct(struct llama_model *model, int threads, const char *prompt, int n_tok, char *text, size_t cap) {
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int toks[1024];
    int n = llama_tokenize(vocab, prompt, (int)strlen(prompt), toks, 1024, true, false);
    llama_decode(ctx, llama_batch_get_one(toks, n));
    int nv = llama_vocab_n_tokens(vocab);
    size_t tl = 0;
    double t0 = clock_mono_s();
    for (int i = 0; i < n_tok; i++) {
        const float *lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < nv; v++)
            if (lg[v] > lg[best]) best = v;
        char buf[256];
        int k = llama_token_to_piece(vocab, best, buf, sizeof buf, 0, false);
        if (k > 0 && tl + (size_t)k < cap) memcpy(text + tl, buf, (size_t)k), tl += (size_t)k;
        llama_decode(ctx, llama_batch_get_one(&best, 1));
    }
    double dt = clock_mono_s() - t0;
    text[tl] = 0;
    llama_free(ctx);
    return n_tok / dt;
}

/* The worker's engine in-process (no HTTP): what /v1/step costs beyond the decode. */
static double engine(const char *path, int threads, const char *prompt, int n_tok) {
    static wk_model *wm;
    static wk_engine *we;
    static int round;
    if (!path) { /* cleanup */
        wk_engine_free(we);
        wk_model_free(wm);
        return 0;
    }
    if (!wm) {
        wm = wk_model_load(path, 0, NULL, 0);
        wk_engine_opts o = {.n_ctx = 1024, .n_threads = threads, .slots = 4};
        we = wm ? wk_engine_create(wm, &o, NULL, 0) : NULL;
        if (!we) return 0;
    }
    char sid[32];
    snprintf(sid, sizeof sid, "e%d", round++);
    wk_step_req q = {.session = sid, .prompt = prompt, .prompt_len = strlen(prompt), .k = 1};
    wk_step_res res;
    wk_err err;
    if (wk_step(we, &q, &res, &err)) return 0;
    double t0 = clock_mono_s();
    for (int i = 0; i < n_tok; i++) {
        unsigned char s[256];
        size_t n = res.top[0].len < sizeof s ? res.top[0].len : sizeof s;
        memcpy(s, res.top[0].s, n);
        wk_step_res_free(&res);
        q = (wk_step_req){.session = sid, .append = s, .append_len = n, .k = 1};
        if (wk_step(we, &q, &res, &err)) return 0;
    }
    double dt = clock_mono_s() - t0;
    wk_step_res_free(&res);
    return n_tok / dt;
}

static json_t *post(CURL *h, const char *url, json_t *body) {
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sbuf b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    free(s);
    json_t *o = rc == CURLE_OK && b.p ? json_loads(b.p, 0, NULL) : NULL;
    sb_free(&b);
    return o;
}

static double reask_ms;

/* A /v1/step body: the prompt (or NULL), the appended bytes (or none), k 1. */
static json_t *step_body(const char *sid, const char *prompt, const unsigned char *app, size_t an) {
    proto_step_req q = {.session = sid, .prompt = prompt, .prompt_len = prompt ? strlen(prompt) : 0,
                        .append = {app, an}, .k = 1};
    return proto_step_req_encode(&q);
}

/* The first proposal of a step answer r, copied into buf; 0 when none. */
static size_t first_top(const json_t *r, unsigned char *buf, size_t cap) {
    proto_step_res a;
    proto_error err;
    size_t n = 0;
    if (r && proto_step_res_decode(r, &a, &err) == 0 && a.n_top > 0 && a.top[0].s.n > 0 && a.top[0].s.n <= cap) {
        n = a.top[0].s.n;
        memcpy(buf, a.top[0].s.p, n);
    }
    proto_step_res_release(&a);
    return n;
}

static double via_worker(const char *base, const char *prompt, int n_tok, int round, char *text, size_t cap) {
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    char url[256], sid[32];
    snprintf(url, sizeof url, "%s%s", base, PROTO_PATH_STEP);
    snprintf(sid, sizeof sid, "bench%d", round);
    json_t *r = post(h, url, step_body(sid, prompt, NULL, 0));
    double t0 = clock_mono_s(), dt = -1;
    for (int i = 0; i < n_tok && r; i++) {
        unsigned char s[256];
        size_t sn = first_top(r, s, sizeof s);
        if (!sn) break;
        json_decref(r);
        r = post(h, url, step_body(sid, NULL, s, sn));
        if (i == n_tok - 1) dt = clock_mono_s() - t0;
    }
    /* The per-step cost without a decode: re-ask the same state (decoded 0). */
    if (r && round == 0) {
        double t1 = clock_mono_s();
        int reps = 200;
        for (int i = 0; i < reps && r; i++) {
            json_decref(r);
            r = post(h, url, step_body(sid, NULL, NULL, 0));
        }
        reask_ms = (clock_mono_s() - t1) * 1000 / reps;
    }
    json_decref(r);
    text[0] = 0;
    (void)cap;
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return dt > 0 ? n_tok / dt : 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *worker = "build/consort-worker", *prompt = "Once upon a time";
    int n_tok = 64, threads = 1, rounds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--worker")) worker = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens")) n_tok = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) prompt = argv[i + 1];
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    }
    if (!model) {
        fprintf(stderr, "usage: worker_bench --model M.gguf [--worker PATH] [--tokens N] [--threads N] [--prompt T] [--rounds N]\n");
        return 2;
    }
    /* start the worker */
    int pfd[2];
    if (pipe(pfd) != 0) return 1;
    char th[16];
    snprintf(th, sizeof th, "%d", threads);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        execl(worker, worker, "--model", model, "--port", "0", "--threads", th, "--parallel", "4", "--ctx-size", "1024",
              (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    FILE *wf = fdopen(pfd[0], "r");
    char line[256] = {0};
    if (!fgets(line, sizeof line, wf) || !strstr(line, "listening on ")) {
        fprintf(stderr, "worker_bench: the worker did not start\n");
        return 1;
    }
    line[strcspn(line, "\n")] = 0;
    const char *base = strstr(line, "http://");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    wk_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(model, mp);
    if (!m) {
        fprintf(stderr, "worker_bench: cannot load %s\n", model);
        return 1;
    }
    char text[8192];
    double best_d = 0, best_w = 0, best_e = 0;
    for (int r = 0; r < rounds; r++) { /* interleaved, so all see the same machine load */
        double d = direct(m, threads, prompt, n_tok, text, sizeof text);
        double w = via_worker(base, prompt, n_tok, r, text, sizeof text);
        double en = engine(model, threads, prompt, n_tok);
        printf("round %d: direct %.1f tok/s, worker %.1f tok/s, engine in-process %.1f tok/s\n", r, d, w, en);
        if (d > best_d) best_d = d;
        if (w > best_w) best_w = w;
        if (en > best_e) best_e = en;
    }
    engine(NULL, 0, NULL, 0);
    printf("model %s, %d tokens, %d threads, best of %d\n", model, n_tok, threads, rounds);
    printf("direct libllama greedy: %.1f tok/s (%.3f ms/token)\n", best_d, 1000 / best_d);
    printf("worker /v1/step greedy: %.1f tok/s (%.3f ms/token)\n", best_w, 1000 / best_w);
    printf("engine in-process greedy: %.1f tok/s (%.3f ms/token)\n", best_e, 1000 / best_e);
    printf("ratio worker/direct: %.3f\n", best_w / best_d);
    printf("step without decode (re-ask over HTTP, k=1): %.3f ms; direct decode %.3f ms/token -> expected ratio %.3f\n",
           reask_ms, 1000 / best_d, (1000 / best_d) / (1000 / best_d + reask_ms));
    llama_model_free(m);
    wk_backend_free();
    curl_global_cleanup();
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    fclose(wf);
    return 0;
}
