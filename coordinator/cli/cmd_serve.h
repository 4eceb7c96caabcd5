/* coordinator/cli/cmd_serve.h: what `consort serve` and `consort run` share:
 * open the members, build the ensemble, serve the OpenAI-compatible API
 * (api.h) until SIGINT/SIGTERM, then stop everything (spawned workers too).
 */
#ifndef CONSORT_CMD_SERVE_H
#define CONSORT_CMD_SERVE_H

#include "coordinator/cli/member_opts.h"

#include <stdio.h>

typedef struct {
    const char *host;        /* NULL: 127.0.0.1 */
    int port;                /* 0: ephemeral */
    const char *model_id;    /* NULL: "consort" */
    int default_max_tokens;  /* chat requests without max_tokens; 0: 256 */
    int max_tokens_limit;    /* 0: none */
    const char *command;     /* "serve" or "run", for messages */
    char api_key[256];       /* --api-key-file's first line; "": $CONSORT_API_KEY, else none */
    int parallel;            /* generations at once; 0: the fewest slots of any member; -1: no limit */
    int queue;               /* --queue: requests waiting in line; 0: api.h's default; -1: no limit */
    double request_timeout;  /* --request-timeout SEC; 0: api.h's default */
    double drain_timeout;    /* --drain-timeout SEC; 0: api.h's default; <0: none */
    int conn_limit, per_ip_limit, idle_timeout, read_timeout; /* 0: http_server's defaults */
    long long max_body;      /* --max-body BYTES; 0: http_server's default */
    const char *tls_cert, *tls_key;
    int metrics_public;
} api_serve_opts;

/* Returns the process exit status (0 after a clean shutdown, 1 on failure). */
int api_serve_members(const members_cli *cli, const api_serve_opts *o);

/* The server's own options (--host, --port, --model-id, --max-tokens,
 * --max-tokens-limit, -np/--parallel, --api-key-file, the limits and TLS),
 * ids 200.. (common/opt.h). */
enum {
    SO_HOST = 200, SO_PORT, SO_MODEL_ID, SO_MAX_TOKENS, SO_MAX_TOKENS_LIMIT, SO_PARALLEL, SO_API_KEY_FILE,
    SO_QUEUE, SO_REQUEST_TIMEOUT, SO_DRAIN_TIMEOUT, SO_CONN_LIMIT, SO_PER_IP_LIMIT, SO_IDLE_TIMEOUT,
    SO_READ_TIMEOUT, SO_MAX_BODY, SO_TLS_CERT, SO_TLS_KEY, SO_METRICS_PUBLIC
};
extern const opt_spec api_serve_options[];

/* Applies option id with value v: 1 when it is a server option and v is
 * good, 0 when id is not one of them, -1 on a bad value (err says why). */
int api_serve_set(api_serve_opts *o, int id, const char *v, char *err, size_t errlen);

/* The command line of `serve` and `run` (o->command names it): the member
 * options, the server's and --help/--version. add_file, when not NULL,
 * takes positional arguments (run's model files: 0 or -1 with err); else
 * they are refused. Returns -1 to go on, else the exit status (0 after
 * --help/--version, 2 on a usage error, with the message on stderr). */
int api_serve_parse(members_cli *cli, api_serve_opts *o, void (*usage)(FILE *),
                    int (*add_file)(members_cli *cli, const char *path, char *err, size_t errlen),
                    int argc, char **argv);

#endif
