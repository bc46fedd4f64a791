/* gw_wsframe.c -- RFC 6455 server-side framing without I/O (see gw_wsframe.h).
 *
 * Why our own: h2o's websocket API costs ~9.3 kB per connection (two fixed 4 KiB wslay arrays);
 * the gateway takes the socket over after h2o_http1_upgrade and frames with this file, whose idle
 * per-connection state is the 56-byte gw_wsframe_dec_t.
 *
 * Key decisions: the decoder is a byte-level state machine, so any split of the input gives the
 * same events, and each rule is checked at the first byte that can break it (RSV/opcode at byte 0,
 * mask and control length at byte 1, size once the length field is in, UTF-8 at the first bad
 * payload byte). A whole frame in one fed buffer is unmasked in place and returned without a copy;
 * only incomplete messages are copied, into a buffer that grows with the bytes that arrived
 * (doubling: many tiny fragments stay linear), bounded by max + 125 (a cut control frame sits
 * after the message it interrupts). Unmasking and the ASCII path of UTF-8 go 8 bytes at a time.
 * Threading: no globals; see the header.
 */
#include "gw_wsframe.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* ==== rules ================================================================================== */

enum { S_HDR = 0, S_PAYLOAD, S_DONE };

/* The rules a peer can break, each with the close code it earns. */
enum {
    R_NONE = 0,
    R_RSV,
    R_OPCODE,
    R_CTL_FRAG,
    R_CONT,
    R_INTERLEAVE,
    R_UNMASKED,
    R_CTL_LEN,
    R_NONMINIMAL,
    R_LEN63,
    R_TOO_BIG,
    R_UTF8,
    R_UTF8_END,
    R_CLOSE_BODY,
    R_CLOSE_CODE,
    R_CLOSE_UTF8,
};

static const struct {
    uint16_t code;
    const char *text;
} s_rules[] = {
    [R_NONE] = {0, ""},
    [R_RSV] = {1002, "reserved bits set: no extension was negotiated"},
    [R_OPCODE] = {1002, "unknown opcode: 0x3-0x7 and 0xb-0xf are reserved"},
    [R_CTL_FRAG] = {1002, "fragmented control frame: control frames must have FIN set"},
    [R_CONT] = {1002, "continuation frame without a message to continue"},
    [R_INTERLEAVE] = {1002, "new data frame inside a fragmented message: the message must be finished first"},
    [R_UNMASKED] = {1002, "unmasked frame: client frames must be masked"},
    [R_CTL_LEN] = {1002, "control frame payload over 125 bytes"},
    [R_NONMINIMAL] = {1002, "non-minimal payload length: the shortest length encoding must be used"},
    [R_LEN63] = {1002, "payload length over 2^63-1: the most significant bit must be 0"},
    [R_TOO_BIG] = {1009, "message larger than the maximum message size"},
    [R_UTF8] = {1007, "text message is not valid UTF-8"},
    [R_UTF8_END] = {1007, "text message ends inside a UTF-8 sequence"},
    [R_CLOSE_BODY] = {1002, "close frame with a 1-byte body: a body is a 2-byte code and an optional reason"},
    [R_CLOSE_CODE] = {1002, "close code not allowed on the wire: 1000-1003, 1007-1011 or 3000-4999"},
    [R_CLOSE_UTF8] = {1007, "close reason is not valid UTF-8"},
};

bool gw_wsframe_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
}

/* ==== UTF-8 ================================================================================== */

/* Incremental validation. State: st[0] = continuation bytes still expected (0-3), st[1]..st[2] =
 * the range the next continuation byte must be in (narrower than 80..BF right after E0, ED, F0
 * and F4, which is how overlongs, surrogates and code points above U+10FFFF are refused at the
 * first byte that makes them so). Returns false at the first ill-formed byte. */
static bool s_utf8_feed(uint8_t st[3], const uint8_t *p, size_t n)
{
    uint8_t need = st[0], lo = st[1], hi = st[2];
    size_t i = 0;
    while (i < n) {
        if (need == 0) {
            while (i + 8 <= n) { /* ASCII runs, a word at a time */
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i == n)
                break;
            uint8_t c = p[i++];
            if (c < 0x80)
                continue;
            lo = 0x80, hi = 0xbf;
            if (c >= 0xc2 && c <= 0xdf) {
                need = 1;
            } else if (c >= 0xe0 && c <= 0xef) {
                need = 2;
                if (c == 0xe0)
                    lo = 0xa0; /* E0 80..9F would be overlong */
                else if (c == 0xed)
                    hi = 0x9f; /* ED A0..BF would be a surrogate */
            } else if (c >= 0xf0 && c <= 0xf4) {
                need = 3;
                if (c == 0xf0)
                    lo = 0x90; /* F0 80..8F would be overlong */
                else if (c == 0xf4)
                    hi = 0x8f; /* F4 90.. would be above U+10FFFF */
            } else {
                return false; /* 80..C1 (continuation or overlong lead), F5..FF */
            }
        } else {
            uint8_t c = p[i++];
            if (c < lo || c > hi)
                return false;
            need--;
            lo = 0x80, hi = 0xbf;
        }
    }
    st[0] = need, st[1] = lo, st[2] = hi;
    return true;
}

size_t gw_wsframe_utf8_span(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint8_t st[3] = {0, 0x80, 0xbf};
    size_t good = 0, i = 0;
    /* Feed one character at a time so the boundary of the last complete one is known. */
    while (i < n) {
        size_t k = s[i] < 0x80 ? 1 : s[i] < 0xe0 ? 2 : s[i] < 0xf0 ? 3 : 4;
        if (k > n - i)
            k = n - i;
        if (!s_utf8_feed(st, s + i, k) || st[0] != 0)
            break;
        i += k;
        good = i;
    }
    return good;
}

bool gw_wsframe_utf8_valid(const void *p, size_t n)
{
    uint8_t st[3] = {0, 0x80, 0xbf};
    return s_utf8_feed(st, p, n) && st[0] == 0;
}

/* ==== decoder ================================================================================ */

void gw_wsframe_dec_init(gw_wsframe_dec_t *d, uint32_t max_message)
{
    memset(d, 0, sizeof *d);
    d->max = max_message == 0 ? GW_WSFRAME_MAX_DEFAULT : MIN(max_message, GW_WSFRAME_MAX_LIMIT);
}

void gw_wsframe_dec_fini(gw_wsframe_dec_t *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buflen = d->bufcap = 0;
}

void gw_wsframe_dec_reset(gw_wsframe_dec_t *d)
{
    uint32_t max = d->max;
    gw_wsframe_dec_fini(d);
    gw_wsframe_dec_init(d, max);
}

size_t gw_wsframe_dec_memory(const gw_wsframe_dec_t *d)
{
    return d->bufcap;
}

static void s_drop_buf(gw_wsframe_dec_t *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buflen = d->bufcap = 0;
}

/* Unmask n bytes from src into dst (which may be src) with the key rotated by `phase` (the
 * offset of src[0] in the frame's payload). */
static void s_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint32_t phase)
{
    uint8_t k[4];
    for (int j = 0; j < 4; j++)
        k[j] = key[(phase + (uint32_t)j) & 3];
    size_t i = 0;
    if (n >= 8) {
        uint32_t k32;
        uint64_t k64;
        memcpy(&k32, k, 4);
        k64 = (uint64_t)k32 << 32 | k32; /* the same 4 bytes twice, whatever the byte order */
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, src + i, 8);
            w ^= k64;
            memcpy(dst + i, &w, 8);
        }
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 3];
}

/* Make room for `need` bytes in buf: doubling (so a message of many small fragments costs linear
 * time), never past the bound max + 125. `need` is within that bound: lengths were checked from
 * the header. */
static void s_reserve(gw_wsframe_dec_t *d, size_t need)
{
    if (need <= d->bufcap)
        return;
    size_t bound = (size_t)d->max + GW_WSFRAME_CONTROL_MAX;
    size_t cap = d->bufcap ? (size_t)d->bufcap * 2 : 256;
    if (cap > bound)
        cap = bound;
    if (cap < need)
        cap = need;
    d->buf = xrealloc(d->buf, cap);
    d->bufcap = (uint32_t)cap;
}

static int s_fail(gw_wsframe_dec_t *d, int rule, gw_wsframe_event_t *ev)
{
    s_drop_buf(d);
    d->state = S_DONE;
    d->msg_op = 0;
    ev->code = s_rules[rule].code;
    ev->reason = s_rules[rule].text;
    return GW_WSFRAME_ERROR;
}

/* Byte 0: FIN, RSV1-3, opcode. */
static int s_check_b0(const gw_wsframe_dec_t *d)
{
    uint8_t b = d->hdr[0], op = b & 0x0f;
    if (b & 0x70)
        return R_RSV;
    if ((op > GW_WSFRAME_OP_BINARY && op < GW_WSFRAME_OP_CLOSE) || op > GW_WSFRAME_OP_PONG)
        return R_OPCODE;
    if (op >= GW_WSFRAME_OP_CLOSE)
        return (b & 0x80) ? R_NONE : R_CTL_FRAG;
    if (op == GW_WSFRAME_OP_CONT && !d->msg_op)
        return R_CONT;
    if (op != GW_WSFRAME_OP_CONT && d->msg_op)
        return R_INTERLEAVE;
    return R_NONE;
}

/* The payload length is known: is it within the maximum (data frames)? */
static int s_check_size(gw_wsframe_dec_t *d, uint64_t len)
{
    if ((d->hdr[0] & 0x0f) < GW_WSFRAME_OP_CLOSE && (uint64_t)d->buflen + len > d->max)
        return R_TOO_BIG;
    d->flen = (uint32_t)len; /* <= max (data) or <= 125 (control) */
    return R_NONE;
}

/* Byte 1: MASK, 7-bit length. */
static int s_check_b1(gw_wsframe_dec_t *d)
{
    uint8_t b = d->hdr[1], l7 = b & 0x7f;
    if (!(b & 0x80))
        return R_UNMASKED;
    if ((d->hdr[0] & 0x0f) >= GW_WSFRAME_OP_CLOSE && l7 > GW_WSFRAME_CONTROL_MAX)
        return R_CTL_LEN;
    return l7 < 126 ? s_check_size(d, l7) : R_NONE;
}

/* The 16- or 64-bit length field is complete. */
static int s_check_extlen(gw_wsframe_dec_t *d)
{
    uint64_t len = 0;
    if ((d->hdr[1] & 0x7f) == 126) {
        len = (uint64_t)d->hdr[2] << 8 | d->hdr[3];
        if (len < 126)
            return R_NONMINIMAL;
    } else {
        if (d->hdr[2] & 0x80)
            return R_LEN63;
        for (int i = 2; i < 10; i++)
            len = len << 8 | d->hdr[i];
        if (len <= 0xffff)
            return R_NONMINIMAL;
    }
    return s_check_size(d, len);
}

/* Read header bytes from in[*pos..len). Returns 1 when the header is complete (state moves to
 * S_PAYLOAD), 0 when the input ran out, or -rule. */
static int s_header(gw_wsframe_dec_t *d, const uint8_t *in, size_t len, size_t *pos)
{
    int rule;
    while (d->hgot < 2) {
        if (*pos == len)
            return 0;
        d->hdr[d->hgot++] = in[(*pos)++];
        rule = d->hgot == 1 ? s_check_b0(d) : s_check_b1(d);
        if (rule)
            return -rule;
    }
    uint8_t l7 = d->hdr[1] & 0x7f;
    size_t lenend = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
    if (d->hgot < lenend) {
        size_t take = MIN(lenend - d->hgot, len - *pos);
        if (take) /* (in may be NULL when len is 0) */
            memcpy(d->hdr + d->hgot, in + *pos, take);
        d->hgot = (uint8_t)(d->hgot + take);
        *pos += take;
        if (d->hgot < lenend)
            return 0;
        if ((rule = s_check_extlen(d)))
            return -rule;
    }
    size_t take = MIN(lenend + 4 - d->hgot, len - *pos);
    if (take)
        memcpy(d->hdr + d->hgot, in + *pos, take);
    d->hgot = (uint8_t)(d->hgot + take);
    *pos += take;
    if (d->hgot < lenend + 4)
        return 0;
    uint8_t op = d->hdr[0] & 0x0f;
    if (op != GW_WSFRAME_OP_CONT && op < GW_WSFRAME_OP_CLOSE && !(d->hdr[0] & 0x80))
        d->msg_op = op; /* the first fragment opens a message */
    d->state = S_PAYLOAD;
    d->fgot = 0;
    return 1;
}

/* A complete close frame body: fill ev or return the rule it breaks. */
static int s_close(uint8_t *p, size_t n, gw_wsframe_event_t *ev)
{
    if (n == 0) {
        ev->code = GW_WSFRAME_CLOSE_NO_STATUS;
        return R_NONE;
    }
    if (n == 1)
        return R_CLOSE_BODY;
    unsigned code = (unsigned)p[0] << 8 | p[1];
    if (!gw_wsframe_close_code_ok(code))
        return R_CLOSE_CODE;
    if (!gw_wsframe_utf8_valid(p + 2, n - 2))
        return R_CLOSE_UTF8;
    ev->code = (uint16_t)code;
    ev->data = n > 2 ? p + 2 : NULL;
    ev->len = n - 2;
    return R_NONE;
}

int gw_wsframe_decode(gw_wsframe_dec_t *d, uint8_t *in, size_t len, size_t *used, gw_wsframe_event_t *ev)
{
    size_t pos = 0;
    memset(ev, 0, sizeof *ev);
    if (d->release) {
        /* The previous event pointed into buf. Keep buf only for an open fragmented message (a
         * control frame interrupted it); its control bytes past buflen are simply overwritten. */
        d->release = 0;
        if (!d->msg_op)
            s_drop_buf(d);
    }
    if (d->state == S_DONE) {
        s_drop_buf(d);
        *used = len;
        return GW_WSFRAME_CLOSED;
    }
    for (;;) {
        if (d->state == S_HDR) {
            int rc = s_header(d, in, len, &pos);
            if (rc < 0) {
                *used = pos;
                return s_fail(d, -rc, ev);
            }
            if (rc == 0) {
                *used = pos;
                return GW_WSFRAME_MORE;
            }
        }
        uint8_t op = d->hdr[0] & 0x0f;
        bool fin = d->hdr[0] & 0x80, control = op >= GW_WSFRAME_OP_CLOSE;
        bool text = op == GW_WSFRAME_OP_TEXT || (op == GW_WSFRAME_OP_CONT && d->msg_op == GW_WSFRAME_OP_TEXT);
        const uint8_t *key = d->hdr + d->hgot - 4;
        size_t avail = len - pos, rem = d->flen - d->fgot;
        uint8_t *p; /* the frame's whole payload once complete */
        bool from_buf;

        if (d->fgot == 0 && avail >= rem && (control || (fin && !d->msg_op))) {
            /* The whole frame is here and is a message (or a control frame) by itself: no copy. */
            p = rem ? in + pos : NULL;
            if (rem)
                s_unmask(p, p, rem, key, 0);
            pos += rem;
            from_buf = false;
            if (text) {
                d->u8[0] = 0;
                if (!s_utf8_feed(d->u8, p, rem)) {
                    *used = pos;
                    return s_fail(d, R_UTF8, ev);
                }
            }
        } else {
            /* Part of a frame, or a fragment: append what is here after the message so far. */
            size_t n = MIN(avail, rem);
            if (n) {
                size_t at = (size_t)d->buflen + d->fgot;
                s_reserve(d, at + n);
                s_unmask(d->buf + at, in + pos, n, key, d->fgot);
                pos += n;
                if (text && !s_utf8_feed(d->u8, d->buf + at, n)) {
                    *used = pos;
                    return s_fail(d, R_UTF8, ev);
                }
                d->fgot += (uint32_t)n;
            }
            if (d->fgot < d->flen) {
                *used = pos;
                return GW_WSFRAME_MORE;
            }
            p = d->buf ? d->buf + d->buflen : NULL;
            from_buf = true;
        }
        /* The frame is complete: payload p[0..flen). */
        d->state = S_HDR;
        d->hgot = 0;
        *used = pos;
        if (control) {
            ev->data = d->flen ? p : NULL;
            ev->len = d->flen;
            d->release = from_buf;
            if (op == GW_WSFRAME_OP_PING)
                return GW_WSFRAME_PING;
            if (op == GW_WSFRAME_OP_PONG)
                return GW_WSFRAME_PONG;
            ev->data = NULL;
            ev->len = 0;
            int rule = s_close(p, d->flen, ev);
            if (rule)
                return s_fail(d, rule, ev);
            d->state = S_DONE;
            d->msg_op = 0;
            if (!from_buf)
                s_drop_buf(d); /* an unfinished message interrupted by the close */
            return GW_WSFRAME_CLOSE;
        }
        if (!fin) { /* a fragment: the message goes on */
            d->buflen += d->flen;
            continue;
        }
        if (text) {
            if (d->u8[0] != 0)
                return s_fail(d, R_UTF8_END, ev);
        }
        int type = (d->msg_op ? d->msg_op : op) == GW_WSFRAME_OP_TEXT ? GW_WSFRAME_TEXT : GW_WSFRAME_BINARY;
        size_t total = (size_t)d->buflen + d->flen;
        ev->data = total ? (from_buf ? d->buf : p) : NULL;
        ev->len = total;
        d->msg_op = 0;
        d->buflen = 0;
        memset(d->u8, 0, sizeof d->u8);
        d->release = from_buf && d->buf;
        return type;
    }
}

/* ==== encoder ================================================================================ */

size_t gw_wsframe_size(size_t len)
{
    return (len < 126 ? 2 : len <= 0xffff ? 4 : 10) + len;
}

size_t gw_wsframe_header(uint8_t out[GW_WSFRAME_HDR_MAX], unsigned opcode, size_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

uint8_t *gw_wsframe_wrap(uint8_t *buf, unsigned opcode, size_t payload_len, size_t *frame_len)
{
    uint8_t h[GW_WSFRAME_HDR_MAX];
    size_t hl = gw_wsframe_header(h, opcode, payload_len);
    uint8_t *start = buf + GW_WSFRAME_HDR_MAX - hl;
    memcpy(start, h, hl);
    *frame_len = hl + payload_len;
    return start;
}

size_t gw_wsframe_encode(uint8_t *out, size_t cap, unsigned opcode, const void *payload, size_t len)
{
    switch (opcode) {
    case GW_WSFRAME_OP_TEXT:
    case GW_WSFRAME_OP_BINARY:
        break;
    case GW_WSFRAME_OP_PING:
    case GW_WSFRAME_OP_PONG:
        if (len > GW_WSFRAME_CONTROL_MAX)
            return 0;
        break;
    default:
        return 0;
    }
    if (len > SIZE_MAX - GW_WSFRAME_HDR_MAX || gw_wsframe_size(len) > cap)
        return 0;
    size_t h = gw_wsframe_header(out, opcode, len);
    if (len)
        memcpy(out + h, payload, len);
    return h + len;
}

size_t gw_wsframe_encode_close(uint8_t *out, size_t cap, unsigned code, const char *reason, size_t rlen)
{
    uint8_t body[2 + GW_WSFRAME_CLOSE_REASON_MAX];
    size_t n = 0;
    if (code != 0) {
        if (!gw_wsframe_close_code_ok(code))
            return 0;
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        rlen = reason ? gw_wsframe_utf8_span(reason, MIN(rlen, GW_WSFRAME_CLOSE_REASON_MAX)) : 0;
        if (rlen)
            memcpy(body + 2, reason, rlen);
        n = 2 + rlen;
    }
    if (gw_wsframe_size(n) > cap)
        return 0;
    size_t h = gw_wsframe_header(out, GW_WSFRAME_OP_CLOSE, n);
    if (n)
        memcpy(out + h, body, n);
    return h + n;
}

/* ==== handshake ============================================================================== */

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void s_trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static bool s_ieq(const char *a, size_t n, const char *lower)
{
    if (n != strlen(lower))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return false;
    }
    return true;
}

/* Does the comma-separated list v[0..n) hold `token` (case-insensitive, spaces trimmed)? */
static bool s_has_token(const char *v, size_t n, const char *token)
{
    size_t i = 0;
    while (v && i <= n) {
        size_t end = i;
        while (end < n && v[end] != ',')
            end++;
        const char *t = v + i;
        size_t tl = end - i;
        s_trim(&t, &tl);
        if (s_ieq(t, tl, token))
            return true;
        i = end + 1;
    }
    return false;
}

static bool s_key_ok(const char *k, size_t n)
{
    if (!k)
        return false;
    s_trim(&k, &n);
    /* 16 bytes = 22 base64 characters + "==": the 22nd carries 2 bits of data and 4 zero bits. */
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (k[i] == '\0' || !strchr(s_b64, k[i]))
            return false;
    return k[21] == 'A' || k[21] == 'Q' || k[21] == 'g' || k[21] == 'w';
}

int gw_wsframe_handshake_check(const gw_wsframe_handshake_t *h)
{
    if (!h->method || h->method_len != 3 || memcmp(h->method, "GET", 3) != 0)
        return GW_WSFRAME_HS_METHOD;
    if (!s_has_token(h->upgrade, h->upgrade_len, "websocket"))
        return GW_WSFRAME_HS_UPGRADE;
    if (!s_has_token(h->connection, h->connection_len, "upgrade"))
        return GW_WSFRAME_HS_CONNECTION;
    const char *v = h->version;
    size_t vl = h->version_len;
    if (v)
        s_trim(&v, &vl);
    if (!v || vl != 2 || memcmp(v, "13", 2) != 0)
        return GW_WSFRAME_HS_VERSION;
    if (!s_key_ok(h->key, h->key_len))
        return GW_WSFRAME_HS_KEY;
    return GW_WSFRAME_HS_OK;
}

int gw_wsframe_handshake_status(int rc)
{
    switch (rc) {
    case GW_WSFRAME_HS_OK:
        return 101;
    case GW_WSFRAME_HS_METHOD:
        return 405;
    case GW_WSFRAME_HS_UPGRADE:
    case GW_WSFRAME_HS_VERSION:
        return 426;
    default:
        return 400;
    }
}

const char *gw_wsframe_strerror(int rc)
{
    switch (rc) {
    case GW_WSFRAME_HS_OK:
        return "ok";
    case GW_WSFRAME_HS_METHOD:
        return "a WebSocket upgrade must be a GET request";
    case GW_WSFRAME_HS_UPGRADE:
        return "upgrade required: this endpoint speaks WebSocket only (Upgrade: websocket)";
    case GW_WSFRAME_HS_CONNECTION:
        return "invalid upgrade: the Connection header must hold the token upgrade";
    case GW_WSFRAME_HS_VERSION:
        return "unsupported WebSocket version: Sec-WebSocket-Version must be 13";
    case GW_WSFRAME_HS_KEY:
        return "invalid Sec-WebSocket-Key: must be the base64 encoding of 16 bytes";
    default:
        return "unknown";
    }
}

int gw_wsframe_accept_key(const char *key, size_t len, char out[GW_WSFRAME_ACCEPT_LEN + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    out[0] = '\0';
    s_trim(&key, &len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) && EVP_DigestUpdate(ctx, key, len) &&
             EVP_DigestUpdate(ctx, guid, sizeof guid - 1) && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 20;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    /* 20 bytes: six 3-byte groups, then 2 bytes and one '='. */
    char *o = out;
    for (int i = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)md[i] << 16 | (uint32_t)md[i + 1] << 8 | md[i + 2];
        *o++ = s_b64[v >> 18 & 63];
        *o++ = s_b64[v >> 12 & 63];
        *o++ = s_b64[v >> 6 & 63];
        *o++ = s_b64[v & 63];
    }
    uint32_t v = (uint32_t)md[18] << 16 | (uint32_t)md[19] << 8;
    *o++ = s_b64[v >> 18 & 63];
    *o++ = s_b64[v >> 12 & 63];
    *o++ = s_b64[v >> 6 & 63];
    *o++ = '=';
    *o = '\0';
    return 0;
}
