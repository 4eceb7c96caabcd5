/* coordinator/engine/member_openai.c: the member operations (member.h) for
 * any OpenAI-compatible server that returns log-probabilities on
 * /v1/completions (vLLM, ollama, LM Studio, mlx-lm, llama-server's /v1,
 * another consort): SPEC openai+http://host:port/v1, with a local tokenizer
 * given by the user (--tokenizer NAME=PATH: tokenizer.h).
 *
 * Why it is shaped so. The OpenAI API has no tokenizer endpoint and no
 * sessions, so this kind is the alignment state machine of member_align.c
 * with a backend made of a local tokenizer and one endpoint:
 *
 *   - tokenizing, chat rendering: the local tokenizer (the model's chat
 *     template from a GGUF; ChatML otherwise, as llama-server does);
 *   - next-token lists: POST /completions with max_tokens 1, logprobs N,
 *     temperature 0, echo false; the prompt as token ids when the server
 *     takes them (the OpenAI API allows an array of ints; llama-server and
 *     vLLM do), else as the text the local tokenizer decodes them to (the
 *     server then re-tokenizes it: its tokens may differ from ours after a
 *     healed boundary, and the lists are then slightly off);
 *   - the list's entries: "id" and "bytes" where the server gives them
 *     (llama-server's /v1 does), else the token string looked up in the
 *     local vocabulary ("token_id:N" strings, vLLM's
 *     return_tokens_as_token_ids, are taken as ids); entries that match no
 *     token are dropped;
 *   - scoring: one /completions per token with that token forced by a
 *     logit_bias of +100 (the OpenAI maximum); servers that report the
 *     probabilities before their samplers (llama-server, vLLM's default)
 *     give the model's own probability.
 *
 * State, per member (members_kind_state): the tokenizer, a table from token
 * bytes to ids, the model's name, N (the largest of --member-nprobs, 20, 5
 * that the server accepts) and whether it takes token prompts; all found at
 * connect and read-only afterwards. Per session: member_align.c's.
 *
 * What may change: more answer formats; a server that returns prompt
 * logprobs with echo could score a text in one call.
 */
#include "coordinator/engine/member_align.h"

#include "common/log.h"
#include "common/sbuf.h"
#include "coordinator/engine/members.h"
#include "coordinator/engine/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OA_FORCE_BIAS 100.0 /* the OpenAI API's largest logit bias */

typedef struct {
    tokenizer *tok;
    int n_vocab;
    sbuf pieces;            /* every token's bytes, back to back */
    size_t *off;            /* n_vocab + 1 offsets into pieces */
    int *by_bytes;          /* ids sorted by their bytes (ties: larger id first) */
    char model[256];        /* the server's model name (sent as "model") */
    int nprobs;             /* logprobs N the server accepts */
    int token_prompt;       /* 1: prompts go as token ids */
} oa_member;

static oa_member *oa_of(member_session *s) { return members_kind_state(s->ms, s->idx); }

/* ---- the local vocabulary ---------------------------------------------------- */

static const oa_member *sort_ctx; /* qsort has no context argument; guarded by connect being single-threaded */

static int cmp_piece(const void *a, const void *b) {
    const oa_member *m = sort_ctx;
    int x = *(const int *)a, y = *(const int *)b;
    size_t nx = m->off[x + 1] - m->off[x], ny = m->off[y + 1] - m->off[y];
    int c = memcmp(m->pieces.p + m->off[x], m->pieces.p + m->off[y], nx < ny ? nx : ny);
    if (c) return c;
    if (nx != ny) return nx < ny ? -1 : 1;
    return x > y ? -1 : x < y; /* byte-fallback tokens come first in SentencePiece vocabularies */
}

/* Every token's bytes (control tokens as their text) and the sorted index. */
static int build_piece_table(oa_member *m) {
    m->off = malloc(((size_t)m->n_vocab + 1) * sizeof *m->off);
    m->by_bytes = malloc(((size_t)m->n_vocab + 1) * sizeof *m->by_bytes);
    if (!m->off || !m->by_bytes) return -1;
    for (int id = 0; id < m->n_vocab; id++) {
        m->off[id] = m->pieces.n;
        if (tokenizer_piece(m->tok, id, tokenizer_is_control(m->tok, id), &m->pieces)) return -1;
        m->by_bytes[id] = id;
    }
    m->off[m->n_vocab] = m->pieces.n;
    sort_ctx = m;
    qsort(m->by_bytes, (size_t)m->n_vocab, sizeof *m->by_bytes, cmp_piece);
    return 0;
}

/* The id whose bytes are b[0..n), or -1. */
static int id_of_bytes(const oa_member *m, const unsigned char *b, size_t n) {
    size_t lo = 0, hi = (size_t)m->n_vocab;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int id = m->by_bytes[mid];
        size_t pn = m->off[id + 1] - m->off[id];
        int c = memcmp(m->pieces.p + m->off[id], b, pn < n ? pn : n);
        if (!c) c = pn < n ? -1 : pn > n;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < (size_t)m->n_vocab) {
        int id = m->by_bytes[lo];
        if (m->off[id + 1] - m->off[id] == n && !memcmp(m->pieces.p + m->off[id], b, n)) return id;
    }
    return -1;
}

static void oa_member_free(void *p) {
    oa_member *m = p;
    if (!m) return;
    tokenizer_free(m->tok);
    free(m->pieces.p);
    free(m->off);
    free(m->by_bytes);
    free(m);
}

/* ---- tokenizing locally -------------------------------------------------------- */

/* align_backend.tokenize with the local tokenizer (same contract as the
 * server's /tokenize with pieces). */
static int oa_tokenize(member_session *s, const char *text, size_t n, int add_special, int parse_special, int **ids,
                       size_t **ends, sbuf *pieces, proto_error *err) {
    const oa_member *m = oa_of(s);
    *ids = NULL;
    *ends = NULL;
    int k = tokenizer_encode(m->tok, text, n, add_special, parse_special, ids);
    if (k < 0) return proto_fail(err, 400, "untokenizable", "the tokenizer cannot encode the text");
    *ends = malloc(((size_t)k + 1) * sizeof **ends);
    sbuf all = {0};
    int rc = *ends ? 0 : -1;
    for (int j = 0; !rc && j < k; j++) {
        rc = tokenizer_piece(m->tok, (*ids)[j], 1, &all);
        (*ends)[j] = all.n;
    }
    size_t shift = 0;
    if (!rc && !add_special && !parse_special && !(all.n == n && (!n || !memcmp(all.p, text, n)))) {
        if (all.n == n + 1 && all.p[0] == ' ' && !memcmp(all.p + 1, text, n)) shift = 1;
        else rc = -2;
    }
    for (int j = 0; !rc && j < k; j++) (*ends)[j] = (*ends)[j] >= shift ? (*ends)[j] - shift : 0;
    if (!rc && pieces) rc = sb_add(pieces, all.p ? all.p : "", all.n);
    free(all.p);
    if (rc) {
        free(*ids), free(*ends);
        *ids = NULL, *ends = NULL;
        if (rc == -2) return proto_fail(err, 400, "untokenizable", "the tokenizer's tokens do not spell the text");
        return proto_fail(err, 500, "internal", "out of memory");
    }
    return k;
}

static int oa_render_chat(member_session *s, const json_t *messages, sbuf *out, proto_error *err) {
    size_t n = json_array_size(messages);
    const char **roles = calloc(n + 1, sizeof *roles), **contents = calloc(n + 1, sizeof *contents);
    int rc = roles && contents ? 0 : proto_fail(err, 500, "internal", "out of memory");
    for (size_t j = 0; !rc && j < n; j++) {
        json_t *msg = json_array_get(messages, j);
        roles[j] = json_string_value(json_object_get(msg, "role"));
        contents[j] = json_string_value(json_object_get(msg, "content"));
        if (!roles[j] || !contents[j]) rc = proto_fail(err, 400, "bad_request", "a message without role or content");
    }
    char why[160];
    if (!rc && tokenizer_chat(oa_of(s)->tok, roles, contents, n, out, why, sizeof why))
        rc = proto_fail(err, 400, "bad_request", "%s", why);
    free(roles);
    free(contents);
    return rc;
}

/* ---- one /completions call ------------------------------------------------------ */

/* The request body of one next-token question after toks[0..n). */
static json_t *completion_body(member_session *s, const int *toks, size_t n, int nprobs, proto_error *err) {
    const oa_member *m = oa_of(s);
    json_t *prompt;
    if (m->token_prompt) {
        prompt = json_array();
        for (size_t j = 0; j < n; j++) json_array_append_new(prompt, json_integer(toks[j]));
    } else {
        sbuf text = {0};
        if (tokenizer_decode(m->tok, toks, n, &text)) {
            free(text.p);
            proto_fail(err, 400, "untokenizable", "the tokens cannot be written as text");
            return NULL;
        }
        prompt = json_stringn(text.p ? text.p : "", text.n);
        free(text.p);
        if (!prompt) {
            proto_fail(err, 400, "untokenizable", "the prompt is not valid UTF-8 (the server takes only text)");
            return NULL;
        }
    }
    json_t *q = json_pack("{s:s, s:o, s:i, s:i, s:f, s:b}", "model", m->model, "prompt", prompt, "max_tokens", 1,
                          "logprobs", nprobs, "temperature", 0.0, "echo", 0);
    if (!q) proto_fail(err, 500, "internal", "out of memory");
    return q;
}

/* The id of a listed token: its "id", else "token_id:N", else its bytes
 * (the "bytes" array, else the string) looked up in the vocabulary; -1. */
static int entry_id(const oa_member *m, const json_t *id, const json_t *bytes, const char *token, size_t token_n) {
    if (json_is_integer(id)) {
        json_int_t v = json_integer_value(id);
        return v >= 0 && v < m->n_vocab ? (int)v : -1;
    }
    if (token && !strncmp(token, "token_id:", 9)) {
        char *end;
        long v = strtol(token + 9, &end, 10);
        return *end || v < 0 || v >= m->n_vocab ? -1 : (int)v;
    }
    if (json_is_array(bytes)) {
        size_t k = json_array_size(bytes);
        unsigned char *b = malloc(k + 1);
        if (!b) return -1;
        for (size_t j = 0; j < k; j++) b[j] = (unsigned char)json_integer_value(json_array_get(bytes, j));
        int r = id_of_bytes(m, b, k);
        free(b);
        return r;
    }
    return token ? id_of_bytes(m, (const unsigned char *)token, token_n) : -1;
}

/* Appends (id, lp, the id's bytes; control tokens empty) to e. */
static int add_tok(const oa_member *m, align_tok *e, size_t *ne, int id, double lp) {
    if (id < 0) return 0;
    for (size_t j = 0; j < *ne; j++)
        if (e[j].id == id) return 0;
    align_tok *t = &e[*ne];
    int control = tokenizer_is_control(m->tok, id);
    size_t n = control ? 0 : m->off[id + 1] - m->off[id];
    t->b = malloc(n + 1);
    if (!t->b) return -1;
    if (n) memcpy(t->b, m->pieces.p + m->off[id], n);
    t->n = n;
    t->id = id;
    t->lp = lp;
    (*ne)++;
    return 0;
}

static int cmp_lp(const void *a, const void *b) {
    const align_tok *x = a, *y = b;
    return x->lp > y->lp ? -1 : x->lp < y->lp;
}

/* The top list of choices[0].logprobs in either answer format: entries
 * [{id?, token, bytes?, logprob}] under content[0].top_logprobs, or the
 * legacy {token: logprob} object under top_logprobs[0]. Sorted by lp. */
static int read_top_list(const oa_member *m, const json_t *lps, align_tok **out, size_t *ne) {
    const json_t *content = json_array_get(json_object_get(lps, "content"), 0);
    const json_t *arr = json_object_get(content, "top_logprobs");
    const json_t *legacy = json_array_get(json_object_get(lps, "top_logprobs"), 0);
    size_t cap = json_is_array(arr) ? json_array_size(arr) : json_object_size(legacy);
    align_tok *e = calloc(cap + 1, sizeof *e);
    if (!e) return -1;
    size_t n = 0;
    int rc = 0;
    if (json_is_array(arr)) {
        for (size_t j = 0; !rc && j < cap; j++) {
            const json_t *o = json_array_get(arr, j);
            const json_t *tk = json_object_get(o, "token");
            int id = entry_id(m, json_object_get(o, "id"), json_object_get(o, "bytes"), json_string_value(tk),
                              json_string_length(tk));
            rc = add_tok(m, e, &n, id, json_number_value(json_object_get(o, "logprob")));
        }
    } else {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)legacy, key, v) {
            if (rc) break;
            rc = add_tok(m, e, &n, entry_id(m, NULL, NULL, key, strlen(key)), json_number_value(v));
        }
    }
    if (rc) {
        for (size_t j = 0; j < n; j++) free(e[j].b);
        free(e);
        return -1;
    }
    qsort(e, n, sizeof *e, cmp_lp);
    *out = e;
    *ne = n;
    return 0;
}

/* Positions the server computed for the call (its cache aside). */
static int decoded_of(const json_t *a) {
    json_t *pn = json_object_get(json_object_get(a, "timings"), "prompt_n");
    if (json_is_integer(pn)) return (int)json_integer_value(pn);
    const json_t *u = json_object_get(a, "usage");
    int cached = (int)json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    return (int)json_integer_value(json_object_get(u, "prompt_tokens")) - cached;
}

static int oa_next_list(member_session *s, const int *toks, size_t n, align_tok **e, size_t *ne, int *decoded,
                        proto_error *err) {
    const oa_member *m = oa_of(s);
    json_t *q = completion_body(s, toks, n, m->nprobs, err), *a;
    if (!q || align_call(s->ms, s->idx, "/completions", q, s->timeout_s, &a, err)) return -1;
    const json_t *lps = json_object_get(json_array_get(json_object_get(a, "choices"), 0), "logprobs");
    *decoded += decoded_of(a);
    int rc = read_top_list(m, lps, e, ne);
    json_decref(a);
    if (rc) return proto_fail(err, 500, "internal", "out of memory");
    if (!*ne) {
        free(*e);
        *e = NULL;
        align_fail(s, err, 502, "member_error", "/completions returned no log-probabilities (are logprobs supported?)");
        return -1;
    }
    return 0;
}

/* ---- scoring ------------------------------------------------------------------------ */

/* log p(next | ctx): one /completions with next forced by a logit bias. */
static int oa_forced_logprob(member_session *s, const int *ctx, size_t n, int next, proto_score_tok *t,
                             proto_error *err) {
    const oa_member *m = oa_of(s);
    json_t *q = completion_body(s, ctx, n, m->nprobs, err), *a;
    if (!q) return -1;
    char key[16];
    snprintf(key, sizeof key, "%d", next);
    json_object_set_new(q, "logit_bias", json_pack("{s:f}", key, OA_FORCE_BIAS));
    if (align_call(s->ms, s->idx, "/completions", q, s->timeout_s, &a, err)) return -1;
    const json_t *lps = json_object_get(json_array_get(json_object_get(a, "choices"), 0), "logprobs");
    const json_t *c0 = json_array_get(json_object_get(lps, "content"), 0);
    const json_t *tk = c0 ? json_object_get(c0, "token") : json_array_get(json_object_get(lps, "tokens"), 0);
    int got = entry_id(m, c0 ? json_object_get(c0, "id") : NULL, c0 ? json_object_get(c0, "bytes") : NULL,
                       json_string_value(tk), json_string_length(tk));
    const json_t *lp = c0 ? json_object_get(c0, "logprob") : json_array_get(json_object_get(lps, "token_logprobs"), 0);
    t->logprob = json_is_number(lp) ? json_number_value(lp) : NAN;
    align_tok *e = NULL;
    size_t ne = 0;
    int rc = read_top_list(m, lps, &e, &ne);
    json_decref(a);
    if (rc) return proto_fail(err, 500, "internal", "out of memory");
    double h = 0;
    for (size_t j = 0; j < ne; j++) h -= exp(e[j].lp) * e[j].lp;
    t->entropy = h;
    t->top1 = ne ? exp(e[0].lp) : NAN;
    for (size_t j = 0; j < ne; j++) free(e[j].b);
    free(e);
    if (got != next || isnan(t->logprob)) {
        align_fail(s, err, 502, "member_error", "/completions did not take the forced token %d (got %d)", next, got);
        return -1;
    }
    return 0;
}

static const align_backend openai_backend = {oa_tokenize, oa_next_list, oa_render_chat, oa_forced_logprob};

static void *oa_open(member_session *s) { return align_open(s, &openai_backend); }

/* ---- connecting ------------------------------------------------------------------------ */

static int oa_health(member_set *ms, size_t i, double timeout_s) {
    json_t *a = NULL;
    proto_error e;
    int up = align_call(ms, i, "/models", NULL, timeout_s, &a, &e) == 0;
    json_decref(a);
    return up;
}

/* 1 if a one-token question with this prompt form and N answers with a
 * list; 0 if the server refuses it (a 4xx); -1 when it does not answer. */
static int probe(member_set *ms, size_t i, double timeout_s, oa_member *m, int token_prompt, int nprobs) {
    member_session tmp = {.ms = ms, .idx = i, .timeout_s = timeout_s};
    m->token_prompt = token_prompt;
    int toks[2] = {tokenizer_bos(m->tok), 0};
    int *ids;
    int k = tokenizer_encode(m->tok, "The", 3, 0, 0, &ids);
    if (k > 0) toks[1] = ids[0];
    if (k >= 0) free(ids);
    size_t n = toks[0] >= 0 && tokenizer_adds_bos(m->tok) ? 2 : 1;
    proto_error err;
    json_t *q = completion_body(&tmp, n == 2 ? toks : toks + 1, n, nprobs, &err), *a;
    if (!q) return 0;
    if (align_call(ms, i, "/completions", q, timeout_s, &a, &err)) return err.status == 0 ? -1 : 0;
    const json_t *lps = json_object_get(json_array_get(json_object_get(a, "choices"), 0), "logprobs");
    align_tok *e = NULL;
    size_t ne = 0;
    int ok = read_top_list(m, lps, &e, &ne) == 0 && ne > 0;
    for (size_t j = 0; j < ne; j++) free(e[j].b);
    free(e);
    json_decref(a);
    return ok;
}

/* How the server takes prompts and how many alternatives it returns. */
static int find_capabilities(member_set *ms, size_t i, double timeout_s, oa_member *m, char *err, size_t errlen) {
    int want = members_nprobs(ms);
    const int tries[] = {want, 20, 5, 1};
    for (int tp = 1; tp >= 0; tp--)
        for (size_t t = 0; t < sizeof tries / sizeof *tries; t++) {
            if (tries[t] > want) continue;
            int r = probe(ms, i, timeout_s, m, tp, tries[t]);
            if (r < 0) {
                snprintf(err, errlen, "member '%s' (%s): /completions did not answer", members_name(ms, i),
                         members_url(ms, i));
                return -1;
            }
            if (r) {
                m->nprobs = tries[t];
                return 0;
            }
        }
    snprintf(err, errlen,
             "member '%s' (%s): /completions returns no log-probabilities for any prompt form "
             "(an openai+ member needs logprobs on /v1/completions)",
             members_name(ms, i), members_url(ms, i));
    return -1;
}

static oa_member *load_member_tokenizer(member_set *ms, size_t i, char *err, size_t errlen) {
    const char *path = members_tokenizer(ms, i);
    if (!path) {
        snprintf(err, errlen,
                 "member '%s': an openai+ member needs its tokenizer: --tokenizer %s=PATH "
                 "(a GGUF file of the model, or its SentencePiece tokenizer.model)",
                 members_name(ms, i), members_name(ms, i));
        return NULL;
    }
    oa_member *m = calloc(1, sizeof *m);
    char why[400] = "";
    if (m) m->tok = tokenizer_load(path, why, sizeof why);
    if (!m || !m->tok) {
        snprintf(err, errlen, "member '%s': %s", members_name(ms, i), m ? why : "out of memory");
        oa_member_free(m);
        return NULL;
    }
    m->n_vocab = tokenizer_n_vocab(m->tok);
    if (m->n_vocab <= 0 || build_piece_table(m)) {
        snprintf(err, errlen, "member '%s': tokenizer %s has no usable vocabulary", members_name(ms, i), path);
        oa_member_free(m);
        return NULL;
    }
    return m;
}

/* The server's context size as its model entry says: max_model_len (vLLM),
 * meta.n_ctx (llama-server); 0 when unknown (then no context check before a
 * call, and `ppl` scores in windows of 4096 tokens). */
static int context_of(const json_t *model) {
    const json_t *v = json_object_get(model, "max_model_len");
    if (!json_is_integer(v)) v = json_object_get(json_object_get(model, "meta"), "n_ctx");
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    return n > 0 && n < (1 << 30) ? (int)n : 0;
}

static int oa_connect(member_set *ms, size_t i, double timeout_s, proto_info *info, json_t **keep, char *err,
                      size_t errlen) {
    *keep = NULL;
    oa_member *m = members_kind_state(ms, i);
    if (!m) {
        if (!(m = load_member_tokenizer(ms, i, err, errlen))) return -1;
        members_set_kind_state(ms, i, m, oa_member_free);
    }
    json_t *models;
    proto_error e;
    if (align_call(ms, i, "/models", NULL, timeout_s, &models, &e)) {
        snprintf(err, errlen, "%s (is it an OpenAI-compatible server? the URL ends in /v1)", e.message);
        return -1;
    }
    const json_t *d0 = json_array_get(json_object_get(models, "data"), 0);
    const char *id = json_string_value(json_object_get(d0, "id"));
    snprintf(m->model, sizeof m->model, "%s", id ? id : "");
    int n_ctx = context_of(d0);
    json_decref(models);
    if (find_capabilities(ms, i, timeout_s, m, err, errlen)) return -1;
    memset(info, 0, sizeof *info);
    info->protocol = PROTO_VERSION;
    info->vocab_size = m->n_vocab;
    info->bos = tokenizer_bos(m->tok);
    info->eos = tokenizer_eos(m->tok);
    info->eot = -1;
    info->add_bos = tokenizer_adds_bos(m->tok);
    info->doc_start = info->bos >= 0 ? info->bos : info->eos;
    info->has_chat_template = 1; /* rendered locally (ChatML when the tokenizer has no template) */
    info->slots = 1;
    info->n_ctx = n_ctx;
    json_t *kp = json_pack("{s:s, s:s, s:s}", "name", members_name(ms, i), "model", m->model, "vocab",
                           tokenizer_format(m->tok));
    if (!kp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    info->name = json_string_value(json_object_get(kp, "name"));
    info->model_path = json_string_value(json_object_get(kp, "model"));
    info->vocab_type = json_string_value(json_object_get(kp, "vocab"));
    *keep = kp;
    log_info("member '%s': %s, %d alternatives per list, prompts as %s", members_name(ms, i), m->model, m->nprobs,
             m->token_prompt ? "token ids" : "text");
    return 0;
}

const member_ops member_openai_ops = {
    "openai", oa_connect, oa_health, oa_open, align_step, align_score,
    align_step_result, align_score_result, align_close, align_free, 0, NULL, NULL,
};
