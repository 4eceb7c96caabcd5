/* coordinator/eval/eval_strategies.c: see eval_strategies.h; names come from
 * the strategy registry (sampler/registry.h). */
#include "coordinator/eval/eval_strategies.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double ev_logsumexp(const double *a, size_t n) {
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (a[i] > mx) mx = a[i];
    if (!isfinite(mx)) return mx;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += exp(a[i] - mx);
    return mx + log(s);
}

int ev_strategy_parse(const char *spec, const char *const *names, size_t n,
                      ev_strategy *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *param;
    const sreg_entry *e = sreg_parse(spec, SREG_EVALUATION, &param, err, errlen);
    if (!e) return -1;
    out->kind = e->rule;
    out->steps = (e->gen_kind >= 0 && e->rule != SREG_SOLO) || e->needs == SREG_NEEDS_BYTE_MASSES;
    if (!param) {
        snprintf(out->name, sizeof out->name, "%s", e->name);
        return 0;
    }
    for (size_t m = 0; m < n; m++) {
        if (!strcmp(param, names[m])) {
            out->member = m;
            snprintf(out->name, sizeof out->name, "%s:%s", e->name, names[m]);
            return 0;
        }
    }
    snprintf(err, errlen, "strategy %s: no member named '%s'", spec, param);
    return -1;
}

size_t ev_strategy_default_list(const char *const *names, size_t n, char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = 0;
    for (size_t m = 0; m < n; m++) {
        size_t room = len < cap ? cap - len : 0;
        len += (size_t)snprintf(room ? buf + len : NULL, room, "%ssolo:%s", m ? "," : "", names[m]);
    }
    for (size_t i = 0; n > 1 && i < sreg_count(); i++) {
        const sreg_entry *e = sreg_at(i);
        if (!sreg_accepts(e, SREG_EVALUATION) || e->param || e->gen_kind >= 0 || e->needs == SREG_NEEDS_BYTE_MASSES)
            continue;
        size_t room = len < cap ? cap - len : 0;
        len += (size_t)snprintf(room ? buf + len : NULL, room, ",%s", e->name);
    }
    return len;
}

int ev_strategy_parse_list(const char *list, const char *const *names, size_t n,
                           ev_strategy **out, size_t *count, char *err, size_t errlen) {
    *out = NULL;
    *count = 0;
    char *dup = strdup(list);
    if (!dup) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    ev_strategy *arr = calloc(cap, sizeof *arr);
    if (!arr) {
        free(dup);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (!*tok) continue;
        if (ev_strategy_parse(tok, names, n, &arr[k], err, errlen)) {
            free(arr);
            free(dup);
            return -1;
        }
        int seen = 0;
        for (size_t j = 0; j < k; j++) seen |= !strcmp(arr[j].name, arr[k].name);
        if (!seen) k++;
    }
    free(dup);
    if (!k) {
        free(arr);
        snprintf(err, errlen, "no strategies given");
        return -1;
    }
    *out = arr;
    *count = k;
    return 0;
}

int ev_weights_normalise(double *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(w[i]) || w[i] < 0) return -1;
        s += w[i];
    }
    if (!(s > 0)) return -1;
    for (size_t i = 0; i < n; i++) w[i] /= s;
    return 0;
}

int ev_weights_parse(const char *s, double *w, size_t n, char *err, size_t errlen) {
    const char *p = s;
    for (size_t i = 0; i < n; i++) {
        char *end;
        w[i] = strtod(p, &end);
        if (end == p) {
            snprintf(err, errlen, "--weights '%s': want %zu comma-separated numbers", s, n);
            return -1;
        }
        p = end;
        if (i + 1 < n) {
            if (*p != ',') {
                snprintf(err, errlen, "--weights '%s': want %zu comma-separated numbers", s, n);
                return -1;
            }
            p++;
        }
    }
    if (*p) {
        snprintf(err, errlen, "--weights '%s': want %zu comma-separated numbers", s, n);
        return -1;
    }
    if (ev_weights_normalise(w, n)) {
        snprintf(err, errlen, "--weights '%s': weights must be >= 0, finite, not all 0", s);
        return -1;
    }
    return 0;
}

/* confidence key at unit u for member m: lower is more confident */
static double ev_route_key(const ev_units *u, size_t m, size_t k) {
    double e = u->entropy0[m * u->n_units + k];
    if (!isnan(e)) return e;
    double t = u->top1_0[m * u->n_units + k];
    if (!isnan(t)) return 1.0 - t;
    return 0;
}

static size_t ev_route_entropy(const ev_units *u, size_t k) {
    size_t best = 0;
    double bk = ev_route_key(u, 0, k);
    for (size_t m = 1; m < u->n_members; m++) {
        double x = ev_route_key(u, m, k);
        if (x < bk) {
            bk = x;
            best = m;
        }
    }
    return best;
}

double ev_strategy_doc_logprob(const ev_strategy *s, const ev_units *u, const double *w,
                               const char *text, size_t *routed) {
    (void)text;
    size_t M = u->n_members, N = u->n_units;
    double total = 0;
    double tmp[64];
    double *a = M <= 64 ? tmp : malloc(M * sizeof *a);
    if (!a) return NAN;
    for (size_t k = 0; k < N; k++) {
        double x = 0;
        size_t who = (size_t)-1;
        switch (s->kind) {
        case SREG_SOLO:
            x = u->lp[s->member * N + k];
            who = s->member;
            break;
        case SREG_MIXTURE_UNITS: {
            size_t j = 0;
            for (size_t m = 0; m < M; m++)
                if (w[m] > 0) a[j++] = log(w[m]) + u->lp[m * N + k];
            x = ev_logsumexp(a, j);
            break;
        }
        case SREG_PRODUCT_BOUND:
            for (size_t m = 0; m < M; m++)
                if (w[m] > 0) x += w[m] * u->lp[m * N + k];
            break;
        case SREG_ROUTE_ENTROPY:
            who = ev_route_entropy(u, k);
            x = u->lp[who * N + k];
            break;
        case SREG_ROUTE_PREV:
            if (k == 0) {
                who = ev_route_entropy(u, k);
            } else {
                double blen = (double)(u->bounds[k] - u->bounds[k - 1]);
                who = 0;
                double best = -u->lp[k - 1] / blen;
                for (size_t m = 1; m < M; m++) {
                    double l = -u->lp[m * N + k - 1] / blen;
                    if (l < best) {
                        best = l;
                        who = m;
                    }
                }
            }
            x = u->lp[who * N + k];
            break;
        case SREG_ORACLE:
            who = 0;
            for (size_t m = 1; m < M; m++)
                if (u->lp[m * N + k] > u->lp[who * N + k]) who = m;
            x = u->lp[who * N + k];
            break;
        default: /* a step-level rule (ev_ppl_opts.steps), or one ppl refuses */
            if (a != tmp) free(a);
            return NAN;
        }
        if (routed && who != (size_t)-1) routed[who]++;
        total += x;
    }
    if (a != tmp) free(a);
    return total;
}

int ev_weights_tune(const ev_units *docs, size_t n_docs, double *w, size_t M,
                    int max_iter, double tol) {
    if (ev_weights_normalise(w, M)) {
        for (size_t m = 0; m < M; m++) w[m] = 1.0 / (double)M;
    }
    /* start strictly inside the simplex: EM cannot revive a zero weight */
    for (size_t m = 0; m < M; m++) w[m] = 0.5 * w[m] + 0.5 / (double)M;
    double *acc = calloc(M, sizeof *acc), *a = calloc(M, sizeof *a);
    if (!acc || !a) {
        free(acc);
        free(a);
        return 0;
    }
    int it;
    double prev = -INFINITY;
    for (it = 0; it < max_iter; it++) {
        size_t n_units = 0;
        double ll = 0;
        memset(acc, 0, M * sizeof *acc);
        for (size_t d = 0; d < n_docs; d++) {
            const ev_units *u = &docs[d];
            for (size_t k = 0; k < u->n_units; k++) {
                for (size_t m = 0; m < M; m++) a[m] = log(w[m]) + u->lp[m * u->n_units + k];
                double z = ev_logsumexp(a, M);
                ll += z;
                for (size_t m = 0; m < M; m++) acc[m] += exp(a[m] - z);
                n_units++;
            }
        }
        if (!n_units) break;
        for (size_t m = 0; m < M; m++) w[m] = acc[m] / (double)n_units;
        if (ll - prev < tol * (fabs(ll) + 1)) {
            it++;
            break;
        }
        prev = ll;
    }
    free(acc);
    free(a);
    return it;
}
