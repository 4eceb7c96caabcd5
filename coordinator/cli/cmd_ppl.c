/* coordinator/cli/cmd_ppl.c: `consort ppl`, held-out perplexity across
 * tokenizers (docs/EVALUATION.md). Members come from members.h (--member
 * NAME=URL or NAME=model.gguf, --weights, ...); each member scores each
 * document with POST /v1/score, concurrently across members; the
 * step-level rules (mixture, product, pool, selective) walk each document
 * through the engine's own steps (ensemble_score_text), byte_pool through
 * the members' next-byte masses (ensemble_score_bytes); eval_ppl does the
 * rest. Exit status: 0 ok, 1 runtime failure, 2 usage. */
#include "coordinator/cli/cmd_ppl.h"
#include "coordinator/cli/commands.h"

#include "coordinator/engine/ensemble.h"
#include "coordinator/eval/eval_byte_pool.h"
#include "coordinator/eval/eval_ppl.h"
#include "coordinator/eval/eval_report.h"
#include "coordinator/eval/eval_tune.h"
#include "coordinator/cli/member_opts.h"
#include "sampler/registry.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A member's scores (the protocol's struct) as the evaluation's tokens,
 * checked by ev_tokens_check (spans inside the text, the sum consistent). */
static int tokens_of_score(const proto_score_res *res, size_t text_len, ev_token **tok, size_t *n_tok,
                           char *err, size_t errlen) {
    ev_token *t = malloc((res->n_tokens ? res->n_tokens : 1) * sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < res->n_tokens; i++) {
        const proto_score_tok *x = &res->tokens[i];
        t[i] = (ev_token){x->start, x->end, x->logprob, x->entropy, x->top1};
    }
    char why[200];
    if (ev_tokens_check(t, res->n_tokens, text_len, res->sum_logprob, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", PROTO_PATH_SCORE, why);
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

/* ---- byte_pool: the text byte by byte (eval_byte_pool.h) ------------------- */

typedef struct {
    const char *text;
    const double *alpha;
    size_t n_members;
    double lp;
    ev_byte_pool_stats *st;
    ev_bpool_tune_set *rec;
} byte_pool_walk;

static int byte_pool_on_byte(void *ud, size_t pos, const double *lq, size_t M) {
    byte_pool_walk *b = ud;
    int event = (unsigned char)b->text[pos];
    for (size_t m = 0; m < M && m < b->n_members; m++) {
        if (!(b->alpha[m] > 0)) continue;
        b->st->member_bytes[m]++;
        if (fabs(ev_bpool_mass_sum(lq + m * EV_BPOOL_EVENTS) - 1) > EV_BPOOL_DEVIATION) b->st->deviating[m]++;
    }
    b->lp += ev_bpool_logp(lq, M, b->alpha, event);
    if (b->rec && ev_bpool_tune_add(b->rec, lq, event)) return -1;
    return 0;
}

int ev_byte_pool_doc(ensemble *e, const double *alpha, size_t M, int beam, const char *text, size_t len, double *lp,
                     ev_byte_pool_stats *st, ev_bpool_tune_set *rec, char *err, size_t errlen) {
    *lp = 0;
    byte_pool_walk b = {text, alpha, M, 0, st, rec};
    ensemble_bytes_request q = {.take_part = alpha, .n_take_part = M, .text = text, .len = len,
                                .on_byte = byte_pool_on_byte, .ud = &b, .beam = beam};
    ensemble_bytes_result res;
    int rc = ensemble_score_bytes(e, &q, &res);
    st->bytes += (long)res.bytes;
    st->windows += res.windows;
    st->rounds += res.rounds;
    st->decoded += res.decoded;
    st->seconds += res.seconds;
    if (rc) {
        snprintf(err, errlen, "%s", res.error);
        return -1;
    }
    *lp = b.lp;
    return 0;
}

/* The first bytes of each dev document that tuning walks: the records take
 * 257 floats per member per byte (about 3 KB per byte with three members).
 * The covering walk (beam > 0) costs one call per member per document, so
 * it tunes on three times the bytes of the per-byte walk. */
#define PPL_BYTE_POOL_TUNE_BYTES 1000
#define PPL_BYTE_POOL_TUNE_BYTES_COVERING 3000

/* byte_pool's default beam (--byte-beam): member a alone on 1,500 held-out
 * bytes scored 1.6292, 1.6293, 1.6294 bits/byte with beams 4, 16, 64 and
 * 2.19 with 1 (bench/RESULTS.md, "byte_pool"): 4 is as good and the fastest. */
#define PPL_BYTE_BEAM_DEFAULT 4

/* The step-level rows: each document through ensemble_score_text, with
 * per-strategy totals for the notes printed after the table; byte_pool
 * rows through ev_byte_pool_doc. */
#define PPL_MAX_STEP_ROWS 16
typedef struct {
    ensemble *e;
    int have_w;                       /* weights tuned through the steps (else the rows' weights) */
    double w[CONSORT_MAX_MEMBERS];
    double bp_alpha[CONSORT_MAX_MEMBERS]; /* byte_pool's exponents */
    int bp_beam;                      /* --byte-beam (0: the per-byte step walk) */
    ev_byte_pool_stats bp;
    int bp_used;
    struct {
        char name[80];
        long steps, rest_steps, windows, bytes;
        double seconds;
    } row[PPL_MAX_STEP_ROWS];
    size_t n_rows;
} ppl_steps_ud;

static int ppl_steps(void *ud, const ev_strategy *s, const double *w, size_t M, const char *text, size_t len,
                     double *lp, char *err, size_t errlen) {
    ppl_steps_ud *u = ud;
    *lp = 0;
    if (!len) return 0;
    if (s->kind == SREG_BYTE_POOL) {
        u->bp_used = 1;
        return ev_byte_pool_doc(u->e, u->bp_alpha, M, u->bp_beam, text, len, lp, &u->bp, NULL, err, errlen);
    }
    ensemble_score_request q = {s->name, u->have_w ? u->w : w, M, "", text, len, NULL, NULL};
    ensemble_score_result res;
    if (ensemble_score_text(u->e, &q, &res)) {
        snprintf(err, errlen, "%s", res.error);
        return -1;
    }
    *lp = res.logprob;
    size_t k = 0;
    while (k < u->n_rows && strcmp(u->row[k].name, s->name)) k++;
    if (k == u->n_rows && k < PPL_MAX_STEP_ROWS) snprintf(u->row[u->n_rows++].name, sizeof u->row[k].name, "%s", s->name);
    if (k < u->n_rows) {
        u->row[k].steps += res.steps;
        u->row[k].rest_steps += res.rest_steps;
        u->row[k].windows += res.windows;
        u->row[k].bytes += (long)res.bytes;
        u->row[k].seconds += res.seconds;
    }
    return 0;
}

static void byte_pool_notes(FILE *f, const ev_byte_pool_stats *st, int beam, size_t M, const char *const *names,
                            const double *alpha) {
    if (beam > 0)
        fprintf(f, "byte_pool: %ld bytes, covering tokenizations (beam %d): one /v1/next_bytes call per member per "
                   "document (%ld rounds, %ld positions decoded), %ld windows rolled, %.1f s; exponents",
                st->bytes, beam, st->rounds, st->decoded, st->windows, st->seconds);
    else
        fprintf(f, "byte_pool: %ld bytes, canonical prefix (--byte-beam 0): one round of member calls per byte "
                   "(%ld rounds), %ld windows re-opened, %.1f s; exponents",
                st->bytes, st->rounds, st->windows, st->seconds);
    for (size_t m = 0; m < M; m++) fprintf(f, " %s=%.4f", names[m], alpha[m]);
    fprintf(f, "; member masses of the 257 events summing off 1 by more than %g (normalised by the pool):",
            EV_BPOOL_DEVIATION);
    for (size_t m = 0; m < M; m++)
        fprintf(f, " %s %ld/%ld (%.2f%%)", names[m], st->deviating[m], st->member_bytes[m],
                st->member_bytes[m] ? 100.0 * (double)st->deviating[m] / (double)st->member_bytes[m] : 0.0);
    fprintf(f, "\n");
}

static void ppl_steps_notes(FILE *f, const ppl_steps_ud *u) {
    for (size_t k = 0; k < u->n_rows; k++)
        fprintf(f,
                "%s: scored through the engine's steps: %ld steps (%.2f bytes/step), %ld of them REST + tail, "
                "%ld windows re-opened, %.1f s\n",
                u->row[k].name, u->row[k].steps, u->row[k].steps ? (double)u->row[k].bytes / u->row[k].steps : 0,
                u->row[k].rest_steps, u->row[k].windows, u->row[k].seconds);
}

/* ---- tuning the step-level rules on DEV (eval_tune.h) ---------------------- */

static int record_step(void *ud, const ensemble_score_step *st) {
    return ev_tune_add(ud, st->n_events, st->ev, st->event, st->rest_part) ? -1 : 0;
}

/* 1 if a step-level row whose parameters can be tuned (mixture, pool) is listed. */
static int wants_step_tuning(const ev_strategy *st, size_t ns) {
    for (size_t i = 0; i < ns; i++)
        if (st[i].steps && (st[i].kind == SREG_MIXTURE || st[i].kind == SREG_POOL)) return 1;
    return 0;
}

/* Walks DEV once through the steps (pool, weights w) and tunes the step
 * weights (EM) and the pool's exponents (coordinate search) on it. */
static int tune_steps(ensemble *e, const ev_corpus *dev, size_t M, const double *w, double *tw, double *alpha,
                      char *err, size_t errlen) {
    ev_tune_set t;
    ev_tune_init(&t, M);
    for (size_t d = 0; d < dev->n; d++) {
        if (!dev->docs[d].len) continue;
        ensemble_score_request q = {"pool", w, M, "", dev->docs[d].text, dev->docs[d].len, record_step, &t};
        ensemble_score_result res;
        if (ensemble_score_text(e, &q, &res)) {
            snprintf(err, errlen, "document %zu: %s", d + 1, res.error);
            ev_tune_free(&t);
            return -1;
        }
    }
    memcpy(tw, w, M * sizeof *tw);
    double llm0 = ev_tune_mixture_loglik(&t, tw), llm = ev_tune_mixture(&t, tw, 500);
    double llp0 = ev_tune_pool_loglik(&t, tw, alpha), llp = ev_tune_pool(&t, tw, alpha, 200);
    printf("step-level rules tuned on the dev file walked through the steps (%zu steps, %zu with no mass skipped): "
           "mixture log-likelihood %.1f -> %.1f nats, pool %.1f -> %.1f nats\n",
           t.n, ev_tune_dead_steps(&t), llm0, llm, llp0, llp);
    ev_tune_free(&t);
    return 0;
}

/* 1 if a byte_pool row is listed. */
static int wants_byte_pool(const ev_strategy *st, size_t ns) {
    for (size_t i = 0; i < ns; i++)
        if (st[i].kind == SREG_BYTE_POOL) return 1;
    return 0;
}

/* Walks the first PPL_BYTE_POOL_TUNE_BYTES bytes of every DEV document byte
 * by byte and tunes byte_pool's exponents (coordinate search) on them. */
static int tune_byte_pool(ensemble *e, const ev_corpus *dev, size_t M, int beam, double *alpha, char *err,
                          size_t errlen) {
    ev_bpool_tune_set t;
    ev_bpool_tune_init(&t, M);
    ev_byte_pool_stats st = {0};
    size_t cut = beam > 0 ? PPL_BYTE_POOL_TUNE_BYTES_COVERING : PPL_BYTE_POOL_TUNE_BYTES;
    for (size_t d = 0; d < dev->n; d++) {
        size_t len = dev->docs[d].len < cut ? dev->docs[d].len : cut;
        while (len < dev->docs[d].len && len > 0 && ((unsigned char)dev->docs[d].text[len] & 0xC0) == 0x80) len--;
        double lp;
        char e2[300];
        if (len && ev_byte_pool_doc(e, alpha, M, beam, dev->docs[d].text, len, &lp, &st, &t, e2, sizeof e2)) {
            snprintf(err, errlen, "document %zu: %s", d + 1, e2);
            ev_bpool_tune_free(&t);
            return -1;
        }
    }
    double ll0 = ev_bpool_tune_loglik(&t, alpha), ll = ev_bpool_tune(&t, alpha, 200);
    printf("byte_pool tuned on the first %zu bytes of each dev document (%zu bytes, %.1f s walking): "
           "log-likelihood %.1f -> %.1f nats\n",
           cut, t.n, st.seconds, ll0, ll);
    ev_bpool_tune_free(&t);
    return 0;
}

enum { PP_FILE = 1, PP_STRATEGIES, PP_UNIT, PP_TUNE, PP_JSON, PP_PER_DOC, PP_RESAMPLES, PP_SEED, PP_NO_PROGRESS,
       PP_BYTE_BEAM };

static const opt_spec ppl_options[] = {
    {"file", NULL, OPT_VALUE, PP_FILE, "FILE", "JSONL with a \"text\" per line, or plain UTF-8 text (one document)"},
    {"strategies", NULL, OPT_VALUE, PP_STRATEGIES, "LIST",
     "comma-separated, from the list below (default: all of them)"},
    {"unit", NULL, OPT_VALUE, PP_UNIT, "U", "token, word or byte: units the ensembles are scored on (default token, the finest fair one)"},
    {"tune-weights", NULL, OPT_VALUE, PP_TUNE, "DEV",
     "pick the weights on DEV (EM on units; with mixture or pool listed, also the step weights and the pool's "
     "exponents, DEV walked through the steps; with byte_pool listed, its exponents on the first 3000 bytes of "
     "each DEV document, 1000 with --byte-beam 0), report them, then score FILE"},
    {"byte-beam", NULL, OPT_VALUE, PP_BYTE_BEAM, "K",
     "byte_pool: token paths each member keeps inside a word when summing its next-byte distribution over "
     "covering tokenizations (POST /v1/next_bytes, consort-workers only), 1 to 256 (default 4: as good as 64 on "
     "the project's models, and the fastest); 0 = the per-byte step walk on the canonical tokenization of the "
     "prefix"},
    {"json", NULL, OPT_VALUE, PP_JSON, "OUT", "write the results as JSON to OUT"},
    {"per-doc", NULL, OPT_VALUE, PP_PER_DOC, "CSV", "write one line per document to CSV"},
    {"resamples", NULL, OPT_VALUE, PP_RESAMPLES, "N", "bootstrap resamples (default 1000)"},
    {"seed", "s", OPT_VALUE, PP_SEED, "S", "bootstrap seed, 0 to 2^64-1 (default 1)"},
    {"no-progress", NULL, OPT_FLAG, PP_NO_PROGRESS, NULL, "no progress bar (it is only drawn when stderr is a terminal)"},
    OPT_SPEC_END};

static void ev_ppl_usage(FILE *f) {
    fprintf(f, "usage: consort ppl --member NAME=SPEC ... --file FILE [options]\n"
               "Held-out perplexity of each member and of ensembles, on bytes and words.\n");
    opt_help(f, ppl_options);
    opt_help(f, cli_std_options);
    fprintf(f, "Shared member options:\n");
    opt_help(f, members_cli_opts);
    sreg_fprint_help(f, SREG_EVALUATION);
}

typedef struct {
    members_cli cli;
    const char *file, *strategies, *json_out, *csv_out, *dev, *unit;
    int resamples, progress, byte_beam;
    uint64_t seed;
} ppl_args;

/* One of ppl's own options into a: 0, or -1 with err. */
static int ppl_set_option(ppl_args *a, int id, const char *v, char *err, size_t errlen) {
    switch (id) {
    case PP_FILE: a->file = v; return 0;
    case PP_STRATEGIES: a->strategies = v; return 0;
    case PP_UNIT: a->unit = v; return 0;
    case PP_TUNE: a->dev = v; return 0;
    case PP_JSON: a->json_out = v; return 0;
    case PP_PER_DOC: a->csv_out = v; return 0;
    case PP_NO_PROGRESS: a->progress = 0; return 0;
    case PP_RESAMPLES: return opt_int("--resamples", v, 1, 10000000, &a->resamples, err, errlen);
    case PP_SEED: return opt_u64("--seed", v, 0, UINT64_MAX, &a->seed, err, errlen);
    case PP_BYTE_BEAM: return opt_int("--byte-beam", v, 0, 256, &a->byte_beam, err, errlen);
    }
    snprintf(err, errlen, "option %d is not handled (a bug)", id);
    return -1;
}

/* Returns -1 to go on, else the exit status (0 after --help/--version). */
static int ppl_parse_args(ppl_args *a, int argc, char **argv) {
    const opt_spec *const tables[] = {ppl_options, members_cli_opts, cli_std_options, NULL};
    opt_parser p;
    opt_begin(&p, "consort ppl", tables, argc, argv);
    const char *v;
    char err[512];
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        int r = cli_std_option(id, ev_ppl_usage);
        if (r >= 0) return r;
        r = members_cli_set(&a->cli, id, v, err, sizeof err);
        if (r == 0) r = ppl_set_option(a, id, v, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "consort ppl: %s\n", err);
            return 2;
        }
    }
    return -1;
}

static int ev_write_json_file(const char *path, json_t *o) {
    if (json_dump_file(o, path, JSON_INDENT(2) | JSON_REAL_PRECISION(12))) {
        fprintf(stderr, "consort ppl: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int ev_cmd_ppl(int argc, char **argv) {
    char err[1024];
    ppl_args a = {.unit = "token", .resamples = 1000, .seed = 1, .progress = isatty(2), .byte_beam = PPL_BYTE_BEAM_DEFAULT};
    members_cli_init(&a.cli);
    int usage_status = ppl_parse_args(&a, argc, argv);
    if (usage_status >= 0) return usage_status;
    const members_cli *cli = &a.cli;
    const char *file = a.file, *strategies = a.strategies, *json_out = a.json_out, *csv_out = a.csv_out;
    const char *dev = a.dev, *unit_s = a.unit;
    unsigned resamples = (unsigned)a.resamples;
    uint64_t seed = a.seed;
    int progress = a.progress;
    if (!file) {
        fprintf(stderr, "consort ppl: --file is required (see --help)\n");
        return 2;
    }
    if (members_cli_check(cli, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        return 2;
    }
    if (cli->weights_auto) {
        fprintf(stderr, "consort ppl: --weights auto is a generation setting; use --tune-weights DEV\n");
        return 2;
    }
    int unit = ev_unit_kind_parse(unit_s);
    if (unit < 0) {
        fprintf(stderr, "consort ppl: --unit must be word, token or byte\n");
        return 2;
    }
    size_t M = cli->n;
    const char *names[CONSORT_MAX_MEMBERS];
    for (size_t m = 0; m < M; m++) names[m] = cli->name[m];
    char def[2048] = "";
    if (!strategies) {
        ev_strategy_default_list(names, M, def, sizeof def);
        strategies = def;
    }
    ev_strategy *st = NULL;
    size_t ns = 0;
    if (ev_strategy_parse_list(strategies, names, M, &st, &ns, err, sizeof err)) {
        fprintf(stderr, "consort ppl: %s\n", err);
        return 2;
    }
    double w[CONSORT_MAX_MEMBERS];
    for (size_t m = 0; m < M; m++) w[m] = cli->n_weights ? cli->weights[m] : 1.0;
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
    ensemble_config ecfg;
    members_cli_to_config(cli, &mcfg, &ecfg);
    member_set *ms = members_open(&mcfg, err, sizeof err);
    if (!ms) {
        fprintf(stderr, "consort ppl: %s\n", err);
        ev_corpus_free(&c);
        ev_corpus_free(&dc);
        free(st);
        return 1;
    }
    ev_scorer sc[CONSORT_MAX_MEMBERS];
    ev_member_scorer ud[CONSORT_MAX_MEMBERS];
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
    ppl_steps_ud steps = {0};
    steps.bp_beam = a.byte_beam;
    steps.e = rc ? NULL : ensemble_new(ms, &ecfg, err, sizeof err);
    if (!rc && !steps.e) {
        fprintf(stderr, "consort ppl: %s\n", err);
        rc = 1;
    }
    /* byte_pool's exponents: --pool-exponents as given (before the step
     * tuning replaces them with the step pool's), else 1/M over the members
     * taking part */
    size_t n_part = 0;
    for (size_t m = 0; m < M; m++) n_part += w[m] > 0;
    for (size_t m = 0; m < M; m++)
        steps.bp_alpha[m] = !(w[m] > 0) ? 0 : ecfg.n_pool_exponents ? ecfg.pool_exponents[m] : 1.0 / (double)n_part;
    if (!rc && dev && wants_step_tuning(st, ns)) {
        double alpha[CONSORT_MAX_MEMBERS];
        for (size_t m = 0; m < M; m++) alpha[m] = ecfg.n_pool_exponents ? ecfg.pool_exponents[m] : 1.0 / (double)M;
        if (tune_steps(steps.e, &dc, M, w, steps.w, alpha, err, sizeof err)) {
            fprintf(stderr, "consort ppl: tuning on %s through the steps: %s\n", dev, err);
            rc = 1;
        } else {
            steps.have_w = 1;
            printf("step weights:");
            for (size_t m = 0; m < M; m++) printf(" %s=%.4f", names[m], steps.w[m]);
            printf("; pool exponents:");
            for (size_t m = 0; m < M; m++) printf(" %s=%.4f", names[m], alpha[m]);
            printf("\n");
            memcpy(ecfg.pool_exponents, alpha, M * sizeof *alpha);
            ecfg.n_pool_exponents = M;
            ensemble_free(steps.e);
            steps.e = ensemble_new(ms, &ecfg, err, sizeof err);
            if (!steps.e) {
                fprintf(stderr, "consort ppl: %s\n", err);
                rc = 1;
            }
        }
    }
    if (!rc && dev && wants_byte_pool(st, ns)) {
        if (tune_byte_pool(steps.e, &dc, M, steps.bp_beam, steps.bp_alpha, err, sizeof err)) {
            fprintf(stderr, "consort ppl: tuning byte_pool on %s: %s\n", dev, err);
            rc = 1;
        } else {
            printf("byte_pool exponents:");
            for (size_t m = 0; m < M; m++) printf(" %s=%.4f", names[m], steps.bp_alpha[m]);
            printf("\n");
        }
    }
    ev_ppl_result r = {0};
    if (!rc) {
        ev_ppl_opts o = {(ev_unit_kind)unit, st, ns, w, resamples, seed, progress, ppl_steps, &steps};
        if (ev_ppl_run(&c, sc, M, &o, &r, err, sizeof err)) {
            fprintf(stderr, "consort ppl: %s\n", err);
            rc = 1;
        }
    }
    if (!rc) {
        ev_report_ppl_table(stdout, file, &c, &r);
        ppl_steps_notes(stdout, &steps);
        if (steps.bp_used) byte_pool_notes(stdout, &steps.bp, steps.bp_beam, M, names, steps.bp_alpha);
        fflush(stdout);
        if (json_out) {
            json_t *j = ev_report_ppl_json(file, &c, &r);
            if (dev) json_object_set_new(j, "weights_tuned_on", json_string(dev));
            if (steps.have_w) {
                json_t *sw = json_array(), *pe = json_array();
                for (size_t m = 0; m < M; m++) {
                    json_array_append_new(sw, json_real(steps.w[m]));
                    json_array_append_new(pe, json_real(ecfg.pool_exponents[m]));
                }
                json_object_set_new(j, "step_weights", sw);
                json_object_set_new(j, "pool_exponents", pe);
            }
            if (steps.bp_used) {
                json_t *be = json_array(), *dv = json_array();
                for (size_t m = 0; m < M; m++) {
                    json_array_append_new(be, json_real(steps.bp_alpha[m]));
                    json_array_append_new(dv, json_integer(steps.bp.deviating[m]));
                }
                json_object_set_new(j, "byte_pool_exponents", be);
                json_object_set_new(j, "byte_pool_deviating_bytes", dv);
                json_object_set_new(j, "byte_pool_beam", json_integer(steps.bp_beam));
            }
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
    ensemble_free(steps.e);
    members_free(ms);
    ev_corpus_free(&c);
    ev_corpus_free(&dc);
    free(st);
    return rc;
}
