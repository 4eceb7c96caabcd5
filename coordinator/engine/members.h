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
 *  - members_call() is blocking, thread-safe, and reuses keep-alive curl
 *    handles (a small pool per member). The ensemble's step calls use the
 *    same pool through members_handle_get/put.
 *  - Health: a member marked down (members_mark_down, or a failed call) is
 *    probed again with exponential backoff (0.5 s doubling to 30 s) by
 *    members_usable(); when /health answers it is used again.
 *  - Member order is the order of --member options; weights follow it.
 */
#ifndef CONSORT_MEMBERS_H
#define CONSORT_MEMBERS_H

#include <jansson.h>
#include <stddef.h>

typedef struct member_set member_set;

#define MEMBERS_MAX 16
#define MEMBERS_NAME_MAX 64

/* How to open a member set: the members (name and SPEC each, in weight
 * order) and how to start the ones that are .gguf files. The command line
 * fills it (coordinator/cli/member_opts.h); tests fill it directly. */
typedef struct {
    size_t n;
    char name[MEMBERS_MAX][MEMBERS_NAME_MAX];
    char spec[MEMBERS_MAX][512];       /* URL or .gguf path */
    int threads;                       /* threads of each spawned worker, 0 = CPUs / local members */
    int ctx;                           /* context size of spawned workers, 0 = worker default */
    double start_timeout;              /* seconds a spawned worker may take to start, 0 = 120 */
    int tolerate_down;                 /* open even if some members do not answer */
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
const char *members_name(const member_set *ms, size_t i);
const char *members_url(const member_set *ms, size_t i);      /* "http://host:port" */
const char *members_model(const member_set *ms, size_t i);    /* spawned .gguf path, or NULL */
const json_t *members_info(const member_set *ms, size_t i);   /* GET /v1/info answer (borrowed) */
int members_index(const member_set *ms, const char *name);    /* -1 if unknown */

/* Blocking JSON call: method "GET", "POST" or "DELETE", path like
 * "/v1/score", body NULL for none, timeout in seconds (0 = 60).
 * Returns the HTTP status (200..599) with *resp set to the parsed body
 * (caller frees; NULL if the body was not JSON), or -1 when no answer
 * arrived (connection refused, timeout: err says which, naming the member). */
int members_call(member_set *ms, size_t i, const char *method, const char *path,
                 const json_t *body, double timeout_s, json_t **resp,
                 char *err, size_t errlen);

/* Health with backoff: 1 if the member may be used now. */
int members_usable(member_set *ms, size_t i);
void members_mark_down(member_set *ms, size_t i, const char *why);

/* Keep-alive curl easy handles (void * = CURL *) for the ensemble's
 * concurrent step calls: get one, use it, put it back. */
void *members_handle_get(member_set *ms, size_t i);
void members_handle_put(member_set *ms, size_t i, void *curl_handle);

#endif
