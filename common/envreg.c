/* envreg.c -- the list of every environment variable (see envreg.h).
 *
 * One line per variable: who reads it, its default as a user would write it, and what it means.
 * docs/CONFIG.md says the same at more length; a unit test keeps the two lists equal.
 */
#include "envreg.h"

#include <string.h>

extern char **environ;

#define G ENVREG_GATEWAY
#define C ENVREG_CACHE
#define S ENVREG_STORE
#define R ENVREG_RELAY
#define L ENVREG_LAUNCHER
#define P ENVREG_PROBE
#define T ENVREG_TOKEN
#define N ENVREG_NOTIFIER

static const envreg_var_t s_vars[] = {
    /* every process */
    {"DATA_DIR", G | C | S | R | L | P | T | N, "./data", "LMDB store, ipc:// sockets, development secret"},
    {"LOG_LEVEL", ENVREG_DAEMONS, "info", "debug|info|notice|warn|error"},
    {"LOG_FORMAT", ENVREG_DAEMONS, "text", "text|json (one JSON object per line)"},
    {"NODE_ID", G | L, "node-1", "stamped on every write this node accepts"},
    {"NODE_TYPE", G | L, "center", "center|leaf"},
    {"REQUEST_TIMEOUT_MS", G | C | R | N, "2000", "deadline of an internal hop (504 past it)"},
    {"PRESENCE_TTL", G | S, "3600", "default ttl in seconds"},
    {"STORE_CMD_ENDPOINT", G | C | S | P | N, "ipc://$DATA_DIR/run/store-cmd.sock", "the store's (or relay's) command socket"},
    {"STORE_PUB_ENDPOINT", G | C | S | N, "ipc://$DATA_DIR/run/store-pub.sock", "the change stream"},
    {"SYNC_HEARTBEAT_LIMIT_MS", C | R | N, "3000", "a change stream silent this long is untrusted"},
    /* launcher */
    {"CACHE_NODES", L, "2, or cores / 4 when more (at most 8)", "cache-nodes the launcher starts (1-8)"},
    {"CENTER_ENDPOINT", L | R, "", "leaf: tcp://HOST:PORT of the center's CENTER_PORT"},
    {"STOP_GRACE_MS", L, "10000", "SIGTERM to SIGKILL delay per child"},
    {"JWT_SECRET", G | L | T, "", "HS256 secret, at least 32 bytes (launcher: a development secret when unset)"},
    /* gateway */
    {"SERVICE_ADDR", G | L | P, "0.0.0.0 (make run: 127.0.0.1)", "gateway listen address"},
    {"SERVICE_PORT", G | L | P, "8080", "gateway port (0 = pick a free one, reported in the ready line)"},
    {"GATEWAY_THREADS", G, "cores this process may use", "event-loop threads"},
    {"CACHE_ENDPOINTS", G, "the launcher's cache-nodes", "comma-separated cache-node endpoints (at most 16)"},
    {"CACHE_DNS", G, "", "NAME:PORT: the cache-nodes are every address NAME resolves to"},
    {"CACHE_DNS_INTERVAL_MS", G, "2000", "how often CACHE_DNS is resolved again"},
    {"MAX_BATCH", G, "1000", "ids per list or batch"},
    {"AUTH_READS", G, "public", "public|required (reads need a token)"},
    {"JWT_ISSUER", G | T, "presence-service", "required iss claim"},
    {"JWT_ALGORITHM", G, "HS256", "HS256|HS384|HS512"},
    {"JWT_LEEWAY_S", G, "60", "clock leeway for exp and nbf"},
    {"JWT_ALLOW_WEAK_SECRET", G, "false", "accept a JWT_SECRET shorter than 32 bytes"},
    {"JWT_CACHE_SIZE", G, "65536", "verified tokens remembered per gateway thread (0 = off)"},
    {"NEAR_CACHE_BYTES", G, "67108864", "hot records kept in the gateway, split between its threads (0 = off)"},
    {"RATE_LIMIT_WRITES", G, "20", "writes per second per token subject (0 = off)"},
    {"RATE_LIMIT_WRITE_BURST", G, "40", "burst of RATE_LIMIT_WRITES"},
    {"RATE_LIMIT_ADMIN_WRITES", G, "0", "writes per second of a presence:admin token (0 = not limited)"},
    {"RATE_LIMIT_ADMIN_WRITE_BURST", G, "2 x rate", "burst of RATE_LIMIT_ADMIN_WRITES"},
    {"RATE_LIMIT_READS", G, "0", "reads per second per subject, else per client IP (0 = off)"},
    {"RATE_LIMIT_READ_BURST", G, "2 x rate", "burst of RATE_LIMIT_READS"},
    {"TRUST_PROXY", G, "false", "take the client address from X-Forwarded-For"},
    {"TRUSTED_PROXIES", G, "", "CIDRs of our proxies: the client is the rightmost X-Forwarded-For hop not in them"},
    {"ACCESS_LOG", G, "false", "true: one JSON line per request on stderr (no token is ever logged)"},
    {"METRICS_PREFIX", G, "", "prefix of every /metrics family but process_* (e.g. presence_)"},
    {"CORS_ENABLED", G, "true", "answer CORS requests"},
    {"CORS_ALLOWED_ORIGINS", G, "*", "comma-separated origins, or *"},
    {"CORS_ALLOWED_METHODS", G, "GET,POST,PUT,DELETE,OPTIONS", "preflight allow-list"},
    {"CORS_ALLOWED_HEADERS", G, "Authorization,Content-Type,Last-Event-ID", "preflight allow-list"},
    {"CORS_ALLOW_CREDENTIALS", G, "false", "send Access-Control-Allow-Credentials (not with *)"},
    {"CORS_MAX_AGE", G, "600", "preflight cache seconds"},
    {"HTTP_REQUEST_TIMEOUT_MS", G, "10000", "HTTP/1 request-read timeout, HTTP/2 idle timeout"},
    {"HTTP_HEADER_TIMEOUT_MS", G, "5000 (at most HTTP_REQUEST_TIMEOUT_MS)", "a new connection's first request head must arrive within this"},
    {"HTTP_HEADER_MAX", G, "131072", "bytes of a new connection's first request head"},
    {"HTTP2_MAX_STREAMS", G, "100", "HTTP/2 streams run at once per connection"},
    {"HTTP2_RESET_BUDGET", G, "100", "HTTP/2 streams a connection may cancel before its answer, in a burst"},
    {"HTTP2_RESETS_PER_S", G, "20", "... refilled at this rate; a connection over budget is cut (rapid reset)"},
    {"MAX_CONNECTIONS", G, "10000 (less when the fd limit is lower)", "open client connections per gateway; accepting pauses at it"},
    {"SHUTDOWN_GRACE_MS", G, "10000", "how long a stopping gateway finishes requests in flight"},
    {"SSE_MAX_STREAMS", G, "10000", "watch streams per gateway"},
    {"SSE_MAX_IDS", G, "1000", "ids per watch stream"},
    {"SSE_PING_MS", G, "15000", "comment heartbeat on idle watch streams"},
    {"SSE_QUEUE_MAX", G, "262144", "bytes queued for a slow watch stream before it is dropped"},
    {"SSE_WINDOW_BYTES", G, "33554432", "recent changes kept for Last-Event-ID resumes"},
    {"WS_MAX_CONNECTIONS", G, "100000", "WebSocket connections per gateway (also bounded by RLIMIT_NOFILE)"},
    {"WS_PING_INTERVAL_MS", G, "25000", "WebSocket pings; a connection silent for two intervals is ended"},
    {"WS_MAX_FRAME", G, "65536", "largest WebSocket message in bytes (close 1009 beyond)"},
    {"WS_MSG_RATE", G, "20", "WebSocket messages per second per connection (0 = off; close 1008 beyond)"},
    {"WS_MSG_BURST", G, "40", "burst of WS_MSG_RATE"},
    {"WS_MAX_WATCH", G, "1000", "users one WebSocket connection watches"},
    {"WS_QUEUE_MAX", G, "262144", "bytes waiting for a WebSocket client before it is dropped (1008)"},
    {"PRESENCE_GRACE_MS", G, "5000", "a closed WebSocket's session ends this much later unless resumed"},
    {"PRESENCE_IDLE_S", G, "600", "a WebSocket session without set/activity this long turns away (0 = never)"},
    {"GATEWAY_LEASE_MS", G, "15000", "the gateway's lease: its sessions end this long after it dies"},
    {"SSE_MAX_PER_IP", G, "256", "watch streams one client address may hold (0 = no bound)"},
    {"SSE_MAX_PER_SUBJECT", G, "32", "watch streams one token subject may hold (0 = no bound)"},
    {"UI_ENABLED", G, "true", "serve the live page (GET /, /ui/...) and /api/v2/openapi.yaml"},
    {"UI_DIR", G, "<gateway binary>/../share/presence/ui", "where the page's MANIFEST and files are"},
    /* cache-node */
    {"CACHE_ENDPOINT", C | P, "ipc://$DATA_DIR/run/cache-1.sock", "the cache-node's ROUTER"},
    {"CACHE_ID", C, "cache-<pid>", "label in metrics"},
    {"CACHE_MAX_COST", C, "268435456", "bytes of cache per cache-node"},
    {"CACHE_NUM_COUNTERS", C, "0 (derived)", "TinyLFU sketch size hint"},
    {"CACHE_POLICY", C, "wtinylfu", "wtinylfu|lru"},
    {"STORE_DOWN_MS", C, "2000", "no store answer this long: misses and writes fail fast"},
    {"SYNC_SUB_HWM", C | N, "500000", "change-stream messages buffered at the subscriber"},
    /* store-node */
    {"SYNC_MODE", S, "full", "full|nometa|none (DESIGN.md, Durability)"},
    {"SYNC_FLUSH_MS", S, "200", "SYNC_MODE=none: flush interval"},
    {"TOUCH_SYNC_MS", S, "1000", "heartbeat-only commits are flushed within this (0 = fsync them too)"},
    {"RETENTION", S, "30d", "offline records are purged this long after last_seen"},
    {"STORE_BATCH_MAX", S, "4096", "items per group commit"},
    {"STORE_QUEUE_MAX", S, "65536", "items queued; beyond: 503 overloaded"},
    {"STORE_MAP_SIZE_MB", S, "64", "initial LMDB map size"},
    {"STORE_MAP_MAX_MB", S, "65536", "the map doubles on MDB_MAP_FULL up to this"},
    {"STORE_HUGZ_MS", S, "1000", "change-stream heartbeat interval"},
    {"STORE_SWEEP_MAX", S, "1000", "expirations and purges per sweeper transaction"},
    {"STORE_LOG_MAX", S, "2000000", "changelog entries kept for catch-up"},
    {"MAX_SESSIONS", S, "32", "live sessions per user; one more ends the one that expires first (at most 255)"},
    {"STORE_PUB_HWM", S, "100000", "stream messages queued per slow subscriber"},
    {"CENTER_PORT", S, "", "also serve leaf relays on tcp P (commands) and P+1 (stream)"},
    {"CENTER_BIND_ADDR", S, "* (CENTER_INSECURE: 127.0.0.1)", "address of the CENTER_PORT sockets"},
    {"CENTER_INSECURE", S | R | L, "false", "allow the leaf link without CurveZMQ (trusted networks only)"},
    {"CURVE_SERVER_SECRET_KEY", S, "", "CurveZMQ secret key of the CENTER_PORT link"},
    {"CURVE_SERVER_SECRET_KEY_FILE", S, "", "... read from this file"},
    {"CURVE_ALLOWED_CLIENTS", S, "", "relay public keys allowed in (comma-separated)"},
    {"CURVE_ALLOWED_CLIENTS_FILE", S, "", "... one per line in this file"},
    {"STORE_REPLICAS", S | L, "", "store-node: the members' raft HOST:PORT list (unset = one store, no log); launcher: 1, 3 or 5 store-nodes"},
    {"STORE_REPLICA_ID", S, "the host name's -N ordinal + 1", "this member's position in STORE_REPLICAS (1..N)"},
    {"STORE_RAFT_BIND", S, "", "A.B.C.D:PORT the raft transport listens on (default: the member's own address)"},
    {"STORE_ELECTION_MS", S, "500", "raft election timeout (failover takes about 2 to 4 of them)"},
    {"STORE_SNAPSHOT_ENTRIES", S, "8192", "log entries between two snapshots of the state"},
    {"STORE_DEDUP_WINDOW", S, "60s", "how long a write's command id is remembered (a retry within it applies once)"},
    {"STORE_RAFT_PORT", L, "7100", "STORE_REPLICAS>1: member N's raft port is this + N - 1 (127.0.0.1)"},
    /* sync-relay */
    {"RELAY_CMD_ENDPOINT", R | P, "ipc://$DATA_DIR/run/store-cmd.sock", "what the region's cache-nodes send commands to"},
    {"RELAY_PUB_ENDPOINT", R, "ipc://$DATA_DIR/run/store-pub.sock", "the region's change stream"},
    {"RELAY_WINDOW_BYTES", R, "67108864", "recent stream bytes kept for the region's catch-ups"},
    {"CURVE_SERVER_PUBLIC_KEY", R, "", "the center's CurveZMQ public key"},
    {"CURVE_SERVER_PUBLIC_KEY_FILE", R, "", "... read from this file"},
    {"CURVE_PUBLIC_KEY", R, "", "this relay's CurveZMQ public key"},
    {"CURVE_PUBLIC_KEY_FILE", R, "", "... read from this file"},
    {"CURVE_SECRET_KEY", R, "", "this relay's CurveZMQ secret key"},
    {"CURVE_SECRET_KEY_FILE", R, "", "... read from this file"},
    /* notifier (webhooks, docs/WEBHOOKS.md) */
    {"WEBHOOK_URLS", L | N, "", "comma-separated http(s) URLs to POST events to (at most 16); the launcher starts the notifier when set"},
    {"WEBHOOK_SECRETS", N, "", "signing secrets: one for all URLs or one per URL (or WEBHOOK_SECRETS_FILE)"},
    {"WEBHOOK_SECRETS_FILE", N, "", "... read from this file (commas or one a line)"},
    {"WEBHOOK_EVENTS", N, "all", "event filters, one for all URLs or one per URL: all, or types joined by +"},
    {"WEBHOOK_PRIVILEGED", N, "false", "true|false, one for all URLs or one per URL: true sends the user's own view (invisible mode not applied)"},
    {"WEBHOOK_CONNECT_TIMEOUT_MS", N, "3000", "connection (and TLS handshake) timeout"},
    {"WEBHOOK_TIMEOUT_MS", N, "10000", "whole request timeout"},
    {"WEBHOOK_BATCH_MAX", N, "500", "events per POST (1-10000)"},
    {"WEBHOOK_BATCH_BYTES", N, "1048576", "bytes per POST body (a single larger event goes alone)"},
    {"WEBHOOK_DEBOUNCE_MS", N, "2000", "an offline then online of a user within this sends nothing (0 = off)"},
    {"WEBHOOK_BACKOFF_MIN_MS", N, "500", "retries: full-jitter exponential backoff from this"},
    {"WEBHOOK_BACKOFF_MAX_MS", N, "60000", "... up to this"},
    {"WEBHOOK_ON_4XX", N, "drop", "drop|retry: what a 3xx/4xx answer (but 408, 413, 429) does"},
    {"WEBHOOK_CA_FILE", N, "system bundle", "PEM bundle for https targets (TLS verification is always on)"},
    {"WEBHOOK_PROXY", N, "", "proxy URL (the *_proxy variables are ignored)"},
    {"WEBHOOK_LOG_MAX_BYTES", N, "268435456", "events kept for slow targets; beyond, the oldest go (a gap)"},
    {"WEBHOOK_LOG_MAX_AGE", N, "7d", "... and those older than this (0 = no age bound)"},
    {"NOTIFIER_ENDPOINT", G | L | N | P, "ipc://$DATA_DIR/run/notifier.sock (gateway: none)", "the notifier's ROUTER (PING/STATS); the gateway polls it for /metrics"},
    {"NOTIFIER_MAP_SIZE_MB", N, "64", "initial LMDB map of DATA_DIR/notifier"},
    {"NOTIFIER_MAP_MAX_MB", N, "16384", "the map doubles when full up to this"},
    {"NOTIFIER_STOP_GRACE_MS", N, "2000", "on SIGTERM, how long requests in flight may finish"},
    {"NOTIFIER_STATS_LOG_MS", N, "60000", "log the delivery counters this often (0 = never)"},
    /* tools */
    {"PROBE_TARGET", P, "", "presence-probe: the target when none is given"},
    {"PRESENCE_ROLE", P, "the command of PID 1", "presence-probe: which process to ask"},
    {"TOKEN_TTL", T, "3600", "presence-token: seconds until exp"},
    /* set by the launcher for its children */
    {"READY_FD", ENVREG_DAEMONS, "", "fd to write the ready line to (set by the launcher)"},
    {"PRESENCE_ENV_CHECKED", ENVREG_DAEMONS, "", "set by the launcher: the environment was checked once"},
    {"PRESENCE_DEV_SECRET", G, "", "set by the launcher: JWT_SECRET is its development secret (POST /api/v2/dev/token)"},
};

#undef G
#undef C
#undef S
#undef R
#undef L
#undef P
#undef T
#undef N

const envreg_var_t *envreg_all(size_t *n)
{
    *n = sizeof s_vars / sizeof s_vars[0];
    return s_vars;
}

const envreg_var_t *envreg_find(const char *name)
{
    for (size_t i = 0; i < sizeof s_vars / sizeof s_vars[0]; i++)
        if (strcmp(s_vars[i].name, name) == 0)
            return &s_vars[i];
    return NULL;
}

bool envreg_looks_ours(const char *name)
{
    static const char *const prefixes[] = {"PRESENCE_", "RATE_LIMIT_", "CORS_", "CACHE_", "GATEWAY_",
                                           "STORE_",    "SYNC_",       "WS_",   "JWT_",   "SSE_",
                                           "RELAY_",    "CENTER_",     "CURVE_", "WEBHOOK_", "NOTIFIER_"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

int envreg_check_unknown(void (*warn)(const char *name, void *ctx), void *ctx)
{
    int n = 0;
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        char name[128];
        if (len == 0 || len >= sizeof name)
            continue;
        memcpy(name, *e, len);
        name[len] = '\0';
        if (envreg_looks_ours(name) && !envreg_find(name)) {
            warn(name, ctx);
            n++;
        }
    }
    return n;
}

void envreg_usage(FILE *f, unsigned procs)
{
    for (size_t i = 0; i < sizeof s_vars / sizeof s_vars[0]; i++) {
        const envreg_var_t *v = &s_vars[i];
        if (!(v->procs & procs) || strcmp(v->name, "READY_FD") == 0 || strcmp(v->name, "PRESENCE_ENV_CHECKED") == 0)
            continue;
        if (v->def[0])
            fprintf(f, "  %-29s %s (default: %s)\n", v->name, v->help, v->def);
        else
            fprintf(f, "  %-29s %s\n", v->name, v->help);
    }
}
