/* store_node.c -- the center's store-node: the only writer of durable state. This file is its main
 * thread; store_writer.c is the writer thread (store_node_int.h draws the two and their queues).
 *
 * The main thread owns every ZeroMQ socket: the command ROUTER(s) (cache-nodes, sync relays) and
 * the change stream PUB(s). It decodes and validates commands (a dispatch table), answers reads,
 * catch-ups, pings and stats from LMDB read snapshots, queues writes for the writer, and -- when
 * the writer reports a committed group -- publishes the group's changes in sequence order and then
 * sends the acknowledgements, one frame per peer. It publishes a HUGZ heartbeat carrying the last
 * published sequence every STORE_HUGZ_MS.
 *
 * A write is acknowledged only after its group's commit returned, and its change is published
 * before the acknowledgement goes out. Overload (queue full) is answered EOVERLOAD at once.
 *
 * One loop (common/zloop.h) over the writer's eventfd, the CurveZMQ authenticator (when the relays'
 * link has one) and the ROUTERs, in that order: completions are answered before new commands.
 *
 * Replicated (STORE_REPLICAS, store_repl.c): only the member that leads -- told by a COMP_ROLE
 * completion once its first entry of the term applied -- takes writes, reads and catch-ups,
 * publishes the stream and its heartbeat (which names the member); the others answer ENOTLEADER
 * naming the leader they know, and answer PING and STATS (clients find the leader with them).
 */
#include "store_model.h"
#include "store_node_int.h"
#include "cfg.h"
#include "cli.h"
#include "log.h"
#include "procstat.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANGES_PER_MSG 512

/* ==== replies and publishing ==================================================================== */

static void s_reply(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
    zloop_sent(sn->loop, router);
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
        proto_enc_changes_begin(&e, sn->epoch, first, last, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            proto_enc_change(&e, &ch->v[off + i]);
        s_publish_frames(sn, PROTO_TOPIC_CHANGES, &sn->buf);
        sn->pub_seq = last;
    }
}

static void s_publish_hugz(store_node_t *sn)
{
    if (!sn->leading)
        return; /* a follower is silent: subscribers connected to every member hear the leader */
    proto_buf_reset(&sn->buf);
    if (sn->repl)
        proto_enc_hugz_member(&sn->buf, sn->epoch, sn->pub_seq, util_now_us(), 0, (uint32_t)sn->cfg.repl.self, sn->term);
    else
        proto_enc_hugz(&sn->buf, sn->epoch, sn->pub_seq, util_now_us());
    s_publish_frames(sn, PROTO_TOPIC_HUGZ, &sn->buf);
}

/* ==== acknowledgements ========================================================================== */

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

/* The error text of a job's answer (NULL for a success or a plain NOTFOUND). */
static const char *s_status_text(const job_t *j)
{
    switch (j->op.status) {
    case PROTO_EINTERNAL: return "storage error";
    case PROTO_ETIMEOUT: return j->expired ? "deadline passed before the write was applied" : "timed out";
    case PROTO_ENOTLEADER: return "not leader: this store member lost the leadership; retry at the leader";
    case PROTO_EUNAVAIL: return "leadership lost before the write was committed: outcome unknown, retry with the same command id";
    case PROTO_EOVERLOAD: return "replication queue full";
    case PROTO_EBADREQ: return "write too large for one replicated log entry";
    default: return NULL;
    }
}

static void s_finish_job(store_node_t *sn, job_t *j)
{
    proto_buf_reset(&sn->buf);
    if (j->type == PROTO_LEASE)
        proto_enc_reply(&sn->buf, j->rid, j->op.status, j->op.as_of, NULL, 0, s_status_text(j), j->op.flags);
    else if (j->op.status == PROTO_OK && j->type != PROTO_DEL)
        proto_enc_reply(&sn->buf, j->rid, PROTO_OK, j->op.as_of, j->out, j->op.n, NULL, 0);
    else
        proto_enc_reply(&sn->buf, j->rid, j->op.status, j->op.as_of, NULL, 0, s_status_text(j), 0);
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
    if (proto_batch_full(&a->batch)) { /* keep frames small: send this part now */
        proto_batch_encode(&a->batch, &sn->buf);
        s_reply(sn, a->router, a->ident, a->ident_len, &sn->buf);
        proto_batch_reset(&a->batch);
    }
    stats_hist_observe(&sn->ack_hist, util_mono_us() - j->t_recv_us);
    free(j->in);
    free(j->out);
    free(j);
}

/* Replicated: this member starts or stops serving as the leader. */
static void s_role(store_node_t *sn, const completion_t *c)
{
    sn->leading = c->leading;
    sn->leader = c->leading ? (uint32_t)sn->cfg.repl.self : c->leader;
    sn->term = c->term;
    if (!c->leading)
        return;
    /* Publish from the state's sequence: everything before it was published by an earlier leader,
     * or is caught up by subscribers when our first heartbeat shows them ahead. */
    sn->epoch = c->epoch;
    sn->pub_seq = c->pub_from;
    LOG(LOG_NOTICE, "leading: publishing from seq=%llu epoch=%llu", (unsigned long long)sn->pub_seq,
        (unsigned long long)sn->epoch);
    s_publish_hugz(sn);
    sn->next_hugz = util_mono_ms() + sn->cfg.hugz_ms;
}

/* What the writer reported: publish each group's changes, then answer its jobs. */
static void s_drain_completions(store_node_t *sn)
{
    completion_t *c = store_queue_take(sn);
    while (c) {
        completion_t *next = c->next;
        if (c->kind == COMP_ROLE)
            s_role(sn, c);
        if (c->changes.n)
            s_publish_changes(sn, &c->changes);
        uint64_t items = 0;
        for (job_t *j = c->jobs, *jn; j; j = jn) {
            jn = j->next;
            items += j->op.n;
            s_finish_job(sn, j);
        }
        s_flush_acks(sn);
        if (items)
            store_queue_release(sn, items);
        store_changes_fini(&c->changes);
        free(c);
        c = next;
    }
}

/* ==== commands =================================================================================== */

/* Replicated and not the leader: every command but PING and STATS goes to the leader. as_of names
 * it by member number (the clients' lists of store endpoints are in member order). */
static bool s_not_leader(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, uint64_t rid)
{
    if (sn->leading)
        return false;
    char msg[160];
    if (sn->leader && sn->leader != sn->cfg.repl.self)
        snprintf(msg, sizeof msg, "not leader: member %u leads (raft %s)", sn->leader,
                 sn->cfg.repl.members[sn->leader - 1].address);
    else
        snprintf(msg, sizeof msg, "not leader: no leader elected yet");
    proto_buf_reset(&sn->buf);
    proto_enc_reply(&sn->buf, rid, PROTO_ENOTLEADER, sn->leader == sn->cfg.repl.self ? 0 : sn->leader, NULL, 0, msg, 0);
    s_reply(sn, router, ident, ident_len, &sn->buf);
    atomic_fetch_add(&sn->not_leader_total, 1);
    return true;
}

static void s_enqueue(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, proto_msg_t *m)
{
    if (s_not_leader(sn, router, ident, ident_len, m->rid))
        return;
    /* Items, for the queue's bound: a DEL and a LEASE are one each. */
    uint32_t n = m->type == PROTO_DEL || m->type == PROTO_LEASE ? 1 : m->n;
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
    if (!store_queue_reserve(sn, n)) {
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
    if (m->type == PROTO_LEASE) {
        j->op.lease_id = m->lease_id;
        j->op.lease_op = m->op;
        j->op.lease_ttl_ms = m->ttl_ms;
        snprintf(j->op.lease_node, sizeof j->op.lease_node, "%s", m->node);
    } else if (m->type == PROTO_DEL) {
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
    j->op.has_cmd_id = m->has_cmd_id;
    memcpy(j->op.cmd_id, m->cmd_id, PROTO_CMD_ID_LEN);
    store_queue_push(sn, j);
}

static void s_handle_read(store_node_t *sn, void *router, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    if (s_not_leader(sn, router, ident, ident_len, m->rid))
        return; /* no follower reads: a follower may be behind what the leader acknowledged */
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
    if (s_not_leader(sn, router, ident, ident_len, m->rid))
        return;
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(sn->store, err);
    if (!r) {
        s_reply_status(sn, router, ident, ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&sn->catchups_total, 1);
    uint64_t epoch = sn->epoch;
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
    uint64_t qi = store_queue_queued(sn);
    /* A follower publishes nothing: its epoch and sequence are its state's. */
    stats_add(l, "store_epoch", sn->leading ? sn->epoch : info.epoch);
    stats_add(l, "store_sequence", sn->leading ? sn->pub_seq : info.last_seq);
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
    stats_add(l, "store_time_seconds:us", util_now_us());
    stats_add_hist(l, "store_commit_seconds", NULL, &sn->commit_hist);
    stats_add_hist(l, "store_group_size", NULL, &sn->group_hist);
    stats_add_hist(l, "store_ack_seconds", NULL, &sn->ack_hist);
    if (sn->repl) {
        stats_add(l, "store_not_leader_total", atomic_load(&sn->not_leader_total));
        stats_add(l, "store_dedup_entries", info.dedup_entries);
        store_repl_stats(sn, l, true);
    }
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, "proc=\"store-node\"", &ps);
    stats_add_build_info(l, "proc=\"store-node\"", cli_version(), cli_commit());
}

/* ==== dispatch =================================================================================== */

static void on_read(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_handle_read(ctx, in->sock, in->ident, in->ident_len, m);
}

/* SESSIONS: a user's live sessions, from a read snapshot (REALTIME.md, GET .../sessions). */
static void on_sessions(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    store_node_t *sn = ctx;
    if (s_not_leader(sn, in->sock, in->ident, in->ident_len, m->rid))
        return;
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(sn->store, err);
    if (!r) {
        LOG_RATELIMITED(LOG_ERROR, 1000, "%s", err);
        s_reply_status(sn, in->sock, in->ident, in->ident_len, m->rid, PROTO_EINTERNAL, "storage error");
        return;
    }
    atomic_fetch_add(&sn->reads_total, 1);
    uint32_t n = 0;
    int rc = store_read_sessions(r, m->key.p, m->key.len, util_now_us(), sn->ses_scratch, STORE_SESSIONS_CAP, &n);
    store_read_end(&r);
    proto_buf_reset(&sn->buf);
    proto_enc_sessions_reply(&sn->buf, m->rid, rc == STORE_OK ? PROTO_OK : PROTO_EINTERNAL, sn->ses_scratch,
                             rc == STORE_OK ? n : 0);
    s_reply(sn, in->sock, in->ident, in->ident_len, &sn->buf);
}

static void on_write(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_enqueue(ctx, in->sock, in->ident, in->ident_len, m);
}

static void on_catchup(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_handle_catchup(ctx, in->sock, in->ident, in->ident_len, m);
}

static void on_stats(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    store_node_t *sn = ctx;
    stats_list_t l;
    stats_list_init(&l);
    if (m->type == PROTO_STATS) {
        s_collect_stats(sn, &l);
    } else {
        stats_add(&l, "store_epoch", sn->leading ? sn->epoch : store_epoch(sn->store));
        stats_add(&l, "store_sequence", sn->pub_seq);
        stats_add(&l, "store_time_seconds:us", util_now_us());
        if (sn->repl)
            store_repl_stats(sn, &l, false); /* role and leader: clients find the leader with them */
    }
    proto_buf_reset(&sn->buf);
    proto_enc_stats(&sn->buf, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    stats_list_fini(&l);
    s_reply(sn, in->sock, in->ident, in->ident_len, &sn->buf);
}

static void on_unexpected(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    store_node_t *sn = ctx;
    atomic_fetch_add(&sn->malformed_total, 1);
    s_reply_status(sn, in->sock, in->ident, in->ident_len, m->rid, PROTO_EBADREQ, "unexpected message type");
}

static void on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    store_node_t *sn = ctx;
    atomic_fetch_add(&sn->malformed_total, 1);
    if (in->raw)
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed command dropped: %s", why);
    if (has_rid)
        s_reply_status(sn, in->sock, in->ident, in->ident_len, rid, PROTO_EBADREQ, why);
}

static const dispatch_t s_commands = {
    .routed = true,
    .on = {[PROTO_GET] = on_read, [PROTO_MGET] = on_read, [PROTO_PUT] = on_write, [PROTO_TOUCH] = on_write,
           [PROTO_DEL] = on_write, [PROTO_LEASE] = on_write, [PROTO_SESSIONS] = on_sessions,
           [PROTO_CATCHUP] = on_catchup, [PROTO_PING] = on_stats, [PROTO_STATS] = on_stats},
    .on_other = on_unexpected,
    .on_malformed = on_malformed,
};

/* ==== the loop =================================================================================== */

/* The heartbeat, when due; it is the loop's only timer. */
static uint64_t s_turn(void *arg, uint64_t now)
{
    store_node_t *sn = arg;
    if (now >= sn->next_hugz) {
        s_publish_hugz(sn);
        sn->next_hugz = now + sn->cfg.hugz_ms;
    }
    return sn->next_hugz;
}

static void s_on_completions(void *arg, int fd)
{
    store_node_t *sn = arg;
    s_drain_completions(sn);
    if (sn->repl && store_repl_failed(sn)) {
        sn->failed = true; /* the loop stops at the end of this turn; the process exits 1 */
        zloop_stop(sn->loop);
    }
}

static bool s_on_zap(void *arg)
{
    store_node_t *sn = arg;
    curve_zap_handle(sn->zap);
    zloop_sent(sn->loop, curve_zap_socket(sn->zap)); /* it answers what it read */
    return false;
}

static void s_on_command(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_commands, arg, sock, frames, n);
}

/* ==== the node's life ============================================================================ */

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

/* Completions first (answers before new commands), the authenticator, then the ROUTERs. */
static int s_add_sources(store_node_t *sn)
{
    if (zloop_add_fd(sn->loop, sn->efd, s_on_completions, sn) < 0)
        return -1;
    if (sn->zap) {
        void *zs = curve_zap_socket(sn->zap);
        if (zloop_add_drainer(sn->loop, &zs, 1, s_on_zap, sn) < 0)
            return -1;
    }
    for (int i = 0; i < sn->nrouters; i++)
        if (zloop_add_socket(sn->loop, sn->routers[i], s_on_command, sn) < 0)
            return -1;
    return 0;
}

int store_node_new(void *zctx, const store_node_config_t *c, store_node_t **out, char *err)
{
    *out = NULL;
    store_node_t *sn = xcalloc(1, sizeof *sn);
    sn->cfg = *c;
    sn->cfg.store.path = sn->cfg.store_path;
    sn->cfg.store.replicated = c->repl.nmembers > 0;
    sn->zctx = zctx;
    sn->efd = -1;
    sn->ses_scratch = xcalloc(STORE_SESSIONS_CAP, sizeof *sn->ses_scratch);
    char serr[STORE_ERR_LEN];
    if (store_open(&sn->cfg.store, &sn->store, serr) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot open store: %s", serr);
        free(sn->ses_scratch);
        free(sn);
        return -1;
    }
    store_info_t info;
    store_get_info(sn->store, &info);
    sn->pub_seq = info.last_seq;
    sn->epoch = info.epoch;
    sn->leading = c->repl.nmembers == 0; /* replicated: once the log says so (s_role) */
    stats_hist_init_latency(&sn->ack_hist);
    proto_buf_init(&sn->buf);
    sn->next_hugz = util_mono_ms();
    zloop_hooks_t hooks = {.arg = sn, .turn = s_turn};
    sn->loop = zloop_new(&hooks, 60000);
    if (store_queue_init(sn) < 0) {
        snprintf(err, CFG_ERR_LEN, "eventfd: %s", strerror(errno));
        store_node_destroy(&sn);
        return -1;
    }
    int rc = s_bind_all(sn, err);
    if (rc == 0 && c->repl.nmembers && store_repl_start(sn, err) < 0)
        rc = -1;
    if (rc == 0 && s_add_sources(sn) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot poll the store-node's sockets");
        rc = -1;
    }
    if (rc == 0 && store_writer_start(sn) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot start the writer thread");
        rc = -1;
    }
    if (rc < 0) {
        store_node_destroy(&sn);
        return rc;
    }
    *out = sn;
    return 0;
}


/* Replicated, stopping: give the entries already proposed a moment to commit and be answered
 * (at most 2 s), so a graceful stop loses no acknowledgement it could still give. */
static void s_repl_drain(store_node_t *sn)
{
    uint64_t until = util_mono_ms() + 2000;
    for (;;) {
        repl_status_t st;
        repl_status(store_repl_member(sn), &st);
        if (st.outstanding == 0 || util_mono_ms() >= until)
            break;
        struct pollfd pfd = {.fd = sn->efd, .events = POLLIN};
        poll(&pfd, 1, 10);
        s_drain_completions(sn);
    }
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
        store_writer_stop(sn);
        s_drain_completions(sn);
        if (sn->repl)
            s_repl_drain(sn);
        s_publish_hugz(sn);
    }
    store_repl_stop(sn); /* what is still out ends EUNAVAIL (outcome unknown) */
    if (sn->efd >= 0)
        s_drain_completions(sn);
    for (int i = 0; i < sn->nrouters; i++)
        if (sn->routers[i])
            zmq_close(sn->routers[i]);
    for (int i = 0; i < sn->npubs; i++)
        if (sn->pubs[i])
            zmq_close(sn->pubs[i]);
    curve_zap_destroy(&sn->zap);
    store_close(&sn->store);
    store_queue_fini(sn);
    zloop_destroy(&sn->loop);
    proto_buf_fini(&sn->buf);
    for (int i = 0; i < ACKBOXES; i++)
        proto_batch_fini(&sn->acks[i].batch);
    free(sn->ses_scratch);
    free(sn);
    *np = NULL;
}

int store_node_turn(store_node_t *sn, const volatile sig_atomic_t *stop)
{
    int rc = zloop_turn(sn->loop, stop);
    return sn->failed ? -1 : rc;
}

int store_node_run(store_node_t *sn, const volatile sig_atomic_t *stop)
{
    int rc = zloop_run(sn->loop, stop);
    return sn->failed ? -1 : rc;
}

const char *store_node_failed(store_node_t *sn)
{
    return store_repl_failed(sn);
}
