/* common/utf8.c: see utf8.h. */
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

/* Length of the valid character at s (n bytes available): >0 valid length,
 * 0 incomplete but possibly valid with more bytes, -1 invalid. */
static int char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
    }
    return len;
}

int utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        int l = char_len(s + i, n - i);
        if (l <= 0) return 0;
        i += (size_t)l;
    }
    return 1;
}

size_t utf8_complete_len(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        int l = char_len(s + i, n - i);
        if (l == 0) return i; /* incomplete tail: hold it back */
        i += l > 0 ? (size_t)l : 1; /* invalid bytes are emitted (and replaced) */
    }
    return n;
}

char *utf8_sanitize(const char *str, size_t n, size_t *out_len) {
    const unsigned char *s = (const unsigned char *)str;
    char *out = malloc(3 * n + 1); /* each bad byte may become 3 bytes */
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int l = char_len(s + i, n - i);
        if (l > 0) {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}
