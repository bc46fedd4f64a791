/* cache_node.c -- the cache-node process: a W-TinyLFU cache tier kept coherent with the store.
 *
 * One thread, one poll loop over four sockets (their ZMQ_FDs; see the loop for the contract):
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
#include "cache.h"
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static struct {
    bool sent_router, sent_store; /* sent on since the last post-send check (ZMQ_FD contract) */
    /* config */
    char data_dir[400], id[64];
    char endpoint[512], store_cmd[512], store_pub[512];
    uint64_t max_cost, counters, store_timeout_ms, hb_limit_ms, store_down_ms, sub_hwm;
    uint64_t stall_ms; /* longest wait in poll; twice this without running = stalled (s_stalled) */
    uint64_t req_timeout_ms;
    uint64_t distrust_until_ms; /* after a stall, reads go through to the store until then */
    int policy;

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
} C;

static volatile sig_atomic_t s_stop;

static void on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* ==== small hash tables ====================================================================== */

static void s_ptab_grow(void)
{
    size_t nsize = C.ptab_size ? C.ptab_size * 2 : 1024;
    preq_t **nt = xcalloc(nsize, sizeof *nt);
    for (size_t i = 0; i < C.ptab_size; i++) {
        for (preq_t *p = C.ptab[i], *next; p; p = next) {
            next = p->hnext;
            size_t b = util_mix64(p->rid) & (nsize - 1);
            p->hnext = nt[b];
            nt[b] = p;
        }
    }
    free(C.ptab);
    C.ptab = nt;
    C.ptab_size = nsize;
}

static void s_preq_add(preq_t *p)
{
    if (C.ptab_count + 1 > C.ptab_size / 2)
        s_ptab_grow();
    size_t b = util_mix64(p->rid) & (C.ptab_size - 1);
    p->hnext = C.ptab[b];
    C.ptab[b] = p;
    C.ptab_count++;
    p->tprev = C.t_tail;
    p->tnext = NULL;
    if (C.t_tail)
        C.t_tail->tnext = p;
    else
        C.t_head = p;
    C.t_tail = p;
}

/* Remove from both the table and the deadline list; returns the request or NULL. */
static preq_t *s_preq_take(uint64_t rid)
{
    if (!C.ptab_size)
        return NULL;
    size_t b = util_mix64(rid) & (C.ptab_size - 1);
    for (preq_t **pp = &C.ptab[b]; *pp; pp = &(*pp)->hnext) {
        preq_t *p = *pp;
        if (p->rid != rid)
            continue;
        *pp = p->hnext;
        C.ptab_count--;
        if (p->tprev)
            p->tprev->tnext = p->tnext;
        else
            C.t_head = p->tnext;
        if (p->tnext)
            p->tnext->tprev = p->tprev;
        else
            C.t_tail = p->tprev;
        return p;
    }
    return NULL;
}

static fetch_t *s_fetch_find(const char *key, size_t klen, uint64_t hash)
{
    if (!C.ftab_size)
        return NULL;
    for (fetch_t *f = C.ftab[hash & (C.ftab_size - 1)]; f; f = f->hnext)
        if (f->hash == hash && f->klen == klen && memcmp(f->key, key, klen) == 0)
            return f;
    return NULL;
}

static void s_fetch_add(fetch_t *f)
{
    if (C.ftab_count + 1 > C.ftab_size / 2) {
        size_t nsize = C.ftab_size ? C.ftab_size * 2 : 1024;
        fetch_t **nt = xcalloc(nsize, sizeof *nt);
        for (size_t i = 0; i < C.ftab_size; i++) {
            for (fetch_t *x = C.ftab[i], *next; x; x = next) {
                next = x->hnext;
                x->hnext = nt[x->hash & (nsize - 1)];
                nt[x->hash & (nsize - 1)] = x;
            }
        }
        free(C.ftab);
        C.ftab = nt;
        C.ftab_size = nsize;
    }
    f->hnext = C.ftab[f->hash & (C.ftab_size - 1)];
    C.ftab[f->hash & (C.ftab_size - 1)] = f;
    C.ftab_count++;
}

static void s_fetch_remove(fetch_t *f)
{
    for (fetch_t **pp = &C.ftab[f->hash & (C.ftab_size - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == f) {
            *pp = f->hnext;
            C.ftab_count--;
            return;
        }
    }
}

static uint64_t s_hash(const char *k, size_t len)
{
    return util_hash64(k, len, 0x5eed);
}

/* ==== replies to gateways ==================================================================== */

static void s_send_to(const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    if (C.in_batch && ident_len == C.batch_ident_len && memcmp(ident, C.batch_ident, ident_len) == 0) {
        proto_batch_add(&C.out_batch, b->data, b->len);
        proto_buf_reset(b);
        if (C.out_batch.data.len >= PROTO_BATCH_SOFT_MAX) { /* keep frames small: send this part now */
            proto_batch_encode(&C.out_batch, &C.out_frame);
            proto_batch_reset(&C.out_batch);
            C.in_batch = false;
            s_send_to(ident, ident_len, &C.out_frame);
            C.in_batch = true;
        }
        return;
    }
    size_t len;
    char *data = proto_buf_steal(b, &len);
    C.sent_router = true;
    if (zu_send_owned(C.router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply to gateway dropped: %s", zmq_strerror(errno));
}

static void s_reply_status(const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status, const char *msg)
{
    proto_buf_reset(&C.buf);
    proto_enc_reply(&C.buf, rid, status, 0, NULL, 0, msg, 0);
    s_send_to(ident, ident_len, &C.buf);
}

/* The store answers recently -- and, behind a relay, the relay's link to the center is up. */
static bool s_store_up(void)
{
    return C.link_up && util_mono_ms() - C.last_store_ok_ms < C.store_down_ms;
}

static void s_greq_finish(greq_t *g)
{
    proto_enc_t e;
    proto_buf_reset(&C.buf);
    proto_enc_init(&e, &C.buf);
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
    s_send_to(g->ident, g->ident_len, &C.buf);
    for (uint32_t i = 0; i < g->nkeys; i++)
        proto_buf_fini(&g->vals[i]);
    free(g->vals);
    free(g);
}

/* ==== store requests ========================================================================= */

static preq_t *s_preq_new(uint8_t kind)
{
    preq_t *p = xcalloc(1, sizeof *p);
    p->kind = kind;
    p->rid = C.next_rid++;
    p->deadline = util_mono_ms() + C.store_timeout_ms;
    p->sent_us = util_mono_us();
    return p;
}

static void s_store_flush(void);

/* Queue b (a command whose request id is rid) for the store; it leaves with the rest of this
 * loop turn's commands (s_store_flush). */
static void s_store_queue(proto_buf_t *b, uint64_t rid)
{
    if (C.store_batch.n == C.store_rids_cap) {
        C.store_rids_cap = C.store_rids_cap ? C.store_rids_cap * 2 : 256;
        C.store_rids = xrealloc(C.store_rids, C.store_rids_cap * sizeof *C.store_rids);
    }
    C.store_rids[C.store_batch.n] = rid;
    proto_batch_add(&C.store_batch, b->data, b->len);
    if (C.store_batch.data.len >= PROTO_BATCH_SOFT_MAX)
        s_store_flush();
}

static void s_preq_fail(preq_t *p, uint8_t status);
static preq_t *s_preq_take(uint64_t rid);

static preq_t *s_preq_find(uint64_t rid)
{
    if (!C.ptab_size)
        return NULL;
    for (preq_t *p = C.ptab[util_mix64(rid) & (C.ptab_size - 1)]; p; p = p->hnext)
        if (p->rid == rid)
            return p;
    return NULL;
}

/* Writes whose gateway deadline passed before they left (the process was stopped between taking
 * them and sending them) are answered ETIMEOUT instead of being sent: see s_handle_write. */
static void s_store_drop_expired(uint64_t now_us)
{
    proto_batch_t keep;
    proto_batch_init(&keep);
    const proto_batch_t *b = &C.store_batch;
    uint32_t nk = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t start = i ? b->ends[i - 1] : 0;
        preq_t *p = s_preq_find(C.store_rids[i]);
        if (p && p->kind == PK_FORWARD && p->write_deadline_us && now_us >= p->write_deadline_us) {
            C.expired_writes++;
            s_preq_fail(s_preq_take(p->rid), PROTO_ETIMEOUT);
            continue;
        }
        proto_batch_add(&keep, b->data.data + start, b->ends[i] - start);
        C.store_rids[nk++] = C.store_rids[i];
    }
    proto_batch_fini(&C.store_batch);
    C.store_batch = keep;
}

static void s_store_flush(void)
{
    if (C.store_batch_deadline && util_now_us() >= C.store_batch_deadline)
        s_store_drop_expired(util_now_us());
    C.store_batch_deadline = 0;
    if (!C.store_batch.n)
        return;
    proto_batch_encode(&C.store_batch, &C.buf);
    uint32_t n = C.store_batch.n;
    proto_batch_reset(&C.store_batch);
    C.sent_store = true;
    if (zu_send(C.store, NULL, 0, C.buf.data, C.buf.len) == 0)
        return;
    /* Not connected (ZMQ_IMMEDIATE) or at the HWM: everything queued fails now, not at a deadline. */
    for (uint32_t i = 0; i < n; i++) {
        preq_t *p = s_preq_take(C.store_rids[i]);
        if (!p)
            continue;
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            C.store_unavailable++;
        s_preq_fail(p, PROTO_EUNAVAIL);
    }
}

static void s_fetch_fail(fetch_t *f, uint8_t status)
{
    /* The store did not answer: a key the cache holds is served from it, marked stale, as when the
     * store is known to be down. (A read that bypassed the cache because the stream is catching up
     * -- e.g. just after the store restarted, before this node's command socket reconnected -- must
     * not turn a cached record into a 503.) */
    cache_view_t v;
    proto_buf_t held;
    proto_buf_init(&held);
    bool cached = (status == PROTO_EUNAVAIL || status == PROTO_ETIMEOUT) && cache_peek(C.cache, f->key, f->klen, &v);
    if (cached && !v.negative)
        proto_buf_append(&held, v.value, v.value_len);
    for (waiter_t *w = f->waiters, *wn; w; w = wn) {
        wn = w->next;
        greq_t *g = w->g;
        if (cached) {
            if (held.len) /* else a cached "not found" */
                proto_buf_append(&g->vals[w->slot], held.data, held.len);
            g->stale = true;
            C.stale_served++;
        } else if (g->status == PROTO_OK) {
            g->status = status;
        }
        if (--g->outstanding == 0)
            s_greq_finish(g);
        free(w);
    }
    proto_buf_fini(&held);
    free(f);
}

static void s_preq_fail(preq_t *p, uint8_t status)
{
    if (p->kind == PK_FORWARD) {
        s_reply_status(p->ident, p->ident_len, p->client_rid, status,
                       status == PROTO_ETIMEOUT ? "store timed out" : "store unavailable");
    } else if (p->kind == PK_FETCH) {
        for (uint32_t i = 0; i < p->nfetch; i++) {
            s_fetch_remove(p->fetches[i]);
            s_fetch_fail(p->fetches[i], status);
        }
    } else if (p->kind == PK_PING) {
        C.ping_out = false;
        if (!C.store_answered && status == PROTO_EUNAVAIL)
            C.next_ping_ms = util_mono_ms() + 20; /* still connecting at start: ask again soon */
    } else if (p->kind == PK_STATS) {
        C.stats_out = false;
    }
    free(p->fetches);
    free(p);
}

/* ==== the cache and its versions ============================================================= */

/* Put a whole record into the cache (owner fill: admission decides). */
static void s_cache_record(const proto_record_t *r, unsigned flags)
{
    proto_buf_reset(&C.rec);
    proto_record_encode(&C.rec, r);
    cache_put(C.cache, r->user_id, r->uid_len, r->version, C.rec.data, C.rec.len, flags);
}

/* Remember a change to `key` for a fetch in flight. `r` is the whole record after the change (NULL
 * when unknown); `gone` means the change deleted the key. */
static void s_fetch_note(const char *key, size_t klen, uint64_t seq, const proto_record_t *r, bool gone)
{
    if (!C.ftab_count)
        return;
    fetch_t *f = s_fetch_find(key, klen, s_hash(key, klen));
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
    (void)ctx;
    const proto_record_t *r = &c->rec;
    cache_view_t v;
    bool present = cache_peek(C.cache, r->user_id, r->uid_len, &v) && v.version < r->version;
    switch (c->kind) {
    case PROTO_CH_SET:
        s_fetch_note(r->user_id, r->uid_len, r->version, r, false);
        if (present)
            s_cache_record(r, CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_DEL:
        s_fetch_note(r->user_id, r->uid_len, r->version, NULL, true);
        if (present)
            cache_put(C.cache, r->user_id, r->uid_len, r->version, "", 0, CACHE_PUT_NEGATIVE | CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_TOUCH: {
        /* A compact heartbeat change: rebuild the whole record from what we hold. */
        proto_record_t full;
        bool have = false;
        if (present && !v.negative && proto_record_decode(v.value, v.value_len, &full) == 0)
            have = true;
        fetch_t *f = C.ftab_count ? s_fetch_find(r->user_id, r->uid_len, s_hash(r->user_id, r->uid_len)) : NULL;
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
        s_fetch_note(r->user_id, r->uid_len, r->version, have ? &full : NULL, false);
        if (present) {
            if (have)
                s_cache_record(&full, CACHE_PUT_IF_PRESENT);
            else
                cache_del(C.cache, r->user_id, r->uid_len); /* cannot rebuild: drop rather than keep stale */
        }
        break;
    }
    }
}

static void on_reset(void *ctx)
{
    (void)ctx;
    cache_clear(C.cache);
    /* Fetches in flight may carry answers from a database we no longer follow: never cache them. */
    for (size_t i = 0; i < C.ftab_size; i++)
        for (fetch_t *f = C.ftab[i]; f; f = f->hnext) {
            f->max_seen = UINT64_MAX;
            f->have_latest = false;
        }
}

static void on_sync_state(void *ctx, int state)
{
    (void)ctx;
    /* The relay's heartbeat says at once when its link to the center goes down or comes back;
     * its PONGs (every PING_INTERVAL_MS) say it too, later. */
    if (state == SYNC_UPSTREAM_DOWN)
        C.link_up = false;
    else if (state == SYNC_LIVE)
        C.link_up = true;
    LOG(state == SYNC_LIVE ? LOG_INFO : LOG_NOTICE, "sync state: %s", sync_state_name(state));
}

/* ==== gateway reads ========================================================================== */

static void s_waiter_add(fetch_t *f, greq_t *g, uint32_t slot)
{
    waiter_t *w = xmalloc(sizeof *w);
    w->g = g;
    w->slot = slot;
    w->next = f->waiters;
    f->waiters = w;
}

static void s_handle_read(const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    C.reads_total++;
    uint32_t n = m->type == PROTO_GET ? 1 : m->n;
    const proto_str_t *keys = m->type == PROTO_GET ? &m->key : m->keys;
    bool live = sync_client_state(C.sync) == SYNC_LIVE && util_mono_ms() >= C.distrust_until_ms;
    bool store_up = s_store_up();
    /* Untrusted stream but a reachable store: read through. Unreachable store: serve what we
     * have, marked stale. */
    bool use_cache = live || !store_up;
    if (!use_cache)
        C.bypass_reads++;

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
        if (use_cache && cache_get(C.cache, k, kl, &v)) {
            if (!v.negative)
                proto_buf_append(&g->vals[i], v.value, v.value_len);
            if (!live) {
                g->stale = true;
                C.stale_served++;
            }
            continue;
        }
        if (!store_up) {
            /* Miss while the store is unreachable: 503 quickly instead of waiting a timeout. */
            g->status = PROTO_EUNAVAIL;
            continue;
        }
        uint64_t h = s_hash(k, kl);
        fetch_t *f = s_fetch_find(k, kl, h);
        if (f) {
            C.coalesced_total++;
        } else {
            f = xcalloc(1, sizeof *f);
            f->hash = h;
            f->klen = (uint8_t)kl;
            memcpy(f->key, k, kl);
            s_fetch_add(f);
            if (!newf)
                newf = xmalloc(n * sizeof *newf);
            newf[nnew++] = f;
        }
        s_waiter_add(f, g, i);
        g->outstanding++;
    }
    if (nnew) {
        /* One store request for every key this read could not answer. */
        preq_t *p = s_preq_new(PK_FETCH);
        p->fetches = newf;
        p->nfetch = nnew;
        proto_str_t *ks = xmalloc(nnew * sizeof *ks);
        for (uint32_t i = 0; i < nnew; i++) {
            ks[i].p = newf[i]->key;
            ks[i].len = newf[i]->klen;
        }
        proto_buf_reset(&C.buf);
        proto_enc_keys(&C.buf, p->rid, ks, nnew);
        free(ks);
        C.fetches_total++;
        C.fetch_keys_total += nnew;
        s_preq_add(p);
        s_store_queue(&C.buf, p->rid);
    }
    if (--g->outstanding == 0)
        s_greq_finish(g);
}

/* Resolve a fetch with the store's answer: `r` (NULL = not found) as of sequence as_of. */
static void s_fetch_resolve(fetch_t *f, const proto_record_t *r, uint64_t as_of)
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
            C.fills_dropped++;
        }
    }
    if (cacheable && f->max_seen != UINT64_MAX) {
        if (gone)
            cache_put(C.cache, f->key, f->klen, ver, "", 0, CACHE_PUT_NEGATIVE);
        else
            s_cache_record(best, 0);
    }
    proto_buf_reset(&C.rec);
    if (!gone)
        proto_record_encode(&C.rec, best);
    for (waiter_t *w = f->waiters, *wn; w; w = wn) {
        wn = w->next;
        greq_t *g = w->g;
        if (!gone)
            proto_buf_append(&g->vals[w->slot], C.rec.data, C.rec.len);
        if (--g->outstanding == 0)
            s_greq_finish(g);
        free(w);
    }
    free(f);
}

static void s_on_fetch_reply(preq_t *p, const proto_msg_t *m)
{
    if (m->status != PROTO_OK) {
        for (uint32_t i = 0; i < p->nfetch; i++) {
            s_fetch_remove(p->fetches[i]);
            s_fetch_fail(p->fetches[i], m->status == PROTO_EOVERLOAD ? PROTO_EOVERLOAD : PROTO_EUNAVAIL);
        }
        return;
    }
    /* The store answers found records in request order: merge. */
    uint32_t j = 0;
    for (uint32_t i = 0; i < p->nfetch; i++) {
        fetch_t *f = p->fetches[i];
        s_fetch_remove(f);
        const proto_record_t *r = NULL;
        if (j < m->n && m->recs[j].uid_len == f->klen && memcmp(m->recs[j].user_id, f->key, f->klen) == 0)
            r = &m->recs[j++];
        s_fetch_resolve(f, r, m->seq);
    }
}

/* ==== gateway writes ========================================================================= */

static void s_handle_write(const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    C.writes_total++;
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* The gateway has given up on it (504) and may already have had the client's next write
         * acknowledged through another node: forwarding it now could undo that write. This happens
         * when this process was stopped or starved with the command queued on its socket. (The
         * same check runs again just before the command leaves for the store: s_store_flush.) */
        C.expired_writes++;
        LOG_RATELIMITED(LOG_WARN, 1000, "write from a gateway dropped: its deadline passed %llu ms ago",
                        (unsigned long long)((util_now_us() - m->deadline_us) / 1000));
        s_reply_status(ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    if (!s_store_up()) {
        C.store_unavailable++;
        s_reply_status(ident, ident_len, m->rid, PROTO_EUNAVAIL, "store unavailable");
        return;
    }
    preq_t *p = s_preq_new(PK_FORWARD);
    p->type = m->type;
    memcpy(p->ident, ident, ident_len);
    p->ident_len = (uint8_t)ident_len;
    p->client_rid = m->rid;
    p->write_deadline_us = m->deadline_us;
    if (m->deadline_us && (!C.store_batch_deadline || m->deadline_us < C.store_batch_deadline))
        C.store_batch_deadline = m->deadline_us;
    if (m->type == PROTO_DEL) {
        memcpy(p->key, m->key.p, m->key.len);
        p->klen = (uint8_t)m->key.len;
    }
    /* The store (or the relay, and the center behind it) must not apply the write once we have
     * given up on it: we answer ETIMEOUT at store_timeout_ms, and the client may then write again
     * through another region or node. Ask it to refuse after our deadline less a margin for its
     * commit, so that whatever it applies lands before our ETIMEOUT (PROTOCOL.md, write deadline). */
    uint64_t margin_ms = MIN(100, C.store_timeout_ms / 4);
    uint64_t dl = util_now_us() + (C.store_timeout_ms - margin_ms) * 1000u;
    if (m->deadline_us && m->deadline_us < dl)
        dl = m->deadline_us;
    proto_buf_reset(&C.buf);
    if (m->type == PROTO_DEL)
        proto_enc_get_dl(&C.buf, PROTO_DEL, p->rid, m->key.p, m->key.len, dl);
    else
        proto_enc_records_cmd_dl(&C.buf, m->type, p->rid, m->recs, m->n, dl);
    s_preq_add(p);
    s_store_queue(&C.buf, p->rid);
}

static void s_on_forward_reply(preq_t *p, const proto_msg_t *m)
{
    if (p->type == PROTO_DEL && (m->status == PROTO_OK || m->status == PROTO_NOTFOUND) && m->seq) {
        /* Known absent as of the tombstone (or, for a miss, of the store's sequence). */
        s_fetch_note(p->key, p->klen, m->seq, NULL, true);
        cache_put(C.cache, p->key, p->klen, m->seq, "", 0, CACHE_PUT_NEGATIVE);
    } else if (m->status == PROTO_OK) {
        for (uint32_t i = 0; i < m->n; i++) {
            s_fetch_note(m->recs[i].user_id, m->recs[i].uid_len, m->recs[i].version, &m->recs[i], false);
            s_cache_record(&m->recs[i], 0);
        }
    }
    char errmsg[PROTO_ERRMSG_MAX + 1];
    memcpy(errmsg, m->key.p ? m->key.p : "", m->key.len);
    errmsg[m->key.len] = '\0';
    proto_buf_reset(&C.buf);
    proto_enc_reply(&C.buf, p->client_rid, m->status, m->seq, m->recs, m->n, errmsg, 0);
    s_send_to(p->ident, p->ident_len, &C.buf);
}

/* ==== stats and health ======================================================================= */

static void s_collect_stats(stats_list_t *l, bool full)
{
    cache_metrics_t cm;
    cache_get_metrics(C.cache, &cm);
    sync_stats_t ss;
    sync_client_get_stats(C.sync, &ss);
    const char *id = C.id;
    stats_addf(l, ss.state, "cache_sync_state{node=\"%s\"}", id);
    stats_addf(l, ss.seq, "sync_sequence{node=\"%s\"}", id);
    stats_addf(l, ss.epoch, "sync_epoch{node=\"%s\"}", id);
    stats_addf(l, ss.lag_ms * 1000, "sync_lag_seconds{node=\"%s\"}:us", id);
    /* Requests are served optimistically from the start (s_store_up); readiness and health report
     * the store path only once it has really answered. */
    stats_addf(l, s_store_up() && C.store_answered, "cache_store_up{node=\"%s\"}", id);
    stats_addf(l, C.store_rtt_us, "cache_store_rtt_seconds{node=\"%s\"}:us", id);
    stats_addf(l, C.store_seq, "cache_store_sequence{node=\"%s\"}", id);
    stats_addf(l, C.link_up, "cache_link_up{node=\"%s\"}", id);
    stats_addf(l, C.link_lag_us, "cache_link_lag_seconds{node=\"%s\"}:us", id);
    stats_addf(l, cm.items, "cache_items{node=\"%s\"}", id);
    if (!full)
        return;
    stats_addf(l, ss.gaps, "sync_gaps_total{node=\"%s\"}", id);
    stats_addf(l, ss.resyncs, "sync_resyncs_total{node=\"%s\"}", id);
    stats_addf(l, ss.snapshots, "sync_snapshots_total{node=\"%s\"}", id);
    stats_addf(l, ss.silences, "sync_silences_total{node=\"%s\"}", id);
    stats_addf(l, ss.changes_applied, "sync_changes_applied_total{node=\"%s\"}", id);
    stats_addf(l, ss.malformed + C.malformed_total, "cache_malformed_total{node=\"%s\"}", id);
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
    stats_addf(l, C.requests_total, "cache_requests_total{node=\"%s\"}", id);
    stats_addf(l, C.fetches_total, "cache_store_fetches_total{node=\"%s\"}", id);
    stats_addf(l, C.fetch_keys_total, "cache_store_fetch_keys_total{node=\"%s\"}", id);
    stats_addf(l, C.coalesced_total, "cache_coalesced_misses_total{node=\"%s\"}", id);
    stats_addf(l, C.store_timeouts, "cache_store_timeouts_total{node=\"%s\"}", id);
    stats_addf(l, C.store_unavailable, "cache_store_unavailable_total{node=\"%s\"}", id);
    stats_addf(l, C.stale_served, "cache_stale_served_total{node=\"%s\"}", id);
    stats_addf(l, C.bypass_reads, "cache_bypass_reads_total{node=\"%s\"}", id);
    stats_addf(l, C.fills_dropped, "cache_fills_dropped_total{node=\"%s\"}", id);
    stats_addf(l, C.expired_writes, "cache_expired_writes_total{node=\"%s\"}", id);
    stats_addf(l, C.stalls, "cache_stalls_total{node=\"%s\"}", id);
    stats_addf(l, C.ptab_count, "cache_store_inflight{node=\"%s\"}", id);
    /* The store's own numbers, as last polled (the gateway keeps one copy). */
    for (uint32_t i = 0; i < C.store_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, C.store_stats.v[i].name.p, C.store_stats.v[i].name.len);
        name[C.store_stats.v[i].name.len] = '\0';
        stats_add(l, name, C.store_stats.v[i].value);
    }
}

static void s_handle_stats(const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    s_collect_stats(&l, m->type == PROTO_STATS);
    proto_buf_reset(&C.buf);
    proto_enc_stats(&C.buf, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    stats_list_fini(&l);
    s_send_to(ident, ident_len, &C.buf);
}

static void s_poll_store(uint64_t now)
{
    if (now >= C.next_ping_ms && !C.ping_out) {
        preq_t *p = s_preq_new(PK_PING);
        proto_buf_reset(&C.buf);
        proto_enc_simple(&C.buf, PROTO_PING, p->rid);
        C.ping_out = true;
        s_preq_add(p);
        s_store_queue(&C.buf, p->rid);
        C.next_ping_ms = now + PING_INTERVAL_MS;
    }
    if (now >= C.next_stats_ms && !C.stats_out) {
        preq_t *p = s_preq_new(PK_STATS);
        proto_buf_reset(&C.buf);
        proto_enc_simple(&C.buf, PROTO_STATS, p->rid);
        C.stats_out = true;
        s_preq_add(p);
        s_store_queue(&C.buf, p->rid);
        C.next_stats_ms = now + STATS_INTERVAL_MS;
    }
}

/* ==== dispatch =============================================================================== */

static void s_on_request(const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested);

static void s_on_gateway(zmq_msg_t *frames, int n)
{
    if (n != 2 || zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > MAX_IDENT) {
        C.malformed_total++;
        return;
    }
    s_on_request(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), zmq_msg_data(&frames[1]),
                 zmq_msg_size(&frames[1]), false);
}

static void s_on_request(const uint8_t *ident, size_t ident_len, const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        C.malformed_total++;
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed request from a gateway: %s", nested ? "nested batch" : m.err);
        uint8_t type;
        uint64_t rid;
        if (proto_peek_header(data, len, &type, &rid) == 0 && type != PROTO_BATCH)
            s_reply_status(ident, ident_len, rid, PROTO_EBADREQ, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        /* Answer what can be answered now in one frame; deferred answers (misses, writes) leave
         * on their own when they are ready. */
        C.in_batch = true;
        C.batch_ident = ident;
        C.batch_ident_len = ident_len;
        proto_batch_reset(&C.out_batch);
        for (uint32_t i = 0; i < m.n; i++)
            s_on_request(ident, ident_len, m.parts[i].p, m.parts[i].len, true);
        C.in_batch = false;
        if (C.out_batch.n) {
            proto_batch_encode(&C.out_batch, &C.out_frame);
            s_send_to(ident, ident_len, &C.out_frame);
        }
        proto_msg_fini(&m);
        return;
    }
    C.requests_total++;
    switch (m.type) {
    case PROTO_GET:
    case PROTO_MGET:
        s_handle_read(ident, ident_len, &m);
        break;
    case PROTO_PUT:
    case PROTO_TOUCH:
    case PROTO_DEL:
        s_handle_write(ident, ident_len, &m);
        break;
    case PROTO_APPLY:
        for (uint32_t i = 0; i < m.n; i++) {
            s_fetch_note(m.recs[i].user_id, m.recs[i].uid_len, m.recs[i].version, &m.recs[i], false);
            s_cache_record(&m.recs[i], 0);
        }
        s_reply_status(ident, ident_len, m.rid, PROTO_OK, NULL);
        break;
    case PROTO_PING:
    case PROTO_STATS:
        s_handle_stats(ident, ident_len, &m);
        break;
    default:
        C.malformed_total++;
        s_reply_status(ident, ident_len, m.rid, PROTO_EBADREQ, "unexpected message type");
        break;
    }
    proto_msg_fini(&m);
}

static void s_on_store_msg(const void *data, size_t len, bool nested);

static void s_on_store(zmq_msg_t *frames, int n)
{
    if (n != 1) {
        C.malformed_total++;
        return;
    }
    s_on_store_msg(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), false);
}

static void s_on_store_msg(const void *data, size_t len, bool nested)
{
    proto_msg_t m;
    if (proto_decode(data, len, &m) != PROTO_DEC_OK || (nested && m.type == PROTO_BATCH)) {
        C.malformed_total++;
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        for (uint32_t i = 0; i < m.n; i++)
            s_on_store_msg(m.parts[i].p, m.parts[i].len, true);
        proto_msg_fini(&m);
        return;
    }
    preq_t *p = s_preq_take(m.rid);
    if (!p) {
        proto_msg_fini(&m); /* an answer after its deadline: already answered as a timeout */
        return;
    }
    uint64_t now = util_mono_ms();
    /* An answer proves the store path works, unless it says it does not (a relay without its
     * center answers EUNAVAIL, and its PONG says relay_link_up 0). */
    if ((p->kind == PK_FORWARD || p->kind == PK_FETCH) && m.status != PROTO_EUNAVAIL && m.status != PROTO_ETIMEOUT) {
        C.last_store_ok_ms = now;
        C.store_answered = true;
    }
    uint64_t rtt = util_mono_us() - p->sent_us;
    C.store_rtt_us = rtt;
    stats_hist_observe(&C.store_rtt_hist, rtt);
    switch (p->kind) {
    case PK_FORWARD:
        if (m.type == PROTO_REPLY)
            s_on_forward_reply(p, &m);
        else
            s_reply_status(p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "unexpected store reply");
        break;
    case PK_FETCH:
        if (m.type == PROTO_REPLY)
            s_on_fetch_reply(p, &m);
        else
            for (uint32_t i = 0; i < p->nfetch; i++) {
                s_fetch_remove(p->fetches[i]);
                s_fetch_fail(p->fetches[i], PROTO_EINTERNAL);
            }
        break;
    case PK_PING:
        C.ping_out = false;
        if (m.type == PROTO_PONG) {
            uint64_t link = 1, lag = 0;
            stats_find(m.stats, m.n, "store_epoch", &C.store_epoch);
            stats_find(m.stats, m.n, "store_sequence", &C.store_seq);
            stats_find(m.stats, m.n, "relay_link_up", &link);
            stats_find(m.stats, m.n, "relay_lag_seconds:us", &lag);
            C.link_up = link != 0;
            C.link_lag_us = lag;
            if (C.link_up) {
                C.last_store_ok_ms = now;
                C.store_answered = true;
            }
        }
        break;
    case PK_STATS:
        C.stats_out = false;
        if (m.type == PROTO_STATS_REPLY) {
            stats_list_reset(&C.store_stats);
            for (uint32_t i = 0; i < m.n; i++) {
                char name[PROTO_STAT_NAME_MAX + 1];
                memcpy(name, m.stats[i].name.p, m.stats[i].name.len);
                name[m.stats[i].name.len] = '\0';
                if (strncmp(name, "store_", 6) == 0 || strncmp(name, "relay_", 6) == 0)
                    stats_add(&C.store_stats, name, m.stats[i].value);
            }
        }
        break;
    }
    free(p->fetches);
    free(p);
    proto_msg_fini(&m);
}

static void s_expire(uint64_t now)
{
    while (C.t_head && C.t_head->deadline <= now) {
        preq_t *p = s_preq_take(C.t_head->rid);
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            C.store_timeouts++;
        s_preq_fail(p, PROTO_ETIMEOUT);
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
static void s_stalled(uint64_t ms)
{
    C.stalls++;
    LOG_RATELIMITED(LOG_WARN, 1000, "did not run for %llu ms: reading through to the store for %llu ms",
                    (unsigned long long)ms, (unsigned long long)(2 * C.req_timeout_ms));
    sync_client_resync(C.sync);
    uint64_t now = util_mono_ms();
    C.last_store_ok_ms = now;
    C.distrust_until_ms = now + 2 * C.req_timeout_ms;
}

/* ==== startup ================================================================================ */

static int s_config(char *err)
{
    static const char *const policies[] = {"wtinylfu", "lru", NULL};
    snprintf(C.data_dir, sizeof C.data_dir, "./data");
    snprintf(C.id, sizeof C.id, "cache-%d", (int)getpid());
    C.max_cost = 256ull << 20;
    uint64_t req_timeout = 2000;
    C.hb_limit_ms = 3000;
    C.store_down_ms = 2000;
    if (cfg_str("DATA_DIR", C.data_dir, sizeof C.data_dir, err) < 0 || cfg_str("CACHE_ID", C.id, sizeof C.id, err) < 0 ||
        cfg_u64("CACHE_MAX_COST", 4096, 1ull << 40, &C.max_cost, err) < 0 ||
        cfg_u64("CACHE_NUM_COUNTERS", 0, 1ull << 32, &C.counters, err) < 0 ||
        cfg_enum("CACHE_POLICY", policies, &C.policy, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &req_timeout, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &C.hb_limit_ms, err) < 0 ||
        cfg_u64("STORE_DOWN_MS", 100, 600000, &C.store_down_ms, err) < 0 ||
        cfg_u64("SYNC_SUB_HWM", 1, 10000000, &C.sub_hwm, err) < 0)
        return -1;
    if (!util_valid_node_id(C.id, strlen(C.id))) {
        snprintf(err, CFG_ERR_LEN, "CACHE_ID: invalid value '%s'", C.id);
        return -1;
    }
    /* Answer the gateway before its own deadline so it can say 504 rather than guess. */
    C.store_timeout_ms = req_timeout > 400 ? req_timeout - 250 : req_timeout * 3 / 4;
    /* A stall long enough for a gateway to time out on us and route our keys elsewhere lasts about
     * REQUEST_TIMEOUT_MS; s_stalled notices one of half that (polls wait at most a quarter). */
    C.stall_ms = MAX(req_timeout / 4, 25);
    C.req_timeout_ms = req_timeout;
    snprintf(C.endpoint, sizeof C.endpoint, "ipc://%s/run/cache-1.sock", C.data_dir);
    snprintf(C.store_cmd, sizeof C.store_cmd, "ipc://%s/run/store-cmd.sock", C.data_dir);
    snprintf(C.store_pub, sizeof C.store_pub, "ipc://%s/run/store-pub.sock", C.data_dir);
    if (cfg_str("CACHE_ENDPOINT", C.endpoint, sizeof C.endpoint, err) < 0 ||
        cfg_str("STORE_CMD_ENDPOINT", C.store_cmd, sizeof C.store_cmd, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", C.store_pub, sizeof C.store_pub, err) < 0)
        return -1;
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "cache-node",
    .summary = "A W-TinyLFU cache-node of a presence node: answers the gateways' reads and writes for its keys,\n"
               "in front of the store-node (or a leaf's sync-relay), kept coherent by the change stream.",
    .usage = "",
    .procs = ENVREG_CACHE,
};

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    char err[CFG_ERR_LEN] = "";
    if (log_init("cache", err, sizeof err) < 0) {
        fprintf(stderr, "cache-node: %s\n", err);
        return 2;
    }
    cli_check_env(); /* before the configuration: a typo is named even when it makes the rest fail */
    if (s_config(err) < 0) {
        fprintf(stderr, "cache-node: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    cache_config_t cc = {.max_cost = C.max_cost, .num_counters = C.counters, .policy = C.policy};
    C.cache = cache_new(&cc);
    if (!C.cache) {
        LOG(LOG_ERROR, "invalid cache configuration");
        return 2;
    }
    proto_buf_init(&C.buf);
    proto_buf_init(&C.rec);
    proto_batch_init(&C.out_batch);
    proto_buf_init(&C.out_frame);
    proto_batch_init(&C.store_batch);
    stats_list_init(&C.store_stats);
    stats_hist_init_latency(&C.store_rtt_hist);
    C.next_rid = 1;
    C.last_store_ok_ms = util_mono_ms(); /* optimistic until the first ping says otherwise */
    /* Just (re)started: gateways route our keys back to us as soon as we answer, while writes they
     * sent to the other nodes meanwhile may still be on their way to us in the stream. */
    C.distrust_until_ms = util_mono_ms() + 2 * C.req_timeout_ms;
    C.link_up = true;

    C.zctx = zmq_ctx_new();
    C.router = zu_socket(C.zctx, ZMQ_ROUTER, 200000, 200000);
    C.store = zu_socket(C.zctx, ZMQ_DEALER, 200000, 200000);
    int one = 1, ivl_max = 1000;
    zmq_setsockopt(C.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(C.store, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(C.store, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (zmq_bind(C.router, C.endpoint) < 0) {
        LOG(LOG_ERROR, "bind %s: %s", C.endpoint, zmq_strerror(errno));
        return 1;
    }
    if (zmq_connect(C.store, C.store_cmd) < 0) {
        LOG(LOG_ERROR, "connect %s: %s", C.store_cmd, zmq_strerror(errno));
        return 1;
    }
    sync_config_t scfg = {.pub_ep = C.store_pub, .cmd_ep = C.store_cmd, .heartbeat_limit_ms = C.hb_limit_ms,
                          .request_timeout_ms = C.store_timeout_ms, .sub_hwm = (uint32_t)C.sub_hwm};
    sync_handler_t sh = {.ctx = NULL, .apply = on_change, .reset = on_reset, .state = on_sync_state};
    C.sync = sync_client_new(C.zctx, &scfg, &sh, err);
    if (!C.sync) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    LOG(LOG_NOTICE, "ready id=%s endpoint=%s store=%s max_cost=%llu policy=%s", C.id, C.endpoint, C.store_cmd,
        (unsigned long long)C.max_cost, C.policy == CACHE_POLICY_LRU ? "lru" : "wtinylfu");
    char ready[700];
    snprintf(ready, sizeof ready, "cache id=%s endpoint=%s", C.id, C.endpoint);
    zu_signal_ready(ready);

    /* The loop polls the sockets' ZMQ_FDs itself instead of zmq_poll, which would ask every
     * socket for ZMQ_EVENTS before and after its poll (each a getpid + poll syscall pair). The
     * contract that makes this safe: after a socket was drained to EAGAIN, a new message signals
     * its ZMQ_FD -- unless a send on that socket consumed the signal, so sockets sent on get one
     * ZMQ_EVENTS check before we block; a drain that stopped at its bound polls with timeout 0. */
    zmq_pollitem_t items[4];
    struct pollfd pfd[4];
    bool again = true; /* drain once before the first wait */
    uint64_t woke = util_mono_ms();
    while (!s_stop) {
        uint64_t now = util_mono_ms();
        if (now - woke > 2 * C.stall_ms)
            s_stalled(now - woke); /* between handling the last wake-up and here */
        uint64_t next = sync_client_tick(C.sync, now);
        s_expire(now);
        s_poll_store(now);
        next = MIN(next, C.next_ping_ms);
        next = MIN(next, C.next_stats_ms);
        if (C.t_head)
            next = MIN(next, C.t_head->deadline);
        sync_client_poll_items(C.sync, items);
        items[2] = (zmq_pollitem_t){.socket = C.store, .events = ZMQ_POLLIN};
        items[3] = (zmq_pollitem_t){.socket = C.router, .events = ZMQ_POLLIN};
        s_store_flush(); /* pings and anything queued outside the request path */
        if (sync_client_take_sent(C.sync) && !again)
            again = zu_readable(items[1].socket);
        if (C.sent_store && !again)
            again = zu_readable(C.store);
        if (C.sent_router && !again)
            again = zu_readable(C.router);
        C.sent_store = C.sent_router = false;
        long timeout = again || next <= now ? 0 : (long)MIN(next - now, C.stall_ms);
        for (int i = 0; i < 4; i++) {
            pfd[i] = (struct pollfd){.fd = zu_fd(items[i].socket), .events = POLLIN};
        }
        uint64_t before = util_mono_ms();
        if (poll(pfd, 4, (int)timeout) < 0 && errno != EINTR) {
            LOG(LOG_ERROR, "poll: %s", strerror(errno));
            break;
        }
        woke = util_mono_ms();
        if (woke - before > (uint64_t)timeout + 2 * C.stall_ms)
            s_stalled(woke - before - (uint64_t)timeout); /* inside the wait: before reading anything */
        again = false;
        /* Stream first: changes already delivered are applied before reads are answered. */
        if (sync_client_handle(C.sync))
            again = true;
        int k;
        for (k = 0; k < 4096; k++) {
            zmq_msg_t frames[ZU_FRAMES_MAX];
            int nf;
            if (zu_recv(C.store, frames, ZU_FRAMES_MAX, &nf) < 0) {
                if (errno == EPROTO)
                    continue;
                break;
            }
            s_on_store(frames, nf);
            zu_close_frames(frames, nf);
        }
        if (k == 4096)
            again = true;
        for (k = 0; k < 4096 && !s_stop; k++) {
            zmq_msg_t frames[ZU_FRAMES_MAX];
            int nf;
            /* Stopped in the middle of this drain, we would go on reading what queued up meanwhile. */
            uint64_t t = util_mono_ms();
            if (t - woke > 2 * C.stall_ms)
                s_stalled(t - woke);
            woke = t;
            if (zu_recv(C.router, frames, ZU_FRAMES_MAX, &nf) < 0) {
                if (errno == EPROTO) {
                    C.malformed_total++;
                    continue;
                }
                break;
            }
            s_on_gateway(frames, nf);
            zu_close_frames(frames, nf);
        }
        if (k == 4096)
            again = true;
        s_store_flush();
    }
    LOG(LOG_NOTICE, "stopping");
    /* Answer what is still pending so gateways are not left waiting for a deadline. */
    while (C.t_head) {
        preq_t *p = s_preq_take(C.t_head->rid);
        s_preq_fail(p, PROTO_EUNAVAIL);
    }
    sync_client_destroy(&C.sync);
    zmq_close(C.router);
    zmq_close(C.store);
    zmq_ctx_term(C.zctx);
    cache_destroy(&C.cache);
    free(C.ptab);
    free(C.ftab);
    stats_list_fini(&C.store_stats);
    proto_buf_fini(&C.buf);
    proto_buf_fini(&C.rec);
    proto_batch_fini(&C.out_batch);
    proto_buf_fini(&C.out_frame);
    proto_batch_fini(&C.store_batch);
    free(C.store_rids);
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
