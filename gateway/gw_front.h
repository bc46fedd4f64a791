/* gw_front.h -- the first request head of every new connection, read and judged before h2o gets
 * the connection (gateway/gw_front.c explains why and what it refuses).
 *
 * The thread layer hands each accepted socket here instead of to h2o_accept; the front hands it on
 * to h2o (with the bytes it read still in the socket's input) or answers and closes it itself.
 * One thread: the socket's.
 */
#ifndef PRESENCE_GW_FRONT_H
#define PRESENCE_GW_FRONT_H

#include "gw_ctx.h"

#include <h2o.h>

/* Read sock's first request head (HTTP_HEADER_TIMEOUT_MS, HTTP_HEADER_MAX) and check it: an
 * HTTP/1 head that passes -- or anything that is not an HTTP/1 head (HTTP/2's preface, garbage
 * h2o answers itself) -- goes to h2o_accept(actx, sock). actx must live as long as the thread. */
void gw_front_accept(gw_ctx_t *cx, h2o_accept_ctx_t *actx, h2o_socket_t *sock);
/* The thread is stopping: close every connection still in its first head (this thread's). */
void gw_front_close_all(void);

#endif
