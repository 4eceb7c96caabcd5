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
 *    number of session slots); further requests wait in line, in order.
 *  - With cfg->api_key set, every request under /v1 must carry
 *    "Authorization: Bearer KEY" (else 401 invalid_api_key); /health,
 *    /metrics and CORS preflights stay open.
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
    unsigned conn_limit;          /* 0: http_server's default */
    int max_parallel;             /* generations at once, others wait in line; 0: no limit */
    const char *api_key;          /* NULL or "": no auth; else /v1 routes need "Authorization: Bearer KEY" */
} api_config;

typedef struct api_server api_server;

api_server *api_start(const api_config *cfg, const api_backend *be, char *err, size_t errlen);
int api_port(const api_server *s);
void api_stop(api_server *s);

#endif
