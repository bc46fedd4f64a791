/* integ_ws_faults.c -- WebSocket sessions when whole processes fail (real processes, by pid).
 *
 *   - SIGKILL of a gateway with 20 users connected: a watcher on a second gateway gets every one's
 *     offline event within GATEWAY_LEASE_MS of the kill (the store ends the lapsed lease's
 *     sessions), and no earlier than the kill;
 *   - SIGKILL and restart of the store-node with connections open: nothing acknowledged is lost
 *     (the sessions the welcomes confirmed, REST writes), the lease survives the restart, a connect
 *     while the store is down is refused 503, and `set` works again afterwards;
 *   - a gateway cut off from the store longer than its lease (SIGSTOP): the store ends its
 *     sessions; back (SIGCONT), the gateway learns the lease lapsed, takes a new one and re-opens
 *     every open connection's session: the users are online again without reconnecting;
 *   - a leaf region: a connection at the leaf's gateway makes the user online at the center.
 */
#include "harness.h"
#include "util.h"
#include "ws_client.h"
#include "ws_steps.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE_MS 1500

/* A second gateway on the node's cache-nodes and store (as a second gateway pod would be). */
static th_proc_t *s_gateway2(const th_node_t *n, const char *const *extra, int *port)
{
    th_proc_t *g = th_proc("gateway-2", "gateway");
    th_env(g, "DATA_DIR", "%s", n->dir);
    th_env(g, "JWT_SECRET", "%s", TH_SECRET);
    th_env(g, "NODE_ID", "test-node-2");
    th_env(g, "LOG_LEVEL", "info");
    th_env(g, "STORE_CMD_ENDPOINT", "%s", n->store_cmd);
    th_env(g, "STORE_PUB_ENDPOINT", "%s", n->store_pub);
    th_env(g, "SERVICE_PORT", "0");
    th_env(g, "SERVICE_ADDR", "127.0.0.1");
    th_env(g, "CACHE_ENDPOINTS", "%s", n->cache_eps);
    for (int i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(g, name, "%s", eq + 1);
    }
    ck_assert_int_eq(th_start(g, 20000), 0);
    *port = atoi(strrchr(g->ready, ':') + 1);
    return g;
}

START_TEST(test_gateway_sigkill_offline_within_lease)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_LEASE_MS=1500", "PRESENCE_GRACE_MS=5000", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    int port2;
    th_proc_t *g2 = s_gateway2(&n, env, &port2);
    enum { USERS = 20 };
    ws_client_t c[USERS], w;
    char watch[1024] = "{\"type\":\"watch\",\"users\":[";
    for (int i = 0; i < USERS; i++) {
        char u[16], q[32];
        snprintf(u, sizeof u, "k%d", i);
        snprintf(q, sizeof q, "&device=d%d", i);
        json_decref(ws_step_connect(&c[i], n.port, u, q));
        snprintf(watch + strlen(watch), sizeof watch - strlen(watch), "%s\"%s\"", i ? "," : "", u);
    }
    strcat(watch, "]}");
    json_decref(ws_step_connect(&w, port2, "watcher", ""));
    ck_assert_int_eq(ws_client_send_text(&w, watch, 2000), 0);
    for (int i = 0; i < USERS; i++) {
        json_t *p = ws_step_next(&w, "presence", 5000);
        ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
        json_decref(p);
    }
    /* the gateway dies: no close frames, no session ends, no lease end */
    uint64_t killed_us = util_now_us(), killed_ms = th_now_ms();
    th_kill(n.gw);
    bool off[USERS] = {false};
    for (int got = 0; got < USERS;) {
        json_t *p = ws_step_next(&w, "presence", LEASE_MS + 5000);
        const char *uid = ws_json_str(p, "record.user_id");
        ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
        ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 0);
        int i = atoi(uid + 1);
        ck_assert(!off[i]);
        off[i] = true;
        got++;
        uint64_t at = ws_step_time_us(ws_json_str(p, "record.updated_at"));
        ck_assert_msg(at >= killed_us, "%s offline before the kill", uid);
        ck_assert_msg(at - killed_us <= (LEASE_MS + 500) * 1000u, "%s offline %llu ms after the kill (lease %d ms)", uid,
                      (unsigned long long)((at - killed_us) / 1000), LEASE_MS);
        json_decref(p);
    }
    fprintf(stderr, "integ_ws_faults: %d users offline %llu ms after the gateway's SIGKILL (lease %d ms)\n", USERS,
            (unsigned long long)(th_now_ms() - killed_ms), LEASE_MS);
    for (int i = 0; i < USERS; i++)
        ws_client_close(&c[i]);
    ws_client_close(&w);
    ck_assert_int_eq(th_stop(g2, 15000), 0);
    n.gw = NULL; /* killed above */
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_store_restart_loses_nothing)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_LEASE_MS=3000", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    enum { USERS = 10 };
    ws_client_t c[USERS];
    for (int i = 0; i < USERS; i++) {
        char u[16];
        snprintf(u, sizeof u, "m%d", i);
        json_t *wel = ws_step_connect(&c[i], n.port, u, i % 2 ? "&status=busy" : "");
        ck_assert_int_eq(ws_json_int(wel, "record.sessions", -1), 1); /* acknowledged: live in the store */
        json_decref(wel);
        char r[16], body[64];
        snprintf(r, sizeof r, "r%d", i);
        snprintf(body, sizeof body, "{\"status\":\"away\",\"message\":\"rest %d\"}", i);
        ck_assert_int_eq(ws_step_rest(n.port, "PUT", r, "", body), 200);
    }
    th_kill(n.store);
    /* while the store is down: a connect is refused 503 before any upgrade */
    ws_client_t x;
    int st = ws_step_open(&x, n.port, "newcomer", "", NULL);
    ck_assert_msg(st == 503, "connect with the store down: %d %s", st, x.body ? x.body : x.err);
    ws_client_close(&x);
    ck_assert_int_eq(th_restart(n.store, 20000), 0);
    /* everything acknowledged is there: the sessions (under the same lease) and the REST records */
    for (int i = 0; i < USERS; i++) {
        char u[16], r[16], msg[32];
        snprintf(u, sizeof u, "m%d", i);
        snprintf(r, sizeof r, "r%d", i);
        ws_step_wait_record(n.port, u, i % 2 ? "busy" : "online", 1, 10000);
        ws_step_wait_record(n.port, r, "away", -1, 10000);
        /* Another gateway thread's read may still meet a cache-node catching up with the restarted
         * store (503, nothing served stale): it reads again, as a client would. */
        json_t *rec = NULL;
        int st2 = 0;
        for (uint64_t until = th_now_ms() + 10000; (st2 = ws_step_get(n.port, r, &rec)) != 200 && th_now_ms() < until;) {
            ck_assert_msg(st2 == 503, "GET %s after the store's restart: %d", r, st2);
            usleep(20000); /* the poll's pace, not a synchronisation */
        }
        ck_assert_int_eq(st2, 200);
        snprintf(msg, sizeof msg, "rest %d", i);
        ck_assert_str_eq(ws_json_str(rec, "message"), msg);
        json_decref(rec);
    }
    ck_assert_uint_eq(ws_step_metric(n.port, "gateway_lease_lapses_total"), 0);
    /* and the connections write again: a set answered with an error (the cache-node may not have
     * seen the store back yet) is sent again, as a client would */
    bool applied = false;
    for (uint64_t until = th_now_ms() + 10000; !applied && th_now_ms() < until;) {
        ck_assert_int_eq(ws_client_send_text(&c[0], "{\"type\":\"set\",\"status\":\"away\"}", 2000), 0);
        int rc;
        json_t *e = ws_client_recv_json(&c[0], 500, &rc);
        if (e) {
            ck_assert_str_eq(ws_json_str(e, "type"), "error");
            fprintf(stderr, "integ_ws_faults: set after the restart: %s (sent again)\n", ws_json_str(e, "error"));
            json_decref(e);
            ws_msg_t m; /* a pause before the next try, within WS_MSG_RATE */
            ck_assert_int_eq(ws_client_recv(&c[0], &m, 250), WS_TIMEOUT);
            continue;
        }
        ck_assert_msg(rc == WS_TIMEOUT, "set after the restart: rc %d, close %d %s (%s)", rc, c[0].close_code,
                      c[0].close_reason, c[0].err);
        json_t *rec;
        ck_assert_int_eq(ws_step_get(n.port, "m0", &rec), 200);
        applied = strcmp(ws_json_str(rec, "status"), "away") == 0;
        json_decref(rec);
    }
    ck_assert_msg(applied, "a set after the store's restart was never applied");
    ws_step_wait_record(n.port, "m0", "away", 1, 5000);
    for (int i = 0; i < USERS; i++)
        ws_client_close(&c[i]);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_lapsed_lease_reopens)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_LEASE_MS=900", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    int port2;
    th_proc_t *g2 = s_gateway2(&n, env, &port2);
    ws_client_t a, w;
    json_decref(ws_step_connect(&a, n.port, "nia", "&status=busy"));
    json_decref(ws_step_connect(&w, port2, "watcher", ""));
    ck_assert_int_eq(ws_client_send_text(&w, "{\"type\":\"watch\",\"users\":[\"nia\"]}", 2000), 0);
    json_t *p = ws_step_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "busy");
    json_decref(p);
    /* nia's gateway stops running for longer than its lease: the store ends her session */
    th_signal(n.gw, SIGSTOP);
    p = ws_step_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    json_decref(p);
    /* back: the lease lapsed, so the gateway takes a new one and re-opens the session; nia never
     * reconnected */
    th_signal(n.gw, SIGCONT);
    p = ws_step_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "busy");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 1);
    json_decref(p);
    ck_assert_uint_eq(ws_step_metric(n.port, "gateway_lease_lapses_total"), 1);
    /* the connection works on under the new lease, and its close still ends the session */
    ck_assert_int_eq(ws_client_send_text(&a, "{\"type\":\"set\",\"status\":\"online\"}", 2000), 0);
    p = ws_step_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    json_decref(p);
    ws_client_close(&a);
    p = ws_step_next(&w, "presence", 10000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    json_decref(p);
    ws_client_close(&w);
    ck_assert_int_eq(th_stop(g2, 15000), 0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_leaf_connection_online_at_center)
{
    int port = th_free_port_pair();
    ck_assert_int_gt(port, 0);
    char cp[32], ep[64];
    snprintf(cp, sizeof cp, "CENTER_PORT=%d", port);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    const char *cenv[] = {cp, "CENTER_BIND_ADDR=127.0.0.1", "CENTER_INSECURE=true", "RATE_LIMIT_WRITES=0", NULL};
    const char *lenv[] = {"RATE_LIMIT_WRITES=0", "PRESENCE_GRACE_MS=500", NULL};
    th_node_t center, leaf;
    ck_assert_int_eq(th_node_start(&center, 1, cenv), 0);
    ck_assert_int_eq(th_leaf_start(&leaf, 1, ep, lenv), 0);
    ws_client_t a;
    json_t *wel = ws_step_connect(&a, leaf.port, "olga", "&device=leafdesk");
    ck_assert_str_eq(ws_json_str(wel, "record.status"), "online");
    json_decref(wel);
    ws_step_wait_record(center.port, "olga", "online", 1, 5000);
    ws_client_close(&a);
    ws_step_wait_record(center.port, "olga", "offline", 0, 5000);
    ck_assert_int_eq(th_node_stop(&leaf), 0);
    ck_assert_int_eq(th_node_stop(&center), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ws_faults");
    const TTest *tests[] = {test_gateway_sigkill_offline_within_lease, test_store_restart_loses_nothing,
                            test_lapsed_lease_reopens, test_leaf_connection_online_at_center};
    const char *names[] = {"gateway_kill", "store_restart", "lapse", "leaf"};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        TCase *tc = tcase_create(names[i]);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, tests[i]);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
