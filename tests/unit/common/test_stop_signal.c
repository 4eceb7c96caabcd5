/* common/stop_signal: a real SIGTERM, sent from another thread, wakes the
 * waiter with its number; SIGPIPE no longer kills the process. */
#include "common/stop_signal.h"
#include "tests/tap.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static void *send_term(void *arg) {
    (void)arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(getpid(), SIGTERM);
    return NULL;
}

int main(void) {
    ok(stop_signal_install() == 0, "installs");
    pthread_t th;
    pthread_create(&th, NULL, send_term, NULL);
    int sig = stop_signal_wait();
    pthread_join(th, NULL);
    is_int(sig, SIGTERM, "the wait returns SIGTERM's number");
    is_int(stop_signal_wait(), SIGTERM, "an already received signal returns at once");
    ok(raise(SIGPIPE) == 0, "SIGPIPE is ignored (we are still running)");
    stop_signal_close();
    return tap_done();
}
