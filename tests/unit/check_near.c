/* check_near.c -- Check suite for the gateway's near cache engine (gateway/gw_near.h).
 *
 * Unit cases pin each documented result: a record survives the flat packing field for field;
 * nothing is served while the stream is not live or behind min_seq; an answer becomes an entry
 * only when it is at least as new as the stream; the stream updates, deletes and touches resident
 * entries (never backwards) and leaves other users alone; leaving the live state drops everything
 * and raises the floor; answers older than the floor are refused; the byte bound holds under a
 * flood and its evictions raise the floor; this thread's acknowledged deletes move a resident
 * entry like its writes do, and a resident entry stands in for an older answer only once the
 * stream has reached the write frontier (the leaf region's deleted user that came back); a
 * multi-get's "not found" filled with its own as_of (the reply's absent list) keeps an older record
 * from a node further behind from being served after it.
 *
 * The model case runs a simulated store (a log of SET/TOUCH/DEL changes), a stream that applies
 * it with lag and now and then stalls while writes go on, two cache-nodes at their own positions
 * (one behind, one ahead of the stream) answering late, drops of the live state, a byte bound
 * small enough to evict all the time, and writes this process acknowledged (through this thread
 * or another; the owner node answers with them at once), and answers that are part of a
 * multi-get whose as_of is lower than the node's position (an older key's) -- records filled with
 * the reply's as_of, "not found" with the key's own, as the reply's absent list lets gw_nearcall.c
 * do (with the reply's as_of for "not found" too, the model finds a user served older than
 * before within a few thousand changes); it checks that every record served for
 * a user is never older than one served before nor than the user's acknowledged write when the
 * read began, and that every hit is exactly the model's record at that version.
 *
 * No threads, no sockets, no files.
 */
#include "gw_near.h"
#include "util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------------- */

static proto_record_t s_rec(const char *uid, uint64_t version, const char *msg)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, "node-1", 6);
    r.version = version;
    r.status = PRESENCE_ONLINE;
    r.last_seen_us = 1700000000000000ull + version;
    r.updated_at_us = r.last_seen_us;
    r.expires_at_us = r.last_seen_us + 3600000000ull;
    r.ttl_s = 3600;
    r.pub_version = version;
    return r;
}

static proto_change_t s_set(const proto_record_t *r)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_SET;
    c.rec = *r;
    return c;
}

static proto_change_t s_del(const char *uid, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_DEL;
    proto_record_set_uid(&c.rec, uid, strlen(uid));
    c.rec.version = seq;
    return c;
}

static proto_change_t s_touch(const char *uid, uint64_t seq)
{
    proto_change_t c;
    memset(&c, 0, sizeof c);
    c.kind = PROTO_CH_TOUCH;
    proto_record_set_uid(&c.rec, uid, strlen(uid));
    proto_record_set_node(&c.rec, "node-2", 6);
    c.rec.version = seq;
    c.rec.last_seen_us = 1800000000000000ull + seq;
    c.rec.expires_at_us = c.rec.last_seen_us + 60000000ull;
    c.rec.ttl_s = 60;
    c.rec.vis_last_seen_us = c.rec.last_seen_us;
    c.rec.pub_version = seq;
    return c;
}

static int s_get(gw_near_t *n, const char *uid, proto_record_t *out)
{
    return gw_near_get(n, uid, strlen(uid), 0, out);
}

static int s_fill(gw_near_t *n, const char *uid, const proto_record_t *r, uint64_t as_of, proto_record_t *out)
{
    return gw_near_fill(n, uid, strlen(uid), r, as_of, 0, out);
}

static gw_near_t *s_live_near(uint64_t seq)
{
    gw_near_t *n = gw_near_new(1 << 20);
    ck_assert_ptr_nonnull(n);
    gw_near_live(n, true, seq);
    return n;
}

static gw_near_stats_t s_stats(const gw_near_t *n)
{
    gw_near_stats_t st;
    gw_near_get_stats(n, &st);
    return st;
}

/* ---------------------------------------------------------------------------------------------------
 * Life and packing
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_new_refuses_tiny)
{
    ck_assert_ptr_null(gw_near_new(0));
    ck_assert_ptr_null(gw_near_new(GW_NEAR_MIN_BYTES - 1));
    gw_near_t *n = gw_near_new(GW_NEAR_MIN_BYTES);
    ck_assert_ptr_nonnull(n);
    ck_assert(!gw_near_is_live(n));
    gw_near_destroy(&n);
    ck_assert_ptr_null(n);
    gw_near_destroy(&n); /* NULL-safe */
}
END_TEST

/* Every stored field comes back exactly; the command inputs come back zero. */
START_TEST(test_pack_roundtrip)
{
    gw_near_t *n = s_live_near(100);
    proto_record_t r = s_rec("alice@example", 90, "in a meeting \xe2\x9c\x93");
    r.status = PRESENCE_BUSY;
    r.preferred_until_us = 11;
    r.message_expires_at_us = 12;
    r.pub_version = 80;
    r.vis_last_seen_us = 13;
    r.due_us = 14;
    r.sessions = 3;
    r.source = PRESENCE_SRC_PREFERRED;
    r.rflags = PROTO_REC_F_RT | PROTO_REC_F_PUB_RT;
    proto_record_t in = r; /* with command inputs set, which must not survive */
    in.cflags = PROTO_CMD_F_OPEN;
    in.lease_id = 99;
    in.conn_id = 98;
    in.message_ttl_s = 5;
    proto_record_set_sid(&in, "s1", 2);
    proto_record_set_device(&in, "phone", 5);
    proto_record_t out;
    ck_assert_int_eq(s_fill(n, "alice@example", &in, 100, &out), GW_NEAR_SERVE);
    memset(&out, 0xab, sizeof out);
    ck_assert_int_eq(s_get(n, "alice@example", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 90);
    ck_assert_uint_eq(out.last_seen_us, r.last_seen_us);
    ck_assert_uint_eq(out.updated_at_us, r.updated_at_us);
    ck_assert_uint_eq(out.expires_at_us, r.expires_at_us);
    ck_assert_uint_eq(out.preferred_until_us, 11);
    ck_assert_uint_eq(out.message_expires_at_us, 12);
    ck_assert_uint_eq(out.pub_version, 80);
    ck_assert_uint_eq(out.vis_last_seen_us, 13);
    ck_assert_uint_eq(out.due_us, 14);
    ck_assert_uint_eq(out.sessions, 3);
    ck_assert_uint_eq(out.source, PRESENCE_SRC_PREFERRED);
    ck_assert_uint_eq(out.rflags, PROTO_REC_F_RT | PROTO_REC_F_PUB_RT);
    ck_assert_uint_eq(out.ttl_s, 3600);
    ck_assert_uint_eq(out.status, PRESENCE_BUSY);
    ck_assert_str_eq(out.user_id, "alice@example");
    ck_assert_uint_eq(out.uid_len, 13);
    ck_assert_str_eq(out.node_id, "node-1");
    ck_assert_uint_eq(out.node_len, 6);
    ck_assert_str_eq(out.message, "in a meeting \xe2\x9c\x93");
    ck_assert_uint_eq(out.msg_len, strlen("in a meeting \xe2\x9c\x93"));
    ck_assert_uint_eq(out.cflags, 0);
    ck_assert_uint_eq(out.lease_id, 0);
    ck_assert_uint_eq(out.conn_id, 0);
    ck_assert_uint_eq(out.message_ttl_s, 0);
    ck_assert_uint_eq(out.sid_len, 0);
    ck_assert_uint_eq(out.device_len, 0);
    ck_assert_str_eq(out.session_id, "");
    ck_assert_str_eq(out.device, "");
    gw_near_destroy(&n);
}
END_TEST

/* The longest strings the protocol allows fit. */
START_TEST(test_pack_limits)
{
    gw_near_t *n = s_live_near(10);
    char uid[PROTO_USER_ID_MAX + 1], msg[PROTO_MESSAGE_MAX + 1], node[PROTO_NODE_ID_MAX + 1];
    memset(uid, 'u', PROTO_USER_ID_MAX);
    uid[PROTO_USER_ID_MAX] = '\0';
    memset(msg, 'm', PROTO_MESSAGE_MAX);
    msg[PROTO_MESSAGE_MAX] = '\0';
    memset(node, 'n', PROTO_NODE_ID_MAX);
    node[PROTO_NODE_ID_MAX] = '\0';
    proto_record_t r = s_rec(uid, 7, msg), out;
    proto_record_set_node(&r, node, PROTO_NODE_ID_MAX);
    ck_assert_int_eq(s_fill(n, uid, &r, 10, &out), GW_NEAR_SERVE);
    ck_assert_int_eq(s_get(n, uid, &out), GW_NEAR_HIT);
    ck_assert_str_eq(out.user_id, uid);
    ck_assert_str_eq(out.message, msg);
    ck_assert_str_eq(out.node_id, node);
    gw_near_destroy(&n);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Reads and fills
 * ------------------------------------------------------------------------------------------------- */

/* Not live: nothing is served from the near cache and nothing is kept; what was served raises the
 * floor. */
START_TEST(test_not_live)
{
    gw_near_t *n = gw_near_new(1 << 20);
    proto_record_t r = s_rec("a", 5, "x"), out;
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_BYPASS);
    ck_assert_int_eq(s_fill(n, "a", &r, 10, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 5);
    ck_assert_int_eq(s_fill(n, "a", &r, 9, &out), GW_NEAR_BEHIND); /* served as of 10 already */
    gw_near_live(n, true, 10);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_MISS);
    gw_near_stats_t st = s_stats(n);
    ck_assert_uint_eq(st.bypassed, 1);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.fills, 1);
    ck_assert_uint_eq(st.fills_kept, 0);
    ck_assert_uint_eq(st.behind, 1);
    ck_assert_uint_eq(st.items, 0);
    gw_near_destroy(&n);
}
END_TEST

START_TEST(test_fill_then_hit)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), out;
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_MISS);
    ck_assert_int_eq(s_fill(n, "a", &r, 10, &out), GW_NEAR_SERVE);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 5);
    ck_assert_str_eq(out.message, "x");
    gw_near_stats_t st = s_stats(n);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.fills_kept, 1);
    ck_assert_uint_eq(st.items, 1);
    ck_assert_uint_gt(st.bytes, 0);
    ck_assert_uint_eq(gw_near_floor(n), 0);
    gw_near_destroy(&n);
}
END_TEST

/* An answer older than the stream may miss a change the stream applied since: served, not kept,
 * and the user's ghost remembers it. A later answer for that user older than the ghost is refused;
 * other users are not held to it. An answer older than the stream for a user the stream did not
 * touch since is as current as the stream, and kept. */
START_TEST(test_fill_behind_stream)
{
    gw_near_t *n = s_live_near(0);
    proto_record_t a9 = s_rec("a", 9, "a9"), b10 = s_rec("b", 10, "b10"), out;
    proto_change_t c = s_set(&a9);
    gw_near_apply(n, &c); /* not resident: only remembered as "a changed at 9" */
    c = s_set(&b10);
    gw_near_apply(n, &c);
    ck_assert_uint_eq(gw_near_seq(n), 10);
    proto_record_t a5 = s_rec("a", 5, "a5"), b3 = s_rec("b", 3, "b3"), c4 = s_rec("c", 4, "c4");
    ck_assert_int_eq(s_fill(n, "a", &a5, 8, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 5);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_MISS);
    ck_assert_uint_eq(gw_near_floor(n), 0);
    ck_assert_int_eq(s_fill(n, "a", &a5, 7, &out), GW_NEAR_BEHIND);  /* served as of 8 already */
    ck_assert_int_eq(s_fill(n, "b", &b3, 6, &out), GW_NEAR_SERVE);   /* b has no ghost yet */
    ck_assert_int_eq(s_fill(n, "b", &b3, 5, &out), GW_NEAR_BEHIND);  /* now it has: 6 */
    ck_assert_int_eq(s_fill(n, "a", &a5, 8, &out), GW_NEAR_SERVE);
    ck_assert_int_eq(s_fill(n, "a", &a9, 10, &out), GW_NEAR_SERVE);  /* as of the stream: kept */
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 9);
    ck_assert_int_eq(s_fill(n, "c", &c4, 6, &out), GW_NEAR_SERVE);   /* c did not change after 6: kept */
    ck_assert_int_eq(s_get(n, "c", &out), GW_NEAR_HIT);
    gw_near_stats_t st = s_stats(n);
    ck_assert_uint_eq(st.behind, 2);
    ck_assert_uint_eq(st.fills, 5);
    ck_assert_uint_eq(st.fills_kept, 2);
    gw_near_destroy(&n);
}
END_TEST

/* A "not found" is kept as an absent entry and replaced by the user's creation on the stream. */
START_TEST(test_fill_absent)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t out;
    ck_assert_int_eq(s_fill(n, "a", NULL, 10, &out), GW_NEAR_SERVE_ABSENT);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
    proto_record_t r = s_rec("a", 11, "new");
    proto_change_t c = s_set(&r);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 11);
    gw_near_destroy(&n);
}
END_TEST

/* When the resident entry is newer than an answer (the stream got there first), the entry is what
 * is served. */
START_TEST(test_fill_resident_newer)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r5 = s_rec("a", 5, "old"), r12 = s_rec("a", 12, "new"), out;
    ck_assert_int_eq(s_fill(n, "a", &r5, 10, &out), GW_NEAR_SERVE);
    proto_change_t c = s_set(&r12);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_fill(n, "a", &r5, 12, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 12);
    ck_assert_str_eq(out.message, "new");
    /* ... and an absent answer does not hide it either */
    ck_assert_int_eq(s_fill(n, "a", NULL, 11, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 12);
    gw_near_destroy(&n);
}
END_TEST

START_TEST(test_min_seq)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), out;
    s_fill(n, "a", &r, 10, &out);
    ck_assert_int_eq(gw_near_get(n, "a", 1, 11, &out), GW_NEAR_BYPASS);
    ck_assert_int_eq(gw_near_get(n, "a", 1, 10, &out), GW_NEAR_HIT);
    proto_change_t c = s_del("zz", 11); /* the stream reaches 11 (another user) */
    gw_near_apply(n, &c);
    ck_assert_uint_eq(gw_near_seq(n), 11);
    ck_assert_int_eq(gw_near_get(n, "a", 1, 11, &out), GW_NEAR_HIT);
    gw_near_destroy(&n);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * The stream
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_stream_updates)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "hello"), out;
    s_fill(n, "a", &r, 10, &out);
    proto_record_t r12 = s_rec("a", 12, "v12"), r11 = s_rec("a", 11, "v11");
    proto_change_t c = s_set(&r12);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 12);
    c = s_set(&r11); /* older: never applied over a newer entry */
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 12);
    ck_assert_str_eq(out.message, "v12");
    /* a TOUCH moves the liveness fields and the version; status and message stay */
    c = s_touch("a", 13);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 13);
    ck_assert_str_eq(out.message, "v12");
    ck_assert_uint_eq(out.status, PRESENCE_ONLINE);
    ck_assert_uint_eq(out.last_seen_us, c.rec.last_seen_us);
    ck_assert_uint_eq(out.expires_at_us, c.rec.expires_at_us);
    ck_assert_uint_eq(out.ttl_s, 60);
    ck_assert_uint_eq(out.pub_version, 13);
    ck_assert_str_eq(out.node_id, "node-2");
    ck_assert_uint_eq(out.updated_at_us, r12.updated_at_us);
    /* a DEL makes it absent; a later SET brings it back */
    c = s_del("a", 14);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
    proto_record_t r15 = s_rec("a", 15, "back");
    c = s_set(&r15);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 15);
    ck_assert_uint_eq(gw_near_seq(n), 15);
    ck_assert_uint_eq(s_stats(n).updates, 4);
    gw_near_destroy(&n);
}
END_TEST

/* Users nobody read here are not inserted by the stream. */
START_TEST(test_stream_leaves_others)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("b", 11, "x"), out;
    proto_change_t c = s_set(&r);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "b", &out), GW_NEAR_MISS);
    ck_assert_uint_eq(s_stats(n).items, 0);
    ck_assert_uint_eq(gw_near_seq(n), 11);
    gw_near_destroy(&n);
}
END_TEST

/* A TOUCH of a user held as absent cannot be rebuilt: the entry goes, the floor covers it. */
START_TEST(test_touch_on_absent)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t out;
    s_fill(n, "a", NULL, 10, &out);
    proto_change_t c = s_touch("a", 12);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_MISS);
    ck_assert_int_eq(s_fill(n, "a", NULL, 11, &out), GW_NEAR_BEHIND); /* its ghost: 12 */
    ck_assert_int_eq(s_fill(n, "a", NULL, 12, &out), GW_NEAR_SERVE_ABSENT);
    gw_near_destroy(&n);
}
END_TEST

/* Leaving live (a gap, silence, a catch-up) drops every entry and raises the floor to the front. */
START_TEST(test_leave_live)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), out;
    s_fill(n, "a", &r, 10, &out);
    s_fill(n, "b", NULL, 20, &out); /* an answer from a node ahead of the stream: front 20 */
    ck_assert_uint_eq(s_stats(n).items, 2);
    gw_near_live(n, false, 10);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_BYPASS);
    gw_near_stats_t st = s_stats(n);
    ck_assert_uint_eq(st.items, 0);
    ck_assert_uint_eq(st.drops, 2);
    ck_assert_uint_eq(gw_near_floor(n), 20);
    gw_near_live(n, true, 15);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_MISS);
    ck_assert_int_eq(s_fill(n, "a", &r, 19, &out), GW_NEAR_BEHIND);
    ck_assert_int_eq(s_fill(n, "a", &r, 20, &out), GW_NEAR_SERVE);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    gw_near_destroy(&n);
}
END_TEST

/* Another database: everything goes and the sequences start over. */
START_TEST(test_reset)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), out;
    s_fill(n, "a", &r, 10, &out);
    gw_near_live(n, false, 10);
    ck_assert_uint_gt(gw_near_floor(n), 0);
    gw_near_reset(n);
    ck_assert_uint_eq(gw_near_floor(n), 0);
    ck_assert_uint_eq(gw_near_seq(n), 0);
    ck_assert(!gw_near_is_live(n));
    gw_near_live(n, true, 3);
    r = s_rec("a", 2, "small");
    ck_assert_int_eq(s_fill(n, "a", &r, 3, &out), GW_NEAR_SERVE);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 2);
    gw_near_destroy(&n);
}
END_TEST

/* A write this thread made moves a resident entry forward, never back; others stay out. */
START_TEST(test_wrote)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), w = s_rec("a", 11, "written"), old = s_rec("a", 4, "old"), out;
    s_fill(n, "a", &r, 10, &out);
    gw_near_wrote(n, &w);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 11);
    ck_assert_str_eq(out.message, "written");
    gw_near_wrote(n, &old);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_uint_eq(out.version, 11);
    proto_record_t b = s_rec("b", 12, "b");
    gw_near_wrote(n, &b);
    ck_assert_int_eq(s_get(n, "b", &out), GW_NEAR_MISS);
    gw_near_destroy(&n);
}
END_TEST

/* A delete this thread made moves a resident entry to "not found" as of the delete, never back;
 * users that are not resident stay out, and a delete that says no sequence changes nothing. The
 * stream then brings what comes after it. */
START_TEST(test_deleted)
{
    gw_near_t *n = s_live_near(10);
    proto_record_t r = s_rec("a", 5, "x"), out;
    s_fill(n, "a", &r, 10, &out);
    gw_near_deleted(n, "a", 1, 0);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    gw_near_deleted(n, "a", 1, 4); /* older than the entry */
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    gw_near_deleted(n, "a", 1, 12);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
    proto_record_t r11 = s_rec("a", 11, "before the delete");
    proto_change_t c = s_set(&r11); /* the stream catching up with what came before the delete */
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
    c = s_del("a", 12);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
    proto_record_t r13 = s_rec("a", 13, "back");
    c = s_set(&r13);
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_HIT);
    ck_assert_str_eq(out.message, "back");
    gw_near_deleted(n, "b", 1, 14);
    ck_assert_int_eq(s_get(n, "b", &out), GW_NEAR_MISS);
    gw_near_destroy(&n);
}
END_TEST

/* An answer a node read through to the store can be newer than its as_of (a multi-get's as_of is
 * the lowest of its keys'): served and not kept, its ghost is its version, so a later answer as of
 * a point before that version -- possibly an older record -- is refused. */
START_TEST(test_fill_read_through_ghost)
{
    gw_near_t *n = gw_near_new(1 << 20); /* not live: answers are served, never kept */
    proto_record_t fresh = s_rec("a", 100, "new"), old = s_rec("a", 90, "old"), out;
    ck_assert_int_eq(s_fill(n, "a", &fresh, 50, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 100);
    ck_assert_int_eq(s_fill(n, "a", &old, 60, &out), GW_NEAR_BEHIND); /* as of 60 < 100: may be older */
    ck_assert_int_eq(s_fill(n, "a", &fresh, 100, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 100);
    ck_assert_uint_eq(s_stats(n).behind, 1);
    gw_near_destroy(&n);
}
END_TEST

/* The gap a reply-wide as_of left (DESIGN.md, Coherence, point 6): a multi-get's as_of is its
 * oldest key's (50: "b", cached at the node's stream), while "a" was read through to the store at
 * 200 and is absent there -- it existed from 100 and was deleted at 150. The reply lists "a" as
 * absent through 200 (PROTOCOL.md, "REPLY absent"); the gateway fills it with that (as
 * gw_nearcall.c does: proto_reply_key_as_of). A node further behind (at 120) then shows the record
 * of 100: older than the absence already served, so it is not served -- refused (not live: the
 * absence was served without becoming an entry, its ghost is 200), or answered by the resident
 * "not found" (live). With the reply's 50 instead, the record was served: the gap. */
static void s_decode_mget_reply(proto_buf_t *b, proto_msg_t *m, const proto_record_t *found, uint64_t as_of,
                                const proto_absent_t *abs, uint32_t nabs)
{
    proto_buf_reset(b);
    proto_enc_reply_abs(b, 1, PROTO_OK, as_of, found, 1, NULL, 0, abs, nabs);
    ck_assert_int_eq(proto_decode(b->data, b->len, m), PROTO_DEC_OK);
}

/* Fill keys "b", "a" from the decoded reply as gw_nearcall.c does; returns "a"'s result. */
static int s_fill_mget(gw_near_t *n, const proto_msg_t *m)
{
    static const char *keys[2] = {"b", "a"};
    proto_record_t out;
    int rc = -1;
    for (uint32_t i = 0; i < 2; i++) {
        const proto_record_t *r = i == 0 ? &m->recs[0] : NULL; /* "b" found, "a" not */
        uint64_t as_of = r ? m->seq : proto_reply_key_as_of(m, i);
        rc = gw_near_fill(n, keys[i], 1, r, as_of, 0, &out);
        if (i == 0) {
            ck_assert_int_eq(rc, GW_NEAR_SERVE);
            ck_assert_uint_eq(out.version, 40);
        }
    }
    return rc;
}

START_TEST(test_fill_mget_absent_as_of)
{
    proto_record_t b40 = s_rec("b", 40, "b"), a100 = s_rec("a", 100, "old"), out;
    proto_absent_t abs = {1, 200};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_msg_t m;
    for (int live = 0; live <= 1; live++) {
        /* with the per-key as_of */
        gw_near_t *n = live ? s_live_near(40) : gw_near_new(1 << 20);
        s_decode_mget_reply(&b, &m, &b40, 50, &abs, 1);
        ck_assert_uint_eq(proto_reply_key_as_of(&m, 1), 200);
        ck_assert_int_eq(s_fill_mget(n, &m), GW_NEAR_SERVE_ABSENT);
        proto_msg_fini(&m);
        int rc = s_fill(n, "a", &a100, 120, &out);
        if (live) {
            ck_assert_int_eq(rc, GW_NEAR_SERVE_ABSENT); /* the entry, "not found" at 200, stands in */
            ck_assert_int_eq(s_get(n, "a", &out), GW_NEAR_ABSENT);
            ck_assert_uint_eq(s_stats(n).behind, 0);
        } else {
            ck_assert_int_eq(rc, GW_NEAR_BEHIND); /* as of 120 < the ghost 200: ask again */
            ck_assert_uint_eq(s_stats(n).behind, 1);
        }
        /* an answer as of the read or later is served */
        ck_assert_int_eq(s_fill(n, "a", NULL, 200, &out), GW_NEAR_SERVE_ABSENT);
        gw_near_destroy(&n);

        /* without it (an older node: no list), the reply's 50 is all there is: the record of 100
         * as of 120 is served after the absence of 200 -- what the list closes */
        n = live ? s_live_near(40) : gw_near_new(1 << 20);
        s_decode_mget_reply(&b, &m, &b40, 50, NULL, 0);
        ck_assert_uint_eq(proto_reply_key_as_of(&m, 1), 50);
        ck_assert_int_eq(s_fill_mget(n, &m), GW_NEAR_SERVE_ABSENT);
        proto_msg_fini(&m);
        ck_assert_int_eq(s_fill(n, "a", &a100, 120, &out), GW_NEAR_SERVE);
        ck_assert_uint_eq(out.version, 100);
        gw_near_destroy(&n);
    }
    proto_buf_fini(&b);
}
END_TEST

/* The leaf region's lost delete (integ_faults, "leaf: kill center store-node"): while the relay had
 * not yet noticed the restarted center, writes were acknowledged far ahead of this thread's
 * stream. A heartbeat's record moved the resident entry ahead of the stream (1048597), the client
 * deleted the user (1048608) and read it back in a multi-get whose as_of was another user's, from
 * the stalled stream (450): the "not found" lost to the resident record, and the deleted user came
 * back. An entry stands in for an answer only as a hit could. */
START_TEST(test_fill_resident_behind_writes)
{
    gw_near_t *n = s_live_near(450);
    proto_record_t r = s_rec("a", 440, "put"), hb = s_rec("a", 1048597, "put"), out;
    ck_assert_int_eq(s_fill(n, "a", &r, 450, &out), GW_NEAR_SERVE);
    gw_near_wrote(n, &hb); /* this thread's heartbeat, acknowledged */
    uint64_t frontier = 1048608; /* the delete, acknowledged through another thread */
    ck_assert_int_eq(gw_near_get(n, "a", 1, frontier, &out), GW_NEAR_BYPASS);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, NULL, 450, frontier, &out), GW_NEAR_BEHIND);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, &r, 450, frontier, &out), GW_NEAR_BEHIND); /* a node behind */
    ck_assert_uint_eq(s_stats(n).behind, 2);
    /* an answer as of the delete or later is served (and kept) */
    ck_assert_int_eq(gw_near_fill(n, "a", 1, NULL, 1048608, frontier, &out), GW_NEAR_SERVE_ABSENT);
    ck_assert_int_eq(gw_near_get(n, "a", 1, 0, &out), GW_NEAR_ABSENT);
    gw_near_destroy(&n);

    /* The delete through this thread: the entry says "not found" at once, and an answer that
     * agrees is served whatever its as_of. */
    n = s_live_near(450);
    ck_assert_int_eq(s_fill(n, "a", &r, 450, &out), GW_NEAR_SERVE);
    gw_near_wrote(n, &hb);
    gw_near_deleted(n, "a", 1, frontier);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, NULL, 450, frontier, &out), GW_NEAR_SERVE_ABSENT);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, &r, 450, frontier, &out), GW_NEAR_BEHIND); /* older, and it disagrees */
    /* the stream reaches the frontier: the entry is a hit again, and stands in for older answers */
    proto_change_t c = s_del("a", frontier);
    gw_near_apply(n, &c);
    ck_assert_int_eq(gw_near_get(n, "a", 1, frontier, &out), GW_NEAR_ABSENT);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, &r, 450, frontier, &out), GW_NEAR_SERVE_ABSENT);
    gw_near_destroy(&n);

    /* With no acknowledged write beyond the stream, a resident entry newer than the answer is
     * served as before (test_fill_resident_newer). */
    n = s_live_near(450);
    ck_assert_int_eq(s_fill(n, "a", &r, 450, &out), GW_NEAR_SERVE);
    gw_near_wrote(n, &hb);
    ck_assert_int_eq(gw_near_fill(n, "a", 1, NULL, 450, 450, &out), GW_NEAR_SERVE);
    ck_assert_uint_eq(out.version, 1048597);
    gw_near_destroy(&n);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * The byte bound
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_byte_bound)
{
    gw_near_t *n = gw_near_new(GW_NEAR_MIN_BYTES);
    gw_near_live(n, true, 100000);
    proto_record_t out;
    for (int i = 0; i < 5000; i++) {
        char uid[16], msg[64];
        snprintf(uid, sizeof uid, "user%d", i);
        snprintf(msg, sizeof msg, "a message that takes some room %d", i);
        proto_record_t r = s_rec(uid, (uint64_t)i + 1, msg);
        ck_assert_int_eq(s_fill(n, uid, &r, 100000, &out), GW_NEAR_SERVE);
        gw_near_stats_t st = s_stats(n);
        ck_assert_uint_le(st.bytes, GW_NEAR_MIN_BYTES);
    }
    gw_near_stats_t st = s_stats(n);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_gt(st.items, 100);
    ck_assert_uint_lt(st.items, 5000);
    ck_assert_uint_eq(st.max_bytes, GW_NEAR_MIN_BYTES);
    /* an evicted user was current through the stream's position: an older answer is refused */
    int evicted = -1;
    for (int i = 0; i < 5000 && evicted < 0; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "user%d", i);
        if (s_get(n, uid, &out) == GW_NEAR_MISS)
            evicted = i;
    }
    ck_assert_int_ge(evicted, 0);
    char uid[16];
    snprintf(uid, sizeof uid, "user%d", evicted);
    proto_record_t r = s_rec(uid, 100001, "x");
    proto_change_t c = s_set(&r); /* it changes again (not resident: not inserted) */
    gw_near_apply(n, &c);
    ck_assert_int_eq(s_fill(n, uid, &r, 99999, &out), GW_NEAR_BEHIND);
    ck_assert_int_eq(s_fill(n, uid, &r, 100001, &out), GW_NEAR_SERVE);
    gw_near_destroy(&n);
}
END_TEST

/* The ghost table is bounded: a ghost pushed out of its slot folds into the global floor, so every
 * user stays covered by one or the other. */
START_TEST(test_ghost_fold)
{
    gw_near_t *n = gw_near_new(GW_NEAR_MIN_BYTES); /* not live: every answer served, none kept */
    proto_record_t out;
    for (int i = 0; i < 3000; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "g%d", i);
        ck_assert_int_eq(s_fill(n, uid, NULL, (uint64_t)i + 1, &out), GW_NEAR_SERVE_ABSENT);
    }
    ck_assert_uint_gt(gw_near_floor(n), 0); /* more users than slots: some ghosts were pushed out */
    ck_assert_uint_le(gw_near_floor(n), 3000);
    for (int i = 0; i < 3000; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "g%d", i);
        ck_assert_int_eq(s_fill(n, uid, NULL, (uint64_t)i, &out), GW_NEAR_BEHIND);
    }
    gw_near_destroy(&n);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * The model: never older than served, hits exact
 * ------------------------------------------------------------------------------------------------- */

#define M_KEYS 2000
#define M_CHANGES 60000
#define M_INFLIGHT 8 /* answers on their way at once (a real one takes about a loop turn) */

typedef struct mchange {
    int key;
    uint8_t kind;
    proto_record_t rec; /* SET: the record; TOUCH: the whole record after it (for checking) */
} mchange_t;

typedef struct model {
    mchange_t *log; /* log[1..seq] */
    uint64_t seq;
    uint64_t *hist[M_KEYS]; /* per key: the seqs of its changes, in order */
    uint32_t nhist[M_KEYS], caphist[M_KEYS];
    bool exists[M_KEYS];
    uint64_t served[M_KEYS]; /* the last state served: the seq of the change it shows (0: none yet) */
    uint64_t acked[M_KEYS];  /* the last write of the key this process had acknowledged (0: none) */
    uint64_t frontier;       /* the last write of any key this process had acknowledged */
} model_t;

typedef struct answer {
    int key;
    bool found;
    proto_record_t rec;
    uint64_t as_of;         /* the node's position: the key's own as_of */
    uint64_t reply_as_of;   /* the reply's: lower when other keys of a multi-get were older */
    uint64_t need, min_seq; /* the key's acknowledged write and the frontier when it was asked */
} answer_t;

static uint64_t s_rng;

static uint64_t s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

/* A user: half the time skewed toward the low numbers (a few hot users), else any of them (the
 * long tail, where evictions and their ghosts happen). */
static int s_key(void)
{
    uint64_t r = s_rand();
    return (int)(r & 1 ? s_rand() % (s_rand() % M_KEYS + 1) : (r >> 1) % M_KEYS);
}

static void s_uid(int key, char *out)
{
    snprintf(out, 16, "k%d", key);
}

/* The last change of key at or before s (0: none). */
static uint64_t s_state_at(const model_t *m, int key, uint64_t s)
{
    uint64_t best = 0;
    for (uint32_t i = 0; i < m->nhist[key] && m->hist[key][i] <= s; i++)
        best = m->hist[key][i];
    return best;
}

/* A write of key (-1: any user). */
static void s_model_write(model_t *m, proto_change_t *c, int key)
{
    if (key < 0)
        key = s_key();
    char uid[16];
    s_uid(key, uid);
    uint64_t seq = ++m->seq;
    mchange_t *mc = &m->log[seq];
    mc->key = key;
    int r = (int)(s_rand() % 10);
    if (!m->exists[key] || r < 5) {
        char msg[32];
        snprintf(msg, sizeof msg, "set %llu", (unsigned long long)seq);
        mc->kind = PROTO_CH_SET;
        mc->rec = s_rec(uid, seq, msg);
        *c = s_set(&mc->rec);
        m->exists[key] = true;
    } else if (r < 8) {
        mc->kind = PROTO_CH_TOUCH;
        *c = s_touch(uid, seq);
        uint64_t prev = s_state_at(m, key, seq - 1);
        mc->rec = m->log[prev].rec; /* the whole record after the touch */
        mc->rec.version = seq;
        mc->rec.last_seen_us = c->rec.last_seen_us;
        mc->rec.expires_at_us = c->rec.expires_at_us;
        mc->rec.ttl_s = c->rec.ttl_s;
        mc->rec.vis_last_seen_us = c->rec.vis_last_seen_us;
        mc->rec.pub_version = c->rec.pub_version;
        proto_record_set_node(&mc->rec, c->rec.node_id, c->rec.node_len);
    } else {
        mc->kind = PROTO_CH_DEL;
        *c = s_del(uid, seq);
        m->exists[key] = false;
    }
    if (m->nhist[key] == m->caphist[key]) {
        m->caphist[key] = m->caphist[key] ? m->caphist[key] * 2 : 8;
        m->hist[key] = realloc(m->hist[key], m->caphist[key] * sizeof *m->hist[key]);
    }
    m->hist[key][m->nhist[key]++] = seq;
}

/* A cache-node at position pos answers key: the state after every change up to pos. */
static answer_t s_node_answer(const model_t *m, int key, uint64_t pos)
{
    answer_t a = {.key = key, .as_of = pos};
    uint64_t s = s_state_at(m, key, pos);
    a.found = s && m->log[s].kind != PROTO_CH_DEL;
    if (a.found)
        a.rec = m->log[s].rec;
    return a;
}

/* Something was served for key showing the state of change `state` (0: absent from the start). */
static void s_served(model_t *m, int key, uint64_t state)
{
    ck_assert_msg(state >= m->served[key], "key k%d served state %llu after state %llu", key,
                  (unsigned long long)state, (unsigned long long)m->served[key]);
    m->served[key] = state;
}

/* Served "absent": the engine does not say as of which change, so take the earliest state at or
 * after the last one served in which the user is absent (the last served state itself when that
 * was absent; else the first DEL after it, which must exist by `to`). Returns that state. */
static uint64_t s_absent_state(const model_t *m, int key, uint64_t last, uint64_t to)
{
    if (!last || m->log[last].kind == PROTO_CH_DEL)
        return last;
    for (uint32_t i = 0; i < m->nhist[key] && m->hist[key][i] <= to; i++)
        if (m->hist[key][i] > last && m->log[m->hist[key][i]].kind == PROTO_CH_DEL)
            return m->hist[key][i];
    ck_abort_msg("key k%d served absent after state %llu, never deleted since", key, (unsigned long long)last);
    return 0;
}

/* Read-your-writes: a state served for key (absent: any state in which it is absent) is not older
 * than the write `need` of it this process had acknowledged when the read began. */
static void s_ryw(const model_t *m, int key, bool absent, uint64_t state, uint64_t need)
{
    if (!need)
        return;
    if (!absent) {
        ck_assert_msg(state >= need, "key k%d served state %llu after its write %llu was acknowledged", key,
                      (unsigned long long)state, (unsigned long long)need);
        return;
    }
    for (uint32_t i = 0; i < m->nhist[key]; i++)
        if (m->hist[key][i] >= need && m->log[m->hist[key][i]].kind == PROTO_CH_DEL)
            return;
    ck_abort_msg("key k%d served absent, but its write %llu was acknowledged and it was not deleted since", key,
                 (unsigned long long)need);
}

START_TEST(test_model_monotonic)
{
    s_rng = 0x9e3779b97f4a7c15ull * (uint64_t)(_i + 1);
    model_t *m = calloc(1, sizeof *m);
    m->log = calloc(M_CHANGES + 2, sizeof *m->log);
    proto_change_t *pending = calloc(M_CHANGES + 2, sizeof *pending); /* pending[s]: change s, to apply */
    uint64_t applied = 0;                                             /* the stream's position */
    uint64_t node[2] = {0, 0};                                         /* the cache-nodes' positions */
    answer_t inflight[M_INFLIGHT];
    int ninflight = 0;
    gw_near_t *n = gw_near_new(GW_NEAR_MIN_BYTES); /* ~300 entries for 700 keys: evictions all along */
    bool live = false;
    uint64_t hits = 0, served = 0, behind = 0;
    int stalled = 0; /* turns the stream delivers nothing while writes go on (a relay that has not
                      * noticed its restarted center yet) */
    while (m->seq < M_CHANGES) {
        int op = (int)(s_rand() % 1000);
        if (stalled)
            stalled--;
        else if (s_rand() % 1000 == 0)
            stalled = 200;
        if (op < 150) {
            /* a client often writes the user it wrote last, and reads it back */
            int mine = m->frontier && s_rand() % 3 == 0 ? m->log[m->frontier].key : -1;
            s_model_write(m, &pending[m->seq + 1], mine);
            int r = (int)(s_rand() % 6);
            if (r < 2) {
                /* This process's write, acknowledged: through this thread (its reply updates a resident
                 * entry) or another one (only the frontier moves); the owner node has it at once. */
                const mchange_t *mc = &m->log[m->seq];
                m->acked[mc->key] = m->frontier = m->seq;
                char uid[16];
                s_uid(mc->key, uid);
                if (r == 0 && mc->kind == PROTO_CH_DEL)
                    gw_near_deleted(n, uid, strlen(uid), m->seq);
                else if (r == 0)
                    gw_near_wrote(n, &mc->rec);
            }
        } else if (op < 300) {
            /* the stream applies a few changes */
            for (int k = (int)(s_rand() % 4); k >= 0 && applied < m->seq && !stalled; k--)
                gw_near_apply(n, &pending[++applied]);
        } else if (op < 360) {
            /* node 0 trails the store by up to 40 changes; node 1 is at its head, often ahead of
             * this thread's stream (while the region's stream stalls, they stay where they are) */
            uint64_t lag = s_rand() % 40, pos = m->seq > lag ? m->seq - lag : 0;
            if (pos > node[0] && !stalled)
                node[0] = pos;
            if (!stalled)
                node[1] = m->seq;
        } else if (op < 360 + (s_rand() % 4 == 0)) {
            /* the stream stops being live, or becomes live again */
            live = !live && (s_rand() % 3 != 0);
            gw_near_live(n, live, applied);
        } else if (op < 700) {
            int key = m->frontier && s_rand() % 4 == 0 ? m->log[m->frontier].key : s_key();
            char uid[16];
            s_uid(key, uid);
            proto_record_t out;
            int rc = gw_near_get(n, uid, strlen(uid), m->frontier, &out);
            if (rc == GW_NEAR_HIT) {
                hits++;
                ck_assert_uint_ge(out.version, s_state_at(m, key, applied)); /* current with the stream */
                const proto_record_t *want = &m->log[out.version].rec;
                ck_assert_int_eq(m->log[out.version].key, key);
                ck_assert_str_eq(out.message, want->message);
                ck_assert_str_eq(out.node_id, want->node_id);
                ck_assert_uint_eq(out.last_seen_us, want->last_seen_us);
                ck_assert_uint_eq(out.expires_at_us, want->expires_at_us);
                ck_assert_uint_eq(out.ttl_s, want->ttl_s);
                s_served(m, key, out.version);
                s_ryw(m, key, false, out.version, m->acked[key]);
            } else if (rc == GW_NEAR_ABSENT) {
                hits++;
                s_served(m, key, s_absent_state(m, key, m->served[key], m->seq));
                s_ryw(m, key, true, 0, m->acked[key]);
            } else if (ninflight < M_INFLIGHT) {
                /* ask a node: it answers as of its position now; the answer arrives later */
                uint64_t pos = node[s_rand() % 2];
                /* The owner node took the reply of a write it forwarded: it answers with that record
                 * (or newer) even when its stream is behind. */
                answer_t a = s_node_answer(m, key, pos < m->acked[key] ? m->acked[key] : pos);
                a.need = m->acked[key];
                a.min_seq = m->frontier;
                /* half the time a multi-get whose other keys were older: its as_of is lower */
                uint64_t lower = s_rand() % 2 ? s_rand() % 50 : 0;
                a.reply_as_of = a.as_of > lower ? a.as_of - lower : a.as_of;
                inflight[ninflight++] = a;
            }
        } else if (ninflight) {
            int i = (int)(s_rand() % (uint64_t)ninflight);
            answer_t a = inflight[i];
            inflight[i] = inflight[--ninflight];
            if (!a.as_of)
                continue; /* an empty store: nothing to say */
            char uid[16];
            s_uid(a.key, uid);
            proto_record_t out;
            /* as gw_nearcall.c fills: a record with the reply's as_of, "not found" with the key's
             * own (the reply's absent list) */
            uint64_t as_of = a.found ? a.reply_as_of : a.as_of;
            int rc = gw_near_fill(n, uid, strlen(uid), a.found ? &a.rec : NULL, as_of, a.min_seq, &out);
            if (rc == GW_NEAR_BEHIND) {
                behind++;
                continue; /* the real caller asks again */
            }
            served++;
            if (rc == GW_NEAR_SERVE) {
                s_served(m, a.key, out.version);
                s_ryw(m, a.key, false, out.version, a.need);
            } else {
                s_served(m, a.key, s_absent_state(m, a.key, m->served[a.key], m->seq));
                s_ryw(m, a.key, true, 0, a.need);
            }
        }
    }
    gw_near_stats_t st = s_stats(n);
    fprintf(stderr, "model %d: hits %llu served %llu behind %llu kept %llu evictions %llu drops %llu updates %llu\n", _i,
            (unsigned long long)hits, (unsigned long long)served, (unsigned long long)behind,
            (unsigned long long)st.fills_kept, (unsigned long long)st.evictions, (unsigned long long)st.drops,
            (unsigned long long)st.updates);
    /* the run exercised every path */
    ck_assert_uint_gt(hits, 1000);
    ck_assert_uint_gt(served, 1000);
    ck_assert_uint_gt(behind, 0);
    ck_assert_uint_gt(st.evictions, 0);
    ck_assert_uint_gt(st.drops, 0);
    ck_assert_uint_gt(st.updates, 0);
    ck_assert_uint_le(st.bytes, GW_NEAR_MIN_BYTES);
    gw_near_destroy(&n);
    for (int k = 0; k < M_KEYS; k++)
        free(m->hist[k]);
    free(m->log);
    free(m);
    free(pending);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("near");
    TCase *tc = tcase_create("life");
    tcase_add_test(tc, test_new_refuses_tiny);
    tcase_add_test(tc, test_pack_roundtrip);
    tcase_add_test(tc, test_pack_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("reads");
    tcase_add_test(tc, test_not_live);
    tcase_add_test(tc, test_fill_then_hit);
    tcase_add_test(tc, test_fill_behind_stream);
    tcase_add_test(tc, test_fill_absent);
    tcase_add_test(tc, test_fill_resident_newer);
    tcase_add_test(tc, test_min_seq);
    tcase_add_test(tc, test_fill_resident_behind_writes);
    tcase_add_test(tc, test_fill_read_through_ghost);
    tcase_add_test(tc, test_fill_mget_absent_as_of);
    suite_add_tcase(s, tc);
    tc = tcase_create("stream");
    tcase_add_test(tc, test_stream_updates);
    tcase_add_test(tc, test_stream_leaves_others);
    tcase_add_test(tc, test_touch_on_absent);
    tcase_add_test(tc, test_leave_live);
    tcase_add_test(tc, test_reset);
    tcase_add_test(tc, test_wrote);
    tcase_add_test(tc, test_deleted);
    suite_add_tcase(s, tc);
    tc = tcase_create("bound");
    tcase_add_test(tc, test_byte_bound);
    tcase_add_test(tc, test_ghost_fold);
    suite_add_tcase(s, tc);
    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_model_monotonic, 0, 4);
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
