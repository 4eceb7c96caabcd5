/* coordinator/eval/eval_report.c: see eval_report.h. */
#include "coordinator/eval/eval_report.h"

#include <math.h>
#include <string.h>

json_t *ev_json_num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static void ev_fmt(char *buf, size_t n, const char *fmt, double x) {
    if (isfinite(x))
        snprintf(buf, n, fmt, x);
    else
        snprintf(buf, n, "-");
}

int ev_report_ppl_table(FILE *f, const char *file, const ev_corpus *c, const ev_ppl_result *r) {
    fprintf(f, "file %s: %zu documents, %zu bytes (file %zu bytes%s), %zu words, %zu %s units\n", file,
            r->n_docs, r->bytes, c->file_bytes, c->jsonl ? ", JSONL" : ", plain text", r->words, r->units,
            ev_unit_kind_name(r->unit));
    for (size_t m = 0; m < r->n_members; m++) {
        fprintf(f, "member %-10s scored %zu bytes in %zu tokens", r->member_names[m],
                r->member_scored_bytes[m], r->member_tokens[m]);
        if (r->member_n_ctx[m] > 0)
            fprintf(f, " (context %d, window overlap %d)", r->member_n_ctx[m], r->member_overlap[m]);
        fprintf(f, ", weight %.4f\n", r->weights[m]);
    }
    fprintf(f, "\n%-16s %9s  %-19s %9s %11s %10s  %-30s\n", "strategy", "bits/byte", "95% CI", "byte ppl",
            "word ppl", "token ppl", "vs best member [95% CI]");
    for (size_t i = 0; i < r->n_rows; i++) {
        const ev_ppl_row *row = &r->rows[i];
        char bpb[32], lo[32], hi[32], bp[32], wp[32], tp[32], d[32], dlo[32], dhi[32];
        ev_fmt(bpb, sizeof bpb, "%.4f", row->m.bits_per_byte);
        ev_fmt(lo, sizeof lo, "%.4f", row->ci[0]);
        ev_fmt(hi, sizeof hi, "%.4f", row->ci[1]);
        ev_fmt(bp, sizeof bp, "%.4f", row->m.byte_perplexity);
        ev_fmt(wp, sizeof wp, "%.2f", row->m.word_perplexity);
        ev_fmt(tp, sizeof tp, "%.3f", row->m.token_perplexity);
        ev_fmt(d, sizeof d, "%+.4f", row->diff);
        ev_fmt(dlo, sizeof dlo, "%+.4f", row->diff_ci[0]);
        ev_fmt(dhi, sizeof dhi, "%+.4f", row->diff_ci[1]);
        char name[96];
        snprintf(name, sizeof name, "%s%s", row->name, row->upper_bound ? "*" : "");
        char ci[80];
        snprintf(ci, sizeof ci, "[%s, %s]", lo, hi);
        char dd[128];
        if (i == r->best_member_row)
            snprintf(dd, sizeof dd, "(best member)");
        else
            snprintf(dd, sizeof dd, "%s [%s, %s]", d, dlo, dhi);
        fprintf(f, "%-16s %9s  %-19s %9s %11s %10s  %s\n", name, bpb, ci, bp, wp, tp, dd);
    }
    int has_oracle = 0, has_product = 0;
    for (size_t i = 0; i < r->n_rows; i++) {
        has_oracle |= r->rows[i].upper_bound;
        has_product |= r->rows[i].strat.kind == SREG_PRODUCT_BOUND;
    }
    fprintf(f, "\nbits/byte and its interval: lower is better; 95%% CI from a paired bootstrap over documents "
               "(%u resamples, seed %llu).\n",
            r->resamples, (unsigned long long)r->seed);
    if (has_product)
        fprintf(f, "product_bound: unnormalised log-linear pool, so its bits/byte is an upper bound (pessimistic).\n");
    if (has_oracle)
        fprintf(f, "* oracle: the best member per unit chosen WITH HINDSIGHT; an upper bound, not a model.\n");
    for (size_t i = 0; i < r->n_rows; i++) {
        const ev_ppl_row *row = &r->rows[i];
        if (!row->routed) continue;
        fprintf(f, "%s units per member:", row->name);
        for (size_t m = 0; m < r->n_members; m++) fprintf(f, " %s=%zu", r->member_names[m], row->routed[m]);
        fputc('\n', f);
    }
    fprintf(f, "scoring took %.2f s\n", r->seconds);
    return ferror(f) ? -1 : 0;
}

static json_t *ev_pair(double a, double b) {
    json_t *x = json_array();
    json_array_append_new(x, ev_json_num(a));
    json_array_append_new(x, ev_json_num(b));
    return x;
}

json_t *ev_report_ppl_json(const char *file, const ev_corpus *c, const ev_ppl_result *r) {
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(file));
    json_object_set_new(o, "format", json_string(c->jsonl ? "jsonl" : "text"));
    json_object_set_new(o, "documents", json_integer((json_int_t)r->n_docs));
    json_object_set_new(o, "bytes", json_integer((json_int_t)r->bytes));
    json_object_set_new(o, "file_bytes", json_integer((json_int_t)c->file_bytes));
    json_object_set_new(o, "words", json_integer((json_int_t)r->words));
    json_object_set_new(o, "unit", json_string(ev_unit_kind_name(r->unit)));
    json_object_set_new(o, "units", json_integer((json_int_t)r->units));
    json_t *members = json_array();
    for (size_t m = 0; m < r->n_members; m++) {
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(r->member_names[m]));
        json_object_set_new(x, "scored_bytes", json_integer((json_int_t)r->member_scored_bytes[m]));
        json_object_set_new(x, "tokens", json_integer((json_int_t)r->member_tokens[m]));
        json_object_set_new(x, "weight", json_real(r->weights[m]));
        if (r->member_n_ctx[m] > 0) {
            json_object_set_new(x, "n_ctx", json_integer(r->member_n_ctx[m]));
            json_object_set_new(x, "window_overlap", json_integer(r->member_overlap[m]));
        }
        json_array_append_new(members, x);
    }
    json_object_set_new(o, "members", members);
    json_object_set_new(o, "best_member",
                        r->best_member_row < r->n_rows ? json_string(r->rows[r->best_member_row].name)
                                                       : json_null());
    json_t *boot = json_object();
    json_object_set_new(boot, "resamples", json_integer(r->resamples));
    /* a decimal string: JSON readers round integers above 2^53 */
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    json_object_set_new(boot, "seed", json_string(seed));
    json_object_set_new(boot, "over", json_string("documents"));
    json_object_set_new(o, "bootstrap", boot);
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_t *res = json_array();
    for (size_t i = 0; i < r->n_rows; i++) {
        const ev_ppl_row *row = &r->rows[i];
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(row->name));
        json_object_set_new(x, "bits_per_byte", ev_json_num(row->m.bits_per_byte));
        json_object_set_new(x, "byte_perplexity", ev_json_num(row->m.byte_perplexity));
        json_object_set_new(x, "word_perplexity", ev_json_num(row->m.word_perplexity));
        json_object_set_new(x, "token_perplexity",
                            row->member >= 0 ? ev_json_num(row->m.token_perplexity) : json_null());
        json_object_set_new(x, "ci95", ev_pair(row->ci[0], row->ci[1]));
        json_object_set_new(x, "nll_nats", ev_json_num(row->nll));
        json_object_set_new(x, "diff_vs_best_member", ev_json_num(row->diff));
        json_object_set_new(x, "diff_ci95", ev_pair(row->diff_ci[0], row->diff_ci[1]));
        if (row->member >= 0) json_object_set_new(x, "tokens", json_integer((json_int_t)row->tokens));
        if (row->upper_bound) json_object_set_new(x, "upper_bound", json_true());
        if (row->strat.kind == SREG_BYTE_POOL) json_object_set_new(x, "byte_level", json_true());
        else if (row->steps) json_object_set_new(x, "steps", json_true());
        const sreg_entry *rule = sreg_by_rule(row->strat.kind);
        if (rule && rule->note) json_object_set_new(x, "note", json_string(rule->note));
        if (row->routed) {
            json_t *rt = json_object();
            for (size_t m = 0; m < r->n_members; m++)
                json_object_set_new(rt, r->member_names[m], json_integer((json_int_t)row->routed[m]));
            json_object_set_new(x, "units_per_member", rt);
        }
        json_array_append_new(res, x);
    }
    json_object_set_new(o, "results", res);
    return o;
}

static void ev_csv_field(FILE *f, const char *s) {
    if (strpbrk(s, ",\"\n\r")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"') fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
}

int ev_report_ppl_csv(FILE *f, const ev_ppl_result *r) {
    fputs("doc,bytes,words", f);
    for (size_t i = 0; i < r->n_rows; i++) {
        fputc(',', f);
        char h[128];
        snprintf(h, sizeof h, "%s bits_per_byte", r->rows[i].name);
        ev_csv_field(f, h);
    }
    for (size_t i = 0; i < r->n_rows; i++) {
        fputc(',', f);
        char h[128];
        snprintf(h, sizeof h, "%s nll_nats", r->rows[i].name);
        ev_csv_field(f, h);
    }
    fputc('\n', f);
    for (size_t d = 0; d < r->n_docs; d++) {
        fprintf(f, "%zu,%.0f,%.0f", d + 1, r->doc_bytes[d], r->doc_words[d]);
        for (size_t i = 0; i < r->n_rows; i++) {
            double nll = r->doc_nll[i * r->n_docs + d];
            if (r->doc_bytes[d] > 0)
                fprintf(f, ",%.9g", nll / (r->doc_bytes[d] * M_LN2));
            else
                fputs(",", f);
        }
        for (size_t i = 0; i < r->n_rows; i++) fprintf(f, ",%.12g", r->doc_nll[i * r->n_docs + d]);
        fputc('\n', f);
    }
    return ferror(f) ? -1 : 0;
}

void ev_xml_escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        switch (ch) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            if (ch < 0x20 && ch != '\t' && ch != '\n') fputc('?', f); /* not allowed in XML 1.0 */
            else fputc(ch, f);
        }
    }
}

double ev_svg_bars(FILE *f, double y0, double w, const char *title, const char *unit,
                   const ev_bar *bars, size_t n) {
    const double label_w = 150, row_h = 26, top = 30, right = 90;
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(bars[i].value) && bars[i].value > mx) mx = bars[i].value;
        if (isfinite(bars[i].hi) && bars[i].hi > mx) mx = bars[i].hi;
    }
    if (!(mx > 0)) mx = 1;
    double plot_w = w - label_w - right;
    fprintf(f, "<g transform=\"translate(0,%.1f)\">\n<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">",
            y0);
    ev_xml_escape(f, title);
    fputs(" (", f);
    ev_xml_escape(f, unit);
    fputs(")</text>\n", f);
    for (size_t i = 0; i < n; i++) {
        double y = top + (double)i * row_h;
        double v = isfinite(bars[i].value) ? bars[i].value : 0;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">", label_w - 8, y + 15);
        ev_xml_escape(f, bars[i].label);
        fputs("</text>\n", f);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"18\" fill=\"#4878a8\"/>\n", label_w, y + 2,
                plot_w * v / mx);
        if (isfinite(bars[i].lo) && isfinite(bars[i].hi)) {
            double x1 = label_w + plot_w * bars[i].lo / mx, x2 = label_w + plot_w * bars[i].hi / mx;
            fprintf(f,
                    "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#000\" stroke-width=\"1.5\"/>\n"
                    "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#000\"/>\n"
                    "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#000\"/>\n",
                    x1, y + 11, x2, y + 11, x1, y + 5, x1, y + 17, x2, y + 5, x2, y + 17);
        }
        char vb[32];
        ev_fmt(vb, sizeof vb, "%.4g", bars[i].value);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n", w - right + 6, y + 15, vb);
    }
    fputs("</g>\n", f);
    return top + (double)n * row_h + 20;
}
