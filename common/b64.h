/* common/b64.h: standard base64 (RFC 4648, with '=' padding), used for every
 * byte string in the member protocol (docs/PROTOCOL.md), since token bytes
 * may be partial UTF-8 that JSON strings cannot carry.
 *
 * Contract: b64_encode() returns a malloc'ed NUL-terminated string (NULL only
 * on allocation failure). b64_decode() returns a malloc'ed buffer of *out_len
 * bytes plus a NUL terminator not counted in *out_len, or NULL when the input
 * is not valid padded base64 (whitespace is not accepted).
 */
#ifndef CONSORT_B64_H
#define CONSORT_B64_H

#include <stddef.h>

char *b64_encode(const void *data, size_t len);
unsigned char *b64_decode(const char *text, size_t *out_len);

#endif
