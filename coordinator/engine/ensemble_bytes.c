/* coordinator/engine/ensemble_bytes.c: the members' next-byte masses along
 * a given text (ensemble_score_bytes, contract in ensemble.h).
 *
 * Two walks. With beam > 0 (consort ppl's default) each member answers
 * the whole text in one call, POST /v1/next_bytes (PROTOCOL.md "The
 * next-byte walk"): its distributions summed over covering tokenizations
 * inside the current word, which the per-byte walk below cannot give
 * (it follows the canonical tokenization of the prefix, and loses a word
 * whose prefix is tokenized otherwise than the word); the members run
 * concurrently and the rows are then handed to on_byte in order. With
 * beam 0 the per-byte walk below runs (kept for members without the
 * endpoint, e.g. the test mocks, and for comparison).
 *
 * Why a walk of its own. ensemble_score_text drives generation's step
 * machinery (candidate sets, events, REST); a byte-level rule needs none of
 * it: at every byte it asks each member for its next-byte distribution
 * (the step request's next_bytes, PROTOCOL.md), which the worker answers by
 * range sums over its byte-sorted vocabulary: the tokens that extend the
 * residue r, plus, after the residue token, the tokens that start a new
 * token with the byte (one-byte *candidates* would leave that second part
 * out whenever a token extends r + b, which cost a member 0.8 bits/byte).
 * So this file talks to the member sessions directly (member.h): one
 * concurrent round per byte, each member appending the previous byte and
 * answering the 256 masses and its end-of-text mass. The
 * rule that combines them (the byte pool of `consort ppl`) is the
 * caller's, through on_byte; the walk is the same for any rule, and uses
 * only the text before each byte (fair by construction).
 *
 * State: one walk per call, on the stack: each member's session, whether it
 * was opened, its window start. What may change: the window policy (same
 * as ensemble_score.c's: half a window, moved to a word start).
 */
#include "coordinator/engine/ensemble_internal.h"

#include "common/clock.h"
#include "common/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BYTES_MAX_REOPENS 8
#define BYTES_EVENTS PROTO_NEXT_BYTES

typedef struct {
    ensemble *e;
    const ensemble_bytes_request *q;
    ensemble_bytes_result *out;
    member_round *round;
    int part[CONSORT_MAX_MEMBERS];
    member_session *s[CONSORT_MAX_MEMBERS];
    int opened[CONSORT_MAX_MEMBERS];      /* the session holds text[win..pos) */
    size_t win[CONSORT_MAX_MEMBERS];
    const proto_step_res *res[CONSORT_MAX_MEMBERS];
    proto_error perr[CONSORT_MAX_MEMBERS];
    int rc[CONSORT_MAX_MEMBERS];
    double *lq;                           /* nm * 257 */
} byte_walk;

static int walk_fail(byte_walk *w, int status, const char *msg) {
    if (!w->out->status) {
        w->out->status = status;
        snprintf(w->out->error, sizeof w->out->error, "%.250s", msg);
    }
    return -1;
}

/* A fresh session for member i with a random id; -1 out of memory or entropy. */
static int new_session(byte_walk *w, size_t i) {
    unsigned char b[12];
    if (rng_os_bytes(b, sizeof b)) return walk_fail(w, 500, "no random source for a session id");
    char id[PROTO_SESSION_MAX + 1];
    size_t k = (size_t)snprintf(id, sizeof id, "cb-");
    for (size_t j = 0; j < sizeof b; j++, k += 2) snprintf(id + k, sizeof id - k, "%02x", b[j]);
    w->s[i] = member_open(w->e->ms, i, id, w->e->cfg.step_timeout > 0 ? w->e->cfg.step_timeout : 30);
    w->opened[i] = 0;
    return w->s[i] ? 0 : walk_fail(w, 500, "out of memory");
}

/* Ends member i's session: deleted on the member after the per-byte walk;
 * the whole-text walk (beam > 0) opens none there, so it is only freed. */
static void drop_session(byte_walk *w, size_t i) {
    if (!w->s[i]) return;
    if (w->q->beam <= 0) {
        member_close(w->s[i], w->round);
        member_round_run(w->round);
    }
    member_session_free(w->s[i]);
    w->s[i] = NULL;
}

/* Queues member i's step at position pos: a new session gets the prompt ""
 * and its window text[win..pos); an open one the byte before pos. */
static int queue_step(byte_walk *w, size_t i, size_t pos) {
    proto_step_req q;
    memset(&q, 0, sizeof q);
    q.session = w->s[i]->id;
    q.k = 0;
    q.next_bytes = w->q->depth > 0 ? w->q->depth : ENSEMBLE_BYTES_DEPTH;
    if (!w->opened[i]) {
        q.prompt = "";
        q.append = (proto_str){(const unsigned char *)w->q->text + w->win[i], pos - w->win[i]};
    } else if (pos > 0) {
        q.append = (proto_str){(const unsigned char *)w->q->text + pos - 1, 1};
    }
    return w->s[i]->ops->step(w->s[i], &q, w->round) ? walk_fail(w, 500, "out of memory") : 0;
}

static void read_result(byte_walk *w, size_t i) {
    w->rc[i] = w->s[i]->ops->step_result(w->s[i], &w->res[i], &w->perr[i]);
}

static int context_full(const byte_walk *w, size_t i) {
    return w->rc[i] && !strcmp(w->perr[i].code, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED);
}

/* Half-way through member i's window [win, pos), moved forward to a space
 * or newline, else to a UTF-8 character boundary. */
static size_t next_window(const byte_walk *w, size_t i, size_t pos) {
    const char *t = w->q->text;
    size_t mid = w->win[i] + (pos - w->win[i]) / 2, cut = mid;
    while (cut < pos && t[cut] != ' ' && t[cut] != '\n') cut++;
    if (cut < pos) return cut;
    cut = mid;
    while (cut < pos && ((unsigned char)t[cut] & 0xC0) == 0x80) cut++;
    return cut;
}

/* Member i's context is full at pos: new sessions on shorter windows until
 * one holds text[win..pos) and answers. */
static int reopen(byte_walk *w, size_t i, size_t pos) {
    for (int k = 0; k < BYTES_MAX_REOPENS; k++) {
        drop_session(w, i);
        w->win[i] = next_window(w, i, pos);
        if (new_session(w, i) || queue_step(w, i, pos)) return -1;
        member_round_run(w->round);
        read_result(w, i);
        w->out->rounds++;
        if (!w->rc[i]) {
            w->out->windows++;
            w->opened[i] = 1;
            return 0;
        }
        if (!context_full(w, i)) break;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "member '%s': %s", members_name(w->e->ms, i),
             w->rc[i] && w->perr[i].message[0] ? w->perr[i].message : "its context cannot hold a short window");
    return walk_fail(w, w->perr[i].status ? w->perr[i].status : 502, msg);
}

/* Member i's answer as row i of lq. */
static int fill_row(byte_walk *w, size_t i) {
    const proto_step_res *r = w->res[i];
    double *row = w->lq + i * BYTES_EVENTS;
    if (r->n_next_bytes != BYTES_EVENTS) {
        char msg[200];
        snprintf(msg, sizeof msg, "member '%s' did not answer its next-byte distribution (a consort-worker of this "
                 "version is needed)", members_name(w->e->ms, i));
        return walk_fail(w, 502, msg);
    }
    for (size_t b = 0; b < BYTES_EVENTS; b++) row[b] = r->next_bytes[b];
    return 0;
}

/* One position: every member's round, its re-openings, its rows. */
static int walk_position(byte_walk *w, size_t pos) {
    size_t nm = w->e->nm;
    for (size_t i = 0; i < nm; i++)
        if (w->part[i] && queue_step(w, i, pos)) return -1;
    member_round_run(w->round);
    w->out->rounds++;
    for (size_t i = 0; i < nm; i++) {
        if (!w->part[i]) continue;
        read_result(w, i);
        if (context_full(w, i) && reopen(w, i, pos)) return -1;
        if (w->rc[i]) {
            char msg[256];
            snprintf(msg, sizeof msg, "member '%s' failed: %s", members_name(w->e->ms, i), w->perr[i].message);
            return walk_fail(w, w->perr[i].status ? w->perr[i].status : 503, msg);
        }
        w->opened[i] = 1;
        if (fill_row(w, i)) return -1;
    }
    if (w->q->on_byte && w->q->on_byte(w->q->ud, pos, w->lq, nm)) return walk_fail(w, 500, "stopped by the caller");
    w->out->bytes = pos + 1;
    return 0;
}

static int walk_setup(byte_walk *w) {
    const ensemble_bytes_request *q = w->q;
    if (!q->text && q->len) return walk_fail(w, 400, "no text");
    if (q->take_part && q->n_take_part != w->e->nm) return walk_fail(w, 400, "one take_part value per member");
    int any = 0;
    for (size_t i = 0; i < w->e->nm; i++) {
        w->part[i] = !q->take_part || q->take_part[i] > 0;
        any |= w->part[i];
    }
    if (!any) return walk_fail(w, 400, "no member takes part");
    w->lq = malloc(w->e->nm * BYTES_EVENTS * sizeof *w->lq);
    w->round = member_round_new();
    if (!w->lq || !w->round) return walk_fail(w, 500, "out of memory");
    for (size_t i = 0; i < w->e->nm * BYTES_EVENTS; i++) w->lq[i] = -INFINITY;
    for (size_t i = 0; q->beam <= 0 && i < w->e->nm; i++)
        if (w->part[i] && new_session(w, i)) return -1;
    return 0;
}

/* ---- beam > 0: every member walks the whole text at once ------------------ */

/* Queues member i's walk of the whole text (a session of its own, whose
 * call may take as long as the walk: 120 s plus 50 ms per byte). */
static int queue_whole(byte_walk *w, size_t i) {
    if (new_session(w, i)) return -1;
    if (!w->s[i]->ops->next_bytes) {
        char msg[200];
        snprintf(msg, sizeof msg, "member '%s' is a %s: byte_pool's covering walk (--byte-beam > 0) needs a "
                 "consort-worker", members_name(w->e->ms, i), w->s[i]->ops->kind);
        return walk_fail(w, 400, msg);
    }
    w->s[i]->timeout_s = 120 + 0.05 * (double)w->q->len;
    proto_next_bytes_req r = {{(const unsigned char *)w->q->text, w->q->len}, w->q->beam, NULL};
    return w->s[i]->ops->next_bytes(w->s[i], &r, w->round) ? walk_fail(w, 500, "out of memory") : 0;
}

/* Every member's answer (n_bytes rows of 257), or a failure naming it. */
static int read_whole(byte_walk *w, size_t i, const proto_next_bytes_res **res) {
    proto_error pe;
    if (w->s[i]->ops->next_bytes_result(w->s[i], res, &pe)) {
        char msg[256];
        snprintf(msg, sizeof msg, "member '%s' failed: %.200s", members_name(w->e->ms, i), pe.message);
        return walk_fail(w, pe.status ? pe.status : 503, msg);
    }
    if ((size_t)(*res)->n_bytes != w->q->len) {
        char msg[200];
        snprintf(msg, sizeof msg, "member '%s' answered %d rows for %zu bytes", members_name(w->e->ms, i),
                 (*res)->n_bytes, w->q->len);
        return walk_fail(w, 502, msg);
    }
    w->out->windows += (*res)->windows;
    w->out->decoded += (*res)->decoded;
    return 0;
}

static int walk_whole(byte_walk *w) {
    size_t nm = w->e->nm;
    const proto_next_bytes_res *res[CONSORT_MAX_MEMBERS] = {0};
    for (size_t i = 0; i < nm; i++)
        if (w->part[i] && queue_whole(w, i)) return -1;
    member_round_run(w->round);
    w->out->rounds++;
    for (size_t i = 0; i < nm; i++)
        if (w->part[i] && read_whole(w, i, &res[i])) return -1;
    for (size_t pos = 0; pos < w->q->len; pos++) {
        for (size_t i = 0; i < nm; i++)
            for (size_t b = 0; res[i] && b < BYTES_EVENTS; b++) w->lq[i * BYTES_EVENTS + b] = res[i]->dist[pos * BYTES_EVENTS + b];
        if (w->q->on_byte && w->q->on_byte(w->q->ud, pos, w->lq, nm)) return walk_fail(w, 500, "stopped by the caller");
        w->out->bytes = pos + 1;
    }
    return 0;
}

int ensemble_score_bytes(ensemble *e, const ensemble_bytes_request *q, ensemble_bytes_result *out) {
    memset(out, 0, sizeof *out);
    double t0 = clock_mono_s();
    byte_walk *w = calloc(1, sizeof *w);
    if (!w) return snprintf(out->error, sizeof out->error, "out of memory"), out->status = 500, -1;
    w->e = e;
    w->q = q;
    w->out = out;
    int rc = walk_setup(w);
    if (!rc && q->beam > 0 && q->len) rc = walk_whole(w);
    for (size_t pos = 0; !rc && q->beam <= 0 && pos < q->len; pos++) rc = walk_position(w, pos);
    for (size_t i = 0; w->round && i < e->nm; i++) drop_session(w, i);
    member_round_free(w->round);
    free(w->lq);
    free(w);
    out->seconds = clock_mono_s() - t0;
    return rc ? -1 : 0;
}
