/* fuzz_ws.c -- the WebSocket engine: gw_wsframe_decode in random splits, and every text message it
 * delivers through gw_wsmsg_parse.
 *
 * Input: byte 0 = bit 0 structured/raw, bits 1-2 the maximum (65536, 100, 1000, 4096), bits 3-7 +
 * byte 1 the split seed. Raw: the rest is what a client sends. Structured: frames, each b0 (as is),
 * flags (bit 0 unmasked, bit 1/2 force a 16/64-bit length), len (255 = 16 bits follow), payload;
 * the target masks them, so mostly valid frames reach fragmentation, UTF-8, close bodies and JSON.
 *
 * Oracles: decoding whole, in random splits and (short inputs) byte by byte gives the same events;
 * *used <= len, MORE/CLOSED consume all, nothing after CLOSE/ERROR; sizes within the maximum / 125;
 * TEXT and close reasons valid UTF-8 by a reference decoder (gw_wsframe_utf8_valid agrees on every
 * payload); allowed close codes, 1002/1007/1009 errors with a reason; memory <= max + 125, none after
 * an ERROR; every message re-encoded, masked and decoded again is the same; gw_wsmsg_parse accepts
 * only allowed values, and its error texts are UTF-8 and render as JSON that reads back the same.
 */
#include "fuzz_common.h"
#include "gw_lib.h"
#include "gw_wsframe.h"
#include "gw_wsmsg.h"
#include "util.h"

#include <jansson.h>

#define MAX_USERS 8
#define MAX_EVENTS 4096

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    return 0;
}

/* ---- references ----------------------------------------------------------------------------- */

/* UTF-8 by decoding each code point (a different construction from the decoder's range checks). */
static bool s_ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i], min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, c &= 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, c &= 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, c &= 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (s[i + j] & 0x3fu);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static bool s_close_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
}

/* ---- building the stream -------------------------------------------------------------------- */

static size_t s_client_frame(uint8_t *out, unsigned b0, unsigned flags, const uint8_t *p, size_t n, uint8_t salt)
{
    size_t o = 0;
    bool masked = !(flags & 1);
    uint8_t m = masked ? 0x80 : 0, key[4] = {0x12, 0x34, 0x56, (uint8_t)(0x78 ^ salt)};
    out[o++] = (uint8_t)b0;
    if ((flags & 4) || n > 0xffff) {
        out[o++] = m | 127;
        for (int i = 0; i < 8; i++)
            out[o++] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    } else if ((flags & 2) || n >= 126) {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    } else {
        out[o++] = (uint8_t)(m | n);
    }
    if (masked) {
        memcpy(out + o, key, 4);
        o += 4;
    }
    for (size_t i = 0; i < n; i++)
        out[o + i] = (uint8_t)(p[i] ^ (masked ? key[i & 3] : 0));
    return o + n;
}

/* Frames described by the input, masked; returns the stream (caller frees) and its length. */
static uint8_t *s_structured(fz_reader_t *r, size_t *len)
{
    size_t cap = r->left * 4 + 64, n = 0;
    uint8_t *out = malloc(cap);
    FZ_CHECK(out);
    for (uint8_t salt = 0; r->left;) {
        unsigned b0 = fz_u8(r), flags = fz_u8(r), l = fz_u8(r);
        if (l == 255)
            l = fz_u16(r);
        size_t got;
        const uint8_t *p = fz_bytes(r, l, &got);
        if (n + 14 + got > cap) {
            cap = (n + 14 + got) * 2;
            out = realloc(out, cap);
            FZ_CHECK(out);
        }
        n += s_client_frame(out + n, b0, flags, p, got, salt++);
    }
    *len = n;
    return out;
}

/* ---- the message layer ---------------------------------------------------------------------- */

static void s_check_msg(const uint8_t *text, size_t len, uint32_t max)
{
    gw_wsmsg_limits_t lim = {.max_len = max, .max_users = MAX_USERS};
    gw_wsmsg_t m;
    char err[GW_WSMSG_ERR_LEN];
    if (gw_wsmsg_parse((const char *)text, len, &lim, &m, err, sizeof err) == 0) {
        FZ_CHECK(m.type >= GW_WSMSG_SET && m.type <= GW_WSMSG_BYE);
        if (m.type == GW_WSMSG_SET) {
            FZ_CHECK(m.status == -1 || m.status == PRESENCE_ONLINE || m.status == PRESENCE_AWAY ||
                     m.status == PRESENCE_BUSY);
            FZ_CHECK(m.status != -1 || m.message_op != GW_WSMSG_MESSAGE_KEEP || m.message_ttl != 0);
            if (m.message_op == GW_WSMSG_MESSAGE_SET) {
                FZ_CHECK(m.message_len >= 1 && m.message_len <= PROTO_MESSAGE_MAX);
                FZ_CHECK(util_valid_message(m.message, m.message_len) && m.message[m.message_len] == '\0');
            } else {
                FZ_CHECK(m.message_len == 0 && m.message_ttl == 0);
            }
            FZ_CHECK(m.message_ttl <= PROTO_TTL_MAX);
        }
        if (m.type == GW_WSMSG_WATCH || m.type == GW_WSMSG_UNWATCH) {
            FZ_CHECK(m.nusers >= 1 && m.nusers <= MAX_USERS && m.users);
            for (uint32_t i = 0; i < m.nusers; i++) {
                FZ_CHECK(gw_valid_user_id(m.users[i].p, m.users[i].len));
                for (uint32_t j = 0; j < i; j++)
                    FZ_CHECK(m.users[i].len != m.users[j].len ||
                             memcmp(m.users[i].p, m.users[j].p, m.users[i].len) != 0);
            }
        } else {
            FZ_CHECK(m.users == NULL && m.nusers == 0);
        }
        FZ_CHECK(!m.has_since || (m.type == GW_WSMSG_WATCH && m.since <= GW_WSMSG_VERSION_MAX));
        gw_wsmsg_fini(&m);
        return;
    }
    FZ_CHECK(err[0] != '\0' && m.users == NULL && m.priv == NULL);
    FZ_CHECK(gw_wsframe_utf8_valid(err, strlen(err)));
    gw_buf_t b;
    gw_buf_init(&b);
    gw_wsmsg_error(&b, err);
    json_error_t je;
    json_t *o = json_loadb(b.p, b.len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        fprintf(stderr, "error message is not JSON: %s: %.*s\n", je.text, (int)b.len, b.p);
    FZ_CHECK(o && json_is_object(o));
    json_t *e = json_object_get(o, "error");
    FZ_CHECK(json_is_string(e) && strcmp(json_string_value(e), err) == 0);
    FZ_CHECK(strcmp(json_string_value(json_object_get(o, "type")), "error") == 0);
    json_decref(o);
    gw_buf_free(&b);
    gw_wsmsg_fini(&m);
}

/* Encode a delivered message as the server would, mask it, decode it again. */
static void s_round_trip(int type, const uint8_t *p, size_t n, uint32_t max)
{
    unsigned op = type == GW_WSFRAME_TEXT     ? GW_WSFRAME_OP_TEXT
                  : type == GW_WSFRAME_BINARY ? GW_WSFRAME_OP_BINARY
                  : type == GW_WSFRAME_PING   ? GW_WSFRAME_OP_PING
                                              : GW_WSFRAME_OP_PONG;
    size_t cap = gw_wsframe_size(n);
    uint8_t *server = malloc(cap), *client = malloc(cap + 4);
    FZ_CHECK(server && client);
    FZ_CHECK(gw_wsframe_encode(server, cap, op, p, n) == cap);
    size_t h = cap - n;
    memcpy(client, server, h);
    client[1] |= 0x80;
    memset(client + h, 0xa5, 4);
    for (size_t i = 0; i < n; i++)
        client[h + 4 + i] = server[h + i] ^ 0xa5;
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, max);
    gw_wsframe_event_t ev;
    size_t used;
    FZ_CHECK(gw_wsframe_decode(&d, client, cap + 4, &used, &ev) == type);
    FZ_CHECK(used == cap + 4 && ev.len == n && (n == 0 || memcmp(ev.data, p, n) == 0));
    gw_wsframe_dec_fini(&d);
    free(server);
    free(client);
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct rec {
    int type;
    uint16_t code;
    const char *reason;
    uint8_t *data;
    size_t len;
} rec_t;

typedef struct trace {
    rec_t *ev;
    size_t n;
    bool record;  /* the first run records; later runs compare */
    size_t check; /* compare: index of the next expected event */
} trace_t;

static void s_on_event(trace_t *t, int rc, const gw_wsframe_event_t *ev, uint32_t max, bool first)
{
    FZ_CHECK((ev->data == NULL) == (ev->len == 0));
    switch (rc) {
    case GW_WSFRAME_TEXT:
        FZ_CHECK(ev->len <= max && s_ref_utf8(ev->data, ev->len));
        break;
    case GW_WSFRAME_BINARY:
        FZ_CHECK(ev->len <= max);
        break;
    case GW_WSFRAME_PING:
    case GW_WSFRAME_PONG:
        FZ_CHECK(ev->len <= GW_WSFRAME_CONTROL_MAX);
        break;
    case GW_WSFRAME_CLOSE:
        FZ_CHECK(ev->len <= GW_WSFRAME_CLOSE_REASON_MAX && s_ref_utf8(ev->data, ev->len));
        FZ_CHECK(s_close_ok(ev->code) || (ev->code == GW_WSFRAME_CLOSE_NO_STATUS && ev->len == 0));
        break;
    case GW_WSFRAME_ERROR:
        FZ_CHECK(ev->code == 1002 || ev->code == 1007 || ev->code == 1009);
        FZ_CHECK(ev->reason && ev->reason[0] && ev->len == 0);
        break;
    default:
        FZ_CHECK(!"unknown result");
    }
    if (rc != GW_WSFRAME_ERROR)
        FZ_CHECK(ev->reason == NULL);
    if (ev->len)
        FZ_CHECK(gw_wsframe_utf8_valid(ev->data, ev->len) == s_ref_utf8(ev->data, ev->len));
    if (first) {
        /* the message layer and the encoder, once per event */
        if (rc == GW_WSFRAME_TEXT)
            s_check_msg(ev->data, ev->len, max);
        if (rc >= GW_WSFRAME_TEXT && rc <= GW_WSFRAME_PONG)
            s_round_trip(rc, ev->data, ev->len, max);
    }
    if (t->record) {
        FZ_CHECK(t->n < MAX_EVENTS);
        rec_t *e = &t->ev[t->n++];
        e->type = rc;
        e->code = ev->code;
        e->reason = ev->reason;
        e->len = ev->len;
        e->data = (uint8_t *)fz_dup(ev->data, ev->len);
    } else {
        FZ_CHECK(t->check < t->n);
        const rec_t *e = &t->ev[t->check++];
        FZ_CHECK(e->type == rc && e->code == ev->code && e->reason == ev->reason && e->len == ev->len);
        FZ_CHECK(ev->len == 0 || memcmp(e->data, ev->data, ev->len) == 0);
    }
}

static uint64_t s_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

enum { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

static void s_decode(trace_t *t, const uint8_t *stream, size_t len, uint32_t max, int mode, uint64_t seed)
{
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, max);
    uint64_t rs = seed | 1;
    size_t off = 0;
    bool terminal = false;
    t->check = 0;
    while (off < len) {
        size_t k = mode == SPLIT_WHOLE ? len - off
                   : mode == SPLIT_BYTES ? 1
                                         : 1 + s_next(&rs) % (s_next(&rs) % 4 == 0 ? 2000 : 16);
        if (k > len - off)
            k = len - off;
        uint8_t *chunk = (uint8_t *)fz_dup(stream + off, k);
        size_t pos = 0;
        for (;;) {
            gw_wsframe_event_t ev;
            size_t used = SIZE_MAX;
            int rc = gw_wsframe_decode(&d, chunk + pos, k - pos, &used, &ev);
            FZ_CHECK(used <= k - pos);
            pos += used;
            FZ_CHECK(gw_wsframe_dec_memory(&d) <= (size_t)max + GW_WSFRAME_CONTROL_MAX);
            if (rc == GW_WSFRAME_MORE || rc == GW_WSFRAME_CLOSED) {
                FZ_CHECK(pos == k);
                FZ_CHECK((rc == GW_WSFRAME_CLOSED) == terminal);
                FZ_CHECK(ev.data == NULL && ev.len == 0 && ev.reason == NULL);
                break;
            }
            FZ_CHECK(!terminal);
            s_on_event(t, rc, &ev, max, mode == SPLIT_WHOLE);
            if (rc == GW_WSFRAME_ERROR)
                FZ_CHECK(gw_wsframe_dec_memory(&d) == 0);
            terminal = rc == GW_WSFRAME_CLOSE || rc == GW_WSFRAME_ERROR;
        }
        free(chunk);
        off += k;
    }
    if (!t->record)
        FZ_CHECK(t->check == t->n);
    gw_wsframe_dec_fini(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r;
    fz_init(&r, data, size);
    uint8_t cfg = fz_u8(&r);
    uint64_t seed = (uint64_t)cfg << 8 | fz_u8(&r);
    static const uint32_t maxes[] = {65536, 100, 1000, 4096};
    uint32_t max = maxes[(cfg >> 1) & 3];
    size_t len;
    uint8_t *stream;
    if (cfg & 1) {
        stream = s_structured(&r, &len);
    } else {
        len = r.left;
        stream = (uint8_t *)fz_dup(r.p, len);
    }
    trace_t t = {.ev = calloc(MAX_EVENTS, sizeof(rec_t)), .n = 0, .record = true};
    FZ_CHECK(t.ev);
    s_decode(&t, stream, len, max, SPLIT_WHOLE, 0);
    t.record = false;
    s_decode(&t, stream, len, max, SPLIT_RANDOM, seed * 0x9e3779b97f4a7c15ULL);
    s_decode(&t, stream, len, max, SPLIT_RANDOM, seed + 1);
    if (len <= 2048)
        s_decode(&t, stream, len, max, SPLIT_BYTES, 0);
    for (size_t i = 0; i < t.n; i++)
        free(t.ev[i].data);
    free(t.ev);
    free(stream);
    return 0;
}
