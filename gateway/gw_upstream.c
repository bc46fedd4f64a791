/* gw_upstream.c -- ZeroMQ DEALERs to the cache-nodes, inside each thread's h2o event loop.
 *
 * The ZMQ_FD recipe (TECH-NOTES 1.4 and pitfall 1): each DEALER's ZMQ_FD is dup()ed and wrapped
 * in an h2o socket with H2O_SOCKET_FLAG_DONT_READ (h2o must never read libzmq's signaler); on
 * readiness, and after every send (scheduled on the context's zero timeout), we drain the socket
 * with non-blocking receives until EAGAIN, at most DRAIN_MAX messages per turn, rescheduling ourselves when
 * there is more. Nothing here blocks: sends use ZMQ_DONTWAIT, and with ZMQ_IMMEDIATE a send to a
 * node with no live connection fails at once (the node is marked down and the key goes to the
 * next node by the hash).
 *
 * Deferred replies: the HTTP request may be disposed (client gone, HTTP/2 RST) while a call is
 * out. Each call allocates a pointer-sized token from the request's pool with a dispose callback;
 * when the pool is cleared the token clears call->req. The call clears the token when it ends
 * first. (A refcounted call object would not work: h2o only runs dispose at refcount zero.)
 *
 * Node health: a node is down when a send to it fails, when a call to it misses its deadline, or
 * when the socket monitor reports its connection gone; it is up again when any reply from it
 * arrives. Every thread pings every node every PING_MS. Reads in flight to a node that
 * disconnects are re-sent to another node; writes are answered 503 (they may or may not have
 * reached the store -- the client retries, and PUT is idempotent in its outcome).
 */
#include "gw.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRAIN_MAX 1024
#define PING_MS 250

static void s_drain(gw_node_conn_t *nc);
static void s_queue(gw_node_conn_t *nc, gw_call_t *c);
static void on_flush_timer(h2o_timeout_entry_t *e);
static void s_apply_discovery(gw_thread_t *t);

/* ==== call table ============================================================================= */

static void s_ctab_insert(gw_thread_t *t, gw_call_t *c)
{
    if (t->ccount + 1 > t->csize / 2) {
        size_t nsize = t->csize ? t->csize * 2 : 1024;
        gw_call_t **nt = xcalloc(nsize, sizeof *nt);
        for (size_t i = 0; i < t->csize; i++)
            for (gw_call_t *x = t->ctab[i], *next; x; x = next) {
                next = x->hnext;
                size_t b = util_mix64(x->rid) & (nsize - 1);
                x->hnext = nt[b];
                nt[b] = x;
            }
        free(t->ctab);
        t->ctab = nt;
        t->csize = nsize;
    }
    size_t b = util_mix64(c->rid) & (t->csize - 1);
    c->hnext = t->ctab[b];
    t->ctab[b] = c;
    t->ccount++;
}

static gw_call_t *s_ctab_remove(gw_thread_t *t, uint64_t rid)
{
    if (!t->csize)
        return NULL;
    for (gw_call_t **pp = &t->ctab[util_mix64(rid) & (t->csize - 1)]; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->rid == rid) {
            gw_call_t *c = *pp;
            *pp = c->hnext;
            t->ccount--;
            return c;
        }
    }
    return NULL;
}

uint64_t gw_next_rid(gw_thread_t *t)
{
    return ++t->next_rid;
}

static void on_token_dispose(void *p)
{
    gw_call_t **tok = p;
    if (*tok) {
        (*tok)->req = NULL;
        (*tok)->token = NULL;
    }
}

static void s_complete(gw_call_t *c, const proto_msg_t *m, int status)
{
    if (h2o_timeout_is_linked(&c->te))
        h2o_timeout_unlink(&c->te);
    if (c->token)
        *c->token = NULL;
    c->token = NULL;
    c->cb(c, m, status);
    free(c->msg);
    free(c);
}

/* ==== node state ============================================================================= */

static void s_node_down(gw_node_conn_t *nc, const char *why)
{
    if (nc->up) {
        nc->up = false;
        if (!nc->seen)
            return; /* still connecting at startup: nothing to report */
        atomic_fetch_add(&gw_metrics.node_failovers, 1);
        LOG_RATELIMITED(LOG_WARN, 1000, "cache-node %d (%s) marked down: %s", nc->idx, nc->endpoint, why);
    }
}

int gw_nodes_up(gw_thread_t *t)
{
    int n = 0;
    for (int i = 0; i < gw_cfg.nnodes; i++)
        n += t->nodes[i].up;
    return n;
}

int gw_nodes_configured(void)
{
    return gw_cfg.cache_dns ? gw_discovery_assigned() : gw_cfg.nnodes;
}

int gw_route_key(gw_thread_t *t, const char *key, size_t klen)
{
    bool up[GW_MAX_NODES];
    for (int i = 0; i < gw_cfg.nnodes; i++)
        up[i] = t->nodes[i].up;
    return gw_rendezvous(key, klen, t->seeds, up, gw_cfg.nnodes);
}

int gw_any_node(gw_thread_t *t, int avoid)
{
    int fallback = -1;
    for (int k = 0; k < gw_cfg.nnodes; k++) {
        int i = (int)((t->next_rid + (uint64_t)k) % (uint64_t)gw_cfg.nnodes);
        if (!t->nodes[i].up)
            continue;
        if (i != avoid)
            return i;
        fallback = i;
    }
    return fallback;
}

static void s_schedule_drain(gw_node_conn_t *nc)
{
    if (!h2o_timeout_is_linked(&nc->drain))
        h2o_timeout_link(nc->t->ctx.loop, &nc->t->ctx.zero_timeout, &nc->drain);
}

/* ==== calls ================================================================================== */

static void on_call_timeout(h2o_timeout_entry_t *e)
{
    gw_call_t *c = H2O_STRUCT_FROM_MEMBER(gw_call_t, te, e);
    gw_thread_t *t = c->t;
    s_ctab_remove(t, c->rid);
    s_node_down(&t->nodes[c->node], "missed its deadline");
    if (c->type != PROTO_PING)
        atomic_fetch_add(&gw_metrics.upstream_timeouts, 1);
    s_complete(c, NULL, PROTO_ETIMEOUT);
}

static bool s_is_read(uint8_t type)
{
    return type == PROTO_GET || type == PROTO_MGET || type == PROTO_STATS || type == PROTO_PING;
}

gw_call_t *gw_call_send(gw_thread_t *t, h2o_req_t *req, int node, uint64_t rid, uint8_t type, const proto_buf_t *b,
                        gw_call_cb cb, void *arg)
{
    if (node < 0 || node >= gw_cfg.nnodes || !t->nodes[node].sock)
        return NULL; /* no such node, or a vacant slot */
    gw_node_conn_t *nc = &t->nodes[node];
    gw_call_t *c = xcalloc(1, sizeof *c);
    c->rid = rid;
    c->t = t;
    c->node = node;
    c->type = type;
    c->cb = cb;
    c->arg = arg;
    c->start_us = util_mono_us();
    c->te.cb = on_call_timeout;
    if (req) {
        c->req = req;
        c->token = h2o_mem_alloc_shared(&req->pool, sizeof(gw_call_t *), on_token_dispose);
        *c->token = c;
    }
    c->msg = xmalloc(b->len);
    memcpy(c->msg, b->data, b->len);
    c->msg_len = b->len;
    s_ctab_insert(t, c);
    h2o_timeout_link(t->ctx.loop, type == PROTO_PING ? &t->ping_timeout : &t->req_timeout, &c->te);
    s_queue(nc, c);
    return c;
}

/* ==== batching =============================================================================== */

static void s_queue(gw_node_conn_t *nc, gw_call_t *c)
{
    c->node = nc->idx;
    c->sent = false;
    if (nc->batch.n == nc->batch_cap) {
        nc->batch_cap = nc->batch_cap ? nc->batch_cap * 2 : 64;
        nc->batch_rids = xrealloc(nc->batch_rids, nc->batch_cap * sizeof *nc->batch_rids);
    }
    nc->batch_rids[nc->batch.n] = c->rid;
    proto_batch_add(&nc->batch, c->msg, c->msg_len);
    if (nc->batch.data.len >= PROTO_BATCH_SOFT_MAX) { /* big enough: send now, not at the turn's end */
        if (h2o_timeout_is_linked(&nc->flush))
            h2o_timeout_unlink(&nc->flush);
        on_flush_timer(&nc->flush);
        return;
    }
    if (!h2o_timeout_is_linked(&nc->flush))
        h2o_timeout_link(nc->t->ctx.loop, &nc->t->ctx.zero_timeout, &nc->flush);
}

/* Re-route a call that could not be sent, or whose node went away. Reads may always move;
 * commands that never left this process may move too (nobody saw them). */
static void s_reroute(gw_thread_t *t, gw_call_t *c, int from)
{
    /* Pings and stats are about one node; they are never moved. */
    bool movable = c->type != PROTO_PING && c->type != PROTO_STATS && (s_is_read(c->type) || !c->sent);
    int other = movable ? gw_any_node(t, from) : -1;
    if (other >= 0 && other != from) {
        atomic_fetch_add(&gw_metrics.upstream_retries, 1);
        s_ctab_insert(t, c);
        s_queue(&t->nodes[other], c);
        return;
    }
    if (c->type != PROTO_PING)
        atomic_fetch_add(&gw_metrics.upstream_unavailable, 1);
    s_complete(c, NULL, PROTO_EUNAVAIL);
}

static void on_flush_timer(h2o_timeout_entry_t *e)
{
    gw_node_conn_t *nc = H2O_STRUCT_FROM_MEMBER(gw_node_conn_t, flush, e);
    gw_thread_t *t = nc->t;
    if (!nc->batch.n)
        return;
    proto_batch_encode(&nc->batch, &nc->frame);
    uint32_t n = nc->batch.n;
    proto_batch_reset(&nc->batch);
    if (zu_send(nc->sock, NULL, 0, nc->frame.data, nc->frame.len) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            gw_call_t *c = NULL;
            /* Mark sent without unlinking: look the call up in place. */
            for (c = t->ctab[util_mix64(nc->batch_rids[i]) & (t->csize - 1)]; c && c->rid != nc->batch_rids[i];
                 c = c->hnext)
                ;
            if (c)
                c->sent = true;
        }
        s_schedule_drain(nc); /* the post-send drain (ZMQ_FD contract) */
        return;
    }
    s_node_down(nc, errno == EAGAIN ? "not connected" : zmq_strerror(errno));
    /* Copy the rids: re-routing may queue onto this same node's (now empty) batch. */
    uint64_t *rids = xmalloc(n * sizeof *rids);
    memcpy(rids, nc->batch_rids, n * sizeof *rids);
    for (uint32_t i = 0; i < n; i++) {
        gw_call_t *c = s_ctab_remove(t, rids[i]);
        if (c)
            s_reroute(t, c, nc->idx);
    }
    free(rids);
}

/* A node went away: re-send its reads elsewhere, fail its writes. */
static void s_fail_node_calls(gw_thread_t *t, int node)
{
    gw_call_t *moved = NULL;
    for (size_t i = 0; i < t->csize; i++) {
        for (gw_call_t **pp = &t->ctab[i]; *pp;) {
            gw_call_t *c = *pp;
            if (c->node != node) {
                pp = &c->hnext;
                continue;
            }
            *pp = c->hnext;
            t->ccount--;
            c->hnext = moved;
            moved = c;
        }
    }
    /* Calls still in the node's unsent batch are among them: drop the batch first. */
    proto_batch_reset(&t->nodes[node].batch);
    while (moved) {
        gw_call_t *c = moved;
        moved = c->hnext;
        s_reroute(t, c, node);
    }
}

/* ==== receiving ============================================================================== */

static void on_drain_timer(h2o_timeout_entry_t *e)
{
    gw_node_conn_t *nc = H2O_STRUCT_FROM_MEMBER(gw_node_conn_t, drain, e);
    s_drain(nc);
}

static void s_mark_up(gw_node_conn_t *nc)
{
    gw_thread_t *t = nc->t;
    if (!nc->up && nc->seen)
        LOG(LOG_INFO, "cache-node %d (%s) is up again", nc->idx, nc->endpoint);
    nc->up = true;
    nc->seen = true;
    nc->last_ok_ms = util_mono_ms();
    t->node_answered = true;
    gw_thread_ready_check(t);
}

static void s_drain(gw_node_conn_t *nc)
{
    gw_thread_t *t = nc->t;
    for (int k = 0; k < DRAIN_MAX; k++) {
        /* No ZMQ_EVENTS check first: a non-blocking receive that finds nothing processes the
         * socket's pending commands exactly as ZMQ_EVENTS would (re-arming ZMQ_FD's edge) and
         * returns EAGAIN, so a check per message would only double that cost. */
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(nc->sock, frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EPROTO)
                continue;
            return;
        }
        proto_msg_t m;
        if (n != 1 || proto_decode(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), &m) != PROTO_DEC_OK) {
            LOG_RATELIMITED(LOG_WARN, 1000, "malformed reply from cache-node %d dropped", nc->idx);
            if (n == 1)
                proto_msg_fini(&m);
            zu_close_frames(frames, n);
            continue;
        }
        if (m.type == PROTO_BATCH) {
            for (uint32_t i = 0; i < m.n; i++) {
                proto_msg_t part;
                if (proto_decode(m.parts[i].p, m.parts[i].len, &part) != PROTO_DEC_OK || part.type == PROTO_BATCH) {
                    LOG_RATELIMITED(LOG_WARN, 1000, "malformed batch part from cache-node %d dropped", nc->idx);
                    proto_msg_fini(&part);
                    continue;
                }
                gw_call_t *c = s_ctab_remove(t, part.rid);
                if (c)
                    s_complete(c, &part, part.status);
                proto_msg_fini(&part);
            }
            proto_msg_fini(&m);
            zu_close_frames(frames, n);
            s_mark_up(nc);
            continue;
        }
        s_mark_up(nc);
        gw_call_t *c = s_ctab_remove(t, m.rid);
        if (c)
            s_complete(c, &m, m.status);
        proto_msg_fini(&m);
        zu_close_frames(frames, n);
    }
    /* More may be waiting: continue on the next loop turn so other sockets get their share. */
    s_schedule_drain(nc);
}

static void on_zmq_ready(h2o_socket_t *sock, const char *err)
{
    gw_node_conn_t *nc = sock->data;
    s_drain(nc);
}

static void on_monitor_ready(h2o_socket_t *sock, const char *err)
{
    gw_node_conn_t *nc = sock->data;
    for (int k = 0; k < 64; k++) {
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(nc->mon, ZMQ_EVENTS, &ev, &len) < 0 || !(ev & ZMQ_POLLIN))
            return;
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(nc->mon, frames, ZU_FRAMES_MAX, &n) < 0)
            return;
        if (n >= 1 && zmq_msg_size(&frames[0]) >= 2) {
            uint16_t event;
            memcpy(&event, zmq_msg_data(&frames[0]), 2);
            if (event == ZMQ_EVENT_DISCONNECTED) {
                s_node_down(nc, "disconnected");
                s_fail_node_calls(nc->t, nc->idx);
            }
        }
        zu_close_frames(frames, n);
    }
}

/* ==== pings ================================================================================== */

static void on_pong(gw_call_t *c, const proto_msg_t *m, int status)
{
    gw_node_conn_t *nc = &c->t->nodes[c->node];
    nc->ping_out = false;
}

static void on_ping_timer(h2o_timeout_entry_t *e)
{
    gw_thread_t *t = H2O_STRUCT_FROM_MEMBER(gw_thread_t, ping_timer, e);
    if (t->stopping)
        return;
    if (!t->accepting && util_mono_ms() >= t->accept_by_ms)
        gw_accept_start(t); /* not ready in time: serve anyway (health, readiness say so) */
    if (gw_cfg.cache_dns)
        s_apply_discovery(t);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        gw_node_conn_t *nc = &t->nodes[i];
        if (nc->ping_out || !nc->sock)
            continue;
        uint64_t rid = gw_next_rid(t);
        proto_buf_reset(&t->pb);
        proto_enc_simple(&t->pb, PROTO_PING, rid);
        /* A down node is probed the same way; its first answer brings it back. */
        gw_call_send(t, NULL, i, rid, PROTO_PING, &t->pb, on_pong, NULL);
        nc->ping_out = true;
    }
    h2o_timeout_link(t->ctx.loop, &t->ping_tick, &t->ping_timer);
}

/* ==== setup ================================================================================== */

/* Connect slot nc to endpoint ep: a DEALER, its monitor, both watched by the loop. A node from
 * CACHE_ENDPOINTS starts up (optimistic: the first send tells, ZMQ_IMMEDIATE); one found by DNS
 * starts down and comes up with its first answer to a ping, so a pod that is still starting is not
 * sent requests that would fail and bounce. */
static int s_node_open(gw_node_conn_t *nc, const char *ep, bool optimistic, char *err)
{
    gw_thread_t *t = nc->t;
    snprintf(nc->endpoint, sizeof nc->endpoint, "%s", ep);
    nc->seed = util_hash64(ep, strlen(ep), 0x5eed5);
    t->seeds[nc->idx] = nc->seed;
    nc->up = optimistic;
    nc->seen = false;
    nc->ping_out = false;
    nc->sock = zu_socket(t->zctx, ZMQ_DEALER, 100000, 100000);
    int one = 1, ivl_max = 500;
    zmq_setsockopt(nc->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(nc->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (strchr(ep, '['))
        zmq_setsockopt(nc->sock, ZMQ_IPV6, &one, sizeof one);
    char mon_ep[96];
    snprintf(mon_ep, sizeof mon_ep, "inproc://gw-mon-%d-%d-%u", t->idx, nc->idx, t->sock_gen++);
    if (zmq_socket_monitor(nc->sock, mon_ep, ZMQ_EVENT_DISCONNECTED) < 0) {
        snprintf(err, 256, "zmq_socket_monitor: %s", zmq_strerror(errno));
        return -1;
    }
    nc->mon = zu_socket(t->zctx, ZMQ_PAIR, 0, 0);
    if (zmq_connect(nc->mon, mon_ep) < 0 || zmq_connect(nc->sock, ep) < 0) {
        snprintf(err, 256, "connect %s: %s", ep, zmq_strerror(errno));
        return -1;
    }
    int fd;
    size_t len = sizeof fd;
    zmq_getsockopt(nc->sock, ZMQ_FD, &fd, &len);
    nc->hsock = h2o_evloop_socket_create(t->ctx.loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
    nc->hsock->data = nc;
    h2o_socket_read_start(nc->hsock, on_zmq_ready);
    zmq_getsockopt(nc->mon, ZMQ_FD, &fd, &len);
    nc->hmon = h2o_evloop_socket_create(t->ctx.loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
    nc->hmon->data = nc;
    h2o_socket_read_start(nc->hmon, on_monitor_ready);
    /* ZMQ_FD only signals once the socket has been found empty (pitfall 1): check it once now,
     * or the first monitor event never wakes us and in-flight calls to a dead node wait for
     * their deadline instead of failing over. */
    on_monitor_ready(nc->hmon, NULL);
    return 0;
}

/* Close slot nc's sockets (its calls must have been dealt with); the slot is vacant after. */
static void s_node_close(gw_node_conn_t *nc)
{
    if (h2o_timeout_is_linked(&nc->drain))
        h2o_timeout_unlink(&nc->drain);
    if (h2o_timeout_is_linked(&nc->flush))
        h2o_timeout_unlink(&nc->flush);
    proto_batch_reset(&nc->batch);
    if (nc->hsock) {
        h2o_socket_read_stop(nc->hsock);
        h2o_socket_close(nc->hsock);
        nc->hsock = NULL;
    }
    if (nc->hmon) {
        h2o_socket_read_stop(nc->hmon);
        h2o_socket_close(nc->hmon);
        nc->hmon = NULL;
    }
    if (nc->sock) {
        zmq_socket_monitor(nc->sock, NULL, 0);
        zmq_close(nc->mon);
        zmq_close(nc->sock);
    }
    nc->sock = nc->mon = NULL;
    nc->endpoint[0] = '\0';
    nc->up = false;
    nc->seen = false;
    nc->ping_out = false;
    nc->t->seeds[nc->idx] = 0;
}

/* CACHE_DNS: bring this thread's slots in line with the resolver's table (gw_discovery.c). A
 * slot whose address left is closed (its reads re-sent elsewhere, its writes answered 503, as when
 * a node disconnects); a new address is connected and used from its first answer. */
static void s_apply_discovery(gw_thread_t *t)
{
    if (gw_discovery_gen() == t->dns_gen)
        return;
    static __thread char eps[GW_MAX_NODES][GW_ENDPOINT_MAX];
    t->dns_gen = gw_discovery_snapshot(eps);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        gw_node_conn_t *nc = &t->nodes[i];
        if (strcmp(nc->endpoint, eps[i]) == 0)
            continue;
        if (nc->sock) {
            s_node_down(nc, "left the cache tier (DNS)");
            nc->up = false;
            s_fail_node_calls(t, i);
            s_node_close(nc);
        }
        char err[256];
        if (eps[i][0] && s_node_open(nc, eps[i], false, err) < 0) {
            LOG(LOG_ERROR, "cache-node %s: %s", eps[i], err);
            s_node_close(nc);
        }
    }
}

int gw_upstream_init(gw_thread_t *t, void *zctx, char *err)
{
    h2o_timeout_init(t->ctx.loop, &t->req_timeout, gw_cfg.request_timeout_ms);
    h2o_timeout_init(t->ctx.loop, &t->ping_timeout, MIN(gw_cfg.request_timeout_ms, 1000));
    h2o_timeout_init(t->ctx.loop, &t->ping_tick, PING_MS);
    t->zctx = zctx;
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        gw_node_conn_t *nc = &t->nodes[i];
        nc->t = t;
        nc->idx = i;
        nc->drain.cb = on_drain_timer;
        nc->flush.cb = on_flush_timer;
        proto_batch_init(&nc->batch);
        proto_buf_init(&nc->frame);
        if (!gw_cfg.cache_dns && s_node_open(nc, gw_cfg.endpoints[i], true, err) < 0)
            return -1;
    }
    if (gw_cfg.cache_dns) {
        t->dns_gen = gw_discovery_gen() - 1; /* take the table now */
        s_apply_discovery(t);
    }
    t->ping_timer.cb = on_ping_timer;
    h2o_timeout_link(t->ctx.loop, &t->ctx.zero_timeout, &t->ping_timer);
    return 0;
}

void gw_upstream_fini(gw_thread_t *t)
{
    if (h2o_timeout_is_linked(&t->ping_timer))
        h2o_timeout_unlink(&t->ping_timer);
    /* Answer whatever is still out so no request waits on a closed socket. */
    for (size_t i = 0; i < t->csize; i++)
        while (t->ctab[i]) {
            gw_call_t *c = t->ctab[i];
            t->ctab[i] = c->hnext;
            t->ccount--;
            s_complete(c, NULL, PROTO_EUNAVAIL);
        }
    h2o_timeout_dispose(t->ctx.loop, &t->ping_tick);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        gw_node_conn_t *nc = &t->nodes[i];
        s_node_close(nc);
        proto_batch_fini(&nc->batch);
        proto_buf_fini(&nc->frame);
        free(nc->batch_rids);
    }
    free(t->ctab);
    t->ctab = NULL;
}
