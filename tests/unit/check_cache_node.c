/* check_cache_node.c -- Check suite for the cache-node's request logic (cache-node/cache_node.c),
 * without a process.
 *
 * Each test binds a "store" of its own on inproc endpoints (a ROUTER answering pings, stats and the
 * stream's catch-ups from a small log of changes; a PUB for the stream), makes a node in front of
 * it, talks to the node as a gateway does (a DEALER), and runs the node on a thread of its own
 * (cache_node_run, as the process does). Real ZeroMQ, the real wire format, polls with deadlines.
 *
 * What is pinned: a miss asks the store once and then hits; concurrent misses of one key share one
 * fetch (single flight); a change seen while a fetch is out wins over the older answer; a
 * multi-get merges the store's found records; writes go to the store with a deadline and fill the
 * cache from the acknowledged record; deletes cache "not found"; APPLY fills; expired writes are
 * dropped, writes to a store that is down answered EUNAVAIL, a fetch the store does not answer
 * ETIMEOUT; with the store down, cached entries are served stale and misses 503 at once; a BATCH
 * is answered in one frame; malformed input is answered EBADREQ and counted; pending requests are
 * answered at shutdown.
 */
#include "cache.h"
#include "cache_node.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "util.h"
#include "zutil.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define EPOCH 5
#define WAIT_MS 5000

typedef struct env {
    void *zctx;
    void *scmd, *spub; /* the store: ROUTER, PUB */
    void *gw;          /* a gateway's DEALER */
    cache_node_t *n;
    pthread_t th;
    volatile sig_atomic_t stop;
    bool answer_pings; /* false: the store stops answering the node's pings (it looks down) */
    uint64_t seq;      /* the store's sequence; its log holds versions 101.. */
    proto_change_t log[32];
    uint8_t sync_ident[32];
    size_t sync_ident_len;
    proto_buf_t gw_in, store_in; /* the last message each side received (decoded ones borrow) */
    /* Commands the store received and the test has not taken yet (a BATCH's parts, one by one). */
    proto_buf_t queue[64];
    int qhead, qtail;
    uint8_t qident[32];
    size_t qilen;
} env_t;

static void *s_node_thread(void *arg)
{
    env_t *e = arg;
    cache_node_run(e->n, &e->stop);
    return NULL;
}

static proto_record_t s_record(const char *uid, uint64_t version, const char *msg)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_node(&r, "gw-1", 4);
    proto_record_set_msg(&r, msg, strlen(msg));
    r.status = PRESENCE_ONLINE;
    r.ttl_s = 600;
    r.last_seen_us = util_now_us();
    r.expires_at_us = r.last_seen_us + 600000000ull;
    r.version = version;
    return r;
}

/* cfg: NULL for the defaults below. */
static void s_env(env_t *e, const char *name, const cache_node_config_t *cfg)
{
    memset(e, 0, sizeof *e);
    e->answer_pings = true;
    e->seq = 100;
    proto_buf_init(&e->gw_in);
    proto_buf_init(&e->store_in);
    e->zctx = zmq_ctx_new();
    cache_node_config_t c;
    if (cfg) {
        c = *cfg;
    } else {
        memset(&c, 0, sizeof c);
        c.max_cost = 1 << 20;
        c.policy = CACHE_POLICY_LRU; /* admits every fill: hits are deterministic */
        c.req_timeout_ms = 1;        /* no read-through period after the start */
        c.store_timeout_ms = 5000;
        c.stall_ms = 1000;
        c.hb_limit_ms = 3000;
        c.store_down_ms = 60000;
        c.sub_hwm = 1000;
    }
    snprintf(c.id, sizeof c.id, "c-%s", name);
    snprintf(c.endpoint, sizeof c.endpoint, "inproc://cn-%s", name);
    snprintf(c.store_cmd, sizeof c.store_cmd, "inproc://cn-%s-scmd", name);
    snprintf(c.store_pub, sizeof c.store_pub, "inproc://cn-%s-spub", name);
    e->scmd = zu_socket(e->zctx, ZMQ_ROUTER, 0, 0);
    e->spub = zu_socket(e->zctx, ZMQ_PUB, 0, 0);
    ck_assert_int_eq(zmq_bind(e->scmd, c.store_cmd), 0);
    ck_assert_int_eq(zmq_bind(e->spub, c.store_pub), 0);
    char err[256];
    ck_assert_msg(cache_node_new(e->zctx, &c, &e->n, err) == 0, "%s", err);
    e->gw = zu_socket(e->zctx, ZMQ_DEALER, 0, 0);
    ck_assert_int_eq(zmq_connect(e->gw, c.endpoint), 0);
    ck_assert_int_eq(pthread_create(&e->th, NULL, s_node_thread, e), 0);
}

static void s_env_stop(env_t *e)
{
    if (!e->n)
        return;
    e->stop = 1;
    ck_assert_int_eq(zu_send(e->gw, NULL, 0, "\xc1", 1), 0); /* wake the node's wait */
    pthread_join(e->th, NULL);
    cache_node_destroy(&e->n);
    ck_assert_ptr_null(e->n);
}

static void s_env_fini(env_t *e)
{
    s_env_stop(e);
    zmq_close(e->gw);
    zmq_close(e->scmd);
    zmq_close(e->spub);
    zmq_ctx_term(e->zctx);
    proto_buf_fini(&e->gw_in);
    proto_buf_fini(&e->store_in);
    while (e->qhead < e->qtail)
        proto_buf_fini(&e->queue[e->qhead++]);
}

/* ---- the gateway's side ---------------------------------------------------------------------- */

static int s_recv(void *sock, zmq_msg_t *f, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return -1;
    int n;
    ck_assert_int_eq(zu_recv(sock, f, ZU_FRAMES_MAX, &n), 0);
    return n;
}

static void s_gw_send(env_t *e, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->gw, NULL, 0, b->data, b->len), 0);
}

/* The gateway's next message (it must come within WAIT_MS). */
static void s_gw_recv(env_t *e, proto_msg_t *m)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = s_recv(e->gw, f, WAIT_MS);
    ck_assert_msg(n == 1, "no answer from the cache-node");
    proto_buf_reset(&e->gw_in);
    proto_buf_append(&e->gw_in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
    zu_close_frames(f, n);
    ck_assert_int_eq(proto_decode(e->gw_in.data, e->gw_in.len, m), PROTO_DEC_OK);
}

static void s_get(env_t *e, uint64_t rid, const char *uid)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, rid, uid, strlen(uid));
    s_gw_send(e, &b);
    proto_buf_fini(&b);
}

/* A reply to rid: its status, and (n == 1) the one record's version. */
static void s_expect_reply(env_t *e, uint64_t rid, uint8_t status, uint64_t version)
{
    proto_msg_t m;
    s_gw_recv(e, &m);
    ck_assert_int_eq(m.type, PROTO_REPLY);
    ck_assert_uint_eq(m.rid, rid);
    ck_assert_int_eq(m.status, status);
    if (version) {
        ck_assert_uint_eq(m.n, 1);
        ck_assert_uint_eq(m.recs[0].version, version);
    }
    proto_msg_fini(&m);
}

static uint64_t s_stat(env_t *e, const char *prefix)
{
    static uint64_t rid = 900000;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_STATS, ++rid);
    s_gw_send(e, &b);
    proto_buf_fini(&b);
    proto_msg_t m;
    s_gw_recv(e, &m);
    ck_assert_int_eq(m.type, PROTO_STATS_REPLY);
    ck_assert_uint_eq(m.rid, rid);
    size_t pl = strlen(prefix);
    uint64_t v = UINT64_MAX;
    for (uint32_t i = 0; i < m.n; i++)
        if (m.stats[i].name.len > pl && memcmp(m.stats[i].name.p, prefix, pl) == 0 && m.stats[i].name.p[pl] == '{')
            v = m.stats[i].value;
    proto_msg_fini(&m);
    ck_assert_msg(v != UINT64_MAX, "no stat %s", prefix);
    return v;
}

/* ---- the store's side ------------------------------------------------------------------------ */

static void s_store_reply(env_t *e, const void *ident, size_t il, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->scmd, ident, il, b->data, b->len), 0);
}

static void s_store_hugz(env_t *e)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_hugz(&b, EPOCH, e->seq, util_now_us());
    char t = PROTO_TOPIC_HUGZ;
    zmq_send(e->spub, &t, 1, ZMQ_SNDMORE);
    zmq_send(e->spub, b.data, b.len, 0);
    proto_buf_fini(&b);
}

static void s_store_catchup(env_t *e, const void *ident, size_t il, const proto_msg_t *m)
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
            n += s > 100;
        proto_enc_catchup_reply_begin(&enc, m->rid, PROTO_OK, EPOCH, PROTO_CATCHUP_INCREMENTAL, e->seq, true, n);
        for (uint64_t s = m->seq + 1; s <= e->seq; s++)
            if (s > 100)
                proto_enc_change(&enc, &e->log[s - 101]);
    }
    proto_enc_catchup_reply_end(&enc, "", 0);
    s_store_reply(e, ident, il, &b);
    proto_buf_fini(&b);
}

static void s_store_pong(env_t *e, const void *ident, size_t il, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    stats_add(&l, "store_epoch", EPOCH);
    stats_add(&l, "store_sequence", e->seq);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_stats(&b, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    s_store_reply(e, ident, il, &b);
    proto_buf_fini(&b);
    stats_list_fini(&l);
}

/* One message to the store: its own business answered here (catch-ups, pings, stats), the rest
 * queued for the test. A BATCH is opened. */
static void s_store_take(env_t *e, const uint8_t *ident, size_t il, const void *raw, size_t len, bool nested)
{
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(raw, len, &m), PROTO_DEC_OK);
    if (m.type == PROTO_BATCH) {
        ck_assert(!nested);
        ck_assert_uint_gt(m.n, 1); /* a lone message leaves unbatched */
        for (uint32_t i = 0; i < m.n; i++)
            s_store_take(e, ident, il, m.parts[i].p, m.parts[i].len, true);
    } else if (m.type == PROTO_CATCHUP) {
        s_store_catchup(e, ident, il, &m);
    } else if (m.type == PROTO_PING || m.type == PROTO_STATS) {
        if (e->answer_pings || m.type == PROTO_STATS)
            s_store_pong(e, ident, il, &m);
    } else {
        ck_assert_int_lt(e->qtail, 64);
        proto_buf_init(&e->queue[e->qtail]);
        proto_buf_append(&e->queue[e->qtail++], raw, len);
        memcpy(e->qident, ident, il);
        e->qilen = il;
    }
    proto_msg_fini(&m);
}

/* The store's next command that is not its own business (every call publishes a heartbeat, so
 * the stream stays live while a test runs). Returns 0 with *m (caller finis) and the sender, -1
 * when nothing came within timeout_ms. */
static int s_store_next(env_t *e, proto_msg_t *m, uint8_t *ident, size_t *ilen, int timeout_ms)
{
    uint64_t until = util_mono_ms() + (uint64_t)timeout_ms;
    while (e->qhead == e->qtail) {
        s_store_hugz(e);
        uint64_t now = util_mono_ms();
        if (now >= until)
            return -1;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e->scmd, f, (int)MIN(until - now, 100));
        if (n < 0)
            continue;
        ck_assert_int_eq(n, 2);
        ck_assert_uint_le(zmq_msg_size(&f[0]), 32);
        s_store_take(e, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), false);
        zu_close_frames(f, n);
    }
    proto_buf_t *raw = &e->queue[e->qhead++];
    proto_buf_reset(&e->store_in);
    proto_buf_append(&e->store_in, raw->data, raw->len);
    proto_buf_fini(raw);
    ck_assert_int_eq(proto_decode(e->store_in.data, e->store_in.len, m), PROTO_DEC_OK);
    memcpy(ident, e->qident, e->qilen);
    *ilen = e->qilen;
    return 0;
}

/* The store's next command (it must come). */
static void s_cmd(env_t *e, proto_msg_t *m, uint8_t *ident, size_t *ilen)
{
    ck_assert_msg(s_store_next(e, m, ident, ilen, WAIT_MS) == 0, "no command at the store");
}

/* Serve the store until the node's stream is live and its store up. */
static void s_go_live(env_t *e)
{
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (util_mono_ms() < until) {
        proto_msg_t m;
        uint8_t id[32];
        size_t il;
        if (s_store_next(e, &m, id, &il, 20) == 0)
            ck_abort_msg("unexpected command at the store: %s", proto_type_name(m.type));
        if (s_stat(e, "cache_sync_state") == 1 && s_stat(e, "cache_store_up") == 1)
            return;
    }
    ck_abort_msg("the node's stream never went live");
}

/* The store writes a change for uid (kind SET with msg, or DEL) and publishes it; wait until the
 * node applied it. */
static void s_store_change_kind(env_t *e, const char *uid, const char *msg, uint8_t kind)
{
    e->seq++;
    proto_change_t *c = &e->log[e->seq - 101];
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (kind == PROTO_CH_DEL) {
        proto_record_set_uid(&c->rec, uid, strlen(uid));
        c->rec.version = e->seq;
    } else {
        c->rec = s_record(uid, e->seq, msg);
    }
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_changes_begin(&enc, EPOCH, e->seq, e->seq, 1);
    proto_enc_change(&enc, c);
    char t = PROTO_TOPIC_CHANGES;
    zmq_send(e->spub, &t, 1, ZMQ_SNDMORE);
    zmq_send(e->spub, b.data, b.len, 0);
    proto_buf_fini(&b);
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (s_stat(e, "sync_sequence") < e->seq) {
        ck_assert_msg(util_mono_ms() < until, "the node did not apply the change");
        proto_msg_t m;
        uint8_t id[32];
        size_t il;
        if (s_store_next(e, &m, id, &il, 20) == 0)
            ck_abort_msg("unexpected command at the store: %s", proto_type_name(m.type));
    }
}

static void s_store_change(env_t *e, const char *uid, const char *msg)
{
    s_store_change_kind(e, uid, msg, PROTO_CH_SET);
}

/* Answer an MGET with the records given (found ones, in request order) as of `as_of`. */
static void s_answer_mget(env_t *e, const uint8_t *id, size_t il, uint64_t rid, const proto_record_t *recs, uint32_t n,
                          uint64_t as_of)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_reply(&b, rid, PROTO_OK, as_of, recs, n, NULL, 0);
    s_store_reply(e, id, il, &b);
    proto_buf_fini(&b);
}

/* ==== reads ================================================================================== */

START_TEST(test_miss_then_hit)
{
    env_t e;
    s_env(&e, "hit", NULL);
    s_go_live(&e);
    s_get(&e, 1, "alice");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_MGET);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_int_eq(memcmp(m.keys[0].p, "alice", 5), 0);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t r = s_record("alice", 50, "first");
    s_answer_mget(&e, id, il, rid, &r, 1, 100);
    s_expect_reply(&e, 1, PROTO_OK, 50);
    /* Now cached: answered without the store. */
    s_get(&e, 2, "alice");
    s_expect_reply(&e, 2, PROTO_OK, 50);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "cache_hits_total"), 1);
    /* A key the store does not have: NOTFOUND, cached as such. */
    s_get(&e, 3, "nobody");
    s_cmd(&e, &m, id, &il);
    rid = m.rid;
    proto_msg_fini(&m);
    s_answer_mget(&e, id, il, rid, NULL, 0, 100);
    s_expect_reply(&e, 3, PROTO_NOTFOUND, 0);
    s_get(&e, 4, "nobody");
    s_expect_reply(&e, 4, PROTO_NOTFOUND, 0);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 2);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_single_flight)
{
    env_t e;
    s_env(&e, "flight", NULL);
    s_go_live(&e);
    /* Three reads of one key while its fetch is out: one MGET. */
    for (uint64_t i = 1; i <= 3; i++)
        s_get(&e, i, "bob");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_MGET);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "cache_coalesced_misses_total"), 2);
    proto_record_t r = s_record("bob", 60, "x");
    s_answer_mget(&e, id, il, rid, &r, 1, 100);
    bool seen[4] = {false};
    for (int i = 0; i < 3; i++) {
        s_gw_recv(&e, &m);
        ck_assert_int_eq(m.status, PROTO_OK);
        ck_assert_uint_eq(m.recs[0].version, 60);
        ck_assert_uint_le(m.rid, 3);
        seen[m.rid] = true;
        proto_msg_fini(&m);
    }
    ck_assert(seen[1] && seen[2] && seen[3]);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 1);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_change_during_fetch_wins)
{
    env_t e;
    s_env(&e, "race", NULL);
    s_go_live(&e);
    s_get(&e, 1, "carol");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    /* While the fetch is out the stream brings a newer version... */
    s_store_change(&e, "carol", "newer"); /* version 101 */
    /* ...and then the store's answer, as of before that change, arrives: the newer record wins
     * (for the waiting reader, and in the cache). */
    proto_record_t old = s_record("carol", 90, "older");
    s_answer_mget(&e, id, il, rid, &old, 1, 100);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 1);
    ck_assert_uint_eq(m.recs[0].version, 101);
    ck_assert_str_eq(m.recs[0].message, "newer");
    proto_msg_fini(&m);
    s_get(&e, 2, "carol");
    s_expect_reply(&e, 2, PROTO_OK, 101);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 1);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_multi_get_merge)
{
    env_t e;
    s_env(&e, "mget", NULL);
    s_go_live(&e);
    proto_str_t keys[3] = {{"a", 1}, {"b", 1}, {"c", 1}};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_keys(&b, 9, keys, 3);
    s_gw_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_MGET);
    ck_assert_uint_eq(m.n, 3);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t found[2] = {s_record("a", 11, ""), s_record("c", 13, "")};
    s_answer_mget(&e, id, il, rid, found, 2, 100);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 9);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_str_eq(m.recs[0].user_id, "a");
    ck_assert_str_eq(m.recs[1].user_id, "c");
    proto_msg_fini(&m);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* A multi-get's as_of is its oldest key's (here the cached ones, at the stream's 100); a key it
 * read through to the store (at 150) and found absent is listed with the store's as_of, so a
 * gateway knows that "not found" is current through 150. Found records get no entry, nor absent
 * keys current through no more than the reply's as_of (a "not found" cached at the stream's 100);
 * the "not found" cached from the read-through keeps its entry while the stream is behind it. A
 * GET's reply carries the store's as_of itself. */
START_TEST(test_multi_get_absent_as_of)
{
    env_t e;
    s_env(&e, "mgabs", NULL);
    s_go_live(&e);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    /* cache "a" (a record) and "nobody" (not found), both as of the stream's 100 */
    s_get(&e, 1, "a");
    s_cmd(&e, &m, id, &il);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t a = s_record("a", 11, "");
    s_answer_mget(&e, id, il, rid, &a, 1, 100);
    s_expect_reply(&e, 1, PROTO_OK, 11);
    s_get(&e, 2, "nobody");
    s_cmd(&e, &m, id, &il);
    rid = m.rid;
    proto_msg_fini(&m);
    s_answer_mget(&e, id, il, rid, NULL, 0, 100);
    s_expect_reply(&e, 2, PROTO_NOTFOUND, 0);

    /* MGET a, ghost, b, nobody: ghost and b are read through; the store (ahead of the stream)
     * answers as of 150 with b only */
    proto_str_t keys[4] = {{"a", 1}, {"ghost", 5}, {"b", 1}, {"nobody", 6}};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_keys(&b, 9, keys, 4);
    s_gw_send(&e, &b);
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_MGET);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_int_eq(memcmp(m.keys[0].p, "ghost", 5), 0);
    ck_assert_int_eq(memcmp(m.keys[1].p, "b", 1), 0);
    rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t rb = s_record("b", 140, "");
    s_answer_mget(&e, id, il, rid, &rb, 1, 150);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 9);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert_uint_eq(m.seq, 100);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_str_eq(m.recs[0].user_id, "a");
    ck_assert_str_eq(m.recs[1].user_id, "b");
    ck_assert_uint_eq(m.nabsent, 1);
    ck_assert_uint_eq(m.absent[0].index, 1);
    ck_assert_uint_eq(m.absent[0].as_of, 150);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 1), 150);
    ck_assert_uint_eq(proto_reply_key_as_of(&m, 3), 100); /* the cached "not found" */
    proto_msg_fini(&m);

    /* the same keys again: all cached now, ghost as a "not found" at 150 -- still listed with 150
     * (the stream is at 100); "nobody" (cached at 100) is not */
    s_gw_send(&e, &b);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 9);
    ck_assert_uint_eq(m.seq, 100);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_uint_eq(m.nabsent, 1);
    ck_assert_uint_eq(m.absent[0].index, 1);
    ck_assert_uint_eq(m.absent[0].as_of, 150);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 3);

    /* a key read through while the stream brings its creation and then its deletion (101, 102),
     * the store's answer as of before both (100): the "not found" is current through the delete;
     * the other key, found as of 100, makes the reply's as_of */
    proto_str_t race[2] = {{"c", 1}, {"carol", 5}};
    proto_buf_reset(&b);
    proto_enc_keys(&b, 12, race, 2);
    s_gw_send(&e, &b);
    s_cmd(&e, &m, id, &il);
    ck_assert_uint_eq(m.n, 2);
    rid = m.rid;
    proto_msg_fini(&m);
    s_store_change(&e, "carol", "briefly"); /* 101 */
    s_store_change_kind(&e, "carol", NULL, PROTO_CH_DEL); /* 102 */
    proto_record_t rc = s_record("c", 50, "");
    s_answer_mget(&e, id, il, rid, &rc, 1, 100);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 12);
    ck_assert_uint_eq(m.seq, 100);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].user_id, "c");
    ck_assert_uint_eq(m.nabsent, 1);
    ck_assert_uint_eq(m.absent[0].index, 1);
    ck_assert_uint_eq(m.absent[0].as_of, 102);
    proto_msg_fini(&m);

    /* every key read through and absent: the reply's as_of is the store's, nothing listed */
    proto_str_t two[2] = {{"x", 1}, {"y", 1}};
    proto_buf_reset(&b);
    proto_enc_keys(&b, 10, two, 2);
    s_gw_send(&e, &b);
    s_cmd(&e, &m, id, &il);
    rid = m.rid;
    proto_msg_fini(&m);
    s_answer_mget(&e, id, il, rid, NULL, 0, 160); /* the stream is at 102 */
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 10);
    ck_assert_uint_eq(m.seq, 160);
    ck_assert_uint_eq(m.n, 0);
    ck_assert_uint_eq(m.nabsent, 0);
    proto_msg_fini(&m);

    /* a GET read through: its as_of is the store's, no list */
    s_get(&e, 11, "ghost2");
    s_cmd(&e, &m, id, &il);
    rid = m.rid;
    proto_msg_fini(&m);
    s_answer_mget(&e, id, il, rid, NULL, 0, 170);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 11);
    ck_assert_int_eq(m.status, PROTO_NOTFOUND);
    ck_assert_uint_eq(m.seq, 170);
    ck_assert_uint_eq(m.nabsent, 0);
    proto_msg_fini(&m);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_fetch_timeout)
{
    cache_node_config_t c;
    memset(&c, 0, sizeof c);
    c.max_cost = 1 << 20;
    c.policy = CACHE_POLICY_LRU;
    c.req_timeout_ms = 1;
    c.store_timeout_ms = 150;
    c.stall_ms = 1000;
    c.hb_limit_ms = 3000;
    c.store_down_ms = 60000;
    env_t e;
    s_env(&e, "ftimeout", &c);
    s_go_live(&e);
    s_get(&e, 1, "dave");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    proto_msg_fini(&m);
    /* The store does not answer: ETIMEOUT at the node's deadline. */
    proto_msg_t r;
    s_gw_recv(&e, &r);
    ck_assert_uint_eq(r.rid, 1);
    ck_assert_int_eq(r.status, PROTO_ETIMEOUT);
    ck_assert_int_eq(memcmp(r.key.p, "store timed out", 15), 0);
    proto_msg_fini(&r);
    ck_assert_uint_eq(s_stat(&e, "cache_store_timeouts_total"), 1);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_store_down_stale_and_fast_503)
{
    cache_node_config_t c;
    memset(&c, 0, sizeof c);
    c.max_cost = 1 << 20;
    c.policy = CACHE_POLICY_LRU;
    c.req_timeout_ms = 1;
    c.store_timeout_ms = 5000;
    c.stall_ms = 1000;
    c.hb_limit_ms = 300;
    c.store_down_ms = 300;
    env_t e;
    s_env(&e, "down", &c);
    s_go_live(&e);
    s_get(&e, 1, "erin");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t r = s_record("erin", 70, "");
    s_answer_mget(&e, id, il, rid, &r, 1, 100);
    s_expect_reply(&e, 1, PROTO_OK, 70);
    /* The store falls silent: no pings answered, no heartbeats. */
    e.answer_pings = false;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (s_stat(&e, "cache_store_up") || s_stat(&e, "cache_sync_state") == 1)
        ck_assert_msg(util_mono_ms() < until, "the node never saw the store go down");
    /* A cached key: served, marked stale. A miss: EUNAVAIL at once, the store not asked. */
    s_get(&e, 2, "erin");
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 2);
    ck_assert_int_eq(m.status, PROTO_OK);
    ck_assert(m.flags & PROTO_REPLY_F_STALE);
    ck_assert_uint_eq(m.recs[0].version, 70);
    proto_msg_fini(&m);
    s_get(&e, 3, "frank");
    s_expect_reply(&e, 3, PROTO_EUNAVAIL, 0);
    /* And writes: EUNAVAIL, not forwarded. */
    proto_record_t w = s_record("erin", 0, "");
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 4, &w, 1);
    s_gw_send(&e, &b);
    s_expect_reply(&e, 4, PROTO_EUNAVAIL, 0);
    ck_assert_uint_ge(s_stat(&e, "cache_stale_served_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 1);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== writes ================================================================================= */

START_TEST(test_write_fills_cache)
{
    env_t e;
    s_env(&e, "write", NULL);
    s_go_live(&e);
    proto_record_t w = s_record("gina", 0, "hello");
    uint64_t gw_deadline = util_now_us() + 60000000ull;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 7, &w, 1, gw_deadline);
    s_gw_send(&e, &b);
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_PUT);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].message, "hello");
    /* The node asks the store to give up before the node itself does. */
    ck_assert_uint_gt(m.deadline_us, 0);
    ck_assert_uint_le(m.deadline_us, gw_deadline);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    proto_record_t stored = s_record("gina", 120, "hello");
    proto_buf_reset(&b);
    proto_enc_reply(&b, rid, PROTO_OK, 120, &stored, 1, NULL, 0);
    s_store_reply(&e, id, il, &b);
    s_expect_reply(&e, 7, PROTO_OK, 120);
    /* The acknowledged record is in the cache. */
    s_get(&e, 8, "gina");
    s_expect_reply(&e, 8, PROTO_OK, 120);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 0);
    /* A delete: "not found" is cached as of the tombstone. */
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_DEL, 9, "gina", 4);
    s_gw_send(&e, &b);
    s_cmd(&e, &m, id, &il);
    ck_assert_int_eq(m.type, PROTO_DEL);
    rid = m.rid;
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_reply(&b, rid, PROTO_OK, 121, NULL, 0, NULL, 0);
    s_store_reply(&e, id, il, &b);
    s_expect_reply(&e, 9, PROTO_OK, 0);
    s_get(&e, 10, "gina");
    s_expect_reply(&e, 10, PROTO_NOTFOUND, 0);
    /* APPLY (another node's write, for read-your-writes): cached, answered OK. */
    proto_record_t applied = s_record("hank", 130, "applied");
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_APPLY, 11, &applied, 1);
    s_gw_send(&e, &b);
    s_expect_reply(&e, 11, PROTO_OK, 0);
    s_get(&e, 12, "hank");
    s_expect_reply(&e, 12, PROTO_OK, 130);
    ck_assert_uint_eq(s_stat(&e, "cache_store_fetches_total"), 0);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_expired_write_dropped)
{
    env_t e;
    s_env(&e, "expired", NULL);
    s_go_live(&e);
    proto_record_t w = s_record("ivan", 0, "");
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 5, &w, 1, util_now_us() - 1000);
    s_gw_send(&e, &b);
    proto_msg_t m;
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 5);
    ck_assert_int_eq(m.status, PROTO_ETIMEOUT);
    ck_assert_int_eq(memcmp(m.key.p, "deadline passed", 15), 0);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "cache_expired_writes_total"), 1);
    /* The store saw nothing but its own business. */
    uint8_t id[32];
    size_t il;
    ck_assert_int_eq(s_store_next(&e, &m, id, &il, 100), -1);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== framing ================================================================================ */

START_TEST(test_batch_answered_in_one_frame)
{
    env_t e;
    s_env(&e, "batch", NULL);
    s_go_live(&e);
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t b, frame;
    proto_buf_init(&b);
    proto_buf_init(&frame);
    proto_enc_simple(&b, PROTO_PING, 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_record_t applied = s_record("jo", 140, "");
    proto_enc_records_cmd(&b, PROTO_APPLY, 2, &applied, 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 3, "jo", 2);
    proto_batch_add(&bt, b.data, b.len);
    proto_batch_encode(&bt, &frame);
    s_gw_send(&e, &frame);
    /* PONG, APPLY's OK and the (now cached) GET: one BATCH frame, in order. */
    proto_msg_t m;
    s_gw_recv(&e, &m);
    ck_assert_int_eq(m.type, PROTO_BATCH);
    ck_assert_uint_eq(m.n, 3);
    uint8_t want[3] = {PROTO_PONG, PROTO_REPLY, PROTO_REPLY};
    for (uint32_t i = 0; i < 3; i++) {
        proto_msg_t part;
        ck_assert_int_eq(proto_decode(m.parts[i].p, m.parts[i].len, &part), PROTO_DEC_OK);
        ck_assert_int_eq(part.type, want[i]);
        ck_assert_uint_eq(part.rid, i + 1);
        proto_msg_fini(&part);
    }
    proto_msg_fini(&m);
    proto_batch_fini(&bt);
    proto_buf_fini(&frame);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_malformed_requests)
{
    env_t e;
    s_env(&e, "malformed", NULL);
    s_go_live(&e);
    uint64_t before = s_stat(&e, "cache_malformed_total");
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_header(&enc, 4, PROTO_GET, 21);
    proto_enc_u64(&enc, 5);
    s_gw_send(&e, &b);
    s_expect_reply(&e, 21, PROTO_EBADREQ, 0);
    proto_buf_reset(&b);
    proto_enc_hugz(&b, 1, 1, 1); /* well-formed, but nothing a gateway sends */
    s_gw_send(&e, &b);
    proto_buf_reset(&b);
    proto_enc_reply(&b, 22, PROTO_OK, 0, NULL, 0, NULL, 0);
    s_gw_send(&e, &b);
    proto_msg_t m;
    s_gw_recv(&e, &m);
    /* The HUGZ has request id 0: answered under it; then the REPLY's. */
    ck_assert_uint_eq(m.rid, 0);
    ck_assert_int_eq(m.status, PROTO_EBADREQ);
    proto_msg_fini(&m);
    s_gw_recv(&e, &m);
    ck_assert_uint_eq(m.rid, 22);
    ck_assert_int_eq(m.status, PROTO_EBADREQ);
    ck_assert_int_eq(memcmp(m.key.p, "unexpected message type", 23), 0);
    proto_msg_fini(&m);
    ck_assert_int_eq(zu_send(e.gw, NULL, 0, "\xc1\xc1", 2), 0);
    ck_assert_uint_eq(s_stat(&e, "cache_malformed_total"), before + 4);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_stop_answers_pending)
{
    env_t e;
    s_env(&e, "stop", NULL);
    s_go_live(&e);
    s_get(&e, 31, "kim");
    proto_msg_t m;
    uint8_t id[32];
    size_t il;
    s_cmd(&e, &m, id, &il);
    proto_msg_fini(&m);
    s_env_stop(&e);
    s_expect_reply(&e, 31, PROTO_EUNAVAIL, 0);
    s_env_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("cache_node");
    TCase *tc = tcase_create("reads");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_miss_then_hit);
    tcase_add_test(tc, test_single_flight);
    tcase_add_test(tc, test_change_during_fetch_wins);
    tcase_add_test(tc, test_multi_get_merge);
    tcase_add_test(tc, test_multi_get_absent_as_of);
    tcase_add_test(tc, test_fetch_timeout);
    tcase_add_test(tc, test_store_down_stale_and_fast_503);
    suite_add_tcase(s, tc);
    tc = tcase_create("writes");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_write_fills_cache);
    tcase_add_test(tc, test_expired_write_dropped);
    suite_add_tcase(s, tc);
    tc = tcase_create("framing");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_batch_answered_in_one_frame);
    tcase_add_test(tc, test_malformed_requests);
    tcase_add_test(tc, test_stop_answers_pending);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_min_level = LOG_ERROR; /* the node's notices (sync state, store down) are expected here */
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
