/* ws_client.h -- a blocking RFC 6455 WebSocket client for integration tests, with hostile helpers.
 *
 * One connection per ws_client_t, on loopback (IPv4 literal hosts). Every call blocks for at most
 * its timeout_ms (poll-based; no call waits forever and none sleeps). Frames we send are masked as
 * RFC 6455 requires of clients, except where a raw helper is asked to break a rule. Frames we
 * receive are checked strictly (unmasked, no reserved bits, known opcodes, final control frames of
 * at most 125 bytes, UTF-8 text): a server that breaks a rule makes ws_client_recv return
 * WS_ERROR with c->err naming the rule.
 *
 * Pings from the server are answered automatically (same payload) unless c->auto_pong is set to
 * false after ws_client_open; then they are returned to the caller like any message, which lets a
 * test play a client that stops answering. A received close frame is echoed once (RFC 6455 5.5.1).
 *
 * Not thread-safe: one thread uses a given client. Memory: the client owns its buffers until
 * ws_client_close; messages returned by ws_client_recv are the caller's (ws_msg_free).
 */
#ifndef PRESENCE_WS_CLIENT_H
#define PRESENCE_WS_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BINARY = 2, WS_OP_CLOSE = 8, WS_OP_PING = 9, WS_OP_PONG = 10 };

/* ws_client_recv results. */
enum { WS_ERROR = -1, WS_OK = 0, WS_CLOSED = 1, WS_EOF = 2, WS_TIMEOUT = 3 };

#define WS_CLIENT_MAX_MSG (16u << 20) /* a larger message from the server is a WS_ERROR */
#define WS_CLIENT_MAX_BODY (1u << 20) /* non-101 response bodies are cut here */

typedef struct ws_client {
    int fd;              /* -1 when closed */
    int status;          /* HTTP status of the handshake; 101 once upgraded */
    char head[8192];     /* the response head (status line and headers), NUL-terminated */
    char *body;          /* non-101 response body, NUL-terminated (NULL if none) */
    size_t body_len;
    bool auto_pong;      /* answer pings automatically (default true) */
    bool close_received; /* a close frame arrived: close_code / close_reason hold it */
    bool close_sent;
    uint16_t close_code; /* 1005 when the close frame had no code */
    char close_reason[124];
    char err[160];       /* why the last call failed */
    /* private */
    uint8_t *rbuf, *frag;
    size_t rlen, rcap, fraglen;
    int fragop;
} ws_client_t;

typedef struct ws_msg {
    int opcode;    /* WS_OP_TEXT, WS_OP_BINARY, or WS_OP_PING / WS_OP_PONG */
    uint8_t *data; /* NUL-terminated copy (the NUL is not counted in len) */
    size_t len;
} ws_msg_t;

/* Connect to host:port (IPv4 literal), send the upgrade for `path` (with its query) plus `headers`
 * ("Name: value\r\n"..., or NULL: e.g. Authorization, Origin), and read the response.
 * Returns the HTTP status: 101 means upgraded (Sec-WebSocket-Accept verified); any other status
 * leaves the body in c->body (Content-Length or chunked) and the socket closed. Returns -1 on
 * connect failure, timeout, a malformed response, or a 101 with a wrong accept key (c->err).
 * Any frames that followed the 101 in the same read are kept for ws_client_recv.
 * `c` is initialised here (no need to zero it first); release with ws_client_close. */
int ws_client_open(ws_client_t *c, const char *host, int port, const char *path, const char *headers, int timeout_ms);
/* Close the socket (no close frame: send one first with ws_client_send_close if wanted) and free
 * the buffers. Idempotent; safe on a client whose open failed. */
void ws_client_close(ws_client_t *c);

/* One final, masked frame. Returns 0, or -1 (timeout or socket error, c->err). */
int ws_client_send(ws_client_t *c, int opcode, const void *data, size_t len, int timeout_ms);
int ws_client_send_text(ws_client_t *c, const char *text, int timeout_ms);
/* Close frame with `code` and `reason` (code 0: empty payload). Sets c->close_sent. */
int ws_client_send_close(ws_client_t *c, int code, const char *reason, int timeout_ms);

/* The next message. WS_OK: *m holds a whole text/binary message (fragments reassembled), a pong,
 * or (auto_pong false) a ping; free it with ws_msg_free. WS_CLOSED: a close frame arrived
 * (c->close_code, c->close_reason; echoed if we had not sent one). WS_EOF: the connection ended
 * without a close frame. WS_TIMEOUT: nothing whole within timeout_ms (partial input is kept).
 * WS_ERROR: the server broke the protocol (c->err). *m is zeroed unless WS_OK. */
int ws_client_recv(ws_client_t *c, ws_msg_t *m, int timeout_ms);
void ws_msg_free(ws_msg_t *m);
/* The next message, which must be text holding one JSON object. Returns it (caller owns: json_decref)
 * or NULL; *rc (may be NULL) gets the ws_client_recv result, or WS_ERROR when the message was not a
 * JSON object (c->err). */
json_t *ws_client_recv_json(ws_client_t *c, int timeout_ms, int *rc);

/* ---- JSON helpers for tests: dotted paths ("record.status"); borrowed results, NULL if absent --- */
json_t *ws_json_get(json_t *j, const char *path);
const char *ws_json_str(json_t *j, const char *path);
/* The integer at path, or dflt when absent or not an integer. */
long long ws_json_int(json_t *j, const char *path, long long dflt);

/* ---- hostile helpers: each returns 0, or -1 when the bytes could not be written (c->err) ------- */

typedef struct ws_frame {
    bool fin;
    uint8_t rsv;           /* 0..7, goes to the RSV1-3 bits */
    int opcode;            /* any 0..15 */
    bool masked;
    const void *payload;
    size_t len;            /* payload bytes actually sent */
    uint64_t declared_len; /* length written in the header; 0 means len */
} ws_frame_t;

/* Exactly the frame described (for bad opcodes, unmasked frames, RSV bits, lies about lengths). */
int ws_client_send_frame(ws_client_t *c, const ws_frame_t *f, int timeout_ms);
/* Arbitrary bytes as they are. */
int ws_client_send_raw(ws_client_t *c, const void *bytes, size_t len, int timeout_ms);
/* A text frame header declaring `declared` payload bytes (e.g. 1 MiB) and nothing after it. */
int ws_client_send_oversized_header(ws_client_t *c, uint64_t declared, int timeout_ms);
/* A well-formed but unmasked frame. */
int ws_client_send_unmasked(ws_client_t *c, int opcode, const void *data, size_t len, int timeout_ms);
/* A masked final frame with a reserved opcode (3-7 or 11-15). */
int ws_client_send_bad_opcode(ws_client_t *c, int opcode, int timeout_ms);
/* A masked text frame whose payload is not UTF-8 ("\xc3\x28"). */
int ws_client_send_invalid_utf8(ws_client_t *c, int timeout_ms);
/* A text frame header declaring `declared` bytes followed by only `sent` (< declared) of them. */
int ws_client_send_partial(ws_client_t *c, size_t declared, size_t sent, int timeout_ms);
/* n masked text frames of `len` bytes each, written as fast as the socket takes them (without
 * reading). Returns how many frames were written whole before timeout_ms or an error. */
long ws_client_flood(ws_client_t *c, long n, const void *payload, size_t len, int timeout_ms);

#endif
