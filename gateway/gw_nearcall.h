/* gw_nearcall.h -- reads through a gateway thread's near cache (gateway/gw_nearcall.c explains it).
 *
 * The handlers' one call for reading records (GET of one user, MGET of a node's group): answered
 * from the thread's near cache (gw_near.h) when every key is there, else the missing keys go to the
 * cache tier and their answers are checked against the near cache's floor and kept. Without a near
 * cache (NEAR_CACHE_BYTES=0, or no watch hub: SSE_MAX_STREAMS=0) it is gw_upstream_send.
 *
 * One per event-loop thread; nothing here is thread-safe but the process-wide write frontier
 * (atomic).
 */
#ifndef PRESENCE_GW_NEARCALL_H
#define PRESENCE_GW_NEARCALL_H

#include "gw_ctx.h"
#include "gw_upstream.h"
#include "proto.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_nearcall gw_nearcall_t;

/* The thread's near cache: NEAR_CACHE_BYTES / GATEWAY_THREADS bytes, following cx->watch's stream
 * (observer) and cx->up's write replies (write hook). Returns NULL when there is none to have (the
 * share is below GW_NEAR_MIN_BYTES, or the thread has no watch hub). Call after the hub and the
 * upstream exist. Caller owns the result; free with gw_nearcall_destroy after the upstream is
 * destroyed (its last callbacks still use it) and the hub stopped. */
gw_nearcall_t *gw_nearcall_new(gw_ctx_t *cx);
/* NULL-safe; sets *nc NULL. */
void gw_nearcall_destroy(gw_nearcall_t **nc);

/* Read keys[0..n) (distinct, valid ids; borrowed for the call) for req: type PROTO_GET (n == 1)
 * or PROTO_MGET. cb runs exactly once, like a gw_upstream_send callback (read c->req and c->arg
 * only): with the answer -- a REPLY whose records are the users found (GET: status NOTFOUND when
 * none) -- or with m == NULL and a PROTO_E* status. It may run before this returns (every key
 * came from the near cache): a caller that counts outstanding callbacks counts this one first.
 * node: the owner node of the keys (gw_upstream_route), -1 if none is up (then only near hits
 * can answer). Returns false when the keys must be asked of a node and that cannot be done (node
 * -1, or not a node): cb does not run. */
bool gw_nearcall_read(gw_ctx_t *t, h2o_req_t *req, int node, uint8_t type, const proto_str_t *keys, uint32_t n,
                      gw_call_cb cb, void *arg);

#endif
