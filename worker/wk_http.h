/* worker/wk_http.h: the member protocol's HTTP routes (docs/PROTOCOL.md)
 * over common/http_server, and the worker's Prometheus metrics.
 *
 * Contract: wk_http_create() keeps pointers to the model and engine (not
 * owned); wk_http_route() is the http_server route callback (user = the
 * wk_http). Every error is a JSON {"error":{...}} with a 4xx/5xx status;
 * no input makes it crash, and a bad request never changes a session.
 */
#ifndef CONSORT_WK_HTTP_H
#define CONSORT_WK_HTTP_H

#include "common/http_server.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

typedef struct wk_http wk_http;

wk_http *wk_http_create(wk_model *m, wk_engine *e, const char *name);
void wk_http_free(wk_http *h);
void wk_http_route(http_conn *c, const http_request *req, void *user);

#endif
