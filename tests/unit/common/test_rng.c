/* common/rng: the seeded streams are pinned (splitmix64's published first
 * outputs for seed 0; xoshiro256** for seed 42 as the sampler drew it before
 * the generator moved to common/, so seeded generations keep their text),
 * uniform's range, and the OS source fills its buffer. */
#include "common/rng.h"
#include "tests/tap.h"

int main(void) {
    uint64_t x = 0;
    ok(rng_splitmix64(&x) == 0xe220a8397b1dcdafULL, "splitmix64(0) first output");
    ok(rng_splitmix64(&x) == 0x6e789e6aa1b965f4ULL, "splitmix64(0) second output");
    ok(rng_splitmix64(&x) == 0x06c45d188009454fULL, "splitmix64(0) third output");

    rng_state r;
    rng_seed(&r, 42);
    ok(rng_next(&r) == 0x15780b2e0c2ec716ULL, "xoshiro256** seed 42, first");
    ok(rng_next(&r) == 0x6104d9866d113a7eULL, "xoshiro256** seed 42, second");
    ok(rng_next(&r) == 0xae17533239e499a1ULL, "xoshiro256** seed 42, third");
    rng_seed(&r, 0);
    is_near(rng_uniform(&r), 0.60126299941790484, 0, "uniform = top 53 bits of the next output");

    rng_state a, b;
    rng_seed(&a, 7);
    rng_seed(&b, 7);
    int same = 1, in_range = 1;
    for (int i = 0; i < 1000; i++) {
        double u = rng_uniform(&a);
        same &= u == rng_uniform(&b);
        in_range &= u >= 0 && u < 1;
    }
    ok(same, "same seed, same stream");
    ok(in_range, "uniform in [0, 1)");

    unsigned char buf[64] = {0}, zero[64] = {0};
    ok(rng_os_bytes(buf, sizeof buf) == 0, "OS random source answers");
    ok(memcmp(buf, zero, sizeof buf) != 0, "OS bytes filled the buffer");
    unsigned char again[64];
    ok(rng_os_bytes(again, sizeof again) == 0 && memcmp(buf, again, sizeof buf) != 0,
       "two OS draws differ");
    ok(rng_os_bytes(buf, 0) == 0, "zero bytes is fine");
    return tap_done();
}
