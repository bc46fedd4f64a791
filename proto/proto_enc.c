/* proto_enc.c -- building messages: growable buffers, the msgpack encoder, one function per
 * message shape, and BATCH frames (see proto.h, PROTOCOL.md).
 *
 * Encoding cannot fail on valid inputs (only memory exhaustion aborts, in xrealloc): callers pass
 * values within the limits proto.h states, and the decoder (proto.c) is what enforces them on the
 * way in. The short 2.0 forms of records and commands are chosen here whenever nothing of sessions
 * is in them, so a 2.0 peer keeps reading what it always read. No state; reentrant.
 */
#include "proto.h"
#include "util.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void proto_enc_reply_raw_begin_abs(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t as_of, uint32_t n,
                                   uint32_t nabsent)
{
    proto_enc_header(e, nabsent ? 9 : 8, PROTO_REPLY, rid);
    proto_enc_u64(e, status);
    proto_enc_u64(e, as_of);
    proto_enc_array(e, n);
}

void proto_enc_reply_raw_end_abs(proto_enc_t *e, const char *err, uint32_t flags, const proto_absent_t *absent,
                                 uint32_t nabsent)
{
    size_t n = err ? strlen(err) : 0;
    proto_enc_str(e, err ? err : "", n > PROTO_ERRMSG_MAX ? PROTO_ERRMSG_MAX : n);
    proto_enc_u64(e, flags);
    if (!nabsent)
        return;
    proto_enc_array(e, nabsent);
    for (uint32_t i = 0; i < nabsent; i++) {
        proto_enc_array(e, 2);
        proto_enc_u64(e, absent[i].index);
        proto_enc_u64(e, absent[i].as_of);
    }
}

void proto_enc_reply_raw_begin(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t as_of, uint32_t n)
{
    proto_enc_reply_raw_begin_abs(e, rid, status, as_of, n, 0);
}

void proto_enc_reply_raw_end(proto_enc_t *e, const char *err, uint32_t flags)
{
    proto_enc_reply_raw_end_abs(e, err, flags, NULL, 0);
}

void proto_enc_reply_abs(proto_buf_t *b, uint64_t rid, uint8_t status, uint64_t as_of, const proto_record_t *recs,
                         uint32_t n, const char *err, uint32_t flags, const proto_absent_t *absent, uint32_t nabsent)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    proto_enc_reply_raw_begin_abs(&e, rid, status, as_of, n, nabsent);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_record(&e, &recs[i]);
    proto_enc_reply_raw_end_abs(&e, err, flags, absent, nabsent);
}

void proto_enc_reply(proto_buf_t *b, uint64_t rid, uint8_t status, uint64_t as_of, const proto_record_t *recs,
                     uint32_t n, const char *err, uint32_t flags)
{
    proto_enc_reply_abs(b, rid, status, as_of, recs, n, err, flags, NULL, 0);
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
