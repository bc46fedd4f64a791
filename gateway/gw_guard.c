/* gw_guard.c -- the checks a route's row asks for (see gw_guard.h for their order).
 *
 * Rate-limit keys: a token's subject ("sub:<id>"), else the client's address ("ip:<addr>"; with
 * TRUST_PROXY the rightmost X-Forwarded-For hop that is not a trusted proxy: gw_clientaddr.h).
 * The access log names the same address. A token on a route that does not require one is
 * verified all the same (its subject keys the limit), and ignored when bad: the caller is
 * anonymous (API.md: 401 on reads only with AUTH_READS=required). Runs on the request's thread.
 */
#include "gw_guard.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define TOKEN_QUERY_MAX 8192 /* an access_token= longer than this is not looked at */
#define XFF_HEADERS_MAX 16   /* X-Forwarded-For header lines looked at (a list each) */

static bool s_safe_method(int method)
{
    return method == GW_M_GET || method == GW_M_HEAD;
}

static bool s_safe(const gw_rctx_t *rc)
{
    return s_safe_method(rc->method);
}

/* SELF: a token for the path's {id} (or admin) -- on every method, or only on writes. */
static bool s_self(const gw_guard_rule_t *rule, int method)
{
    return rule->auth == GW_AUTH_SELF || (rule->auth == GW_AUTH_SELF_WRITES && !s_safe_method(method));
}

bool gw_guard_needs_token(const gw_guard_rule_t *rule, int method)
{
    return s_self(rule, method) || rule->auth == GW_AUTH_TOKEN || (rule->auth != GW_AUTH_NONE && gw_cfg.auth_reads);
}

/* ==== identity ================================================================================= */

/* The request's token: its Authorization header, or (when the rule allows) ?access_token= made
 * into a header value. Sets *v NULL when there is none. */
static void s_token(h2o_req_t *req, gw_rctx_t *rc, uint8_t flags, const char **v, size_t *vlen)
{
    *v = NULL;
    *vlen = 0;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        *v = req->headers.entries[i].value.base;
        *vlen = req->headers.entries[i].value.len;
        return;
    }
    const char *q;
    size_t ql;
    if (!(flags & GW_RF_QUERY_TOKEN) || !gw_query_param(rc->query, rc->qlen, "access_token", &q, &ql) || !ql ||
        ql > TOKEN_QUERY_MAX)
        return;
    char *hv = h2o_mem_alloc_pool(&req->pool, ql + 7);
    memcpy(hv, "Bearer ", 7);
    memcpy(hv + 7, q, ql);
    *v = hv;
    *vlen = ql + 7;
}

/* Authenticate if a token is needed (or present). Returns 0, or -1 after answering 401. */
static int s_auth(h2o_req_t *req, gw_rctx_t *rc, bool required, uint8_t flags)
{
    const char *v;
    size_t vlen;
    rc->authed = false;
    s_token(req, rc, flags, &v, &vlen);
    if (!v && !required)
        return 0;
    const char *err;
    if (gw_auth_verify_cached(rc->t->authcache, &gw_cfg.auth, v, vlen, (int64_t)(util_now_us() / 1000000u),
                              &rc->claims, &err) < 0) {
        if (!required)
            return 0; /* a route that does not need a token ignores a bad one: anonymous */
        gw_reply_unauthorized(req, rc, err);
        return -1;
    }
    rc->authed = true;
    return 0;
}

int gw_guard_require_token(h2o_req_t *req, gw_rctx_t *rc)
{
    return rc->authed ? 0 : s_auth(req, rc, true, 0);
}

bool gw_guard_may_write(const gw_rctx_t *rc, const char *uid, size_t len)
{
    const gw_claims_t *c = &rc->claims;
    return rc->authed && (c->admin || (c->sub_len == len && memcmp(c->sub, uid, len) == 0));
}

void gw_guard_forbidden(h2o_req_t *req, gw_rctx_t *rc)
{
    const gw_claims_t *c = &rc->claims;
    char msg[GW_ERR_LEN];
    snprintf(msg, sizeof msg, "forbidden: token for '%.*s' may write only '%.*s' (scope presence:admin writes anyone)",
             (int)MIN(c->sub_len, 128), c->sub, (int)MIN(c->sub_len, 128), c->sub);
    gw_reply_error(req, rc, 403, msg);
}

/* ==== rate limits ============================================================================== */

size_t gw_guard_client_addr(h2o_req_t *req, char *out)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    uint8_t peer[16];
    bool have = gw_clientaddr_from_sockaddr((struct sockaddr *)&ss, sl, peer);
    proto_str_t hops[XFF_HEADERS_MAX];
    size_t n = 0;
    if (gw_cfg.trust_proxy)
        for (ssize_t i = -1; n < XFF_HEADERS_MAX && (i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, i)) >= 0;)
            hops[n++] = (proto_str_t){req->headers.entries[i].value.base, req->headers.entries[i].value.len};
    return gw_clientaddr_pick(have ? peer : NULL, gw_cfg.trust_proxy, &gw_cfg.trusted, hops, n, out);
}

/* Writes per token subject (a presence:admin token -- a backend writing for many users -- has its
 * own limit, RATE_LIMIT_ADMIN_WRITES, off by default); reads per subject when authenticated, else
 * per client. */
int gw_guard_limit(h2o_req_t *req, gw_rctx_t *rc, bool write, double cost)
{
    gw_ratelimit_t *rl = !write ? gw_cfg.rl_reads : rc->authed && rc->claims.admin ? gw_cfg.rl_admin : gw_cfg.rl_writes;
    if (!rl)
        return 0;
    double burst = gw_ratelimit_burst(rl);
    if (cost > burst)
        cost = burst;
    char key[300];
    size_t klen;
    if (rc->authed)
        klen = (size_t)snprintf(key, sizeof key, "sub:%s", rc->claims.sub);
    else {
        memcpy(key, "ip:", 3);
        klen = 3 + gw_guard_client_addr(req, key + 3);
    }
    unsigned wait = gw_ratelimit_take(rl, key, klen, cost, util_mono_us());
    if (wait) {
        gw_reply_too_many(req, rc, wait);
        return -1;
    }
    return 0;
}

/* ==== the rule ================================================================================= */

/* {id}: percent-decoded exactly once, then validated. */
static int s_path_id(h2o_req_t *req, gw_rctx_t *rc)
{
    char uid[PROTO_USER_ID_MAX * 3 + 1];
    ssize_t n;
    if (rc->seg_id_len > PROTO_USER_ID_MAX * 3 || (n = gw_pct_decode(rc->seg_id, rc->seg_id_len, uid)) < 0 ||
        !gw_valid_user_id(uid, (size_t)n)) {
        gw_reply_error(req, rc, 400, GW_ERR_USER_ID);
        return -1;
    }
    memcpy(rc->uid, uid, (size_t)n);
    rc->uid[n] = '\0';
    rc->uid_len = (size_t)n;
    return 0;
}

/* The thread's scratch for GW_RF_USERS_NOW lists (valid until the thread's next request). */
static __thread proto_str_t *s_scratch_ids;
static __thread char *s_scratch_store;
static __thread size_t s_scratch_nids, s_scratch_len;

void gw_guard_thread_done(void)
{
    free(s_scratch_ids);
    free(s_scratch_store);
    s_scratch_ids = NULL;
    s_scratch_store = NULL;
    s_scratch_nids = s_scratch_len = 0;
}

/* users=: at most MAX_BATCH distinct valid ids. */
static int s_users(h2o_req_t *req, gw_rctx_t *rc, bool now_only)
{
    char errbuf[GW_ERR_LEN];
    uint32_t max = (uint32_t)gw_cfg.max_batch;
    /* Room for as many items as the list can hold (separators + 1), not MAX_BATCH: a watch
     * stream keeps its request's pool for its whole life. */
    uint32_t bound = 1;
    for (size_t i = 0; i < rc->qlen && bound < max; i++)
        bound += rc->query[i] == ',' || (rc->query[i] == '%' && i + 2 < rc->qlen && rc->query[i + 1] == '2' &&
                                         (rc->query[i + 2] == 'C' || rc->query[i + 2] == 'c'));
    proto_str_t *ids;
    char *store;
    if (now_only) {
        if (s_scratch_nids < MIN(bound, max)) {
            s_scratch_nids = MIN(bound, max);
            s_scratch_ids = xrealloc(s_scratch_ids, s_scratch_nids * sizeof *s_scratch_ids);
        }
        if (s_scratch_len < rc->qlen + 1) {
            s_scratch_len = rc->qlen + 1;
            s_scratch_store = xrealloc(s_scratch_store, s_scratch_len);
        }
        ids = s_scratch_ids;
        store = s_scratch_store;
    } else {
        ids = h2o_mem_alloc_pool(&req->pool, MIN(bound, max) * sizeof *ids);
        store = h2o_mem_alloc_pool(&req->pool, rc->qlen + 1);
    }
    int n = gw_parse_users(rc->query, rc->qlen, max, ids, store, errbuf, sizeof errbuf);
    if (n < 0) {
        gw_reply_error(req, rc, 400, errbuf);
        return -1;
    }
    rc->ids = ids;
    rc->nids = (uint32_t)n;
    return 0;
}

int gw_guard_admit(h2o_req_t *req, gw_rctx_t *rc, const gw_guard_rule_t *rule)
{
    if (rc->seg_id && s_path_id(req, rc) < 0)
        return -1;
    bool self = s_self(rule, rc->method);
    bool required = gw_guard_needs_token(rule, rc->method);
    if (rule->auth != GW_AUTH_NONE && s_auth(req, rc, required, rule->flags) < 0)
        return -1;
    if ((rule->flags & GW_RF_BODY_CAP) && req->entity.len > GW_BODY_MAX) {
        gw_reply_error(req, rc, 413, "request body too large (at most 65536 bytes)");
        return -1;
    }
    if (self && !gw_guard_may_write(rc, rc->uid, rc->uid_len)) {
        gw_guard_forbidden(req, rc);
        return -1;
    }
    if ((rule->flags & GW_RF_USERS) && s_users(req, rc, rule->flags & GW_RF_USERS_NOW) < 0)
        return -1;
    switch (rule->limit) {
    case GW_LIMIT_READ:
    case GW_LIMIT_WRITE:
    case GW_LIMIT_METHOD: {
        bool write = rule->limit == GW_LIMIT_WRITE || (rule->limit == GW_LIMIT_METHOD && !s_safe(rc));
        return gw_guard_limit(req, rc, write, 1);
    }
    default:
        return 0;
    }
}
