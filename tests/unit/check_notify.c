/* check_notify.c -- Check suite for the notifier's engine (notifier/notify.c), its configuration
 * parser (notify_cfg.c) and its LMDB layer (notify_db.c, in a mkdtemp directory).
 *
 * The engine is pure, so every outcome is pinned exactly: which events a change makes and in
 * which order, what the debounce holds and cancels, the bytes of a rendered event, how a batch
 * fills and stops, what each HTTP answer does to a target's cursor and backoff, and the signature
 * against a vector computed independently (Python's hmac module).
 */
#include "cfg.h"
#include "notify.h"
#include "notify_cfg.h"
#include "notify_db.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0_US 1700000000000000ull /* 2023-11-14T22:13:20Z */

static proto_record_t s_rec(const char *uid, int status, const char *msg, uint64_t version)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, "n1", 2);
    r.status = (uint8_t)status;
    r.version = version;
    r.ttl_s = 3600;
    r.last_seen_us = r.updated_at_us = T0_US;
    r.expires_at_us = T0_US + 3600ull * 1000000;
    return r;
}

/* The state after applying a plan (as the notifier stores it). */
static notify_user_t s_state(const notify_plan_t *p)
{
    ck_assert(p->write_state);
    return p->next;
}

/* ==== types ================================================================================== */

START_TEST(test_type_names)
{
    const char *names[] = {"online", "offline", "status", "message", "session_start", "session_end"};
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++) {
        ck_assert_str_eq(notify_type_name(i), names[i]);
        ck_assert_int_eq(notify_type_parse(names[i], strlen(names[i])), i);
    }
    ck_assert_ptr_null(notify_type_name(6));
    ck_assert_ptr_null(notify_type_name(-1));
    ck_assert_int_eq(notify_type_parse("onlin", 5), -1);
    ck_assert_int_eq(notify_type_parse("online2", 7), -1);
    ck_assert_int_eq(notify_type_parse("", 0), -1);
}
END_TEST

/* ==== planning =============================================================================== */

START_TEST(test_plan_transitions)
{
    notify_plan_t p;
    uint64_t now = T0_US + 1000000;
    /* A user the notifier never saw comes online: online, previous offline. */
    proto_record_t r = s_rec("alice", PRESENCE_ONLINE, "", 10);
    notify_plan(NULL, &r, 10, now, 0, 100, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_ONLINE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(p.ev[0].seq, 100);
    ck_assert_uint_eq(p.ev[0].id, 10);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, 0);
    ck_assert_uint_eq(p.cancel_seq, 0);
    notify_user_t u = s_state(&p);
    ck_assert_int_eq(u.status, PRESENCE_ONLINE);
    ck_assert_uint_eq(u.version, 10);

    /* online -> busy: status. */
    r = s_rec("alice", PRESENCE_BUSY, "", 11);
    notify_plan(&u, &r, 11, now, 0, 101, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_STATUS);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_ONLINE);
    u = s_state(&p);

    /* busy -> busy with a message: message (previous_status is the status before, busy). */
    r = s_rec("alice", PRESENCE_BUSY, "in a call", 12);
    notify_plan(&u, &r, 12, now, 0, 102, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_MESSAGE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_BUSY);
    u = s_state(&p);
    ck_assert_str_eq(u.message, "in a call");

    /* The same state again (a PUT that changes nothing): no event, nothing written. */
    r = s_rec("alice", PRESENCE_BUSY, "in a call", 13);
    notify_plan(&u, &r, 13, now, 0, 103, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert(!p.write_state);
    ck_assert(!p.delete_state);

    /* busy "in a call" -> away with another message: status then message, consecutive seqs. */
    r = s_rec("alice", PRESENCE_AWAY, "back soon", 14);
    notify_plan(&u, &r, 14, now, 0, 103, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_STATUS);
    ck_assert_int_eq(p.ev[1].type, NOTIFY_MESSAGE);
    ck_assert_uint_eq(p.ev[0].seq, 103);
    ck_assert_uint_eq(p.ev[1].seq, 104);
    ck_assert_uint_eq(p.ev[1].id, 14);
    u = s_state(&p);

    /* away "back soon" -> offline without message (the sweeper's SET): offline, then message. */
    r = s_rec("alice", PRESENCE_OFFLINE, "", 15);
    notify_plan(&u, &r, 15, now, 0, 105, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_AWAY);
    ck_assert_int_eq(p.ev[1].type, NOTIFY_MESSAGE);
    u = s_state(&p);
    ck_assert_int_eq(u.status, PRESENCE_OFFLINE);

    /* A change older than (or equal to) the state's version is ignored. */
    r = s_rec("alice", PRESENCE_ONLINE, "", 15);
    notify_plan(&u, &r, 15, now, 0, 107, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert(!p.write_state);
}
END_TEST

START_TEST(test_plan_effective_status)
{
    notify_plan_t p;
    proto_record_t r = s_rec("bob", PRESENCE_ONLINE, "hello", 20);
    notify_plan(NULL, &r, 20, T0_US, 0, 1, &p);
    notify_user_t u = s_state(&p);
    ck_assert_uint_eq(p.n, 2); /* online, message */
    /* The same record seen after its expires_at is offline without its message: readers see
     * that, so it is an offline (and the message clearing) -- and the sweeper's later SET offline
     * changes nothing more. */
    r.version = 21;
    notify_plan(&u, &r, 21, r.expires_at_us, 0, 3, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_ONLINE);
    ck_assert_int_eq(p.ev[1].type, NOTIFY_MESSAGE);
    u = s_state(&p);
    proto_record_t swept = s_rec("bob", PRESENCE_OFFLINE, "", 22);
    notify_plan(&u, &swept, 22, r.expires_at_us + 1000, 0, 5, &p);
    ck_assert_uint_eq(p.n, 0);
}
END_TEST

START_TEST(test_plan_delete)
{
    notify_plan_t p;
    /* Unknown user deleted: nothing. */
    notify_plan(NULL, NULL, 30, T0_US, 0, 1, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert(!p.write_state);
    ck_assert(!p.delete_state);
    /* Online user deleted: offline (record null in the JSON), previous its status; forgotten. */
    proto_record_t r = s_rec("carol", PRESENCE_BUSY, "", 31);
    notify_plan(NULL, &r, 31, T0_US, 2000, 1, &p);
    notify_user_t u = s_state(&p);
    notify_plan(&u, NULL, 32, T0_US, 2000, 2, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_BUSY);
    ck_assert_uint_eq(p.ev[0].id, 32);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, 0); /* a delete is never held by the debounce */
    ck_assert(p.delete_state);
    ck_assert(!p.write_state);
    /* Offline user deleted (the retention purge): forgotten, no event. */
    r = s_rec("carol", PRESENCE_OFFLINE, "", 40);
    notify_plan(NULL, &r, 40, T0_US, 0, 1, &p);
    ck_assert_uint_eq(p.n, 0);
    notify_user_t off;
    notify_user_from_record(&off, &r, T0_US);
    notify_plan(&off, NULL, 41, T0_US, 0, 1, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert(p.delete_state);
}
END_TEST

START_TEST(test_plan_debounce)
{
    notify_plan_t p;
    const uint64_t db = 2000, t = T0_US;
    proto_record_t r = s_rec("dave", PRESENCE_BUSY, "", 50);
    notify_plan(NULL, &r, 50, t, db, 1, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, 0); /* only offline events are held */
    notify_user_t u = s_state(&p);

    /* Offline: held until now + debounce, remembered in the state. */
    r = s_rec("dave", PRESENCE_OFFLINE, "", 51);
    notify_plan(&u, &r, 51, t, db, 2, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, t / 1000 + db);
    notify_user_t held = s_state(&p);
    ck_assert_uint_eq(held.pend_seq, 2);
    ck_assert_uint_eq(held.pend_until_ms, t / 1000 + db);
    ck_assert_int_eq(held.pend_prev, PRESENCE_BUSY);

    /* Back with the same status within the window: the held entry goes, nothing is emitted. */
    r = s_rec("dave", PRESENCE_BUSY, "", 52);
    notify_plan(&held, &r, 52, t + 1999000, db, 3, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert_uint_eq(p.cancel_seq, 2);
    ck_assert_uint_eq(p.debounced, 1);
    u = s_state(&p);
    ck_assert_uint_eq(u.pend_seq, 0);
    ck_assert_int_eq(u.status, PRESENCE_BUSY);

    /* Back with another status within the window: a status event from the status before. */
    r = s_rec("dave", PRESENCE_ONLINE, "", 53);
    notify_plan(&held, &r, 53, t + 1000000, db, 3, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.cancel_seq, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_STATUS);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_BUSY);
    ck_assert_uint_eq(p.ev[0].seq, 3);

    /* Back after the window: the offline was deliverable; this is an ordinary online. */
    r = s_rec("dave", PRESENCE_BUSY, "", 54);
    notify_plan(&held, &r, 54, t + 2000000, db, 3, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.cancel_seq, 0);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_ONLINE);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(s_state(&p).pend_seq, 0);

    /* A message change while held keeps the hold (and is not held itself). */
    r = s_rec("dave", PRESENCE_OFFLINE, "gone", 55);
    notify_plan(&held, &r, 55, t + 500000, db, 3, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_MESSAGE);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, 0);
    ck_assert_uint_eq(s_state(&p).pend_seq, 2);

    /* A change that makes no event after the window forgets the hold (state rewritten). */
    r = s_rec("dave", PRESENCE_OFFLINE, "", 56);
    notify_plan(&held, &r, 56, t + 5000000, db, 3, &p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert(p.write_state);
    ck_assert_uint_eq(p.next.pend_seq, 0);

    /* A hold more than the debounce away (the wall clock went back) is over: an ordinary online. */
    r = s_rec("dave", PRESENCE_BUSY, "", 57);
    notify_plan(&held, &r, 57, t - 10000000, db, 3, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_uint_eq(p.cancel_seq, 0);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_ONLINE);

    /* debounce 0: offline is deliverable at once. */
    r = s_rec("dave", PRESENCE_OFFLINE, "", 60);
    notify_plan(&u, &r, 60, t, 0, 2, &p);
    ck_assert_uint_eq(p.ev[0].visible_at_ms, 0);
    ck_assert_uint_eq(s_state(&p).pend_seq, 0);
}
END_TEST

START_TEST(test_plan_sessions)
{
    notify_plan_t p;
    /* A first device connects: online and session_start (previous_sessions 0). */
    proto_record_t r = s_rec("erin", PRESENCE_ONLINE, "", 60);
    r.sessions = 1;
    r.source = PRESENCE_SRC_SESSION;
    ck_assert_uint_eq(notify_record_sessions(&r), 1);
    notify_plan(NULL, &r, 60, T0_US, 0, 1, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_ONLINE);
    ck_assert_int_eq(p.ev[1].type, NOTIFY_SESSION_START);
    ck_assert_uint_eq(p.ev[1].prev_sessions, 0);
    ck_assert_int_eq(p.ev[1].prev_status, PRESENCE_OFFLINE);
    notify_user_t u = s_state(&p);
    ck_assert_uint_eq(u.sessions, 1);
    /* A second device: session_start alone (the status stays online). */
    r.sessions = 2;
    r.version = 61;
    notify_plan(&u, &r, 61, T0_US, 0, 3, &p);
    ck_assert_uint_eq(p.n, 1);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_SESSION_START);
    ck_assert_uint_eq(p.ev[0].prev_sessions, 1);
    ck_assert_int_eq(p.ev[0].prev_status, PRESENCE_ONLINE);
    u = s_state(&p);
    /* The gateway's lease lapses: both sessions end in one change: offline and one session_end
     * whose previous_sessions says two ended. */
    r = s_rec("erin", PRESENCE_OFFLINE, "", 62);
    r.sessions = 0;
    notify_plan(&u, &r, 62, T0_US, 0, 4, &p);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_int_eq(p.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_int_eq(p.ev[1].type, NOTIFY_SESSION_END);
    ck_assert_uint_eq(p.ev[1].prev_sessions, 2);
    ck_assert_uint_eq(s_state(&p).sessions, 0);
    /* An expired record shows no sessions either (as readers see it). */
    r = s_rec("erin", PRESENCE_ONLINE, "", 63);
    r.sessions = 3;
    notify_user_t fresh;
    notify_user_from_record(&fresh, &r, r.expires_at_us + 1);
    ck_assert_int_eq(fresh.status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(fresh.sessions, 0);
}
END_TEST

START_TEST(test_plan_invisible_views)
{
    /* Invisible: preferred offline while 2 sessions are live. Everyone else sees offline with no
     * sessions; the user's own view keeps the count. */
    proto_record_t r = s_rec("ivy", PRESENCE_OFFLINE, "", 80);
    r.sessions = 2;
    r.source = PRESENCE_SRC_PREFERRED;
    r.pub_version = 70;
    r.vis_last_seen_us = T0_US - 1000000;
    r.rflags = PROTO_REC_F_RT | PROTO_REC_F_PUB_RT;
    ck_assert(proto_record_invisible(&r));
    proto_record_t pub;
    proto_record_public(&r, &pub);
    ck_assert_uint_eq(notify_record_sessions(&pub), 0);
    ck_assert_uint_eq(notify_record_sessions(&r), 2);
    /* From online with 2 sessions (both views equal): the public view goes offline and loses its
     * sessions; the own view goes offline and keeps them. */
    notify_user_t before;
    memset(&before, 0, sizeof before);
    before.status = PRESENCE_ONLINE;
    before.sessions = 2;
    before.version = 79;
    notify_plan_t pp, po;
    notify_plan(&before, &pub, 80, T0_US, 0, 1, &pp);
    notify_plan(&before, &r, 80, T0_US, 0, 1 + pp.n, &po);
    ck_assert_uint_eq(pp.n, 2);
    ck_assert_int_eq(pp.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_int_eq(pp.ev[1].type, NOTIFY_SESSION_END);
    ck_assert_uint_eq(pp.ev[1].prev_sessions, 2);
    ck_assert_uint_eq(po.n, 1);
    ck_assert_int_eq(po.ev[0].type, NOTIFY_OFFLINE);
    ck_assert_uint_eq(po.ev[0].seq, 3);
    /* Both states record the change applied (its id), not the public view's older version. */
    ck_assert_uint_eq(pp.next.version, 80);
    ck_assert_uint_eq(po.next.version, 80);
    /* The rendered record in each view: the public one hides the sessions. */
    gw_buf_t b;
    gw_buf_init(&b);
    pp.ev[0].view = NOTIFY_VIEW_PUBLIC;
    notify_event_render(&b, &pp.ev[0], "ivy", 3, &r, T0_US, 0);
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    json_t *rec = json_object_get(j, "record");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "version")), 70);
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "sessions")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 80);
    json_decref(j);
    gw_buf_reset(&b);
    po.ev[0].view = NOTIFY_VIEW_PRIVATE;
    notify_event_render(&b, &po.ev[0], "ivy", 3, &r, T0_US, 0);
    j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    rec = json_object_get(j, "record");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "version")), 80);
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "sessions")), 2);
    json_decref(j);
    /* A session event carries previous_sessions. */
    gw_buf_reset(&b);
    pp.ev[1].view = NOTIFY_VIEW_PUBLIC;
    notify_event_render(&b, &pp.ev[1], "ivy", 3, &r, T0_US, 0);
    j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "session_end");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "previous_sessions")), 2);
    json_decref(j);
    gw_buf_free(&b);
}
END_TEST

/* ==== encodings ============================================================================== */

START_TEST(test_user_encoding)
{
    notify_user_t u, v;
    memset(&u, 0, sizeof u);
    u.version = 123456789;
    u.pend_seq = 77;
    u.pend_until_ms = 1700000002000;
    u.sessions = 3;
    u.status = PRESENCE_AWAY;
    u.pend_prev = PRESENCE_BUSY;
    memcpy(u.message, "h\xc3\xa9llo", 6);
    u.msg_len = 6;
    unsigned char b[NOTIFY_USER_ENC_MAX];
    size_t n = notify_user_encode(&u, b);
    ck_assert_uint_eq(n, 34 + 6);
    ck_assert_int_eq(notify_user_decode(b, n, &v), 0);
    ck_assert_uint_eq(v.version, u.version);
    ck_assert_uint_eq(v.pend_seq, 77);
    ck_assert_uint_eq(v.pend_until_ms, u.pend_until_ms);
    ck_assert_uint_eq(v.sessions, 3);
    ck_assert_int_eq(v.status, PRESENCE_AWAY);
    ck_assert_int_eq(v.pend_prev, PRESENCE_BUSY);
    ck_assert_uint_eq(v.msg_len, 6);
    ck_assert_str_eq(v.message, "h\xc3\xa9llo");
    ck_assert_int_eq(notify_user_decode(b, n - 1, &v), -1); /* length disagrees */
    ck_assert_int_eq(notify_user_decode(b, 10, &v), -1);
    b[0] = 2;
    ck_assert_int_eq(notify_user_decode(b, n, &v), -1); /* another layout version */
    b[0] = 1;
    b[1] = 9;
    ck_assert_int_eq(notify_user_decode(b, n, &v), -1); /* no such status */
}
END_TEST

START_TEST(test_views_encoding)
{
    notify_views_t v, w;
    memset(&v, 0, sizeof v);
    v.pub.status = PRESENCE_ONLINE;
    v.pub.version = 5;
    memcpy(v.pub.message, "hey", 3);
    v.pub.msg_len = 3;
    v.own = v.pub;
    unsigned char b[NOTIFY_VIEWS_ENC_MAX];
    /* Equal views are stored once. */
    size_t n = notify_views_encode(&v, b);
    ck_assert_uint_eq(n, 2 + 34 + 3);
    ck_assert_int_eq(notify_views_decode(b, n, &w), 0);
    ck_assert(notify_user_same(&w.pub, &v.pub) && notify_user_same(&w.own, &v.own));
    ck_assert_int_eq(notify_views_decode(b, n + 1, &w), -1);
    /* Different views: both. */
    v.own.sessions = 2;
    v.own.status = PRESENCE_OFFLINE;
    n = notify_views_encode(&v, b);
    ck_assert_uint_eq(n, 2 + 2 * (34 + 3));
    ck_assert_int_eq(notify_views_decode(b, n, &w), 0);
    ck_assert_uint_eq(w.own.sessions, 2);
    ck_assert_int_eq(w.own.status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(w.pub.sessions, 0);
    ck_assert_int_eq(notify_views_decode(b, n - 1, &w), -1);
    b[1] = 0x80; /* unknown flag */
    ck_assert_int_eq(notify_views_decode(b, n, &w), -1);
    /* A state written before views existed (layout 1) is both views. */
    n = notify_user_encode(&v.pub, b);
    ck_assert_int_eq(notify_views_decode(b, n, &w), 0);
    ck_assert(notify_user_same(&w.pub, &v.pub) && notify_user_same(&w.own, &v.pub));
}
END_TEST

START_TEST(test_render)
{
    proto_record_t r = s_rec("alice", PRESENCE_ONLINE, "hi \"there\"", 7);
    notify_event_t e = {.seq = 1, .id = 7, .type = NOTIFY_ONLINE, .prev_status = PRESENCE_OFFLINE};
    gw_buf_t b;
    gw_buf_init(&b);
    notify_event_render(&b, &e, "alice", 5, &r, T0_US + 1000000, 0);
    const char *want =
        "{\"id\":7,\"type\":\"online\",\"user_id\":\"alice\",\"record\":{\"user_id\":\"alice\",\"status\":\"online\","
        "\"message\":\"hi \\\"there\\\"\",\"last_seen\":\"2023-11-14T22:13:20.000000Z\",\"updated_at\":"
        "\"2023-11-14T22:13:20.000000Z\",\"expires_at\":\"2023-11-14T23:13:20.000000Z\",\"node_id\":\"n1\",\"ttl\":3600,"
        "\"version\":7},\"previous_status\":\"offline\",\"at\":\"2023-11-14T22:13:20.000000Z\"}";
    ck_assert_uint_eq(b.len, strlen(want));
    ck_assert(memcmp(b.p, want, b.len) == 0);
    /* The record part is exactly the REST rendering. */
    gw_buf_t rest;
    gw_buf_init(&rest);
    gw_json_record(&rest, &r, T0_US + 1000000);
    ck_assert_ptr_nonnull(memmem(b.p, b.len, rest.p, rest.len));
    gw_buf_free(&rest);

    /* A delete: record null, at = the time given. */
    gw_buf_reset(&b);
    e.type = NOTIFY_OFFLINE;
    e.prev_status = PRESENCE_BUSY;
    e.id = 9;
    notify_event_render(&b, &e, "bob", 3, NULL, T0_US, T0_US + 500000);
    const char *want_del = "{\"id\":9,\"type\":\"offline\",\"user_id\":\"bob\",\"record\":null,\"previous_status\":\"busy\","
                           "\"at\":\"2023-11-14T22:13:20.500000Z\"}";
    ck_assert_uint_eq(b.len, strlen(want_del));
    ck_assert(memcmp(b.p, want_del, b.len) == 0);

    /* An expired record is rendered offline (as GET shows it) and `at` is its expires_at. */
    gw_buf_reset(&b);
    e.type = NOTIFY_OFFLINE;
    notify_event_render(&b, &e, "alice", 5, &r, r.expires_at_us + 1, 0);
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "record"), "status")), "offline");
    ck_assert_ptr_null(json_object_get(json_object_get(j, "record"), "message"));
    ck_assert_str_eq(json_string_value(json_object_get(j, "at")), "2023-11-14T23:13:20.000000Z");
    json_decref(j);
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_entry_encoding)
{
    notify_event_t e = {.seq = 5, .id = 99, .visible_at_ms = 1234, .type = NOTIFY_STATUS, .prev_status = 1,
                        .view = NOTIFY_VIEW_PRIVATE};
    gw_buf_t b;
    gw_buf_init(&b);
    notify_entry_encode(&b, &e, 5678, "{\"x\":1}", 7);
    ck_assert_uint_eq(b.len, NOTIFY_ENTRY_HDR + 7);
    notify_entry_t d;
    ck_assert_int_eq(notify_entry_decode(b.p, b.len, &d), 0);
    ck_assert_uint_eq(d.id, 99);
    ck_assert_uint_eq(d.visible_at_ms, 1234);
    ck_assert_uint_eq(d.appended_ms, 5678);
    ck_assert_int_eq(d.type, NOTIFY_STATUS);
    ck_assert_int_eq(d.view, NOTIFY_VIEW_PRIVATE);
    ck_assert_uint_eq(d.json_len, 7);
    ck_assert(memcmp(d.json, "{\"x\":1}", 7) == 0);
    ck_assert_int_eq(notify_entry_decode(b.p, b.len - 1, &d), -1);
    ck_assert_int_eq(notify_entry_decode(b.p, 8, &d), -1);
    b.p[3] = 3; /* no such view */
    ck_assert_int_eq(notify_entry_decode(b.p, b.len, &d), -1);
    b.p[3] = 0;
    b.p[1] = NOTIFY_TYPE_COUNT;
    ck_assert_int_eq(notify_entry_decode(b.p, b.len, &d), -1);
    gw_buf_free(&b);
    unsigned char k[8];
    notify_be64_put(k, 0x0102030405060708ull);
    ck_assert_uint_eq(k[0], 1);
    ck_assert_uint_eq(k[7], 8);
    ck_assert_uint_eq(notify_be64_get(k), 0x0102030405060708ull);
}
END_TEST

/* ==== batches ================================================================================ */

static notify_entry_t s_entry(uint64_t seq, int type, const char *json, uint64_t visible_at)
{
    notify_entry_t e = {.seq = seq, .id = seq * 10, .type = (uint8_t)type, .json = json,
                        .json_len = (uint32_t)strlen(json), .visible_at_ms = visible_at, .appended_ms = 1000 + seq};
    return e;
}

START_TEST(test_batch_views)
{
    notify_batch_t b;
    notify_batch_init(&b);
    uint32_t ordinary = NOTIFY_MASK_ALL, privileged = NOTIFY_MASK_ALL | NOTIFY_MASK_PRIVILEGED;
    notify_entry_t all = s_entry(11, NOTIFY_ONLINE, "{\"a\":1}", 0);
    notify_entry_t pub = s_entry(12, NOTIFY_OFFLINE, "{\"p\":1}", 0);
    pub.view = NOTIFY_VIEW_PUBLIC;
    notify_entry_t own = s_entry(13, NOTIFY_OFFLINE, "{\"o\":1}", 0);
    own.view = NOTIFY_VIEW_PRIVATE;
    notify_batch_begin(&b, 10, 10, 1 << 20, 2000);
    ck_assert_int_eq(notify_batch_offer(&b, ordinary, &all, 5000), NOTIFY_TAKEN);
    ck_assert_int_eq(notify_batch_offer(&b, ordinary, &pub, 5000), NOTIFY_TAKEN);
    ck_assert_int_eq(notify_batch_offer(&b, ordinary, &own, 5000), NOTIFY_SKIPPED);
    notify_batch_end(&b);
    ck_assert_uint_eq(b.body.len, 17);
    ck_assert(memcmp(b.body.p, "[{\"a\":1},{\"p\":1}]", 17) == 0);
    ck_assert_uint_eq(b.last_seq, 13);
    notify_batch_begin(&b, 10, 10, 1 << 20, 2000);
    ck_assert_int_eq(notify_batch_offer(&b, privileged, &all, 5000), NOTIFY_TAKEN);
    ck_assert_int_eq(notify_batch_offer(&b, privileged, &pub, 5000), NOTIFY_SKIPPED);
    ck_assert_int_eq(notify_batch_offer(&b, privileged, &own, 5000), NOTIFY_TAKEN);
    notify_batch_end(&b);
    ck_assert_uint_eq(b.body.len, 17);
    ck_assert(memcmp(b.body.p, "[{\"a\":1},{\"o\":1}]", 17) == 0);
    /* A held entry of the other view does not stop a target. */
    pub.visible_at_ms = 6000;
    notify_batch_begin(&b, 11, 10, 1 << 20, 2000);
    ck_assert_int_eq(notify_batch_offer(&b, privileged, &pub, 5000), NOTIFY_SKIPPED);
    ck_assert_int_eq(notify_batch_offer(&b, ordinary, &pub, 5000), NOTIFY_HELD);
    notify_batch_fini(&b);
}
END_TEST

START_TEST(test_batch_fill)
{
    notify_batch_t b;
    notify_batch_init(&b);
    uint32_t mask = 1u << NOTIFY_ONLINE | 1u << NOTIFY_OFFLINE;
    notify_batch_begin(&b, 10, 3, 1 << 20, 2000);
    notify_entry_t e = s_entry(11, NOTIFY_ONLINE, "{\"a\":1}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_TAKEN);
    e = s_entry(12, NOTIFY_MESSAGE, "{\"m\":1}", 0); /* not wanted: covered, not sent */
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_SKIPPED);
    e = s_entry(13, NOTIFY_OFFLINE, "{\"b\":2}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_TAKEN);
    e = s_entry(14, NOTIFY_ONLINE, "{\"c\":3}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_TAKEN);
    e = s_entry(15, NOTIFY_ONLINE, "{\"d\":4}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_FULL); /* 3 events */
    notify_batch_end(&b);
    ck_assert_uint_eq(b.n, 3);
    ck_assert_uint_eq(b.last_seq, 14);
    ck_assert_uint_eq(b.first_id, 110);
    ck_assert_uint_eq(b.last_id, 140);
    ck_assert_uint_eq(b.oldest_ms, 1011);
    ck_assert_uint_eq(b.body.len, strlen("[{\"a\":1},{\"b\":2},{\"c\":3}]"));
    ck_assert(memcmp(b.body.p, "[{\"a\":1},{\"b\":2},{\"c\":3}]", b.body.len) == 0);

    /* Bytes: "[" + 7 + "," + 7 + "]" = 17 fits 17, a third does not. */
    notify_batch_begin(&b, 0, 100, 17, 2000);
    e = s_entry(1, NOTIFY_ONLINE, "{\"a\":1}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, NOTIFY_MASK_ALL, &e, 0), NOTIFY_TAKEN);
    e = s_entry(2, NOTIFY_ONLINE, "{\"b\":2}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, NOTIFY_MASK_ALL, &e, 0), NOTIFY_TAKEN);
    e = s_entry(3, NOTIFY_ONLINE, "{\"c\":3}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, NOTIFY_MASK_ALL, &e, 0), NOTIFY_FULL);
    /* A first event larger than the bound still goes, alone. */
    notify_batch_begin(&b, 0, 100, 4, 2000);
    e = s_entry(1, NOTIFY_ONLINE, "{\"a\":1}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, NOTIFY_MASK_ALL, &e, 0), NOTIFY_TAKEN);
    e = s_entry(2, NOTIFY_ONLINE, "{}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, NOTIFY_MASK_ALL, &e, 0), NOTIFY_FULL);

    /* Held (debounce): a wanted held entry stops the batch; an unwanted one is passed over. */
    notify_batch_begin(&b, 0, 100, 1 << 20, 2000);
    e = s_entry(1, NOTIFY_ONLINE, "{\"a\":1}", 0);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_TAKEN);
    e = s_entry(2, NOTIFY_OFFLINE, "{\"o\":1}", 6000);
    ck_assert_int_eq(notify_batch_offer(&b, 1u << NOTIFY_ONLINE, &e, 5000), NOTIFY_SKIPPED);
    e = s_entry(3, NOTIFY_OFFLINE, "{\"o\":2}", 6000);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_HELD);
    ck_assert_uint_eq(b.held_until_ms, 6000);
    ck_assert_uint_eq(b.last_seq, 2);
    ck_assert_uint_eq(b.n, 1);
    /* ... and is taken once its time has come. */
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 6000), NOTIFY_TAKEN);
    /* A hold further away than the debounce (the clock went back) is over. */
    e = s_entry(4, NOTIFY_OFFLINE, "{\"o\":3}", 5000 + 2001);
    ck_assert_int_eq(notify_batch_offer(&b, mask, &e, 5000), NOTIFY_TAKEN);
    notify_batch_fini(&b);
}
END_TEST

/* ==== delivery state ========================================================================= */

START_TEST(test_target_results)
{
    notify_policy_t pol = {.backoff_min_ms = 100, .backoff_max_ms = 1000};
    notify_target_t t;
    notify_target_init(&t, 10, 50);
    ck_assert_int_eq(t.phase, NOTIFY_IDLE);
    notify_target_sent(&t, 20, 8);
    ck_assert_int_eq(t.phase, NOTIFY_INFLIGHT);
    /* 500: retry, cursor unchanged, backoff within [1, 100] for the first attempt. */
    ck_assert_int_eq(notify_target_result(&t, &pol, 500, 0, 99, 1000, 12345, 50), NOTIFY_RETRY);
    ck_assert_uint_eq(t.cursor, 10);
    ck_assert_int_eq(t.phase, NOTIFY_BACKOFF);
    ck_assert_uint_eq(t.attempt, 1);
    ck_assert_uint_eq(t.retry_at_ms, 1000 + 1 + 12345 % 100);
    ck_assert(!t.dirty);
    /* transport failure: retry, attempt 2. */
    notify_target_sent(&t, 20, 8);
    ck_assert_int_eq(notify_target_result(&t, &pol, 0, 0, 99, 2000, 7, 50), NOTIFY_RETRY);
    ck_assert_uint_eq(t.attempt, 2);
    /* 429 with Retry-After 5 s: at least min(5000, max 1000) = 1000 ms. */
    notify_target_sent(&t, 20, 8);
    ck_assert_int_eq(notify_target_result(&t, &pol, 429, 5, 99, 3000, 0, 50), NOTIFY_RETRY);
    ck_assert_uint_eq(t.retry_at_ms, 4000);
    /* 408 is retried too. */
    notify_target_sent(&t, 20, 8);
    ck_assert_int_eq(notify_target_result(&t, &pol, 408, 0, 99, 3000, 0, 50), NOTIFY_RETRY);
    /* 200: acked, cursor moves to the batch's end, counters. */
    notify_target_sent(&t, 20, 8);
    ck_assert_int_eq(notify_target_result(&t, &pol, 204, 0, 99, 4000, 0, 50), NOTIFY_ACKED);
    ck_assert_uint_eq(t.cursor, 20);
    ck_assert_uint_eq(t.acked_id, 99);
    ck_assert_int_eq(t.phase, NOTIFY_IDLE);
    ck_assert_uint_eq(t.attempt, 0);
    ck_assert(t.dirty);
    ck_assert_uint_eq(t.delivered_events, 8);
    ck_assert_uint_eq(t.delivered_batches, 1);
    ck_assert_uint_eq(t.failures, 4);
    ck_assert_uint_eq(t.retries, 4);
    /* 404: dropped (the default), cursor passes the batch. */
    notify_target_sent(&t, 30, 5);
    ck_assert_int_eq(notify_target_result(&t, &pol, 404, 0, 120, 5000, 0, 50), NOTIFY_DROPPED);
    ck_assert_uint_eq(t.cursor, 30);
    ck_assert_uint_eq(t.dropped_events, 5);
    ck_assert_uint_eq(t.dropped_batches, 1);
    /* 301 (not followed) is treated like a 4xx. */
    notify_target_sent(&t, 31, 1);
    ck_assert_int_eq(notify_target_result(&t, &pol, 301, 0, 121, 5000, 0, 50), NOTIFY_DROPPED);
    /* With WEBHOOK_ON_4XX=retry, a 4xx is retried. */
    notify_policy_t keep = pol;
    keep.retry_4xx = true;
    notify_target_sent(&t, 40, 5);
    ck_assert_int_eq(notify_target_result(&t, &keep, 400, 0, 130, 5000, 0, 50), NOTIFY_RETRY);
    ck_assert_uint_eq(t.cursor, 31);
    /* 413 with 8 events: split in half, no backoff; with one event: dropped. */
    notify_target_sent(&t, 40, 8);
    ck_assert_int_eq(notify_target_result(&t, &pol, 413, 0, 130, 5000, 0, 50), NOTIFY_SPLIT);
    ck_assert_uint_eq(t.batch_limit, 4);
    ck_assert_int_eq(t.phase, NOTIFY_IDLE);
    notify_target_sent(&t, 33, 1);
    ck_assert_int_eq(notify_target_result(&t, &pol, 413, 0, 130, 5000, 0, 50), NOTIFY_DROPPED);
    /* Success restores the batch size. */
    notify_target_sent(&t, 40, 4);
    ck_assert_int_eq(notify_target_result(&t, &pol, 200, 0, 130, 5000, 0, 50), NOTIFY_ACKED);
    ck_assert_uint_eq(t.batch_limit, 50);

    /* Skips and the log's floor. */
    notify_target_skip(&t, 45);
    ck_assert_uint_eq(t.cursor, 45);
    notify_target_skip(&t, 44); /* never backwards */
    ck_assert_uint_eq(t.cursor, 45);
    ck_assert_uint_eq(notify_target_catch_floor(&t, 46), 0);
    ck_assert_uint_eq(notify_target_catch_floor(&t, 100), 54);
    ck_assert_uint_eq(t.cursor, 99);
    ck_assert_uint_eq(t.gaps, 1);
    ck_assert_uint_eq(t.gap_entries, 54);
}
END_TEST

START_TEST(test_backoff)
{
    notify_policy_t pol = {.backoff_min_ms = 100, .backoff_max_ms = 1000};
    /* The ceiling doubles per attempt up to the cap; values are uniform in [1, ceiling]. */
    uint64_t ceil[] = {100, 100, 200, 400, 800, 1000, 1000};
    for (uint32_t a = 1; a <= 6; a++) {
        ck_assert_uint_eq(notify_backoff_ms(&pol, a, ceil[a] - 1), ceil[a]);
        ck_assert_uint_eq(notify_backoff_ms(&pol, a, ceil[a]), 1);
        ck_assert_uint_eq(notify_backoff_ms(&pol, a, 0), 1);
    }
    ck_assert_uint_le(notify_backoff_ms(&pol, 4000000000u, UINT64_MAX), 1000);
    ck_assert(notify_over_bound(101, 100, 0, 0, 0));
    ck_assert(!notify_over_bound(100, 100, 0, 0, 0));
    ck_assert(notify_over_bound(1, 100, 1000, 500, 1501));
    ck_assert(!notify_over_bound(1, 100, 1000, 500, 1500));
    ck_assert(!notify_over_bound(1, 100, 1000, 0, 999999));
}
END_TEST

/* ==== signing ================================================================================ */

START_TEST(test_sign)
{
    /* python3: hmac.new(b"whsec-0123456789abcdef", b'1700000000.[{"id":1}]', sha256).hexdigest() */
    char hex[NOTIFY_SIG_HEX + 1];
    const char *key = "whsec-0123456789abcdef", *body = "[{\"id\":1}]";
    ck_assert_int_eq(notify_sign(key, strlen(key), 1700000000, body, strlen(body), hex), 0);
    ck_assert_str_eq(hex, "01ea4619c3480ae9c923f328ca419a0a6a5f97c0464e839faba65d18570a63c7");
    char h[160];
    ck_assert_int_eq(notify_sign_header(key, strlen(key), 1700000000, body, strlen(body), h, sizeof h), 0);
    ck_assert_str_eq(h, "X-Presence-Signature: t=1700000000,v1="
                        "01ea4619c3480ae9c923f328ca419a0a6a5f97c0464e839faba65d18570a63c7");
    ck_assert_int_eq(notify_sign_header(key, strlen(key), 1700000000, body, strlen(body), h, 40), -1);
    unsigned char k[32];
    ck_assert_int_eq(notify_key("https://a.example/hook", 22, k), 0);
    ck_assert_uint_eq(k[0], 0x72);
    ck_assert_uint_eq(k[31], 0x78);
}
END_TEST

/* ==== configuration ========================================================================== */

START_TEST(test_cfg_targets)
{
    static notify_cfg_t c;
    char err[CFG_ERR_LEN];
    const char *sec = "0123456789abcdef";
    ck_assert_int_eq(notify_cfg_targets(&c, "https://user:pw@a.example/x/y?token=z, http://b:8080/h", sec,
                                        "WEBHOOK_SECRETS", NULL, err),
                     0);
    ck_assert_uint_eq(c.ntargets, 2);
    ck_assert_str_eq(c.targets[0].url, "https://user:pw@a.example/x/y?token=z");
    ck_assert_str_eq(c.targets[0].shown, "https://a.example/x/y");
    ck_assert_str_eq(c.targets[1].url, "http://b:8080/h");
    ck_assert_str_eq(c.targets[1].shown, "http://b:8080/h");
    ck_assert_str_eq(c.targets[1].secret, sec); /* one secret for all */
    ck_assert_uint_eq(c.targets[0].mask, NOTIFY_MASK_ALL);

    /* Per-index secrets (a file's newline list) and filters. */
    ck_assert_int_eq(notify_cfg_targets(&c, "http://a/1,http://a/2", "secret-one-0123456\nsecret-two-0123456\n",
                                        "WEBHOOK_SECRETS_FILE", "online+offline,*", err),
                     0);
    ck_assert_str_eq(c.targets[0].secret, "secret-one-0123456");
    ck_assert_str_eq(c.targets[1].secret, "secret-two-0123456");
    ck_assert_uint_eq(c.targets[0].mask, 1u << NOTIFY_ONLINE | 1u << NOTIFY_OFFLINE);
    ck_assert_uint_eq(c.targets[1].mask, NOTIFY_MASK_ALL);
    ck_assert_int_eq(notify_cfg_targets(&c, "http://a/1,http://a/2", sec, "WEBHOOK_SECRETS", "status+message", err), 0);
    ck_assert_uint_eq(c.targets[1].mask, 1u << NOTIFY_STATUS | 1u << NOTIFY_MESSAGE);

    struct {
        const char *urls, *secrets, *events, *want;
    } bad[] = {
        {"", sec, NULL, "WEBHOOK_URLS: required"},
        {"ftp://a/x", sec, NULL, "WEBHOOK_URLS: item 1 'ftp://a/x' is not an http:// or https:// URL"},
        {"http://a/x,", sec, NULL, "WEBHOOK_URLS: item 2 is empty"},
        {"http:///x", sec, NULL, "WEBHOOK_URLS: item 1 has no host"},
        {"http://a/x y", sec, NULL, "WEBHOOK_URLS: item 1 has a character a URL may not hold at offset 10"},
        {"http://a/x#f", sec, NULL, "WEBHOOK_URLS: item 1 has a fragment ('#'), which is never sent"},
        {"http://a/x,http://a/x", sec, NULL, "WEBHOOK_URLS: items 1 and 2 are the same URL"},
        {"http://a/x", "", NULL, "WEBHOOK_SECRETS: required"},
        {"http://a/x", "short", NULL, "WEBHOOK_SECRETS: item 1 is 5 bytes (want 16..256)"},
        {"http://a/x,http://a/y,http://a/z", "0123456789abcdef,0123456789abcdef", NULL,
         "WEBHOOK_SECRETS: 2 secrets for 3 URLs"},
        {"http://a/x", sec, "online+bogus", "WEBHOOK_EVENTS: item 1: unknown event type 'bogus'"},
        {"http://a/x", sec, "online+", "WEBHOOK_EVENTS: item 1: unknown event type ''"},
        {"http://a/x,http://a/y,http://a/z", sec, "all,all", "WEBHOOK_EVENTS: 2 filters for 3 URLs"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        ck_assert_int_eq(notify_cfg_targets(&c, bad[i].urls, bad[i].secrets, "WEBHOOK_SECRETS", bad[i].events, err), -1);
        ck_assert_msg(strncmp(err, bad[i].want, strlen(bad[i].want)) == 0, "case %zu: got '%s', want '%s...'", i, err,
                      bad[i].want);
        ck_assert_ptr_null(strstr(err, "0123456789abcdef")); /* secrets never echoed */
    }
    /* 17 URLs */
    char many[17 * 16] = "";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://a/%d", i ? "," : "", i);
    ck_assert_int_eq(notify_cfg_targets(&c, many, sec, "WEBHOOK_SECRETS", NULL, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_URLS: 17 URLs (at most 16)");
}
END_TEST

START_TEST(test_cfg_env)
{
    static notify_cfg_t c;
    char err[CFG_ERR_LEN];
    setenv("WEBHOOK_URLS", "http://127.0.0.1:9/x", 1);
    setenv("WEBHOOK_SECRETS", "0123456789abcdef", 1);
    setenv("DATA_DIR", "/tmp/d", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), 0);
    ck_assert_uint_eq(c.debounce_ms, 2000);
    ck_assert_uint_eq(c.batch_max, 500);
    ck_assert_str_eq(c.endpoint, "ipc:///tmp/d/run/notifier.sock");
    ck_assert_str_eq(c.store_pub, "ipc:///tmp/d/run/store-pub.sock");
    ck_assert(!c.retry_4xx);
    setenv("WEBHOOK_DEBOUNCE_MS", "3s", 1);
    setenv("WEBHOOK_ON_4XX", "retry", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), 0);
    ck_assert_uint_eq(c.debounce_ms, 3000);
    ck_assert(c.retry_4xx);
    ck_assert(!c.any_privileged);
    setenv("WEBHOOK_PRIVILEGED", "yes", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_PRIVILEGED: item 1 'yes' is not true or false");
    setenv("WEBHOOK_PRIVILEGED", "true", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), 0);
    ck_assert(c.any_privileged);
    ck_assert(c.targets[0].mask & NOTIFY_MASK_PRIVILEGED);
    setenv("WEBHOOK_PRIVILEGED", "false,true", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_PRIVILEGED: 2 items for 1 URLs (want one for all, or one per URL)");
    unsetenv("WEBHOOK_PRIVILEGED");
    setenv("WEBHOOK_BATCH_MAX", "0", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_BATCH_MAX: invalid value '0' (want an integer in 1..10000)");
    unsetenv("WEBHOOK_BATCH_MAX");
    setenv("WEBHOOK_SECRETS_FILE", "/nonexistent", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_SECRETS_FILE: set together with WEBHOOK_SECRETS (use one)");
    unsetenv("WEBHOOK_SECRETS");
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_SECRETS_FILE: cannot read /nonexistent: No such file or directory");
    unsetenv("WEBHOOK_SECRETS_FILE");
    setenv("WEBHOOK_LOG_MAX_BYTES", "10000000000", 1);
    ck_assert_int_eq(notify_cfg_load(&c, err), -1);
    ck_assert_str_eq(err, "WEBHOOK_LOG_MAX_BYTES: 10000000000 does not fit NOTIFIER_MAP_MAX_MB=16384 (want a map of at "
                          "least twice the log plus 64 MiB)");
}
END_TEST

/* ==== LMDB =================================================================================== */

static char s_dir[64];

static notify_db_t *s_db_open(uint64_t map_mb, uint64_t max_mb)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/check-notify-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s_dir));
    char path[128], err[CFG_ERR_LEN];
    snprintf(path, sizeof path, "%s/db", s_dir);
    notify_db_t *db;
    ck_assert_msg(notify_db_open(&db, path, map_mb, max_mb, err) == 0, "%s", err);
    return db;
}

static void s_db_close(notify_db_t **db)
{
    notify_db_close(db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", s_dir);
    ck_assert_int_eq(system(cmd), 0);
}

typedef struct scan {
    uint64_t seqs[16];
    int n, stop_at;
} scan_t;

static int on_scan(void *ctx, const notify_entry_t *e)
{
    scan_t *s = ctx;
    s->seqs[s->n++] = e->seq;
    return s->n == s->stop_at;
}

static int on_range(void *ctx, const char *uid, size_t len, const notify_views_t *u)
{
    char *seen = ctx;
    strncat(seen, uid, len);
    strcat(seen, u ? "," : "?,");
    return len == 1 && uid[0] == 'c' ? 1 : 0; /* delete "c" */
}

static int on_snap(void *ctx, uint64_t version, const char *uid, size_t len, const void *val, size_t vlen)
{
    char *seen = ctx;
    snprintf(seen + strlen(seen), 256 - strlen(seen), "%llu:%.*s:%zu,", (unsigned long long)version, (int)len, uid,
             vlen);
    return 0;
}

START_TEST(test_db_log_users_cursors)
{
    notify_db_t *db = s_db_open(8, 64);
    ck_assert_int_eq(notify_db_begin(db), 0);
    notify_meta_t m;
    ck_assert_int_eq(notify_db_meta_get(db, &m), 0);
    ck_assert_uint_eq(m.next_seq, 1);
    ck_assert(!m.baseline);
    gw_buf_t b;
    gw_buf_init(&b);
    for (uint64_t s = 1; s <= 5; s++) {
        notify_event_t e = {.seq = s, .id = 100 + s, .type = NOTIFY_ONLINE};
        notify_entry_encode(&b, &e, 1000 + s, "{}", 2);
        ck_assert_int_eq(notify_db_log_append(db, s, b.p, b.len), 0);
    }
    size_t len;
    ck_assert_int_eq(notify_db_log_del(db, 3, &len), 0);
    ck_assert_uint_eq(len, NOTIFY_ENTRY_HDR + 2);
    ck_assert_int_eq(notify_db_log_del(db, 3, &len), MDB_NOTFOUND);
    m.next_seq = 6;
    m.baseline = true;
    m.log_bytes = 4 * len;
    m.pos_epoch = 77;
    m.pos_seq = 4242;
    ck_assert_int_eq(notify_db_meta_put(db, &m), 0);
    ck_assert_int_eq(notify_db_commit(db), 0);

    /* Scans run in a read transaction of their own when no write is active. */
    scan_t sc = {.stop_at = 0};
    uint64_t bad = 0;
    ck_assert_int_eq(notify_db_log_scan(db, 1, on_scan, &sc, &bad), 0);
    ck_assert_int_eq(sc.n, 3);
    ck_assert_uint_eq(sc.seqs[0], 2);
    ck_assert_uint_eq(sc.seqs[1], 4);
    ck_assert_uint_eq(sc.seqs[2], 5);
    sc = (scan_t){.stop_at = 1};
    ck_assert_int_eq(notify_db_log_scan(db, 0, on_scan, &sc, &bad), 0);
    ck_assert_int_eq(sc.n, 1);
    ck_assert_uint_eq(bad, 0);

    ck_assert_int_eq(notify_db_begin(db), 0);
    ck_assert_int_eq(notify_db_meta_get(db, &m), 0);
    ck_assert_uint_eq(m.next_seq, 6);
    ck_assert(m.baseline);
    ck_assert_uint_eq(m.pos_epoch, 77);
    ck_assert_uint_eq(m.pos_seq, 4242);
    uint64_t seq, appended;
    ck_assert_int_eq(notify_db_log_first(db, &seq, &appended, &len), 0);
    ck_assert_uint_eq(seq, 1);
    ck_assert_uint_eq(appended, 1001);

    /* users: put, get, range with a delete in the middle of the walk */
    const char *ids[] = {"a", "b", "c", "d", "e"};
    notify_views_t u;
    memset(&u, 0, sizeof u);
    u.pub.status = u.own.status = PRESENCE_ONLINE;
    u.own.sessions = 1;
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(notify_db_user_put(db, ids[i], 1, &u), 0);
    bool found;
    memset(&u, 0, sizeof u);
    ck_assert_int_eq(notify_db_user_get(db, "b", 1, &u, &found), 0);
    ck_assert(found);
    ck_assert_uint_eq(u.own.sessions, 1);
    ck_assert_uint_eq(u.pub.sessions, 0);
    ck_assert_int_eq(u.pub.status, PRESENCE_ONLINE);
    ck_assert_int_eq(notify_db_user_get(db, "zz", 2, &u, &found), 0);
    ck_assert(!found);
    char seen[256] = "";
    ck_assert_int_eq(notify_db_user_range(db, "a", 1, "e", 1, on_range, seen), 0);
    ck_assert_str_eq(seen, "b,c,d,");
    ck_assert_int_eq(notify_db_user_get(db, "c", 1, &u, &found), 0);
    ck_assert(!found);
    seen[0] = '\0';
    ck_assert_int_eq(notify_db_user_range(db, "", 0, NULL, 0, on_range, seen), 0);
    ck_assert_str_eq(seen, "a,b,d,e,");
    seen[0] = '\0';
    ck_assert_int_eq(notify_db_user_range(db, "b", 1, NULL, 0, on_range, seen), 0);
    ck_assert_str_eq(seen, "d,e,");
    ck_assert_int_eq(notify_db_user_del(db, "a", 1), 0);
    ck_assert_int_eq(notify_db_user_del(db, "a", 1), 0); /* absent is fine */

    /* cursors: keep only the configured ones */
    unsigned char k[3][32];
    memset(k, 0, sizeof k);
    k[0][0] = 1;
    k[1][0] = 2;
    k[2][0] = 3;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(notify_db_cursor_put(db, k[i], 10 + i, 20 + i), 0);
    uint32_t removed;
    ck_assert_int_eq(notify_db_cursor_keep(db, (const unsigned char(*)[32])k + 1, 1, &removed), 0);
    ck_assert_uint_eq(removed, 2);
    uint64_t cur, acked;
    ck_assert_int_eq(notify_db_cursor_get(db, k[1], &cur, &acked, &found), 0);
    ck_assert(found);
    ck_assert_uint_eq(cur, 11);
    ck_assert_uint_eq(acked, 21);
    ck_assert_int_eq(notify_db_cursor_get(db, k[0], &cur, &acked, &found), 0);
    ck_assert(!found);

    /* staging: version order, then user id; delete; clear */
    ck_assert_int_eq(notify_db_snap_put(db, 9, "x", 1, "ab", 2), 0);
    ck_assert_int_eq(notify_db_snap_put(db, UINT64_MAX, "a", 1, "d", 1), 0);
    ck_assert_int_eq(notify_db_snap_put(db, 7, "y", 1, "abc", 3), 0);
    ck_assert_int_eq(notify_db_snap_put(db, 7, "b", 1, "", 0), 0);
    seen[0] = '\0';
    ck_assert_int_eq(notify_db_snap_each(db, on_snap, seen), 0);
    ck_assert_str_eq(seen, "7:b:0,7:y:3,9:x:2,18446744073709551615:a:1,");
    ck_assert_int_eq(notify_db_snap_del(db, UINT64_MAX, "a", 1), 0);
    ck_assert_int_eq(notify_db_snap_del(db, UINT64_MAX, "a", 1), 0);
    ck_assert_int_eq(notify_db_snap_clear(db), 0);
    seen[0] = '\0';
    ck_assert_int_eq(notify_db_snap_each(db, on_snap, seen), 0);
    ck_assert_str_eq(seen, "");
    ck_assert_int_eq(notify_db_commit(db), 0);
    gw_buf_free(&b);
    s_db_close(&db);
}
END_TEST

START_TEST(test_db_map_growth)
{
    /* An 8 MiB map filled with 32 KiB entries: MAP_FULL mid-transaction, then grow and redo;
     * notify_db_reserve keeps the used part below half. */
    notify_db_t *db = s_db_open(8, 64);
    static char blob[32768];
    memset(blob, 'x', sizeof blob);
    uint64_t seq = 1;
    int rc = 0;
    ck_assert_int_eq(notify_db_begin(db), 0);
    for (; seq < 1000 && rc == 0; seq++)
        rc = notify_db_log_append(db, seq, blob, sizeof blob);
    ck_assert_int_eq(rc, MDB_MAP_FULL);
    notify_db_abort(db);
    uint64_t before = notify_db_map_bytes(db);
    ck_assert_int_eq(notify_db_grow(db), 0);
    ck_assert_uint_eq(notify_db_map_bytes(db), 2 * before);
    ck_assert_int_eq(notify_db_begin(db), 0);
    for (seq = 1; seq <= 300; seq++)
        ck_assert_int_eq(notify_db_log_append(db, seq, blob, sizeof blob), 0);
    ck_assert_int_eq(notify_db_commit(db), 0);
    ck_assert_int_eq(notify_db_reserve(db), 0);
    ck_assert_uint_ge(notify_db_map_bytes(db), 2 * 300 * sizeof blob);
    /* The maximum holds. */
    while (notify_db_grow(db) == 0)
        ;
    ck_assert_uint_eq(notify_db_map_bytes(db), 64u << 20);
    s_db_close(&db);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("notify");
    struct {
        const char *name;
        const TTest *tests[8];
    } cases[] = {
        {"types", {test_type_names}},
        {"plan",
         {test_plan_transitions, test_plan_effective_status, test_plan_delete, test_plan_debounce,
          test_plan_sessions, test_plan_invisible_views}},
        {"encoding", {test_user_encoding, test_views_encoding, test_render, test_entry_encoding}},
        {"batch", {test_batch_fill, test_batch_views}},
        {"target", {test_target_results, test_backoff}},
        {"sign", {test_sign}},
        {"cfg", {test_cfg_targets, test_cfg_env}},
        {"db", {test_db_log_users_cursors, test_db_map_growth}},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 30);
        for (size_t j = 0; j < 8 && cases[i].tests[j]; j++)
            tcase_add_test(tc, cases[i].tests[j]);
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
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
