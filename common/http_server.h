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
 *
 * Access, limits and timeouts (all in http_server_opts; 0/NULL = default;
 * nginx's defaults are the reference where it has one):
 *  - bearer_token (non-NULL, non-empty): every request must carry
 *    "Authorization: Bearer <token>", compared in constant time
 *    (http_token_equal), except requests for one of the exact paths of
 *    open_paths (NULL-terminated, e.g. {"/health", NULL}). Anything else
 *    gets 401 {"error":{"type":"invalid_request_error","code":
 *    "invalid_api_key",...}} with "WWW-Authenticate: Bearer", decided from
 *    the headers before the body is read and before the route runs.
 *  - conn_limit (default 256) connections in total and per_ip_limit
 *    (default 32) per client address: a connection beyond either is
 *    refused at accept (closed without an answer; libmicrohttpd cannot
 *    answer there), while the connections already open keep working.
 *  - idle_timeout (default 75 s, nginx's keepalive_timeout): a connection
 *    with no traffic for this long is closed. It is an inactivity timeout:
 *    it restarts with every byte received or sent.
 *  - read_timeout (default 60 s, nginx's client_header_timeout and
 *    client_body_timeout): a request's headers and body must have arrived
 *    within this many seconds, however slowly they trickle. Exact for a
 *    connection's first request (counted from accept); for a later request
 *    on a keep-alive connection it counts from the request line (the first
 *    moment libmicrohttpd reports), and the request line itself must come
 *    within idle_timeout + read_timeout of the previous answer. A connection
 *    over the limit is closed without an answer (the headers may not be
 *    complete, so there is nothing to answer to). Checked by a watchdog
 *    every 250 ms, so the cut comes up to 250 ms late. Time spent in a
 *    route callback or writing an answer is not limited here.
 *  - tls_cert_file and tls_key_file (both set): HTTPS through
 *    libmicrohttpd's TLS (PEM files, read at start). Only one set is an
 *    error; so is a build of libmicrohttpd without TLS
 *    (http_server_tls_available() says).
 *  - name: prefix of this server's log lines ("worker", "consort").
 *
 * Logging: every answer with status >= 400 that goes through this layer
 * (its own 401/413/500, a route's http_error or http_reply_json) writes one
 * warn line: name, status, error code, message, method, path and client
 * address. Never a header value, never a body, never the token.
 *
 * Malformed HTTP: libmicrohttpd 0.9.75 answers malformed request lines and
 * headers (bad Content-Length, header too large, missing Host on
 * HTTP/1.1, ...) itself, before any callback, with fixed HTML bodies; it
 * has no hook to replace them. This layer answers in JSON every error it
 * can see (413 for a too-large or unparsable Content-Length it reaches,
 * 401, 404/405 in routes).
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
    unsigned conn_limit;    /* simultaneous connections in total; 0 = 256 */
    unsigned per_ip_limit;  /* simultaneous connections per client address; 0 = 32 */
    unsigned idle_timeout;  /* seconds without traffic before a connection closes; 0 = 75 */
    unsigned read_timeout;  /* seconds to deliver a request's headers and body; 0 = 60 */
    const char *tls_cert_file; /* PEM certificate (chain); with tls_key_file: HTTPS */
    const char *tls_key_file;  /* PEM private key */
    const char *bearer_token;  /* NULL or "": no token required */
    const char *const *open_paths; /* NULL-terminated exact paths exempt from the token */
    const char *name;       /* log-line prefix; NULL = "http" */
} http_server_opts;

/* Defaults of http_server_opts, for help texts and docs. */
#define HTTP_DEFAULT_CONN_LIMIT 256u
#define HTTP_DEFAULT_PER_IP_LIMIT 32u
#define HTTP_DEFAULT_IDLE_TIMEOUT 75u
#define HTTP_DEFAULT_READ_TIMEOUT 60u

http_server *http_server_start(const http_server_opts *opts, http_route_fn route,
                               void *user, char *err, size_t err_size);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

/* 1 when this libmicrohttpd can serve HTTPS, else 0. */
int http_server_tls_available(void);

/* Constant-time equality of two NUL-terminated secrets: the time taken
 * depends only on the length of `given` (and of `expected` when the
 * lengths differ), never on where the first difference is. 1 if equal. */
int http_token_equal(const char *expected, const char *given);

/* Request helpers. */
const char *http_header(http_conn *c, const char *name);      /* NULL if absent */
const char *http_query_arg(http_conn *c, const char *name);   /* decoded; NULL if absent */
/* Parse the body as a JSON object. On failure answers 400 (invalid_json /
 * invalid_request) itself and returns NULL. The caller owns the result. */
json_t *http_json_body(http_conn *c, const http_request *req);

/* 1 when the client has closed its side of the connection (or it broke),
 * else 0. For a callback that computes for a long time without writing:
 * call it between units of work and give up when it says 1. It polls the
 * socket without blocking and without consuming anything (POLLRDHUP on
 * Linux, so TLS records or pipelined bytes waiting to be read do not hide
 * a hang-up; a MSG_PEEK read elsewhere). A client that half-closes (shuts
 * down its sending side and waits for the answer) reads as gone; HTTP
 * clients do not do that. */
int http_conn_gone(http_conn *c);

/* A short, non-secret fingerprint of the bearer token this request
 * carried: 16 hex digits of SipHash-2-4 of the token under a key drawn at
 * server start (so it cannot be computed, or matched, off the server), or
 * "" when the request carried no "Authorization: Bearer" header. Sessions
 * are bound to it. Valid for the whole route callback. Any Bearer value is
 * fingerprinted, also on a server without bearer_token, so a session can
 * be bound to whatever token its opener presented. Never the token itself. */
const char *http_conn_token_id(http_conn *c);

/* CLOCK_MONOTONIC seconds (common/clock) when the request's headers were
 * complete: the "receipt" that deadlines count from. */
double http_conn_received_s(http_conn *c);

/* Extra response header for the coming reply (copied; up to 16). */
int http_add_header(http_conn *c, const char *name, const char *value);

/* Replies: each returns 0, or -1 if the reply could not be queued (or one
 * was already given). http_reply_json steals the reference to obj. */
int http_reply_json(http_conn *c, unsigned status, json_t *obj);
int http_reply_text(http_conn *c, unsigned status, const char *content_type,
                    const char *data, size_t len);
/* Errors have the OpenAI shape {"error":{"message","type","code","param"}};
 * http_error's param is null, http_error_param names the field at fault. */
int http_error(http_conn *c, unsigned status, const char *type, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int http_error_param(http_conn *c, unsigned status, const char *type, const char *code,
                     const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

typedef void (*http_stream_fn)(http_stream *st, void *user);
int http_reply_stream(http_conn *c, unsigned status, const char *content_type,
                      http_stream_fn fn, void (*cleanup)(void *user), void *user);
int http_stream_write(http_stream *st, const void *data, size_t len);

#endif
