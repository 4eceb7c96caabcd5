/* consort ppl / consort ab argument handling: usage errors exit 2 before
 * any worker is started or contacted (no network, no model). */
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
    return tap_done();
}
