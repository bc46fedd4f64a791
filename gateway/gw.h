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

struct gw_thread {
    int idx;
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    gw_upstream_t *up;
    h2o_timeout_t accept_to;
    h2o_timeout_entry_t accept_timer; /* accept even if no cache-node answered by then */
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

/* Start accepting connections on the thread's listener (idempotent): called when a cache-node first
 * answers the thread, or ACCEPT_WAIT_MS after the thread started (gw_main.c). */
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
