/* common/limits.h: limits every layer must agree on.
 *
 * CONSORT_MAX_MEMBERS: the most members one ensemble (or one request's
 * `ensemble.members`, or one `ppl`/`ab` run) may name. The engine keeps
 * per-member arrays of this size, and a candidate's proposers are a 32-bit
 * mask (vocab_align/candidates.h), so it may never exceed 32. Layers size
 * their arrays from it rather than keeping limits of their own.
 */
#ifndef CONSORT_LIMITS_H
#define CONSORT_LIMITS_H

#define CONSORT_MAX_MEMBERS 16

_Static_assert(CONSORT_MAX_MEMBERS >= 1 && CONSORT_MAX_MEMBERS <= 32,
               "a candidate's proposers are a 32-bit mask");

#endif
