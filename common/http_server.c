/* common/http_server.c: see http_server.h. */
#include "common/http_server.h"
#include "common/log.h"
#include "common/sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HS_MAX_HEADERS 16

struct http_server {
    struct MHD_Daemon *d;
    http_route_fn route;
    void *user;
    size_t max_body;
    int port;
    pthread_mutex_t mu;   /* guards streams, stopping */
    http_stream *streams; /* live streaming responses */
    int stopping;
};

struct http_conn {
    http_server *srv;
    struct MHD_Connection *mc;
    char *uri;   /* as received, with query */
    sbuf body; /* the upload so far */
    int started, too_big, replied, queue_failed;
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

static void conn_free(http_conn *c) {
    if (!c) return;
    for (int i = 0; i < c->nhdr; i++) {
        free(c->hname[i]);
        free(c->hvalue[i]);
    }
    free(c->uri);
    sb_free(&c->body);
    free(c);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc) {
    (void)mc;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = cls;
    c->uri = strdup(uri ? uri : "/");
    return c;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)mc;
    (void)toe;
    conn_free(*con_cls);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (!log_enabled(LOG_DEBUG)) return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    log_debug("microhttpd: %s", buf);
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
    return queue(c, status, resp, "application/json");
}

int http_error(http_conn *c, unsigned status, const char *type, const char *code,
               const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:{s:s, s:s, s:s}}", "error", "message", msg, "type",
                          type ? type : "invalid_request_error", "code", code ? code : "error");
    if (!o) { /* msg was not valid UTF-8: say so without it */
        o = json_pack("{s:{s:s, s:s, s:s}}", "error", "message", "(unprintable error message)",
                      "type", type ? type : "invalid_request_error", "code", code ? code : "error");
    }
    return http_reply_json(c, status, o);
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
    http_error(c, 413, "invalid_request_error", "body_too_large",
               "the request body is larger than the limit of %zu bytes", c->srv->max_body);
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
    if (!c->started) {
        c->started = 1;
        c->mc = mc;
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || n > s->max_body) {
                c->too_big = 1;
                reply_too_big(c);
                return c->queue_failed ? MHD_NO : MHD_YES;
            }
        }
        return MHD_YES;
    }
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
        log_error("http: no reply from the handler of %s %s", method, url);
        http_error(c, 500, "server_error", "internal", "the handler gave no reply");
    }
    return c->queue_failed ? MHD_NO : MHD_YES;
}

/* ---- start / stop -------------------------------------------------------- */

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
    if (!o.conn_limit) o.conn_limit = 256;
    if (!o.idle_timeout) o.idle_timeout = 600;
    if (o.port < 0 || o.port > 65535) {
        snprintf(err, err_size, "invalid port %d", o.port);
        return NULL;
    }
    if (!route) {
        snprintf(err, err_size, "no route callback");
        return NULL;
    }

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(o.host, NULL, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, err_size, "cannot resolve host '%s': %s", o.host, gai_strerror(gai));
        return NULL;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    int ipv6 = ai->ai_family == AF_INET6;
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (ipv6) ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)o.port);
    else ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)o.port);

    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->route = route;
    s->user = user;
    s->max_body = o.max_body;
    pthread_mutex_init(&s->mu, NULL);

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ipv6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)o.port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o.conn_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o.idle_timeout,
                            MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, err_size, "cannot listen on %s:%d (address in use or not available)",
                 o.host, o.port);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? (int)di->port : o.port;
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
    pthread_mutex_destroy(&s->mu);
    free(s);
}
