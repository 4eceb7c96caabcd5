/* protocol/proto: every message survives encode -> text -> decode; the wire
 * text has the field order of docs/PROTOCOL.md; every decode error answers
 * the documented status and code; null <-> -INFINITY / NAN; bytes that are
 * not UTF-8 survive base64; release frees what decode allocated (this
 * program runs under valgrind and ASan in `make test`). */
#include "protocol/proto.h"
#include "tests/tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Encode, print compactly and parse again: what a peer would receive. */
static json_t *wire(json_t *o) {
    size_t n = 0;
    char *s = proto_dumps(o, &n);
    json_t *j = s ? json_loadb(s, n, 0, NULL) : NULL;
    free(s);
    return j;
}

static json_t *parse(const char *s) { return json_loads(s, JSON_ALLOW_NUL, NULL); }

static int same_str(proto_str a, const void *b, size_t n) {
    return a.n == n && (n == 0 || memcmp(a.p, b, n) == 0);
}

/* ---- round trips ----------------------------------------------------------- */

static void test_health_info(void) {
    proto_health h = {"ok", "alpha", 2, 4}, h2;
    proto_error err;
    json_t *j = wire(proto_health_encode(&h));
    ok(proto_health_decode(j, &h2, &err) == 0 && !strcmp(h2.status, "ok") && !strcmp(h2.name, "alpha") &&
           h2.slots_in_use == 2 && h2.slots == 4, "health round trip");
    json_decref(j);

    proto_info in = {.name = "a", .model_path = "models/a.gguf", .vocab_type = "spm", .vocab_size = 1000,
                     .bos = 1, .eos = 2, .eot = -1, .add_bos = 1, .doc_start = 1, .space_prefix = 1,
                     .n_ctx = 512, .n_ctx_train = 2048, .has_chat_template = 0, .slots = 4,
                     .protocol = PROTO_VERSION};
    proto_info out;
    char *text = proto_dumps(proto_info_encode(&in), NULL);
    ok(text && strstr(text, "\"eot\":null") && strstr(text, "\"protocol\":1"), "info: eot -1 is null, protocol 1");
    j = parse(text);
    free(text);
    ok(proto_info_decode(j, &out, &err) == 0, "info decodes");
    ok(!strcmp(out.name, "a") && !strcmp(out.model_path, "models/a.gguf") && !strcmp(out.vocab_type, "spm") &&
           out.vocab_size == 1000 && out.bos == 1 && out.eos == 2 && out.eot == -1 && out.add_bos == 1 &&
           out.doc_start == 1 && out.space_prefix == 1 && out.n_ctx == 512 && out.n_ctx_train == 2048 &&
           out.has_chat_template == 0 && out.slots == 4 && out.protocol == PROTO_VERSION,
       "info round trip, every field");
    json_decref(j);

    j = parse("{\"protocol\": 2, \"vocab_size\": 10}");
    ok(proto_info_decode(j, &out, &err) == -1 && err.status == 409 && !strcmp(err.code, "protocol_mismatch"),
       "info: another protocol version is 409 protocol_mismatch");
    json_decref(j);
    j = parse("{\"vocab_size\": 10}");
    ok(proto_info_decode(j, &out, &err) == -1 && err.status == 409, "info: a missing protocol is a mismatch");
    json_decref(j);
    j = parse("{\"protocol\": 1}");
    ok(proto_info_decode(j, &out, &err) == -1 && err.status == 400 && !strcmp(err.param, "vocab_size"),
       "info: vocab_size is required");
    json_decref(j);
    j = parse("{\"protocol\": 1, \"vocab_size\": 10, \"bos\": \"x\"}");
    ok(proto_info_decode(j, &out, &err) == -1 && !strcmp(err.code, "invalid_type"), "info: bos of the wrong type");
    json_decref(j);
    j = parse("{\"protocol\": 1, \"vocab_size\": 10}");
    ok(proto_info_decode(j, &out, &err) == 0 && out.bos == -1 && out.eos == -1 && out.doc_start == -1,
       "info: absent token ids are -1");
    json_decref(j);
}

static void test_vocab(void) {
    const unsigned char nonutf[] = {0xe2, 0x82}; /* the first two bytes of a 3-byte character */
    proto_str toks[3] = {{(const unsigned char *)"the", 3}, {nonutf, 2}, {NULL, 0}};
    const char *kinds[3] = {"normal", "byte", "control"};
    proto_vocab v = {3, toks, kinds, NULL}, w;
    proto_error err;
    json_t *j = wire(proto_vocab_encode(&v));
    ok(proto_vocab_decode(j, &w, &err) == 0 && w.vocab_size == 3, "vocab decodes");
    ok(same_str(w.tokens[0], "the", 3) && same_str(w.tokens[1], nonutf, 2) && w.tokens[2].n == 0,
       "vocab: token bytes survive, partial UTF-8 included");
    ok(!strcmp(w.kinds[0], "normal") && !strcmp(w.kinds[1], "byte") && !strcmp(w.kinds[2], "control"),
       "vocab: kinds survive");
    proto_vocab_release(&w);
    ok(w.tokens == NULL && w.own_ == NULL && w.vocab_size == 0, "vocab release zeroes the struct");
    json_decref(j);

    j = parse("{\"vocab_size\": 2, \"tokens_b64\": [\"YQ==\"], \"kinds\": [\"normal\"]}");
    ok(proto_vocab_decode(j, &w, &err) == -1 && !strcmp(err.code, "invalid_value"), "vocab: size mismatch");
    json_decref(j);
    j = parse("{\"vocab_size\": 1, \"tokens_b64\": [\"YQ==\"], \"kinds\": [\"weird\"]}");
    ok(proto_vocab_decode(j, &w, &err) == -1 && !strcmp(err.code, "invalid_value"), "vocab: unknown kind");
    json_decref(j);
    j = parse("{\"vocab_size\": 2, \"tokens_b64\": [\"YQ==\", \"Y\"], \"kinds\": [\"normal\", \"normal\"]}");
    ok(proto_vocab_decode(j, &w, &err) == -1 && !strcmp(err.code, "invalid_base64") && w.own_ == NULL,
       "vocab: bad base64 in the second entry, nothing kept");
    json_decref(j);
}

static void test_tokenize(void) {
    proto_tokenize_req q = {"héllo", strlen("héllo"), 0, 1}, q2;
    proto_error err;
    json_t *j = wire(proto_tokenize_req_encode(&q));
    ok(proto_tokenize_req_decode(j, &q2, &err) == 0 && q2.text_len == q.text_len &&
           !memcmp(q2.text, q.text, q.text_len) && q2.add_special == 0 && q2.parse_special == 1,
       "tokenize request round trip");
    json_decref(j);

    int toks[3] = {5, 0, 77};
    size_t spans[6] = {0, 1, 1, 3, 3, 6};
    proto_tokenize_res r = {toks, 3, spans}, r2;
    j = wire(proto_tokenize_res_encode(&r));
    ok(proto_tokenize_res_decode(j, &r2, &err) == 0 && r2.n == 3 && !memcmp(r2.tokens, toks, sizeof toks) &&
           r2.spans && !memcmp(r2.spans, spans, sizeof spans), "tokenize answer round trip with spans");
    proto_tokenize_res_release(&r2);
    json_decref(j);
    r.spans = NULL;
    char *text = proto_dumps(proto_tokenize_res_encode(&r), NULL);
    is_str(text, "{\"tokens\":[5,0,77],\"spans\":null}", "tokenize answer without spans: null");
    j = parse(text);
    free(text);
    ok(proto_tokenize_res_decode(j, &r2, &err) == 0 && r2.spans == NULL && r2.n == 3, "spans null decodes to NULL");
    proto_tokenize_res_release(&r2);
    json_decref(j);

    j = parse("{\"text\": 3}");
    ok(proto_tokenize_req_decode(j, &q2, &err) == -1 && err.status == 400 && !strcmp(err.code, "invalid_type"),
       "tokenize: text of the wrong type");
    json_decref(j);
    j = parse("{\"text\": \"a\", \"add_special\": 1}");
    ok(proto_tokenize_req_decode(j, &q2, &err) == -1 && !strcmp(err.param, "add_special"),
       "tokenize: add_special must be a boolean");
    json_decref(j);
    j = parse("{\"tokens\": [1, -2]}");
    ok(proto_tokenize_res_decode(j, &r2, &err) == -1 && !strcmp(err.code, "invalid_value"), "negative token id");
    json_decref(j);
    j = parse("{\"tokens\": [1], \"spans\": [[2, 1]]}");
    ok(proto_tokenize_res_decode(j, &r2, &err) == -1 && !strcmp(err.param, "spans"), "a span that ends before it starts");
    json_decref(j);
}

static void test_detokenize(void) {
    int toks[2] = {3, 9};
    proto_detokenize_req q = {toks, 2, 1, NULL}, q2;
    proto_error err;
    json_t *j = wire(proto_detokenize_req_encode(&q));
    ok(proto_detokenize_req_decode(j, 10, &q2, &err) == 0 && q2.n == 2 && q2.tokens[0] == 3 && q2.tokens[1] == 9 &&
           q2.strip_space_prefix == 1, "detokenize request round trip");
    proto_detokenize_req_release(&q2);
    ok(proto_detokenize_req_decode(j, 9, &q2, &err) == -1 && err.status == 400 && !strcmp(err.code, "invalid_value"),
       "detokenize: an id outside the vocabulary");
    json_decref(j);
    j = parse("{\"tokens\": \"1 2\"}");
    ok(proto_detokenize_req_decode(j, 10, &q2, &err) == -1 && !strcmp(err.code, "invalid_type"),
       "detokenize: tokens must be an array");
    json_decref(j);

    const unsigned char bytes[] = {'a', 0xff, 0x00, 'b'};
    proto_detokenize_res r = {{bytes, sizeof bytes}, NULL}, r2;
    char *text = proto_dumps(proto_detokenize_res_encode(&r), NULL);
    ok(text && !strstr(text, "\"text\":"), "detokenize answer: no 'text' when the bytes are not UTF-8");
    j = parse(text);
    free(text);
    ok(proto_detokenize_res_decode(j, &r2, &err) == 0 && same_str(r2.text, bytes, sizeof bytes),
       "detokenize answer: arbitrary bytes (0xff, NUL) survive base64");
    proto_detokenize_res_release(&r2);
    json_decref(j);
    r.text = (proto_str){(const unsigned char *)"ok", 2};
    text = proto_dumps(proto_detokenize_res_encode(&r), NULL);
    is_str(text, "{\"text_b64\":\"b2s=\",\"text\":\"ok\"}", "detokenize answer: text too when valid UTF-8");
    free(text);
}

/* ---- /v1/step ---------------------------------------------------------------- */

static void test_step_req(void) {
    const unsigned char app[] = {' ', 0xe2, 0x82};
    proto_str cands[3] = {{(const unsigned char *)"x", 1}, {app + 1, 2}, {NULL, 0}};
    proto_msg msgs[2] = {{"system", "be brief"}, {"user", "hi"}};
    proto_step_req q = {.session = "s-1.a:b_c", .messages = msgs, .n_messages = 2, .heal_prompt = 1,
                        .append = {app, sizeof app}, .k = 7, .cands = cands, .n_cands = 3}, q2;
    proto_error err;
    json_t *j = wire(proto_step_req_encode(&q));
    ok(proto_step_req_decode(j, &q2, &err) == 0, "step request decodes");
    ok(!strcmp(q2.session, q.session) && q2.prompt == NULL && q2.n_messages == 2 &&
           !strcmp(q2.messages[1].role, "user") && !strcmp(q2.messages[1].content, "hi") && q2.heal_prompt == 1 &&
           same_str(q2.append, app, sizeof app) && q2.k == 7 && q2.n_cands == 3 &&
           same_str(q2.cands[0], "x", 1) && same_str(q2.cands[1], app + 1, 2) && q2.cands[2].n == 0,
       "step request round trip (messages, heal, partial UTF-8 append and candidates, empty candidate)");
    proto_step_req_release(&q2);
    ok(q2.own_ == NULL && q2.cands == NULL, "step request release zeroes");
    json_decref(j);

    proto_step_req p = {.session = "s", .prompt = "The jury", .prompt_len = 8, .k = 20};
    char *text = proto_dumps(proto_step_req_encode(&p), NULL);
    is_str(text, "{\"session\":\"s\",\"prompt\":\"The jury\",\"k\":20}", "step request: only what is set");
    free(text);

    j = parse("{\"session\": \"s\"}");
    ok(proto_step_req_decode(j, &q2, &err) == 0 && q2.k == PROTO_DEFAULT_K && q2.n_cands == 0 && q2.append.n == 0 &&
           q2.prompt == NULL, "step request defaults: k 20, nothing else");
    proto_step_req_release(&q2);
    json_decref(j);
}

/* One bad step request: decode fails with status and code, and leaves nothing. */
static void step_bad(const char *body, int status, const char *code, const char *what) {
    json_t *j = parse(body);
    proto_step_req q;
    proto_error err;
    int r = j ? proto_step_req_decode(j, &q, &err) : 0;
    ok(j && r == -1 && err.status == status && !strcmp(err.code, code) && q.own_ == NULL && err.message[0], what);
    if (j && (err.status != status || strcmp(err.code, code))) diag("got %d %s: %s", err.status, err.code, err.message);
    json_decref(j);
}

static void test_step_req_errors(void) {
    step_bad("{}", 400, "invalid_type", "step: session is required");
    step_bad("{\"session\": 5}", 400, "invalid_type", "step: session of the wrong type");
    step_bad("{\"session\": \"\"}", 400, "invalid_value", "step: empty session id");
    step_bad("{\"session\": \"a b\"}", 400, "invalid_value", "step: session id with a space");
    step_bad("{\"session\": \"a/b\"}", 400, "invalid_value", "step: session id with a slash");
    char long_id[128];
    snprintf(long_id, sizeof long_id, "{\"session\": \"%065d\"}", 0);
    step_bad(long_id, 400, "invalid_value", "step: 65-character session id");
    snprintf(long_id, sizeof long_id, "{\"session\": \"%064d\"}", 0);
    json_t *j = parse(long_id);
    proto_step_req q;
    proto_error err;
    ok(proto_step_req_decode(j, &q, &err) == 0, "step: a 64-character session id is fine");
    proto_step_req_release(&q);
    json_decref(j);
    step_bad("{\"session\": \"s\", \"prompt\": \"a\", \"messages\": [{\"role\": \"user\", \"content\": \"b\"}]}", 400,
             "invalid_request", "step: prompt and messages both");
    step_bad("{\"session\": \"s\", \"prompt\": 1}", 400, "invalid_type", "step: prompt of the wrong type");
    step_bad("{\"session\": \"s\", \"messages\": []}", 400, "invalid_type", "step: empty messages");
    step_bad("{\"session\": \"s\", \"messages\": [{\"role\": \"user\"}]}", 400, "invalid_type",
             "step: a message without content");
    step_bad("{\"session\": \"s\", \"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}", 400,
             "invalid_value", "step: a NUL in a message");
    step_bad("{\"session\": \"s\", \"heal_prompt\": \"yes\"}", 400, "invalid_type", "step: heal_prompt not a boolean");
    step_bad("{\"session\": \"s\", \"append_b64\": 7}", 400, "invalid_type", "step: append_b64 not a string");
    step_bad("{\"session\": \"s\", \"append_b64\": \"abc\"}", 400, "invalid_base64", "step: append_b64 bad length");
    step_bad("{\"session\": \"s\", \"append_b64\": \"a*==\"}", 400, "invalid_base64", "step: append_b64 bad char");
    step_bad("{\"session\": \"s\", \"append_b64\": \"YQ==\\u0000\"}", 400, "invalid_base64",
             "step: append_b64 with a NUL after valid base64");
    step_bad("{\"session\": \"s\", \"k\": 1.5}", 400, "invalid_type", "step: k not an integer");
    step_bad("{\"session\": \"s\", \"k\": -1}", 400, "invalid_value", "step: k below 0");
    step_bad("{\"session\": \"s\", \"k\": 257}", 400, "invalid_value", "step: k above 256");
    step_bad("{\"session\": \"s\", \"candidates_b64\": \"YQ==\"}", 400, "invalid_type", "step: candidates not an array");
    step_bad("{\"session\": \"s\", \"candidates_b64\": [\"YQ==\", 3]}", 400, "invalid_type",
             "step: a candidate not a string");
    step_bad("{\"session\": \"s\", \"candidates_b64\": [\"YQ==\", \"!!\"]}", 400, "invalid_base64",
             "step: a candidate with bad base64 (after a good one: no leak)");
    step_bad("[1, 2]", 400, "invalid_json", "step: a body that is not an object");

    /* k = 256 and 512 candidates are the limits; 513 candidates are not */
    json_t *big = json_pack("{s:s, s:i}", "session", "s", "k", PROTO_MAX_K), *ca = json_array();
    for (int i = 0; i < PROTO_MAX_CANDIDATES; i++) json_array_append_new(ca, json_string("YQ=="));
    json_object_set(big, "candidates_b64", ca);
    ok(proto_step_req_decode(big, &q, &err) == 0 && q.k == PROTO_MAX_K && q.n_cands == PROTO_MAX_CANDIDATES,
       "step: k 256 and 512 candidates are accepted");
    proto_step_req_release(&q);
    json_array_append_new(ca, json_string("YQ=="));
    ok(proto_step_req_decode(big, &q, &err) == -1 && !strcmp(err.code, "invalid_value") &&
           !strcmp(err.param, "candidates_b64"), "step: 513 candidates are too many");
    json_decref(ca);
    json_decref(big);
}

static void test_step_res(void) {
    const unsigned char r[] = {' ', 't', 'h'};
    const unsigned char half[] = {0xc3};
    proto_top top[3] = {{{(const unsigned char *)"e", 1}, -0.11, -0.5}, {{half, 1}, -2.5, NAN}, {{NULL, 0}, -INFINITY, -INFINITY}};
    double cands[3] = {-0.625, -INFINITY, 0};
    proto_step_res s = {"s1", 57, {r, 3}, 1, top, 3, cands, 3, -9.25, NULL, 0, NULL, 0, NULL}, s2;
    proto_error err;
    char *text = proto_dumps(proto_step_res_encode(&s), NULL);
    is_str(text,
           "{\"session\":\"s1\",\"n_past\":57,\"residue_b64\":\"IHRo\",\"decoded\":1,"
           "\"top\":[{\"s_b64\":\"ZQ==\",\"logq\":-0.11,\"logp\":-0.5},{\"s_b64\":\"ww==\",\"logq\":-2.5},"
           "{\"s_b64\":\"\",\"logq\":null,\"logp\":null}],"
           "\"candidates\":[-0.625,null,0.0],\"end_logq\":-9.25}",
           "step answer: the documented fields in the documented order, -INFINITY as null");
    json_t *j = parse(text);
    free(text);
    ok(proto_step_res_decode(j, &s2, &err) == 0, "step answer decodes");
    ok(!strcmp(s2.session, "s1") && s2.n_past == 57 && same_str(s2.residue, r, 3) && s2.decoded == 1 &&
           s2.n_top == 3 && same_str(s2.top[0].s, "e", 1) && s2.top[0].logq == -0.11 &&
           same_str(s2.top[1].s, half, 1) && s2.top[2].s.n == 0 && s2.top[2].logq == -INFINITY &&
           s2.n_cands == 3 && s2.cand_logq[0] == -0.625 && s2.cand_logq[1] == -INFINITY && s2.cand_logq[2] == 0 &&
           s2.end_logq == -9.25, "step answer round trip, null -> -INFINITY");
    ok(s2.top[0].logp == -0.5 && isnan(s2.top[1].logp) && s2.top[2].logp == -INFINITY,
       "top logp: a number round-trips, an absent one (older worker) is NAN, null is -INFINITY");
    proto_step_res_release(&s2);
    json_decref(j);

    s.end_logq = NAN;
    j = wire(proto_step_res_encode(&s));
    ok(json_is_null(json_object_get(j, "end_logq")) && proto_step_res_decode(j, &s2, &err) == 0 &&
           s2.end_logq == -INFINITY, "a NAN end_logq travels as null and comes back as -INFINITY");
    proto_step_res_release(&s2);
    json_decref(j);

    const char *bad[][3] = {
        {"{\"residue_b64\": \"\", \"top\": [], \"candidates\": [], \"end_logq\": null}", "invalid_type", "n_past missing"},
        {"{\"n_past\": 1, \"top\": [], \"candidates\": [], \"end_logq\": null}", "invalid_type", "residue missing"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"candidates\": [], \"end_logq\": null}", "invalid_type", "top missing"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"top\": [], \"end_logq\": null}", "invalid_type", "candidates missing"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"top\": [], \"candidates\": []}", "invalid_type", "end_logq missing"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"top\": [{\"s_b64\": \"e\", \"logq\": 0}], \"candidates\": [], "
         "\"end_logq\": 0}", "invalid_base64", "a top entry with bad base64"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"top\": [{\"s_b64\": \"ZQ==\", \"logq\": \"x\"}], \"candidates\": [], "
         "\"end_logq\": 0}", "invalid_type", "a top logq of the wrong type"},
        {"{\"n_past\": 1, \"residue_b64\": \"\", \"top\": [], \"candidates\": [true], \"end_logq\": 0}", "invalid_type",
         "a candidate answer of the wrong type"},
        {"{\"n_past\": -1, \"residue_b64\": \"\", \"top\": [], \"candidates\": [], \"end_logq\": 0}", "invalid_value",
         "a negative n_past"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = parse(bad[i][0]);
        int rc = proto_step_res_decode(j, &s2, &err);
        ok(rc == -1 && !strcmp(err.code, bad[i][1]) && s2.own_ == NULL, bad[i][2]);
        json_decref(j);
    }
}

/* ---- /v1/score ----------------------------------------------------------------- */

static void test_score(void) {
    proto_score_req q = {"a\nb", 3, 0}, q2;
    proto_error err;
    json_t *j = wire(proto_score_req_encode(&q));
    ok(proto_score_req_decode(j, &q2, &err) == 0 && q2.text_len == 3 && !memcmp(q2.text, "a\nb", 3) &&
           q2.doc_start == 0, "score request round trip");
    json_decref(j);
    j = parse("{\"text\": \"x\"}");
    ok(proto_score_req_decode(j, &q2, &err) == 0 && q2.doc_start == 1, "score request: doc_start defaults to true");
    json_decref(j);
    j = parse("{\"doc_start\": true}");
    ok(proto_score_req_decode(j, &q2, &err) == -1 && !strcmp(err.param, "text"), "score request: text is required");
    json_decref(j);

    proto_score_tok t[2] = {{7, 0, 1, NAN, NAN, NAN}, {9, 1, 3, -1.25, 2.5, 0.5}};
    proto_score_res r = {t, 2, -1.25, 512, 256, 3, NULL}, r2;
    char *text = proto_dumps(proto_score_res_encode(&r), NULL);
    is_str(text,
           "{\"n_tokens\":2,\"tokens\":[{\"id\":7,\"start\":0,\"end\":1,\"logprob\":null,\"entropy\":null,\"top1\":null},"
           "{\"id\":9,\"start\":1,\"end\":3,\"logprob\":-1.25,\"entropy\":2.5,\"top1\":0.5}],"
           "\"sum_logprob\":-1.25,\"n_ctx\":512,\"window_overlap\":256,\"decoded\":3}",
           "score answer: documented fields and order, NAN as null");
    j = parse(text);
    free(text);
    ok(proto_score_res_decode(j, &r2, &err) == 0 && r2.n_tokens == 2 && r2.tokens[0].id == 7 &&
           isnan(r2.tokens[0].logprob) && isnan(r2.tokens[0].entropy) && isnan(r2.tokens[0].top1) &&
           r2.tokens[1].start == 1 && r2.tokens[1].end == 3 && r2.tokens[1].logprob == -1.25 &&
           r2.tokens[1].entropy == 2.5 && r2.tokens[1].top1 == 0.5 && r2.sum_logprob == -1.25 && r2.n_ctx == 512 &&
           r2.window_overlap == 256 && r2.decoded == 3, "score answer round trip, null -> NAN");
    proto_score_res_release(&r2);
    ok(r2.tokens == NULL && r2.own_ == NULL, "score answer release zeroes");
    json_decref(j);

    j = parse("{\"tokens\": []}");
    ok(proto_score_res_decode(j, &r2, &err) == -1 && !strcmp(err.param, "sum_logprob"), "score answer: sum_logprob required");
    json_decref(j);
    j = parse("{\"sum_logprob\": 0, \"tokens\": [{\"id\": 1, \"start\": 4, \"end\": 2}]}");
    ok(proto_score_res_decode(j, &r2, &err) == -1 && !strcmp(err.code, "invalid_value"),
       "score answer: a token ending before it starts");
    json_decref(j);
    j = parse("{\"sum_logprob\": 0, \"tokens\": [{\"id\": 1, \"start\": 0, \"end\": 1}, 5]}");
    ok(proto_score_res_decode(j, &r2, &err) == -1 && r2.own_ == NULL, "score answer: a token that is not an object");
    json_decref(j);
}

/* ---- errors, session ids, bodies --------------------------------------------- */

static void test_errors(void) {
    proto_error e, d;
    ok(proto_fail(&e, 404, "session_not_found", "unknown session '%s'", "x") == -1 && e.status == 404,
       "proto_fail returns -1 and fills the error");
    char *text = proto_dumps(proto_error_encode(&e), NULL);
    is_str(text, "{\"error\":{\"message\":\"unknown session 'x'\",\"type\":\"invalid_request_error\","
                 "\"code\":\"session_not_found\"}}", "error object: message, type, code (no empty param)");
    json_t *j = parse(text);
    free(text);
    ok(proto_error_decode(j, 404, &d) == 0 && d.status == 404 && !strcmp(d.code, "session_not_found") &&
           !strcmp(d.message, e.message), "error round trip");
    json_decref(j);
    proto_fail(&e, 500, "decode_failed", "llama_decode failed");
    snprintf(e.param, sizeof e.param, "k");
    j = wire(proto_error_encode(&e));
    ok(!strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "server_error") &&
           !strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "param")), "k"),
       "a 5xx error is a server_error; param written when set");
    json_decref(j);
    j = parse("{\"detail\": \"oops\"}");
    ok(proto_error_decode(j, 502, &d) == -1 && d.status == 502 && d.message[0], "a body that is not an error object");
    json_decref(j);

    ok(proto_session_id_ok("a") && proto_session_id_ok("A-z_0.9:x") && !proto_session_id_ok("") &&
           !proto_session_id_ok("é") && !proto_session_id_ok(NULL), "session id rule");

    text = proto_dumps(proto_deleted_encode(), NULL);
    is_str(text, "{\"deleted\":true}", "deleted answer");
    free(text);
    size_t n = 5;
    ok(proto_dumps(NULL, &n) == NULL && n == 0, "proto_dumps(NULL) is NULL with length 0");
}

/* Every code a worker sends is spelled as docs/WORKER.md lists it (the
 * tests run from the repository's root). */
static void test_error_codes_documented(void) {
    static const char *const sent[] = {
        PROTO_ERR_INVALID_JSON, PROTO_ERR_INVALID_TYPE, PROTO_ERR_INVALID_VALUE, PROTO_ERR_INVALID_REQUEST,
        PROTO_ERR_INVALID_BASE64, PROTO_ERR_BODY_TOO_LARGE, PROTO_ERR_NOT_FOUND, PROTO_ERR_METHOD_NOT_ALLOWED,
        PROTO_ERR_SESSION_NOT_FOUND, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED, PROTO_ERR_UNTOKENIZABLE,
        PROTO_ERR_INVALID_PROMPT, PROTO_ERR_DECODE_FAILED, PROTO_ERR_INTERNAL, PROTO_ERR_BUDGET_EXCEEDED,
        PROTO_ERR_DEADLINE_EXCEEDED, PROTO_ERR_CANCELLED, PROTO_ERR_INVALID_API_KEY};
    FILE *f = fopen("docs/WORKER.md", "rb");
    char doc[1 << 16];
    size_t n = f ? fread(doc, 1, sizeof doc - 1, f) : 0;
    if (f) fclose(f);
    doc[n] = 0;
    ok(n > 0, "docs/WORKER.md read");
    for (size_t i = 0; i < sizeof sent / sizeof *sent; i++) {
        char quoted[64], what[96];
        snprintf(quoted, sizeof quoted, "`%s`", sent[i]);
        snprintf(what, sizeof what, "error code %s is documented", sent[i]);
        ok(strstr(doc, quoted) != NULL, what);
    }
}

/* The speculative fields: steps_b64 and draft in a request, draft answers
 * in an answer (docs/PROTOCOL.md). */
static void test_step_speculative(void) {
    proto_str steps[2] = {{(const unsigned char *)" the", 4}, {(const unsigned char *)" cat", 4}};
    proto_step_req q = {.session = "s", .k = 1, .steps = steps, .n_steps = 2, .draft = 4}, q2;
    proto_error err;
    json_t *j = wire(proto_step_req_encode(&q));
    ok(proto_step_req_decode(j, &q2, &err) == 0 && q2.n_steps == 2 && same_str(q2.steps[1], " cat", 4) &&
           q2.draft == 4, "step request: steps_b64 and draft round-trip");
    proto_step_req_release(&q2);
    json_decref(j);
    step_bad("{\"session\":\"s\",\"draft\":17}", 400, "invalid_value", "draft over 16 is 400");
    step_bad("{\"session\":\"s\",\"steps_b64\":[\"\"]}", 400, "invalid_value", "an empty piece in steps_b64 is 400");
    step_bad("{\"session\":\"s\",\"steps_b64\":\"IA==\"}", 400, "invalid_type", "steps_b64 not an array is 400");
    proto_step_req v = {.session = "s", .k = 1, .draft_steps = steps, .n_draft_steps = 2};
    j = wire(proto_step_req_encode(&v));
    ok(proto_step_req_decode(j, &q2, &err) == 0 && q2.n_draft_steps == 2 && same_str(q2.draft_steps[0], " the", 4) &&
           same_str(q2.draft_steps[1], " cat", 4) && q2.draft == 0,
       "step request: draft_b64 round-trips");
    proto_step_req_release(&q2);
    json_decref(j);
    step_bad("{\"session\":\"s\",\"draft\":2,\"draft_b64\":[\"IA==\"]}", 400, "invalid_request",
             "draft and draft_b64 together is 400");
    step_bad("{\"session\":\"s\",\"draft_b64\":[\"\"]}", 400, "invalid_value", "an empty piece in draft_b64 is 400");
    step_bad("{\"session\":\"s\",\"draft_b64\":[\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\","
             "\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\",\"IA==\"]}",
             400, "invalid_value", "draft_b64 over 16 pieces is 400");

    proto_top t1 = {{(const unsigned char *)" a", 2}, -0.5, -0.5}, t2 = {{(const unsigned char *)" b", 2}, -1.5, -1.5};
    proto_step_res d[2] = {{NULL, 5, {NULL, 0}, 1, &t1, 1, NULL, 0, -7, NULL, 0, NULL, 0, NULL},
                           {NULL, 6, {NULL, 0}, 1, &t2, 1, NULL, 0, -INFINITY, NULL, 0, NULL, 0, NULL}};
    proto_step_res s = {"s", 4, {NULL, 0}, 2, &t1, 1, NULL, 0, -3, d, 2, NULL, 0, NULL}, s2;
    j = wire(proto_step_res_encode(&s));
    ok(proto_step_res_decode(j, &s2, &err) == 0 && s2.n_draft == 2 && s2.draft[0].n_past == 5 &&
           s2.draft[1].n_past == 6 && same_str(s2.draft[1].top[0].s, " b", 2) && s2.draft[0].end_logq == -7 &&
           s2.draft[1].end_logq == -INFINITY && s2.draft[0].session == NULL,
       "step answer: draft answers round-trip");
    proto_step_res_release(&s2);
    ok(s2.n_draft == 0 && s2.draft == NULL, "... and are released");
    json_decref(j);
    j = parse("{\"n_past\":1,\"residue_b64\":\"\",\"top\":[],\"candidates\":[],\"end_logq\":null,"
              "\"draft\":[{\"n_past\":2,\"residue_b64\":\"\",\"top\":[],\"candidates\":[],\"end_logq\":null,"
              "\"draft\":[]}]}");
    ok(proto_step_res_decode(j, &s2, &err) == -1 && s2.own_ == NULL, "a draft answer with its own draft is refused");
    json_decref(j);
}

/* next_bytes: its depth in a request, its 257 masses in an answer (absent
 * when not asked; any other length refused). */
static void test_step_next_bytes(void) {
    proto_step_req q = {.session = "s", .k = 0, .next_bytes = 3}, q2;
    proto_error err;
    json_t *j = wire(proto_step_req_encode(&q));
    ok(proto_step_req_decode(j, &q2, &err) == 0 && q2.next_bytes == 3, "step request: next_bytes round-trips");
    proto_step_req_release(&q2);
    json_decref(j);
    step_bad("{\"session\":\"s\",\"next_bytes\":5}", 400, "invalid_value", "next_bytes over 4 is 400");
    step_bad("{\"session\":\"s\",\"next_bytes\":true}", 400, "invalid_type", "next_bytes must be a number");
    double nb[PROTO_NEXT_BYTES];
    for (int i = 0; i < PROTO_NEXT_BYTES; i++) nb[i] = i == 'q' ? -INFINITY : -5.0 - i / 100.0;
    proto_step_res s = {.session = "s", .n_past = 3, .end_logq = -2, .next_bytes = nb, .n_next_bytes = PROTO_NEXT_BYTES},
                   s2;
    j = wire(proto_step_res_encode(&s));
    ok(proto_step_res_decode(j, &s2, &err) == 0 && s2.n_next_bytes == PROTO_NEXT_BYTES && s2.next_bytes[7] == nb[7] &&
           s2.next_bytes['q'] == -INFINITY && s2.next_bytes[256] == nb[256],
       "step answer: next_bytes round-trips (null for no mass)");
    proto_step_res_release(&s2);
    json_decref(j);
    proto_step_res s3 = {.session = "s", .n_past = 3, .end_logq = -2};
    j = wire(proto_step_res_encode(&s3));
    ok(proto_step_res_decode(j, &s2, &err) == 0 && s2.n_next_bytes == 0 && s2.next_bytes == NULL,
       "an answer without next_bytes has none");
    proto_step_res_release(&s2);
    json_decref(j);
    j = parse("{\"n_past\":1,\"residue_b64\":\"\",\"top\":[],\"candidates\":[],\"end_logq\":null,\"next_bytes\":[1,2]}");
    ok(proto_step_res_decode(j, &s2, &err) == -1, "next_bytes of another length is refused");
    json_decref(j);
}

/* POST /v1/next_bytes: the request's defaults and ranges, the answer's
 * little-endian float32 rows (-inf kept) and their size check. */
static void test_next_bytes_walk(void) {
    proto_next_bytes_req q = {{(const unsigned char *)"ab\xff", 3}, 7, NULL}, q2;
    proto_error err;
    json_t *j = wire(proto_next_bytes_req_encode(&q));
    ok(proto_next_bytes_req_decode(j, &q2, &err) == 0 && q2.beam == 7 && q2.text.n == 3 && q2.text.p[2] == 0xff,
       "next_bytes request: text and beam round-trip");
    proto_next_bytes_req_release(&q2);
    json_decref(j);
    j = parse("{\"text_b64\":\"YQ==\"}");
    ok(proto_next_bytes_req_decode(j, &q2, &err) == 0 && q2.beam == PROTO_DEFAULT_BYTE_BEAM, "next_bytes request: default beam");
    proto_next_bytes_req_release(&q2);
    json_decref(j);
    j = parse("{\"text_b64\":\"YQ==\",\"beam\":257}");
    ok(proto_next_bytes_req_decode(j, &q2, &err) == -1 && err.status == 400 && !strcmp(err.param, "beam"),
       "next_bytes request: beam over 256 is 400 naming beam");
    json_decref(j);
    j = parse("{\"beam\":2}");
    ok(proto_next_bytes_req_decode(j, &q2, &err) == -1 && !strcmp(err.code, "invalid_type"),
       "next_bytes request: text_b64 is required");
    json_decref(j);
    float d[2 * PROTO_NEXT_BYTES];
    for (int i = 0; i < 2 * PROTO_NEXT_BYTES; i++) d[i] = i == 300 ? -INFINITY : -1.0f - (float)i / 1000.0f;
    proto_next_bytes_res r = {.n_bytes = 2, .dist = d, .beam = 4, .decoded = 9, .paths = 5, .max_beam = 3}, r2;
    j = wire(proto_next_bytes_res_encode(&r));
    int same = 1;
    if (proto_next_bytes_res_decode(j, &r2, &err) == 0) {
        for (int i = 0; i < 2 * PROTO_NEXT_BYTES; i++) same &= r2.dist[i] == d[i];
        same &= r2.n_bytes == 2 && r2.beam == 4 && r2.decoded == 9 && r2.paths == 5 && r2.max_beam == 3;
    } else {
        same = 0;
    }
    ok(same, "next_bytes answer: rows round-trip bit for bit (-inf kept), with the counters");
    proto_next_bytes_res_release(&r2);
    json_decref(j);
    j = parse("{\"n_bytes\":2,\"dist_b64\":\"AAAAAA==\"}");
    ok(proto_next_bytes_res_decode(j, &r2, &err) == -1 && !strcmp(err.param, "dist_b64"),
       "next_bytes answer: dist_b64 of another size than n_bytes * 257 floats is refused");
    json_decref(j);
}

int main(void) {
    test_error_codes_documented();
    test_next_bytes_walk();
    test_step_next_bytes();
    test_health_info();
    test_vocab();
    test_tokenize();
    test_detokenize();
    test_step_req();
    test_step_req_errors();
    test_step_res();
    test_step_speculative();
    test_score();
    test_errors();
    return tap_done();
}
