/* common/clock: the monotonic clock advances across a sleep, thread CPU time
 * grows with work and not with sleeping, the absolute deadline lies ahead by
 * the asked amount. */
#include "common/clock.h"
#include "tests/tap.h"

#include <unistd.h>

int main(void) {
    double t0 = clock_mono_s(), c0 = clock_thread_cpu_s();
    usleep(50000);
    double t1 = clock_mono_s(), c1 = clock_thread_cpu_s();
    ok(t1 - t0 >= 0.045 && t1 - t0 < 5, "monotonic clock measures a 50 ms sleep");
    ok(c1 - c0 < 0.03, "sleeping costs (almost) no thread CPU time");
    volatile double acc = 0;
    for (long i = 0; i < 20000000L && clock_thread_cpu_s() - c1 < 0.02; i++) acc += (double)i;
    ok(clock_thread_cpu_s() - c1 >= 0.02, "work shows as thread CPU time");

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct timespec d = clock_abs_after(1.75);
    double ahead = (double)(d.tv_sec - now.tv_sec) + 1e-9 * (double)(d.tv_nsec - now.tv_nsec);
    ok(ahead > 1.7 && ahead < 1.85, "deadline 1.75 s ahead");
    ok(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L, "nanoseconds normalised");
    struct timespec p = clock_abs_after(-3);
    double past = (double)(p.tv_sec - now.tv_sec) + 1e-9 * (double)(p.tv_nsec - now.tv_nsec);
    ok(past >= 0 && past < 0.1, "a negative wait means now");
    return tap_done();
}
