/* coordinator/api/openai.c: OpenAI request parsing and response building.
 * See openai.h for the contract and docs/API.md for the field list.
 *
 * Why it is shaped so. The OpenAI shapes are the one place where a client's
 * JSON meets the engine, so this file is a translation in both directions
 * and nothing else: a request body becomes an ensemble_request (validated
 * field by field: a known field of the wrong type or out of range is a 400
 * naming it in `param`, an OpenAI feature consort does not have is a 400
 * that says so rather than being ignored, unknown fields are ignored as the
 * OpenAI API does), and the engine's result, chunks and statistics become
 * completion, chat and stream objects. It owns no state beyond the request
 * it is filling (an oai_request owns its JSON and the strings the
 * ensemble_request borrows) and performs no I/O; api.c does the HTTP.
 * Strategy names are checked against the registry (sampler/registry.h), so
 * a name means here what it means everywhere.
 *
 * Every error text passes through oai_fail(), which keeps it valid UTF-8
 * (jansson quotes the bytes around a parse error, which may cut a
 * character); a fuzz harness (tests/fuzz/fuzz_openai.c) holds both
 * directions to their contracts.
 *
 * What may change: new OpenAI fields (one parse_* function each), the
 * `ensemble` extension's statistics. What must not: a 4xx, never a crash or
 * a 500, for anything a client can send. */
#include "coordinator/api/openai.h"

#include "common/utf8.h"
#include "sampler/registry.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------- */

const char *oai_error_type(int status) {
    switch (status) {
    case 400: case 404: case 409: case 413: case 422: return "invalid_request_error";
    case 401: return "invalid_request_error"; /* as OpenAI answers a bad key */
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* Makes the string in buf (size bytes) valid UTF-8: invalid bytes become
 * U+FFFD and a character the end of buf would cut is dropped. Error texts
 * quote the client's input (jansson's parse errors quote the bytes near the
 * error, cut anywhere) and snprintf may cut a character in two; JSON needs
 * valid UTF-8 (found by tests/fuzz/fuzz_openai.c). */
static void utf8_fit(char *buf, size_t size) {
    size_t n;
    char *s = utf8_sanitize(buf, strlen(buf), &n);
    if (!s) { /* out of memory: keep the ASCII */
        for (char *p = buf; *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
        return;
    }
    if (n >= size) n = utf8_complete_len(s, size - 1);
    memcpy(buf, s, n);
    buf[n] = 0;
    free(s);
}

int oai_fail(oai_error *err, int status, const char *param, const char *code,
             const char *fmt, ...) {
    if (!err) return -1;
    err->status = status;
    err->type = oai_error_type(status);
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    utf8_fit(err->param, sizeof err->param);
    utf8_fit(err->message, sizeof err->message);
    return -1;
}

json_t *oai_error_json(const oai_error *err) {
    const char *type = err->type ? err->type : oai_error_type(err->status);
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error",
                     "message", err->message, "type", type,
                     "param", err->param[0] ? json_string(err->param) : json_null(),
                     "code", err->code[0] ? json_string(err->code) : json_null());
}

/* ---- field helpers ----------------------------------------------------------- */

/* The value of key, NULL when absent or JSON null (both mean "not given"). */
static json_t *opt(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* An integer (or a real with an integral value). 0 absent, 1 set, -1 error. */
static int get_int(const json_t *o, const char *key, long long lo, long long hi,
                   long long *out, oai_error *err) {
    json_t *v = opt(o, key);
    if (!v) return 0;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v);
    } else {
        return oai_fail(err, 400, key, "invalid_type",
                        "Invalid type for '%s': expected an integer, but got %s instead.",
                        key, type_name(v));
    }
    if (x < lo || x > hi)
        return oai_fail(err, 400, key, "invalid_value",
                        "Invalid value for '%s': %lld is out of range [%lld, %lld].",
                        key, x, lo, hi);
    *out = x;
    return 1;
}

static int get_num(const json_t *o, const char *key, double lo, double hi,
                   double *out, oai_error *err) {
    json_t *v = opt(o, key);
    if (!v) return 0;
    if (!json_is_number(v))
        return oai_fail(err, 400, key, "invalid_type",
                        "Invalid type for '%s': expected a number, but got %s instead.",
                        key, type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return oai_fail(err, 400, key, "invalid_value",
                        "Invalid value for '%s': %g is out of range [%g, %g].", key, x, lo, hi);
    *out = x;
    return 1;
}

static int get_bool(const json_t *o, const char *key, int *out, oai_error *err) {
    json_t *v = opt(o, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return oai_fail(err, 400, key, "invalid_type",
                        "Invalid type for '%s': expected a boolean, but got %s instead.",
                        key, type_name(v));
    *out = json_is_true(v);
    return 1;
}

static int unsupported(oai_error *err, const char *key, const char *why) {
    return oai_fail(err, 400, key, "unsupported_parameter",
                    "Unsupported parameter: '%s' %s (consort serves one choice, text only; "
                    "see docs/API.md).", key, why);
}

static int member_known(const oai_config *cfg, const char *name) {
    if (!cfg->member_names) return 1;
    for (size_t i = 0; i < cfg->n_members; i++)
        if (strcmp(cfg->member_names[i], name) == 0) return 1;
    return 0;
}

static void list_members(const oai_config *cfg, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; cfg->member_names && i < cfg->n_members && k + 1 < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", cfg->member_names[i]);
}

/* ---- the fields every endpoint knows ------------------------------------------ */

static const char *const common_keys[] = {
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "min_p", "seed", "stop", "stream", "stream_options", "logprobs", "n", "ensemble",
    "presence_penalty", "frequency_penalty", "logit_bias",
    /* accepted and ignored: informational only */
    "user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
    NULL};
static const char *const completion_keys[] = {"prompt", "echo", "best_of", "suffix", NULL};
static const char *const chat_keys[] = {
    "messages", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
    "parallel_tool_calls", "response_format", "modalities", "audio", "prediction",
    "web_search_options", "reasoning_effort", "verbosity", NULL};

static int in_list(const char *const *list, const char *key) {
    for (; *list; list++)
        if (strcmp(*list, key) == 0) return 1;
    return 0;
}

/* ---- ensemble extension ------------------------------------------------------ */

/* ensemble.strategy: a generation name of the strategy registry. */
static int check_strategy(const char *s, const oai_config *cfg, const char *param,
                          oai_error *err) {
    const char *member;
    char msg[768];
    const sreg_entry *e = sreg_parse(s, SREG_GENERATION, &member, msg, sizeof msg);
    if (!e) return oai_fail(err, 400, param, "unknown_strategy", "%s.", msg);
    if (!member || member_known(cfg, member)) return 0;
    char names[256];
    list_members(cfg, names, sizeof names);
    return oai_fail(err, 400, param, "unknown_member",
                    "Unknown member '%s' in strategy '%s' (members: %s).", member, s, names);
}

static int parse_ensemble(const json_t *ens, const oai_config *cfg, oai_request *rq,
                          oai_error *err) {
    if (!json_is_object(ens))
        return oai_fail(err, 400, "ensemble", "invalid_type",
                        "Invalid type for 'ensemble': expected an object, but got %s instead.",
                        type_name(ens));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)ens, key, v) {
        if (strcmp(key, "strategy") && strcmp(key, "weights") && strcmp(key, "members") &&
            strcmp(key, "threshold") && strcmp(key, "speculative") && strcmp(key, "draft_member"))
            return oai_fail(err, 400, "ensemble", "unknown_parameter",
                            "Unrecognized field 'ensemble.%s' (known: strategy, weights, "
                            "members, threshold, speculative, draft_member).", key);
    }
    ensemble_request *q = &rq->req;
    if ((v = opt(ens, "members"))) {
        if (!json_is_array(v) || json_array_size(v) == 0)
            return oai_fail(err, 400, "ensemble.members", "invalid_type",
                            "'ensemble.members' must be a non-empty array of member names.");
        if (json_array_size(v) > CONSORT_MAX_MEMBERS)
            return oai_fail(err, 400, "ensemble.members", "invalid_value",
                            "'ensemble.members' has more than %d names.", CONSORT_MAX_MEMBERS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *s = json_array_get(v, i);
            if (!json_is_string(s))
                return oai_fail(err, 400, "ensemble.members", "invalid_type",
                                "'ensemble.members[%zu]' must be a string.", i);
            const char *name = json_string_value(s);
            if (!member_known(cfg, name)) {
                char names[256];
                list_members(cfg, names, sizeof names);
                return oai_fail(err, 400, "ensemble.members", "unknown_member",
                                "Unknown member '%s' (members: %s).", name, names);
            }
            for (size_t j = 0; j < i; j++)
                if (strcmp(rq->members_[j], name) == 0)
                    return oai_fail(err, 400, "ensemble.members", "invalid_value",
                                    "Member '%s' is named twice in 'ensemble.members'.", name);
            rq->members_[i] = name;
        }
        q->members = rq->members_;
        q->n_members = json_array_size(v);
    }
    if ((v = opt(ens, "strategy"))) {
        if (!json_is_string(v))
            return oai_fail(err, 400, "ensemble.strategy", "invalid_type",
                            "'ensemble.strategy' must be a string.");
        if (check_strategy(json_string_value(v), cfg, "ensemble.strategy", err)) return -1;
        snprintf(rq->strategy, sizeof rq->strategy, "%s", json_string_value(v));
        q->strategy = rq->strategy;
    }
    if ((v = opt(ens, "weights"))) {
        if (json_is_string(v)) {
            if (strcmp(json_string_value(v), "auto") != 0)
                return oai_fail(err, 400, "ensemble.weights", "invalid_value",
                                "'ensemble.weights' must be an array of numbers or \"auto\".");
            q->weights_auto = 1;
        } else if (json_is_array(v)) {
            size_t n = json_array_size(v);
            size_t want = q->members ? q->n_members : (cfg->member_names ? cfg->n_members : n);
            if (n == 0 || n > CONSORT_MAX_MEMBERS || n != want)
                return oai_fail(err, 400, "ensemble.weights", "invalid_value",
                                "'ensemble.weights' has %zu values for %zu members.", n, want);
            double sum = 0;
            for (size_t i = 0; i < n; i++) {
                json_t *w = json_array_get(v, i);
                double x = json_is_number(w) ? json_number_value(w) : -1;
                if (!json_is_number(w) || !isfinite(x) || x < 0)
                    return oai_fail(err, 400, "ensemble.weights", "invalid_value",
                                    "'ensemble.weights[%zu]' must be a number >= 0.", i);
                rq->weights_[i] = x;
                sum += x;
            }
            if (!(sum > 0))
                return oai_fail(err, 400, "ensemble.weights", "invalid_value",
                                "'ensemble.weights' must not all be zero.");
            q->weights = rq->weights_;
            q->n_weights = n;
        } else {
            return oai_fail(err, 400, "ensemble.weights", "invalid_type",
                            "'ensemble.weights' must be an array of numbers or \"auto\".");
        }
    }
    if ((v = opt(ens, "threshold"))) {
        if (!json_is_number(v) || !(json_number_value(v) > 0) || json_number_value(v) > 1)
            return oai_fail(err, 400, "ensemble.threshold", "invalid_value",
                            "'ensemble.threshold' must be a number in (0, 1].");
        q->threshold = json_number_value(v);
    }
    if ((v = opt(ens, "speculative"))) {
        if (!json_is_boolean(v))
            return oai_fail(err, 400, "ensemble.speculative", "invalid_type",
                            "'ensemble.speculative' must be true or false.");
        q->speculative = json_is_true(v) ? 1 : -1;
    }
    if ((v = opt(ens, "draft_member"))) {
        if (!json_is_string(v))
            return oai_fail(err, 400, "ensemble.draft_member", "invalid_type",
                            "'ensemble.draft_member' must be a member's name, or \"\" for none.");
        q->draft_member = json_string_value(v);
    }
    return 0;
}

/* ---- prompt and messages ----------------------------------------------------- */

static int parse_prompt(const json_t *body, oai_request *rq, oai_error *err) {
    json_t *p = opt(body, "prompt");
    if (!p)
        return oai_fail(err, 400, "prompt", "missing_required_parameter",
                        "Missing required parameter: 'prompt'.");
    if (json_is_array(p)) {
        if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0)))
            return oai_fail(err, 400, "prompt", "invalid_value",
                            "'prompt' must be a string or an array of exactly one string "
                            "(batches and token-id prompts are not supported).");
        p = json_array_get(p, 0);
    }
    if (!json_is_string(p))
        return oai_fail(err, 400, "prompt", "invalid_type",
                        "Invalid type for 'prompt': expected a string, but got %s instead.",
                        type_name(p));
    rq->req.prompt = json_string_value(p);
    rq->prompt_chars = oai_utf8_chars(json_string_value(p), json_string_length(p));
    return 0;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts (joined). */
static json_t *message_text(const json_t *content, size_t i, oai_error *err) {
    if (json_is_string(content)) return json_incref((json_t *)content);
    if (!json_is_array(content)) {
        oai_fail(err, 400, "messages", "invalid_type",
                 "Invalid type for 'messages[%zu].content': expected a string or an array of "
                 "text parts, but got %s instead.", i, type_name(content));
        return NULL;
    }
    size_t total = 0;
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *part = json_array_get(content, k);
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) ||
            strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
            oai_fail(err, 400, "messages", "unsupported_content",
                     "'messages[%zu].content[%zu]': only parts {\"type\": \"text\", \"text\": "
                     "...} are supported (no images, audio or files).", i, k);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *buf = malloc(total + 1);
    if (!buf) { oai_fail(err, 500, NULL, NULL, "out of memory"); return NULL; }
    size_t at = 0;
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *text = json_object_get(json_array_get(content, k), "text");
        memcpy(buf + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    json_t *s = json_stringn_nocheck(buf, at);
    free(buf);
    return s;
}

static int parse_messages(const json_t *body, oai_request *rq, oai_error *err) {
    json_t *m = opt(body, "messages");
    if (!m)
        return oai_fail(err, 400, "messages", "missing_required_parameter",
                        "Missing required parameter: 'messages'.");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return oai_fail(err, 400, "messages", "invalid_value",
                        "'messages' must be a non-empty array.");
    json_t *out = json_array();
    if (!out) return oai_fail(err, 500, NULL, NULL, "out of memory");
    rq->messages_ = out;
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *msg = json_array_get(m, i);
        if (!json_is_object(msg))
            return oai_fail(err, 400, "messages", "invalid_type",
                            "Invalid type for 'messages[%zu]': expected an object, but got %s "
                            "instead.", i, type_name(msg));
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role))
            return oai_fail(err, 400, "messages", "invalid_value",
                            "'messages[%zu].role' must be one of system, developer, user, "
                            "assistant, tool.", i);
        const char *r = json_string_value(role);
        if (strcmp(r, "developer") == 0) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") &&
            strcmp(r, "tool"))
            return oai_fail(err, 400, "messages", "invalid_value",
                            "Invalid role '%s' in 'messages[%zu]' (expected system, developer, "
                            "user, assistant or tool).", json_string_value(role), i);
        json_t *tc = opt(msg, "tool_calls"), *fc = opt(msg, "function_call");
        if ((tc && (!json_is_array(tc) || json_array_size(tc))) || fc)
            return unsupported(err, "messages", "(tool or function calls in messages)");
        json_t *content = opt(msg, "content");
        json_t *text;
        if (!content) {
            if (strcmp(r, "assistant") != 0)
                return oai_fail(err, 400, "messages", "missing_required_parameter",
                                "Missing required parameter: 'messages[%zu].content'.", i);
            text = json_string("");
        } else {
            text = message_text(content, i, err);
        }
        if (!text) return -1;
        json_t *norm = json_pack("{s:s, s:o}", "role", r, "content", text);
        if (!norm || json_array_append_new(out, norm))
            return oai_fail(err, 500, NULL, NULL, "out of memory");
    }
    rq->req.messages = out;
    return 0;
}

/* ---- the request ------------------------------------------------------------- */

static int parse_stop(const json_t *body, oai_request *rq, oai_error *err) {
    json_t *s = opt(body, "stop");
    if (!s) return 0;
    size_t n = 0;
    if (json_is_string(s)) {
        if (json_string_length(s)) rq->stop_[n++] = json_string_value(s);
    } else if (json_is_array(s)) {
        if (json_array_size(s) > OAI_MAX_STOP)
            return oai_fail(err, 400, "stop", "invalid_value",
                            "'stop' has %zu sequences; at most %d are allowed.",
                            json_array_size(s), OAI_MAX_STOP);
        for (size_t i = 0; i < json_array_size(s); i++) {
            json_t *e = json_array_get(s, i);
            if (!json_is_string(e))
                return oai_fail(err, 400, "stop", "invalid_type",
                                "Invalid type for 'stop[%zu]': expected a string, but got %s "
                                "instead.", i, type_name(e));
            if (json_string_length(e)) rq->stop_[n++] = json_string_value(e);
        }
    } else {
        return oai_fail(err, 400, "stop", "invalid_type",
                        "Invalid type for 'stop': expected a string or an array of strings, but "
                        "got %s instead.", type_name(s));
    }
    rq->req.stop = n ? rq->stop_ : NULL;
    rq->req.n_stop = n;
    return 0;
}

/* The fields that are errors unless they have their neutral value. */
static int parse_unsupported(oai_endpoint ep, const json_t *body, oai_error *err) {
    long long x;
    double d;
    int b;
    json_t *v;
    if (get_int(body, "n", 1, 1, &x, err) < 0) {
        if (!strcmp(err->code, "invalid_value"))
            return unsupported(err, "n", "must be 1");
        return -1;
    }
    if (get_num(body, "presence_penalty", 0, 0, &d, err) < 0 ||
        get_num(body, "frequency_penalty", 0, 0, &d, err) < 0) {
        if (!strcmp(err->code, "invalid_value")) {
            char key[64];
            snprintf(key, sizeof key, "%s", err->param);
            return unsupported(err, key, "must be 0 (penalties are not implemented)");
        }
        return -1;
    }
    if ((v = opt(body, "logit_bias"))) {
        if (!json_is_object(v))
            return oai_fail(err, 400, "logit_bias", "invalid_type",
                            "Invalid type for 'logit_bias': expected an object.");
        if (json_object_size(v)) return unsupported(err, "logit_bias", "must be empty");
    }
    if (ep == OAI_COMPLETIONS) {
        if (get_bool(body, "echo", &b, err) < 0) return -1;
        if (opt(body, "echo") && b) return unsupported(err, "echo", "must be false");
        if (get_int(body, "best_of", 1, 1, &x, err) < 0) {
            if (!strcmp(err->code, "invalid_value"))
                return unsupported(err, "best_of", "must be 1");
            return -1;
        }
        if ((v = opt(body, "suffix")) && !(json_is_string(v) && json_string_length(v) == 0))
            return unsupported(err, "suffix", "(insertion) is not supported");
        return 0;
    }
    const char *const list_keys[] = {"tools", "functions", NULL};
    for (const char *const *k = list_keys; *k; k++)
        if ((v = opt(body, *k)) && !(json_is_array(v) && json_array_size(v) == 0))
            return unsupported(err, *k, "(tool and function calling) is not supported");
    const char *const none_keys[] = {"tool_choice", "function_call", NULL};
    for (const char *const *k = none_keys; *k; k++)
        if ((v = opt(body, *k)) && !(json_is_string(v) && !strcmp(json_string_value(v), "none")))
            return unsupported(err, *k, "(tool and function calling) is not supported");
    if ((v = opt(body, "response_format"))) {
        json_t *t = json_object_get(v, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
            return unsupported(err, "response_format", "must be {\"type\": \"text\"}");
    }
    if ((v = opt(body, "modalities"))) {
        if (!json_is_array(v) || json_array_size(v) != 1 ||
            !json_is_string(json_array_get(v, 0)) ||
            strcmp(json_string_value(json_array_get(v, 0)), "text") != 0)
            return unsupported(err, "modalities", "must be [\"text\"]");
    }
    const char *const never[] = {"audio", "prediction", "web_search_options",
                                 "reasoning_effort", "verbosity", NULL};
    for (const char *const *k = never; *k; k++)
        if (opt(body, *k)) return unsupported(err, *k, "is not supported");
    if ((v = opt(body, "parallel_tool_calls")) && !json_is_boolean(v))
        return oai_fail(err, 400, "parallel_tool_calls", "invalid_type",
                        "Invalid type for 'parallel_tool_calls': expected a boolean.");
    return 0;
}

static int parse_logprobs(oai_endpoint ep, const json_t *body, oai_request *rq,
                          oai_error *err) {
    long long x;
    if (ep == OAI_COMPLETIONS) {
        /* legacy: an integer 0..5 at OpenAI; we accept up to 20 */
        int r = get_int(body, "logprobs", 0, OAI_MAX_TOP_LOGPROBS, &x, err);
        if (r < 0) return -1;
        if (r == 1) {
            rq->logprobs = 1;
            rq->top_logprobs = (int)x;
        }
    } else {
        int on = 0;
        if (get_bool(body, "logprobs", &on, err) < 0) return -1;
        int r = get_int(body, "top_logprobs", 0, OAI_MAX_TOP_LOGPROBS, &x, err);
        if (r < 0) return -1;
        if (r == 1 && !on)
            return oai_fail(err, 400, "top_logprobs", "invalid_value",
                            "'top_logprobs' requires 'logprobs' to be true.");
        rq->logprobs = on;
        rq->top_logprobs = r == 1 ? (int)x : 0;
    }
    rq->req.logprobs = rq->top_logprobs;
    return 0;
}

static int parse_body(oai_endpoint ep, const json_t *body, const oai_config *cfg,
                      oai_request *rq, oai_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        (void)v;
        if (!in_list(common_keys, key) &&
            !in_list(ep == OAI_CHAT ? chat_keys : completion_keys, key))
            return oai_fail(err, 400, key, "unknown_parameter",
                            "Unrecognized request argument supplied: %s", key);
    }
    if (parse_unsupported(ep, body, err)) return -1;

    /* model */
    const char *model_id = cfg->model_id ? cfg->model_id : "consort";
    const char *solo = NULL;
    if ((v = opt(body, "model"))) {
        if (!json_is_string(v))
            return oai_fail(err, 400, "model", "invalid_type",
                            "Invalid type for 'model': expected a string, but got %s instead.",
                            type_name(v));
        const char *m = json_string_value(v);
        if (cfg->member_names && strcmp(m, model_id) != 0 && member_known(cfg, m)) solo = m;
    }
    snprintf(rq->model, sizeof rq->model, "%s", solo ? solo : model_id);

    if (ep == OAI_COMPLETIONS ? parse_prompt(body, rq, err) : parse_messages(body, rq, err))
        return -1;

    ensemble_request *q = &rq->req;
    long long x;
    int r;
    int have_max = 0;
    long long hi = cfg->max_tokens_limit > 0 ? cfg->max_tokens_limit : 1000000000LL;
    if (ep == OAI_CHAT) {
        if ((r = get_int(body, "max_completion_tokens", 0, hi, &x, err)) < 0) return -1;
        if (r == 1) { q->max_tokens = (int)x; have_max = 1; }
    }
    if (!have_max) {
        if ((r = get_int(body, "max_tokens", 0, hi, &x, err)) < 0) return -1;
        if (r == 1) { q->max_tokens = (int)x; have_max = 1; }
    }
    if (!have_max) {
        if (ep == OAI_COMPLETIONS) q->max_tokens = 16; /* OpenAI's legacy default */
        else q->max_tokens = cfg->default_max_tokens > 0 ? cfg->default_max_tokens : 256;
        if (q->max_tokens > hi) q->max_tokens = (int)hi;
    }
    if (get_num(body, "temperature", 0, 2, &q->temperature, err) < 0) return -1;
    if (get_num(body, "top_p", 0, 1, &q->top_p, err) < 0) return -1;
    if (opt(body, "top_p") && q->top_p == 0) q->top_p = 1e-9; /* "only the top" */
    if (get_num(body, "min_p", 0, 1, &q->min_p, err) < 0) return -1;
    if ((r = get_int(body, "top_k", 0, 100000, &x, err)) < 0) return -1;
    if (r == 1) q->top_k = (int)x;
    if ((v = opt(body, "seed"))) {
        if (!json_is_integer(v))
            return oai_fail(err, 400, "seed", "invalid_type",
                            "Invalid type for 'seed': expected an integer, but got %s instead.",
                            type_name(v));
        q->has_seed = 1;
        q->seed = (uint64_t)json_integer_value(v);
    }
    if (parse_stop(body, rq, err)) return -1;
    if (get_bool(body, "stream", &rq->stream, err) < 0) return -1;
    if ((v = opt(body, "stream_options"))) {
        if (!json_is_object(v))
            return oai_fail(err, 400, "stream_options", "invalid_type",
                            "Invalid type for 'stream_options': expected an object.");
        if (!rq->stream)
            return oai_fail(err, 400, "stream_options", "invalid_value",
                            "The 'stream_options' parameter is only allowed when 'stream' is "
                            "enabled.");
        json_t *ov;
        json_object_foreach(v, key, ov) {
            (void)ov;
            if (strcmp(key, "include_usage") && strcmp(key, "include_obfuscation"))
                return oai_fail(err, 400, "stream_options", "unknown_parameter",
                                "Unrecognized field 'stream_options.%s'.", key);
        }
        if (get_bool(opt(body, "stream_options"), "include_usage", &rq->include_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return -1;
        }
    }
    if (parse_logprobs(ep, body, rq, err)) return -1;
    if ((v = opt(body, "ensemble")) && parse_ensemble(v, cfg, rq, err)) return -1;
    if (solo && !q->strategy) {
        snprintf(rq->strategy, sizeof rq->strategy, "solo:%s", solo);
        q->strategy = rq->strategy;
    }
    return 0;
}

int oai_parse_request(oai_endpoint ep, const char *body, size_t len,
                      const oai_config *cfg, oai_request *rq, oai_error *err) {
    memset(rq, 0, sizeof *rq);
    memset(err, 0, sizeof *err);
    rq->endpoint = ep;
    rq->req.temperature = 1.0; /* OpenAI's default */
    rq->req.top_p = 1.0;
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
    if (!root) {
        oai_fail(err, 400, NULL, "invalid_json",
                 "We could not parse the JSON body of your request: %s (line %d, column %d). "
                 "The body must be a JSON object.", jerr.text, jerr.line, jerr.column);
        return -1;
    }
    rq->body_ = root;
    if (!json_is_object(root)) {
        oai_fail(err, 400, NULL, "invalid_json",
                 "The request body must be a JSON object, not %s.", type_name(root));
        oai_request_free(rq);
        return -1;
    }
    if (parse_body(ep, root, cfg, rq, err)) {
        oai_request_free(rq);
        return -1;
    }
    return 0;
}

void oai_request_free(oai_request *rq) {
    if (!rq) return;
    json_decref(rq->messages_);
    json_decref(rq->body_);
    memset(rq, 0, sizeof *rq);
}

/* ---- logprobs ---------------------------------------------------------------- */

size_t oai_utf8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

/* A JSON string of arbitrary bytes (invalid UTF-8 → U+FFFD). */
static json_t *text_json(const char *s, size_t n) {
    if (utf8_valid(s, n)) return json_stringn_nocheck(s, n);
    size_t m;
    char *t = utf8_sanitize(s, n, &m);
    if (!t) return NULL;
    json_t *j = json_stringn_nocheck(t, m);
    free(t);
    return j;
}

static json_t *bytes_json(const char *s, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((unsigned char)s[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

void oai_logprobs_init(oai_logprobs *lp, oai_endpoint ep, int n_top, size_t offset) {
    lp->endpoint = ep;
    lp->n_top = n_top < 0 ? 0 : n_top > OAI_MAX_TOP_LOGPROBS ? OAI_MAX_TOP_LOGPROBS : n_top;
    lp->offset = offset;
    lp->obj = NULL;
}

static json_t *logprobs_empty(oai_endpoint ep) {
    if (ep == OAI_CHAT) return json_pack("{s:[], s:n}", "content", "refusal");
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

int oai_logprobs_add(oai_logprobs *lp, const ensemble_chunk *c) {
    if (!lp->obj && !(lp->obj = logprobs_empty(lp->endpoint))) return -1;
    int n_top = c->n_top < lp->n_top ? c->n_top : lp->n_top;
    if (n_top < 0) n_top = 0;
    if (lp->endpoint == OAI_CHAT) {
        json_t *tops = json_array();
        for (int i = 0; tops && i < n_top; i++) {
            json_t *t = json_pack("{s:o, s:f, s:o}", "token",
                                  text_json(c->top[i].text, c->top[i].len), "logprob",
                                  c->top[i].logprob, "bytes",
                                  bytes_json(c->top[i].text, c->top[i].len));
            if (!t || json_array_append_new(tops, t)) { json_decref(tops); return -1; }
        }
        if (!tops) return -1;
        json_t *e = json_pack("{s:o, s:f, s:o, s:o}", "token", text_json(c->text, c->len),
                              "logprob", c->logprob, "bytes", bytes_json(c->text, c->len),
                              "top_logprobs", tops);
        if (!e) return -1;
        return json_array_append_new(json_object_get(lp->obj, "content"), e) ? -1 : 0;
    }
    json_t *tops = json_object();
    for (int i = 0; tops && i < n_top; i++) {
        json_t *k = text_json(c->top[i].text, c->top[i].len);
        if (!k) { json_decref(tops); return -1; }
        /* two byte strings may sanitise to one key: keep the larger */
        json_t *old = json_object_get(tops, json_string_value(k));
        if (!old || json_real_value(old) < c->top[i].logprob)
            json_object_set_new(tops, json_string_value(k), json_real(c->top[i].logprob));
        json_decref(k);
    }
    if (!tops) return -1;
    int bad = json_array_append_new(json_object_get(lp->obj, "tokens"), text_json(c->text, c->len)) |
              json_array_append_new(json_object_get(lp->obj, "token_logprobs"), json_real(c->logprob)) |
              json_array_append_new(json_object_get(lp->obj, "top_logprobs"), tops) |
              json_array_append_new(json_object_get(lp->obj, "text_offset"),
                                    json_integer((json_int_t)lp->offset));
    lp->offset += oai_utf8_chars(c->text, c->len);
    return bad ? -1 : 0;
}

json_t *oai_logprobs_take(oai_logprobs *lp) {
    json_t *o = lp->obj ? lp->obj : logprobs_empty(lp->endpoint);
    lp->obj = NULL;
    return o;
}

void oai_logprobs_clear(oai_logprobs *lp) {
    json_decref(lp->obj);
    lp->obj = NULL;
}

/* ---- responses ---------------------------------------------------------------- */

json_t *oai_usage_json(int prompt_tokens, int completion_tokens) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", prompt_tokens, "completion_tokens",
                     completion_tokens, "total_tokens", prompt_tokens + completion_tokens);
}

json_t *oai_ensemble_json(const ensemble_result *r, const char *strategy) {
    json_t *members = json_array();
    int failures = 0;
    for (size_t i = 0; members && i < r->n_members; i++) {
        const ensemble_member_stats *m = &r->members[i];
        failures += m->failed != 0;
        json_t *o = json_pack(
            "{s:s, s:f, s:i, s:f, s:I, s:f, s:i, s:b, s:o}", "name", m->name, "weight",
            isfinite(m->weight) ? m->weight : 0.0, "steps_won", m->steps_won, "agreement",
            r->steps > 0 ? (double)m->steps_won / r->steps : 0.0, "bytes_won",
            (json_int_t)m->bytes_proposed_won, "mean_step_ms",
            isfinite(m->mean_step_ms) ? m->mean_step_ms : 0.0, "prompt_tokens", m->prompt_tokens,
            "failed", m->failed != 0, "failure",
            m->failed && m->failure[0] ? json_string(m->failure) : json_null());
        if (o && m->approximate) json_object_set_new(o, "approximate", json_true());
        if (!o || json_array_append_new(members, o)) {
            json_decref(members);
            return NULL;
        }
    }
    if (!members) return NULL;
    json_t *o = json_pack("{s:o, s:f, s:i, s:o, s:i}", "strategy",
                          strategy && strategy[0] ? json_string(strategy) : json_null(), "seconds",
                          isfinite(r->seconds) ? r->seconds : 0.0, "steps", r->steps, "members",
                          members, "failures", failures);
    /* only when it happened: answers without it keep their old shape */
    if (o && r->deadline_exceeded) json_object_set_new(o, "deadline_exceeded", json_true());
    if (o && r->speculative)
        json_object_set_new(o, "speculative",
                            json_pack("{s:i, s:i, s:f}", "drafted", r->spec_drafted, "accepted", r->spec_accepted,
                                      "acceptance", r->spec_drafted ? (double)r->spec_accepted / r->spec_drafted : 0.0));
    return o;
}

static const char *object_name(oai_endpoint ep, int chunk) {
    if (ep == OAI_CHAT) return chunk ? "chat.completion.chunk" : "chat.completion";
    return "text_completion";
}

json_t *oai_response_json(const oai_request *rq, const char *id, long long created,
                          const ensemble_result *r, json_t *logprobs) {
    json_t *choice;
    json_t *lp = logprobs ? logprobs : json_null();
    const char *finish = r->finish_reason ? r->finish_reason : "stop";
    if (rq->endpoint == OAI_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:s}", "index", 0, "message", "role",
                           "assistant", "content", text_json(r->text ? r->text : "", r->len),
                           "refusal", "logprobs", lp, "finish_reason", finish);
    else
        choice = json_pack("{s:o, s:i, s:o, s:s}", "text",
                           text_json(r->text ? r->text : "", r->len), "index", 0, "logprobs", lp,
                           "finish_reason", finish);
    if (!choice) return NULL;
    return json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o, s:o}", "id", id, "object",
                     object_name(rq->endpoint, 0), "created", (json_int_t)created, "model",
                     rq->model, "choices", choice, "usage",
                     oai_usage_json(r->prompt_tokens, r->steps), "ensemble",
                     oai_ensemble_json(r, rq->strategy));
}

json_t *oai_chunk_json(const oai_request *rq, const char *id, long long created,
                       const char *text, size_t len, int first, const char *finish_reason,
                       json_t *logprobs) {
    json_t *lp = logprobs ? logprobs : json_null();
    json_t *fr = finish_reason ? json_string(finish_reason) : json_null();
    json_t *choice;
    if (rq->endpoint == OAI_CHAT) {
        json_t *delta = json_object();
        if (delta && first) json_object_set_new(delta, "role", json_string("assistant"));
        if (delta && (len || first || !finish_reason))
            json_object_set_new(delta, "content", text_json(text ? text : "", len));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs", lp,
                           "finish_reason", fr);
    } else {
        choice = json_pack("{s:o, s:i, s:o, s:o}", "text", text_json(text ? text : "", len),
                           "index", 0, "logprobs", lp, "finish_reason", fr);
    }
    if (!choice) return NULL;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", id, "object",
                          object_name(rq->endpoint, 1), "created", (json_int_t)created, "model",
                          rq->model, "choices", choice);
    if (o && rq->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

json_t *oai_usage_chunk_json(const oai_request *rq, const char *id, long long created,
                             const ensemble_result *r) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", id, "object",
                     object_name(rq->endpoint, 1), "created", (json_int_t)created, "model",
                     rq->model, "choices", "usage", oai_usage_json(r->prompt_tokens, r->steps));
}

char *oai_sse_event(const json_t *obj, size_t *len) {
    char *j = json_dumps(obj, JSON_COMPACT);
    if (!j) return NULL;
    size_t n = strlen(j);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, j, n);
        memcpy(s + 6 + n, "\n\n", 3);
        if (len) *len = n + 8;
    }
    free(j);
    return s;
}
