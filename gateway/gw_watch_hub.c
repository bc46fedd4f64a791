/* gw_watch_hub.c -- a gateway thread's watch hub (see gw_watch_hub.h).
 *
 * The hub follows the region's whole change stream with the same sync client as the cache-nodes
 * (SUB to the store's change stream -- or the region relay's -- plus catch-up), in the thread's
 * h2o loop through ZMQ_FD (gw_zfd.h: a drain that stops at the sync client's bound goes on next
 * turn, not at the next tick). It keeps
 *   - a table user id -> subscribers (an idtab of users: each watched id stored once, with one
 *     reference per subscriber watching it; a subscriber's slot points at the user and knows its
 *     place in the user's list, so joining and leaving are O(1) per id), so a change of a user
 *     nobody watches costs one decode and one lookup; a watched user's change is rendered once
 *     and shared by every subscriber watching that user;
 *   - a byte-bounded window of recent changes (a seqwin: SSE_WINDOW_BYTES split between threads),
 *     so a subscriber that resumes with Last-Event-ID gets every change it missed while those
 *     versions are still here.
 * A change is given out when it is a set (PUT, batch write, a heartbeat that changed the status,
 * an expiry to offline) or a delete; heartbeats that keep the status (TOUCH) are not.
 *
 * One thread: the hub's. Only the window's share of SSE_WINDOW_BYTES is read from configuration.
 */
#include "gw_watch_hub.h"
#include "gw_config.h"
#include "gw_upstream.h"
#include "gw_zfd.h"
#include "idtab.h"
#include "log.h"
#include "seqwin.h"
#include "sync_client.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define TICK_MS 100

/* A subscriber watching a user: which subscriber, and which of its slots. */
typedef struct ref {
    gw_watch_sub_t *s;
    uint32_t idx;
} ref_t;

/* A watched user, once per hub, freed with its last subscriber. */
struct gw_watch_user {
    idtab_link_t link; /* by a hash of the user id: ids may share one */
    ref_t *refs;
    uint32_t n, cap;
    uint8_t klen;
    char key[]; /* klen bytes and a NUL */
};
typedef struct gw_watch_user entry_t;
struct gw_watch_hub {
    gw_ctx_t *cx;
    void (*on_live)(void *arg);
    void *on_live_arg;
    sync_client_t *sync;
    gw_zfd_t zsub, zdealer;
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
    idtab_t users;            /* user id -> entry_t */
    gw_watch_sub_t *subs;     /* every subscriber */
    seqwin_t window;          /* SET: the encoded record; DEL: the user id */
    uint64_t seq;             /* last applied */
    bool live_once;
    uint32_t npending;        /* subscribers with resume_since set */
    gw_buf_t ev;              /* the change being given out, rendered (the public view) */
    gw_buf_t ev_priv;         /* ... the private view (the user's own, admins') */
    gw_watch_observer_t obs[GW_WATCH_HUB_OBSERVERS]; /* the near cache (gw_nearcall.c), sessions ended
                                                      * from outside (gw_wsend.c) */
    uint32_t nobs;
};

static void s_resume_check(gw_watch_hub_t *h);
static void s_fetch_current(gw_watch_sub_t *s);

/* ==== the table of watched users =============================================================== */

static uint64_t s_hash(const char *k, size_t n)
{
    return util_hash64(k, n, 0x5ea7c4);
}

static entry_t *s_find(gw_watch_hub_t *h, const char *k, size_t n)
{
    for (idtab_link_t *l = idtab_find(&h->users, s_hash(k, n)); l; l = idtab_find_next(l)) {
        entry_t *e = IDTAB_ENTRY(l, entry_t, link);
        if (e->klen == n && memcmp(e->key, k, n) == 0)
            return e;
    }
    return NULL;
}

const char *gw_watch_hub_slot_id(const gw_watch_sub_t *s, uint32_t i, size_t *len)
{
    *len = s->slots[i].user->klen;
    return s->slots[i].user->key;
}

/* Slot idx of s watches k[0..n): find or make the user, join its list. */
static void s_table_add(gw_watch_hub_t *h, gw_watch_sub_t *s, uint32_t idx, const char *k, size_t n)
{
    entry_t *e = s_find(h, k, n);
    if (!e) {
        e = xmalloc(sizeof *e + n + 1);
        e->link.id = s_hash(k, n);
        e->refs = NULL;
        e->n = e->cap = 0;
        e->klen = (uint8_t)n;
        memcpy(e->key, k, n);
        e->key[n] = '\0';
        idtab_add(&h->users, &e->link);
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 2;
        e->refs = xrealloc(e->refs, e->cap * sizeof *e->refs);
    }
    s->slots[idx] = (gw_watch_slot_t){.user = e, .ver = 0, .refpos = e->n};
    e->refs[e->n++] = (ref_t){s, idx};
}

/* Slot idx of s leaves its user's list (the last reference moves into its place); the user goes
 * with its last subscriber, and a list far larger than its users gives memory back. */
static void s_table_remove(gw_watch_hub_t *h, gw_watch_sub_t *s, uint32_t idx)
{
    entry_t *e = s->slots[idx].user;
    uint32_t pos = s->slots[idx].refpos;
    ref_t last = e->refs[--e->n];
    if (pos != e->n) {
        e->refs[pos] = last;
        last.s->slots[last.idx].refpos = pos;
    }
    if (!e->n) {
        idtab_remove(&h->users, &e->link);
        free(e->refs);
        free(e);
    } else if (e->cap > 8 && e->n < e->cap / 4) {
        e->cap /= 2;
        e->refs = xrealloc(e->refs, e->cap * sizeof *e->refs);
    }
}

/* ==== giving out changes ======================================================================= */

/* A set as one kind of viewer sees it, rendered into buf. The public view of an invisible user
 * carries the version others saw (pub_version): what the subscriber is given is that. */
static void s_render_set_as(gw_buf_t *buf, const proto_record_t *r, bool private_view, gw_watch_event_t *ev)
{
    gw_buf_reset(buf);
    gw_json_record_as(buf, r, util_now_us(), private_view);
    uint64_t v = private_view || !proto_record_invisible(r) ? r->version : r->pub_version;
    *ev = (gw_watch_event_t){.version = v, .uid = r->user_id, .uid_len = r->uid_len, .json = buf->p,
                             .json_len = buf->len};
}

static bool s_private(const gw_watch_sub_t *s, const char *uid, size_t len)
{
    return gw_viewer_is_private(&s->viewer, uid, len);
}

/* A change of r reaches subscriber s: the private view always, the public only when it moved. */
static bool s_visible_change(const gw_watch_sub_t *s, const proto_record_t *r)
{
    return s_private(s, r->user_id, r->uid_len) || r->pub_version == r->version;
}

static void s_render_set(gw_watch_hub_t *h, const gw_watch_sub_t *s, const proto_record_t *r, gw_watch_event_t *ev)
{
    s_render_set_as(&h->ev, r, s_private(s, r->user_id, r->uid_len), ev);
}

static void s_render_del(gw_watch_hub_t *h, const char *uid, size_t n, uint64_t seq, gw_watch_event_t *ev)
{
    gw_buf_reset(&h->ev);
    gw_buf_adds(&h->ev, "{\"user_id\":");
    gw_buf_add_jstr(&h->ev, uid, n);
    gw_buf_adds(&h->ev, ",\"deleted\":true,\"version\":");
    gw_buf_add_u64(&h->ev, seq);
    gw_buf_adds(&h->ev, "}");
    *ev = (gw_watch_event_t){.version = seq, .uid = uid, .uid_len = n, .deleted = true, .json = h->ev.p,
                             .json_len = h->ev.len};
}

/* Give a change to one subscriber's id slot if it is newer than what that slot has had. */
static void s_deliver(gw_watch_sub_t *s, uint32_t idx, const gw_watch_event_t *ev)
{
    if (ev->version <= s->slots[idx].ver || s->resume_since)
        return; /* had it; or a resume still waiting: the window replays this change to it */
    s->slots[idx].ver = ev->version;
    gw_watch_event_t e = *ev;
    e.slot = idx;
    s->sink->event(s, &e);
}

static void s_fanout(gw_watch_hub_t *h, const proto_change_t *c)
{
    entry_t *e = s_find(h, c->rec.user_id, c->rec.uid_len);
    if (!e)
        return;
    gw_watch_event_t ev, ev_priv;
    bool have_pub = false, have_priv = false; /* each view rendered once, when a subscriber needs it */
    if (c->kind == PROTO_CH_DEL) {
        s_render_del(h, c->rec.user_id, c->rec.uid_len, c->rec.version, &ev);
        ev_priv = ev;
        have_pub = have_priv = true;
    }
    for (uint32_t i = 0; i < e->n; i++) {
        gw_watch_sub_t *s = e->refs[i].s;
        if (c->kind != PROTO_CH_DEL) {
            if (!s_visible_change(s, &c->rec))
                continue;
            bool priv = s_private(s, c->rec.user_id, c->rec.uid_len);
            if (priv && !have_priv) {
                s_render_set_as(&h->ev_priv, &c->rec, true, &ev_priv);
                have_priv = true;
            } else if (!priv && !have_pub) {
                s_render_set_as(&h->ev, &c->rec, false, &ev);
                have_pub = true;
            }
            s_deliver(s, e->refs[i].idx, priv ? &ev_priv : &ev);
        } else {
            s_deliver(s, e->refs[i].idx, &ev);
        }
        s->sink->flush(s);
    }
}

/* ==== the change stream ======================================================================== */

static void on_change(void *ctx, const proto_change_t *c)
{
    gw_watch_hub_t *h = ctx;
    h->seq = c->rec.version;
    for (uint32_t i = 0; i < h->nobs; i++)
        if (h->obs[i].change)
            h->obs[i].change(h->obs[i].ctx, c);
    if (c->kind == PROTO_CH_TOUCH)
        return; /* a heartbeat that kept the status: not an event */
    if (c->kind == PROTO_CH_SET) {
        proto_buf_t enc;
        proto_buf_init(&enc);
        proto_record_encode(&enc, &c->rec);
        seqwin_add(&h->window, c->rec.version, c->rec.version, c->kind, enc.data, enc.len);
        proto_buf_fini(&enc);
    } else {
        seqwin_add(&h->window, c->rec.version, c->rec.version, c->kind, c->rec.user_id, c->rec.uid_len);
    }
    s_fanout(h, c);
    s_resume_check(h);
}

static void on_reset(void *ctx)
{
    gw_watch_hub_t *h = ctx;
    /* Another database (or one behind us): versions start over. End every subscriber; clients
     * reconnect and get the current state. */
    seqwin_clear(&h->window, 0);
    h->seq = 0;
    h->live_once = false;
    for (uint32_t i = 0; i < h->nobs; i++)
        if (h->obs[i].reset)
            h->obs[i].reset(h->obs[i].ctx);
    for (gw_watch_sub_t *s = h->subs, *n; s; s = n) {
        n = s->next;
        s->sink->notice(s, "reset");
        s->sink->flush(s);
        s->sink->end(s);
    }
}

static void on_state(void *ctx, int state)
{
    gw_watch_hub_t *h = ctx;
    if (state == SYNC_LIVE) {
        h->live_once = true;
        /* The catch-up that made us live compacted every change before this point to the latest
         * per user: the window is complete only from here on. (Changes it applied stay in the
         * window but are not offered to resumes from before this point.) */
        uint64_t through = sync_client_seq(h->sync);
        seqwin_raise_start(&h->window, through);
        if (through > h->seq)
            h->seq = through;
        h->on_live(h->on_live_arg);
    }
    for (uint32_t i = 0; i < h->nobs; i++)
        if (h->obs[i].state)
            h->obs[i].state(h->obs[i].ctx, state, sync_client_seq(h->sync));
    s_resume_check(h);
}

void gw_watch_hub_resync(gw_watch_hub_t *h)
{
    if (!h || !h->sync)
        return;
    sync_client_resync(h->sync);
    gw_zfd_kick(&h->zdealer); /* it sent a catch-up request: drain on the next turn */
}

void gw_watch_hub_observe(gw_watch_hub_t *h, const gw_watch_observer_t *o)
{
    if (h->nobs == GW_WATCH_HUB_OBSERVERS)
        abort(); /* a programming error: raise GW_WATCH_HUB_OBSERVERS */
    h->obs[h->nobs++] = *o;
    /* Already live: say so now (the observer came after the hub's first catch-up). */
    if (h->sync && o->state)
        o->state(o->ctx, sync_client_state(h->sync), sync_client_seq(h->sync));
}

bool gw_watch_hub_live(const gw_watch_hub_t *h)
{
    return !h || h->live_once;
}

/* Both sync-client sockets drain through here: the sync client drains both, bounded. */
static bool s_pump(void *arg)
{
    gw_watch_hub_t *h = arg;
    return sync_client_handle(h->sync) != 0;
}

static void on_tick(h2o_timeout_entry_t *e)
{
    gw_watch_hub_t *h = H2O_STRUCT_FROM_MEMBER(gw_watch_hub_t, tick, e);
    sync_client_tick(h->sync, util_mono_ms());
    /* The sync client may have sent a catch-up: drain now (ZMQ_FD contract: after every send). */
    if (s_pump(h))
        gw_zfd_kick(&h->zsub);
    s_resume_check(h);
    h2o_timeout_link(h->cx->h2o.loop, &h->tick_to, &h->tick);
}

int gw_watch_hub_new(gw_ctx_t *cx, void *zctx, void (*on_live)(void *arg), void *arg, gw_watch_hub_t **out, char *err)
{
    *out = NULL;
    if (!gw_cfg.sse_max_streams)
        return 0;
    gw_watch_hub_t *h = xcalloc(1, sizeof *h);
    h->cx = cx;
    h->on_live = on_live;
    h->on_live_arg = arg;
    gw_buf_init(&h->ev);
    gw_buf_init(&h->ev_priv);
    idtab_init(&h->users);
    seqwin_init(&h->window, gw_cfg.sse_window_bytes / (gw_cfg.threads ? gw_cfg.threads : 1), 0);
    sync_config_t sc = {.pub_ep = gw_cfg.store_pub, .cmd_ep = gw_cfg.store_cmd,
                        .request_timeout_ms = gw_cfg.request_timeout_ms};
    sync_handler_t sh = {.ctx = h, .apply = on_change, .reset = on_reset, .state = on_state};
    h->sync = sync_client_new(zctx, &sc, &sh, err);
    if (!h->sync) {
        free(h);
        return -1;
    }
    zmq_pollitem_t items[2];
    sync_client_poll_items(h->sync, items);
    gw_zfd_open(&h->zsub, &cx->h2o, items[0].socket, s_pump, h);
    gw_zfd_open(&h->zdealer, &cx->h2o, items[1].socket, s_pump, h);
    h2o_timeout_init(cx->h2o.loop, &h->tick_to, TICK_MS);
    h->tick.cb = on_tick;
    h2o_timeout_link(cx->h2o.loop, &cx->h2o.zero_timeout, &h->tick);
    *out = h;
    return 0;
}

void gw_watch_hub_stop(gw_watch_hub_t *h)
{
    if (!h)
        return;
    for (gw_watch_sub_t *s = h->subs, *n; s; s = n) {
        n = s->next;
        s->sink->end(s);
    }
    if (h2o_timeout_is_linked(&h->tick))
        h2o_timeout_unlink(&h->tick);
    gw_zfd_close(&h->zsub);
    gw_zfd_close(&h->zdealer);
    sync_client_destroy(&h->sync);
    memset(h->obs, 0, sizeof h->obs);
    h->nobs = 0;
    seqwin_clear(&h->window, 0);
    /* Subscribers still waiting for h2o unsubscribe from its stop callbacks; the table entries
     * they hold are freed then. */
}

/* ==== resuming ================================================================================= */

/* Every change after `since` is still in the window. */
static bool s_window_covers(const gw_watch_hub_t *h, uint64_t since)
{
    return h->live_once && since >= seqwin_start(&h->window) && since <= h->seq;
}

static void s_resume_window(gw_watch_hub_t *h, gw_watch_sub_t *s, uint64_t since)
{
    for (uint32_t i = 0; i < s->nids; i++)
        s->slots[i].ver = since;
    for (const seqwin_item_t *c = seqwin_after(&h->window, since); c; c = c->next) {
        proto_record_t r;
        const char *uid;
        size_t ul;
        if (c->kind == PROTO_CH_DEL) {
            uid = c->data;
            ul = c->len;
        } else if (proto_record_decode(c->data, c->len, &r) == 0) {
            uid = r.user_id;
            ul = r.uid_len;
        } else {
            continue;
        }
        const entry_t *e = s_find(h, uid, ul);
        for (uint32_t i = 0; e && i < s->nids; i++) {
            if (s->slots[i].user != e)
                continue;
            gw_watch_event_t ev;
            if (c->kind == PROTO_CH_DEL)
                s_render_del(h, uid, ul, c->last, &ev);
            else if (s_visible_change(s, &r))
                s_render_set(h, s, &r, &ev);
            else
                continue;
            ev.replay = true;
            s_deliver(s, i, &ev);
        }
    }
}

/* Older than what we remember (or from another database): the current state of whatever changed
 * after `since`. */
static void s_resume_current(gw_watch_hub_t *h, gw_watch_sub_t *s, uint64_t since)
{
    s->sink->notice(s, "resync");
    if (since <= h->seq)
        for (uint32_t i = 0; i < s->nids; i++)
            s->slots[i].ver = since;
    s_fetch_current(s);
}

/* Resumes waiting for this thread's stream: from the window once it covers them; the current
 * state once it cannot (the window moved past) or their wait is over. */
static void s_resume_check(gw_watch_hub_t *h)
{
    if (!h->npending)
        return;
    uint64_t now = util_mono_ms();
    for (gw_watch_sub_t *s = h->subs; s && h->npending; s = s->next) {
        uint64_t since = s->resume_since;
        if (!since)
            continue;
        bool covered = s_window_covers(h, since);
        if (!covered && !(h->live_once && since < seqwin_start(&h->window)) && now < s->resume_by_ms)
            continue;
        s->resume_since = 0;
        h->npending--;
        LOG_RATELIMITED(LOG_INFO, 1000, "watch: resume from %llu %s (stream at %llu, window from %llu)",
                        (unsigned long long)since, covered ? "from the window" : "with the current state",
                        (unsigned long long)h->seq, (unsigned long long)seqwin_start(&h->window));
        if (covered)
            s_resume_window(h, s, since);
        else
            s_resume_current(h, s, since);
        s->sink->flush(s);
    }
}

/* ==== current records ========================================================================== */

/* A read of current records in flight for a subscriber. The call points here, not at the
 * subscriber: unsubscribing detaches it (s = NULL), so the subscriber may be freed while the read
 * is out (a WebSocket has no HTTP request; an HTTP/2 request outlives its stream's end by a write). */
typedef struct fetch {
    gw_watch_sub_t *s;
    struct fetch *next;
} fetch_t;

static void on_initial(gw_call_t *c, const proto_msg_t *m, int status)
{
    fetch_t *f = c->arg;
    gw_watch_sub_t *s = f->s;
    if (s)
        for (fetch_t **pp = (fetch_t **)&s->fetches; *pp; pp = &(*pp)->next)
            if (*pp == f) {
                *pp = f->next;
                break;
            }
    free(f);
    if (!s || (s->req && !c->req) || !m || m->status != PROTO_OK)
        return; /* the subscriber still gets live events; a client may re-read with GET */
    /* Deliver in version order so the last id a client sees is the highest. */
    const proto_record_t **order = xmalloc((m->n ? m->n : 1) * sizeof *order);
    for (uint32_t i = 0; i < m->n; i++)
        order[i] = &m->recs[i];
    for (uint32_t i = 1; i < m->n; i++)
        for (uint32_t j = i; j > 0 && order[j]->version < order[j - 1]->version; j--) {
            const proto_record_t *tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    for (uint32_t i = 0; i < m->n; i++) {
        const proto_record_t *r = order[i];
        const entry_t *e = s_find(s->hub, r->user_id, r->uid_len);
        for (uint32_t k = 0; e && k < s->nids; k++) {
            if (s->slots[k].user == e) {
                gw_watch_event_t ev;
                s_render_set(s->hub, s, r, &ev);
                s_deliver(s, k, &ev);
            }
        }
    }
    free(order);
    s->sink->flush(s);
}

/* Ask the cache tier for the current records of a subscriber's users, grouped by owner node. */
static void s_fetch_current(gw_watch_sub_t *s)
{
    gw_ctx_t *t = s->hub->cx;
    proto_str_t *grp = xmalloc(s->nids * sizeof *grp);
    for (int node = 0; node < gw_cfg.nnodes; node++) {
        uint32_t g = 0;
        for (uint32_t i = 0; i < s->nids; i++) {
            const entry_t *e = s->slots[i].user;
            int owner = gw_upstream_route(t->up, e->key, e->klen);
            if (owner == node || (owner < 0 && node == 0))
                grp[g++] = (proto_str_t){e->key, e->klen};
        }
        if (g) {
            uint64_t rid = gw_upstream_rid(t->up);
            proto_buf_reset(&t->pb);
            proto_enc_keys(&t->pb, rid, grp, g);
            fetch_t *f = xmalloc(sizeof *f);
            f->s = s;
            f->next = s->fetches;
            s->fetches = f;
            if (!gw_upstream_send(t->up, s->req, node, rid, PROTO_MGET, &t->pb, on_initial, f)) {
                s->fetches = f->next;
                free(f);
            }
        }
    }
    free(grp);
}

/* ==== subscribers ============================================================================== */

void gw_watch_hub_subscribe(gw_watch_hub_t *h, gw_watch_sub_t *s, const proto_str_t *ids, uint32_t n, uint64_t since)
{
    s->hub = h;
    s->nids = n;
    s->slots = xmalloc((n ? n : 1) * sizeof *s->slots);
    s->resume_since = 0;
    s->fetches = NULL;
    for (uint32_t i = 0; i < n; i++)
        s_table_add(h, s, i, ids[i].p, ids[i].len);
    s->prev = NULL;
    s->next = h->subs;
    if (h->subs)
        h->subs->prev = s;
    h->subs = s;
    if (!since) {
        s_fetch_current(s);
    } else if (s_window_covers(h, since)) {
        s_resume_window(h, s, since);
    } else if (!h->live_once || since > h->seq) {
        /* This thread's stream is not there yet (just started, catching up, or a change the client
         * saw through another thread has not reached it): wait for it, a request timeout at most,
         * rather than fall back to the current state at once. */
        s->resume_since = since;
        s->resume_by_ms = util_mono_ms() + gw_cfg.request_timeout_ms;
        h->npending++;
        LOG_RATELIMITED(LOG_INFO, 1000, "watch: resume from %llu waits for this thread's stream (at %llu, live=%d)",
                        (unsigned long long)since, (unsigned long long)h->seq, h->live_once);
    } else {
        s_resume_current(h, s, since);
    }
}

void gw_watch_hub_unsubscribe(gw_watch_sub_t *s)
{
    gw_watch_hub_t *h = s->hub;
    if (s->resume_since)
        h->npending--;
    for (uint32_t i = 0; i < s->nids; i++)
        s_table_remove(h, s, i);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    for (fetch_t *f = s->fetches; f; f = f->next)
        f->s = NULL; /* the read answers into nothing; on_initial frees f */
    s->fetches = NULL;
    free(s->slots);
    s->slots = NULL;
    s->nids = 0;
}

uint32_t gw_watch_hub_forget(gw_watch_sub_t *s, const char *uid, size_t len)
{
    uint32_t i = 0;
    while (i < s->nids && (s->slots[i].user->klen != len || memcmp(s->slots[i].user->key, uid, len) != 0))
        i++;
    if (i == s->nids)
        return s->nids;
    s_table_remove(s->hub, s, i);
    uint32_t last = --s->nids;
    if (i != last) {
        /* The last slot moves into slot i: its user's reference follows. */
        s->slots[i] = s->slots[last];
        s->slots[i].user->refs[s->slots[i].refpos].idx = i;
    }
    return s->nids;
}
