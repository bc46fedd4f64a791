/* cache_node_int.h -- inside the cache-node: its state and the calls between its three files.
 * Not for anything outside cache-node/cache_node*.c and cache-node/cache_{link,serve}.c.
 *
 *   cache_node.c   the node's life: sockets, the loop and its timers, stalls (calls both below)
 *   cache_serve.c  the gateways' side: reads with single flight, writes, replies (batched per
 *                  gateway socket), the stream's changes, stats (calls cache_link.c)
 *   cache_link.c   the store's side: requests in flight by id and deadline, one BATCH per loop turn,
 *                  pings and stats polls, answers routed back to each request's callback
 *
 * One thread: every function here runs on the node's loop thread.
 */
#ifndef PRESENCE_CACHE_NODE_INT_H
#define PRESENCE_CACHE_NODE_INT_H

#include "cache.h"
#include "cache_apply.h"
#include "cache_node.h"
#include "dispatch.h"
#include "idtab.h"
#include "leader.h"
#include "proto.h"
#include "stats.h"
#include "sync_client.h"
#include "zloop.h"

#include <stdbool.h>
#include <stdint.h>

#define CACHE_PING_INTERVAL_MS 500
#define CACHE_STATS_INTERVAL_MS 1000

typedef struct greq greq_t;
typedef struct fetch fetch_t;
typedef struct preq preq_t;

typedef struct waiter {
    struct waiter *next;
    greq_t *g;
    uint32_t slot;
} waiter_t;

/* A gateway read waiting for one or more fetches. */
struct greq {
    uint8_t ident[DISPATCH_IDENT_MAX];
    uint8_t ident_len;
    uint8_t type; /* PROTO_GET or PROTO_MGET */
    uint64_t rid;
    uint32_t nkeys, outstanding;
    uint8_t status; /* first error seen, else PROTO_OK */
    bool stale;
    uint64_t as_of;    /* every answer is current through this sequence (the least of the keys'); 0: unknown */
    proto_buf_t *vals; /* per key: encoded record, len 0 = not found */
    uint64_t *absent_at; /* MGET, per key: a read-through "not found" is current through this (0: not one);
                            NULL until the first */
};

/* One key asked of the store, with every read waiting for it (single flight). */
struct fetch {
    idtab_link_t link; /* by a hash of the key: keys may share one */
    uint8_t klen;
    char key[PROTO_USER_ID_MAX];
    waiter_t *waiters;
    uint64_t max_seen;        /* highest change seq seen for this key while pending */
    uint64_t max_store;       /* ... of those, the highest the store itself said (not an APPLY) */
    bool have_latest;         /* latest holds the record at max_seen (or latest_gone) */
    bool latest_gone;         /* the change at max_seen deleted the key */
    bool latest_applied;      /* latest came from an APPLY the store has not confirmed */
    proto_record_t latest;
};

enum preq_kind { PK_FORWARD = 1, PK_FETCH, PK_PING, PK_STATS };

/* A request's end: the store's answer (m), or m == NULL and status PROTO_ETIMEOUT / PROTO_EUNAVAIL.
 * It must not free p (the link does, after the call). */
typedef void (*cache_link_done_fn)(cache_node_t *cn, preq_t *p, const proto_msg_t *m, uint8_t status);

/* A request to the store we wait for. */
struct preq {
    idtab_link_t link;          /* by request id */
    struct preq *tnext, *tprev; /* deadline order (all store requests share one timeout) */
    uint64_t deadline, sent_us;
    uint8_t kind;
    cache_link_done_fn done;    /* PK_FORWARD, PK_FETCH */
    /* PK_FORWARD */
    uint8_t type;
    uint8_t ident[DISPATCH_IDENT_MAX];
    uint8_t ident_len;
    uint8_t klen; /* DEL: the key */
    char key[PROTO_USER_ID_MAX];
    uint64_t client_rid;
    uint64_t write_deadline_us; /* the gateway's deadline for this write (wall clock), 0 = none */
    /* PK_FETCH */
    fetch_t **fetches;
    uint32_t nfetch;
    /* a replicated center (cache_link.c): which member it went to; its bytes, to send it again
     * to a new leader when that is safe (a read, a write with a command id, or one refused
     * ENOTLEADER: never applied) */
    uint8_t member;
    uint8_t retries;
    bool parked;    /* waiting for a leader to be known (sent again when one is) */
    bool has_cmd_id;
    char *bytes;
    size_t blen;
};

struct cache_node {
    cache_node_config_t cfg;
    uint64_t ran_ms;            /* when this process last ran (cache_node.c: stalls) */
    uint64_t distrust_until_ms; /* after a stall, reads go through to the store until then */

    void *zctx, *router, *store;
    zloop_t *loop;
    sync_client_t *sync;
    cache_t *cache;

    /* cache_link.c */
    leader_t members;           /* STORE_CMD_ENDPOINT: one store, or every member of a replicated center */
    void *stores[PROTO_MEMBERS_MAX]; /* one DEALER per member; `store` is the one commands go to */
    uint64_t m_next_ping_ms[PROTO_MEMBERS_MAX];
    bool m_ping_out[PROTO_MEMBERS_MAX];
    uint64_t parked;            /* requests waiting for a leader */
    uint8_t cmd_prefix[8];      /* command ids: this process's random prefix . a counter */
    uint64_t next_cmd;
    uint64_t leader_switches, store_retries;
    idtab_t pending;            /* store requests by request id */
    preq_t *t_head, *t_tail;
    uint64_t next_rid;
    uint64_t last_store_ok_ms, next_ping_ms, next_stats_ms, store_rtt_us;
    bool store_answered; /* the store (through the relay: the center) has answered at least once */
    uint64_t store_epoch, store_seq;
    bool link_up;          /* the relay's link to the center (always true at a center) */
    uint64_t link_lag_us;
    stats_list_t store_stats;
    bool ping_out, stats_out;
    proto_batch_t store_batch;     /* commands to the store queued during this loop turn */
    uint64_t *store_rids;
    uint32_t store_rids_cap;
    uint64_t store_batch_deadline; /* earliest write deadline among the queued commands, 0 = none */
    proto_buf_t link_buf;
    stats_hist_t store_rtt_hist;

    /* cache_serve.c */
    idtab_t fetches;            /* fetches in flight by key */
    proto_buf_t buf, rec;
    /* While a BATCH from one gateway socket is processed, its immediate replies are collected
     * here and leave as one BATCH frame. */
    bool in_batch;
    const uint8_t *batch_ident;
    size_t batch_ident_len;
    proto_batch_t out_batch;
    proto_buf_t out_frame;
    cache_apply_t *applies;     /* APPLYs the store has not confirmed (cache_apply.h) */
    uint64_t applies_rejected, applies_refuted;

    uint64_t requests_total, reads_total, writes_total, fetches_total, fetch_keys_total, coalesced_total;
    uint64_t store_timeouts, store_unavailable, malformed_total, stale_served, bypass_reads, fills_dropped;
    uint64_t expired_writes; /* gateway writes past their deadline when we got to them: dropped */
    uint64_t stalls;         /* times this process found it had not run for a while */
};

/* ---- cache_link.c: the store's side ---------------------------------------------------------- */

void cache_link_init(cache_node_t *cn);
/* Make the store's DEALERs (one per member of STORE_CMD_ENDPOINT's list) and connect them.
 * Returns 0, or -1 with err (CFG_ERR_LEN). The sockets are cn->stores[0..cn->members.n). */
int cache_link_open(cache_node_t *cn, char *err);
/* Close the DEALERs (after cache_link_fini). */
void cache_link_close(cache_node_t *cn);
/* A new command id (PROTO_CMD_ID_LEN bytes) for a write: unique to this process's life. */
void cache_link_cmd_id(cache_node_t *cn, uint8_t *out);
/* Answer every request still waiting (EUNAVAIL), then free what the link holds. */
void cache_link_fini(cache_node_t *cn);
/* A request of `kind` with a fresh id and the store deadline. PK_FORWARD and PK_FETCH need `done`.
 * Caller fills its fields, then hands it to cache_link_send. */
preq_t *cache_link_request(cache_node_t *cn, uint8_t kind, cache_link_done_fn done);
/* Queue the encoded command b (carrying p's id) for the store and register p: it leaves with the
 * rest of this loop turn's commands (cache_link_flush), or at once when the batch is full.
 * write_deadline_us: the gateway's deadline of a write (0 = none). */
void cache_link_send(cache_node_t *cn, preq_t *p, const proto_buf_t *b, uint64_t write_deadline_us);
/* Send what this turn queued (one BATCH frame). A send that fails fails every queued request at
 * once (EUNAVAIL), not at its deadline; writes past their gateway deadline are not sent (ETIMEOUT). */
void cache_link_flush(cache_node_t *cn);
/* Requests past their deadline: ETIMEOUT. */
void cache_link_expire(cache_node_t *cn, uint64_t now);
/* Pings and stats polls that are due. */
void cache_link_poll(cache_node_t *cn, uint64_t now);
/* The store answers recently -- and, behind a relay, the relay's link to the center is up. */
bool cache_link_up(const cache_node_t *cn);
/* One message from the store's socket (a zloop message callback). */
void cache_link_frames(void *cn, void *sock, zmq_msg_t *frames, int n);

/* ---- cache_stats.c -------------------------------------------------------------------------- */

/* Append the node's numbers to l: the PONG's set (full = false: health, routing and a replicated
 * center's store_repl_* state) or everything (full = true: STATS). Reads cn only. */
void cache_stats_collect(const cache_node_t *cn, stats_list_t *l, bool full);

/* ---- cache_serve.c: the gateways' side ------------------------------------------------------- */

void cache_serve_init(cache_node_t *cn);
void cache_serve_fini(cache_node_t *cn);
/* One message from the gateways' ROUTER. */
void cache_serve_frames(cache_node_t *cn, void *sock, zmq_msg_t *frames, int n);
/* The callbacks the change stream's sync client applies to the cache with. */
void cache_serve_stream(cache_node_t *cn, sync_handler_t *h);
/* Timers: APPLYs the store did not confirm in time leave the cache. Returns the next deadline
 * (UINT64_MAX: none). */
uint64_t cache_serve_tick(cache_node_t *cn, uint64_t now);

#endif
