/* gw_endpoints.h -- the handlers the route table (gw_routes.c) points at, one file per family of
 * endpoints. A handler runs after its route's guard admitted the request (gw_guard.h: rc->uid,
 * rc->claims, rc->ids are filled as the rule asked) and answers it -- at once, or later from an
 * upstream callback. Each runs on the request's event-loop thread.
 */
#ifndef PRESENCE_GW_ENDPOINTS_H
#define PRESENCE_GW_ENDPOINTS_H

#include "gw_ctx.h"

#include <h2o.h>

/* gw_single.c: one user's record. GET|HEAD|PUT|POST|DELETE /api/v2/presence/{id},
 * POST /api/v2/presence/{id}/heartbeat, DELETE /api/v2/presence/{id}/sessions/{sid} (end one
 * session: 404 when the user has no such session) and DELETE /api/v2/presence/{id}/preferred (end
 * the preferred status: 404 when the user has no record). */
void gw_single_on_req(h2o_req_t *req, gw_rctx_t *rc);
void gw_single_heartbeat(h2o_req_t *req, gw_rctx_t *rc);
void gw_single_end_session(h2o_req_t *req, gw_rctx_t *rc);
void gw_single_end_preferred(h2o_req_t *req, gw_rctx_t *rc);

/* gw_sessions.c: GET /api/v2/presence/{id}/sessions, the user's live sessions (self or admin). */
void gw_sessions_on_req(h2o_req_t *req, gw_rctx_t *rc);

/* gw_multi.c: several users' records. GET /api/v2/presence?users=a,b (rc->ids), and the read
 * every multi-user read shares (a batch read too): one MGET per owner node, answered when all
 * are in. ids stay the caller's until the call returns. */
void gw_multi_on_req(h2o_req_t *req, gw_rctx_t *rc);
void gw_multi_read(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n);

/* gw_batch.c: POST /api/v2/presence/batch -- a read, a write or bulk heartbeats, decided by the
 * body (the guard's rule is GW_AUTH_BODY / GW_LIMIT_BODY: this handler finishes it). */
void gw_batch_on_req(h2o_req_t *req, gw_rctx_t *rc);

/* gw_health.c: /health, /health/liveness, /health/readiness, /health/store, /health/cache,
 * /metrics and /api/v2/cache/metrics (every cache-node asked, health telling the truth). */
void gw_health_live(h2o_req_t *req, gw_rctx_t *rc);
void gw_health_ready(h2o_req_t *req, gw_rctx_t *rc);
void gw_health_store(h2o_req_t *req, gw_rctx_t *rc);
void gw_health_cache(h2o_req_t *req, gw_rctx_t *rc);
void gw_health_metrics(h2o_req_t *req, gw_rctx_t *rc);
void gw_health_cache_metrics(h2o_req_t *req, gw_rctx_t *rc);

/* gw_watch.c: GET /api/v2/presence/watch?users=a,b (rc->ids), an SSE stream, resuming after
 * Last-Event-ID or ?since= . */
void gw_watch_on_req(h2o_req_t *req, gw_rctx_t *rc);

#endif
