/* common/http_server.h: a small HTTP/1.1 server over libmicrohttpd, shared by
 * consort-worker (the member protocol) and consort's OpenAI-style server.
 *
 * Model: one route callback sees every request, fully read: method, path
 * (without the query), raw query string, headers on demand, and the whole
 * body. It must answer exactly once with one of the http_reply_* functions
 * (or http_error); a callback that returns without answering gets a 500.
 *
 * Contract:
 *  - http_server_start() binds host:port (port 0 = an ephemeral port; read
 *    the real one with http_server_port()). Each connection gets its own
 *    thread (MHD thread-per-connection), so a callback may block (e.g. on a
 *    model decode) without stalling other connections; HTTP/1.1 keep-alive
 *    is on. Returns NULL with a message in err (if given) on failure.
 *  - Request bodies above opts.max_body bytes never reach the callback: the
 *    client gets 413 {"error":{"type":"invalid_request_error",
 *    "code":"body_too_large",...}} (decided from Content-Length before the
 *    body is read when the client sends one).
 *  - The callback runs on a connection thread; it must be thread-safe.
 *  - Errors use the OpenAI shape {"error":{"message","type","code"}}.
 *  - Streaming (Server-Sent Events etc.): http_reply_stream() answers with a
 *    chunked body produced by `fn`, which runs on its own thread and pushes
 *    chunks with http_stream_write(); each write blocks until the connection
 *    took the bytes and returns -1 once the client has gone (or the server
 *    is stopping), so a producer can stop early. The response ends when fn
 *    returns. `cleanup` (may be NULL) then runs with `user` exactly once,
 *    even when the stream never started.
 *  - http_server_stop() stops accepting, ends open streams (their writes
 *    fail), waits for every connection thread, and frees everything.
 */
#ifndef CONSORT_HTTP_SERVER_H
#define CONSORT_HTTP_SERVER_H

#include <jansson.h>
#include <stddef.h>

typedef struct http_server http_server;
typedef struct http_conn http_conn;     /* one request being answered */
typedef struct http_stream http_stream; /* a streaming response being written */

typedef struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* "/v1/step" (no query) */
    const char *query;  /* raw text after '?', "" when none */
    const char *body;   /* NUL-terminated (not counted in body_len); "" when none */
    size_t body_len;
} http_request;

typedef void (*http_route_fn)(http_conn *c, const http_request *req, void *user);

typedef struct http_server_opts {
    const char *host;       /* numeric address or name; NULL = "127.0.0.1" */
    int port;               /* 0 = ephemeral */
    size_t max_body;        /* bytes; 0 = 8 MiB */
    unsigned conn_limit;    /* simultaneous connections; 0 = 256 */
    unsigned idle_timeout;  /* seconds an idle keep-alive connection lives; 0 = 600 */
} http_server_opts;

http_server *http_server_start(const http_server_opts *opts, http_route_fn route,
                               void *user, char *err, size_t err_size);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

/* Request helpers. */
const char *http_header(http_conn *c, const char *name);      /* NULL if absent */
const char *http_query_arg(http_conn *c, const char *name);   /* decoded; NULL if absent */
/* Parse the body as a JSON object. On failure answers 400 (invalid_json /
 * invalid_request) itself and returns NULL. The caller owns the result. */
json_t *http_json_body(http_conn *c, const http_request *req);

/* Extra response header for the coming reply (copied; up to 16). */
int http_add_header(http_conn *c, const char *name, const char *value);

/* Replies: each returns 0, or -1 if the reply could not be queued (or one
 * was already given). http_reply_json steals the reference to obj. */
int http_reply_json(http_conn *c, unsigned status, json_t *obj);
int http_reply_text(http_conn *c, unsigned status, const char *content_type,
                    const char *data, size_t len);
int http_error(http_conn *c, unsigned status, const char *type, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

typedef void (*http_stream_fn)(http_stream *st, void *user);
int http_reply_stream(http_conn *c, unsigned status, const char *content_type,
                      http_stream_fn fn, void (*cleanup)(void *user), void *user);
int http_stream_write(http_stream *st, const void *data, size_t len);

#endif
