/* integ_ws_sessions.c -- a WebSocket connection whose session is ended or moved from outside
 * (REALTIME.md "Sessions", "WebSocket: connect = online"), through the real processes:
 *
 *   - signed out with DELETE .../sessions/{sid}: the connection is closed 4001 within 2 s, though
 *     its client sends nothing (PRESENCE_IDLE_S=0: the gateway writes nothing for it either);
 *   - the user erased (DELETE /api/v2/presence/{id}): closed 4001 the same way;
 *   - MAX_SESSIONS=2, two connections and then a REST session: the connection whose session would
 *     expire first is closed 4001 at once, the other stays, the list shows exactly the two left;
 *   - MAX_SESSIONS=2 with REST sessions only: the one that would expire first is the one gone;
 *   - a resume on another gateway: the open connection on the first is closed 4000 at once; a
 *     connection closed and resumed on the other gateway within the grace keeps its session past
 *     the first gateway's grace (it does not end what it no longer holds).
 *
 * Times are scaled by CK_TIMEOUT_MULTIPLIER (ASan builds are slower).
 */
#include "harness.h"
#include "util.h"
#include "ws_client.h"
#include "ws_steps.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRACE_MS 1000
#define CLOSE_WITHIN_MS 2000

static int s_mult(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int v = m ? atoi(m) : 1;
    return v > 0 ? v : 1;
}

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

/* Connect as uid; the welcome's session_id copied into sid (64 bytes at most + NUL). */
static void s_connect(ws_client_t *c, int port, const char *uid, const char *q, char sid[65])
{
    json_t *wel = ws_step_connect(c, port, uid, q);
    const char *s = ws_json_str(wel, "session_id");
    ck_assert_msg(s && *s, "welcome without session_id");
    snprintf(sid, 65, "%s", s);
    json_decref(wel);
}

/* The server closes c with `code` and `reason` within CLOSE_WITHIN_MS (scaled) of now, the client
 * having sent nothing; then the connection ends. Returns the milliseconds it took. */
static uint64_t s_closed_within(ws_client_t *c, int code, const char *reason, const char *why)
{
    uint64_t t0 = th_now_ms(), limit = (uint64_t)CLOSE_WITHIN_MS * (uint64_t)s_mult();
    ws_msg_t m;
    int rc;
    for (;;) {
        uint64_t spent = th_now_ms() - t0;
        ck_assert_msg(spent < limit, "%s: not closed within %llu ms", why, (unsigned long long)limit);
        rc = ws_client_recv(c, &m, (int)(limit - spent));
        if (rc != WS_OK)
            break;
        ws_msg_free(&m); /* a frame before the close (none is expected: nothing is watched) */
    }
    uint64_t took = th_now_ms() - t0;
    ck_assert_msg(rc == WS_CLOSED, "%s: expected a close frame within %llu ms, rc %d (%s)", why,
                  (unsigned long long)limit, rc, c->err);
    ck_assert_msg(c->close_code == code, "%s: close code %d (%s), expected %d", why, c->close_code, c->close_reason,
                  code);
    ck_assert_str_eq(c->close_reason, reason);
    ck_assert_msg(took < limit, "%s: closed after %llu ms", why, (unsigned long long)took);
    ck_assert_int_eq(ws_client_recv(c, &m, 5000), WS_EOF);
    return took;
}

/* GET .../{uid}/sessions as uid: the session ids, first to expire first, into ids (n at most);
 * returns how many the list has. A connection's session shows its gateway lease's end as expires_at
 * (the same for every connection of the gateway); under it the store keeps the horizon set when the
 * session opened, so among equal expires_at the one connected first expires first. */
static size_t s_sessions(int port, const char *uid, char ids[][65], size_t n)
{
    char auth[1024], path[160];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s/sessions", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", path, auth, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    th_resp_free(&r);
    ck_assert_ptr_nonnull(j);
    json_t *list = json_object_get(json_object_get(j, "data"), uid);
    ck_assert(json_is_array(list));
    size_t got = json_array_size(list);
    uint64_t exp[8] = {0}, con[8] = {0};
    for (size_t i = 0; i < got && i < n && i < 8; i++) {
        json_t *s = json_array_get(list, i);
        uint64_t x = ws_step_time_us(ws_json_str(s, "expires_at"));
        uint64_t y = ws_step_time_us(ws_json_str(s, "connected_at"));
        ck_assert(x && y);
        const char *sid = ws_json_str(s, "session_id");
        ck_assert_ptr_nonnull(sid);
        /* insertion by expires_at */
        size_t k = i;
        while (k > 0 && (exp[k - 1] > x || (exp[k - 1] == x && con[k - 1] > y))) {
            exp[k] = exp[k - 1];
            con[k] = con[k - 1];
            memcpy(ids[k], ids[k - 1], 65);
            k--;
        }
        exp[k] = x;
        con[k] = y;
        snprintf(ids[k], 65, "%s", sid);
    }
    json_decref(j);
    return got;
}

static const char *const s_env[] = {"RATE_LIMIT_WRITES=0", "RATE_LIMIT_READS=0", "PRESENCE_IDLE_S=0",
                                    "PRESENCE_GRACE_MS=1000", NULL};
static const char *const s_env_max2[] = {"RATE_LIMIT_WRITES=0", "RATE_LIMIT_READS=0", "PRESENCE_IDLE_S=0",
                                         "PRESENCE_GRACE_MS=1000", "MAX_SESSIONS=2", NULL};

/* ---- signed out, erased ------------------------------------------------------------------------ */

START_TEST(test_signed_out_closes_4001)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t c, other;
    char sid[65], sid2[65];
    s_connect(&c, n.port, "una", "&device=desk", sid);
    s_connect(&other, n.port, "una", "&device=phone", sid2);
    ws_step_wait_record(n.port, "una", "online", 2, 5000);
    char suffix[128];
    snprintf(suffix, sizeof suffix, "/sessions/%s", sid);
    ck_assert_int_eq(ws_step_rest(n.port, "DELETE", "una", suffix, NULL), 200);
    uint64_t took = s_closed_within(&c, 4001, "session ended", "a signed-out device");
    fprintf(stderr, "integ_ws_sessions: signed-out connection closed 4001 %llu ms after the DELETE's answer\n",
            (unsigned long long)took);
    /* the other device is untouched: its connection stays, the user is online with one session */
    ws_step_quiet(&other, 300, "the other device of a signed-out user");
    ws_step_wait_record(n.port, "una", "online", 1, 5000);
    char ids[4][65];
    ck_assert_int_eq(s_sessions(n.port, "una", ids, 4), 1);
    ck_assert_str_eq(ids[0], sid2);
    /* signing out the second one too: closed, and the user is offline */
    snprintf(suffix, sizeof suffix, "/sessions/%s", sid2);
    ck_assert_int_eq(ws_step_rest(n.port, "DELETE", "una", suffix, NULL), 200);
    s_closed_within(&other, 4001, "session ended", "the last device signed out");
    ws_step_wait_record(n.port, "una", "offline", 0, 5000);
    ws_client_close(&c);
    ws_client_close(&other);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_erased_user_closes_4001)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t c, bystander;
    char sid[65], sid2[65];
    s_connect(&c, n.port, "vera", "", sid);
    s_connect(&bystander, n.port, "walt", "", sid2);
    ck_assert_int_eq(ws_step_rest(n.port, "DELETE", "vera", "", NULL), 200);
    uint64_t took = s_closed_within(&c, 4001, "session ended", "the connection of an erased user");
    fprintf(stderr, "integ_ws_sessions: erased user's connection closed 4001 %llu ms after the DELETE's answer\n",
            (unsigned long long)took);
    ws_step_quiet(&bystander, 300, "another user's connection");
    json_t *rec = NULL;
    ck_assert_int_eq(ws_step_get(n.port, "vera", &rec), 404);
    ws_step_wait_record(n.port, "walt", "online", 1, 5000);
    ws_client_close(&c);
    ws_client_close(&bystander);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- MAX_SESSIONS ------------------------------------------------------------------------------ */

START_TEST(test_evicted_connection_closes_4001)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env_max2), 0);
    ws_client_t c1, c2;
    char sid1[65], sid2[65];
    s_connect(&c1, n.port, "xena", "&device=one", sid1);
    s_connect(&c2, n.port, "xena", "&device=two", sid2);
    ws_step_wait_record(n.port, "xena", "online", 2, 5000);
    /* which of the two would expire first, as the store says */
    char ids[4][65];
    ck_assert_int_eq(s_sessions(n.port, "xena", ids, 4), 2);
    bool first_is_1 = strcmp(ids[0], sid1) == 0;
    ck_assert_msg(first_is_1 || strcmp(ids[0], sid2) == 0, "unknown session %s", ids[0]);
    ws_client_t *victim = first_is_1 ? &c1 : &c2, *kept = first_is_1 ? &c2 : &c1;
    const char *kept_sid = first_is_1 ? sid2 : sid1;
    /* a third session, far from expiring: the store ends the first to expire */
    ck_assert_int_eq(ws_step_rest(n.port, "PUT", "xena", "",
                                  "{\"status\":\"busy\",\"session\":\"tablet\",\"ttl\":86400}"), 200);
    uint64_t took = s_closed_within(victim, 4001, "session ended", "the evicted connection");
    fprintf(stderr, "integ_ws_sessions: evicted connection closed 4001 %llu ms after the third session's answer\n",
            (unsigned long long)took);
    ws_step_quiet(kept, 300, "the connection whose session stays");
    ck_assert_int_eq(s_sessions(n.port, "xena", ids, 4), 2);
    ck_assert_str_eq(ids[0], kept_sid);
    ck_assert_str_eq(ids[1], "tablet");
    ws_step_wait_record(n.port, "xena", "busy", 2, 5000);
    ws_client_close(&c1);
    ws_client_close(&c2);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_evicts_first_to_expire_rest)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env_max2), 0);
    ck_assert_int_eq(ws_step_rest(n.port, "PUT", "yann", "", "{\"status\":\"online\",\"session\":\"s1\",\"ttl\":600}"),
                     200);
    ck_assert_int_eq(ws_step_rest(n.port, "PUT", "yann", "", "{\"status\":\"away\",\"session\":\"s2\",\"ttl\":300}"),
                     200);
    ck_assert_int_eq(ws_step_rest(n.port, "PUT", "yann", "", "{\"status\":\"busy\",\"session\":\"s3\",\"ttl\":900}"),
                     200);
    char ids[4][65];
    ck_assert_int_eq(s_sessions(n.port, "yann", ids, 4), 2);
    ck_assert_str_eq(ids[0], "s1");
    ck_assert_str_eq(ids[1], "s3");
    ws_step_wait_record(n.port, "yann", "busy", 2, 5000);
    /* one more, shorter than both: of the two before it, s1 would expire first and goes */
    ck_assert_int_eq(ws_step_rest(n.port, "PUT", "yann", "", "{\"status\":\"away\",\"session\":\"s4\",\"ttl\":60}"),
                     200);
    ck_assert_int_eq(s_sessions(n.port, "yann", ids, 4), 2);
    ck_assert_str_eq(ids[0], "s4");
    ck_assert_str_eq(ids[1], "s3");
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- a resume on another gateway --------------------------------------------------------------- */

START_TEST(test_resume_on_other_gateway)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int port2;
    th_proc_t *g2 = s_gateway2(&n, s_env, &port2);
    char q[128], sid[65], sid_b[65];

    /* open on A, resumed on B: A's connection is closed 4000 at once, though it sends nothing */
    ws_client_t a, b;
    s_connect(&a, n.port, "zoe", "&device=desk", sid);
    snprintf(q, sizeof q, "&session_id=%s&device=desk", sid);
    json_t *wel = ws_step_connect(&b, port2, "zoe", q);
    ck_assert_str_eq(ws_json_str(wel, "session_id"), sid);
    ck_assert_int_eq(ws_json_int(wel, "record.sessions", -1), 1);
    json_decref(wel);
    uint64_t took = s_closed_within(&a, 4000, "session resumed elsewhere", "the connection resumed on gateway B");
    fprintf(stderr, "integ_ws_sessions: connection resumed on another gateway closed 4000 after %llu ms\n",
            (unsigned long long)took);
    ws_client_close(&a);
    ws_client_close(&b); /* abrupt: B's grace starts */

    /* closed on A, resumed on B within the grace: A does not end it when its grace passes */
    ws_client_t a2, b2;
    s_connect(&a2, n.port, "zack", "&device=phone", sid);
    ws_step_wait_record(n.port, "zack", "online", 1, 5000);
    ws_client_close(&a2); /* no close frame: the session gets its grace on A */
    snprintf(q, sizeof q, "&session_id=%s&device=phone", sid);
    wel = ws_step_connect(&b2, port2, "zack", q);
    snprintf(sid_b, sizeof sid_b, "%s", ws_json_str(wel, "session_id"));
    ck_assert_str_eq(sid_b, sid);
    ck_assert_int_eq(ws_json_int(wel, "record.sessions", -1), 1);
    ck_assert_str_eq(ws_json_str(wel, "record.status"), "online");
    json_decref(wel);
    ws_step_quiet(&b2, GRACE_MS + 1000, "the resumed connection past the first gateway's grace");
    json_t *rec = NULL;
    ck_assert_int_eq(ws_step_get(n.port, "zack", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "status"), "online");
    ck_assert_int_eq(ws_json_int(rec, "sessions", -1), 1);
    json_decref(rec);
    char ids[4][65];
    ck_assert_int_eq(s_sessions(n.port, "zack", ids, 4), 1);
    ck_assert_str_eq(ids[0], sid);
    /* and B's connection is still the session's: a set works */
    ck_assert_int_eq(ws_client_send_text(&b2, "{\"type\":\"set\",\"status\":\"busy\"}", 2000), 0);
    ws_step_wait_record(n.port, "zack", "busy", 1, 5000);
    ws_client_close(&b2);
    ck_assert_int_eq(th_stop(g2, 15000), 0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ws_sessions");
    const TTest *tests[] = {test_signed_out_closes_4001, test_erased_user_closes_4001,
                            test_evicted_connection_closes_4001, test_evicts_first_to_expire_rest,
                            test_resume_on_other_gateway};
    const char *names[] = {"signed_out", "erased", "evicted", "evict_rest", "resume_other_gateway"};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        TCase *tc = tcase_create(names[i]);
        tcase_set_timeout(tc, 60);
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
