/* tests/support/mock_member.c: see mock_member.h. Requests are decoded and
 * answers encoded by the protocol module, so the mock and the engine agree
 * on the wire by construction and the field names live in protocol/ only. */
#include "tests/support/mock_member.h"

#include "protocol/proto.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void mock_set_vocab(mock_member *mk, const char *const *v) {
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
size_t mock_greedy(const mock_member *mk, int steps, char *out, size_t cap) {
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

static double mock_logq(double q) { return q > 0 ? log(q) : -INFINITY; }

/* The answer for session s: its top k continuations (by prefix mass), the
 * masses of the asked candidates and of END. Strings point into s and
 * `store`, which must outlive the encoding. */
typedef struct {
    mock_entry e[2 * MOCK_MAXV + 2];
    proto_top top[2 * MOCK_MAXV + 2];
    double cand[PROTO_MAX_CANDIDATES];
    double next_bytes[PROTO_NEXT_BYTES];
} mock_store;

/* T(x): the mass of the tokens whose bytes start with x, at pos. */
static double mock_T(const mock_member *mk, const char *x, size_t xl, size_t pos) {
    double t = 0;
    for (int i = 0; i < mk->nv; i++)
        if (mock_starts(mk->vocab[i], mk->vlen[i], x, xl)) t += mock_p(mk, i, pos);
    return t;
}

/* The next-byte distribution (PROTOCOL.md, next_bytes): the tokens that
 * extend r, and after the residue token the tokens that start with b. */
static void mock_next_bytes(const mock_member *mk, const mock_session *s, int tr, double den, double endq_log,
                            double *out) {
    const char *r = s->g + s->clen;
    size_t rl = s->glen - s->clen;
    char x[4096];
    memcpy(x, r, rl);
    for (int b = 0; b < 256; b++) {
        x[rl] = (char)b;
        double m = mock_T(mk, x, rl + 1, s->clen);
        if (rl && tr >= 0) m += mock_p(mk, tr, s->clen) * mock_T(mk, x + rl, 1, s->clen + rl);
        out[b] = mock_logq(den > 0 ? m / den : 0) + mk->inflate_logq;
    }
    out[256] = endq_log;
}

static void mock_answer(mock_member *mk, mock_session *s, const proto_step_req *q, mock_store *st,
                        proto_step_res *out) {
    const char *r = s->g + s->clen;
    size_t rl = s->glen - s->clen;
    mock_entry *e = st->e;
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
    for (int i = 0; i < ne && m < q->k; i++) {
        int dup = 0;
        for (int j = 0; j < m; j++)
            if (e[j].len == e[i].len && !memcmp(e[j].s, e[i].s, e[i].len)) dup = 1;
        if (!dup) e[m++] = e[i];
    }
    for (int i = 0; i < m; i++) e[i].q = mock_Q(mk, s, e[i].s, e[i].len);
    qsort(e, (size_t)m, sizeof e[0], mock_cmp_q);
    memset(out, 0, sizeof *out);
    out->session = s->id;
    out->n_past = (int)(3 + s->nc);
    out->residue = (proto_str){(const unsigned char *)r, rl};
    s->npaths = 0;
    for (int i = 0; i < m; i++) {
        st->top[i].s = (proto_str){(const unsigned char *)e[i].s, e[i].len};
        st->top[i].logq = mock_logq(e[i].q) + mk->inflate_logq;
        st->top[i].logp = mock_logq(e[i].rank); /* its own token path given r */
        s->paths[s->npaths][0] = e[i].path[0];
        s->paths[s->npaths][1] = e[i].path[1];
        s->npaths++;
    }
    out->top = st->top;
    out->n_top = (size_t)m;
    for (size_t i = 0; i < q->n_cands; i++)
        st->cand[i] = mock_logq(mock_Q(mk, s, (const char *)q->cands[i].p, q->cands[i].n)) + mk->inflate_logq;
    out->cand_logq = st->cand;
    out->n_cands = q->n_cands;
    double endq = 0;
    if (rl == 0) endq = mock_p(mk, mk->nv, s->clen);
    else if (tr >= 0) endq = mock_p(mk, tr, s->clen) * mock_p(mk, mk->nv, s->clen + rl) / den;
    out->end_logq = mock_logq(endq) + mk->inflate_logq;
    if (q->next_bytes) {
        mock_next_bytes(mk, s, tr, den, out->end_logq, st->next_bytes);
        out->next_bytes = st->next_bytes;
        out->n_next_bytes = PROTO_NEXT_BYTES;
    }
    out->decoded = 1;
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

/* ---- HTTP ------------------------------------------------------------------ */

typedef struct { char *p; size_t n; } mock_body;

static enum MHD_Result mock_send(struct MHD_Connection *c, int status, json_t *o) {
    size_t len = 0;
    char *s = proto_dumps(o, &len);
    if (!s) {
        s = strdup("{}");
        len = 2;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result mock_fail(struct MHD_Connection *c, int status, const char *code, const char *msg) {
    proto_error e;
    proto_fail(&e, status, code, "%s", msg);
    return mock_send(c, status, proto_error_encode(&e));
}

static enum MHD_Result mock_info(struct MHD_Connection *c, mock_member *mk) {
    proto_info in;
    memset(&in, 0, sizeof in);
    in.name = mk->name;
    in.model_path = "mock";
    in.vocab_type = "mock";
    in.vocab_size = mk->nv + 1;
    in.bos = -1;
    in.eos = mk->nv;
    in.eot = -1;
    in.add_bos = 1;
    in.n_ctx = 4096;
    in.slots = MOCK_MAXS;
    in.protocol = PROTO_VERSION;
    return mock_send(c, 200, proto_info_encode(&in));
}

static enum MHD_Result mock_delete(struct MHD_Connection *c, mock_member *mk, const char *id) {
    pthread_mutex_lock(&mk->mu);
    for (int i = 0; i < MOCK_MAXS; i++)
        if (mk->s[i].used && !strcmp(mk->s[i].id, id)) mk->s[i].used = 0;
    mk->n_deletes++;
    pthread_mutex_unlock(&mk->mu);
    return mock_send(c, 200, proto_deleted_encode());
}

/* One token over the whole text, of log-probability -score_nll. */
static enum MHD_Result mock_score(struct MHD_Connection *c, mock_member *mk, const json_t *req) {
    proto_score_req q;
    proto_error err;
    if (proto_score_req_decode(req, &q, &err)) return mock_send(c, err.status, proto_error_encode(&err));
    pthread_mutex_lock(&mk->mu);
    mk->n_scores++;
    pthread_mutex_unlock(&mk->mu);
    proto_score_tok t = {0, 0, q.text_len, -mk->score_nll, NAN, NAN};
    proto_score_res r;
    memset(&r, 0, sizeof r);
    r.tokens = &t;
    r.n_tokens = 1;
    r.sum_logprob = -mk->score_nll;
    r.n_ctx = 4096;
    return mock_send(c, 200, proto_score_res_encode(&r));
}

/* The session a step names: found, created by a prompt, or reset by one. */
static mock_session *mock_session_for(mock_member *mk, const proto_step_req *q, int creating) {
    mock_session *s = NULL;
    for (int i = 0; i < MOCK_MAXS; i++)
        if (mk->s[i].used && !strcmp(mk->s[i].id, q->session)) s = &mk->s[i];
    if (!s && creating) {
        for (int i = 0; i < MOCK_MAXS && !s; i++)
            if (!mk->s[i].used) {
                s = &mk->s[i];
                memset(s, 0, sizeof *s);
                s->used = 1;
                snprintf(s->id, sizeof s->id, "%s", q->session);
            }
    } else if (s && creating) {
        s->g[0] = 0;
        s->glen = s->clen = s->nc = s->npaths = 0;
    }
    return s;
}

static enum MHD_Result mock_step(struct MHD_Connection *c, mock_member *mk, const json_t *req) {
    proto_step_req q;
    proto_error err;
    if (proto_step_req_decode(req, &q, &err)) return mock_send(c, err.status, proto_error_encode(&err));
    if (mk->ctx_bytes && q.prompt && q.prompt_len > mk->ctx_bytes) {
        proto_step_req_release(&q);
        return mock_fail(c, 400, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED, "the prompt does not fit the context");
    }
    if (mk->delay_ms) usleep((useconds_t)mk->delay_ms * 1000);
    const char *dl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Consort-Deadline-Ms");
    pthread_mutex_lock(&mk->mu);
    mk->n_step_calls++;
    snprintf(mk->last_session, sizeof mk->last_session, "%s", q.session);
    mk->last_deadline_ms = dl ? atol(dl) : -1;
    if (mk->fail_after && mk->n_step_calls > mk->fail_after) {
        pthread_mutex_unlock(&mk->mu);
        proto_step_req_release(&q);
        return mock_fail(c, 500, PROTO_ERR_INTERNAL, "mock failure");
    }
    int creating = q.prompt || q.n_messages;
    mock_session *s = mock_session_for(mk, &q, creating);
    if (!s) {
        pthread_mutex_unlock(&mk->mu);
        proto_step_req_release(&q);
        return mock_fail(c, 404, PROTO_ERR_SESSION_NOT_FOUND, "no such session");
    }
    if (q.append.n) mock_append(mk, s, (const char *)q.append.p, q.append.n);
    if (!creating && !q.append.n && q.n_cands) mk->n_cand_only++;
    mock_store *st = malloc(sizeof *st);
    json_t *ans = NULL;
    if (st) {
        proto_step_res r;
        mock_answer(mk, s, &q, st, &r);
        ans = proto_step_res_encode(&r);
    }
    s->steps++;
    pthread_mutex_unlock(&mk->mu);
    free(st);
    proto_step_req_release(&q);
    if (!ans) return mock_fail(c, 500, PROTO_ERR_INTERNAL, "out of memory");
    return mock_send(c, 200, ans);
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
    if (!strcmp(url, PROTO_PATH_HEALTH)) {
        proto_health h = {"ok", mk->name, 0, MOCK_MAXS};
        return mock_send(c, 200, proto_health_encode(&h));
    }
    if (mk->token) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (!auth || strncmp(auth, "Bearer ", 7) || strcmp(auth + 7, mk->token)) {
            pthread_mutex_lock(&mk->mu);
            mk->n_unauthorized++;
            pthread_mutex_unlock(&mk->mu);
            return mock_fail(c, 401, "invalid_api_key", "a missing or wrong token");
        }
    }
    if (!strcmp(url, PROTO_PATH_INFO)) return mock_info(c, mk);
    size_t pl = strlen(PROTO_PATH_SESSION);
    if (!strcmp(method, "DELETE") && !strncmp(url, PROTO_PATH_SESSION, pl)) return mock_delete(c, mk, url + pl);
    json_t *req = b->p ? json_loadb(b->p, b->n, 0, NULL) : NULL;
    enum MHD_Result ret;
    if (req && !strcmp(url, PROTO_PATH_SCORE)) ret = mock_score(c, mk, req);
    else if (req && !strcmp(url, PROTO_PATH_STEP)) ret = mock_step(c, mk, req);
    else ret = mock_fail(c, 404, PROTO_ERR_NOT_FOUND, "not found");
    json_decref(req);
    return ret;
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

int mock_start_port(mock_member *mk, int port) {
    struct sockaddr_in loopback;
    memset(&loopback, 0, sizeof loopback);
    loopback.sin_family = AF_INET;
    loopback.sin_port = htons((uint16_t)port);
    loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pthread_mutex_init(&mk->mu, NULL);
    mk->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                             mock_handler, mk, MHD_OPTION_NOTIFY_COMPLETED, mock_done, mk,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&loopback, MHD_OPTION_END);
    if (!mk->d) return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(mk->d, MHD_DAEMON_INFO_BIND_PORT);
    mk->port = di ? di->port : 0;
    return mk->port ? 0 : -1;
}

int mock_start(mock_member *mk) { return mock_start_port(mk, 0); }

void mock_stop(mock_member *mk) {
    if (mk->d) MHD_stop_daemon(mk->d);
    mk->d = NULL;
    pthread_mutex_destroy(&mk->mu);
}
