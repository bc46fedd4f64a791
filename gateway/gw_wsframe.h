/* gw_wsframe.h -- RFC 6455 (WebSocket) for the server side, without I/O: an incremental frame
 * decoder, an encoder for server frames, and the opening handshake's checks and accept key.
 *
 * Decoder: the caller feeds the bytes it has read (any split: one byte at a time, or many frames
 * at once) and gets complete events back one at a time: a TEXT or BINARY message (reassembled
 * from its fragments), a PING, a PONG, a CLOSE, or an ERROR carrying the close code to send and a
 * reason naming the rule the peer broke. Every rule of RFC 6455 section 5 for frames a server
 * receives is enforced; sizes are decided from the frame header, before any payload is buffered.
 *
 * Memory: a gw_wsframe_dec_t is embedded in the caller's connection (56 bytes) and holds no heap
 * while idle. A whole unfragmented frame that is in one fed buffer is unmasked in place and
 * handed back without a copy. Only a message that is incomplete at the end of a feed (a frame cut
 * by the read, or a fragmented message) is copied to a heap buffer that grows with the bytes that
 * really arrived (never from the declared length), is bounded by max_message + 125, and is freed
 * at the next call once its message has been delivered.
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-------+-+-------------+-------------------------------+
 *    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *    | |1|2|3|       |K|             |                               |
 *    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *    |     Extended payload length continued, if payload len == 127  |
 *    + - - - - - - - - - - - - - - - +-------------------------------+
 *    |                               | Masking-key (client frames)   |
 *    +-------------------------------+-------------------------------+
 *    | Masking-key (continued)       |          Payload Data         |
 *    +-------------------------------- - - - - - - - - - - - - - - - +
 *
 * Threading: no global state; a decoder belongs to one thread at a time. Everything else is
 * reentrant.
 */
#ifndef PRESENCE_GW_WSFRAME_H
#define PRESENCE_GW_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ==== constants ============================================================================= */

#define GW_WSFRAME_MAX_DEFAULT (64u << 10) /* default maximum message size (REALTIME.md: 64 KiB) */
#define GW_WSFRAME_MAX_LIMIT (1u << 30)    /* a configured maximum above this is clamped to it */
#define GW_WSFRAME_CONTROL_MAX 125u        /* control frame payloads are at most 125 bytes */
#define GW_WSFRAME_HDR_MAX 10u             /* a server (unmasked) frame header is 2, 4 or 10 bytes */
#define GW_WSFRAME_CLOSE_REASON_MAX 123u   /* a close reason fits a control frame with its code */
#define GW_WSFRAME_ACCEPT_LEN 28u          /* Sec-WebSocket-Accept: base64 of a SHA-1 digest */

enum gw_wsframe_opcode {
    GW_WSFRAME_OP_CONT = 0x0,
    GW_WSFRAME_OP_TEXT = 0x1,
    GW_WSFRAME_OP_BINARY = 0x2,
    GW_WSFRAME_OP_CLOSE = 0x8,
    GW_WSFRAME_OP_PING = 0x9,
    GW_WSFRAME_OP_PONG = 0xa,
};

/* Close codes this module produces or the gateway sends (RFC 6455 section 7.4.1). */
enum gw_wsframe_close_code {
    GW_WSFRAME_CLOSE_NORMAL = 1000,
    GW_WSFRAME_CLOSE_GOING_AWAY = 1001,
    GW_WSFRAME_CLOSE_PROTOCOL = 1002,
    GW_WSFRAME_CLOSE_UNSUPPORTED = 1003,
    GW_WSFRAME_CLOSE_NO_STATUS = 1005, /* reported for a CLOSE without a body; never sent */
    GW_WSFRAME_CLOSE_INVALID_DATA = 1007,
    GW_WSFRAME_CLOSE_POLICY = 1008,
    GW_WSFRAME_CLOSE_TOO_BIG = 1009,
    GW_WSFRAME_CLOSE_INTERNAL = 1011,
};

/* ==== decoder =============================================================================== */

/* Results of gw_wsframe_decode(). */
enum gw_wsframe_result {
    GW_WSFRAME_MORE = 0, /* no complete event in the input; every byte was consumed (*used == len): feed more */
    GW_WSFRAME_TEXT,     /* a whole text message, valid UTF-8: ev->data / ev->len */
    GW_WSFRAME_BINARY,   /* a whole binary message: ev->data / ev->len */
    GW_WSFRAME_PING,     /* a ping (payload <= 125 bytes): answer with a PONG carrying the same payload */
    GW_WSFRAME_PONG,     /* a pong (payload <= 125 bytes), solicited or not */
    GW_WSFRAME_CLOSE,    /* the peer's close: ev->code (1005 when the frame had no body), ev->data / ev->len the
                            reason (valid UTF-8, may be empty). Terminal: echo a close and stop reading. */
    GW_WSFRAME_ERROR,    /* the peer broke a rule: send a close with ev->code (1002, 1007 or 1009) and
                            ev->reason, then drop the connection. Terminal. */
    GW_WSFRAME_CLOSED,   /* the decoder already returned CLOSE or ERROR: the input was discarded (*used == len)
                            and nothing more will ever be decoded (until gw_wsframe_dec_reset) */
};

/* One event. For TEXT, BINARY, PING, PONG and CLOSE, `data` is borrowed: it points either into the
 * caller's input (unmasked in place) or into the decoder's buffer, and is valid until the next call
 * of gw_wsframe_decode, gw_wsframe_dec_reset or gw_wsframe_dec_fini on this decoder, and only while
 * the caller keeps the input bytes it fed (in[0..*used) of the call that returned it). `data` is
 * NULL when `len` is 0. */
typedef struct gw_wsframe_event {
    uint8_t *data;
    size_t len;
    uint16_t code;      /* CLOSE: the peer's code; ERROR: the code to send */
    const char *reason; /* ERROR: a static text naming the rule broken; NULL otherwise */
} gw_wsframe_event_t;

/* A decoder. Embedded in the caller's connection state; the fields are private (they are
 * declared here only so the state can be embedded without an allocation of its own). */
typedef struct gw_wsframe_dec {
    uint8_t *buf;     /* heap: the incomplete message (and a cut control frame after it), or NULL */
    uint32_t buflen;  /* bytes of the current data message in buf from its completed fragments */
    uint32_t bufcap;  /* allocated size of buf */
    uint32_t max;     /* maximum message size */
    uint32_t flen;    /* payload length of the frame being read */
    uint32_t fgot;    /* payload bytes of that frame seen so far */
    uint8_t hdr[14];  /* the frame header being read (mask key included) */
    uint8_t hgot;     /* header bytes seen */
    uint8_t state;    /* internal state */
    uint8_t msg_op;   /* opcode of an open fragmented message, 0 when none */
    uint8_t u8[3];    /* incremental UTF-8 state of the text message being read */
    uint8_t release;  /* the last event pointed into buf: drop it at the next call */
} gw_wsframe_dec_t;

/* Prepare `d` (embedded storage). max_message bounds the size of a data message (a single frame
 * or the sum of a fragmented message's frames); 0 means GW_WSFRAME_MAX_DEFAULT, larger than
 * GW_WSFRAME_MAX_LIMIT is clamped. Control frames are bounded by 125 bytes whatever the maximum.
 * No allocation. */
void gw_wsframe_dec_init(gw_wsframe_dec_t *d, uint32_t max_message);
/* Free what `d` holds; `d` may then be dropped or given to gw_wsframe_dec_init again. */
void gw_wsframe_dec_fini(gw_wsframe_dec_t *d);
/* Back to the initial state with the same maximum (frees the buffer; a terminal state ends). */
void gw_wsframe_dec_reset(gw_wsframe_dec_t *d);
/* Heap bytes `d` holds right now (0 when idle); never more than its maximum + 125. */
size_t gw_wsframe_dec_memory(const gw_wsframe_dec_t *d);

/* Decode from in[0..len). Consumes bytes up to the end of the first complete event and returns
 * it; *used says how many bytes were consumed (the caller passes in + *used next time, or fresh
 * bytes once *used == len). The payload bytes of in[] are unmasked in place, so `in` must be
 * writable and is modified. Partial frames are kept in `d`: a caller may drop in[0..*used) once
 * it is done with the event.
 *
 * Returns one of enum gw_wsframe_result and fills *ev (zeroed first):
 * - GW_WSFRAME_MORE: all of in[] consumed, no event (in may be NULL when len is 0);
 * - TEXT/BINARY/PING/PONG: *ev describes it, *used <= len (more events may follow in the rest);
 * - CLOSE: validated code (1000-1003, 1007-1011, 3000-4999, or 1005 for an empty body) and
 *   reason; the decoder is finished;
 * - ERROR: ev->code is 1002 (protocol: unmasked frame, reserved bits, unknown opcode, control
 *   frame over 125 bytes or fragmented, continuation without a message, a new data frame inside a
 *   fragmented message, non-minimal or over-2^63 length, a bad close body), 1009 (a frame or the
 *   message so far over the maximum, decided from the header) or 1007 (a text message or close
 *   reason that is not UTF-8, found at the first bad byte even inside an unfinished fragment);
 *   ev->reason names the rule; the decoder holds no buffer any more and is finished;
 * - GW_WSFRAME_CLOSED: a finished decoder; all of in[] discarded.
 * Never allocates more than the bound of gw_wsframe_dec_memory(). */
int gw_wsframe_decode(gw_wsframe_dec_t *d, uint8_t *in, size_t len, size_t *used, gw_wsframe_event_t *ev);

/* ==== encoder (server frames: final, never masked) ========================================== */

/* Bytes a server frame with a `len`-byte payload takes (header + payload). */
size_t gw_wsframe_size(size_t len);

/* Write the header of a final, unmasked frame with this opcode and payload length into out
 * (GW_WSFRAME_HDR_MAX bytes of room). Returns its length (2, 4 or 10). The opcode is written as
 * given; use gw_wsframe_encode to have it checked. */
size_t gw_wsframe_header(uint8_t out[GW_WSFRAME_HDR_MAX], unsigned opcode, size_t len);

/* Frame a payload in place, without copying it: the caller rendered payload_len bytes at
 * buf + GW_WSFRAME_HDR_MAX (leaving that much room in front, e.g. by adding GW_WSFRAME_HDR_MAX
 * placeholder bytes to its gw_buf_t before rendering). Writes the header of a final unmasked frame
 * right before the payload and returns where the frame starts (buf + 0, 6 or 8); *frame_len gets
 * header + payload length. The opcode is written as given (TEXT for JSON messages). */
uint8_t *gw_wsframe_wrap(uint8_t *buf, unsigned opcode, size_t payload_len, size_t *frame_len);

/* Write a whole frame (header, then the payload copied) into out[0..cap). `opcode` is TEXT,
 * BINARY, PING or PONG (close frames come from gw_wsframe_encode_close). Returns the bytes
 * written, or 0 when the opcode is not one of those, a PING/PONG payload is over 125 bytes, or cap
 * is too small (nothing written then). A TEXT payload must be valid UTF-8: not checked (the
 * caller renders it). */
size_t gw_wsframe_encode(uint8_t *out, size_t cap, unsigned opcode, const void *payload, size_t len);

/* Write a close frame: code 0 gives an empty body (reason ignored); otherwise the code must pass
 * gw_wsframe_close_code_ok and is followed by the reason (rlen bytes; NULL with rlen 0 for none)
 * cut to the longest valid UTF-8 prefix of at most GW_WSFRAME_CLOSE_REASON_MAX bytes, so a
 * character is never split. Returns the bytes written (at most 2 + 125), or 0 for a code that may
 * not be sent or a cap too small. */
size_t gw_wsframe_encode_close(uint8_t *out, size_t cap, unsigned code, const char *reason, size_t rlen);

/* True for a close code allowed on the wire: 1000-1003, 1007-1011, 3000-4999 (so never 1005,
 * 1006 or 1015, which only describe a close locally). */
bool gw_wsframe_close_code_ok(unsigned code);

/* ==== UTF-8 ================================================================================= */

/* Length of the longest prefix of p[0..n) that is well-formed UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF) and ends on a character boundary. */
size_t gw_wsframe_utf8_span(const void *p, size_t n);
/* gw_wsframe_utf8_span(p, n) == n. */
bool gw_wsframe_utf8_valid(const void *p, size_t n);

/* ==== opening handshake ===================================================================== */

/* The request fields the handshake depends on, as the HTTP layer parsed them. A header that is
 * absent is NULL (length 0). A header that appeared more than once is passed with its values
 * joined by ", " (RFC 9110 field-line combination) -- except Sec-WebSocket-Key, which then no
 * longer reads as one key and is refused. Values may carry surrounding spaces/tabs. */
typedef struct gw_wsframe_handshake {
    const char *method;
    size_t method_len;
    const char *upgrade; /* Upgrade */
    size_t upgrade_len;
    const char *connection; /* Connection */
    size_t connection_len;
    const char *version; /* Sec-WebSocket-Version */
    size_t version_len;
    const char *key; /* Sec-WebSocket-Key */
    size_t key_len;
} gw_wsframe_handshake_t;

/* Results of gw_wsframe_handshake_check, in the order the rules are checked. */
enum gw_wsframe_handshake_result {
    GW_WSFRAME_HS_OK = 0,
    GW_WSFRAME_HS_METHOD,     /* 405: the method is not GET (answer with Allow: GET) */
    GW_WSFRAME_HS_UPGRADE,    /* 426: no Upgrade header naming the token websocket (a plain GET) */
    GW_WSFRAME_HS_CONNECTION, /* 400: Upgrade: websocket but Connection lacks the token upgrade */
    GW_WSFRAME_HS_VERSION,    /* 426: Sec-WebSocket-Version is absent or not 13 (answer with
                                 Sec-WebSocket-Version: 13 and Upgrade: websocket) */
    GW_WSFRAME_HS_KEY,        /* 400: Sec-WebSocket-Key is not the base64 of exactly 16 bytes */
};

/* Check an upgrade request against RFC 6455 section 4.2.1: method GET; Upgrade holding the token
 * "websocket" (case-insensitive, among comma-separated tokens); Connection holding the token
 * "upgrade" (same); Sec-WebSocket-Version exactly 13; Sec-WebSocket-Key 24 characters of base64
 * that decode to 16 bytes (canonical: the padding bits are zero). Returns the first rule that
 * failed (enum gw_wsframe_handshake_result), GW_WSFRAME_HS_OK when all hold. Origin, the
 * subprotocol and authentication are the caller's. */
int gw_wsframe_handshake_check(const gw_wsframe_handshake_t *h);
/* The HTTP status for a result: 101 for OK, else 405, 426 or 400 as listed above. */
int gw_wsframe_handshake_status(int rc);
/* A text naming the rule of a handshake result (static; "ok" for OK, "unknown" out of range). */
const char *gw_wsframe_strerror(int rc);

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
 * key/len is the key as checked by gw_wsframe_handshake_check (surrounding spaces/tabs are
 * ignored). Writes GW_WSFRAME_ACCEPT_LEN characters and a NUL into out. Returns 0, or -1 when
 * libcrypto fails (out is then ""). Thread-safe. */
int gw_wsframe_accept_key(const char *key, size_t len, char out[GW_WSFRAME_ACCEPT_LEN + 1]);

#endif
