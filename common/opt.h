/* common/opt.h: command-line options for every program of the project
 * (consort-worker and each `consort COMMAND`): strict value parsers, and a
 * thin loop over getopt_long driven by one table per group of options.
 *
 * Value parsers. Each takes the option's name (for the message), the text,
 * the accepted range and an output; it returns 0 and sets *out, or -1,
 * leaves *out alone and writes a message naming the option, the text and
 * the accepted range into err, e.g.
 *     "--max-tokens 'abc': expected an integer in [0, 10000000]".
 * Numbers are decimal, the whole text must be the number (no leading
 * spaces, no trailing junk, not empty), and a value that does not fit the
 * type is out of range, never wrapped or rounded:
 *     opt_u64("--seed", "18446744073709551615", 0, UINT64_MAX, &s, ...)
 * gives exactly 2^64-1; "-1" is rejected there.
 *
 * Option tables. A command declares each option once as an opt_spec (long
 * name, short name, whether it takes a value, the id opt_next returns, the
 * help line) and lists its tables, NULL-terminated, so shared groups (the
 * member options, the server options) are written once:
 *
 *     static const opt_spec mine[] = {
 *         {"max-tokens", "n", OPT_VALUE, ID_MAX_TOKENS, "N", "steps to generate (64)"},
 *         OPT_HELP_SPEC, OPT_VERSION_SPEC, OPT_SPEC_END};
 *     const opt_spec *tables[] = {mine, members_cli_opts, NULL};
 *     opt_parser p;
 *     opt_begin(&p, "consort generate", tables, argc, argv);
 *     const char *v;
 *     for (int id; (id = opt_next(&p, &v)) != OPT_END;) {
 *         if (id == OPT_ERROR) return 2;            // message already printed
 *         ...switch on id, parse v with opt_int() & co...
 *     }
 *     // no clean-up: the parser owns no memory
 *
 * Contract of the loop:
 *  - "--name value", "--name=value", "-x value" and "-xvalue" all work;
 *    a short name of two or more letters (llama.cpp's "-np") is accepted as
 *    a separate word ("-np 4").
 *  - Abbreviated long names are refused ("--thread" is not "--threads"), so
 *    a new option can never change what an existing command line means.
 *  - Unknown options, missing values, values given to flags and, unless
 *    the parser allows them (opt_begin_positional), positional arguments
 *    are an error: opt_next prints "PROG: what is wrong (see --help)" on
 *    stderr and returns OPT_ERROR; commands exit with status 2.
 *  - A positional argument is returned in order as OPT_POSITIONAL.
 *  - opt_help() prints one aligned line per option that has a help text
 *    (aliases have none), so --help always lists exactly what is parsed.
 *  - opt_begin resets getopt_long's global state, so commands may be run
 *    again in the same process (the unit tests do).
 *    Not thread-safe (getopt_long is not): parse in the main thread.
 */
#ifndef CONSORT_OPT_H
#define CONSORT_OPT_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- value parsers ------------------------------------------------------ */

int opt_int(const char *opt, const char *s, int lo, int hi, int *out, char *err, size_t errlen);
int opt_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out, char *err, size_t errlen);
int opt_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out, char *err,
            size_t errlen);
/* A finite decimal number (exponent allowed: "1e-3"); inf and nan refused. */
int opt_double(const char *opt, const char *s, double lo, double hi, double *out, char *err,
               size_t errlen);
/* A duration in seconds: a number with an optional unit, "30", "30s",
 * "250ms", "2m" or "1h"; *out is in seconds. */
int opt_seconds(const char *opt, const char *s, double lo, double hi, double *out, char *err,
                size_t errlen);
/* Comma-separated numbers, each checked like opt_double: "0.6,0.4". At
 * most max values; *n is how many. Empty items ("1,,2") are refused. */
int opt_double_list(const char *opt, const char *s, double lo, double hi, double *out, size_t max,
                    size_t *n, char *err, size_t errlen);

/* ---- option tables and the loop ----------------------------------------- */

enum { OPT_FLAG = no_argument, OPT_VALUE = required_argument };

/* ids below 0 are the loop's own answers; ids of options are > 0 */
enum { OPT_END = 0, OPT_ERROR = -1, OPT_POSITIONAL = -2, OPT_ID_HELP = 9000, OPT_ID_VERSION = 9001 };

typedef struct {
    const char *name;  /* long name without dashes: "ctx-size"; NULL ends a table */
    const char *shrt;  /* short name without the dash: "c", "np"; NULL if none */
    int has_arg;       /* OPT_FLAG or OPT_VALUE */
    int id;            /* what opt_next returns; unique across a command's tables */
    const char *arg;   /* the value's name in --help ("N", "PATH"); NULL for flags */
    const char *help;  /* one line for --help; NULL hides it (an alias) */
} opt_spec;

#define OPT_SPEC_END {NULL, NULL, 0, 0, NULL, NULL}
#define OPT_HELP_SPEC {"help", "h", OPT_FLAG, OPT_ID_HELP, NULL, "this text"}
#define OPT_VERSION_SPEC {"version", NULL, OPT_FLAG, OPT_ID_VERSION, NULL, "print the version and exit"}

#define OPT_MAX 64 /* options of one command, all tables together */

typedef struct {
    const char *prog;               /* "consort generate", for messages */
    const opt_spec *spec[OPT_MAX];  /* by getopt's long index */
    struct option longopts[OPT_MAX + 1];
    char shorts[3 * OPT_MAX + 4];
    int argc;
    char **argv;                    /* the caller's, not modified */
    int positional;                 /* positional arguments allowed */
    int rest;                       /* after "--": the next positional's index */
    int broken;                     /* more than OPT_MAX options: a bug */
} opt_parser;

void opt_begin(opt_parser *p, const char *prog, const opt_spec *const *tables, int argc, char **argv);
void opt_begin_positional(opt_parser *p, const char *prog, const opt_spec *const *tables, int argc,
                          char **argv);
/* The next option's id (*value: its value, or the positional argument), or
 * OPT_END, OPT_POSITIONAL, OPT_ERROR (printed). */
int opt_next(opt_parser *p, const char **value);

/* Prints every documented option of the tables, one line each:
 *   "  -c, --ctx-size N       context length ..." */
void opt_help(FILE *f, const opt_spec *table);

#endif
