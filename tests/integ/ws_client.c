/* ws_client.c -- the blocking RFC 6455 test client of ws_client.h.
 *
 * Why our own: the integration tests must drive the gateway's WebSocket endpoint byte by byte,
 * including the malformed things a hostile client sends, with a deadline on every wait; no library
 * on the machine does both. Key decision: everything is synchronous on one socket with poll()
 * deadlines; input is kept in one growing buffer (bounded by WS_CLIENT_MAX_MSG plus a header) and
 * parsed frame by frame, so partial input survives a WS_TIMEOUT. Threading: none (one thread per
 * client). Sec-WebSocket-Accept is verified with OpenSSL's SHA-1.
 */
#include "ws_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int s_left(uint64_t deadline)
{
    uint64_t now = s_now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

static int s_fail(ws_client_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- socket I/O with deadlines ---------------------------------------------------------------- */

static int s_write_all(ws_client_t *c, const void *buf, size_t len, uint64_t deadline)
{
    const uint8_t *p = buf;
    while (len) {
        if (c->fd < 0)
            return s_fail(c, "write: connection closed");
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w, len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return s_fail(c, "write: %s", strerror(errno));
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
        int left = s_left(deadline);
        if (left == 0 || poll(&pf, 1, left) == 0)
            return s_fail(c, "write: timeout with %zu bytes unsent", len);
    }
    return 0;
}

/* Read more into rbuf. Returns 1 (bytes added), 0 (timeout), -1 (EOF or error). */
static int s_fill(ws_client_t *c, uint64_t deadline)
{
    if (c->fd < 0)
        return -1;
    if (c->rcap - c->rlen < 65536) {
        size_t cap = c->rcap ? c->rcap * 2 : 131072;
        if (cap > WS_CLIENT_MAX_MSG + 65536 + 16)
            cap = WS_CLIENT_MAX_MSG + 65536 + 16;
        if (cap <= c->rlen)
            return s_fail(c, "input buffer full"), -1;
        uint8_t *nb = realloc(c->rbuf, cap);
        if (!nb)
            return s_fail(c, "out of memory"), -1;
        c->rbuf = nb, c->rcap = cap;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            return 1;
        }
        if (r == 0)
            return -1;
        if (errno != EAGAIN && errno != EINTR)
            return s_fail(c, "read: %s", strerror(errno)), -1;
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int left = s_left(deadline);
        if (left == 0 || poll(&pf, 1, left) == 0)
            return 0;
    }
}

static void s_consume(ws_client_t *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

/* ---- handshake ----------------------------------------------------------------------------------- */

static void s_accept_for(const char *key, char out[64])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char src[128];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = snprintf(src, sizeof src, "%s%s", key, guid);
    EVP_Digest(src, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

/* Value of header `name` in c->head (case-insensitive name), copied into out. */
static const char *s_header(const ws_client_t *c, const char *name, char *out, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(c->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ' || *h == '\t')
                h++;
            size_t vl = strcspn(h, "\r\n");
            while (vl && (h[vl - 1] == ' ' || h[vl - 1] == '\t'))
                vl--;
            snprintf(out, len, "%.*s", (int)vl, h);
            return out;
        }
    }
    return NULL;
}

static int s_connect(ws_client_t *c, const char *host, int port, uint64_t deadline)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return s_fail(c, "connect: host must be an IPv4 literal, got '%s'", host);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return s_fail(c, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
        return s_fail(c, "connect: %s", strerror(errno));
    struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
    if (poll(&pf, 1, s_left(deadline)) <= 0)
        return s_fail(c, "connect: timeout");
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    return err ? s_fail(c, "connect: %s", strerror(err)) : 0;
}

/* Decode a chunked body from p[0..n) into a new buffer. Returns 1 when the last chunk is in,
 * 0 when more input is needed, -1 when malformed. */
static int s_dechunk(const uint8_t *p, size_t n, char **out, size_t *outlen)
{
    size_t off = 0, total = 0;
    char *body = malloc(n + 1);
    for (;;) {
        const uint8_t *crlf = off < n ? memmem(p + off, n - off, "\r\n", 2) : NULL;
        if (!crlf)
            break;
        char *e;
        unsigned long sz = strtoul((const char *)p + off, &e, 16);
        if (e == (const char *)p + off) {
            free(body);
            return -1;
        }
        size_t data = (size_t)(crlf - p) + 2;
        if (sz == 0) {
            body[total] = '\0';
            *out = body, *outlen = total;
            return 1;
        }
        if (data + sz + 2 > n)
            break;
        memcpy(body + total, p + data, sz);
        total += sz;
        off = data + sz + 2;
    }
    free(body);
    return 0;
}

/* The body of a non-101 response: Content-Length, chunked, or until EOF; bounded. */
static int s_read_body(ws_client_t *c, uint64_t deadline)
{
    char v[64];
    bool chunked = s_header(c, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked");
    long cl = chunked ? -1 : s_header(c, "Content-Length", v, sizeof v) ? atol(v) : -1;
    if (cl > (long)WS_CLIENT_MAX_BODY)
        return s_fail(c, "response body of %ld bytes is over the %u limit", cl, WS_CLIENT_MAX_BODY);
    bool eof = false;
    for (;;) {
        if (chunked) {
            int r = s_dechunk(c->rbuf, c->rlen, &c->body, &c->body_len);
            if (r < 0)
                return s_fail(c, "malformed chunked body");
            if (r > 0)
                return 0;
        } else if ((cl >= 0 && c->rlen >= (size_t)cl) || (cl < 0 && eof)) {
            size_t n = cl >= 0 ? (size_t)cl : c->rlen;
            c->body = malloc(n + 1);
            if (n)
                memcpy(c->body, c->rbuf, n);
            c->body[n] = '\0';
            c->body_len = n;
            return 0;
        }
        if (c->rlen > WS_CLIENT_MAX_BODY)
            return s_fail(c, "response body over the %u limit", WS_CLIENT_MAX_BODY);
        int r = s_fill(c, deadline);
        if (r == 0)
            return s_fail(c, "timeout reading the response body");
        if (r < 0) {
            if (cl >= 0 || chunked)
                return s_fail(c, "connection closed inside the response body");
            eof = true; /* EOF ends a body without a length */
        }
    }
}

int ws_client_open(ws_client_t *c, const char *host, int port, const char *path, const char *headers, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->auto_pong = true;
    uint64_t deadline = s_now_ms() + (uint64_t)timeout_ms;
    if (s_connect(c, host, port, deadline) < 0)
        goto fail;
    uint8_t rnd[16];
    char key[32], want[64], req[16384];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)rand();
    EVP_EncodeBlock((unsigned char *)key, rnd, sizeof rnd);
    s_accept_for(key, want);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     path, host, port, key, headers ? headers : "");
    if (n <= 0 || n >= (int)sizeof req) {
        s_fail(c, "request over %zu bytes", sizeof req);
        goto fail;
    }
    if (s_write_all(c, req, (size_t)n, deadline) < 0)
        goto fail;
    uint8_t *end;
    while (!(end = c->rlen ? memmem(c->rbuf, c->rlen, "\r\n\r\n", 4) : NULL)) {
        if (c->rlen >= sizeof c->head - 1) {
            s_fail(c, "response head over %zu bytes", sizeof c->head - 1);
            goto fail;
        }
        int r = s_fill(c, deadline);
        if (r <= 0) {
            s_fail(c, r == 0 ? "timeout waiting for the handshake response" : "connection closed before the response");
            goto fail;
        }
    }
    size_t hl = (size_t)(end + 4 - c->rbuf);
    if (hl >= sizeof c->head || c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 ", 9) != 0) {
        s_fail(c, "malformed response head");
        goto fail;
    }
    memcpy(c->head, c->rbuf, hl);
    c->head[hl] = '\0';
    c->status = atoi(c->head + 9);
    s_consume(c, hl);
    if (c->status != 101) {
        int rc = s_read_body(c, deadline);
        close(c->fd);
        c->fd = -1;
        return rc < 0 ? -1 : c->status;
    }
    char v[128];
    if (!s_header(c, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0) {
        s_fail(c, "101 without Upgrade: websocket");
        goto fail;
    }
    if (!s_header(c, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, want) != 0) {
        s_fail(c, "Sec-WebSocket-Accept is '%s', expected '%s'", v, want);
        goto fail;
    }
    return 101;
fail:
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    return -1;
}

void ws_client_close(ws_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->rbuf);
    free(c->frag);
    free(c->body);
    c->rbuf = c->frag = NULL;
    c->body = NULL;
    c->rlen = c->rcap = c->fraglen = 0;
}

/* ---- sending -------------------------------------------------------------------------------------- */

int ws_client_send_frame(ws_client_t *c, const ws_frame_t *f, int timeout_ms)
{
    uint64_t declared = f->declared_len ? f->declared_len : f->len;
    size_t hl = 2;
    uint8_t *buf = malloc(14 + f->len);
    if (!buf)
        return s_fail(c, "out of memory");
    buf[0] = (uint8_t)((f->fin ? 0x80 : 0) | ((f->rsv & 7) << 4) | (f->opcode & 0x0f));
    buf[1] = f->masked ? 0x80 : 0;
    if (declared < 126) {
        buf[1] |= (uint8_t)declared;
    } else if (declared < 65536) {
        buf[1] |= 126;
        buf[2] = (uint8_t)(declared >> 8), buf[3] = (uint8_t)declared;
        hl = 4;
    } else {
        buf[1] |= 127;
        for (int i = 0; i < 8; i++)
            buf[2 + i] = (uint8_t)(declared >> (56 - 8 * i));
        hl = 10;
    }
    uint8_t mask[4] = {0, 0, 0, 0};
    if (f->masked) {
        uint32_t r = (uint32_t)rand();
        memcpy(mask, &r, 4);
        memcpy(buf + hl, mask, 4);
        hl += 4;
    }
    for (size_t i = 0; i < f->len; i++)
        buf[hl + i] = ((const uint8_t *)f->payload)[i] ^ mask[i & 3];
    int rc = s_write_all(c, buf, hl + f->len, s_now_ms() + (uint64_t)timeout_ms);
    free(buf);
    return rc;
}

int ws_client_send(ws_client_t *c, int opcode, const void *data, size_t len, int timeout_ms)
{
    ws_frame_t f = {.fin = true, .opcode = opcode, .masked = true, .payload = data, .len = len};
    return ws_client_send_frame(c, &f, timeout_ms);
}

int ws_client_send_text(ws_client_t *c, const char *text, int timeout_ms)
{
    return ws_client_send(c, WS_OP_TEXT, text, strlen(text), timeout_ms);
}

int ws_client_send_close(ws_client_t *c, int code, const char *reason, int timeout_ms)
{
    uint8_t p[125];
    size_t n = 0;
    if (code) {
        size_t rl = reason ? strlen(reason) : 0;
        if (rl > 123)
            return s_fail(c, "close reason over 123 bytes");
        p[0] = (uint8_t)(code >> 8), p[1] = (uint8_t)code;
        memcpy(p + 2, reason, rl);
        n = rl + 2;
    }
    c->close_sent = true;
    return ws_client_send(c, WS_OP_CLOSE, p, n, timeout_ms);
}

int ws_client_send_raw(ws_client_t *c, const void *bytes, size_t len, int timeout_ms)
{
    return s_write_all(c, bytes, len, s_now_ms() + (uint64_t)timeout_ms);
}

int ws_client_send_oversized_header(ws_client_t *c, uint64_t declared, int timeout_ms)
{
    ws_frame_t f = {.fin = true, .opcode = WS_OP_TEXT, .masked = true, .declared_len = declared};
    return ws_client_send_frame(c, &f, timeout_ms);
}

int ws_client_send_unmasked(ws_client_t *c, int opcode, const void *data, size_t len, int timeout_ms)
{
    ws_frame_t f = {.fin = true, .opcode = opcode, .masked = false, .payload = data, .len = len};
    return ws_client_send_frame(c, &f, timeout_ms);
}

int ws_client_send_bad_opcode(ws_client_t *c, int opcode, int timeout_ms)
{
    ws_frame_t f = {.fin = true, .opcode = opcode, .masked = true, .payload = "x", .len = 1};
    return ws_client_send_frame(c, &f, timeout_ms);
}

int ws_client_send_invalid_utf8(ws_client_t *c, int timeout_ms)
{
    return ws_client_send(c, WS_OP_TEXT, "\xc3\x28", 2, timeout_ms);
}

int ws_client_send_partial(ws_client_t *c, size_t declared, size_t sent, int timeout_ms)
{
    if (sent >= declared)
        return s_fail(c, "partial frame: sent (%zu) must be below declared (%zu)", sent, declared);
    uint8_t *junk = malloc(sent ? sent : 1);
    memset(junk, 'a', sent);
    ws_frame_t f = {.fin = true, .opcode = WS_OP_TEXT, .masked = true, .payload = junk, .len = sent, .declared_len = declared};
    int rc = ws_client_send_frame(c, &f, timeout_ms);
    free(junk);
    return rc;
}

long ws_client_flood(ws_client_t *c, long n, const void *payload, size_t len, int timeout_ms)
{
    if (len > 125)
        return s_fail(c, "flood frames are at most 125 bytes");
    uint64_t deadline = s_now_ms() + (uint64_t)timeout_ms;
    size_t fl = 6 + len, per = 65536 / fl;
    uint8_t *buf = malloc(per * fl);
    long done = 0;
    while (done < n) {
        size_t k = (size_t)(n - done) < per ? (size_t)(n - done) : per;
        for (size_t i = 0; i < k; i++) {
            uint8_t *f = buf + i * fl;
            uint32_t r = (uint32_t)rand();
            f[0] = 0x81, f[1] = (uint8_t)(0x80 | len);
            memcpy(f + 2, &r, 4);
            for (size_t j = 0; j < len; j++)
                f[6 + j] = ((const uint8_t *)payload)[j] ^ f[2 + (j & 3)];
        }
        if (s_write_all(c, buf, k * fl, deadline) < 0)
            break;
        done += (long)k;
    }
    free(buf);
    return done;
}

/* ---- receiving ------------------------------------------------------------------------------------ */

/* Internal results of the frame parser, apart from the public WS_* values. */
enum { S_NEED_MORE = 100, S_CONSUMED = 101 };

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

static void s_msg_set(ws_msg_t *m, int opcode, const uint8_t *p, size_t len)
{
    m->opcode = opcode;
    m->data = malloc(len + 1);
    if (len)
        memcpy(m->data, p, len);
    m->data[len] = '\0';
    m->len = len;
}

/* A close frame: record it and echo it once. */
static int s_on_close(ws_client_t *c, const uint8_t *p, size_t len, uint64_t deadline)
{
    if (len == 1)
        return s_fail(c, "close frame with a 1-byte payload");
    c->close_received = true;
    c->close_code = len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
    snprintf(c->close_reason, sizeof c->close_reason, "%.*s", len > 2 ? (int)(len - 2) : 0, (const char *)p + 2);
    if (!c->close_sent && c->fd >= 0) {
        c->close_sent = true;
        ws_frame_t f = {.fin = true, .opcode = WS_OP_CLOSE, .masked = true, .payload = p, .len = len >= 2 ? 2 : 0};
        (void)ws_client_send_frame(c, &f, s_left(deadline) + 100); /* the peer may be gone already */
    }
    return WS_CLOSED;
}

/* Act on one whole frame (payload p, len). Returns WS_OK with *m set, WS_CLOSED, WS_ERROR, or
 * S_CONSUMED for "nothing to return yet". */
static int s_on_frame(ws_client_t *c, bool fin, int op, const uint8_t *p, size_t len, ws_msg_t *m, uint64_t deadline)
{
    if (op == WS_OP_CLOSE)
        return s_on_close(c, p, len, deadline);
    if (op == WS_OP_PING && c->auto_pong)
        return ws_client_send(c, WS_OP_PONG, p, len, s_left(deadline) + 100) < 0 ? WS_ERROR : S_CONSUMED;
    if (op == WS_OP_PING || op == WS_OP_PONG) {
        s_msg_set(m, op, p, len);
        return WS_OK;
    }
    if (op == WS_OP_CONT && !c->frag)
        return s_fail(c, "continuation frame without a message to continue");
    if (op != WS_OP_CONT && c->frag)
        return s_fail(c, "new data frame inside a fragmented message");
    if (op != WS_OP_CONT && fin) {
        if (op == WS_OP_TEXT && !s_utf8_ok(p, len))
            return s_fail(c, "text message is not valid UTF-8");
        s_msg_set(m, op, p, len);
        return WS_OK;
    }
    if (c->fraglen + len > WS_CLIENT_MAX_MSG)
        return s_fail(c, "fragmented message over %u bytes", WS_CLIENT_MAX_MSG);
    uint8_t *nf = realloc(c->frag, c->fraglen + len + 1);
    if (!nf)
        return s_fail(c, "out of memory");
    c->frag = nf;
    memcpy(c->frag + c->fraglen, p, len);
    c->fraglen += len;
    if (op != WS_OP_CONT)
        c->fragop = op;
    if (!fin)
        return S_CONSUMED;
    int rc = WS_OK;
    if (c->fragop == WS_OP_TEXT && !s_utf8_ok(c->frag, c->fraglen))
        rc = s_fail(c, "text message is not valid UTF-8");
    else
        s_msg_set(m, c->fragop, c->frag, c->fraglen);
    free(c->frag);
    c->frag = NULL;
    c->fraglen = 0;
    return rc;
}

/* Parse the frame at the head of rbuf. Returns S_NEED_MORE when incomplete, else what s_on_frame
 * returned. */
static int s_parse(ws_client_t *c, ws_msg_t *m, uint64_t deadline)
{
    const uint8_t *p = c->rbuf;
    size_t have = c->rlen, hl = 2;
    if (have < 2)
        return S_NEED_MORE;
    bool fin = p[0] & 0x80;
    int op = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    if (p[0] & 0x70)
        return s_fail(c, "server frame has reserved bits set");
    if (p[1] & 0x80)
        return s_fail(c, "server frame is masked (RFC 6455 5.1 forbids it)");
    if ((op > 2 && op < 8) || op > 10)
        return s_fail(c, "server frame has unknown opcode %d", op);
    if (len == 126) {
        if (have < 4)
            return S_NEED_MORE;
        len = (uint64_t)p[2] << 8 | p[3], hl = 4;
    } else if (len == 127) {
        if (have < 10)
            return S_NEED_MORE;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
    }
    if (op >= 8 && (!fin || len > 125))
        return s_fail(c, "server control frame is fragmented or over 125 bytes");
    if (len > WS_CLIENT_MAX_MSG)
        return s_fail(c, "server frame of %llu bytes is over %u", (unsigned long long)len, WS_CLIENT_MAX_MSG);
    if (have < hl + len)
        return S_NEED_MORE;
    int rc = s_on_frame(c, fin, op, p + hl, (size_t)len, m, deadline);
    s_consume(c, hl + (size_t)len);
    return rc;
}

int ws_client_recv(ws_client_t *c, ws_msg_t *m, int timeout_ms)
{
    uint64_t deadline = s_now_ms() + (uint64_t)timeout_ms;
    memset(m, 0, sizeof *m);
    for (;;) {
        int rc = s_parse(c, m, deadline);
        if (rc == S_CONSUMED)
            continue;
        if (rc != S_NEED_MORE)
            return rc;
        int r = s_fill(c, deadline);
        if (r == 0)
            return WS_TIMEOUT;
        if (r < 0) {
            if (c->fd >= 0)
                close(c->fd);
            c->fd = -1;
            return WS_EOF;
        }
    }
}

void ws_msg_free(ws_msg_t *m)
{
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

json_t *ws_client_recv_json(ws_client_t *c, int timeout_ms, int *rc)
{
    ws_msg_t m;
    int r = ws_client_recv(c, &m, timeout_ms);
    json_t *j = NULL;
    if (r == WS_OK) {
        json_error_t e;
        j = m.opcode == WS_OP_TEXT ? json_loadb((const char *)m.data, m.len, 0, &e) : NULL;
        if (!json_is_object(j)) {
            snprintf(c->err, sizeof c->err, "expected a JSON object in a text message, got opcode %d: %.80s", m.opcode,
                     (const char *)m.data);
            json_decref(j);
            j = NULL;
            r = WS_ERROR;
        }
        ws_msg_free(&m);
    }
    if (rc)
        *rc = r;
    return j;
}

/* ---- JSON helpers ----------------------------------------------------------------------------------- */

json_t *ws_json_get(json_t *j, const char *path)
{
    char key[256];
    while (j && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        j = json_object_get(j, key);
        path += n + (path[n] == '.');
    }
    return j;
}

const char *ws_json_str(json_t *j, const char *path)
{
    return json_string_value(ws_json_get(j, path));
}

long long ws_json_int(json_t *j, const char *path, long long dflt)
{
    json_t *v = ws_json_get(j, path);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}
