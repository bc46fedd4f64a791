/* gw_metrics.c -- what the gateway counts, and the Prometheus text exposition of /metrics
 * (format 0.0.4; see gw_metrics.h).
 *
 * The gateway's own series (requests, durations, in-flight, upstream failures, SSE, its process_*
 * and build info) are merged with what every cache-node reports (its cache and sync numbers,
 * labelled node="<id>"), once the store-node's (or sync relay's) numbers that the cache-nodes poll,
 * and the notifier's (gw_notifier.c polls them). gw_promtext.c renders the merge as Prometheus
 * users expect (HELP and TYPE for every family, seconds, METRICS_PREFIX). Counters are relaxed
 * atomics: any thread.
 */
#include "gw_metrics.h"
#include "cli.h"
#include "gw_config.h"
#include "gw_notifier.h"
#include "gw_promtext.h"
#include "procstat.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const int gw_codes[GW_CODES] = {200, 201, 204, 400, 401, 403, 404, 405, 413, 429, 500, 502, 503, 504};

gw_metrics_t gw_metrics;

static const char *const *s_labels;
static int s_nroutes;

void gw_metrics_init(const char *const *labels, int nroutes)
{
    s_labels = labels;
    s_nroutes = nroutes < GW_ROUTES_MAX ? nroutes : GW_ROUTES_MAX;
    for (int r = 0; r < GW_ROUTES_MAX; r++)
        stats_hist_init_latency(&gw_metrics.duration[r]);
}

void gw_metrics_begin(void)
{
    atomic_fetch_add_explicit(&gw_metrics.inflight, 1, memory_order_relaxed);
}

void gw_metrics_request(int route, int method, int status, uint64_t start_us)
{
    int ci = GW_CODES;
    for (int i = 0; i < GW_CODES; i++)
        if (gw_codes[i] == status)
            ci = i;
    atomic_fetch_add_explicit(&gw_metrics.requests[route][method][ci], 1, memory_order_relaxed);
    stats_hist_observe(&gw_metrics.duration[route], util_mono_us() - start_us);
    atomic_fetch_sub_explicit(&gw_metrics.inflight, 1, memory_order_relaxed);
}

/* ==== rendering ================================================================================ */

/* The gateway's own series. */
static void s_own(stats_list_t *own, int nodes_configured)
{
    static const char *const methods[GW_M_COUNT] = {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "OTHER"};
    for (int r = 0; r < s_nroutes; r++) {
        for (int m = 0; m < GW_M_COUNT; m++)
            for (int c = 0; c <= GW_CODES; c++) {
                uint64_t v = atomic_load_explicit(&gw_metrics.requests[r][m][c], memory_order_relaxed);
                if (v)
                    stats_addf(own, v, "http_requests_total{method=\"%s\",route=\"%s\",code=\"%d\"}", methods[m],
                               s_labels[r], c < GW_CODES ? gw_codes[c] : 0);
            }
    }
    for (int r = 0; r < s_nroutes; r++) {
        if (!atomic_load_explicit(&gw_metrics.duration[r].count, memory_order_relaxed))
            continue;
        char lab[64];
        snprintf(lab, sizeof lab, "route=\"%s\"", s_labels[r]);
        stats_add_hist(own, "http_request_duration_seconds", lab, &gw_metrics.duration[r]);
    }
    int64_t inflight = atomic_load(&gw_metrics.inflight);
    stats_add(own, "http_requests_inflight", inflight > 0 ? (uint64_t)inflight : 0);
    int64_t sse = atomic_load(&gw_metrics.sse_clients);
    stats_add(own, "sse_clients", sse > 0 ? (uint64_t)sse : 0);
    stats_add(own, "sse_events_total", atomic_load(&gw_metrics.sse_events));
    stats_add(own, "sse_clients_dropped_total", atomic_load(&gw_metrics.sse_dropped));
    stats_add(own, "gateway_upstream_timeouts_total", atomic_load(&gw_metrics.upstream_timeouts));
    stats_add(own, "gateway_upstream_unavailable_total", atomic_load(&gw_metrics.upstream_unavailable));
    stats_add(own, "gateway_upstream_retries_total", atomic_load(&gw_metrics.upstream_retries));
    stats_add(own, "gateway_node_failovers_total", atomic_load(&gw_metrics.node_failovers));
    stats_addf(own, (uint64_t)nodes_configured, "gateway_cache_nodes{node_id=\"%s\"}", gw_cfg.node_id);
}


/* What every process reports about itself, the gateway's part: process_* and build info. */
static void s_process(stats_list_t *l)
{
    char lab[PROTO_NODE_ID_MAX + 32];
    snprintf(lab, sizeof lab, "proc=\"gateway\",node_id=\"%s\"", gw_cfg.node_id);
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, lab, &ps);
    stats_add_build_info(l, lab, cli_version(), cli_commit());
}

void gw_metrics_render(gw_buf_t *b, const stats_list_t *const *nodes, int nnodes, int nodes_configured)
{
    stats_list_t own, notifier;
    stats_list_init(&own);
    stats_list_init(&notifier);
    s_own(&own, nodes_configured);
    s_process(&own);
    if (gw_cfg.notifier_ep[0])
        stats_add(&own, "notifier_up", gw_notifier_snapshot(&notifier) ? 1 : 0);
    const stats_list_t *lists[GW_MAX_NODES + 2];
    int n = 0;
    lists[n++] = &own;
    for (int k = 0; k < nnodes && k < GW_MAX_NODES; k++)
        lists[n++] = nodes[k];
    lists[n++] = &notifier;
    gw_promtext_render(b, lists, n, gw_cfg.metrics_prefix);
    stats_list_fini(&own);
    stats_list_fini(&notifier);
}
