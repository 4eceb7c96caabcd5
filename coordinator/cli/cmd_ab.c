/* coordinator/cli/cmd_ab.c: `consort ab`, an A/B comparison of strategies
 * (docs/EVALUATION.md). Generates with each strategy for each prompt through
 * ensemble_generate, scores every output (given its prompt) under every
 * member and an optional judge with POST /v1/score, and writes
 * DIR/report.md, DIR/report.json and DIR/report.svg (eval_ab.h). */
#include "coordinator/cli/cmd_ppl.h"

#include "coordinator/eval/eval_ab.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/cli/member_opts.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char ev_ab_usage[] =
    "usage: consort ab --member NAME=SPEC ... --prompts PROMPTS --strategies S1,S2,... [options]\n"
    "Generate with each strategy for each prompt; compare quality, speed, repetition, agreement.\n"
    "  --prompts FILE      JSONL with a \"prompt\" (or \"text\") per line, else one prompt per line\n"
    "  --strategies LIST   comma-separated strategies (solo:NAME, mixture, product, min_ppl, ...)\n"
    "  --max-tokens N      steps per output (default 48)\n"
    "  --temperature T     default 0 (greedy)\n"
    "  --seed S            sampling seed (default 1)\n"
    "  --judge NAME=SPEC   a model that is not in the ensemble, to score every output\n"
    "  --out DIR           where report.md, report.json, report.svg go (default ab-report)\n"
    "  --resamples N       bootstrap resamples (default 1000)\n"
    "Shared member options:\n";

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

int ev_cmd_ab(int argc, char **argv) {
    char err[1024];
    members_cli cli;
    members_cli_init(&cli);
    const char *prompts_path = NULL, *strategies = NULL, *judge = NULL, *out_dir = "ab-report";
    int max_tokens = 48;
    double temperature = 0;
    unsigned long long seed = 1;
    unsigned resamples = 1000;
    for (int i = 1; i < argc;) {
        int n = members_cli_arg(&cli, argc, argv, i, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "consort ab: %s\n", err);
            return 2;
        }
        if (n > 0) {
            i += n;
            continue;
        }
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(ev_ab_usage, stdout);
            fputs(members_cli_help, stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "consort ab: %s needs a value (or is unknown; see --help)\n", a);
            return 2;
        }
        if (!strcmp(a, "--prompts")) prompts_path = v;
        else if (!strcmp(a, "--strategies")) strategies = v;
        else if (!strcmp(a, "--max-tokens")) max_tokens = atoi(v);
        else if (!strcmp(a, "--temperature")) temperature = atof(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--judge")) judge = v;
        else if (!strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--resamples")) resamples = (unsigned)strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "consort ab: unknown option %s (see --help)\n", a);
            return 2;
        }
        i += 2;
    }
    if (!prompts_path || !strategies) {
        fprintf(stderr, "consort ab: --prompts and --strategies are required (see --help)\n");
        return 2;
    }
    if (max_tokens < 0 || temperature < 0) {
        fprintf(stderr, "consort ab: --max-tokens and --temperature must be >= 0\n");
        return 2;
    }
    if (members_cli_check(&cli, err, sizeof err)) {
        fprintf(stderr, "consort ab: %s\n", err);
        return 2;
    }
    char judge_name[MEMBERS_NAME_MAX] = "", judge_spec[512] = "";
    if (judge) {
        const char *eq = strchr(judge, '=');
        if (!eq || eq == judge || !eq[1] || (size_t)(eq - judge) >= sizeof judge_name) {
            fprintf(stderr, "consort ab: --judge wants NAME=SPEC\n");
            return 2;
        }
        memcpy(judge_name, judge, (size_t)(eq - judge));
        snprintf(judge_spec, sizeof judge_spec, "%s", eq + 1);
        for (size_t m = 0; m < cli.n; m++)
            if (!strcmp(cli.name[m], judge_name)) {
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
    members_cli_to_config(&cli, &mcfg, &ecfg);
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
            req.threshold = cli.threshold;
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
                }
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
        ev_scorer sc[MEMBERS_MAX + 1];
        ev_member_scorer ud[MEMBERS_MAX + 1];
        ev_tolerant tol[MEMBERS_MAX + 1];
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
