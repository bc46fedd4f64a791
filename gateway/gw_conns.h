/* gw_conns.h -- the connections a gateway thread can cut.
 *
 * h2o 2.2.5 offers no way to abort a streaming response: a client that does not read its SSE
 * stream (or, later, its WebSocket) must be cut at the socket. The thread accepts connections
 * itself and records each one's fd here (keyed by its h2o socket, in an idtab); an entry lives
 * until h2o closes the socket (its on_close hook).
 *
 * One table per event-loop thread, used on that thread only.
 */
#ifndef PRESENCE_GW_CONNS_H
#define PRESENCE_GW_CONNS_H

#include <h2o.h>

typedef struct gw_conns gw_conns_t;

/* An empty table. Caller owns it: free with gw_conns_destroy. */
gw_conns_t *gw_conns_new(void);
/* Free the table (h2o has closed every socket by then, or closes them without us). NULL-safe. */
void gw_conns_destroy(gw_conns_t **cp);
/* Record an accepted connection (sets sock's on_close hook: the entry goes with the socket). */
void gw_conns_add(gw_conns_t *c, h2o_socket_t *sock, int fd);
/* Shut down the connection req came on (its pending write fails; h2o closes it and stops the
 * response). HTTP/1 only: returns 0 when done, -1 when it is not a connection we can cut. */
int gw_conns_cut(gw_conns_t *c, h2o_req_t *req);

#endif
