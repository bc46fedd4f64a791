/* cache_link.c -- the cache-node's side of its store link: the DEALER to the store-node (or the
 * region's sync relay) and every request in flight on it.
 *
 * Requests are kept by id (an idtab) and in deadline order (a list: they all share one timeout,
 * store_timeout_ms, so arrival order is deadline order). Commands queued during one loop turn
 * leave together as one BATCH frame (cache_link_flush, from the loop's hooks), early when the
 * batch reaches PROTO_BATCH_SOFT_MAX. A send that fails (ZMQ_IMMEDIATE: not connected; or the
 * HWM) fails every queued request at once, so a store that is down costs a gateway 503 now, not a
 * timeout. Answers, timeouts and failures go to each request's own callback (cache_serve.c sets
 * them); pings and stats polls are the link's own, and tell whether the store is up.
 *
 * One thread: the node's loop.
 */
#include "cache_node_int.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ==== requests in flight ======================================================================= */

static void s_preq_add(cache_node_t *cn, preq_t *p)
{
    idtab_add(&cn->pending, &p->link);
    p->tprev = cn->t_tail;
    p->tnext = NULL;
    if (cn->t_tail)
        cn->t_tail->tnext = p;
    else
        cn->t_head = p;
    cn->t_tail = p;
}

/* Remove from both the table and the deadline list; returns the request or NULL. */
static preq_t *s_preq_take(cache_node_t *cn, uint64_t rid)
{
    idtab_link_t *l = idtab_take(&cn->pending, rid);
    if (!l)
        return NULL;
    preq_t *p = IDTAB_ENTRY(l, preq_t, link);
    if (p->tprev)
        p->tprev->tnext = p->tnext;
    else
        cn->t_head = p->tnext;
    if (p->tnext)
        p->tnext->tprev = p->tprev;
    else
        cn->t_tail = p->tprev;
    return p;
}

static preq_t *s_preq_find(cache_node_t *cn, uint64_t rid)
{
    idtab_link_t *l = idtab_find(&cn->pending, rid);
    return l ? IDTAB_ENTRY(l, preq_t, link) : NULL;
}

preq_t *cache_link_request(cache_node_t *cn, uint8_t kind, cache_link_done_fn done)
{
    preq_t *p = xcalloc(1, sizeof *p);
    p->kind = kind;
    p->done = done;
    p->link.id = cn->next_rid++;
    p->deadline = util_mono_ms() + cn->cfg.store_timeout_ms;
    p->sent_us = util_mono_us();
    return p;
}

static void s_fail(cache_node_t *cn, preq_t *p, uint8_t status)
{
    if (p->done) {
        p->done(cn, p, NULL, status);
    } else if (p->kind == PK_PING) {
        cn->ping_out = false;
        if (!cn->store_answered && status == PROTO_EUNAVAIL)
            cn->next_ping_ms = util_mono_ms() + 20; /* still connecting at start: ask again soon */
    } else if (p->kind == PK_STATS) {
        cn->stats_out = false;
    }
    free(p->fetches);
    free(p);
}

/* ==== one BATCH per loop turn =================================================================== */

static void s_queue(cache_node_t *cn, const proto_buf_t *b, uint64_t rid)
{
    if (cn->store_batch.n == cn->store_rids_cap) {
        cn->store_rids_cap = cn->store_rids_cap ? cn->store_rids_cap * 2 : 256;
        cn->store_rids = xrealloc(cn->store_rids, cn->store_rids_cap * sizeof *cn->store_rids);
    }
    cn->store_rids[cn->store_batch.n] = rid;
    proto_batch_add(&cn->store_batch, b->data, b->len);
    if (proto_batch_full(&cn->store_batch))
        cache_link_flush(cn);
}

void cache_link_send(cache_node_t *cn, preq_t *p, const proto_buf_t *b, uint64_t write_deadline_us)
{
    p->write_deadline_us = write_deadline_us;
    if (write_deadline_us && (!cn->store_batch_deadline || write_deadline_us < cn->store_batch_deadline))
        cn->store_batch_deadline = write_deadline_us;
    s_preq_add(cn, p);
    s_queue(cn, b, p->link.id);
}

/* Writes whose gateway deadline passed before they left (the process was stopped between taking
 * them and sending them) are answered ETIMEOUT instead of being sent: see cache_serve.c, s_handle_write. */
static void s_store_drop_expired(cache_node_t *cn, uint64_t now_us)
{
    proto_batch_t keep;
    proto_batch_init(&keep);
    const proto_batch_t *b = &cn->store_batch;
    uint32_t nk = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t start = i ? b->ends[i - 1] : 0;
        preq_t *p = s_preq_find(cn, cn->store_rids[i]);
        if (p && p->kind == PK_FORWARD && p->write_deadline_us && now_us >= p->write_deadline_us) {
            cn->expired_writes++;
            s_fail(cn, s_preq_take(cn, p->link.id), PROTO_ETIMEOUT);
            continue;
        }
        proto_batch_add(&keep, b->data.data + start, b->ends[i] - start);
        cn->store_rids[nk++] = cn->store_rids[i];
    }
    proto_batch_fini(&cn->store_batch);
    cn->store_batch = keep;
}

void cache_link_flush(cache_node_t *cn)
{
    if (cn->store_batch_deadline && util_now_us() >= cn->store_batch_deadline)
        s_store_drop_expired(cn, util_now_us());
    cn->store_batch_deadline = 0;
    if (!cn->store_batch.n)
        return;
    proto_batch_encode(&cn->store_batch, &cn->link_buf);
    uint32_t n = cn->store_batch.n;
    proto_batch_reset(&cn->store_batch);
    zloop_sent(cn->loop, cn->store);
    if (zu_send(cn->store, NULL, 0, cn->link_buf.data, cn->link_buf.len) == 0)
        return;
    /* Not connected (ZMQ_IMMEDIATE) or at the HWM: everything queued fails now, not at a deadline. */
    for (uint32_t i = 0; i < n; i++) {
        preq_t *p = s_preq_take(cn, cn->store_rids[i]);
        if (!p)
            continue;
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            cn->store_unavailable++;
        s_fail(cn, p, PROTO_EUNAVAIL);
    }
}

void cache_link_expire(cache_node_t *cn, uint64_t now)
{
    while (cn->t_head && cn->t_head->deadline <= now) {
        preq_t *p = s_preq_take(cn, cn->t_head->link.id);
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            cn->store_timeouts++;
        s_fail(cn, p, PROTO_ETIMEOUT);
    }
}

/* ==== the store's health ======================================================================== */

bool cache_link_up(const cache_node_t *cn)
{
    return cn->link_up && util_mono_ms() - cn->last_store_ok_ms < cn->cfg.store_down_ms;
}

void cache_link_poll(cache_node_t *cn, uint64_t now)
{
    if (now >= cn->next_ping_ms && !cn->ping_out) {
        preq_t *p = cache_link_request(cn, PK_PING, NULL);
        proto_buf_reset(&cn->link_buf);
        proto_enc_simple(&cn->link_buf, PROTO_PING, p->link.id);
        cn->ping_out = true;
        cache_link_send(cn, p, &cn->link_buf, 0);
        cn->next_ping_ms = now + CACHE_PING_INTERVAL_MS;
    }
    if (now >= cn->next_stats_ms && !cn->stats_out) {
        preq_t *p = cache_link_request(cn, PK_STATS, NULL);
        proto_buf_reset(&cn->link_buf);
        proto_enc_simple(&cn->link_buf, PROTO_STATS, p->link.id);
        cn->stats_out = true;
        cache_link_send(cn, p, &cn->link_buf, 0);
        cn->next_stats_ms = now + CACHE_STATS_INTERVAL_MS;
    }
}

static void s_on_pong(cache_node_t *cn, const proto_msg_t *m, uint64_t now)
{
    cn->ping_out = false;
    if (m->type != PROTO_PONG)
        return;
    uint64_t link = 1, lag = 0;
    stats_find(m->stats, m->n, "store_epoch", &cn->store_epoch);
    stats_find(m->stats, m->n, "store_sequence", &cn->store_seq);
    stats_find(m->stats, m->n, "relay_link_up", &link);
    stats_find(m->stats, m->n, "relay_lag_seconds:us", &lag);
    cn->link_up = link != 0;
    cn->link_lag_us = lag;
    if (cn->link_up) {
        cn->last_store_ok_ms = now;
        cn->store_answered = true;
    }
}

static void s_on_store_stats(cache_node_t *cn, const proto_msg_t *m)
{
    cn->stats_out = false;
    if (m->type != PROTO_STATS_REPLY)
        return;
    stats_list_reset(&cn->store_stats);
    for (uint32_t i = 0; i < m->n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, m->stats[i].name.p, m->stats[i].name.len);
        name[m->stats[i].name.len] = '\0';
        /* The store's (or relay's) numbers, and their process_* and build info, which carry
         * proc="store-node" / proc="sync-relay" labels of their own. */
        if (strncmp(name, "store_", 6) == 0 || strncmp(name, "relay_", 6) == 0 || strncmp(name, "process_", 8) == 0 ||
            strncmp(name, "presence_build_info", 19) == 0)
            stats_add(&cn->store_stats, name, m->stats[i].value);
    }
}

/* ==== answers ================================================================================== */

/* Any answer from the store: to the request it answers. */
static void on_store_answer(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    preq_t *p = s_preq_take(cn, m->rid);
    if (!p)
        return; /* an answer after its deadline: already answered as a timeout */
    uint64_t now = util_mono_ms();
    /* An answer proves the store path works, unless it says it does not (a relay without its
     * center answers EUNAVAIL, and its PONG says relay_link_up 0). */
    if ((p->kind == PK_FORWARD || p->kind == PK_FETCH) && m->status != PROTO_EUNAVAIL && m->status != PROTO_ETIMEOUT) {
        cn->last_store_ok_ms = now;
        cn->store_answered = true;
    }
    uint64_t rtt = util_mono_us() - p->sent_us;
    cn->store_rtt_us = rtt;
    stats_hist_observe(&cn->store_rtt_hist, rtt);
    switch (p->kind) {
    case PK_FORWARD:
    case PK_FETCH:
        p->done(cn, p, m, m->status);
        break;
    case PK_PING:
        s_on_pong(cn, m, now);
        break;
    case PK_STATS:
        s_on_store_stats(cn, m);
        break;
    }
    free(p->fetches);
    free(p);
}

static void on_store_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    ((cache_node_t *)ctx)->malformed_total++;
}

static const dispatch_t s_store = {
    .on_other = on_store_answer,
    .on_malformed = on_store_malformed,
};

void cache_link_frames(void *cn, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_store, cn, sock, frames, n);
}

/* ==== life ======================================================================================= */

void cache_link_init(cache_node_t *cn)
{
    idtab_init(&cn->pending);
    cn->next_rid = 1;
    proto_batch_init(&cn->store_batch);
    proto_buf_init(&cn->link_buf);
    stats_list_init(&cn->store_stats);
    stats_hist_init_latency(&cn->store_rtt_hist);
    cn->last_store_ok_ms = util_mono_ms(); /* optimistic until the first ping says otherwise */
    cn->link_up = true;
}

void cache_link_fini(cache_node_t *cn)
{
    /* Answer what is still pending so gateways are not left waiting for a deadline. */
    while (cn->t_head)
        s_fail(cn, s_preq_take(cn, cn->t_head->link.id), PROTO_EUNAVAIL);
    idtab_fini(&cn->pending);
    proto_batch_fini(&cn->store_batch);
    proto_buf_fini(&cn->link_buf);
    stats_list_fini(&cn->store_stats);
    free(cn->store_rids);
    cn->store_rids = NULL;
}
