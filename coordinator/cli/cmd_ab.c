/* coordinator/cli/cmd_ab.c: `consort ab`, an A/B comparison of strategies
 * (docs/EVALUATION.md). Generates with each strategy for each prompt through
 * ensemble_generate, scores every output (given its prompt) under every
 * member and an optional judge with POST /v1/score, and writes
 * DIR/report.md, DIR/report.json and DIR/report.svg (eval_ab.h). */
#include "coordinator/cli/cmd_ppl.h"
#include "coordinator/cli/commands.h"

#include "coordinator/eval/eval_ab.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/cli/member_opts.h"
#include "sampler/registry.h"

#include "common/version.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { AB_PROMPTS = 1, AB_STRATEGIES, AB_MAX_TOKENS, AB_TEMPERATURE, AB_SEED, AB_JUDGE, AB_OUT, AB_RESAMPLES };

static const opt_spec ab_options[] = {
    {"prompts", NULL, OPT_VALUE, AB_PROMPTS, "FILE",
     "JSONL with a \"prompt\" (or \"text\") per line, else one prompt per line"},
    {"strategies", NULL, OPT_VALUE, AB_STRATEGIES, "LIST",
     "comma-separated generation strategies (listed below)"},
    {"max-tokens", "n", OPT_VALUE, AB_MAX_TOKENS, "N", "steps per output (default 48)"},
    {"temperature", NULL, OPT_VALUE, AB_TEMPERATURE, "T", "default 0 (greedy); also --temp"},
    {"temp", NULL, OPT_VALUE, AB_TEMPERATURE, "T", NULL},
    {"seed", "s", OPT_VALUE, AB_SEED, "S", "sampling seed, 0 to 2^64-1 (default 1)"},
    {"judge", NULL, OPT_VALUE, AB_JUDGE, "NAME=SPEC", "a model that is not in the ensemble, to score every output"},
    {"out", NULL, OPT_VALUE, AB_OUT, "DIR", "where report.md, report.json, report.svg go (default ab-report)"},
    {"resamples", NULL, OPT_VALUE, AB_RESAMPLES, "N", "bootstrap resamples (default 1000)"},
    OPT_SPEC_END};

static void ev_ab_usage(FILE *f) {
    fprintf(f, "usage: consort ab --member NAME=SPEC ... --prompts PROMPTS --strategies S1,S2,... [options]\n"
               "Generate with each strategy for each prompt; compare quality, speed, repetition, agreement.\n");
    opt_help(f, ab_options);
    opt_help(f, cli_std_options);
    fprintf(f, "Shared member options:\n");
    opt_help(f, members_cli_opts);
    sreg_fprint_help(f, SREG_GENERATION);
}

typedef struct {
    members_cli cli;
    const char *prompts_path, *strategies, *judge, *out_dir;
    int max_tokens, resamples;
    double temperature;
    uint64_t seed;
} ab_args;

/* One of ab's own options into a: 0, or -1 with err. */
static int ab_set_option(ab_args *a, int id, const char *v, char *err, size_t errlen) {
    switch (id) {
    case AB_PROMPTS: a->prompts_path = v; return 0;
    case AB_STRATEGIES: a->strategies = v; return 0;
    case AB_JUDGE: a->judge = v; return 0;
    case AB_OUT: a->out_dir = v; return 0;
    case AB_MAX_TOKENS: return opt_int("--max-tokens", v, 0, 10000000, &a->max_tokens, err, errlen);
    case AB_TEMPERATURE: return opt_double("--temperature", v, 0, 100, &a->temperature, err, errlen);
    case AB_SEED: return opt_u64("--seed", v, 0, UINT64_MAX, &a->seed, err, errlen);
    case AB_RESAMPLES: return opt_int("--resamples", v, 1, 10000000, &a->resamples, err, errlen);
    }
    snprintf(err, errlen, "option %d is not handled (a bug)", id);
    return -1;
}

/* Returns -1 to go on, else the exit status (0 after --help/--version). */
static int ab_parse_args(ab_args *a, int argc, char **argv) {
    const opt_spec *const tables[] = {ab_options, members_cli_opts, cli_std_options, NULL};
    opt_parser p;
    opt_begin(&p, "consort ab", tables, argc, argv);
    const char *v;
    char err[512];
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        int r = cli_std_option(id, ev_ab_usage);
        if (r >= 0) return r;
        r = members_cli_set(&a->cli, id, v, err, sizeof err);
        if (r == 0) r = ab_set_option(a, id, v, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "consort ab: %s\n", err);
            return 2;
        }
    }
    if (!a->prompts_path || !a->strategies) {
        fprintf(stderr, "consort ab: --prompts and --strategies are required (see --help)\n");
        return 2;
    }
    if (members_cli_check(&a->cli, err, sizeof err)) {
        fprintf(stderr, "consort ab: %s\n", err);
        return 2;
    }
    return -1;
}

static int ev_load_prompts(const char *path, char ***out, size_t *n, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    char **v = NULL;
    size_t k = 0;
    int first = 1, jsonl = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (first) {
            jsonl = line[0] == '{';
            first = 0;
        }
        char *p = NULL;
        if (jsonl) {
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            json_t *t = json_object_get(o, "prompt");
            if (!json_is_string(t)) t = json_object_get(o, "text");
            if (!json_is_string(t)) {
                snprintf(err, errlen, "%s: line %zu: want an object with a string \"prompt\"", path, k + 1);
                json_decref(o);
                free(line);
                fclose(f);
                for (size_t i = 0; i < k; i++) free(v[i]);
                free(v);
                return -1;
            }
            p = strdup(json_string_value(t));
            json_decref(o);
        } else {
            p = strdup(line);
        }
        char **nv = realloc(v, (k + 1) * sizeof *v);
        if (!nv || !p) {
            free(p);
            break;
        }
        v = nv;
        v[k++] = p;
    }
    free(line);
    fclose(f);
    if (!k) {
        snprintf(err, errlen, "%s: no prompts", path);
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

/* A scorer that never fails the whole report: an output a scorer cannot
 * score (e.g. text its tokenizer cannot represent) gets no figure from it,
 * with a warning. */
typedef struct {
    ev_scorer inner;
    int warned;
} ev_tolerant;

static int ev_tolerant_score(void *ud, const char *text, size_t len, ev_token **tok, size_t *n,
                             char *err, size_t errlen) {
    ev_tolerant *t = ud;
    if (t->inner.score(t->inner.ud, text, len, tok, n, err, errlen) == 0) return 0;
    if (t->warned++ < 3) fprintf(stderr, "consort ab: %s could not score an output: %s\n", t->inner.name, err);
    *tok = NULL;
    *n = 0;
    return 0;
}

static int ev_ab_chunk(void *ud, const ensemble_chunk *c) {
    (void)ud;
    (void)c;
    return 0;
}

/* The figure's caption: members and their models, the judge, the
 * settings, the date and the version (malloc'ed; NULL out of memory). */
static char *ab_caption(member_set *ms, size_t M, const char *judge, const char *judge_spec, size_t P,
                        int max_tokens, double temperature, uint64_t seed, double threshold) {
    char buf[2048];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "Members:");
    for (size_t m = 0; m < M && n < sizeof buf; m++) {
        const char *model = members_model(ms, m);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s %s (%s)", m ? "," : "", members_name(ms, m),
                              model ? model : members_url(ms, m));
    }
    if (n < sizeof buf)
        n += (size_t)snprintf(buf + n, sizeof buf - n, ". Judge: %s%s%s%s. ", judge ? judge : "none (the members' mean)",
                              judge ? " (" : "", judge ? judge_spec : "", judge ? ")" : "");
    time_t now = time(NULL);
    struct tm tm;
    char date[32] = "";
    if (gmtime_r(&now, &tm)) strftime(date, sizeof date, "%Y-%m-%d", &tm);
    if (n < sizeof buf)
        snprintf(buf + n, sizeof buf - n,
                 "%zu prompts, at most %d steps, temperature %g, seed %llu, selective threshold %g; "
                 "95%% intervals from a bootstrap over prompts. %s, consort %s.",
                 P, max_tokens, temperature, (unsigned long long)seed, threshold > 0 ? threshold : 0.5, date,
                 CONSORT_VERSION);
    return strdup(buf);
}

int ev_cmd_ab(int argc, char **argv) {
    char err[1024];
    ab_args a = {.out_dir = "ab-report", .max_tokens = 48, .resamples = 1000, .seed = 1};
    members_cli_init(&a.cli);
    int usage_status = ab_parse_args(&a, argc, argv);
    if (usage_status >= 0) return usage_status;
    const members_cli *cli = &a.cli;
    const char *prompts_path = a.prompts_path, *strategies = a.strategies, *judge = a.judge, *out_dir = a.out_dir;
    int max_tokens = a.max_tokens;
    double temperature = a.temperature;
    uint64_t seed = a.seed;
    unsigned resamples = (unsigned)a.resamples;
    char judge_name[MEMBERS_NAME_MAX] = "", judge_spec[512] = "";
    if (judge) {
        const char *eq = strchr(judge, '=');
        if (!eq || eq == judge || !eq[1] || (size_t)(eq - judge) >= sizeof judge_name) {
            fprintf(stderr, "consort ab: --judge wants NAME=SPEC\n");
            return 2;
        }
        memcpy(judge_name, judge, (size_t)(eq - judge));
        snprintf(judge_spec, sizeof judge_spec, "%s", eq + 1);
        for (size_t m = 0; m < cli->n; m++)
            if (!strcmp(cli->name[m], judge_name)) {
                fprintf(stderr, "consort ab: the judge must not be a member of the ensemble (%s)\n", judge_name);
                return 2;
            }
    }
    /* strategies list */
    char *sdup = strdup(strategies);
    char *slist[64];
    size_t S = 0;
    char *save = NULL;
    for (char *t = strtok_r(sdup, ",", &save); t && S < 64; t = strtok_r(NULL, ",", &save))
        if (*t) slist[S++] = t;
    for (size_t s = 0; s < S; s++) {
        sstrat parsed;
        if (sstrat_parse(slist[s], &parsed, err, sizeof err)) {
            fprintf(stderr, "consort ab: %s\n", err);
            free(sdup);
            return 2;
        }
    }
    char **prompts = NULL;
    size_t P = 0;
    if (!S || ev_load_prompts(prompts_path, &prompts, &P, err, sizeof err)) {
        fprintf(stderr, "consort ab: %s\n", S ? err : "no strategies");
        free(sdup);
        return 2;
    }
    int rc = 0;
    members_config mcfg;
    ensemble_config ecfg;
    members_cli_to_config(cli, &mcfg, &ecfg);
    ecfg.strategy[0] = 0; /* each run names its strategy */
    member_set *ms = members_open(&mcfg, err, sizeof err), *js = NULL;
    ensemble *e = NULL;
    ev_ab *ab = NULL;
    if (!ms) {
        fprintf(stderr, "consort ab: %s\n", err);
        rc = 1;
        goto done;
    }
    if (judge) {
        js = members_new();
        if (!js || members_add(js, judge_name, judge_spec, err, sizeof err) ||
            members_connect(js, &mcfg, err, sizeof err)) {
            fprintf(stderr, "consort ab: judge: %s\n", err);
            rc = 1;
            goto done;
        }
    }
    e = ensemble_new(ms, &ecfg, err, sizeof err);
    if (!e) {
        fprintf(stderr, "consort ab: %s\n", err);
        rc = 1;
        goto done;
    }
    for (size_t s = 0; s < S; s++)
        if (ensemble_strategy_valid(e, slist[s], err, sizeof err)) {
            fprintf(stderr, "consort ab: strategy %s: %s\n", slist[s], err);
            rc = 2;
            goto done;
        }
    size_t M = members_count(ms), K = M + (js ? 1 : 0);
    ab = ev_ab_new(P, S, M, K);
    if (!ab) {
        fprintf(stderr, "consort ab: out of memory\n");
        rc = 1;
        goto done;
    }
    ab->has_judge = js != NULL;
    ab->max_tokens = max_tokens;
    ab->temperature = temperature;
    ab->has_seed = 1;
    ab->seed = seed;
    ab->resamples = resamples;
    for (size_t s = 0; s < S; s++) snprintf(ab->strategies[s], sizeof ab->strategies[s], "%s", slist[s]);
    for (size_t m = 0; m < M; m++) snprintf(ab->scorers[m], sizeof ab->scorers[m], "%s", members_name(ms, m));
    if (js) snprintf(ab->scorers[M], sizeof ab->scorers[M], "%s", judge_name);
    ab->caption = ab_caption(ms, M, js ? judge_name : NULL, js ? judge_spec : NULL, P, max_tokens, temperature, seed,
                             cli->threshold);
    int tty = isatty(2);
    for (size_t p = 0; p < P; p++) {
        ab->prompts[p] = prompts[p];
        prompts[p] = NULL;
        for (size_t s = 0; s < S; s++) {
            if (tty) fprintf(stderr, "\rgenerating: prompt %zu/%zu, strategy %s        ", p + 1, P, slist[s]);
            ensemble_request req;
            memset(&req, 0, sizeof req);
            req.prompt = ab->prompts[p];
            req.max_tokens = max_tokens;
            req.temperature = temperature;
            req.top_p = 1;
            req.has_seed = 1;
            req.seed = seed;
            req.strategy = slist[s];
            req.threshold = cli->threshold;
            ensemble_result res;
            memset(&res, 0, sizeof res);
            ev_ab_output *o = &ab->out[p * S + s];
            ensemble_generate(e, &req, ev_ab_chunk, NULL, &res);
            o->status = res.status;
            if (res.status) {
                snprintf(o->error, sizeof o->error, "%s", res.error);
            } else {
                o->text = malloc(res.len + 1);
                if (o->text) {
                    memcpy(o->text, res.text, res.len);
                    o->text[res.len] = 0;
                    o->len = res.len;
                }
                o->steps = res.steps;
                o->seconds = res.seconds;
                snprintf(o->finish, sizeof o->finish, "%s", res.finish_reason ? res.finish_reason : "");
                for (size_t k = 0; k < res.n_members; k++) {
                    int mi = members_index(ms, res.members[k].name);
                    if (mi >= 0 && !res.members[k].failed && res.members[k].mean_step_ms > 0)
                        o->step_ms[mi] = res.members[k].mean_step_ms;
                    if (mi >= 0) {
                        o->steps_won[mi] = res.members[k].steps_won;
                        o->bytes_won[mi] = (double)res.members[k].bytes_proposed_won;
                    }
                }
                o->lead_alone = res.lead_alone_steps;
            }
            ensemble_result_free(&res);
        }
    }
    if (tty) fputc('\n', stderr);
    /* score prompt + output under every member and the judge, concurrently */
    {
        ev_corpus c = {0};
        for (size_t i = 0; i < P * S; i++) {
            const ev_ab_output *o = &ab->out[i];
            size_t pl = strlen(ab->prompts[i / S]);
            char *t = malloc(pl + o->len + 1);
            if (!t) break;
            memcpy(t, ab->prompts[i / S], pl);
            if (o->len) memcpy(t + pl, o->text, o->len);
            ev_corpus_add(&c, t, o->status ? 0 : pl + o->len); /* failed outputs: nothing to score */
            free(t);
        }
        ev_scorer sc[CONSORT_MAX_MEMBERS + 1];
        ev_member_scorer ud[CONSORT_MAX_MEMBERS + 1];
        ev_tolerant tol[CONSORT_MAX_MEMBERS + 1];
        for (size_t k = 0; k < K; k++) {
            ev_member_scorer_init(&tol[k].inner, &ud[k], k < M ? ms : js, k < M ? k : 0);
            tol[k].warned = 0;
            sc[k] = tol[k].inner;
            sc[k].score = ev_tolerant_score;
            sc[k].ud = &tol[k];
        }
        ev_token **scores = NULL;
        size_t *n_scores = NULL;
        if (c.n != P * S || ev_score_corpus(&c, sc, K, tty, &scores, &n_scores, NULL, err, sizeof err)) {
            fprintf(stderr, "consort ab: scoring outputs: %s\n", c.n != P * S ? "out of memory" : err);
            rc = 1;
        } else {
            for (size_t i = 0; i < P * S; i++) {
                ev_ab_output *o = &ab->out[i];
                if (o->status) continue;
                size_t pl = strlen(ab->prompts[i / S]);
                for (size_t k = 0; k < K; k++) {
                    if (!scores[k * c.n + i] && c.docs[i].len) continue; /* not scored: stays NaN */
                    ev_ab_conditional(scores[k * c.n + i], n_scores[k * c.n + i], pl, pl + o->len, &o->nll[k],
                                      &o->bytes[k]);
                }
            }
            ev_scores_free(scores, n_scores, K * c.n);
        }
        ev_corpus_free(&c);
    }
    if (!rc) {
        if (ev_ab_write_reports(ab, out_dir, err, sizeof err)) {
            fprintf(stderr, "consort ab: %s\n", err);
            rc = 1;
        } else {
            printf("wrote %s/report.md, %s/report.json, %s/report.svg\n", out_dir, out_dir, out_dir);
        }
    }
done:
    ev_ab_free(ab);
    ensemble_free(e);
    members_free(js);
    members_free(ms);
    if (prompts)
        for (size_t p = 0; p < P; p++) free(prompts[p]);
    free(prompts);
    free(sdup);
    return rc;
}
