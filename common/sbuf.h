/* common/sbuf.h: a growable byte buffer, always NUL-terminated, for request
 * and response bodies (the HTTP server's uploads, the member client's
 * answers, the engine's per-step request bodies).
 *
 * Contract: a zeroed sbuf is empty and valid. sb_add() appends n bytes
 * (which may contain NULs) and keeps p[n] == 0; it returns 0, or -1 when
 * out of memory, leaving the buffer as it was. Resetting `n = 0` reuses the
 * memory (the hot path does this every step, so steady state allocates
 * nothing). sb_free() releases it and leaves it empty. sb_curl_write() is a
 * libcurl CURLOPT_WRITEFUNCTION that appends to the sbuf given as its
 * CURLOPT_WRITEDATA.
 *
 * sb_printf() appends printf-formatted text: sb_printf(&b, "%d ok", 3)
 * appends "3 ok". sb_read_file() appends everything f has left, up to its
 * end; after a success b->p is a string (not NULL) even when f was empty. Both return 0, or -1 (out of memory, a format error, a read error);
 * on -1 the buffer keeps what it had before the call (sb_read_file: its
 * contents before the call, though its capacity may have grown).
 */
#ifndef CONSORT_SBUF_H
#define CONSORT_SBUF_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

int sb_reserve(sbuf *b, size_t extra);
int sb_add(sbuf *b, const void *s, size_t n);
int sb_str(sbuf *b, const char *s);
int sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sb_read_file(sbuf *b, FILE *f);
void sb_free(sbuf *b);
size_t sb_curl_write(char *data, size_t size, size_t nmemb, void *sbuf_ptr);

#endif
