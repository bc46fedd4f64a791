/* gw_health.c -- health, readiness and metrics: /health, /health/liveness, /health/readiness,
 * /health/store, /health/cache, /metrics, /api/v2/cache/metrics (API.md).
 *
 * Liveness answers at once. The others ask every cache-node slot (PING or STATS), even one marked
 * down -- health must tell the truth, not the routing table's guess -- and answer when all have
 * answered or timed out: readiness needs a node whose store path works; /health/store shows the
 * store through the freshest node; /metrics merges every node's series with the gateway's own
 * (gw_metrics.c). Runs on the request's thread.
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

/* A replicated center (STORE_REPLICAS): its leader, term, commit index and each member's lag, as
 * the cache-node last heard them from the leader (docs/REPLICATION.md). Nothing for one store. */
static void s_replication(gw_buf_t *b, const node_answer_t *a)
{
    uint64_t members = s_stat(a, "store_repl_members");
    if (!members)
        return;
    gw_buf_addf(b, "\"replication\":{\"leader\":%llu,\"term\":%llu,\"commit_index\":%llu,\"members\":[",
                (unsigned long long)s_stat(a, "store_repl_leader"), (unsigned long long)s_stat(a, "store_repl_term"),
                (unsigned long long)s_stat(a, "store_repl_commit_index"));
    for (uint64_t m = 1; m <= members && m <= 7; m++) {
        char lag[64], up[64];
        snprintf(lag, sizeof lag, "store_repl_member_lag_entries{member=\"%llu\"}", (unsigned long long)m);
        snprintf(up, sizeof up, "store_repl_member_up{member=\"%llu\"}", (unsigned long long)m);
        gw_buf_addf(b, "%s{\"member\":%llu,\"lag_entries\":%llu,\"up\":%s}", m > 1 ? "," : "", (unsigned long long)m,
                    (unsigned long long)s_stat(a, lag), s_stat(a, up) ? "true" : "false");
    }
    gw_buf_adds(b, "]},");
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
    /* "writes": the spec's word for whether writes can be taken (ARCHITECTURE.md: a leaf cut off
     * from its center reports "unready" for writes here). */
    gw_buf_addf(b, "{\"status\":\"%s\",\"reachable\":%s,\"writable\":%s,\"writes\":\"%s\",\"node_type\":\"%s\",",
                up ? "up" : "down", up ? "true" : "false", up ? "true" : "false", up ? "ready" : "unready",
                gw_cfg.node_type);
    if (best >= 0) {
        const node_answer_t *a = &op->ans[best];
        gw_buf_addf(b,
                    "\"latency_ms\":%.3f,\"sequence\":%llu,\"applied_sequence\":%llu,\"lag_seconds\":%.3f,"
                    "\"sync_state\":\"%s\",\"link_up\":%s,\"link_lag_seconds\":%.3f,",
                    (double)s_stat(a, "cache_store_rtt_seconds") / 1000.0,
                    (unsigned long long)s_stat(a, "cache_store_sequence"), (unsigned long long)s_stat(a, "sync_sequence"),
                    (double)s_stat(a, "sync_lag_seconds") / 1e6, s_sync_state_name(s_stat(a, "cache_sync_state")),
                    s_stat(a, "cache_link_up") ? "true" : "false", (double)s_stat(a, "cache_link_lag_seconds") / 1e6);
        s_replication(b, a);
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

/* ==== the endpoints ============================================================================ */

void gw_health_live(h2o_req_t *req, gw_rctx_t *rc)
{
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    gw_buf_adds(b, "{\"status\":\"ok\",");
    s_ts(b);
    gw_buf_add(b, "}", 1);
    gw_reply(req, rc, 200, b->p, b->len);
}

void gw_health_ready(h2o_req_t *req, gw_rctx_t *rc)
{
    s_ask_all(req, rc, PROTO_PING, on_readiness);
}

void gw_health_store(h2o_req_t *req, gw_rctx_t *rc)
{
    s_ask_all(req, rc, PROTO_PING, on_health_store);
}

void gw_health_cache(h2o_req_t *req, gw_rctx_t *rc)
{
    s_ask_all(req, rc, PROTO_PING, on_health_cache);
}

void gw_health_metrics(h2o_req_t *req, gw_rctx_t *rc)
{
    s_ask_all(req, rc, PROTO_STATS, on_metrics);
}

void gw_health_cache_metrics(h2o_req_t *req, gw_rctx_t *rc)
{
    s_ask_all(req, rc, PROTO_STATS, on_cache_metrics);
}
