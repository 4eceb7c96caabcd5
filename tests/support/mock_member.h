/* tests/support/mock_member.h: an in-process fake consort-worker for the
 * engine's tests, speaking the member protocol of docs/PROTOCOL.md through
 * the protocol module (protocol/proto.h): step with healing and own-token
 * absorption, prefix masses by the exact definition, end_logq, candidates,
 * the next-byte distribution, score, info, health, session delete.
 *
 * Its "model": a fixed vocabulary of byte strings plus EOS, and a next-token
 * distribution that depends on pos = bytes of the committed tokens: tokens
 * that are a prefix of the script S (repeated) from pos get weight
 * 1 + bonus*len, others 1 (+ a small id-dependent epsilon so there are no
 * ties); EOS gets eos_w, or 1e4 once pos >= end_at. A greedy loop over this
 * distribution (mock_greedy) is the member's own greedy text.
 *
 * Use: zero a mock_member, set name, vocabulary (mock_set_vocab), script and
 * the knobs, mock_start() (an ephemeral loopback port in ->port), then point
 * a member at http://127.0.0.1:PORT; mock_stop() when done. The counters
 * (n_step_calls, ...) and sessions may be read between requests.
 */
#ifndef CONSORT_MOCK_MEMBER_H
#define CONSORT_MOCK_MEMBER_H

#include <pthread.h>
#include <stddef.h>

#define MOCK_MAXV 64
#define MOCK_MAXS 64

typedef struct {
    char id[72];
    int used;
    char g[4096];
    size_t glen;
    int ctoks[2048];
    size_t nc;
    size_t clen;                 /* bytes of C */
    int paths[256][2];           /* token paths reported last time (second -1 if one) */
    size_t npaths;
    int steps;
} mock_session;

typedef struct {
    const char *name;
    const char *vocab[MOCK_MAXV];
    size_t vlen[MOCK_MAXV];
    int nv;                      /* EOS is id nv */
    const char *script;
    double bonus, eos_w;
    size_t end_at;               /* 0 = never */
    double score_nll;            /* /v1/score answers -score_nll (one token over the whole text) */
    int fail_after;              /* step calls after this many answer 500 (0 = never) */
    int delay_ms;                /* delay of each step answer */
    double inflate_logq;         /* added to every logq it answers: a member whose masses sum above 1 */
    const char *token;           /* non-NULL: every call but health needs "Authorization: Bearer TOKEN" (else 401) */
    size_t ctx_bytes;            /* non-0: a prompt longer than this many bytes gets 400 context_length_exceeded */
    char last_session[72];       /* the session id of the latest step */
    long last_deadline_ms;       /* the deadline header of the latest step, -1 when absent */
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    mock_session s[MOCK_MAXS];
    int n_step_calls, n_deletes, n_cand_only, n_scores, n_unauthorized;
} mock_member;

/* v: NULL-terminated list of token strings. */
void mock_set_vocab(mock_member *mk, const char *const *v);
/* The member's own greedy text (what a direct greedy loop gives), in out. */
size_t mock_greedy(const mock_member *mk, int steps, char *out, size_t cap);
int mock_start(mock_member *mk);                 /* 0 ok */
int mock_start_port(mock_member *mk, int port);  /* on a given port (a restart) */
void mock_stop(mock_member *mk);

#endif
