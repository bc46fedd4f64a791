/* check_relay.c -- Check suite for the sync relay's request logic (sync/relay.c), without a process.
 *
 * Each test binds a "center" of its own on inproc endpoints (a ROUTER answering like a store-node:
 * catch-ups from a small log of changes, STATS; a PUB for its change stream), makes a relay between
 * it and a region "cache-node" (a DEALER and a SUB of the test's), and runs the relay on a thread of
 * its own (relay_run, as the process does). Everything is real ZeroMQ and the real wire format;
 * waits are polls with deadlines, never sleeps.
 *
 * What is pinned: forwarding with the relay's own request ids and answers back with the caller's,
 * EUNAVAIL at once while the link is down, ETIMEOUT at the deadline (and a late answer dropped),
 * writes whose deadline passed are not forwarded, BATCHes forwarded one by one, malformed input
 * answered EBADREQ and counted, a malformed answer from the center answered EINTERNAL, catch-ups
 * answered from the window or forwarded, the flush answer for another epoch while the link is
 * down, a snapshot followed by the live changes buffered during it relayed from the snapshot's
 * base with contiguous ranges, heartbeats flagged while the link is down, and pending commands
 * answered at shutdown.
 */
#include "log.h"
#include "proto.h"
#include "relay.h"
#include "stats.h"
#include "util.h"
#include "zutil.h"

#include <check.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define EPOCH 7
#define WAIT_MS 5000

typedef struct env {
    void *zctx;
    void *ccmd, *cpub;   /* the center: ROUTER (commands, catch-ups) and PUB (stream) */
    void *cache, *csub;  /* a region cache-node: DEALER to the relay, SUB to its stream */
    relay_t *r;
    pthread_t th;
    volatile sig_atomic_t stop;
    /* The center's state: its log of changes (version i+1 at i). */
    bool answer_catchups; /* false: the center never answers its stream's catch-ups (link down) */
    bool held;            /* a catch-up of the stream left unanswered: the last one's id (the test answers) */
    uint64_t held_rid;
    uint64_t seq;
    proto_change_t log[32];
    uint8_t sync_ident[32]; /* the relay's sync client's DEALER (the first to ask for a catch-up) */
    size_t sync_ident_len;
    char ep_cmd[64], ep_pub[64];
    /* Decoded messages borrow their strings from the bytes: the last message each side received
     * is kept here until the next one. */
    proto_buf_t cache_in, center_in;
} env_t;

static void *s_relay_thread(void *arg)
{
    env_t *e = arg;
    relay_run(e->r, &e->stop);
    return NULL;
}

static proto_change_t s_change(const char *uid, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_SET;
    proto_record_set_uid(&c.rec, uid, strlen(uid));
    proto_record_set_node(&c.rec, "center", 6);
    proto_record_set_msg(&c.rec, "hi", 2);
    c.rec.status = PRESENCE_ONLINE;
    c.rec.ttl_s = 60;
    c.rec.version = seq;
    return c;
}

static void s_env(env_t *e, const char *name, uint64_t req_timeout_ms, uint64_t window_max)
{
    memset(e, 0, sizeof *e);
    e->answer_catchups = true;
    proto_buf_init(&e->cache_in);
    proto_buf_init(&e->center_in);
    e->seq = 10; /* the center's database starts at 10: a new relay gets a snapshot through 10 */
    e->zctx = zmq_ctx_new();
    char ccmd[64], cpub[64];
    snprintf(ccmd, sizeof ccmd, "inproc://rl-%s-ccmd", name);
    snprintf(cpub, sizeof cpub, "inproc://rl-%s-cpub", name);
    snprintf(e->ep_cmd, sizeof e->ep_cmd, "inproc://rl-%s-cmd", name);
    snprintf(e->ep_pub, sizeof e->ep_pub, "inproc://rl-%s-pub", name);
    e->ccmd = zu_socket(e->zctx, ZMQ_ROUTER, 0, 0);
    e->cpub = zu_socket(e->zctx, ZMQ_PUB, 0, 0);
    ck_assert_int_eq(zmq_bind(e->ccmd, ccmd), 0);
    ck_assert_int_eq(zmq_bind(e->cpub, cpub), 0);
    relay_config_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.cmd_ep, sizeof c.cmd_ep, "%s", e->ep_cmd);
    snprintf(c.pub_ep, sizeof c.pub_ep, "%s", e->ep_pub);
    snprintf(c.center, sizeof c.center, "%s", ccmd);
    snprintf(c.center_cmd, sizeof c.center_cmd, "%s", ccmd);
    snprintf(c.center_pub, sizeof c.center_pub, "%s", cpub);
    c.window_max = window_max;
    c.req_timeout_ms = req_timeout_ms;
    c.hb_limit_ms = 3000;
    char err[256];
    ck_assert_msg(relay_new(e->zctx, &c, &e->r, err) == 0, "%s", err);
    e->cache = zu_socket(e->zctx, ZMQ_DEALER, 0, 0);
    e->csub = zu_socket(e->zctx, ZMQ_SUB, 0, 0);
    zmq_setsockopt(e->csub, ZMQ_SUBSCRIBE, "", 0);
    ck_assert_int_eq(zmq_connect(e->cache, e->ep_cmd), 0);
    ck_assert_int_eq(zmq_connect(e->csub, e->ep_pub), 0);
    ck_assert_int_eq(pthread_create(&e->th, NULL, s_relay_thread, e), 0);
}

static void s_env_stop(env_t *e)
{
    if (!e->r)
        return;
    e->stop = 1;
    /* Wake the relay's wait: it sees the flag and leaves the message unread. */
    ck_assert_int_eq(zu_send(e->cache, NULL, 0, "\xc1", 1), 0);
    pthread_join(e->th, NULL);
    relay_destroy(&e->r);
    ck_assert_ptr_null(e->r);
}

static void s_env_fini(env_t *e)
{
    s_env_stop(e);
    zmq_close(e->cache);
    zmq_close(e->csub);
    zmq_close(e->ccmd);
    zmq_close(e->cpub);
    zmq_ctx_term(e->zctx);
    proto_buf_fini(&e->cache_in);
    proto_buf_fini(&e->center_in);
}

/* ---- the test's sockets --------------------------------------------------------------------- */

/* Receive one message within timeout_ms. Returns its frame count, or -1 on timeout. */
static int s_recv(void *sock, zmq_msg_t *f, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return -1;
    int n;
    ck_assert_int_eq(zu_recv(sock, f, ZU_FRAMES_MAX, &n), 0);
    return n;
}

/* The cache-node's next message from the relay, decoded (within WAIT_MS: it must come). */
static void s_cache_recv(env_t *e, proto_msg_t *m)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = s_recv(e->cache, f, WAIT_MS);
    ck_assert_msg(n == 1, "no answer from the relay");
    proto_buf_reset(&e->cache_in);
    proto_buf_append(&e->cache_in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
    zu_close_frames(f, n);
    ck_assert_int_eq(proto_decode(e->cache_in.data, e->cache_in.len, m), PROTO_DEC_OK);
}

static void s_cache_send(env_t *e, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->cache, NULL, 0, b->data, b->len), 0);
}

/* A reply's status and error text. */
static void s_expect_status(env_t *e, uint64_t rid, uint8_t status, const char *text)
{
    proto_msg_t m;
    s_cache_recv(e, &m);
    ck_assert_int_eq(m.type, PROTO_REPLY);
    ck_assert_uint_eq(m.rid, rid);
    ck_assert_int_eq(m.status, status);
    if (text)
        ck_assert_int_eq(memcmp(m.key.p, text, strlen(text)), 0);
    proto_msg_fini(&m);
}

/* The relay's numbers, through the region (STATS -> STATS_REPLY). */
static uint64_t s_stat(env_t *e, const char *name)
{
    static uint64_t rid = 900000;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_STATS, ++rid);
    s_cache_send(e, &b);
    proto_buf_fini(&b);
    proto_msg_t m;
    s_cache_recv(e, &m);
    ck_assert_int_eq(m.type, PROTO_STATS_REPLY);
    ck_assert_uint_eq(m.rid, rid);
    uint64_t v = UINT64_MAX;
    ck_assert_msg(stats_find(m.stats, m.n, name, &v), "no stat %s", name);
    proto_msg_fini(&m);
    return v;
}

/* ---- the center ------------------------------------------------------------------------------ */

static void s_center_reply(env_t *e, const void *ident, size_t ilen, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->ccmd, ident, ilen, b->data, b->len), 0);
}

/* Answer the stream's catch-up like a store-node: another epoch gets a snapshot (no data) through
 * the current sequence, ours the changes after the requested sequence. */
static void s_center_catchup(env_t *e, const void *ident, size_t ilen, const proto_msg_t *m)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    if (m->epoch != EPOCH) {
        proto_enc_catchup_reply_begin(&enc, m->rid, PROTO_OK, EPOCH, PROTO_CATCHUP_SNAPSHOT, e->seq, true, 0);
    } else {
        uint32_t n = 0;
        for (uint64_t s = m->seq + 1; s <= e->seq; s++)
            n += s > 10;
        proto_enc_catchup_reply_begin(&enc, m->rid, PROTO_OK, EPOCH, PROTO_CATCHUP_INCREMENTAL, e->seq, true, n);
        for (uint64_t s = m->seq + 1; s <= e->seq; s++)
            if (s > 10)
                proto_enc_change(&enc, &e->log[s - 11]);
    }
    proto_enc_catchup_reply_end(&enc, "", 0);
    s_center_reply(e, ident, ilen, &b);
    proto_buf_fini(&b);
}

/* The center's next command that is not its own business (catch-ups of the relay's stream and
 * STATS polls are answered here). Returns 0 with *m (caller finis) and the sender, or -1 when
 * nothing came within timeout_ms. */
static int s_center_next(env_t *e, proto_msg_t *m, uint8_t *ident, size_t *ilen, int timeout_ms)
{
    uint64_t until = util_mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = util_mono_ms();
        if (now >= until)
            return -1;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e->ccmd, f, (int)(until - now));
        if (n < 0)
            return -1;
        ck_assert_int_eq(n, 2);
        size_t il = zmq_msg_size(&f[0]);
        ck_assert_uint_le(il, 32);
        memcpy(ident, zmq_msg_data(&f[0]), il);
        *ilen = il;
        proto_buf_reset(&e->center_in);
        proto_buf_append(&e->center_in, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
        zu_close_frames(f, n);
        ck_assert_int_eq(proto_decode(e->center_in.data, e->center_in.len, m), PROTO_DEC_OK);
        bool from_sync = e->sync_ident_len == il && memcmp(e->sync_ident, ident, il) == 0;
        if (m->type == PROTO_CATCHUP && !e->sync_ident_len && m->epoch == 0) {
            memcpy(e->sync_ident, ident, il); /* the stream's first catch-up: epoch 0 */
            e->sync_ident_len = il;
            from_sync = true;
        }
        if (m->type == PROTO_CATCHUP && from_sync) {
            if (e->answer_catchups) {
                s_center_catchup(e, ident, il, m);
            } else {
                e->held = true;
                e->held_rid = m->rid;
            }
            proto_msg_fini(m);
            continue;
        }
        if (m->type == PROTO_STATS) {
            stats_list_t l;
            stats_list_init(&l);
            stats_add(&l, "store_records", 5);
            proto_buf_t b;
            proto_buf_init(&b);
            proto_enc_stats(&b, PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
            s_center_reply(e, ident, il, &b);
            proto_buf_fini(&b);
            stats_list_fini(&l);
            proto_msg_fini(m);
            continue;
        }
        return 0;
    }
}

/* Serve the center until the relay says its link is up (PONG relay_link_up = 1). */
static void s_go_live(env_t *e)
{
    uint64_t until = util_mono_ms() + WAIT_MS;
    static uint64_t rid = 800000;
    while (util_mono_ms() < until) {
        proto_msg_t m;
        uint8_t id[32];
        size_t il;
        if (s_center_next(e, &m, id, &il, 20) == 0) {
            ck_abort_msg("unexpected command at the center: %s", proto_type_name(m.type));
        }
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_simple(&b, PROTO_PING, ++rid);
        s_cache_send(e, &b);
        proto_buf_fini(&b);
        s_cache_recv(e, &m);
        ck_assert_int_eq(m.type, PROTO_PONG);
        uint64_t up = 0;
        stats_find(m.stats, m.n, "relay_link_up", &up);
        proto_msg_fini(&m);
        if (up)
            return;
    }
    ck_abort_msg("the relay's link never came up");
}

/* The center writes `n` changes and publishes them (and a heartbeat); wait until the relay has
 * relayed them (its relay_sequence). A published message lost to a slow subscription is
 * repaired the real way: the heartbeat ahead of the relay makes it catch up. */
static void s_center_write(env_t *e, int n)
{
    uint64_t first = e->seq + 1;
    for (int i = 0; i < n; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%llu", (unsigned long long)(e->seq + 1));
        e->log[e->seq - 10] = s_change(uid, e->seq + 1);
        e->seq++;
    }
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_changes_begin(&enc, EPOCH, first, e->seq, (uint32_t)n);
    for (uint64_t s = first; s <= e->seq; s++)
        proto_enc_change(&enc, &e->log[s - 11]);
    char t = PROTO_TOPIC_CHANGES;
    zmq_send(e->cpub, &t, 1, ZMQ_SNDMORE);
    zmq_send(e->cpub, b.data, b.len, 0);
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (s_stat(e, "relay_sequence") < e->seq) {
        ck_assert_msg(util_mono_ms() < until, "the relay did not relay the center's changes");
        proto_buf_reset(&b);
        proto_enc_hugz(&b, EPOCH, e->seq, util_now_us());
        t = PROTO_TOPIC_HUGZ;
        zmq_send(e->cpub, &t, 1, ZMQ_SNDMORE);
        zmq_send(e->cpub, b.data, b.len, 0);
        proto_msg_t m;
        uint8_t id[32];
        size_t il;
        if (s_center_next(e, &m, id, &il, 20) == 0)
            ck_abort_msg("unexpected command at the center: %s", proto_type_name(m.type));
    }
    proto_buf_fini(&b);
}

/* ==== forwarding ============================================================================= */

START_TEST(test_forward_roundtrip)
{
    env_t e;
    s_env(&e, "fwd", 1500, 1 << 20);
    s_go_live(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 42, "alice", 5);
    s_cache_send(&e, &b);
    /* The center sees the same GET under the relay's own request id. */
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    ck_assert_int_eq(m.type, PROTO_GET);
    ck_assert_int_eq((int)m.key.len, 5);
    ck_assert_int_eq(memcmp(m.key.p, "alice", 5), 0);
    uint64_t relay_rid = m.rid;
    proto_msg_fini(&m);
    /* Its answer comes back to the cache-node under the cache-node's id, records intact. */
    proto_change_t c = s_change("alice", 9);
    proto_buf_reset(&b);
    proto_enc_reply(&b, relay_rid, PROTO_OK, 9, &c.rec, 1, NULL, 0);
    s_center_reply(&e, id, il, &b);
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_REPLY);
    ck_assert_uint_eq(m.rid, 42);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.seq, 9);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].user_id, "alice");
    ck_assert_str_eq(m.recs[0].message, "hi");
    proto_msg_fini(&m);
    /* A write likewise, deadline and all. */
    proto_buf_reset(&b);
    proto_enc_get_dl(&b, PROTO_DEL, 43, "bob", 3, util_now_us() + 60000000);
    s_cache_send(&e, &b);
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    ck_assert_int_eq(m.type, PROTO_DEL);
    ck_assert_uint_gt(m.deadline_us, 0);
    relay_rid = m.rid;
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_reply(&b, relay_rid, PROTO_NOTFOUND, 11, NULL, 0, NULL, 0);
    s_center_reply(&e, id, il, &b);
    s_expect_status(&e, 43, PROTO_NOTFOUND, NULL);
    ck_assert_uint_eq(s_stat(&e, "relay_forwarded_total"), 2);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_link_down_unavailable)
{
    env_t e;
    s_env(&e, "down", 1500, 1 << 20);
    e.answer_catchups = false; /* the center's stream never becomes live */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 5, "alice", 5);
    s_cache_send(&e, &b);
    s_expect_status(&e, 5, PROTO_EUNAVAIL, "center unreachable");
    proto_record_t rec = s_change("alice", 0).rec;
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 6, &rec, 1);
    s_cache_send(&e, &b);
    s_expect_status(&e, 6, PROTO_EUNAVAIL, "center unreachable");
    ck_assert_uint_eq(s_stat(&e, "relay_unavailable_total"), 2);
    ck_assert_uint_eq(s_stat(&e, "relay_link_up"), 0);
    ck_assert_uint_eq(s_stat(&e, "relay_forwarded_total"), 0);
    /* Heartbeats to the region say the link is down. */
    uint64_t until = util_mono_ms() + WAIT_MS;
    bool seen = false;
    while (!seen && util_mono_ms() < until) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e.csub, f, 200);
        if (n != 2)
            continue;
        proto_msg_t m;
        ck_assert_int_eq(proto_decode(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &m), PROTO_DEC_OK);
        if (m.type == PROTO_HUGZ) {
            ck_assert(m.flags & PROTO_HUGZ_F_UPSTREAM_DOWN);
            seen = true;
        }
        proto_msg_fini(&m);
        zu_close_frames(f, n);
    }
    ck_assert_msg(seen, "no heartbeat on the region's stream");
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_timeout_and_late_answer)
{
    env_t e;
    s_env(&e, "timeout", 100, 1 << 20);
    s_go_live(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 77, "carol", 5);
    s_cache_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    uint64_t relay_rid = m.rid;
    proto_msg_fini(&m);
    /* The center does not answer in time: ETIMEOUT at the relay's deadline. */
    uint64_t t0 = util_mono_ms();
    s_expect_status(&e, 77, PROTO_ETIMEOUT, "center timed out");
    ck_assert_uint_lt(util_mono_ms() - t0, 2000);
    /* Its late answer is dropped: the cache-node hears nothing more (two round trips through the
     * relay make sure the answer was read: the relay drains the center's socket first on a turn). */
    proto_buf_reset(&b);
    proto_enc_reply(&b, relay_rid, PROTO_OK, 1, NULL, 0, NULL, 0);
    s_center_reply(&e, id, il, &b);
    ck_assert_uint_eq(s_stat(&e, "relay_timeouts_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "relay_timeouts_total"), 1);
    zmq_msg_t f[ZU_FRAMES_MAX];
    ck_assert_int_eq(s_recv(e.cache, f, 0), -1);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_expired_write_not_forwarded)
{
    env_t e;
    s_env(&e, "expired", 1500, 1 << 20);
    s_go_live(&e);
    proto_record_t rec = s_change("dave", 0).rec;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 8, &rec, 1, util_now_us() - 1000);
    s_cache_send(&e, &b);
    s_expect_status(&e, 8, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
    /* The next command the center sees is the one after it. */
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 9, "dave", 4);
    s_cache_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    ck_assert_int_eq(m.type, PROTO_GET);
    proto_msg_fini(&m);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_batch_forwarded_one_by_one)
{
    env_t e;
    s_env(&e, "batch", 1500, 1 << 20);
    s_go_live(&e);
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t b, frame;
    proto_buf_init(&b);
    proto_buf_init(&frame);
    proto_enc_get(&b, PROTO_GET, 1, "a", 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, 2);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 3, "c", 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_batch_encode(&bt, &frame);
    s_cache_send(&e, &frame);
    /* The PING is answered by the relay itself. */
    proto_msg_t m;
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_PONG);
    ck_assert_uint_eq(m.rid, 2);
    proto_msg_fini(&m);
    /* The GETs reach the center as two commands; answered in the other order, each comes back
     * under its own id. */
    uint8_t id[32];
    size_t il;
    uint64_t rids[2];
    char keys[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
        ck_assert_int_eq(m.type, PROTO_GET);
        rids[i] = m.rid;
        keys[i] = m.key.p[0];
        proto_msg_fini(&m);
    }
    ck_assert_int_eq(keys[0], 'a');
    ck_assert_int_eq(keys[1], 'c');
    for (int i = 1; i >= 0; i--) {
        proto_buf_reset(&b);
        proto_enc_reply(&b, rids[i], PROTO_NOTFOUND, 10, NULL, 0, NULL, 0);
        s_center_reply(&e, id, il, &b);
    }
    s_expect_status(&e, 3, PROTO_NOTFOUND, NULL);
    s_expect_status(&e, 1, PROTO_NOTFOUND, NULL);
    proto_batch_fini(&bt);
    proto_buf_fini(&frame);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== bad input ============================================================================== */

START_TEST(test_malformed_region_input)
{
    env_t e;
    s_env(&e, "malformed", 1500, 1 << 20);
    s_go_live(&e);
    /* A readable header naming request 31, a body that is not a GET: EBADREQ to 31. */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_header(&enc, 4, PROTO_GET, 31);
    proto_enc_u64(&enc, 5);
    s_cache_send(&e, &b);
    s_expect_status(&e, 31, PROTO_EBADREQ, NULL);
    /* A well-formed message no cache-node sends: EBADREQ "unexpected message type". */
    proto_buf_reset(&b);
    proto_enc_reply(&b, 32, PROTO_OK, 0, NULL, 0, NULL, 0);
    s_cache_send(&e, &b);
    s_expect_status(&e, 32, PROTO_EBADREQ, "unexpected message type");
    /* Garbage: dropped (nothing to answer), counted. */
    ck_assert_int_eq(zu_send(e.cache, NULL, 0, "\xc1\xc1\xc1", 3), 0);
    /* A BATCH inside a BATCH: dropped, counted. */
    proto_batch_t inner, outer;
    proto_batch_init(&inner);
    proto_batch_init(&outer);
    proto_buf_t f1, f2;
    proto_buf_init(&f1);
    proto_buf_init(&f2);
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, 40);
    proto_batch_add(&inner, b.data, b.len);
    proto_batch_add(&inner, b.data, b.len);
    proto_batch_encode(&inner, &f1);
    proto_batch_add(&outer, f1.data, f1.len);
    proto_batch_add(&outer, f1.data, f1.len);
    proto_batch_encode(&outer, &f2);
    s_cache_send(&e, &f2);
    ck_assert_uint_eq(s_stat(&e, "relay_malformed_total"), 5);
    /* Nothing of it reached the center. */
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, 50), -1);
    proto_batch_fini(&inner);
    proto_batch_fini(&outer);
    proto_buf_fini(&f1);
    proto_buf_fini(&f2);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_malformed_center_answer)
{
    env_t e;
    s_env(&e, "badanswer", 1500, 1 << 20);
    s_go_live(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 61, "erin", 4);
    s_cache_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    uint64_t relay_rid = m.rid;
    proto_msg_fini(&m);
    /* An answer whose header names the request but whose body does not decode: the region
     * trusts the relay no more than the relay trusts the center. */
    proto_buf_reset(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_header(&enc, 8, PROTO_REPLY, relay_rid);
    proto_enc_u64(&enc, 1);
    s_center_reply(&e, id, il, &b);
    s_expect_status(&e, 61, PROTO_EINTERNAL, "malformed answer from the center");
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== catch-ups ============================================================================== */

static void s_send_catchup(env_t *e, uint64_t rid, uint64_t epoch, uint64_t after, uint32_t flags)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_catchup(&b, rid, epoch, after, 100, flags, 0, "", 0);
    s_cache_send(e, &b);
    proto_buf_fini(&b);
}

START_TEST(test_catchup_from_window)
{
    env_t e;
    s_env(&e, "window", 1500, 1 << 20);
    s_go_live(&e); /* snapshot through 10: the relay's window starts at 10 */
    s_center_write(&e, 3); /* 11, 12, 13 */
    /* After 11: answered by the relay from its window, the center not asked. */
    s_send_catchup(&e, 70, EPOCH, 11, 0);
    proto_msg_t m;
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_CATCHUP_REPLY);
    ck_assert_uint_eq(m.rid, 70);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.epoch, EPOCH);
    ck_assert_int_eq(m.mode, PROTO_CATCHUP_INCREMENTAL);
    ck_assert_uint_eq(m.seq, 13);
    ck_assert(m.done);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_uint_eq(m.changes[0].rec.version, 12);
    ck_assert_uint_eq(m.changes[1].rec.version, 13);
    ck_assert_str_eq(m.changes[1].rec.user_id, "u13");
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "relay_local_catchups_total"), 1);
    /* From before the window (and from another epoch): forwarded to the center. */
    uint8_t id[32];
    size_t il;
    for (int i = 0; i < 2; i++) {
        s_send_catchup(&e, 71 + (uint64_t)i, i ? 99 : EPOCH, i ? 5 : 9, 0);
        ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
        ck_assert_int_eq(m.type, PROTO_CATCHUP);
        ck_assert_uint_eq(m.seq, i ? 5 : 9);
        uint64_t relay_rid = m.rid;
        proto_msg_fini(&m);
        proto_buf_t b;
        proto_buf_init(&b);
        proto_enc_t enc;
        proto_enc_init(&enc, &b);
        proto_enc_catchup_reply_begin(&enc, relay_rid, PROTO_OK, EPOCH, PROTO_CATCHUP_SNAPSHOT, 13, true, 0);
        proto_enc_catchup_reply_end(&enc, "", 0);
        s_center_reply(&e, id, il, &b);
        proto_buf_fini(&b);
        s_cache_recv(&e, &m);
        ck_assert_int_eq(m.type, PROTO_CATCHUP_REPLY);
        ck_assert_uint_eq(m.rid, 71 + (uint64_t)i);
        ck_assert_int_eq(m.mode, PROTO_CATCHUP_SNAPSHOT);
        proto_msg_fini(&m);
    }
    ck_assert_uint_eq(s_stat(&e, "relay_forwarded_catchups_total"), 2);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_catchup_window_bounded)
{
    /* A window too small for more than a frame or two: a catch-up from before what it holds goes
     * to the center. */
    env_t e;
    s_env(&e, "smallwin", 1500, 400);
    s_go_live(&e);
    for (int i = 0; i < 8; i++)
        s_center_write(&e, 2);
    uint64_t start = s_stat(&e, "relay_window_start");
    ck_assert_uint_gt(start, 10);
    ck_assert_uint_le(s_stat(&e, "relay_window_bytes"), 400 + 400); /* the newest frame may exceed */
    s_send_catchup(&e, 80, EPOCH, start - 1, 0);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    ck_assert_int_eq(m.type, PROTO_CATCHUP);
    proto_msg_fini(&m);
    s_send_catchup(&e, 81, EPOCH, start, 0);
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_CATCHUP_REPLY);
    ck_assert_uint_eq(m.rid, 81);
    ck_assert_uint_eq(m.seq, e.seq);
    proto_msg_fini(&m);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_catchup_link_down)
{
    env_t e;
    s_env(&e, "cudown", 1500, 1 << 20);
    s_go_live(&e); /* the relay learns epoch 7, sequence 10 */
    /* The center goes quiet: catch-ups unanswered, no heartbeats; the relay's stream goes silent. */
    e.answer_catchups = false;
    uint64_t until = util_mono_ms() + 10000;
    while (s_stat(&e, "relay_link_up")) {
        ck_assert_msg(util_mono_ms() < until, "the link never went down");
        proto_msg_t m;
        uint8_t id[32];
        size_t il;
        if (s_center_next(&e, &m, id, &il, 50) == 0)
            ck_abort_msg("unexpected command at the center: %s", proto_type_name(m.type));
    }
    /* Another epoch, no data wanted: answered with a flush to the relay's state. */
    s_send_catchup(&e, 90, 3, 2, PROTO_CATCHUP_F_NO_DATA);
    proto_msg_t m;
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_CATCHUP_REPLY);
    ck_assert_uint_eq(m.rid, 90);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.epoch, EPOCH);
    ck_assert_int_eq(m.mode, PROTO_CATCHUP_SNAPSHOT);
    ck_assert_uint_eq(m.seq, 10);
    ck_assert(m.done);
    proto_msg_fini(&m);
    /* Our epoch from before the window: it would have to cross the link: EUNAVAIL. */
    s_send_catchup(&e, 91, EPOCH, 2, 0);
    s_expect_status(&e, 91, PROTO_EUNAVAIL, "center unreachable");
    s_env_fini(&e);
}
END_TEST

/* A stream message the decoder refuses: its type, epoch and range as sent (elements 1, 3, 4, 5 of
 * the array), so a failure can say what was wrong with it. Returns false when not even that reads. */
static bool s_raw_header(const void *data, size_t len, uint64_t v[4])
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    bool ok = msgpack_unpack_next(&up, data, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
              up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size >= 6;
    static const int at[4] = {1, 3, 4, 5};
    for (int i = 0; ok && i < 4; i++) {
        const msgpack_object *o = &up.data.via.array.ptr[at[i]];
        ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        if (ok)
            v[i] = o->via.u64;
    }
    msgpack_unpacked_destroy(&up);
    return ok;
}

/* The center's stream: one message on `topic`. */
static void s_center_publish(env_t *e, char topic, const void *data, size_t len)
{
    ck_assert_int_eq(zmq_send(e->cpub, &topic, 1, ZMQ_SNDMORE), 1);
    ck_assert_int_eq(zmq_send(e->cpub, data, len, 0), (int)len);
}

START_TEST(test_snapshot_then_buffered_changes)
{
    /* The center's database is replaced (epoch 7 -> 8, sequence 20). The relay's stream asks for
     * a catch-up, which the center leaves waiting while it publishes 21..23 (buffered by the
     * stream); then the answer: a snapshot through 20. The stream replays 21..23 in the same
     * turn, and the region must see epoch 8 start at 20 and continue 21..23 -- not start at 23
     * and carry a reversed range 24..23. */
    env_t e;
    s_env(&e, "snapbuf", 5000, 1 << 20); /* the stream's catch-up deadline outlasts the test */
    s_go_live(&e);
    s_center_write(&e, 3); /* 11..13 in epoch 7 */
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n;
    while ((n = s_recv(e.csub, f, 0)) >= 0) /* what the region saw so far */
        zu_close_frames(f, n);
    ck_assert_uint_eq(s_stat(&e, "relay_malformed_total"), 0);

    e.answer_catchups = false;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_hugz(&b, EPOCH + 1, 20, util_now_us());
    s_center_publish(&e, PROTO_TOPIC_HUGZ, b.data, b.len);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (!e.held) {
        ck_assert_msg(util_mono_ms() < until, "the relay did not ask for a catch-up after the epoch changed");
        if (s_center_next(&e, &m, id, &il, 20) == 0)
            ck_abort_msg("unexpected command at the center: %s", proto_type_name(m.type));
    }
    /* Live changes while the catch-up waits, then an unreadable message: once the relay counts
     * it, the stream has read (and buffered) what came before it on the same connection. */
    proto_change_t ch[3] = {s_change("v21", 21), s_change("v22", 22), s_change("v23", 23)};
    proto_enc_t enc;
    proto_buf_reset(&b);
    proto_enc_init(&enc, &b);
    proto_enc_changes_begin(&enc, EPOCH + 1, 21, 23, 3);
    for (int i = 0; i < 3; i++)
        proto_enc_change(&enc, &ch[i]);
    s_center_publish(&e, PROTO_TOPIC_CHANGES, b.data, b.len);
    s_center_publish(&e, PROTO_TOPIC_CHANGES, "\xc1", 1);
    until = util_mono_ms() + WAIT_MS;
    while (s_stat(&e, "relay_malformed_total") < 1)
        ck_assert_msg(util_mono_ms() < until, "the relay's stream did not read the center's messages");
    ck_assert_uint_eq(s_stat(&e, "relay_sequence"), 13); /* buffered, not relayed */

    /* The answer: a snapshot (no data) through 20. */
    if (s_center_next(&e, &m, id, &il, 1) == 0) /* a catch-up sent again meanwhile: answer the last */
        ck_abort_msg("unexpected command at the center: %s", proto_type_name(m.type));
    proto_buf_reset(&b);
    proto_enc_init(&enc, &b);
    proto_enc_catchup_reply_begin(&enc, e.held_rid, PROTO_OK, EPOCH + 1, PROTO_CATCHUP_SNAPSHOT, 20, true, 0);
    proto_enc_catchup_reply_end(&enc, "", 0);
    s_center_reply(&e, e.sync_ident, e.sync_ident_len, &b);
    proto_buf_fini(&b);

    /* The region's stream, epoch 8: a heartbeat at the snapshot's 20, then one CHANGES with
     * exactly 21..23 continuing it. */
    uint64_t hugz_seq = 0, first = 0, last = 0;
    uint32_t nch = 0;
    proto_change_t got[3];
    until = util_mono_ms() + WAIT_MS;
    while (!last && util_mono_ms() < until) {
        if ((n = s_recv(e.csub, f, 100)) != 2) {
            if (n >= 0)
                zu_close_frames(f, n);
            continue;
        }
        if (proto_decode(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &m) != PROTO_DEC_OK) {
            /* Every region cache-node would drop it as unreadable (a gap, repaired by a catch-up). */
            uint64_t h[4] = {0};
            ck_assert_msg(s_raw_header(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), h),
                          "an unreadable message on the region's stream");
            ck_abort_msg("region stream after the snapshot: heartbeat at %llu, then a message the decoder refuses: "
                         "type %llu, epoch %llu, range %llu..%llu; expected 20, then CHANGES 21..23",
                         (unsigned long long)hugz_seq, (unsigned long long)h[0], (unsigned long long)h[1],
                         (unsigned long long)h[2], (unsigned long long)h[3]);
        }
        if (m.epoch == EPOCH + 1 && m.type == PROTO_HUGZ && !hugz_seq) {
            hugz_seq = m.seq;
        } else if (m.epoch == EPOCH + 1 && m.type == PROTO_CHANGES) {
            first = m.first_seq;
            last = m.seq;
            nch = m.n;
            for (uint32_t i = 0; i < m.n && i < 3; i++)
                got[i] = m.changes[i];
        }
        proto_msg_fini(&m);
        zu_close_frames(f, n);
    }
    ck_assert_msg(last, "no epoch 8 CHANGES on the region's stream");
    ck_assert_msg(hugz_seq == 20 && first == 21 && last == 23,
                  "region stream after the snapshot: heartbeat at %llu, CHANGES %llu..%llu; expected 20, 21..23",
                  (unsigned long long)hugz_seq, (unsigned long long)first, (unsigned long long)last);
    ck_assert_uint_eq(nch, 3);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(got[i].rec.version, 21 + i);
        ck_assert_str_eq(got[i].rec.user_id, ch[i].rec.user_id);
    }
    ck_assert_uint_eq(s_stat(&e, "relay_epoch"), EPOCH + 1);
    ck_assert_uint_eq(s_stat(&e, "relay_sequence"), 23);
    ck_assert_uint_eq(s_stat(&e, "relay_window_start"), 20);

    /* A region cache-node at the snapshot's base catches up from the window: exactly 21..23. */
    s_send_catchup(&e, 95, EPOCH + 1, 20, 0);
    s_cache_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_CATCHUP_REPLY);
    ck_assert_uint_eq(m.rid, 95);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.epoch, EPOCH + 1);
    ck_assert_int_eq(m.mode, PROTO_CATCHUP_INCREMENTAL);
    ck_assert_uint_eq(m.seq, 23);
    ck_assert(m.done);
    ck_assert_uint_eq(m.n, 3);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(m.changes[i].rec.version, 21 + i);
        ck_assert_str_eq(m.changes[i].rec.user_id, ch[i].rec.user_id);
    }
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "relay_local_catchups_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "relay_forwarded_catchups_total"), 0);
    s_env_fini(&e);
}
END_TEST

/* ==== shutdown =============================================================================== */

START_TEST(test_stop_answers_pending)
{
    env_t e;
    s_env(&e, "stop", 5000, 1 << 20);
    s_go_live(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 55, "frank", 5);
    s_cache_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_center_next(&e, &m, id, &il, WAIT_MS), 0);
    proto_msg_fini(&m);
    s_env_stop(&e);
    s_expect_status(&e, 55, PROTO_EUNAVAIL, "relay stopping");
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("forwarding");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_forward_roundtrip);
    tcase_add_test(tc, test_link_down_unavailable);
    tcase_add_test(tc, test_timeout_and_late_answer);
    tcase_add_test(tc, test_expired_write_not_forwarded);
    tcase_add_test(tc, test_batch_forwarded_one_by_one);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad input");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_malformed_region_input);
    tcase_add_test(tc, test_malformed_center_answer);
    suite_add_tcase(s, tc);
    tc = tcase_create("catch-ups");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_catchup_from_window);
    tcase_add_test(tc, test_catchup_window_bounded);
    tcase_add_test(tc, test_catchup_link_down);
    tcase_add_test(tc, test_snapshot_then_buffered_changes);
    suite_add_tcase(s, tc);
    tc = tcase_create("shutdown");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stop_answers_pending);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_min_level = LOG_ERROR; /* the relay's notices (link up, snapshot) are expected here */
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
