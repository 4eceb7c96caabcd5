/* vocab_align/va_vocab.h: a vocabulary as byte strings, sorted so that every
 * byte prefix x selects a contiguous range of tokens, and the prefix masses
 * built on it (docs/PROTOCOL.md):
 *
 *     T(x) = sum of p(t) over every token t whose bytes start with x
 *
 * Contract:
 *  - Build: va_vocab_create(n), va_vocab_set() for each id (bytes copied;
 *    unset ids have empty bytes), then va_vocab_finalize() once. After that
 *    the object is read-only and safe to share between threads.
 *  - Tokens are ordered by their bytes (unsigned memcmp, a string before its
 *    extensions; ties by id). Tokens starting with x are exactly the sorted
 *    positions [lo, hi) of va_prefix_range(); those equal to x come first.
 *    Empty tokens (control tokens) start with the empty string only.
 *  - va_cumsum() turns a probability vector indexed by token id into
 *    cumulative sums (double, n+1 entries) in sorted order, O(n); then
 *    va_mass() answers T(x) exactly (up to rounding) in O(|x| log n).
 *    T(empty) is the sum of all probabilities. va_mass_lazy() answers from
 *    the probabilities, building the sums only for a wide range.
 */
#ifndef CONSORT_VA_VOCAB_H
#define CONSORT_VA_VOCAB_H

#include <stddef.h>

typedef struct va_vocab va_vocab;

va_vocab *va_vocab_create(int n_tokens);
int va_vocab_set(va_vocab *v, int id, const void *bytes, size_t len); /* 0 or -1 */
int va_vocab_finalize(va_vocab *v);                                   /* 0 or -1 */
void va_vocab_free(va_vocab *v);

int va_vocab_size(const va_vocab *v);
const unsigned char *va_token_bytes(const va_vocab *v, int id, size_t *len);
size_t va_max_token_len(const va_vocab *v);

/* Sorted positions [*lo, *hi) of the tokens whose bytes start with x;
 * returns hi - lo. */
int va_prefix_range(const va_vocab *v, const void *x, size_t n, int *lo, int *hi);
/* Sorted positions of the tokens whose bytes equal x exactly; returns the count. */
int va_exact_range(const va_vocab *v, const void *x, size_t n, int *lo, int *hi);
int va_sorted_id(const va_vocab *v, int pos); /* token id at a sorted position */

void va_cumsum(const va_vocab *v, const float *probs, double *cum /* n+1 */);
double va_mass(const va_vocab *v, const double *cum, const void *x, size_t n);
/* T(x) from the probabilities themselves: summed directly over a range of
 * at most VA_DIRECT_SUM tokens (or any range when cum is NULL), else read
 * from cum, which is filled by va_cumsum on first need (cum[0] = NAN means
 * "not yet"; the caller sets it when probs change). T(empty) = 1. */
#define VA_DIRECT_SUM 512
double va_mass_lazy(const va_vocab *v, const float *probs, double *cum, const void *x, size_t n);

#endif
