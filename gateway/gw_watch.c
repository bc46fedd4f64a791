/* gw_watch.c -- Server-Sent Events: GET /api/v2/presence/watch?users=a,b (API.md).
 *
 * A stream is a subscriber of its thread's watch hub (gw_watch_hub.h), which gives it every change
 * of its users newer than what it has had. Events: `event: presence`, `id:` the record's version
 * (the store's global sequence), `data:` the record JSON; a delete is
 * {"user_id":...,"deleted":true,"version":N}. A new stream without Last-Event-ID first gets the
 * current record of each watched user, then live events; a resume (Last-Event-ID or ?since=) gets
 * what it missed from the hub's window, or -- older than the window -- a `: resync` comment and
 * the current records. `: ping` comments keep proxies from closing idle streams (SSE_PING_MS).
 *
 * Hostile and slow clients (every bound is per stream, per client or per process):
 *   - behind: while a write is in flight, events queue; a newer event of a user replaces the one
 *     queued for it (the client gets the latest record per user), so the queue never holds more
 *     than one record per watched user. A client that has let more than SSE_QUEUE_MAX bytes of
 *     events go by since it last took something -- a burst within one loop turn excepted -- or
 *     has not taken a write for two ping intervals, is dropped;
 *   - gone: an HTTP/1 client that closes, resets or vanishes is noticed at once (gw_conns.h
 *     watches the socket while h2o does not), HTTP/2 ones by h2o itself;
 *   - dropped or gone, a stream gives back at once everything it holds (its hub slots, its queue,
 *     its counts); only a small shell waits for h2o to finish a write in flight;
 *   - limits: SSE_MAX_PER_IP streams per client address and SSE_MAX_PER_SUBJECT per token subject
 *     (429), SSE_MAX_STREAMS per process (503), SSE_MAX_IDS ids per stream (400);
 *   - idle streams keep no buffers, and after many streams close, free memory goes back to the
 *     system (malloc_trim, at most every 5 s).
 *
 * A stream lives on its request's thread; the counts are shared (atomics, gw_climit.h).
 */
#include "gw_climit.h"
#include "gw_config.h"
#include "gw_endpoints.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_watch_hub.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_SLOT UINT32_MAX
#define KEEP_BUF 4096     /* an idle stream keeps buffers up to this */
#define TRIM_AFTER 256    /* streams closed since the last malloc_trim ... */
#define TRIM_EVERY_MS 5000 /* ... and at most this often */

/* One queued piece of output: an event of one user (slot), or a comment (NO_SLOT). len 0: replaced
 * by a newer event of the same user. */
typedef struct qent {
    uint32_t off, len, slot;
} qent_t;

typedef struct stream {
    gw_watch_sub_t sub;  /* the hub's view of this stream */
    h2o_generator_t gen; /* h2o hands it back to proceed/stop */
    h2o_req_t *req;
    gw_rctx_t *rc;
    gw_ctx_t *t;
    gw_buf_t pending, inflight; /* queued output; what h2o is sending */
    qent_t *q;
    uint32_t nq, qcap;
    uint32_t *byslot; /* while a write is in flight: slot -> its queued event (index + 1) */
    size_t live;      /* bytes of pending still to send */
    size_t behind;    /* bytes queued since the client last took a write */
    uint64_t send_turn; /* the loop time the write in flight started */
    bool sending, closing, released, aborting;
    h2o_timeout_entry_t timer; /* the ping clock; the deferred drop */
    uint64_t last_write_ms;
    uint64_t watch_id; /* gw_conns_watch_peer */
    gw_climit_slot_t *ip_slot, *sub_slot;
} stream_t;

static atomic_int_fast64_t s_streams;
static __thread h2o_timeout_t s_ping_to; /* this thread's SSE_PING_MS clock (made on first use) */
static __thread bool s_ping_ready;
static __thread h2o_timeout_t s_trim_to;
static __thread h2o_timeout_entry_t s_trim_timer;
static pthread_once_t s_limits_once = PTHREAD_ONCE_INIT;
static gw_climit_t *s_per_ip, *s_per_sub;
static atomic_uint_fast64_t s_closed_since_trim, s_last_trim_ms;

static void s_drop(stream_t *w, const char *why);

static void s_limits_init(void)
{
    s_per_ip = gw_climit_new();
    s_per_sub = gw_climit_new();
}

/* ==== output ==================================================================================== */

static bool s_behind(const stream_t *w)
{
    return w->sending;
}

/* Queue n bytes of output for user `slot` (NO_SLOT: a comment). While a write is in flight, an
 * event replaces the one queued for the same user. */
static void s_queue(stream_t *w, uint32_t slot, const char *const *parts, const size_t *lens, int nparts)
{
    if (w->released || w->closing || w->aborting)
        return;
    size_t n = 0;
    for (int i = 0; i < nparts; i++)
        n += lens[i];
    if (slot != NO_SLOT && s_behind(w)) {
        if (!w->byslot)
            w->byslot = xcalloc(w->sub.nids ? w->sub.nids : 1, sizeof *w->byslot);
        uint32_t qi = w->byslot[slot];
        if (qi && w->q[qi - 1].len) {
            w->live -= w->q[qi - 1].len;
            w->q[qi - 1].len = 0;
            atomic_fetch_add_explicit(&gw_metrics.sse_coalesced, 1, memory_order_relaxed);
        }
    }
    if (w->nq == w->qcap) {
        w->qcap = w->qcap ? w->qcap * 2 : 8;
        w->q = xrealloc(w->q, w->qcap * sizeof *w->q);
    }
    w->q[w->nq++] = (qent_t){.off = (uint32_t)w->pending.len, .len = (uint32_t)n, .slot = slot};
    if (slot != NO_SLOT && w->byslot)
        w->byslot[slot] = w->nq;
    for (int i = 0; i < nparts; i++)
        gw_buf_add(&w->pending, parts[i], lens[i]);
    w->live += n;
    w->behind += n;
    /* Not taking what it is sent: a burst in one loop turn (a big batch touching many watched
     * users) is not held against it -- the queue is at most one record per user -- but a client
     * still behind by more than SSE_QUEUE_MAX on a later turn is. */
    if (s_behind(w) && w->behind > gw_cfg.sse_queue_max && w->send_turn != h2o_now(w->t->h2o.loop))
        s_drop(w, "more than SSE_QUEUE_MAX bytes of events unread");
}

static void s_queue_text(stream_t *w, const char *p, size_t n)
{
    s_queue(w, NO_SLOT, &p, &n, 1);
}

/* Give the queue to h2o (one write), the replaced events left out. */
static void s_flush(stream_t *w)
{
    if (w->sending || w->closing || w->released || w->aborting || !w->nq)
        return;
    if (w->live == w->pending.len) {
        gw_buf_t tmp = w->inflight;
        w->inflight = w->pending;
        w->pending = tmp;
    } else {
        gw_buf_reset(&w->inflight);
        for (uint32_t i = 0; i < w->nq; i++)
            if (w->q[i].len)
                gw_buf_add(&w->inflight, w->pending.p + w->q[i].off, w->q[i].len);
    }
    gw_buf_reset(&w->pending);
    w->nq = 0;
    w->live = 0;
    free(w->byslot);
    w->byslot = NULL;
    h2o_iovec_t buf = h2o_iovec_init(w->inflight.p, w->inflight.len);
    w->sending = true;
    w->send_turn = h2o_now(w->t->h2o.loop);
    w->last_write_ms = util_mono_ms();
    h2o_send(w->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* An idle stream keeps no buffers worth speaking of. */
static void s_shrink(stream_t *w)
{
    if (w->inflight.cap > KEEP_BUF)
        gw_buf_free(&w->inflight);
    if (w->pending.cap > KEEP_BUF && !w->pending.len)
        gw_buf_free(&w->pending);
    if (w->qcap > 64 && !w->nq) {
        free(w->q);
        w->q = NULL;
        w->qcap = 0;
    }
}

/* ==== the stream's life ========================================================================= */

/* Hand free memory back to the system if TRIM_AFTER streams closed since the last time, at most
 * every TRIM_EVERY_MS (any thread; one at a time). */
static bool s_trim_now(void)
{
    if (atomic_load(&s_closed_since_trim) < TRIM_AFTER)
        return true; /* nothing to do */
    uint64_t now = util_mono_ms(), last = atomic_load(&s_last_trim_ms);
    if (now - last < TRIM_EVERY_MS)
        return false; /* later */
    if (atomic_compare_exchange_strong(&s_last_trim_ms, &last, now)) {
        atomic_store(&s_closed_since_trim, 0);
        malloc_trim(0);
    }
    return true;
}

static void on_trim_timer(h2o_timeout_entry_t *e)
{
    s_trim_now();
}

/* After many streams closed, hand free memory back to the system (glibc keeps it otherwise: the
 * RSS of a gateway that once held 10,000 streams stayed at that peak). A burst of closes is
 * trimmed once it is over: a trim that is due but too soon is retried TRIM_EVERY_MS later. */
static void s_maybe_trim(gw_ctx_t *t)
{
    atomic_fetch_add(&s_closed_since_trim, 1);
    if (s_trim_now() || h2o_timeout_is_linked(&s_trim_timer))
        return;
    if (!s_trim_timer.cb) {
        h2o_timeout_init(t->h2o.loop, &s_trim_to, TRIM_EVERY_MS);
        s_trim_timer.cb = on_trim_timer;
    }
    h2o_timeout_link(t->h2o.loop, &s_trim_to, &s_trim_timer);
}

/* Give back everything but the shell: hub slots, queue, counts, timers, the peer watch. Once. */
static void s_release(stream_t *w)
{
    if (w->released)
        return;
    w->released = true;
    gw_watch_hub_unsubscribe(&w->sub);
    if (h2o_timeout_is_linked(&w->timer))
        h2o_timeout_unlink(&w->timer);
    gw_conns_unwatch_peer(w->t->conns, w->watch_id);
    w->watch_id = 0;
    atomic_fetch_sub(&s_streams, 1);
    atomic_fetch_sub(&gw_metrics.sse_clients, 1);
    gw_climit_give(s_per_ip, w->ip_slot);
    gw_climit_give(s_per_sub, w->sub_slot);
    w->ip_slot = w->sub_slot = NULL;
    gw_buf_free(&w->pending);
    free(w->q);
    free(w->byslot);
    w->q = NULL;
    w->byslot = NULL;
    w->nq = w->qcap = 0;
    s_maybe_trim(w->t);
}

static void s_free(stream_t *w)
{
    s_release(w);
    gw_buf_free(&w->inflight);
    free(w);
}

/* End the response with an error now (h2o may free the request inside this call) and free. Only
 * when no write is in flight. */
static void s_end_error(stream_t *w)
{
    h2o_req_t *req = w->req;
    s_release(w);
    s_free(w);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
}

/* Drop or departure: release at once; cut an HTTP/1 connection so the client sees the end; the
 * shell waits only for a write in flight. Never from inside a hub callback (gw_watch_hub.h). */
static void s_abort(stream_t *w)
{
    s_release(w);
    gw_conns_cut(w->t->conns, w->req);
    if (!w->sending)
        s_end_error(w);
}

static void on_abort_timer(h2o_timeout_entry_t *e)
{
    s_abort(H2O_STRUCT_FROM_MEMBER(stream_t, timer, e));
}

/* The client is not reading: stop queueing now, let go of everything on this loop turn (not
 * inside the hub's delivery, which holds references to this stream). */
static void s_drop(stream_t *w, const char *why)
{
    if (w->aborting || w->released)
        return;
    w->aborting = true;
    gw_buf_reset(&w->pending);
    w->nq = 0;
    w->live = 0;
    atomic_fetch_add(&gw_metrics.sse_dropped, 1);
    LOG_RATELIMITED(LOG_NOTICE, 1000, "SSE client dropped: %s", why);
    if (h2o_timeout_is_linked(&w->timer))
        h2o_timeout_unlink(&w->timer);
    w->timer.cb = on_abort_timer;
    h2o_timeout_link(w->t->h2o.loop, &w->t->h2o.zero_timeout, &w->timer);
}

/* gw_conns: the HTTP/1 client closed, reset or vanished. */
static void on_gone(void *arg)
{
    stream_t *w = arg;
    w->watch_id = 0;
    if (w->released)
        return;
    atomic_fetch_add(&gw_metrics.sse_gone, 1);
    s_abort(w);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, gen, gen);
    w->sending = false;
    w->behind = 0;
    if (w->released) { /* dropped or gone while this write was out */
        s_end_error(w);
        return;
    }
    if (w->closing) {
        s_release(w);
        s_free(w);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    s_flush(w);
    if (!w->sending)
        s_shrink(w);
}

/* h2o aborted the response (client gone, connection shut down). */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, gen, gen);
    if (!w->released && !w->aborting)
        atomic_fetch_add(&gw_metrics.sse_gone, 1);
    s_free(w);
}

static void on_ping(h2o_timeout_entry_t *e)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, timer, e);
    uint64_t now = util_mono_ms();
    if (w->sending && now - w->last_write_ms >= 2 * gw_cfg.sse_ping_ms) {
        s_drop(w, "no write taken for two ping intervals");
        return;
    }
    if (!w->sending && !w->nq && now - w->last_write_ms >= gw_cfg.sse_ping_ms / 2)
        s_queue_text(w, ": ping\n\n", 8);
    s_flush(w);
    if (!w->aborting && !w->released)
        h2o_timeout_link(w->t->h2o.loop, &s_ping_to, &w->timer);
}

/* ==== the hub's sink ============================================================================ */

static void on_event(gw_watch_sub_t *s, const gw_watch_event_t *ev)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    char head[48];
    int n = snprintf(head, sizeof head, "event: presence\nid: %llu\ndata: ", (unsigned long long)ev->version);
    const char *parts[3] = {head, ev->json, "\n\n"};
    size_t lens[3] = {(size_t)n, ev->json_len, 2};
    s_queue(w, ev->slot < s->nids && !ev->replay ? ev->slot : NO_SLOT, parts, lens, 3);
    atomic_fetch_add(&gw_metrics.sse_events, 1);
}

static void on_notice(gw_watch_sub_t *s, const char *what)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    char line[32];
    int n = snprintf(line, sizeof line, ": %s\n\n", what);
    s_queue_text(w, line, (size_t)n);
}

static void on_flush(gw_watch_sub_t *s)
{
    s_flush(H2O_STRUCT_FROM_MEMBER(stream_t, sub, s));
}

/* End a stream from our side (a reset, a stop): FINAL once no send is pending. */
static void on_end(gw_watch_sub_t *s)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    if (w->closing || w->released)
        return;
    w->closing = true;
    if (!w->sending) {
        h2o_req_t *req = w->req;
        s_free(w);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
}

static const gw_watch_sink_t s_sink = {.event = on_event, .notice = on_notice, .flush = on_flush, .end = on_end};

/* ==== the endpoint ============================================================================== */

/* Take a stream slot for this client: per address, per subject, per process. 0, or -1 after
 * answering 429/503. */
static int s_admit(h2o_req_t *req, gw_rctx_t *rc, gw_climit_slot_t **ip, gw_climit_slot_t **sub)
{
    char msg[GW_ERR_LEN];
    char addr[GW_CLIENTADDR_LEN];
    size_t al = gw_guard_client_addr(req, addr);
    *ip = *sub = NULL;
    if (!(*ip = gw_climit_take(s_per_ip, addr, al, gw_cfg.sse_max_per_ip))) {
        snprintf(msg, sizeof msg, GW_ERR_SSE_PER_IP, (unsigned long long)gw_cfg.sse_max_per_ip);
        LOG_RATELIMITED(LOG_NOTICE, 1000, "watch refused: %s (client %s)", msg, addr);
        goto too_many;
    }
    if (rc->authed && !(*sub = gw_climit_take(s_per_sub, rc->claims.sub, rc->claims.sub_len, gw_cfg.sse_max_per_subject))) {
        snprintf(msg, sizeof msg, GW_ERR_SSE_PER_SUBJECT, (unsigned long long)gw_cfg.sse_max_per_subject);
        LOG_RATELIMITED(LOG_NOTICE, 1000, "watch refused: %s (client %s)", msg, addr);
        goto too_many;
    }
    if (atomic_fetch_add(&s_streams, 1) >= (int_fast64_t)gw_cfg.sse_max_streams) {
        atomic_fetch_sub(&s_streams, 1);
        gw_climit_give(s_per_ip, *ip);
        gw_climit_give(s_per_sub, *sub);
        snprintf(msg, sizeof msg, GW_ERR_SSE_MAX, (unsigned long long)gw_cfg.sse_max_streams);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        gw_reply_error(req, rc, 503, msg);
        return -1;
    }
    return 0;
too_many:
    gw_climit_give(s_per_ip, *ip);
    atomic_fetch_add(&gw_metrics.sse_limited, 1);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
    gw_reply_error(req, rc, 429, msg);
    return -1;
}

/* Start a stream of ids[0..n), resuming after since when non-zero. */
static void s_start(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n, uint64_t since)
{
    gw_ctx_t *t = rc->t;
    if (!t->watch) {
        gw_reply_error(req, rc, 404, "not found");
        return;
    }
    if (n > gw_cfg.sse_max_ids) {
        char msg[80];
        snprintf(msg, sizeof msg, "too many user ids (at most %llu per stream)", (unsigned long long)gw_cfg.sse_max_ids);
        gw_reply_error(req, rc, 400, msg);
        return;
    }
    pthread_once(&s_limits_once, s_limits_init);
    gw_climit_slot_t *ip, *sub;
    if (s_admit(req, rc, &ip, &sub) < 0)
        return;
    atomic_fetch_add(&gw_metrics.sse_clients, 1);
    if (!s_ping_ready) {
        h2o_timeout_init(t->h2o.loop, &s_ping_to, gw_cfg.sse_ping_ms);
        s_ping_ready = true;
    }
    stream_t *w = xcalloc(1, sizeof *w);
    w->sub.sink = &s_sink;
    w->sub.req = req;
    w->sub.viewer = gw_rctx_viewer(rc); /* rc (and its claims) live in the request's pool, as long as the stream */
    w->req = req;
    w->rc = rc;
    w->t = t;
    w->ip_slot = ip;
    w->sub_slot = sub;
    gw_buf_init(&w->pending);
    gw_buf_init(&w->inflight);
    w->gen.proceed = on_proceed;
    w->gen.stop = on_stop;
    w->timer.cb = on_ping;
    w->last_write_ms = util_mono_ms();

    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    gw_reply_cors(req, rc);
    gw_reply_count(rc, 200);
    h2o_start_response(req, &w->gen);
    w->watch_id = gw_conns_watch_peer(t->conns, t->h2o.loop, req, 2 * gw_cfg.sse_ping_ms, on_gone, w);
    /* A first comment opens the stream at once (clients and proxies see the headers now). */
    s_queue_text(w, ": watching\nretry: 2000\n\n", 24);
    gw_watch_hub_subscribe(t->watch, &w->sub, ids, n, since);
    s_flush(w);
    h2o_timeout_link(t->h2o.loop, &s_ping_to, &w->timer);
}

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
    s_start(req, rc, rc->ids, rc->nids, since);
}
