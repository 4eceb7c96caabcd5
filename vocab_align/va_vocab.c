/* vocab_align/va_vocab.c: see va_vocab.h. */
#include "vocab_align/va_vocab.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct va_vocab {
    int n;
    unsigned char **bytes;
    size_t *len;
    int *order; /* sorted position -> id */
    size_t max_len;
    int final;
};

va_vocab *va_vocab_create(int n) {
    if (n <= 0) return NULL;
    va_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->n = n;
    v->bytes = calloc((size_t)n, sizeof *v->bytes);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->order = malloc((size_t)n * sizeof *v->order);
    if (!v->bytes || !v->len || !v->order) {
        va_vocab_free(v);
        return NULL;
    }
    return v;
}

void va_vocab_free(va_vocab *v) {
    if (!v) return;
    if (v->bytes)
        for (int i = 0; i < v->n; i++) free(v->bytes[i]);
    free(v->bytes);
    free(v->len);
    free(v->order);
    free(v);
}

int va_vocab_set(va_vocab *v, int id, const void *bytes, size_t len) {
    if (!v || v->final || id < 0 || id >= v->n || (len && !bytes)) return -1;
    unsigned char *b = malloc(len ? len : 1);
    if (!b) return -1;
    if (len) memcpy(b, bytes, len);
    free(v->bytes[id]);
    v->bytes[id] = b;
    v->len[id] = len;
    return 0;
}

static int bytes_cmp(const unsigned char *a, size_t na, const unsigned char *b, size_t nb) {
    size_t m = na < nb ? na : nb;
    int c = m ? memcmp(a, b, m) : 0;
    if (c) return c;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

typedef struct {
    const unsigned char *b;
    size_t len;
    int id;
} va_entry;

static int cmp_entries(const void *pa, const void *pb) {
    const va_entry *a = pa, *b = pb;
    int c = bytes_cmp(a->b, a->len, b->b, b->len);
    return c ? c : (a->id > b->id) - (a->id < b->id);
}

int va_vocab_finalize(va_vocab *v) {
    if (!v || v->final) return -1;
    va_entry *e = malloc((size_t)v->n * sizeof *e);
    if (!e) return -1;
    v->max_len = 0;
    for (int i = 0; i < v->n; i++) {
        e[i] = (va_entry){v->bytes[i] ? v->bytes[i] : (const unsigned char *)"", v->len[i], i};
        if (v->len[i] > v->max_len) v->max_len = v->len[i];
    }
    qsort(e, (size_t)v->n, sizeof *e, cmp_entries);
    for (int i = 0; i < v->n; i++) v->order[i] = e[i].id;
    free(e);
    v->final = 1;
    return 0;
}

int va_vocab_size(const va_vocab *v) { return v ? v->n : 0; }
size_t va_max_token_len(const va_vocab *v) { return v ? v->max_len : 0; }

const unsigned char *va_token_bytes(const va_vocab *v, int id, size_t *len) {
    if (!v || id < 0 || id >= v->n) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = v->len[id];
    return v->bytes[id] ? v->bytes[id] : (const unsigned char *)"";
}

int va_sorted_id(const va_vocab *v, int pos) {
    return v && pos >= 0 && pos < v->n ? v->order[pos] : -1;
}

/* <0: the token sorts before every string starting with x; 0: it starts
 * with x; >0: after them. Monotone along the sorted order. */
static int prefix_cmp(const va_vocab *v, int id, const unsigned char *x, size_t n) {
    size_t tl = v->len[id];
    size_t m = tl < n ? tl : n;
    int c = m ? memcmp(v->bytes[id], x, m) : 0;
    if (c) return c;
    return tl < n ? -1 : 0;
}

int va_prefix_range(const va_vocab *v, const void *xv, size_t n, int *lo, int *hi) {
    const unsigned char *x = xv;
    int a = 0, b = v->n;
    while (a < b) { /* first position with prefix_cmp >= 0 */
        int mid = a + (b - a) / 2;
        if (prefix_cmp(v, v->order[mid], x, n) < 0) a = mid + 1;
        else b = mid;
    }
    int l = a;
    b = v->n;
    while (a < b) { /* first position with prefix_cmp > 0 */
        int mid = a + (b - a) / 2;
        if (prefix_cmp(v, v->order[mid], x, n) <= 0) a = mid + 1;
        else b = mid;
    }
    *lo = l;
    *hi = a;
    return a - l;
}

int va_exact_range(const va_vocab *v, const void *x, size_t n, int *lo, int *hi) {
    int l, h;
    va_prefix_range(v, x, n, &l, &h);
    int e = l;
    while (e < h && v->len[v->order[e]] == n) e++;
    *lo = l;
    *hi = e;
    return e - l;
}

void va_cumsum(const va_vocab *v, const float *probs, double *cum) {
    double s = 0;
    cum[0] = 0;
    for (int i = 0; i < v->n; i++) {
        s += probs[v->order[i]];
        cum[i + 1] = s;
    }
}

double va_mass_lazy(const va_vocab *v, const float *probs, double *cum, const void *x, size_t n) {
    if (n == 0) return 1.0;
    int lo, hi;
    va_prefix_range(v, x, n, &lo, &hi);
    if (hi - lo <= VA_DIRECT_SUM || !cum) {
        double s = 0;
        for (int i = lo; i < hi; i++) s += probs[v->order[i]];
        return s;
    }
    if (isnan(cum[0])) va_cumsum(v, probs, cum);
    double s = cum[hi] - cum[lo];
    return s < 0 ? 0 : s;
}

double va_mass(const va_vocab *v, const double *cum, const void *x, size_t n) {
    int lo, hi;
    va_prefix_range(v, x, n, &lo, &hi);
    double m = cum[hi] - cum[lo];
    return m < 0 ? 0 : m;
}
