/* sync_client.h -- the change-stream client (the Clone pattern of the ZeroMQ guide, hardened).
 *
 * A sync client keeps a consumer (a cache-node, a sync relay, a gateway's watch hub) coherent with
 * the store's sequenced change stream:
 *
 *   1. subscribe first (SUB to the PUB endpoint, topics "C" and "H");
 *   2. then ask for a catch-up over a DEALER: every change after the last applied sequence, in
 *      bounded chunks -- or, when that is no longer possible (another database epoch, a store that
 *      went backwards, tombstones pruned), a snapshot: the consumer drops everything first;
 *   3. stream messages that arrive meanwhile are buffered (bounded); once the catch-up is complete
 *      through sequence T, buffered and later changes are applied only when their seq > T;
 *   4. live: a CHANGES message whose range does not continue the last applied sequence, or a HUGZ
 *      whose sequence is ahead of it, is a gap: counted, and repaired by a new catch-up from the
 *      last applied sequence. A stream silent for longer than the heartbeat limit makes the state
 *      SILENT (counted) and triggers a catch-up, retried with backoff until the store answers.
 *
 * It owns its two sockets and no thread: the owner polls the sockets it exposes (sync_client_poll
 * _items) and calls sync_client_handle() and sync_client_tick() from its own loop. Not
 * thread-safe; one owner thread.
 *
 * A replicated center (docs/REPLICATION.md): pub_ep and cmd_ep list every member, in member
 * order. The SUB is connected to all of them (only the leader publishes, and its heartbeats name
 * it); the DEALER to the one the client follows (sync/leader.h): the member the heartbeats name,
 * the leader a follower's ENOTLEADER answer names, or the next one after a catch-up that got no
 * answer. Sequences continue across leaders, so following a new one is an ordinary catch-up.
 */
#ifndef PRESENCE_SYNC_CLIENT_H
#define PRESENCE_SYNC_CLIENT_H

#include "proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

typedef struct sync_client sync_client_t;

enum sync_state {
    SYNC_CATCHING_UP = 0, /* a catch-up is in progress (not yet trustworthy) */
    SYNC_LIVE = 1,        /* applied state is complete up to the stream's last heartbeat */
    SYNC_SILENT = 2,      /* no word from the store past the heartbeat limit; catch-ups retried */
    SYNC_UPSTREAM_DOWN = 3, /* our stream (a relay's) is intact, but its link to the center is down */
};

typedef struct sync_handler {
    void *ctx;
    /* Apply one change; called in strictly increasing sequence order, never twice for a seq. */
    void (*apply)(void *ctx, const proto_change_t *c);
    /* Drop all state (a snapshot follows). */
    void (*reset)(void *ctx);
    /* Optional: the state changed. */
    void (*state)(void *ctx, int state);
} sync_handler_t;

typedef struct sync_config {
    const char *pub_ep;           /* PUB endpoint of the store (or relay); a replicated center: each member's, comma-separated */
    const char *cmd_ep;           /* command ROUTER endpoint of the store (or relay); the same way */
    uint64_t heartbeat_limit_ms;  /* silence that makes the stream SILENT (default 3000) */
    uint64_t request_timeout_ms;  /* catch-up request deadline (default 2000) */
    uint32_t chunk_items;         /* catch-up chunk size (default 1000) */
    uint32_t buffer_max;          /* changes buffered during a catch-up (default 200000) */
    uint32_t sub_hwm;             /* SUB receive high-water mark in messages (default 500000) */
    bool want_snapshot_data;      /* on a snapshot, receive every live record (else just a reset) */
    /* CurveZMQ (all three set, or none): the server's public key and our key pair, Z85 text. */
    const char *curve_server_key, *curve_public_key, *curve_secret_key;
} sync_config_t;

typedef struct sync_stats {
    uint64_t seq;           /* last applied sequence */
    uint64_t epoch;         /* database epoch of the applied state (0 before the first catch-up) */
    int state;
    uint64_t gaps, resyncs, snapshots, silences, changes_applied, malformed, overflows, upstream_down;
    uint64_t last_heard_ms; /* monotonic time of the last message from the store */
    uint64_t lag_ms;        /* 0 when live, else how long since the state was last known complete */
    uint64_t store_now_us;  /* the store's clock in its last heartbeat */
    uint32_t leader;        /* the member (1..N) catch-ups go to */
    uint64_t leader_switches; /* times that member changed */
    uint64_t snapshot_seq;  /* the sequence the last snapshot is complete at (its base; 0 before any): changes
                               applied after it (buffered ones replayed at once, too) have greater sequences */
} sync_stats_t;

/* Create and connect. Returns NULL with err (CFG_ERR_LEN-sized) on failure (also a list of
 * endpoints that is malformed, or pub and cmd lists of different lengths). */
sync_client_t *sync_client_new(void *zctx, const sync_config_t *cfg, const sync_handler_t *h, char *err);
void sync_client_destroy(sync_client_t **sc);

/* The two sockets to poll for ZMQ_POLLIN: items[0] = SUB, items[1] = DEALER. Returns 2. */
int sync_client_poll_items(sync_client_t *sc, zmq_pollitem_t *items);
/* Drain both sockets (bounded work per call). Returns 1 when a bound stopped the drain (call
 * again without waiting for ZMQ_FD), 0 when both sockets reported EAGAIN. */
int sync_client_handle(sync_client_t *sc);
/* True once after the client sent on its DEALER (catch-up requests): a caller that waits on the
 * sockets' ZMQ_FDs must check ZMQ_EVENTS on the DEALER (items[1]) before blocking. */
bool sync_client_take_sent(sync_client_t *sc);
/* Process one received message (frames[0..n)) exactly as sync_client_handle does for a message
 * read from the SUB socket (from_sub) or the DEALER. A seam for tests and fuzzing: they feed
 * frames without a publisher. The frames stay the caller's. */
void sync_client_input(sync_client_t *sc, bool from_sub, zmq_msg_t *frames, int n);
/* Timers (heartbeat limit, request deadlines, retries). Returns the next deadline (monotonic ms). */
uint64_t sync_client_tick(sync_client_t *sc, uint64_t now_ms);

/* Force a resync from the last applied sequence (e.g. after an outside hint of loss). */
void sync_client_resync(sync_client_t *sc);

/* Start from a position the consumer kept durably (database epoch, last applied sequence) instead
 * of from nothing: the first catch-up then asks only for the changes after it (or gets a snapshot
 * when the store cannot serve them: another epoch, a pruned changelog). Call before the first
 * sync_client_tick. Returns 0, or -1 when the client has already applied something. */
int sync_client_set_position(sync_client_t *sc, uint64_t epoch, uint64_t seq);

void sync_client_get_stats(const sync_client_t *sc, sync_stats_t *out);
int sync_client_state(const sync_client_t *sc);
/* The member (1..N of the endpoint lists) the client follows now; 1 for a single store. */
uint32_t sync_client_leader(const sync_client_t *sc);
uint64_t sync_client_seq(const sync_client_t *sc);
const char *sync_state_name(int state);

#endif
