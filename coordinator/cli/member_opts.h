/* coordinator/cli/member_opts.h: the command-line options that every
 * coordinator command shares (--member, --strategy, --weights, ...), and
 * their conversion into the engine's configuration structs.
 *
 * The engine never sees these options: a command parses them into a
 * members_cli, checks them, then hands members_config (to open the member
 * set) and ensemble_config (to make the ensemble) to the engine.
 *
 * Typical use in a command (serve, run, generate, ppl, ab), with the
 * command's own options in `mine` (common/opt.h):
 *
 *     members_cli cli;
 *     members_cli_init(&cli);
 *     const opt_spec *tables[] = {mine, members_cli_opts, NULL};
 *     opt_parser p;
 *     opt_begin(&p, "consort generate", tables, argc, argv);
 *     for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
 *         if (id == OPT_ERROR) return 2;
 *         int r = members_cli_set(&cli, id, v, err, sizeof err);
 *         if (r < 0) { fprintf(stderr, "consort generate: %s\n", err); return 2; }
 *         if (r > 0) continue;
 *         ... the command's own options ...
 *     }
 *     if (members_cli_check(&cli, err, sizeof err)) { ...; return 2; }
 *     members_config mc;
 *     ensemble_config ec;
 *     members_cli_to_config(&cli, &mc, &ec);
 *     member_set *ms = members_open(&mc, err, sizeof err);  // spawn + connect
 *     ensemble *e = ms ? ensemble_new(ms, &ec, err, sizeof err) : NULL;
 *
 * Contract: errors are messages naming the option and the bad value; the
 * member order is the order of --member options, and weights follow it.
 */
#ifndef CONSORT_MEMBER_OPTS_H
#define CONSORT_MEMBER_OPTS_H

#include "common/limits.h"
#include "common/opt.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/engine/members.h"

#include <stddef.h>

typedef struct {
    size_t n;                          /* number of --member options */
    char name[CONSORT_MAX_MEMBERS][MEMBERS_NAME_MAX];
    char spec[CONSORT_MAX_MEMBERS][512];       /* URL or .gguf path */
    char strategy[64];                 /* --strategy, "" = mixture */
    double weights[CONSORT_MAX_MEMBERS];       /* --weights a,b,... */
    size_t n_weights;                  /* 0 = not given (equal weights) */
    int weights_auto;                  /* --weights auto */
    double threshold;                  /* --threshold (selective), 0 = default */
    int threads;                       /* --threads for spawned workers, 0 = auto */
    int ctx;                           /* --ctx-size for spawned workers, 0 = worker default */
    double step_timeout;               /* --step-timeout SECONDS per step, 0 = default (30) */
    double start_timeout;              /* --start-timeout SECONDS for spawned workers, 0 = 120 */
    int top_k_members;                 /* --member-k: proposals per member and step, 0 = 1 greedy / 8 sampling */
    int tolerate_down;                 /* --tolerate-down: open even if some members are down */
    int nprobs;                        /* --member-nprobs: top-n of llama-server members, 0 = default */
    int no_round_skip;                 /* --no-round-skip: always pay the second round (tests) */
    int speculative;                   /* --speculative: speculative steps by default (mixture/solo, greedy or sampled) */
    char draft_member[64];             /* --draft-member NAME: that member drafts, the others verify; "" = each its own */
    double pool_exponents[CONSORT_MAX_MEMBERS]; /* --pool-exponents a,b,... */
    size_t n_pool_exponents;           /* 0 = not given (1/M each) */
    char token[256];                   /* --token-file's first line; "" = $CONSORT_TOKEN or none */
    char tls_ca[512];                  /* --tls-ca FILE for https:// members; "" = system CAs */
    size_t n_tokenizers;               /* --tokenizer NAME=PATH options */
    char tokenizer_name[CONSORT_MAX_MEMBERS][MEMBERS_NAME_MAX];
    char tokenizer_path[CONSORT_MAX_MEMBERS][512];
} members_cli;

#define MEMBERS_SECRET_MAX 255

/* Reads a secret (a token, an API key) from the first line of path into out
 * (trailing CR/LF stripped; at most MEMBERS_SECRET_MAX bytes). A file that
 * others than its owner may read gets a warning on stderr. 0, or -1 with
 * err naming opt and the file (never the secret). */
int cli_read_secret_file(const char *opt, const char *path, char *out, size_t cap, char *err, size_t errlen);

void members_cli_init(members_cli *cli);

/* The shared options, for opt_begin and opt_help. Their ids are 100..199,
 * so a command's own ids stay below 100 (the server's are 200..). */
enum {
    MO_MEMBER = 100, MO_STRATEGY, MO_WEIGHTS, MO_THRESHOLD, MO_THREADS, MO_CTX_SIZE,
    MO_STEP_TIMEOUT, MO_START_TIMEOUT, MO_MEMBER_K, MO_TOLERATE_DOWN, MO_NO_ROUND_SKIP, MO_SPECULATIVE, MO_DRAFT_MEMBER,
    MO_POOL_EXPONENTS,
    MO_TOKEN_FILE, MO_TLS_CA,
    MO_MEMBER_NPROBS, MO_TOKENIZER
};
extern const opt_spec members_cli_opts[];

/* Applies option id with value v (from opt_next). Returns 1 when id is one
 * of the shared options and v is good, 0 when id is not one of them, -1 on
 * a bad value (err names the option, the value and what is accepted). */
int members_cli_set(members_cli *cli, int id, const char *v, char *err, size_t errlen);

/* Adds a member from "NAME=SPEC" (what --member does): 0, or -1 with err. */
int members_cli_add(members_cli *cli, const char *name_eq_spec, char *err, size_t errlen);

/* Checks what only makes sense once all options are read (at least one
 * member, weights count = member count, every openai+ member has a
 * readable --tokenizer and every --tokenizer names a member, ...). 0 ok,
 * -1 with err. */
int members_cli_check(const members_cli *cli, char *err, size_t errlen);

/* The engine's view of the options: mc for members_open (members and how to
 * spawn them; the token is --token-file's, else $CONSORT_TOKEN, and mc
 * borrows it from cli or the environment), ec for ensemble_new (strategy,
 * weights, step settings). Either may be NULL. */
void members_cli_to_config(const members_cli *cli, members_config *mc, ensemble_config *ec);

#endif
