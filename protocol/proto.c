/* protocol/proto.c: the member protocol's JSON codec (see proto.h).
 *
 * Why it is shaped so. Every field name of docs/PROTOCOL.md is spelled in
 * this file and nowhere else in the code, so a change of the wire format is
 * a change here plus its test. Each message has an encoder (struct -> json_t)
 * and a decoder (json_t -> struct) written as a flat list of field reads; the
 * field helpers below (get_str, get_int, get_b64, ...) carry the whole
 * validation policy: absent or null means "default" for optional fields,
 * a wrong JSON type is 400 invalid_type, a value out of range is 400
 * invalid_value, base64 that does not decode is 400 invalid_base64. The
 * worker answers a bad request with exactly the proto_error a decoder filled,
 * so the rules are the same on both sides of the wire.
 *
 * State. None of its own. A decoded struct borrows strings from the json_t
 * it was decoded from and keeps everything it had to allocate (decoded
 * base64, arrays) in one "owned" list hung on its own_ field, so that
 * release is one loop whatever the message; proto_tokenize_res, whose
 * arrays are plain fields, frees them directly.
 *
 * Numbers. Log-probabilities of zero mass are written as null and read back
 * as -INFINITY; "not scored" values (score entropy, ...) are null <-> NAN.
 * Every non-finite double is written as null.
 *
 * What may change: new optional fields (add them to the struct with a
 * default that means "absent", and to both directions here); a new protocol
 * version bumps PROTO_VERSION and the /v1/info check.
 */
#include "protocol/proto.h"
#include "common/b64.h"
#include "common/utf8.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------- */

static int vfail(proto_error *err, int status, const char *code, const char *param,
                 const char *fmt, va_list ap) {
    if (!err) return -1;
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    return -1;
}

int proto_fail(proto_error *err, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, status, code, NULL, fmt, ap);
    va_end(ap);
    return -1;
}

/* A failure about one request field: param names it. */
static int field_fail(proto_error *err, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int field_fail(proto_error *err, const char *code, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, 400, code, param, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(proto_error *err) { return proto_fail(err, 500, PROTO_ERR_INTERNAL, "out of memory"); }

/* ---- owned allocations of a decoded struct ------------------------------- */

typedef struct owned {
    size_t n, cap;
    void *p[];
} owned;

/* Takes p into *own (frees p and returns -1 when the list cannot grow). */
static int own_keep(void **own, void *p) {
    owned *o = *own;
    if (!p) return -1;
    if (!o || o->n == o->cap) {
        size_t cap = o ? 2 * o->cap : 8;
        owned *q = realloc(o, sizeof *q + cap * sizeof q->p[0]);
        if (!q) {
            free(p);
            return -1;
        }
        if (!o) q->n = 0;
        q->cap = cap;
        *own = o = q;
    }
    o->p[o->n++] = p;
    return 0;
}

static void *own_alloc(void **own, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    return p && own_keep(own, p) == 0 ? p : NULL;
}

static void own_free(void **own) {
    owned *o = *own;
    if (o)
        for (size_t i = 0; i < o->n; i++) free(o->p[i]);
    free(o);
    *own = NULL;
}

/* ---- encoding helpers ---------------------------------------------------- */

/* Sets o[k] = v (stealing v); returns 1 when v is NULL or the set failed, so
 * that encoders can OR the results and check once. */
static int put(json_t *o, const char *k, json_t *v) {
    if (!v) return 1;
    return json_object_set_new(o, k, v) != 0;
}

static json_t *num_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }
static json_t *tok_or_null(int t) { return t >= 0 ? json_integer(t) : json_null(); }
static json_t *str_or_null(const char *s) { return s && *s ? json_string(s) : json_null(); }

static json_t *b64_json(proto_str s) {
    char *e = b64_encode(s.p ? (const void *)s.p : "", s.p ? s.n : 0);
    json_t *j = e ? json_string(e) : NULL;
    free(e);
    return j;
}

/* Returns o, or NULL (releasing o) when bad says an allocation failed. */
static json_t *finish(json_t *o, int bad) {
    if (bad || !o) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *proto_dumps(json_t *o, size_t *len) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (len) *len = s ? strlen(s) : 0;
    return s;
}

/* ---- decoding helpers ---------------------------------------------------- */

/* Each reads o[k]: absent or null leaves *out (and fails with invalid_type
 * when required), a wrong type fails with invalid_type. */

static const json_t *field(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_bool(const json_t *o, const char *k, int *out, proto_error *err) {
    const json_t *v = field(o, k);
    if (!v) return 0;
    if (!json_is_boolean(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return 0;
}

static int get_str(const json_t *o, const char *k, int required, const char **out, size_t *len,
                   proto_error *err) {
    const json_t *v = field(o, k);
    if (!v && !required) return 0;
    if (!v || !json_is_string(v))
        return field_fail(err, PROTO_ERR_INVALID_TYPE, k, required ? "'%s' (a string) is required" : "'%s' must be a string", k);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

static int int_in(const json_t *v, const char *what, long long lo, long long hi, int *out,
                  proto_error *err) {
    if (!json_is_integer(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, what, "'%s' must be an integer", what);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return field_fail(err, PROTO_ERR_INVALID_VALUE, what, "'%s' must be in [%lld, %lld]", what, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_int(const json_t *o, const char *k, int required, long long lo, long long hi, int *out,
                   proto_error *err) {
    const json_t *v = field(o, k);
    if (!v && !required) return 0;
    if (!v) return field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' (an integer) is required", k);
    return int_in(v, k, lo, hi, out, err);
}

/* A token id or null (-1). */
static int get_tok(const json_t *o, const char *k, int *out, proto_error *err) {
    *out = -1;
    return get_int(o, k, 0, 0, INT_MAX, out, err);
}

/* A number or null (null_value); required means the key must be present. */
static int num_in(const json_t *v, const char *what, double null_value, double *out, proto_error *err) {
    if (!v || json_is_null(v)) {
        *out = null_value;
        return 0;
    }
    if (!json_is_number(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, what, "'%s' must be a number or null", what);
    *out = json_number_value(v);
    return 0;
}

static int get_num(const json_t *o, const char *k, int required, double null_value, double *out,
                   proto_error *err) {
    const json_t *v = json_object_get(o, k);
    if (!v && required) return field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' (a number or null) is required", k);
    return num_in(v, k, null_value, out, err);
}

/* Decodes the base64 string v into *out (kept in *own). */
static int b64_in(const json_t *v, const char *what, void **own, proto_str *out, proto_error *err) {
    if (!json_is_string(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, what, "'%s' must be a base64 string", what);
    const char *t = json_string_value(v);
    size_t n = 0;
    if (strlen(t) != json_string_length(v)) /* an embedded NUL */
        return field_fail(err, PROTO_ERR_INVALID_BASE64, what, "'%s' is not valid base64", what);
    unsigned char *b = b64_decode(t, &n);
    if (!b) return field_fail(err, PROTO_ERR_INVALID_BASE64, what, "'%s' is not valid base64", what);
    if (own_keep(own, b) != 0) return oom(err);
    *out = (proto_str){b, n};
    return 0;
}

static int get_b64(const json_t *o, const char *k, int required, void **own, proto_str *out,
                   proto_error *err) {
    const json_t *v = field(o, k);
    if (!v && !required) return 0;
    if (!v) return field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' (a base64 string) is required", k);
    return b64_in(v, k, own, out, err);
}

/* o[k] as an array (required); *n gets its size. */
static const json_t *get_array(const json_t *o, const char *k, int required, size_t *n, proto_error *err) {
    const json_t *v = field(o, k);
    *n = 0;
    if (!v && !required) return NULL;
    if (!v || !json_is_array(v)) {
        field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' must be an array", k);
        return NULL;
    }
    *n = json_array_size(v);
    return v;
}

static int not_object(const json_t *o, proto_error *err) {
    if (json_is_object(o)) return 0;
    return proto_fail(err, 400, PROTO_ERR_INVALID_JSON, "the body must be a JSON object");
}

static void zero_err(proto_error *err) {
    if (err) memset(err, 0, sizeof *err);
}

/* ---- errors on the wire -------------------------------------------------- */

json_t *proto_error_encode(const proto_error *err) {
    const char *type = err->status >= 500 ? "server_error" : "invalid_request_error";
    json_t *e = json_object(), *o = json_object();
    int bad = !e || !o;
    if (!bad) {
        json_t *msg = json_string(err->message);
        bad |= put(e, "message", msg ? msg : json_string("(unprintable error message)"));
        bad |= put(e, "type", json_string(type));
        bad |= put(e, "code", str_or_null(err->code));
        if (err->param[0]) bad |= put(e, "param", json_string(err->param));
        bad |= put(o, "error", e);
        e = NULL;
    }
    json_decref(e);
    return finish(o, bad);
}

int proto_error_decode(const json_t *o, int status, proto_error *err) {
    zero_err(err);
    const json_t *e = json_is_object(o) ? json_object_get(o, "error") : NULL;
    if (!json_is_object(e))
        return proto_fail(err, status, PROTO_ERR_INVALID_RESPONSE, "the answer (status %d) is not an error object", status);
    const json_t *m = json_object_get(e, "message"), *c = json_object_get(e, "code"),
                 *p = json_object_get(e, "param");
    err->status = status;
    snprintf(err->message, sizeof err->message, "%s", json_is_string(m) ? json_string_value(m) : "(no message)");
    snprintf(err->code, sizeof err->code, "%s", json_is_string(c) ? json_string_value(c) : "");
    snprintf(err->param, sizeof err->param, "%s", json_is_string(p) ? json_string_value(p) : "");
    return 0;
}

int proto_session_id_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > PROTO_SESSION_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- GET /health --------------------------------------------------------- */

json_t *proto_health_encode(const proto_health *h) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "status", json_string(h->status ? h->status : "ok"));
        bad |= put(o, "name", json_string(h->name ? h->name : ""));
        bad |= put(o, "slots_in_use", json_integer(h->slots_in_use));
        bad |= put(o, "slots", json_integer(h->slots));
    }
    return finish(o, bad);
}

int proto_health_decode(const json_t *o, proto_health *h, proto_error *err) {
    memset(h, 0, sizeof *h);
    zero_err(err);
    if (not_object(o, err) || get_str(o, "status", 1, &h->status, NULL, err) ||
        get_str(o, "name", 0, &h->name, NULL, err) ||
        get_int(o, "slots_in_use", 0, 0, INT_MAX, &h->slots_in_use, err) ||
        get_int(o, "slots", 0, 0, INT_MAX, &h->slots, err)) {
        memset(h, 0, sizeof *h);
        return -1;
    }
    return 0;
}

/* ---- GET /v1/info -------------------------------------------------------- */

json_t *proto_info_encode(const proto_info *in) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "name", json_string(in->name ? in->name : ""));
        bad |= put(o, "model_path", json_string(in->model_path ? in->model_path : ""));
        bad |= put(o, "vocab_size", json_integer(in->vocab_size));
        bad |= put(o, "vocab_type", json_string(in->vocab_type ? in->vocab_type : "none"));
        bad |= put(o, "bos", tok_or_null(in->bos));
        bad |= put(o, "eos", tok_or_null(in->eos));
        bad |= put(o, "eot", tok_or_null(in->eot));
        bad |= put(o, "add_bos", json_boolean(in->add_bos));
        bad |= put(o, "doc_start", json_integer(in->doc_start));
        bad |= put(o, "space_prefix", json_boolean(in->space_prefix));
        bad |= put(o, "n_ctx", json_integer(in->n_ctx));
        bad |= put(o, "n_ctx_train", json_integer(in->n_ctx_train));
        bad |= put(o, "has_chat_template", json_boolean(in->has_chat_template));
        bad |= put(o, "slots", json_integer(in->slots));
        bad |= put(o, "protocol", json_integer(in->protocol));
    }
    return finish(o, bad);
}

static int info_fields(const json_t *o, proto_info *in, proto_error *err) {
    return get_str(o, "name", 0, &in->name, NULL, err) || get_str(o, "model_path", 0, &in->model_path, NULL, err) ||
           get_int(o, "vocab_size", 1, 1, INT_MAX, &in->vocab_size, err) ||
           get_str(o, "vocab_type", 0, &in->vocab_type, NULL, err) || get_tok(o, "bos", &in->bos, err) ||
           get_tok(o, "eos", &in->eos, err) || get_tok(o, "eot", &in->eot, err) ||
           get_bool(o, "add_bos", &in->add_bos, err) ||
           get_int(o, "doc_start", 0, -1, INT_MAX, &in->doc_start, err) ||
           get_bool(o, "space_prefix", &in->space_prefix, err) ||
           get_int(o, "n_ctx", 0, 0, INT_MAX, &in->n_ctx, err) ||
           get_int(o, "n_ctx_train", 0, 0, INT_MAX, &in->n_ctx_train, err) ||
           get_bool(o, "has_chat_template", &in->has_chat_template, err) ||
           get_int(o, "slots", 0, 0, INT_MAX, &in->slots, err);
}

int proto_info_decode(const json_t *o, proto_info *in, proto_error *err) {
    memset(in, 0, sizeof *in);
    in->bos = in->eos = in->eot = in->doc_start = -1;
    zero_err(err);
    if (not_object(o, err)) return -1;
    const json_t *p = json_object_get(o, "protocol");
    if (!json_is_integer(p) || json_integer_value(p) != PROTO_VERSION) {
        proto_fail(err, 409, PROTO_ERR_PROTOCOL_MISMATCH, "incompatible member: protocol %s (this build speaks %d)",
                   json_is_integer(p) ? "other than this one" : "missing", PROTO_VERSION);
        return -1;
    }
    in->protocol = PROTO_VERSION;
    if (info_fields(o, in, err)) {
        memset(in, 0, sizeof *in);
        return -1;
    }
    return 0;
}

/* ---- GET /v1/vocab ------------------------------------------------------- */

static const char *const kind_names[] = {"normal", "control", "byte", "user", "unknown", "unused"};

static const char *known_kind(const char *s) {
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (!strcmp(s, kind_names[i])) return kind_names[i];
    return NULL;
}

json_t *proto_vocab_encode(const proto_vocab *v) {
    json_t *o = json_object(), *toks = json_array(), *kinds = json_array();
    int bad = !o || !toks || !kinds;
    for (int i = 0; !bad && i < v->vocab_size; i++) {
        bad |= json_array_append_new(toks, b64_json(v->tokens[i])) != 0;
        bad |= json_array_append_new(kinds, json_string(v->kinds[i] ? v->kinds[i] : "normal")) != 0;
    }
    if (!bad) {
        bad |= put(o, "vocab_size", json_integer(v->vocab_size));
        bad |= put(o, "tokens_b64", json_incref(toks));
        bad |= put(o, "kinds", json_incref(kinds));
    }
    json_decref(toks);
    json_decref(kinds);
    return finish(o, bad);
}

static int vocab_entries(const json_t *ta, const json_t *ka, proto_vocab *v, proto_error *err) {
    for (int i = 0; i < v->vocab_size; i++) {
        char what[40];
        snprintf(what, sizeof what, "tokens_b64[%d]", i);
        if (b64_in(json_array_get(ta, (size_t)i), what, &v->own_, &v->tokens[i], err)) return -1;
        const json_t *k = json_array_get(ka, (size_t)i);
        v->kinds[i] = json_is_string(k) ? known_kind(json_string_value(k)) : NULL;
        if (!v->kinds[i]) return field_fail(err, PROTO_ERR_INVALID_VALUE, "kinds", "kinds[%d] is not a token kind", i);
    }
    return 0;
}

int proto_vocab_decode(const json_t *o, proto_vocab *v, proto_error *err) {
    memset(v, 0, sizeof *v);
    zero_err(err);
    size_t nt = 0, nk = 0;
    const json_t *ta = NULL, *ka = NULL;
    if (not_object(o, err) || get_int(o, "vocab_size", 1, 0, INT_MAX, &v->vocab_size, err) ||
        !(ta = get_array(o, "tokens_b64", 1, &nt, err)) || !(ka = get_array(o, "kinds", 1, &nk, err)))
        goto fail;
    if (nt != (size_t)v->vocab_size || nk != (size_t)v->vocab_size) {
        field_fail(err, PROTO_ERR_INVALID_VALUE, "vocab_size", "'tokens_b64' and 'kinds' must have vocab_size (%d) entries",
                   v->vocab_size);
        goto fail;
    }
    v->tokens = own_alloc(&v->own_, nt, sizeof *v->tokens);
    v->kinds = own_alloc(&v->own_, nt, sizeof *v->kinds);
    if (!v->tokens || !v->kinds) {
        oom(err);
        goto fail;
    }
    if (vocab_entries(ta, ka, v, err)) goto fail;
    return 0;
fail:
    proto_vocab_release(v);
    return -1;
}

void proto_vocab_release(proto_vocab *v) {
    if (!v) return;
    own_free(&v->own_);
    memset(v, 0, sizeof *v);
}

/* ---- POST /v1/tokenize --------------------------------------------------- */

json_t *proto_tokenize_req_encode(const proto_tokenize_req *q) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "text", json_stringn(q->text ? q->text : "", q->text ? q->text_len : 0));
        bad |= put(o, "add_special", json_boolean(q->add_special));
        bad |= put(o, "parse_special", json_boolean(q->parse_special));
    }
    return finish(o, bad);
}

int proto_tokenize_req_decode(const json_t *o, proto_tokenize_req *q, proto_error *err) {
    memset(q, 0, sizeof *q);
    zero_err(err);
    if (not_object(o, err) || get_str(o, "text", 1, &q->text, &q->text_len, err) ||
        get_bool(o, "add_special", &q->add_special, err) || get_bool(o, "parse_special", &q->parse_special, err)) {
        memset(q, 0, sizeof *q);
        return -1;
    }
    return 0;
}

json_t *proto_tokenize_res_encode(const proto_tokenize_res *r) {
    json_t *o = json_object(), *ta = json_array(), *sa = r->spans ? json_array() : json_null();
    int bad = !o || !ta || !sa;
    for (size_t i = 0; !bad && i < r->n; i++) {
        bad |= json_array_append_new(ta, json_integer(r->tokens[i])) != 0;
        if (r->spans)
            bad |= json_array_append_new(sa, json_pack("[I, I]", (json_int_t)r->spans[2 * i],
                                                       (json_int_t)r->spans[2 * i + 1])) != 0;
    }
    if (!bad) {
        bad |= put(o, "tokens", json_incref(ta));
        bad |= put(o, "spans", json_incref(sa));
    }
    json_decref(ta);
    json_decref(sa);
    return finish(o, bad);
}

static int span_in(const json_t *v, size_t i, size_t *se, proto_error *err) {
    const json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(a) || !json_is_integer(b) ||
        json_integer_value(a) < 0 || json_integer_value(b) < json_integer_value(a))
        return field_fail(err, PROTO_ERR_INVALID_VALUE, "spans", "spans[%zu] must be [start, end] with 0 <= start <= end", i);
    se[0] = (size_t)json_integer_value(a);
    se[1] = (size_t)json_integer_value(b);
    return 0;
}

int proto_tokenize_res_decode(const json_t *o, proto_tokenize_res *r, proto_error *err) {
    memset(r, 0, sizeof *r);
    zero_err(err);
    size_t n = 0, ns = 0;
    const json_t *ta = NULL, *sa = NULL;
    if (not_object(o, err) || !(ta = get_array(o, "tokens", 1, &n, err))) goto fail;
    sa = get_array(o, "spans", 0, &ns, err);
    if (!sa && json_object_get(o, "spans") && !json_is_null(json_object_get(o, "spans"))) goto fail;
    if (sa && ns != n) {
        field_fail(err, PROTO_ERR_INVALID_VALUE, "spans", "'spans' must have one entry per token");
        goto fail;
    }
    r->tokens = calloc(n ? n : 1, sizeof *r->tokens);
    r->spans = sa ? calloc(2 * (n ? n : 1), sizeof *r->spans) : NULL;
    if (!r->tokens || (sa && !r->spans)) {
        oom(err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof what, "tokens[%zu]", i);
        if (int_in(json_array_get(ta, i), what, 0, INT_MAX, &r->tokens[i], err)) goto fail;
        if (sa && span_in(json_array_get(sa, i), i, &r->spans[2 * i], err)) goto fail;
    }
    r->n = n;
    return 0;
fail:
    proto_tokenize_res_release(r);
    return -1;
}

void proto_tokenize_res_release(proto_tokenize_res *r) {
    if (!r) return;
    free(r->tokens);
    free(r->spans);
    memset(r, 0, sizeof *r);
}

/* ---- POST /v1/detokenize ------------------------------------------------- */

json_t *proto_detokenize_req_encode(const proto_detokenize_req *q) {
    json_t *o = json_object(), *ta = json_array();
    int bad = !o || !ta;
    for (size_t i = 0; !bad && i < q->n; i++) bad |= json_array_append_new(ta, json_integer(q->tokens[i])) != 0;
    if (!bad) {
        bad |= put(o, "tokens", json_incref(ta));
        bad |= put(o, "strip_space_prefix", json_boolean(q->strip_space_prefix));
    }
    json_decref(ta);
    return finish(o, bad);
}

int proto_detokenize_req_decode(const json_t *o, int vocab_size, proto_detokenize_req *q, proto_error *err) {
    memset(q, 0, sizeof *q);
    zero_err(err);
    size_t n = 0;
    const json_t *ta = NULL;
    if (not_object(o, err)) goto fail;
    if (!(ta = get_array(o, "tokens", 1, &n, err))) {
        field_fail(err, PROTO_ERR_INVALID_TYPE, "tokens", "'tokens' must be an array of token ids");
        goto fail;
    }
    int *t = own_alloc(&q->own_, n, sizeof *t);
    if (!t) {
        oom(err);
        goto fail;
    }
    long long hi = vocab_size > 0 ? vocab_size - 1 : INT_MAX;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(ta, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > hi) {
            field_fail(err, PROTO_ERR_INVALID_VALUE, "tokens", "tokens[%zu] is not a token id in [0, %lld)", i, hi + 1);
            goto fail;
        }
        t[i] = (int)json_integer_value(v);
    }
    q->tokens = t;
    q->n = n;
    if (get_bool(o, "strip_space_prefix", &q->strip_space_prefix, err)) goto fail;
    return 0;
fail:
    proto_detokenize_req_release(q);
    return -1;
}

void proto_detokenize_req_release(proto_detokenize_req *q) {
    if (!q) return;
    own_free(&q->own_);
    memset(q, 0, sizeof *q);
}

json_t *proto_detokenize_res_encode(const proto_detokenize_res *r) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "text_b64", b64_json(r->text));
        if (utf8_valid((const char *)(r->text.p ? r->text.p : (const unsigned char *)""), r->text.p ? r->text.n : 0))
            bad |= put(o, "text", json_stringn(r->text.p ? (const char *)r->text.p : "", r->text.p ? r->text.n : 0));
    }
    return finish(o, bad);
}

int proto_detokenize_res_decode(const json_t *o, proto_detokenize_res *r, proto_error *err) {
    memset(r, 0, sizeof *r);
    zero_err(err);
    if (not_object(o, err) || get_b64(o, "text_b64", 1, &r->own_, &r->text, err)) {
        proto_detokenize_res_release(r);
        return -1;
    }
    return 0;
}

void proto_detokenize_res_release(proto_detokenize_res *r) {
    if (!r) return;
    own_free(&r->own_);
    memset(r, 0, sizeof *r);
}

/* ---- POST /v1/step: request ---------------------------------------------- */

static json_t *messages_json(const proto_msg *m, size_t n) {
    json_t *a = json_array();
    int bad = !a;
    for (size_t i = 0; !bad && i < n; i++)
        bad |= json_array_append_new(a, json_pack("{s:s, s:s}", "role", m[i].role ? m[i].role : "",
                                                  "content", m[i].content ? m[i].content : "")) != 0;
    return finish(a, bad);
}

static json_t *strs_b64_json(const proto_str *s, size_t n) {
    json_t *a = json_array();
    int bad = !a;
    for (size_t i = 0; !bad && i < n; i++) bad |= json_array_append_new(a, b64_json(s[i])) != 0;
    return finish(a, bad);
}

json_t *proto_step_req_encode(const proto_step_req *q) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "session", json_string(q->session ? q->session : ""));
        if (q->prompt) bad |= put(o, "prompt", json_stringn(q->prompt, q->prompt_len));
        if (q->n_messages) bad |= put(o, "messages", messages_json(q->messages, q->n_messages));
        if (q->heal_prompt) bad |= put(o, "heal_prompt", json_true());
        if (q->append.n) bad |= put(o, "append_b64", b64_json(q->append));
        bad |= put(o, "k", json_integer(q->k));
        if (q->n_cands) bad |= put(o, "candidates_b64", strs_b64_json(q->cands, q->n_cands));
        if (q->n_steps) bad |= put(o, "steps_b64", strs_b64_json(q->steps, q->n_steps));
        if (q->draft) bad |= put(o, "draft", json_integer(q->draft));
        if (q->n_draft_steps) bad |= put(o, "draft_b64", strs_b64_json(q->draft_steps, q->n_draft_steps));
        if (q->next_bytes) bad |= put(o, "next_bytes", json_integer(q->next_bytes));
    }
    return finish(o, bad);
}

static int step_session(const json_t *o, proto_step_req *q, proto_error *err) {
    const json_t *v = field(o, "session");
    if (!json_is_string(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, "session", "'session' (a string) is required");
    q->session = json_string_value(v);
    if (!proto_session_id_ok(q->session) || strlen(q->session) != json_string_length(v))
        return field_fail(err, PROTO_ERR_INVALID_VALUE, "session", "'session' must be 1-%d characters of [A-Za-z0-9_.:-]",
                          PROTO_SESSION_MAX);
    return 0;
}

static int step_messages(const json_t *ms, proto_step_req *q, proto_error *err) {
    size_t n = json_is_array(ms) ? json_array_size(ms) : 0;
    if (n == 0)
        return field_fail(err, PROTO_ERR_INVALID_TYPE, "messages", "'messages' must be a non-empty array of {role, content}");
    proto_msg *m = own_alloc(&q->own_, n, sizeof *m);
    if (!m) return oom(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *mi = json_array_get(ms, i);
        const json_t *role = json_object_get(mi, "role"), *content = json_object_get(mi, "content");
        if (!json_is_object(mi) || !json_is_string(role) || !json_is_string(content))
            return field_fail(err, PROTO_ERR_INVALID_TYPE, "messages",
                              "messages[%zu] must be {\"role\": string, \"content\": string}", i);
        if (strlen(json_string_value(content)) != json_string_length(content) ||
            strlen(json_string_value(role)) != json_string_length(role))
            return field_fail(err, PROTO_ERR_INVALID_VALUE, "messages", "messages[%zu] contains a NUL character", i);
        m[i] = (proto_msg){json_string_value(role), json_string_value(content)};
    }
    q->messages = m;
    q->n_messages = n;
    return 0;
}

static int step_prompt(const json_t *o, proto_step_req *q, proto_error *err) {
    const json_t *p = field(o, "prompt"), *ms = field(o, "messages");
    if (p && ms) return field_fail(err, PROTO_ERR_INVALID_REQUEST, "prompt", "give 'prompt' or 'messages', not both");
    if (p && get_str(o, "prompt", 0, &q->prompt, &q->prompt_len, err)) return -1;
    if (ms && step_messages(ms, q, err)) return -1;
    return 0;
}

/* An optional array of at most max base64 strings under key k. */
static int b64_list(const json_t *o, const char *k, size_t max, proto_step_req *q, const proto_str **out,
                    size_t *nout, proto_error *err) {
    const json_t *v = field(o, k);
    if (!v) return 0;
    if (!json_is_array(v)) return field_fail(err, PROTO_ERR_INVALID_TYPE, k, "'%s' must be an array of base64 strings", k);
    size_t n = json_array_size(v);
    if (n > max) return field_fail(err, PROTO_ERR_INVALID_VALUE, k, "at most %zu entries in '%s'", max, k);
    proto_str *c = own_alloc(&q->own_, n, sizeof *c);
    if (!c) return oom(err);
    for (size_t i = 0; i < n; i++) {
        char what[40];
        snprintf(what, sizeof what, "%s[%zu]", k, i);
        if (b64_in(json_array_get(v, i), what, &q->own_, &c[i], err)) {
            snprintf(err->param, sizeof err->param, "%s", k);
            return -1;
        }
    }
    *out = c;
    *nout = n;
    return 0;
}

static int step_candidates(const json_t *o, proto_step_req *q, proto_error *err) {
    return b64_list(o, "candidates_b64", PROTO_MAX_CANDIDATES, q, &q->cands, &q->n_cands, err);
}

/* Every entry of a list of appends is non-empty. */
static int no_empty(const proto_str *s, size_t n, const char *k, proto_error *err) {
    for (size_t i = 0; i < n; i++)
        if (s[i].n == 0) return field_fail(err, PROTO_ERR_INVALID_VALUE, k, "%s[%zu] is empty", k, i);
    return 0;
}

/* The speculative fields: steps_b64, draft, and draft_b64 (not with draft). */
static int step_speculative(const json_t *o, proto_step_req *q, proto_error *err) {
    if (b64_list(o, "steps_b64", PROTO_MAX_STEPS, q, &q->steps, &q->n_steps, err) ||
        get_int(o, "draft", 0, 0, PROTO_MAX_DRAFT, &q->draft, err) ||
        b64_list(o, "draft_b64", PROTO_MAX_DRAFT, q, &q->draft_steps, &q->n_draft_steps, err) ||
        no_empty(q->steps, q->n_steps, "steps_b64", err) ||
        no_empty(q->draft_steps, q->n_draft_steps, "draft_b64", err))
        return -1;
    if (q->draft && q->n_draft_steps)
        return field_fail(err, PROTO_ERR_INVALID_REQUEST, "draft_b64", "give 'draft' or 'draft_b64', not both");
    return 0;
}

int proto_step_req_decode(const json_t *o, proto_step_req *q, proto_error *err) {
    memset(q, 0, sizeof *q);
    q->k = PROTO_DEFAULT_K;
    zero_err(err);
    if (not_object(o, err) || step_session(o, q, err) || step_prompt(o, q, err) ||
        get_bool(o, "heal_prompt", &q->heal_prompt, err) ||
        get_b64(o, "append_b64", 0, &q->own_, &q->append, err) ||
        get_int(o, "k", 0, 0, PROTO_MAX_K, &q->k, err) || step_candidates(o, q, err) ||
        step_speculative(o, q, err) || get_int(o, "next_bytes", 0, 0, PROTO_MAX_NEXT_BYTES, &q->next_bytes, err)) {
        proto_step_req_release(q);
        return -1;
    }
    return 0;
}

void proto_step_req_release(proto_step_req *q) {
    if (!q) return;
    own_free(&q->own_);
    memset(q, 0, sizeof *q);
}

/* ---- POST /v1/step: answer ----------------------------------------------- */

json_t *proto_step_res_encode(const proto_step_res *r) {
    json_t *o = json_object(), *top = json_array(), *ca = json_array();
    int bad = !o || !top || !ca;
    for (size_t i = 0; !bad && i < r->n_top; i++) {
        json_t *t = json_object();
        int tb = !t || put(t, "s_b64", b64_json(r->top[i].s)) || put(t, "logq", num_or_null(r->top[i].logq)) ||
                 (!isnan(r->top[i].logp) && put(t, "logp", num_or_null(r->top[i].logp)));
        bad |= tb || json_array_append_new(top, t) != 0;
        if (tb) json_decref(t);
    }
    for (size_t i = 0; !bad && i < r->n_cands; i++) bad |= json_array_append_new(ca, num_or_null(r->cand_logq[i])) != 0;
    if (!bad) {
        if (r->session) bad |= put(o, "session", json_string(r->session));
        bad |= put(o, "n_past", json_integer(r->n_past));
        bad |= put(o, "residue_b64", b64_json(r->residue));
        bad |= put(o, "decoded", json_integer(r->decoded));
        bad |= put(o, "top", json_incref(top));
        bad |= put(o, "candidates", json_incref(ca));
        bad |= put(o, "end_logq", num_or_null(r->end_logq));
    }
    if (!bad && r->n_next_bytes) {
        json_t *nb = json_array();
        bad |= !nb;
        for (size_t i = 0; !bad && i < r->n_next_bytes; i++)
            bad |= json_array_append_new(nb, num_or_null(r->next_bytes[i])) != 0;
        bad |= put(o, "next_bytes", nb);
    }
    if (!bad && r->n_draft) {
        json_t *da = json_array();
        bad |= !da;
        for (size_t i = 0; !bad && i < r->n_draft; i++) {
            json_t *d = proto_step_res_encode(&r->draft[i]);
            bad |= !d || json_array_append_new(da, d) != 0;
        }
        bad |= put(o, "draft", da);
    }
    json_decref(top);
    json_decref(ca);
    return finish(o, bad);
}

static int step_top(const json_t *ta, size_t n, proto_step_res *r, proto_error *err) {
    proto_top *t = own_alloc(&r->own_, n, sizeof *t);
    if (!t) return oom(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(ta, i);
        if (!json_is_object(e)) return field_fail(err, PROTO_ERR_INVALID_TYPE, "top", "top[%zu] must be an object", i);
        t[i].logp = NAN; /* absent: an older worker */
        if (get_b64(e, "s_b64", 1, &r->own_, &t[i].s, err) || get_num(e, "logq", 1, -INFINITY, &t[i].logq, err) ||
            (json_object_get(e, "logp") && get_num(e, "logp", 0, -INFINITY, &t[i].logp, err)))
            return -1;
    }
    r->top = t;
    r->n_top = n;
    return 0;
}

static int step_cands(const json_t *ca, size_t n, proto_step_res *r, proto_error *err) {
    double *c = own_alloc(&r->own_, n, sizeof *c);
    if (!c) return oom(err);
    for (size_t i = 0; i < n; i++)
        if (num_in(json_array_get(ca, i), "candidates", -INFINITY, &c[i], err)) return -1;
    r->cand_logq = c;
    r->n_cands = n;
    return 0;
}

/* "next_bytes": absent, or exactly PROTO_NEXT_BYTES numbers or nulls. */
static int step_next_bytes(const json_t *o, proto_step_res *r, proto_error *err) {
    const json_t *nb = field(o, "next_bytes");
    if (!nb) return 0;
    if (!json_is_array(nb) || json_array_size(nb) != PROTO_NEXT_BYTES)
        return field_fail(err, PROTO_ERR_INVALID_TYPE, "next_bytes", "'next_bytes' must be an array of %d numbers",
                          PROTO_NEXT_BYTES);
    double *v = own_alloc(&r->own_, PROTO_NEXT_BYTES, sizeof *v);
    if (!v) return oom(err);
    for (size_t i = 0; i < PROTO_NEXT_BYTES; i++)
        if (num_in(json_array_get(nb, i), "next_bytes", -INFINITY, &v[i], err)) return -1;
    r->next_bytes = v;
    r->n_next_bytes = PROTO_NEXT_BYTES;
    return 0;
}

static int step_res_fields(const json_t *o, proto_step_res *r, proto_error *err);

/* "draft": the answers after each drafted step (no deeper drafts). */
static int step_draft(const json_t *o, proto_step_res *r, proto_error *err) {
    size_t n = 0;
    const json_t *da = field(o, "draft");
    if (!da) return 0;
    if (!json_is_array(da) || (n = json_array_size(da)) > PROTO_MAX_DRAFT)
        return field_fail(err, PROTO_ERR_INVALID_TYPE, "draft", "'draft' must be an array of at most %d answers",
                          PROTO_MAX_DRAFT);
    proto_step_res *d = own_alloc(&r->own_, n ? n : 1, sizeof *d);
    if (!d) return oom(err);
    r->draft = d;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(da, i);
        if (step_res_fields(e, &d[i], err)) return -1;
        r->n_draft = i + 1;
        if (field(e, "draft")) return field_fail(err, PROTO_ERR_INVALID_VALUE, "draft", "draft[%zu] has a draft", i);
    }
    return 0;
}

int proto_step_res_decode(const json_t *o, proto_step_res *r, proto_error *err) {
    if (step_res_fields(o, r, err)) return -1;
    if (step_draft(o, r, err)) {
        proto_step_res_release(r);
        return -1;
    }
    return 0;
}

static int step_res_fields(const json_t *o, proto_step_res *r, proto_error *err) {
    memset(r, 0, sizeof *r);
    r->end_logq = -INFINITY;
    zero_err(err);
    size_t nt = 0, nc = 0;
    const json_t *ta = NULL, *ca = NULL;
    if (not_object(o, err) || get_str(o, "session", 0, &r->session, NULL, err) ||
        get_int(o, "n_past", 1, 0, INT_MAX, &r->n_past, err) ||
        get_b64(o, "residue_b64", 1, &r->own_, &r->residue, err) ||
        get_int(o, "decoded", 0, 0, INT_MAX, &r->decoded, err) || !(ta = get_array(o, "top", 1, &nt, err)) ||
        !(ca = get_array(o, "candidates", 1, &nc, err)) || get_num(o, "end_logq", 1, -INFINITY, &r->end_logq, err) ||
        step_top(ta, nt, r, err) || step_cands(ca, nc, r, err) || step_next_bytes(o, r, err)) {
        proto_step_res_release(r);
        return -1;
    }
    return 0;
}

void proto_step_res_release(proto_step_res *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_draft; i++) proto_step_res_release((proto_step_res *)&r->draft[i]);
    own_free(&r->own_);
    memset(r, 0, sizeof *r);
    r->end_logq = -INFINITY;
}

/* ---- POST /v1/score ------------------------------------------------------ */

json_t *proto_score_req_encode(const proto_score_req *q) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "text", json_stringn(q->text ? q->text : "", q->text ? q->text_len : 0));
        bad |= put(o, "doc_start", json_boolean(q->doc_start));
    }
    return finish(o, bad);
}

int proto_score_req_decode(const json_t *o, proto_score_req *q, proto_error *err) {
    memset(q, 0, sizeof *q);
    q->doc_start = 1;
    zero_err(err);
    if (not_object(o, err) || get_str(o, "text", 1, &q->text, &q->text_len, err) ||
        get_bool(o, "doc_start", &q->doc_start, err)) {
        memset(q, 0, sizeof *q);
        return -1;
    }
    return 0;
}

json_t *proto_score_res_encode(const proto_score_res *r) {
    json_t *o = json_object(), *ta = json_array();
    int bad = !o || !ta;
    for (size_t i = 0; !bad && i < r->n_tokens; i++) {
        const proto_score_tok *s = &r->tokens[i];
        json_t *t = json_object();
        int tb = !t || put(t, "id", json_integer(s->id)) || put(t, "start", json_integer((json_int_t)s->start)) ||
                 put(t, "end", json_integer((json_int_t)s->end)) || put(t, "logprob", num_or_null(s->logprob)) ||
                 put(t, "entropy", num_or_null(s->entropy)) || put(t, "top1", num_or_null(s->top1));
        bad |= tb || json_array_append_new(ta, t) != 0;
        if (tb) json_decref(t);
    }
    if (!bad) {
        bad |= put(o, "n_tokens", json_integer((json_int_t)r->n_tokens));
        bad |= put(o, "tokens", json_incref(ta));
        bad |= put(o, "sum_logprob", json_real(r->sum_logprob));
        bad |= put(o, "n_ctx", json_integer(r->n_ctx));
        bad |= put(o, "window_overlap", json_integer(r->window_overlap));
        bad |= put(o, "decoded", json_integer(r->decoded));
    }
    json_decref(ta);
    return finish(o, bad);
}

static int score_tok(const json_t *x, size_t i, proto_score_tok *t, proto_error *err) {
    if (!json_is_object(x)) return field_fail(err, PROTO_ERR_INVALID_TYPE, "tokens", "tokens[%zu] must be an object", i);
    int s = 0, e = 0;
    if (get_int(x, "id", 1, 0, INT_MAX, &t->id, err) || get_int(x, "start", 1, 0, INT_MAX, &s, err) ||
        get_int(x, "end", 1, s, INT_MAX, &e, err) || get_num(x, "logprob", 0, NAN, &t->logprob, err) ||
        get_num(x, "entropy", 0, NAN, &t->entropy, err) || get_num(x, "top1", 0, NAN, &t->top1, err))
        return -1;
    t->start = (size_t)s;
    t->end = (size_t)e;
    return 0;
}

int proto_score_res_decode(const json_t *o, proto_score_res *r, proto_error *err) {
    memset(r, 0, sizeof *r);
    zero_err(err);
    size_t n = 0;
    const json_t *ta = NULL;
    proto_score_tok *t = NULL;
    if (not_object(o, err) || !(ta = get_array(o, "tokens", 1, &n, err)) ||
        get_num(o, "sum_logprob", 1, NAN, &r->sum_logprob, err) ||
        get_int(o, "n_ctx", 0, 0, INT_MAX, &r->n_ctx, err) ||
        get_int(o, "window_overlap", 0, 0, INT_MAX, &r->window_overlap, err) ||
        get_int(o, "decoded", 0, 0, INT_MAX, &r->decoded, err))
        goto fail;
    if (isnan(r->sum_logprob)) {
        field_fail(err, PROTO_ERR_INVALID_TYPE, "sum_logprob", "'sum_logprob' must be a number");
        goto fail;
    }
    if (!(t = own_alloc(&r->own_, n, sizeof *t))) {
        oom(err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (score_tok(json_array_get(ta, i), i, &t[i], err)) goto fail;
    r->tokens = t;
    r->n_tokens = n;
    return 0;
fail:
    proto_score_res_release(r);
    return -1;
}

void proto_score_res_release(proto_score_res *r) {
    if (!r) return;
    own_free(&r->own_);
    memset(r, 0, sizeof *r);
}

/* ---- POST /v1/next_bytes --------------------------------------------------- */

json_t *proto_next_bytes_req_encode(const proto_next_bytes_req *q) {
    json_t *o = json_object();
    int bad = !o;
    if (!bad) {
        bad |= put(o, "text_b64", b64_json(q->text));
        if (q->beam) bad |= put(o, "beam", json_integer(q->beam));
    }
    return finish(o, bad);
}

int proto_next_bytes_req_decode(const json_t *o, proto_next_bytes_req *q, proto_error *err) {
    memset(q, 0, sizeof *q);
    zero_err(err);
    if (not_object(o, err) || get_b64(o, "text_b64", 1, &q->own_, &q->text, err) ||
        get_int(o, "beam", 0, 1, PROTO_MAX_BYTE_BEAM, &q->beam, err)) {
        proto_next_bytes_req_release(q);
        return -1;
    }
    if (!q->beam) q->beam = PROTO_DEFAULT_BYTE_BEAM;
    return 0;
}

void proto_next_bytes_req_release(proto_next_bytes_req *q) {
    if (!q) return;
    own_free(&q->own_);
    memset(q, 0, sizeof *q);
}

/* float32 <-> 4 little-endian bytes, whatever the host's order. */
static void f32_le(float f, unsigned char *b) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int k = 0; k < 4; k++) b[k] = (unsigned char)(u >> (8 * k));
}

static float le_f32(const unsigned char *b) {
    uint32_t u = 0;
    for (int k = 0; k < 4; k++) u |= (uint32_t)b[k] << (8 * k);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

json_t *proto_next_bytes_res_encode(const proto_next_bytes_res *r) {
    size_t n = (size_t)r->n_bytes * PROTO_NEXT_BYTES;
    unsigned char *raw = malloc(n * 4 + 1);
    json_t *o = json_object();
    int bad = !o || !raw;
    for (size_t i = 0; !bad && i < n; i++) f32_le(r->dist[i], raw + 4 * i);
    if (!bad) {
        bad |= put(o, "n_bytes", json_integer(r->n_bytes));
        bad |= put(o, "dist_b64", b64_json((proto_str){raw, n * 4}));
        bad |= put(o, "beam", json_integer(r->beam));
        bad |= put(o, "decoded", json_integer(r->decoded));
        bad |= put(o, "decodes", json_integer(r->decodes));
        bad |= put(o, "paths", json_integer((json_int_t)r->paths));
        bad |= put(o, "max_beam", json_integer(r->max_beam));
        bad |= put(o, "windows", json_integer(r->windows));
        bad |= put(o, "reanchors", json_integer(r->reanchors));
    }
    free(raw);
    return finish(o, bad);
}

int proto_next_bytes_res_decode(const json_t *o, proto_next_bytes_res *r, proto_error *err) {
    memset(r, 0, sizeof *r);
    zero_err(err);
    proto_str raw = {0};
    int paths = 0;
    if (not_object(o, err) || get_int(o, "n_bytes", 1, 0, INT_MAX / (4 * PROTO_NEXT_BYTES), &r->n_bytes, err) ||
        get_b64(o, "dist_b64", 1, &r->own_, &raw, err) || get_int(o, "beam", 0, 0, PROTO_MAX_BYTE_BEAM, &r->beam, err) ||
        get_int(o, "decoded", 0, 0, INT_MAX, &r->decoded, err) || get_int(o, "decodes", 0, 0, INT_MAX, &r->decodes, err) ||
        get_int(o, "paths", 0, 0, INT_MAX, &paths, err) || get_int(o, "max_beam", 0, 0, INT_MAX, &r->max_beam, err) ||
        get_int(o, "windows", 0, 0, INT_MAX, &r->windows, err) || get_int(o, "reanchors", 0, 0, INT_MAX, &r->reanchors, err))
        goto fail;
    size_t n = (size_t)r->n_bytes * PROTO_NEXT_BYTES;
    if (raw.n != 4 * n) {
        field_fail(err, PROTO_ERR_INVALID_VALUE, "dist_b64", "'dist_b64' must hold n_bytes * 257 float32 values");
        goto fail;
    }
    float *d = own_alloc(&r->own_, n ? n : 1, sizeof *d);
    if (!d) {
        oom(err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) d[i] = le_f32(raw.p + 4 * i);
    r->dist = d;
    r->paths = paths;
    return 0;
fail:
    proto_next_bytes_res_release(r);
    return -1;
}

void proto_next_bytes_res_release(proto_next_bytes_res *r) {
    if (!r) return;
    own_free(&r->own_);
    memset(r, 0, sizeof *r);
}

/* ---- DELETE /v1/session/{id} --------------------------------------------- */

json_t *proto_deleted_encode(void) { return json_pack("{s:b}", "deleted", 1); }
