/* gw_h2guard.h -- requests that end before their answer: counted, and HTTP/2 connections that
 * cancel streams faster than a budget are cut (Rapid Reset, CVE-2023-44487; gateway/gw_h2guard.c
 * explains the mitigation).
 *
 * gw_http.c calls gw_h2guard_begin first for every request. Runs on the request's thread.
 */
#ifndef PRESENCE_GW_H2GUARD_H
#define PRESENCE_GW_H2GUARD_H

#include "gw_ctx.h"

#include <h2o.h>
#include <stdbool.h>

/* Watch req until its pool goes: if it goes unanswered (the client cancelled it, or its
 * connection went), it is counted once (status 499, out of the in-flight gauge), and an HTTP/2
 * stream the client reset is charged to its connection's budget (HTTP2_RESET_BUDGET, refilled at
 * HTTP2_RESETS_PER_S; settled at the end of the loop turn); a connection over it is cut. Returns
 * 0, or -1 when req is on a connection over budget: it is taken and left unanswered (no work; the
 * connection is cut at the end of this loop turn, which disposes of it). */
int gw_h2guard_begin(h2o_req_t *req, gw_rctx_t *rc);
/* A new HTTP/2 connection (its preface seen) from an address whose last was cut for rapid reset
 * less than 10 s ago: true (counted, logged) -- the caller closes it. Thread-safe. */
bool gw_h2guard_refuse(h2o_socket_t *sock);

#endif
