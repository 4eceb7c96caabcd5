/* coordinator/eval/eval_units.c: see eval_units.h. */
#include "coordinator/eval/eval_units.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ev_is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

size_t ev_count_words(const char *text, size_t len) {
    size_t n = 0;
    int in = 0;
    for (size_t i = 0; i < len; i++) {
        int sp = ev_is_space((unsigned char)text[i]);
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

int ev_unit_kind_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "word")) return EV_UNIT_WORD;
    if (!strcmp(s, "token")) return EV_UNIT_TOKEN;
    if (!strcmp(s, "byte")) return EV_UNIT_BYTE;
    return -1;
}

const char *ev_unit_kind_name(ev_unit_kind k) {
    switch (k) {
    case EV_UNIT_WORD: return "word";
    case EV_UNIT_TOKEN: return "token";
    case EV_UNIT_BYTE: return "byte";
    }
    return "?";
}

void ev_units_free(ev_units *u) {
    if (!u) return;
    free(u->bounds);
    free(u->lp);
    free(u->entropy0);
    free(u->top1_0);
    memset(u, 0, sizeof *u);
}

static int ev_check_tiling(const ev_member_doc *m, size_t idx, size_t len, char *err, size_t errlen) {
    size_t pos = 0;
    for (size_t i = 0; i < m->n; i++) {
        const ev_token *t = &m->tok[i];
        if (t->start != pos || t->end < t->start || t->end > len) {
            snprintf(err, errlen,
                     "member %zu: token %zu spans [%zu, %zu) where [%zu, ...) was expected "
                     "(spans must tile the %zu-byte document in order)",
                     idx, i, t->start, t->end, pos, len);
            return -1;
        }
        if (!isfinite(t->logprob) || t->logprob > 1e-9) {
            snprintf(err, errlen, "member %zu: token %zu has log-probability %g", idx, i, t->logprob);
            return -1;
        }
        pos = t->end;
    }
    if (pos != len) {
        snprintf(err, errlen, "member %zu: tokens cover %zu of the document's %zu bytes", idx, pos, len);
        return -1;
    }
    return 0;
}

int ev_units_build(const char *text, size_t len, const ev_member_doc *members,
                   size_t n_members, ev_unit_kind kind, ev_units *out,
                   char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (n_members == 0) {
        snprintf(err, errlen, "no members");
        return -1;
    }
    for (size_t m = 0; m < n_members; m++)
        if (ev_check_tiling(&members[m], m, len, err, errlen)) return -1;

    /* cnt[p]: how many members have a token ending at p (each member counted once). */
    unsigned *cnt = calloc(len + 1, sizeof *cnt);
    if (!cnt) goto oom;
    for (size_t m = 0; m < n_members; m++) {
        size_t last = (size_t)-1;
        for (size_t i = 0; i < members[m].n; i++) {
            size_t p = members[m].tok[i].end;
            if (p != last) cnt[p]++;
            last = p;
        }
    }
    size_t nb = 1;
    for (size_t p = 1; p < len; p++) {
        if (cnt[p] != n_members) continue;
        if (kind == EV_UNIT_WORD && !ev_is_space((unsigned char)text[p])) continue;
        nb++;
    }
    size_t n_units = len ? nb : 0;
    out->n_units = n_units;
    out->n_members = n_members;
    out->bounds = malloc((n_units + 1) * sizeof *out->bounds);
    size_t cells = n_units * n_members;
    if (cells == 0) cells = 1;
    out->lp = calloc(cells, sizeof *out->lp);
    out->entropy0 = malloc(cells * sizeof *out->entropy0);
    out->top1_0 = malloc(cells * sizeof *out->top1_0);
    if (!out->bounds || !out->lp || !out->entropy0 || !out->top1_0) {
        free(cnt);
        ev_units_free(out);
        goto oom;
    }
    out->bounds[0] = 0;
    size_t k = 1;
    for (size_t p = 1; p < len; p++) {
        if (cnt[p] != n_members) continue;
        if (kind == EV_UNIT_WORD && !ev_is_space((unsigned char)text[p])) continue;
        out->bounds[k++] = p;
    }
    if (n_units) out->bounds[n_units] = len;
    free(cnt);
    for (size_t c = 0; c < n_units * n_members; c++) {
        out->entropy0[c] = NAN;
        out->top1_0[c] = NAN;
    }

    for (size_t m = 0; m < n_members; m++) {
        size_t u = 0;
        int have_first = 0;
        for (size_t i = 0; i < members[m].n; i++) {
            const ev_token *t = &members[m].tok[i];
            /* advance to the unit containing t->start (zero-length at len: last unit) */
            while (u + 1 < n_units && t->start >= out->bounds[u + 1]) {
                u++;
                have_first = 0;
            }
            if (n_units == 0) {
                /* empty document: only zero-length tokens, nowhere to count them */
                snprintf(err, errlen, "member %zu: tokens in an empty document", m);
                ev_units_free(out);
                return -1;
            }
            size_t c = m * n_units + u;
            out->lp[c] += t->logprob;
            if (!have_first) {
                out->entropy0[c] = t->entropy;
                out->top1_0[c] = t->top1;
                have_first = 1;
            }
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}
