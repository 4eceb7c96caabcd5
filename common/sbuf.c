/* common/sbuf.c: see sbuf.h. */
#include "common/sbuf.h"

#include <stdlib.h>
#include <string.h>

int sb_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int sb_add(sbuf *b, const void *s, size_t n) {
    if (sb_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int sb_str(sbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

void sb_free(sbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

size_t sb_curl_write(char *data, size_t size, size_t nmemb, void *sbuf_ptr) {
    size_t n = size * nmemb;
    return sb_add(sbuf_ptr, data, n) ? 0 : n;
}
