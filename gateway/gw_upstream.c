/* gw_upstream.c -- ZeroMQ DEALERs to the cache-nodes, inside each thread's h2o event loop.
 *
 * Each DEALER (and its socket monitor) is watched through its ZMQ_FD (gw_zfd.h): drained to EAGAIN
 * on readiness, at most DRAIN_MAX messages per turn, and again on the next turn after every send.
 * Nothing here blocks: sends use ZMQ_DONTWAIT, and with ZMQ_IMMEDIATE a send to a node with no
 * live connection fails at once (the node is marked down and the key goes to the next node).
 *
 * Calls are kept by request id (an idtab). Commands queued during one loop turn leave together, one
 * BATCH frame per node, from a zero-timeout flush at the turn's end (at once when the batch reaches
 * PROTO_BATCH_SOFT_MAX).
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
 * reached the store -- the client retries, and PUT is idempotent in its outcome). With CACHE_DNS
 * the node slots follow gw_discovery.c's table, applied on the ping tick.
 *
 * One upstream per event-loop thread; no locks (gw_discovery.c's table is read under its own).
 */
#include "gw_upstream.h"
#include "dispatch.h"
#include "gw_discovery.h"
#include "gw_metrics.h"
#include "gw_rendezvous.h"
#include "gw_zfd.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_MAX 1024
#define PING_MS 250

typedef struct node {
    gw_upstream_t *owner;
    int idx;
    char endpoint[GW_ENDPOINT_MAX]; /* "" = a vacant slot (CACHE_DNS): never up, never sent to */
    void *sock, *mon;
    gw_zfd_t zsock, zmon;
    bool up;
    bool seen; /* has answered at least once */
    uint64_t last_ok_ms;
    bool ping_out;
    h2o_timeout_entry_t flush; /* sends the pending batch at the end of the loop turn */
    proto_batch_t batch;       /* commands queued for this node during this turn */
    uint64_t *batch_rids;      /* their calls */
    uint32_t batch_cap;
    proto_buf_t frame;
} node_t;

struct gw_upstream {
    h2o_context_t *h2o;
    int thread_idx;
    void *zctx;
    void (*on_answer)(void *arg);
    void *on_answer_arg;
    node_t nodes[GW_MAX_NODES];
    uint64_t seeds[GW_MAX_NODES]; /* each node's rendezvous seed: a hash of its endpoint */
    unsigned dns_gen;             /* the discovery table applied */
    unsigned sock_gen;            /* names each monitor's inproc endpoint uniquely */
    idtab_t calls;                /* by request id */
    uint64_t next_rid;
    h2o_timeout_t req_timeout;
    h2o_timeout_t ping_timeout; /* deadline of a ping */
    h2o_timeout_t ping_tick;    /* how often every node is pinged */
    h2o_timeout_entry_t ping_timer;
    proto_buf_t pb;
    gw_write_hook_fn on_write; /* gw_upstream_on_write */
    void *on_write_arg;
};

static void s_queue(node_t *nc, gw_call_t *c);
static void on_flush_timer(h2o_timeout_entry_t *e);
static void s_apply_discovery(gw_upstream_t *up);

/* ==== calls ==================================================================================== */

static gw_call_t *s_take(gw_upstream_t *up, uint64_t rid)
{
    idtab_link_t *l = idtab_take(&up->calls, rid);
    return l ? IDTAB_ENTRY(l, gw_call_t, link) : NULL;
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

uint64_t gw_upstream_rid(gw_upstream_t *up)
{
    return ++up->next_rid;
}

/* ==== node state =============================================================================== */

static void s_node_down(node_t *nc, const char *why)
{
    if (nc->up) {
        nc->up = false;
        if (!nc->seen)
            return; /* still connecting at startup: nothing to report */
        atomic_fetch_add(&gw_metrics.node_failovers, 1);
        LOG_RATELIMITED(LOG_WARN, 1000, "cache-node %d (%s) marked down: %s", nc->idx, nc->endpoint, why);
    }
}

static void s_mark_up(node_t *nc)
{
    if (!nc->up && nc->seen)
        LOG(LOG_INFO, "cache-node %d (%s) is up again", nc->idx, nc->endpoint);
    nc->up = true;
    nc->seen = true;
    nc->last_ok_ms = util_mono_ms();
    nc->owner->on_answer(nc->owner->on_answer_arg);
}

int gw_upstream_up_count(const gw_upstream_t *up)
{
    int n = 0;
    for (int i = 0; i < gw_cfg.nnodes; i++)
        n += up->nodes[i].up;
    return n;
}

uint64_t gw_upstream_deadline(void)
{
    return util_now_us() + gw_cfg.request_timeout_ms * 1000u;
}

int gw_upstream_configured(void)
{
    return gw_cfg.cache_dns ? gw_discovery_assigned() : gw_cfg.nnodes;
}

const char *gw_upstream_endpoint(const gw_upstream_t *up, int i)
{
    return up->nodes[i].endpoint;
}

int gw_upstream_route(gw_upstream_t *up, const char *key, size_t klen)
{
    bool isup[GW_MAX_NODES];
    for (int i = 0; i < gw_cfg.nnodes; i++)
        isup[i] = up->nodes[i].up;
    return gw_rendezvous(key, klen, up->seeds, isup, gw_cfg.nnodes);
}

int gw_upstream_any(gw_upstream_t *up, int avoid)
{
    int fallback = -1;
    for (int k = 0; k < gw_cfg.nnodes; k++) {
        int i = (int)((up->next_rid + (uint64_t)k) % (uint64_t)gw_cfg.nnodes);
        if (!up->nodes[i].up)
            continue;
        if (i != avoid)
            return i;
        fallback = i;
    }
    return fallback;
}

/* ==== sending ================================================================================== */

static void on_call_timeout(h2o_timeout_entry_t *e)
{
    gw_call_t *c = H2O_STRUCT_FROM_MEMBER(gw_call_t, te, e);
    gw_upstream_t *up = c->up;
    idtab_remove(&up->calls, &c->link);
    s_node_down(&up->nodes[c->node], "missed its deadline");
    if (c->type != PROTO_PING)
        atomic_fetch_add(&gw_metrics.upstream_timeouts, 1);
    s_complete(c, NULL, PROTO_ETIMEOUT);
}

static bool s_is_read(uint8_t type)
{
    return type == PROTO_GET || type == PROTO_MGET || type == PROTO_STATS || type == PROTO_PING;
}

gw_call_t *gw_upstream_send(gw_upstream_t *up, h2o_req_t *req, int node, uint64_t rid, uint8_t type,
                            const proto_buf_t *b, gw_call_cb cb, void *arg)
{
    if (node < 0 || node >= gw_cfg.nnodes || !up->nodes[node].sock)
        return NULL; /* no such node, or a vacant slot */
    gw_call_t *c = xcalloc(1, sizeof *c);
    c->link.id = rid;
    c->up = up;
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
    idtab_add(&up->calls, &c->link);
    h2o_timeout_link(up->h2o->loop, type == PROTO_PING ? &up->ping_timeout : &up->req_timeout, &c->te);
    s_queue(&up->nodes[node], c);
    return c;
}

static void s_queue(node_t *nc, gw_call_t *c)
{
    c->node = nc->idx;
    c->sent = false;
    if (nc->batch.n == nc->batch_cap) {
        nc->batch_cap = nc->batch_cap ? nc->batch_cap * 2 : 64;
        nc->batch_rids = xrealloc(nc->batch_rids, nc->batch_cap * sizeof *nc->batch_rids);
    }
    nc->batch_rids[nc->batch.n] = c->link.id;
    proto_batch_add(&nc->batch, c->msg, c->msg_len);
    if (proto_batch_full(&nc->batch)) { /* big enough: send now, not at the turn's end */
        if (h2o_timeout_is_linked(&nc->flush))
            h2o_timeout_unlink(&nc->flush);
        on_flush_timer(&nc->flush);
        return;
    }
    if (!h2o_timeout_is_linked(&nc->flush))
        h2o_timeout_link(nc->owner->h2o->loop, &nc->owner->h2o->zero_timeout, &nc->flush);
}

/* Re-route a call that could not be sent, or whose node went away. Reads may always move;
 * commands that never left this process may move too (nobody saw them). */
static void s_reroute(gw_upstream_t *up, gw_call_t *c, int from)
{
    /* Pings and stats are about one node; they are never moved. */
    bool movable = c->type != PROTO_PING && c->type != PROTO_STATS && (s_is_read(c->type) || !c->sent);
    int other = movable ? gw_upstream_any(up, from) : -1;
    if (other >= 0 && other != from) {
        atomic_fetch_add(&gw_metrics.upstream_retries, 1);
        idtab_add(&up->calls, &c->link);
        s_queue(&up->nodes[other], c);
        return;
    }
    if (c->type != PROTO_PING)
        atomic_fetch_add(&gw_metrics.upstream_unavailable, 1);
    s_complete(c, NULL, PROTO_EUNAVAIL);
}

static void on_flush_timer(h2o_timeout_entry_t *e)
{
    node_t *nc = H2O_STRUCT_FROM_MEMBER(node_t, flush, e);
    gw_upstream_t *up = nc->owner;
    if (!nc->batch.n)
        return;
    proto_batch_encode(&nc->batch, &nc->frame);
    uint32_t n = nc->batch.n;
    proto_batch_reset(&nc->batch);
    if (zu_send(nc->sock, NULL, 0, nc->frame.data, nc->frame.len) == 0) {
        for (uint32_t i = 0; i < n; i++) {
            idtab_link_t *l = idtab_find(&up->calls, nc->batch_rids[i]); /* marked sent in place */
            if (l)
                IDTAB_ENTRY(l, gw_call_t, link)->sent = true;
        }
        gw_zfd_kick(&nc->zsock); /* the post-send drain (ZMQ_FD contract) */
        return;
    }
    s_node_down(nc, errno == EAGAIN ? "not connected" : zmq_strerror(errno));
    /* Copy the rids: re-routing may queue onto this same node's (now empty) batch. */
    uint64_t *rids = xmalloc(n * sizeof *rids);
    memcpy(rids, nc->batch_rids, n * sizeof *rids);
    for (uint32_t i = 0; i < n; i++) {
        gw_call_t *c = s_take(up, rids[i]);
        if (c)
            s_reroute(up, c, nc->idx);
    }
    free(rids);
}

/* A node went away: re-send its reads elsewhere, fail its writes. */
static void s_fail_node_calls(gw_upstream_t *up, int node)
{
    size_t n = 0;
    gw_call_t **moved = xmalloc((idtab_count(&up->calls) + 1) * sizeof *moved);
    idtab_iter_t it;
    idtab_iter_init(&it, &up->calls);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        gw_call_t *c = IDTAB_ENTRY(l, gw_call_t, link);
        if (c->node != node)
            continue;
        idtab_remove(&up->calls, l);
        moved[n++] = c;
    }
    /* Calls still in the node's unsent batch are among them: drop the batch first. */
    proto_batch_reset(&up->nodes[node].batch);
    for (size_t i = 0; i < n; i++)
        s_reroute(up, moved[i], node);
    free(moved);
}

/* ==== receiving ================================================================================ */

/* A write's reply to the write hook. A DEL's reply names no user: the hook gets the one in the
 * command this call kept for re-sending. */
static void s_write_hook(gw_upstream_t *up, const gw_call_t *c, const proto_msg_t *m)
{
    if (c->type != PROTO_DEL) {
        up->on_write(up->on_write_arg, c->type, NULL, m);
        return;
    }
    proto_msg_t cmd;
    bool named = proto_decode(c->msg, c->msg_len, &cmd) == PROTO_DEC_OK && cmd.type == PROTO_DEL && cmd.key.len;
    up->on_write(up->on_write_arg, c->type, named ? &cmd.key : NULL, m);
    proto_msg_fini(&cmd);
}

static void on_reply(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    node_t *nc = ctx;
    if (!in->in_batch)
        s_mark_up(nc); /* a lone reply: the node is up before its caller hears (a BATCH: after) */
    gw_call_t *c = s_take(nc->owner, m->rid);
    if (!c)
        return;
    gw_upstream_t *up = nc->owner;
    if (up->on_write && (c->type == PROTO_PUT || c->type == PROTO_TOUCH || c->type == PROTO_DEL))
        s_write_hook(up, c, m);
    s_complete(c, m, m->status);
}

void gw_upstream_on_write(gw_upstream_t *up, gw_write_hook_fn fn, void *arg)
{
    up->on_write = fn;
    up->on_write_arg = arg;
}

static void on_batch(void *ctx, const dispatch_in_t *in, bool begin)
{
    if (!begin)
        s_mark_up(ctx);
}

static void on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    node_t *nc = ctx;
    if (in->in_batch)
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed batch part from cache-node %d dropped", nc->idx);
    else
        LOG_RATELIMITED(LOG_WARN, 1000, "malformed reply from cache-node %d dropped", nc->idx);
}

static const dispatch_t s_replies = {
    .on_other = on_reply,
    .on_malformed = on_malformed,
    .on_batch = on_batch,
};

static bool s_drain(void *arg)
{
    node_t *nc = arg;
    for (int k = 0; k < DRAIN_MAX; k++) {
        /* No ZMQ_EVENTS check first: a non-blocking receive that finds nothing processes the
         * socket's pending commands exactly as ZMQ_EVENTS would (re-arming ZMQ_FD's edge) and
         * returns EAGAIN, so a check per message would only double that cost. */
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(nc->sock, frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EPROTO)
                continue;
            return false;
        }
        dispatch_frames(&s_replies, nc, nc->sock, frames, n);
        zu_close_frames(frames, n);
    }
    return true; /* more may be waiting: the next loop turn, so other sockets get their share */
}

static bool s_drain_monitor(void *arg)
{
    node_t *nc = arg;
    for (int k = 0; k < 64; k++) {
        if (!zu_readable(nc->mon))
            return false;
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(nc->mon, frames, ZU_FRAMES_MAX, &n) < 0)
            return false;
        if (n >= 1 && zmq_msg_size(&frames[0]) >= 2) {
            uint16_t event;
            memcpy(&event, zmq_msg_data(&frames[0]), 2);
            if (event == ZMQ_EVENT_DISCONNECTED) {
                s_node_down(nc, "disconnected");
                s_fail_node_calls(nc->owner, nc->idx);
            }
        }
        zu_close_frames(frames, n);
    }
    return false;
}

/* ==== pings ==================================================================================== */

static void on_pong(gw_call_t *c, const proto_msg_t *m, int status)
{
    c->up->nodes[c->node].ping_out = false;
}

static void on_ping_timer(h2o_timeout_entry_t *e)
{
    gw_upstream_t *up = H2O_STRUCT_FROM_MEMBER(gw_upstream_t, ping_timer, e);
    if (gw_cfg.cache_dns)
        s_apply_discovery(up);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        node_t *nc = &up->nodes[i];
        if (nc->ping_out || !nc->sock)
            continue;
        uint64_t rid = gw_upstream_rid(up);
        proto_buf_reset(&up->pb);
        proto_enc_simple(&up->pb, PROTO_PING, rid);
        /* A down node is probed the same way; its first answer brings it back. */
        gw_upstream_send(up, NULL, i, rid, PROTO_PING, &up->pb, on_pong, NULL);
        nc->ping_out = true;
    }
    h2o_timeout_link(up->h2o->loop, &up->ping_tick, &up->ping_timer);
}

/* ==== node slots =============================================================================== */

/* Connect slot nc to endpoint ep: a DEALER, its monitor, both watched by the loop. A node from
 * CACHE_ENDPOINTS starts up (optimistic: the first send tells, ZMQ_IMMEDIATE); one found by DNS
 * starts down and comes up with its first answer to a ping, so a pod that is still starting is not
 * sent requests that would fail and bounce. */
static int s_node_open(node_t *nc, const char *ep, bool optimistic, char *err)
{
    gw_upstream_t *up = nc->owner;
    snprintf(nc->endpoint, sizeof nc->endpoint, "%s", ep);
    up->seeds[nc->idx] = util_hash64(ep, strlen(ep), 0x5eed5);
    nc->up = optimistic;
    nc->seen = false;
    nc->ping_out = false;
    nc->sock = zu_socket(up->zctx, ZMQ_DEALER, 100000, 100000);
    int one = 1, ivl_max = 500;
    zmq_setsockopt(nc->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(nc->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (strchr(ep, '['))
        zmq_setsockopt(nc->sock, ZMQ_IPV6, &one, sizeof one);
    char mon_ep[96];
    snprintf(mon_ep, sizeof mon_ep, "inproc://gw-mon-%d-%d-%u", up->thread_idx, nc->idx, up->sock_gen++);
    if (zmq_socket_monitor(nc->sock, mon_ep, ZMQ_EVENT_DISCONNECTED) < 0) {
        snprintf(err, 256, "zmq_socket_monitor: %s", zmq_strerror(errno));
        return -1;
    }
    nc->mon = zu_socket(up->zctx, ZMQ_PAIR, 0, 0);
    if (zmq_connect(nc->mon, mon_ep) < 0 || zmq_connect(nc->sock, ep) < 0) {
        snprintf(err, 256, "connect %s: %s", ep, zmq_strerror(errno));
        return -1;
    }
    gw_zfd_open(&nc->zsock, up->h2o, nc->sock, s_drain, nc);
    gw_zfd_open(&nc->zmon, up->h2o, nc->mon, s_drain_monitor, nc);
    /* ZMQ_FD only signals once the socket has been found empty: check it once now, or the first
     * monitor event never wakes us and in-flight calls to a dead node wait for their deadline
     * instead of failing over. */
    s_drain_monitor(nc);
    return 0;
}

/* Close slot nc's sockets (its calls must have been dealt with); the slot is vacant after. */
static void s_node_close(node_t *nc)
{
    if (h2o_timeout_is_linked(&nc->flush))
        h2o_timeout_unlink(&nc->flush);
    proto_batch_reset(&nc->batch);
    gw_zfd_close(&nc->zsock);
    gw_zfd_close(&nc->zmon);
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
    nc->owner->seeds[nc->idx] = 0;
}

/* CACHE_DNS: bring this thread's slots in line with the resolver's table (gw_discovery.c). A
 * slot whose address left is closed (its reads re-sent elsewhere, its writes answered 503, as when
 * a node disconnects); a new address is connected and used from its first answer. */
static void s_apply_discovery(gw_upstream_t *up)
{
    if (gw_discovery_gen() == up->dns_gen)
        return;
    static __thread char eps[GW_MAX_NODES][GW_ENDPOINT_MAX];
    up->dns_gen = gw_discovery_snapshot(eps);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        node_t *nc = &up->nodes[i];
        if (strcmp(nc->endpoint, eps[i]) == 0)
            continue;
        if (nc->sock) {
            s_node_down(nc, "left the cache tier (DNS)");
            nc->up = false;
            s_fail_node_calls(up, i);
            s_node_close(nc);
        }
        char err[256];
        if (eps[i][0] && s_node_open(nc, eps[i], false, err) < 0) {
            LOG(LOG_ERROR, "cache-node %s: %s", eps[i], err);
            s_node_close(nc);
        }
    }
}

/* ==== life ===================================================================================== */

gw_upstream_t *gw_upstream_new(h2o_context_t *h2o, int thread_idx, void *zctx, void (*on_answer)(void *arg), void *arg,
                               char *err)
{
    gw_upstream_t *up = xcalloc(1, sizeof *up);
    up->h2o = h2o;
    up->thread_idx = thread_idx;
    up->zctx = zctx;
    up->on_answer = on_answer;
    up->on_answer_arg = arg;
    idtab_init(&up->calls);
    proto_buf_init(&up->pb);
    h2o_timeout_init(h2o->loop, &up->req_timeout, gw_cfg.request_timeout_ms);
    h2o_timeout_init(h2o->loop, &up->ping_timeout, MIN(gw_cfg.request_timeout_ms, 1000));
    h2o_timeout_init(h2o->loop, &up->ping_tick, PING_MS);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        node_t *nc = &up->nodes[i];
        nc->owner = up;
        nc->idx = i;
        nc->flush.cb = on_flush_timer;
        proto_batch_init(&nc->batch);
        proto_buf_init(&nc->frame);
        if (!gw_cfg.cache_dns && s_node_open(nc, gw_cfg.endpoints[i], true, err) < 0) {
            gw_upstream_destroy(&up);
            return NULL;
        }
    }
    if (gw_cfg.cache_dns) {
        up->dns_gen = gw_discovery_gen() - 1; /* take the table now */
        s_apply_discovery(up);
    }
    up->ping_timer.cb = on_ping_timer;
    h2o_timeout_link(h2o->loop, &h2o->zero_timeout, &up->ping_timer);
    return up;
}

void gw_upstream_destroy(gw_upstream_t **upp)
{
    gw_upstream_t *up = *upp;
    if (!up)
        return;
    if (h2o_timeout_is_linked(&up->ping_timer))
        h2o_timeout_unlink(&up->ping_timer);
    /* Answer whatever is still out so no request waits on a closed socket. */
    idtab_iter_t it;
    idtab_iter_init(&it, &up->calls);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        idtab_remove(&up->calls, l);
        s_complete(IDTAB_ENTRY(l, gw_call_t, link), NULL, PROTO_EUNAVAIL);
    }
    h2o_timeout_dispose(up->h2o->loop, &up->ping_tick);
    for (int i = 0; i < gw_cfg.nnodes; i++) {
        node_t *nc = &up->nodes[i];
        s_node_close(nc);
        proto_batch_fini(&nc->batch);
        proto_buf_fini(&nc->frame);
        free(nc->batch_rids);
    }
    idtab_fini(&up->calls);
    proto_buf_fini(&up->pb);
    /* The loop keeps a list of its timeouts: every one of ours leaves it before the struct goes. */
    h2o_timeout_dispose(up->h2o->loop, &up->req_timeout);
    h2o_timeout_dispose(up->h2o->loop, &up->ping_timeout);
    free(up);
    *upp = NULL;
}
