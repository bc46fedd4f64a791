/* gw_multi.c -- several users' records: GET /api/v2/presence?users=a,b (API.md), and the
 * multi-user read a batch read shares.
 *
 * The ids are grouped by owner node: one MGET per node, all in flight at once; the answer is
 * assembled as they come ({"success":true,"data":{"<id>":<record>,...}}: found users only, each in
 * the view of whoever asks -- gw_rctx_viewer) and
 * sent when the last is in. The first upstream failure answers the whole request; a node that
 * flags its data stale marks the answer stale. The operation lives on the heap, not in the
 * request's pool: a late answer after the client left still finds it. Runs on the request's thread.
 */
#include "gw_endpoints.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_upstream.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct op_multi {
    gw_rctx_t *rc;
    h2o_req_t *req;
    int outstanding;
    int error;        /* first upstream failure, PROTO_OK if none */
    uint32_t flags;
    bool req_gone;
    gw_buf_t data;    /* "id":{...} fragments */
    uint32_t found;
} op_multi_t;

static void s_multi_finish(op_multi_t *op)
{
    if (!op->req_gone) {
        h2o_req_t *req = op->req;
        gw_rctx_t *rc = op->rc;
        if (op->error != PROTO_OK) {
            gw_reply_upstream_error(req, rc, op->error);
        } else {
            gw_reply_stale(req, op->flags);
            gw_buf_t *b = &rc->t->out;
            gw_buf_reset(b);
            gw_buf_add(b, "{\"success\":true,\"data\":{", 24);
            gw_buf_add(b, op->data.p, op->data.len);
            gw_buf_add(b, "}}", 2);
            gw_reply(req, rc, 200, b->p, b->len);
        }
    }
    gw_buf_free(&op->data);
    free(op);
}

static void on_multi_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    op_multi_t *op = c->arg;
    if (!c->req)
        op->req_gone = true;
    if (!op->req_gone) {
        if (!m) {
            if (op->error == PROTO_OK)
                op->error = status;
        } else if (m->status != PROTO_OK && m->status != PROTO_NOTFOUND) {
            if (op->error == PROTO_OK)
                op->error = m->status;
        } else {
            op->flags |= m->flags;
            uint64_t now = util_now_us();
            gw_viewer_t v = gw_rctx_viewer(op->rc);
            for (uint32_t i = 0; i < m->n; i++) {
                if (op->found++)
                    gw_buf_add(&op->data, ",", 1);
                gw_buf_add_jstr(&op->data, m->recs[i].user_id, m->recs[i].uid_len);
                gw_buf_add(&op->data, ":", 1);
                gw_json_record_as(&op->data, &m->recs[i], now,
                                  gw_viewer_is_private(&v, m->recs[i].user_id, m->recs[i].uid_len));
            }
        }
    }
    if (--op->outstanding == 0)
        s_multi_finish(op);
}

void gw_multi_read(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n)
{
    gw_ctx_t *t = rc->t;
    /* Group ids by owner node: one MGET per node. */
    int *owner = xmalloc(n * sizeof *owner);
    proto_str_t *group = xmalloc(n * sizeof *group);
    for (uint32_t i = 0; i < n; i++)
        owner[i] = gw_upstream_route(t->up, ids[i].p, ids[i].len);
    op_multi_t *op = xcalloc(1, sizeof *op);
    op->rc = rc;
    op->req = req;
    op->error = PROTO_OK;
    gw_buf_init(&op->data);
    op->outstanding = 1;
    bool failed = false;
    for (int node = 0; node < gw_cfg.nnodes && !failed; node++) {
        uint32_t g = 0;
        for (uint32_t i = 0; i < n; i++)
            if (owner[i] == node)
                group[g++] = ids[i];
        if (!g)
            continue;
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_keys(&t->pb, rid, group, g);
        if (gw_upstream_send(t->up, req, node, rid, PROTO_MGET, &t->pb, on_multi_reply, op))
            op->outstanding++;
        else
            failed = true;
    }
    for (uint32_t i = 0; i < n; i++)
        if (owner[i] < 0)
            failed = true;
    free(owner);
    free(group);
    if (failed && op->error == PROTO_OK)
        op->error = PROTO_EUNAVAIL;
    if (--op->outstanding == 0)
        s_multi_finish(op);
}

void gw_multi_on_req(h2o_req_t *req, gw_rctx_t *rc)
{
    gw_multi_read(req, rc, rc->ids, rc->nids);
}
