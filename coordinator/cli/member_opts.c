/* coordinator/cli/member_opts.c: see member_opts.h. */
#include "coordinator/cli/member_opts.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char members_cli_help[] =
    "  --member NAME=SPEC     a member: SPEC is http://host:port of a running\n"
    "                         consort-worker, or a .gguf file to run locally\n"
    "                         (repeat for each member; order sets weight order)\n"
    "  --strategy S           mixture (default), product, solo:NAME, min_ppl,\n"
    "                         min_ppl_cross, selective\n"
    "  --weights W            comma-separated weights (one per member) or auto\n"
    "  --threshold X          selective: lead member confidence threshold (0.5)\n"
    "  --threads N            threads of each spawned worker (default: CPUs/members)\n"
    "  --ctx-size N           context size of spawned workers (worker default)\n"
    "  --step-timeout SEC     per-step deadline for member answers (30)\n"
    "  --start-timeout SEC    how long a spawned worker may take to start (120)\n"
    "  --member-k K           proposals of each member per step (1 greedy, 8 sampling)\n"
    "  --tolerate-down        start even if some members do not answer\n"
    "  --no-round-skip        always ask for every missing mass (for tests: the\n"
    "                         greedy round skip must not change a text)\n";

void members_cli_init(members_cli *cli) { memset(cli, 0, sizeof *cli); }

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT_MIN || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

static int parse_weights(members_cli *cli, const char *v, char *err, size_t errlen) {
    if (!strcmp(v, "auto")) {
        cli->weights_auto = 1;
        cli->n_weights = 0;
        return 0;
    }
    cli->weights_auto = 0;
    cli->n_weights = 0;
    const char *p = v;
    double sum = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char buf[64];
        if (len == 0 || len >= sizeof buf || cli->n_weights >= MEMBERS_MAX) goto bad;
        memcpy(buf, p, len);
        buf[len] = 0;
        double w;
        if (parse_double(buf, &w) || w < 0) goto bad;
        cli->weights[cli->n_weights++] = w;
        sum += w;
        if (!comma) break;
        p = comma + 1;
    }
    if (sum <= 0) {
        snprintf(err, errlen, "--weights %s: at least one weight must be positive", v);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "--weights %s: expected comma-separated non-negative numbers or 'auto'", v);
    cli->n_weights = 0;
    return -1;
}

int members_cli_arg(members_cli *cli, int argc, char **argv, int i, char *err, size_t errlen) {
    static const struct { const char *name; int has_value; } opts[] = {
        {"--member", 1}, {"--strategy", 1}, {"--weights", 1}, {"--threshold", 1},
        {"--threads", 1}, {"--ctx-size", 1}, {"--step-timeout", 1}, {"--start-timeout", 1},
        {"--member-k", 1}, {"--tolerate-down", 0}, {"--no-round-skip", 0},
    };
    const char *a = argv[i];
    const char *eq = strchr(a, '=');
    size_t alen = eq ? (size_t)(eq - a) : strlen(a);
    int k = -1;
    for (size_t j = 0; j < sizeof opts / sizeof opts[0]; j++)
        if (strlen(opts[j].name) == alen && !strncmp(a, opts[j].name, alen)) k = (int)j;
    if (k < 0) return 0;
    const char *opt = opts[k].name;
    const char *v = NULL;
    int used = 1;
    if (opts[k].has_value) {
        if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[i + 1];
            used = 2;
        } else {
            snprintf(err, errlen, "%s needs a value", opt);
            return -1;
        }
    } else if (eq) {
        snprintf(err, errlen, "%s takes no value", opt);
        return -1;
    }
    if (!strcmp(opt, "--member")) {
        const char *e2 = strchr(v, '=');
        if (!e2 || !members_name_ok(v, (size_t)(e2 - v)) || !e2[1]) {
            snprintf(err, errlen, "--member %s: expected NAME=SPEC (NAME of [A-Za-z0-9_.-], SPEC a URL or .gguf path)", v);
            return -1;
        }
        if (cli->n >= MEMBERS_MAX) {
            snprintf(err, errlen, "too many members (at most %d)", MEMBERS_MAX);
            return -1;
        }
        size_t nl = (size_t)(e2 - v);
        for (size_t j = 0; j < cli->n; j++)
            if (strlen(cli->name[j]) == nl && !strncmp(cli->name[j], v, nl)) {
                snprintf(err, errlen, "--member %s: the name is used twice", v);
                return -1;
            }
        if (strlen(e2 + 1) >= sizeof cli->spec[0]) {
            snprintf(err, errlen, "--member %s: SPEC too long", v);
            return -1;
        }
        memcpy(cli->name[cli->n], v, nl);
        cli->name[cli->n][nl] = 0;
        snprintf(cli->spec[cli->n], sizeof cli->spec[0], "%s", e2 + 1);
        cli->n++;
    } else if (!strcmp(opt, "--strategy")) {
        if (!*v || strlen(v) >= sizeof cli->strategy) {
            snprintf(err, errlen, "--strategy: bad value '%s'", v);
            return -1;
        }
        snprintf(cli->strategy, sizeof cli->strategy, "%s", v);
    } else if (!strcmp(opt, "--weights")) {
        if (parse_weights(cli, v, err, errlen)) return -1;
    } else if (!strcmp(opt, "--threshold")) {
        if (parse_double(v, &cli->threshold) || cli->threshold < 0 || cli->threshold > 1) {
            snprintf(err, errlen, "--threshold %s: expected a number in [0, 1]", v);
            return -1;
        }
    } else if (!strcmp(opt, "--threads")) {
        if (parse_int(v, &cli->threads) || cli->threads < 1 || cli->threads > 1024) {
            snprintf(err, errlen, "--threads %s: expected a positive integer", v);
            return -1;
        }
    } else if (!strcmp(opt, "--ctx-size")) {
        if (parse_int(v, &cli->ctx) || cli->ctx < 1) {
            snprintf(err, errlen, "--ctx-size %s: expected a positive integer", v);
            return -1;
        }
    } else if (!strcmp(opt, "--step-timeout") || !strcmp(opt, "--start-timeout")) {
        double t;
        if (parse_double(v, &t) || t <= 0) {
            snprintf(err, errlen, "%s %s: expected a positive number of seconds", opt, v);
            return -1;
        }
        if (!strcmp(opt, "--step-timeout")) cli->step_timeout = t;
        else cli->start_timeout = t;
    } else if (!strcmp(opt, "--member-k")) {
        if (parse_int(v, &cli->top_k_members) || cli->top_k_members < 1 || cli->top_k_members > 256) {
            snprintf(err, errlen, "--member-k %s: expected an integer in 1..256", v);
            return -1;
        }
    } else if (!strcmp(opt, "--tolerate-down")) {
        cli->tolerate_down = 1;
    } else if (!strcmp(opt, "--no-round-skip")) {
        cli->no_round_skip = 1;
    }
    return used;
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
    return 0;
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
    }
}
