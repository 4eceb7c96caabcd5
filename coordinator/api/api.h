/* coordinator/api/api.h: consort's OpenAI-compatible HTTP server (docs/API.md).
 *
 * Routes: POST /v1/completions, POST /v1/chat/completions (streaming as
 * Server-Sent Events or not), GET /v1/models, GET /v1/models/{id},
 * GET /health, GET /metrics (Prometheus text), OPTIONS (CORS preflight).
 *
 * The server drives a generation backend through api_backend, so it does not
 * care whether it runs the real ensemble (cmd_serve.c binds ensemble.h and
 * members.h) or a fake one (tests/unit/api/test_api.c).
 *
 * Contract:
 *  - api_start() listens on cfg->host:cfg->port (port 0: ephemeral, see
 *    api_port()); each connection has its own thread, so requests run
 *    concurrently (the backend must be thread-safe, as ensemble_generate is).
 *  - Requests are validated by openai.c before any generation; errors are
 *    OpenAI error objects with the right status (400 bad request, 404
 *    unknown route/model, 405 wrong method, 413 body too large, 503 when no
 *    member is up, or what the backend reports).
 *  - A streaming request that fails after its first event gets an SSE event
 *    {"error": {...}} and then "data: [DONE]". A client that goes away
 *    mid-stream stops its generation at the next chunk (the backend's chunk
 *    callback returns non-zero) and everything it held is freed.
 *  - At most cfg->max_parallel generations run at once (workers have a fixed
 *    number of session slots); further requests wait in line, in order, at
 *    most cfg->queue_limit of them: one more gets 429 with Retry-After.
 *  - Each generation has a deadline, cfg->request_timeout seconds from the
 *    request's receipt (the wait in line counts): a request still waiting
 *    then gets 503 with Retry-After; a running one ends as if max_tokens
 *    were reached (finish_reason "length", "ensemble.deadline_exceeded":
 *    true; a stream gets its final chunk and [DONE]).
 *  - A client that goes away stops its generation at the next step,
 *    streamed (a failed write) or not (http_conn_gone between steps).
 *  - With cfg->api_key set, every request under /v1 must carry
 *    "Authorization: Bearer KEY" (else 401 invalid_api_key), and /metrics
 *    too unless cfg->metrics_public; /health and CORS preflights stay open.
 *  - GET /health: 200 {"status":"ok"} when every member answers, else 503
 *    with "status" "degraded" (some down) or "unavailable" (all down) and
 *    "members_down" naming them; 503 "shutting_down" while draining.
 *  - api_drain() is the graceful half of a shutdown: new generation requests
 *    and those waiting in line get 503 shutting_down with Retry-After,
 *    running ones may finish for up to `timeout` seconds, then the rest
 *    stop at their next step (streams end with a final chunk and [DONE]).
 *    It returns when no generation runs and every stream has ended.
 *  - api_stop() makes running generations stop at their next chunk, ends
 *    open streams, waits for every connection and frees the server.
 */
#ifndef CONSORT_API_H
#define CONSORT_API_H

#include "coordinator/engine/ensemble.h"

#include <stddef.h>

typedef struct api_backend {
    void *ctx;
    int (*generate)(void *ctx, const ensemble_request *req, ensemble_on_chunk on_chunk,
                    void *ud, ensemble_result *out);
    void (*result_free)(void *ctx, ensemble_result *r);
    /* 1 if valid, else 0 with a message (may be NULL: all valid) */
    int (*strategy_valid)(void *ctx, const char *strategy, char *err, size_t errlen);
    size_t (*n_members)(void *ctx);
    const char *(*member_name)(void *ctx, size_t i);
    int (*member_up)(void *ctx, size_t i); /* 1 if usable now (last known state) */
    /* optional: asks the member now (GET /health); 1 up. Used by GET /health. */
    int (*member_check)(void *ctx, size_t i);
    /* optional: member i's kind ("consort-worker", "llama-server"), model
     * (path or name, "" unknown) and whether its masses are exact; for
     * GET /v1/models. */
    void (*member_describe)(void *ctx, size_t i, const char **kind, const char **model, int *exact);
} api_backend;

typedef struct {
    const char *host;             /* NULL: 127.0.0.1 */
    int port;                     /* 0: ephemeral */
    const char *model_id;         /* the ensemble's model id; NULL: "consort" */
    const char *strategy;         /* default strategy, for /v1/models and logs; may be NULL */
    int default_max_tokens;       /* chat requests without max_tokens; 0: 256 */
    int max_tokens_limit;         /* 0: none */
    unsigned conn_limit;          /* connections in total; 0: http_server's default (256) */
    unsigned per_ip_limit;        /* connections per client address; 0: http_server's (32) */
    unsigned idle_timeout;        /* seconds a keep-alive connection may idle; 0: http_server's (75) */
    unsigned read_timeout;        /* seconds to deliver headers and body; 0: http_server's (60) */
    size_t max_body;              /* request body bytes; 0: http_server's (8 MiB) */
    const char *tls_cert_file;    /* with tls_key_file: HTTPS */
    const char *tls_key_file;
    int max_parallel;             /* generations at once, others wait in line; 0: no limit */
    int queue_limit;              /* requests waiting in line; 0: API_DEFAULT_QUEUE; -1: no limit */
    double request_timeout;       /* seconds per generation request; 0: API_DEFAULT_REQUEST_TIMEOUT; <0: none */
    const char *api_key;          /* NULL or "": no auth; else /v1 routes need "Authorization: Bearer KEY" */
    int metrics_public;           /* 1: /metrics needs no key even when api_key is set */
} api_config;

#define API_DEFAULT_QUEUE 64
#define API_DEFAULT_REQUEST_TIMEOUT 600.0
#define API_DEFAULT_DRAIN_TIMEOUT 30.0
#define API_RETRY_AFTER_BUSY "1"        /* seconds, queue full */
#define API_RETRY_AFTER_SHUTDOWN "5"    /* seconds, draining or timed out in line */

typedef struct api_server api_server;

api_server *api_start(const api_config *cfg, const api_backend *be, char *err, size_t errlen);
int api_port(const api_server *s);
/* Graceful shutdown, first half (see above); timeout in seconds. */
void api_drain(api_server *s, double timeout);
void api_stop(api_server *s);

#endif
