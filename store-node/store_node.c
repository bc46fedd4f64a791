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
 *   writer --(completion queue: mutex + eventfd polled by zmq_poll)--> main
 *
 * Lock order: queue_lock and done_lock are never held together; LMDB's resize_lock is taken
 * inside store.c only, never while holding either queue lock.
 *
 * A write is acknowledged only after its group's commit returned, and its change is published
 * before the acknowledgement goes out. Overload (queue full) is answered EOVERLOAD at once.
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
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
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
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

static struct {
    /* config */
    char data_dir[400];
    char cmd_ep[512], pub_ep[512];
    uint64_t center_port;
    int sync_mode;
    uint64_t flush_ms, hugz_ms, batch_max, queue_max, sweep_max, pub_hwm, touch_sync_ms;
    store_config_t scfg;
    char store_path[512];

    char center_addr[64];
    char curve_sec[41];
    bool curve;
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

    /* metrics */
    _Atomic uint64_t writes_total, write_ops_total, commits_total, commit_errors, expirations_total, purges_total;
    _Atomic uint64_t overload_total, malformed_total, reads_total, catchups_total, snapshots_total, expired_total;
    _Atomic uint64_t pub_msgs_total, pub_drops_total, flushes_total, sweeps_total, relaxed_commits_total;
    bool unsynced; /* writer thread: relaxed commits not yet flushed */
    stats_hist_t commit_hist, group_hist, ack_hist;
} S;

static volatile sig_atomic_t s_stop;

static void on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* ==== configuration ========================================================================== */

static int s_config(char *err)
{
    static const char *const modes[] = {"full", "nometa", "none", NULL};
    snprintf(S.data_dir, sizeof S.data_dir, "./data");
    S.sync_mode = STORE_SYNC_FULL;
    S.flush_ms = 200;
    S.hugz_ms = 1000;
    S.batch_max = 4096;
    S.queue_max = 65536;
    S.sweep_max = 1000;
    S.pub_hwm = 100000;
    S.touch_sync_ms = 1000;
    uint64_t map_mb = 64, map_max_mb = 65536, retention_ms = 30ull * 86400000, ttl = 3600, log_max = 2000000;
    if (cfg_str("DATA_DIR", S.data_dir, sizeof S.data_dir, err) < 0 || cfg_enum("SYNC_MODE", modes, &S.sync_mode, err) < 0 ||
        cfg_u64("SYNC_FLUSH_MS", 1, 60000, &S.flush_ms, err) < 0 ||
        cfg_u64("STORE_HUGZ_MS", 10, 60000, &S.hugz_ms, err) < 0 ||
        cfg_u64("STORE_BATCH_MAX", 1, 100000, &S.batch_max, err) < 0 ||
        cfg_u64("STORE_QUEUE_MAX", 1, 10000000, &S.queue_max, err) < 0 ||
        cfg_u64("STORE_SWEEP_MAX", 1, 100000, &S.sweep_max, err) < 0 ||
        cfg_u64("STORE_PUB_HWM", 1, 10000000, &S.pub_hwm, err) < 0 ||
        cfg_u64("TOUCH_SYNC_MS", 0, 60000, &S.touch_sync_ms, err) < 0 ||
        cfg_u64("STORE_MAP_SIZE_MB", 1, 1u << 24, &map_mb, err) < 0 ||
        cfg_u64("STORE_MAP_MAX_MB", 1, 1u << 24, &map_max_mb, err) < 0 ||
        cfg_duration_ms("RETENTION", 1000, 1, 3650ull * 86400000, &retention_ms, err) < 0 ||
        cfg_u64("PRESENCE_TTL", 1, PROTO_TTL_MAX, &ttl, err) < 0 ||
        cfg_u64("STORE_LOG_MAX", 1, 1000000000, &log_max, err) < 0 ||
        cfg_u64("CENTER_PORT", 1, 65534, &S.center_port, err) < 0)
        return -1;
    snprintf(S.cmd_ep, sizeof S.cmd_ep, "ipc://%s/run/store-cmd.sock", S.data_dir);
    snprintf(S.pub_ep, sizeof S.pub_ep, "ipc://%s/run/store-pub.sock", S.data_dir);
    if (cfg_str("STORE_CMD_ENDPOINT", S.cmd_ep, sizeof S.cmd_ep, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", S.pub_ep, sizeof S.pub_ep, err) < 0)
        return -1;
    snprintf(S.center_addr, sizeof S.center_addr, "*");
    if (cfg_str("CENTER_BIND_ADDR", S.center_addr, sizeof S.center_addr, err) < 0)
        return -1;
    int k = curve_key_load("CURVE_SERVER_SECRET_KEY", S.curve_sec, err);
    if (k < 0)
        return -1;
    S.curve = k == 1;
    snprintf(S.store_path, sizeof S.store_path, "%s/store", S.data_dir);
    S.scfg.path = S.store_path;
    S.scfg.sync_mode = S.sync_mode;
    S.scfg.map_size = map_mb << 20;
    S.scfg.map_size_max = MAX(map_max_mb, map_mb) << 20;
    S.scfg.retention_us = retention_ms * 1000;
    S.scfg.default_ttl_s = ttl;
    S.scfg.log_max = log_max;
    return 0;
}

/* ==== writer thread ========================================================================== */

static void s_push_completion(completion_t *c)
{
    pthread_mutex_lock(&S.done_lock);
    if (S.d_tail)
        S.d_tail->next = c;
    else
        S.d_head = c;
    S.d_tail = c;
    pthread_mutex_unlock(&S.done_lock);
    uint64_t one = 1;
    if (write(S.efd, &one, sizeof one) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd write: %s", strerror(errno));
}

static void s_write_group(job_t *jobs, size_t njobs)
{
    char err[STORE_ERR_LEN];
    store_op_t *ops = xmalloc(njobs * sizeof *ops);
    size_t i = 0, items = 0;
    /* Heartbeats are the hot path: a group of nothing but heartbeats is committed without an
     * fsync and flushed within TOUCH_SYNC_MS (0 = every heartbeat group fsynced too). */
    bool relaxed = S.touch_sync_ms > 0;
    uint64_t now_wall = util_now_us();
    size_t nops = 0;
    for (job_t *j = jobs; j; j = j->next) {
        if (j->deadline_us && now_wall >= j->deadline_us) {
            /* Waited in the queue past its sender's deadline (an overloaded store): not applied. */
            j->op.status = PROTO_ETIMEOUT;
            j->expired = true;
            atomic_fetch_add(&S.expired_total, 1);
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
    int rc = nops ? store_apply(S.store, ops, nops, now_wall, relaxed, &c->changes, err) : 0;
    if (rc == 0 && relaxed && S.sync_mode != STORE_SYNC_NONE) {
        /* Only pure refreshes may wait for the flush: a heartbeat that created a record or
         * brought a user back online is a change of state, durable before it is acknowledged. */
        for (size_t k = 0; k < c->changes.n; k++) {
            if (c->changes.v[k].kind == PROTO_CH_SET) {
                if (store_flush(S.store, err) == 0)
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
    if (rc == 0 && relaxed && S.sync_mode != STORE_SYNC_NONE) {
        S.unsynced = true;
        atomic_fetch_add(&S.relaxed_commits_total, 1);
    } else if (rc == 0) {
        S.unsynced = false; /* a synced commit flushed everything before it */
    }
    uint64_t dt = util_mono_us() - t0;
    if (rc < 0) {
        atomic_fetch_add(&S.commit_errors, 1);
        LOG_RATELIMITED(LOG_ERROR, 1000, "group commit of %zu ops failed: %s", njobs, err);
    } else {
        atomic_fetch_add(&S.commits_total, 1);
        atomic_fetch_add(&S.writes_total, items);
        atomic_fetch_add(&S.write_ops_total, nops);
        stats_hist_observe(&S.commit_hist, dt);
        stats_hist_observe(&S.group_hist, items);
    }
    i = 0;
    for (job_t *j = jobs; j; j = j->next)
        if (!j->expired)
            j->op = ops[i++];
    free(ops);
    c->jobs = jobs;
    s_push_completion(c);
}

static void *s_writer_main(void *arg)
{
    (void)arg;
    uint64_t next_sweep = 0, next_flush = util_mono_ms() + S.flush_ms, next_rcheck = util_mono_ms() + 10000;
    uint64_t next_touch_sync = util_mono_ms() + S.touch_sync_ms;
    char err[STORE_ERR_LEN];
    for (;;) {
        pthread_mutex_lock(&S.queue_lock);
        for (;;) {
            if (S.q_head || S.stopping)
                break;
            uint64_t now_wall = util_now_us(), now = util_mono_ms();
            uint64_t wake_ms = next_rcheck;
            if (next_sweep != UINT64_MAX) {
                if (next_sweep <= now_wall)
                    break;
                uint64_t in_ms = (next_sweep - now_wall) / 1000 + 1;
                wake_ms = MIN(wake_ms, now + in_ms);
            }
            if (S.sync_mode == STORE_SYNC_NONE)
                wake_ms = MIN(wake_ms, next_flush);
            if (S.unsynced)
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
            pthread_cond_timedwait(&S.queue_cond, &S.queue_lock, &ts);
        }
        /* Take queued jobs up to batch_max items: these commit together. */
        job_t *head = NULL, *tail = NULL;
        size_t njobs = 0, items = 0;
        while (S.q_head && (njobs == 0 || items + S.q_head->op.n <= S.batch_max)) {
            job_t *j = S.q_head;
            S.q_head = j->next;
            if (!S.q_head)
                S.q_tail = NULL;
            j->next = NULL;
            if (tail)
                tail->next = j;
            else
                head = j;
            tail = j;
            njobs++;
            items += j->op.n;
        }
        bool stopping = S.stopping && !S.q_head && !head;
        pthread_mutex_unlock(&S.queue_lock);
        if (stopping) {
            if (S.unsynced && store_flush(S.store, err) < 0)
                LOG(LOG_ERROR, "%s", err);
            break;
        }
        if (head)
            s_write_group(head, njobs);

        uint64_t now_wall = util_now_us();
        if (next_sweep <= now_wall) {
            completion_t *c = xcalloc(1, sizeof *c);
            store_changes_init(&c->changes);
            uint64_t next_due = UINT64_MAX, exp = 0, pur = 0;
            int n = store_sweep(S.store, now_wall, (uint32_t)S.sweep_max, &c->changes, &next_due, &exp, &pur, err);
            atomic_fetch_add(&S.sweeps_total, 1);
            if (n < 0)
                LOG_RATELIMITED(LOG_ERROR, 1000, "sweep failed: %s", err);
            atomic_fetch_add(&S.expirations_total, exp);
            atomic_fetch_add(&S.purges_total, pur);
            if (c->changes.n) {
                s_push_completion(c);
            } else {
                store_changes_fini(&c->changes);
                free(c);
            }
            /* Sweep again when the next record is due, at least every second (tombstone pruning),
             * at once if this pass hit its cap. */
            if (n >= (int)S.sweep_max)
                next_sweep = now_wall;
            else
                next_sweep = MIN(next_due, now_wall + 1000000);
        }
        uint64_t now = util_mono_ms();
        if (S.sync_mode == STORE_SYNC_NONE && now >= next_flush) {
            if (store_flush(S.store, err) < 0)
                LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
            atomic_fetch_add(&S.flushes_total, 1);
            next_flush = now + S.flush_ms;
        }
        if (S.unsynced && now >= next_touch_sync) {
            if (store_flush(S.store, err) < 0)
                LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
            else
                S.unsynced = false;
            atomic_fetch_add(&S.flushes_total, 1);
        }
        if (!S.unsynced)
            next_touch_sync = now + S.touch_sync_ms;
        if (now >= next_rcheck) {
            int dead = store_reader_check(S.store);
            if (dead > 0)
                LOG(LOG_NOTICE, "cleared %d stale LMDB reader slots", dead);
            next_rcheck = now + 10000;
        }
    }
    return NULL;
}

/* ==== main thread: replies and publishing ==================================================== */

static void s_reply(void *router, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
    if (zu_send_owned(router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply dropped: %s", zmq_strerror(errno));
}

static void s_reply_status(void *router, const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status,
                           const char *msg)
{
    proto_buf_reset(&S.buf);
    proto_enc_reply(&S.buf, rid, status, 0, NULL, 0, msg, 0);
    s_reply(router, ident, ident_len, &S.buf);
}

static void s_publish_frames(char topic, proto_buf_t *b)
{
    for (int i = 0; i < S.npubs; i++) {
        if (zmq_send(S.pubs[i], &topic, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
            zmq_send(S.pubs[i], b->data, b->len, ZMQ_DONTWAIT) < 0) {
            /* PUB drops at the HWM; subscribers see the gap in the sequence and resync. */
            atomic_fetch_add(&S.pub_drops_total, 1);
        } else {
            atomic_fetch_add(&S.pub_msgs_total, 1);
        }
    }
}

static void s_publish_changes(const store_changes_t *ch)
{
    for (size_t off = 0; off < ch->n; off += CHANGES_PER_MSG) {
        size_t n = MIN(CHANGES_PER_MSG, ch->n - off);
        proto_enc_t e;
        proto_buf_reset(&S.buf);
        proto_enc_init(&e, &S.buf);
        /* The range starts right after what was published before, so a subscriber can tell a gap
         * from sequence numbers that were consumed by no change (there are none today, but the
         * contract does not depend on it). */
        uint64_t first = S.pub_seq + 1, last = ch->v[off + n - 1].rec.version;
        proto_enc_changes_begin(&e, store_epoch(S.store), first, last, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            proto_enc_change(&e, &ch->v[off + i]);
        s_publish_frames(PROTO_TOPIC_CHANGES, &S.buf);
        S.pub_seq = last;
    }
}

static void s_publish_hugz(void)
{
    proto_buf_reset(&S.buf);
    proto_enc_hugz(&S.buf, store_epoch(S.store), S.pub_seq, util_now_us());
    s_publish_frames(PROTO_TOPIC_HUGZ, &S.buf);
}

/* Acknowledgements of one group, one frame per peer (a BATCH when a peer has several). */
typedef struct ackbox {
    void *router;
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    proto_batch_t batch;
} ackbox_t;

#define ACKBOXES 16
static ackbox_t s_acks[ACKBOXES];
static int s_nacks;

static void s_flush_acks(void)
{
    for (int i = 0; i < s_nacks; i++) {
        ackbox_t *a = &s_acks[i];
        if (!a->batch.n)
            continue;
        proto_batch_encode(&a->batch, &S.buf);
        s_reply(a->router, a->ident, a->ident_len, &S.buf);
        proto_batch_reset(&a->batch);
    }
    s_nacks = 0;
}

static void s_finish_job(job_t *j)
{
    proto_buf_reset(&S.buf);
    if (j->op.status == PROTO_OK && j->type != PROTO_DEL)
        proto_enc_reply(&S.buf, j->rid, PROTO_OK, j->op.as_of, j->out, j->op.n, NULL, 0);
    else
        proto_enc_reply(&S.buf, j->rid, j->op.status, j->op.as_of, NULL, 0,
                        j->op.status == PROTO_EINTERNAL ? "storage error"
                        : j->expired                    ? "deadline passed before the write was applied"
                                                        : NULL,
                        0);
    ackbox_t *a = NULL;
    for (int i = 0; i < s_nacks && !a; i++)
        if (s_acks[i].router == j->router && s_acks[i].ident_len == j->ident_len &&
            memcmp(s_acks[i].ident, j->ident, j->ident_len) == 0)
            a = &s_acks[i];
    if (!a && s_nacks == ACKBOXES)
        s_flush_acks();
    if (!a) {
        a = &s_acks[s_nacks++];
        a->router = j->router;
        a->ident_len = j->ident_len;
        memcpy(a->ident, j->ident, j->ident_len);
    }
    proto_batch_add(&a->batch, S.buf.data, S.buf.len);
    if (a->batch.data.len >= PROTO_BATCH_SOFT_MAX) { /* keep frames small: send this part now */
        proto_batch_encode(&a->batch, &S.buf);
        s_reply(a->router, a->ident, a->ident_len, &S.buf);
        proto_batch_reset(&a->batch);
    }
    stats_hist_observe(&S.ack_hist, util_mono_us() - j->t_recv_us);
    free(j->in);
    free(j->out);
    free(j);
}

static void s_drain_completions(void)
{
    uint64_t v;
    if (read(S.efd, &v, sizeof v) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&S.done_lock);
    completion_t *c = S.d_head;
    S.d_head = S.d_tail = NULL;
    pthread_mutex_unlock(&S.done_lock);
    while (c) {
        completion_t *next = c->next;
        if (c->changes.n)
            s_publish_changes(&c->changes);
        uint64_t items = 0;
        for (job_t *j = c->jobs, *jn; j; j = jn) {
            jn = j->next;
            items += j->op.n;
            s_finish_job(j);
        }
        s_flush_acks();
        if (items) {
            pthread_mutex_lock(&S.queue_lock);
            S.q_items -= items;
            pthread_mutex_unlock(&S.queue_lock);
        }
        store_changes_fini(&c->changes);
        free(c);
        c = next;
    }
}

/* ==== main thread: commands ================================================================== */

static void s_enqueue(void *router, const uint8_t *ident, size_t ident_len, proto_msg_t *m)
{
    uint32_t n = m->type == PROTO_DEL ? 1 : m->n;
    if (n == 0) {
        proto_buf_reset(&S.buf);
        proto_enc_reply(&S.buf, m->rid, PROTO_OK, S.pub_seq, NULL, 0, NULL, 0);
        s_reply(router, ident, ident_len, &S.buf);
        return;
    }
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* Its sender has given up (it reached us late: a partition that healed, a stall): applied
         * now, it could land after a write the client made since, and undo it. */
        atomic_fetch_add(&S.expired_total, 1);
        s_reply_status(router, ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was applied");
        return;
    }
    pthread_mutex_lock(&S.queue_lock);
    bool full = S.q_items + n > S.queue_max && S.q_items > 0;
    if (!full)
        S.q_items += n;
    pthread_mutex_unlock(&S.queue_lock);
    if (full) {
        atomic_fetch_add(&S.overload_total, 1);
        s_reply_status(router, ident, ident_len, m->rid, PROTO_EOVERLOAD, "store write queue full");
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
    pthread_mutex_lock(&S.queue_lock);
    if (S.q_tail)
        S.q_tail->next = j;
    else
        S.q_head = j;
    S.q_tail = j;
    pthread_cond_signal(&S.queue_cond);
    pthread_mutex_unlock(&S.queue_lock);
}

static void s_handle_read(void *router, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(S.store, err);
    if (!r) {
        LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
        s_reply_status(router, ident, ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&S.reads_total, 1);
    proto_enc_t e;
    proto_buf_reset(&S.buf);
    proto_enc_init(&e, &S.buf);
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
    s_reply(router, ident, ident_len, &S.buf);
}

/* Catch-up (PROTOCOL.md): incremental from the changelog when it reaches back far enough,
 * otherwise a snapshot -- a flush signal (NO_DATA) or live records in key order, in chunks, after
 * which the client continues incrementally from the snapshot's base sequence. */
static void s_handle_catchup(void *router, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(S.store, err);
    if (!r) {
        s_reply_status(router, ident, ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&S.catchups_total, 1);
    uint64_t epoch = store_epoch(S.store);
    store_changes_t ch;
    store_changes_init(&ch);
    store_catchup_t cu;
    int rc = store_catchup(r, epoch, m, &ch, &cu);
    if (cu.snapshot)
        atomic_fetch_add(&S.snapshots_total, 1);
    store_read_end(&r);
    proto_enc_t e;
    proto_buf_reset(&S.buf);
    proto_enc_init(&e, &S.buf);
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
    s_reply(router, ident, ident_len, &S.buf);
}

static void s_collect_stats(stats_list_t *l)
{
    store_info_t info;
    store_get_info(S.store, &info);
    uint64_t qi;
    pthread_mutex_lock(&S.queue_lock);
    qi = S.q_items;
    pthread_mutex_unlock(&S.queue_lock);
    stats_add(l, "store_epoch", info.epoch);
    stats_add(l, "store_sequence", S.pub_seq);
    stats_add(l, "store_committed_sequence", info.last_seq);
    stats_add(l, "store_records", info.records);
    stats_add(l, "store_log_entries", info.log_entries);
    stats_add(l, "store_log_floor", info.log_floor);
    stats_add(l, "store_due_entries", info.due_entries);
    stats_add(l, "store_map_size_bytes", info.map_size);
    stats_add(l, "store_map_used_bytes", info.map_used);
    stats_add(l, "store_map_grows_total", info.map_grows);
    stats_add(l, "store_queue_items", qi);
    stats_add(l, "store_queue_max", S.queue_max);
    stats_add(l, "store_writes_total", atomic_load(&S.writes_total));
    stats_add(l, "store_write_commands_total", atomic_load(&S.write_ops_total));
    stats_add(l, "store_commits_total", atomic_load(&S.commits_total));
    stats_add(l, "store_commit_errors_total", atomic_load(&S.commit_errors));
    stats_add(l, "store_expirations_total", atomic_load(&S.expirations_total));
    stats_add(l, "store_purges_total", atomic_load(&S.purges_total));
    stats_add(l, "store_overload_total", atomic_load(&S.overload_total));
    stats_add(l, "store_malformed_total", atomic_load(&S.malformed_total));
    stats_add(l, "store_expired_writes_total", atomic_load(&S.expired_total));
    stats_add(l, "store_reads_total", atomic_load(&S.reads_total));
    stats_add(l, "store_catchups_total", atomic_load(&S.catchups_total));
    stats_add(l, "store_snapshots_total", atomic_load(&S.snapshots_total));
    stats_add(l, "store_published_messages_total", atomic_load(&S.pub_msgs_total));
    stats_add(l, "store_publish_drops_total", atomic_load(&S.pub_drops_total));
    stats_add(l, "store_sweeps_total", atomic_load(&S.sweeps_total));
    stats_add(l, "store_relaxed_commits_total", atomic_load(&S.relaxed_commits_total));
    stats_add(l, "store_flushes_total", atomic_load(&S.flushes_total));
    stats_add(l, "store_now_us", util_now_us());
    stats_add_hist(l, "store_commit_seconds", NULL, &S.commit_hist);
    stats_add_hist(l, "store_group_size", NULL, &S.group_hist);
    stats_add_hist(l, "store_ack_seconds", NULL, &S.ack_hist);
}

static void s_handle_msg(void *router, const uint8_t *ident, size_t ident_len, const void *data, size_t len,
                         bool nested);

static void s_handle(void *router, zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        atomic_fetch_add(&S.malformed_total, 1);
        return;
    }
    s_handle_msg(router, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                 zmq_msg_size(&frames[1]), false);
}

static void s_handle_msg(void *router, const uint8_t *ident, size_t ident_len, const void *data, size_t len,
                         bool nested)
{
    proto_msg_t m;
    int rc = proto_decode(data, len, &m);
    if (rc != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        atomic_fetch_add(&S.malformed_total, 1);
        uint8_t type;
        uint64_t rid;
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed command dropped: %s", rc != PROTO_DEC_OK ? m.err : "nested batch");
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_reply_status(router, ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        for (uint32_t i = 0; i < m.n; i++)
            s_handle_msg(router, ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
        s_handle_read(router, ident, ident_len, &m);
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_enqueue(router, ident, ident_len, &m);
        break;
    case PROTO_CATCHUP:
        s_handle_catchup(router, ident, ident_len, &m);
        break;
    case PROTO_PING:
    case PROTO_STATS: {
        stats_list_t l;
        stats_list_init(&l);
        if (m.type == PROTO_STATS) {
            s_collect_stats(&l);
        } else {
            stats_add(&l, "store_epoch", store_epoch(S.store));
            stats_add(&l, "store_sequence", S.pub_seq);
            stats_add(&l, "store_now_us", util_now_us());
        }
        proto_buf_reset(&S.buf);
        proto_enc_stats(&S.buf, m.type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m.rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        s_reply(router, ident, ident_len, &S.buf);
        break;
    }
    default:
        atomic_fetch_add(&S.malformed_total, 1);
        s_reply_status(router, ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}

/* ==== startup ================================================================================ */

static int s_bind(int type, const char *ep, void **out, char *err)
{
    /* PUB: messages beyond the HWM for a slow subscriber are dropped -- it sees the gap and
     * resyncs; the bound keeps a stuck subscriber from costing unbounded memory here. */
    int hwm = type == ZMQ_PUB ? (int)S.pub_hwm : 200000;
    void *s = zu_socket(S.zctx, type, hwm, 200000);
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
static int s_bind_link(int type, const char *ep, void **out, char *err)
{
    int hwm = type == ZMQ_PUB ? (int)S.pub_hwm : 200000;
    void *s = zu_socket(S.zctx, type, hwm, 200000);
    int one = 1, hb_ivl = 1000, hb_to = 5000;
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof hb_to);
    if (S.curve && curve_server(s, S.curve_sec, err) < 0) {
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

/* One store-node per database: LMDB itself lets several processes open an environment, and two
 * writers would each continue the sequence from what they read. An exclusive lock held for the
 * process's life (released by the kernel if it dies) makes a second one exit 2 at once. */
static int s_lock_store_dir(void)
{
    if (mkdir(S.store_path, 0750) < 0 && errno != EEXIST) {
        LOG(LOG_ERROR, "DATA_DIR: cannot create %s: %s", S.store_path, strerror(errno));
        return -1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/store-node.lock", S.store_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        LOG(LOG_ERROR, "DATA_DIR: the store in %s is in use by another store-node (%s); stop it or choose another DATA_DIR",
            S.store_path, fd < 0 ? strerror(errno) : "locked");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0; /* the fd stays open (and locked) until exit */
}

static const cli_desc_t s_cli = {
    .name = "store-node",
    .summary = "The center's durable store: LMDB with group commit, the TTL sweeper, and the sequenced change\n"
               "stream every cache-node, gateway and leaf relay follows.",
    .usage = "",
    .procs = ENVREG_STORE,
};

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    char err[CFG_ERR_LEN] = "";
    if (log_init("store", err, sizeof err) < 0) {
        fprintf(stderr, "store-node: %s\n", err);
        return 2;
    }
    cli_check_env(); /* before the configuration: a typo is named even when it makes the rest fail */
    if (s_config(err) < 0) {
        fprintf(stderr, "store-node: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (s_lock_store_dir() < 0)
        return 2;
    char serr[STORE_ERR_LEN];
    if (store_open(&S.scfg, &S.store, serr) < 0) {
        LOG(LOG_ERROR, "cannot open store: %s", serr);
        return 1;
    }
    store_info_t info;
    store_get_info(S.store, &info);
    S.pub_seq = info.last_seq;
    stats_hist_init_latency(&S.commit_hist);
    stats_hist_init_latency(&S.ack_hist);
    stats_hist_init_pow2(&S.group_hist, 14);
    proto_buf_init(&S.buf);
    pthread_mutex_init(&S.queue_lock, NULL);
    pthread_mutex_init(&S.done_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S.queue_cond, &ca);
    S.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    char rundir[600];
    snprintf(rundir, sizeof rundir, "%s/run", S.data_dir);
    mkdir(rundir, 0750);
    S.zctx = zmq_ctx_new();
    if (s_bind(ZMQ_ROUTER, S.cmd_ep, &S.routers[S.nrouters++], err) < 0 ||
        s_bind(ZMQ_PUB, S.pub_ep, &S.pubs[S.npubs++], err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    char center[160] = "";
    if (S.center_port) {
        /* The leaf relays' link: commands on P, the stream on P+1; CurveZMQ when a server key is
         * configured (then only relays whose public key is authorised get through). */
        if (S.curve && !(S.zap = curve_zap_new(S.zctx, err))) {
            LOG(LOG_ERROR, "%s", err);
            return 2;
        }
        char ep[128];
        snprintf(ep, sizeof ep, "tcp://%s:%llu", S.center_addr, (unsigned long long)S.center_port);
        if (s_bind_link(ZMQ_ROUTER, ep, &S.routers[S.nrouters++], err) < 0)
            goto bind_fail;
        snprintf(ep, sizeof ep, "tcp://%s:%llu", S.center_addr, (unsigned long long)S.center_port + 1);
        if (s_bind_link(ZMQ_PUB, ep, &S.pubs[S.npubs++], err) < 0)
            goto bind_fail;
        snprintf(center, sizeof center, " center=tcp://%s:%llu curve=%s", S.center_addr,
                 (unsigned long long)S.center_port, S.curve ? "on" : "off");
    }

    pthread_t writer;
    pthread_create(&writer, NULL, s_writer_main, NULL);
    LOG(LOG_NOTICE, "ready cmd=%s pub=%s%s sync=%s epoch=%llu seq=%llu records=%llu", S.cmd_ep, S.pub_ep, center,
        store_sync_mode_name(S.sync_mode), (unsigned long long)info.epoch, (unsigned long long)info.last_seq,
        (unsigned long long)info.records);
    char ready[800];
    snprintf(ready, sizeof ready, "store cmd=%s pub=%s", S.cmd_ep, S.pub_ep);
    zu_signal_ready(ready);

    /* Poll the sockets' ZMQ_FDs and the completion eventfd directly (not zmq_poll, which asks
     * every socket for ZMQ_EVENTS before and after each wait). Every socket is drained to EAGAIN,
     * so a new message signals its ZMQ_FD -- unless one of our sends (replies, acks) consumed the
     * signal: the ROUTERs are checked once with ZMQ_EVENTS before we block. A bounded drain that
     * stopped early polls with timeout 0. */
    struct pollfd pfd[4];
    uint64_t next_hugz = util_mono_ms();
    bool again = true;
    while (!s_stop) {
        int ni = 0;
        for (int i = 0; i < S.nrouters; i++) {
            if (!again && zu_readable(S.routers[i]))
                again = true;
            pfd[ni++] = (struct pollfd){.fd = zu_fd(S.routers[i]), .events = POLLIN};
        }
        if (S.zap) {
            if (!again && zu_readable(curve_zap_socket(S.zap)))
                again = true;
            pfd[ni++] = (struct pollfd){.fd = zu_fd(curve_zap_socket(S.zap)), .events = POLLIN};
        }
        pfd[ni++] = (struct pollfd){.fd = S.efd, .events = POLLIN};
        uint64_t now = util_mono_ms();
        long timeout = again || next_hugz <= now ? 0 : (long)(next_hugz - now);
        int rc = poll(pfd, (nfds_t)ni, (int)MIN(timeout, 60000));
        if (rc < 0 && errno != EINTR) {
            LOG(LOG_ERROR, "poll: %s", strerror(errno));
            break;
        }
        again = false;
        if (rc > 0 && (pfd[ni - 1].revents & POLLIN))
            s_drain_completions();
        if (S.zap)
            curve_zap_handle(S.zap);
        for (int i = 0; i < S.nrouters; i++) {
            /* Bounded drain so completions and heartbeats are never starved. */
            int k;
            for (k = 0; k < 4096 && !s_stop; k++) {
                zmq_msg_t frames[ZU_FRAMES_MAX];
                int nf;
                if (zu_recv(S.routers[i], frames, ZU_FRAMES_MAX, &nf) < 0) {
                    if (errno == EPROTO) {
                        atomic_fetch_add(&S.malformed_total, 1);
                        continue;
                    }
                    break;
                }
                s_handle(S.routers[i], frames, nf);
                zu_close_frames(frames, nf);
            }
            if (k == 4096)
                again = true;
        }
        now = util_mono_ms();
        if (now >= next_hugz) {
            s_publish_hugz();
            next_hugz = now + S.hugz_ms;
        }
    }

    /* Graceful stop: no new commands; let the writer finish what is queued, then ack and publish it. */
    LOG(LOG_NOTICE, "stopping: draining the write queue");
    pthread_mutex_lock(&S.queue_lock);
    S.stopping = true;
    pthread_cond_signal(&S.queue_cond);
    pthread_mutex_unlock(&S.queue_lock);
    pthread_join(writer, NULL);
    s_drain_completions();
    s_publish_hugz();
    for (int i = 0; i < S.nrouters; i++)
        zmq_close(S.routers[i]);
    for (int i = 0; i < S.npubs; i++)
        zmq_close(S.pubs[i]);
    curve_zap_destroy(&S.zap);
    zmq_ctx_term(S.zctx);
    store_close(&S.store);
    close(S.efd);
    proto_buf_fini(&S.buf);
    LOG(LOG_NOTICE, "stopped");
    return 0;
bind_fail:
    LOG(LOG_ERROR, "%s", err);
    return 1;
}
