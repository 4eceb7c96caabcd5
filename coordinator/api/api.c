/* coordinator/api/api.c: the OpenAI-compatible HTTP server. See api.h.
 *
 * Shape. One route function dispatches every request (http_server runs it
 * on the connection's thread). A generation request is parsed and checked
 * (openai.c), waits for its turn (admission: a FIFO of waiters, at most
 * max_parallel running and queue_limit waiting), then runs the backend
 * either on the connection's thread (plain answers) or on a generation
 * thread that feeds an event queue which the connection drains (streams).
 *
 * State. The server owns its configuration, counters for /metrics, the
 * admission queue and two shutdown flags, all under `mu` except the flags
 * (atomics read on hot paths): `draining` (api_drain: no new turns; running
 * generations go on) and `stopping` (every generation stops at its next
 * step). Each request owns its api_job.
 *
 * Every generation ends at its step boundary when its client is gone, its
 * deadline passed, or the server is stopping; whatever ends it, the engine
 * deletes its member sessions and a stream still gets its final chunk and
 * [DONE].
 *
 * What may change: the OpenAI shapes (openai.c), the limits' defaults
 * (api.h). What must not: one answer per request, errors in OpenAI's shape,
 * no internal address in any answer (the engine names members by name).
 */
#include "coordinator/api/api.h"

#include "common/clock.h"
#include "common/http_server.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/rng.h"
#include "common/sbuf.h"
#include "coordinator/api/openai.h"
#include "sampler/registry.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define API_MAX_ROWS 64

static const double api_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct api_server {
    http_server *http;
    api_backend be;
    oai_config ocfg;
    char model_id[128];
    char strategy[128];
    char *api_key;
    const char *names[CONSORT_MAX_MEMBERS];
    size_t n_names;
    long long started;
    int stopping; /* atomic (__atomic builtins): read without mu by generations */
    int draining; /* atomic: api_drain began (no new turns) */
    int metrics_public;
    int queue_limit;        /* -1: none */
    double request_timeout; /* seconds, <= 0: none */

    pthread_mutex_t mu; /* guards everything below */
    struct { char endpoint[40]; int status; unsigned long long n; } rows[API_MAX_ROWS];
    size_t n_rows;
    unsigned long long steps, prompt_tokens, completion_tokens, disconnects;
    unsigned long long spec_drafted, spec_accepted; /* speculative steps (ensemble_result) */
    unsigned long long member_failures[CONSORT_MAX_MEMBERS];
    prom_hist step_hist; /* seconds between text chunks */
    long in_flight;
    long streams_open;      /* streams whose connection is still being written */
    unsigned long long busy_rejects, queue_timeouts, abandoned_plain;
    /* admission: waiters served in order, at most max_parallel running */
    int max_parallel;
    struct api_waiter *wait_head, *wait_tail;
    long running, queued;
    pthread_cond_t turn;
};

typedef struct api_waiter {
    struct api_waiter *next;
    int admitted;
} api_waiter;

/* ---- small helpers ------------------------------------------------------------ */

static int is_stopping(api_server *s) { return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE); }
static int is_closing(api_server *s) {
    return is_stopping(s) || __atomic_load_n(&s->draining, __ATOMIC_ACQUIRE);
}

/* When the OS random source fails (it should not): unique, not secret. */
static void fallback_id_bytes(unsigned char *r, size_t n) {
    static unsigned long long calls; /* atomic */
    uint64_t x = (uint64_t)(clock_mono_s() * 1e9) ^ ((uint64_t)__atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED) << 40);
    for (size_t i = 0; i < n; i++) r[i] = (unsigned char)rng_splitmix64(&x);
}

/* prefix + 24 hex digits from the OS random source (not guessable). */
static void make_id(const char *prefix, char *out, size_t n) {
    unsigned char r[12];
    if (rng_os_bytes(r, sizeof r) != 0) fallback_id_bytes(r, sizeof r);
    size_t k = (size_t)snprintf(out, n, "%s", prefix);
    for (size_t i = 0; i < sizeof r && k + 2 < n; i++, k += 2) snprintf(out + k, n - k, "%02x", r[i]);
}

static void count_request(api_server *s, const char *endpoint, int status) {
    pthread_mutex_lock(&s->mu);
    size_t i;
    for (i = 0; i < s->n_rows; i++)
        if (s->rows[i].status == status && strcmp(s->rows[i].endpoint, endpoint) == 0) break;
    if (i == s->n_rows && s->n_rows < API_MAX_ROWS) {
        snprintf(s->rows[i].endpoint, sizeof s->rows[i].endpoint, "%s", endpoint);
        s->rows[i].status = status;
        s->rows[i].n = 0;
        s->n_rows++;
    }
    if (i < s->n_rows) s->rows[i].n++;
    pthread_mutex_unlock(&s->mu);
}

static void observe_step(api_server *s, double seconds) {
    pthread_mutex_lock(&s->mu);
    prom_hist_observe(&s->step_hist, seconds);
    pthread_mutex_unlock(&s->mu);
}

static void account_result(api_server *s, const ensemble_result *r) {
    pthread_mutex_lock(&s->mu);
    if (r->status == 0) {
        s->steps += (unsigned long long)(r->steps > 0 ? r->steps : 0);
        s->prompt_tokens += (unsigned long long)(r->prompt_tokens > 0 ? r->prompt_tokens : 0);
        s->completion_tokens += (unsigned long long)(r->steps > 0 ? r->steps : 0);
        s->spec_drafted += (unsigned long long)r->spec_drafted;
        s->spec_accepted += (unsigned long long)r->spec_accepted;
    }
    for (size_t i = 0; i < r->n_members; i++) {
        if (!r->members[i].failed) continue;
        for (size_t k = 0; k < s->n_names; k++)
            if (strcmp(s->names[k], r->members[i].name) == 0) s->member_failures[k]++;
    }
    pthread_mutex_unlock(&s->mu);
}

static void in_flight(api_server *s, int d) {
    pthread_mutex_lock(&s->mu);
    s->in_flight += d;
    pthread_mutex_unlock(&s->mu);
}

typedef enum { ADMIT_OK, ADMIT_FULL, ADMIT_CLOSING, ADMIT_TIMEOUT } admit_result;

/* Under s->mu: gives free turns to the waiters at the head of the line. */
static void admit_waiters(api_server *s) {
    while (s->wait_head && s->running < s->max_parallel && !is_closing(s)) {
        api_waiter *w = s->wait_head;
        s->wait_head = w->next;
        if (!s->wait_head) s->wait_tail = NULL;
        w->admitted = 1;
        s->running++;
        s->queued--;
    }
    pthread_cond_broadcast(&s->turn);
}

/* Under s->mu: takes w out of the line (it gave up). */
static void leave_line(api_server *s, api_waiter *w) {
    api_waiter **p = &s->wait_head, *prev = NULL;
    while (*p && *p != w) prev = *p, p = &(*p)->next;
    if (!*p) return;
    *p = w->next;
    if (s->wait_tail == w) s->wait_tail = prev;
    s->queued--;
}

/* Waits on the turn condition until `deadline` (clock_mono_s; 0 = none). */
static void wait_turn(api_server *s, double deadline) {
    if (deadline <= 0) {
        pthread_cond_wait(&s->turn, &s->mu);
        return;
    }
    double left = deadline - clock_mono_s();
    if (left <= 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_nsec / 1e9 + left;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    pthread_cond_timedwait(&s->turn, &s->mu, &ts);
}

/* Waits for a turn to generate (first come, first served; at most
 * max_parallel at once, at most queue_limit waiting), until the request's
 * deadline (0 = none). */
static admit_result admit(api_server *s, double deadline) {
    if (is_closing(s)) return ADMIT_CLOSING;
    if (s->max_parallel <= 0) return ADMIT_OK;
    pthread_mutex_lock(&s->mu);
    if (!s->wait_head && s->running < s->max_parallel) {
        s->running++;
        pthread_mutex_unlock(&s->mu);
        return ADMIT_OK;
    }
    if (s->queue_limit >= 0 && s->queued >= s->queue_limit) {
        s->busy_rejects++;
        pthread_mutex_unlock(&s->mu);
        return ADMIT_FULL;
    }
    api_waiter w = {NULL, 0};
    if (s->wait_tail) s->wait_tail->next = &w;
    else s->wait_head = &w;
    s->wait_tail = &w;
    s->queued++;
    while (!w.admitted && !is_closing(s) && !(deadline > 0 && clock_mono_s() >= deadline))
        wait_turn(s, deadline);
    admit_result r = ADMIT_OK;
    if (!w.admitted) {
        leave_line(s, &w);
        r = is_closing(s) ? ADMIT_CLOSING : ADMIT_TIMEOUT;
        if (r == ADMIT_TIMEOUT) s->queue_timeouts++;
        admit_waiters(s);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void release(api_server *s) {
    if (s->max_parallel <= 0) return;
    pthread_mutex_lock(&s->mu);
    s->running--;
    admit_waiters(s);
    pthread_mutex_unlock(&s->mu);
}

static void cors(http_conn *c) {
    http_add_header(c, "Access-Control-Allow-Origin", "*");
}

/* The answer to an error (http_server logs it: one line per rejected
 * request, with status, code and message; never a header or the body). */
static void reply_error(api_server *s, http_conn *c, const char *endpoint, const oai_error *e) {
    cors(c);
    http_reply_json(c, (unsigned)e->status, oai_error_json(e));
    count_request(s, endpoint, e->status);
}

/* A request that got no turn: 429 (line full) or 503 (shutting down, or
 * its deadline passed in line), each with Retry-After. */
static void reply_not_admitted(api_server *s, http_conn *c, const char *endpoint, admit_result why) {
    oai_error e;
    if (why == ADMIT_FULL) {
        http_add_header(c, "Retry-After", API_RETRY_AFTER_BUSY);
        oai_fail(&e, 429, NULL, "queue_full",
                 "The server is busy: %d requests are already waiting for a turn; retry in %s s.",
                 s->queue_limit, API_RETRY_AFTER_BUSY);
    } else if (why == ADMIT_CLOSING) {
        http_add_header(c, "Retry-After", API_RETRY_AFTER_SHUTDOWN);
        oai_fail(&e, 503, NULL, "shutting_down", "The server is shutting down; retry in %s s.",
                 API_RETRY_AFTER_SHUTDOWN);
    } else {
        http_add_header(c, "Retry-After", API_RETRY_AFTER_SHUTDOWN);
        oai_fail(&e, 503, NULL, "request_timeout",
                 "The request waited for a turn until its deadline (%g s) passed; retry later.",
                 s->request_timeout);
    }
    reply_error(s, c, endpoint, &e);
}

/* The error of a failed generation: the engine's status, code and message
 * (members named by name only). */
static void generation_error(oai_error *e, const ensemble_result *r) {
    const char *code = r->code ? r->code : r->status == 503 ? "no_member_available" : NULL;
    const char *param = code && !strcmp(code, "context_length_exceeded") ? "messages" : NULL;
    oai_fail(e, r->status ? r->status : 500, param, code, "%s", r->error[0] ? r->error : "generation failed");
}

static int member_up(api_server *s, size_t i) {
    return s->be.member_up ? s->be.member_up(s->be.ctx, i) : 1;
}

/* Is at least one of the members this request may use up? */
static int any_member_up(api_server *s, const ensemble_request *q) {
    const char *solo = q->strategy && strncmp(q->strategy, "solo:", 5) == 0 ? q->strategy + 5 : NULL;
    for (size_t i = 0; i < s->n_names; i++) {
        int used = 1;
        if (solo) used = strcmp(s->names[i], solo) == 0;
        else if (q->members) {
            used = 0;
            for (size_t k = 0; k < q->n_members; k++)
                if (strcmp(q->members[k], s->names[i]) == 0) used = 1;
        }
        if (used && member_up(s, i)) return 1;
    }
    return 0;
}

/* ---- generation jobs -------------------------------------------------------------- */

/* A streamed request runs its generation on a thread of its own, which turns
 * engine chunks into SSE events on a queue. The connection's thread waits
 * for the first event (or the end) before it answers: a request that fails
 * before any text (the engine's 400s, every member failing at once) gets a
 * real HTTP error instead of a 200 stream; otherwise it answers 200 and
 * drains the queue into the connection. A client that goes away sets
 * `cancel`, which the chunk callback returns to the engine. */
typedef struct api_event {
    struct api_event *next;
    size_t len;
    char data[];
} api_event;

typedef struct {
    api_server *s;
    http_conn *c;      /* the request's connection (plain answers: to notice a client gone) */
    oai_request rq;
    const char *endpoint;
    char id[64];
    long long created;
    double t_last;
    oai_logprobs lp;
    ensemble_result r;
    int have_result;
    /* streaming */
    pthread_t gen;
    int gen_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    api_event *head, *tail;
    int events;        /* pushed so far */
    int gen_done;      /* the generator pushed everything it will */
    int cancel;        /* the client is gone (or the stream never started) */
    int gone;          /* a write to the client failed */
    int first;         /* chat: the role chunk is still to be sent */
} api_job;

/* The strategy this request runs: its own, else the server's default. */
static const char *job_strategy(const api_job *j) {
    return j->rq.strategy[0] ? j->rq.strategy : j->s->strategy[0] ? j->s->strategy : NULL;
}

static void job_step_timer(api_job *j) {
    double t = clock_mono_s();
    observe_step(j->s, t - j->t_last);
    j->t_last = t;
}

static int job_cancelled(api_job *j) {
    pthread_mutex_lock(&j->mu);
    int c = j->cancel;
    pthread_mutex_unlock(&j->mu);
    return c || is_stopping(j->s);
}

static void log_drops(const api_job *j) {
    for (size_t i = 0; i < j->r.n_members; i++)
        if (j->r.members[i].failed)
            log_warn("%s %s: member %s dropped: %s", j->endpoint, j->id, j->r.members[i].name,
                     j->r.members[i].failure);
}

static void job_free(api_job *j) {
    if (!j) return;
    while (j->head) {
        api_event *e = j->head;
        j->head = e->next;
        free(e);
    }
    if (j->have_result && j->s->be.result_free) j->s->be.result_free(j->s->be.ctx, &j->r);
    oai_logprobs_clear(&j->lp);
    oai_request_free(&j->rq);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static int on_chunk_plain(void *ud, const ensemble_chunk *c) {
    api_job *j = ud;
    job_step_timer(j);
    if (j->rq.logprobs && oai_logprobs_add(&j->lp, c)) return 1;
    return is_stopping(j->s);
}

/* Before each step of a plain request: the server stops, or the client
 * hung up (nothing is written until the end, so ask the socket). */
static int plain_should_stop(void *ud) {
    api_job *j = ud;
    if (is_stopping(j->s)) return 1;
    if (!http_conn_gone(j->c)) return 0;
    j->gone = 1;
    return 1;
}

/* Before each step of a stream: the client is gone (a failed write) or the
 * server stops. */
static int stream_should_stop(void *ud) { return job_cancelled(ud); }

/* Queues one event: "data: <json>\n\n" (obj stolen), or raw text when obj is NULL. */
static void push_event(api_job *j, json_t *obj, const char *raw) {
    size_t len = 0;
    char *txt = obj ? oai_sse_event(obj, &len) : NULL;
    json_decref(obj);
    if (!obj && raw) len = strlen(raw);
    api_event *e = (txt || raw) ? malloc(sizeof *e + len) : NULL;
    if (e) {
        e->next = NULL;
        e->len = len;
        memcpy(e->data, txt ? txt : raw, len);
    }
    free(txt);
    pthread_mutex_lock(&j->mu);
    if (e) {
        if (j->tail) j->tail->next = e;
        else j->head = e;
        j->tail = e;
        j->events++;
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void push_role(api_job *j) {
    if (!j->first) return;
    j->first = 0;
    push_event(j, oai_chunk_json(&j->rq, j->id, j->created, "", 0, 1, NULL, NULL), NULL);
}

static int on_chunk_stream(void *ud, const ensemble_chunk *c) {
    api_job *j = ud;
    job_step_timer(j);
    if (job_cancelled(j)) return 1;
    if (c->len == 0 && !j->rq.logprobs) return 0;
    push_role(j);
    json_t *lp = NULL;
    if (j->rq.logprobs) {
        oai_logprobs_add(&j->lp, c);
        lp = oai_logprobs_take(&j->lp);
    }
    push_event(j, oai_chunk_json(&j->rq, j->id, j->created, c->text, c->len, 0, NULL, lp), NULL);
    return job_cancelled(j);
}

static void *gen_main(void *ud) {
    api_job *j = ud;
    api_server *s = j->s;
    in_flight(s, +1);
    j->t_last = clock_mono_s();
    s->be.generate(s->be.ctx, &j->rq.req, on_chunk_stream, j, &j->r);
    release(s);
    j->have_result = 1;
    account_result(s, &j->r);
    log_drops(j);
    pthread_mutex_lock(&j->mu);
    int started = j->events > 0;
    pthread_mutex_unlock(&j->mu);
    if (j->r.status && !started) {
        /* nothing sent yet: the connection thread answers with an HTTP error */
    } else if (j->r.status) {
        oai_error e;
        generation_error(&e, &j->r);
        push_event(j, oai_error_json(&e), NULL);
        push_event(j, NULL, "data: [DONE]\n\n");
        log_warn("%s %s: failed mid-stream (%d): %s", j->endpoint, j->id, j->r.status, e.message);
    } else {
        push_role(j);
        json_t *fin = oai_chunk_json(&j->rq, j->id, j->created, NULL, 0, 0,
                                     j->r.finish_reason ? j->r.finish_reason : "stop", NULL);
        if (fin) json_object_set_new(fin, "ensemble", oai_ensemble_json(&j->r, job_strategy(j)));
        push_event(j, fin, NULL);
        if (j->rq.include_usage)
            push_event(j, oai_usage_chunk_json(&j->rq, j->id, j->created, &j->r), NULL);
        push_event(j, NULL, "data: [DONE]\n\n");
    }
    in_flight(s, -1);
    pthread_mutex_lock(&j->mu);
    j->gen_done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* http_stream producer: the queue into the connection. */
static void drain_main(http_stream *st, void *ud) {
    api_job *j = ud;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->head && !j->gen_done) pthread_cond_wait(&j->cv, &j->mu);
        api_event *e = j->head;
        if (e) {
            j->head = e->next;
            if (!j->head) j->tail = NULL;
        }
        pthread_mutex_unlock(&j->mu);
        if (!e) break;
        if (!j->gone && http_stream_write(st, e->data, e->len)) {
            j->gone = 1;
            pthread_mutex_lock(&j->mu);
            j->cancel = 1;
            pthread_mutex_unlock(&j->mu);
        }
        free(e);
    }
}

/* http_stream cleanup (also when the stream never started). */
static void stream_cleanup(void *ud) {
    api_job *j = ud;
    pthread_mutex_lock(&j->mu);
    j->cancel = 1;
    pthread_mutex_unlock(&j->mu);
    if (j->gen_started) pthread_join(j->gen, NULL);
    pthread_mutex_lock(&j->s->mu);
    if (j->gone) j->s->disconnects++;
    j->s->streams_open--;
    pthread_mutex_unlock(&j->s->mu);
    log_info("%s %s: stream %s, %d steps, %.3f s", j->endpoint, j->id,
             j->gone ? "aborted by the client" : j->r.status ? "failed" : "done", j->r.steps,
             j->r.seconds);
    job_free(j);
}

static void handle_stream(api_server *s, http_conn *c, api_job *j) {
    oai_error e;
    j->first = j->rq.endpoint == OAI_CHAT;
    admit_result ar = admit(s, j->rq.req.deadline);
    if (ar != ADMIT_OK) {
        reply_not_admitted(s, c, j->endpoint, ar);
        job_free(j);
        return;
    }
    if (pthread_create(&j->gen, NULL, gen_main, j)) {
        release(s);
        oai_fail(&e, 500, NULL, NULL, "cannot start a generation thread");
        reply_error(s, c, j->endpoint, &e);
        job_free(j);
        return;
    }
    j->gen_started = 1;
    pthread_mutex_lock(&j->mu);
    while (!j->head && !j->gen_done) pthread_cond_wait(&j->cv, &j->mu);
    int failed = !j->head;
    pthread_mutex_unlock(&j->mu);
    if (failed) { /* ended before any event: a plain HTTP error */
        pthread_join(j->gen, NULL);
        j->gen_started = 0;
        generation_error(&e, &j->r);
        reply_error(s, c, j->endpoint, &e);
        log_warn("%s %s: failed (%d): %s", j->endpoint, j->id, e.status, e.message);
        job_free(j);
        return;
    }
    cors(c);
    http_add_header(c, "Cache-Control", "no-cache");
    http_add_header(c, "X-Accel-Buffering", "no");
    count_request(s, j->endpoint, 200);
    pthread_mutex_lock(&s->mu);
    s->streams_open++; /* until stream_cleanup, which runs in every case */
    pthread_mutex_unlock(&s->mu);
    http_reply_stream(c, 200, "text/event-stream", drain_main, stream_cleanup, j);
}

static void handle_generate(api_server *s, http_conn *c, const http_request *req,
                            oai_endpoint ep, const char *endpoint) {
    oai_error e;
    api_job *j = calloc(1, sizeof *j);
    if (!j) {
        oai_fail(&e, 500, NULL, NULL, "out of memory");
        reply_error(s, c, endpoint, &e);
        return;
    }
    j->s = s;
    j->c = c;
    j->endpoint = endpoint;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (oai_parse_request(ep, req->body, req->body_len, &s->ocfg, &j->rq, &e)) {
        job_free(j);
        reply_error(s, c, endpoint, &e);
        return;
    }
    char msg[256] = "";
    if (j->rq.req.strategy && s->be.strategy_valid &&
        !s->be.strategy_valid(s->be.ctx, j->rq.req.strategy, msg, sizeof msg)) {
        oai_fail(&e, 400, "ensemble.strategy", "unknown_strategy", "%s",
                 msg[0] ? msg : "invalid strategy");
        job_free(j);
        reply_error(s, c, endpoint, &e);
        return;
    }
    if (!any_member_up(s, &j->rq.req)) {
        oai_fail(&e, 503, NULL, "no_member_available",
                 "No ensemble member is available right now (all are down); try again later.");
        job_free(j);
        reply_error(s, c, endpoint, &e);
        return;
    }
    if (s->request_timeout > 0) j->rq.req.deadline = http_conn_received_s(c) + s->request_timeout;
    j->rq.req.should_stop = j->rq.stream ? stream_should_stop : plain_should_stop;
    make_id(ep == OAI_CHAT ? "chatcmpl-" : "cmpl-", j->id, sizeof j->id);
    j->created = (long long)time(NULL);
    oai_logprobs_init(&j->lp, ep, j->rq.top_logprobs, j->rq.prompt_chars);
    log_info("%s %s: %s, max_tokens %d, temperature %g, strategy %s", endpoint, j->id,
             j->rq.stream ? "stream" : "plain", j->rq.req.max_tokens, j->rq.req.temperature,
             job_strategy(j) ? job_strategy(j) : "(default)");
    if (j->rq.stream) {
        handle_stream(s, c, j);
        return;
    }

    admit_result ar = admit(s, j->rq.req.deadline);
    if (ar != ADMIT_OK) {
        reply_not_admitted(s, c, endpoint, ar);
        job_free(j);
        return;
    }
    in_flight(s, +1);
    j->t_last = clock_mono_s();
    s->be.generate(s->be.ctx, &j->rq.req, on_chunk_plain, j, &j->r);
    release(s);
    j->have_result = 1;
    account_result(s, &j->r);
    log_drops(j);
    if (j->gone) { /* nobody to answer: the generation stopped at its next step */
        pthread_mutex_lock(&s->mu);
        s->abandoned_plain++;
        pthread_mutex_unlock(&s->mu);
        log_info("%s %s: abandoned by the client after %d steps, %.3f s", endpoint, j->id, j->r.steps,
                 j->r.seconds);
        http_reply_text(c, 499, "text/plain", "", 0); /* never read: the connection is gone */
    } else if (j->r.status) {
        generation_error(&e, &j->r);
        reply_error(s, c, endpoint, &e);
        log_warn("%s %s: failed (%d): %s", endpoint, j->id, j->r.status, e.message);
    } else {
        json_t *lp = j->rq.logprobs ? oai_logprobs_take(&j->lp) : NULL;
        json_t *resp = oai_response_json(&j->rq, j->id, j->created, &j->r, lp);
        if (resp && !j->rq.strategy[0])
            json_object_set_new(json_object_get(resp, "ensemble"), "strategy",
                                job_strategy(j) ? json_string(job_strategy(j)) : json_null());
        cors(c);
        if (resp) {
            http_reply_json(c, 200, resp);
            count_request(s, endpoint, 200);
        } else {
            oai_fail(&e, 500, NULL, NULL, "out of memory building the response");
            reply_error(s, c, endpoint, &e);
        }
        log_info("%s %s: done, %d steps, %s, %.3f s", endpoint, j->id, j->r.steps,
                 j->r.finish_reason ? j->r.finish_reason : "stop", j->r.seconds);
    }
    in_flight(s, -1);
    job_free(j);
}

/* ---- the other routes ------------------------------------------------------------ */

static json_t *model_obj(api_server *s, const char *id, const char *kind) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", id, "object", "model", "created",
                     (json_int_t)s->started, "owned_by", "consort", "consort_kind", kind);
}

/* A member's model object: its kind, model and whether its masses are
 * exact (a llama-server member's come from a top-n list: approximate). */
static json_t *member_obj(api_server *s, size_t i) {
    json_t *m = model_obj(s, s->names[i], "member");
    const char *kind = "consort-worker", *model = "";
    int exact = 1;
    if (s->be.member_describe) s->be.member_describe(s->be.ctx, i, &kind, &model, &exact);
    if (m) {
        json_object_set_new(m, "member_kind", json_string(kind ? kind : ""));
        json_object_set_new(m, "member_model", json_string(model ? model : ""));
        json_object_set_new(m, "exact", json_boolean(exact));
    }
    return m;
}

/* The generation strategies of the registry, "solo:NAME" with its placeholder. */
static json_t *strategies_json(void) {
    json_t *a = json_array();
    for (size_t i = 0; i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        if (!sreg_accepts(e, SREG_GENERATION)) continue;
        json_array_append_new(a, e->param ? json_sprintf("%s:%s", e->name, e->param) : json_string(e->name));
    }
    return a;
}

static void handle_models(api_server *s, http_conn *c, const char *path) {
    cors(c);
    if (strcmp(path, "/v1/models") == 0) {
        json_t *data = json_array();
        json_t *ens = model_obj(s, s->model_id, "ensemble");
        if (ens) {
            json_t *mem = json_array();
            for (size_t i = 0; i < s->n_names; i++) json_array_append_new(mem, json_string(s->names[i]));
            json_object_set_new(ens, "members", mem);
            json_object_set_new(ens, "strategy", json_string(s->strategy[0] ? s->strategy : "mixture"));
            json_object_set_new(ens, "strategies", strategies_json());
        }
        json_array_append_new(data, ens);
        for (size_t i = 0; i < s->n_names; i++) {
            json_t *m = member_obj(s, i);
            if (m) json_object_set_new(m, "up", json_boolean(member_up(s, i)));
            json_array_append_new(data, m);
        }
        http_reply_json(c, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
        count_request(s, "/v1/models", 200);
        return;
    }
    const char *id = path + strlen("/v1/models/");
    if (strcmp(id, s->model_id) == 0) {
        http_reply_json(c, 200, model_obj(s, id, "ensemble"));
        count_request(s, "/v1/models", 200);
        return;
    }
    for (size_t i = 0; i < s->n_names; i++)
        if (strcmp(id, s->names[i]) == 0) {
            http_reply_json(c, 200, member_obj(s, i));
            count_request(s, "/v1/models", 200);
            return;
        }
    oai_error e;
    oai_fail(&e, 404, "model", "model_not_found", "The model '%s' does not exist.", id);
    reply_error(s, c, "/v1/models", &e);
}

/* 200 only when every member answers: a load balancer takes the 503 of a
 * degraded ensemble (or of a draining server) as "not ready". */
static void handle_health(api_server *s, http_conn *c) {
    json_t *mem = json_array(), *down = json_array();
    int up = 0;
    for (size_t i = 0; i < s->n_names; i++) {
        int u = s->be.member_check ? s->be.member_check(s->be.ctx, i) : member_up(s, i);
        up += u;
        json_array_append_new(mem, json_pack("{s:s, s:b}", "name", s->names[i], "up", u));
        if (!u) json_array_append_new(down, json_string(s->names[i]));
    }
    const char *status = is_closing(s) ? "shutting_down"
                         : up == (int)s->n_names ? "ok" : up > 0 ? "degraded" : "unavailable";
    int st = !strcmp(status, "ok") ? 200 : 503;
    cors(c);
    if (st == 503) http_add_header(c, "Retry-After", API_RETRY_AFTER_SHUTDOWN);
    http_reply_json(c, (unsigned)st,
                    json_pack("{s:s, s:i, s:i, s:o, s:o}", "status", status, "members_up", up,
                              "members_total", (int)s->n_names, "members_down", down, "members", mem));
    count_request(s, "/health", st);
}

/* The /metrics page into b (under s->mu); 0, or -1 when out of memory. */
static int write_metrics(api_server *s, const int *up, sbuf *b) {
    char status[16];
    int bad = prom_family(b, "consort_requests_total", "counter",
                          "HTTP requests answered, by endpoint and status.");
    for (size_t i = 0; i < s->n_rows; i++) {
        snprintf(status, sizeof status, "%d", s->rows[i].status);
        prom_label l[] = {{"endpoint", s->rows[i].endpoint}, {"status", status}};
        bad |= prom_sample_u(b, "consort_requests_total", l, 2, s->rows[i].n);
    }
    bad |= prom_gauge(b, "consort_requests_in_flight", "Generation requests running now.", s->in_flight);
    bad |= prom_gauge(b, "consort_requests_queued", "Generation requests waiting for a turn (--parallel).",
                      s->queued);
    bad |= prom_gauge(b, "consort_parallel_limit", "Generations allowed at once (0: no limit).",
                      s->max_parallel);
    bad |= prom_counter(b, "consort_steps_total", "Generation steps (committed candidates).", s->steps);
    bad |= prom_counter(b, "consort_speculative_drafted_total",
                        "Drafted steps the members were asked for (speculative steps).", s->spec_drafted);
    bad |= prom_counter(b, "consort_speculative_accepted_total",
                        "Steps decided from drafted answers, without a round trip (speculative steps).",
                        s->spec_accepted);
    bad |= prom_counter(b, "consort_prompt_tokens_total", "Prompt tokens (max over members) of finished requests.",
                        s->prompt_tokens);
    bad |= prom_counter(b, "consort_completion_tokens_total", "Completion tokens (steps) of finished requests.",
                        s->completion_tokens);
    bad |= prom_counter(b, "consort_stream_disconnects_total", "Streams whose client went away early.",
                        s->disconnects);
    bad |= prom_counter(b, "consort_abandoned_requests_total",
                        "Plain (non-streamed) requests whose client went away; stopped at the next step.",
                        s->abandoned_plain);
    bad |= prom_counter(b, "consort_queue_full_total", "Requests refused with 429 because the line was full.",
                        s->busy_rejects);
    bad |= prom_counter(b, "consort_queue_timeouts_total",
                        "Requests whose deadline passed while they waited in line (503).", s->queue_timeouts);
    bad |= prom_histogram(b, "consort_step_seconds",
                          "Time between the engine's text chunks (one chunk is normally one step).",
                          &s->step_hist);
    bad |= prom_family(b, "consort_member_up", "gauge", "Whether a member is usable now (1) or down (0).");
    for (size_t i = 0; i < s->n_names; i++) {
        prom_label l[] = {{"member", s->names[i]}};
        bad |= prom_sample_i(b, "consort_member_up", l, 1, up[i]);
    }
    bad |= prom_family(b, "consort_member_failures_total", "counter",
                       "Requests during which a member was dropped.");
    for (size_t i = 0; i < s->n_names; i++) {
        prom_label l[] = {{"member", s->names[i]}};
        bad |= prom_sample_u(b, "consort_member_failures_total", l, 1, s->member_failures[i]);
    }
    return bad;
}

static void handle_metrics(api_server *s, http_conn *c) {
    int up[CONSORT_MAX_MEMBERS];
    for (size_t i = 0; i < s->n_names; i++) up[i] = member_up(s, i);
    sbuf b = {0};
    pthread_mutex_lock(&s->mu);
    int bad = write_metrics(s, up, &b);
    pthread_mutex_unlock(&s->mu);
    if (bad) {
        sb_free(&b);
        http_error(c, 500, "server_error", NULL, "out of memory");
        count_request(s, "/metrics", 500);
        return;
    }
    http_reply_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n);
    sb_free(&b);
    count_request(s, "/metrics", 200);
}

/* Constant-time comparison of "Bearer KEY" with the server's key. */
static int key_ok(const api_server *s, const char *auth) {
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
    const char *k = auth + 7;
    while (*k == ' ') k++;
    return http_token_equal(s->api_key, k);
}

static void route(http_conn *c, const http_request *req, void *user) {
    api_server *s = user;
    const char *p = req->path;
    const char *m = req->method;
    oai_error e;
    if (strcmp(m, "OPTIONS") == 0) { /* CORS preflight */
        cors(c);
        http_add_header(c, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        http_add_header(c, "Access-Control-Allow-Headers", "*");
        http_add_header(c, "Access-Control-Max-Age", "86400");
        http_reply_text(c, 204, "text/plain", "", 0);
        return;
    }
    enum { R_NONE, R_GEN, R_MODELS, R_HEALTH, R_METRICS } kind = R_NONE;
    const char *endpoint = "other";
    oai_endpoint ep = OAI_COMPLETIONS;
    if (!strcmp(p, "/v1/completions") || !strcmp(p, "/completions")) {
        kind = R_GEN, endpoint = "/v1/completions";
    } else if (!strcmp(p, "/v1/chat/completions") || !strcmp(p, "/chat/completions")) {
        kind = R_GEN, endpoint = "/v1/chat/completions", ep = OAI_CHAT;
    } else if (!strcmp(p, "/v1/models") || !strncmp(p, "/v1/models/", 11) || !strcmp(p, "/models")) {
        kind = R_MODELS, endpoint = "/v1/models";
    } else if (!strcmp(p, "/health") || !strcmp(p, "/v1/health")) {
        kind = R_HEALTH, endpoint = "/health";
    } else if (!strcmp(p, "/metrics")) {
        kind = R_METRICS, endpoint = "/metrics";
    }
    if (kind == R_NONE) {
        oai_fail(&e, 404, NULL, "unknown_url", "Unknown request URL: %s %s.", m, p);
        reply_error(s, c, endpoint, &e);
        return;
    }
    int needs_key = kind == R_GEN || kind == R_MODELS || (kind == R_METRICS && !s->metrics_public);
    if (s->api_key && needs_key && !key_ok(s, http_header(c, "Authorization"))) {
        http_add_header(c, "WWW-Authenticate", "Bearer");
        oai_fail(&e, 401, NULL, "invalid_api_key",
                 "Incorrect or missing API key: send \"Authorization: Bearer KEY\" with the "
                 "key the server was started with.");
        reply_error(s, c, endpoint, &e);
        return;
    }
    int post = kind == R_GEN;
    if (strcmp(m, post ? "POST" : "GET") != 0 && !(!post && strcmp(m, "HEAD") == 0)) {
        http_add_header(c, "Allow", post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
        oai_fail(&e, 405, NULL, "method_not_allowed", "Method %s is not allowed on %s (use %s).",
                 m, p, post ? "POST" : "GET");
        reply_error(s, c, endpoint, &e);
        return;
    }
    switch (kind) {
    case R_GEN: handle_generate(s, c, req, ep, endpoint); break;
    case R_MODELS: handle_models(s, c, !strcmp(p, "/models") ? "/v1/models" : p); break;
    case R_HEALTH: handle_health(s, c); break;
    default: handle_metrics(s, c); break;
    }
}

/* ---- lifecycle -------------------------------------------------------------------- */

api_server *api_start(const api_config *cfg, const api_backend *be, char *err, size_t errlen) {
    if (!be || !be->generate) {
        snprintf(err, errlen, "api_start: no generation backend");
        return NULL;
    }
    api_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->be = *be;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->turn, NULL);
    prom_hist_init(&s->step_hist, api_buckets, sizeof api_buckets / sizeof *api_buckets);
    s->max_parallel = cfg->max_parallel > 0 ? cfg->max_parallel : 0;
    s->queue_limit = cfg->queue_limit > 0 ? cfg->queue_limit : cfg->queue_limit < 0 ? -1 : API_DEFAULT_QUEUE;
    s->request_timeout = cfg->request_timeout > 0 ? cfg->request_timeout
                         : cfg->request_timeout < 0 ? 0 : API_DEFAULT_REQUEST_TIMEOUT;
    s->metrics_public = cfg->metrics_public;
    snprintf(s->model_id, sizeof s->model_id, "%s",
             cfg->model_id && cfg->model_id[0] ? cfg->model_id : "consort");
    snprintf(s->strategy, sizeof s->strategy, "%s", cfg->strategy ? cfg->strategy : "");
    s->n_names = be->n_members ? be->n_members(be->ctx) : 0;
    if (s->n_names > CONSORT_MAX_MEMBERS) s->n_names = CONSORT_MAX_MEMBERS;
    for (size_t i = 0; i < s->n_names; i++) {
        const char *n = be->member_name ? be->member_name(be->ctx, i) : NULL;
        s->names[i] = n ? n : "?";
    }
    if (cfg->api_key && cfg->api_key[0] && !(s->api_key = strdup(cfg->api_key))) {
        snprintf(err, errlen, "out of memory");
        pthread_cond_destroy(&s->turn);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    s->ocfg.model_id = s->model_id;
    s->ocfg.member_names = s->n_names ? s->names : NULL;
    s->ocfg.n_members = s->n_names;
    s->ocfg.default_max_tokens = cfg->default_max_tokens;
    s->ocfg.max_tokens_limit = cfg->max_tokens_limit;
    s->started = (long long)time(NULL);
    http_server_opts o = {0};
    o.host = cfg->host ? cfg->host : "127.0.0.1";
    o.port = cfg->port;
    o.conn_limit = cfg->conn_limit;
    o.per_ip_limit = cfg->per_ip_limit;
    o.idle_timeout = cfg->idle_timeout;
    o.read_timeout = cfg->read_timeout;
    o.max_body = cfg->max_body;
    o.tls_cert_file = cfg->tls_cert_file;
    o.tls_key_file = cfg->tls_key_file;
    o.name = "consort";
    s->http = http_server_start(&o, route, s, err, errlen);
    if (!s->http) {
        free(s->api_key);
        pthread_cond_destroy(&s->turn);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

int api_port(const api_server *s) { return s ? http_server_port(s->http) : -1; }

/* Waits (polling) until no generation runs, none waits and every stream has
 * ended, or until `until` (clock_mono_s). 1 when idle. */
static int wait_idle(api_server *s, double until) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int idle = s->in_flight == 0 && s->streams_open == 0 && s->queued == 0 && s->running == 0;
        pthread_mutex_unlock(&s->mu);
        if (idle) return 1;
        if (clock_mono_s() >= until) return 0;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void api_drain(api_server *s, double timeout) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    __atomic_store_n(&s->draining, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&s->turn); /* those in line answer 503 now */
    long running = s->in_flight, queued = s->queued;
    pthread_mutex_unlock(&s->mu);
    log_info("consort: draining: %ld generation(s) running, %ld waiting (answered 503); up to %g s", running,
             queued, timeout);
    if (wait_idle(s, clock_mono_s() + (timeout > 0 ? timeout : 0))) return;
    log_warn("consort: drain timeout: stopping the running generations at their next step");
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    if (!wait_idle(s, clock_mono_s() + 10)) log_warn("consort: some generations did not stop within 10 s");
}

void api_stop(api_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&s->turn); /* requests waiting for a turn give up */
    pthread_mutex_unlock(&s->mu);
    http_server_stop(s->http);
    free(s->api_key);
    pthread_cond_destroy(&s->turn);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
