/* common/version.h: the project's version, printed by `--version` of
 * consort-worker and of every consort command (one place, so they agree). */
#ifndef CONSORT_VERSION_H
#define CONSORT_VERSION_H

#define CONSORT_VERSION "0.1.0"

#endif
