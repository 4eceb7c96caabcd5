/* coordinator/cli/cmd_generate.c: `consort generate`: one request through the
 * engine (ensemble.h), text on stdout as it is produced, or one JSON object
 * with the text and the statistics (--json). */
#include "coordinator/cli/commands.h"
#include "common/sbuf.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/cli/member_opts.h"
#include "sampler/registry.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

enum { G_PROMPT = 1, G_PROMPT_FILE, G_CHAT, G_MAX_TOKENS, G_TEMPERATURE, G_TOP_K, G_TOP_P, G_MIN_P, G_SEED,
       G_STOP, G_JSON, G_LOGPROBS };

static const opt_spec gen_options[] = {
    {"prompt", "p", OPT_VALUE, G_PROMPT, "TEXT", "the prompt (raw text)"},
    {"prompt-file", "f", OPT_VALUE, G_PROMPT_FILE, "FILE", "read the prompt from a file ('-' = stdin)"},
    {"chat", NULL, OPT_FLAG, G_CHAT, NULL, "send the prompt as one user chat message"},
    {"max-tokens", "n", OPT_VALUE, G_MAX_TOKENS, "N", "steps to generate (default 64)"},
    {"temperature", NULL, OPT_VALUE, G_TEMPERATURE, "T", "0 = greedy (default 0); also --temp"},
    {"temp", NULL, OPT_VALUE, G_TEMPERATURE, "T", NULL},
    {"top-k", NULL, OPT_VALUE, G_TOP_K, "K", "keep the K most likely choices (0 = off, the default)"},
    {"top-p", NULL, OPT_VALUE, G_TOP_P, "P", "nucleus filter (1 = off, the default)"},
    {"min-p", NULL, OPT_VALUE, G_MIN_P, "P", "drop choices below P times the best (0 = off, the default)"},
    {"seed", "s", OPT_VALUE, G_SEED, "S", "seed of the sampler, 0 to 2^64-1 (same seed, same output)"},
    {"stop", NULL, OPT_VALUE, G_STOP, "TEXT", "stop sequence (repeatable; not included in the output)"},
    {"json", NULL, OPT_FLAG, G_JSON, NULL, "print one JSON object: text, seed and statistics"},
    {"logprobs", NULL, OPT_VALUE, G_LOGPROBS, "N", "with --json: each chunk and its N best alternatives"},
    OPT_SPEC_END};

static void usage(FILE *f) {
    fprintf(f, "usage: consort generate --member NAME=SPEC [--member ...] --prompt TEXT [options]\n"
               "\n"
               "Generates text once from a prompt with the ensemble and prints it.\n"
               "\n");
    opt_help(f, gen_options);
    opt_help(f, cli_std_options);
    fprintf(f, "\nmember options (shared by every command):\n");
    opt_help(f, members_cli_opts);
    sreg_fprint_help(f, SREG_GENERATION);
}

/* The seed as a decimal string: JSON readers (JavaScript's among them)
 * would round a 64-bit integer above 2^53. */
static json_t *seed_json(uint64_t seed) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, seed);
    return json_string(buf);
}

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
    sbuf b = {0};
    int bad = sb_read_file(&b, f); /* b.p is a string even for an empty file */
    if (f != stdin) fclose(f);
    if (bad) {
        sb_free(&b);
        snprintf(err, errlen, "cannot read %s", path);
    }
    return b.p;
}

typedef struct {
    members_cli cli;
    const char *prompt, *prompt_file;
    int chat, json, logprobs, has_seed, max_tokens, top_k;
    double temperature, top_p, min_p;
    uint64_t seed;
    const char *stops[16];
    size_t n_stop;
} gen_args;

static int add_stop(gen_args *a, const char *v, char *err, size_t errlen) {
    if (a->n_stop >= sizeof a->stops / sizeof a->stops[0]) {
        snprintf(err, errlen, "--stop: at most %zu stop sequences", sizeof a->stops / sizeof a->stops[0]);
        return -1;
    }
    a->stops[a->n_stop++] = v;
    return 0;
}

/* One of generate's own options into a: 0, or -1 with err. */
static int set_option(gen_args *a, int id, const char *v, char *err, size_t errlen) {
    switch (id) {
    case G_PROMPT: a->prompt = v; return 0;
    case G_PROMPT_FILE: a->prompt_file = v; return 0;
    case G_CHAT: a->chat = 1; return 0;
    case G_JSON: a->json = 1; return 0;
    case G_MAX_TOKENS: return opt_int("--max-tokens", v, 0, 10000000, &a->max_tokens, err, errlen);
    case G_TEMPERATURE: return opt_double("--temperature", v, 0, 100, &a->temperature, err, errlen);
    case G_TOP_K: return opt_int("--top-k", v, 0, 1000000, &a->top_k, err, errlen);
    case G_TOP_P: return opt_double("--top-p", v, 0, 1, &a->top_p, err, errlen);
    case G_MIN_P: return opt_double("--min-p", v, 0, 1, &a->min_p, err, errlen);
    case G_SEED: a->has_seed = 1; return opt_u64("--seed", v, 0, UINT64_MAX, &a->seed, err, errlen);
    case G_LOGPROBS: return opt_int("--logprobs", v, 0, ENSEMBLE_MAX_LOGPROBS, &a->logprobs, err, errlen);
    case G_STOP: return add_stop(a, v, err, errlen);
    }
    snprintf(err, errlen, "option %d is not handled (a bug)", id);
    return -1;
}

/* Returns -1 to go on, else the exit status (0 after --help/--version). */
static int parse_args(gen_args *a, int argc, char **argv) {
    const opt_spec *const tables[] = {gen_options, members_cli_opts, cli_std_options, NULL};
    opt_parser p;
    opt_begin(&p, "consort generate", tables, argc, argv);
    const char *v;
    char err[512];
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        int r = cli_std_option(id, usage);
        if (r >= 0) return r;
        r = members_cli_set(&a->cli, id, v, err, sizeof err);
        if (r == 0) r = set_option(a, id, v, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "consort generate: %s\n", err);
            return 2;
        }
    }
    if (members_cli_check(&a->cli, err, sizeof err)) {
        fprintf(stderr, "consort generate: %s\n", err);
        return 2;
    }
    if (!!a->prompt + !!a->prompt_file != 1) {
        fprintf(stderr, "consort generate: give exactly one of --prompt or --prompt-file\n");
        return 2;
    }
    return -1;
}

int cmd_generate(int argc, char **argv) {
    char err[512];
    gen_args a = {.max_tokens = 64, .top_p = 1};
    members_cli_init(&a.cli);
    int usage_status = parse_args(&a, argc, argv);
    if (usage_status >= 0) return usage_status;
    const char *prompt = a.prompt, *prompt_file = a.prompt_file;
    int chat = a.chat, json = a.json;
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
    members_cli_to_config(&a.cli, &mcfg, &ecfg);
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
    req.max_tokens = a.max_tokens;
    req.temperature = a.temperature;
    req.top_p = a.top_p;
    req.min_p = a.min_p;
    req.top_k = a.top_k;
    req.has_seed = a.has_seed;
    req.seed = a.seed;
    req.stop = a.stops;
    req.n_stop = a.n_stop;
    req.logprobs = a.logprobs;
    req.threshold = a.cli.threshold;
    gen_ctx g = {json, json && a.logprobs ? json_array() : NULL};
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
        json_object_set_new(o, "strategy", json_string(a.cli.strategy[0] ? a.cli.strategy : "mixture"));
        json_object_set_new(o, "seed", a.has_seed ? seed_json(a.seed) : json_null());
        json_object_set_new(o, "steps", json_integer(res.steps));
        json_object_set_new(o, "bytes", json_integer((json_int_t)res.len));
        json_object_set_new(o, "prompt_tokens", json_integer(res.prompt_tokens));
        json_object_set_new(o, "seconds", json_real(res.seconds));
        json_object_set_new(o, "steps_per_second", json_real(res.seconds > 0 ? res.steps / res.seconds : 0));
        json_object_set_new(o, "rounds", json_integer(res.rounds));
        json_object_set_new(o, "second_rounds", json_integer(res.second_rounds));
        json_object_set_new(o, "skipped_rounds", json_integer(res.skipped_rounds));
        json_object_set_new(o, "sessions_recreated", json_integer(res.sessions_recreated));
        if (res.speculative) {
            json_object_set_new(o, "speculative_drafted", json_integer(res.spec_drafted));
            json_object_set_new(o, "speculative_accepted", json_integer(res.spec_accepted));
        }
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
