/* gw_http.c -- the gateway's one h2o handler: every request passes here, in this order:
 *
 *   1. CORS     a forbidden Origin is 403 on every path (CORS_ALLOWED_ORIGINS);
 *   2. route    the route table (gw_routes.c) finds the path's row, or 404;
 *   3. method   OPTIONS is the CORS preflight (204 with Allow); a method the row does not take
 *               is 405 with Allow;
 *   4. guard    the row's rule (gw_guard.c): the path's id, the token, the body cap, the token's
 *               right to the record, the users= list, the rate limit -- once, before the handler;
 *   5. handler  the row's endpoint (gw_endpoints.h) answers, now or from an upstream callback.
 *
 * Ids in paths are percent-decoded exactly once, then validated. Every response, errors included,
 * is JSON (the SSE stream and /metrics excepted) with the CORS headers the request earned
 * (gw_reply.c). Each request is counted in flight from here until it is answered. Runs on the
 * event-loop thread of the request's connection.
 */
#include "gw_http.h"
#include "gw_config.h"
#include "gw_ctx.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_routes.h"
#include "util.h"

#include <string.h>

const char *const *gw_http_route_labels(int *n)
{
    return gw_routes_labels(n);
}

int gw_http_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    gw_rctx_t *rc = h2o_mem_alloc_pool(&req->pool, sizeof *rc);
    memset(rc, 0, sizeof *rc);
    rc->t = gw_ctx_of(req);
    rc->req = req;
    rc->start_us = util_mono_us();
    rc->method = gw_routes_method(req->method);
    gw_metrics_begin();

    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    rc->query = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "";
    rc->qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
    rc->route = gw_routes_match(req->path.base, plen, rc);

    /* CORS first: a forbidden origin gets 403 on every route. */
    const char *origin = NULL;
    size_t olen = 0;
    ssize_t oi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (oi >= 0) {
        origin = req->headers.entries[oi].value.base;
        olen = req->headers.entries[oi].value.len;
    }
    if (gw_cors_check(&gw_cfg.cors, origin, olen, &rc->allow_origin, &rc->allow_origin_len) == GW_CORS_FORBID) {
        gw_reply_error(req, rc, 403, "origin not allowed: not in CORS_ALLOWED_ORIGINS");
        return 0;
    }
    if (rc->route == 0) {
        gw_reply_error(req, rc, 404, "not found");
        return 0;
    }
    const gw_route_t *r = gw_routes_get(rc->route);
    if (rc->method == GW_M_OPTIONS) {
        gw_reply_preflight(req, rc, gw_routes_allow(r, &req->pool));
        return 0;
    }
    if (!(r->methods & GW_METHOD(rc->method))) {
        const char *allow = gw_routes_allow(r, &req->pool);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
        gw_reply_error(req, rc, 405, "method not allowed");
        return 0;
    }
    if (gw_guard_admit(req, rc, &r->guard) < 0)
        return 0;
    r->handler(req, rc);
    return 0;
}
