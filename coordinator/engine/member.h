/* coordinator/engine/member.h: how the engine talks to one member: a small
 * table of operations, one per kind of member.
 *
 * The engine (ensemble*.c, and `consort ppl`/`ab` through members.h) never
 * builds a request body or reads an answer's fields: it fills the protocol's
 * C structs (protocol/proto.h) and hands them to the member's operations.
 * Kinds: a consort-worker (member_worker.c, the member protocol over HTTP)
 * and a llama.cpp llama-server (member_llama.c, docs/MEMBERS.md). Another
 * kind is one new file that implements this table, and one line in
 * members.c that picks it from the member's SPEC; ensemble.c does not change.
 *
 * Asynchronous calls. A step of generation asks every member at once and
 * waits for all of them, with a deadline: the calls of one round go into a
 * member_round (a curl multi handle here: any kind that speaks HTTP adds its
 * transfers to it), member_round_run() performs them concurrently, and each
 * call's answer is then read from its session. One round trip per step.
 *
 *     member_session *s = member_open(ms, i, "cs-1-7-0", step_timeout);
 *     member_round *r = member_round_new();
 *     s->ops->step(s, &req, r);         // queued, nothing sent yet
 *     member_round_run(r);              // every queued call, concurrently
 *     if (s->ops->step_result(s, &res, &err)) ...  // err.status 0: no answer
 *     member_close(s, r);               // deletes the member's session state
 *     member_round_run(r);
 *     member_session_free(s);
 *
 * Contract:
 *  - A session carries at most one call at a time: queue, run the round,
 *    read the result, in that order.
 *  - Results: 0 with the answer decoded (the session owns it), or -1 with
 *    err filled: status 0 when no answer arrived (refused, timeout; the
 *    member is then marked down), else the member's HTTP status and error
 *    code. Messages name the member by name only (they may reach
 *    clients); URLs and transport details go to the log.
 *  - Sessions are used by one thread at a time; the operations themselves
 *    are thread-safe (many requests run at once on one member set).
 */
#ifndef CONSORT_MEMBER_H
#define CONSORT_MEMBER_H

#include "protocol/proto.h"

#include <stddef.h>

typedef struct member_set member_set; /* members.h */
typedef struct member_round member_round;
typedef struct member_session member_session;

typedef struct member_ops {
    const char *kind;   /* "consort-worker" */
    /* Reads the member's description (and checks its protocol version):
     * *info borrows from *keep, which the caller frees with json_decref. */
    int (*connect)(member_set *ms, size_t i, double timeout_s, proto_info *info, json_t **keep,
                   char *err, size_t errlen);
    /* 1 if the member answers its health check within timeout_s. */
    int (*health)(member_set *ms, size_t i, double timeout_s);
    /* A session's private state (nothing is sent yet); NULL out of memory. */
    void *(*open)(member_session *s);
    /* Queue one call into r; -1 out of memory. */
    int (*step)(member_session *s, const proto_step_req *q, member_round *r);
    int (*score)(member_session *s, const proto_score_req *q, member_round *r);
    /* After the round ran: the answer of the call queued last, owned by the
     * session and valid until its next call. */
    int (*step_result)(member_session *s, const proto_step_res **res, proto_error *err);
    int (*score_result)(member_session *s, const proto_score_res **res, proto_error *err);
    /* Queue the deletion of the member's state for this session, if any. */
    void (*close)(member_session *s, member_round *r);
    /* Frees the private state (after the last round that used it). */
    void (*free)(member_session *s);
    /* 1 if the masses are the protocol's exact ones (full distribution);
     * 0 when they are lower bounds from a top-n list (docs/MEMBERS.md). */
    int exact;
    /* The next-byte walk over a whole text (POST /v1/next_bytes); NULL for
     * members that have none (only consort-workers do). */
    int (*next_bytes)(member_session *s, const proto_next_bytes_req *q, member_round *r);
    int (*next_bytes_result)(member_session *s, const proto_next_bytes_res **res, proto_error *err);
} member_ops;

/* One request's session on one member. */
struct member_session {
    const member_ops *ops;
    member_set *ms;
    size_t idx;                        /* the member's index in the set */
    char id[PROTO_SESSION_MAX + 1];    /* the session id sent to the member */
    double timeout_s;                  /* deadline of each call (seconds) */
    double deadline;                   /* the request's end (clock_mono_s), 0 = none: calls
                                          are cut to what is left of it */
    double last_seconds;               /* round-trip time of the latest call */
    void *impl;                        /* the kind's state */
};

/* A session on member i (its kind's operations); NULL out of memory. */
member_session *member_open(member_set *ms, size_t i, const char *id, double timeout_s);
/* Queues the deletion (see close) into r. */
void member_close(member_session *s, member_round *r);
void member_session_free(member_session *s);

/* ---- rounds: concurrent calls ---------------------------------------------- */

member_round *member_round_new(void);
void member_round_free(member_round *r);
/* For a kind's operations: add a curl easy handle (void * = CURL *) to the
 * round; *code receives its CURLcode when the round ran. */
int member_round_add(member_round *r, void *curl_easy, int *code);
/* Performs every queued call at once; returns when all have ended (each
 * call carries its own deadline). Returns the number of calls performed. */
int member_round_run(member_round *r);

/* The table of consort-worker members (member_worker.c). */
extern const member_ops member_worker_ops;
/* The table of llama.cpp llama-server members (member_llama.c; SPEC
 * llama+http://host:port). */
extern const member_ops member_llama_ops;
/* The table of OpenAI-compatible members (member_openai.c; SPEC
 * openai+http://host:port/v1, with a local tokenizer). */
extern const member_ops member_openai_ops;

#endif
