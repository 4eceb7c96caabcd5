/* common/rng.h: the project's random numbers, one generator module.
 *
 * Seeded streams (reproducible on every platform, same seed -> same bits):
 *  - rng_splitmix64(&x): advances the 64-bit state x and returns the next
 *    splitmix64 output (Steele, Lea, Flood 2014). A cheap stream of its own
 *    (the paired bootstrap of eval draws from it) and the seeder below.
 *  - rng_state: xoshiro256** (Blackman, Vigna 2018), seeded by four
 *    splitmix64 outputs of the seed. rng_next() gives 64 bits,
 *    rng_uniform() a double in [0, 1) from the top 53 bits. The sampler
 *    draws from it; its sequences are part of what a seeded generation
 *    promises, so none of these functions may change its output.
 *
 * Unseeded bytes: rng_os_bytes() fills buf from the operating system's
 * random source (getrandom(2) on Linux, arc4random_buf elsewhere), for ids
 * that must not be guessable. It returns 0, or -1 when the source fails.
 *
 * Not thread-safe per state: each user owns its state.
 */
#ifndef CONSORT_RNG_H
#define CONSORT_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct { uint64_t s[4]; } rng_state;

uint64_t rng_splitmix64(uint64_t *x);

void rng_seed(rng_state *r, uint64_t seed);
uint64_t rng_next(rng_state *r);
double rng_uniform(rng_state *r); /* [0, 1), 53 random bits */

int rng_os_bytes(void *buf, size_t n);

#endif
