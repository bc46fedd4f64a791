/* zloop.h -- the poll loop of a ZeroMQ process, built on the sockets' ZMQ_FDs.
 *
 * The cache-node, the store-node and the sync relay each run one thread around one loop: wait
 * for any socket (or a plain fd, or a timer), then drain what arrived. This is that loop, written
 * once with the ZMQ_FD contract that makes waiting on the raw fds safe (and cheaper than
 * zmq_poll, which asks every socket for ZMQ_EVENTS before and after each wait):
 *
 *   1. ZMQ_FD is edge-like: it signals that the socket's state may have changed, not that a
 *      message waits. So every socket source is drained until EAGAIN on every turn -- at most
 *      ZLOOP_DRAIN_MAX messages per source per turn, so one busy socket cannot starve the others;
 *      a drain that stopped at its bound makes the next wait a zero-timeout poll (no sleep).
 *   2. A send on a socket can consume the edge of a message arriving meanwhile. Whoever sends on
 *      a polled socket calls zloop_sent(); before the next wait the loop reads ZMQ_EVENTS of
 *      every socket sent on, and does not sleep when one has a message waiting.
 *   3. Timers are the owner's: the turn hook runs first on every turn and returns the next
 *      deadline; the wait never outlasts it (nor max_wait_ms).
 *
 * One turn: turn hook -> post-send checks -> poll -> woke hook -> every source in the order added
 * -> after hook. Sources: a ZeroMQ socket drained here (its messages go to a callback), a plain fd
 * (an eventfd: its callback runs when it polled readable), or a "drainer": sockets another module
 * drains itself (the sync client), whose callback says whether it stopped at its own bound.
 *
 * Not thread-safe: a loop is made, run and destroyed by one thread.
 */
#ifndef PRESENCE_ZLOOP_H
#define PRESENCE_ZLOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#define ZLOOP_DRAIN_MAX 4096 /* messages per socket source per turn */
#define ZLOOP_SOURCES_MAX 16
#define ZLOOP_NEVER UINT64_MAX /* a turn hook's "no deadline" */

typedef struct zloop zloop_t;

/* One whole message from a socket source: frames[0..n) as zu_recv gives them (closed by the loop
 * after the call); n == 0 for a message with more than ZU_FRAMES_MAX frames, which was dropped. */
typedef void (*zloop_msg_fn)(void *arg, void *sock, zmq_msg_t *frames, int n);
/* A plain fd polled readable. */
typedef void (*zloop_fd_fn)(void *arg, int fd);
/* Drain your own sockets (bounded). Return true when a bound stopped you (call again at once). */
typedef bool (*zloop_drain_fn)(void *arg);

typedef struct zloop_hooks {
    void *arg;
    /* Runs first on every turn, with the monotonic time: run the timers that are due, flush what
     * was queued, and return the next deadline (monotonic ms; ZLOOP_NEVER for none). Optional. */
    uint64_t (*turn)(void *arg, uint64_t now_ms);
    /* After every wait: how long it took and how long it was allowed (both ms). Optional (the
     * cache-node tells a stall of its own process from it). */
    void (*woke)(void *arg, uint64_t waited_ms, uint64_t timeout_ms);
    /* Last on every turn, once every source was drained. Optional. */
    void (*after)(void *arg);
} zloop_hooks_t;

/* A loop whose waits last at most max_wait_ms. Caller owns it; free with zloop_destroy. */
zloop_t *zloop_new(const zloop_hooks_t *hooks, uint64_t max_wait_ms);
/* Destroy (NULL-safe, sets *lp to NULL). The sockets and fds stay the caller's. */
void zloop_destroy(zloop_t **lp);

/* Sources, drained in the order added (at most ZLOOP_SOURCES_MAX in all). Each returns 0, or -1
 * when the loop is full or the socket has no ZMQ_FD. */
int zloop_add_socket(zloop_t *l, void *sock, zloop_msg_fn fn, void *arg);
int zloop_add_fd(zloop_t *l, int fd, zloop_fd_fn fn, void *arg);
/* socks[0..n) (n <= 2) are polled and post-send checked here but drained by fn. */
int zloop_add_drainer(zloop_t *l, void *const *socks, int n, zloop_drain_fn fn, void *arg);

/* Something was sent on `sock` (a socket of a source of this loop; others are ignored): its
 * ZMQ_EVENTS are read before the next wait. Cheap: call it after every send. */
void zloop_sent(zloop_t *l, void *sock);

/* Run one turn (see the header comment); stops draining early once *stop is set (stop may be
 * NULL). Returns 0, or -1 when poll failed (errno set; EINTR is not a failure). */
int zloop_turn(zloop_t *l, const volatile sig_atomic_t *stop);
/* Run turns until *stop is set or zloop_stop is called. Returns 0, or -1 when poll failed. */
int zloop_run(zloop_t *l, const volatile sig_atomic_t *stop);
/* Make zloop_run return after the current turn (called from a callback or hook), or before its
 * first turn (called outside a run). */
void zloop_stop(zloop_t *l);

#endif
