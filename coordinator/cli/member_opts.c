/* coordinator/cli/member_opts.c: see member_opts.h. */
#include "coordinator/cli/member_opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ids 100..199: a command's own options use smaller ids, the server's 200.. */
const opt_spec members_cli_opts[] = {
    {"member", NULL, OPT_VALUE, MO_MEMBER, "NAME=SPEC",
     "a member: SPEC is http://host:port of a running consort-worker, llama+http://host:port of a "
     "running llama.cpp llama-server, openai+http://host:port/v1 of any OpenAI-compatible server "
     "that returns logprobs (needs --tokenizer), or a .gguf file to run locally (repeat for each "
     "member; order sets weight order)"},
    {"tokenizer", NULL, OPT_VALUE, MO_TOKENIZER, "NAME=PATH",
     "the local tokenizer of openai+ member NAME: a GGUF file of its model (vocabulary only is "
     "read) or its SentencePiece tokenizer.model"},
    {"strategy", NULL, OPT_VALUE, MO_STRATEGY, "S",
     "the strategy (default mixture; the strategies are listed below)"},
    {"weights", NULL, OPT_VALUE, MO_WEIGHTS, "W", "comma-separated weights (one per member) or auto"},
    {"pool-exponents", NULL, OPT_VALUE, MO_POOL_EXPONENTS, "A",
     "pool: comma-separated exponents of the geometric pool, one per member (default 1/M each)"},
    {"threshold", NULL, OPT_VALUE, MO_THRESHOLD, "X", "selective: lead member confidence threshold (0.5)"},
    {"threads", "t", OPT_VALUE, MO_THREADS, "N", "threads of each spawned worker (default: CPUs/members)"},
    {"ctx-size", "c", OPT_VALUE, MO_CTX_SIZE, "N", "context size of spawned workers (worker default)"},
    {"step-timeout", NULL, OPT_VALUE, MO_STEP_TIMEOUT, "SEC", "per-step deadline for member answers (30)"},
    {"start-timeout", NULL, OPT_VALUE, MO_START_TIMEOUT, "SEC", "how long a spawned worker may take to start (120)"},
    {"member-k", NULL, OPT_VALUE, MO_MEMBER_K, "K", "proposals of each member per step (1 greedy, 8 sampling)"},
    {"member-nprobs", NULL, OPT_VALUE, MO_MEMBER_NPROBS, "N",
     "top-n list asked of llama-server and openai+ members per position (512, or the most an "
     "openai+ server accepts of 512, 20, 5; more is closer to exact, slower)"},
    {"tolerate-down", NULL, OPT_FLAG, MO_TOLERATE_DOWN, NULL, "start even if some members do not answer"},
    {"no-round-skip", NULL, OPT_FLAG, MO_NO_ROUND_SKIP, NULL,
     "always ask for every missing mass (for tests: the greedy round skip must not change a text)"},
    {"speculative", NULL, OPT_FLAG, MO_SPECULATIVE, NULL,
     "speculative steps: each member drafts steps along its own proposals, verified in one round trip "
     "(mixture and solo, greedy or sampled; the same text)"},
    {"draft-member", NULL, OPT_VALUE, MO_DRAFT_MEMBER, "NAME",
     "speculative steps (implies --speculative): member NAME drafts, the others check its draft in "
     "one batched decode each (pays when NAME is much faster and agrees with them); at weight 0, "
     "e.g. with --strategy solo:OTHER, NAME only drafts and never decides"},
    {"token-file", NULL, OPT_VALUE, MO_TOKEN_FILE, "FILE",
     "the members' shared secret, sent as \"Authorization: Bearer\" (first line of FILE; default "
     "$CONSORT_TOKEN; spawned workers get it, or a random one)"},
    {"tls-ca", NULL, OPT_VALUE, MO_TLS_CA, "FILE", "CA certificates (PEM) that check https:// members"},
    OPT_SPEC_END};

int cli_read_secret_file(const char *opt, const char *path, char *out, size_t cap, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s '%s': %s", opt, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
        fprintf(stderr, "consort: warning: %s '%s' may be read by other users (chmod 600 it)\n", opt, path);
    char line[MEMBERS_SECRET_MAX + 3];
    int got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    int too_long = got && n == strlen(line) && n > MEMBERS_SECRET_MAX;
    if (!n || too_long || n >= cap) {
        snprintf(err, errlen, "%s '%s': %s", opt, path,
                 n ? "the secret is too long (at most 255 bytes)" : "the first line is empty");
        memset(line, 0, sizeof line);
        return -1;
    }
    memcpy(out, line, n);
    out[n] = 0;
    memset(line, 0, sizeof line);
    return 0;
}

static int set_path(const char *opt, const char *v, char *out, size_t cap, char *err, size_t errlen) {
    if (!*v || strlen(v) >= cap) {
        snprintf(err, errlen, "%s '%s': expected a file name", opt, v);
        return -1;
    }
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

void members_cli_init(members_cli *cli) { memset(cli, 0, sizeof *cli); }

static int parse_weights(members_cli *cli, const char *v, char *err, size_t errlen) {
    if (!strcmp(v, "auto")) {
        cli->weights_auto = 1;
        cli->n_weights = 0;
        return 0;
    }
    double w[CONSORT_MAX_MEMBERS], sum = 0;
    size_t n = 0;
    if (opt_double_list("--weights", v, 0, 1e6, w, CONSORT_MAX_MEMBERS, &n, err, errlen)) {
        size_t k = strlen(err);
        snprintf(err + k, errlen - k, ", or 'auto'");
        return -1;
    }
    for (size_t i = 0; i < n; i++) sum += w[i];
    if (sum <= 0) {
        snprintf(err, errlen, "--weights '%s': at least one weight must be positive", v);
        return -1;
    }
    cli->weights_auto = 0;
    cli->n_weights = n;
    memcpy(cli->weights, w, n * sizeof w[0]);
    return 0;
}

int members_cli_add(members_cli *cli, const char *v, char *err, size_t errlen) {
    const char *eq = strchr(v, '=');
    if (!eq || !members_name_ok(v, (size_t)(eq - v)) || !eq[1]) {
        snprintf(err, errlen, "--member '%s': expected NAME=SPEC (NAME of [A-Za-z0-9_.-], SPEC a URL or .gguf path)", v);
        return -1;
    }
    if (cli->n >= CONSORT_MAX_MEMBERS) {
        snprintf(err, errlen, "too many members (at most %d)", CONSORT_MAX_MEMBERS);
        return -1;
    }
    size_t nl = (size_t)(eq - v);
    for (size_t j = 0; j < cli->n; j++)
        if (strlen(cli->name[j]) == nl && !strncmp(cli->name[j], v, nl)) {
            snprintf(err, errlen, "--member '%s': the name is used twice", v);
            return -1;
        }
    if (strlen(eq + 1) >= sizeof cli->spec[0]) {
        snprintf(err, errlen, "--member '%s': SPEC too long", v);
        return -1;
    }
    memcpy(cli->name[cli->n], v, nl);
    cli->name[cli->n][nl] = 0;
    snprintf(cli->spec[cli->n], sizeof cli->spec[0], "%s", eq + 1);
    cli->n++;
    return 0;
}

/* --tokenizer NAME=PATH (checked against the members in members_cli_check). */
static int add_tokenizer(members_cli *cli, const char *v, char *err, size_t errlen) {
    const char *eq = strchr(v, '=');
    if (!eq || !members_name_ok(v, (size_t)(eq - v)) || !eq[1]) {
        snprintf(err, errlen, "--tokenizer '%s': expected NAME=PATH (NAME a member's name)", v);
        return -1;
    }
    size_t nl = (size_t)(eq - v);
    for (size_t j = 0; j < cli->n_tokenizers; j++)
        if (strlen(cli->tokenizer_name[j]) == nl && !strncmp(cli->tokenizer_name[j], v, nl)) {
            snprintf(err, errlen, "--tokenizer '%s': member %.*s has a tokenizer already", v, (int)nl, v);
            return -1;
        }
    if (cli->n_tokenizers >= CONSORT_MAX_MEMBERS || strlen(eq + 1) >= sizeof cli->tokenizer_path[0]) {
        snprintf(err, errlen, "--tokenizer '%s': too many tokenizers or path too long", v);
        return -1;
    }
    memcpy(cli->tokenizer_name[cli->n_tokenizers], v, nl);
    cli->tokenizer_name[cli->n_tokenizers][nl] = 0;
    snprintf(cli->tokenizer_path[cli->n_tokenizers], sizeof cli->tokenizer_path[0], "%s", eq + 1);
    cli->n_tokenizers++;
    return 0;
}

/* The --tokenizer path of member name, or NULL. */
static const char *tokenizer_of(const members_cli *cli, const char *name) {
    for (size_t j = 0; j < cli->n_tokenizers; j++)
        if (!strcmp(cli->tokenizer_name[j], name)) return cli->tokenizer_path[j];
    return NULL;
}

static int check_tokenizers(const members_cli *cli, char *err, size_t errlen) {
    for (size_t j = 0; j < cli->n_tokenizers; j++) {
        int found = 0;
        for (size_t i = 0; i < cli->n; i++) found |= !strcmp(cli->name[i], cli->tokenizer_name[j]);
        if (!found) {
            snprintf(err, errlen, "--tokenizer %s=...: there is no member named '%s'", cli->tokenizer_name[j],
                     cli->tokenizer_name[j]);
            return -1;
        }
    }
    for (size_t i = 0; i < cli->n; i++) {
        const char *path = tokenizer_of(cli, cli->name[i]);
        if (!path && !strncmp(cli->spec[i], "openai+", 7)) {
            snprintf(err, errlen,
                     "member '%s' is an openai+ member: give its tokenizer with --tokenizer %s=PATH "
                     "(a GGUF file of its model, or its SentencePiece tokenizer.model)",
                     cli->name[i], cli->name[i]);
            return -1;
        }
        if (path && access(path, R_OK)) {
            snprintf(err, errlen, "--tokenizer %s=%s: cannot read the file: %s", cli->name[i], path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int set_strategy(members_cli *cli, const char *v, char *err, size_t errlen) {
    if (!*v || strlen(v) >= sizeof cli->strategy) {
        snprintf(err, errlen, "--strategy '%s': expected a strategy name (see --help)", v);
        return -1;
    }
    snprintf(cli->strategy, sizeof cli->strategy, "%s", v);
    return 0;
}

int members_cli_set(members_cli *cli, int id, const char *v, char *err, size_t errlen) {
    int rc;
    switch (id) {
    case MO_MEMBER: rc = members_cli_add(cli, v, err, errlen); break;
    case MO_STRATEGY: rc = set_strategy(cli, v, err, errlen); break;
    case MO_WEIGHTS: rc = parse_weights(cli, v, err, errlen); break;
    case MO_THRESHOLD: rc = opt_double("--threshold", v, 0, 1, &cli->threshold, err, errlen); break;
    case MO_THREADS: rc = opt_int("--threads", v, 1, 1024, &cli->threads, err, errlen); break;
    case MO_CTX_SIZE: rc = opt_int("--ctx-size", v, 8, 1 << 20, &cli->ctx, err, errlen); break;
    case MO_STEP_TIMEOUT: rc = opt_seconds("--step-timeout", v, 1e-3, 86400, &cli->step_timeout, err, errlen); break;
    case MO_START_TIMEOUT: rc = opt_seconds("--start-timeout", v, 1e-3, 86400, &cli->start_timeout, err, errlen); break;
    case MO_MEMBER_K: rc = opt_int("--member-k", v, 1, 256, &cli->top_k_members, err, errlen); break;
    case MO_MEMBER_NPROBS: rc = opt_int("--member-nprobs", v, 1, 1 << 20, &cli->nprobs, err, errlen); break;
    case MO_TOLERATE_DOWN: cli->tolerate_down = 1; rc = 0; break;
    case MO_NO_ROUND_SKIP: cli->no_round_skip = 1; rc = 0; break;
    case MO_SPECULATIVE: cli->speculative = 1; rc = 0; break;
    case MO_DRAFT_MEMBER:
        rc = *v && strlen(v) < sizeof cli->draft_member ? 0 : -1;
        if (rc) snprintf(err, errlen, "--draft-member '%s': expected a member's name", v);
        else snprintf(cli->draft_member, sizeof cli->draft_member, "%s", v), cli->speculative = 1;
        break;
    case MO_POOL_EXPONENTS:
        rc = opt_double_list("--pool-exponents", v, 0, 1e3, cli->pool_exponents, CONSORT_MAX_MEMBERS,
                             &cli->n_pool_exponents, err, errlen);
        break;
    case MO_TOKEN_FILE: rc = cli_read_secret_file("--token-file", v, cli->token, sizeof cli->token, err, errlen); break;
    case MO_TLS_CA: rc = set_path("--tls-ca", v, cli->tls_ca, sizeof cli->tls_ca, err, errlen); break;
    case MO_TOKENIZER: rc = add_tokenizer(cli, v, err, errlen); break;
    default: return 0;
    }
    return rc ? -1 : 1;
}

int members_cli_check(const members_cli *cli, char *err, size_t errlen) {
    if (cli->n == 0) {
        snprintf(err, errlen, "no members: give at least one --member NAME=SPEC");
        return -1;
    }
    if (cli->n_weights && cli->n_weights != cli->n) {
        snprintf(err, errlen, "--weights has %zu values for %zu members", cli->n_weights, cli->n);
        return -1;
    }
    if (cli->n_pool_exponents && cli->n_pool_exponents != cli->n) {
        snprintf(err, errlen, "--pool-exponents has %zu values for %zu members", cli->n_pool_exponents, cli->n);
        return -1;
    }
    if (cli->draft_member[0]) {
        size_t i = 0;
        while (i < cli->n && strcmp(cli->name[i], cli->draft_member)) i++;
        if (i == cli->n) {
            snprintf(err, errlen, "--draft-member %s: no member is named so", cli->draft_member);
            return -1;
        }
    }
    return check_tokenizers(cli, err, errlen);
}


void members_cli_to_config(const members_cli *cli, members_config *mc, ensemble_config *ec) {
    if (mc) {
        memset(mc, 0, sizeof *mc);
        mc->n = cli->n;
        memcpy(mc->name, cli->name, sizeof mc->name);
        memcpy(mc->spec, cli->spec, sizeof mc->spec);
        mc->threads = cli->threads;
        mc->ctx = cli->ctx;
        mc->start_timeout = cli->start_timeout;
        mc->tolerate_down = cli->tolerate_down;
        mc->token = cli->token[0] ? cli->token : getenv("CONSORT_TOKEN");
        mc->tls_ca = cli->tls_ca[0] ? cli->tls_ca : NULL;
        mc->nprobs = cli->nprobs;
        for (size_t i = 0; i < cli->n; i++) {
            const char *path = tokenizer_of(cli, cli->name[i]);
            if (path) snprintf(mc->tokenizer[i], sizeof mc->tokenizer[i], "%s", path);
        }
    }
    if (ec) {
        memset(ec, 0, sizeof *ec);
        memcpy(ec->strategy, cli->strategy, sizeof ec->strategy);
        memcpy(ec->weights, cli->weights, sizeof ec->weights);
        ec->n_weights = cli->n_weights;
        ec->weights_auto = cli->weights_auto;
        ec->threshold = cli->threshold;
        ec->step_timeout = cli->step_timeout;
        ec->member_k = cli->top_k_members;
        ec->no_round_skip = cli->no_round_skip;
        ec->speculative = cli->speculative;
        memcpy(ec->draft_member, cli->draft_member, sizeof ec->draft_member);
        memcpy(ec->pool_exponents, cli->pool_exponents, sizeof ec->pool_exponents);
        ec->n_pool_exponents = cli->n_pool_exponents;
    }
}
