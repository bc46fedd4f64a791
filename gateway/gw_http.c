/* gw_http.c -- the HTTP API: routing, auth, limits and the presence handlers (API.md).
 *
 * Route table (method set, auth, metric label):
 *
 *   path                                 methods                      auth        label
 *   /api/v2/presence/{user_id}           GET | PUT POST DELETE        reads* | write  presence.user
 *   /api/v2/presence/{user_id}/heartbeat POST                         write       presence.heartbeat
 *   /api/v2/presence?users=a,b           GET                          reads*      presence.multi
 *   /api/v2/presence/batch               POST                         reads* or write presence.batch
 *   /api/v2/presence/watch?users=a,b     GET (SSE)                    reads*      presence.watch
 *   /health, /health/liveness            GET HEAD                     none        health, health.liveness
 *   /health/readiness                    GET HEAD                     none        health.readiness
 *   /health/store, /health/cache         GET HEAD                     none        health.store, health.cache
 *   /metrics                             GET HEAD                     none        metrics
 *   /api/v2/cache/metrics                GET                          token       cache.metrics
 *   (reads* = public unless AUTH_READS=required; OPTIONS is accepted everywhere for CORS)
 *
 * `batch` and `watch` are therefore reserved words, not user ids. Ids in paths are
 * percent-decoded exactly once, then validated. Every response, errors included, is JSON with
 * Content-Type application/json (the SSE stream excepted), and carries the CORS headers when the
 * request's Origin is allowed.
 */
#include "gw.h"
#include "gw_reply.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define M(x) (1u << (x))

static const struct gw_route_def {
    const char *label;
    unsigned methods;
    const char *allow;
} s_routes[GW_R_COUNT] = {
    [GW_R_NOTFOUND] = {"notfound", 0, ""},
    [GW_R_PRESENCE_USER] = {"presence.user", M(GW_M_GET) | M(GW_M_HEAD) | M(GW_M_PUT) | M(GW_M_POST) | M(GW_M_DELETE),
                            "GET, HEAD, PUT, POST, DELETE, OPTIONS"},
    [GW_R_PRESENCE_HEARTBEAT] = {"presence.heartbeat", M(GW_M_POST), "POST, OPTIONS"},
    [GW_R_PRESENCE_MULTI] = {"presence.multi", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_PRESENCE_BATCH] = {"presence.batch", M(GW_M_POST), "POST, OPTIONS"},
    [GW_R_PRESENCE_WATCH] = {"presence.watch", M(GW_M_GET), "GET, OPTIONS"},
    [GW_R_HEALTH] = {"health", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_LIVENESS] = {"health.liveness", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_READINESS] = {"health.readiness", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_HEALTH_STORE] = {"health.store", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_HEALTH_CACHE] = {"health.cache", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_METRICS] = {"metrics", M(GW_M_GET) | M(GW_M_HEAD), "GET, HEAD, OPTIONS"},
    [GW_R_CACHE_METRICS] = {"cache.metrics", M(GW_M_GET), "GET, OPTIONS"},
};

const char *const *gw_http_route_labels(int *n)
{
    static const char *labels[GW_R_COUNT];
    for (int r = 0; r < GW_R_COUNT; r++)
        labels[r] = s_routes[r].label;
    *n = GW_R_COUNT;
    return labels;
}

/* ==== request helpers ======================================================================== */

static ssize_t s_header(h2o_req_t *req, const char *name, size_t len, const char **v, size_t *vlen)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);
    if (i < 0)
        return -1;
    *v = req->headers.entries[i].value.base;
    *vlen = req->headers.entries[i].value.len;
    return i;
}

/* The rate-limit key of an anonymous client: its address (or X-Forwarded-For's first hop when
 * TRUST_PROXY is on). */
static size_t s_client_key(h2o_req_t *req, char *out, size_t outlen)
{
    if (gw_cfg.trust_proxy) {
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, -1);
        if (i >= 0) {
            h2o_iovec_t v = req->headers.entries[i].value;
            size_t n = 0;
            while (n < v.len && v.base[n] != ',' && n < outlen - 4)
                n++;
            memcpy(out, "ip:", 3);
            memcpy(out + 3, v.base, n);
            return n + 3;
        }
    }
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    memcpy(out, "ip:", 3);
    if (sl && ss.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out + 3, (socklen_t)(outlen - 3)))
        return strlen(out);
    if (sl && ss.ss_family == AF_INET6 &&
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out + 3, (socklen_t)(outlen - 3)))
        return strlen(out);
    memcpy(out + 3, "?", 2);
    return 4;
}

/* Authenticate if a token is needed (or present). Returns 0, or -1 after answering 401. */
static int s_auth(h2o_req_t *req, gw_rctx_t *rc, bool required, gw_claims_t *claims, bool *have)
{
    const char *v = NULL;
    size_t vlen = 0;
    *have = false;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        v = req->headers.entries[i].value.base;
        vlen = req->headers.entries[i].value.len;
    }
    if (!v && !required)
        return 0;
    const char *err;
    if (gw_auth_verify_cached(rc->t->authcache, &gw_cfg.auth, v, vlen, (int64_t)(util_now_us() / 1000000u), claims,
                              &err) < 0) {
        /* A route that does not need a token ignores a bad one (docs/API.md: 401 on reads only
         * with AUTH_READS=required); the caller is anonymous. */
        if (!required)
            return 0;
        gw_reply_unauthorized(req, rc, err);
        return -1;
    }
    *have = true;
    return 0;
}

static bool s_may_write(const gw_claims_t *c, const char *uid, size_t len)
{
    return c->admin || (c->sub_len == len && memcmp(c->sub, uid, len) == 0);
}

/* 403 naming the rule: a token writes its own subject's record, an admin token anyone's. */
static void s_forbidden(h2o_req_t *req, gw_rctx_t *rc, const gw_claims_t *c)
{
    char msg[GW_ERR_LEN];
    snprintf(msg, sizeof msg, "forbidden: token for '%.*s' may write only '%.*s' (scope presence:admin writes anyone)",
             (int)MIN(c->sub_len, 128), c->sub, (int)MIN(c->sub_len, 128), c->sub);
    gw_reply_error(req, rc, 403, msg);
}

/* Rate limit: writes per token subject (a presence:admin token -- a backend writing for many
 * users -- has its own limit, RATE_LIMIT_ADMIN_WRITES, off by default); reads per subject when
 * authenticated, else per client. `cost` is the number of records written; a batch larger than
 * the burst is charged the burst, so a legal batch is delayed, never refused forever. */
static int s_limit(h2o_req_t *req, gw_rctx_t *rc, bool write, const gw_claims_t *c, bool have, double cost)
{
    gw_ratelimit_t *rl = !write ? gw_cfg.rl_reads : have && c->admin ? gw_cfg.rl_admin : gw_cfg.rl_writes;
    if (!rl)
        return 0;
    double burst = gw_ratelimit_burst(rl);
    if (cost > burst)
        cost = burst;
    char key[300];
    size_t klen;
    if (have) {
        klen = (size_t)snprintf(key, sizeof key, "sub:%s", c->sub);
    } else {
        klen = s_client_key(req, key, sizeof key);
    }
    unsigned wait = gw_ratelimit_take(rl, key, klen, cost, util_mono_us());
    if (wait) {
        gw_reply_too_many(req, rc, wait);
        return -1;
    }
    return 0;
}

/* ==== single-key operations ================================================================== */

/* A write carries the moment this gateway stops waiting for it (wall clock: the cache-node may be
 * another host). A cache-node that only gets to it later -- it was stopped or starved, and the
 * client already has its 504 -- drops it rather than let it land after the client's next write
 * (which went to another node once this one was marked down) and undo that acknowledged write. */
static uint64_t s_write_deadline(void)
{
    return util_now_us() + gw_cfg.request_timeout_ms * 1000u;
}

typedef struct op_single {
    gw_rctx_t *rc;
    uint8_t type;
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
    if (m->status == PROTO_NOTFOUND && (op->type == PROTO_GET || op->type == PROTO_DEL)) {
        char msg[200];
        snprintf(msg, sizeof msg, "presence not found for user %s", op->uid);
        gw_reply_error(req, rc, 404, msg);
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
    else
        gw_json_envelope(b, m->recs, m->n, util_now_us());
    gw_reply(req, rc, 200, b->p, b->len);
}

static void s_send_single(h2o_req_t *req, gw_rctx_t *rc, uint8_t type, const char *uid, size_t len,
                          const proto_record_t *rec)
{
    gw_ctx_t *t = rc->t;
    op_single_t *op = h2o_mem_alloc_pool(&req->pool, sizeof *op);
    op->rc = rc;
    op->type = type;
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
            proto_enc_get_dl(&t->pb, type, rid, uid, len, s_write_deadline());
        else
            proto_enc_records_cmd_dl(&t->pb, type, rid, rec, 1, s_write_deadline());
        if (gw_upstream_send(t->up, req, node, rid, type, &t->pb, on_single_reply, op))
            return;
    }
    atomic_fetch_add(&gw_metrics.upstream_unavailable, 1);
    gw_reply_error(req, rc, 503, "cache tier unavailable");
}

/* ==== multi-key reads ======================================================================== */

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
            for (uint32_t i = 0; i < m->n; i++) {
                if (op->found++)
                    gw_buf_add(&op->data, ",", 1);
                gw_buf_add_jstr(&op->data, m->recs[i].user_id, m->recs[i].uid_len);
                gw_buf_add(&op->data, ":", 1);
                gw_json_record(&op->data, &m->recs[i], now);
            }
        }
    }
    if (--op->outstanding == 0)
        s_multi_finish(op);
}

static void s_multi_read(h2o_req_t *req, gw_rctx_t *rc, const proto_str_t *ids, uint32_t n)
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

/* ==== batch writes =========================================================================== */

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
    gw_json_envelope(&op->body, m->recs, m->n, util_now_us());
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
        proto_enc_records_cmd_dl(&t->pb, type, rid, recs, n, s_write_deadline());
        if (gw_upstream_send(t->up, req, node, rid, type, &t->pb, on_bwrite_reply, op))
            return;
    }
    gw_buf_free(&op->body);
    free(op);
    gw_reply_error(req, rc, 503, "cache tier unavailable");
}

/* ==== fan-out to every node (health, metrics) ================================================ */

typedef struct node_answer {
    bool ok;
    uint64_t rtt_us;
    stats_list_t stats;
} node_answer_t;

typedef struct op_all op_all_t;
typedef void (*all_done_cb)(op_all_t *op, h2o_req_t *req);

struct op_all {
    gw_rctx_t *rc;
    h2o_req_t *req;
    bool req_gone;
    int outstanding;
    all_done_cb done;
    node_answer_t ans[GW_MAX_NODES];
};

static void s_all_finish(op_all_t *op)
{
    if (!op->req_gone)
        op->done(op, op->req);
    for (int i = 0; i < gw_cfg.nnodes; i++)
        stats_list_fini(&op->ans[i].stats);
    free(op);
}

static void on_all_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    op_all_t *op = c->arg;
    if (!c->req)
        op->req_gone = true;
    if (m && m->status == PROTO_OK && (m->type == PROTO_PONG || m->type == PROTO_STATS_REPLY)) {
        node_answer_t *a = &op->ans[c->node];
        a->ok = true;
        a->rtt_us = util_mono_us() - c->start_us;
        for (uint32_t i = 0; i < m->n; i++) {
            char name[PROTO_STAT_NAME_MAX + 1];
            memcpy(name, m->stats[i].name.p, m->stats[i].name.len);
            name[m->stats[i].name.len] = '\0';
            stats_add(&a->stats, name, m->stats[i].value);
        }
    }
    if (--op->outstanding == 0)
        s_all_finish(op);
}

static void s_ask_all(h2o_req_t *req, gw_rctx_t *rc, uint8_t type, all_done_cb done)
{
    gw_ctx_t *t = rc->t;
    op_all_t *op = xcalloc(1, sizeof *op);
    op->rc = rc;
    op->req = req;
    op->done = done;
    op->outstanding = 1;
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        stats_list_init(&op->ans[i].stats);
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_simple(&t->pb, type, rid);
        /* Asked even when marked down: health must tell the truth, not the routing table's guess. */
        if (gw_upstream_send(t->up, req, i, rid, type == PROTO_PING ? PROTO_PING : type, &t->pb, on_all_reply, op))
            op->outstanding++;
    }
    if (--op->outstanding == 0)
        s_all_finish(op);
}

static uint64_t s_stat(const node_answer_t *a, const char *prefix)
{
    /* Find the first stat whose name starts with prefix (labels follow). */
    size_t pl = strlen(prefix);
    for (uint32_t i = 0; i < a->stats.n; i++)
        if (a->stats.v[i].name.len >= pl && memcmp(a->stats.v[i].name.p, prefix, pl) == 0 &&
            (a->stats.v[i].name.len == pl || a->stats.v[i].name.p[pl] == '{'))
            return a->stats.v[i].value;
    return 0;
}

static void s_ts(gw_buf_t *b)
{
    char ts[UTIL_TIME_LEN];
    util_fmt_time(util_now_us(), ts);
    gw_buf_addf(b, "\"ts\":\"%s\"", ts);
}

static void on_readiness(op_all_t *op, h2o_req_t *req)
{
    gw_buf_t *b = &op->rc->t->out;
    gw_buf_reset(b);
    int answered = 0, store_ok = 0;
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        if (!op->ans[i].ok)
            continue;
        answered++;
        if (s_stat(&op->ans[i], "cache_store_up"))
            store_ok++;
    }
    if (answered && store_ok) {
        gw_buf_adds(b, "{\"status\":\"ready\",");
        s_ts(b);
        gw_buf_addf(b, ",\"node_id\":\"%s\",\"cache_nodes\":%d,\"cache_nodes_ready\":%d}", gw_cfg.node_id,
                    gw_upstream_configured(), store_ok);
        gw_reply(req, op->rc, 200, b->p, b->len);
    } else {
        gw_buf_adds(b, "{\"status\":\"unready\",\"error\":");
        const char *e = answered ? (strcmp(gw_cfg.node_type, "leaf") == 0 ? "link to the center unreachable"
                                                                           : "store unreachable")
                                 : "no cache-node answered";
        gw_buf_add_jstr(b, e, strlen(e));
        gw_buf_add(b, ",", 1);
        s_ts(b);
        gw_buf_add(b, "}", 1);
        gw_reply(req, op->rc, 503, b->p, b->len);
    }
}

static const char *s_sync_state_name(uint64_t s)
{
    static const char *const names[] = {"catching_up", "live", "silent", "upstream_down"};
    return s < 4 ? names[s] : "unknown";
}

static void on_health_store(op_all_t *op, h2o_req_t *req)
{
    gw_buf_t *b = &op->rc->t->out;
    gw_buf_reset(b);
    /* The store as seen through the freshest cache-node that answered. */
    int best = -1;
    for (int i = 0; i < gw_cfg.nnodes; i++)
        if (op->ans[i].ok && (best < 0 || s_stat(&op->ans[i], "cache_store_up") > s_stat(&op->ans[best], "cache_store_up")))
            best = i;
    bool up = best >= 0 && s_stat(&op->ans[best], "cache_store_up");
    gw_buf_addf(b, "{\"status\":\"%s\",\"reachable\":%s,\"writable\":%s,\"node_type\":\"%s\",", up ? "up" : "down",
                up ? "true" : "false", up ? "true" : "false", gw_cfg.node_type);
    if (best >= 0) {
        const node_answer_t *a = &op->ans[best];
        gw_buf_addf(b,
                    "\"latency_ms\":%.3f,\"sequence\":%llu,\"applied_sequence\":%llu,\"lag_seconds\":%.3f,"
                    "\"sync_state\":\"%s\",\"link_up\":%s,\"link_lag_seconds\":%.3f,",
                    (double)s_stat(a, "cache_store_rtt_seconds") / 1000.0,
                    (unsigned long long)s_stat(a, "cache_store_sequence"), (unsigned long long)s_stat(a, "sync_sequence"),
                    (double)s_stat(a, "sync_lag_seconds") / 1e6, s_sync_state_name(s_stat(a, "cache_sync_state")),
                    s_stat(a, "cache_link_up") ? "true" : "false", (double)s_stat(a, "cache_link_lag_seconds") / 1e6);
    }
    s_ts(b);
    gw_buf_add(b, "}", 1);
    gw_reply(req, op->rc, up ? 200 : 503, b->p, b->len);
}

static void on_health_cache(op_all_t *op, h2o_req_t *req)
{
    gw_buf_t *b = &op->rc->t->out;
    gw_buf_reset(b);
    const gw_ctx_t *t = op->rc->t;
    int up = 0, listed = 0;
    for (int i = 0; i < gw_cfg.nnodes; i++)
        up += op->ans[i].ok;
    gw_buf_addf(b, "{\"status\":\"%s\",\"nodes_up\":%d,\"nodes\":[",
                up && up >= gw_upstream_configured() ? "ok" : up ? "degraded" : "down", up);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        const node_answer_t *a = &op->ans[i];
        const char *ep = gw_upstream_endpoint(t->up, i);
        if (!ep[0])
            continue; /* a vacant slot (CACHE_DNS) */
        if (listed++)
            gw_buf_add(b, ",", 1);
        gw_buf_add(b, "{\"endpoint\":", 12);
        gw_buf_add_jstr(b, ep, strlen(ep));
        if (a->ok)
            gw_buf_addf(b,
                        ",\"reachable\":true,\"latency_ms\":%.3f,\"items\":%llu,\"sync_state\":\"%s\","
                        "\"sequence\":%llu,\"lag_seconds\":%.3f,\"store_reachable\":%s}",
                        (double)a->rtt_us / 1000.0, (unsigned long long)s_stat(a, "cache_items"),
                        s_sync_state_name(s_stat(a, "cache_sync_state")), (unsigned long long)s_stat(a, "sync_sequence"),
                        (double)s_stat(a, "sync_lag_seconds") / 1e6, s_stat(a, "cache_store_up") ? "true" : "false");
        else
            gw_buf_adds(b, ",\"reachable\":false}");
    }
    gw_buf_add(b, "],", 2);
    s_ts(b);
    gw_buf_add(b, "}", 1);
    gw_reply(req, op->rc, up ? 200 : 503, b->p, b->len);
}

static void on_metrics(op_all_t *op, h2o_req_t *req)
{
    const stats_list_t *lists[GW_MAX_NODES];
    for (int i = 0; i < gw_cfg.nnodes; i++)
        lists[i] = &op->ans[i].stats;
    gw_buf_t b;
    gw_buf_init(&b);
    gw_metrics_render(&b, lists, gw_cfg.nnodes, gw_upstream_configured());
    gw_reply_text(req, op->rc, 200, H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"), b.p, b.len);
    gw_buf_free(&b);
}

static void on_cache_metrics(op_all_t *op, h2o_req_t *req)
{
    static const char *const keys[] = {"hits", "misses", "keys_added", "keys_evicted", "cost_added", "cost_evicted"};
    static const char *const names[] = {"cache_hits_total",       "cache_misses_total",       "cache_keys_added_total",
                                        "cache_evictions_total", "cache_cost_added_total", "cache_cost_evicted_total"};
    uint64_t sum[6] = {0};
    for (int i = 0; i < gw_cfg.nnodes; i++)
        for (int k = 0; k < 6; k++)
            sum[k] += s_stat(&op->ans[i], names[k]);
    gw_buf_t *b = &op->rc->t->out;
    gw_buf_reset(b);
    gw_buf_add(b, "{", 1);
    for (int k = 0; k < 6; k++)
        gw_buf_addf(b, "\"%s\":%llu,", keys[k], (unsigned long long)sum[k]);
    double ratio = sum[0] + sum[1] ? (double)sum[0] / (double)(sum[0] + sum[1]) : 0.0;
    gw_buf_addf(b, "\"hit_ratio\":%.6f,\"nodes\":{", ratio);
    bool first = true;
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        if (!op->ans[i].ok)
            continue;
        if (!first)
            gw_buf_add(b, ",", 1);
        first = false;
        const char *ep = gw_upstream_endpoint(op->rc->t->up, i);
        gw_buf_add_jstr(b, ep, strlen(ep));
        gw_buf_add(b, ":{", 2);
        uint64_t h = s_stat(&op->ans[i], names[0]), mi = s_stat(&op->ans[i], names[1]);
        for (int k = 0; k < 6; k++)
            gw_buf_addf(b, "\"%s\":%llu,", keys[k], (unsigned long long)s_stat(&op->ans[i], names[k]));
        gw_buf_addf(b, "\"items\":%llu,\"cost_bytes\":%llu,\"hit_ratio\":%.6f}",
                    (unsigned long long)s_stat(&op->ans[i], "cache_items"),
                    (unsigned long long)s_stat(&op->ans[i], "cache_cost_bytes"),
                    h + mi ? (double)h / (double)(h + mi) : 0.0);
    }
    gw_buf_add(b, "}}", 2);
    gw_reply(req, op->rc, 200, b->p, b->len);
}

/* ==== routing ================================================================================ */

static int s_method(h2o_iovec_t m)
{
    static const struct {
        const char *s;
        int m;
    } tab[] = {{"GET", GW_M_GET}, {"HEAD", GW_M_HEAD}, {"PUT", GW_M_PUT}, {"POST", GW_M_POST},
               {"DELETE", GW_M_DELETE}, {"OPTIONS", GW_M_OPTIONS}};
    for (size_t i = 0; i < ARRAY_LEN(tab); i++)
        if (h2o_memis(m.base, m.len, tab[i].s, strlen(tab[i].s)))
            return tab[i].m;
    return GW_M_OTHER;
}

#define PREFIX "/api/v2/presence"

/* Match the path (without query). For the user routes seg and seglen give the raw {user_id}. */
static int s_route(const char *p, size_t len, const char **seg, size_t *seglen)
{
    static const struct {
        const char *path;
        int route;
    } fixed[] = {{"/health", GW_R_HEALTH},
                 {"/health/liveness", GW_R_LIVENESS},
                 {"/health/readiness", GW_R_READINESS},
                 {"/health/store", GW_R_HEALTH_STORE},
                 {"/health/cache", GW_R_HEALTH_CACHE},
                 {"/metrics", GW_R_METRICS},
                 {"/api/v2/cache/metrics", GW_R_CACHE_METRICS},
                 {PREFIX, GW_R_PRESENCE_MULTI},
                 {PREFIX "/batch", GW_R_PRESENCE_BATCH},
                 {PREFIX "/watch", GW_R_PRESENCE_WATCH}};
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        if (h2o_memis(p, len, fixed[i].path, strlen(fixed[i].path)))
            return fixed[i].route;
    size_t pl = sizeof(PREFIX "/") - 1;
    if (len <= pl || memcmp(p, PREFIX "/", pl) != 0)
        return GW_R_NOTFOUND;
    const char *s = p + pl;
    size_t rest = len - pl;
    const char *slash = memchr(s, '/', rest);
    if (!slash) {
        *seg = s;
        *seglen = rest;
        return GW_R_PRESENCE_USER;
    }
    if (slash == s)
        return GW_R_NOTFOUND;
    if ((size_t)(s + rest - slash) == sizeof("/heartbeat") - 1 && memcmp(slash, "/heartbeat", 10) == 0) {
        *seg = s;
        *seglen = (size_t)(slash - s);
        return GW_R_PRESENCE_HEARTBEAT;
    }
    return GW_R_NOTFOUND;
}

static void s_liveness(h2o_req_t *req, gw_rctx_t *rc)
{
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    gw_buf_adds(b, "{\"status\":\"ok\",");
    s_ts(b);
    gw_buf_add(b, "}", 1);
    gw_reply(req, rc, 200, b->p, b->len);
}

int gw_http_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    gw_ctx_t *t = gw_ctx_of(req);
    gw_rctx_t *rc = h2o_mem_alloc_pool(&req->pool, sizeof *rc);
    memset(rc, 0, sizeof *rc);
    rc->t = t;
    rc->start_us = util_mono_us();
    rc->method = s_method(req->method);
    gw_metrics_begin();

    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *query = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "";
    size_t qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
    const char *seg = NULL;
    size_t seglen = 0;
    rc->route = s_route(req->path.base, plen, &seg, &seglen);

    /* CORS first: a forbidden origin gets 403 on every route. */
    const char *origin = NULL;
    size_t olen = 0;
    s_header(req, H2O_STRLIT("origin"), &origin, &olen);
    int verdict = gw_cors_check(&gw_cfg.cors, origin, olen, &rc->allow_origin, &rc->allow_origin_len);
    if (verdict == GW_CORS_FORBID) {
        gw_reply_error(req, rc, 403, "origin not allowed: not in CORS_ALLOWED_ORIGINS");
        return 0;
    }
    if (rc->route == GW_R_NOTFOUND) {
        gw_reply_error(req, rc, 404, "not found");
        return 0;
    }
    const struct gw_route_def *rd = &s_routes[rc->route];
    if (rc->method == GW_M_OPTIONS) {
        gw_reply_preflight(req, rc, rd->allow);
        return 0;
    }
    if (!(rd->methods & M(rc->method))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, rd->allow, strlen(rd->allow));
        gw_reply_error(req, rc, 405, "method not allowed");
        return 0;
    }

    gw_claims_t claims;
    bool have = false;
    switch (rc->route) {
    case GW_R_HEALTH:
    case GW_R_LIVENESS:
        s_liveness(req, rc);
        return 0;
    case GW_R_READINESS:
        s_ask_all(req, rc, PROTO_PING, on_readiness);
        return 0;
    case GW_R_HEALTH_STORE:
        s_ask_all(req, rc, PROTO_PING, on_health_store);
        return 0;
    case GW_R_HEALTH_CACHE:
        s_ask_all(req, rc, PROTO_PING, on_health_cache);
        return 0;
    case GW_R_METRICS:
        s_ask_all(req, rc, PROTO_STATS, on_metrics);
        return 0;
    case GW_R_CACHE_METRICS:
        if (s_auth(req, rc, true, &claims, &have) < 0)
            return 0;
        s_ask_all(req, rc, PROTO_STATS, on_cache_metrics);
        return 0;
    default:
        break;
    }

    /* Presence routes. */
    char uid[PROTO_USER_ID_MAX * 3 + 1];
    ssize_t uid_len = 0;
    if (rc->route == GW_R_PRESENCE_USER || rc->route == GW_R_PRESENCE_HEARTBEAT) {
        if (seglen > PROTO_USER_ID_MAX * 3 || (uid_len = gw_pct_decode(seg, seglen, uid)) < 0 ||
            !gw_valid_user_id(uid, (size_t)uid_len)) {
            gw_reply_error(req, rc, 400, GW_ERR_USER_ID);
            return 0;
        }
    }
    bool is_write = rc->method == GW_M_PUT || rc->method == GW_M_POST || rc->method == GW_M_DELETE;
    if (rc->route == GW_R_PRESENCE_BATCH)
        is_write = false; /* decided by the body below */
    if (s_auth(req, rc, is_write || gw_cfg.auth_reads, &claims, &have) < 0)
        return 0;
    if (req->entity.len > GW_BODY_MAX) {
        gw_reply_error(req, rc, 413, "request body too large (at most 65536 bytes)");
        return 0;
    }

    if (rc->route == GW_R_PRESENCE_USER || rc->route == GW_R_PRESENCE_HEARTBEAT) {
        if (is_write && !s_may_write(&claims, uid, (size_t)uid_len)) {
            s_forbidden(req, rc, &claims);
            return 0;
        }
        if (s_limit(req, rc, is_write, &claims, have, 1) < 0)
            return 0;
        if (!is_write) {
            s_send_single(req, rc, PROTO_GET, uid, (size_t)uid_len, NULL);
            return 0;
        }
        if (rc->method == GW_M_DELETE) {
            s_send_single(req, rc, PROTO_DEL, uid, (size_t)uid_len, NULL);
            return 0;
        }
        proto_record_t rec;
        memset(&rec, 0, offsetof(proto_record_t, user_id));
        proto_record_set_uid(&rec, uid, (size_t)uid_len);
        proto_record_set_node(&rec, gw_cfg.node_id, strlen(gw_cfg.node_id));
        const char *err;
        if (rc->route == GW_R_PRESENCE_HEARTBEAT) {
            proto_record_set_msg(&rec, "", 0);
            if (gw_parse_heartbeat_body(req->entity.base, req->entity.len, &rec.ttl_s, &err) < 0) {
                gw_reply_error(req, rc, 400, err);
                return 0;
            }
            s_send_single(req, rc, PROTO_TOUCH, uid, (size_t)uid_len, &rec);
            return 0;
        }
        if (gw_parse_set_body(req->entity.base, req->entity.len, (uint32_t)gw_cfg.default_ttl, &rec, &err) < 0) {
            gw_reply_error(req, rc, 400, err);
            return 0;
        }
        s_send_single(req, rc, PROTO_PUT, uid, (size_t)uid_len, &rec);
        return 0;
    }

    char errbuf[GW_ERR_LEN];
    uint32_t max = (uint32_t)gw_cfg.max_batch;
    if (rc->route == GW_R_PRESENCE_MULTI || rc->route == GW_R_PRESENCE_WATCH) {
        proto_str_t *ids = h2o_mem_alloc_pool(&req->pool, max * sizeof *ids);
        char *store = h2o_mem_alloc_pool(&req->pool, qlen + 1);
        int n = gw_parse_users(query, qlen, max, ids, store, errbuf, sizeof errbuf);
        if (n < 0) {
            gw_reply_error(req, rc, 400, errbuf);
            return 0;
        }
        if (s_limit(req, rc, false, &claims, have, 1) < 0)
            return 0;
        if (rc->route == GW_R_PRESENCE_WATCH) {
            uint64_t since = 0;
            const char *v;
            size_t vl;
            if (s_header(req, H2O_STRLIT("last-event-id"), &v, &vl) >= 0 ||
                gw_query_param(query, qlen, "since", &v, &vl)) {
                char tmp[24];
                if (vl == 0 || vl >= sizeof tmp) {
                    gw_reply_error(req, rc, 400, "invalid Last-Event-ID: must be a version (a decimal integer)");
                    return 0;
                }
                memcpy(tmp, v, vl);
                tmp[vl] = '\0';
                char *end;
                errno = 0;
                since = strtoull(tmp, &end, 10);
                if (*end || tmp[0] < '0' || tmp[0] > '9' || errno == ERANGE) {
                    gw_reply_error(req, rc, 400, "invalid Last-Event-ID: must be a version (a decimal integer)");
                    return 0;
                }
            }
            gw_watch_handle(req, rc, ids, (uint32_t)n, since);
            return 0;
        }
        s_multi_read(req, rc, ids, (uint32_t)n);
        return 0;
    }

    /* POST /api/v2/presence/batch: a read (user_ids), a write (presences) or heartbeats. */
    proto_str_t *ids = h2o_mem_alloc_pool(&req->pool, max * sizeof *ids);
    char *store = h2o_mem_alloc_pool(&req->pool, req->entity.len + 1);
    proto_record_t *recs = xmalloc(max * sizeof *recs);
    uint32_t n = 0;
    int kind = gw_parse_batch_body(req->entity.base, req->entity.len, max, (uint32_t)gw_cfg.default_ttl, ids, store,
                                   recs, &n, errbuf, sizeof errbuf);
    if (kind < 0) {
        free(recs);
        gw_reply_error(req, rc, 400, errbuf);
        return 0;
    }
    if (kind == GW_BATCH_READ) {
        free(recs);
        if (s_limit(req, rc, false, &claims, have, 1) < 0)
            return 0;
        s_multi_read(req, rc, ids, n);
        return 0;
    }
    /* A batch write or heartbeat needs a token: admin scope, or every entry is the caller's own id. */
    if (!have && s_auth(req, rc, true, &claims, &have) < 0) {
        free(recs);
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!s_may_write(&claims, recs[i].user_id, recs[i].uid_len)) {
            free(recs);
            s_forbidden(req, rc, &claims);
            return 0;
        }
        proto_record_set_node(&recs[i], gw_cfg.node_id, strlen(gw_cfg.node_id));
    }
    if (s_limit(req, rc, true, &claims, have, (double)n) < 0) {
        free(recs);
        return 0;
    }
    s_batch_write(req, rc, kind == GW_BATCH_HEARTBEAT ? PROTO_TOUCH : PROTO_PUT, recs, n);
    free(recs);
    return 0;
}
