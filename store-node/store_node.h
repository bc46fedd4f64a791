/* store_node.h -- the center's store-node: the only writer of durable state
 * (store-node/store_node.c explains it).
 *
 * The process (store-node/store_node_main.c) reads the environment into a store_node_config_t,
 * takes the store directory's lock, makes a node (which opens the store, binds its sockets and
 * starts the writer thread) and runs it until a signal. The same calls serve unit tests: a test
 * opens a node on a temporary directory and inproc endpoints, talks to it as a cache-node would,
 * and runs it on a thread of its own -- no process, a real LMDB, real ZeroMQ.
 *
 * store_node_new, _turn, _run and _destroy are the calling thread's (the node's main thread);
 * the node starts and stops its writer thread itself.
 */
#ifndef PRESENCE_STORE_NODE_H
#define PRESENCE_STORE_NODE_H

#include "repl.h"
#include "store.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Replication (STORE_REPLICAS; docs/REPLICATION.md). nmembers 0: a single store, no log. */
typedef struct store_node_repl {
    unsigned nmembers;                        /* members of the center (1..REPL_MEMBERS_MAX) */
    uint64_t self;                            /* this member's number, 1..nmembers (STORE_REPLICA_ID) */
    repl_member_t members[REPL_MEMBERS_MAX];  /* member i+1: its raft address */
    char raft_dir[512];                       /* $DATA_DIR/raft: the log and raft's snapshots */
    char bind[REPL_ADDR_MAX];                 /* STORE_RAFT_BIND ("" = the member's own address) */
    uint64_t election_ms;                     /* STORE_ELECTION_MS */
    uint64_t snapshot_entries;                /* STORE_SNAPSHOT_ENTRIES */
} store_node_repl_t;

typedef struct store_node_config {
    char cmd_ep[512], pub_ep[512]; /* STORE_CMD_ENDPOINT (ROUTER) and STORE_PUB_ENDPOINT (PUB), bound */
    uint64_t center_port;          /* CENTER_PORT: with it, ROUTER tcp://ADDR:P and PUB P+1 for relays */
    char center_addr[64];          /* CENTER_BIND_ADDR */
    bool curve;                    /* the relays' link is CurveZMQ with this server key (Z85) */
    char curve_sec[41];
    uint64_t flush_ms;             /* SYNC_FLUSH_MS (SYNC_MODE=none) */
    uint64_t hugz_ms;              /* STORE_HUGZ_MS: the stream's heartbeat */
    uint64_t batch_max;            /* STORE_BATCH_MAX: items per commit group */
    uint64_t queue_max;            /* STORE_QUEUE_MAX: items queued for the writer before EOVERLOAD */
    uint64_t sweep_max;            /* STORE_SWEEP_MAX: records a sweep pass changes at most */
    uint64_t pub_hwm;              /* STORE_PUB_HWM */
    uint64_t touch_sync_ms;        /* TOUCH_SYNC_MS: heartbeat-only groups are flushed within this */
    char store_path[512];          /* the LMDB environment's directory */
    store_config_t store;          /* the engine's settings (its path: store_path) */
    store_node_repl_t repl;        /* replication (store.replicated is set with it) */
} store_node_config_t;

typedef struct store_node store_node_t;

/* Open the store, bind the sockets, start the writer thread. Returns 0 with *out set (the caller
 * owns it: free with store_node_destroy); or, with err (CFG_ERR_LEN) set, -1 when the store could
 * not be opened or a socket bound, and -2 when the CurveZMQ authenticator could not start (a
 * configuration error). zctx stays the caller's and must outlive the node. */
int store_node_new(void *zctx, const store_node_config_t *c, store_node_t **out, char *err);
/* Stop taking commands, let the writer finish what is queued, acknowledge and publish it, stop the
 * writer, close the sockets and the store, free. NULL-safe; sets *np to NULL. */
void store_node_destroy(store_node_t **np);
/* The open store (for the ready line: store_get_info). Borrowed; valid until store_node_destroy. */
store_t *store_node_store(store_node_t *n);

/* One loop turn: a wait (at most until the next heartbeat), then the writer's completions and
 * every command socket drained. Returns 0, or -1 when polling failed or the replicated member
 * failed (it must be restarted: store_node_failed says why). */
int store_node_turn(store_node_t *n, const volatile sig_atomic_t *stop);
/* Turns until *stop is set. Returns 0, or -1 when polling failed or the member failed. */
int store_node_run(store_node_t *n, const volatile sig_atomic_t *stop);
/* Why a replicated member stopped taking part (NULL while it is fine). Borrowed. Main thread. */
const char *store_node_failed(store_node_t *n);

#endif
