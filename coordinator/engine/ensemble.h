/* coordinator/engine/ensemble.h: the generation engine, the one interface that the
 * OpenAI server (api*.c), `consort generate` and `consort ab` all drive.
 *
 * An ensemble is a set of members (remote or locally spawned consort-workers,
 * see members.h; the engine talks to them through member.h) with a default
 * configuration (ensemble_config). One request is a step loop:
 *
 *     ensemble_gen *g = ensemble_begin(e, &req, on_chunk, ud, &result);
 *     while (ensemble_step(g)) {}
 *     rc = ensemble_end(g);
 *
 * which is all ensemble_generate() does. ensemble_begin() validates the
 * request, opens a session on every member and sends the prompt (the first
 * round). Each ensemble_step() commits one candidate: the members' proposals
 * and prefix masses form the candidate set, the strategy's decision
 * (ensemble_decide.h, a pure function) picks an event or says which masses
 * it still needs (a second round, asked concurrently), the chosen bytes join
 * the shared text G, the safe part of G goes to the chunk callback, and the
 * next round is sent. ensemble_end() deletes the sessions and fills the
 * result. docs/STRATEGIES.md has the formulas.
 *
 * Contract:
 *  - Thread-safe: many requests may run at once on one ensemble, each with
 *    its own worker sessions.
 *  - `max_tokens` counts steps (one committed candidate per step, the unit
 *    reported as completion_tokens).
 *  - The chunk callback receives text in order and only whole UTF-8
 *    characters (an incomplete tail is held back until completed; invalid
 *    bytes are replaced by U+FFFD so output is always valid UTF-8), and never
 *    text that belongs to a stop sequence (text that might start one is held
 *    back until decided). The concatenation of all chunks equals result.text.
 *  - A member that fails or misses the deadline is dropped for the rest of
 *    the request (weights renormalised over the others) and reported in the
 *    per-member stats; with no member left the request fails with status 503.
 *  - Bad requests (unknown strategy or member, wrong weights count, ...)
 *    fail before any step with status 400 and a message; a prompt longer
 *    than a member's context fails with 400, code context_length_exceeded
 *    and the member's message (its limit), before any scoring.
 *  - Every member session a request opened is deleted when it ends, on
 *    every path (done, stopped, failed, deadline), including the sessions
 *    of members that missed the step deadline.
 *  - Session ids are 128 bits from the OS random source, in hex.
 *  - ensemble_result_free() releases everything a result owns.
 */
#ifndef CONSORT_ENSEMBLE_H
#define CONSORT_ENSEMBLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"
#include "coordinator/engine/members.h"

typedef struct ensemble ensemble;

/* The engine's settings, fixed when the ensemble is made (requests may
 * override strategy, weights and threshold). Zero means "the default". */
typedef struct {
    char strategy[64];         /* default strategy; "" = mixture */
    double weights[CONSORT_MAX_MEMBERS];/* default weights, one per member */
    size_t n_weights;          /* 0 = equal weights */
    int weights_auto;          /* 1: weights from prompt perplexity */
    double threshold;          /* selective: lead confidence threshold, 0 = SSTRAT_DEFAULT_THRESHOLD */
    double step_timeout;       /* seconds per step for member answers, 0 = 30 */
    int member_k;              /* proposals per member and step, 0 = 1 greedy / 8 sampling */
    int no_round_skip;         /* 1: always pay the second round (tests: the skip never changes a text) */
    double pool_exponents[CONSORT_MAX_MEMBERS]; /* pool: one per member */
    size_t n_pool_exponents;   /* 0 = 1/M over the members taking part */
    int speculative;           /* 1: speculative steps by default (docs/STRATEGIES.md) */
    char draft_member[64];     /* speculative steps: this member drafts and the others verify its
                                * draft; "" = each member drafts its own (ensemble_new checks the name) */
} ensemble_config;

#define ENSEMBLE_MAX_LOGPROBS 20

typedef struct {
    const char *prompt;        /* raw prompt text, or NULL when messages is set */
    const json_t *messages;    /* OpenAI chat messages array, rendered by each member */
    int max_tokens;            /* steps; >= 0 (0 = only the prompt is processed) */
    double temperature;        /* 0 = greedy */
    double top_p;              /* 1 = off */
    double min_p;              /* 0 = off */
    int top_k;                 /* 0 = off */
    int has_seed;
    uint64_t seed;
    const char *const *stop;   /* stop sequences (not included in the output) */
    size_t n_stop;
    const char *strategy;      /* NULL: the ensemble's default (e.g. "mixture", "solo:a") */
    const double *weights;     /* NULL: default; else one per member used */
    size_t n_weights;
    int weights_auto;          /* 1: weights from prompt perplexity */
    const char *const *members;/* NULL: all; else subset by name */
    size_t n_members;
    int logprobs;              /* 0..ENSEMBLE_MAX_LOGPROBS alternatives per chunk */
    double threshold;          /* selective: lead confidence threshold (0 = default) */
    double deadline;           /* the request's end (common/clock.h clock_mono_s), 0 = none:
                                  past it the generation ends as if max_tokens were reached
                                  (finish_reason "length", result.deadline_exceeded) and no
                                  member call outlives it */
    /* Asked before every step (may be NULL; gets on_chunk's ud): non-zero
     * stops the generation there, like a callback asking to stop (a
     * client that went away without any text being due). */
    int (*should_stop)(void *ud);
    int speculative;           /* 0 = the ensemble's default, 1 = on, -1 = off; on: mixture or solo
                                * only, greedy or sampled (else 400 speculative_unsupported) */
    const char *draft_member;  /* NULL = the ensemble's cfg.draft_member; "" = each member drafts its
                                * own; else a member's name (else 400); one that does not take part
                                * (not listed, weight 0, failed) leaves each member drafting its own */
} ensemble_request;

typedef struct {
    const char *text;          /* whole UTF-8 characters, not NUL-terminated */
    size_t len;
    double logprob;            /* ensemble log-probability of the step(s) that produced it */
    int n_top;
    struct { const char *text; size_t len; double logprob; } top[ENSEMBLE_MAX_LOGPROBS];
} ensemble_chunk;

/* Return non-zero to stop generating (e.g. the client went away). */
typedef int (*ensemble_on_chunk)(void *ud, const ensemble_chunk *chunk);

typedef struct {
    char name[64];
    int failed;                /* dropped during this request */
    char failure[160];
    int steps_won;             /* steps whose committed candidate was this member's top choice */
    size_t bytes_proposed_won; /* bytes committed from candidates this member proposed */
    double mean_step_ms;       /* mean round-trip latency of this member's step calls */
    double weight;             /* weight used (after auto/renormalisation) */
    int prompt_tokens;         /* this member's prompt length in its own tokens */
    long decoded;              /* token positions the member decoded (its "decoded" answers, prompt included) */
    int approximate;           /* its masses are lower bounds from a top-n list (member_ops.exact == 0) */
} ensemble_member_stats;

typedef struct {
    char *text;                /* malloc'ed, NUL-terminated, valid UTF-8 */
    size_t len;
    const char *finish_reason; /* "stop" or "length" (static string) */
    int steps;                 /* completion_tokens */
    int prompt_tokens;         /* max over members */
    double seconds;
    ensemble_member_stats *members;
    size_t n_members;
    int status;                /* 0 ok, else an HTTP status (400, 503, ...) */
    char error[256];           /* names members by name only (no URLs: it reaches clients) */
    const char *code;          /* static error code or NULL: "context_length_exceeded",
                                  "no_member_available", ... */
    int deadline_exceeded;     /* the request's deadline ended it (finish_reason "length") */
    /* engine statistics (additive, for generate --json and the benchmark) */
    int rounds;                /* concurrent round trips to the members (1 or 2 per step) */
    int second_rounds;         /* steps that needed a second round for missing candidate masses */
    int skipped_rounds;        /* greedy steps whose winner was certain without the missing masses */
    int sessions_recreated;    /* member sessions the workers had evicted, re-created from prompt + G */
    int lead_alone_steps;      /* selective: steps the lead decided alone (it was sure) */
    double cpu_seconds;        /* coordinator CPU time of this request (the calling thread) */
    int speculative;           /* speculative steps were on */
    int spec_drafted;          /* drafted steps the members answered (per round, the shortest draft) */
    int spec_accepted;         /* steps decided from drafted answers, without a round trip */
} ensemble_result;

/* members: taken by reference, must outlive the ensemble. cfg is copied;
 * NULL = every default. n_weights, when set, must equal the member count. */
ensemble *ensemble_new(member_set *members, const ensemble_config *cfg, char *err, size_t errlen);
void ensemble_free(ensemble *e);

/* One generation in progress (ensemble_internal.h). */
typedef struct ensemble_gen ensemble_gen;

/* Starts a request: out is cleared now and filled by ensemble_end(); req,
 * on_chunk's ud and out must outlive the generation. Never fails: a bad
 * request (or no member) yields a generation whose first ensemble_step()
 * returns 0 and whose ensemble_end() reports the error (status 400, 503...).
 * Returns NULL only when out of memory (out then says so, status 500). */
ensemble_gen *ensemble_begin(ensemble *e, const ensemble_request *req,
                             ensemble_on_chunk on_chunk, void *ud, ensemble_result *out);

/* Commits one step (one candidate, or END). Returns 1 while the request
 * goes on, 0 when it finished (END, a stop sequence, max_tokens, the
 * callback asked to stop, an error). NULL: 0. */
int ensemble_step(ensemble_gen *g);

/* Finishes: flushes held-back text, deletes the member sessions, fills the
 * result, frees g. Returns 0, or -1 when the request failed (out->status and
 * out->error say why). Stopping early (before ensemble_step returned 0) is
 * allowed: the text so far is the result, finish_reason "stop". */
int ensemble_end(ensemble_gen *g);

/* The three above as one blocking call. */
int ensemble_generate(ensemble *e, const ensemble_request *req,
                      ensemble_on_chunk on_chunk, void *ud, ensemble_result *out);
void ensemble_result_free(ensemble_result *r);

/* ---- scoring a text through the same steps (ensemble_score.c) ----------------
 *
 * ensemble_score_text() walks a given text through generation's own steps:
 * sessions on the members (prompt = context; "" = the document start), each
 * step's candidate set and the strategy's distribution over its events
 * exactly as a sampled generation (temperature 1, no filters) computes
 * them, but the choice is forced by the text:
 *
 *  - the event committed is the LONGEST listed candidate that is a prefix
 *    of the rest of the text and has positive probability; its probability
 *    is multiplied in and its bytes committed (the generation path that
 *    produces those bytes in one step);
 *  - where no such candidate exists (the text leaves every listed event),
 *    REST's probability times the tail rule: u = the shortest prefix of the
 *    rest that is not a prefix of any positive candidate, scored
 *    M(u) / M(R+) with M the step's mixture of prefix masses (the members
 *    that answered the step, their normalised weights) and M(R+) its mass of
 *    everything that starts with no positive candidate and is not END;
 *    at the very end of the text (the rest is a proper prefix of a positive
 *    candidate) the probability that the next bytes start with the rest.
 *
 * Summed over all texts of one length these probabilities are at most 1
 * (docs/EVALUATION.md, "Scoring through the steps"). END is never scored:
 * a document's end is not an event of the text. A member whose context is
 * full is re-opened on the second half of its window (prompt "" = its
 * document-start token, the window's text appended). A member that fails
 * fails the scoring (no silent renormalisation). min_ppl and min_ppl_cross
 * are refused (400): they choose among proposals, not from a distribution.
 */
typedef struct {
    size_t from, len;          /* the bytes of the text this step committed */
    double logprob;            /* natural log of its probability */
    int rest;                  /* 1: REST times the tail rule */
    /* What the step's probability is made of, for tuning a rule's
     * parameters offline (valid during the callback only): */
    size_t n_members, n_events;/* the ensemble's members; the step's events (candidates + END) */
    const double *ev;          /* [m * n_events + e]: member m's mass of event e (rows of the
                                * members not in the step are 0) */
    int event;                 /* the forced event, -1 for REST */
    const double *rest_part;   /* REST steps: [m] member m's REST-part of the piece, R_m(u) (at the
                                * end of the text, plus its masses of the events that extend it) */
    const double *rest_mass;   /* REST steps: [m] member m's REST mass, rest_m */
} ensemble_score_step;

typedef struct {
    const char *strategy;      /* NULL: the ensemble's default */
    const double *weights;     /* NULL: default; else one per member of the ensemble */
    size_t n_weights;
    const char *context;       /* NULL or "": from the document start */
    const char *text;          /* the bytes scored */
    size_t len;
    /* optional: each step as it is scored; non-zero stops with an error */
    int (*on_step)(void *ud, const ensemble_score_step *s);
    void *ud;
} ensemble_score_request;

typedef struct {
    double logprob;            /* natural log, the sum of the steps' */
    size_t bytes;              /* == len when status is 0 */
    int steps, rest_steps;     /* committed steps; of them, REST steps */
    int windows;               /* member sessions re-opened for a full context */
    int rescaled;              /* member steps whose listed events summed above 1, scaled to 1 */
    int rounds;                /* concurrent round trips */
    long decoded;              /* beam > 0: token positions the members decoded, all together */
    double seconds;
    int status;                /* 0 ok, else an HTTP-like status */
    char error[256];
} ensemble_score_result;

/* 0, or -1 with out->status and out->error. Thread-safe like generation. */
int ensemble_score_text(ensemble *e, const ensemble_score_request *q, ensemble_score_result *out);

/* ---- the members' next-byte masses along a text (ensemble_bytes.c) ---------
 *
 * ensemble_score_bytes() walks a given text one byte at a time: a session
 * on every member taking part (prompt "" = its document-start token), and at
 * each position pos < len one concurrent round in which every member
 * appends the previous byte (healing, PROTOCOL.md) and answers its
 * next-byte distribution (the step request's next_bytes, at `depth`): its
 * masses of the 256 byte values and of the end of text. on_byte gets
 * them as lq[m * 257 + e] (natural logs; e = the byte value, 256 = END;
 * -INFINITY for no mass, and for every event of a member not taking part).
 * A member whose context is full is re-opened on the second half of its
 * window (prompt "", the window's text appended from a word start); a
 * member that fails fails the walk. The end of the text is not asked.
 * With beam > 0 the rows come instead from one POST /v1/next_bytes per
 * member (concurrent; the worker rolls its own context), then on_byte runs
 * for every position in order: the same rows interface, no session.
 */
typedef struct {
    const double *take_part;   /* NULL: every member; else one per member, > 0 takes part */
    size_t n_take_part;
    const char *text;
    size_t len;
    int depth;                 /* the next-byte distribution's depth (PROTOCOL.md, next_bytes): 1..4;
                                * 0 = ENSEMBLE_BYTES_DEPTH */
    int (*on_byte)(void *ud, size_t pos, const double *lq, size_t n_members); /* non-zero stops */
    void *ud;
    int beam;                  /* > 0: each member walks the whole text at once over its covering
                                * tokenizations (POST /v1/next_bytes with this beam; consort-workers
                                * only), one concurrent call per member; 0: the per-byte step walk
                                * above (canonical prefix) */
} ensemble_bytes_request;

#define ENSEMBLE_BYTES_DEPTH 3

typedef struct {
    size_t bytes;              /* positions answered (== len when status is 0) */
    int windows;               /* member sessions re-opened for a full context */
    int rounds;                /* concurrent round trips */
    long decoded;              /* beam > 0: token positions the members decoded, all together */
    double seconds;
    int status;                /* 0 ok, else an HTTP-like status */
    char error[256];
} ensemble_bytes_result;

/* 0, or -1 with out->status and out->error. Thread-safe like generation. */
int ensemble_score_bytes(ensemble *e, const ensemble_bytes_request *q, ensemble_bytes_result *out);

/* "solo:NAME", "mixture", "product", "min_ppl", "min_ppl_cross", "selective" */
int ensemble_strategy_valid(const ensemble *e, const char *strategy, char *err, size_t errlen);

#endif
