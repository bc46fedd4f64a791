/* cache_node.h -- the cache-node: a W-TinyLFU cache tier kept coherent with the store
 * (cache-node/cache_node.c explains it).
 *
 * The process (cache-node/cache_node_main.c) reads the environment into a cache_node_config_t,
 * makes a node (which binds its ROUTER for gateways and connects to the store, or to the region's
 * relay) and runs it until a signal. The same calls serve unit tests: a test binds its own "store"
 * on inproc endpoints, talks to the node as a gateway would, and runs the node on a thread of its
 * own -- no process, real ZeroMQ.
 *
 * A node is one thread's: none of these calls is thread-safe.
 */
#ifndef PRESENCE_CACHE_NODE_H
#define PRESENCE_CACHE_NODE_H

#include <signal.h>
#include <stdint.h>

typedef struct cache_node_config {
    char id[64];                        /* CACHE_ID: labels this node's series */
    char endpoint[512];                 /* CACHE_ENDPOINT: the ROUTER gateways connect to (bound) */
    char store_cmd[512], store_pub[512]; /* the store-node's (or the region relay's) */
    uint64_t max_cost, counters;        /* the cache's budget (cache.h) */
    int policy;                         /* CACHE_POLICY_* */
    uint64_t req_timeout_ms;            /* REQUEST_TIMEOUT_MS: the gateways' deadline */
    uint64_t store_timeout_ms;          /* ours for the store: we answer before the gateway gives up */
    uint64_t stall_ms;                  /* the longest wait; not running for twice this is a stall */
    uint64_t hb_limit_ms;               /* the stream is silent after this long */
    uint64_t store_down_ms;             /* the store is down when it has not answered for this long */
    uint64_t sub_hwm;                   /* SUB receive high-water mark (messages) */
} cache_node_config_t;

typedef struct cache_node cache_node_t;

/* Bind the gateways' ROUTER, connect to the store, start following the change stream. Returns 0
 * with *out set (the caller owns it: free with cache_node_destroy); or, with err (CFG_ERR_LEN) set,
 * -1 when a socket could not be bound or connected and -2 when the cache configuration is invalid.
 * zctx stays the caller's and must outlive the node. */
int cache_node_new(void *zctx, const cache_node_config_t *c, cache_node_t **out, char *err);
/* Answer every request still waiting for the store (EUNAVAIL), close the sockets, free. NULL-safe;
 * sets *np to NULL. */
void cache_node_destroy(cache_node_t **np);

/* One loop turn: timers (store deadlines, pings, the stream's), a wait of at most stall_ms, then
 * the stream, the store's answers and the gateways' requests, in that order. Returns 0, or -1
 * when polling failed. */
int cache_node_turn(cache_node_t *n, const volatile sig_atomic_t *stop);
/* Turns until *stop is set. Returns 0, or -1 when polling failed. */
int cache_node_run(cache_node_t *n, const volatile sig_atomic_t *stop);

#endif
