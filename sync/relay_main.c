/* relay_main.c -- the sync-relay process: the environment, the signals, one relay run until
 * SIGTERM/SIGINT (the relay itself is sync/relay.c).
 *
 * A configuration error names its variable and exits 2 before anything is bound. The ready line
 * goes out once the region's sockets are bound and the link to the center is being made.
 */
#include "cli.h"
#include "cfg.h"
#include "envreg.h"
#include "log.h"
#include "relay.h"
#include "zutil.h"

#include <signal.h>
#include <stdio.h>
#include <zmq.h>

static volatile sig_atomic_t s_stop;

static void on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
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
    cli_handle(argc, argv, &s_cli);
    char err[CFG_ERR_LEN] = "";
    if (log_init("relay", err, sizeof err) < 0) {
        fprintf(stderr, "sync-relay: %s\n", err);
        return 2;
    }
    cli_check_env(); /* before the configuration: a typo is named even when it makes the rest fail */
    relay_config_t cfg;
    if (relay_config_load(&cfg, err) < 0) {
        fprintf(stderr, "sync-relay: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    void *zctx = zmq_ctx_new();
    relay_t *r;
    int rc = relay_new(zctx, &cfg, &r, err);
    if (rc < 0) {
        LOG(LOG_ERROR, "%s", err);
        zmq_ctx_term(zctx);
        return rc == -2 ? 2 : 1;
    }
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
