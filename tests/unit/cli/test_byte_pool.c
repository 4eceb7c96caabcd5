/* tests/unit/cli/test_byte_pool.c: `consort ppl`'s byte_pool on whole texts
 * (ev_byte_pool_doc: the engine's byte walk, ensemble_score_bytes, and the
 * pool of eval_byte_pool.h), against in-process mock members
 * (tests/support/mock_member.c) whose distributions are known.
 *
 *  - A member whose tokens are single bytes is consistent: its byte-level
 *    log-likelihood of a text is its token log-likelihood, computed here
 *    from the mock's own formula; byte_pool on that member alone gives it
 *    to 1e-6.
 *  - A member with multi-byte tokens: its next-byte masses sum to 1 at
 *    every byte (no deviation counted), and the pool of the member with a
 *    copy of itself (exponents 1/2) scores exactly as the member alone.
 *    (These run the per-byte step walk, beam 0: the mocks have no
 *    /v1/next_bytes, and a covering walk on one fails with a message naming
 *    the member and the endpoint. The covering walk itself is checked on
 *    real models: tests/unit/worker/test_wk_next_bytes.c, ppl.t.)
 *  - A member whose masses sum to e^0.7 at every byte: every byte is
 *    counted as deviating, and the pool still scores it as the consistent
 *    member (it normalises; without the normaliser this check fails).
 */
#include "coordinator/cli/cmd_ppl.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/engine/members.h"
#include "coordinator/eval/eval_byte_pool.h"
#include "tests/support/mock_member.h"
#include "tests/tap.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define SCRIPT "Hello world, hello world. "
#define TEXT "Hello world, hello word. Hel"

static const char *bytes_vocab[] = {"H", "e", "l", "o", " ", "w", "r", "d", ",", ".", "h", NULL};
static const char *multi_vocab[] = {"H", "e", "l", "o", " ", "w", "r", "d", ",", ".", "h",
                                    "Hello", " w", "ld", "ll", "x", "yz", "Hel", NULL};

static void init_mock(mock_member *m, const char *name, const char **vocab) {
    memset(m, 0, sizeof *m);
    m->name = name;
    mock_set_vocab(m, vocab);
    m->script = SCRIPT;
    m->bonus = 2.0;
    m->eos_w = 0.2;
    m->score_nll = 5;
}

/* The mock's next-token probability (tests/support/mock_member.h: tokens
 * matching the script at pos weigh 1 + bonus * len, others 1, plus 0.001 *
 * id; EOS eos_w), written out again here as the reference. */
static double mock_token_p(const mock_member *mk, int t, size_t pos) {
    size_t sl = strlen(mk->script);
    double z = 0, wt = 0;
    for (int i = 0; i <= mk->nv; i++) {
        double w = mk->eos_w;
        if (i < mk->nv) {
            int match = 1;
            for (size_t j = 0; j < mk->vlen[i]; j++) match &= mk->vocab[i][j] == mk->script[(pos + j) % sl];
            w = (match ? 1 + mk->bonus * (double)mk->vlen[i] : 1) + 0.001 * i;
        }
        z += w;
        if (i == t) wt = w;
    }
    return wt / z;
}

/* Token log-likelihood of text under a single-byte vocabulary (one token per byte). */
static double bytes_member_loglik(const mock_member *mk, const char *text, size_t len) {
    double ll = 0;
    for (size_t i = 0; i < len; i++) {
        int t = -1;
        for (int k = 0; k < mk->nv; k++)
            if (mk->vocab[k][0] == text[i]) t = k;
        ll += log(mock_token_p(mk, t, i));
    }
    return ll;
}

static member_set *open_set(mock_member **m, size_t n) {
    char err[256], url[64];
    member_set *ms = members_new();
    for (size_t i = 0; i < n; i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d", m[i]->port);
        members_add(ms, m[i]->name, url, err, sizeof err);
    }
    if (members_connect(ms, NULL, err, sizeof err)) {
        diag("connect: %s", err);
        members_free(ms);
        return NULL;
    }
    return ms;
}

static ensemble *new_ensemble(member_set *ms) {
    char err[256];
    ensemble_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.step_timeout = 5;
    ensemble *e = ensemble_new(ms, &cfg, err, sizeof err);
    if (!e) diag("ensemble_new: %s", err);
    return e;
}

/* byte_pool of TEXT with the given exponents; NAN on failure. */
static double pool_score(ensemble *e, const double *alpha, size_t M, ev_byte_pool_stats *st) {
    char err[300];
    double lp;
    memset(st, 0, sizeof *st);
    if (ev_byte_pool_doc(e, alpha, M, 0, TEXT, strlen(TEXT), &lp, st, NULL, err, sizeof err)) {
        diag("byte_pool: %s", err);
        return NAN;
    }
    return lp;
}

static void test_consistent_member(mock_member *S) {
    mock_member *m[1] = {S};
    member_set *ms = open_set(m, 1);
    ensemble *e = ms ? new_ensemble(ms) : NULL;
    if (!ok(e, "one member with single-byte tokens")) return;
    ev_byte_pool_stats st;
    double one[1] = {1};
    double lp = pool_score(e, one, 1, &st);
    double want = bytes_member_loglik(S, TEXT, strlen(TEXT));
    is_near(lp, want, 1e-6, "byte_pool of one consistent member = its token log-likelihood of the text");
    is_int(st.bytes, (long)strlen(TEXT), "one round per byte");
    is_int(st.deviating[0], 0, "its next-byte masses sum to 1 at every byte");
    char err[300] = "";
    memset(&st, 0, sizeof st);
    int rc = ev_byte_pool_doc(e, one, 1, 4, TEXT, strlen(TEXT), &lp, &st, NULL, err, sizeof err);
    diag("beam 4 on a member without /v1/next_bytes: %s", err);
    ok(rc == -1 && strstr(err, S->name) && strstr(err, "next_bytes") && st.bytes == 0,
       "the covering walk (beam 4) on a member without /v1/next_bytes fails, naming the member and the endpoint");
    ensemble_free(e);
    members_free(ms);
}

static void test_copies_and_inflated(mock_member *A, mock_member *A2, mock_member *Inf) {
    mock_member *m[3] = {A, A2, Inf};
    member_set *ms = open_set(m, 3);
    ensemble *e = ms ? new_ensemble(ms) : NULL;
    if (!ok(e, "a member, its copy and an inflated copy")) return;
    ev_byte_pool_stats st;
    double alone[3] = {1, 0, 0}, copies[3] = {0.5, 0.5, 0}, inflated[3] = {0, 0, 1};
    double lp1 = pool_score(e, alone, 3, &st);
    ok(isfinite(lp1) && lp1 < 0, "the multi-byte member alone scores the text");
    is_int(st.deviating[0], 0, "multi-byte tokens: the next-byte masses still sum to 1 (through the residue token)");
    is_int(st.member_bytes[1], 0, "a member with exponent 0 is not asked");
    double lp2 = pool_score(e, copies, 3, &st);
    is_near(lp2, lp1, 1e-6, "the pool of a member with itself (exponents 1/2) is the member");
    double lp3 = pool_score(e, inflated, 3, &st);
    is_int(st.deviating[2], (long)strlen(TEXT), "masses summing to e^0.7: every byte counted as deviating");
    is_near(lp3, lp1, 1e-6, "and the pool normalises them: the same score as the consistent member");
    ensemble_free(e);
    members_free(ms);
}

static mock_member S, A, A2, Inf; /* large: not on the stack */

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    init_mock(&S, "s", bytes_vocab);
    init_mock(&A, "a", multi_vocab);
    init_mock(&A2, "a2", multi_vocab);
    init_mock(&Inf, "inf", multi_vocab);
    Inf.inflate_logq = 0.7;
    if (!ok(!mock_start(&S) && !mock_start(&A) && !mock_start(&A2) && !mock_start(&Inf), "mock members listening"))
        return tap_done();
    test_consistent_member(&S);
    test_copies_and_inflated(&A, &A2, &Inf);
    mock_stop(&S);
    mock_stop(&A);
    mock_stop(&A2);
    mock_stop(&Inf);
    curl_global_cleanup();
    return tap_done();
}
