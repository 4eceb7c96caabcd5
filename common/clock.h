/* common/clock.h: the project's clocks, in seconds as doubles.
 *
 * clock_mono_s(): CLOCK_MONOTONIC, for durations and deadlines (never jumps
 * with the wall clock; its zero is arbitrary, so only differences mean
 * anything). clock_thread_cpu_s(): CPU time of the calling thread
 * (CLOCK_THREAD_CPUTIME_ID), for "how much of that was our own work".
 * clock_abs_after(): the CLOCK_REALTIME instant `seconds` from now, the form
 * pthread_cond_timedwait() wants. None of them fails on Linux or macOS; a
 * clock that cannot be read reads as 0.
 */
#ifndef CONSORT_CLOCK_H
#define CONSORT_CLOCK_H

#include <time.h>

double clock_mono_s(void);
double clock_thread_cpu_s(void);
struct timespec clock_abs_after(double seconds);

#endif
