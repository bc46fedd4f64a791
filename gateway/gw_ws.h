/* gw_ws.h -- a gateway thread's WebSocket connections (GET /api/v2/presence/connect, REALTIME.md
 * "WebSocket: connect = online"): the table every connection of the thread is in, the timers they
 * share, and what happens to many of them at once -- a session resumed by another connection of
 * this process, a new lease, the gateway stopping (gateway/gw_ws.c explains it).
 *
 * Files of the endpoint, top down:
 *   gw_connect.c   the HTTP side: every check before the upgrade, the session opened, 101 + welcome
 *   gw_ws.c        this: per thread (connections, timers, kicks, lease watch, stop) and per process
 *                  (RLIMIT_NOFILE, the connection cap)
 *   gw_wsconn.c    one connection: frames in and out, limits, pings, close, grace
 *   gw_wssess.c    its session's writes to the store (open, set, idle, re-open, end)
 *   gw_wsend.c     sessions ended (or resumed) from outside, seen on the change stream: 4001/4000
 *   gw_wswatch.c   its watches: subscriptions to the thread's watch hub, per-viewer events
 *   gw_lease.c     the process's lease all sessions are held under
 *   gw_wsframe.c gw_wsmsg.c gw_wsrate.c   pure: RFC 6455 framing, the JSON messages, the budget
 *
 * Threading: a gw_ws_t and its connections belong to one event-loop thread. The process-wide parts
 * (the connection count, the table of threads for kicks) are atomics or written before threads run.
 */
#ifndef PRESENCE_GW_WS_H
#define PRESENCE_GW_WS_H

#include "gw_ctx.h"
#include "idtab.h"

#include <h2o.h>
#include <h2o/multithread.h>
#include <stdbool.h>
#include <stdint.h>

#define GW_WS_LINGER_MS 2000 /* a closing connection's last chance to take its close frame and FIN */
#define GW_WS_TICK_MS 100    /* how often a thread looks at the lease (re-opens after a lapse) */
#define GW_WS_REOPEN_MAX 1000 /* sessions re-opened per tick after a lease change */
#define GW_WS_FD_RESERVE 1024 /* file descriptors kept for everything but WebSockets */
#define GW_WS_SNDBUF (64 << 10) /* SO_SNDBUF of a WebSocket (the kernel doubles it): bounds what waits in the kernel */
#define GW_WS_HOPS 22 /* hop lists of 1, 2, 4 .. 2^21 ms: enough for any WS_PING_INTERVAL_MS (at most 3600000) */

typedef struct gw_wsconn gw_wsconn_t;

struct gw_ws {
    gw_ctx_t *cx;
    h2o_linklist_t conns;   /* every connection of the thread, in any state (gw_wsconn_t.link) */
    idtab_t sessions;       /* connections holding their session, by gw_ws_session_key (the user's) */
    h2o_timeout_t ping_to;  /* WS_PING_INTERVAL_MS: each open connection's tick */
    h2o_timeout_t hop_to[GW_WS_HOPS]; /* 2^i ms, for the i < nhops with 2^i < WS_PING_INTERVAL_MS: a tick
                                         due sooner than a whole interval (gw_wsconn.c, s_tick_arm) */
    uint8_t nhops;
    h2o_timeout_t idle_to;  /* PRESENCE_IDLE_S (when not 0) */
    h2o_timeout_t grace_to; /* PRESENCE_GRACE_MS: closed connections whose session still lives */
    h2o_timeout_t linger_to;
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;  /* the lease watch */
    h2o_timeout_entry_t reap;  /* zero timeout: watches to drop outside hub callbacks */
    gw_wsconn_t *reap_list;
    h2o_multithread_receiver_t kicks; /* sessions taken over on another thread of this process */
    uint64_t lease_seen;       /* the lease this thread last re-opened its sessions under */
    uint64_t next_conn;
    bool stopping;
    gw_buf_t scratch;          /* a frame being rendered */
    struct gw_wsend *ends;     /* sessions ended from outside (gw_wsend.c); NULL without a watch hub */
};

/* ==== the process ============================================================================== */

/* main(), before any thread: raise the RLIMIT_NOFILE soft limit to the hard limit, and decide how
 * many WebSockets the process takes: WS_MAX_CONNECTIONS, but never more than the descriptors left
 * after GW_WS_FD_RESERVE (a connection refused with 503 needs a descriptor to be told so). Logs
 * what it decided. */
void gw_ws_process_init(void);
/* The cap gw_ws_process_init decided. Any thread. */
uint64_t gw_ws_max_connections(void);
/* Take one of the process's connection slots (from the handshake until the socket closes): false
 * when all are taken (the caller answers 503). gw_ws_slot_put gives it back. Any thread. */
bool gw_ws_slot_take(void);
void gw_ws_slot_put(void);

/* ==== a thread ================================================================================= */

/* At the thread's start (gw_thread.c): cx->ws, registered for kicks from the other threads;
 * thread 0 also starts the lease (gw_lease_start). */
void gw_ws_attach(gw_ctx_t *cx);
/* The thread is stopping (gw_thread.c, before the upstream goes): no new connections; every open
 * one is closed with 1001; the loop runs until every closed connection's grace has ended its
 * session (or was resumed) and no session write is out, at most min(PRESENCE_GRACE_MS plus a
 * request timeout, SHUTDOWN_GRACE_MS); then the lease is ended (thread 0, once every thread is
 * done). */
void gw_ws_stop(gw_ctx_t *cx);

/* ==== for the connections (gw_wsconn.c, gw_wssess.c, gw_connect.c) ============================ */

/* A connection id unique in this process (the store pairs it with the lease). */
uint64_t gw_ws_conn_id(gw_ws_t *ws);
/* The key of a (user, session) in ws->sessions: the user's alone (sid is not hashed), so one chain
 * holds all of a user's connections on the thread -- a resume finds its session's other holders
 * and a change of the user finds its connections (gw_wsend.c) with one lookup. Finders compare the
 * user id (and the session id) themselves: other users may share a key. */
uint64_t gw_ws_session_key(const char *uid, size_t ulen, const char *sid, size_t slen);
/* c took its session over (a resume with session_id=): every other connection of this process that
 * had it -- open, or closed and in its grace -- is told it is no longer its session
 * (gw_wsconn_session_lost: 4000), on this thread at once, on the others through their loops. */
void gw_ws_resumed(gw_ws_t *ws, const gw_wsconn_t *c);
/* Drop c's watches on the next loop turn (never inside a watch hub callback, which may be walking
 * the very table they are in). */
void gw_ws_reap_later(gw_ws_t *ws, gw_wsconn_t *c);

#endif
