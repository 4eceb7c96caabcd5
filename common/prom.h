/* common/prom.h: a small writer of the Prometheus text exposition format
 * (version 0.0.4), appending to an sbuf, and a histogram to feed it.
 *
 * What it writes, for name "x":
 *   prom_family(b, "x", "counter", "Things.")   # HELP x Things.
 *                                               # TYPE x counter
 *   prom_sample(b, "x", labels, 2, "7")         x{k="v",s="200"} 7
 *   prom_sample_u / prom_sample_i               the same with the value an
 *                                               unsigned / signed integer
 *   prom_counter(b, "x", "Things.", 7)          the family lines, then x 7
 *   prom_gauge(b, "x", "Level.", -1)            the same, of type gauge
 *   prom_histogram(b, "x", "Latency.", &h)      the family lines, then
 *     x_bucket{le="0.5"} N  (cumulative, one per bound, bounds printed %g)
 *     x_bucket{le="+Inf"} N
 *     x_sum S (printed %.6f)
 *     x_count N
 * Label values are escaped as the format asks (\\, \" and \n); names and
 * label names are the caller's constants and are written as given. A NULL
 * or empty label list writes no braces.
 *
 * prom_hist is plain data with no lock: the owner guards it as it guards
 * its other counters. prom_hist_init() takes the upper bounds (ascending,
 * at most PROM_HIST_MAX, borrowed: they must outlive the histogram);
 * prom_hist_observe(h, v) counts v in the first bucket whose bound is >= v
 * (beyond every bound: the +Inf bucket) and adds it to the sum.
 *
 * Every writer returns 0, or -1 when out of memory; callers may OR the
 * results of a whole page and check once.
 */
#ifndef CONSORT_PROM_H
#define CONSORT_PROM_H

#include "common/sbuf.h"

#include <stddef.h>

#define PROM_HIST_MAX 24

typedef struct { const char *name, *value; } prom_label;

typedef struct {
    const double *bounds;
    size_t n_bounds;
    unsigned long long bucket[PROM_HIST_MAX + 1]; /* last: beyond every bound */
    unsigned long long count;
    double sum;
} prom_hist;

void prom_hist_init(prom_hist *h, const double *bounds, size_t n_bounds);
void prom_hist_observe(prom_hist *h, double v);

int prom_family(sbuf *b, const char *name, const char *type, const char *help);
int prom_sample(sbuf *b, const char *name, const prom_label *labels, size_t n_labels,
                const char *value);
int prom_sample_u(sbuf *b, const char *name, const prom_label *labels, size_t n_labels,
                  unsigned long long v);
int prom_sample_i(sbuf *b, const char *name, const prom_label *labels, size_t n_labels, long long v);
int prom_counter(sbuf *b, const char *name, const char *help, unsigned long long v);
int prom_gauge(sbuf *b, const char *name, const char *help, long long v);
int prom_histogram(sbuf *b, const char *name, const char *help, const prom_hist *h);

#endif
