/* common/sbuf.c: see sbuf.h. */
#include "common/sbuf.h"

#include <stdarg.h>
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

int sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0 || sb_reserve(b, (size_t)need)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)need + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
    return 0;
}

int sb_read_file(sbuf *b, FILE *f) {
    size_t n0 = b->n;
    for (;;) {
        if (sb_reserve(b, 4096)) break;
        size_t got = fread(b->p + b->n, 1, b->cap - b->n - 1, f);
        b->n += got;
        b->p[b->n] = 0;
        if (got == 0) {
            if (!ferror(f)) return 0;
            break;
        }
    }
    b->n = n0;
    if (b->p) b->p[n0] = 0;
    return -1;
}

void sb_free(sbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

size_t sb_curl_write(char *data, size_t size, size_t nmemb, void *sbuf_ptr) {
    size_t n = size * nmemb;
    return sb_add(sbuf_ptr, data, n) ? 0 : n;
}
