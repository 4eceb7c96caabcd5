/* worker/main.c: consort-worker, one model served over the member protocol
 * (docs/PROTOCOL.md, docs/WORKER.md).
 *
 * Start-up order: flags, the shared secret (CONSORT_TOKEN or --token-file,
 * never a flag value, so it never shows in `ps`), the refusal to listen
 * beyond loopback without one (unless --insecure), then the model, the
 * engine and the HTTP server with the limits and TLS of the flags. */
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
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { O_MODEL = 1, O_HOST, O_PORT, O_CTX, O_THREADS, O_PARALLEL, O_NAME, O_MAX_BODY, O_TOKEN_FILE,
       O_INSECURE, O_METRICS_PUBLIC, O_CONN_LIMIT, O_PER_IP_LIMIT, O_IDLE_TIMEOUT, O_READ_TIMEOUT, O_TLS_CERT,
       O_TLS_KEY, O_MAX_CAND_BYTES, O_MAX_FORCED, O_MAX_SCORE_TOKENS,
       O_NGL, O_FA, O_CTK, O_CTV, O_MLOCK, O_NO_MMAP };

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
    {"token-file", NULL, OPT_VALUE, O_TOKEN_FILE, "FILE", "shared secret: first line of FILE (else $CONSORT_TOKEN)"},
    {"insecure", NULL, OPT_FLAG, O_INSECURE, NULL, "allow a non-loopback --host without a token"},
    {"metrics-public", NULL, OPT_FLAG, O_METRICS_PUBLIC, NULL, "serve /metrics without the token"},
    {"conn-limit", NULL, OPT_VALUE, O_CONN_LIMIT, "N", "connections in total (default 256)"},
    {"per-ip-limit", NULL, OPT_VALUE, O_PER_IP_LIMIT, "N", "connections per client address (default max(32, 2 * parallel + 8))"},
    {"idle-timeout", NULL, OPT_VALUE, O_IDLE_TIMEOUT, "S", "seconds an idle connection stays open (default 75)"},
    {"read-timeout", NULL, OPT_VALUE, O_READ_TIMEOUT, "S", "seconds to send a request's headers and body (default 60)"},
    {"tls-cert", NULL, OPT_VALUE, O_TLS_CERT, "FILE", "PEM certificate: serve HTTPS (with --tls-key)"},
    {"tls-key", NULL, OPT_VALUE, O_TLS_KEY, "FILE", "PEM private key of --tls-cert"},
    {"max-candidate-bytes", NULL, OPT_VALUE, O_MAX_CAND_BYTES, "N", "budget: candidate bytes per step (default 16384)"},
    {"max-forced", NULL, OPT_VALUE, O_MAX_FORCED, "N", "budget: teacher-forced positions per step (default 512)"},
    {"max-score-tokens", NULL, OPT_VALUE, O_MAX_SCORE_TOKENS, "N", "budget: tokens per /v1/score (default 32768)"},
    {"n-gpu-layers", "ngl", OPT_VALUE, O_NGL, "N", "layers to offload to the GPU: a number, or all (default: llama.cpp's)"},
    {"flash-attn", "fa", OPT_VALUE, O_FA, "on|off|auto", "flash attention (default auto; off keeps concurrent sessions' numbers as alone, see docs/WORKER.md)"},
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
               "The shared secret comes from $CONSORT_TOKEN or --token-file, never from a flag; with one,\n"
               "every endpoint but /health (and /metrics with --metrics-public) needs\n"
               "\"Authorization: Bearer <token>\". A --host beyond loopback needs a token or --insecure.\n"
               "When ready it prints one line: consort-worker listening on http://HOST:PORT\n"
               "CONSORT_LOG=debug|info|warn|error sets the log level (debug also shows llama.cpp's log).\n");
}

typedef struct {
    const char *model_path, *host, *name, *token_file, *tls_cert, *tls_key;
    int port, ctx, threads, slots, max_body;
    int insecure, metrics_public;
    int conn_limit, per_ip_limit, idle_timeout, read_timeout;
    int max_cand_bytes, max_forced, max_score_tokens;
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
    case O_TOKEN_FILE: a->token_file = v; return 0;
    case O_INSECURE: a->insecure = 1; return 0;
    case O_METRICS_PUBLIC: a->metrics_public = 1; return 0;
    case O_TLS_CERT: a->tls_cert = v; return 0;
    case O_TLS_KEY: a->tls_key = v; return 0;
    case O_CONN_LIMIT: return opt_int("--conn-limit", v, 1, 65536, &a->conn_limit, err, errlen);
    case O_PER_IP_LIMIT: return opt_int("--per-ip-limit", v, 1, 65536, &a->per_ip_limit, err, errlen);
    case O_IDLE_TIMEOUT: return opt_int("--idle-timeout", v, 1, 86400, &a->idle_timeout, err, errlen);
    case O_READ_TIMEOUT: return opt_int("--read-timeout", v, 1, 86400, &a->read_timeout, err, errlen);
    case O_MAX_CAND_BYTES:
        return opt_int("--max-candidate-bytes", v, 1, 1 << 30, &a->max_cand_bytes, err, errlen);
    case O_MAX_FORCED: return opt_int("--max-forced", v, 1, 1 << 24, &a->max_forced, err, errlen);
    case O_MAX_SCORE_TOKENS:
        return opt_int("--max-score-tokens", v, 1, 1 << 28, &a->max_score_tokens, err, errlen);
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
    if (!a->tls_cert != !a->tls_key) {
        fprintf(stderr, "consort-worker: --tls-cert and --tls-key go together\n");
        return 2;
    }
    return -1;
}

/* The shared secret into buf: from --token-file (its first line) or
 * $CONSORT_TOKEN; "" when neither. 0, or -1 after a message. */
static int load_token(const char *file, char *buf, size_t n) {
    buf[0] = 0;
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            fprintf(stderr, "consort-worker: --token-file %s: %s\n", file, strerror(errno));
            return -1;
        }
        struct stat st;
        if (fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
            log_warn("--token-file %s can be read by others than its owner (chmod 600 it)", file);
        if (!fgets(buf, (int)n, f)) buf[0] = 0;
        fclose(f);
        buf[strcspn(buf, "\r\n")] = 0;
        if (!buf[0]) {
            fprintf(stderr, "consort-worker: --token-file %s: the first line is empty\n", file);
            return -1;
        }
    } else {
        const char *env = getenv("CONSORT_TOKEN");
        if (env && strlen(env) >= n) {
            fprintf(stderr, "consort-worker: CONSORT_TOKEN is longer than %zu bytes\n", n - 1);
            return -1;
        }
        snprintf(buf, n, "%s", env ? env : "");
    }
    for (const char *p = buf; *p; p++)
        if (*p <= ' ' || *p == 0x7f) {
            fprintf(stderr, "consort-worker: the token must be printable ASCII without spaces\n");
            return -1;
        }
    return 0;
}

/* 1 when every address host resolves to is a loopback address. */
static int host_is_loopback(const char *host) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) return 0;
    int all = 1;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        if (p->ai_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)p->ai_addr;
            all &= (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        } else if (p->ai_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)p->ai_addr;
            all &= IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
        } else {
            all = 0;
        }
    }
    freeaddrinfo(ai);
    return all;
}

int main(int argc, char **argv) {
    worker_args a = {.host = "127.0.0.1", .port = 8090, .slots = 4, .max_body = 8 << 20};
    int status = parse_args(&a, argc, argv);
    if (status >= 0) return status;
    const char *model_path = a.model_path, *host = a.host, *name = a.name;
    char token[512];
    if (load_token(a.token_file, token, sizeof token) != 0) return 2;
    if (!token[0] && !a.insecure && !host_is_loopback(host)) {
        fprintf(stderr,
                "consort-worker: refusing to listen on %s without a token: set CONSORT_TOKEN or --token-file "
                "(or pass --insecure to serve an open port on purpose)\n",
                host);
        return 2;
    }
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
                         .max_cand_bytes = a.max_cand_bytes, .max_forced = a.max_forced,
                         .max_score_tokens = a.max_score_tokens,
                         .flash_attn = a.flash_attn, .type_k = a.type_k, .type_v = a.type_v};
    wk_engine *e = wk_engine_create(m, &eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort-worker: %s\n", err);
        wk_model_free(m);
        wk_backend_free();
        return 1;
    }
    wk_http *h = wk_http_create(m, e, name);
    /* The coordinator opens about one connection per concurrent session
     * (plus its idle pool), all from one address: never below that. */
    if (!a.per_ip_limit) a.per_ip_limit = 2 * a.slots + 8 > 32 ? 2 * a.slots + 8 : 32;
    static const char *const open_health[] = {PROTO_PATH_HEALTH, NULL};
    static const char *const open_health_metrics[] = {PROTO_PATH_HEALTH, PROTO_PATH_METRICS, NULL};
    http_server_opts so = {.host = host, .port = a.port, .max_body = (size_t)a.max_body,
                           .conn_limit = (unsigned)a.conn_limit, .per_ip_limit = (unsigned)a.per_ip_limit,
                           .idle_timeout = (unsigned)a.idle_timeout, .read_timeout = (unsigned)a.read_timeout,
                           .tls_cert_file = a.tls_cert, .tls_key_file = a.tls_key,
                           .bearer_token = token[0] ? token : NULL,
                           .open_paths = a.metrics_public ? open_health_metrics : open_health,
                           .name = "worker"};
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
    if (!token[0] && !host_is_loopback(host))
        log_warn("listening on %s without a token (--insecure): anyone who can reach it can use it", host);
    printf("consort-worker listening on %s://%s:%d\n", a.tls_cert ? "https" : "http", hostbuf,
           http_server_port(srv));
    fflush(stdout);

    int sig = stop_signal_wait();
    log_info("signal %d: shutting down", sig);
    http_server_stop(srv);
    memset(token, 0, sizeof token);
    wk_http_free(h);
    wk_engine_free(e);
    wk_model_free(m);
    wk_backend_free();
    stop_signal_close();
    return 0;
}
