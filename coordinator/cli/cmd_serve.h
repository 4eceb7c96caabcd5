/* coordinator/cli/cmd_serve.h: what `consort serve` and `consort run` share:
 * open the members, build the ensemble, serve the OpenAI-compatible API
 * (api.h) until SIGINT/SIGTERM, then stop everything (spawned workers too).
 */
#ifndef CONSORT_CMD_SERVE_H
#define CONSORT_CMD_SERVE_H

#include "coordinator/cli/member_opts.h"

typedef struct {
    const char *host;        /* NULL: 127.0.0.1 */
    int port;                /* 0: ephemeral */
    const char *model_id;    /* NULL: "consort" */
    int default_max_tokens;  /* chat requests without max_tokens; 0: 256 */
    int max_tokens_limit;    /* 0: none */
    const char *command;     /* "serve" or "run", for messages */
    const char *api_key;     /* NULL: $CONSORT_API_KEY, else none */
    int parallel;            /* generations at once; 0: the fewest slots of any member; -1: no limit */
} api_serve_opts;

/* Returns the process exit status (0 after a clean shutdown, 1 on failure). */
int api_serve_members(const members_cli *cli, const api_serve_opts *o);

/* Parses the server's own options (--host, --port, --model-id, --max-tokens,
 * --max-tokens-limit, --api-key, --parallel). Returns the number of arguments consumed (1 or 2), 0
 * when argv[i] is not one of them, -1 on a bad value (err says why). */
int api_serve_arg(api_serve_opts *o, int argc, char **argv, int i, char *err, size_t errlen);
extern const char api_serve_help[];

#endif
