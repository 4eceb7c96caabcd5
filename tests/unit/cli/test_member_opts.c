/* tests/unit/cli/test_member_opts.c: the shared member options of every command,
 * and their conversion into the engine's configuration structs. */
#include "coordinator/cli/member_opts.h"
#include "tests/tap.h"

#include <stdio.h>

/* A command's own option, to show the shared ones leave it alone. */
enum { OWN_PROMPT = 1 };
static const opt_spec own[] = {{"prompt", NULL, OPT_VALUE, OWN_PROMPT, "TEXT", "a prompt"}, OPT_SPEC_END};

/* Parses argv (no program name) like a command would: returns how many
 * options members_cli_set took, -1 on the first error (err says why; the
 * loop's own messages go to /dev/null). */
static int parse(members_cli *c, int argc, char **argv, char *err, size_t errlen) {
    char *args[64] = {"test"};
    for (int i = 0; i < argc && i < 62; i++) args[i + 1] = argv[i];
    const opt_spec *const tables[] = {own, members_cli_opts, NULL};
    opt_parser p;
    opt_begin(&p, "test", tables, argc + 1, args);
    const char *v;
    int taken = 0;
    FILE *saved = stderr, *null = fopen("/dev/null", "w");
    stderr = null;
    for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
        if (id == OPT_ERROR) {
            snprintf(err, errlen, "the loop refused it");
            taken = -1;
            break;
        }
        int r = members_cli_set(c, id, v, err, errlen);
        if (r < 0) {
            taken = -1;
            break;
        }
        taken += r;
    }
    stderr = saved;
    fclose(null);
    return taken;
}

int main(void) {
    char err[512];
    members_cli c;
    members_cli_init(&c);
    char *a1[] = {"--member", "a=http://127.0.0.1:1/", "--member=b=models/b.gguf", "--weights", "0.6,0.4",
                  "--strategy=product", "--threads", "2", "--tolerate-down", "--prompt", "x"};
    is_int(parse(&c, 11, a1, err, sizeof err), 6, "six shared options taken, --prompt left to the command");
    is_int(c.n, 2, "two members");
    is_str(c.name[0], "a", "first name");
    is_str(c.spec[0], "http://127.0.0.1:1/", "first spec");
    is_str(c.name[1], "b", "second name (--opt=value form)");
    is_str(c.spec[1], "models/b.gguf", "second spec");
    is_int(c.n_weights, 2, "two weights");
    is_near(c.weights[0], 0.6, 1e-12, "weight 0");
    is_near(c.weights[1], 0.4, 1e-12, "weight 1");
    is_str(c.strategy, "product", "strategy");
    is_int(c.threads, 2, "threads");
    is_int(c.tolerate_down, 1, "flag");
    ok(members_cli_check(&c, err, sizeof err) == 0, "check passes");

    char *ap[] = {"--pool-exponents", "0.7,0.3"};
    is_int(parse(&c, 2, ap, err, sizeof err), 1, "--pool-exponents taken");
    ok(c.n_pool_exponents == 2 && c.pool_exponents[0] == 0.7 && c.pool_exponents[1] == 0.3, "pool exponents read");
    ok(members_cli_check(&c, err, sizeof err) == 0, "two exponents for two members pass the check");
    ensemble_config pec;
    members_cli_to_config(&c, NULL, &pec);
    ok(pec.n_pool_exponents == 2 && pec.pool_exponents[1] == 0.3, "and reach the engine's configuration");
    char *ap3[] = {"--pool-exponents", "1,1,1"};
    parse(&c, 2, ap3, err, sizeof err);
    ok(members_cli_check(&c, err, sizeof err) < 0 && strstr(err, "--pool-exponents has 3 values for 2 members"),
       "three exponents for two members: a clear error");
    c.n_pool_exponents = 0;

    char *a2[] = {"--weights", "auto"};
    is_int(parse(&c, 2, a2, err, sizeof err), 1, "--weights auto");
    ok(c.weights_auto && c.n_weights == 0, "auto weights set");

    const char *bad[][2] = {{"--weights", "0.5,x"}, {"--weights", "-1,2"}, {"--weights", "0,0"},
                            {"--member", "noequals"}, {"--member", "bad name=x"}, {"--member", "a=http://dup"},
                            {"--threads", "0"}, {"--threshold", "2"}, {"--member-k", "999"},
                            {"--pool-exponents", "x"}, {"--pool-exponents", "-1,1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *av[] = {(char *)bad[i][0], (char *)bad[i][1]};
        char what[128];
        snprintf(what, sizeof what, "%s %s is rejected", bad[i][0], bad[i][1]);
        err[0] = 0;
        ok(parse(&c, 2, av, err, sizeof err) < 0 && strstr(err, bad[i][0]) && strstr(err, bad[i][1]), what);
    }
    char *a3[] = {"--strategy"};
    ok(parse(&c, 1, a3, err, sizeof err) < 0, "missing value");
    char *a3b[] = {"-t", "3", "-c", "256", "--ctx-size=128", "--step-timeout", "500ms"};
    is_int(parse(&c, 7, a3b, err, sizeof err), 4, "short names -t and -c, --opt=value, a duration");
    ok(c.threads == 3 && c.ctx == 128 && c.step_timeout == 0.5, "...set threads, the last context size, 0.5 s");
    const char *bad2[][2] = {{"--threads", "2x"}, {"--ctx-size", ""}, {"--step-timeout", "soon"},
                             {"--weights", "1,,2"}, {"--threshold", "nan"}};
    for (size_t i = 0; i < sizeof bad2 / sizeof bad2[0]; i++) {
        char *av[] = {(char *)bad2[i][0], (char *)bad2[i][1]};
        char what[128];
        snprintf(what, sizeof what, "%s '%s' is rejected", bad2[i][0], bad2[i][1]);
        ok(parse(&c, 2, av, err, sizeof err) < 0, what);
    }
    ok(members_cli_set(&c, OWN_PROMPT, "x", err, sizeof err) == 0, "an id that is not a member option: 0");

    members_cli d;
    members_cli_init(&d);
    ok(members_cli_check(&d, err, sizeof err) < 0 && strstr(err, "--member"), "no members is an error");
    char *a4[] = {"--member", "a=http://127.0.0.1:1", "--weights", "1,2,3"};
    parse(&d, 4, a4, err, sizeof err);
    ok(members_cli_check(&d, err, sizeof err) < 0 && strstr(err, "3 values for 1"), "weights count mismatch");

    /* --no-round-skip and the conversion into the engine's configs */
    members_cli g;
    members_cli_init(&g);
    char *a7[] = {"--member", "a=http://127.0.0.1:1", "--member", "b=m.gguf", "--strategy", "selective",
                  "--weights", "1,3", "--threshold", "0.7", "--step-timeout", "2.5", "--member-k", "4",
                  "--ctx-size", "512", "--start-timeout", "9", "--no-round-skip"};
    is_int(parse(&g, 19, a7, err, sizeof err), 10, "all shared options consumed");
    members_config mc;
    ensemble_config ec;
    members_cli_to_config(&g, &mc, &ec);
    ok(mc.n == 2 && !strcmp(mc.name[1], "b") && !strcmp(mc.spec[1], "m.gguf"), "members_config: members");
    ok(mc.ctx == 512 && mc.start_timeout == 9 && mc.threads == 0 && !mc.tolerate_down, "members_config: spawning");
    is_str(ec.strategy, "selective", "ensemble_config: strategy");
    ok(ec.n_weights == 2 && ec.weights[1] == 3 && !ec.weights_auto, "ensemble_config: weights");
    ok(ec.threshold == 0.7 && ec.step_timeout == 2.5 && ec.member_k == 4, "ensemble_config: step settings");
    is_int(ec.no_round_skip, 1, "--no-round-skip sets the config field");
    char *a8[] = {"--no-round-skip=1"};
    ok(parse(&g, 1, a8, err, sizeof err) < 0, "--no-round-skip takes no value");
    return tap_done();
}
