/* coordinator/engine/member_worker.c: the member operations (member.h) for a
 * consort-worker, the member protocol of docs/PROTOCOL.md over HTTP.
 *
 * Each session owns one keep-alive curl handle (borrowed from the member's
 * pool for the session's life), a request body buffer, an answer buffer and
 * the decoded answer, all reused from call to call: a step costs one
 * encode, one HTTP round trip and one decode. The bodies and answers are
 * the protocol module's structs; this file turns them into HTTP calls.
 *
 * What may change: the wire codec is protocol/proto.c's; this file only
 * moves bytes and decides what a failed call means (status 0 = no answer).
 */
#include "coordinator/engine/member.h"

#include "common/b64.h"
#include "common/sbuf.h"
#include "coordinator/engine/curl_pool.h"
#include "coordinator/engine/members.h"

#include <curl/curl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    CURL *h;
    struct curl_slist *hdr;
    sbuf body, resp;
    int code;                /* CURLcode of the latest call */
    const char *path;        /* of the latest call, for messages */
    json_t *answer;          /* the latest answer (decoded structs borrow from it) */
    proto_step_res step;
    proto_score_res score;
    /* storage behind step/score (the codec's, reused) */
    proto_top *top;
    size_t top_cap;
    double *cand;
    size_t cand_cap;
    sbuf bytes;              /* decoded top strings, back to back */
    proto_score_tok *tok;
    size_t tok_cap;
} wk_session;

/* ---- the wire codec (until protocol/proto.c: same names, same rules) ------- */

static int sb_b64(sbuf *b, const void *s, size_t n) {
    char *e = b64_encode(s, n);
    if (!e) return -1;
    int r = sb_str(b, e);
    free(e);
    return r;
}

static int sb_json_string(sbuf *b, const char *s, size_t n) {
    json_t *j = json_stringn(s ? s : "", n);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    int r = d ? sb_str(b, d) : -1;
    free(d);
    return r;
}

static int encode_step(const proto_step_req *q, sbuf *b) {
    b->n = 0;
    int r = sb_str(b, "{\"session\":") | sb_json_string(b, q->session, strlen(q->session));
    if (q->n_messages) {
        r |= sb_str(b, ",\"messages\":[");
        for (size_t i = 0; i < q->n_messages; i++) {
            r |= sb_str(b, i ? ",{\"role\":" : "{\"role\":");
            r |= sb_json_string(b, q->messages[i].role, strlen(q->messages[i].role));
            r |= sb_str(b, ",\"content\":");
            r |= sb_json_string(b, q->messages[i].content, strlen(q->messages[i].content));
            r |= sb_str(b, "}");
        }
        r |= sb_str(b, "]");
    } else if (q->prompt) {
        r |= sb_str(b, ",\"prompt\":") | sb_json_string(b, q->prompt, q->prompt_len);
    }
    char k[32];
    snprintf(k, sizeof k, ",\"k\":%d", q->k);
    r |= sb_str(b, k);
    if (q->append.n) r |= sb_str(b, ",\"append_b64\":\"") | sb_b64(b, q->append.p, q->append.n) | sb_str(b, "\"");
    if (q->n_cands) {
        r |= sb_str(b, ",\"candidates_b64\":[");
        for (size_t i = 0; i < q->n_cands; i++)
            r |= sb_str(b, i ? ",\"" : "\"") | sb_b64(b, q->cands[i].p, q->cands[i].n) | sb_str(b, "\"");
        r |= sb_str(b, "]");
    }
    return r | sb_str(b, "}");
}

static double logq_of(const json_t *v) { return json_is_number(v) ? json_number_value(v) : -INFINITY; }

static int decode_step(wk_session *w, const json_t *o, proto_error *err) {
    proto_step_res *r = &w->step;
    memset(r, 0, sizeof *r);
    json_t *np = json_object_get(o, "n_past"), *dj = json_object_get(o, "decoded");
    r->n_past = json_is_integer(np) ? (int)json_integer_value(np) : 0;
    r->decoded = json_is_integer(dj) ? (int)json_integer_value(dj) : 0;
    r->end_logq = logq_of(json_object_get(o, "end_logq"));
    json_t *top = json_object_get(o, "top"), *ca = json_object_get(o, "candidates");
    size_t nt = json_array_size(top), nc = json_array_size(ca);
    if (nt > w->top_cap) {
        proto_top *p = realloc(w->top, nt * sizeof *p);
        if (!p) return proto_fail(err, 500, "internal", "out of memory");
        w->top = p;
        w->top_cap = nt;
    }
    if (nc > w->cand_cap) {
        double *p = realloc(w->cand, nc * sizeof *p);
        if (!p) return proto_fail(err, 500, "internal", "out of memory");
        w->cand = p;
        w->cand_cap = nc;
    }
    w->bytes.n = 0;
    size_t *off = nt ? malloc(nt * sizeof *off) : NULL;
    if (nt && !off) return proto_fail(err, 500, "internal", "out of memory");
    for (size_t i = 0; i < nt; i++) {
        json_t *t = json_array_get(top, i);
        const char *s = json_string_value(json_object_get(t, "s_b64"));
        size_t len;
        unsigned char *bytes = s ? b64_decode(s, &len) : NULL;
        if (!bytes) {
            free(off);
            return proto_fail(err, 502, "invalid_base64", "bad top entry %zu", i);
        }
        off[i] = w->bytes.n;
        int rc = sb_add(&w->bytes, bytes, len);
        free(bytes);
        if (rc) {
            free(off);
            return proto_fail(err, 500, "internal", "out of memory");
        }
        w->top[i].s.n = len;
        w->top[i].logq = logq_of(json_object_get(t, "logq"));
    }
    for (size_t i = 0; i < nt; i++) w->top[i].s.p = (const unsigned char *)w->bytes.p + off[i];
    free(off);
    for (size_t i = 0; i < nc; i++) w->cand[i] = logq_of(json_array_get(ca, i));
    r->top = w->top;
    r->n_top = nt;
    r->cand_logq = w->cand;
    r->n_cands = nc;
    return 0;
}

static int decode_score(wk_session *w, const json_t *o, proto_error *err) {
    proto_score_res *r = &w->score;
    memset(r, 0, sizeof *r);
    json_t *sl = json_object_get(o, "sum_logprob"), *toks = json_object_get(o, "tokens");
    if (!json_is_number(sl)) return proto_fail(err, 502, "invalid_type", "'sum_logprob' is missing");
    r->sum_logprob = json_number_value(sl);
    json_t *v;
    if ((v = json_object_get(o, "n_ctx")) && json_is_integer(v)) r->n_ctx = (int)json_integer_value(v);
    if ((v = json_object_get(o, "window_overlap")) && json_is_integer(v)) r->window_overlap = (int)json_integer_value(v);
    if ((v = json_object_get(o, "decoded")) && json_is_integer(v)) r->decoded = (int)json_integer_value(v);
    size_t n = json_array_size(toks);
    if (n > w->tok_cap) {
        proto_score_tok *p = realloc(w->tok, n * sizeof *p);
        if (!p) return proto_fail(err, 500, "internal", "out of memory");
        w->tok = p;
        w->tok_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(toks, i);
        json_t *id = json_object_get(t, "id"), *st = json_object_get(t, "start"), *en = json_object_get(t, "end");
        if (!json_is_integer(id) || !json_is_integer(st) || !json_is_integer(en) ||
            json_integer_value(st) < 0 || json_integer_value(en) < json_integer_value(st))
            return proto_fail(err, 502, "invalid_type", "tokens[%zu]: bad id/start/end", i);
        proto_score_tok *k = &w->tok[i];
        k->id = (int)json_integer_value(id);
        k->start = (size_t)json_integer_value(st);
        k->end = (size_t)json_integer_value(en);
        json_t *lp = json_object_get(t, "logprob"), *en2 = json_object_get(t, "entropy"), *t1 = json_object_get(t, "top1");
        k->logprob = json_is_number(lp) ? json_number_value(lp) : NAN;
        k->entropy = json_is_number(en2) ? json_number_value(en2) : NAN;
        k->top1 = json_is_number(t1) ? json_number_value(t1) : NAN;
    }
    r->tokens = w->tok;
    r->n_tokens = n;
    return 0;
}

static int decode_error(const json_t *o, int status, proto_error *err) {
    json_t *e = json_object_get(o, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    memset(err, 0, sizeof *err);
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    snprintf(err->message, sizeof err->message, "%s", msg ? msg : "");
    return -1;
}

static int decode_info(const json_t *o, proto_info *in, proto_error *err) {
    memset(in, 0, sizeof *in);
    json_t *p = json_object_get(o, "protocol");
    if (!json_is_integer(p) || json_integer_value(p) != PROTO_VERSION)
        return proto_fail(err, 409, "protocol_mismatch", "incompatible worker: protocol %s (this coordinator speaks %d)",
                          json_is_integer(p) ? "differs" : "missing", PROTO_VERSION);
    in->protocol = PROTO_VERSION;
    in->name = json_string_value(json_object_get(o, "name"));
    json_t *v;
    in->doc_start = (v = json_object_get(o, "doc_start")) && json_is_integer(v) ? (int)json_integer_value(v) : -1;
    in->slots = (v = json_object_get(o, "slots")) && json_is_integer(v) ? (int)json_integer_value(v) : 0;
    in->n_ctx = (v = json_object_get(o, "n_ctx")) && json_is_integer(v) ? (int)json_integer_value(v) : 0;
    return 0;
}

int proto_fail(proto_error *err, int status, const char *code, const char *fmt, ...) {
    memset(err, 0, sizeof *err);
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- HTTP ------------------------------------------------------------------- */

/* err->message = the formatted text, cut to fit. */
static void set_message(proto_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_message(proto_error *err, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t n = strlen(buf);
    if (n >= sizeof err->message) n = sizeof err->message - 1;
    memcpy(err->message, buf, n);
    err->message[n] = 0;
}

/* Prefixes the message with the member's name and URL. */
static void name_error(member_session *s, proto_error *err) {
    char msg[sizeof err->message];
    memcpy(msg, err->message, sizeof msg);
    set_message(err, "member '%s' (%s): %s", members_name(s->ms, s->idx), members_url(s->ms, s->idx), msg);
}

static void *wk_open(member_session *s) {
    wk_session *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->h = curl_pool_get(members_pool(s->ms, s->idx));
    w->hdr = curl_pool_json_headers();
    if (!w->h || !w->hdr) {
        if (w->h) curl_easy_cleanup(w->h);
        curl_slist_free_all(w->hdr);
        free(w);
        return NULL;
    }
    return w;
}

/* Queues `method path` with w->body into the round. */
static int queue_call(member_session *s, member_round *r, const char *method, const char *path, const char *suffix) {
    wk_session *w = s->impl;
    char url[512];
    snprintf(url, sizeof url, "%s%s%s", members_url(s->ms, s->idx), path, suffix ? suffix : "");
    json_decref(w->answer);
    w->answer = NULL;
    w->resp.n = 0;
    w->path = path;
    w->code = CURLE_OK;
    CURL *h = w->h;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, w->hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &w->resp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(s->timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)w->body.n);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, w->body.p ? w->body.p : "");
    }
    return member_round_add(r, h, &w->code);
}

/* The answer of the latest call as JSON (kept in w->answer), or -1 with err
 * for no answer, an HTTP error or a body that is not a JSON object. */
static int answer_json(member_session *s, proto_error *err) {
    wk_session *w = s->impl;
    double t = 0;
    curl_easy_getinfo(w->h, CURLINFO_TOTAL_TIME, &t);
    s->last_seconds = t;
    if (w->code != CURLE_OK) {
        memset(err, 0, sizeof *err);
        snprintf(err->message, sizeof err->message, "%s", curl_easy_strerror((CURLcode)w->code));
        name_error(s, err);
        members_mark_down(s->ms, s->idx, err->message);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    w->answer = json_loadb(w->resp.p ? w->resp.p : "", w->resp.n, 0, NULL);
    if (status != 200) {
        decode_error(w->answer, (int)status, err);
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        set_message(err, "%s: HTTP %ld%s%s", w->path, status, msg[0] ? ": " : "", msg);
        name_error(s, err);
        return -1;
    }
    if (!json_is_object(w->answer)) {
        proto_fail(err, 502, "invalid_json", "%s: the answer is not JSON", w->path);
        name_error(s, err);
        return -1;
    }
    return 0;
}

static int wk_step(member_session *s, const proto_step_req *q, member_round *r) {
    wk_session *w = s->impl;
    if (encode_step(q, &w->body)) return -1;
    return queue_call(s, r, "POST", PROTO_PATH_STEP, NULL);
}

static int wk_score(member_session *s, const proto_score_req *q, member_round *r) {
    wk_session *w = s->impl;
    w->body.n = 0;
    if (sb_str(&w->body, "{\"text\":") || sb_json_string(&w->body, q->text, q->text_len) ||
        sb_str(&w->body, q->doc_start ? ",\"doc_start\":true}" : ",\"doc_start\":false}"))
        return -1;
    return queue_call(s, r, "POST", PROTO_PATH_SCORE, NULL);
}

static int wk_step_result(member_session *s, const proto_step_res **res, proto_error *err) {
    wk_session *w = s->impl;
    *res = NULL;
    if (answer_json(s, err)) return -1;
    if (decode_step(w, w->answer, err)) {
        name_error(s, err);
        return -1;
    }
    *res = &w->step;
    return 0;
}

static int wk_score_result(member_session *s, const proto_score_res **res, proto_error *err) {
    wk_session *w = s->impl;
    *res = NULL;
    if (answer_json(s, err)) return -1;
    if (decode_score(w, w->answer, err)) {
        name_error(s, err);
        return -1;
    }
    *res = &w->score;
    return 0;
}

static void wk_close(member_session *s, member_round *r) {
    wk_session *w = s->impl;
    w->body.n = 0;
    double t = s->timeout_s;
    s->timeout_s = 2.0;
    queue_call(s, r, "DELETE", PROTO_PATH_SESSION, s->id);
    s->timeout_s = t;
}

static void wk_free(member_session *s) {
    wk_session *w = s->impl;
    if (!w) return;
    curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, NULL);
    if (w->code == CURLE_OK) curl_pool_put(members_pool(s->ms, s->idx), w->h);
    else curl_easy_cleanup(w->h); /* a failed connection is not reused */
    curl_slist_free_all(w->hdr);
    json_decref(w->answer);
    free(w->body.p);
    free(w->resp.p);
    free(w->bytes.p);
    free(w->top);
    free(w->cand);
    free(w->tok);
    free(w);
    s->impl = NULL;
}

/* ---- connecting ------------------------------------------------------------- */

static int wk_get(member_set *ms, size_t i, const char *path, double timeout_s, json_t **out, char *err, size_t errlen) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", members_url(ms, i), path);
    sbuf b = {0};
    int st = curl_pool_call(members_pool(ms, i), url, "GET", NULL, 0, timeout_s, &b, err, errlen);
    *out = st > 0 && b.n ? json_loadb(b.p, b.n, 0, NULL) : NULL;
    free(b.p);
    return st;
}

static int wk_health(member_set *ms, size_t i, double timeout_s) {
    json_t *r = NULL;
    char err[256];
    int st = wk_get(ms, i, PROTO_PATH_HEALTH, timeout_s, &r, err, sizeof err);
    const char *status = json_string_value(json_object_get(r, "status"));
    int up = st == 200 && status && !strcmp(status, "ok");
    json_decref(r);
    return up;
}

static int wk_connect(member_set *ms, size_t i, double timeout_s, proto_info *info, json_t **keep,
                      char *err, size_t errlen) {
    char e2[256] = "";
    json_t *r = NULL;
    int st = wk_get(ms, i, PROTO_PATH_INFO, timeout_s, &r, e2, sizeof e2);
    *keep = NULL;
    const char *name = members_name(ms, i), *url = members_url(ms, i);
    if (st < 0) {
        snprintf(err, errlen, "member '%s' (%s): GET %s: %s", name, url, PROTO_PATH_INFO, e2);
        return -1;
    }
    if (st != 200 || !json_is_object(r)) {
        snprintf(err, errlen, "member '%s' (%s): GET %s: %s (is it a consort-worker?)", name, url, PROTO_PATH_INFO,
                 st != 200 ? "HTTP error" : "not a JSON object");
        if (st != 200) snprintf(err + strlen(err), errlen - strlen(err), " [HTTP %d]", st);
        json_decref(r);
        return -1;
    }
    proto_error pe;
    if (decode_info(r, info, &pe)) {
        snprintf(err, errlen, "member '%s' (%s): %s", name, url, pe.message);
        json_decref(r);
        return -1;
    }
    *keep = r;
    return 0;
}

const member_ops member_worker_ops = {
    "consort-worker", wk_connect, wk_health, wk_open, wk_step, wk_score,
    wk_step_result, wk_score_result, wk_close, wk_free,
};
