/* coordinator/engine/curl_pool.h: keep-alive curl easy handles for one
 * member, the member's access settings, and a blocking HTTP call over them.
 *
 * A handle holds a connection open to its member between calls, so a step
 * costs no TCP handshake. curl_pool_get() hands out a pooled handle (or a new
 * one), curl_pool_put() returns it (beyond CURL_POOL_MAX it is closed).
 * Thread-safe. The payloads are bytes: JSON is the caller's business.
 *
 * Access: a pool carries its member's shared secret (sent as
 * "Authorization: Bearer TOKEN" on every call, never logged) and the CA file
 * that checks an https:// member's certificate (libcurl's CAINFO; NULL =
 * the system's CAs). Both are set once, before the first call
 * (curl_pool_set_access), and read without locks afterwards.
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
    char *token;            /* shared secret, NULL = none (owned) */
    char *ca_file;          /* CA file for https://, NULL = system CAs (owned) */
} curl_pool;

void curl_pool_init(curl_pool *p);
/* Sets the pool's token and CA file (copied; NULL or "" = none). 0, or -1
 * out of memory. Call before the first call through the pool. */
int curl_pool_set_access(curl_pool *p, const char *token, const char *ca_file);
/* Applies the pool's TLS settings to a handle (after curl_easy_reset). */
void curl_pool_apply_tls(const curl_pool *p, void *h);
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

/* The headers of a JSON call (Content-Type, no 100-continue round trip,
 * the pool's Authorization, and, when deadline_ms >= 0, the member
 * protocol's deadline header with that many milliseconds); a list the
 * caller frees with curl_slist_free_all (void * = struct curl_slist *),
 * NULL when out of memory. */
void *curl_pool_json_headers(const curl_pool *p, long deadline_ms);

#endif
