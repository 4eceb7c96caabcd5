/* protocol/proto.h: the member protocol (docs/PROTOCOL.md) as C structs, and
 * their JSON form. This is the only place in the project where the
 * protocol's field names are spelled: the worker's HTTP layer decodes
 * requests and encodes answers with it, the coordinator's member client does
 * the opposite, and the test mock member uses both sides.
 *
 * Shape of the module:
 *
 *   - One struct per request and per answer. Byte strings that may be
 *     partial UTF-8 (fields named *_b64 on the wire) are proto_str values:
 *     raw bytes and a length, never base64; the codec does the base64.
 *   - proto_X_encode(const proto_X *) -> json_t * (a new reference; NULL
 *     when out of memory, or when a text field -- prompt, message, tokenize
 *     or score text -- is not valid UTF-8). proto_dumps() turns it into a
 *     compact body. Fields are written in the order docs/PROTOCOL.md shows.
 *   - proto_X_decode(const json_t *o, proto_X *out, proto_error *err) -> 0,
 *     or -1 with err filled exactly as the worker answers a bad request
 *     (status 400 and a code: invalid_type, invalid_value, invalid_base64,
 *     invalid_request; 500 internal when out of memory). Decoding checks
 *     types and ranges, so a struct that decoded is valid. Absent and null
 *     mean "the default" for optional fields; a required field that is
 *     missing is 400 invalid_type. err->param names the offending field.
 *     Required: /health status; /v1/info protocol and vocab_size; /v1/vocab
 *     all three fields; tokenize/score text; detokenize tokens and text_b64;
 *     step session (request) and n_past, residue_b64, top, candidates,
 *     end_logq (answer; end_logq may be null); score tokens and sum_logprob.
 *   - A decoded struct may borrow strings from `o` (so `o` must outlive it)
 *     and owns what it had to allocate (decoded base64, arrays):
 *     proto_X_release() frees those and zeroes the struct. Release is safe on
 *     a zeroed struct and after a failed decode.
 *   - Encoded structs are only read: every pointer in them is borrowed.
 *
 * Numbers: log-probabilities that the wire writes as null (zero mass, or
 * "not scored") are -INFINITY in logq/end_logq fields and NAN in the score
 * fields that documentation calls "null when not scored" (logprob, entropy,
 * top1). Token ids that may be absent (bos, eos, eot) are -1.
 */
#ifndef CONSORT_PROTO_H
#define CONSORT_PROTO_H

#include <jansson.h>
#include <stddef.h>

#define PROTO_VERSION 1
#define PROTO_NEXT_BYTES 257     /* "next_bytes": the 256 byte values, then END */
#define PROTO_MAX_NEXT_BYTES 4   /* "next_bytes" depth */
#define PROTO_SESSION_MAX 64      /* session ids: 1..64 chars of [A-Za-z0-9_.:-] */
#define PROTO_MAX_K 256           /* /v1/step "k" */
#define PROTO_MAX_CANDIDATES 512  /* /v1/step "candidates_b64" */
#define PROTO_DEFAULT_K 20
#define PROTO_MAX_DRAFT 16        /* /v1/step "draft" */
#define PROTO_MAX_STEPS 64        /* /v1/step "steps_b64" */

/* Endpoint paths. */
#define PROTO_PATH_HEALTH "/health"
#define PROTO_PATH_INFO "/v1/info"
#define PROTO_PATH_VOCAB "/v1/vocab"
#define PROTO_PATH_TOKENIZE "/v1/tokenize"
#define PROTO_PATH_DETOKENIZE "/v1/detokenize"
#define PROTO_PATH_STEP "/v1/step"
#define PROTO_PATH_SCORE "/v1/score"
#define PROTO_PATH_NEXT_BYTES "/v1/next_bytes"
#define PROTO_PATH_SESSION "/v1/session/" /* + id, DELETE */
#define PROTO_PATH_METRICS "/metrics"

/* The request header that carries a deadline: milliseconds from the
 * worker's receipt of the request's headers (docs/PROTOCOL.md). */
#define PROTO_HEADER_DEADLINE "X-Consort-Deadline-Ms"

/* The "param" of an error about one request field. */
#define PROTO_PARAM_PROMPT "prompt"
#define PROTO_PARAM_APPEND "append_b64"
#define PROTO_PARAM_CANDIDATES "candidates_b64"
#define PROTO_PARAM_TEXT "text"
#define PROTO_PARAM_TEXT_B64 "text_b64"
#define PROTO_PARAM_BEAM "beam"

/* A byte string (not NUL-terminated; p may be NULL when n == 0). */
typedef struct {
    const unsigned char *p;
    size_t n;
} proto_str;

/* The error codes of docs/PROTOCOL.md, the "code" of an error answer. The
 * coordinator branches on some of them (a session the member forgot is
 * re-created; a full context ends the generation), so both sides spell
 * them through these names. */
#define PROTO_ERR_INVALID_JSON "invalid_json"       /* 400: the body is not JSON */
#define PROTO_ERR_INVALID_TYPE "invalid_type"       /* 400: a field of the wrong type */
#define PROTO_ERR_INVALID_VALUE "invalid_value"     /* 400: a value out of range */
#define PROTO_ERR_INVALID_REQUEST "invalid_request" /* 400: fields that do not fit together */
#define PROTO_ERR_INVALID_BASE64 "invalid_base64"   /* 400 */
#define PROTO_ERR_BODY_TOO_LARGE "body_too_large"   /* 413 */
#define PROTO_ERR_NOT_FOUND "not_found"             /* 404: no such endpoint */
#define PROTO_ERR_METHOD_NOT_ALLOWED "method_not_allowed"           /* 405 */
#define PROTO_ERR_SESSION_NOT_FOUND "session_not_found"             /* 404 */
#define PROTO_ERR_CONTEXT_LENGTH_EXCEEDED "context_length_exceeded" /* 400 */
#define PROTO_ERR_UNTOKENIZABLE "untokenizable"     /* 400 */
#define PROTO_ERR_INVALID_PROMPT "invalid_prompt"   /* 400 */
#define PROTO_ERR_DECODE_FAILED "decode_failed"     /* 500: llama_decode failed */
#define PROTO_ERR_INTERNAL "internal"               /* 500 */
#define PROTO_ERR_BUDGET_EXCEEDED "budget_exceeded" /* 400: over the worker's compute budget per request */
#define PROTO_ERR_DEADLINE_EXCEEDED "deadline_exceeded" /* 503: the request's deadline passed */
#define PROTO_ERR_CANCELLED "cancelled"             /* 503: the client closed its connection */
#define PROTO_ERR_INVALID_API_KEY "invalid_api_key" /* 401: missing or wrong bearer token */
/* Set by the client side of the codec, never sent by a worker: */
#define PROTO_ERR_PROTOCOL_MISMATCH "protocol_mismatch" /* 409: another protocol version */
#define PROTO_ERR_INVALID_RESPONSE "invalid_response"   /* an answer that is not the protocol's */

/* An error answer: {"error": {"message", "type", "code", "param"}}.
 * `type` follows the status: invalid_request_error below 500, else
 * server_error. code may be "" (written as null); param is written only when
 * not "" (the worker's answers carry message, type and code). */
typedef struct {
    int status; /* HTTP status; 0 = no error */
    char code[48];
    char param[48];
    char message[256];
} proto_error;

int proto_fail(proto_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5))); /* fills err, returns -1 */
json_t *proto_error_encode(const proto_error *err);
/* Reads an error body (any object with an "error" member); 0, or -1 when
 * the body is not one (err then says so with the given status). */
int proto_error_decode(const json_t *o, int status, proto_error *err);

/* 1 if s is a valid session id. */
int proto_session_id_ok(const char *s);

/* ---- GET /health -------------------------------------------------------- */
typedef struct {
    const char *status; /* "ok" */
    const char *name;
    int slots_in_use, slots;
} proto_health;
json_t *proto_health_encode(const proto_health *h);
int proto_health_decode(const json_t *o, proto_health *h, proto_error *err);

/* ---- GET /v1/info --------------------------------------------------------- */
typedef struct {
    const char *name, *model_path, *vocab_type;
    int vocab_size;
    int bos, eos, eot; /* -1 = null */
    int add_bos;
    int doc_start;
    int space_prefix;
    int n_ctx, n_ctx_train;
    int has_chat_template;
    int slots;
    int protocol; /* PROTO_VERSION of the worker */
} proto_info;
json_t *proto_info_encode(const proto_info *in);
/* Also checks protocol == PROTO_VERSION (409 PROTO_ERR_PROTOCOL_MISMATCH otherwise). */
int proto_info_decode(const json_t *o, proto_info *in, proto_error *err);

/* ---- GET /v1/vocab -------------------------------------------------------- */
typedef struct {
    int vocab_size;
    proto_str *tokens;  /* vocab_size entries */
    const char **kinds; /* vocab_size entries: normal, control, byte, user, unknown, unused */
    void *own_;
} proto_vocab;
json_t *proto_vocab_encode(const proto_vocab *v);
int proto_vocab_decode(const json_t *o, proto_vocab *v, proto_error *err);
void proto_vocab_release(proto_vocab *v);

/* ---- POST /v1/tokenize ---------------------------------------------------- */
typedef struct {
    const char *text;
    size_t text_len;
    int add_special, parse_special;
} proto_tokenize_req;
typedef struct {
    int *tokens;
    size_t n;
    size_t *spans; /* 2 * n offsets [start, end), or NULL (written as null) */
} proto_tokenize_res;
json_t *proto_tokenize_req_encode(const proto_tokenize_req *q);
int proto_tokenize_req_decode(const json_t *o, proto_tokenize_req *q, proto_error *err);
json_t *proto_tokenize_res_encode(const proto_tokenize_res *r);
int proto_tokenize_res_decode(const json_t *o, proto_tokenize_res *r, proto_error *err);
void proto_tokenize_res_release(proto_tokenize_res *r);

/* ---- POST /v1/detokenize -------------------------------------------------- */
typedef struct {
    const int *tokens;
    size_t n;
    int strip_space_prefix;
    void *own_;
} proto_detokenize_req;
typedef struct {
    proto_str text; /* "text_b64"; "text" is written too when valid UTF-8 */
    void *own_;
} proto_detokenize_res;
json_t *proto_detokenize_req_encode(const proto_detokenize_req *q);
/* vocab_size bounds the ids (400 invalid_value outside [0, vocab_size)). */
int proto_detokenize_req_decode(const json_t *o, int vocab_size, proto_detokenize_req *q, proto_error *err);
void proto_detokenize_req_release(proto_detokenize_req *q);
json_t *proto_detokenize_res_encode(const proto_detokenize_res *r);
int proto_detokenize_res_decode(const json_t *o, proto_detokenize_res *r, proto_error *err);
void proto_detokenize_res_release(proto_detokenize_res *r);

/* ---- POST /v1/step -------------------------------------------------------- */
typedef struct {
    const char *role, *content;
} proto_msg;

typedef struct {
    const char *session;   /* required */
    const char *prompt;    /* NULL = none */
    size_t prompt_len;
    const proto_msg *messages; /* n_messages > 0: a chat prompt (exclusive with prompt) */
    size_t n_messages;
    int heal_prompt;
    proto_str append;      /* "append_b64"; n == 0: none */
    int k;                 /* 0..PROTO_MAX_K; decode default PROTO_DEFAULT_K */
    const proto_str *cands;/* "candidates_b64" */
    size_t n_cands;        /* 0..PROTO_MAX_CANDIDATES */
    const proto_str *steps;/* "steps_b64": appends taken one step at a time before append_b64 */
    size_t n_steps;        /* 0..PROTO_MAX_STEPS */
    int draft;             /* "draft": 0..PROTO_MAX_DRAFT steps along the member's own top entry,
                            * answered but not committed */
    const proto_str *draft_steps; /* "draft_b64": steps to draft instead of the member's own proposals
                            * (another member's draft, to verify), answered but not committed;
                            * exclusive with draft > 0 */
    size_t n_draft_steps;  /* 0..PROTO_MAX_DRAFT */
    int next_bytes;        /* "next_bytes": 0..PROTO_MAX_NEXT_BYTES; n > 0: also answer the next-byte
                            * distribution, counting tokens that start up to n - 1 committed tokens
                            * before the residue (docs/PROTOCOL.md) */
    void *own_;
} proto_step_req;

typedef struct {
    proto_str s;           /* "s_b64" */
    double logq;           /* -INFINITY = null */
    double logp;           /* "logp": log P(this entry's own token path | residue);
                            * -INFINITY = null; NAN = absent (an older worker):
                            * never encoded, decoded from a missing field */
} proto_top;

typedef struct proto_step_res {
    const char *session;
    int n_past;
    proto_str residue;     /* "residue_b64" */
    int decoded;
    const proto_top *top;
    size_t n_top;
    const double *cand_logq; /* "candidates": one per asked candidate; -INFINITY = null */
    size_t n_cands;
    double end_logq;       /* -INFINITY = null */
    const struct proto_step_res *draft; /* "draft": the answers after each drafted step */
    size_t n_draft;
    const double *next_bytes; /* "next_bytes": PROTO_NEXT_BYTES log masses (bytes 0..255, then END;
                            * -INFINITY = null) when asked; n_next_bytes 0 when absent */
    size_t n_next_bytes;
    void *own_;
} proto_step_res;

json_t *proto_step_req_encode(const proto_step_req *q);
int proto_step_req_decode(const json_t *o, proto_step_req *q, proto_error *err);
void proto_step_req_release(proto_step_req *q);
json_t *proto_step_res_encode(const proto_step_res *r);
int proto_step_res_decode(const json_t *o, proto_step_res *r, proto_error *err);
void proto_step_res_release(proto_step_res *r);

/* ---- POST /v1/score ------------------------------------------------------- */
typedef struct {
    const char *text;
    size_t text_len;
    int doc_start;         /* default 1 */
} proto_score_req;

typedef struct {
    int id;
    size_t start, end;
    double logprob, entropy, top1; /* NAN = null (not scored) */
} proto_score_tok;

typedef struct {
    const proto_score_tok *tokens;
    size_t n_tokens;
    double sum_logprob;
    int n_ctx, window_overlap;
    int decoded;
    void *own_;
} proto_score_res;

json_t *proto_score_req_encode(const proto_score_req *q);
int proto_score_req_decode(const json_t *o, proto_score_req *q, proto_error *err);
json_t *proto_score_res_encode(const proto_score_res *r);
int proto_score_res_decode(const json_t *o, proto_score_res *r, proto_error *err);
void proto_score_res_release(proto_score_res *r);

/* ---- POST /v1/next_bytes ----------------------------------------------------
 * Every byte's next-byte distribution along a text, over the member's
 * covering tokenizations (docs/PROTOCOL.md "The next-byte walk"). On the
 * wire dist_b64 is n_bytes * PROTO_NEXT_BYTES little-endian float32 natural
 * logs (-inf for no mass); here it is host floats. Required: text_b64
 * (request); n_bytes and dist_b64 (answer, of exactly that size). */
#define PROTO_MAX_BYTE_BEAM 256
#define PROTO_DEFAULT_BYTE_BEAM 16
typedef struct {
    proto_str text;
    int beam;              /* 1..PROTO_MAX_BYTE_BEAM; 0 = PROTO_DEFAULT_BYTE_BEAM */
    void *own_;
} proto_next_bytes_req;

typedef struct {
    int n_bytes;
    const float *dist;     /* n_bytes * PROTO_NEXT_BYTES */
    int beam, decoded, decodes, max_beam, windows, reanchors;
    long long paths;
    void *own_;
} proto_next_bytes_res;

json_t *proto_next_bytes_req_encode(const proto_next_bytes_req *q);
int proto_next_bytes_req_decode(const json_t *o, proto_next_bytes_req *q, proto_error *err);
void proto_next_bytes_req_release(proto_next_bytes_req *q);
json_t *proto_next_bytes_res_encode(const proto_next_bytes_res *r);
int proto_next_bytes_res_decode(const json_t *o, proto_next_bytes_res *r, proto_error *err);
void proto_next_bytes_res_release(proto_next_bytes_res *r);

/* ---- DELETE /v1/session/{id} ---------------------------------------------- */
json_t *proto_deleted_encode(void); /* {"deleted": true} */

/* ---- bodies --------------------------------------------------------------- */
/* Compact JSON text of o (takes the reference: o is released). NULL when o is
 * NULL or out of memory; *len gets the length. */
char *proto_dumps(json_t *o, size_t *len);

#endif
