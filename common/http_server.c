/* common/http_server.c: see http_server.h.
 *
 * Why it is shaped so. libmicrohttpd (MHD) does the HTTP parsing, one thread
 * per connection, and this file turns its callback protocol (an access
 * handler called again and again per request) into the header's model: one
 * route call per complete request. Everything both programs need in front of
 * their routes lives here so it is written once: the body limit, the bearer
 * token, the connection limits, the timeouts, TLS, and the one log line per
 * rejected request.
 *
 * State. A server owns a copy of its options (token, open paths, name), the
 * PEM texts for TLS, the key of the token fingerprint, the list of live
 * streams (`mu`) and the list of tracked connections (`cmu`) that the
 * watchdog thread walks. An http_conn is one request (MHD's per-request
 * context); a tracked connection (`hs_sock`, MHD's socket context) is one
 * TCP connection across its keep-alive requests and carries the read
 * deadline.
 *
 * The read deadline. MHD 0.9.75 offers only an inactivity timeout
 * (MHD_OPTION_CONNECTION_TIMEOUT, restarted by every byte), so a client
 * trickling a header byte per second would hold a connection forever. The
 * watchdog closes (shutdown(2), the MHD thread still owns the descriptor)
 * any connection whose request has not fully arrived by its deadline: set at
 * accept for the first request, at the request line for later ones, cleared
 * when the request reaches the route (or is answered early), and re-armed
 * at idle + read timeout when an answer completes. The header documents
 * what is exact.
 *
 * What may change: more options (each a field of http_server_opts with a
 * default in http_server_start), other early checks (next to check_token in
 * first_call).
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "common/http_server.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define HS_MAX_HEADERS 16
#define HS_WATCH_PERIOD_S 0.25

/* The phase of a tracked connection, for the read deadline. */
enum hs_phase {
    HS_READING, /* a request is arriving: deadline armed */
    HS_BUSY,    /* the request is in the route or being answered: no deadline */
    HS_BETWEEN, /* answered; waiting for the next request line: deadline armed */
};

typedef struct hs_sock {
    struct hs_sock *next, *prev;
    int fd;
    enum hs_phase phase;
    double deadline; /* clock_mono_s(); meaningful unless HS_BUSY */
    int cut;         /* the watchdog shut it down */
} hs_sock;

struct http_server {
    struct MHD_Daemon *d;
    http_route_fn route;
    void *user;
    size_t max_body;
    int port;
    char *name;
    char *token;       /* NULL: none required */
    char **open_paths; /* NULL-terminated copy, or NULL */
    char *tls_cert, *tls_key; /* PEM texts while the daemon runs */
    unsigned idle_timeout, read_timeout;
    uint64_t fp_key[2]; /* key of the token fingerprint */
    pthread_mutex_t mu;   /* guards streams, stopping */
    http_stream *streams; /* live streaming responses */
    int stopping;
    pthread_mutex_t cmu; /* guards socks, watch_stop */
    pthread_cond_t ccv;
    hs_sock *socks;
    int watch_stop;
    pthread_t watch_th;
    int watch_started;
    double last_limit_log; /* rate limit of "connection refused" lines */
};

struct http_conn {
    http_server *srv;
    struct MHD_Connection *mc;
    char *uri;   /* as received, with query */
    char *method, *path; /* copies for log lines */
    sbuf body; /* the upload so far */
    int started, too_big, replied, queue_failed;
    double received; /* clock_mono_s() when the headers were complete */
    char token_id[17];
    const char *err_code, *err_msg; /* of the error being answered (for the log) */
    int nhdr;
    char *hname[HS_MAX_HEADERS], *hvalue[HS_MAX_HEADERS];
};

struct http_stream {
    http_server *srv;
    http_stream *next, *prev;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *data; /* chunk being handed over by the producer */
    size_t len, off;
    int done;   /* producer returned */
    int closed; /* connection gone or server stopping */
    http_stream_fn fn;
    void (*cleanup)(void *);
    void *user;
};

/* ---- small helpers ------------------------------------------------------- */

int http_server_tls_available(void) { return MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES; }

int http_token_equal(const char *expected, const char *given) {
    if (!expected || !given) return 0;
    size_t ne = strlen(expected), ng = strlen(given);
    volatile unsigned char diff = (unsigned char)(ne != ng);
    /* Walk all of `given`, comparing with `expected` cyclically (a NUL when
     * empty): the loop never ends early. */
    for (size_t i = 0; i < ng; i++) {
        unsigned char e = ne ? (unsigned char)expected[i % ne] : 0;
        diff |= (unsigned char)((unsigned char)given[i] ^ e);
    }
    return diff == 0 && ne == ng;
}

/* SipHash-2-4 (Aumasson, Bernstein 2012): a keyed hash, so a fingerprint
 * says nothing about the token to someone without the key. */
static uint64_t rotl64(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static void sip_round(uint64_t v[4]) {
    v[0] += v[1]; v[1] = rotl64(v[1], 13); v[1] ^= v[0]; v[0] = rotl64(v[0], 32);
    v[2] += v[3]; v[3] = rotl64(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = rotl64(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = rotl64(v[1], 17); v[1] ^= v[2]; v[2] = rotl64(v[2], 32);
}

static uint64_t load_le64(const unsigned char *p, size_t n) {
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++) m |= (uint64_t)p[i] << (8 * i);
    return m;
}

static uint64_t siphash24(const uint64_t k[2], const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t v[4] = {k[0] ^ 0x736f6d6570736575ull, k[1] ^ 0x646f72616e646f6dull,
                     k[0] ^ 0x6c7967656e657261ull, k[1] ^ 0x7465646279746573ull};
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(p + i, 8);
        v[3] ^= m;
        sip_round(v);
        sip_round(v);
        v[0] ^= m;
    }
    uint64_t b = ((uint64_t)len << 56) | load_le64(p + whole, len % 8);
    v[3] ^= b;
    sip_round(v);
    sip_round(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++) sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The token of an "Authorization: Bearer TOKEN" header, or NULL. */
static const char *bearer_of(const char *auth) {
    if (!auth || strncasecmp(auth, "Bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
        return NULL;
    const char *t = auth + 6;
    while (*t == ' ' || *t == '\t') t++;
    return t;
}

static void client_address(struct MHD_Connection *mc, char *dst, size_t n) {
    snprintf(dst, n, "?");
    const union MHD_ConnectionInfo *ci =
        mc ? MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (getnameinfo(sa, len, dst, (socklen_t)n, NULL, 0, NI_NUMERICHOST) != 0) snprintf(dst, n, "?");
}

/* Copies text for a log line: at most n-1 bytes, control bytes as '?'. */
static void log_safe(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    dst[i] = 0;
}

/* The one log line of a rejected request. */
static void log_rejection(http_conn *c, unsigned status) {
    char addr[64], method[16], path[160], msg[240];
    client_address(c->mc, addr, sizeof addr);
    log_safe(method, sizeof method, c->method ? c->method : "?");
    log_safe(path, sizeof path, c->path ? c->path : "?");
    log_safe(msg, sizeof msg, c->err_msg ? c->err_msg : "");
    log_warn("%s: rejected %u %s \"%s\" %s %s from %s", c->srv->name, status,
             c->err_code ? c->err_code : "-", msg, method, path, addr);
}

static hs_sock *sock_of(struct MHD_Connection *mc) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void sock_set_phase(http_server *s, struct MHD_Connection *mc, enum hs_phase ph,
                           double deadline) {
    hs_sock *k = sock_of(mc);
    if (!k) return;
    pthread_mutex_lock(&s->cmu);
    k->phase = ph;
    k->deadline = deadline;
    pthread_mutex_unlock(&s->cmu);
}

static void conn_free(http_conn *c) {
    if (!c) return;
    for (int i = 0; i < c->nhdr; i++) {
        free(c->hname[i]);
        free(c->hvalue[i]);
    }
    free(c->uri);
    free(c->method);
    free(c->path);
    sb_free(&c->body);
    free(c);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc) {
    http_server *s = cls;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->uri = strdup(uri ? uri : "/");
    hs_sock *k = mc ? sock_of(mc) : NULL;
    if (k) {
        pthread_mutex_lock(&s->cmu);
        if (k->phase == HS_BETWEEN) { /* a later request: its read time starts now */
            k->phase = HS_READING;
            k->deadline = clock_mono_s() + s->read_timeout;
        }
        pthread_mutex_unlock(&s->cmu);
    }
    return c;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    http_server *s = cls;
    sock_set_phase(s, mc, HS_BETWEEN, clock_mono_s() + s->idle_timeout + s->read_timeout);
    conn_free(*con_cls);
    *con_cls = NULL;
}

/* Tracks each TCP connection for the watchdog (MHD's socket context). */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        hs_sock *k = calloc(1, sizeof *k);
        if (!k) return; /* untracked: only MHD's inactivity timeout applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? (int)ci->connect_fd : -1;
        k->phase = HS_READING;
        k->deadline = clock_mono_s() + s->read_timeout;
        pthread_mutex_lock(&s->cmu);
        k->next = s->socks;
        if (s->socks) s->socks->prev = k;
        s->socks = k;
        pthread_mutex_unlock(&s->cmu);
        *socket_context = k;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        hs_sock *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&s->cmu);
        if (k->prev) k->prev->next = k->next;
        else s->socks = k->next;
        if (k->next) k->next->prev = k->prev;
        pthread_mutex_unlock(&s->cmu);
        free(k);
        *socket_context = NULL;
    }
}

/* Closes connections whose request did not arrive by its deadline. */
static void *watchdog_main(void *arg) {
    http_server *s = arg;
    pthread_mutex_lock(&s->cmu);
    while (!s->watch_stop) {
        double now = clock_mono_s();
        for (hs_sock *k = s->socks; k; k = k->next) {
            if (k->phase == HS_BUSY || k->cut || k->fd < 0 || now < k->deadline) continue;
            k->cut = 1;
            shutdown(k->fd, SHUT_RDWR);
            log_warn("%s: closed a connection whose request did not arrive within %u s "
                     "(read timeout)", s->name, s->read_timeout);
        }
        struct timespec ts = clock_abs_after(HS_WATCH_PERIOD_S);
        pthread_cond_timedwait(&s->ccv, &s->cmu, &ts);
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

/* MHD's own messages are debug output, except a refused connection (over
 * the total or per-address limit), which is a warning at most once a
 * second so a flood cannot flood the log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    http_server *s = cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    if (strstr(buf, "limit")) {
        double now = clock_mono_s();
        pthread_mutex_lock(&s->cmu);
        int say = now - s->last_limit_log >= 1.0;
        if (say) s->last_limit_log = now;
        pthread_mutex_unlock(&s->cmu);
        if (say) {
            log_warn("%s: refused a connection: %s", s->name, buf);
            return;
        }
    }
    log_debug("%s: microhttpd: %s", s->name, buf);
}

static int queue(http_conn *c, unsigned status, struct MHD_Response *resp,
                 const char *content_type) {
    if (!resp) {
        c->queue_failed = 1;
        c->replied = 1;
        return -1;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; i < c->nhdr; i++) MHD_add_response_header(resp, c->hname[i], c->hvalue[i]);
    if (status >= 400) log_rejection(c, status);
    enum MHD_Result r = MHD_queue_response(c->mc, status, resp);
    MHD_destroy_response(resp);
    c->replied = 1;
    if (r != MHD_YES) {
        c->queue_failed = 1;
        return -1;
    }
    return 0;
}

int http_reply_text(http_conn *c, unsigned status, const char *content_type,
                    const char *data, size_t len) {
    if (!c || c->replied) return -1;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    return queue(c, status, resp, content_type ? content_type : "text/plain; charset=utf-8");
}

int http_reply_json(http_conn *c, unsigned status, json_t *obj) {
    if (!c || c->replied) {
        json_decref(obj);
        return -1;
    }
    char code[64] = "", msg[256] = "";
    if (status >= 400 && !c->err_code) {
        json_t *e = json_object_get(obj, "error");
        const char *jc = json_string_value(json_object_get(e, "code")),
                   *jm = json_string_value(json_object_get(e, "message"));
        snprintf(code, sizeof code, "%s", jc ? jc : "-");
        snprintf(msg, sizeof msg, "%s", jm ? jm : "");
        c->err_code = code;
        c->err_msg = msg;
    }
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) {
        static const char oom[] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"code\":\"internal\"}}";
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        return queue(c, 500, resp, "application/json");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(s);
    int r = queue(c, status, resp, "application/json");
    c->err_code = c->err_msg = NULL; /* they pointed into this frame */
    return r;
}

static int error_reply(http_conn *c, unsigned status, const char *type, const char *code,
                       const char *param, const char *msg) {
    if (!type) type = "invalid_request_error";
    if (!code) code = "error";
    json_t *o = json_pack("{s:{s:s, s:s, s:s, s:o}}", "error", "message", msg, "type", type,
                          "code", code, "param", param ? json_string(param) : json_null());
    if (!o) /* msg (or param) was not valid UTF-8: say so without it */
        o = json_pack("{s:{s:s, s:s, s:s, s:n}}", "error", "message",
                      "(unprintable error message)", "type", type, "code", code, "param");
    return http_reply_json(c, status, o);
}

int http_error(http_conn *c, unsigned status, const char *type, const char *code,
               const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_reply(c, status, type, code, NULL, msg);
}

int http_error_param(http_conn *c, unsigned status, const char *type, const char *code,
                     const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_reply(c, status, type, code, param, msg);
}

int http_add_header(http_conn *c, const char *name, const char *value) {
    if (!c || c->nhdr >= HS_MAX_HEADERS || !name || !value) return -1;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    c->hname[c->nhdr] = n;
    c->hvalue[c->nhdr] = v;
    c->nhdr++;
    return 0;
}

const char *http_header(http_conn *c, const char *name) {
    return MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, name);
}

const char *http_query_arg(http_conn *c, const char *name) {
    return MHD_lookup_connection_value(c->mc, MHD_GET_ARGUMENT_KIND, name);
}

int http_conn_gone(http_conn *c) {
    if (!c || !c->mc) return 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || ci->connect_fd < 0) return 1;
    int fd = (int)ci->connect_fd;
#ifdef POLLRDHUP
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return errno == EINTR ? 0 : 1;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
#else
    char ch;
    ssize_t n = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0) return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    return 0;
#endif
}

const char *http_conn_token_id(http_conn *c) { return c ? c->token_id : ""; }

double http_conn_received_s(http_conn *c) { return c ? c->received : 0; }

json_t *http_json_body(http_conn *c, const http_request *req) {
    if (req->body_len == 0) {
        http_error(c, 400, "invalid_request_error", "invalid_json",
                   "the request body must be a JSON object (got an empty body)");
        return NULL;
    }
    json_error_t jerr;
    json_t *o = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!o) {
        http_error(c, 400, "invalid_request_error", "invalid_json",
                   "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        http_error(c, 400, "invalid_request_error", "invalid_json",
                   "the request body must be a JSON object");
        return NULL;
    }
    return o;
}

/* ---- streaming ----------------------------------------------------------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_stream *st = cls;
    pthread_mutex_lock(&st->mu);
    while (!st->closed && !st->done && st->off == st->len) pthread_cond_wait(&st->cv, &st->mu);
    ssize_t r;
    if (st->closed) {
        r = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (st->off < st->len) {
        size_t n = st->len - st->off;
        if (n > max) n = max;
        memcpy(buf, st->data + st->off, n);
        st->off += n;
        if (st->off == st->len) pthread_cond_broadcast(&st->cv);
        r = (ssize_t)n;
    } else {
        r = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&st->mu);
    return r;
}

int http_stream_write(http_stream *st, const void *data, size_t len) {
    if (!st) return -1;
    if (len == 0) return 0;
    pthread_mutex_lock(&st->mu);
    if (st->closed) {
        pthread_mutex_unlock(&st->mu);
        return -1;
    }
    st->data = data;
    st->len = len;
    st->off = 0;
    pthread_cond_broadcast(&st->cv);
    while (!st->closed && st->off < st->len) pthread_cond_wait(&st->cv, &st->mu);
    int r = st->off == st->len ? 0 : -1;
    st->data = NULL;
    st->len = st->off = 0;
    pthread_mutex_unlock(&st->mu);
    return r;
}

static void *stream_main(void *arg) {
    http_stream *st = arg;
    st->fn(st, st->user);
    pthread_mutex_lock(&st->mu);
    st->done = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static void stream_free(void *cls) {
    http_stream *st = cls;
    pthread_mutex_lock(&st->mu);
    st->closed = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (st->th_started) pthread_join(st->th, NULL);
    if (st->cleanup) st->cleanup(st->user);
    http_server *s = st->srv;
    pthread_mutex_lock(&s->mu);
    if (st->prev) st->prev->next = st->next;
    else s->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

int http_reply_stream(http_conn *c, unsigned status, const char *content_type,
                      http_stream_fn fn, void (*cleanup)(void *user), void *user) {
    if (!c || c->replied || !fn) {
        if (cleanup) cleanup(user);
        return -1;
    }
    http_server *s = c->srv;
    http_stream *st = calloc(1, sizeof *st);
    if (!st) {
        if (cleanup) cleanup(user);
        http_error(c, 500, "server_error", "internal", "out of memory");
        return -1;
    }
    st->srv = s;
    st->fn = fn;
    st->cleanup = cleanup;
    st->user = user;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping;
    if (!stopping) {
        st->next = s->streams;
        if (s->streams) s->streams->prev = st;
        s->streams = st;
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        pthread_cond_destroy(&st->cv);
        pthread_mutex_destroy(&st->mu);
        free(st);
        if (cleanup) cleanup(user);
        http_error(c, 503, "server_error", "shutting_down", "the server is shutting down");
        return -1;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        http_error(c, 500, "server_error", "internal", "cannot create a response");
        return -1;
    }
    if (pthread_create(&st->th, NULL, stream_main, st) == 0) st->th_started = 1;
    else {
        pthread_mutex_lock(&st->mu);
        st->done = 1; /* an empty body rather than a hang */
        pthread_mutex_unlock(&st->mu);
    }
    /* From here on stream_free (called by MHD when the response dies) owns st. */
    return queue(c, status, resp, content_type ? content_type : "text/event-stream");
}

/* ---- request dispatch ---------------------------------------------------- */

static void reply_too_big(http_conn *c) {
    http_error_param(c, 413, "invalid_request_error", "body_too_large", "body",
                     "the request body is larger than the limit of %zu bytes", c->srv->max_body);
}

static int is_open_path(const http_server *s, const char *path) {
    for (char **p = s->open_paths; p && *p; p++)
        if (!strcmp(*p, path)) return 1;
    return 0;
}

/* Fingerprints the request's bearer token and, when the server requires
 * one, checks it: 0, or -1 after answering 401. */
static int check_token(http_conn *c, const char *path) {
    http_server *s = c->srv;
    const char *given = bearer_of(MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND,
                                                              MHD_HTTP_HEADER_AUTHORIZATION));
    if (given && *given)
        snprintf(c->token_id, sizeof c->token_id, "%016llx",
                 (unsigned long long)siphash24(s->fp_key, given, strlen(given)));
    if (!s->token || is_open_path(s, path)) return 0;
    if (given && http_token_equal(s->token, given)) return 0;
    c->token_id[0] = 0;
    http_add_header(c, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    http_error(c, 401, "invalid_request_error", "invalid_api_key",
               given ? "the bearer token is not valid"
                     : "this server requires an API key: send \"Authorization: Bearer <token>\"");
    return -1;
}

/* The access handler's first call for a request: the headers are in. */
static enum MHD_Result first_call(http_conn *c, struct MHD_Connection *mc, const char *url,
                                  const char *method) {
    http_server *s = c->srv;
    c->started = 1;
    c->mc = mc;
    c->received = clock_mono_s();
    c->method = strdup(method ? method : "?");
    c->path = strdup(url ? url : "/");
    if (check_token(c, url ? url : "/") != 0) {
        sock_set_phase(s, mc, HS_BUSY, 0);
        return c->queue_failed ? MHD_NO : MHD_YES;
    }
    const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || *end || n > s->max_body) {
            c->too_big = 1;
            sock_set_phase(s, mc, HS_BUSY, 0);
            reply_too_big(c);
            return c->queue_failed ? MHD_NO : MHD_YES;
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    http_server *s = cls;
    http_conn *c = *con_cls;
    if (!c) {
        c = on_uri(s, url, mc);
        if (!c) return MHD_NO;
        *con_cls = c;
    }
    if (!c->started) return first_call(c, mc, url, method);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->replied || c->too_big) return MHD_YES;
        if (c->body.n + n > s->max_body) {
            c->too_big = 1;
            sb_free(&c->body);
            return MHD_YES;
        }
        if (sb_add(&c->body, upload_data, n)) return MHD_NO;
        return MHD_YES;
    }
    if (c->replied) return c->queue_failed ? MHD_NO : MHD_YES;
    sock_set_phase(s, mc, HS_BUSY, 0); /* the whole request is in */
    if (c->too_big) {
        reply_too_big(c);
        return c->queue_failed ? MHD_NO : MHD_YES;
    }
    const char *q = strchr(c->uri, '?');
    http_request req = {
        .method = method,
        .path = url,
        .query = q ? q + 1 : "",
        .body = c->body.p ? c->body.p : "",
        .body_len = c->body.n,
    };
    s->route(c, &req, s->user);
    if (!c->replied) {
        log_error("%s: no reply from the handler of %s %s", s->name, method, url);
        http_error(c, 500, "server_error", "internal", "the handler gave no reply");
    }
    return c->queue_failed ? MHD_NO : MHD_YES;
}

/* ---- start / stop -------------------------------------------------------- */

/* A whole file as a NUL-terminated string (PEM), or NULL with err. */
static char *read_text_file(const char *path, const char *what, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot read the TLS %s file: %s", what, strerror(errno));
        return NULL;
    }
    sbuf b = {0};
    char chunk[4096];
    size_t n;
    int bad = 0;
    while (!bad && (n = fread(chunk, 1, sizeof chunk, f)) > 0) bad = sb_add(&b, chunk, n) != 0;
    bad |= ferror(f) != 0;
    fclose(f);
    if (!bad) bad = sb_add(&b, "", 1) != 0;
    if (bad || b.n <= 1) {
        sb_free(&b);
        snprintf(err, err_size, "cannot read the TLS %s file (empty or unreadable)", what);
        return NULL;
    }
    return b.p;
}

static char *dup_or_null(const char *v) { return v && *v ? strdup(v) : NULL; }

static char **dup_paths(const char *const *paths) {
    size_t n = 0;
    while (paths && paths[n]) n++;
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++) out[i] = strdup(paths[i]);
    return out;
}

static void server_free(http_server *s) {
    if (!s) return;
    free(s->name);
    if (s->token) {
        memset(s->token, 0, strlen(s->token));
        free(s->token);
    }
    for (char **p = s->open_paths; p && *p; p++) free(*p);
    free(s->open_paths);
    free(s->tls_cert);
    if (s->tls_key) {
        memset(s->tls_key, 0, strlen(s->tls_key));
        free(s->tls_key);
    }
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->cmu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Resolves o->host into addr (port set): 0, or -1 with err. */
static int resolve_bind(const http_server_opts *o, struct sockaddr_storage *addr, int *ipv6,
                        char *err, size_t err_size) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(o->host, NULL, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, err_size, "cannot resolve host '%s': %s", o->host, gai_strerror(gai));
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    *ipv6 = ai->ai_family == AF_INET6;
    memcpy(addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (*ipv6) ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)o->port);
    else ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)o->port);
    return 0;
}

/* Copies the options that outlive the call into s: 0, or -1 with err. */
static int server_take_opts(http_server *s, const http_server_opts *o, char *err, size_t err_size) {
    s->name = strdup(o->name ? o->name : "http");
    s->token = dup_or_null(o->bearer_token);
    s->open_paths = o->open_paths ? dup_paths(o->open_paths) : NULL;
    if (!s->name || (o->bearer_token && *o->bearer_token && !s->token) ||
        (o->open_paths && !s->open_paths)) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    int want_tls = (o->tls_cert_file && *o->tls_cert_file) || (o->tls_key_file && *o->tls_key_file);
    if (!want_tls) return 0;
    if (!o->tls_cert_file || !*o->tls_cert_file || !o->tls_key_file || !*o->tls_key_file) {
        snprintf(err, err_size, "TLS needs both a certificate file and a key file");
        return -1;
    }
    if (!http_server_tls_available()) {
        snprintf(err, err_size, "this libmicrohttpd was built without TLS support");
        return -1;
    }
    s->tls_cert = read_text_file(o->tls_cert_file, "certificate", err, err_size);
    if (!s->tls_cert) return -1;
    s->tls_key = read_text_file(o->tls_key_file, "key", err, err_size);
    return s->tls_key ? 0 : -1;
}

http_server *http_server_start(const http_server_opts *opts, http_route_fn route,
                               void *user, char *err, size_t err_size) {
    char dummy[8];
    if (!err) {
        err = dummy;
        err_size = sizeof dummy;
    }
    err[0] = 0;
    http_server_opts o = opts ? *opts : (http_server_opts){0};
    if (!o.host) o.host = "127.0.0.1";
    if (!o.max_body) o.max_body = 8u << 20;
    if (!o.conn_limit) o.conn_limit = HTTP_DEFAULT_CONN_LIMIT;
    if (!o.per_ip_limit) o.per_ip_limit = HTTP_DEFAULT_PER_IP_LIMIT;
    if (!o.idle_timeout) o.idle_timeout = HTTP_DEFAULT_IDLE_TIMEOUT;
    if (!o.read_timeout) o.read_timeout = HTTP_DEFAULT_READ_TIMEOUT;
    if (o.port < 0 || o.port > 65535) {
        snprintf(err, err_size, "invalid port %d", o.port);
        return NULL;
    }
    if (!route) {
        snprintf(err, err_size, "no route callback");
        return NULL;
    }
    struct sockaddr_storage addr;
    int ipv6 = 0;
    if (resolve_bind(&o, &addr, &ipv6, err, err_size) != 0) return NULL;

    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->route = route;
    s->user = user;
    s->max_body = o.max_body;
    s->idle_timeout = o.idle_timeout;
    s->read_timeout = o.read_timeout;
    s->last_limit_log = -1e9;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->ccv, NULL);
    if (server_take_opts(s, &o, err, err_size) != 0) {
        server_free(s);
        return NULL;
    }
    if (rng_os_bytes(s->fp_key, sizeof s->fp_key) != 0) {
        snprintf(err, err_size, "the system's random source failed");
        server_free(s);
        return NULL;
    }

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ipv6) flags |= MHD_USE_IPv6;
    if (s->tls_cert) flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    if (!s->tls_cert) tls[0].option = MHD_OPTION_END;
    s->d = MHD_start_daemon(flags, (uint16_t)o.port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o.conn_limit,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o.per_ip_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o.idle_timeout,
                            MHD_OPTION_ARRAY, tls,
                            MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, err_size, "cannot listen on %s:%d (address in use or not available%s)",
                 o.host, o.port, s->tls_cert ? ", or the TLS certificate or key is not valid" : "");
        server_free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? (int)di->port : o.port;
    if (pthread_create(&s->watch_th, NULL, watchdog_main, s) == 0) s->watch_started = 1;
    else log_warn("%s: no watchdog thread: the read timeout is not enforced", s->name);
    return s;
}

int http_server_port(const http_server *s) { return s ? s->port : -1; }

void http_server_stop(http_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    for (http_stream *st = s->streams; st; st = st->next) {
        pthread_mutex_lock(&st->mu);
        st->closed = 1;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->d);
    pthread_mutex_lock(&s->cmu);
    s->watch_stop = 1;
    pthread_cond_broadcast(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
    if (s->watch_started) pthread_join(s->watch_th, NULL);
    server_free(s);
}
