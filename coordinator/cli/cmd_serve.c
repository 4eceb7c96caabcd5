/* coordinator/cli/cmd_serve.c: `consort serve`, and the serving loop that
 * `consort run` shares (cmd_serve.h). */
#include "coordinator/cli/cmd_serve.h"

#include "common/log.h"
#include "common/stop_signal.h"
#include "coordinator/api/api.h"
#include "coordinator/cli/commands.h"
#include "coordinator/engine/ensemble.h"
#include "sampler/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the engine as an api_backend ------------------------------------------ */

typedef struct {
    ensemble *e;
    member_set *ms;
} api_engine;

static int be_generate(void *ctx, const ensemble_request *req, ensemble_on_chunk cb, void *ud,
                       ensemble_result *out) {
    return ensemble_generate(((api_engine *)ctx)->e, req, cb, ud, out);
}
static void be_free(void *ctx, ensemble_result *r) {
    (void)ctx;
    ensemble_result_free(r);
}
static int be_strategy_valid(void *ctx, const char *s, char *err, size_t n) {
    return ensemble_strategy_valid(((api_engine *)ctx)->e, s, err, n) == 0;
}
static size_t be_n(void *ctx) { return members_count(((api_engine *)ctx)->ms); }
static const char *be_name(void *ctx, size_t i) { return members_name(((api_engine *)ctx)->ms, i); }
static int be_up(void *ctx, size_t i) { return members_usable(((api_engine *)ctx)->ms, i); }
/* An active check for GET /health: the last known state alone would call a
 * member that died since its last request "up". */
static void be_describe(void *ctx, size_t i, const char **kind, const char **model, int *exact) {
    member_set *ms = ((api_engine *)ctx)->ms;
    const member_ops *ops = members_ops(ms, i);
    const proto_info *info = members_info(ms, i);
    *kind = ops ? ops->kind : "";
    *model = members_model(ms, i) ? members_model(ms, i) : info && info->model_path ? info->model_path : "";
    *exact = ops ? ops->exact : 1;
}

static int be_check(void *ctx, size_t i) {
    member_set *ms = ((api_engine *)ctx)->ms;
    return members_usable(ms, i) && members_health(ms, i, 2.0);
}

/* ---- options -------------------------------------------------------------------- */

/* ids 200..: below are the command's own, 100.. the member options */
const opt_spec api_serve_options[] = {
    {"host", NULL, OPT_VALUE, SO_HOST, "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for all)"},
    {"port", NULL, OPT_VALUE, SO_PORT, "N", "port to listen on (default 8080; 0 = any free port)"},
    {"model-id", NULL, OPT_VALUE, SO_MODEL_ID, "ID", "the ensemble's model id in the API (default consort)"},
    {"max-tokens", NULL, OPT_VALUE, SO_MAX_TOKENS, "N", "chat requests without max_tokens get N (default 256)"},
    {"max-tokens-limit", NULL, OPT_VALUE, SO_MAX_TOKENS_LIMIT, "N",
     "refuse requests asking for more than N tokens (default: none)"},
    {"parallel", "np", OPT_VALUE, SO_PARALLEL, "N",
     "generations at once, later requests wait in line (default: the fewest session slots of any "
     "member; 0 = no limit)"},
    {"api-key-file", NULL, OPT_VALUE, SO_API_KEY_FILE, "FILE",
     "clients must send \"Authorization: Bearer KEY\", KEY the first line of FILE (default: "
     "$CONSORT_API_KEY if set, else no key)"},
    {"metrics-public", NULL, OPT_FLAG, SO_METRICS_PUBLIC, NULL, "/metrics needs no API key"},
    {"queue", NULL, OPT_VALUE, SO_QUEUE, "N",
     "requests that may wait for a turn; one more gets 429 with Retry-After (64; 0 = no limit)"},
    {"request-timeout", NULL, OPT_VALUE, SO_REQUEST_TIMEOUT, "SEC",
     "deadline of a generation request, waiting included; past it the answer ends with "
     "finish_reason \"length\" (600; 0 = none)"},
    {"drain-timeout", NULL, OPT_VALUE, SO_DRAIN_TIMEOUT, "SEC",
     "on SIGTERM/SIGINT, how long running requests may finish before they are cut (30)"},
    {"conn-limit", NULL, OPT_VALUE, SO_CONN_LIMIT, "N", "open connections in total (256)"},
    {"per-ip-limit", NULL, OPT_VALUE, SO_PER_IP_LIMIT, "N", "open connections per client address (32)"},
    {"idle-timeout", NULL, OPT_VALUE, SO_IDLE_TIMEOUT, "SEC", "an idle keep-alive connection closes after SEC (75)"},
    {"read-timeout", NULL, OPT_VALUE, SO_READ_TIMEOUT, "SEC", "a request's headers and body must arrive within SEC (60)"},
    {"max-body", NULL, OPT_VALUE, SO_MAX_BODY, "BYTES", "largest request body; larger gets 413 (8388608)"},
    {"tls-cert", NULL, OPT_VALUE, SO_TLS_CERT, "FILE", "serve HTTPS with this PEM certificate (with --tls-key)"},
    {"tls-key", NULL, OPT_VALUE, SO_TLS_KEY, "FILE", "the PEM private key of --tls-cert"},
    OPT_SPEC_END};

static int set_text(const char *opt, const char *v, const char **out, char *err, size_t errlen) {
    if (!*v) {
        snprintf(err, errlen, "%s: expected a value, got ''", opt);
        return -1;
    }
    *out = v;
    return 0;
}

static int set_parallel(api_serve_opts *o, const char *v, char *err, size_t errlen) {
    if (opt_int("--parallel", v, 0, 100000, &o->parallel, err, errlen)) return -1;
    if (o->parallel == 0) o->parallel = -1; /* explicit 0: no limit */
    return 0;
}

static int set_seconds_or_none(const char *opt, const char *v, double *out, char *err, size_t errlen) {
    if (opt_seconds(opt, v, 0, 1e7, out, err, errlen)) return -1;
    if (*out == 0) *out = -1; /* explicit 0: none */
    return 0;
}

static int set_queue(api_serve_opts *o, const char *v, char *err, size_t errlen) {
    if (opt_int("--queue", v, 0, 1000000, &o->queue, err, errlen)) return -1;
    if (o->queue == 0) o->queue = -1; /* explicit 0: no limit */
    return 0;
}

static int set_max_body(api_serve_opts *o, const char *v, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || !*v || *end || n < 1024 || n > (1LL << 34)) {
        snprintf(err, errlen, "--max-body '%s': expected a number of bytes from 1024 to %lld", v, 1LL << 34);
        return -1;
    }
    o->max_body = n;
    return 0;
}

int api_serve_set(api_serve_opts *o, int id, const char *v, char *err, size_t errlen) {
    int rc;
    switch (id) {
    case SO_HOST: rc = set_text("--host", v, &o->host, err, errlen); break;
    case SO_PORT: rc = opt_int("--port", v, 0, 65535, &o->port, err, errlen); break;
    case SO_MODEL_ID: rc = set_text("--model-id", v, &o->model_id, err, errlen); break;
    case SO_MAX_TOKENS: rc = opt_int("--max-tokens", v, 1, 1000000000, &o->default_max_tokens, err, errlen); break;
    case SO_MAX_TOKENS_LIMIT:
        rc = opt_int("--max-tokens-limit", v, 1, 1000000000, &o->max_tokens_limit, err, errlen);
        break;
    case SO_PARALLEL: rc = set_parallel(o, v, err, errlen); break;
    case SO_API_KEY_FILE:
        rc = cli_read_secret_file("--api-key-file", v, o->api_key, sizeof o->api_key, err, errlen);
        break;
    case SO_METRICS_PUBLIC: o->metrics_public = 1; rc = 0; break;
    case SO_QUEUE: rc = set_queue(o, v, err, errlen); break;
    case SO_REQUEST_TIMEOUT: rc = set_seconds_or_none("--request-timeout", v, &o->request_timeout, err, errlen); break;
    case SO_DRAIN_TIMEOUT: rc = set_seconds_or_none("--drain-timeout", v, &o->drain_timeout, err, errlen); break;
    case SO_CONN_LIMIT: rc = opt_int("--conn-limit", v, 1, 100000, &o->conn_limit, err, errlen); break;
    case SO_PER_IP_LIMIT: rc = opt_int("--per-ip-limit", v, 1, 100000, &o->per_ip_limit, err, errlen); break;
    case SO_IDLE_TIMEOUT: rc = opt_int("--idle-timeout", v, 1, 86400, &o->idle_timeout, err, errlen); break;
    case SO_READ_TIMEOUT: rc = opt_int("--read-timeout", v, 1, 86400, &o->read_timeout, err, errlen); break;
    case SO_MAX_BODY: rc = set_max_body(o, v, err, errlen); break;
    case SO_TLS_CERT: rc = set_text("--tls-cert", v, &o->tls_cert, err, errlen); break;
    case SO_TLS_KEY: rc = set_text("--tls-key", v, &o->tls_key, err, errlen); break;
    default: return 0;
    }
    return rc ? -1 : 1;
}

/* ---- signals ----------------------------------------------------------------------- */

/* ---- serving ------------------------------------------------------------------------- */

int api_serve_members(const members_cli *cli, const api_serve_opts *o) {
    char err[512];
    const char *cmd = o->command ? o->command : "serve";
    if (members_cli_check(cli, err, sizeof err)) {
        fprintf(stderr, "consort %s: %s\n", cmd, err);
        return 2;
    }
    log_info("%s: opening %zu member(s)%s", cmd, cli->n,
             cli->n ? " (spawning local workers for .gguf files may take a while)" : "");
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "consort %s: --tls-cert and --tls-key go together\n", cmd);
        return 2;
    }
    members_config mcfg;
    ensemble_config ecfg;
    members_cli_to_config(cli, &mcfg, &ecfg);
    mcfg.supervise = 1; /* a server restarts the workers it spawned when they die */
    member_set *ms = members_open(&mcfg, err, sizeof err);
    if (!ms) {
        fprintf(stderr, "consort %s: %s\n", cmd, err);
        return 1;
    }
    /* Until here SIGINT simply ends the process (spawned workers die with it:
     * PR_SET_PDEATHSIG); from here on it means a clean shutdown. */
    if (stop_signal_install()) {
        fprintf(stderr, "consort %s: cannot set up signal handling: %s\n", cmd, strerror(errno));
        members_free(ms);
        return 1;
    }
    ensemble *e = ensemble_new(ms, &ecfg, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort %s: %s\n", cmd, err);
        members_free(ms);
        return 1;
    }
    api_engine eng = {e, ms};
    api_backend be = {&eng, be_generate, be_free, be_strategy_valid, be_n, be_name, be_up, be_check, be_describe};
    api_config cfg = {0};
    cfg.host = o->host ? o->host : "127.0.0.1";
    cfg.port = o->port;
    cfg.model_id = o->model_id ? o->model_id : "consort";
    cfg.strategy = cli->strategy[0] ? cli->strategy : "mixture";
    cfg.default_max_tokens = o->default_max_tokens;
    cfg.max_tokens_limit = o->max_tokens_limit;
    cfg.api_key = o->api_key[0] ? o->api_key : getenv("CONSORT_API_KEY");
    cfg.metrics_public = o->metrics_public;
    cfg.queue_limit = o->queue;
    cfg.request_timeout = o->request_timeout;
    cfg.conn_limit = (unsigned)o->conn_limit;
    cfg.per_ip_limit = (unsigned)o->per_ip_limit;
    cfg.idle_timeout = (unsigned)o->idle_timeout;
    cfg.read_timeout = (unsigned)o->read_timeout;
    cfg.max_body = (size_t)o->max_body;
    cfg.tls_cert_file = o->tls_cert;
    cfg.tls_key_file = o->tls_key;
    cfg.max_parallel = o->parallel > 0 ? o->parallel : 0;
    if (o->parallel == 0) { /* default: what every member can hold at once */
        for (size_t i = 0; i < members_count(ms); i++) {
            const proto_info *info = members_info(ms, i);
            int n = info ? info->slots : 0;
            if (n > 0 && (cfg.max_parallel == 0 || n < cfg.max_parallel)) cfg.max_parallel = n;
        }
    }
    api_server *srv = api_start(&cfg, &be, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "consort %s: cannot listen on %s:%d: %s\n", cmd, cfg.host, cfg.port, err);
        ensemble_free(e);
        members_free(ms);
        return 1;
    }

    char weights[256] = "equal";
    if (cli->weights_auto) {
        snprintf(weights, sizeof weights, "auto (from prompt perplexity)");
    } else if (cli->n_weights) {
        size_t k = 0;
        for (size_t i = 0; i < cli->n_weights && k + 1 < sizeof weights; i++)
            k += (size_t)snprintf(weights + k, sizeof weights - k, "%s%g", i ? "," : "",
                                  cli->weights[i]);
    }
    for (size_t i = 0; i < members_count(ms); i++)
        if (members_model(ms, i)) {
            log_info("%s: spawned workers are supervised (restarted when they die) and get the shared "
                     "secret through their environment", cmd);
            break;
        }
    char par[64] = "no limit on parallel generations";
    if (cfg.max_parallel) snprintf(par, sizeof par, "%d generation(s) at once", cfg.max_parallel);
    log_info("%s: ensemble '%s' of %zu member(s), strategy %s, weights %s, %s", cmd, cfg.model_id,
             members_count(ms), cfg.strategy, weights, par);
    for (size_t i = 0; i < members_count(ms); i++) {
        const char *model = members_model(ms, i);
        log_info("%s:   member %s at %s%s%s%s", cmd, members_name(ms, i), members_url(ms, i),
                 model ? " (spawned, model " : "", model ? model : "", model ? ")" : "");
    }
    const char *show = strcmp(cfg.host, "0.0.0.0") == 0 || strcmp(cfg.host, "::") == 0
                           ? "127.0.0.1" : cfg.host;
    int ipv6 = strchr(show, ':') != NULL;
    char base[300];
    snprintf(base, sizeof base, "%s://%s%s%s:%d", o->tls_cert ? "https" : "http", ipv6 ? "[" : "", show,
             ipv6 ? "]" : "", api_port(srv));
    log_info("%s: OpenAI-compatible API at %s/v1 (POST /v1/completions, /v1/chat/completions; "
             "GET /v1/models, /health, /metrics)%s; Ctrl-C stops", cmd, base,
             cfg.api_key && cfg.api_key[0] ? ", API key required" : "");
    /* one plain line on stdout, for scripts and tests */
    printf("consort listening on %s/v1\n", base);
    fflush(stdout);

    int sig = stop_signal_wait();
    double drain = o->drain_timeout > 0 ? o->drain_timeout : o->drain_timeout < 0 ? 0 : API_DEFAULT_DRAIN_TIMEOUT;
    log_info("%s: signal %d, shutting down (drain up to %g s)", cmd, sig, drain);
    api_drain(srv, drain);
    api_stop(srv);
    ensemble_free(e);
    members_free(ms);
    log_info("%s: stopped", cmd);
    return 0;
}

static void serve_usage(FILE *f) {
    fprintf(f, "usage: consort serve --member NAME=SPEC [--member NAME=SPEC ...] [options]\n\n"
               "Serves an ensemble through an OpenAI-compatible HTTP API (docs/API.md):\n"
               "POST /v1/completions, POST /v1/chat/completions (streaming or not),\n"
               "GET /v1/models, GET /health, GET /metrics. SIGINT/SIGTERM stop it\n"
               "(and the workers it spawned).\n\nmembers and strategy:\n");
    opt_help(f, members_cli_opts);
    fprintf(f, "\nserver:\n");
    opt_help(f, api_serve_options);
    opt_help(f, cli_std_options);
    fprintf(f, "\nexample:\n"
               "  consort serve --member a=http://10.0.0.2:8090 --member b=models/b.gguf \\\n"
               "      --strategy mixture --port 8080\n"
               "  curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \\\n"
               "      -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 32}'\n");
    sreg_fprint_help(f, SREG_GENERATION);
}

int api_serve_parse(members_cli *cli, api_serve_opts *o, void (*usage)(FILE *),
                    int (*add_file)(members_cli *cli, const char *path, char *err, size_t errlen),
                    int argc, char **argv) {
    const opt_spec *const tables[] = {members_cli_opts, api_serve_options, cli_std_options, NULL};
    char prog[64];
    snprintf(prog, sizeof prog, "consort %s", o->command);
    opt_parser p;
    if (add_file) opt_begin_positional(&p, prog, tables, argc, argv);
    else opt_begin(&p, prog, tables, argc, argv);
    const char *v;
    char err[512];
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        int r = cli_std_option(id, usage);
        if (r >= 0) return r;
        if (id == OPT_POSITIONAL) r = add_file(cli, v, err, sizeof err) ? -1 : 1;
        else r = members_cli_set(cli, id, v, err, sizeof err);
        if (r == 0) r = api_serve_set(o, id, v, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return 2;
        }
    }
    return -1;
}

int cmd_serve(int argc, char **argv) {
    members_cli cli;
    members_cli_init(&cli);
    api_serve_opts o = {0};
    o.port = 8080;
    o.command = "serve";
    int rc = api_serve_parse(&cli, &o, serve_usage, NULL, argc, argv);
    if (rc >= 0) return rc;
    if (cli.n == 0) {
        fprintf(stderr, "consort serve: give at least one --member NAME=SPEC (see --help; "
                        "`consort run` starts local models without setup)\n");
        return 2;
    }
    return api_serve_members(&cli, &o);
}
