/* common/opt: every value parser's edges (empty, blanks, junk, signs,
 * overflow, the full unsigned 64-bit range, non-finite doubles, units,
 * lists) and the getopt_long loop (both value forms, short names, "-np",
 * abbreviations, unknown options, missing values, positional arguments,
 * "--", a second scan in the same process, --help lines). */
#include "common/opt.h"
#include "tests/tap.h"

#include <limits.h>
#include <stdint.h>

static char err[256];

static void test_ints(void) {
    int v = 7;
    ok(opt_int("--n", "42", 0, 100, &v, err, sizeof err) == 0 && v == 42, "int: plain");
    ok(opt_int("--n", "-5", -10, 10, &v, err, sizeof err) == 0 && v == -5, "int: negative");
    ok(opt_int("--n", "+5", -10, 10, &v, err, sizeof err) == 0 && v == 5, "int: explicit plus");
    v = 7;
    const char *bad[] = {"", "abc", "12abc", " 12", "12 ", "1.5", "1e3", "0x10", "-", "101", "-11", "--5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "int: '%s' refused", bad[i]);
        ok(opt_int("--n", bad[i], -10, 100, &v, err, sizeof err) < 0 && v == 7, what);
    }
    ok(opt_int("--n", NULL, 0, 1, &v, err, sizeof err) < 0, "int: NULL refused");
    opt_int("--max-tokens", "abc", 0, 10000000, &v, err, sizeof err);
    is_str(err, "--max-tokens 'abc': expected an integer in [0, 10000000]", "int: the message names option, text, range");
    ok(opt_int("--n", "2147483648", INT_MIN, INT_MAX, &v, err, sizeof err) < 0, "int: one past INT_MAX");
    ok(opt_int("--n", "-2147483648", INT_MIN, INT_MAX, &v, err, sizeof err) == 0 && v == INT_MIN, "int: INT_MIN");

    int64_t w = 0;
    ok(opt_i64("--n", "9223372036854775807", INT64_MIN, INT64_MAX, &w, err, sizeof err) == 0 && w == INT64_MAX,
       "i64: INT64_MAX exact");
    ok(opt_i64("--n", "-9223372036854775808", INT64_MIN, INT64_MAX, &w, err, sizeof err) == 0 && w == INT64_MIN,
       "i64: INT64_MIN exact");
    ok(opt_i64("--n", "9223372036854775808", INT64_MIN, INT64_MAX, &w, err, sizeof err) < 0, "i64: overflow refused");
    ok(opt_i64("--n", "-9223372036854775809", INT64_MIN, INT64_MAX, &w, err, sizeof err) < 0, "i64: underflow refused");
}

static void test_u64(void) {
    uint64_t s = 3;
    ok(opt_u64("--seed", "18446744073709551615", 0, UINT64_MAX, &s, err, sizeof err) == 0 && s == UINT64_MAX,
       "u64: 2^64-1 exact");
    ok(opt_u64("--seed", "18446744073709551614", 0, UINT64_MAX, &s, err, sizeof err) == 0 &&
           s == UINT64_MAX - 1, "u64: 2^64-2 exact (a double would round it)");
    ok(opt_u64("--seed", "9007199254740993", 0, UINT64_MAX, &s, err, sizeof err) == 0 && s == 9007199254740993ull,
       "u64: 2^53+1 exact");
    s = 3;
    const char *bad[] = {"18446744073709551616", "-1", "+1", "", " 1", "1x", "1.0", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "u64: '%s' refused", bad[i]);
        ok(opt_u64("--seed", bad[i], 0, UINT64_MAX, &s, err, sizeof err) < 0 && s == 3, what);
    }
    ok(opt_u64("--seed", "11", 0, 10, &s, err, sizeof err) < 0 && strstr(err, "[0, 10]"), "u64: range");
}

static void test_doubles(void) {
    double d = 9;
    ok(opt_double("--t", "0.7", 0, 2, &d, err, sizeof err) == 0 && d == 0.7, "double: plain");
    ok(opt_double("--t", "1e-3", 0, 2, &d, err, sizeof err) == 0 && d == 1e-3, "double: exponent");
    ok(opt_double("--t", ".5", 0, 2, &d, err, sizeof err) == 0 && d == 0.5, "double: leading dot");
    ok(opt_double("--t", "-0.5", -1, 2, &d, err, sizeof err) == 0 && d == -0.5, "double: negative");
    d = 9;
    const char *bad[] = {"", "abc", "1.5x", " 1", "inf", "nan", "-inf", "1e999", "2.5", "-0.1", "infinity"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "double: '%s' refused", bad[i]);
        ok(opt_double("--t", bad[i], 0, 2, &d, err, sizeof err) < 0 && d == 9, what);
    }
    opt_double("--top-p", "x", 0, 1, &d, err, sizeof err);
    is_str(err, "--top-p 'x': expected a number in [0, 1]", "double: the message");

    double s = 0;
    ok(opt_seconds("--to", "30", 0.001, 1e6, &s, err, sizeof err) == 0 && s == 30, "seconds: bare number");
    ok(opt_seconds("--to", "30s", 0.001, 1e6, &s, err, sizeof err) == 0 && s == 30, "seconds: s");
    ok(opt_seconds("--to", "250ms", 0.001, 1e6, &s, err, sizeof err) == 0 && fabs(s - 0.25) < 1e-12, "seconds: ms");
    ok(opt_seconds("--to", "2m", 0.001, 1e6, &s, err, sizeof err) == 0 && s == 120, "seconds: m");
    ok(opt_seconds("--to", "1h", 0.001, 1e6, &s, err, sizeof err) == 0 && s == 3600, "seconds: h");
    s = 5;
    const char *bad_s[] = {"", "s", "30x", "30 s", "0", "-1", "inf", "1d"};
    for (size_t i = 0; i < sizeof bad_s / sizeof bad_s[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "seconds: '%s' refused", bad_s[i]);
        ok(opt_seconds("--to", bad_s[i], 0.001, 1e6, &s, err, sizeof err) < 0 && s == 5, what);
    }

    double w[4];
    size_t n = 0;
    ok(opt_double_list("--w", "0.6,0.4", 0, 1e9, w, 4, &n, err, sizeof err) == 0 && n == 2 && w[0] == 0.6 &&
           w[1] == 0.4, "list: two numbers");
    ok(opt_double_list("--w", "3", 0, 1e9, w, 4, &n, err, sizeof err) == 0 && n == 1 && w[0] == 3, "list: one");
    n = 9;
    const char *bad_l[] = {"", ",", "1,", ",1", "1,,2", "1,x", "1,-1", "1,2,3,4,5", "1, 2"};
    for (size_t i = 0; i < sizeof bad_l / sizeof bad_l[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "list: '%s' refused", bad_l[i]);
        ok(opt_double_list("--w", bad_l[i], 0, 1e9, w, 4, &n, err, sizeof err) < 0 && n == 9, what);
    }
}

/* ---- the loop ---------------------------------------------------------------- */

enum { ID_MODEL = 1, ID_CTX, ID_PAR, ID_JSON, ID_CTX_OLD, ID_MEMBER };
static const opt_spec own[] = {
    {"model", "m", OPT_VALUE, ID_MODEL, "PATH", "a model"},
    {"ctx-size", "c", OPT_VALUE, ID_CTX, "N", "context"},
    {"ctx", NULL, OPT_VALUE, ID_CTX_OLD, "N", NULL},
    {"parallel", "np", OPT_VALUE, ID_PAR, "N", "slots"},
    {"json", NULL, OPT_FLAG, ID_JSON, NULL, "JSON out"},
    OPT_HELP_SPEC,
    OPT_SPEC_END};
static const opt_spec shared[] = {{"member", NULL, OPT_VALUE, ID_MEMBER, "NAME=SPEC", "a member"}, OPT_SPEC_END};
static const opt_spec *const tables[] = {own, shared, NULL};

/* Scans argv; writes "id=value" words into out; returns the last answer. */
static int scan(char **argv, int positional, char *out, size_t outlen) {
    int argc = 0;
    while (argv[argc]) argc++;
    opt_parser p;
    if (positional) opt_begin_positional(&p, "prog", tables, argc, argv);
    else opt_begin(&p, "prog", tables, argc, argv);
    out[0] = 0;
    const char *v;
    int id;
    FILE *saved = stderr, *null = fopen("/dev/null", "w");
    stderr = null; /* the error messages are checked by the integration tests */
    while ((id = opt_next(&p, &v)) != OPT_END && id != OPT_ERROR) {
        size_t k = strlen(out);
        snprintf(out + k, outlen - k, "%s%d=%s", k ? " " : "", id, v ? v : "-");
    }
    stderr = saved;
    fclose(null);
    return id;
}

static void test_loop(void) {
    char out[256];
    char *a[] = {"prog", "--model", "x.gguf", "--ctx-size=128", "-c", "64", "-c32", "-np", "4", "--json",
                 "--member", "a=b=c", "--parallel=2", NULL};
    is_int(scan(a, 0, out, sizeof out), OPT_END, "every form accepted");
    is_str(out, "1=x.gguf 2=128 2=64 2=32 3=4 4=- 6=a=b=c 3=2", "values in order, both forms, short, -np");

    char *alias[] = {"prog", "--ctx", "16", NULL};
    scan(alias, 0, out, sizeof out);
    is_str(out, "5=16", "a hidden alias is still parsed");

    char *value_np[] = {"prog", "--model", "-np", NULL};
    is_int(scan(value_np, 0, out, sizeof out), OPT_END, "'-np' as the value of an option");
    is_str(out, "1=-np", "...is that value, not an option");

    struct { char *argv[5]; const char *what; } bad[] = {
        {{"prog", "--bogus", NULL}, "unknown long option"},
        {{"prog", "-z", NULL}, "unknown short option"},
        {{"prog", "--model", NULL}, "missing value (long)"},
        {{"prog", "-m", NULL}, "missing value (short)"},
        {{"prog", "-np", NULL}, "missing value (-np)"},
        {{"prog", "--json=1", NULL}, "a value given to a flag"},
        {{"prog", "--mod", "x", NULL}, "an abbreviation"},
        {{"prog", "--js", NULL}, "an abbreviation of a flag"},
        {{"prog", "--c", "1", NULL}, "an ambiguous abbreviation"},
        {{"prog", "--ctx-sizes", "1", NULL}, "a longer name than any"},
        {{"prog", "stray", NULL}, "a positional argument where none is taken"},
        {{"prog", "--", "stray", NULL}, "a positional argument after --"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) is_int(scan(bad[i].argv, 0, out, sizeof out), OPT_ERROR, bad[i].what);

    char *pos[] = {"prog", "a.gguf", "--model", "m", "b.gguf", "--", "--json", NULL};
    is_int(scan(pos, 1, out, sizeof out), OPT_END, "positional arguments allowed");
    is_str(out, "-2=a.gguf 1=m -2=b.gguf -2=--json", "...in order, and everything after -- is positional");

    char *again[] = {"prog", "-c", "8", NULL};
    scan(again, 0, out, sizeof out);
    is_str(out, "2=8", "a second scan in the same process starts afresh");
    char *mid[] = {"prog", "--bogus", NULL};
    scan(mid, 0, out, sizeof out);
    scan(again, 0, out, sizeof out);
    is_str(out, "2=8", "...also after a scan that failed");
}

static void test_help(void) {
    char buf[2048] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    opt_help(f, own);
    fclose(f);
    ok(strstr(buf, "  -m, --model PATH") != NULL, "help: short, long and value name");
    ok(strstr(buf, "  -np, --parallel N") != NULL, "help: a two-letter short name");
    ok(strstr(buf, "  --json ") != NULL && strstr(buf, "JSON out") != NULL, "help: a flag");
    ok(strstr(buf, "--ctx N") == NULL, "help: an alias is not listed");
    ok(strstr(buf, "-h, --help") != NULL, "help: --help is listed");
}

int main(void) {
    test_ints();
    test_u64();
    test_doubles();
    test_loop();
    test_help();
    return tap_done();
}
