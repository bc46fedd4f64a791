/* gw_nearcall.c -- a gateway thread's reads through its near cache (see gw_nearcall.h; the
 * engine and its rules are gw_near.h).
 *
 * Wiring: the engine follows the thread's watch hub -- the same change stream the SSE endpoint
 * uses, no second subscription -- through the hub's observer (every change, resets, and the sync
 * client's state: anything but live drops the entries), and this thread's acknowledged writes
 * through the upstream's write hook (records, and deletes: the user is absent as of the reply's
 * sequence). Every acknowledged write also raises a process-wide write frontier: no thread serves
 * a near entry while its own stream is behind it -- as a hit, or in place of a cache-node's answer
 * -- so a client that wrote through one thread and reads through another (a new connection) reads
 * its write.
 *
 * A read: keys found in the near cache are answered at once; the others go to their cache-node
 * in one command. Its answer carries as_of (PROTOCOL.md) -- for a multi-get also each absent key's
 * own when that is higher (a read-through "not found": the store's sequence), which is what that
 * key is filled with. One older than the engine's floor could show a user older than this thread
 * already showed, so the keys are asked again (the node is behind this thread's stream by its lag;
 * NEAR_RETRY_MAX tries within REQUEST_TIMEOUT_MS, then 504). Answers flagged stale or without
 * as_of pass through untouched (outside the near cache).
 *
 * A thread that did not run for a while (stopped, starved: its loop's clock jumped past
 * NEAR_STALL_MS since the last tick) cannot know what its stream lost meanwhile: the first read
 * after it drops the entries and has the hub catch up, before anything is served.
 *
 * Counters go to gw_metrics as deltas of the engine's own, after each operation. One thread: the
 * loop's; only the write frontier is shared (an atomic).
 */
#include "gw_nearcall.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_near.h"
#include "gw_watch_hub.h"
#include "sync_client.h"
#include "util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_RETRY_MAX 64
#define NEAR_TICK_MS 50   /* the loop proves it runs this often ... */
#define NEAR_STALL_MS 300 /* ... and a gap this long means it did not */

struct gw_nearcall {
    gw_ctx_t *cx;
    gw_near_t *near;
    proto_record_t *scratch; /* records of an answer being built */
    proto_str_t *miss;       /* keys not in the near cache */
    uint32_t cap;
    gw_near_stats_t pub; /* what has been added to gw_metrics so far */
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
    uint64_t tick_ms; /* the loop's clock at the last tick */
};

/* A read waiting for its cache-node: the near hits so far and the keys asked. */
typedef struct near_op {
    gw_nearcall_t *nc;
    gw_call_cb cb;
    void *arg;
    uint8_t type;
    int tries;
    uint64_t deadline_ms;
    uint64_t min_seq; /* the write frontier when the read began */
    uint32_t nhits, nkeys;
    proto_record_t *hits;
    char (*keys)[PROTO_USER_ID_MAX + 1];
    uint8_t *klen;
} near_op_t;

/* The highest sequence of a write this process had acknowledged (release/acquire: a client that
 * saw the write's answer and asks another thread finds it raised). */
static _Atomic uint64_t s_written;

static void s_written_raise(uint64_t v)
{
    uint64_t cur = atomic_load_explicit(&s_written, memory_order_relaxed);
    while (cur < v &&
           !atomic_compare_exchange_weak_explicit(&s_written, &cur, v, memory_order_release, memory_order_relaxed))
        ;
}

/* ==== metrics ================================================================================= */

static void s_add(_Atomic uint64_t *ctr, uint64_t now, uint64_t *was)
{
    if (now != *was)
        atomic_fetch_add_explicit(ctr, now - *was, memory_order_relaxed);
    *was = now;
}

static void s_gauge(_Atomic int64_t *g, uint64_t now, uint64_t *was)
{
    if (now != *was)
        atomic_fetch_add_explicit(g, (int64_t)now - (int64_t)*was, memory_order_relaxed);
    *was = now;
}

/* Hand the engine's counters to gw_metrics (deltas since the last call). */
static void s_publish(gw_nearcall_t *nc)
{
    gw_near_stats_t s;
    gw_near_get_stats(nc->near, &s);
    s_add(&gw_metrics.near_hits, s.hits, &nc->pub.hits);
    s_add(&gw_metrics.near_misses, s.misses, &nc->pub.misses);
    s_add(&gw_metrics.near_bypassed, s.bypassed, &nc->pub.bypassed);
    s_add(&gw_metrics.near_fills, s.fills_kept, &nc->pub.fills_kept);
    s_add(&gw_metrics.near_retries, s.behind, &nc->pub.behind);
    s_add(&gw_metrics.near_evictions, s.evictions, &nc->pub.evictions);
    s_add(&gw_metrics.near_drops, s.drops, &nc->pub.drops);
    s_gauge(&gw_metrics.near_entries, s.items, &nc->pub.items);
    s_gauge(&gw_metrics.near_bytes, s.bytes, &nc->pub.bytes);
}

/* ==== stalls ================================================================================== */

/* The loop's clock moved more than NEAR_STALL_MS since the last tick: the thread did not run. */
static void s_stall_check(gw_nearcall_t *nc, uint64_t now)
{
    if (now - nc->tick_ms <= NEAR_STALL_MS)
        return;
    nc->tick_ms = now;
    atomic_fetch_add_explicit(&gw_metrics.near_stalls, 1, memory_order_relaxed);
    gw_near_live(nc->near, false, 0);
    gw_watch_hub_resync(nc->cx->watch); /* live again once it has caught up (on_state) */
}

static void on_tick(h2o_timeout_entry_t *e)
{
    gw_nearcall_t *nc = H2O_STRUCT_FROM_MEMBER(gw_nearcall_t, tick, e);
    uint64_t now = h2o_now(nc->cx->h2o.loop);
    s_stall_check(nc, now);
    nc->tick_ms = now;
    h2o_timeout_link(nc->cx->h2o.loop, &nc->tick_to, &nc->tick);
}

/* ==== the stream and this process's writes ==================================================== */

static void on_change(void *ctx, const proto_change_t *c)
{
    gw_nearcall_t *nc = ctx;
    gw_near_apply(nc->near, c);
    s_publish(nc);
}

static void on_reset(void *ctx)
{
    gw_nearcall_t *nc = ctx;
    gw_near_reset(nc->near);
    /* Another database: the sequences of this process's writes mean nothing there. */
    atomic_store_explicit(&s_written, 0, memory_order_release);
    s_publish(nc);
}

static void on_state(void *ctx, int state, uint64_t seq)
{
    gw_nearcall_t *nc = ctx;
    gw_near_live(nc->near, state == SYNC_LIVE, seq);
    s_publish(nc);
}

static void on_write(void *arg, uint8_t type, const proto_str_t *key, const proto_msg_t *m)
{
    gw_nearcall_t *nc = arg;
    /* A DEL is acknowledged by OK (as of its tombstone) and by NOTFOUND (absent as of the store's
     * sequence then): either way the client was told the user is gone. */
    bool gone = type == PROTO_DEL && (m->status == PROTO_OK || m->status == PROTO_NOTFOUND);
    if (m->status != PROTO_OK && !gone)
        return;
    uint64_t hi = m->seq;
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->recs[i].version > hi)
            hi = m->recs[i].version;
        gw_near_wrote(nc->near, &m->recs[i]);
    }
    if (gone && key)
        gw_near_deleted(nc->near, key->p, key->len, m->seq);
    s_written_raise(hi);
    s_publish(nc);
}

/* ==== answering =============================================================================== */

static void s_reserve(gw_nearcall_t *nc, uint32_t n)
{
    if (n <= nc->cap)
        return;
    nc->cap = n;
    nc->scratch = xrealloc(nc->scratch, n * sizeof *nc->scratch);
    nc->miss = xrealloc(nc->miss, n * sizeof *nc->miss);
}

/* Call cb with a REPLY made of recs[0..n). */
static void s_answer(gw_call_t *c, gw_call_cb cb, uint8_t type, proto_record_t *recs, uint32_t n, uint64_t as_of,
                     uint32_t flags)
{
    proto_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = PROTO_REPLY;
    m.status = type == PROTO_GET && !n ? PROTO_NOTFOUND : PROTO_OK;
    m.seq = as_of;
    m.flags = flags;
    m.n = n;
    m.recs = recs;
    cb(c, &m, m.status);
}

static gw_call_t *s_send(gw_ctx_t *t, h2o_req_t *req, int node, uint8_t type, const proto_str_t *keys, uint32_t n,
                         gw_call_cb cb, void *arg)
{
    if (node < 0)
        return NULL;
    uint64_t rid = gw_upstream_rid(t->up);
    proto_buf_reset(&t->pb);
    if (type == PROTO_GET)
        proto_enc_get(&t->pb, PROTO_GET, rid, keys[0].p, keys[0].len);
    else
        proto_enc_keys(&t->pb, rid, keys, n);
    return gw_upstream_send(t->up, req, node, rid, type, &t->pb, cb, arg);
}

static void on_reply(gw_call_t *c, const proto_msg_t *m, int status);

static bool s_send_op(gw_nearcall_t *nc, h2o_req_t *req, int node, near_op_t *op)
{
    s_reserve(nc, op->nkeys);
    proto_str_t *ks = nc->miss; /* scratch: the keys as the encoder takes them */
    for (uint32_t i = 0; i < op->nkeys; i++)
        ks[i] = (proto_str_t){op->keys[i], op->klen[i]};
    return s_send(nc->cx, req, node, op->type, ks, op->nkeys, on_reply, op) != NULL;
}

static void s_op_free(near_op_t *op)
{
    free(op->hits);
    free(op->keys);
    free(op->klen);
    free(op);
}

/* The node's record for key (its answer lists found users only, in the order asked). */
static const proto_record_t *s_match(const proto_msg_t *m, uint32_t *j, const char *key, size_t klen)
{
    if (*j < m->n && m->recs[*j].uid_len == klen && memcmp(m->recs[*j].user_id, key, klen) == 0)
        return &m->recs[(*j)++];
    for (uint32_t i = 0; i < m->n; i++) /* out of order: still find it */
        if (m->recs[i].uid_len == klen && memcmp(m->recs[i].user_id, key, klen) == 0)
            return &m->recs[i];
    return NULL;
}

/* Ask the op's keys again (an answer behind the floor). False when it cannot be. */
static bool s_retry(near_op_t *op, h2o_req_t *req)
{
    if (!req || ++op->tries > NEAR_RETRY_MAX || util_mono_ms() >= op->deadline_ms)
        return false;
    int node = gw_upstream_route(op->nc->cx->up, op->keys[0], op->klen[0]);
    return s_send_op(op->nc, req, node, op);
}

/* The cache-node's answer: validated against the floor, kept, merged with the near hits. */
static void on_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    near_op_t *op = c->arg;
    gw_nearcall_t *nc = op->nc;
    gw_call_t u = *c;
    u.arg = op->arg;
    u.type = op->type;
    if (!c->req || !m || (m->status != PROTO_OK && m->status != PROTO_NOTFOUND)) {
        op->cb(&u, m, status);
        goto done;
    }
    /* Stale answers (the store is unreachable) and answers without as_of stay outside the near
     * cache: they are passed on as the cache tier gave them. */
    bool trusted = m->seq && !(m->flags & PROTO_REPLY_F_STALE);
    proto_record_t *recs = xmalloc((op->nhits + op->nkeys) * sizeof *recs);
    memcpy(recs, op->hits, op->nhits * sizeof *recs);
    uint32_t k = op->nhits, j = 0;
    bool behind = false;
    for (uint32_t i = 0; i < op->nkeys && !behind; i++) {
        const proto_record_t *r = s_match(m, &j, op->keys[i], op->klen[i]);
        if (!trusted) {
            if (r)
                recs[k++] = *r;
            continue;
        }
        /* A "not found" the node read through to the store is current through the store's sequence,
         * which the reply lists when it is above the reply's own (PROTOCOL.md, "REPLY absent"). */
        uint64_t as_of = r ? m->seq : proto_reply_key_as_of(m, i);
        int rc = gw_near_fill(nc->near, op->keys[i], op->klen[i], r, as_of, op->min_seq, &recs[k]);
        if (rc == GW_NEAR_SERVE)
            k++;
        else if (rc == GW_NEAR_BEHIND)
            behind = true; /* older than what this thread served of the user: ask again */
    }
    if (behind) {
        free(recs);
        s_publish(nc);
        if (s_retry(op, c->req))
            return; /* the op lives on in the new call */
        op->cb(&u, NULL, PROTO_ETIMEOUT);
        goto done;
    }
    s_answer(&u, op->cb, op->type, recs, k, m->seq, m->flags);
    free(recs);
done:
    s_publish(nc);
    s_op_free(op);
}

bool gw_nearcall_read(gw_ctx_t *t, h2o_req_t *req, int node, uint8_t type, const proto_str_t *keys, uint32_t n,
                      gw_call_cb cb, void *arg)
{
    gw_nearcall_t *nc = t->near;
    if (!nc)
        return s_send(t, req, node, type, keys, n, cb, arg) != NULL;
    s_stall_check(nc, h2o_now(t->h2o.loop));
    uint64_t written = atomic_load_explicit(&s_written, memory_order_acquire);
    s_reserve(nc, n);
    uint32_t found = 0, nmiss = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = gw_near_get(nc->near, keys[i].p, keys[i].len, written, &nc->scratch[found]);
        if (rc == GW_NEAR_HIT)
            found++;
        else if (rc != GW_NEAR_ABSENT)
            nc->miss[nmiss++] = keys[i];
    }
    s_publish(nc);
    if (!nmiss) {
        gw_call_t c = {.req = req, .arg = arg, .node = node, .type = type, .start_us = util_mono_us()};
        s_answer(&c, cb, type, nc->scratch, found, gw_near_seq(nc->near), 0);
        return true;
    }
    if (node < 0)
        return false;
    near_op_t *op = xcalloc(1, sizeof *op);
    op->nc = nc;
    op->cb = cb;
    op->arg = arg;
    op->type = type;
    op->deadline_ms = util_mono_ms() + gw_cfg.request_timeout_ms;
    op->min_seq = written;
    op->nhits = found;
    op->hits = xmalloc((found ? found : 1) * sizeof *op->hits);
    memcpy(op->hits, nc->scratch, found * sizeof *op->hits);
    op->nkeys = nmiss;
    op->keys = xmalloc(nmiss * sizeof *op->keys);
    op->klen = xmalloc(nmiss);
    for (uint32_t i = 0; i < nmiss; i++) {
        memcpy(op->keys[i], nc->miss[i].p, nc->miss[i].len);
        op->keys[i][nc->miss[i].len] = '\0';
        op->klen[i] = (uint8_t)nc->miss[i].len;
    }
    if (s_send_op(nc, req, node, op))
        return true;
    s_op_free(op);
    return false;
}

/* ==== life ==================================================================================== */

gw_nearcall_t *gw_nearcall_new(gw_ctx_t *cx)
{
    uint64_t share = gw_cfg.near_cache_bytes / (gw_cfg.threads ? gw_cfg.threads : 1);
    if (!cx->watch || share < GW_NEAR_MIN_BYTES)
        return NULL;
    gw_nearcall_t *nc = xcalloc(1, sizeof *nc);
    nc->cx = cx;
    nc->near = gw_near_new(share);
    if (!nc->near) {
        free(nc);
        return NULL;
    }
    gw_watch_observer_t o = {.ctx = nc, .change = on_change, .reset = on_reset, .state = on_state};
    gw_watch_hub_observe(cx->watch, &o);
    gw_upstream_on_write(cx->up, on_write, nc);
    h2o_timeout_init(cx->h2o.loop, &nc->tick_to, NEAR_TICK_MS);
    nc->tick.cb = on_tick;
    nc->tick_ms = h2o_now(cx->h2o.loop);
    h2o_timeout_link(cx->h2o.loop, &nc->tick_to, &nc->tick);
    return nc;
}

void gw_nearcall_destroy(gw_nearcall_t **ncp)
{
    gw_nearcall_t *nc = *ncp;
    if (!nc)
        return;
    if (h2o_timeout_is_linked(&nc->tick))
        h2o_timeout_unlink(&nc->tick);
    h2o_timeout_dispose(nc->cx->h2o.loop, &nc->tick_to);
    gw_near_live(nc->near, false, 0); /* the entries go: take them out of the gauges */
    gw_near_reset(nc->near);
    s_publish(nc);
    gw_near_destroy(&nc->near);
    free(nc->scratch);
    free(nc->miss);
    free(nc);
    *ncp = NULL;
}
