/* proto.c -- msgpack encoding and strict decoding of every message (see proto.h, PROTOCOL.md).
 *
 * Decoding runs in three steps:
 *   1. a pre-scan walks the raw bytes once, without allocating: it bounds the nesting depth,
 *      rejects types we never send (ext, float, the reserved 0xc1), checks that every container
 *      claims no more elements than there are bytes left and that exactly one object fills the
 *      frame. This is what keeps msgpack-c from reserving memory for a hostile count;
 *   2. msgpack-c builds the object tree (strings point into the frame);
 *   3. a schema check per message type copies what it needs into proto_msg_t, validating every
 *      type, range, string length and character set on the way.
 * Any failure jumps to one `malformed` exit with a reason in m->err.
 */
#include "proto.h"
#include "util.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROTO_DEPTH_MAX 8

/* ==== buffers ================================================================================ */

void proto_buf_init(proto_buf_t *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void proto_buf_reset(proto_buf_t *b)
{
    b->len = 0;
}

void proto_buf_fini(proto_buf_t *b)
{
    free(b->data);
    proto_buf_init(b);
}

char *proto_buf_steal(proto_buf_t *b, size_t *len)
{
    char *p = b->data;
    *len = b->len;
    proto_buf_init(b);
    return p;
}

void proto_buf_append(proto_buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static int s_pk_write(void *data, const char *buf, size_t len)
{
    proto_buf_append(data, buf, len);
    return 0;
}

/* ==== encoding =============================================================================== */

#define PK(e, pk)                                                                                                      \
    msgpack_packer pk;                                                                                                 \
    msgpack_packer_init(&pk, (e)->b, s_pk_write)

void proto_enc_init(proto_enc_t *e, proto_buf_t *b)
{
    e->b = b;
}

void proto_enc_header(proto_enc_t *e, uint32_t nfields, uint8_t type, uint64_t rid)
{
    PK(e, pk);
    msgpack_pack_array(&pk, nfields);
    msgpack_pack_uint8(&pk, PROTO_VERSION);
    msgpack_pack_uint8(&pk, type);
    msgpack_pack_uint64(&pk, rid);
}

void proto_enc_array(proto_enc_t *e, uint32_t n)
{
    PK(e, pk);
    msgpack_pack_array(&pk, n);
}

void proto_enc_u64(proto_enc_t *e, uint64_t v)
{
    PK(e, pk);
    msgpack_pack_uint64(&pk, v);
}

void proto_enc_bool(proto_enc_t *e, bool v)
{
    PK(e, pk);
    if (v)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
}

void proto_enc_str(proto_enc_t *e, const char *s, size_t len)
{
    PK(e, pk);
    msgpack_pack_str(&pk, len);
    msgpack_pack_str_body(&pk, s, len);
}

void proto_enc_raw(proto_enc_t *e, const void *p, size_t n)
{
    proto_buf_append(e->b, p, n);
}

/* A record: the nine fields of protocol 2.0, then the real-time ones (PROTOCOL.md, Record). */
void proto_enc_record(proto_enc_t *e, const proto_record_t *r)
{
    proto_enc_array(e, PROTO_RECORD_FIELDS);
    proto_enc_str(e, r->user_id, r->uid_len);
    proto_enc_u64(e, r->status);
    proto_enc_str(e, r->message, r->msg_len);
    proto_enc_u64(e, r->last_seen_us);
    proto_enc_u64(e, r->updated_at_us);
    proto_enc_u64(e, r->expires_at_us);
    proto_enc_str(e, r->node_id, r->node_len);
    proto_enc_u64(e, r->ttl_s);
    proto_enc_u64(e, r->version);
    proto_enc_u64(e, r->preferred_until_us);
    proto_enc_u64(e, r->message_expires_at_us);
    proto_enc_u64(e, r->pub_version);
    proto_enc_u64(e, r->vis_last_seen_us);
    proto_enc_u64(e, r->due_us);
    proto_enc_u64(e, r->sessions);
    proto_enc_u64(e, r->source);
    proto_enc_u64(e, r->rflags);
}

void proto_session_encode(proto_buf_t *b, const proto_session_t *ss)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_array(&e, 11);
    proto_enc_str(&e, ss->session_id, ss->sid_len);
    proto_enc_str(&e, ss->device, ss->device_len);
    proto_enc_u64(&e, ss->status);
    proto_enc_u64(&e, ss->manual_status);
    proto_enc_u64(&e, ss->connected_at_us);
    proto_enc_u64(&e, ss->last_seen_us);
    proto_enc_u64(&e, ss->expires_at_us);
    proto_enc_str(&e, ss->node_id, ss->node_len);
    proto_enc_u64(&e, ss->ttl_s);
    proto_enc_u64(&e, ss->lease_id);
    proto_enc_u64(&e, ss->conn_id);
}

void proto_enc_change(proto_enc_t *e, const proto_change_t *c)
{
    proto_enc_array(e, 3);
    proto_enc_u64(e, c->kind);
    proto_enc_u64(e, c->rec.version);
    switch (c->kind) {
    case PROTO_CH_SET:
        proto_enc_record(e, &c->rec);
        break;
    case PROTO_CH_DEL:
        proto_enc_str(e, c->rec.user_id, c->rec.uid_len);
        break;
    case PROTO_CH_TOUCH:
        proto_enc_array(e, 9);
        proto_enc_str(e, c->rec.user_id, c->rec.uid_len);
        proto_enc_u64(e, c->rec.last_seen_us);
        proto_enc_u64(e, c->rec.expires_at_us);
        proto_enc_str(e, c->rec.node_id, c->rec.node_len);
        proto_enc_u64(e, c->rec.ttl_s);
        proto_enc_u64(e, c->rec.preferred_until_us);
        proto_enc_u64(e, c->rec.message_expires_at_us);
        proto_enc_u64(e, c->rec.vis_last_seen_us);
        proto_enc_u64(e, c->rec.pub_version);
        break;
    default:
        /* Programming error: encode a harmless DEL-shaped entry that decoders reject. */
        proto_enc_str(e, "", 0);
        break;
    }
}

void proto_record_encode(proto_buf_t *b, const proto_record_t *r)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_record(&e, r);
}

void proto_enc_get_dl(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen, uint64_t deadline_us)
{
    proto_enc_get_id(b, type, rid, key, klen, deadline_us, NULL);
}

static void s_enc_cmd_id(proto_enc_t *e, const uint8_t *cmd_id)
{
    PK(e, pk);
    msgpack_pack_bin(&pk, PROTO_CMD_ID_LEN);
    msgpack_pack_bin_body(&pk, cmd_id, PROTO_CMD_ID_LEN);
}

void proto_enc_get_id(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen, uint64_t deadline_us,
                      const uint8_t *cmd_id)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    if (type != PROTO_DEL)
        cmd_id = NULL; /* only DEL of the key-shaped commands carries one */
    proto_enc_header(&e, cmd_id ? 6 : deadline_us ? 5 : 4, type, rid);
    proto_enc_str(&e, key, klen);
    if (deadline_us || cmd_id)
        proto_enc_u64(&e, deadline_us);
    if (cmd_id)
        s_enc_cmd_id(&e, cmd_id);
}

void proto_enc_get(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen)
{
    proto_enc_get_dl(b, type, rid, key, klen, 0);
}

void proto_enc_keys(proto_buf_t *b, uint64_t rid, const proto_str_t *keys, uint32_t n)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 4, PROTO_MGET, rid);
    proto_enc_array(&e, n);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_str(&e, keys[i].p, keys[i].len);
}

void proto_enc_records_cmd(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n)
{
    proto_enc_records_cmd_dl(b, type, rid, recs, n, 0);
}

void proto_enc_records_cmd_dl(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n,
                              uint64_t deadline_us)
{
    proto_enc_records_cmd_id(b, type, rid, recs, n, deadline_us, NULL);
}

void proto_enc_records_cmd_id(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n,
                              uint64_t deadline_us, const uint8_t *cmd_id)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    if (type == PROTO_APPLY) {
        deadline_us = 0; /* APPLY has no deadline field, nor a command id */
        cmd_id = NULL;
    }
    proto_enc_header(&e, cmd_id ? 6 : deadline_us ? 5 : 4, type, rid);
    proto_enc_array(&e, n);
    for (uint32_t i = 0; i < n; i++) {
        const proto_record_t *r = &recs[i];
        /* The short (2.0) forms when a command carries nothing of sessions: a PUT then always
         * sets the message. */
        bool plain = (r->cflags & ~PROTO_CMD_F_MSG) == 0 && !r->message_ttl_s && !r->sid_len && !r->lease_id &&
                     !r->conn_id && !r->device_len;
        if (type == PROTO_PUT) {
            plain = plain && (r->cflags & PROTO_CMD_F_MSG);
            proto_enc_array(&e, plain ? 5 : 11);
            proto_enc_str(&e, r->user_id, r->uid_len);
            proto_enc_u64(&e, r->status);
            proto_enc_str(&e, r->message, r->msg_len);
            proto_enc_u64(&e, r->ttl_s);
            proto_enc_str(&e, r->node_id, r->node_len);
            if (!plain) {
                proto_enc_u64(&e, r->cflags);
                proto_enc_u64(&e, r->message_ttl_s);
                proto_enc_str(&e, r->session_id, r->sid_len);
                proto_enc_str(&e, r->device, r->device_len);
                proto_enc_u64(&e, r->lease_id);
                proto_enc_u64(&e, r->conn_id);
            }
        } else if (type == PROTO_TOUCH) {
            plain = plain && !(r->cflags & PROTO_CMD_F_MSG);
            proto_enc_array(&e, plain ? 3 : 8);
            proto_enc_str(&e, r->user_id, r->uid_len);
            proto_enc_u64(&e, r->ttl_s);
            proto_enc_str(&e, r->node_id, r->node_len);
            if (!plain) {
                proto_enc_u64(&e, r->cflags);
                proto_enc_str(&e, r->session_id, r->sid_len);
                proto_enc_str(&e, r->device, r->device_len);
                proto_enc_u64(&e, r->lease_id);
                proto_enc_u64(&e, r->conn_id);
            }
        } else {
            proto_enc_record(&e, r);
        }
    }
    if (deadline_us || cmd_id)
        proto_enc_u64(&e, deadline_us);
    if (cmd_id)
        s_enc_cmd_id(&e, cmd_id);
}

void proto_enc_simple(proto_buf_t *b, uint8_t type, uint64_t rid)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 3, type, rid);
}

void proto_enc_catchup(proto_buf_t *b, uint64_t rid, uint64_t epoch, uint64_t after_seq, uint64_t max_items,
                       uint32_t flags, uint64_t snap_start, const char *after_key, size_t klen)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 9, PROTO_CATCHUP, rid);
    proto_enc_u64(&e, epoch);
    proto_enc_u64(&e, after_seq);
    proto_enc_u64(&e, max_items);
    proto_enc_u64(&e, flags);
    proto_enc_u64(&e, snap_start);
    proto_enc_str(&e, after_key ? after_key : "", after_key ? klen : 0);
}

void proto_enc_catchup_reply_begin(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t epoch, uint8_t mode,
                                   uint64_t through_seq, bool done, uint32_t n)
{
    proto_enc_header(e, 10, PROTO_CATCHUP_REPLY, rid);
    proto_enc_u64(e, status);
    proto_enc_u64(e, epoch);
    proto_enc_u64(e, mode);
    proto_enc_u64(e, through_seq);
    proto_enc_bool(e, done);
    proto_enc_array(e, n);
}

void proto_enc_catchup_reply_end(proto_enc_t *e, const char *cursor, size_t len)
{
    proto_enc_str(e, cursor ? cursor : "", cursor ? len : 0);
}

void proto_enc_changes_begin(proto_enc_t *e, uint64_t epoch, uint64_t first_seq, uint64_t last_seq, uint32_t n)
{
    proto_enc_header(e, 7, PROTO_CHANGES, 0);
    proto_enc_u64(e, epoch);
    proto_enc_u64(e, first_seq);
    proto_enc_u64(e, last_seq);
    proto_enc_array(e, n);
}

void proto_enc_reply_raw_begin(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t as_of, uint32_t n)
{
    proto_enc_header(e, 8, PROTO_REPLY, rid);
    proto_enc_u64(e, status);
    proto_enc_u64(e, as_of);
    proto_enc_array(e, n);
}

void proto_enc_reply_raw_end(proto_enc_t *e, const char *err, uint32_t flags)
{
    size_t n = err ? strlen(err) : 0;
    proto_enc_str(e, err ? err : "", n > PROTO_ERRMSG_MAX ? PROTO_ERRMSG_MAX : n);
    proto_enc_u64(e, flags);
}

void proto_enc_reply(proto_buf_t *b, uint64_t rid, uint8_t status, uint64_t as_of, const proto_record_t *recs,
                     uint32_t n, const char *err, uint32_t flags)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_reply_raw_begin(&e, rid, status, as_of, n);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_record(&e, &recs[i]);
    proto_enc_reply_raw_end(&e, err, flags);
}

void proto_enc_stats(proto_buf_t *b, uint8_t type, uint64_t rid, uint8_t status, const proto_stat_t *stats,
                     uint32_t n)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 5, type, rid);
    proto_enc_u64(&e, status);
    proto_enc_array(&e, n);
    for (uint32_t i = 0; i < n; i++) {
        proto_enc_array(&e, 2);
        proto_enc_str(&e, stats[i].name.p, stats[i].name.len);
        proto_enc_u64(&e, stats[i].value);
    }
}

void proto_enc_lease(proto_buf_t *b, uint64_t rid, uint64_t lease_id, uint8_t op, uint32_t ttl_ms, const char *node,
                     size_t node_len)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 7, PROTO_LEASE, rid);
    proto_enc_u64(&e, lease_id);
    proto_enc_u64(&e, op);
    proto_enc_u64(&e, ttl_ms);
    proto_enc_str(&e, node, node_len);
}

void proto_enc_sessions_reply(proto_buf_t *b, uint64_t rid, uint8_t status, const proto_session_t *ss, uint32_t n)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 5, PROTO_SESSIONS_REPLY, rid);
    proto_enc_u64(&e, status);
    proto_enc_array(&e, n);
    for (uint32_t i = 0; i < n; i++)
        proto_session_encode(b, &ss[i]);
}

void proto_enc_hugz(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 6, PROTO_HUGZ, 0);
    proto_enc_u64(&e, epoch);
    proto_enc_u64(&e, seq);
    proto_enc_u64(&e, now_us);
}

void proto_batch_init(proto_batch_t *bt)
{
    proto_buf_init(&bt->data);
    bt->ends = NULL;
    bt->n = bt->cap = 0;
}

void proto_batch_fini(proto_batch_t *bt)
{
    proto_buf_fini(&bt->data);
    free(bt->ends);
    bt->ends = NULL;
    bt->n = bt->cap = 0;
}

void proto_batch_reset(proto_batch_t *bt)
{
    proto_buf_reset(&bt->data);
    bt->n = 0;
}

void proto_batch_add(proto_batch_t *bt, const void *msg, size_t len)
{
    if (bt->n == bt->cap) {
        bt->cap = bt->cap ? bt->cap * 2 : 64;
        bt->ends = xrealloc(bt->ends, bt->cap * sizeof *bt->ends);
    }
    proto_buf_append(&bt->data, msg, len);
    bt->ends[bt->n++] = (uint32_t)bt->data.len;
}

bool proto_batch_full(const proto_batch_t *bt)
{
    return bt->data.len >= PROTO_BATCH_SOFT_MAX || bt->n >= PROTO_ITEMS_MAX;
}

void proto_batch_encode(const proto_batch_t *bt, proto_buf_t *out)
{
    proto_buf_reset(out);
    if (bt->n == 1) {
        proto_buf_append(out, bt->data.data, bt->data.len);
        return;
    }
    proto_enc_t e;
    proto_enc_init(&e, out);
    proto_enc_header(&e, 4, PROTO_BATCH, 0);
    proto_enc_array(&e, bt->n);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, s_pk_write);
    uint32_t start = 0;
    for (uint32_t i = 0; i < bt->n; i++) {
        msgpack_pack_bin(&pk, bt->ends[i] - start);
        msgpack_pack_bin_body(&pk, bt->data.data + start, bt->ends[i] - start);
        start = bt->ends[i];
    }
}

void proto_enc_hugz_flags(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us, uint32_t flags)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 7, PROTO_HUGZ, 0);
    proto_enc_u64(&e, epoch);
    proto_enc_u64(&e, seq);
    proto_enc_u64(&e, now_us);
    proto_enc_u64(&e, flags);
}

void proto_enc_hugz_member(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us, uint32_t flags,
                           uint32_t member, uint64_t term)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_header(&e, 9, PROTO_HUGZ, 0);
    proto_enc_u64(&e, epoch);
    proto_enc_u64(&e, seq);
    proto_enc_u64(&e, now_us);
    proto_enc_u64(&e, flags);
    proto_enc_u64(&e, member);
    proto_enc_u64(&e, term);
}

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

void proto_record_set_uid(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_USER_ID_MAX)
        len = PROTO_USER_ID_MAX;
    memcpy(r->user_id, s, len);
    r->user_id[len] = '\0';
    r->uid_len = (uint8_t)len;
}

void proto_record_set_node(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_NODE_ID_MAX)
        len = PROTO_NODE_ID_MAX;
    memcpy(r->node_id, s, len);
    r->node_id[len] = '\0';
    r->node_len = (uint8_t)len;
}

void proto_record_set_msg(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_MESSAGE_MAX)
        len = PROTO_MESSAGE_MAX;
    memcpy(r->message, s, len);
    r->message[len] = '\0';
    r->msg_len = (uint16_t)len;
}

void proto_record_set_sid(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_SESSION_ID_MAX)
        len = PROTO_SESSION_ID_MAX;
    memcpy(r->session_id, s, len);
    r->session_id[len] = '\0';
    r->sid_len = (uint8_t)len;
}

void proto_record_set_device(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_DEVICE_MAX)
        len = PROTO_DEVICE_MAX;
    memcpy(r->device, s, len);
    r->device[len] = '\0';
    r->device_len = (uint8_t)len;
}

bool proto_valid_session_id(const char *s, size_t len)
{
    if (len == 0 || len > PROTO_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

bool proto_valid_device(const char *s, size_t len)
{
    return len <= PROTO_DEVICE_MAX && util_valid_message(s, len);
}

bool proto_record_invisible(const proto_record_t *r)
{
    return r->source == PRESENCE_SRC_PREFERRED && r->status == PRESENCE_OFFLINE && r->sessions > 0;
}

void proto_record_public(const proto_record_t *r, proto_record_t *out)
{
    *out = *r;
    if (!proto_record_invisible(r))
        return;
    out->sessions = 0;
    out->last_seen_us = r->vis_last_seen_us;
    out->version = r->pub_version;
    if (!(r->rflags & PROTO_REC_F_PUB_RT))
        out->rflags = 0;
}

const char *proto_source_name(int source)
{
    static const char *const names[] = {"none", "preferred", "session"};
    return (source >= 0 && source < PRESENCE_SOURCE_COUNT) ? names[source] : "none";
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
    /* The version first: a frame of another version may use anything; say so, not "malformed". */
    {
        const uint8_t *p = data;
        if (len >= 2 && (p[0] & 0xf0) == 0x90 && p[1] <= 0x7f && p[1] != PROTO_VERSION) {
            uint8_t t;
            uint64_t r;
            if (proto_peek_header(data, len, &t, &r) == 0) {
                m->type = t;
                m->rid = r;
            }
            snprintf(m->err, sizeof m->err, "unsupported protocol version %u", p[1]);
            rc = PROTO_EVERSION;
            goto out;
        }
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

#define NFIELDS(k)                                                                                                     \
    do {                                                                                                               \
        if (n != (k))                                                                                                  \
            FAIL("%s: %u fields, want %u", proto_type_name(m->type), n, (unsigned)(k));                                \
    } while (0)

    uint32_t cnt;
    const msgpack_object *items;
    switch (m->type) {
    case PROTO_GET:
    case PROTO_DEL:
    case PROTO_SESSIONS:
        if (m->type == PROTO_DEL && (n == 5 || n == 6)) {
            if (s_u64(&f[4], &m->deadline_us) < 0)
                FAIL("bad deadline");
            if (n == 6 && s_cmd_id(&f[5], m) < 0)
                FAIL("bad command id");
        } else {
            NFIELDS(4);
        }
        if (s_str(&f[3], PROTO_USER_ID_MAX, &m->key) < 0 || !util_valid_user_id(m->key.p, m->key.len))
            FAIL("bad key");
        break;
    case PROTO_MGET:
        NFIELDS(4);
        if (!(items = s_arr(&f[3], 0, PROTO_ITEMS_MAX, &cnt)))
            FAIL("bad key list");
        m->keys = xcalloc(cnt ? cnt : 1, sizeof *m->keys);
        for (uint32_t i = 0; i < cnt; i++)
            if (s_str(&items[i], PROTO_USER_ID_MAX, &m->keys[i]) < 0 || !util_valid_user_id(m->keys[i].p, m->keys[i].len))
                FAIL("bad key %u", i);
        m->n = cnt;
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_APPLY:
        if (m->type != PROTO_APPLY && (n == 5 || n == 6)) {
            if (s_u64(&f[4], &m->deadline_us) < 0)
                FAIL("bad deadline");
            if (n == 6 && s_cmd_id(&f[5], m) < 0)
                FAIL("bad command id");
        } else {
            NFIELDS(4);
        }
        if (!(items = s_arr(&f[3], 0, PROTO_ITEMS_MAX, &cnt)))
            FAIL("bad record list");
        m->recs = xcalloc(cnt ? cnt : 1, sizeof *m->recs);
        for (uint32_t i = 0; i < cnt; i++) {
            proto_record_t *r = &m->recs[i];
            uint32_t fn;
            const msgpack_object *rf;
            if (m->type == PROTO_APPLY) {
                if (s_record(&items[i], r) < 0)
                    FAIL("bad record %u", i);
            } else if (m->type == PROTO_PUT) {
                if (!(rf = s_arr(&items[i], 5, 11, &fn)) || (fn != 5 && fn != 11) || s_uid(&rf[0], r) < 0 ||
                    s_uint(&rf[1], PRESENCE_STATUS_COUNT - 1, &v) < 0)
                    FAIL("bad put %u", i);
                r->status = (uint8_t)v;
                if (s_msg(&rf[2], r) < 0 || s_uint(&rf[3], PROTO_TTL_MAX, &v) < 0 || v == 0 || s_node(&rf[4], r) < 0)
                    FAIL("bad put %u", i);
                r->ttl_s = (uint32_t)v;
                r->cflags = PROTO_CMD_F_MSG; /* the 2.0 form always sets the message */
                if (fn == 11 && s_cmd_fields(&rf[5], r, true) < 0)
                    FAIL("bad put %u session fields", i);
            } else {
                if (!(rf = s_arr(&items[i], 3, 8, &fn)) || (fn != 3 && fn != 8) || s_uid(&rf[0], r) < 0 ||
                    s_uint(&rf[1], PROTO_TTL_MAX, &v) < 0 || s_node(&rf[2], r) < 0)
                    FAIL("bad touch %u", i);
                r->ttl_s = (uint32_t)v;
                if (fn == 8 && s_cmd_fields(&rf[3], r, false) < 0)
                    FAIL("bad touch %u session fields", i);
            }
        }
        m->n = cnt;
        break;
    case PROTO_STATS:
    case PROTO_PING:
        NFIELDS(3);
        break;
    case PROTO_LEASE: {
        NFIELDS(7);
        proto_str_t node;
        if (s_u64(&f[3], &m->lease_id) < 0 || m->lease_id == 0 || s_uint(&f[4], PROTO_LEASE_END, &v) < 0)
            FAIL("bad lease");
        m->op = (uint8_t)v;
        if (s_uint(&f[5], PROTO_LEASE_TTL_MAX_MS, &v) < 0 || v == 0 || s_str(&f[6], PROTO_NODE_ID_MAX, &node) < 0 ||
            !util_valid_node_id(node.p, node.len))
            FAIL("bad lease");
        m->ttl_ms = (uint32_t)v;
        memcpy(m->node, node.p, node.len);
        m->node[node.len] = '\0';
        break;
    }
    case PROTO_SESSIONS_REPLY:
        NFIELDS(5);
        if (s_uint(&f[3], PROTO_STATUS_MAX_, &v) < 0)
            FAIL("bad status");
        m->status = (uint8_t)v;
        if (!(items = s_arr(&f[4], 0, PROTO_SESSIONS_MAX, &cnt)))
            FAIL("bad session list");
        m->sessions = xcalloc(cnt ? cnt : 1, sizeof *m->sessions);
        for (uint32_t i = 0; i < cnt; i++)
            if (s_session(&items[i], &m->sessions[i]) < 0)
                FAIL("bad session %u", i);
        m->n = cnt;
        break;
    case PROTO_CATCHUP:
        NFIELDS(9);
        if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->seq) < 0 || s_u64(&f[5], &m->max_items) < 0 ||
            s_uint(&f[6], UINT32_MAX, &v) < 0 || s_u64(&f[7], &m->first_seq) < 0 ||
            s_str(&f[8], PROTO_USER_ID_MAX, &m->key) < 0 || (m->key.len && !util_valid_user_id(m->key.p, m->key.len)))
            FAIL("bad catchup");
        m->flags = (uint32_t)v;
        break;
    case PROTO_REPLY:
        NFIELDS(8);
        if (s_uint(&f[3], PROTO_STATUS_MAX_, &v) < 0)
            FAIL("bad status");
        m->status = (uint8_t)v;
        if (s_u64(&f[4], &m->seq) < 0 || !(items = s_arr(&f[5], 0, PROTO_ITEMS_MAX, &cnt)) ||
            s_str(&f[6], PROTO_ERRMSG_MAX, &m->key) < 0 || s_uint(&f[7], UINT32_MAX, &v) < 0)
            FAIL("bad reply");
        m->flags = (uint32_t)v;
        m->recs = xcalloc(cnt ? cnt : 1, sizeof *m->recs);
        for (uint32_t i = 0; i < cnt; i++)
            if (s_record(&items[i], &m->recs[i]) < 0)
                FAIL("bad record %u", i);
        m->n = cnt;
        break;
    case PROTO_CATCHUP_REPLY:
        NFIELDS(10);
        if (s_uint(&f[3], PROTO_STATUS_MAX_, &v) < 0)
            FAIL("bad status");
        m->status = (uint8_t)v;
        if (s_u64(&f[4], &m->epoch) < 0 || s_uint(&f[5], PROTO_CATCHUP_SNAPSHOT_CONT, &v) < 0)
            FAIL("bad catchup reply");
        m->mode = (uint8_t)v;
        if (s_u64(&f[6], &m->seq) < 0 || f[7].type != MSGPACK_OBJECT_BOOLEAN ||
            !(items = s_arr(&f[8], 0, PROTO_ITEMS_MAX, &cnt)) || s_str(&f[9], PROTO_USER_ID_MAX, &m->key) < 0 ||
            (m->key.len && !util_valid_user_id(m->key.p, m->key.len)))
            FAIL("bad catchup reply");
        m->done = f[7].via.boolean;
        if (m->mode != PROTO_CATCHUP_INCREMENTAL) {
            /* Snapshot chunks are in key order, not sequence order: check them one by one. */
            m->changes = xcalloc(cnt ? cnt : 1, sizeof *m->changes);
            for (uint32_t i = 0; i < cnt; i++)
                if (s_change(&items[i], &m->changes[i]) < 0 || m->changes[i].kind != PROTO_CH_SET)
                    FAIL("bad snapshot record %u", i);
            m->n = cnt;
            break;
        }
        goto changes;
    case PROTO_CHANGES:
        NFIELDS(7);
        if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->first_seq) < 0 || s_u64(&f[5], &m->seq) < 0 ||
            !(items = s_arr(&f[6], 1, PROTO_ITEMS_MAX, &cnt)))
            FAIL("bad changes");
        if (m->first_seq == 0 || m->seq < m->first_seq)
            FAIL("bad change range");
    changes:
        m->changes = xcalloc(cnt ? cnt : 1, sizeof *m->changes);
        for (uint32_t i = 0; i < cnt; i++) {
            if (s_change(&items[i], &m->changes[i]) < 0)
                FAIL("bad change %u", i);
            if (i && m->changes[i].rec.version <= m->changes[i - 1].rec.version)
                FAIL("changes out of order at %u", i);
        }
        if (m->type == PROTO_CHANGES &&
            (m->changes[0].rec.version < m->first_seq || m->changes[cnt - 1].rec.version != m->seq))
            FAIL("changes outside their range");
        m->n = cnt;
        break;
    case PROTO_PONG:
    case PROTO_STATS_REPLY:
        NFIELDS(5);
        if (s_uint(&f[3], PROTO_STATUS_MAX_, &v) < 0)
            FAIL("bad status");
        m->status = (uint8_t)v;
        if (!(items = s_arr(&f[4], 0, PROTO_STATS_MAX, &cnt)))
            FAIL("bad stats");
        m->stats = xcalloc(cnt ? cnt : 1, sizeof *m->stats);
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t pn;
            const msgpack_object *pf = s_arr(&items[i], 2, 2, &pn);
            if (!pf || s_str(&pf[0], PROTO_STAT_NAME_MAX, &m->stats[i].name) < 0 || s_u64(&pf[1], &m->stats[i].value) < 0)
                FAIL("bad stat %u", i);
        }
        m->n = cnt;
        break;
    case PROTO_BATCH:
        NFIELDS(4);
        if (!(items = s_arr(&f[3], 1, PROTO_ITEMS_MAX, &cnt)))
            FAIL("bad batch");
        m->parts = xcalloc(cnt, sizeof *m->parts);
        for (uint32_t i = 0; i < cnt; i++) {
            if (items[i].type != MSGPACK_OBJECT_BIN || items[i].via.bin.size == 0)
                FAIL("bad batch part %u", i);
            m->parts[i].p = items[i].via.bin.ptr;
            m->parts[i].len = items[i].via.bin.size;
        }
        m->n = cnt;
        break;
    case PROTO_HUGZ:
        if (n < 6 || n > 9 || n == 8)
            FAIL("HUGZ: %u fields, want 6, 7 or 9", n);
        if (s_u64(&f[3], &m->epoch) < 0 || s_u64(&f[4], &m->seq) < 0 || s_u64(&f[5], &m->now_us) < 0)
            FAIL("bad hugz");
        if (n >= 7) {
            if (s_uint(&f[6], UINT32_MAX, &v) < 0)
                FAIL("bad hugz flags");
            m->flags = (uint32_t)v;
        }
        if (n == 9) {
            if (s_uint(&f[7], PROTO_MEMBERS_MAX, &v) < 0 || s_u64(&f[8], &m->term) < 0)
                FAIL("bad hugz member");
            m->member = (uint32_t)v;
        }
        break;
    default:
        FAIL("unknown message type %u", m->type);
    }
#undef NFIELDS
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

/* ==== names ================================================================================== */

static const char *const s_presence[] = {"online", "away", "busy", "offline"};

const char *proto_presence_name(int p)
{
    return (p >= 0 && p < PRESENCE_STATUS_COUNT) ? s_presence[p] : NULL;
}

int proto_presence_parse(const char *s, size_t len)
{
    for (int i = 0; i < PRESENCE_STATUS_COUNT; i++)
        if (strlen(s_presence[i]) == len && memcmp(s_presence[i], s, len) == 0)
            return i;
    return -1;
}

const char *proto_status_name(int status)
{
    static const char *const names[] = {"ok",       "notfound", "bad request", "overload", "unavailable",
                                        "internal", "timeout",  "not leader"};
    return (status >= 0 && status <= PROTO_STATUS_MAX_) ? names[status] : "unknown";
}

const char *proto_type_name(int type)
{
    switch (type) {
    case PROTO_GET: return "GET";
    case PROTO_MGET: return "MGET";
    case PROTO_PUT: return "PUT";
    case PROTO_TOUCH: return "TOUCH";
    case PROTO_DEL: return "DEL";
    case PROTO_STATS: return "STATS";
    case PROTO_CATCHUP: return "CATCHUP";
    case PROTO_PING: return "PING";
    case PROTO_APPLY: return "APPLY";
    case PROTO_BATCH: return "BATCH";
    case PROTO_REPLY: return "REPLY";
    case PROTO_CATCHUP_REPLY: return "CATCHUP_REPLY";
    case PROTO_PONG: return "PONG";
    case PROTO_STATS_REPLY: return "STATS_REPLY";
    case PROTO_CHANGES: return "CHANGES";
    case PROTO_HUGZ: return "HUGZ";
    case PROTO_LEASE: return "LEASE";
    case PROTO_SESSIONS: return "SESSIONS";
    case PROTO_SESSIONS_REPLY: return "SESSIONS_REPLY";
    default: return "?";
    }
}
