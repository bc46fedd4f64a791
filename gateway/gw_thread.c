/* gw_thread.c -- the gateway's event-loop threads (see gw_thread.h).
 *
 * Each thread owns an h2o evloop and context (its gw_ctx_t: gw_ctx.h), a listener on a dup of the
 * process's one listening socket, its upstream (one DEALER per cache-node), its watch hub, and the
 * table of its connections. It accepts connections itself (not h2o_evloop_socket_accept) so it
 * knows the fd behind each one (gw_conns.h).
 *
 * Accept gate: a thread accepts connections once it is ready -- a cache-node has answered it
 * (the upstream's on_answer) and its watch hub is live (it has caught up with the change stream,
 * so it can answer resumes from its window) -- or ACCEPT_WAIT_MS after it started, whichever comes
 * first. Accepting at once made a restarted gateway answer 503 for up to a ping interval: its
 * first sends fail while the DEALERs are still connecting, which marks every node down.
 * Meanwhile clients wait in the listen backlog.
 *
 * Connection bounds: a thread stops accepting while the process holds MAX_CONNECTIONS
 * connections, and while accept() fails for want of file descriptors (EMFILE/ENFILE: the listener
 * would otherwise stay readable and spin the loop); both resume from a PAUSE_MS timer. Each pause
 * is counted and logged (rate-limited). An accepted connection's first request head goes through
 * the front (gw_front.h) before h2o.
 *
 * Graceful stop: close the listener, ask h2o to shut connections down (HTTP/2 GOAWAY, HTTP/1
 * close after the response), end the watch streams, keep serving until the requests in flight are
 * answered or SHUTDOWN_GRACE_MS passes, then tear the sockets down.
 *
 * Threads share only read-only configuration, the rate-limit tables (gw_ratelimit.c: striped
 * spinlocks), the metrics (relaxed atomics), the discovery table (gw_discovery.c: a mutex) and the
 * watch stream count (an atomic). Signals are blocked in every one (main waits for them).
 */
#include "gw_thread.h"
#include "gw_config.h"
#include "gw_ctx.h"
#include "gw_front.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_nearcall.h"
#include "gw_watch_hub.h"
#include "gw_ws.h"
#include "log.h"
#include "util.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a thread waits for a cache-node's first answer before it accepts connections anyway. */
#define ACCEPT_WAIT_MS 1000
/* How long accepting pauses at MAX_CONNECTIONS or out of file descriptors before it looks again. */
#define PAUSE_MS 100

typedef struct gw_thread {
    gw_ctx_t cx; /* first: what the request path sees */
    pthread_t tid;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_timeout_t accept_to;
    h2o_timeout_entry_t accept_timer; /* accept even if not ready by then */
    h2o_timeout_t pause_to;
    h2o_timeout_entry_t pause_timer; /* accepting paused (MAX_CONNECTIONS, EMFILE): look again */
    bool stopping;
    bool node_answered; /* a cache-node has answered this thread */
    bool reported_up;   /* counted in s_ready */
    bool accepting;     /* the listener is being read */
} gw_thread_t;

static gw_thread_t *s_threads;
static int s_nthreads;
static h2o_globalconf_t *s_conf;
static int s_listen_fd = -1;
static void *s_zctx;
static atomic_int s_stop;
static atomic_int s_ready;
static pthread_barrier_t s_started;

/* ==== accepting ================================================================================ */

static void on_accept(h2o_socket_t *listener, const char *err);

static void s_accept_start(gw_thread_t *t)
{
    if (t->accepting || !t->listener || t->stopping)
        return;
    t->accepting = true;
    h2o_socket_read_start(t->listener, on_accept);
}

/* Stop reading the listener for PAUSE_MS (new clients wait in the backlog meanwhile). */
static void s_accept_pause(gw_thread_t *t)
{
    if (!t->accepting)
        return;
    t->accepting = false;
    h2o_socket_read_stop(t->listener);
    if (!h2o_timeout_is_linked(&t->pause_timer))
        h2o_timeout_link(t->cx.h2o.loop, &t->pause_to, &t->pause_timer);
}

static void on_pause_timer(h2o_timeout_entry_t *e)
{
    gw_thread_t *t = H2O_STRUCT_FROM_MEMBER(gw_thread_t, pause_timer, e);
    if (atomic_load_explicit(&gw_metrics.connections, memory_order_relaxed) >= (int64_t)gw_cfg.max_connections)
        h2o_timeout_link(t->cx.h2o.loop, &t->pause_to, &t->pause_timer); /* still full */
    else
        s_accept_start(t);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    gw_thread_t *t = listener->data;
    if (err)
        return;
    /* Accept a bounded number per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64; i++) {
        if (atomic_load_explicit(&gw_metrics.connections, memory_order_relaxed) >= (int64_t)gw_cfg.max_connections) {
            atomic_fetch_add(&gw_metrics.conns_refused, 1);
            LOG_RATELIMITED(LOG_WARN, 10000, "MAX_CONNECTIONS=%llu reached: accepting paused (new clients wait)",
                            (unsigned long long)gw_cfg.max_connections);
            s_accept_pause(t);
            return;
        }
        int fd = accept4(s_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Still readable: returning would spin. Pause; connections closing free fds. */
                atomic_fetch_add(&gw_metrics.accept_paused, 1);
                LOG_RATELIMITED(LOG_WARN, 10000, "accept: %s: accepting paused for %d ms", strerror(errno), PAUSE_MS);
                s_accept_pause(t);
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            return; /* EAGAIN: nothing more queued */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        h2o_socket_t *sock = h2o_evloop_socket_create(t->cx.h2o.loop, fd, H2O_SOCKET_FLAG_IS_ACCEPTED_CONNECTION);
        gw_conns_add(t->cx.conns, sock, fd);
        gw_front_accept(&t->cx, &t->accept_ctx, sock);
    }
}

/* Ready (a cache-node answered and the watch hub is live): tell main, start accepting. */
static void s_ready_check(gw_thread_t *t)
{
    if (t->reported_up || !t->node_answered || !gw_watch_hub_live(t->cx.watch))
        return;
    t->reported_up = true;
    atomic_fetch_add(&s_ready, 1);
    s_accept_start(t);
}

static void on_node_answer(void *arg)
{
    gw_thread_t *t = arg;
    t->node_answered = true;
    s_ready_check(t);
}

static void on_watch_live(void *arg)
{
    s_ready_check(arg);
}

/* Not ready in time: serve anyway (health and readiness say so). */
static void on_accept_timer(h2o_timeout_entry_t *e)
{
    s_accept_start(H2O_STRUCT_FROM_MEMBER(gw_thread_t, accept_timer, e));
}

/* ==== a thread's life ========================================================================== */

static void s_open(gw_thread_t *t)
{
    gw_ctx_t *cx = &t->cx;
    char err[256];
    h2o_context_init(&cx->h2o, h2o_evloop_create(), s_conf);
    t->accept_ctx.ctx = &cx->h2o;
    t->accept_ctx.hosts = s_conf->hosts;
    gw_buf_init(&cx->out);
    proto_buf_init(&cx->pb);
    cx->authcache = gw_cfg.jwt_cache_size ? gw_authcache_new(gw_cfg.jwt_cache_size) : NULL;
    cx->conns = gw_conns_new();
    cx->up = gw_upstream_new(&cx->h2o, cx->idx, s_zctx, on_node_answer, t, err);
    if (!cx->up || gw_watch_hub_new(cx, s_zctx, on_watch_live, t, &cx->watch, err) < 0) {
        LOG(LOG_ERROR, "thread %d: %s", cx->idx, err);
        exit(1);
    }
    gw_ws_attach(cx); /* WebSockets; thread 0 also holds the lease (gw_lease.h) */
    cx->near = gw_nearcall_new(cx);
    /* h2o gets its own dup of the listening fd (it closes it); we accept on ours. */
    t->listener = h2o_evloop_socket_create(cx->h2o.loop, dup(s_listen_fd), H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_timeout_init(cx->h2o.loop, &t->accept_to, ACCEPT_WAIT_MS);
    t->accept_timer.cb = on_accept_timer;
    h2o_timeout_init(cx->h2o.loop, &t->pause_to, PAUSE_MS);
    t->pause_timer.cb = on_pause_timer;
    h2o_timeout_link(cx->h2o.loop, &t->accept_to, &t->accept_timer);
}

/* Graceful stop, then tear down. */
static void s_close(gw_thread_t *t)
{
    gw_ctx_t *cx = &t->cx;
    t->stopping = true;
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    t->listener = NULL;
    if (h2o_timeout_is_linked(&t->accept_timer))
        h2o_timeout_unlink(&t->accept_timer);
    if (h2o_timeout_is_linked(&t->pause_timer))
        h2o_timeout_unlink(&t->pause_timer);
    gw_ws_stop(cx); /* 1001 to every WebSocket, their graces, then the lease's end */
    gw_front_close_all();
    h2o_context_request_shutdown(&cx->h2o);
    gw_watch_hub_stop(cx->watch);
    gw_conns_stop_watching(cx->conns);
    uint64_t deadline = util_mono_ms() + gw_cfg.shutdown_grace_ms;
    while (atomic_load(&gw_metrics.inflight) > 0 && util_mono_ms() < deadline)
        h2o_evloop_run(cx->h2o.loop, 50);
    gw_upstream_destroy(&cx->up);
    gw_nearcall_destroy(&cx->near);
    for (int i = 0; i < 5; i++)
        h2o_evloop_run(cx->h2o.loop, 1);
    gw_authcache_free(cx->authcache);
    gw_conns_destroy(&cx->conns);
    gw_guard_thread_done();
}

static void *s_thread_main(void *arg)
{
    gw_thread_t *t = arg;
    s_open(t);
    pthread_barrier_wait(&s_started);
    while (!atomic_load(&s_stop))
        h2o_evloop_run(t->cx.h2o.loop, 100);
    s_close(t);
    return NULL;
}

void gw_thread_start_all(h2o_globalconf_t *conf, int listen_fd, void *zctx, int n)
{
    s_conf = conf;
    s_listen_fd = listen_fd;
    s_zctx = zctx;
    s_nthreads = n;
    s_threads = xcalloc((size_t)n, sizeof *s_threads);
    pthread_barrier_init(&s_started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        s_threads[i].cx.idx = i;
        pthread_create(&s_threads[i].tid, NULL, s_thread_main, &s_threads[i]);
    }
    pthread_barrier_wait(&s_started); /* every thread is serving */
}

int gw_thread_ready_count(void)
{
    return atomic_load(&s_ready);
}

void gw_thread_stop_all(void)
{
    atomic_store(&s_stop, 1);
    for (int i = 0; i < s_nthreads; i++)
        pthread_join(s_threads[i].tid, NULL);
}
