/* gw_watch.h -- watch streams: GET /api/v2/presence/watch (Server-Sent Events) and the hub that
 * feeds them (gateway/gw_watch.c explains both).
 *
 * Every event-loop thread has one hub: it follows the region's change stream (a sync client in the
 * thread's loop) and hands each watched user's changes to the streams that watch that user. One
 * thread: a hub and its streams are used on their thread only.
 */
#ifndef PRESENCE_GW_WATCH_H
#define PRESENCE_GW_WATCH_H

#include "gw_ctx.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

/* Start the thread's hub (*out = NULL when SSE_MAX_STREAMS is 0: no hub). on_live(arg) runs when
 * the hub's stream becomes live (the thread's readiness: gw_thread.c). Returns 0, or -1 with err
 * (256 bytes). */
int gw_watch_new(gw_ctx_t *cx, void *zctx, void (*on_live)(void *arg), void *arg, gw_watch_hub_t **out, char *err);
/* The thread is stopping: end every stream from our side and stop following the change stream.
 * NULL-safe. The hub itself is not freed -- streams h2o has not released yet still point at it
 * (their stop callbacks free them); the thread is about to exit. */
void gw_watch_stop(gw_watch_hub_t *h);
/* The hub's stream has been live at least once (or there is no hub). */
bool gw_watch_live(const gw_watch_hub_t *h);

/* Start an SSE stream of the users ids[0..n) (validated by the caller; copied), resuming after
 * version `since` when non-zero (Last-Event-ID / ?since=). Answers itself (400 too many ids, 503
 * too many streams, 404 without a hub). */
void gw_watch_handle(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n, uint64_t since);

#endif
