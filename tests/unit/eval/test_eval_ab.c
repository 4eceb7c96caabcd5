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

/* The SVG is a figure for a paper: axes with ticks, solo and ensemble
 * strategies drawn apart with a legend, a caption, names never clipped. */
static void check_svg(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/report.svg", dir);
    FILE *f = fopen(path, "r");
    char *svg = calloc(1, 1 << 16);
    size_t n = f && svg ? fread(svg, 1, (1 << 16) - 1, f) : 0;
    if (f) fclose(f);
    if (!ok(n > 0, "the SVG is read")) {
        free(svg);
        return;
    }
    int ticks = 0;
    for (const char *p = svg; (p = strstr(p, "class=\"tick\"")); p++) ticks++;
    ok(ticks >= 6 && strstr(svg, "class=\"axis\""), "each panel has an axis with ticks");
    ok(strstr(svg, "class=\"solo\"") && strstr(svg, "class=\"ensemble\"") && strstr(svg, "class=\"legend\"") &&
           strstr(svg, "ensemble strategy"),
       "solo and ensemble strategies are drawn apart, with a legend");
    ok(strstr(svg, "class=\"caption\"") && strstr(svg, "Judge: judge (j.gguf)") && strstr(svg, "2026-01-01") &&
           strstr(svg, "consort test"),
       "the caption names members, judge, date and version");
    ok(strstr(svg, "bits per byte") && strstr(svg, "bytes per second"), "the axes say their units");
    /* every right-aligned label has room on its left: x >= 6.5 px per character */
    int room = 1, labels = 0;
    for (const char *p = svg; (p = strstr(p, "<text x=\"")); p++) {
        double x;
        const char *end = strchr(p, '>');
        if (!end || sscanf(p, "<text x=\"%lf\"", &x) != 1 || !strstr(p, "text-anchor=\"end\"") ||
            strstr(p, "text-anchor=\"end\"") > end)
            continue;
        const char *close = strstr(end, "</text>");
        size_t chars = 0;
        for (const char *c = end + 1; close && c < close; c++) {
            if (*c == '&') {
                while (c < close && *c != ';') c++;
            }
            chars += ((unsigned char)*c & 0xC0) != 0x80;
        }
        labels++;
        if (x < 6.5 * (double)chars) room = 0;
    }
    ok(labels == 4 && room, "every strategy name fits left of the plot (not clipped)");
    free(svg);
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
    snprintf(ab->strategies[1], 80, "mix<&> with a long name that must not be clipped");
    ab->caption = strdup("Members: a (a.gguf), b (b.gguf). Judge: judge (j.gguf). 2 prompts. 2026-01-01, consort test.");
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
            for (int m = 0; m < 2; m++) {
                o->step_ms[m] = 10 + m;
                o->steps_won[m] = s ? 2 - m : (m == 0 ? 3 : 0); /* mix: a 2 of 4, b 1 of 4 */
                o->bytes_won[m] = s ? (double)o->len / (m + 1) : (m == 0 ? (double)o->len : 0);
            }
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
    json_t *ag = json_object_get(json_object_get(s0, "agreement"), "mix<&> with a long name that must not be clipped");
    is_near(json_number_value(json_object_get(ag, "identical")), 0.5, 1e-12, "identical on 1 of 2 prompts");
    is_near(json_number_value(json_object_get(ag, "common_prefix")), (12.0 / 16.0 + 1.0) / 2, 1e-12,
            "mean common prefix share");
    json_t *s1 = json_array_get(sm, 1);
    is_str(json_string_value(json_object_get(j, "best_solo")), "solo:a", "the best solo strategy");
    is_str(json_string_value(json_object_get(s1, "kind")), "ensemble", "kinds: ensemble");
    is_str(json_string_value(json_object_get(s0, "kind")), "solo", "and solo");
    is_near(json_number_value(json_object_get(s1, "diff_vs_best_solo")), 1.0, 1e-9,
            "paired difference from the best solo strategy: 4 - 3 bits per byte");
    json_t *dci = json_object_get(s1, "diff_ci95");
    ok(fabs(json_number_value(json_array_get(dci, 0)) - 1.0) < 1e-9 &&
           fabs(json_number_value(json_array_get(dci, 1)) - 1.0) < 1e-9,
       "paired: the same per-prompt difference on every prompt gives the interval [1, 1]");
    json_t *won = json_object_get(json_object_get(s1, "member_agreement"), "a");
    is_near(json_number_value(json_object_get(won, "steps_won")), 0.5, 1e-12, "member a won 4 of 8 steps");
    is_near(json_number_value(json_object_get(won, "bytes_won")), 1.0, 1e-12, "and proposed every byte");
    won = json_object_get(json_object_get(s1, "member_agreement"), "b");
    is_near(json_number_value(json_object_get(won, "steps_won")), 0.25, 1e-12, "member b won 2 of 8 steps");
    is_near(json_number_value(json_object_get(won, "bytes_won")), 0.5, 1e-12, "and proposed half of the bytes");
    ok(json_string_value(json_object_get(j, "caption")) != NULL, "the caption is in the JSON");
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
    check_svg(dir);
    snprintf(cmd, sizeof cmd, "grep -q 'Against the best solo strategy' %s/report.md && grep -q 'Member agreement' %s/report.md",
             dir, dir);
    ok(system(cmd) == 0, "report.md: the paired differences and the member agreement");
    snprintf(cmd, sizeof cmd, "! grep -q 'mix<' %s/report.md && grep -q 'mix&lt;&amp;' %s/report.md && grep -q 'The \\\\| cat' %s/report.md", dir, dir, dir);
    ok(system(cmd) == 0, "markdown escapes names and pipes");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleanup");
    ev_ab_free(ab);
    return tap_done();
}
