/* fuzz_utf8_b64: libFuzzer harness for common/utf8.c and common/b64.c,
 * checked against small reference implementations written here from the
 * contracts (RFC 3629 for UTF-8, RFC 4648 padded base64), not from the code.
 *
 * Properties:
 *  - utf8_valid agrees with the reference decoder (code points, overlong
 *    forms, surrogates, > U+10FFFF);
 *  - utf8_sanitize gives valid UTF-8, equal to the input when it is valid
 *    and different from it when not;
 *  - utf8_complete_len holds back at most 3 bytes, only a tail that more
 *    bytes could complete into a valid character, and nothing at all from
 *    valid text that ends on a character boundary;
 *  - b64_decode(b64_encode(x)) == x, and the encoding is 4 * ceil(n / 3)
 *    characters of the alphabet;
 *  - b64_decode accepts exactly the reference's padded base64 and returns
 *    the reference's bytes.
 */
#include "common/b64.h"
#include "common/utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what) {
    fprintf(stderr, "fuzz_utf8_b64: property violated: %s\n", what);
    abort();
}

/* Reference UTF-8: length of the valid character at s, or 0. */
static size_t ref_char(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) len = 2, cp = s[0] & 0x1F, min = 0x80;
    else if ((s[0] & 0xF0) == 0xE0) len = 3, cp = s[0] & 0x0F, min = 0x800;
    else if ((s[0] & 0xF8) == 0xF0) len = 4, cp = s[0] & 0x07, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static int ref_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = ref_char(s + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* Could more bytes make t[0..n) (1..3 bytes) a valid character? */
static int ref_completable(const unsigned char *t, size_t n) {
    static const unsigned char conts[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
    unsigned char buf[4];
    memcpy(buf, t, n);
    if (n == 4) return 0;
    for (size_t a = 0; a < sizeof conts; a++) {
        buf[n] = conts[a];
        if (ref_char(buf, n + 1) == n + 1) return 1;
        if (n + 1 < 4 && ref_completable(buf, n + 1)) return 1;
    }
    return 0;
}

static void check_utf8(const unsigned char *s, size_t n) {
    int v = utf8_valid((const char *)s, n);
    if (v != ref_valid(s, n)) fail("utf8_valid disagrees with the reference");
    size_t sl;
    char *z = utf8_sanitize((const char *)s, n, &sl);
    if (!z) fail("utf8_sanitize returned NULL");
    if (!ref_valid((const unsigned char *)z, sl)) fail("utf8_sanitize's output is not valid UTF-8");
    if (v != (sl == n && memcmp(z, s, n) == 0)) fail("utf8_sanitize changed valid text or kept invalid text");
    free(z);
    size_t cl = utf8_complete_len((const char *)s, n);
    if (cl > n || n - cl > 3) fail("utf8_complete_len held back more than 3 bytes");
    if (cl < n && !ref_completable(s + cl, n - cl)) fail("utf8_complete_len held back a tail no byte can complete");
    if (v && cl != n) fail("utf8_complete_len held back part of valid text");
}

static int ref_b64_value(unsigned char c) {
    const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

/* Reference decoder: padded base64, '=' only as the last one or two
 * characters; returns the length, or -1. */
static long ref_b64_decode(const char *t, size_t n, unsigned char *out) {
    if (n % 4) return -1;
    size_t pad = n && t[n - 1] == '=' ? (t[n - 2] == '=' ? 2 : 1) : 0;
    uint32_t acc = 0;
    int bits = 0;
    long o = 0;
    for (size_t i = 0; i < n - pad; i++) {
        int v = ref_b64_value((unsigned char)t[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

static void check_b64(const unsigned char *s, size_t n) {
    char *e = b64_encode(s, n);
    if (!e) fail("b64_encode returned NULL");
    size_t el = strlen(e);
    if (el != 4 * ((n + 2) / 3)) fail("b64_encode's length");
    unsigned char *ref = malloc(el + 1);
    if (ref_b64_decode(e, el, ref) != (long)n || (n && memcmp(ref, s, n))) fail("b64_encode disagrees with the reference");
    size_t dl;
    unsigned char *d = b64_decode(e, &dl);
    if (!d || dl != n || (n && memcmp(d, s, n))) fail("b64_decode(b64_encode(x)) != x");
    free(d);
    free(e);
    free(ref);

    /* the input itself as base64 text (up to its first NUL, as a C string) */
    char *t = malloc(n + 1);
    memcpy(t, s, n);
    t[n] = 0;
    size_t tl = strlen(t);
    unsigned char *want = malloc(tl + 1);
    long wl = ref_b64_decode(t, tl, want);
    d = b64_decode(t, &dl);
    if ((d != NULL) != (wl >= 0)) fail("b64_decode accepts or refuses differently from the reference");
    if (d && (dl != (size_t)wl || (dl && memcmp(d, want, dl)))) fail("b64_decode's bytes differ from the reference");
    free(d);
    free(want);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_utf8(data, size);
    check_b64(data, size);
    return 0;
}
