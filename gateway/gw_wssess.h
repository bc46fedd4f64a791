/* gw_wssess.h -- a WebSocket connection's session in the store: the writes that open it, change it
 * and end it (gateway/gw_wssess.c explains them).
 *
 * Every write is a PUT of one session entry (session_id, device, the lease and the connection's id,
 * PROTO_CMD_F_* flags) to the cache-node that owns the user, which passes it to the store. The store
 * applies a connection's write only while that connection still holds the session (F_OPEN opens it
 * or takes it over), so a connection that was resumed elsewhere can neither change nor end it.
 *
 * Threading: the connection's thread. Each call registers an upstream call whose arg is the
 * connection (c->calls counts them; the callback releases it).
 */
#ifndef PRESENCE_GW_WSSESS_H
#define PRESENCE_GW_WSSESS_H

#include "gw_upstream.h"
#include "gw_wsconn.h"
#include "gw_wsmsg.h"

#include <h2o.h>

/* Open the session (or take it over: a resume) under the current lease with the connection's chosen
 * status and device, for the HTTP request req (which waits for it). done(c, req, m, status) gets the
 * store's answer -- req is NULL when the request went away meanwhile; m NULL on a transport failure
 * (status says which); on PROTO_OK c already holds the session and m->recs[0] is the record as
 * stored. Returns the call, or NULL when nothing was sent (no cache-node up, or no lease held):
 * done never runs then. */
gw_call_t *gw_wssess_open(gw_wsconn_t *c, h2o_req_t *req,
                          void (*done)(gw_wsconn_t *c, h2o_req_t *req, const proto_msg_t *m, int status));
/* A `set` message: the session's status (when given: the client's new choice) and the user's
 * message. Not answered on success; a failure is answered with an `error` frame. Counts as
 * activity (an idle session is no longer idle). */
void gw_wssess_set(gw_wsconn_t *c, const gw_wsmsg_t *m);
/* An `activity` message (or any `set`): an idle session gets the client's chosen status back, and
 * the idle timer starts over. */
void gw_wssess_activity(gw_wsconn_t *c);
/* PRESENCE_IDLE_S passed without set/activity: the session shows away (F_IDLE: an automatic
 * status; the client's choice is kept for when it is back). */
void gw_wssess_idle(gw_wsconn_t *c);
/* The lease changed (the old one lapsed): open the session again under lease_id (F_OPEN), with the
 * status it shows now. */
void gw_wssess_reopen(gw_wsconn_t *c, uint64_t lease_id);
/* The grace is over: end the session (status offline; refused by the store when another connection
 * took it over meanwhile). c is DONE when this returns. */
void gw_wssess_end(gw_wsconn_t *c);
/* The store's SESSIONS answer m (OK) for c's user, while c holds its session: c's session gone ->
 * c closed 4001; held by another lease or connection -> closed 4000 (gw_wsconn_session_lost).
 * Returns true when the store says the session is still c's (nothing done). The caller decides
 * first what a missing session means when the lease may have lapsed (gw_lease_known_live). */
bool gw_wssess_judge(gw_wsconn_t *c, const proto_msg_t *m);
/* Whether m (a SESSIONS answer) lists c's session. */
bool gw_wssess_listed(const gw_wsconn_t *c, const proto_msg_t *m);

#endif
