/* common/utf8: validity per RFC 3629, hold-back of incomplete tails, and
 * replacement of invalid bytes. */
#include "common/utf8.h"
#include "tests/tap.h"

#include <stdlib.h>

int main(void) {
    ok(utf8_valid("", 0), "empty is valid");
    ok(utf8_valid("plain ascii", 11), "ascii");
    ok(utf8_valid("h\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80", 12), "2, 3 and 4 byte characters");
    ok(!utf8_valid("\xC0\xAF", 2), "overlong slash rejected");
    ok(!utf8_valid("\xE0\x80\xAF", 3), "overlong 3-byte rejected");
    ok(!utf8_valid("\xED\xA0\x80", 3), "surrogate rejected");
    ok(!utf8_valid("\xF4\x90\x80\x80", 4), "above U+10FFFF rejected");
    ok(!utf8_valid("\x80", 1), "lone continuation rejected");
    ok(!utf8_valid("\xF0\x9F\x98", 3), "truncated character is not valid");
    ok(utf8_valid("a\0b", 3), "NUL is a valid character");

    is_int(utf8_complete_len("ab\xF0\x9F\x98", 5), 2, "holds back a truncated emoji");
    is_int(utf8_complete_len("ab\xF0\x9F\x98\x80", 6), 6, "complete emoji passes");
    is_int(utf8_complete_len("ab\xC3", 3), 2, "holds back a lead byte");
    is_int(utf8_complete_len("ab\x80", 3), 3, "invalid byte is not held back");
    is_int(utf8_complete_len("\xE6\x97", 2), 0, "only an incomplete character");

    size_t n;
    char *s = utf8_sanitize("a\xFF" "b\xF0\x9F", 5, &n);
    is_str(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD", "invalid bytes become U+FFFD");
    ok(utf8_valid(s, n), "sanitized text is valid");
    free(s);
    s = utf8_sanitize("\xE6\x97\xA5", 3, &n);
    is_str(s, "\xE6\x97\xA5", "valid text unchanged");
    free(s);
    return tap_done();
}
