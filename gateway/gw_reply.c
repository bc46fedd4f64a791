/* gw_reply.c -- how the gateway answers (see gw_reply.h).
 *
 * Every response, errors included, is JSON with Content-Type application/json (the SSE stream and
 * /metrics excepted), Cache-Control: no-store, and carries the CORS headers when the request's
 * Origin is allowed. A request is counted once, when it is answered (gw_metrics.c), and with
 * ACCESS_LOG logged then too (gw_access.h: one JSON line, never a token). Rendering uses
 * the thread's scratch buffer (h2o_send_inline copies it). Runs on the request's thread.
 */
#include "gw_reply.h"
#include "gw_access.h"
#include "gw_config.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_routes.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *s_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* ACCESS_LOG: the request's line (gw_access.h), one write(2) so threads never interleave. */
static void s_access_log(gw_rctx_t *rc, int status)
{
    h2o_req_t *req = rc->req;
    char client[GW_CLIENTADDR_LEN];
    gw_guard_client_addr(req, client);
    int n;
    const char *const *labels = gw_routes_labels(&n);
    gw_access_t a = {
        .ts_us = util_now_us(),
        .proc = "gw",
        .pid = (int)getpid(),
        .method = req->method.base,
        .method_len = req->method.len,
        .route = rc->route >= 0 && rc->route < n ? labels[rc->route] : "notfound",
        .target = req->path.base,
        .target_len = req->path.len,
        .code = status,
        .dur_us = util_mono_us() - rc->start_us,
        .bytes = req->res.content_length == SIZE_MAX ? 0 : req->res.content_length,
        .client = client,
        .sub = rc->authed ? rc->claims.sub : NULL,
        .sub_len = rc->authed ? rc->claims.sub_len : 0,
        .user_id = rc->uid_len ? rc->uid : NULL,
        .uid_len = rc->uid_len,
    };
    gw_reply_access_write(&a);
}

void gw_reply_access_write(const gw_access_t *a)
{
    gw_buf_t line;
    gw_buf_init(&line);
    gw_access_line(&line, a);
    ssize_t w = write(STDERR_FILENO, line.p, line.len);
    (void)w; /* a full or closed stderr loses the line, never the request */
    gw_buf_free(&line);
}

void gw_reply_count(gw_rctx_t *rc, int status)
{
    if (rc->counted)
        return;
    rc->counted = true;
    gw_metrics_request(rc->route, rc->method, status, rc->start_us);
    if (gw_cfg.access_log && rc->req)
        s_access_log(rc, status);
}

void gw_reply_cors(h2o_req_t *req, gw_rctx_t *rc)
{
    if (!rc->allow_origin)
        return;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, rc->allow_origin,
                   rc->allow_origin_len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    if (gw_cfg.cors.credentials)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-credentials"), 0, NULL,
                              H2O_STRLIT("true"));
}

void gw_reply_text(h2o_req_t *req, gw_rctx_t *rc, int status, const char *ctype, size_t ctlen, const char *body,
                   size_t len)
{
    req->res.status = status;
    req->res.reason = s_reason(status);
    if (ctype)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, ctlen);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    gw_reply_cors(req, rc);
    req->res.content_length = len;
    gw_reply_count(rc, status);
    h2o_send_inline(req, body, len);
}

void gw_reply(h2o_req_t *req, gw_rctx_t *rc, int status, const char *body, size_t len)
{
    if (status == 204)
        gw_reply_text(req, rc, status, NULL, 0, "", 0);
    else
        gw_reply_text(req, rc, status, H2O_STRLIT("application/json"), body, len);
}

void gw_reply_error(h2o_req_t *req, gw_rctx_t *rc, int status, const char *msg)
{
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    gw_json_error(b, msg);
    gw_reply(req, rc, status, b->p, b->len);
}

void gw_reply_unauthorized(h2o_req_t *req, gw_rctx_t *rc, const char *why)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                   H2O_STRLIT("Bearer realm=\"presence\", error=\"invalid_token\""));
    gw_reply_error(req, rc, 401, why);
}

void gw_reply_too_many(h2o_req_t *req, gw_rctx_t *rc, unsigned wait)
{
    char v[16];
    int n = snprintf(v, sizeof v, "%u", wait);
    h2o_iovec_t dup = h2o_strdup(&req->pool, v, (size_t)n);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, dup.base, dup.len);
    gw_reply_error(req, rc, 429, "rate limit exceeded");
}

/* Map an upstream failure to HTTP. */
void gw_reply_upstream_error(h2o_req_t *req, gw_rctx_t *rc, int status)
{
    switch (status) {
    case PROTO_ETIMEOUT:
        gw_reply_error(req, rc, 504, "upstream timed out");
        break;
    case PROTO_EOVERLOAD:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        gw_reply_error(req, rc, 503, "store overloaded, retry later");
        break;
    case PROTO_EBADREQ:
        gw_reply_error(req, rc, 400, "bad request");
        break;
    case PROTO_EINTERNAL:
        gw_reply_error(req, rc, 500, "storage error");
        break;
    default:
        gw_reply_error(req, rc, 503, "store unavailable");
        break;
    }
}

void gw_reply_stale(h2o_req_t *req, uint32_t flags)
{
    if (flags & PROTO_REPLY_F_STALE)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-presence-stale"), 0, NULL,
                              H2O_STRLIT("true"));
}

void gw_reply_preflight(h2o_req_t *req, gw_rctx_t *rc, const char *allow)
{
    if (rc->allow_origin) {
        h2o_iovec_t m = h2o_strdup(&req->pool, gw_cfg.cors.methods, SIZE_MAX);
        h2o_iovec_t hd = h2o_strdup(&req->pool, gw_cfg.cors.headers, SIZE_MAX);
        char age[24];
        int n = snprintf(age, sizeof age, "%ld", gw_cfg.cors.max_age);
        h2o_iovec_t a = h2o_strdup(&req->pool, age, (size_t)n);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"), 0, NULL, m.base,
                              m.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                              hd.base, hd.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-max-age"), 0, NULL, a.base,
                              a.len);
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    gw_reply(req, rc, 204, NULL, 0);
}
