/* gw_ws.c -- a gateway thread's WebSocket connections, and the process's share of them (see
 * gw_ws.h).
 *
 * Per thread (a gw_ws_t, in the thread's gw_ctx_t): the list of its connections in every state, an
 * index of them by (user, session id), the fixed-duration timeout lists their timers go in (one
 * h2o_timeout_t per duration, so arming a timer is O(1) and costs no allocation -- plus power-of-two
 * "hop" lists for a connection's tick due at any time sooner than a whole interval), a 100 ms tick that
 * watches the lease, and a receiver for kicks from the other threads.
 *
 * Key decisions:
 * - A resume (connect with session_id=) takes the session over in the store; the connection that
 *   had it must hear so. On this thread it is found in the index at once; the other threads get a
 *   kick message through their h2o queues (h2o_multithread) and look in their own index. Another
 *   gateway's connection learns it from its thread's change stream (gw_wsend.c: the user changed,
 *   the store is asked whose the session is now), or at its next write, which the store refuses
 *   (gw_wssess.c). Sessions ended from outside (signed out, evicted, erased) are found the same way.
 * - The lease lives on thread 0 (gw_lease.c); every thread only compares the published id with the
 *   one its sessions were opened under and, after a lapse, re-opens GW_WS_REOPEN_MAX per tick so a
 *   thread with 20,000 connections does not put 20,000 writes into one loop turn.
 * - Stopping: every open connection is closed with 1001 and its session gets its grace, so a
 *   client that reconnects to another gateway at once resumes without going offline; the thread
 *   waits for the graces (bounded), and thread 0 ends the lease after every thread is done, which
 *   ends whatever is left in one command.
 * - The connection cap is process-wide (an atomic count of slots) and never above what
 *   RLIMIT_NOFILE leaves after a reserve, so a refused client can still be told 503.
 *
 * Threading: everything in a gw_ws_t is its thread's; the slot count is an atomic; the table of
 * threads is written before the threads pass their start barrier and read-only after.
 */
#include "gw_ws.h"
#include "gw_config.h"
#include "gw_lease.h"
#include "gw_metrics.h"
#include "gw_wsconn.h"
#include "gw_wsend.h"
#include "gw_wssess.h"
#include "gw_wswatch.h"
#include "log.h"
#include "util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint64_t s_max_conns;
static atomic_int_fast64_t s_slots;
static gw_ws_t *_Atomic s_threads[GW_MAX_THREADS];

/* ==== the process ============================================================================== */

void gw_ws_process_init(void)
{
    struct rlimit rl;
    uint64_t fds = UINT64_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rlim_t was = rl.rlim_cur;
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                LOG(LOG_INFO, "RLIMIT_NOFILE raised from %llu to the hard limit %llu", (unsigned long long)was,
                    (unsigned long long)rl.rlim_max);
            else
                getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY)
            fds = rl.rlim_cur;
    }
    uint64_t room = fds > GW_WS_FD_RESERVE ? fds - GW_WS_FD_RESERVE : 0;
    s_max_conns = MIN(gw_cfg.ws_max_conns, room);
    if (s_max_conns < gw_cfg.ws_max_conns)
        LOG(LOG_NOTICE,
            "WebSocket connections capped at %llu, not WS_MAX_CONNECTIONS=%llu: RLIMIT_NOFILE allows %llu open files "
            "(%d kept for the rest); raise the hard limit (ulimit -Hn, LimitNOFILE=, a container's nofile) for more",
            (unsigned long long)s_max_conns, (unsigned long long)gw_cfg.ws_max_conns, (unsigned long long)fds,
            GW_WS_FD_RESERVE);
}

uint64_t gw_ws_max_connections(void)
{
    return s_max_conns;
}

bool gw_ws_slot_take(void)
{
    if (atomic_fetch_add(&s_slots, 1) >= (int_fast64_t)s_max_conns) {
        atomic_fetch_sub(&s_slots, 1);
        return false;
    }
    return true;
}

void gw_ws_slot_put(void)
{
    atomic_fetch_sub(&s_slots, 1);
}

/* ==== ids and the session index ================================================================ */

uint64_t gw_ws_conn_id(gw_ws_t *ws)
{
    /* The thread in the top bits, a counter below: unique in the process, never 0. */
    return ((uint64_t)(ws->cx->idx + 1) << 48) | (++ws->next_conn & ((1ull << 48) - 1));
}

uint64_t gw_ws_session_key(const char *uid, size_t ulen, const char *sid, size_t slen)
{
    (void)sid, (void)slen; /* by user: one chain holds all of a user's connections (gw_ws.h) */
    return util_hash64(uid, ulen, 0x5e55);
}

/* Every connection of this thread that has (uid, sid) but is not conn_id loses it. */
static void s_kick_local(gw_ws_t *ws, const char *uid, size_t ulen, const char *sid, size_t slen, uint64_t conn_id)
{
    idtab_link_t *l = idtab_find(&ws->sessions, gw_ws_session_key(uid, ulen, sid, slen));
    while (l) {
        idtab_link_t *next = idtab_find_next(l); /* taken first: losing the session unlinks l */
        gw_wsconn_t *c = IDTAB_ENTRY(l, gw_wsconn_t, by_session);
        if (c->conn_id != conn_id && c->uid_len == ulen && c->sid_len == slen && memcmp(c->uid, uid, ulen) == 0 &&
            memcmp(c->sid, sid, slen) == 0)
            gw_wsconn_session_lost(c, GW_WSCONN_CLOSE_RESUMED);
        l = next;
    }
}

/* ==== kicks from the other threads ============================================================= */

typedef struct kick {
    h2o_multithread_message_t super;
    uint64_t conn_id; /* the connection that took the session over */
    uint8_t uid_len, sid_len;
    char uid[PROTO_USER_ID_MAX + 1];
    char sid[PROTO_SESSION_ID_MAX + 1];
} kick_t;

static void on_kicks(h2o_multithread_receiver_t *r, h2o_linklist_t *messages)
{
    gw_ws_t *ws = H2O_STRUCT_FROM_MEMBER(gw_ws_t, kicks, r);
    while (!h2o_linklist_is_empty(messages)) {
        kick_t *k = H2O_STRUCT_FROM_MEMBER(kick_t, super.link, messages->next);
        h2o_linklist_unlink(&k->super.link);
        s_kick_local(ws, k->uid, k->uid_len, k->sid, k->sid_len, k->conn_id);
        free(k);
    }
}

void gw_ws_resumed(gw_ws_t *ws, const gw_wsconn_t *c)
{
    atomic_fetch_add(&gw_metrics.ws_resumed, 1);
    s_kick_local(ws, c->uid, c->uid_len, c->sid, c->sid_len, c->conn_id);
    for (int i = 0; i < (int)gw_cfg.threads && i < GW_MAX_THREADS; i++) {
        gw_ws_t *other = atomic_load(&s_threads[i]);
        if (!other || other == ws)
            continue;
        kick_t *k = xcalloc(1, sizeof *k);
        k->conn_id = c->conn_id;
        k->uid_len = c->uid_len;
        k->sid_len = c->sid_len;
        memcpy(k->uid, c->uid, c->uid_len);
        memcpy(k->sid, c->sid, c->sid_len);
        h2o_multithread_send_message(&other->kicks, &k->super);
    }
}

/* ==== deferred unwatching ====================================================================== */

static void on_reap(h2o_timeout_entry_t *e)
{
    gw_ws_t *ws = H2O_STRUCT_FROM_MEMBER(gw_ws_t, reap, e);
    while (ws->reap_list) {
        gw_wsconn_t *c = ws->reap_list;
        ws->reap_list = c->reap_next;
        c->reap_next = NULL;
        c->reaping = false;
        gw_wswatch_clear(c);
        gw_wsconn_release(c);
    }
}

void gw_ws_reap_later(gw_ws_t *ws, gw_wsconn_t *c)
{
    if (c->reaping)
        return;
    c->reaping = true;
    c->reap_next = ws->reap_list;
    ws->reap_list = c;
    if (!h2o_timeout_is_linked(&ws->reap))
        h2o_timeout_link(ws->cx->h2o.loop, &ws->cx->h2o.zero_timeout, &ws->reap);
}

/* ==== the lease watch ========================================================================== */

/* After a lapse the lease has a new id: re-open the sessions of the open connections under it, a
 * bounded number per tick. The thread has caught up once no open connection holds its session
 * under another lease. */
static void s_lease_watch(gw_ws_t *ws)
{
    uint64_t id = gw_lease_id();
    if (!id || id == ws->lease_seen)
        return;
    int started = 0;
    bool behind = false;
    for (h2o_linklist_t *n = ws->conns.next; n != &ws->conns; n = n->next) {
        gw_wsconn_t *c = H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, link, n);
        if (c->state != GW_WSCONN_OPEN || !c->holds || c->lease_id == id)
            continue;
        behind = true;
        if (c->reopening)
            continue;
        if (started == GW_WS_REOPEN_MAX)
            break;
        gw_wssess_reopen(c, id);
        started++;
    }
    if (!behind) {
        if (ws->lease_seen)
            LOG(LOG_INFO, "thread %d: sessions re-opened under lease %016llx", ws->cx->idx, (unsigned long long)id);
        ws->lease_seen = id;
    }
}

static void on_tick(h2o_timeout_entry_t *e)
{
    gw_ws_t *ws = H2O_STRUCT_FROM_MEMBER(gw_ws_t, tick, e);
    s_lease_watch(ws);
    h2o_timeout_link(ws->cx->h2o.loop, &ws->tick_to, &ws->tick);
}

/* ==== a thread's life ========================================================================== */

void gw_ws_attach(gw_ctx_t *cx)
{
    gw_ws_t *ws = xcalloc(1, sizeof *ws);
    h2o_loop_t *loop = cx->h2o.loop;
    ws->cx = cx;
    h2o_linklist_init_anchor(&ws->conns);
    idtab_init(&ws->sessions);
    h2o_timeout_init(loop, &ws->ping_to, gw_cfg.ws_ping_ms);
    while (ws->nhops < GW_WS_HOPS && (1ull << ws->nhops) < gw_cfg.ws_ping_ms) {
        h2o_timeout_init(loop, &ws->hop_to[ws->nhops], 1ull << ws->nhops);
        ws->nhops++;
    }
    h2o_timeout_init(loop, &ws->idle_to, gw_cfg.ws_idle_s ? gw_cfg.ws_idle_s * 1000u : 1000u);
    h2o_timeout_init(loop, &ws->grace_to, gw_cfg.ws_grace_ms);
    h2o_timeout_init(loop, &ws->linger_to, GW_WS_LINGER_MS);
    h2o_timeout_init(loop, &ws->tick_to, GW_WS_TICK_MS);
    ws->tick.cb = on_tick;
    h2o_timeout_link(loop, &ws->tick_to, &ws->tick);
    ws->reap.cb = on_reap;
    gw_buf_init(&ws->scratch);
    h2o_multithread_register_receiver(cx->h2o.queue, &ws->kicks, on_kicks);
    cx->ws = ws;
    ws->ends = gw_wsend_new(ws);
    if (cx->idx >= 0 && cx->idx < GW_MAX_THREADS)
        atomic_store(&s_threads[cx->idx], ws);
    gw_lease_thread_begin();
    if (cx->idx == 0)
        gw_lease_start(cx);
}

static bool s_busy(gw_ws_t *ws)
{
    return !h2o_linklist_is_empty(&ws->conns);
}

void gw_ws_stop(gw_ctx_t *cx)
{
    gw_ws_t *ws = cx->ws;
    if (!ws)
        return;
    uint64_t start = util_mono_ms();
    uint64_t deadline = start + MIN(gw_cfg.shutdown_grace_ms,
                                    gw_cfg.ws_grace_ms + GW_WS_LINGER_MS + 2 * gw_cfg.request_timeout_ms);
    ws->stopping = true;
    int closed = 0;
    for (h2o_linklist_t *n = ws->conns.next, *next; n != &ws->conns; n = next) {
        next = n->next;
        gw_wsconn_t *c = H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, link, n);
        if (c->state == GW_WSCONN_OPEN) {
            gw_wsconn_close(c, GW_WSFRAME_CLOSE_GOING_AWAY, "gateway going away");
            closed++;
        }
    }
    if (closed)
        LOG(LOG_INFO, "thread %d: %d WebSocket connections closed (1001); their sessions get their grace", cx->idx,
            closed);
    while (s_busy(ws) && util_mono_ms() < deadline)
        h2o_evloop_run(cx->h2o.loop, 10);
    if (s_busy(ws))
        LOG(LOG_WARN, "thread %d: WebSocket sessions still open at the stop deadline: the lease's end ends them",
            cx->idx);
    if (h2o_timeout_is_linked(&ws->tick))
        h2o_timeout_unlink(&ws->tick);
    gw_lease_thread_done();
    gw_lease_end(cx, start + gw_cfg.shutdown_grace_ms);
}
