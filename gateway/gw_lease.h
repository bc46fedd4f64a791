/* gw_lease.h -- the gateway's lease: one per process, under which the store holds the sessions of
 * all its WebSocket connections (DESIGN.md, "Sessions, preferred status, leases and invisible
 * mode"; gateway/gw_lease.c explains the protocol).
 *
 * While the gateway lives, one LEASE command every GATEWAY_LEASE_MS/3 keeps every one of its
 * sessions alive -- nothing per connection is written while connections are idle. If the gateway
 * dies, the store ends all of them when the lease lapses; a clean stop ends the lease itself.
 *
 * Threads: the lease lives on event-loop thread 0, the owner -- its upstream sends every LEASE
 * command and its loop runs the refresh timer. Every other thread only reads the current id (an
 * atomic) and may ask for an early refresh. When the lease had to be replaced (it lapsed), each
 * thread sees the new id on its own tick and re-opens its connections' sessions under it
 * (gw_ws.c). The functions say which thread may call them.
 */
#ifndef PRESENCE_GW_LEASE_H
#define PRESENCE_GW_LEASE_H

#include "gw_ctx.h"

#include <stdbool.h>
#include <stdint.h>

/* Owner thread (event-loop thread 0), once at its start, after its upstream exists: take a random
 * lease id and refresh it now and every GATEWAY_LEASE_MS/3 from here on. */
void gw_lease_start(gw_ctx_t *cx);

/* The lease new sessions open under: non-zero once the store answered a refresh of it; 0 before
 * that and while a lapsed lease is being replaced (a connection is then refused 503). Any thread. */
uint64_t gw_lease_id(void);

/* The current lease is certainly live in the store now: a refresh of it, sent less than its ttl
 * ago, was answered. (False does not mean lapsed, only unknown.) Any thread. */
bool gw_lease_known_live(void);

/* A session write under the current lease was refused as if the store did not hold the lease:
 * refresh now (at most every 500 ms) instead of at the next interval. Any thread. */
void gw_lease_suspect(void);

/* Every event-loop thread, at its start: it may hold sessions under the lease until it calls
 * gw_lease_thread_done (its connections are closed and their graces are over). The owner ends the
 * lease only once every thread is done. */
void gw_lease_thread_begin(void);
void gw_lease_thread_done(void);

/* The thread is stopping. Owner: wait (at most until deadline_ms, monotonic) for every thread to be
 * done, then end the lease (LEASE end: the store ends what sessions remain at once) and wait for
 * the answer (REQUEST_TIMEOUT_MS at most), running the thread's loop meanwhile. Other threads:
 * nothing. */
void gw_lease_end(gw_ctx_t *cx, uint64_t deadline_ms);

#endif
