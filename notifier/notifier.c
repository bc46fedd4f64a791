/* notifier.c -- the webhook notifier: follows the store's change stream and POSTs signed JSON
 * batches of presence events to backend URLs, at least once and in order per target.
 *
 *   store PUB/ROUTER --sync client--> notify_plan (x2 views) --> LMDB (users, log, cursors, position)
 *   target i <-- POST [events] (libcurl multi_socket) <-- batches built from the committed log
 *
 * One thread, one loop (common/zloop.h): the stream's SUB and catch-up DEALER, our PING/STATS
 * ROUTER and the epoll fd of libcurl's sockets. A turn plans the stream's changes into one write
 * transaction, moves cursors by the answers, prunes the log, records the stream position,
 * commits (fsync) -- and only then answers STATS and builds batches from the committed log, so
 * nothing is sent that a crash could take back. A restart resumes the stream from the committed
 * position (sync_client_set_position): the store's catch-up brings the changes after it. A
 * snapshot (the first start, or a position the store can no longer serve) is diffed against the
 * stored per-user states, replayed in version order; users missing from it (a merge walk over
 * both key-ordered sets) were deleted. The first snapshot ever is a silent baseline.
 * Single-threaded. docs/WEBHOOKS.md: the contract; DESIGN.md: the reasoning.
 */
#include "cfg.h"
#include "cli.h"
#include "dispatch.h"
#include "envreg.h"
#include "log.h"
#include "notify.h"
#include "notify_cfg.h"
#include "notify_db.h"
#include "notify_http.h"
#include "procstat.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zloop.h"
#include "zutil.h"

#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRUNE_MAX 20000          /* log entries deleted per turn */
#define SCAN_MAX_EXTRA 10000     /* entries a batch build may look at beyond its batch size */
#define ASKS_MAX 256             /* PING/STATS questions answered per turn (more: dropped, counted) */
#define WAIT_MAX_MS 500
#define SNAP_DELETED UINT64_MAX  /* staging key of a user the snapshot no longer has */

enum { STAGE_SET = 1, STAGE_DEL = 2 };

typedef struct target_rt {
    const notify_target_cfg_t *cfg;
    unsigned char key[32];
    notify_target_t st;
    notify_batch_t batch;   /* the batch out (its body is libcurl's until the answer) */
    bool stale;             /* the log or the state changed: try to build a batch */
    stats_hist_t req_hist;  /* POST durations */
    stats_hist_t lag_hist;  /* logged -> acknowledged, per batch (its oldest event) */
    uint64_t held_until_ms; /* wall: a held entry it wants stops it until then (0 = none) */
    uint64_t lag_from_ms;   /* wall: appended_ms of the oldest event not yet delivered (0 = none) */
} target_rt_t;

/* A PING or STATS to answer after the turn's commit. */
typedef struct ask {
    uint8_t ident[DISPATCH_IDENT_MAX];
    size_t ident_len;
    uint64_t rid;
    uint8_t type;
} ask_t;

typedef struct notifier {
    notify_cfg_t cfg;
    notify_policy_t policy;
    notify_db_t *db;
    notify_meta_t meta;
    bool meta_dirty;
    uint64_t floor;     /* first seq in the log (meta.next_seq when empty) */
    uint64_t oldest_ms; /* appended_ms of the first entry (0 when empty) */
    void *zctx, *router;
    zloop_t *loop;
    sync_client_t *sync;
    notify_http_t *http;
    ask_t asks[ASKS_MAX];
    uint32_t nasks;
    target_rt_t targets[NOTIFY_TARGETS_MAX];
    uint32_t ntargets;
    struct {
        bool active, keyscan;
        char last[PROTO_USER_ID_MAX + 1];
        size_t last_len;
        uint64_t staged, deleted;
    } snap;
    int fatal;          /* an LMDB error: stop and exit 1 (the state on disk is the last commit) */
    bool live, ready;
    uint64_t next_stats_log_ms;
    gw_buf_t json, entry;
    proto_buf_t buf, rec;
    /* counters */
    uint64_t changes_total, events_total[NOTIFY_TYPE_COUNT], debounced_total, pruned_total, bound_pruned_total;
    uint64_t bad_entries, commits, router_malformed, asks_dropped, resumes;
} notifier_t;

static volatile sig_atomic_t s_stop;

static void s_fatal(notifier_t *N, int rc, const char *what)
{
    if (!N->fatal)
        LOG(LOG_ERROR, "LMDB %s: %s; stopping (the state on disk is the last commit)", what, mdb_strerror(rc));
    N->fatal = rc ? rc : -1;
}

/* The turn's write transaction, begun on first use. Returns false after a fatal error. */
static bool s_txn(notifier_t *N)
{
    if (N->fatal)
        return false;
    if (notify_db_in_txn(N->db))
        return true;
    if (notify_db_reserve(N->db) < 0)
        LOG_RATELIMITED(LOG_WARN, 60000, "LMDB map is at NOTIFIER_MAP_MAX_MB and more than half used");
    int rc = notify_db_begin(N->db);
    if (rc) {
        s_fatal(N, rc, "begin");
        return false;
    }
    return true;
}

static void s_all_stale(notifier_t *N)
{
    for (uint32_t i = 0; i < N->ntargets; i++)
        N->targets[i].stale = true;
}

/* ==== changes -> events ====================================================================== */

/* Did a target that wants offline events take the log entry `seq` (acknowledged, or in flight)?
 * Only a held entry whose hold the wall clock undid (it went back) can have been. */
static bool s_taken(const notifier_t *N, uint64_t seq)
{
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        if (!(t->cfg->mask & (1u << NOTIFY_OFFLINE)))
            continue;
        if (t->st.cursor >= seq || (t->st.phase != NOTIFY_IDLE && t->st.inflight_last >= seq))
            return true;
    }
    return false;
}

/* What one change does in both views (docs/WEBHOOKS.md, "Invisible mode"). While the views agree
 * (the user is not invisible and was not, or the views have met again), one plan serves both and
 * its events are for every target; otherwise each view has its own plan, the public one's events
 * for ordinary targets and the user's own for privileged ones. Without privileged targets the
 * own view's events are not logged (its state is still kept, with no debounce holds: a hold would
 * name a log entry that does not exist). */
typedef struct vplan {
    notify_plan_t pub, own;
    bool split;    /* the views disagree: own is a plan of its own */
    bool log_own;  /* own's events go to the log */
} vplan_t;

static void s_plan_views(const notifier_t *N, const notify_views_t *prev, const proto_record_t *rec, uint64_t id,
                         uint64_t now_us, uint64_t next_seq, vplan_t *vp)
{
    proto_record_t pubrec;
    if (rec)
        proto_record_public(rec, &pubrec);
    bool agree = !prev || notify_user_same(&prev->pub, &prev->own);
    vp->split = !(agree && (!rec || !proto_record_invisible(rec)));
    vp->log_own = vp->split && N->cfg.any_privileged;
    notify_plan(prev ? &prev->pub : NULL, rec ? &pubrec : NULL, id, now_us, N->cfg.debounce_ms, next_seq, &vp->pub);
    if (!vp->split) {
        vp->own = vp->pub;
        return;
    }
    notify_plan(prev ? &prev->own : NULL, rec, id, now_us, vp->log_own ? N->cfg.debounce_ms : 0,
                next_seq + vp->pub.n, &vp->own);
    for (uint32_t i = 0; i < vp->pub.n; i++)
        vp->pub.ev[i].view = NOTIFY_VIEW_PUBLIC;
    for (uint32_t i = 0; i < vp->own.n; i++)
        vp->own.ev[i].view = NOTIFY_VIEW_PRIVATE;
}

/* Delete a held entry the plan cancelled (debounce). */
static void s_cancel(notifier_t *N, uint64_t seq, const char *uid, size_t len)
{
    size_t elen = 0;
    int rc = notify_db_log_del(N->db, seq, &elen);
    if (rc == 0) {
        N->meta.log_bytes -= MIN(N->meta.log_bytes, elen);
        N->meta.log_entries -= MIN(N->meta.log_entries, 1);
    } else if (rc != MDB_NOTFOUND) {
        s_fatal(N, rc, "delete held event");
        return;
    }
    N->debounced_total++;
    LOG(LOG_DEBUG, "debounce: %.*s back within %llu ms: offline (seq %llu) and online dropped", (int)len, uid,
        (unsigned long long)N->cfg.debounce_ms, (unsigned long long)seq);
}

/* Render and append a plan's events to the log. */
static void s_append(notifier_t *N, const notify_plan_t *p, const proto_record_t *rec, const char *uid, size_t len,
                     uint64_t now_us)
{
    uint64_t now_ms = now_us / 1000;
    for (uint32_t i = 0; i < p->n && !N->fatal; i++) {
        gw_buf_reset(&N->json);
        notify_event_render(&N->json, &p->ev[i], uid, len, rec, now_us, now_us);
        notify_entry_encode(&N->entry, &p->ev[i], now_ms, N->json.p, N->json.len);
        int rc = notify_db_log_append(N->db, p->ev[i].seq, N->entry.p, N->entry.len);
        if (rc) {
            s_fatal(N, rc, "append event");
            return;
        }
        N->meta.log_bytes += N->entry.len;
        N->meta.log_entries++;
        N->events_total[p->ev[i].type]++;
        if (!N->oldest_ms)
            N->oldest_ms = now_ms; /* the log was empty */
    }
}

/* A held offline a target already took (possible only when the wall clock went back) is no hold
 * any more: nothing may cancel it. */
static void s_unhold_taken(const notifier_t *N, notify_user_t *u)
{
    if (u->pend_seq && s_taken(N, u->pend_seq))
        u->pend_seq = u->pend_until_ms = u->pend_prev = 0;
}

/* Apply one change of a user: plan it against the stored state and write what the plan says.
 * quiet: the baseline (first snapshot ever): take the state, emit nothing. */
static void s_apply(notifier_t *N, const proto_record_t *rec, const char *uid, size_t len, uint64_t id, bool quiet)
{
    notify_views_t prev;
    bool found;
    int rc = notify_db_user_get(N->db, uid, len, &prev, &found);
    if (rc) {
        s_fatal(N, rc, "read user");
        return;
    }
    uint64_t now_us = util_now_us();
    N->changes_total++;
    if (quiet) {
        if (rec) {
            notify_views_t u;
            proto_record_t pubrec;
            proto_record_public(rec, &pubrec);
            notify_user_from_record(&u.pub, &pubrec, now_us);
            notify_user_from_record(&u.own, rec, now_us);
            u.pub.version = u.own.version = id;
            rc = notify_db_user_put(N->db, uid, len, &u);
        } else {
            rc = notify_db_user_del(N->db, uid, len);
        }
        if (rc)
            s_fatal(N, rc, "write user");
        return;
    }
    if (found) {
        s_unhold_taken(N, &prev.pub);
        s_unhold_taken(N, &prev.own);
    } else {
        memset(&prev, 0, sizeof prev); /* what notify_plan assumes of an unknown user */
        prev.pub.status = prev.own.status = PRESENCE_OFFLINE;
    }
    vplan_t vp;
    s_plan_views(N, found ? &prev : NULL, rec, id, now_us, N->meta.next_seq, &vp);
    if (vp.pub.cancel_seq)
        s_cancel(N, vp.pub.cancel_seq, uid, len);
    if (vp.split && vp.own.cancel_seq && vp.own.cancel_seq != vp.pub.cancel_seq && vp.log_own)
        s_cancel(N, vp.own.cancel_seq, uid, len);
    if (N->fatal)
        return;
    s_append(N, &vp.pub, rec, uid, len, now_us);
    uint32_t n = vp.pub.n;
    if (vp.log_own) {
        s_append(N, &vp.own, rec, uid, len, now_us);
        n += vp.own.n;
    }
    if (N->fatal)
        return;
    N->meta.next_seq += n;
    bool write = vp.pub.write_state || vp.own.write_state;
    bool del = vp.pub.delete_state && (!vp.split || vp.own.delete_state);
    if (del) {
        rc = notify_db_user_del(N->db, uid, len);
    } else if (write) {
        notify_views_t next = {.pub = vp.pub.write_state ? vp.pub.next : prev.pub,
                               .own = vp.own.write_state ? vp.own.next : prev.own};
        if (!vp.split)
            next.own = next.pub;
        rc = notify_db_user_put(N->db, uid, len, &next);
    }
    if (rc) {
        s_fatal(N, rc, "write user");
        return;
    }
    if (n || vp.pub.cancel_seq || vp.own.cancel_seq || write || del)
        N->meta_dirty = true;
    if (n || vp.pub.cancel_seq || vp.own.cancel_seq)
        s_all_stale(N);
}

/* ---- snapshots --------------------------------------------------------------------------------
 * Records of the key scan come in user-id order, the same order as our users database: every
 * stored user whose id falls strictly between two consecutive snapshot records (or after the
 * last) is not in the store any more. */

static int on_walk(void *ctx, const char *uid, size_t len, const notify_views_t *u)
{
    notifier_t *N = ctx;
    (void)u;
    if (!N->meta.baseline)
        return 1; /* a baseline interrupted before: forget rows the store no longer has */
    unsigned char v = STAGE_DEL;
    int rc = notify_db_snap_put(N->db, SNAP_DELETED, uid, len, &v, 1);
    if (rc == 0)
        N->snap.deleted++;
    return rc;
}

static void s_walk(notifier_t *N, const char *before, size_t blen)
{
    int rc = notify_db_user_range(N->db, N->snap.last, N->snap.last_len, before, blen, on_walk, N);
    if (rc)
        s_fatal(N, rc, "snapshot walk");
}

static int s_keycmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, MIN(al, bl));
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static void s_stage(notifier_t *N, const proto_change_t *c)
{
    const proto_record_t *r = &c->rec;
    proto_buf_reset(&N->rec);
    unsigned char kind = c->kind == PROTO_CH_SET ? STAGE_SET : STAGE_DEL;
    proto_buf_append(&N->rec, &kind, 1);
    if (kind == STAGE_SET)
        proto_record_encode(&N->rec, r);
    int rc = notify_db_snap_put(N->db, r->version, r->user_id, r->uid_len, N->rec.data, N->rec.len);
    if (rc)
        s_fatal(N, rc, "stage");
    else
        N->snap.staged++;
}

static void s_snap_change(notifier_t *N, const proto_change_t *c)
{
    const proto_record_t *r = &c->rec;
    bool keyscan = N->snap.keyscan && c->kind == PROTO_CH_SET && sync_client_seq(N->sync) == 0 &&
                   (N->snap.last_len == 0 || s_keycmp(r->user_id, r->uid_len, N->snap.last, N->snap.last_len) > 0);
    if (N->snap.keyscan && !keyscan) {
        /* The key scan is over: everything after its last key is gone too. */
        s_walk(N, NULL, 0);
        N->snap.keyscan = false;
    }
    if (keyscan) {
        s_walk(N, r->user_id, r->uid_len);
        memcpy(N->snap.last, r->user_id, r->uid_len);
        N->snap.last_len = r->uid_len;
        if (!N->meta.baseline) {
            s_apply(N, r, r->user_id, r->uid_len, r->version, true);
            return;
        }
        /* Stage only users whose state this record changes (the rest cost one read). */
        notify_views_t prev;
        bool found;
        int rc = notify_db_user_get(N->db, r->user_id, r->uid_len, &prev, &found);
        if (rc) {
            s_fatal(N, rc, "read user");
            return;
        }
        vplan_t vp;
        s_plan_views(N, found ? &prev : NULL, r, r->version, util_now_us(), 1, &vp);
        if (vp.pub.n || vp.pub.cancel_seq || vp.own.n || vp.own.cancel_seq)
            s_stage(N, c);
        return;
    }
    if (!N->meta.baseline) {
        s_apply(N, c->kind == PROTO_CH_SET ? r : NULL, r->user_id, r->uid_len, r->version, true);
        return;
    }
    /* A later change of a user the walk found missing supersedes that finding. */
    int rc = notify_db_snap_del(N->db, SNAP_DELETED, r->user_id, r->uid_len);
    if (rc) {
        s_fatal(N, rc, "stage");
        return;
    }
    s_stage(N, c);
}

typedef struct replay_ctx {
    notifier_t *N;
    uint64_t live_seq;
} replay_ctx_t;

static int on_replay(void *ctx, uint64_t version, const char *uid, size_t len, const void *val, size_t vlen)
{
    replay_ctx_t *rc = ctx;
    notifier_t *N = rc->N;
    const unsigned char *p = val;
    if (vlen >= 1 && p[0] == STAGE_SET) {
        proto_record_t r;
        if (proto_record_decode(p + 1, vlen - 1, &r) == 0)
            s_apply(N, &r, uid, len, version, false);
    } else if (vlen >= 1 && p[0] == STAGE_DEL) {
        /* A delete the walk found has no version of its own: it happened by the snapshot's end. */
        s_apply(N, NULL, uid, len, version == SNAP_DELETED ? rc->live_seq : version, false);
    }
    return N->fatal ? N->fatal : 0;
}

static void s_snap_finish(notifier_t *N, uint64_t live_seq)
{
    if (!N->snap.active || !s_txn(N))
        return;
    if (N->snap.keyscan) {
        s_walk(N, NULL, 0);
        N->snap.keyscan = false;
    }
    bool was_baseline = !N->meta.baseline;
    if (N->meta.baseline) {
        replay_ctx_t rc = {N, live_seq};
        int r = notify_db_snap_each(N->db, on_replay, &rc);
        if (r && !N->fatal)
            s_fatal(N, r, "replay snapshot");
    }
    int r = notify_db_snap_clear(N->db);
    if (r)
        s_fatal(N, r, "clear staging");
    N->snap.active = false;
    N->meta.baseline = true;
    N->meta_dirty = true;
    if (was_baseline)
        LOG(LOG_NOTICE, "baseline taken from the store's snapshot at seq %llu: events are computed from now on",
            (unsigned long long)live_seq);
    else
        LOG(LOG_NOTICE, "snapshot at seq %llu diffed: %llu changed users staged, %llu deleted", (unsigned long long)live_seq,
            (unsigned long long)N->snap.staged, (unsigned long long)N->snap.deleted);
}

/* ---- sync client callbacks (inside sync_client_handle) ---------------------------------------- */

static void on_change(void *ctx, const proto_change_t *c)
{
    notifier_t *N = ctx;
    if (c->kind == PROTO_CH_TOUCH)
        return; /* a heartbeat that kept the status: not an event */
    if (c->kind != PROTO_CH_SET && c->kind != PROTO_CH_DEL)
        return;
    if (!s_txn(N))
        return;
    if (N->snap.active)
        s_snap_change(N, c);
    else
        s_apply(N, c->kind == PROTO_CH_SET ? &c->rec : NULL, c->rec.user_id, c->rec.uid_len, c->rec.version, false);
}

static void on_reset(void *ctx)
{
    notifier_t *N = ctx;
    if (!s_txn(N))
        return;
    int rc = notify_db_snap_clear(N->db);
    if (rc) {
        s_fatal(N, rc, "clear staging");
        return;
    }
    N->snap.active = true;
    N->snap.keyscan = true;
    N->snap.last_len = 0;
    N->snap.staged = N->snap.deleted = 0;
}

static void on_sync_state(void *ctx, int state)
{
    notifier_t *N = ctx;
    N->live = state == SYNC_LIVE;
    LOG(LOG_INFO, "stream %s (seq %llu)", sync_state_name(state), (unsigned long long)sync_client_seq(N->sync));
    if (state == SYNC_LIVE && N->snap.active)
        s_snap_finish(N, sync_client_seq(N->sync));
}

/* ==== commit and prune ======================================================================= */

static bool s_any_dirty(const notifier_t *N)
{
    for (uint32_t i = 0; i < N->ntargets; i++)
        if (N->targets[i].st.dirty)
            return true;
    return false;
}

static uint64_t s_min_cursor(const notifier_t *N)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < N->ntargets; i++)
        m = MIN(m, N->targets[i].st.cursor);
    return m;
}

/* Delete what every target is past, and the oldest entries beyond the log's bound. */
static void s_prune(notifier_t *N, uint64_t now_ms)
{
    uint64_t minc = s_min_cursor(N);
    for (int n = 0; n < PRUNE_MAX; n++) {
        uint64_t seq, appended;
        size_t len;
        int rc = notify_db_log_first(N->db, &seq, &appended, &len);
        if (rc == MDB_NOTFOUND) {
            N->floor = N->meta.next_seq;
            N->oldest_ms = 0;
            break;
        }
        if (rc) {
            s_fatal(N, rc, "prune");
            return;
        }
        N->floor = seq;
        N->oldest_ms = appended ? appended : 1;
        bool acked = seq <= minc;
        if (!acked && !notify_over_bound(N->meta.log_bytes, N->cfg.log_max_bytes, appended, N->cfg.log_max_age_ms, now_ms))
            break;
        if ((rc = notify_db_log_del(N->db, seq, &len)) != 0) {
            s_fatal(N, rc, "prune");
            return;
        }
        N->meta.log_bytes -= MIN(N->meta.log_bytes, len);
        N->meta.log_entries -= MIN(N->meta.log_entries, 1);
        N->floor = seq + 1;
        N->meta_dirty = true;
        if (acked) {
            N->pruned_total++;
        } else {
            N->bound_pruned_total++;
            LOG_RATELIMITED(LOG_WARN, 10000,
                            "event log over its bound (%llu bytes, WEBHOOK_LOG_MAX_BYTES=%llu, WEBHOOK_LOG_MAX_AGE=%llu ms): "
                            "dropping seq %llu that a target has not acknowledged",
                            (unsigned long long)N->meta.log_bytes, (unsigned long long)N->cfg.log_max_bytes,
                            (unsigned long long)N->cfg.log_max_age_ms, (unsigned long long)seq);
        }
    }
}

/* The stream position to keep: where the users' states are complete up to. Not during a
 * snapshot (its staged diff is not applied yet: a restart must not skip it) nor before the
 * baseline. Returns true when it moved. */
static bool s_position(notifier_t *N)
{
    if (N->snap.active || !N->meta.baseline)
        return false;
    sync_stats_t ss;
    sync_client_get_stats(N->sync, &ss);
    if (ss.epoch == 0 || (ss.epoch == N->meta.pos_epoch && ss.seq == N->meta.pos_seq))
        return false;
    N->meta.pos_epoch = ss.epoch;
    N->meta.pos_seq = ss.seq;
    N->meta_dirty = true;
    return true;
}

/* Write the turn: dirty cursors, prune, the stream position, meta; commit (fsync). */
static void s_commit(notifier_t *N, uint64_t now_ms)
{
    s_position(N);
    bool prune_due = N->floor <= s_min_cursor(N) ||
                     (N->meta.log_entries && notify_over_bound(N->meta.log_bytes, N->cfg.log_max_bytes, N->oldest_ms,
                                                               N->cfg.log_max_age_ms, now_ms));
    if (!notify_db_in_txn(N->db) && !s_any_dirty(N) && !prune_due && !N->meta_dirty)
        return;
    if (!s_txn(N))
        return;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        target_rt_t *t = &N->targets[i];
        if (!t->st.dirty)
            continue;
        int rc = notify_db_cursor_put(N->db, t->key, t->st.cursor, t->st.acked_id);
        if (rc) {
            s_fatal(N, rc, "write cursor");
            return;
        }
        t->st.dirty = false;
    }
    uint64_t floor_before = N->floor;
    s_prune(N, now_ms);
    if (N->fatal)
        return;
    if (N->floor != floor_before)
        s_all_stale(N);
    if (N->meta_dirty) {
        int rc = notify_db_meta_put(N->db, &N->meta);
        if (rc) {
            s_fatal(N, rc, "write meta");
            return;
        }
        N->meta_dirty = false;
    }
    int rc = notify_db_commit(N->db);
    if (rc) {
        s_fatal(N, rc, "commit");
        return;
    }
    N->commits++;
}

/* ==== delivery =============================================================================== */

typedef struct build_ctx {
    notify_batch_t *b;
    uint32_t mask;
    uint64_t now_ms;
    uint64_t scanned, scan_max;
    int stop;            /* NOTIFY_FULL / NOTIFY_HELD / -1 scan bound / 0 end of log */
    uint64_t held_appended_ms;
} build_ctx_t;

static int on_entry(void *ctx, const notify_entry_t *e)
{
    build_ctx_t *bc = ctx;
    int r = notify_batch_offer(bc->b, bc->mask, e, bc->now_ms);
    if (r == NOTIFY_FULL || r == NOTIFY_HELD) {
        bc->stop = r;
        if (r == NOTIFY_HELD)
            bc->held_appended_ms = e->appended_ms;
        return 1;
    }
    if (++bc->scanned >= bc->scan_max) {
        bc->stop = -1;
        return 1;
    }
    return 0;
}

static void s_post(notifier_t *N, uint32_t i)
{
    target_rt_t *t = &N->targets[i];
    char sig[160], attempt[48];
    const char *hdrs[3] = {sig, attempt, NULL};
    snprintf(attempt, sizeof attempt, "X-Presence-Attempt: %u", t->st.attempt + 1);
    uint64_t ts = util_now_us() / 1000000;
    if (notify_sign_header(t->cfg->secret, t->cfg->secret_len, ts, t->batch.body.p, t->batch.body.len, sig,
                           sizeof sig) < 0 ||
        notify_http_post(N->http, i, t->cfg->url, hdrs, t->batch.body.p, t->batch.body.len) < 0) {
        /* Nothing went out: count it as a failed attempt (retried with backoff). */
        notify_target_sent(&t->st, t->batch.last_seq, t->batch.n);
        uint64_t rnd = 0;
        util_random(&rnd, sizeof rnd);
        notify_target_result(&t->st, &N->policy, 0, 0, t->batch.last_id, util_mono_ms(), rnd,
                             (uint32_t)N->cfg.batch_max);
        LOG_RATELIMITED(LOG_ERROR, 10000, "target %u: could not start a request (signing or libcurl failed)", i);
        return;
    }
    notify_target_sent(&t->st, t->batch.last_seq, t->batch.n);
}

/* Start a batch for every target that can take one. */
static void s_schedule(notifier_t *N)
{
    uint64_t mono = util_mono_ms(), wall = util_now_us() / 1000;
    uint64_t head = N->meta.next_seq - 1;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        target_rt_t *t = &N->targets[i];
        if (t->st.phase == NOTIFY_INFLIGHT)
            continue;
        bool retry_due = t->st.phase == NOTIFY_BACKOFF && mono >= t->st.retry_at_ms;
        bool held_due = t->held_until_ms && wall >= t->held_until_ms;
        if (t->st.phase == NOTIFY_BACKOFF && !retry_due)
            continue;
        if (!t->stale && !retry_due && !held_due)
            continue;
        t->stale = false;
        t->held_until_ms = 0;
        uint64_t skipped = notify_target_catch_floor(&t->st, N->floor);
        if (skipped)
            LOG(LOG_WARN,
                "target %u (%s): %llu events were dropped from the log (its bound) before it acknowledged them: "
                "gap, continuing at seq %llu",
                i, t->cfg->shown, (unsigned long long)skipped, (unsigned long long)N->floor);
        if (t->st.cursor >= head) {
            t->lag_from_ms = 0;
            t->st.phase = NOTIFY_IDLE;
            continue;
        }
        notify_batch_begin(&t->batch, t->st.cursor, t->st.batch_limit, N->cfg.batch_bytes, N->cfg.debounce_ms);
        build_ctx_t bc = {.b = &t->batch, .mask = t->cfg->mask, .now_ms = wall,
                          .scan_max = t->st.batch_limit + SCAN_MAX_EXTRA};
        int rc = notify_db_log_scan(N->db, t->st.cursor, on_entry, &bc, &N->bad_entries);
        if (rc) {
            s_fatal(N, rc, "read log");
            return;
        }
        if (bc.stop == -1)
            t->stale = true; /* more to look at next turn */
        if (t->batch.n == 0) {
            notify_target_skip(&t->st, t->batch.last_seq);
            t->st.phase = NOTIFY_IDLE;
            if (bc.stop == NOTIFY_HELD) {
                t->held_until_ms = t->batch.held_until_ms;
                t->lag_from_ms = bc.held_appended_ms;
            } else if (t->st.cursor >= head) {
                t->lag_from_ms = 0;
            }
            continue;
        }
        notify_batch_end(&t->batch);
        if (bc.stop == NOTIFY_HELD)
            t->held_until_ms = t->batch.held_until_ms;
        t->lag_from_ms = t->batch.oldest_ms;
        s_post(N, i);
    }
}

static void s_on_done(notifier_t *N, const notify_http_done_t *d)
{
    target_rt_t *t = &N->targets[d->target];
    if (t->st.phase != NOTIFY_INFLIGHT)
        return;
    uint64_t rnd = 0;
    util_random(&rnd, sizeof rnd);
    uint32_t attempts = t->st.attempt + 1, n = t->st.inflight_n;
    stats_hist_observe(&t->req_hist, d->elapsed_us);
    int out = notify_target_result(&t->st, &N->policy, d->status, d->retry_after_s, t->batch.last_id, util_mono_ms(),
                                   rnd, (uint32_t)N->cfg.batch_max);
    t->stale = true;
    switch (out) {
    case NOTIFY_ACKED:
        if (t->batch.oldest_ms) {
            uint64_t wall = util_now_us() / 1000;
            stats_hist_observe(&t->lag_hist, wall > t->batch.oldest_ms ? (wall - t->batch.oldest_ms) * 1000 : 0);
        }
        if (attempts > 1)
            LOG(LOG_NOTICE, "webhook delivered after retries target=%u url=%s attempts=%u events=%u first_id=%llu last_id=%llu",
                d->target, t->cfg->shown, attempts, n, (unsigned long long)t->batch.first_id,
                (unsigned long long)t->batch.last_id);
        else
            LOG(LOG_DEBUG, "webhook delivered target=%u events=%u first_id=%llu last_id=%llu us=%llu", d->target, n,
                (unsigned long long)t->batch.first_id, (unsigned long long)t->batch.last_id,
                (unsigned long long)d->elapsed_us);
        if (t->st.cursor >= N->meta.next_seq - 1)
            t->lag_from_ms = 0;
        break;
    case NOTIFY_SPLIT:
        LOG(LOG_WARN, "webhook 413: retrying in smaller batches target=%u url=%s code=413 events=%u batch=%u", d->target,
            t->cfg->shown, n, t->st.batch_limit);
        break;
    case NOTIFY_DROPPED:
        LOG_RATELIMITED(LOG_WARN, 1000,
                        "webhook events dropped (a 3xx/4xx answer is not retried: WEBHOOK_ON_4XX=drop) target=%u url=%s "
                        "code=%d events=%u first_id=%llu last_id=%llu",
                        d->target, t->cfg->shown, d->status, n, (unsigned long long)t->batch.first_id,
                        (unsigned long long)t->batch.last_id);
        break;
    default:
        if (d->status)
            LOG_RATELIMITED(LOG_WARN, 1000, "webhook failed, will retry target=%u url=%s code=%d attempt=%u retry_ms=%llu",
                            d->target, t->cfg->shown, d->status, attempts,
                            (unsigned long long)(t->st.retry_at_ms - util_mono_ms()));
        else
            LOG_RATELIMITED(LOG_WARN, 1000, "webhook failed (%s), will retry target=%u url=%s attempt=%u retry_ms=%llu",
                            d->error, d->target, t->cfg->shown, attempts,
                            (unsigned long long)(t->st.retry_at_ms - util_mono_ms()));
        break;
    }
}

/* Drive the transfers and take their answers. Returns the number of answers taken. */
static int s_collect(notifier_t *N)
{
    if (notify_http_drive(N->http, util_mono_ms()) < 0)
        LOG_RATELIMITED(LOG_ERROR, 10000, "libcurl: curl_multi_socket_action failed");
    notify_http_done_t d;
    int n = 0;
    while (notify_http_next_done(N->http, &d)) {
        s_on_done(N, &d);
        n++;
    }
    return n;
}

/* ==== stats and the ROUTER =================================================================== */

static uint64_t s_lag_us(const notifier_t *N, const target_rt_t *t)
{
    uint64_t wall = util_now_us() / 1000;
    (void)N;
    return t->lag_from_ms && wall > t->lag_from_ms ? (wall - t->lag_from_ms) * 1000 : 0;
}

static void s_collect_stats(notifier_t *N, stats_list_t *l, bool full)
{
    stats_add(l, "notifier_live", N->ready && N->live ? 1 : 0);
    stats_add(l, "notifier_sync_sequence", sync_client_seq(N->sync));
    if (!full)
        return;
    sync_stats_t ss;
    sync_client_get_stats(N->sync, &ss);
    stats_add(l, "notifier_sync_gaps_total", ss.gaps);
    stats_add(l, "notifier_sync_snapshots_total", ss.snapshots);
    stats_add(l, "notifier_sync_resumes_total", N->resumes);
    stats_add(l, "notifier_sync_lag_seconds:us", ss.lag_ms * 1000);
    stats_add(l, "notifier_changes_total", N->changes_total);
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        stats_addf(l, N->events_total[i], "notifier_events_total{type=\"%s\"}", notify_type_name(i));
    stats_add(l, "notifier_debounced_total", N->debounced_total);
    stats_add(l, "notifier_log_entries", N->meta.log_entries);
    stats_add(l, "notifier_log_bytes", N->meta.log_bytes);
    stats_add(l, "notifier_log_pruned_total", N->pruned_total);
    stats_add(l, "notifier_log_bound_pruned_total", N->bound_pruned_total);
    stats_add(l, "notifier_commits_total", N->commits);
    stats_add(l, "notifier_malformed_total", N->router_malformed);
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        char lab[48];
        snprintf(lab, sizeof lab, "target=\"%u\"", i);
        stats_addf(l, t->st.delivered_events, "notifier_webhook_delivered_events_total{%s}", lab);
        stats_addf(l, t->st.delivered_batches, "notifier_webhook_delivered_batches_total{%s}", lab);
        stats_addf(l, t->st.retries, "notifier_webhook_retries_total{%s}", lab);
        stats_addf(l, t->st.failures, "notifier_webhook_failures_total{%s}", lab);
        stats_addf(l, t->st.dropped_events, "notifier_webhook_dropped_events_total{%s}", lab);
        stats_addf(l, t->st.gaps, "notifier_webhook_gaps_total{%s}", lab);
        stats_addf(l, t->st.gap_entries, "notifier_webhook_gap_events_total{%s}", lab);
        stats_addf(l, s_lag_us(N, t), "notifier_webhook_lag_seconds{%s}:us", lab);
        stats_addf(l, t->st.cursor, "notifier_webhook_cursor{%s}", lab);
        stats_addf(l, N->meta.next_seq - 1 - MIN(t->st.cursor, N->meta.next_seq - 1),
                   "notifier_webhook_pending_entries{%s}", lab);
        stats_add_hist(l, "notifier_webhook_request_duration_seconds", lab, &t->req_hist);
        stats_add_hist(l, "notifier_webhook_delivery_seconds", lab, &t->lag_hist);
    }
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, "proc=\"notifier\"", &ps);
    stats_add_build_info(l, "proc=\"notifier\"", cli_version(), cli_commit());
}

/* PING and STATS are answered after the turn's commit (what they report is durable): queued
 * here, answered by s_answer_asks. */
static void on_ask(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    notifier_t *N = ctx;
    if (N->nasks == ASKS_MAX || !in->ident) {
        N->asks_dropped++;
        return;
    }
    ask_t *a = &N->asks[N->nasks++];
    memcpy(a->ident, in->ident, in->ident_len);
    a->ident_len = in->ident_len;
    a->rid = m->rid;
    a->type = m->type;
}

static void s_reject(notifier_t *N, const dispatch_in_t *in, uint64_t rid, const char *why)
{
    N->router_malformed++;
    if (!in->ident)
        return;
    proto_buf_reset(&N->buf);
    proto_enc_reply(&N->buf, rid, PROTO_EBADREQ, 0, NULL, 0, why, 0);
    zu_send(N->router, in->ident, in->ident_len, N->buf.data, N->buf.len);
    zloop_sent(N->loop, N->router);
}

static void on_other(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_reject(ctx, in, m->rid, "unsupported: the notifier answers PING and STATS only");
}

static void on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    notifier_t *N = ctx;
    if (has_rid) {
        char err[160];
        snprintf(err, sizeof err, "malformed: %s", why);
        s_reject(N, in, rid, err);
    } else {
        N->router_malformed++;
    }
}

static const dispatch_t s_router_dispatch = {
    .routed = true,
    .on = {[PROTO_PING] = on_ask, [PROTO_STATS] = on_ask},
    .on_other = on_other,
    .on_malformed = on_malformed,
};

static void s_on_router_frames(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_router_dispatch, arg, sock, frames, n);
}

static void s_answer_asks(notifier_t *N)
{
    for (uint32_t i = 0; i < N->nasks; i++) {
        const ask_t *a = &N->asks[i];
        stats_list_t l;
        stats_list_init(&l);
        s_collect_stats(N, &l, a->type == PROTO_STATS);
        proto_buf_reset(&N->buf);
        proto_enc_stats(&N->buf, a->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, a->rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        zu_send(N->router, a->ident, a->ident_len, N->buf.data, N->buf.len);
    }
    if (N->nasks)
        zloop_sent(N->loop, N->router);
    N->nasks = 0;
}

static void s_log_stats(notifier_t *N)
{
    LOG(LOG_INFO, "stats seq=%llu changes=%llu log=%llu entries/%llu bytes debounced=%llu pruned=%llu bound_pruned=%llu",
        (unsigned long long)sync_client_seq(N->sync), (unsigned long long)N->changes_total,
        (unsigned long long)N->meta.log_entries, (unsigned long long)N->meta.log_bytes,
        (unsigned long long)N->debounced_total, (unsigned long long)N->pruned_total,
        (unsigned long long)N->bound_pruned_total);
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        LOG(LOG_INFO,
            "stats target=%u url=%s cursor=%llu delivered=%llu batches=%llu retries=%llu failures=%llu dropped=%llu "
            "gaps=%llu lag_ms=%llu",
            i, t->cfg->shown, (unsigned long long)t->st.cursor, (unsigned long long)t->st.delivered_events,
            (unsigned long long)t->st.delivered_batches, (unsigned long long)t->st.retries,
            (unsigned long long)t->st.failures, (unsigned long long)t->st.dropped_events,
            (unsigned long long)t->st.gap_entries, (unsigned long long)(s_lag_us(N, t) / 1000));
    }
}

/* ==== startup ================================================================================ */

/* Load the stored state and the targets' cursors (a new target starts at the log's head: it gets
 * the events from now on), forget cursors of targets no longer configured, drop a half-staged
 * snapshot. */
static int s_load(notifier_t *N, char *err)
{
    int rc = notify_db_begin(N->db);
    if (rc)
        goto fail;
    if ((rc = notify_db_meta_get(N->db, &N->meta)) || (rc = notify_db_snap_clear(N->db)))
        goto fail;
    unsigned char keys[NOTIFY_TARGETS_MAX][32];
    for (uint32_t i = 0; i < N->ntargets; i++) {
        target_rt_t *t = &N->targets[i];
        t->cfg = &N->cfg.targets[i];
        if (notify_key(t->cfg->url, strlen(t->cfg->url), t->key) < 0) {
            snprintf(err, CFG_ERR_LEN, "SHA-256 failed");
            notify_db_abort(N->db);
            return -1;
        }
        memcpy(keys[i], t->key, 32);
        uint64_t cursor = 0, acked = 0;
        bool found;
        if ((rc = notify_db_cursor_get(N->db, t->key, &cursor, &acked, &found)))
            goto fail;
        if (!found) {
            cursor = N->meta.next_seq - 1;
            if ((rc = notify_db_cursor_put(N->db, t->key, cursor, 0)))
                goto fail;
            LOG(LOG_NOTICE, "target %u (%s): new, starts with the events after seq %llu", i, t->cfg->shown,
                (unsigned long long)cursor);
        }
        notify_target_init(&t->st, cursor, (uint32_t)N->cfg.batch_max);
        t->st.acked_id = acked;
        notify_batch_init(&t->batch);
        stats_hist_init_latency(&t->req_hist);
        stats_hist_init_latency(&t->lag_hist);
        t->stale = true;
    }
    uint32_t removed = 0;
    if ((rc = notify_db_cursor_keep(N->db, (const unsigned char(*)[32])keys, N->ntargets, &removed)))
        goto fail;
    if (removed)
        LOG(LOG_NOTICE, "forgot the cursors of %u targets that are no longer configured", removed);
    uint64_t seq, appended;
    size_t len;
    rc = notify_db_log_first(N->db, &seq, &appended, &len);
    if (rc == MDB_NOTFOUND)
        N->floor = N->meta.next_seq;
    else if (rc)
        goto fail;
    else {
        N->floor = seq;
        N->oldest_ms = appended ? appended : 1;
    }
    if ((rc = notify_db_commit(N->db)))
        goto fail;
    return 0;
fail:
    notify_db_abort(N->db);
    snprintf(err, CFG_ERR_LEN, "LMDB: %s", mdb_strerror(rc));
    return -1;
}

static void s_fini(notifier_t *N)
{
    sync_client_destroy(&N->sync);
    notify_http_destroy(&N->http);
    zloop_destroy(&N->loop);
    if (N->router)
        zmq_close(N->router);
    if (N->zctx)
        zmq_ctx_term(N->zctx);
    notify_db_close(&N->db);
    for (uint32_t i = 0; i < N->ntargets; i++)
        notify_batch_fini(&N->targets[i].batch);
    gw_buf_free(&N->json);
    gw_buf_free(&N->entry);
    proto_buf_fini(&N->buf);
    proto_buf_fini(&N->rec);
    curl_global_cleanup();
}

/* ==== the loop ================================================================================
 * zloop turn: s_turn (timers: the stream's, libcurl's, retries, holds) -> wait -> the stream
 * (drained by the sync client; changes go into the turn's transaction), libcurl's sockets, the
 * ROUTER (questions queued) -> s_after: answers taken, commit, questions answered, new batches
 * started. */

static uint64_t s_turn(void *arg, uint64_t now)
{
    notifier_t *N = arg;
    uint64_t next = sync_client_tick(N->sync, now);
    if (sync_client_take_sent(N->sync)) {
        zmq_pollitem_t items[2];
        sync_client_poll_items(N->sync, items);
        zloop_sent(N->loop, items[1].socket);
    }
    if (now >= notify_http_deadline(N->http))
        s_collect(N);
    next = MIN(next, notify_http_deadline(N->http));
    uint64_t wall = util_now_us() / 1000;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        if (t->st.phase == NOTIFY_BACKOFF)
            next = MIN(next, t->st.retry_at_ms);
        if (t->held_until_ms)
            next = MIN(next, now + (t->held_until_ms > wall ? t->held_until_ms - wall : 0));
        if (t->stale && t->st.phase == NOTIFY_IDLE)
            next = now; /* a batch to build: no sleep */
    }
    if (N->cfg.stats_log_ms)
        next = MIN(next, N->next_stats_log_ms);
    return next;
}

static bool s_pump_stream(void *arg)
{
    notifier_t *N = arg;
    return sync_client_handle(N->sync) != 0;
}

static void s_on_http(void *arg, int fd)
{
    (void)fd;
    s_collect(arg);
}

static void s_after(void *arg)
{
    notifier_t *N = arg;
    s_collect(N);
    s_commit(N, util_now_us() / 1000);
    if (N->fatal) {
        zloop_stop(N->loop);
        return;
    }
    /* After the commit: what STATS reports (the applied sequence, cursors) is durable. */
    s_answer_asks(N);
    if (!N->ready && N->live && N->meta.baseline && !N->snap.active) {
        N->ready = true;
        char line[700];
        snprintf(line, sizeof line, "notifier endpoint=%s targets=%u seq=%llu", N->cfg.endpoint, N->ntargets,
                 (unsigned long long)sync_client_seq(N->sync));
        LOG(LOG_NOTICE, "ready %s", line);
        zu_signal_ready(line);
    }
    s_schedule(N);
    uint64_t now = util_mono_ms();
    if (N->cfg.stats_log_ms && now >= N->next_stats_log_ms) {
        s_log_stats(N);
        N->next_stats_log_ms = now + N->cfg.stats_log_ms;
    }
}

/* SIGTERM: no more stream; let requests in flight finish (at most NOTIFIER_STOP_GRACE_MS) so
 * their acknowledgements are kept; what is still out then is sent again after the restart. */
static void s_drain(notifier_t *N)
{
    uint64_t deadline = util_mono_ms() + N->cfg.stop_grace_ms;
    while (!N->fatal && notify_http_inflight(N->http) && util_mono_ms() < deadline) {
        uint64_t left = deadline - util_mono_ms();
        notify_http_wait(N->http, (int)MIN(left, 50));
        s_collect(N);
    }
    for (uint32_t i = 0; i < N->ntargets; i++)
        notify_http_cancel(N->http, i);
    if (!N->fatal)
        s_commit(N, util_now_us() / 1000);
    if (notify_db_in_txn(N->db))
        notify_db_abort(N->db);
}

/* ==== main ==================================================================================== */

static int s_config(void *arg, char *err)
{
    notifier_t *N = arg;
    if (notify_cfg_load(&N->cfg, err) < 0)
        return -1;
    for (uint32_t i = 0; i < N->cfg.ntargets; i++) {
        char why[CFG_ERR_LEN];
        if (notify_http_check_url(N->cfg.targets[i].url, why) < 0) {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %u: %.200s", i + 1, why);
            return -1;
        }
    }
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "notifier",
    .summary = "Follows the store's change stream and POSTs signed JSON batches of presence events to webhook\n"
               "URLs, at least once and in order per target (docs/WEBHOOKS.md).",
    .usage = "",
    .more = "Targets are given by index: item i of WEBHOOK_SECRETS, WEBHOOK_EVENTS and WEBHOOK_PRIVILEGED\n"
            "belongs to URL i; a list of one item applies to every URL. Event types: online, offline, status,\n"
            "message, session_start, session_end. State (event log, cursors) lives in DATA_DIR/notifier.",
    .procs = ENVREG_NOTIFIER,
};

static int s_sockets(notifier_t *N, char *err)
{
    N->zctx = zmq_ctx_new();
    N->router = zu_socket(N->zctx, ZMQ_ROUTER, 1000, 1000);
    int one = 1;
    if (N->router)
        zmq_setsockopt(N->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (!N->router || zmq_bind(N->router, N->cfg.endpoint) < 0) {
        snprintf(err, CFG_ERR_LEN, "NOTIFIER_ENDPOINT: bind %s: %s", N->cfg.endpoint, zmq_strerror(errno));
        return -1;
    }
    char ua[64];
    snprintf(ua, sizeof ua, "presence-notifier/%s", cli_version());
    notify_http_cfg_t hc = {.connect_timeout_ms = N->cfg.connect_timeout_ms, .timeout_ms = N->cfg.timeout_ms,
                            .ca_file = N->cfg.ca_file, .proxy = N->cfg.proxy, .user_agent = ua};
    if (!(N->http = notify_http_new(&hc, N->ntargets, err)))
        return -1;
    sync_config_t scfg = {.pub_ep = N->cfg.store_pub, .cmd_ep = N->cfg.store_cmd,
                          .heartbeat_limit_ms = N->cfg.hb_limit_ms, .request_timeout_ms = N->cfg.request_timeout_ms,
                          .sub_hwm = (uint32_t)N->cfg.sub_hwm, .want_snapshot_data = true};
    sync_handler_t sh = {.ctx = N, .apply = on_change, .reset = on_reset, .state = on_sync_state};
    if (!(N->sync = sync_client_new(N->zctx, &scfg, &sh, err)))
        return -1;
    /* Resume where the committed state ends (the store's catch-up brings what came after), or
     * take a snapshot when there is no position (first start) or the store cannot serve it. */
    if (N->meta.baseline && N->meta.pos_epoch) {
        sync_client_set_position(N->sync, N->meta.pos_epoch, N->meta.pos_seq);
        N->resumes++;
    }
    zloop_hooks_t hooks = {.arg = N, .turn = s_turn, .after = s_after};
    N->loop = zloop_new(&hooks, WAIT_MAX_MS);
    zmq_pollitem_t items[2];
    sync_client_poll_items(N->sync, items);
    void *socks[2] = {items[0].socket, items[1].socket};
    if (zloop_add_drainer(N->loop, socks, 2, s_pump_stream, N) < 0 ||
        zloop_add_fd(N->loop, notify_http_fd(N->http), s_on_http, N) < 0 ||
        zloop_add_socket(N->loop, N->router, s_on_router_frames, N) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot poll the notifier's sockets");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static notifier_t n;
    notifier_t *N = &n;
    cli_start(argc, argv, &s_cli, "notifier", s_config, N);
    cli_stop_on_signals(&s_stop);
    N->ntargets = N->cfg.ntargets;
    N->policy = (notify_policy_t){.backoff_min_ms = N->cfg.backoff_min_ms, .backoff_max_ms = N->cfg.backoff_max_ms,
                                  .retry_4xx = N->cfg.retry_4xx};
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        LOG(LOG_ERROR, "libcurl: curl_global_init failed");
        return 1;
    }
    gw_buf_init(&N->json);
    gw_buf_init(&N->entry);
    proto_buf_init(&N->buf);
    proto_buf_init(&N->rec);

    char dir[600], err[CFG_ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/notifier", N->cfg.data_dir);
    int rc = 1;
    if (notify_db_open(&N->db, dir, N->cfg.map_size_mb, N->cfg.map_max_mb, err) < 0 || s_load(N, err) < 0 ||
        s_sockets(N, err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        goto out;
    }
    for (uint32_t i = 0; i < N->ntargets; i++)
        LOG(LOG_NOTICE, "target %u: %s events=0x%x privileged=%s cursor=%llu", i, N->targets[i].cfg->shown,
            N->targets[i].cfg->mask & NOTIFY_MASK_ALL,
            (N->targets[i].cfg->mask & NOTIFY_MASK_PRIVILEGED) ? "true" : "false",
            (unsigned long long)N->targets[i].st.cursor);
    LOG(LOG_NOTICE,
        "starting: store=%s stream=%s endpoint=%s next_seq=%llu log=%llu entries debounce=%llu ms position=%llu/%llu",
        N->cfg.store_cmd, N->cfg.store_pub, N->cfg.endpoint, (unsigned long long)N->meta.next_seq,
        (unsigned long long)N->meta.log_entries, (unsigned long long)N->cfg.debounce_ms,
        (unsigned long long)N->meta.pos_epoch, (unsigned long long)N->meta.pos_seq);
    N->next_stats_log_ms = util_mono_ms() + N->cfg.stats_log_ms;
    if (zloop_run(N->loop, &s_stop) < 0)
        LOG(LOG_ERROR, "poll failed: %s", strerror(errno));
    if (N->fatal) {
        notify_db_abort(N->db);
        goto out;
    }
    LOG(LOG_NOTICE, "stopping");
    s_drain(N);
    rc = N->fatal ? 1 : 0;
    if (!rc)
        s_log_stats(N);
    LOG(LOG_NOTICE, "stopped");
out:
    s_fini(N);
    return rc;
}
