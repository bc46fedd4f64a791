/* integ_wsclient.c -- the WebSocket test client (ws_client.c) against a real server: h2o_bare.
 *
 * h2o_bare (tests/bench) is started by pid through the harness, with its two WebSocket modes: /ws
 * (h2o's websocket.c + libwslay) and /ws-raw (our own framing on h2o_http1_upgrade). Every test
 * runs against both, so each pins the client's behaviour and, at the same time, the behaviour the
 * gateway's endpoint will inherit from either implementation: welcome first, echo, fragments,
 * ping/pong, close handshake, close codes for hostile input (1009 oversize, 1002 unmasked or bad
 * opcode, 1007 invalid UTF-8), dead-peer detection, and a flood that must all be answered.
 */
#include "harness.h"
#include "ws_client.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_paths[] = {"/ws", "/ws-raw"};

static th_proc_t *s_start(int ping_ms, int *port)
{
    th_tmpdir(); /* logs go to a per-test dir */
    th_proc_t *p = th_proc(ping_ms ? "h2o_bare_ping" : "h2o_bare", "h2o_bare");
    th_env(p, "BARE_PORT", "0");
    th_env(p, "BARE_PING_MS", "%d", ping_ms);
    ck_assert_int_eq(th_start(p, 10000), 0);
    const char *at = strstr(p->ready, "127.0.0.1:");
    ck_assert_ptr_nonnull(at);
    *port = atoi(at + 10);
    ck_assert_int_gt(*port, 0);
    return p;
}

/* Open `path` and consume the welcome frame. */
static void s_open(ws_client_t *c, int port, const char *path)
{
    int st = ws_client_open(c, "127.0.0.1", port, path, "Origin: http://localhost\r\n", 5000);
    ck_assert_msg(st == 101, "%s: status %d (%s)", path, st, c->err);
    int rc;
    json_t *w = ws_client_recv_json(c, 5000, &rc);
    ck_assert_msg(w != NULL, "%s: no welcome: rc %d (%s)", path, rc, c->err);
    ck_assert_str_eq(ws_json_str(w, "type"), "welcome");
    json_decref(w);
}

static void s_expect_text(ws_client_t *c, const char *want, const char *path)
{
    ws_msg_t m;
    int rc = ws_client_recv(c, &m, 5000);
    ck_assert_msg(rc == WS_OK, "%s: recv rc %d (%s)", path, rc, c->err);
    ck_assert_int_eq(m.opcode, WS_OP_TEXT);
    ck_assert_str_eq((const char *)m.data, want);
    ws_msg_free(&m);
}

/* The server must answer with a close frame carrying `code`, then end the connection. */
static void s_expect_close(ws_client_t *c, int code, const char *what)
{
    ws_msg_t m;
    int rc = ws_client_recv(c, &m, 5000);
    ck_assert_msg(rc == WS_CLOSED, "%s: expected a close frame, rc %d (%s)", what, rc, c->err);
    ck_assert_msg(c->close_code == code, "%s: close code %d, expected %d", what, c->close_code, code);
    ck_assert_int_eq(ws_client_recv(c, &m, 5000), WS_EOF);
}

START_TEST(test_handshake)
{
    int port;
    th_proc_t *p = s_start(0, &port);
    for (int i = 0; i < 2; i++) {
        ws_client_t c;
        s_open(&c, port, s_paths[i]);
        ws_client_close(&c);
    }
    /* Not an upgrade: 426 with a JSON body, over plain HTTP. */
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", "/ws", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 426);
    ck_assert_ptr_nonnull(strstr(r.body, "upgrade required"));
    th_resp_free(&r);
    /* An upgrade to a path that has no WebSocket: the status and body reach the caller. */
    ws_client_t c;
    ck_assert_int_eq(ws_client_open(&c, "127.0.0.1", port, "/nope?x=1", NULL, 5000), 404);
    ck_assert_ptr_nonnull(c.body);
    ck_assert_str_eq(c.body, "{\"success\":false,\"error\":\"no such route\"}");
    ws_client_close(&c);
    /* Nobody listening: -1 with a reason. */
    ck_assert_int_eq(ws_client_open(&c, "127.0.0.1", 1, "/ws", NULL, 2000), -1);
    ck_assert_ptr_nonnull(strstr(c.err, "connect"));
    ws_client_close(&c);
    ck_assert_int_eq(th_stop(p, 5000), 0);
}
END_TEST

START_TEST(test_echo_fragments_ping)
{
    int port;
    th_proc_t *p = s_start(0, &port);
    for (int i = 0; i < 2; i++) {
        const char *path = s_paths[i];
        ws_client_t c;
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_send_text(&c, "hello", 2000), 0);
        s_expect_text(&c, "hello", path);
        /* Our own fragmented message, with a ping between the fragments. */
        ws_frame_t f1 = {.fin = false, .opcode = WS_OP_TEXT, .masked = true, .payload = "ab", .len = 2};
        ws_frame_t f2 = {.fin = true, .opcode = WS_OP_CONT, .masked = true, .payload = "cd", .len = 2};
        ck_assert_int_eq(ws_client_send_frame(&c, &f1, 2000), 0);
        ck_assert_int_eq(ws_client_send(&c, WS_OP_PING, "mid", 3, 2000), 0);
        ck_assert_int_eq(ws_client_send_frame(&c, &f2, 2000), 0);
        ws_msg_t m;
        ck_assert_int_eq(ws_client_recv(&c, &m, 5000), WS_OK);
        ck_assert_int_eq(m.opcode, WS_OP_PONG);
        ck_assert_str_eq((const char *)m.data, "mid");
        ws_msg_free(&m);
        s_expect_text(&c, "abcd", path);
        /* /ws-raw sends this one back in three fragments with a ping between: reassembled here,
         * the ping answered automatically. /ws sends it whole. Same message either way. */
        ck_assert_int_eq(ws_client_send_text(&c, "fragment-me 0123456789", 2000), 0);
        s_expect_text(&c, "fragment-me 0123456789", path);
        ck_assert_int_eq(ws_client_send(&c, WS_OP_BINARY, "\x00\x01\xff", 3, 2000), 0);
        ck_assert_int_eq(ws_client_recv(&c, &m, 5000), WS_OK);
        ck_assert_int_eq(m.opcode, WS_OP_BINARY);
        ck_assert_int_eq(m.len, 3);
        ck_assert_mem_eq(m.data, "\x00\x01\xff", 3);
        ws_msg_free(&m);
        json_t *j;
        ck_assert_int_eq(ws_client_send_text(&c, "{\"type\":\"ping\"}", 2000), 0);
        ck_assert_ptr_nonnull(j = ws_client_recv_json(&c, 5000, NULL));
        ck_assert_str_eq(ws_json_str(j, "type"), "pong");
        json_decref(j);
        /* Close handshake: our close is echoed with its code, then the server ends the TCP connection. */
        ck_assert_int_eq(ws_client_send_close(&c, 1000, "bye", 2000), 0);
        s_expect_close(&c, 1000, path);
        ws_client_close(&c);
    }
    ck_assert_int_eq(th_stop(p, 5000), 0);
}
END_TEST

START_TEST(test_hostile_close_codes)
{
    int port;
    th_proc_t *p = s_start(0, &port);
    for (int i = 0; i < 2; i++) {
        const char *path = s_paths[i];
        ws_client_t c;
        s_open(&c, port, path);
        /* A frame declaring 1 MiB, with its first 16 bytes: 1009 before the server buffers it.
         * (wslay reports a frame header only once a payload byte is in, so a bare header waits.) */
        ck_assert_int_eq(ws_client_send_partial(&c, 1u << 20, 16, 2000), 0);
        s_expect_close(&c, 1009, "1 MiB frame");
        ws_client_close(&c);
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_send_unmasked(&c, WS_OP_TEXT, "hi", 2, 2000), 0);
        s_expect_close(&c, 1002, "unmasked frame");
        ws_client_close(&c);
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_send_bad_opcode(&c, 3, 2000), 0);
        s_expect_close(&c, 1002, "opcode 3");
        ws_client_close(&c);
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_send_invalid_utf8(&c, 2000), 0);
        s_expect_close(&c, 1007, "invalid UTF-8");
        ws_client_close(&c);
        /* A flood of 2000 small frames: every one is echoed, in order of arrival. */
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_flood(&c, 2000, "xy", 2, 5000), 2000);
        for (int k = 0; k < 2000; k++)
            s_expect_text(&c, "xy", path);
        ws_client_close(&c);
    }
    ck_assert_int_eq(th_stop(p, 5000), 0);
}
END_TEST

START_TEST(test_server_pings_and_dead_peers)
{
    int port;
    th_proc_t *p = s_start(150, &port);
    for (int i = 0; i < 2; i++) {
        const char *path = s_paths[i];
        ws_client_t c;
        ws_msg_t m;
        /* A client that answers pings outlives several intervals. */
        s_open(&c, port, path);
        ck_assert_int_eq(ws_client_recv(&c, &m, 800), WS_TIMEOUT);
        ck_assert_int_eq(ws_client_send_text(&c, "still here", 2000), 0);
        s_expect_text(&c, "still here", path);
        ws_client_close(&c);
        /* One that stops answering sees the pings, then is dropped (no close frame: it is dead). */
        s_open(&c, port, path);
        c.auto_pong = false;
        ck_assert_int_eq(ws_client_recv(&c, &m, 2000), WS_OK);
        ck_assert_int_eq(m.opcode, WS_OP_PING);
        ws_msg_free(&m);
        int rc;
        while ((rc = ws_client_recv(&c, &m, 3000)) == WS_OK && m.opcode == WS_OP_PING)
            ws_msg_free(&m);
        ck_assert_msg(rc == WS_EOF, "%s: silent client: rc %d, expected EOF", path, rc);
        ws_client_close(&c);
        /* Half a frame, then silence: also dropped. */
        s_open(&c, port, path);
        c.auto_pong = false;
        ck_assert_int_eq(ws_client_send_partial(&c, 100, 10, 2000), 0);
        while ((rc = ws_client_recv(&c, &m, 3000)) == WS_OK && m.opcode == WS_OP_PING)
            ws_msg_free(&m);
        ck_assert_msg(rc == WS_EOF, "%s: partial frame: rc %d, expected EOF", path, rc);
        ws_client_close(&c);
    }
    ck_assert_int_eq(th_stop(p, 5000), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_wsclient");
    TCase *tc = tcase_create("ws_client_vs_h2o_bare");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_handshake);
    tcase_add_test(tc, test_echo_fragments_ping);
    tcase_add_test(tc, test_hostile_close_codes);
    tcase_add_test(tc, test_server_pings_and_dead_peers);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
