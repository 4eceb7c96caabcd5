/* coordinator/cli/cmd_ppl.h: the entry points of `consort ppl` and `consort ab`
 * for coordinator/cli/main.c's command table. argv[0] is the command name;
 * options start at argv[1]. Return the process exit status (0 ok, 1
 * failure, 2 usage). docs/EVALUATION.md describes both commands. */
#ifndef CONSORT_CMD_PPL_H
#define CONSORT_CMD_PPL_H

#include "coordinator/eval/eval_ppl.h"

#include <stddef.h>

typedef struct member_set member_set;

int ev_cmd_ppl(int argc, char **argv);
int ev_cmd_ab(int argc, char **argv);

/* An ev_scorer that calls member i's POST /v1/score (ud must outlive it). */
typedef struct {
    member_set *ms;
    size_t i;
    int *n_ctx, *overlap;
} ev_member_scorer;
void ev_member_scorer_init(ev_scorer *sc, ev_member_scorer *ud, member_set *ms, size_t i);

#endif
