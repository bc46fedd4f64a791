/* gw_connect.c -- GET /api/v2/presence/connect: the WebSocket endpoint's HTTP side (REALTIME.md,
 * "WebSocket: connect = online").
 *
 * Everything is checked before the upgrade, in this order, each refusal a JSON body naming the
 * rule: the Origin (403, gw_http.c's CORS check), the method (405), the token -- Authorization:
 * Bearer or ?access_token= -- (401, the guard; the query is never logged), the connect rate per
 * subject (429, the write limit), then here: HTTP/2 or not a WebSocket handshake (426 with
 * Upgrade: websocket and Sec-WebSocket-Version: 13), a bad handshake header or query parameter
 * (400), the gateway stopping, no lease held yet, or WS_MAX_CONNECTIONS reached (503 with
 * Retry-After). Then the session is opened in the store (gw_wssess_open: PUT with F_OPEN under the
 * gateway's lease); only once the store has it is the 101 written -- with the welcome frame in the
 * same write (h2o_http1_upgrade's inbufs): {type, session_id, user_id, record (the user's own
 * view), ping_interval_ms, grace_ms}. A store that refuses or does not answer is a 503 (400 / 500
 * for a refused or failed write), and the client never sees a 101 for a session that is not live.
 *
 * Why h2o_http1_upgrade and not h2o_upgrade_to_websocket: the socket becomes ours and the framing
 * is gw_wsframe.c's (no wslay context: DESIGN.md, per-connection memory).
 *
 * Runs on the request's thread; the connection stays on it.
 */
#include "gw_config.h"
#include "gw_endpoints.h"
#include "gw_lease.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_ws.h"
#include "gw_wsconn.h"
#include "gw_wsframe.h"
#include "gw_wsmsg.h"
#include "gw_wssess.h"
#include "log.h"
#include "util.h"

#include <h2o/http1.h>
#include <stdio.h>
#include <string.h>

#define SID_LEN 20 /* a server-assigned session id: 20 of [A-Za-z0-9_-], 120 random bits */

/* ==== refusals ================================================================================= */

static void s_refuse(h2o_req_t *req, gw_rctx_t *rc, int status, const char *msg)
{
    atomic_fetch_add(&gw_metrics.ws_refused, 1);
    gw_reply_error(req, rc, status, msg);
}

/* 426: not something we can upgrade. Upgrade: websocket is a connection-specific header, which an
 * HTTP/2 response must not carry. */
static void s_upgrade_required(h2o_req_t *req, gw_rctx_t *rc, const char *msg)
{
    if (req->version < 0x200)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-version"), 0, NULL,
                          H2O_STRLIT("13"));
    s_refuse(req, rc, 426, msg);
}

static void s_unavailable(h2o_req_t *req, gw_rctx_t *rc, const char *retry, const char *msg)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, retry, strlen(retry));
    s_refuse(req, rc, 503, msg);
}

/* ==== the request ============================================================================== */

/* A header's value; one that came several times is joined with ", " (pool memory). NULL when absent. */
static const char *s_header(h2o_req_t *req, const char *name, size_t nlen, size_t *len)
{
    const char *v = NULL;
    *len = 0;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, name, nlen, i)) != -1;) {
        h2o_iovec_t hv = req->headers.entries[i].value;
        if (!v) {
            v = hv.base;
            *len = hv.len;
            continue;
        }
        char *j = h2o_mem_alloc_pool(&req->pool, *len + 2 + hv.len);
        memcpy(j, v, *len);
        memcpy(j + *len, ", ", 2);
        memcpy(j + *len + 2, hv.base, hv.len);
        v = j;
        *len += 2 + hv.len;
    }
    return v;
}

/* A query parameter, percent-decoded once into out (cap bytes, NUL-terminated). Returns its length,
 * -1 when absent, -2 when malformed or longer than cap - 1. */
static ssize_t s_param(const gw_rctx_t *rc, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    if (!gw_query_param(rc->query, rc->qlen, name, &v, &vl))
        return -1;
    char tmp[3 * PROTO_USER_ID_MAX + 1];
    if (vl >= sizeof tmp)
        return -2;
    ssize_t n = gw_pct_decode(v, vl, tmp);
    if (n < 0 || (size_t)n >= cap)
        return -2;
    memcpy(out, tmp, (size_t)n);
    out[n] = '\0';
    return n;
}

static void s_new_sid(char out[SID_LEN + 1])
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t rnd[SID_LEN];
    if (util_random(rnd, sizeof rnd) < 0) {
        uint64_t x = util_mix64(util_now_us() ^ util_mono_us());
        for (size_t i = 0; i < sizeof rnd; i++, x = util_mix64(x + i))
            rnd[i] = (uint8_t)x;
    }
    for (size_t i = 0; i < SID_LEN; i++)
        out[i] = alphabet[rnd[i] & 63];
    out[SID_LEN] = '\0';
}

/* ==== the store's answer, the upgrade ========================================================== */

static void on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    gw_wsconn_start(data, sock, reqsize);
}

/* The 101 and the welcome frame, in one write. */
static void s_upgrade(h2o_req_t *req, gw_rctx_t *rc, gw_wsconn_t *c, const proto_record_t *rec)
{
    size_t klen;
    const char *key = s_header(req, H2O_STRLIT("sec-websocket-key"), &klen);
    char *accept = h2o_mem_alloc_pool(&req->pool, GW_WSFRAME_ACCEPT_LEN + 1);
    gw_wsframe_accept_key(key, klen, accept);

    gw_buf_t *b = &c->ws->scratch, rb;
    gw_buf_init(&rb);
    gw_json_record_as(&rb, rec, util_now_us(), true);
    gw_buf_reset(b);
    gw_buf_add(b, "..........", GW_WSFRAME_HDR_MAX); /* room for the frame header */
    gw_wsmsg_welcome(b, c->sid, c->sid_len, c->uid, c->uid_len, rb.p, rb.len, gw_cfg.ws_ping_ms, gw_cfg.ws_grace_ms);
    gw_buf_free(&rb);
    size_t flen;
    uint8_t *frame = gw_wsframe_wrap((uint8_t *)b->p, GW_WSFRAME_OP_TEXT, b->len - GW_WSFRAME_HDR_MAX, &flen);
    char *welcome = h2o_mem_alloc_pool(&req->pool, flen); /* lives until the write is done */
    memcpy(welcome, frame, flen);

    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, accept,
                          GW_WSFRAME_ACCEPT_LEN);
    gw_reply_count(rc, 101);
    atomic_fetch_add(&gw_metrics.ws_connects, 1);
    h2o_iovec_t w = h2o_iovec_init(welcome, flen);
    h2o_http1_upgrade(req, &w, 1, on_upgraded, c);
}

static void on_open(gw_wsconn_t *c, h2o_req_t *req, const proto_msg_t *m, int status)
{
    gw_rctx_t *rc = c->rc; /* valid only while req is */
    c->rc = NULL;
    if (!req) /* the client went away: its request is counted here (as 499, "other"), not by a reply */
        gw_metrics_request(c->req_route, GW_M_GET, 499, c->req_start_us);
    if (!m || m->status != PROTO_OK || m->n < 1) {
        int st = m ? m->status : status;
        if (st == PROTO_NOTFOUND) /* the store does not hold our lease: it lapsed, or is being replaced */
            gw_lease_suspect();
        if (req) {
            switch (st) {
            case PROTO_EBADREQ: s_refuse(req, rc, 400, "bad request: the store refused the session"); break;
            case PROTO_EINTERNAL: s_refuse(req, rc, 500, "storage error: the session could not be opened"); break;
            case PROTO_NOTFOUND:
                s_unavailable(req, rc, "1", "not ready: the gateway's lease is being renewed; retry");
                break;
            case PROTO_EOVERLOAD: s_unavailable(req, rc, "1", "store overloaded, retry later"); break;
            default: s_unavailable(req, rc, "1", "store unavailable: the session could not be opened"); break;
            }
        }
        gw_wsconn_grace(c); /* holds nothing: done */
        return;
    }
    if (c->resumed)
        gw_ws_resumed(c->ws, c);
    if (!req || c->ws->stopping) {
        /* The client went away (or we are stopping) while the store opened the session: it ends
         * after the grace, unless the client reconnects with its session_id. */
        if (req)
            s_unavailable(req, rc, "1", "gateway stopping: connect to another one");
        gw_wsconn_grace(c);
        return;
    }
    s_upgrade(req, rc, c, &m->recs[0]);
}

/* ==== the endpoint ============================================================================= */

void gw_connect_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    gw_ctx_t *t = rc->t;
    if (req->version >= 0x200) {
        s_upgrade_required(req, rc, "upgrade required: WebSocket is offered over HTTP/1.1 only (RFC 6455)");
        return;
    }
    gw_wsframe_handshake_t hs = {.method = req->method.base, .method_len = req->method.len};
    hs.upgrade = s_header(req, H2O_STRLIT("upgrade"), &hs.upgrade_len);
    if (!hs.upgrade && req->upgrade.base) { /* h2o keeps a valid Upgrade apart from the headers */
        hs.upgrade = req->upgrade.base;
        hs.upgrade_len = req->upgrade.len;
    }
    hs.connection = s_header(req, H2O_STRLIT("connection"), &hs.connection_len);
    if (!hs.connection && req->upgrade.base) { /* ... and then Connection held the token upgrade */
        hs.connection = "upgrade";
        hs.connection_len = 7;
    }
    hs.version = s_header(req, H2O_STRLIT("sec-websocket-version"), &hs.version_len);
    hs.key = s_header(req, H2O_STRLIT("sec-websocket-key"), &hs.key_len);
    int hr = gw_wsframe_handshake_check(&hs);
    if (hr != GW_WSFRAME_HS_OK) {
        int st = gw_wsframe_handshake_status(hr);
        if (st == 426)
            s_upgrade_required(req, rc, gw_wsframe_strerror(hr));
        else
            s_refuse(req, rc, st, gw_wsframe_strerror(hr));
        return;
    }

    char sbuf[16], dev[PROTO_DEVICE_MAX + 1] = "", sid[PROTO_SESSION_ID_MAX + 1];
    int status = PRESENCE_ONLINE;
    ssize_t n = s_param(rc, "status", sbuf, sizeof sbuf);
    if (n != -1 && (n < 0 || (status = proto_presence_parse(sbuf, (size_t)n)) < 0 || status == PRESENCE_OFFLINE)) {
        s_refuse(req, rc, 400, "invalid status: must be one of online, away, busy");
        return;
    }
    ssize_t dlen = s_param(rc, "device", dev, sizeof dev);
    if (dlen == -2 || (dlen > 0 && !proto_valid_device(dev, (size_t)dlen))) {
        s_refuse(req, rc, 400, GW_ERR_DEVICE);
        return;
    }
    ssize_t slen = s_param(rc, "session_id", sid, sizeof sid);
    if (slen == -2 || (slen >= 0 && !proto_valid_session_id(sid, (size_t)slen))) {
        s_refuse(req, rc, 400, GW_ERR_SESSION);
        return;
    }
    bool resume = slen > 0;
    if (!resume) {
        s_new_sid(sid);
        slen = SID_LEN;
    }

    if (!gw_valid_user_id(rc->claims.sub, rc->claims.sub_len)) {
        s_refuse(req, rc, 403, "forbidden: the token's subject is not a user id (" GW_USER_ID_RULE ")");
        return;
    }
    gw_ws_t *ws = t->ws;
    if (!ws || ws->stopping) {
        s_unavailable(req, rc, "1", "gateway stopping: connect to another one");
        return;
    }
    if (!gw_lease_id()) {
        s_unavailable(req, rc, "1", "not ready: the gateway holds no lease in the store yet (is the store up?)");
        return;
    }
    if (!gw_ws_slot_take()) {
        char msg[128];
        snprintf(msg, sizeof msg, "too many WebSocket connections: this gateway holds %llu (WS_MAX_CONNECTIONS)",
                 (unsigned long long)gw_ws_max_connections());
        s_unavailable(req, rc, "5", msg);
        return;
    }
    gw_wsconn_t *c = gw_wsconn_new(ws, rc->claims.sub, rc->claims.sub_len, sid, (size_t)slen, dev,
                                   dlen > 0 ? (size_t)dlen : 0, status, rc->claims.admin);
    c->slot = true;
    c->resumed = resume;
    c->rc = rc;
    c->req_route = rc->route;
    c->req_start_us = rc->start_us;
    if (!gw_wssess_open(c, req, on_open)) {
        c->rc = NULL;
        s_unavailable(req, rc, "1", "store unavailable: no cache-node is up");
        gw_wsconn_grace(c);
    }
    /* else: on_open answers (it may already have: c is not touched here) */
}
