/* common/http_server: start on port 0, talk to it with libcurl: JSON replies,
 * query strings, keep-alive, 404, malformed JSON, 413 (with and without
 * Content-Length), a handler that forgets to reply, and a streamed body.
 * Then access and limits, partly over raw sockets: the bearer token (right,
 * wrong, missing, open path, its fingerprint, the 401 log line without the
 * token), the constant-time compare, the per-address and total connection
 * limits, the read timeout against a trickling client, the idle timeout,
 * http_conn_gone, a bad Content-Length, and TLS with a self-signed
 * certificate made by openssl (skipped when openssl is missing). */
#define _GNU_SOURCE /* strcasestr */
#include "common/clock.h"
#include "common/http_server.h"
#include "tests/tap.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t on_data(char *p, size_t sz, size_t n, void *u) {
    buf_t *b = u;
    char *d = realloc(b->data, b->len + sz * n + 1);
    if (!d) return 0;
    b->data = d;
    memcpy(b->data + b->len, p, sz * n);
    b->len += sz * n;
    b->data[b->len] = 0;
    return sz * n;
}

static void stream_fn(http_stream *st, void *user) {
    int *n = user;
    char line[64];
    for (int i = 0; i < *n; i++) {
        int k = snprintf(line, sizeof line, "data: {\"i\":%d}\n\n", i);
        if (http_stream_write(st, line, (size_t)k) != 0) return;
    }
    http_stream_write(st, "data: [DONE]\n\n", 14);
}

static void stream_forever(http_stream *st, void *user) {
    (void)user;
    char chunk[256];
    memset(chunk, 'y', sizeof chunk);
    while (http_stream_write(st, chunk, sizeof chunk) == 0) {}
}

static size_t on_data_abort(char *p, size_t sz, size_t n, void *u) {
    (void)p;
    (void)u;
    (void)sz;
    (void)n;
    return 0; /* hang up after the first chunk */
}

static atomic_int cleaned;
static void stream_cleanup(void *user) {
    free(user);
    cleaned++;
}

/* /wait: polls http_conn_gone for up to 3 s; 1 when it said gone. */
static atomic_int gone_seen = -1;
static int wait_for_gone(http_conn *c) {
    for (int i = 0; i < 150; i++) {
        if (http_conn_gone(c)) return 1;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void route(http_conn *c, const http_request *req, void *user) {
    (void)user;
    if (!strcmp(req->path, "/hello") && !strcmp(req->method, "GET")) {
        const char *who = http_query_arg(c, "who");
        http_add_header(c, "X-Test", "yes");
        http_reply_json(c, 200, json_pack("{s:s, s:s}", "hello", who ? who : "world",
                                          "query", req->query));
    } else if (!strcmp(req->path, "/echo") && !strcmp(req->method, "POST")) {
        json_t *o = http_json_body(c, req);
        if (!o) return;
        json_object_set_new(o, "n", json_integer((json_int_t)req->body_len));
        http_reply_json(c, 200, o);
    } else if (!strcmp(req->path, "/len")) {
        char t[32];
        int k = snprintf(t, sizeof t, "%zu", req->body_len);
        http_reply_text(c, 200, NULL, t, (size_t)k);
    } else if (!strcmp(req->path, "/forget")) {
        /* no reply on purpose */
    } else if (!strcmp(req->path, "/sse")) {
        int *n = malloc(sizeof *n);
        *n = 50;
        http_reply_stream(c, 200, "text/event-stream", stream_fn, stream_cleanup, n);
    } else if (!strcmp(req->path, "/who")) {
        http_reply_json(c, 200, json_pack("{s:s}", "id", http_conn_token_id(c)));
    } else if (!strcmp(req->path, "/sleep")) { /* computes 2.5 s without writing */
        struct timespec ts = {2, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
        http_reply_text(c, 200, NULL, "slept", 5);
    } else if (!strcmp(req->path, "/wait")) {
        gone_seen = wait_for_gone(c);
        http_reply_text(c, 200, NULL, "waited", 6);
    } else if (!strcmp(req->path, "/forever")) {
        http_reply_stream(c, 200, NULL, stream_forever, stream_cleanup, malloc(1));
    } else {
        http_error(c, 404, "invalid_request_error", "not_found", "no route %s %s", req->method,
                   req->path);
    }
}

static long do_req(CURL *h, const char *url, const char *body, long body_len, buf_t *out,
                   int chunked) {
    out->len = 0;
    if (out->data) out->data[0] = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    struct curl_slist *hd = NULL;
    if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, body_len);
        hd = curl_slist_append(hd, "Content-Type: application/json");
        if (chunked) hd = curl_slist_append(hd, "Transfer-Encoding: chunked");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else diag("curl: %s", curl_easy_strerror(rc));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hd);
    return status;
}

static const char *err_code(const buf_t *b, char *dst, size_t n) {
    json_t *o = json_loads(b->data ? b->data : "", 0, NULL);
    const char *code = o ? json_string_value(json_object_get(json_object_get(o, "error"), "code")) : NULL;
    const char *msg = o ? json_string_value(json_object_get(json_object_get(o, "error"), "message")) : NULL;
    snprintf(dst, n, "%s", code && msg ? code : "(none)");
    json_decref(o);
    return dst;
}

static void test_basics(void) {
    char err[256];
    http_server_opts o = {.host = "127.0.0.1", .port = 0, .max_body = 1000};
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    ok(s != NULL, "server starts on port 0");
    if (!s) {
        diag("%s", err);
        return;
    }
    int port = http_server_port(s);
    ok(port > 0 && port < 65536, "an ephemeral port was bound");

    char base[64], url[128], code[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    CURL *h = curl_easy_init();
    buf_t b = {0};

    snprintf(url, sizeof url, "%s/hello?who=a%%20b&x=1", base);
    is_int(do_req(h, url, NULL, 0, &b, 0), 200, "GET /hello is 200");
    json_t *j = json_loads(b.data, 0, NULL);
    is_str(json_string_value(json_object_get(j, "hello")), "a b", "query argument decoded");
    is_str(json_string_value(json_object_get(j, "query")), "who=a%20b&x=1", "raw query passed");
    json_decref(j);
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    is_str(ct, "application/json", "JSON content type");

    snprintf(url, sizeof url, "%s/echo", base);
    const char *body = "{\"a\": [1, 2, 3]}";
    is_int(do_req(h, url, body, (long)strlen(body), &b, 0), 200, "POST /echo is 200");
    long nconn = -1;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn);
    is_int(nconn, 0, "keep-alive: the second request reused the connection");
    j = json_loads(b.data, 0, NULL);
    is_int(json_integer_value(json_object_get(j, "n")), (long long)strlen(body), "body length seen");
    is_int(json_array_size(json_object_get(j, "a")), 3, "body parsed");
    json_decref(j);

    is_int(do_req(h, url, "{\"a\": ", 6, &b, 0), 400, "malformed JSON is 400");
    is_str(err_code(&b, code, sizeof code), "invalid_json", "malformed JSON error shape");
    is_int(do_req(h, url, "[1]", 3, &b, 0), 400, "non-object JSON is 400");
    is_int(do_req(h, url, "{\"a\":\"\xff\"}", 9, &b, 0), 400, "invalid UTF-8 in JSON is 400");
    is_int(do_req(h, url, "", 0, &b, 0), 400, "empty body is 400");

    char big[3000];
    memset(big, 'x', sizeof big);
    is_int(do_req(h, url, big, sizeof big, &b, 0), 413, "oversize body is 413");
    is_str(err_code(&b, code, sizeof code), "body_too_large", "413 error shape");
    j = json_loads(b.data ? b.data : "", 0, NULL);
    is_str(json_string_value(json_object_get(json_object_get(j, "error"), "param")), "body",
           "the 413 body names its param");
    json_decref(j);
    is_int(do_req(h, url, big, sizeof big, &b, 1), 413, "oversize chunked body is 413");
    is_str(err_code(&b, code, sizeof code), "body_too_large", "chunked 413 error shape");
    snprintf(url, sizeof url, "%s/len", base);
    is_int(do_req(h, url, big, 1000, &b, 0), 200, "a body at the limit is accepted");
    is_str(b.data, "1000", "whole body at the limit received");

    snprintf(url, sizeof url, "%s/nope", base);
    is_int(do_req(h, url, NULL, 0, &b, 0), 404, "unknown route is 404");
    is_str(err_code(&b, code, sizeof code), "not_found", "404 error shape");

    snprintf(url, sizeof url, "%s/forget", base);
    is_int(do_req(h, url, NULL, 0, &b, 0), 500, "a handler without a reply gives 500");

    snprintf(url, sizeof url, "%s/sse", base);
    is_int(do_req(h, url, NULL, 0, &b, 0), 200, "stream is 200");
    ok(b.data && strstr(b.data, "data: {\"i\":0}\n\n") && strstr(b.data, "data: {\"i\":49}\n\n"),
       "stream carries every event");
    ok(b.data && b.len >= 14 && !strcmp(b.data + b.len - 14, "data: [DONE]\n\n"),
       "stream ends with the last event");
    snprintf(url, sizeof url, "%s/hello", base);
    is_int(do_req(h, url, NULL, 0, &b, 0), 200, "the connection still works after a stream");

    snprintf(url, sizeof url, "%s/forever", base);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data_abort);
    ok(curl_easy_perform(h) == CURLE_WRITE_ERROR, "client hangs up on an endless stream");
    curl_easy_cleanup(h);
    for (int i = 0; i < 200 && cleaned < 2; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    is_int(cleaned, 2, "the endless producer saw the hang-up and its cleanup ran");

    /* A stream still open when the server stops is ended by the stop. */
    CURLM *m = curl_multi_init();
    CURL *h2 = curl_easy_init();
    buf_t b2 = {0};
    curl_easy_setopt(h2, CURLOPT_URL, url);
    curl_easy_setopt(h2, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h2, CURLOPT_WRITEDATA, &b2);
    curl_easy_setopt(h2, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)1024);
    curl_multi_add_handle(m, h2);
    int running = 1;
    for (int i = 0; i < 100 && running && b2.len == 0; i++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 10, NULL);
    }
    ok(b2.len > 0, "endless stream started");
    http_server_stop(s);
    is_int(cleaned, 3, "stop ended the open stream and ran its cleanup");
    curl_multi_remove_handle(m, h2);
    curl_easy_cleanup(h2);
    curl_multi_cleanup(m);
    free(b2.data);
    free(b.data);

    http_server_opts bad = {.host = "256.1.1.1", .port = 0};
    ok(http_server_start(&bad, route, NULL, err, sizeof err) == NULL, "bad host fails cleanly");
}

/* ---- raw sockets --------------------------------------------------------- */

static int raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_send(int fd, const char *s) {
    size_t n = strlen(s);
    return send(fd, s, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Reads what arrives until the peer closes or `timeout` seconds pass.
 * Returns the seconds until the close, or -1 on timeout; *got (may be NULL)
 * receives the bytes read, NUL-terminated. */
static double read_until_closed(int fd, double timeout, char *got, size_t cap) {
    double t0 = clock_mono_s();
    size_t n = 0;
    while (clock_mono_s() - t0 < timeout) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        char tmp[4096];
        ssize_t k = recv(fd, tmp, sizeof tmp, 0);
        if (k <= 0) {
            if (got) got[n] = 0;
            return clock_mono_s() - t0;
        }
        for (ssize_t i = 0; got && i < k && n + 1 < cap; i++) got[n++] = tmp[i];
    }
    if (got) got[n] = 0;
    return -1;
}

/* Reads one whole answer (headers and Content-Length body) within 5 s;
 * returns its status, or -1. */
static int raw_response(int fd) {
    char buf[8192];
    size_t n = 0;
    double t0 = clock_mono_s();
    while (n + 1 < sizeof buf && clock_mono_s() - t0 < 5) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
        buf[n] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10) <= n) {
            int status = -1;
            sscanf(buf, "HTTP/1.%*d %d", &status);
            return status;
        }
    }
    return -1;
}

static int count_of(const char *hay, const char *needle) {
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) k++;
    return k;
}

/* ---- the bearer token ---------------------------------------------------- */

static size_t on_header(char *p, size_t sz, size_t n, void *u) {
    return on_data(p, sz, n, u);
}

/* GET url with an optional Authorization header; headers into hd. */
static long get_auth(CURL *h, const char *url, const char *auth, buf_t *out, buf_t *hd) {
    out->len = hd->len = 0;
    struct curl_slist *l = auth ? curl_slist_append(NULL, auth) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, hd);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    long status = -1;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(l);
    return status;
}

static char *token_id_of(const buf_t *b) {
    json_t *j = json_loads(b->data ? b->data : "", 0, NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    char *r = strdup(id ? id : "(none)");
    json_decref(j);
    return r;
}

static void test_token_equal(void) {
    ok(http_token_equal("abc123", "abc123"), "token_equal: equal");
    ok(!http_token_equal("abc123", "abc124"), "token_equal: last byte differs");
    ok(!http_token_equal("abc123", "xbc123"), "token_equal: first byte differs");
    ok(!http_token_equal("abc123", "abc12"), "token_equal: a prefix is not equal");
    ok(!http_token_equal("abc123", "abc1234"), "token_equal: longer is not equal");
    ok(!http_token_equal("abc123", ""), "token_equal: empty is not equal");
    ok(!http_token_equal("", "a"), "token_equal: against an empty secret");
    ok(!http_token_equal("abc", "abcabc"), "token_equal: a repetition is not equal");
    ok(!http_token_equal("abc", NULL), "token_equal: NULL");
}

static void test_token(void) {
    static const char *const open[] = {"/hello", NULL};
    http_server_opts o = {.port = 0, .bearer_token = "s3cret-token-value", .open_paths = open,
                          .name = "tok"};
    char err[256], url[128], code[64];
    /* Capture stderr (the log) for this section. */
    char logpath[] = "/tmp/test_http_log_XXXXXX";
    int logfd = mkstemp(logpath), saved = dup(2);
    fflush(stderr);
    dup2(logfd, 2);
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    ok(s != NULL, "server with a token starts");
    if (!s) {
        dup2(saved, 2);
        diag("%s", err);
        return;
    }
    CURL *h = curl_easy_init();
    buf_t b = {0}, hd = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/who", http_server_port(s));
    is_int(get_auth(h, url, NULL, &b, &hd), 401, "no token: 401");
    is_str(err_code(&b, code, sizeof code), "invalid_api_key", "no token: invalid_api_key");
    ok(hd.data && strcasestr(hd.data, "WWW-Authenticate: Bearer"), "401 carries WWW-Authenticate");
    is_int(get_auth(h, url, "Authorization: Bearer wrong-token-value", &b, &hd), 401, "wrong token: 401");
    is_int(get_auth(h, url, "Authorization: Bearer s3cret-token-valu", &b, &hd), 401, "a prefix of the token: 401");
    is_int(get_auth(h, url, "Authorization: Basic s3cret-token-value", &b, &hd), 401, "another scheme: 401");
    is_int(get_auth(h, url, "Authorization: Bearer s3cret-token-value", &b, &hd), 200, "right token: 200");
    char *id1 = token_id_of(&b);
    is_int(strlen(id1), 16, "the token's fingerprint has 16 hex digits");
    ok(!strstr(id1, "s3cret"), "the fingerprint is not the token");
    is_int(get_auth(h, url, "Authorization: bearer   s3cret-token-value", &b, &hd), 200,
           "the scheme is case-insensitive, spaces after it are skipped");
    char *id2 = token_id_of(&b);
    is_str(id2, id1, "the same token has the same fingerprint");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", http_server_port(s));
    is_int(get_auth(h, url, NULL, &b, &hd), 200, "an open path needs no token");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hello/x", http_server_port(s));
    is_int(get_auth(h, url, NULL, &b, &hd), 401, "open paths match exactly");
    free(id1);
    free(id2);
    curl_easy_cleanup(h);
    http_server_stop(s);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    char logtext[16384] = "";
    FILE *f = fdopen(logfd, "r");
    rewind(f);
    size_t n = fread(logtext, 1, sizeof logtext - 1, f);
    logtext[n] = 0;
    fclose(f);
    unlink(logpath);
    ok(strstr(logtext, "tok: rejected 401 invalid_api_key") && strstr(logtext, "GET /who from 127.0.0.1"),
       "a 401 writes one log line with status, code, method, path and address");
    is_int(count_of(logtext, "rejected 401"), 5, "one log line per rejected request");
    ok(!strstr(logtext, "s3cret") && !strstr(logtext, "wrong-token"), "no token in the log");

    /* Without a required token, the fingerprint follows what was sent. */
    http_server_opts o2 = {.port = 0};
    s = http_server_start(&o2, route, NULL, err, sizeof err);
    h = curl_easy_init();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/who", http_server_port(s));
    get_auth(h, url, "Authorization: Bearer token-a", &b, &hd);
    char *ia = token_id_of(&b);
    get_auth(h, url, "Authorization: Bearer token-b", &b, &hd);
    char *ib = token_id_of(&b);
    is_int(get_auth(h, url, NULL, &b, &hd), 200, "no token required: 200 without one");
    char *in = token_id_of(&b);
    ok(strlen(ia) == 16 && strcmp(ia, ib) != 0, "different tokens, different fingerprints");
    is_str(in, "", "no token: an empty fingerprint");
    free(ia);
    free(ib);
    free(in);
    free(b.data);
    free(hd.data);
    curl_easy_cleanup(h);
    http_server_stop(s);
}

/* ---- connection limits --------------------------------------------------- */

static void test_limit(const char *what, http_server_opts o) {
    char err[256], msg[160];
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    if (!s) {
        ok(0, "limit server starts");
        return;
    }
    int port = http_server_port(s);
    int a = raw_connect(port), b = raw_connect(port);
    sleep_s(0.3); /* let the server accept both */
    int c = raw_connect(port);
    double closed = c >= 0 ? read_until_closed(c, 3, NULL, 0) : 0;
    snprintf(msg, sizeof msg, "%s: the connection beyond the limit is closed", what);
    ok(closed >= 0, msg);
    raw_send(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    snprintf(msg, sizeof msg, "%s: the connections within the limit still work", what);
    is_int(raw_response(a), 200, msg);
    raw_send(b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    is_int(raw_response(b), 200, msg);
    close(a);
    sleep_s(0.3); /* the server notices the close */
    int d = raw_connect(port);
    raw_send(d, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    snprintf(msg, sizeof msg, "%s: a slot freed by a close is usable again", what);
    is_int(raw_response(d), 200, msg);
    close(b);
    if (c >= 0) close(c);
    close(d);
    http_server_stop(s);
}

/* ---- timeouts ------------------------------------------------------------ */

/* Trickles one header byte every 0.25 s after `head`; seconds until the
 * server closed, or -1 if it had not after `limit` seconds. */
static double trickle(int fd, const char *head, double limit) {
    double t0 = clock_mono_s();
    if (raw_send(fd, head) != 0) return 0;
    while (clock_mono_s() - t0 < limit) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 250) > 0) {
            char tmp[512];
            if (recv(fd, tmp, sizeof tmp, 0) <= 0) return clock_mono_s() - t0;
        }
        if (send(fd, "X", 1, MSG_NOSIGNAL) != 1) return clock_mono_s() - t0;
    }
    return -1;
}

static void test_read_timeout(void) {
    http_server_opts o = {.port = 0, .read_timeout = 2, .idle_timeout = 30};
    char err[256];
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    int port = http_server_port(s);

    int fd = raw_connect(port);
    double t = trickle(fd, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ", 8);
    diag("a trickling first request was cut after %.2f s (read timeout 2 s)", t);
    ok(t >= 1.8 && t <= 3.5, "read timeout: a client trickling its headers is cut at ~2 s");
    close(fd);

    fd = raw_connect(port);
    raw_send(fd, "GET /hello HTTP/1.1\r\n");
    sleep_s(1.0);
    raw_send(fd, "Host: x\r\n\r\n");
    is_int(raw_response(fd), 200, "read timeout: a slow request within the limit is answered");
    sleep_s(1.5); /* idle between requests: not counted as reading */
    t = trickle(fd, "GET /hello HTTP/1.1\r\nX-Slow: ", 8);
    diag("a trickling later request was cut after %.2f s", t);
    ok(t >= 1.5 && t <= 3.5, "read timeout: a later keep-alive request counts from its request line");
    close(fd);
    http_server_stop(s);
}

static void test_idle_timeout(void) {
    http_server_opts o = {.port = 0, .idle_timeout = 1};
    char err[256];
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    int port = http_server_port(s);
    int fd = raw_connect(port);
    raw_send(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    is_int(raw_response(fd), 200, "idle timeout: the request is answered");
    double t = read_until_closed(fd, 5, NULL, 0);
    diag("an idle keep-alive connection was closed after %.2f s (idle timeout 1 s)", t);
    ok(t >= 0.5 && t <= 3, "idle timeout: an idle keep-alive connection is closed");
    close(fd);

    CURL *h = curl_easy_init();
    buf_t b = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/sleep", port);
    is_int(do_req(h, url, NULL, 0, &b, 0), 200,
           "idle timeout: a route computing longer than it still answers");
    free(b.data);
    curl_easy_cleanup(h);
    http_server_stop(s);
}

/* ---- http_conn_gone ------------------------------------------------------ */

static void test_conn_gone(void) {
    http_server_opts o = {.port = 0};
    char err[256];
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    int port = http_server_port(s);
    gone_seen = -1;
    int fd = raw_connect(port);
    raw_send(fd, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
    sleep_s(0.3);
    close(fd);
    for (int i = 0; i < 300 && gone_seen < 0; i++) sleep_s(0.01);
    is_int(gone_seen, 1, "http_conn_gone: a client that hung up is seen as gone");

    gone_seen = -1;
    fd = raw_connect(port);
    raw_send(fd, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
    is_int(raw_response(fd), 200, "http_conn_gone: a waiting client gets its answer");
    is_int(gone_seen, 0, "http_conn_gone: a waiting client is not gone");
    close(fd);

    /* A Content-Length that is not a number: libmicrohttpd answers it
     * itself, before any callback (an HTML 400 whose headers 0.9.75 sends
     * twice: its bug, out of this layer's reach); what holds is a 4xx and a
     * closed connection. */
    fd = raw_connect(port);
    raw_send(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n");
    char got[8192];
    ok(read_until_closed(fd, 3, got, sizeof got) >= 0, "a bad Content-Length: the connection closes");
    ok(!strncmp(got, "HTTP/1.1 4", 10), "a bad Content-Length gets a 4xx");
    diag("status lines in that answer: %d", count_of(got, "HTTP/1.1 "));
    close(fd);
    /* A Content-Length over the limit reaches this layer: one JSON 413. */
    fd = raw_connect(port);
    raw_send(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n");
    read_until_closed(fd, 3, got, sizeof got);
    is_int(count_of(got, "HTTP/1.1 "), 1, "a too-large Content-Length gets one answer");
    ok(strstr(got, "HTTP/1.1 413") && strstr(got, "\"body_too_large\""), "...a JSON 413");
    close(fd);
    http_server_stop(s);
}

/* ---- TLS ----------------------------------------------------------------- */

static void test_tls(void) {
    if (!http_server_tls_available() || system("command -v openssl >/dev/null 2>&1") != 0) {
        ok(1, "# SKIP no TLS in libmicrohttpd or no openssl");
        return;
    }
    char dir[] = "/tmp/test_http_tls_XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "temporary directory");
        return;
    }
    char cmd[1024], cert[128], key[128];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s -out %s -days 2 -subj /CN=localhost "
             "-addext subjectAltName=IP:127.0.0.1,DNS:localhost >/dev/null 2>&1", key, cert);
    ok(system(cmd) == 0, "openssl made a self-signed certificate");
    http_server_opts o = {.port = 0, .tls_cert_file = cert, .tls_key_file = key};
    char err[256], url[128];
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    ok(s != NULL, "TLS server starts");
    if (s) {
        CURL *h = curl_easy_init();
        buf_t b = {0};
        snprintf(url, sizeof url, "https://127.0.0.1:%d/hello", http_server_port(s));
        curl_easy_setopt(h, CURLOPT_CAINFO, cert);
        is_int(do_req(h, url, NULL, 0, &b, 0), 200, "HTTPS with the CA file: 200");
        ok(b.data && strstr(b.data, "\"hello\""), "HTTPS answer body");
        curl_easy_cleanup(h);
        h = curl_easy_init();
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(h, CURLOPT_CAINFO, "/nonexistent-ca.pem");
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
        ok(curl_easy_perform(h) != CURLE_OK, "HTTPS without the CA: the certificate is refused");
        curl_easy_cleanup(h);
        h = curl_easy_init();
        snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", http_server_port(s));
        ok(do_req(h, url, NULL, 0, &b, 0) != 200, "plain HTTP to the TLS port fails");
        curl_easy_cleanup(h);
        free(b.data);
        http_server_stop(s);
    }
    http_server_opts half = {.port = 0, .tls_cert_file = cert};
    ok(http_server_start(&half, route, NULL, err, sizeof err) == NULL && strstr(err, "both"),
       "a certificate without a key is refused");
    http_server_opts wrong = {.port = 0, .tls_cert_file = cert, .tls_key_file = "/nonexistent.pem"};
    ok(http_server_start(&wrong, route, NULL, err, sizeof err) == NULL && strstr(err, "key"),
       "a missing key file is refused");
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_basics();
    test_token_equal();
    test_token();
    test_limit("per address", (http_server_opts){.port = 0, .per_ip_limit = 2});
    test_limit("total", (http_server_opts){.port = 0, .conn_limit = 2});
    test_read_timeout();
    test_idle_timeout();
    test_conn_gone();
    test_tls();
    curl_global_cleanup();
    return tap_done();
}
