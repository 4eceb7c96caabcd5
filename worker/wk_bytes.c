/* worker/wk_bytes.c: the next-byte walk over covering tokenizations
 * (contract: wk_bytes.h; wire form: docs/PROTOCOL.md "The next-byte walk").
 *
 * Why it is shaped so.
 *  - The quantity. A member's probability of the next byte b after a text
 *    x is a sum over every token sequence whose bytes start with x + b.
 *    Following only the canonical tokenization of x loses the mass of the
 *    other ones ("jur" is one token, the model spells "jury" as "j"+"ury"),
 *    which cost SentencePiece members about 0.2 bits/byte in byte_pool.
 *  - Anchors. Tokens of SentencePiece and GPT-2 vocabularies begin at word
 *    starts, so the sum is taken exactly inside the current word only: the
 *    text before the anchor (the start of the last run of whitespace, or a
 *    UTF-8 boundary after WK_BYTES_MAX_SEG bytes of one word, n_ctx / 4 - 4
 *    in a smaller context) is held as
 *    its canonical tokens in the main sequence, word by word
 *    (wk_tokenize_after), after the document-start token of /v1/score. A
 *    SentencePiece model reads a virtual space before the text (as its
 *    tokenizer does); its row is not answered.
 *  - The beam. Inside the word, a path h is a token sequence from the
 *    anchor whose bytes are exactly text[anchor..j); it keeps log P(h |
 *    main) and p(. | main + h). Row i sums, over the paths with j <= i,
 *    P(h) * (mass of tokens starting with text[j..i) + b); a token that
 *    ends exactly at i belongs to the child path h + t, never to h. END
 *    comes from the paths ending at i. The 257 sums are normalised, so a
 *    row is a proper distribution whatever is pruned. Consuming byte i:
 *    every path whose text[j..i+1) is a token t spawns h + t; a path with
 *    no token strictly extending text[j..i+1) dies; the `beam` best by
 *    covering mass (P(h) times the mass of the tokens still possible) are
 *    kept, plus the best path ending at the byte if none of them does (a
 *    beam of partial tokens alone would give the next word's first byte
 *    no mass), and only the children kept are decoded (each in a scratch
 *    sequence forked from the main one, its whole path: words are short).
 *    A narrow beam may keep only paths that the next byte ends; then the
 *    word so far is committed (canonical tokens) and the walk re-anchors
 *    after that byte (counted in `reanchors`).
 *  - Fairness. Row i is emitted before byte i is read; whether byte i
 *    moves the anchor is decided after, for rows i + 1 on.
 *  - Long texts: when the main sequence would leave fewer than
 *    max_seg + 8 positions for a path, it is re-read from its last
 *    n_ctx / 2 tokens (no document-start token), as /v1/score's windows.
 *
 * State: one walk per call, on the stack (wk_walk): the main tokens, the
 * paths alive and a free list of distribution buffers. The engine's
 * scoring sequence is held for the whole call.
 *
 * What may change: keeping each path's KV (a scratch sequence per path)
 * instead of re-decoding its path; summing over paths that span an anchor.
 */
#include "worker/wk_bytes.h"
#include "worker/wk_softmax.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wk_path_h {
    int *tok; /* the path's tokens from the anchor */
    int n;
    size_t j; /* where its next token starts (virtual text) */
    double logp;
    float *p;    /* p(. | main + path) */
    double *cum; /* cumulative sums in byte order; cum[0] = NAN until needed */
} wk_path_h;

typedef struct wk_cand {
    int parent;
    int tok;      /* -1: the parent itself survives */
    double logp;  /* of the path */
    double score; /* log covering mass */
} wk_cand;

typedef struct wk_walk {
    wk_engine *e;
    const wk_model *m;
    const wk_cancel *cancel;
    wk_err *err;
    wk_bytes_res *res;
    int V, n_ctx, beam, main_seq;
    size_t max_seg; /* bytes of a word before re-anchoring: WK_BYTES_MAX_SEG, less in a small context */
    int reserve;    /* positions kept free after the main tokens for a path: max_seg + 8 */
    const unsigned char *vt; /* the virtual text */
    size_t n_vt;
    int *mt, n_mt, cap_mt, ws; /* main tokens; the KV holds mt[ws..n_mt) */
    wk_path_h *h;
    int n_h, cap_h;
    float **free_p;
    double **free_cum;
    int n_free;
    int *eog;
    int n_eog;
} wk_walk;

static int walk_fail(wk_walk *w, int status, const char *code, const char *msg) {
    w->err->status = status;
    w->err->code = code;
    w->err->param = NULL;
    snprintf(w->err->message, sizeof w->err->message, "%s", msg);
    return -1;
}

static int oom(wk_walk *w) { return walk_fail(w, 500, "internal", "out of memory"); }

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* ---- distributions -------------------------------------------------------- */

/* The mass of the tokens whose bytes start with x (n >= 1). */
static double prefix_mass(const wk_walk *w, wk_path_h *h, const unsigned char *x, size_t n) {
    return va_mass_lazy(w->m->va, h->p, h->cum, x, n);
}

static double end_mass(const wk_walk *w, const wk_path_h *h) {
    double s = 0;
    for (int k = 0; k < w->n_eog; k++) s += h->p[w->eog[k]];
    return s;
}

static int buffers_take(wk_walk *w, wk_path_h *h) {
    if (w->n_free) {
        w->n_free--;
        h->p = w->free_p[w->n_free];
        h->cum = w->free_cum[w->n_free];
    } else {
        h->p = malloc((size_t)w->V * sizeof *h->p);
        h->cum = malloc((size_t)(w->V + 1) * sizeof *h->cum);
        if (!h->p || !h->cum) {
            free(h->p);
            free(h->cum);
            h->p = NULL;
            h->cum = NULL;
            return -1;
        }
    }
    h->cum[0] = NAN;
    return 0;
}

/* The free list has room for every buffer (twice the beam: old paths and new children). */
static void path_drop(wk_walk *w, wk_path_h *h) {
    if (h->p) {
        w->free_p[w->n_free] = h->p;
        w->free_cum[w->n_free++] = h->cum;
    }
    free(h->tok);
    memset(h, 0, sizeof *h);
}

/* ---- decoding --------------------------------------------------------------- */

typedef struct {
    float **dst; /* row i's logits go to dst[i] (NULL: not wanted) */
    int V;
} wk_copy_rows;

static void copy_row(void *arg, int i, const float *logits) {
    wk_copy_rows *c = arg;
    if (c->dst[i]) memcpy(c->dst[i], logits, (size_t)c->V * sizeof *logits);
}

/* Decodes n tokens (their positions, sequences and wanted rows' targets). */
static int decode(wk_walk *w, const int *tok, const int *pos, const int *seq, float **dst, int n) {
    signed char *want = malloc((size_t)n);
    if (!want) return oom(w);
    for (int i = 0; i < n; i++) want[i] = dst[i] != NULL;
    wk_copy_rows c = {dst, w->V};
    wk_rows r = {tok, pos, seq, want, n, copy_row, &c};
    int rc = wk_engine_decode_rows(w->e, &r, w->cancel, w->err);
    free(want);
    if (rc == 0) {
        w->res->decoded += n;
        w->res->decodes++;
    }
    return rc;
}

/* ---- the main sequence ---------------------------------------------------- */

static int main_push(wk_walk *w, const int *t, int n) {
    if (w->n_mt + n > w->cap_mt) {
        int c = w->cap_mt ? w->cap_mt : 256;
        while (c < w->n_mt + n) c *= 2;
        int *q = realloc(w->mt, (size_t)c * sizeof *q);
        if (!q) return oom(w);
        w->mt = q;
        w->cap_mt = c;
    }
    memcpy(w->mt + w->n_mt, t, (size_t)n * sizeof *t);
    w->n_mt += n;
    return 0;
}

/* Decodes main tokens mt[from..n_mt) (rolling the window first when the
 * context would leave too little room) and makes the root path at `at`,
 * the only path alive. */
static int main_extend(wk_walk *w, int from, size_t at) {
    if (w->n_mt - w->ws + w->reserve > w->n_ctx) {
        w->ws = w->n_mt - w->n_ctx / 2;
        from = w->ws;
        wk_engine_seq_trim(w->e, w->main_seq, 0);
        w->res->windows++;
    }
    int n = w->n_mt - from;
    int *pos = malloc((size_t)n * sizeof *pos), *seq = malloc((size_t)n * sizeof *seq);
    float **dst = calloc((size_t)n, sizeof *dst);
    for (int i = 0; i < w->n_h; i++) path_drop(w, &w->h[i]);
    w->n_h = 0;
    wk_path_h *root = &w->h[0];
    int rc = !pos || !seq || !dst || buffers_take(w, root) ? oom(w) : 0;
    if (rc == 0) {
        for (int i = 0; i < n; i++) {
            pos[i] = from + i - w->ws;
            seq[i] = w->main_seq;
        }
        dst[n - 1] = root->p;
        rc = decode(w, w->mt + from, pos, seq, dst, n);
    }
    if (rc == 0) {
        wk_softmax(root->p, w->V, root->p);
        root->j = at;
        w->n_h = 1;
    } else {
        path_drop(w, root);
    }
    free(pos);
    free(seq);
    free(dst);
    return rc;
}

/* The word vt[from..to) is over: its canonical tokens join the main
 * sequence and the root path restarts at `to`. */
static int commit_word(wk_walk *w, size_t from, size_t to) {
    int *t = NULL;
    int n = wk_tokenize_after(w->m, w->mt[w->n_mt - 1], w->vt + from, to - from, &t);
    if (n <= 0) {
        free(t);
        return walk_fail(w, 400, "untokenizable", "a word of the text is covered by no tokens of this model");
    }
    int old = w->n_mt, rc = main_push(w, t, n);
    free(t);
    return rc ? rc : main_extend(w, old, to);
}

/* ---- one row ------------------------------------------------------------------ */

/* Row i: every path's share of each next byte and of END, normalised. */
static void row_at(wk_walk *w, size_t i, float *out) {
    double num[WK_BYTES_EVENTS] = {0}, mx = -INFINITY;
    for (int k = 0; k < w->n_h; k++)
        if (w->h[k].logp > mx) mx = w->h[k].logp;
    unsigned char x[WK_BYTES_MAX_SEG + 16]; /* a path's bytes before row i: at most max_seg + 4 */
    for (int k = 0; k < w->n_h; k++) {
        wk_path_h *h = &w->h[k];
        double wt = exp(h->logp - mx);
        size_t yl = i - h->j;
        memcpy(x, w->vt + h->j, yl);
        if (yl == 0) num[256] += wt * end_mass(w, h);
        for (int b = 0; b < 256; b++) {
            x[yl] = (unsigned char)b;
            num[b] += wt * prefix_mass(w, h, x, yl + 1);
        }
    }
    double z = 0;
    for (int e = 0; e < WK_BYTES_EVENTS; e++) z += num[e];
    for (int e = 0; e < WK_BYTES_EVENTS; e++) out[e] = num[e] > 0 && z > 0 ? (float)log(num[e] / z) : -INFINITY;
}

/* ---- consuming a byte ------------------------------------------------------ */

static int cmp_cand(const void *a, const void *b) {
    double x = ((const wk_cand *)a)->score, y = ((const wk_cand *)b)->score;
    return x > y ? -1 : x < y;
}

/* The candidates after reading vt[i]: children h + t for every token t
 * spelling vt[j..i+1), and h itself while a token strictly extends it;
 * *n_out of them are kept: the `beam` best by covering mass, and the best
 * child when none of those is one (so a new token can always start at
 * i + 1, and every byte that starts a token keeps some mass). */
static int candidates(wk_walk *w, size_t i, wk_cand **out, int *n_out) {
    int cap = 64, n = 0;
    wk_cand *c = malloc((size_t)cap * sizeof *c);
    if (!c) return oom(w);
    for (int k = 0; k < w->n_h; k++) {
        wk_path_h *h = &w->h[k];
        const unsigned char *y = w->vt + h->j;
        size_t yl = i + 1 - h->j;
        int lo, hi;
        if (va_prefix_range(w->m->va, y, yl, &lo, &hi) == 0) continue;
        double exact = 0;
        int pos = lo;
        for (; pos < hi; pos++) {
            int id = va_sorted_id(w->m->va, pos);
            size_t bl;
            va_token_bytes(w->m->va, id, &bl);
            if (bl != yl) break;
            exact += h->p[id];
            if (!(h->p[id] > 0)) continue;
            if (n + 2 > cap) {
                wk_cand *q = realloc(c, (size_t)(cap *= 2) * sizeof *c);
                if (!q) return free(c), oom(w);
                c = q;
            }
            double lp = h->logp + log(h->p[id]);
            c[n++] = (wk_cand){k, id, lp, lp};
        }
        double ext = pos < hi ? prefix_mass(w, h, y, yl) - exact : 0;
        if (ext > 0) {
            if (n + 1 > cap) {
                wk_cand *q = realloc(c, (size_t)(cap *= 2) * sizeof *c);
                if (!q) return free(c), oom(w);
                c = q;
            }
            c[n++] = (wk_cand){k, -1, h->logp, h->logp + log(ext)};
        }
    }
    qsort(c, (size_t)n, sizeof *c, cmp_cand);
    int keep = n < w->beam ? n : w->beam, child = 0;
    for (int k = 0; k < keep; k++) child |= c[k].tok >= 0;
    for (int k = keep; k < n && !child; k++) /* the best path ending at the byte joins the kept ones */
        if (c[k].tok >= 0) {
            wk_cand t = c[k];
            c[k] = c[keep];
            c[keep++] = t;
            child = 1;
        }
    *out = c;
    *n_out = keep;
    return 0;
}

/* Decodes the kept children (their whole paths, in forked scratch
 * sequences, as many at once as scratch sequences are free). */
static int decode_children(wk_walk *w, wk_path_h *kids, int nk) {
    int seqs[WK_SCRATCH];
    for (int done = 0; done < nk;) {
        int ns = wk_engine_scratch_take(w->e, nk - done, seqs), n = 0;
        for (int k = 0; k < ns; k++) n += kids[done + k].n;
        int *tok = malloc((size_t)n * sizeof *tok), *pos = malloc((size_t)n * sizeof *pos),
            *seq = malloc((size_t)n * sizeof *seq);
        float **dst = calloc((size_t)n, sizeof *dst);
        int rc = !tok || !pos || !seq || !dst ? oom(w) : 0, base = w->n_mt - w->ws;
        for (int k = 0, r = 0; rc == 0 && k < ns; k++) {
            wk_path_h *h = &kids[done + k];
            wk_engine_seq_fork(w->e, w->main_seq, seqs[k], base);
            for (int t = 0; t < h->n; t++, r++) {
                tok[r] = h->tok[t];
                pos[r] = base + t;
                seq[r] = seqs[k];
            }
            dst[r - 1] = h->p;
        }
        if (rc == 0) rc = decode(w, tok, pos, seq, dst, n);
        wk_engine_scratch_give(w->e, seqs, ns);
        free(tok);
        free(pos);
        free(seq);
        free(dst);
        if (rc) return rc;
        for (int k = 0; k < ns; k++) wk_softmax(kids[done + k].p, w->V, kids[done + k].p);
        done += ns;
    }
    return 0;
}

/* A child of h through token t: its path, its buffers (not yet filled). */
static int make_child(wk_walk *w, const wk_path_h *h, const wk_cand *c, size_t j, wk_path_h *kid) {
    memset(kid, 0, sizeof *kid);
    kid->tok = malloc((size_t)(h->n + 1) * sizeof *kid->tok);
    if (!kid->tok || buffers_take(w, kid)) return oom(w);
    if (h->n) memcpy(kid->tok, h->tok, (size_t)h->n * sizeof *kid->tok);
    kid->tok[h->n] = c->tok;
    kid->n = h->n + 1;
    kid->j = j;
    kid->logp = c->logp;
    return 0;
}

/* Reads vt[i]: the new set of paths (at most `beam`), children decoded.
 * 0, -1 on failure, or 1 when no path kept covers vt[..i] (a narrow beam
 * pruned the ones that did): the caller re-anchors after byte i. */
static int consume(wk_walk *w, size_t i) {
    wk_cand *c = NULL;
    int nc = 0, nk = 0;
    if (candidates(w, i, &c, &nc)) return -1;
    if (nc == 0) { /* the paths kept all died (pruning): re-anchor after byte i */
        free(c);
        return 1;
    }
    wk_path_h *next = calloc((size_t)nc, sizeof *next), *kids = calloc((size_t)nc, sizeof *kids);
    int rc = !next || !kids ? oom(w) : 0, nn = 0;
    for (int k = 0; rc == 0 && k < nc; k++)
        if (c[k].tok >= 0) rc = make_child(w, &w->h[c[k].parent], &c[k], i + 1, &kids[nk++]);
    if (rc == 0) rc = decode_children(w, kids, nk);
    if (rc == 0) {
        for (int k = 0; k < nc; k++) /* survivors move over; their buffers stay theirs */
            if (c[k].tok < 0) {
                next[nn++] = w->h[c[k].parent];
                memset(&w->h[c[k].parent], 0, sizeof w->h[0]);
            }
        for (int k = 0; k < nk; k++) next[nn++] = kids[k];
        w->res->paths += nk;
        nk = 0;
        for (int k = 0; k < w->n_h; k++) path_drop(w, &w->h[k]);
        memcpy(w->h, next, (size_t)nn * sizeof *next);
        w->n_h = nn;
    }
    for (int k = 0; k < nk; k++) path_drop(w, &kids[k]);
    free(next);
    free(kids);
    free(c);
    if (rc == 0 && w->n_h > w->res->max_beam) w->res->max_beam = w->n_h;
    return rc;
}

/* ---- the walk ------------------------------------------------------------------ */

/* Whether byte i (already read) starts a new anchor for the rows after it. */
static int anchor_at(const wk_walk *w, size_t i, size_t anchor) {
    if (i <= anchor) return 0;
    if (is_space(w->vt[i]) && !is_space(w->vt[i - 1])) return 1;
    if (i - anchor >= w->max_seg + 4) return 1; /* invalid UTF-8: a long run of continuation bytes */
    return i - anchor >= w->max_seg && (w->vt[i] & 0xC0) != 0x80;
}

static int walk_setup(wk_walk *w, const unsigned char *text, size_t len, unsigned char **vt) {
    size_t off = w->m->space_prefix ? 1 : 0;
    *vt = malloc(len + off);
    w->h = calloc((size_t)w->beam + 1, sizeof *w->h); /* the beam and the best path ending at the byte */
    w->free_p = calloc(2 * (size_t)w->beam + 4, sizeof *w->free_p); /* old paths and new children */
    w->free_cum = calloc(2 * (size_t)w->beam + 4, sizeof *w->free_cum);
    w->eog = malloc((size_t)w->V * sizeof *w->eog);
    w->res->dist = malloc(len * WK_BYTES_EVENTS * sizeof *w->res->dist);
    if (!*vt || !w->h || !w->free_p || !w->free_cum || !w->eog || !w->res->dist) return oom(w);
    if (off) (*vt)[0] = ' ';
    memcpy(*vt + off, text, len);
    w->vt = *vt;
    w->n_vt = len + off;
    for (int id = 0; id < w->V; id++)
        if (w->m->is_eog[id]) w->eog[w->n_eog++] = id;
    return main_push(w, &w->m->doc_start, 1);
}

static int walk_run(wk_walk *w, size_t off) {
    if (main_extend(w, 0, 0)) return -1;
    size_t anchor = 0;
    for (size_t i = 0; i < w->n_vt; i++) {
        if (i >= off) row_at(w, i, w->res->dist + (i - off) * WK_BYTES_EVENTS);
        if (i + 1 == w->n_vt) break;
        if (anchor_at(w, i, anchor)) {
            if (commit_word(w, anchor, i)) return -1;
            anchor = i;
        }
        int rc = consume(w, i);
        if (rc < 0) return -1;
        if (rc > 0) {
            if (commit_word(w, anchor, i + 1)) return -1;
            anchor = i + 1;
            w->res->reanchors++;
        }
    }
    return 0;
}

static void walk_free(wk_walk *w) {
    for (int k = 0; w->h && k < w->n_h; k++) path_drop(w, &w->h[k]);
    for (int k = 0; k < w->n_free; k++) {
        free(w->free_p[k]);
        free(w->free_cum[k]);
    }
    free(w->h);
    free(w->free_p);
    free(w->free_cum);
    free(w->eog);
    free(w->mt);
}

int wk_next_bytes(wk_engine *e, const unsigned char *text, size_t len, int beam, const wk_cancel *cancel,
                  wk_bytes_res *res, wk_err *err) {
    memset(res, 0, sizeof *res);
    err->status = 0;
    err->param = NULL;
    wk_walk w = {.e = e, .m = wk_engine_model(e), .cancel = cancel, .err = err, .res = res, .beam = beam,
                 .n_ctx = wk_engine_n_ctx(e)};
    w.V = w.m->n_vocab;
    if (beam < 1 || beam > WK_BYTES_MAX_BEAM) {
        walk_fail(&w, 400, PROTO_ERR_INVALID_VALUE, "beam must be 1 to 256");
        err->param = PROTO_PARAM_BEAM;
        return -1;
    }
    if (len == 0 || len > WK_BYTES_MAX_TEXT) {
        walk_fail(&w, 400, len ? PROTO_ERR_BUDGET_EXCEEDED : PROTO_ERR_INVALID_VALUE,
                  len ? "the text is over this worker's limit of 65536 bytes per walk" : "the text is empty");
        err->param = PROTO_PARAM_TEXT_B64;
        return -1;
    }
    if (w.n_ctx < 32)
        return walk_fail(&w, 400, PROTO_ERR_CONTEXT_LENGTH_EXCEEDED, "the walk needs a context of 32 positions");
    w.max_seg = (size_t)(w.n_ctx / 4 - 4) < WK_BYTES_MAX_SEG ? (size_t)(w.n_ctx / 4 - 4) : WK_BYTES_MAX_SEG;
    w.reserve = (int)w.max_seg + 8; /* a path has at most max_seg + 4 bytes, so as many tokens */
    unsigned char *vt = NULL;
    int rc = walk_setup(&w, text, len, &vt);
    if (rc == 0) {
        w.main_seq = wk_engine_walk_claim(e);
        rc = walk_run(&w, w.m->space_prefix ? 1 : 0);
        wk_engine_walk_release(e);
    }
    walk_free(&w);
    free(vt);
    if (rc) {
        wk_bytes_res_free(res);
        return -1;
    }
    res->n_bytes = (int)len;
    return 0;
}

void wk_bytes_res_free(wk_bytes_res *r) {
    if (!r) return;
    free(r->dist);
    memset(r, 0, sizeof *r);
}
