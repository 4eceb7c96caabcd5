/* worker/main.c: consort-worker, one model served over the member protocol
 * (docs/PROTOCOL.md, docs/WORKER.md). */
#include "common/http_server.h"
#include "common/log.h"
#include "common/opt.h"
#include "common/stop_signal.h"
#include "common/version.h"
#include "worker/wk_engine.h"
#include "worker/wk_http.h"
#include "worker/wk_model.h"

#include <llama.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_MODEL = 1, O_HOST, O_PORT, O_CTX, O_THREADS, O_PARALLEL, O_NAME, O_MAX_BODY, O_NGL, O_FA, O_CTK, O_CTV, O_MLOCK, O_NO_MMAP };

/* Named like llama.cpp's own tools where the meaning is the same; --ctx and
 * --slots are the worker's earlier spellings, still accepted. */
static const opt_spec worker_opts[] = {
    {"model", "m", OPT_VALUE, O_MODEL, "PATH", "GGUF model file (required)"},
    {"host", NULL, OPT_VALUE, O_HOST, "ADDR", "address to bind (default 127.0.0.1)"},
    {"port", NULL, OPT_VALUE, O_PORT, "N", "port (default 8090; 0 = any free port)"},
    {"ctx-size", "c", OPT_VALUE, O_CTX, "N", "context length per session (default min(n_ctx_train, 4096))"},
    {"ctx", NULL, OPT_VALUE, O_CTX, "N", NULL},
    {"threads", "t", OPT_VALUE, O_THREADS, "N", "CPU threads for llama.cpp (default: number of CPUs)"},
    {"parallel", "np", OPT_VALUE, O_PARALLEL, "N", "sessions kept at once, 1-64 (default 4; LRU eviction beyond)"},
    {"slots", NULL, OPT_VALUE, O_PARALLEL, "N", NULL},
    {"name", NULL, OPT_VALUE, O_NAME, "NAME", "name reported by /health and /v1/info (default: file name)"},
    {"max-body", NULL, OPT_VALUE, O_MAX_BODY, "N", "largest request body in bytes (default 8388608)"},
    {"n-gpu-layers", "ngl", OPT_VALUE, O_NGL, "N", "layers to offload to the GPU: a number, or all (default: llama.cpp's)"},
    {"flash-attn", "fa", OPT_VALUE, O_FA, "on|off|auto", "flash attention (default auto)"},
    {"cache-type-k", "ctk", OPT_VALUE, O_CTK, "TYPE", "KV cache type of K: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (default f16)"},
    {"cache-type-v", "ctv", OPT_VALUE, O_CTV, "TYPE", "KV cache type of V, the same types (default f16; quantized V needs flash attention)"},
    {"mlock", NULL, OPT_FLAG, O_MLOCK, NULL, "lock the model in RAM (no swapping out)"},
    {"no-mmap", NULL, OPT_FLAG, O_NO_MMAP, NULL, "read the model into memory instead of mapping the file"},
    OPT_HELP_SPEC,
    OPT_VERSION_SPEC,
    OPT_SPEC_END};

static void usage(FILE *f) {
    fprintf(f, "usage: consort-worker --model PATH.gguf [options]\n"
               "\n"
               "Serves one GGUF model over the consort member protocol (docs/PROTOCOL.md).\n"
               "\n");
    opt_help(f, worker_opts);
    fprintf(f, "\n"
               "--ctx and --slots are accepted for --ctx-size and --parallel.\n"
               "When ready it prints one line: consort-worker listening on http://HOST:PORT\n"
               "CONSORT_LOG=debug|info|warn|error sets the log level (debug also shows llama.cpp's log).\n");
}

typedef struct {
    const char *model_path, *host, *name;
    int port, ctx, threads, slots, max_body;
    wk_model_opts model;   /* --n-gpu-layers, --mlock, --no-mmap */
    int flash_attn;        /* wk_engine_opts' encoding */
    int type_k, type_v;
} worker_args;

/* A KV cache type by llama.cpp's name: the ggml_type + 1 (wk_engine_opts). */
static int cache_type(const char *opt, const char *v, int *out, char *err, size_t errlen) {
    static const struct { const char *name; enum ggml_type t; } types[] = {
        {"f32", GGML_TYPE_F32},   {"f16", GGML_TYPE_F16},   {"bf16", GGML_TYPE_BF16},
        {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1},
        {"iq4_nl", GGML_TYPE_IQ4_NL}, {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(v, types[i].name)) {
            *out = (int)types[i].t + 1;
            return 0;
        }
    snprintf(err, errlen, "%s '%s': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1", opt, v);
    return -1;
}

static int flash_attn(const char *v, int *out, char *err, size_t errlen) {
    if (!strcmp(v, "auto")) *out = 0;
    else if (!strcmp(v, "on")) *out = 1;
    else if (!strcmp(v, "off")) *out = 2;
    else {
        snprintf(err, errlen, "--flash-attn '%s': expected on, off or auto", v);
        return -1;
    }
    return 0;
}

static int gpu_layers(const char *v, wk_model_opts *mo, char *err, size_t errlen) {
    mo->set_gpu_layers = 1;
    if (!strcmp(v, "all")) {
        mo->n_gpu_layers = -1;
        return 0;
    }
    return opt_int("--n-gpu-layers", v, -1, 100000, &mo->n_gpu_layers, err, errlen);
}

/* One option into a: 0, or -1 with err. */
static int set_option(worker_args *a, int id, const char *v, char *err, size_t errlen) {
    switch (id) {
    case O_MODEL: a->model_path = v; return 0;
    case O_HOST: a->host = v; return 0;
    case O_NAME: a->name = v; return 0;
    case O_PORT: return opt_int("--port", v, 0, 65535, &a->port, err, errlen);
    case O_CTX: return opt_int("--ctx-size", v, 8, 1 << 20, &a->ctx, err, errlen);
    case O_THREADS: return opt_int("--threads", v, 1, 1024, &a->threads, err, errlen);
    case O_PARALLEL: return opt_int("--parallel", v, 1, 64, &a->slots, err, errlen);
    case O_MAX_BODY: return opt_int("--max-body", v, 1024, INT_MAX, &a->max_body, err, errlen);
    case O_NGL: return gpu_layers(v, &a->model, err, errlen);
    case O_FA: return flash_attn(v, &a->flash_attn, err, errlen);
    case O_CTK: return cache_type("--cache-type-k", v, &a->type_k, err, errlen);
    case O_CTV: return cache_type("--cache-type-v", v, &a->type_v, err, errlen);
    case O_MLOCK: a->model.mlock = 1; return 0;
    case O_NO_MMAP: a->model.no_mmap = 1; return 0;
    }
    snprintf(err, errlen, "option %d is not handled (a bug)", id);
    return -1;
}

/* Returns -1 to go on, else the exit status (0 after --help/--version). */
static int parse_args(worker_args *a, int argc, char **argv) {
    const opt_spec *const tables[] = {worker_opts, NULL};
    opt_parser p;
    opt_begin(&p, "consort-worker", tables, argc, argv);
    const char *v;
    char err[256];
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        if (id == OPT_ERROR) return 2;
        if (id == OPT_ID_HELP) {
            usage(stdout);
            return 0;
        }
        if (id == OPT_ID_VERSION) {
            printf("consort-worker %s\n", CONSORT_VERSION);
            return 0;
        }
        if (set_option(a, id, v, err, sizeof err)) {
            fprintf(stderr, "consort-worker: %s\n", err);
            return 2;
        }
    }
    if (!a->model_path || !*a->model_path) {
        fprintf(stderr, "consort-worker: --model PATH.gguf is required (see --help)\n");
        return 2;
    }
    return -1;
}

int main(int argc, char **argv) {
    worker_args a = {.host = "127.0.0.1", .port = 8090, .slots = 4, .max_body = 8 << 20};
    int status = parse_args(&a, argc, argv);
    if (status >= 0) return status;
    const char *model_path = a.model_path, *host = a.host, *name = a.name;
    if (!name) {
        const char *b = strrchr(model_path, '/');
        name = b ? b + 1 : model_path;
    }
    char lname[80];
    snprintf(lname, sizeof lname, "worker:%s", name);
    log_set_name(lname);

    if (stop_signal_install() != 0) {
        fprintf(stderr, "consort-worker: pipe: %s\n", strerror(errno));
        return 1;
    }

    wk_backend_init();
    char err[512];
    wk_model *m = wk_model_load_opts(model_path, 0, &a.model, err, sizeof err);
    if (!m) {
        fprintf(stderr, "consort-worker: %s\n", err);
        wk_backend_free();
        return 1;
    }
    wk_engine_opts eo = {.n_ctx = a.ctx, .n_threads = a.threads, .slots = a.slots,
                         .flash_attn = a.flash_attn, .type_k = a.type_k, .type_v = a.type_v};
    wk_engine *e = wk_engine_create(m, &eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort-worker: %s\n", err);
        wk_model_free(m);
        wk_backend_free();
        return 1;
    }
    wk_http *h = wk_http_create(m, e, name);
    http_server_opts so = {.host = host, .port = a.port, .max_body = (size_t)a.max_body};
    http_server *srv = h ? http_server_start(&so, wk_http_route, h, err, sizeof err) : NULL;
    if (!srv) {
        fprintf(stderr, "consort-worker: %s\n", h ? err : "out of memory");
        wk_http_free(h);
        wk_engine_free(e);
        wk_model_free(m);
        wk_backend_free();
        return 1;
    }
    log_info("model %s: vocab %d (%s), context %d per session, %d slots", model_path, m->n_vocab,
             m->vocab_type, wk_engine_n_ctx(e), wk_engine_slots(e));
    const char *shown = strchr(host, ':') ? "[%s]" : "%s";
    char hostbuf[300];
    snprintf(hostbuf, sizeof hostbuf, shown, host);
    printf("consort-worker listening on http://%s:%d\n", hostbuf, http_server_port(srv));
    fflush(stdout);

    int sig = stop_signal_wait();
    log_info("signal %d: shutting down", sig);
    http_server_stop(srv);
    wk_http_free(h);
    wk_engine_free(e);
    wk_model_free(m);
    wk_backend_free();
    stop_signal_close();
    return 0;
}
