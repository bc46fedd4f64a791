/* gw_reply.h -- how the gateway answers: every response, its status counted once, with the CORS
 * headers the request earned and the rule-naming JSON errors API.md promises.
 *
 * Below the endpoints and the guard, above nothing but the lib and the metrics. Each call answers
 * req (h2o_send_inline or the caller's generator) and counts it by the rctx's route and method --
 * once, whatever happens after. Runs on the request's event-loop thread.
 */
#ifndef PRESENCE_GW_REPLY_H
#define PRESENCE_GW_REPLY_H

#include "gw_ctx.h"

#include <h2o.h>
#include <stdint.h>

/* Answer status with a JSON body (204: no body, no Content-Type). Cache-Control: no-store, CORS
 * headers when allowed. */
void gw_reply(h2o_req_t *req, gw_rctx_t *rc, int status, const char *body, size_t len);
/* The same with another Content-Type (ctype[0..ctlen)); NULL ctype: none. */
void gw_reply_text(h2o_req_t *req, gw_rctx_t *rc, int status, const char *ctype, size_t ctlen, const char *body,
                   size_t len);
/* {"success":false,"error":"<msg>"} with status. */
void gw_reply_error(h2o_req_t *req, gw_rctx_t *rc, int status, const char *msg);
/* 401 with WWW-Authenticate: Bearer ..., error="invalid_token", and why. */
void gw_reply_unauthorized(h2o_req_t *req, gw_rctx_t *rc, const char *why);
/* 429 "rate limit exceeded" with Retry-After: wait. */
void gw_reply_too_many(h2o_req_t *req, gw_rctx_t *rc, unsigned wait);
/* An upstream failure (a PROTO_E* status) as HTTP: 504, 503 (+ Retry-After when overloaded),
 * 400, 500. */
void gw_reply_upstream_error(h2o_req_t *req, gw_rctx_t *rc, int status);
/* 204 to a CORS preflight (OPTIONS): Allow (allow), and the Access-Control-Allow-* headers when
 * the origin is allowed. */
void gw_reply_preflight(h2o_req_t *req, gw_rctx_t *rc, const char *allow);

/* Add X-Presence-Stale: true when the cache-node's reply flags say the data may be stale. */
void gw_reply_stale(h2o_req_t *req, uint32_t flags);
/* ACCESS_LOG: write a's line (gw_access.h) to stderr in one write(2), so threads never interleave;
 * a full or closed stderr loses the line, never the answer. Any thread. */
struct gw_access;
void gw_reply_access_write(const struct gw_access *a);
/* Add the CORS headers the request earned (for a response the caller sends itself, e.g. SSE). */
void gw_reply_cors(h2o_req_t *req, gw_rctx_t *rc);
/* Count the request as answered with status (for a response the caller sends itself). Once. */
void gw_reply_count(gw_rctx_t *rc, int status);

#endif
