/* common/prom: the exact exposition text for a counter, a labelled gauge
 * (with a value that needs escaping), the shorthands and a histogram;
 * bucket placement. */
#include "common/prom.h"
#include "tests/tap.h"

int main(void) {
    sbuf b = {0};
    int bad = prom_family(&b, "x_total", "counter", "Things done.");
    bad |= prom_sample_u(&b, "x_total", NULL, 0, 18446744073709551615ULL);
    ok(!bad, "counter written");
    is_str(b.p, "# HELP x_total Things done.\n# TYPE x_total counter\nx_total 18446744073709551615\n",
           "counter text");

    b.n = 0;
    prom_label l[] = {{"member", "a\"b\\c\nd"}, {"status", "200"}};
    bad = prom_family(&b, "g", "gauge", "A gauge.");
    bad |= prom_sample_i(&b, "g", l, 2, -3);
    bad |= prom_sample(&b, "g", l + 1, 1, "1.5");
    ok(!bad, "gauge written");
    is_str(b.p,
           "# HELP g A gauge.\n# TYPE g gauge\n"
           "g{member=\"a\\\"b\\\\c\\nd\",status=\"200\"} -3\n"
           "g{status=\"200\"} 1.5\n",
           "labelled gauge text, label value escaped");

    b.n = 0;
    bad = prom_counter(&b, "c_total", "Count.", 5) | prom_gauge(&b, "q", "Queue.", -2);
    ok(!bad, "counter and gauge shorthands written");
    is_str(b.p, "# HELP c_total Count.\n# TYPE c_total counter\nc_total 5\n"
                "# HELP q Queue.\n# TYPE q gauge\nq -2\n",
           "shorthands: family lines and one unlabelled sample");

    static const double bounds[] = {0.01, 0.5, 2};
    prom_hist h;
    prom_hist_init(&h, bounds, 3);
    prom_hist_observe(&h, 0.01);  /* le 0.01 (bounds are inclusive) */
    prom_hist_observe(&h, 0.25);  /* le 0.5 */
    prom_hist_observe(&h, 0.5);   /* le 0.5 */
    prom_hist_observe(&h, 30);    /* +Inf only */
    is_int((long long)h.count, 4, "histogram counts every observation");
    b.n = 0;
    ok(prom_histogram(&b, "lat_seconds", "Latency.", &h) == 0, "histogram written");
    is_str(b.p,
           "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
           "lat_seconds_bucket{le=\"0.01\"} 1\n"
           "lat_seconds_bucket{le=\"0.5\"} 3\n"
           "lat_seconds_bucket{le=\"2\"} 3\n"
           "lat_seconds_bucket{le=\"+Inf\"} 4\n"
           "lat_seconds_sum 30.760000\n"
           "lat_seconds_count 4\n",
           "histogram text: cumulative buckets, sum, count");
    sb_free(&b);
    return tap_done();
}
