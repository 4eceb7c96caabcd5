/* common/stop_signal.c: see stop_signal.h. */
#include "common/stop_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int fds[2] = {-1, -1};
static volatile sig_atomic_t got;

static void on_signal(int sig) {
    int saved = errno;
    got = sig;
    if (fds[1] >= 0) {
        ssize_t r = write(fds[1], "x", 1);
        (void)r;
    }
    errno = saved;
}

int stop_signal_install(void) {
    if (pipe(fds) != 0) return -1;
    for (int k = 0; k < 2; k++) fcntl(fds[k], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int stop_signal_wait(void) {
    while (!got) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) break;
    }
    return (int)got;
}

void stop_signal_close(void) {
    for (int k = 0; k < 2; k++) {
        if (fds[k] >= 0) close(fds[k]);
        fds[k] = -1;
    }
}
