/* gw_wswatch.h -- what a WebSocket connection watches: its `watch`/`unwatch` messages as
 * subscriptions to the thread's watch hub, and the hub's changes as `presence` frames rendered for
 * the connection's viewer (gateway/gw_wswatch.c explains it).
 *
 * Threading: the connection's thread (the hub's).
 */
#ifndef PRESENCE_GW_WSWATCH_H
#define PRESENCE_GW_WSWATCH_H

#include "gw_watch_hub.h"
#include "gw_wsconn.h"
#include "gw_wsmsg.h"

/* One subscription: the users of one `watch` message not watched before, with its `since`. */
struct gw_wswatch {
    gw_watch_sub_t sub;
    gw_wsconn_t *c;
    gw_wswatch_t *next;
};

/* A `watch`: subscribe to m->users the connection does not watch yet (the current records first,
 * or every change after m->since). Returns 0, or -1 with the error text in err (errlen bytes): more
 * than WS_MAX_WATCH users in all, or no watch hub on this gateway. */
int gw_wswatch_add(gw_wsconn_t *c, const gw_wsmsg_t *m, char *err, size_t errlen);
/* An `unwatch`: stop the changes of m->users (users not watched are ignored). */
void gw_wswatch_remove(gw_wsconn_t *c, const gw_wsmsg_t *m);
/* Drop every subscription (the connection is closing). Never from inside a hub callback
 * (gw_ws_reap_later). */
void gw_wswatch_clear(gw_wsconn_t *c);

#endif
