/* common/utf8.h: UTF-8 validity, the one rule behind "output is valid UTF-8"
 * (invariant 4 of docs/ARCHITECTURE.md) and behind rejecting invalid input with a 400.
 *
 * Contract (RFC 3629): no overlong forms, no surrogates (U+D800..DFFF), no
 * code points above U+10FFFF.
 *  - utf8_valid(): 1 if all n bytes are valid UTF-8.
 *  - utf8_complete_len(): the length of the longest prefix of s[0..n) that
 *    does not end inside a character which could still be completed by more
 *    bytes; i.e. how much can be emitted now while holding back an
 *    incomplete tail (at most 3 bytes are held back).
 *  - utf8_sanitize(): a malloc'ed copy with each invalid sequence replaced
 *    by U+FFFD; *out_len receives its length. NULL only when out of memory.
 */
#ifndef CONSORT_UTF8_H
#define CONSORT_UTF8_H

#include <stddef.h>

int utf8_valid(const char *s, size_t n);
size_t utf8_complete_len(const char *s, size_t n);
char *utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
