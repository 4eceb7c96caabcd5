/* tests/tap.h: the smallest TAP producer that serves our C tests.
 *
 * Each check prints "ok N - what" or "not ok N - what" (with file:line), and
 * tap_done() prints the plan and returns the exit status, so `prove` counts
 * every single check.  Use:
 *
 *     int main(void) { ok(1 + 1 == 2, "arithmetic"); return tap_done(); }
 */
#ifndef CONSORT_TAP_H
#define CONSORT_TAP_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *file, int line, const char *what) {
    tap_n++;
    if (cond) {
        printf("ok %d - %s\n", tap_n, what);
    } else {
        tap_failed++;
        printf("not ok %d - %s\n#   at %s:%d\n", tap_n, what, file, line);
    }
    fflush(stdout);
    return cond;
}

#define ok(cond, what) tap_ok(!!(cond), __FILE__, __LINE__, (what))
#define is_int(a, b, what) do { long long a_ = (a), b_ = (b); \
    if (!ok(a_ == b_, what)) printf("#   got %lld, want %lld\n", a_, b_); } while (0)
#define is_str(a, b, what) do { const char *a_ = (a), *b_ = (b); \
    if (!ok(a_ && b_ && strcmp(a_, b_) == 0, what)) \
        printf("#   got \"%s\", want \"%s\"\n", a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define is_near(a, b, tol, what) do { double a_ = (a), b_ = (b); \
    if (!ok(fabs(a_ - b_) <= (tol), what)) printf("#   got %.12g, want %.12g (tol %g)\n", a_, b_, (double)(tol)); } while (0)
#define diag(...) do { printf("# "); printf(__VA_ARGS__); printf("\n"); } while (0)

static inline int tap_done(void) {
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
