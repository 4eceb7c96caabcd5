/* worker/wk_softmax.h: the worker's softmax over a row of logits.
 *
 * Contract. wk_softmax(logits, n, probs) sets probs[i] = exp(logits[i] - m)
 * / sum_j exp(logits[j] - m), m the largest logit, for n >= 1 (probs may be
 * logits: in place). Every distribution the worker answers from is computed
 * by it, so the worker's numbers agree with each other to the bit.
 *
 * Accuracy: each exp is within about 2 ulp of the true value (a polynomial,
 * vectorised; tests/unit/worker/test_wk_softmax.c checks every
 * probability against a double-precision softmax, relative 1e-6); the
 * largest logit's exp is exactly 1; order is kept: a larger logit never
 * gets a smaller probability (the same test sweeps neighbouring floats);
 * a logit 87 or more below the largest (an exp below about 1.6e-38, which
 * a float holds only as a denormal) gives 0, as -INFINITY does; a NaN
 * logit makes every probability NaN.
 *
 * wk_softmax_scalar is the same computation one element at a time (the
 * reference the test holds the vectorised one to, bit for bit).
 */
#ifndef CONSORT_WK_SOFTMAX_H
#define CONSORT_WK_SOFTMAX_H

void wk_softmax(const float *logits, int n, float *probs);
void wk_softmax_scalar(const float *logits, int n, float *probs);

#endif
