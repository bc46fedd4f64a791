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



typedef struct gw_thread gw_thread_t;
typedef struct gw_call gw_call_t;
typedef void (*gw_call_cb)(gw_call_t *call, const proto_msg_t *m, int status);

struct gw_call {
    gw_call_t *hnext;
    uint64_t rid;
    gw_thread_t *t;
    int node;
    uint8_t type;            /* command type (reads may be re-sent to another node) */
    h2o_req_t *req;          /* NULL once the HTTP request was disposed */
    gw_call_t **token;       /* pool-owned back pointer (see gw_upstream.c) */
    h2o_timeout_entry_t te;
    gw_call_cb cb;
    void *arg;
    char *msg;               /* encoded command, kept for re-sending */
    size_t msg_len;
    bool sent;               /* left this process (else it is in the node's pending batch) */
    uint64_t start_us;
};

typedef struct gw_node_conn {
    gw_thread_t *t;
    int idx;
    char endpoint[GW_ENDPOINT_MAX]; /* "" = a vacant slot (CACHE_DNS): never up, never sent to */
    uint64_t seed;                  /* rendezvous seed: a hash of the endpoint */
    void *sock, *mon;
    h2o_socket_t *hsock, *hmon;
    bool up;
    bool seen; /* has answered at least once */
    uint64_t last_ok_ms;
    bool ping_out;
    h2o_timeout_entry_t drain;
    h2o_timeout_entry_t flush;  /* sends the pending batch at the end of the loop turn */
    proto_batch_t batch;        /* commands queued for this node during this turn */
    uint64_t *batch_rids;       /* their calls */
    uint32_t batch_cap;
    proto_buf_t frame;
} gw_node_conn_t;

extern atomic_int gw_threads_with_nodes; /* threads that have seen a cache-node answer */

struct gw_thread {
    int idx;
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    gw_node_conn_t nodes[GW_MAX_NODES];
    uint64_t seeds[GW_MAX_NODES]; /* nodes[i].seed, as an array for gw_rendezvous */
    unsigned dns_gen;             /* the discovery table this thread applied */
    unsigned sock_gen;            /* names each monitor's inproc endpoint uniquely */
    gw_call_t **ctab;
    size_t csize, ccount;
    uint64_t next_rid;
    h2o_timeout_t req_timeout;
    h2o_timeout_t ping_timeout; /* deadline of a ping */
    h2o_timeout_t ping_tick;    /* how often every node is pinged */
    h2o_timeout_entry_t ping_timer;
    gw_buf_t out;
    proto_buf_t pb;
    void *watch; /* SSE hub (gw_watch.c) */
    void *zctx;  /* the process's ZeroMQ context */
    struct gw_connent **conns; /* h2o socket -> fd, for connections we must be able to cut */
    size_t conns_size, conns_count;
    bool stopping;
    bool node_answered; /* a cache-node has answered this thread */
    bool reported_up;   /* told main this thread is ready (gw_thread_ready_check) */
    bool accepting;   /* the listener is being read (gw_accept_start) */
    uint64_t accept_by_ms; /* accept from then on even if no cache-node has answered */
    gw_authcache_t *authcache;
};

/* Per-request context, allocated from the request's pool. */
typedef struct gw_rctx {
    gw_thread_t *t;
    int route, method;
    uint64_t start_us;
    const char *allow_origin;
    size_t allow_origin_len;
    bool counted;
} gw_rctx_t;

/* ---- gw_upstream.c -------------------------------------------------------------------------- */
int gw_upstream_init(gw_thread_t *t, void *zctx, char *err);
void gw_upstream_fini(gw_thread_t *t);
uint64_t gw_next_rid(gw_thread_t *t);
/* Choose the node for a key (rendezvous over the nodes that are up), -1 if none is up. */
int gw_route_key(gw_thread_t *t, const char *key, size_t klen);
/* Any node that is up, preferring `avoid` not to be chosen; -1 if none. */
int gw_any_node(gw_thread_t *t, int avoid);
/* Queue an encoded command (its rid from gw_next_rid) for a node and register the call. The buffer
 * is copied. Commands queued during one event-loop turn leave together in one BATCH frame at the
 * end of the turn; if that send fails the node is marked down and its unsent calls go to another
 * node (or fail with PROTO_EUNAVAIL when none is up). Returns the call (never NULL for a valid
 * node index). */
gw_call_t *gw_call_send(gw_thread_t *t, h2o_req_t *req, int node, uint64_t rid, uint8_t type, const proto_buf_t *b,
                        gw_call_cb cb, void *arg);
int gw_nodes_up(gw_thread_t *t);
/* The cache-nodes this gateway is configured with now: CACHE_ENDPOINTS, or the addresses CACHE_DNS
 * resolved to. */
int gw_nodes_configured(void);

/* ---- gw_discovery.c ------------------------------------------------------------------------- */
int gw_discovery_start(char *err, size_t errlen);
void gw_discovery_stop(void);
unsigned gw_discovery_gen(void);
int gw_discovery_assigned(void);
/* Copy the slot table (GW_MAX_NODES endpoints, "" = vacant); returns its generation. */
unsigned gw_discovery_snapshot(char (*out)[GW_ENDPOINT_MAX]);

/* Start accepting connections on the thread's listener (idempotent): called when a cache-node first
 * answers the thread, or by the ping timer once accept_by_ms has passed (gw_main.c). */
void gw_accept_start(gw_thread_t *t);
/* A thread is ready once a cache-node answered it and its watch hub is live (it has caught up with
 * the change stream, so it can answer resumes from the window): it then reports to main (the ready
 * line) and starts accepting. Called when either becomes true. */
void gw_thread_ready_check(gw_thread_t *t);
/* The thread's watch hub is live (or there is none). */
bool gw_watch_live(const gw_thread_t *t);

/* Shut down the connection a request came on (a client that does not read its SSE stream).
 * HTTP/1 only; returns 0 when done, -1 when the connection is not one we can cut. */
int gw_conn_shutdown(h2o_req_t *req);

/* ---- gw_http.c ------------------------------------------------------------------------------ */
int gw_http_on_req(h2o_handler_t *self, h2o_req_t *req);
/* The routes' metric labels, by route (gw_metrics_init). */
const char *const *gw_http_route_labels(int *n);
void gw_respond(h2o_req_t *req, gw_rctx_t *rc, int status, const char *body, size_t len);
void gw_respond_json_error(h2o_req_t *req, gw_rctx_t *rc, int status, const char *msg);
void gw_count(gw_rctx_t *rc, int status);
void gw_add_cors_headers(h2o_req_t *req, gw_rctx_t *rc);

/* ---- gw_watch.c (SSE) ----------------------------------------------------------------------- */
int gw_watch_init(gw_thread_t *t, void *zctx, char *err);
void gw_watch_fini(gw_thread_t *t);
void gw_watch_handle(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n, uint64_t since);

#endif
