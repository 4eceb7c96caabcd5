/* common/http_server: start on port 0, talk to it with libcurl: JSON replies,
 * query strings, keep-alive, 404, malformed JSON, 413 (with and without
 * Content-Length), a handler that forgets to reply, and a streamed body. */
#include "common/http_server.h"
#include "tests/tap.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>

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

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char err[256];
    http_server_opts o = {.host = "127.0.0.1", .port = 0, .max_body = 1000};
    http_server *s = http_server_start(&o, route, NULL, err, sizeof err);
    ok(s != NULL, "server starts on port 0");
    if (!s) {
        diag("%s", err);
        return tap_done();
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
    curl_global_cleanup();
    return tap_done();
}
