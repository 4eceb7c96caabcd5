/* common/log.h: one-line, timestamped log messages on stderr.
 *
 * Contract: log_msg() never fails and never allocates; each call writes one
 * whole line (a single write(2)), so lines from threads do not interleave.
 * The threshold comes from log_set_level() or, at first use, from the
 * environment variable CONSORT_LOG (error|warn|info|debug; default info).
 */
#ifndef CONSORT_LOG_H
#define CONSORT_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level level);
void log_set_name(const char *name); /* prefix, e.g. "worker:a" (copied) */
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
