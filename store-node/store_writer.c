/* store_writer.c -- the store-node's writer thread (store_node_int.h draws it with the main
 * thread and the two queues between them, store_queue.c).
 *
 * The writer is the only thread that opens LMDB write transactions. It takes every queued write
 * (up to STORE_BATCH_MAX items) and commits them in one transaction (group commit), then reports
 * the group -- its changes to publish, its jobs to answer -- on the completion queue and wakes the
 * main thread through the eventfd. Between groups it runs the TTL sweeper when the expiry index says
 * something is due (its changes are reported the same way), flushes in SYNC_MODE=none every
 * SYNC_FLUSH_MS, flushes heartbeat-only groups within TOUCH_SYNC_MS, and clears stale LMDB reader
 * slots every 10 s. It never sleeps longer than a second without looking at its timers.
 *
 * Replicated mode (store_repl.c): the writer does not commit; it proposes each group as a log
 * entry (several in flight), and on the leader proposes a SWEEP entry when something is due; the
 * raft thread applies them and reports the completions through the same queue.
 *
 * Locks: it takes queue_lock to wait for jobs and take a group (store_queue.c's job queue), never
 * with done_lock, and never while calling into store.c.
 */
#include "store_node_int.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The writer's timers (its own thread's). */
typedef struct wtimers {
    uint64_t next_sweep;      /* wall us; UINT64_MAX: nothing due */
    uint64_t next_flush;      /* mono ms (SYNC_MODE=none) */
    uint64_t next_rcheck;     /* mono ms: stale reader slots */
    uint64_t next_touch_sync; /* mono ms: flush relaxed heartbeat commits */
} wtimers_t;

/* ==== the writer thread ======================================================================== */

static void s_write_group(store_node_t *sn, job_t *jobs, size_t njobs)
{
    char err[STORE_ERR_LEN];
    store_op_t *ops = xmalloc(njobs * sizeof *ops);
    size_t i = 0, items = 0;
    /* Heartbeats are the hot path: a group of nothing but heartbeats is committed without an
     * fsync and flushed within TOUCH_SYNC_MS (0 = every heartbeat group fsynced too). */
    bool relaxed = sn->cfg.touch_sync_ms > 0;
    uint64_t now_wall = util_now_us();
    size_t nops = 0;
    for (job_t *j = jobs; j; j = j->next) {
        if (j->deadline_us && now_wall >= j->deadline_us) {
            /* Waited in the queue past its sender's deadline (an overloaded store): not applied. */
            j->op.status = PROTO_ETIMEOUT;
            j->expired = true;
            atomic_fetch_add(&sn->expired_total, 1);
            continue;
        }
        ops[nops++] = j->op;
        items += j->op.n;
        if (j->type != PROTO_TOUCH && j->type != PROTO_LEASE)
            relaxed = false; /* heartbeats and lease refreshes may wait for the flush; nothing else */
    }
    completion_t *c = xcalloc(1, sizeof *c);
    store_changes_init(&c->changes);
    uint64_t t0 = util_mono_us();
    int rc = nops ? store_apply(sn->store, ops, nops, now_wall, relaxed, &c->changes, err) : 0;
    if (rc == 0 && relaxed && sn->cfg.store.sync_mode != STORE_SYNC_NONE) {
        /* Only pure refreshes may wait for the flush: a heartbeat that created a record or
         * brought a user back online is a change of state, durable before it is acknowledged. */
        for (size_t k = 0; k < c->changes.n; k++) {
            if (c->changes.v[k].kind == PROTO_CH_SET) {
                if (store_flush(sn->store, err) == 0)
                    relaxed = false;
                else
                    rc = -1;
                break;
            }
        }
    }
    if (rc < 0 && relaxed) {
        for (i = 0; i < nops; i++)
            ops[i].status = PROTO_EINTERNAL;
    }
    if (rc == 0 && relaxed && sn->cfg.store.sync_mode != STORE_SYNC_NONE) {
        sn->unsynced = true;
        atomic_fetch_add(&sn->relaxed_commits_total, 1);
    } else if (rc == 0) {
        sn->unsynced = false; /* a synced commit flushed everything before it */
    }
    uint64_t dt = util_mono_us() - t0;
    if (rc < 0) {
        atomic_fetch_add(&sn->commit_errors, 1);
        LOG_RATELIMITED(LOG_ERROR, 1000, "group commit of %zu ops failed: %s", njobs, err);
    } else {
        atomic_fetch_add(&sn->commits_total, 1);
        atomic_fetch_add(&sn->writes_total, items);
        atomic_fetch_add(&sn->write_ops_total, nops);
        stats_hist_observe(&sn->commit_hist, dt);
        stats_hist_observe(&sn->group_hist, items);
    }
    i = 0;
    for (job_t *j = jobs; j; j = j->next)
        if (!j->expired)
            j->op = ops[i++];
    free(ops);
    c->jobs = jobs;
    store_queue_complete(sn, c);
}

/* Wait (queue_lock held) until there is work, a stop, or a timer is due; at most a second at a time. */
static void s_wait(store_node_t *sn, const wtimers_t *tm)
{
    while (!sn->q_head && !sn->stopping && !sn->kick) {
        uint64_t now_wall = util_now_us(), now = util_mono_ms();
        uint64_t wake_ms = tm->next_rcheck;
        if (tm->next_sweep != UINT64_MAX) {
            if (tm->next_sweep <= now_wall)
                return;
            uint64_t in_ms = (tm->next_sweep - now_wall) / 1000 + 1;
            wake_ms = MIN(wake_ms, now + in_ms);
        }
        if (sn->cfg.store.sync_mode == STORE_SYNC_NONE || sn->repl)
            wake_ms = MIN(wake_ms, tm->next_flush);
        if (sn->unsynced)
            wake_ms = MIN(wake_ms, tm->next_touch_sync);
        if (wake_ms <= now)
            return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t d = MIN(wake_ms - now, 1000); /* never sleep blind for long */
        ts.tv_sec += (time_t)(d / 1000);
        ts.tv_nsec += (long)(d % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sn->queue_cond, &sn->queue_lock, &ts);
    }
}

/* Replicated (queue_lock held): while the pipeline of proposed groups is full, let jobs queue up
 * -- a group ending signals queue_cond -- bounded by a short wait so timers and stops are seen. */
static void s_wait_pipeline(store_node_t *sn)
{
    for (int i = 0; sn->repl && !sn->stopping && store_repl_pipeline_full(sn) && i < 200; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 5000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sn->queue_cond, &sn->queue_lock, &ts);
    }
}

/* Take queued jobs (queue_lock held) up to batch_max items: these commit together. */
static job_t *s_take_group(store_node_t *sn, size_t *njobs)
{
    job_t *head = NULL, *tail = NULL;
    size_t items = 0;
    *njobs = 0;
    while (sn->q_head && (*njobs == 0 || items + sn->q_head->op.n <= sn->cfg.batch_max)) {
        job_t *j = sn->q_head;
        sn->q_head = j->next;
        if (!sn->q_head)
            sn->q_tail = NULL;
        j->next = NULL;
        if (tail)
            tail->next = j;
        else
            head = j;
        tail = j;
        (*njobs)++;
        items += j->op.n;
    }
    return head;
}

/* The TTL sweeper, when something is due: expiries and purges are ordinary sequenced changes.
 * Replicated: the leader proposes a SWEEP entry instead, every member applies it (store_repl.c). */
static void s_sweep(store_node_t *sn, wtimers_t *tm)
{
    uint64_t now_wall = util_now_us();
    if (tm->next_sweep > now_wall)
        return;
    if (sn->repl) {
        tm->next_sweep = store_repl_sweep(sn, now_wall);
        return;
    }
    char err[STORE_ERR_LEN];
    completion_t *c = xcalloc(1, sizeof *c);
    store_changes_init(&c->changes);
    uint64_t next_due = UINT64_MAX, exp = 0, pur = 0;
    int n = store_sweep(sn->store, now_wall, (uint32_t)sn->cfg.sweep_max, &c->changes, &next_due, &exp, &pur, err);
    atomic_fetch_add(&sn->sweeps_total, 1);
    if (n < 0)
        LOG_RATELIMITED(LOG_ERROR, 1000, "sweep failed: %s", err);
    atomic_fetch_add(&sn->expirations_total, exp);
    atomic_fetch_add(&sn->purges_total, pur);
    if (c->changes.n) {
        store_queue_complete(sn, c);
    } else {
        store_changes_fini(&c->changes);
        free(c);
    }
    /* Sweep again when the next record is due, at least every second (tombstone pruning), at once
     * if this pass hit its cap. */
    if (n >= (int)sn->cfg.sweep_max)
        tm->next_sweep = now_wall;
    else
        tm->next_sweep = MIN(next_due, now_wall + 1000000);
}

/* Flushes that are due, and stale reader slots. */
static void s_housekeeping(store_node_t *sn, wtimers_t *tm)
{
    char err[STORE_ERR_LEN];
    uint64_t now = util_mono_ms();
    /* Replicated: applies are not fsynced (the raft log is the durable record); flushing bounds
     * what an OS crash makes the member rebuild from its log. */
    if ((sn->cfg.store.sync_mode == STORE_SYNC_NONE || sn->repl) && now >= tm->next_flush) {
        if (store_flush(sn->store, err) < 0)
            LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
        atomic_fetch_add(&sn->flushes_total, 1);
        tm->next_flush = now + sn->cfg.flush_ms;
    }
    if (sn->unsynced && now >= tm->next_touch_sync) {
        if (store_flush(sn->store, err) < 0)
            LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
        else
            sn->unsynced = false;
        atomic_fetch_add(&sn->flushes_total, 1);
    }
    if (!sn->unsynced)
        tm->next_touch_sync = now + sn->cfg.touch_sync_ms;
    if (now >= tm->next_rcheck) {
        int dead = store_reader_check(sn->store);
        if (dead > 0)
            LOG(LOG_NOTICE, "cleared %d stale LMDB reader slots", dead);
        tm->next_rcheck = now + 10000;
    }
}

static void *s_writer_main(void *arg)
{
    store_node_t *sn = arg;
    uint64_t now = util_mono_ms();
    wtimers_t tm = {.next_sweep = 0,
                    .next_flush = now + sn->cfg.flush_ms,
                    .next_rcheck = now + 10000,
                    .next_touch_sync = now + sn->cfg.touch_sync_ms};
    for (;;) {
        pthread_mutex_lock(&sn->queue_lock);
        s_wait(sn, &tm);
        s_wait_pipeline(sn);
        size_t njobs;
        job_t *head = s_take_group(sn, &njobs);
        bool stopping = sn->stopping && !sn->q_head && !head;
        if (sn->kick) {
            sn->kick = false;
            tm.next_sweep = 0;
        }
        pthread_mutex_unlock(&sn->queue_lock);
        if (stopping) {
            char err[STORE_ERR_LEN];
            if (sn->unsynced && store_flush(sn->store, err) < 0)
                LOG(LOG_ERROR, "%s", err);
            break;
        }
        if (head && sn->repl)
            store_repl_group(sn, head);
        else if (head)
            s_write_group(sn, head, njobs);
        s_sweep(sn, &tm);
        s_housekeeping(sn, &tm);
    }
    return NULL;
}

/* ==== life ======================================================================================= */

int store_writer_start(store_node_t *sn)
{
    stats_hist_init_latency(&sn->commit_hist);
    stats_hist_init_pow2(&sn->group_hist, 14);
    if (pthread_create(&sn->writer, NULL, s_writer_main, sn) != 0)
        return -1;
    sn->writer_started = true;
    return 0;
}

void store_writer_stop(store_node_t *sn)
{
    if (!sn->writer_started)
        return;
    pthread_mutex_lock(&sn->queue_lock);
    sn->stopping = true;
    pthread_cond_signal(&sn->queue_cond);
    pthread_mutex_unlock(&sn->queue_lock);
    pthread_join(sn->writer, NULL);
    sn->writer_started = false;
}
