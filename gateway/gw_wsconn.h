/* gw_wsconn.h -- one WebSocket connection of the presence endpoint: its state machine, the socket's
 * frames in and out, its limits, and the state its session and watches keep (gateway/gw_wsconn.c
 * explains it; the session's writes are gw_wssess.h, the watches gw_wswatch.h).
 *
 *            store answers the open         101 + welcome written
 *   OPENING -----------------------> (upgrade) ---------------------> OPEN
 *      | open refused: HTTP error                                       | close frame (either side),
 *      v                                                                | a limit, dead peer, stop,
 *    DONE <--- session resumed elsewhere / ended (no grace) --+         v slow reader
 *      ^                                                       |     CLOSING (close frame out, then FIN,
 *      |    grace over: session ended       socket closed      |       GW_WS_LINGER_MS at most)
 *      +--------------------------- GRACE <--------------------+---------+
 *
 * A connection holds its session (holds) from the open until it is closed and its grace is over, or
 * until the session was taken over by another connection (a resume: 4000) or ended from outside
 * (4001). The struct is freed once it is DONE and no upstream call points at it (calls == 0).
 *
 * Memory of an idle open connection: this struct (~0.5 KiB), the h2o socket, nothing else -- the
 * decoder, the output queue and the read buffer hold heap only while bytes are in flight.
 *
 * Threading: a connection belongs to the thread that accepted it.
 */
#ifndef PRESENCE_GW_WSCONN_H
#define PRESENCE_GW_WSCONN_H

#include "gw_ws.h"
#include "gw_wsframe.h"
#include "gw_wsrate.h"
#include "idtab.h"
#include "proto.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

enum gw_wsconn_state {
    GW_WSCONN_OPENING = 0, /* the session is being opened; the HTTP request waits for the store */
    GW_WSCONN_OPEN,        /* upgraded: frames flow */
    GW_WSCONN_CLOSING,     /* our close frame is queued or out; then the peer's FIN (or the linger) */
    GW_WSCONN_GRACE,       /* the socket is gone; the session ends when the grace is over */
    GW_WSCONN_DONE,        /* nothing left but upstream calls that still point here */
};

/* Custom close codes (RFC 6455 7.4.2: 4000-4999 are the application's). */
#define GW_WSCONN_CLOSE_RESUMED 4000 /* "session resumed elsewhere" (REALTIME.md) */
#define GW_WSCONN_CLOSE_ENDED 4001   /* "session ended": signed out (DELETE .../sessions/{sid}) or evicted */

typedef struct gw_wswatch gw_wswatch_t;

struct gw_wsconn {
    gw_ws_t *ws;
    h2o_linklist_t link;       /* ws->conns */
    idtab_link_t by_session;   /* ws->sessions (linked while the connection may hold its session) */
    h2o_socket_t *sock;        /* OPEN and CLOSING */
    gw_wsconn_t *reap_next;    /* ws->reap_list */
    h2o_timeout_entry_t timer; /* OPEN: the tick (ping, dead peer); CLOSING: the linger; GRACE: the grace */
    h2o_timeout_entry_t idle_timer;
    uint64_t conn_id;
    uint64_t lease_id;         /* the lease the store holds the session under (0: not open yet) */
    uint64_t last_rx_ms;       /* loop time of the last whole frame from the peer */
    uint64_t ping_at_ms;       /* loop time the next ping is due */
    uint64_t opened_us;
    void *rc;                  /* OPENING: the request's gw_rctx_t (valid only while the request is) */
    uint64_t req_start_us;     /* OPENING: the request's start and route, to count it if it goes away */
    int req_route;
    gw_wsframe_dec_t dec;
    gw_wsrate_t rate;
    char *out;                 /* frames waiting for the write in flight (heap, or NULL) */
    char *wbuf;                /* the write in flight (heap, or NULL) */
    uint32_t out_len, out_cap, wlen;
    uint32_t calls;            /* upstream calls in flight whose arg is this connection */
    gw_wswatch_t *watches;     /* this connection's watch subscriptions (gw_wswatch.c) */
    uint32_t nwatched;         /* users over all of them */
    uint8_t state;             /* enum gw_wsconn_state */
    uint8_t status;            /* the session's status as last written (online/away/busy) */
    uint8_t chosen;            /* the status the client chose (set, or ?status=) */
    uint8_t errors;            /* `error` answers in a row */
    bool holds;                /* the store holds the session for this connection */
    bool resumed;              /* opened with session_id= (a take-over) */
    bool idle;                 /* shown away by PRESENCE_IDLE_S */
    bool admin;                /* the token has presence:admin (sees every user's own view) */
    bool close_queued;         /* our close frame is in the output */
    bool fin_sent;             /* ... written, and our side shut down */
    bool reaping;              /* on ws->reap_list */
    bool reset_told;           /* the client was told its watches were reset */
    bool reopening;            /* a re-open under a new lease is out (gw_ws.c's lease watch) */
    bool bye;                  /* the client sent `bye`: its session ends at once, no grace */
    bool indexed;              /* linked in ws->sessions */
    bool slot;                 /* holds one of the process's connection slots (gw_ws_slot_take) */
    uint16_t lost_code;        /* OPENING: the session was lost before the upgrade: close with it */
    uint8_t uid_len, sid_len, dev_len;
    char uid[PROTO_USER_ID_MAX + 1];
    char sid[PROTO_SESSION_ID_MAX + 1];
    char device[PROTO_DEVICE_MAX + 1];
};

/* A new connection in OPENING for user uid (the token's subject), session sid (the client's, for a
 * resume, or a fresh one), device label and chosen status. Linked into ws->conns; not yet indexed
 * by session. Caller owns it until gw_wsconn_release frees it (DONE, no calls). */
gw_wsconn_t *gw_wsconn_new(gw_ws_t *ws, const char *uid, size_t ulen, const char *sid, size_t slen, const char *dev,
                           size_t dlen, int status, bool admin);
/* The upgrade completed (h2o_http1_upgrade's callback): sock is the connection's from now on
 * (NULL: the 101 could not be written -- the connection goes to its grace). reqsize bytes of
 * sock->input are the request; what follows them are frames the client sent early. */
void gw_wsconn_start(gw_wsconn_t *c, h2o_socket_t *sock, size_t reqsize);
/* The session is open in the store under lease_id (gw_wssess.c's open answered): c holds it and is
 * indexed by session. */
void gw_wsconn_holds(gw_wsconn_t *c, uint64_t lease_id);
/* Queue one text frame holding json[0..len) (a server message, valid UTF-8). Sent at the next
 * gw_wsconn_flush. A client with more than WS_QUEUE_MAX bytes waiting is dropped here (1008). */
void gw_wsconn_send(gw_wsconn_t *c, const char *json, size_t len);
/* Queue {"type":"error","error":msg}. counted: the client's fault -- the tenth in a row closes with
 * 1008 (a message handled without error resets the count). */
void gw_wsconn_error(gw_wsconn_t *c, const char *msg, bool counted);
/* The client was active (set, activity): the PRESENCE_IDLE_S timer starts over. */
void gw_wsconn_idle_restart(gw_wsconn_t *c);
/* Start writing what is queued (no-op while a write is in flight: it follows). */
void gw_wsconn_flush(gw_wsconn_t *c);
/* Close from our side: a close frame with code and reason (reason static or copied at once), then
 * FIN; the session's grace starts when the socket is gone. No-op unless OPEN. */
void gw_wsconn_close(gw_wsconn_t *c, unsigned code, const char *reason);
/* The session is no longer this connection's (resumed elsewhere: GW_WSCONN_CLOSE_RESUMED; ended
 * from outside: GW_WSCONN_CLOSE_ENDED): close with that code if open, and no grace (nothing to
 * end). In GRACE: DONE at once. */
void gw_wsconn_session_lost(gw_wsconn_t *c, unsigned code);
/* Free c if it is DONE and no call points at it. Every upstream callback whose arg is c calls
 * this last (after calls--). */
void gw_wsconn_release(gw_wsconn_t *c);
/* Enter GRACE now (the socket is gone or never came): the session ends PRESENCE_GRACE_MS from now
 * unless resumed, whatever the close code (1000 included) -- at once when the client sent `bye` (a
 * deliberate sign-out of the device); DONE at once when c does not hold its session. */
void gw_wsconn_grace(gw_wsconn_t *c);

#endif
