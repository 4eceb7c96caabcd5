/* common/prom.c: see prom.h. */
#include "common/prom.h"

#include <stdio.h>
#include <string.h>

void prom_hist_init(prom_hist *h, const double *bounds, size_t n_bounds) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds < PROM_HIST_MAX ? n_bounds : PROM_HIST_MAX;
}

void prom_hist_observe(prom_hist *h, double v) {
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

int prom_family(sbuf *b, const char *name, const char *type, const char *help) {
    return sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int add_escaped(sbuf *b, const char *s) {
    int bad = 0;
    for (; *s; s++) {
        if (*s == '\\') bad |= sb_str(b, "\\\\");
        else if (*s == '"') bad |= sb_str(b, "\\\"");
        else if (*s == '\n') bad |= sb_str(b, "\\n");
        else bad |= sb_add(b, s, 1);
    }
    return bad;
}

static int add_labels(sbuf *b, const prom_label *labels, size_t n) {
    if (!labels || !n) return 0;
    int bad = sb_str(b, "{");
    for (size_t i = 0; i < n; i++) {
        bad |= sb_printf(b, "%s%s=\"", i ? "," : "", labels[i].name);
        bad |= add_escaped(b, labels[i].value ? labels[i].value : "");
        bad |= sb_str(b, "\"");
    }
    return bad | sb_str(b, "}");
}

int prom_sample(sbuf *b, const char *name, const prom_label *labels, size_t n_labels,
                const char *value) {
    int bad = sb_str(b, name);
    bad |= add_labels(b, labels, n_labels);
    return bad | sb_printf(b, " %s\n", value);
}

int prom_sample_u(sbuf *b, const char *name, const prom_label *labels, size_t n_labels,
                  unsigned long long v) {
    char s[32];
    snprintf(s, sizeof s, "%llu", v);
    return prom_sample(b, name, labels, n_labels, s);
}

int prom_sample_i(sbuf *b, const char *name, const prom_label *labels, size_t n_labels, long long v) {
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return prom_sample(b, name, labels, n_labels, s);
}

int prom_counter(sbuf *b, const char *name, const char *help, unsigned long long v) {
    return prom_family(b, name, "counter", help) | prom_sample_u(b, name, NULL, 0, v);
}

int prom_gauge(sbuf *b, const char *name, const char *help, long long v) {
    return prom_family(b, name, "gauge", help) | prom_sample_i(b, name, NULL, 0, v);
}

int prom_histogram(sbuf *b, const char *name, const char *help, const prom_hist *h) {
    int bad = prom_family(b, name, "histogram", help);
    unsigned long long cum = 0;
    for (size_t i = 0; i < h->n_bounds; i++) {
        cum += h->bucket[i];
        bad |= sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], cum);
    }
    cum += h->bucket[h->n_bounds];
    bad |= sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
    return bad | sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, h->count);
}
