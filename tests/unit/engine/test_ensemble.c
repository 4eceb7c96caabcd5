/* tests/unit/engine/test_ensemble.c: the engine end to end against in-process mock
 * members (tests/support/mock_member.c) that speak the member protocol with two
 * different vocabularies. Checks docs/ARCHITECTURE.md's invariants on the engine side
 * (one member = its greedy text; the same model twice = that model; weights
 * (1,0) over different tokenizers = member 0; valid UTF-8, nothing lost or
 * doubled), stop sequences and hold-back, END, max_tokens, failures,
 * timeouts, auto weights, concurrency, seeds. */
#include "common/clock.h"
#include "common/utf8.h"
#include "coordinator/engine/ensemble.h"
#include "coordinator/engine/members.h"
#include "tests/tap.h"
#include "tests/support/mock_member.h"

#include <curl/curl.h>
#include <pthread.h>
#include <unistd.h>

#define SCRIPT "Hello w\xC3\xB6rld, hello w\xC3\xB6rld. "

static const char *vocab_a[] = {"H", "e", "l", "o", " ", "w", "\xC3", "\xB6", "r", "d", ",", ".", "h",
                                "Hello", " w", "ld", "ll", "x", "yz", NULL};
static const char *vocab_b[] = {"H", "e", "l", "o", " ", "w", "\xC3", "\xB6", "r", "d", ",", ".", "h",
                                "\xC3\xB6", "He", "llo", " w\xC3\xB6", "rld", ", h", "q", NULL};

/* static, not on the stack: a mock member holds ~1 MB of session state, and
 * valgrind refuses stack frames of that size */
static mock_member A, A2, B, C, D, E, F, T;

typedef struct {
    char text[4096];
    size_t len;
    int n, all_valid, max_chunk_has_stop;
    const char *stop;
} collect;

static int on_chunk(void *ud, const ensemble_chunk *c) {
    collect *k = ud;
    if (!utf8_valid(c->text, c->len)) k->all_valid = 0;
    if (k->len + c->len < sizeof k->text) {
        memcpy(k->text + k->len, c->text, c->len);
        k->len += c->len;
        k->text[k->len] = 0;
    }
    k->n++;
    return 0;
}

static int is_script_prefix(const char *t, size_t n) {
    size_t sl = strlen(SCRIPT);
    for (size_t i = 0; i < n; i++)
        if (t[i] != SCRIPT[i % sl]) return 0;
    return 1;
}

static ensemble_request base_req(const char *strategy, int max_tokens) {
    ensemble_request q;
    memset(&q, 0, sizeof q);
    q.prompt = "Once upon a time";
    q.max_tokens = max_tokens;
    q.top_p = 1;
    q.strategy = strategy;
    return q;
}

static int gen(ensemble *e, const ensemble_request *q, ensemble_result *res, collect *k) {
    memset(k, 0, sizeof *k);
    k->all_valid = 1;
    return ensemble_generate(e, q, on_chunk, k, res);
}

/* The step timeout of the latest open_set(), for the next new_ensemble(). */
static double last_step_timeout;

static ensemble *new_ensemble(member_set *ms, const char *strategy, int no_round_skip) {
    char err[256];
    ensemble_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (strategy) snprintf(cfg.strategy, sizeof cfg.strategy, "%s", strategy);
    cfg.step_timeout = last_step_timeout;
    cfg.no_round_skip = no_round_skip;
    ensemble *e = ensemble_new(ms, &cfg, err, sizeof err);
    if (!e) diag("ensemble_new: %s", err);
    return e;
}

static member_set *open_set(const char *n1, mock_member *m1, const char *n2, mock_member *m2, double step_timeout) {
    char err[256], url[64];
    member_set *ms = members_new();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", m1->port);
    members_add(ms, n1, url, err, sizeof err);
    if (m2) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d", m2->port);
        members_add(ms, n2, url, err, sizeof err);
    }
    last_step_timeout = step_timeout;
    if (members_connect(ms, NULL, err, sizeof err)) {
        diag("connect: %s", err);
        members_free(ms);
        return NULL;
    }
    return ms;
}

typedef struct { ensemble *e; char text[4096]; size_t len; int rc; } thr_arg;

static void *thr_main(void *ud) {
    thr_arg *a = ud;
    ensemble_request q = base_req("mixture", 16);
    ensemble_result res;
    collect k;
    a->rc = gen(a->e, &q, &res, &k);
    memcpy(a->text, res.text, res.len + 1);
    a->len = res.len;
    ensemble_result_free(&res);
    return NULL;
}

static void init_mock(mock_member *m, const char *name, const char **vocab, double bonus) {
    memset(m, 0, sizeof *m);
    m->name = name;
    mock_set_vocab(m, vocab);
    m->script = SCRIPT;
    m->bonus = bonus;
    m->eos_w = 0.5;
}

static member_set *open_with(mock_member *m, const members_config *cfg, char *err, size_t errlen) {
    char url[64];
    member_set *ms = members_new();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", m->port);
    members_add(ms, m->name, url, err, errlen);
    last_step_timeout = 2;
    if (members_connect(ms, cfg, err, errlen)) {
        members_free(ms);
        return NULL;
    }
    return ms;
}

static int hex_id(const char *s) {
    if (strncmp(s, "cs-", 3) || strlen(s) != 3 + 32) return 0;
    for (const char *p = s + 3; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static int stop_after_3(void *ud) { return ((collect *)ud)->n >= 3; }

/* Issue 9 on the engine side: the shared secret, unguessable session ids,
 * the deadline header, the request's deadline, stopping between steps, and
 * the context check before auto-weight scoring. */
static void test_access_and_limits(void) {
    init_mock(&T, "t", vocab_a, 12);
    T.token = "s3cret-token";
    mock_start(&T);
    members_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[256];
    member_set *ms = open_with(&T, &cfg, err, sizeof err);
    ok(!ms && T.n_unauthorized > 0, "no token: the member refuses (401) and connecting fails");
    diag("%s", err);
    cfg.token = "wrong";
    ms = open_with(&T, &cfg, err, sizeof err);
    ok(!ms, "a wrong token: connecting fails");
    cfg.token = "s3cret-token";
    ms = open_with(&T, &cfg, err, sizeof err);
    ok(ms != NULL, "the right token: connected");
    ensemble *e = new_ensemble(ms, NULL, 0);
    ensemble_request q = base_req(NULL, 5);
    ensemble_result res;
    collect k;
    ok(e && gen(e, &q, &res, &k) == 0 && res.steps == 5, "generation with the token");
    ensemble_result_free(&res);
    char first[72];
    snprintf(first, sizeof first, "%s", T.last_session);
    ok(hex_id(first), "session ids are cs- and 128 random bits in hex");
    diag("session id %s", first);
    ok(T.last_deadline_ms > 0 && T.last_deadline_ms <= 2000, "each step carries the deadline header (<= the step timeout)");
    gen(e, &q, &res, &k);
    ensemble_result_free(&res);
    ok(hex_id(T.last_session) && strcmp(first, T.last_session), "the next request gets another id");

    /* the request's deadline: ends like max_tokens, sessions deleted, member not blamed */
    T.delay_ms = 40;
    int deletes = T.n_deletes;
    q = base_req(NULL, 100);
    q.deadline = clock_mono_s() + 0.3;
    double t0 = clock_mono_s();
    int rc = gen(e, &q, &res, &k);
    double took = clock_mono_s() - t0;
    ok(rc == 0 && res.status == 0 && res.deadline_exceeded && !strcmp(res.finish_reason, "length") && res.steps < 100,
       "past the request's deadline: finish_reason length, deadline_exceeded");
    diag("%d steps in %.2f s", res.steps, took);
    ok(took < 1.0, "it ended near the deadline");
    ok(T.n_deletes > deletes, "its session was deleted");
    ok(members_usable(ms, 0), "the member is not marked down for the request's deadline");
    ok(T.last_deadline_ms >= 0 && T.last_deadline_ms <= 300, "calls are cut to what is left of the deadline");
    ensemble_result_free(&res);
    T.delay_ms = 0;

    /* stopping between steps (a client gone) */
    deletes = T.n_deletes;
    q = base_req(NULL, 50);
    q.should_stop = stop_after_3;
    ok(gen(e, &q, &res, &k) == 0 && res.steps < 10 && !strcmp(res.finish_reason, "stop"),
       "should_stop ends the generation at the next step");
    ok(T.n_deletes > deletes, "and its session is deleted");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    /* the context check comes before auto-weight scoring */
    T.ctx_bytes = 8;
    ms = open_with(&T, &cfg, err, sizeof err);
    e = new_ensemble(ms, NULL, 0);
    q = base_req(NULL, 5);
    q.prompt = "a prompt much longer than eight bytes";
    q.weights_auto = 1;
    int scores = T.n_scores;
    ok(e && gen(e, &q, &res, &k) != 0 && res.status == 400 && res.code &&
           !strcmp(res.code, "context_length_exceeded"),
       "a prompt over a member's context: 400 context_length_exceeded");
    diag("%s", res.error);
    ok(strstr(res.error, "does not fit the context") && !strstr(res.error, "127.0.0.1"),
       "the member's message, without its address");
    is_int(T.n_scores - scores, 0, "nothing was scored for it (auto weights come after the check)");
    ensemble_result_free(&res);
    T.ctx_bytes = 0;
    q.prompt = "short";
    ok(gen(e, &q, &res, &k) == 0 && T.n_scores > scores, "a prompt that fits: auto weights score it");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);
    mock_stop(&T);
}

int main(void) {
    char err[256];
    init_mock(&A, "a", vocab_a, 20);
    init_mock(&A2, "a2", vocab_a, 20);
    init_mock(&B, "b", vocab_b, 12);
    init_mock(&C, "c", vocab_b, 12);
    C.fail_after = 3;
    init_mock(&D, "d", vocab_b, 12);
    D.delay_ms = 600;
    A.score_nll = 10;
    B.score_nll = 30;
    ok(!mock_start(&A) && !mock_start(&A2) && !mock_start(&B) && !mock_start(&C) && !mock_start(&D),
       "mock members listening");

    char ga[4096], gb[4096];
    size_t la = mock_greedy(&A, 12, ga, sizeof ga), lb = mock_greedy(&B, 12, gb, sizeof gb);
    diag("member a greedy: \"%s\"; member b greedy: \"%s\"", ga, gb);
    ok(la > 12 && lb > 12, "the members' own greedy texts are non-trivial");

    member_set *ms = open_set("a", &A, "b", &B, 5);
    ok(ms != NULL, "connected to two mock members");
    ensemble *e = new_ensemble(ms, "mixture", 0);
    ok(e != NULL, "ensemble_new");
    ensemble_result res;
    collect k;

    /* invariant 1: one member alone is that member */
    ensemble_request q = base_req("solo:a", 12);
    ok(gen(e, &q, &res, &k) == 0, "solo:a runs");
    is_str(res.text, ga, "solo:a greedy = member a's own greedy text");
    is_int(res.steps, 12, "12 steps");
    is_str(res.finish_reason, "length", "finish length");
    is_int(res.second_rounds, 0, "solo needs no second round");
    is_int(res.rounds, 12, "one round trip per step (the prompt's included)");
    ok(res.prompt_tokens > 0, "prompt tokens reported");
    is_str(k.text, res.text, "chunks concatenate to the text");
    ensemble_result_free(&res);
    q = base_req("solo:b", 12);
    gen(e, &q, &res, &k);
    is_str(res.text, gb, "solo:b greedy = member b's own greedy text");
    ensemble_result_free(&res);

    /* the step API: one committed step per call; stopping early keeps the text so far */
    {
        q = base_req("solo:a", 12);
        memset(&k, 0, sizeof k);
        k.all_valid = 1;
        ensemble_gen *g = ensemble_begin(e, &q, on_chunk, &k, &res);
        ok(g != NULL, "ensemble_begin");
        int steps = 0;
        while (steps < 3 && ensemble_step(g)) steps++;
        is_int(steps, 3, "three calls of ensemble_step, each going on");
        is_int(ensemble_end(g), 0, "ensemble_end after stopping early: ok");
        is_int(res.steps, 3, "three steps committed");
        is_str(res.finish_reason, "stop", "finish stop (the caller stopped)");
        diag("3 steps: \"%s\" (%zu bytes)", res.text, res.len);
        size_t pl = res.len; /* (a lone lead byte at the end is flushed as U+FFFD) */
        if (pl >= 3 && !memcmp(res.text + pl - 3, "\xEF\xBF\xBD", 3)) pl -= 3;
        ok(pl > 0 && pl < strlen(ga) && !strncmp(ga, res.text, pl), "the text so far: a prefix of a's greedy text");
        ensemble_result_free(&res);
        q = base_req("solo:nobody", 4);
        g = ensemble_begin(e, &q, on_chunk, &k, &res);
        ok(g && ensemble_step(g) == 0, "a bad request: the first step already ends");
        ok(ensemble_end(g) != 0 && res.status == 400 && strstr(res.error, "nobody"), "and ensemble_end reports 400");
        ensemble_result_free(&res);
    }

    /* invariant 3: weights (1,0) over different tokenizers = member 0 */
    q = base_req("mixture", 12);
    double w10[2] = {1, 0};
    q.weights = w10;
    q.n_weights = 2;
    gen(e, &q, &res, &k);
    is_str(res.text, ga, "weights (1,0) = member a exactly");
    is_int(res.members[1].steps_won, 0, "member b took no part");
    ensemble_result_free(&res);

    /* invariant 4 across tokenizers: every strategy keeps bytes whole */
    const char *strategies[] = {"mixture", "product", "min_ppl", "min_ppl_cross", "selective"};
    for (size_t i = 0; i < sizeof strategies / sizeof strategies[0]; i++) {
        q = base_req(strategies[i], 20);
        char what[128];
        int rc = gen(e, &q, &res, &k);
        snprintf(what, sizeof what, "%s over a+b: runs", strategies[i]);
        ok(rc == 0, what);
        diag("%s: \"%s\" (%d steps, %d rounds, %d second rounds, won a=%d b=%d, %.0f us cpu/step)", strategies[i],
             res.text, res.steps, res.rounds, res.second_rounds, res.members[0].steps_won, res.members[1].steps_won,
             res.steps ? 1e6 * res.cpu_seconds / res.steps : 0);
        snprintf(what, sizeof what, "%s: text follows the script (no byte lost or doubled)", strategies[i]);
        ok(res.len > 20 && is_script_prefix(res.text, res.len), what);
        snprintf(what, sizeof what, "%s: valid UTF-8, whole chunks, chunks = text", strategies[i]);
        ok(utf8_valid(res.text, res.len) && k.all_valid && !strcmp(k.text, res.text), what);
        ensemble_result_free(&res);
    }

    /* skipping a second round never changes the greedy text */
    {
        q = base_req("mixture", 30);
        gen(e, &q, &res, &k);
        char skip_text[4096];
        snprintf(skip_text, sizeof skip_text, "%s", res.text);
        int skipped = res.skipped_rounds, second = res.second_rounds;
        ensemble_result_free(&res);
        ensemble *e2 = new_ensemble(ms, "mixture", 1);
        gen(e2, &q, &res, &k);
        diag("mixture 30 steps: %d second rounds + %d skipped; without skipping %d second rounds", second, skipped,
             res.second_rounds);
        ok(skipped > 0 && res.skipped_rounds == 0, "some second rounds were skipped");
        is_str(skip_text, res.text, "skipping changes nothing in the greedy text");
        ensemble_result_free(&res);
        ensemble_free(e2);
    }

    /* selective: a lead that is always sure is the lead alone, and the other
     * member is not even asked; a lead never sure is the mixture */
    {
        q = base_req("selective", 12);
        q.threshold = 1e-9;
        int calls_b = B.n_step_calls;
        gen(e, &q, &res, &k);
        is_str(res.text, ga, "selective, lead always sure = member a alone");
        is_int(B.n_step_calls - calls_b, 1, "the other member only opened its session");
        ensemble_result_free(&res);
        q = base_req("mixture", 16);
        gen(e, &q, &res, &k);
        char mix_text[4096];
        snprintf(mix_text, sizeof mix_text, "%s", res.text);
        ensemble_result_free(&res);
        q = base_req("selective", 16);
        q.threshold = 1;
        gen(e, &q, &res, &k);
        is_str(res.text, mix_text, "selective, lead never sure = mixture (members catch up each step)");
        ensemble_result_free(&res);
        q = base_req("selective", 30);
        q.threshold = 0.6;
        gen(e, &q, &res, &k);
        diag("selective 0.6: \"%s\" (%d rounds, %d second)", res.text, res.rounds, res.second_rounds);
        ok(is_script_prefix(res.text, res.len) && res.steps == 30, "selective with lagging members keeps the text whole");
        ensemble_result_free(&res);
    }

    /* stop sequences: cut, not emitted, finish "stop" */
    q = base_req("mixture", 40);
    const char *stops[] = {"zzz", "w\xC3\xB6r"};
    q.stop = stops;
    q.n_stop = 2;
    gen(e, &q, &res, &k);
    is_str(res.text, "Hello ", "stop sequence cuts the text before it");
    is_str(res.finish_reason, "stop", "finish stop on a stop sequence");
    is_str(k.text, "Hello ", "no chunk carried stop-sequence bytes");
    ensemble_result_free(&res);

    /* logprobs */
    q = base_req("mixture", 3);
    q.logprobs = 3;
    gen(e, &q, &res, &k);
    ok(res.steps == 3, "logprobs run");
    ensemble_result_free(&res);

    /* max_tokens 0: only the prompt */
    q = base_req("mixture", 0);
    gen(e, &q, &res, &k);
    ok(res.status == 0 && res.len == 0 && res.steps == 0 && res.prompt_tokens > 0, "max_tokens 0 processes the prompt only");
    is_str(res.finish_reason, "length", "max_tokens 0 finishes with length");
    ensemble_result_free(&res);

    /* seeded sampling is reproducible */
    q = base_req("mixture", 15);
    q.temperature = 1.5;
    q.has_seed = 1;
    q.seed = 1234;
    gen(e, &q, &res, &k);
    char first[4096];
    snprintf(first, sizeof first, "%s", res.text);
    ensemble_result_free(&res);
    gen(e, &q, &res, &k);
    is_str(res.text, first, "same seed, same sampled text");
    ok(k.all_valid && utf8_valid(res.text, res.len), "sampled text is valid UTF-8");
    diag("sampled: \"%s\"", res.text);
    ensemble_result_free(&res);

    /* bad requests */
    q = base_req("bogus", 4);
    ok(gen(e, &q, &res, &k) != 0 && res.status == 400, "unknown strategy: 400");
    ensemble_result_free(&res);
    q = base_req("solo:zzz", 4);
    ok(gen(e, &q, &res, &k) != 0 && res.status == 400 && strstr(res.error, "zzz"), "unknown solo member: 400");
    ensemble_result_free(&res);
    q = base_req("mixture", 4);
    double w3[3] = {1, 1, 1};
    q.weights = w3;
    q.n_weights = 3;
    ok(gen(e, &q, &res, &k) != 0 && res.status == 400, "wrong weights count: 400");
    ensemble_result_free(&res);
    ok(ensemble_strategy_valid(e, "solo:b", err, sizeof err) == 0, "solo:b valid");
    ok(ensemble_strategy_valid(e, "solo:x", err, sizeof err) != 0, "solo:x invalid");

    /* auto weights: softmax(-nll/bytes) = exp(-1), exp(-3) for a 10-byte prompt */
    q = base_req("mixture", 2);
    q.prompt = "abcdefghij";
    q.weights_auto = 1;
    gen(e, &q, &res, &k);
    is_near(res.members[0].weight, 1 / (1 + exp(-2.0)), 1e-9, "auto weights from prompt perplexity");
    ensemble_result_free(&res);

    /* concurrency: four requests at once give the single-request text */
    q = base_req("mixture", 16);
    gen(e, &q, &res, &k);
    thr_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].e = e;
        pthread_create(&th[i], NULL, thr_main, &args[i]);
    }
    int same = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        same &= args[i].rc == 0 && !strcmp(args[i].text, res.text);
    }
    ok(same, "four concurrent requests each give the same text as one alone");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    int used = 0;
    for (int i = 0; i < MOCK_MAXS; i++) used += A.s[i].used + B.s[i].used;
    is_int(used, 0, "every worker session was deleted after its request");
    diag("member b: %d step calls, %d candidate-only (second round) calls", B.n_step_calls, B.n_cand_only);

    /* invariant 2: the same model twice under mixture is that model */
    ms = open_set("a", &A, "a2", &A2, 5);
    e = new_ensemble(ms, "mixture", 0);
    q = base_req(NULL, 12);
    gen(e, &q, &res, &k);
    is_str(res.text, ga, "mixture of a model with itself = that model");
    is_int(res.second_rounds, 0, "identical members need no second round");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    /* a member that fails mid-request is dropped, the other goes on */
    ms = open_set("a", &A, "c", &C, 5);
    e = new_ensemble(ms, "mixture", 0);
    q = base_req(NULL, 12);
    ok(gen(e, &q, &res, &k) == 0, "request survives a failing member");
    ok(res.members[1].failed && strstr(res.members[1].failure, "500"), "the failure is reported");
    diag("failure: %s", res.members[1].failure);
    /* (12 steps may end inside "ö": the final flush then replaces the lone
     * lead byte by U+FFFD, as the contract says) */
    size_t tl = res.len;
    if (tl >= 3 && !memcmp(res.text + tl - 3, "\xEF\xBF\xBD", 3)) tl -= 3;
    ok(is_script_prefix(res.text, tl) && res.steps == 12, "the rest of the text comes from member a");
    diag("text \"%s\", %d steps, finish %s", res.text, res.steps, res.finish_reason);
    ensemble_result_free(&res);
    q = base_req("solo:c", 4);
    ok(gen(e, &q, &res, &k) != 0 && res.status == 503, "no member left: 503");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    /* a member that misses the step deadline is dropped */
    ms = open_set("a", &A, "d", &D, 0.2);
    e = new_ensemble(ms, "mixture", 0);
    q = base_req(NULL, 6);
    int d_deletes = D.n_deletes;
    ok(gen(e, &q, &res, &k) == 0 && res.members[1].failed, "a slow member is dropped at the deadline");
    diag("failure: %s", res.members[1].failure);
    ok(strstr(res.members[1].failure, "member 'd'") && strstr(res.members[1].failure, "step deadline") &&
           !strstr(res.members[1].failure, "127.0.0.1") && !strstr(res.members[1].failure, "http"),
       "the failure names the member by name, no address");
    ok(D.n_deletes > d_deletes, "the slow member is told to drop the session it missed");
    is_str(res.text, mock_greedy(&A, 6, ga, sizeof ga) ? ga : "", "then the text is member a's");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    /* END event: member a ends after 11 bytes */
    A.end_at = 11;
    ms = open_set("a", &A, NULL, NULL, 5);
    e = new_ensemble(ms, NULL, 0);
    q = base_req(NULL, 40);
    gen(e, &q, &res, &k);
    mock_greedy(&A, 40, ga, sizeof ga);
    is_str(res.text, ga, "END event ends the text where the member's greedy ends");
    is_str(res.finish_reason, "stop", "finish stop at END");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);

    /* chat messages and the blocking JSON helper (what ppl/ab use for /v1/score) */
    A.end_at = 0;
    ms = open_set("a", &A, "b", &B, 5);
    e = new_ensemble(ms, NULL, 0);
    q = base_req(NULL, 5);
    q.prompt = NULL;
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    q.messages = msgs;
    ok(gen(e, &q, &res, &k) == 0 && res.steps == 5, "chat messages request runs");
    ensemble_result_free(&res);
    json_decref(msgs);
    proto_score_req sq = {"hello", 5, 1};
    members_score_answer sa;
    proto_error pe;
    is_int(members_score(ms, 1, &sq, 5, &sa, &pe), 0, "members_score (the score operation, what ppl/ab use)");
    is_near(sa.res.sum_logprob, -30, 1e-12, "members_score decoded the answer");
    members_score_release(&sa);
    const proto_info *info = members_info(ms, 1);
    ok(info && info->protocol == PROTO_VERSION, "members_info: the member's description, protocol checked");
    ensemble_free(e);
    members_free(ms);

    /* a member that goes away and comes back is used again (health backoff) */
    init_mock(&E, "e", vocab_b, 12);
    mock_start(&E);
    int eport = E.port;
    ms = open_set("e", &E, NULL, NULL, 2);
    e = new_ensemble(ms, NULL, 0);
    mock_stop(&E);
    q = base_req(NULL, 3);
    ok(gen(e, &q, &res, &k) != 0 && res.status == 503, "member gone: 503");
    ensemble_result_free(&res);
    ok(!members_usable(ms, 0), "and it is marked down");
    ok(mock_start_port(&E, eport) == 0, "the member comes back on its port");
    usleep(700 * 1000); /* past the first backoff (0.5 s) */
    ok(gen(e, &q, &res, &k) == 0 && res.steps == 3, "after the backoff it is probed and used again");
    ensemble_result_free(&res);
    ensemble_free(e);
    members_free(ms);
    mock_stop(&E);

    /* a member whose masses sum above 1 (rounding, or a member that lies) is
     * scaled down, not trusted and not fatal: the events invariant is
     * asserted before every decision, so an unbounded member would abort */
    init_mock(&F, "f", vocab_b, 12);
    F.inflate_logq = log(5.0);
    ok(mock_start(&F) == 0, "a member that reports every mass five times too large");
    ms = open_set("a", &A, "f", &F, 5);
    e = new_ensemble(ms, "mixture", 0);
    for (int seed = 1; seed <= 3; seed++) {
        q = base_req("mixture", 12);
        q.temperature = 1.0;
        q.has_seed = 1;
        q.seed = (uint64_t)seed;
        int rc = gen(e, &q, &res, &k);
        diag("seed %d: %d steps", seed, res.steps);
        ok(rc == 0 && res.steps > 0 && k.all_valid, "sampled with an over-reporting member: the request completes");
        ok(!res.members[1].failed, "and the member is kept, its masses bounded");
        ensemble_result_free(&res);
    }
    ensemble_free(e);
    members_free(ms);
    mock_stop(&F);

    test_access_and_limits();

    mock_stop(&A);
    mock_stop(&A2);
    mock_stop(&B);
    mock_stop(&C);
    mock_stop(&D);
    curl_global_cleanup();
    return tap_done();
}
