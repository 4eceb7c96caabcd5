/* common/stop_signal.h: SIGINT and SIGTERM as an event a server's main thread
 * waits for (the self-pipe trick), shared by consort-worker and consort
 * serve/run.
 *
 * Why: the handler may run on any thread (libraries start threads that do
 * not carry our signal mask), so it does nothing but record the signal and
 * write one byte to a pipe; the main thread wakes from stop_signal_wait()
 * and shuts down in ordinary code.
 *
 * Contract: stop_signal_install() once per process, before starting
 * threads; returns 0, or -1 (errno set) if the pipe cannot be made. Both
 * pipe ends are close-on-exec (spawned workers do not inherit them); the
 * write end is non-blocking. SIGPIPE is ignored (a client hanging up must
 * not kill a server). stop_signal_wait() blocks until SIGINT or SIGTERM
 * arrives (or has already arrived) and returns its number.
 * stop_signal_close() releases the pipe.
 */
#ifndef CONSORT_STOP_SIGNAL_H
#define CONSORT_STOP_SIGNAL_H

int stop_signal_install(void);
int stop_signal_wait(void);
void stop_signal_close(void);

#endif
