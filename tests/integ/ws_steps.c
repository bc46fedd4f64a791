/* ws_steps.c -- steps the WebSocket integration tests share (see ws_steps.h).
 *
 * Built on the harness (th_http, th_token, th_wait_for) and the WebSocket client (ws_client.c);
 * every step asserts with Check and waits with a deadline, never a sleep. One test thread.
 */
#include "ws_steps.h"
#include "harness.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int ws_step_open(ws_client_t *c, int port, const char *user, const char *q, const char *headers)
{
    char path[2048];
    if (user) {
        char *tok = th_token(user, NULL);
        snprintf(path, sizeof path, "/api/v2/presence/connect?access_token=%s%s", tok, q ? q : "");
        free(tok);
    } else {
        snprintf(path, sizeof path, "/api/v2/presence/connect%s%s", q && *q ? "?" : "", q && *q ? q + 1 : "");
    }
    return ws_client_open(c, "127.0.0.1", port, path, headers, 5000);
}

/* The next text message: a JSON object of type `type` (caller owns it). */
json_t *ws_step_next(ws_client_t *c, const char *type, int timeout_ms)
{
    int rc;
    json_t *j = ws_client_recv_json(c, timeout_ms, &rc);
    ck_assert_msg(j != NULL, "no '%s' message: rc %d (%s)", type, rc, c->err);
    const char *t = ws_json_str(j, "type");
    ck_assert_msg(t && strcmp(t, type) == 0, "expected a '%s' message, got: %s", type, json_dumps(j, 0));
    return j;
}

/* Open as user and take the welcome (caller owns it). */
json_t *ws_step_connect(ws_client_t *c, int port, const char *user, const char *q)
{
    int st = ws_step_open(c, port, user, q, NULL);
    ck_assert_msg(st == 101, "connect %s%s: status %d (%s) %s", user, q ? q : "", st, c->err, c->body ? c->body : "");
    return ws_step_next(c, "welcome", 5000);
}

/* Nothing arrives within ms (pings are answered by the client and not returned). */
void ws_step_quiet(ws_client_t *c, int ms, const char *why)
{
    ws_msg_t m;
    int rc = ws_client_recv(c, &m, ms);
    ck_assert_msg(rc == WS_TIMEOUT, "%s: expected nothing, got rc %d: %s", why, rc, rc == WS_OK ? (char *)m.data : c->err);
}

/* The server's close frame with `code`, then the end of the connection. */
void ws_step_expect_close(ws_client_t *c, int code, const char *why)
{
    ws_msg_t m;
    int rc;
    while ((rc = ws_client_recv(c, &m, 5000)) == WS_OK)
        ws_msg_free(&m); /* frames queued before the close */
    ck_assert_msg(rc == WS_CLOSED, "%s: expected a close frame, rc %d (%s)", why, rc, c->err);
    ck_assert_msg(c->close_code == code, "%s: close code %d (%s), expected %d", why, c->close_code, c->close_reason,
                  code);
    ck_assert_int_eq(ws_client_recv(c, &m, 5000), WS_EOF);
}

/* GET one record: the HTTP status; *rec the record (caller owns it) on 200. */
int ws_step_get(int port, const char *uid, json_t **rec)
{
    char path[160];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", path, NULL, NULL, 0, &r, 5000), 0);
    int st = r.status;
    *rec = NULL;
    if (st == 200) {
        json_error_t e;
        json_t *j = json_loads(r.body, 0, &e);
        ck_assert_ptr_nonnull(j);
        *rec = json_incref(json_object_get(json_object_get(j, "data"), uid));
        json_decref(j);
    }
    th_resp_free(&r);
    return st;
}

int ws_step_rest(int port, const char *method, const char *uid, const char *suffix, const char *body)
{
    char auth[1024], path[160];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s%s", uid, suffix);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, method, path, auth, body, body ? strlen(body) : 0, &r, 5000), 0);
    int st = r.status;
    th_resp_free(&r);
    return st;
}

typedef struct want {
    int port;
    const char *uid, *status;
    long long sessions; /* -1: any */
} want_t;

static bool s_is(void *arg)
{
    want_t *w = arg;
    json_t *rec;
    if (ws_step_get(w->port, w->uid, &rec) != 200)
        return false;
    bool ok = strcmp(ws_json_str(rec, "status"), w->status) == 0 &&
              (w->sessions < 0 || ws_json_int(rec, "sessions", -1) == w->sessions);
    json_decref(rec);
    return ok;
}

/* Poll (deadline, no sleeps) until uid shows status with `sessions` (-1: any). */
void ws_step_wait_record(int port, const char *uid, const char *status, long long sessions, int timeout_ms)
{
    want_t w = {port, uid, status, sessions};
    ck_assert_msg(th_wait_for(s_is, &w, timeout_ms), "%s never showed %s with %lld sessions within %d ms", uid, status,
                  sessions, timeout_ms);
}

uint64_t ws_step_metric(int port, const char *name)
{
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", "/metrics", NULL, NULL, 0, &r, 5000), 0);
    uint64_t v = 0;
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(r.body, key);
    if (at)
        v = strtoull(at + strlen(key), NULL, 10);
    th_resp_free(&r);
    return v;
}

uint64_t ws_step_time_us(const char *t)
{
    struct tm tm = {0};
    int frac = 0, used = 0;
    if (!t || sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &frac, &used) != 7 || used == 0)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (uint64_t)timegm(&tm) * 1000000u + (uint64_t)frac;
}
