/* gw_batch.c -- POST /api/v2/presence/batch (API.md): a read (user_ids), a write (presences) or
 * bulk heartbeats (heartbeats), decided by the body.
 *
 * A read is a multi-user read (gw_multi.c). A write or heartbeat needs a token whose subject is
 * every entry's user (or presence:admin), is charged one write token per record, and goes to the
 * store as one command (all-or-nothing, one transaction) through the node that owns the first
 * record; after the acknowledgement every other owner node gets its records (APPLY) before the
 * client is answered, so the writer reads its own writes through any node. Runs on the request's
 * thread.
 */
#include "gw_endpoints.h"
#include "gw_config.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_upstream.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct op_bwrite {
    gw_rctx_t *rc;
    h2o_req_t *req;
    bool req_gone;
    int outstanding;
    gw_buf_t body;
} op_bwrite_t;

static void s_bwrite_finish(op_bwrite_t *op)
{
    if (!op->req_gone)
        gw_reply(op->req, op->rc, 200, op->body.p, op->body.len);
    gw_buf_free(&op->body);
    free(op);
}

static void on_apply_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    op_bwrite_t *op = c->arg;
    if (!c->req)
        op->req_gone = true;
    /* A failed APPLY only delays visibility at that node until the stream delivers: the write is
     * already durable, so the client still gets its 200. */
    if (--op->outstanding == 0)
        s_bwrite_finish(op);
}

static void on_bwrite_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    op_bwrite_t *op = c->arg;
    h2o_req_t *req = c->req;
    if (!req) {
        gw_buf_free(&op->body);
        free(op);
        return;
    }
    gw_rctx_t *rc = op->rc;
    if (!m || m->status != PROTO_OK) {
        gw_reply_upstream_error(req, rc, m ? m->status : status);
        gw_buf_free(&op->body);
        free(op);
        return;
    }
    gw_viewer_t v = gw_rctx_viewer(rc);
    gw_json_envelope_as(&op->body, m->recs, m->n, util_now_us(), &v);
    /* Read-your-writes: give every other owner node its records before answering. */
    gw_ctx_t *t = rc->t;
    proto_record_t *grp = xmalloc((m->n ? m->n : 1) * sizeof *grp);
    op->outstanding = 1;
    for (int node = 0; node < gw_cfg.nnodes; node++) {
        if (node == c->node)
            continue;
        uint32_t g = 0;
        for (uint32_t i = 0; i < m->n; i++)
            if (gw_upstream_route(t->up, m->recs[i].user_id, m->recs[i].uid_len) == node)
                grp[g++] = m->recs[i];
        if (!g)
            continue;
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_records_cmd(&t->pb, PROTO_APPLY, rid, grp, g);
        if (gw_upstream_send(t->up, req, node, rid, PROTO_APPLY, &t->pb, on_apply_reply, op))
            op->outstanding++;
    }
    free(grp);
    if (--op->outstanding == 0)
        s_bwrite_finish(op);
}

static void s_batch_write(h2o_req_t *req, gw_rctx_t *rc, uint8_t type, const proto_record_t *recs, uint32_t n)
{
    gw_ctx_t *t = rc->t;
    op_bwrite_t *op = xcalloc(1, sizeof *op);
    op->rc = rc;
    op->req = req;
    gw_buf_init(&op->body);
    /* One store command for the whole batch: all-or-nothing in one transaction. */
    int node = gw_upstream_route(t->up, recs[0].user_id, recs[0].uid_len);
    if (node >= 0) {
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_records_cmd_dl(&t->pb, type, rid, recs, n, gw_upstream_deadline());
        if (gw_upstream_send(t->up, req, node, rid, type, &t->pb, on_bwrite_reply, op))
            return;
    }
    gw_buf_free(&op->body);
    free(op);
    gw_reply_error(req, rc, 503, "cache tier unavailable");
}

/* A batch write or heartbeat needs a token: admin scope, or every entry is the caller's own id; it
 * is charged one write token per record. Stamps each record with this gateway's node id. Returns
 * 0, or -1 after answering. */
static int s_admit_write(h2o_req_t *req, gw_rctx_t *rc, proto_record_t *recs, uint32_t n)
{
    if (gw_guard_require_token(req, rc) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!gw_guard_may_write(rc, recs[i].user_id, recs[i].uid_len)) {
            gw_guard_forbidden(req, rc);
            return -1;
        }
        proto_record_set_node(&recs[i], gw_cfg.node_id, strlen(gw_cfg.node_id));
    }
    return gw_guard_limit(req, rc, true, (double)n);
}

void gw_batch_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    char errbuf[GW_ERR_LEN];
    uint32_t max = (uint32_t)gw_cfg.max_batch;
    proto_str_t *ids = h2o_mem_alloc_pool(&req->pool, max * sizeof *ids);
    char *store = h2o_mem_alloc_pool(&req->pool, req->entity.len + 1);
    proto_record_t *recs = xmalloc(max * sizeof *recs);
    uint32_t n = 0;
    int kind = gw_parse_batch_body(req->entity.base, req->entity.len, max, (uint32_t)gw_cfg.default_ttl, ids, store,
                                   recs, &n, errbuf, sizeof errbuf);
    if (kind < 0) {
        gw_reply_error(req, rc, 400, errbuf);
    } else if (kind == GW_BATCH_READ) {
        if (gw_guard_limit(req, rc, false, 1) == 0)
            gw_multi_read(req, rc, ids, n);
    } else if (s_admit_write(req, rc, recs, n) == 0) {
        s_batch_write(req, rc, kind == GW_BATCH_HEARTBEAT ? PROTO_TOUCH : PROTO_PUT, recs, n);
    }
    free(recs);
}
