/* notifier_state.c -- the notifier's turn transaction: what a turn changed (events, users'
 * states, cursors) commits together with the log's pruning and the stream position the users'
 * states are complete up to, with one fsync; and loading it all at startup.
 *
 * Why the position commits with the states: a restart resumes the stream from it
 * (sync_client_set_position), so it must never be ahead of what was applied nor behind what a
 * target was sent. It is not recorded while a snapshot is being staged: a restart redoes it.
 * One thread (the loop's).
 */
#include "notifier_int.h"
#include "cfg.h"
#include "log.h"
#include "util.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void notifier_state_fatal(notifier_t *N, int rc, const char *what)
{
    if (!N->fatal)
        LOG(LOG_ERROR, "LMDB %s: %s; stopping (the state on disk is the last commit)", what, mdb_strerror(rc));
    N->fatal = rc ? rc : -1;
}

/* The turn's write transaction, begun on first use. Returns false after a fatal error. */
bool notifier_state_txn(notifier_t *N)
{
    if (N->fatal)
        return false;
    if (notify_db_in_txn(N->db))
        return true;
    if (notify_db_reserve(N->db) < 0)
        LOG_RATELIMITED(LOG_WARN, 60000, "LMDB map is at NOTIFIER_MAP_MAX_MB and more than half used");
    int rc = notify_db_begin(N->db);
    if (rc) {
        notifier_state_fatal(N, rc, "begin");
        return false;
    }
    return true;
}

void notifier_state_all_stale(notifier_t *N)
{
    for (uint32_t i = 0; i < N->ntargets; i++)
        N->targets[i].stale = true;
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
            notifier_state_fatal(N, rc, "prune");
            return;
        }
        N->floor = seq;
        N->oldest_ms = appended ? appended : 1;
        bool acked = seq <= minc;
        if (!acked && !notify_over_bound(N->meta.log_bytes, N->cfg.log_max_bytes, appended, N->cfg.log_max_age_ms, now_ms))
            break;
        if ((rc = notify_db_log_del(N->db, seq, &len)) != 0) {
            notifier_state_fatal(N, rc, "prune");
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
void notifier_state_commit(notifier_t *N, uint64_t now_ms)
{
    s_position(N);
    bool prune_due = N->floor <= s_min_cursor(N) ||
                     (N->meta.log_entries && notify_over_bound(N->meta.log_bytes, N->cfg.log_max_bytes, N->oldest_ms,
                                                               N->cfg.log_max_age_ms, now_ms));
    if (!notify_db_in_txn(N->db) && !s_any_dirty(N) && !prune_due && !N->meta_dirty)
        return;
    if (!notifier_state_txn(N))
        return;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        target_rt_t *t = &N->targets[i];
        if (!t->st.dirty)
            continue;
        int rc = notify_db_cursor_put(N->db, t->key, t->st.cursor, t->st.acked_id);
        if (rc) {
            notifier_state_fatal(N, rc, "write cursor");
            return;
        }
        t->st.dirty = false;
    }
    uint64_t floor_before = N->floor;
    s_prune(N, now_ms);
    if (N->fatal)
        return;
    if (N->floor != floor_before)
        notifier_state_all_stale(N);
    if (N->meta_dirty) {
        int rc = notify_db_meta_put(N->db, &N->meta);
        if (rc) {
            notifier_state_fatal(N, rc, "write meta");
            return;
        }
        N->meta_dirty = false;
    }
    int rc = notify_db_commit(N->db);
    if (rc) {
        notifier_state_fatal(N, rc, "commit");
        return;
    }
    N->commits++;
}

/* ==== startup ================================================================================ */

/* Load the stored state and the targets' cursors (a new target starts at the log's head: it gets
 * the events from now on), forget cursors of targets no longer configured, drop a half-staged
 * snapshot. */
int notifier_state_load(notifier_t *N, char *err)
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

