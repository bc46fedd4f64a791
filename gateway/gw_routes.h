/* gw_routes.h -- the gateway's route table: every path it answers, which methods, who may ask
 * (the guard's rule), which handler answers, and the label it is counted under
 * (gateway/gw_routes.c holds and documents the table).
 *
 * The table is constant; these calls are reentrant and run on any thread.
 */
#ifndef PRESENCE_GW_ROUTES_H
#define PRESENCE_GW_ROUTES_H

#include "gw_ctx.h"
#include "gw_guard.h"

#include <h2o.h>
#include <stddef.h>

typedef void (*gw_handler_fn)(h2o_req_t *req, gw_rctx_t *rc);

typedef struct gw_route {
    const char *path;      /* pattern: literal segments, {id} and {sid}; a [/...] tail is optional */
    unsigned methods;      /* GW_METHOD(GW_M_GET) | ...; OPTIONS (CORS preflight) always answered */
    gw_guard_rule_t guard; /* auth, rate-limit class, flags (gw_guard.h) */
    gw_handler_fn handler;
    const char *label;     /* the metric label: route="<label>" */
} gw_route_t;

#define GW_METHOD(m) (1u << (m))

/* The route of path[0..len) (no query): its index (>= 1), or 0 when none matches ("notfound").
 * Fills rc->seg_id / rc->seg_sid with the raw {id} / {sid} segments. A pattern without parameters
 * wins over one with (so /api/v2/presence/batch is never a user id). */
int gw_routes_match(const char *path, size_t len, gw_rctx_t *rc);
/* Route i (0 <= i < gw_routes_count()). */
const gw_route_t *gw_routes_get(int i);
int gw_routes_count(void);
/* The metric labels, by index (for gw_metrics_init); *n set to their number. */
const char *const *gw_routes_labels(int *n);
/* The method of a request line (enum gw_method; GW_M_OTHER for anything else). */
int gw_routes_method(h2o_iovec_t m);
/* The Allow header for route r ("GET, HEAD, OPTIONS"), from the request's pool. */
const char *gw_routes_allow(const gw_route_t *r, h2o_mem_pool_t *pool);

#endif
