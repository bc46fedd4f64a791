/* gw_sessions.c -- GET /api/v2/presence/{id}/sessions (REALTIME.md): a user's live sessions.
 *
 * One SESSIONS command to the node that owns the user; the cache-node passes it to the store,
 * which answers from a read snapshot (sessions are not cached: they are read by their user or an
 * admin, rarely, and a connection's expiry moves with its gateway's lease). The guard admitted
 * only the user's own token or an admin's (GW_AUTH_SELF). A user without sessions -- or without a
 * record -- gets an empty list, not 404: "no device is connected" is an answer. Runs on the
 * request's thread.
 */
#include "gw_endpoints.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_upstream.h"
#include "util.h"

#include <string.h>

static void on_sessions_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    h2o_req_t *req = c->req;
    if (!req)
        return;
    gw_rctx_t *rc = c->arg;
    if (!m) {
        gw_reply_upstream_error(req, rc, status);
        return;
    }
    if (m->type != PROTO_SESSIONS_REPLY) {
        gw_reply_upstream_error(req, rc, m->status != PROTO_OK ? m->status : PROTO_EINTERNAL);
        return;
    }
    if (m->status != PROTO_OK) {
        gw_reply_upstream_error(req, rc, m->status);
        return;
    }
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    gw_json_sessions(b, rc->uid, rc->uid_len, m->sessions, m->n, util_now_us());
    gw_reply(req, rc, 200, b->p, b->len);
}

void gw_sessions_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    gw_ctx_t *t = rc->t;
    int node = gw_upstream_route(t->up, rc->uid, rc->uid_len);
    if (node >= 0) {
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_get(&t->pb, PROTO_SESSIONS, rid, rc->uid, rc->uid_len);
        if (gw_upstream_send(t->up, req, node, rid, PROTO_SESSIONS, &t->pb, on_sessions_reply, rc))
            return;
    }
    atomic_fetch_add(&gw_metrics.upstream_unavailable, 1);
    gw_reply_error(req, rc, 503, "cache tier unavailable");
}
