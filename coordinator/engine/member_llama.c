/* coordinator/engine/member_llama.c: the member operations (member.h) for a
 * running llama.cpp `llama-server` (SPEC llama+http://host:port).
 *
 * Why it is shaped so. The alignment state machine (P, C, r, healing, the
 * proposals' absorption, the lists' cache) is member_align.c's, shared with
 * the OpenAI-compatible kind; this file is its backend for llama-server's
 * native endpoints, which give more than the OpenAI API does:
 *
 *   - tokenizing: /tokenize with pieces and special tokens (the server's
 *     own tokenizer: nothing to configure on the coordinator);
 *   - chat: /apply-template (the server's own template);
 *   - next-token lists: /completion with the prompt as token ids,
 *     n_predict 1, n_probs n (--member-nprobs, default 512), cache_prompt,
 *     and no samplers, so each listed probability is the raw softmax;
 *   - scoring: llama-server returns no prompt log-probabilities, so each
 *     token is scored by one /completion over the tokens before it with
 *     that token forced by a logit bias; the reported probability is the
 *     raw softmax (the bias acts in the sampler, after the probabilities
 *     are taken). Exact, one decoded position per token.
 *
 * State: none of its own (the sessions' state is member_align.c's). What
 * may change: the value of n, the endpoints as llama-server evolves.
 */
#include "coordinator/engine/member_align.h"

#include "common/sbuf.h"
#include "coordinator/engine/members.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokenizing with the server ---------------------------------------------- */

/* The bytes of one /tokenize piece (a string, or an array of byte values). */
static int piece_bytes(const json_t *piece, sbuf *out) {
    if (json_is_string(piece)) return sb_add(out, json_string_value(piece), json_string_length(piece));
    if (!json_is_array(piece)) return -1;
    for (size_t k = 0; k < json_array_size(piece); k++) {
        unsigned char c = (unsigned char)json_integer_value(json_array_get(piece, k));
        if (sb_add(out, &c, 1)) return -1;
    }
    return 0;
}

/* Tokenizes text[0..n) (valid UTF-8) with the server: ids into *ids and
 * each token's end offset into *ends, offsets in the concatenated pieces
 * (copied to *pieces when not NULL). Without special tokens the pieces
 * spell the text, or a space and the text (a SentencePiece space prefix:
 * the offsets are then shifted onto the text); else 400 untokenizable.
 * Returns the count, or -1 with err. */
static int ll_tokenize(member_session *s, const char *text, size_t n, int add_special, int parse_special, int **ids,
                       size_t **ends, sbuf *pieces, proto_error *err) {
    *ids = NULL;
    *ends = NULL;
    json_t *q = json_pack("{s:s%, s:b, s:b, s:b}", "content", text, n, "add_special", add_special, "parse_special",
                          parse_special, "with_pieces", 1);
    if (!q) return proto_fail(err, 400, "untokenizable", "text is not valid UTF-8");
    json_t *a;
    if (align_call(s->ms, s->idx, "/tokenize", q, s->timeout_s, &a, err)) return -1;
    json_t *toks = json_object_get(a, "tokens");
    size_t k = json_array_size(toks);
    int *id = malloc((k + 1) * sizeof *id);
    size_t *end = malloc((k + 1) * sizeof *end);
    sbuf all = {0};
    int rc = id && end ? 0 : -1;
    for (size_t j = 0; !rc && j < k; j++) {
        json_t *t = json_array_get(toks, j);
        id[j] = (int)json_integer_value(json_object_get(t, "id"));
        rc = piece_bytes(json_object_get(t, "piece"), &all);
        end[j] = all.n;
    }
    json_decref(a);
    size_t shift = 0;
    if (!rc && !add_special && !parse_special && !(all.n == n && (!n || !memcmp(all.p, text, n)))) {
        if (all.n == n + 1 && all.p[0] == ' ' && !memcmp(all.p + 1, text, n)) shift = 1;
        else rc = -2;
    }
    for (size_t j = 0; !rc && j < k; j++) end[j] = end[j] >= shift ? end[j] - shift : 0;
    if (!rc && pieces) rc = sb_add(pieces, all.p ? all.p : "", all.n);
    free(all.p);
    if (rc) {
        free(id);
        free(end);
        if (rc == -2) return proto_fail(err, 400, "untokenizable", "the server's tokens do not spell the text");
        return proto_fail(err, 500, "internal", "out of memory");
    }
    *ids = id;
    *ends = end;
    return (int)k;
}

static int read_top(const json_t *o, align_tok *t) {
    t->id = (int)json_integer_value(json_object_get(o, "id"));
    json_t *lp = json_object_get(o, "logprob");
    t->lp = json_is_number(lp) ? json_number_value(lp) : -INFINITY;
    json_t *bytes = json_object_get(o, "bytes");
    t->n = json_array_size(bytes);
    t->b = malloc(t->n + 1);
    if (!t->b) return -1;
    for (size_t k = 0; k < t->n; k++) t->b[k] = (unsigned char)json_integer_value(json_array_get(bytes, k));
    return 0;
}

/* The next-token list after toks[0..n): one /completion. */
static int llama_next_list(member_session *s, const int *toks, size_t n, align_tok **out, size_t *ne, int *decoded,
                           proto_error *err) {
    json_t *prompt = json_array();
    for (size_t j = 0; j < n; j++) json_array_append_new(prompt, json_integer(toks[j]));
    json_t *q = json_pack("{s:o, s:i, s:i, s:b, s:f, s:b, s:[]}", "prompt", prompt, "n_predict", 1, "n_probs",
                          members_nprobs(s->ms), "cache_prompt", 1, "temperature", 0.0, "post_sampling_probs", 0,
                          "samplers");
    json_t *a;
    if (!q) return proto_fail(err, 500, "internal", "out of memory");
    if (align_call(s->ms, s->idx, "/completion", q, s->timeout_s, &a, err)) return -1;
    json_t *probs = json_array_get(json_object_get(a, "completion_probabilities"), 0);
    json_t *top = json_object_get(probs, "top_logprobs");
    *decoded += (int)json_integer_value(json_object_get(json_object_get(a, "timings"), "prompt_n"));
    size_t k = json_array_size(top);
    align_tok *e = calloc(k + 1, sizeof *e);
    int rc = e ? 0 : -1;
    size_t got = 0;
    for (; !rc && got < k; got++) rc = read_top(json_array_get(top, got), &e[got]);
    json_decref(a);
    if (rc || !k) {
        for (size_t j = 0; e && j < got; j++) free(e[j].b);
        free(e);
        if (rc) return proto_fail(err, 500, "internal", "out of memory");
        align_fail(s, err, 502, "member_error", "/completion returned no probabilities (is n_probs supported?)");
        return -1;
    }
    *out = e;
    *ne = k;
    return 0;
}

/* A chat rendered by the server's own template (/apply-template). */
static int llama_render_chat(member_session *s, const json_t *messages, sbuf *out, proto_error *err) {
    json_t *rendered;
    if (align_call(s->ms, s->idx, "/apply-template", json_pack("{s:O}", "messages", messages), s->timeout_s,
                   &rendered, err))
        return -1;
    const char *text = json_string_value(json_object_get(rendered, "prompt"));
    int rc = text ? sb_str(out, text) : -2;
    json_decref(rendered);
    if (rc == -2) {
        align_fail(s, err, 502, "member_error", "/apply-template gave no prompt");
        return -1;
    }
    return rc ? proto_fail(err, 500, "internal", "out of memory") : 0;
}

/* ---- scoring ---------------------------------------------------------------------- */

#define LL_SCORE_NPROBS 64 /* the list an entropy is estimated from when scoring */

/* Raw log-probability of token `next` after ctx[0..n): one forced step.
 * The entropy and top-1 come from the top LL_SCORE_NPROBS of the list (the
 * entropy is over the listed tokens: an estimate). */
static int llama_forced_logprob(member_session *s, const int *ctx, size_t n, int next, proto_score_tok *t,
                          proto_error *err) {
    json_t *prompt = json_array();
    for (size_t j = 0; j < n; j++) json_array_append_new(prompt, json_integer(ctx[j]));
    json_t *q = json_pack("{s:o, s:i, s:i, s:b, s:f, s:[[i,f]], s:[s]}", "prompt", prompt, "n_predict", 1, "n_probs",
                          LL_SCORE_NPROBS, "cache_prompt", 1, "temperature", 0.0, "logit_bias", next, 1000.0,
                          "samplers", "temperature");
    json_t *a;
    if (!q) return proto_fail(err, 500, "internal", "out of memory");
    if (align_call(s->ms, s->idx, "/completion", q, s->timeout_s, &a, err)) return -1;
    json_t *p = json_array_get(json_object_get(a, "completion_probabilities"), 0);
    int got = (int)json_integer_value(json_object_get(p, "id"));
    t->logprob = json_number_value(json_object_get(p, "logprob"));
    json_t *top = json_object_get(p, "top_logprobs");
    double h = 0;
    for (size_t j = 0; j < json_array_size(top); j++) {
        double lp = json_number_value(json_object_get(json_array_get(top, j), "logprob"));
        h -= exp(lp) * lp;
    }
    t->entropy = h;
    t->top1 = exp(json_number_value(json_object_get(json_array_get(top, 0), "logprob")));
    json_decref(a);
    if (got != next) {
        align_fail(s, err, 502, "member_error", "/completion did not take the forced token %d (got %d)", next, got);
        return -1;
    }
    return 0;
}

/* ---- connecting ------------------------------------------------------------------- */

static int ll_health(member_set *ms, size_t i, double timeout_s) {
    json_t *a = NULL;
    proto_error e;
    int up = align_call(ms, i, "/health", NULL, timeout_s, &a, &e) == 0 &&
             !strcmp(json_string_value(json_object_get(a, "status")) ? json_string_value(json_object_get(a, "status")) : "", "ok");
    json_decref(a);
    return up;
}

/* The id of one special token's text (parsed as special), or -1. */
static int special_id(member_session *s, const char *text) {
    if (!text || !text[0]) return -1;
    int *ids;
    size_t *ends;
    proto_error e;
    int k = ll_tokenize(s, text, strlen(text), 0, 1, &ids, &ends, NULL, &e);
    int id = k == 1 ? ids[0] : -1;
    if (k >= 0) free(ids), free(ends);
    return id;
}

static int ll_connect(member_set *ms, size_t i, double timeout_s, proto_info *info, json_t **keep, char *err,
                      size_t errlen) {
    json_t *props = NULL, *models = NULL;
    proto_error e;
    *keep = NULL;
    if (align_call(ms, i, "/props", NULL, timeout_s, &props, &e) || align_call(ms, i, "/v1/models", NULL, timeout_s, &models, &e)) {
        snprintf(err, errlen, "%s (is it a llama-server?)", e.message);
        json_decref(props);
        return -1;
    }
    json_t *meta = json_object_get(json_array_get(json_object_get(models, "data"), 0), "meta");
    member_session tmp = {.ms = ms, .idx = i, .timeout_s = timeout_s};
    memset(info, 0, sizeof *info);
    info->protocol = PROTO_VERSION;
    info->vocab_size = (int)json_integer_value(json_object_get(meta, "n_vocab"));
    info->n_ctx_train = (int)json_integer_value(json_object_get(meta, "n_ctx_train"));
    info->n_ctx = (int)json_integer_value(json_object_get(json_object_get(props, "default_generation_settings"), "n_ctx"));
    info->slots = (int)json_integer_value(json_object_get(props, "total_slots"));
    const char *tmpl = json_string_value(json_object_get(props, "chat_template"));
    info->has_chat_template = tmpl && tmpl[0];
    info->bos = special_id(&tmp, json_string_value(json_object_get(props, "bos_token")));
    info->eos = special_id(&tmp, json_string_value(json_object_get(props, "eos_token")));
    info->eot = -1;
    int *ids;
    size_t *ends;
    int k = ll_tokenize(&tmp, "a", 1, 1, 0, &ids, &ends, NULL, &e);
    if (k < 0) {
        snprintf(err, errlen, "%s", e.message);
        json_decref(props);
        json_decref(models);
        return -1;
    }
    info->add_bos = k > 1 && ids[0] == info->bos;
    free(ids), free(ends);
    info->doc_start = info->bos >= 0 ? info->bos : info->eos;
    json_t *kp = json_pack("{s:s, s:s, s:s}", "name", members_name(ms, i), "model",
                           json_string_value(json_object_get(props, "model_path"))
                               ? json_string_value(json_object_get(props, "model_path"))
                               : "",
                           "vocab", "unknown");
    json_decref(props);
    json_decref(models);
    if (!kp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    info->name = json_string_value(json_object_get(kp, "name"));
    info->model_path = json_string_value(json_object_get(kp, "model"));
    info->vocab_type = json_string_value(json_object_get(kp, "vocab"));
    *keep = kp;
    return 0;
}

static const align_backend llama_backend = {ll_tokenize, llama_next_list, llama_render_chat, llama_forced_logprob};

static void *ll_open(member_session *s) { return align_open(s, &llama_backend); }

const member_ops member_llama_ops = {
    "llama-server", ll_connect, ll_health, ll_open, align_step, align_score,
    align_step_result, align_score_result, align_close, align_free, 0, NULL, NULL,
};