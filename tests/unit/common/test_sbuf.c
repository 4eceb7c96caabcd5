/* common/sbuf: appends, NUL termination, embedded NULs, reuse, the curl
 * write callback. */
#include "common/sbuf.h"
#include "tests/tap.h"

int main(void) {
    sbuf b = {0};
    ok(sb_add(&b, "", 0) == 0 && b.n == 0 && b.p && b.p[0] == 0, "empty append gives an empty string");
    ok(sb_str(&b, "ab") == 0 && sb_add(&b, "c\0d", 3) == 0, "appends");
    ok(b.n == 5 && memcmp(b.p, "abc\0d", 5) == 0 && b.p[5] == 0, "bytes kept, NUL kept, terminated");
    char big[10000];
    memset(big, 'x', sizeof big);
    ok(sb_add(&b, big, sizeof big) == 0 && b.n == 10005 && b.cap > 10005 && b.p[10005] == 0, "grows");
    size_t cap = b.cap;
    b.n = 0;
    ok(sb_str(&b, "again") == 0 && b.cap == cap && !strcmp(b.p, "again"), "reset reuses the memory");
    is_int((long long)sb_curl_write("12345678", 2, 4, &b), 8, "curl callback returns the bytes taken");
    is_str(b.p, "again12345678", "curl callback appended");
    sb_free(&b);
    ok(b.p == NULL && b.n == 0 && b.cap == 0, "free leaves it empty");
    return tap_done();
}
