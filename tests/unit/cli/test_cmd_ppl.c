/* The commands' argument handling, in process: usage errors exit 2 before
 * any worker is started or contacted (no network, no model); numbers are
 * strict; --help and --version exit 0. */
#include "coordinator/cli/commands.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int run(int (*cmd)(int, char **), char **argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    fflush(stdout);
    /* the commands print their errors on stderr; keep the TAP stream clean */
    FILE *saved = stderr;
    FILE *null = fopen("/dev/null", "w");
    stderr = null;
    int rc = cmd(argc, argv);
    stderr = saved;
    fclose(null);
    return rc;
}

int main(void) {
    char *no_file[] = {"ppl", "--member", "a=http://127.0.0.1:9", NULL};
    is_int(run(ev_cmd_ppl, no_file), 2, "ppl without --file: usage error");
    char *no_member[] = {"ppl", "--file", "x.jsonl", NULL};
    is_int(run(ev_cmd_ppl, no_member), 2, "ppl without members: usage error");
    char *bad_unit[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "x", "--unit", "line", NULL};
    is_int(run(ev_cmd_ppl, bad_unit), 2, "unknown unit");
    char *bad_strat[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "x", "--strategies", "solo:zz", NULL};
    is_int(run(ev_cmd_ppl, bad_strat), 2, "strategy naming an unknown member");
    char *gen_only[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "x", "--strategies", "solo:a,min_ppl", NULL};
    is_int(run(ev_cmd_ppl, gen_only), 2, "ppl refuses min_ppl, a generation rule it cannot score");
    char *ev_name[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--member", "b=http://127.0.0.1:9", "--file",
                       "/nonexistent/x.jsonl", "--strategies", "route_entropy,route_prev,product_bound,oracle", NULL};
    is_int(run(ev_cmd_ppl, ev_name), 1, "ppl accepts its evaluation names (then fails on the file)");
    char prompts[] = "/tmp/consort_ab_prompts_XXXXXX";
    int fd = mkstemp(prompts);
    if (fd >= 0) {
        if (write(fd, "Once\n", 5) != 5) diag("cannot write %s", prompts);
        close(fd);
    }
    char *ab_ev[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", prompts, "--strategies",
                     "mixture,route_entropy", NULL};
    is_int(run(ev_cmd_ab, ab_ev), 2, "ab refuses an evaluation-only name before starting any member");
    char *ab_gen[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", prompts, "--strategies",
                      "mixture,selective", NULL};
    is_int(run(ev_cmd_ab, ab_gen), 1, "ab takes generation names (then fails: no member answers)");
    unlink(prompts);
    char *bad_w[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--member", "b=http://127.0.0.1:9",
                     "--weights", "1", "--file", "x", NULL};
    is_int(run(ev_cmd_ppl, bad_w), 2, "wrong number of weights");
    char *bad_opt[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "x", "--frobnicate", "1", NULL};
    is_int(run(ev_cmd_ppl, bad_opt), 2, "unknown option");
    char *missing[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "/nonexistent/x.jsonl", NULL};
    is_int(run(ev_cmd_ppl, missing), 1, "unreadable file: runtime failure");
    char *ab_none[] = {"ab", "--member", "a=http://127.0.0.1:9", NULL};
    is_int(run(ev_cmd_ab, ab_none), 2, "ab without --prompts/--strategies");
    char *ab_judge[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", "p", "--strategies", "solo:a",
                        "--judge", "a=http://127.0.0.1:9", NULL};
    is_int(run(ev_cmd_ab, ab_judge), 2, "the judge must not be a member");
    char *ab_judge2[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", "p", "--strategies", "solo:a",
                         "--judge", "nospec", NULL};
    is_int(run(ev_cmd_ab, ab_judge2), 2, "--judge wants NAME=SPEC");

    /* strict numbers, before any member is contacted (contacting it would be exit 1) */
    char *ab_abc[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", "p", "--strategies", "solo:a",
                      "--max-tokens", "abc", NULL};
    is_int(run(ev_cmd_ab, ab_abc), 2, "ab --max-tokens abc: usage error (was 0 tokens)");
    char *ab_eq[] = {"ab", "--member=a=http://127.0.0.1:9", "--prompts=p", "--strategies=solo:a", "--max-tokens=-1", NULL};
    is_int(run(ev_cmd_ab, ab_eq), 2, "ab --max-tokens=-1: usage error");
    char *ab_seed[] = {"ab", "--member", "a=http://127.0.0.1:9", "--prompts", "p", "--strategies", "solo:a",
                       "--seed", "18446744073709551616", NULL};
    is_int(run(ev_cmd_ab, ab_seed), 2, "ab --seed 2^64: usage error (was wrapped)");
    char *ppl_res[] = {"ppl", "--member", "a=http://127.0.0.1:9", "--file", "x", "--resamples", "10k", NULL};
    is_int(run(ev_cmd_ppl, ppl_res), 2, "ppl --resamples 10k: usage error (was 10)");
    char *gen_seed[] = {"generate", "--member", "a=http://127.0.0.1:9", "--prompt", "x", "--seed", "1e3", NULL};
    is_int(run(cmd_generate, gen_seed), 2, "generate --seed 1e3: usage error");
    char *gen_two[] = {"generate", "--member", "a=http://127.0.0.1:9", "--prompt", "x", "--prompt-file", "y", NULL};
    is_int(run(cmd_generate, gen_two), 2, "generate with --prompt and --prompt-file: usage error");
    char *serve_port[] = {"serve", "--member", "a=http://127.0.0.1:9", "--port", "65536", NULL};
    is_int(run(cmd_serve, serve_port), 2, "serve --port 65536: usage error");
    char *run_np[] = {"run", "-np", "x", NULL};
    is_int(run(cmd_run, run_np), 2, "run -np x: usage error");
    char *serve_abbr[] = {"serve", "--member", "a=http://127.0.0.1:9", "--po", "1", NULL};
    is_int(run(cmd_serve, serve_abbr), 2, "serve --po: an abbreviation is refused");

    /* --help and --version answer 0 (on stdout; sent to /dev/null here) */
    int (*cmds[])(int, char **) = {cmd_generate, cmd_serve, cmd_run, ev_cmd_ppl, ev_cmd_ab};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char *help[] = {"cmd", "--help", NULL}, *version[] = {"cmd", "--version", NULL};
        FILE *saved = stdout;
        stdout = fopen("/dev/null", "w");
        int h = run(cmds[i], help), v = run(cmds[i], version);
        fclose(stdout);
        stdout = saved;
        ok(h == 0 && v == 0, "--help and --version exit 0");
    }
    return tap_done();
}
