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
 * One thread, one zmq_poll loop.
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "curve.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDENT 255
#define CHANGES_PER_MSG 512
#define CATCHUP_MAX 2000

typedef struct pending {
    struct pending *hnext, *tnext, *tprev;
    uint64_t rid, client_rid, deadline, sent_us;
    uint8_t type;
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    bool internal; /* our own STATS/PING to the center */
} pending_t;

typedef struct wframe {
    struct wframe *next;
    uint64_t first, last;
    size_t len;
    char data[];
} wframe_t;

static struct {
    char data_dir[400], cmd_ep[512], pub_ep[512], center[512], center_cmd[600], center_pub[600];
    uint64_t window_max, req_timeout_ms, hb_limit_ms;
    char srv_pub[41], cli_pub[41], cli_sec[41];
    bool curve;

    void *zctx, *router, *pub, *up;
    sync_client_t *sync;

    /* forwarded commands */
    pending_t **ptab;
    size_t psize, pcount;
    pending_t *t_head, *t_tail;
    uint64_t next_rid;

    /* the relayed stream */
    uint64_t epoch, pub_seq;
    proto_change_t *pend;
    size_t npend, cpend;
    bool reset_seen;
    wframe_t *w_head, *w_tail;
    size_t w_bytes;
    uint64_t w_start; /* catch-ups from after_seq >= w_start are answered here */

    bool link_up;
    uint64_t link_changed_ms, center_rtt_us, next_stats_ms, next_hugz_ms;
    bool stats_out;
    stats_list_t center_stats;
    proto_buf_t buf, tmp;

    uint64_t forwarded, unavailable, timeouts, malformed, local_catchups, fwd_catchups, relayed_changes;
    uint64_t link_downs;
} R;

static volatile sig_atomic_t s_stop;

static void on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* ==== pending table ========================================================================== */

static void s_padd(pending_t *p)
{
    if (R.pcount + 1 > R.psize / 2) {
        size_t ns = R.psize ? R.psize * 2 : 1024;
        pending_t **nt = xcalloc(ns, sizeof *nt);
        for (size_t i = 0; i < R.psize; i++)
            for (pending_t *x = R.ptab[i], *n; x; x = n) {
                n = x->hnext;
                size_t b = util_mix64(x->rid) & (ns - 1);
                x->hnext = nt[b];
                nt[b] = x;
            }
        free(R.ptab);
        R.ptab = nt;
        R.psize = ns;
    }
    size_t b = util_mix64(p->rid) & (R.psize - 1);
    p->hnext = R.ptab[b];
    R.ptab[b] = p;
    R.pcount++;
    p->tprev = R.t_tail;
    p->tnext = NULL;
    if (R.t_tail)
        R.t_tail->tnext = p;
    else
        R.t_head = p;
    R.t_tail = p;
}

static pending_t *s_ptake(uint64_t rid)
{
    if (!R.psize)
        return NULL;
    for (pending_t **pp = &R.ptab[util_mix64(rid) & (R.psize - 1)]; *pp; pp = &(*pp)->hnext) {
        pending_t *p = *pp;
        if (p->rid != rid)
            continue;
        *pp = p->hnext;
        R.pcount--;
        if (p->tprev)
            p->tprev->tnext = p->tnext;
        else
            R.t_head = p->tnext;
        if (p->tnext)
            p->tnext->tprev = p->tprev;
        else
            R.t_tail = p->tprev;
        return p;
    }
    return NULL;
}

/* ==== region side ============================================================================ */

static void s_to_region(const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
    if (zu_send_owned(R.router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply to a cache-node dropped: %s", zmq_strerror(errno));
}

static void s_status(const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status, const char *msg)
{
    proto_buf_reset(&R.buf);
    proto_enc_reply(&R.buf, rid, status, 0, NULL, 0, msg, 0);
    s_to_region(ident, ident_len, &R.buf);
}

static void s_publish(char topic, const proto_buf_t *b)
{
    if (zmq_send(R.pub, &topic, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 || zmq_send(R.pub, b->data, b->len, ZMQ_DONTWAIT) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "region stream message dropped at the publisher");
}

static void s_hugz(void)
{
    proto_buf_reset(&R.tmp);
    proto_enc_hugz_flags(&R.tmp, R.epoch, R.pub_seq, util_now_us(), R.link_up ? 0 : PROTO_HUGZ_F_UPSTREAM_DOWN);
    s_publish(PROTO_TOPIC_HUGZ, &R.tmp);
    R.next_hugz_ms = util_mono_ms() + 1000;
}

static void s_window_clear(void)
{
    while (R.w_head) {
        wframe_t *f = R.w_head;
        R.w_head = f->next;
        free(f);
    }
    R.w_tail = NULL;
    R.w_bytes = 0;
    R.w_start = R.pub_seq;
}

static void s_window_add(const proto_buf_t *b, uint64_t first, uint64_t last)
{
    wframe_t *f = xmalloc(sizeof *f + b->len);
    f->next = NULL;
    f->first = first;
    f->last = last;
    f->len = b->len;
    memcpy(f->data, b->data, b->len);
    if (R.w_tail)
        R.w_tail->next = f;
    else
        R.w_head = f;
    R.w_tail = f;
    R.w_bytes += b->len;
    while (R.w_bytes > R.window_max && R.w_head && R.w_head != R.w_tail) {
        wframe_t *old = R.w_head;
        R.w_head = old->next;
        R.w_bytes -= old->len;
        R.w_start = old->last;
        free(old);
    }
}

/* Publish what the sync client applied since the last call, in order, with contiguous ranges. */
static void s_flush_changes(void)
{
    if (R.reset_seen) {
        /* A snapshot from the center: the region starts over from the center's sequence. */
        R.reset_seen = false;
        sync_stats_t st;
        sync_client_get_stats(R.sync, &st);
        R.epoch = st.epoch;
        R.pub_seq = st.seq;
        s_window_clear();
        s_hugz();
    }
    for (size_t off = 0; off < R.npend; off += CHANGES_PER_MSG) {
        size_t n = MIN(CHANGES_PER_MSG, R.npend - off);
        uint64_t first = R.pub_seq + 1, last = R.pend[off + n - 1].rec.version;
        proto_enc_t e;
        proto_buf_reset(&R.tmp);
        proto_enc_init(&e, &R.tmp);
        proto_enc_changes_begin(&e, R.epoch, first, last, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            proto_enc_change(&e, &R.pend[off + i]);
        s_publish(PROTO_TOPIC_CHANGES, &R.tmp);
        s_window_add(&R.tmp, first, last);
        R.pub_seq = last;
        R.relayed_changes += n;
    }
    R.npend = 0;
}

static void on_apply(void *ctx, const proto_change_t *c)
{
    (void)ctx;
    if (R.npend == R.cpend) {
        R.cpend = R.cpend ? R.cpend * 2 : 1024;
        R.pend = xrealloc(R.pend, R.cpend * sizeof *R.pend);
    }
    R.pend[R.npend++] = *c;
}

static void on_reset(void *ctx)
{
    (void)ctx;
    R.npend = 0;
    R.reset_seen = true;
}

static void on_state(void *ctx, int state)
{
    (void)ctx;
    bool up = state == SYNC_LIVE;
    if (up != R.link_up) {
        R.link_up = up;
        R.link_changed_ms = util_mono_ms();
        if (!up)
            R.link_downs++;
        LOG(up ? LOG_NOTICE : LOG_WARN, "link to the center %s (%s)", up ? "up" : "down", sync_state_name(state));
        s_hugz();
    }
}

/* Answer a catch-up from the window, or return false if the window cannot. */
static bool s_catchup_local(const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    if (!R.epoch || m->epoch != R.epoch || m->seq < R.w_start || m->seq > R.pub_seq ||
        (m->flags & PROTO_CATCHUP_F_SNAP_CONT))
        return false;
    uint32_t max = (uint32_t)MIN(MAX(m->max_items, 1), CATCHUP_MAX);
    proto_change_t *out = xmalloc(max * sizeof *out);
    uint32_t n = 0;
    uint64_t through = R.pub_seq;
    bool done = true;
    for (wframe_t *f = R.w_head; f && done; f = f->next) {
        if (f->last <= m->seq)
            continue;
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
    proto_buf_reset(&R.buf);
    proto_enc_init(&e, &R.buf);
    proto_enc_catchup_reply_begin(&e, m->rid, PROTO_OK, R.epoch, PROTO_CATCHUP_INCREMENTAL, through, done, n);
    for (uint32_t i = 0; i < n; i++)
        proto_enc_change(&e, &out[i]);
    proto_enc_catchup_reply_end(&e, "", 0);
    free(out);
    s_to_region(ident, ident_len, &R.buf);
    R.local_catchups++;
    return true;
}

static void s_collect_stats(stats_list_t *l, bool full)
{
    sync_stats_t st;
    sync_client_get_stats(R.sync, &st);
    stats_add(l, "relay_link_up", R.link_up);
    stats_add(l, "relay_epoch", R.epoch);
    stats_add(l, "relay_sequence", R.pub_seq);
    stats_add(l, "relay_center_sequence", st.seq);
    stats_add(l, "relay_lag_seconds:us", st.lag_ms * 1000);
    stats_add(l, "store_epoch", R.epoch);
    stats_add(l, "store_sequence", R.pub_seq);
    if (!full)
        return;
    stats_add(l, "relay_sync_state", (uint64_t)st.state);
    stats_add(l, "relay_gaps_total", st.gaps);
    stats_add(l, "relay_resyncs_total", st.resyncs);
    stats_add(l, "relay_snapshots_total", st.snapshots);
    stats_add(l, "relay_silences_total", st.silences);
    stats_add(l, "relay_link_downs_total", R.link_downs);
    stats_add(l, "relay_changes_total", R.relayed_changes);
    stats_add(l, "relay_window_bytes", R.w_bytes);
    stats_add(l, "relay_window_start", R.w_start);
    stats_add(l, "relay_forwarded_total", R.forwarded);
    stats_add(l, "relay_unavailable_total", R.unavailable);
    stats_add(l, "relay_timeouts_total", R.timeouts);
    stats_add(l, "relay_malformed_total", R.malformed + st.malformed);
    stats_add(l, "relay_local_catchups_total", R.local_catchups);
    stats_add(l, "relay_forwarded_catchups_total", R.fwd_catchups);
    stats_add(l, "relay_center_rtt_seconds:us", R.center_rtt_us);
    /* The center's store numbers, as last polled (store_epoch/sequence above are the region's). */
    for (uint32_t i = 0; i < R.center_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, R.center_stats.v[i].name.p, R.center_stats.v[i].name.len);
        name[R.center_stats.v[i].name.len] = '\0';
        if (strcmp(name, "store_epoch") && strcmp(name, "store_sequence"))
            stats_add(l, name, R.center_stats.v[i].value);
    }
}

static void s_forward(const uint8_t *ident, size_t ident_len, const void *data, size_t len, const proto_msg_t *m)
{
    if (!R.link_up && m->type != PROTO_CATCHUP) {
        R.unavailable++;
        s_status(ident, ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* Its sender gave up already (we were stalled): forwarding it could undo a later write. */
        R.timeouts++;
        s_status(ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    pending_t *p = xcalloc(1, sizeof *p);
    p->rid = R.next_rid++;
    p->client_rid = m->rid;
    p->type = m->type;
    memcpy(p->ident, ident, ident_len);
    p->ident_len = (uint8_t)ident_len;
    p->deadline = util_mono_ms() + R.req_timeout_ms;
    p->sent_us = util_mono_us();
    if (proto_rewrite_rid(data, len, p->rid, &R.tmp) < 0 || zu_send(R.up, NULL, 0, R.tmp.data, R.tmp.len) < 0) {
        free(p);
        R.unavailable++;
        s_status(ident, ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    R.forwarded++;
    if (m->type == PROTO_CATCHUP)
        R.fwd_catchups++;
    s_padd(p);
}

static void s_on_region_msg(const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested);

static void s_on_region(zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        R.malformed++;
        return;
    }
    s_on_region_msg(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                    zmq_msg_size(&frames[1]), false);
}

static void s_on_region_msg(const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        R.malformed++;
        uint8_t type;
        uint64_t rid;
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_status(ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        /* Forwarded one by one; the center batches its answers per peer. */
        for (uint32_t i = 0; i < m.n; i++)
            s_on_region_msg(ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_forward(ident, ident_len, data, len, &m);
        break;
    case PROTO_CATCHUP:
        if (!s_catchup_local(ident, ident_len, &m)) {
            if (!R.link_up && R.epoch && m.epoch != R.epoch && (m.flags & PROTO_CATCHUP_F_NO_DATA)) {
                /* Another epoch than ours and no data wanted: the answer is a flush to our state. */
                proto_enc_t e;
                proto_buf_reset(&R.buf);
                proto_enc_init(&e, &R.buf);
                proto_enc_catchup_reply_begin(&e, m.rid, PROTO_OK, R.epoch, PROTO_CATCHUP_SNAPSHOT, R.pub_seq, true, 0);
                proto_enc_catchup_reply_end(&e, "", 0);
                s_to_region(ident, ident_len, &R.buf);
            } else if (R.link_up) {
                s_forward(ident, ident_len, data, len, &m);
            } else {
                R.unavailable++;
                s_status(ident, ident_len, m.rid, PROTO_EUNAVAIL, "center unreachable");
            }
        }
        break;
    case PROTO_PING:
    case PROTO_STATS: {
        stats_list_t l;
        stats_list_init(&l);
        s_collect_stats(&l, m.type == PROTO_STATS);
        proto_buf_reset(&R.buf);
        proto_enc_stats(&R.buf, m.type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m.rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        s_to_region(ident, ident_len, &R.buf);
        break;
    }
    default:
        R.malformed++;
        s_status(ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}

/* ==== center side ============================================================================ */

static void s_on_center_msg(const void *data, size_t len, bool nested);

static void s_on_center(zmq_msg_t *frames, int n)
{
    if (n != 1) {
        R.malformed++;
        return;
    }
    s_on_center_msg(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), false);
}

static void s_on_center_msg(const void *data, size_t len, bool nested)
{
    uint8_t type;
    uint64_t rid;
    if (proto_peek_header(data, len, &type, &rid) < 0 || (nested && type == PROTO_BATCH)) {
        R.malformed++;
        return;
    }
    if (type == PROTO_BATCH) {
        proto_msg_t bm;
        if (proto_decode(data, len, &bm) == PROTO_DEC_OK)
            for (uint32_t i = 0; i < bm.n; i++)
                s_on_center_msg(bm.parts[i].p, bm.parts[i].len, true);
        else
            R.malformed++;
        proto_msg_fini(&bm);
        return;
    }
    pending_t *p = s_ptake(rid);
    if (!p)
        return; /* answered already (timeout) */
    R.center_rtt_us = util_mono_us() - p->sent_us;
    if (p->internal) {
        R.stats_out = false;
        proto_msg_t m;
        if (proto_decode(data, len, &m) == PROTO_DEC_OK && m.type == PROTO_STATS_REPLY) {
            stats_list_reset(&R.center_stats);
            for (uint32_t i = 0; i < m.n; i++) {
                char name[PROTO_STAT_NAME_MAX + 1];
                memcpy(name, m.stats[i].name.p, m.stats[i].name.len);
                name[m.stats[i].name.len] = '\0';
                if (strncmp(name, "store_", 6) == 0)
                    stats_add(&R.center_stats, name, m.stats[i].value);
            }
        }
        proto_msg_fini(&m);
        free(p);
        return;
    }
    /* Check the reply fully before passing it on: the region trusts us no more than we trust it. */
    proto_msg_t m;
    int rc = proto_decode(data, len, &m);
    proto_msg_fini(&m);
    if (rc != PROTO_DEC_OK || proto_rewrite_rid(data, len, p->client_rid, &R.buf) < 0) {
        R.malformed++;
        s_status(p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "malformed answer from the center");
    } else {
        s_to_region(p->ident, p->ident_len, &R.buf);
    }
    free(p);
}

static void s_poll_center(uint64_t now)
{
    if (now < R.next_stats_ms || R.stats_out || !R.link_up)
        return;
    R.next_stats_ms = now + 1000;
    pending_t *p = xcalloc(1, sizeof *p);
    p->rid = R.next_rid++;
    p->internal = true;
    p->deadline = now + R.req_timeout_ms;
    p->sent_us = util_mono_us();
    proto_buf_reset(&R.tmp);
    proto_enc_simple(&R.tmp, PROTO_STATS, p->rid);
    if (zu_send(R.up, NULL, 0, R.tmp.data, R.tmp.len) < 0) {
        free(p);
        return;
    }
    R.stats_out = true;
    s_padd(p);
}

static void s_expire(uint64_t now)
{
    while (R.t_head && R.t_head->deadline <= now) {
        pending_t *p = s_ptake(R.t_head->rid);
        if (p->internal) {
            R.stats_out = false;
        } else {
            R.timeouts++;
            s_status(p->ident, p->ident_len, p->client_rid, PROTO_ETIMEOUT, "center timed out");
        }
        free(p);
    }
}

/* ==== startup ================================================================================ */

static int s_config(char *err)
{
    snprintf(R.data_dir, sizeof R.data_dir, "./data");
    R.window_max = 64u << 20;
    R.req_timeout_ms = 2000;
    R.hb_limit_ms = 3000;
    if (cfg_str("DATA_DIR", R.data_dir, sizeof R.data_dir, err) < 0 ||
        cfg_str("CENTER_ENDPOINT", R.center, sizeof R.center, err) < 0 ||
        cfg_u64("RELAY_WINDOW_BYTES", 4096, 1ull << 36, &R.window_max, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &R.req_timeout_ms, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &R.hb_limit_ms, err) < 0)
        return -1;
    /* Answer before the cache-node's own deadline (it waits REQUEST_TIMEOUT_MS - 250). */
    R.req_timeout_ms = R.req_timeout_ms > 800 ? R.req_timeout_ms - 500 : R.req_timeout_ms / 2;
    snprintf(R.cmd_ep, sizeof R.cmd_ep, "ipc://%s/run/store-cmd.sock", R.data_dir);
    snprintf(R.pub_ep, sizeof R.pub_ep, "ipc://%s/run/store-pub.sock", R.data_dir);
    if (cfg_str("RELAY_CMD_ENDPOINT", R.cmd_ep, sizeof R.cmd_ep, err) < 0 ||
        cfg_str("RELAY_PUB_ENDPOINT", R.pub_ep, sizeof R.pub_ep, err) < 0)
        return -1;
    /* CENTER_ENDPOINT=tcp://host:P -> commands on P, stream on P+1. */
    const char *colon = strrchr(R.center, ':');
    char *end;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (strncmp(R.center, "tcp://", 6) != 0 || !colon || *end || port == 0 || port >= 65535) {
        snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: invalid value '%s' (want tcp://HOST:PORT)", R.center);
        return -1;
    }
    snprintf(R.center_cmd, sizeof R.center_cmd, "%s", R.center);
    snprintf(R.center_pub, sizeof R.center_pub, "%.*s:%lu", (int)(colon - R.center), R.center, port + 1);
    int a = curve_key_load("CURVE_SERVER_PUBLIC_KEY", R.srv_pub, err);
    int b = a < 0 ? -1 : curve_key_load("CURVE_PUBLIC_KEY", R.cli_pub, err);
    int c = b < 0 ? -1 : curve_key_load("CURVE_SECRET_KEY", R.cli_sec, err);
    if (a < 0 || b < 0 || c < 0)
        return -1;
    if (a + b + c != 0 && a + b + c != 3) {
        snprintf(err, CFG_ERR_LEN,
                 "CURVE_SERVER_PUBLIC_KEY, CURVE_PUBLIC_KEY and CURVE_SECRET_KEY: set all three or none");
        return -1;
    }
    R.curve = a + b + c == 3;
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "sync-relay",
    .summary = "A leaf region's one link to the center: forwards commands, re-publishes the change stream to the\n"
               "region's cache-nodes and keeps a window of it for their catch-ups.",
    .usage = "",
    .procs = ENVREG_RELAY,
};

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    char err[CFG_ERR_LEN] = "";
    if (log_init("relay", err, sizeof err) < 0) {
        fprintf(stderr, "sync-relay: %s\n", err);
        return 2;
    }
    cli_check_env(); /* before the configuration: a typo is named even when it makes the rest fail */
    if (s_config(err) < 0) {
        fprintf(stderr, "sync-relay: %s\n", err);
        return 2;
    }
    if (!R.center[0]) {
        fprintf(stderr, "sync-relay: CENTER_ENDPOINT: required (tcp://HOST:PORT of the center's CENTER_PORT)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    proto_buf_init(&R.buf);
    proto_buf_init(&R.tmp);
    stats_list_init(&R.center_stats);
    R.next_rid = 1;

    R.zctx = zmq_ctx_new();
    R.router = zu_socket(R.zctx, ZMQ_ROUTER, 200000, 200000);
    R.pub = zu_socket(R.zctx, ZMQ_PUB, 100000, 0);
    R.up = zu_socket(R.zctx, ZMQ_DEALER, 100000, 100000);
    int one = 1, ivl = 100, ivl_max = 5000, hb_ivl = 1000, hb_to = 3000;
    zmq_setsockopt(R.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(R.up, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(R.up, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(R.up, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(R.up, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(R.up, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof hb_to);
    if (R.curve && curve_client(R.up, R.srv_pub, R.cli_pub, R.cli_sec, err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 2;
    }
    if (zmq_bind(R.router, R.cmd_ep) < 0 || zmq_bind(R.pub, R.pub_ep) < 0) {
        LOG(LOG_ERROR, "bind %s / %s: %s", R.cmd_ep, R.pub_ep, zmq_strerror(errno));
        return 1;
    }
    if (zmq_connect(R.up, R.center_cmd) < 0) {
        LOG(LOG_ERROR, "connect %s: %s", R.center_cmd, zmq_strerror(errno));
        return 1;
    }
    sync_config_t sc = {.pub_ep = R.center_pub, .cmd_ep = R.center_cmd, .heartbeat_limit_ms = R.hb_limit_ms,
                        .request_timeout_ms = R.req_timeout_ms};
    if (R.curve) {
        sc.curve_server_key = R.srv_pub;
        sc.curve_public_key = R.cli_pub;
        sc.curve_secret_key = R.cli_sec;
    }
    sync_handler_t sh = {.apply = on_apply, .reset = on_reset, .state = on_state};
    R.sync = sync_client_new(R.zctx, &sc, &sh, err);
    if (!R.sync) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    LOG(LOG_NOTICE, "ready cmd=%s pub=%s center=%s curve=%s", R.cmd_ep, R.pub_ep, R.center, R.curve ? "on" : "off");
    char ready[1200];
    snprintf(ready, sizeof ready, "relay cmd=%s pub=%s center=%s", R.cmd_ep, R.pub_ep, R.center);
    zu_signal_ready(ready);

    zmq_pollitem_t items[4];
    while (!s_stop) {
        uint64_t now = util_mono_ms();
        uint64_t next = sync_client_tick(R.sync, now);
        s_expire(now);
        s_poll_center(now);
        if (now >= R.next_hugz_ms)
            s_hugz();
        next = MIN(next, R.next_hugz_ms);
        if (R.t_head)
            next = MIN(next, R.t_head->deadline);
        sync_client_poll_items(R.sync, items);
        items[2] = (zmq_pollitem_t){.socket = R.up, .events = ZMQ_POLLIN};
        items[3] = (zmq_pollitem_t){.socket = R.router, .events = ZMQ_POLLIN};
        long timeout = next > now ? (long)(next - now) : 0;
        if (zmq_poll(items, 4, MIN(timeout, 1000)) < 0 && errno != EINTR)
            break;
        sync_client_handle(R.sync);
        s_flush_changes();
        for (int k = 0; k < 4096; k++) {
            zmq_msg_t f[ZU_FRAMES_MAX];
            int nf;
            if (zu_recv(R.up, f, ZU_FRAMES_MAX, &nf) < 0) {
                if (errno == EPROTO)
                    continue;
                break;
            }
            s_on_center(f, nf);
            zu_close_frames(f, nf);
        }
        for (int k = 0; k < 4096 && !s_stop; k++) {
            zmq_msg_t f[ZU_FRAMES_MAX];
            int nf;
            if (zu_recv(R.router, f, ZU_FRAMES_MAX, &nf) < 0) {
                if (errno == EPROTO) {
                    R.malformed++;
                    continue;
                }
                break;
            }
            s_on_region(f, nf);
            zu_close_frames(f, nf);
        }
    }
    LOG(LOG_NOTICE, "stopping");
    while (R.t_head) {
        pending_t *p = s_ptake(R.t_head->rid);
        if (!p->internal)
            s_status(p->ident, p->ident_len, p->client_rid, PROTO_EUNAVAIL, "relay stopping");
        free(p);
    }
    sync_client_destroy(&R.sync);
    zmq_close(R.router);
    zmq_close(R.pub);
    zmq_close(R.up);
    zmq_ctx_term(R.zctx);
    s_window_clear();
    free(R.pend);
    free(R.ptab);
    stats_list_fini(&R.center_stats);
    proto_buf_fini(&R.buf);
    proto_buf_fini(&R.tmp);
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
