/* bare_ws.h -- what the three files of h2o_bare share: the per-thread state, the per-connection
 * header both WebSocket modes embed first, and each mode's entry points.
 *
 * Threading: every function here runs on the event-loop thread that owns the connection
 * (bare_self); nothing is shared between threads but the atomic counters in h2o_bare.c.
 */
#ifndef PRESENCE_BARE_WS_H
#define PRESENCE_BARE_WS_H

#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { BARE_WS = 1, BARE_RAW = 2 };
#define BARE_LINGER_MS 2000 /* how long a closing raw connection may take to send its FIN */

typedef struct bare_cfg {
    uint64_t ping_ms; /* 0: no server pings and no dead-peer detection */
    size_t max_frame; /* largest message accepted (close 1009 beyond) */
} bare_cfg_t;
extern bare_cfg_t bare_cfg;

typedef struct bare_thread {
    int idx;
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_linklist_t conns;   /* every open WebSocket of this thread (bare_conn_t.link) */
    h2o_timeout_t ping_to;  /* fixed-duration list: one entry per connection when pings are on */
    h2o_timeout_t linger_to; /* raw connections that sent their close and wait for the peer's FIN */
} bare_thread_t;
extern __thread bare_thread_t *bare_self;

typedef struct bare_watch {
    size_t n;
    char *ids[];
} bare_watch_t;

/* Embedded first in both modes' connection structs. */
typedef struct bare_conn {
    h2o_linklist_t link;
    h2o_timeout_entry_t tick; /* ping tick, or (raw, closing) the linger deadline */
    uint64_t last_rx_ms;      /* loop time of the last complete frame from the peer */
    bare_watch_t *watch;      /* NULL until the client sends a watch */
    uint8_t kind;
} bare_conn_t;

/* h2o_bare.c: bookkeeping and the mode-independent message behaviour. */
void bare_conn_init(bare_conn_t *c);
void bare_conn_opened(bare_conn_t *c, int kind);
void bare_conn_closed(bare_conn_t *c);
void bare_conn_on_text(bare_conn_t *c, const char *data, size_t len);
/* from_outside: true when not called from inside this connection's own message callback (the
 * wslay mode must then call h2o_websocket_proceed, which may free the connection). */
void bare_conn_send(bare_conn_t *c, int opcode, const void *data, size_t len, bool from_outside);
void bare_conn_send_text(bare_conn_t *c, const char *s, bool from_outside);

/* bare_wslay.c: h2o_upgrade_to_websocket + libwslay. */
void bare_wslay_upgrade(h2o_req_t *req, const char *client_key);
void bare_wslay_send(bare_conn_t *c, int opcode, const void *data, size_t len, bool from_outside);
void bare_wslay_drop(bare_conn_t *c);

/* bare_raw.c: h2o_http1_upgrade + our own RFC 6455 framing. */
void bare_raw_upgrade(h2o_req_t *req, const char *client_key);
void bare_raw_send(bare_conn_t *c, int opcode, const void *data, size_t len);
void bare_raw_drop(bare_conn_t *c);

#endif
