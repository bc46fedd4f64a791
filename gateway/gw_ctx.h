/* gw_ctx.h -- the context a request runs in: its event-loop thread's (gw_ctx_t) and its own
 * (gw_rctx_t).
 *
 * gw_ctx_t is what a thread offers the request path -- its h2o context, its calls to the cache
 * tier, its watch hub, the connections it can cut, its verified-token cache and two scratch
 * buffers. The thread layer (gw_thread.c) owns and fills it; everything below only uses it, so no
 * file below calls up into the thread. gw_rctx_t is one request's: allocated from the request's
 * pool by gw_http.c, filled by the guard (who is asking), read by the handlers and the reply
 * helpers.
 *
 * Types only. A ctx is its thread's: nothing in it is shared with other threads.
 */
#ifndef PRESENCE_GW_CTX_H
#define PRESENCE_GW_CTX_H

#include "gw_conns.h"
#include "gw_lib.h"
#include "gw_upstream.h"
#include "proto.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_watch_hub gw_watch_hub_t;

typedef struct gw_ctx {
    h2o_context_t h2o;         /* the thread's h2o context: req->conn->ctx points here */
    int idx;                   /* the thread's index */
    gw_upstream_t *up;         /* calls to the cache tier (gw_upstream.h) */
    gw_watch_hub_t *watch;     /* the change stream for watchers (gw_watch_hub.h); NULL without SSE */
    gw_conns_t *conns;         /* connections that can be cut (gw_conns.h) */
    gw_authcache_t *authcache; /* verified tokens (NULL: JWT_CACHE_SIZE=0) */
    gw_buf_t out;              /* scratch: a response being rendered */
    proto_buf_t pb;            /* scratch: a command being encoded */
} gw_ctx_t;

/* The thread context a request runs in. */
static inline gw_ctx_t *gw_ctx_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(gw_ctx_t, h2o, req->conn->ctx);
}

/* One request's context, allocated from its pool. */
typedef struct gw_rctx {
    gw_ctx_t *t;
    h2o_req_t *req; /* the request (the access log reads it when the answer is counted) */
    int route, method; /* the route table's row and enum gw_method: what the request is counted as */
    uint64_t start_us;
    const char *allow_origin; /* CORS: the Access-Control-Allow-Origin to send (NULL: none) */
    size_t allow_origin_len;
    bool counted; /* answered and counted (gw_reply.c) */
    /* The router's (gw_routes.c): the request target's parts, raw (borrowed from the request). */
    const char *seg_id, *seg_sid; /* the path's {id} and {sid} segments (NULL: none) */
    size_t seg_id_len, seg_sid_len;
    const char *query; /* after '?' ("" when none) */
    size_t qlen;
    /* The guard's (gw_guard.c): who is asking, and for what. */
    char uid[PROTO_USER_ID_MAX + 1]; /* {id}, decoded and valid (uid_len 0: the route has none) */
    size_t uid_len;
    bool authed;        /* a valid token came with the request: claims are its */
    gw_claims_t claims;
    const proto_str_t *ids; /* users= (GW_RF_USERS): decoded, valid, distinct; pool memory */
    uint32_t nids;
} gw_rctx_t;

/* Who reads, for rendering (gw_json_record_as): the token's subject and scope when one came with
 * the request, else anonymous (the public view). Borrows rc's claims. */
static inline gw_viewer_t gw_rctx_viewer(const gw_rctx_t *rc)
{
    if (!rc->authed)
        return (gw_viewer_t){NULL, 0, false};
    return (gw_viewer_t){rc->claims.sub, rc->claims.sub_len, rc->claims.admin};
}

#endif
