/* common/log.c: see log.h. Kept dependency-free on purpose: it is the one
 * thing every error path calls. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int level = -1;
static char name[48] = "consort";

static int level_from_env(void) {
    const char *e = getenv("CONSORT_LOG");
    if (!e) return LOG_INFO;
    if (!strcmp(e, "error")) return LOG_ERROR;
    if (!strcmp(e, "warn")) return LOG_WARN;
    if (!strcmp(e, "debug")) return LOG_DEBUG;
    return LOG_INFO;
}

void log_set_level(enum log_level l) { level = (int)l; }

void log_set_name(const char *n) {
    snprintf(name, sizeof name, "%s", n ? n : "consort");
}

int log_enabled(enum log_level l) {
    if (level < 0) level = level_from_env();
    return (int)l <= level;
}

void log_msg(enum log_level l, const char *fmt, ...) {
    static const char *tags[] = {"error", "warn", "info", "debug"};
    if (!log_enabled(l)) return;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s %s: ", tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, name, tags[l]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
