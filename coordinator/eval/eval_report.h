/* coordinator/eval/eval_report.h: what `consort ppl` and `consort ab` write.
 *
 * ppl:
 *  - ev_report_ppl_table(): the human table (stdout).
 *  - ev_report_ppl_json(): the --json object, docs/EVALUATION.md has its
 *    shape: {"file", "documents", "bytes", "unit", "results": [{"name",
 *    "bits_per_byte", "byte_perplexity", "word_perplexity",
 *    "token_perplexity" (null for ensembles), "ci95": [lo, hi], ...}], ...}.
 *    Non-finite numbers are written as null.
 *  - ev_report_ppl_csv(): one line per document (--per-doc).
 *
 * SVG (ab): ev_svg_bars() draws one horizontal bar chart panel per call into
 * a buffer: a value and an interval per label; all text is XML-escaped, so
 * the document is well-formed whatever the labels are.
 *
 * Contract: the writers return 0, or -1 when writing fails.
 */
#ifndef CONSORT_EVAL_REPORT_H
#define CONSORT_EVAL_REPORT_H

#include "coordinator/eval/eval_ppl.h"

#include <jansson.h>
#include <stdio.h>

int ev_report_ppl_table(FILE *f, const char *file, const ev_corpus *c, const ev_ppl_result *r);
json_t *ev_report_ppl_json(const char *file, const ev_corpus *c, const ev_ppl_result *r);
int ev_report_ppl_csv(FILE *f, const ev_ppl_result *r);

/* A number or null when not finite. */
json_t *ev_json_num(double x);

/* XML text escaping into f. */
void ev_xml_escape(FILE *f, const char *s);

typedef struct {
    const char *label;
    double value, lo, hi;  /* lo/hi NaN: no interval */
} ev_bar;

/* One panel at vertical offset y0 of width w; returns the panel's height. */
double ev_svg_bars(FILE *f, double y0, double w, const char *title, const char *unit,
                   const ev_bar *bars, size_t n);

#endif
