/* coordinator/engine/member_worker.c: the member operations (member.h) for a
 * consort-worker, the member protocol of docs/PROTOCOL.md over HTTP.
 *
 * Each session owns one keep-alive curl handle (borrowed from the member's
 * pool for the session's life), a request body buffer, an answer buffer and
 * the decoded answer, all reused from call to call: a step costs one
 * encode, one HTTP round trip and one decode. The bodies and answers are
 * the protocol module's structs; this file turns them into HTTP calls.
 *
 * Access and deadlines: every call carries the member's shared secret
 * (curl_pool.h) and the time it may take (the member protocol's deadline
 * header: the smaller of the step deadline and what is left of the
 * request's own deadline), so a worker stops work the coordinator no longer
 * waits for.
 *
 * Errors that reach an answer name the member by name only ("member 'b'
 * did not answer within the step deadline"); its URL and curl's details go
 * to the log.
 *
 * What may change: the wire codec is protocol/proto.c's; this file only
 * moves bytes and decides what a failed call means (status 0 = no answer).
 */
#include "coordinator/engine/member.h"

#include "common/clock.h"
#include "common/log.h"
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
    char *body;              /* the latest request body (proto_dumps) */
    size_t body_len;
    sbuf resp;
    int code;                /* CURLcode of the latest call */
    int cut_by_request;      /* its time was cut to what was left of the request's deadline */
    const char *path;        /* of the latest call, for messages */
    json_t *answer;          /* the latest answer (decoded structs borrow from it) */
    proto_step_res step;     /* decoded answers (own what the codec allocated) */
    proto_score_res score;
    proto_next_bytes_res nb;
} wk_session;

/* The body of a call: one encode, one dump (protocol/proto.h). */
static int set_body(wk_session *w, json_t *o) {
    size_t len = 0;
    char *text = proto_dumps(o, &len);
    if (!text) return -1;
    free(w->body);
    w->body = text;
    w->body_len = len;
    return 0;
}

/* Drops the decoded answer of the previous call. */
static void release_answer(wk_session *w) {
    proto_step_res_release(&w->step);
    proto_score_res_release(&w->score);
    proto_next_bytes_res_release(&w->nb);
    json_decref(w->answer);
    w->answer = NULL;
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

/* Prefixes the message with the member's name (never its URL: messages
 * reach clients). */
static void name_error(member_session *s, proto_error *err) {
    char msg[sizeof err->message];
    memcpy(msg, err->message, sizeof msg);
    set_message(err, "member '%s': %s", members_name(s->ms, s->idx), msg);
}

/* What a transfer that got no answer means, in words a client may read. */
static const char *no_answer_reason(int code) {
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return "did not answer within the step deadline";
    case CURLE_COULDNT_CONNECT: return "is not reachable (connection refused)";
    case CURLE_COULDNT_RESOLVE_HOST: return "is not reachable (unknown host)";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION: return "failed the TLS handshake";
    default: return "closed the connection without an answer";
    }
}

static void *wk_open(member_session *s) {
    wk_session *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->h = curl_pool_get(members_pool(s->ms, s->idx));
    if (!w->h) {
        free(w);
        return NULL;
    }
    return w;
}

/* Seconds this call may take: the step deadline, cut to what is left of
 * the request's deadline (at least 1 ms: the call then fails at once).
 * *cut says whether the request's deadline was the shorter: a timeout is
 * then the request's, not the member's (curl may fire a little before our
 * clock reaches the deadline, so this is decided here, not afterwards). */
static double call_budget(const member_session *s, int *cut) {
    double t = s->timeout_s;
    *cut = 0;
    if (s->deadline > 0) {
        double left = s->deadline - clock_mono_s();
        if (left < t) t = left, *cut = 1;
    }
    return t > 0.001 ? t : 0.001;
}

/* Queues `method path` with w->body into the round. */
static int queue_call(member_session *s, member_round *r, const char *method, const char *path, const char *suffix) {
    wk_session *w = s->impl;
    char url[512];
    snprintf(url, sizeof url, "%s%s%s", members_url(s->ms, s->idx), path, suffix ? suffix : "");
    release_answer(w);
    w->resp.n = 0;
    w->path = path;
    w->code = CURLE_OK;
    long ms = (long)(call_budget(s, &w->cut_by_request) * 1000);
    if (ms < 1) ms = 1;
    curl_pool *pool = members_pool(s->ms, s->idx);
    curl_slist_free_all(w->hdr);
    w->hdr = curl_pool_json_headers(pool, ms);
    if (!w->hdr) return -1;
    CURL *h = w->h;
    curl_easy_reset(h);
    curl_pool_apply_tls(pool, h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, w->hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &w->resp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)w->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, w->body ? w->body : "");
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
        int requests_own = w->code == CURLE_OPERATION_TIMEDOUT && w->cut_by_request;
        if (requests_own) {
            snprintf(err->message, sizeof err->message, "did not answer before the request's deadline");
            snprintf(err->code, sizeof err->code, "%s", PROTO_ERR_DEADLINE_EXCEEDED);
        }
        else
            snprintf(err->message, sizeof err->message, "%s", no_answer_reason(w->code));
        name_error(s, err);
        char why[400];
        snprintf(why, sizeof why, "%s %s: %s", w->path, no_answer_reason(w->code),
                 curl_easy_strerror((CURLcode)w->code));
        if (!requests_own) /* the request's deadline is not the member's fault */
            members_mark_down(s->ms, s->idx, why);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    w->answer = json_loadb(w->resp.p ? w->resp.p : "", w->resp.n, 0, NULL);
    if (status != 200) {
        if (proto_error_decode(w->answer, (int)status, err)) {
            memset(err, 0, sizeof *err);
            err->status = (int)status;
        }
        /* the worker's own deadline_exceeded is the request's only when the
         * header we sent carried what was left of the request's deadline;
         * else the member was too slow for the step deadline */
        if (!strcmp(err->code, PROTO_ERR_DEADLINE_EXCEEDED) && !w->cut_by_request) err->code[0] = 0;
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        set_message(err, "%s: HTTP %ld%s%s", w->path, status, msg[0] ? ": " : "", msg);
        name_error(s, err);
        return -1;
    }
    if (!json_is_object(w->answer)) {
        proto_fail(err, 502, PROTO_ERR_INVALID_JSON, "%s: the answer is not JSON", w->path);
        name_error(s, err);
        return -1;
    }
    return 0;
}

static int wk_step(member_session *s, const proto_step_req *q, member_round *r) {
    wk_session *w = s->impl;
    if (set_body(w, proto_step_req_encode(q))) return -1;
    return queue_call(s, r, "POST", PROTO_PATH_STEP, NULL);
}

static int wk_score(member_session *s, const proto_score_req *q, member_round *r) {
    wk_session *w = s->impl;
    if (set_body(w, proto_score_req_encode(q))) return -1;
    return queue_call(s, r, "POST", PROTO_PATH_SCORE, NULL);
}

static int wk_next_bytes(member_session *s, const proto_next_bytes_req *q, member_round *r) {
    wk_session *w = s->impl;
    if (set_body(w, proto_next_bytes_req_encode(q))) return -1;
    return queue_call(s, r, "POST", PROTO_PATH_NEXT_BYTES, NULL);
}

static int wk_next_bytes_result(member_session *s, const proto_next_bytes_res **res, proto_error *err) {
    wk_session *w = s->impl;
    *res = NULL;
    if (answer_json(s, err)) return -1;
    if (proto_next_bytes_res_decode(w->answer, &w->nb, err)) {
        name_error(s, err);
        return -1;
    }
    *res = &w->nb;
    return 0;
}

static int wk_step_result(member_session *s, const proto_step_res **res, proto_error *err) {
    wk_session *w = s->impl;
    *res = NULL;
    if (answer_json(s, err)) return -1;
    if (proto_step_res_decode(w->answer, &w->step, err)) {
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
    if (proto_score_res_decode(w->answer, &w->score, err)) {
        name_error(s, err);
        return -1;
    }
    *res = &w->score;
    return 0;
}

/* The deletion gets a short deadline of its own (also after the request's
 * deadline passed: the member must still drop the session). */
static void wk_close(member_session *s, member_round *r) {
    double t = s->timeout_s, d = s->deadline;
    s->timeout_s = 1.0;
    s->deadline = 0;
    queue_call(s, r, "DELETE", PROTO_PATH_SESSION, s->id);
    s->timeout_s = t;
    s->deadline = d;
}

static void wk_free(member_session *s) {
    wk_session *w = s->impl;
    if (!w) return;
    curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, NULL);
    if (w->code == CURLE_OK) curl_pool_put(members_pool(s->ms, s->idx), w->h);
    else curl_easy_cleanup(w->h); /* a failed connection is not reused */
    curl_slist_free_all(w->hdr);
    release_answer(w);
    free(w->body);
    free(w->resp.p);
    free(w);
    s->impl = NULL;
}

/* ---- connecting ------------------------------------------------------------- */

static int wk_get(member_set *ms, size_t i, const char *path, double timeout_s, json_t **out, char *err, size_t errlen) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", members_url(ms, i), path);
    sbuf b = {0};
    *out = NULL;
    int st = curl_pool_call(members_pool(ms, i), url, "GET", NULL, 0, timeout_s, &b, err, errlen);
    *out = st > 0 && b.n ? json_loadb(b.p, b.n, 0, NULL) : NULL;
    free(b.p);
    return st;
}

static int wk_health(member_set *ms, size_t i, double timeout_s) {
    json_t *r = NULL;
    char err[256];
    int st = wk_get(ms, i, PROTO_PATH_HEALTH, timeout_s, &r, err, sizeof err);
    proto_health h;
    proto_error pe;
    int up = st == 200 && proto_health_decode(r, &h, &pe) == 0 && !strcmp(h.status, "ok");
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
    if (st == 401) {
        snprintf(err, errlen, "member '%s' (%s): GET %s: 401, the worker wants a token: give its shared secret "
                 "in $CONSORT_TOKEN or --token-file", name, url, PROTO_PATH_INFO);
        json_decref(r);
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
    if (proto_info_decode(r, info, &pe)) {
        snprintf(err, errlen, "member '%s' (%s): %s", name, url, pe.message);
        json_decref(r);
        return -1;
    }
    *keep = r;
    return 0;
}

const member_ops member_worker_ops = {
    "consort-worker", wk_connect, wk_health, wk_open, wk_step, wk_score,
    wk_step_result, wk_score_result, wk_close, wk_free, 1, wk_next_bytes, wk_next_bytes_result,
};
