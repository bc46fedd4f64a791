/* gw_zfd.h -- a ZeroMQ socket inside a thread's h2o event loop, through its ZMQ_FD.
 *
 * The gateway's upstream DEALERs (and their monitors) and each watch hub's sync-client sockets
 * live in h2o loops. The recipe, in one place: the socket's ZMQ_FD is dup()ed and wrapped in an
 * h2o socket with H2O_SOCKET_FLAG_DONT_READ (h2o must never read libzmq's signaler, and closes only
 * its dup); ZMQ_FD is edge-like, so on readiness the owner's drain runs until EAGAIN -- bounded: a
 * drain that stops at its bound is run again on the loop's next turn (the context's zero timeout),
 * not after the next edge that may never come; and after a send on the socket the owner kicks a
 * drain for the next turn (a send can consume the edge of an arriving message).
 *
 * One loop thread: open, kick, close and the drains all run on the thread that owns the loop.
 */
#ifndef PRESENCE_GW_ZFD_H
#define PRESENCE_GW_ZFD_H

#include <h2o.h>
#include <stdbool.h>

typedef struct gw_zfd {
    h2o_socket_t *hs;          /* the dup of the ZMQ_FD, never read */
    h2o_timeout_entry_t again; /* a drain on the next loop turn */
    h2o_context_t *h2o;
    bool (*drain)(void *arg); /* drain (bounded); true when it stopped at its bound */
    void *arg;
} gw_zfd_t;

/* Watch zsock's ZMQ_FD in h2o's loop; drain(arg) runs on readiness and when kicked. Returns 0, or
 * -1 when the socket has no ZMQ_FD. */
int gw_zfd_open(gw_zfd_t *z, h2o_context_t *h2o, void *zsock, bool (*drain)(void *arg), void *arg);
/* Drain on the loop's next turn (after a send on the socket; idempotent within a turn). */
void gw_zfd_kick(gw_zfd_t *z);
/* Stop watching (the ZeroMQ socket stays the caller's; close it after). Safe on a closed one. */
void gw_zfd_close(gw_zfd_t *z);

#endif
