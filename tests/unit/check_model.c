/* check_model.c -- the presence model (store-node/store_model.c): preferred status, sessions and
 * their precedence, leases, message expiry, invisible mode, and what readers are told.
 *
 * Pure functions over a store_user_t: no LMDB here (check_store.c drives the same rules through
 * the store). Each test builds a user, applies commands at chosen times and checks the record. */
#include "store_model.h"
#include "util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000000000ULL
#define SEC 1000000ULL

static const sm_config_t CFG = {.max_sessions = 4, .retention_us = 3600 * SEC, .default_ttl_s = 60};

static store_user_t *s_user(void)
{
    store_user_t *u = calloc(1, sizeof *u);
    sm_user_init(u, "alice", 5);
    sm_user_loaded(u, T0);
    return u;
}

/* The store's "next transaction": what was written becomes what is loaded. */
static void s_reload(store_user_t *u, uint64_t now)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < u->nses; i++) {
        if (u->ses_state[i] == SM_SES_DEL)
            continue;
        u->ses[k] = u->ses[i];
        u->ses_state[k] = SM_SES_KEEP;
        u->ses_old_lease[k] = u->ses[k].lease_id;
        k++;
    }
    u->nses = k;
    u->found = true;
    sm_user_loaded(u, now);
}

static proto_record_t s_cmd(int status, const char *sid, uint32_t ttl)
{
    proto_record_t in;
    memset(&in, 0, sizeof in);
    proto_record_set_uid(&in, "alice", 5);
    proto_record_set_node(&in, "node-a", 6);
    in.status = (uint8_t)status;
    in.ttl_s = ttl;
    if (sid)
        proto_record_set_sid(&in, sid, strlen(sid));
    return in;
}

/* Apply a command and recompute at `now`, as one store transaction; returns the model's result. */
static int s_put(store_user_t *u, proto_record_t in, uint64_t now)
{
    bool ev = false;
    int rc = in.sid_len ? sm_put_session(u, &in, now, &CFG, &ev) : (sm_put_preferred(u, &in, now), SM_OK);
    if (rc == SM_OK)
        sm_recompute(u, now, &CFG, NULL, NULL);
    return rc;
}

static bool s_all_leases_live(uint64_t id, void *ctx)
{
    (void)id;
    (void)ctx;
    return true;
}

static bool s_no_lease_live(uint64_t id, void *ctx)
{
    (void)id;
    (void)ctx;
    return false;
}

/* ==== precedence ============================================================================== */

START_TEST(test_two_sessions)
{
    store_user_t *u = s_user();
    ck_assert_int_eq(s_put(u, s_cmd(PRESENCE_ONLINE, "desktop", 60), T0), SM_OK);
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    ck_assert_int_eq(u->rec.source, PRESENCE_SRC_SESSION);
    ck_assert_int_eq(u->rec.sessions, 1);
    s_reload(u, T0 + SEC);
    ck_assert_int_eq(s_put(u, s_cmd(PRESENCE_AWAY, "phone", 60), T0 + SEC), SM_OK);
    /* phone away + desktop online -> online */
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    ck_assert_int_eq(u->rec.sessions, 2);
    s_reload(u, T0 + 2 * SEC);
    /* one ends: still online (the desktop); then the desktop ends: offline */
    ck_assert_int_eq(s_put(u, s_cmd(PRESENCE_OFFLINE, "phone", 60), T0 + 2 * SEC), SM_OK);
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    ck_assert_int_eq(u->rec.sessions, 1);
    s_reload(u, T0 + 3 * SEC);
    ck_assert_int_eq(s_put(u, s_cmd(PRESENCE_OFFLINE, "desktop", 60), T0 + 3 * SEC), SM_OK);
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(u->rec.source, PRESENCE_SRC_NONE);
    ck_assert_int_eq(u->rec.sessions, 0);
    ck_assert_uint_eq(u->rec.last_seen_us, T0 + 3 * SEC);
    /* ending a session that is not there is refused and changes nothing */
    s_reload(u, T0 + 4 * SEC);
    ck_assert_int_eq(s_put(u, s_cmd(PRESENCE_OFFLINE, "desktop", 60), T0 + 4 * SEC), SM_NO_SESSION);
    free(u);
}
END_TEST

START_TEST(test_busy_wins)
{
    store_user_t *u = s_user();
    s_put(u, s_cmd(PRESENCE_AWAY, "a", 60), T0);
    s_reload(u, T0);
    s_put(u, s_cmd(PRESENCE_BUSY, "b", 60), T0);
    s_reload(u, T0);
    s_put(u, s_cmd(PRESENCE_ONLINE, "c", 60), T0);
    ck_assert_int_eq(u->rec.status, PRESENCE_BUSY);
    ck_assert_int_eq(u->rec.sessions, 3);
    /* the record names the node and ttl of the session that sets the status */
    ck_assert_str_eq(u->rec.node_id, "node-a");
    ck_assert_int_eq(sm_status_rank(PRESENCE_BUSY) > sm_status_rank(PRESENCE_ONLINE), 1);
    ck_assert_int_eq(sm_status_rank(PRESENCE_ONLINE) > sm_status_rank(PRESENCE_AWAY), 1);
    ck_assert_int_eq(sm_status_rank(PRESENCE_AWAY) > sm_status_rank(PRESENCE_OFFLINE), 1);
    free(u);
}
END_TEST

/* A preferred status beats the sessions while it lasts, then the computed status returns. */
START_TEST(test_preferred_then_back)
{
    store_user_t *u = s_user();
    s_put(u, s_cmd(PRESENCE_ONLINE, "desktop", 600), T0);
    s_reload(u, T0);
    s_put(u, s_cmd(PRESENCE_BUSY, NULL, 30), T0 + SEC); /* "busy for 30 s" by hand */
    ck_assert_int_eq(u->rec.status, PRESENCE_BUSY);
    ck_assert_int_eq(u->rec.source, PRESENCE_SRC_PREFERRED);
    ck_assert_uint_eq(u->rec.preferred_until_us, T0 + 31 * SEC);
    ck_assert_int_eq(u->rec.sessions, 1);
    /* expires_at: the later of the preferred end and the session's (the status lasts that long) */
    ck_assert_uint_eq(u->rec.expires_at_us, T0 + 600 * SEC);
    ck_assert_uint_eq(u->rec.due_us, T0 + 31 * SEC);
    s_reload(u, T0 + 31 * SEC);
    sm_recompute(u, T0 + 31 * SEC, &CFG, NULL, NULL);
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    ck_assert_int_eq(u->rec.source, PRESENCE_SRC_SESSION);
    ck_assert_uint_eq(u->rec.preferred_until_us, 0);
    ck_assert_int_eq(sm_classify(&u->old, &u->rec), SM_CH_SET);
    free(u);
}
END_TEST

/* Without sessions a user behaves as before: the PUT's status until ttl, then offline. */
START_TEST(test_no_sessions_as_before)
{
    store_user_t *u = s_user();
    proto_record_t in = s_cmd(PRESENCE_BUSY, NULL, 10);
    proto_record_set_msg(&in, "meeting", 7);
    s_put(u, in, T0);
    ck_assert_int_eq(u->rec.status, PRESENCE_BUSY);
    ck_assert_str_eq(u->rec.message, "meeting");
    ck_assert_uint_eq(u->rec.expires_at_us, T0 + 10 * SEC);
    ck_assert_uint_eq(u->rec.due_us, T0 + 10 * SEC);
    ck_assert_int_eq(u->rec.rflags, 0); /* nothing of sessions: the 2.0 record shape */
    s_reload(u, T0 + 10 * SEC);
    bool purge = sm_recompute(u, T0 + 10 * SEC, &CFG, NULL, NULL);
    ck_assert(!purge);
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    ck_assert_str_eq(u->rec.message, ""); /* expiry clears the message */
    ck_assert_uint_eq(u->event_us, T0 + 10 * SEC); /* updated_at will be expires_at */
    ck_assert_uint_eq(u->rec.due_us, T0 + 3600 * SEC); /* next: the purge, retention after last_seen */
    s_reload(u, T0 + 3600 * SEC);
    ck_assert(sm_recompute(u, T0 + 3600 * SEC, &CFG, NULL, NULL));
    free(u);
}
END_TEST

/* ==== sessions: expiry, leases, limits ======================================================== */

START_TEST(test_rest_session_expiry)
{
    store_user_t *u = s_user();
    s_put(u, s_cmd(PRESENCE_ONLINE, "cli", 20), T0);
    ck_assert_uint_eq(u->rec.due_us, T0 + 20 * SEC);
    ck_assert_uint_eq(u->rec.expires_at_us, T0 + 20 * SEC);
    /* a heartbeat of the session moves its deadline on */
    s_reload(u, T0 + 15 * SEC);
    proto_record_t hb = s_cmd(0, "cli", 0);
    bool ev = false;
    ck_assert_int_eq(sm_touch(u, &hb, T0 + 15 * SEC, &CFG, &ev), SM_OK);
    sm_recompute(u, T0 + 15 * SEC, &CFG, NULL, NULL);
    ck_assert_uint_eq(u->rec.expires_at_us, T0 + 35 * SEC);
    ck_assert_int_eq(sm_classify(&u->old, &u->rec), SM_CH_TOUCH); /* liveness only: no event */
    s_reload(u, T0 + 35 * SEC);
    sm_recompute(u, T0 + 35 * SEC, &CFG, NULL, NULL);
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(u->rec.sessions, 0);
    ck_assert_uint_eq(u->event_us, T0 + 35 * SEC);
    free(u);
}
END_TEST

static proto_record_t s_conn(int status, const char *sid, uint64_t lease, uint64_t conn, uint8_t flags)
{
    proto_record_t in = s_cmd(status, sid, 60);
    in.lease_id = lease;
    in.conn_id = conn;
    in.cflags = flags;
    return in;
}

/* A connection's session lives while its lease does; a lapsed lease ends every session it holds. */
START_TEST(test_lease_sessions)
{
    store_user_t *u = s_user();
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_ONLINE, "tab1", 7, 1, 0), T0), SM_NO_SESSION); /* set before open */
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_ONLINE, "tab1", 7, 1, PROTO_CMD_F_OPEN), T0), SM_OK);
    s_reload(u, T0);
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_ONLINE, "tab2", 7, 2, PROTO_CMD_F_OPEN), T0), SM_OK);
    ck_assert_int_eq(u->rec.sessions, 2);
    /* the horizon moves on while the lease lives: half of it left, one write per session */
    uint64_t h = u->ses[0].expires_at_us;
    ck_assert_uint_eq(h, T0 + 60 * SEC);
    s_reload(u, T0 + 31 * SEC);
    sm_recompute(u, T0 + 31 * SEC, &CFG, s_all_leases_live, NULL);
    ck_assert_uint_eq(u->ses[0].expires_at_us, T0 + 91 * SEC);
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    /* the lease lapses: both sessions end at once */
    s_reload(u, T0 + 40 * SEC);
    sm_recompute(u, T0 + 40 * SEC, &CFG, s_no_lease_live, NULL);
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(u->rec.sessions, 0);
    free(u);
}
END_TEST

/* A reconnect within the grace takes the session over; the old connection's end is then ignored. */
START_TEST(test_resume)
{
    store_user_t *u = s_user();
    s_put(u, s_conn(PRESENCE_BUSY, "s1", 7, 1, PROTO_CMD_F_OPEN), T0);
    uint64_t connected = u->ses[0].connected_at_us;
    s_reload(u, T0 + 2 * SEC);
    /* another gateway (lease 9) resumes it */
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_BUSY, "s1", 9, 5, PROTO_CMD_F_OPEN), T0 + 2 * SEC), SM_OK);
    ck_assert_int_eq(u->rec.sessions, 1);
    ck_assert_uint_eq(u->ses[0].connected_at_us, connected);
    ck_assert_uint_eq(u->ses[0].lease_id, 9);
    s_reload(u, T0 + 5 * SEC);
    /* the first connection's grace ends: its end names lease 7, conn 1 -- not the holder any more */
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_OFFLINE, "s1", 7, 1, 0), T0 + 5 * SEC), SM_NO_SESSION);
    ck_assert_int_eq(sm_end_lease_sessions(u, 7, 1, "s1", 2, T0 + 5 * SEC), 0);
    ck_assert_int_eq(u->nses, 1);
    /* the holder's own end works */
    ck_assert_int_eq(s_put(u, s_conn(PRESENCE_OFFLINE, "s1", 9, 5, 0), T0 + 6 * SEC), SM_OK);
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    free(u);
}
END_TEST

START_TEST(test_max_sessions)
{
    store_user_t *u = s_user();
    for (int i = 0; i < 4; i++) {
        char sid[8];
        snprintf(sid, sizeof sid, "s%d", i);
        s_put(u, s_cmd(PRESENCE_ONLINE, sid, (uint32_t)(100 - i)), T0); /* s3 expires first */
        s_reload(u, T0);
    }
    ck_assert_int_eq(u->rec.sessions, 4);
    bool ev = false;
    proto_record_t in = s_cmd(PRESENCE_AWAY, "s4", 100);
    ck_assert_int_eq(sm_put_session(u, &in, T0, &CFG, &ev), SM_OK);
    ck_assert(ev);
    sm_recompute(u, T0, &CFG, NULL, NULL);
    ck_assert_int_eq(u->rec.sessions, 4);
    for (uint32_t i = 0; i < u->nses; i++)
        if (u->ses_state[i] != SM_SES_DEL)
            ck_assert_str_ne(u->ses[i].session_id, "s3");
    free(u);
}
END_TEST

/* The most sessions MAX_SESSIONS allows (STORE_SESSIONS_MAX): one more evicts the one that expires
 * first into a slot of its own -- the evicted one keeps its slot, marked for deletion (its row must
 * go) -- so exactly STORE_SESSIONS_MAX stay and every other one is intact. A user stored with
 * STORE_SESSIONS_CAP sessions (an older build allowed MAX_SESSIONS=256) has no slot left: the open
 * is refused (SM_NO_ROOM) instead of overwriting a stored session. */
START_TEST(test_max_sessions_at_the_cap)
{
    const sm_config_t cfg = {.max_sessions = STORE_SESSIONS_MAX, .retention_us = 3600 * SEC, .default_ttl_s = 60};
    store_user_t *u = s_user();
    for (uint32_t i = 0; i < STORE_SESSIONS_MAX; i++) {
        char sid[8];
        snprintf(sid, sizeof sid, "s%u", i);
        proto_record_t in = s_cmd(PRESENCE_ONLINE, sid, 1000 - i); /* the last one expires first */
        bool ev = false;
        ck_assert_int_eq(sm_put_session(u, &in, T0, &cfg, &ev), SM_OK);
        ck_assert(!ev);
    }
    sm_recompute(u, T0, &cfg, NULL, NULL);
    s_reload(u, T0);
    ck_assert_int_eq(u->rec.sessions, STORE_SESSIONS_MAX);
    ck_assert_int_eq(u->nses, STORE_SESSIONS_MAX);
    proto_record_t in = s_cmd(PRESENCE_AWAY, "new", 1000);
    bool ev = false;
    ck_assert_int_eq(sm_put_session(u, &in, T0, &cfg, &ev), SM_OK);
    ck_assert(ev);
    sm_recompute(u, T0, &cfg, NULL, NULL);
    ck_assert_int_eq(u->rec.sessions, STORE_SESSIONS_MAX);
    ck_assert_int_eq(u->nses, STORE_SESSIONS_CAP);
    char last[8];
    snprintf(last, sizeof last, "s%u", STORE_SESSIONS_MAX - 1);
    uint32_t live = 0, deleted = 0;
    for (uint32_t i = 0; i < u->nses; i++) {
        if (u->ses_state[i] == SM_SES_DEL) {
            ck_assert_str_eq(u->ses[i].session_id, last);
            deleted++;
        } else {
            live++;
        }
    }
    ck_assert_uint_eq(live, STORE_SESSIONS_MAX);
    ck_assert_uint_eq(deleted, 1);
    ck_assert_str_eq(u->ses[STORE_SESSIONS_MAX].session_id, "new");

    /* STORE_SESSIONS_CAP stored sessions: no room, nothing overwritten. */
    store_user_t *w = s_user();
    for (uint32_t i = 0; i < STORE_SESSIONS_CAP; i++) {
        snprintf(w->ses[i].session_id, sizeof w->ses[i].session_id, "s%u", i);
        w->ses[i].sid_len = (uint8_t)strlen(w->ses[i].session_id);
        w->ses[i].status = PRESENCE_ONLINE;
        w->ses[i].expires_at_us = T0 + (1000 - i) * SEC;
    }
    w->nses = STORE_SESSIONS_CAP;
    s_reload(w, T0);
    proto_record_t in2 = s_cmd(PRESENCE_ONLINE, "one-more", 1000);
    ev = false;
    ck_assert_int_eq(sm_put_session(w, &in2, T0, &cfg, &ev), SM_NO_ROOM);
    for (uint32_t i = 0; i < STORE_SESSIONS_CAP; i++) {
        char sid[8];
        snprintf(sid, sizeof sid, "s%u", i);
        ck_assert_str_eq(w->ses[i].session_id, sid);
    }
    free(w);
    free(u);
}
END_TEST

/* Idle: an automatic away keeps the status the client chose, to restore on activity. */
START_TEST(test_idle_keeps_manual)
{
    store_user_t *u = s_user();
    s_put(u, s_conn(PRESENCE_BUSY, "s1", 7, 1, PROTO_CMD_F_OPEN), T0);
    s_reload(u, T0 + 600 * SEC);
    s_put(u, s_conn(PRESENCE_AWAY, "s1", 7, 1, PROTO_CMD_F_IDLE), T0 + 600 * SEC);
    ck_assert_int_eq(u->rec.status, PRESENCE_AWAY);
    ck_assert_int_eq(u->ses[0].manual_status, PRESENCE_BUSY);
    free(u);
}
END_TEST

/* ==== message expiry ============================================================================ */

START_TEST(test_message_expiry)
{
    store_user_t *u = s_user();
    proto_record_t in = s_cmd(PRESENCE_ONLINE, NULL, 3600);
    proto_record_set_msg(&in, "lunch", 5);
    in.message_ttl_s = 30;
    s_put(u, in, T0);
    ck_assert_uint_eq(u->rec.message_expires_at_us, T0 + 30 * SEC);
    ck_assert_int_eq(u->rec.rflags & PROTO_REC_F_RT, PROTO_REC_F_RT);
    ck_assert_uint_eq(u->rec.due_us, T0 + 30 * SEC);
    s_reload(u, T0 + 30 * SEC);
    sm_recompute(u, T0 + 30 * SEC, &CFG, NULL, NULL);
    ck_assert_str_eq(u->rec.message, "");
    ck_assert_uint_eq(u->rec.message_expires_at_us, 0);
    ck_assert_int_eq(u->rec.status, PRESENCE_ONLINE);
    ck_assert_int_eq(sm_classify(&u->old, &u->rec), SM_CH_SET); /* a message change is an event */
    /* a session's set without a message keeps the user's message */
    s_reload(u, T0 + 31 * SEC);
    proto_record_t m = s_cmd(PRESENCE_ONLINE, NULL, 3600);
    proto_record_set_msg(&m, "back", 4);
    s_put(u, m, T0 + 31 * SEC);
    s_reload(u, T0 + 32 * SEC);
    s_put(u, s_cmd(PRESENCE_BUSY, "s1", 60), T0 + 32 * SEC);
    ck_assert_str_eq(u->rec.message, "back");
    free(u);
}
END_TEST

/* ==== invisible mode ============================================================================ */

static void s_stamp(store_user_t *u, uint64_t *version)
{
    int kind = u->force_set ? SM_CH_SET : sm_classify(u->found ? &u->old : NULL, &u->rec);
    if (kind != SM_CH_NONE)
        sm_stamp(u->found ? &u->old_view : NULL, &u->rec, ++*version, u->event_us, u->pref_written);
}

START_TEST(test_invisible)
{
    store_user_t *u = s_user();
    uint64_t v = 0;
    s_put(u, s_cmd(PRESENCE_ONLINE, "desktop", 600), T0);
    s_stamp(u, &v);
    proto_record_t pub;
    sm_public_view(&u->rec, &pub);
    ck_assert_int_eq(pub.sessions, 1);
    /* appear offline */
    s_reload(u, T0 + 10 * SEC);
    s_put(u, s_cmd(PRESENCE_OFFLINE, NULL, 3600), T0 + 10 * SEC);
    s_stamp(u, &v);
    ck_assert(proto_record_invisible(&u->rec));
    ck_assert_int_eq(u->rec.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(u->rec.sessions, 1); /* the user's own view */
    sm_public_view(&u->rec, &pub);
    ck_assert_int_eq(pub.sessions, 0);
    ck_assert_uint_eq(pub.version, v);
    ck_assert_uint_eq(pub.last_seen_us, T0 + 10 * SEC);
    uint64_t pub_v = pub.version;
    /* a second device connects and heartbeats: the user's view moves, the public one does not */
    s_reload(u, T0 + 20 * SEC);
    s_put(u, s_cmd(PRESENCE_BUSY, "phone", 600), T0 + 20 * SEC);
    s_stamp(u, &v);
    ck_assert_int_eq(u->rec.sessions, 2);
    ck_assert_uint_gt(u->rec.version, pub_v);
    sm_public_view(&u->rec, &pub);
    ck_assert_uint_eq(pub.version, pub_v);
    ck_assert_uint_eq(pub.last_seen_us, T0 + 10 * SEC);
    ck_assert_int_eq(pub.sessions, 0);
    ck_assert_int_eq(pub.status, PRESENCE_OFFLINE);
    s_reload(u, T0 + 30 * SEC);
    proto_record_t hb = s_cmd(0, "phone", 0);
    bool ev = false;
    sm_touch(u, &hb, T0 + 30 * SEC, &CFG, &ev);
    sm_recompute(u, T0 + 30 * SEC, &CFG, NULL, NULL);
    s_stamp(u, &v);
    sm_public_view(&u->rec, &pub);
    ck_assert_uint_eq(pub.version, pub_v);
    ck_assert_uint_eq(pub.last_seen_us, T0 + 10 * SEC);
    /* turning invisible off by hand: the sessions decide again at once */
    {
        store_user_t *c = calloc(1, sizeof *c);
        *c = *u;
        s_reload(c, T0 + 40 * SEC);
        proto_record_t clr = s_cmd(PRESENCE_ONLINE, NULL, 60);
        clr.cflags = PROTO_CMD_F_CLEAR;
        s_put(c, clr, T0 + 40 * SEC);
        ck_assert(!proto_record_invisible(&c->rec));
        ck_assert_int_eq(c->rec.status, PRESENCE_BUSY);
        ck_assert_int_eq(c->rec.source, PRESENCE_SRC_SESSION);
        ck_assert_uint_eq(c->rec.preferred_until_us, 0);
        free(c);
    }
    /* the preferred offline ends: visible again, from the sessions */
    s_reload(u, T0 + 3610 * SEC);
    sm_recompute(u, T0 + 3610 * SEC, &CFG, s_all_leases_live, NULL);
    free(u);
}
END_TEST

/* Going offline by hand with no device, then connecting one: others see nothing happen. */
START_TEST(test_invisible_connect_hidden)
{
    store_user_t *u = s_user();
    uint64_t v = 0;
    s_put(u, s_cmd(PRESENCE_OFFLINE, NULL, 3600), T0);
    s_stamp(u, &v);
    proto_record_t before;
    sm_public_view(&u->rec, &before);
    s_reload(u, T0 + 5 * SEC);
    s_put(u, s_conn(PRESENCE_ONLINE, "tab", 7, 1, PROTO_CMD_F_OPEN), T0 + 5 * SEC);
    s_stamp(u, &v);
    ck_assert(proto_record_invisible(&u->rec));
    proto_record_t after;
    sm_public_view(&u->rec, &after);
    ck_assert_uint_eq(after.version, before.version);
    ck_assert_uint_eq(after.last_seen_us, before.last_seen_us);
    ck_assert_int_eq(after.sessions, 0);
    ck_assert_int_eq(after.status, PRESENCE_OFFLINE);
    free(u);
}
END_TEST

/* ==== what readers are told ===================================================================== */

START_TEST(test_classify)
{
    proto_record_t a;
    memset(&a, 0, sizeof a);
    proto_record_set_uid(&a, "u", 1);
    a.status = PRESENCE_ONLINE;
    a.last_seen_us = T0;
    a.expires_at_us = T0 + 60 * SEC;
    a.ttl_s = 60;
    proto_record_t b = a;
    ck_assert_int_eq(sm_classify(NULL, &a), SM_CH_SET);
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_NONE);
    b.due_us = 5; /* internal */
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_NONE);
    b.last_seen_us++;
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_TOUCH);
    b = a;
    b.status = PRESENCE_AWAY;
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_SET);
    b = a;
    proto_record_set_msg(&b, "x", 1);
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_SET);
    /* sessions and source matter to readers of a record that shows them (rflags RT) only */
    b = a;
    b.sessions = 2;
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_NONE);
    a.rflags = b.rflags = PROTO_REC_F_RT;
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_SET);
    b = a;
    b.preferred_until_us = 9;
    ck_assert_int_eq(sm_classify(&a, &b), SM_CH_TOUCH);
}
END_TEST

Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("precedence");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_two_sessions);
    tcase_add_test(tc, test_busy_wins);
    tcase_add_test(tc, test_preferred_then_back);
    tcase_add_test(tc, test_no_sessions_as_before);
    suite_add_tcase(s, tc);
    tc = tcase_create("sessions");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_rest_session_expiry);
    tcase_add_test(tc, test_lease_sessions);
    tcase_add_test(tc, test_resume);
    tcase_add_test(tc, test_max_sessions);
    tcase_add_test(tc, test_max_sessions_at_the_cap);
    tcase_add_test(tc, test_idle_keeps_manual);
    suite_add_tcase(s, tc);
    tc = tcase_create("message_invisible");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_message_expiry);
    tcase_add_test(tc, test_invisible);
    tcase_add_test(tc, test_invisible_connect_hidden);
    tcase_add_test(tc, test_classify);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
