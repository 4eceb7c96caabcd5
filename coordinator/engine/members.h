/* coordinator/engine/members.h: the members of an ensemble, and the command-line
 * options every coordinator command shares (--member, --weights, --strategy).
 *
 * A member is one consort-worker (docs/PROTOCOL.md), either already running
 * (SPEC = http://host:port) or spawned here on loopback from a GGUF file
 * (SPEC = path/to/model.gguf): `consort-worker --model X --port 0 --threads T
 * --name NAME`, found as $CONSORT_WORKER or next to the running executable.
 * A spawned worker is stopped by members_free() (SIGTERM, then SIGKILL after
 * a grace period, always reaped) and, on Linux, also dies with its parent.
 *
 * Typical use in a command (serve, run, generate, ppl, ab):
 *
 *     members_cli cli;
 *     members_cli_init(&cli);
 *     for (int i = 1; i < argc;) {
 *         int n = members_cli_arg(&cli, argc, argv, i, err, sizeof err);
 *         if (n < 0) { fprintf(stderr, "consort: %s\n", err); return 2; }
 *         if (n > 0) { i += n; continue; }
 *         ... the command's own options ...
 *     }
 *     member_set *ms = members_open(&cli, err, sizeof err);  // spawn + connect
 *     if (!ms) { fprintf(stderr, "consort: %s\n", err); return 1; }
 *     ensemble *e = ensemble_new(ms, cli.strategy,
 *                                cli.n_weights ? cli.weights : NULL,
 *                                cli.weights_auto, err, sizeof err);
 *     ...
 *     ensemble_free(e);
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

typedef struct {
    size_t n;                          /* number of --member options */
    char name[MEMBERS_MAX][MEMBERS_NAME_MAX];
    char spec[MEMBERS_MAX][512];       /* URL or .gguf path */
    char strategy[64];                 /* --strategy, "" = mixture */
    double weights[MEMBERS_MAX];       /* --weights a,b,... */
    size_t n_weights;                  /* 0 = not given (equal weights) */
    int weights_auto;                  /* --weights auto */
    double threshold;                  /* --threshold (selective), 0 = default */
    int threads;                       /* --threads for spawned workers, 0 = auto */
    int ctx;                           /* --ctx-size for spawned workers, 0 = worker default */
    double step_timeout;               /* --step-timeout SECONDS per step, 0 = default (30) */
    double start_timeout;              /* --start-timeout SECONDS for spawned workers, 0 = 120 */
    int top_k_members;                 /* --member-k: proposals per member and step, 0 = 1 greedy / 8 sampling */
    int tolerate_down;                 /* --tolerate-down: open even if some members are down */
} members_cli;

void members_cli_init(members_cli *cli);

/* Looks at argv[i]. Returns how many arguments it consumed (1 or 2) when it
 * is a shared option, 0 when it is not one of ours, -1 on a bad value (err
 * says why). Accepts both "--opt VALUE" and "--opt=VALUE". */
int members_cli_arg(members_cli *cli, int argc, char **argv, int i, char *err, size_t errlen);

/* Checks what only makes sense once all options are read (at least one
 * member, weights count = member count, ...). 0 ok, -1 with err. */
int members_cli_check(const members_cli *cli, char *err, size_t errlen);

/* The help text for the shared options (one option per line, indented). */
extern const char members_cli_help[];

/* Spawns local workers, connects to every member (GET /v1/info, protocol
 * check). NULL with err on failure (nothing left running). */
member_set *members_open(const members_cli *cli, char *err, size_t errlen);

/* Lower level: an empty set, add members one by one, then connect. */
member_set *members_new(void);
int members_add(member_set *ms, const char *name, const char *spec, char *err, size_t errlen);
int members_connect(member_set *ms, const members_cli *opts, char *err, size_t errlen);

/* Stops spawned workers, frees everything. NULL is fine. */
void members_free(member_set *ms);

size_t members_count(const member_set *ms);
const char *members_name(const member_set *ms, size_t i);
const char *members_url(const member_set *ms, size_t i);      /* "http://host:port" */
const char *members_model(const member_set *ms, size_t i);    /* spawned .gguf path, or NULL */
const json_t *members_info(const member_set *ms, size_t i);   /* GET /v1/info answer (borrowed) */
int members_index(const member_set *ms, const char *name);    /* -1 if unknown */
const members_cli *members_options(const member_set *ms);     /* options used to open */

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
