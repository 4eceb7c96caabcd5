/* coordinator/engine/curl_pool.h: keep-alive curl easy handles for one
 * member, and a blocking HTTP call over them.
 *
 * A handle holds a connection open to its member between calls, so a step
 * costs no TCP handshake. curl_pool_get() hands out a pooled handle (or a new
 * one), curl_pool_put() returns it (beyond CURL_POOL_MAX it is closed).
 * Thread-safe. The payloads are bytes: JSON is the caller's business.
 */
#ifndef CONSORT_CURL_POOL_H
#define CONSORT_CURL_POOL_H

#include "common/sbuf.h"

#include <pthread.h>
#include <stddef.h>

#define CURL_POOL_MAX 16

typedef struct {
    pthread_mutex_t mu;
    void *h[CURL_POOL_MAX]; /* CURL * */
    int n;
} curl_pool;

void curl_pool_init(curl_pool *p);
void curl_pool_free(curl_pool *p);       /* closes every pooled handle */
void *curl_pool_get(curl_pool *p);       /* CURL *, NULL when out of memory */
void curl_pool_put(curl_pool *p, void *h);

/* Blocking call: method "GET", "POST" or "DELETE" to url, with body (NULL
 * for none) as application/json, timeout in seconds (0 = 60). Returns the
 * HTTP status with the answer's bytes in *resp (reset first), or -1 when no
 * answer arrived (err says why, in curl's words). A handle whose transfer
 * failed is closed, not pooled. */
int curl_pool_call(curl_pool *p, const char *url, const char *method, const char *body, size_t body_len,
                   double timeout_s, sbuf *resp, char *err, size_t errlen);

/* The headers of a JSON call (Content-Type, and no 100-continue round
 * trip); a list the caller frees with curl_slist_free_all (void * =
 * struct curl_slist *). */
void *curl_pool_json_headers(void);

#endif
