/* coordinator/engine/ensemble_output.c: what reaches the caller of a
 * generation: whole UTF-8 characters (an incomplete tail is held back, bad
 * bytes become U+FFFD), never text of a stop sequence (text that might
 * start one is held back until decided), each chunk with the log-probability
 * of the steps that produced it and, on request, the most likely
 * alternatives of its step. State: the emitted prefix of G and the emitted
 * text, both in ensemble_gen. */
#include "coordinator/engine/ensemble_internal.h"

#include "common/utf8.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *find_bytes(const char *h, size_t hl, const char *n, size_t nl) {
    if (nl == 0 || hl < nl) return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && !memcmp(h + i, n, nl)) return h + i;
    return NULL;
}


int ensemble_emit(ensemble_gen *r, size_t upto, int chosen) {
    assert(upto <= r->g.n);
    if (upto <= r->emitted) return 0;
    size_t len;
    char *s = utf8_sanitize(r->g.p + r->emitted, upto - r->emitted, &len);
    if (!s) return -1;
    r->emitted = upto;
    sb_add(&r->out_text, s, len);
    ensemble_chunk ch;
    memset(&ch, 0, sizeof ch);
    ch.text = s;
    ch.len = len;
    ch.logprob = r->pending_lp;
    r->pending_lp = 0;
    if (r->req->logprobs > 0 && chosen >= 0) {
        size_t ne = r->cand.n + 1;
        int want = r->req->logprobs > ENSEMBLE_MAX_LOGPROBS ? ENSEMBLE_MAX_LOGPROBS : r->req->logprobs;
        for (size_t e = 0; e < ne; e++) r->buf.order[e] = e;
        /* partial selection of the most probable events */
        for (int t = 0; t < want && (size_t)t < ne; t++) {
            size_t best = (size_t)t;
            for (size_t e = (size_t)t + 1; e < ne; e++)
                if (r->buf.dist[r->buf.order[e]] > r->buf.dist[r->buf.order[best]]) best = e;
            size_t tmp = r->buf.order[t];
            r->buf.order[t] = r->buf.order[best];
            r->buf.order[best] = tmp;
            size_t ev = r->buf.order[t];
            if (!(r->buf.dist[ev] > 0)) break;
            ch.top[t].text = ev < r->cand.n ? vcand_str(&r->cand, ev) : "";
            ch.top[t].len = ev < r->cand.n ? r->cand.len[ev] : 0;
            ch.top[t].logprob = log(r->buf.dist[ev]);
            ch.n_top = t + 1;
        }
    }
    int stop = r->on_chunk ? r->on_chunk(r->ud, &ch) : 0;
    free(s);
    if (stop) r->stopped = 1;
    return 0;
}

int ensemble_after_commit(ensemble_gen *r, int chosen) {
    const ensemble_request *q = r->req;
    size_t len = r->g.n, start = r->emitted;
    size_t stop_at = (size_t)-1;
    size_t hold = 0;
    for (size_t i = 0; i < q->n_stop; i++) {
        const char *s = q->stop[i];
        size_t sl = s ? strlen(s) : 0;
        if (!sl) continue;
        if (len - start >= sl) {
            const char *hit = find_bytes(r->g.p + start, len - start, s, sl);
            if (hit && (size_t)(hit - r->g.p) < stop_at) stop_at = (size_t)(hit - r->g.p);
        }
        size_t kmax = sl - 1 < len - start ? sl - 1 : len - start;
        for (size_t k = kmax; k > hold; k--)
            if (!memcmp(r->g.p + len - k, s, k)) {
                hold = k;
                break;
            }
    }
    if (stop_at != (size_t)-1) {
        r->g.n = stop_at;
        ensemble_emit(r, stop_at, chosen);
        return 1;
    }
    size_t upto = len - hold;
    upto = start + utf8_complete_len(r->g.p + start, upto - start);
    ensemble_emit(r, upto, chosen);
    return 0;
}
