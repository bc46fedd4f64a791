/* gw_config.h -- the gateway's configuration: every setting, read once from the environment.
 *
 * gw_config_load() fills the process-wide gw_cfg in main() before any thread starts; from then on
 * it is read-only (every thread reads it without locks). It sits at the bottom of the gateway's
 * layers: every file may read it, it calls nothing of theirs.
 */
#ifndef PRESENCE_GW_CONFIG_H
#define PRESENCE_GW_CONFIG_H

#include "gw_lib.h"
#include "proto.h"

#include <stdbool.h>
#include <stdint.h>

#define GW_MAX_NODES 16
#define GW_ENDPOINT_MAX 512
#define GW_MAX_THREADS 64

typedef struct gw_config {
    char addr[64];
    uint64_t port;
    uint64_t threads;
    char node_id[PROTO_NODE_ID_MAX + 1];
    char node_type[16];
    char endpoints[GW_MAX_NODES][GW_ENDPOINT_MAX]; /* CACHE_ENDPOINTS (empty with CACHE_DNS) */
    int nnodes;                                    /* node slots: the endpoints, or GW_MAX_NODES with CACHE_DNS */
    uint64_t node_seeds[GW_MAX_NODES];
    bool cache_dns;                                /* the slots come from DNS (gw_discovery.c) */
    char cache_dns_host[256];
    char cache_dns_port[8];
    uint64_t cache_dns_interval_ms;
    uint64_t request_timeout_ms;
    uint64_t http_timeout_ms; /* HTTP_REQUEST_TIMEOUT_MS: h2o's request and idle timeouts */
    uint64_t default_ttl;
    uint64_t max_batch;
    bool auth_reads;
    gw_auth_t auth;
    gw_cors_t cors;
    gw_ratelimit_t *rl_writes, *rl_reads, *rl_admin; /* NULL = not limited */
    double write_rate, write_burst, read_rate, read_burst;
    bool trust_proxy;
    uint64_t max_connections;
    uint64_t shutdown_grace_ms;
    uint64_t sse_max_streams, sse_max_ids, sse_ping_ms, sse_queue_max, sse_window_bytes;
    uint64_t jwt_cache_size; /* verified tokens cached per thread */
    char store_cmd[512], store_pub[512]; /* the change stream (store-node, or the region's relay) */
    bool access_log;                     /* ACCESS_LOG: one JSON line per request (gw_access.h) */
    char metrics_prefix[33];             /* METRICS_PREFIX: before every /metrics family but process_* */
    char notifier_ep[512];               /* NOTIFIER_ENDPOINT: polled for /metrics ("" = none) */
} gw_config_t;

/* The process's configuration (read-only once threads run). */
extern gw_config_t gw_cfg;

/* Fill gw_cfg from the environment (defaults for what is unset). Returns 0, or -1 with err
 * (CFG_ERR_LEN) naming the variable and the rule it broke. Call once, before threads start. */
int gw_config_load(char *err);

#endif
