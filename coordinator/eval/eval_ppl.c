/* coordinator/eval/eval_ppl.c: see eval_ppl.h. */
#include "coordinator/eval/eval_ppl.h"

#include "common/clock.h"
#include "common/sbuf.h"
#include "common/utf8.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- corpus ------------------------------------------------------------ */

int ev_corpus_add(ev_corpus *c, const char *text, size_t len) {
    ev_doc *d = realloc(c->docs, (c->n + 1) * sizeof *d);
    if (!d) return -1;
    c->docs = d;
    char *t = malloc(len + 1);
    if (!t) return -1;
    memcpy(t, text, len);
    t[len] = 0;
    c->docs[c->n].text = t;
    c->docs[c->n].len = len;
    c->n++;
    return 0;
}

void ev_corpus_free(ev_corpus *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) free(c->docs[i].text);
    free(c->docs);
    memset(c, 0, sizeof *c);
}

static char *ev_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    sbuf b = {0};
    int bad = sb_read_file(&b, f); /* b.p is a string even for an empty file */
    fclose(f);
    if (bad) {
        sb_free(&b);
        snprintf(err, errlen, "%s: read error", path);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

/* JSONL when every non-empty line is a JSON object with a string "text". */
static int ev_try_jsonl(const char *buf, size_t len, ev_corpus *c, char *err, size_t errlen) {
    size_t i = 0, line_no = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r')) i++;
    if (i >= len || buf[i] != '{') return 1; /* not JSONL */
    i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        line_no++;
        size_t k = i;
        while (k < j && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k < j) {
            json_error_t je;
            json_t *o = json_loadb(buf + i, j - i, JSON_ALLOW_NUL, &je);
            json_t *t = o ? json_object_get(o, "text") : NULL;
            if (!o || !json_is_object(o) || !json_is_string(t)) {
                if (line_no == 1) { /* first line is not a document: plain text */
                    json_decref(o);
                    ev_corpus_free(c);
                    return 1;
                }
                snprintf(err, errlen, "line %zu: %s", line_no,
                         o ? "not an object with a string \"text\"" : je.text);
                json_decref(o);
                return -1;
            }
            if (ev_corpus_add(c, json_string_value(t), json_string_length(t))) {
                json_decref(o);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            json_decref(o);
        }
        i = j + 1;
    }
    return 0;
}

int ev_corpus_load(const char *path, ev_corpus *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    size_t len;
    char *buf = ev_read_file(path, &len, err, errlen);
    if (!buf) return -1;
    c->file_bytes = len;
    char e2[200];
    int r = ev_try_jsonl(buf, len, c, e2, sizeof e2);
    if (r < 0) {
        snprintf(err, errlen, "%s: %s", path, e2);
        ev_corpus_free(c);
        free(buf);
        return -1;
    }
    if (r == 0) {
        c->jsonl = 1;
        c->file_bytes = len;
        free(buf);
        return 0;
    }
    if (!utf8_valid(buf, len)) {
        snprintf(err, errlen, "%s: not valid UTF-8 (plain-text documents must be)", path);
        free(buf);
        return -1;
    }
    c->docs = malloc(sizeof *c->docs);
    if (!c->docs) {
        free(buf);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->docs[0].text = buf;
    c->docs[0].len = len;
    c->n = 1;
    c->file_bytes = len;
    return 0;
}

/* ---- concurrent scoring -------------------------------------------------- */

typedef struct {
    const ev_corpus *c;
    ev_scorer *sc;
    size_t m;
    ev_token **scores;  /* base of this member's row */
    size_t *n_scores;
    int failed;
    char err[512];
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    size_t *done;
    int *stop;
} ev_score_job;

static void *ev_score_thread(void *arg) {
    ev_score_job *j = arg;
    for (size_t d = 0; d < j->c->n; d++) {
        pthread_mutex_lock(j->mu);
        int stop = *j->stop;
        pthread_mutex_unlock(j->mu);
        if (stop) break;
        const ev_doc *doc = &j->c->docs[d];
        char e[400] = "";
        int rc = 0;
        if (doc->len == 0) {
            j->scores[d] = NULL;
            j->n_scores[d] = 0;
        } else {
            rc = j->sc->score(j->sc->ud, doc->text, doc->len, &j->scores[d], &j->n_scores[d], e, sizeof e);
        }
        pthread_mutex_lock(j->mu);
        if (rc) {
            j->failed = 1;
            snprintf(j->err, sizeof j->err, "member %s, document %zu: %s", j->sc->name, d + 1, e);
            *j->stop = 1;
        }
        (*j->done)++;
        pthread_cond_signal(j->cv);
        pthread_mutex_unlock(j->mu);
        if (rc) break;
    }
    pthread_mutex_lock(j->mu); /* wake the progress loop when this member stops early */
    pthread_cond_signal(j->cv);
    pthread_mutex_unlock(j->mu);
    return NULL;
}

static void ev_progress_draw(size_t done, size_t total, double t0) {
    int width = 30;
    int fill = total ? (int)((double)width * (double)done / (double)total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\rscoring [%s] %zu/%zu  %.1fs", bar, done, total, clock_mono_s() - t0);
    fflush(stderr);
}

void ev_scores_free(ev_token **scores, size_t *n_scores, size_t n) {
    if (scores)
        for (size_t i = 0; i < n; i++) free(scores[i]);
    free(scores);
    free(n_scores);
}

int ev_score_corpus(const ev_corpus *c, ev_scorer *sc, size_t M, int progress,
                    ev_token ***scores_out, size_t **n_out, double *seconds,
                    char *err, size_t errlen) {
    size_t cells = M * c->n;
    if (!cells) cells = 1;
    ev_token **scores = calloc(cells, sizeof *scores);
    size_t *n_scores = calloc(cells, sizeof *n_scores);
    ev_score_job *jobs = calloc(M ? M : 1, sizeof *jobs);
    pthread_t *th = calloc(M ? M : 1, sizeof *th);
    if (!scores || !n_scores || !jobs || !th) {
        free(scores);
        free(n_scores);
        free(jobs);
        free(th);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    size_t done = 0;
    int stop = 0;
    double t0 = clock_mono_s();
    size_t started = 0;
    for (size_t m = 0; m < M; m++) {
        jobs[m] = (ev_score_job){c, &sc[m], m, scores + m * c->n, n_scores + m * c->n, 0, "", &mu, &cv,
                                 &done, &stop};
        if (pthread_create(&th[m], NULL, ev_score_thread, &jobs[m]) != 0) {
            pthread_mutex_lock(&mu);
            stop = 1;
            pthread_mutex_unlock(&mu);
            jobs[m].failed = 1;
            snprintf(jobs[m].err, sizeof jobs[m].err, "cannot start a thread");
            break;
        }
        started++;
    }
    if (progress) {
        size_t total = M * c->n;
        pthread_mutex_lock(&mu);
        while (done < total && !stop) {
            size_t d = done;
            pthread_mutex_unlock(&mu);
            ev_progress_draw(d, total, t0);
            pthread_mutex_lock(&mu);
            struct timespec ts = clock_abs_after(0.2);
            if (done < total && !stop) pthread_cond_timedwait(&cv, &mu, &ts);
        }
        size_t d = done;
        pthread_mutex_unlock(&mu);
        ev_progress_draw(d, total, t0);
        fputc('\n', stderr);
    }
    for (size_t m = 0; m < started; m++) pthread_join(th[m], NULL);
    if (seconds) *seconds = clock_mono_s() - t0;
    int rc = 0;
    for (size_t m = 0; m < M; m++) {
        if (jobs[m].failed) {
            snprintf(err, errlen, "%s", jobs[m].err);
            rc = -1;
            break;
        }
    }
    free(jobs);
    free(th);
    if (rc) {
        ev_scores_free(scores, n_scores, M * c->n);
        return -1;
    }
    *scores_out = scores;
    *n_out = n_scores;
    return 0;
}

/* ---- the computation ------------------------------------------------------ */

void ev_ppl_result_free(ev_ppl_result *r) {
    if (!r) return;
    if (r->rows)
        for (size_t i = 0; i < r->n_rows; i++) free(r->rows[i].routed);
    free(r->rows);
    free(r->member_scored_bytes);
    free(r->member_tokens);
    free(r->member_n_ctx);
    free(r->member_overlap);
    free(r->member_names);
    free(r->weights);
    free(r->doc_nll);
    free(r->doc_bytes);
    free(r->doc_words);
    memset(r, 0, sizeof *r);
}

/* One document of a step-level row, through the command's engine. */
static int ev_steps_doc(const ev_ppl_opts *o, const ev_ppl_row *row, const double *w, size_t M,
                        const ev_doc *doc, size_t d, double *lp, char *err, size_t errlen) {
    char e[300];
    if (!o->steps) {
        snprintf(err, errlen, "strategy %s is scored through the engine's steps, which this run cannot reach",
                 row->name);
        return -1;
    }
    if (o->steps(o->steps_ud, &row->strat, w, M, doc->text, doc->len, lp, e, sizeof e)) {
        snprintf(err, errlen, "%s, document %zu: %s", row->name, d + 1, e);
        return -1;
    }
    return 0;
}

int ev_ppl_compute(const ev_corpus *c, char (*names)[64], size_t M, ev_token **scores,
                   const size_t *n_scores, const ev_ppl_opts *o, ev_ppl_result *r,
                   char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    size_t D = c->n;
    r->n_docs = D;
    r->n_members = M;
    r->unit = o->unit;
    r->resamples = o->resamples ? o->resamples : 1000;
    r->seed = o->seed;
    r->member_names = calloc(M, sizeof *r->member_names);
    r->member_scored_bytes = calloc(M, sizeof(size_t));
    r->member_tokens = calloc(M, sizeof(size_t));
    r->member_n_ctx = calloc(M, sizeof(int));
    r->member_overlap = calloc(M, sizeof(int));
    r->weights = calloc(M, sizeof(double));
    /* rows: a solo row for each member not listed, first; then the list */
    size_t n_rows = 0;
    r->rows = calloc(M + o->n_strategies, sizeof *r->rows);
    r->doc_bytes = calloc(D ? D : 1, sizeof(double));
    r->doc_words = calloc(D ? D : 1, sizeof(double));
    if (!r->member_names || !r->member_scored_bytes || !r->member_tokens || !r->member_n_ctx ||
        !r->member_overlap || !r->weights || !r->rows || !r->doc_bytes || !r->doc_words)
        goto oom;
    for (size_t m = 0; m < M; m++) {
        memcpy(r->member_names[m], names[m], 64);
        r->weights[m] = o->weights ? o->weights[m] : 1.0;
    }
    if (ev_weights_normalise(r->weights, M)) {
        snprintf(err, errlen, "invalid weights");
        ev_ppl_result_free(r);
        return -1;
    }
    for (size_t m = 0; m < M; m++) {
        int listed = 0;
        for (size_t s = 0; s < o->n_strategies; s++)
            listed |= o->strategies[s].kind == SREG_SOLO && o->strategies[s].member == m;
        if (!listed) {
            ev_ppl_row *row = &r->rows[n_rows++];
            row->strat.kind = SREG_SOLO;
            row->strat.member = m;
            snprintf(row->strat.name, sizeof row->strat.name, "solo:%s", names[m]);
        }
    }
    for (size_t s = 0; s < o->n_strategies; s++) r->rows[n_rows++].strat = o->strategies[s];
    r->n_rows = n_rows;
    for (size_t i = 0; i < n_rows; i++) {
        ev_ppl_row *row = &r->rows[i];
        snprintf(row->name, sizeof row->name, "%s", row->strat.name);
        row->member = row->strat.kind == SREG_SOLO ? (int)row->strat.member : -1;
        row->upper_bound = row->strat.kind == SREG_ORACLE;
        row->steps = row->strat.steps;
        if (row->strat.kind == SREG_ROUTE_ENTROPY || row->strat.kind == SREG_ROUTE_PREV ||
            row->strat.kind == SREG_ORACLE) {
            row->routed = calloc(M, sizeof(size_t));
            if (!row->routed) goto oom;
        }
    }
    r->doc_nll = calloc(n_rows * (D ? D : 1), sizeof(double));
    ev_member_doc *md = calloc(M, sizeof *md);
    if (!r->doc_nll || !md) {
        free(md);
        goto oom;
    }
    for (size_t d = 0; d < D; d++) {
        const ev_doc *doc = &c->docs[d];
        for (size_t m = 0; m < M; m++) {
            md[m].tok = scores[m * D + d];
            md[m].n = n_scores[m * D + d];
            r->member_tokens[m] += md[m].n;
            for (size_t i = 0; i < md[m].n; i++) r->member_scored_bytes[m] += md[m].tok[i].end - md[m].tok[i].start;
        }
        ev_units u;
        char e[300];
        if (ev_units_build(doc->text, doc->len, md, M, o->unit, &u, e, sizeof e)) {
            snprintf(err, errlen, "document %zu: %s", d + 1, e);
            free(md);
            ev_ppl_result_free(r);
            return -1;
        }
        r->units += u.n_units;
        r->doc_bytes[d] = (double)doc->len;
        r->doc_words[d] = (double)ev_count_words(doc->text, doc->len);
        r->bytes += doc->len;
        r->words += (size_t)r->doc_words[d];
        for (size_t i = 0; i < n_rows; i++) {
            ev_ppl_row *row = &r->rows[i];
            double lp;
            if (row->strat.steps) {
                if (ev_steps_doc(o, row, r->weights, M, doc, d, &lp, err, errlen)) {
                    ev_units_free(&u);
                    free(md);
                    ev_ppl_result_free(r);
                    return -1;
                }
            } else {
                lp = ev_strategy_doc_logprob(&row->strat, &u, r->weights, doc->text, row->routed);
            }
            r->doc_nll[i * D + d] = 0.0 - lp;
            row->nll += 0.0 - lp;
        }
        ev_units_free(&u);
    }
    free(md);
    /* figures */
    size_t best = (size_t)-1;
    for (size_t i = 0; i < n_rows; i++) {
        ev_ppl_row *row = &r->rows[i];
        row->tokens = row->member >= 0 ? (double)r->member_tokens[row->member] : 0;
        ev_metrics_compute(row->nll, (double)r->bytes, (double)r->words, row->tokens, &row->m);
        if (row->member >= 0 && (best == (size_t)-1 || row->m.bits_per_byte < r->rows[best].m.bits_per_byte))
            best = i;
    }
    r->best_member_row = best;
    double (*ci)[2] = calloc(n_rows, sizeof *ci), (*dci)[2] = calloc(n_rows, sizeof *dci);
    if (!ci || !dci || ev_bootstrap(r->doc_nll, r->doc_bytes, n_rows, D, best, r->resamples, r->seed, ci, dci)) {
        free(ci);
        free(dci);
        goto oom;
    }
    for (size_t i = 0; i < n_rows; i++) {
        ev_ppl_row *row = &r->rows[i];
        row->ci[0] = ci[i][0];
        row->ci[1] = ci[i][1];
        row->diff = row->m.bits_per_byte - r->rows[best].m.bits_per_byte;
        row->diff_ci[0] = dci[i][0];
        row->diff_ci[1] = dci[i][1];
    }
    free(ci);
    free(dci);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    ev_ppl_result_free(r);
    return -1;
}

int ev_ppl_run(const ev_corpus *c, ev_scorer *sc, size_t M, const ev_ppl_opts *o,
               ev_ppl_result *out, char *err, size_t errlen) {
    ev_token **scores;
    size_t *n_scores;
    double secs = 0;
    memset(out, 0, sizeof *out);
    if (ev_score_corpus(c, sc, M, o->progress, &scores, &n_scores, &secs, err, errlen)) return -1;
    char (*names)[64] = calloc(M ? M : 1, sizeof *names);
    if (!names) {
        ev_scores_free(scores, n_scores, M * c->n);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t m = 0; m < M; m++) memcpy(names[m], sc[m].name, 64);
    int rc = ev_ppl_compute(c, names, M, scores, n_scores, o, out, err, errlen);
    free(names);
    ev_scores_free(scores, n_scores, M * c->n);
    if (rc) return -1;
    out->seconds = secs;
    for (size_t m = 0; m < M; m++) {
        out->member_n_ctx[m] = sc[m].n_ctx;
        out->member_overlap[m] = sc[m].window_overlap;
    }
    return 0;
}

int ev_ppl_tune_weights(const ev_corpus *dev, ev_scorer *sc, size_t M, ev_unit_kind unit,
                        double *w, char *err, size_t errlen) {
    ev_token **scores;
    size_t *n_scores;
    if (ev_score_corpus(dev, sc, M, 0, &scores, &n_scores, NULL, err, errlen)) return -1;
    ev_units *units = calloc(dev->n ? dev->n : 1, sizeof *units);
    ev_member_doc *md = calloc(M ? M : 1, sizeof *md);
    int rc = 0;
    if (!units || !md) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (size_t d = 0; !rc && d < dev->n; d++) {
        for (size_t m = 0; m < M; m++) {
            md[m].tok = scores[m * dev->n + d];
            md[m].n = n_scores[m * dev->n + d];
        }
        char e[300];
        if (ev_units_build(dev->docs[d].text, dev->docs[d].len, md, M, unit, &units[d], e, sizeof e)) {
            snprintf(err, errlen, "tuning document %zu: %s", d + 1, e);
            rc = -1;
        }
    }
    if (!rc) ev_weights_tune(units, dev->n, w, M, 500, 1e-10);
    if (units)
        for (size_t d = 0; d < dev->n; d++) ev_units_free(&units[d]);
    free(units);
    free(md);
    ev_scores_free(scores, n_scores, M * dev->n);
    return rc;
}

/* ---- a member's scores, checked ---------------------------------------- */

int ev_tokens_check(const ev_token *t, size_t n, size_t text_len, double sum_logprob, char *err,
                    size_t errlen) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].end < t[i].start || t[i].end > text_len || isnan(t[i].logprob)) {
            snprintf(err, errlen, "token %zu: bad start/end/logprob", i);
            return -1;
        }
        sum += t[i].logprob;
    }
    if (fabs(sum_logprob - sum) > 1e-6 * (fabs(sum) + 1)) {
        snprintf(err, errlen, "tokens sum to %.9g but the answer's sum is %.9g", sum, sum_logprob);
        return -1;
    }
    return 0;
}
