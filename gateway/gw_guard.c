/* gw_guard.c -- the checks a route's row asks for (see gw_guard.h for their order).
 *
 * Rate-limit keys: a token's subject ("sub:<id>"), else the client's address ("ip:<addr>"; with
 * TRUST_PROXY the first X-Forwarded-For hop, when it is an address). A token on a route that does not require one is
 * verified all the same (its subject keys the limit), and ignored when bad: the caller is
 * anonymous (API.md: 401 on reads only with AUTH_READS=required). Runs on the request's thread.
 */
#include "gw_guard.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define TOKEN_QUERY_MAX 8192 /* an access_token= longer than this is not looked at */

static bool s_safe(const gw_rctx_t *rc)
{
    return rc->method == GW_M_GET || rc->method == GW_M_HEAD;
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
    if (gw_cfg.trust_proxy) {
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, -1);
        if (i >= 0) {
            /* The first hop, kept only when it is an address (it is the client's own text). */
            h2o_iovec_t v = req->headers.entries[i].value;
            size_t n = 0, b = 0;
            while (b < v.len && v.base[b] == ' ')
                b++;
            while (b + n < v.len && v.base[b + n] != ',' && v.base[b + n] != ' ' && n < GW_CLIENTADDR_LEN - 1)
                n++;
            char hop[GW_CLIENTADDR_LEN];
            memcpy(hop, v.base + b, n);
            hop[n] = '\0';
            unsigned char bin[16];
            if (inet_pton(AF_INET, hop, bin) == 1 || inet_pton(AF_INET6, hop, bin) == 1) {
                memcpy(out, hop, n + 1);
                return n;
            }
        }
    }
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl && ss.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, GW_CLIENTADDR_LEN))
        return strlen(out);
    if (sl && ss.ss_family == AF_INET6 &&
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, GW_CLIENTADDR_LEN))
        return strlen(out);
    memcpy(out, "?", 2);
    return 1;
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
        char addr[GW_CLIENTADDR_LEN];
        size_t n = gw_guard_client_addr(req, addr);
        klen = (size_t)snprintf(key, sizeof key, "ip:%.*s", (int)n, addr);
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

/* users=: at most MAX_BATCH distinct valid ids. */
static int s_users(h2o_req_t *req, gw_rctx_t *rc)
{
    char errbuf[GW_ERR_LEN];
    uint32_t max = (uint32_t)gw_cfg.max_batch;
    proto_str_t *ids = h2o_mem_alloc_pool(&req->pool, max * sizeof *ids);
    char *store = h2o_mem_alloc_pool(&req->pool, rc->qlen + 1);
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
    bool self = rule->auth == GW_AUTH_SELF || (rule->auth == GW_AUTH_SELF_WRITES && !s_safe(rc));
    bool required = self || rule->auth == GW_AUTH_TOKEN || (rule->auth != GW_AUTH_NONE && gw_cfg.auth_reads);
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
    if ((rule->flags & GW_RF_USERS) && s_users(req, rc) < 0)
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
