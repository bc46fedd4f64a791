/* cache_node_main.c -- the cache-node process: the environment, the signals, one node run until
 * SIGTERM/SIGINT (the node itself is cache-node/cache_node.c).
 *
 * A configuration error names its variable and exits 2 before anything is bound; an invalid
 * cache configuration is exit 2 too. The ready line goes out once the gateways' ROUTER is bound.
 */
#include "cache.h"
#include "cache_node.h"
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static volatile sig_atomic_t s_stop;

static int s_config(void *arg, char *err)
{
    cache_node_config_t *c = arg;
    static const char *const policies[] = {"wtinylfu", "lru", NULL};
    char data_dir[400] = "./data";
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "cache-%d", (int)getpid());
    c->max_cost = 256ull << 20;
    uint64_t req_timeout = 2000;
    c->hb_limit_ms = 3000;
    c->store_down_ms = 2000;
    if (cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0 || cfg_str("CACHE_ID", c->id, sizeof c->id, err) < 0 ||
        cfg_u64("CACHE_MAX_COST", 4096, 1ull << 40, &c->max_cost, err) < 0 ||
        cfg_u64("CACHE_NUM_COUNTERS", 0, 1ull << 32, &c->counters, err) < 0 ||
        cfg_enum("CACHE_POLICY", policies, &c->policy, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &req_timeout, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &c->hb_limit_ms, err) < 0 ||
        cfg_u64("STORE_DOWN_MS", 100, 600000, &c->store_down_ms, err) < 0 ||
        cfg_u64("SYNC_SUB_HWM", 1, 10000000, &c->sub_hwm, err) < 0)
        return -1;
    if (!util_valid_node_id(c->id, strlen(c->id))) {
        snprintf(err, CFG_ERR_LEN, "CACHE_ID: invalid value '%s'", c->id);
        return -1;
    }
    /* Answer the gateway before its own deadline so it can say 504 rather than guess. */
    c->store_timeout_ms = req_timeout > 400 ? req_timeout - 250 : req_timeout * 3 / 4;
    /* A stall long enough for a gateway to time out on us and route our keys elsewhere lasts about
     * REQUEST_TIMEOUT_MS; the node notices one of half that (its waits last at most a quarter). */
    c->stall_ms = MAX(req_timeout / 4, 25);
    c->req_timeout_ms = req_timeout;
    snprintf(c->endpoint, sizeof c->endpoint, "ipc://%s/run/cache-1.sock", data_dir);
    snprintf(c->store_cmd, sizeof c->store_cmd, "ipc://%s/run/store-cmd.sock", data_dir);
    snprintf(c->store_pub, sizeof c->store_pub, "ipc://%s/run/store-pub.sock", data_dir);
    if (cfg_str("CACHE_ENDPOINT", c->endpoint, sizeof c->endpoint, err) < 0 ||
        cfg_str("STORE_CMD_ENDPOINT", c->store_cmd, sizeof c->store_cmd, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", c->store_pub, sizeof c->store_pub, err) < 0)
        return -1;
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "cache-node",
    .summary = "A W-TinyLFU cache-node of a presence node: answers the gateways' reads and writes for its keys,\n"
               "in front of the store-node (or a leaf's sync-relay), kept coherent by the change stream.",
    .usage = "",
    .procs = ENVREG_CACHE,
};

int main(int argc, char **argv)
{
    cache_node_config_t cfg;
    cli_start(argc, argv, &s_cli, "cache", s_config, &cfg);
    cli_stop_on_signals(&s_stop);
    char err[CFG_ERR_LEN] = "";

    void *zctx = zmq_ctx_new();
    cache_node_t *n;
    int rc = cache_node_new(zctx, &cfg, &n, err);
    if (rc < 0) {
        LOG(LOG_ERROR, "%s", err);
        zmq_ctx_term(zctx);
        return rc == -2 ? 2 : 1;
    }
    LOG(LOG_NOTICE, "ready id=%s endpoint=%s store=%s max_cost=%llu policy=%s", cfg.id, cfg.endpoint, cfg.store_cmd,
        (unsigned long long)cfg.max_cost, cfg.policy == CACHE_POLICY_LRU ? "lru" : "wtinylfu");
    char ready[700];
    snprintf(ready, sizeof ready, "cache id=%s endpoint=%s", cfg.id, cfg.endpoint);
    zu_signal_ready(ready);

    rc = cache_node_run(n, &s_stop);
    LOG(LOG_NOTICE, "stopping");
    cache_node_destroy(&n);
    zmq_ctx_term(zctx);
    LOG(LOG_NOTICE, "stopped");
    return rc < 0 ? 1 : 0;
}
