/* tests/unit/engine/mock_member.h: an in-process fake consort-worker for engine
 * tests, speaking the member protocol of docs/PROTOCOL.md (step with
 * healing and own-token absorption, prefix masses by the exact definition,
 * end_logq, candidates, score, info, health, session delete).
 *
 * Its "model": a fixed vocabulary of byte strings plus EOS, and a next-token
 * distribution that depends on pos = bytes of the committed tokens: tokens
 * that are a prefix of the script S (repeated) from pos get weight
 * 1 + bonus*len, others 1 (+ a small id-dependent epsilon so there are no
 * ties); EOS gets eos_w, or 1e4 once pos >= end_at. A greedy loop over this
 * distribution (mock_greedy) is the member's own greedy text.
 */
#ifndef CONSORT_MOCK_MEMBER_H
#define CONSORT_MOCK_MEMBER_H

#include "common/b64.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOCK_MAXV 64
#define MOCK_MAXS 64

typedef struct {
    char id[72];
    int used;
    char g[4096];
    size_t glen;
    int ctoks[2048];
    size_t nc;
    size_t clen;                 /* bytes of C */
    int paths[256][2];           /* token paths reported last time (second -1 if one) */
    size_t npaths;
    int steps;
} mock_session;

typedef struct {
    const char *name;
    const char *vocab[MOCK_MAXV];
    size_t vlen[MOCK_MAXV];
    int nv;                      /* EOS is id nv */
    const char *script;
    double bonus, eos_w;
    size_t end_at;               /* 0 = never */
    double score_nll;            /* /v1/score answers -score_nll */
    int fail_after;              /* step calls after this many answer 500 (0 = never) */
    int delay_ms;                /* delay of each step answer */
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    mock_session s[MOCK_MAXS];
    int n_step_calls, n_deletes, n_cand_only;
} mock_member;

static void mock_set_vocab(mock_member *mk, const char *const *v) {
    mk->nv = 0;
    for (; *v; v++) {
        mk->vocab[mk->nv] = *v;
        mk->vlen[mk->nv] = strlen(*v);
        mk->nv++;
    }
}

static double mock_p(const mock_member *mk, int t, size_t pos) {
    size_t sl = strlen(mk->script);
    double z = 0, wt = 0;
    for (int i = 0; i <= mk->nv; i++) {
        double w;
        if (i == mk->nv) {
            w = (mk->end_at && pos >= mk->end_at) ? 1e4 : mk->eos_w;
        } else {
            int match = 1;
            for (size_t j = 0; j < mk->vlen[i]; j++)
                if (mk->vocab[i][j] != mk->script[(pos + j) % sl]) { match = 0; break; }
            w = (match ? 1 + mk->bonus * (double)mk->vlen[i] : 1) + 0.001 * i;
        }
        z += w;
        if (i == t) wt = w;
    }
    return wt / z;
}

static int mock_starts(const char *s, size_t sl, const char *pre, size_t pl) {
    return sl >= pl && !memcmp(s, pre, pl);
}

/* longest token that is a prefix of x */
static int mock_longest(const mock_member *mk, const char *x, size_t xl) {
    int best = -1;
    size_t bl = 0;
    for (int i = 0; i < mk->nv; i++)
        if (mk->vlen[i] > bl && mock_starts(x, xl, mk->vocab[i], mk->vlen[i])) {
            best = i;
            bl = mk->vlen[i];
        }
    return best;
}

static double mock_M(const mock_member *mk, const char *x, size_t xl, size_t pos) {
    if (xl == 0) return 1;
    double t = 0;
    int any = 0;
    for (int i = 0; i < mk->nv; i++)
        if (mock_starts(mk->vocab[i], mk->vlen[i], x, xl)) {
            t += mock_p(mk, i, pos);
            any = 1;
        }
    if (any) return t;
    int u = mock_longest(mk, x, xl);
    if (u < 0) return 0;
    return mock_p(mk, u, pos) * mock_M(mk, x + mk->vlen[u], xl - mk->vlen[u], pos + mk->vlen[u]);
}

static int mock_exact(const mock_member *mk, const char *x, size_t xl) {
    for (int i = 0; i < mk->nv; i++)
        if (mk->vlen[i] == xl && !memcmp(mk->vocab[i], x, xl)) return i;
    return -1;
}

/* The member's own greedy text (what a direct greedy loop gives). */
static size_t mock_greedy(const mock_member *mk, int steps, char *out, size_t cap) {
    size_t pos = 0;
    for (int s = 0; s < steps; s++) {
        int best = -1;
        double bp = -1;
        for (int i = 0; i <= mk->nv; i++) {
            double p = mock_p(mk, i, pos);
            if (p > bp) { bp = p; best = i; }
        }
        if (best == mk->nv) break;
        if (pos + mk->vlen[best] >= cap) break;
        memcpy(out + pos, mk->vocab[best], mk->vlen[best]);
        pos += mk->vlen[best];
    }
    out[pos] = 0;
    return pos;
}

static void mock_retokenize(const mock_member *mk, mock_session *s) {
    s->nc = 0;
    size_t i = 0, last_at = 0;
    int last = -1;
    while (i < s->glen) {
        int u = mock_longest(mk, s->g + i, s->glen - i);
        if (u < 0) break; /* cannot happen when every byte is a token */
        if (last >= 0) s->ctoks[s->nc++] = last;
        last = u;
        last_at = i;
        i += mk->vlen[u];
    }
    /* C = every token but the last; r = the last token's bytes */
    s->clen = last >= 0 ? last_at : 0;
}

static double mock_Q(const mock_member *mk, const mock_session *s, const char *sx, size_t sl) {
    const char *r = s->g + s->clen;
    size_t rl = s->glen - s->clen;
    char x[4096];
    if (rl + sl > sizeof x) return 0;
    memcpy(x, r, rl);
    memcpy(x + rl, sx, sl);
    double den = mock_M(mk, r, rl, s->clen);
    return den > 0 ? mock_M(mk, x, rl + sl, s->clen) / den : 0;
}

typedef struct { char s[64]; size_t len; double rank, q; int path[2]; } mock_entry;

static int mock_cmp_rank(const void *a, const void *b) {
    double x = ((const mock_entry *)a)->rank, y = ((const mock_entry *)b)->rank;
    return x < y ? 1 : x > y ? -1 : 0;
}
static int mock_cmp_q(const void *a, const void *b) {
    double x = ((const mock_entry *)a)->q, y = ((const mock_entry *)b)->q;
    return x < y ? 1 : x > y ? -1 : 0;
}

static json_t *mock_lq(double q) { return q > 0 ? json_real(log(q)) : json_null(); }

static json_t *mock_answer(mock_member *mk, mock_session *s, int k, json_t *cands) {
    const char *r = s->g + s->clen;
    size_t rl = s->glen - s->clen;
    mock_entry e[2 * MOCK_MAXV + 2];
    int ne = 0;
    double den = mock_M(mk, r, rl, s->clen);
    for (int t = 0; t < mk->nv; t++)
        if (mk->vlen[t] > rl && mock_starts(mk->vocab[t], mk->vlen[t], r, rl)) {
            mock_entry *x = &e[ne++];
            x->len = mk->vlen[t] - rl;
            memcpy(x->s, mk->vocab[t] + rl, x->len);
            x->rank = mock_p(mk, t, s->clen) / (den > 0 ? den : 1);
            x->path[0] = t;
            x->path[1] = -1;
        }
    int tr = rl ? mock_exact(mk, r, rl) : -1;
    if (tr >= 0)
        for (int u = 0; u < mk->nv; u++) {
            mock_entry *x = &e[ne++];
            x->len = mk->vlen[u];
            memcpy(x->s, mk->vocab[u], x->len);
            x->rank = mock_p(mk, tr, s->clen) * mock_p(mk, u, s->clen + rl) / den;
            x->path[0] = tr;
            x->path[1] = u;
        }
    qsort(e, (size_t)ne, sizeof e[0], mock_cmp_rank);
    /* dedupe by string, keep the first (most probable) */
    int m = 0;
    for (int i = 0; i < ne && m < k; i++) {
        int dup = 0;
        for (int j = 0; j < m; j++)
            if (e[j].len == e[i].len && !memcmp(e[j].s, e[i].s, e[i].len)) dup = 1;
        if (!dup) e[m++] = e[i];
    }
    for (int i = 0; i < m; i++) e[i].q = mock_Q(mk, s, e[i].s, e[i].len);
    qsort(e, (size_t)m, sizeof e[0], mock_cmp_q);
    json_t *o = json_object();
    json_object_set_new(o, "session", json_string(s->id));
    json_object_set_new(o, "n_past", json_integer((json_int_t)(3 + s->nc)));
    char *rb = b64_encode(r, rl);
    json_object_set_new(o, "residue_b64", json_string(rb));
    free(rb);
    json_t *top = json_array();
    s->npaths = 0;
    for (int i = 0; i < m; i++) {
        json_t *t = json_object();
        char *b = b64_encode(e[i].s, e[i].len);
        json_object_set_new(t, "s_b64", json_string(b));
        free(b);
        json_object_set_new(t, "logq", mock_lq(e[i].q));
        json_array_append_new(top, t);
        s->paths[s->npaths][0] = e[i].path[0];
        s->paths[s->npaths][1] = e[i].path[1];
        s->npaths++;
    }
    json_object_set_new(o, "top", top);
    json_t *ca = json_array();
    size_t ci;
    json_t *cv;
    json_array_foreach(cands, ci, cv) {
        size_t l;
        unsigned char *b = b64_decode(json_string_value(cv), &l);
        json_array_append_new(ca, mock_lq(b ? mock_Q(mk, s, (char *)b, l) : 0));
        free(b);
    }
    json_object_set_new(o, "candidates", ca);
    double endq = 0;
    if (rl == 0) endq = mock_p(mk, mk->nv, s->clen);
    else if (tr >= 0) endq = mock_p(mk, tr, s->clen) * mock_p(mk, mk->nv, s->clen + rl) / den;
    json_object_set_new(o, "end_logq", mock_lq(endq));
    json_object_set_new(o, "decoded", json_integer(1));
    return o;
}

static void mock_append(mock_member *mk, mock_session *s, const char *a, size_t al) {
    if (!al) return;
    const char *r = s->g + s->clen;
    size_t rl = s->glen - s->clen;
    char x[4096];
    memcpy(x, r, rl);
    memcpy(x + rl, a, al);
    memcpy(s->g + s->glen, a, al);
    s->glen += al;
    for (size_t i = 0; i < s->npaths; i++) {
        int t0 = s->paths[i][0], t1 = s->paths[i][1];
        size_t l0 = mk->vlen[t0], l1 = t1 >= 0 ? mk->vlen[t1] : 0;
        if (l0 + l1 == rl + al && !memcmp(x, mk->vocab[t0], l0) && (t1 < 0 || !memcmp(x + l0, mk->vocab[t1], l1))) {
            s->ctoks[s->nc++] = t0;
            if (t1 >= 0) s->ctoks[s->nc++] = t1;
            s->clen = s->glen;
            return;
        }
    }
    mock_retokenize(mk, s);
}

typedef struct { char *p; size_t n; } mock_body;

static enum MHD_Result mock_send(struct MHD_Connection *c, int status, json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static json_t *mock_err(const char *msg, const char *code) {
    return json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", "invalid_request_error", "code", code);
}

static enum MHD_Result mock_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                    const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    mock_member *mk = cls;
    mock_body *b = *con_cls;
    if (!b) {
        b = calloc(1, sizeof *b);
        *con_cls = b;
        return MHD_YES;
    }
    if (*upload_size) {
        b->p = realloc(b->p, b->n + *upload_size + 1);
        memcpy(b->p + b->n, upload, *upload_size);
        b->n += *upload_size;
        b->p[b->n] = 0;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(url, "/health")) return mock_send(c, 200, json_pack("{s:s,s:s}", "status", "ok", "name", mk->name));
    if (!strcmp(url, "/v1/info"))
        return mock_send(c, 200, json_pack("{s:s,s:i,s:i,s:b}", "name", mk->name, "protocol", 1, "vocab_size", mk->nv + 1,
                                           "add_bos", 1));
    if (!strcmp(method, "DELETE") && !strncmp(url, "/v1/session/", 12)) {
        pthread_mutex_lock(&mk->mu);
        for (int i = 0; i < MOCK_MAXS; i++)
            if (mk->s[i].used && !strcmp(mk->s[i].id, url + 12)) mk->s[i].used = 0;
        mk->n_deletes++;
        pthread_mutex_unlock(&mk->mu);
        return mock_send(c, 200, json_pack("{s:b}", "deleted", 1));
    }
    json_t *req = b->p ? json_loadb(b->p, b->n, 0, NULL) : NULL;
    if (!strcmp(url, "/v1/score")) {
        json_decref(req);
        return mock_send(c, 200, json_pack("{s:f}", "sum_logprob", -mk->score_nll));
    }
    if (strcmp(url, "/v1/step") || !req) {
        json_decref(req);
        return mock_send(c, 404, mock_err("not found", "not_found"));
    }
    if (mk->delay_ms) usleep((useconds_t)mk->delay_ms * 1000);
    pthread_mutex_lock(&mk->mu);
    mk->n_step_calls++;
    if (mk->fail_after && mk->n_step_calls > mk->fail_after) {
        pthread_mutex_unlock(&mk->mu);
        json_decref(req);
        return mock_send(c, 500, mock_err("mock failure", "internal"));
    }
    const char *sid = json_string_value(json_object_get(req, "session"));
    mock_session *s = NULL;
    for (int i = 0; i < MOCK_MAXS && sid; i++)
        if (mk->s[i].used && !strcmp(mk->s[i].id, sid)) s = &mk->s[i];
    int creating = json_object_get(req, "prompt") || json_object_get(req, "messages");
    if (!s && creating) {
        for (int i = 0; i < MOCK_MAXS; i++)
            if (!mk->s[i].used) {
                s = &mk->s[i];
                memset(s, 0, sizeof *s);
                s->used = 1;
                snprintf(s->id, sizeof s->id, "%s", sid);
                break;
            }
    } else if (s && creating) {
        memset(s->g, 0, 1);
        s->glen = s->clen = s->nc = s->npaths = 0;
    }
    if (!s) {
        pthread_mutex_unlock(&mk->mu);
        json_decref(req);
        return mock_send(c, 404, mock_err("no such session", "session_not_found"));
    }
    const char *ab = json_string_value(json_object_get(req, "append_b64"));
    int has_append = ab && *ab;
    if (ab && *ab) {
        size_t al;
        unsigned char *a = b64_decode(ab, &al);
        if (a) mock_append(mk, s, (char *)a, al);
        free(a);
    }
    json_t *cands = json_object_get(req, "candidates_b64");
    if (!creating && !has_append && json_array_size(cands)) mk->n_cand_only++;
    json_t *kj = json_object_get(req, "k");
    int k = json_is_integer(kj) ? (int)json_integer_value(kj) : 20;
    json_t *ans = mock_answer(mk, s, k, cands);
    s->steps++;
    pthread_mutex_unlock(&mk->mu);
    json_decref(req);
    return mock_send(c, 200, ans);
}

static void mock_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls, (void)c, (void)t;
    mock_body *b = *con_cls;
    if (b) {
        free(b->p);
        free(b);
    }
    *con_cls = NULL;
}

static struct sockaddr_in mock_loopback;

static int mock_start_port(mock_member *mk, int port) {
    mock_loopback.sin_family = AF_INET;
    mock_loopback.sin_port = htons((uint16_t)port);
    mock_loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pthread_mutex_init(&mk->mu, NULL);
    mk->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                             mock_handler, mk, MHD_OPTION_NOTIFY_COMPLETED, mock_done, mk,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&mock_loopback, MHD_OPTION_END);
    if (!mk->d) return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(mk->d, MHD_DAEMON_INFO_BIND_PORT);
    mk->port = di ? di->port : 0;
    return mk->port ? 0 : -1;
}

static int mock_start(mock_member *mk) { return mock_start_port(mk, 0); }

static void mock_stop(mock_member *mk) {
    if (mk->d) MHD_stop_daemon(mk->d);
    mk->d = NULL;
    pthread_mutex_destroy(&mk->mu);
}

#endif
