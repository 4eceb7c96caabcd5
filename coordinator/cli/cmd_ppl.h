/* coordinator/cli/cmd_ppl.h: the entry points of `consort ppl` and `consort ab`
 * for coordinator/cli/main.c's command table. argv[0] is the command name;
 * options start at argv[1]. Return the process exit status (0 ok, 1
 * failure, 2 usage). docs/EVALUATION.md describes both commands. */
#ifndef CONSORT_CMD_PPL_H
#define CONSORT_CMD_PPL_H

#include "common/limits.h"
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

/* ---- byte_pool (eval_byte_pool.h), one document ------------------------------
 *
 * ev_byte_pool_doc() walks text through the members byte by byte
 * (ensemble_score_bytes; beam > 0: each member's /v1/next_bytes walk over
 * covering tokenizations with that beam, 0: the per-byte step walk) and adds log P(text[i]) under the pool with
 * exponents alpha (one per member; 0: the member takes no part) to *lp.
 * Counts into *st; with rec non-NULL also records every byte for tuning.
 * 0, or -1 with a message. */
typedef struct ensemble ensemble;
typedef struct ev_bpool_tune_set ev_bpool_tune_set;
typedef struct {
    long bytes, windows, rounds, decoded;
    double seconds;
    long member_bytes[CONSORT_MAX_MEMBERS];  /* bytes each member answered */
    long deviating[CONSORT_MAX_MEMBERS];     /* of them, masses summing off 1 by > EV_BPOOL_DEVIATION */
} ev_byte_pool_stats;
int ev_byte_pool_doc(ensemble *e, const double *alpha, size_t n_members, int beam, const char *text, size_t len,
                     double *lp, ev_byte_pool_stats *st, ev_bpool_tune_set *rec, char *err, size_t errlen);

#endif
