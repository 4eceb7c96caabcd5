/* coordinator/engine/curl_pool.c: see curl_pool.h. */
#include "coordinator/engine/curl_pool.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The member protocol's deadline header (docs/PROTOCOL.md): milliseconds
 * the member may spend on this call, counted from its receipt. */
#define DEADLINE_HEADER "X-Consort-Deadline-Ms"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void curl_pool_init(curl_pool *p) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_once(&curl_once, curl_init_once);
}

void curl_pool_free(curl_pool *p) {
    for (int k = 0; k < p->n; k++) curl_easy_cleanup(p->h[k]);
    p->n = 0;
    if (p->token) memset(p->token, 0, strlen(p->token)); /* no secret left in freed memory */
    free(p->token);
    free(p->ca_file);
    p->token = p->ca_file = NULL;
    pthread_mutex_destroy(&p->mu);
}

static int set_owned(char **dst, const char *v) {
    free(*dst);
    *dst = NULL;
    if (!v || !*v) return 0;
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

int curl_pool_set_access(curl_pool *p, const char *token, const char *ca_file) {
    return set_owned(&p->token, token) || set_owned(&p->ca_file, ca_file) ? -1 : 0;
}

void curl_pool_apply_tls(const curl_pool *p, void *h) {
    if (p->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, p->ca_file);
}

void *curl_pool_get(curl_pool *p) {
    void *h = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n > 0) h = p->h[--p->n];
    pthread_mutex_unlock(&p->mu);
    return h ? h : curl_easy_init();
}

void curl_pool_put(curl_pool *p, void *h) {
    if (!h) return;
    pthread_mutex_lock(&p->mu);
    if (p->n < CURL_POOL_MAX) {
        p->h[p->n++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (h) curl_easy_cleanup(h);
}

/* Appends one header; on failure frees the list and returns NULL. */
static struct curl_slist *add_header(struct curl_slist *l, const char *h) {
    if (!l) return NULL;
    struct curl_slist *n = curl_slist_append(l, h);
    if (!n) curl_slist_free_all(l);
    return n;
}

void *curl_pool_json_headers(const curl_pool *p, long deadline_ms) {
    struct curl_slist *hdr = add_header(curl_slist_append(NULL, "Content-Type: application/json"), "Expect:");
    if (p && p->token) {
        size_t n = strlen(p->token) + 32;
        char *line = malloc(n);
        if (!line) {
            curl_slist_free_all(hdr);
            return NULL;
        }
        snprintf(line, n, "Authorization: Bearer %s", p->token);
        hdr = add_header(hdr, line);
        memset(line, 0, n);
        free(line);
    }
    if (deadline_ms >= 0) {
        char line[64];
        snprintf(line, sizeof line, DEADLINE_HEADER ": %ld", deadline_ms);
        hdr = add_header(hdr, line);
    }
    return hdr;
}

int curl_pool_call(curl_pool *p, const char *url, const char *method, const char *body, size_t body_len,
                   double timeout_s, sbuf *resp, char *err, size_t errlen) {
    resp->n = 0;
    CURL *h = curl_pool_get(p);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    long ms = (long)((timeout_s > 0 ? timeout_s : 60) * 1000);
    struct curl_slist *hdr = curl_pool_json_headers(p, ms);
    if (!hdr) {
        curl_pool_put(p, h);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    curl_easy_reset(h);
    curl_pool_apply_tls(p, h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sb_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(h);
    long status = -1;
    if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else snprintf(err, errlen, "%s", curl_easy_strerror(rc));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdr);
    if (rc == CURLE_OK) curl_pool_put(p, h);
    else curl_easy_cleanup(h); /* a failed connection is not reused */
    return (int)status;
}
