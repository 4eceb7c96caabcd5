/* common/clock.c: see clock.h. */
#include "common/clock.h"

static double seconds_of(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double clock_mono_s(void) { return seconds_of(CLOCK_MONOTONIC); }

double clock_thread_cpu_s(void) { return seconds_of(CLOCK_THREAD_CPUTIME_ID); }

struct timespec clock_abs_after(double seconds) {
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    if (seconds < 0) seconds = 0;
    time_t whole = (time_t)seconds;
    ts.tv_sec += whole;
    ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}
