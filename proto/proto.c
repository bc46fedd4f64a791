/* proto.c -- strict decoding of every message (see proto.h, PROTOCOL.md); encoding is proto_enc.c.
 *
 * Decoding runs in three steps:
 *   1. a pre-scan walks the raw bytes once, without allocating: it bounds the nesting depth,
 *      rejects types we never send (ext, float, the reserved 0xc1), checks that every container
 *      claims no more elements than there are bytes left and that exactly one object fills the
 *      frame. This is what keeps msgpack-c from reserving memory for a hostile count;
 *   2. msgpack-c builds the object tree (strings point into the frame);
 *   3. a schema check per message type copies what it needs into proto_msg_t, validating every
 *      type, range, string length and character set on the way.
 *      One function per message shape (s_dec_*), chosen by type in proto_decode.
 * Any failure returns through one `malformed` exit with a reason in m->err.
 */
#include "proto.h"
#include "util.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROTO_DEPTH_MAX 8

/* ==== pre-scan =============================================================================== */

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Walk one msgpack object spanning exactly [p, p+len). See the file comment. */
static int s_prescan(const uint8_t *p, size_t len, char *err, size_t errlen)
{
    uint64_t stack[PROTO_DEPTH_MAX];
    int depth = 0;
    size_t pos = 0;
    uint64_t remaining = 1;
    for (;;) {
        while (remaining == 0) {
            if (depth == 0)
                goto done;
            remaining = stack[--depth];
        }
        remaining--;
        if (pos >= len) {
            snprintf(err, errlen, "truncated at byte %zu", pos);
            return -1;
        }
        uint8_t c = p[pos++];
        uint64_t count = 0, skip = 0;
        bool container = false;
        int lenbytes = 0;
        if (c <= 0x7f || c >= 0xe0) {
            /* fixint */
        } else if (c <= 0x8f) {
            count = 2u * (c & 0x0f);
            container = true;
        } else if (c <= 0x9f) {
            count = c & 0x0f;
            container = true;
        } else if (c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc0: case 0xc2: case 0xc3:
                break;
            case 0xc4: case 0xd9: lenbytes = 1; break;
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xdc: case 0xde: lenbytes = 2; container = true; break;
            case 0xdd: case 0xdf: lenbytes = 4; container = true; break;
            default:
                snprintf(err, errlen, "unsupported msgpack type 0x%02x at byte %zu", c, pos - 1);
                return -1;
            }
            if (lenbytes) {
                if ((size_t)lenbytes > len - pos) {
                    snprintf(err, errlen, "truncated length at byte %zu", pos);
                    return -1;
                }
                uint64_t n = s_be(p + pos, lenbytes);
                pos += (size_t)lenbytes;
                if (container)
                    count = (c == 0xde || c == 0xdf) ? 2 * n : n;
                else
                    skip = n;
            }
        }
        if (container) {
            if (count > len - pos) {
                snprintf(err, errlen, "container claims %llu elements with %zu bytes left", (unsigned long long)count,
                         len - pos);
                return -1;
            }
            if (depth == PROTO_DEPTH_MAX) {
                snprintf(err, errlen, "nesting deeper than %d", PROTO_DEPTH_MAX);
                return -1;
            }
            stack[depth++] = remaining;
            remaining = count;
        } else if (skip) {
            if (skip > len - pos) {
                snprintf(err, errlen, "truncated payload at byte %zu", pos);
                return -1;
            }
            pos += (size_t)skip;
        }
    }
done:
    if (pos != len) {
        snprintf(err, errlen, "%zu trailing bytes", len - pos);
        return -1;
    }
    return 0;
}

/* ==== schema checks ========================================================================== */

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        snprintf(m->err, sizeof m->err, __VA_ARGS__);                                                                  \
        goto malformed;                                                                                                \
    } while (0)

static int s_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

static int s_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (s_u64(o, out) < 0 || *out > max)
        return -1;
    return 0;
}

static int s_str(const msgpack_object *o, size_t max, proto_str_t *out)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > max)
        return -1;
    out->p = o->via.str.ptr;
    out->len = o->via.str.size;
    return 0;
}

/* A command id: a bin of exactly PROTO_CMD_ID_LEN bytes, copied into the message. */
static int s_cmd_id(const msgpack_object *o, proto_msg_t *m)
{
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != PROTO_CMD_ID_LEN)
        return -1;
    memcpy(m->cmd_id, o->via.bin.ptr, PROTO_CMD_ID_LEN);
    m->has_cmd_id = true;
    return 0;
}

static const msgpack_object *s_arr(const msgpack_object *o, uint32_t min, uint32_t max, uint32_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < min || o->via.array.size > max)
        return NULL;
    *n = o->via.array.size;
    return o->via.array.ptr;
}

static int s_uid(const msgpack_object *o, proto_record_t *r)
{
    proto_str_t s;
    if (s_str(o, PROTO_USER_ID_MAX, &s) < 0 || !util_valid_user_id(s.p, s.len))
        return -1;
    proto_record_set_uid(r, s.p, s.len);
    return 0;
}

static int s_node(const msgpack_object *o, proto_record_t *r)
{
    proto_str_t s;
    if (s_str(o, PROTO_NODE_ID_MAX, &s) < 0 || !util_valid_node_id(s.p, s.len))
        return -1;
    proto_record_set_node(r, s.p, s.len);
    return 0;
}

static int s_msg(const msgpack_object *o, proto_record_t *r)
{
    proto_str_t s;
    if (s_str(o, PROTO_MESSAGE_MAX, &s) < 0 || !util_valid_message(s.p, s.len))
        return -1;
    proto_record_set_msg(r, s.p, s.len);
    return 0;
}

static int s_time(const msgpack_object *o, uint64_t *out)
{
    return s_uint(o, PROTO_TIME_MAX, out);
}

/* A whole record: [uid, status, msg, last_seen, updated_at, expires_at, node, ttl, version] (the
 * nine fields a 2.0 store kept in LMDB, still read), then [preferred_until, message_expires_at,
 * pub_version, vis_last_seen, due, sessions, source, rflags]. Every field is checked against what
 * a store can produce: a record a store never wrote is refused wherever it comes from. */
static int s_record(const msgpack_object *o, proto_record_t *r)
{
    uint32_t n;
    const msgpack_object *f = s_arr(o, 9, PROTO_RECORD_FIELDS, &n);
    uint64_t v;
    if (!f || (n != 9 && n != PROTO_RECORD_FIELDS))
        return -1;
    memset(r, 0, offsetof(proto_record_t, user_id));
    r->session_id[0] = r->device[0] = '\0';
    if (s_uid(&f[0], r) < 0 || s_uint(&f[1], PRESENCE_STATUS_COUNT - 1, &v) < 0)
        return -1;
    r->status = (uint8_t)v;
    if (s_msg(&f[2], r) < 0 || s_time(&f[3], &r->last_seen_us) < 0 || s_time(&f[4], &r->updated_at_us) < 0 ||
        s_time(&f[5], &r->expires_at_us) < 0 || s_node(&f[6], r) < 0 || s_uint(&f[7], PROTO_TTL_MAX, &v) < 0 ||
        v == 0)
        return -1;
    r->ttl_s = (uint32_t)v;
    if (s_uint(&f[8], PROTO_VERSION_MAX, &r->version) < 0 || r->version == 0)
        return -1;
    if (n == 9) {
        /* A 2.0 record: its status is what its writer set until expires_at. */
        r->pub_version = r->version;
        r->vis_last_seen_us = r->last_seen_us;
        r->source = r->status == PRESENCE_OFFLINE ? PRESENCE_SRC_NONE : PRESENCE_SRC_PREFERRED;
        r->preferred_until_us = r->status == PRESENCE_OFFLINE ? 0 : r->expires_at_us;
        return 0;
    }
    if (s_time(&f[9], &r->preferred_until_us) < 0 || s_time(&f[10], &r->message_expires_at_us) < 0 ||
        s_uint(&f[11], r->version, &r->pub_version) < 0 || s_time(&f[12], &r->vis_last_seen_us) < 0 ||
        s_time(&f[13], &r->due_us) < 0 || s_uint(&f[14], PROTO_SESSIONS_MAX, &v) < 0)
        return -1;
    if (r->pub_version == 0) /* unset: everyone sees the record's own version */
        r->pub_version = r->version;
    r->sessions = (uint16_t)v;
    if (s_uint(&f[15], PRESENCE_SOURCE_COUNT - 1, &v) < 0)
        return -1;
    r->source = (uint8_t)v;
    if (s_uint(&f[16], PROTO_REC_F_MASK, &v) < 0)
        return -1;
    r->rflags = (uint8_t)v;
    return 0;
}

static int s_session(const msgpack_object *o, proto_session_t *ss)
{
    uint32_t n;
    const msgpack_object *f = s_arr(o, 11, 11, &n);
    proto_str_t sid, dev, node;
    uint64_t st, man, ttl;
    if (!f || s_str(&f[0], PROTO_SESSION_ID_MAX, &sid) < 0 || !proto_valid_session_id(sid.p, sid.len) ||
        s_str(&f[1], PROTO_DEVICE_MAX, &dev) < 0 || !proto_valid_device(dev.p, dev.len) ||
        s_uint(&f[2], PRESENCE_BUSY, &st) < 0 || s_uint(&f[3], PRESENCE_BUSY, &man) < 0 ||
        s_time(&f[4], &ss->connected_at_us) < 0 || s_time(&f[5], &ss->last_seen_us) < 0 ||
        s_time(&f[6], &ss->expires_at_us) < 0 || s_str(&f[7], PROTO_NODE_ID_MAX, &node) < 0 ||
        !util_valid_node_id(node.p, node.len) || s_uint(&f[8], PROTO_TTL_MAX, &ttl) < 0 || ttl == 0 ||
        s_u64(&f[9], &ss->lease_id) < 0 || s_u64(&f[10], &ss->conn_id) < 0)
        return -1;
    ss->status = (uint8_t)st;
    ss->manual_status = (uint8_t)man;
    ss->ttl_s = (uint32_t)ttl;
    memcpy(ss->session_id, sid.p, sid.len);
    ss->session_id[sid.len] = '\0';
    ss->sid_len = (uint8_t)sid.len;
    memcpy(ss->device, dev.p, dev.len);
    ss->device[dev.len] = '\0';
    ss->device_len = (uint8_t)dev.len;
    memcpy(ss->node_id, node.p, node.len);
    ss->node_id[node.len] = '\0';
    ss->node_len = (uint8_t)node.len;
    return 0;
}

/* The session fields of a PUT (from cflags: cflags, message_ttl, sid, device, lease, conn) or a
 * TOUCH (cflags, sid, device, lease, conn) entry. A lease needs a session and a connection. */
static int s_cmd_fields(const msgpack_object *f, proto_record_t *r, bool put)
{
    uint64_t v;
    proto_str_t sid, dev;
    int i = 0;
    if (s_uint(&f[i++], PROTO_CMD_MASK, &v) < 0)
        return -1;
    r->cflags = (uint8_t)v;
    if (put) {
        if (s_uint(&f[i++], PROTO_TTL_MAX, &v) < 0)
            return -1;
        r->message_ttl_s = (uint32_t)v;
    }
    if (s_str(&f[i++], PROTO_SESSION_ID_MAX, &sid) < 0 || (sid.len && !proto_valid_session_id(sid.p, sid.len)) ||
        s_str(&f[i++], PROTO_DEVICE_MAX, &dev) < 0 || !proto_valid_device(dev.p, dev.len) ||
        s_u64(&f[i++], &r->lease_id) < 0 || s_u64(&f[i++], &r->conn_id) < 0)
        return -1;
    if ((r->lease_id || r->conn_id || dev.len || (r->cflags & (PROTO_CMD_F_OPEN | PROTO_CMD_F_IDLE))) && !sid.len)
        return -1;
    if ((r->cflags & PROTO_CMD_F_CLEAR) && (sid.len || !put))
        return -1; /* only a preferred status can be cleared */
    if ((r->lease_id == 0) != (r->conn_id == 0))
        return -1;
    proto_record_set_sid(r, sid.p, sid.len);
    proto_record_set_device(r, dev.p, dev.len);
    return 0;
}

static int s_change(const msgpack_object *o, proto_change_t *c)
{
    uint32_t n;
    const msgpack_object *f = s_arr(o, 3, 3, &n);
    uint64_t kind, seq;
    if (!f || s_uint(&f[0], PROTO_CH_TOUCH, &kind) < 0 || kind == 0 || s_u64(&f[1], &seq) < 0 || seq == 0)
        return -1;
    c->kind = (uint8_t)kind;
    proto_record_t *r = &c->rec;
    switch (kind) {
    case PROTO_CH_SET:
        if (s_record(&f[2], r) < 0 || r->version != seq)
            return -1;
        break;
    case PROTO_CH_DEL:
        memset(r, 0, offsetof(proto_record_t, user_id));
        r->node_id[0] = r->message[0] = '\0';
        if (s_uid(&f[2], r) < 0)
            return -1;
        break;
    case PROTO_CH_TOUCH: {
        uint32_t tn;
        const msgpack_object *t = s_arr(&f[2], 5, 9, &tn);
        uint64_t ttl;
        memset(r, 0, offsetof(proto_record_t, user_id));
        r->message[0] = '\0';
        if (!t || (tn != 5 && tn != 9) || s_uid(&t[0], r) < 0 || s_time(&t[1], &r->last_seen_us) < 0 ||
            s_time(&t[2], &r->expires_at_us) < 0 || s_node(&t[3], r) < 0 || s_uint(&t[4], PROTO_TTL_MAX, &ttl) < 0 ||
            ttl == 0)
            return -1;
        r->ttl_s = (uint32_t)ttl;
        if (tn == 9) {
            if (s_time(&t[5], &r->preferred_until_us) < 0 || s_time(&t[6], &r->message_expires_at_us) < 0 ||
                s_time(&t[7], &r->vis_last_seen_us) < 0 || s_uint(&t[8], seq, &r->pub_version) < 0)
                return -1;
            if (r->pub_version == 0)
                r->pub_version = seq;
        } else {
            r->vis_last_seen_us = r->last_seen_us; /* a 2.0 TOUCH: a visible user's heartbeat */
            r->pub_version = seq;
            r->preferred_until_us = r->expires_at_us;
        }
        break;
    }
    }
    r->version = seq;
    return 0;
}

static void s_msg_init(proto_msg_t *m)
{
    memset(m, 0, sizeof *m);
}

void proto_msg_fini(proto_msg_t *m)
{
    free(m->parts);
    m->parts = NULL;
    free(m->keys);
    free(m->recs);
    free(m->changes);
    free(m->stats);
    free(m->sessions);
    m->sessions = NULL;
    free(m->absent);
    m->absent = NULL;
    m->nabsent = 0;
    m->keys = NULL;
    m->recs = NULL;
    m->changes = NULL;
    m->stats = NULL;
    m->n = 0;
}

int proto_peek_header(const void *data, size_t len, uint8_t *type, uint64_t *rid)
{
    /* Only the fixed prefix we always emit: fixarray, version (any: a peer of another version
     * still gets an answer naming its request), type, rid (any uint width). */
    const uint8_t *p = data;
    if (len < 4 || (p[0] & 0xf0) != 0x90 || p[1] > 0x7f || p[2] > 0x7f)
        return -1;
    *type = p[2];
    uint8_t c = p[3];
    if (c <= 0x7f) {
        *rid = c;
        return 0;
    }
    int n = c == 0xcc ? 1 : c == 0xcd ? 2 : c == 0xce ? 4 : c == 0xcf ? 8 : 0;
    if (!n || len < 4 + (size_t)n)
        return -1;
    *rid = s_be(p + 4, n);
    return 0;
}

int proto_rewrite_rid(const void *data, size_t len, uint64_t rid, proto_buf_t *out)
{
    const uint8_t *p = data;
    uint8_t type;
    uint64_t old;
    if (proto_peek_header(data, len, &type, &old) < 0 || p[1] != PROTO_VERSION)
        return -1;
    uint8_t c = p[3];
    size_t width = c <= 0x7f ? 1 : c == 0xcc ? 2 : c == 0xcd ? 3 : c == 0xce ? 5 : 9;
    proto_buf_reset(out);
    proto_buf_append(out, p, 3); /* array header, version, type */
    proto_enc_t e;
    proto_enc_init(&e, out);
    proto_enc_u64(&e, rid);
    proto_buf_append(out, p + 3 + width, len - 3 - width);
    return 0;
}

/* ---- one function per message shape: 0, or -1 with m->err set --------------------------------- */

#define DFAIL(...)                                                                                                     \
    do {                                                                                                               \
        snprintf(m->err, sizeof m->err, __VA_ARGS__);                                                                  \
        return -1;                                                                                                     \
    } while (0)
#define NFIELDS(k)                                                                                                     \
    do {                                                                                                               \
        if (n != (k))                                                                                                  \
            DFAIL("%s: %u fields, want %u", proto_type_name(m->type), n, (unsigned)(k));                               \
    } while (0)

typedef int (*dec_fn)(proto_msg_t *m, const msgpack_object *f, uint32_t n);

/* GET, DEL (optional deadline, then an optional command id), SESSIONS: one key. */
static int s_dec_key(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    if (m->type == PROTO_DEL && (n == 5 || n == 6)) {
        if (s_u64(&f[4], &m->deadline_us) < 0)
            DFAIL("bad deadline");
        if (n == 6 && s_cmd_id(&f[5], m) < 0)
            DFAIL("bad command id");
    } else {
        NFIELDS(4);
    }
    if (s_str(&f[3], PROTO_USER_ID_MAX, &m->key) < 0 || !util_valid_user_id(m->key.p, m->key.len))
        DFAIL("bad key");
    return 0;
}

static int s_dec_mget(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    NFIELDS(4);
    if (!(items = s_arr(&f[3], 0, PROTO_ITEMS_MAX, &cnt)))
        DFAIL("bad key list");
    m->keys = xcalloc(cnt ? cnt : 1, sizeof *m->keys);
    for (uint32_t i = 0; i < cnt; i++)
        if (s_str(&items[i], PROTO_USER_ID_MAX, &m->keys[i]) < 0 || !util_valid_user_id(m->keys[i].p, m->keys[i].len))
            DFAIL("bad key %u", i);
    m->n = cnt;
    return 0;
}

/* A PUT entry: [uid, status, message, ttl, node] (2.0) or the same and six session fields. */
static int s_dec_put_entry(const msgpack_object *o, proto_record_t *r)
{
    uint32_t fn;
    uint64_t v;
    const msgpack_object *rf = s_arr(o, 5, 11, &fn);
    if (!rf || (fn != 5 && fn != 11) || s_uid(&rf[0], r) < 0 || s_uint(&rf[1], PRESENCE_STATUS_COUNT - 1, &v) < 0)
        return -1;
    r->status = (uint8_t)v;
    if (s_msg(&rf[2], r) < 0 || s_uint(&rf[3], PROTO_TTL_MAX, &v) < 0 || v == 0 || s_node(&rf[4], r) < 0)
        return -1;
    r->ttl_s = (uint32_t)v;
    r->cflags = PROTO_CMD_F_MSG; /* the 2.0 form always sets the message */
    return fn == 11 ? s_cmd_fields(&rf[5], r, true) : 0;
}

/* A TOUCH entry: [uid, ttl, node] (2.0) or the same and five session fields. */
static int s_dec_touch_entry(const msgpack_object *o, proto_record_t *r)
{
    uint32_t fn;
    uint64_t v;
    const msgpack_object *rf = s_arr(o, 3, 8, &fn);
    if (!rf || (fn != 3 && fn != 8) || s_uid(&rf[0], r) < 0 || s_uint(&rf[1], PROTO_TTL_MAX, &v) < 0 ||
        s_node(&rf[2], r) < 0)
        return -1;
    r->ttl_s = (uint32_t)v;
    return fn == 8 ? s_cmd_fields(&rf[3], r, false) : 0;
}

/* PUT, TOUCH (optional deadline, then an optional command id), APPLY: a list of entries (APPLY:
 * whole records). */
static int s_dec_records(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    if (m->type != PROTO_APPLY && (n == 5 || n == 6)) {
        if (s_u64(&f[4], &m->deadline_us) < 0)
            DFAIL("bad deadline");
        if (n == 6 && s_cmd_id(&f[5], m) < 0)
            DFAIL("bad command id");
    } else {
        NFIELDS(4);
    }
    if (!(items = s_arr(&f[3], 0, PROTO_ITEMS_MAX, &cnt)))
        DFAIL("bad record list");
    m->recs = xcalloc(cnt ? cnt : 1, sizeof *m->recs);
    for (uint32_t i = 0; i < cnt; i++) {
        proto_record_t *r = &m->recs[i];
        if (m->type == PROTO_APPLY && s_record(&items[i], r) < 0)
            DFAIL("bad record %u", i);
        if (m->type == PROTO_PUT && s_dec_put_entry(&items[i], r) < 0)
            DFAIL("bad put %u", i);
        if (m->type == PROTO_TOUCH && s_dec_touch_entry(&items[i], r) < 0)
            DFAIL("bad touch %u", i);
    }
    m->n = cnt;
    return 0;
}

/* STATS, PING: the header only. */
static int s_dec_bare(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    (void)f;
    NFIELDS(3);
    return 0;
}

static int s_dec_lease(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint64_t v;
    NFIELDS(7);
    proto_str_t node;
    if (s_u64(&f[3], &m->lease_id) < 0 || m->lease_id == 0 || s_uint(&f[4], PROTO_LEASE_END, &v) < 0)
        DFAIL("bad lease");
    m->op = (uint8_t)v;
    if (s_uint(&f[5], PROTO_LEASE_TTL_MAX_MS, &v) < 0 || v == 0 || s_str(&f[6], PROTO_NODE_ID_MAX, &node) < 0 ||
        !util_valid_node_id(node.p, node.len))
        DFAIL("bad lease");
    m->ttl_ms = (uint32_t)v;
    memcpy(m->node, node.p, node.len);
    m->node[node.len] = '\0';
    return 0;
}

/* The status field every reply has at f[3]. */
static int s_dec_status(proto_msg_t *m, const msgpack_object *f)
{
    uint64_t v;
    if (s_uint(&f[3], PROTO_STATUS_MAX_, &v) < 0)
        DFAIL("bad status");
    m->status = (uint8_t)v;
    return 0;
}

static int s_dec_sessions_reply(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    NFIELDS(5);
    if (s_dec_status(m, f) < 0)
        return -1;
    if (!(items = s_arr(&f[4], 0, PROTO_SESSIONS_MAX, &cnt)))
        DFAIL("bad session list");
    m->sessions = xcalloc(cnt ? cnt : 1, sizeof *m->sessions);
    for (uint32_t i = 0; i < cnt; i++)
        if (s_session(&items[i], &m->sessions[i]) < 0)
            DFAIL("bad session %u", i);
    m->n = cnt;
    return 0;
}

static int s_dec_catchup(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint64_t v;
    NFIELDS(9);
    if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->seq) < 0 || s_u64(&f[5], &m->max_items) < 0 ||
        s_uint(&f[6], UINT32_MAX, &v) < 0 || s_u64(&f[7], &m->first_seq) < 0 ||
        s_str(&f[8], PROTO_USER_ID_MAX, &m->key) < 0 || (m->key.len && !util_valid_user_id(m->key.p, m->key.len)))
        DFAIL("bad catchup");
    m->flags = (uint32_t)v;
    return 0;
}

/* REPLY's optional absent list (PROTOCOL.md, "REPLY absent"): [[index, as_of], ...], at least one
 * entry, only on an OK reply, indexes strictly increasing, each as_of above the reply's, and no
 * more keys in all (listed records and absent entries) than an MGET may carry. */
static int s_dec_absent(proto_msg_t *m, const msgpack_object *o)
{
    uint32_t cnt;
    const msgpack_object *items = s_arr(o, 1, PROTO_ITEMS_MAX, &cnt);
    if (!items)
        DFAIL("bad absent list");
    if (m->status != PROTO_OK)
        DFAIL("absent list on a reply that is not OK");
    if ((uint64_t)cnt + m->n > PROTO_ITEMS_MAX)
        DFAIL("absent list: %u keys and %u records, more than an MGET has", cnt, m->n);
    m->absent = xcalloc(cnt, sizeof *m->absent);
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t pn;
        uint64_t idx, as_of;
        const msgpack_object *pf = s_arr(&items[i], 2, 2, &pn);
        if (!pf || s_uint(&pf[0], PROTO_ITEMS_MAX - 1, &idx) < 0 || s_u64(&pf[1], &as_of) < 0)
            DFAIL("bad absent entry %u", i);
        if (i && idx <= m->absent[i - 1].index)
            DFAIL("absent entries out of order at %u", i);
        if (as_of <= m->seq)
            DFAIL("absent entry %u not above the reply's as_of", i);
        m->absent[i].index = (uint32_t)idx;
        m->absent[i].as_of = as_of;
    }
    m->nabsent = cnt;
    return 0;
}

static int s_dec_reply(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    uint64_t v;
    const msgpack_object *items;
    if (n != 8 && n != 9)
        DFAIL("REPLY: %u fields, want 8 or 9", n);
    if (s_dec_status(m, f) < 0)
        return -1;
    if (s_u64(&f[4], &m->seq) < 0 || !(items = s_arr(&f[5], 0, PROTO_ITEMS_MAX, &cnt)) ||
        s_str(&f[6], PROTO_ERRMSG_MAX, &m->key) < 0 || s_uint(&f[7], UINT32_MAX, &v) < 0)
        DFAIL("bad reply");
    m->flags = (uint32_t)v;
    m->recs = xcalloc(cnt ? cnt : 1, sizeof *m->recs);
    for (uint32_t i = 0; i < cnt; i++)
        if (s_record(&items[i], &m->recs[i]) < 0)
            DFAIL("bad record %u", i);
    m->n = cnt;
    return n == 9 ? s_dec_absent(m, &f[8]) : 0;
}

/* Changes in sequence order (CHANGES, an incremental CATCHUP_REPLY). */
static int s_dec_change_list(proto_msg_t *m, const msgpack_object *items, uint32_t cnt)
{
    m->changes = xcalloc(cnt ? cnt : 1, sizeof *m->changes);
    for (uint32_t i = 0; i < cnt; i++) {
        if (s_change(&items[i], &m->changes[i]) < 0)
            DFAIL("bad change %u", i);
        if (i && m->changes[i].rec.version <= m->changes[i - 1].rec.version)
            DFAIL("changes out of order at %u", i);
    }
    m->n = cnt;
    return 0;
}

static int s_dec_catchup_reply(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    uint64_t v;
    const msgpack_object *items;
    NFIELDS(10);
    if (s_dec_status(m, f) < 0)
        return -1;
    if (s_u64(&f[4], &m->epoch) < 0 || s_uint(&f[5], PROTO_CATCHUP_SNAPSHOT_CONT, &v) < 0)
        DFAIL("bad catchup reply");
    m->mode = (uint8_t)v;
    if (s_u64(&f[6], &m->seq) < 0 || f[7].type != MSGPACK_OBJECT_BOOLEAN ||
        !(items = s_arr(&f[8], 0, PROTO_ITEMS_MAX, &cnt)) || s_str(&f[9], PROTO_USER_ID_MAX, &m->key) < 0 ||
        (m->key.len && !util_valid_user_id(m->key.p, m->key.len)))
        DFAIL("bad catchup reply");
    m->done = f[7].via.boolean;
    if (m->mode == PROTO_CATCHUP_INCREMENTAL)
        return s_dec_change_list(m, items, cnt);
    /* Snapshot chunks are in key order, not sequence order: check them one by one. */
    m->changes = xcalloc(cnt ? cnt : 1, sizeof *m->changes);
    for (uint32_t i = 0; i < cnt; i++)
        if (s_change(&items[i], &m->changes[i]) < 0 || m->changes[i].kind != PROTO_CH_SET)
            DFAIL("bad snapshot record %u", i);
    m->n = cnt;
    return 0;
}

static int s_dec_changes(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    NFIELDS(7);
    if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->first_seq) < 0 || s_u64(&f[5], &m->seq) < 0 ||
        !(items = s_arr(&f[6], 1, PROTO_ITEMS_MAX, &cnt)))
        DFAIL("bad changes");
    if (m->first_seq == 0 || m->seq < m->first_seq)
        DFAIL("bad change range");
    if (s_dec_change_list(m, items, cnt) < 0)
        return -1;
    if (m->changes[0].rec.version < m->first_seq || m->changes[cnt - 1].rec.version != m->seq)
        DFAIL("changes outside their range");
    return 0;
}

/* PONG, STATS_REPLY: [name, value] pairs. */
static int s_dec_stats(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    NFIELDS(5);
    if (s_dec_status(m, f) < 0)
        return -1;
    if (!(items = s_arr(&f[4], 0, PROTO_STATS_MAX, &cnt)))
        DFAIL("bad stats");
    m->stats = xcalloc(cnt ? cnt : 1, sizeof *m->stats);
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t pn;
        const msgpack_object *pf = s_arr(&items[i], 2, 2, &pn);
        if (!pf || s_str(&pf[0], PROTO_STAT_NAME_MAX, &m->stats[i].name) < 0 || s_u64(&pf[1], &m->stats[i].value) < 0)
            DFAIL("bad stat %u", i);
    }
    m->n = cnt;
    return 0;
}

static int s_dec_batch(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint32_t cnt;
    const msgpack_object *items;
    NFIELDS(4);
    if (!(items = s_arr(&f[3], 1, PROTO_ITEMS_MAX, &cnt)))
        DFAIL("bad batch");
    m->parts = xcalloc(cnt, sizeof *m->parts);
    for (uint32_t i = 0; i < cnt; i++) {
        if (items[i].type != MSGPACK_OBJECT_BIN || items[i].via.bin.size == 0)
            DFAIL("bad batch part %u", i);
        m->parts[i].p = items[i].via.bin.ptr;
        m->parts[i].len = items[i].via.bin.size;
    }
    m->n = cnt;
    return 0;
}

static int s_dec_hugz(proto_msg_t *m, const msgpack_object *f, uint32_t n)
{
    uint64_t v;
    if (n < 6 || n > 9 || n == 8)
        DFAIL("HUGZ: %u fields, want 6, 7 or 9", n);
    if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->seq) < 0 || s_u64(&f[5], &m->now_us) < 0)
        DFAIL("bad hugz");
    if (n >= 7) {
        if (s_uint(&f[6], UINT32_MAX, &v) < 0)
            DFAIL("bad hugz flags");
        m->flags = (uint32_t)v;
    }
    if (n == 9) { /* a replicated center's member and its term */
        if (s_uint(&f[7], PROTO_MEMBERS_MAX, &v) < 0 || s_u64(&f[8], &m->term) < 0)
            DFAIL("bad hugz member");
        m->member = (uint32_t)v;
    }
    return 0;
}

#undef NFIELDS
#undef DFAIL

static dec_fn s_decoder(uint8_t type)
{
    switch (type) {
    case PROTO_GET:
    case PROTO_DEL:
    case PROTO_SESSIONS: return s_dec_key;
    case PROTO_MGET: return s_dec_mget;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_APPLY: return s_dec_records;
    case PROTO_STATS:
    case PROTO_PING: return s_dec_bare;
    case PROTO_LEASE: return s_dec_lease;
    case PROTO_SESSIONS_REPLY: return s_dec_sessions_reply;
    case PROTO_CATCHUP: return s_dec_catchup;
    case PROTO_REPLY: return s_dec_reply;
    case PROTO_CATCHUP_REPLY: return s_dec_catchup_reply;
    case PROTO_CHANGES: return s_dec_changes;
    case PROTO_PONG:
    case PROTO_STATS_REPLY: return s_dec_stats;
    case PROTO_BATCH: return s_dec_batch;
    case PROTO_HUGZ: return s_dec_hugz;
    default: return NULL;
    }
}

/* A frame that names another protocol version: say so (not "malformed"), with its type and id
 * when its header can be read. Returns true when that is the case. */
static bool s_other_version(const void *data, size_t len, proto_msg_t *m)
{
    const uint8_t *p = data;
    if (!(len >= 2 && (p[0] & 0xf0) == 0x90 && p[1] <= 0x7f && p[1] != PROTO_VERSION))
        return false;
    uint8_t t;
    uint64_t r;
    if (proto_peek_header(data, len, &t, &r) == 0) {
        m->type = t;
        m->rid = r;
    }
    snprintf(m->err, sizeof m->err, "unsupported protocol version %u", p[1]);
    return true;
}

int proto_decode(const void *data, size_t len, proto_msg_t *m)
{
    s_msg_init(m);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = PROTO_MALFORMED;
    uint32_t n = 0;
    uint64_t v;

    if (len == 0 || len > PROTO_FRAME_MAX)
        FAIL("frame size %zu out of range", len);
    /* The version first: a frame of another version may use anything. */
    if (s_other_version(data, len, m)) {
        rc = PROTO_EVERSION;
        goto out;
    }
    if (s_prescan(data, len, m->err, sizeof m->err) < 0)
        goto malformed;
    size_t off = 0;
    if (msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        FAIL("msgpack parse error");

    const msgpack_object *f = s_arr(&up.data, 3, 16, &n);
    if (!f)
        FAIL("not a message array");
    if (s_u64(&f[1], &v) < 0 || v > 255)
        FAIL("bad type");
    m->type = (uint8_t)v;
    if (s_u64(&f[2], &m->rid) < 0)
        FAIL("bad request id");
    if (s_u64(&f[0], &v) < 0 || v != PROTO_VERSION) {
        snprintf(m->err, sizeof m->err, "unsupported protocol version");
        rc = PROTO_EVERSION;
        goto out;
    }
    dec_fn fn = s_decoder(m->type);
    if (!fn)
        FAIL("unknown message type %u", m->type);
    if (fn(m, f, n) < 0)
        goto malformed;
    rc = PROTO_DEC_OK;
    goto out;
malformed:
    rc = PROTO_MALFORMED;
    proto_msg_fini(m);
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

int proto_session_decode(const void *data, size_t len, proto_session_t *ss)
{
    char err[64];
    if (len == 0 || len > 4096 || s_prescan(data, len, err, sizeof err) < 0)
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&up, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len)
        rc = s_session(&up.data, ss);
    msgpack_unpacked_destroy(&up);
    return rc;
}

int proto_record_decode(const void *data, size_t len, proto_record_t *r)
{
    char err[64];
    if (len == 0 || len > 4096 || s_prescan(data, len, err, sizeof err) < 0)
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&up, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len)
        rc = s_record(&up.data, r);
    msgpack_unpacked_destroy(&up);
    return rc;
}

uint64_t proto_reply_key_as_of(const proto_msg_t *m, uint32_t index)
{
    uint32_t lo = 0, hi = m->nabsent;
    while (lo < hi) { /* the first entry whose index is >= index */
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->absent[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->nabsent && m->absent[lo].index == index ? m->absent[lo].as_of : m->seq;
}
