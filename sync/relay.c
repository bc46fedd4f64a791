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
 * One thread, one zmq_poll loop. The state is a relay_t (relay.h); sync/relay_main.c is the
 * process around it.
 */
#include "relay.h"
#include "cfg.h"
#include "curve.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
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

struct relay {
    relay_config_t cfg;

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
};

/* ==== pending table ========================================================================== */

static void s_padd(relay_t *r, pending_t *p)
{
    if (r->pcount + 1 > r->psize / 2) {
        size_t ns = r->psize ? r->psize * 2 : 1024;
        pending_t **nt = xcalloc(ns, sizeof *nt);
        for (size_t i = 0; i < r->psize; i++)
            for (pending_t *x = r->ptab[i], *n; x; x = n) {
                n = x->hnext;
                size_t b = util_mix64(x->rid) & (ns - 1);
                x->hnext = nt[b];
                nt[b] = x;
            }
        free(r->ptab);
        r->ptab = nt;
        r->psize = ns;
    }
    size_t b = util_mix64(p->rid) & (r->psize - 1);
    p->hnext = r->ptab[b];
    r->ptab[b] = p;
    r->pcount++;
    p->tprev = r->t_tail;
    p->tnext = NULL;
    if (r->t_tail)
        r->t_tail->tnext = p;
    else
        r->t_head = p;
    r->t_tail = p;
}

static pending_t *s_ptake(relay_t *r, uint64_t rid)
{
    if (!r->psize)
        return NULL;
    for (pending_t **pp = &r->ptab[util_mix64(rid) & (r->psize - 1)]; *pp; pp = &(*pp)->hnext) {
        pending_t *p = *pp;
        if (p->rid != rid)
            continue;
        *pp = p->hnext;
        r->pcount--;
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
    return NULL;
}

/* ==== region side ============================================================================ */

static void s_to_region(relay_t *r, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    size_t len;
    char *data = proto_buf_steal(b, &len);
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

static void s_window_clear(relay_t *r)
{
    while (r->w_head) {
        wframe_t *f = r->w_head;
        r->w_head = f->next;
        free(f);
    }
    r->w_tail = NULL;
    r->w_bytes = 0;
    r->w_start = r->pub_seq;
}

static void s_window_add(relay_t *r, const proto_buf_t *b, uint64_t first, uint64_t last)
{
    wframe_t *f = xmalloc(sizeof *f + b->len);
    f->next = NULL;
    f->first = first;
    f->last = last;
    f->len = b->len;
    memcpy(f->data, b->data, b->len);
    if (r->w_tail)
        r->w_tail->next = f;
    else
        r->w_head = f;
    r->w_tail = f;
    r->w_bytes += b->len;
    while (r->w_bytes > r->cfg.window_max && r->w_head && r->w_head != r->w_tail) {
        wframe_t *old = r->w_head;
        r->w_head = old->next;
        r->w_bytes -= old->len;
        r->w_start = old->last;
        free(old);
    }
}

/* Publish what the sync client applied since the last call, in order, with contiguous ranges. */
static void s_flush_changes(relay_t *r)
{
    if (r->reset_seen) {
        /* A snapshot from the center: the region starts over from the center's sequence. */
        r->reset_seen = false;
        sync_stats_t st;
        sync_client_get_stats(r->sync, &st);
        r->epoch = st.epoch;
        r->pub_seq = st.seq;
        s_window_clear(r);
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
        s_window_add(r, &r->tmp, first, last);
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
    if (!r->epoch || m->epoch != r->epoch || m->seq < r->w_start || m->seq > r->pub_seq ||
        (m->flags & PROTO_CATCHUP_F_SNAP_CONT))
        return false;
    uint32_t max = (uint32_t)MIN(MAX(m->max_items, 1), CATCHUP_MAX);
    proto_change_t *out = xmalloc(max * sizeof *out);
    uint32_t n = 0;
    uint64_t through = r->pub_seq;
    bool done = true;
    for (wframe_t *f = r->w_head; f && done; f = f->next) {
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
    stats_add(l, "relay_window_bytes", r->w_bytes);
    stats_add(l, "relay_window_start", r->w_start);
    stats_add(l, "relay_forwarded_total", r->forwarded);
    stats_add(l, "relay_unavailable_total", r->unavailable);
    stats_add(l, "relay_timeouts_total", r->timeouts);
    stats_add(l, "relay_malformed_total", r->malformed + st.malformed);
    stats_add(l, "relay_local_catchups_total", r->local_catchups);
    stats_add(l, "relay_forwarded_catchups_total", r->fwd_catchups);
    stats_add(l, "relay_center_rtt_seconds:us", r->center_rtt_us);
    /* The center's store numbers, as last polled (store_epoch/sequence above are the region's). */
    for (uint32_t i = 0; i < r->center_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, r->center_stats.v[i].name.p, r->center_stats.v[i].name.len);
        name[r->center_stats.v[i].name.len] = '\0';
        if (strcmp(name, "store_epoch") && strcmp(name, "store_sequence"))
            stats_add(l, name, r->center_stats.v[i].value);
    }
}

static void s_forward(relay_t *r, const uint8_t *ident, size_t ident_len, const void *data, size_t len, const proto_msg_t *m)
{
    if (!r->link_up && m->type != PROTO_CATCHUP) {
        r->unavailable++;
        s_status(r, ident, ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* Its sender gave up already (we were stalled): forwarding it could undo a later write. */
        r->timeouts++;
        s_status(r, ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    pending_t *p = xcalloc(1, sizeof *p);
    p->rid = r->next_rid++;
    p->client_rid = m->rid;
    p->type = m->type;
    memcpy(p->ident, ident, ident_len);
    p->ident_len = (uint8_t)ident_len;
    p->deadline = util_mono_ms() + r->cfg.req_timeout_ms;
    p->sent_us = util_mono_us();
    if (proto_rewrite_rid(data, len, p->rid, &r->tmp) < 0 || zu_send(r->up, NULL, 0, r->tmp.data, r->tmp.len) < 0) {
        free(p);
        r->unavailable++;
        s_status(r, ident, ident_len, m->rid, PROTO_EUNAVAIL, "center unreachable");
        return;
    }
    r->forwarded++;
    if (m->type == PROTO_CATCHUP)
        r->fwd_catchups++;
    s_padd(r, p);
}

static void s_on_region_msg(relay_t *r, const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested);

static void s_on_region(relay_t *r, zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        r->malformed++;
        return;
    }
    s_on_region_msg(r, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                    zmq_msg_size(&frames[1]), false);
}

static void s_on_region_msg(relay_t *r, const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        r->malformed++;
        uint8_t type;
        uint64_t rid;
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_status(r, ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        /* Forwarded one by one; the center batches its answers per peer. */
        for (uint32_t i = 0; i < m.n; i++)
            s_on_region_msg(r, ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_forward(r, ident, ident_len, data, len, &m);
        break;
    case PROTO_CATCHUP:
        if (!s_catchup_local(r, ident, ident_len, &m)) {
            if (!r->link_up && r->epoch && m.epoch != r->epoch && (m.flags & PROTO_CATCHUP_F_NO_DATA)) {
                /* Another epoch than ours and no data wanted: the answer is a flush to our state. */
                proto_enc_t e;
                proto_buf_reset(&r->buf);
                proto_enc_init(&e, &r->buf);
                proto_enc_catchup_reply_begin(&e, m.rid, PROTO_OK, r->epoch, PROTO_CATCHUP_SNAPSHOT, r->pub_seq, true, 0);
                proto_enc_catchup_reply_end(&e, "", 0);
                s_to_region(r, ident, ident_len, &r->buf);
            } else if (r->link_up) {
                s_forward(r, ident, ident_len, data, len, &m);
            } else {
                r->unavailable++;
                s_status(r, ident, ident_len, m.rid, PROTO_EUNAVAIL, "center unreachable");
            }
        }
        break;
    case PROTO_PING:
    case PROTO_STATS: {
        stats_list_t l;
        stats_list_init(&l);
        s_collect_stats(r, &l, m.type == PROTO_STATS);
        proto_buf_reset(&r->buf);
        proto_enc_stats(&r->buf, m.type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m.rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        s_to_region(r, ident, ident_len, &r->buf);
        break;
    }
    default:
        r->malformed++;
        s_status(r, ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}

/* ==== center side ============================================================================ */

static void s_on_center_msg(relay_t *r, const void *data, size_t len, bool nested);

static void s_on_center(relay_t *r, zmq_msg_t *frames, int n)
{
    if (n != 1) {
        r->malformed++;
        return;
    }
    s_on_center_msg(r, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), false);
}

static void s_on_center_msg(relay_t *r, const void *data, size_t len, bool nested)
{
    uint8_t type;
    uint64_t rid;
    if (proto_peek_header(data, len, &type, &rid) < 0 || (nested && type == PROTO_BATCH)) {
        r->malformed++;
        return;
    }
    if (type == PROTO_BATCH) {
        proto_msg_t bm;
        if (proto_decode(data, len, &bm) == PROTO_DEC_OK)
            for (uint32_t i = 0; i < bm.n; i++)
                s_on_center_msg(r, bm.parts[i].p, bm.parts[i].len, true);
        else
            r->malformed++;
        proto_msg_fini(&bm);
        return;
    }
    pending_t *p = s_ptake(r, rid);
    if (!p)
        return; /* answered already (timeout) */
    r->center_rtt_us = util_mono_us() - p->sent_us;
    if (p->internal) {
        r->stats_out = false;
        proto_msg_t m;
        if (proto_decode(data, len, &m) == PROTO_DEC_OK && m.type == PROTO_STATS_REPLY) {
            stats_list_reset(&r->center_stats);
            for (uint32_t i = 0; i < m.n; i++) {
                char name[PROTO_STAT_NAME_MAX + 1];
                memcpy(name, m.stats[i].name.p, m.stats[i].name.len);
                name[m.stats[i].name.len] = '\0';
                if (strncmp(name, "store_", 6) == 0)
                    stats_add(&r->center_stats, name, m.stats[i].value);
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
    if (rc != PROTO_DEC_OK || proto_rewrite_rid(data, len, p->client_rid, &r->buf) < 0) {
        r->malformed++;
        s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "malformed answer from the center");
    } else {
        s_to_region(r, p->ident, p->ident_len, &r->buf);
    }
    free(p);
}

static void s_poll_center(relay_t *r, uint64_t now)
{
    if (now < r->next_stats_ms || r->stats_out || !r->link_up)
        return;
    r->next_stats_ms = now + 1000;
    pending_t *p = xcalloc(1, sizeof *p);
    p->rid = r->next_rid++;
    p->internal = true;
    p->deadline = now + r->cfg.req_timeout_ms;
    p->sent_us = util_mono_us();
    proto_buf_reset(&r->tmp);
    proto_enc_simple(&r->tmp, PROTO_STATS, p->rid);
    if (zu_send(r->up, NULL, 0, r->tmp.data, r->tmp.len) < 0) {
        free(p);
        return;
    }
    r->stats_out = true;
    s_padd(r, p);
}

static void s_expire(relay_t *r, uint64_t now)
{
    while (r->t_head && r->t_head->deadline <= now) {
        pending_t *p = s_ptake(r, r->t_head->rid);
        if (p->internal) {
            r->stats_out = false;
        } else {
            r->timeouts++;
            s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_ETIMEOUT, "center timed out");
        }
        free(p);
    }
}


/* ==== configuration ========================================================================== */

int relay_config_load(relay_config_t *c, char *err)
{
    char data_dir[400] = "./data";
    memset(c, 0, sizeof *c);
    c->window_max = 64u << 20;
    c->req_timeout_ms = 2000;
    c->hb_limit_ms = 3000;
    if (cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0 ||
        cfg_str("CENTER_ENDPOINT", c->center, sizeof c->center, err) < 0 ||
        cfg_u64("RELAY_WINDOW_BYTES", 4096, 1ull << 36, &c->window_max, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &c->req_timeout_ms, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &c->hb_limit_ms, err) < 0)
        return -1;
    /* Answer before the cache-node's own deadline (it waits REQUEST_TIMEOUT_MS - 250). */
    c->req_timeout_ms = c->req_timeout_ms > 800 ? c->req_timeout_ms - 500 : c->req_timeout_ms / 2;
    snprintf(c->cmd_ep, sizeof c->cmd_ep, "ipc://%s/run/store-cmd.sock", data_dir);
    snprintf(c->pub_ep, sizeof c->pub_ep, "ipc://%s/run/store-pub.sock", data_dir);
    if (cfg_str("RELAY_CMD_ENDPOINT", c->cmd_ep, sizeof c->cmd_ep, err) < 0 ||
        cfg_str("RELAY_PUB_ENDPOINT", c->pub_ep, sizeof c->pub_ep, err) < 0)
        return -1;
    if (!c->center[0]) {
        snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: required (tcp://HOST:PORT of the center's CENTER_PORT)");
        return -1;
    }
    /* CENTER_ENDPOINT=tcp://host:P -> commands on P, stream on P+1. */
    const char *colon = strrchr(c->center, ':');
    char *end;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (strncmp(c->center, "tcp://", 6) != 0 || !colon || *end || port == 0 || port >= 65535) {
        snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: invalid value '%s' (want tcp://HOST:PORT)", c->center);
        return -1;
    }
    snprintf(c->center_cmd, sizeof c->center_cmd, "%s", c->center);
    snprintf(c->center_pub, sizeof c->center_pub, "%.*s:%lu", (int)(colon - c->center), c->center, port + 1);
    int a = curve_key_load("CURVE_SERVER_PUBLIC_KEY", c->srv_pub, err);
    int b = a < 0 ? -1 : curve_key_load("CURVE_PUBLIC_KEY", c->cli_pub, err);
    int k = b < 0 ? -1 : curve_key_load("CURVE_SECRET_KEY", c->cli_sec, err);
    if (a < 0 || b < 0 || k < 0)
        return -1;
    if (a + b + k != 0 && a + b + k != 3) {
        snprintf(err, CFG_ERR_LEN,
                 "CURVE_SERVER_PUBLIC_KEY, CURVE_PUBLIC_KEY and CURVE_SECRET_KEY: set all three or none");
        return -1;
    }
    c->curve = a + b + k == 3;
    return 0;
}

/* ==== the relay's life ======================================================================= */

static int s_sockets(relay_t *r, char *err)
{
    const relay_config_t *c = &r->cfg;
    r->router = zu_socket(r->zctx, ZMQ_ROUTER, 200000, 200000);
    r->pub = zu_socket(r->zctx, ZMQ_PUB, 100000, 0);
    r->up = zu_socket(r->zctx, ZMQ_DEALER, 100000, 100000);
    int one = 1, ivl = 100, ivl_max = 5000, hb_ivl = 1000, hb_to = 3000;
    zmq_setsockopt(r->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(r->up, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(r->up, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(r->up, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(r->up, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(r->up, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof hb_to);
    if (c->curve && curve_client(r->up, c->srv_pub, c->cli_pub, c->cli_sec, err) < 0)
        return -2;
    if (zmq_bind(r->router, c->cmd_ep) < 0 || zmq_bind(r->pub, c->pub_ep) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s / %s: %s", c->cmd_ep, c->pub_ep, zmq_strerror(errno));
        return -1;
    }
    if (zmq_connect(r->up, c->center_cmd) < 0) {
        snprintf(err, CFG_ERR_LEN, "connect %s: %s", c->center_cmd, zmq_strerror(errno));
        return -1;
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
    return r->sync ? 0 : -1;
}

int relay_new(void *zctx, const relay_config_t *c, relay_t **out, char *err)
{
    relay_t *r = xcalloc(1, sizeof *r);
    r->cfg = *c;
    r->zctx = zctx;
    proto_buf_init(&r->buf);
    proto_buf_init(&r->tmp);
    stats_list_init(&r->center_stats);
    r->next_rid = 1;
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
        pending_t *p = s_ptake(r, r->t_head->rid);
        if (!p->internal)
            s_status(r, p->ident, p->ident_len, p->client_rid, PROTO_EUNAVAIL, "relay stopping");
        free(p);
    }
    sync_client_destroy(&r->sync);
    if (r->router)
        zmq_close(r->router);
    if (r->pub)
        zmq_close(r->pub);
    if (r->up)
        zmq_close(r->up);
    s_window_clear(r);
    free(r->pend);
    free(r->ptab);
    stats_list_fini(&r->center_stats);
    proto_buf_fini(&r->buf);
    proto_buf_fini(&r->tmp);
    free(r);
    *rp = NULL;
}

int relay_turn(relay_t *r, const volatile sig_atomic_t *stop)
{
    zmq_pollitem_t items[4];
    uint64_t now = util_mono_ms();
    uint64_t next = sync_client_tick(r->sync, now);
    s_expire(r, now);
    s_poll_center(r, now);
    if (now >= r->next_hugz_ms)
        s_hugz(r);
    next = MIN(next, r->next_hugz_ms);
    if (r->t_head)
        next = MIN(next, r->t_head->deadline);
    sync_client_poll_items(r->sync, items);
    items[2] = (zmq_pollitem_t){.socket = r->up, .events = ZMQ_POLLIN};
    items[3] = (zmq_pollitem_t){.socket = r->router, .events = ZMQ_POLLIN};
    long timeout = next > now ? (long)(next - now) : 0;
    if (zmq_poll(items, 4, MIN(timeout, 1000)) < 0 && errno != EINTR)
        return -1;
    sync_client_handle(r->sync);
    s_flush_changes(r);
    for (int k = 0; k < 4096; k++) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(r->up, f, ZU_FRAMES_MAX, &nf) < 0) {
            if (errno == EPROTO)
                continue;
            break;
        }
        s_on_center(r, f, nf);
        zu_close_frames(f, nf);
    }
    for (int k = 0; k < 4096 && !(stop && *stop); k++) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(r->router, f, ZU_FRAMES_MAX, &nf) < 0) {
            if (errno == EPROTO) {
                r->malformed++;
                continue;
            }
            break;
        }
        s_on_region(r, f, nf);
        zu_close_frames(f, nf);
    }
    return 0;
}

int relay_run(relay_t *r, const volatile sig_atomic_t *stop)
{
    while (!*stop)
        if (relay_turn(r, stop) < 0)
            return -1;
    return 0;
}
