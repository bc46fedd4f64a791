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
 * Backpressure: events queue per stream while h2o has not asked for more (generator proceed);
 * beyond SSE_QUEUE_MAX bytes the client is not reading: it is dropped (its connection is cut:
 * gw_conns.h; HTTP/2 streams stop receiving and are closed by h2o) -- memory never grows without
 * bound. Limits: SSE_MAX_STREAMS per gateway process (an atomic count shared by the threads),
 * SSE_MAX_IDS ids per stream.
 *
 * A stream lives on its request's thread.
 */
#include "gw_endpoints.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_watch_hub.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stream {
    gw_watch_sub_t sub;  /* the hub's view of this stream */
    h2o_generator_t gen; /* h2o hands it back to proceed/stop */
    h2o_req_t *req;
    gw_rctx_t *rc;
    gw_buf_t pending, inflight;
    bool sending, dropped, closing;
    h2o_timeout_entry_t ping;
    uint64_t last_write_ms;
} stream_t;

static atomic_int_fast64_t s_streams;
static __thread h2o_timeout_t s_ping_to; /* this thread's SSE_PING_MS clock (made on first use) */
static __thread bool s_ping_ready;

/* ==== output =================================================================================== */

static void s_flush(stream_t *w)
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
static void s_drop(stream_t *w)
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
    gw_conns_cut(w->rc->t->conns, w->req);
}

static void s_queue(stream_t *w, const char *p, size_t n)
{
    if (w->dropped || w->closing)
        return;
    if (w->pending.len + n > gw_cfg.sse_queue_max) {
        s_drop(w);
        return;
    }
    gw_buf_add(&w->pending, p, n);
}

/* ==== the stream's life ======================================================================== */

static void s_close(stream_t *w)
{
    gw_watch_hub_unsubscribe(&w->sub);
    if (h2o_timeout_is_linked(&w->ping))
        h2o_timeout_unlink(&w->ping);
    atomic_fetch_sub(&s_streams, 1);
    atomic_fetch_sub(&gw_metrics.sse_clients, 1);
    gw_buf_free(&w->pending);
    gw_buf_free(&w->inflight);
    free(w);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, gen, gen);
    w->sending = false;
    if (w->closing) {
        h2o_send(w->req, NULL, 0, H2O_SEND_STATE_FINAL);
        s_close(w);
        return;
    }
    s_flush(w);
}

/* h2o aborted the response (client gone, connection shut down). */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    s_close(H2O_STRUCT_FROM_MEMBER(stream_t, gen, gen));
}

static void on_ping(h2o_timeout_entry_t *e)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, ping, e);
    if (util_mono_ms() - w->last_write_ms >= gw_cfg.sse_ping_ms / 2 && !w->pending.len)
        s_queue(w, ": ping\n\n", 8);
    s_flush(w);
    h2o_timeout_link(w->rc->t->h2o.loop, &s_ping_to, &w->ping);
}

/* ==== the hub's sink =========================================================================== */

static void on_event(gw_watch_sub_t *s, const gw_watch_event_t *ev)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    char head[48];
    int n = snprintf(head, sizeof head, "event: presence\nid: %llu\ndata: ", (unsigned long long)ev->version);
    s_queue(w, head, (size_t)n);
    s_queue(w, ev->json, ev->json_len);
    s_queue(w, "\n\n", 2);
    atomic_fetch_add(&gw_metrics.sse_events, 1);
}

static void on_notice(gw_watch_sub_t *s, const char *what)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    char line[32];
    int n = snprintf(line, sizeof line, ": %s\n\n", what);
    s_queue(w, line, (size_t)n);
}

static void on_flush(gw_watch_sub_t *s)
{
    s_flush(H2O_STRUCT_FROM_MEMBER(stream_t, sub, s));
}

/* End a stream from our side (a reset, a stop): FINAL once no send is pending. */
static void on_end(gw_watch_sub_t *s)
{
    stream_t *w = H2O_STRUCT_FROM_MEMBER(stream_t, sub, s);
    if (w->closing)
        return;
    w->closing = true;
    if (!w->sending) {
        h2o_send(w->req, NULL, 0, H2O_SEND_STATE_FINAL);
        s_close(w);
    }
}

static const gw_watch_sink_t s_sink = {.event = on_event, .notice = on_notice, .flush = on_flush, .end = on_end};

/* ==== the endpoint ============================================================================= */

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
    if (atomic_fetch_add(&s_streams, 1) >= (int_fast64_t)gw_cfg.sse_max_streams) {
        atomic_fetch_sub(&s_streams, 1);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        gw_reply_error(req, rc, 503, "too many watch streams");
        return;
    }
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
    gw_buf_init(&w->pending);
    gw_buf_init(&w->inflight);
    w->gen.proceed = on_proceed;
    w->gen.stop = on_stop;
    w->ping.cb = on_ping;
    w->last_write_ms = util_mono_ms();

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
    gw_watch_hub_subscribe(t->watch, &w->sub, ids, n, since);
    s_flush(w);
    h2o_timeout_link(t->h2o.loop, &s_ping_to, &w->ping);
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
