/* check_relay_follow.c -- Check suite for the sync relay's link to a replicated center
 * (sync/relay.c: following the leader), without a process.
 *
 * Each test binds two center members of its own on inproc endpoints (a ROUTER and a PUB each,
 * served by hand: the stream's catch-ups, the relay's STATS polls, the leader's heartbeats, and
 * the commands the test is asked to refuse or answer), makes a relay configured with both, talks
 * to it as a region cache-node does (a DEALER) and runs it on a thread of its own (relay_run).
 * Real ZeroMQ, the real wire format, polls with deadlines.
 *
 * What is pinned: a command the member the relay follows refuses (ENOTLEADER, naming the other
 * member) goes to the member it names exactly once, and that member's answer is the one the
 * region gets, under the region's request id -- whether it is a read (which a switch of leader
 * alone would also send again) or a heartbeat without a command id (which a switch alone answers
 * "unavailable"). The relay used to free such a command while it still handled the refusal
 * (use-after-free) and to send a read twice (the same defect as the cache-node's, 2026-12-06); and
 * its change stream, which still came from the old leader, pulled it back to the refusing member
 * on its next loop turn, before the new leader's first heartbeat.
 */
#include "log.h"
#include "proto.h"
#include "relay.h"
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
#define SEQ 10 /* the center's sequence: a new relay gets a snapshot through it */
#define WAIT_MS 5000
#define QUIET_MS 500 /* served after a command came, to see that no copy of it follows */
#define HUGZ_MS 100  /* the leader's heartbeat interval here */
#define NM 2
#define CMDS_MAX 8

typedef struct member {
    void *cmd, *pub;
    bool leads;      /* its STATS say it leads (term below); catch-ups are answered */
    uint64_t term;   /* the term it leads in */
    uint64_t names;  /* when it does not lead: the leader it names (1-based) */
} member_t;

typedef struct env {
    void *zctx;
    member_t m[NM];
    int hugz_from;       /* the member publishing heartbeats (naming itself), or -1: the stream is silent */
    uint64_t next_hugz;  /* monotonic ms */
    void *cache;         /* a region cache-node's DEALER to the relay */
    relay_t *r;
    pthread_t th;
    volatile sig_atomic_t stop;
    proto_buf_t cache_in; /* the last message the region received (decoded messages borrow it) */
} env_t;

static void *s_relay_thread(void *arg)
{
    env_t *e = arg;
    relay_run(e->r, &e->stop);
    return NULL;
}

static void s_env(env_t *e, const char *name)
{
    memset(e, 0, sizeof *e);
    e->hugz_from = -1;
    proto_buf_init(&e->cache_in);
    e->zctx = zmq_ctx_new();
    relay_config_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.cmd_ep, sizeof c.cmd_ep, "inproc://rf-%s-cmd", name);
    snprintf(c.pub_ep, sizeof c.pub_ep, "inproc://rf-%s-pub", name);
    for (int i = 0; i < NM; i++) {
        char cmd[128], pub[128];
        snprintf(cmd, sizeof cmd, "inproc://rf-%s-ccmd%d", name, i + 1);
        snprintf(pub, sizeof pub, "inproc://rf-%s-cpub%d", name, i + 1);
        e->m[i].cmd = zu_socket(e->zctx, ZMQ_ROUTER, 0, 0);
        e->m[i].pub = zu_socket(e->zctx, ZMQ_PUB, 0, 0);
        ck_assert_int_eq(zmq_bind(e->m[i].cmd, cmd), 0);
        ck_assert_int_eq(zmq_bind(e->m[i].pub, pub), 0);
        size_t l = strlen(c.center_cmd);
        snprintf(c.center_cmd + l, sizeof c.center_cmd - l, "%s%s", i ? "," : "", cmd);
        l = strlen(c.center_pub);
        snprintf(c.center_pub + l, sizeof c.center_pub - l, "%s%s", i ? "," : "", pub);
    }
    snprintf(c.center, sizeof c.center, "%s", c.center_cmd);
    c.window_max = 1 << 20;
    c.req_timeout_ms = 10000; /* longer than any wait here: a command never times out under a test */
    c.hb_limit_ms = 10000; /* the stream is silent for a while in each test; that is not what is tested */
    char err[256];
    ck_assert_msg(relay_new(e->zctx, &c, &e->r, err) == 0, "%s", err);
    e->cache = zu_socket(e->zctx, ZMQ_DEALER, 0, 0);
    ck_assert_int_eq(zmq_connect(e->cache, c.cmd_ep), 0);
    ck_assert_int_eq(pthread_create(&e->th, NULL, s_relay_thread, e), 0);
}

static void s_env_fini(env_t *e)
{
    e->stop = 1;
    ck_assert_int_eq(zu_send(e->cache, NULL, 0, "\xc1", 1), 0); /* wake the relay's wait */
    pthread_join(e->th, NULL);
    relay_destroy(&e->r);
    zmq_close(e->cache);
    for (int i = 0; i < NM; i++) {
        zmq_close(e->m[i].cmd);
        zmq_close(e->m[i].pub);
    }
    zmq_ctx_term(e->zctx);
    proto_buf_fini(&e->cache_in);
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

static void s_member_send(env_t *e, int i, const uint8_t *ident, size_t il, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->m[i].cmd, ident, il, b->data, b->len), 0);
}

/* The heartbeat of the leader, naming itself, as a replicated store-node publishes it. */
static void s_hugz(env_t *e)
{
    if (e->hugz_from < 0 || util_mono_ms() < e->next_hugz)
        return;
    e->next_hugz = util_mono_ms() + HUGZ_MS;
    int i = e->hugz_from;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_hugz_member(&b, EPOCH, SEQ, util_now_us(), 0, (uint32_t)i + 1, e->m[i].term);
    char t = PROTO_TOPIC_HUGZ;
    ck_assert_int_eq(zmq_send(e->m[i].pub, &t, 1, ZMQ_SNDMORE), 1);
    ck_assert_int_eq(zmq_send(e->m[i].pub, b.data, b.len, 0), (int)b.len);
    proto_buf_fini(&b);
}

/* A STATS poll, answered as a member of a replicated center does. */
static void s_stats(env_t *e, int i, const uint8_t *ident, size_t il, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    stats_add(&l, "store_epoch", EPOCH);
    stats_add(&l, "store_sequence", SEQ);
    stats_add(&l, "store_repl_term", e->m[i].term);
    stats_add(&l, "store_repl_leading", e->m[i].leads);
    stats_add(&l, "store_repl_leader", e->m[i].leads ? (uint64_t)i + 1 : e->m[i].names);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_stats(&b, PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    s_member_send(e, i, ident, il, &b);
    proto_buf_fini(&b);
    stats_list_fini(&l);
}

/* The stream's catch-up: the leader answers with a snapshot (no data) through SEQ, or nothing
 * after SEQ when already there; a member that does not lead refuses, naming the leader. */
static void s_catchup(env_t *e, int i, const uint8_t *ident, size_t il, const proto_msg_t *m)
{
    proto_buf_t b;
    proto_buf_init(&b);
    if (!e->m[i].leads) {
        proto_enc_reply(&b, m->rid, PROTO_ENOTLEADER, e->m[i].names, NULL, 0, "not leader", 0);
    } else {
        proto_enc_t enc;
        proto_enc_init(&enc, &b);
        bool ours = m->epoch == EPOCH;
        proto_enc_catchup_reply_begin(&enc, m->rid, PROTO_OK, EPOCH, ours ? PROTO_CATCHUP_INCREMENTAL : PROTO_CATCHUP_SNAPSHOT,
                                      SEQ, true, 0);
        proto_enc_catchup_reply_end(&enc, "", 0);
    }
    s_member_send(e, i, ident, il, &b);
    proto_buf_fini(&b);
}

/* A command for the test, as one member received it. */
typedef struct cmd {
    int member;
    uint8_t type;
    uint64_t rid; /* the relay's request id */
    bool has_cmd_id;
    char key[64];
    uint8_t ident[32];
    size_t il;
} cmd_t;

/* One message to member i: catch-ups and STATS answered here, anything else stored in *out.
 * Returns 1 when a command was stored, else 0. */
static int s_take(env_t *e, int i, const uint8_t *ident, size_t il, const void *raw, size_t len, cmd_t *out)
{
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(raw, len, &m), PROTO_DEC_OK);
    int n = 0;
    if (m.type == PROTO_CATCHUP) {
        s_catchup(e, i, ident, il, &m);
    } else if (m.type == PROTO_STATS) {
        s_stats(e, i, ident, il, &m);
    } else {
        memset(out, 0, sizeof *out);
        out->member = i;
        out->type = m.type;
        out->rid = m.rid;
        out->has_cmd_id = m.has_cmd_id;
        if (m.type == PROTO_GET)
            snprintf(out->key, sizeof out->key, "%.*s", (int)m.key.len, m.key.p);
        else if (m.type == PROTO_TOUCH && m.n > 0)
            snprintf(out->key, sizeof out->key, "%s", m.recs[0].user_id);
        memcpy(out->ident, ident, il);
        out->il = il;
        n = 1;
    }
    proto_msg_fini(&m);
    return n;
}

/* Serve both members (and the leader's heartbeats) for ms; returns the commands they received
 * (at most room: more is a failure). */
static int s_serve(env_t *e, int ms, cmd_t *out, int room)
{
    int n = 0;
    uint64_t until = util_mono_ms() + (uint64_t)ms;
    for (uint64_t now; (now = util_mono_ms()) < until;) {
        s_hugz(e);
        zmq_pollitem_t it[NM];
        for (int i = 0; i < NM; i++)
            it[i] = (zmq_pollitem_t){.socket = e->m[i].cmd, .events = ZMQ_POLLIN};
        if (zmq_poll(it, NM, (long)MIN(until - now, HUGZ_MS)) <= 0)
            continue;
        for (int i = 0; i < NM; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t f[ZU_FRAMES_MAX];
            int nf;
            ck_assert_int_eq(zu_recv(e->m[i].cmd, f, ZU_FRAMES_MAX, &nf), 0);
            ck_assert_int_eq(nf, 2);
            ck_assert_uint_le(zmq_msg_size(&f[0]), 32);
            cmd_t c;
            if (s_take(e, i, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &c)) {
                ck_assert_msg(n < room, "more commands at the members than the test expects");
                out[n++] = c;
            }
            zu_close_frames(f, nf);
        }
    }
    return n;
}

/* Serve the members until exactly `want` commands came; then QUIET_MS longer, to see none more. */
static void s_expect_cmds(env_t *e, cmd_t *out, int want)
{
    int n = 0;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (n < want && util_mono_ms() < until)
        n += s_serve(e, 20, out + n, CMDS_MAX - n);
    if (n == want)
        n += s_serve(e, QUIET_MS, out + n, CMDS_MAX - n);
    char to[64] = "";
    for (int i = 0, l = 0; i < n && l < (int)sizeof to - 4; i++)
        l += snprintf(to + l, sizeof to - (size_t)l, "%s%d", i ? "," : "", out[i].member + 1);
    ck_assert_msg(n == want, "the members received %d commands (to members %s), want %d", n, to, want);
}

static void s_reply(env_t *e, const cmd_t *c, uint8_t status, uint64_t as_of, const proto_record_t *rec)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_reply(&b, c->rid, status, as_of, rec, rec ? 1 : 0, status == PROTO_OK ? NULL : "not leader", 0);
    s_member_send(e, c->member, c->ident, c->il, &b);
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

/* ---- the region's side ----------------------------------------------------------------------- */

static void s_cache_send(env_t *e, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->cache, NULL, 0, b->data, b->len), 0);
}

/* The region's next message from the relay, decoded, within WAIT_MS, while the members are
 * served (no command may reach them meanwhile). */
static void s_cache_recv(env_t *e, proto_msg_t *m)
{
    uint64_t until = util_mono_ms() + WAIT_MS;
    for (;;) {
        ck_assert_msg(util_mono_ms() < until, "no answer from the relay");
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e->cache, f, 5);
        if (n < 0) {
            cmd_t none[CMDS_MAX];
            ck_assert_msg(s_serve(e, 5, none, CMDS_MAX) == 0, "a command reached a member unasked");
            continue;
        }
        ck_assert_int_eq(n, 1);
        proto_buf_reset(&e->cache_in);
        proto_buf_append(&e->cache_in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
        zu_close_frames(f, n);
        ck_assert_int_eq(proto_decode(e->cache_in.data, e->cache_in.len, m), PROTO_DEC_OK);
        return;
    }
}

/* The region's next answer: a REPLY to rid with this status and (version != 0) one record. */
static void s_expect_reply(env_t *e, uint64_t rid, uint8_t status, const char *uid, uint64_t version)
{
    proto_msg_t m;
    s_cache_recv(e, &m);
    ck_assert_int_eq(m.type, PROTO_REPLY);
    ck_assert_uint_eq(m.rid, rid);
    ck_assert_msg(m.status == status, "status %u (%.*s), want %u", m.status, (int)m.key.len, m.key.p, status);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].user_id, uid);
    ck_assert_uint_eq(m.recs[0].version, version);
    proto_msg_fini(&m);
}

/* One of the relay's numbers, through the region (STATS -> STATS_REPLY). */
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

/* Member 1 leads (term 1) and publishes its heartbeats; member 2 follows it. Serve until the
 * relay's link is up (its stream caught up from member 1) and its commands go to member 1. */
static void s_follow_member1(env_t *e)
{
    e->m[0] = (member_t){.cmd = e->m[0].cmd, .pub = e->m[0].pub, .leads = true, .term = 1};
    e->m[1] = (member_t){.cmd = e->m[1].cmd, .pub = e->m[1].pub, .leads = false, .term = 1, .names = 1};
    e->hugz_from = 0;
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (s_stat(e, "relay_link_up") != 1 || s_stat(e, "relay_center_member") != 1) {
        ck_assert_msg(util_mono_ms() < until, "the relay's link never came up on member 1");
        cmd_t none[CMDS_MAX];
        ck_assert_int_eq(s_serve(e, 20, none, CMDS_MAX), 0);
    }
}

/* The leadership moves to member 2 (term 2), as the member 1 the relay follows finds out: from
 * now on member 1 refuses and names member 2, and stops publishing heartbeats. Member 2's first
 * heartbeat has not reached the relay yet (the stream is silent until s_member2_speaks). */
static void s_member1_steps_down(env_t *e)
{
    e->m[0].leads = false;
    e->m[0].names = 2;
    e->m[1].leads = true;
    e->m[1].term = 2;
    e->hugz_from = -1;
}

static void s_member2_speaks(env_t *e)
{
    e->hugz_from = 1;
    e->next_hugz = 0;
}

/* The relay's state after a refused command went to member 2: its link is up, commands go to
 * member 2 (one switch, no going back and forth), one command sent again, nothing answered
 * "unavailable" or timed out -- also once member 2's heartbeats reach it (the stream then
 * agrees). */
static void s_expect_on_member2(env_t *e)
{
    ck_assert_uint_eq(s_stat(e, "relay_link_up"), 1);
    ck_assert_uint_eq(s_stat(e, "relay_center_member"), 2);
    s_member2_speaks(e);
    cmd_t none[CMDS_MAX];
    ck_assert_int_eq(s_serve(e, 3 * HUGZ_MS, none, CMDS_MAX), 0);
    ck_assert_uint_eq(s_stat(e, "relay_link_up"), 1);
    ck_assert_uint_eq(s_stat(e, "relay_center_member"), 2);
    ck_assert_uint_eq(s_stat(e, "relay_center_leader_switches_total"), 1);
    ck_assert_uint_eq(s_stat(e, "relay_center_retries_total"), 1);
    ck_assert_uint_eq(s_stat(e, "relay_unavailable_total"), 0);
    ck_assert_uint_eq(s_stat(e, "relay_timeouts_total"), 0);
}

/* A command the region sends through the relay: member 1 gets it once and refuses it naming
 * member 2; member 2 then gets the same command (the relay's request id) exactly once. Returns
 * member 2's copy in *c2. */
static void s_refused_then_rerouted(env_t *e, const proto_buf_t *b, uint8_t type, const char *key, cmd_t *c2)
{
    s_cache_send(e, b);
    cmd_t c[CMDS_MAX];
    s_expect_cmds(e, c, 1);
    ck_assert_int_eq(c[0].member, 0);
    ck_assert_int_eq(c[0].type, type);
    ck_assert_str_eq(c[0].key, key);
    s_member1_steps_down(e);
    s_reply(e, &c[0], PROTO_ENOTLEADER, 2, NULL);
    cmd_t first = c[0];
    s_expect_cmds(e, c, 1);
    ck_assert_msg(c[0].member == 1, "the refused command went to member %d, want 2", c[0].member + 1);
    ck_assert_int_eq(c[0].type, type);
    ck_assert_str_eq(c[0].key, key);
    ck_assert_uint_eq(c[0].rid, first.rid);
    *c2 = c[0];
}

/* ==== tests ================================================================================== */

/* A read refused by the member the relay follows: to member 2 once (not once by the switch and
 * once more for the refusal, nor back to member 1), and member 2's answer is the region's. */
START_TEST(test_refused_read_sent_once)
{
    env_t e;
    s_env(&e, "read");
    s_follow_member1(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 7, "alice", 5);
    cmd_t c;
    s_refused_then_rerouted(&e, &b, PROTO_GET, "alice", &c);
    proto_record_t r = s_record("alice", 42);
    s_reply(&e, &c, PROTO_OK, SEQ, &r);
    s_expect_reply(&e, 7, PROTO_OK, "alice", 42);
    s_expect_on_member2(&e);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* A heartbeat (TOUCH: no command id, so a switch of leader alone answers it "unavailable")
 * refused by the member the relay follows: never applied there, so it goes to member 2 once and
 * member 2's answer is the region's -- and the relay lives on (it used to free the command and
 * then use it). */
START_TEST(test_refused_heartbeat_rerouted)
{
    env_t e;
    s_env(&e, "touch");
    s_follow_member1(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_record_t t = s_record("bob", 0);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 9, &t, 1);
    cmd_t c;
    s_refused_then_rerouted(&e, &b, PROTO_TOUCH, "bob", &c);
    ck_assert(!c.has_cmd_id);
    proto_record_t r = s_record("bob", 43);
    s_reply(&e, &c, PROTO_OK, SEQ + 1, &r);
    s_expect_reply(&e, 9, PROTO_OK, "bob", 43);
    s_expect_on_member2(&e);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("relay_follow");
    TCase *tc = tcase_create("following the leader");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_refused_read_sent_once);
    tcase_add_test(tc, test_refused_heartbeat_rerouted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_min_level = LOG_ERROR; /* the relay's notices (leader switches, link up) are expected here */
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
