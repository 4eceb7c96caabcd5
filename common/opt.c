/* common/opt.c: strict option values and the getopt_long loop (opt.h).
 *
 * Why it is shaped so. Every program used to walk argv by hand, each with
 * its own strictness (atoi here, strtod there, "--opt=value" in some
 * places). The value parsers are small pure functions over strtoll /
 * strtoull / strtod that refuse anything but the whole text as a number in
 * range, so each caller states the range once and the message is the same
 * everywhere. The loop is getopt_long in RETURN_IN_ORDER mode ("-" first
 * in the short string): argv is never permuted, positional arguments come
 * back where they stand (consort run's model files), and the tables that
 * produce `struct option[]` also produce --help.
 *
 * State. The parser owns no memory; getopt_long's globals (optind, optarg,
 * its hidden position inside a word) are reset by opt_begin with one call
 * over an empty argument list, which is the portable way to start a fresh
 * scan in the same process. Ids: getopt returns 256 + the table index for
 * long names (so an index never collides with a short letter), the letter
 * for one-letter short names; two-letter short names ("-np") are not
 * something getopt knows, so opt_next takes such a word itself when it is
 * the next word to scan (never when it is the value of an option before it).
 *
 * What may change: more value types (a boolean, a list of names) go next
 * to the others; the loop should stay a loop, not a framework.
 */
#include "common/opt.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- value parsers ------------------------------------------------------- */

/* strto* skip leading blanks and accept a sign; we want neither a blank nor
 * an empty text, and the unsigned parser wants no sign at all. */
static int starts_like_number(const char *s, int allow_sign) {
    if (!s || !*s) return 0;
    if (*s == '-' || *s == '+') return allow_sign && (s[1] >= '0' && s[1] <= '9');
    return (*s >= '0' && *s <= '9') || *s == '.';
}

int opt_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    long long v = starts_like_number(s, 1) ? strtoll(s, &end, 10) : 0;
    if (!end || *end || errno || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected an integer in [%" PRId64 ", %" PRId64 "]", opt, s ? s : "",
                 lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int opt_int(const char *opt, const char *s, int lo, int hi, int *out, char *err, size_t errlen) {
    int64_t v;
    if (opt_i64(opt, s, lo, hi, &v, err, errlen)) return -1;
    *out = (int)v;
    return 0;
}

int opt_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out, char *err,
            size_t errlen) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = starts_like_number(s, 0) && *s != '.' ? strtoull(s, &end, 10) : 0;
    if (!end || *end || errno || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected an integer in [%" PRIu64 ", %" PRIu64 "]", opt, s ? s : "",
                 lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses the number at the start of s; *end after it. -1 unless finite. */
static int leading_double(const char *s, double *out, char **end) {
    *end = NULL;
    if (!starts_like_number(s, 1)) return -1;
    errno = 0;
    double v = strtod(s, end);
    if (*end == s || errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int opt_double(const char *opt, const char *s, double lo, double hi, double *out, char *err,
               size_t errlen) {
    char *end;
    double v;
    if (leading_double(s, &v, &end) || *end || v < lo || v > hi) {
        snprintf(err, errlen, "%s '%s': expected a number in [%g, %g]", opt, s ? s : "", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static double unit_seconds(const char *u) {
    static const struct { const char *name; double s; } units[] = {
        {"", 1}, {"s", 1}, {"ms", 1e-3}, {"m", 60}, {"h", 3600}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(u, units[i].name)) return units[i].s;
    return 0;
}

int opt_seconds(const char *opt, const char *s, double lo, double hi, double *out, char *err,
                size_t errlen) {
    char *end;
    double v, unit = 0;
    if (!leading_double(s, &v, &end)) unit = unit_seconds(end);
    if (unit == 0 || v * unit < lo || v * unit > hi) {
        snprintf(err, errlen, "%s '%s': expected a duration in [%g, %g] seconds (like 30, 30s, 250ms, 2m)", opt,
                 s ? s : "", lo, hi);
        return -1;
    }
    *out = v * unit;
    return 0;
}

int opt_double_list(const char *opt, const char *s, double lo, double hi, double *out, size_t max,
                    size_t *n, char *err, size_t errlen) {
    size_t k = 0;
    for (const char *p = s ? s : "";;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64], *end;
        double v;
        int bad = k >= max || len == 0 || len >= sizeof item;
        if (!bad) {
            memcpy(item, p, len);
            item[len] = 0;
            bad = leading_double(item, &v, &end) || *end || v < lo || v > hi;
        }
        if (bad) {
            snprintf(err, errlen, "%s '%s': expected at most %zu comma-separated numbers in [%g, %g]", opt,
                     s ? s : "", max, lo, hi);
            return -1;
        }
        out[k++] = v;
        if (!comma) break;
        p = comma + 1;
    }
    *n = k;
    return 0;
}

/* ---- the loop -------------------------------------------------------------- */

enum { LONG_BASE = 256 };

static void add_spec(opt_parser *p, const opt_spec *s) {
    int i = 0;
    while (i < OPT_MAX && p->spec[i]) i++;
    if (i == OPT_MAX) {
        p->broken = 1;
        return;
    }
    p->spec[i] = s;
    p->longopts[i] = (struct option){s->name, s->has_arg, NULL, LONG_BASE + i};
    if (s->shrt && strlen(s->shrt) == 1) {
        size_t n = strlen(p->shorts);
        p->shorts[n++] = s->shrt[0];
        if (s->has_arg == OPT_VALUE) p->shorts[n++] = ':';
        p->shorts[n] = 0;
    }
}

static void begin(opt_parser *p, const char *prog, const opt_spec *const *tables, int argc, char **argv,
                  int positional) {
    memset(p, 0, sizeof *p);
    p->prog = prog;
    p->argc = argc;
    p->argv = argv;
    p->positional = positional;
    strcpy(p->shorts, "-:"); /* in order; ':' = report a missing value as ':' */
    for (size_t t = 0; tables && tables[t]; t++)
        for (const opt_spec *s = tables[t]; s->name; s++) add_spec(p, s);
    /* A fresh scan: optind = 0 makes getopt forget its position in any
     * earlier argv; one call over an empty list sets it up again. */
    char *empty[] = {(char *)prog, NULL};
    opterr = 0;
    optind = 0;
    getopt_long(1, empty, p->shorts, p->longopts, NULL);
}

void opt_begin(opt_parser *p, const char *prog, const opt_spec *const *tables, int argc, char **argv) {
    begin(p, prog, tables, argc, argv, 0);
}

void opt_begin_positional(opt_parser *p, const char *prog, const opt_spec *const *tables, int argc,
                          char **argv) {
    begin(p, prog, tables, argc, argv, 1);
}

static const opt_spec *by_short(const opt_parser *p, const char *shrt, size_t len) {
    for (int i = 0; i < OPT_MAX && p->spec[i]; i++)
        if (p->spec[i]->shrt && strlen(p->spec[i]->shrt) == len && !strncmp(p->spec[i]->shrt, shrt, len))
            return p->spec[i];
    return NULL;
}

static int fail(const opt_parser *p, const char *what, const char *word) {
    fprintf(stderr, "%s: %s '%s' (see --help)\n", p->prog, what, word);
    return OPT_ERROR;
}

/* A word like "-np" naming a short name of two or more letters. */
static int take_long_short(opt_parser *p, const opt_spec *s, const char **value) {
    const char *word = p->argv[optind++];
    if (s->has_arg == OPT_VALUE) {
        if (optind >= p->argc) return fail(p, "missing value for option", word);
        *value = p->argv[optind++];
    }
    return s->id;
}

static int positional_arg(opt_parser *p, const char *arg, const char **value) {
    if (!p->positional) return fail(p, "unexpected argument", arg);
    *value = arg;
    return OPT_POSITIONAL;
}

/* "--strat": unknown, or the start of several names; name them. */
static int unknown_long(const opt_parser *p, const char *word) {
    size_t len = strcspn(word, "=");
    char names[256] = "";
    for (int i = 0; i < OPT_MAX && p->spec[i] && len > 2; i++) {
        size_t k = strlen(names);
        if (!strncmp(p->spec[i]->name, word + 2, len - 2) && k + strlen(p->spec[i]->name) + 8 < sizeof names)
            snprintf(names + k, sizeof names - k, "%s--%s", k ? ", " : "", p->spec[i]->name);
    }
    if (!names[0] || strncmp(word, "--", 2)) return fail(p, "unknown option", word);
    fprintf(stderr, "%s: unknown option '%s' (did you mean %s? see --help)\n", p->prog, word, names);
    return OPT_ERROR;
}

/* getopt said '?' or ':'; word is the argument being scanned. */
static int explain(opt_parser *p, int c, const char *word) {
    char shrt[3] = {'-', (char)optopt, 0};
    int known = optopt >= LONG_BASE;
    if (c == ':') return fail(p, "missing value for option", known ? word : shrt);
    if (known) return fail(p, "option takes no value", word);
    if (optopt) return fail(p, "unknown option", shrt);
    return unknown_long(p, word);
}

static int abbreviated(const char *word, const char *name) {
    size_t n = strlen(name);
    return strncmp(word, "--", 2) || strncmp(word + 2, name, n) || (word[2 + n] && word[2 + n] != '=');
}

int opt_next(opt_parser *p, const char **value) {
    *value = NULL;
    if (p->broken) {
        fprintf(stderr, "%s: more than %d options declared (a bug)\n", p->prog, OPT_MAX);
        return OPT_ERROR;
    }
    if (p->rest) { /* after "--": everything is positional */
        if (p->rest >= p->argc) return OPT_END;
        return positional_arg(p, p->argv[p->rest++], value);
    }
    int at = optind;
    const char *word = at < p->argc ? p->argv[at] : NULL;
    if (word && word[0] == '-' && word[1] && word[1] != '-' && strlen(word) > 2) {
        const opt_spec *s = by_short(p, word + 1, strlen(word + 1));
        if (s) return take_long_short(p, s, value);
    }
    int c = getopt_long(p->argc, p->argv, p->shorts, p->longopts, NULL);
    if (c == -1) {
        if (optind >= p->argc) return OPT_END;
        p->rest = optind;
        return opt_next(p, value);
    }
    if (c == 1) return positional_arg(p, optarg, value);
    if (c == '?' || c == ':') return explain(p, c, word ? word : "");
    const opt_spec *s = c >= LONG_BASE ? p->spec[c - LONG_BASE] : by_short(p, (char[]){(char)c}, 1);
    if (!s) return fail(p, "unknown option", word ? word : "");
    if (c >= LONG_BASE && abbreviated(word, s->name)) {
        fprintf(stderr, "%s: '%s' is not an option; write it out: --%s (see --help)\n", p->prog, word, s->name);
        return OPT_ERROR;
    }
    *value = optarg;
    return s->id;
}

/* ---- help ---------------------------------------------------------------------- */

enum { HELP_INDENT = 27, HELP_WIDTH = 80 };

/* Prints text from the current column HELP_INDENT, wrapped at spaces so no
 * line passes HELP_WIDTH (a single longer word stays whole). */
static void print_wrapped(FILE *f, const char *text) {
    int col = HELP_INDENT;
    while (*text) {
        size_t word = strcspn(text, " ");
        if (col > HELP_INDENT && col + 1 + (int)word > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
        } else if (col > HELP_INDENT) {
            fputc(' ', f);
            col++;
        }
        fwrite(text, 1, word, f);
        col += (int)word;
        text += word;
        while (*text == ' ') text++;
    }
    fputc('\n', f);
}

void opt_help(FILE *f, const opt_spec *table) {
    for (const opt_spec *s = table; s->name; s++) {
        if (!s->help) continue;
        char left[64];
        snprintf(left, sizeof left, "%s%s%s--%s%s%s", s->shrt ? "-" : "", s->shrt ? s->shrt : "",
                 s->shrt ? ", " : "", s->name, s->arg ? " " : "", s->arg ? s->arg : "");
        if (strlen(left) <= HELP_INDENT - 3) fprintf(f, "  %-*s ", HELP_INDENT - 3, left);
        else fprintf(f, "  %s\n%*s", left, HELP_INDENT, "");
        print_wrapped(f, s->help);
    }
}
