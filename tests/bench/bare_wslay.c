/* bare_wslay.c -- h2o_bare's /ws: WebSocket through h2o 2.2.5's own support (lib/websocket.c on
 * top of libwslay), used the way its API allows, so the cost and the pitfalls can be measured.
 *
 * Key decisions, each from reading h2o 2.2.5 lib/websocket.c and wslay 1.1.1:
 * - max message size is set on the wslay context right after the upgrade: wslay's default is
 *   2^31-1 and it mallocs a frame's declared length as soon as the header arrives;
 * - the welcome frame is only queued at upgrade time: conn->sock is NULL until h2o has written the
 *   101, and h2o_websocket_proceed dereferences it;
 * - h2o_websocket_proceed is never called from inside the message callback (the callback runs
 *   inside proceed -> wslay_event_recv; re-entering would recurse into wslay on the same context);
 *   from outside (timer, PUT fan-out) it is, and it may free the connection;
 * - the connection is freed only in the callback with arg == NULL (h2o's "closed" signal) or by
 *   bare_wslay_drop from outside any callback.
 * Threading: loop thread only.
 */
#include "bare_ws.h"
#include "util.h"

#include <h2o/websocket.h>
#include <stdlib.h>
#include <string.h>

typedef struct wslay_conn {
    bare_conn_t base;
    h2o_websocket_conn_t *ws;
    bool in_cb; /* inside our message callback: queue only, the running proceed loop flushes */
} wslay_conn_t;

static void s_free(wslay_conn_t *c)
{
    bare_conn_closed(&c->base);
    h2o_websocket_close(c->ws); /* closes the socket (if attached), frees wslay's context and h2o's conn */
    free(c);
}

static void on_ws_msg(h2o_websocket_conn_t *ws, const struct wslay_event_on_msg_recv_arg *arg)
{
    wslay_conn_t *c = ws->data;
    if (arg == NULL) { /* peer closed, I/O error, close handshake done, or wslay failed: free now */
        s_free(c);
        return;
    }
    c->base.last_rx_ms = h2o_now(bare_self->ctx.loop);
    c->in_cb = true;
    if (arg->opcode == WSLAY_TEXT_FRAME)
        bare_conn_on_text(&c->base, (const char *)arg->msg, arg->msg_length);
    else if (arg->opcode == WSLAY_BINARY_FRAME)
        bare_conn_send(&c->base, WSLAY_BINARY_FRAME, arg->msg, arg->msg_length, false);
    /* PING: wslay already queued the PONG; CLOSE: wslay already queued the echo of the close. */
    c->in_cb = false;
}

void bare_wslay_upgrade(h2o_req_t *req, const char *client_key)
{
    wslay_conn_t *c = xcalloc(1, sizeof *c);
    bare_conn_init(&c->base);
    c->ws = h2o_upgrade_to_websocket(req, client_key, c, on_ws_msg);
    wslay_event_config_set_max_recv_msg_length(c->ws->ws_ctx, bare_cfg.max_frame);
    static const char welcome[] = "{\"type\":\"welcome\"}";
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)welcome, sizeof welcome - 1};
    wslay_event_queue_msg(c->ws->ws_ctx, &m); /* sent by the proceed h2o runs once the 101 is out */
    bare_conn_opened(&c->base, BARE_WS);
}

void bare_wslay_send(bare_conn_t *base, int opcode, const void *data, size_t len, bool from_outside)
{
    wslay_conn_t *c = (wslay_conn_t *)base;
    struct wslay_event_msg m = {(uint8_t)opcode, data, len};
    if (wslay_event_queue_msg(c->ws->ws_ctx, &m) != 0)
        return; /* close already queued/sent: wslay refuses further messages */
    if (from_outside && !c->in_cb && c->ws->sock != NULL)
        h2o_websocket_proceed(c->ws); /* may call on_ws_msg(NULL) and free c */
}

void bare_wslay_drop(bare_conn_t *base)
{
    wslay_conn_t *c = (wslay_conn_t *)base;
    if (c->ws->sock == NULL) {
        /* The 101 is still being written and h2o's http1 conn holds a pointer to c->ws for its
         * completion callback: freeing now would be a use-after-free. h2o 2.2.5 offers no way to
         * cancel; unlink it and let the callback (or process exit) have it. */
        bare_conn_closed(&c->base);
        return;
    }
    s_free(c);
}
