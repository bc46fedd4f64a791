/* check_store.c -- Check suite for the LMDB presence store (store-node/store.h).
 *
 * Every test runs on a fresh LMDB directory made by mkdtemp in a checked fixture (so inside the
 * forked test) and removed in its teardown. Time is never read from the clock: every write and
 * sweep gets an explicit now_us derived from a fixed base (T0 = 1,700,000,000,000,000 us).
 *
 * Covered: the sequence (every change takes the next number, which is the record's version,
 * across ops, groups and reopen; the epoch survives reopen), PUT's updated_at rules, TOUCH (refresh,
 * revive, create, ttl 0, compact TOUCH changes), DEL (tombstones, NOTFOUND), batch and group
 * commits, map growth from a 1 MiB map (MDB_MAP_FULL must happen and be invisible) and the
 * map_size_max failure (nothing of the failed group visible), the sweeper (expiry at expires_at
 * and not before, purge after retention, next_due_us, the per-call action limit, tombstone
 * pruning and the floor), catch-up (exact contents, order, chunking, records-only, against a
 * model), the read API and store_get_info; replicated mode (the epoch from the first LEAD entry,
 * the applied index across reopen, command ids applied once within the window, identical
 * applies on two stores, a sweep entry, a compacting copy replacing another store's state).
 *
 * Single-threaded: reads are opened and closed by the test thread around writes (a read must not
 * be open while a write needs to grow the map).
 */
#include "store.h"
#include "util.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define T0 1700000000000000ULL
#define SEC 1000000ULL

/* ---------------------------------------------------------------------------------------------------
 * Fixture and helpers
 * ------------------------------------------------------------------------------------------------- */

static char s_dir[512];

static void s_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(s_dir, sizeof s_dir, "%s/check_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(s_dir));
}

static void s_rmtree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            s_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

static void s_teardown(void)
{
    s_rmtree(s_dir);
}

static store_config_t s_cfg(void)
{
    store_config_t c = {
        .path = s_dir,
        .sync_mode = STORE_SYNC_NONE,
        .map_size = 32u << 20,
        .map_size_max = 1ULL << 30,
        .retention_us = 30ULL * 86400 * SEC,
        .default_ttl_s = 3600,
        .log_max = 100000,
    };
    return c;
}

static store_t *s_open(const store_config_t *cfg)
{
    char err[STORE_ERR_LEN] = "";
    store_t *st = NULL;
    ck_assert_msg(store_open(cfg, &st, err) == 0, "store_open: %s", err);
    ck_assert_ptr_nonnull(st);
    return st;
}

static proto_record_t s_in(const char *uid, int status, const char *msg, uint32_t ttl, const char *node)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, node, strlen(node));
    r.status = (uint8_t)status;
    r.ttl_s = ttl;
    return r;
}

/* Apply one op in its own group; the commit must succeed. Returns the op's status. */
static uint8_t s_apply1(store_t *st, uint8_t type, const proto_record_t *in, uint32_t n, uint64_t now, proto_record_t *out,
                        uint64_t *as_of, store_changes_t *ch)
{
    store_op_t op = {.type = type, .n = n, .in = in, .out = out};
    char err[STORE_ERR_LEN] = "";
    store_changes_t scratch;
    store_changes_init(&scratch);
    int rc = store_apply(st, &op, 1, now, false, ch ? ch : &scratch, err);
    store_changes_fini(&scratch);
    ck_assert_msg(rc == 0, "store_apply: %s", err);
    if (as_of)
        *as_of = op.as_of;
    return op.status;
}

static proto_record_t s_put(store_t *st, uint64_t now, const char *uid, int status, const char *msg, uint32_t ttl,
                            store_changes_t *ch)
{
    proto_record_t in = s_in(uid, status, msg, ttl, "node-a"), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, now, &out, NULL, ch), PROTO_OK);
    return out;
}

static proto_record_t s_touch(store_t *st, uint64_t now, const char *uid, uint32_t ttl, const char *node,
                              store_changes_t *ch)
{
    proto_record_t in = s_in(uid, 0, "", ttl, node), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_TOUCH, &in, 1, now, &out, NULL, ch), PROTO_OK);
    return out;
}

static uint8_t s_del(store_t *st, uint64_t now, const char *uid, uint64_t *as_of, store_changes_t *ch)
{
    proto_record_t in = s_in(uid, 0, "", 0, "");
    return s_apply1(st, PROTO_DEL, &in, 1, now, NULL, as_of, ch);
}

/* Read one record through a fresh snapshot. */
static int s_get(store_t *st, const char *uid, proto_record_t *out)
{
    char err[STORE_ERR_LEN] = "";
    store_read_t *r = store_read_begin(st, err);
    ck_assert_msg(r != NULL, "store_read_begin: %s", err);
    int rc = store_read_get(r, uid, strlen(uid), out);
    store_read_end(&r);
    ck_assert_ptr_null(r);
    return rc;
}

static void s_rec_eq(const proto_record_t *a, const proto_record_t *b)
{
    ck_assert_str_eq(a->user_id, b->user_id);
    ck_assert_uint_eq(a->uid_len, b->uid_len);
    ck_assert_uint_eq(a->status, b->status);
    ck_assert_str_eq(a->message, b->message);
    ck_assert_uint_eq(a->msg_len, b->msg_len);
    ck_assert_uint_eq(a->last_seen_us, b->last_seen_us);
    ck_assert_uint_eq(a->updated_at_us, b->updated_at_us);
    ck_assert_uint_eq(a->expires_at_us, b->expires_at_us);
    ck_assert_str_eq(a->node_id, b->node_id);
    ck_assert_uint_eq(a->ttl_s, b->ttl_s);
    ck_assert_uint_eq(a->version, b->version);
}

/* The stored record must equal `want`. */
static void s_expect_stored(store_t *st, const proto_record_t *want)
{
    proto_record_t got;
    ck_assert_int_eq(s_get(st, want->user_id, &got), STORE_OK);
    s_rec_eq(&got, want);
}

static uint64_t s_last_seq(store_t *st)
{
    store_info_t info;
    store_get_info(st, &info);
    return info.last_seq;
}

/* ---------------------------------------------------------------------------------------------------
 * Sequence and versions
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_open_close_basics)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_ne(info.epoch, 0);
    ck_assert_uint_lt(info.epoch, 1ULL << 63); /* kept positive */
    ck_assert_uint_eq(info.epoch, store_epoch(st));
    ck_assert_uint_eq(info.last_seq, 0);
    ck_assert_uint_eq(info.log_floor, 0);
    ck_assert_uint_eq(info.records, 0);
    ck_assert_uint_eq(info.log_entries, 0);
    ck_assert_uint_ge(info.map_size, cfg.map_size);
    ck_assert_uint_gt(info.map_used, 0);
    ck_assert_uint_le(info.map_used, info.map_size);
    ck_assert_uint_eq(info.map_grows, 0);
    proto_record_t r;
    ck_assert_int_eq(s_get(st, "nobody", &r), STORE_NOTFOUND);
    char err[STORE_ERR_LEN];
    ck_assert_int_eq(store_flush(st, err), 0);
    ck_assert_int_ge(store_reader_check(st), 0);
    store_close(&st);
    ck_assert_ptr_null(st);
    store_close(&st); /* NULL is accepted */

    /* another directory gets another epoch */
    char other[600];
    snprintf(other, sizeof other, "%s/sub", s_dir);
    cfg.path = other; /* created if missing */
    store_t *st2 = s_open(&cfg);
    ck_assert_uint_ne(store_epoch(st2), info.epoch);
    store_close(&st2);

    /* an impossible path is an error with a message */
    cfg.path = "/proc/definitely/not/here";
    st2 = NULL;
    err[0] = '\0';
    ck_assert_int_eq(store_open(&cfg, &st2, err), -1);
    ck_assert_ptr_null(st2);
    ck_assert(err[0] != '\0');

    /* a path longer than the store keeps is an error, not a silently shortened path (which
     * would open some other directory) */
    char longp[1200];
    int n = snprintf(longp, sizeof longp, "%s/", s_dir);
    memset(longp + n, 'd', sizeof longp - (size_t)n - 1);
    longp[sizeof longp - 1] = '\0';
    longp[n + 200] = '/'; /* keep each component under NAME_MAX */
    longp[n + 400] = '/';
    longp[n + 600] = '/';
    longp[n + 800] = '/';
    for (int k = 200; k <= 800; k += 200) { /* every parent exists: only the last level is new */
        longp[n + k] = '\0';
        ck_assert_int_eq(mkdir(longp, 0700), 0);
        longp[n + k] = '/';
    }
    cfg = s_cfg();
    cfg.path = longp;
    err[0] = '\0';
    st2 = NULL;
    int rc = store_open(&cfg, &st2, err);
    if (rc == 0) {
        /* accepted: then it must really live at that path */
        char want[1300];
        snprintf(want, sizeof want, "%s/data.mdb", longp);
        struct stat sb;
        ck_assert_msg(stat(want, &sb) == 0, "store opened somewhere else than %s", longp);
        store_close(&st2);
    } else {
        ck_assert(err[0] != '\0');
        /* and nothing was created at a shortened path */
        char shortp[600];
        snprintf(shortp, sizeof shortp, "%.*s", 511, longp);
        struct stat sb;
        ck_assert_msg(stat(shortp, &sb) != 0, "created a shortened path");
    }

    ck_assert_str_eq(store_sync_mode_name(STORE_SYNC_FULL), "full");
    ck_assert_str_eq(store_sync_mode_name(STORE_SYNC_NOMETA), "nometa");
    ck_assert_str_eq(store_sync_mode_name(STORE_SYNC_NONE), "none");
}
END_TEST

START_TEST(test_sequence_across_ops_and_reopen)
{
    store_config_t cfg = s_cfg();
    cfg.sync_mode = STORE_SYNC_FULL; /* what survives close must be on disk */
    store_t *st = s_open(&cfg);
    uint64_t epoch = store_epoch(st);
    store_changes_t ch;
    store_changes_init(&ch);

    proto_record_t a = s_put(st, T0, "alice", PRESENCE_ONLINE, "hi", 60, &ch);
    ck_assert_uint_eq(a.version, 1);
    proto_record_t b = s_put(st, T0 + 1, "bob", PRESENCE_BUSY, "", 60, &ch);
    ck_assert_uint_eq(b.version, 2);
    proto_record_t a2 = s_touch(st, T0 + 2, "alice", 0, "node-b", &ch);
    ck_assert_uint_eq(a2.version, 3);
    uint64_t as_of = 0;
    ck_assert_uint_eq(s_del(st, T0 + 3, "bob", &as_of, &ch), PROTO_OK);
    ck_assert_uint_eq(as_of, 4);
    proto_record_t a3 = s_put(st, T0 + 4, "alice", PRESENCE_AWAY, "lunch", 60, &ch);
    ck_assert_uint_eq(a3.version, 5);
    /* the changes carry the same numbers, in order */
    ck_assert_uint_eq(ch.n, 5);
    for (size_t i = 0; i < ch.n; i++)
        ck_assert_uint_eq(ch.v[i].rec.version, i + 1);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
    ck_assert_uint_eq(ch.v[2].kind, PROTO_CH_TOUCH);
    ck_assert_uint_eq(ch.v[3].kind, PROTO_CH_DEL);
    ck_assert_uint_eq(s_last_seq(st), 5);
    store_close(&st);

    /* reopen: same epoch, the sequence continues, the data is there */
    st = s_open(&cfg);
    ck_assert_uint_eq(store_epoch(st), epoch);
    ck_assert_uint_eq(s_last_seq(st), 5);
    s_expect_stored(st, &a3);
    proto_record_t r;
    ck_assert_int_eq(s_get(st, "bob", &r), STORE_NOTFOUND);
    store_changes_reset(&ch);
    proto_record_t c = s_put(st, T0 + 5, "carol", PRESENCE_ONLINE, "", 60, &ch);
    ck_assert_uint_eq(c.version, 6);
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_uint_eq(ch.v[0].rec.version, 6);
    store_close(&st);

    /* and once more, in another sync mode */
    cfg.sync_mode = STORE_SYNC_NOMETA;
    st = s_open(&cfg);
    ck_assert_uint_eq(store_epoch(st), epoch);
    proto_record_t c2 = s_touch(st, T0 + 6, "carol", 0, "node-a", &ch);
    ck_assert_uint_eq(c2.version, 7);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.last_seq, 7);
    ck_assert_uint_eq(info.records, 2);
    ck_assert_uint_eq(info.log_entries, 7); /* one changelog entry per change */
    store_close(&st);
    store_changes_fini(&ch);
}
END_TEST

START_TEST(test_put_fields)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t in = s_in("user.name+tag@example.com", PRESENCE_BUSY, "in a meeting \xe2\x98\x95", 90, "eu-1"), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + 123, &out, NULL, &ch), PROTO_OK);
    ck_assert_str_eq(out.user_id, in.user_id);
    ck_assert_uint_eq(out.status, PRESENCE_BUSY);
    ck_assert_str_eq(out.message, in.message);
    ck_assert_str_eq(out.node_id, "eu-1");
    ck_assert_uint_eq(out.ttl_s, 90);
    ck_assert_uint_eq(out.last_seen_us, T0 + 123);
    ck_assert_uint_eq(out.updated_at_us, T0 + 123);
    ck_assert_uint_eq(out.expires_at_us, T0 + 123 + 90 * SEC);
    ck_assert_uint_eq(out.version, 1);
    s_expect_stored(st, &out);
    /* the change is the record exactly as stored */
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
    s_rec_eq(&ch.v[0].rec, &out);
    ck_assert_uint_eq(store_due_us(st, &out), out.expires_at_us);
    /* an offline record is due for purge at last_seen + retention */
    proto_record_t off = s_put(st, T0 + 200, "gone", PRESENCE_OFFLINE, "", 60, &ch);
    ck_assert_uint_eq(store_due_us(st, &off), T0 + 200 + cfg.retention_us);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

START_TEST(test_put_updated_at)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    proto_record_t r = s_put(st, T0, "alice", PRESENCE_ONLINE, "hi", 60, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0);
    /* same status and message: updated_at kept, the rest refreshed */
    r = s_put(st, T0 + 5 * SEC, "alice", PRESENCE_ONLINE, "hi", 60, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0);
    ck_assert_uint_eq(r.last_seen_us, T0 + 5 * SEC);
    ck_assert_uint_eq(r.expires_at_us, T0 + 65 * SEC);
    ck_assert_uint_eq(r.version, 2);
    /* a different ttl or node is not a status change either */
    r = s_put(st, T0 + 6 * SEC, "alice", PRESENCE_ONLINE, "hi", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0);
    ck_assert_uint_eq(r.ttl_s, 120);
    /* message changes */
    r = s_put(st, T0 + 7 * SEC, "alice", PRESENCE_ONLINE, "bye", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0 + 7 * SEC);
    /* a message that is a prefix of the old one is a change */
    r = s_put(st, T0 + 8 * SEC, "alice", PRESENCE_ONLINE, "by", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0 + 8 * SEC);
    r = s_put(st, T0 + 9 * SEC, "alice", PRESENCE_ONLINE, "", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0 + 9 * SEC);
    /* status changes */
    r = s_put(st, T0 + 10 * SEC, "alice", PRESENCE_AWAY, "", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0 + 10 * SEC);
    r = s_put(st, T0 + 11 * SEC, "alice", PRESENCE_AWAY, "", 120, NULL);
    ck_assert_uint_eq(r.updated_at_us, T0 + 10 * SEC);
    s_expect_stored(st, &r);

    /* an expired (not yet swept) record counts as offline */
    proto_record_t b = s_put(st, T0, "bob", PRESENCE_BUSY, "x", 10, NULL);
    ck_assert_uint_eq(b.updated_at_us, T0);
    b = s_put(st, T0 + 9 * SEC, "bob", PRESENCE_BUSY, "x", 10, NULL); /* still live: no change */
    ck_assert_uint_eq(b.updated_at_us, T0);
    b = s_put(st, T0 + 30 * SEC, "bob", PRESENCE_BUSY, "x", 10, NULL); /* expired at T0+19: offline -> busy */
    ck_assert_uint_eq(b.updated_at_us, T0 + 30 * SEC);
    /* exactly at expires_at the record is expired */
    b = s_put(st, T0 + 40 * SEC, "bob", PRESENCE_BUSY, "x", 10, NULL);
    ck_assert_uint_eq(b.expires_at_us, T0 + 50 * SEC);
    b = s_put(st, T0 + 50 * SEC, "bob", PRESENCE_BUSY, "x", 10, NULL);
    ck_assert_uint_eq(b.updated_at_us, T0 + 50 * SEC);

    /* an expired record PUT offline without a message: it already was offline (since its
     * expires_at, as every reader was shown), so updated_at is when it went offline */
    proto_record_t c = s_put(st, T0, "carol", PRESENCE_ONLINE, "busy day", 10, NULL);
    c = s_put(st, T0 + 100 * SEC, "carol", PRESENCE_OFFLINE, "", 10, NULL);
    ck_assert_uint_eq(c.status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(c.updated_at_us, T0 + 10 * SEC);
    /* ... but with a message it is a change */
    proto_record_t d = s_put(st, T0, "dave", PRESENCE_ONLINE, "", 10, NULL);
    d = s_put(st, T0 + 100 * SEC, "dave", PRESENCE_OFFLINE, "gone fishing", 10, NULL);
    ck_assert_uint_eq(d.updated_at_us, T0 + 100 * SEC);
    /* offline -> offline with the same message keeps updated_at */
    d = s_put(st, T0 + 200 * SEC, "dave", PRESENCE_OFFLINE, "gone fishing", 10, NULL);
    ck_assert_uint_eq(d.updated_at_us, T0 + 100 * SEC);
    s_expect_stored(st, &d);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * TOUCH and DEL
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_touch)
{
    store_config_t cfg = s_cfg();
    cfg.default_ttl_s = 777;
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);

    /* a live record: refresh last_seen/expires_at and node, keep status/message/updated_at/ttl */
    proto_record_t a = s_put(st, T0, "alice", PRESENCE_BUSY, "focus", 60, &ch);
    store_changes_reset(&ch);
    proto_record_t t = s_touch(st, T0 + 30 * SEC, "alice", 0, "node-b", &ch);
    ck_assert_uint_eq(t.status, PRESENCE_BUSY);
    ck_assert_str_eq(t.message, "focus");
    ck_assert_uint_eq(t.updated_at_us, a.updated_at_us);
    ck_assert_uint_eq(t.ttl_s, 60);
    ck_assert_uint_eq(t.last_seen_us, T0 + 30 * SEC);
    ck_assert_uint_eq(t.expires_at_us, T0 + 90 * SEC);
    ck_assert_str_eq(t.node_id, "node-b");
    ck_assert_uint_eq(t.version, a.version + 1);
    s_expect_stored(st, &t);
    /* the compact TOUCH change */
    ck_assert_uint_eq(ch.n, 1);
    const proto_change_t *c = &ch.v[0];
    ck_assert_uint_eq(c->kind, PROTO_CH_TOUCH);
    ck_assert_str_eq(c->rec.user_id, "alice");
    ck_assert_uint_eq(c->rec.version, t.version);
    ck_assert_uint_eq(c->rec.last_seen_us, t.last_seen_us);
    ck_assert_uint_eq(c->rec.expires_at_us, t.expires_at_us);
    ck_assert_str_eq(c->rec.node_id, "node-b");
    ck_assert_uint_eq(c->rec.ttl_s, 60);

    /* ttl given: it replaces the record's */
    store_changes_reset(&ch);
    t = s_touch(st, T0 + 40 * SEC, "alice", 300, "node-b", &ch);
    ck_assert_uint_eq(t.ttl_s, 300);
    ck_assert_uint_eq(t.expires_at_us, T0 + 340 * SEC);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_TOUCH);
    ck_assert_uint_eq(ch.v[0].rec.ttl_s, 300);
    /* one microsecond before expiry it is still live */
    store_changes_reset(&ch);
    t = s_touch(st, T0 + 340 * SEC - 1, "alice", 0, "node-b", &ch);
    ck_assert_uint_eq(t.status, PRESENCE_BUSY);
    ck_assert_str_eq(t.message, "focus");
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_TOUCH);

    /* an offline record comes back online, message cleared, a SET change */
    s_put(st, T0, "bob", PRESENCE_OFFLINE, "bye", 60, NULL);
    store_changes_reset(&ch);
    t = s_touch(st, T0 + 5 * SEC, "bob", 0, "node-c", &ch);
    ck_assert_uint_eq(t.status, PRESENCE_ONLINE);
    ck_assert_uint_eq(t.msg_len, 0);
    ck_assert_str_eq(t.message, "");
    ck_assert_uint_eq(t.updated_at_us, T0 + 5 * SEC);
    ck_assert_uint_eq(t.last_seen_us, T0 + 5 * SEC);
    ck_assert_uint_eq(t.expires_at_us, T0 + 65 * SEC);
    ck_assert_uint_eq(t.ttl_s, 60);
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
    s_rec_eq(&ch.v[0].rec, &t);
    s_expect_stored(st, &t);

    /* an expired record (exactly at expires_at) likewise */
    s_put(st, T0, "carol", PRESENCE_AWAY, "brb", 10, NULL);
    store_changes_reset(&ch);
    t = s_touch(st, T0 + 10 * SEC, "carol", 20, "node-a", &ch);
    ck_assert_uint_eq(t.status, PRESENCE_ONLINE);
    ck_assert_str_eq(t.message, "");
    ck_assert_uint_eq(t.updated_at_us, T0 + 10 * SEC);
    ck_assert_uint_eq(t.ttl_s, 20);
    ck_assert_uint_eq(t.expires_at_us, T0 + 30 * SEC);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);

    /* a missing record is created online with the default ttl (ttl 0) or the given one */
    store_changes_reset(&ch);
    t = s_touch(st, T0 + 7, "dave", 0, "node-d", &ch);
    ck_assert_uint_eq(t.status, PRESENCE_ONLINE);
    ck_assert_uint_eq(t.msg_len, 0);
    ck_assert_uint_eq(t.ttl_s, 777);
    ck_assert_uint_eq(t.last_seen_us, T0 + 7);
    ck_assert_uint_eq(t.updated_at_us, T0 + 7);
    ck_assert_uint_eq(t.expires_at_us, T0 + 7 + 777 * SEC);
    ck_assert_str_eq(t.node_id, "node-d");
    ck_assert_str_eq(t.user_id, "dave");
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
    s_rec_eq(&ch.v[0].rec, &t);
    s_expect_stored(st, &t);
    t = s_touch(st, T0 + 8, "erin", 42, "node-d", &ch);
    ck_assert_uint_eq(t.ttl_s, 42);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

START_TEST(test_del)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    s_put(st, T0, "alice", PRESENCE_ONLINE, "", 60, &ch);
    s_put(st, T0, "bob", PRESENCE_ONLINE, "", 60, &ch);
    store_changes_reset(&ch);
    uint64_t as_of = 0;
    ck_assert_uint_eq(s_del(st, T0 + 1, "alice", &as_of, &ch), PROTO_OK);
    ck_assert_uint_eq(as_of, 3);
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_DEL);
    ck_assert_str_eq(ch.v[0].rec.user_id, "alice");
    ck_assert_uint_eq(ch.v[0].rec.version, 3);
    proto_record_t r;
    ck_assert_int_eq(s_get(st, "alice", &r), STORE_NOTFOUND);
    ck_assert_int_eq(s_get(st, "bob", &r), STORE_OK);

    /* unknown and already deleted: NOTFOUND, no change, no sequence consumed, as_of = current */
    store_changes_reset(&ch);
    as_of = 0;
    ck_assert_uint_eq(s_del(st, T0 + 2, "alice", &as_of, &ch), PROTO_NOTFOUND);
    ck_assert_uint_eq(as_of, 3);
    ck_assert_uint_eq(s_del(st, T0 + 2, "nobody", &as_of, &ch), PROTO_NOTFOUND);
    ck_assert_uint_eq(as_of, 3);
    ck_assert_uint_eq(ch.n, 0);
    ck_assert_uint_eq(s_last_seq(st), 3);

    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.records, 1);
    ck_assert_uint_eq(info.log_entries, 3);

    /* a new record after a delete starts at the next sequence */
    proto_record_t a = s_put(st, T0 + 3, "alice", PRESENCE_AWAY, "back", 60, &ch);
    ck_assert_uint_eq(a.version, 4);
    ck_assert_uint_eq(a.updated_at_us, T0 + 3);
    /* deleting an offline record works too */
    s_put(st, T0 + 4, "bob", PRESENCE_OFFLINE, "", 60, &ch);
    ck_assert_uint_eq(s_del(st, T0 + 5, "bob", &as_of, &ch), PROTO_OK);
    ck_assert_uint_eq(as_of, 6);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Batches and groups
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_batch_put)
{
    enum { N = 2000 };
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    s_put(st, T0, "first", PRESENCE_ONLINE, "", 60, &ch);
    store_changes_reset(&ch);
    proto_record_t *in = calloc(N, sizeof *in), *out = calloc(N, sizeof *out);
    for (int i = 0; i < N; i++) {
        char uid[32], msg[64];
        snprintf(uid, sizeof uid, "batch-%05d", i);
        snprintf(msg, sizeof msg, "message %d", i);
        in[i] = s_in(uid, i % 4, msg, (uint32_t)(10 + i), "node-b");
    }
    uint64_t as_of = 0;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, in, N, T0 + SEC, out, &as_of, &ch), PROTO_OK);
    /* consecutive versions in item order, as_of is the last */
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(out[i].version, 2 + (uint64_t)i);
        ck_assert_str_eq(out[i].user_id, in[i].user_id);
        ck_assert_uint_eq(out[i].ttl_s, in[i].ttl_s);
        ck_assert_uint_eq(out[i].last_seen_us, T0 + SEC);
    }
    ck_assert_uint_eq(as_of, 1 + N);
    ck_assert_uint_eq(ch.n, N);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(ch.v[i].kind, PROTO_CH_SET);
        s_rec_eq(&ch.v[i].rec, &out[i]);
    }
    ck_assert_uint_eq(s_last_seq(st), 1 + N);
    for (int i = 0; i < N; i += 97)
        s_expect_stored(st, &out[i]);

    /* the same user twice in one batch: both applied in order, the last one stays */
    proto_record_t dup[2] = {s_in("twice", PRESENCE_BUSY, "one", 60, "n"), s_in("twice", PRESENCE_AWAY, "two", 60, "n")};
    proto_record_t dout[2];
    store_changes_reset(&ch);
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, dup, 2, T0 + 2 * SEC, dout, &as_of, &ch), PROTO_OK);
    ck_assert_uint_eq(dout[1].version, dout[0].version + 1);
    ck_assert_uint_eq(as_of, dout[1].version);
    s_expect_stored(st, &dout[1]);
    ck_assert_uint_eq(ch.n, 2);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.records, 1 + N + 1);
    free(in);
    free(out);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

START_TEST(test_group_of_ops)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    s_put(st, T0, "existing", PRESENCE_AWAY, "x", 60, &ch); /* seq 1 */
    store_changes_reset(&ch);

    proto_record_t in_a = s_in("alice", PRESENCE_ONLINE, "hi", 60, "n1");
    proto_record_t in_b = s_in("bob", 0, "", 0, "n1");
    proto_record_t in_c = s_in("nobody", 0, "", 0, "");
    proto_record_t in_ad = s_in("alice", 0, "", 0, "");
    proto_record_t in_e[2] = {s_in("existing", PRESENCE_BUSY, "y", 60, "n2"), s_in("dora", PRESENCE_BUSY, "", 60, "n2")};
    proto_record_t out_a, out_b, out_e[2];
    store_op_t ops[5] = {
        {.type = PROTO_PUT, .n = 1, .in = &in_a, .out = &out_a},
        {.type = PROTO_TOUCH, .n = 1, .in = &in_b, .out = &out_b},
        {.type = PROTO_DEL, .n = 1, .in = &in_c},
        {.type = PROTO_DEL, .n = 1, .in = &in_ad}, /* sees the PUT earlier in the same group */
        {.type = PROTO_PUT, .n = 2, .in = in_e, .out = out_e},
    };
    char err[STORE_ERR_LEN] = "";
    ck_assert_msg(store_apply(st, ops, 5, T0 + SEC, false, &ch, err) == 0, "%s", err);
    ck_assert_uint_eq(ops[0].status, PROTO_OK);
    ck_assert_uint_eq(out_a.version, 2);
    ck_assert_uint_eq(ops[0].as_of, 2);
    ck_assert_uint_eq(ops[1].status, PROTO_OK);
    ck_assert_uint_eq(out_b.version, 3);
    ck_assert_uint_eq(out_b.ttl_s, 3600);
    ck_assert_uint_eq(ops[1].as_of, 3);
    ck_assert_uint_eq(ops[2].status, PROTO_NOTFOUND);
    ck_assert_uint_eq(ops[2].as_of, 3);
    ck_assert_uint_eq(ops[3].status, PROTO_OK);
    ck_assert_uint_eq(ops[3].as_of, 4);
    ck_assert_uint_eq(ops[4].status, PROTO_OK);
    ck_assert_uint_eq(out_e[0].version, 5);
    ck_assert_uint_eq(out_e[1].version, 6);
    ck_assert_uint_eq(ops[4].as_of, 6);
    ck_assert_uint_eq(out_e[0].updated_at_us, T0 + SEC); /* away "x" -> busy "y" */

    /* changes: SET alice 2, SET bob 3, DEL alice 4, SET existing 5, SET dora 6 */
    static const uint8_t kinds[] = {PROTO_CH_SET, PROTO_CH_SET, PROTO_CH_DEL, PROTO_CH_SET, PROTO_CH_SET};
    static const char *const uids[] = {"alice", "bob", "alice", "existing", "dora"};
    ck_assert_uint_eq(ch.n, 5);
    for (size_t i = 0; i < 5; i++) {
        ck_assert_uint_eq(ch.v[i].kind, kinds[i]);
        ck_assert_str_eq(ch.v[i].rec.user_id, uids[i]);
        ck_assert_uint_eq(ch.v[i].rec.version, 2 + i);
    }
    proto_record_t r;
    ck_assert_int_eq(s_get(st, "alice", &r), STORE_NOTFOUND);
    s_expect_stored(st, &out_b);
    s_expect_stored(st, &out_e[0]);
    s_expect_stored(st, &out_e[1]);
    ck_assert_uint_eq(s_last_seq(st), 6);

    /* a group without changes commits nothing and consumes no sequence */
    store_changes_reset(&ch);
    store_op_t none = {.type = PROTO_DEL, .n = 1, .in = &in_c};
    ck_assert_int_eq(store_apply(st, &none, 1, T0 + 2 * SEC, false, &ch, err), 0);
    ck_assert_uint_eq(none.status, PROTO_NOTFOUND);
    ck_assert_uint_eq(ch.n, 0);
    ck_assert_uint_eq(s_last_seq(st), 6);
    /* changes are appended after what the list already holds */
    s_put(st, T0 + 3 * SEC, "late", PRESENCE_ONLINE, "", 60, &ch);
    s_put(st, T0 + 3 * SEC, "later", PRESENCE_ONLINE, "", 60, &ch);
    ck_assert_uint_eq(ch.n, 2);
    ck_assert_uint_eq(ch.v[0].rec.version, 7);
    ck_assert_uint_eq(ch.v[1].rec.version, 8);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Map growth
 * ------------------------------------------------------------------------------------------------- */

static void s_mk_item(proto_record_t *r, int i)
{
    char uid[48], msg[PROTO_MESSAGE_MAX + 1];
    snprintf(uid, sizeof uid, "grow-user-%06d@example.com", i);
    memset(msg, 'a' + i % 26, 200);
    snprintf(msg, sizeof msg, "%06d", i);
    msg[6] = '-';
    msg[200] = '\0';
    *r = s_in(uid, i % 3, msg, 3600, "node-grow");
}

START_TEST(test_map_growth)
{
    enum { N = 20000, PER = 100 };
    store_config_t cfg = s_cfg();
    cfg.map_size = 1u << 20; /* the minimum */
    cfg.map_size_max = 1ULL << 30;
    store_t *st = s_open(&cfg);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.map_size, 1u << 20);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t *in = calloc(PER, sizeof *in), *out = calloc(PER, sizeof *out);
    uint64_t expect_seq = 0;
    for (int g = 0; g < N / PER; g++) {
        for (int k = 0; k < PER; k++)
            s_mk_item(&in[k], g * PER + k);
        /* alternate one batch op with a group of single ops */
        char err[STORE_ERR_LEN] = "";
        store_changes_reset(&ch);
        if (g % 2 == 0) {
            store_op_t op = {.type = PROTO_PUT, .n = PER, .in = in, .out = out};
            ck_assert_msg(store_apply(st, &op, 1, T0 + (uint64_t)g, false, &ch, err) == 0, "group %d: %s", g, err);
            ck_assert_uint_eq(op.status, PROTO_OK);
        } else {
            store_op_t ops[PER];
            for (int k = 0; k < PER; k++)
                ops[k] = (store_op_t){.type = PROTO_PUT, .n = 1, .in = &in[k], .out = &out[k]};
            ck_assert_msg(store_apply(st, ops, PER, T0 + (uint64_t)g, g % 2 == 0, &ch, err) == 0, "group %d: %s", g, err);
            for (int k = 0; k < PER; k++)
                ck_assert_uint_eq(ops[k].status, PROTO_OK);
        }
        /* a re-run group must not duplicate changes or skip sequence numbers */
        ck_assert_uint_eq(ch.n, PER);
        for (int k = 0; k < PER; k++) {
            ck_assert_uint_eq(out[k].version, ++expect_seq);
            ck_assert_uint_eq(ch.v[k].rec.version, expect_seq);
        }
    }
    store_get_info(st, &info);
    ck_assert_msg(info.map_grows > 0, "MDB_MAP_FULL never happened (map %llu bytes)", (unsigned long long)info.map_size);
    ck_assert_uint_gt(info.map_size, 1u << 20);
    ck_assert_uint_le(info.map_size, cfg.map_size_max);
    ck_assert_uint_le(info.map_used, info.map_size);
    ck_assert_uint_eq(info.records, N);
    ck_assert_uint_eq(info.last_seq, N);

    /* every record reads back */
    char err[STORE_ERR_LEN] = "";
    store_read_t *r = store_read_begin(st, err);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < N; i++) {
        proto_record_t want, got;
        s_mk_item(&want, i);
        ck_assert_int_eq(store_read_get(r, want.user_id, want.uid_len, &got), STORE_OK);
        ck_assert_str_eq(got.message, want.message);
        ck_assert_uint_eq(got.msg_len, 200);
        ck_assert_uint_eq(got.status, want.status);
        ck_assert_uint_eq(got.version, (uint64_t)i + 1);
    }
    store_read_end(&r);
    store_close(&st);

    /* reopening with the small initial size works: the map covers the data, and writes grow it
     * again as needed */
    st = s_open(&cfg);
    store_get_info(st, &info);
    ck_assert_uint_ge(info.map_size, info.map_used);
    ck_assert_uint_eq(info.records, N);
    for (int g = 0; g < 20; g++) {
        for (int k = 0; k < PER; k++)
            s_mk_item(&in[k], N + g * PER + k);
        store_op_t op = {.type = PROTO_PUT, .n = PER, .in = in, .out = out};
        store_changes_reset(&ch);
        ck_assert_msg(store_apply(st, &op, 1, T0 + SEC, false, &ch, err) == 0, "after reopen: %s", err);
        ck_assert_uint_eq(out[0].version, (uint64_t)N + (uint64_t)g * PER + 1);
    }
    store_get_info(st, &info);
    ck_assert_uint_eq(info.records, N + 20 * PER);
    proto_record_t want, got;
    s_mk_item(&want, 12345);
    ck_assert_int_eq(s_get(st, want.user_id, &got), STORE_OK);
    ck_assert_str_eq(got.message, want.message);
    store_close(&st);
    free(in);
    free(out);
    store_changes_fini(&ch);
}
END_TEST

START_TEST(test_map_size_max)
{
    enum { PER = 50 };
    store_config_t cfg = s_cfg();
    cfg.map_size = 1u << 20;
    cfg.map_size_max = 2u << 20; /* one doubling allowed, then full */
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t in[PER], out[PER];
    int g, failed_group = -1;
    uint64_t seq_before = 0;
    for (g = 0; g < 1000; g++) {
        for (int k = 0; k < PER; k++)
            s_mk_item(&in[k], g * PER + k);
        store_op_t ops[2] = {
            {.type = PROTO_PUT, .n = PER / 2, .in = in, .out = out},
            {.type = PROTO_PUT, .n = PER / 2, .in = in + PER / 2, .out = out + PER / 2},
        };
        char err[STORE_ERR_LEN] = "";
        size_t before = ch.n;
        seq_before = s_last_seq(st);
        int rc = store_apply(st, ops, 2, T0 + (uint64_t)g, false, &ch, err);
        if (rc == 0) {
            ck_assert_uint_eq(ch.n, before + PER);
            continue;
        }
        ck_assert_int_eq(rc, -1);
        ck_assert_msg(err[0] != '\0', "no error message");
        ck_assert_uint_eq(ops[0].status, PROTO_EINTERNAL);
        ck_assert_uint_eq(ops[1].status, PROTO_EINTERNAL);
        ck_assert_uint_eq(ch.n, before); /* no change of the failed group is reported */
        failed_group = g;
        break;
    }
    ck_assert_msg(failed_group > 0, "the map never filled up");
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.map_size, cfg.map_size_max);
    ck_assert_uint_eq(info.map_grows, 1);
    ck_assert_uint_eq(info.last_seq, seq_before);
    ck_assert_uint_eq(info.records, (uint64_t)failed_group * PER);
    /* nothing of the failed group is visible; everything before it is */
    for (int k = 0; k < PER; k++) {
        proto_record_t r;
        ck_assert_int_eq(s_get(st, in[k].user_id, &r), STORE_NOTFOUND);
    }
    for (int i = 0; i < failed_group * PER; i += 37) {
        proto_record_t want, got;
        s_mk_item(&want, i);
        ck_assert_int_eq(s_get(st, want.user_id, &got), STORE_OK);
        ck_assert_uint_eq(got.version, (uint64_t)i + 1);
    }
    /* a later write of the same size fails the same way and still leaves the store intact */
    char err[STORE_ERR_LEN] = "";
    store_op_t again = {.type = PROTO_PUT, .n = PER, .in = in, .out = out};
    ck_assert_int_eq(store_apply(st, &again, 1, T0 + 5000, false, &ch, err), -1);
    ck_assert_uint_eq(s_last_seq(st), seq_before);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Sweeper
 * ------------------------------------------------------------------------------------------------- */

static int s_sweep(store_t *st, uint64_t now, uint32_t max, store_changes_t *ch, uint64_t *next, uint64_t *expired,
                   uint64_t *purged)
{
    char err[STORE_ERR_LEN] = "";
    uint64_t e = 0, p = 0, nd = 0;
    int n = store_sweep(st, now, max, ch, &nd, &e, &p, err);
    ck_assert_msg(n >= 0, "store_sweep: %s", err);
    if (next)
        *next = nd;
    if (expired)
        *expired = e;
    if (purged)
        *purged = p;
    return n;
}

START_TEST(test_sweep_expiry_and_purge)
{
    store_config_t cfg = s_cfg();
    cfg.retention_us = 60 * SEC;
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    uint64_t next = 0, exp = 0, pur = 0;

    /* nothing to do on an empty store */
    ck_assert_int_eq(s_sweep(st, T0, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, UINT64_MAX);

    proto_record_t a = s_put(st, T0, "alice", PRESENCE_BUSY, "meeting", 10, &ch); /* expires T0+10 */
    proto_record_t b = s_put(st, T0, "bob", PRESENCE_AWAY, "", 20, &ch);          /* expires T0+20 */
    store_changes_reset(&ch);

    /* not before expires_at */
    ck_assert_int_eq(s_sweep(st, T0 + 10 * SEC - 1, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, T0 + 10 * SEC);
    ck_assert_uint_eq(ch.n, 0);
    s_expect_stored(st, &a);

    /* at expires_at: offline, message cleared, last_seen kept, new version, updated_at = expires_at */
    ck_assert_int_eq(s_sweep(st, T0 + 10 * SEC, 100, &ch, &next, &exp, &pur), 1);
    ck_assert_uint_eq(exp, 1);
    ck_assert_uint_eq(pur, 0);
    ck_assert_uint_eq(ch.n, 1);
    const proto_record_t *x = &ch.v[0].rec;
    ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
    ck_assert_str_eq(x->user_id, "alice");
    ck_assert_uint_eq(x->status, PRESENCE_OFFLINE);
    ck_assert_uint_eq(x->msg_len, 0);
    ck_assert_str_eq(x->message, "");
    ck_assert_uint_eq(x->last_seen_us, a.last_seen_us);
    ck_assert_uint_eq(x->updated_at_us, a.expires_at_us);
    ck_assert_uint_eq(x->expires_at_us, a.expires_at_us);
    ck_assert_uint_eq(x->ttl_s, a.ttl_s);
    ck_assert_str_eq(x->node_id, a.node_id);
    ck_assert_uint_eq(x->version, b.version + 1);
    s_expect_stored(st, x);
    ck_assert_uint_eq(s_last_seq(st), x->version);
    ck_assert_uint_eq(next, T0 + 20 * SEC); /* bob's expiry */
    proto_record_t a_off = *x;

    /* sweeping again at the same time does nothing */
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, T0 + 10 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(ch.n, 0);

    /* bob expires; now both are due for purge at last_seen + retention = T0 + 60 s */
    ck_assert_int_eq(s_sweep(st, T0 + 25 * SEC, 100, &ch, &next, &exp, &pur), 1);
    ck_assert_uint_eq(ch.v[0].rec.updated_at_us, T0 + 20 * SEC);
    ck_assert_uint_eq(next, T0 + 60 * SEC);
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, T0 + 60 * SEC - 1, 100, &ch, &next, &exp, &pur), 0);
    s_expect_stored(st, &a_off);

    /* purge: tombstones, records gone, next_due none */
    uint64_t seq = s_last_seq(st);
    ck_assert_int_eq(s_sweep(st, T0 + 60 * SEC, 100, &ch, &next, &exp, &pur), 2);
    ck_assert_uint_eq(exp, 0);
    ck_assert_uint_eq(pur, 2);
    ck_assert_uint_eq(ch.n, 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_uint_eq(ch.v[i].kind, PROTO_CH_DEL);
        ck_assert_uint_eq(ch.v[i].rec.version, seq + 1 + i);
    }
    ck_assert(strcmp(ch.v[0].rec.user_id, ch.v[1].rec.user_id) != 0);
    proto_record_t r;
    ck_assert_int_eq(s_get(st, "alice", &r), STORE_NOTFOUND);
    ck_assert_int_eq(s_get(st, "bob", &r), STORE_NOTFOUND);
    ck_assert_uint_eq(next, UINT64_MAX);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.records, 0);
    ck_assert_uint_eq(info.log_entries, info.last_seq); /* nothing pruned: every change is in the log */
    ck_assert_uint_eq(info.last_seq, seq + 2);

    /* an offline record is never "expired" again: only purged after retention */
    proto_record_t c = s_put(st, T0 + 100 * SEC, "carol", PRESENCE_OFFLINE, "away for good", 5, NULL);
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, T0 + 106 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, T0 + 160 * SEC);
    s_expect_stored(st, &c);
    ck_assert_int_eq(s_sweep(st, T0 + 160 * SEC, 100, &ch, &next, &exp, &pur), 1);
    ck_assert_uint_eq(pur, 1);

    /* a heartbeat moves the expiry: the old time no longer expires the record */
    s_put(st, T0 + 200 * SEC, "dave", PRESENCE_ONLINE, "", 10, NULL);
    proto_record_t d = s_touch(st, T0 + 205 * SEC, "dave", 0, "n", &ch);
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, T0 + 210 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, T0 + 215 * SEC);
    s_expect_stored(st, &d);
    /* a PUT to offline moves the due time to the purge time */
    s_put(st, T0 + 211 * SEC, "dave", PRESENCE_OFFLINE, "", 10, NULL);
    ck_assert_int_eq(s_sweep(st, T0 + 216 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, T0 + 271 * SEC);
    /* a deleted record leaves no due entry behind */
    uint64_t as_of;
    ck_assert_uint_eq(s_del(st, T0 + 212 * SEC, "dave", &as_of, &ch), PROTO_OK);
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, T0 + 300 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(next, UINT64_MAX);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

START_TEST(test_sweep_max_actions)
{
    enum { N = 10 };
    store_config_t cfg = s_cfg();
    cfg.retention_us = 3600 * SEC;
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    for (int i = 0; i < N; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%02d", i);
        s_put(st, T0 + (uint64_t)i, uid, PRESENCE_ONLINE, "m", 1, &ch); /* expires T0 + i + 1 s */
    }
    store_changes_reset(&ch);
    uint64_t now = T0 + 2 * SEC, next = 0, exp = 0, pur = 0;
    static const int want[] = {3, 3, 3, 1, 0};
    uint64_t seq = s_last_seq(st);
    for (size_t k = 0; k < ARRAY_LEN(want); k++) {
        size_t before = ch.n;
        int n = s_sweep(st, now, 3, &ch, &next, &exp, &pur);
        ck_assert_msg(n == want[k], "call %zu: %d actions, want %d", k, n, want[k]);
        ck_assert_uint_eq(exp, (uint64_t)n);
        ck_assert_uint_eq(ch.n, before + (size_t)n);
        if (k < 3)
            ck_assert_uint_le(next, now); /* more is due right away */
        else
            ck_assert_uint_eq(next, T0 + 3600 * SEC); /* the first purge */
    }
    /* expired in due order, consecutive sequence numbers */
    ck_assert_uint_eq(ch.n, N);
    for (int i = 0; i < N; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%02d", i);
        ck_assert_str_eq(ch.v[i].rec.user_id, uid);
        ck_assert_uint_eq(ch.v[i].rec.version, seq + 1 + (uint64_t)i);
        ck_assert_uint_eq(ch.v[i].rec.status, PRESENCE_OFFLINE);
    }
    /* max 0 still makes progress (treated as 1) */
    s_put(st, T0, "z", PRESENCE_ONLINE, "", 1, NULL);
    store_changes_reset(&ch);
    ck_assert_int_eq(s_sweep(st, now, 0, &ch, &next, &exp, &pur), 1);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

START_TEST(test_sweep_log_pruning)
{
    enum { N = 12, KEEP = 5 };
    store_config_t cfg = s_cfg();
    cfg.log_max = KEEP;
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    uint64_t del[N];
    for (int i = 0; i < N; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "t%02d", i);
        s_put(st, T0, uid, PRESENCE_ONLINE, "", 3600, &ch);
        ck_assert_uint_eq(s_del(st, T0, uid, &del[i], &ch), PROTO_OK);
    }
    proto_record_t live = s_put(st, T0, "live", PRESENCE_ONLINE, "", 3600, &ch);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.log_entries, 2 * N + 1);
    ck_assert_uint_eq(info.log_floor, 0);

    /* pruning is bounded by max per call, and moves the floor to the last pruned sequence */
    uint64_t next;
    store_changes_reset(&ch);
    s_sweep(st, T0 + SEC, 3, &ch, &next, NULL, NULL);
    ck_assert_uint_eq(ch.n, 0); /* pruning publishes nothing */
    ck_assert_uint_eq(next, T0 + SEC); /* capped: more to do right away */
    store_get_info(st, &info);
    ck_assert_uint_eq(info.log_entries, 2 * N + 1 - 3);
    ck_assert_uint_eq(info.log_floor, 3);
    s_sweep(st, T0 + SEC, 100, &ch, &next, NULL, NULL);
    store_get_info(st, &info);
    ck_assert_uint_eq(info.log_entries, KEEP);
    ck_assert_uint_eq(info.log_floor, (uint64_t)(2 * N + 1 - KEEP));
    /* the read snapshot reports the same floor; catch-up from it sees the kept entries, compacted */
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(st, err);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(store_read_floor(r), info.log_floor);
    store_changes_t out;
    store_changes_init(&out);
    uint64_t through = 0;
    bool done = false;
    ck_assert_int_eq(store_read_changes(r, info.log_floor, 1000, &out, &through, &done), STORE_OK);
    ck_assert(done);
    ck_assert_uint_eq(through, live.version);
    /* kept: the last KEEP changes = put/del pairs of the last two users (their puts are superseded
     * by the deletes, so only the DELs come back), and the live put */
    ck_assert_uint_eq(out.n, 3);
    ck_assert_uint_eq(out.v[0].kind, PROTO_CH_DEL);
    ck_assert_uint_eq(out.v[0].rec.version, del[N - 2]);
    ck_assert_uint_eq(out.v[1].kind, PROTO_CH_DEL);
    ck_assert_uint_eq(out.v[1].rec.version, del[N - 1]);
    ck_assert_uint_eq(out.v[2].kind, PROTO_CH_SET);
    ck_assert_str_eq(out.v[2].rec.user_id, "live");
    store_read_end(&r);
    /* nothing more to prune; the floor survives reopen */
    s_sweep(st, T0 + 2 * SEC, 100, &ch, &next, NULL, NULL);
    uint64_t floor = info.log_floor;
    store_close(&st);
    st = s_open(&cfg);
    store_get_info(st, &info);
    ck_assert_uint_eq(info.log_floor, floor);
    ck_assert_uint_eq(info.log_entries, KEEP);
    store_changes_fini(&out);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Catch-up and reads
 * ------------------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t kind;
    const char *uid;
    uint64_t seq;
} exp_change_t;

static void s_expect_changes(const store_changes_t *got, const exp_change_t *want, size_t n)
{
    ck_assert_uint_eq(got->n, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(got->v[i].kind == want[i].kind && got->v[i].rec.version == want[i].seq &&
                          strcmp(got->v[i].rec.user_id, want[i].uid) == 0,
                      "change %zu: got kind %u %s@%llu, want kind %u %s@%llu", i, got->v[i].kind,
                      got->v[i].rec.user_id, (unsigned long long)got->v[i].rec.version, want[i].kind, want[i].uid,
                      (unsigned long long)want[i].seq);
    }
}

static void s_read_changes(store_t *st, uint64_t after, uint32_t max, store_changes_t *out, uint64_t *through,
                           bool *done)
{
    char err[STORE_ERR_LEN] = "";
    store_read_t *r = store_read_begin(st, err);
    ck_assert_msg(r != NULL, "%s", err);
    store_changes_reset(out);
    ck_assert_int_eq(store_read_changes(r, after, max, out, through, done), STORE_OK);
    store_read_end(&r);
}

/* Snapshot records in key order after `after` (NULL = from the start). */
static void s_read_records(store_t *st, const char *after, uint32_t max, store_changes_t *out, char *next,
                           size_t *next_len, bool *done)
{
    char err[STORE_ERR_LEN] = "";
    store_read_t *r = store_read_begin(st, err);
    ck_assert_msg(r != NULL, "%s", err);
    store_changes_reset(out);
    ck_assert_int_eq(store_read_records(r, after ? after : "", after ? strlen(after) : 0, max, out, next, next_len, done),
                     STORE_OK);
    store_read_end(&r);
}

START_TEST(test_catchup_contents)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    uint64_t as_of;
    s_put(st, T0, "a", PRESENCE_ONLINE, "", 60, NULL);        /* 1 (superseded) */
    s_put(st, T0, "b", PRESENCE_ONLINE, "", 60, NULL);        /* 2 (deleted) */
    s_put(st, T0, "c", PRESENCE_ONLINE, "", 60, NULL);        /* 3 (superseded) */
    proto_record_t a4 = s_put(st, T0, "a", PRESENCE_AWAY, "x", 60, NULL); /* 4 */
    s_del(st, T0, "b", &as_of, NULL);                         /* 5 tombstone */
    proto_record_t c6 = s_touch(st, T0 + 1, "c", 0, "n2", NULL); /* 6 */
    s_put(st, T0, "d", PRESENCE_BUSY, "", 60, NULL);          /* 7 (deleted) */
    s_del(st, T0, "d", &as_of, NULL);                         /* 8 tombstone */
    ck_assert_uint_eq(as_of, 8);

    store_changes_t out;
    store_changes_init(&out);
    uint64_t through = 0;
    bool done = false;
    const exp_change_t all[] = {
        {PROTO_CH_SET, "a", 4}, {PROTO_CH_DEL, "b", 5}, {PROTO_CH_SET, "c", 6}, {PROTO_CH_DEL, "d", 8}};
    s_read_changes(st, 0, 100, &out, &through, &done);
    s_expect_changes(&out, all, 4);
    ck_assert(done);
    ck_assert_uint_eq(through, 8);
    /* SET changes carry whole records as stored */
    s_rec_eq(&out.v[0].rec, &a4);
    s_rec_eq(&out.v[2].rec, &c6);

    for (uint64_t after = 0; after <= 8; after++) {
        size_t k = 0;
        while (k < 4 && all[k].seq <= after)
            k++;
        s_read_changes(st, after, 100, &out, &through, &done);
        s_expect_changes(&out, all + k, 4 - k);
        ck_assert(done);
        ck_assert_uint_eq(through, 8);
    }

    /* a snapshot: the live records in key order, with a cursor */
    const exp_change_t live[] = {{PROTO_CH_SET, "a", 4}, {PROTO_CH_SET, "c", 6}};
    char next[PROTO_USER_ID_MAX + 1];
    size_t next_len = 99;
    s_read_records(st, NULL, 100, &out, next, &next_len, &done);
    s_expect_changes(&out, live, 2);
    ck_assert(done);
    ck_assert_uint_eq(next_len, 0);
    s_read_records(st, NULL, 1, &out, next, &next_len, &done);
    s_expect_changes(&out, live, 1);
    ck_assert(!done);
    ck_assert_uint_eq(next_len, 1);
    ck_assert_mem_eq(next, "a", 1);
    s_read_records(st, "a", 1, &out, next, &next_len, &done); /* strictly after the cursor */
    s_expect_changes(&out, live + 1, 1);
    ck_assert(done);
    s_read_records(st, "b", 10, &out, next, &next_len, &done); /* a cursor key that no longer exists */
    s_expect_changes(&out, live + 1, 1);
    s_read_records(st, "c", 10, &out, next, &next_len, &done);
    ck_assert_uint_eq(out.n, 0);
    ck_assert(done);

    /* chunks: max_items at a time, through_seq is the last entry walked until done */
    s_read_changes(st, 0, 1, &out, &through, &done);
    s_expect_changes(&out, all, 1);
    ck_assert(!done);
    ck_assert_uint_eq(through, 4);
    s_read_changes(st, 4, 2, &out, &through, &done);
    s_expect_changes(&out, all + 1, 2);
    ck_assert(!done);
    ck_assert_uint_eq(through, 6);
    s_read_changes(st, 6, 1, &out, &through, &done);
    s_expect_changes(&out, all + 3, 1);
    ck_assert(done); /* nothing left after it */
    ck_assert_uint_eq(through, 8);

    /* read API details */
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(st, err);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(store_read_seq(r), 8);
    ck_assert_uint_eq(store_read_floor(r), 0);
    const void *raw = NULL;
    size_t rlen = 0;
    ck_assert_int_eq(store_read_get_raw(r, "a", 1, &raw, &rlen), STORE_OK);
    proto_record_t dec;
    ck_assert_int_eq(proto_record_decode(raw, rlen, &dec), 0);
    s_rec_eq(&dec, &a4);
    /* the raw bytes are the record's own encoding */
    proto_buf_t enc;
    proto_buf_init(&enc);
    proto_record_encode(&enc, &a4);
    ck_assert_uint_eq(rlen, enc.len);
    ck_assert_mem_eq(raw, enc.data, rlen);
    proto_buf_fini(&enc);
    ck_assert_int_eq(store_read_get_raw(r, "b", 1, &raw, &rlen), STORE_NOTFOUND);
    ck_assert_int_eq(store_read_get(r, "zz", 2, &dec), STORE_NOTFOUND);
    ck_assert_int_eq(store_read_get(r, "c", 1, &dec), STORE_OK);
    s_rec_eq(&dec, &c6);
    store_read_end(&r);
    store_read_end(&r); /* NULL is accepted */
    store_changes_fini(&out);
    store_close(&st);
}
END_TEST

START_TEST(test_read_snapshot_isolation)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    proto_record_t a1 = s_put(st, T0, "a", PRESENCE_ONLINE, "one", 60, NULL);
    char err[STORE_ERR_LEN];
    store_read_t *old = store_read_begin(st, err);
    ck_assert_ptr_nonnull(old);
    /* writes after the snapshot began (no map growth: the map is large) */
    proto_record_t a2 = s_put(st, T0 + 1, "a", PRESENCE_BUSY, "two", 60, NULL);
    s_put(st, T0 + 1, "b", PRESENCE_BUSY, "", 60, NULL);
    proto_record_t got;
    ck_assert_int_eq(store_read_get(old, "a", 1, &got), STORE_OK);
    s_rec_eq(&got, &a1);
    ck_assert_int_eq(store_read_get(old, "b", 1, &got), STORE_NOTFOUND);
    ck_assert_uint_eq(store_read_seq(old), 1);
    /* a second, newer snapshot at the same time sees the new state */
    store_read_t *cur = store_read_begin(st, err);
    ck_assert_ptr_nonnull(cur);
    ck_assert_uint_eq(store_read_seq(cur), 3);
    ck_assert_int_eq(store_read_get(cur, "a", 1, &got), STORE_OK);
    s_rec_eq(&got, &a2);
    store_changes_t out;
    store_changes_init(&out);
    uint64_t through;
    bool done;
    ck_assert_int_eq(store_read_changes(old, 0, 10, &out, &through, &done), STORE_OK);
    ck_assert_uint_eq(out.n, 1);
    ck_assert_uint_eq(through, 1);
    store_read_end(&old);
    store_read_end(&cur);
    /* many begin/end cycles (the pool) and many concurrent snapshots */
    store_read_t *many[20];
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 20; i++) {
            many[i] = store_read_begin(st, err);
            ck_assert_ptr_nonnull(many[i]);
        }
        for (int i = 0; i < 20; i++) {
            ck_assert_uint_eq(store_read_seq(many[i]), 3);
            store_read_end(&many[i]);
        }
    }
    store_changes_fini(&out);
    store_close(&st);
}
END_TEST

/* A random history checked against a model of live versions and tombstones. */
START_TEST(test_catchup_model)
{
    enum { USERS = 40, STEPS = 1500 };
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    uint64_t live[USERS] = {0};
    uint64_t *tomb_seq = calloc(STEPS, sizeof *tomb_seq);
    int *tomb_uid = calloc(STEPS, sizeof *tomb_uid);
    size_t ntomb = 0;
    uint64_t seq = 0, rng = 4242;
    store_changes_t ch, out;
    store_changes_init(&ch);
    store_changes_init(&out);
    for (int step = 0; step < STEPS; step++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int u = (int)((rng >> 33) % USERS), op = (int)((rng >> 20) % 3);
        char uid[16];
        snprintf(uid, sizeof uid, "m%02d", u);
        uint64_t now = T0 + (uint64_t)step * 1000;
        store_changes_reset(&ch);
        uint64_t seq_before = seq;
        if (op == 0) {
            proto_record_t r = s_put(st, now, uid, (int)(rng % 4), "", 3600, &ch);
            live[u] = r.version;
            ck_assert_uint_eq(r.version, ++seq);
        } else if (op == 1) {
            proto_record_t r = s_touch(st, now, uid, 0, "n", &ch);
            live[u] = r.version;
            ck_assert_uint_eq(r.version, ++seq);
        } else {
            uint64_t as_of;
            uint8_t status = s_del(st, now, uid, &as_of, &ch);
            if (live[u]) {
                ck_assert_uint_eq(status, PROTO_OK);
                ck_assert_uint_eq(as_of, ++seq);
                tomb_seq[ntomb] = as_of;
                tomb_uid[ntomb++] = u;
                live[u] = 0;
            } else {
                ck_assert_uint_eq(status, PROTO_NOTFOUND);
            }
        }
        /* one change per effective op (none for a DEL of nothing), carrying the op's number */
        ck_assert_uint_eq(ch.n, seq - seq_before);
        if (ch.n) {
            ck_assert_uint_eq(ch.n, 1);
            ck_assert_uint_eq(ch.v[0].rec.version, seq);
            if (op == 0)
                ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_SET);
            else if (op == 1)
                ck_assert(ch.v[0].kind == PROTO_CH_SET || ch.v[0].kind == PROTO_CH_TOUCH);
            else
                ck_assert_uint_eq(ch.v[0].kind, PROTO_CH_DEL);
        }
    }
    ck_assert_uint_eq(s_last_seq(st), seq);
    /* check catch-up from many starting points, with several chunk sizes */
    static const uint32_t chunks[] = {1, 3, 17, 100000};
    for (uint64_t after = 0; after <= seq; after += 1 + after / 7) {
        for (int ro = 0; ro < 1; ro++) {
            /* the expected changes, in sequence order */
            store_changes_t want;
            store_changes_init(&want);
            for (uint64_t s = after + 1; s <= seq; s++) {
                for (int u = 0; u < USERS; u++)
                    if (live[u] == s) {
                        if (want.n == want.cap) {
                            want.cap = want.cap ? want.cap * 2 : 64;
                            want.v = realloc(want.v, want.cap * sizeof *want.v);
                        }
                        memset(&want.v[want.n], 0, sizeof want.v[0]);
                        want.v[want.n].kind = PROTO_CH_SET;
                        want.v[want.n].rec.version = s;
                        snprintf(want.v[want.n].rec.user_id, sizeof want.v[0].rec.user_id, "m%02d", u);
                        want.n++;
                    }
                for (size_t t = 0; !ro && t < ntomb; t++)
                    if (tomb_seq[t] == s) {
                        if (want.n == want.cap) {
                            want.cap = want.cap ? want.cap * 2 : 64;
                            want.v = realloc(want.v, want.cap * sizeof *want.v);
                        }
                        memset(&want.v[want.n], 0, sizeof want.v[0]);
                        want.v[want.n].kind = PROTO_CH_DEL;
                        want.v[want.n].rec.version = s;
                        snprintf(want.v[want.n].rec.user_id, sizeof want.v[0].rec.user_id, "m%02d", tomb_uid[t]);
                        want.n++;
                    }
            }
            for (size_t c = 0; c < ARRAY_LEN(chunks); c++) {
                /* follow the chunks to the end, as a client does */
                store_changes_t all;
                store_changes_init(&all);
                uint64_t from = after, through = 0;
                bool done = false;
                int calls = 0;
                while (!done) {
                    s_read_changes(st, from, chunks[c], &out, &through, &done);
                    ck_assert_uint_le(out.n, chunks[c]);
                    for (size_t i = 0; i < out.n; i++) {
                        if (all.n == all.cap) {
                            all.cap = all.cap ? all.cap * 2 : 64;
                            all.v = realloc(all.v, all.cap * sizeof *all.v);
                        }
                        all.v[all.n++] = out.v[i];
                    }
                    if (!done) {
                        ck_assert_uint_gt(through, from); /* progress */
                        if (out.n)
                            ck_assert_uint_ge(through, out.v[out.n - 1].rec.version);
                    }
                    from = through;
                    ck_assert_int_lt(++calls, STEPS + 2);
                }
                ck_assert_uint_eq(through, seq);
                ck_assert_msg(all.n == want.n, "after %llu ro %d chunk %u: %zu changes, want %zu",
                              (unsigned long long)after, ro, chunks[c], all.n, want.n);
                for (size_t i = 0; i < all.n; i++) {
                    ck_assert_uint_eq(all.v[i].kind, want.v[i].kind);
                    ck_assert_uint_eq(all.v[i].rec.version, want.v[i].rec.version);
                    ck_assert_str_eq(all.v[i].rec.user_id, want.v[i].rec.user_id);
                }
                free(all.v);
            }
            free(want.v);
        }
    }
    /* a snapshot in chunks of every size: exactly the live records, in key order */
    for (size_t c = 0; c < ARRAY_LEN(chunks); c++) {
        char cursor[PROTO_USER_ID_MAX + 1] = "", next[PROTO_USER_ID_MAX + 1];
        size_t next_len = 0;
        bool done = false, first = true;
        int u = 0, calls = 0;
        while (!done) {
            s_read_records(st, first ? NULL : cursor, chunks[c], &out, next, &next_len, &done);
            first = false;
            ck_assert_uint_le(out.n, chunks[c]);
            for (size_t i = 0; i < out.n; i++) {
                while (u < USERS && !live[u])
                    u++;
                ck_assert_int_lt(u, USERS);
                char want[16];
                snprintf(want, sizeof want, "m%02d", u);
                ck_assert_str_eq(out.v[i].rec.user_id, want);
                ck_assert_uint_eq(out.v[i].rec.version, live[u]);
                u++;
            }
            memcpy(cursor, next, next_len);
            cursor[next_len] = '\0';
            ck_assert_int_lt(++calls, USERS + 2);
        }
        while (u < USERS && !live[u])
            u++;
        ck_assert_int_eq(u, USERS);
    }
    free(tomb_seq);
    free(tomb_uid);
    store_changes_fini(&ch);
    store_changes_fini(&out);
    store_close(&st);
}
END_TEST

START_TEST(test_info_numbers)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    uint64_t as_of;
    for (int i = 0; i < 30; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "i%02d", i);
        s_put(st, T0, uid, PRESENCE_ONLINE, "", 60, NULL);
    }
    for (int i = 0; i < 10; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "i%02d", i);
        s_del(st, T0, uid, &as_of, NULL);
    }
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.records, 20);
    ck_assert_uint_eq(info.log_entries, 40);
    ck_assert_uint_eq(info.last_seq, 40);
    ck_assert_uint_eq(info.log_floor, 0);
    ck_assert_uint_eq(info.due_entries, 30); /* deletes leave their due entries for the sweeper */
    ck_assert_uint_eq(info.map_size, cfg.map_size);
    ck_assert_uint_eq(info.map_grows, 0);
    ck_assert_uint_gt(info.map_used, 0);
    ck_assert_uint_le(info.map_used, info.map_size);
    ck_assert_uint_eq(info.epoch, store_epoch(st));
    uint64_t used = info.map_used;
    for (int i = 0; i < 2000; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "j%04d", i);
        s_put(st, T0, uid, PRESENCE_ONLINE, "some text to take space", 60, NULL);
    }
    store_get_info(st, &info);
    ck_assert_uint_gt(info.map_used, used);
    ck_assert_uint_eq(info.records, 2020);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */


/* Commits that are not fsynced before their changes are published (heartbeat-only groups) must
 * never let a restarted store reuse sequence numbers subscribers may have seen: an open without a
 * clean close continues after the durable reservation. A clean close releases it. */
START_TEST(test_seq_reservation_after_crash)
{
    store_config_t cfg = s_cfg();
    cfg.sync_mode = STORE_SYNC_FULL;
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char err[STORE_ERR_LEN];
        store_t *st = NULL;
        if (store_open(&cfg, &st, err) < 0)
            _exit(2);
        proto_record_t in = s_in("u1", 0, "", 60, "n"), out;
        store_changes_t ch;
        store_changes_init(&ch);
        uint64_t seq = 0;
        for (int i = 0; i < 3; i++) {
            store_op_t op = {.type = PROTO_TOUCH, .n = 1, .in = &in, .out = &out};
            if (store_apply(st, &op, 1, 1000 * SEC, true, &ch, err) < 0)
                _exit(3);
            seq = op.as_of;
        }
        if (write(fds[1], &seq, sizeof seq) != sizeof seq)
            _exit(4);
        _exit(0); /* no store_close: as if the machine went down */
    }
    close(fds[1]);
    uint64_t child_seq = 0;
    ck_assert_int_eq(read(fds[0], &child_seq, sizeof child_seq), (ssize_t)sizeof child_seq);
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_uint_eq(child_seq, 3);

    store_t *st = s_open(&cfg);
    uint64_t after = s_last_seq(st);
    ck_assert_uint_gt(after, child_seq);
    proto_record_t r = s_put(st, 2000 * SEC, "u2", PRESENCE_BUSY, "x", 60, NULL);
    ck_assert_uint_gt(r.version, child_seq);
    /* A relaxed commit, then a clean close: no jump on the next open. */
    proto_record_t in = s_in("u3", 0, "", 60, "n"), out;
    store_op_t op = {.type = PROTO_TOUCH, .n = 1, .in = &in, .out = &out};
    store_changes_t ch;
    store_changes_init(&ch);
    char err[STORE_ERR_LEN];
    ck_assert_int_eq(store_apply(st, &op, 1, 2001 * SEC, true, &ch, err), 0);
    store_changes_fini(&ch);
    uint64_t last = s_last_seq(st);
    ck_assert_uint_eq(last, op.as_of);
    store_close(&st);
    st = s_open(&cfg);
    ck_assert_uint_eq(s_last_seq(st), last);
    store_close(&st);
}
END_TEST


/* ==== sessions and leases ===================================================================== */

static proto_record_t s_ses_in(const char *uid, int status, const char *sid, uint32_t ttl, uint64_t lease, uint64_t conn,
                               uint8_t flags)
{
    proto_record_t r = s_in(uid, status, "", ttl, "node-s");
    proto_record_set_sid(&r, sid, strlen(sid));
    r.lease_id = lease;
    r.conn_id = conn;
    r.cflags = flags;
    return r;
}

static uint32_t s_lease(store_t *st, uint64_t now, uint64_t id, uint8_t op, uint32_t ttl_ms)
{
    store_op_t o = {.type = PROTO_LEASE, .lease_id = id, .lease_op = op, .lease_ttl_ms = ttl_ms};
    snprintf(o.lease_node, sizeof o.lease_node, "gw-1");
    char err[STORE_ERR_LEN] = "";
    store_changes_t ch;
    store_changes_init(&ch);
    ck_assert_msg(store_apply(st, &o, 1, now, true, &ch, err) == 0, "lease: %s", err);
    ck_assert_uint_eq(ch.n, 0); /* a lease changes nothing a reader sees */
    store_changes_fini(&ch);
    return o.flags;
}

static uint32_t s_read_sessions(store_t *st, const char *uid, uint64_t now, proto_session_t *out, uint32_t max)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(st, err);
    ck_assert_ptr_nonnull(r);
    uint32_t n = 0;
    ck_assert_int_eq(store_read_sessions(r, uid, strlen(uid), now, out, max, &n), STORE_OK);
    store_read_end(&r);
    return n;
}

/* Two devices; one ends: still online; both end: offline -- each visible change one version. */
START_TEST(test_sessions_two_devices)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t in = s_ses_in("sue", PRESENCE_ONLINE, "desktop", 60, 0, 0, 0), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, &ch), PROTO_OK);
    ck_assert_int_eq(out.status, PRESENCE_ONLINE);
    ck_assert_int_eq(out.sessions, 1);
    ck_assert_int_eq(out.source, PRESENCE_SRC_SESSION);
    in = s_ses_in("sue", PRESENCE_AWAY, "phone", 60, 0, 0, 0);
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + SEC, &out, NULL, &ch), PROTO_OK);
    ck_assert_int_eq(out.status, PRESENCE_ONLINE);
    ck_assert_int_eq(out.sessions, 2);
    proto_session_t ses[8];
    ck_assert_uint_eq(s_read_sessions(st, "sue", T0 + SEC, ses, 8), 2);
    in = s_ses_in("sue", PRESENCE_OFFLINE, "desktop", 60, 0, 0, 0);
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + 2 * SEC, &out, NULL, &ch), PROTO_OK);
    ck_assert_int_eq(out.status, PRESENCE_AWAY);
    in = s_ses_in("sue", PRESENCE_OFFLINE, "phone", 60, 0, 0, 0);
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + 3 * SEC, &out, NULL, &ch), PROTO_OK);
    ck_assert_int_eq(out.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(out.sessions, 0);
    ck_assert_uint_eq(ch.n, 4);
    for (size_t i = 0; i < ch.n; i++)
        ck_assert_int_eq(ch.v[i].kind, PROTO_CH_SET);
    ck_assert_uint_eq(s_read_sessions(st, "sue", T0 + 3 * SEC, ses, 8), 0);
    /* a session that is gone: NOTFOUND, nothing written */
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + 4 * SEC, &out, NULL, &ch), PROTO_NOTFOUND);
    ck_assert_uint_eq(ch.n, 4);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* A REST session ends on its ttl: the sweeper publishes the user offline. */
START_TEST(test_sessions_expire)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    proto_record_t in = s_ses_in("ted", PRESENCE_BUSY, "cli", 10, 0, 0, 0), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, NULL), PROTO_OK);
    ck_assert_uint_eq(store_due_us(st, &out), T0 + 10 * SEC);
    store_changes_t ch;
    store_changes_init(&ch);
    uint64_t next, exp = 0, pur = 0;
    ck_assert_int_eq(s_sweep(st, T0 + 10 * SEC - 1, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_int_eq(s_sweep(st, T0 + 10 * SEC, 100, &ch, &next, &exp, &pur), 1);
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_int_eq(ch.v[0].kind, PROTO_CH_SET);
    ck_assert_int_eq(ch.v[0].rec.status, PRESENCE_OFFLINE);
    ck_assert_int_eq(ch.v[0].rec.sessions, 0);
    ck_assert_uint_eq(ch.v[0].rec.updated_at_us, T0 + 10 * SEC);
    ck_assert_uint_eq(exp, 1);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* A gateway's lease holds its connections' sessions; refreshing it writes no record; when it
 * lapses, the sweeper ends every session it held (a bounded number per transaction). */
START_TEST(test_lease_lapse)
{
    enum { USERS = 25 };
    store_config_t cfg = s_cfg();
    cfg.now_us = T0;
    store_t *st = s_open(&cfg);
    /* an open under a lease the store does not hold is refused */
    proto_record_t in = s_ses_in("u0", PRESENCE_ONLINE, "c", 60, 77, 1, PROTO_CMD_F_OPEN), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, NULL), PROTO_NOTFOUND);
    ck_assert_uint_eq(s_lease(st, T0, 77, PROTO_LEASE_REFRESH, 15000), PROTO_REPLY_F_LAPSED); /* new */
    for (int i = 0; i < USERS; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%d", i);
        in = s_ses_in(uid, PRESENCE_ONLINE, "c", 60, 77, (uint64_t)i + 1, PROTO_CMD_F_OPEN);
        ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, NULL), PROTO_OK);
        ck_assert_int_eq(out.status, PRESENCE_ONLINE);
    }
    /* refreshed: lives on */
    ck_assert_uint_eq(s_lease(st, T0 + 10 * SEC, 77, PROTO_LEASE_REFRESH, 15000), 0);
    store_changes_t ch;
    store_changes_init(&ch);
    uint64_t next, exp = 0, pur = 0;
    ck_assert_int_eq(s_sweep(st, T0 + 20 * SEC, 100, &ch, &next, &exp, &pur), 0);
    ck_assert_uint_eq(ch.n, 0);
    /* lapsed at T0+25: ended 10 users per sweep */
    ck_assert_int_eq(s_sweep(st, T0 + 25 * SEC, 10, &ch, &next, &exp, &pur), 10);
    ck_assert_uint_eq(next, T0 + 25 * SEC); /* capped: more right away */
    while (s_sweep(st, T0 + 25 * SEC, 10, &ch, &next, &exp, &pur) > 0)
        ;
    ck_assert_uint_eq(ch.n, USERS);
    for (size_t i = 0; i < ch.n; i++) {
        ck_assert_int_eq(ch.v[i].kind, PROTO_CH_SET);
        ck_assert_int_eq(ch.v[i].rec.status, PRESENCE_OFFLINE);
    }
    proto_session_t ses[4];
    ck_assert_uint_eq(s_read_sessions(st, "u3", T0 + 25 * SEC, ses, 4), 0);
    /* the lease is gone: a late refresh learns it lapsed */
    ck_assert_uint_eq(s_lease(st, T0 + 26 * SEC, 77, PROTO_LEASE_REFRESH, 15000), PROTO_REPLY_F_LAPSED);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* A store that restarts gives every lease its ttl before it can lapse. */
START_TEST(test_lease_grace_after_restart)
{
    store_config_t cfg = s_cfg();
    cfg.now_us = T0;
    store_t *st = s_open(&cfg);
    s_lease(st, T0, 5, PROTO_LEASE_REFRESH, 15000);
    proto_record_t in = s_ses_in("gwen", PRESENCE_BUSY, "c", 60, 5, 1, PROTO_CMD_F_OPEN), out;
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, NULL), PROTO_OK);
    store_close(&st);
    /* down for a minute; back at T0+60: the lease (expired at T0+15) lives until T0+75 */
    cfg.now_us = T0 + 60 * SEC;
    st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    uint64_t next, exp = 0, pur = 0;
    s_sweep(st, T0 + 61 * SEC, 100, &ch, &next, &exp, &pur);
    /* the session's horizon moved on (a TOUCH: no reader sees it as an event); nothing ended */
    ck_assert_uint_eq(ch.n, 1);
    ck_assert_int_eq(ch.v[0].kind, PROTO_CH_TOUCH);
    ck_assert_uint_eq(ch.v[0].rec.expires_at_us, T0 + 121 * SEC);
    ck_assert_uint_eq(next, T0 + 75 * SEC);
    store_changes_reset(&ch);
    ck_assert_uint_eq(s_lease(st, T0 + 62 * SEC, 5, PROTO_LEASE_REFRESH, 15000), 0); /* its gateway is back */
    s_sweep(st, T0 + 76 * SEC, 100, &ch, &next, &exp, &pur);
    ck_assert_uint_eq(ch.n, 0);
    proto_record_t got;
    ck_assert_int_eq(s_get(st, "gwen", &got), STORE_OK);
    ck_assert_int_eq(got.status, PRESENCE_BUSY);
    /* the gateway ends its lease (a clean stop): the sessions end at the next sweep */
    s_lease(st, T0 + 80 * SEC, 5, PROTO_LEASE_END, 15000);
    ck_assert_int_eq(s_sweep(st, T0 + 80 * SEC, 100, &ch, &next, &exp, &pur), 1);
    ck_assert_int_eq(ch.v[0].rec.status, PRESENCE_OFFLINE);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* Invisible: the store keeps the public version still while only the user's own view moves. */
START_TEST(test_sessions_invisible)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t in = s_ses_in("ivy", PRESENCE_ONLINE, "d1", 600, 0, 0, 0), out;
    s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, &ch);
    in = s_in("ivy", PRESENCE_OFFLINE, "", 3600, "node-a"); /* appear offline */
    s_apply1(st, PROTO_PUT, &in, 1, T0 + SEC, &out, NULL, &ch);
    ck_assert(proto_record_invisible(&out));
    uint64_t pubv = out.pub_version;
    ck_assert_uint_eq(pubv, out.version);
    in = s_ses_in("ivy", PRESENCE_BUSY, "d2", 600, 0, 0, 0);
    s_apply1(st, PROTO_PUT, &in, 1, T0 + 2 * SEC, &out, NULL, &ch);
    ck_assert_int_eq(out.sessions, 2);
    ck_assert_uint_gt(out.version, pubv);
    ck_assert_uint_eq(out.pub_version, pubv);
    ck_assert_uint_eq(out.vis_last_seen_us, T0 + SEC);
    /* the stream carries the whole record: gateways render what each reader may see */
    ck_assert_uint_eq(ch.v[ch.n - 1].rec.pub_version, pubv);
    proto_record_t got;
    ck_assert_int_eq(s_get(st, "ivy", &got), STORE_OK);
    ck_assert_uint_eq(got.pub_version, pubv);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* Erasing a user erases its sessions too. */
START_TEST(test_sessions_del)
{
    store_config_t cfg = s_cfg();
    store_t *st = s_open(&cfg);
    proto_record_t in = s_ses_in("zed", PRESENCE_ONLINE, "d1", 600, 0, 0, 0), out;
    s_apply1(st, PROTO_PUT, &in, 1, T0, &out, NULL, NULL);
    uint64_t as_of;
    ck_assert_uint_eq(s_del(st, T0 + SEC, "zed", &as_of, NULL), PROTO_OK);
    proto_session_t ses[4];
    ck_assert_uint_eq(s_read_sessions(st, "zed", T0 + SEC, ses, 4), 0);
    /* the same session id starts afresh */
    ck_assert_uint_eq(s_apply1(st, PROTO_PUT, &in, 1, T0 + 2 * SEC, &out, NULL, NULL), PROTO_OK);
    ck_assert_int_eq(out.sessions, 1);
    store_close(&st);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Replicated mode (store.h: the *_at functions, store_copy, store_replace)
 * ------------------------------------------------------------------------------------------------- */

static store_config_t s_rcfg(void)
{
    store_config_t c = s_cfg();
    c.replicated = true;
    c.dedup_window_us = 60 * SEC;
    return c;
}

/* One GROUP of one op at `index`; returns the op (status, as_of, deduped). */
static store_op_t s_at(store_t *st, uint64_t index, uint8_t type, proto_record_t *in, proto_record_t *out,
                       const uint8_t *id, uint64_t now, store_changes_t *ch)
{
    store_op_t op = {.type = type, .n = 1, .in = in, .out = out};
    if (id) {
        op.has_cmd_id = true;
        memcpy(op.cmd_id, id, PROTO_CMD_ID_LEN);
    }
    char err[STORE_ERR_LEN] = "";
    store_changes_t scratch;
    store_changes_init(&scratch);
    ck_assert_msg(store_apply_at(st, index, &op, 1, now, ch ? ch : &scratch, err) == 0, "store_apply_at: %s", err);
    store_changes_fini(&scratch);
    return op;
}

/* A replicated store starts without an epoch; the first LEAD entry gives it and later ones do
 * not change it; the index and the lease grace survive a reopen; no sequence reservation. */
START_TEST(test_repl_epoch_and_index)
{
    store_config_t cfg = s_rcfg();
    store_t *st = s_open(&cfg);
    ck_assert_uint_eq(store_epoch(st), 0);
    ck_assert_uint_eq(store_applied_index(st), 0);
    char err[STORE_ERR_LEN];
    ck_assert_int_eq(store_lead_at(st, 2, 777, T0, err), 0);
    ck_assert_uint_eq(store_epoch(st), 777);
    ck_assert_int_eq(store_lead_at(st, 5, 888, T0 + SEC, err), 0); /* a later leader's: ignored */
    ck_assert_uint_eq(store_epoch(st), 777);
    proto_record_t in = s_in("alice", PRESENCE_BUSY, "x", 60, "n"), out;
    store_op_t op = s_at(st, 6, PROTO_PUT, &in, &out, NULL, T0 + 2 * SEC, NULL);
    ck_assert_uint_eq(op.status, PROTO_OK);
    ck_assert_uint_eq(out.version, 1);
    ck_assert_int_eq(store_skip_at(st, 7, err), 0);
    ck_assert_uint_eq(store_applied_index(st), 7);
    ck_assert_uint_eq(store_last_seq(st), 1);
    store_close(&st);
    st = s_open(&cfg);
    ck_assert_uint_eq(store_epoch(st), 777);
    ck_assert_uint_eq(store_applied_index(st), 7);
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.last_seq, 1); /* no jump: a reopen continues at the same sequence */
    op = s_at(st, 8, PROTO_PUT, &in, &out, NULL, T0 + 3 * SEC, NULL);
    ck_assert_uint_eq(out.version, 2);
    store_close(&st);
}
END_TEST

/* A command id is applied once: the second entry carrying it (a retry after a failover) changes
 * nothing and answers the first attempt's status and as_of with the record as it is now; another
 * id is applied; past the window (by entry time) the id is forgotten and applies again. A DEL
 * retried is answered from the table too. */
START_TEST(test_repl_dedup)
{
    store_config_t cfg = s_rcfg();
    store_t *st = s_open(&cfg);
    uint8_t id1[PROTO_CMD_ID_LEN], id2[PROTO_CMD_ID_LEN], id3[PROTO_CMD_ID_LEN];
    memset(id1, 1, sizeof id1);
    memset(id2, 2, sizeof id2);
    memset(id3, 3, sizeof id3);
    store_changes_t ch;
    store_changes_init(&ch);
    proto_record_t in = s_in("bob", PRESENCE_ONLINE, "first", 600, "n"), out;
    store_op_t op = s_at(st, 1, PROTO_PUT, &in, &out, id1, T0, &ch);
    ck_assert(!op.deduped);
    ck_assert_uint_eq(out.version, 1);
    ck_assert_uint_eq(ch.n, 1);
    /* The same command again: not applied (no change, no new version). */
    store_changes_reset(&ch);
    op = s_at(st, 2, PROTO_PUT, &in, &out, id1, T0 + SEC, &ch);
    ck_assert(op.deduped);
    ck_assert_uint_eq(op.status, PROTO_OK);
    ck_assert_uint_eq(op.as_of, 1);
    ck_assert_uint_eq(out.version, 1);
    ck_assert_str_eq(out.message, "first");
    ck_assert_uint_eq(ch.n, 0);
    /* Another command: applied; a retry of the first now answers the current record. */
    proto_record_t in2 = s_in("bob", PRESENCE_AWAY, "second", 600, "n");
    op = s_at(st, 3, PROTO_PUT, &in2, &out, id2, T0 + 2 * SEC, &ch);
    ck_assert(!op.deduped);
    ck_assert_uint_eq(out.version, 2);
    op = s_at(st, 4, PROTO_PUT, &in, &out, id1, T0 + 3 * SEC, NULL);
    ck_assert(op.deduped);
    ck_assert_uint_eq(op.as_of, 1);
    ck_assert_uint_eq(out.version, 2);
    ck_assert_str_eq(out.message, "second");
    /* DEL once, retried: the tombstone's sequence both times; then a retried PUT of a gone record. */
    proto_record_t key = s_in("bob", 0, "", 0, "n");
    op = s_at(st, 5, PROTO_DEL, &key, NULL, id3, T0 + 4 * SEC, NULL);
    ck_assert_uint_eq(op.status, PROTO_OK);
    uint64_t tomb = op.as_of;
    op = s_at(st, 6, PROTO_DEL, &key, NULL, id3, T0 + 5 * SEC, NULL);
    ck_assert(op.deduped);
    ck_assert_uint_eq(op.status, PROTO_OK);
    ck_assert_uint_eq(op.as_of, tomb);
    op = s_at(st, 7, PROTO_PUT, &in2, &out, id2, T0 + 6 * SEC, NULL);
    ck_assert(op.deduped);
    ck_assert_uint_eq(op.status, PROTO_NOTFOUND); /* written, then deleted */
    store_info_t info;
    store_get_info(st, &info);
    ck_assert_uint_eq(info.dedup_entries, 3);
    /* Past the window every id is forgotten (pruned by the entry's time): id1 applies again. */
    op = s_at(st, 8, PROTO_PUT, &in, &out, id1, T0 + 120 * SEC, NULL);
    ck_assert(!op.deduped);
    ck_assert_uint_eq(out.version, tomb + 1);
    store_get_info(st, &info);
    ck_assert_uint_eq(info.dedup_entries, 1);
    store_changes_fini(&ch);
    store_close(&st);
}
END_TEST

/* Two members applying the same entries reach the same state (sequences, records, due times);
 * a sweep entry expires identically; a copy of one replaces the other's state whole. */
START_TEST(test_repl_copy_replace)
{
    store_config_t cfg = s_rcfg();
    store_t *a = s_open(&cfg);
    char bdir[600];
    snprintf(bdir, sizeof bdir, "%s/b", s_dir);
    store_config_t cb = cfg;
    cb.path = bdir;
    store_t *b = s_open(&cb);
    char err[STORE_ERR_LEN];
    ck_assert_int_eq(store_lead_at(a, 1, 42, T0, err), 0);
    ck_assert_int_eq(store_lead_at(b, 1, 42, T0, err), 0);
    for (int i = 0; i < 20; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%d", i);
        proto_record_t in = s_in(uid, PRESENCE_ONLINE, "m", (uint32_t)(10 + i), "n"), oa, ob;
        s_at(a, 2 + (uint64_t)i, PROTO_PUT, &in, &oa, NULL, T0 + (uint64_t)i * SEC, NULL);
        s_at(b, 2 + (uint64_t)i, PROTO_PUT, &in, &ob, NULL, T0 + (uint64_t)i * SEC, NULL);
        ck_assert_uint_eq(oa.version, ob.version);
        ck_assert_uint_eq(oa.expires_at_us, ob.expires_at_us);
    }
    store_changes_t ca, cbc;
    store_changes_init(&ca);
    store_changes_init(&cbc);
    uint64_t ea = 0, pa = 0, eb = 0, pb = 0;
    int na = store_sweep_at(a, 30, T0 + 25 * SEC, 100, &ca, &ea, &pa, err);
    int nb = store_sweep_at(b, 30, T0 + 25 * SEC, 100, &cbc, &eb, &pb, err);
    ck_assert_int_eq(na, nb);
    ck_assert_int_gt(na, 0);
    ck_assert_uint_eq(ea, eb);
    for (int i = 0; i < na; i++)
        ck_assert_uint_eq(ca.v[i].rec.version, cbc.v[i].rec.version);
    ck_assert_uint_eq(store_applied_index(a), 30);
    /* A sweep with nothing due still records its index. */
    store_changes_reset(&ca);
    ck_assert_int_eq(store_sweep_at(a, 31, T0 + 25 * SEC, 100, &ca, &ea, &pa, err), 0);
    ck_assert_uint_eq(store_applied_index(a), 31);
    /* b falls behind (it never saw index 31..32), then takes a's copy whole. */
    proto_record_t in = s_in("late", PRESENCE_BUSY, "only on a", 600, "n"), o;
    s_at(a, 32, PROTO_PUT, &in, &o, NULL, T0 + 26 * SEC, NULL);
    char copy[700];
    snprintf(copy, sizeof copy, "%s/copy.mdb", s_dir);
    uint64_t applied = 0;
    ck_assert_msg(store_copy(a, copy, &applied, err) == 0, "store_copy: %s", err);
    ck_assert_uint_eq(applied, 32);
    /* A copy whose index is not the announced one is refused; the state is intact. */
    ck_assert_int_eq(store_replace(b, copy, 33, err), -1);
    ck_assert_uint_eq(store_applied_index(b), 30);
    ck_assert_msg(store_replace(b, copy, 32, err) == 0, "store_replace: %s", err);
    ck_assert_uint_eq(store_applied_index(b), 32);
    ck_assert_uint_eq(store_epoch(b), 42);
    store_info_t ia, ib;
    store_get_info(a, &ia);
    store_get_info(b, &ib);
    ck_assert_uint_eq(ia.last_seq, ib.last_seq);
    ck_assert_uint_eq(ia.records, ib.records);
    store_read_t *r = store_read_begin(b, err);
    ck_assert_ptr_nonnull(r);
    proto_record_t got;
    ck_assert_int_eq(store_read_get(r, "late", 4, &got), STORE_OK);
    ck_assert_str_eq(got.message, "only on a");
    store_read_end(&r);
    /* b goes on from there like a. */
    proto_record_t in2 = s_in("next", PRESENCE_AWAY, "", 600, "n"), o1, o2;
    s_at(a, 33, PROTO_PUT, &in2, &o1, NULL, T0 + 27 * SEC, NULL);
    s_at(b, 33, PROTO_PUT, &in2, &o2, NULL, T0 + 27 * SEC, NULL);
    ck_assert_uint_eq(o1.version, o2.version);
    store_changes_fini(&ca);
    store_changes_fini(&cbc);
    store_close(&a);
    store_close(&b);
}
END_TEST

static TCase *s_tcase(Suite *s, const char *name, int timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *s_suite(void)
{
    Suite *s = suite_create("store");

    TCase *tc = s_tcase(s, "sequence", 30);
    tcase_add_test(tc, test_open_close_basics);
    tcase_add_test(tc, test_sequence_across_ops_and_reopen);
    tcase_add_test(tc, test_seq_reservation_after_crash);

    tc = s_tcase(s, "writes", 30);
    tcase_add_test(tc, test_put_fields);
    tcase_add_test(tc, test_put_updated_at);
    tcase_add_test(tc, test_touch);
    tcase_add_test(tc, test_del);
    tcase_add_test(tc, test_batch_put);
    tcase_add_test(tc, test_group_of_ops);

    tc = s_tcase(s, "map", 60);
    tcase_add_test(tc, test_map_growth);
    tcase_add_test(tc, test_map_size_max);

    tc = s_tcase(s, "sweep", 30);
    tcase_add_test(tc, test_sweep_expiry_and_purge);
    tcase_add_test(tc, test_sweep_max_actions);
    tcase_add_test(tc, test_sweep_log_pruning);

    tc = s_tcase(s, "reads", 60);
    tcase_add_test(tc, test_catchup_contents);
    tcase_add_test(tc, test_read_snapshot_isolation);
    tcase_add_test(tc, test_catchup_model);
    tcase_add_test(tc, test_info_numbers);

    tc = s_tcase(s, "sessions", 30);
    tcase_add_test(tc, test_sessions_two_devices);
    tcase_add_test(tc, test_sessions_expire);
    tcase_add_test(tc, test_lease_lapse);
    tcase_add_test(tc, test_lease_grace_after_restart);
    tcase_add_test(tc, test_sessions_invisible);
    tcase_add_test(tc, test_sessions_del);

    tc = s_tcase(s, "replicated", 30);
    tcase_add_test(tc, test_repl_epoch_and_index);
    tcase_add_test(tc, test_repl_dedup);
    tcase_add_test(tc, test_repl_copy_replace);
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
