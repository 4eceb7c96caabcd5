/* fuzz_openai: libFuzzer harness for the OpenAI request parser
 * (oai_parse_request in coordinator/api/openai.c), both endpoints.
 *
 * Every input is parsed as a /v1/completions body and as a
 * /v1/chat/completions body. Properties beyond "does not crash":
 *  - a refused request has an HTTP status in 400..599 and an error that
 *    oai_error_json() can turn into the OpenAI error object (so its message,
 *    param and code are valid UTF-8: the server can always answer it);
 *  - an accepted request is complete: the prompt or the messages are set
 *    (exactly one), max_tokens in range, temperature and top_p finite and
 *    in range, weights finite and >= 0, every stop string non-NULL, the
 *    messages normalised to [{"role": string, "content": string}];
 *  - oai_request_free() releases everything (LeakSanitizer checks).
 */
#include "coordinator/api/openai.h"
#include "common/utf8.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const members[] = {"a", "b"};
static const oai_config cfg = {.model_id = "consort", .member_names = members, .n_members = 2,
                               .default_max_tokens = 0, .max_tokens_limit = 4096};

static void fail(const char *what, oai_endpoint ep) {
    fprintf(stderr, "fuzz_openai: property violated (%s endpoint): %s\n",
            ep == OAI_CHAT ? "chat" : "completions", what);
    abort();
}

static void check_refusal(oai_endpoint ep, const oai_error *err) {
    if (err->status < 400 || err->status > 599) fail("a refusal without a 4xx/5xx status", ep);
    if (!utf8_valid(err->message, strlen(err->message))) fail("an error message that is not valid UTF-8", ep);
    json_t *j = oai_error_json(err);
    if (!j) fail("an error that oai_error_json cannot build", ep);
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s) fail("an error object that cannot be written", ep);
    free(s);
    json_decref(j);
}

static void check_request(oai_endpoint ep, const oai_request *rq) {
    const ensemble_request *q = &rq->req;
    if (!q->prompt == !q->messages) fail("not exactly one of prompt and messages", ep);
    if (ep == OAI_COMPLETIONS && !q->prompt) fail("a completion without a prompt", ep);
    if (q->max_tokens < 0 || q->max_tokens > cfg.max_tokens_limit) fail("max_tokens out of range", ep);
    if (!isfinite(q->temperature) || q->temperature < 0) fail("a bad temperature", ep);
    if (!isfinite(q->top_p) || q->top_p < 0 || q->top_p > 1) fail("a bad top_p", ep);
    for (size_t i = 0; i < q->n_stop; i++)
        if (!q->stop[i]) fail("a NULL stop string", ep);
    if (q->messages) { /* normalised: [{"role": string, "content": string}] */
        if (!json_is_array(q->messages)) fail("messages that are not an array", ep);
        for (size_t i = 0; i < json_array_size(q->messages); i++) {
            const json_t *m = json_array_get(q->messages, i);
            if (!json_is_string(json_object_get(m, "role")) || !json_is_string(json_object_get(m, "content")))
                fail("a message not normalised to string role and content", ep);
        }
    }
    for (size_t i = 0; i < q->n_weights; i++)
        if (!isfinite(q->weights[i]) || q->weights[i] < 0) fail("a bad weight", ep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int ep = OAI_COMPLETIONS; ep <= OAI_CHAT; ep++) {
        oai_request rq;
        oai_error err;
        if (oai_parse_request((oai_endpoint)ep, (const char *)data, size, &cfg, &rq, &err) == 0) {
            check_request((oai_endpoint)ep, &rq);
            oai_request_free(&rq);
        } else {
            check_refusal((oai_endpoint)ep, &err);
        }
    }
    return 0;
}
