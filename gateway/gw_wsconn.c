/* gw_wsconn.c -- one WebSocket connection (see gw_wsconn.h for its states).
 *
 * After h2o_http1_upgrade the socket is ours (no wslay: its two fixed 4 KiB buffers per connection
 * would be most of the memory budget, BENCHMARKS.md). Frames are decoded by gw_wsframe.c straight
 * out of sock->input, in place; a frame cut by a read is copied into the decoder, so the input is
 * always consumed whole and h2o hands its 8 KiB read buffer back to the thread's pool -- an idle
 * connection holds no read buffer. Output: frames are appended to `out`; one write is in flight at a
 * time (`wbuf`, h2o's rule), the next takes everything queued meanwhile; both are freed once
 * written, so an idle connection holds no write buffer either.
 *
 * Limits, each closing with the code REALTIME.md names: a message over WS_MAX_FRAME (1009, decided
 * from the frame header before any payload is buffered), a protocol violation (1002), bad UTF-8
 * (1007), more messages than WS_MSG_RATE/WS_MSG_BURST allow or ten `error` answers in a row (1008),
 * more than WS_QUEUE_MAX bytes waiting for a client that does not read (1008: what waits is freed
 * at once). A peer silent (no frame, no pong) for two WS_PING_INTERVAL_MS is dead: dropped without
 * a close frame, at last_rx + 2 intervals to the millisecond (the loop's clock), not at a later tick.
 *
 * The tick: one timer per open connection, which a received frame never touches (it only stamps
 * last_rx_ms). When it runs it pings if a ping is due and arms itself for the sooner of the next
 * ping and the dead-peer deadline. For a peer that answered the last ping that is always the next
 * ping, a whole interval on (ping_to); a deadline sooner than that -- a peer silent since before
 * the last ping -- is reached through power-of-two hop lists (ws->hop_to): at most one hop per bit
 * of the time left (15 for the default 25 s), each an O(1) link with no allocation.
 *
 * Closing: our close frame, then shutdown(SHUT_WR) once it is written (closing with unread input
 * would send an RST that can destroy the frame), then the peer's FIN -- GW_WS_LINGER_MS at most from
 * the close. When the socket is gone the session's grace starts (gw_wsconn_grace), whatever the
 * close code: client libraries close with 1000 before they reconnect, and that must not flash the
 * user offline. A deliberate sign-out is the `bye` message: we close with 1000 and the session
 * ends as soon as the socket is gone, without the grace.
 *
 * Nothing here frees a connection from inside a socket or hub callback path that could still touch
 * it: a close only changes the state; the socket is closed from the read/write callbacks or a
 * timer, watches are dropped on the next loop turn (gw_ws_reap_later), and the struct is freed by
 * gw_wsconn_release once DONE with no call out.
 *
 * Threading: the connection's loop thread.
 */
#include "gw_wsconn.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_wsmsg.h"
#include "gw_wssess.h"
#include "gw_wswatch.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define WS_ERRORS_MAX 10

static void on_read(h2o_socket_t *sock, const char *err);
static void on_written(h2o_socket_t *sock, const char *err);
static void on_ping_tick(h2o_timeout_entry_t *e);
static void on_idle(h2o_timeout_entry_t *e);
static void on_linger(h2o_timeout_entry_t *e);
static void on_grace(h2o_timeout_entry_t *e);

static void s_timer_stop(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e))
        h2o_timeout_unlink(e);
}

static h2o_loop_t *s_loop(const gw_wsconn_t *c)
{
    return c->ws->cx->h2o.loop;
}

static void s_unindex(gw_wsconn_t *c)
{
    if (c->indexed) {
        idtab_remove(&c->ws->sessions, &c->by_session);
        c->indexed = false;
    }
}

/* ==== life ===================================================================================== */

gw_wsconn_t *gw_wsconn_new(gw_ws_t *ws, const char *uid, size_t ulen, const char *sid, size_t slen, const char *dev,
                           size_t dlen, int status, bool admin)
{
    gw_wsconn_t *c = xcalloc(1, sizeof *c);
    c->ws = ws;
    c->conn_id = gw_ws_conn_id(ws);
    memcpy(c->uid, uid, ulen);
    c->uid_len = (uint8_t)ulen;
    memcpy(c->sid, sid, slen);
    c->sid_len = (uint8_t)slen;
    memcpy(c->device, dev, dlen);
    c->dev_len = (uint8_t)dlen;
    c->status = c->chosen = (uint8_t)status;
    c->admin = admin;
    c->state = GW_WSCONN_OPENING;
    c->opened_us = util_now_us();
    c->idle_timer.cb = on_idle;
    gw_wsframe_dec_init(&c->dec, (uint32_t)gw_cfg.ws_max_frame);
    gw_wsrate_init(&c->rate);
    h2o_linklist_insert(&ws->conns, &c->link);
    return c;
}

void gw_wsconn_holds(gw_wsconn_t *c, uint64_t lease_id)
{
    c->holds = true;
    c->lease_id = lease_id;
    if (!c->indexed) {
        c->by_session.id = gw_ws_session_key(c->uid, c->uid_len, c->sid, c->sid_len);
        idtab_add(&c->ws->sessions, &c->by_session);
        c->indexed = true;
    }
}

void gw_wsconn_release(gw_wsconn_t *c)
{
    if (c->state != GW_WSCONN_DONE || c->calls || c->reaping || c->sock)
        return;
    s_unindex(c);
    s_timer_stop(&c->timer);
    s_timer_stop(&c->idle_timer);
    h2o_linklist_unlink(&c->link);
    gw_wsframe_dec_fini(&c->dec);
    free(c->out);
    free(c->wbuf);
    free(c);
}

static void on_grace(h2o_timeout_entry_t *e)
{
    gw_wssess_end(H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, timer, e));
}

void gw_wsconn_grace(gw_wsconn_t *c)
{
    s_timer_stop(&c->timer);
    s_timer_stop(&c->idle_timer);
    if (c->slot) {
        c->slot = false;
        gw_ws_slot_put();
    }
    if (!c->holds) {
        c->state = GW_WSCONN_DONE;
        gw_wsconn_release(c);
        return;
    }
    c->state = GW_WSCONN_GRACE;
    if (gw_cfg.ws_grace_ms == 0 || c->bye) {
        gw_wssess_end(c);
        return;
    }
    c->timer.cb = on_grace;
    h2o_timeout_link(s_loop(c), &c->ws->grace_to, &c->timer);
}

/* The socket is gone (closed by the peer, failed, dead, or done closing): free what only an open
 * connection needs, then the grace. */
static void s_socket_gone(gw_wsconn_t *c)
{
    if (c->sock) {
        h2o_socket_close(c->sock);
        c->sock = NULL;
        atomic_fetch_sub(&gw_metrics.ws_connections, 1);
    }
    free(c->out);
    free(c->wbuf);
    c->out = c->wbuf = NULL;
    c->out_len = c->out_cap = c->wlen = 0;
    gw_wsframe_dec_fini(&c->dec);
    if (c->watches)
        gw_ws_reap_later(c->ws, c);
    gw_wsconn_grace(c);
}

void gw_wsconn_session_lost(gw_wsconn_t *c, unsigned code)
{
    if (!c->holds)
        return;
    c->holds = false;
    s_unindex(c);
    switch (c->state) {
    case GW_WSCONN_OPENING:
        c->lost_code = (uint16_t)code; /* told once the upgrade is done */
        break;
    case GW_WSCONN_OPEN:
        gw_wsconn_close(c, code, code == GW_WSCONN_CLOSE_RESUMED ? "session resumed elsewhere" : "session ended");
        gw_wsconn_flush(c);
        break;
    case GW_WSCONN_GRACE:
        s_timer_stop(&c->timer);
        c->state = GW_WSCONN_DONE;
        gw_wsconn_release(c);
        break;
    default: /* CLOSING: no grace will follow; DONE: nothing */
        break;
    }
}

/* ==== output =================================================================================== */

static void s_append(gw_wsconn_t *c, const void *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + n)
            cap *= 2;
        c->out = xrealloc(c->out, cap);
        c->out_cap = (uint32_t)cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
}

/* The client does not read: what waits for it is freed now, and it is closed (1008). */
static void s_drop_slow(gw_wsconn_t *c)
{
    atomic_fetch_add(&gw_metrics.ws_dropped, 1);
    LOG_RATELIMITED(LOG_NOTICE, 1000, "WebSocket client of %.*s dropped: more than %llu bytes waiting (WS_QUEUE_MAX)",
                    (int)c->uid_len, c->uid, (unsigned long long)gw_cfg.ws_queue_max);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    gw_wsconn_close(c, GW_WSFRAME_CLOSE_POLICY, "not reading: more than WS_QUEUE_MAX bytes waiting");
}

/* One frame, within the output bound. */
static void s_frame(gw_wsconn_t *c, unsigned opcode, const void *p, size_t n)
{
    if (c->state != GW_WSCONN_OPEN || c->close_queued)
        return;
    size_t need = gw_wsframe_size(n);
    if ((uint64_t)c->out_len + c->wlen + need > gw_cfg.ws_queue_max) {
        s_drop_slow(c);
        return;
    }
    uint8_t hdr[GW_WSFRAME_HDR_MAX];
    s_append(c, hdr, gw_wsframe_header(hdr, opcode, n));
    if (n)
        s_append(c, p, n);
}

void gw_wsconn_send(gw_wsconn_t *c, const char *json, size_t len)
{
    s_frame(c, GW_WSFRAME_OP_TEXT, json, len);
}

void gw_wsconn_error(gw_wsconn_t *c, const char *msg, bool counted)
{
    gw_buf_t *b = &c->ws->scratch;
    gw_buf_reset(b);
    gw_wsmsg_error(b, msg);
    gw_wsconn_send(c, b->p, b->len);
    if (counted && ++c->errors >= WS_ERRORS_MAX) {
        atomic_fetch_add(&gw_metrics.ws_closed_policy, 1);
        gw_wsconn_close(c, GW_WSFRAME_CLOSE_POLICY, "ten errors in a row");
    }
}

void gw_wsconn_flush(gw_wsconn_t *c)
{
    if (!c->sock || c->wbuf || !c->out_len)
        return;
    c->wbuf = c->out;
    c->wlen = c->out_len;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    h2o_iovec_t iov = h2o_iovec_init(c->wbuf, c->wlen);
    h2o_socket_write(c->sock, &iov, 1, on_written); /* never calls back synchronously */
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    gw_wsconn_t *c = sock->data;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = 0;
    if (err) {
        s_socket_gone(c);
        return;
    }
    if (c->out_len) {
        gw_wsconn_flush(c);
    } else if (c->state == GW_WSCONN_CLOSING && c->close_queued && !c->fin_sent) {
        /* Our close frame is out: FIN, then wait for the peer's (the linger bounds it). */
        c->fin_sent = true;
        shutdown(h2o_socket_get_fd(sock), SHUT_WR);
    }
}

/* ==== closing ================================================================================== */

static void on_linger(h2o_timeout_entry_t *e)
{
    s_socket_gone(H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, timer, e));
}

/* Queue a close frame (code 0: an empty body) and move to CLOSING. */
static void s_close(gw_wsconn_t *c, unsigned code, const char *reason)
{
    if (c->state != GW_WSCONN_OPEN)
        return;
    uint8_t frame[2 + GW_WSFRAME_CONTROL_MAX];
    size_t n = gw_wsframe_encode_close(frame, sizeof frame, code, reason, reason ? strlen(reason) : 0);
    if (!n) /* a code that may not be sent: say nothing but "closing" */
        n = gw_wsframe_encode_close(frame, sizeof frame, 0, NULL, 0);
    s_append(c, frame, n); /* beyond the queue bound: a close frame is owed even to a slow reader */
    c->close_queued = true;
    c->state = GW_WSCONN_CLOSING;
    s_timer_stop(&c->idle_timer);
    s_timer_stop(&c->timer);
    c->timer.cb = on_linger;
    h2o_timeout_link(s_loop(c), &c->ws->linger_to, &c->timer);
    if (c->watches)
        gw_ws_reap_later(c->ws, c);
    gw_wsconn_flush(c);
}

void gw_wsconn_close(gw_wsconn_t *c, unsigned code, const char *reason)
{
    s_close(c, code, reason);
}

/* ==== input ==================================================================================== */

static gw_wsrate_cfg_t s_rate_cfg(void)
{
    return (gw_wsrate_cfg_t){(uint32_t)gw_cfg.ws_msg_rate, (uint32_t)gw_cfg.ws_msg_burst};
}

/* One message against the budget: false after closing with 1008. */
static bool s_budget(gw_wsconn_t *c)
{
    gw_wsrate_cfg_t rc = s_rate_cfg();
    if (gw_wsrate_take(&c->rate, &rc, 1, util_mono_us()))
        return true;
    atomic_fetch_add(&gw_metrics.ws_closed_policy, 1);
    s_close(c, GW_WSFRAME_CLOSE_POLICY, GW_WSRATE_REASON);
    return false;
}

static void s_message(gw_wsconn_t *c, const char *text, size_t len)
{
    atomic_fetch_add(&gw_metrics.ws_messages, 1);
    gw_wsmsg_limits_t lim = {.max_len = (uint32_t)gw_cfg.ws_max_frame, .max_users = (uint32_t)gw_cfg.ws_max_watch};
    gw_wsmsg_t m;
    char err[GW_WSMSG_ERR_LEN];
    if (gw_wsmsg_parse(text, len, &lim, &m, err, sizeof err) < 0) {
        gw_wsmsg_fini(&m);
        gw_wsconn_error(c, err, true);
        return;
    }
    bool ok = true;
    switch (m.type) {
    case GW_WSMSG_SET:
        gw_wssess_set(c, &m);
        break;
    case GW_WSMSG_ACTIVITY:
        gw_wssess_activity(c);
        break;
    case GW_WSMSG_WATCH:
        if (gw_wswatch_add(c, &m, err, sizeof err) < 0) {
            gw_wsconn_error(c, err, true);
            ok = false;
        }
        break;
    case GW_WSMSG_UNWATCH:
        gw_wswatch_remove(c, &m);
        break;
    case GW_WSMSG_PING: {
        gw_buf_t *b = &c->ws->scratch;
        gw_buf_reset(b);
        gw_wsmsg_pong(b);
        gw_wsconn_send(c, b->p, b->len);
        break;
    }
    case GW_WSMSG_BYE: /* sign-out: no grace; the session ends once the close handshake is done */
        c->bye = true;
        s_close(c, GW_WSFRAME_CLOSE_NORMAL, "signed out");
        break;
    default:
        break;
    }
    if (ok)
        c->errors = 0;
    gw_wsmsg_fini(&m);
}

/* Act on one decoder result. Never frees c or closes its socket (only the state moves). */
static void s_event(gw_wsconn_t *c, int rc, gw_wsframe_event_t *ev)
{
    switch (rc) {
    case GW_WSFRAME_TEXT:
        if (s_budget(c))
            s_message(c, (const char *)ev->data, ev->len);
        break;
    case GW_WSFRAME_BINARY:
        if (s_budget(c))
            gw_wsconn_error(c, "binary frame: messages are JSON text frames", true);
        break;
    case GW_WSFRAME_PING:
        if (s_budget(c))
            s_frame(c, GW_WSFRAME_OP_PONG, ev->data, ev->len);
        break;
    case GW_WSFRAME_PONG:
        break; /* liveness only */
    case GW_WSFRAME_CLOSE:
        /* Echo the peer's code (RFC 6455 5.5.1); an empty close gets an empty close. Whatever the
         * code (1000 included: libraries close with it before reconnecting), the session keeps
         * PRESENCE_GRACE_MS so a reconnect with session_id= resumes it; a sign-out is `bye`. */
        s_close(c, ev->code == GW_WSFRAME_CLOSE_NO_STATUS ? 0 : ev->code, NULL);
        break;
    case GW_WSFRAME_ERROR:
        LOG_RATELIMITED(LOG_INFO, 1000, "WebSocket of %.*s closed %u: %s", (int)c->uid_len, c->uid, ev->code,
                        ev->reason);
        s_close(c, ev->code, ev->reason);
        break;
    default: /* MORE, CLOSED */
        break;
    }
}

/* Decode and act on every whole frame in sock->input; the input is always consumed whole (a cut
 * frame moves into the decoder), so h2o can hand the read buffer back. */
static void s_read(gw_wsconn_t *c)
{
    h2o_socket_t *sock = c->sock;
    while (c->state == GW_WSCONN_OPEN && sock->input->size) {
        size_t used = 0;
        gw_wsframe_event_t ev;
        int rc = gw_wsframe_decode(&c->dec, (uint8_t *)sock->input->bytes, sock->input->size, &used, &ev);
        if (rc != GW_WSFRAME_MORE && rc != GW_WSFRAME_CLOSED)
            c->last_rx_ms = h2o_now(s_loop(c));
        s_event(c, rc, &ev);
        h2o_buffer_consume(&sock->input, used);
        if (rc == GW_WSFRAME_MORE)
            break;
    }
    if (c->state != GW_WSCONN_OPEN) /* closing: whatever else the peer sends is not read */
        h2o_buffer_consume(&sock->input, sock->input->size);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    gw_wsconn_t *c = sock->data;
    if (err) {
        s_socket_gone(c); /* the peer closed or reset: the grace starts */
        return;
    }
    s_read(c);
    gw_wsconn_flush(c);
}

/* ==== timers =================================================================================== */

/* Link the tick to run ms from now (1 <= ms <= WS_PING_INTERVAL_MS): a whole interval goes in
 * ping_to; less goes in the longest hop list not longer than ms, and the tick, early, arms itself
 * again for what is left. */
static void s_tick_arm(gw_wsconn_t *c, uint64_t ms)
{
    gw_ws_t *ws = c->ws;
    h2o_timeout_t *to = &ws->ping_to;
    if (ms < gw_cfg.ws_ping_ms && ws->nhops) {
        unsigned i = 63u - (unsigned)__builtin_clzll(ms ? ms : 1);
        to = &ws->hop_to[i < ws->nhops ? i : ws->nhops - 1u];
    }
    h2o_timeout_link(s_loop(c), to, &c->timer);
}

static void on_ping_tick(h2o_timeout_entry_t *e)
{
    gw_wsconn_t *c = H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, timer, e);
    uint64_t now = h2o_now(s_loop(c));
    uint64_t dead_at = c->last_rx_ms + 2 * gw_cfg.ws_ping_ms;
    if (now >= dead_at) {
        atomic_fetch_add(&gw_metrics.ws_dead, 1);
        LOG_RATELIMITED(LOG_INFO, 1000, "WebSocket of %.*s silent for %llu ms: dropped", (int)c->uid_len, c->uid,
                        (unsigned long long)(now - c->last_rx_ms));
        s_socket_gone(c);
        return;
    }
    if (now >= c->ping_at_ms) {
        c->ping_at_ms = now + gw_cfg.ws_ping_ms;
        s_frame(c, GW_WSFRAME_OP_PING, NULL, 0);
        gw_wsconn_flush(c);
    }
    if (c->state == GW_WSCONN_OPEN) /* not dropped as a slow reader by the ping */
        s_tick_arm(c, MIN(c->ping_at_ms, dead_at) - now);
}

void gw_wsconn_idle_restart(gw_wsconn_t *c)
{
    if (!gw_cfg.ws_idle_s || c->state != GW_WSCONN_OPEN)
        return;
    s_timer_stop(&c->idle_timer);
    h2o_timeout_link(s_loop(c), &c->ws->idle_to, &c->idle_timer);
}

static void on_idle(h2o_timeout_entry_t *e)
{
    gw_wsconn_t *c = H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, idle_timer, e);
    if (c->state == GW_WSCONN_OPEN)
        gw_wssess_idle(c);
}

/* ==== the upgrade ============================================================================== */

void gw_wsconn_start(gw_wsconn_t *c, h2o_socket_t *sock, size_t reqsize)
{
    if (!sock) { /* the 101 could not be written; h2o closed the socket */
        gw_wsconn_grace(c);
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize);
    /* A fixed kernel send buffer: without it Linux grows it (up to tcp_wmem's 4 MiB) for a client
     * that does not read, and WS_QUEUE_MAX would bound only the part of the backlog we hold. */
    int sndbuf = GW_WS_SNDBUF;
    setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    c->sock = sock;
    sock->data = c;
    c->state = GW_WSCONN_OPEN;
    atomic_fetch_add(&gw_metrics.ws_connections, 1);
    c->last_rx_ms = h2o_now(s_loop(c));
    c->ping_at_ms = c->last_rx_ms + gw_cfg.ws_ping_ms;
    c->timer.cb = on_ping_tick;
    h2o_timeout_link(s_loop(c), &c->ws->ping_to, &c->timer);
    gw_wsconn_idle_restart(c);
    h2o_socket_read_start(sock, on_read);
    if (c->lost_code) /* resumed elsewhere (or ended) while the 101 was on its way */
        s_close(c, c->lost_code, c->lost_code == GW_WSCONN_CLOSE_RESUMED ? "session resumed elsewhere" : "session ended");
    else if (c->ws->stopping)
        s_close(c, GW_WSFRAME_CLOSE_GOING_AWAY, "gateway going away");
    else if (sock->input->size) /* frames the client sent right behind its request */
        s_read(c);
    gw_wsconn_flush(c);
}
