/* Round trips and rejections for common/b64. */
#include "common/b64.h"
#include "tests/tap.h"

#include <stdlib.h>

static void round_trip(const char *s, size_t n, const char *want) {
    char *e = b64_encode(s, n);
    is_str(e, want, "encode");
    size_t m = 99;
    unsigned char *d = b64_decode(e, &m);
    ok(d && m == n && memcmp(d, s, n) == 0, "decode gives the input back");
    free(e);
    free(d);
}

int main(void) {
    round_trip("", 0, "");
    round_trip("f", 1, "Zg==");
    round_trip("fo", 2, "Zm8=");
    round_trip("foo", 3, "Zm9v");
    round_trip("foobar", 6, "Zm9vYmFy");
    round_trip("\xff\x00\xfe", 3, "/wD+");
    const char *bad[] = {"Zg=", "Z===", "Zg=a", "Zm9v\n", "Zg==Zg==", "Zm!v"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t m;
        unsigned char *d = b64_decode(bad[i], &m);
        ok(d == NULL, "rejects malformed base64");
        free(d);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    round_trip((const char *)all, 256,
               "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==");
    return tap_done();
}
