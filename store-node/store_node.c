/* store_node.c -- the center's store-node process: the only writer of durable state.
 *
 * Threads:
 *   main    owns every ZeroMQ socket: the command ROUTER(s) (cache-nodes, sync relays), the change
 *           stream PUB(s). It decodes and validates commands, answers reads, catch-ups, pings and
 *           stats from LMDB read snapshots, queues writes for the writer, and -- when the writer
 *           reports a committed group -- publishes the group's changes in sequence order and then
 *           sends the acknowledgements. It also publishes a HUGZ heartbeat carrying the last
 *           published sequence every STORE_HUGZ_MS.
 *   writer  the only thread that opens LMDB write transactions: it takes every queued write (up
 *           to STORE_BATCH_MAX items) and commits them in one transaction (group commit), runs the
 *           TTL sweeper when the expiry index says something is due, and in SYNC_MODE=none flushes
 *           every SYNC_FLUSH_MS.
 *
 *   main --(job queue: mutex + condvar, bounded by STORE_QUEUE_MAX items)--> writer
 *   writer --(completion queue: mutex + eventfd the main loop polls)--> main
 *
 * Lock order: queue_lock and done_lock are never held together; LMDB's resize_lock is taken
 * inside store.c only, never while holding either queue lock.
 *
 * A write is acknowledged only after its group's commit returned, and its change is published
 * before the acknowledgement goes out. Overload (queue full) is answered EOVERLOAD at once.
 */
#include "store_node.h"
#include "cfg.h"
#include "curve.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_IDENT 255
#define CHANGES_PER_MSG 512

typedef struct job {
    struct job *next;
    void *router; /* which ROUTER the command came from (answers go back there) */
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    uint8_t type;
    uint64_t rid;
    store_op_t op;
    proto_record_t *in, *out;
    uint64_t t_recv_us;
    uint64_t deadline_us; /* the sender's deadline (wall clock): not applied after it; 0 = none */
    bool expired;         /* taken by the writer after deadline_us: answered ETIMEOUT, not applied */
} job_t;

typedef struct completion {
    struct completion *next;
    job_t *jobs;
    store_changes_t changes;
} completion_t;

/* Acknowledgements of one group, one frame per peer (a BATCH when a peer has several). */
#define ACKBOXES 16

typedef struct ackbox {
    void *router;
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    proto_batch_t batch;
} ackbox_t;

struct store_node {
    store_node_config_t cfg;
    curve_zap_t *zap;

    store_t *store;
    void *zctx;
    void *routers[2], *pubs[2];
    int nrouters, npubs;
    int efd;

    /* job queue (main -> writer) */
    pthread_mutex_t queue_lock;
    pthread_cond_t queue_cond;
    job_t *q_head, *q_tail;
    uint64_t q_items; /* items queued or being written */
    bool stopping;

    /* completions (writer -> main) */
    pthread_mutex_t done_lock;
    completion_t *d_head, *d_tail;

    /* main thread state */
    uint64_t pub_seq;
    proto_buf_t buf;
    ackbox_t acks[ACKBOXES];
    int nacks;
    bool again;           /* a drain stopped at its bound: poll without waiting */
    uint64_t next_hugz;
    pthread_t writer;
    bool writer_started;

    /* metrics */
    _Atomic uint64_t writes_total, write_ops_total, commits_total, commit_errors, expirations_total, purges_total;
    _Atomic uint64_t overload_total, malformed_total, reads_total, catchups_total, snapshots_total, expired_total;
    _Atomic uint64_t pub_msgs_total, pub_drops_total, flushes_total, sweeps_total, relaxed_commits_total;
    bool unsynced; /* writer thread: relaxed commits not yet flushed */
    stats_hist_t commit_hist, group_hist, ack_hist;
};

/* ==== writer thread ========================================================================== */

static void s_push_completion(store_node_t *sn, completion_t *c)
{
    pthread_mutex_lock(&sn->done_lock);
    if (sn->d_tail)
        sn->d_tail->next = c;
    else
        sn->d_head = c;
    sn->d_tail = c;
    pthread_mutex_unlock(&sn->done_lock);
    uint64_t one = 1;
    if (write(sn->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd write: %s", strerror(errno));
}

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
        if (j->type != PROTO_TOUCH)
            relaxed = false;
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
    s_push_completion(sn, c);
}

static void *s_writer_main(void *arg)
{
    store_node_t *sn = arg;
    uint64_t next_sweep = 0, next_flush = util_mono_ms() + sn->cfg.flush_ms, next_rcheck = util_mono_ms() + 10000;
    uint64_t next_touch_sync = util_mono_ms() + sn->cfg.touch_sync_ms;
    char err[STORE_ERR_LEN];
    for (;;) {
        pthread_mutex_lock(&sn->queue_lock);
        for (;;) {
            if (sn->q_head || sn->stopping)
                break;
            uint64_t now_wall = util_now_us(), now = util_mono_ms();
            uint64_t wake_ms = next_rcheck;
            if (next_sweep != UINT64_MAX) {
                if (next_sweep <= now_wall)
                    break;
                uint64_t in_ms = (next_sweep - now_wall) / 1000 + 1;
                wake_ms = MIN(wake_ms, now + in_ms);
            }
            if (sn->cfg.store.sync_mode == STORE_SYNC_NONE)
                wake_ms = MIN(wake_ms, next_flush);
            if (sn->unsynced)
                wake_ms = MIN(wake_ms, next_touch_sync);
            if (wake_ms <= now)
                break;
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
        /* Take queued jobs up to batch_max items: these commit together. */
        job_t *head = NULL, *tail = NULL;
        size_t njobs = 0, items = 0;
        while (sn->q_head && (njobs == 0 || items + sn->q_head->op.n <= sn->cfg.batch_max)) {
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
            njobs++;
            items += j->op.n;
        }
        bool stopping = sn->stopping && !sn->q_head && !head;
        pthread_mutex_unlock(&sn->queue_lock);
        if (stopping) {
            if (sn->unsynced && store_flush(sn->store, err) < 0)
                LOG(LOG_ERROR, "%s", err);
            break;
        }
        if (head)
            s_write_group(sn, head, njobs);

        uint64_t now_wall = util_now_us();
        if (next_sweep <= now_wall) {
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
                s_push_completion(sn, c);
            } else {
                store_changes_fini(&c->changes);
                free(c);
            }
            /* Sweep again when the next record is due, at least every second (tombstone pruning),
             * at once if this pass hit its cap. */
            if (n >= (int)sn->cfg.sweep_max)
                next_sweep = now_wall;
            else
                next_sweep = MIN(next_due, now_wall + 1000000);
        }
        uint64_t now = util_mono_ms();
        if (sn->cfg.store.sync_mode == STORE_SYNC_NONE && now >= next_flush) {
            if (store_flush(sn->store, err) < 0)
                LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
            atomic_fetch_add(&sn->flushes_total, 1);
            next_flush = now + sn->cfg.flush_ms;
        }
        if (sn->unsynced && now >= next_touch_sync) {
            if (store_flush(sn->store, err) < 0)
                LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
            else
                sn->unsynced = false;
            atomic_fetch_add(&sn->flushes_total, 1);
        }
        if (!sn->unsynced)
            next_touch_sync = now + sn->cfg.touch_sync_ms;
        if (now >= next_rcheck) {
            int dead = store_reader_check(sn->store);
            if (dead > 0)
                LOG(LOG_NOTICE, "cleared %d stale LMDB reader slots", dead);
            next_rcheck = now + 10000;
        }
    }
    return NULL;
}

/* ==== main thread: replies and publishing ==================================================== */

static void s_reply(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
    if (zu_send_owned(router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply dropped: %s", zmq_strerror(errno));
}

static void s_reply_status(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status,
                           const char *msg)
{
    proto_buf_reset(&sn->buf);
    proto_enc_reply(&sn->buf, rid, status, 0, NULL, 0, msg, 0);
    s_reply(sn, router, ident, ident_len, &sn->buf);
}

static void s_publish_frames(store_node_t *sn, char topic, proto_buf_t *b)
{
    for (int i = 0; i < sn->npubs; i++) {
        if (zmq_send(sn->pubs[i], &topic, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
            zmq_send(sn->pubs[i], b->data, b->len, ZMQ_DONTWAIT) < 0) {
            /* PUB drops at the HWM; subscribers see the gap in the sequence and resync. */
            atomic_fetch_add(&sn->pub_drops_total, 1);
        } else {
            atomic_fetch_add(&sn->pub_msgs_total, 1);
        }
    }
}

static void s_publish_changes(store_node_t *sn, const store_changes_t *ch)
{
    for (size_t off = 0; off < ch->n; off += CHANGES_PER_MSG) {
        size_t n = MIN(CHANGES_PER_MSG, ch->n - off);
        proto_enc_t e;
        proto_buf_reset(&sn->buf);
        proto_enc_init(&e, &sn->buf);
        /* The range starts right after what was published before, so a subscriber can tell a gap
         * from sequence numbers that were consumed by no change (there are none today, but the
         * contract does not depend on it). */
        uint64_t first = sn->pub_seq + 1, last = ch->v[off + n - 1].rec.version;
        proto_enc_changes_begin(&e, store_epoch(sn->store), first, last, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            proto_enc_change(&e, &ch->v[off + i]);
        s_publish_frames(sn, PROTO_TOPIC_CHANGES, &sn->buf);
        sn->pub_seq = last;
    }
}

static void s_publish_hugz(store_node_t *sn)
{
    proto_buf_reset(&sn->buf);
    proto_enc_hugz(&sn->buf, store_epoch(sn->store), sn->pub_seq, util_now_us());
    s_publish_frames(sn, PROTO_TOPIC_HUGZ, &sn->buf);
}


static void s_flush_acks(store_node_t *sn)
{
    for (int i = 0; i < sn->nacks; i++) {
        ackbox_t *a = &sn->acks[i];
        if (!a->batch.n)
            continue;
        proto_batch_encode(&a->batch, &sn->buf);
        s_reply(sn, a->router, a->ident, a->ident_len, &sn->buf);
        proto_batch_reset(&a->batch);
    }
    sn->nacks = 0;
}

static void s_finish_job(store_node_t *sn, job_t *j)
{
    proto_buf_reset(&sn->buf);
    if (j->op.status == PROTO_OK && j->type != PROTO_DEL)
        proto_enc_reply(&sn->buf, j->rid, PROTO_OK, j->op.as_of, j->out, j->op.n, NULL, 0);
    else
        proto_enc_reply(&sn->buf, j->rid, j->op.status, j->op.as_of, NULL, 0,
                        j->op.status == PROTO_EINTERNAL ? "storage error"
                        : j->expired                    ? "deadline passed before the write was applied"
                                                        : NULL,
                        0);
    ackbox_t *a = NULL;
    for (int i = 0; i < sn->nacks && !a; i++)
        if (sn->acks[i].router == j->router && sn->acks[i].ident_len == j->ident_len &&
            memcmp(sn->acks[i].ident, j->ident, j->ident_len) == 0)
            a = &sn->acks[i];
    if (!a && sn->nacks == ACKBOXES)
        s_flush_acks(sn);
    if (!a) {
        a = &sn->acks[sn->nacks++];
        a->router = j->router;
        a->ident_len = j->ident_len;
        memcpy(a->ident, j->ident, j->ident_len);
    }
    proto_batch_add(&a->batch, sn->buf.data, sn->buf.len);
    if (a->batch.data.len >= PROTO_BATCH_SOFT_MAX) { /* keep frames small: send this part now */
        proto_batch_encode(&a->batch, &sn->buf);
        s_reply(sn, a->router, a->ident, a->ident_len, &sn->buf);
        proto_batch_reset(&a->batch);
    }
    stats_hist_observe(&sn->ack_hist, util_mono_us() - j->t_recv_us);
    free(j->in);
    free(j->out);
    free(j);
}

static void s_drain_completions(store_node_t *sn)
{
    uint64_t v;
    if (read(sn->efd, &v, sizeof v) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&sn->done_lock);
    completion_t *c = sn->d_head;
    sn->d_head = sn->d_tail = NULL;
    pthread_mutex_unlock(&sn->done_lock);
    while (c) {
        completion_t *next = c->next;
        if (c->changes.n)
            s_publish_changes(sn, &c->changes);
        uint64_t items = 0;
        for (job_t *j = c->jobs, *jn; j; j = jn) {
            jn = j->next;
            items += j->op.n;
            s_finish_job(sn, j);
        }
        s_flush_acks(sn);
        if (items) {
            pthread_mutex_lock(&sn->queue_lock);
            sn->q_items -= items;
            pthread_mutex_unlock(&sn->queue_lock);
        }
        store_changes_fini(&c->changes);
        free(c);
        c = next;
    }
}

/* ==== main thread: commands ================================================================== */

static void s_enqueue(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, proto_msg_t *m)
{
    uint32_t n = m->type == PROTO_DEL ? 1 : m->n;
    if (n == 0) {
        proto_buf_reset(&sn->buf);
        proto_enc_reply(&sn->buf, m->rid, PROTO_OK, sn->pub_seq, NULL, 0, NULL, 0);
        s_reply(sn, router, ident, ident_len, &sn->buf);
        return;
    }
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* Its sender has given up (it reached us late: a partition that healed, a stall): applied
         * now, it could land after a write the client made since, and undo it. */
        atomic_fetch_add(&sn->expired_total, 1);
        s_reply_status(sn, router, ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was applied");
        return;
    }
    pthread_mutex_lock(&sn->queue_lock);
    bool full = sn->q_items + n > sn->cfg.queue_max && sn->q_items > 0;
    if (!full)
        sn->q_items += n;
    pthread_mutex_unlock(&sn->queue_lock);
    if (full) {
        atomic_fetch_add(&sn->overload_total, 1);
        s_reply_status(sn, router, ident, ident_len, m->rid, PROTO_EOVERLOAD, "store write queue full");
        return;
    }
    job_t *j = xcalloc(1, sizeof *j);
    j->router = router;
    memcpy(j->ident, ident, ident_len);
    j->ident_len = (uint8_t)ident_len;
    j->type = m->type;
    j->rid = m->rid;
    j->t_recv_us = util_mono_us();
    j->deadline_us = m->deadline_us;
    if (m->type == PROTO_DEL) {
        j->in = xcalloc(1, sizeof *j->in);
        proto_record_set_uid(j->in, m->key.p, m->key.len);
    } else {
        j->in = m->recs; /* take ownership */
        m->recs = NULL;
        j->out = xmalloc(n * sizeof *j->out);
    }
    j->op.type = m->type;
    j->op.n = n;
    j->op.in = j->in;
    j->op.out = j->out;
    pthread_mutex_lock(&sn->queue_lock);
    if (sn->q_tail)
        sn->q_tail->next = j;
    else
        sn->q_head = j;
    sn->q_tail = j;
    pthread_cond_signal(&sn->queue_cond);
    pthread_mutex_unlock(&sn->queue_lock);
}

static void s_handle_read(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(sn->store, err);
    if (!r) {
        LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
        s_reply_status(sn, router, ident, ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&sn->reads_total, 1);
    proto_enc_t e;
    proto_buf_reset(&sn->buf);
    proto_enc_init(&e, &sn->buf);
    uint64_t as_of = store_read_seq(r);
    if (m->type == PROTO_GET) {
        const void *d;
        size_t dl;
        int rc = store_read_get_raw(r, m->key.p, m->key.len, &d, &dl);
        if (rc == STORE_OK) {
            proto_enc_reply_raw_begin(&e, m->rid, PROTO_OK, as_of, 1);
            proto_enc_raw(&e, d, dl);
            proto_enc_reply_raw_end(&e, NULL, 0);
        } else {
            proto_enc_reply_raw_begin(&e, m->rid, rc == STORE_NOTFOUND ? PROTO_NOTFOUND : PROTO_EINTERNAL, as_of, 0);
            proto_enc_reply_raw_end(&e, rc == STORE_NOTFOUND ? NULL : "storage error", 0);
        }
    } else {
        /* MGET: found records only. Count first so the array header is exact. */
        const void **ds = xmalloc((m->n ? m->n : 1) * sizeof *ds);
        size_t *ls = xmalloc((m->n ? m->n : 1) * sizeof *ls);
        uint32_t found = 0;
        for (uint32_t i = 0; i < m->n; i++)
            if (store_read_get_raw(r, m->keys[i].p, m->keys[i].len, &ds[found], &ls[found]) == STORE_OK)
                found++;
        proto_enc_reply_raw_begin(&e, m->rid, PROTO_OK, as_of, found);
        for (uint32_t i = 0; i < found; i++)
            proto_enc_raw(&e, ds[i], ls[i]);
        proto_enc_reply_raw_end(&e, NULL, 0);
        free(ds);
        free(ls);
    }
    store_read_end(&r);
    s_reply(sn, router, ident, ident_len, &sn->buf);
}

/* Catch-up (PROTOCOL.md): incremental from the changelog when it reaches back far enough,
 * otherwise a snapshot -- a flush signal (NO_DATA) or live records in key order, in chunks, after
 * which the client continues incrementally from the snapshot's base sequence. */
static void s_handle_catchup(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(sn->store, err);
    if (!r) {
        s_reply_status(sn, router, ident, ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&sn->catchups_total, 1);
    uint64_t epoch = store_epoch(sn->store);
    store_changes_t ch;
    store_changes_init(&ch);
    store_catchup_t cu;
    int rc = store_catchup(r, epoch, m, &ch, &cu);
    if (cu.snapshot)
        atomic_fetch_add(&sn->snapshots_total, 1);
    store_read_end(&r);
    proto_enc_t e;
    proto_buf_reset(&sn->buf);
    proto_enc_init(&e, &sn->buf);
    if (rc != STORE_OK) {
        proto_enc_catchup_reply_begin(&e, m->rid, PROTO_EINTERNAL, epoch, 0, 0, true, 0);
        proto_enc_catchup_reply_end(&e, "", 0);
    } else {
        proto_enc_catchup_reply_begin(&e, m->rid, PROTO_OK, epoch, cu.mode, cu.through, cu.done, (uint32_t)ch.n);
        for (size_t i = 0; i < ch.n; i++)
            proto_enc_change(&e, &ch.v[i]);
        proto_enc_catchup_reply_end(&e, cu.cursor, cu.clen);
    }
    store_changes_fini(&ch);
    s_reply(sn, router, ident, ident_len, &sn->buf);
}

static void s_collect_stats(store_node_t *sn, stats_list_t *l)
{
    store_info_t info;
    store_get_info(sn->store, &info);
    uint64_t qi;
    pthread_mutex_lock(&sn->queue_lock);
    qi = sn->q_items;
    pthread_mutex_unlock(&sn->queue_lock);
    stats_add(l, "store_epoch", info.epoch);
    stats_add(l, "store_sequence", sn->pub_seq);
    stats_add(l, "store_committed_sequence", info.last_seq);
    stats_add(l, "store_records", info.records);
    stats_add(l, "store_log_entries", info.log_entries);
    stats_add(l, "store_log_floor", info.log_floor);
    stats_add(l, "store_due_entries", info.due_entries);
    stats_add(l, "store_map_size_bytes", info.map_size);
    stats_add(l, "store_map_used_bytes", info.map_used);
    stats_add(l, "store_map_grows_total", info.map_grows);
    stats_add(l, "store_queue_items", qi);
    stats_add(l, "store_queue_max", sn->cfg.queue_max);
    stats_add(l, "store_writes_total", atomic_load(&sn->writes_total));
    stats_add(l, "store_write_commands_total", atomic_load(&sn->write_ops_total));
    stats_add(l, "store_commits_total", atomic_load(&sn->commits_total));
    stats_add(l, "store_commit_errors_total", atomic_load(&sn->commit_errors));
    stats_add(l, "store_expirations_total", atomic_load(&sn->expirations_total));
    stats_add(l, "store_purges_total", atomic_load(&sn->purges_total));
    stats_add(l, "store_overload_total", atomic_load(&sn->overload_total));
    stats_add(l, "store_malformed_total", atomic_load(&sn->malformed_total));
    stats_add(l, "store_expired_writes_total", atomic_load(&sn->expired_total));
    stats_add(l, "store_reads_total", atomic_load(&sn->reads_total));
    stats_add(l, "store_catchups_total", atomic_load(&sn->catchups_total));
    stats_add(l, "store_snapshots_total", atomic_load(&sn->snapshots_total));
    stats_add(l, "store_published_messages_total", atomic_load(&sn->pub_msgs_total));
    stats_add(l, "store_publish_drops_total", atomic_load(&sn->pub_drops_total));
    stats_add(l, "store_sweeps_total", atomic_load(&sn->sweeps_total));
    stats_add(l, "store_relaxed_commits_total", atomic_load(&sn->relaxed_commits_total));
    stats_add(l, "store_flushes_total", atomic_load(&sn->flushes_total));
    stats_add(l, "store_now_us", util_now_us());
    stats_add_hist(l, "store_commit_seconds", NULL, &sn->commit_hist);
    stats_add_hist(l, "store_group_size", NULL, &sn->group_hist);
    stats_add_hist(l, "store_ack_seconds", NULL, &sn->ack_hist);
}

static void s_handle_msg(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, const void *data, size_t len,
                         bool nested);

static void s_handle(store_node_t *sn, void *router, zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        atomic_fetch_add(&sn->malformed_total, 1);
        return;
    }
    s_handle_msg(sn, router, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                 zmq_msg_size(&frames[1]), false);
}

static void s_handle_msg(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, const void *data, size_t len,
                         bool nested)
{
    proto_msg_t m;
    int rc = proto_decode(data, len, &m);
    if (rc != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        atomic_fetch_add(&sn->malformed_total, 1);
        uint8_t type;
        uint64_t rid;
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed command dropped: %s", rc != PROTO_DEC_OK ? m.err : "nested batch");
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_reply_status(sn, router, ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        for (uint32_t i = 0; i < m.n; i++)
            s_handle_msg(sn, router, ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
        s_handle_read(sn, router, ident, ident_len, &m);
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_enqueue(sn, router, ident, ident_len, &m);
        break;
    case PROTO_CATCHUP:
        s_handle_catchup(sn, router, ident, ident_len, &m);
        break;
    case PROTO_PING:
    case PROTO_STATS: {
        stats_list_t l;
        stats_list_init(&l);
        if (m.type == PROTO_STATS) {
            s_collect_stats(sn, &l);
        } else {
            stats_add(&l, "store_epoch", store_epoch(sn->store));
            stats_add(&l, "store_sequence", sn->pub_seq);
            stats_add(&l, "store_now_us", util_now_us());
        }
        proto_buf_reset(&sn->buf);
        proto_enc_stats(&sn->buf, m.type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m.rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        s_reply(sn, router, ident, ident_len, &sn->buf);
        break;
    }
    default:
        atomic_fetch_add(&sn->malformed_total, 1);
        s_reply_status(sn, router, ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}


/* ==== the node's life ======================================================================== */

static int s_bind(store_node_t *sn, int type, const char *ep, void **out, char *err)
{
    /* PUB: messages beyond the HWM for a slow subscriber are dropped -- it sees the gap and
     * resyncs; the bound keeps a stuck subscriber from costing unbounded memory here. */
    int hwm = type == ZMQ_PUB ? (int)sn->cfg.pub_hwm : 200000;
    void *s = zu_socket(sn->zctx, type, hwm, 200000);
    if (!s) {
        snprintf(err, CFG_ERR_LEN, "zmq_socket: %s", zmq_strerror(errno));
        return -1;
    }
    if (type == ZMQ_ROUTER) {
        int one = 1;
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    }
    if (zmq_bind(s, ep) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s: %s", ep, zmq_strerror(errno));
        zmq_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* A socket of the center <-> relay link: TCP with ZMTP heartbeats (a vanished relay is noticed),
 * CurveZMQ server when configured. */
static int s_bind_link(store_node_t *sn, int type, const char *ep, void **out, char *err)
{
    int hwm = type == ZMQ_PUB ? (int)sn->cfg.pub_hwm : 200000;
    void *s = zu_socket(sn->zctx, type, hwm, 200000);
    int one = 1, hb_ivl = 1000, hb_to = 5000;
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof hb_to);
    if (sn->cfg.curve && curve_server(s, sn->cfg.curve_sec, err) < 0) {
        zmq_close(s);
        return -1;
    }
    if (zmq_bind(s, ep) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s: %s", ep, zmq_strerror(errno));
        zmq_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

static int s_bind_all(store_node_t *sn, char *err)
{
    const store_node_config_t *c = &sn->cfg;
    if (s_bind(sn, ZMQ_ROUTER, c->cmd_ep, &sn->routers[sn->nrouters++], err) < 0 ||
        s_bind(sn, ZMQ_PUB, c->pub_ep, &sn->pubs[sn->npubs++], err) < 0)
        return -1;
    if (!c->center_port)
        return 0;
    /* The leaf relays' link: commands on P, the stream on P+1; CurveZMQ when a server key is
     * configured (then only relays whose public key is authorised get through). */
    if (c->curve && !(sn->zap = curve_zap_new(sn->zctx, err)))
        return -2;
    char ep[128];
    snprintf(ep, sizeof ep, "tcp://%s:%llu", c->center_addr, (unsigned long long)c->center_port);
    if (s_bind_link(sn, ZMQ_ROUTER, ep, &sn->routers[sn->nrouters++], err) < 0)
        return -1;
    snprintf(ep, sizeof ep, "tcp://%s:%llu", c->center_addr, (unsigned long long)c->center_port + 1);
    if (s_bind_link(sn, ZMQ_PUB, ep, &sn->pubs[sn->npubs++], err) < 0)
        return -1;
    return 0;
}

int store_node_new(void *zctx, const store_node_config_t *c, store_node_t **out, char *err)
{
    *out = NULL;
    store_node_t *sn = xcalloc(1, sizeof *sn);
    sn->cfg = *c;
    sn->cfg.store.path = sn->cfg.store_path;
    sn->zctx = zctx;
    sn->efd = -1;
    char serr[STORE_ERR_LEN];
    if (store_open(&sn->cfg.store, &sn->store, serr) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot open store: %s", serr);
        free(sn);
        return -1;
    }
    store_info_t info;
    store_get_info(sn->store, &info);
    sn->pub_seq = info.last_seq;
    stats_hist_init_latency(&sn->commit_hist);
    stats_hist_init_latency(&sn->ack_hist);
    stats_hist_init_pow2(&sn->group_hist, 14);
    proto_buf_init(&sn->buf);
    pthread_mutex_init(&sn->queue_lock, NULL);
    pthread_mutex_init(&sn->done_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sn->queue_cond, &ca);
    pthread_condattr_destroy(&ca);
    sn->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    sn->again = true;
    sn->next_hugz = util_mono_ms();
    int rc = s_bind_all(sn, err);
    if (rc < 0) {
        store_node_destroy(&sn);
        return rc;
    }
    if (pthread_create(&sn->writer, NULL, s_writer_main, sn) != 0) {
        snprintf(err, CFG_ERR_LEN, "cannot start the writer thread");
        store_node_destroy(&sn);
        return -1;
    }
    sn->writer_started = true;
    *out = sn;
    return 0;
}

store_t *store_node_store(store_node_t *sn)
{
    return sn->store;
}

void store_node_destroy(store_node_t **np)
{
    store_node_t *sn = *np;
    if (!sn)
        return;
    if (sn->writer_started) {
        /* Graceful stop: no new commands; let the writer finish what is queued, then ack and
         * publish it. */
        pthread_mutex_lock(&sn->queue_lock);
        sn->stopping = true;
        pthread_cond_signal(&sn->queue_cond);
        pthread_mutex_unlock(&sn->queue_lock);
        pthread_join(sn->writer, NULL);
        s_drain_completions(sn);
        s_publish_hugz(sn);
    }
    for (int i = 0; i < sn->nrouters; i++)
        if (sn->routers[i])
            zmq_close(sn->routers[i]);
    for (int i = 0; i < sn->npubs; i++)
        if (sn->pubs[i])
            zmq_close(sn->pubs[i]);
    curve_zap_destroy(&sn->zap);
    store_close(&sn->store);
    if (sn->efd >= 0)
        close(sn->efd);
    proto_buf_fini(&sn->buf);
    for (int i = 0; i < ACKBOXES; i++)
        proto_batch_fini(&sn->acks[i].batch);
    pthread_mutex_destroy(&sn->queue_lock);
    pthread_mutex_destroy(&sn->done_lock);
    pthread_cond_destroy(&sn->queue_cond);
    free(sn);
    *np = NULL;
}

/* Poll the sockets' ZMQ_FDs and the completion eventfd directly (not zmq_poll, which asks every
 * socket for ZMQ_EVENTS before and after each wait). Every socket is drained to EAGAIN, so a new
 * message signals its ZMQ_FD -- unless one of our sends (replies, acks) consumed the signal: the
 * ROUTERs are checked once with ZMQ_EVENTS before we block. A bounded drain that stopped early
 * polls with timeout 0. */
int store_node_turn(store_node_t *sn, const volatile sig_atomic_t *stop)
{
    struct pollfd pfd[4];
    int ni = 0;
    for (int i = 0; i < sn->nrouters; i++) {
        if (!sn->again && zu_readable(sn->routers[i]))
            sn->again = true;
        pfd[ni++] = (struct pollfd){.fd = zu_fd(sn->routers[i]), .events = POLLIN};
    }
    if (sn->zap) {
        if (!sn->again && zu_readable(curve_zap_socket(sn->zap)))
            sn->again = true;
        pfd[ni++] = (struct pollfd){.fd = zu_fd(curve_zap_socket(sn->zap)), .events = POLLIN};
    }
    pfd[ni++] = (struct pollfd){.fd = sn->efd, .events = POLLIN};
    uint64_t now = util_mono_ms();
    long timeout = sn->again || sn->next_hugz <= now ? 0 : (long)(sn->next_hugz - now);
    int rc = poll(pfd, (nfds_t)ni, (int)MIN(timeout, 60000));
    if (rc < 0 && errno != EINTR) {
        LOG(LOG_ERROR, "poll: %s", strerror(errno));
        return -1;
    }
    sn->again = false;
    if (rc > 0 && (pfd[ni - 1].revents & POLLIN))
        s_drain_completions(sn);
    if (sn->zap)
        curve_zap_handle(sn->zap);
    for (int i = 0; i < sn->nrouters; i++) {
        /* Bounded drain so completions and heartbeats are never starved. */
        int k;
        for (k = 0; k < 4096 && !(stop && *stop); k++) {
            zmq_msg_t frames[ZU_FRAMES_MAX];
            int nf;
            if (zu_recv(sn->routers[i], frames, ZU_FRAMES_MAX, &nf) < 0) {
                if (errno == EPROTO) {
                    atomic_fetch_add(&sn->malformed_total, 1);
                    continue;
                }
                break;
            }
            s_handle(sn, sn->routers[i], frames, nf);
            zu_close_frames(frames, nf);
        }
        if (k == 4096)
            sn->again = true;
    }
    now = util_mono_ms();
    if (now >= sn->next_hugz) {
        s_publish_hugz(sn);
        sn->next_hugz = now + sn->cfg.hugz_ms;
    }
    return 0;
}

int store_node_run(store_node_t *sn, const volatile sig_atomic_t *stop)
{
    while (!*stop)
        if (store_node_turn(sn, stop) < 0)
            return -1;
    return 0;
}
