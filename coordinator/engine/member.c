/* coordinator/engine/member.c: sessions and rounds of member.h (what every
 * kind of member shares). A round is a curl multi handle and the list of
 * transfers queued into it; running it drives them all until each ended
 * (each transfer carries its own deadline, set by its kind). */
#include "coordinator/engine/member.h"

#include "coordinator/engine/members.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_MAX (2 * CONSORT_MAX_MEMBERS)

struct member_round {
    CURLM *multi;
    CURL *easy[ROUND_MAX];
    int *code[ROUND_MAX];
    int n;
};

member_session *member_open(member_set *ms, size_t i, const char *id, double timeout_s) {
    member_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ops = members_ops(ms, i);
    s->ms = ms;
    s->idx = i;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->timeout_s = timeout_s > 0 ? timeout_s : 30;
    s->impl = s->ops->open(s);
    if (!s->impl) {
        free(s);
        return NULL;
    }
    return s;
}

void member_close(member_session *s, member_round *r) {
    if (s) s->ops->close(s, r);
}

void member_session_free(member_session *s) {
    if (!s) return;
    s->ops->free(s);
    free(s);
}

member_round *member_round_new(void) {
    member_round *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->multi = curl_multi_init();
    if (!r->multi) {
        free(r);
        return NULL;
    }
    return r;
}

void member_round_free(member_round *r) {
    if (!r) return;
    for (int k = 0; k < r->n; k++) curl_multi_remove_handle(r->multi, r->easy[k]);
    curl_multi_cleanup(r->multi);
    free(r);
}

int member_round_add(member_round *r, void *curl_easy, int *code) {
    if (r->n >= ROUND_MAX || curl_multi_add_handle(r->multi, curl_easy) != CURLM_OK) return -1;
    r->easy[r->n] = curl_easy;
    r->code[r->n] = code;
    r->n++;
    return 0;
}

static void record_result(member_round *r, CURL *easy, CURLcode result) {
    for (int k = 0; k < r->n; k++)
        if (r->easy[k] == easy) *r->code[k] = (int)result;
}

int member_round_run(member_round *r) {
    int n = r->n;
    if (!n) return 0;
    for (int k = 0; k < n; k++) *r->code[k] = CURLE_OPERATION_TIMEDOUT; /* unless it ends */
    int running = 0;
    do {
        CURLMcode mc = curl_multi_perform(r->multi, &running);
        if (mc != CURLM_OK) break;
        if (running) curl_multi_poll(r->multi, NULL, 0, 100, NULL);
    } while (running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(r->multi, &left)))
        if (msg->msg == CURLMSG_DONE) record_result(r, msg->easy_handle, msg->data.result);
    for (int k = 0; k < n; k++) curl_multi_remove_handle(r->multi, r->easy[k]);
    r->n = 0;
    return n;
}
