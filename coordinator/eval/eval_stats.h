/* coordinator/eval/eval_stats.h: corpus figures and the paired bootstrap.
 *
 * From a total negative log-likelihood NLL (nats) over B bytes, W words
 * (whitespace-separated) and T tokens:
 *   bits per byte    = NLL / (B ln 2)
 *   byte perplexity  = exp(NLL / B) = 2^(bits per byte)
 *   word perplexity  = exp(NLL / W)   (lm-evaluation-harness's word_perplexity)
 *   token perplexity = exp(NLL / T)   (T = 0: NaN, reported as null)
 * Corpus figures are ratios of sums over documents (not means of per-document
 * ratios), as in lm-evaluation-harness.
 *
 * Paired bootstrap over documents: each of R resamples draws D documents
 * with replacement (the same draw for every strategy, hence paired) and
 * recomputes every strategy's corpus bits per byte and its difference from
 * the reference row (the best single member on the full sample). The 95%
 * interval is the 2.5th and 97.5th percentile of the R values (linear
 * interpolation between order statistics). The draws are the splitmix64
 * stream of common/rng.h started at `seed`, so a run is reproducible.
 */
#ifndef CONSORT_EVAL_STATS_H
#define CONSORT_EVAL_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double bits_per_byte, byte_perplexity, word_perplexity, token_perplexity;
} ev_metrics;

void ev_metrics_compute(double nll, double bytes, double words, double tokens, ev_metrics *out);

/* Percentile (0..100) of the non-NaN values of v[0..n) (v is reordered). */
double ev_percentile(double *v, size_t n, double pct);

/* nll[s * n_docs + d]: strategy s's NLL (nats) on document d; bytes[d].
 * ci[s][0..1] receives the interval of strategy s's bits per byte;
 * diff_ci[s][0..1] the interval of (bpb_s - bpb_ref) (NULL to skip, or
 * ref == (size_t)-1). Returns 0, -1 when out of memory. */
int ev_bootstrap(const double *nll, const double *bytes, size_t n_strat, size_t n_docs,
                 size_t ref, unsigned resamples, uint64_t seed,
                 double (*ci)[2], double (*diff_ci)[2]);

/* The same with a denominator per strategy and unit (ab: each strategy's
 * outputs have their own lengths): num[s * n + i], den[s * n + i]; the
 * ratio is sum num / (sum den ln 2). Rows whose resample has no
 * denominator get NaN for that resample (ignored by the percentiles). */
int ev_bootstrap_rows(const double *num, const double *den, size_t n_strat, size_t n, size_t ref,
                      unsigned resamples, uint64_t seed, double (*ci)[2], double (*diff_ci)[2]);

#endif
