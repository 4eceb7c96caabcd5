/* worker/main.c: consort-worker, one model served over the member protocol
 * (docs/PROTOCOL.md, docs/WORKER.md). */
#include "common/http_server.h"
#include "common/log.h"
#include "common/stop_signal.h"
#include "worker/wk_engine.h"
#include "worker/wk_http.h"
#include "worker/wk_model.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: consort-worker --model PATH.gguf [options]\n"
            "\n"
            "Serves one GGUF model over the consort member protocol (docs/PROTOCOL.md).\n"
            "\n"
            "  --model PATH     GGUF model file (required)\n"
            "  --host ADDR      address to bind (default 127.0.0.1)\n"
            "  --port N         port (default 8090; 0 = any free port)\n"
            "  --ctx N          context length per session (default min(n_ctx_train, 4096))\n"
            "  --threads N      CPU threads for llama.cpp (default: number of CPUs)\n"
            "  --slots N        concurrent sessions kept (default 4; LRU eviction beyond)\n"
            "  --name NAME      name reported by /health and /v1/info (default: file name)\n"
            "  --max-body N     largest request body in bytes (default 8388608)\n"
            "  --help           this text\n"
            "\n"
            "When ready it prints one line: consort-worker listening on http://HOST:PORT\n"
            "CONSORT_LOG=debug|info|warn|error sets the log level (debug also shows llama.cpp's log).\n");
}

static int parse_int(const char *s, const char *flag, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "consort-worker: %s needs an integer in [%ld, %ld]\n", flag, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *host = "127.0.0.1", *name = NULL;
    long port = 8090, ctx = 0, threads = 0, slots = 4, max_body = 8 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            model_path = v;
        } else if (!strcmp(a, "--host")) {
            host = v;
        } else if (!strcmp(a, "--name")) {
            name = v;
        } else if (!strcmp(a, "--port")) {
            r = parse_int(v, a, 0, 65535, &port);
        } else if (!strcmp(a, "--ctx")) {
            r = parse_int(v, a, 8, 1 << 20, &ctx);
        } else if (!strcmp(a, "--threads")) {
            r = parse_int(v, a, 1, 1024, &threads);
        } else if (!strcmp(a, "--slots")) {
            r = parse_int(v, a, 1, 64, &slots);
        } else if (!strcmp(a, "--max-body")) {
            r = parse_int(v, a, 1024, INT_MAX, &max_body);
        } else {
            fprintf(stderr, "consort-worker: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (r) return 2;
        if (!v) {
            fprintf(stderr, "consort-worker: %s needs a value\n", a);
            return 2;
        }
        i++;
    }
    if (!model_path) {
        fprintf(stderr, "consort-worker: --model PATH.gguf is required (see --help)\n");
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
    wk_model *m = wk_model_load(model_path, 0, err, sizeof err);
    if (!m) {
        fprintf(stderr, "consort-worker: %s\n", err);
        wk_backend_free();
        return 1;
    }
    wk_engine_opts eo = {.n_ctx = (int)ctx, .n_threads = (int)threads, .slots = (int)slots};
    wk_engine *e = wk_engine_create(m, &eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort-worker: %s\n", err);
        wk_model_free(m);
        wk_backend_free();
        return 1;
    }
    wk_http *h = wk_http_create(m, e, name);
    http_server_opts so = {.host = host, .port = (int)port, .max_body = (size_t)max_body};
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
