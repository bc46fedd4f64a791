/* gw_thread.h -- the gateway's event-loop threads: each an h2o loop with its own listener on the
 * shared listening socket, its own calls to every cache-node and its own watch hub
 * (gateway/gw_thread.c explains them).
 *
 * main() starts them all, waits (bounded) until they are ready, and stops them all on a signal.
 * These calls are main()'s; gw_thread_ready_count may be read from any thread.
 */
#ifndef PRESENCE_GW_THREAD_H
#define PRESENCE_GW_THREAD_H

#include <h2o.h>

/* Start n threads (n <= GW_MAX_THREADS), each with an h2o context from conf, accepting on a dup
 * of listen_fd once ready, calling the cache tier through zctx. Returns once every thread's loop
 * runs (accepting comes later: gw_thread.c). */
void gw_thread_start_all(h2o_globalconf_t *conf, int listen_fd, void *zctx, int n);
/* Threads that are ready: a cache-node has answered them and their watch hub is live. */
int gw_thread_ready_count(void);
/* Ask every thread to stop gracefully (SHUTDOWN_GRACE_MS for what is in flight) and join them. */
void gw_thread_stop_all(void);

#endif
