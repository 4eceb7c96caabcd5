/* The ppl pipeline on in-process stand-in scorers with two different
 * "tokenizers" (words and single bytes): corpus loading, concurrent scoring,
 * invariants (weights (1,0) = solo, the same member twice = that member),
 * the JSON shape, the per-document CSV, the table, /v1/score parsing,
 * weight tuning, and errors that must not be skipped. No network. */
#define _GNU_SOURCE
#include "coordinator/eval/eval_ppl.h"
#include "coordinator/eval/eval_report.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <unistd.h>

/* words: first token up to the first space, then " word" tokens */
static int score_words(void *ud, const char *text, size_t len, ev_token **tok, size_t *n, char *err,
                       size_t errlen) {
    double scale = ud ? *(double *)ud : 1.0;
    (void)err;
    (void)errlen;
    ev_token *t = malloc((len + 1) * sizeof *t);
    size_t k = 0, s = 0;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || text[i] == ' ') {
            t[k++] = (ev_token){s, i, -scale * (0.3 * (double)(i - s) + 0.1), 1.0 + (double)(s % 3), 0.5};
            s = i;
        }
    }
    *tok = t;
    *n = k;
    return 0;
}

static int score_bytes(void *ud, const char *text, size_t len, ev_token **tok, size_t *n, char *err,
                       size_t errlen) {
    (void)ud;
    (void)err;
    (void)errlen;
    ev_token *t = malloc((len + 1) * sizeof *t);
    for (size_t i = 0; i < len; i++)
        t[i] = (ev_token){i, i + 1, text[i] == ' ' ? -0.2 : -0.6, 2.0, 0.4};
    *tok = t;
    *n = len;
    return 0;
}

static int score_fail(void *ud, const char *text, size_t len, ev_token **tok, size_t *n, char *err,
                      size_t errlen) {
    (void)ud;
    (void)text;
    (void)len;
    *tok = NULL;
    *n = 0;
    snprintf(err, errlen, "connection refused");
    return -1;
}

static double words_nll(const char *text, size_t len) {
    double nll = 0;
    size_t s = 0;
    for (size_t i = 1; i <= len; i++)
        if (i == len || text[i] == ' ') {
            nll += 0.3 * (double)(i - s) + 0.1;
            s = i;
        }
    return nll;
}

static char *write_tmp(const char *content) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/consort-test-ppl-%d.txt", (int)getpid());
    FILE *f = fopen(path, "wb");
    fputs(content, f);
    fclose(f);
    return path;
}

static const ev_ppl_row *row_named(const ev_ppl_result *r, const char *name) {
    for (size_t i = 0; i < r->n_rows; i++)
        if (!strcmp(r->rows[i].name, name)) return &r->rows[i];
    return NULL;
}

static void test_corpus(void) {
    char err[256];
    ev_corpus c;
    const char *jl = "{\"text\": \"the cat sat\"}\n\n{\"text\": \"\"}\n{\"text\": \"caf\\u00e9 au lait\", \"id\": 3}\n";
    char *p = write_tmp(jl);
    ok(ev_corpus_load(p, &c, err, sizeof err) == 0, "JSONL loads");
    ok(c.jsonl, "recognised as JSONL");
    is_int(c.n, 3, "three documents (the blank line is not one; the empty text is)");
    is_int(c.docs[2].len, 13, "escaped UTF-8 decoded (13 bytes)");
    is_int(c.file_bytes, strlen(jl), "file bytes");
    ev_corpus_free(&c);

    p = write_tmp("Just some text.\n{\"text\": 1}\n");
    ok(ev_corpus_load(p, &c, err, sizeof err) == 0, "plain text loads");
    ok(!c.jsonl && c.n == 1 && c.docs[0].len == 28, "one document, every byte");
    ev_corpus_free(&c);

    p = write_tmp("{\"text\": \"a\"}\n{\"txt\": \"b\"}\n");
    ok(ev_corpus_load(p, &c, err, sizeof err) != 0, "a JSONL line without text is an error");
    diag("%s", err);
    p = write_tmp("bad \xff byte");
    ok(ev_corpus_load(p, &c, err, sizeof err) != 0, "invalid UTF-8 plain text is an error");
    ok(ev_corpus_load("/nonexistent/x", &c, err, sizeof err) != 0, "missing file is an error");
    unlink(p);
}

static void test_run(void) {
    char err[256];
    ev_corpus c = {0};
    const char *docs[] = {"the cat sat on the mat", "a dog", "", "it is caf\xc3\xa9 time"};
    size_t total = 0, words = 0;
    double nll_a = 0, tokens_a = 0;
    for (int i = 0; i < 4; i++) {
        ev_corpus_add(&c, docs[i], strlen(docs[i]));
        total += strlen(docs[i]);
        words += ev_count_words(docs[i], strlen(docs[i]));
        nll_a += words_nll(docs[i], strlen(docs[i]));
        tokens_a += (double)ev_count_words(docs[i], strlen(docs[i]));
    }
    ev_scorer sc[2] = {{"a", score_words, NULL, 0, 0, 0}, {"b", score_bytes, NULL, 0, 0, 0}};
    const char *names[] = {"a", "b"};
    ev_strategy *st;
    size_t ns;
    ok(ev_strategy_parse_list("mixture_units,product_bound,route_entropy,route_prev,oracle", names, 2, &st, &ns, err,
                              sizeof err) == 0,
       "strategies parse");
    double w10[] = {1, 0};
    ev_ppl_opts o = {EV_UNIT_WORD, st, ns, w10, 200, 7, 0, NULL, NULL};
    ev_ppl_result r;
    ok(ev_ppl_run(&c, sc, 2, &o, &r, err, sizeof err) == 0, "ppl runs over two tokenizers");
    is_int(r.n_rows, 7, "solo rows added first, then the 5 strategies");
    is_str(r.rows[0].name, "solo:a", "row 0 solo:a");
    is_str(r.rows[1].name, "solo:b", "row 1 solo:b");
    is_int(r.bytes, total, "bytes = the documents' bytes");
    is_int(r.member_scored_bytes[0], total, "member a scored every byte");
    is_int(r.member_scored_bytes[1], total, "member b scored every byte");
    is_int(r.words, words, "words counted");
    is_near(r.rows[0].nll, nll_a, 1e-9, "solo:a NLL = sum of its token log-probs");
    is_near(r.rows[0].m.bits_per_byte, nll_a / ((double)total * M_LN2), 1e-12, "solo:a bits per byte");
    is_near(r.rows[0].m.token_perplexity, exp(nll_a / tokens_a), 1e-9, "solo:a token perplexity");
    is_near(r.rows[0].m.word_perplexity, exp(nll_a / (double)words), 1e-9, "solo:a word perplexity");
    const ev_ppl_row *mix = row_named(&r, "mixture_units");
    ok(mix && fabs(mix->m.bits_per_byte - r.rows[0].m.bits_per_byte) <= 1e-12,
       "mixture_units (1,0) over different tokenizers = solo:a");
    const ev_ppl_row *orc = row_named(&r, "oracle");
    ok(orc && orc->upper_bound && orc->m.bits_per_byte <= r.rows[0].m.bits_per_byte + 1e-12 &&
           orc->m.bits_per_byte <= r.rows[1].m.bits_per_byte + 1e-12,
       "oracle is at least as good as each member");
    ok(r.rows[0].ci[0] <= r.rows[0].m.bits_per_byte && r.rows[0].m.bits_per_byte <= r.rows[0].ci[1],
       "the interval contains solo:a's point");
    size_t best = r.best_member_row;
    ok(best < 2, "best member is a solo row");
    is_near(r.rows[best].diff, 0, 0, "best member's difference is 0");

    json_t *j = ev_report_ppl_json("x.jsonl", &c, &r);
    ok(json_is_string(json_object_get(j, "file")), "json: file");
    is_int(json_integer_value(json_object_get(j, "documents")), 4, "json: documents");
    is_int(json_integer_value(json_object_get(j, "bytes")), total, "json: bytes");
    is_str(json_string_value(json_object_get(j, "unit")), "word", "json: unit");
    json_t *res = json_object_get(j, "results");
    ok(json_array_size(res) == 7, "json: 7 results");
    json_t *r0 = json_array_get(res, 0), *r2 = json_array_get(res, 2);
    is_str(json_string_value(json_object_get(r0, "name")), "solo:a", "json: solo name");
    ok(json_is_number(json_object_get(r0, "token_perplexity")), "json: member token perplexity");
    is_str(json_string_value(json_object_get(r2, "name")), "mixture_units", "json: strategy name");
    ok(json_is_null(json_object_get(r2, "token_perplexity")), "json: ensemble token perplexity null");
    ok(json_array_size(json_object_get(r2, "ci95")) == 2, "json: ci95 pair");
    ok(json_is_number(json_object_get(r2, "bits_per_byte")) && json_is_number(json_object_get(r2, "byte_perplexity")) &&
           json_is_number(json_object_get(r2, "word_perplexity")),
       "json: figures");
    json_decref(j);

    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    ok(ev_report_ppl_csv(f, &r) == 0, "csv written");
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < blen; i++) lines += buf[i] == '\n';
    is_int(lines, 5, "csv: header + one line per document");
    ok(strstr(buf, "solo:a bits_per_byte") != NULL, "csv header names rows");
    free(buf);
    f = open_memstream(&buf, &blen);
    ok(ev_report_ppl_table(f, "x.jsonl", &c, &r) == 0, "table written");
    fclose(f);
    ok(strstr(buf, "oracle*") && strstr(buf, "HINDSIGHT") && strstr(buf, "(best member)"),
       "table labels the oracle and the best member");
    free(buf);
    ev_ppl_result_free(&r);

    /* the same model twice is that model, for every strategy */
    double half = 1.0;
    ev_scorer twice[2] = {{"a", score_words, &half, 0, 0, 0}, {"a2", score_words, &half, 0, 0, 0}};
    const char *n2[] = {"a", "a2"};
    ev_strategy *st2;
    size_t ns2;
    ev_strategy_parse_list("mixture_units,product_bound,route_entropy,route_prev,oracle", n2, 2, &st2, &ns2, err, sizeof err);
    ev_ppl_opts o2 = {EV_UNIT_TOKEN, st2, ns2, NULL, 100, 1, 0, NULL, NULL};
    ok(ev_ppl_run(&c, twice, 2, &o2, &r, err, sizeof err) == 0, "same model twice runs");
    int same = 1;
    for (size_t i = 0; i < r.n_rows; i++) same &= fabs(r.rows[i].m.bits_per_byte - r.rows[0].m.bits_per_byte) < 1e-12;
    ok(same, "same model twice: every strategy = the model");
    is_near(r.rows[0].m.bits_per_byte, nll_a / ((double)total * M_LN2), 1e-12, "and = its own sum");
    ev_ppl_result_free(&r);
    free(st2);

    /* tuning prefers the better member */
    double w[2] = {0.5, 0.5};
    ok(ev_ppl_tune_weights(&c, sc, 2, EV_UNIT_WORD, w, err, sizeof err) == 0, "tuning runs");
    diag("tuned weights %.4f %.4f", w[0], w[1]);
    is_near(w[0] + w[1], 1, 1e-9, "tuned weights sum to 1");

    /* a failing member fails the run: nothing is skipped */
    ev_scorer bad[2] = {{"a", score_words, NULL, 0, 0, 0}, {"down", score_fail, NULL, 0, 0, 0}};
    ok(ev_ppl_run(&c, bad, 2, &o, &r, err, sizeof err) != 0, "a failing member fails the run");
    ok(strstr(err, "down") && strstr(err, "document 1"), "the message names the member and document");
    diag("%s", err);
    free(st);
    ev_corpus_free(&c);
}

static void test_tokens_check(void) {
    char err[256] = "";
    ev_token t[2] = {{0, 3, -1.5, 2.0, 0.3}, {3, 7, -0.5, 1.0, 0.6}};
    ok(ev_tokens_check(t, 2, 7, -2.0, err, sizeof err) == 0, "scores that tile the text and sum up pass");
    ok(ev_tokens_check(t, 2, 7, -2.0 + 1e-9, err, sizeof err) == 0, "the sum within 1e-6 relative");
    ok(ev_tokens_check(t, 2, 5, -2.0, err, sizeof err) != 0 && strstr(err, "token 1"),
       "a span past the text is an error naming the token");
    ok(ev_tokens_check(t, 2, 7, -3.0, err, sizeof err) != 0 && strstr(err, "sum"),
       "an inconsistent sum is an error");
    t[0].end = 0;
    t[0].start = 2;
    ok(ev_tokens_check(t, 2, 7, -2.0, err, sizeof err) != 0 && strstr(err, "token 0"),
       "an end before its start is an error");
    t[0] = (ev_token){0, 3, NAN, 2.0, 0.3};
    ok(ev_tokens_check(t, 2, 7, -2.0, err, sizeof err) != 0, "a NaN logprob is an error");
    ok(ev_tokens_check(t, 0, 0, 0, err, sizeof err) == 0, "no tokens, sum 0: fine");
}

static void test_svg(void) {
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    ev_bar bars[] = {{"solo:<a&b>", 1.5, 1.4, 1.6}, {"mix", 1.2, NAN, NAN}};
    double h = ev_svg_bars(f, 0, 600, "bits \"per\" byte", "bpb", bars, 2);
    fclose(f);
    ok(h > 0, "panel height");
    ok(strstr(buf, "solo:&lt;a&amp;b&gt;") && strstr(buf, "bits &quot;per&quot; byte"), "labels escaped");
    ok(!strstr(buf, "<a&"), "no raw markup from labels");
    free(buf);
}

/* A stand-in for the engine's scoring path: each document's log-probability
 * is -0.25 nats per byte under "pool", and the callback sees the
 * normalised weights and the row's strategy. */
typedef struct {
    int calls;
    double w0;
    int kind_ok;
} steps_probe;

static int fake_steps(void *ud, const ev_strategy *s, const double *w, size_t n_members, const char *text,
                      size_t len, double *lp, char *err, size_t errlen) {
    steps_probe *p = ud;
    (void)text;
    p->calls++;
    p->w0 = w[0];
    p->kind_ok = s->steps && s->kind == SREG_POOL && n_members == 2;
    if (len == 3) {
        snprintf(err, errlen, "member 'a' failed");
        return -1;
    }
    *lp = -0.25 * (double)len;
    return 0;
}

/* Step-level rows take each document's log-probability from the engine's
 * scoring path (ev_ppl_opts.steps) and join the bootstrap like any row. */
static void test_steps_rows(void) {
    ev_corpus c = {0};
    const char *docs[] = {"alpha beta gamma", "delta epsilon", "zeta eta theta iota"};
    for (size_t i = 0; i < 3; i++) ev_corpus_add(&c, docs[i], strlen(docs[i]));
    ev_scorer sc[2] = {{"a", score_words, NULL, 0, 0, 0}, {"b", score_bytes, NULL, 0, 0, 0}};
    const char *names[] = {"a", "b"};
    ev_strategy *st;
    size_t ns;
    char err[512];
    ok(ev_strategy_parse_list("pool,mixture_units", names, 2, &st, &ns, err, sizeof err) == 0 && st[0].steps &&
           !st[1].steps,
       "pool is a step-level row, mixture_units a unit row");
    double w[] = {3, 1};
    steps_probe probe = {0};
    ev_ppl_opts o = {EV_UNIT_WORD, st, ns, w, 100, 3, 0, fake_steps, &probe};
    ev_ppl_result r;
    ok(ev_ppl_run(&c, sc, 2, &o, &r, err, sizeof err) == 0, "a run with a step-level row");
    is_int(probe.calls, 3, "the scoring path is called once per document");
    ok(probe.kind_ok, "with the row's strategy and both members");
    is_near(probe.w0, 0.75, 1e-12, "and the normalised weights");
    const ev_ppl_row *pool = row_named(&r, "pool");
    size_t bytes = strlen(docs[0]) + strlen(docs[1]) + strlen(docs[2]);
    ok(pool && pool->steps, "the pool row is marked as scored through the steps");
    if (pool) {
        is_near(pool->nll, 0.25 * (double)bytes, 1e-9, "its NLL is the scoring path's");
        is_near(pool->m.bits_per_byte, 0.25 / M_LN2, 1e-9, "bits per byte from it");
        ok(pool->diff_ci[0] <= pool->diff && pool->diff <= pool->diff_ci[1], "paired interval vs the best member");
    }
    json_t *j = ev_report_ppl_json("x", &c, &r);
    json_t *rows = json_object_get(j, "results");
    int marked = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *x = json_array_get(rows, i);
        if (json_is_true(json_object_get(x, "steps"))) marked += !strcmp(json_string_value(json_object_get(x, "name")), "pool");
    }
    is_int(marked, 1, "JSON: \"steps\": true on the pool row only");
    json_decref(j);
    ev_ppl_result_free(&r);
    o.steps = NULL;
    ok(ev_ppl_run(&c, sc, 2, &o, &r, err, sizeof err) != 0 && strstr(err, "engine's steps"),
       "without a scoring path the step-level row fails the run");
    ev_corpus_add(&c, "abc", 3);
    o.steps = fake_steps;
    ok(ev_ppl_run(&c, sc, 2, &o, &r, err, sizeof err) != 0 && strstr(err, "pool, document 4") &&
           strstr(err, "member 'a' failed"),
       "a failure of the scoring path fails the run, naming the row and document");
    free(st);
    ev_corpus_free(&c);
}

int main(void) {
    test_corpus();
    test_run();
    test_steps_rows();
    test_tokens_check();
    test_svg();
    return tap_done();
}
