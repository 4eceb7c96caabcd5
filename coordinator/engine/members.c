/* coordinator/engine/members.c: the member set (see members.h).
 *
 * What it owns: for each member its name, SPEC and URL, its kind's
 * operations (member.h), its pool of keep-alive curl handles (curl_pool.h),
 * its description from connecting (proto_info and the JSON it borrows
 * from), the spawned worker behind a .gguf SPEC (spawn.h), and its health:
 * up, or down with the time of the next probe. A mutex per member guards
 * the health fields; everything else is written only while opening and
 * closing the set, so requests read it without locks.
 *
 * Why a member is marked down rather than removed: a worker may restart or
 * come back from a network blip; the backoff (0.5 s doubling to 30 s) keeps
 * a dead member from costing every request a failed connection, and lets a
 * live one return without restarting the coordinator.
 *
 * Supervision: with cfg->supervise, one thread (supervise_main) owns the
 * spawned workers' process state after opening: it polls them (reap
 * without blocking, every 100 ms), restarts a dead one on its old port (so
 * its URL, read by requests without locks, never changes) and marks it up
 * once it answers. members_free() stops that thread before it stops the
 * workers, so the process state has one owner at a time.
 */
#include "coordinator/engine/members.h"

#include "common/clock.h"
#include "common/log.h"
#include "common/rng.h"
#include "coordinator/engine/spawn.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char name[MEMBERS_NAME_MAX];
    char spec[512];
    char url[256];
    char *model;            /* spawned: the .gguf path */
    spawned_worker worker;
    const member_ops *ops;
    curl_pool pool;
    proto_info info;
    json_t *info_json;      /* what info borrows from */
    char tokenizer[512];    /* --tokenizer: a local tokenizer file (openai+ members) */
    void *kind_state;       /* per-member state of its kind (member.h), freed with kind_state_free */
    void (*kind_state_free)(void *);
    int connected;
    pthread_mutex_t mu;     /* guards the health fields below */
    int down;
    double next_probe, backoff;
    char why[160];
    /* supervision (the supervisor thread's alone) */
    double restart_at, restart_backoff, started_at;
    int restarts;            /* atomic */
} member;

struct member_set {
    member m[CONSORT_MAX_MEMBERS];
    size_t n;
    /* how spawned workers are started (kept for restarts) */
    char worker_path[PATH_MAX + 64];
    int threads, ctx;
    char *spawn_token;       /* the token spawned workers get (owned) */
    /* the supervisor */
    pthread_t sup;
    int has_sup;
    pthread_mutex_t sup_mu;
    pthread_cond_t sup_cv;
    int sup_stop;
    int nprobs;             /* top-n list length asked of llama-server members */
};

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

/* ---- health ---------------------------------------------------------------- */

void members_mark_down(member_set *ms, size_t i, const char *why) {
    member *m = &ms->m[i];
    pthread_mutex_lock(&m->mu);
    if (!m->down) {
        m->down = 1;
        m->backoff = 0.5;
        m->next_probe = clock_mono_s() + m->backoff;
        log_warn("member '%s' (%s) is down: %s", m->name, m->url, why ? why : "");
    }
    snprintf(m->why, sizeof m->why, "%s", why ? why : "");
    pthread_mutex_unlock(&m->mu);
}

int members_health(member_set *ms, size_t i, double timeout_s) {
    if (i >= ms->n) return 0;
    int up = ms->m[i].ops->health(ms, i, timeout_s);
    if (!up) members_mark_down(ms, i, "health check failed");
    return up;
}

int members_usable(member_set *ms, size_t i) {
    if (i >= ms->n) return 0;
    member *m = &ms->m[i];
    pthread_mutex_lock(&m->mu);
    int down = m->down;
    int due = down && clock_mono_s() >= m->next_probe;
    if (due) m->next_probe = clock_mono_s() + 3600; /* one prober at a time */
    pthread_mutex_unlock(&m->mu);
    if (!down) return 1;
    if (!due) return 0;
    int up = m->ops->health(ms, i, 1.0);
    pthread_mutex_lock(&m->mu);
    if (up) {
        m->down = 0;
        log_info("member '%s' (%s) is back", m->name, m->url);
    } else {
        m->backoff = m->backoff * 2 > 30 ? 30 : m->backoff * 2;
        m->next_probe = clock_mono_s() + m->backoff;
    }
    pthread_mutex_unlock(&m->mu);
    return up;
}

/* ---- supervision ------------------------------------------------------------- */

static void mark_up(member *m) {
    pthread_mutex_lock(&m->mu);
    if (m->down) log_info("member '%s' (%s) is back", m->name, m->url);
    m->down = 0;
    pthread_mutex_unlock(&m->mu);
}

static int url_port(const char *url) {
    const char *c = strrchr(url, ':');
    return c ? atoi(c + 1) : 0;
}

/* Starts member i's worker again on its old port; 0 once it answers. */
static int restart_worker(member_set *ms, size_t i) {
    member *m = &ms->m[i];
    char err[512], url[256];
    double deadline = clock_mono_s() + 30;
    if (spawn_start(&m->worker, ms->worker_path, m->model, m->name, ms->threads, ms->ctx, url_port(m->url),
                    ms->spawn_token, err, sizeof err) ||
        spawn_await_listening(&m->worker, m->name, m->model, deadline, url, sizeof url, err, sizeof err)) {
        log_warn("member '%s': restart failed: %s", m->name, err);
        spawn_stop(&m->worker, m->name);
        return -1;
    }
    while (!m->ops->health(ms, i, 1.0)) {
        if (clock_mono_s() > deadline) {
            log_warn("member '%s': the restarted worker does not answer its health check", m->name);
            spawn_stop(&m->worker, m->name);
            return -1;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    m->started_at = clock_mono_s();
    __atomic_add_fetch(&m->restarts, 1, __ATOMIC_RELAXED);
    log_info("member '%s': worker restarted (pid %d) on %s", m->name, (int)m->worker.pid, m->url);
    mark_up(m);
    return 0;
}

/* One look at member i's worker: reap it if it died, restart it when due. */
static void supervise_one(member_set *ms, size_t i) {
    member *m = &ms->m[i];
    if (!m->model) return;
    char why[128];
    double now = clock_mono_s();
    if (m->worker.pid > 0) {
        if (!spawn_reap(&m->worker, why, sizeof why)) return;
        /* a worker that ran a minute starts over with a short backoff */
        if (m->restart_backoff <= 0 || now - m->started_at > 60) m->restart_backoff = 1;
        else m->restart_backoff = m->restart_backoff * 2 > 30 ? 30 : m->restart_backoff * 2;
        m->restart_at = now + m->restart_backoff;
        log_warn("member '%s': worker died (%s); restarting in %.0f s", m->name, why, m->restart_backoff);
        char down[160];
        snprintf(down, sizeof down, "its worker died (%s)", why);
        members_mark_down(ms, i, down);
        return;
    }
    if (now < m->restart_at) return;
    if (restart_worker(ms, i)) {
        m->restart_backoff = m->restart_backoff * 2 > 30 ? 30 : m->restart_backoff * 2;
        m->restart_at = clock_mono_s() + m->restart_backoff;
    }
}

static void *supervise_main(void *ud) {
    member_set *ms = ud;
    pthread_mutex_lock(&ms->sup_mu);
    while (!ms->sup_stop) {
        pthread_mutex_unlock(&ms->sup_mu);
        for (size_t i = 0; i < ms->n; i++) supervise_one(ms, i);
        pthread_mutex_lock(&ms->sup_mu);
        if (ms->sup_stop) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ms->sup_cv, &ms->sup_mu, &ts);
    }
    pthread_mutex_unlock(&ms->sup_mu);
    return NULL;
}

static int supervise_start(member_set *ms) {
    int any = 0;
    for (size_t i = 0; i < ms->n; i++) any |= ms->m[i].model != NULL;
    if (!any) return 0;
    if (pthread_create(&ms->sup, NULL, supervise_main, ms)) return -1;
    ms->has_sup = 1;
    return 0;
}

static void supervise_stop(member_set *ms) {
    if (!ms->has_sup) return;
    pthread_mutex_lock(&ms->sup_mu);
    ms->sup_stop = 1;
    pthread_cond_broadcast(&ms->sup_cv);
    pthread_mutex_unlock(&ms->sup_mu);
    pthread_join(ms->sup, NULL);
    ms->has_sup = 0;
}

int members_restarts(member_set *ms, size_t i) {
    return i < ms->n ? __atomic_load_n(&ms->m[i].restarts, __ATOMIC_RELAXED) : 0;
}

/* ---- scoring ------------------------------------------------------------------ */

int members_score(member_set *ms, size_t i, const proto_score_req *q, double timeout_s,
                  members_score_answer *out, proto_error *err) {
    memset(out, 0, sizeof *out);
    if (i >= ms->n) return proto_fail(err, 500, PROTO_ERR_INTERNAL, "no member %zu", i);
    member_round *r = member_round_new();
    member_session *s = r ? member_open(ms, i, "score", timeout_s > 0 ? timeout_s : 60) : NULL;
    const proto_score_res *res = NULL;
    int rc = -1;
    if (!s || s->ops->score(s, q, r)) {
        proto_fail(err, 500, PROTO_ERR_INTERNAL, "member '%s': out of memory", ms->m[i].name);
    } else {
        member_round_run(r);
        rc = s->ops->score_result(s, &res, err);
    }
    member_round_free(r);
    if (rc) {
        member_session_free(s);
        return -1;
    }
    out->res = *res;
    out->s_ = s;
    return 0;
}

void members_score_release(members_score_answer *a) {
    member_session_free(a->s_);
    memset(a, 0, sizeof *a);
}

/* ---- the set ---------------------------------------------------------------- */

member_set *members_new(void) {
    member_set *ms = calloc(1, sizeof *ms);
    if (!ms) return NULL;
    pthread_mutex_init(&ms->sup_mu, NULL);
    pthread_cond_init(&ms->sup_cv, NULL);
    for (size_t i = 0; i < CONSORT_MAX_MEMBERS; i++) {
        pthread_mutex_init(&ms->m[i].mu, NULL);
        curl_pool_init(&ms->m[i].pool);
        ms->m[i].worker = (spawned_worker)SPAWNED_WORKER_INIT;
    }
    return ms;
}

/* The kind of member behind a SPEC, and the SPEC without its kind prefix:
 * llama+URL is a llama-server, openai+URL an OpenAI-compatible server; any other URL or .gguf file a consort-worker.
 * A new kind is chosen here. */
static const member_ops *kind_of(const char **spec) {
    if (!strncmp(*spec, "llama+", 6)) {
        *spec += 6;
        return &member_llama_ops;
    }
    if (!strncmp(*spec, "openai+", 7)) return *spec += 7, &member_openai_ops;
    return &member_worker_ops;
}

int members_add(member_set *ms, const char *name, const char *spec, char *err, size_t errlen) {
    if (ms->n >= CONSORT_MAX_MEMBERS) {
        snprintf(err, errlen, "too many members (at most %d)", CONSORT_MAX_MEMBERS);
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
    m->ops = kind_of(&spec);
    if (m->ops != &member_worker_ops && strncmp(spec, "http://", 7) && strncmp(spec, "https://", 8)) {
        snprintf(err, errlen, "member '%s': a %s member needs an http:// URL", name, m->ops->kind);
        return -1;
    }
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

/* The token of spawned workers: the configured one, else 128 random bits
 * in hex (never printed). */
static int set_spawn_token(member_set *ms, const char *token) {
    if (ms->spawn_token) return 0;
    if (token && *token) return (ms->spawn_token = strdup(token)) ? 0 : -1;
    unsigned char r[16];
    if (rng_os_bytes(r, sizeof r)) return -1;
    ms->spawn_token = malloc(2 * sizeof r + 1);
    if (!ms->spawn_token) return -1;
    for (size_t k = 0; k < sizeof r; k++) snprintf(ms->spawn_token + 2 * k, 3, "%02x", r[k]);
    memset(r, 0, sizeof r);
    return 0;
}

static int spawn_local(member_set *ms, const members_config *opts, char *err, size_t errlen) {
    size_t n_local = 0;
    for (size_t i = 0; i < ms->n; i++) n_local += ms->m[i].model != NULL;
    if (!n_local) return 0;
    char *worker = ms->worker_path;
    if (spawn_find_worker(worker, sizeof ms->worker_path)) {
        snprintf(err, errlen, "cannot find the consort-worker program (tried %s; set CONSORT_WORKER)", worker);
        return -1;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = opts->threads > 0 ? opts->threads : (int)(ncpu > 0 ? ncpu : 1) / (int)n_local;
    if (threads < 1) threads = 1;
    ms->threads = threads;
    ms->ctx = opts->ctx;
    if (set_spawn_token(ms, opts->token)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < ms->n; i++) {
        member *m = &ms->m[i];
        if (!m->model || m->worker.pid) continue;
        if (access(m->model, R_OK)) {
            snprintf(err, errlen, "member '%s': cannot read model %s: %s", m->name, m->model, strerror(errno));
            return -1;
        }
        if (curl_pool_set_access(&m->pool, ms->spawn_token, NULL) ||
            spawn_start(&m->worker, worker, m->model, m->name, threads, opts->ctx, 0, ms->spawn_token, err, errlen))
            return -1;
        m->started_at = clock_mono_s();
    }
    double deadline = clock_mono_s() + (opts->start_timeout > 0 ? opts->start_timeout : 120);
    for (size_t i = 0; i < ms->n; i++) {
        member *m = &ms->m[i];
        if (!m->model || m->worker.has_drain) continue;
        if (spawn_await_listening(&m->worker, m->name, m->model, deadline, m->url, sizeof m->url, err, errlen))
            return -1;
        while (!m->ops->health(ms, i, 1.0)) {
            if (clock_mono_s() > deadline) {
                snprintf(err, errlen, "member '%s' (%s): the health check did not answer in time", m->name, m->url);
                return -1;
            }
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        log_info("member '%s': worker %d for %s listening on %s", m->name, (int)m->worker.pid, m->model, m->url);
    }
    return 0;
}

int members_connect(member_set *ms, const members_config *opts, char *err, size_t errlen) {
    members_config defaults;
    if (!opts) {
        memset(&defaults, 0, sizeof defaults);
        opts = &defaults;
    }
    for (size_t i = 0; i < ms->n; i++) {
        member *m = &ms->m[i];
        if (!m->model && curl_pool_set_access(&m->pool, opts->token, opts->tls_ca)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    ms->nprobs = opts->nprobs > 0 ? opts->nprobs : MEMBERS_DEFAULT_NPROBS;
    if (spawn_local(ms, opts, err, errlen)) return -1;
    for (size_t i = 0; i < ms->n; i++) {
        member *m = &ms->m[i];
        json_decref(m->info_json);
        m->info_json = NULL;
        m->connected = m->ops->connect(ms, i, 10, &m->info, &m->info_json, err, errlen) == 0;
        if (!m->connected) {
            if (!opts->tolerate_down) return -1;
            members_mark_down(ms, i, err);
        }
    }
    if (opts->supervise && !ms->has_sup && supervise_start(ms)) {
        snprintf(err, errlen, "cannot start the supervisor thread");
        return -1;
    }
    return 0;
}

member_set *members_open(const members_config *cfg, char *err, size_t errlen) {
    if (cfg->n == 0) {
        snprintf(err, errlen, "no members: give at least one --member NAME=SPEC");
        return NULL;
    }
    member_set *ms = members_new();
    if (!ms) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n; i++)
        if (members_add(ms, cfg->name[i], cfg->spec[i], err, errlen) ||
            members_set_tokenizer(ms, i, cfg->tokenizer[i], err, errlen))
            goto fail;
    if (members_connect(ms, cfg, err, errlen)) goto fail;
    return ms;
fail:
    members_free(ms);
    return NULL;
}

void members_free(member_set *ms) {
    if (!ms) return;
    supervise_stop(ms);
    pthread_cond_destroy(&ms->sup_cv);
    pthread_mutex_destroy(&ms->sup_mu);
    if (ms->spawn_token) memset(ms->spawn_token, 0, strlen(ms->spawn_token));
    free(ms->spawn_token);
    for (size_t i = 0; i < CONSORT_MAX_MEMBERS; i++) {
        member *m = &ms->m[i];
        spawn_stop(&m->worker, m->name);
        curl_pool_free(&m->pool);
        json_decref(m->info_json);
        free(m->model);
        if (m->kind_state_free) m->kind_state_free(m->kind_state);
        pthread_mutex_destroy(&m->mu);
    }
    free(ms);
}

size_t members_count(const member_set *ms) { return ms->n; }
int members_nprobs(const member_set *ms) { return ms->nprobs > 0 ? ms->nprobs : MEMBERS_DEFAULT_NPROBS; }
const char *members_name(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].name : NULL; }
const char *members_url(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].url : NULL; }
const char *members_model(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].model : NULL; }
const proto_info *members_info(const member_set *ms, size_t i) {
    return i < ms->n && ms->m[i].connected ? &ms->m[i].info : NULL;
}
const member_ops *members_ops(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].ops : NULL; }
curl_pool *members_pool(member_set *ms, size_t i) { return i < ms->n ? &ms->m[i].pool : NULL; }

int members_set_tokenizer(member_set *ms, size_t i, const char *path, char *err, size_t errlen) {
    if (i >= ms->n || !path) return 0;
    if (strlen(path) >= sizeof ms->m[i].tokenizer) {
        snprintf(err, errlen, "member '%s': tokenizer path too long", ms->m[i].name);
        return -1;
    }
    snprintf(ms->m[i].tokenizer, sizeof ms->m[i].tokenizer, "%s", path);
    return 0;
}
const char *members_tokenizer(const member_set *ms, size_t i) {
    return i < ms->n && ms->m[i].tokenizer[0] ? ms->m[i].tokenizer : NULL;
}
void *members_kind_state(const member_set *ms, size_t i) { return i < ms->n ? ms->m[i].kind_state : NULL; }
void members_set_kind_state(member_set *ms, size_t i, void *state, void (*free_fn)(void *)) {
    member *m = &ms->m[i];
    if (m->kind_state_free) m->kind_state_free(m->kind_state);
    m->kind_state = state;
    m->kind_state_free = free_fn;
}

int members_index(const member_set *ms, const char *name) {
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[i].name, name)) return (int)i;
    return -1;
}
