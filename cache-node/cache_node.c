/* cache_node.c -- the cache-node process: a W-TinyLFU cache tier kept coherent with the store.
 *
 * One thread, one poll loop over four sockets (their ZMQ_FDs; see cache_node_turn for the contract):
 *   ROUTER  (CACHE_ENDPOINT, bound)     requests from gateways: GET, MGET, PUT, TOUCH, DEL, APPLY,
 *                                       PING, STATS -- many in flight per gateway socket
 *   DEALER  (STORE_CMD_ENDPOINT)        commands to the store-node (or the region's sync relay)
 *   SUB + DEALER of the sync client     the change stream and its catch-ups (sync/)
 * The stream is always drained before gateway requests, so a change already delivered is applied
 * before the next read is answered.
 *
 * Coherence rules (ARCHITECTURE.md invariants 2 and 3):
 *   - every entry carries the store version it shows; it never moves to an older one (cache.c);
 *   - a miss asks the store once per key however many readers wait (single flight: a `fetch` per
 *     key); while a fetch is out, every change to that key seen on the stream or in a write reply
 *     is remembered (max_seen, and the newest whole record when there is one). When the answer
 *     (current as of the store's sequence `as_of`) comes back it is cached only if nothing newer
 *     was seen meanwhile; otherwise the newest known record is cached, or -- if that cannot be
 *     rebuilt -- nothing is cached and the waiters get the answer they asked for;
 *   - "not found" is cached as a negative entry at version as_of, replaced by any later change;
 *   - writes go to the store; the acknowledged record updates the cache before the reply;
 *   - a gap or a silent stream makes the state untrusted (sync client): while the store answers,
 *     reads go to the store; while it does not, cached entries are served marked stale.
 */
#include "cache_node.h"
#include "cache.h"
#include "cfg.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDENT 255
#define PING_INTERVAL_MS 500
#define STATS_INTERVAL_MS 1000

/* ==== data structures ======================================================================== */

typedef struct greq greq_t;
typedef struct fetch fetch_t;

typedef struct waiter {
    struct waiter *next;
    greq_t *g;
    uint32_t slot;
} waiter_t;

/* A gateway read waiting for one or more fetches. */
struct greq {
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    uint8_t type; /* PROTO_GET or PROTO_MGET */
    uint64_t rid;
    uint32_t nkeys, outstanding;
    uint8_t status; /* first error seen, else PROTO_OK */
    bool stale;
    proto_buf_t *vals; /* per key: encoded record, len 0 = not found */
};

struct fetch {
    fetch_t *hnext;
    uint64_t hash;
    uint8_t klen;
    char key[PROTO_USER_ID_MAX];
    waiter_t *waiters;
    uint64_t max_seen;        /* highest change seq seen for this key while pending */
    bool have_latest;         /* latest holds the record at max_seen (or latest_gone) */
    bool latest_gone;         /* the change at max_seen deleted the key */
    proto_record_t latest;
};

enum preq_kind { PK_FORWARD = 1, PK_FETCH, PK_PING, PK_STATS };

/* A request to the store we wait for. */
typedef struct preq {
    struct preq *hnext;
    struct preq *tnext, *tprev; /* deadline order (all store requests share one timeout) */
    uint64_t rid, deadline, sent_us;
    uint8_t kind;
    /* PK_FORWARD */
    uint8_t type;
    uint8_t ident[MAX_IDENT];
    uint8_t ident_len;
    uint8_t klen; /* DEL: the key */
    char key[PROTO_USER_ID_MAX];
    uint64_t client_rid;
    uint64_t write_deadline_us; /* the gateway's deadline for this write (wall clock), 0 = none */
    /* PK_FETCH */
    fetch_t **fetches;
    uint32_t nfetch;
} preq_t;

struct cache_node {
    cache_node_config_t cfg;
    bool sent_router, sent_store; /* sent on since the last post-send check (ZMQ_FD contract) */
    bool again;                   /* a drain stopped at its bound: poll without waiting */
    uint64_t woke;                /* when this process last ran (s_stalled) */
    uint64_t distrust_until_ms; /* after a stall, reads go through to the store until then */

    void *zctx, *router, *store;
    sync_client_t *sync;
    cache_t *cache;

    /* pending store requests by rid */
    preq_t **ptab;
    size_t ptab_size, ptab_count;
    preq_t *t_head, *t_tail;
    uint64_t next_rid;

    /* fetches by key */
    fetch_t **ftab;
    size_t ftab_size, ftab_count;

    /* store health */
    uint64_t last_store_ok_ms, next_ping_ms, next_stats_ms, store_rtt_us;
    bool store_answered; /* the store (through the relay: the center) has answered at least once */
    uint64_t store_epoch, store_seq;
    bool link_up;          /* the relay's link to the center (always true at a center) */
    uint64_t link_lag_us;
    stats_list_t store_stats;
    bool ping_out, stats_out;

    proto_buf_t buf, rec;
    /* While a BATCH from one gateway socket is processed, its immediate replies are collected
     * here and leave as one BATCH frame. */
    bool in_batch;
    const uint8_t *batch_ident;
    size_t batch_ident_len;
    proto_batch_t out_batch;
    proto_buf_t out_frame;
    /* Commands to the store queued during one loop turn leave together. */
    proto_batch_t store_batch;
    uint64_t *store_rids;
    uint32_t store_rids_cap;
    uint64_t requests_total, reads_total, writes_total, fetches_total, fetch_keys_total, coalesced_total;
    uint64_t store_timeouts, store_unavailable, malformed_total, stale_served, bypass_reads, fills_dropped;
    uint64_t expired_writes; /* gateway writes past their deadline when we got to them: dropped */
    uint64_t store_batch_deadline; /* earliest write deadline among the queued commands, 0 = none */
    uint64_t stalls;               /* times this process found it had not run for a while */
    stats_hist_t store_rtt_hist;
};

/* ==== small hash tables ====================================================================== */

static void s_ptab_grow(cache_node_t *cn)
{
    size_t nsize = cn->ptab_size ? cn->ptab_size * 2 : 1024;
    preq_t **nt = xcalloc(nsize, sizeof *nt);
    for (size_t i = 0; i < cn->ptab_size; i++) {
        for (preq_t *p = cn->ptab[i], *next; p; p = next) {
            next = p->hnext;
            size_t b = util_mix64(p->rid) & (nsize - 1);
            p->hnext = nt[b];
            nt[b] = p;
        }
    }
    free(cn->ptab);
    cn->ptab = nt;
    cn->ptab_size = nsize;
}

static void s_preq_add(cache_node_t *cn, preq_t *p)
{
    if (cn->ptab_count + 1 > cn->ptab_size / 2)
        s_ptab_grow(cn);
    size_t b = util_mix64(p->rid) & (cn->ptab_size - 1);
    p->hnext = cn->ptab[b];
    cn->ptab[b] = p;
    cn->ptab_count++;
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
    if (!cn->ptab_size)
        return NULL;
    size_t b = util_mix64(rid) & (cn->ptab_size - 1);
    for (preq_t **pp = &cn->ptab[b]; *pp; pp = &(*pp)->hnext) {
        preq_t *p = *pp;
        if (p->rid != rid)
            continue;
        *pp = p->hnext;
        cn->ptab_count--;
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
    return NULL;
}

static fetch_t *s_fetch_find(cache_node_t *cn, const char *key, size_t klen, uint64_t hash)
{
    if (!cn->ftab_size)
        return NULL;
    for (fetch_t *f = cn->ftab[hash & (cn->ftab_size - 1)]; f; f = f->hnext)
        if (f->hash == hash && f->klen == klen && memcmp(f->key, key, klen) == 0)
            return f;
    return NULL;
}

static void s_fetch_add(cache_node_t *cn, fetch_t *f)
{
    if (cn->ftab_count + 1 > cn->ftab_size / 2) {
        size_t nsize = cn->ftab_size ? cn->ftab_size * 2 : 1024;
        fetch_t **nt = xcalloc(nsize, sizeof *nt);
        for (size_t i = 0; i < cn->ftab_size; i++) {
            for (fetch_t *x = cn->ftab[i], *next; x; x = next) {
                next = x->hnext;
                x->hnext = nt[x->hash & (nsize - 1)];
                nt[x->hash & (nsize - 1)] = x;
            }
        }
        free(cn->ftab);
        cn->ftab = nt;
        cn->ftab_size = nsize;
    }
    f->hnext = cn->ftab[f->hash & (cn->ftab_size - 1)];
    cn->ftab[f->hash & (cn->ftab_size - 1)] = f;
    cn->ftab_count++;
}

static void s_fetch_remove(cache_node_t *cn, fetch_t *f)
{
    for (fetch_t **pp = &cn->ftab[f->hash & (cn->ftab_size - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == f) {
            *pp = f->hnext;
            cn->ftab_count--;
            return;
        }
    }
}

static uint64_t s_hash(const char *k, size_t len)
{
    return util_hash64(k, len, 0x5eed);
}

/* ==== replies to gateways ==================================================================== */

static void s_send_to(cache_node_t *cn, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    if (cn->in_batch && ident_len == cn->batch_ident_len && memcmp(ident, cn->batch_ident, ident_len) == 0) {
        proto_batch_add(&cn->out_batch, b->data, b->len);
        proto_buf_reset(b);
        if (cn->out_batch.data.len >= PROTO_BATCH_SOFT_MAX) { /* keep frames small: send this part now */
            proto_batch_encode(&cn->out_batch, &cn->out_frame);
            proto_batch_reset(&cn->out_batch);
            cn->in_batch = false;
            s_send_to(cn, ident, ident_len, &cn->out_frame);
            cn->in_batch = true;
        }
        return;
    }
    size_t len;
    char *data = proto_buf_steal(b, &len);
    cn->sent_router = true;
    if (zu_send_owned(cn->router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply to gateway dropped: %s", zmq_strerror(errno));
}

static void s_reply_status(cache_node_t *cn, const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status, const char *msg)
{
    proto_buf_reset(&cn->buf);
    proto_enc_reply(&cn->buf, rid, status, 0, NULL, 0, msg, 0);
    s_send_to(cn, ident, ident_len, &cn->buf);
}

/* The store answers recently -- and, behind a relay, the relay's link to the center is up. */
static bool s_store_up(cache_node_t *cn)
{
    return cn->link_up && util_mono_ms() - cn->last_store_ok_ms < cn->cfg.store_down_ms;
}

static void s_greq_finish(cache_node_t *cn, greq_t *g)
{
    proto_enc_t e;
    proto_buf_reset(&cn->buf);
    proto_enc_init(&e, &cn->buf);
    uint32_t flags = g->stale ? PROTO_REPLY_F_STALE : 0;
    if (g->status != PROTO_OK) {
        proto_enc_reply_raw_begin(&e, g->rid, g->status, 0, 0);
        proto_enc_reply_raw_end(&e, g->status == PROTO_ETIMEOUT ? "store timed out" : "store unavailable", flags);
    } else {
        uint32_t found = 0;
        for (uint32_t i = 0; i < g->nkeys; i++)
            found += g->vals[i].len > 0;
        uint8_t st = (g->type == PROTO_GET && !found) ? PROTO_NOTFOUND : PROTO_OK;
        proto_enc_reply_raw_begin(&e, g->rid, st, 0, found);
        for (uint32_t i = 0; i < g->nkeys; i++)
            if (g->vals[i].len)
                proto_enc_raw(&e, g->vals[i].data, g->vals[i].len);
        proto_enc_reply_raw_end(&e, NULL, flags);
    }
    s_send_to(cn, g->ident, g->ident_len, &cn->buf);
    for (uint32_t i = 0; i < g->nkeys; i++)
        proto_buf_fini(&g->vals[i]);
    free(g->vals);
    free(g);
}

/* ==== store requests ========================================================================= */

static preq_t *s_preq_new(cache_node_t *cn, uint8_t kind)
{
    preq_t *p = xcalloc(1, sizeof *p);
    p->kind = kind;
    p->rid = cn->next_rid++;
    p->deadline = util_mono_ms() + cn->cfg.store_timeout_ms;
    p->sent_us = util_mono_us();
    return p;
}

static void s_store_flush(cache_node_t *cn);

/* Queue b (a command whose request id is rid) for the store; it leaves with the rest of this
 * loop turn's commands (s_store_flush). */
static void s_store_queue(cache_node_t *cn, proto_buf_t *b, uint64_t rid)
{
    if (cn->store_batch.n == cn->store_rids_cap) {
        cn->store_rids_cap = cn->store_rids_cap ? cn->store_rids_cap * 2 : 256;
        cn->store_rids = xrealloc(cn->store_rids, cn->store_rids_cap * sizeof *cn->store_rids);
    }
    cn->store_rids[cn->store_batch.n] = rid;
    proto_batch_add(&cn->store_batch, b->data, b->len);
    if (cn->store_batch.data.len >= PROTO_BATCH_SOFT_MAX)
        s_store_flush(cn);
}

static void s_preq_fail(cache_node_t *cn, preq_t *p, uint8_t status);
static preq_t *s_preq_take(cache_node_t *cn, uint64_t rid);

static preq_t *s_preq_find(cache_node_t *cn, uint64_t rid)
{
    if (!cn->ptab_size)
        return NULL;
    for (preq_t *p = cn->ptab[util_mix64(rid) & (cn->ptab_size - 1)]; p; p = p->hnext)
        if (p->rid == rid)
            return p;
    return NULL;
}

/* Writes whose gateway deadline passed before they left (the process was stopped between taking
 * them and sending them) are answered ETIMEOUT instead of being sent: see s_handle_write. */
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
            s_preq_fail(cn, s_preq_take(cn, p->rid), PROTO_ETIMEOUT);
            continue;
        }
        proto_batch_add(&keep, b->data.data + start, b->ends[i] - start);
        cn->store_rids[nk++] = cn->store_rids[i];
    }
    proto_batch_fini(&cn->store_batch);
    cn->store_batch = keep;
}

static void s_store_flush(cache_node_t *cn)
{
    if (cn->store_batch_deadline && util_now_us() >= cn->store_batch_deadline)
        s_store_drop_expired(cn, util_now_us());
    cn->store_batch_deadline = 0;
    if (!cn->store_batch.n)
        return;
    proto_batch_encode(&cn->store_batch, &cn->buf);
    uint32_t n = cn->store_batch.n;
    proto_batch_reset(&cn->store_batch);
    cn->sent_store = true;
    if (zu_send(cn->store, NULL, 0, cn->buf.data, cn->buf.len) == 0)
        return;
    /* Not connected (ZMQ_IMMEDIATE) or at the HWM: everything queued fails now, not at a deadline. */
    for (uint32_t i = 0; i < n; i++) {
        preq_t *p = s_preq_take(cn, cn->store_rids[i]);
        if (!p)
            continue;
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            cn->store_unavailable++;
        s_preq_fail(cn, p, PROTO_EUNAVAIL);
    }
}

static void s_fetch_fail(cache_node_t *cn, fetch_t *f, uint8_t status)
{
    /* The store did not answer: a key the cache holds is served from it, marked stale, as when the
     * store is known to be down. (A read that bypassed the cache because the stream is catching up
     * -- e.g. just after the store restarted, before this node's command socket reconnected -- must
     * not turn a cached record into a 503.) */
    cache_view_t v;
    proto_buf_t held;
    proto_buf_init(&held);
    bool cached = (status == PROTO_EUNAVAIL || status == PROTO_ETIMEOUT) && cache_peek(cn->cache, f->key, f->klen, &v);
    if (cached && !v.negative)
        proto_buf_append(&held, v.value, v.value_len);
    for (waiter_t *w = f->waiters, *wn; w; w = wn) {
        wn = w->next;
        greq_t *g = w->g;
        if (cached) {
            if (held.len) /* else a cached "not found" */
                proto_buf_append(&g->vals[w->slot], held.data, held.len);
            g->stale = true;
            cn->stale_served++;
        } else if (g->status == PROTO_OK) {
            g->status = status;
        }
        if (--g->outstanding == 0)
            s_greq_finish(cn, g);
        free(w);
    }
    proto_buf_fini(&held);
    free(f);
}

static void s_preq_fail(cache_node_t *cn, preq_t *p, uint8_t status)
{
    if (p->kind == PK_FORWARD) {
        s_reply_status(cn, p->ident, p->ident_len, p->client_rid, status,
                       status == PROTO_ETIMEOUT ? "store timed out" : "store unavailable");
    } else if (p->kind == PK_FETCH) {
        for (uint32_t i = 0; i < p->nfetch; i++) {
            s_fetch_remove(cn, p->fetches[i]);
            s_fetch_fail(cn, p->fetches[i], status);
        }
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

/* ==== the cache and its versions ============================================================= */

/* Put a whole record into the cache (owner fill: admission decides). */
static void s_cache_record(cache_node_t *cn, const proto_record_t *r, unsigned flags)
{
    proto_buf_reset(&cn->rec);
    proto_record_encode(&cn->rec, r);
    cache_put(cn->cache, r->user_id, r->uid_len, r->version, cn->rec.data, cn->rec.len, flags);
}

/* Remember a change to `key` for a fetch in flight. `r` is the whole record after the change (NULL
 * when unknown); `gone` means the change deleted the key. */
static void s_fetch_note(cache_node_t *cn, const char *key, size_t klen, uint64_t seq, const proto_record_t *r, bool gone)
{
    if (!cn->ftab_count)
        return;
    fetch_t *f = s_fetch_find(cn, key, klen, s_hash(key, klen));
    if (!f || seq <= f->max_seen)
        return;
    f->max_seen = seq;
    if (gone) {
        f->have_latest = true;
        f->latest_gone = true;
    } else if (r) {
        f->have_latest = true;
        f->latest_gone = false;
        f->latest = *r;
    } else {
        f->have_latest = false;
    }
}

/* Apply a change from the stream. Keys that are not resident are not inserted (the stream would
 * otherwise flood the cache with keys nobody reads here); a fetch in flight still learns of it. */
static void on_change(void *ctx, const proto_change_t *c)
{
    cache_node_t *cn = ctx;
    const proto_record_t *r = &c->rec;
    cache_view_t v;
    bool present = cache_peek(cn->cache, r->user_id, r->uid_len, &v) && v.version < r->version;
    switch (c->kind) {
    case PROTO_CH_SET:
        s_fetch_note(cn, r->user_id, r->uid_len, r->version, r, false);
        if (present)
            s_cache_record(cn, r, CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_DEL:
        s_fetch_note(cn, r->user_id, r->uid_len, r->version, NULL, true);
        if (present)
            cache_put(cn->cache, r->user_id, r->uid_len, r->version, "", 0, CACHE_PUT_NEGATIVE | CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_TOUCH: {
        /* A compact heartbeat change: rebuild the whole record from what we hold. */
        proto_record_t full;
        bool have = false;
        if (present && !v.negative && proto_record_decode(v.value, v.value_len, &full) == 0)
            have = true;
        fetch_t *f = cn->ftab_count ? s_fetch_find(cn, r->user_id, r->uid_len, s_hash(r->user_id, r->uid_len)) : NULL;
        if (!have && f && f->have_latest && !f->latest_gone) {
            full = f->latest;
            have = true;
        }
        if (have) {
            full.last_seen_us = r->last_seen_us;
            full.expires_at_us = r->expires_at_us;
            full.ttl_s = r->ttl_s;
            proto_record_set_node(&full, r->node_id, r->node_len);
            full.version = r->version;
        }
        s_fetch_note(cn, r->user_id, r->uid_len, r->version, have ? &full : NULL, false);
        if (present) {
            if (have)
                s_cache_record(cn, &full, CACHE_PUT_IF_PRESENT);
            else
                cache_del(cn->cache, r->user_id, r->uid_len); /* cannot rebuild: drop rather than keep stale */
        }
        break;
    }
    }
}

static void on_reset(void *ctx)
{
    cache_node_t *cn = ctx;
    cache_clear(cn->cache);
    /* Fetches in flight may carry answers from a database we no longer follow: never cache them. */
    for (size_t i = 0; i < cn->ftab_size; i++)
        for (fetch_t *f = cn->ftab[i]; f; f = f->hnext) {
            f->max_seen = UINT64_MAX;
            f->have_latest = false;
        }
}

static void on_sync_state(void *ctx, int state)
{
    cache_node_t *cn = ctx;
    /* The relay's heartbeat says at once when its link to the center goes down or comes back;
     * its PONGs (every PING_INTERVAL_MS) say it too, later. */
    if (state == SYNC_UPSTREAM_DOWN)
        cn->link_up = false;
    else if (state == SYNC_LIVE)
        cn->link_up = true;
    LOG(state == SYNC_LIVE ? LOG_INFO : LOG_NOTICE, "sync state: %s", sync_state_name(state));
}

/* ==== gateway reads ========================================================================== */

static void s_waiter_add(cache_node_t *cn, fetch_t *f, greq_t *g, uint32_t slot)
{
    waiter_t *w = xmalloc(sizeof *w);
    w->g = g;
    w->slot = slot;
    w->next = f->waiters;
    f->waiters = w;
}

static void s_handle_read(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    cn->reads_total++;
    uint32_t n = m->type == PROTO_GET ? 1 : m->n;
    const proto_str_t *keys = m->type == PROTO_GET ? &m->key : m->keys;
    bool live = sync_client_state(cn->sync) == SYNC_LIVE && util_mono_ms() >= cn->distrust_until_ms;
    bool store_up = s_store_up(cn);
    /* Untrusted stream but a reachable store: read through. Unreachable store: serve what we
     * have, marked stale. */
    bool use_cache = live || !store_up;
    if (!use_cache)
        cn->bypass_reads++;

    greq_t *g = xcalloc(1, sizeof *g);
    memcpy(g->ident, ident, ident_len);
    g->ident_len = (uint8_t)ident_len;
    g->type = m->type;
    g->rid = m->rid;
    g->nkeys = n;
    g->vals = xcalloc(n ? n : 1, sizeof *g->vals);
    g->outstanding = 1; /* held until the loop below is done */

    fetch_t **newf = NULL;
    uint32_t nnew = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k = keys[i].p;
        size_t kl = keys[i].len;
        cache_view_t v;
        if (use_cache && cache_get(cn->cache, k, kl, &v)) {
            if (!v.negative)
                proto_buf_append(&g->vals[i], v.value, v.value_len);
            if (!live) {
                g->stale = true;
                cn->stale_served++;
            }
            continue;
        }
        if (!store_up) {
            /* Miss while the store is unreachable: 503 quickly instead of waiting a timeout. */
            g->status = PROTO_EUNAVAIL;
            continue;
        }
        uint64_t h = s_hash(k, kl);
        fetch_t *f = s_fetch_find(cn, k, kl, h);
        if (f) {
            cn->coalesced_total++;
        } else {
            f = xcalloc(1, sizeof *f);
            f->hash = h;
            f->klen = (uint8_t)kl;
            memcpy(f->key, k, kl);
            s_fetch_add(cn, f);
            if (!newf)
                newf = xmalloc(n * sizeof *newf);
            newf[nnew++] = f;
        }
        s_waiter_add(cn, f, g, i);
        g->outstanding++;
    }
    if (nnew) {
        /* One store request for every key this read could not answer. */
        preq_t *p = s_preq_new(cn, PK_FETCH);
        p->fetches = newf;
        p->nfetch = nnew;
        proto_str_t *ks = xmalloc(nnew * sizeof *ks);
        for (uint32_t i = 0; i < nnew; i++) {
            ks[i].p = newf[i]->key;
            ks[i].len = newf[i]->klen;
        }
        proto_buf_reset(&cn->buf);
        proto_enc_keys(&cn->buf, p->rid, ks, nnew);
        free(ks);
        cn->fetches_total++;
        cn->fetch_keys_total += nnew;
        s_preq_add(cn, p);
        s_store_queue(cn, &cn->buf, p->rid);
    }
    if (--g->outstanding == 0)
        s_greq_finish(cn, g);
}

/* Resolve a fetch with the store's answer: `r` (NULL = not found) as of sequence as_of. */
static void s_fetch_resolve(cache_node_t *cn, fetch_t *f, const proto_record_t *r, uint64_t as_of)
{
    const proto_record_t *best = r;
    bool gone = r == NULL;
    uint64_t ver = r ? r->version : as_of;
    bool cacheable = true;
    if (f->max_seen > ver) {
        /* Something newer happened while the answer was on its way. */
        if (f->have_latest) {
            best = f->latest_gone ? NULL : &f->latest;
            gone = f->latest_gone;
            ver = f->max_seen;
        } else {
            cacheable = false;
            cn->fills_dropped++;
        }
    }
    if (cacheable && f->max_seen != UINT64_MAX) {
        if (gone)
            cache_put(cn->cache, f->key, f->klen, ver, "", 0, CACHE_PUT_NEGATIVE);
        else
            s_cache_record(cn, best, 0);
    }
    proto_buf_reset(&cn->rec);
    if (!gone)
        proto_record_encode(&cn->rec, best);
    for (waiter_t *w = f->waiters, *wn; w; w = wn) {
        wn = w->next;
        greq_t *g = w->g;
        if (!gone)
            proto_buf_append(&g->vals[w->slot], cn->rec.data, cn->rec.len);
        if (--g->outstanding == 0)
            s_greq_finish(cn, g);
        free(w);
    }
    free(f);
}

static void s_on_fetch_reply(cache_node_t *cn, preq_t *p, const proto_msg_t *m)
{
    if (m->status != PROTO_OK) {
        for (uint32_t i = 0; i < p->nfetch; i++) {
            s_fetch_remove(cn, p->fetches[i]);
            s_fetch_fail(cn, p->fetches[i], m->status == PROTO_EOVERLOAD ? PROTO_EOVERLOAD : PROTO_EUNAVAIL);
        }
        return;
    }
    /* The store answers found records in request order: merge. */
    uint32_t j = 0;
    for (uint32_t i = 0; i < p->nfetch; i++) {
        fetch_t *f = p->fetches[i];
        s_fetch_remove(cn, f);
        const proto_record_t *r = NULL;
        if (j < m->n && m->recs[j].uid_len == f->klen && memcmp(m->recs[j].user_id, f->key, f->klen) == 0)
            r = &m->recs[j++];
        s_fetch_resolve(cn, f, r, m->seq);
    }
}

/* ==== gateway writes ========================================================================= */

static void s_handle_write(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    cn->writes_total++;
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* The gateway has given up on it (504) and may already have had the client's next write
         * acknowledged through another node: forwarding it now could undo that write. This happens
         * when this process was stopped or starved with the command queued on its socket. (The
         * same check runs again just before the command leaves for the store: s_store_flush.) */
        cn->expired_writes++;
        LOG_RATELIMITED(LOG_WARN, 1000, "write from a gateway dropped: its deadline passed %llu ms ago",
                        (unsigned long long)((util_now_us() - m->deadline_us) / 1000));
        s_reply_status(cn, ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    if (!s_store_up(cn)) {
        cn->store_unavailable++;
        s_reply_status(cn, ident, ident_len, m->rid, PROTO_EUNAVAIL, "store unavailable");
        return;
    }
    preq_t *p = s_preq_new(cn, PK_FORWARD);
    p->type = m->type;
    memcpy(p->ident, ident, ident_len);
    p->ident_len = (uint8_t)ident_len;
    p->client_rid = m->rid;
    p->write_deadline_us = m->deadline_us;
    if (m->deadline_us && (!cn->store_batch_deadline || m->deadline_us < cn->store_batch_deadline))
        cn->store_batch_deadline = m->deadline_us;
    if (m->type == PROTO_DEL) {
        memcpy(p->key, m->key.p, m->key.len);
        p->klen = (uint8_t)m->key.len;
    }
    /* The store (or the relay, and the center behind it) must not apply the write once we have
     * given up on it: we answer ETIMEOUT at store_timeout_ms, and the client may then write again
     * through another region or node. Ask it to refuse after our deadline less a margin for its
     * commit, so that whatever it applies lands before our ETIMEOUT (PROTOCOL.md, write deadline). */
    uint64_t margin_ms = MIN(100, cn->cfg.store_timeout_ms / 4);
    uint64_t dl = util_now_us() + (cn->cfg.store_timeout_ms - margin_ms) * 1000u;
    if (m->deadline_us && m->deadline_us < dl)
        dl = m->deadline_us;
    proto_buf_reset(&cn->buf);
    if (m->type == PROTO_DEL)
        proto_enc_get_dl(&cn->buf, PROTO_DEL, p->rid, m->key.p, m->key.len, dl);
    else
        proto_enc_records_cmd_dl(&cn->buf, m->type, p->rid, m->recs, m->n, dl);
    s_preq_add(cn, p);
    s_store_queue(cn, &cn->buf, p->rid);
}

static void s_on_forward_reply(cache_node_t *cn, preq_t *p, const proto_msg_t *m)
{
    if (p->type == PROTO_DEL && (m->status == PROTO_OK || m->status == PROTO_NOTFOUND) && m->seq) {
        /* Known absent as of the tombstone (or, for a miss, of the store's sequence). */
        s_fetch_note(cn, p->key, p->klen, m->seq, NULL, true);
        cache_put(cn->cache, p->key, p->klen, m->seq, "", 0, CACHE_PUT_NEGATIVE);
    } else if (m->status == PROTO_OK) {
        for (uint32_t i = 0; i < m->n; i++) {
            s_fetch_note(cn, m->recs[i].user_id, m->recs[i].uid_len, m->recs[i].version, &m->recs[i], false);
            s_cache_record(cn, &m->recs[i], 0);
        }
    }
    char errmsg[PROTO_ERRMSG_MAX + 1];
    memcpy(errmsg, m->key.p ? m->key.p : "", m->key.len);
    errmsg[m->key.len] = '\0';
    proto_buf_reset(&cn->buf);
    proto_enc_reply(&cn->buf, p->client_rid, m->status, m->seq, m->recs, m->n, errmsg, 0);
    s_send_to(cn, p->ident, p->ident_len, &cn->buf);
}

/* ==== stats and health ======================================================================= */

static void s_collect_stats(cache_node_t *cn, stats_list_t *l, bool full)
{
    cache_metrics_t cm;
    cache_get_metrics(cn->cache, &cm);
    sync_stats_t ss;
    sync_client_get_stats(cn->sync, &ss);
    const char *id = cn->cfg.id;
    stats_addf(l, ss.state, "cache_sync_state{node=\"%s\"}", id);
    stats_addf(l, ss.seq, "sync_sequence{node=\"%s\"}", id);
    stats_addf(l, ss.epoch, "sync_epoch{node=\"%s\"}", id);
    stats_addf(l, ss.lag_ms * 1000, "sync_lag_seconds{node=\"%s\"}:us", id);
    /* Requests are served optimistically from the start (s_store_up); readiness and health report
     * the store path only once it has really answered. */
    stats_addf(l, s_store_up(cn) && cn->store_answered, "cache_store_up{node=\"%s\"}", id);
    stats_addf(l, cn->store_rtt_us, "cache_store_rtt_seconds{node=\"%s\"}:us", id);
    stats_addf(l, cn->store_seq, "cache_store_sequence{node=\"%s\"}", id);
    stats_addf(l, cn->link_up, "cache_link_up{node=\"%s\"}", id);
    stats_addf(l, cn->link_lag_us, "cache_link_lag_seconds{node=\"%s\"}:us", id);
    stats_addf(l, cm.items, "cache_items{node=\"%s\"}", id);
    if (!full)
        return;
    stats_addf(l, ss.gaps, "sync_gaps_total{node=\"%s\"}", id);
    stats_addf(l, ss.resyncs, "sync_resyncs_total{node=\"%s\"}", id);
    stats_addf(l, ss.snapshots, "sync_snapshots_total{node=\"%s\"}", id);
    stats_addf(l, ss.silences, "sync_silences_total{node=\"%s\"}", id);
    stats_addf(l, ss.changes_applied, "sync_changes_applied_total{node=\"%s\"}", id);
    stats_addf(l, ss.malformed + cn->malformed_total, "cache_malformed_total{node=\"%s\"}", id);
    stats_addf(l, cm.hits, "cache_hits_total{node=\"%s\"}", id);
    stats_addf(l, cm.misses, "cache_misses_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_added, "cache_keys_added_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_updated, "cache_keys_updated_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_evicted, "cache_evictions_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost_added, "cache_cost_added_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost_evicted, "cache_cost_evicted_total{node=\"%s\"}", id);
    stats_addf(l, cm.rejections, "cache_rejections_total{node=\"%s\"}", id);
    stats_addf(l, cm.stale_refused, "cache_stale_refused_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost, "cache_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cm.max_cost, "cache_max_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cm.window_max_cost, "cache_window_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cn->requests_total, "cache_requests_total{node=\"%s\"}", id);
    stats_addf(l, cn->fetches_total, "cache_store_fetches_total{node=\"%s\"}", id);
    stats_addf(l, cn->fetch_keys_total, "cache_store_fetch_keys_total{node=\"%s\"}", id);
    stats_addf(l, cn->coalesced_total, "cache_coalesced_misses_total{node=\"%s\"}", id);
    stats_addf(l, cn->store_timeouts, "cache_store_timeouts_total{node=\"%s\"}", id);
    stats_addf(l, cn->store_unavailable, "cache_store_unavailable_total{node=\"%s\"}", id);
    stats_addf(l, cn->stale_served, "cache_stale_served_total{node=\"%s\"}", id);
    stats_addf(l, cn->bypass_reads, "cache_bypass_reads_total{node=\"%s\"}", id);
    stats_addf(l, cn->fills_dropped, "cache_fills_dropped_total{node=\"%s\"}", id);
    stats_addf(l, cn->expired_writes, "cache_expired_writes_total{node=\"%s\"}", id);
    stats_addf(l, cn->stalls, "cache_stalls_total{node=\"%s\"}", id);
    stats_addf(l, cn->ptab_count, "cache_store_inflight{node=\"%s\"}", id);
    /* The store's own numbers, as last polled (the gateway keeps one copy). */
    for (uint32_t i = 0; i < cn->store_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, cn->store_stats.v[i].name.p, cn->store_stats.v[i].name.len);
        name[cn->store_stats.v[i].name.len] = '\0';
        stats_add(l, name, cn->store_stats.v[i].value);
    }
}

static void s_handle_stats(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    s_collect_stats(cn, &l, m->type == PROTO_STATS);
    proto_buf_reset(&cn->buf);
    proto_enc_stats(&cn->buf, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    stats_list_fini(&l);
    s_send_to(cn, ident, ident_len, &cn->buf);
}

static void s_poll_store(cache_node_t *cn, uint64_t now)
{
    if (now >= cn->next_ping_ms && !cn->ping_out) {
        preq_t *p = s_preq_new(cn, PK_PING);
        proto_buf_reset(&cn->buf);
        proto_enc_simple(&cn->buf, PROTO_PING, p->rid);
        cn->ping_out = true;
        s_preq_add(cn, p);
        s_store_queue(cn, &cn->buf, p->rid);
        cn->next_ping_ms = now + PING_INTERVAL_MS;
    }
    if (now >= cn->next_stats_ms && !cn->stats_out) {
        preq_t *p = s_preq_new(cn, PK_STATS);
        proto_buf_reset(&cn->buf);
        proto_enc_simple(&cn->buf, PROTO_STATS, p->rid);
        cn->stats_out = true;
        s_preq_add(cn, p);
        s_store_queue(cn, &cn->buf, p->rid);
        cn->next_stats_ms = now + STATS_INTERVAL_MS;
    }
}

/* ==== dispatch =============================================================================== */

static void s_on_request(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested);

static void s_on_gateway(cache_node_t *cn, zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        cn->malformed_total++;
        return;
    }
    s_on_request(cn, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                 zmq_msg_size(&frames[1]), false);
}

static void s_on_request(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        cn->malformed_total++;
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed request from a gateway: %s", nested ? "nested batch" : m.err);
        uint8_t type;
        uint64_t rid;
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_reply_status(cn, ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        /* Answer what can be answered now in one frame; deferred answers (misses, writes) leave
         * on their own when they are ready. */
        cn->in_batch = true;
        cn->batch_ident = ident;
        cn->batch_ident_len = ident_len;
        proto_batch_reset(&cn->out_batch);
        for (uint32_t i = 0; i < m.n; i++)
            s_on_request(cn, ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        cn->in_batch = false;
        if (cn->out_batch.n) {
            proto_batch_encode(&cn->out_batch, &cn->out_frame);
            s_send_to(cn, ident, ident_len, &cn->out_frame);
        }
        proto_msg_fini(&m);
        return;
    }
    cn->requests_total++;
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
        s_handle_read(cn, ident, ident_len, &m);
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_handle_write(cn, ident, ident_len, &m);
        break;
    case PROTO_APPLY:
        for (uint32_t i = 0; i < m.n; i++) {
            s_fetch_note(cn, m.recs[i].user_id, m.recs[i].uid_len, m.recs[i].version, &m.recs[i], false);
            s_cache_record(cn, &m.recs[i], 0);
        }
        s_reply_status(cn, ident, ident_len, m.rid, PROTO_OK, NULL);
        break;
    case PROTO_PING:
    case PROTO_STATS:
        s_handle_stats(cn, ident, ident_len, &m);
        break;
    default:
        cn->malformed_total++;
        s_reply_status(cn, ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}

static void s_on_store_msg(cache_node_t *cn, const void *data, size_t len, bool nested);

static void s_on_store(cache_node_t *cn, zmq_msg_t *frames, int n)
{
    if (n != 1) {
        cn->malformed_total++;
        return;
    }
    s_on_store_msg(cn, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), false);
}

static void s_on_store_msg(cache_node_t *cn, const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        cn->malformed_total++;
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        for (uint32_t i = 0; i < m.n; i++)
            s_on_store_msg(cn, m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    preq_t *p = s_preq_take(cn, m.rid);
    if (!p) {
        proto_msg_fini(&m); /* an answer after its deadline: already answered as a timeout */
        return;
    }
    uint64_t now = util_mono_ms();
    /* An answer proves the store path works, unless it says it does not (a relay without its
     * center answers EUNAVAIL, and its PONG says relay_link_up 0). */
    if ((p->kind == PK_FORWARD || p->kind == PK_FETCH) && m.status != PROTO_EUNAVAIL && m.status != PROTO_ETIMEOUT) {
        cn->last_store_ok_ms = now;
        cn->store_answered = true;
    }
    uint64_t rtt = util_mono_us() - p->sent_us;
    cn->store_rtt_us = rtt;
    stats_hist_observe(&cn->store_rtt_hist, rtt);
    switch (p->kind) {
    case PK_FORWARD:
        if (m.type == PROTO_REPLY)
            s_on_forward_reply(cn, p, &m);
        else
            s_reply_status(cn, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "unexpected store reply");
        break;
    case PK_FETCH:
        if (m.type == PROTO_REPLY)
            s_on_fetch_reply(cn, p, &m);
        else
            for (uint32_t i = 0; i < p->nfetch; i++) {
                s_fetch_remove(cn, p->fetches[i]);
                s_fetch_fail(cn, p->fetches[i], PROTO_EINTERNAL);
            }
        break;
    case PK_PING:
        cn->ping_out = false;
        if (m.type == PROTO_PONG) {
            uint64_t link = 1, lag = 0;
            stats_find(m.stats, m.n, "store_epoch", &cn->store_epoch);
            stats_find(m.stats, m.n, "store_sequence", &cn->store_seq);
            stats_find(m.stats, m.n, "relay_link_up", &link);
            stats_find(m.stats, m.n, "relay_lag_seconds:us", &lag);
            cn->link_up = link != 0;
            cn->link_lag_us = lag;
            if (cn->link_up) {
                cn->last_store_ok_ms = now;
                cn->store_answered = true;
            }
        }
        break;
    case PK_STATS:
        cn->stats_out = false;
        if (m.type == PROTO_STATS_REPLY) {
            stats_list_reset(&cn->store_stats);
            for (uint32_t i = 0; i < m.n; i++) {
                char name[PROTO_STAT_NAME_MAX + 1];
                memcpy(name, m.stats[i].name.p, m.stats[i].name.len);
                name[m.stats[i].name.len] = '\0';
                if (strncmp(name, "store_", 6) == 0 || strncmp(name, "relay_", 6) == 0)
                    stats_add(&cn->store_stats, name, m.stats[i].value);
            }
        }
        break;
    }
    free(p->fetches);
    free(p);
    proto_msg_fini(&m);
}

static void s_expire(cache_node_t *cn, uint64_t now)
{
    while (cn->t_head && cn->t_head->deadline <= now) {
        preq_t *p = s_preq_take(cn, cn->t_head->rid);
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            cn->store_timeouts++;
        s_preq_fail(cn, p, PROTO_ETIMEOUT);
    }
}

/* This process did not run for `ms` (SIGSTOP, a VM pause, starvation). Gateways may have timed
 * out on us and routed our keys to another node; writes acknowledged there reach us only through
 * the stream -- its backlog, and for writes still in flight when a gateway routes our keys back to
 * us, a few milliseconds after the client got its answer. Serving reads from the cache meanwhile
 * could show a client an older version than one it was acknowledged. So: catch up, and read
 * through to the store for two request timeouts (every gateway has routed back to us, and every
 * write it sent elsewhere before has been answered and reached us, well within that); and
 * re-learn the store's state instead of judging it by answers we were not there to receive. */
static void s_stalled(cache_node_t *cn, uint64_t ms)
{
    cn->stalls++;
    LOG_RATELIMITED(LOG_WARN, 1000, "did not run for %llu ms: reading through to the store for %llu ms",
                    (unsigned long long)ms, (unsigned long long)(2 * cn->cfg.req_timeout_ms));
    sync_client_resync(cn->sync);
    uint64_t now = util_mono_ms();
    cn->last_store_ok_ms = now;
    cn->distrust_until_ms = now + 2 * cn->cfg.req_timeout_ms;
}


/* ==== the node's life ======================================================================== */

static int s_sockets(cache_node_t *cn, char *err)
{
    const cache_node_config_t *c = &cn->cfg;
    cn->router = zu_socket(cn->zctx, ZMQ_ROUTER, 200000, 200000);
    cn->store = zu_socket(cn->zctx, ZMQ_DEALER, 200000, 200000);
    int one = 1, ivl_max = 1000;
    zmq_setsockopt(cn->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(cn->store, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(cn->store, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (zmq_bind(cn->router, c->endpoint) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s: %s", c->endpoint, zmq_strerror(errno));
        return -1;
    }
    if (zmq_connect(cn->store, c->store_cmd) < 0) {
        snprintf(err, CFG_ERR_LEN, "connect %s: %s", c->store_cmd, zmq_strerror(errno));
        return -1;
    }
    sync_config_t scfg = {.pub_ep = c->store_pub, .cmd_ep = c->store_cmd, .heartbeat_limit_ms = c->hb_limit_ms,
                          .request_timeout_ms = c->store_timeout_ms, .sub_hwm = (uint32_t)c->sub_hwm};
    sync_handler_t sh = {.ctx = cn, .apply = on_change, .reset = on_reset, .state = on_sync_state};
    cn->sync = sync_client_new(cn->zctx, &scfg, &sh, err);
    return cn->sync ? 0 : -1;
}

int cache_node_new(void *zctx, const cache_node_config_t *c, cache_node_t **out, char *err)
{
    *out = NULL;
    cache_config_t cc = {.max_cost = c->max_cost, .num_counters = c->counters, .policy = c->policy};
    cache_t *cache = cache_new(&cc);
    if (!cache) {
        snprintf(err, CFG_ERR_LEN, "invalid cache configuration");
        return -2;
    }
    cache_node_t *cn = xcalloc(1, sizeof *cn);
    cn->cfg = *c;
    cn->zctx = zctx;
    cn->cache = cache;
    proto_buf_init(&cn->buf);
    proto_buf_init(&cn->rec);
    proto_batch_init(&cn->out_batch);
    proto_buf_init(&cn->out_frame);
    proto_batch_init(&cn->store_batch);
    stats_list_init(&cn->store_stats);
    stats_hist_init_latency(&cn->store_rtt_hist);
    cn->next_rid = 1;
    cn->last_store_ok_ms = util_mono_ms(); /* optimistic until the first ping says otherwise */
    /* Just (re)started: gateways route our keys back to us as soon as we answer, while writes they
     * sent to the other nodes meanwhile may still be on their way to us in the stream. */
    cn->distrust_until_ms = util_mono_ms() + 2 * c->req_timeout_ms;
    cn->link_up = true;
    cn->again = true; /* drain once before the first wait */
    cn->woke = util_mono_ms();
    if (s_sockets(cn, err) < 0) {
        cache_node_destroy(&cn);
        return -1;
    }
    *out = cn;
    return 0;
}

void cache_node_destroy(cache_node_t **np)
{
    cache_node_t *cn = *np;
    if (!cn)
        return;
    /* Answer what is still pending so gateways are not left waiting for a deadline. */
    while (cn->t_head) {
        preq_t *p = s_preq_take(cn, cn->t_head->rid);
        s_preq_fail(cn, p, PROTO_EUNAVAIL);
    }
    sync_client_destroy(&cn->sync);
    if (cn->router)
        zmq_close(cn->router);
    if (cn->store)
        zmq_close(cn->store);
    cache_destroy(&cn->cache);
    free(cn->ptab);
    free(cn->ftab);
    stats_list_fini(&cn->store_stats);
    proto_buf_fini(&cn->buf);
    proto_buf_fini(&cn->rec);
    proto_batch_fini(&cn->out_batch);
    proto_buf_fini(&cn->out_frame);
    proto_batch_fini(&cn->store_batch);
    free(cn->store_rids);
    free(cn);
    *np = NULL;
}

/* The loop polls the sockets' ZMQ_FDs itself instead of zmq_poll, which would ask every socket for
 * ZMQ_EVENTS before and after its poll (each a getpid + poll syscall pair). The contract that makes
 * this safe: after a socket was drained to EAGAIN, a new message signals its ZMQ_FD -- unless a
 * send on that socket consumed the signal, so sockets sent on get one ZMQ_EVENTS check before we
 * block; a drain that stopped at its bound polls with timeout 0. */
int cache_node_turn(cache_node_t *cn, const volatile sig_atomic_t *stop)
{
    zmq_pollitem_t items[4];
    struct pollfd pfd[4];
    uint64_t now = util_mono_ms();
    if (now - cn->woke > 2 * cn->cfg.stall_ms)
        s_stalled(cn, now - cn->woke); /* between handling the last wake-up and here */
    uint64_t next = sync_client_tick(cn->sync, now);
    s_expire(cn, now);
    s_poll_store(cn, now);
    next = MIN(next, cn->next_ping_ms);
    next = MIN(next, cn->next_stats_ms);
    if (cn->t_head)
        next = MIN(next, cn->t_head->deadline);
    sync_client_poll_items(cn->sync, items);
    items[2] = (zmq_pollitem_t){.socket = cn->store, .events = ZMQ_POLLIN};
    items[3] = (zmq_pollitem_t){.socket = cn->router, .events = ZMQ_POLLIN};
    s_store_flush(cn); /* pings and anything queued outside the request path */
    if (sync_client_take_sent(cn->sync) && !cn->again)
        cn->again = zu_readable(items[1].socket);
    if (cn->sent_store && !cn->again)
        cn->again = zu_readable(cn->store);
    if (cn->sent_router && !cn->again)
        cn->again = zu_readable(cn->router);
    cn->sent_store = cn->sent_router = false;
    long timeout = cn->again || next <= now ? 0 : (long)MIN(next - now, cn->cfg.stall_ms);
    for (int i = 0; i < 4; i++)
        pfd[i] = (struct pollfd){.fd = zu_fd(items[i].socket), .events = POLLIN};
    uint64_t before = util_mono_ms();
    if (poll(pfd, 4, (int)timeout) < 0 && errno != EINTR) {
        LOG(LOG_ERROR, "poll: %s", strerror(errno));
        return -1;
    }
    cn->woke = util_mono_ms();
    if (cn->woke - before > (uint64_t)timeout + 2 * cn->cfg.stall_ms)
        s_stalled(cn, cn->woke - before - (uint64_t)timeout); /* inside the wait: before reading anything */
    cn->again = false;
    /* Stream first: changes already delivered are applied before reads are answered. */
    if (sync_client_handle(cn->sync))
        cn->again = true;
    int k;
    for (k = 0; k < 4096; k++) {
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(cn->store, frames, ZU_FRAMES_MAX, &nf) < 0) {
            if (errno == EPROTO)
                continue;
            break;
        }
        s_on_store(cn, frames, nf);
        zu_close_frames(frames, nf);
    }
    if (k == 4096)
        cn->again = true;
    for (k = 0; k < 4096 && !(stop && *stop); k++) {
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int nf;
        /* Stopped in the middle of this drain, we would go on reading what queued up meanwhile. */
        uint64_t t = util_mono_ms();
        if (t - cn->woke > 2 * cn->cfg.stall_ms)
            s_stalled(cn, t - cn->woke);
        cn->woke = t;
        if (zu_recv(cn->router, frames, ZU_FRAMES_MAX, &nf) < 0) {
            if (errno == EPROTO) {
                cn->malformed_total++;
                continue;
            }
            break;
        }
        s_on_gateway(cn, frames, nf);
        zu_close_frames(frames, nf);
    }
    if (k == 4096)
        cn->again = true;
    s_store_flush(cn);
    return 0;
}

int cache_node_run(cache_node_t *cn, const volatile sig_atomic_t *stop)
{
    while (!*stop)
        if (cache_node_turn(cn, stop) < 0)
            return -1;
    return 0;
}
