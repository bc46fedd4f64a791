/* webhook_rx.h -- a webhook receiver for the tests: a small HTTP/1.1 server on 127.0.0.1 (a port
 * of its own), run by a thread of the test process (poll with a short timeout; every wait bounded).
 *
 * It can be told what to do with each complete request:
 *   WRX_OK      answer 200 and keep the body (and its X-Presence-Signature)
 *   WRX_FAIL    answer 500
 *   WRX_REJECT  answer 400
 *   WRX_STALL   read the request and never answer (the connection stays open until the client
 *               gives up)
 *   WRX_CLOSE   read the request and close the connection without an answer
 *   WRX_TAKE_STALL  keep the body as if accepted, and never answer (a receiver that processed a
 *               batch whose acknowledgement the sender never got)
 * Requests are bounded (64 KiB of headers, 64 MiB of body; a request beyond is answered 413 and
 * the connection closed), connections too (64).
 *
 * Thread-safety: every function may be called from the test thread while the server runs.
 */
#ifndef PRESENCE_WEBHOOK_RX_H
#define PRESENCE_WEBHOOK_RX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wrx_mode { WRX_OK = 0, WRX_FAIL = 1, WRX_REJECT = 2, WRX_STALL = 3, WRX_CLOSE = 4, WRX_TAKE_STALL = 5 };

typedef struct wrx wrx_t;

typedef struct wrx_body {
    char *body; /* NUL-terminated copy; free() */
    size_t len;
    char sig[256];  /* X-Presence-Signature value ("" if none) */
    char path[256];
    uint64_t at_ms; /* monotonic ms when it was answered */
    uint64_t at_us; /* ... in microseconds */
} wrx_body_t;

/* Start on 127.0.0.1:0. keep: keep accepted bodies (else only count them). NULL on failure. */
wrx_t *wrx_start(bool keep);
/* The same over TLS with this certificate and key (PEM files). Connections are then served one
 * at a time (blocking, 2 s socket timeouts); a failed handshake is counted, not served. */
wrx_t *wrx_start_tls(bool keep, const char *cert_pem, const char *key_pem);
uint64_t wrx_tls_failures(wrx_t *w); /* handshakes that failed (the client refused us, or EOF) */
int wrx_port(const wrx_t *w);
void wrx_set_mode(wrx_t *w, int mode);
/* Start (or stop) keeping accepted bodies (latency measurements keep only what they measure). */
void wrx_set_keep(wrx_t *w, bool keep);
/* Stop the thread, close everything, free. */
void wrx_stop(wrx_t **w);

uint64_t wrx_requests(wrx_t *w);    /* complete requests read, whatever the answer */
uint64_t wrx_accepted(wrx_t *w);    /* requests answered 200 (or kept by WRX_TAKE_STALL) */
uint64_t wrx_events(wrx_t *w);      /* events in accepted bodies (objects starting {"id":) */
uint64_t wrx_connections(wrx_t *w); /* connections accepted */
/* Copies of accepted bodies from index `from`; returns how many were copied into out[0..max). */
size_t wrx_bodies(wrx_t *w, size_t from, wrx_body_t *out, size_t max);

#endif
