/* coordinator/cli/cmd_run.c: `consort run [A.gguf B.gguf ...]`, the zero-setup
 * default: one local consort-worker per model file (members.h spawns them on
 * loopback), combined and served like `consort serve`. With no model files
 * it runs the project's own models: a.gguf and b.gguf from $CONSORT_MODELS,
 * else from models/ in the repository the executable was built in
 * (build/consort → ../models), else from ./models. */
#include "coordinator/cli/cmd_serve.h"
#include "coordinator/cli/commands.h"
#include "sampler/registry.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A member name from a file name: the base name without .gguf, limited to
 * [A-Za-z0-9_.-] and 40 bytes, made unique within cli by a -2, -3... suffix. */
static void member_name(const members_cli *cli, const char *path, char out[MEMBERS_NAME_MAX]) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t len = strlen(b);
    if (ends_with(b, ".gguf")) len -= 5;
    if (len > 40) len = 40;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = b[i];
        int okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        out[k++] = okc ? c : '_';
    }
    if (k == 0) out[k++] = 'm';
    out[k] = 0;
    char base[48];
    memcpy(base, out, k + 1); /* k <= 40 */
    for (int suffix = 2; suffix < 1000; suffix++) {
        int taken = 0;
        for (size_t i = 0; i < cli->n; i++)
            if (strcmp(cli->name[i], out) == 0) taken = 1;
        if (!taken) return;
        char num[16];
        snprintf(num, sizeof num, "-%d", suffix);
        memcpy(out, base, k);
        memcpy(out + k, num, strlen(num) + 1);
    }
}

/* The directory of the project's own models, or NULL. */
static int models_dir(char *out, size_t n) {
    const char *env = getenv("CONSORT_MODELS");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t r = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (r > 0) {
        exe[r] = 0;
        /* <root>/build/consort (or build-san/, any build dir) → <root>/models */
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash) break;
            *slash = 0;
            char cand[PATH_MAX + 32], probe[PATH_MAX + 48];
            snprintf(cand, sizeof cand, "%s/models", exe);
            snprintf(probe, sizeof probe, "%s/a.gguf", cand);
            if (is_file(probe) && strlen(cand) < n) {
                memcpy(out, cand, strlen(cand) + 1);
                return 0;
            }
        }
    }
    if (is_file("models/a.gguf")) {
        snprintf(out, n, "models");
        return 0;
    }
    return -1;
}

static void run_usage(FILE *f) {
    fprintf(f, "usage: consort run [options] [A.gguf B.gguf ...]\n\n"
               "Zero-setup: starts one local consort-worker per model file on loopback,\n"
               "combines them and serves the OpenAI-compatible API (docs/API.md) like\n"
               "`consort serve`. Without model files it runs the project's own models\n"
               "a.gguf and b.gguf from $CONSORT_MODELS, else from models/ of the\n"
               "repository consort was built in. Member names are the file names\n"
               "without .gguf. SIGINT/SIGTERM stop the server and the workers.\n\n"
               "members and strategy (--member adds more, remote ones too):\n");
    opt_help(f, members_cli_opts);
    fprintf(f, "\nserver:\n");
    opt_help(f, api_serve_options);
    opt_help(f, cli_std_options);
    fprintf(f, "\nexample:\n"
               "  consort run --port 8080 small.gguf other.gguf\n"
               "  curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
               "      -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'\n");
    sreg_fprint_help(f, SREG_GENERATION);
}

/* A model file given as a positional argument becomes --member NAME=FILE. */
static int add_model_file(members_cli *cli, const char *path, char *err, size_t errlen) {
    if (!is_file(path)) {
        snprintf(err, errlen, "no such model file: %s", path);
        return -1;
    }
    char name[MEMBERS_NAME_MAX], spec[MEMBERS_NAME_MAX + 600];
    member_name(cli, path, name);
    snprintf(spec, sizeof spec, "%s=%s", name, path);
    return members_cli_add(cli, spec, err, errlen);
}

int cmd_run(int argc, char **argv) {
    members_cli cli;
    members_cli_init(&cli);
    api_serve_opts o = {0};
    o.port = 8080;
    o.command = "run";
    int rc = api_serve_parse(&cli, &o, run_usage, add_model_file, argc, argv);
    if (rc >= 0) return rc;
    if (cli.n == 0) {
        char dir[PATH_MAX];
        if (models_dir(dir, sizeof dir)) {
            fprintf(stderr, "consort run: no model files given and the project's models were not "
                            "found (set CONSORT_MODELS=DIR holding a.gguf and b.gguf, or run "
                            "`consort run A.gguf B.gguf`)\n");
            return 2;
        }
        const char *own[] = {"a", "b"};
        for (size_t k = 0; k < 2; k++) {
            char path[PATH_MAX + 16], spec[PATH_MAX + 32], err[512];
            snprintf(path, sizeof path, "%s/%s.gguf", dir, own[k]);
            if (!is_file(path)) {
                fprintf(stderr, "consort run: %s is missing (the project's models are a.gguf and "
                                "b.gguf in %s)\n", path, dir);
                return 2;
            }
            snprintf(spec, sizeof spec, "%s=%s", own[k], path);
            if (members_cli_add(&cli, spec, err, sizeof err) < 0) {
                fprintf(stderr, "consort run: %s\n", err);
                return 2;
            }
        }
    }
    return api_serve_members(&cli, &o);
}
