/* gw.h -- the gateway process: shared configuration, per-thread state, upstream calls.
 *
 * Threads: GATEWAY_THREADS event-loop threads, each with its own h2o evloop and context, its own
 * SO_REUSEPORT listener, and its own ZeroMQ DEALER to every cache-node (sockets are never shared
 * between threads). Global state after startup is read-only (gw_config_t) except the rate
 * limiters (thread-safe) and the metrics (relaxed atomics).
 *
 * Upstream calls: gw_call_send() registers a call (request id -> callback) in the thread's table,
 * sends the command on the chosen node's DEALER, and arms the REQUEST_TIMEOUT_MS deadline. The
 * callback runs exactly once: with the reply, or with m == NULL and a status (PROTO_ETIMEOUT,
 * PROTO_EUNAVAIL). The HTTP request may have gone away meanwhile: call->req is then NULL and the
 * callback must not touch anything allocated from that request's pool.
 */
#ifndef PRESENCE_GW_H
#define PRESENCE_GW_H

#include <h2o.h>
#include <stdatomic.h>

#include "gw_config.h"
#include "gw_discovery.h"
#include "gw_upstream.h"
#include "gw_ctx.h"
#include "gw_watch.h"
#include "gw_http.h"
#include "gw_lib.h"
#include "gw_metrics.h"
#include "gw_rendezvous.h"
#include "proto.h"
#include "stats.h"


/* Routes (gw_http.c documents the table). */
enum gw_route {
    GW_R_NOTFOUND = 0,
    GW_R_PRESENCE_USER,
    GW_R_PRESENCE_HEARTBEAT,
    GW_R_PRESENCE_MULTI,
    GW_R_PRESENCE_BATCH,
    GW_R_PRESENCE_WATCH,
    GW_R_HEALTH,
    GW_R_LIVENESS,
    GW_R_READINESS,
    GW_R_HEALTH_STORE,
    GW_R_HEALTH_CACHE,
    GW_R_METRICS,
    GW_R_CACHE_METRICS,
    GW_R_COUNT
};



/* ---- gw_http.c ------------------------------------------------------------------------------ */

#endif
