/* coordinator/cli/cmd_ppl.c: `consort ppl`, held-out perplexity across
 * tokenizers (docs/EVALUATION.md). Members come from members.h (--member
 * NAME=URL or NAME=model.gguf, --weights, ...); each member scores each
 * document with POST /v1/score, concurrently across members; eval_ppl does
 * the rest. Exit status: 0 ok, 1 runtime failure, 2 usage. */
#include "coordinator/cli/cmd_ppl.h"

#include "coordinator/eval/eval_ppl.h"
#include "coordinator/eval/eval_report.h"
#include "coordinator/cli/member_opts.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A member's scores (the protocol's struct) as the evaluation's tokens,
 * checked: spans inside the text, every token scored, the sum consistent. */
static int tokens_of_score(const proto_score_res *res, size_t text_len, ev_token **tok, size_t *n_tok,
                           char *err, size_t errlen) {
    ev_token *t = malloc((res->n_tokens ? res->n_tokens : 1) * sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double sum = 0;
    for (size_t i = 0; i < res->n_tokens; i++) {
        const proto_score_tok *x = &res->tokens[i];
        if (x->end < x->start || x->end > text_len || isnan(x->logprob)) {
            snprintf(err, errlen, "%s token %zu: bad start/end/logprob", PROTO_PATH_SCORE, i);
            free(t);
            return -1;
        }
        t[i] = (ev_token){x->start, x->end, x->logprob, x->entropy, x->top1};
        sum += x->logprob;
    }
    if (fabs(res->sum_logprob - sum) > 1e-6 * (fabs(sum) + 1)) {
        snprintf(err, errlen, "%s: tokens sum to %.9g but the answer's sum is %.9g", PROTO_PATH_SCORE, sum,
                 res->sum_logprob);
        free(t);
        return -1;
    }
    *tok = t;
    *n_tok = res->n_tokens;
    return 0;
}

static int ev_member_score(void *ud, const char *text, size_t len, ev_token **tok, size_t *n_tok,
                           char *err, size_t errlen) {
    ev_member_scorer *s = ud;
    *tok = NULL;
    *n_tok = 0;
    proto_score_req q = {text, len, 1};
    members_score_answer a;
    proto_error pe;
    if (members_score(s->ms, s->i, &q, 3600, &a, &pe)) {
        snprintf(err, errlen, "%s", pe.message);
        return -1;
    }
    int rc = tokens_of_score(&a.res, len, tok, n_tok, err, errlen);
    if (!rc && s->n_ctx) *s->n_ctx = a.res.n_ctx;
    if (!rc && s->overlap) *s->overlap = a.res.window_overlap;
    members_score_release(&a);
    return rc;
}

void ev_member_scorer_init(ev_scorer *sc, ev_member_scorer *ud, member_set *ms, size_t i) {
    memset(sc, 0, sizeof *sc);
    snprintf(sc->name, sizeof sc->name, "%s", members_name(ms, i));
    sc->score = ev_member_score;
    *ud = (ev_member_scorer){ms, i, &sc->n_ctx, &sc->window_overlap};
    sc->ud = ud;
    const proto_info *info = members_info(ms, i);
    sc->doc_start = info ? info->doc_start : -1;
}

static const char ev_ppl_usage[] =
    "usage: consort ppl --member NAME=SPEC ... --file FILE [options]\n"
    "Held-out perplexity of each member and of ensembles, on bytes and words.\n"
    "  --file FILE            JSONL with a \"text\" per line, or plain UTF-8 text (one document)\n"
    "  --strategies LIST      comma-separated: solo:NAME, mixture, product, min_ppl,\n"
    "                         min_ppl_prev, oracle (default: all of them)\n"
    "  --unit word|token|byte units the ensembles are scored on (default word)\n"
    "  --tune-weights DEV     pick mixture/product weights on DEV (EM), report them, then score FILE\n"
    "  --json OUT             write the results as JSON to OUT\n"
    "  --per-doc CSV          write one line per document to CSV\n"
    "  --resamples N          bootstrap resamples (default 1000); --seed S (default 1)\n"
    "  --no-progress          no progress bar (it is only drawn when stderr is a terminal)\n"
    "Shared member options:\n";

static int ev_write_json_file(const char *path, json_t *o) {
    if (json_dump_file(o, path, JSON_INDENT(2) | JSON_REAL_PRECISION(12))) {
        fprintf(stderr, "consort ppl: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int ev_cmd_ppl(int argc, char **argv) {
    char err[1024];
    members_cli cli;
    members_cli_init(&cli);
    const char *file = NULL, *strategies = NULL, *json_out = NULL, *csv_out = NULL, *dev = NULL;
    const char *unit_s = "word";
    unsigned resamples = 1000;
    unsigned long long seed = 1;
    int progress = isatty(2);
    for (int i = 1; i < argc;) {
        int n = members_cli_arg(&cli, argc, argv, i, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "consort ppl: %s\n", err);
            return 2;
        }
        if (n > 0) {
            i += n;
            continue;
        }
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(ev_ppl_usage, stdout);
            fputs(members_cli_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--no-progress")) {
            progress = 0;
            i++;
            continue;
        }
        if (!v) {
            fprintf(stderr, "consort ppl: %s needs a value (or is unknown; see --help)\n", a);
            return 2;
        }
        if (!strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--strategies")) strategies = v;
        else if (!strcmp(a, "--unit")) unit_s = v;
        else if (!strcmp(a, "--json")) json_out = v;
        else if (!strcmp(a, "--per-doc")) csv_out = v;
        else if (!strcmp(a, "--tune-weights")) dev = v;
        else if (!strcmp(a, "--resamples")) resamples = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "consort ppl: unknown option %s (see --help)\n", a);
            return 2;
        }
        i += 2;
    }
    if (!file) {
        fprintf(stderr, "consort ppl: --file is required (see --help)\n");
        return 2;
    }
    if (members_cli_check(&cli, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        return 2;
    }
    if (cli.weights_auto) {
        fprintf(stderr, "consort ppl: --weights auto is a generation setting; use --tune-weights DEV\n");
        return 2;
    }
    int unit = ev_unit_kind_parse(unit_s);
    if (unit < 0) {
        fprintf(stderr, "consort ppl: --unit must be word, token or byte\n");
        return 2;
    }
    size_t M = cli.n;
    const char *names[MEMBERS_MAX];
    for (size_t m = 0; m < M; m++) names[m] = cli.name[m];
    char def[1024] = "";
    if (!strategies) {
        size_t o = 0;
        for (size_t m = 0; m < M; m++) o += (size_t)snprintf(def + o, sizeof def - o, "%ssolo:%s", m ? "," : "", names[m]);
        if (M > 1) snprintf(def + o, sizeof def - o, ",mixture,product,min_ppl,min_ppl_prev,oracle");
        strategies = def;
    }
    ev_strategy *st = NULL;
    size_t ns = 0;
    if (ev_strategy_parse_list(strategies, names, M, &st, &ns, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        return 2;
    }
    double w[MEMBERS_MAX];
    for (size_t m = 0; m < M; m++) w[m] = cli.n_weights ? cli.weights[m] : 1.0;
    if (ev_weights_normalise(w, M)) {
        fprintf(stderr, "consort ppl: weights must be >= 0 and not all 0\n");
        free(st);
        return 2;
    }
    if (unit == EV_UNIT_BYTE)
        fprintf(stderr, "consort ppl: note: token-level scores carry no within-token byte probabilities, "
                        "so --unit byte scores on the finest common partition, the same as --unit token\n");

    ev_corpus c, dc = {0};
    if (ev_corpus_load(file, &c, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        free(st);
        return 1;
    }
    if (dev && ev_corpus_load(dev, &dc, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        ev_corpus_free(&c);
        free(st);
        return 1;
    }
    members_config mcfg;
    members_cli_to_config(&cli, &mcfg, NULL);
    member_set *ms = members_open(&mcfg, err, sizeof err);
    if (!ms) {
        fprintf(stderr, "consort ppl: %s\n", err);
        ev_corpus_free(&c);
        ev_corpus_free(&dc);
        free(st);
        return 1;
    }
    ev_scorer sc[MEMBERS_MAX];
    ev_member_scorer ud[MEMBERS_MAX];
    for (size_t m = 0; m < M; m++) ev_member_scorer_init(&sc[m], &ud[m], ms, m);
    int rc = 0;
    if (dev) {
        if (ev_ppl_tune_weights(&dc, sc, M, (ev_unit_kind)unit, w, err, sizeof err)) {
            fprintf(stderr, "consort ppl: tuning on %s: %s\n", dev, err);
            rc = 1;
        } else {
            printf("weights tuned on %s (%zu documents, EM on %s units):", dev, dc.n, unit_s);
            for (size_t m = 0; m < M; m++) printf(" %s=%.4f", names[m], w[m]);
            printf("\n");
        }
    }
    ev_ppl_result r = {0};
    if (!rc) {
        ev_ppl_opts o = {(ev_unit_kind)unit, st, ns, w, resamples, seed, progress};
        if (ev_ppl_run(&c, sc, M, &o, &r, err, sizeof err)) {
            fprintf(stderr, "consort ppl: %s\n", err);
            rc = 1;
        }
    }
    if (!rc) {
        ev_report_ppl_table(stdout, file, &c, &r);
        fflush(stdout);
        if (json_out) {
            json_t *j = ev_report_ppl_json(file, &c, &r);
            if (dev) json_object_set_new(j, "weights_tuned_on", json_string(dev));
            json_t *mem = json_object_get(j, "members");
            for (size_t m = 0; m < M; m++) {
                json_t *x = json_array_get(mem, m);
                json_object_set_new(x, "url", json_string(members_url(ms, m)));
                if (sc[m].doc_start >= 0) json_object_set_new(x, "doc_start", json_integer(sc[m].doc_start));
                if (members_model(ms, m)) json_object_set_new(x, "model", json_string(members_model(ms, m)));
            }
            if (ev_write_json_file(json_out, j)) rc = 1;
            json_decref(j);
        }
        if (csv_out) {
            FILE *f = fopen(csv_out, "w");
            if (!f || ev_report_ppl_csv(f, &r)) {
                fprintf(stderr, "consort ppl: cannot write %s\n", csv_out);
                rc = 1;
            }
            if (f && fclose(f)) rc = 1;
        }
    }
    ev_ppl_result_free(&r);
    members_free(ms);
    ev_corpus_free(&c);
    ev_corpus_free(&dc);
    free(st);
    return rc;
}
