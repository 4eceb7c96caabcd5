/* worker/wk_http.c: the worker's HTTP face (see wk_http.h).
 *
 * Why it is shaped so. Each endpoint is one function with the same three
 * beats: decode the request with protocol/proto (which validates it and
 * fills a proto_error on bad input), call the engine or the model, encode
 * the answer with protocol/proto. No field name of the member protocol is
 * spelled here, so the worker cannot drift from the coordinator: both read
 * and write through the same codec. Engine errors (wk_err) become
 * proto_error answers in one place (reply_error).
 *
 * State. The route table is static; a wk_http owns the worker's name, the
 * /v1/vocab body (built once, on first use: it is the largest answer and
 * never changes) and the Prometheus counters, all under `mu`. The model and
 * the engine are borrowed; the engine has its own lock.
 *
 * Access. The bearer token itself is checked by common/http_server before a
 * route runs; here a session belongs to the token fingerprint that opened
 * it (http_conn_token_id), and a request's deadline header and its
 * connection become the engine's wk_cancel.
 *
 * What may change: new endpoints (a case in wk_http_route plus a codec
 * pair in protocol/), new metrics (a counter here, a line in write_metrics).
 */
#include "worker/wk_http.h"
#include "worker/wk_bytes.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/sbuf.h"
#include "protocol/proto.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
enum { EP_HEALTH, EP_INFO, EP_VOCAB, EP_TOKENIZE, EP_DETOKENIZE, EP_STEP, EP_SCORE, EP_NEXT_BYTES,
       EP_SESSION, EP_METRICS, EP_OTHER, EP_N };
static const char *ep_names[EP_N] = {"health", "info", "vocab", "tokenize", "detokenize",
                                     "step", "score", "next_bytes", "session", "metrics", "other"};
static const double step_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct wk_http {
    wk_model *m;
    wk_engine *e;
    char *name;
    char *vocab_json; /* built on first use */
    size_t vocab_len;
    pthread_mutex_t mu; /* metrics and vocab_json */
    unsigned long long requests[EP_N], errors;
    prom_hist step_hist; /* latency of successful /v1/step requests */
};

wk_http *wk_http_create(wk_model *m, wk_engine *e, const char *name) {
    wk_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->m = m;
    h->e = e;
    h->name = strdup(name ? name : "worker");
    pthread_mutex_init(&h->mu, NULL);
    prom_hist_init(&h->step_hist, step_bounds, sizeof step_bounds / sizeof *step_bounds);
    return h;
}

void wk_http_free(wk_http *h) {
    if (!h) return;
    free(h->name);
    free(h->vocab_json);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static void count_error(wk_http *h) {
    pthread_mutex_lock(&h->mu);
    h->errors++;
    pthread_mutex_unlock(&h->mu);
}

/* Answers an error and counts it. */
static void reply_error(wk_http *h, http_conn *c, const proto_error *err) {
    count_error(h);
    http_reply_json(c, (unsigned)err->status, proto_error_encode(err));
}

static void reply_engine_error(wk_http *h, http_conn *c, const wk_err *we) {
    proto_error err;
    proto_fail(&err, we->status, we->code, "%s", we->message);
    if (we->param) snprintf(err.param, sizeof err.param, "%s", we->param);
    reply_error(h, c, &err);
}

/* Answers obj (a fresh encoding; NULL means out of memory). */
static void reply(wk_http *h, http_conn *c, json_t *obj) {
    if (!obj) {
        proto_error err;
        proto_fail(&err, 500, PROTO_ERR_INTERNAL, "out of memory");
        reply_error(h, c, &err);
        return;
    }
    http_reply_json(c, 200, obj);
}

static void do_health(wk_http *h, http_conn *c) {
    wk_stats st;
    wk_engine_stats(h->e, &st);
    proto_health hl = {"ok", h->name, st.sessions_in_use, wk_engine_slots(h->e)};
    reply(h, c, proto_health_encode(&hl));
}

static void do_info(wk_http *h, http_conn *c) {
    const wk_model *m = h->m;
    proto_info in = {.name = h->name, .model_path = m->path, .vocab_type = m->vocab_type,
                     .vocab_size = m->n_vocab, .bos = m->bos, .eos = m->eos, .eot = m->eot,
                     .add_bos = m->add_bos, .doc_start = m->doc_start, .space_prefix = m->space_prefix,
                     .n_ctx = wk_engine_n_ctx(h->e), .n_ctx_train = m->n_ctx_train,
                     .has_chat_template = m->chat_template != NULL, .slots = wk_engine_slots(h->e),
                     .protocol = PROTO_VERSION};
    reply(h, c, proto_info_encode(&in));
}

/* The /v1/vocab body: every token's bytes and kind (NULL when out of memory). */
static char *vocab_body(const wk_model *m, size_t *len) {
    proto_str *toks = calloc((size_t)m->n_vocab + 1, sizeof *toks);
    const char **kinds = calloc((size_t)m->n_vocab + 1, sizeof *kinds);
    char *body = NULL;
    if (toks && kinds) {
        for (int id = 0; id < m->n_vocab; id++) {
            toks[id].p = va_token_bytes(m->va, id, &toks[id].n);
            kinds[id] = wk_kind_name(m->kind[id]);
        }
        proto_vocab v = {.vocab_size = m->n_vocab, .tokens = toks, .kinds = kinds};
        body = proto_dumps(proto_vocab_encode(&v), len);
    }
    free(toks);
    free(kinds);
    return body;
}

static void do_vocab(wk_http *h, http_conn *c) {
    pthread_mutex_lock(&h->mu);
    if (!h->vocab_json) h->vocab_json = vocab_body(h->m, &h->vocab_len);
    pthread_mutex_unlock(&h->mu);
    if (!h->vocab_json) {
        reply(h, c, NULL);
        return;
    }
    http_reply_text(c, 200, "application/json", h->vocab_json, h->vocab_len);
}

static void do_tokenize(wk_http *h, http_conn *c, const http_request *req) {
    json_t *o = http_json_body(c, req);
    proto_tokenize_req q;
    proto_error err;
    if (!o) {
        count_error(h);
        return;
    }
    if (proto_tokenize_req_decode(o, &q, &err) != 0) {
        reply_error(h, c, &err);
        json_decref(o);
        return;
    }
    proto_tokenize_res r = {0};
    int n;
    if (!q.add_special && !q.parse_special) n = wk_tokenize_text(h->m, q.text, q.text_len, &r.tokens, &r.spans);
    else n = wk_tokenize_raw(h->m, q.text, q.text_len, q.add_special, q.parse_special, &r.tokens);
    if (n < 0) {
        proto_fail(&err, 400, PROTO_ERR_UNTOKENIZABLE, "the text cannot be tokenized with exact byte spans");
        reply_error(h, c, &err);
    } else {
        r.n = (size_t)n;
        reply(h, c, proto_tokenize_res_encode(&r));
    }
    proto_tokenize_res_release(&r);
    json_decref(o);
}

/* The bytes of tokens q (one leading space of the first token with bytes
 * dropped when asked and the tokenizer adds one); NULL when out of memory. */
static unsigned char *detokenize(const wk_model *m, const proto_detokenize_req *q, size_t *len) {
    size_t total = 0, p = 0;
    for (size_t i = 0; i < q->n; i++) {
        size_t bl;
        va_token_bytes(m->va, q->tokens[i], &bl);
        total += bl;
    }
    unsigned char *buf = malloc(total + 1);
    if (!buf) return NULL;
    for (size_t i = 0; i < q->n; i++) {
        size_t bl;
        const unsigned char *b = va_token_bytes(m->va, q->tokens[i], &bl);
        if (q->strip_space_prefix && p == 0 && m->space_prefix && bl && b[0] == ' ') b++, bl--;
        memcpy(buf + p, b, bl);
        p += bl;
    }
    *len = p;
    return buf;
}

static void do_detokenize(wk_http *h, http_conn *c, const http_request *req) {
    json_t *o = http_json_body(c, req);
    proto_detokenize_req q;
    proto_error err;
    if (!o) {
        count_error(h);
        return;
    }
    if (proto_detokenize_req_decode(o, h->m->n_vocab, &q, &err) != 0) {
        reply_error(h, c, &err);
    } else {
        size_t n = 0;
        unsigned char *buf = detokenize(h->m, &q, &n);
        proto_detokenize_res r = {.text = {buf, n}};
        reply(h, c, buf ? proto_detokenize_res_encode(&r) : NULL);
        free(buf);
    }
    proto_detokenize_req_release(&q);
    json_decref(o);
}

static void observe_step(wk_http *h, double secs) {
    pthread_mutex_lock(&h->mu);
    prom_hist_observe(&h->step_hist, secs);
    pthread_mutex_unlock(&h->mu);
}

/* The engine's view of a decoded step request (borrows everything). */
static wk_step_req step_req_of(const proto_step_req *p, const char *owner, const wk_cancel *cancel) {
    return (wk_step_req){.session = p->session, .prompt = p->prompt, .prompt_len = p->prompt_len,
                         .messages = p->messages, .n_messages = (int)p->n_messages,
                         .heal_prompt = p->heal_prompt, .append = p->append.p, .append_len = p->append.n,
                         .k = p->k, .cands = p->cands, .n_cands = (int)p->n_cands, .owner = owner,
                         .cancel = cancel, .steps = p->steps, .n_steps = (int)p->n_steps, .draft = p->draft,
                         .draft_steps = p->draft_steps, .n_draft_steps = (int)p->n_draft_steps,
                         .next_bytes = p->next_bytes};
}

static int conn_gone(void *c) { return http_conn_gone(c); }

#define WK_MAX_DEADLINE_MS 86400000LL /* a day */

/* When the request gives up: its deadline header (milliseconds from the
 * receipt of its headers) and its connection. 0, or -1 after answering 400
 * for a header that is not a whole number of milliseconds in range. */
static int cancel_of(wk_http *h, http_conn *c, wk_cancel *out) {
    *out = (wk_cancel){.deadline = 0, .gone = conn_gone, .arg = c};
    const char *v = http_header(c, PROTO_HEADER_DEADLINE);
    if (!v) return 0;
    long long ms = 0;
    int ok = *v != 0;
    for (const char *p = v; *p && ok; p++) {
        ok = *p >= '0' && *p <= '9';
        if (ok) ms = ms * 10 + (*p - '0');
        if (ms > WK_MAX_DEADLINE_MS) ok = 0;
    }
    if (!ok || ms < 1) {
        proto_error err;
        proto_fail(&err, 400, PROTO_ERR_INVALID_VALUE,
                   "the %s header must be a whole number of milliseconds in [1, %lld]", PROTO_HEADER_DEADLINE,
                   WK_MAX_DEADLINE_MS);
        reply_error(h, c, &err);
        return -1;
    }
    out->deadline = http_conn_received_s(c) + (double)ms / 1000.0;
    return 0;
}

/* The protocol's view of an engine answer (borrows w; *top is allocated). */
static int step_res_view(const char *session, const wk_step_res *w, int n_cands, proto_step_res *r) {
    proto_top *top = calloc((size_t)w->n_top + 1, sizeof *top);
    if (!top) return -1;
    for (int i = 0; i < w->n_top; i++) top[i] = (proto_top){{w->top[i].s, w->top[i].len}, w->top[i].logq, w->top[i].logp};
    *r = (proto_step_res){.session = session, .n_past = w->n_past, .residue = {w->residue, w->residue_len},
                          .decoded = w->decoded, .top = top, .n_top = (size_t)w->n_top,
                          .cand_logq = w->cand_logq, .n_cands = (size_t)n_cands, .end_logq = w->end_logq,
                          .next_bytes = w->next_bytes, .n_next_bytes = w->next_bytes ? PROTO_NEXT_BYTES : 0};
    return 0;
}

/* The wire form of the engine's answer and its draft (NULL when out of memory). */
static json_t *step_res_json(const char *session, const wk_step_res *w, int n_cands) {
    proto_step_res r = {0}, *d = calloc((size_t)w->n_draft + 1, sizeof *d);
    json_t *j = NULL;
    int nd = 0, ok = d && step_res_view(session, w, n_cands, &r) == 0;
    while (ok && nd < w->n_draft) {
        ok = step_res_view(NULL, &w->draft[nd], 0, &d[nd]) == 0;
        if (ok) nd++;
    }
    if (ok) {
        r.draft = d;
        r.n_draft = (size_t)nd;
        j = proto_step_res_encode(&r);
    }
    for (int i = 0; i < nd; i++) free((void *)d[i].top);
    free((void *)r.top);
    free(d);
    return j;
}

static void do_step(wk_http *h, http_conn *c, const http_request *req) {
    double t0 = clock_mono_s();
    wk_cancel cancel;
    if (cancel_of(h, c, &cancel) != 0) return;
    json_t *o = http_json_body(c, req);
    proto_step_req pq;
    proto_error err;
    if (!o) {
        count_error(h);
        return;
    }
    if (proto_step_req_decode(o, &pq, &err) != 0) {
        reply_error(h, c, &err);
        json_decref(o);
        return;
    }
    wk_step_req q = step_req_of(&pq, http_conn_token_id(c), &cancel);
    wk_step_res res = {0};
    wk_err we = {0};
    if (wk_step(h->e, &q, &res, &we) != 0) {
        reply_engine_error(h, c, &we);
    } else {
        reply(h, c, step_res_json(pq.session, &res, q.n_cands));
        observe_step(h, clock_mono_s() - t0);
    }
    wk_step_res_free(&res);
    proto_step_req_release(&pq);
    json_decref(o);
}

/* The wire form of a score answer (NULL when out of memory). */
static json_t *score_res_json(const wk_score_res *w) {
    proto_score_tok *t = calloc((size_t)w->n + 1, sizeof *t);
    if (!t) return NULL;
    for (int i = 0; i < w->n; i++) {
        const wk_score_tok *s = &w->toks[i];
        t[i] = (proto_score_tok){s->id, s->start, s->end, s->logprob, s->entropy, s->top1};
    }
    proto_score_res r = {.tokens = t, .n_tokens = (size_t)w->n, .sum_logprob = w->sum_logprob,
                         .n_ctx = w->n_ctx, .window_overlap = w->overlap, .decoded = w->decoded};
    json_t *j = proto_score_res_encode(&r);
    free(t);
    return j;
}

static void do_score(wk_http *h, http_conn *c, const http_request *req) {
    wk_cancel cancel;
    if (cancel_of(h, c, &cancel) != 0) return;
    json_t *o = http_json_body(c, req);
    proto_score_req q;
    proto_error err;
    if (!o) {
        count_error(h);
        return;
    }
    if (proto_score_req_decode(o, &q, &err) != 0) {
        reply_error(h, c, &err);
        json_decref(o);
        return;
    }
    wk_score_res res = {0};
    wk_err we = {0};
    if (wk_score_until(h->e, q.text, q.text_len, q.doc_start, &cancel, &res, &we) != 0)
        reply_engine_error(h, c, &we);
    else reply(h, c, score_res_json(&res));
    wk_score_res_free(&res);
    json_decref(o);
}

/* The next-byte walk (wk_bytes.h): one request holds the scoring sequence. */
static void do_next_bytes(wk_http *h, http_conn *c, const http_request *req) {
    wk_cancel cancel;
    if (cancel_of(h, c, &cancel) != 0) return;
    json_t *o = http_json_body(c, req);
    proto_next_bytes_req q;
    proto_error err;
    if (!o) {
        count_error(h);
        return;
    }
    if (proto_next_bytes_req_decode(o, &q, &err) != 0) {
        reply_error(h, c, &err);
        json_decref(o);
        return;
    }
    wk_bytes_res res = {0};
    wk_err we = {0};
    if (wk_next_bytes(h->e, q.text.p, q.text.n, q.beam, &cancel, &res, &we) != 0) {
        reply_engine_error(h, c, &we);
    } else {
        proto_next_bytes_res r = {.n_bytes = res.n_bytes, .dist = res.dist, .beam = q.beam,
                                  .decoded = res.decoded, .decodes = res.decodes, .max_beam = res.max_beam,
                                  .windows = res.windows, .reanchors = res.reanchors, .paths = res.paths};
        reply(h, c, proto_next_bytes_res_encode(&r));
    }
    wk_bytes_res_free(&res);
    proto_next_bytes_req_release(&q);
    json_decref(o);
}

static void do_delete(wk_http *h, http_conn *c, const char *id) {
    proto_error err;
    if (!proto_session_id_ok(id)) {
        proto_fail(&err, 400, PROTO_ERR_INVALID_VALUE, "bad session id");
        reply_error(h, c, &err);
    } else if (wk_session_delete_as(h->e, id, http_conn_token_id(c)) != 0) {
        proto_fail(&err, 404, PROTO_ERR_SESSION_NOT_FOUND, "unknown session '%s'", id);
        reply_error(h, c, &err);
    } else {
        reply(h, c, proto_deleted_encode());
    }
}

/* consort_worker_seconds_total{part=...}: where the engine's time went
 * (wk_stats); with the step histogram's sum it takes a step apart. */
static int write_time_parts(sbuf *b, const wk_stats *st) {
    const struct { const char *part; double s; } parts[] = {
        {"step", st->step_s}, {"decode", st->decode_s}, {"linger", st->linger_s}, {"softmax", st->softmax_s}};
    int bad = prom_family(b, "consort_worker_seconds_total", "counter",
                          "Seconds spent, by part: step (inside the engine's step), decode (llama_decode), "
                          "linger (waiting to batch), softmax.");
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char v[48];
        snprintf(v, sizeof v, "%.6f", parts[i].s);
        prom_label l[] = {{"part", parts[i].part}};
        bad |= prom_sample(b, "consort_worker_seconds_total", l, 1, v);
    }
    return bad;
}

/* The /metrics page into b (under h->mu); 0, or -1 when out of memory. */
static int write_metrics(const wk_http *h, const wk_stats *st, sbuf *b) {
    int bad = prom_family(b, "consort_worker_requests_total", "counter", "HTTP requests by endpoint.");
    for (int i = 0; i < EP_N; i++) {
        prom_label l[] = {{"endpoint", ep_names[i]}};
        bad |= prom_sample_u(b, "consort_worker_requests_total", l, 1, h->requests[i]);
    }
    bad |= prom_counter(b, "consort_worker_errors_total", "Requests answered with an error status.",
                        h->errors);
    bad |= prom_counter(b, "consort_worker_tokens_decoded_total", "Token positions decoded by llama.cpp.",
                        (unsigned long long)st->tokens_decoded);
    bad |= prom_counter(b, "consort_worker_decodes_total", "llama_decode calls.", (unsigned long long)st->decodes);
    bad |= prom_counter(b, "consort_worker_shared_decodes_total",
                        "llama_decode calls carrying the work of more than one caller (batching).",
                        (unsigned long long)st->shared_decodes);
    bad |= prom_counter(b, "consort_worker_graphs_reused_total",
                        "llama_decode calls that reused the previous compute graph (llama.cpp's count).",
                        (unsigned long long)st->graphs_reused);
    bad |= prom_gauge(b, "consort_worker_sessions_in_use", "Sessions holding a slot.", st->sessions_in_use);
    bad |= write_time_parts(b, st);
    return bad | prom_histogram(b, "consort_worker_step_seconds", "Latency of successful /v1/step requests.",
                                &h->step_hist);
}

static void do_metrics(wk_http *h, http_conn *c) {
    wk_stats st;
    wk_engine_stats(h->e, &st);
    sbuf b = {0};
    pthread_mutex_lock(&h->mu);
    int bad = write_metrics(h, &st, &b);
    pthread_mutex_unlock(&h->mu);
    if (bad) http_error(c, 500, "server_error", PROTO_ERR_INTERNAL, "out of memory");
    else http_reply_text(c, 200, "text/plain; version=0.0.4", b.p, b.n);
    sb_free(&b);
}

/* The endpoint a path names (EP_OTHER: none). */
static int endpoint_of(const char *p) {
    static const struct { const char *path; int ep; } table[] = {
        {PROTO_PATH_HEALTH, EP_HEALTH}, {PROTO_PATH_INFO, EP_INFO}, {PROTO_PATH_VOCAB, EP_VOCAB},
        {PROTO_PATH_TOKENIZE, EP_TOKENIZE}, {PROTO_PATH_DETOKENIZE, EP_DETOKENIZE},
        {PROTO_PATH_STEP, EP_STEP}, {PROTO_PATH_SCORE, EP_SCORE}, {PROTO_PATH_NEXT_BYTES, EP_NEXT_BYTES},
        {PROTO_PATH_METRICS, EP_METRICS}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(p, table[i].path)) return table[i].ep;
    return !strncmp(p, PROTO_PATH_SESSION, strlen(PROTO_PATH_SESSION)) ? EP_SESSION : EP_OTHER;
}

/* The one method an endpoint accepts. */
static const char *method_of(int ep) {
    switch (ep) {
    case EP_TOKENIZE: case EP_DETOKENIZE: case EP_STEP: case EP_SCORE: case EP_NEXT_BYTES: return "POST";
    case EP_SESSION: return "DELETE";
    default: return "GET";
    }
}

void wk_http_route(http_conn *c, const http_request *req, void *user) {
    wk_http *h = user;
    const char *p = req->path, *m = req->method;
    int ep = endpoint_of(p);
    proto_error err;
    pthread_mutex_lock(&h->mu);
    h->requests[ep]++;
    pthread_mutex_unlock(&h->mu);
    if (ep == EP_OTHER) {
        proto_fail(&err, 404, PROTO_ERR_NOT_FOUND, "no such endpoint: %s %s", m, p);
        reply_error(h, c, &err);
        return;
    }
    if (strcmp(m, method_of(ep))) {
        http_add_header(c, "Allow", method_of(ep));
        proto_fail(&err, 405, PROTO_ERR_METHOD_NOT_ALLOWED, "%s is not allowed on %s", m, p);
        reply_error(h, c, &err);
        return;
    }
    switch (ep) {
    case EP_HEALTH: do_health(h, c); break;
    case EP_INFO: do_info(h, c); break;
    case EP_VOCAB: do_vocab(h, c); break;
    case EP_TOKENIZE: do_tokenize(h, c, req); break;
    case EP_DETOKENIZE: do_detokenize(h, c, req); break;
    case EP_STEP: do_step(h, c, req); break;
    case EP_SCORE: do_score(h, c, req); break;
    case EP_NEXT_BYTES: do_next_bytes(h, c, req); break;
    case EP_METRICS: do_metrics(h, c); break;
    case EP_SESSION: do_delete(h, c, p + strlen(PROTO_PATH_SESSION)); break;
    default: break;
    }
}
