/* gw_metrics.h -- what the gateway counts, and its Prometheus text (/metrics).
 *
 * One process-wide gw_metrics: relaxed atomic counters and lock-free histograms, updated by every
 * event-loop thread, read by /metrics. Requests are counted by route (the route table's row, whose
 * metric label gw_metrics_init was given), method and status. It calls nothing above it: labels
 * and the number of cache-nodes are handed in.
 */
#ifndef PRESENCE_GW_METRICS_H
#define PRESENCE_GW_METRICS_H

#include "gw_lib.h"
#include "stats.h"

#include <stdatomic.h>
#include <stdint.h>

#define GW_ROUTES_MAX 32 /* rows of the route table (gw_routes.c), "not found" included */

/* The methods requests are counted by (and routes accept: a bit each). */
enum gw_method { GW_M_GET = 0, GW_M_HEAD, GW_M_PUT, GW_M_POST, GW_M_DELETE, GW_M_OPTIONS, GW_M_OTHER, GW_M_COUNT };

/* Status codes counted separately; anything else is "other" (code="0"). */
#define GW_CODES 14
extern const int gw_codes[GW_CODES];

typedef struct gw_metrics {
    _Atomic uint64_t requests[GW_ROUTES_MAX][GW_M_COUNT][GW_CODES + 1];
    stats_hist_t duration[GW_ROUTES_MAX];
    _Atomic int64_t inflight;
    _Atomic uint64_t upstream_timeouts, upstream_unavailable, upstream_retries, node_failovers;
    _Atomic int64_t sse_clients;
    _Atomic uint64_t sse_events, sse_dropped;
} gw_metrics_t;

extern gw_metrics_t gw_metrics;

/* Name the routes (labels[i] for route i, nroutes <= GW_ROUTES_MAX; the strings must live as long
 * as the process) and ready the histograms. Call once, before threads start. */
void gw_metrics_init(const char *const *labels, int nroutes);
/* A request began (in flight until gw_metrics_request). Thread-safe. */
void gw_metrics_begin(void);
/* A request was answered: count it by route, method and status, observe its duration since
 * start_us (monotonic), and take it out of the in-flight gauge. Thread-safe. */
void gw_metrics_request(int route, int method, int status, uint64_t start_us);

/* Append the exposition (format 0.0.4) to b: the gateway's own series, then what each cache-node
 * reported (nodes[0..nnodes): their STATS answers; the store's and relay's series once).
 * nodes_configured: the cache-nodes this gateway is configured with now. Thread-safe. */
void gw_metrics_render(gw_buf_t *b, const stats_list_t *const *nodes, int nnodes, int nodes_configured);

#endif
