/* gw_watch.c -- Server-Sent Events: GET /api/v2/presence/watch?users=a,b
 *
 * Every gateway thread runs a watch hub: the same sync client the cache-nodes use (SUB to the
 * store's change stream -- or the region relay's -- plus catch-up), wired into the thread's h2o
 * loop through ZMQ_FD. The hub keeps
 *   - a table user id -> watchers (one entry per watched id per stream), so a change costs one hash
 *     lookup and is turned into an event only when somebody watches that user;
 *   - a byte-bounded window of recent changes (SSE_WINDOW_BYTES), so a client that reconnects with
 *     Last-Event-ID (or ?since=) gets every event it missed while those versions are still here.
 *
 * Events: `event: presence`, `id:` the record's version (the store's global sequence), `data:` the
 * record JSON; a delete is {"user_id":...,"deleted":true,"version":N}. A change is an event when it
 * is a set (PUT, batch write, a heartbeat that changed the status, an expiry to offline) or a
 * delete; heartbeats that keep the status are not. Per stream and user, versions only go up.
 *
 * A new stream without Last-Event-ID first gets the current record of each watched user (read
 * through the cache-nodes), then live events. A resume older than the window gets the current
 * records that changed after it (the latest state, not every intermediate event) and a
 * `: resync` comment. `: ping` comments keep proxies from closing idle streams (SSE_PING_MS).
 *
 * Backpressure: events queue per stream while h2o has not asked for more (generator proceed);
 * beyond SSE_QUEUE_MAX bytes the client is not reading: it is dropped (its connection is shut
 * down; HTTP/2 streams stop receiving and are closed by h2o) -- memory never grows without bound.
 *
 * Limits: SSE_MAX_STREAMS per gateway process, SSE_MAX_IDS ids per stream.
 */
#include "gw_watch.h"
#include "gw_config.h"
#include "gw_endpoints.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_upstream.h"
#include "log.h"
#include "sync_client.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TICK_MS 100

typedef struct watcher watcher_t;

typedef struct wref {
    watcher_t *w;
    uint32_t idx;
} wref_t;

typedef struct wentry {
    struct wentry *next;
    uint64_t hash;
    uint8_t klen;
    char key[PROTO_USER_ID_MAX];
    wref_t *refs;
    uint32_t n, cap;
} wentry_t;

struct watcher {
    watcher_t *prev, *next;
    struct gw_watch_hub *hub;
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    h2o_req_t *req;
    gw_rctx_t *rc;
    uint32_t nids;
    char (*ids)[PROTO_USER_ID_MAX + 1];
    uint8_t *idlen;
    uint64_t *ver; /* last version sent per id */
    gw_buf_t pending, inflight;
    bool sending, dropped, closing;
    h2o_timeout_entry_t ping;
    uint64_t last_write_ms;
    uint64_t resume_since; /* != 0: a resume waiting for the hub to reach it (s_resume_check) */
    uint64_t resume_by_ms; /* ... until then; after, the current state instead */
};

/* One remembered change: SET carries the encoded record, DEL the user id. */
typedef struct wchange {
    struct wchange *next;
    uint64_t seq;
    uint8_t kind;
    uint16_t len;
    char data[];
} wchange_t;

struct gw_watch_hub {
    gw_ctx_t *cx;
    void (*on_live)(void *arg);
    void *on_live_arg;
    sync_client_t *sync;
    h2o_socket_t *hs[2];
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
    h2o_timeout_t ping_to;
    wentry_t **tab;
    size_t tsize, tcount;
    watcher_t *watchers;
    wchange_t *w_head, *w_tail;
    size_t w_bytes;
    uint64_t w_start; /* resumes from after this sequence are answered from the window */
    uint64_t seq;     /* last applied */
    bool live_once;
    uint32_t npending; /* watchers with resume_since set */
    gw_buf_t ev;
};
typedef gw_watch_hub_t watch_hub_t;

static atomic_int_fast64_t s_streams;
#define s_window_max (gw_cfg.sse_window_bytes / (gw_cfg.threads ? gw_cfg.threads : 1))

/* ==== the watch table ======================================================================== */

static uint64_t s_hash(const char *k, size_t n)
{
    return util_hash64(k, n, 0x5ea7c4);
}

static wentry_t *s_find(watch_hub_t *h, const char *k, size_t n, uint64_t hash)
{
    if (!h->tsize)
        return NULL;
    for (wentry_t *e = h->tab[hash & (h->tsize - 1)]; e; e = e->next)
        if (e->hash == hash && e->klen == n && memcmp(e->key, k, n) == 0)
            return e;
    return NULL;
}

static void s_table_add(watch_hub_t *h, watcher_t *w, uint32_t idx)
{
    const char *k = w->ids[idx];
    size_t n = w->idlen[idx];
    uint64_t hash = s_hash(k, n);
    wentry_t *e = s_find(h, k, n, hash);
    if (!e) {
        if (h->tcount + 1 > h->tsize / 2) {
            size_t ns = h->tsize ? h->tsize * 2 : 1024;
            wentry_t **nt = xcalloc(ns, sizeof *nt);
            for (size_t i = 0; i < h->tsize; i++)
                for (wentry_t *x = h->tab[i], *nx; x; x = nx) {
                    nx = x->next;
                    x->next = nt[x->hash & (ns - 1)];
                    nt[x->hash & (ns - 1)] = x;
                }
            free(h->tab);
            h->tab = nt;
            h->tsize = ns;
        }
        e = xcalloc(1, sizeof *e);
        e->hash = hash;
        e->klen = (uint8_t)n;
        memcpy(e->key, k, n);
        e->next = h->tab[hash & (h->tsize - 1)];
        h->tab[hash & (h->tsize - 1)] = e;
        h->tcount++;
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 4;
        e->refs = xrealloc(e->refs, e->cap * sizeof *e->refs);
    }
    e->refs[e->n++] = (wref_t){w, idx};
}

static void s_table_remove(watch_hub_t *h, watcher_t *w, uint32_t idx)
{
    const char *k = w->ids[idx];
    size_t n = w->idlen[idx];
    uint64_t hash = s_hash(k, n);
    wentry_t **pp = &h->tab[hash & (h->tsize - 1)];
    for (; *pp; pp = &(*pp)->next) {
        wentry_t *e = *pp;
        if (e->hash != hash || e->klen != n || memcmp(e->key, k, n) != 0)
            continue;
        for (uint32_t i = 0; i < e->n; i++)
            if (e->refs[i].w == w && e->refs[i].idx == idx) {
                e->refs[i] = e->refs[--e->n];
                break;
            }
        if (!e->n) {
            *pp = e->next;
            free(e->refs);
            free(e);
            h->tcount--;
        }
        return;
    }
}

/* ==== sending ================================================================================ */

static void s_close_watcher(watcher_t *w);
static void s_resume_check(watch_hub_t *h);
static void s_fetch_current(watcher_t *w);

static void s_flush(watcher_t *w)
{
    if (w->sending || w->closing || !w->pending.len)
        return;
    gw_buf_t tmp = w->inflight;
    w->inflight = w->pending;
    w->pending = tmp;
    gw_buf_reset(&w->pending);
    h2o_iovec_t buf = h2o_iovec_init(w->inflight.p, w->inflight.len);
    w->sending = true;
    w->last_write_ms = util_mono_ms();
    h2o_send(w->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* The client is not reading: stop buffering and cut its connection. */
static void s_drop(watcher_t *w)
{
    if (w->dropped)
        return;
    w->dropped = true;
    gw_buf_reset(&w->pending);
    atomic_fetch_add(&gw_metrics.sse_dropped, 1);
    LOG_RATELIMITED(LOG_NOTICE, 1000, "SSE client dropped: more than %llu bytes unread",
                    (unsigned long long)gw_cfg.sse_queue_max);
    /* HTTP/1: shut the socket down; the pending write fails and h2o calls our stop callback.
     * HTTP/2: the stream stays until h2o closes it; we just hold nothing more for it. */
    gw_conns_cut(w->hub->cx->conns, w->req);
}

static void s_queue(watcher_t *w, const char *p, size_t n)
{
    if (w->dropped || w->closing)
        return;
    if (w->pending.len + n > gw_cfg.sse_queue_max) {
        s_drop(w);
        return;
    }
    gw_buf_add(&w->pending, p, n);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    watcher_t *w = H2O_STRUCT_FROM_MEMBER(watcher_t, gen, gen);
    w->sending = false;
    if (w->closing) {
        h2o_send(w->req, NULL, 0, H2O_SEND_STATE_FINAL);
        s_close_watcher(w);
        return;
    }
    s_flush(w);
}

static void s_unlink(watcher_t *w)
{
    watch_hub_t *h = w->hub;
    if (w->resume_since)
        h->npending--;
    for (uint32_t i = 0; i < w->nids; i++)
        s_table_remove(h, w, i);
    if (w->prev)
        w->prev->next = w->next;
    else
        h->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (h2o_timeout_is_linked(&w->ping))
        h2o_timeout_unlink(&w->ping);
    atomic_fetch_sub(&s_streams, 1);
    atomic_fetch_sub(&gw_metrics.sse_clients, 1);
}

static void s_free_watcher(watcher_t *w)
{
    gw_buf_free(&w->pending);
    gw_buf_free(&w->inflight);
    free(w->ids);
    free(w->idlen);
    free(w->ver);
    free(w);
}

/* h2o aborted the response (client gone, connection shut down). */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    watcher_t *w = H2O_STRUCT_FROM_MEMBER(watcher_t, gen, gen);
    s_unlink(w);
    s_free_watcher(w);
}

/* End a stream from our side (shutdown, reset): FINAL once no send is pending. */
static void s_end(watcher_t *w)
{
    if (w->closing)
        return;
    w->closing = true;
    if (!w->sending) {
        h2o_send(w->req, NULL, 0, H2O_SEND_STATE_FINAL);
        s_close_watcher(w);
    }
}

static void s_close_watcher(watcher_t *w)
{
    s_unlink(w);
    s_free_watcher(w);
}

static void on_ping(h2o_timeout_entry_t *e)
{
    watcher_t *w = H2O_STRUCT_FROM_MEMBER(watcher_t, ping, e);
    if (util_mono_ms() - w->last_write_ms >= gw_cfg.sse_ping_ms / 2 && !w->pending.len)
        s_queue(w, ": ping\n\n", 8);
    s_flush(w);
    h2o_timeout_link(w->hub->cx->h2o.loop, &w->hub->ping_to, &w->ping);
}

/* ==== events ================================================================================= */

static void s_event_set(watch_hub_t *h, const proto_record_t *r)
{
    gw_buf_reset(&h->ev);
    gw_buf_adds(&h->ev, "event: presence\nid: ");
    gw_buf_add_u64(&h->ev, r->version);
    gw_buf_adds(&h->ev, "\ndata: ");
    gw_json_record(&h->ev, r, util_now_us());
    gw_buf_adds(&h->ev, "\n\n");
}

static void s_event_del(watch_hub_t *h, const char *uid, size_t n, uint64_t seq)
{
    gw_buf_reset(&h->ev);
    gw_buf_adds(&h->ev, "event: presence\nid: ");
    gw_buf_add_u64(&h->ev, seq);
    gw_buf_adds(&h->ev, "\ndata: {\"user_id\":");
    gw_buf_add_jstr(&h->ev, uid, n);
    gw_buf_adds(&h->ev, ",\"deleted\":true,\"version\":");
    gw_buf_add_u64(&h->ev, seq);
    gw_buf_adds(&h->ev, "}\n\n");
}

/* Deliver a change to one watcher's id slot if it is newer than what that slot has seen. */
static void s_deliver(watch_hub_t *h, watcher_t *w, uint32_t idx, uint64_t version)
{
    if (version <= w->ver[idx] || w->resume_since)
        return; /* seen; or a resume still waiting: the window replays this change to it */
    w->ver[idx] = version;
    s_queue(w, h->ev.p, h->ev.len);
    atomic_fetch_add(&gw_metrics.sse_events, 1);
}

static void s_fanout(watch_hub_t *h, const char *uid, size_t n, uint8_t kind, const proto_record_t *r, uint64_t seq)
{
    wentry_t *e = s_find(h, uid, n, s_hash(uid, n));
    if (!e)
        return;
    if (kind == PROTO_CH_DEL)
        s_event_del(h, uid, n, seq);
    else
        s_event_set(h, r);
    for (uint32_t i = 0; i < e->n; i++) {
        s_deliver(h, e->refs[i].w, e->refs[i].idx, seq);
        s_flush(e->refs[i].w);
    }
}

static void s_window_add(watch_hub_t *h, uint64_t seq, uint8_t kind, const void *p, size_t n)
{
    wchange_t *c = xmalloc(sizeof *c + n);
    c->next = NULL;
    c->seq = seq;
    c->kind = kind;
    c->len = (uint16_t)n;
    memcpy(c->data, p, n);
    if (h->w_tail)
        h->w_tail->next = c;
    else
        h->w_head = c;
    h->w_tail = c;
    h->w_bytes += sizeof *c + n;
    while (h->w_bytes > s_window_max && h->w_head != h->w_tail) {
        wchange_t *old = h->w_head;
        h->w_head = old->next;
        h->w_bytes -= sizeof *old + old->len;
        h->w_start = old->seq;
        free(old);
    }
}

static void s_window_clear(watch_hub_t *h, uint64_t from)
{
    while (h->w_head) {
        wchange_t *c = h->w_head;
        h->w_head = c->next;
        free(c);
    }
    h->w_tail = NULL;
    h->w_bytes = 0;
    h->w_start = from;
}

static void on_change(void *ctx, const proto_change_t *c)
{
    watch_hub_t *h = ctx;
    h->seq = c->rec.version;
    if (c->kind == PROTO_CH_TOUCH)
        return; /* a heartbeat that kept the status: not an event */
    proto_buf_t enc;
    if (c->kind == PROTO_CH_SET) {
        proto_buf_init(&enc);
        proto_record_encode(&enc, &c->rec);
        s_window_add(h, c->rec.version, c->kind, enc.data, enc.len);
        proto_buf_fini(&enc);
    } else {
        s_window_add(h, c->rec.version, c->kind, c->rec.user_id, c->rec.uid_len);
    }
    s_fanout(h, c->rec.user_id, c->rec.uid_len, c->kind, &c->rec, c->rec.version);
    s_resume_check(h);
}

static void on_reset(void *ctx)
{
    watch_hub_t *h = ctx;
    /* Another database (or one behind us): versions start over. End every stream; clients
     * reconnect and get the current state. */
    s_window_clear(h, 0);
    h->seq = 0;
    h->live_once = false;
    for (watcher_t *w = h->watchers, *n; w; w = n) {
        n = w->next;
        s_queue(w, ": reset\n\n", 9);
        s_flush(w);
        s_end(w);
    }
}

static void on_state(void *ctx, int state)
{
    watch_hub_t *h = ctx;
    if (state == SYNC_LIVE && !h->live_once) {
        h->live_once = true;
    }
    if (state == SYNC_LIVE) {
        /* The catch-up that made us live compacted every change before this point to the latest
         * per user: the window is complete only from here on. (Changes it applied stay in the
         * window but are not offered to resumes from before this point.) */
        uint64_t through = sync_client_seq(h->sync);
        if (through > h->w_start)
            h->w_start = through;
        if (through > h->seq)
            h->seq = through;
        h->on_live(h->on_live_arg);
    }
    s_resume_check(h);
}

bool gw_watch_live(const gw_watch_hub_t *h)
{
    return !h || h->live_once;
}

/* ==== the hub in the h2o loop ================================================================ */

static void s_pump(watch_hub_t *h)
{
    sync_client_handle(h->sync);
}

static void on_zmq(h2o_socket_t *sock, const char *err)
{
    s_pump(sock->data);
}

static void on_tick(h2o_timeout_entry_t *e)
{
    watch_hub_t *h = H2O_STRUCT_FROM_MEMBER(watch_hub_t, tick, e);
    sync_client_tick(h->sync, util_mono_ms());
    /* The sync client may have sent a catch-up: drain (ZMQ_FD contract: after every send). */
    s_pump(h);
    s_resume_check(h);
    h2o_timeout_link(h->cx->h2o.loop, &h->tick_to, &h->tick);
}

int gw_watch_new(gw_ctx_t *cx, void *zctx, void (*on_live)(void *arg), void *arg, gw_watch_hub_t **out, char *err)
{
    *out = NULL;
    if (!gw_cfg.sse_max_streams)
        return 0;
    watch_hub_t *h = xcalloc(1, sizeof *h);
    h->cx = cx;
    h->on_live = on_live;
    h->on_live_arg = arg;
    gw_buf_init(&h->ev);
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
    for (int i = 0; i < 2; i++) {
        int fd;
        size_t len = sizeof fd;
        zmq_getsockopt(items[i].socket, ZMQ_FD, &fd, &len);
        h->hs[i] = h2o_evloop_socket_create(cx->h2o.loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
        h->hs[i]->data = h;
        h2o_socket_read_start(h->hs[i], on_zmq);
    }
    h2o_timeout_init(cx->h2o.loop, &h->tick_to, TICK_MS);
    h2o_timeout_init(cx->h2o.loop, &h->ping_to, gw_cfg.sse_ping_ms);
    h->tick.cb = on_tick;
    h2o_timeout_link(cx->h2o.loop, &cx->h2o.zero_timeout, &h->tick);
    *out = h;
    return 0;
}

void gw_watch_stop(gw_watch_hub_t *h)
{
    if (!h)
        return;
    for (watcher_t *w = h->watchers, *n; w; w = n) {
        n = w->next;
        s_end(w);
    }
    if (h2o_timeout_is_linked(&h->tick))
        h2o_timeout_unlink(&h->tick);
    for (int i = 0; i < 2; i++) {
        h2o_socket_read_stop(h->hs[i]);
        h2o_socket_close(h->hs[i]);
    }
    sync_client_destroy(&h->sync);
    s_window_clear(h, 0);
    /* Watchers still waiting for a proceed are freed by h2o's stop callbacks; the table entries
     * they hold are freed with them. */
}

/* ==== resuming ================================================================================ */

/* Every event after `since` is still in the window. */
static bool s_window_covers(const watch_hub_t *h, uint64_t since)
{
    return h->live_once && since >= h->w_start && since <= h->seq;
}

static void s_resume_window(watch_hub_t *h, watcher_t *w, uint64_t since)
{
    for (uint32_t i = 0; i < w->nids; i++)
        w->ver[i] = since;
    for (wchange_t *c = h->w_head; c; c = c->next) {
        if (c->seq <= since)
            continue;
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
        for (uint32_t i = 0; i < w->nids; i++) {
            if (w->idlen[i] != ul || memcmp(w->ids[i], uid, ul) != 0)
                continue;
            if (c->kind == PROTO_CH_DEL)
                s_event_del(h, uid, ul, c->seq);
            else
                s_event_set(h, &r);
            s_deliver(h, w, i, c->seq);
        }
    }
}

/* Older than what we remember (or from another database): the current state of whatever changed
 * after `since`. */
static void s_resume_current(watch_hub_t *h, watcher_t *w, uint64_t since)
{
    s_queue(w, ": resync\n\n", 10);
    if (since <= h->seq)
        for (uint32_t i = 0; i < w->nids; i++)
            w->ver[i] = since;
    s_fetch_current(w);
}

/* Resumes waiting for this thread's stream: from the window once it covers them; the current
 * state once it cannot (the window moved past) or their wait is over. */
static void s_resume_check(watch_hub_t *h)
{
    if (!h->npending)
        return;
    uint64_t now = util_mono_ms();
    for (watcher_t *w = h->watchers; w && h->npending; w = w->next) {
        uint64_t since = w->resume_since;
        if (!since)
            continue;
        bool covered = s_window_covers(h, since);
        if (!covered && !(h->live_once && since < h->w_start) && now < w->resume_by_ms)
            continue;
        w->resume_since = 0;
        h->npending--;
        LOG_RATELIMITED(LOG_INFO, 1000, "watch: resume from %llu %s (stream at %llu, window from %llu)", (unsigned long long)since,
            covered ? "from the window" : "with the current state", (unsigned long long)h->seq,
            (unsigned long long)h->w_start);
        if (covered)
            s_resume_window(h, w, since);
        else
            s_resume_current(h, w, since);
        s_flush(w);
    }
}

/* ==== a new stream =========================================================================== */

typedef struct init_op {
    watcher_t *w;
} init_op_t;

static void on_initial(gw_call_t *c, const proto_msg_t *m, int status)
{
    watcher_t *w = c->arg;
    if (!c->req || !m || m->status != PROTO_OK)
        return; /* the stream still gets live events; the client may re-read with GET */
    watch_hub_t *h = w->hub;
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
        for (uint32_t k = 0; k < w->nids; k++) {
            if (w->idlen[k] == r->uid_len && memcmp(w->ids[k], r->user_id, r->uid_len) == 0) {
                s_event_set(h, r);
                s_deliver(h, w, k, r->version);
            }
        }
    }
    free(order);
    s_flush(w);
}

/* Ask the cache tier for the current records of a stream's users. */
static void s_fetch_current(watcher_t *w)
{
    gw_ctx_t *t = w->hub->cx;
    proto_str_t *keys = xmalloc(w->nids * sizeof *keys);
    for (uint32_t i = 0; i < w->nids; i++) {
        keys[i].p = w->ids[i];
        keys[i].len = w->idlen[i];
    }
    /* Group by owner node, like a multi-get. */
    for (int node = 0; node < gw_cfg.nnodes; node++) {
        uint32_t g = 0;
        proto_str_t *grp = xmalloc(w->nids * sizeof *grp);
        for (uint32_t i = 0; i < w->nids; i++) {
            int owner = gw_upstream_route(t->up, keys[i].p, keys[i].len);
            if (owner == node || (owner < 0 && node == 0))
                grp[g++] = keys[i];
        }
        if (g) {
            uint64_t rid = gw_upstream_rid(t->up);
            proto_buf_reset(&t->pb);
            proto_enc_keys(&t->pb, rid, grp, g);
            gw_upstream_send(t->up, w->req, node, rid, PROTO_MGET, &t->pb, on_initial, w);
        }
        free(grp);
    }
    free(keys);
}

void gw_watch_handle(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n, uint64_t since)
{
    gw_ctx_t *t = rc->t;
    watch_hub_t *h = t->watch;
    if (!h) {
        gw_reply_error(req, rc, 404, "not found");
        return;
    }
    if (n > gw_cfg.sse_max_ids) {
        char msg[80];
        snprintf(msg, sizeof msg, "too many user ids (at most %llu per stream)", (unsigned long long)gw_cfg.sse_max_ids);
        gw_reply_error(req, rc, 400, msg);
        return;
    }
    if (atomic_fetch_add(&s_streams, 1) >= (int_fast64_t)gw_cfg.sse_max_streams) {
        atomic_fetch_sub(&s_streams, 1);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        gw_reply_error(req, rc, 503, "too many watch streams");
        return;
    }
    atomic_fetch_add(&gw_metrics.sse_clients, 1);
    watcher_t *w = xcalloc(1, sizeof *w);
    w->hub = h;
    w->req = req;
    w->rc = rc;
    w->nids = n;
    w->ids = xmalloc(n * sizeof *w->ids);
    w->idlen = xmalloc(n);
    w->ver = xcalloc(n, sizeof *w->ver);
    gw_buf_init(&w->pending);
    gw_buf_init(&w->inflight);
    w->gen.proceed = on_proceed;
    w->gen.stop = on_stop;
    w->ping.cb = on_ping;
    w->last_write_ms = util_mono_ms();
    for (uint32_t i = 0; i < n; i++) {
        memcpy(w->ids[i], ids[i].p, ids[i].len);
        w->ids[i][ids[i].len] = '\0';
        w->idlen[i] = (uint8_t)ids[i].len;
        s_table_add(h, w, i);
    }
    w->next = h->watchers;
    if (h->watchers)
        h->watchers->prev = w;
    h->watchers = w;

    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    gw_reply_cors(req, rc);
    gw_reply_count(rc, 200);
    h2o_start_response(req, &w->gen);
    /* A first comment opens the stream at once (clients and proxies see the headers now). */
    s_queue(w, ": watching\nretry: 2000\n\n", 24);

    if (since) {
        if (s_window_covers(h, since)) {
            s_resume_window(h, w, since);
        } else if (!h->live_once || since > h->seq) {
            /* This thread's stream is not there yet (just started, catching up, or a change the
             * client saw through another thread has not reached it): wait for it, a request
             * timeout at most, rather than fall back to the current state at once. */
            w->resume_since = since;
            w->resume_by_ms = util_mono_ms() + gw_cfg.request_timeout_ms;
            h->npending++;
            LOG_RATELIMITED(LOG_INFO, 1000, "watch: resume from %llu waits for this thread's stream (at %llu, live=%d)",
                (unsigned long long)since, (unsigned long long)h->seq, h->live_once);
        } else {
            s_resume_current(h, w, since);
        }
    } else {
        s_fetch_current(w);
    }
    s_flush(w);
    h2o_timeout_link(t->h2o.loop, &h->ping_to, &w->ping);
}

/* ==== the endpoint ============================================================================= */

/* GET /api/v2/presence/watch?users=a,b: the guard parsed users=; a resume point comes as
 * Last-Event-ID or ?since= (a decimal version). */
void gw_watch_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    uint64_t since = 0;
    const char *v;
    size_t vl;
    ssize_t hi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
    bool have = hi >= 0;
    if (have) {
        v = req->headers.entries[hi].value.base;
        vl = req->headers.entries[hi].value.len;
    } else {
        have = gw_query_param(rc->query, rc->qlen, "since", &v, &vl);
    }
    if (have) {
        char tmp[24] = "";
        char *end = tmp;
        if (vl > 0 && vl < sizeof tmp) {
            memcpy(tmp, v, vl);
            tmp[vl] = '\0';
            errno = 0;
            since = strtoull(tmp, &end, 10);
        }
        if (vl == 0 || vl >= sizeof tmp || *end || tmp[0] < '0' || tmp[0] > '9' || errno == ERANGE) {
            gw_reply_error(req, rc, 400, "invalid Last-Event-ID: must be a version (a decimal integer)");
            return;
        }
    }
    gw_watch_handle(req, rc, rc->ids, rc->nids, since);
}
