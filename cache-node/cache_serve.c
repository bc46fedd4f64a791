/* cache_serve.c -- the cache-node's side towards the gateways: their reads, writes, APPLYs, pings
 * and stats on the ROUTER, and the change stream applied to the cache.
 *
 * Coherence rules (no cache serves an older version than it served: DESIGN.md, "Coherence"):
 *   - every entry carries the store version it shows; it never moves to an older one (cache.c);
 *   - a miss asks the store once per key however many readers wait (single flight: a `fetch` per
 *     key); while a fetch is out, every change to that key seen on the stream or in a write reply
 *     is remembered (max_seen, and the newest whole record when there is one). When the answer
 *     (current as of the store's sequence `as_of`) comes back it is cached only if nothing newer
 *     was seen meanwhile; otherwise the newest known record is cached, or -- if that cannot be
 *     rebuilt -- nothing is cached and the waiters get the answer they asked for;
 *   - "not found" is cached as a negative entry at version as_of, replaced by any later change;
 *   - a reply's as_of is the least over its keys of what each answer is current through; a
 *     multi-get also lists each absent key (read through, or a cached "not found") whose own is
 *     higher (PROTOCOL.md, "REPLY absent");
 *   - writes go to the store; the acknowledged record updates the cache before the reply;
 *   - an APPLY (another node's acknowledged write, for read-your-writes) is a claim the store has
 *     not made here: one beyond the store's sequence we know (plus APPLY_SLACK) is refused, the
 *     others are cached and held (cache_apply.h) until the store's own data -- stream, fill or
 *     write reply -- confirms them; refuted, or unconfirmed after SYNC_HEARTBEAT_LIMIT_MS, they
 *     leave the cache so the store's data wins;
 *   - a gap or a silent stream makes the state untrusted (sync client): while the store answers,
 *     reads go to the store; while it does not, cached entries are served marked stale.
 *
 * Replies to one gateway socket made while its BATCH is being read leave as one BATCH frame.
 * One thread: the node's loop.
 */
#include "cache_node_int.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An APPLY may be this far ahead of the store sequence this node knows (its stream lags the
 * store a little); beyond it, it is refused. */
#define APPLY_SLACK 100000
/* APPLYs held unconfirmed at once; beyond, one more is refused (not cached). */
#define APPLY_PENDING_MAX 65536

/* ==== fetches in flight ======================================================================= */

static uint64_t s_hash(const char *k, size_t len)
{
    return util_hash64(k, len, 0x5eed);
}

static fetch_t *s_fetch_find(cache_node_t *cn, const char *key, size_t klen)
{
    for (idtab_link_t *l = idtab_find(&cn->fetches, s_hash(key, klen)); l; l = idtab_find_next(l)) {
        fetch_t *f = IDTAB_ENTRY(l, fetch_t, link);
        if (f->klen == klen && memcmp(f->key, key, klen) == 0)
            return f;
    }
    return NULL;
}

/* ==== replies to gateways ===================================================================== */

static void s_send_to(cache_node_t *cn, const uint8_t *ident, size_t ident_len, proto_buf_t *b)
{
    if (cn->in_batch && ident_len == cn->batch_ident_len && memcmp(ident, cn->batch_ident, ident_len) == 0) {
        proto_batch_add(&cn->out_batch, b->data, b->len);
        proto_buf_reset(b);
        if (proto_batch_full(&cn->out_batch)) { /* keep frames small: send this part now */
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
    zloop_sent(cn->loop, cn->router);
    if (zu_send_owned(cn->router, ident, ident_len, data, len) < 0)
        LOG_RATELIMITED(LOG_WARN, 1000, "reply to gateway dropped: %s", zmq_strerror(errno));
}

static void s_reply_status(cache_node_t *cn, const uint8_t *ident, size_t ident_len, uint64_t rid, uint8_t status, const char *msg)
{
    proto_buf_reset(&cn->buf);
    proto_enc_reply(&cn->buf, rid, status, 0, NULL, 0, msg, 0);
    s_send_to(cn, ident, ident_len, &cn->buf);
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
        uint64_t as_of = g->stale || g->as_of == UINT64_MAX ? 0 : g->as_of;
        /* A multi-get's as_of is its oldest key's; a "not found" read through to the store (or
         * cached from such a read) is current through the store's higher sequence: say so per key
         * (PROTOCOL.md, "REPLY absent"), or a gateway could later take an older record from a node
         * further behind for newer. A found record needs nothing: its version says as much. */
        proto_absent_t *abs = NULL;
        uint32_t nabs = 0;
        if (g->absent_at && as_of) {
            abs = xmalloc(g->nkeys * sizeof *abs);
            for (uint32_t i = 0; i < g->nkeys; i++)
                if (!g->vals[i].len && g->absent_at[i] > as_of)
                    abs[nabs++] = (proto_absent_t){i, g->absent_at[i]};
        }
        proto_enc_reply_raw_begin_abs(&e, g->rid, st, as_of, found, nabs);
        for (uint32_t i = 0; i < g->nkeys; i++)
            if (g->vals[i].len)
                proto_enc_raw(&e, g->vals[i].data, g->vals[i].len);
        proto_enc_reply_raw_end_abs(&e, NULL, flags, abs, nabs);
        free(abs);
    }
    s_send_to(cn, g->ident, g->ident_len, &cn->buf);
    for (uint32_t i = 0; i < g->nkeys; i++)
        proto_buf_fini(&g->vals[i]);
    free(g->vals);
    free(g->absent_at);
    free(g);
}

/* Key `slot` of g's multi-get is absent, current through `through` (the reply lists it when that
 * is above the reply's as_of). */
static void s_greq_absent(greq_t *g, uint32_t slot, uint64_t through)
{
    if (g->type != PROTO_MGET)
        return;
    if (!g->absent_at)
        g->absent_at = xcalloc(g->nkeys, sizeof *g->absent_at);
    g->absent_at[slot] = through;
}

/* ==== the cache and its versions =============================================================== */

/* Put a whole record into the cache (owner fill: admission decides). */
static void s_cache_record(cache_node_t *cn, const proto_record_t *r, unsigned flags)
{
    proto_buf_reset(&cn->rec);
    proto_record_encode(&cn->rec, r);
    cache_put(cn->cache, r->user_id, r->uid_len, r->version, cn->rec.data, cn->rec.len, flags);
}

/* Remember a change to `key` for a fetch in flight. `r` is the whole record after the change (NULL
 * when unknown); `gone` means the change deleted the key; `applied`: an APPLY said so, not the
 * store. */
static void s_fetch_note_by(cache_node_t *cn, const char *key, size_t klen, uint64_t seq, const proto_record_t *r,
                            bool gone, bool applied)
{
    if (!idtab_count(&cn->fetches))
        return;
    fetch_t *f = s_fetch_find(cn, key, klen);
    if (!f)
        return;
    if (!applied && seq > f->max_store)
        f->max_store = seq;
    if (seq <= f->max_seen)
        return;
    f->max_seen = seq;
    f->latest_applied = applied;
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

static void s_fetch_note(cache_node_t *cn, const char *key, size_t klen, uint64_t seq, const proto_record_t *r, bool gone)
{
    s_fetch_note_by(cn, key, klen, seq, r, gone, false);
}

/* ==== APPLYs the store has not confirmed ======================================================== */

/* A refuted APPLY (the store has moved past its version without it, or did not confirm it in
 * time): out of the cache if the entry still shows it, and out of a fetch in flight that took it
 * as the latest record -- the store's answer wins. */
static void s_apply_drop(cache_node_t *cn, const char *key, size_t klen, uint64_t version)
{
    cache_view_t v;
    if (cache_peek(cn->cache, key, klen, &v) && v.version == version)
        cache_del(cn->cache, key, klen);
    fetch_t *f = idtab_count(&cn->fetches) ? s_fetch_find(cn, key, klen) : NULL;
    if (f && f->latest_applied) {
        f->max_seen = f->max_store;
        f->have_latest = false;
        f->latest_applied = false;
    }
    cn->applies_refuted++;
    LOG_RATELIMITED(LOG_WARN, 1000, "APPLY of '%.*s' at version %llu not confirmed by the store: dropped from the cache",
                    (int)klen, key, (unsigned long long)version);
}

/* The store says key is at `version` (0: absent) as of its sequence `as_of`: settle an APPLY held
 * for it (before the caller puts the store's data into the cache). */
static void s_store_says(cache_node_t *cn, const char *key, size_t klen, uint64_t version, uint64_t as_of)
{
    bool refuted;
    uint64_t v = cache_apply_store_says(cn->applies, key, klen, version, as_of, &refuted);
    if (v && refuted)
        s_apply_drop(cn, key, klen, v);
}

/* The stream reached seq: every APPLY at or below it that it did not confirm was never the
 * store's; and those whose window passed. */
static void s_applies_settle(cache_node_t *cn, uint64_t seq, uint64_t now_ms)
{
    char key[PROTO_USER_ID_MAX + 1];
    size_t klen;
    uint64_t v;
    while ((v = cache_apply_take_refuted(cn->applies, seq, now_ms, key, &klen)))
        s_apply_drop(cn, key, klen, v);
}

uint64_t cache_serve_tick(cache_node_t *cn, uint64_t now)
{
    if (cache_apply_count(cn->applies))
        s_applies_settle(cn, 0, now);
    return cache_apply_next_deadline(cn->applies);
}

/* Apply a change from the stream. Keys that are not resident are not inserted (the stream would
 * otherwise flood the cache with keys nobody reads here); a fetch in flight still learns of it. */
static void on_change(void *ctx, const proto_change_t *c)
{
    cache_node_t *cn = ctx;
    const proto_record_t *r = &c->rec;
    if (cache_apply_count(cn->applies)) {
        s_store_says(cn, r->user_id, r->uid_len, r->version, r->version);
        s_applies_settle(cn, r->version, 0);
    }
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
        fetch_t *f = idtab_count(&cn->fetches) ? s_fetch_find(cn, r->user_id, r->uid_len) : NULL;
        if (!have && f && f->have_latest && !f->latest_gone) {
            full = f->latest;
            have = true;
        }
        if (have) {
            full.last_seen_us = r->last_seen_us;
            full.expires_at_us = r->expires_at_us;
            full.ttl_s = r->ttl_s;
            full.preferred_until_us = r->preferred_until_us;
            full.message_expires_at_us = r->message_expires_at_us;
            full.vis_last_seen_us = r->vis_last_seen_us;
            full.pub_version = r->pub_version;
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
    cache_apply_clear(cn->applies);
    /* Fetches in flight may carry answers from a database we no longer follow: never cache them. */
    idtab_iter_t it;
    idtab_iter_init(&it, &cn->fetches);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        fetch_t *f = IDTAB_ENTRY(l, fetch_t, link);
        f->max_seen = UINT64_MAX;
        f->have_latest = false;
    }
}

static void on_sync_state(void *ctx, int state)
{
    cache_node_t *cn = ctx;
    /* The relay's heartbeat says at once when its link to the center goes down or comes back;
     * its PONGs (every CACHE_PING_INTERVAL_MS) say it too, later. */
    if (state == SYNC_UPSTREAM_DOWN)
        cn->link_up = false;
    else if (state == SYNC_LIVE)
        cn->link_up = true;
    LOG(state == SYNC_LIVE ? LOG_INFO : LOG_NOTICE, "sync state: %s", sync_state_name(state));
}

void cache_serve_stream(cache_node_t *cn, sync_handler_t *h)
{
    *h = (sync_handler_t){.ctx = cn, .apply = on_change, .reset = on_reset, .state = on_sync_state};
}

/* ==== gateway reads ============================================================================ */

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

static void s_waiter_add(cache_node_t *cn, fetch_t *f, greq_t *g, uint32_t slot)
{
    waiter_t *w = xmalloc(sizeof *w);
    w->g = g;
    w->slot = slot;
    w->next = f->waiters;
    f->waiters = w;
}

/* Resolve a fetch with the store's answer: `r` (NULL = not found) as of sequence as_of. */
static void s_fetch_resolve(cache_node_t *cn, fetch_t *f, const proto_record_t *r, uint64_t as_of)
{
    s_store_says(cn, f->key, f->klen, r ? r->version : 0, as_of);
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
    /* What the waiters get is current through the store's read (or, when the stream brought
     * something newer meanwhile, through that change -- a delete too: then `ver`). This is exact,
     * not a lower bound: a gateway's near cache takes an absent key's as its ghost. */
    uint64_t current_through = gone ? ver : best == r ? as_of : f->max_seen;
    for (waiter_t *w = f->waiters, *wn; w; w = wn) {
        wn = w->next;
        greq_t *g = w->g;
        g->as_of = MIN(g->as_of, current_through);
        if (!gone) {
            proto_buf_append(&g->vals[w->slot], cn->rec.data, cn->rec.len);
        } else {
            s_greq_absent(g, w->slot, current_through);
        }
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
            idtab_remove(&cn->fetches, &p->fetches[i]->link);
            s_fetch_fail(cn, p->fetches[i], m->status == PROTO_EOVERLOAD ? PROTO_EOVERLOAD : PROTO_EUNAVAIL);
        }
        return;
    }
    /* The store answers found records in request order: merge. */
    uint32_t j = 0;
    for (uint32_t i = 0; i < p->nfetch; i++) {
        fetch_t *f = p->fetches[i];
        idtab_remove(&cn->fetches, &f->link);
        const proto_record_t *r = NULL;
        if (j < m->n && m->recs[j].uid_len == f->klen && memcmp(m->recs[j].user_id, f->key, f->klen) == 0)
            r = &m->recs[j++];
        s_fetch_resolve(cn, f, r, m->seq);
    }
}

/* A fetch's end (cache_link.c): the store's answer, or its failure. */
static void s_fetch_done(cache_node_t *cn, preq_t *p, const proto_msg_t *m, uint8_t status)
{
    if (m && m->type == PROTO_REPLY) {
        s_on_fetch_reply(cn, p, m);
        return;
    }
    for (uint32_t i = 0; i < p->nfetch; i++) {
        idtab_remove(&cn->fetches, &p->fetches[i]->link);
        s_fetch_fail(cn, p->fetches[i], m ? PROTO_EINTERNAL : status);
    }
}

static void s_handle_read(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    cn->reads_total++;
    uint32_t n = m->type == PROTO_GET ? 1 : m->n;
    const proto_str_t *keys = m->type == PROTO_GET ? &m->key : m->keys;
    bool live = sync_client_state(cn->sync) == SYNC_LIVE && util_mono_ms() >= cn->distrust_until_ms;
    bool store_up = cache_link_up(cn);
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
    g->as_of = UINT64_MAX; /* lowered by every answer below */
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
            /* A resident entry follows the stream: it is current through what the stream applied
             * (or through its own fill, when that read the store further ahead). */
            uint64_t through = MAX(sync_client_seq(cn->sync), v.version);
            if (!v.negative)
                proto_buf_append(&g->vals[i], v.value, v.value_len);
            else
                s_greq_absent(g, i, through);
            g->as_of = MIN(g->as_of, through);
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
        fetch_t *f = s_fetch_find(cn, k, kl);
        if (f) {
            cn->coalesced_total++;
        } else {
            f = xcalloc(1, sizeof *f);
            f->link.id = s_hash(k, kl);
            f->klen = (uint8_t)kl;
            memcpy(f->key, k, kl);
            idtab_add(&cn->fetches, &f->link);
            if (!newf)
                newf = xmalloc(n * sizeof *newf);
            newf[nnew++] = f;
        }
        s_waiter_add(cn, f, g, i);
        g->outstanding++;
    }
    if (nnew) {
        /* One store request for every key this read could not answer. */
        preq_t *p = cache_link_request(cn, PK_FETCH, s_fetch_done);
        p->fetches = newf;
        p->nfetch = nnew;
        proto_str_t *ks = xmalloc(nnew * sizeof *ks);
        for (uint32_t i = 0; i < nnew; i++) {
            ks[i].p = newf[i]->key;
            ks[i].len = newf[i]->klen;
        }
        proto_buf_reset(&cn->buf);
        proto_enc_keys(&cn->buf, p->link.id, ks, nnew);
        free(ks);
        cn->fetches_total++;
        cn->fetch_keys_total += nnew;
        cache_link_send(cn, p, &cn->buf, 0);
    }
    if (--g->outstanding == 0)
        s_greq_finish(cn, g);
}

/* ==== gateway writes =========================================================================== */

static void s_on_forward_reply(cache_node_t *cn, preq_t *p, const proto_msg_t *m)
{
    if (p->type == PROTO_DEL && (m->status == PROTO_OK || m->status == PROTO_NOTFOUND) && m->seq) {
        /* Known absent as of the tombstone (or, for a miss, of the store's sequence). */
        s_store_says(cn, p->key, p->klen, 0, m->seq);
        s_fetch_note(cn, p->key, p->klen, m->seq, NULL, true);
        cache_put(cn->cache, p->key, p->klen, m->seq, "", 0, CACHE_PUT_NEGATIVE);
    } else if (m->status == PROTO_OK) {
        for (uint32_t i = 0; i < m->n; i++) {
            const proto_record_t *r = &m->recs[i];
            s_store_says(cn, r->user_id, r->uid_len, r->version, MAX(m->seq, r->version));
            s_fetch_note(cn, r->user_id, r->uid_len, r->version, r, false);
            s_cache_record(cn, r, 0);
        }
    }
    char errmsg[PROTO_ERRMSG_MAX + 1];
    memcpy(errmsg, m->key.p ? m->key.p : "", m->key.len);
    errmsg[m->key.len] = '\0';
    proto_buf_reset(&cn->buf);
    proto_enc_reply(&cn->buf, p->client_rid, m->status, m->seq, m->recs, m->n, errmsg, 0);
    s_send_to(cn, p->ident, p->ident_len, &cn->buf);
}

/* A write's end (cache_link.c): the store's answer, or its failure. */
static void s_forward_done(cache_node_t *cn, preq_t *p, const proto_msg_t *m, uint8_t status)
{
    if (m && m->type == PROTO_REPLY)
        s_on_forward_reply(cn, p, m);
    else if (m)
        s_reply_status(cn, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "unexpected store reply");
    else
        s_reply_status(cn, p->ident, p->ident_len, p->client_rid, status,
                       status == PROTO_ETIMEOUT ? "store timed out" : "store unavailable");
}

static void s_handle_write(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    cn->writes_total++;
    if (m->deadline_us && util_now_us() >= m->deadline_us) {
        /* The gateway has given up on it (504) and may already have had the client's next write
         * acknowledged through another node: forwarding it now could undo that write. This happens
         * when this process was stopped or starved with the command queued on its socket. (The
         * same check runs again just before the command leaves for the store: cache_link_flush.) */
        cn->expired_writes++;
        LOG_RATELIMITED(LOG_WARN, 1000, "write from a gateway dropped: its deadline passed %llu ms ago",
                        (unsigned long long)((util_now_us() - m->deadline_us) / 1000));
        s_reply_status(cn, ident, ident_len, m->rid, PROTO_ETIMEOUT, "deadline passed before the write was forwarded");
        return;
    }
    if (!cache_link_up(cn)) {
        cn->store_unavailable++;
        s_reply_status(cn, ident, ident_len, m->rid, PROTO_EUNAVAIL, "store unavailable");
        return;
    }
    preq_t *p = cache_link_request(cn, PK_FORWARD, s_forward_done);
    p->type = m->type;
    memcpy(p->ident, ident, ident_len);
    p->ident_len = (uint8_t)ident_len;
    p->client_rid = m->rid;
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
    /* PUT and DEL carry a command id: a replicated center applies it once even when it is sent
     * again to a new leader after a failover (cache_link.c). A heartbeat carries none: repeating
     * one is harmless, and most writes are heartbeats (the store keeps ids for STORE_DEDUP_WINDOW). */
    uint8_t id[PROTO_CMD_ID_LEN];
    p->has_cmd_id = m->type != PROTO_TOUCH;
    if (p->has_cmd_id)
        cache_link_cmd_id(cn, id);
    proto_buf_reset(&cn->buf);
    if (m->type == PROTO_DEL)
        proto_enc_get_id(&cn->buf, PROTO_DEL, p->link.id, m->key.p, m->key.len, dl, id);
    else
        proto_enc_records_cmd_id(&cn->buf, m->type, p->link.id, m->recs, m->n, dl, p->has_cmd_id ? id : NULL);
    cache_link_send(cn, p, &cn->buf, m->deadline_us);
}

/* LEASE and SESSIONS: the store's business, passed through as they are (their answers too). */
static void s_pass_done(cache_node_t *cn, preq_t *p, const proto_msg_t *m, uint8_t status)
{
    proto_buf_reset(&cn->buf);
    if (m && m->type == PROTO_REPLY && p->type == PROTO_LEASE) {
        char errmsg[PROTO_ERRMSG_MAX + 1];
        memcpy(errmsg, m->key.p ? m->key.p : "", m->key.len);
        errmsg[m->key.len] = '\0';
        proto_enc_reply(&cn->buf, p->client_rid, m->status, m->seq, NULL, 0, errmsg, m->flags);
    } else if (m && m->type == PROTO_SESSIONS_REPLY && p->type == PROTO_SESSIONS) {
        proto_enc_sessions_reply(&cn->buf, p->client_rid, m->status, m->sessions, m->n);
    } else if (m && m->type == PROTO_REPLY && m->status != PROTO_OK) {
        char errmsg[PROTO_ERRMSG_MAX + 1];
        memcpy(errmsg, m->key.p ? m->key.p : "", m->key.len);
        errmsg[m->key.len] = '\0';
        proto_enc_reply(&cn->buf, p->client_rid, m->status, m->seq, NULL, 0, errmsg, 0);
    } else if (m) {
        s_reply_status(cn, p->ident, p->ident_len, p->client_rid, PROTO_EINTERNAL, "unexpected store reply");
        return;
    } else {
        s_reply_status(cn, p->ident, p->ident_len, p->client_rid, status,
                       status == PROTO_ETIMEOUT ? "store timed out" : "store unavailable");
        return;
    }
    s_send_to(cn, p->ident, p->ident_len, &cn->buf);
}

static void s_handle_pass(cache_node_t *cn, const dispatch_in_t *in, const proto_msg_t *m)
{
    if (!cache_link_up(cn)) {
        cn->store_unavailable++;
        s_reply_status(cn, in->ident, in->ident_len, m->rid, PROTO_EUNAVAIL, "store unavailable");
        return;
    }
    preq_t *p = cache_link_request(cn, PK_FORWARD, s_pass_done);
    p->type = m->type;
    memcpy(p->ident, in->ident, in->ident_len);
    p->ident_len = (uint8_t)in->ident_len;
    p->client_rid = m->rid;
    if (proto_rewrite_rid(in->raw, in->raw_len, p->link.id, &cn->buf) < 0) {
        /* cannot happen for a message that decoded; answered through the request's failure path */
        proto_buf_reset(&cn->buf);
        proto_enc_get(&cn->buf, PROTO_SESSIONS, p->link.id, "", 0);
    }
    cache_link_send(cn, p, &cn->buf, 0);
}

/* ==== stats and health (the numbers: cache_stats.c) =========================================== */

static void s_handle_stats(cache_node_t *cn, const uint8_t *ident, size_t ident_len, const proto_msg_t *m)
{
    stats_list_t l;
    stats_list_init(&l);
    cache_stats_collect(cn, &l, m->type == PROTO_STATS);
    proto_buf_reset(&cn->buf);
    proto_enc_stats(&cn->buf, m->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, m->rid, PROTO_OK, l.v, l.n);
    stats_list_fini(&l);
    s_send_to(cn, ident, ident_len, &cn->buf);
}

/* ==== dispatch ================================================================================= */

static void on_read(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    s_handle_read(cn, in->ident, in->ident_len, m);
}

static void on_write(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    s_handle_write(cn, in->ident, in->ident_len, m);
}

/* Another node's acknowledged write, for read-your-writes (the stream brings it too, later). A
 * claim until the store confirms it: refused whole when a version is beyond the store's sequence
 * we know plus APPLY_SLACK (no acknowledged write can be), else cached and held unconfirmed. */
static void on_apply(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    uint64_t known = MAX(sync_client_seq(cn->sync), cn->store_seq);
    for (uint32_t i = 0; i < m->n; i++)
        if (m->recs[i].version > known + APPLY_SLACK) {
            cn->applies_rejected += m->n;
            char msg[128];
            snprintf(msg, sizeof msg, "apply: version %llu is beyond the store's sequence (%llu)",
                     (unsigned long long)m->recs[i].version, (unsigned long long)known);
            LOG_RATELIMITED(LOG_WARN, 1000, "APPLY refused: %s", msg);
            s_reply_status(cn, in->ident, in->ident_len, m->rid, PROTO_EBADREQ, msg);
            return;
        }
    uint64_t deadline = util_mono_ms() + cn->cfg.hb_limit_ms;
    uint32_t refused = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        const proto_record_t *r = &m->recs[i];
        cache_view_t v;
        if (cache_peek(cn->cache, r->user_id, r->uid_len, &v) && v.version >= r->version &&
            !cache_apply_pending(cn->applies, r->user_id, r->uid_len))
            continue; /* the store's own data is here already, as new or newer */
        if (cache_apply_add(cn->applies, r->user_id, r->uid_len, r->version, deadline) < 0) {
            refused++;
            continue;
        }
        s_fetch_note_by(cn, r->user_id, r->uid_len, r->version, r, false, true);
        s_cache_record(cn, r, 0);
    }
    cn->applies_rejected += refused;
    if (refused)
        s_reply_status(cn, in->ident, in->ident_len, m->rid, PROTO_EOVERLOAD, "apply: too many unconfirmed APPLYs");
    else
        s_reply_status(cn, in->ident, in->ident_len, m->rid, PROTO_OK, NULL);
}

static void on_pass(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    s_handle_pass(cn, in, m);
}

static void on_stats(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    s_handle_stats(cn, in->ident, in->ident_len, m);
}

static void on_unexpected(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    cn->requests_total++;
    cn->malformed_total++;
    s_reply_status(cn, in->ident, in->ident_len, m->rid, PROTO_EBADREQ, "unexpected message type");
}

static void on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    cache_node_t *cn = ctx;
    cn->malformed_total++;
    if (in->raw)
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed request from a gateway: %s", why);
    if (has_rid)
        s_reply_status(cn, in->ident, in->ident_len, rid, PROTO_EBADREQ, why);
}

/* A BATCH from one gateway socket: what can be answered now leaves in one frame; deferred answers
 * (misses, writes) leave on their own when they are ready. */
static void on_batch(void *ctx, const dispatch_in_t *in, bool begin)
{
    cache_node_t *cn = ctx;
    if (begin) {
        cn->in_batch = true;
        cn->batch_ident = in->ident;
        cn->batch_ident_len = in->ident_len;
        proto_batch_reset(&cn->out_batch);
        return;
    }
    cn->in_batch = false;
    if (cn->out_batch.n) {
        proto_batch_encode(&cn->out_batch, &cn->out_frame);
        s_send_to(cn, in->ident, in->ident_len, &cn->out_frame);
    }
}

static const dispatch_t s_gateways = {
    .routed = true,
    .on = {[PROTO_GET] = on_read, [PROTO_MGET] = on_read, [PROTO_PUT] = on_write, [PROTO_TOUCH] = on_write,
           [PROTO_DEL] = on_write, [PROTO_APPLY] = on_apply, [PROTO_LEASE] = on_pass, [PROTO_SESSIONS] = on_pass,
           [PROTO_PING] = on_stats, [PROTO_STATS] = on_stats},
    .on_other = on_unexpected,
    .on_malformed = on_malformed,
    .on_batch = on_batch,
};

void cache_serve_frames(cache_node_t *cn, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_gateways, cn, sock, frames, n);
}

/* ==== life ======================================================================================= */

void cache_serve_init(cache_node_t *cn)
{
    idtab_init(&cn->fetches);
    proto_buf_init(&cn->buf);
    proto_buf_init(&cn->rec);
    proto_batch_init(&cn->out_batch);
    proto_buf_init(&cn->out_frame);
    cn->applies = cache_apply_new(APPLY_PENDING_MAX);
}

void cache_serve_fini(cache_node_t *cn)
{
    idtab_fini(&cn->fetches); /* the link failed every fetch before (cache_link_fini) */
    proto_buf_fini(&cn->buf);
    proto_buf_fini(&cn->rec);
    proto_batch_fini(&cn->out_batch);
    proto_buf_fini(&cn->out_frame);
    cache_apply_destroy(&cn->applies);
}
