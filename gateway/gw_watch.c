/* gw_watch.c -- Server-Sent Events watch streams (GET /api/v2/presence/watch).
 * Not enabled yet: the route answers 404 until the watch hub lands (issue: real-time presence). */
#include "gw.h"

int gw_watch_init(gw_thread_t *t, void *zctx, char *err)
{
    t->watch = NULL;
    return 0;
}

void gw_watch_fini(gw_thread_t *t)
{
}

void gw_watch_handle(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n, uint64_t since)
{
    gw_respond_json_error(req, rc, 404, "not found");
}
