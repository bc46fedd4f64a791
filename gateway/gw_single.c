/* gw_single.c -- one user's record: GET, PUT/POST, DELETE /api/v2/presence/{id},
 * POST /api/v2/presence/{id}/heartbeat (API.md), and the writes of REALTIME.md that end a session
 * (DELETE .../sessions/{sid}) or the preferred status (DELETE .../preferred).
 *
 * One command to the node that owns the user (rendezvous over the nodes that are up; none up: 503
 * at once). Writes carry the moment this gateway stops waiting, so a cache-node that gets to them
 * late drops them instead of undoing the client's next write (gw_upstream_deadline). The reply is
 * the record as stored, in the view of whoever asks (the user and admins see their own; everyone
 * else the public view: invisible mode); a read of an unknown user, or a delete of one, is 404, and
 * so is a write to a session the user does not have. The guard has checked the id, the token (SELF
 * for writes) and the limit. Runs on the request's thread.
 */
#include "gw_endpoints.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_upstream.h"
#include "util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct op_single {
    gw_rctx_t *rc;
    uint8_t type;
    bool session; /* a write about one session: NOTFOUND means that session is not there */
    bool clear;   /* DELETE .../preferred: NOTFOUND means there is no record */
    char uid[PROTO_USER_ID_MAX + 1];
    size_t uid_len;
} op_single_t;

static void on_single_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    h2o_req_t *req = c->req;
    if (!req)
        return;
    op_single_t *op = c->arg;
    gw_rctx_t *rc = op->rc;
    if (!m) {
        gw_reply_upstream_error(req, rc, status);
        return;
    }
    gw_reply_stale(req, m->flags);
    if (m->status == PROTO_NOTFOUND && (op->type == PROTO_GET || op->type == PROTO_DEL || op->clear)) {
        char msg[200];
        snprintf(msg, sizeof msg, "presence not found for user %s", op->uid);
        gw_reply_error(req, rc, 404, msg);
        return;
    }
    if (m->status == PROTO_NOTFOUND && op->session) {
        gw_reply_error(req, rc, 404, GW_ERR_SESSION_NOT_FOUND);
        return;
    }
    if (m->status != PROTO_OK) {
        gw_reply_upstream_error(req, rc, m->status);
        return;
    }
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    if (op->type == PROTO_DEL)
        gw_buf_adds(b, "{\"success\":true}");
    else {
        gw_viewer_t v = gw_rctx_viewer(rc);
        gw_json_envelope_as(b, m->recs, m->n, util_now_us(), &v);
    }
    gw_reply(req, rc, 200, b->p, b->len);
}

static void s_send_single(h2o_req_t *req, gw_rctx_t *rc, uint8_t type, const char *uid, size_t len,
                          const proto_record_t *rec)
{
    gw_ctx_t *t = rc->t;
    op_single_t *op = h2o_mem_alloc_pool(&req->pool, sizeof *op);
    op->rc = rc;
    op->type = type;
    op->session = rec && rec->sid_len;
    op->clear = rec && (rec->cflags & PROTO_CMD_F_CLEAR);
    memcpy(op->uid, uid, len);
    op->uid[len] = '\0';
    op->uid_len = len;
    int node = gw_upstream_route(t->up, uid, len);
    if (node >= 0) {
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        if (type == PROTO_GET)
            proto_enc_get(&t->pb, type, rid, uid, len);
        else if (type == PROTO_DEL)
            proto_enc_get_dl(&t->pb, type, rid, uid, len, gw_upstream_deadline());
        else
            proto_enc_records_cmd_dl(&t->pb, type, rid, rec, 1, gw_upstream_deadline());
        if (gw_upstream_send(t->up, req, node, rid, type, &t->pb, on_single_reply, op))
            return;
    }
    atomic_fetch_add(&gw_metrics.upstream_unavailable, 1);
    gw_reply_error(req, rc, 503, "cache tier unavailable");
}

void gw_single_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    if (rc->method == GW_M_GET || rc->method == GW_M_HEAD) {
        s_send_single(req, rc, PROTO_GET, rc->uid, rc->uid_len, NULL);
        return;
    }
    if (rc->method == GW_M_DELETE) {
        s_send_single(req, rc, PROTO_DEL, rc->uid, rc->uid_len, NULL);
        return;
    }
    proto_record_t rec;
    memset(&rec, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(&rec, rc->uid, rc->uid_len);
    proto_record_set_node(&rec, gw_cfg.node_id, strlen(gw_cfg.node_id));
    const char *err;
    if (gw_parse_set_body(req->entity.base, req->entity.len, (uint32_t)gw_cfg.default_ttl, &rec, &err) < 0) {
        gw_reply_error(req, rc, 400, err);
        return;
    }
    s_send_single(req, rc, PROTO_PUT, rc->uid, rc->uid_len, &rec);
}

void gw_single_heartbeat(h2o_req_t *req, gw_rctx_t *rc)
{
    proto_record_t rec;
    memset(&rec, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(&rec, rc->uid, rc->uid_len);
    proto_record_set_node(&rec, gw_cfg.node_id, strlen(gw_cfg.node_id));
    proto_record_set_msg(&rec, "", 0);
    const char *err;
    if (gw_parse_heartbeat(req->entity.base, req->entity.len, &rec, &err) < 0) {
        gw_reply_error(req, rc, 400, err);
        return;
    }
    s_send_single(req, rc, PROTO_TOUCH, rc->uid, rc->uid_len, &rec);
}

/* A PUT that ends one of the user's sessions or their preferred status: status offline under the
 * session, or F_CLEAR without one (REALTIME.md). */
static void s_end_write(h2o_req_t *req, gw_rctx_t *rc, const char *sid, size_t sid_len)
{
    proto_record_t rec;
    memset(&rec, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(&rec, rc->uid, rc->uid_len);
    proto_record_set_node(&rec, gw_cfg.node_id, strlen(gw_cfg.node_id));
    proto_record_set_msg(&rec, "", 0);
    rec.status = PRESENCE_OFFLINE;
    rec.ttl_s = (uint32_t)gw_cfg.default_ttl;
    rec.device[0] = '\0';
    if (sid) {
        memcpy(rec.session_id, sid, sid_len);
        rec.session_id[sid_len] = '\0';
        rec.sid_len = (uint8_t)sid_len;
    } else {
        rec.session_id[0] = '\0';
        rec.cflags = PROTO_CMD_F_CLEAR;
    }
    s_send_single(req, rc, PROTO_PUT, rc->uid, rc->uid_len, &rec);
}

void gw_single_end_session(h2o_req_t *req, gw_rctx_t *rc)
{
    if (!proto_valid_session_id(rc->seg_sid, rc->seg_sid_len)) {
        gw_reply_error(req, rc, 400, GW_ERR_SESSION);
        return;
    }
    s_end_write(req, rc, rc->seg_sid, rc->seg_sid_len);
}

void gw_single_end_preferred(h2o_req_t *req, gw_rctx_t *rc)
{
    s_end_write(req, rc, NULL, 0);
}
