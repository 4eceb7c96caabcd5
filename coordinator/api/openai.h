/* coordinator/api/openai.h: the OpenAI wire format of the coordinator's server,
 * pure (no network, no engine calls): request bodies of POST /v1/completions
 * and POST /v1/chat/completions parsed and validated into an
 * ensemble_request, and the response objects built in OpenAI's shapes
 * (text_completion, chat.completion, chat.completion.chunk, error), plus
 * consort's `ensemble` extension on both sides. docs/API.md is the user's
 * view of the same rules.
 *
 * Contract:
 *  - oai_parse_request() accepts exactly what docs/API.md lists. A field
 *    that we cannot honour (n > 1, echo, best_of > 1, suffix, tools, a
 *    non-empty logit_bias, non-zero penalties, ...) or do not know is a 400,
 *    never silently ignored; a few informational fields (user, metadata,
 *    store, ...) are accepted and ignored. On failure it fills *err (HTTP
 *    status, OpenAI error type, param, code, message) and returns -1; the
 *    request needs no oai_request_free() then. On success returns 0 and the
 *    caller must oai_request_free() it.
 *  - On success rq->req is ready for ensemble_generate(); every pointer in
 *    it stays valid until oai_request_free(). Chat messages are normalised
 *    to [{"role", "content": string}] (text parts joined, "developer" read
 *    as "system").
 *  - A request whose `model` is a member name (and that names no strategy)
 *    runs that member alone ("solo:NAME"); any other model id is served by
 *    the whole ensemble and answered as cfg->model_id.
 *  - Every builder returns a new jansson reference (NULL only when out of
 *    memory); arguments documented as "stolen" are consumed even on failure.
 *  - Text that goes into JSON strings is valid UTF-8 (invalid bytes become
 *    U+FFFD); the exact bytes of logprob tokens are kept in chat's `bytes`.
 */
#ifndef CONSORT_OPENAI_H
#define CONSORT_OPENAI_H

#include "common/limits.h"
#include "coordinator/engine/ensemble.h"

#include <jansson.h>
#include <stddef.h>

#define OAI_MAX_STOP 4
#define OAI_MAX_TOP_LOGPROBS 20

typedef enum { OAI_COMPLETIONS = 0, OAI_CHAT = 1 } oai_endpoint;

typedef struct {
    int status;        /* HTTP status: 400, 404, 413, 500, 503 ... */
    const char *type;  /* static: "invalid_request_error", "server_error", ... */
    char param[64];    /* "" → null */
    char code[64];     /* "" → null */
    char message[512];
} oai_error;

typedef struct {
    const char *model_id;             /* the ensemble's id (e.g. "consort") */
    const char *const *member_names;  /* known members, for validation; NULL: unchecked */
    size_t n_members;
    int default_max_tokens;           /* chat requests without max_tokens; 0 → 256 */
    int max_tokens_limit;             /* 0: none; larger max_tokens is a 400 */
} oai_config;

typedef struct {
    oai_endpoint endpoint;
    ensemble_request req;      /* for ensemble_generate() */
    char model[128];           /* model id answered in responses */
    char strategy[128];        /* "" when the ensemble's default applies */
    int stream;
    int include_usage;         /* stream_options.include_usage */
    int logprobs;              /* 1: return a logprobs object per choice */
    int top_logprobs;          /* alternatives per position (0..20) */
    size_t prompt_chars;       /* completions: text_offset of the first generated char */
    /* storage behind req's pointers (private) */
    json_t *body_;
    json_t *messages_;
    const char *stop_[OAI_MAX_STOP];
    double weights_[CONSORT_MAX_MEMBERS];
    const char *members_[CONSORT_MAX_MEMBERS];
} oai_request;

int oai_parse_request(oai_endpoint ep, const char *body, size_t len,
                      const oai_config *cfg, oai_request *rq, oai_error *err);
void oai_request_free(oai_request *rq);

/* Fill an error; fmt is printf-style. Returns -1 (for `return oai_fail(...)`). */
int oai_fail(oai_error *err, int status, const char *param, const char *code,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* {"error": {"message", "type", "param", "code"}} */
json_t *oai_error_json(const oai_error *err);
/* The error type OpenAI uses for an HTTP status. */
const char *oai_error_type(int status);

/* ---- logprobs ------------------------------------------------------------
 * Accumulates ensemble chunks into the endpoint's logprobs object:
 * completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"},
 * chat {"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": null}.
 * For streaming, take() after each chunk: the offset carries on. */
typedef struct {
    oai_endpoint endpoint;
    int n_top;
    size_t offset;             /* completions: text_offset of the next chunk (characters) */
    json_t *obj;               /* NULL until the first add */
} oai_logprobs;

void oai_logprobs_init(oai_logprobs *lp, oai_endpoint ep, int n_top, size_t offset);
int oai_logprobs_add(oai_logprobs *lp, const ensemble_chunk *c);   /* 0 ok, -1 OOM */
json_t *oai_logprobs_take(oai_logprobs *lp);  /* the object so far (empty one if none); resets */
void oai_logprobs_clear(oai_logprobs *lp);

/* ---- responses ------------------------------------------------------------ */
json_t *oai_usage_json(int prompt_tokens, int completion_tokens);
/* {"strategy", "seconds", "steps", "members": [...], "failures": n} */
json_t *oai_ensemble_json(const ensemble_result *r, const char *strategy);

/* The whole non-streaming response. logprobs: stolen, NULL → null. */
json_t *oai_response_json(const oai_request *rq, const char *id, long long created,
                          const ensemble_result *r, json_t *logprobs);

/* One streaming chunk with text (role set on the first chat chunk when
 * `first`), finish_reason NULL while running. logprobs: stolen, may be NULL.
 * With include_usage every such chunk carries "usage": null. */
json_t *oai_chunk_json(const oai_request *rq, const char *id, long long created,
                       const char *text, size_t len, int first,
                       const char *finish_reason, json_t *logprobs);
/* The final usage-only chunk: "choices": [] and usage. */
json_t *oai_usage_chunk_json(const oai_request *rq, const char *id, long long created,
                             const ensemble_result *r);

/* "data: <compact json>\n\n" (malloc'ed; *len set), NULL on OOM. */
char *oai_sse_event(const json_t *obj, size_t *len);

/* Number of Unicode characters in s[0..n) (continuation bytes not counted). */
size_t oai_utf8_chars(const char *s, size_t n);

#endif
