/* bare_raw.c -- h2o_bare's /ws-raw: the handshake through h2o, then the socket is ours.
 *
 * h2o_http1_upgrade writes the 101 (and, in the same write, our welcome frame) and hands back the
 * h2o_socket_t; from there we parse RFC 6455 frames straight out of sock->input and write with
 * h2o_socket_write. Why: an idle connection then costs the h2o socket plus this struct (~150 bytes);
 * h2o's websocket.c adds a wslay context that carries two fixed 4 KiB buffers per connection.
 *
 * Key decisions:
 * - a frame is processed only once it is whole in sock->input; its declared length is bounded by
 *   the max frame size first, so the input buffer never grows past max_frame + 14;
 * - h2o frees sock->input itself when it is fully consumed (h2o_buffer_consume), so an idle
 *   connection holds no read buffer; write buffers exist only while a write is in flight;
 * - at most one h2o_socket_write in flight (h2o asserts it); frames queued meanwhile go to `pend`,
 *   bounded (BARE_PEND_MAX): a client that does not read is dropped;
 * - close: the close frame is written, then shutdown(SHUT_WR) and the peer gets BARE_LINGER_MS to
 *   finish (a close() with unread input would turn into an RST that can destroy our close frame).
 * Threading: loop thread only.
 */
#include "bare_ws.h"
#include "util.h"

#include <h2o/http1.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BARE_PEND_MAX (1u << 20)

enum { RAW_OPEN = 0, RAW_CLOSE_AFTER_WRITE, RAW_LINGER, RAW_KILL };

typedef struct raw_conn {
    bare_conn_t base;
    h2o_socket_t *sock;
    uint8_t *wbuf;        /* the write in flight, or NULL */
    uint8_t *pend;        /* frames queued while a write is in flight */
    uint32_t plen, pcap;
    uint8_t *frag;        /* a fragmented message being reassembled, or NULL */
    uint32_t fraglen;
    uint8_t fragop;
    uint8_t state;        /* RAW_* */
} raw_conn_t;

static void s_flush(raw_conn_t *c);

/* ---- writing ------------------------------------------------------------------------------------ */

static void s_destroy(raw_conn_t *c)
{
    bare_conn_closed(&c->base);
    free(c->frag);
    free(c->wbuf);
    free(c->pend);
    h2o_socket_close(c->sock);
    free(c);
}

static void on_linger_timeout(h2o_timeout_entry_t *e)
{
    s_destroy((raw_conn_t *)H2O_STRUCT_FROM_MEMBER(bare_conn_t, tick, e));
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    raw_conn_t *c = sock->data;
    free(c->wbuf);
    c->wbuf = NULL;
    if (err || c->state == RAW_KILL) {
        s_destroy(c);
    } else if (c->plen) {
        s_flush(c);
    } else if (c->state == RAW_CLOSE_AFTER_WRITE) {
        c->state = RAW_LINGER;
        shutdown(h2o_socket_get_fd(sock), SHUT_WR);
        if (h2o_timeout_is_linked(&c->base.tick))
            h2o_timeout_unlink(&c->base.tick);
        c->base.tick.cb = on_linger_timeout;
        h2o_timeout_link(bare_self->ctx.loop, &bare_self->linger_to, &c->base.tick);
    }
}

/* Move `pend` into flight. */
static void s_flush(raw_conn_t *c)
{
    h2o_iovec_t iov = h2o_iovec_init(c->pend, c->plen);
    c->wbuf = c->pend;
    c->pend = NULL;
    c->plen = c->pcap = 0;
    h2o_socket_write(c->sock, &iov, 1, on_written);
}

/* Queue one unmasked server frame. */
static void s_queue(raw_conn_t *c, bool fin, int opcode, const void *data, size_t len)
{
    uint8_t hdr[10];
    size_t hl = 2;
    hdr[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        hdr[1] = (uint8_t)len;
    } else if (len < 65536) {
        hdr[1] = 126;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        hl = 4;
    } else {
        hdr[1] = 127;
        for (int i = 0; i < 8; i++)
            hdr[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    if ((size_t)c->plen + hl + len > BARE_PEND_MAX) {
        c->state = RAW_KILL; /* the peer does not read: drop it once the write in flight ends */
        return;
    }
    if (c->plen + hl + len > c->pcap) {
        uint32_t cap = c->pcap ? c->pcap : 256;
        while (cap < c->plen + hl + len)
            cap *= 2;
        c->pend = xrealloc(c->pend, cap);
        c->pcap = cap;
    }
    memcpy(c->pend + c->plen, hdr, hl);
    memcpy(c->pend + c->plen + hl, data, len);
    c->plen += (uint32_t)(hl + len);
    if (!c->wbuf)
        s_flush(c); /* h2o never calls on_written synchronously, so this cannot re-enter */
}

static void s_fail(raw_conn_t *c, uint16_t code, const char *reason)
{
    uint8_t body[125];
    size_t rl = strlen(reason) > 123 ? 123 : strlen(reason);
    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    memcpy(body + 2, reason, rl);
    s_queue(c, true, 8, body, rl + 2);
    if (c->state == RAW_OPEN)
        c->state = RAW_CLOSE_AFTER_WRITE;
}

void bare_raw_send(bare_conn_t *base, int opcode, const void *data, size_t len)
{
    raw_conn_t *c = (raw_conn_t *)base;
    if (c->state == RAW_OPEN)
        s_queue(c, true, opcode, data, len);
}

void bare_raw_drop(bare_conn_t *base)
{
    s_destroy((raw_conn_t *)base);
}

/* ---- reading -------------------------------------------------------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool s_utf8_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            k = 1, cp = b & 0x1fu;
        } else if ((b & 0xf0) == 0xe0) {
            k = 2, cp = b & 0x0fu;
        } else if ((b & 0xf8) == 0xf0) {
            k = 3, cp = b & 0x07u;
        } else {
            return false;
        }
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3fu);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* A whole message: text (validated), or binary. "fragment-me..." comes back in three fragments with
 * a ping between them (a test of clients' reassembly). */
static void s_deliver(raw_conn_t *c, int op, const uint8_t *p, size_t len)
{
    if (op == 1 && !s_utf8_ok(p, len)) {
        s_fail(c, 1007, "text message is not valid UTF-8");
    } else if (op == 1 && len >= 11 && memcmp(p, "fragment-me", 11) == 0) {
        size_t a = len / 3, b = 2 * len / 3;
        s_queue(c, false, 1, p, a);
        s_queue(c, true, 9, "mid", 3);
        s_queue(c, false, 0, p + a, b - a);
        s_queue(c, true, 0, p + b, len - b);
    } else if (op == 1) {
        bare_conn_on_text(&c->base, (const char *)p, len);
    } else {
        s_queue(c, true, 2, p, len);
    }
}

static bool s_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
}

/* Act on one complete, unmasked frame. */
static void s_on_frame(raw_conn_t *c, bool fin, int op, uint8_t *p, size_t len)
{
    c->base.last_rx_ms = h2o_now(bare_self->ctx.loop);
    if (op == 8) {
        unsigned code = len >= 2 ? (unsigned)(p[0] << 8 | p[1]) : 1000;
        if (len == 1 || (len >= 2 && !s_close_code_ok(code)))
            s_fail(c, 1002, "close frame: bad status code");
        else if (len > 2 && !s_utf8_ok(p + 2, len - 2))
            s_fail(c, 1007, "close reason is not valid UTF-8");
        else { /* echo the code (RFC 6455 5.5.1); an empty close gets an empty close */
            s_queue(c, true, 8, p, len >= 2 ? 2 : 0);
            c->state = RAW_CLOSE_AFTER_WRITE;
        }
    } else if (op == 9) {
        s_queue(c, true, 10, p, len);
    } else if (op == 10) {
        /* pong: liveness only */
    } else if (op == 0) {
        if (!c->frag) {
            s_fail(c, 1002, "continuation frame without a message to continue");
            return;
        }
        c->frag = xrealloc(c->frag, c->fraglen + len + 1);
        memcpy(c->frag + c->fraglen, p, len);
        c->fraglen += (uint32_t)len;
        if (fin) {
            uint8_t *m = c->frag;
            c->frag = NULL;
            s_deliver(c, c->fragop, m, c->fraglen);
            free(m);
        }
    } else if (c->frag) {
        s_fail(c, 1002, "new message inside a fragmented one");
    } else if (fin) {
        s_deliver(c, op, p, len);
    } else {
        c->frag = xmalloc(len + 1);
        memcpy(c->frag, p, len);
        c->fraglen = (uint32_t)len;
        c->fragop = (uint8_t)op;
    }
}

/* Parse the frame at the head of sock->input. Returns 1 when one was consumed, 0 when more bytes
 * are needed, -1 when the connection failed (close frame queued). */
static int s_parse_one(raw_conn_t *c)
{
    uint8_t *p = (uint8_t *)c->sock->input->bytes;
    size_t have = c->sock->input->size, hl = 2;
    if (have < 2)
        return 0;
    bool fin = p[0] & 0x80;
    int op = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    if (p[0] & 0x70)
        return s_fail(c, 1002, "reserved bits set (no extension was negotiated)"), -1;
    if ((op > 2 && op < 8) || op > 10)
        return s_fail(c, 1002, "unknown opcode"), -1;
    if (!(p[1] & 0x80))
        return s_fail(c, 1002, "client frames must be masked"), -1;
    if (len == 126) {
        if (have < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (have < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
    }
    if (op >= 8 && (!fin || len > 125))
        return s_fail(c, 1002, "control frames must be final and at most 125 bytes"), -1;
    if (len > bare_cfg.max_frame || (op == 0 && c->fraglen + len > bare_cfg.max_frame))
        return s_fail(c, 1009, "message larger than the maximum frame size"), -1;
    if (have < hl + 4 + len)
        return 0;
    uint8_t *mask = p + hl, *pl = p + hl + 4;
    for (size_t i = 0; i < len; i++)
        pl[i] ^= mask[i & 3];
    s_on_frame(c, fin, op, pl, (size_t)len);
    h2o_buffer_consume(&c->sock->input, hl + 4 + (size_t)len);
    return c->state == RAW_OPEN ? 1 : -1;
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    raw_conn_t *c = sock->data;
    if (err) {
        s_destroy(c);
        return;
    }
    while (c->state == RAW_OPEN && sock->input->size && s_parse_one(c) > 0)
        ;
    if (c->state != RAW_OPEN) /* closing: whatever else the peer sends is discarded */
        h2o_buffer_consume(&sock->input, sock->input->size);
}

/* ---- upgrade -------------------------------------------------------------------------------------- */

static void on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    raw_conn_t *c = data;
    if (sock == NULL) { /* the 101 could not be written; h2o closed the socket */
        free(c);
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize);
    c->sock = sock;
    sock->data = c;
    bare_conn_opened(&c->base, BARE_RAW);
    h2o_socket_read_start(sock, on_read);
    if (sock->input->size) /* frames that arrived with the request */
        on_read(sock, NULL);
}

/* Sec-WebSocket-Accept = base64(SHA-1(key + GUID)). h2o 2.2.5 declares
 * h2o_websocket_create_accept_key in h2o/websocket.h but never defines it (its version is static
 * in lib/websocket.c), so linking against it fails. */
static void s_accept_key(char out[29], const char *client_key)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char src[24 + sizeof guid - 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    memcpy(src, client_key, 24); /* h2o_is_websocket_handshake checked: exactly 24 bytes */
    memcpy(src + 24, guid, sizeof guid - 1);
    EVP_Digest(src, sizeof src, md, &mdlen, EVP_sha1(), NULL);
    h2o_base64_encode(out, md, mdlen, 0);
    out[28] = '\0';
}

void bare_raw_upgrade(h2o_req_t *req, const char *client_key)
{
    raw_conn_t *c = xcalloc(1, sizeof *c);
    bare_conn_init(&c->base);
    char *accept = h2o_mem_alloc_pool(&req->pool, 29);
    s_accept_key(accept, client_key);
    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, accept, 28);
    /* The welcome frame rides in the same write as the 101 (h2o_http1_upgrade's inbufs). */
    static const uint8_t welcome[] = "\x81\x12{\"type\":\"welcome\"}";
    h2o_iovec_t w = h2o_iovec_init(welcome, sizeof welcome - 1);
    h2o_http1_upgrade(req, &w, 1, on_upgraded, c);
}
