/* store_repl.c -- the store-node as one member of a replicated center (STORE_REPLICAS): the glue
 * between its two threads and the Raft member of store-node/repl.c (docs/REPLICATION.md).
 *
 *   main thread       decodes commands; only the leader queues writes, reads, catch-ups
 *   writer thread     forms a group, encodes it as a GROUP entry, repl_propose(entry, completion)
 *                     -- several groups in flight; on the leader, proposes a SWEEP entry when due
 *   raft thread       applies every committed entry in log order (store_apply_at: one LMDB
 *                     transaction with the index and the command ids), fills the proposer's jobs
 *                     and reports the group to the main thread, which publishes, then answers
 *   libuv worker      the snapshot copy (store_copy), concurrently with applies
 *
 * Key decision: the leader publishes exactly the changes it applies from the moment its LEAD
 * entry (the first entry of its term) applied, and tells the main thread to publish from the
 * state's last sequence at that moment (a COMP_ROLE completion, queued in order with the groups):
 * the stream stays contiguous across leader changes, and a cache that missed what a dead leader
 * acknowledged but never published sees the new leader's heartbeat ahead and catches up from it.
 *
 * Threads: the callbacks run on the raft thread (on_snapshot on a libuv worker); the writer's
 * scratch (wbuf, wops) is the writer's; counters are atomics. Completions go through the writer's
 * completion queue (done_lock); the raft thread never holds a lock of ours while calling repl.
 */
#include "cfg.h"
#include "log.h"
#include "store_entry.h"
#include "store_node_int.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SWEEP_RETRY_US 1000000u

struct store_repl {
    store_node_t *sn;
    repl_t *r;

    /* raft thread */
    bool pub_on;           /* applied changes go to the main thread to be published */
    completion_t *lead;    /* the LEAD proposal of this leadership, until it ends */
    store_changes_t changes;

    /* writer thread */
    proto_buf_t wbuf, wscratch;
    proto_batch_t wops;

    /* any thread */
    atomic_bool leading;   /* pub_on, for the writer (sweeps) and the stats */
    atomic_bool sweep_out; /* a SWEEP entry is proposed and not ended */
    atomic_bool failed;
    atomic_uint groups_out; /* GROUP entries proposed and not ended (the writer's pipeline) */
    char why[256];         /* written once before `failed` is set */
    _Atomic uint64_t applied_entries, dedup_hits, apply_errors, lead_entries, sweep_entries;
    stats_hist_t commit_hist; /* propose -> applied here, per group (the raft thread observes) */
};

/* ==== helpers ==================================================================================== */

static completion_t *s_completion(uint8_t entry)
{
    completion_t *c = xcalloc(1, sizeof *c);
    store_changes_init(&c->changes);
    c->entry = entry;
    return c;
}

static void s_free_completion(completion_t *c)
{
    store_changes_fini(&c->changes);
    free(c);
}

/* Answer every job of c with `status` (a proposal that will not apply here). */
static void s_fail_jobs(completion_t *c, uint8_t status, uint64_t leader)
{
    for (job_t *j = c->jobs; j; j = j->next) {
        j->op.status = status;
        j->op.as_of = status == PROTO_ENOTLEADER ? leader : 0;
    }
}

/* Hand the changes applied so far to the main thread with c (or alone), when publishing. */
static void s_report(store_repl_t *rp, completion_t *c)
{
    if (rp->pub_on && rp->changes.n) {
        if (!c)
            c = s_completion(0);
        store_changes_t t = c->changes;
        c->changes = rp->changes;
        rp->changes = t;
    }
    store_changes_reset(&rp->changes);
    if (c)
        store_queue_complete(rp->sn, c);
}

/* ==== raft thread: applying entries ================================================================ */

/* The proposer's jobs take their results from the applied ops (same order). */
/* A GROUP proposal ended (applied here or refused): the writer may propose the next one. */
static void s_group_ended(store_repl_t *rp)
{
    atomic_fetch_sub(&rp->groups_out, 1);
    store_queue_signal(rp->sn);
}

static void s_fill_jobs(store_repl_t *rp, completion_t *c, const store_entry_t *e)
{
    uint32_t i = 0;
    for (job_t *j = c->jobs; j && i < e->nops; j = j->next, i++) {
        const store_op_t *op = &e->ops[i];
        j->op.status = op->status;
        j->op.as_of = op->as_of;
        j->op.flags = op->flags;
        j->op.deduped = op->deduped;
        if (op->deduped)
            atomic_fetch_add(&rp->dedup_hits, 1);
        if (j->out && op->out)
            memcpy(j->out, op->out, (size_t)op->n * sizeof *j->out);
    }
}

static int s_apply_lead(store_repl_t *rp, uint64_t index, const store_entry_t *e, completion_t *c, char *err)
{
    store_t *st = rp->sn->store;
    if (store_lead_at(st, index, e->arg, e->now_us, err) < 0)
        return -1;
    atomic_fetch_add(&rp->lead_entries, 1);
    if (!c)
        return 0;
    /* Our own LEAD entry of this leadership: from here on we publish what we apply. */
    if (rp->lead == c)
        rp->lead = NULL;
    rp->pub_on = true;
    atomic_store(&rp->leading, true);
    store_changes_reset(&rp->changes);
    c->kind = COMP_ROLE;
    c->leading = true;
    c->epoch = store_epoch(st);
    c->pub_from = store_last_seq(st);
    store_queue_complete(rp->sn, c);
    store_queue_wake(rp->sn); /* the sweeper may start */
    return 0;
}

static int on_apply(void *arg, uint64_t index, const void *data, size_t len, void *cookie)
{
    store_repl_t *rp = arg;
    store_node_t *sn = rp->sn;
    completion_t *c = cookie;
    char err[STORE_ERR_LEN];
    store_entry_t e;
    int rc = store_entry_decode(data, len, &e, err);
    if (rc == 0) {
        switch (e.kind) {
        case STORE_ENTRY_GROUP:
            rc = store_apply_at(sn->store, index, e.ops, e.nops, e.now_us, &rp->changes, err);
            if (c)
                s_group_ended(rp);
            if (rc == 0 && c) {
                s_fill_jobs(rp, c, &e);
                stats_hist_observe(&rp->commit_hist, util_mono_us() - c->proposed_us);
            }
            break;
        case STORE_ENTRY_SWEEP: {
            uint64_t exp = 0, pur = 0;
            int n = store_sweep_at(sn->store, index, e.now_us, (uint32_t)e.arg, &rp->changes, &exp, &pur, err);
            rc = n < 0 ? -1 : 0;
            atomic_fetch_add(&rp->sweep_entries, 1);
            atomic_fetch_add(&sn->expirations_total, exp);
            atomic_fetch_add(&sn->purges_total, pur);
            break;
        }
        case STORE_ENTRY_LEAD:
            rc = s_apply_lead(rp, index, &e, c, err);
            store_entry_fini(&e);
            if (rc < 0)
                goto fail;
            atomic_fetch_add(&rp->applied_entries, 1);
            return 0;
        }
    }
    store_entry_fini(&e);
    if (rc < 0)
        goto fail;
    atomic_fetch_add(&rp->applied_entries, 1);
    atomic_fetch_add(&sn->commits_total, 1);
    if (c && c->entry == STORE_ENTRY_SWEEP) {
        atomic_store(&rp->sweep_out, false);
        store_queue_wake(sn);
        s_free_completion(c);
        c = NULL;
    }
    s_report(rp, c);
    return 0;
fail:
    /* Fail-stop: the member stops, the process exits and its restart replays from the state's
     * index. The proposer's jobs are answered: their outcome is unknown (a retry with the same
     * command id is applied once). */
    atomic_fetch_add(&rp->apply_errors, 1);
    LOG(LOG_ERROR, "replication: cannot apply log entry %llu: %s", (unsigned long long)index, err);
    store_changes_reset(&rp->changes);
    if (c) {
        if (c->entry == STORE_ENTRY_SWEEP)
            atomic_store(&rp->sweep_out, false);
        s_fail_jobs(c, PROTO_EUNAVAIL, 0);
        store_queue_complete(sn, c);
    }
    return -1;
}

static void on_reject(void *arg, void *cookie, int status, const repl_leader_t *leader)
{
    store_repl_t *rp = arg;
    completion_t *c = cookie;
    if (c == rp->lead)
        rp->lead = NULL;
    if (c->entry == STORE_ENTRY_GROUP)
        s_group_ended(rp);
    if (c->entry == STORE_ENTRY_SWEEP) {
        atomic_store(&rp->sweep_out, false);
        store_queue_wake(rp->sn);
    }
    if (!c->jobs) {
        s_free_completion(c);
        return;
    }
    if (status == REPL_NOT_LEADER)
        s_fail_jobs(c, PROTO_ENOTLEADER, leader->id);
    else if (status == REPL_ERROR)
        s_fail_jobs(c, PROTO_EINTERNAL, 0);
    else
        s_fail_jobs(c, PROTO_EUNAVAIL, 0); /* outcome unknown: the sender retries with the same id */
    store_queue_complete(rp->sn, c);
}

static void on_role(void *arg, int role, uint64_t term, const repl_leader_t *leader)
{
    store_repl_t *rp = arg;
    LOG(LOG_NOTICE, "replication: %s in term %llu (leader: member %llu)", repl_role_name(role), (unsigned long long)term,
        (unsigned long long)leader->id);
    if (role == REPL_LEADER) {
        /* Every entry committed before this term is applied. The LEAD entry comes first in what
         * we propose; once it applied we publish (s_apply_lead). */
        uint64_t epoch = 0;
        if (store_epoch(rp->sn->store) == 0) {
            do {
                if (util_random(&epoch, sizeof epoch) < 0)
                    epoch = util_now_us() ^ ((uint64_t)getpid() << 32);
                epoch &= 0x7fffffffffffffffULL;
            } while (epoch == 0);
        }
        completion_t *c = s_completion(STORE_ENTRY_LEAD);
        c->term = term;
        proto_buf_t b;
        proto_buf_init(&b);
        store_entry_lead(&b, util_now_us(), epoch);
        int rc = repl_propose(rp->r, b.data, b.len, c);
        proto_buf_fini(&b);
        if (rc != REPL_OK) {
            LOG(LOG_WARN, "replication: cannot propose the leader's first entry: %s", repl_strerror(rc));
            s_free_completion(c);
        } else {
            rp->lead = c;
        }
        return;
    }
    /* Not (or no longer) the leader: stop publishing at once; commands go to the leader. */
    rp->pub_on = false;
    atomic_store(&rp->leading, false);
    store_changes_reset(&rp->changes);
    completion_t *c = s_completion(0);
    c->kind = COMP_ROLE;
    c->leading = false;
    c->leader = (uint32_t)leader->id;
    c->term = term;
    store_queue_complete(rp->sn, c);
}

static int on_snapshot(void *arg, const char *path, uint64_t *applied, char *err)
{
    store_repl_t *rp = arg;
    char serr[STORE_ERR_LEN];
    if (store_copy(rp->sn->store, path, applied, serr) < 0) {
        snprintf(err, REPL_ERR_LEN, "%s", serr);
        return -1;
    }
    return 0;
}

static int on_restore(void *arg, const char *path, uint64_t applied, char *err)
{
    store_repl_t *rp = arg;
    char serr[STORE_ERR_LEN];
    LOG(LOG_NOTICE, "replication: installing a snapshot of the leader's state (log index %llu)",
        (unsigned long long)applied);
    if (store_replace(rp->sn->store, path, applied, serr) < 0) {
        snprintf(err, REPL_ERR_LEN, "%s", serr);
        return -1;
    }
    return 0;
}

static void on_fatal(void *arg, const char *why)
{
    store_repl_t *rp = arg;
    if (atomic_load(&rp->failed))
        return;
    snprintf(rp->why, sizeof rp->why, "%s", why);
    atomic_store(&rp->failed, true);
    LOG(LOG_ERROR, "replication: member failed: %s", why);
    /* Wake the main thread: it stops (the process exits 1 and is restarted). */
    store_queue_complete(rp->sn, s_completion(0));
}

/* ==== writer thread: proposing ==================================================================== */

static void s_propose(store_repl_t *rp, completion_t *c, const proto_buf_t *entry)
{
    c->proposed_us = util_mono_us();
    if (c->entry == STORE_ENTRY_GROUP)
        atomic_fetch_add(&rp->groups_out, 1);
    int rc = repl_propose(rp->r, entry->data, entry->len, c);
    if (rc == REPL_OK)
        return;
    if (c->entry == STORE_ENTRY_GROUP)
        atomic_fetch_sub(&rp->groups_out, 1);
    uint8_t st = rc == REPL_BUSY ? PROTO_EOVERLOAD : rc == REPL_SHUTDOWN ? PROTO_EUNAVAIL : PROTO_EINTERNAL;
    if (rc == REPL_BUSY)
        atomic_fetch_add(&rp->sn->overload_total, 1);
    if (c->entry == STORE_ENTRY_SWEEP)
        atomic_store(&rp->sweep_out, false);
    if (!c->jobs) {
        s_free_completion(c);
        return;
    }
    s_fail_jobs(c, st, 0);
    store_queue_complete(rp->sn, c);
}

void store_repl_group(store_node_t *sn, job_t *jobs)
{
    store_repl_t *rp = sn->repl;
    uint64_t now = util_now_us();
    completion_t *late = NULL, *c = NULL;
    job_t **tail = NULL, *next;
    size_t bytes = 0;
    proto_batch_reset(&rp->wops);
    for (job_t *j = jobs; j; j = next) {
        next = j->next;
        j->next = NULL;
        if (j->deadline_us && now >= j->deadline_us) {
            /* Waited in the queue past its sender's deadline: never enters the log. */
            j->op.status = PROTO_ETIMEOUT;
            j->expired = true;
            atomic_fetch_add(&sn->expired_total, 1);
            if (!late)
                late = s_completion(0);
            j->next = late->jobs;
            late->jobs = j;
            continue;
        }
        size_t n = store_entry_add_op(&rp->wops, &j->op, &rp->wscratch);
        if (n + STORE_ENTRY_HDR > REPL_ENTRY_MAX) {
            /* One command larger than a log entry may be: refused (nothing was applied). */
            rp->wops.n--; /* drop what was just added */
            rp->wops.data.len = rp->wops.n ? rp->wops.ends[rp->wops.n - 1] : 0;
            j->op.status = PROTO_EBADREQ;
            if (!late)
                late = s_completion(0);
            j->next = late->jobs;
            late->jobs = j;
            continue;
        }
        if (!c) {
            c = s_completion(STORE_ENTRY_GROUP);
            tail = &c->jobs;
        }
        *tail = j;
        tail = &j->next;
        bytes += n;
        if (bytes >= STORE_ENTRY_TARGET || rp->wops.n == PROTO_ITEMS_MAX) {
            store_entry_group(&rp->wbuf, now, &rp->wops);
            s_propose(rp, c, &rp->wbuf);
            proto_batch_reset(&rp->wops);
            c = NULL;
            bytes = 0;
        }
    }
    if (c) {
        store_entry_group(&rp->wbuf, now, &rp->wops);
        s_propose(rp, c, &rp->wbuf);
    }
    proto_batch_reset(&rp->wops);
    if (late)
        store_queue_complete(sn, late);
}

uint64_t store_repl_sweep(store_node_t *sn, uint64_t now_us)
{
    store_repl_t *rp = sn->repl;
    if (!atomic_load(&rp->leading) || atomic_load(&rp->sweep_out))
        return now_us + SWEEP_RETRY_US; /* woken when either changes */
    uint64_t due = store_next_due(sn->store);
    if (due > now_us)
        return due == UINT64_MAX ? now_us + SWEEP_RETRY_US : MIN(due, now_us + SWEEP_RETRY_US);
    atomic_store(&rp->sweep_out, true);
    atomic_fetch_add(&sn->sweeps_total, 1);
    completion_t *c = s_completion(STORE_ENTRY_SWEEP);
    store_entry_sweep(&rp->wbuf, now_us, (uint32_t)sn->cfg.sweep_max);
    s_propose(rp, c, &rp->wbuf);
    return now_us + SWEEP_RETRY_US;
}

/* ==== life and stats ============================================================================== */

int store_repl_start(store_node_t *sn, char *err)
{
    const store_node_repl_t *rc = &sn->cfg.repl;
    store_repl_t *rp = xcalloc(1, sizeof *rp);
    rp->sn = sn;
    store_changes_init(&rp->changes);
    proto_buf_init(&rp->wbuf);
    proto_buf_init(&rp->wscratch);
    proto_batch_init(&rp->wops);
    stats_hist_init_latency(&rp->commit_hist);
    sn->repl = rp;
    repl_config_t cfg = {
        .id = rc->self,
        .members = rc->members,
        .nmembers = rc->nmembers,
        .bind_address = rc->bind[0] ? rc->bind : NULL,
        .dir = rc->raft_dir,
        .applied_index = store_applied_index(sn->store),
        .election_timeout_ms = (unsigned)rc->election_ms,
        .heartbeat_ms = (unsigned)MAX(rc->election_ms / 5, 10),
        .snapshot_threshold = (unsigned)rc->snapshot_entries,
        .snapshot_trailing = (unsigned)MAX(rc->snapshot_entries / 8, 64),
        .max_outstanding = (unsigned)MIN(MAX(sn->cfg.queue_max / 16, 256), 65536),
        .cb = {.arg = rp,
               .on_apply = on_apply,
               .on_reject = on_reject,
               .on_role = on_role,
               .on_snapshot = on_snapshot,
               .on_restore = on_restore,
               .on_fatal = on_fatal},
    };
    char rerr[REPL_ERR_LEN];
    if (repl_start(&cfg, &rp->r, rerr) != REPL_OK) {
        snprintf(err, CFG_ERR_LEN, "replication: %s", rerr);
        sn->repl = NULL;
        store_changes_fini(&rp->changes);
        proto_buf_fini(&rp->wbuf);
        proto_buf_fini(&rp->wscratch);
        proto_batch_fini(&rp->wops);
        free(rp);
        return -1;
    }
    return 0;
}

void store_repl_stop(store_node_t *sn)
{
    store_repl_t *rp = sn->repl;
    if (!rp)
        return;
    if (repl_stop(&rp->r) < 0) {
        /* Its thread did not end in time and may still call us: leave everything allocated. */
        LOG(LOG_ERROR, "replication: the raft thread did not stop in time");
        sn->repl = NULL;
        return;
    }
    if (rp->lead)
        rp->lead = NULL; /* ended in on_reject by repl_stop */
    store_changes_fini(&rp->changes);
    proto_buf_fini(&rp->wbuf);
    proto_buf_fini(&rp->wscratch);
    proto_batch_fini(&rp->wops);
    free(rp);
    sn->repl = NULL;
}

bool store_repl_pipeline_full(store_node_t *sn)
{
    return atomic_load(&sn->repl->groups_out) >= STORE_REPL_PIPELINE;
}

repl_t *store_repl_member(store_node_t *sn)
{
    return sn->repl->r;
}

const char *store_repl_failed(store_node_t *sn)
{
    return sn->repl && atomic_load(&sn->repl->failed) ? sn->repl->why : NULL;
}

void store_repl_stats(store_node_t *sn, stats_list_t *l, bool full)
{
    store_repl_t *rp = sn->repl;
    repl_status_t st;
    repl_status(rp->r, &st);
    stats_add(l, "store_repl_member", sn->cfg.repl.self);
    stats_add(l, "store_repl_role", (uint64_t)st.role);
    stats_add(l, "store_repl_leading", sn->leading);
    stats_add(l, "store_repl_leader", st.leader.id);
    stats_add(l, "store_repl_term", st.term);
    if (!full)
        return;
    stats_add(l, "store_repl_members", st.nmembers);
    stats_add(l, "store_repl_commit_index", st.commit_index);
    stats_add(l, "store_repl_applied_index", st.last_applied);
    stats_add(l, "store_repl_last_index", st.last_index);
    stats_add(l, "store_repl_snapshot_index", st.snapshot_index);
    stats_add(l, "store_repl_elections_total", st.elections);
    stats_add(l, "store_repl_leader_changes_total", st.leader_changes);
    stats_add(l, "store_repl_snapshots_taken_total", st.snapshots_taken);
    stats_add(l, "store_repl_snapshots_installed_total", st.snapshots_restored);
    stats_add(l, "store_repl_proposals_committed_total", st.committed);
    stats_add(l, "store_repl_proposals_rejected_total", st.rejected);
    stats_add(l, "store_repl_outstanding", st.outstanding);
    stats_add(l, "store_repl_failed", st.failed || atomic_load(&rp->failed));
    stats_add(l, "store_repl_entries_applied_total", atomic_load(&rp->applied_entries));
    stats_add(l, "store_repl_sweep_entries_total", atomic_load(&rp->sweep_entries));
    stats_add(l, "store_repl_lead_entries_total", atomic_load(&rp->lead_entries));
    stats_add(l, "store_repl_dedup_hits_total", atomic_load(&rp->dedup_hits));
    /* Per member, as the leader sees it: how many entries each is behind the leader's log and
     * whether it answered within the election timeout. Followers know neither. */
    if (st.role == REPL_LEADER) {
        for (unsigned i = 0; i < st.nmembers; i++) {
            uint64_t match = st.members[i].match_index;
            stats_addf(l, st.last_index > match ? st.last_index - match : 0, "store_repl_member_lag_entries{member=\"%llu\"}",
                       (unsigned long long)st.members[i].id);
            stats_addf(l, st.members[i].recent, "store_repl_member_up{member=\"%llu\"}",
                       (unsigned long long)st.members[i].id);
        }
    }
    stats_add_hist(l, "store_repl_commit_seconds", NULL, &rp->commit_hist);
}
