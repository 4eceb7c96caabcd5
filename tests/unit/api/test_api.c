/* coordinator/api: the HTTP server over a fake generation backend (no models):
 * routes, OpenAI shapes, SSE framing, errors, member faults, client
 * disconnects mid-stream, concurrency and /metrics. Uses libcurl. */
#include "coordinator/api/api.h"
#include "common/clock.h"
#include "common/log.h"
#include "tests/tap.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- the fake backend ---------------------------------------------------- */

static const char *const words[] = {"Once", " upon", " a", " time", " there", " was", " a",
                                    " cat", "."};
#define N_WORDS (sizeof words / sizeof *words)

typedef struct {
    pthread_mutex_t mu;
    int up[2];
    int delay_ms;
    int fail_member_at;  /* step at which member b is dropped; -1 never */
    int fail_status_at;  /* step at which the whole request fails with 503; -1 never */
    int stopped_early;   /* generations stopped by the chunk callback or should_stop */
    int ignore_deadline; /* run on past the request's deadline */
    int active, max_active, calls;
} fake;

static fake F;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fake_generate(void *ctx, const ensemble_request *req, ensemble_on_chunk cb, void *ud,
                         ensemble_result *out) {
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->calls++;
    if (++f->active > f->max_active) f->max_active = f->active;
    int delay = f->delay_ms, fail_at = f->fail_member_at, fail_all = f->fail_status_at;
    pthread_mutex_unlock(&f->mu);
    memset(out, 0, sizeof *out);
    out->members = calloc(2, sizeof *out->members);
    out->n_members = 2;
    snprintf(out->members[0].name, sizeof out->members[0].name, "a");
    snprintf(out->members[1].name, sizeof out->members[1].name, "b");
    out->members[0].weight = out->members[1].weight = 0.5;
    out->prompt_tokens = 3;
    char text[4096] = "";
    size_t len = 0;
    out->finish_reason = "length";
    pthread_mutex_lock(&f->mu);
    int ignore_deadline = f->ignore_deadline;
    pthread_mutex_unlock(&f->mu);
    for (int step = 0; step < req->max_tokens; step++) {
        if (req->deadline > 0 && clock_mono_s() >= req->deadline && !ignore_deadline) {
            out->deadline_exceeded = 1;
            out->finish_reason = "length";
            break;
        }
        if (req->should_stop && req->should_stop(ud)) {
            pthread_mutex_lock(&f->mu);
            f->stopped_early++;
            pthread_mutex_unlock(&f->mu);
            out->finish_reason = "stop";
            break;
        }
        if (delay) sleep_ms(delay);
        if (step == fail_at) {
            out->members[1].failed = 1;
            snprintf(out->members[1].failure, sizeof out->members[1].failure, "worker b died");
            out->members[0].weight = 1;
            out->members[1].weight = 0;
        }
        if (step == fail_all) {
            out->status = 503;
            snprintf(out->error, sizeof out->error, "all members failed");
            break;
        }
        const char *w = words[step % N_WORDS];
        if (req->n_stop && strstr(w, req->stop[0])) { out->finish_reason = "stop"; break; }
        ensemble_chunk c;
        memset(&c, 0, sizeof c);
        c.text = w;
        c.len = strlen(w);
        c.logprob = -0.25;
        c.n_top = req->logprobs < 2 ? req->logprobs : 2;
        c.top[0].text = w; c.top[0].len = strlen(w); c.top[0].logprob = -0.25;
        c.top[1].text = " dog"; c.top[1].len = 4; c.top[1].logprob = -2;
        memcpy(text + len, w, c.len);
        len += c.len;
        out->steps++;
        out->members[out->members[1].failed ? 0 : step % 2].steps_won++;
        if (cb(ud, &c)) {
            pthread_mutex_lock(&f->mu);
            f->stopped_early++;
            pthread_mutex_unlock(&f->mu);
            out->finish_reason = "stop";
            break;
        }
    }
    out->text = strndup(text, len);
    out->len = len;
    out->seconds = 0.01;
    pthread_mutex_lock(&f->mu);
    f->active--;
    pthread_mutex_unlock(&f->mu);
    return out->status ? -1 : 0;
}

static void fake_free(void *ctx, ensemble_result *r) {
    (void)ctx;
    free(r->text);
    free(r->members);
    memset(r, 0, sizeof *r);
}

static int fake_strategy_valid(void *ctx, const char *s, char *err, size_t n) {
    (void)ctx;
    if (strcmp(s, "product") == 0) { /* pretend the engine refuses this one */
        snprintf(err, n, "strategy product is not available here");
        return 0;
    }
    return 1;
}

static size_t fake_n(void *ctx) { (void)ctx; return 2; }
static const char *fake_name(void *ctx, size_t i) { (void)ctx; return i ? "b" : "a"; }
/* member b is a llama-server member (approximate), a a worker */
static void fake_describe(void *ctx, size_t i, const char **kind, const char **model, int *exact) {
    (void)ctx;
    *kind = i ? "llama-server" : "consort-worker";
    *model = i ? "/m/b.gguf" : "/m/a.gguf";
    *exact = !i;
}
static int fake_up(void *ctx, size_t i) {
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    int u = f->up[i];
    pthread_mutex_unlock(&f->mu);
    return u;
}

static void fake_set(int up_a, int up_b, int delay, int fail_member_at, int fail_status_at) {
    pthread_mutex_lock(&F.mu);
    F.up[0] = up_a, F.up[1] = up_b, F.delay_ms = delay;
    F.fail_member_at = fail_member_at, F.fail_status_at = fail_status_at;
    pthread_mutex_unlock(&F.mu);
}

/* ---- HTTP client --------------------------------------------------------- */

static int port;
static const char *auth_header; /* extra request header, or NULL */

typedef struct {
    char *data;
    size_t len;
    size_t abort_after; /* abort the transfer once this many bytes came (0 = never) */
    long timeout_ms;    /* 0 = 20 s */
    char hdr[2048];     /* the response's header lines */
    size_t hlen;
} buf;

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    buf *b = ud;
    size_t k = sz * n;
    if (b->hlen + k < sizeof b->hdr) {
        memcpy(b->hdr + b->hlen, p, k);
        b->hlen += k;
        b->hdr[b->hlen] = 0;
    }
    return k;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    buf *b = ud;
    size_t k = sz * n;
    b->data = realloc(b->data, b->len + k + 1);
    memcpy(b->data + b->len, p, k);
    b->len += k;
    b->data[b->len] = 0;
    if (b->abort_after && b->len >= b->abort_after) return 0;
    return k;
}

static long http(const char *method, const char *path, const char *body, buf *out) {
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, out->timeout_ms ? out->timeout_ms : 20000L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth_header) hd = curl_slist_append(hd, auth_header);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    long status = -1;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else if (out->abort_after || out->timeout_ms) status = 0;
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

static json_t *call_json(const char *method, const char *path, const char *body, long *status) {
    buf b = {0};
    *status = http(method, path, body, &b);
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    return j;
}

/* Splits an SSE body into its data payloads; returns how many, or -1 on bad framing. */
static int sse_events(const char *body, json_t **events, int max, int *done) {
    int n = 0;
    *done = 0;
    const char *p = body;
    while (p && *p) {
        if (strncmp(p, "data: ", 6) != 0) return -1;
        const char *end = strstr(p, "\n\n");
        if (!end) return -1;
        if (*done) return -1; /* nothing after [DONE] */
        if ((size_t)(end - p - 6) == 6 && strncmp(p + 6, "[DONE]", 6) == 0) {
            *done = 1;
        } else {
            if (n == max) return -1;
            events[n] = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
            if (!events[n]) return -1;
            n++;
        }
        p = end + 2;
    }
    return n;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static json_t *choice0(json_t *o) { return json_array_get(json_object_get(o, "choices"), 0); }

static void free_events(json_t **ev, int n) {
    for (int i = 0; i < n; i++) json_decref(ev[i]);
}

/* ---- tests --------------------------------------------------------------- */

static void test_basic_routes(void) {
    long st;
    json_t *j = call_json("GET", "/health", NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "ok") == 0 &&
           json_integer_value(json_object_get(j, "members_up")) == 2, "health 200 with 2 members up");
    json_decref(j);
    j = call_json("GET", "/v1/models", NULL, &st);
    json_t *data = json_object_get(j, "data");
    ok(st == 200 && strcmp(jstr(j, "object"), "list") == 0 && json_array_size(data) == 3 &&
           strcmp(jstr(json_array_get(data, 0), "id"), "ens") == 0 &&
           strcmp(jstr(json_array_get(data, 0), "object"), "model") == 0 &&
           strcmp(jstr(json_array_get(data, 2), "id"), "b") == 0, "models: the ensemble, then members");
    json_t *ma = json_array_get(data, 1), *mb = json_array_get(data, 2);
    ok(!strcmp(jstr(ma, "member_kind"), "consort-worker") && !strcmp(jstr(ma, "member_model"), "/m/a.gguf") &&
           json_is_true(json_object_get(ma, "exact")) && !strcmp(jstr(mb, "member_kind"), "llama-server") &&
           !strcmp(jstr(mb, "member_model"), "/m/b.gguf") && json_is_false(json_object_get(mb, "exact")),
       "models: each member's kind, model and exactness");
    json_t *strats = json_object_get(json_array_get(data, 0), "strategies");
    ok(json_array_size(strats) == 7 && strcmp(json_string_value(json_array_get(strats, 0)), "mixture") == 0 &&
           strcmp(json_string_value(json_array_get(strats, 2)), "solo:NAME") == 0 &&
           strcmp(json_string_value(json_array_get(strats, 6)), "pool") == 0,
       "models: the ensemble lists the registry's generation strategies");
    json_decref(j);
    j = call_json("GET", "/v1/models/b", NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "id"), "b") == 0 && json_is_false(json_object_get(j, "exact")),
       "GET /v1/models/b: an approximate member");
    json_decref(j);
    j = call_json("GET", "/v1/models/a", NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "id"), "a") == 0, "GET /v1/models/a");
    json_decref(j);
    j = call_json("GET", "/v1/models/zz", NULL, &st);
    ok(st == 404 && json_object_get(j, "error"), "unknown model 404");
    json_decref(j);
    j = call_json("GET", "/nope", NULL, &st);
    ok(st == 404 && strcmp(jstr(json_object_get(j, "error"), "type"), "invalid_request_error") == 0,
       "unknown route 404 error object");
    json_decref(j);
    j = call_json("GET", "/v1/completions", NULL, &st);
    ok(st == 405 && json_object_get(j, "error"), "GET on completions 405");
    json_decref(j);
    buf b = {0};
    st = http("OPTIONS", "/v1/chat/completions", NULL, &b);
    ok(st == 204, "CORS preflight 204");
    free(b.data);
}

/* prefix then 24 lowercase hex digits: the response id format. */
static int id_shaped(const char *id, const char *prefix) {
    size_t n = strlen(prefix);
    if (!id || strncmp(id, prefix, n) || strlen(id) != n + 24) return 0;
    for (const char *p = id + n; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static void test_completion(void) {
    long st;
    json_t *j = call_json("POST", "/v1/completions",
                          "{\"model\":\"ens\",\"prompt\":\"Hi\",\"max_tokens\":4,\"temperature\":0,"
                          "\"logprobs\":1}", &st);
    json_t *c = choice0(j);
    ok(st == 200, "completion 200");
    ok(strncmp(jstr(j, "id"), "cmpl-", 5) == 0 && strcmp(jstr(j, "object"), "text_completion") == 0 &&
           json_is_integer(json_object_get(j, "created")) && strcmp(jstr(j, "model"), "ens") == 0,
       "completion envelope");
    is_str(jstr(c, "text"), "Once upon a time", "completion text");
    json_t *j2 = call_json("POST", "/v1/completions",
                           "{\"model\":\"ens\",\"prompt\":\"Hi\",\"max_tokens\":1}", &st);
    ok(id_shaped(jstr(j, "id"), "cmpl-") && id_shaped(jstr(j2, "id"), "cmpl-") &&
           strcmp(jstr(j, "id"), jstr(j2, "id")) != 0,
       "completion ids: cmpl- and 24 hex digits, a fresh one each request");
    json_decref(j2);
    is_str(jstr(c, "finish_reason"), "length", "finish_reason length");
    json_t *lp = json_object_get(c, "logprobs");
    ok(json_array_size(json_object_get(lp, "tokens")) == 4 &&
           json_object_size(json_array_get(json_object_get(lp, "top_logprobs"), 0)) == 1 &&
           json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 1)) == 6,
       "completion logprobs");
    json_t *u = json_object_get(j, "usage");
    ok(json_integer_value(json_object_get(u, "completion_tokens")) == 4 &&
           json_integer_value(json_object_get(u, "total_tokens")) == 7, "usage");
    ok(json_array_size(json_object_get(json_object_get(j, "ensemble"), "members")) == 2,
       "ensemble stats present");
    json_decref(j);

    j = call_json("POST", "/v1/completions", "{\"prompt\":\"Hi\",\"max_tokens\":9,\"stop\":\"cat\"}", &st);
    ok(st == 200 && strcmp(jstr(choice0(j), "text"), "Once upon a time there was a") == 0 &&
           strcmp(jstr(choice0(j), "finish_reason"), "stop") == 0, "stop sequence → finish stop");
    json_decref(j);
}

static void test_stream(void) {
    buf b = {0};
    long st = http("POST", "/v1/completions",
                   "{\"prompt\":\"Hi\",\"max_tokens\":5,\"stream\":true,\"temperature\":0}", &b);
    json_t *ev[32];
    int done, n = sse_events(b.data ? b.data : "", ev, 32, &done);
    ok(st == 200 && n == 6 && done, "completion stream: 5 chunks + final + [DONE]");
    char text[256] = "";
    int shapes = 1;
    for (int i = 0; i < n; i++) {
        json_t *c = choice0(ev[i]);
        strcat(text, jstr(c, "text") ? jstr(c, "text") : "?");
        shapes &= strcmp(jstr(ev[i], "object"), "text_completion") == 0 &&
                  strncmp(jstr(ev[i], "id"), "cmpl-", 5) == 0 &&
                  strcmp(jstr(ev[i], "id"), jstr(ev[0], "id")) == 0 &&
                  (i == n - 1 ? strcmp(jstr(c, "finish_reason"), "length") == 0
                              : json_is_null(json_object_get(c, "finish_reason")));
    }
    ok(shapes, "completion chunks: same id, finish_reason only on the last");
    is_str(text, "Once upon a time there", "streamed text");
    ok(n > 0 && json_object_get(ev[n - 1], "ensemble"), "final chunk carries ensemble stats");
    free_events(ev, n > 0 ? n : 0);
    free(b.data);

    memset(&b, 0, sizeof b);
    st = http("POST", "/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3,"
              "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true,"
              "\"top_logprobs\":2}", &b);
    n = sse_events(b.data ? b.data : "", ev, 32, &done);
    ok(st == 200 && n == 6 && done, "chat stream: role + 3 chunks + final + usage + [DONE]");
    if (n == 6) {
        json_t *d0 = json_object_get(choice0(ev[0]), "delta");
        ok(strcmp(jstr(ev[0], "object"), "chat.completion.chunk") == 0 &&
               strcmp(jstr(d0, "role"), "assistant") == 0 && strcmp(jstr(d0, "content"), "") == 0,
           "first chat chunk has the role");
        text[0] = 0;
        int usage_null = 1;
        for (int i = 0; i < 5; i++) {
            const char *t = jstr(json_object_get(choice0(ev[i]), "delta"), "content");
            if (t) strcat(text, t);
            usage_null &= json_is_null(json_object_get(ev[i], "usage"));
        }
        is_str(text, "Once upon a", "chat streamed text");
        ok(usage_null, "usage: null on every chunk before the last");
        json_t *lp = json_object_get(choice0(ev[1]), "logprobs");
        json_t *e0 = json_array_get(json_object_get(lp, "content"), 0);
        ok(strcmp(jstr(e0, "token"), "Once") == 0 &&
               json_array_size(json_object_get(e0, "top_logprobs")) == 2, "chunk logprobs");
        json_t *fin = choice0(ev[4]);
        ok(strcmp(jstr(fin, "finish_reason"), "length") == 0 &&
               json_object_size(json_object_get(fin, "delta")) == 0, "final chunk: empty delta");
        ok(json_array_size(json_object_get(ev[5], "choices")) == 0 &&
               json_integer_value(json_object_get(json_object_get(ev[5], "usage"), "completion_tokens")) == 3,
           "usage chunk: empty choices, usage");
    }
    free_events(ev, n > 0 ? n : 0);
    free(b.data);
}

static void test_errors(void) {
    const char *bad[][2] = {
        {"/v1/completions", "{\"prompt\": "},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":2}"},
        {"/v1/completions", "{\"prompt\":\"x\",\"echo\":true}"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":-3}"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":\"3\"}"},
        {"/v1/chat/completions", "{\"messages\":\"hi\"}"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                 "\"ensemble\":{\"strategy\":\"vote\"}}"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                 "\"ensemble\":{\"strategy\":\"product\"}}"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                 "\"stream\":true,\"n\":2}"},
    };
    int before = F.calls;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        long st;
        json_t *j = call_json("POST", bad[i][0], bad[i][1], &st);
        json_t *e = json_object_get(j, "error");
        char what[200];
        snprintf(what, sizeof what, "400 + error object: %.60s", bad[i][1]);
        ok(st == 400 && json_is_string(json_object_get(e, "message")) &&
               strcmp(jstr(e, "type"), "invalid_request_error") == 0 &&
               json_object_get(e, "param") && json_object_get(e, "code"), what);
        json_decref(j);
    }
    is_int(F.calls, before, "no generation ran for a bad request");
}

static void test_faults(void) {
    long st;
    fake_set(1, 1, 0, 2, -1);
    json_t *j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4}", &st);
    json_t *mb = json_array_get(json_object_get(json_object_get(j, "ensemble"), "members"), 1);
    ok(st == 200 && strcmp(jstr(choice0(j), "text"), "Once upon a time") == 0 &&
           json_is_true(json_object_get(mb, "failed")) &&
           strcmp(jstr(mb, "failure"), "worker b died") == 0, "member lost: text complete, loss reported");
    json_decref(j);

    buf b = {0};
    st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4,\"stream\":true}", &b);
    json_t *ev[16];
    int done, n = sse_events(b.data ? b.data : "", ev, 16, &done);
    ok(st == 200 && done && n == 5 &&
           json_integer_value(json_object_get(json_object_get(ev[4], "ensemble"), "failures")) == 1,
       "member lost mid-stream: final chunk reports it");
    free_events(ev, n > 0 ? n : 0);
    free(b.data);

    fake_set(1, 1, 0, -1, 2);
    memset(&b, 0, sizeof b);
    st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4,\"stream\":true}", &b);
    n = sse_events(b.data ? b.data : "", ev, 16, &done);
    ok(st == 200 && done && n == 3 && json_object_get(ev[2], "error") &&
           strstr(jstr(json_object_get(ev[2], "error"), "message"), "all members failed"),
       "failure mid-stream: an error event, then [DONE]");
    free_events(ev, n > 0 ? n : 0);
    free(b.data);

    j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":4}", &st);
    ok(st == 503 && json_object_get(j, "error"), "failure before the answer: 503");
    json_decref(j);

    fake_set(1, 1, 0, -1, 0);
    j = call_json("POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}", &st);
    ok(st == 503 && strcmp(jstr(json_object_get(j, "error"), "code"), "no_member_available") == 0,
       "stream failing before its first text: a plain 503, not a 200 stream");
    json_decref(j);

    fake_set(0, 0, 0, -1, -1);
    j = call_json("GET", "/health", NULL, &st);
    ok(st == 503 && json_integer_value(json_object_get(j, "members_up")) == 0, "health 503 when all down");
    json_decref(j);
    j = call_json("POST", "/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}", &st);
    ok(st == 503 && strcmp(jstr(json_object_get(j, "error"), "code"), "no_member_available") == 0,
       "all down: streaming request gets 503 before any event");
    json_decref(j);
    fake_set(1, 0, 0, -1, -1);
    j = call_json("POST", "/v1/completions", "{\"model\":\"b\",\"prompt\":\"x\"}", &st);
    ok(st == 503, "solo request for a down member: 503");
    json_decref(j);
    j = call_json("POST", "/v1/completions", "{\"model\":\"a\",\"prompt\":\"x\",\"max_tokens\":1}", &st);
    ok(st == 200 && strcmp(jstr(j, "model"), "a") == 0, "solo request for an up member: 200");
    json_decref(j);
    fake_set(1, 1, 0, -1, -1);
}

static void test_disconnect(void) {
    fake_set(1, 1, 20, -1, -1);
    int before = F.stopped_early;
    buf b = {0};
    b.abort_after = 1;
    long st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":500,\"stream\":true}", &b);
    ok(st == 0, "client aborted the stream after the first bytes");
    free(b.data);
    int stopped = 0;
    for (int i = 0; i < 200 && !stopped; i++) {
        sleep_ms(10);
        pthread_mutex_lock(&F.mu);
        stopped = F.stopped_early > before && F.active == 0;
        pthread_mutex_unlock(&F.mu);
    }
    ok(stopped, "the generation stopped early once the client was gone");
    long hs;
    json_t *j = call_json("GET", "/health", NULL, &hs);
    ok(hs == 200, "server still answers after the disconnect");
    json_decref(j);
    fake_set(1, 1, 0, -1, -1);
}

static void *worker_thread(void *arg) {
    int *okp = arg;
    long st;
    json_t *j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":5}", &st);
    *okp = st == 200 && strcmp(jstr(choice0(j), "text"), "Once upon a time there") == 0;
    json_decref(j);
    return NULL;
}

static void test_concurrency(void) {
    fake_set(1, 1, 15, -1, -1);
    pthread_mutex_lock(&F.mu);
    F.max_active = 0;
    pthread_mutex_unlock(&F.mu);
    pthread_t th[4];
    int oks[4] = {0};
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, worker_thread, &oks[i]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    ok(oks[0] && oks[1] && oks[2] && oks[3], "4 concurrent requests all answered correctly");
    ok(F.max_active >= 2, "requests overlapped in the backend");
    fake_set(1, 1, 0, -1, -1);
}

static void test_metrics(void) {
    buf b = {0};
    long st = http("GET", "/metrics", NULL, &b);
    const char *m = b.data ? b.data : "";
    ok(st == 200, "metrics 200");
    ok(strstr(m, "consort_requests_total{endpoint=\"/v1/completions\",status=\"200\"}") != NULL,
       "requests by endpoint and status");
    ok(strstr(m, "consort_requests_total{endpoint=\"/v1/completions\",status=\"400\"}") != NULL,
       "400s counted");
    ok(strstr(m, "consort_member_up{member=\"a\"} 1") && strstr(m, "consort_member_up{member=\"b\"} 1"),
       "members up");
    ok(strstr(m, "consort_requests_in_flight 0") != NULL, "nothing in flight");
    ok(strstr(m, "consort_step_seconds_bucket{le=\"+Inf\"}") && strstr(m, "consort_steps_total "),
       "step histogram and step counter");
    ok(strstr(m, "consort_member_failures_total{member=\"b\"} 2") != NULL, "member failures counted");
    ok(strstr(m, "consort_stream_disconnects_total 1") != NULL, "disconnect counted");
    /* the families in their order, with their help texts (docs/API.md) */
    static const char *const families[] = {
        "# HELP consort_requests_total HTTP requests answered, by endpoint and status.\n"
        "# TYPE consort_requests_total counter\n",
        "# HELP consort_requests_in_flight Generation requests running now.\n"
        "# TYPE consort_requests_in_flight gauge\nconsort_requests_in_flight 0\n",
        "# HELP consort_requests_queued Generation requests waiting for a turn (--parallel).\n"
        "# TYPE consort_requests_queued gauge\nconsort_requests_queued 0\n",
        "# HELP consort_parallel_limit Generations allowed at once (0: no limit).\n"
        "# TYPE consort_parallel_limit gauge\nconsort_parallel_limit ",
        "# HELP consort_steps_total Generation steps (committed candidates).\n# TYPE consort_steps_total counter\n",
        "# HELP consort_prompt_tokens_total Prompt tokens (max over members) of finished requests.\n"
        "# TYPE consort_prompt_tokens_total counter\n",
        "# HELP consort_completion_tokens_total Completion tokens (steps) of finished requests.\n"
        "# TYPE consort_completion_tokens_total counter\n",
        "# HELP consort_stream_disconnects_total Streams whose client went away early.\n"
        "# TYPE consort_stream_disconnects_total counter\nconsort_stream_disconnects_total 1\n",
        "# HELP consort_step_seconds Time between the engine's text chunks (one chunk is normally one step).\n"
        "# TYPE consort_step_seconds histogram\nconsort_step_seconds_bucket{le=\"0.005\"} ",
        "# HELP consort_member_up Whether a member is usable now (1) or down (0).\n"
        "# TYPE consort_member_up gauge\nconsort_member_up{member=\"a\"} 1\nconsort_member_up{member=\"b\"} 1\n",
        "# HELP consort_member_failures_total Requests during which a member was dropped.\n"
        "# TYPE consort_member_failures_total counter\nconsort_member_failures_total{member=\"a\"} ",
    };
    const char *at = m;
    int in_order = 1;
    for (size_t i = 0; i < sizeof families / sizeof *families && in_order; i++) {
        const char *f = strstr(at, families[i]);
        if (!f) diag("missing or out of order: %.60s", families[i]);
        in_order = f != NULL;
        if (f) at = f + strlen(families[i]);
    }
    ok(in_order, "every family's HELP and TYPE lines, in order");
    ok(strstr(m, "consort_step_seconds_bucket{le=\"10\"} ") && strstr(m, "\nconsort_step_seconds_sum ") &&
           strstr(m, "\nconsort_step_seconds_count "),
       "histogram buckets up to 10 s, sum and count");
    free(b.data);
}

static void test_parallel_limit(const api_backend *be) {
    api_config cfg = {0};
    cfg.max_parallel = 2;
    char err[256];
    api_server *s = api_start(&cfg, be, err, sizeof err);
    ok(s != NULL, "server with --parallel 2 starts");
    if (!s) return;
    int saved = port;
    port = api_port(s);
    fake_set(1, 1, 15, -1, -1);
    pthread_mutex_lock(&F.mu);
    F.max_active = 0;
    pthread_mutex_unlock(&F.mu);
    pthread_t th[5];
    int oks[5] = {0};
    for (int i = 0; i < 5; i++) pthread_create(&th[i], NULL, worker_thread, &oks[i]);
    for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
    ok(oks[0] && oks[1] && oks[2] && oks[3] && oks[4], "5 concurrent requests, all answered");
    is_int(F.max_active, 2, "never more than 2 generations at once");
    buf b = {0};
    http("GET", "/metrics", NULL, &b);
    ok(b.data && strstr(b.data, "consort_parallel_limit 2") && strstr(b.data, "consort_requests_queued 0"),
       "metrics: limit and empty queue");
    free(b.data);
    fake_set(1, 1, 0, -1, -1);
    api_stop(s);
    port = saved;
}

static void test_api_key(const api_backend *be) {
    api_config cfg = {0};
    cfg.api_key = "sekrit";
    char err[256];
    api_server *s = api_start(&cfg, be, err, sizeof err);
    ok(s != NULL, "server with an API key starts");
    if (!s) return;
    int saved = port;
    port = api_port(s);
    long st;
    json_t *j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}", &st);
    ok(st == 401 && strcmp(jstr(json_object_get(j, "error"), "code"), "invalid_api_key") == 0,
       "no key: 401 invalid_api_key");
    json_decref(j);
    auth_header = "Authorization: Bearer sekrit-not";
    j = call_json("GET", "/v1/models", NULL, &st);
    ok(st == 401, "wrong key: 401");
    json_decref(j);
    auth_header = "Authorization: Bearer sekri";
    j = call_json("GET", "/v1/models", NULL, &st);
    ok(st == 401, "a prefix of the key: 401");
    json_decref(j);
    auth_header = "Authorization: Bearer sekrit";
    j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}", &st);
    ok(st == 200, "right key: 200");
    json_decref(j);
    auth_header = NULL;
    j = call_json("GET", "/health", NULL, &st);
    ok(st == 200, "/health needs no key");
    json_decref(j);
    buf b = {0};
    ok(http("GET", "/metrics", NULL, &b) == 401, "/metrics needs the key when one is set");
    free(b.data);
    auth_header = "Authorization: Bearer sekrit";
    memset(&b, 0, sizeof b);
    ok(http("GET", "/metrics", NULL, &b) == 200 && b.data && strstr(b.data, "consort_requests_total"),
       "/metrics with the key: 200");
    free(b.data);
    auth_header = NULL;
    api_stop(s);
    cfg.metrics_public = 1;
    s = api_start(&cfg, be, err, sizeof err);
    port = api_port(s);
    memset(&b, 0, sizeof b);
    ok(http("GET", "/metrics", NULL, &b) == 200, "--metrics-public: /metrics without the key");
    free(b.data);
    j = call_json("GET", "/v1/models", NULL, &st);
    ok(st == 401, "--metrics-public: /v1 still needs the key");
    json_decref(j);
    api_stop(s);
    port = saved;
}

/* ---- limits, cancellation, health, shutdown ----------------------------- */

typedef struct {
    const char *body;
    long status;
    buf b;
} req_thread;

static void *request_thread(void *arg) {
    req_thread *t = arg;
    t->status = http("POST", "/v1/completions", t->body, &t->b);
    return NULL;
}

static api_server *start_with(api_config *cfg, const api_backend *be, int *saved) {
    char err[256];
    api_server *s = api_start(cfg, be, err, sizeof err);
    if (!s) diag("%s", err);
    *saved = port;
    if (s) port = api_port(s);
    return s;
}

static void test_queue_limit(const api_backend *be) {
    api_config cfg = {0};
    cfg.max_parallel = 1;
    cfg.queue_limit = 1;
    int saved;
    api_server *s = start_with(&cfg, be, &saved);
    ok(s != NULL, "server with --parallel 1 --queue 1 starts");
    if (!s) return;
    fake_set(1, 1, 20, -1, -1);
    req_thread a = {"{\"prompt\":\"x\",\"max_tokens\":20}", 0, {0}}, q = a;
    pthread_t ta, tq;
    pthread_create(&ta, NULL, request_thread, &a);
    sleep_ms(100);
    pthread_create(&tq, NULL, request_thread, &q);
    sleep_ms(100);
    buf b = {0};
    long st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}", &b);
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    if (st != 429) diag("got %ld", st);
    ok(st == 429, "one running, one waiting: the next gets 429");
    ok(j && !strcmp(jstr(json_object_get(j, "error"), "code"), "queue_full") &&
           !strcmp(jstr(json_object_get(j, "error"), "type"), "rate_limit_error"),
       "429: code queue_full, type rate_limit_error");
    ok(strstr(b.hdr, "Retry-After: 1") != NULL, "429 carries Retry-After");
    json_decref(j);
    free(b.data);
    pthread_join(ta, NULL);
    pthread_join(tq, NULL);
    ok(a.status == 200 && q.status == 200, "the running and the waiting request are answered");
    free(a.b.data);
    free(q.b.data);
    memset(&b, 0, sizeof b);
    http("GET", "/metrics", NULL, &b);
    ok(b.data && strstr(b.data, "consort_queue_full_total 1"), "metrics count the 429");
    free(b.data);
    fake_set(1, 1, 0, -1, -1);
    api_stop(s);
    port = saved;
}

static void test_request_timeout(const api_backend *be) {
    api_config cfg = {0};
    cfg.request_timeout = 0.3;
    cfg.max_parallel = 1;
    int saved;
    api_server *s = start_with(&cfg, be, &saved);
    ok(s != NULL, "server with --request-timeout 0.3 starts");
    if (!s) return;
    fake_set(1, 1, 20, -1, -1);
    double t0 = clock_mono_s();
    long st;
    json_t *j = call_json("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":200}", &st);
    double took = clock_mono_s() - t0;
    ok(st == 200 && !strcmp(jstr(choice0(j), "finish_reason"), "length"),
       "past the deadline: 200 with finish_reason length");
    ok(json_is_true(json_object_get(json_object_get(j, "ensemble"), "deadline_exceeded")),
       "ensemble.deadline_exceeded is true");
    diag("ended after %.2f s (200 steps would take 4 s)", took);
    ok(took < 1.5, "ended near its deadline");
    json_decref(j);
    /* a request whose deadline passes while it waits in line */
    pthread_mutex_lock(&F.mu);
    F.ignore_deadline = 1;
    pthread_mutex_unlock(&F.mu);
    req_thread a = {"{\"prompt\":\"x\",\"max_tokens\":40}", 0, {0}};
    pthread_t ta;
    pthread_create(&ta, NULL, request_thread, &a);
    sleep_ms(50);
    buf b = {0};
    st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}", &b);
    if (st != 503) diag("got %ld", st);
    ok(st == 503 && b.data && strstr(b.data, "\"request_timeout\"") && strstr(b.hdr, "Retry-After:"),
       "deadline passed in line: 503 request_timeout with Retry-After");
    free(b.data);
    pthread_join(ta, NULL);
    free(a.b.data);
    pthread_mutex_lock(&F.mu);
    F.ignore_deadline = 0;
    pthread_mutex_unlock(&F.mu);
    fake_set(1, 1, 0, -1, -1);
    api_stop(s);
    port = saved;
}

static void test_plain_disconnect(void) {
    fake_set(1, 1, 20, -1, -1);
    pthread_mutex_lock(&F.mu);
    int before = F.stopped_early;
    pthread_mutex_unlock(&F.mu);
    buf b = {0};
    b.timeout_ms = 200; /* the client gives up; 500 steps would take 10 s */
    long st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":500}", &b);
    ok(st == 0, "the client gave up on a plain request");
    free(b.data);
    int stopped = 0;
    for (int i = 0; i < 100 && !stopped; i++) {
        sleep_ms(10);
        pthread_mutex_lock(&F.mu);
        stopped = F.stopped_early > before && F.active == 0;
        pthread_mutex_unlock(&F.mu);
    }
    ok(stopped, "its generation stopped at the next step (within 1 s)");
    memset(&b, 0, sizeof b);
    http("GET", "/metrics", NULL, &b);
    ok(b.data && strstr(b.data, "consort_abandoned_requests_total 1"), "metrics count the abandoned request");
    free(b.data);
    fake_set(1, 1, 0, -1, -1);
}

static void test_health_degraded(void) {
    fake_set(1, 0, 0, -1, -1);
    buf b = {0};
    long st = http("GET", "/health", NULL, &b);
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    json_t *down = json_object_get(j, "members_down");
    ok(st == 503 && !strcmp(jstr(j, "status"), "degraded"), "one member down: /health 503 degraded");
    ok(json_array_size(down) == 1 && !strcmp(json_string_value(json_array_get(down, 0)), "b"),
       "members_down names it");
    json_decref(j);
    free(b.data);
    fake_set(1, 1, 0, -1, -1);
    memset(&b, 0, sizeof b);
    st = http("GET", "/health", NULL, &b);
    j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    ok(st == 200 && !strcmp(jstr(j, "status"), "ok") && json_array_size(json_object_get(j, "members_down")) == 0,
       "all up again: 200 ok, none down");
    json_decref(j);
    free(b.data);
}

/* Polls /metrics (up to 5 s: slow under valgrind) until it holds `line`.
 * Timing by state, not by sleeps, so the test holds on a slow machine. */
static int wait_metric(const char *line) {
    for (int i = 0; i < 500; i++) {
        buf b = {0};
        http("GET", "/metrics", NULL, &b);
        int found = b.data && strstr(b.data, line) != NULL;
        free(b.data);
        if (found) return 1;
        sleep_ms(10);
    }
    return 0;
}

static void test_drain(const api_backend *be) {
    api_config cfg = {0};
    cfg.max_parallel = 2;
    int saved;
    api_server *s = start_with(&cfg, be, &saved);
    ok(s != NULL, "server for the drain starts");
    if (!s) return;
    fake_set(1, 1, 20, -1, -1);
    req_thread st = {"{\"prompt\":\"x\",\"max_tokens\":100,\"stream\":true}", 0, {0}};
    req_thread plain = {"{\"prompt\":\"x\",\"max_tokens\":10}", 0, {0}};
    req_thread queued = {"{\"prompt\":\"x\",\"max_tokens\":5}", 0, {0}};
    pthread_t t1, t2, t3;
    pthread_create(&t1, NULL, request_thread, &st);
    pthread_create(&t2, NULL, request_thread, &plain);
    ok(wait_metric("consort_requests_in_flight 2"), "two generations running");
    pthread_create(&t3, NULL, request_thread, &queued);
    ok(wait_metric("consort_requests_queued 1"), "a third one queued");
    double t0 = clock_mono_s();
    api_drain(s, 0.6);
    double took = clock_mono_s() - t0;
    buf late = {0};
    long late_st = http("POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}", &late);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    diag("drain took %.2f s", took);
    ok(took >= 0.5 && took < 2.0, "drain waited for its timeout, then cut the long stream");
    ok(queued.status == 503 && queued.b.data && strstr(queued.b.data, "\"shutting_down\"") &&
           strstr(queued.b.hdr, "Retry-After: 5"),
       "the queued request: 503 shutting_down with Retry-After");
    json_t *pj = plain.b.data ? json_loads(plain.b.data, 0, NULL) : NULL;
    ok(plain.status == 200 && !strcmp(jstr(choice0(pj), "text"), "Once upon a time there was a cat.Once"),
       "the running plain request finished within the drain, whole");
    json_decref(pj);
    json_t *ev[128];
    int done = 0, n = st.b.data ? sse_events(st.b.data, ev, 128, &done) : -1;
    diag("the cut stream had %d events", n);
    ok(st.status == 200 && n >= 2 && done, "the cut stream ends with [DONE]");
    ok(n >= 2 && jstr(choice0(ev[n - 1]), "finish_reason") != NULL, "and a final chunk with a finish_reason");
    ok(n < 100, "it was cut before its 100 steps");
    if (n > 0) free_events(ev, n);
    ok(late_st == 503 && late.data && strstr(late.data, "\"shutting_down\""), "a request after the drain began: 503");
    free(late.data);
    free(st.b.data);
    free(plain.b.data);
    free(queued.b.data);
    fake_set(1, 1, 0, -1, -1);
    api_stop(s);
    port = saved;
}

int main(void) {
    if (!getenv("CONSORT_LOG")) log_set_level(LOG_ERROR);
    pthread_mutex_init(&F.mu, NULL);
    fake_set(1, 1, 0, -1, -1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    api_backend be = {&F, fake_generate, fake_free, fake_strategy_valid, fake_n, fake_name, fake_up, NULL, fake_describe};
    api_config cfg = {0};
    cfg.model_id = "ens";
    char err[256];
    api_server *s = api_start(&cfg, &be, err, sizeof err);
    ok(s != NULL, "server starts on an ephemeral port");
    if (!s) { diag("%s", err); return tap_done(); }
    port = api_port(s);
    ok(port > 0, "port known");
    test_basic_routes();
    test_completion();
    test_stream();
    test_errors();
    test_faults();
    test_disconnect();
    test_concurrency();
    test_metrics();
    test_plain_disconnect();
    test_health_degraded();
    api_stop(s);
    test_api_key(&be);
    test_parallel_limit(&be);
    test_queue_limit(&be);
    test_request_timeout(&be);
    test_drain(&be);
    curl_global_cleanup();
    pthread_mutex_destroy(&F.mu);
    return tap_done();
}
