/* gw_conns.h -- the connections a gateway thread can cut.
 *
 * h2o 2.2.5 offers no way to abort a streaming response: a client that does not read its SSE
 * stream (or, later, its WebSocket) must be cut at the socket, and a client that left an HTTP/1
 * stream is not noticed until a write fails. The thread accepts connections itself and records
 * each one's fd here (keyed by its h2o socket, in an idtab); an entry lives until h2o closes the
 * socket (its on_close hook). Cutting and watching for departures use that fd.
 *
 * One table per event-loop thread, used on that thread only.
 */
#ifndef PRESENCE_GW_CONNS_H
#define PRESENCE_GW_CONNS_H

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_conns gw_conns_t;

/* An empty table. Caller owns it: free with gw_conns_destroy. */
gw_conns_t *gw_conns_new(void);
/* Free the table (h2o has closed every socket by then, or closes them without us). NULL-safe. */
void gw_conns_destroy(gw_conns_t **cp);
/* Record an accepted connection (sets sock's on_close hook: the entry goes with the socket). Every
 * table's connections are counted together in gw_metrics.connections (MAX_CONNECTIONS). */
void gw_conns_add(gw_conns_t *c, h2o_socket_t *sock, int fd);
/* Shut down the connection req came on (its pending write fails; h2o closes it and stops the
 * response). HTTP/1 only: returns 0 when done, -1 when it is not a connection we can cut. */
int gw_conns_cut(gw_conns_t *c, h2o_req_t *req);
/* The same for any request, HTTP/2 included (the whole connection goes: every stream on it). */
int gw_conns_cut_any(gw_conns_t *c, h2o_req_t *req);

/* Be told at once when the client of req's HTTP/1 connection goes away -- it closes (FIN), resets
 * (RST), or its socket errs (TCP_USER_TIMEOUT: a peer that vanished stops acknowledging within
 * idle_ms + 3 probes) -- while h2o is not reading the socket (a streaming response). on_gone(arg)
 * runs once, on this thread's loop, from the departure set's own readiness callback (never from
 * inside a callback of that connection); the watch is over by then. Returns
 * a watch id, or 0 when req's connection cannot be watched (HTTP/2: h2o reads those sockets
 * itself and stops the response when the client goes). */
uint64_t gw_conns_watch_peer(gw_conns_t *c, h2o_loop_t *loop, h2o_req_t *req, uint64_t idle_ms, void (*on_gone)(void *),
                             void *arg);
/* A connection as it can be named after its request is gone: its socket and serial (a socket's
 * address may be reused; the serial tells them apart). */
typedef struct gw_conns_ref {
    h2o_socket_t *sock;
    uint64_t serial;
} gw_conns_ref_t;

/* Which connection req came on: its serial (0: not one of ours) and *sock. */
uint64_t gw_conns_serial(gw_conns_t *c, h2o_req_t *req, h2o_socket_t **sock);
/* A stream of that connection ended unanswered (HTTP/2): noted, settled at the end of the loop
 * turn by gw_conns_settle_cancels -- by then a connection that was closing is gone, and its
 * streams are not held against it. */
void gw_conns_note_cancel(gw_conns_t *c, h2o_socket_t *sock, uint64_t serial);
/* req's connection has overdrawn its budget of cancels (burst cancels, refilled at rate per
 * second; now_ms monotonic), counting the ones not settled yet, or was cut for it. A connection
 * found over budget is cut by the next settling. */
bool gw_conns_over_budget(gw_conns_t *c, h2o_req_t *req, double rate, double burst, uint64_t now_ms);
/* Charge every noted cancel to its connection (if it is still open); a connection left over
 * budget is cut (shut down: h2o closes it) and marked. Returns how many were cut; the first
 * cut_max go to cut[]. */
uint32_t gw_conns_settle_cancels(gw_conns_t *c, double rate, double burst, uint64_t now_ms, gw_conns_ref_t *cut,
                                 uint32_t cut_max);
/* Stop watching (0 and finished watches are ignored). */
void gw_conns_unwatch_peer(gw_conns_t *c, uint64_t id);
/* The thread is stopping: end every watch (no on_gone) and close the departure set, while the
 * loop still runs (h2o frees a closed socket on its next turn). NULL-safe. */
void gw_conns_stop_watching(gw_conns_t *c);

#endif
