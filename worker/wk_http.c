/* worker/wk_http.c: see wk_http.h. */
#include "worker/wk_http.h"
#include "common/b64.h"
#include "common/log.h"
#include "common/utf8.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EP_HEALTH, EP_INFO, EP_VOCAB, EP_TOKENIZE, EP_DETOKENIZE, EP_STEP, EP_SCORE, EP_SESSION,
       EP_METRICS, EP_OTHER, EP_N };
static const char *ep_names[EP_N] = {"health", "info", "vocab", "tokenize", "detokenize",
                                     "step", "score", "session", "metrics", "other"};
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NB (int)(sizeof buckets / sizeof buckets[0])

struct wk_http {
    wk_model *m;
    wk_engine *e;
    char *name;
    char *vocab_json; /* built on first use */
    size_t vocab_len;
    pthread_mutex_t mu; /* metrics and vocab_json */
    unsigned long long requests[EP_N], errors;
    unsigned long long step_bucket[NB + 1], step_count;
    double step_sum;
};

wk_http *wk_http_create(wk_model *m, wk_engine *e, const char *name) {
    wk_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->m = m;
    h->e = e;
    h->name = strdup(name ? name : "worker");
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void wk_http_free(wk_http *h) {
    if (!h) return;
    free(h->name);
    free(h->vocab_json);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void count_error(wk_http *h) {
    pthread_mutex_lock(&h->mu);
    h->errors++;
    pthread_mutex_unlock(&h->mu);
}

#define FAIL(status, code, ...) do { count_error(h); \
    http_error(c, status, status >= 500 ? "server_error" : "invalid_request_error", code, __VA_ARGS__); \
    goto done; } while (0)

static json_t *num_or_null(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *tok_or_null(int t) { return t >= 0 ? json_integer(t) : json_null(); }

/* Typed optional fields: 0 ok (absent leaves *out), -1 wrong type. */
static int get_bool(json_t *o, const char *k, int *out) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return -1;
    *out = json_is_true(v);
    return 0;
}

static int session_id_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

static void do_info(wk_http *h, http_conn *c) {
    wk_model *m = h->m;
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:o, s:o, s:o, s:b, s:i, s:b, s:i, s:i, s:b, s:i, s:i}",
                          "name", h->name, "model_path", m->path, "vocab_size", m->n_vocab,
                          "vocab_type", m->vocab_type, "bos", tok_or_null(m->bos), "eos",
                          tok_or_null(m->eos), "eot", tok_or_null(m->eot), "add_bos", m->add_bos,
                          "doc_start", m->doc_start, "space_prefix", m->space_prefix, "n_ctx",
                          wk_engine_n_ctx(h->e), "n_ctx_train", m->n_ctx_train,
                          "has_chat_template", m->chat_template != NULL, "slots",
                          wk_engine_slots(h->e), "protocol", 1);
    http_reply_json(c, 200, o);
}

static void do_vocab(wk_http *h, http_conn *c) {
    pthread_mutex_lock(&h->mu);
    if (!h->vocab_json) {
        json_t *toks = json_array(), *kinds = json_array();
        for (int id = 0; id < h->m->n_vocab; id++) {
            size_t bl;
            const unsigned char *b = va_token_bytes(h->m->va, id, &bl);
            char *e = b64_encode(b, bl);
            json_array_append_new(toks, json_string(e ? e : ""));
            free(e);
            json_array_append_new(kinds, json_string(wk_kind_name(h->m->kind[id])));
        }
        json_t *o = json_pack("{s:i, s:o, s:o}", "vocab_size", h->m->n_vocab, "tokens_b64", toks,
                              "kinds", kinds);
        h->vocab_json = json_dumps(o, JSON_COMPACT);
        h->vocab_len = h->vocab_json ? strlen(h->vocab_json) : 0;
        json_decref(o);
    }
    pthread_mutex_unlock(&h->mu);
    if (!h->vocab_json) {
        count_error(h);
        http_error(c, 500, "server_error", "internal", "out of memory");
        return;
    }
    http_reply_text(c, 200, "application/json", h->vocab_json, h->vocab_len);
}

static void do_tokenize(wk_http *h, http_conn *c, const http_request *req) {
    json_t *o = http_json_body(c, req);
    int *toks = NULL;
    size_t *sp = NULL;
    if (!o) {
        count_error(h);
        return;
    }
    json_t *t = json_object_get(o, "text");
    if (!json_is_string(t)) FAIL(400, "invalid_type", "'text' must be a string");
    int add_special = 0, parse_special = 0;
    if (get_bool(o, "add_special", &add_special) || get_bool(o, "parse_special", &parse_special))
        FAIL(400, "invalid_type", "'add_special' and 'parse_special' must be booleans");
    const char *text = json_string_value(t);
    size_t len = json_string_length(t);
    int n;
    if (!add_special && !parse_special) n = wk_tokenize_text(h->m, text, len, &toks, &sp);
    else n = wk_tokenize_raw(h->m, text, len, add_special, parse_special, &toks);
    if (n < 0) FAIL(400, "untokenizable", "the text cannot be tokenized with exact byte spans");
    json_t *ta = json_array(), *sa = sp ? json_array() : json_null();
    for (int i = 0; i < n; i++) {
        json_array_append_new(ta, json_integer(toks[i]));
        if (sp) json_array_append_new(sa, json_pack("[I, I]", (json_int_t)sp[2 * i], (json_int_t)sp[2 * i + 1]));
    }
    http_reply_json(c, 200, json_pack("{s:o, s:o}", "tokens", ta, "spans", sa));
done:
    free(toks);
    free(sp);
    json_decref(o);
}

static void do_detokenize(wk_http *h, http_conn *c, const http_request *req) {
    json_t *o = http_json_body(c, req);
    unsigned char *buf = NULL;
    if (!o) {
        count_error(h);
        return;
    }
    json_t *t = json_object_get(o, "tokens");
    if (!json_is_array(t)) FAIL(400, "invalid_type", "'tokens' must be an array of token ids");
    size_t total = 0, n = json_array_size(t);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(t, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= h->m->n_vocab)
            FAIL(400, "invalid_value", "tokens[%zu] is not a token id in [0, %d)", i, h->m->n_vocab);
        size_t bl;
        va_token_bytes(h->m->va, (int)json_integer_value(v), &bl);
        total += bl;
    }
    int strip = 0;
    if (get_bool(o, "strip_space_prefix", &strip)) FAIL(400, "invalid_type", "'strip_space_prefix' must be a boolean");
    buf = malloc(total + 1);
    if (!buf) FAIL(500, "internal", "out of memory");
    size_t p = 0;
    for (size_t i = 0; i < n; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(h->m->va, (int)json_integer_value(json_array_get(t, i)), &bl);
        if (strip && p == 0 && h->m->space_prefix && bl && b[0] == ' ') b++, bl--;
        memcpy(buf + p, b, bl);
        p += bl;
    }
    char *e = b64_encode(buf, p);
    json_t *r = json_pack("{s:s}", "text_b64", e ? e : "");
    free(e);
    if (utf8_valid((const char *)buf, p)) json_object_set_new(r, "text", json_stringn((const char *)buf, p));
    http_reply_json(c, 200, r);
done:
    free(buf);
    json_decref(o);
}

static void observe_step(wk_http *h, double secs) {
    pthread_mutex_lock(&h->mu);
    int i = 0;
    while (i < NB && secs > buckets[i]) i++;
    h->step_bucket[i]++;
    h->step_count++;
    h->step_sum += secs;
    pthread_mutex_unlock(&h->mu);
}

static void do_step(wk_http *h, http_conn *c, const http_request *req) {
    double t0 = now_s();
    json_t *o = http_json_body(c, req);
    wk_msg *msgs = NULL;
    unsigned char *append = NULL;
    unsigned char **cands = NULL;
    size_t *clens = NULL;
    int n_cands = 0;
    wk_step_res res = {0};
    if (!o) {
        count_error(h);
        return;
    }
    json_t *v = json_object_get(o, "session");
    if (!json_is_string(v)) FAIL(400, "invalid_type", "'session' (a string) is required");
    const char *sid = json_string_value(v);
    if (!session_id_ok(sid)) FAIL(400, "invalid_value", "'session' must be 1-64 characters of [A-Za-z0-9_.:-]");
    wk_step_req q = {.session = sid, .k = 20};
    json_t *p = json_object_get(o, "prompt"), *ms = json_object_get(o, "messages");
    if (p && json_is_null(p)) p = NULL;
    if (ms && json_is_null(ms)) ms = NULL;
    if (p && ms) FAIL(400, "invalid_request", "give 'prompt' or 'messages', not both");
    if (p) {
        if (!json_is_string(p)) FAIL(400, "invalid_type", "'prompt' must be a string");
        q.prompt = json_string_value(p);
        q.prompt_len = json_string_length(p);
    }
    if (ms) {
        if (!json_is_array(ms) || json_array_size(ms) == 0)
            FAIL(400, "invalid_type", "'messages' must be a non-empty array of {role, content}");
        size_t n = json_array_size(ms);
        msgs = calloc(n, sizeof *msgs);
        if (!msgs) FAIL(500, "internal", "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *mi = json_array_get(ms, i);
            json_t *role = json_object_get(mi, "role"), *content = json_object_get(mi, "content");
            if (!json_is_object(mi) || !json_is_string(role) || !json_is_string(content))
                FAIL(400, "invalid_type", "messages[%zu] must be {\"role\": string, \"content\": string}", i);
            if (strlen(json_string_value(content)) != json_string_length(content))
                FAIL(400, "invalid_value", "messages[%zu].content contains a NUL character", i);
            msgs[i].role = json_string_value(role);
            msgs[i].content = json_string_value(content);
        }
        q.messages = msgs;
        q.n_messages = (int)n;
    }
    if (get_bool(o, "heal_prompt", &q.heal_prompt)) FAIL(400, "invalid_type", "'heal_prompt' must be a boolean");
    v = json_object_get(o, "append_b64");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) FAIL(400, "invalid_type", "'append_b64' must be a base64 string");
        size_t n;
        append = b64_decode(json_string_value(v), &n);
        if (!append) FAIL(400, "invalid_base64", "'append_b64' is not valid base64");
        q.append = append;
        q.append_len = n;
    }
    v = json_object_get(o, "k");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) FAIL(400, "invalid_type", "'k' must be an integer");
        json_int_t k = json_integer_value(v);
        if (k < 0 || k > WK_MAX_K) FAIL(400, "invalid_value", "'k' must be in [0, %d]", WK_MAX_K);
        q.k = (int)k;
    }
    v = json_object_get(o, "candidates_b64");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) FAIL(400, "invalid_type", "'candidates_b64' must be an array of base64 strings");
        size_t n = json_array_size(v);
        if (n > WK_MAX_CANDIDATES) FAIL(400, "invalid_value", "at most %d candidates", WK_MAX_CANDIDATES);
        cands = calloc(n ? n : 1, sizeof *cands);
        clens = calloc(n ? n : 1, sizeof *clens);
        if (!cands || !clens) FAIL(500, "internal", "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *ci = json_array_get(v, i);
            if (!json_is_string(ci)) FAIL(400, "invalid_type", "candidates_b64[%zu] must be a string", i);
            cands[i] = b64_decode(json_string_value(ci), &clens[i]);
            if (!cands[i]) FAIL(400, "invalid_base64", "candidates_b64[%zu] is not valid base64", i);
            n_cands++;
        }
        q.cands = (const unsigned char *const *)cands;
        q.cand_lens = clens;
        q.n_cands = n_cands;
    }
    wk_err err = {0};
    if (wk_step(h->e, &q, &res, &err) != 0) FAIL((unsigned)err.status, err.code, "%s", err.message);
    json_t *top = json_array();
    for (int i = 0; i < res.n_top; i++) {
        char *e = b64_encode(res.top[i].s, res.top[i].len);
        json_array_append_new(top, json_pack("{s:s, s:o}", "s_b64", e ? e : "", "logq", num_or_null(res.top[i].logq)));
        free(e);
    }
    json_t *ca = json_array();
    for (int i = 0; i < n_cands; i++) json_array_append_new(ca, num_or_null(res.cand_logq[i]));
    char *rb = b64_encode(res.residue, res.residue_len);
    json_t *r = json_pack("{s:s, s:i, s:s, s:i, s:o, s:o, s:o}", "session", sid, "n_past", res.n_past,
                          "residue_b64", rb ? rb : "", "decoded", res.decoded, "top", top,
                          "candidates", ca, "end_logq", num_or_null(res.end_logq));
    free(rb);
    http_reply_json(c, 200, r);
    observe_step(h, now_s() - t0);
done:
    wk_step_res_free(&res);
    for (int i = 0; i < n_cands; i++) free(cands[i]);
    free(cands);
    free(clens);
    free(append);
    free(msgs);
    json_decref(o);
}

static void do_score(wk_http *h, http_conn *c, const http_request *req) {
    json_t *o = http_json_body(c, req);
    wk_score_res res = {0};
    if (!o) {
        count_error(h);
        return;
    }
    json_t *t = json_object_get(o, "text");
    if (!json_is_string(t)) FAIL(400, "invalid_type", "'text' must be a string");
    int doc_start = 1;
    if (get_bool(o, "doc_start", &doc_start)) FAIL(400, "invalid_type", "'doc_start' must be a boolean");
    wk_err err = {0};
    if (wk_score(h->e, json_string_value(t), json_string_length(t), doc_start, &res, &err) != 0)
        FAIL((unsigned)err.status, err.code, "%s", err.message);
    json_t *toks = json_array();
    for (int i = 0; i < res.n; i++) {
        wk_score_tok *s = &res.toks[i];
        json_array_append_new(toks, json_pack("{s:i, s:I, s:I, s:o, s:o, s:o}", "id", s->id, "start",
                                              (json_int_t)s->start, "end", (json_int_t)s->end, "logprob",
                                              num_or_null(s->logprob), "entropy", num_or_null(s->entropy),
                                              "top1", num_or_null(s->top1)));
    }
    http_reply_json(c, 200, json_pack("{s:i, s:o, s:f, s:i, s:i, s:i}", "n_tokens", res.n, "tokens", toks,
                                      "sum_logprob", res.sum_logprob, "n_ctx", res.n_ctx,
                                      "window_overlap", res.overlap, "decoded", res.decoded));
done:
    wk_score_res_free(&res);
    json_decref(o);
}

static void do_metrics(wk_http *h, http_conn *c) {
    wk_stats st;
    wk_engine_stats(h->e, &st);
    size_t cap = 8192, n = 0;
    char *b = malloc(cap);
    if (!b) {
        http_error(c, 500, "server_error", "internal", "out of memory");
        return;
    }
#define OUT(...) do { int k_ = snprintf(b + n, cap - n, __VA_ARGS__); if (k_ > 0) n += (size_t)k_; if (n >= cap) n = cap - 1; } while (0)
    pthread_mutex_lock(&h->mu);
    OUT("# HELP consort_worker_requests_total HTTP requests by endpoint.\n# TYPE consort_worker_requests_total counter\n");
    for (int i = 0; i < EP_N; i++)
        OUT("consort_worker_requests_total{endpoint=\"%s\"} %llu\n", ep_names[i], h->requests[i]);
    OUT("# HELP consort_worker_errors_total Requests answered with an error status.\n# TYPE consort_worker_errors_total counter\n");
    OUT("consort_worker_errors_total %llu\n", h->errors);
    OUT("# HELP consort_worker_tokens_decoded_total Token positions decoded by llama.cpp.\n# TYPE consort_worker_tokens_decoded_total counter\n");
    OUT("consort_worker_tokens_decoded_total %llu\n", (unsigned long long)st.tokens_decoded);
    OUT("# HELP consort_worker_sessions_in_use Sessions holding a slot.\n# TYPE consort_worker_sessions_in_use gauge\n");
    OUT("consort_worker_sessions_in_use %d\n", st.sessions_in_use);
    OUT("# HELP consort_worker_step_seconds Latency of successful /v1/step requests.\n# TYPE consort_worker_step_seconds histogram\n");
    unsigned long long acc = 0;
    for (int i = 0; i < NB; i++) {
        acc += h->step_bucket[i];
        OUT("consort_worker_step_seconds_bucket{le=\"%g\"} %llu\n", buckets[i], acc);
    }
    acc += h->step_bucket[NB];
    OUT("consort_worker_step_seconds_bucket{le=\"+Inf\"} %llu\n", acc);
    OUT("consort_worker_step_seconds_sum %.6f\nconsort_worker_step_seconds_count %llu\n", h->step_sum, h->step_count);
    pthread_mutex_unlock(&h->mu);
#undef OUT
    http_reply_text(c, 200, "text/plain; version=0.0.4", b, n);
    free(b);
}

void wk_http_route(http_conn *c, const http_request *req, void *user) {
    wk_http *h = user;
    const char *p = req->path, *m = req->method;
    int get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
    int ep = !strcmp(p, "/health") ? EP_HEALTH
           : !strcmp(p, "/v1/info") ? EP_INFO
           : !strcmp(p, "/v1/vocab") ? EP_VOCAB
           : !strcmp(p, "/v1/tokenize") ? EP_TOKENIZE
           : !strcmp(p, "/v1/detokenize") ? EP_DETOKENIZE
           : !strcmp(p, "/v1/step") ? EP_STEP
           : !strcmp(p, "/v1/score") ? EP_SCORE
           : !strncmp(p, "/v1/session/", 12) ? EP_SESSION
           : !strcmp(p, "/metrics") ? EP_METRICS : EP_OTHER;
    pthread_mutex_lock(&h->mu);
    h->requests[ep]++;
    pthread_mutex_unlock(&h->mu);
    int want_get = ep == EP_HEALTH || ep == EP_INFO || ep == EP_VOCAB || ep == EP_METRICS;
    int want_post = ep == EP_TOKENIZE || ep == EP_DETOKENIZE || ep == EP_STEP || ep == EP_SCORE;
    if (ep == EP_OTHER) {
        count_error(h);
        http_error(c, 404, "invalid_request_error", "not_found", "no such endpoint: %s %s", m, p);
        return;
    }
    if ((want_get && !get) || (want_post && !post) || (ep == EP_SESSION && !del)) {
        count_error(h);
        http_add_header(c, "Allow", want_get ? "GET" : want_post ? "POST" : "DELETE");
        http_error(c, 405, "invalid_request_error", "method_not_allowed", "%s is not allowed on %s", m, p);
        return;
    }
    switch (ep) {
    case EP_HEALTH: {
        wk_stats st;
        wk_engine_stats(h->e, &st);
        http_reply_json(c, 200, json_pack("{s:s, s:s, s:i, s:i}", "status", "ok", "name", h->name,
                                          "slots_in_use", st.sessions_in_use, "slots", wk_engine_slots(h->e)));
        break;
    }
    case EP_INFO: do_info(h, c); break;
    case EP_VOCAB: do_vocab(h, c); break;
    case EP_TOKENIZE: do_tokenize(h, c, req); break;
    case EP_DETOKENIZE: do_detokenize(h, c, req); break;
    case EP_STEP: do_step(h, c, req); break;
    case EP_SCORE: do_score(h, c, req); break;
    case EP_METRICS: do_metrics(h, c); break;
    case EP_SESSION: {
        const char *id = p + 12;
        if (!session_id_ok(id)) {
            count_error(h);
            http_error(c, 400, "invalid_request_error", "invalid_value", "bad session id");
        } else if (wk_session_delete(h->e, id) != 0) {
            count_error(h);
            http_error(c, 404, "invalid_request_error", "session_not_found", "unknown session '%s'", id);
        } else {
            http_reply_json(c, 200, json_pack("{s:b}", "deleted", 1));
        }
        break;
    }
    default: break;
    }
}
