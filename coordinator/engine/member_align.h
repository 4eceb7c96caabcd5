/* coordinator/engine/member_align.h: the coordinator-side alignment state
 * machine shared by the kinds of member that are ordinary LLM servers
 * (llama-server: member_llama.c; any OpenAI-compatible server:
 * member_openai.c). docs/MEMBERS.md explains the method.
 *
 * Such a server knows nothing of sessions or byte strings, so the state a
 * consort-worker keeps (the prompt's tokens P, the committed tokens C, the
 * residue r, the proposals to absorb) lives here, and the server is asked
 * only for what a kind's backend can provide:
 *
 *   - tokenize: text -> token ids with each token's end offset in the
 *     concatenated pieces (the server's /tokenize, or a local tokenizer);
 *   - next_list: the top-n next tokens (id, log-probability, bytes) after a
 *     token prompt, in probability order;
 *   - render_chat: a chat rendered to prompt text by the model's template;
 *   - forced_logprob: the log-probability of one given token after a token
 *     prompt (scoring, `consort ppl`).
 *
 * A kind fills one align_backend and points its member_ops at the align_*
 * functions below; its open() is `return align_open(s, &my_backend);`.
 * All the invariants (bytes(C) + r == H, the proposals' absorption, the
 * lists' cache) are this file's; a backend is stateless per session.
 */
#ifndef CONSORT_MEMBER_ALIGN_H
#define CONSORT_MEMBER_ALIGN_H

#include "common/sbuf.h"
#include "coordinator/engine/member.h"

#include <jansson.h>
#include <stddef.h>

/* One entry of a next-token list. */
typedef struct {
    int id;
    double lp;               /* natural log of the full-softmax probability */
    unsigned char *b;        /* the token's bytes, malloc'd (empty: a control token) */
    size_t n;
} align_tok;

typedef struct align_backend {
    /* Tokenizes text[0..n) (valid UTF-8): ids into *ids, each token's end
     * offset (in the concatenated pieces, shifted onto the text when the
     * pieces are a space and the text) into *ends, both malloc'd; the
     * pieces themselves appended to *pieces when not NULL. Without special
     * tokens the pieces must spell the text (or a space and the text), else
     * 400 untokenizable. Returns the count, or -1 with err. */
    int (*tokenize)(member_session *s, const char *text, size_t n, int add_special, int parse_special, int **ids,
                    size_t **ends, sbuf *pieces, proto_error *err);
    /* The next-token list after toks[0..n): *e (malloc'd, each entry's b
     * too) in probability order, *ne > 0 entries; *decoded += the positions
     * the server computed. 0, or -1 with err. */
    int (*next_list)(member_session *s, const int *toks, size_t n, align_tok **e, size_t *ne, int *decoded,
                     proto_error *err);
    /* messages (an array of {role, content}, borrowed) -> prompt text
     * appended to out. 0, or -1 with err. */
    int (*render_chat)(member_session *s, const json_t *messages, sbuf *out, proto_error *err);
    /* log p(next | ctx[0..n)) into t->logprob, with t->entropy and t->top1
     * estimated from a top list. 0, or -1 with err. */
    int (*forced_logprob)(member_session *s, const int *ctx, size_t n, int next, proto_score_tok *t,
                          proto_error *err);
} align_backend;

/* member_ops entries (member.h), shared by every aligned kind. */
void *align_open(member_session *s, const align_backend *be);
int align_step(member_session *s, const proto_step_req *q, member_round *r);
int align_step_result(member_session *s, const proto_step_res **res, proto_error *err);
int align_score(member_session *s, const proto_score_req *q, member_round *r);
int align_score_result(member_session *s, const proto_score_res **res, proto_error *err);
void align_close(member_session *s, member_round *r);
void align_free(member_session *s);

/* One blocking JSON call to member i's server: POST path with body (taken)
 * or GET when body is NULL; path is appended to the member's URL. 0 with
 * *out, or -1 with err (status 0: no answer, and the member is marked down;
 * else the server's status, "context_length_exceeded" when its message
 * says so). */
int align_call(member_set *ms, size_t i, const char *path, json_t *body, double timeout_s, json_t **out,
               proto_error *err);

/* An error that names the session's member: "member 'NAME' (URL): ...". */
void align_fail(member_session *s, proto_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
