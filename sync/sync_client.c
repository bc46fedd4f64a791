/* sync_client.c -- the change-stream client (see sync_client.h for the protocol).
 *
 * Buffering: while a catch-up is in flight the SUB socket is still drained (so the publisher's
 * high-water mark is not what decides whether we lose messages); CHANGES frames are kept as raw
 * copies, bounded by bytes. An overflow drops the buffer and forces one more catch-up once the
 * current one ends -- correctness never depends on the buffer, only speed does.
 *
 * "Store went backwards": the store is never expected to publish a heartbeat below what we applied
 * for long (a catch-up may run ahead of the stream by one commit group); if it does for more than
 * BEHIND_GRACE_MS we resync, and the store answers that catch-up with a snapshot.
 */
#include "sync_client.h"
#include "cfg.h"
#include "leader.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BEHIND_GRACE_MS 3000
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define DRAIN_MAX 2048

typedef struct buffered {
    struct buffered *next;
    size_t len;
    char data[];
} buffered_t;

struct sync_client {
    sync_config_t cfg;
    sync_handler_t h;
    void *sub, *dealer;
    leader_t cmd, pub; /* the members' endpoints; cmd.cur is the one the DEALER is connected to */
    int state;
    uint64_t epoch, seq;

    /* catch-up */
    bool cu_active;       /* a request is outstanding */
    bool sent;            /* sent on the DEALER since sync_client_take_sent */
    bool cu_wanted;       /* a catch-up must run (state CATCHING_UP / SILENT) */
    bool cu_snapshot;     /* inside a multi-chunk snapshot */
    bool cu_rerun;        /* the buffer overflowed: run again when this one ends */
    uint64_t cu_rid, cu_deadline, cu_retry_at, cu_backoff, cu_snap_start;
    char cu_key[PROTO_USER_ID_MAX + 1]; /* snapshot cursor */
    size_t cu_key_len;
    uint64_t next_rid;

    buffered_t *buf_head, *buf_tail;
    size_t buf_bytes, buf_max;

    uint64_t last_heard_ms, last_uptodate_ms, behind_since_ms, store_now_us;
    sync_stats_t st;
    proto_buf_t out;
};

const char *sync_state_name(int state)
{
    switch (state) {
    case SYNC_CATCHING_UP: return "catching_up";
    case SYNC_LIVE: return "live";
    case SYNC_SILENT: return "silent";
    case SYNC_UPSTREAM_DOWN: return "upstream_down";
    default: return "?";
    }
}

static void s_set_state(sync_client_t *sc, int state)
{
    if (sc->state == state)
        return;
    sc->state = state;
    if (state == SYNC_LIVE)
        sc->last_uptodate_ms = util_mono_ms();
    if (sc->h.state)
        sc->h.state(sc->h.ctx, state);
}

static void s_buffer_clear(sync_client_t *sc)
{
    while (sc->buf_head) {
        buffered_t *b = sc->buf_head;
        sc->buf_head = b->next;
        free(b);
    }
    sc->buf_tail = NULL;
    sc->buf_bytes = 0;
}

static int s_set_curve(void *sock, const sync_config_t *cfg, char *err)
{
    if (!cfg->curve_server_key || !*cfg->curve_server_key)
        return 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, cfg->curve_server_key, 40) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, cfg->curve_public_key, 40) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cfg->curve_secret_key, 40) < 0) {
        snprintf(err, CFG_ERR_LEN, "CurveZMQ keys rejected: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

sync_client_t *sync_client_new(void *zctx, const sync_config_t *cfg, const sync_handler_t *h, char *err)
{
    sync_client_t *sc = xcalloc(1, sizeof *sc);
    sc->cfg = *cfg;
    sc->h = *h;
    if (!sc->cfg.heartbeat_limit_ms)
        sc->cfg.heartbeat_limit_ms = 3000;
    if (!sc->cfg.request_timeout_ms)
        sc->cfg.request_timeout_ms = 2000;
    if (!sc->cfg.chunk_items)
        sc->cfg.chunk_items = 1000;
    sc->buf_max = sc->cfg.buffer_max ? (size_t)sc->cfg.buffer_max * 256 : (size_t)64 << 20;
    proto_buf_init(&sc->out);
    sc->next_rid = 1;
    sc->cu_backoff = RETRY_MIN_MS;

    sc->sub = zu_socket(zctx, ZMQ_SUB, 0, sc->cfg.sub_hwm ? (int)sc->cfg.sub_hwm : 500000);
    sc->dealer = zu_socket(zctx, ZMQ_DEALER, 1000, 100000);
    if (!sc->sub || !sc->dealer) {
        snprintf(err, CFG_ERR_LEN, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int one = 1, ivl_max = 2000;
    zmq_setsockopt(sc->dealer, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(sc->dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(sc->sub, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (s_set_curve(sc->sub, cfg, err) < 0 || s_set_curve(sc->dealer, cfg, err) < 0)
        goto fail;
    /* Subscribe first, then ask for the catch-up: the Clone pattern's order. */
    char t = PROTO_TOPIC_CHANGES;
    zmq_setsockopt(sc->sub, ZMQ_SUBSCRIBE, &t, 1);
    t = PROTO_TOPIC_HUGZ;
    zmq_setsockopt(sc->sub, ZMQ_SUBSCRIBE, &t, 1);
    if (leader_parse(&sc->pub, cfg->pub_ep, "change stream endpoints", err) < 0 ||
        leader_parse(&sc->cmd, cfg->cmd_ep, "store command endpoints", err) < 0)
        goto fail;
    if (sc->pub.n != sc->cmd.n) {
        snprintf(err, CFG_ERR_LEN, "%u change stream endpoints but %u command endpoints: one of each per store member",
                 sc->pub.n, sc->cmd.n);
        goto fail;
    }
    for (unsigned i = 0; i < sc->pub.n; i++) {
        if (zmq_connect(sc->sub, sc->pub.ep[i]) < 0) {
            snprintf(err, CFG_ERR_LEN, "connect %s: %s", sc->pub.ep[i], zmq_strerror(errno));
            goto fail;
        }
    }
    if (zmq_connect(sc->dealer, leader_endpoint(&sc->cmd)) < 0) {
        snprintf(err, CFG_ERR_LEN, "connect %s: %s", leader_endpoint(&sc->cmd), zmq_strerror(errno));
        goto fail;
    }
    sc->state = SYNC_CATCHING_UP;
    sc->cu_wanted = true;
    sc->last_heard_ms = sc->last_uptodate_ms = util_mono_ms();
    return sc;
fail:
    sync_client_destroy(&sc);
    return NULL;
}

void sync_client_destroy(sync_client_t **scp)
{
    sync_client_t *sc = *scp;
    if (!sc)
        return;
    if (sc->sub)
        zmq_close(sc->sub);
    if (sc->dealer)
        zmq_close(sc->dealer);
    s_buffer_clear(sc);
    proto_buf_fini(&sc->out);
    free(sc);
    *scp = NULL;
}

int sync_client_poll_items(sync_client_t *sc, zmq_pollitem_t *items)
{
    items[0] = (zmq_pollitem_t){.socket = sc->sub, .events = ZMQ_POLLIN};
    items[1] = (zmq_pollitem_t){.socket = sc->dealer, .events = ZMQ_POLLIN};
    return 2;
}

/* ==== following the leader (a replicated center) ============================================== */

/* The member catch-ups go to changed (from `was`): move the DEALER; a catch-up in flight to the
 * old member is asked again of the new one. */
static void s_follow(sync_client_t *sc, unsigned was, const char *why)
{
    zmq_disconnect(sc->dealer, sc->cmd.ep[was]);
    zmq_connect(sc->dealer, leader_endpoint(&sc->cmd));
    LOG(LOG_NOTICE, "sync: following store member %u (%s)", sc->cmd.cur + 1, why);
    if (sc->cu_active || sc->cu_retry_at) {
        /* In flight to the old member, or waiting out a backoff: ask the new one soon (its
         * connection is being made: the first try may find it not connected yet). */
        sc->cu_active = false;
        sc->cu_retry_at = util_mono_ms() + 10; /* resent on a tick, with a fresh request id */
        sc->cu_backoff = RETRY_MIN_MS;
    }
}

static void s_hint(sync_client_t *sc, uint64_t member, uint64_t term, const char *why)
{
    unsigned was = sc->cmd.cur;
    if (leader_hint(&sc->cmd, member, term))
        s_follow(sc, was, why);
}

static void s_next(sync_client_t *sc, const char *why)
{
    unsigned was = sc->cmd.cur;
    if (leader_next(&sc->cmd))
        s_follow(sc, was, why);
}

/* ==== catch-up =============================================================================== */

static void s_send_catchup(sync_client_t *sc, uint64_t now)
{
    uint32_t flags = 0;
    if (sc->cu_snapshot)
        flags |= PROTO_CATCHUP_F_SNAP_CONT;
    if (!sc->cfg.want_snapshot_data)
        flags |= PROTO_CATCHUP_F_NO_DATA;
    sc->cu_rid = sc->next_rid++;
    proto_buf_reset(&sc->out);
    proto_enc_catchup(&sc->out, sc->cu_rid, sc->epoch, sc->seq, sc->cfg.chunk_items, flags, sc->cu_snap_start,
                      sc->cu_snapshot ? sc->cu_key : "", sc->cu_snapshot ? sc->cu_key_len : 0);
    sc->sent = true;
    if (zu_send(sc->dealer, NULL, 0, sc->out.data, sc->out.len) < 0) {
        /* Not connected (ZMQ_IMMEDIATE; also just after following another member: the connect
         * is under way) or at the HWM: retry after a backoff. A replicated center's leader says
         * who it is in its heartbeats, so a dead member is left by the next one of those. */
        sc->cu_active = false;
        sc->cu_retry_at = now + sc->cu_backoff;
        sc->cu_backoff = MIN(sc->cu_backoff * 2, RETRY_MAX_MS);
        return;
    }
    sc->cu_active = true;
    sc->cu_deadline = now + sc->cfg.request_timeout_ms;
}

static void s_start_catchup(sync_client_t *sc, const char *why)
{
    if (sc->state == SYNC_LIVE)
        s_set_state(sc, SYNC_CATCHING_UP);
    if (sc->cu_wanted && (sc->cu_active || sc->cu_retry_at))
        return; /* already on it */
    LOG(LOG_INFO, "sync: resync from seq=%llu (%s)", (unsigned long long)sc->seq, why);
    sc->st.resyncs++;
    sc->cu_wanted = true;
    sc->cu_snapshot = false;
    sc->cu_backoff = RETRY_MIN_MS;
    s_send_catchup(sc, util_mono_ms());
}

int sync_client_set_position(sync_client_t *sc, uint64_t epoch, uint64_t seq)
{
    if (sc->seq || sc->epoch || sc->st.changes_applied)
        return -1;
    sc->epoch = epoch;
    sc->seq = seq;
    sc->st.epoch = epoch;
    sc->st.seq = seq;
    return 0;
}

void sync_client_resync(sync_client_t *sc)
{
    s_start_catchup(sc, "requested");
}

static void s_buffer_add(sync_client_t *sc, const void *data, size_t len)
{
    if (sc->buf_bytes + len > sc->buf_max) {
        s_buffer_clear(sc);
        sc->cu_rerun = true;
        sc->st.overflows++;
        return;
    }
    buffered_t *b = xmalloc(sizeof *b + len);
    b->next = NULL;
    b->len = len;
    memcpy(b->data, data, len);
    if (sc->buf_tail)
        sc->buf_tail->next = b;
    else
        sc->buf_head = b;
    sc->buf_tail = b;
    sc->buf_bytes += len;
}

static void s_apply_list(sync_client_t *sc, const proto_change_t *ch, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ch[i].rec.version <= sc->seq)
            continue; /* already covered (by the catch-up, or a duplicate) */
        sc->h.apply(sc->h.ctx, &ch[i]);
        sc->seq = ch[i].rec.version;
        sc->st.changes_applied++;
    }
}

static void s_live_changes(sync_client_t *sc, const proto_msg_t *m, const void *raw, size_t rawlen);

static void s_catchup_done(sync_client_t *sc)
{
    sc->cu_active = false;
    sc->cu_wanted = false;
    sc->cu_snapshot = false;
    sc->cu_retry_at = 0;
    sc->cu_backoff = RETRY_MIN_MS;
    s_set_state(sc, SYNC_LIVE);
    sc->behind_since_ms = 0;
    /* Replay what the stream delivered meanwhile; only changes after the catch-up count. */
    buffered_t *b = sc->buf_head;
    sc->buf_head = sc->buf_tail = NULL;
    sc->buf_bytes = 0;
    while (b) {
        buffered_t *next = b->next;
        if (sc->state == SYNC_LIVE) {
            proto_msg_t m;
            if (proto_decode(b->data, b->len, &m) == PROTO_DEC_OK && m.type == PROTO_CHANGES)
                s_live_changes(sc, &m, b->data, b->len);
            proto_msg_fini(&m);
        } else {
            /* A gap while replaying started another catch-up: keep the rest for it. */
            s_buffer_add(sc, b->data, b->len);
        }
        free(b);
        b = next;
    }
    if (sc->cu_rerun && sc->state == SYNC_LIVE) {
        sc->cu_rerun = false;
        s_start_catchup(sc, "buffer overflow during catch-up");
    }
}

static void s_on_catchup_reply(sync_client_t *sc, const proto_msg_t *m)
{
    if (!sc->cu_active || m->rid != sc->cu_rid)
        return; /* an answer to a request we gave up on */
    uint64_t now = util_mono_ms();
    sc->last_heard_ms = now;
    if (m->status != PROTO_OK) {
        sc->cu_active = false;
        sc->cu_retry_at = now + sc->cu_backoff;
        sc->cu_backoff = MIN(sc->cu_backoff * 2, RETRY_MAX_MS);
        return;
    }
    if (m->mode == PROTO_CATCHUP_SNAPSHOT) {
        /* Start (or restart) of a snapshot: everything we hold may be wrong. */
        LOG(LOG_NOTICE, "sync: snapshot (epoch %llu -> %llu, seq %llu -> %llu)", (unsigned long long)sc->epoch,
            (unsigned long long)m->epoch, (unsigned long long)sc->seq, (unsigned long long)m->seq);
        sc->st.snapshots++;
        sc->st.snapshot_seq = m->seq;
        sc->h.reset(sc->h.ctx);
        sc->epoch = m->epoch;
        sc->seq = 0;
        sc->cu_snap_start = m->seq;
    } else if (m->epoch != sc->epoch || (m->mode == PROTO_CATCHUP_SNAPSHOT_CONT && !sc->cu_snapshot)) {
        /* An answer that does not fit what we asked: start over. */
        sc->st.malformed++;
        sc->epoch = 0;
        sc->cu_snapshot = false;
        sc->cu_active = false;
        sc->cu_retry_at = now + sc->cu_backoff;
        return;
    }
    if (m->mode == PROTO_CATCHUP_INCREMENTAL) {
        s_apply_list(sc, m->changes, m->n);
        if (m->seq > sc->seq)
            sc->seq = m->seq;
        sc->cu_snapshot = false;
        if (m->done) {
            s_catchup_done(sc);
            return;
        }
    } else {
        /* Snapshot records come in key order: apply them all (the consumer keeps versions), and
         * leave the sequence alone until the snapshot's base is reached. */
        for (uint32_t i = 0; i < m->n; i++) {
            sc->h.apply(sc->h.ctx, &m->changes[i]);
            sc->st.changes_applied++;
        }
        if (m->done) { /* NO_DATA: complete as of the database's sequence */
            sc->seq = m->seq;
            s_catchup_done(sc);
            return;
        }
        if (m->key.len) {
            sc->cu_snapshot = true;
            memcpy(sc->cu_key, m->key.p, m->key.len);
            sc->cu_key[m->key.len] = '\0';
            sc->cu_key_len = m->key.len;
        } else {
            /* Key scan complete: everything after the base comes incrementally. */
            sc->cu_snapshot = false;
            sc->seq = sc->cu_snap_start;
        }
    }
    sc->cu_backoff = RETRY_MIN_MS;
    s_send_catchup(sc, now);
}

/* ==== live stream ============================================================================ */

static void s_gap(sync_client_t *sc, const char *why, const void *raw, size_t rawlen)
{
    sc->st.gaps++;
    LOG_RATELIMITED(LOG_WARN, 1000, "sync: gap (%s) at seq=%llu", why, (unsigned long long)sc->seq);
    s_start_catchup(sc, why);
    if (raw)
        s_buffer_add(sc, raw, rawlen);
}

static void s_live_changes(sync_client_t *sc, const proto_msg_t *m, const void *raw, size_t rawlen)
{
    if (m->epoch != sc->epoch) {
        s_gap(sc, "epoch changed", NULL, 0);
        return;
    }
    if (m->first_seq > sc->seq + 1) {
        s_gap(sc, "sequence gap", raw, rawlen);
        return;
    }
    s_apply_list(sc, m->changes, m->n);
    if (m->seq > sc->seq)
        sc->seq = m->seq;
    sc->last_uptodate_ms = util_mono_ms();
}

static void s_on_sub(sync_client_t *sc, zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) != 1) {
        sc->st.malformed++;
        return;
    }
    const void *raw = zmq_msg_data(&frames[1]);
    size_t rawlen = zmq_msg_size(&frames[1]);
    proto_msg_t m;
    if (proto_decode(raw, rawlen, &m) != PROTO_DEC_OK || (m.type != PROTO_CHANGES && m.type != PROTO_HUGZ)) {
        /* A message we cannot read may have carried changes: treat it as a loss. */
        sc->st.malformed++;
        proto_msg_fini(&m);
        if (sc->state != SYNC_CATCHING_UP)
            s_gap(sc, "unreadable stream message", NULL, 0);
        return;
    }
    uint64_t now = util_mono_ms();
    sc->last_heard_ms = now;
    if (m.type == PROTO_HUGZ) {
        sc->store_now_us = m.now_us;
        if (m.member && leader_replicated(&sc->cmd))
            s_hint(sc, m.member, m.term, "its heartbeat says it leads");
        if (sc->state != SYNC_CATCHING_UP) {
            if (m.epoch != sc->epoch) {
                s_gap(sc, "epoch changed", NULL, 0);
            } else if (m.seq > sc->seq) {
                s_gap(sc, "heartbeat ahead of applied sequence", NULL, 0);
            } else if (m.seq < sc->seq) {
                if (!sc->behind_since_ms)
                    sc->behind_since_ms = now;
                else if (now - sc->behind_since_ms > BEHIND_GRACE_MS)
                    s_gap(sc, "store behind applied sequence", NULL, 0);
            } else {
                sc->behind_since_ms = 0;
                if (m.flags & PROTO_HUGZ_F_UPSTREAM_DOWN) {
                    /* Complete as far as the relay goes, but the relay itself is cut off. */
                    if (sc->state != SYNC_UPSTREAM_DOWN) {
                        sc->st.upstream_down++;
                        s_set_state(sc, SYNC_UPSTREAM_DOWN);
                    }
                } else {
                    sc->last_uptodate_ms = now;
                    if (sc->state == SYNC_SILENT || sc->state == SYNC_UPSTREAM_DOWN)
                        s_set_state(sc, SYNC_LIVE);
                }
            }
        }
    } else if (sc->state == SYNC_CATCHING_UP) {
        s_buffer_add(sc, raw, rawlen);
    } else {
        s_live_changes(sc, &m, raw, rawlen);
        if (sc->state == SYNC_SILENT && !sc->cu_wanted)
            s_set_state(sc, SYNC_LIVE);
    }
    proto_msg_fini(&m);
}

/* A member of a replicated center that does not lead answered our catch-up: ask the leader it
 * names, or the next member when it knows none (an election is under way). */
static void s_on_not_leader(sync_client_t *sc, const proto_msg_t *m)
{
    uint64_t now = util_mono_ms();
    sc->cu_active = false;
    sc->cu_retry_at = now + sc->cu_backoff;
    sc->cu_backoff = MIN(sc->cu_backoff * 2, RETRY_MAX_MS);
    unsigned was = sc->cmd.cur;
    if (m->seq && m->seq - 1 != was)
        s_hint(sc, m->seq, 0, "a follower named it");
    else
        s_next(sc, "no leader known");
    if (sc->cmd.cur != was)
        sc->cu_retry_at = now; /* a new member to ask: at once */
}

static void s_on_dealer(sync_client_t *sc, zmq_msg_t *frames, int n)
{
    proto_msg_t m;
    if (n == 1 && proto_decode(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), &m) == PROTO_DEC_OK) {
        if (m.type == PROTO_CATCHUP_REPLY)
            s_on_catchup_reply(sc, &m);
        else if (m.type == PROTO_REPLY && m.status == PROTO_ENOTLEADER && sc->cu_active && m.rid == sc->cu_rid)
            s_on_not_leader(sc, &m);
        proto_msg_fini(&m);
    } else {
        sc->st.malformed++;
        if (n == 1) /* else m was never initialised (a reply of several frames) */
            proto_msg_fini(&m);
    }
}

bool sync_client_take_sent(sync_client_t *sc)
{
    bool s = sc->sent;
    sc->sent = false;
    return s;
}

int sync_client_handle(sync_client_t *sc)
{
    zmq_msg_t frames[ZU_FRAMES_MAX];
    int n, more = 0;
    int i;
    for (i = 0; i < DRAIN_MAX; i++) {
        if (zu_recv(sc->sub, frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EPROTO) {
                sc->st.malformed++;
                continue;
            }
            break;
        }
        s_on_sub(sc, frames, n);
        zu_close_frames(frames, n);
    }
    if (i == DRAIN_MAX)
        more = 1;
    for (i = 0; i < 64; i++) {
        if (zu_recv(sc->dealer, frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EPROTO)
                continue;
            break;
        }
        s_on_dealer(sc, frames, n);
        zu_close_frames(frames, n);
    }
    if (i == 64)
        more = 1;
    return more;
}

void sync_client_input(sync_client_t *sc, bool from_sub, zmq_msg_t *frames, int n)
{
    if (from_sub)
        s_on_sub(sc, frames, n);
    else
        s_on_dealer(sc, frames, n);
}

uint64_t sync_client_tick(sync_client_t *sc, uint64_t now)
{
    if (now - sc->last_heard_ms > sc->cfg.heartbeat_limit_ms && sc->state != SYNC_SILENT) {
        sc->st.silences++;
        LOG(LOG_WARN, "sync: no word from the store for %llu ms (seq=%llu)",
            (unsigned long long)(now - sc->last_heard_ms), (unsigned long long)sc->seq);
        s_set_state(sc, SYNC_SILENT);
        if (!sc->cu_wanted) {
            sc->cu_wanted = true;
            sc->st.resyncs++;
            s_send_catchup(sc, now);
        }
    }
    if (sc->cu_wanted) {
        if (sc->cu_active && now >= sc->cu_deadline) {
            sc->cu_active = false;
            sc->cu_retry_at = now; /* resend now with a fresh request id */
            if (leader_replicated(&sc->cmd))
                s_next(sc, "catch-up unanswered");
        }
        if (!sc->cu_active && sc->cu_retry_at && now >= sc->cu_retry_at) {
            sc->cu_retry_at = 0;
            s_send_catchup(sc, now);
        } else if (!sc->cu_active && !sc->cu_retry_at) {
            s_send_catchup(sc, now);
        }
    }
    uint64_t next = sc->last_heard_ms + sc->cfg.heartbeat_limit_ms + 1;
    if (sc->cu_active)
        next = MIN(next, sc->cu_deadline);
    if (sc->cu_retry_at)
        next = MIN(next, sc->cu_retry_at);
    if (next <= now)
        next = now + 10;
    return next;
}

void sync_client_get_stats(const sync_client_t *sc, sync_stats_t *out)
{
    *out = sc->st;
    out->seq = sc->seq;
    out->epoch = sc->epoch;
    out->state = sc->state;
    out->last_heard_ms = sc->last_heard_ms;
    out->store_now_us = sc->store_now_us;
    out->leader = sc->cmd.cur + 1;
    out->leader_switches = sc->cmd.switches;
    uint64_t now = util_mono_ms();
    out->lag_ms = sc->state == SYNC_LIVE ? 0 : now - sc->last_uptodate_ms;
}

int sync_client_state(const sync_client_t *sc)
{
    return sc->state;
}

uint32_t sync_client_leader(const sync_client_t *sc)
{
    return sc->cmd.cur + 1;
}

uint64_t sync_client_seq(const sync_client_t *sc)
{
    return sc->seq;
}
