/* tests/unit/engine/test_members.c: the shared CLI options and connection errors. */
#include "coordinator/engine/members.h"
#include "tests/tap.h"

static int parse(members_cli *c, int argc, char **argv, char *err, size_t errlen) {
    for (int i = 0; i < argc;) {
        int n = members_cli_arg(c, argc, argv, i, err, errlen);
        if (n < 0) return -1;
        if (n == 0) return i; /* index of the first unknown */
        i += n;
    }
    return argc;
}

int main(void) {
    char err[512];
    members_cli c;
    members_cli_init(&c);
    char *a1[] = {"--member", "a=http://127.0.0.1:1/", "--member=b=models/b.gguf", "--weights", "0.6,0.4",
                  "--strategy=product", "--threads", "2", "--tolerate-down", "--prompt", "x"};
    is_int(parse(&c, 11, a1, err, sizeof err), 9, "shared options consumed, --prompt left to the command");
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

    char *a2[] = {"--weights", "auto"};
    is_int(parse(&c, 2, a2, err, sizeof err), 2, "--weights auto");
    ok(c.weights_auto && c.n_weights == 0, "auto weights set");

    const char *bad[][2] = {{"--weights", "0.5,x"}, {"--weights", "-1,2"}, {"--weights", "0,0"},
                            {"--member", "noequals"}, {"--member", "bad name=x"}, {"--member", "a=http://dup"},
                            {"--threads", "0"}, {"--threshold", "2"}, {"--member-k", "999"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *av[] = {(char *)bad[i][0], (char *)bad[i][1]};
        char what[128];
        snprintf(what, sizeof what, "%s %s is rejected", bad[i][0], bad[i][1]);
        err[0] = 0;
        ok(members_cli_arg(&c, 2, av, 0, err, sizeof err) < 0 && err[0], what);
    }
    char *a3[] = {"--strategy"};
    ok(members_cli_arg(&c, 1, a3, 0, err, sizeof err) < 0 && strstr(err, "needs a value"), "missing value");

    members_cli d;
    members_cli_init(&d);
    ok(members_cli_check(&d, err, sizeof err) < 0 && strstr(err, "--member"), "no members is an error");
    char *a4[] = {"--member", "a=http://127.0.0.1:1", "--weights", "1,2,3"};
    parse(&d, 4, a4, err, sizeof err);
    ok(members_cli_check(&d, err, sizeof err) < 0 && strstr(err, "3 values for 1"), "weights count mismatch");

    /* A member that is down: the message names it and its URL. */
    members_cli e;
    members_cli_init(&e);
    char *a5[] = {"--member", "down=http://127.0.0.1:1"};
    parse(&e, 2, a5, err, sizeof err);
    member_set *ms = members_open(&e, err, sizeof err);
    ok(ms == NULL, "open fails for a member that is down");
    diag("%s", err);
    ok(strstr(err, "'down'") && strstr(err, "http://127.0.0.1:1"), "error names the member and URL");

    e.tolerate_down = 1;
    ms = members_open(&e, err, sizeof err);
    ok(ms != NULL, "--tolerate-down opens anyway");
    ok(ms && !members_usable(ms, 0), "the member is not usable");
    is_int(members_index(ms, "down"), 0, "index by name");
    is_int(members_index(ms, "nope"), -1, "unknown name");
    json_t *r = NULL;
    ok(members_call(ms, 0, "GET", "/health", NULL, 1, &r, err, sizeof err) < 0 && !r, "call to a down member fails");
    members_free(ms);

    /* A model path whose worker cannot be found or whose file is missing. */
    members_cli f;
    members_cli_init(&f);
    char *a6[] = {"--member", "x=/nonexistent/model.gguf"};
    parse(&f, 2, a6, err, sizeof err);
    setenv("CONSORT_WORKER", "/bin/true", 1);
    ms = members_open(&f, err, sizeof err);
    ok(!ms && strstr(err, "/nonexistent/model.gguf"), "missing model file is named");
    diag("%s", err);
    return tap_done();
}
