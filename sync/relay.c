/* relay.c -- the sync relay: a leaf region's one link to the center.
 *
 *   region side (bound)                          center side (connected, optionally CurveZMQ)
 *   ROUTER RELAY_CMD_ENDPOINT  <- cache-nodes    DEALER -> CENTER_ENDPOINT (tcp://host:P)
 *   PUB    RELAY_PUB_ENDPOINT  -> cache-nodes    sync client: SUB tcp://host:P+1 + DEALER (catch-up)
 *
 * To the region's cache-nodes the relay looks like a store-node: same commands, same stream.
 *
 * - Commands (GET, MGET, PUT, TOUCH, DEL) are forwarded upstream with the relay's own request id
 *   (the frame is copied with only its id rewritten) and answered back with the caller's id. While
 *   the link is down they are answered EUNAVAIL at once (HTTP 503 quickly); a forwarded command
 *   that misses its deadline is answered ETIMEOUT.
 * - The center's change stream is followed with the same sync client a cache-node uses (subscribe,
 *   catch up, gap detection, resync), and every change applied is re-published to the region with
 *   contiguous ranges, so the region's caches see exactly one ordered stream.
 * - A window of recent CHANGES frames (RELAY_WINDOW_BYTES) answers the region's catch-ups without
 *   crossing the link; a catch-up the window cannot answer is forwarded to the center.
 * - Heartbeats go both ways: the relay publishes HUGZ every second with the last relayed sequence,
 *   flagged UPSTREAM_DOWN while the link to the center is down (the caches then serve what they
 *   hold, marked stale); the center's HUGZ and pings tell the relay whether the link is up.
 *   ZeroMQ reconnects with backoff (100 ms .. 5 s) and ZMTP heartbeats detect dead TCP peers.
 *
 * A replicated center (CENTER_ENDPOINT lists every member; docs/REPLICATION.md): one DEALER per
 * member, commands to the one that leads (sync/leader.h) -- the member the stream's heartbeats
 * name (when they name another), or the leader a follower's ENOTLEADER answer names (the refused
 * command, never applied, is sent there once). When the leader changes, what was forwarded to
 * the old one is sent again to the new one when that cannot apply it twice (a read, or a write
 * with a command id: the center applies an id once), else answered EUNAVAIL (outcome unknown).
 *
 * One thread, one ZMQ_FD poll loop (common/zloop.h): the center's stream first, then the center's
 * answers, then the region's commands. The state is a relay_t (relay.h); sync/relay_main.c is the
 * process around it.
 */
#include "relay.h"
#include "cfg.h"
#include "cli.h"
#include "curve.h"
#include "dispatch.h"
#include "idtab.h"
#include "leader.h"
#include "log.h"
#include "procstat.h"
#include "proto.h"
#include "seqwin.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zloop.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANGES_PER_MSG 512
#define CATCHUP_MAX 2000
#define RETRIES_MAX 4 /* times one command may be sent again to another member of the center */
#define MEMBER_NONE UINT8_MAX /* pending.member of a command in flight to no member (refused, being re-routed) */

/* A command forwarded to the center (or our own STATS poll), waiting for its answer. */
typedef struct pending {
    idtab_link_t link;             /* by the relay's request id */
    struct pending *tnext, *tprev; /* deadline order: every command has the same timeout */
    uint64_t client_rid, deadline, sent_us;
    uint8_t type;
    uint8_t ident[DISPATCH_IDENT_MAX];
    uint8_t ident_len;
    bool internal; /* our own STATS to the center */
    /* a replicated center: the member it went to, and the frame to send it again to a new leader */
    uint8_t member, retries;
    bool retry_safe; /* a read, or a write with a command id */
    char *bytes;
    size_t blen;
} pending_t;

struct relay {
    relay_config_t cfg;

    void *zctx, *router, *pub, *up; /* up: the DEALER of the member commands go to */
    void *ups[PROTO_MEMBERS_MAX];
    leader_t center;                /* the center's command endpoints (one per member) */
    uint32_t stream_member;         /* the member the sync client followed when last looked at (1..n) */
    sync_client_t *sync;
    zloop_t *loop;

    /* forwarded commands */
    idtab_t pending;
    pending_t *t_head, *t_tail;
    uint64_t next_rid;

    /* the relayed stream */
    uint64_t epoch, pub_seq;
    proto_change_t *pend;
    size_t npend, cpend;
    bool reset_seen;
    seqwin_t window; /* CHANGES frames as published: catch-ups after its start are answered here */

    bool link_up;
    uint64_t link_changed_ms, center_rtt_us, next_stats_ms, next_hugz_ms;
    bool stats_out;
    stats_list_t center_stats;
    proto_buf_t buf, tmp;

    uint64_t forwarded, unavailable, timeouts, malformed, local_catchups, fwd_catchups, relayed_changes;
    uint64_t link_downs, center_retries;
};

static void s_follow(relay_t *r, uint64_t member, uint64_t term, const char *why);

/* ==== pending table ========================================================================== */

static void s_pfree(pending_t *p)
{
    free(p->bytes);
    free(p);
}

static void s_padd(relay_t *r, pending_t *p)
{
    idtab_add(&r->pending, &p->link);
    p->tprev = r->t_tail;
    p->tnext = NULL;
    if (r->t_tail)
        r->t_tail->tnext = p;
    else
        r->t_head = p;
    r->t_tail = p;
}

static pending_t *s_pfind(relay_t *r, uint64_t rid)
{
    idtab_link_t *l = idtab_find(&r->pending, rid);
    return l ? IDTAB_ENTRY(l, pending_t, link) : NULL;
}

static pending_t *s_ptake(relay_t *r, uint64_t rid)
{
    idtab_link_t *l = idtab_take(&r->pending, rid);
    if (!l)
        return NULL;
    pending_t *p = IDTAB_ENTRY(l, pending_t, link);
    if (p->tprev)
        p->tprev->tnext = p->tnext;
    else
        r->t_head = p->tnext;
    if (p->tnext)
        p->tnext->tprev = p->tprev;
    else
        r->t_tail = p->tprev;
    return p;
}

/* ==== region side ============================================================================ */

static void s_to_region(relay_t *r, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
    zloop_sent(r->loop, r->router);
    if (zu_send_owned(r->router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply to a cache-node dropped: %s", zmq_strerror(errno));
}

static void s_status(relay_t *r, const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status, const char *msg)
{
    proto_buf_reset(&r->buf);
    proto_enc_reply(&r->buf, rid, status, 0, NULL, 0, msg, 0);
    s_to_region(r, ident, ident_len, &r->buf);
}

static void s_publish(relay_t *r, char topic, const proto_buf_t *b)
{
    if (zmq_send(r->pub, &topic, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 || zmq_send(r->pub, b->data, b->len, ZMQ_DONTWAIT) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "region stream message dropped at the publisher");
}

static void s_hugz(relay_t *r)
{
    proto_buf_reset(&r->tmp);
    proto_enc_hugz_flags(&r->tmp, r->epoch, r->pub_seq, util_now_us(), r->link_up ? 0 : PROTO_HUGZ_F_UPSTREAM_DOWN);
    s_publish(r, PROTO_TOPIC_HUGZ, &r->tmp);
    r->next_hugz_ms = util_mono_ms() + 1000;
}

/* Publish what the sync client applied since the last call, in order, with contiguous ranges.
 * After a snapshot the region starts over from the snapshot's base, not from the client's
 * sequence now: the live changes the client buffered during that catch-up were replayed in the
 * same call (they are in r->pend, after the base), and the first range must start right after it. */
static void s_flush_changes(relay_t *r)
{
    if (r->reset_seen) {
        r->reset_seen = false;
        sync_stats_t st;
        sync_client_get_stats(r->sync, &st);
        r->epoch = st.epoch;
        r->pub_seq = st.snapshot_seq;
        seqwin_clear(&r->window, r->pub_seq);
        s_hugz(r);
    }
    for (size_t off = 0; off < r->npend; off += CHANGES_PER_MSG) {
        size_t n = MIN(CHANGES_PER_MSG, r->npend - off);
        uint64_t first = r->pub_seq + 1, last = r->pend[off + n - 1].rec.version;
        proto_enc_t e;
        proto_buf_reset(&r->tmp);
        proto_enc_init(&e, &r->tmp);
        proto_enc_changes_begin(&e, r->epoch, first, last, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            proto_enc_change(&e, &r->pend[off + i]);
        s_publish(r, PROTO_TOPIC_CHANGES, &r->tmp);
        seqwin_add(&r->window, first, last, PROTO_CHANGES, r->tmp.data, r->tmp.len);
        r->pub_seq = last;
        r->relayed_changes += n;
    }
    r->npend = 0;
}

static void on_apply(void *ctx, const proto_change_t *c)
{
    relay_t *r = ctx;
    if (r->npend == r->cpend) {
        r->cpend = r->cpend ? r->cpend * 2 : 1024;
        r->pend = xrealloc(r->pend, r->cpend * sizeof *r->pend);
    }
    r->pend[r->npend++] = *c;
}

static void on_reset(void *ctx)
{
    relay_t *r = ctx;
    r->npend = 0;
    r->reset_seen = true;
}

static void on_state(void *ctx, int state)
{
    relay_t *r = ctx;
    bool up = state == SYNC_LIVE;
    if (up != r->link_up) {
        r->link_up = up;
        r->link_changed_ms = util_mono_ms();
        if (!up)
            r->link_downs++;
        LOG(up ? LOG_NOTICE : LOG_WARN, "link to the center %s (%s)", up ? "up" : "down", sync_state_name(state));
        s_hugz(r);
    }
}

/* Answer a catch-up from the window, or return false if the window cannot. */
static bool s_catchup_local(relay_t *r, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    if (!r->epoch || m->epoch != r->epoch || m->seq < seqwin_start(&r->window) || m->seq > r->pub_seq ||
        (m->flags & PROTO_CATCHUP_F_SNAP_CONT))
        return false;
    uint32_t max = (uint32_t)MIN(MAX(m->max_items, 1), CATCHUP_MAX);
    proto_change_t *out = xmalloc(max * sizeof *out);
    uint32_t n = 0;
    uint64_t through = r->pub_seq;
    bool done = true;
    for (const seqwin_item_t *f = seqwin_after(&r->window, m->seq); f && done; f = f->next) {
        proto_msg_t fm;
        if (proto_decode(f->data, f->len, &fm) != PROTO_DEC_OK) {
            proto_msg_fini(&fm);
            free(out);
            return false;
        }
        for (uint32_t i = 0; i < fm.n; i++) {
            if (fm.changes[i].rec.version <= m->seq)
                continue;
            if (n == max) {
                done = false;
                through = out[n - 1].rec.version;
                break;
            }
            out[n++] = fm.changes[i];
        }
        proto_msg_fini(&fm);
    }
    proto_enc_t e;
    proto_buf_reset(&r->buf);
    proto_enc_init(&e, &r->buf);
    proto_enc_catchup_reply_begin(&e, m->rid, PROTO_OK, r->epoch, PROTO_CATCHUP_INCREMENTAL, through, done, n);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_change(&e, &out[i]);
    proto_enc_catchup_reply_end(&e, "", 0);
    free(out);
    s_to_region(r, ident, ident_len, &r->buf);
    r->local_catchups++;
    return true;
}

static void s_collect_stats(relay_t *r, stats_list_t *l, bool full)
{
    sync_stats_t st;
    sync_client_get_stats(r->sync, &st);
    stats_add(l, "relay_link_up", r->link_up);
    stats_add(l, "relay_epoch", r->epoch);
    stats_add(l, "relay_sequence", r->pub_seq);
    stats_add(l, "relay_center_sequence", st.seq);
    stats_add(l, "relay_lag_seconds:us", st.lag_ms * 1000);
    stats_add(l, "store_epoch", r->epoch);
    stats_add(l, "store_sequence", r->pub_seq);
    if (!full)
        return;
    stats_add(l, "relay_sync_state", (uint64_t)st.state);
    stats_add(l, "relay_gaps_total", st.gaps);
    stats_add(l, "relay_resyncs_total", st.resyncs);
    stats_add(l, "relay_snapshots_total", st.snapshots);
    stats_add(l, "relay_silences_total", st.silences);
    stats_add(l, "relay_link_downs_total", r->link_downs);
    stats_add(l, "relay_changes_total", r->relayed_changes);
    stats_add(l, "relay_window_bytes", seqwin_bytes(&r->window));
    stats_add(l, "relay_window_start", seqwin_start(&r->window));
    stats_add(l, "relay_forwarded_total", r->forwarded);
    stats_add(l, "relay_unavailable_total", r->unavailable);
    stats_add(l, "relay_timeouts_total", r->timeouts);
    stats_add(l, "relay_malformed_total", r->malformed + st.malformed);
    stats_add(l, "relay_local_catchups_total", r->local_catchups);
    stats_add(l, "relay_forwarded_catchups_total", r->fwd_catchups);
    stats_add(l, "relay_center_rtt_seconds:us", r->center_rtt_us);
    stats_add(l, "relay_center_member", (uint64_t)r->center.cur + 1);
    stats_add(l, "relay_center_leader_switches_total", r->center.switches);
    stats_add(l, "relay_center_retries_total", r->center_retries);
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, "proc=\"sync-relay\"", &ps);
    stats_add_build_info(l, "proc=\"sync-relay\"", cli_version(), cli_commit());
    /* The center's store numbers, as last polled (store_epoch/sequence above are the region's). */
    for (uint32_t i = 0; i < r->center_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, r->center_stats.v[i].name.p, r->center_stats.v[i].name.len);
        name[r->center_stats.v[i].name.len] = '\0';
        if (strcmp(name, "store_epoch") && strcmp(name, "store_sequence"))
            stats_add(l, name, r->center_stats.v[i].value);
    }
}

static void s_forward(relay_t *r, const dispatch_in_t *in, const proto_msg_t *m)
{
    if (!r->link_up && m->type != PROTO_CATCHUP) {
        r->unavailable++;
        s_status(r, in->ident, in->ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* Its sender gave up already (we were stalled): forwarding it could undo a later write. */
        r->timeouts++;
        s_status(r, in->ident, in->ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    pending_t *p = xcalloc(1, sizeof *p);
    p->link.id = r->next_rid++;
    p->client_rid = m->rid;
    p->type = m->type;
    memcpy(p->ident, in->ident, in->ident_len);
    p->ident_len = (uint8_t)in->ident_len;
    p->deadline = util_mono_ms() + r->cfg.req_timeout_ms;
    p->sent_us = util_mono_us();
    zloop_sent(r->loop, r->up);
    if (proto_rewrite_rid(in->raw, in->raw_len, p->link.id, &r->tmp) < 0 ||
        zu_send(r->up, NULL, 0, r->tmp.data, r->tmp.len) < 0) {
        s_pfree(p);
        r->unavailable++;
        s_status(r, in->ident, in->ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    p->member = (uint8_t)r->center.cur;
    if (leader_replicated(&r->center)) {
        p->retry_safe = m->type == PROTO_GET || m->type == PROTO_MGET || m->type == PROTO_SESSIONS ||
                        m->type == PROTO_CATCHUP || m->has_cmd_id;
        p->bytes = xmalloc(r->tmp.len);
        memcpy(p->bytes, r->tmp.data, r->tmp.len);
        p->blen = r->tmp.len;
    }
    r->forwarded++;
    if (m->type == PROTO_CATCHUP)
        r->fwd_catchups++;
    s_padd(r, p);
}

/* GET, MGET, PUT, TOUCH, DEL, LEASE, SESSIONS: the center's business. (A BATCH is forwarded part by part; the
 * center batches its answers per peer.) */
static void on_command(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_forward(ctx, in, m);
}

static void on_catchup(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    relay_t *r = ctx;
    if (s_catchup_local(r, in->ident, in->ident_len, m))
        return;
    if (!r->link_up && r->epoch && m->epoch != r->epoch && (m->flags & PROTO_CATCHUP_F_NO_DATA)) {
        /* Another epoch than ours and no data wanted: the answer is a flush to our state. */
        proto_enc_t e;
        proto_buf_reset(&r->buf);
        proto_enc_init(&e, &r->buf);
        proto_enc_catchup_reply_begin(&e, m->rid, PROTO_OK, r->epoch, PROTO_CATCHUP_SNAPSHOT, r->pub_seq, true, 0);
        proto_enc_catchup_reply_end(&e, "", 0);
        s_to_region(r, in->ident, in->ident_len, &r->buf);
    } else if (r->link_up) {
        s_forward(r, in, m);
    } else {
        r->unavailable++;
        s_status(r, in->ident, in->ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
    }
}

static void on_stats(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    relay_t *r = ctx;
    stats_list_t l;
    stats_list_init(&l);
    s_collect_stats(r, &l, m->type == PROTO_STATS);
    proto_buf_reset(&r->buf);
    proto_enc_stats(&r->buf, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    stats_list_fini(&l);
    s_to_region(r, in->ident, in->ident_len, &r->buf);
}

static void on_region_unexpected(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    relay_t *r = ctx;
    r->malformed++;
    s_status(r, in->ident, in->ident_len, m->rid, PROTO_EBADREQ, "unexpected message type");
}

static void on_region_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    relay_t *r = ctx;
    r->malformed++;
    if (has_rid)
        s_status(r, in->ident, in->ident_len, rid, PROTO_EBADREQ, why);
}

static const dispatch_t s_region = {
    .routed = true,
    .on = {[PROTO_GET] = on_command, [PROTO_MGET] = on_command, [PROTO_PUT] = on_command,
           [PROTO_TOUCH] = on_command, [PROTO_DEL] = on_command, [PROTO_LEASE] = on_command,
           [PROTO_SESSIONS] = on_command, [PROTO_CATCHUP] = on_catchup,
           [PROTO_PING] = on_stats, [PROTO_STATS] = on_stats},
    .on_other = on_region_unexpected,
    .on_malformed = on_region_malformed,
};

/* ==== center side ============================================================================ */

static void s_center_stats(relay_t *r, const proto_msg_t *m)
{
    uint64_t leading = 0, leader = 0;
    if (leader_replicated(&r->center) && stats_find(m->stats, m->n, "store_repl_leading", &leading) && !leading &&
        stats_find(m->stats, m->n, "store_repl_leader", &leader))
        s_follow(r, leader, 0, "the member we followed names it");
    stats_list_reset(&r->center_stats);
    for (uint32_t i = 0; i < m->n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, m->stats[i].name.p, m->stats[i].name.len);
        name[m->stats[i].name.len] = '\0';
        /* The store's numbers, its process_* and build info (labelled proc="store-node"). */
        if (strncmp(name, "store_", 6) == 0 || strncmp(name, "process_", 8) == 0 ||
            strncmp(name, "presence_build_info", 19) == 0)
            stats_add(&r->center_stats, name, m->stats[i].value);
    }
}

/* ==== following the leader of a replicated center ============================================== */

/* Send a forwarded command again, to the member commands go to now. Returns 0, or -1 (not sent). */
static int s_resend(relay_t *r, pending_t *p)
{
    p->retries++;
    p->member = (uint8_t)r->center.cur;
    r->center_retries++;
    zloop_sent(r->loop, r->up);
    return zu_send(r->up, NULL, 0, p->bytes, p->blen);
}

/* Commands now go to member center.cur (was: `was`): what is in flight to the old one is sent
 * again where that is safe, else answered EUNAVAIL (it may or may not have been applied). */
static void s_switched(relay_t *r, unsigned was, const char *why)
{
    r->up = r->ups[r->center.cur];
    LOG(LOG_NOTICE, "center link: commands now go to member %u (%s)", r->center.cur + 1, why);
    pending_t *next;
    for (pending_t *p = r->t_head; p; p = next) {
        next = p->tnext;
        if (p->internal || p->member != was)
            continue;
        if (p->retry_safe && p->bytes && p->retries < RETRIES_MAX && s_resend(r, p) == 0)
            continue;
        p = s_ptake(r, p->link.id);
        r->unavailable++;
        s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EUNAVAIL,
                 "the center's leader changed: outcome unknown");
        s_pfree(p);
    }
}

static void s_follow(relay_t *r, uint64_t member, uint64_t term, const char *why)
{
    unsigned was = r->center.cur;
    if (leader_hint(&r->center, member, term))
        s_switched(r, was, why);
}

static unsigned s_member_of(const relay_t *r, const void *sock)
{
    for (unsigned i = 0; i < r->center.n; i++)
        if (r->ups[i] == sock)
            return i;
    return 0;
}

/* Any answer from the center: back to whoever asked, under their request id. A replicated
 * center's follower refused it (ENOTLEADER, not applied): to the leader it names instead. */
static void on_center_answer(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    relay_t *r = ctx;
    pending_t *p = s_pfind(r, m->rid);
    if (!p)
        return; /* answered already (timeout) */
    unsigned from = s_member_of(r, in->sock);
    if (leader_replicated(&r->center) && !p->internal && m->status == PROTO_ENOTLEADER) {
        if (p->member != from)
            return; /* a late refusal of what was sent again elsewhere */
        /* Refused, so no longer in flight to `from`: the switch the hint may cause must leave p
         * to this function (it would send p again, or answer and free it under our feet). */
        p->member = MEMBER_NONE;
        if (m->seq && m->seq - 1 != from)
            s_follow(r, m->seq, 0, "a follower named it");
        if (r->center.cur != from && p->bytes && p->retries < RETRIES_MAX && s_resend(r, p) == 0)
            return;
    }
    p = s_ptake(r, m->rid);
    r->center_rtt_us = util_mono_us() - p->sent_us;
    if (p->internal) {
        r->stats_out = false;
        if (m->type == PROTO_STATS_REPLY)
            s_center_stats(r, m);
    } else if (proto_rewrite_rid(in->raw, in->raw_len, p->client_rid, &r->buf) < 0) {
        r->malformed++;
        s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "malformed answer from the center");
    } else {
        s_to_region(r, p->ident, p->ident_len, &r->buf);
    }
    s_pfree(p);
}

/* An answer that does not decode: the region trusts us no more than we trust the center, so the
 * command it answers (if its header names one we wait for) gets EINTERNAL instead. */
static void on_center_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    relay_t *r = ctx;
    if (!has_rid) {
        r->malformed++;
        return;
    }
    pending_t *p = s_ptake(r, rid);
    if (!p)
        return; /* answered already (timeout) */
    r->center_rtt_us = util_mono_us() - p->sent_us;
    if (p->internal) {
        r->stats_out = false;
    } else {
        r->malformed++;
        s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "malformed answer from the center");
    }
    s_pfree(p);
}

static const dispatch_t s_center = {
    .on_other = on_center_answer,
    .on_malformed = on_center_malformed,
};

static void s_poll_center(relay_t *r, uint64_t now)
{
    if (now < r->next_stats_ms || r->stats_out || !r->link_up)
        return;
    r->next_stats_ms = now + 1000;
    pending_t *p = xcalloc(1, sizeof *p);
    p->link.id = r->next_rid++;
    p->internal = true;
    p->deadline = now + r->cfg.req_timeout_ms;
    p->sent_us = util_mono_us();
    proto_buf_reset(&r->tmp);
    proto_enc_simple(&r->tmp, PROTO_STATS, p->link.id);
    zloop_sent(r->loop, r->up);
    if (zu_send(r->up, NULL, 0, r->tmp.data, r->tmp.len) < 0) {
        s_pfree(p);
        return;
    }
    r->stats_out = true;
    s_padd(r, p);
}

static void s_expire(relay_t *r, uint64_t now)
{
    while (r->t_head && r->t_head->deadline <= now) {
        pending_t *p = s_ptake(r, r->t_head->link.id);
        if (p->internal) {
            r->stats_out = false;
        } else {
            r->timeouts++;
            s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_ETIMEOUT, "center timed out");
        }
        s_pfree(p);
    }
}


/* ==== the loop =============================================================================== */

/* Timers: the center's stream, deadlines of forwarded commands, the stats poll, our heartbeat. */
static uint64_t s_turn(void *arg, uint64_t now)
{
    relay_t *r = arg;
    uint64_t next = sync_client_tick(r->sync, now);
    s_expire(r, now);
    s_poll_center(r, now);
    if (now >= r->next_hugz_ms)
        s_hugz(r);
    next = MIN(next, r->next_hugz_ms);
    if (r->t_head)
        next = MIN(next, r->t_head->deadline);
    if (sync_client_take_sent(r->sync)) {
        zmq_pollitem_t items[2];
        sync_client_poll_items(r->sync, items);
        zloop_sent(r->loop, items[1].socket);
    }
    return next;
}

/* The center's stream: apply (bounded), then publish what was applied to the region. */
static bool s_pump_stream(void *arg)
{
    relay_t *r = arg;
    bool more = sync_client_handle(r->sync) != 0;
    s_flush_changes(r);
    /* Only a move of the stream's member is news: followed on every turn, it would pull the
     * commands back from the leader a refusal (or a STATS answer) named, to the member that
     * refused, until the new leader's first heartbeat -- the refused command sent back there, or
     * answered "unavailable" by the switch. */
    uint32_t sm = sync_client_leader(r->sync);
    if (leader_replicated(&r->center) && sm != r->stream_member) {
        r->stream_member = sm;
        s_follow(r, sm, 0, "the center's stream comes from it");
    }
    return more;
}

static void s_on_center_frames(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_center, arg, sock, frames, n);
}

static void s_on_region_frames(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_region, arg, sock, frames, n);
}

/* ==== the relay's life ======================================================================= */

static int s_sockets(relay_t *r, char *err)
{
    const relay_config_t *c = &r->cfg;
    r->router = zu_socket(r->zctx, ZMQ_ROUTER, 200000, 200000);
    r->pub = zu_socket(r->zctx, ZMQ_PUB, 100000, 0);
    int one = 1, ivl = 100, ivl_max = 5000, hb_ivl = 1000, hb_to = 3000;
    zmq_setsockopt(r->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (leader_parse(&r->center, c->center_cmd, "CENTER_ENDPOINT", err) < 0)
        return -2;
    for (unsigned i = 0; i < r->center.n; i++) {
        void *up = r->ups[i] = zu_socket(r->zctx, ZMQ_DEALER, 100000, 100000);
        zmq_setsockopt(up, ZMQ_IMMEDIATE, &one, sizeof one);
        zmq_setsockopt(up, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(up, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        zmq_setsockopt(up, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
        zmq_setsockopt(up, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof hb_to);
        if (c->curve && curve_client(up, c->srv_pub, c->cli_pub, c->cli_sec, err) < 0)
            return -2;
    }
    r->up = r->ups[0];
    if (zmq_bind(r->router, c->cmd_ep) < 0 || zmq_bind(r->pub, c->pub_ep) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s / %s: %s", c->cmd_ep, c->pub_ep, zmq_strerror(errno));
        return -1;
    }
    for (unsigned i = 0; i < r->center.n; i++) {
        if (zmq_connect(r->ups[i], r->center.ep[i]) < 0) {
            snprintf(err, CFG_ERR_LEN, "connect %s: %s", r->center.ep[i], zmq_strerror(errno));
            return -1;
        }
    }
    sync_config_t sc = {.pub_ep = c->center_pub, .cmd_ep = c->center_cmd, .heartbeat_limit_ms = c->hb_limit_ms,
                        .request_timeout_ms = c->req_timeout_ms};
    if (c->curve) {
        sc.curve_server_key = c->srv_pub;
        sc.curve_public_key = c->cli_pub;
        sc.curve_secret_key = c->cli_sec;
    }
    sync_handler_t sh = {.ctx = r, .apply = on_apply, .reset = on_reset, .state = on_state};
    r->sync = sync_client_new(r->zctx, &sc, &sh, err);
    if (!r->sync)
        return -1;
    r->stream_member = sync_client_leader(r->sync); /* member 1, as r->center.cur */
    /* The stream first (changes are relayed before answers that may depend on them), then the
     * center's answers, then the region's commands. */
    zmq_pollitem_t items[2];
    sync_client_poll_items(r->sync, items);
    void *socks[2] = {items[0].socket, items[1].socket};
    int rc = zloop_add_drainer(r->loop, socks, 2, s_pump_stream, r);
    for (unsigned i = 0; i < r->center.n && rc == 0; i++)
        rc = zloop_add_socket(r->loop, r->ups[i], s_on_center_frames, r);
    if (rc < 0 || zloop_add_socket(r->loop, r->router, s_on_region_frames, r) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot poll the relay's sockets");
        return -1;
    }
    return 0;
}

int relay_new(void *zctx, const relay_config_t *c, relay_t **out, char *err)
{
    relay_t *r = xcalloc(1, sizeof *r);
    r->cfg = *c;
    r->zctx = zctx;
    proto_buf_init(&r->buf);
    proto_buf_init(&r->tmp);
    stats_list_init(&r->center_stats);
    idtab_init(&r->pending);
    seqwin_init(&r->window, c->window_max, 0);
    r->next_rid = 1;
    zloop_hooks_t hooks = {.arg = r, .turn = s_turn};
    r->loop = zloop_new(&hooks, 1000);
    int rc = s_sockets(r, err);
    if (rc < 0)
        relay_destroy(&r);
    *out = r;
    return rc;
}

void relay_destroy(relay_t **rp)
{
    relay_t *r = *rp;
    if (!r)
        return;
    while (r->t_head) {
        pending_t *p = s_ptake(r, r->t_head->link.id);
        if (!p->internal)
            s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EUNAVAIL, "relay stopping");
        s_pfree(p);
    }
    sync_client_destroy(&r->sync);
    if (r->router)
        zmq_close(r->router);
    if (r->pub)
        zmq_close(r->pub);
    for (unsigned i = 0; i < PROTO_MEMBERS_MAX; i++)
        if (r->ups[i])
            zmq_close(r->ups[i]);
    zloop_destroy(&r->loop);
    seqwin_fini(&r->window);
    idtab_fini(&r->pending);
    free(r->pend);
    stats_list_fini(&r->center_stats);
    proto_buf_fini(&r->buf);
    proto_buf_fini(&r->tmp);
    free(r);
    *rp = NULL;
}

int relay_turn(relay_t *r, const volatile sig_atomic_t *stop)
{
    return zloop_turn(r->loop, stop);
}

int relay_run(relay_t *r, const volatile sig_atomic_t *stop)
{
    return zloop_run(r->loop, stop);
}
