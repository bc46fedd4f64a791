/* repl_harness.h -- what check_repl and replbench share: a small LMDB state machine driven by
 * repl.h, members started in this process (one raft thread each) or in forked processes that a
 * test can SIGKILL, and the shared-memory page through which forked members report.
 *
 * The state machine ("rh_fsm") is the shape the store-node's will have: every committed entry is
 * applied in one LMDB transaction (MDB_NOSYNC: the raft log is the durable record) that also
 * stores its index as "applied", so a restart skips what LMDB already holds; a snapshot is a
 * compacting copy of the environment (mdb_env_copyfd2), a restore swaps the environment for a
 * validated copy. Its table `ent` maps BE64(index) -> (proposal id, hash of the entry[, the entry's
 * bytes when keep_data]), so two
 * members can be compared entry by entry, and `meta` keeps "applied", "chain" (a running hash of
 * every applied (index, entry) in order) and "count".
 *
 * Threads: rh_fsm callbacks run on the member's raft thread (on_snapshot on a libuv worker); the
 * cached counters (rh_fsm_counts) may be read from any thread. Everything else is for the test
 * thread.
 */
#ifndef PRESENCE_REPL_HARNESS_H
#define PRESENCE_REPL_HARNESS_H

#include "repl.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- the LMDB state machine ------------------------------------------------------------------ */

typedef struct rh_fsm {
    char dir[600];
    MDB_env *env;
    MDB_dbi ent, meta;
    bool sync;            /* fsync every apply (the no-replication baseline of replbench) */
    bool keep_data;       /* store each entry's bytes too (a state as large as the log) */
    pthread_mutex_t lock; /* guards the counters below for readers on other threads */
    uint64_t applied, chain, count;
    uint64_t apply_calls; /* on_apply calls that changed the state */
    uint64_t restores;
    int role;            /* the last role on_role reported */
    uint64_t early_acks; /* own entries applied before this member reported itself leader */
    /* Test hooks, raft thread: a proposal applied here with its cookie / ended without. */
    void (*on_ack)(void *ctx, void *cookie, uint64_t index);
    void (*on_nack)(void *ctx, void *cookie, int status, const repl_leader_t *leader);
    void (*on_role)(void *ctx, int role, uint64_t term, const repl_leader_t *leader);
    void *ctx;
} rh_fsm_t;

typedef struct rh_counts {
    uint64_t applied, chain, count, apply_calls, restores, early_acks;
} rh_counts_t;

/* Open (creating) the environment in dir. Returns 0 or -1 with err (REPL_ERR_LEN). */
int rh_fsm_open(rh_fsm_t *f, const char *dir, bool sync, char *err);
void rh_fsm_close(rh_fsm_t *f);
void rh_fsm_counts(rh_fsm_t *f, rh_counts_t *c);
/* Apply an entry directly (what the repl callback does). Returns 0 or -1. */
int rh_fsm_apply(rh_fsm_t *f, uint64_t index, const void *data, size_t len);
/* Fill cb with this state machine's callbacks (arg = f). */
void rh_fsm_callbacks(rh_fsm_t *f, repl_callbacks_t *cb);
/* Read the whole `ent` table: *out (malloc'd, n pairs of (proposal id, hash)) and the first
 * index it holds (entries are contiguous in commands, not in raft indexes: idx[] gets each key).
 * Returns the number of entries, or -1. The caller frees *ids, *hashes and *idx. */
long rh_fsm_entries(rh_fsm_t *f, uint64_t **idx, uint64_t **ids, uint64_t **hashes);

/* An entry of `len` bytes (>= 8) carrying proposal id `pid` (its first 8 bytes) and filler. */
void rh_entry_fill(unsigned char *buf, size_t len, uint64_t pid);

/* ---- members in this process ----------------------------------------------------------------- */

typedef struct rh_node {
    uint64_t id;
    char base[512]; /* base/raft (the log), base/lmdb (the state) */
    repl_member_t members[REPL_MEMBERS_MAX];
    unsigned nmembers;
    repl_config_t tmpl; /* timing knobs; ids, dirs and callbacks are filled in by rh_node_start */
    rh_fsm_t fsm;
    repl_t *r;
} rh_node_t;

/* Pick n distinct free loopback TCP ports (bound, read, closed: a tiny race with other
 * processes, as any free-port helper). Returns 0 or -1. */
int rh_free_ports(int *ports, unsigned n);
/* Set up n nodes with ids 1..n on 127.0.0.1 free ports under base_dir/mN (not started). */
int rh_cluster_init(rh_node_t *nodes, unsigned n, const char *base_dir, const repl_config_t *tmpl);
/* Open the node's state and start its member. Returns 0 or -1 with err. */
int rh_node_start(rh_node_t *nd, char *err);
/* Stop the member (if running) and close the state. Returns repl_stop's result. */
int rh_node_stop(rh_node_t *nd);
/* Remove the node's directories (raft log and state). */
void rh_node_wipe(rh_node_t *nd);

/* The index of the running node that is a ready leader with the highest term, or -1. */
int rh_ready_leader(rh_node_t *nodes, unsigned n);
/* Poll until a ready leader exists (at most timeout_ms). Returns its index or -1. */
int rh_wait_leader(rh_node_t *nodes, unsigned n, unsigned timeout_ms);

/* Proposal bookkeeping for tests: a cookie is a pointer to one of these. */
typedef struct rh_prop {
    atomic_int state;     /* 0 pending, 1 applied with its cookie, 2 rejected */
    int status;           /* on_reject status */
    uint64_t index;       /* where it was applied */
    repl_leader_t leader; /* on_reject's hint */
} rh_prop_t;
/* Test hooks that fill rh_prop_t cookies (ctx unused). */
void rh_prop_ack(void *ctx, void *cookie, uint64_t index);
void rh_prop_nack(void *ctx, void *cookie, int status, const repl_leader_t *leader);

/* Remove a directory tree. */
void rh_rmtree(const char *path);
uint64_t rh_mono_us(void);

/* ---- members in forked processes -------------------------------------------------------------- */

#define RH_LAT_BUCKETS 100 /* latency histogram: bucket b counts latencies in [2^(b/4), 2^((b+1)/4)) us */

typedef struct rh_shm_member {
    _Atomic pid_t pid;
    atomic_int role, ready, failed;
    atomic_ullong term, commit_index, state_index, snapshots_restored, snapshots_taken, elections;
    atomic_ullong acked, rejected, outstanding; /* this process's own proposals */
    atomic_ullong ready_term, ready_us;         /* when it last became a ready leader (mono us) */
    atomic_ullong first_ack_us;                 /* first own proposal applied after ready_us */
    atomic_ullong lat[RH_LAT_BUCKETS];          /* propose -> applied here with the cookie */
} rh_shm_member_t;

typedef struct rh_shm {
    atomic_int stop; /* parent: every member stops cleanly and exits */
    atomic_int load; /* parent: a ready leader keeps `inflight` proposals outstanding */
    unsigned inflight;
    unsigned entry_bytes;
    int keep_data; /* members' state machines store entry bytes (rh_fsm_t.keep_data) */
    rh_shm_member_t m[REPL_MEMBERS_MAX];
} rh_shm_t;

/* A MAP_SHARED anonymous page for the members forked after it. */
rh_shm_t *rh_shm_new(void);
void rh_shm_destroy(rh_shm_t *shm);
/* Fork member nodes[i] into its own process (reporting into shm->m[i]). Returns its pid or -1. */
pid_t rh_fork_member(rh_node_t *nodes, unsigned i, rh_shm_t *shm);
/* Wait for pid to exit within timeout_ms (then SIGKILL it). Returns its exit status (0..255),
 * 128+signal, or -1 when it had to be killed. */
int rh_wait_exit(pid_t pid, unsigned timeout_ms);
/* Latency percentile (0..1) in microseconds from a histogram. */
double rh_lat_pct(const unsigned long long *lat, double p);

#endif
