/* tests/unit/engine/test_members.c: opening a member set: connection errors
 * that name the member, --tolerate-down, a missing model file. */
#include "coordinator/engine/members.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static members_config one_member(const char *name, const char *spec) {
    members_config c;
    memset(&c, 0, sizeof c);
    c.n = 1;
    snprintf(c.name[0], sizeof c.name[0], "%s", name);
    snprintf(c.spec[0], sizeof c.spec[0], "%s", spec);
    return c;
}

int main(void) {
    char err[512];
    members_config none;
    memset(&none, 0, sizeof none);
    ok(members_open(&none, err, sizeof err) == NULL && strstr(err, "--member"), "no members is an error");
    ok(members_name_ok("a-b_c.1", 7) && !members_name_ok("bad name", 8) && !members_name_ok("", 0),
       "member names: [A-Za-z0-9_.-]+");

    /* A member that is down: the message names it and its URL. */
    members_config e = one_member("down", "http://127.0.0.1:1");
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
    ok(!members_health(ms, 0, 1), "the health check of a down member fails");
    ok(members_info(ms, 0) == NULL, "a member that never answered has no description");
    proto_score_req q = {"hi", 2, 1};
    members_score_answer a;
    proto_error pe;
    ok(members_score(ms, 0, &q, 1, &a, &pe) < 0 && pe.status == 0 && strstr(pe.message, "'down'"),
       "scoring on a down member: no answer, the message names it");
    members_free(ms);

    /* A model path whose worker cannot be found or whose file is missing. */
    members_config f = one_member("x", "/nonexistent/model.gguf");
    setenv("CONSORT_WORKER", "/bin/true", 1);
    ms = members_open(&f, err, sizeof err);
    ok(!ms && strstr(err, "/nonexistent/model.gguf"), "missing model file is named");
    diag("%s", err);
    return tap_done();
}
