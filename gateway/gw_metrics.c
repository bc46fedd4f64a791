/* gw_metrics.c -- what the gateway counts, and the Prometheus text exposition of /metrics
 * (format 0.0.4; see gw_metrics.h).
 *
 * The gateway's own series (requests, durations, in-flight, upstream failures, SSE) are merged with
 * what every cache-node reports (its cache and sync numbers, labelled node="<id>") and, once, the
 * store-node's (or sync relay's) numbers that the cache-nodes poll. Series are grouped by metric
 * family, as the format requires, each family preceded by its # TYPE line. A stat name ending in
 * ":us" carries microseconds and is printed in seconds. Counters are relaxed atomics: any thread.
 */
#include "gw_metrics.h"
#include "gw_config.h"
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

typedef struct entry {
    char name[PROTO_STAT_NAME_MAX + 1]; /* printed name (":us" removed) */
    char family[PROTO_STAT_NAME_MAX + 1];
    uint64_t value;
    bool us, hist;
    size_t order;
} entry_t;

typedef struct elist {
    entry_t *v;
    size_t n, cap;
} elist_t;

static void s_push(elist_t *l, const char *name, size_t len, uint64_t value)
{
    if (len > PROTO_STAT_NAME_MAX)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    entry_t *e = &l->v[l->n];
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->us = len > 3 && memcmp(name + len - 3, ":us", 3) == 0;
    if (e->us)
        e->name[len - 3] = '\0';
    size_t fl = strcspn(e->name, "{");
    memcpy(e->family, e->name, fl);
    e->family[fl] = '\0';
    e->value = value;
    e->hist = false;
    e->order = l->n;
    l->n++;
}

static bool s_has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int s_cmp(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->family, y->family);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool s_seen(const elist_t *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0)
            return true;
    return false;
}

/* The near caches' series (every thread's summed; gw_nearcall.c). */
static void s_own_near(stats_list_t *own)
{
    int64_t entries = atomic_load(&gw_metrics.near_entries), bytes = atomic_load(&gw_metrics.near_bytes);
    stats_add(own, "gateway_near_hits_total", atomic_load(&gw_metrics.near_hits));
    stats_add(own, "gateway_near_misses_total", atomic_load(&gw_metrics.near_misses));
    stats_add(own, "gateway_near_bypassed_total", atomic_load(&gw_metrics.near_bypassed));
    stats_add(own, "gateway_near_fills_total", atomic_load(&gw_metrics.near_fills));
    stats_add(own, "gateway_near_retries_total", atomic_load(&gw_metrics.near_retries));
    stats_add(own, "gateway_near_evictions_total", atomic_load(&gw_metrics.near_evictions));
    stats_add(own, "gateway_near_drops_total", atomic_load(&gw_metrics.near_drops));
    stats_add(own, "gateway_near_stalls_total", atomic_load(&gw_metrics.near_stalls));
    stats_add(own, "gateway_near_entries", entries > 0 ? (uint64_t)entries : 0);
    stats_add(own, "gateway_near_bytes", bytes > 0 ? (uint64_t)bytes : 0);
}

/* The gateway's own series. */
static void s_own(elist_t *l, int nodes_configured)
{
    static const char *const methods[GW_M_COUNT] = {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "OTHER"};
    stats_list_t own;
    stats_list_init(&own);
    for (int r = 0; r < s_nroutes; r++) {
        for (int m = 0; m < GW_M_COUNT; m++)
            for (int c = 0; c <= GW_CODES; c++) {
                uint64_t v = atomic_load_explicit(&gw_metrics.requests[r][m][c], memory_order_relaxed);
                if (v)
                    stats_addf(&own, v, "http_requests_total{method=\"%s\",route=\"%s\",code=\"%d\"}", methods[m],
                               s_labels[r], c < GW_CODES ? gw_codes[c] : 0);
            }
    }
    for (int r = 0; r < s_nroutes; r++) {
        if (!atomic_load_explicit(&gw_metrics.duration[r].count, memory_order_relaxed))
            continue;
        char lab[64];
        snprintf(lab, sizeof lab, "route=\"%s\"", s_labels[r]);
        stats_add_hist(&own, "http_request_duration_seconds", lab, &gw_metrics.duration[r]);
    }
    int64_t inflight = atomic_load(&gw_metrics.inflight);
    stats_add(&own, "http_requests_inflight", inflight > 0 ? (uint64_t)inflight : 0);
    int64_t sse = atomic_load(&gw_metrics.sse_clients);
    stats_add(&own, "sse_clients", sse > 0 ? (uint64_t)sse : 0);
    stats_add(&own, "sse_events_total", atomic_load(&gw_metrics.sse_events));
    stats_add(&own, "sse_clients_dropped_total", atomic_load(&gw_metrics.sse_dropped));
    stats_add(&own, "gateway_upstream_timeouts_total", atomic_load(&gw_metrics.upstream_timeouts));
    stats_add(&own, "gateway_upstream_unavailable_total", atomic_load(&gw_metrics.upstream_unavailable));
    stats_add(&own, "gateway_upstream_retries_total", atomic_load(&gw_metrics.upstream_retries));
    stats_add(&own, "gateway_node_failovers_total", atomic_load(&gw_metrics.node_failovers));
    stats_addf(&own, (uint64_t)nodes_configured, "gateway_cache_nodes{node_id=\"%s\"}", gw_cfg.node_id);
    s_own_near(&own);
    for (uint32_t i = 0; i < own.n; i++)
        s_push(l, own.v[i].name.p, own.v[i].name.len, own.v[i].value);
    stats_list_fini(&own);
}

/* The cache-nodes' series; the store's (and relay's) once, from the first node that reports them. */
static void s_nodes(elist_t *l, const stats_list_t *const *nodes, int nnodes)
{
    for (int k = 0; k < nnodes; k++) {
        const stats_list_t *sl = nodes[k];
        for (uint32_t i = 0; i < sl->n; i++) {
            const proto_str_t *nm = &sl->v[i].name;
            bool shared = (nm->len > 6 && (memcmp(nm->p, "store_", 6) == 0 || memcmp(nm->p, "relay_", 6) == 0));
            if (shared) {
                char tmp[PROTO_STAT_NAME_MAX + 1];
                size_t n = nm->len;
                memcpy(tmp, nm->p, n);
                tmp[n] = '\0';
                if (n > 3 && strcmp(tmp + n - 3, ":us") == 0)
                    tmp[n - 3] = '\0';
                if (s_seen(l, tmp))
                    continue;
            }
            s_push(l, nm->p, nm->len, sl->v[i].value);
        }
    }
}

/* Histogram families: those with a _bucket series; their _sum/_count join the family. */
static void s_histograms(elist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        entry_t *e = &l->v[i];
        const char *sufs[] = {"_bucket", "_sum", "_count"};
        for (int s = 0; s < 3; s++) {
            if (!s_has_suffix(e->family, sufs[s]))
                continue;
            char base[PROTO_STAT_NAME_MAX + 1];
            size_t bl = strlen(e->family) - strlen(sufs[s]);
            memcpy(base, e->family, bl);
            base[bl] = '\0';
            char bucket[PROTO_STAT_NAME_MAX + 16];
            snprintf(bucket, sizeof bucket, "%s_bucket", base);
            bool hist = s == 0;
            /* The _bucket series may already have been renamed to the base family above. */
            for (size_t j = 0; j < l->n && !hist; j++)
                if (strcmp(l->v[j].family, bucket) == 0 || (l->v[j].hist && strcmp(l->v[j].family, base) == 0))
                    hist = true;
            if (hist) {
                snprintf(e->family, sizeof e->family, "%s", base);
                e->hist = true;
            }
            break;
        }
    }
}

void gw_metrics_render(gw_buf_t *b, const stats_list_t *const *nodes, int nnodes, int nodes_configured)
{
    elist_t l = {0};
    s_own(&l, nodes_configured);
    s_nodes(&l, nodes, nnodes);
    s_histograms(&l);
    qsort(l.v, l.n, sizeof *l.v, s_cmp);
    const char *last = "";
    for (size_t i = 0; i < l.n; i++) {
        entry_t *e = &l.v[i];
        if (strcmp(e->family, last) != 0) {
            const char *type = "gauge";
            if (e->hist)
                type = "histogram";
            else if (s_has_suffix(e->family, "_total"))
                type = "counter";
            gw_buf_addf(b, "# TYPE %s %s\n", e->family, type);
            last = e->family;
        }
        if (e->us)
            gw_buf_addf(b, "%s %.6f\n", e->name, (double)e->value / 1e6);
        else
            gw_buf_addf(b, "%s %llu\n", e->name, (unsigned long long)e->value);
    }
    free(l.v);
}
