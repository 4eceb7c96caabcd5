/* coordinator/engine/curl_pool.c: see curl_pool.h. */
#include "coordinator/engine/curl_pool.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

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
    pthread_mutex_destroy(&p->mu);
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

void *curl_pool_json_headers(void) {
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    return curl_slist_append(hdr, "Expect:");
}

int curl_pool_call(curl_pool *p, const char *url, const char *method, const char *body, size_t body_len,
                   double timeout_s, sbuf *resp, char *err, size_t errlen) {
    resp->n = 0;
    CURL *h = curl_pool_get(p);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct curl_slist *hdr = curl_pool_json_headers();
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)((timeout_s > 0 ? timeout_s : 60) * 1000));
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
