/* gw_routes.c -- the gateway's route table (API.md), and matching a path against it.
 *
 * One row per path. Its columns:
 *   path     the pattern: literal segments, {id} (a user id: the guard decodes and validates it),
 *            {sid} (a session id, raw); a trailing [/...] is optional. Patterns without parameters
 *            are tried first, so a reserved word (batch, watch, connect) is never an {id}.
 *   methods  the methods the path answers (405 with Allow otherwise); OPTIONS always (preflight).
 *   auth     how the caller must authenticate (enum gw_auth_rule):
 *              NONE    no token looked at
 *              READ    public unless AUTH_READS=required (a bad token on a public read: anonymous)
 *              TOKEN   any valid token
 *              SELF    a token for {id}, or presence:admin (403 naming the rule otherwise)
 *              SELF_W  GET/HEAD as READ, other methods as SELF
 *              BODY    READ, then what the body needs (the handler finishes the rule)
 *   limit    the rate limit charged (enum gw_limit_class): NONE, READ, WRITE, METHOD (GET/HEAD
 *            read, else write), BODY (the handler charges one token per record)
 *   flags    BODY_CAP (413 above GW_BODY_MAX), USERS (users= parsed into rc->ids), QUERY_TOKEN
 *            (?access_token= accepted where a client cannot send headers)
 *   handler  the endpoint (gw_endpoints.h)
 *   label    the metric label (route="...")
 *
 *   path                                   methods                auth    limit   flags        label
 *   /api/v2/presence/{id}                  GET HEAD PUT POST DEL  SELF_W  METHOD  CAP          presence.user
 *   /api/v2/presence/{id}/heartbeat        POST                   SELF    WRITE   CAP          presence.heartbeat
 *   /api/v2/presence/{id}/sessions         GET HEAD               SELF    READ    CAP          presence.sessions
 *   /api/v2/presence/{id}/sessions/{sid}   DELETE                 SELF    WRITE   CAP          presence.session
 *   /api/v2/presence/{id}/preferred        DELETE                 SELF    WRITE   CAP          presence.preferred
 *   /api/v2/presence?users=a,b             GET HEAD               READ    READ    CAP USERS    presence.multi
 *   /api/v2/presence/batch                 POST                   BODY    BODY    CAP          presence.batch
 *   /api/v2/presence/watch?users=a,b       GET (SSE)              READ    READ    CAP USERS    presence.watch
 *   /health, /health/liveness              GET HEAD               NONE    NONE    -            health, health.liveness
 *   /health/readiness                      GET HEAD               NONE    NONE    -            health.readiness
 *   /health/store, /health/cache           GET HEAD               NONE    NONE    -            health.store, health.cache
 *   /metrics                               GET HEAD               NONE    NONE    -            metrics
 *   /api/v2/cache/metrics                  GET                    TOKEN   NONE    -            cache.metrics
 *
 * The rows' order is the metrics' order (row 0 counts what matched nothing). A new endpoint is a
 * row here and a handler; e.g. a WebSocket route whose token may come in the query is
 *   {"/api/v2/presence/connect", M(GET), {GW_AUTH_TOKEN, GW_LIMIT_READ, GW_RF_QUERY_TOKEN}, ...}
 * and the guard runs before its handler upgrades the connection.
 */
#include "gw_routes.h"
#include "gw_endpoints.h"
#include "gw_metrics.h"
#include "gw_path.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define M(x) GW_METHOD(GW_M_##x)
#define READS (M(GET) | M(HEAD))

static const gw_route_t s_routes[] = {
    {NULL, 0, {0}, NULL, "notfound"},
    {"/api/v2/presence/{id}", READS | M(PUT) | M(POST) | M(DELETE), {GW_AUTH_SELF_WRITES, GW_LIMIT_METHOD, GW_RF_BODY_CAP},
     gw_single_on_req, "presence.user"},
    {"/api/v2/presence/{id}/heartbeat", M(POST), {GW_AUTH_SELF, GW_LIMIT_WRITE, GW_RF_BODY_CAP}, gw_single_heartbeat,
     "presence.heartbeat"},
    {"/api/v2/presence/{id}/sessions", READS, {GW_AUTH_SELF, GW_LIMIT_READ, GW_RF_BODY_CAP}, gw_sessions_on_req,
     "presence.sessions"},
    {"/api/v2/presence/{id}/sessions/{sid}", M(DELETE), {GW_AUTH_SELF, GW_LIMIT_WRITE, GW_RF_BODY_CAP},
     gw_single_end_session, "presence.session"},
    {"/api/v2/presence/{id}/preferred", M(DELETE), {GW_AUTH_SELF, GW_LIMIT_WRITE, GW_RF_BODY_CAP},
     gw_single_end_preferred, "presence.preferred"},
    {"/api/v2/presence", READS, {GW_AUTH_READ, GW_LIMIT_READ, GW_RF_BODY_CAP | GW_RF_USERS}, gw_multi_on_req,
     "presence.multi"},
    {"/api/v2/presence/batch", M(POST), {GW_AUTH_BODY, GW_LIMIT_BODY, GW_RF_BODY_CAP}, gw_batch_on_req,
     "presence.batch"},
    {"/api/v2/presence/watch", M(GET), {GW_AUTH_READ, GW_LIMIT_READ, GW_RF_BODY_CAP | GW_RF_USERS}, gw_watch_on_req,
     "presence.watch"},
    {"/health", READS, {0}, gw_health_live, "health"},
    {"/health/liveness", READS, {0}, gw_health_live, "health.liveness"},
    {"/health/readiness", READS, {0}, gw_health_ready, "health.readiness"},
    {"/health/store", READS, {0}, gw_health_store, "health.store"},
    {"/health/cache", READS, {0}, gw_health_cache, "health.cache"},
    {"/metrics", READS, {0}, gw_health_metrics, "metrics"},
    {"/api/v2/cache/metrics", M(GET), {GW_AUTH_TOKEN, GW_LIMIT_NONE, 0}, gw_health_cache_metrics, "cache.metrics"},
};

_Static_assert(ARRAY_LEN(s_routes) <= GW_ROUTES_MAX, "GW_ROUTES_MAX (gw_metrics.h) counts every route");

int gw_routes_count(void)
{
    return (int)ARRAY_LEN(s_routes);
}

const gw_route_t *gw_routes_get(int i)
{
    return &s_routes[i];
}

const char *const *gw_routes_labels(int *n)
{
    static const char *labels[ARRAY_LEN(s_routes)];
    for (size_t i = 0; i < ARRAY_LEN(s_routes); i++)
        labels[i] = s_routes[i].label;
    *n = (int)ARRAY_LEN(s_routes);
    return labels;
}

/* ==== matching ================================================================================= */

int gw_routes_match(const char *path, size_t len, gw_rctx_t *rc)
{
    gw_path_params_t pp, first_pp = {0};
    int first = 0; /* the first row with parameters that matched: a literal match wins over it */
    for (size_t i = 1; i < ARRAY_LEN(s_routes); i++) {
        if (!gw_path_match(s_routes[i].path, path, len, &pp))
            continue;
        if (!gw_path_has_params(s_routes[i].path)) {
            first = (int)i;
            first_pp = pp;
            break;
        }
        if (!first) {
            first = (int)i;
            first_pp = pp;
        }
    }
    rc->seg_id = first_pp.id;
    rc->seg_id_len = first_pp.id_len;
    rc->seg_sid = first_pp.sid;
    rc->seg_sid_len = first_pp.sid_len;
    return first;
}

static const char *const s_method_names[GW_M_COUNT] = {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "OTHER"};

int gw_routes_method(h2o_iovec_t m)
{
    for (int i = 0; i < GW_M_OTHER; i++)
        if (h2o_memis(m.base, m.len, s_method_names[i], strlen(s_method_names[i])))
            return i;
    return GW_M_OTHER;
}

const char *gw_routes_allow(const gw_route_t *r, h2o_mem_pool_t *pool)
{
    char buf[96] = "";
    size_t n = 0;
    for (int i = 0; i < GW_M_OPTIONS; i++)
        if (r->methods & GW_METHOD(i))
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s, ", s_method_names[i]);
    snprintf(buf + n, sizeof buf - n, "OPTIONS");
    return h2o_strdup(pool, buf, SIZE_MAX).base;
}
