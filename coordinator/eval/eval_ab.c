/* coordinator/eval/eval_ab.c: see eval_ab.h. */
#include "coordinator/eval/eval_ab.h"

#include "coordinator/eval/eval_report.h"
#include "coordinator/eval/eval_stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

ev_ab *ev_ab_new(size_t P, size_t S, size_t M, size_t K) {
    ev_ab *ab = calloc(1, sizeof *ab);
    if (!ab) return NULL;
    ab->n_prompts = P;
    ab->n_strategies = S;
    ab->n_members = M;
    ab->n_scorers = K;
    ab->prompts = calloc(P ? P : 1, sizeof *ab->prompts);
    ab->strategies = calloc(S ? S : 1, sizeof *ab->strategies);
    ab->scorers = calloc(K ? K : 1, sizeof *ab->scorers);
    ab->out = calloc((P * S) > 0 ? P * S : 1, sizeof *ab->out);
    ab->resamples = 1000;
    if (!ab->prompts || !ab->strategies || !ab->scorers || !ab->out) {
        ev_ab_free(ab);
        return NULL;
    }
    for (size_t i = 0; i < P * S; i++) {
        ev_ab_output *o = &ab->out[i];
        o->step_ms = malloc((M ? M : 1) * sizeof *o->step_ms);
        o->nll = malloc((K ? K : 1) * sizeof *o->nll);
        o->bytes = malloc((K ? K : 1) * sizeof *o->bytes);
        o->steps_won = calloc(M ? M : 1, sizeof *o->steps_won);
        o->bytes_won = calloc(M ? M : 1, sizeof *o->bytes_won);
        if (!o->step_ms || !o->nll || !o->bytes || !o->steps_won || !o->bytes_won) {
            ev_ab_free(ab);
            return NULL;
        }
        for (size_t m = 0; m < M; m++) o->step_ms[m] = NAN;
        for (size_t k = 0; k < K; k++) o->nll[k] = o->bytes[k] = NAN;
    }
    return ab;
}

void ev_ab_free(ev_ab *ab) {
    if (!ab) return;
    if (ab->prompts)
        for (size_t p = 0; p < ab->n_prompts; p++) free(ab->prompts[p]);
    if (ab->out)
        for (size_t i = 0; i < ab->n_prompts * ab->n_strategies; i++) {
            free(ab->out[i].text);
            free(ab->out[i].step_ms);
            free(ab->out[i].nll);
            free(ab->out[i].bytes);
            free(ab->out[i].steps_won);
            free(ab->out[i].bytes_won);
        }
    free(ab->caption);
    free(ab->prompts);
    free(ab->strategies);
    free(ab->scorers);
    free(ab->out);
    free(ab);
}

static int ev_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int ev_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double ev_distinct_n(const char *const *texts, const size_t *lens, size_t n_texts, int n) {
    size_t cap = 16, cnt = 0;
    uint64_t *h = malloc(cap * sizeof *h);
    if (!h || n < 1) {
        free(h);
        return NAN;
    }
    for (size_t t = 0; t < n_texts; t++) {
        const char *s = texts[t];
        size_t len = lens[t];
        /* word spans */
        size_t nw = 0, wcap = 16;
        size_t *ws = malloc(wcap * 2 * sizeof *ws);
        if (!ws) break;
        for (size_t i = 0; i < len;) {
            while (i < len && ev_ws((unsigned char)s[i])) i++;
            if (i >= len) break;
            size_t st = i;
            while (i < len && !ev_ws((unsigned char)s[i])) i++;
            if (nw == wcap) {
                wcap *= 2;
                size_t *nws = realloc(ws, wcap * 2 * sizeof *ws);
                if (!nws) break;
                ws = nws;
            }
            ws[2 * nw] = st;
            ws[2 * nw + 1] = i;
            nw++;
        }
        for (size_t w = 0; w + (size_t)n <= nw; w++) { /* FNV-1a of the n-gram */
            uint64_t x = 1469598103934665603ull;
            for (int k = 0; k < n; k++) {
                for (size_t i = ws[2 * (w + k)]; i < ws[2 * (w + k) + 1]; i++) {
                    x ^= (unsigned char)s[i];
                    x *= 1099511628211ull;
                }
                x ^= 0x100; /* word separator, outside the byte range */
                x *= 1099511628211ull;
            }
            if (cnt == cap) {
                cap *= 2;
                uint64_t *nh = realloc(h, cap * sizeof *h);
                if (!nh) break;
                h = nh;
            }
            h[cnt++] = x;
        }
        free(ws);
    }
    if (!cnt) {
        free(h);
        return NAN;
    }
    qsort(h, cnt, sizeof *h, ev_cmp_u64);
    size_t d = 1;
    for (size_t i = 1; i < cnt; i++) d += h[i] != h[i - 1];
    free(h);
    return (double)d / (double)cnt;
}

size_t ev_common_prefix(const char *a, size_t la, const char *b, size_t lb) {
    size_t i = 0;
    while (i < la && i < lb && a[i] == b[i]) i++;
    return i;
}

void ev_ab_conditional(const ev_token *tok, size_t n, size_t prompt_len, size_t total_len,
                       double *nll, double *bytes) {
    *nll = 0;
    *bytes = 0;
    if (total_len <= prompt_len) return;
    size_t from = total_len;
    for (size_t i = 0; i < n; i++) {
        if (tok[i].end <= prompt_len && !(tok[i].end == prompt_len && tok[i].start == prompt_len)) continue;
        if (tok[i].start < from) from = tok[i].start;
        *nll -= tok[i].logprob;
    }
    *bytes = (double)(total_len - from);
}

/* ---- summary -------------------------------------------------------------- */

typedef struct {
    double *bpb, (*bpb_ci)[2];   /* per scorer */
    double quality, quality_ci[2];
    double bytes_per_s, bps_ci[2];
    double steps_per_s;
    double *step_ms;             /* per member */
    double mean_len, distinct1, distinct2;
    size_t failures;
    int solo;                    /* a solo:NAME strategy */
    double diff, diff_ci[2];     /* quality minus the best solo strategy's, paired interval */
    double *won_steps, *won_bytes; /* per member: share of steps / bytes won */
    double lead_alone;           /* share of steps selective's lead decided alone */
} ev_ab_sum;

/* One output's quality numerator and denominator (nats, bytes): the
 * judge's, else the mean over the members that scored it. */
static void ev_quality_of(const ev_ab *ab, const ev_ab_output *o, double *num, double *den) {
    size_t K = ab->n_scorers, M = ab->n_members;
    *num = *den = 0;
    if (o->status) return;
    size_t k0 = ab->has_judge ? K - 1 : 0, k1 = ab->has_judge ? K : M;
    double a = 0, b = 0;
    size_t c = 0;
    for (size_t k = k0; k < k1; k++)
        if (isfinite(o->nll[k]) && isfinite(o->bytes[k])) {
            a += o->nll[k];
            b += o->bytes[k];
            c++;
        }
    if (c) {
        *num = a / (double)c;
        *den = b / (double)c;
    }
}

static int ev_is_solo(const char *strategy) { return !strncmp(strategy, "solo:", 5); }

/* The best solo strategy (lowest quality figure), or (size_t)-1. */
static size_t ev_best_solo(const ev_ab *ab, const ev_ab_sum *sum) {
    size_t best = (size_t)-1;
    for (size_t s = 0; s < ab->n_strategies; s++)
        if (sum[s].solo && isfinite(sum[s].quality) && (best == (size_t)-1 || sum[s].quality < sum[best].quality))
            best = s;
    return best;
}

/* Paired differences of every strategy's quality from the best solo one. */
static void ev_ab_diffs(const ev_ab *ab, ev_ab_sum *sum) {
    size_t P = ab->n_prompts, S = ab->n_strategies, best = ev_best_solo(ab, sum);
    double *num = calloc(S * P + 1, sizeof *num), *den = calloc(S * P + 1, sizeof *den);
    double (*ci)[2] = calloc(S + 1, sizeof *ci), (*dci)[2] = calloc(S + 1, sizeof *dci);
    for (size_t s = 0; s < S; s++) sum[s].diff = sum[s].diff_ci[0] = sum[s].diff_ci[1] = NAN;
    if (num && den && ci && dci && best != (size_t)-1) {
        for (size_t s = 0; s < S; s++)
            for (size_t p = 0; p < P; p++) ev_quality_of(ab, &ab->out[p * S + s], &num[s * P + p], &den[s * P + p]);
        if (!ev_bootstrap_rows(num, den, S, P, best, ab->resamples, ab->seed + 29, ci, dci))
            for (size_t s = 0; s < S; s++) {
                sum[s].diff = sum[s].quality - sum[best].quality;
                sum[s].diff_ci[0] = dci[s][0];
                sum[s].diff_ci[1] = dci[s][1];
            }
    }
    free(num);
    free(den);
    free(ci);
    free(dci);
}

/* Each member's share of the steps and bytes it won, and selective's lead. */
static void ev_ab_agreement_of(const ev_ab *ab, size_t s, ev_ab_sum *x) {
    size_t P = ab->n_prompts, S = ab->n_strategies, M = ab->n_members;
    double steps = 0, bytes = 0, alone = 0;
    for (size_t p = 0; p < P; p++) {
        const ev_ab_output *o = &ab->out[p * S + s];
        if (o->status) continue;
        steps += o->steps;
        alone += o->lead_alone;
        for (size_t m = 0; m < M; m++) {
            x->won_steps[m] += o->steps_won[m];
            x->won_bytes[m] += o->bytes_won[m];
        }
        bytes += (double)o->len;
    }
    for (size_t m = 0; m < M; m++) {
        x->won_steps[m] = steps > 0 ? x->won_steps[m] / steps : NAN;
        x->won_bytes[m] = bytes > 0 ? x->won_bytes[m] / bytes : NAN;
    }
    x->lead_alone = steps > 0 ? alone / steps : NAN;
}

static void ev_ab_summarize(const ev_ab *ab, ev_ab_sum *sum) {
    size_t P = ab->n_prompts, S = ab->n_strategies, K = ab->n_scorers, M = ab->n_members;
    double *num = calloc(P ? P : 1, sizeof *num), *den = calloc(P ? P : 1, sizeof *den);
    for (size_t s = 0; s < S; s++) {
        ev_ab_sum *x = &sum[s];
        x->bpb = calloc(K ? K : 1, sizeof *x->bpb);
        x->bpb_ci = calloc(K ? K : 1, sizeof *x->bpb_ci);
        x->step_ms = calloc(M ? M : 1, sizeof *x->step_ms);
        x->won_steps = calloc(M ? M : 1, sizeof *x->won_steps);
        x->won_bytes = calloc(M ? M : 1, sizeof *x->won_bytes);
        x->solo = ev_is_solo(ab->strategies[s]);
        if (!num || !den || !x->bpb || !x->bpb_ci || !x->step_ms || !x->won_steps || !x->won_bytes) continue;
        ev_ab_agreement_of(ab, s, x);
        /* per scorer bits per byte */
        for (size_t k = 0; k < K; k++) {
            double tn = 0, tb = 0;
            for (size_t p = 0; p < P; p++) {
                const ev_ab_output *o = &ab->out[p * S + s];
                int okk = !o->status && isfinite(o->nll[k]) && isfinite(o->bytes[k]);
                num[p] = okk ? o->nll[k] : 0;
                den[p] = okk ? o->bytes[k] : 0;
                tn += num[p];
                tb += den[p];
            }
            x->bpb[k] = tb > 0 ? tn / (tb * M_LN2) : NAN;
            double ci[1][2];
            ev_bootstrap(num, den, 1, P, (size_t)-1, ab->resamples, ab->seed + 17 * k, ci, NULL);
            x->bpb_ci[k][0] = ci[0][0];
            x->bpb_ci[k][1] = ci[0][1];
        }
        /* quality: judge, else mean of the members' per-prompt figures */
        {
            double tn = 0, tb = 0;
            for (size_t p = 0; p < P; p++) {
                ev_quality_of(ab, &ab->out[p * S + s], &num[p], &den[p]);
                tn += num[p];
                tb += den[p];
            }
            x->quality = tb > 0 ? tn / (tb * M_LN2) : NAN;
            double ci[1][2];
            ev_bootstrap(num, den, 1, P, (size_t)-1, ab->resamples, ab->seed + 5, ci, NULL);
            x->quality_ci[0] = ci[0][0];
            x->quality_ci[1] = ci[0][1];
        }
        /* speed: bytes/s = sum bytes / sum seconds (bootstrap as a ratio) */
        {
            double tb = 0, ts = 0, tsteps = 0, tlen = 0;
            size_t ok = 0;
            for (size_t p = 0; p < P; p++) {
                const ev_ab_output *o = &ab->out[p * S + s];
                num[p] = den[p] = 0;
                if (o->status) {
                    x->failures++;
                    continue;
                }
                num[p] = (double)o->len * M_LN2; /* ev_bootstrap divides by ln 2 */
                den[p] = o->seconds;
                tb += (double)o->len;
                ts += o->seconds;
                tsteps += o->steps;
                tlen += (double)o->len;
                ok++;
            }
            x->bytes_per_s = ts > 0 ? tb / ts : NAN;
            x->steps_per_s = ts > 0 ? tsteps / ts : NAN;
            x->mean_len = ok ? tlen / (double)ok : NAN;
            double ci[1][2];
            ev_bootstrap(num, den, 1, P, (size_t)-1, ab->resamples, ab->seed + 3, ci, NULL);
            x->bps_ci[0] = ci[0][0];
            x->bps_ci[1] = ci[0][1];
        }
        for (size_t m = 0; m < M; m++) {
            double t = 0;
            size_t c = 0;
            for (size_t p = 0; p < P; p++) {
                const ev_ab_output *o = &ab->out[p * S + s];
                if (!o->status && isfinite(o->step_ms[m])) {
                    t += o->step_ms[m];
                    c++;
                }
            }
            x->step_ms[m] = c ? t / (double)c : NAN;
        }
        const char **texts = calloc(P ? P : 1, sizeof *texts);
        size_t *lens = calloc(P ? P : 1, sizeof *lens);
        size_t nt = 0;
        for (size_t p = 0; texts && lens && p < P; p++) {
            const ev_ab_output *o = &ab->out[p * S + s];
            if (o->status || !o->text) continue;
            texts[nt] = o->text;
            lens[nt++] = o->len;
        }
        x->distinct1 = ev_distinct_n(texts, lens, nt, 1);
        x->distinct2 = ev_distinct_n(texts, lens, nt, 2);
        free(texts);
        free(lens);
    }
    free(num);
    free(den);
    ev_ab_diffs(ab, sum);
}

static void ev_ab_sum_free(ev_ab_sum *sum, size_t S) {
    for (size_t s = 0; s < S; s++) {
        free(sum[s].bpb);
        free(sum[s].bpb_ci);
        free(sum[s].step_ms);
        free(sum[s].won_steps);
        free(sum[s].won_bytes);
    }
    free(sum);
}

static void ev_agreement(const ev_ab *ab, size_t a, size_t b, double *exact, double *prefix) {
    size_t P = ab->n_prompts, S = ab->n_strategies, c = 0;
    double e = 0, f = 0;
    for (size_t p = 0; p < P; p++) {
        const ev_ab_output *x = &ab->out[p * S + a], *y = &ab->out[p * S + b];
        if (x->status || y->status) continue;
        c++;
        size_t cp = ev_common_prefix(x->text ? x->text : "", x->len, y->text ? y->text : "", y->len);
        size_t mx = x->len > y->len ? x->len : y->len;
        e += x->len == y->len && cp == x->len;
        f += mx ? (double)cp / (double)mx : 1.0;
    }
    *exact = c ? e / (double)c : NAN;
    *prefix = c ? f / (double)c : NAN;
}

static json_t *ev_pair2(const double v[2]) {
    json_t *a = json_array();
    json_array_append_new(a, ev_json_num(v[0]));
    json_array_append_new(a, ev_json_num(v[1]));
    return a;
}

static json_t *ev_ab_json_sum(const ev_ab *ab, const ev_ab_sum *sum) {
    size_t P = ab->n_prompts, S = ab->n_strategies, K = ab->n_scorers, M = ab->n_members;
    json_t *o = json_object();
    json_object_set_new(o, "prompts", json_integer((json_int_t)P));
    json_t *set = json_object();
    json_object_set_new(set, "max_tokens", json_integer(ab->max_tokens));
    json_object_set_new(set, "temperature", json_real(ab->temperature));
    char seed[24]; /* a decimal string: JSON readers round integers above 2^53 */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)ab->seed);
    json_object_set_new(set, "seed", ab->has_seed ? json_string(seed) : json_null());
    json_object_set_new(set, "bootstrap_resamples", json_integer(ab->resamples));
    json_object_set_new(o, "settings", set);
    json_t *sc = json_array();
    for (size_t k = 0; k < K; k++) json_array_append_new(sc, json_string(ab->scorers[k]));
    json_object_set_new(o, "scorers", sc);
    json_object_set_new(o, "judge", ab->has_judge ? json_string(ab->scorers[K - 1]) : json_null());
    json_object_set_new(o, "quality_measure",
                        json_string(ab->has_judge ? "bits per byte under the judge"
                                                  : "bits per byte, mean over the ensemble's members"));
    json_t *summary = json_array();
    for (size_t s = 0; s < S; s++) {
        const ev_ab_sum *x = &sum[s];
        json_t *r = json_object();
        json_object_set_new(r, "strategy", json_string(ab->strategies[s]));
        json_object_set_new(r, "kind", json_string(x->solo ? "solo" : "ensemble"));
        json_object_set_new(r, "quality_bits_per_byte", ev_json_num(x->quality));
        json_object_set_new(r, "quality_ci95", ev_pair2(x->quality_ci));
        json_object_set_new(r, "diff_vs_best_solo", ev_json_num(x->diff));
        json_object_set_new(r, "diff_ci95", ev_pair2(x->diff_ci));
        json_t *won = json_object();
        for (size_t m = 0; m < M; m++) {
            json_t *w = json_object();
            json_object_set_new(w, "steps_won", ev_json_num(x->won_steps[m]));
            json_object_set_new(w, "bytes_won", ev_json_num(x->won_bytes[m]));
            json_object_set_new(won, ab->scorers[m], w);
        }
        json_object_set_new(r, "member_agreement", won);
        if (!strcmp(ab->strategies[s], "selective")) json_object_set_new(r, "lead_alone", ev_json_num(x->lead_alone));
        json_t *bs = json_object();
        for (size_t k = 0; k < K; k++) {
            json_t *b = json_object();
            json_object_set_new(b, "bits_per_byte", ev_json_num(x->bpb[k]));
            json_object_set_new(b, "ci95", ev_pair2(x->bpb_ci[k]));
            json_object_set_new(bs, ab->scorers[k], b);
        }
        json_object_set_new(r, "bits_per_byte_under", bs);
        json_object_set_new(r, "bytes_per_s", ev_json_num(x->bytes_per_s));
        json_object_set_new(r, "bytes_per_s_ci95", ev_pair2(x->bps_ci));
        json_object_set_new(r, "steps_per_s", ev_json_num(x->steps_per_s));
        json_t *lat = json_object();
        for (size_t m = 0; m < M; m++) json_object_set_new(lat, ab->scorers[m], ev_json_num(x->step_ms[m]));
        json_object_set_new(r, "mean_step_ms", lat);
        json_object_set_new(r, "mean_length_bytes", ev_json_num(x->mean_len));
        json_object_set_new(r, "distinct_1", ev_json_num(x->distinct1));
        json_object_set_new(r, "distinct_2", ev_json_num(x->distinct2));
        json_object_set_new(r, "failures", json_integer((json_int_t)x->failures));
        json_t *ag = json_object();
        for (size_t t = 0; t < S; t++) {
            if (t == s) continue;
            double e, f;
            ev_agreement(ab, s, t, &e, &f);
            json_t *a = json_object();
            json_object_set_new(a, "identical", ev_json_num(e));
            json_object_set_new(a, "common_prefix", ev_json_num(f));
            json_object_set_new(ag, ab->strategies[t], a);
        }
        json_object_set_new(r, "agreement", ag);
        json_array_append_new(summary, r);
    }
    json_object_set_new(o, "summary", summary);
    size_t best = ev_best_solo(ab, sum);
    json_object_set_new(o, "best_solo", best != (size_t)-1 ? json_string(ab->strategies[best]) : json_null());
    json_object_set_new(o, "caption", ab->caption ? json_string(ab->caption) : json_null());
    json_t *items = json_array();
    for (size_t p = 0; p < P; p++) {
        json_t *it = json_object();
        json_object_set_new(it, "prompt", json_string(ab->prompts[p] ? ab->prompts[p] : ""));
        json_t *outs = json_array();
        for (size_t s = 0; s < S; s++) {
            const ev_ab_output *x = &ab->out[p * S + s];
            json_t *r = json_object();
            json_object_set_new(r, "strategy", json_string(ab->strategies[s]));
            if (x->status) {
                json_object_set_new(r, "status", json_integer(x->status));
                json_object_set_new(r, "error", json_string(x->error));
            } else {
                json_object_set_new(r, "text", json_stringn(x->text ? x->text : "", x->len));
                json_object_set_new(r, "bytes", json_integer((json_int_t)x->len));
                json_object_set_new(r, "steps", json_integer(x->steps));
                json_object_set_new(r, "seconds", json_real(x->seconds));
                json_object_set_new(r, "finish_reason", json_string(x->finish));
                json_t *b = json_object();
                for (size_t k = 0; k < K; k++)
                    json_object_set_new(b, ab->scorers[k],
                                        x->bytes[k] > 0 ? ev_json_num(x->nll[k] / (x->bytes[k] * M_LN2)) : json_null());
                json_object_set_new(r, "bits_per_byte_under", b);
                json_t *lat = json_object();
                for (size_t m = 0; m < M; m++) json_object_set_new(lat, ab->scorers[m], ev_json_num(x->step_ms[m]));
                json_object_set_new(r, "mean_step_ms", lat);
                const char *tx = x->text ? x->text : "";
                json_object_set_new(r, "distinct_1", ev_json_num(ev_distinct_n(&tx, &x->len, 1, 1)));
                json_object_set_new(r, "distinct_2", ev_json_num(ev_distinct_n(&tx, &x->len, 1, 2)));
            }
            json_array_append_new(outs, r);
        }
        json_object_set_new(it, "outputs", outs);
        json_array_append_new(items, it);
    }
    json_object_set_new(o, "per_prompt", items);
    return o;
}

json_t *ev_ab_json(const ev_ab *ab) {
    ev_ab_sum *sum = calloc(ab->n_strategies ? ab->n_strategies : 1, sizeof *sum);
    if (!sum) return NULL;
    ev_ab_summarize(ab, sum);
    json_t *o = ev_ab_json_sum(ab, sum);
    ev_ab_sum_free(sum, ab->n_strategies);
    return o;
}

/* markdown table cell: no pipes or newlines, bounded length */
static void ev_md_cell(FILE *f, const char *s, size_t len, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < len && n < max; i++, n++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '|') fputs("\\|", f);
        else if (c == '\n') fputs("⏎", f);
        else if (c == '\r' || c == '\t') fputc(' ', f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '&') fputs("&amp;", f);
        else fputc(c, f);
    }
    /* do not cut a UTF-8 character in two */
    if (n < len) {
        size_t i = n;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) fputc(s[i++], f);
        fputs("…", f);
    }
}

static void ev_md_name(FILE *f, const char *pre, const char *s, const char *post) {
    fputs(pre, f);
    ev_md_cell(f, s, strlen(s), 200);
    fputs(post, f);
}

static void ev_fmtn(FILE *f, const char *fmt, double x) {
    if (isfinite(x)) fprintf(f, fmt, x);
    else fputs("-", f);
}

/* "x [lo, hi]", each as ev_fmtn prints it. */
static void ev_fmt_ci(FILE *f, const char *fmt, double x, const double ci[2]) {
    ev_fmtn(f, fmt, x);
    fputs(" [", f);
    ev_fmtn(f, fmt, ci[0]);
    fputs(", ", f);
    ev_fmtn(f, fmt, ci[1]);
    fputc(']', f);
}

/* "## Against the best solo strategy": paired differences of the quality. */
static void ev_write_md_vs_solo(const ev_ab *ab, const ev_ab_sum *sum, FILE *f) {
    size_t best = ev_best_solo(ab, sum);
    if (best == (size_t)-1) return;
    ev_md_name(f, "\n## Against the best solo strategy\n\nQuality minus that of `", ab->strategies[best],
               "` (the solo strategy with the lowest figure), 95% interval from the same bootstrap draws "
               "(paired); below 0 = better.\n\n| strategy | kind | difference [95% CI] |\n|---|---|---|\n");
    for (size_t s = 0; s < ab->n_strategies; s++) {
        ev_md_name(f, "| ", ab->strategies[s], sum[s].solo ? " | solo | " : " | ensemble | ");
        if (s == best) fputs("(best solo)", f);
        else ev_fmt_ci(f, "%+.4f", sum[s].diff, sum[s].diff_ci);
        fputs(" |\n", f);
    }
}

/* "## Member agreement": who won the steps and bytes inside each ensemble. */
static void ev_write_md_members(const ev_ab *ab, const ev_ab_sum *sum, FILE *f) {
    size_t S = ab->n_strategies, M = ab->n_members;
    fputs("\n## Member agreement inside each strategy\n\nShare of the steps whose committed event was the "
          "member's own top choice / share of the output's bytes from candidates the member proposed (members "
          "can share both); for selective, the share of steps its lead decided alone.\n\n| strategy |",
          f);
    for (size_t m = 0; m < M; m++) ev_md_name(f, " ", ab->scorers[m], " steps / bytes |");
    fputs(" lead alone |\n|---|", f);
    for (size_t m = 0; m <= M; m++) fputs("---|", f);
    fputc('\n', f);
    for (size_t s = 0; s < S; s++) {
        ev_md_name(f, "| ", ab->strategies[s], " |");
        for (size_t m = 0; m < M; m++) {
            fputc(' ', f);
            ev_fmtn(f, "%.2f", sum[s].won_steps[m]);
            fputs(" / ", f);
            ev_fmtn(f, "%.2f", sum[s].won_bytes[m]);
            fputs(" |", f);
        }
        fputc(' ', f);
        if (!strcmp(ab->strategies[s], "selective")) ev_fmtn(f, "%.2f", sum[s].lead_alone);
        else fputs("-", f);
        fputs(" |\n", f);
    }
}

static int ev_write_md(const ev_ab *ab, const ev_ab_sum *sum, FILE *f) {
    size_t P = ab->n_prompts, S = ab->n_strategies, K = ab->n_scorers, M = ab->n_members;
    fprintf(f, "# consort ab\n\n%zu prompts, %zu strategies; max %d steps, temperature %g", P, S, ab->max_tokens,
            ab->temperature);
    if (ab->has_seed) fprintf(f, ", seed %llu", (unsigned long long)ab->seed);
    fprintf(f, ".\nQuality = bits per byte of each output given its prompt, %s (lower = the output is more "
               "probable; very repetitive text also scores low, so read it with distinct-n).\n"
               "Intervals: 95%%, bootstrap over prompts (%u resamples).\n\n## Summary\n\n",
            ab->has_judge ? "under the judge model (not in the ensemble)" : "mean over the ensemble's members",
            ab->resamples);
    fputs("| strategy | quality bits/byte [95% CI] |", f);
    for (size_t k = 0; k < K; k++)
        ev_md_name(f, " bpb under ", ab->scorers[k], ab->has_judge && k == K - 1 ? " (judge) |" : " |");
    fputs(" bytes/s [95% CI] | steps/s |", f);
    for (size_t m = 0; m < M; m++) ev_md_name(f, " ms/step ", ab->scorers[m], " |");
    fputs(" mean bytes | distinct-1 | distinct-2 | failures |\n|---|---|", f);
    for (size_t k = 0; k < K; k++) fputs("---|", f);
    fputs("---|---|", f);
    for (size_t m = 0; m < M; m++) fputs("---|", f);
    fputs("---|---|---|---|\n", f);
    for (size_t s = 0; s < S; s++) {
        const ev_ab_sum *x = &sum[s];
        ev_md_name(f, "| ", ab->strategies[s], " | ");
        ev_fmt_ci(f, "%.4f", x->quality, x->quality_ci);
        fputs(" |", f);
        for (size_t k = 0; k < K; k++) {
            fputc(' ', f);
            ev_fmtn(f, "%.4f", x->bpb[k]);
            fputs(" |", f);
        }
        fputc(' ', f);
        ev_fmt_ci(f, "%.1f", x->bytes_per_s, x->bps_ci);
        fputs(" | ", f);
        ev_fmtn(f, "%.2f", x->steps_per_s);
        fputs(" |", f);
        for (size_t m = 0; m < M; m++) {
            fputc(' ', f);
            ev_fmtn(f, "%.2f", x->step_ms[m]);
            fputs(" |", f);
        }
        fputc(' ', f);
        ev_fmtn(f, "%.1f", x->mean_len);
        fputs(" | ", f);
        ev_fmtn(f, "%.3f", x->distinct1);
        fputs(" | ", f);
        ev_fmtn(f, "%.3f", x->distinct2);
        fprintf(f, " | %zu |\n", x->failures);
    }
    ev_write_md_vs_solo(ab, sum, f);
    ev_write_md_members(ab, sum, f);
    if (S > 1) {
        fputs("\n## Agreement between strategies\n\nIdentical outputs / mean common prefix (share of the longer "
              "output), over prompts.\n\n| |",
              f);
        for (size_t t = 0; t < S; t++) ev_md_name(f, " ", ab->strategies[t], " |");
        fputs("\n|---|", f);
        for (size_t t = 0; t < S; t++) fputs("---|", f);
        fputc('\n', f);
        for (size_t s = 0; s < S; s++) {
            ev_md_name(f, "| ", ab->strategies[s], " |");
            for (size_t t = 0; t < S; t++) {
                if (s == t) {
                    fputs(" - |", f);
                    continue;
                }
                double e, p;
                ev_agreement(ab, s, t, &e, &p);
                fputc(' ', f);
                ev_fmtn(f, "%.2f", e);
                fputs(" / ", f);
                ev_fmtn(f, "%.2f", p);
                fputs(" |", f);
            }
            fputc('\n', f);
        }
    }
    fputs("\n## Per prompt\n", f);
    for (size_t p = 0; p < P; p++) {
        fprintf(f, "\n### Prompt %zu\n\n> ", p + 1);
        const char *pr = ab->prompts[p] ? ab->prompts[p] : "";
        ev_md_cell(f, pr, strlen(pr), 400);
        fputs("\n\n| strategy | output | bytes | steps | bytes/s |", f);
        for (size_t k = 0; k < K; k++) ev_md_name(f, " bpb ", ab->scorers[k], " |");
        fputs(" distinct-2 |\n|---|---|---|---|---|", f);
        for (size_t k = 0; k < K; k++) fputs("---|", f);
        fputs("---|\n", f);
        for (size_t s = 0; s < S; s++) {
            const ev_ab_output *x = &ab->out[p * S + s];
            ev_md_name(f, "| ", ab->strategies[s], " | ");
            if (x->status) {
                fputs("**failed**: ", f);
                ev_md_cell(f, x->error, strlen(x->error), 200);
                fputs(" | | | |", f);
                for (size_t k = 0; k < K; k++) fputs(" |", f);
                fputs(" |\n", f);
                continue;
            }
            ev_md_cell(f, x->text ? x->text : "", x->len, 300);
            fprintf(f, " | %zu | %d | ", x->len, x->steps);
            ev_fmtn(f, "%.1f", x->seconds > 0 ? (double)x->len / x->seconds : NAN);
            fputs(" |", f);
            for (size_t k = 0; k < K; k++) {
                fputc(' ', f);
                ev_fmtn(f, "%.4f", x->bytes[k] > 0 ? x->nll[k] / (x->bytes[k] * M_LN2) : NAN);
                fputs(" |", f);
            }
            const char *tx = x->text ? x->text : "";
            fputc(' ', f);
            ev_fmtn(f, "%.3f", ev_distinct_n(&tx, &x->len, 1, 2));
            fputs(" |\n", f);
        }
    }
    return ferror(f) ? -1 : 0;
}

/* ---- the SVG figure ---------------------------------------------------------- */

#define SVG_FONT 12.0
#define SVG_CHAR_W 7.2   /* generous width of one character at SVG_FONT (sans-serif) */
#define SVG_ROW 24.0
#define SVG_PLOT_W 420.0

/* A "nice" tick step for an axis from 0 to mx (1, 2 or 5 times a power of 10). */
static double ev_tick_step(double mx) {
    double raw = mx / 5, p = pow(10, floor(log10(raw))), r = raw / p;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
}

/* Display width of a UTF-8 label in SVG units (each character counted once). */
static double ev_label_w(const char *s) {
    double n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n * SVG_CHAR_W;
}

typedef struct {
    double label_w, plot_x, width;
} ev_svg_geom;

/* One panel: title, a bar per strategy (solo grey, ensembles blue), the
 * interval whiskers, the value, and an x axis with ticks and its unit.
 * Returns its height. */
static double ev_svg_panel(FILE *f, const ev_svg_geom *g, double y0, const char *title, const char *unit,
                           const ev_ab *ab, const ev_ab_sum *sum, int speed) {
    size_t S = ab->n_strategies;
    double mx = 0;
    for (size_t s = 0; s < S; s++) {
        double v = speed ? sum[s].bytes_per_s : sum[s].quality, hi = speed ? sum[s].bps_ci[1] : sum[s].quality_ci[1];
        if (isfinite(v) && v > mx) mx = v;
        if (isfinite(hi) && hi > mx) mx = hi;
    }
    if (!(mx > 0)) mx = 1;
    double step = ev_tick_step(mx), top = 28, axis_y = top + (double)S * SVG_ROW + 4;
    mx = ceil(mx / step) * step;
    fprintf(f, "<g transform=\"translate(0,%.1f)\">\n<text x=\"10\" y=\"18\" font-size=\"14\" font-weight=\"bold\">",
            y0);
    ev_xml_escape(f, title);
    fputs("</text>\n", f);
    for (size_t s = 0; s < S; s++) {
        double y = top + (double)s * SVG_ROW;
        double v = speed ? sum[s].bytes_per_s : sum[s].quality;
        const double *ci = speed ? sum[s].bps_ci : sum[s].quality_ci;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.0f\" text-anchor=\"end\">", g->plot_x - 8, y + 14,
                SVG_FONT);
        ev_xml_escape(f, ab->strategies[s]);
        fputs("</text>\n", f);
        double bw = isfinite(v) && v > 0 ? SVG_PLOT_W * v / mx : 0;
        fprintf(f, "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"16\" fill=\"%s\"/>\n",
                sum[s].solo ? "solo" : "ensemble", g->plot_x, y + 2, bw, sum[s].solo ? "#a0a0a0" : "#3b6ea5");
        if (isfinite(ci[0]) && isfinite(ci[1])) {
            double x1 = g->plot_x + SVG_PLOT_W * ci[0] / mx, x2 = g->plot_x + SVG_PLOT_W * ci[1] / mx;
            fprintf(f,
                    "<path d=\"M%.2f %.1fH%.2fM%.2f %.1fV%.1fM%.2f %.1fV%.1f\" stroke=\"#000\" fill=\"none\"/>\n", x1,
                    y + 10, x2, x1, y + 5, y + 15, x2, y + 5, y + 15);
        }
        char vb[32];
        snprintf(vb, sizeof vb, isfinite(v) ? (speed ? "%.1f" : "%.4f") : "-", v);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.0f\">%s</text>\n", g->plot_x + SVG_PLOT_W + 8, y + 14,
                SVG_FONT, vb);
    }
    fprintf(f, "<path class=\"axis\" d=\"M%.1f %.1fH%.1f\" stroke=\"#000\"/>\n", g->plot_x, axis_y,
            g->plot_x + SVG_PLOT_W);
    for (double t = 0; t <= mx + step / 2; t += step) {
        double x = g->plot_x + SVG_PLOT_W * t / mx;
        fprintf(f,
                "<path class=\"tick\" d=\"M%.2f %.1fV%.1f\" stroke=\"#000\"/>\n<text x=\"%.2f\" y=\"%.1f\" "
                "font-size=\"10\" text-anchor=\"middle\">%g</text>\n",
                x, axis_y, axis_y + 4, x, axis_y + 15, t);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">", g->plot_x + SVG_PLOT_W / 2,
            axis_y + 30);
    ev_xml_escape(f, unit);
    fputs("</text>\n</g>\n", f);
    return axis_y + 42;
}

/* The caption, wrapped at the figure's width; returns its height. */
static double ev_svg_caption(FILE *f, const ev_svg_geom *g, double y0, const char *text) {
    size_t per_line = (size_t)((g->width - 20) / (SVG_CHAR_W * 11.0 / SVG_FONT));
    double y = y0;
    const char *p = text;
    while (*p) {
        size_t n = strlen(p);
        if (n > per_line) {
            n = per_line;
            while (n > 0 && p[n] != ' ') n--;
            if (!n) n = per_line;
        }
        while (n < strlen(p) && ((unsigned char)p[n] & 0xC0) == 0x80) n++;
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line - 1 ? n : sizeof line - 1), p);
        y += 15;
        fprintf(f, "<text class=\"caption\" x=\"10\" y=\"%.1f\" font-size=\"11\" fill=\"#333\">", y);
        ev_xml_escape(f, line);
        fputs("</text>\n", f);
        p += n;
        while (*p == ' ') p++;
    }
    return y - y0 + 10;
}

static int ev_write_svg(const ev_ab *ab, const ev_ab_sum *sum, FILE *f) {
    size_t S = ab->n_strategies;
    ev_svg_geom g;
    g.label_w = 60;
    for (size_t s = 0; s < S; s++)
        if (ev_label_w(ab->strategies[s]) > g.label_w) g.label_w = ev_label_w(ab->strategies[s]);
    g.plot_x = 20 + g.label_w;
    g.width = g.plot_x + SVG_PLOT_W + 80;
    if (g.width < 640) g.width = 640;
    char fallback[256];
    snprintf(fallback, sizeof fallback, "consort ab: %zu prompts, %zu strategies.", ab->n_prompts, S);
    const char *caption = ab->caption ? ab->caption : fallback;
    /* the height: two panels, the legend, the caption's lines (generously) */
    double panel = 28 + (double)S * SVG_ROW + 46;
    size_t per_line = (size_t)((g.width - 20) / (SVG_CHAR_W * 11.0 / SVG_FONT));
    double height = 2 * panel + 30 + 15.0 * (double)(strlen(caption) / (per_line / 2 + 1) + 2) + 20;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n",
            g.width, height, g.width, height);
    double y = 6;
    y += ev_svg_panel(f, &g, y,
                      ab->has_judge ? "Quality: bits per byte under the judge (lower is better)"
                                    : "Quality: bits per byte under the members, mean (lower is better)",
                      "bits per byte of the output given its prompt; whiskers: 95% CI over prompts", ab, sum, 0);
    y += ev_svg_panel(f, &g, y, "Speed (higher is better)", "bytes per second; whiskers: 95% CI over prompts", ab,
                      sum, 1);
    fprintf(f,
            "<g class=\"legend\"><rect x=\"10\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"#a0a0a0\"/>"
            "<text x=\"30\" y=\"%.1f\" font-size=\"11\">solo strategy (one member)</text>"
            "<rect x=\"220\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"#3b6ea5\"/>"
            "<text x=\"240\" y=\"%.1f\" font-size=\"11\">ensemble strategy</text></g>\n",
            y, y + 9, y, y + 9);
    y += 16;
    ev_svg_caption(f, &g, y, caption);
    fputs("</svg>\n", f);
    return ferror(f) ? -1 : 0;
}

int ev_ab_write_reports(const ev_ab *ab, const char *dir, char *err, size_t errlen) {
    if (mkdir(dir, 0777) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    ev_ab_sum *sum = calloc(ab->n_strategies ? ab->n_strategies : 1, sizeof *sum);
    if (!sum) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ev_ab_summarize(ab, sum);
    char path[4096];
    int rc = 0;
    json_t *j = ev_ab_json_sum(ab, sum);
    snprintf(path, sizeof path, "%s/report.json", dir);
    if (!j || json_dump_file(j, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10))) {
        snprintf(err, errlen, "cannot write %s", path);
        rc = -1;
    }
    json_decref(j);
    const char *names[] = {"report.md", "report.svg"};
    for (int i = 0; !rc && i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        if (!f) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        int w = i == 0 ? ev_write_md(ab, sum, f) : ev_write_svg(ab, sum, f);
        if (fclose(f) || w) {
            snprintf(err, errlen, "cannot write %s", path);
            rc = -1;
        }
    }
    ev_ab_sum_free(sum, ab->n_strategies);
    return rc;
}
