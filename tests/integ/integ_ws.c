/* integ_ws.c -- the WebSocket endpoint (GET /api/v2/presence/connect) against a real node: a
 * store-node, two cache-nodes and a gateway started by pid, talked to with tests/integ/ws_client.c.
 *
 *   - connect = online: the welcome, and REST shows the session at once; two devices merge (busy
 *     wins); every close (1000 included) ends the session after PRESENCE_GRACE_MS, not before; a
 *     resume within the grace keeps the user online without any event (after a close with 1000
 *     too), and closes a still-open old connection 4000; `bye` signs the device out at once;
 *   - every refusal before the upgrade with its status (400, 401, 403, 405, 426, 503);
 *   - the messages: set, activity, ping, watch (current records, then changes in order; `since`
 *     resumes without loss), unwatch, errors that keep the connection;
 *   - the limits and their close codes: 1009, 1008 (rate, ten errors), 1002, 1007; a client that
 *     does not read is dropped; a silent peer is ended two ping intervals after its last frame, to
 *     the tick; idle turns away;
 *   - invisible mode does not leak through events to anyone but the user;
 *   - a stopping gateway closes with 1001.
 * Failures of whole processes (SIGKILL of the gateway, of the store, a lapsed lease) are
 * integ_ws_faults.c.
 */
#include "harness.h"
#include "ws_client.h"
#include "ws_steps.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define GRACE_MS 1000

/* Slower builds (ASan: CK_TIMEOUT_MULTIPLIER=3) get proportionally more slack on timings. */
static int s_mult(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int v = m ? atoi(m) : 1;
    return v > 0 ? v : 1;
}

static const char *const s_env[] = {"RATE_LIMIT_WRITES=0", "PRESENCE_GRACE_MS=1000", "GATEWAY_THREADS=2", NULL};

/* Short names for the shared steps (ws_steps.h). */
#define s_open ws_step_open
#define s_next ws_step_next
#define s_connect ws_step_connect
#define s_quiet ws_step_quiet
#define s_expect_close ws_step_expect_close
#define s_get ws_step_get
#define s_rest ws_step_rest
#define s_wait_record ws_step_wait_record
#define s_metric ws_step_metric

/* ==== connect = online ========================================================================= */

START_TEST(test_connect_online)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t a;
    json_t *w = s_connect(&a, n.port, "alice", "&device=laptop");
    const char *sid = ws_json_str(w, "session_id");
    ck_assert_ptr_nonnull(sid);
    ck_assert_uint_eq(strlen(sid), 20);
    ck_assert_str_eq(ws_json_str(w, "user_id"), "alice");
    ck_assert_str_eq(ws_json_str(w, "record.status"), "online");
    ck_assert_int_eq(ws_json_int(w, "record.sessions", -1), 1);
    ck_assert_str_eq(ws_json_str(w, "record.source"), "session");
    ck_assert_int_eq(ws_json_int(w, "ping_interval_ms", -1), 25000);
    ck_assert_int_eq(ws_json_int(w, "grace_ms", -1), GRACE_MS);
    long long ver = ws_json_int(w, "record.version", -1);
    ck_assert_int_gt(ver, 0);
    /* REST shows the session the moment the welcome is in */
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "alice", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "status"), "online");
    ck_assert_int_eq(ws_json_int(rec, "sessions", -1), 1);
    ck_assert_int_ge(ws_json_int(rec, "version", -1), ver);
    json_decref(rec);
    /* ping -> pong; the token in a header works as well as in the query */
    ck_assert_int_eq(ws_client_send_text(&a, "{\"type\":\"ping\"}", 2000), 0);
    json_decref(s_next(&a, "pong", 5000));
    ws_client_t b;
    char auth[1024];
    th_auth_header(auth, sizeof auth, "alice", NULL);
    ck_assert_int_eq(ws_client_open(&b, "127.0.0.1", n.port, "/api/v2/presence/connect?device=phone", auth, 5000), 101);
    json_t *w2 = s_next(&b, "welcome", 5000);
    ck_assert_str_ne(ws_json_str(w2, "session_id"), sid);
    ck_assert_int_eq(ws_json_int(w2, "record.sessions", -1), 2);
    json_decref(w2);
    json_decref(w);
    ws_client_close(&a);
    ws_client_close(&b);
    ck_assert_uint_eq(s_metric(n.port, "ws_connects_total"), 2);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_two_devices_busy_wins)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t a, b;
    json_decref(s_connect(&a, n.port, "dora", "&device=laptop"));
    json_t *w = s_connect(&b, n.port, "dora", "&device=phone&status=busy");
    ck_assert_str_eq(ws_json_str(w, "record.status"), "busy");
    ck_assert_int_eq(ws_json_int(w, "record.sessions", -1), 2);
    json_decref(w);
    s_wait_record(n.port, "dora", "busy", 2, 2000);
    /* the laptop goes away too: busy stays (the phone); the phone sets away: away */
    ck_assert_int_eq(ws_client_send_close(&a, 1000, "bye", 2000), 0);
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&a, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(a.close_code, 1000);
    ws_client_close(&a);
    s_wait_record(n.port, "dora", "busy", 1, GRACE_MS + 3000);
    ck_assert_int_eq(ws_client_send_text(&b, "{\"type\":\"set\",\"status\":\"away\",\"message\":\"lunch\"}", 2000), 0);
    s_wait_record(n.port, "dora", "away", 1, 3000);
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "dora", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "message"), "lunch");
    json_decref(rec);
    /* message null clears it; the status stays */
    ck_assert_int_eq(ws_client_send_text(&b, "{\"type\":\"set\",\"message\":null}", 2000), 0);
    bool cleared = false;
    for (uint64_t until = th_now_ms() + 3000; !cleared && th_now_ms() < until;) {
        ck_assert_int_eq(s_get(n.port, "dora", &rec), 200);
        cleared = ws_json_get(rec, "message") == NULL && strcmp(ws_json_str(rec, "status"), "away") == 0;
        json_decref(rec);
    }
    ck_assert_msg(cleared, "message not cleared");
    ws_client_close(&b);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_close_offline_after_grace)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t watcher, a;
    json_decref(s_connect(&watcher, n.port, "wally", ""));
    json_decref(s_connect(&a, n.port, "erin", ""));
    ck_assert_int_eq(ws_client_send_text(&watcher, "{\"type\":\"watch\",\"users\":[\"erin\"]}", 2000), 0);
    json_t *p = s_next(&watcher, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    long long v0 = ws_json_int(p, "record.version", -1);
    json_decref(p);
    /* erin's tab closes */
    ck_assert_int_eq(ws_client_send_close(&a, 1001, "tab closed", 2000), 0);
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&a, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(a.close_code, 1001);
    ws_client_close(&a);
    uint64_t t0 = th_now_ms();
    /* still online during the grace */
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "erin", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "status"), "online");
    json_decref(rec);
    p = s_next(&watcher, "presence", GRACE_MS + 3000);
    uint64_t t1 = th_now_ms();
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 0);
    ck_assert_int_gt(ws_json_int(p, "record.version", -1), v0);
    json_decref(p);
    ck_assert_msg(t1 - t0 >= GRACE_MS - 50, "offline after %llu ms: before the grace (%d ms)",
                  (unsigned long long)(t1 - t0), GRACE_MS);
    ws_client_close(&watcher);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A close with 1000 is no sign-out (libraries close with it before they reconnect): the session
 * keeps its grace, a resume within it shows nothing to watchers, and without one the session ends
 * when the grace is over, not before. */
START_TEST(test_close_1000_keeps_the_grace)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t watcher, a, b;
    json_decref(s_connect(&watcher, n.port, "wally", ""));
    json_t *w = s_connect(&a, n.port, "gil", "&device=laptop");
    char sid[80];
    snprintf(sid, sizeof sid, "%s", ws_json_str(w, "session_id"));
    json_decref(w);
    ck_assert_int_eq(ws_client_send_text(&watcher, "{\"type\":\"watch\",\"users\":[\"gil\"]}", 2000), 0);
    json_t *p = s_next(&watcher, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    json_decref(p);
    /* the client closes with 1000 (the server echoes it) and reconnects with its session_id */
    ck_assert_int_eq(ws_client_send_close(&a, 1000, "reconnecting", 2000), 0);
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&a, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(a.close_code, 1000);
    ws_client_close(&a);
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "gil", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "status"), "online");
    ck_assert_int_eq(ws_json_int(rec, "sessions", -1), 1);
    json_decref(rec);
    char q[160];
    snprintf(q, sizeof q, "&session_id=%s&device=laptop", sid);
    w = s_connect(&b, n.port, "gil", q);
    ck_assert_str_eq(ws_json_str(w, "session_id"), sid);
    ck_assert_str_eq(ws_json_str(w, "record.status"), "online");
    ck_assert_int_eq(ws_json_int(w, "record.sessions", -1), 1);
    json_decref(w);
    s_quiet(&watcher, GRACE_MS + 1500, "a resume after a close with 1000");
    s_wait_record(n.port, "gil", "online", 1, 1000);
    /* closed with 1000 and not resumed: offline when the grace is over, not before */
    ck_assert_int_eq(ws_client_send_close(&b, 1000, "done", 2000), 0);
    ck_assert_int_eq(ws_client_recv(&b, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(b.close_code, 1000);
    ws_client_close(&b);
    uint64_t t0 = th_now_ms();
    p = s_next(&watcher, "presence", GRACE_MS + 3000);
    uint64_t t1 = th_now_ms();
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 0);
    json_decref(p);
    ck_assert_msg(t1 - t0 >= GRACE_MS - 50, "a 1000 close: offline after %llu ms, before the grace (%d ms)",
                  (unsigned long long)(t1 - t0), GRACE_MS);
    ws_client_close(&watcher);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* {"type":"bye"} signs the device out: the server closes with 1000 "signed out" and the session
 * ends at once, without the grace -- also when the client's own close 1000 follows right behind
 * it (what clients/js does). */
START_TEST(test_bye_signs_out_at_once)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t watcher, a;
    json_decref(s_connect(&watcher, n.port, "wally", ""));
    json_decref(s_connect(&a, n.port, "hal", ""));
    ck_assert_int_eq(ws_client_send_text(&watcher, "{\"type\":\"watch\",\"users\":[\"hal\"]}", 2000), 0);
    json_t *p = s_next(&watcher, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    json_decref(p);
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(ws_client_send_text(&a, "{\"type\":\"bye\"}", 2000), 0);
    s_expect_close(&a, 1000, "bye");
    ck_assert_str_eq(a.close_reason, "signed out");
    ws_client_close(&a);
    p = s_next(&watcher, "presence", GRACE_MS);
    uint64_t t1 = th_now_ms();
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 0);
    json_decref(p);
    ck_assert_msg(t1 - t0 < GRACE_MS / 2, "bye ended the session only after %llu ms (grace %d ms)",
                  (unsigned long long)(t1 - t0), GRACE_MS);
    s_wait_record(n.port, "hal", "offline", 0, 1000);
    /* bye with the client's close 1000 right behind it, before the server's close is read */
    json_decref(s_connect(&a, n.port, "hal", "&device=phone"));
    p = s_next(&watcher, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    json_decref(p);
    t0 = th_now_ms();
    ck_assert_int_eq(ws_client_send_text(&a, "{\"type\":\"bye\"}", 2000), 0);
    ck_assert_int_eq(ws_client_send_close(&a, 1000, "client closed", 2000), 0);
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&a, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(a.close_code, 1000);
    ck_assert_str_eq(a.close_reason, "signed out");
    ws_client_close(&a);
    p = s_next(&watcher, "presence", GRACE_MS);
    t1 = th_now_ms();
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 0);
    json_decref(p);
    ck_assert_msg(t1 - t0 < GRACE_MS / 2, "bye + close 1000 ended the session only after %llu ms (grace %d ms)",
                  (unsigned long long)(t1 - t0), GRACE_MS);
    ws_client_close(&watcher);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_resume_within_grace)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t watcher, a, b;
    json_decref(s_connect(&watcher, n.port, "wally", ""));
    json_t *w = s_connect(&a, n.port, "fay", "&device=laptop&status=busy");
    char sid[80];
    snprintf(sid, sizeof sid, "%s", ws_json_str(w, "session_id"));
    json_decref(w);
    ck_assert_int_eq(ws_client_send_text(&watcher, "{\"type\":\"watch\",\"users\":[\"fay\"]}", 2000), 0);
    json_t *p = s_next(&watcher, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "busy");
    json_decref(p);
    /* a page reload: the connection drops (no close frame) and comes back with session_id */
    ws_client_close(&a);
    char q[160];
    snprintf(q, sizeof q, "&session_id=%s&status=busy", sid);
    w = s_connect(&b, n.port, "fay", q);
    ck_assert_str_eq(ws_json_str(w, "session_id"), sid);
    ck_assert_int_eq(ws_json_int(w, "record.sessions", -1), 1);
    ck_assert_str_eq(ws_json_str(w, "record.status"), "busy");
    json_decref(w);
    /* no event at all: not offline, not even "sessions changed" -- past the grace and then some */
    s_quiet(&watcher, GRACE_MS + 1500, "a resume within the grace");
    s_wait_record(n.port, "fay", "busy", 1, 1000);
    /* a resume while the old connection is still open: the old one is closed 4000 */
    ws_client_t c1, c2;
    w = s_connect(&c1, n.port, "fay", "&device=phone");
    snprintf(sid, sizeof sid, "%s", ws_json_str(w, "session_id"));
    json_decref(w);
    p = s_next(&watcher, "presence", 5000); /* a second device: sessions 2 */
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 2);
    json_decref(p);
    snprintf(q, sizeof q, "&session_id=%s&device=phone", sid);
    json_decref(s_connect(&c2, n.port, "fay", q));
    s_expect_close(&c1, 4000, "the old connection of a resumed session");
    ck_assert_str_eq(c1.close_reason, "session resumed elsewhere");
    ws_client_close(&c1);
    /* the session lives on c2 (and b's): ending the old connection ended nothing */
    s_quiet(&watcher, GRACE_MS + 1000, "the old connection's close");
    s_wait_record(n.port, "fay", "busy", 2, 1000);
    ck_assert_uint_ge(s_metric(n.port, "ws_sessions_resumed_total"), 2);
    ws_client_close(&b);
    ws_client_close(&c2);
    ws_client_close(&watcher);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== refusals before the upgrade ============================================================== */

static void s_refused(int port, const char *user, const char *q, const char *headers, int status, const char *error)
{
    ws_client_t c;
    int st = s_open(&c, port, user, q, headers);
    ck_assert_msg(st == status, "%s %s: status %d, expected %d (%s)", user ? user : "-", q, st, status,
                  c.body ? c.body : c.err);
    ck_assert_ptr_nonnull(c.body);
    json_error_t e;
    json_t *j = json_loads(c.body, 0, &e);
    ck_assert_msg(j != NULL, "not JSON: %s", c.body);
    ck_assert_str_eq(ws_json_str(j, "error"), error);
    json_decref(j);
    ws_client_close(&c);
}

START_TEST(test_refusals)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "CORS_ALLOWED_ORIGINS=https://app.example", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    /* 401: no token, a bad one (WWW-Authenticate: Bearer) */
    s_refused(n.port, NULL, "", NULL, 401, "missing authorization header");
    ws_client_t c;
    ck_assert_int_eq(ws_client_open(&c, "127.0.0.1", n.port, "/api/v2/presence/connect?access_token=x.y.z", NULL, 5000),
                     401);
    char h[256];
    ck_assert_ptr_nonnull(strstr(c.head, "www-authenticate: Bearer"));
    ws_client_close(&c);
    /* 403: an Origin CORS does not allow; the allowed one upgrades */
    s_refused(n.port, "gus", "", "Origin: https://evil.example\r\n", 403, "origin not allowed: not in CORS_ALLOWED_ORIGINS");
    ck_assert_int_eq(s_open(&c, n.port, "gus", "", "Origin: https://app.example\r\n"), 101);
    ws_client_close(&c);
    /* 400: bad parameters, a bad key */
    s_refused(n.port, "gus", "&status=offline", NULL, 400, "invalid status: must be one of online, away, busy");
    s_refused(n.port, "gus", "&status=sleepy", NULL, 400, "invalid status: must be one of online, away, busy");
    s_refused(n.port, "gus", "&device=a%01b", NULL, 400,
              "invalid device: at most 64 bytes of UTF-8 text without control characters");
    s_refused(n.port, "gus", "&session_id=a%20b", NULL, 400,
              "invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -");
    s_refused(n.port, "gus", "&session_id=", NULL, 400, "invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -");
    /* 426: a plain GET, another version (with the headers that say what to do); 405: POST */
    char auth[1024];
    th_auth_header(auth, sizeof auth, "gus", NULL);
    th_resp_t r;
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/connect", auth, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 426);
    ck_assert_str_eq(th_resp_header(&r, "Upgrade", h, sizeof h), "websocket");
    ck_assert_str_eq(th_resp_header(&r, "Sec-WebSocket-Version", h, sizeof h), "13");
    ck_assert_str_eq(r.body, "{\"success\":false,\"error\":\"upgrade required: this endpoint speaks WebSocket only "
                             "(Upgrade: websocket)\"}");
    th_resp_free(&r);
    char hdrs[1400];
    snprintf(hdrs, sizeof hdrs,
             "%sUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
             auth);
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/connect", hdrs, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 426);
    ck_assert_str_eq(r.body,
                     "{\"success\":false,\"error\":\"unsupported WebSocket version: Sec-WebSocket-Version must be 13\"}");
    th_resp_free(&r);
    snprintf(hdrs, sizeof hdrs,
             "%sUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n",
             auth);
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/connect", hdrs, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 400);
    th_resp_free(&r);
    ck_assert_int_eq(th_http(n.port, "POST", "/api/v2/presence/connect", auth, "{}", 2, &r, 5000), 0);
    ck_assert_int_eq(r.status, 405);
    th_resp_free(&r);
    /* 426 over HTTP/2 (h2c, prior knowledge): WebSocket is offered over HTTP/1.1 only */
    char cmd[1600];
    snprintf(cmd, sizeof cmd,
             "curl -s -o /dev/null -w '%%{http_code} %%{http_version}' --http2-prior-knowledge -H '%.*s' "
             "http://127.0.0.1:%d/api/v2/presence/connect",
             (int)strcspn(auth, "\r"), auth, n.port);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char out[64] = "";
    ck_assert_ptr_nonnull(fgets(out, sizeof out, f));
    pclose(f);
    ck_assert_str_eq(out, "426 2");
    ck_assert_uint_ge(s_metric(n.port, "ws_refused_total"), 8);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_connection_cap_503)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "WS_MAX_CONNECTIONS=2", "PRESENCE_GRACE_MS=0", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    ws_client_t a, b, c;
    json_decref(s_connect(&a, n.port, "hal", ""));
    json_decref(s_connect(&b, n.port, "ida", ""));
    ck_assert_int_eq(s_open(&c, n.port, "jon", "", NULL), 503);
    ck_assert_ptr_nonnull(strstr(c.head, "retry-after: 5"));
    ck_assert_str_eq(c.body,
                     "{\"success\":false,\"error\":\"too many WebSocket connections: this gateway holds 2 "
                     "(WS_MAX_CONNECTIONS)\"}");
    ws_client_close(&c);
    /* jon was never connected: no record */
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "jon", &rec), 404);
    /* a slot comes back when a connection ends */
    ws_client_close(&a);
    bool in = false;
    for (uint64_t until = th_now_ms() + 3000; !in && th_now_ms() < until;) {
        int st = s_open(&c, n.port, "jon", "", NULL);
        in = st == 101;
        ws_client_close(&c);
    }
    ck_assert_msg(in, "no slot came back");
    ws_client_close(&b);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== messages ================================================================================= */

START_TEST(test_watch_in_order_and_since)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ck_assert_int_eq(s_rest(n.port, "PUT", "kim", "", "{\"status\":\"online\",\"message\":\"k0\"}"), 200);
    ws_client_t w;
    json_decref(s_connect(&w, n.port, "lou", ""));
    /* kim exists (her current record first); max does not yet (nothing until he does) */
    ck_assert_int_eq(ws_client_send_text(&w, "{\"type\":\"watch\",\"users\":[\"kim\",\"max\"]}", 2000), 0);
    json_t *p = s_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.user_id"), "kim");
    ck_assert_str_eq(ws_json_str(p, "record.message"), "k0");
    long long last = ws_json_int(p, "record.version", -1);
    json_decref(p);
    /* changes in order, each version higher; a heartbeat that keeps the status is no event */
    const char *seq[][3] = {{"kim", "busy", "k1"}, {"max", "online", "m1"}, {"kim", "away", "k2"}, {"max", "busy", "m2"}};
    for (int i = 0; i < 4; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\"}", seq[i][1], seq[i][2]);
        ck_assert_int_eq(s_rest(n.port, "PUT", seq[i][0], "", body), 200);
        if (i == 1)
            ck_assert_int_eq(s_rest(n.port, "POST", "kim", "/heartbeat", NULL), 200);
    }
    for (int i = 0; i < 4; i++) {
        p = s_next(&w, "presence", 5000);
        ck_assert_str_eq(ws_json_str(p, "record.user_id"), seq[i][0]);
        ck_assert_str_eq(ws_json_str(p, "record.status"), seq[i][1]);
        ck_assert_str_eq(ws_json_str(p, "record.message"), seq[i][2]);
        long long v = ws_json_int(p, "record.version", -1);
        ck_assert_int_gt(v, last);
        last = v;
        json_decref(p);
    }
    /* unwatch max: his changes stop, kim's go on; watching kim again changes nothing */
    ck_assert_int_eq(ws_client_send_text(&w, "{\"type\":\"unwatch\",\"users\":[\"max\",\"nobody\"]}", 2000), 0);
    ck_assert_int_eq(ws_client_send_text(&w, "{\"type\":\"watch\",\"users\":[\"kim\"]}", 2000), 0);
    ck_assert_int_eq(ws_client_send_text(&w, "{\"type\":\"ping\"}", 2000), 0);
    json_decref(s_next(&w, "pong", 5000)); /* the watch of kim brought no second current record */
    ck_assert_int_eq(s_rest(n.port, "PUT", "max", "", "{\"status\":\"away\"}"), 200);
    ck_assert_int_eq(s_rest(n.port, "PUT", "kim", "", "{\"status\":\"online\",\"message\":\"k3\"}"), 200);
    p = s_next(&w, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.user_id"), "kim");
    ck_assert_str_eq(ws_json_str(p, "record.message"), "k3");
    last = ws_json_int(p, "record.version", -1);
    json_decref(p);
    ws_client_close(&w);
    /* offline meanwhile: 10 changes; a new connection resumes with since and loses none */
    long long want[10];
    for (int i = 0; i < 10; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"r%d\"}", i % 2 ? "busy" : "away", i);
        ck_assert_int_eq(s_rest(n.port, "PUT", "kim", "", body), 200);
    }
    json_decref(s_connect(&w, n.port, "lou", ""));
    char msg[128];
    snprintf(msg, sizeof msg, "{\"type\":\"watch\",\"users\":[\"kim\"],\"since\":%lld}", last);
    ck_assert_int_eq(ws_client_send_text(&w, msg, 2000), 0);
    for (int i = 0; i < 10; i++) {
        p = s_next(&w, "presence", 5000);
        char m[8];
        snprintf(m, sizeof m, "r%d", i);
        ck_assert_str_eq(ws_json_str(p, "record.message"), m);
        want[i] = ws_json_int(p, "record.version", -1);
        ck_assert_int_gt(want[i], last);
        last = want[i];
        json_decref(p);
    }
    ws_client_close(&w);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_errors_keep_the_connection)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t c;
    json_decref(s_connect(&c, n.port, "ned", ""));
    static const char *const bad[][2] = {
        {"not json", "invalid JSON: a message is one JSON object"},
        {"{\"type\":\"dance\"}", "unknown type 'dance' (set, activity, watch, unwatch, ping, bye)"},
        {"{\"type\":\"set\",\"status\":\"offline\"}", "invalid status: must be one of online, away, busy"},
        {"{\"type\":\"watch\",\"users\":[\"a b\"]}", NULL},
    };
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(ws_client_send_text(&c, bad[i][0], 2000), 0);
        json_t *e = s_next(&c, "error", 5000);
        if (bad[i][1])
            ck_assert_str_eq(ws_json_str(e, "error"), bad[i][1]);
        else
            ck_assert_ptr_nonnull(strstr(ws_json_str(e, "error"), "invalid user_id"));
        json_decref(e);
    }
    ck_assert_int_eq(ws_client_send(&c, WS_OP_BINARY, "\x01\x02", 2, 2000), 0);
    json_t *e = s_next(&c, "error", 5000);
    ck_assert_str_eq(ws_json_str(e, "error"), "binary frame: messages are JSON text frames");
    json_decref(e);
    /* still open, still online */
    ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"ping\"}", 2000), 0);
    json_decref(s_next(&c, "pong", 5000));
    s_wait_record(n.port, "ned", "online", 1, 1000);
    /* ten errors in a row: 1008 */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(ws_client_send_text(&c, "{}", 2000), 0);
    s_expect_close(&c, 1008, "ten errors in a row");
    ck_assert_str_eq(c.close_reason, "ten errors in a row");
    ws_client_close(&c);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== limits and close codes =================================================================== */

START_TEST(test_close_codes)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "WS_MSG_RATE=5", "WS_MSG_BURST=5", "WS_MAX_FRAME=4096", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    ws_client_t c;
    /* 1009: a frame header over WS_MAX_FRAME (decided before any payload) */
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_oversized_header(&c, 1u << 20, 2000), 0);
    s_expect_close(&c, 1009, "oversized frame");
    ws_client_close(&c);
    /* 1009: a fragmented message whose fragments add up past it */
    json_decref(s_connect(&c, n.port, "oli", ""));
    char chunk[3000];
    memset(chunk, 'x', sizeof chunk);
    ws_frame_t f1 = {.fin = false, .opcode = WS_OP_TEXT, .masked = true, .payload = chunk, .len = sizeof chunk};
    ws_frame_t f2 = {.fin = true, .opcode = WS_OP_CONT, .masked = true, .payload = chunk, .len = sizeof chunk};
    ck_assert_int_eq(ws_client_send_frame(&c, &f1, 2000), 0);
    ck_assert_int_eq(ws_client_send_frame(&c, &f2, 2000), 0);
    s_expect_close(&c, 1009, "fragmented message over the maximum");
    ws_client_close(&c);
    /* 1008: more than WS_MSG_RATE/WS_MSG_BURST */
    json_decref(s_connect(&c, n.port, "oli", ""));
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"ping\"}", 2000), 0);
    s_expect_close(&c, 1008, "message flood");
    ck_assert_str_eq(c.close_reason, "message rate over the limit");
    ws_client_close(&c);
    /* 1002: an unmasked frame; a reserved opcode; a bad close code */
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_unmasked(&c, WS_OP_TEXT, "{}", 2, 2000), 0);
    s_expect_close(&c, 1002, "unmasked frame");
    ws_client_close(&c);
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_bad_opcode(&c, 3, 2000), 0);
    s_expect_close(&c, 1002, "reserved opcode");
    ws_client_close(&c);
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_close(&c, 1005, "", 2000), 0);
    s_expect_close(&c, 1002, "close code 1005 on the wire");
    ws_client_close(&c);
    /* 1007: a text frame that is not UTF-8 */
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_invalid_utf8(&c, 2000), 0);
    s_expect_close(&c, 1007, "invalid UTF-8");
    ws_client_close(&c);
    /* the client's own close: echoed */
    json_decref(s_connect(&c, n.port, "oli", ""));
    ck_assert_int_eq(ws_client_send_close(&c, 4321, "done", 2000), 0);
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&c, &m, 5000), WS_CLOSED);
    ck_assert_int_eq(c.close_code, 4321);
    ck_assert_int_eq(ws_client_recv(&c, &m, 5000), WS_EOF);
    ws_client_close(&c);
    ck_assert_uint_ge(s_metric(n.port, "ws_closed_policy_total"), 1);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_slow_reader_dropped)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "WS_QUEUE_MAX=8192", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    ws_client_t c;
    json_decref(s_connect(&c, n.port, "pam", ""));
    /* pam watches 200 users, then stops reading */
    char watch[8192] = "{\"type\":\"watch\",\"users\":[";
    for (int i = 0; i < 200; i++)
        snprintf(watch + strlen(watch), sizeof watch - strlen(watch), "%s\"s%d\"", i ? "," : "", i);
    strcat(watch, "]}");
    ck_assert_int_eq(ws_client_send_text(&c, watch, 2000), 0);
    /* they change in batches of 200 (under the 64 KiB body cap), with long messages, until the
     * gateway gives up on pam */
    char *adm = th_token("ops", "presence:admin");
    char auth[1200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", adm);
    free(adm);
    size_t cap = 200 * 320 + 64;
    char *body = malloc(cap);
    bool dropped = false;
    for (int round = 0; round < 100 && !dropped; round++) {
        size_t len = (size_t)snprintf(body, cap, "{\"presences\":[");
        for (int i = 0; i < 200; i++)
            len += (size_t)snprintf(body + len, cap - len,
                                    "%s{\"user_id\":\"s%d\",\"status\":\"%s\",\"message\":\"%d-%0200d\"}", i ? "," : "", i,
                                    round % 2 ? "busy" : "away", round, 0);
        len += (size_t)snprintf(body + len, cap - len, "]}");
        th_resp_t r;
        ck_assert_int_eq(th_http(n.port, "POST", "/api/v2/presence/batch", auth, body, len, &r, 10000), 0);
        ck_assert_int_eq(r.status, 200);
        th_resp_free(&r);
        for (uint64_t until = th_now_ms() + 500; !dropped && th_now_ms() < until;)
            dropped = s_metric(n.port, "ws_dropped_slow_total") == 1;
    }
    free(body);
    ck_assert_msg(dropped, "the client that does not read was never dropped");
    /* what reached the socket before the drop is there, then the close (1008) and the end */
    s_expect_close(&c, 1008, "slow reader");
    ck_assert_str_eq(c.close_reason, "not reading: more than WS_QUEUE_MAX bytes waiting");
    ws_client_close(&c);
    /* pam's session ends with the grace like any other close */
    s_wait_record(n.port, "pam", "offline", 0, GRACE_MS + 8000);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_dead_peer)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "WS_PING_INTERVAL_MS=300", "PRESENCE_GRACE_MS=300", NULL};
    const uint64_t interval = 300;
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    /* a client that answers pings lives on; one that sends frames more than an interval apart but
     * less than two (and never answers a ping) lives on too; one that stops sending is ended two
     * intervals after its last frame -- not at the next ping tick after that */
    ws_client_t live, chatty, dead;
    json_decref(s_connect(&live, n.port, "rex", ""));
    json_decref(s_connect(&chatty, n.port, "ted", ""));
    json_t *w = s_connect(&dead, n.port, "sal", "");
    ck_assert_int_eq(ws_json_int(w, "ping_interval_ms", -1), 300);
    json_decref(w);
    dead.auto_pong = false;
    chatty.auto_pong = false;
    /* sal's last frame goes out right after a server ping: a check made only when the ping timer
     * fires would see it silent for less than two intervals at the second tick after it, and end it
     * only at the third (~900 ms) */
    ws_msg_t m;
    ck_assert_int_eq(ws_client_recv(&dead, &m, 2000), WS_OK);
    ck_assert_int_eq(m.opcode, WS_OP_PING);
    ws_msg_free(&m);
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(ws_client_send_text(&dead, "{\"type\":\"ping\"}", 2000), 0);
    ck_assert_int_eq(ws_client_send_text(&chatty, "{\"type\":\"ping\"}", 2000), 0);
    uint64_t chatty_sent = th_now_ms();
    int rc, pings = 0, pongs = 0;
    while ((rc = ws_client_recv(&dead, &m, 5)) == WS_OK || rc == WS_TIMEOUT) {
        if (rc == WS_OK) {
            if (m.opcode == WS_OP_PING)
                pings++;
            else
                ck_assert_msg(m.opcode == WS_OP_TEXT && strstr((char *)m.data, "\"pong\""), "sal got %.*s",
                              (int)m.len, (char *)m.data);
            ws_msg_free(&m);
        }
        ck_assert_int_eq(ws_client_recv(&live, &m, 5), WS_TIMEOUT); /* answers pings meanwhile */
        if (th_now_ms() - chatty_sent >= 450) {
            ck_assert_int_eq(ws_client_send_text(&chatty, "{\"type\":\"ping\"}", 2000), 0);
            chatty_sent = th_now_ms();
        }
        while ((rc = ws_client_recv(&chatty, &m, 1)) == WS_OK) {
            pongs += m.opcode == WS_OP_TEXT;
            ws_msg_free(&m);
        }
        ck_assert_msg(rc == WS_TIMEOUT, "ted: rc %d (%s)", rc, chatty.err);
        ck_assert_msg(th_now_ms() - t0 < 5000, "the silent client was not ended");
    }
    uint64_t took = th_now_ms() - t0;
    ck_assert_msg(rc == WS_EOF, "silent client: rc %d (%s)", rc, dead.err);
    ck_assert_int_ge(pings, 1);
    uint64_t lo = 2 * interval - 20 * (uint64_t)s_mult(), hi = 2 * interval + 150 * (uint64_t)s_mult();
    ck_assert_msg(took >= lo && took <= hi, "silent client ended %llu ms after its last frame (two intervals of %llu: "
                  "%llu-%llu ms)", (unsigned long long)took, (unsigned long long)interval, (unsigned long long)lo,
                  (unsigned long long)hi);
    ws_client_close(&dead);
    /* the answering one and the chatty one are still there, a few intervals on */
    for (uint64_t until = th_now_ms() + 1500; th_now_ms() < until;) {
        ck_assert_int_eq(ws_client_recv(&live, &m, 20), WS_TIMEOUT);
        if (th_now_ms() - chatty_sent >= 450) {
            ck_assert_int_eq(ws_client_send_text(&chatty, "{\"type\":\"ping\"}", 2000), 0);
            chatty_sent = th_now_ms();
        }
        while ((rc = ws_client_recv(&chatty, &m, 1)) == WS_OK) {
            pongs += m.opcode == WS_OP_TEXT;
            ws_msg_free(&m);
        }
        ck_assert_msg(rc == WS_TIMEOUT, "ted: rc %d (%s)", rc, chatty.err);
    }
    ck_assert_int_ge(pongs, 3);
    ck_assert_int_eq(ws_client_send_text(&live, "{\"type\":\"ping\"}", 2000), 0);
    json_decref(s_next(&live, "pong", 2000));
    s_wait_record(n.port, "sal", "offline", 0, 3000);
    s_wait_record(n.port, "ted", "online", 1, 1000);
    ck_assert_uint_eq(s_metric(n.port, "ws_dead_total"), 1);
    ws_client_close(&live);
    ws_client_close(&chatty);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_idle_away)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "PRESENCE_IDLE_S=1", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    ws_client_t c;
    json_decref(s_connect(&c, n.port, "rex", ""));
    /* no set/activity for PRESENCE_IDLE_S: away; activity brings online back */
    s_wait_record(n.port, "rex", "away", 1, 4000);
    ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"activity\"}", 2000), 0);
    s_wait_record(n.port, "rex", "online", 1, 2000);
    /* busy is the client's choice: idle shows away, activity gives busy back */
    ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"set\",\"status\":\"busy\"}", 2000), 0);
    s_wait_record(n.port, "rex", "busy", 1, 2000);
    s_wait_record(n.port, "rex", "away", 1, 4000);
    ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"activity\"}", 2000), 0);
    s_wait_record(n.port, "rex", "busy", 1, 2000);
    ws_client_close(&c);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== invisible mode =========================================================================== */

START_TEST(test_invisible_does_not_leak)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    ws_client_t bob, own, d1, d2;
    json_decref(s_connect(&d1, n.port, "tia", "&device=laptop"));
    json_decref(s_connect(&bob, n.port, "bob", ""));
    ck_assert_int_eq(ws_client_send_text(&bob, "{\"type\":\"watch\",\"users\":[\"tia\"]}", 2000), 0);
    json_t *p = s_next(&bob, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    json_decref(p);
    /* tia goes invisible (preferred offline): bob sees her offline, no sessions */
    ck_assert_int_eq(s_rest(n.port, "PUT", "tia", "", "{\"status\":\"offline\",\"ttl\":3600}"), 200);
    p = s_next(&bob, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", 0), 0);
    long long pubv = ws_json_int(p, "record.version", -1);
    json_decref(p);
    /* tia watches herself from another device: she sees her own view (the sessions) */
    json_decref(s_connect(&own, n.port, "tia", "&device=tablet"));
    ck_assert_int_eq(ws_client_send_text(&own, "{\"type\":\"watch\",\"users\":[\"tia\"]}", 2000), 0);
    p = s_next(&own, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "offline");
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 2);
    json_decref(p);
    /* devices come and go: tia sees every change, bob nothing */
    json_decref(s_connect(&d2, n.port, "tia", "&device=phone&status=busy"));
    p = s_next(&own, "presence", 5000);
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 3);
    json_decref(p);
    ws_client_close(&d1);
    p = s_next(&own, "presence", GRACE_MS + 3000);
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 2);
    json_decref(p);
    ws_client_close(&d2);
    p = s_next(&own, "presence", GRACE_MS + 3000);
    ck_assert_int_eq(ws_json_int(p, "record.sessions", -1), 1);
    json_decref(p);
    s_quiet(&bob, 500, "an invisible user's devices");
    /* a GET by anyone else shows what bob saw */
    json_t *rec;
    ck_assert_int_eq(s_get(n.port, "tia", &rec), 200);
    ck_assert_str_eq(ws_json_str(rec, "status"), "offline");
    ck_assert_int_eq(ws_json_int(rec, "version", -1), pubv);
    json_decref(rec);
    /* visible again: bob sees that */
    ck_assert_int_eq(s_rest(n.port, "PUT", "tia", "", "{\"status\":\"online\",\"ttl\":60}"), 200);
    p = s_next(&bob, "presence", 5000);
    ck_assert_str_eq(ws_json_str(p, "record.status"), "online");
    ck_assert_int_gt(ws_json_int(p, "record.version", -1), pubv);
    json_decref(p);
    ws_client_close(&own);
    ws_client_close(&bob);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== the gateway going away =================================================================== */

START_TEST(test_stop_closes_1001)
{
    const char *env[] = {"RATE_LIMIT_WRITES=0", "PRESENCE_GRACE_MS=500", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    ws_client_t c;
    json_decref(s_connect(&c, n.port, "uma", ""));
    th_signal(n.gw, SIGTERM);
    s_expect_close(&c, 1001, "gateway stopping");
    ck_assert_str_eq(c.close_reason, "gateway going away");
    ws_client_close(&c);
    ck_assert_int_eq(th_stop(n.gw, 15000), 0);
    /* the session ended (its grace, then the lease's end): a new gateway reads uma offline */
    ck_assert_int_eq(th_restart(n.gw, 20000), 0);
    const char *colon = strrchr(n.gw->ready, ':');
    n.port = atoi(colon + 1);
    s_wait_record(n.port, "uma", "offline", 0, 3000);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("ws");
    struct {
        const char *name;
        const TTest *t;
    } cases[] = {
        {"connect", test_connect_online},        {"devices", test_two_devices_busy_wins},
        {"grace", test_close_offline_after_grace}, {"resume", test_resume_within_grace},
        {"close_1000", test_close_1000_keeps_the_grace}, {"bye", test_bye_signs_out_at_once},
        {"refusals", test_refusals},             {"cap", test_connection_cap_503},
        {"watch", test_watch_in_order_and_since}, {"errors", test_errors_keep_the_connection},
        {"close_codes", test_close_codes},       {"slow_reader", test_slow_reader_dropped},
        {"dead", test_dead_peer},                {"idle", test_idle_away},
        {"invisible", test_invisible_does_not_leak},
        {"stop", test_stop_closes_1001},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, cases[i].t);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
