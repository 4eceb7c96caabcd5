/* vocab_align/candidates.h: the coordinator's candidate set for one step.
 *
 * Candidates are byte strings (continuations after the common text G)
 * proposed by members. The set dedupes them, keeps them in insertion order
 * (the order is part of the greedy tie-break rule, see sampler/strategy.h),
 * records which members proposed each (a bit mask), and links each candidate
 * to its nearest proper prefix inside the set (`parent`), which is what the
 * event masses need: the event of c is "the next bytes start with c and with
 * none of c's nearest extensions", mass Q(c) - sum of Q(children).
 *
 * Contract: all storage is owned by the set and reused across vcand_clear()
 * calls (no allocation in steady state). Empty strings are rejected.
 */
#ifndef CONSORT_VCAND_H
#define CONSORT_VCAND_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *bytes;            /* arena: candidate i is bytes + off[i], len[i] bytes */
    size_t bytes_len, bytes_cap;
    size_t *off, *len;
    uint32_t *proposers;    /* bit m: member m proposed it */
    int *parent;            /* nearest proper prefix in the set, -1 none (after vcand_link) */
    size_t n, cap;
} vcand_set;

void vcand_init(vcand_set *cs);
void vcand_free(vcand_set *cs);
void vcand_clear(vcand_set *cs);

/* Index of the string, added if new; proposer bit set when 0 <= member <
 * CONSORT_MAX_MEMBERS (common/limits.h; the mask has 32 bits).
 * -1 for an empty string or out of memory. */
int vcand_add(vcand_set *cs, const void *s, size_t len, int member);
int vcand_find(const vcand_set *cs, const void *s, size_t len);
static inline const char *vcand_str(const vcand_set *cs, size_t i) { return cs->bytes + cs->off[i]; }

/* Computes parent[] for the current set. */
void vcand_link(vcand_set *cs);

/* Carry-over: adds to `next` every candidate of `cs` that strictly extends
 * the committed bytes (c = committed + rest), as `rest`. Returns how many. */
size_t vcand_carry(const vcand_set *cs, const void *committed, size_t clen, vcand_set *next);

#endif
