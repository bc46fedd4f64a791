/* gw_conns.c -- the connections a gateway thread can cut and watch (see gw_conns.h).
 *
 * Keyed by the h2o socket's address in an idtab; each entry is one allocation freed by the
 * socket's on_close hook. One thread.
 *
 * Watching a departed peer: once an HTTP/1 response streams, h2o stops reading the socket, so a
 * client that closes or resets is noticed only when a write fails -- for an idle watch stream, a
 * ping interval later (and never for a stream whose last write went through). So the thread keeps
 * one epoll set of its own, registered in its h2o loop like any fd, in which a watched socket
 * waits for EPOLLRDHUP/EPOLLHUP/EPOLLERR only: no EPOLLIN, so bytes a client sends cannot make it
 * spin, and nothing is read. Events carry a watch id, looked up again before use, so a watch that
 * ended earlier in the same batch is skipped. A watched socket also gets TCP keepalive and
 * TCP_USER_TIMEOUT, so a peer that vanished without a FIN (a half-open connection) errs in
 * bounded time.
 */
#include "gw_conns.h"
#include "gw_metrics.h"
#include "idtab.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
    idtab_link_t link;  /* by the h2o socket's address */
    idtab_link_t wlink; /* by watch id, while watched */
    gw_conns_t *owner;
    h2o_socket_t *sock;
    int fd;
    void (*on_gone)(void *arg);
    void *arg;
    uint64_t serial;         /* this connection among all the table has had */
    double cancel_tokens;    /* HTTP/2 streams it may still cancel (-1: a full budget) */
    uint64_t cancel_ms;      /* ... as of then */
    uint32_t cancels_pending; /* cancels noted this loop turn, not settled yet */
    bool over;               /* found over budget this turn: streams were refused */
    bool cut;                /* cut for cancelling too many */
} conn_t;

struct gw_conns {
    idtab_t tab;
    idtab_t watches;
    int epfd;              /* the departure set (-1 until the first watch) */
    h2o_socket_t *epsock;  /* epfd in the thread's loop */
    uint64_t next_wid;
    uint64_t next_serial;
    gw_conns_ref_t *touched; /* connections with cancels to settle */
    uint32_t ntouched, touched_cap;
};

gw_conns_t *gw_conns_new(void)
{
    gw_conns_t *c = xcalloc(1, sizeof *c);
    idtab_init(&c->tab);
    idtab_init(&c->watches);
    c->epfd = -1;
    return c;
}

void gw_conns_stop_watching(gw_conns_t *c)
{
    if (!c || !c->epsock)
        return;
    h2o_socket_read_stop(c->epsock);
    h2o_socket_close(c->epsock); /* closes epfd */
    c->epsock = NULL;
    c->epfd = -1;
    idtab_iter_t it;
    idtab_iter_init(&it, &c->watches);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        conn_t *e = IDTAB_ENTRY(l, conn_t, wlink);
        idtab_remove(&c->watches, l);
        e->on_gone = NULL;
    }
}

void gw_conns_destroy(gw_conns_t **cp)
{
    gw_conns_t *c = *cp;
    if (!c)
        return;
    gw_conns_stop_watching(c);
    /* Sockets still open keep their hook: detach them so a later close frees nothing of ours. */
    idtab_iter_t it;
    idtab_iter_init(&it, &c->tab);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        conn_t *e = IDTAB_ENTRY(l, conn_t, link);
        idtab_remove(&c->tab, l);
        e->sock->on_close.cb = NULL;
        e->sock->on_close.data = NULL;
        free(e);
        atomic_fetch_sub_explicit(&gw_metrics.connections, 1, memory_order_relaxed);
    }
    idtab_fini(&c->tab);
    idtab_fini(&c->watches);
    free(c->touched);
    free(c);
    *cp = NULL;
}

static void on_conn_close(void *data)
{
    conn_t *e = data;
    if (e->on_gone) /* the fd is closed by now: the kernel took it out of the epoll set */
        idtab_remove(&e->owner->watches, &e->wlink);
    idtab_remove(&e->owner->tab, &e->link);
    free(e);
    atomic_fetch_sub_explicit(&gw_metrics.connections, 1, memory_order_relaxed);
}

void gw_conns_add(gw_conns_t *c, h2o_socket_t *sock, int fd)
{
    conn_t *e = xcalloc(1, sizeof *e);
    e->link.id = (uint64_t)(uintptr_t)sock;
    e->owner = c;
    e->sock = sock;
    e->fd = fd;
    e->serial = ++c->next_serial;
    e->cancel_tokens = -1; /* full, set on first use */
    idtab_add(&c->tab, &e->link);
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = e;
    atomic_fetch_add_explicit(&gw_metrics.connections, 1, memory_order_relaxed);
}

static conn_t *s_conn_of(gw_conns_t *c, h2o_req_t *req)
{
    if (!req->conn->callbacks->get_socket)
        return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    idtab_link_t *l = sock ? idtab_find(&c->tab, (uint64_t)(uintptr_t)sock) : NULL;
    return l ? IDTAB_ENTRY(l, conn_t, link) : NULL;
}

int gw_conns_cut(gw_conns_t *c, h2o_req_t *req)
{
    if (req->version >= 0x200)
        return -1;
    return gw_conns_cut_any(c, req);
}

int gw_conns_cut_any(gw_conns_t *c, h2o_req_t *req)
{
    conn_t *e = s_conn_of(c, req);
    if (!e)
        return -1;
    /* The pending write fails, or the next read sees the end; h2o closes the connection and stops
     * what is running on it. */
    shutdown(e->fd, SHUT_RDWR);
    return 0;
}

/* ==== cancelled streams (HTTP/2 Rapid Reset) ==================================================== */

uint64_t gw_conns_serial(gw_conns_t *c, h2o_req_t *req, h2o_socket_t **sock)
{
    conn_t *e = s_conn_of(c, req);
    *sock = e ? e->sock : NULL;
    return e ? e->serial : 0;
}

static conn_t *s_by_serial(gw_conns_t *c, h2o_socket_t *sock, uint64_t serial)
{
    idtab_link_t *l = sock ? idtab_find(&c->tab, (uint64_t)(uintptr_t)sock) : NULL;
    conn_t *e = l ? IDTAB_ENTRY(l, conn_t, link) : NULL;
    return e && e->serial == serial ? e : NULL;
}

/* Refill e's budget up to now. */
static void s_refill(conn_t *e, double rate, double burst, uint64_t now_ms)
{
    if (e->cancel_tokens < 0)
        e->cancel_tokens = burst;
    else
        e->cancel_tokens = MIN(burst, e->cancel_tokens + (double)(now_ms - e->cancel_ms) * rate / 1000.0);
    e->cancel_ms = now_ms;
}

void gw_conns_note_cancel(gw_conns_t *c, h2o_socket_t *sock, uint64_t serial)
{
    conn_t *e = s_by_serial(c, sock, serial);
    if (!e || e->cut)
        return;
    if (!e->cancels_pending++) {
        if (c->ntouched == c->touched_cap) {
            c->touched_cap = c->touched_cap ? c->touched_cap * 2 : 16;
            c->touched = xrealloc(c->touched, c->touched_cap * sizeof *c->touched);
        }
        c->touched[c->ntouched++] = (gw_conns_ref_t){sock, serial};
    }
}

bool gw_conns_over_budget(gw_conns_t *c, h2o_req_t *req, double rate, double burst, uint64_t now_ms)
{
    conn_t *e = s_conn_of(c, req);
    if (!e)
        return false;
    if (e->cut)
        return true;
    if (!e->cancels_pending)
        return false;
    s_refill(e, rate, burst, now_ms);
    if (e->cancel_tokens >= (double)e->cancels_pending)
        return false;
    e->over = true; /* the settling cuts it whatever the refill: its streams were refused */
    return true;
}

uint32_t gw_conns_settle_cancels(gw_conns_t *c, double rate, double burst, uint64_t now_ms, gw_conns_ref_t *cut,
                                 uint32_t cut_max)
{
    uint32_t ncut = 0;
    for (uint32_t i = 0; i < c->ntouched; i++) {
        conn_t *e = s_by_serial(c, c->touched[i].sock, c->touched[i].serial);
        if (!e) /* it closed meanwhile: its streams went with it, no resets */
            continue;
        s_refill(e, rate, burst, now_ms);
        e->cancel_tokens -= (double)e->cancels_pending;
        e->cancels_pending = 0;
        if ((e->cancel_tokens < 0 || e->over) && !e->cut) {
            e->cut = true;
            shutdown(e->fd, SHUT_RDWR);
            if (ncut < cut_max)
                cut[ncut] = c->touched[i];
            ncut++;
        }
    }
    c->ntouched = 0;
    return ncut;
}

/* ==== departures ================================================================================= */

static void s_unwatch(gw_conns_t *c, conn_t *e)
{
    idtab_remove(&c->watches, &e->wlink);
    e->on_gone = NULL;
    e->arg = NULL;
    if (c->epfd >= 0)
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, e->fd, NULL);
}

static void on_departures(h2o_socket_t *sock, const char *err)
{
    gw_conns_t *c = sock->data;
    struct epoll_event evs[64];
    int n = epoll_wait(c->epfd, evs, 64, 0);
    for (int i = 0; i < n; i++) {
        idtab_link_t *l = idtab_find(&c->watches, evs[i].data.u64);
        if (!l)
            continue; /* ended earlier in this batch */
        conn_t *e = IDTAB_ENTRY(l, conn_t, wlink);
        void (*cb)(void *) = e->on_gone;
        void *arg = e->arg;
        s_unwatch(c, e);
        cb(arg);
    }
}

static int s_open_set(gw_conns_t *c, h2o_loop_t *loop)
{
    if (c->epfd >= 0)
        return 0;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0) {
        LOG_RATELIMITED(LOG_WARN, 10000, "watching departed clients is off: epoll_create1: %s", strerror(errno));
        return -1;
    }
    c->epsock = h2o_evloop_socket_create(loop, c->epfd, H2O_SOCKET_FLAG_DONT_READ);
    c->epsock->data = c;
    h2o_socket_read_start(c->epsock, on_departures);
    return 0;
}

uint64_t gw_conns_watch_peer(gw_conns_t *c, h2o_loop_t *loop, h2o_req_t *req, uint64_t idle_ms, void (*on_gone)(void *),
                             void *arg)
{
    if (req->version >= 0x200)
        return 0;
    conn_t *e = s_conn_of(c, req);
    if (!e || e->on_gone || s_open_set(c, loop) < 0)
        return 0;
    /* A peer that vanished without a word: keepalive probes after idle_ms of silence, and no
     * acknowledgement for idle_ms + 3 probes (data or probe) errs the socket. */
    int on = 1, idle = (int)MAX(1, idle_ms / 1000), intvl = (int)MAX(1, idle_ms / 3000), cnt = 3;
    unsigned int uto = (unsigned int)(idle_ms + 3 * (uint64_t)intvl * 1000);
    setsockopt(e->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(e->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(e->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(e->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(e->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof uto);
    e->wlink.id = ++c->next_wid;
    struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = e->wlink.id};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, e->fd, &ev) < 0)
        return 0;
    e->on_gone = on_gone;
    e->arg = arg;
    idtab_add(&c->watches, &e->wlink);
    return e->wlink.id;
}

void gw_conns_unwatch_peer(gw_conns_t *c, uint64_t id)
{
    idtab_link_t *l = id && c ? idtab_find(&c->watches, id) : NULL;
    if (l)
        s_unwatch(c, IDTAB_ENTRY(l, conn_t, wlink));
}
