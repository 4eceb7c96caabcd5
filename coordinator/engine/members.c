/* coordinator/engine/members.c: see members.h. */
#include "coordinator/engine/members.h"

#include "common/log.h"
#include "common/sbuf.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define POOL_MAX 16

typedef struct {
    char name[MEMBERS_NAME_MAX];
    char spec[512];
    char url[256];
    char *model;            /* spawned: the .gguf path */
    pid_t pid;              /* spawned worker, 0 if none */
    int out_fd;             /* its stdout (drained by a thread) */
    pthread_t drain;
    int has_drain;
    json_t *info;
    pthread_mutex_t mu;
    void *pool[POOL_MAX];
    int n_pool;
    int down;
    double next_probe, backoff;
    char why[160];
} member;

struct member_set {
    member m[MEMBERS_MAX];
    size_t n;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int members_name_ok(const char *s, size_t n) {
    if (n == 0 || n >= MEMBERS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* ---- HTTP ------------------------------------------------------------------ */


void *members_handle_get(member_set *ms, size_t i) {
    member *m = &ms->m[i];
    void *h = NULL;
    pthread_mutex_lock(&m->mu);
    if (m->n_pool > 0) h = m->pool[--m->n_pool];
    pthread_mutex_unlock(&m->mu);
    if (!h) {
        pthread_once(&curl_once, curl_init_once);
        h = curl_easy_init();
    }
    return h;
}

void members_handle_put(member_set *ms, size_t i, void *h) {
    if (!h) return;
    member *m = &ms->m[i];
    pthread_mutex_lock(&m->mu);
    if (m->n_pool < POOL_MAX) {
        m->pool[m->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    if (h) curl_easy_cleanup(h);
}

static int http_json(member_set *ms, size_t i, const char *method, const char *path,
                     const json_t *body, double timeout_s, json_t **resp, char *err, size_t errlen) {
    member *m = &ms->m[i];
    if (resp) *resp = NULL;
    CURL *h = members_handle_get(ms, i);
    if (!h) {
        snprintf(err, errlen, "member '%s' (%s): out of memory", m->name, m->url);
        return -1;
    }
    char url[512];
    snprintf(url, sizeof url, "%s%s", m->url, path);
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    sbuf b = {0};
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)((timeout_s > 0 ? timeout_s : 60) * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (resp && b.n) *resp = json_loadb(b.p, b.n, 0, NULL);
        if (status >= 400) {
            const char *msg = NULL;
            json_t *e = resp && *resp ? json_object_get(*resp, "error") : NULL;
            if (e) msg = json_string_value(json_object_get(e, "message"));
            snprintf(err, errlen, "member '%s' (%s): %s %s: HTTP %ld%s%s", m->name, m->url,
                     method, path, status, msg ? ": " : "", msg ? msg : "");
        }
    } else {
        snprintf(err, errlen, "member '%s' (%s): %s %s: %s", m->name, m->url, method, path,
                 curl_easy_strerror(rc));
    }
    curl_slist_free_all(hdr);
    free(payload);
    sb_free(&b);
    if (rc == CURLE_OK) members_handle_put(ms, i, h);
    else curl_easy_cleanup(h); /* a failed connection is not reused */
    return (int)status;
}

int members_call(member_set *ms, size_t i, const char *method, const char *path,
                 const json_t *body, double timeout_s, json_t **resp, char *err, size_t errlen) {
    if (i >= ms->n) {
        snprintf(err, errlen, "no member %zu", i);
        if (resp) *resp = NULL;
        return -1;
    }
    int st = http_json(ms, i, method, path, body, timeout_s, resp, err, errlen);
    if (st < 0) members_mark_down(ms, i, err);
    return st;
}

/* ---- health ---------------------------------------------------------------- */

void members_mark_down(member_set *ms, size_t i, const char *why) {
    member *m = &ms->m[i];
    pthread_mutex_lock(&m->mu);
    if (!m->down) {
        m->down = 1;
        m->backoff = 0.5;
        m->next_probe = now_s() + m->backoff;
        log_warn("member '%s' (%s) is down: %s", m->name, m->url, why ? why : "");
    }
    snprintf(m->why, sizeof m->why, "%s", why ? why : "");
    pthread_mutex_unlock(&m->mu);
}

static int probe_health(member_set *ms, size_t i, double timeout_s) {
    json_t *r = NULL;
    char err[256];
    int st = http_json(ms, i, "GET", "/health", NULL, timeout_s, &r, err, sizeof err);
    int okay = st == 200 && r && json_is_string(json_object_get(r, "status")) &&
               !strcmp(json_string_value(json_object_get(r, "status")), "ok");
    json_decref(r);
    return okay;
}

int members_usable(member_set *ms, size_t i) {
    if (i >= ms->n) return 0;
    member *m = &ms->m[i];
    pthread_mutex_lock(&m->mu);
    int down = m->down;
    int due = down && now_s() >= m->next_probe;
    if (due) m->next_probe = now_s() + 3600; /* one prober at a time */
    pthread_mutex_unlock(&m->mu);
    if (!down) return 1;
    if (!due) return 0;
    int up = probe_health(ms, i, 1.0);
    pthread_mutex_lock(&m->mu);
    if (up) {
        m->down = 0;
        log_info("member '%s' (%s) is back", m->name, m->url);
    } else {
        m->backoff = m->backoff * 2 > 30 ? 30 : m->backoff * 2;
        m->next_probe = now_s() + m->backoff;
    }
    pthread_mutex_unlock(&m->mu);
    return up;
}

/* ---- spawning local workers ------------------------------------------------ */

static int find_worker(char *out, size_t outlen) {
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
    member *m = ud;
    char buf[4096];
    for (;;) {
        ssize_t n = read(m->out_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (log_enabled(LOG_DEBUG)) {
            ssize_t w = write(2, buf, (size_t)n);
            (void)w;
        }
    }
    return NULL;
}

static void stop_worker(member *m) {
    if (m->pid > 0) {
        kill(m->pid, SIGTERM);
        int status;
        double deadline = now_s() + 5.0;
        pid_t r;
        while ((r = waitpid(m->pid, &status, WNOHANG)) == 0 && now_s() < deadline) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (r == 0) {
            log_warn("member '%s': worker %d ignored SIGTERM, killing it", m->name, (int)m->pid);
            kill(m->pid, SIGKILL);
            while (waitpid(m->pid, &status, 0) < 0 && errno == EINTR) {}
        }
        m->pid = 0;
    }
    if (m->has_drain) {
        pthread_join(m->drain, NULL);
        m->has_drain = 0;
    }
    if (m->out_fd >= 0) {
        close(m->out_fd);
        m->out_fd = -1;
    }
}

static int spawn_worker(member *m, const char *worker, int threads, int ctx, char *err, size_t errlen) {
    int fds[2];
    if (pipe(fds)) {
        snprintf(err, errlen, "member '%s': pipe: %s", m->name, strerror(errno));
        return -1;
    }
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    char threads_s[16], ctx_s[16];
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    snprintf(ctx_s, sizeof ctx_s, "%d", ctx);
    const char *argv[16];
    int a = 0;
    argv[a++] = worker;
    argv[a++] = "--model";
    argv[a++] = m->model;
    argv[a++] = "--port";
    argv[a++] = "0";
    argv[a++] = "--threads";
    argv[a++] = threads_s;
    argv[a++] = "--name";
    argv[a++] = m->name;
    if (ctx > 0) {
        argv[a++] = "--ctx";
        argv[a++] = ctx_s;
    }
    argv[a] = NULL;
    /* The worker's environment: ours, with CONSORT_LOG=warn unless set (its
     * info lines would interleave with the coordinator's output). Built
     * before fork: nothing but async-signal-safe calls in the child. */
    extern char **environ;
    size_t ne = 0;
    while (environ[ne]) ne++;
    char **envp = malloc((ne + 2) * sizeof *envp);
    if (!envp) {
        snprintf(err, errlen, "out of memory");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    memcpy(envp, environ, ne * sizeof *envp);
    if (!getenv("CONSORT_LOG")) envp[ne++] = "CONSORT_LOG=warn";
    envp[ne] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "member '%s': fork: %s", m->name, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        free(envp);
        return -1;
    }
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        dup2(fds[1], 1);
        close(fds[1]);
        execve(worker, (char *const *)argv, envp);
        fprintf(stderr, "consort: cannot run %s: %s\n", worker, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    free(envp);
    m->pid = pid;
    m->out_fd = fds[0];
    return 0;
}

/* Reads the worker's stdout until its "listening on" line. */
static int await_listening(member *m, double deadline, char *err, size_t errlen) {
    char line[1024];
    size_t n = 0;
    static const char tag[] = "consort-worker listening on ";
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            snprintf(err, errlen, "member '%s' (model %s): the worker did not start listening in time",
                     m->name, m->model);
            return -1;
        }
        struct pollfd p = {m->out_fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        char c;
        ssize_t r = read(m->out_fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int status = 0;
            waitpid(m->pid, &status, 0);
            m->pid = 0;
            snprintf(err, errlen, "member '%s' (model %s): the worker exited before listening (%s %d; run with CONSORT_LOG=debug or see its stderr)",
                     m->name, m->model, WIFEXITED(status) ? "exit status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return -1;
        }
        if (c == '\n' || n + 1 >= sizeof line) {
            line[n] = 0;
            char *t = strstr(line, tag);
            if (t) {
                char *u = t + strlen(tag);
                size_t ul = strcspn(u, " \r\n\t");
                while (ul > 0 && u[ul - 1] == '/') ul--;
                if (ul == 0 || ul >= sizeof m->url) {
                    snprintf(err, errlen, "member '%s': bad worker line: %s", m->name, line);
                    return -1;
                }
                memcpy(m->url, u, ul);
                m->url[ul] = 0;
                return 0;
            }
            n = 0;
        } else {
            line[n++] = c;
        }
    }
}

/* ---- the set ---------------------------------------------------------------- */

member_set *members_new(void) {
    member_set *ms = calloc(1, sizeof *ms);
    if (!ms) return NULL;
    for (size_t i = 0; i < MEMBERS_MAX; i++) {
        pthread_mutex_init(&ms->m[i].mu, NULL);
        ms->m[i].out_fd = -1;
    }
    return ms;
}

int members_add(member_set *ms, const char *name, const char *spec, char *err, size_t errlen) {
    if (ms->n >= MEMBERS_MAX) {
        snprintf(err, errlen, "too many members (at most %d)", MEMBERS_MAX);
        return -1;
    }
    if (!members_name_ok(name, strlen(name))) {
        snprintf(err, errlen, "bad member name '%s'", name);
        return -1;
    }
    if (members_index(ms, name) >= 0) {
        snprintf(err, errlen, "member name '%s' used twice", name);
        return -1;
    }
    member *m = &ms->m[ms->n];
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    if (!strncmp(spec, "http://", 7) || !strncmp(spec, "https://", 8)) {
        size_t l = strlen(spec);
        while (l > 0 && spec[l - 1] == '/') l--;
        if (l >= sizeof m->url) {
            snprintf(err, errlen, "member '%s': URL too long", name);
            return -1;
        }
        memcpy(m->url, spec, l);
        m->url[l] = 0;
    } else {
        m->model = strdup(spec);
        if (!m->model) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(m->url, sizeof m->url, "(not started)");
    }
    ms->n++;
    return 0;
}

static int fetch_info(member_set *ms, size_t i, double timeout, char *err, size_t errlen) {
    member *m = &ms->m[i];
    json_t *r = NULL;
    char e2[512];
    int st = http_json(ms, i, "GET", "/v1/info", NULL, timeout, &r, e2, sizeof e2);
    if (st != 200 || !json_is_object(r)) {
        if (st == 200) snprintf(e2, sizeof e2, "member '%s' (%s): /v1/info is not a JSON object", m->name, m->url);
        snprintf(err, errlen, "%s%s", e2, st > 0 ? " (is it a consort-worker?)" : "");
        json_decref(r);
        return -1;
    }
    json_t *p = json_object_get(r, "protocol");
    if (!json_is_integer(p) || json_integer_value(p) != 1) {
        snprintf(err, errlen, "member '%s' (%s): incompatible worker: protocol %s (this coordinator speaks 1)",
                 m->name, m->url, json_is_integer(p) ? "≠ 1" : "missing");
        json_decref(r);
        return -1;
    }
    json_decref(m->info);
    m->info = r;
    return 0;
}

int members_connect(member_set *ms, const members_config *opts, char *err, size_t errlen) {
    members_config defaults;
    if (!opts) {
        memset(&defaults, 0, sizeof defaults);
        opts = &defaults;
    }
    pthread_once(&curl_once, curl_init_once);
    size_t n_local = 0;
    for (size_t i = 0; i < ms->n; i++) n_local += ms->m[i].model != NULL;
    char worker[PATH_MAX + 64];
    if (n_local) {
        if (find_worker(worker, sizeof worker)) {
            snprintf(err, errlen, "cannot find the consort-worker program (tried %s; set CONSORT_WORKER)", worker);
            return -1;
        }
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = opts->threads > 0 ? opts->threads : (int)(ncpu > 0 ? ncpu : 1) / (int)n_local;
        if (threads < 1) threads = 1;
        for (size_t i = 0; i < ms->n; i++) {
            member *m = &ms->m[i];
            if (!m->model || m->pid) continue;
            if (access(m->model, R_OK)) {
                snprintf(err, errlen, "member '%s': cannot read model %s: %s", m->name, m->model, strerror(errno));
                return -1;
            }
            if (spawn_worker(m, worker, threads, opts->ctx, err, errlen)) return -1;
        }
        double deadline = now_s() + (opts->start_timeout > 0 ? opts->start_timeout : 120);
        for (size_t i = 0; i < ms->n; i++) {
            member *m = &ms->m[i];
            if (!m->model || m->has_drain) continue;
            if (await_listening(m, deadline, err, errlen)) return -1;
            if (pthread_create(&m->drain, NULL, drain_main, m) == 0) m->has_drain = 1;
            while (!probe_health(ms, i, 1.0)) {
                if (now_s() > deadline) {
                    snprintf(err, errlen, "member '%s' (%s): /health did not answer in time", m->name, m->url);
                    return -1;
                }
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            log_info("member '%s': worker %d for %s listening on %s", m->name, (int)m->pid, m->model, m->url);
        }
    }
    for (size_t i = 0; i < ms->n; i++) {
        if (fetch_info(ms, i, 10, err, errlen)) {
            if (!opts->tolerate_down) return -1;
            members_mark_down(ms, i, err);
        }
    }
    return 0;
}

member_set *members_open(const members_config *cli, char *err, size_t errlen) {
    if (cli->n == 0) {
        snprintf(err, errlen, "no members: give at least one --member NAME=SPEC");
        return NULL;
    }
    member_set *ms = members_new();
    if (!ms) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cli->n; i++)
        if (members_add(ms, cli->name[i], cli->spec[i], err, errlen)) goto fail;
    if (members_connect(ms, cli, err, errlen)) goto fail;
    return ms;
fail:
    members_free(ms);
    return NULL;
}

void members_free(member_set *ms) {
    if (!ms) return;
    for (size_t i = 0; i < MEMBERS_MAX; i++) {
        member *m = &ms->m[i];
        stop_worker(m);
        for (int k = 0; k < m->n_pool; k++) curl_easy_cleanup(m->pool[k]);
        json_decref(m->info);
        free(m->model);
        pthread_mutex_destroy(&m->mu);
    }
    free(ms);
}

size_t members_count(const member_set *ms) { return ms->n; }
const char *members_name(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].name : NULL; }
const char *members_url(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].url : NULL; }
const char *members_model(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].model : NULL; }
const json_t *members_info(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].info : NULL; }

int members_index(const member_set *ms, const char *name) {
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[i].name, name)) return (int)i;
    return -1;
}
