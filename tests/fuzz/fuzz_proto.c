/* fuzz_proto.c -- every msgpack decoder in proto/: proto_decode (all message types, BATCH parts
 * recursively), proto_peek_header, proto_rewrite_rid and proto_record_decode.
 *
 * Oracles besides the sanitizers:
 *   - a decoded message satisfies what PROTOCOL.md promises (ids valid, counts bounded, ...);
 *   - re-encoding it with proto's own encoders gives a frame that decodes to the same message,
 *     and encoding that again gives the same bytes (encode . decode is a fixpoint);
 *   - proto_peek_header agrees with proto_decode about type and request id;
 *   - proto_rewrite_rid changes the request id and nothing else a decoder can see;
 *   - proto_record_decode . proto_record_encode is the identity on a decoded record.
 */
#include "fuzz_common.h"
#include "proto.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    return 0;
}

static void s_check_record(const proto_record_t *r, bool whole)
{
    FZ_CHECK(r->uid_len == strlen(r->user_id));
    FZ_CHECK(util_valid_user_id(r->user_id, r->uid_len));
    FZ_CHECK(r->node_len == strlen(r->node_id));
    FZ_CHECK(r->msg_len <= PROTO_MESSAGE_MAX && r->user_id[r->uid_len] == '\0');
    FZ_CHECK(util_valid_message(r->message, r->msg_len));
    FZ_CHECK(r->ttl_s <= PROTO_TTL_MAX);
    if (whole) {
        FZ_CHECK(r->status < PRESENCE_STATUS_COUNT);
        FZ_CHECK(util_valid_node_id(r->node_id, r->node_len));
    }
}

static void s_check_change(const proto_change_t *c)
{
    FZ_CHECK(c->kind >= PROTO_CH_SET && c->kind <= PROTO_CH_TOUCH);
    FZ_CHECK(c->rec.version > 0);
    s_check_record(&c->rec, c->kind == PROTO_CH_SET);
}

/* What a decoder can see of a message must survive encode + decode. */
static bool s_rec_eq(const proto_record_t *a, const proto_record_t *b)
{
    return a->version == b->version && a->last_seen_us == b->last_seen_us && a->updated_at_us == b->updated_at_us &&
           a->expires_at_us == b->expires_at_us && a->ttl_s == b->ttl_s && a->status == b->status &&
           a->uid_len == b->uid_len && a->node_len == b->node_len && a->msg_len == b->msg_len &&
           memcmp(a->user_id, b->user_id, a->uid_len) == 0 && memcmp(a->node_id, b->node_id, a->node_len) == 0 &&
           memcmp(a->message, b->message, a->msg_len) == 0 && a->preferred_until_us == b->preferred_until_us &&
           a->message_expires_at_us == b->message_expires_at_us && a->pub_version == b->pub_version &&
           a->vis_last_seen_us == b->vis_last_seen_us && a->due_us == b->due_us && a->sessions == b->sessions &&
           a->source == b->source && a->rflags == b->rflags;
}

static bool s_str_eq(proto_str_t a, proto_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void s_check_same(const proto_msg_t *a, const proto_msg_t *b)
{
    /* The stream encoders always write request id 0 (PROTOCOL.md); decoders accept any. */
    bool rid0 = a->type == PROTO_CHANGES || a->type == PROTO_HUGZ;
    FZ_CHECK(a->type == b->type && (rid0 ? b->rid == 0 : a->rid == b->rid) && a->n == b->n);
    FZ_CHECK(a->status == b->status && a->mode == b->mode && a->done == b->done && a->flags == b->flags);
    FZ_CHECK(a->epoch == b->epoch && a->seq == b->seq && a->first_seq == b->first_seq && a->now_us == b->now_us &&
             a->max_items == b->max_items);
    FZ_CHECK(s_str_eq(a->key, b->key));
    for (uint32_t i = 0; i < a->n; i++) {
        if (a->keys)
            FZ_CHECK(s_str_eq(a->keys[i], b->keys[i]));
        if (a->recs) {
            /* PUT and TOUCH carry only some fields; the decoder leaves the rest as it found them. */
            if (a->type == PROTO_PUT || a->type == PROTO_TOUCH) {
                const proto_record_t *x = &a->recs[i], *y = &b->recs[i];
                FZ_CHECK(x->uid_len == y->uid_len && memcmp(x->user_id, y->user_id, x->uid_len) == 0);
                FZ_CHECK(x->ttl_s == y->ttl_s && x->node_len == y->node_len &&
                         memcmp(x->node_id, y->node_id, x->node_len) == 0);
                if (a->type == PROTO_PUT)
                    FZ_CHECK(x->status == y->status && x->msg_len == y->msg_len &&
                             memcmp(x->message, y->message, x->msg_len) == 0 && x->message_ttl_s == y->message_ttl_s);
                FZ_CHECK(x->sid_len == y->sid_len && memcmp(x->session_id, y->session_id, x->sid_len) == 0 &&
                         x->device_len == y->device_len && memcmp(x->device, y->device, x->device_len) == 0 &&
                         x->lease_id == y->lease_id && x->conn_id == y->conn_id);
            } else {
                FZ_CHECK(s_rec_eq(&a->recs[i], &b->recs[i]));
            }
        }
        if (a->changes) {
            FZ_CHECK(a->changes[i].kind == b->changes[i].kind);
            FZ_CHECK(s_rec_eq(&a->changes[i].rec, &b->changes[i].rec));
        }
        if (a->stats)
            FZ_CHECK(s_str_eq(a->stats[i].name, b->stats[i].name) && a->stats[i].value == b->stats[i].value);
        if (a->parts)
            FZ_CHECK(s_str_eq(a->parts[i], b->parts[i]));
        if (a->sessions)
            FZ_CHECK(memcmp(&a->sessions[i], &b->sessions[i], sizeof a->sessions[i]) == 0);
    }
    FZ_CHECK(a->lease_id == b->lease_id && a->op == b->op && a->ttl_ms == b->ttl_ms && strcmp(a->node, b->node) == 0);
    FZ_CHECK(a->nabsent == b->nabsent);
    for (uint32_t i = 0; i < a->nabsent; i++)
        FZ_CHECK(a->absent[i].index == b->absent[i].index && a->absent[i].as_of == b->absent[i].as_of);
}

/* Encode m with proto's encoders. Returns false for what the encoders cannot express exactly. */
static bool s_encode(const proto_msg_t *m, proto_buf_t *b)
{
    proto_enc_t e;
    proto_enc_init(&e, b);
    switch (m->type) {
    case PROTO_GET:
    case PROTO_DEL:
    case PROTO_SESSIONS:
        proto_enc_get(b, m->type, m->rid, m->key.p, m->key.len);
        return true;
    case PROTO_LEASE:
        proto_enc_lease(b, m->rid, m->lease_id, m->op, m->ttl_ms, m->node, strlen(m->node));
        return true;
    case PROTO_SESSIONS_REPLY:
        proto_enc_sessions_reply(b, m->rid, m->status, m->sessions, m->n);
        return true;
    case PROTO_MGET:
        proto_enc_keys(b, m->rid, m->keys, m->n);
        return true;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_APPLY:
        proto_enc_records_cmd(b, m->type, m->rid, m->recs, m->n);
        return true;
    case PROTO_STATS:
    case PROTO_PING:
        proto_enc_simple(b, m->type, m->rid);
        return true;
    case PROTO_CATCHUP:
        proto_enc_catchup(b, m->rid, m->epoch, m->seq, m->max_items, m->flags, m->first_seq, m->key.p, m->key.len);
        return true;
    case PROTO_REPLY: {
        /* The error text goes through a C string: only texts without NUL bytes round-trip. */
        if (m->key.len && memchr(m->key.p, '\0', m->key.len))
            return false;
        char *err = fz_strdup(m->key.p, m->key.len);
        proto_enc_reply_abs(b, m->rid, m->status, m->seq, m->recs, m->n, m->key.len ? err : NULL, m->flags, m->absent,
                            m->nabsent);
        free(err);
        return true;
    }
    case PROTO_CATCHUP_REPLY:
        proto_enc_catchup_reply_begin(&e, m->rid, m->status, m->epoch, m->mode, m->seq, m->done, m->n);
        for (uint32_t i = 0; i < m->n; i++)
            proto_enc_change(&e, &m->changes[i]);
        proto_enc_catchup_reply_end(&e, m->key.p, m->key.len);
        return true;
    case PROTO_CHANGES:
        proto_enc_changes_begin(&e, m->epoch, m->first_seq, m->seq, m->n);
        for (uint32_t i = 0; i < m->n; i++)
            proto_enc_change(&e, &m->changes[i]);
        return true;
    case PROTO_PONG:
    case PROTO_STATS_REPLY:
        proto_enc_stats(b, m->type, m->rid, m->status, m->stats, m->n);
        return true;
    case PROTO_HUGZ:
        if (m->flags)
            proto_enc_hugz_flags(b, m->epoch, m->seq, m->now_us, m->flags);
        else
            proto_enc_hugz(b, m->epoch, m->seq, m->now_us);
        return true;
    case PROTO_BATCH: {
        /* A batch of one is encoded as the lone message: not comparable. */
        if (m->n < 2 || m->rid != 0)
            return false;
        proto_batch_t bt;
        proto_batch_init(&bt);
        for (uint32_t i = 0; i < m->n; i++)
            proto_batch_add(&bt, m->parts[i].p, m->parts[i].len);
        proto_batch_encode(&bt, b);
        proto_batch_fini(&bt);
        return true;
    }
    default:
        FZ_CHECK(!"decoded a message of an unknown type");
        return false;
    }
}

static void s_check_msg(const proto_msg_t *m)
{
    FZ_CHECK(m->n <= PROTO_ITEMS_MAX);
    switch (m->type) {
    case PROTO_GET:
    case PROTO_DEL:
        FZ_CHECK(util_valid_user_id(m->key.p, m->key.len));
        break;
    case PROTO_MGET:
        for (uint32_t i = 0; i < m->n; i++)
            FZ_CHECK(util_valid_user_id(m->keys[i].p, m->keys[i].len));
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_APPLY:
        for (uint32_t i = 0; i < m->n; i++) {
            s_check_record(&m->recs[i], m->type == PROTO_APPLY);
            FZ_CHECK(util_valid_node_id(m->recs[i].node_id, m->recs[i].node_len));
            if (m->type == PROTO_PUT)
                FZ_CHECK(m->recs[i].ttl_s > 0 && m->recs[i].status < PRESENCE_STATUS_COUNT);
        }
        break;
    case PROTO_CATCHUP:
        FZ_CHECK(m->key.len <= PROTO_USER_ID_MAX);
        FZ_CHECK(m->key.len == 0 || util_valid_user_id(m->key.p, m->key.len));
        break;
    case PROTO_REPLY:
        FZ_CHECK(m->status <= PROTO_STATUS_MAX_ && m->key.len <= PROTO_ERRMSG_MAX);
        for (uint32_t i = 0; i < m->n; i++)
            s_check_record(&m->recs[i], true);
        /* the absent list: OK replies only, strictly increasing indexes, above the reply's as_of */
        FZ_CHECK(m->nabsent == 0 || (m->status == PROTO_OK && m->absent));
        FZ_CHECK((uint64_t)m->nabsent + m->n <= PROTO_ITEMS_MAX);
        for (uint32_t i = 0; i < m->nabsent; i++) {
            FZ_CHECK(m->absent[i].index < PROTO_ITEMS_MAX && m->absent[i].as_of > m->seq);
            FZ_CHECK(i == 0 || m->absent[i].index > m->absent[i - 1].index);
            FZ_CHECK(proto_reply_key_as_of(m, m->absent[i].index) == m->absent[i].as_of);
        }
        break;
    case PROTO_CATCHUP_REPLY:
    case PROTO_CHANGES:
        FZ_CHECK(m->mode <= PROTO_CATCHUP_SNAPSHOT_CONT && m->key.len <= PROTO_USER_ID_MAX);
        for (uint32_t i = 0; i < m->n; i++) {
            s_check_change(&m->changes[i]);
            if (m->type == PROTO_CHANGES || m->mode == PROTO_CATCHUP_INCREMENTAL) {
                if (i)
                    FZ_CHECK(m->changes[i].rec.version > m->changes[i - 1].rec.version);
            } else {
                FZ_CHECK(m->changes[i].kind == PROTO_CH_SET);
            }
        }
        if (m->type == PROTO_CHANGES) {
            FZ_CHECK(m->n >= 1 && m->first_seq >= 1 && m->first_seq <= m->seq);
            FZ_CHECK(m->changes[0].rec.version >= m->first_seq && m->changes[m->n - 1].rec.version == m->seq);
        }
        break;
    case PROTO_PONG:
    case PROTO_STATS_REPLY:
        FZ_CHECK(m->n <= PROTO_STATS_MAX);
        for (uint32_t i = 0; i < m->n; i++)
            FZ_CHECK(m->stats[i].name.len <= PROTO_STAT_NAME_MAX);
        break;
    case PROTO_BATCH:
        FZ_CHECK(m->n >= 1);
        for (uint32_t i = 0; i < m->n; i++)
            FZ_CHECK(m->parts[i].len > 0);
        break;
    default:
        break;
    }
}

static void s_roundtrip(const proto_msg_t *m)
{
    proto_buf_t b1, b2;
    proto_buf_init(&b1);
    proto_buf_init(&b2);
    if (s_encode(m, &b1)) {
        proto_msg_t m1;
        int rc = proto_decode(b1.data, b1.len, &m1);
        if (rc != PROTO_DEC_OK)
            fprintf(stderr, "re-encoded %s does not decode: %s\n", proto_type_name(m->type), m1.err);
        FZ_CHECK(rc == PROTO_DEC_OK);
        s_check_same(m, &m1);
        FZ_CHECK(s_encode(&m1, &b2));
        FZ_CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
        proto_msg_fini(&m1);
    }
    proto_buf_fini(&b1);
    proto_buf_fini(&b2);
}

static void s_decode(const uint8_t *data, size_t size, int depth)
{
    proto_msg_t m;
    int rc = proto_decode(data, size, &m);
    FZ_CHECK(rc == PROTO_DEC_OK || rc == PROTO_MALFORMED || rc == PROTO_EVERSION);
    FZ_CHECK(memchr(m.err, '\0', sizeof m.err) != NULL);
    uint8_t ptype;
    uint64_t prid;
    int peek = proto_peek_header(data, size, &ptype, &prid);
    if (rc == PROTO_DEC_OK) {
        FZ_CHECK(rc == PROTO_DEC_OK && m.err[0] == '\0');
        s_check_msg(&m);
        s_roundtrip(&m);
        if (peek == 0)
            FZ_CHECK(ptype == m.type && prid == m.rid);
        if (m.type == PROTO_BATCH && depth == 0)
            for (uint32_t i = 0; i < m.n; i++)
                s_decode((const uint8_t *)m.parts[i].p, m.parts[i].len, depth + 1);
    } else {
        /* A failed decode owns nothing. */
        FZ_CHECK(!m.keys && !m.recs && !m.changes && !m.stats && !m.parts && m.n == 0);
        FZ_CHECK(!m.absent && m.nabsent == 0);
    }
    if (peek == 0 && depth == 0) {
        proto_buf_t out;
        proto_buf_init(&out);
        uint64_t nrid = prid ^ 0x5a5a5a5a5a5a5a5aULL;
        if (proto_rewrite_rid(data, size, nrid, &out) == 0) {
            proto_msg_t m2;
            int rc2 = proto_decode(out.data, out.len, &m2);
            if (rc == PROTO_DEC_OK) {
                FZ_CHECK(rc2 == PROTO_DEC_OK);
                FZ_CHECK(m2.type == m.type && m2.rid == nrid && m2.n == m.n);
            } else {
                FZ_CHECK(rc2 != PROTO_DEC_OK);
            }
            proto_msg_fini(&m2);
        }
        proto_buf_fini(&out);
    }
    proto_msg_fini(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_decode(data, size, 0);

    proto_record_t r;
    if (proto_record_decode(data, size, &r) == 0) {
        s_check_record(&r, true);
        proto_buf_t b;
        proto_buf_init(&b);
        proto_record_encode(&b, &r);
        proto_record_t r2;
        FZ_CHECK(proto_record_decode(b.data, b.len, &r2) == 0);
        FZ_CHECK(s_rec_eq(&r, &r2));
        proto_buf_fini(&b);
    }
    return 0;
}
