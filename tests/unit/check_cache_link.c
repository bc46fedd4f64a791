/* check_cache_link.c -- Check suite for the cache-node's store link to a replicated center
 * (cache-node/cache_link.c: following the leader), without a process.
 *
 * Each test binds two store members of its own on inproc endpoints (ROUTERs that the test serves
 * by hand: pings, and the commands it is asked to refuse or answer), makes a node configured with
 * both, talks to it as a gateway does (a DEALER) and runs it on a thread of its own
 * (cache_node_run). Real ZeroMQ, the real wire format, polls with deadlines.
 *
 * What is pinned: a command the member we followed refuses (ENOTLEADER, naming another member)
 * goes to the member it names exactly once, and its answer is the one the gateway gets -- whether
 * it is a read (which the switch to the new leader also sends again) or a command without a
 * command id (which the switch alone would answer "unavailable"). The node used to free such a
 * command while it still handled the refusal, and to send a read twice (found by ASan in the
 * replicated-center integration test, 2026-12-06).
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
#define NM 2

typedef struct member {
    void *cmd, *pub;
    bool leads;          /* its PONG says it leads (term 1) */
    uint64_t names;      /* else: the leader it names in its PONG (0: none known) */
    bool answer_pings;   /* false: pings are left unanswered */
} member_t;

typedef struct env {
    void *zctx;
    member_t m[NM];
    void *gw; /* a gateway's DEALER */
    cache_node_t *n;
    pthread_t th;
    volatile sig_atomic_t stop;
    proto_buf_t in; /* the last command a member received (decoded messages borrow it) */
} env_t;

static void *s_node_thread(void *arg)
{
    env_t *e = arg;
    cache_node_run(e->n, &e->stop);
    return NULL;
}

static void s_env(env_t *e, const char *name)
{
    memset(e, 0, sizeof *e);
    proto_buf_init(&e->in);
    e->zctx = zmq_ctx_new();
    cache_node_config_t c;
    memset(&c, 0, sizeof c);
    c.max_cost = 1 << 20;
    c.policy = CACHE_POLICY_LRU;
    c.req_timeout_ms = 1;
    c.store_timeout_ms = 5000;
    c.stall_ms = 1000;
    c.hb_limit_ms = 3000;
    c.store_down_ms = 60000;
    c.sub_hwm = 1000;
    snprintf(c.id, sizeof c.id, "c-%s", name);
    snprintf(c.endpoint, sizeof c.endpoint, "inproc://cl-%s", name);
    for (int i = 0; i < NM; i++) {
        char cmd[128], pub[128];
        snprintf(cmd, sizeof cmd, "inproc://cl-%s-cmd%d", name, i + 1);
        snprintf(pub, sizeof pub, "inproc://cl-%s-pub%d", name, i + 1);
        e->m[i].cmd = zu_socket(e->zctx, ZMQ_ROUTER, 0, 0);
        e->m[i].pub = zu_socket(e->zctx, ZMQ_PUB, 0, 0);
        ck_assert_int_eq(zmq_bind(e->m[i].cmd, cmd), 0);
        ck_assert_int_eq(zmq_bind(e->m[i].pub, pub), 0);
        size_t l = strlen(c.store_cmd);
        snprintf(c.store_cmd + l, sizeof c.store_cmd - l, "%s%s", i ? "," : "", cmd);
        l = strlen(c.store_pub);
        snprintf(c.store_pub + l, sizeof c.store_pub - l, "%s%s", i ? "," : "", pub);
    }
    char err[256];
    ck_assert_msg(cache_node_new(e->zctx, &c, &e->n, err) == 0, "%s", err);
    e->gw = zu_socket(e->zctx, ZMQ_DEALER, 0, 0);
    ck_assert_int_eq(zmq_connect(e->gw, c.endpoint), 0);
    ck_assert_int_eq(pthread_create(&e->th, NULL, s_node_thread, e), 0);
}

static void s_env_fini(env_t *e)
{
    e->stop = 1;
    ck_assert_int_eq(zu_send(e->gw, NULL, 0, "\xc1", 1), 0); /* wake the node's wait */
    pthread_join(e->th, NULL);
    cache_node_destroy(&e->n);
    zmq_close(e->gw);
    for (int i = 0; i < NM; i++) {
        zmq_close(e->m[i].cmd);
        zmq_close(e->m[i].pub);
    }
    zmq_ctx_term(e->zctx);
    proto_buf_fini(&e->in);
}

static int s_recv(void *sock, zmq_msg_t *f, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return -1;
    int n;
    ck_assert_int_eq(zu_recv(sock, f, ZU_FRAMES_MAX, &n), 0);
    return n;
}

/* ---- the members' side ----------------------------------------------------------------------- */

static void s_pong(env_t *e, int i, const uint8_t *ident, size_t il, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    stats_add(&l, "store_epoch", EPOCH);
    stats_add(&l, "store_sequence", 100);
    stats_add(&l, "store_repl_term", 1);
    stats_add(&l, "store_repl_leading", e->m[i].leads);
    stats_add(&l, "store_repl_leader", e->m[i].leads ? (uint64_t)i + 1 : e->m[i].names);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_stats(&b, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    ck_assert_int_eq(zu_send(e->m[i].cmd, ident, il, b.data, b.len), 0);
    proto_buf_fini(&b);
    stats_list_fini(&l);
}

/* A command for the test, as one member received it. */
typedef struct cmd {
    int member;
    uint8_t type;
    uint64_t rid;
    char key[64];
    uint8_t ident[32];
    size_t il;
} cmd_t;

/* One message to member i: pings and stats answered here (as the member is set to), catch-ups
 * left unanswered (the stream plays no part here), anything else appended to out (a BATCH opened).
 * Returns the number of commands appended. */
static int s_take(env_t *e, int i, const uint8_t *ident, size_t il, const void *raw, size_t len, cmd_t *out, int room)
{
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(raw, len, &m), PROTO_DEC_OK);
    int n = 0;
    if (m.type == PROTO_BATCH) {
        for (uint32_t k = 0; k < m.n; k++)
            n += s_take(e, i, ident, il, m.parts[k].p, m.parts[k].len, out + n, room - n);
    } else if (m.type == PROTO_PING || m.type == PROTO_STATS) {
        if (e->m[i].answer_pings || m.type == PROTO_STATS)
            s_pong(e, i, ident, il, &m);
    } else if (m.type != PROTO_CATCHUP) {
        ck_assert_int_gt(room, 0);
        cmd_t *c = &out[0];
        memset(c, 0, sizeof *c);
        c->member = i;
        c->type = m.type;
        c->rid = m.rid;
        if (m.type == PROTO_MGET && m.n > 0)
            snprintf(c->key, sizeof c->key, "%.*s", (int)m.keys[0].len, m.keys[0].p);
        else if (m.type == PROTO_TOUCH && m.n > 0)
            snprintf(c->key, sizeof c->key, "%s", m.recs[0].user_id);
        memcpy(c->ident, ident, il);
        c->il = il;
        n = 1;
    }
    proto_msg_fini(&m);
    return n;
}

/* Serve both members for up to ms; returns the commands they received (at most room). */
static int s_serve(env_t *e, int ms, cmd_t *out, int room)
{
    int n = 0;
    uint64_t until = util_mono_ms() + (uint64_t)ms;
    for (uint64_t now; (now = util_mono_ms()) < until;) {
        zmq_pollitem_t it[NM];
        for (int i = 0; i < NM; i++)
            it[i] = (zmq_pollitem_t){.socket = e->m[i].cmd, .events = ZMQ_POLLIN};
        if (zmq_poll(it, NM, (long)(until - now)) <= 0)
            continue;
        for (int i = 0; i < NM; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t f[ZU_FRAMES_MAX];
            int nf;
            ck_assert_int_eq(zu_recv(e->m[i].cmd, f, ZU_FRAMES_MAX, &nf), 0);
            ck_assert_int_eq(nf, 2);
            ck_assert_uint_le(zmq_msg_size(&f[0]), 32);
            n += s_take(e, i, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                        out + n, room - n);
            zu_close_frames(f, nf);
        }
    }
    return n;
}

/* Serve the members until exactly `want` commands came; then a little longer, to see none more. */
static void s_expect_cmds(env_t *e, cmd_t *out, int want)
{
    int n = 0;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (n < want && util_mono_ms() < until)
        n += s_serve(e, 20, out + n, 8 - n);
    ck_assert_msg(n == want, "the members received %d commands, want %d", n, want);
    n += s_serve(e, 300, out + n, 8 - n);
    ck_assert_msg(n == want, "the members received %d commands, want %d (one sent twice?)", n, want);
}

static void s_refuse(env_t *e, const cmd_t *c, uint64_t leader)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_reply(&b, c->rid, PROTO_ENOTLEADER, leader, NULL, 0, "not leader", 0);
    ck_assert_int_eq(zu_send(e->m[c->member].cmd, c->ident, c->il, b.data, b.len), 0);
    proto_buf_fini(&b);
}

static proto_record_t s_record(const char *uid, uint64_t version)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_node(&r, "gw-1", 4);
    r.status = PRESENCE_ONLINE;
    r.ttl_s = 600;
    r.last_seen_us = util_now_us();
    r.expires_at_us = r.last_seen_us + 600000000ull;
    r.version = version;
    return r;
}

static void s_answer(env_t *e, const cmd_t *c, const proto_record_t *rec)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_reply(&b, c->rid, PROTO_OK, 100, rec, 1, NULL, 0);
    ck_assert_int_eq(zu_send(e->m[c->member].cmd, c->ident, c->il, b.data, b.len), 0);
    proto_buf_fini(&b);
}

/* ---- the gateway's side ---------------------------------------------------------------------- */

static void s_gw_send(env_t *e, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->gw, NULL, 0, b->data, b->len), 0);
}

/* The gateway's next answer, within WAIT_MS, while the members are served (pings). */
static void s_gw_expect(env_t *e, uint64_t rid, uint8_t type, uint8_t status, uint64_t version)
{
    uint64_t until = util_mono_ms() + WAIT_MS;
    for (;;) {
        ck_assert_msg(util_mono_ms() < until, "no answer from the cache-node");
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e->gw, f, 20);
        if (n < 0) {
            cmd_t none[8];
            ck_assert_int_eq(s_serve(e, 5, none, 8), 0);
            continue;
        }
        ck_assert_int_eq(n, 1);
        proto_buf_t in;
        proto_buf_init(&in);
        proto_buf_append(&in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
        zu_close_frames(f, n);
        proto_msg_t m;
        ck_assert_int_eq(proto_decode(in.data, in.len, &m), PROTO_DEC_OK);
        ck_assert_int_eq(m.type, type);
        ck_assert_uint_eq(m.rid, rid);
        ck_assert_int_eq(m.status, status);
        if (version) {
            ck_assert_uint_eq(m.n, 1);
            ck_assert_uint_eq(m.recs[0].version, version);
        }
        proto_msg_fini(&m);
        proto_buf_fini(&in);
        return;
    }
}

static uint64_t s_stat(env_t *e, const char *prefix)
{
    static uint64_t rid = 900000;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_STATS, ++rid);
    s_gw_send(e, &b);
    proto_buf_fini(&b);
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = s_recv(e->gw, f, WAIT_MS);
    ck_assert_int_eq(n, 1);
    proto_msg_t m;
    proto_buf_t in;
    proto_buf_init(&in);
    proto_buf_append(&in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
    zu_close_frames(f, n);
    ck_assert_int_eq(proto_decode(in.data, in.len, &m), PROTO_DEC_OK);
    ck_assert_int_eq(m.type, PROTO_STATS_REPLY);
    size_t pl = strlen(prefix);
    uint64_t v = UINT64_MAX;
    for (uint32_t i = 0; i < m.n; i++)
        if (m.stats[i].name.len > pl && memcmp(m.stats[i].name.p, prefix, pl) == 0 && m.stats[i].name.p[pl] == '{')
            v = m.stats[i].value;
    proto_msg_fini(&m);
    proto_buf_fini(&in);
    ck_assert_msg(v != UINT64_MAX, "no stat %s", prefix);
    return v;
}

/* Member 1 says it leads; member 2 does not answer pings (so only a refusal can move the node).
 * Serve until the node's store link is up (following member 1). */
static void s_follow_member1(env_t *e)
{
    e->m[0].leads = true;
    e->m[0].answer_pings = true;
    e->m[1].answer_pings = false;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (s_stat(e, "cache_store_up") != 1) {
        ck_assert_msg(util_mono_ms() < until, "the node never followed member 1");
        cmd_t none[8];
        ck_assert_int_eq(s_serve(e, 20, none, 8), 0);
    }
    /* From now on member 1 has lost the leadership to member 2, which it names. */
    e->m[0].leads = false;
    e->m[0].names = 2;
}

/* ==== tests ================================================================================== */

/* A read refused by the member we followed: to member 2 once (not once by the switch and once
 * more for the refusal), and member 2's answer is the gateway's. */
START_TEST(test_refused_read_sent_once)
{
    env_t e;
    s_env(&e, "read");
    s_follow_member1(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 7, "alice", 5);
    s_gw_send(&e, &b);
    cmd_t c[8];
    s_expect_cmds(&e, c, 1);
    ck_assert_int_eq(c[0].member, 0);
    ck_assert_int_eq(c[0].type, PROTO_MGET);
    s_refuse(&e, &c[0], 2);
    s_expect_cmds(&e, c, 1);
    ck_assert_int_eq(c[0].member, 1);
    ck_assert_int_eq(c[0].type, PROTO_MGET);
    ck_assert_str_eq(c[0].key, "alice");
    proto_record_t r = s_record("alice", 42);
    s_answer(&e, &c[0], &r);
    s_gw_expect(&e, 7, PROTO_REPLY, PROTO_OK, 42);
    ck_assert_uint_eq(s_stat(&e, "cache_store_up"), 1);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* A heartbeat (TOUCH: no command id, so a switch alone answers it "unavailable") refused by the
 * member we followed: not applied there, so it goes to member 2 once and its answer is the
 * gateway's -- and the node lives on (it used to free the command and then read it). */
START_TEST(test_refused_heartbeat_rerouted)
{
    env_t e;
    s_env(&e, "touch");
    s_follow_member1(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_record_t t = s_record("bob", 0);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 9, &t, 1);
    s_gw_send(&e, &b);
    cmd_t c[8];
    s_expect_cmds(&e, c, 1);
    ck_assert_int_eq(c[0].member, 0);
    ck_assert_int_eq(c[0].type, PROTO_TOUCH);
    s_refuse(&e, &c[0], 2);
    s_expect_cmds(&e, c, 1);
    ck_assert_int_eq(c[0].member, 1);
    ck_assert_int_eq(c[0].type, PROTO_TOUCH);
    ck_assert_str_eq(c[0].key, "bob");
    proto_record_t r = s_record("bob", 43);
    s_answer(&e, &c[0], &r);
    s_gw_expect(&e, 9, PROTO_REPLY, PROTO_OK, 43);
    /* The node still answers (it survived the refusal) and counts the one re-route. */
    ck_assert_uint_eq(s_stat(&e, "cache_store_retries_total"), 1);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("cache_link");
    TCase *tc = tcase_create("following the leader");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_refused_read_sent_once);
    tcase_add_test(tc, test_refused_heartbeat_rerouted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_min_level = LOG_ERROR; /* the node's notices (leader switches) are expected here */
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
