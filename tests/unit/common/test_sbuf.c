/* common/sbuf: appends, NUL termination, embedded NULs, reuse, the curl
 * write callback, formatted appends, reading a whole file. */
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

    ok(sb_printf(&b, "%d-%s", 42, "x") == 0 && sb_printf(&b, "|%.3f", 0.5) == 0, "printf appends");
    is_str(b.p, "42-x|0.500", "printf text");
    b.n = 0;
    ok(sb_printf(&b, "%s", "") == 0 && b.n == 0 && b.p[0] == 0, "printf of nothing");
    char line[3000];
    memset(line, 'y', sizeof line - 1);
    line[sizeof line - 1] = 0;
    ok(sb_printf(&b, "<%s>", line) == 0 && b.n == sizeof line + 1 && b.p[0] == '<' &&
       b.p[b.n - 1] == '>' && b.p[b.n] == 0, "printf grows the buffer");
    sb_free(&b);

    FILE *f = tmpfile();
    for (int i = 0; i < 3000; i++) fprintf(f, "line %d\n", i);
    fputc(0, f);
    fputs("tail", f);
    long size = ftell(f);
    rewind(f);
    sb_str(&b, "head:");
    ok(sb_read_file(&b, f) == 0, "read a file");
    ok(b.n == (size_t)size + 5 && !strncmp(b.p, "head:line 0\n", 12) &&
       !memcmp(b.p + b.n - 5, "\0tail", 5) && b.p[b.n] == 0, "appended every byte, NUL included");
    ok(sb_read_file(&b, f) == 0 && b.n == (size_t)size + 5, "at its end: nothing more");
    fclose(f);
    sb_free(&b);
    f = tmpfile();
    ok(sb_read_file(&b, f) == 0 && b.p && b.n == 0 && b.p[0] == 0, "an empty file gives an empty string");
    fclose(f);
    sb_free(&b);
    f = fopen("/dev/null", "w"); /* reading a write-only stream fails */
    sb_str(&b, "kept");
    ok(f && sb_read_file(&b, f) == -1 && b.n == 4 && !strcmp(b.p, "kept"), "a read error keeps the contents");
    if (f) fclose(f);
    sb_free(&b);
    return tap_done();
}
