/* h2_client.h -- a minimal HTTP/2 (cleartext, prior knowledge) client for tests and the rapid
 * reset probe: it speaks just enough of RFC 9113 to open streams with HEADERS, reset them with
 * RST_STREAM, and tell when the server has closed the connection. Responses are read and
 * discarded (SETTINGS are acknowledged); HPACK is written with literals only, no Huffman.
 *
 * Every wait has a deadline; nothing is thread-safe (one connection per thread).
 */
#ifndef PRESENCE_H2_CLIENT_H
#define PRESENCE_H2_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct th_h2 th_h2_t;

/* Connect to 127.0.0.1:port and send the preface and our SETTINGS. NULL on failure. */
th_h2_t *th_h2_open(int port);
/* The same from source address src (a loopback address such as "127.0.0.2": another client). */
th_h2_t *th_h2_open_from(int port, const char *src);
/* Send n HEADERS (GET path_prefix<k>, END_STREAM) each followed at once by RST_STREAM(CANCEL),
 * in writes of up to 64 pairs, reading (and discarding) what the server sends in between.
 * Returns the pairs sent, fewer when the server closed the connection meanwhile. */
uint64_t th_h2_rapid_reset(th_h2_t *h, const char *path_prefix, uint64_t n);
/* Read and discard for up to timeout_ms; true when the server has closed the connection (EOF,
 * reset, or a GOAWAY seen). */
bool th_h2_wait_closed(th_h2_t *h, int timeout_ms);
/* The server closed the connection (or sent GOAWAY). */
bool th_h2_closed(const th_h2_t *h);
/* Close and free; sets *hp to NULL. NULL-safe. */
void th_h2_close(th_h2_t **hp);

#endif
