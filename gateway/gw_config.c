/* gw_config.c -- the gateway's configuration from the environment (see gw_config.h).
 *
 * Every value is validated here, at startup: an invalid one names its variable and the rule (the
 * process then exits 2). CACHE_ENDPOINTS and CACHE_DNS are exclusive; each endpoint gets its
 * rendezvous seed from its own text, so every gateway agrees on owners. Single-threaded (main).
 */
#include "gw_config.h"
#include "cfg.h"
#include "util.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

gw_config_t gw_cfg;

static int s_split_endpoints(const char *list, char *err)
{
    gw_cfg.nnodes = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        size_t n = (size_t)(e - p);
        while (n && p[n - 1] == ' ')
            n--;
        if (gw_cfg.nnodes == GW_MAX_NODES || n == 0 || n >= sizeof gw_cfg.endpoints[0]) {
            snprintf(err, CFG_ERR_LEN, "CACHE_ENDPOINTS: at most %d endpoints of < 512 bytes", GW_MAX_NODES);
            return -1;
        }
        memcpy(gw_cfg.endpoints[gw_cfg.nnodes], p, n);
        gw_cfg.endpoints[gw_cfg.nnodes][n] = '\0';
        /* The node's rendezvous seed comes from its endpoint, so every gateway (and every thread)
         * agrees on the owner of a key without coordination. */
        gw_cfg.node_seeds[gw_cfg.nnodes] = util_hash64(p, n, 0x5eed5);
        gw_cfg.nnodes++;
        p = e;
    }
    if (!gw_cfg.nnodes) {
        snprintf(err, CFG_ERR_LEN, "CACHE_ENDPOINTS: no endpoint given");
        return -1;
    }
    return 0;
}

/* CACHE_DNS=name:port: the cache tier is every address the name resolves to (gw_discovery.c). */
static int s_dns_config(const char *dns, char *err)
{
    const char *colon = strrchr(dns, ':');
    char *end = NULL;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - dns) : 0;
    if (!colon || hl == 0 || hl >= sizeof gw_cfg.cache_dns_host || !colon[1] || *end || port == 0 || port > 65535 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        snprintf(err, CFG_ERR_LEN, "CACHE_DNS: expected NAME:PORT (e.g. presence-cache.presence.svc.cluster.local:7100)");
        return -1;
    }
    if (getenv("CACHE_ENDPOINTS") && getenv("CACHE_ENDPOINTS")[0]) {
        snprintf(err, CFG_ERR_LEN, "CACHE_DNS and CACHE_ENDPOINTS are both set: set one");
        return -1;
    }
    memcpy(gw_cfg.cache_dns_host, dns, hl);
    gw_cfg.cache_dns_host[hl] = '\0';
    snprintf(gw_cfg.cache_dns_port, sizeof gw_cfg.cache_dns_port, "%lu", port);
    gw_cfg.cache_dns = true;
    gw_cfg.nnodes = GW_MAX_NODES;
    return 0;
}

/* What is read before it is checked, in the order the variables are read (the first bad one is
 * the one named). */
typedef struct raw {
    char secret[1024];
    bool weak;
    int alg;
    uint64_t leeway;
    uint64_t wr, wb, ar, ab, rr, rb; /* RATE_LIMIT_* */
} raw_t;

static int s_read_auth(raw_t *r, char *err)
{
    static const char *const algs[] = {"HS256", "HS384", "HS512", NULL};
    return cfg_str("JWT_SECRET", r->secret, sizeof r->secret, err) < 0 ||
                   cfg_bool("JWT_ALLOW_WEAK_SECRET", &r->weak, err) < 0 ||
                   cfg_str("JWT_ISSUER", gw_cfg.auth.issuer, sizeof gw_cfg.auth.issuer, err) < 0 ||
                   cfg_enum("JWT_ALGORITHM", algs, &r->alg, err) < 0 ||
                   cfg_u64("JWT_LEEWAY_S", 0, 3600, &r->leeway, err) < 0
               ? -1
               : 0;
}

static int s_read_limits(raw_t *r, char *err)
{
    return cfg_u64("RATE_LIMIT_WRITES", 0, 1000000, &r->wr, err) < 0 ||
                   cfg_u64("RATE_LIMIT_WRITE_BURST", 0, 10000000, &r->wb, err) < 0 ||
                   cfg_u64("RATE_LIMIT_ADMIN_WRITES", 0, 100000000, &r->ar, err) < 0 ||
                   cfg_u64("RATE_LIMIT_ADMIN_WRITE_BURST", 0, 1000000000, &r->ab, err) < 0 ||
                   cfg_u64("RATE_LIMIT_READS", 0, 10000000, &r->rr, err) < 0 ||
                   cfg_u64("RATE_LIMIT_READ_BURST", 0, 100000000, &r->rb, err) < 0
               ? -1
               : 0;
}

/* JWT_*: the secret is required and at least 32 bytes unless JWT_ALLOW_WEAK_SECRET. */
static int s_apply_auth(raw_t *r, char *err)
{
    if (!r->secret[0]) {
        snprintf(err, CFG_ERR_LEN, "JWT_SECRET: required (the gateway refuses to start without it)");
        return -1;
    }
    if (strlen(r->secret) < 32 && !r->weak) {
        snprintf(err, CFG_ERR_LEN,
                 "JWT_SECRET: %zu bytes is too short (at least 32; set JWT_ALLOW_WEAK_SECRET=true to override)",
                 strlen(r->secret));
        return -1;
    }
    gw_cfg.auth.secret_len = strlen(r->secret);
    gw_cfg.auth.secret = (unsigned char *)xstrdup(r->secret);
    memset(r->secret, 0, sizeof r->secret);
    if (!gw_cfg.auth.issuer[0])
        snprintf(gw_cfg.auth.issuer, sizeof gw_cfg.auth.issuer, "presence-service");
    gw_cfg.auth.alg = r->alg == 0 ? JWT_ALG_HS256 : r->alg == 1 ? JWT_ALG_HS384 : JWT_ALG_HS512;
    gw_cfg.auth.leeway_s = (int64_t)r->leeway;
    return 0;
}

/* RATE_LIMIT_*: writes per subject (20/s, burst 40), admin writes and reads unlimited unless set. */
static void s_apply_limits(const raw_t *r)
{
    gw_cfg.write_rate = (double)r->wr;
    gw_cfg.write_burst = r->wb ? (double)r->wb : (double)r->wr * 2;
    gw_cfg.read_rate = (double)r->rr;
    gw_cfg.read_burst = r->rb ? (double)r->rb : (double)r->rr * 2;
    if (r->wr)
        gw_cfg.rl_writes = gw_ratelimit_new(gw_cfg.write_rate, gw_cfg.write_burst, 1 << 18);
    /* presence:admin tokens are backends writing for many users: their own bucket, off by default. */
    if (r->ar)
        gw_cfg.rl_admin = gw_ratelimit_new((double)r->ar, r->ab ? (double)r->ab : (double)r->ar * 2, 1 << 12);
    if (r->rr)
        gw_cfg.rl_reads = gw_ratelimit_new(gw_cfg.read_rate, gw_cfg.read_burst, 1 << 18);
}

/* Where the change stream and the cache tier are: STORE_*_ENDPOINT, CACHE_DNS or CACHE_ENDPOINTS. */
static int s_config_upstream(const char *data_dir, char *err)
{
    snprintf(gw_cfg.store_cmd, sizeof gw_cfg.store_cmd, "ipc://%s/run/store-cmd.sock", data_dir);
    snprintf(gw_cfg.store_pub, sizeof gw_cfg.store_pub, "ipc://%s/run/store-pub.sock", data_dir);
    if (cfg_str("STORE_CMD_ENDPOINT", gw_cfg.store_cmd, sizeof gw_cfg.store_cmd, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", gw_cfg.store_pub, sizeof gw_cfg.store_pub, err) < 0)
        return -1;
    char dns[300] = "";
    gw_cfg.cache_dns_interval_ms = 2000;
    if (cfg_str("CACHE_DNS", dns, sizeof dns, err) < 0 ||
        cfg_u64("CACHE_DNS_INTERVAL_MS", 100, 600000, &gw_cfg.cache_dns_interval_ms, err) < 0)
        return -1;
    if (dns[0])
        return s_dns_config(dns, err);
    char eps[GW_MAX_NODES * 520];
    snprintf(eps, sizeof eps, "ipc://%s/run/cache-1.sock,ipc://%s/run/cache-2.sock", data_dir, data_dir);
    if (cfg_str("CACHE_ENDPOINTS", eps, sizeof eps, err) < 0 || s_split_endpoints(eps, err) < 0)
        return -1;
    return 0;
}

static void s_defaults(void)
{
    snprintf(gw_cfg.addr, sizeof gw_cfg.addr, "0.0.0.0");
    gw_cfg.port = 8080;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    gw_cfg.threads = ncpu > 0 ? (uint64_t)ncpu : 1;
    snprintf(gw_cfg.node_id, sizeof gw_cfg.node_id, "node-1");
    gw_cfg.request_timeout_ms = 2000;
    gw_cfg.http_timeout_ms = 10000;
    gw_cfg.default_ttl = 3600;
    gw_cfg.max_batch = 1000;
    gw_cfg.shutdown_grace_ms = 10000;
    gw_cfg.sse_max_streams = 10000;
    gw_cfg.sse_max_ids = 1000;
    gw_cfg.sse_ping_ms = 15000;
    gw_cfg.sse_queue_max = 256 << 10;
    gw_cfg.sse_window_bytes = 32 << 20;
    gw_cfg.jwt_cache_size = 65536;
}

/* ACCESS_LOG, METRICS_PREFIX (a metric name's start: [A-Za-z_][A-Za-z0-9_]*, at most 32 bytes),
 * NOTIFIER_ENDPOINT (a ZeroMQ endpoint the metrics poller connects to). */
static int s_read_observability(char *err)
{
    if (cfg_bool("ACCESS_LOG", &gw_cfg.access_log, err) < 0 ||
        cfg_str("METRICS_PREFIX", gw_cfg.metrics_prefix, sizeof gw_cfg.metrics_prefix, err) < 0 ||
        cfg_str("NOTIFIER_ENDPOINT", gw_cfg.notifier_ep, sizeof gw_cfg.notifier_ep, err) < 0)
        return -1;
    const char *p = gw_cfg.metrics_prefix;
    for (size_t i = 0; p[i]; i++) {
        char c = p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            snprintf(err, CFG_ERR_LEN,
                     "METRICS_PREFIX: invalid value '%s' (a metric name's start: [A-Za-z_][A-Za-z0-9_]*, e.g. presence_)",
                     p);
            return -1;
        }
    }
    const char *ep = gw_cfg.notifier_ep;
    if (ep[0] && strncmp(ep, "ipc://", 6) != 0 && strncmp(ep, "tcp://", 6) != 0) {
        snprintf(err, CFG_ERR_LEN, "NOTIFIER_ENDPOINT: invalid value '%s' (want tcp://HOST:PORT or ipc://PATH)", ep);
        return -1;
    }
    return 0;
}

int gw_config_load(char *err)
{
    static const char *const reads[] = {"public", "required", NULL};
    static const char *const types[] = {"center", "leaf", NULL};
    char data_dir[400] = "./data";
    raw_t r = {.leeway = 60, .wr = 20, .wb = 40};
    int auth_reads = 0, node_type = 0;
    s_defaults();
    if (cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0 ||
        cfg_str("SERVICE_ADDR", gw_cfg.addr, sizeof gw_cfg.addr, err) < 0 ||
        cfg_u64("SERVICE_PORT", 0, 65535, &gw_cfg.port, err) < 0 ||
        cfg_u64("GATEWAY_THREADS", 1, GW_MAX_THREADS, &gw_cfg.threads, err) < 0 ||
        cfg_str("NODE_ID", gw_cfg.node_id, sizeof gw_cfg.node_id, err) < 0 ||
        cfg_enum("NODE_TYPE", types, &node_type, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &gw_cfg.request_timeout_ms, err) < 0 ||
        cfg_u64("PRESENCE_TTL", 1, PROTO_TTL_MAX, &gw_cfg.default_ttl, err) < 0 ||
        cfg_u64("MAX_BATCH", 1, 10000, &gw_cfg.max_batch, err) < 0 ||
        cfg_enum("AUTH_READS", reads, &auth_reads, err) < 0 || s_read_auth(&r, err) < 0 ||
        s_read_limits(&r, err) < 0 || cfg_bool("TRUST_PROXY", &gw_cfg.trust_proxy, err) < 0 ||
        cfg_u64("SHUTDOWN_GRACE_MS", 0, 600000, &gw_cfg.shutdown_grace_ms, err) < 0 ||
        cfg_u64("HTTP_REQUEST_TIMEOUT_MS", 100, 600000, &gw_cfg.http_timeout_ms, err) < 0 ||
        cfg_u64("SSE_MAX_STREAMS", 0, 1000000, &gw_cfg.sse_max_streams, err) < 0 ||
        cfg_u64("SSE_MAX_IDS", 1, 100000, &gw_cfg.sse_max_ids, err) < 0 ||
        cfg_u64("SSE_PING_MS", 100, 3600000, &gw_cfg.sse_ping_ms, err) < 0 ||
        cfg_u64("SSE_QUEUE_MAX", 1024, 1u << 30, &gw_cfg.sse_queue_max, err) < 0 ||
        cfg_u64("SSE_WINDOW_BYTES", 4096, 1ull << 36, &gw_cfg.sse_window_bytes, err) < 0 ||
        cfg_u64("JWT_CACHE_SIZE", 0, 1u << 24, &gw_cfg.jwt_cache_size, err) < 0)
        return -1;
    if (!util_valid_node_id(gw_cfg.node_id, strlen(gw_cfg.node_id))) {
        snprintf(err, CFG_ERR_LEN, "NODE_ID: invalid value '%s' (1-64 of [A-Za-z0-9._~@:=+-])", gw_cfg.node_id);
        return -1;
    }
    snprintf(gw_cfg.node_type, sizeof gw_cfg.node_type, "%s", types[node_type]);
    gw_cfg.auth_reads = auth_reads == 1;
    if (s_apply_auth(&r, err) < 0 || gw_cors_config(&gw_cfg.cors, err) < 0 || s_read_observability(err) < 0)
        return -1;
    s_apply_limits(&r);
    return s_config_upstream(data_dir, err);
}
