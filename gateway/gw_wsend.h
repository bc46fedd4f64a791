/* gw_wsend.h -- WebSocket sessions ended from outside (REALTIME.md "Sessions"): a session signed out
 * with DELETE .../sessions/{sid}, evicted by MAX_SESSIONS, erased with its user, or taken over by a
 * connection of another gateway, found from the thread's change stream and its connection closed
 * at once (gateway/gw_wsend.c explains it).
 *
 * Threading: one per gateway thread (in its gw_ws_t), on that thread's event loop.
 */
#ifndef PRESENCE_GW_WSEND_H
#define PRESENCE_GW_WSEND_H

#include "gw_ws.h"

typedef struct gw_wsend gw_wsend_t;

/* At the thread's start (gw_ws_attach), after its watch hub: follow the hub's change stream for the
 * connections of ws. Returns the state (the thread's; never freed: its lookups' callbacks may run
 * until the upstream is destroyed), or NULL when the thread has no watch hub (SSE_MAX_STREAMS=0):
 * then a session ended from outside is found only at its connection's next write (gw_wssess.c). */
gw_wsend_t *gw_wsend_new(gw_ws_t *ws);

#endif
