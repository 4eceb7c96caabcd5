/* coordinator/engine/spawn.h: running a consort-worker on loopback for a
 * member given as a .gguf file.
 *
 * spawn_start() forks `consort-worker --model X --port P --threads T --name
 * NAME [--ctx-size N]` (P = 0 for any free port, or the port of a worker
 * being restarted) with its stdout on a pipe and the shared secret in its
 * environment (CONSORT_TOKEN: never on its command line, where `ps` shows
 * it); spawn_await_listening()
 * reads that pipe until the worker's "listening on URL" line, then hands the
 * pipe to a drain thread (the worker's later output goes to stderr only with
 * CONSORT_LOG=debug). spawn_stop() sends SIGTERM, SIGKILL after 5 s, and
 * always reaps the child; on Linux the worker also dies with its parent.
 *
 * The program is $CONSORT_WORKER, else consort-worker next to the running
 * executable (spawn_find_worker). Errors name the member and its model.
 */
#ifndef CONSORT_SPAWN_H
#define CONSORT_SPAWN_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;          /* 0 when not running */
    int out_fd;         /* its stdout, -1 when closed */
    pthread_t drain;
    int has_drain;
} spawned_worker;

#define SPAWNED_WORKER_INIT {0, -1, 0, 0}

/* The worker program's path into out; 0 if it is executable, else -1 (out
 * then says what was tried). */
int spawn_find_worker(char *out, size_t outlen);

/* Starts the worker for `model` as member `name`; ctx 0 = worker default;
 * port 0 = any free port; token NULL = none (the worker's own environment
 * then decides). */
int spawn_start(spawned_worker *w, const char *worker, const char *model, const char *name,
                int threads, int ctx, int port, const char *token, char *err, size_t errlen);

/* Waits (until the monotonic `deadline`, see common/clock.h) for the listening
 * line; url gets "http://host:port". 0, or -1 with err. */
int spawn_await_listening(spawned_worker *w, const char *name, const char *model, double deadline,
                          char *url, size_t urllen, char *err, size_t errlen);

/* Supervision: if the worker has exited, reaps it, joins its drain thread,
 * closes its pipe, writes why into why ("exit status 1", "signal 9
 * (Killed)") and returns 1 (w->pid is then 0); 0 while it runs or when none
 * was running. Never blocks. */
int spawn_reap(spawned_worker *w, char *why, size_t whylen);

/* Stops and reaps the worker, joins the drain thread. Safe when not running. */
void spawn_stop(spawned_worker *w, const char *name);

#endif
