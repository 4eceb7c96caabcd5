/* coordinator/engine/members.h: the members of an ensemble.
 *
 * A member is one consort-worker (docs/PROTOCOL.md), either already running
 * (SPEC = http://host:port) or spawned here on loopback from a GGUF file
 * (SPEC = path/to/model.gguf): `consort-worker --model X --port 0 --threads T
 * --name NAME`, found as $CONSORT_WORKER or next to the running executable.
 * A spawned worker is stopped by members_free() (SIGTERM, then SIGKILL after
 * a grace period, always reaped) and, on Linux, also dies with its parent.
 * The command line's shared options live in coordinator/cli/member_opts.h,
 * which turns them into a members_config (and an ensemble_config).
 *
 * Typical use:
 *
 *     members_config cfg = {0};
 *     cfg.n = 1;
 *     snprintf(cfg.name[0], sizeof cfg.name[0], "a");
 *     snprintf(cfg.spec[0], sizeof cfg.spec[0], "http://127.0.0.1:8081");
 *     member_set *ms = members_open(&cfg, err, sizeof err);  // spawn + connect
 *     if (!ms) { fprintf(stderr, "consort: %s\n", err); return 1; }
 *     ...
 *     members_free(ms);
 *
 * Contract:
 *  - Errors are messages that name the member and its URL (or model path);
 *    functions return NULL / -1 and fill err.
 *  - Each member has a kind (member.h: its table of operations, chosen
 *    from its SPEC: llama+URL is a llama-server, openai+URL any
 *    OpenAI-compatible server with a local --tokenizer, docs/MEMBERS.md; any other
 *    SPEC a consort-worker) and a pool of
 *    keep-alive curl handles (curl_pool.h) its calls reuse.
 *  - members_score() is blocking and thread-safe (`consort ppl` and `ab`
 *    score from several threads at once).
 *  - Health: a member marked down (members_mark_down, or a failed call) is
 *    probed again with exponential backoff (0.5 s doubling to 30 s) by
 *    members_usable(); when its health check answers it is used again.
 *  - Member order is the order of --member options; weights follow it.
 *  - Access: every call carries cfg->token as "Authorization: Bearer".
 *    Spawned workers get it through their environment; without one they
 *    get a random 128-bit token generated here (so their loopback ports
 *    are protected too). https:// members are checked against cfg->tls_ca.
 *  - Supervision (cfg->supervise): a thread reaps spawned workers that
 *    died, logs why (exit status or signal), marks the member down and
 *    restarts the worker on the same port with backoff (1 s doubling to
 *    30 s); once it answers its health check the member is up again.
 */
#ifndef CONSORT_MEMBERS_H
#define CONSORT_MEMBERS_H

#include "common/limits.h"
#include "coordinator/engine/curl_pool.h"
#include "coordinator/engine/member.h"
#include "protocol/proto.h"

#include <stddef.h>

typedef struct member_set member_set;

#define MEMBERS_NAME_MAX 64
#define MEMBERS_DEFAULT_NPROBS 512

/* How to open a member set: the members (name and SPEC each, in weight
 * order) and how to start the ones that are .gguf files. The command line
 * fills it (coordinator/cli/member_opts.h); tests fill it directly. */
typedef struct {
    size_t n;
    char name[CONSORT_MAX_MEMBERS][MEMBERS_NAME_MAX];
    char spec[CONSORT_MAX_MEMBERS][512];       /* URL or .gguf path */
    int threads;                       /* threads of each spawned worker, 0 = CPUs / local members */
    int ctx;                           /* context size of spawned workers, 0 = worker default */
    double start_timeout;              /* seconds a spawned worker may take to start, 0 = 120 */
    int tolerate_down;                 /* open even if some members do not answer */
    const char *token;                 /* shared secret sent to every member (Bearer); NULL = none,
                                          and spawned workers then get a random one of their own */
    const char *tls_ca;                /* CA file checking https:// members; NULL = system CAs */
    int supervise;                     /* restart spawned workers that die (serve, run) */
    int nprobs;                        /* top-n list of llama-server members, 0 = MEMBERS_DEFAULT_NPROBS */
    char tokenizer[CONSORT_MAX_MEMBERS][512]; /* local tokenizer file of each member ("" = none;
                                                 openai+ members need one) */
} members_config;

/* 1 if s[0..n) is a valid member name: 1..63 bytes of [A-Za-z0-9_.-]. */
int members_name_ok(const char *s, size_t n);

/* Spawns local workers, connects to every member (GET /v1/info, protocol
 * check). NULL with err on failure (nothing left running). */
member_set *members_open(const members_config *cfg, char *err, size_t errlen);

/* Lower level: an empty set, add members one by one, then connect. */
member_set *members_new(void);
int members_add(member_set *ms, const char *name, const char *spec, char *err, size_t errlen);
/* Uses only the spawning fields of cfg (threads, ctx, start_timeout,
 * tolerate_down); NULL = defaults. */
int members_connect(member_set *ms, const members_config *cfg, char *err, size_t errlen);

/* Stops spawned workers, frees everything. NULL is fine. */
void members_free(member_set *ms);

size_t members_count(const member_set *ms);
/* The top-n list length asked of members that report one (llama-server). */
int members_nprobs(const member_set *ms);
const char *members_name(const member_set *ms, size_t i);
const char *members_url(const member_set *ms, size_t i);      /* "http://host:port" */
const char *members_model(const member_set *ms, size_t i);    /* spawned .gguf path, or NULL */
const proto_info *members_info(const member_set *ms, size_t i); /* its description, NULL before connecting */
int members_index(const member_set *ms, const char *name);    /* -1 if unknown */

/* Blocking score of text on member i (doc_start as the protocol says),
 * deadline timeout_s (0 = 60). 0 with *res filled (the caller releases it
 * with members_score_release), or -1 with err naming the member. */
typedef struct {
    proto_score_res res;
    member_session *s_;
} members_score_answer;
int members_score(member_set *ms, size_t i, const proto_score_req *q, double timeout_s,
                  members_score_answer *out, proto_error *err);
void members_score_release(members_score_answer *a);

/* 1 if member i answers its health check within timeout_s (no backoff:
 * a direct probe; a failed probe marks it down). */
int members_health(member_set *ms, size_t i, double timeout_s);

/* Supervision counters: restarts of member i's worker so far. */
int members_restarts(member_set *ms, size_t i);

/* Health with backoff: 1 if the member may be used now. */
int members_usable(member_set *ms, size_t i);
void members_mark_down(member_set *ms, size_t i, const char *why);

/* For the kinds of member (member.h): member i's operations and its
 * keep-alive handle pool. */
const member_ops *members_ops(const member_set *ms, size_t i);
curl_pool *members_pool(member_set *ms, size_t i);
/* Member i's local tokenizer file (--tokenizer NAME=PATH), NULL if none;
 * set before members_connect (members_open does it from cfg->tokenizer). */
int members_set_tokenizer(member_set *ms, size_t i, const char *path, char *err, size_t errlen);
const char *members_tokenizer(const member_set *ms, size_t i);
/* A kind's per-member state (set by its connect, read by its sessions;
 * free_fn runs when it is replaced and in members_free). */
void *members_kind_state(const member_set *ms, size_t i);
void members_set_kind_state(member_set *ms, size_t i, void *state, void (*free_fn)(void *));

#endif
