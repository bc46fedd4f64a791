/* notifier_stream.c -- the change stream into events: each change of a user is planned against
 * the user's stored state in both views (the public one and the user's own; notify.h), and the
 * turn's transaction gets the new events, the cancelled held ones and the new states.
 *
 * Snapshots (the first start, or a position the store can no longer serve): the key scan comes in
 * user-id order, like the users database, so a merge walk finds users the store no longer has;
 * users whose state the snapshot changes are staged by version and replayed in version order once
 * it is complete. The first snapshot ever is a silent baseline. One thread (the loop's).
 */
#include "notifier_int.h"
#include "log.h"
#include "util.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== changes -> events ====================================================================== */


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
        notifier_state_fatal(N, rc, "delete held event");
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
            notifier_state_fatal(N, rc, "append event");
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
    if (u->pend_seq && notifier_deliver_taken(N, u->pend_seq))
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
        notifier_state_fatal(N, rc, "read user");
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
            notifier_state_fatal(N, rc, "write user");
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
        notifier_state_fatal(N, rc, "write user");
        return;
    }
    if (n || vp.pub.cancel_seq || vp.own.cancel_seq || write || del)
        N->meta_dirty = true;
    if (n || vp.pub.cancel_seq || vp.own.cancel_seq)
        notifier_state_all_stale(N);
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
        notifier_state_fatal(N, rc, "snapshot walk");
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
        notifier_state_fatal(N, rc, "stage");
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
            notifier_state_fatal(N, rc, "read user");
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
        notifier_state_fatal(N, rc, "stage");
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
    if (!N->snap.active || !notifier_state_txn(N))
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
            notifier_state_fatal(N, r, "replay snapshot");
    }
    int r = notify_db_snap_clear(N->db);
    if (r)
        notifier_state_fatal(N, r, "clear staging");
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

void notifier_stream_change(void *ctx, const proto_change_t *c)
{
    notifier_t *N = ctx;
    if (c->kind == PROTO_CH_TOUCH)
        return; /* a heartbeat that kept the status: not an event */
    if (c->kind != PROTO_CH_SET && c->kind != PROTO_CH_DEL)
        return;
    if (!notifier_state_txn(N))
        return;
    if (N->snap.active)
        s_snap_change(N, c);
    else
        s_apply(N, c->kind == PROTO_CH_SET ? &c->rec : NULL, c->rec.user_id, c->rec.uid_len, c->rec.version, false);
}

void notifier_stream_reset(void *ctx)
{
    notifier_t *N = ctx;
    if (!notifier_state_txn(N))
        return;
    int rc = notify_db_snap_clear(N->db);
    if (rc) {
        notifier_state_fatal(N, rc, "clear staging");
        return;
    }
    N->snap.active = true;
    N->snap.keyscan = true;
    N->snap.last_len = 0;
    N->snap.staged = N->snap.deleted = 0;
}

void notifier_stream_state(void *ctx, int state)
{
    notifier_t *N = ctx;
    N->live = state == SYNC_LIVE;
    LOG(LOG_INFO, "stream %s (seq %llu)", sync_state_name(state), (unsigned long long)sync_client_seq(N->sync));
    if (state == SYNC_LIVE && N->snap.active)
        s_snap_finish(N, sync_client_seq(N->sync));
}

