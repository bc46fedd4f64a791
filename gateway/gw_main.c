/* gw_main.c -- the gateway process: configuration, listeners, event-loop threads, shutdown.
 *
 * Startup: read and validate the whole environment (an invalid value names its variable and
 * stops the process), bind one listening socket that every thread accepts on (a port already in
 * use is an error, exit 2), start the threads, and print the ready line once every thread is
 * serving.
 *
 * Signals are blocked in every thread; the main thread waits for SIGTERM/SIGINT with sigwait and
 * then asks the threads to stop: each closes its listener, asks h2o to shut its connections down
 * gracefully (HTTP/2 GOAWAY, HTTP/1 close after the response), keeps serving until the requests in
 * flight are answered or SHUTDOWN_GRACE_MS passes, then tears its sockets down.
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "gw.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How long a thread waits for a cache-node's first answer before it accepts connections anyway. */
#define ACCEPT_WAIT_MS 1000

atomic_int gw_threads_with_nodes;

static h2o_globalconf_t s_conf;
static gw_thread_t *s_threads;
static int s_listen_fd = -1;
static void *s_zctx;
static atomic_int s_stop;
static pthread_barrier_t s_started;

/* ==== listeners and threads ================================================================== */

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

/* ==== connections ============================================================================= *
 * We accept connections ourselves (rather than h2o_evloop_socket_accept) so each thread knows the
 * fd behind every h2o socket: h2o 2.2.5 offers no way to abort a streaming response, and a
 * client that does not read its SSE stream must be cut. An entry lives until h2o closes the socket
 * (its public on_close hook). */

typedef struct gw_connent {
    struct gw_connent *next;
    gw_thread_t *t;
    h2o_socket_t *sock;
    int fd;
} gw_connent_t;

static size_t s_conn_slot(const gw_thread_t *t, const h2o_socket_t *sock)
{
    return util_mix64((uint64_t)(uintptr_t)sock) & (t->conns_size - 1);
}

static void on_conn_close(void *data)
{
    gw_connent_t *e = data;
    gw_thread_t *t = e->t;
    for (gw_connent_t **pp = &t->conns[s_conn_slot(t, e->sock)]; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            t->conns_count--;
            break;
        }
    free(e);
}

static void s_conn_add(gw_thread_t *t, h2o_socket_t *sock, int fd)
{
    if (t->conns_count + 1 > t->conns_size / 2) {
        size_t ns = t->conns_size ? t->conns_size * 2 : 1024;
        gw_connent_t **nt = xcalloc(ns, sizeof *nt);
        for (size_t i = 0; i < t->conns_size; i++)
            for (gw_connent_t *x = t->conns[i], *nx; x; x = nx) {
                nx = x->next;
                size_t b = util_mix64((uint64_t)(uintptr_t)x->sock) & (ns - 1);
                x->next = nt[b];
                nt[b] = x;
            }
        free(t->conns);
        t->conns = nt;
        t->conns_size = ns;
    }
    gw_connent_t *e = xmalloc(sizeof *e);
    e->t = t;
    e->sock = sock;
    e->fd = fd;
    size_t b = s_conn_slot(t, sock);
    e->next = t->conns[b];
    t->conns[b] = e;
    t->conns_count++;
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = e;
}

int gw_conn_shutdown(h2o_req_t *req)
{
    gw_thread_t *t = H2O_STRUCT_FROM_MEMBER(gw_thread_t, ctx, req->conn->ctx);
    if (req->version >= 0x200 || !req->conn->callbacks->get_socket || !t->conns_size)
        return -1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (!sock)
        return -1;
    for (gw_connent_t *e = t->conns[s_conn_slot(t, sock)]; e; e = e->next)
        if (e->sock == sock) {
            /* The pending write fails; h2o closes the connection and stops the response. */
            shutdown(e->fd, SHUT_RDWR);
            return 0;
        }
    return -1;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    gw_thread_t *t = listener->data;
    if (err)
        return;
    /* Accept a bounded number per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h2o_socket_t *sock = h2o_evloop_socket_create(t->ctx.loop, fd, H2O_SOCKET_FLAG_IS_ACCEPTED_CONNECTION);
        s_conn_add(t, sock, fd);
        h2o_accept(&t->accept_ctx, sock);
    }
}

static void on_node_answer(void *arg)
{
    gw_thread_t *t = arg;
    t->node_answered = true;
    gw_thread_ready_check(t);
}

/* Not ready in time: serve anyway (health and readiness say so). */
static void on_accept_timer(h2o_timeout_entry_t *e)
{
    gw_accept_start(H2O_STRUCT_FROM_MEMBER(gw_thread_t, accept_timer, e));
}

void gw_thread_ready_check(gw_thread_t *t)
{
    if (t->reported_up || !t->node_answered || !gw_watch_live(t))
        return;
    t->reported_up = true;
    atomic_fetch_add(&gw_threads_with_nodes, 1);
    gw_accept_start(t);
}

void gw_accept_start(gw_thread_t *t)
{
    if (t->accepting || !t->listener || t->stopping)
        return;
    t->accepting = true;
    h2o_socket_read_start(t->listener, on_accept);
}

static void *s_thread_main(void *arg)
{
    gw_thread_t *t = arg;
    char err[CFG_ERR_LEN];
    h2o_context_init(&t->ctx, h2o_evloop_create(), &s_conf);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = s_conf.hosts;
    gw_buf_init(&t->out);
    proto_buf_init(&t->pb);
    t->authcache = gw_cfg.jwt_cache_size ? gw_authcache_new(gw_cfg.jwt_cache_size) : NULL;
    t->up = gw_upstream_new(&t->ctx, t->idx, s_zctx, on_node_answer, t, err);
    if (!t->up || gw_watch_init(t, s_zctx, err) < 0) {
        LOG(LOG_ERROR, "thread %d: %s", t->idx, err);
        exit(1);
    }
    /* h2o gets its own dup of the listening fd (it closes it); we accept on ours. */
    t->listener = h2o_evloop_socket_create(t->ctx.loop, dup(s_listen_fd), H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    /* Connections are accepted once a cache-node has answered this thread (gw_upstream.c), or
     * after ACCEPT_WAIT_MS without one. Accepting at once made a restarted gateway answer 503 for
     * up to a ping interval: its first sends fail while the DEALERs are still connecting, which
     * marks every node down until the next ping. Meanwhile clients wait in the listen backlog. */
    h2o_timeout_init(t->ctx.loop, &t->accept_to, ACCEPT_WAIT_MS);
    t->accept_timer.cb = on_accept_timer;
    h2o_timeout_link(t->ctx.loop, &t->accept_to, &t->accept_timer);
    pthread_barrier_wait(&s_started);

    while (!atomic_load(&s_stop))
        h2o_evloop_run(t->ctx.loop, 100);

    /* Graceful stop. */
    t->stopping = true;
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    t->listener = NULL;
    h2o_context_request_shutdown(&t->ctx);
    gw_watch_fini(t);
    uint64_t deadline = util_mono_ms() + gw_cfg.shutdown_grace_ms;
    while (atomic_load(&gw_metrics.inflight) > 0 && util_mono_ms() < deadline)
        h2o_evloop_run(t->ctx.loop, 50);
    if (h2o_timeout_is_linked(&t->accept_timer))
        h2o_timeout_unlink(&t->accept_timer);
    gw_upstream_destroy(&t->up);
    for (int i = 0; i < 5; i++)
        h2o_evloop_run(t->ctx.loop, 1);
    gw_authcache_free(t->authcache);
    return NULL;
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
    cli_handle(argc, argv, &s_cli);
    char err[CFG_ERR_LEN] = "";
    if (log_init("gw", err, sizeof err) < 0) {
        fprintf(stderr, "gateway: %s\n", err);
        return 2;
    }
    cli_check_env(); /* before the configuration: a typo is named even when it makes the rest fail */
    if (gw_config_load(err) < 0) {
        fprintf(stderr, "gateway: %s\n", err);
        return 2;
    }
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
    s_listen_fd = s_listen((int)gw_cfg.port, &bound, err, &lerr);
    if (s_listen_fd < 0) {
        LOG(LOG_ERROR, "%s", err);
        return lerr == EADDRINUSE || lerr == 0 ? 2 : 1;
    }
    if (gw_cfg.cache_dns && gw_discovery_start(err, sizeof err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 1;
    }
    s_zctx = zmq_ctx_new();
    s_threads = xcalloc(gw_cfg.threads, sizeof *s_threads);
    pthread_barrier_init(&s_started, NULL, (unsigned)gw_cfg.threads + 1);
    for (uint64_t i = 0; i < gw_cfg.threads; i++) {
        s_threads[i].idx = (int)i;
        pthread_create(&s_threads[i].tid, NULL, s_thread_main, &s_threads[i]);
    }
    pthread_barrier_wait(&s_started); /* every thread is serving */
    /* Say ready once every thread has heard from a cache-node (bounded: with the cache tier down
     * the gateway still starts, and readiness reports it). */
    uint64_t until = util_mono_ms() + 5000;
    while (atomic_load(&gw_threads_with_nodes) < (int)gw_cfg.threads && util_mono_ms() < until) {
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
    atomic_store(&s_stop, 1);
    /* Refuse new connections at once: the threads share the listening socket, and it closes only
     * with its last fd. shutdown() takes it out of LISTEN for every dup (Linux). */
    shutdown(s_listen_fd, SHUT_RDWR);
    if (gw_cfg.cache_dns)
        gw_discovery_stop();
    for (uint64_t i = 0; i < gw_cfg.threads; i++)
        pthread_join(s_threads[i].tid, NULL);
    close(s_listen_fd);
    zmq_ctx_term(s_zctx);
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
