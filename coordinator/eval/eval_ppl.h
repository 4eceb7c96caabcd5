/* coordinator/eval/eval_ppl.h: the held-out perplexity run behind `consort ppl`
 * (docs/EVALUATION.md).
 *
 * A corpus is JSONL (one JSON object per non-empty line, its "text" string
 * a document) or, when the file is not that, plain UTF-8 text (one
 * document). Each member scores every document through an ev_scorer (the
 * worker's POST /v1/score, or an in-process stand-in in tests); members run
 * concurrently, one thread each. Then every document's units are built
 * (eval_units.h), every strategy's log-probability computed
 * (eval_strategies.h), and corpus figures with a paired bootstrap
 * (eval_stats.h) collected into an ev_ppl_result.
 *
 * Contract:
 *  - ev_corpus_load(): 0, or -1 with a message (unreadable file, a JSONL
 *    line without a string "text", invalid UTF-8 in a plain-text file).
 *  - ev_ppl_run(): every document is scored by every member; any scorer
 *    error, or spans that do not tile a document, fails the run (-1 and a
 *    message): nothing is skipped silently. A solo row is added for each
 *    member the strategy list lacks, first, so the best single member is
 *    always known. Weights are normalised.
 *  - ev_ppl_result_free() releases a result (safe on a zeroed one).
 */
#ifndef CONSORT_EVAL_PPL_H
#define CONSORT_EVAL_PPL_H

#include "coordinator/eval/eval_stats.h"
#include "coordinator/eval/eval_strategies.h"
#include "coordinator/eval/eval_units.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *text;
    size_t len;
} ev_doc;

typedef struct {
    ev_doc *docs;
    size_t n;
    size_t file_bytes;  /* size of the file itself */
    int jsonl;
} ev_corpus;

int ev_corpus_load(const char *path, ev_corpus *out, char *err, size_t errlen);
/* One document from memory (copied). */
int ev_corpus_add(ev_corpus *c, const char *text, size_t len);
void ev_corpus_free(ev_corpus *c);

/* One member's teacher-forced scores of one text. *tok is malloc'ed by the
 * scorer and freed by the caller. Returns 0, or -1 with a message. */
typedef int (*ev_score_fn)(void *ud, const char *text, size_t len, ev_token **tok,
                           size_t *n_tok, char *err, size_t errlen);

typedef struct {
    char name[64];
    ev_score_fn score;
    void *ud;
    /* filled by the scorer when known (else 0 / -1) */
    int n_ctx;
    int window_overlap;
    int doc_start;
} ev_scorer;

/* Scores one document under a step-level rule (ev_strategy.steps) by
 * walking it through the engine's own steps; weights: one per member,
 * normalised. 0 and *logprob (natural log), or -1 with a message. The
 * evaluation layer does not link the engine: the command supplies this. */
typedef int (*ev_steps_fn)(void *ud, const ev_strategy *s, const double *weights, size_t n_members,
                           const char *text, size_t len, double *logprob, char *err, size_t errlen);

typedef struct {
    ev_unit_kind unit;
    const ev_strategy *strategies;
    size_t n_strategies;
    const double *weights;   /* one per member; NULL = uniform */
    unsigned resamples;      /* bootstrap resamples (default 1000) */
    uint64_t seed;
    int progress;            /* draw a progress bar on stderr */
    ev_steps_fn steps;       /* step-level rows; NULL: such rows fail the run */
    void *steps_ud;
} ev_ppl_opts;

typedef struct {
    char name[80];
    ev_strategy strat;
    int member;              /* member index for solo rows, else -1 */
    int upper_bound;         /* oracle */
    int steps;               /* scored through the engine's steps, not from units */
    double nll;              /* nats, whole corpus */
    double tokens;           /* solo rows: the member's token count, else 0 */
    ev_metrics m;
    double ci[2];            /* 95% bootstrap interval of bits per byte */
    double diff;             /* bpb minus the best member's bpb */
    double diff_ci[2];
    size_t *routed;          /* n_members counters (units per member), or NULL */
} ev_ppl_row;

typedef struct {
    size_t n_docs, n_members, n_rows;
    size_t bytes, words, units;
    size_t *member_scored_bytes;  /* per member: bytes covered by its tokens */
    size_t *member_tokens;
    int *member_n_ctx, *member_overlap;
    char (*member_names)[64];
    double *weights;              /* normalised, per member */
    ev_ppl_row *rows;
    size_t best_member_row;       /* index into rows */
    double *doc_nll;              /* [row * n_docs + d] */
    double *doc_bytes;            /* [d] */
    double *doc_words;            /* [d] */
    double seconds;               /* scoring wall time */
    unsigned resamples;
    uint64_t seed;
    ev_unit_kind unit;
} ev_ppl_result;

/* Score every document with every member, concurrently across members.
 * scores[m * c->n + d] / n_scores[...] receive the tokens (caller frees with
 * ev_scores_free). */
int ev_score_corpus(const ev_corpus *c, ev_scorer *scorers, size_t n_members, int progress,
                    ev_token ***scores, size_t **n_scores, double *seconds,
                    char *err, size_t errlen);
void ev_scores_free(ev_token **scores, size_t *n_scores, size_t n);

int ev_ppl_run(const ev_corpus *c, ev_scorer *scorers, size_t n_members,
               const ev_ppl_opts *opts, ev_ppl_result *out, char *err, size_t errlen);

/* The computation of ev_ppl_run after scoring, on given scores. */
int ev_ppl_compute(const ev_corpus *c, char (*names)[64], size_t n_members,
                   ev_token **scores, const size_t *n_scores, const ev_ppl_opts *opts,
                   ev_ppl_result *out, char *err, size_t errlen);

/* Mixture weights tuned (EM) on a corpus: scores it, builds units, runs
 * ev_weights_tune. w in/out (n_members). */
int ev_ppl_tune_weights(const ev_corpus *dev, ev_scorer *scorers, size_t n_members,
                        ev_unit_kind unit, double *w, char *err, size_t errlen);

void ev_ppl_result_free(ev_ppl_result *r);

/* Checks a member's scores of a text of text_len bytes: every span lies
 * inside the text (start <= end <= text_len), every logprob is a number,
 * and the logprobs sum to sum_logprob (1e-6 relative), the total the member
 * reported. Returns 0, or -1 with a message naming the first fault. */
int ev_tokens_check(const ev_token *t, size_t n, size_t text_len, double sum_logprob, char *err,
                    size_t errlen);

#endif
