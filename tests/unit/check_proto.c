/* check_proto.c -- Check suite for the wire format (proto/proto.h) and stats lists (proto/stats.h).
 *
 * Round trips: every message type is encoded with the proto_enc_* helpers, decoded with
 * proto_decode and compared field by field. Strictness: every prefix of every valid message,
 * oversized frames, a wrong-typed value in every position of every message (found by walking the
 * decoded msgpack tree and re-packing it with one node replaced), wrong element counts, unknown
 * types, other protocol versions, hostile container counts, deep nesting, trailing bytes, ext and
 * float types, invalid ids/messages/ttls and malformed change ranges. A seeded mutation fuzzer
 * (bit flips, byte inserts/deletes/overwrites) requires that decoding never crashes and either
 * succeeds with values that respect every documented limit or reports MALFORMED/EVERSION; run it
 * under the ASan build too (build-asan/tests/unit/check_proto).
 *
 * Single-threaded; no I/O besides Check's own.
 */
#include "proto.h"
#include "stats.h"
#include "util.h"

#include <check.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------------- */

static uint64_t s_rng(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#define T0 1700000000000000ULL

/* A record whose every field differs from the others, so swapped fields are noticed. */
static proto_record_t s_rec(unsigned i)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    char b[300];
    int n = snprintf(b, sizeof b, "user-%u@example.com", i);
    proto_record_set_uid(&r, b, (size_t)n);
    n = snprintf(b, sizeof b, "node-%u", i % 7);
    proto_record_set_node(&r, b, (size_t)n);
    n = snprintf(b, sizeof b, i % 3 ? "caf\xc3\xa9 \xf0\x9f\x98\x80 #%u" : "", i);
    proto_record_set_msg(&r, b, (size_t)n);
    r.status = (uint8_t)(i % PRESENCE_STATUS_COUNT);
    r.last_seen_us = T0 + i * 1000003ULL;
    r.updated_at_us = T0 - 17 + i;
    r.expires_at_us = T0 + 3600000000ULL + i;
    r.ttl_s = 1 + (i * 37) % PROTO_TTL_MAX;
    r.version = 1000 + i;
    return r;
}

/* A record with limit-sized strings and extreme numbers. */
static proto_record_t s_rec_max(void)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    char b[PROTO_MESSAGE_MAX];
    memset(b, 'u', sizeof b);
    proto_record_set_uid(&r, b, PROTO_USER_ID_MAX);
    memset(b, 'n', sizeof b);
    proto_record_set_node(&r, b, PROTO_NODE_ID_MAX);
    for (int i = 0; i < PROTO_MESSAGE_MAX; i += 2) { /* 128 x U+00E9 = 256 bytes */
        b[i] = (char)0xc3;
        b[i + 1] = (char)0xa9;
    }
    proto_record_set_msg(&r, b, PROTO_MESSAGE_MAX);
    r.status = PRESENCE_OFFLINE;
    /* The largest values a store can write (the decoder refuses anything beyond them). */
    r.last_seen_us = PROTO_TIME_MAX;
    r.updated_at_us = 0;
    r.expires_at_us = PROTO_TIME_MAX - 1;
    r.ttl_s = PROTO_TTL_MAX;
    r.version = PROTO_VERSION_MAX;
    return r;
}

static void s_rec_eq(const proto_record_t *a, const proto_record_t *b)
{
    ck_assert_uint_eq(a->uid_len, b->uid_len);
    ck_assert_str_eq(a->user_id, b->user_id);
    ck_assert_uint_eq(a->status, b->status);
    ck_assert_uint_eq(a->msg_len, b->msg_len);
    ck_assert_str_eq(a->message, b->message);
    ck_assert_uint_eq(a->last_seen_us, b->last_seen_us);
    ck_assert_uint_eq(a->updated_at_us, b->updated_at_us);
    ck_assert_uint_eq(a->expires_at_us, b->expires_at_us);
    ck_assert_uint_eq(a->node_len, b->node_len);
    ck_assert_str_eq(a->node_id, b->node_id);
    ck_assert_uint_eq(a->ttl_s, b->ttl_s);
    ck_assert_uint_eq(a->version, b->version);
}

static int s_dec(const proto_buf_t *b, proto_msg_t *m)
{
    return proto_decode(b->data, b->len, m);
}

/* Decode and require success, with the reason on failure. */
static void s_dec_ok(const proto_buf_t *b, proto_msg_t *m)
{
    int rc = s_dec(b, m);
    ck_assert_msg(rc == PROTO_DEC_OK, "decode failed (%d): %s", rc, m->err);
}

/* Decode raw bytes that must be rejected as malformed. */
static void s_expect_malformed(const void *p, size_t len, const char *what)
{
    proto_msg_t m;
    int rc = proto_decode(p, len, &m);
    ck_assert_msg(rc == PROTO_MALFORMED, "%s: decode returned %d (want MALFORMED)", what, rc);
    ck_assert_msg(m.err[0] != '\0', "%s: no reason given", what);
    ck_assert_ptr_null(m.recs);
    ck_assert_ptr_null(m.keys);
    ck_assert_ptr_null(m.changes);
    ck_assert_ptr_null(m.stats);
    ck_assert_ptr_null(m.absent);
    ck_assert_uint_eq(m.nabsent, 0);
    proto_msg_fini(&m);
}

static proto_change_t s_ch_set(unsigned i, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_SET;
    c.rec = s_rec(i);
    c.rec.version = seq;
    return c;
}

static proto_change_t s_ch_del(const char *uid, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_DEL;
    proto_record_set_uid(&c.rec, uid, strlen(uid));
    c.rec.version = seq;
    return c;
}

static proto_change_t s_ch_touch(unsigned i, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_TOUCH;
    proto_record_t r = s_rec(i);
    proto_record_set_uid(&c.rec, r.user_id, r.uid_len);
    proto_record_set_node(&c.rec, r.node_id, r.node_len);
    c.rec.last_seen_us = r.last_seen_us;
    c.rec.expires_at_us = r.expires_at_us;
    c.rec.ttl_s = r.ttl_s;
    c.rec.version = seq;
    return c;
}

/* Compare a decoded change with what was encoded, by kind. */
static void s_change_eq(const proto_change_t *got, const proto_change_t *want)
{
    ck_assert_uint_eq(got->kind, want->kind);
    ck_assert_uint_eq(got->rec.version, want->rec.version);
    ck_assert_str_eq(got->rec.user_id, want->rec.user_id);
    ck_assert_uint_eq(got->rec.uid_len, want->rec.uid_len);
    switch (want->kind) {
    case PROTO_CH_SET:
        s_rec_eq(&got->rec, &want->rec);
        break;
    case PROTO_CH_DEL:
        ck_assert_uint_eq(got->rec.msg_len, 0);
        ck_assert_uint_eq(got->rec.node_len, 0);
        break;
    case PROTO_CH_TOUCH:
        ck_assert_uint_eq(got->rec.last_seen_us, want->rec.last_seen_us);
        ck_assert_uint_eq(got->rec.expires_at_us, want->rec.expires_at_us);
        ck_assert_str_eq(got->rec.node_id, want->rec.node_id);
        ck_assert_uint_eq(got->rec.node_len, want->rec.node_len);
        ck_assert_uint_eq(got->rec.ttl_s, want->rec.ttl_s);
        ck_assert_uint_eq(got->rec.msg_len, 0);
        break;
    default:
        ck_abort_msg("unexpected kind %u", want->kind);
    }
}

/* One valid encoding of every message type (the corpus for the structural and fuzz tests). */
enum { CORPUS_N = 17 };
static void s_corpus(proto_buf_t *out /* [CORPUS_N] */)
{
    for (int i = 0; i < CORPUS_N; i++)
        proto_buf_init(&out[i]);
    proto_record_t recs[3] = {s_rec(1), s_rec(2), s_rec(3)};
    proto_str_t keys[3] = {{"alice", 5}, {"bob", 3}, {"carol@x.org", 11}};
    proto_stat_t stats[2] = {{{"cache_hits_total", 16}, 42}, {{"x{le=\"0.5\"}", 11}, 7}};
    proto_enc_t e;
    int k = 0;
    proto_enc_get(&out[k++], PROTO_GET, 11, "alice", 5);
    proto_enc_get(&out[k++], PROTO_DEL, 12, "bob", 3);
    proto_enc_keys(&out[k++], 13, keys, 3);
    proto_enc_records_cmd(&out[k++], PROTO_PUT, 14, recs, 2);
    proto_enc_records_cmd(&out[k++], PROTO_TOUCH, 15, recs, 2);
    proto_enc_records_cmd(&out[k++], PROTO_APPLY, 16, recs, 2);
    proto_enc_simple(&out[k++], PROTO_STATS, 17);
    proto_enc_simple(&out[k++], PROTO_PING, 18);
    proto_enc_catchup(&out[k++], 19, 0x1234, 500, 1000, PROTO_CATCHUP_F_SNAP_CONT, 400, "carol", 5);
    proto_enc_reply(&out[k++], 20, PROTO_OK, 99, recs, 2, "why not", PROTO_REPLY_F_STALE);
    proto_enc_init(&e, &out[k++]);
    proto_enc_catchup_reply_begin(&e, 21, PROTO_OK, 0x1234, PROTO_CATCHUP_INCREMENTAL, 12, true, 3);
    proto_change_t c1 = s_ch_set(4, 10), c2 = s_ch_del("gone", 11), c3 = s_ch_touch(5, 12);
    proto_enc_change(&e, &c1);
    proto_enc_change(&e, &c2);
    proto_enc_change(&e, &c3);
    proto_enc_catchup_reply_end(&e, "", 0);
    proto_enc_stats(&out[k++], PROTO_PONG, 22, PROTO_OK, stats, 2);
    proto_enc_stats(&out[k++], PROTO_STATS_REPLY, 23, PROTO_OK, stats, 2);
    proto_enc_init(&e, &out[k++]);
    proto_enc_changes_begin(&e, 0x1234, 10, 12, 3);
    proto_enc_change(&e, &c1);
    proto_enc_change(&e, &c2);
    proto_enc_change(&e, &c3);
    proto_enc_hugz(&out[k++], 0x1234, 12, T0);
    proto_enc_reply(&out[k++], 24, PROTO_NOTFOUND, 5, NULL, 0, NULL, 0);
    /* BATCH of two whole messages (the first two of the corpus) */
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_batch_add(&bt, out[0].data, out[0].len);
    proto_batch_add(&bt, out[1].data, out[1].len);
    proto_batch_encode(&bt, &out[k++]);
    proto_batch_fini(&bt);
    ck_assert_int_eq(k, CORPUS_N);
}

static void s_corpus_fini(proto_buf_t *c)
{
    for (int i = 0; i < CORPUS_N; i++)
        proto_buf_fini(&c[i]);
}

/* ---------------------------------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_rt_get_del)
{
    static const uint64_t rids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffffULL, 0x100000000ULL, UINT64_MAX};
    char big[PROTO_USER_ID_MAX];
    memset(big, 'k', sizeof big);
    for (size_t i = 0; i < ARRAY_LEN(rids); i++) {
        for (int t = 0; t < 2; t++) {
            uint8_t type = t ? PROTO_DEL : PROTO_GET;
            proto_buf_t b;
            proto_buf_init(&b);
            const char *key = i % 2 ? "user.name+tag@example.com" : big;
            size_t klen = i % 2 ? strlen(key) : sizeof big;
            proto_enc_get(&b, type, rids[i], key, klen);
            proto_msg_t m;
            s_dec_ok(&b, &m);
            ck_assert_uint_eq(m.type, type);
            ck_assert_uint_eq(m.rid, rids[i]);
            ck_assert_uint_eq(m.key.len, klen);
            ck_assert_mem_eq(m.key.p, key, klen);
            /* the key is borrowed: it points into the frame */
            ck_assert(m.key.p >= b.data && m.key.p < b.data + b.len);
            proto_msg_fini(&m);
            proto_buf_fini(&b);
        }
    }
}
END_TEST

START_TEST(test_rt_mget)
{
    static const uint32_t counts[] = {0, 1, 3, 1000, PROTO_ITEMS_MAX};
    for (size_t c = 0; c < ARRAY_LEN(counts); c++) {
        uint32_t n = counts[c];
        proto_str_t *keys = calloc(n ? n : 1, sizeof *keys);
        char *store = malloc((size_t)n * 16 + 1);
        for (uint32_t i = 0; i < n; i++) {
            keys[i].p = store + (size_t)i * 16;
            keys[i].len = (uint32_t)snprintf(store + (size_t)i * 16, 16, "k%u", i);
        }
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_keys(&b, 77, keys, n);
        proto_msg_t m;
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.type, PROTO_MGET);
        ck_assert_uint_eq(m.rid, 77);
        ck_assert_uint_eq(m.n, n);
        for (uint32_t i = 0; i < n; i++) {
            ck_assert_uint_eq(m.keys[i].len, keys[i].len);
            ck_assert_mem_eq(m.keys[i].p, keys[i].p, keys[i].len);
        }
        proto_msg_fini(&m);
        ck_assert_ptr_null(m.keys);
        ck_assert_uint_eq(m.n, 0);
        proto_buf_fini(&b);
        free(keys);
        free(store);
    }
}
END_TEST

START_TEST(test_rt_put_touch_apply)
{
    enum { N = 50 };
    proto_record_t recs[N + 1];
    for (unsigned i = 0; i < N; i++)
        recs[i] = s_rec(i);
    recs[N] = s_rec_max();
    recs[3].ttl_s = 0; /* TOUCH: 0 = keep the record's ttl */
    static const uint8_t types[] = {PROTO_PUT, PROTO_TOUCH, PROTO_APPLY};
    for (size_t t = 0; t < ARRAY_LEN(types); t++) {
        proto_record_t in[N + 1];
        memcpy(in, recs, sizeof in);
        if (types[t] != PROTO_TOUCH)
            in[3].ttl_s = 5; /* PUT and whole records need ttl >= 1 */
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_records_cmd(&b, types[t], 1000 + t, in, N + 1);
        proto_msg_t m;
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.type, types[t]);
        ck_assert_uint_eq(m.rid, 1000 + t);
        ck_assert_uint_eq(m.n, N + 1);
        for (unsigned i = 0; i <= N; i++) {
            const proto_record_t *g = &m.recs[i], *w = &in[i];
            ck_assert_str_eq(g->user_id, w->user_id);
            ck_assert_uint_eq(g->uid_len, w->uid_len);
            ck_assert_str_eq(g->node_id, w->node_id);
            ck_assert_uint_eq(g->node_len, w->node_len);
            ck_assert_uint_eq(g->ttl_s, w->ttl_s);
            if (types[t] == PROTO_APPLY) {
                s_rec_eq(g, w);
            } else if (types[t] == PROTO_PUT) {
                ck_assert_uint_eq(g->status, w->status);
                ck_assert_str_eq(g->message, w->message);
                ck_assert_uint_eq(g->msg_len, w->msg_len);
                /* fields a PUT does not carry are zero */
                ck_assert_uint_eq(g->version, 0);
                ck_assert_uint_eq(g->last_seen_us, 0);
                ck_assert_uint_eq(g->expires_at_us, 0);
            } else {
                ck_assert_uint_eq(g->status, 0);
                ck_assert_uint_eq(g->msg_len, 0);
                ck_assert_uint_eq(g->version, 0);
            }
        }
        proto_msg_fini(&m);
        proto_buf_fini(&b);
    }
}
END_TEST

/* Command ids (PROTOCOL.md "Command ids"): PUT, TOUCH and DEL carry one after the deadline (which
 * is then always present, 0 = none); it decodes byte for byte; a wrong length, a string, or an id on
 * APPLY/GET is refused. HUGZ may name its member (1..PROTO_MEMBERS_MAX); ENOTLEADER is a status. */
START_TEST(test_rt_cmd_id_member)
{
    uint8_t id[PROTO_CMD_ID_LEN];
    for (int i = 0; i < PROTO_CMD_ID_LEN; i++)
        id[i] = (uint8_t)(0xa0 + i);
    proto_record_t rec = s_rec(2);
    static const uint8_t types[] = {PROTO_PUT, PROTO_TOUCH};
    static const uint64_t dls[] = {0, 1700000000000000ULL};
    for (size_t t = 0; t < ARRAY_LEN(types); t++) {
        for (size_t d = 0; d < ARRAY_LEN(dls); d++) {
            proto_buf_t b;
            proto_buf_init(&b);
            proto_enc_records_cmd_id(&b, types[t], 11, &rec, 1, dls[d], id);
            proto_msg_t m;
            s_dec_ok(&b, &m);
            ck_assert_uint_eq(m.type, types[t]);
            ck_assert_uint_eq(m.n, 1);
            ck_assert_uint_eq(m.deadline_us, dls[d]);
            ck_assert(m.has_cmd_id);
            ck_assert_mem_eq(m.cmd_id, id, PROTO_CMD_ID_LEN);
            proto_msg_fini(&m);
            /* Without an id: none decoded. */
            proto_buf_reset(&b);
            proto_enc_records_cmd_id(&b, types[t], 11, &rec, 1, dls[d], NULL);
            s_dec_ok(&b, &m);
            ck_assert(!m.has_cmd_id);
            proto_msg_fini(&m);
            proto_buf_fini(&b);
        }
    }
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get_id(&b, PROTO_DEL, 12, "bob", 3, 0, id);
    proto_msg_t m;
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_DEL);
    ck_assert_uint_eq(m.deadline_us, 0);
    ck_assert(m.has_cmd_id);
    ck_assert_mem_eq(m.cmd_id, id, PROTO_CMD_ID_LEN);
    ck_assert_mem_eq(m.key.p, "bob", 3);
    proto_msg_fini(&m);
    /* GET and APPLY never carry one (the encoders leave it out). */
    proto_buf_reset(&b);
    proto_enc_get_id(&b, PROTO_GET, 13, "bob", 3, 0, id);
    s_dec_ok(&b, &m);
    ck_assert(!m.has_cmd_id);
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_records_cmd_id(&b, PROTO_APPLY, 14, &rec, 1, 5, id);
    s_dec_ok(&b, &m);
    ck_assert(!m.has_cmd_id);
    proto_msg_fini(&m);
    /* An id of 15 bytes, one that is a string, a DEL with 7 fields: malformed. */
    proto_enc_t e;
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 6, PROTO_DEL, 5);
    proto_enc_str(&e, "alice", 5);
    proto_enc_u64(&e, 0);
    proto_enc_str(&e, "0123456789abcde", 15);
    s_expect_malformed(b.data, b.len, "command id as a string");
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 7, PROTO_DEL, 5);
    proto_enc_str(&e, "alice", 5);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 0);
    s_expect_malformed(b.data, b.len, "DEL with 7 fields");
    /* HUGZ naming its member; one beyond PROTO_MEMBERS_MAX is refused. */
    proto_buf_reset(&b);
    proto_enc_hugz_member(&b, 77, 1000, 5, 0, 3, 12);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_HUGZ);
    ck_assert_uint_eq(m.epoch, 77);
    ck_assert_uint_eq(m.seq, 1000);
    ck_assert_uint_eq(m.member, 3);
    ck_assert_uint_eq(m.term, 12);
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_hugz_member(&b, 77, 1000, 5, 0, PROTO_MEMBERS_MAX + 1, 1);
    s_expect_malformed(b.data, b.len, "HUGZ member out of range");
    /* ENOTLEADER names the leader in as_of. */
    proto_buf_reset(&b);
    proto_enc_reply(&b, 15, PROTO_ENOTLEADER, 2, NULL, 0, "not leader", 0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.status, PROTO_ENOTLEADER);
    ck_assert_uint_eq(m.seq, 2);
    proto_msg_fini(&m);
    ck_assert_str_eq(proto_status_name(PROTO_ENOTLEADER), "not leader");
    proto_buf_fini(&b);
}
END_TEST

/* Writes may carry the sender's deadline (PROTOCOL.md "Write deadline"); 0 encodes exactly as the
 * plain encoders; GET and APPLY have no such field; a deadline that is not an integer is refused. */
START_TEST(test_rt_write_deadline)
{
    static const uint64_t dls[] = {1, 1700000000000000ULL, UINT64_MAX};
    proto_record_t rec = s_rec(1);
    rec.ttl_s = 30;
    for (size_t i = 0; i < ARRAY_LEN(dls); i++) {
        static const uint8_t types[] = {PROTO_PUT, PROTO_TOUCH};
        for (size_t t = 0; t < ARRAY_LEN(types); t++) {
            proto_buf_t b;
            proto_buf_init(&b);
            proto_enc_records_cmd_dl(&b, types[t], 9, &rec, 1, dls[i]);
            proto_msg_t m;
            s_dec_ok(&b, &m);
            ck_assert_uint_eq(m.type, types[t]);
            ck_assert_uint_eq(m.n, 1);
            ck_assert_uint_eq(m.deadline_us, dls[i]);
            proto_msg_fini(&m);
            proto_buf_fini(&b);
        }
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_get_dl(&b, PROTO_DEL, 10, "alice", 5, dls[i]);
        proto_msg_t m;
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.type, PROTO_DEL);
        ck_assert_uint_eq(m.deadline_us, dls[i]);
        ck_assert_mem_eq(m.key.p, "alice", 5);
        proto_msg_fini(&m);
        proto_buf_fini(&b);
    }
    /* 0 = no deadline: byte for byte the plain encoding, decoded as 0. */
    proto_buf_t a, b;
    proto_buf_init(&a);
    proto_buf_init(&b);
    proto_enc_records_cmd(&a, PROTO_PUT, 3, &rec, 1);
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 3, &rec, 1, 0);
    ck_assert_uint_eq(a.len, b.len);
    ck_assert_mem_eq(a.data, b.data, a.len);
    proto_msg_t m;
    s_dec_ok(&a, &m);
    ck_assert_uint_eq(m.deadline_us, 0);
    proto_msg_fini(&m);
    /* APPLY never carries one (the encoder leaves it out). */
    proto_buf_reset(&a);
    proto_enc_records_cmd_dl(&a, PROTO_APPLY, 4, &rec, 1, 12345);
    s_dec_ok(&a, &m);
    ck_assert_uint_eq(m.deadline_us, 0);
    proto_msg_fini(&m);
    /* A fifth field on GET, or on APPLY, or a deadline that is a string: malformed. */
    proto_enc_t e;
    proto_buf_reset(&a);
    proto_enc_init(&e, &a);
    proto_enc_header(&e, 5, PROTO_GET, 5);
    proto_enc_str(&e, "alice", 5);
    proto_enc_u64(&e, 99);
    s_expect_malformed(a.data, a.len, "GET with a deadline");
    proto_buf_reset(&a);
    proto_enc_init(&e, &a);
    proto_enc_header(&e, 5, PROTO_DEL, 5);
    proto_enc_str(&e, "alice", 5);
    proto_enc_str(&e, "soon", 4);
    s_expect_malformed(a.data, a.len, "DEL with a string deadline");
    proto_buf_reset(&a);
    proto_enc_init(&e, &a);
    proto_enc_header(&e, 6, PROTO_DEL, 5);
    proto_enc_str(&e, "alice", 5);
    proto_enc_u64(&e, 1);
    proto_enc_u64(&e, 2);
    s_expect_malformed(a.data, a.len, "DEL with six fields");
    proto_buf_fini(&a);
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_rt_simple_catchup_hugz)
{
    proto_buf_t b;
    proto_msg_t m;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_STATS, 5);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_STATS);
    ck_assert_uint_eq(m.rid, 5);
    proto_msg_fini(&m);

    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, UINT64_MAX);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_PING);
    ck_assert_uint_eq(m.rid, UINT64_MAX);
    proto_msg_fini(&m);

    proto_buf_reset(&b);
    proto_enc_catchup(&b, 9, 0x7fffffffffffffffULL, 123456789, 5000, PROTO_CATCHUP_F_NO_DATA | PROTO_CATCHUP_F_SNAP_CONT,
                      4444, "dave@example.com", 16);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_CATCHUP);
    ck_assert_uint_eq(m.rid, 9);
    ck_assert_uint_eq(m.epoch, 0x7fffffffffffffffULL);
    ck_assert_uint_eq(m.seq, 123456789);
    ck_assert_uint_eq(m.max_items, 5000);
    ck_assert_uint_eq(m.flags, PROTO_CATCHUP_F_NO_DATA | PROTO_CATCHUP_F_SNAP_CONT);
    ck_assert_uint_eq(m.first_seq, 4444);
    ck_assert_uint_eq(m.key.len, 16);
    ck_assert_mem_eq(m.key.p, "dave@example.com", 16);
    proto_msg_fini(&m);

    proto_buf_reset(&b);
    proto_enc_catchup(&b, 0, 0, 0, 0, UINT32_MAX, 0, NULL, 0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.flags, UINT32_MAX);
    ck_assert_uint_eq(m.key.len, 0);
    proto_msg_fini(&m);
    /* an invalid user id as the snapshot cursor */
    proto_buf_reset(&b);
    proto_enc_catchup(&b, 1, 1, 1, 1, PROTO_CATCHUP_F_SNAP_CONT, 1, "bad id", 6);
    ck_assert_int_eq(proto_decode(b.data, b.len, &m), PROTO_MALFORMED);
    proto_msg_fini(&m);

    proto_buf_reset(&b);
    proto_enc_hugz(&b, 42, UINT64_MAX, T0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_HUGZ);
    ck_assert_uint_eq(m.rid, 0);
    ck_assert_uint_eq(m.epoch, 42);
    ck_assert_uint_eq(m.seq, UINT64_MAX);
    ck_assert_uint_eq(m.now_us, T0);
    proto_msg_fini(&m);
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_rt_reply)
{
    proto_record_t recs[4] = {s_rec(7), s_rec(8), s_rec(9), s_rec_max()};
    proto_buf_t b;
    proto_msg_t m;
    proto_buf_init(&b);
    for (uint8_t st = PROTO_OK; st <= PROTO_STATUS_MAX_; st++) {
        proto_buf_reset(&b);
        proto_enc_reply(&b, 300 + st, st, 1234 + st, recs, 4, st ? "something failed" : NULL, st & 1);
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.type, PROTO_REPLY);
        ck_assert_uint_eq(m.rid, 300 + st);
        ck_assert_uint_eq(m.status, st);
        ck_assert_uint_eq(m.seq, 1234 + st);
        ck_assert_uint_eq(m.flags, st & 1);
        ck_assert_uint_eq(m.n, 4);
        for (int i = 0; i < 4; i++)
            s_rec_eq(&m.recs[i], &recs[i]);
        if (st) {
            ck_assert_uint_eq(m.key.len, strlen("something failed"));
            ck_assert_mem_eq(m.key.p, "something failed", m.key.len);
        } else {
            ck_assert_uint_eq(m.key.len, 0);
        }
        proto_msg_fini(&m);
    }
    /* an over-long error text is truncated to PROTO_ERRMSG_MAX by the encoder, so it still decodes */
    char longerr[1000];
    memset(longerr, 'e', sizeof longerr - 1);
    longerr[sizeof longerr - 1] = '\0';
    proto_buf_reset(&b);
    proto_enc_reply(&b, 1, PROTO_EINTERNAL, 0, NULL, 0, longerr, 0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.key.len, PROTO_ERRMSG_MAX);
    ck_assert_uint_eq(m.n, 0);
    proto_msg_fini(&m);

    /* raw records (the cache's path): the same bytes as proto_enc_reply */
    proto_buf_t raw, ref;
    proto_buf_init(&raw);
    proto_buf_init(&ref);
    proto_enc_reply(&ref, 55, PROTO_OK, 66, recs, 3, "x", PROTO_REPLY_F_STALE);
    proto_enc_t e;
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_reply_raw_begin(&e, 55, PROTO_OK, 66, 3);
    for (int i = 0; i < 3; i++) {
        proto_buf_reset(&raw);
        proto_record_encode(&raw, &recs[i]);
        proto_enc_raw(&e, raw.data, raw.len);
    }
    proto_enc_reply_raw_end(&e, "x", PROTO_REPLY_F_STALE);
    ck_assert_uint_eq(b.len, ref.len);
    ck_assert_mem_eq(b.data, ref.data, b.len);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.flags, PROTO_REPLY_F_STALE);
    for (int i = 0; i < 3; i++)
        s_rec_eq(&m.recs[i], &recs[i]);
    proto_msg_fini(&m);
    proto_buf_fini(&raw);
    proto_buf_fini(&ref);
    proto_buf_fini(&b);
}
END_TEST

/* REPLY's optional absent list (an MGET's read-through "not found" keys): round trips with and
 * without it, the raw (cache) path, the per-key as_of lookup, the limits, and a relay's rewrite. */
START_TEST(test_rt_reply_absent)
{
    proto_record_t recs[2] = {s_rec(1), s_rec(3)};
    proto_absent_t abs[3] = {{1, 150}, {2, 151}, {PROTO_ITEMS_MAX - 1, UINT64_MAX}};
    proto_buf_t b, ref;
    proto_msg_t m;
    proto_buf_init(&b);
    proto_buf_init(&ref);
    proto_enc_reply_abs(&b, 77, PROTO_OK, 100, recs, 2, NULL, 0, abs, 3);
    ck_assert_uint_eq((uint8_t)b.data[0], 0x99); /* nine fields */
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_REPLY);
    ck_assert_uint_eq(m.rid, 77);
    ck_assert_uint_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.seq, 100);
    ck_assert_uint_eq(m.n, 2);
    s_rec_eq(&m.recs[0], &recs[0]);
    s_rec_eq(&m.recs[1], &recs[1]);
    ck_assert_uint_eq(m.nabsent, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(m.absent[i].index, abs[i].index);
        ck_assert_uint_eq(m.absent[i].as_of, abs[i].as_of);
    }
    /* the per-key as_of: an absent entry's, else the reply's */
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 0), 100);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 1), 150);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 2), 151);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 3), 100);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, PROTO_ITEMS_MAX - 2), 100);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, PROTO_ITEMS_MAX - 1), UINT64_MAX);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, PROTO_ITEMS_MAX), 100);
    proto_msg_fini(&m);
    ck_assert_ptr_null(m.absent);
    ck_assert_uint_eq(m.nabsent, 0);

    /* a relay rewrites the request id and keeps the list */
    ck_assert_int_eq(proto_rewrite_rid(b.data, b.len, 1ull << 40, &ref), 0);
    s_dec_ok(&ref, &m);
    ck_assert_uint_eq(m.rid, 1ull << 40);
    ck_assert_uint_eq(m.nabsent, 3);
    ck_assert_uint_eq(m.absent[1].as_of, 151);
    proto_msg_fini(&m);

    /* every prefix is refused */
    for (size_t k = 0; k < b.len; k++) {
        char *p = malloc(k ? k : 1);
        memcpy(p, b.data, k);
        s_expect_malformed(p, k, "absent reply cut short");
        free(p);
    }

    /* the raw (cache) path gives the same bytes */
    proto_buf_t raw, rb;
    proto_buf_init(&raw);
    proto_buf_init(&rb);
    proto_enc_t e;
    proto_enc_init(&e, &rb);
    proto_enc_reply_raw_begin_abs(&e, 77, PROTO_OK, 100, 2, 3);
    for (int i = 0; i < 2; i++) {
        proto_buf_reset(&raw);
        proto_record_encode(&raw, &recs[i]);
        proto_enc_raw(&e, raw.data, raw.len);
    }
    proto_enc_reply_raw_end_abs(&e, NULL, 0, abs, 3);
    ck_assert_uint_eq(rb.len, b.len);
    ck_assert_mem_eq(rb.data, b.data, b.len);

    /* without it: exactly the old eight-field reply, and every key as of the reply's as_of */
    proto_buf_reset(&b);
    proto_buf_reset(&ref);
    proto_enc_reply_abs(&b, 78, PROTO_OK, 100, recs, 2, "", 0, NULL, 0);
    proto_enc_reply(&ref, 78, PROTO_OK, 100, recs, 2, "", 0);
    ck_assert_uint_eq(b.len, ref.len);
    ck_assert_mem_eq(b.data, ref.data, b.len);
    ck_assert_uint_eq((uint8_t)b.data[0], 0x98);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.nabsent, 0);
    ck_assert_ptr_null(m.absent);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 0), 100);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 1), 100);
    proto_msg_fini(&m);

    /* as many keys as an MGET may have: 1 record and 19,999 absent entries */
    uint32_t na = PROTO_ITEMS_MAX - 1;
    proto_absent_t *many = calloc(na + 1, sizeof *many);
    for (uint32_t i = 0; i < na + 1; i++)
        many[i] = (proto_absent_t){i, 200 + i};
    proto_buf_reset(&b);
    proto_enc_reply_abs(&b, 79, PROTO_OK, 100, recs, 1, NULL, 0, many, na);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.nabsent, na);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 12345), 200 + 12345);
    proto_msg_fini(&m);
    /* one more is more keys than an MGET has */
    proto_buf_reset(&b);
    proto_enc_reply_abs(&b, 79, PROTO_OK, 100, recs, 1, NULL, 0, many, na + 1);
    s_expect_malformed(b.data, b.len, "absent list and records beyond PROTO_ITEMS_MAX");
    free(many);
    proto_buf_fini(&raw);
    proto_buf_fini(&rb);
    proto_buf_fini(&ref);
    proto_buf_fini(&b);
}
END_TEST

/* Decode a REPLY that must be refused, and check that the reason names the rule. */
static void s_expect_reason(const proto_buf_t *b, const char *reason)
{
    s_expect_malformed(b->data, b->len, reason);
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(b->data, b->len, &m), PROTO_MALFORMED);
    ck_assert_msg(strstr(m.err, reason) != NULL, "reason \"%s\", want \"%s\"", m.err, reason);
    proto_msg_fini(&m);
}

/* A REPLY with as_of 100, no records, status st, and a hand-made ninth field: `npairs` entries
 * written by the caller after this returns (the encoder is left positioned on the list). */
static void s_absent_begin(proto_buf_t *b, proto_enc_t *e, uint8_t st, uint32_t npairs)
{
    proto_buf_reset(b);
    proto_enc_init(e, b);
    proto_enc_reply_raw_begin_abs(e, 5, st, 100, 0, 1);
    proto_enc_str(e, "", 0);
    proto_enc_u64(e, 0);
    proto_enc_array(e, npairs);
}

START_TEST(test_reply_absent_malformed)
{
    proto_buf_t b;
    proto_enc_t e;
    proto_buf_init(&b);
    /* the reference: one good entry decodes */
    s_absent_begin(&b, &e, PROTO_OK, 1);
    proto_enc_array(&e, 2);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 101);
    proto_msg_t m;
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.nabsent, 1);
    proto_msg_fini(&m);

    s_absent_begin(&b, &e, PROTO_OK, 0);
    s_expect_reason(&b, "bad absent list"); /* empty: the field is left out instead */

    s_absent_begin(&b, &e, PROTO_NOTFOUND, 1);
    proto_enc_array(&e, 2);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 101);
    s_expect_reason(&b, "absent list on a reply that is not OK");

    s_absent_begin(&b, &e, PROTO_OK, 2); /* the same index twice */
    for (int i = 0; i < 2; i++) {
        proto_enc_array(&e, 2);
        proto_enc_u64(&e, 4);
        proto_enc_u64(&e, 101);
    }
    s_expect_reason(&b, "absent entries out of order at 1");

    s_absent_begin(&b, &e, PROTO_OK, 2); /* decreasing */
    for (int i = 0; i < 2; i++) {
        proto_enc_array(&e, 2);
        proto_enc_u64(&e, 4 - (uint64_t)i);
        proto_enc_u64(&e, 101);
    }
    s_expect_reason(&b, "absent entries out of order at 1");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* not above the reply's as_of */
    proto_enc_array(&e, 2);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 100);
    s_expect_reason(&b, "absent entry 0 not above the reply's as_of");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* an index no MGET has */
    proto_enc_array(&e, 2);
    proto_enc_u64(&e, PROTO_ITEMS_MAX);
    proto_enc_u64(&e, 101);
    s_expect_reason(&b, "bad absent entry 0");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* a triple */
    proto_enc_array(&e, 3);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 101);
    proto_enc_u64(&e, 0);
    s_expect_reason(&b, "bad absent entry 0");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* a lone index */
    proto_enc_array(&e, 1);
    proto_enc_u64(&e, 0);
    s_expect_reason(&b, "bad absent entry 0");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* a flat index instead of a pair */
    proto_enc_u64(&e, 0);
    s_expect_reason(&b, "bad absent entry 0");

    s_absent_begin(&b, &e, PROTO_OK, 1); /* a key instead of an index */
    proto_enc_array(&e, 2);
    proto_enc_str(&e, "alice", 5);
    proto_enc_u64(&e, 101);
    s_expect_reason(&b, "bad absent entry 0");

    /* the field is not a list */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_reply_raw_begin_abs(&e, 5, PROTO_OK, 100, 0, 1);
    proto_enc_str(&e, "", 0);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 101);
    s_expect_reason(&b, "bad absent list");

    /* ten fields */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 10, PROTO_REPLY, 5);
    proto_enc_u64(&e, PROTO_OK);
    proto_enc_u64(&e, 100);
    proto_enc_array(&e, 0);
    proto_enc_str(&e, "", 0);
    proto_enc_u64(&e, 0);
    proto_enc_array(&e, 1);
    proto_enc_array(&e, 2);
    proto_enc_u64(&e, 0);
    proto_enc_u64(&e, 101);
    proto_enc_u64(&e, 0);
    s_expect_reason(&b, "REPLY: 10 fields, want 8 or 9");

    /* a hostile count is refused before anything is allocated (the pre-scan) */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_reply_raw_begin_abs(&e, 5, PROTO_OK, 100, 0, 1);
    proto_enc_str(&e, "", 0);
    proto_enc_u64(&e, 0);
    proto_enc_array(&e, UINT32_MAX);
    s_expect_malformed(b.data, b.len, "absent list claiming 2^32-1 entries");
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_rt_changes)
{
    enum { N = 300 };
    proto_change_t *ch = calloc(N, sizeof *ch);
    for (unsigned i = 0; i < N; i++) {
        uint64_t seq = 100 + 2 * i; /* gaps are allowed, order is not optional */
        if (i % 3 == 0)
            ch[i] = s_ch_set(i, seq);
        else if (i % 3 == 1)
            ch[i] = s_ch_del(s_rec(i).user_id, seq);
        else
            ch[i] = s_ch_touch(i, seq);
    }
    proto_buf_t b;
    proto_msg_t m;
    proto_enc_t e;
    proto_buf_init(&b);

    /* CHANGES: first_seq may be below the first change (a range), last_seq equals the last one */
    proto_enc_init(&e, &b);
    proto_enc_changes_begin(&e, 777, 90, ch[N - 1].rec.version, N);
    for (unsigned i = 0; i < N; i++)
        proto_enc_change(&e, &ch[i]);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_CHANGES);
    ck_assert_uint_eq(m.rid, 0);
    ck_assert_uint_eq(m.epoch, 777);
    ck_assert_uint_eq(m.first_seq, 90);
    ck_assert_uint_eq(m.seq, ch[N - 1].rec.version);
    ck_assert_uint_eq(m.n, N);
    for (unsigned i = 0; i < N; i++)
        s_change_eq(&m.changes[i], &ch[i]);
    proto_msg_fini(&m);

    /* CATCHUP_REPLY: incremental (any kinds, sequence order), done true/false, empty */
    for (int mode = 0; mode <= 0; mode++) {
        for (unsigned cnt = 0; cnt <= N; cnt += N) {
            proto_buf_reset(&b);
            proto_enc_init(&e, &b);
            proto_enc_catchup_reply_begin(&e, 4242, PROTO_OK, 888, (uint8_t)mode, 5555, mode == 1, cnt);
            for (unsigned i = 0; i < cnt; i++)
                proto_enc_change(&e, &ch[i]);
            proto_enc_catchup_reply_end(&e, "", 0);
            s_dec_ok(&b, &m);
            ck_assert_uint_eq(m.type, PROTO_CATCHUP_REPLY);
            ck_assert_uint_eq(m.rid, 4242);
            ck_assert_uint_eq(m.status, PROTO_OK);
            ck_assert_uint_eq(m.epoch, 888);
            ck_assert_uint_eq(m.mode, mode);
            ck_assert_uint_eq(m.seq, 5555);
            ck_assert(m.done == (mode == 1));
            ck_assert_uint_eq(m.n, cnt);
            for (unsigned i = 0; i < cnt; i++)
                s_change_eq(&m.changes[i], &ch[i]);
            proto_msg_fini(&m);
        }
    }
    /* snapshot chunks (modes 1 and 2): whole records in key order, with a cursor */
    for (int mode = PROTO_CATCHUP_SNAPSHOT; mode <= PROTO_CATCHUP_SNAPSHOT_CONT; mode++) {
        proto_change_t snap[3] = {s_ch_set(9, 30), s_ch_set(2, 10), s_ch_set(5, 20)}; /* not in seq order */
        proto_buf_reset(&b);
        proto_enc_init(&e, &b);
        proto_enc_catchup_reply_begin(&e, 77, PROTO_OK, 888, (uint8_t)mode, 1000, false, 3);
        for (unsigned i = 0; i < 3; i++)
            proto_enc_change(&e, &snap[i]);
        proto_enc_catchup_reply_end(&e, snap[2].rec.user_id, snap[2].rec.uid_len);
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.mode, mode);
        ck_assert_uint_eq(m.n, 3);
        ck_assert_uint_eq(m.key.len, snap[2].rec.uid_len);
        ck_assert_mem_eq(m.key.p, snap[2].rec.user_id, snap[2].rec.uid_len);
        for (unsigned i = 0; i < 3; i++)
            s_change_eq(&m.changes[i], &snap[i]);
        proto_msg_fini(&m);
        /* a snapshot chunk may only carry whole records */
        proto_change_t del = s_ch_del("gone", 40);
        proto_buf_reset(&b);
        proto_enc_init(&e, &b);
        proto_enc_catchup_reply_begin(&e, 78, PROTO_OK, 888, (uint8_t)mode, 1000, false, 1);
        proto_enc_change(&e, &del);
        proto_enc_catchup_reply_end(&e, "", 0);
        ck_assert_int_eq(proto_decode(b.data, b.len, &m), PROTO_MALFORMED);
        proto_msg_fini(&m);
    }
    /* a CATCHUP_REPLY carrying an error status */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_catchup_reply_begin(&e, 1, PROTO_EUNAVAIL, 0, 0, 0, false, 0);
    proto_enc_catchup_reply_end(&e, "", 0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.status, PROTO_EUNAVAIL);
    proto_msg_fini(&m);
    proto_buf_fini(&b);
    free(ch);
}
END_TEST

START_TEST(test_rt_stats_msgs)
{
    stats_list_t l;
    stats_list_init(&l);
    for (unsigned i = 0; i < PROTO_STATS_MAX; i++)
        stats_addf(&l, (uint64_t)i * 1000003ULL, "metric_%u{node=\"n%u\"}", i, i % 3);
    ck_assert_uint_eq(l.n, PROTO_STATS_MAX);
    static const uint8_t types[] = {PROTO_PONG, PROTO_STATS_REPLY};
    for (size_t t = 0; t < 2; t++) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_stats(&b, types[t], 31 + t, PROTO_OK, l.v, l.n);
        proto_msg_t m;
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.type, types[t]);
        ck_assert_uint_eq(m.rid, 31 + t);
        ck_assert_uint_eq(m.status, PROTO_OK);
        ck_assert_uint_eq(m.n, l.n);
        for (uint32_t i = 0; i < l.n; i++) {
            ck_assert_uint_eq(m.stats[i].name.len, l.v[i].name.len);
            ck_assert_mem_eq(m.stats[i].name.p, l.v[i].name.p, l.v[i].name.len);
            ck_assert_uint_eq(m.stats[i].value, l.v[i].value);
        }
        uint64_t v = 0;
        ck_assert_int_eq(stats_find(m.stats, m.n, "metric_511{node=\"n1\"}", &v), 1);
        ck_assert_uint_eq(v, 511ULL * 1000003ULL);
        proto_msg_fini(&m);
        /* an empty list */
        proto_buf_reset(&b);
        proto_enc_stats(&b, types[t], 1, PROTO_EINTERNAL, NULL, 0);
        s_dec_ok(&b, &m);
        ck_assert_uint_eq(m.n, 0);
        ck_assert_uint_eq(m.status, PROTO_EINTERNAL);
        proto_msg_fini(&m);
        proto_buf_fini(&b);
    }
    stats_list_fini(&l);
}
END_TEST

START_TEST(test_rt_corpus_and_buf)
{
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    for (int i = 0; i < CORPUS_N; i++) {
        proto_msg_t m;
        int rc = s_dec(&c[i], &m);
        ck_assert_msg(rc == PROTO_DEC_OK, "corpus %d: %s", i, m.err);
        /* proto_msg_fini is idempotent */
        proto_msg_fini(&m);
        proto_msg_fini(&m);
    }
    /* steal: the bytes survive, the buffer is empty and reusable */
    size_t len = 0;
    char *p = proto_buf_steal(&c[0], &len);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(c[0].data);
    ck_assert_uint_eq(c[0].len, 0);
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(p, len, &m), PROTO_DEC_OK);
    ck_assert_uint_eq(m.type, PROTO_GET);
    proto_msg_fini(&m);
    free(p);
    proto_enc_simple(&c[0], PROTO_PING, 3);
    ck_assert_int_eq(s_dec(&c[0], &m), PROTO_DEC_OK);
    proto_msg_fini(&m);
    /* append grows past the initial capacity */
    proto_buf_t b;
    proto_buf_init(&b);
    char chunk[100];
    for (int i = 0; i < 1000; i++) {
        memset(chunk, (char)i, sizeof chunk);
        proto_buf_append(&b, chunk, sizeof chunk);
    }
    ck_assert_uint_eq(b.len, 100000);
    ck_assert_uint_ge(b.cap, b.len);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq((unsigned char)b.data[i * 100 + 99], (unsigned char)i);
    proto_buf_fini(&b);
    s_corpus_fini(c);
}
END_TEST

START_TEST(test_rt_batch)
{
    proto_buf_t parts[3], out;
    for (int i = 0; i < 3; i++)
        proto_buf_init(&parts[i]);
    proto_buf_init(&out);
    proto_record_t r = s_rec(5);
    proto_enc_get(&parts[0], PROTO_GET, 101, "alice", 5);
    proto_enc_records_cmd(&parts[1], PROTO_PUT, 102, &r, 1);
    proto_enc_simple(&parts[2], PROTO_PING, 103);
    proto_batch_t bt;
    proto_batch_init(&bt);
    for (int round = 0; round < 2; round++) { /* the batch is reusable after a reset */
        proto_batch_reset(&bt);
        for (int i = 0; i < 3; i++)
            proto_batch_add(&bt, parts[i].data, parts[i].len);
        proto_batch_encode(&bt, &out);
        proto_msg_t m;
        s_dec_ok(&out, &m);
        ck_assert_uint_eq(m.type, PROTO_BATCH);
        ck_assert_uint_eq(m.n, 3);
        for (int i = 0; i < 3; i++) {
            ck_assert_uint_eq(m.parts[i].len, parts[i].len);
            ck_assert_mem_eq(m.parts[i].p, parts[i].data, parts[i].len);
            /* borrowed from the frame */
            ck_assert(m.parts[i].p > out.data && m.parts[i].p < out.data + out.len);
            proto_msg_t pm;
            ck_assert_int_eq(proto_decode(m.parts[i].p, m.parts[i].len, &pm), PROTO_DEC_OK);
            ck_assert_uint_eq(pm.rid, 101 + (unsigned)i);
            proto_msg_fini(&pm);
        }
        proto_msg_fini(&m);
        ck_assert_ptr_null(m.parts);
    }
    /* a single message is sent as itself */
    proto_batch_reset(&bt);
    proto_batch_add(&bt, parts[1].data, parts[1].len);
    proto_batch_encode(&bt, &out);
    ck_assert_uint_eq(out.len, parts[1].len);
    ck_assert_mem_eq(out.data, parts[1].data, out.len);
    proto_batch_fini(&bt);

    /* malformed batches: no parts, a part that is not bin, an empty part, a wrong field count */
    proto_enc_t e;
    proto_buf_reset(&out);
    proto_enc_init(&e, &out);
    proto_enc_header(&e, 4, PROTO_BATCH, 0);
    proto_enc_array(&e, 0);
    s_expect_malformed(out.data, out.len, "empty batch");
    proto_buf_reset(&out);
    proto_enc_init(&e, &out);
    proto_enc_header(&e, 4, PROTO_BATCH, 0);
    proto_enc_array(&e, 1);
    proto_enc_str(&e, parts[2].data, parts[2].len);
    s_expect_malformed(out.data, out.len, "str part");
    proto_buf_reset(&out);
    proto_enc_init(&e, &out);
    proto_enc_header(&e, 4, PROTO_BATCH, 0);
    proto_enc_array(&e, 1);
    proto_enc_raw(&e, "\xc4\x00", 2); /* bin8 of length 0 */
    s_expect_malformed(out.data, out.len, "empty part");
    proto_buf_reset(&out);
    proto_enc_simple(&out, PROTO_BATCH, 0);
    s_expect_malformed(out.data, out.len, "batch without a list");
    for (int i = 0; i < 3; i++)
        proto_buf_fini(&parts[i]);
    proto_buf_fini(&out);
}
END_TEST

START_TEST(test_names)
{
    ck_assert_str_eq(proto_presence_name(PRESENCE_ONLINE), "online");
    ck_assert_str_eq(proto_presence_name(PRESENCE_AWAY), "away");
    ck_assert_str_eq(proto_presence_name(PRESENCE_BUSY), "busy");
    ck_assert_str_eq(proto_presence_name(PRESENCE_OFFLINE), "offline");
    ck_assert_ptr_null(proto_presence_name(4));
    ck_assert_ptr_null(proto_presence_name(-1));
    ck_assert_int_eq(proto_presence_parse("online", 6), PRESENCE_ONLINE);
    ck_assert_int_eq(proto_presence_parse("away", 4), PRESENCE_AWAY);
    ck_assert_int_eq(proto_presence_parse("busy", 4), PRESENCE_BUSY);
    ck_assert_int_eq(proto_presence_parse("offline", 7), PRESENCE_OFFLINE);
    ck_assert_int_eq(proto_presence_parse("Online", 6), -1);
    ck_assert_int_eq(proto_presence_parse("ONLINE", 6), -1);
    ck_assert_int_eq(proto_presence_parse("onlinex", 7), -1);
    ck_assert_int_eq(proto_presence_parse("online", 5), -1);
    ck_assert_int_eq(proto_presence_parse("", 0), -1);
    ck_assert_str_eq(proto_status_name(PROTO_OK), "ok");
    ck_assert_str_eq(proto_status_name(PROTO_NOTFOUND), "notfound");
    ck_assert_ptr_nonnull(proto_status_name(99));
    ck_assert_str_eq(proto_type_name(PROTO_CATCHUP_REPLY), "CATCHUP_REPLY");
    ck_assert_str_eq(proto_type_name(PROTO_HUGZ), "HUGZ");
    ck_assert_ptr_nonnull(proto_type_name(200));
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Records alone, and proto_peek_header
 * ------------------------------------------------------------------------------------------------- */


/* ==== sessions, leases, the real-time record fields ========================================= */

START_TEST(test_rt_sessions_msgs)
{
    proto_buf_t b;
    proto_msg_t m;
    proto_buf_init(&b);
    /* LEASE */
    proto_enc_lease(&b, 77, 0x123456789abcULL, PROTO_LEASE_REFRESH, 15000, "gw-eu-1", 7);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_LEASE);
    ck_assert_uint_eq(m.rid, 77);
    ck_assert_uint_eq(m.lease_id, 0x123456789abcULL);
    ck_assert_uint_eq(m.op, PROTO_LEASE_REFRESH);
    ck_assert_uint_eq(m.ttl_ms, 15000);
    ck_assert_str_eq(m.node, "gw-eu-1");
    proto_msg_fini(&m);
    static const struct {
        uint64_t id;
        uint8_t op;
        uint32_t ttl;
        const char *node;
    } badl[] = {{0, 0, 1000, "n"}, {1, 2, 1000, "n"}, {1, 0, 0, "n"}, {1, 0, PROTO_LEASE_TTL_MAX_MS + 1, "n"}, {1, 0, 5, "a b"},
                {1, 0, 5, ""}};
    for (size_t i = 0; i < ARRAY_LEN(badl); i++) {
        proto_buf_reset(&b);
        proto_enc_lease(&b, 1, badl[i].id, badl[i].op, badl[i].ttl, badl[i].node, strlen(badl[i].node));
        s_expect_malformed(b.data, b.len, "bad lease");
    }
    /* SESSIONS and its reply */
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_SESSIONS, 5, "alice", 5);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_SESSIONS);
    ck_assert_uint_eq(m.key.len, 5);
    proto_msg_fini(&m);
    proto_session_t ss[3];
    memset(ss, 0, sizeof ss);
    for (int i = 0; i < 3; i++) {
        snprintf(ss[i].session_id, sizeof ss[i].session_id, "s-%d", i);
        ss[i].sid_len = (uint8_t)strlen(ss[i].session_id);
        snprintf(ss[i].device, sizeof ss[i].device, i ? "phone \xf0\x9f\x93\xb1" : "");
        ss[i].device_len = (uint8_t)strlen(ss[i].device);
        snprintf(ss[i].node_id, sizeof ss[i].node_id, "node-%d", i);
        ss[i].node_len = (uint8_t)strlen(ss[i].node_id);
        ss[i].status = (uint8_t)i;
        ss[i].manual_status = (uint8_t)(2 - i);
        ss[i].connected_at_us = T0 + (uint64_t)i;
        ss[i].last_seen_us = T0 + 10 + (uint64_t)i;
        ss[i].expires_at_us = T0 + 100 + (uint64_t)i;
        ss[i].ttl_s = 60 + (uint32_t)i;
        ss[i].lease_id = i == 2 ? 99 : 0;
        ss[i].conn_id = i == 2 ? 5 : 0;
    }
    proto_buf_reset(&b);
    proto_enc_sessions_reply(&b, 6, PROTO_OK, ss, 3);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.type, PROTO_SESSIONS_REPLY);
    ck_assert_uint_eq(m.n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(m.sessions[i].session_id, ss[i].session_id);
        ck_assert_str_eq(m.sessions[i].device, ss[i].device);
        ck_assert_str_eq(m.sessions[i].node_id, ss[i].node_id);
        ck_assert_uint_eq(m.sessions[i].status, ss[i].status);
        ck_assert_uint_eq(m.sessions[i].manual_status, ss[i].manual_status);
        ck_assert_uint_eq(m.sessions[i].connected_at_us, ss[i].connected_at_us);
        ck_assert_uint_eq(m.sessions[i].last_seen_us, ss[i].last_seen_us);
        ck_assert_uint_eq(m.sessions[i].expires_at_us, ss[i].expires_at_us);
        ck_assert_uint_eq(m.sessions[i].ttl_s, ss[i].ttl_s);
        ck_assert_uint_eq(m.sessions[i].lease_id, ss[i].lease_id);
        ck_assert_uint_eq(m.sessions[i].conn_id, ss[i].conn_id);
    }
    proto_msg_fini(&m);
    /* a session the store never writes: an offline status, a bad id */
    ss[0].status = PRESENCE_OFFLINE;
    proto_buf_reset(&b);
    proto_enc_sessions_reply(&b, 6, PROTO_OK, ss, 3);
    s_expect_malformed(b.data, b.len, "offline session");
    ss[0].status = PRESENCE_ONLINE;
    ss[0].session_id[1] = ' ';
    proto_buf_reset(&b);
    proto_enc_sessions_reply(&b, 6, PROTO_OK, ss, 3);
    s_expect_malformed(b.data, b.len, "bad session id");
    proto_buf_fini(&b);
}
END_TEST

/* PUT and TOUCH entries: the 2.0 short forms, and the session forms with their rules. */
START_TEST(test_rt_session_commands)
{
    proto_buf_t b;
    proto_msg_t m;
    proto_buf_init(&b);
    proto_record_t in[2];
    in[0] = s_rec(1);
    in[0].cflags = PROTO_CMD_F_MSG;
    in[1] = s_rec(2);
    proto_record_set_sid(&in[1], "tab-9", 5);
    proto_record_set_device(&in[1], "desktop", 7);
    in[1].lease_id = 44;
    in[1].conn_id = 3;
    in[1].message_ttl_s = 90;
    in[1].cflags = PROTO_CMD_F_OPEN | PROTO_CMD_F_MSG;
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 8, in, 2, T0);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_uint_eq(m.recs[0].cflags, PROTO_CMD_F_MSG);
    ck_assert_uint_eq(m.recs[0].sid_len, 0);
    ck_assert_str_eq(m.recs[1].session_id, "tab-9");
    ck_assert_str_eq(m.recs[1].device, "desktop");
    ck_assert_uint_eq(m.recs[1].lease_id, 44);
    ck_assert_uint_eq(m.recs[1].conn_id, 3);
    ck_assert_uint_eq(m.recs[1].message_ttl_s, 90);
    ck_assert_uint_eq(m.recs[1].cflags, PROTO_CMD_F_OPEN | PROTO_CMD_F_MSG);
    ck_assert_uint_eq(m.deadline_us, T0);
    proto_msg_fini(&m);
    /* the short form is what a command without sessions costs */
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 8, in, 1);
    size_t short_len = b.len;
    in[0].cflags = 0; /* without F_MSG: the long form (the message is the store's decision) */
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 8, in, 1);
    ck_assert_uint_gt(b.len, short_len);
    s_dec_ok(&b, &m);
    ck_assert_uint_eq(m.recs[0].cflags, 0);
    proto_msg_fini(&m);
    /* TOUCH with a session */
    proto_buf_reset(&b);
    in[1].cflags = 0;
    proto_enc_records_cmd(&b, PROTO_TOUCH, 9, &in[1], 1);
    s_dec_ok(&b, &m);
    ck_assert_str_eq(m.recs[0].session_id, "tab-9");
    ck_assert_uint_eq(m.recs[0].lease_id, 44);
    proto_msg_fini(&m);
    /* a lease without a session, a lease without a connection, a device without a session */
    proto_record_t bad = s_rec(3);
    bad.lease_id = 1;
    bad.conn_id = 1;
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, &bad, 1);
    s_expect_malformed(b.data, b.len, "lease without session");
    proto_record_set_sid(&bad, "s", 1);
    bad.conn_id = 0;
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, &bad, 1);
    s_expect_malformed(b.data, b.len, "lease without connection");
    bad = s_rec(3);
    proto_record_set_device(&bad, "d", 1);
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 1, &bad, 1);
    s_expect_malformed(b.data, b.len, "device without session");
    proto_buf_fini(&b);
}
END_TEST

/* The record's real-time fields round-trip; a 2.0 record (nine fields) still decodes; values a
 * store never writes are refused (a cache must never hold them). */
START_TEST(test_record_rt_fields)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_record_t r = s_rec(5), d;
    r.preferred_until_us = T0 + 1;
    r.message_expires_at_us = T0 + 2;
    r.pub_version = r.version - 3;
    r.vis_last_seen_us = T0 + 4;
    r.due_us = T0 + 5;
    r.sessions = 7;
    r.source = PRESENCE_SRC_SESSION;
    r.rflags = PROTO_REC_F_RT;
    proto_record_encode(&b, &r);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), 0);
    s_rec_eq(&d, &r);
    ck_assert_uint_eq(d.preferred_until_us, r.preferred_until_us);
    ck_assert_uint_eq(d.message_expires_at_us, r.message_expires_at_us);
    ck_assert_uint_eq(d.pub_version, r.pub_version);
    ck_assert_uint_eq(d.vis_last_seen_us, r.vis_last_seen_us);
    ck_assert_uint_eq(d.due_us, r.due_us);
    ck_assert_uint_eq(d.sessions, 7);
    ck_assert_uint_eq(d.source, PRESENCE_SRC_SESSION);
    ck_assert_uint_eq(d.rflags, PROTO_REC_F_RT);
    /* a 2.0 record: [uid, status, msg, last_seen, updated_at, expires_at, node, ttl, version] */
    proto_enc_t e;
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_array(&e, 9);
    proto_enc_str(&e, "old", 3);
    proto_enc_u64(&e, PRESENCE_AWAY);
    proto_enc_str(&e, "hi", 2);
    proto_enc_u64(&e, T0);
    proto_enc_u64(&e, T0);
    proto_enc_u64(&e, T0 + 60);
    proto_enc_str(&e, "n", 1);
    proto_enc_u64(&e, 60);
    proto_enc_u64(&e, 12);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), 0);
    ck_assert_uint_eq(d.source, PRESENCE_SRC_PREFERRED);
    ck_assert_uint_eq(d.preferred_until_us, T0 + 60);
    ck_assert_uint_eq(d.pub_version, 12);
    ck_assert_uint_eq(d.rflags, 0);
    /* refused: version 0 and 2^64-1, ttl 0, times beyond PROTO_TIME_MAX, pub_version > version,
     * sessions > PROTO_SESSIONS_MAX, unknown source and flags */
    for (int k = 0; k < 9; k++) {
        proto_record_t x = r;
        switch (k) {
        case 0: x.version = 0; break;
        case 1: x.version = UINT64_MAX; break;
        case 2: x.ttl_s = 0; break;
        case 3: x.last_seen_us = PROTO_TIME_MAX + 1; break;
        case 4: x.pub_version = x.version + 1; break;
        case 5: x.sessions = PROTO_SESSIONS_MAX + 1; break;
        case 6: x.source = PRESENCE_SOURCE_COUNT; break;
        case 7: x.rflags = 0x80; break;
        case 8: x.due_us = UINT64_MAX; break;
        }
        proto_buf_reset(&b);
        proto_record_encode(&b, &x);
        ck_assert_msg(proto_record_decode(b.data, b.len, &d) == -1, "case %d accepted", k);
    }
    proto_buf_fini(&b);
}
END_TEST


/* A batch of small messages reaches the part limit long before the byte bound (a GET is ~15
 * bytes): senders split by count too. PROTO_ITEMS_MAX parts decode; one more is refused. */
START_TEST(test_batch_part_limit)
{
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t part, frame;
    proto_buf_init(&part);
    proto_buf_init(&frame);
    proto_enc_get(&part, PROTO_GET, 1, "alice", 5);
    uint32_t added = 0;
    while (!proto_batch_full(&bt)) {
        proto_batch_add(&bt, part.data, part.len);
        added++;
    }
    ck_assert_uint_eq(added, PROTO_ITEMS_MAX);
    ck_assert_uint_lt(bt.data.len, PROTO_BATCH_SOFT_MAX); /* the count, not the bytes, filled it */
    proto_batch_encode(&bt, &frame);
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(frame.data, frame.len, &m), PROTO_DEC_OK);
    ck_assert_uint_eq(m.n, PROTO_ITEMS_MAX);
    proto_msg_fini(&m);
    proto_batch_add(&bt, part.data, part.len); /* a sender that ignores proto_batch_full */
    proto_batch_encode(&bt, &frame);
    s_expect_malformed(frame.data, frame.len, "a batch over PROTO_ITEMS_MAX parts");
    proto_batch_fini(&bt);
    proto_buf_fini(&part);
    proto_buf_fini(&frame);
}
END_TEST

START_TEST(test_record_codec)
{
    proto_buf_t b;
    proto_buf_init(&b);
    for (unsigned i = 0; i < 200; i++) {
        proto_record_t r = i == 199 ? s_rec_max() : s_rec(i), d;
        proto_buf_reset(&b);
        proto_record_encode(&b, &r);
        memset(&d, 0x5a, sizeof d);
        ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), 0);
        s_rec_eq(&d, &r);
        /* every prefix fails */
        for (size_t k = 0; k < b.len; k += (i == 0 ? 1 : 7))
            ck_assert_int_eq(proto_record_decode(b.data, k, &d), -1);
    }
    /* trailing bytes */
    proto_record_t r = s_rec(1), d;
    proto_buf_reset(&b);
    proto_record_encode(&b, &r);
    proto_buf_append(&b, "\x00", 1);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), -1);
    /* a record wrapped in a message is not a record */
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_APPLY, 1, &r, 1);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), -1);
    /* invalid contents */
    proto_record_t bad = s_rec(1);
    bad.status = 4;
    proto_buf_reset(&b);
    proto_record_encode(&b, &bad);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), -1);
    bad = s_rec(1);
    bad.ttl_s = PROTO_TTL_MAX + 1;
    proto_buf_reset(&b);
    proto_record_encode(&b, &bad);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), -1);
    bad = s_rec(1);
    bad.user_id[2] = ' ';
    proto_buf_reset(&b);
    proto_record_encode(&b, &bad);
    ck_assert_int_eq(proto_record_decode(b.data, b.len, &d), -1);
    ck_assert_int_eq(proto_record_decode("", 0, &d), -1);
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_peek_header)
{
    static const uint64_t rids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffffULL, 0x100000000ULL, UINT64_MAX};
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    for (int i = 0; i < CORPUS_N; i++) {
        proto_msg_t m;
        ck_assert_int_eq(s_dec(&c[i], &m), PROTO_DEC_OK);
        uint8_t type = 0;
        uint64_t rid = 1;
        ck_assert_int_eq(proto_peek_header(c[i].data, c[i].len, &type, &rid), 0);
        ck_assert_uint_eq(type, m.type);
        ck_assert_uint_eq(rid, m.rid);
        proto_msg_fini(&m);
    }
    s_corpus_fini(c);
    for (size_t i = 0; i < ARRAY_LEN(rids); i++) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_get(&b, PROTO_GET, rids[i], "a", 1);
        uint8_t type = 0;
        uint64_t rid = 0;
        ck_assert_int_eq(proto_peek_header(b.data, b.len, &type, &rid), 0);
        ck_assert_uint_eq(type, PROTO_GET);
        ck_assert_uint_eq(rid, rids[i]);
        /* the header alone (no body) is enough; one byte less is not */
        size_t hlen = 3;
        unsigned char w = (unsigned char)b.data[3];
        hlen += w <= 0x7f ? 1 : w == 0xcc ? 2 : w == 0xcd ? 3 : w == 0xce ? 5 : 9;
        ck_assert_int_eq(proto_peek_header(b.data, hlen, &type, &rid), 0);
        ck_assert_uint_eq(rid, rids[i]);
        for (size_t k = 0; k < hlen; k++)
            ck_assert_int_eq(proto_peek_header(b.data, k, &type, &rid), -1);
        proto_buf_fini(&b);
    }
    uint8_t type;
    uint64_t rid;
    static const unsigned char notarr[] = {0xa4, 0x01, 0x01, 0x05, 0xa1, 'a'}; /* a string */
    ck_assert_int_eq(proto_peek_header(notarr, sizeof notarr, &type, &rid), -1);
    static const unsigned char badrid[] = {0x94, 0x01, 0x01, 0xa1, 'x', 0xa1, 'a'}; /* rid is a string */
    ck_assert_int_eq(proto_peek_header(badrid, sizeof badrid, &type, &rid), -1);
    static const unsigned char negrid[] = {0x94, 0x01, 0x01, 0xff, 0xa1, 'a'}; /* rid -1 */
    ck_assert_int_eq(proto_peek_header(negrid, sizeof negrid, &type, &rid), -1);
    static const unsigned char badtype[] = {0x94, 0x01, 0xa1, 'x', 0x05}; /* type is a string */
    ck_assert_int_eq(proto_peek_header(badtype, sizeof badtype, &type, &rid), -1);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Strict decoding: structure
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_truncated_everywhere)
{
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    for (int i = 0; i < CORPUS_N; i++) {
        for (size_t k = 0; k < c[i].len; k++) {
            /* a copy of exactly k bytes, so ASan sees any read past the frame */
            char *p = malloc(k ? k : 1);
            memcpy(p, c[i].data, k);
            char what[64];
            snprintf(what, sizeof what, "corpus %d cut at %zu of %zu", i, k, c[i].len);
            s_expect_malformed(p, k, what);
            free(p);
        }
    }
    s_corpus_fini(c);
}
END_TEST

START_TEST(test_trailing_and_oversized)
{
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    for (int i = 0; i < CORPUS_N; i++) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_buf_append(&b, c[i].data, c[i].len);
        proto_buf_append(&b, "\x00", 1);
        s_expect_malformed(b.data, b.len, "one trailing byte");
        /* two valid messages back to back are not one frame */
        proto_buf_reset(&b);
        proto_buf_append(&b, c[i].data, c[i].len);
        proto_buf_append(&b, c[i].data, c[i].len);
        s_expect_malformed(b.data, b.len, "two messages in one frame");
        proto_buf_fini(&b);
    }
    /* over PROTO_FRAME_MAX: rejected on size alone, even when it starts with a valid message */
    size_t big = (size_t)PROTO_FRAME_MAX + 1;
    char *p = calloc(1, big);
    memcpy(p, c[0].data, c[0].len);
    s_expect_malformed(p, big, "oversized frame");
    /* a frame of exactly PROTO_FRAME_MAX is not rejected for its size (here: for its trailing zeros) */
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(p, PROTO_FRAME_MAX, &m), PROTO_MALFORMED);
    ck_assert_ptr_null(strstr(m.err, "frame size"));
    proto_msg_fini(&m);
    free(p);
    s_expect_malformed("", 0, "empty frame");
    s_corpus_fini(c);
}
END_TEST

START_TEST(test_bad_version)
{
    /* versions 0, 2 and 255 with a readable header: EVERSION, type and rid filled */
    static const uint8_t versions[] = {0, 2, 3, 127, 255};
    for (size_t i = 0; i < ARRAY_LEN(versions); i++) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_get(&b, PROTO_GET, 0xabcdef, "alice", 5);
        /* the encoder writes fixarray, then the version as a positive fixint or uint8 */
        ck_assert_int_eq((unsigned char)b.data[1], PROTO_VERSION);
        proto_buf_t v;
        proto_buf_init(&v);
        proto_buf_append(&v, b.data, 1);
        if (versions[i] <= 0x7f) {
            proto_buf_append(&v, &versions[i], 1);
        } else {
            unsigned char u8[2] = {0xcc, versions[i]};
            proto_buf_append(&v, u8, 2);
        }
        proto_buf_append(&v, b.data + 2, b.len - 2);
        proto_msg_t m;
        int rc = s_dec(&v, &m);
        ck_assert_msg(rc == PROTO_EVERSION, "version %u: rc %d (%s)", versions[i], rc, m.err);
        ck_assert_uint_eq(m.type, PROTO_GET);
        ck_assert_uint_eq(m.rid, 0xabcdef);
        proto_msg_fini(&m);
        proto_buf_fini(&v);
        proto_buf_fini(&b);
    }
    /* another version with a body we do not understand is still EVERSION */
    static const unsigned char v9[] = {0x95, 0x09, 0x63, 0xcd, 0x01, 0x00, 0xc0, 0x80};
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(v9, sizeof v9, &m), PROTO_EVERSION);
    ck_assert_uint_eq(m.type, 0x63);
    ck_assert_uint_eq(m.rid, 256);
    proto_msg_fini(&m);
    /* a huge version number */
    static const unsigned char vbig[] = {0x93, 0xcf, 1, 0, 0, 0, 0, 0, 0, 1, 0x08, 0x07};
    ck_assert_int_eq(proto_decode(vbig, sizeof vbig, &m), PROTO_EVERSION);
    ck_assert_uint_eq(m.type, PROTO_PING);
    ck_assert_uint_eq(m.rid, 7);
    proto_msg_fini(&m);
}
END_TEST

START_TEST(test_unknown_types)
{
    static const unsigned types[] = {0, 13, 14, 31, 37, 63, 66, 100, 127, 128, 255} /* 11, 12, 36: LEASE, SESSIONS, SESSIONS_REPLY */;
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_simple(&b, (uint8_t)types[i], 1);
        s_expect_malformed(b.data, b.len, "unknown type");
        /* with a plausible body too */
        proto_buf_reset(&b);
        proto_enc_get(&b, (uint8_t)types[i], 1, "alice", 5);
        s_expect_malformed(b.data, b.len, "unknown type with body");
        proto_buf_fini(&b);
    }
    static const unsigned char t256[] = {0x93, 0x01, 0xcd, 0x01, 0x01, 0x01}; /* type 257 */
    s_expect_malformed(t256, sizeof t256, "type > 255");
    static const unsigned char tneg[] = {0x93, 0x01, 0xff, 0x01}; /* type -1 */
    s_expect_malformed(tneg, sizeof tneg, "negative type");
}
END_TEST

START_TEST(test_hostile_containers)
{
    static const struct {
        const char *what;
        unsigned char b[16];
        size_t n;
    } cases[] = {
        {"array32 of 2^32-1", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5},
        {"array32 of 16M", {0xdd, 0x01, 0x00, 0x00, 0x00}, 5},
        {"array32 of 16M with some bytes", {0xdd, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01}, 8},
        {"array16 of 65535", {0xdc, 0xff, 0xff, 0x01}, 4},
        {"map32 of 2^32-1", {0xdf, 0xff, 0xff, 0xff, 0xff}, 5},
        {"map32 of 16M", {0xdf, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01}, 7},
        {"map16 of 65535", {0xde, 0xff, 0xff}, 3},
        {"str32 of 4G", {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6},
        {"bin32 of 4G", {0xc6, 0xff, 0xff, 0xff, 0xff, 'a'}, 6},
        {"str8 past the end", {0xd9, 0x10, 'a', 'b'}, 4},
        {"fixarray 15 of 2", {0x9f, 0x01, 0x01}, 3},
        {"array32 truncated length", {0xdd, 0xff, 0xff}, 3},
        /* inside a message header: [V, MGET, rid, array32 of 2^32-1] */
        {"MGET claiming 2^32-1 keys", {0x94, 0x01, 0x02, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a'}, 11},
        {"MGET claiming 16M keys", {0x94, 0x01, 0x02, 0x01, 0xdd, 0x01, 0x00, 0x00, 0x00, 0xa1, 'a'}, 11},
        {"APPLY claiming 16M records", {0x94, 0x01, 0x09, 0x01, 0xdd, 0x00, 0xff, 0xff, 0xff}, 9},
        {"message array32 of 2^32-1", {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x08, 0x01}, 8},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        unsigned char *p = malloc(cases[i].n);
        memcpy(p, cases[i].b, cases[i].n);
        s_expect_malformed(p, cases[i].n, cases[i].what);
        free(p);
    }
    /* a 16M-element claim followed by a megabyte of real elements: still too few bytes */
    size_t n = 5 + (1u << 20);
    unsigned char *p = malloc(n);
    memcpy(p, "\xdd\x01\x00\x00\x00", 5);
    memset(p + 5, 0x01, n - 5);
    s_expect_malformed(p, n, "16M claim, 1M elements");
    free(p);
    /* more list items than PROTO_ITEMS_MAX, well formed otherwise */
    proto_str_t *keys = calloc(PROTO_ITEMS_MAX + 1, sizeof *keys);
    for (uint32_t i = 0; i <= PROTO_ITEMS_MAX; i++)
        keys[i] = (proto_str_t){"k", 1};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_keys(&b, 1, keys, PROTO_ITEMS_MAX + 1);
    s_expect_malformed(b.data, b.len, "MGET with PROTO_ITEMS_MAX + 1 keys");
    free(keys);
    /* more stats than PROTO_STATS_MAX */
    proto_stat_t *st = calloc(PROTO_STATS_MAX + 1, sizeof *st);
    for (uint32_t i = 0; i <= PROTO_STATS_MAX; i++)
        st[i] = (proto_stat_t){{"s", 1}, i};
    proto_buf_reset(&b);
    proto_enc_stats(&b, PROTO_STATS_REPLY, 1, PROTO_OK, st, PROTO_STATS_MAX + 1);
    s_expect_malformed(b.data, b.len, "STATS_REPLY with PROTO_STATS_MAX + 1 stats");
    /* a stat name longer than PROTO_STAT_NAME_MAX */
    char name[PROTO_STAT_NAME_MAX + 1];
    memset(name, 'n', sizeof name);
    st[0] = (proto_stat_t){{name, PROTO_STAT_NAME_MAX + 1}, 1};
    proto_buf_reset(&b);
    proto_enc_stats(&b, PROTO_PONG, 1, PROTO_OK, st, 1);
    s_expect_malformed(b.data, b.len, "stat name too long");
    st[0].name.len = PROTO_STAT_NAME_MAX;
    proto_buf_reset(&b);
    proto_enc_stats(&b, PROTO_PONG, 1, PROTO_OK, st, 1);
    proto_msg_t m;
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);
    free(st);
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_deep_nesting)
{
    static const size_t depths[] = {9, 16, 33, 100, 1000, 100000};
    for (size_t i = 0; i < ARRAY_LEN(depths); i++) {
        size_t d = depths[i];
        unsigned char *p = malloc(d + 1);
        memset(p, 0x91, d); /* [[[[...]]]] */
        p[d] = 0x90;
        s_expect_malformed(p, d + 1, "nested arrays");
        /* the same nesting inside a message body */
        unsigned char *q = malloc(d + 5);
        memcpy(q, "\x94\x01\x02\x01", 4);
        memcpy(q + 4, p, d + 1);
        s_expect_malformed(q, d + 5, "nested arrays in MGET");
        free(p);
        free(q);
    }
    /* maps nested as values: {1:{1:{1:...}}} */
    size_t d = 200;
    unsigned char *p = malloc(2 * d + 1);
    for (size_t k = 0; k < d; k++) {
        p[2 * k] = 0x81;
        p[2 * k + 1] = 0x01;
    }
    p[2 * d] = 0xc0;
    s_expect_malformed(p, 2 * d + 1, "nested maps");
    free(p);
}
END_TEST

START_TEST(test_ext_float_types)
{
    /* replace the rid (a uint) by each unsupported type */
    static const struct {
        const char *what;
        unsigned char b[12];
        size_t n;
    } cases[] = {
        {"float32 rid", {0x93, 0x01, 0x08, 0xca, 0x3f, 0x80, 0x00, 0x00}, 8},
        {"float64 rid", {0x93, 0x01, 0x08, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, 12},
        {"fixext1 rid", {0x93, 0x01, 0x08, 0xd4, 0x01, 0x01}, 6},
        {"fixext2 rid", {0x93, 0x01, 0x08, 0xd5, 0x01, 0x01, 0x02}, 7},
        {"ext8 rid", {0x93, 0x01, 0x08, 0xc7, 0x01, 0x05, 0x00}, 7},
        {"timestamp ext rid", {0x93, 0x01, 0x08, 0xd6, 0xff, 0, 0, 0, 1}, 9},
        {"reserved 0xc1", {0x93, 0x01, 0x08, 0xc1}, 4},
        {"bin rid", {0x93, 0x01, 0x08, 0xc4, 0x01, 0x07}, 6},
        {"nil rid", {0x93, 0x01, 0x08, 0xc0}, 4},
        {"bool rid", {0x93, 0x01, 0x08, 0xc3}, 4},
        {"negative rid", {0x93, 0x01, 0x08, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 12},
        {"map message", {0x83, 0x01, 0x01, 0x02, 0x08, 0x03, 0x01}, 7},
        {"string message", {0xa3, 'a', 'b', 'c'}, 4},
        {"two-field message", {0x92, 0x01, 0x08}, 3},
        {"positive int message", {0x05}, 1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        unsigned char *p = malloc(cases[i].n);
        memcpy(p, cases[i].b, cases[i].n);
        s_expect_malformed(p, cases[i].n, cases[i].what);
        free(p);
    }
    /* msgpack-c's own float packing in a u64 field (HUGZ now_us) */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t e;
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 6, PROTO_HUGZ, 0);
    proto_enc_u64(&e, 1);
    proto_enc_u64(&e, 2);
    msgpack_packer pk;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_double(&pk, 3.0);
    proto_enc_raw(&e, sb.data, sb.size);
    s_expect_malformed(b.data, b.len, "double now_us");
    msgpack_sbuffer_destroy(&sb);
    proto_buf_fini(&b);
}
END_TEST

/* ---- generic tree mutations: a wrong type at every node, wrong counts in every array ----------- */

enum subst { SUB_NIL, SUB_TRUE, SUB_NEG, SUB_POS, SUB_STR, SUB_ARR, SUB_MAP, SUB_F64, SUB_F32, SUB_BIN, SUB_EXT, SUB_N };

static int s_class(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return MSGPACK_OBJECT_FLOAT64;
    default:
        return (int)t;
    }
}

static int s_subst_class(int sub)
{
    static const msgpack_object_type t[SUB_N] = {
        MSGPACK_OBJECT_NIL, MSGPACK_OBJECT_BOOLEAN, MSGPACK_OBJECT_NEGATIVE_INTEGER, MSGPACK_OBJECT_POSITIVE_INTEGER,
        MSGPACK_OBJECT_STR, MSGPACK_OBJECT_ARRAY, MSGPACK_OBJECT_MAP, MSGPACK_OBJECT_FLOAT64, MSGPACK_OBJECT_FLOAT64,
        MSGPACK_OBJECT_BIN, MSGPACK_OBJECT_EXT};
    return s_class(t[sub]);
}

static void s_pack_subst(msgpack_packer *pk, int sub)
{
    switch (sub) {
    case SUB_NIL: msgpack_pack_nil(pk); break;
    case SUB_TRUE: msgpack_pack_true(pk); break;
    case SUB_NEG: msgpack_pack_int64(pk, -1); break;
    case SUB_POS: msgpack_pack_uint64(pk, 1); break;
    case SUB_STR: msgpack_pack_str(pk, 1); msgpack_pack_str_body(pk, "a", 1); break;
    case SUB_ARR: msgpack_pack_array(pk, 0); break;
    case SUB_MAP: msgpack_pack_map(pk, 0); break;
    case SUB_F64: msgpack_pack_double(pk, 1.0); break;
    case SUB_F32: msgpack_pack_float(pk, 1.0f); break;
    case SUB_BIN: msgpack_pack_bin(pk, 1); msgpack_pack_bin_body(pk, "a", 1); break;
    case SUB_EXT: msgpack_pack_ext(pk, 1, 5); msgpack_pack_ext_body(pk, "a", 1); break;
    }
}

static int s_nodes(const msgpack_object *o)
{
    int n = 1;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++)
            n += s_nodes(&o->via.array.ptr[i]);
    return n;
}

static bool s_mixed(const msgpack_object *o)
{
    for (uint32_t i = 1; i < o->via.array.size; i++)
        if (o->via.array.ptr[i].type != o->via.array.ptr[0].type)
            return true;
    return false;
}

enum mut { MUT_SUBST, MUT_APPEND_NIL, MUT_DROP_LAST };

/* Re-pack `o`, mutating the node whose pre-order index is `target`. */
static void s_repack(msgpack_packer *pk, const msgpack_object *o, int *idx, int target, int mut, int sub)
{
    int me = (*idx)++;
    if (me == target && mut == MUT_SUBST) {
        s_pack_subst(pk, sub);
        *idx += s_nodes(o) - 1;
        return;
    }
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        msgpack_pack_object(pk, *o);
        return;
    }
    uint32_t n = o->via.array.size, emit = n;
    if (me == target && mut == MUT_DROP_LAST)
        emit = n - 1;
    msgpack_pack_array(pk, me == target && mut == MUT_APPEND_NIL ? n + 1 : emit);
    for (uint32_t i = 0; i < n; i++) {
        if (i < emit)
            s_repack(pk, &o->via.array.ptr[i], idx, target, mut, sub);
        else
            *idx += s_nodes(&o->via.array.ptr[i]);
    }
    if (me == target && mut == MUT_APPEND_NIL)
        msgpack_pack_nil(pk);
}

/* Find the object with pre-order index `target`. */
static const msgpack_object *s_node_at(const msgpack_object *o, int *idx, int target)
{
    if ((*idx)++ == target)
        return o;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            const msgpack_object *r = s_node_at(&o->via.array.ptr[i], idx, target);
            if (r)
                return r;
        }
    return NULL;
}

START_TEST(test_wrong_type_every_field)
{
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    int tried = 0;
    for (int ci = 0; ci < CORPUS_N; ci++) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        ck_assert_int_eq(msgpack_unpack_next(&up, c[ci].data, c[ci].len, &off), MSGPACK_UNPACK_SUCCESS);
        int total = s_nodes(&up.data);
        for (int t = 0; t < total; t++) {
            int idx = 0;
            const msgpack_object *node = s_node_at(&up.data, &idx, t);
            ck_assert_ptr_nonnull(node);
            for (int sub = 0; sub < SUB_N; sub++) {
                if (s_subst_class(sub) == s_class(node->type))
                    continue; /* same type: not a wrong type */
                msgpack_sbuffer sb;
                msgpack_sbuffer_init(&sb);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                idx = 0;
                s_repack(&pk, &up.data, &idx, t, MUT_SUBST, sub);
                proto_msg_t m;
                int rc = proto_decode(sb.data, sb.size, &m);
                /* node 1 is the version: a non-integer there reads as "another version" */
                bool ok = rc == PROTO_MALFORMED || (t == 1 && rc == PROTO_EVERSION);
                ck_assert_msg(ok, "corpus %d (%s), node %d (type %d) replaced by subst %d: rc %d", ci,
                              proto_type_name((unsigned char)c[ci].data[2]), t, node->type, sub, rc);
                proto_msg_fini(&m);
                msgpack_sbuffer_destroy(&sb);
                tried++;
            }
        }
        msgpack_unpacked_destroy(&up);
    }
    ck_assert_int_gt(tried, 1000);
    s_corpus_fini(c);
}
END_TEST

START_TEST(test_wrong_counts_every_array)
{
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    int tried = 0;
    for (int ci = 0; ci < CORPUS_N; ci++) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        ck_assert_int_eq(msgpack_unpack_next(&up, c[ci].data, c[ci].len, &off), MSGPACK_UNPACK_SUCCESS);
        int total = s_nodes(&up.data);
        for (int t = 0; t < total; t++) {
            int idx = 0;
            const msgpack_object *node = s_node_at(&up.data, &idx, t);
            if (node->type != MSGPACK_OBJECT_ARRAY)
                continue;
            for (int mut = MUT_APPEND_NIL; mut <= MUT_DROP_LAST; mut++) {
                /* Dropping an item of a homogeneous list (keys, records, changes, stats) is a valid
                 * shorter list; fixed-shape arrays mix types, and the message array is fixed. */
                if (mut == MUT_DROP_LAST && (node->via.array.size == 0 || (t != 0 && !s_mixed(node))))
                    continue;
                msgpack_sbuffer sb;
                msgpack_sbuffer_init(&sb);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                idx = 0;
                s_repack(&pk, &up.data, &idx, t, mut, 0);
                proto_msg_t m;
                int rc = proto_decode(sb.data, sb.size, &m);
                ck_assert_msg(rc == PROTO_MALFORMED, "corpus %d, array node %d, mutation %d: rc %d", ci, t, mut, rc);
                proto_msg_fini(&m);
                msgpack_sbuffer_destroy(&sb);
                tried++;
            }
        }
        msgpack_unpacked_destroy(&up);
    }
    ck_assert_int_gt(tried, 60);
    s_corpus_fini(c);

    /* records with 8 and 10 fields, built by hand */
    proto_record_t r = s_rec(1);
    for (int extra = -1; extra <= 1; extra += 2) {
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_t e;
        proto_enc_init(&e, &b);
        proto_enc_header(&e, 4, PROTO_APPLY, 1);
        proto_enc_array(&e, 1);
        proto_enc_array(&e, (uint32_t)(9 + extra));
        proto_enc_str(&e, r.user_id, r.uid_len);
        proto_enc_u64(&e, r.status);
        proto_enc_str(&e, r.message, r.msg_len);
        proto_enc_u64(&e, r.last_seen_us);
        proto_enc_u64(&e, r.updated_at_us);
        proto_enc_u64(&e, r.expires_at_us);
        proto_enc_str(&e, r.node_id, r.node_len);
        proto_enc_u64(&e, r.ttl_s);
        if (extra > 0) {
            proto_enc_u64(&e, r.version);
            proto_enc_u64(&e, 0);
        }
        s_expect_malformed(b.data, b.len, "record with a wrong field count");
        proto_buf_fini(&b);
    }
    /* a message array with 17 elements (more than any message has) */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t e;
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 17, PROTO_PING, 1);
    for (int i = 0; i < 14; i++)
        proto_enc_u64(&e, 0);
    s_expect_malformed(b.data, b.len, "17 fields");
    proto_buf_fini(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Strict decoding: values
 * ------------------------------------------------------------------------------------------------- */

/* Encode a PUT with explicit raw fields (lengths may exceed the record buffers). */
static void s_enc_put_raw(proto_buf_t *b, const char *uid, size_t ulen, uint64_t status, const char *msg, size_t mlen,
                          uint64_t ttl, const char *node, size_t nlen)
{
    proto_enc_t e;
    proto_buf_reset(b);
    proto_enc_init(&e, b);
    proto_enc_header(&e, 4, PROTO_PUT, 1);
    proto_enc_array(&e, 1);
    proto_enc_array(&e, 5);
    proto_enc_str(&e, uid, ulen);
    proto_enc_u64(&e, status);
    proto_enc_str(&e, msg, mlen);
    proto_enc_u64(&e, ttl);
    proto_enc_str(&e, node, nlen);
}

/* The same fields as a whole record inside an APPLY. */
static void s_enc_apply_raw(proto_buf_t *b, const char *uid, size_t ulen, uint64_t status, const char *msg, size_t mlen,
                            uint64_t ttl, const char *node, size_t nlen)
{
    proto_enc_t e;
    proto_buf_reset(b);
    proto_enc_init(&e, b);
    proto_enc_header(&e, 4, PROTO_APPLY, 1);
    proto_enc_array(&e, 1);
    proto_enc_array(&e, 9);
    proto_enc_str(&e, uid, ulen);
    proto_enc_u64(&e, status);
    proto_enc_str(&e, msg, mlen);
    proto_enc_u64(&e, T0);
    proto_enc_u64(&e, T0);
    proto_enc_u64(&e, T0 + 1);
    proto_enc_str(&e, node, nlen);
    proto_enc_u64(&e, ttl);
    proto_enc_u64(&e, 5);
}

START_TEST(test_invalid_values)
{
    char big[600];
    memset(big, 'a', sizeof big);
    char msg257[PROTO_MESSAGE_MAX + 1];
    memset(msg257, 'm', sizeof msg257);
    static const struct {
        const char *s;
        size_t n;
    } bad_ids[] = {{"", 0}, {"a b", 3}, {"a/b", 3}, {"a\0b", 3}, {"caf\xc3\xa9", 5}, {"a\nb", 3}, {"\xff", 1}};
    static const struct {
        const char *s;
        size_t n;
    } bad_msgs[] = {{"\x01", 1},      {"tab\there", 8},  {"\x7f", 1},        {"\xc2\x85", 2}, {"\xc3", 1},
                    {"\xc0\x80", 2},   {"\xed\xa0\x80", 3}, {"\xf4\x90\x80\x80", 4}, {"a\0b", 3}, {"\xff\xfe", 2}};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_msg_t m;

    /* the reference: valid fields decode */
    s_enc_put_raw(&b, "alice", 5, PRESENCE_BUSY, "hi", 2, 60, "n1", 2);
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);
    s_enc_apply_raw(&b, "alice", 5, PRESENCE_BUSY, "hi", 2, 60, "n1", 2);
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);
    s_enc_put_raw(&b, big, PROTO_USER_ID_MAX, 0, big, PROTO_MESSAGE_MAX, PROTO_TTL_MAX, big, PROTO_NODE_ID_MAX);
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);

    for (int apply = 0; apply < 2; apply++) {
        void (*enc)(proto_buf_t *, const char *, size_t, uint64_t, const char *, size_t, uint64_t, const char *, size_t) =
            apply ? s_enc_apply_raw : s_enc_put_raw;
        for (size_t i = 0; i < ARRAY_LEN(bad_ids); i++) {
            enc(&b, bad_ids[i].s, bad_ids[i].n, 0, "", 0, 60, "n1", 2);
            s_expect_malformed(b.data, b.len, "bad user id");
            enc(&b, "alice", 5, 0, "", 0, 60, bad_ids[i].s, bad_ids[i].n);
            s_expect_malformed(b.data, b.len, "bad node id");
        }
        enc(&b, big, PROTO_USER_ID_MAX + 1, 0, "", 0, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "user id of 129 bytes");
        enc(&b, big, 600, 0, "", 0, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "user id of 600 bytes");
        enc(&b, "alice", 5, 0, "", 0, 60, big, PROTO_NODE_ID_MAX + 1);
        s_expect_malformed(b.data, b.len, "node id of 65 bytes");
        for (size_t i = 0; i < ARRAY_LEN(bad_msgs); i++) {
            enc(&b, "alice", 5, 0, bad_msgs[i].s, bad_msgs[i].n, 60, "n1", 2);
            s_expect_malformed(b.data, b.len, "bad message");
        }
        enc(&b, "alice", 5, 0, msg257, sizeof msg257, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "message of 257 bytes");
        enc(&b, "alice", 5, 0, big, 600, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "message of 600 bytes");
        /* status out of range */
        enc(&b, "alice", 5, PRESENCE_STATUS_COUNT, "", 0, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "status 4");
        enc(&b, "alice", 5, UINT64_MAX, "", 0, 60, "n1", 2);
        s_expect_malformed(b.data, b.len, "status 2^64-1");
        /* ttl out of range (PUT and whole records need 1..PROTO_TTL_MAX) */
        enc(&b, "alice", 5, 0, "", 0, PROTO_TTL_MAX + 1, "n1", 2);
        s_expect_malformed(b.data, b.len, "ttl 604801");
        enc(&b, "alice", 5, 0, "", 0, UINT64_MAX, "n1", 2);
        s_expect_malformed(b.data, b.len, "ttl 2^64-1");
        enc(&b, "alice", 5, 0, "", 0, (uint64_t)UINT32_MAX + 61, "n1", 2);
        s_expect_malformed(b.data, b.len, "ttl that wraps uint32");
    }
    s_enc_put_raw(&b, "alice", 5, 0, "", 0, 0, "n1", 2);
    s_expect_malformed(b.data, b.len, "PUT ttl 0");

    /* TOUCH: ttl 0 means keep; above the maximum is malformed */
    proto_enc_t e;
    for (int k = 0; k < 4; k++) {
        static const uint64_t ttls[] = {0, 1, PROTO_TTL_MAX, PROTO_TTL_MAX + 1};
        proto_buf_reset(&b);
        proto_enc_init(&e, &b);
        proto_enc_header(&e, 4, PROTO_TOUCH, 1);
        proto_enc_array(&e, 1);
        proto_enc_array(&e, 3);
        proto_enc_str(&e, "alice", 5);
        proto_enc_u64(&e, ttls[k]);
        proto_enc_str(&e, "n1", 2);
        int rc = s_dec(&b, &m);
        ck_assert_int_eq(rc, k < 3 ? PROTO_DEC_OK : PROTO_MALFORMED);
        if (rc == PROTO_DEC_OK)
            ck_assert_uint_eq(m.recs[0].ttl_s, ttls[k]);
        proto_msg_fini(&m);
    }

    /* GET/DEL/MGET keys */
    for (size_t i = 0; i < ARRAY_LEN(bad_ids); i++) {
        proto_buf_reset(&b);
        proto_enc_get(&b, PROTO_GET, 1, bad_ids[i].s, bad_ids[i].n);
        s_expect_malformed(b.data, b.len, "bad GET key");
        proto_buf_reset(&b);
        proto_enc_get(&b, PROTO_DEL, 1, bad_ids[i].s, bad_ids[i].n);
        s_expect_malformed(b.data, b.len, "bad DEL key");
        proto_str_t keys[3] = {{"ok", 2}, {bad_ids[i].s, (uint32_t)bad_ids[i].n}, {"ok2", 3}};
        proto_buf_reset(&b);
        proto_enc_keys(&b, 1, keys, 3);
        s_expect_malformed(b.data, b.len, "bad MGET key");
    }
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 1, big, PROTO_USER_ID_MAX + 1);
    s_expect_malformed(b.data, b.len, "GET key of 129 bytes");
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 1, big, PROTO_USER_ID_MAX);
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);

    /* REPLY: status beyond the known codes, error text too long */
    proto_buf_reset(&b);
    proto_enc_reply(&b, 1, PROTO_STATUS_MAX_ + 1, 0, NULL, 0, NULL, 0);
    s_expect_malformed(b.data, b.len, "reply status out of range");
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_reply_raw_begin(&e, 1, PROTO_OK, 0, 0);
    proto_enc_str(&e, big, PROTO_ERRMSG_MAX + 1);
    proto_enc_u64(&e, 0);
    s_expect_malformed(b.data, b.len, "reply error text of 257 bytes");
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_reply_raw_begin(&e, 1, PROTO_OK, 0, 0);
    proto_enc_str(&e, "", 0);
    proto_enc_u64(&e, (uint64_t)UINT32_MAX + 1);
    s_expect_malformed(b.data, b.len, "reply flags beyond 32 bits");
    /* CATCHUP flags beyond 32 bits */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 9, PROTO_CATCHUP, 1);
    for (int k = 0; k < 3; k++)
        proto_enc_u64(&e, 1);
    proto_enc_u64(&e, (uint64_t)UINT32_MAX + 1);
    proto_enc_u64(&e, 0);
    proto_enc_str(&e, "", 0);
    s_expect_malformed(b.data, b.len, "catchup flags beyond 32 bits");
    /* CATCHUP_REPLY mode out of range, status out of range */
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_catchup_reply_begin(&e, 1, PROTO_OK, 1, PROTO_CATCHUP_SNAPSHOT_CONT + 1, 0, true, 0);
    proto_enc_catchup_reply_end(&e, "", 0);
    s_expect_malformed(b.data, b.len, "catchup mode 3");
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_catchup_reply_begin(&e, 1, 200, 1, 0, 0, true, 0);
    proto_enc_catchup_reply_end(&e, "", 0);
    s_expect_malformed(b.data, b.len, "catchup reply status 200");
    proto_buf_reset(&b);
    proto_enc_stats(&b, PROTO_PONG, 1, PROTO_STATUS_MAX_ + 1, NULL, 0);
    s_expect_malformed(b.data, b.len, "pong status out of range");
    proto_buf_fini(&b);
}
END_TEST

/* Encode CHANGES with explicit range and changes. */
static void s_enc_changes(proto_buf_t *b, uint64_t first, uint64_t last, const proto_change_t *ch, uint32_t n)
{
    proto_enc_t e;
    proto_buf_reset(b);
    proto_enc_init(&e, b);
    proto_enc_changes_begin(&e, 1, first, last, n);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_change(&e, &ch[i]);
}

START_TEST(test_changes_ranges)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_msg_t m;
    proto_change_t ch[3] = {s_ch_set(1, 5), s_ch_del("x", 6), s_ch_touch(2, 7)};

    s_enc_changes(&b, 5, 7, ch, 3);
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);
    s_enc_changes(&b, 1, 7, ch, 3); /* the range may start before the first change */
    ck_assert_int_eq(s_dec(&b, &m), PROTO_DEC_OK);
    proto_msg_fini(&m);

    s_enc_changes(&b, 0, 7, ch, 3);
    s_expect_malformed(b.data, b.len, "first_seq 0");
    s_enc_changes(&b, 8, 7, ch, 3);
    s_expect_malformed(b.data, b.len, "last_seq < first_seq");
    s_enc_changes(&b, 6, 7, ch, 3);
    s_expect_malformed(b.data, b.len, "a change before first_seq");
    s_enc_changes(&b, 5, 8, ch, 3);
    s_expect_malformed(b.data, b.len, "last change != last_seq");
    s_enc_changes(&b, 5, 6, ch, 3);
    s_expect_malformed(b.data, b.len, "a change after last_seq");
    s_enc_changes(&b, 5, 7, ch, 0);
    s_expect_malformed(b.data, b.len, "no changes");

    proto_change_t rev[3] = {ch[0], ch[2], ch[1]};
    s_enc_changes(&b, 5, 6, rev, 3);
    s_expect_malformed(b.data, b.len, "changes out of order");
    proto_change_t dup[2] = {s_ch_set(1, 5), s_ch_del("x", 5)};
    s_enc_changes(&b, 5, 5, dup, 2);
    s_expect_malformed(b.data, b.len, "duplicate change seq");
    /* the same order rules in a catch-up reply */
    proto_enc_t e;
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_catchup_reply_begin(&e, 1, PROTO_OK, 1, 0, 7, true, 3);
    for (int i = 0; i < 3; i++)
        proto_enc_change(&e, &rev[i]);
    proto_enc_catchup_reply_end(&e, "", 0);
    s_expect_malformed(b.data, b.len, "catch-up changes out of order");

    /* change seq 0, SET whose record version differs from the change seq, unknown kinds */
    proto_change_t z = s_ch_del("x", 0);
    s_enc_changes(&b, 1, 1, &z, 1);
    s_expect_malformed(b.data, b.len, "change seq 0");
    proto_change_t s = s_ch_set(1, 9);
    proto_buf_reset(&b);
    proto_enc_init(&e, &b);
    proto_enc_changes_begin(&e, 1, 9, 9, 1);
    proto_enc_array(&e, 3);
    proto_enc_u64(&e, PROTO_CH_SET);
    proto_enc_u64(&e, 9);
    s.rec.version = 8;
    proto_enc_record(&e, &s.rec);
    s_expect_malformed(b.data, b.len, "SET version != change seq");
    for (int kind = 0; kind <= 5; kind += 4) { /* 0 and 4 */
        proto_buf_reset(&b);
        proto_enc_init(&e, &b);
        proto_enc_changes_begin(&e, 1, 9, 9, 1);
        proto_enc_array(&e, 3);
        proto_enc_u64(&e, (uint64_t)kind);
        proto_enc_u64(&e, 9);
        proto_enc_str(&e, "x", 1);
        s_expect_malformed(b.data, b.len, "unknown change kind");
    }
    /* a payload of the wrong kind: DEL with a record, TOUCH with a string, SET with a TOUCH tuple */
    proto_change_t t = s_ch_touch(1, 9), d = s_ch_del("x", 9);
    uint8_t kinds[3] = {PROTO_CH_DEL, PROTO_CH_TOUCH, PROTO_CH_SET};
    const proto_change_t *payloads[3] = {&s, &d, &t};
    for (int i = 0; i < 3; i++) {
        proto_change_t mix = *payloads[i];
        mix.rec.version = 9;
        proto_buf_t tmp;
        proto_buf_init(&tmp);
        proto_enc_t te;
        proto_enc_init(&te, &tmp);
        proto_enc_change(&te, &mix); /* [kind, seq, payload]: replace the kind byte */
        ck_assert_int_eq((unsigned char)tmp.data[0], 0x93);
        tmp.data[1] = (char)kinds[i];
        proto_buf_reset(&b);
        proto_enc_init(&e, &b);
        proto_enc_changes_begin(&e, 1, 9, 9, 1);
        proto_enc_raw(&e, tmp.data, tmp.len);
        s_expect_malformed(b.data, b.len, "payload of another kind");
        proto_buf_fini(&tmp);
    }
    /* a TOUCH payload with a bad ttl */
    t.rec.ttl_s = PROTO_TTL_MAX + 1;
    s_enc_changes(&b, 9, 9, &t, 1);
    s_expect_malformed(b.data, b.len, "TOUCH ttl out of range");
    proto_buf_fini(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Randomized mutations
 * ------------------------------------------------------------------------------------------------- */

/* Everything a successful decode hands out must respect the documented limits. */
static void s_check_decoded(const proto_msg_t *m)
{
    for (uint32_t i = 0; m->recs && i < m->n; i++) {
        const proto_record_t *r = &m->recs[i];
        ck_assert(util_valid_user_id(r->user_id, r->uid_len));
        ck_assert_uint_eq(strlen(r->user_id), r->uid_len);
        ck_assert(r->node_len == 0 || util_valid_node_id(r->node_id, r->node_len));
        ck_assert_uint_eq(strlen(r->node_id), r->node_len);
        ck_assert(util_valid_message(r->message, r->msg_len));
        ck_assert_uint_le(r->msg_len, PROTO_MESSAGE_MAX);
        ck_assert_uint_lt(r->status, PRESENCE_STATUS_COUNT);
        ck_assert_uint_le(r->ttl_s, PROTO_TTL_MAX);
    }
    for (uint32_t i = 0; m->changes && i < m->n; i++) {
        const proto_change_t *c = &m->changes[i];
        ck_assert(c->kind >= PROTO_CH_SET && c->kind <= PROTO_CH_TOUCH);
        ck_assert(util_valid_user_id(c->rec.user_id, c->rec.uid_len));
        ck_assert_uint_gt(c->rec.version, 0);
        if (i)
            ck_assert_uint_gt(c->rec.version, m->changes[i - 1].rec.version);
    }
    for (uint32_t i = 0; m->keys && i < m->n; i++)
        ck_assert(util_valid_user_id(m->keys[i].p, m->keys[i].len));
    for (uint32_t i = 0; m->stats && i < m->n; i++)
        ck_assert_uint_le(m->stats[i].name.len, PROTO_STAT_NAME_MAX);
    ck_assert_uint_le(m->n, PROTO_ITEMS_MAX);
}

START_TEST(test_fuzz_mutations)
{
    static const unsigned char interesting[] = {0x00, 0x7f, 0x80, 0x90, 0x9f, 0xc0, 0xc1, 0xc2, 0xc4, 0xca, 0xcb,
                                                0xcc, 0xcf, 0xd3, 0xd4, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xff};
    proto_buf_t c[CORPUS_N];
    s_corpus(c);
    uint64_t st = 0xfeed0000u + (uint64_t)_i;
    int ok = 0, malformed = 0, eversion = 0;
    unsigned char *buf = malloc(8192);
    for (int iter = 0; iter < 6000; iter++) {
        const proto_buf_t *base = &c[s_rng(&st) % CORPUS_N];
        size_t len = base->len;
        memcpy(buf, base->data, len);
        int nmut = 1 + (int)(s_rng(&st) % 4);
        for (int k = 0; k < nmut; k++) {
            uint64_t r = s_rng(&st);
            size_t pos = len ? (size_t)((r >> 8) % len) : 0;
            switch (r % 5) {
            case 0: /* bit flip */
                if (len)
                    buf[pos] ^= (unsigned char)(1u << ((r >> 40) % 8));
                break;
            case 1: /* byte insert */
                if (len < 8000) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = (unsigned char)(r >> 48);
                    len++;
                }
                break;
            case 2: /* byte delete */
                if (len) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 3: /* interesting byte */
                if (len)
                    buf[pos] = interesting[(r >> 40) % sizeof interesting];
                break;
            case 4: /* truncate */
                len = pos;
                break;
            }
        }
        /* an exact-size copy so ASan catches any read beyond the frame */
        unsigned char *frame = malloc(len ? len : 1);
        memcpy(frame, buf, len);
        proto_msg_t m;
        int rc = proto_decode(frame, len, &m);
        if (rc == PROTO_DEC_OK) {
            s_check_decoded(&m);
            ok++;
        } else if (rc == PROTO_MALFORMED) {
            ck_assert(m.err[0] != '\0');
            ck_assert_ptr_null(m.recs);
            malformed++;
        } else {
            ck_assert_msg(rc == PROTO_EVERSION, "proto_decode returned %d", rc);
            eversion++;
        }
        proto_msg_fini(&m);
        uint8_t type;
        uint64_t rid;
        (void)proto_peek_header(frame, len, &type, &rid);
        proto_record_t rec;
        (void)proto_record_decode(frame, len, &rec);
        free(frame);
    }
    free(buf);
    /* the fuzzer must exercise both outcomes */
    ck_assert_int_gt(ok, 50);
    ck_assert_int_gt(malformed, 1000);
    (void)eversion;
    s_corpus_fini(c);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Stats lists and histograms
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_stats_list)
{
    stats_list_t l;
    stats_list_init(&l);
    stats_add(&l, "cache_items", 12);
    stats_addf(&l, 34, "http_requests_total{route=\"%s\",code=\"%d\"}", "get", 200);
    stats_add(&l, "zero", 0);
    stats_add(&l, "max", UINT64_MAX);
    ck_assert_uint_eq(l.n, 4);
    uint64_t v = 99;
    ck_assert_int_eq(stats_find(l.v, l.n, "cache_items", &v), 1);
    ck_assert_uint_eq(v, 12);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_requests_total{route=\"get\",code=\"200\"}", &v), 1);
    ck_assert_uint_eq(v, 34);
    ck_assert_int_eq(stats_find(l.v, l.n, "zero", &v), 1);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(stats_find(l.v, l.n, "max", &v), 1);
    ck_assert_uint_eq(v, UINT64_MAX);
    v = 7;
    ck_assert_int_eq(stats_find(l.v, l.n, "cache_item", &v), 0);  /* prefix */
    ck_assert_int_eq(stats_find(l.v, l.n, "cache_items2", &v), 0); /* longer */
    ck_assert_int_eq(stats_find(l.v, l.n, "", &v), 0);
    ck_assert_uint_eq(v, 7);
    ck_assert_int_eq(stats_find(NULL, 0, "x", &v), 0);

    /* names longer than PROTO_STAT_NAME_MAX are not added (they could not be decoded) */
    char name[PROTO_STAT_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    name[PROTO_STAT_NAME_MAX + 1] = '\0';
    stats_add(&l, name, 1);
    stats_addf(&l, 1, "%s", name);
    ck_assert_uint_eq(l.n, 4);
    name[PROTO_STAT_NAME_MAX] = '\0';
    stats_add(&l, name, 5);
    ck_assert_uint_eq(l.n, 5);
    ck_assert_int_eq(stats_find(l.v, l.n, name, &v), 1);
    ck_assert_uint_eq(v, 5);

    /* reset empties the list; it is reusable */
    stats_list_reset(&l);
    ck_assert_uint_eq(l.n, 0);
    ck_assert_int_eq(stats_find(l.v, l.n, "cache_items", &v), 0);
    stats_add(&l, "again", 3);
    ck_assert_int_eq(stats_find(l.v, l.n, "again", &v), 1);
    ck_assert_uint_eq(v, 3);
    stats_list_fini(&l);
    ck_assert_ptr_null(l.v);
    ck_assert_uint_eq(l.n, 0);
    stats_list_fini(&l); /* twice is harmless */

    /* an empty name as the very first entry (no arena yet) */
    stats_list_init(&l);
    stats_add(&l, "", 1);
    stats_add(&l, "a", 2);
    ck_assert_int_eq(stats_find(l.v, l.n, "a", &v), 1);
    ck_assert_uint_eq(v, 2);
    stats_list_fini(&l);
}
END_TEST

START_TEST(test_stats_arena_growth)
{
    stats_list_t l;
    stats_list_init(&l);
    /* ~120-byte names: the arena (and the vector) must grow many times; every earlier name must
     * still read back afterwards (pointers fixed up after each move) */
    for (uint32_t i = 0; i < 600; i++)
        stats_addf(&l, i, "some_rather_long_metric_name_total{node=\"node-%04u\",route=\"presence_get\",code=\"200\",x=\"%08u\"}", i,
                   i * 7);
    ck_assert_uint_eq(l.n, PROTO_STATS_MAX); /* capped */
    for (uint32_t i = 0; i < l.n; i++) {
        char want[PROTO_STAT_NAME_MAX + 1];
        int n = snprintf(want, sizeof want,
                         "some_rather_long_metric_name_total{node=\"node-%04u\",route=\"presence_get\",code=\"200\",x=\"%08u\"}",
                         i, i * 7);
        ck_assert_uint_eq(l.v[i].name.len, (uint32_t)n);
        ck_assert_mem_eq(l.v[i].name.p, want, (size_t)n);
        ck_assert_uint_eq(l.v[i].value, i);
        uint64_t v;
        ck_assert_int_eq(stats_find(l.v, l.n, want, &v), 1);
        ck_assert_uint_eq(v, i);
    }
    ck_assert_uint_ge(l.arena_cap, l.arena_len);
    ck_assert_uint_gt(l.arena_len, 2048 * 8);
    stats_list_fini(&l);
}
END_TEST

START_TEST(test_stats_hist_export)
{
    stats_hist_t h;
    stats_hist_init_pow2(&h, 4); /* bounds 1 2 4 8 */
    ck_assert_int_eq(h.nb, 4);
    static const uint64_t obs[] = {0, 1, 2, 3, 3, 4, 8, 9, 100};
    uint64_t sum = 0;
    for (size_t i = 0; i < ARRAY_LEN(obs); i++) {
        stats_hist_observe(&h, obs[i]);
        sum += obs[i];
    }
    stats_list_t l;
    stats_list_init(&l);
    stats_add_hist(&l, "batch_size", NULL, &h);
    /* cumulative: le=1 {0,1}=2, le=2 +{2}=3, le=4 +{3,3,4}=6, le=8 +{8}=7, +Inf +{9,100}=9 */
    static const struct {
        const char *name;
        uint64_t v;
    } want[] = {
        {"batch_size_bucket{le=\"1\"}", 2}, {"batch_size_bucket{le=\"2\"}", 3}, {"batch_size_bucket{le=\"4\"}", 6},
        {"batch_size_bucket{le=\"8\"}", 7}, {"batch_size_bucket{le=\"+Inf\"}", 9},
    };
    ck_assert_uint_eq(l.n, ARRAY_LEN(want) + 2);
    uint64_t v;
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        ck_assert_msg(stats_find(l.v, l.n, want[i].name, &v) == 1, "%s missing", want[i].name);
        ck_assert_msg(v == want[i].v, "%s = %llu, want %llu", want[i].name, (unsigned long long)v,
                      (unsigned long long)want[i].v);
    }
    ck_assert_int_eq(stats_find(l.v, l.n, "batch_size_sum", &v), 1);
    ck_assert_uint_eq(v, sum);
    ck_assert_int_eq(stats_find(l.v, l.n, "batch_size_count", &v), 1);
    ck_assert_uint_eq(v, ARRAY_LEN(obs));
    /* buckets never decrease */
    for (uint32_t i = 1; i < 5; i++)
        ck_assert_uint_ge(l.v[i].value, l.v[i - 1].value);

    /* latency histogram with labels: seconds in le, the sum in microseconds marked :us */
    stats_hist_t lat;
    stats_hist_init_latency(&lat);
    ck_assert_int_eq(lat.nb, 16);
    stats_hist_observe(&lat, 50);       /* <= 0.0001 s */
    stats_hist_observe(&lat, 100);      /* <= 0.0001 s (bounds are inclusive) */
    stats_hist_observe(&lat, 101);      /* <= 0.00025 s */
    stats_hist_observe(&lat, 2000000);  /* <= 2.5 s */
    stats_hist_observe(&lat, 60000000); /* +Inf */
    stats_list_reset(&l);
    stats_add_hist(&l, "http_request_duration_seconds", "route=\"get\"", &lat);
    ck_assert_uint_eq(l.n, 16 + 1 + 2);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"0.0001\"}", &v), 1);
    ck_assert_uint_eq(v, 2);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"0.00025\"}", &v), 1);
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"1\"}", &v), 1);
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"2.5\"}", &v), 1);
    ck_assert_uint_eq(v, 4);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"10\"}", &v), 1);
    ck_assert_uint_eq(v, 4);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_bucket{route=\"get\",le=\"+Inf\"}", &v), 1);
    ck_assert_uint_eq(v, 5);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_sum{route=\"get\"}:us", &v), 1);
    ck_assert_uint_eq(v, 50 + 100 + 101 + 2000000 + 60000000);
    ck_assert_int_eq(stats_find(l.v, l.n, "http_request_duration_seconds_count{route=\"get\"}", &v), 1);
    ck_assert_uint_eq(v, 5);
    /* an empty label string behaves like NULL */
    stats_list_reset(&l);
    stats_add_hist(&l, "h", "", &h);
    ck_assert_int_eq(stats_find(l.v, l.n, "h_bucket{le=\"+Inf\"}", &v), 1);
    ck_assert_uint_eq(v, 9);
    ck_assert_int_eq(stats_find(l.v, l.n, "h_count", &v), 1);
    stats_list_fini(&l);
}
END_TEST

START_TEST(test_stats_quantile)
{
    stats_hist_t h;
    stats_hist_init_pow2(&h, 8); /* 1 2 4 ... 128 */
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.5), 0); /* empty */
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.99), 0);
    for (int i = 0; i < 100; i++)
        stats_hist_observe(&h, 3); /* all in the le=4 bucket */
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.0), 4);
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.5), 4);
    ck_assert_uint_eq(stats_hist_quantile(&h, 1.0), 4);

    stats_hist_init_pow2(&h, 8);
    for (int i = 0; i < 90; i++)
        stats_hist_observe(&h, 1); /* le=1 */
    for (int i = 0; i < 9; i++)
        stats_hist_observe(&h, 100); /* le=128 */
    stats_hist_observe(&h, 1000);    /* +Inf */
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.5), 1);
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.9), 1);
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.95), 128);
    ck_assert_uint_eq(stats_hist_quantile(&h, 0.99), 128);
    ck_assert_uint_eq(stats_hist_quantile(&h, 1.0), UINT64_MAX); /* the overflow bucket has no bound */
    /* monotone in q */
    uint64_t prev = 0;
    for (int k = 0; k <= 100; k++) {
        uint64_t q = stats_hist_quantile(&h, k / 100.0);
        ck_assert_uint_ge(q, prev);
        prev = q;
    }
    /* latency: observations of 3 ms land in the 5 ms bucket */
    stats_hist_t lat;
    stats_hist_init_latency(&lat);
    for (int i = 0; i < 10; i++)
        stats_hist_observe(&lat, 3000);
    ck_assert_uint_eq(stats_hist_quantile(&lat, 0.5), 5000);
    /* pow2 is capped at STATS_HIST_MAX_BUCKETS */
    stats_hist_init_pow2(&h, 100);
    ck_assert_int_eq(h.nb, STATS_HIST_MAX_BUCKETS);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */

static Suite *s_suite(void)
{
    Suite *s = suite_create("proto");

    TCase *tc = tcase_create("roundtrip");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_rt_get_del);
    tcase_add_test(tc, test_rt_mget);
    tcase_add_test(tc, test_rt_put_touch_apply);
    tcase_add_test(tc, test_rt_write_deadline);
    tcase_add_test(tc, test_rt_cmd_id_member);
    tcase_add_test(tc, test_rt_simple_catchup_hugz);
    tcase_add_test(tc, test_rt_reply);
    tcase_add_test(tc, test_rt_reply_absent);
    tcase_add_test(tc, test_rt_changes);
    tcase_add_test(tc, test_rt_stats_msgs);
    tcase_add_test(tc, test_rt_corpus_and_buf);
    tcase_add_test(tc, test_rt_batch);
    tcase_add_test(tc, test_rt_sessions_msgs);
    tcase_add_test(tc, test_rt_session_commands);
    tcase_add_test(tc, test_batch_part_limit);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("record_header");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_record_codec);
    tcase_add_test(tc, test_record_rt_fields);
    tcase_add_test(tc, test_peek_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("strict_structure");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_truncated_everywhere);
    tcase_add_test(tc, test_trailing_and_oversized);
    tcase_add_test(tc, test_bad_version);
    tcase_add_test(tc, test_unknown_types);
    tcase_add_test(tc, test_hostile_containers);
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_ext_float_types);
    tcase_add_test(tc, test_wrong_type_every_field);
    tcase_add_test(tc, test_wrong_counts_every_array);
    suite_add_tcase(s, tc);

    tc = tcase_create("strict_values");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_invalid_values);
    tcase_add_test(tc, test_reply_absent_malformed);
    tcase_add_test(tc, test_changes_ranges);
    suite_add_tcase(s, tc);

    tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_fuzz_mutations, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("stats");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stats_list);
    tcase_add_test(tc, test_stats_arena_growth);
    tcase_add_test(tc, test_stats_hist_export);
    tcase_add_test(tc, test_stats_quantile);
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
