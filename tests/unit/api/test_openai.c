/* coordinator/openai: request parsing/validation and response shapes. */
#include "coordinator/api/openai.h"
#include "common/utf8.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"a", "b"};
static const oai_config cfg = {"consort", names, 2, 100, 0};

static int parse(oai_endpoint ep, const char *body, oai_request *rq, oai_error *err) {
    return oai_parse_request(ep, body, strlen(body), &cfg, rq, err);
}

/* Parse a body that must be rejected with 400 and the given param ("" = any). */
static void rejects(oai_endpoint ep, const char *body, const char *param, const char *what) {
    oai_request rq;
    oai_error err;
    int r = parse(ep, body, &rq, &err);
    char buf[256];
    snprintf(buf, sizeof buf, "400: %s", what);
    ok(r == -1 && err.status == 400 && err.message[0] &&
           strcmp(err.type, "invalid_request_error") == 0 &&
           (!param[0] || strcmp(err.param, param) == 0),
       buf);
    if (r == 0) { diag("accepted: %s", body); oai_request_free(&rq); }
    else if (param[0] && strcmp(err.param, param)) diag("param %s, message %s", err.param, err.message);
}

static void accepts(oai_endpoint ep, const char *body, const char *what) {
    oai_request rq;
    oai_error err;
    int r = parse(ep, body, &rq, &err);
    char buf[256];
    snprintf(buf, sizeof buf, "accepted: %s", what);
    ok(r == 0, buf);
    if (r) diag("%s", err.message);
    else oai_request_free(&rq);
}

static void test_completions(void) {
    oai_request rq;
    oai_error err;
    int r = parse(OAI_COMPLETIONS,
                  "{\"model\":\"consort\",\"prompt\":\"Once upon\",\"max_tokens\":7,"
                  "\"temperature\":0,\"top_p\":0.9,\"seed\":42,\"stop\":[\"\\n\",\"The end\"],"
                  "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":3,"
                  "\"n\":1,\"echo\":false,\"best_of\":1,\"user\":\"u\"}",
                  &rq, &err);
    ok(r == 0, "full completions request parses");
    if (r) { diag("%s", err.message); return; }
    is_str(rq.req.prompt, "Once upon", "prompt");
    ok(rq.req.messages == NULL, "no messages");
    is_int(rq.req.max_tokens, 7, "max_tokens");
    is_near(rq.req.temperature, 0, 0, "temperature");
    is_near(rq.req.top_p, 0.9, 1e-12, "top_p");
    ok(rq.req.has_seed && rq.req.seed == 42, "seed");
    is_int(rq.req.n_stop, 2, "two stops");
    is_str(rq.req.stop[1], "The end", "second stop");
    ok(rq.stream && rq.include_usage, "stream + include_usage");
    ok(rq.logprobs && rq.top_logprobs == 3 && rq.req.logprobs == 3, "logprobs 3");
    is_str(rq.model, "consort", "model id");
    ok(rq.req.strategy == NULL, "default strategy");
    is_int(rq.prompt_chars, 9, "prompt length in characters");
    oai_request_free(&rq);

    r = parse(OAI_COMPLETIONS, "{\"prompt\":[\"x\"]}", &rq, &err);
    ok(r == 0 && strcmp(rq.req.prompt, "x") == 0, "prompt as an array of one string");
    is_int(rq.req.max_tokens, 16, "completions default max_tokens 16");
    is_near(rq.req.temperature, 1, 0, "default temperature 1");
    ok(!rq.logprobs, "no logprobs by default");
    oai_request_free(&rq);

    r = parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":\"\\n\",\"logprobs\":0}", &rq, &err);
    ok(r == 0 && rq.req.n_stop == 1 && strcmp(rq.req.stop[0], "\n") == 0, "stop as a string");
    ok(rq.logprobs == 1 && rq.top_logprobs == 0, "logprobs 0 still asks for logprobs");
    oai_request_free(&rq);

    r = parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"model\":\"b\"}", &rq, &err);
    ok(r == 0 && strcmp(rq.req.strategy, "solo:b") == 0 && strcmp(rq.model, "b") == 0,
       "model = member name runs that member alone");
    oai_request_free(&rq);

    r = parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"model\":\"gpt-4o\"}", &rq, &err);
    ok(r == 0 && rq.req.strategy == NULL && strcmp(rq.model, "consort") == 0,
       "another model id is served by the ensemble");
    oai_request_free(&rq);

    r = parse(OAI_COMPLETIONS,
              "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"product\",\"weights\":[1,0.5],"
              "\"threshold\":0.4}}", &rq, &err);
    ok(r == 0, "ensemble extension parses");
    if (r == 0) {
        is_str(rq.req.strategy, "product", "strategy");
        ok(rq.req.n_weights == 2 && rq.req.weights[1] == 0.5, "weights");
        is_near(rq.req.threshold, 0.4, 1e-12, "threshold");
        oai_request_free(&rq);
    }
    r = parse(OAI_COMPLETIONS,
              "{\"prompt\":\"x\",\"ensemble\":{\"members\":[\"b\"],\"weights\":[2],"
              "\"strategy\":\"solo:b\"}}", &rq, &err);
    ok(r == 0 && rq.req.n_members == 1 && strcmp(rq.req.members[0], "b") == 0 &&
           rq.req.n_weights == 1, "members subset with its weights");
    if (r == 0) oai_request_free(&rq);
    r = parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":\"auto\"}}", &rq, &err);
    ok(r == 0 && rq.req.weights_auto == 1 && rq.req.weights == NULL, "weights auto");
    if (r == 0) oai_request_free(&rq);

    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens 0");
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":5.0}", "integral real max_tokens");
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"suffix\":null,\"echo\":null,\"n\":null,"
                             "\"logit_bias\":{},\"presence_penalty\":0,\"frequency_penalty\":0.0}",
            "neutral values of unsupported fields");
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[]}", "empty stop list");
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":20}", "logprobs 20");
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"top_k\":40,\"min_p\":0.05}", "top_k/min_p extensions");
}

static void test_completions_rejects(void) {
    rejects(OAI_COMPLETIONS, "{\"prompt\": \"x\"", "", "malformed JSON");
    rejects(OAI_COMPLETIONS, "", "", "empty body");
    rejects(OAI_COMPLETIONS, "[1,2]", "", "body not an object");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\"} trailing", "", "trailing garbage");
    rejects(OAI_COMPLETIONS, "{}", "prompt", "missing prompt");
    rejects(OAI_COMPLETIONS, "{\"prompt\":5}", "prompt", "prompt of wrong type");
    rejects(OAI_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "batch of prompts");
    rejects(OAI_COMPLETIONS, "{\"prompt\":[1,2,3]}", "prompt", "token-id prompt");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"n\":2}", "n", "n=2");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"n\":\"1\"}", "n", "n of wrong type");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"echo\":true}", "echo", "echo");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"best_of\":3}", "best_of", "best_of 3");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"suffix\":\"end\"}", "suffix", "suffix");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"logit_bias\":{\"50256\":-100}}", "logit_bias",
            "non-empty logit_bias");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"presence_penalty\":0.5}", "presence_penalty",
            "presence_penalty");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens",
            "negative max_tokens");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":\"10\"}", "max_tokens",
            "max_tokens as a string");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":1.5}", "max_tokens",
            "fractional max_tokens");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature",
            "temperature as a string");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"temperature\":3}", "temperature",
            "temperature > 2");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"top_p\":1.5}", "top_p", "top_p > 1");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"seed\":1.5}", "seed", "fractional seed");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
            "stop", "five stops");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[1]}", "stop", "stop of wrong type");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stream\":\"yes\"}", "stream",
            "stream as a string");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}",
            "stream_options", "stream_options without stream");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs", "logprobs 21");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":true}", "logprobs",
            "logprobs bool on completions");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"frobnicate\":1}", "frobnicate",
            "unknown field");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"messages\":[]}", "messages",
            "messages on completions");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"model\":7}", "model", "model of wrong type");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"vote\"}}",
            "ensemble.strategy", "unknown strategy");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"route_entropy\"}}",
            "ensemble.strategy", "an evaluation-only strategy of ppl");
    {
        oai_request rq;
        oai_error err;
        ok(parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"oracle\"}}", &rq, &err) ==
                   -1 && strcmp(err.code, "unknown_strategy") == 0 && strstr(err.message, "evaluation-only") &&
               strstr(err.message, "min_ppl_cross, selective"),
           "evaluation-only strategy: the message says so and lists the generation strategies");
        ok(parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"\"}}", &rq, &err) == -1 &&
               strcmp(err.code, "unknown_strategy") == 0,
           "an empty strategy name is refused");
    }
    accepts(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"min_ppl_cross\"}}",
            "a generation strategy from the registry");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"strategy\":\"solo:zz\"}}",
            "ensemble.strategy", "solo of an unknown member");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"members\":[\"a\",\"zz\"]}}",
            "ensemble.members", "unknown member");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"members\":[\"a\",\"a\"]}}",
            "ensemble.members", "member twice");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":[1]}}",
            "ensemble.weights", "weights count");
    {
        /* one member more than common/limits.h allows: a clear 400 */
        char body[512] = "{\"prompt\":\"x\",\"ensemble\":{\"members\":[";
        for (int i = 0; i <= CONSORT_MAX_MEMBERS; i++) strcat(body, i ? ",\"a\"" : "\"a\"");
        strcat(body, "]}}");
        oai_request rq;
        oai_error err;
        char want[64];
        snprintf(want, sizeof want, "more than %d names", CONSORT_MAX_MEMBERS);
        ok(parse(OAI_COMPLETIONS, body, &rq, &err) == -1 && err.status == 400 &&
               !strcmp(err.param, "ensemble.members") && strstr(err.message, want),
           "more members than CONSORT_MAX_MEMBERS: 400 naming the limit");
        strcpy(body, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":[");
        for (int i = 0; i <= CONSORT_MAX_MEMBERS; i++) strcat(body, i ? ",1" : "1");
        strcat(body, "]}}");
        rejects(OAI_COMPLETIONS, body, "ensemble.weights", "more weights than CONSORT_MAX_MEMBERS");
    }
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":[1,-1]}}",
            "ensemble.weights", "negative weight");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":[0,0]}}",
            "ensemble.weights", "all-zero weights");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"weights\":\"even\"}}",
            "ensemble.weights", "weights string other than auto");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"threshold\":2}}",
            "ensemble.threshold", "threshold > 1");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":{\"stratgy\":\"mixture\"}}",
            "ensemble", "misspelt ensemble field");
    rejects(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"ensemble\":\"mixture\"}", "ensemble",
            "ensemble not an object");
    oai_config lim = cfg;
    lim.max_tokens_limit = 50;
    oai_request rq;
    oai_error err;
    const char *b = "{\"prompt\":\"x\",\"max_tokens\":51}";
    ok(oai_parse_request(OAI_COMPLETIONS, b, strlen(b), &lim, &rq, &err) == -1 &&
           err.status == 400, "max_tokens over the server's limit");
}

static void test_chat(void) {
    oai_request rq;
    oai_error err;
    int r = parse(OAI_CHAT,
                  "{\"model\":\"consort\",\"messages\":["
                  "{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                  "{\"type\":\"text\",\"text\":\"there\"}],\"name\":\"joe\"},"
                  "{\"role\":\"assistant\",\"content\":null},"
                  "{\"role\":\"user\",\"content\":\"Tell a story\"}],"
                  "\"max_completion_tokens\":9,\"max_tokens\":3,\"logprobs\":true,"
                  "\"top_logprobs\":2,\"tool_choice\":\"none\",\"tools\":[],"
                  "\"response_format\":{\"type\":\"text\"},\"parallel_tool_calls\":false}",
                  &rq, &err);
    ok(r == 0, "full chat request parses");
    if (r) { diag("%s", err.message); return; }
    ok(rq.req.prompt == NULL && json_array_size(rq.req.messages) == 4, "four messages");
    json_t *m0 = json_array_get(rq.req.messages, 0), *m1 = json_array_get(rq.req.messages, 1);
    is_str(json_string_value(json_object_get(m0, "role")), "system", "developer → system");
    is_str(json_string_value(json_object_get(m1, "content")), "Hi there", "text parts joined");
    ok(json_object_get(m1, "name") == NULL, "normalised message has role and content only");
    is_str(json_string_value(json_object_get(json_array_get(rq.req.messages, 2), "content")), "",
           "assistant with null content");
    is_int(rq.req.max_tokens, 9, "max_completion_tokens wins over max_tokens");
    ok(rq.logprobs == 1 && rq.top_logprobs == 2 && rq.req.logprobs == 2, "chat logprobs");
    oai_request_free(&rq);

    r = parse(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &rq, &err);
    ok(r == 0 && rq.req.max_tokens == 100, "chat default max_tokens from the config");
    oai_request_free(&rq);

    rejects(OAI_CHAT, "{\"messages\":[]}", "messages", "empty messages");
    rejects(OAI_CHAT, "{\"messages\":\"hi\"}", "messages", "messages as a string");
    rejects(OAI_CHAT, "{\"prompt\":\"hi\"}", "prompt", "prompt on chat");
    rejects(OAI_CHAT, "{}", "messages", "missing messages");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages",
            "unknown role");
    rejects(OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages", "missing role");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages", "missing content");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages",
            "content of wrong type");
    rejects(OAI_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"http://x\"}}]}]}", "messages", "image part");
    rejects(OAI_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
            "\"function\",\"function\":{\"name\":\"f\"}}]}", "tools", "tools");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":"
                      "\"auto\"}", "tool_choice", "tool_choice auto");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":"
                      "[{\"name\":\"f\"}]}", "functions", "functions");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                      "\"response_format\":{\"type\":\"json_object\"}}", "response_format",
            "json mode");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}",
            "logprobs", "chat logprobs as an integer");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}",
            "top_logprobs", "top_logprobs without logprobs");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
                      "\"top_logprobs\":21}", "top_logprobs", "top_logprobs 21");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n",
            "chat n=2");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":false}",
            "echo", "echo is not a chat field");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                      "\"max_completion_tokens\":-5}", "max_completion_tokens",
            "negative max_completion_tokens");
    rejects(OAI_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
                      "[{\"id\":\"1\"}]}]}", "messages", "tool calls in history");
}

static ensemble_member_stats stats[2];

static ensemble_result fake_result(void) {
    ensemble_result r;
    memset(&r, 0, sizeof r);
    r.text = strdup("Hi \xc3\xa9");
    r.len = strlen(r.text);
    r.finish_reason = "length";
    r.steps = 4;
    r.prompt_tokens = 6;
    r.seconds = 0.25;
    memset(stats, 0, sizeof stats);
    snprintf(stats[0].name, sizeof stats[0].name, "a");
    stats[0].steps_won = 3;
    stats[0].weight = 0.5;
    stats[0].bytes_proposed_won = 4;
    snprintf(stats[1].name, sizeof stats[1].name, "b");
    stats[1].failed = 1;
    snprintf(stats[1].failure, sizeof stats[1].failure, "connection refused");
    stats[1].weight = 0.5;
    r.members = stats;
    r.n_members = 2;
    return r;
}

static const char *str_at(json_t *o, const char *path) {
    return json_string_value(json_object_get(o, path));
}

static void test_responses(void) {
    oai_request rq;
    oai_error err;
    ensemble_result r = fake_result();

    parse(OAI_COMPLETIONS, "{\"prompt\":\"ab\xc3\xa9\",\"logprobs\":1}", &rq, &err);
    oai_logprobs lp;
    oai_logprobs_init(&lp, OAI_COMPLETIONS, rq.top_logprobs, rq.prompt_chars);
    ensemble_chunk c1 = {.text = "Hi", .len = 2, .logprob = -0.5, .n_top = 2};
    c1.top[0].text = "Hi"; c1.top[0].len = 2; c1.top[0].logprob = -0.5;
    c1.top[1].text = "\xc3"; c1.top[1].len = 1; c1.top[1].logprob = -2;
    ensemble_chunk c2 = {.text = " \xc3\xa9", .len = 3, .logprob = -1.25, .n_top = 0};
    ok(oai_logprobs_add(&lp, &c1) == 0 && oai_logprobs_add(&lp, &c2) == 0, "logprobs add");
    json_t *resp = oai_response_json(&rq, "cmpl-1", 1700000000, &r, oai_logprobs_take(&lp));
    ok(resp != NULL, "completion response built");
    is_str(str_at(resp, "object"), "text_completion", "object text_completion");
    is_str(str_at(resp, "id"), "cmpl-1", "id");
    is_int(json_integer_value(json_object_get(resp, "created")), 1700000000, "created");
    is_str(str_at(resp, "model"), "consort", "model");
    json_t *ch = json_array_get(json_object_get(resp, "choices"), 0);
    is_str(str_at(ch, "text"), "Hi \xc3\xa9", "text");
    is_int(json_integer_value(json_object_get(ch, "index")), 0, "index");
    is_str(str_at(ch, "finish_reason"), "length", "finish_reason");
    json_t *l = json_object_get(ch, "logprobs");
    is_int(json_array_size(json_object_get(l, "tokens")), 2, "two logprob tokens");
    is_str(json_string_value(json_array_get(json_object_get(l, "tokens"), 1)), " \xc3\xa9",
           "token text");
    is_near(json_real_value(json_array_get(json_object_get(l, "token_logprobs"), 1)), -1.25, 0,
            "token logprob");
    is_int(json_integer_value(json_array_get(json_object_get(l, "text_offset"), 0)), 3,
           "text_offset starts after the prompt (characters)");
    is_int(json_integer_value(json_array_get(json_object_get(l, "text_offset"), 1)), 5,
           "text_offset advances");
    json_t *top0 = json_array_get(json_object_get(l, "top_logprobs"), 0);
    ok(json_is_object(top0) && json_object_size(top0) == 1 &&
           json_real_value(json_object_get(top0, "Hi")) == -0.5,
       "top_logprobs limited to the requested 1");
    json_t *u = json_object_get(resp, "usage");
    ok(json_integer_value(json_object_get(u, "prompt_tokens")) == 6 &&
           json_integer_value(json_object_get(u, "completion_tokens")) == 4 &&
           json_integer_value(json_object_get(u, "total_tokens")) == 10, "usage");
    json_t *ens = json_object_get(resp, "ensemble");
    json_t *mb = json_array_get(json_object_get(ens, "members"), 1);
    ok(json_is_true(json_object_get(mb, "failed")) &&
           strcmp(str_at(mb, "failure"), "connection refused") == 0, "member failure reported");
    is_int(json_integer_value(json_object_get(ens, "failures")), 1, "failure count");
    is_near(json_real_value(json_object_get(json_array_get(json_object_get(ens, "members"), 0),
                                            "agreement")), 0.75, 1e-12, "agreement = won/steps");
    json_decref(resp);

    /* streaming chunk */
    json_t *chunk = oai_chunk_json(&rq, "cmpl-1", 5, "Hi", 2, 1, NULL, NULL);
    ch = json_array_get(json_object_get(chunk, "choices"), 0);
    ok(chunk && strcmp(str_at(chunk, "object"), "text_completion") == 0 &&
           strcmp(str_at(ch, "text"), "Hi") == 0 && json_is_null(json_object_get(ch, "finish_reason")) &&
           json_is_null(json_object_get(ch, "logprobs")) && !json_object_get(chunk, "usage"),
       "completion stream chunk");
    size_t n;
    char *sse = oai_sse_event(chunk, &n);
    ok(sse && strncmp(sse, "data: {", 7) == 0 && n == strlen(sse) &&
           strcmp(sse + n - 2, "\n\n") == 0 && strchr(sse, '\n') == sse + n - 2,
       "SSE event framing: one line then a blank line");
    free(sse);
    json_decref(chunk);
    oai_request_free(&rq);

    /* chat */
    parse(OAI_CHAT, "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"logprobs\":true,\"top_logprobs\":2,\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":true}}", &rq, &err);
    oai_logprobs_init(&lp, OAI_CHAT, rq.top_logprobs, 0);
    oai_logprobs_add(&lp, &c1);
    resp = oai_response_json(&rq, "chatcmpl-1", 7, &r, oai_logprobs_take(&lp));
    is_str(str_at(resp, "object"), "chat.completion", "object chat.completion");
    is_str(str_at(resp, "model"), "a", "model echoes the member");
    ch = json_array_get(json_object_get(resp, "choices"), 0);
    json_t *msg = json_object_get(ch, "message");
    ok(strcmp(str_at(msg, "role"), "assistant") == 0 &&
           strcmp(str_at(msg, "content"), "Hi \xc3\xa9") == 0 &&
           json_is_null(json_object_get(msg, "refusal")), "chat message");
    l = json_object_get(ch, "logprobs");
    json_t *e0 = json_array_get(json_object_get(l, "content"), 0);
    ok(strcmp(str_at(e0, "token"), "Hi") == 0 && json_real_value(json_object_get(e0, "logprob")) == -0.5 &&
           json_array_size(json_object_get(e0, "bytes")) == 2 &&
           json_integer_value(json_array_get(json_object_get(e0, "bytes"), 0)) == 'H',
       "chat logprob entry");
    json_t *t1 = json_array_get(json_object_get(e0, "top_logprobs"), 1);
    ok(strcmp(str_at(t1, "token"), "\xef\xbf\xbd") == 0 &&
           json_integer_value(json_array_get(json_object_get(t1, "bytes"), 0)) == 0xc3,
       "partial UTF-8 alternative: U+FFFD token, exact bytes");
    ok(json_is_null(json_object_get(l, "refusal")), "refusal null");
    json_decref(resp);

    chunk = oai_chunk_json(&rq, "chatcmpl-1", 7, "", 0, 1, NULL, NULL);
    json_t *d = json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta");
    ok(strcmp(str_at(chunk, "object"), "chat.completion.chunk") == 0 &&
           strcmp(str_at(d, "role"), "assistant") == 0 && strcmp(str_at(d, "content"), "") == 0 &&
           json_is_null(json_object_get(chunk, "usage")) && json_object_get(chunk, "usage"),
       "first chat chunk: role, empty content, usage null");
    json_decref(chunk);
    chunk = oai_chunk_json(&rq, "chatcmpl-1", 7, "yo", 2, 0, NULL, NULL);
    d = json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta");
    ok(!json_object_get(d, "role") && strcmp(str_at(d, "content"), "yo") == 0, "content chunk");
    json_decref(chunk);
    chunk = oai_chunk_json(&rq, "chatcmpl-1", 7, NULL, 0, 0, "stop", NULL);
    ch = json_array_get(json_object_get(chunk, "choices"), 0);
    ok(json_object_size(json_object_get(ch, "delta")) == 0 &&
           strcmp(str_at(ch, "finish_reason"), "stop") == 0, "final chunk: empty delta, finish_reason");
    json_decref(chunk);
    chunk = oai_usage_chunk_json(&rq, "chatcmpl-1", 7, &r);
    ok(json_array_size(json_object_get(chunk, "choices")) == 0 &&
           json_integer_value(json_object_get(json_object_get(chunk, "usage"), "total_tokens")) == 10,
       "usage chunk: empty choices, usage");
    json_decref(chunk);
    oai_request_free(&rq);

    oai_error e;
    oai_fail(&e, 400, "n", "unsupported_parameter", "n must be %d", 1);
    json_t *ej = oai_error_json(&e);
    json_t *eo = json_object_get(ej, "error");
    ok(strcmp(str_at(eo, "message"), "n must be 1") == 0 &&
           strcmp(str_at(eo, "type"), "invalid_request_error") == 0 &&
           strcmp(str_at(eo, "param"), "n") == 0 &&
           strcmp(str_at(eo, "code"), "unsupported_parameter") == 0, "error object");
    json_decref(ej);
    oai_fail(&e, 503, NULL, NULL, "no member alive");
    ej = oai_error_json(&e);
    eo = json_object_get(ej, "error");
    ok(json_is_null(json_object_get(eo, "param")) && json_is_null(json_object_get(eo, "code")),
       "null param and code");
    json_decref(ej);
    free(r.text);
}

/* Found by tests/fuzz/fuzz_openai.c: jansson's parse error quotes the
 * bytes near the error cut inside a character, and the message was then
 * invalid UTF-8, so no error object could be built (the server answered
 * 500 "out of memory" instead of 400 invalid_json). */
static void test_errors_are_utf8(void) {
    static const char body[] = "\"\xcc\x84\xe3\x93\x8d\\\xe3\x93\x8d"; /* tests/fuzz/corpus/openai/cut_utf8_in_error */
    oai_request rq;
    oai_error err;
    ok(oai_parse_request(OAI_COMPLETIONS, body, sizeof body - 1, &cfg, &rq, &err) != 0 && err.status == 400,
       "a malformed body with a character cut in jansson's error text is refused");
    is_str(err.code, "invalid_json", "... as invalid_json");
    ok(utf8_valid(err.message, strlen(err.message)), "... with a valid UTF-8 message");
    json_t *j = oai_error_json(&err);
    ok(j != NULL, "... that makes an error object");
    json_decref(j);
    char key[200] = "{\"";
    for (int i = 0; i < 40; i++) strcat(key, "\xc3\xa9"); /* 80 bytes: longer than param */
    strcat(key, "\": 1, \"prompt\": \"x\"}");
    ok(oai_parse_request(OAI_COMPLETIONS, key, strlen(key), &cfg, &rq, &err) != 0 && err.status == 400,
       "an unknown field with a long non-ASCII name is refused");
    ok(utf8_valid(err.param, strlen(err.param)) && utf8_valid(err.message, strlen(err.message)),
       "... with param and message cut on a character boundary");
    j = oai_error_json(&err);
    ok(j != NULL, "... that make an error object");
    json_decref(j);
    char buf[600];
    memset(buf, 'x', sizeof buf);
    buf[sizeof buf - 1] = 0;
    memcpy(buf + 510, "\xe2\x82\xac", 3); /* a euro sign across the message's end */
    oai_fail(&err, 400, NULL, "c", "%s", buf);
    ok(utf8_valid(err.message, strlen(err.message)) && strlen(err.message) == 510,
       "oai_fail drops a character the message's end would cut");
}

int main(void) {
    test_errors_are_utf8();
    test_completions();
    test_completions_rejects();
    test_chat();
    test_responses();
    return tap_done();
}
