/* coordinator/engine/spawn.c: see spawn.h. */
#include "coordinator/engine/spawn.h"

#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static int spawn_exec(spawned_worker *w, const char *worker, const char *model, const char *name,
                      int threads, int ctx, int port, const char *token_var, char *err, size_t errlen);

int spawn_find_worker(char *out, size_t outlen) {
    const char *env = getenv("CONSORT_WORKER");
    if (env && *env) {
        snprintf(out, outlen, "%s", env);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    char self[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(out, outlen, "consort-worker");
        return -1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(out, outlen, "%s/consort-worker", self);
    return access(out, X_OK) == 0 ? 0 : -1;
}

static void *drain_main(void *ud) {
    spawned_worker *w = ud;
    char buf[4096];
    for (;;) {
        ssize_t n = read(w->out_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (log_enabled(LOG_DEBUG)) {
            ssize_t k = write(2, buf, (size_t)n);
            (void)k;
        }
    }
    return NULL;
}

void spawn_stop(spawned_worker *w, const char *name) {
    if (w->pid > 0) {
        kill(w->pid, SIGTERM);
        int status;
        double deadline = clock_mono_s() + 5.0;
        pid_t r;
        while ((r = waitpid(w->pid, &status, WNOHANG)) == 0 && clock_mono_s() < deadline) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (r == 0) {
            log_warn("member '%s': worker %d ignored SIGTERM, killing it", name, (int)w->pid);
            kill(w->pid, SIGKILL);
            while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {}
        }
        w->pid = 0;
    }
    if (w->has_drain) {
        pthread_join(w->drain, NULL);
        w->has_drain = 0;
    }
    if (w->out_fd >= 0) {
        close(w->out_fd);
        w->out_fd = -1;
    }
}

int spawn_reap(spawned_worker *w, char *why, size_t whylen) {
    if (w->pid <= 0) return 0;
    int status = 0;
    pid_t r = waitpid(w->pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return 0;
    if (r < 0) snprintf(why, whylen, "lost (waitpid: %s)", strerror(errno));
    else if (WIFEXITED(status)) snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(why, whylen, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(why, whylen, "wait status %d", status);
    w->pid = 0;
    if (w->has_drain) { /* the pipe's write end died with the worker */
        pthread_join(w->drain, NULL);
        w->has_drain = 0;
    }
    if (w->out_fd >= 0) {
        close(w->out_fd);
        w->out_fd = -1;
    }
    return 1;
}

/* The worker's environment: ours, with CONSORT_LOG=warn unless set (its info
 * lines would interleave with the coordinator's output) and CONSORT_TOKEN
 * replaced by `token_var` when given. Built before fork: nothing but
 * async-signal-safe calls in the child. */
static char **worker_environment(const char *token_var) {
    extern char **environ;
    size_t ne = 0;
    while (environ[ne]) ne++;
    char **envp = malloc((ne + 3) * sizeof *envp);
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (!token_var || strncmp(environ[i], "CONSORT_TOKEN=", 14) != 0) envp[k++] = environ[i];
    if (!getenv("CONSORT_LOG")) envp[k++] = "CONSORT_LOG=warn";
    if (token_var) envp[k++] = (char *)token_var;
    envp[k] = NULL;
    return envp;
}

int spawn_start(spawned_worker *w, const char *worker, const char *model, const char *name,
                int threads, int ctx, int port, const char *token, char *err, size_t errlen) {
    char *token_var = NULL;
    if (token && *token) {
        size_t n = strlen(token) + 16;
        token_var = malloc(n);
        if (!token_var) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(token_var, n, "CONSORT_TOKEN=%s", token);
    }
    int rc = spawn_exec(w, worker, model, name, threads, ctx, port, token_var, err, errlen);
    if (token_var) {
        memset(token_var, 0, strlen(token_var));
        free(token_var);
    }
    return rc;
}

static int spawn_exec(spawned_worker *w, const char *worker, const char *model, const char *name,
                      int threads, int ctx, int port, const char *token_var, char *err, size_t errlen) {
    int fds[2];
    if (pipe(fds)) {
        snprintf(err, errlen, "member '%s': pipe: %s", name, strerror(errno));
        return -1;
    }
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    char threads_s[16], ctx_s[16], port_s[16];
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(ctx_s, sizeof ctx_s, "%d", ctx);
    const char *argv[16];
    int a = 0;
    argv[a++] = worker;
    argv[a++] = "--model";
    argv[a++] = model;
    argv[a++] = "--port";
    argv[a++] = port_s;
    argv[a++] = "--threads";
    argv[a++] = threads_s;
    argv[a++] = "--name";
    argv[a++] = name;
    if (ctx > 0) {
        argv[a++] = "--ctx-size";
        argv[a++] = ctx_s;
    }
    argv[a] = NULL;
    char **envp = worker_environment(token_var);
    if (!envp) {
        snprintf(err, errlen, "out of memory");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "member '%s': fork: %s", name, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        free(envp);
        return -1;
    }
    if (pid == 0) {
#ifdef __linux__
        /* Stop with the coordinator; a coordinator already gone before
         * the prctl (a SIGTERM right after fork) would never send it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(0);
#endif
        dup2(fds[1], 1);
        close(fds[1]);
        execve(worker, (char *const *)argv, envp);
        fprintf(stderr, "consort: cannot run %s: %s\n", worker, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    free(envp);
    w->pid = pid;
    w->out_fd = fds[0];
    return 0;
}

/* The URL of a "consort-worker listening on URL" line into url; 1 found,
 * 0 not that line, -1 a malformed one. */
static int listening_url(const char *line, char *url, size_t urllen) {
    static const char tag[] = "consort-worker listening on ";
    const char *t = strstr(line, tag);
    if (!t) return 0;
    const char *u = t + strlen(tag);
    size_t ul = strcspn(u, " \r\n\t");
    while (ul > 0 && u[ul - 1] == '/') ul--;
    if (ul == 0 || ul >= urllen) return -1;
    memcpy(url, u, ul);
    url[ul] = 0;
    return 1;
}

int spawn_await_listening(spawned_worker *w, const char *name, const char *model, double deadline,
                          char *url, size_t urllen, char *err, size_t errlen) {
    char line[1024];
    size_t n = 0;
    for (;;) {
        double left = deadline - clock_mono_s();
        if (left <= 0) {
            snprintf(err, errlen, "member '%s' (model %s): the worker did not start listening in time", name, model);
            return -1;
        }
        struct pollfd p = {w->out_fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr <= 0) continue;
        char c;
        ssize_t r = read(w->out_fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int status = 0;
            waitpid(w->pid, &status, 0);
            w->pid = 0;
            snprintf(err, errlen, "member '%s' (model %s): the worker exited before listening (%s %d; run with CONSORT_LOG=debug or see its stderr)",
                     name, model, WIFEXITED(status) ? "exit status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return -1;
        }
        if (c != '\n' && n + 1 < sizeof line) {
            line[n++] = c;
            continue;
        }
        line[n] = 0;
        n = 0;
        int found = listening_url(line, url, urllen);
        if (found < 0) {
            snprintf(err, errlen, "member '%s': bad worker line: %s", name, line);
            return -1;
        }
        if (found) {
            if (pthread_create(&w->drain, NULL, drain_main, w) == 0) w->has_drain = 1;
            return 0;
        }
    }
}
