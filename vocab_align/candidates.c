/* vocab_align/candidates.c: see candidates.h. */
#include "vocab_align/candidates.h"

#include "common/limits.h"

#include <stdlib.h>
#include <string.h>

void vcand_init(vcand_set *cs) { memset(cs, 0, sizeof *cs); }

void vcand_free(vcand_set *cs) {
    free(cs->bytes);
    free(cs->off);
    free(cs->len);
    free(cs->proposers);
    free(cs->parent);
    memset(cs, 0, sizeof *cs);
}

void vcand_clear(vcand_set *cs) {
    cs->n = 0;
    cs->bytes_len = 0;
}

int vcand_find(const vcand_set *cs, const void *s, size_t len) {
    for (size_t i = 0; i < cs->n; i++)
        if (cs->len[i] == len && memcmp(cs->bytes + cs->off[i], s, len) == 0) return (int)i;
    return -1;
}

static int grow(vcand_set *cs, size_t extra_bytes) {
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 64;
        size_t *off = realloc(cs->off, cap * sizeof *off);
        if (!off) return -1;
        cs->off = off;
        size_t *len = realloc(cs->len, cap * sizeof *len);
        if (!len) return -1;
        cs->len = len;
        uint32_t *pr = realloc(cs->proposers, cap * sizeof *pr);
        if (!pr) return -1;
        cs->proposers = pr;
        int *pa = realloc(cs->parent, cap * sizeof *pa);
        if (!pa) return -1;
        cs->parent = pa;
        cs->cap = cap;
    }
    if (cs->bytes_len + extra_bytes > cs->bytes_cap) {
        size_t cap = cs->bytes_cap ? cs->bytes_cap : 1024;
        while (cap < cs->bytes_len + extra_bytes) cap *= 2;
        char *b = realloc(cs->bytes, cap);
        if (!b) return -1;
        cs->bytes = b;
        cs->bytes_cap = cap;
    }
    return 0;
}

int vcand_add(vcand_set *cs, const void *s, size_t len, int member) {
    if (len == 0) return -1;
    int i = vcand_find(cs, s, len);
    if (i < 0) {
        if (grow(cs, len)) return -1;
        i = (int)cs->n++;
        cs->off[i] = cs->bytes_len;
        cs->len[i] = len;
        cs->proposers[i] = 0;
        cs->parent[i] = -1;
        memcpy(cs->bytes + cs->bytes_len, s, len);
        cs->bytes_len += len;
    }
    if (member >= 0 && member < CONSORT_MAX_MEMBERS) cs->proposers[i] |= (uint32_t)1 << member;
    return i;
}

void vcand_link(vcand_set *cs) {
    for (size_t i = 0; i < cs->n; i++) {
        int best = -1;
        size_t best_len = 0;
        const char *si = cs->bytes + cs->off[i];
        for (size_t j = 0; j < cs->n; j++) {
            size_t lj = cs->len[j];
            if (lj < cs->len[i] && lj > best_len && memcmp(cs->bytes + cs->off[j], si, lj) == 0) {
                best = (int)j;
                best_len = lj;
            }
        }
        cs->parent[i] = best;
    }
}

size_t vcand_carry(const vcand_set *cs, const void *committed, size_t clen, vcand_set *next) {
    size_t k = 0;
    for (size_t i = 0; i < cs->n; i++) {
        if (cs->len[i] > clen && memcmp(cs->bytes + cs->off[i], committed, clen) == 0) {
            if (vcand_add(next, cs->bytes + cs->off[i] + clen, cs->len[i] - clen, -1) >= 0) k++;
        }
    }
    return k;
}
