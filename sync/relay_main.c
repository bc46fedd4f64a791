/* relay_main.c -- the sync-relay process: the environment, the signals, one relay run until
 * SIGTERM/SIGINT (the relay itself is sync/relay.c).
 *
 * A configuration error names its variable and exits 2 before anything is bound. The ready line
 * goes out once the region's sockets are bound and the link to the center is being made.
 */
#include "cfg.h"
#include "cli.h"
#include "curve.h"
#include "envreg.h"
#include "log.h"
#include "relay.h"
#include "zutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static volatile sig_atomic_t s_stop;

/* The relay's environment (DATA_DIR, CENTER_ENDPOINT, RELAY_*, REQUEST_TIMEOUT_MS,
 * SYNC_HEARTBEAT_LIMIT_MS, CURVE_*). Returns 0, or -1 with err naming the variable. */
static int s_config(void *arg, char *err)
{
    relay_config_t *c = arg;
    char data_dir[400] = "./data";
    memset(c, 0, sizeof *c);
    c->window_max = 64u << 20;
    c->req_timeout_ms = 2000;
    c->hb_limit_ms = 3000;
    if (cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0 ||
        cfg_str("CENTER_ENDPOINT", c->center, sizeof c->center, err) < 0 ||
        cfg_u64("RELAY_WINDOW_BYTES", 4096, 1ull << 36, &c->window_max, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &c->req_timeout_ms, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &c->hb_limit_ms, err) < 0)
        return -1;
    /* Answer before the cache-node's own deadline (it waits REQUEST_TIMEOUT_MS - 250). */
    c->req_timeout_ms = c->req_timeout_ms > 800 ? c->req_timeout_ms - 500 : c->req_timeout_ms / 2;
    snprintf(c->cmd_ep, sizeof c->cmd_ep, "ipc://%s/run/store-cmd.sock", data_dir);
    snprintf(c->pub_ep, sizeof c->pub_ep, "ipc://%s/run/store-pub.sock", data_dir);
    if (cfg_str("RELAY_CMD_ENDPOINT", c->cmd_ep, sizeof c->cmd_ep, err) < 0 ||
        cfg_str("RELAY_PUB_ENDPOINT", c->pub_ep, sizeof c->pub_ep, err) < 0)
        return -1;
    if (!c->center[0]) {
        snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: required (tcp://HOST:PORT of the center's CENTER_PORT)");
        return -1;
    }
    /* CENTER_ENDPOINT=tcp://host:P -> commands on P, stream on P+1. A replicated center: one
     * tcp://HOST:PORT per member, comma-separated, in member order. */
    char list[sizeof c->center], *rest = list, *tok;
    snprintf(list, sizeof list, "%s", c->center);
    int nm = 0;
    while ((tok = strsep(&rest, ","))) {
        const char *colon = strrchr(tok, ':');
        char *end;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
        if (strncmp(tok, "tcp://", 6) != 0 || !colon || *end || port == 0 || port >= 65535 || nm == 7) {
            snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: invalid value '%s' (want tcp://HOST:PORT, or one per member "
                     "of a replicated center, comma-separated, at most 7)", tok);
            return -1;
        }
        size_t lc = strlen(c->center_cmd), lp = strlen(c->center_pub);
        snprintf(c->center_cmd + lc, sizeof c->center_cmd - lc, "%s%s", nm ? "," : "", tok);
        snprintf(c->center_pub + lp, sizeof c->center_pub - lp, "%s%.*s:%lu", nm ? "," : "", (int)(colon - tok), tok,
                 port + 1);
        nm++;
    }
    int a = curve_key_load("CURVE_SERVER_PUBLIC_KEY", c->srv_pub, err);
    int b = a < 0 ? -1 : curve_key_load("CURVE_PUBLIC_KEY", c->cli_pub, err);
    int k = b < 0 ? -1 : curve_key_load("CURVE_SECRET_KEY", c->cli_sec, err);
    if (a < 0 || b < 0 || k < 0)
        return -1;
    if (a + b + k != 0 && a + b + k != 3) {
        snprintf(err, CFG_ERR_LEN,
                 "CURVE_SERVER_PUBLIC_KEY, CURVE_PUBLIC_KEY and CURVE_SECRET_KEY: set all three or none");
        return -1;
    }
    c->curve = a + b + k == 3;
    /* A plain link carries every write of the region to the center unauthenticated: only when
     * asked for (CENTER_INSECURE=true, the center's own switch). */
    bool insecure = false;
    if (cfg_bool("CENTER_INSECURE", &insecure, err) < 0)
        return -1;
    if (!c->curve && !insecure) {
        snprintf(err, CFG_ERR_LEN,
                 "CENTER_ENDPOINT: the link to the center needs CurveZMQ: set CURVE_SERVER_PUBLIC_KEY, CURVE_PUBLIC_KEY "
                 "and CURVE_SECRET_KEY, or CENTER_INSECURE=true on a network you trust");
        return -1;
    }
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "sync-relay",
    .summary = "A leaf region's one link to the center: forwards commands, re-publishes the change stream to the\n"
               "region's cache-nodes and keeps a window of it for their catch-ups.",
    .usage = "",
    .procs = ENVREG_RELAY,
};

int main(int argc, char **argv)
{
    relay_config_t cfg;
    cli_start(argc, argv, &s_cli, "relay", s_config, &cfg);
    cli_stop_on_signals(&s_stop);
    char err[CFG_ERR_LEN] = "";

    void *zctx = zmq_ctx_new();
    relay_t *r;
    int rc = relay_new(zctx, &cfg, &r, err);
    if (rc < 0) {
        LOG(LOG_ERROR, "%s", err);
        zmq_ctx_term(zctx);
        return rc == -2 ? 2 : 1;
    }
    if (!cfg.curve)
        LOG(LOG_WARN, "CENTER_INSECURE=true: the link to %s has no CurveZMQ: it is neither authenticated nor encrypted",
            cfg.center);
    LOG(LOG_NOTICE, "ready cmd=%s pub=%s center=%s curve=%s", cfg.cmd_ep, cfg.pub_ep, cfg.center,
        cfg.curve ? "on" : "off");
    char ready[1200];
    snprintf(ready, sizeof ready, "relay cmd=%s pub=%s center=%s", cfg.cmd_ep, cfg.pub_ep, cfg.center);
    zu_signal_ready(ready);

    rc = relay_run(r, &s_stop);
    LOG(LOG_NOTICE, "stopping");
    relay_destroy(&r);
    zmq_ctx_term(zctx);
    LOG(LOG_NOTICE, "stopped");
    return rc < 0 ? 1 : 0;
}
