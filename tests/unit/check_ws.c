/* check_ws.c -- Check suite for the gateway's WebSocket engine: the RFC 6455 codec and handshake
 * (gateway/gw_wsframe.h), the REALTIME.md messages (gateway/gw_wsmsg.h) and the per-connection
 * message budget (gateway/gw_wsrate.h).
 *
 * Client frames are built here by an encoder of our own (s_frame_ex: masks with a fixed key, can
 * write what a broken client writes: unmasked, reserved bits, forced length encodings). Every
 * decoder rule is pinned with its exact close code and reason; streams are decoded whole, byte by
 * byte and in random splits (each chunk in its own exact-size allocation, so an overread is an
 * ASan report) and the event lists must be identical. Messages are compared as whole strings.
 *
 * No threads, no sockets, no files.
 */
#include "gw_lib.h"
#include "gw_wsframe.h"
#include "gw_wsmsg.h"
#include "gw_wsrate.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The reasons, pinned word for word. */
#define R_RSV "reserved bits set: no extension was negotiated"
#define R_OPCODE "unknown opcode: 0x3-0x7 and 0xb-0xf are reserved"
#define R_CTL_FRAG "fragmented control frame: control frames must have FIN set"
#define R_CONT "continuation frame without a message to continue"
#define R_INTERLEAVE "new data frame inside a fragmented message: the message must be finished first"
#define R_UNMASKED "unmasked frame: client frames must be masked"
#define R_CTL_LEN "control frame payload over 125 bytes"
#define R_NONMINIMAL "non-minimal payload length: the shortest length encoding must be used"
#define R_LEN63 "payload length over 2^63-1: the most significant bit must be 0"
#define R_TOO_BIG "message larger than the maximum message size"
#define R_UTF8 "text message is not valid UTF-8"
#define R_UTF8_END "text message ends inside a UTF-8 sequence"
#define R_CLOSE_BODY "close frame with a 1-byte body: a body is a 2-byte code and an optional reason"
#define R_CLOSE_CODE "close code not allowed on the wire: 1000-1003, 1007-1011 or 3000-4999"
#define R_CLOSE_UTF8 "close reason is not valid UTF-8"

#define FIN 0x80u
#define OP_CONT 0x0u
#define OP_TEXT 0x1u
#define OP_BIN 0x2u
#define OP_CLOSE 0x8u
#define OP_PING 0x9u
#define OP_PONG 0xau

/* ---------------------------------------------------------------------------------------------------
 * Helpers: a client-side frame encoder, and a decoder driver that records events
 * ------------------------------------------------------------------------------------------------- */

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A client frame: byte 0 as given (FIN | RSV | opcode); the length field says `declared`
 * (lenform 7, 16 or 64 forces an encoding, 0 = the minimal one); the payload p[0..n) is masked
 * with KEY unless `masked` is false. Returns the bytes written. */
static size_t s_frame_ex(uint8_t *out, unsigned b0, bool masked, int lenform, uint64_t declared, const void *p,
                         size_t n)
{
    size_t o = 0;
    uint8_t m = masked ? 0x80 : 0;
    out[o++] = (uint8_t)b0;
    if (lenform == 0)
        lenform = declared < 126 ? 7 : declared <= 0xffff ? 16 : 64;
    if (lenform == 7) {
        out[o++] = (uint8_t)(m | declared);
    } else if (lenform == 16) {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(declared >> 8);
        out[o++] = (uint8_t)declared;
    } else {
        out[o++] = m | 127;
        for (int i = 0; i < 8; i++)
            out[o++] = (uint8_t)(declared >> (56 - 8 * i));
    }
    if (masked) {
        memcpy(out + o, KEY, 4);
        o += 4;
    }
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++)
        out[o + i] = (uint8_t)(s[i] ^ (masked ? KEY[i & 3] : 0));
    return o + n;
}

static size_t s_frame(uint8_t *out, unsigned b0, const void *p, size_t n)
{
    return s_frame_ex(out, b0, true, 0, n, p, n);
}

/* Turn a server frame (unmasked, as our encoder writes it) into the same frame from a client. */
static size_t s_mask_server_frame(uint8_t *out, const uint8_t *f, size_t flen)
{
    size_t h = (f[1] & 0x7f) == 126 ? 4 : (f[1] & 0x7f) == 127 ? 10 : 2;
    memcpy(out, f, h);
    out[1] |= 0x80;
    memcpy(out + h, KEY, 4);
    for (size_t i = 0; i < flen - h; i++)
        out[h + 4 + i] = (uint8_t)(f[h + i] ^ KEY[i & 3]);
    return flen + 4;
}

typedef struct ev_rec {
    int type;
    uint16_t code;
    const char *reason;
    uint8_t *data; /* a copy */
    size_t len;
} ev_rec_t;

#define RUN_MAX_EVENTS 512

typedef struct run {
    ev_rec_t ev[RUN_MAX_EVENTS];
    size_t n;
    size_t maxmem;   /* the most the decoder held at any point */
    size_t endmem;   /* what it held after the last call */
    int closed_hits; /* GW_WSFRAME_CLOSED results seen */
} run_t;

static uint64_t s_rand_state;
static uint64_t s_rand(void)
{
    uint64_t x = s_rand_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return s_rand_state = x;
}

enum { SPLIT_WHOLE = 0, SPLIT_BYTES = 1, SPLIT_RANDOM = 2 };

/* Decode in[0..len) with a fresh decoder of maximum `max`, split as `mode` says (random splits
 * from `seed`). Each chunk is copied into its own allocation of exactly its size. The loop is the
 * one the gateway runs: decode until MORE (or CLOSED), then the next read. */
static void s_run(run_t *r, uint32_t max, const uint8_t *in, size_t len, int mode, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    s_rand_state = seed | 1;
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, max);
    size_t off = 0;
    bool terminal = false;
    while (off < len) {
        size_t k = len - off;
        if (mode == SPLIT_BYTES)
            k = 1;
        else if (mode == SPLIT_RANDOM)
            k = (s_rand() % 4 == 0) ? 1 + s_rand() % 4000 : 1 + s_rand() % 40;
        k = MIN(k, len - off);
        uint8_t *chunk = malloc(k);
        memcpy(chunk, in + off, k);
        size_t pos = 0;
        for (;;) {
            size_t used = 999999;
            gw_wsframe_event_t ev;
            int rc = gw_wsframe_decode(&d, chunk + pos, k - pos, &used, &ev);
            ck_assert_uint_le(used, k - pos);
            pos += used;
            r->maxmem = MAX(r->maxmem, gw_wsframe_dec_memory(&d));
            if (rc == GW_WSFRAME_MORE) {
                ck_assert_msg(!terminal, "MORE after a terminal event");
                ck_assert_uint_eq(pos, k);
                break;
            }
            if (rc == GW_WSFRAME_CLOSED) {
                ck_assert_msg(terminal, "CLOSED before a terminal event");
                ck_assert_uint_eq(pos, k);
                r->closed_hits++;
                break;
            }
            ck_assert_msg(!terminal, "event %d after a terminal event", rc);
            ck_assert_uint_lt(r->n, RUN_MAX_EVENTS);
            ev_rec_t *e = &r->ev[r->n++];
            e->type = rc;
            e->code = ev.code;
            e->reason = ev.reason;
            e->len = ev.len;
            ck_assert_msg((ev.data == NULL) == (ev.len == 0), "data must be NULL exactly when len is 0");
            e->data = malloc(ev.len + 1);
            if (ev.len)
                memcpy(e->data, ev.data, ev.len);
            if (rc == GW_WSFRAME_CLOSE || rc == GW_WSFRAME_ERROR)
                terminal = true;
            if (rc == GW_WSFRAME_ERROR)
                ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
        }
        free(chunk);
        off += k;
    }
    /* One more call with nothing, as the next read would: releases what the last event used. */
    size_t used;
    gw_wsframe_event_t ev;
    int rc = gw_wsframe_decode(&d, NULL, 0, &used, &ev);
    ck_assert_int_eq(rc, terminal ? GW_WSFRAME_CLOSED : GW_WSFRAME_MORE);
    r->endmem = gw_wsframe_dec_memory(&d);
    gw_wsframe_dec_fini(&d);
}

static void s_run_free(run_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ev[i].data);
    r->n = 0;
}

static void s_run_eq(const run_t *a, const run_t *b, const char *what)
{
    ck_assert_msg(a->n == b->n, "%s: %zu events vs %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_msg(a->ev[i].type == b->ev[i].type, "%s: event %zu type %d vs %d", what, i, a->ev[i].type,
                      b->ev[i].type);
        ck_assert_msg(a->ev[i].code == b->ev[i].code, "%s: event %zu code", what, i);
        ck_assert_msg(a->ev[i].reason == b->ev[i].reason, "%s: event %zu reason", what, i);
        ck_assert_msg(a->ev[i].len == b->ev[i].len, "%s: event %zu len %zu vs %zu", what, i, a->ev[i].len,
                      b->ev[i].len);
        ck_assert_msg(memcmp(a->ev[i].data, b->ev[i].data, a->ev[i].len) == 0, "%s: event %zu data", what, i);
    }
}

/* Decode whole, byte by byte and in 50 random splits: the same events every time. Leaves the
 * whole-input run in *r. */
static void s_run_all_splits(run_t *r, uint32_t max, const uint8_t *in, size_t len)
{
    static run_t other;
    s_run(r, max, in, len, SPLIT_WHOLE, 0);
    s_run(&other, max, in, len, SPLIT_BYTES, 0);
    s_run_eq(r, &other, "byte by byte");
    s_run_free(&other);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        s_run(&other, max, in, len, SPLIT_RANDOM, seed * 7919);
        char what[64];
        snprintf(what, sizeof what, "random split seed %llu", (unsigned long long)seed);
        s_run_eq(r, &other, what);
        s_run_free(&other);
    }
}

/* Expect the whole input to decode to exactly one ERROR with this code and reason (maybe after
 * other events: `before` of them). */
static void s_expect_error(const uint8_t *in, size_t len, uint32_t max, size_t before, uint16_t code,
                           const char *reason)
{
    static run_t r;
    s_run_all_splits(&r, max, in, len);
    ck_assert_msg(r.n == before + 1, "expected %zu events then an error, got %zu", before, r.n);
    ck_assert_int_eq(r.ev[before].type, GW_WSFRAME_ERROR);
    ck_assert_uint_eq(r.ev[before].code, code);
    ck_assert_str_eq(r.ev[before].reason, reason);
    ck_assert_uint_eq(r.endmem, 0);
    s_run_free(&r);
}

/* Decode one buffer with one call and return the result. */
static int s_decode_once(gw_wsframe_dec_t *d, uint8_t *in, size_t len, size_t *used, gw_wsframe_event_t *ev)
{
    return gw_wsframe_decode(d, in, len, used, ev);
}

/* ---------------------------------------------------------------------------------------------------
 * Decoder: the rules
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_decode_simple)
{
    uint8_t buf[256];
    size_t n = s_frame(buf, FIN | OP_TEXT, "hello", 5);
    ck_assert_uint_eq(n, 2 + 4 + 5);
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, 0);
    gw_wsframe_event_t ev;
    size_t used;
    ck_assert_int_eq(s_decode_once(&d, buf, n, &used, &ev), GW_WSFRAME_TEXT);
    ck_assert_uint_eq(used, n);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_int_eq(memcmp(ev.data, "hello", 5), 0);
    /* zero copy: the payload was unmasked in place in the caller's buffer */
    ck_assert_ptr_eq(ev.data, buf + 6);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    ck_assert_ptr_null(ev.reason);
    ck_assert_uint_eq(ev.code, 0);
    ck_assert_int_eq(s_decode_once(&d, buf + used, 0, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(used, 0);
    ck_assert_ptr_null(ev.data);

    /* binary, ping, pong; two frames in one buffer come back one at a time */
    n = s_frame(buf, FIN | OP_BIN, "\x00\xff\x80", 3);
    n += s_frame(buf + n, FIN | OP_PING, "p", 1);
    n += s_frame(buf + n, FIN | OP_PONG, "", 0);
    size_t off = 0;
    ck_assert_int_eq(s_decode_once(&d, buf, n, &used, &ev), GW_WSFRAME_BINARY);
    ck_assert_uint_eq(used, 9);
    ck_assert_int_eq(memcmp(ev.data, "\x00\xff\x80", 3), 0);
    off += used;
    ck_assert_int_eq(s_decode_once(&d, buf + off, n - off, &used, &ev), GW_WSFRAME_PING);
    ck_assert_uint_eq(ev.len, 1);
    ck_assert_int_eq(ev.data[0], 'p');
    off += used;
    ck_assert_int_eq(s_decode_once(&d, buf + off, n - off, &used, &ev), GW_WSFRAME_PONG);
    ck_assert_uint_eq(ev.len, 0);
    ck_assert_ptr_null(ev.data);
    off += used;
    ck_assert_uint_eq(off, n);
    /* an empty text message */
    n = s_frame(buf, FIN | OP_TEXT, "", 0);
    ck_assert_int_eq(s_decode_once(&d, buf, n, &used, &ev), GW_WSFRAME_TEXT);
    ck_assert_uint_eq(ev.len, 0);
    ck_assert_ptr_null(ev.data);
    gw_wsframe_dec_fini(&d);
    /* idle state is small: tens of bytes, no heap */
    ck_assert_uint_le(sizeof(gw_wsframe_dec_t), 64);
}
END_TEST

START_TEST(test_rule_unmasked)
{
    uint8_t buf[64];
    for (unsigned op = 0; op <= 0xa; op = op == 2 ? 8 : op + 1) {
        size_t n = s_frame_ex(buf, FIN | (op == 0 ? OP_TEXT : op), false, 0, 2, "ab", 2);
        s_expect_error(buf, n, 0, 0, 1002, R_UNMASKED);
    }
    /* decided at byte 1: nothing after it is needed */
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, 0);
    gw_wsframe_event_t ev;
    size_t used;
    uint8_t two[2] = {FIN | OP_TEXT, 0x05};
    ck_assert_int_eq(gw_wsframe_decode(&d, two, 2, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_uint_eq(used, 2);
    ck_assert_uint_eq(ev.code, 1002);
    ck_assert_str_eq(ev.reason, R_UNMASKED);
    gw_wsframe_dec_fini(&d);
}
END_TEST

START_TEST(test_rule_reserved_bits)
{
    uint8_t buf[64];
    const unsigned rsv[] = {0x40, 0x20, 0x10, 0x70};
    for (size_t i = 0; i < ARRAY_LEN(rsv); i++) {
        size_t n = s_frame(buf, FIN | rsv[i] | OP_TEXT, "x", 1);
        s_expect_error(buf, n, 0, 0, 1002, R_RSV);
        /* decided at byte 0 */
        gw_wsframe_dec_t d;
        gw_wsframe_dec_init(&d, 0);
        gw_wsframe_event_t ev;
        size_t used;
        ck_assert_int_eq(gw_wsframe_decode(&d, buf, 1, &used, &ev), GW_WSFRAME_ERROR);
        ck_assert_uint_eq(used, 1);
        gw_wsframe_dec_fini(&d);
    }
    /* on a control frame too, and inside a fragmented message */
    size_t n = s_frame(buf, FIN | 0x40 | OP_PING, "", 0);
    s_expect_error(buf, n, 0, 0, 1002, R_RSV);
    n = s_frame(buf, OP_TEXT, "a", 1);
    n += s_frame(buf + n, FIN | 0x20 | OP_CONT, "b", 1);
    s_expect_error(buf, n, 0, 0, 1002, R_RSV);
}
END_TEST

START_TEST(test_rule_opcode)
{
    uint8_t buf[64];
    const unsigned bad[] = {3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        size_t n = s_frame(buf, FIN | bad[i], "x", 1);
        s_expect_error(buf, n, 0, 0, 1002, R_OPCODE);
        n = s_frame(buf, bad[i], "x", 1); /* without FIN too */
        s_expect_error(buf, n, 0, 0, 1002, R_OPCODE);
    }
}
END_TEST

START_TEST(test_rule_control)
{
    uint8_t buf[512], payload[200];
    memset(payload, 'c', sizeof payload);
    const unsigned ops[] = {OP_PING, OP_PONG, OP_CLOSE};
    for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
        /* not final */
        size_t n = s_frame(buf, ops[i], "", 0);
        s_expect_error(buf, n, 0, 0, 1002, R_CTL_FRAG);
        /* 126 bytes, with the minimal 16-bit length */
        n = s_frame(buf, FIN | ops[i], payload, 126);
        s_expect_error(buf, n, 0, 0, 1002, R_CTL_LEN);
        /* a 7-bit length of 126/127 is refused at byte 1, before any length bytes */
        gw_wsframe_dec_t d;
        gw_wsframe_dec_init(&d, 0);
        gw_wsframe_event_t ev;
        size_t used;
        uint8_t two[2] = {(uint8_t)(FIN | ops[i]), 0x80 | 127};
        ck_assert_int_eq(gw_wsframe_decode(&d, two, 2, &used, &ev), GW_WSFRAME_ERROR);
        ck_assert_str_eq(ev.reason, R_CTL_LEN);
        gw_wsframe_dec_fini(&d);
    }
    /* 125 bytes is the most a ping may carry, and it comes back as sent */
    size_t n = s_frame(buf, FIN | OP_PING, payload, 125);
    static run_t r;
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_PING);
    ck_assert_uint_eq(r.ev[0].len, 125);
    ck_assert_int_eq(memcmp(r.ev[0].data, payload, 125), 0);
    s_run_free(&r);
    /* a control frame is bounded by 125 bytes, not by the (smaller) message maximum */
    s_run_all_splits(&r, 10, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_PING);
    s_run_free(&r);
}
END_TEST

START_TEST(test_rule_continuation)
{
    uint8_t buf[256];
    /* continuation without a start, final or not */
    size_t n = s_frame(buf, FIN | OP_CONT, "x", 1);
    s_expect_error(buf, n, 0, 0, 1002, R_CONT);
    n = s_frame(buf, OP_CONT, "x", 1);
    s_expect_error(buf, n, 0, 0, 1002, R_CONT);
    /* after a finished message, a continuation has nothing to continue */
    n = s_frame(buf, OP_TEXT, "a", 1);
    n += s_frame(buf + n, FIN | OP_CONT, "b", 1);
    n += s_frame(buf + n, FIN | OP_CONT, "c", 1);
    s_expect_error(buf, n, 0, 1, 1002, R_CONT);
    /* a new data frame inside a fragmented message: text in text, binary in text, text in binary */
    const unsigned first[] = {OP_TEXT, OP_TEXT, OP_BIN, OP_BIN};
    const unsigned second[] = {FIN | OP_TEXT, FIN | OP_BIN, OP_TEXT, FIN | OP_BIN};
    for (size_t i = 0; i < ARRAY_LEN(first); i++) {
        n = s_frame(buf, first[i], "a", 1);
        n += s_frame(buf + n, FIN | OP_PING, "", 0); /* a control frame does not end the message */
        n += s_frame(buf + n, second[i], "b", 1);
        s_expect_error(buf, n, 0, 1, 1002, R_INTERLEAVE);
    }
}
END_TEST

START_TEST(test_rule_length_encoding)
{
    static uint8_t buf[70000], payload[70000];
    memset(payload, 'a', sizeof payload);
    /* 16-bit length for 0..125: non-minimal */
    const uint64_t small[] = {0, 1, 125};
    for (size_t i = 0; i < ARRAY_LEN(small); i++) {
        size_t n = s_frame_ex(buf, FIN | OP_BIN, true, 16, small[i], payload, small[i]);
        s_expect_error(buf, n, 0, 0, 1002, R_NONMINIMAL);
    }
    /* 64-bit length for <= 65535: non-minimal */
    const uint64_t mid[] = {0, 125, 126, 65535};
    for (size_t i = 0; i < ARRAY_LEN(mid); i++) {
        size_t n = s_frame_ex(buf, FIN | OP_BIN, true, 64, mid[i], payload, mid[i]);
        s_expect_error(buf, n, 0, 0, 1002, R_NONMINIMAL);
    }
    /* the minimal encodings at the edges are fine */
    static run_t r;
    const uint64_t ok[] = {125, 126, 65535, 65536};
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        size_t n = s_frame(buf, FIN | OP_BIN, payload, ok[i]);
        ck_assert_uint_eq(n, (ok[i] < 126 ? 2 : ok[i] < 65536 ? 4 : 10) + 4 + ok[i]);
        s_run(&r, 70000, buf, n, SPLIT_WHOLE, 0);
        ck_assert_uint_eq(r.n, 1);
        ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_BINARY);
        ck_assert_uint_eq(r.ev[0].len, ok[i]);
        s_run_free(&r);
    }
    /* the high bit of a 64-bit length must be 0 (checked before the size limit) */
    size_t n = s_frame_ex(buf, FIN | OP_BIN, true, 64, 0x8000000000000000ULL, "", 0);
    s_expect_error(buf, n, 0, 0, 1002, R_LEN63);
    n = s_frame_ex(buf, FIN | OP_BIN, true, 64, UINT64_MAX, "", 0);
    s_expect_error(buf, n, 0, 0, 1002, R_LEN63);
    /* 2^63-1 is a legal encoding, and far over the maximum */
    n = s_frame_ex(buf, FIN | OP_BIN, true, 64, 0x7fffffffffffffffULL, "", 0);
    s_expect_error(buf, n, 0, 0, 1009, R_TOO_BIG);
}
END_TEST

START_TEST(test_close_frames)
{
    uint8_t buf[256], body[200];
    static run_t r;
    /* no body: 1005, no reason */
    size_t n = s_frame(buf, FIN | OP_CLOSE, "", 0);
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_CLOSE);
    ck_assert_uint_eq(r.ev[0].code, 1005);
    ck_assert_uint_eq(r.ev[0].len, 0);
    ck_assert_ptr_null(r.ev[0].reason);
    s_run_free(&r);
    /* a 1-byte body */
    n = s_frame(buf, FIN | OP_CLOSE, "\x03", 1);
    s_expect_error(buf, n, 0, 0, 1002, R_CLOSE_BODY);
    /* code and reason */
    n = s_frame(buf, FIN | OP_CLOSE, "\x03\xe8" "bye \xe2\x82\xac", 9);
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.ev[0].code, 1000);
    ck_assert_uint_eq(r.ev[0].len, 7);
    ck_assert_int_eq(memcmp(r.ev[0].data, "bye \xe2\x82\xac", 7), 0);
    s_run_free(&r);
    /* every code 0..65535: exactly 1000-1003, 1007-1011 and 3000-4999 are accepted */
    for (unsigned code = 0; code <= 65535; code++) {
        bool allowed = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
        ck_assert_int_eq(gw_wsframe_close_code_ok(code), allowed);
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        n = s_frame(buf, FIN | OP_CLOSE, body, 2);
        s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
        ck_assert_uint_eq(r.n, 1);
        if (allowed) {
            ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_CLOSE);
            ck_assert_uint_eq(r.ev[0].code, code);
            ck_assert_uint_eq(r.ev[0].len, 0);
        } else {
            ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_ERROR);
            ck_assert_uint_eq(r.ev[0].code, 1002);
            ck_assert_str_eq(r.ev[0].reason, R_CLOSE_CODE);
        }
        s_run_free(&r);
    }
    /* 1005, 1006 and 1015 describe a close locally and are never on the wire */
    ck_assert(!gw_wsframe_close_code_ok(1005) && !gw_wsframe_close_code_ok(1006) && !gw_wsframe_close_code_ok(1015));
    /* a reason that is not UTF-8 (checked after the code) */
    n = s_frame(buf, FIN | OP_CLOSE, "\x03\xe8\xc0\xaf", 4);
    s_expect_error(buf, n, 0, 0, 1007, R_CLOSE_UTF8);
    n = s_frame(buf, FIN | OP_CLOSE, "\x03\xe8" "ab\xe2\x82", 6);
    s_expect_error(buf, n, 0, 0, 1007, R_CLOSE_UTF8);
    n = s_frame(buf, FIN | OP_CLOSE, "\x03\xe7\xff", 3);
    s_expect_error(buf, n, 0, 0, 1002, R_CLOSE_CODE);
    /* the longest reason: 123 bytes */
    body[0] = 0x0f, body[1] = 0xa0; /* 4000 */
    memset(body + 2, 'r', 123);
    n = s_frame(buf, FIN | OP_CLOSE, body, 125);
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.ev[0].code, 4000);
    ck_assert_uint_eq(r.ev[0].len, 123);
    s_run_free(&r);
}
END_TEST

START_TEST(test_terminal_states)
{
    uint8_t buf[256];
    gw_wsframe_dec_t d;
    gw_wsframe_event_t ev;
    size_t used;
    /* after an ERROR: CLOSED, all input discarded, no event, until reset */
    gw_wsframe_dec_init(&d, 0);
    size_t n = s_frame(buf, FIN | 0x40 | OP_TEXT, "x", 1);
    n += s_frame(buf + n, FIN | OP_TEXT, "y", 1);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_uint_eq(used, 1);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + used, n - used, &used, &ev), GW_WSFRAME_CLOSED);
    ck_assert_uint_eq(used, n - 1);
    ck_assert_ptr_null(ev.data);
    ck_assert_ptr_null(ev.reason);
    ck_assert_uint_eq(ev.code, 0);
    ck_assert_int_eq(gw_wsframe_decode(&d, NULL, 0, &used, &ev), GW_WSFRAME_CLOSED);
    gw_wsframe_dec_reset(&d);
    n = s_frame(buf, FIN | OP_TEXT, "y", 1);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_TEXT);
    ck_assert_int_eq(ev.data[0], 'y');
    /* after a CLOSE: the same; even valid frames after it are discarded */
    n = s_frame(buf, FIN | OP_CLOSE, "\x03\xe9", 2);
    size_t n2 = s_frame(buf + n, FIN | OP_TEXT, "late", 4);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n + n2, &used, &ev), GW_WSFRAME_CLOSE);
    ck_assert_uint_eq(ev.code, 1001);
    ck_assert_uint_eq(used, n);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + n, n2, &used, &ev), GW_WSFRAME_CLOSED);
    ck_assert_uint_eq(used, n2);
    /* a reset in the middle of a fragmented message frees its buffer */
    gw_wsframe_dec_reset(&d);
    n = s_frame(buf, OP_TEXT, "part", 4);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_gt(gw_wsframe_dec_memory(&d), 0);
    gw_wsframe_dec_reset(&d);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    n = s_frame(buf, FIN | OP_CONT, "x", 1); /* the message is gone */
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_str_eq(ev.reason, R_CONT);
    gw_wsframe_dec_fini(&d);
    gw_wsframe_dec_fini(&d); /* twice is fine */
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Decoder: fragmentation, splits, memory
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_fragmented_with_controls)
{
    uint8_t buf[512];
    size_t n = s_frame(buf, OP_TEXT, "ab", 2);
    n += s_frame(buf + n, FIN | OP_PING, "p1", 2);
    n += s_frame(buf + n, OP_CONT, "cd", 2);
    n += s_frame(buf + n, FIN | OP_PONG, "", 0);
    n += s_frame(buf + n, OP_CONT, "", 0);
    n += s_frame(buf + n, FIN | OP_PING, "p2", 2);
    n += s_frame(buf + n, FIN | OP_CONT, "ef", 2);
    n += s_frame(buf + n, FIN | OP_BIN, "\x01", 1);
    static run_t r;
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 5);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_PING);
    ck_assert_int_eq(memcmp(r.ev[0].data, "p1", 2), 0);
    ck_assert_int_eq(r.ev[1].type, GW_WSFRAME_PONG);
    ck_assert_int_eq(r.ev[2].type, GW_WSFRAME_PING);
    ck_assert_int_eq(memcmp(r.ev[2].data, "p2", 2), 0);
    ck_assert_int_eq(r.ev[3].type, GW_WSFRAME_TEXT);
    ck_assert_uint_eq(r.ev[3].len, 6);
    ck_assert_int_eq(memcmp(r.ev[3].data, "abcdef", 6), 0);
    ck_assert_int_eq(r.ev[4].type, GW_WSFRAME_BINARY);
    ck_assert_uint_eq(r.endmem, 0);
    s_run_free(&r);

    /* all fragments empty: an empty message */
    n = s_frame(buf, OP_BIN, "", 0);
    n += s_frame(buf + n, OP_CONT, "", 0);
    n += s_frame(buf + n, FIN | OP_CONT, "", 0);
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_BINARY);
    ck_assert_uint_eq(r.ev[0].len, 0);
    s_run_free(&r);

    /* a close inside a fragmented message ends everything; the partial message is dropped */
    n = s_frame(buf, OP_TEXT, "abc", 3);
    n += s_frame(buf + n, FIN | OP_CLOSE, "\x03\xe8", 2);
    n += s_frame(buf + n, FIN | OP_CONT, "def", 3);
    s_run_all_splits(&r, 0, buf, n);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_CLOSE);
    ck_assert_uint_eq(r.endmem, 0);
    s_run_free(&r);
}
END_TEST

/* A stream with a bit of everything: sizes at the length-encoding edges, fragments with controls
 * between them, multi-byte UTF-8 cut across fragments, the largest message, a close, then bytes
 * after the close. 12 events. */
static size_t s_mixed_stream(uint8_t *buf)
{
    static uint8_t big[65536];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    char text[126];
    memset(text, 'x', sizeof text);
    memcpy(text + 10, "\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xa9", 9);
    size_t n = 0;
    n += s_frame(buf + n, FIN | OP_TEXT, "hello", 5);
    n += s_frame(buf + n, FIN | OP_BIN, "", 0);
    n += s_frame(buf + n, FIN | OP_TEXT, text, sizeof text);
    n += s_frame(buf + n, OP_TEXT, "caf", 3);
    n += s_frame(buf + n, FIN | OP_PING, "mid", 3);
    n += s_frame(buf + n, OP_CONT, "\xc3", 1);
    n += s_frame(buf + n, FIN | OP_PONG, "x", 1);
    n += s_frame(buf + n, FIN | OP_CONT, "\xa9 ok", 4);
    n += s_frame(buf + n, FIN | OP_BIN, "\xf0\x9f", 2); /* binary: no UTF-8 rule */
    n += s_frame(buf + n, FIN | OP_BIN, big, sizeof big);
    n += s_frame(buf + n, FIN | OP_PING, big, 125);
    n += s_frame(buf + n, OP_BIN, big, 1000);
    n += s_frame(buf + n, OP_CONT, big + 1000, 0);
    n += s_frame(buf + n, FIN | OP_CONT, big + 1000, 2000);
    n += s_frame(buf + n, FIN | OP_TEXT, "{\"type\":\"ping\"}", 15);
    n += s_frame(buf + n, FIN | OP_CLOSE, "\x03\xe8" "done", 6);
    n += s_frame(buf + n, FIN | OP_TEXT, "after close", 11);
    return n;
}

START_TEST(test_splits_identical)
{
    static uint8_t buf[80000];
    size_t n = s_mixed_stream(buf);
    static run_t r;
    s_run_all_splits(&r, 0, buf, n);
    const int types[] = {GW_WSFRAME_TEXT, GW_WSFRAME_BINARY, GW_WSFRAME_TEXT, GW_WSFRAME_PING, GW_WSFRAME_PONG,
                         GW_WSFRAME_TEXT, GW_WSFRAME_BINARY, GW_WSFRAME_BINARY, GW_WSFRAME_PING, GW_WSFRAME_BINARY,
                         GW_WSFRAME_TEXT, GW_WSFRAME_CLOSE};
    ck_assert_uint_eq(r.n, ARRAY_LEN(types));
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        ck_assert_msg(r.ev[i].type == types[i], "event %zu: type %d, want %d", i, r.ev[i].type, types[i]);
    ck_assert_uint_eq(r.ev[2].len, 126);
    ck_assert_int_eq(memcmp(r.ev[2].data + 10, "\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xa9", 9), 0);
    ck_assert_uint_eq(r.ev[5].len, 8);
    ck_assert_int_eq(memcmp(r.ev[5].data, "caf\xc3\xa9 ok", 8), 0);
    ck_assert_uint_eq(r.ev[7].len, 65536);
    for (size_t i = 0; i < 65536; i++)
        ck_assert_uint_eq(r.ev[7].data[i], (uint8_t)(i * 31 + 7));
    ck_assert_uint_eq(r.ev[9].len, 3000);
    for (size_t i = 0; i < 3000; i++)
        ck_assert_uint_eq(r.ev[9].data[i], (uint8_t)(i * 31 + 7));
    ck_assert_uint_eq(r.ev[11].code, 1000);
    ck_assert_int_eq(memcmp(r.ev[11].data, "done", 4), 0);
    ck_assert_int_eq(r.closed_hits, 1); /* the frame after the close was read and discarded */
    ck_assert_uint_eq(r.endmem, 0);
    s_run_free(&r);

    /* the same stream ending in an error mid-fragment: the same error at the same place */
    n = s_frame(buf, FIN | OP_TEXT, "ok", 2);
    n += s_frame(buf + n, OP_TEXT, "ab", 2);
    n += s_frame(buf + n, FIN | OP_PING, "", 0);
    n += s_frame(buf + n, OP_CONT, "c\xed\xa0\x80", 4); /* a surrogate */
    n += s_frame(buf + n, FIN | OP_CONT, "d", 1);
    s_expect_error(buf, n, 0, 2, 1007, R_UTF8);
}
END_TEST

START_TEST(test_zero_copy_and_memory)
{
    static uint8_t buf[70000], payload[65536];
    memset(payload, 'z', sizeof payload);
    gw_wsframe_dec_t d;
    gw_wsframe_event_t ev;
    size_t used;
    gw_wsframe_dec_init(&d, 0);
    /* a frame cut by the read: copied, the buffer grows with what arrived, not with the header */
    size_t n = s_frame(buf, FIN | OP_TEXT, payload, 65536);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, 14, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0); /* a bare header of a 64 KiB frame costs nothing */
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + 14, 100, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 256);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + 114, 1000, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 1100); /* more than doubling needs: exactly what is needed */
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + 1114, n - 1114, &used, &ev), GW_WSFRAME_TEXT);
    ck_assert_uint_eq(ev.len, 65536);
    ck_assert(ev.data < buf || ev.data >= buf + sizeof buf); /* from the decoder's buffer */
    ck_assert_int_eq(memcmp(ev.data, payload, 65536), 0);
    ck_assert_uint_le(gw_wsframe_dec_memory(&d), 65536 + 125);
    /* the next call releases it */
    ck_assert_int_eq(gw_wsframe_decode(&d, NULL, 0, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    /* a whole frame in one buffer: no copy, no memory */
    n = s_frame(buf, FIN | OP_BIN, payload, 65536);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_BINARY);
    ck_assert_ptr_eq(ev.data, buf + 14);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    /* a control frame cut inside a fragmented message is stored after it, the message kept */
    n = s_frame(buf, OP_TEXT, "abc", 3);
    size_t p = n;
    n += s_frame(buf + n, FIN | OP_PING, "pingpong", 8);
    n += s_frame(buf + n, FIN | OP_CONT, "def", 3);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, p + 9, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + p + 9, 5, &used, &ev), GW_WSFRAME_PING);
    ck_assert_uint_eq(ev.len, 8);
    ck_assert_int_eq(memcmp(ev.data, "pingpong", 8), 0);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + p + 14, n - p - 14, &used, &ev), GW_WSFRAME_TEXT);
    ck_assert_int_eq(memcmp(ev.data, "abcdef", 6), 0);
    ck_assert_int_eq(gw_wsframe_decode(&d, NULL, 0, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    /* a whole control frame inside a fragmented message: no copy of it */
    n = s_frame(buf, OP_TEXT, "abc", 3);
    p = n;
    n += s_frame(buf + n, FIN | OP_PONG, "x", 1);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_PONG);
    ck_assert_ptr_eq(ev.data, buf + p + 6);
    gw_wsframe_dec_fini(&d);
}
END_TEST

START_TEST(test_many_tiny_fragments)
{
    /* 65536 one-byte fragments: the largest message, in linear time and bounded memory */
    size_t frames = 65536, n = 0;
    uint8_t *buf = malloc(frames * 7 + 16);
    for (size_t i = 0; i < frames; i++)
        n += s_frame(buf + n, (i == 0 ? OP_TEXT : OP_CONT) | (i == frames - 1 ? FIN : 0), "abcdefgh" + (i % 8), 1);
    static run_t r;
    s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_TEXT);
    ck_assert_uint_eq(r.ev[0].len, 65536);
    for (size_t i = 0; i < 65536; i++)
        ck_assert_int_eq(r.ev[0].data[i], "abcdefgh"[i % 8]);
    ck_assert_uint_le(r.maxmem, 65536 + 125);
    s_run_free(&r);
    s_run(&r, 0, buf, n, SPLIT_BYTES, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_le(r.maxmem, 65536 + 125);
    s_run_free(&r);
    /* one byte more: 1009 at the header of the 65537th fragment */
    n -= 7;
    n += s_frame(buf + n, OP_CONT, "x", 1);
    n += s_frame(buf + n, FIN | OP_CONT, "y", 1);
    s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_ERROR);
    ck_assert_uint_eq(r.ev[0].code, 1009);
    ck_assert_str_eq(r.ev[0].reason, R_TOO_BIG);
    s_run_free(&r);
    free(buf);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Decoder: limits
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_limits)
{
    static uint8_t buf[140000], payload[131072];
    memset(payload, 'm', sizeof payload);
    static run_t r;
    /* default maximum 64 KiB: 65536 passes, 65537 is 1009, as a frame or as a fragmented sum */
    size_t n = s_frame(buf, FIN | OP_TEXT, payload, 65536);
    s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_TEXT);
    ck_assert_uint_eq(r.ev[0].len, 65536);
    s_run_free(&r);
    n = s_frame(buf, FIN | OP_TEXT, payload, 65537);
    s_expect_error(buf, n, 0, 0, 1009, R_TOO_BIG);
    n = s_frame(buf, OP_BIN, payload, 32768);
    n += s_frame(buf + n, FIN | OP_CONT, payload, 32768);
    s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_BINARY);
    ck_assert_uint_eq(r.ev[0].len, 65536);
    s_run_free(&r);
    n = s_frame(buf, OP_BIN, payload, 32768);
    n += s_frame(buf + n, FIN | OP_CONT, payload, 32769);
    s_expect_error(buf, n, 0, 0, 1009, R_TOO_BIG);

    /* decided from the header: nothing of the payload (not even the mask) needs to arrive */
    gw_wsframe_dec_t d;
    gw_wsframe_event_t ev;
    size_t used;
    gw_wsframe_dec_init(&d, 0);
    n = s_frame_ex(buf, FIN | OP_BIN, true, 64, 1u << 20, "", 0);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, 10, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_uint_eq(used, 10);
    ck_assert_uint_eq(ev.code, 1009);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    gw_wsframe_dec_fini(&d);
    /* the second fragment's header, after the first fragment was buffered */
    gw_wsframe_dec_init(&d, 0);
    n = s_frame(buf, OP_BIN, payload, 60000);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_uint_ge(gw_wsframe_dec_memory(&d), 60000);
    uint8_t hdr[4] = {FIN | OP_CONT, 0x80 | 126, (uint8_t)(6000 >> 8), (uint8_t)6000};
    ck_assert_int_eq(gw_wsframe_decode(&d, hdr, 4, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_uint_eq(ev.code, 1009);
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0); /* freed at once */
    gw_wsframe_dec_fini(&d);

    /* a configured maximum of 100: 100 and 50+50 pass; 101 and 50+51 do not */
    n = s_frame(buf, FIN | OP_TEXT, payload, 100);
    s_run(&r, 100, buf, n, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_TEXT);
    s_run_free(&r);
    n = s_frame(buf, FIN | OP_TEXT, payload, 101);
    s_expect_error(buf, n, 100, 0, 1009, R_TOO_BIG);
    n = s_frame(buf, OP_TEXT, payload, 50);
    n += s_frame(buf + n, FIN | OP_PING, payload, 125); /* controls do not count */
    n += s_frame(buf + n, FIN | OP_CONT, payload, 50);
    s_run_all_splits(&r, 100, buf, n);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_int_eq(r.ev[1].type, GW_WSFRAME_TEXT);
    ck_assert_uint_eq(r.ev[1].len, 100);
    ck_assert_uint_le(r.maxmem, 100 + 125);
    s_run_free(&r);
    n = s_frame(buf, OP_TEXT, payload, 50);
    n += s_frame(buf + n, FIN | OP_CONT, payload, 51);
    s_expect_error(buf, n, 100, 0, 1009, R_TOO_BIG);
    /* a larger configured maximum: 128 KiB */
    n = s_frame(buf, FIN | OP_BIN, payload, 131072);
    s_run(&r, 131072, buf, n, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_BINARY);
    ck_assert_uint_eq(r.ev[0].len, 131072);
    s_run_free(&r);
    /* a maximum above the limit is clamped to 1 GiB */
    n = s_frame_ex(buf, FIN | OP_BIN, true, 64, (uint64_t)GW_WSFRAME_MAX_LIMIT + 1, "", 0);
    s_expect_error(buf, n, UINT32_MAX, 0, 1009, R_TOO_BIG);
    gw_wsframe_dec_init(&d, UINT32_MAX);
    n = s_frame_ex(buf, FIN | OP_BIN, true, 64, GW_WSFRAME_MAX_LIMIT, "", 0);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_MORE); /* waiting for 1 GiB */
    ck_assert_uint_eq(gw_wsframe_dec_memory(&d), 0);
    gw_wsframe_dec_fini(&d);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Decoder: UTF-8
 * ------------------------------------------------------------------------------------------------- */

static const struct {
    const char *s;
    size_t n;
} s_utf8_good[] = {
    {"", 0},
    {"plain ascii text, long enough for the word-at-a-time path", 57},
    {"\xc2\x80", 2},                     /* U+0080 */
    {"\xdf\xbf", 2},                     /* U+07FF */
    {"\xe0\xa0\x80", 3},                 /* U+0800 */
    {"\xed\x9f\xbf", 3},                 /* U+D7FF */
    {"\xee\x80\x80", 3},                 /* U+E000 */
    {"\xef\xbf\xbf", 3},                 /* U+FFFF */
    {"\xf0\x90\x80\x80", 4},             /* U+10000 */
    {"\xf4\x8f\xbf\xbf", 4},             /* U+10FFFF */
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14},
    {"\x00\x7f", 2}, /* NUL and DEL are valid UTF-8 (control characters are a message-layer rule) */
};

static const struct {
    const char *s;
    size_t n;
    bool at_end; /* valid so far, but the message ends inside a sequence */
} s_utf8_bad[] = {
    {"\x80", 1, false},                 /* a lone continuation byte */
    {"\xbf", 1, false},
    {"\xc0\x80", 2, false},             /* overlong NUL */
    {"\xc1\xbf", 2, false},             /* overlong */
    {"\xe0\x80\x80", 3, false},         /* overlong */
    {"\xe0\x9f\xbf", 3, false},         /* overlong U+07FF */
    {"\xed\xa0\x80", 3, false},         /* U+D800, a surrogate */
    {"\xed\xbf\xbf", 3, false},         /* U+DFFF */
    {"\xed\xa0\x80\xed\xb0\x80", 6, false}, /* a surrogate pair in CESU-8 */
    {"\xf0\x80\x80\x80", 4, false},     /* overlong */
    {"\xf0\x8f\xbf\xbf", 4, false},     /* overlong U+FFFF */
    {"\xf4\x90\x80\x80", 4, false},     /* U+110000 */
    {"\xf5\x80\x80\x80", 4, false},
    {"\xf8\x88\x80\x80\x80", 5, false}, /* 5-byte form */
    {"\xfe", 1, false},
    {"\xff", 1, false},
    {"\xc3\x28", 2, false},             /* a lead byte then ASCII */
    {"\xe2\x82\x28", 3, false},
    {"ok\xe2\x82", 4, true},            /* cut */
    {"\xf0\x9f\x98", 3, true},
    {"\xc3", 1, true},
};

START_TEST(test_utf8_single_frames)
{
    uint8_t buf[256];
    static run_t r;
    for (size_t i = 0; i < ARRAY_LEN(s_utf8_good); i++) {
        ck_assert_msg(gw_wsframe_utf8_valid(s_utf8_good[i].s, s_utf8_good[i].n), "good %zu", i);
        ck_assert_uint_eq(gw_wsframe_utf8_span(s_utf8_good[i].s, s_utf8_good[i].n), s_utf8_good[i].n);
        size_t n = s_frame(buf, FIN | OP_TEXT, s_utf8_good[i].s, s_utf8_good[i].n);
        s_run_all_splits(&r, 0, buf, n);
        ck_assert_msg(r.n == 1 && r.ev[0].type == GW_WSFRAME_TEXT, "good %zu", i);
        s_run_free(&r);
    }
    for (size_t i = 0; i < ARRAY_LEN(s_utf8_bad); i++) {
        ck_assert_msg(!gw_wsframe_utf8_valid(s_utf8_bad[i].s, s_utf8_bad[i].n), "bad %zu", i);
        size_t n = s_frame(buf, FIN | OP_TEXT, s_utf8_bad[i].s, s_utf8_bad[i].n);
        s_expect_error(buf, n, 0, 0, 1007, s_utf8_bad[i].at_end ? R_UTF8_END : R_UTF8);
        /* the same bytes in a binary message are fine */
        n = s_frame(buf, FIN | OP_BIN, s_utf8_bad[i].s, s_utf8_bad[i].n);
        s_run(&r, 0, buf, n, SPLIT_WHOLE, 0);
        ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_BINARY);
        s_run_free(&r);
    }
    /* spans */
    ck_assert_uint_eq(gw_wsframe_utf8_span("ab\xe2\x82\xac" "c\xe2\x82", 8), 6);
    ck_assert_uint_eq(gw_wsframe_utf8_span("ab\xc0\x80", 4), 2);
    ck_assert_uint_eq(gw_wsframe_utf8_span("\xf0\x9f\x98\x80", 3), 0);
    ck_assert_uint_eq(gw_wsframe_utf8_span("", 0), 0);
}
END_TEST

START_TEST(test_utf8_across_fragments)
{
    uint8_t buf[512];
    static run_t r;
    /* every valid character cut at every point into fragments */
    const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t c = 0; c < ARRAY_LEN(chars); c++) {
        size_t cl = strlen(chars[c]);
        for (size_t cut = 1; cut < cl; cut++) {
            size_t n = s_frame(buf, OP_TEXT, chars[c], cut);
            n += s_frame(buf + n, FIN | OP_PING, "", 0);
            n += s_frame(buf + n, FIN | OP_CONT, chars[c] + cut, cl - cut);
            s_run_all_splits(&r, 0, buf, n);
            ck_assert_uint_eq(r.n, 2);
            ck_assert_int_eq(r.ev[1].type, GW_WSFRAME_TEXT);
            ck_assert_uint_eq(r.ev[1].len, cl);
            ck_assert_int_eq(memcmp(r.ev[1].data, chars[c], cl), 0);
            s_run_free(&r);
        }
        /* one byte per fragment */
        size_t n = 0;
        for (size_t k = 0; k < cl; k++)
            n += s_frame(buf + n, (k ? OP_CONT : OP_TEXT) | (k == cl - 1 ? FIN : 0), chars[c] + k, 1);
        s_run_all_splits(&r, 0, buf, n);
        ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_TEXT);
        s_run_free(&r);
    }
    /* invalid sequences cut across fragments, each found at its first bad byte */
    for (size_t i = 0; i < ARRAY_LEN(s_utf8_bad); i++) {
        const char *s = s_utf8_bad[i].s;
        size_t sl = s_utf8_bad[i].n;
        for (size_t cut = 1; cut < sl; cut++) {
            size_t n = s_frame(buf, OP_TEXT, s, cut);
            n += s_frame(buf + n, FIN | OP_CONT, s + cut, sl - cut);
            s_expect_error(buf, n, 0, 0, 1007, s_utf8_bad[i].at_end ? R_UTF8_END : R_UTF8);
        }
    }
    /* an invalid prefix fails early: at the first fragment, before the message is finished */
    gw_wsframe_dec_t d;
    gw_wsframe_event_t ev;
    size_t used;
    gw_wsframe_dec_init(&d, 0);
    size_t n = s_frame(buf, OP_TEXT, "ok \xc0 and more", 14);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, n, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_uint_eq(ev.code, 1007);
    ck_assert_str_eq(ev.reason, R_UTF8);
    gw_wsframe_dec_fini(&d);
    /* ... and inside an unfinished frame, as soon as the bad byte is read */
    static uint8_t big[2000];
    memset(big, 'a', sizeof big);
    big[3] = 0xff;
    gw_wsframe_dec_init(&d, 0);
    n = s_frame_ex(buf, FIN | OP_TEXT, true, 0, sizeof big, big, 100);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf, 8 + 3, &used, &ev), GW_WSFRAME_MORE);
    ck_assert_int_eq(gw_wsframe_decode(&d, buf + 11, 1, &used, &ev), GW_WSFRAME_ERROR);
    ck_assert_str_eq(ev.reason, R_UTF8);
    gw_wsframe_dec_fini(&d);
    /* a message that ends inside a sequence: the final fragment is empty */
    n = s_frame(buf, OP_TEXT, "\xe2\x82", 2);
    n += s_frame(buf + n, FIN | OP_CONT, "", 0);
    s_expect_error(buf, n, 0, 0, 1007, R_UTF8_END);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Encoder
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_encode_headers)
{
    uint8_t h[GW_WSFRAME_HDR_MAX];
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_TEXT, 0), 2);
    ck_assert_int_eq(memcmp(h, "\x81\x00", 2), 0);
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_BINARY, 125), 2);
    ck_assert_int_eq(memcmp(h, "\x82\x7d", 2), 0);
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_TEXT, 126), 4);
    ck_assert_int_eq(memcmp(h, "\x81\x7e\x00\x7e", 4), 0);
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_TEXT, 65535), 4);
    ck_assert_int_eq(memcmp(h, "\x81\x7e\xff\xff", 4), 0);
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_TEXT, 65536), 10);
    ck_assert_int_eq(memcmp(h, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10), 0);
    ck_assert_uint_eq(gw_wsframe_header(h, GW_WSFRAME_OP_PONG, 0), 2);
    ck_assert_int_eq(memcmp(h, "\x8a\x00", 2), 0);
    ck_assert_uint_eq(gw_wsframe_size(0), 2);
    ck_assert_uint_eq(gw_wsframe_size(125), 127);
    ck_assert_uint_eq(gw_wsframe_size(126), 130);
    ck_assert_uint_eq(gw_wsframe_size(65535), 65539);
    ck_assert_uint_eq(gw_wsframe_size(65536), 65546);

    uint8_t out[300];
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_TEXT, "hi", 2), 4);
    ck_assert_int_eq(memcmp(out, "\x81\x02hi", 4), 0);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_PING, "", 0), 2);
    ck_assert_int_eq(memcmp(out, "\x89\x00", 2), 0);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_PONG, "abc", 3), 5);
    ck_assert_int_eq(memcmp(out, "\x8a\x03" "abc", 5), 0);
    /* refused: a control over 125, CLOSE/CONT/unknown opcodes here, too small a buffer */
    uint8_t big[200] = {0};
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_PING, big, 126), 0);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_PING, big, 125), 127);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_CLOSE, "", 0), 0);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, GW_WSFRAME_OP_CONT, "", 0), 0);
    ck_assert_uint_eq(gw_wsframe_encode(out, sizeof out, 3, "", 0), 0);
    memset(out, 0xee, sizeof out);
    ck_assert_uint_eq(gw_wsframe_encode(out, 3, GW_WSFRAME_OP_TEXT, "hi", 2), 0);
    ck_assert_uint_eq(out[0], 0xee); /* nothing written */
    ck_assert_uint_eq(gw_wsframe_encode(out, 4, GW_WSFRAME_OP_TEXT, "hi", 2), 4);
}
END_TEST

START_TEST(test_encode_wrap)
{
    /* a message rendered into a gw_buf_t after GW_WSFRAME_HDR_MAX bytes of room, framed in place */
    const size_t sizes[] = {0, 17, 125, 126, 65535, 65536, 100000};
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        gw_buf_t b;
        gw_buf_init(&b);
        gw_buf_add(&b, "\0\0\0\0\0\0\0\0\0\0", GW_WSFRAME_HDR_MAX);
        for (size_t k = 0; k < sizes[i]; k++)
            gw_buf_add(&b, "j", 1);
        size_t flen;
        uint8_t *f = gw_wsframe_wrap((uint8_t *)b.p, GW_WSFRAME_OP_TEXT, sizes[i], &flen);
        ck_assert_uint_eq(flen, gw_wsframe_size(sizes[i]));
        ck_assert_ptr_eq(f + flen, (uint8_t *)b.p + b.len); /* the frame ends where the payload does */
        uint8_t h[GW_WSFRAME_HDR_MAX];
        size_t hl = gw_wsframe_header(h, GW_WSFRAME_OP_TEXT, sizes[i]);
        ck_assert_int_eq(memcmp(f, h, hl), 0);
        ck_assert_ptr_eq(f + hl, (uint8_t *)b.p + GW_WSFRAME_HDR_MAX);
        gw_buf_free(&b);
    }
}
END_TEST

START_TEST(test_encode_close)
{
    uint8_t out[200];
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 1000, "bye", 3), 7);
    ck_assert_int_eq(memcmp(out, "\x88\x05\x03\xe8" "bye", 7), 0);
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 0, "ignored", 7), 2);
    ck_assert_int_eq(memcmp(out, "\x88\x00", 2), 0);
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 1009, NULL, 0), 4);
    ck_assert_int_eq(memcmp(out, "\x88\x02\x03\xf1", 4), 0);
    /* codes that may not be sent */
    const unsigned bad[] = {999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, bad[i], "x", 1), 0);
    /* a long reason is cut to 123 bytes */
    char reason[300];
    memset(reason, 'r', sizeof reason);
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 1008, reason, sizeof reason), 2 + 125);
    ck_assert_uint_eq(out[1], 125);
    /* ... never inside a character: a euro sign at bytes 121..123 is dropped whole */
    memcpy(reason + 121, "\xe2\x82\xac", 3);
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 1008, reason, sizeof reason), 2 + 2 + 121);
    ck_assert(gw_wsframe_utf8_valid(out + 4, 121));
    /* a reason with ill-formed bytes is cut before them */
    ck_assert_uint_eq(gw_wsframe_encode_close(out, sizeof out, 1011, "ok\xff" "x", 4), 2 + 2 + 2);
    /* too small a buffer */
    ck_assert_uint_eq(gw_wsframe_encode_close(out, 6, 1000, "bye", 3), 0);
}
END_TEST

START_TEST(test_encode_round_trip)
{
    static uint8_t payload[70000], server[70100], client[70200];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    static run_t r;
    const size_t sizes[] = {0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70000};
    const unsigned ops[] = {GW_WSFRAME_OP_TEXT, GW_WSFRAME_OP_BINARY, GW_WSFRAME_OP_PING, GW_WSFRAME_OP_PONG};
    const int want[] = {GW_WSFRAME_TEXT, GW_WSFRAME_BINARY, GW_WSFRAME_PING, GW_WSFRAME_PONG};
    for (size_t o = 0; o < ARRAY_LEN(ops); o++) {
        for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
            size_t n = gw_wsframe_encode(server, sizeof server, ops[o], payload, sizes[s]);
            if (ops[o] >= GW_WSFRAME_OP_CLOSE && sizes[s] > 125) {
                ck_assert_uint_eq(n, 0);
                continue;
            }
            ck_assert_uint_eq(n, gw_wsframe_size(sizes[s]));
            size_t cn = s_mask_server_frame(client, server, n);
            s_run(&r, 70000, client, cn, SPLIT_WHOLE, 0);
            ck_assert_uint_eq(r.n, 1);
            ck_assert_int_eq(r.ev[0].type, want[o]);
            ck_assert_uint_eq(r.ev[0].len, sizes[s]);
            ck_assert_int_eq(memcmp(r.ev[0].data, payload, sizes[s]), 0);
            s_run_free(&r);
        }
    }
    /* close frames */
    size_t n = gw_wsframe_encode_close(server, sizeof server, 4001, "gone \xe2\x82\xac", 8);
    size_t cn = s_mask_server_frame(client, server, n);
    s_run(&r, 0, client, cn, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_CLOSE);
    ck_assert_uint_eq(r.ev[0].code, 4001);
    ck_assert_uint_eq(r.ev[0].len, 8);
    ck_assert_int_eq(memcmp(r.ev[0].data, "gone \xe2\x82\xac", 8), 0);
    s_run_free(&r);
    n = gw_wsframe_encode_close(server, sizeof server, 0, NULL, 0);
    cn = s_mask_server_frame(client, server, n);
    s_run(&r, 0, client, cn, SPLIT_WHOLE, 0);
    ck_assert_int_eq(r.ev[0].type, GW_WSFRAME_CLOSE);
    ck_assert_uint_eq(r.ev[0].code, 1005);
    s_run_free(&r);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Handshake
 * ------------------------------------------------------------------------------------------------- */

static gw_wsframe_handshake_t s_hs(const char *method, const char *upgrade, const char *conn, const char *version,
                                   const char *key)
{
    gw_wsframe_handshake_t h = {
        .method = method, .method_len = method ? strlen(method) : 0,
        .upgrade = upgrade, .upgrade_len = upgrade ? strlen(upgrade) : 0,
        .connection = conn, .connection_len = conn ? strlen(conn) : 0,
        .version = version, .version_len = version ? strlen(version) : 0,
        .key = key, .key_len = key ? strlen(key) : 0,
    };
    return h;
}

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="

START_TEST(test_handshake_check)
{
    gw_wsframe_handshake_t h = s_hs("GET", "websocket", "Upgrade", "13", RFC_KEY);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_OK);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_OK), 101);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_OK), "ok");
    /* forms that are fine */
    const char *upgrades[] = {"WebSocket", "WEBSOCKET", " websocket ", "h2c, websocket", "websocket,foo", "a,,websocket"};
    for (size_t i = 0; i < ARRAY_LEN(upgrades); i++) {
        h = s_hs("GET", upgrades[i], "upgrade", "13", RFC_KEY);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_OK, "upgrade '%s'", upgrades[i]);
    }
    const char *conns[] = {"upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade,keep-alive", "\tupgrade\t", "x , upgrade , y"};
    for (size_t i = 0; i < ARRAY_LEN(conns); i++) {
        h = s_hs("GET", "websocket", conns[i], "13", RFC_KEY);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_OK, "connection '%s'", conns[i]);
    }
    h = s_hs("GET", "websocket", "upgrade", " 13 ", " " RFC_KEY " ");
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_OK);
    const char *keys[] = {"AAAAAAAAAAAAAAAAAAAAAA==", "/////////////////////w==", "+++++++++++++++++++++g==",
                          "abcdefghijklmnopqrstuQ=="};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        h = s_hs("GET", "websocket", "upgrade", "13", keys[i]);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_OK, "key '%s'", keys[i]);
    }

    /* method */
    const char *methods[] = {"POST", "get", "HEAD", "GETX", ""};
    for (size_t i = 0; i < ARRAY_LEN(methods); i++) {
        h = s_hs(methods[i], "websocket", "upgrade", "13", RFC_KEY);
        ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_METHOD);
    }
    h = s_hs(NULL, "websocket", "upgrade", "13", RFC_KEY);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_METHOD);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_METHOD), 405);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_METHOD), "a WebSocket upgrade must be a GET request");
    /* upgrade: a plain GET is 426 */
    const char *bad_up[] = {"websockets", "web socket", "h2c", "", "websocket/13"};
    for (size_t i = 0; i < ARRAY_LEN(bad_up); i++) {
        h = s_hs("GET", bad_up[i], "upgrade", "13", RFC_KEY);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_UPGRADE, "upgrade '%s'", bad_up[i]);
    }
    h = s_hs("GET", NULL, NULL, NULL, NULL);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_UPGRADE);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_UPGRADE), 426);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_UPGRADE),
                     "upgrade required: this endpoint speaks WebSocket only (Upgrade: websocket)");
    /* connection */
    const char *bad_conn[] = {"keep-alive", "upgraded", "up grade", "", "close"};
    for (size_t i = 0; i < ARRAY_LEN(bad_conn); i++) {
        h = s_hs("GET", "websocket", bad_conn[i], "13", RFC_KEY);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_CONNECTION, "connection '%s'", bad_conn[i]);
    }
    h = s_hs("GET", "websocket", NULL, "13", RFC_KEY);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_CONNECTION);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_CONNECTION), 400);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_CONNECTION),
                     "invalid upgrade: the Connection header must hold the token upgrade");
    /* version */
    const char *bad_ver[] = {"12", "8", "013", "13, 8", "1 3", "", "14"};
    for (size_t i = 0; i < ARRAY_LEN(bad_ver); i++) {
        h = s_hs("GET", "websocket", "upgrade", bad_ver[i], RFC_KEY);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_VERSION, "version '%s'", bad_ver[i]);
    }
    h = s_hs("GET", "websocket", "upgrade", NULL, RFC_KEY);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_VERSION);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_VERSION), 426);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_VERSION),
                     "unsupported WebSocket version: Sec-WebSocket-Version must be 13");
    /* key */
    const char *bad_key[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",    /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 */
        "dGhlIHNhbXBsZSBub25jZQ",     /* no padding */
        "dGhlIHNhbXBsZSBub25jZR==",   /* non-zero padding bits */
        "dGhlIHNhbXBsZSBub25j*Q==",   /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==", /* sent twice */
        "dGhlIHNhbXBsZSBub25jZXg=",   /* 17 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAAA",   /* 18 bytes */
        "dGhlIHNhbXBsZSBub2-_ZQ==",   /* base64url is not base64 */
    };
    for (size_t i = 0; i < ARRAY_LEN(bad_key); i++) {
        h = s_hs("GET", "websocket", "upgrade", "13", bad_key[i]);
        ck_assert_msg(gw_wsframe_handshake_check(&h) == GW_WSFRAME_HS_KEY, "key '%s'", bad_key[i]);
    }
    h = s_hs("GET", "websocket", "upgrade", "13", NULL);
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_KEY);
    /* a NUL inside the key */
    h = s_hs("GET", "websocket", "upgrade", "13", RFC_KEY);
    char nulkey[25];
    memcpy(nulkey, RFC_KEY, 25);
    nulkey[5] = '\0';
    h.key = nulkey;
    h.key_len = 24;
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_KEY);
    ck_assert_int_eq(gw_wsframe_handshake_status(GW_WSFRAME_HS_KEY), 400);
    ck_assert_str_eq(gw_wsframe_strerror(GW_WSFRAME_HS_KEY),
                     "invalid Sec-WebSocket-Key: must be the base64 encoding of 16 bytes");
    ck_assert_str_eq(gw_wsframe_strerror(99), "unknown");
    /* rules are checked in order: the first broken one is reported */
    h = s_hs("POST", NULL, NULL, "12", "bad");
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_METHOD);
    h = s_hs("GET", "websocket", "upgrade", "12", "bad");
    ck_assert_int_eq(gw_wsframe_handshake_check(&h), GW_WSFRAME_HS_VERSION);
}
END_TEST

START_TEST(test_accept_key)
{
    char out[GW_WSFRAME_ACCEPT_LEN + 1];
    ck_assert_int_eq(gw_wsframe_accept_key(RFC_KEY, strlen(RFC_KEY), out), 0);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ck_assert_int_eq(gw_wsframe_accept_key("  " RFC_KEY "\t", strlen(RFC_KEY) + 3, out), 0);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* other keys against OpenSSL's own base64 of the SHA-1 */
    const char *keys[] = {"AAAAAAAAAAAAAAAAAAAAAA==", "x3JJHMbDL1EzLkh9GBhXDw==", "/////////////////////w=="};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        char src[128];
        snprintf(src, sizeof src, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", keys[i]);
        unsigned char md[EVP_MAX_MD_SIZE], b64[64];
        unsigned mdlen;
        EVP_Digest(src, strlen(src), md, &mdlen, EVP_sha1(), NULL);
        EVP_EncodeBlock(b64, md, (int)mdlen);
        ck_assert_int_eq(gw_wsframe_accept_key(keys[i], strlen(keys[i]), out), 0);
        ck_assert_str_eq(out, (char *)b64);
        ck_assert_uint_eq(strlen(out), GW_WSFRAME_ACCEPT_LEN);
    }
    /* the example pair that Wikipedia's WebSocket article shows */
    ck_assert_int_eq(gw_wsframe_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", 24, out), 0);
    ck_assert_str_eq(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Messages: parsing
 * ------------------------------------------------------------------------------------------------- */

#define E_UID_RULE "user ids are 1-128 bytes of A-Z a-z 0-9 . _ ~ @ : = + -, not batch, watch, connect, . or .."

/* Parse a NUL-terminated text; on failure the error must be exactly `want_err`. */
static int s_parse(const char *text, const gw_wsmsg_limits_t *lim, gw_wsmsg_t *m, const char *want_err)
{
    char err[GW_WSMSG_ERR_LEN];
    int rc = gw_wsmsg_parse(text, strlen(text), lim, m, err, sizeof err);
    if (want_err) {
        ck_assert_msg(rc == -1, "'%s' was accepted", text);
        ck_assert_str_eq(err, want_err);
        ck_assert_ptr_null(m->users);
        ck_assert_ptr_null(m->priv);
        gw_wsmsg_fini(m);
    } else {
        ck_assert_msg(rc == 0, "'%s' refused: %s", text, err);
        ck_assert_str_eq(err, "");
    }
    return rc;
}

START_TEST(test_msg_types)
{
    gw_wsmsg_t m;
    s_parse("{\"type\":\"ping\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_PING);
    ck_assert_ptr_null(m.users);
    gw_wsmsg_fini(&m);
    s_parse("  {\"type\" : \"activity\"}\n", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_ACTIVITY);
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"bye\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_BYE);
    ck_assert_ptr_null(m.users);
    gw_wsmsg_fini(&m);
    /* fields a type does not define are ignored */
    s_parse("{\"x\":[1,{\"y\":null}],\"type\":\"ping\",\"users\":7}", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_PING);
    ck_assert_ptr_null(m.users);
    gw_wsmsg_fini(&m);

    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_SET), "set");
    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_ACTIVITY), "activity");
    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_WATCH), "watch");
    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_UNWATCH), "unwatch");
    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_PING), "ping");
    ck_assert_str_eq(gw_wsmsg_type_name(GW_WSMSG_BYE), "bye");
    ck_assert_str_eq(gw_wsmsg_type_name(0), "unknown");
    ck_assert_str_eq(gw_wsmsg_type_name(7), "unknown");
}
END_TEST

START_TEST(test_msg_envelope_errors)
{
    gw_wsmsg_t m;
    const char *not_json[] = {"",           " ",        "[]",        "[{\"type\":\"ping\"}]", "\"ping\"", "null", "1",
                              "{",          "{} x",     "{}{}",      "{\"type\":\"ping\",}",  "{'type':'ping'}",
                              "{\"type\":\"ping\",\"type\":\"ping\"}", /* a duplicate key */
                              "{\"type\":\"ping\",\"n\":123456789012345678901234567890}", /* too big */
                              "{\"type\":\"p\xc3\"}"}; /* not UTF-8 */
    for (size_t i = 0; i < ARRAY_LEN(not_json); i++)
        s_parse(not_json[i], NULL, &m, "invalid JSON: a message is one JSON object");
    /* a NUL inside the text */
    char err[GW_WSMSG_ERR_LEN];
    ck_assert_int_eq(gw_wsmsg_parse("{\"type\":\"ping\"}\0", 16, NULL, &m, err, sizeof err), -1);
    ck_assert_str_eq(err, "invalid JSON: a message is one JSON object");
    /* type */
    s_parse("{}", NULL, &m, "missing type: a message has a type, one of set, activity, watch, unwatch, ping, bye");
    s_parse("{\"Type\":\"ping\"}", NULL, &m,
            "missing type: a message has a type, one of set, activity, watch, unwatch, ping, bye");
    const char *bad_type[] = {"{\"type\":1}", "{\"type\":null}", "{\"type\":[\"ping\"]}", "{\"type\":true}"};
    for (size_t i = 0; i < ARRAY_LEN(bad_type); i++)
        s_parse(bad_type[i], NULL, &m,
                "invalid type: must be a string, one of set, activity, watch, unwatch, ping, bye");
    s_parse("{\"type\":\"x\"}", NULL, &m, "unknown type 'x' (set, activity, watch, unwatch, ping, bye)");
    s_parse("{\"type\":\"Ping\"}", NULL, &m, "unknown type 'Ping' (set, activity, watch, unwatch, ping, bye)");
    s_parse("{\"type\":\"ping \"}", NULL, &m, "unknown type 'ping ' (set, activity, watch, unwatch, ping, bye)");
    s_parse("{\"type\":\"\"}", NULL, &m, "unknown type '' (set, activity, watch, unwatch, ping, bye)");
    /* a long type is quoted to 32 bytes, never inside a character, and stops at a NUL */
    s_parse("{\"type\":\"abcdefghijklmnopqrstuvwxyz0123456789\"}", NULL, &m,
            "unknown type 'abcdefghijklmnopqrstuvwxyz012345' (set, activity, watch, unwatch, ping, bye)");
    s_parse("{\"type\":\"abcdefghijklmnopqrstuvwxyz01234\xe2\x82\xac\"}", NULL, &m,
            "unknown type 'abcdefghijklmnopqrstuvwxyz01234' (set, activity, watch, unwatch, ping, bye)");
    /* \u0000 is refused by the JSON reader itself */
    s_parse("{\"type\":\"pi\\u0000ng\"}", NULL, &m, "invalid JSON: a message is one JSON object");
    /* the size bound comes first */
    gw_wsmsg_limits_t lim = {.max_len = 20, .max_users = 0};
    s_parse("{\"type\":\"ping\"}", &lim, &m, NULL); /* 15 bytes */
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"ping\",\"x\":1}", &lim, &m, "message too long: at most 20 bytes");
    static char big[70000];
    memset(big, ' ', sizeof big - 1);
    memcpy(big, "{\"type\":\"ping\"}", 15);
    s_parse(big, NULL, &m, "message too long: at most 65536 bytes");
    big[65536] = '\0';
    s_parse(big, NULL, &m, NULL); /* exactly the maximum */
    gw_wsmsg_fini(&m);
    /* fini on a failed parse and twice is safe */
    gw_wsmsg_fini(&m);
    gw_wsmsg_fini(&m);
}
END_TEST

START_TEST(test_msg_set)
{
    gw_wsmsg_t m;
    s_parse("{\"type\":\"set\",\"status\":\"away\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_SET);
    ck_assert_int_eq(m.status, PRESENCE_AWAY);
    ck_assert_int_eq(m.message_op, GW_WSMSG_MESSAGE_KEEP);
    ck_assert_uint_eq(m.message_ttl, 0);
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"set\",\"status\":\"online\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.status, PRESENCE_ONLINE);
    s_parse("{\"type\":\"set\",\"status\":\"busy\",\"message\":\"in a call \\u00e9\",\"message_ttl\":3600}", NULL,
            &m, NULL);
    ck_assert_int_eq(m.status, PRESENCE_BUSY);
    ck_assert_int_eq(m.message_op, GW_WSMSG_MESSAGE_SET);
    ck_assert_str_eq(m.message, "in a call \xc3\xa9");
    ck_assert_uint_eq(m.message_len, 12);
    ck_assert_uint_eq(m.message_ttl, 3600);
    /* message alone; null and "" clear it */
    s_parse("{\"type\":\"set\",\"message\":\"lunch\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.status, -1);
    ck_assert_int_eq(m.message_op, GW_WSMSG_MESSAGE_SET);
    s_parse("{\"type\":\"set\",\"message\":null}", NULL, &m, NULL);
    ck_assert_int_eq(m.message_op, GW_WSMSG_MESSAGE_CLEAR);
    ck_assert_uint_eq(m.message_len, 0);
    s_parse("{\"type\":\"set\",\"message\":\"\",\"status\":\"online\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.message_op, GW_WSMSG_MESSAGE_CLEAR);
    /* ttl bounds, and an integral real */
    s_parse("{\"type\":\"set\",\"message\":\"m\",\"message_ttl\":1}", NULL, &m, NULL);
    ck_assert_uint_eq(m.message_ttl, 1);
    s_parse("{\"type\":\"set\",\"message\":\"m\",\"message_ttl\":604800}", NULL, &m, NULL);
    ck_assert_uint_eq(m.message_ttl, 604800);
    s_parse("{\"type\":\"set\",\"message\":\"m\",\"message_ttl\":60.0}", NULL, &m, NULL);
    ck_assert_uint_eq(m.message_ttl, 60);
    /* null optional fields count as absent */
    s_parse("{\"type\":\"set\",\"status\":\"busy\",\"message_ttl\":null}", NULL, &m, NULL);
    ck_assert_uint_eq(m.message_ttl, 0);
    /* 256 bytes of message are fine (128 two-byte characters) */
    char text[1024];
    int o = snprintf(text, sizeof text, "{\"type\":\"set\",\"message\":\"");
    for (int i = 0; i < 128; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "\xc3\xa9");
    snprintf(text + o, sizeof text - (size_t)o, "\"}");
    s_parse(text, NULL, &m, NULL);
    ck_assert_uint_eq(m.message_len, 256);
    gw_wsmsg_fini(&m);

    /* errors */
    s_parse("{\"type\":\"set\"}", NULL, &m, "invalid set: give at least one of status, message, message_ttl");
    s_parse("{\"type\":\"set\",\"status\":null}", NULL, &m,
            "invalid set: give at least one of status, message, message_ttl");
    const char *bad_status[] = {"\"offline\"", "\"Online\"", "\"ONLINE\"", "\"idle\"", "\"\"", "1", "true",
                                "[\"online\"]", "\"online \""};
    for (size_t i = 0; i < ARRAY_LEN(bad_status); i++) {
        snprintf(text, sizeof text, "{\"type\":\"set\",\"status\":%s}", bad_status[i]);
        s_parse(text, NULL, &m, "invalid status: must be one of online, away, busy");
    }
    const char *bad_msg_type[] = {"1", "true", "[]", "{}"};
    for (size_t i = 0; i < ARRAY_LEN(bad_msg_type); i++) {
        snprintf(text, sizeof text, "{\"type\":\"set\",\"message\":%s}", bad_msg_type[i]);
        s_parse(text, NULL, &m, "invalid message: must be a string, or null to clear it");
    }
    o = snprintf(text, sizeof text, "{\"type\":\"set\",\"message\":\"");
    memset(text + o, 'a', 257);
    snprintf(text + o + 257, sizeof text - (size_t)o - 257, "\"}");
    s_parse(text, NULL, &m, "invalid message: message is longer than 256 bytes");
    const char *bad_msg_text[] = {"\"a\\nb\"", "\"tab\\there\"", "\"\\u007f\"", "\"\\u0085\""};
    for (size_t i = 0; i < ARRAY_LEN(bad_msg_text); i++) {
        snprintf(text, sizeof text, "{\"type\":\"set\",\"message\":%s}", bad_msg_text[i]);
        s_parse(text, NULL, &m, "invalid message: must be UTF-8 text without control characters");
    }
    const char *bad_ttl[] = {"0", "-1", "604801", "1.5", "\"60\"", "true", "[]", "1e10", "9223372036854775807"};
    for (size_t i = 0; i < ARRAY_LEN(bad_ttl); i++) {
        snprintf(text, sizeof text, "{\"type\":\"set\",\"message\":\"m\",\"message_ttl\":%s}", bad_ttl[i]);
        s_parse(text, NULL, &m, "invalid message_ttl: must be an integer from 1 to 604800 (seconds)");
    }
    const char *alone[] = {"{\"type\":\"set\",\"message_ttl\":60}", "{\"type\":\"set\",\"status\":\"away\",\"message_ttl\":60}",
                           "{\"type\":\"set\",\"message\":null,\"message_ttl\":60}",
                           "{\"type\":\"set\",\"message\":\"\",\"message_ttl\":60}"};
    for (size_t i = 0; i < ARRAY_LEN(alone); i++)
        s_parse(alone[i], NULL, &m,
                "invalid message_ttl: it sets the expiry of a non-empty message given in the same set");
    /* the first rule broken is the one named: status before message */
    s_parse("{\"type\":\"set\",\"status\":\"gone\",\"message\":1}", NULL, &m,
            "invalid status: must be one of online, away, busy");
}
END_TEST

START_TEST(test_msg_watch)
{
    gw_wsmsg_t m;
    s_parse("{\"type\":\"watch\",\"users\":[\"alice\",\"bob@example.com\",\"alice\",\"c\\u0061rol\",\"bob@example.com\"]}",
            NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_WATCH);
    ck_assert_uint_eq(m.nusers, 3);
    ck_assert_uint_eq(m.users[0].len, 5);
    ck_assert_int_eq(memcmp(m.users[0].p, "alice", 5), 0);
    ck_assert_int_eq(memcmp(m.users[1].p, "bob@example.com", 15), 0);
    ck_assert_uint_eq(m.users[2].len, 5);
    ck_assert_int_eq(memcmp(m.users[2].p, "carol", 5), 0);
    ck_assert(!m.has_since);
    ck_assert_ptr_nonnull(m.priv);
    gw_wsmsg_fini(&m);
    ck_assert_ptr_null(m.users);
    ck_assert_ptr_null(m.priv);
    gw_wsmsg_fini(&m);
    /* since */
    s_parse("{\"type\":\"watch\",\"users\":[\"a\"],\"since\":0}", NULL, &m, NULL);
    ck_assert(m.has_since);
    ck_assert_uint_eq(m.since, 0);
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"watch\",\"users\":[\"a\"],\"since\":4611686018427387903}", NULL, &m, NULL);
    ck_assert_uint_eq(m.since, GW_WSMSG_VERSION_MAX);
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"watch\",\"users\":[\"a\"],\"since\":null}", NULL, &m, NULL);
    ck_assert(!m.has_since);
    gw_wsmsg_fini(&m);
    const char *bad_since[] = {"4611686018427387904", "-1", "\"5\"", "1.0", "true", "[]", "9223372036854775807"};
    char text[512];
    for (size_t i = 0; i < ARRAY_LEN(bad_since); i++) {
        snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[\"a\"],\"since\":%s}", bad_since[i]);
        s_parse(text, NULL, &m, "invalid since: must be a version, an integer from 0 to 2^62-1");
    }
    /* unwatch: the same users rules; since means nothing there */
    s_parse("{\"type\":\"unwatch\",\"users\":[\"x\",\"x\"],\"since\":\"whatever\"}", NULL, &m, NULL);
    ck_assert_int_eq(m.type, GW_WSMSG_UNWATCH);
    ck_assert_uint_eq(m.nusers, 1);
    ck_assert(!m.has_since);
    gw_wsmsg_fini(&m);

    /* users errors, for both types */
    const char *types[] = {"watch", "unwatch"};
    for (size_t t = 0; t < 2; t++) {
        const char *bad_users[] = {"", ",\"users\":null", ",\"users\":[]", ",\"users\":\"alice\"", ",\"users\":{}"};
        for (size_t i = 0; i < ARRAY_LEN(bad_users); i++) {
            snprintf(text, sizeof text, "{\"type\":\"%s\"%s}", types[t], bad_users[i]);
            s_parse(text, NULL, &m, "invalid users: must be a non-empty array of user ids");
        }
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[\"a\",\"b\",1]}", types[t]);
        s_parse(text, NULL, &m, "invalid user_id in users[2]: must be a string");
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[null]}", types[t]);
        s_parse(text, NULL, &m, "invalid user_id in users[0]: must be a string");
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[\"ok\",\"bad id\"]}", types[t]);
        s_parse(text, NULL, &m, "invalid user_id: bad id (" E_UID_RULE ")");
        const char *reserved[] = {"batch", "watch", "connect", ".", ".."};
        for (size_t i = 0; i < ARRAY_LEN(reserved); i++) {
            char want[300];
            snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[\"%s\"]}", types[t], reserved[i]);
            snprintf(want, sizeof want, "invalid user_id: %s (" E_UID_RULE ")", reserved[i]);
            s_parse(text, NULL, &m, want);
        }
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[\"\"]}", types[t]);
        s_parse(text, NULL, &m, "invalid user_id:  (" E_UID_RULE ")");
        /* a quoted bad id stays as sent (valid UTF-8) */
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"users\":[\"caf\\u00e9\"]}", types[t]);
        s_parse(text, NULL, &m, "invalid user_id: caf\xc3\xa9 (" E_UID_RULE ")");
    }
    /* a bad id longer than 128 bytes is quoted to 128 bytes, never inside a character */
    char id[200], want[400];
    memset(id, 'a', 127);
    memcpy(id + 127, "\xc3\xa9xyz", 6);
    snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[\"%s\"]}", id);
    snprintf(want, sizeof want, "invalid user_id: %.127s (" E_UID_RULE ")", id);
    s_parse(text, NULL, &m, want);
}
END_TEST

START_TEST(test_msg_watch_limits)
{
    gw_wsmsg_t m;
    static char text[70000];
    /* 1000 distinct users (the default maximum) pass; 1001 do not */
    int o = snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[");
    for (int i = 0; i < 1000; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "%s\"user%d\"", i ? "," : "", i);
    snprintf(text + o, sizeof text - (size_t)o, "]}");
    s_parse(text, NULL, &m, NULL);
    ck_assert_uint_eq(m.nusers, 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        char want[16];
        int wl = snprintf(want, sizeof want, "user%u", i);
        ck_assert_uint_eq(m.users[i].len, (uint32_t)wl);
        ck_assert_int_eq(memcmp(m.users[i].p, want, (size_t)wl), 0);
    }
    gw_wsmsg_fini(&m);
    snprintf(text + o, sizeof text - (size_t)o, ",\"user1000\"]}");
    s_parse(text, NULL, &m, "too many users (at most 1000)");
    /* 1000 distinct among 5000 items (duplicates collapse) pass */
    o = snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[");
    for (int i = 0; i < 5000; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "%s\"u%d\"", i ? "," : "", i % 1000);
    snprintf(text + o, sizeof text - (size_t)o, "]}");
    s_parse(text, NULL, &m, NULL);
    ck_assert_uint_eq(m.nusers, 1000);
    gw_wsmsg_fini(&m);
    /* a configured maximum of 2 */
    gw_wsmsg_limits_t lim = {.max_len = 0, .max_users = 2};
    s_parse("{\"type\":\"watch\",\"users\":[\"a\",\"b\",\"a\",\"b\"]}", &lim, &m, NULL);
    ck_assert_uint_eq(m.nusers, 2);
    gw_wsmsg_fini(&m);
    s_parse("{\"type\":\"unwatch\",\"users\":[\"a\",\"b\",\"c\"]}", &lim, &m, "too many users (at most 2)");
    /* the most items a 64 KiB message can hold, all the same id: fast (a hash set, not a scan) */
    o = snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[");
    while (o < 65000)
        o += snprintf(text + o, sizeof text - (size_t)o, "\"a\",");
    snprintf(text + o, sizeof text - (size_t)o, "\"a\"]}");
    clock_t c0 = clock();
    s_parse(text, NULL, &m, NULL);
    ck_assert_uint_eq(m.nusers, 1);
    gw_wsmsg_fini(&m);
    /* 16k distinct ids over the maximum fail at the 1001st */
    o = snprintf(text, sizeof text, "{\"type\":\"watch\",\"users\":[");
    for (int i = 0; o < 65000; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "\"%x\",", i);
    snprintf(text + o, sizeof text - (size_t)o, "\"a\"]}");
    s_parse(text, NULL, &m, "too many users (at most 1000)");
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    ck_assert_msg(secs < 1.0, "two 64 KiB watch messages took %.3f s", secs);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Messages: rendering
 * ------------------------------------------------------------------------------------------------- */

static const char *s_str(gw_buf_t *b)
{
    gw_buf_add(b, "", 1);
    b->len--;
    return b->p;
}

static void s_assert_json(const char *s)
{
    json_error_t je;
    json_t *o = json_loads(s, 0, &je);
    ck_assert_msg(o != NULL, "not JSON (%s): %s", je.text, s);
    json_decref(o);
}

START_TEST(test_msg_render)
{
    gw_buf_t b;
    gw_buf_init(&b);
    const char *rec = "{\"user_id\":\"alice\",\"status\":\"online\",\"version\":42}";
    gw_wsmsg_welcome(&b, "s-1.x_Y", 7, "alice", 5, rec, strlen(rec), 25000, 5000);
    ck_assert_str_eq(s_str(&b), "{\"type\":\"welcome\",\"session_id\":\"s-1.x_Y\",\"user_id\":\"alice\","
                                "\"record\":{\"user_id\":\"alice\",\"status\":\"online\",\"version\":42},"
                                "\"ping_interval_ms\":25000,\"grace_ms\":5000}");
    s_assert_json(s_str(&b));
    gw_buf_reset(&b);
    gw_wsmsg_presence(&b, rec, strlen(rec));
    ck_assert_str_eq(s_str(&b), "{\"type\":\"presence\",\"record\":{\"user_id\":\"alice\",\"status\":\"online\","
                                "\"version\":42}}");
    s_assert_json(s_str(&b));
    gw_buf_reset(&b);
    gw_wsmsg_pong(&b);
    ck_assert_str_eq(s_str(&b), "{\"type\":\"pong\"}");
    gw_buf_reset(&b);
    gw_wsmsg_error(&b, "unknown type 'x\"y\\' (set, activity, watch, unwatch, ping, bye)");
    ck_assert_str_eq(s_str(&b), "{\"type\":\"error\",\"error\":\"unknown type 'x\\\"y\\\\' (set, activity, watch, "
                                "unwatch, ping, bye)\"}");
    s_assert_json(s_str(&b));
    /* ill-formed UTF-8 becomes U+FFFD, each bad byte */
    gw_buf_reset(&b);
    gw_wsmsg_error(&b, "bad \xc0\xaf id \xe2\x82");
    ck_assert_str_eq(s_str(&b), "{\"type\":\"error\",\"error\":\"bad \xef\xbf\xbd\xef\xbf\xbd id "
                                "\xef\xbf\xbd\xef\xbf\xbd\"}");
    s_assert_json(s_str(&b));
    gw_buf_reset(&b);
    gw_wsmsg_error(&b, "caf\xc3\xa9 \x01");
    ck_assert_str_eq(s_str(&b), "{\"type\":\"error\",\"error\":\"caf\xc3\xa9 \\u0001\"}");
    /* appends: a frame header can be reserved in front by the caller */
    gw_buf_reset(&b);
    gw_buf_adds(&b, "XX");
    gw_wsmsg_pong(&b);
    ck_assert_str_eq(s_str(&b), "XX{\"type\":\"pong\"}");
    gw_buf_free(&b);

    /* every error text the parser produces renders as JSON and parses back unchanged */
    const char *inputs[] = {"{", "{}", "{\"type\":1}", "{\"type\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                            "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
                            "{\"type\":\"watch\",\"users\":[\"\\u0001\\\"\"]}"};
    for (size_t i = 0; i < ARRAY_LEN(inputs); i++) {
        gw_wsmsg_t m;
        char err[GW_WSMSG_ERR_LEN];
        ck_assert_int_eq(gw_wsmsg_parse(inputs[i], strlen(inputs[i]), NULL, &m, err, sizeof err), -1);
        gw_buf_init(&b);
        gw_wsmsg_error(&b, err);
        json_error_t je;
        json_t *o = json_loads(s_str(&b), 0, &je);
        ck_assert_msg(o != NULL, "not JSON: %s", s_str(&b));
        ck_assert_str_eq(json_string_value(json_object_get(o, "error")), err);
        json_decref(o);
        gw_buf_free(&b);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Message budget
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_rate_burst_refill)
{
    gw_wsrate_cfg_t cfg = {.per_sec = 10, .burst = 30};
    gw_wsrate_t r;
    gw_wsrate_init(&r);
    ck_assert_uint_eq(sizeof r, 8);
    uint64_t t = 5000000000ULL; /* any monotonic start */
    ck_assert_uint_eq(gw_wsrate_tokens(&r, &cfg, t), 30);
    for (int i = 0; i < 30; i++)
        ck_assert_msg(gw_wsrate_take(&r, &cfg, 1, t), "message %d refused", i);
    ck_assert_uint_eq(gw_wsrate_tokens(&r, &cfg, t), 0);
    ck_assert(!gw_wsrate_take(&r, &cfg, 1, t));
    ck_assert(!gw_wsrate_take(&r, &cfg, 1, t + 99999)); /* a refused take changes nothing */
    ck_assert(gw_wsrate_take(&r, &cfg, 1, t + 100000)); /* 1/10 s later: one more */
    ck_assert(!gw_wsrate_take(&r, &cfg, 1, t + 100000));
    /* the sustained rate: 10 per second, exactly */
    int allowed = 0;
    for (uint64_t us = 0; us < 10000000; us += 10000) /* 100 tries per second for 10 s */
        allowed += gw_wsrate_take(&r, &cfg, 1, t + 100000 + us);
    ck_assert_int_eq(allowed, 99);
    /* a long quiet period refills to the burst, not beyond */
    t += 3600000000ULL;
    ck_assert_uint_eq(gw_wsrate_tokens(&r, &cfg, t), 30);
    allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += gw_wsrate_take(&r, &cfg, 1, t);
    ck_assert_int_eq(allowed, 30);
}
END_TEST

START_TEST(test_rate_costs)
{
    gw_wsrate_cfg_t cfg = {.per_sec = 20, .burst = 60};
    gw_wsrate_t r;
    gw_wsrate_init(&r);
    uint64_t t = 1000;
    /* an error costs GW_WSRATE_ERROR_COST: 12 bad messages in a row exhaust a burst of 60 */
    int allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += gw_wsrate_take(&r, &cfg, GW_WSRATE_ERROR_COST, t);
    ck_assert_int_eq(allowed, 12);
    /* a cost above the burst is never granted, even on a full bucket */
    gw_wsrate_init(&r);
    ck_assert(!gw_wsrate_take(&r, &cfg, 61, t));
    ck_assert(gw_wsrate_take(&r, &cfg, 60, t));
    ck_assert(!gw_wsrate_take(&r, &cfg, 0, t)); /* cost 0 counts as 1 */
    /* disabled */
    gw_wsrate_cfg_t off = {.per_sec = 0, .burst = 0};
    for (int i = 0; i < 1000; i++)
        ck_assert(gw_wsrate_take(&r, &off, 100, t));
    /* burst 0 acts as 1 */
    gw_wsrate_cfg_t one = {.per_sec = 1, .burst = 0};
    gw_wsrate_init(&r);
    ck_assert(gw_wsrate_take(&r, &one, 1, t));
    ck_assert(!gw_wsrate_take(&r, &one, 1, t + 999999));
    ck_assert(gw_wsrate_take(&r, &one, 1, t + 1000000));
    /* a very high rate (interval under 1 us) still limits */
    gw_wsrate_cfg_t fast = {.per_sec = 2000000, .burst = 5};
    gw_wsrate_init(&r);
    allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += gw_wsrate_take(&r, &fast, 1, t);
    ck_assert_int_eq(allowed, 5);
    ck_assert_str_eq(GW_WSRATE_REASON, "message rate over the limit");
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */

static Suite *s_suite(void)
{
    Suite *s = suite_create("ws");

    TCase *tc = tcase_create("decode_rules");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_decode_simple);
    tcase_add_test(tc, test_rule_unmasked);
    tcase_add_test(tc, test_rule_reserved_bits);
    tcase_add_test(tc, test_rule_opcode);
    tcase_add_test(tc, test_rule_control);
    tcase_add_test(tc, test_rule_continuation);
    tcase_add_test(tc, test_rule_length_encoding);
    tcase_add_test(tc, test_close_frames);
    tcase_add_test(tc, test_terminal_states);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode_fragments");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fragmented_with_controls);
    tcase_add_test(tc, test_splits_identical);
    tcase_add_test(tc, test_zero_copy_and_memory);
    tcase_add_test(tc, test_many_tiny_fragments);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode_limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode_utf8");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_utf8_single_frames);
    tcase_add_test(tc, test_utf8_across_fragments);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_encode_headers);
    tcase_add_test(tc, test_encode_wrap);
    tcase_add_test(tc, test_encode_close);
    tcase_add_test(tc, test_encode_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("handshake");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_handshake_check);
    tcase_add_test(tc, test_accept_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("msg_parse");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_msg_types);
    tcase_add_test(tc, test_msg_envelope_errors);
    tcase_add_test(tc, test_msg_set);
    tcase_add_test(tc, test_msg_watch);
    tcase_add_test(tc, test_msg_watch_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("msg_render");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_msg_render);
    suite_add_tcase(s, tc);

    tc = tcase_create("rate");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_rate_burst_refill);
    tcase_add_test(tc, test_rate_costs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
