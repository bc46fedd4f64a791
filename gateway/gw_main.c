/* gw_main.c -- the gateway process: the top of its layers (gateway/gw_thread.c and below).
 *
 * Startup: read and validate the whole environment (gw_config.c: an invalid value names its
 * variable, exit 2), name the routes for the metrics, register the one h2o handler (gw_http.c),
 * bind one listening socket that every thread accepts on (a port already in use is exit 2), start
 * CACHE_DNS discovery and the event-loop threads, and print the ready line once every thread is
 * ready (at most 5 s: with the cache tier down the gateway still starts, and readiness says so).
 *
 * Signals are blocked in every thread; this thread waits for SIGTERM/SIGINT with sigwait, takes the
 * listening socket out of LISTEN, and stops the threads (each drains gracefully: gw_thread.c).
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "gw_config.h"
#include "gw_discovery.h"
#include "gw_http.h"
#include "gw_metrics.h"
#include "gw_notifier.h"
#include "gw_thread.h"
#include "gw_upstream.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static h2o_globalconf_t s_conf;

/* ==== the listening socket =================================================================== */

/* One listening socket for the whole process; every thread accepts on it (h2o's own server does
 * the same with a dup'ed fd). No SO_REUSEPORT: with it a second gateway started on the same port
 * would silently share it, and clients would alternate between two different nodes. A port in
 * use is therefore a startup error (exit 2) naming it. */
static int s_listen(int port_in, int *port_out, char *err, int *errno_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    *errno_out = 0;
    if (strchr(gw_cfg.addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port_in);
        if (inet_pton(AF_INET6, gw_cfg.addr, &a->sin6_addr) != 1)
            goto bad_addr;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port_in);
        if (inet_pton(AF_INET, gw_cfg.addr, &a->sin_addr) != 1)
            goto bad_addr;
        sl = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0) {
        *errno_out = errno;
        if (errno == EADDRINUSE)
            snprintf(err, CFG_ERR_LEN,
                     "SERVICE_PORT: %s:%d is already in use (another node or program listens there; stop it or "
                     "choose another SERVICE_PORT)",
                     gw_cfg.addr, port_in);
        else
            snprintf(err, CFG_ERR_LEN, "listen on %s:%d: %s", gw_cfg.addr, port_in, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
bad_addr:
    snprintf(err, CFG_ERR_LEN, "SERVICE_ADDR: invalid address '%s' (an IPv4 or IPv6 literal)", gw_cfg.addr);
    return -1;
}

static int s_config(void *arg, char *err)
{
    (void)arg;
    return gw_config_load(err);
}

static const cli_desc_t s_cli = {
    .name = "gateway",
    .summary = "The HTTP gateway of a presence node: the REST API, SSE watch streams, health and metrics,\n"
               "in front of the cache-nodes (CACHE_ENDPOINTS). Configured by the environment only.",
    .usage = "",
    .procs = ENVREG_GATEWAY,
};

int main(int argc, char **argv)
{
    cli_start(argc, argv, &s_cli, "gw", s_config, NULL);
    char err[CFG_ERR_LEN] = "";
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int nroutes;
    const char *const *labels = gw_http_route_labels(&nroutes);
    gw_metrics_init(labels, nroutes);

    h2o_config_init(&s_conf);
    s_conf.server_name = h2o_iovec_init(H2O_STRLIT("presence"));
    s_conf.max_request_entity_size = 4 * GW_BODY_MAX; /* h2o answers above this; we answer 413 above GW_BODY_MAX */
    s_conf.http1.req_timeout = gw_cfg.http_timeout_ms;
    s_conf.http2.idle_timeout = gw_cfg.http_timeout_ms;
    h2o_hostconf_t *host = h2o_config_register_host(&s_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof *h);
    h->on_req = gw_http_on_req;

    int bound = 0, lerr = 0;
    int listen_fd = s_listen((int)gw_cfg.port, &bound, err, &lerr);
    if (listen_fd < 0) {
        LOG(LOG_ERROR, "%s", err);
        return lerr == EADDRINUSE || lerr == 0 ? 2 : 1;
    }
    if (gw_cfg.cache_dns && gw_discovery_start(err, sizeof err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    void *zctx = zmq_ctx_new();
    if (gw_cfg.notifier_ep[0] && gw_notifier_start(zctx, gw_cfg.notifier_ep, err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    gw_thread_start_all(&s_conf, listen_fd, zctx, (int)gw_cfg.threads);
    /* Say ready once every thread has heard from a cache-node (bounded: with the cache tier down
     * the gateway still starts, and readiness reports it). */
    uint64_t until = util_mono_ms() + 5000;
    while (gw_thread_ready_count() < (int)gw_cfg.threads && util_mono_ms() < until) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
    LOG(LOG_NOTICE, "ready http=%s:%d threads=%llu cache_nodes=%d node_id=%s auth_reads=%s", gw_cfg.addr, bound,
        (unsigned long long)gw_cfg.threads, gw_upstream_configured(), gw_cfg.node_id, gw_cfg.auth_reads ? "required" : "public");
    char ready[128];
    snprintf(ready, sizeof ready, "gateway http=%s:%d", gw_cfg.addr, bound);
    zu_signal_ready(ready);

    int sig = 0;
    sigwait(&sigs, &sig);
    LOG(LOG_NOTICE, "signal %d: stopping (grace %llu ms)", sig, (unsigned long long)gw_cfg.shutdown_grace_ms);
    /* Refuse new connections at once: the threads share the listening socket, and it closes only
     * with its last fd. shutdown() takes it out of LISTEN for every dup (Linux). */
    shutdown(listen_fd, SHUT_RDWR);
    if (gw_cfg.cache_dns)
        gw_discovery_stop();
    gw_thread_stop_all();
    gw_notifier_stop();
    close(listen_fd);
    zmq_ctx_term(zctx);
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
