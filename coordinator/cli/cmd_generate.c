/* coordinator/cli/cmd_generate.c: `consort generate`: one request through the
 * engine (ensemble.h), text on stdout as it is produced, or one JSON object
 * with the text and the statistics (--json). */
#include "coordinator/cli/commands.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/cli/member_opts.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static const char help[] =
    "usage: consort generate --member NAME=SPEC [--member ...] --prompt TEXT [options]\n"
    "\n"
    "Generates text once from a prompt with the ensemble and prints it.\n"
    "\n"
    "  --prompt TEXT          the prompt (raw text)\n"
    "  --prompt-file FILE     read the prompt from a file ('-' = stdin)\n"
    "  --chat                 send the prompt as one user chat message\n"
    "  --max-tokens N         steps to generate (default 64)\n"
    "  --temperature T        0 = greedy (default 0)\n"
    "  --top-k K, --top-p P, --min-p P   sampling filters (off by default)\n"
    "  --seed S               seed of the sampler (same seed, same output)\n"
    "  --stop TEXT            stop sequence (repeatable; not included in the output)\n"
    "  --json                 print one JSON object: text and statistics\n"
    "  --logprobs N           with --json: each chunk and its N best alternatives\n"
    "\n"
    "member options (shared by every command):\n";

typedef struct {
    int json;
    json_t *chunks;
} gen_ctx;

static int on_chunk(void *ud, const ensemble_chunk *c) {
    gen_ctx *g = ud;
    if (!g->json) {
        fwrite(c->text, 1, c->len, stdout);
        fflush(stdout);
    } else if (g->chunks) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(c->text, c->len));
        json_object_set_new(o, "logprob", json_real(c->logprob));
        json_t *tops = json_array();
        for (int i = 0; i < c->n_top; i++) {
            json_t *t = json_object();
            json_object_set_new(t, "text", json_stringn_nocheck(c->top[i].text, c->top[i].len));
            json_object_set_new(t, "logprob", json_real(c->top[i].logprob));
            json_array_append_new(tops, t);
        }
        json_object_set_new(o, "top", tops);
        json_array_append_new(g->chunks, o);
    }
    return interrupted;
}

static char *read_file(const char *path, char *err, size_t errlen) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    while (p) {
        size_t r = fread(p + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (n + 1 == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                p = NULL;
            } else {
                p = q;
            }
        }
    }
    if (f != stdin) fclose(f);
    if (!p) snprintf(err, errlen, "out of memory");
    else p[n] = 0;
    return p;
}

static int num_arg(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < lo || d > hi) {
        fprintf(stderr, "consort generate: %s %s: expected a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    char err[512];
    members_cli cli;
    members_cli_init(&cli);
    const char *prompt = NULL, *prompt_file = NULL;
    int chat = 0, json = 0, logprobs = 0, has_seed = 0, max_tokens = 64;
    double temperature = 0, top_p = 1, min_p = 0, top_k = 0, seed = 0;
    const char *stops[16];
    size_t n_stop = 0;
    for (int i = 1; i < argc;) {
        int n = members_cli_arg(&cli, argc, argv, i, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "consort generate: %s\n", err);
            return 2;
        }
        if (n > 0) {
            i += n;
            continue;
        }
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s%s", help, members_cli_help);
            return 0;
        }
        if (!strcmp(a, "--json")) { json = 1; i++; continue; }
        if (!strcmp(a, "--chat")) { chat = 1; i++; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "consort generate: unknown option or missing value: %s (see --help)\n", a);
            return 2;
        }
        const char *v = argv[i + 1];
        double d;
        if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--prompt-file")) prompt_file = v;
        else if (!strcmp(a, "--max-tokens")) { if (num_arg(a, v, 0, 1e7, &d)) return 2; max_tokens = (int)d; }
        else if (!strcmp(a, "--temperature")) { if (num_arg(a, v, 0, 100, &temperature)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (num_arg(a, v, 0, 1, &top_p)) return 2; }
        else if (!strcmp(a, "--min-p")) { if (num_arg(a, v, 0, 1, &min_p)) return 2; }
        else if (!strcmp(a, "--top-k")) { if (num_arg(a, v, 0, 1e6, &top_k)) return 2; }
        else if (!strcmp(a, "--seed")) { if (num_arg(a, v, 0, 1.8e19, &seed)) return 2; has_seed = 1; }
        else if (!strcmp(a, "--logprobs")) { if (num_arg(a, v, 0, ENSEMBLE_MAX_LOGPROBS, &d)) return 2; logprobs = (int)d; }
        else if (!strcmp(a, "--stop")) {
            if (n_stop >= sizeof stops / sizeof stops[0]) { fprintf(stderr, "consort generate: too many --stop\n"); return 2; }
            stops[n_stop++] = v;
        } else {
            fprintf(stderr, "consort generate: unknown option %s (see --help)\n", a);
            return 2;
        }
        i += 2;
    }
    if (members_cli_check(&cli, err, sizeof err)) {
        fprintf(stderr, "consort generate: %s\n", err);
        return 2;
    }
    if (!!prompt + !!prompt_file != 1) {
        fprintf(stderr, "consort generate: give exactly one of --prompt or --prompt-file\n");
        return 2;
    }
    char *file_text = NULL;
    if (prompt_file) {
        file_text = read_file(prompt_file, err, sizeof err);
        if (!file_text) {
            fprintf(stderr, "consort generate: %s\n", err);
            return 1;
        }
        prompt = file_text;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    members_config mcfg;
    ensemble_config ecfg;
    members_cli_to_config(&cli, &mcfg, &ecfg);
    member_set *ms = members_open(&mcfg, err, sizeof err);
    if (!ms) {
        fprintf(stderr, "consort generate: %s\n", err);
        free(file_text);
        return 1;
    }
    ensemble *e = ensemble_new(ms, &ecfg, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort generate: %s\n", err);
        members_free(ms);
        free(file_text);
        return 2;
    }
    json_t *messages = NULL;
    if (chat) {
        messages = json_array();
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("user"));
        json_object_set_new(m, "content", json_string(prompt));
        json_array_append_new(messages, m);
    }
    ensemble_request req;
    memset(&req, 0, sizeof req);
    req.prompt = chat ? NULL : prompt;
    req.messages = messages;
    req.max_tokens = max_tokens;
    req.temperature = temperature;
    req.top_p = top_p;
    req.min_p = min_p;
    req.top_k = (int)top_k;
    req.has_seed = has_seed;
    req.seed = (uint64_t)seed;
    req.stop = stops;
    req.n_stop = n_stop;
    req.logprobs = logprobs;
    req.threshold = cli.threshold;
    gen_ctx g = {json, json && logprobs ? json_array() : NULL};
    ensemble_result res;
    int rc = ensemble_generate(e, &req, on_chunk, &g, &res);
    int status = 0;
    if (rc != 0) {
        fprintf(stderr, "consort generate: %s (status %d)\n", res.error, res.status);
        status = 1;
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(res.text, res.len));
        json_object_set_new(o, "finish_reason", json_string(res.finish_reason));
        json_object_set_new(o, "strategy", json_string(cli.strategy[0] ? cli.strategy : "mixture"));
        json_object_set_new(o, "steps", json_integer(res.steps));
        json_object_set_new(o, "bytes", json_integer((json_int_t)res.len));
        json_object_set_new(o, "prompt_tokens", json_integer(res.prompt_tokens));
        json_object_set_new(o, "seconds", json_real(res.seconds));
        json_object_set_new(o, "steps_per_second", json_real(res.seconds > 0 ? res.steps / res.seconds : 0));
        json_object_set_new(o, "rounds", json_integer(res.rounds));
        json_object_set_new(o, "second_rounds", json_integer(res.second_rounds));
        json_object_set_new(o, "skipped_rounds", json_integer(res.skipped_rounds));
        json_object_set_new(o, "sessions_recreated", json_integer(res.sessions_recreated));
        json_object_set_new(o, "cpu_seconds", json_real(res.cpu_seconds));
        json_object_set_new(o, "cpu_us_per_step", json_real(res.steps ? 1e6 * res.cpu_seconds / res.steps : 0));
        if (rc) {
            json_object_set_new(o, "status", json_integer(res.status));
            json_object_set_new(o, "error", json_string(res.error));
        }
        json_t *mem = json_array();
        for (size_t i = 0; i < res.n_members; i++) {
            const ensemble_member_stats *s = &res.members[i];
            json_t *m = json_object();
            json_object_set_new(m, "name", json_string(s->name));
            json_object_set_new(m, "url", json_string(members_url(ms, i)));
            json_object_set_new(m, "weight", json_real(s->weight));
            json_object_set_new(m, "failed", json_boolean(s->failed));
            if (s->failed) json_object_set_new(m, "failure", json_string(s->failure));
            json_object_set_new(m, "steps_won", json_integer(s->steps_won));
            json_object_set_new(m, "bytes_proposed_won", json_integer((json_int_t)s->bytes_proposed_won));
            json_object_set_new(m, "mean_step_ms", json_real(s->mean_step_ms));
            json_object_set_new(m, "prompt_tokens", json_integer(s->prompt_tokens));
            json_object_set_new(m, "decoded", json_integer(s->decoded));
            json_array_append_new(mem, m);
        }
        json_object_set_new(o, "members", mem);
        if (g.chunks) json_object_set_new(o, "chunks", g.chunks);
        char *s = json_dumps(o, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else if (rc == 0) {
        putchar('\n');
    }
    ensemble_result_free(&res);
    json_decref(messages);
    ensemble_free(e);
    members_free(ms);
    free(file_text);
    return status;
}
