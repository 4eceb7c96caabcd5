/* coordinator/eval/eval_units.h: scoring units shared by members with different
 * tokenizers (docs/EVALUATION.md).
 *
 * Input: one document (its bytes) and, for each member, that member's
 * teacher-forced tokens of the document as /v1/score returns them: byte spans
 * [start, end) that tile the document in order, each with its natural-log
 * probability, the entropy (nats) and the top-1 probability of the predictive
 * distribution at that position.
 *
 * Output: unit boundaries 0 = b[0] < b[1] < ... < b[n] = len, chosen only at
 * positions where EVERY member has a token boundary, so every member's tokens
 * fall wholly inside one unit. A member's log-probability of unit u is the sum
 * of the log-probabilities of its tokens inside u; summed over units it is the
 * member's log-probability of the whole document, exactly.
 *
 *  - EV_UNIT_WORD: a boundary at p (0 < p < len) when all members have a token
 *    boundary at p and byte p is ASCII whitespace (a unit ends just before a
 *    space, so " world" is one unit as with SentencePiece and GPT-2).
 *  - EV_UNIT_TOKEN: every common token boundary.
 *  - EV_UNIT_BYTE: per-byte probabilities inside a token are not in the
 *    token-level scores, so this is the finest partition they allow, the
 *    same as EV_UNIT_TOKEN (with one member: that member's tokens).
 *
 * Tokens of zero length (e.g. a lone SentencePiece "▁" whose space the worker
 * stripped at the start of the document) are counted in the unit that starts
 * at their position (the last unit when at the end of the document).
 *
 * Contract: ev_units_build() returns 0 on success; -1 with a message in err
 * when a member's spans do not tile [0, len) in order (nothing allocated).
 * ev_units_free() releases what a successful build allocated; it is safe on a
 * zeroed struct.
 */
#ifndef CONSORT_EVAL_UNITS_H
#define CONSORT_EVAL_UNITS_H

#include <stddef.h>

typedef struct {
    size_t start, end;  /* byte span in the document */
    double logprob;     /* natural log of p(token | history) */
    double entropy;     /* nats; NaN when unknown */
    double top1;        /* largest probability at this position; NaN when unknown */
} ev_token;

typedef struct {
    const ev_token *tok;
    size_t n;
} ev_member_doc;

typedef enum { EV_UNIT_WORD = 0, EV_UNIT_TOKEN = 1, EV_UNIT_BYTE = 2 } ev_unit_kind;

typedef struct {
    size_t n_units;
    size_t n_members;
    size_t *bounds;    /* n_units + 1 positions */
    double *lp;        /* [m * n_units + u]: member m's log-prob of unit u */
    double *entropy0;  /* [m * n_units + u]: entropy at member m's first token of u */
    double *top1_0;    /* [m * n_units + u]: top-1 probability there */
} ev_units;

int ev_units_build(const char *text, size_t len, const ev_member_doc *members,
                   size_t n_members, ev_unit_kind kind, ev_units *out,
                   char *err, size_t errlen);
void ev_units_free(ev_units *u);

/* "word", "token", "byte" -> kind; -1 when unknown. */
int ev_unit_kind_parse(const char *s);
const char *ev_unit_kind_name(ev_unit_kind k);

/* Whitespace-separated words (maximal runs of non-whitespace bytes), as the
 * word count of lm-evaluation-harness's word perplexity. */
size_t ev_count_words(const char *text, size_t len);

#endif
