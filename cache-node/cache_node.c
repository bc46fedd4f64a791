/* cache_node.c -- the cache-node: a W-TinyLFU cache tier kept coherent with the store.
 *
 * One thread, one ZMQ_FD poll loop (common/zloop.h) over four sockets:
 *   ROUTER  (CACHE_ENDPOINT, bound)     requests from gateways: GET, MGET, PUT, TOUCH, DEL, APPLY,
 *                                       PING, STATS -- many in flight per gateway socket
 *                                       (cache_serve.c)
 *   DEALER  (STORE_CMD_ENDPOINT)        commands to the store-node (or the region's sync relay)
 *                                       (cache_link.c)
 *   SUB + DEALER of the sync client     the change stream and its catch-ups (sync/)
 * The stream is always drained before gateway requests, so a change already delivered is applied
 * before the next read is answered. This file is the node's life: its sockets, the loop's timers,
 * and stalls -- a process that did not run for a while no longer trusts its cache (s_stalled).
 * The state is a cache_node_t (cache_node_int.h); cache_node_main.c is the process around it.
 */
#include "cache_node_int.h"
#include "cfg.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== stalls ==================================================================================== */

/* This process did not run for `ms` (SIGSTOP, a VM pause, starvation). Gateways may have timed
 * out on us and routed our keys to another node; writes acknowledged there reach us only through
 * the stream -- its backlog, and for writes still in flight when a gateway routes our keys back to
 * us, a few milliseconds after the client got its answer. Serving reads from the cache meanwhile
 * could show a client an older version than one it was acknowledged. So: catch up, and read
 * through to the store for two request timeouts (every gateway has routed back to us, and every
 * write it sent elsewhere before has been answered and reached us, well within that); and
 * re-learn the store's state instead of judging it by answers we were not there to receive. */
static void s_stalled(cache_node_t *cn, uint64_t ms)
{
    cn->stalls++;
    LOG_RATELIMITED(LOG_WARN, 1000, "did not run for %llu ms: reading through to the store for %llu ms",
                    (unsigned long long)ms, (unsigned long long)(2 * cn->cfg.req_timeout_ms));
    sync_client_resync(cn->sync);
    uint64_t now = util_mono_ms();
    cn->last_store_ok_ms = now;
    cn->distrust_until_ms = now + 2 * cn->cfg.req_timeout_ms;
}

/* ==== the loop =============================================================================== */

/* Timers first on every turn: a stall since we last ran, the stream's, the store's deadlines,
 * pings and stats polls, then the commands queued outside the request path. */
static uint64_t s_turn(void *arg, uint64_t now)
{
    cache_node_t *cn = arg;
    if (now - cn->ran_ms > 2 * cn->cfg.stall_ms)
        s_stalled(cn, now - cn->ran_ms); /* between handling the last wake-up and here */
    uint64_t next = sync_client_tick(cn->sync, now);
    cache_link_expire(cn, now);
    cache_link_poll(cn, now);
    next = MIN(next, cache_serve_tick(cn, now));
    next = MIN(next, cn->next_ping_ms);
    next = MIN(next, cn->next_stats_ms);
    if (cn->t_head)
        next = MIN(next, cn->t_head->deadline);
    cache_link_flush(cn);
    if (sync_client_take_sent(cn->sync)) {
        zmq_pollitem_t items[2];
        sync_client_poll_items(cn->sync, items);
        zloop_sent(cn->loop, items[1].socket);
    }
    return next;
}

/* A wait that lasted much longer than asked: this process did not run (before reading anything). */
static void s_woke(void *arg, uint64_t waited, uint64_t timeout)
{
    cache_node_t *cn = arg;
    cn->ran_ms = util_mono_ms();
    if (waited > timeout + 2 * cn->cfg.stall_ms)
        s_stalled(cn, waited - timeout);
}

/* The commands this turn's requests queued leave together. */
static void s_after(void *arg)
{
    cache_link_flush(arg);
}

/* Stream first: changes already delivered are applied before reads are answered. */
static bool s_pump_stream(void *arg)
{
    return sync_client_handle(((cache_node_t *)arg)->sync) != 0;
}

static void s_on_gateway_frames(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    cache_node_t *cn = arg;
    /* Stopped in the middle of this drain, we would go on reading what queued up meanwhile. */
    uint64_t t = util_mono_ms();
    if (t - cn->ran_ms > 2 * cn->cfg.stall_ms)
        s_stalled(cn, t - cn->ran_ms);
    cn->ran_ms = t;
    cache_serve_frames(cn, sock, frames, n);
}

/* ==== the node's life ======================================================================== */

static int s_sockets(cache_node_t *cn, char *err)
{
    const cache_node_config_t *c = &cn->cfg;
    cn->router = zu_socket(cn->zctx, ZMQ_ROUTER, 200000, 200000);
    int one = 1;
    zmq_setsockopt(cn->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (zmq_bind(cn->router, c->endpoint) < 0) {
        snprintf(err, CFG_ERR_LEN, "bind %s: %s", c->endpoint, zmq_strerror(errno));
        return -1;
    }
    if (cache_link_open(cn, err) < 0)
        return -1;
    sync_config_t scfg = {.pub_ep = c->store_pub, .cmd_ep = c->store_cmd, .heartbeat_limit_ms = c->hb_limit_ms,
                          .request_timeout_ms = c->store_timeout_ms, .sub_hwm = (uint32_t)c->sub_hwm};
    sync_handler_t sh;
    cache_serve_stream(cn, &sh);
    cn->sync = sync_client_new(cn->zctx, &scfg, &sh, err);
    if (!cn->sync)
        return -1;
    zmq_pollitem_t items[2];
    sync_client_poll_items(cn->sync, items);
    void *socks[2] = {items[0].socket, items[1].socket};
    int rc = zloop_add_drainer(cn->loop, socks, 2, s_pump_stream, cn);
    for (unsigned i = 0; i < cn->members.n && rc == 0; i++)
        rc = zloop_add_socket(cn->loop, cn->stores[i], cache_link_frames, cn);
    if (rc < 0 || zloop_add_socket(cn->loop, cn->router, s_on_gateway_frames, cn) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot poll the node's sockets");
        return -1;
    }
    return 0;
}

int cache_node_new(void *zctx, const cache_node_config_t *c, cache_node_t **out, char *err)
{
    *out = NULL;
    cache_config_t cc = {.max_cost = c->max_cost, .num_counters = c->counters, .policy = c->policy};
    cache_t *cache = cache_new(&cc);
    if (!cache) {
        snprintf(err, CFG_ERR_LEN, "invalid cache configuration");
        return -2;
    }
    cache_node_t *cn = xcalloc(1, sizeof *cn);
    cn->cfg = *c;
    cn->zctx = zctx;
    cn->cache = cache;
    cache_link_init(cn);
    cache_serve_init(cn);
    /* Just (re)started: gateways route our keys back to us as soon as we answer, while writes they
     * sent to the other nodes meanwhile may still be on their way to us in the stream. */
    cn->distrust_until_ms = util_mono_ms() + 2 * c->req_timeout_ms;
    cn->ran_ms = util_mono_ms();
    zloop_hooks_t hooks = {.arg = cn, .turn = s_turn, .woke = s_woke, .after = s_after};
    cn->loop = zloop_new(&hooks, c->stall_ms);
    if (s_sockets(cn, err) < 0) {
        cache_node_destroy(&cn);
        return -1;
    }
    *out = cn;
    return 0;
}

void cache_node_destroy(cache_node_t **np)
{
    cache_node_t *cn = *np;
    if (!cn)
        return;
    cache_link_fini(cn); /* answers what is still pending: gateways are not left waiting */
    sync_client_destroy(&cn->sync);
    if (cn->router)
        zmq_close(cn->router);
    cache_link_close(cn);
    zloop_destroy(&cn->loop);
    cache_serve_fini(cn);
    cache_destroy(&cn->cache);
    free(cn);
    *np = NULL;
}

int cache_node_turn(cache_node_t *cn, const volatile sig_atomic_t *stop)
{
    return zloop_turn(cn->loop, stop);
}

int cache_node_run(cache_node_t *cn, const volatile sig_atomic_t *stop)
{
    return zloop_run(cn->loop, stop);
}
