/* coordinator/cli/main.c: `consort COMMAND ...`. One row per command in the
 * table below (keep it one line each so merges stay trivial). */
#include "coordinator/cli/commands.h"

#include <stdio.h>
#include <string.h>

static const struct { const char *name; int (*run)(int argc, char **argv); const char *what; } commands[] = {
    {"generate", cmd_generate, "generate text once from a prompt and print it"},
    {"serve", cmd_serve, "serve an ensemble through an OpenAI-compatible HTTP API"},
    {"run", cmd_run, "zero-setup: start local workers for model files and serve them"},
    {"ppl", ev_cmd_ppl, "held-out perplexity of members and ensembles across tokenizers (bits per byte, bootstrap CIs)"},
    {"ab", ev_cmd_ab, "compare strategies on prompts: quality, speed, repetition, agreement; writes a report"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: consort COMMAND [options]   (consort COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\n  --help     this text\n  --version  the version\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("consort %s\n", CONSORT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "consort: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
