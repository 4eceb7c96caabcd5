/* Speculative steps with a caller's draft (docs/PROTOCOL.md, draft_b64) and
 * the row cache of speculating sessions (worker/wk_engine.c, "Speculative
 * steps"), on the project's models/a.gguf (SentencePiece) and models/b.gguf
 * (GPT-2 byte-level BPE):
 *  - a draft_b64's answers equal, bit for bit, those of the same pieces sent
 *    one request each, for the member's own greedy pieces (healing rule 1)
 *    and for pieces that split words (rule 2);
 *  - draft_b64 over pieces that match its prediction costs one decode in
 *    all, and its drafted steps decode nothing themselves;
 *  - steps_b64 over pieces drafted in the previous call (by draft or by
 *    draft_b64) decodes nothing and answers as without the cache;
 *  - the session is unchanged after a draft_b64; a failing piece ends the
 *    draft early; the request checks (draft with draft_b64, empty pieces,
 *    too many). */
#include "tests/tap.h"
#include "worker/wk_engine.h"
#include "worker/wk_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_PIECES 6

static const char *PROMPT = "Once upon a time, there was a little";

typedef struct spec_q {
    const char *prompt;
    const char *append;
    const proto_str *steps;
    int n_steps;
    int draft;
    const proto_str *dsteps;
    int n_dsteps;
} spec_q;

static int spec(wk_engine *e, const char *sid, spec_q sq, wk_step_res *res, wk_err *err) {
    wk_step_req q = {.session = sid, .prompt = sq.prompt, .prompt_len = sq.prompt ? strlen(sq.prompt) : 0,
                     .append = (const unsigned char *)sq.append, .append_len = sq.append ? strlen(sq.append) : 0,
                     .k = 3, .steps = sq.steps, .n_steps = sq.n_steps, .draft = sq.draft,
                     .draft_steps = sq.dsteps, .n_draft_steps = sq.n_dsteps};
    memset(err, 0, sizeof *err);
    int r = wk_step(e, &q, res, err);
    if (r) diag("step error %d %s: %s", err->status, err->code ? err->code : "", err->message);
    return r;
}

/* The largest difference between two answers' numbers (0 = bit for bit;
 * INFINITY when their strings, residue or n_past differ). */
static double answer_diff(const wk_step_res *a, const wk_step_res *b) {
    if (a->n_past != b->n_past || a->residue_len != b->residue_len || a->n_top != b->n_top ||
        memcmp(a->residue, b->residue, a->residue_len) != 0)
        return INFINITY;
    double d = 0;
#define WK_D(x, y) do { double x_ = (x), y_ = (y); \
        double dd_ = x_ == y_ ? 0 : isfinite(x_) && isfinite(y_) ? fabs(x_ - y_) : INFINITY; \
        if (dd_ > d) d = dd_; } while (0)
    WK_D(a->end_logq, b->end_logq);
    for (int i = 0; i < a->n_top; i++) {
        if (a->top[i].len != b->top[i].len || memcmp(a->top[i].s, b->top[i].s, a->top[i].len) != 0) return INFINITY;
        WK_D(a->top[i].logq, b->top[i].logq);
        WK_D(a->top[i].logp, b->top[i].logp);
    }
#undef WK_D
    return d;
}

static uint64_t decodes(wk_engine *e) {
    wk_stats st;
    wk_engine_stats(e, &st);
    return st.decodes;
}

static uint64_t tokens_decoded(wk_engine *e) {
    wk_stats st;
    wk_engine_stats(e, &st);
    return st.tokens_decoded;
}

/* ref[0] = the answer to the prompt, ref[j + 1] = after pieces[0..j], each
 * sent as its own request on a session of its own. */
static int reference(wk_engine *e, const char *sid, const proto_str *pieces, int n, wk_step_res *ref) {
    wk_err err;
    if (spec(e, sid, (spec_q){.prompt = PROMPT}, &ref[0], &err)) return -1;
    for (int j = 0; j < n; j++) {
        char a[128];
        snprintf(a, sizeof a, "%.*s", (int)pieces[j].n, (const char *)pieces[j].p);
        if (spec(e, sid, (spec_q){.append = a}, &ref[j + 1], &err)) return -1;
    }
    return 0;
}

/* The N_PIECES strings as pieces, and their one-request-each reference
 * answers on session sid (h: N_PIECES + 1 answers, zeroed first). */
static int pieces_and_reference(wk_engine *e, const char *sid, const char *const *strs, proto_str *pieces,
                                wk_step_res *h) {
    for (int j = 0; j < N_PIECES; j++) pieces[j] = (proto_str){(const unsigned char *)strs[j], strlen(strs[j])};
    memset(h, 0, (N_PIECES + 1) * sizeof *h);
    return reference(e, sid, pieces, N_PIECES, h);
}

static void free_all(wk_step_res *r, int n) {
    for (int i = 0; i < n; i++) wk_step_res_free(&r[i]);
}

/* Every drafted answer against the reference; returns the worst difference. */
static double draft_diff(const wk_step_res *d, const wk_step_res *ref, int n) {
    double worst = answer_diff(d, &ref[0]);
    for (int j = 0; j < n && j < d->n_draft; j++) {
        double x = answer_diff(&d->draft[j], &ref[j + 1]);
        if (x > worst) worst = x;
    }
    return worst;
}

static void run(const char *root, const char *file) {
    char path[1024], emsg[256], what[256];
    snprintf(path, sizeof path, "%s/models/%s", root, file);
    wk_model *m = wk_model_load(path, 0, emsg, sizeof emsg);
    ok(m != NULL, file);
    if (!m) {
        diag("%s", emsg);
        return;
    }
    wk_engine_opts o = {.n_ctx = 256, .n_threads = 1, .slots = 8};
    wk_engine *e = wk_engine_create(m, &o, emsg, sizeof emsg);
    ok(e != NULL, "engine created");
    if (!e) {
        wk_model_free(m);
        return;
    }
    wk_err err;
    wk_step_res g[N_PIECES + 1], d, res;
    memset(g, 0, sizeof g);

    /* the member's own greedy pieces, one request each: the reference */
    ok(spec(e, "g_ref", (spec_q){.prompt = PROMPT}, &g[0], &err) == 0, "(reference: the prompt)");
    proto_str own[N_PIECES];
    char ownbuf[N_PIECES][64];
    int okref = 1;
    for (int j = 0; j < N_PIECES && okref; j++) {
        okref = g[j].n_top > 0 && g[j].top[0].len < sizeof ownbuf[j];
        if (!okref) break;
        memcpy(ownbuf[j], g[j].top[0].s, g[j].top[0].len);
        ownbuf[j][g[j].top[0].len] = 0;
        own[j] = (proto_str){(const unsigned char *)ownbuf[j], g[j].top[0].len};
        okref = spec(e, "g_ref", (spec_q){.append = ownbuf[j]}, &g[j + 1], &err) == 0;
    }
    ok(okref, "(reference: the greedy pieces one request each)");
    if (!okref) goto out;

    /* draft_b64 over the member's own pieces (rule 1), on a session that
     * already answered its prompt: one decode for the whole draft */
    ok(spec(e, "g_d", (spec_q){.prompt = PROMPT}, &res, &err) == 0, "(a session at the prompt)");
    wk_step_res_free(&res);
    uint64_t d0 = decodes(e), t0 = tokens_decoded(e);
    int rc = spec(e, "g_d", (spec_q){.dsteps = own, .n_dsteps = N_PIECES}, &d, &err);
    uint64_t d1 = decodes(e), t1 = tokens_decoded(e);
    snprintf(what, sizeof what, "%s: draft_b64 of its own %d greedy pieces answers %d drafted steps", file, N_PIECES,
             N_PIECES);
    ok(rc == 0 && d.n_draft == N_PIECES, what);
    double worst = rc ? INFINITY : draft_diff(&d, g, N_PIECES);
    diag("%s: own pieces: worst difference %g", file, worst);
    snprintf(what, sizeof what, "%s: ... each = the answer after the pieces sent one request each, bit for bit", file);
    ok(worst == 0, what);
    int drafted_decoded = 0;
    for (int j = 0; j < d.n_draft; j++) drafted_decoded += d.draft[j].decoded;
    diag("%s: draft_b64 of %d pieces: %llu decodes, the drafted steps decoded %d positions themselves", file,
         N_PIECES, (unsigned long long)(d1 - d0), drafted_decoded);
    snprintf(what, sizeof what, "%s: ... costs one decode in all (the prefetch), not one per piece", file);
    ok(rc == 0 && d1 - d0 == 1, what);
    diag("%s: ... %d positions prefetched", file, d.decoded);
    snprintf(what, sizeof what, "%s: ... the answer's decoded counts the prefetched positions (at least one per piece)",
             file);
    ok(rc == 0 && d.decoded >= N_PIECES && (uint64_t)d.decoded == t1 - t0, what);
    snprintf(what, sizeof what, "%s: ... its drafted steps decode nothing themselves (rows from the prefetch)", file);
    ok(rc == 0 && drafted_decoded == 0, what);
    wk_step_res_free(&d);

    /* steps_b64 over pieces drafted in the previous call */
    for (int m4 = 1; m4 <= 4; m4 += 3) {
        rc = spec(e, "g_d", (spec_q){.steps = own, .n_steps = m4}, &res, &err);
        snprintf(what, sizeof what,
                 "%s: steps_b64 over the first %d pieces drafted by draft_b64: decodes nothing, same answer", file, m4);
        ok(rc == 0 && res.decoded == 0 && answer_diff(&res, &g[m4]) == 0, what);
        if (!rc) diag("%s: ... decoded %d", file, res.decoded);
        wk_step_res_free(&res);
        if (m4 == 1) { /* back to the prompt: steps_b64 committed one piece */
            ok(spec(e, "g_d", (spec_q){.prompt = PROMPT}, &res, &err) == 0, "(the session back at the prompt)");
            wk_step_res_free(&res);
            ok(spec(e, "g_d", (spec_q){.dsteps = own, .n_dsteps = N_PIECES}, &res, &err) == 0, "(drafted again)");
            wk_step_res_free(&res);
        }
    }
    /* steps_b64 and draft_b64 in one request: the first two pieces taken,
     * the other four drafted after the request's own step */
    ok(spec(e, "sb", (spec_q){.prompt = PROMPT}, &res, &err) == 0, "(session sb at the prompt)");
    wk_step_res_free(&res);
    rc = spec(e, "sb", (spec_q){.steps = own, .n_steps = 2, .dsteps = own + 2, .n_dsteps = N_PIECES - 2}, &d, &err);
    worst = rc ? INFINITY : draft_diff(&d, g + 2, N_PIECES - 2);
    snprintf(what, sizeof what, "%s: steps_b64 (2 pieces) with draft_b64 (4 more): the same answers, bit for bit", file);
    ok(rc == 0 && d.n_draft == N_PIECES - 2 && worst == 0, what);
    wk_step_res_free(&d);

    /* the same after the member's own draft */
    ok(spec(e, "o_d", (spec_q){.prompt = PROMPT, .draft = N_PIECES}, &d, &err) == 0 && d.n_draft == N_PIECES &&
           draft_diff(&d, g, N_PIECES) == 0,
       "its own draft: the same answers");
    wk_step_res_free(&d);
    rc = spec(e, "o_d", (spec_q){.steps = own, .n_steps = 4}, &res, &err);
    snprintf(what, sizeof what, "%s: steps_b64 over 4 pieces of its own draft: decodes nothing, same answer", file);
    ok(rc == 0 && res.decoded == 0 && answer_diff(&res, &g[4]) == 0, what);
    wk_step_res_free(&res);

    /* pieces that are not the member's tokens (rule 2 healing), with a
     * prompt (a new session) in the same request */
    {
        static const char *split[N_PIECES] = {" th", "e cat", " sa", "t on the m", "at.", " It was"};
        proto_str sp[N_PIECES];
        wk_step_res h[N_PIECES + 1];
        ok(pieces_and_reference(e, "h_ref", split, sp, h) == 0, "(reference: split words one request each)");
        rc = spec(e, "h_d", (spec_q){.prompt = PROMPT, .dsteps = sp, .n_dsteps = N_PIECES}, &d, &err);
        worst = rc ? INFINITY : draft_diff(&d, h, N_PIECES);
        diag("%s: split words: worst difference %g", file, worst);
        for (int j = 0; j < d.n_draft; j++)
            diag("%s: ... piece %d: decoded %d drafted, %d one request each", file, j + 1, d.draft[j].decoded,
                 h[j + 1].decoded);
        snprintf(what, sizeof what, "%s: draft_b64 of split words (rule 2) with a prompt = one request each, bit for bit",
                 file);
        ok(rc == 0 && d.n_draft == N_PIECES && worst == 0, what);
        wk_step_res_free(&d);
        rc = spec(e, "h_d", (spec_q){.steps = sp, .n_steps = 3}, &res, &err);
        snprintf(what, sizeof what, "%s: ... then steps_b64 over 3 of them answers as without the cache", file);
        ok(rc == 0 && answer_diff(&res, &h[3]) == 0, what);
        if (!rc) diag("%s: ... decoded %d", file, res.decoded);
        wk_step_res_free(&res);

        /* another model's idea of the text, on the own-pieces session: the
         * session is unchanged afterwards */
        wk_step_res a0, a1, u_ref;
        ok(spec(e, "u", (spec_q){.prompt = PROMPT}, &a0, &err) == 0, "(session u at the prompt)");
        rc = spec(e, "u", (spec_q){.dsteps = sp, .n_dsteps = N_PIECES}, &d, &err);
        ok(rc == 0 && answer_diff(&d, &a0) == 0 && d.n_draft == N_PIECES, "a draft_b64 on session u");
        wk_step_res_free(&d);
        rc = spec(e, "u", (spec_q){0}, &a1, &err);
        snprintf(what, sizeof what, "%s: after draft_b64 the session re-answers as before", file);
        ok(rc == 0 && answer_diff(&a1, &a0) == 0, what);
        if (!rc) wk_step_res_free(&a1);
        rc = spec(e, "u", (spec_q){.append = " dog"}, &a1, &err);
        snprintf(what, sizeof what, "%s: ... and its next step equals the same step on a session that never drafted",
                 file);
        ok(rc == 0 && spec(e, "u_ref", (spec_q){.prompt = PROMPT}, &u_ref, &err) == 0, "(reference session)");
        wk_step_res_free(&u_ref);
        ok(spec(e, "u_ref", (spec_q){.append = " dog"}, &u_ref, &err) == 0 && answer_diff(&a1, &u_ref) == 0, what);
        wk_step_res_free(&a1);
        wk_step_res_free(&u_ref);
        wk_step_res_free(&a0);
        free_all(h, N_PIECES + 1);
    }

    /* whole words that are not the member's own proposals (rule 2: each
     * state ends in a residue token, the word just appended): the drafted
     * states follow the prediction, so only teacher-forced proposals
     * decode, and each drafted step decodes at least one position less
     * than the same step sent alone (which decodes the new residue token) */
    {
        static const char *words[N_PIECES] = {" the", " cat", " sat", " on", " the", " mat."};
        proto_str wp[N_PIECES];
        wk_step_res h[N_PIECES + 1];
        ok(pieces_and_reference(e, "w_ref", words, wp, h) == 0, "(reference: words one request each)");
        ok(spec(e, "w_d", (spec_q){.prompt = PROMPT}, &res, &err) == 0, "(session w_d at the prompt)");
        wk_step_res_free(&res);
        d0 = decodes(e);
        rc = spec(e, "w_d", (spec_q){.dsteps = wp, .n_dsteps = N_PIECES}, &d, &err);
        d1 = decodes(e);
        int fewer = rc == 0 && d.n_draft == N_PIECES && d1 - d0 == 1;
        diag("%s: draft_b64 of %d words: %llu decodes", file, N_PIECES, (unsigned long long)(d1 - d0));
        for (int j = 0; j < d.n_draft; j++) {
            diag("%s: ... word %d: decoded %d drafted, %d one request each", file, j + 1, d.draft[j].decoded,
                 h[j + 1].decoded);
            fewer &= d.draft[j].decoded < h[j + 1].decoded;
        }
        snprintf(what, sizeof what, "%s: draft_b64 of words (rule 2) = one request each, bit for bit", file);
        ok(rc == 0 && d.n_draft == N_PIECES && draft_diff(&d, h, N_PIECES) == 0, what);
        snprintf(what, sizeof what,
                 "%s: ... one decode in all, each drafted step decoding less than alone (its positions prefetched)",
                 file);
        ok(fewer, what);
        wk_step_res_free(&d);
        free_all(h, N_PIECES + 1);
    }

    /* cached rows die with the KV positions they depend on: a session that
     * drafted, then moved to another text of the same start, then back to
     * a shorter one, answers as a fresh session */
    {
        char p2[256], p3[256];
        snprintf(p2, sizeof p2, "%s big red dog ran", PROMPT);
        snprintf(p3, sizeof p3, "%s big", PROMPT);
        wk_step_res a, b;
        ok(spec(e, "v", (spec_q){.prompt = PROMPT, .dsteps = own, .n_dsteps = N_PIECES}, &res, &err) == 0,
           "(session v drafted its own pieces)");
        wk_step_res_free(&res);
        ok(spec(e, "v", (spec_q){.prompt = p2}, &res, &err) == 0, "(session v at another text)");
        wk_step_res_free(&res);
        rc = spec(e, "v", (spec_q){.prompt = p3}, &a, &err);
        snprintf(what, sizeof what, "%s: rows of replaced KV positions are not reused: as a fresh session", file);
        ok(rc == 0 && spec(e, "v_ref", (spec_q){.prompt = p3}, &b, &err) == 0 && answer_diff(&a, &b) == 0, what);
        wk_step_res_free(&a);
        wk_step_res_free(&b);
    }

    /* a failing piece (over the context) ends the draft early */
    {
        static char longtext[1400];
        longtext[0] = 0;
        while (strlen(longtext) + 24 < sizeof longtext) strcat(longtext, " and the cat sat on it.");
        proto_str bad[3] = {own[0], {(const unsigned char *)longtext, strlen(longtext)}, own[1]};
        wk_step_res a0, a1;
        ok(spec(e, "f", (spec_q){.prompt = PROMPT}, &a0, &err) == 0, "(session f at the prompt)");
        rc = spec(e, "f", (spec_q){.dsteps = bad, .n_dsteps = 3}, &d, &err);
        snprintf(what, sizeof what, "%s: a draft_b64 piece over the context ends the draft after the pieces before it",
                 file);
        ok(rc == 0 && d.n_draft == 1 && answer_diff(&d.draft[0], &g[1]) == 0, what);
        wk_step_res_free(&d);
        rc = spec(e, "f", (spec_q){0}, &a1, &err);
        ok(rc == 0 && answer_diff(&a1, &a0) == 0 && a1.n_past == a0.n_past, "... the session unchanged");
        if (!rc) wk_step_res_free(&a1);
        wk_step_res_free(&a0);
    }

    /* the request checks */
    {
        proto_str many[PROTO_MAX_DRAFT + 1], empty[2] = {own[0], {(const unsigned char *)"", 0}};
        for (int i = 0; i <= PROTO_MAX_DRAFT; i++) many[i] = own[0];
        rc = spec(e, "g_ref", (spec_q){.draft = 2, .dsteps = own, .n_dsteps = 2}, &res, &err);
        ok(rc != 0 && err.status == 400 && !strcmp(err.code, PROTO_ERR_INVALID_REQUEST),
           "draft with draft_b64: 400 invalid_request");
        rc = spec(e, "g_ref", (spec_q){.dsteps = empty, .n_dsteps = 2}, &res, &err);
        ok(rc != 0 && err.status == 400 && !strcmp(err.code, PROTO_ERR_INVALID_VALUE), "an empty piece: 400");
        rc = spec(e, "g_ref", (spec_q){.dsteps = many, .n_dsteps = PROTO_MAX_DRAFT + 1}, &res, &err);
        ok(rc != 0 && err.status == 400 && !strcmp(err.code, PROTO_ERR_INVALID_VALUE), "17 pieces: 400");
        rc = spec(e, "nobody", (spec_q){.dsteps = own, .n_dsteps = 2}, &res, &err);
        ok(rc != 0 && err.status == 404, "draft_b64 on an unknown session without a prompt: 404");
    }
out:
    free_all(g, N_PIECES + 1);
    wk_engine_free(e);
    wk_model_free(m);
}

int main(void) {
    const char *root = getenv("CONSORT_ROOT");
    wk_backend_init();
    run(root ? root : ".", "a.gguf");
    run(root ? root : ".", "b.gguf");
    wk_backend_free();
    return tap_done();
}
