/* integ_sessions.c -- presence that follows devices, through the real processes (REALTIME.md):
 *
 *   - two devices of one user merge (busy wins), one ends, the other holds the user online;
 *   - the sessions list: self and admin 200, anonymous 401, someone else 403; unknown session 404;
 *   - a preferred status wins over the sessions; DELETE .../preferred, or its expiry, gives them back;
 *   - invisible mode: on every read path (GET, multi GET, batch read, SSE) others see offline with
 *     no sessions, and devices coming and going meanwhile change nothing they can observe (no field,
 *     no version, no event); the user and admins see the truth;
 *   - a message with message_ttl is cleared by the store, as an event;
 *   - a REST session without heartbeats ends at its ttl; a heartbeat with a session opens one;
 *   - a gateway lease (LEASE through a cache-node) holds a connection's session; when it lapses
 *     the sweeper ends the session; an open under a lease the store does not hold is refused;
 *   - a store killed with SIGKILL loses no acknowledged session.
 */
#include "harness.h"
#include "sse_client.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const s_env[] = {"RATE_LIMIT_WRITES=0", "RATE_LIMIT_READS=0", "SSE_PING_MS=500", NULL};

/* A request as `sub` (NULL: anonymous; scope may be NULL); returns the status, body parsed in *j
 * (caller decrefs; NULL when not JSON). */
static int s_req(int port, const char *method, const char *path, const char *sub, const char *scope, const char *body,
                 json_t **j)
{
    char auth[1024] = "";
    if (sub)
        th_auth_header(auth, sizeof auth, sub, scope);
    th_resp_t r;
    if (th_http(port, method, path, sub ? auth : NULL, body, body ? strlen(body) : 0, &r, 5000) < 0)
        return -1;
    int st = r.status;
    if (j) {
        json_error_t e;
        *j = json_loadb(r.body, r.body_len, 0, &e);
    }
    th_resp_free(&r);
    return st;
}

/* The record of `uid` in a GET answer body (borrowed from j). */
static json_t *s_rec(json_t *j, const char *uid)
{
    return json_object_get(json_object_get(j, "data"), uid);
}

static const char *s_str(json_t *rec, const char *field)
{
    const char *v = json_string_value(json_object_get(rec, field));
    return v ? v : "";
}

static long long s_int(json_t *rec, const char *field)
{
    json_t *v = json_object_get(rec, field);
    return v ? json_integer_value(v) : -1;
}

/* GET /api/v2/presence/uid as sub: the record (a new reference) or NULL. */
static json_t *s_get(int port, const char *uid, const char *sub, const char *scope)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    json_t *j = NULL;
    int st = s_req(port, "GET", path, sub, scope, NULL, &j);
    ck_assert_int_eq(st, 200);
    json_t *rec = json_incref(s_rec(j, uid));
    json_decref(j);
    ck_assert_ptr_nonnull(rec);
    return rec;
}

static int s_put(int port, const char *uid, const char *body)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    return s_req(port, "PUT", path, uid, NULL, body, NULL);
}

/* ---- devices, the sessions list, preferred ---------------------------------------------------- */

START_TEST(test_two_devices_merge)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int p = n.port;
    ck_assert_int_eq(s_put(p, "ann", "{\"status\":\"online\",\"session\":\"phone\",\"device\":\"phone\"}"), 200);
    ck_assert_int_eq(s_put(p, "ann", "{\"status\":\"busy\",\"session\":\"desk\",\"device\":\"desktop\"}"), 200);
    json_t *r = s_get(p, "ann", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "busy");
    ck_assert_int_eq(s_int(r, "sessions"), 2);
    ck_assert_str_eq(s_str(r, "source"), "session");
    json_decref(r);

    /* the list: self and admin see it, anonymous 401, another user 403 */
    json_t *j = NULL;
    ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence/ann/sessions", "ann", NULL, NULL, &j), 200);
    json_t *list = json_object_get(json_object_get(j, "data"), "ann");
    ck_assert_int_eq(json_array_size(list), 2);
    int found_desk = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *s = json_array_get(list, i);
        if (strcmp(s_str(s, "session_id"), "desk") == 0) {
            found_desk = 1;
            ck_assert_str_eq(s_str(s, "device"), "desktop");
            ck_assert_str_eq(s_str(s, "status"), "busy");
            ck_assert_str_ne(s_str(s, "connected_at"), "");
            ck_assert_str_ne(s_str(s, "expires_at"), "");
        }
    }
    ck_assert_int_eq(found_desk, 1);
    json_decref(j);
    ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence/ann/sessions", "root", "presence:admin", NULL, NULL), 200);
    ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence/ann/sessions", NULL, NULL, NULL, NULL), 401);
    ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence/ann/sessions", "bob", NULL, NULL, NULL), 403);

    /* sign the desktop out: the phone holds ann online */
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/ann/sessions/desk", "ann", NULL, NULL, &j), 200);
    ck_assert_str_eq(s_str(s_rec(j, "ann"), "status"), "online");
    ck_assert_int_eq(s_int(s_rec(j, "ann"), "sessions"), 1);
    json_decref(j);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/ann/sessions/desk", "ann", NULL, NULL, &j), 404);
    ck_assert_str_eq(s_str(j, "error"), "session not found: the user has no live session with that id");
    json_decref(j);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/ann/sessions/a%20b", "ann", NULL, NULL, &j), 400);
    ck_assert_str_eq(s_str(j, "error"), "invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -");
    json_decref(j);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/ann/sessions/phone", "bob", NULL, NULL, NULL), 403);
    /* ending a session with status offline in a PUT (REALTIME.md), then the last one: offline */
    ck_assert_int_eq(s_put(p, "ann", "{\"status\":\"offline\",\"session\":\"nope\"}"), 404);
    ck_assert_int_eq(s_put(p, "ann", "{\"status\":\"offline\",\"session\":\"phone\"}"), 200);
    r = s_get(p, "ann", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "offline");
    ck_assert_int_eq(s_int(r, "sessions"), 0);
    ck_assert_str_eq(s_str(r, "source"), "none");
    json_decref(r);
    ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence/ann/sessions", "ann", NULL, NULL, &j), 200);
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(j, "data"), "ann")), 0);
    json_decref(j);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

typedef struct poll_arg {
    int port;
    const char *uid, *field, *want;
} poll_arg_t;

static bool s_field_is(void *arg)
{
    poll_arg_t *a = arg;
    json_t *r = s_get(a->port, a->uid, a->uid, NULL);
    bool ok = strcmp(s_str(r, a->field), a->want) == 0;
    json_decref(r);
    return ok;
}

START_TEST(test_preferred_then_back)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int p = n.port;
    ck_assert_int_eq(s_put(p, "cy", "{\"status\":\"online\",\"session\":\"s1\",\"message\":\"at work\"}"), 200);
    /* a preferred status (no session) wins over the sessions */
    ck_assert_int_eq(s_put(p, "cy", "{\"status\":\"busy\",\"ttl\":600,\"message\":\"in a meeting\"}"), 200);
    json_t *r = s_get(p, "cy", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "busy");
    ck_assert_str_eq(s_str(r, "source"), "preferred");
    ck_assert_str_ne(s_str(r, "preferred_until"), "");
    json_decref(r);
    /* ending it gives the sessions back; the message stays */
    json_t *j = NULL;
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/cy/preferred", "cy", NULL, NULL, &j), 200);
    ck_assert_str_eq(s_str(s_rec(j, "cy"), "status"), "online");
    ck_assert_str_eq(s_str(s_rec(j, "cy"), "source"), "session");
    ck_assert_str_eq(s_str(s_rec(j, "cy"), "message"), "in a meeting");
    ck_assert_ptr_null(json_object_get(s_rec(j, "cy"), "preferred_until"));
    json_decref(j);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/cy/preferred", "bob", NULL, NULL, NULL), 403);
    /* a preferred status that expires gives the sessions back by itself */
    ck_assert_int_eq(s_put(p, "cy", "{\"status\":\"away\",\"ttl\":1,\"message\":\"lunch\"}"), 200);
    r = s_get(p, "cy", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "away");
    json_decref(r);
    poll_arg_t back = {p, "cy", "source", "session"};
    ck_assert(th_wait_for(s_field_is, &back, 5000));
    r = s_get(p, "cy", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "online");
    json_decref(r);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/nobody/preferred", "nobody", NULL, NULL, &j), 404);
    ck_assert_str_eq(s_str(j, "error"), "presence not found for user nobody");
    json_decref(j);
    /* a client that knows nothing of sessions sees the nine 2.0 fields */
    ck_assert_int_eq(s_put(p, "old", "{\"status\":\"away\",\"message\":\"m\"}"), 200);
    r = s_get(p, "old", NULL, NULL);
    ck_assert_int_eq(json_object_size(r), 9);
    json_decref(r);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- invisible mode --------------------------------------------------------------------------- */

static th_sse_t *s_watch(int port, const char *users, const char *sub)
{
    char path[256], auth[1024] = "";
    snprintf(path, sizeof path, "/api/v2/presence/watch?users=%s", users);
    if (sub)
        th_auth_header(auth, sizeof auth, sub, NULL);
    int st = 0;
    th_sse_t *s = th_sse_open(port, path, sub ? auth : NULL, &st);
    ck_assert_msg(s != NULL, "watch refused: %d", st);
    return s;
}

static json_t *s_event(th_sse_t *s, int timeout_ms)
{
    th_event_t ev;
    if (th_sse_next(s, &ev, timeout_ms) < 0)
        return NULL;
    json_error_t e;
    json_t *j = json_loads(ev.data, 0, &e);
    ck_assert_msg(j != NULL, "event data is not JSON: %s", ev.data);
    ck_assert_int_eq(s_int(j, "version"), (long long)ev.id);
    return j;
}

START_TEST(test_invisible_on_every_read_path)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int p = n.port;
    ck_assert_int_eq(s_put(p, "dee", "{\"status\":\"online\",\"session\":\"laptop\",\"message\":\"hi\"}"), 200);
    ck_assert_int_eq(s_put(p, "zed", "{\"status\":\"away\"}"), 200);
    th_sse_t *bob = s_watch(p, "dee,zed", "bob"); /* someone else */
    th_sse_t *self = s_watch(p, "dee", "dee");    /* dee's own devices */
    json_t *e;
    for (int i = 0; i < 2; i++) { /* the current records */
        e = s_event(bob, 5000);
        ck_assert_ptr_nonnull(e);
        json_decref(e);
    }
    e = s_event(self, 5000);
    ck_assert_ptr_nonnull(e);
    json_decref(e);

    /* dee goes invisible: everyone sees offline with no sessions (an event) */
    ck_assert_int_eq(s_put(p, "dee", "{\"status\":\"offline\",\"ttl\":600,\"message\":\"hi\"}"), 200);
    e = s_event(bob, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(s_str(e, "user_id"), "dee");
    ck_assert_str_eq(s_str(e, "status"), "offline");
    ck_assert_int_eq(s_int(e, "sessions"), 0);
    long long pub_version = s_int(e, "version");
    const char *pub_last_seen = json_string_value(json_object_get(e, "last_seen"));
    char seen[64];
    snprintf(seen, sizeof seen, "%s", pub_last_seen ? pub_last_seen : "");
    json_decref(e);
    e = s_event(self, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(s_str(e, "status"), "offline");
    ck_assert_int_eq(s_int(e, "sessions"), 1);
    json_decref(e);

    /* devices come and go, heartbeat: others observe nothing */
    ck_assert_int_eq(s_put(p, "dee", "{\"status\":\"busy\",\"session\":\"phone\",\"device\":\"phone\"}"), 200);
    ck_assert_int_eq(s_req(p, "POST", "/api/v2/presence/dee/heartbeat", "dee", NULL, "{\"session\":\"laptop\"}", NULL),
                     200);
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/dee/sessions/phone", "dee", NULL, NULL, NULL), 200);
    /* the public view on every read path: GET, multi, batch -- anonymous and another user */
    const char *viewers[] = {NULL, "bob"};
    for (int v = 0; v < 2; v++) {
        json_t *r = s_get(p, "dee", viewers[v], NULL);
        ck_assert_str_eq(s_str(r, "status"), "offline");
        ck_assert_int_eq(s_int(r, "sessions"), 0);
        ck_assert_int_eq(s_int(r, "version"), pub_version);
        ck_assert_str_eq(s_str(r, "last_seen"), seen);
        json_decref(r);
        json_t *j = NULL;
        ck_assert_int_eq(s_req(p, "GET", "/api/v2/presence?users=dee,zed", viewers[v], NULL, NULL, &j), 200);
        ck_assert_int_eq(s_int(s_rec(j, "dee"), "version"), pub_version);
        ck_assert_int_eq(s_int(s_rec(j, "dee"), "sessions"), 0);
        json_decref(j);
        ck_assert_int_eq(s_req(p, "POST", "/api/v2/presence/batch", viewers[v], NULL, "{\"user_ids\":[\"dee\"]}", &j),
                         200);
        ck_assert_int_eq(s_int(s_rec(j, "dee"), "version"), pub_version);
        ck_assert_str_eq(s_str(s_rec(j, "dee"), "status"), "offline");
        json_decref(j);
    }
    /* the user and admins see the truth */
    json_t *r = s_get(p, "dee", "dee", NULL);
    ck_assert_int_eq(s_int(r, "sessions"), 1);
    ck_assert_int_gt(s_int(r, "version"), pub_version);
    json_decref(r);
    r = s_get(p, "dee", "root", "presence:admin");
    ck_assert_int_eq(s_int(r, "sessions"), 1);
    json_decref(r);
    /* bob's stream: the next event is zed's, nothing of dee's devices came before it */
    ck_assert_int_eq(s_put(p, "zed", "{\"status\":\"busy\"}"), 200);
    e = s_event(bob, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(s_str(e, "user_id"), "zed");
    json_decref(e);
    /* dee's own stream saw the devices (the phone came: sessions 2) */
    e = s_event(self, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(s_int(e, "sessions"), 2);
    json_decref(e);
    /* visible again: others see the sessions decide (an event) */
    ck_assert_int_eq(s_req(p, "DELETE", "/api/v2/presence/dee/preferred", "dee", NULL, NULL, NULL), 200);
    e = s_event(bob, 5000);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(s_str(e, "user_id"), "dee");
    ck_assert_str_eq(s_str(e, "status"), "online");
    ck_assert_int_eq(s_int(e, "sessions"), 1);
    ck_assert_int_gt(s_int(e, "version"), pub_version);
    json_decref(e);
    th_sse_close(&bob);
    th_sse_close(&self);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- time: message_ttl, a REST session's ttl -------------------------------------------------- */

START_TEST(test_message_and_session_expire)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int p = n.port;
    json_t *j = NULL;
    ck_assert_int_eq(s_req(p, "PUT", "/api/v2/presence/eve", "eve", NULL,
                           "{\"status\":\"online\",\"ttl\":600,\"message\":\"brb\",\"message_ttl\":1}", &j),
                     200);
    ck_assert_str_ne(s_str(s_rec(j, "eve"), "message_expires_at"), "");
    json_decref(j);
    th_sse_t *w = s_watch(p, "eve", NULL);
    json_t *e = s_event(w, 5000);
    ck_assert_ptr_nonnull(e);
    json_decref(e);
    e = s_event(w, 5000); /* the store clears the message: an event */
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(s_str(e, "status"), "online");
    ck_assert_ptr_null(json_object_get(e, "message"));
    json_decref(e);
    th_sse_close(&w);
    ck_assert_int_eq(s_req(p, "PUT", "/api/v2/presence/eve", "eve", NULL, "{\"status\":\"busy\",\"message_ttl\":5}", &j),
                     400);
    ck_assert_str_eq(s_str(j, "error"), "invalid message_ttl: message_ttl needs a non-empty message");
    json_decref(j);

    /* a REST session ends at its ttl without heartbeats */
    ck_assert_int_eq(s_put(p, "fay", "{\"status\":\"online\",\"session\":\"tab\",\"ttl\":1}"), 200);
    poll_arg_t a = {p, "fay", "status", "offline"};
    ck_assert(th_wait_for(s_field_is, &a, 5000));
    /* a heartbeat with a session opens it online */
    ck_assert_int_eq(s_req(p, "POST", "/api/v2/presence/fay/heartbeat", "fay", NULL,
                           "{\"session\":\"w1\",\"device\":\"watch\",\"ttl\":60}", &j),
                     200);
    ck_assert_str_eq(s_str(s_rec(j, "fay"), "status"), "online");
    ck_assert_int_eq(s_int(s_rec(j, "fay"), "sessions"), 1);
    json_decref(j);
    ck_assert_int_eq(s_req(p, "POST", "/api/v2/presence/fay/heartbeat", "fay", NULL, "{\"device\":\"watch\"}", &j), 400);
    ck_assert_str_eq(s_str(j, "error"), "invalid device: a device names a session (give session too)");
    json_decref(j);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- leases ------------------------------------------------------------------------------------- */

static int s_lease(th_zc_t *z, uint64_t lease, uint8_t op, uint32_t ttl_ms, uint32_t *flags)
{
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_lease(&b, rid, lease, op, ttl_ms, "test-gw", 7);
    proto_msg_t m;
    int rc = th_zc_call(z, &b, rid, &m, 5000);
    proto_buf_fini(&b);
    if (rc < 0)
        return -1;
    ck_assert_int_eq(m.type, PROTO_REPLY);
    int st = m.status;
    *flags = m.flags;
    proto_msg_fini(&m);
    return st;
}

static int s_conn_open(th_zc_t *z, const char *uid, const char *sid, uint64_t lease, uint64_t conn)
{
    proto_record_t r;
    memset(&r, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_node(&r, "test-gw", 7);
    proto_record_set_msg(&r, "", 0);
    r.status = PRESENCE_ONLINE;
    r.ttl_s = 60;
    r.cflags = PROTO_CMD_F_OPEN;
    r.lease_id = lease;
    r.conn_id = conn;
    snprintf(r.session_id, sizeof r.session_id, "%s", sid);
    r.sid_len = (uint8_t)strlen(sid);
    r.device[0] = '\0';
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_records_cmd(&b, PROTO_PUT, rid, &r, 1);
    proto_msg_t m;
    int rc = th_zc_call(z, &b, rid, &m, 5000);
    proto_buf_fini(&b);
    if (rc < 0)
        return -1;
    int st = m.status;
    proto_msg_fini(&m);
    return st;
}

START_TEST(test_lease_holds_and_lapses)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, s_env), 0);
    int p = n.port;
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, n.cache_eps), 0); /* through a cache-node, as a gateway does */
    uint32_t flags = 0;
    /* an open under a lease the store does not hold is refused */
    ck_assert_int_eq(s_conn_open(&z, "gus", "c1", 0x1234, 1), PROTO_NOTFOUND);
    /* the first refresh creates it; a connection's session then holds gus online */
    ck_assert_int_eq(s_lease(&z, 0x1234, PROTO_LEASE_REFRESH, 1500, &flags), PROTO_OK);
    ck_assert_int_eq(s_conn_open(&z, "gus", "c1", 0x1234, 1), PROTO_OK);
    ck_assert_int_eq(s_conn_open(&z, "hal", "c2", 0x1234, 2), PROTO_OK);
    json_t *r = s_get(p, "gus", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "online");
    ck_assert_int_eq(s_int(r, "sessions"), 1);
    json_decref(r);
    /* refreshes keep it (past its first ttl) */
    uint64_t until = th_now_ms() + 2500;
    while (th_now_ms() < until) {
        ck_assert_int_eq(s_lease(&z, 0x1234, PROTO_LEASE_REFRESH, 1500, &flags), PROTO_OK);
        ck_assert_int_eq(flags & PROTO_REPLY_F_LAPSED, 0);
        struct timespec ts = {0, 300 * 1000000L};
        nanosleep(&ts, NULL); /* the refresh interval of a gateway (pacing, not synchronisation) */
    }
    r = s_get(p, "gus", NULL, NULL);
    ck_assert_str_eq(s_str(r, "status"), "online");
    json_decref(r);
    /* no more refreshes: the lease lapses and the sweeper ends both sessions */
    poll_arg_t a = {p, "gus", "status", "offline"}, b = {p, "hal", "status", "offline"};
    ck_assert(th_wait_for(s_field_is, &a, 6000));
    ck_assert(th_wait_for(s_field_is, &b, 2000));
    /* a lapsed lease is never revived: its gateway is told */
    ck_assert_int_eq(s_lease(&z, 0x1234, PROTO_LEASE_REFRESH, 1500, &flags), PROTO_OK);
    ck_assert_uint_ne(flags & PROTO_REPLY_F_LAPSED, 0);
    /* a clean end ends the sessions at once */
    ck_assert_int_eq(s_lease(&z, 0x5678, PROTO_LEASE_REFRESH, 60000, &flags), PROTO_OK);
    ck_assert_int_eq(s_conn_open(&z, "ida", "c3", 0x5678, 3), PROTO_OK);
    ck_assert_int_eq(s_lease(&z, 0x5678, PROTO_LEASE_END, 1, &flags), PROTO_OK);
    poll_arg_t c = {p, "ida", "status", "offline"};
    ck_assert(th_wait_for(s_field_is, &c, 3000));
    th_zc_close(&z);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- the store killed ----------------------------------------------------------------------- */

START_TEST(test_store_sigkill_keeps_sessions)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, s_env), 0);
    int p = n.port;
    char body[128];
    for (int i = 0; i < 20; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "k%d", i);
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"session\":\"s%d\",\"device\":\"d\"}", i % 2 ? "busy" : "away", i);
        ck_assert_int_eq(s_put(p, uid, body), 200);
    }
    th_kill(n.store);
    ck_assert_int_eq(th_restart(n.store, 10000), 0);
    for (int i = 0; i < 20; i++) {
        char uid[16], path[64];
        snprintf(uid, sizeof uid, "k%d", i);
        snprintf(path, sizeof path, "/api/v2/presence/%s/sessions", uid);
        json_t *j = NULL;
        int st = -1;
        uint64_t dl = th_now_ms() + 10000; /* the cache-nodes reconnect to the new store */
        while ((st = s_req(p, "GET", path, uid, NULL, NULL, &j)) != 200 && th_now_ms() < dl) {
            json_decref(j);
            j = NULL;
        }
        ck_assert_int_eq(st, 200);
        ck_assert_int_eq(json_array_size(json_object_get(json_object_get(j, "data"), uid)), 1);
        json_decref(j);
        json_t *r = s_get(p, uid, NULL, NULL);
        ck_assert_str_eq(s_str(r, "status"), i % 2 ? "busy" : "away");
        json_decref(r);
    }
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_sessions");
    TCase *tc = tcase_create("sessions");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_two_devices_merge);
    tcase_add_test(tc, test_preferred_then_back);
    tcase_add_test(tc, test_invisible_on_every_read_path);
    tcase_add_test(tc, test_message_and_session_expire);
    tcase_add_test(tc, test_lease_holds_and_lapses);
    tcase_add_test(tc, test_store_sigkill_keeps_sessions);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
