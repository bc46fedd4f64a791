/* sse_client.h -- a minimal Server-Sent Events client for the integration tests: one HTTP/1.1
 * request on a new connection, the chunked stream de-chunked, events returned one at a time
 * (comments and `retry:` skipped), every wait with a deadline.
 */
#ifndef PRESENCE_SSE_CLIENT_H
#define PRESENCE_SSE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct th_sse th_sse_t;

typedef struct th_event {
    uint64_t id;     /* the event's id: line (0 if none) */
    char data[4096]; /* its data: line */
} th_event_t;

/* GET `path` on 127.0.0.1:port with extra `headers` ("Name: value\r\n"... or NULL) and wait (5 s)
 * for a 200 text/event-stream answer. Returns the stream, or NULL (the status, if one came, in
 * *status when status is not NULL). Free with th_sse_close. */
th_sse_t *th_sse_open(int port, const char *path, const char *headers, int *status);
/* The next event within timeout_ms: 0, or -1 on timeout, end of stream or a transport error. */
int th_sse_next(th_sse_t *s, th_event_t *ev, int timeout_ms);
/* Close and free; sets *s to NULL. Accepts NULL. */
void th_sse_close(th_sse_t **s);
/* A field of the event's JSON data as text ("" when absent; numbers and booleans printed). */
const char *th_event_field(const th_event_t *e, const char *name, char *out, size_t len);

#endif
