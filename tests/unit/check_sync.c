/* check_sync.c -- Check suite for the change-stream client (sync/sync_client.c) driven through
 * sync_client_input(), the seam that feeds received messages without a publisher.
 *
 * The client's DEALER is connected to a ROUTER bound here (inproc), so its catch-up requests are
 * read back and answered with the request id they carry. Regressions found by fuzzing
 * (tests/fuzz/fuzz_sync.c) live here too. The "leader" case covers sync/leader.c and a client
 * following the leader of a replicated center (three ROUTERs and PUBs here).
 */
#include "leader.h"
#include "proto.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct rec {
    int applies, resets;
    uint64_t last_seq;
} rec_t;

static void on_apply(void *ctx, const proto_change_t *c)
{
    rec_t *r = ctx;
    r->applies++;
    r->last_seq = c->rec.version;
}

static void on_reset(void *ctx)
{
    ((rec_t *)ctx)->resets++;
}

typedef struct env {
    void *zctx, *pub, *router;
    sync_client_t *sc;
    rec_t rec;
} env_t;

static void s_env(env_t *e, const char *name)
{
    memset(e, 0, sizeof *e);
    char pub[64], cmd[64];
    snprintf(pub, sizeof pub, "inproc://%s-pub", name);
    snprintf(cmd, sizeof cmd, "inproc://%s-cmd", name);
    e->zctx = zmq_ctx_new();
    e->pub = zu_socket(e->zctx, ZMQ_PUB, 0, 0);
    e->router = zu_socket(e->zctx, ZMQ_ROUTER, 0, 0);
    ck_assert_int_eq(zmq_bind(e->pub, pub), 0);
    ck_assert_int_eq(zmq_bind(e->router, cmd), 0);
    sync_config_t cfg = {.pub_ep = pub, .cmd_ep = cmd, .want_snapshot_data = true};
    sync_handler_t h = {.ctx = &e->rec, .apply = on_apply, .reset = on_reset};
    char err[256];
    e->sc = sync_client_new(e->zctx, &cfg, &h, err);
    ck_assert_msg(e->sc != NULL, "%s", err);
}

static void s_env_fini(env_t *e)
{
    sync_client_destroy(&e->sc);
    zmq_close(e->pub);
    zmq_close(e->router);
    zmq_ctx_term(e->zctx);
}

/* The request id of the catch-up the client just sent (it must have sent one). */
static uint64_t s_catchup_rid(env_t *e)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n;
    ck_assert_int_eq(zu_recv(e->router, f, ZU_FRAMES_MAX, &n), 0);
    ck_assert_int_eq(n, 2);
    proto_msg_t m;
    ck_assert_int_eq(proto_decode(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &m), PROTO_DEC_OK);
    ck_assert_int_eq(m.type, PROTO_CATCHUP);
    uint64_t rid = m.rid;
    proto_msg_fini(&m);
    zu_close_frames(f, n);
    return rid;
}

static void s_input(sync_client_t *sc, bool sub, const void *topic, const proto_buf_t *b, int extra_frames)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = 0;
    if (sub) {
        zmq_msg_init_size(&f[n], 1);
        memcpy(zmq_msg_data(&f[n]), topic, 1);
        n++;
    }
    zmq_msg_init_size(&f[n], b->len);
    memcpy(zmq_msg_data(&f[n]), b->data, b->len);
    n++;
    for (int i = 0; i < extra_frames; i++)
        zmq_msg_init(&f[n++]);
    sync_client_input(sc, sub, f, n);
    zu_close_frames(f, n);
}

static proto_change_t s_set(const char *uid, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_SET;
    proto_record_set_uid(&c.rec, uid, strlen(uid));
    proto_record_set_node(&c.rec, "n1", 2);
    proto_record_set_msg(&c.rec, "", 0);
    c.rec.ttl_s = 60;
    c.rec.version = seq;
    return c;
}

/* Catch-up, then live changes through the seam: the ordinary path. */
START_TEST(test_input_catchup_then_live)
{
    env_t e;
    s_env(&e, "live");
    sync_client_tick(e.sc, util_mono_ms());
    uint64_t rid = s_catchup_rid(&e);

    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_change_t c1 = s_set("alice", 1), c2 = s_set("bob", 2);
    proto_enc_catchup_reply_begin(&enc, rid, PROTO_OK, 9, PROTO_CATCHUP_SNAPSHOT, 2, false, 2);
    proto_enc_change(&enc, &c1);
    proto_enc_change(&enc, &c2);
    proto_enc_catchup_reply_end(&enc, "", 0);
    s_input(e.sc, false, NULL, &b, 0);
    ck_assert_int_eq(e.rec.resets, 1);
    ck_assert_int_eq(e.rec.applies, 2);
    /* Key scan complete: incremental from the snapshot's base (2). */
    rid = s_catchup_rid(&e);
    proto_buf_reset(&b);
    proto_enc_catchup_reply_begin(&enc, rid, PROTO_OK, 9, PROTO_CATCHUP_INCREMENTAL, 2, true, 0);
    proto_enc_catchup_reply_end(&enc, "", 0);
    s_input(e.sc, false, NULL, &b, 0);
    ck_assert_int_eq(sync_client_state(e.sc), SYNC_LIVE);
    ck_assert_uint_eq(sync_client_seq(e.sc), 2);

    proto_buf_reset(&b);
    proto_change_t c3 = s_set("carol", 3);
    proto_enc_changes_begin(&enc, 9, 3, 3, 1);
    proto_enc_change(&enc, &c3);
    char t = PROTO_TOPIC_CHANGES;
    s_input(e.sc, true, &t, &b, 0);
    ck_assert_int_eq(e.rec.applies, 3);
    ck_assert_uint_eq(e.rec.last_seq, 3);
    ck_assert_uint_eq(sync_client_seq(e.sc), 3);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* Leave junk where the next call's locals will be. */
static __attribute__((noinline)) void s_dirty_stack(void)
{
    volatile unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0xa5;
}

/* Fuzzing (fuzz_sync): a reply of several frames on the DEALER was counted as malformed and then
 * its never-initialised decode result was freed (free of stack garbage). */
START_TEST(test_fuzz_reply_of_several_frames)
{
    env_t e;
    s_env(&e, "frames");
    sync_client_tick(e.sc, util_mono_ms());
    uint64_t rid = s_catchup_rid(&e);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_catchup_reply_begin(&enc, rid, PROTO_OK, 9, PROTO_CATCHUP_SNAPSHOT, 0, true, 0);
    proto_enc_catchup_reply_end(&enc, "", 0);
    for (int extra = 1; extra <= 3; extra++) {
        s_dirty_stack();
        s_input(e.sc, false, NULL, &b, extra);
    }
    sync_stats_t st;
    sync_client_get_stats(e.sc, &st);
    ck_assert_uint_eq(st.malformed, 3);
    ck_assert_int_eq(e.rec.resets, 0); /* none of them was taken as the reply */
    /* The same reply in one frame is. */
    s_input(e.sc, false, NULL, &b, 0);
    ck_assert_int_eq(e.rec.resets, 1);
    ck_assert_int_eq(sync_client_state(e.sc), SYNC_LIVE);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ---- following the leader of a replicated center (sync/leader.c, and the client on it) ------- */

START_TEST(test_leader_parse_and_hints)
{
    leader_t l;
    char err[256];
    ck_assert_int_eq(leader_parse(&l, "ipc://a", "X", err), 0);
    ck_assert_uint_eq(l.n, 1);
    ck_assert(!leader_replicated(&l));
    ck_assert(!leader_next(&l)); /* one store: nowhere else to go */
    ck_assert(!leader_hint(&l, 1, 3));
    ck_assert_int_eq(leader_parse(&l, "tcp://h1:1,tcp://h2:1,tcp://h3:1", "X", err), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(leader_endpoint(&l), "tcp://h1:1");
    ck_assert(leader_hint(&l, 3, 7));
    ck_assert_str_eq(leader_endpoint(&l), "tcp://h3:1");
    ck_assert(!leader_hint(&l, 2, 6)); /* an older term: a cut-off leader that has not stepped down */
    ck_assert(!leader_hint(&l, 0, 0));
    ck_assert(!leader_hint(&l, 4, 0)); /* no such member */
    ck_assert(leader_hint(&l, 2, 0));  /* a follower's word (no term) */
    ck_assert(leader_next(&l));
    ck_assert_uint_eq(l.cur, 2);
    ck_assert(leader_next(&l));
    ck_assert_uint_eq(l.cur, 0);
    ck_assert_uint_eq(l.switches, 4);
    ck_assert_int_eq(leader_parse(&l, "a,,b", "X", err), -1);
    ck_assert_ptr_nonnull(strstr(err, "X: empty endpoint"));
    ck_assert_int_eq(leader_parse(&l, "", "X", err), -1);
    ck_assert_int_eq(leader_parse(&l, "a,b,c,d,e,f,g,h", "X", err), -1);
    ck_assert_ptr_nonnull(strstr(err, "more than 7"));
}
END_TEST

/* A client given three members: catch-ups go to member 1, then to the member a heartbeat names,
 * then to the leader a follower's ENOTLEADER names; lists of different lengths are refused. */
START_TEST(test_follows_the_leader)
{
    void *zctx = zmq_ctx_new();
    void *routers[3], *pubs[3];
    char cmd[200] = "", pub[200] = "";
    for (int i = 0; i < 3; i++) {
        char ep[64];
        routers[i] = zu_socket(zctx, ZMQ_ROUTER, 0, 0);
        snprintf(ep, sizeof ep, "inproc://m%d-cmd", i + 1);
        ck_assert_int_eq(zmq_bind(routers[i], ep), 0);
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%s", i ? "," : "", ep);
        pubs[i] = zu_socket(zctx, ZMQ_PUB, 0, 0);
        snprintf(ep, sizeof ep, "inproc://m%d-pub", i + 1);
        ck_assert_int_eq(zmq_bind(pubs[i], ep), 0);
        snprintf(pub + strlen(pub), sizeof pub - strlen(pub), "%s%s", i ? "," : "", ep);
    }
    rec_t rec = {0};
    sync_handler_t h = {.ctx = &rec, .apply = on_apply, .reset = on_reset};
    char err[256];
    sync_config_t bad = {.pub_ep = "inproc://m1-pub", .cmd_ep = cmd};
    ck_assert_ptr_null(sync_client_new(zctx, &bad, &h, err));
    ck_assert_ptr_nonnull(strstr(err, "1 change stream endpoints but 3 command endpoints"));
    sync_config_t cfg = {.pub_ep = pub, .cmd_ep = cmd};
    sync_client_t *sc = sync_client_new(zctx, &cfg, &h, err);
    ck_assert_msg(sc != NULL, "%s", err);
    ck_assert_uint_eq(sync_client_leader(sc), 1);
    env_t e = {.zctx = zctx, .router = routers[0], .sc = sc};
    sync_client_tick(sc, util_mono_ms());
    s_catchup_rid(&e); /* member 1 got the first catch-up */
    /* Member 3's heartbeat (term 4): it leads. The next catch-up goes there. */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_hugz_member(&b, 9, 0, util_now_us(), 0, 3, 4);
    s_input(sc, true, "H", &b, 0);
    ck_assert_uint_eq(sync_client_leader(sc), 3);
    e.router = routers[2];
    uint64_t rid = 0;
    for (int i = 0; i < 200 && !rid; i++) { /* the DEALER reconnects: poll, no sleep-to-sync */
        sync_client_tick(sc, util_mono_ms() + 10);
        zmq_pollitem_t pi = {.socket = routers[2], .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 10) > 0)
            rid = s_catchup_rid(&e);
    }
    ck_assert_uint_gt(rid, 0);
    /* Member 3 says it does not lead; member 2 does. */
    proto_buf_reset(&b);
    proto_enc_reply(&b, rid, PROTO_ENOTLEADER, 2, NULL, 0, "not leader", 0);
    s_input(sc, false, NULL, &b, 0);
    ck_assert_uint_eq(sync_client_leader(sc), 2);
    sync_stats_t st;
    sync_client_get_stats(sc, &st);
    ck_assert_uint_eq(st.leader, 2);
    ck_assert_uint_eq(st.leader_switches, 2);
    proto_buf_fini(&b);
    sync_client_destroy(&sc);
    for (int i = 0; i < 3; i++) {
        zmq_close(routers[i]);
        zmq_close(pubs[i]);
    }
    zmq_ctx_term(zctx);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("input");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_input_catchup_then_live);
    tcase_add_test(tc, test_fuzz_reply_of_several_frames);
    suite_add_tcase(s, tc);
    tc = tcase_create("leader");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_leader_parse_and_hints);
    tcase_add_test(tc, test_follows_the_leader);
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
