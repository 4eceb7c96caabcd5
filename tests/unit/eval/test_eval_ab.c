/* consort ab's measures and reports on a hand-made table of outputs:
 * distinct-n, agreement, conditional scoring, the three files, and the SVG
 * parsed as XML (python3's xml.etree, when python3 is present). */
#define _GNU_SOURCE
#include "coordinator/eval/eval_ab.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <unistd.h>

static int file_exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, R_OK) == 0;
}

int main(void) {
    const char *t1 = "the cat the cat";
    size_t l1 = strlen(t1);
    is_near(ev_distinct_n(&t1, &l1, 1, 1), 0.5, 1e-12, "distinct-1: 2 of 4 words");
    is_near(ev_distinct_n(&t1, &l1, 1, 2), 2.0 / 3.0, 1e-12, "distinct-2: 2 of 3 bigrams");
    const char *t2[] = {"a b", "a b"};
    size_t l2[] = {3, 3};
    is_near(ev_distinct_n(t2, l2, 2, 2), 0.5, 1e-12, "distinct-2 across outputs; no bigram across texts");
    const char *t3 = "x";
    size_t l3 = 1;
    ok(isnan(ev_distinct_n(&t3, &l3, 1, 2)), "no bigrams: NaN");
    is_int(ev_common_prefix("abcd", 4, "abxd", 4), 2, "common prefix");

    /* prompt "Hi" + output " there": tokens "Hi" | " the" | "re" */
    ev_token tk[] = {{0, 2, -1, NAN, NAN}, {2, 6, -2, NAN, NAN}, {6, 8, -0.5, NAN, NAN}};
    double nll, bytes;
    ev_ab_conditional(tk, 3, 2, 8, &nll, &bytes);
    ok(nll == 2.5 && bytes == 6, "conditional: tokens after the prompt");
    /* a token straddling the prompt's end counts whole */
    ev_token tk2[] = {{0, 1, -1, NAN, NAN}, {1, 4, -3, NAN, NAN}};
    ev_ab_conditional(tk2, 2, 2, 4, &nll, &bytes);
    ok(nll == 3 && bytes == 3, "conditional: straddling token counted with its bytes");
    ev_ab_conditional(tk2, 2, 4, 4, &nll, &bytes);
    ok(nll == 0 && bytes == 0, "empty output: nothing");

    ev_ab *ab = ev_ab_new(2, 2, 2, 3);
    ok(ab != NULL, "table");
    ab->has_judge = 1;
    ab->max_tokens = 8;
    ab->resamples = 200;
    snprintf(ab->strategies[0], 80, "solo:a");
    snprintf(ab->strategies[1], 80, "mix<&>");
    snprintf(ab->scorers[0], 64, "a");
    snprintf(ab->scorers[1], 64, "b");
    snprintf(ab->scorers[2], 64, "judge");
    const char *outs[] = {"Once upon a time", "Once upon a day", "The | cat\nsat", "The | cat\nsat"};
    for (int p = 0; p < 2; p++) {
        ab->prompts[p] = strdup(p ? "Then" : "Start <x>");
        for (int s = 0; s < 2; s++) {
            ev_ab_output *o = &ab->out[p * 2 + s];
            o->text = strdup(outs[p * 2 + s]);
            o->len = strlen(o->text);
            o->steps = 4;
            o->seconds = 0.5 + s;
            snprintf(o->finish, sizeof o->finish, "length");
            for (int m = 0; m < 2; m++) o->step_ms[m] = 10 + m;
            for (int k = 0; k < 3; k++) {
                o->nll[k] = (double)(1 + k + s) * (double)o->len * M_LN2;
                o->bytes[k] = (double)o->len;
            }
        }
    }
    json_t *j = ev_ab_json(ab);
    json_t *sm = json_object_get(j, "summary");
    ok(json_array_size(sm) == 2, "summary per strategy");
    json_t *s0 = json_array_get(sm, 0);
    is_near(json_number_value(json_object_get(s0, "quality_bits_per_byte")), 3.0, 1e-9,
            "quality is the judge's bits per byte");
    is_near(json_number_value(json_object_get(json_object_get(json_object_get(s0, "bits_per_byte_under"), "b"),
                                              "bits_per_byte")),
            2.0, 1e-9, "bits per byte under member b");
    double bps = (16.0 + 13.0) / 1.0;
    is_near(json_number_value(json_object_get(s0, "bytes_per_s")), bps, 1e-9, "bytes/s = sum bytes / sum seconds");
    json_t *ag = json_object_get(json_object_get(s0, "agreement"), "mix<&>");
    is_near(json_number_value(json_object_get(ag, "identical")), 0.5, 1e-12, "identical on 1 of 2 prompts");
    is_near(json_number_value(json_object_get(ag, "common_prefix")), (12.0 / 16.0 + 1.0) / 2, 1e-12,
            "mean common prefix share");
    json_decref(j);

    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/consort-test-ab-%d", (int)getpid());
    char err[256];
    ok(ev_ab_write_reports(ab, dir, err, sizeof err) == 0, "reports written");
    ok(file_exists(dir, "report.md") && file_exists(dir, "report.json") && file_exists(dir, "report.svg"),
       "the three files exist");
    char cmd[1024];
    if (system("command -v python3 >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "python3 -c \"import sys,json,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); "
                 "assert r.tag.endswith('svg'); json.load(open(sys.argv[2]))\" %s/report.svg %s/report.json",
                 dir, dir);
        ok(system(cmd) == 0, "report.svg parses as XML with an <svg> root; report.json parses");
    } else {
        ok(1, "# SKIP no python3 to parse the SVG");
    }
    snprintf(cmd, sizeof cmd, "! grep -q 'mix<' %s/report.md && grep -q 'mix&lt;&amp;' %s/report.md && grep -q 'The \\\\| cat' %s/report.md", dir, dir, dir);
    ok(system(cmd) == 0, "markdown escapes names and pipes");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleanup");
    ev_ab_free(ab);
    return tap_done();
}
