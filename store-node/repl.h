/* repl.h -- a replicated log for the store-node: one member of a Raft cluster (libraft 0.15).
 *
 * A member owns a thread running a libuv loop with libraft, its TCP transport (raft_uv_tcp) and
 * its durable log (raft_uv: segments written O_DSYNC under cfg->dir). The owner -- the store-node
 * -- proposes opaque entries (one per commit group) from any thread; once an entry is committed
 * (durable on a majority) every member hands it to the owner's on_apply callback, in log order,
 * exactly once per state: the owner applies it to its state machine (LMDB) in one transaction
 * that also records the entry's index, and reports that index at the next start
 * (cfg->applied_index) so the replay libraft does after a restart skips what the state has.
 *
 *   owner thread(s)                     raft thread (libuv loop)                 libuv worker
 *   repl_propose(bytes, cookie) --[bounded queue + uv_async]--> raft_apply
 *                                       ... commit on a majority ...
 *                                       on_apply(index, bytes, cookie)  (owner: LMDB txn)
 *                                       on_reject(cookie, NOT_LEADER...)
 *                                       on_role(LEADER ready / not leader)
 *                                                                         on_snapshot(path)
 *                                       on_restore(path)
 *
 * Threads. Every callback but on_snapshot runs on the member's raft thread, except that during
 * repl_start on_restore, on_apply and on_fatal may run on the thread calling repl_start (libraft
 * restores its last snapshot and, for a single member, re-applies its log inside raft_start). Callbacks
 * never run concurrently with each other, except on_snapshot (a libuv worker thread), which runs
 * concurrently with on_apply but never with on_restore. repl_propose and repl_status are
 * thread-safe; repl_start/repl_stop are called by the owner once each.
 *
 * Why on_apply runs synchronously on the raft thread (no queue to the owner's writer): libraft
 * 0.15 advances last_applied when fsm->apply returns, takes snapshots at last_applied, and turns
 * a member UNAVAILABLE when fsm->apply fails on a follower (replication.c replicationAppend ->
 * recv.c convertToUnavailable). An apply that only queued the entry could neither refuse a full
 * queue nor give a snapshot that covers last_applied. So the owner's apply is the real apply.
 *
 * The raft thread blocks SIGPIPE for itself (raft_uv_tcp writes to peers with write(2)). The raft
 * port is not authenticated and libraft allocates whatever payload length a peer announces: it
 * must be reachable by the members only (private network, NetworkPolicy).
 *
 * Errors: functions return REPL_OK or a `enum repl_result` value; startup errors are written to
 * the caller's err buffer (REPL_ERR_LEN bytes). The module never logs.
 */
#ifndef PRESENCE_REPL_H
#define PRESENCE_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPL_ERR_LEN 256
#define REPL_MEMBERS_MAX 7
#define REPL_ADDR_MAX 256         /* "host:port" plus NUL (a StatefulSet pod's DNS name is long) */
#define REPL_ENTRY_MAX (4u << 20) /* largest entry accepted (raft_uv's 8 MiB segments must hold it) */

typedef struct repl repl_t;

enum repl_result {
    REPL_OK = 0,
    REPL_BUSY = 1,            /* cfg->max_outstanding proposals are already accepted and not ended */
    REPL_NOT_LEADER = 2,      /* this member is not the leader; the leader hint names the one it knows (or id 0) */
    REPL_LEADERSHIP_LOST = 3, /* accepted, then leadership was lost before the entry applied here: outcome unknown,
                                 it may still commit (and then reaches on_apply without a cookie) */
    REPL_SHUTDOWN = 4,        /* the member is stopping, stopped or failed (for an accepted proposal: outcome unknown) */
    REPL_TOOBIG = 5,          /* entry longer than cfg->entry_max */
    REPL_ERROR = -1,          /* invalid argument, or libraft refused the entry (see repl_status().error) */
};

enum repl_role {
    REPL_STOPPED = 0, /* not running (failed, or closing) */
    REPL_FOLLOWER = 1,
    REPL_CANDIDATE = 2,
    REPL_LEADER = 3,
};

typedef struct repl_member {
    uint64_t id;                 /* > 0, unique in the cluster */
    char address[REPL_ADDR_MAX]; /* "HOST:PORT": an IPv4 dotted quad, or a host name resolved at every
                                    connection attempt (repl_dns.c: libraft 0.15 itself dials IPv4 only) */
} repl_member_t;

typedef struct repl_leader {
    uint64_t id;                 /* 0 = no leader known */
    char address[REPL_ADDR_MAX]; /* "" when id is 0 */
} repl_leader_t;

typedef struct repl_callbacks {
    void *arg; /* passed to every callback */

    /* Required. Apply the committed entry at `index` (strictly increasing across calls, gaps are
     * entries that are not the owner's: barriers, configuration) to the state, in one transaction
     * that also stores `index` as the state's applied index. `data` is borrowed until return.
     * Called at most once per index for a given state: entries at or below the state's applied
     * index (cfg->applied_index, or the `applied` of the last restore) are skipped by the module.
     * `cookie` is the proposer's cookie when this member proposed the entry and is still the
     * leader of the term it proposed it in -- that proposal ends here (committed at `index`);
     * otherwise NULL. Return 0, or -1 when the entry could not be applied: the member then fails
     * (it stops taking part; on_fatal is called; the owner must restart it, which re-applies
     * from its applied index). A deterministic state machine must never skip an entry. */
    int (*on_apply)(void *arg, uint64_t index, const void *data, size_t len, void *cookie);

    /* Required. An accepted proposal ended without being applied here: status is REPL_NOT_LEADER,
     * REPL_LEADERSHIP_LOST or REPL_SHUTDOWN (the latter two: outcome unknown), or REPL_ERROR.
     * `leader` is the leader this member knows (id 0 if none). Each accepted proposal ends
     * exactly once: on_apply with its cookie, or on_reject. */
    void (*on_reject)(void *arg, void *cookie, int status, const repl_leader_t *leader);

    /* Optional. Role changes: REPL_LEADER once this member leads `term` AND has applied every
     * entry committed before (a barrier of its term was applied): the owner may start publishing
     * its change stream from its last applied sequence and run its sweeper. Every entry this
     * leader proposes applies after that call. Any other role (follower, candidate, and
     * REPL_STOPPED when the member stops or fails) is reported when it differs from the last one
     * reported or the known leader changes; the owner stops publishing at once. */
    void (*on_role)(void *arg, int role, uint64_t term, const repl_leader_t *leader);

    /* Required unless snapshots are disabled (cfg->snapshot_threshold = UINT32_MAX). Runs on a
     * libuv worker thread, concurrently with on_apply. Write a self-contained copy of the state
     * into the new file `path` (inside cfg->dir; for LMDB: mdb_env_copyfd2 with MDB_CP_COMPACT)
     * and set *applied to the applied index that copy holds (read from the copy itself). It must
     * include every entry applied before the call. Return 0, or -1 with err (the snapshot is
     * skipped; libraft retries after the next threshold). The module deletes the file. */
    int (*on_snapshot)(void *arg, const char *path, uint64_t *applied, char *err);

    /* Required. Replace the whole state by the copy in file `path` (inside cfg->dir; written and
     * fsynced by the module; the owner may rename(2) it into place, on the same filesystem),
     * whose applied index is `applied`. Only called when `applied` is above the current state's
     * applied index (a member that fell behind the leader's log, or a wiped one). Return 0, or
     * -1 with err, leaving the old state intact (libraft rejects the snapshot and retries). */
    int (*on_restore)(void *arg, const char *path, uint64_t applied, char *err);

    /* Optional. The member failed and stopped taking part (apply failure, log I/O error): the
     * owner should stop and restart it. `why` is borrowed for the call. */
    void (*on_fatal)(void *arg, const char *why);
} repl_callbacks_t;

typedef struct repl_config {
    uint64_t id;                  /* this member's id: must appear in members[] */
    const repl_member_t *members; /* the whole static membership (1..REPL_MEMBERS_MAX), copied */
    unsigned nmembers;
    const char *bind_address;             /* optional "A.B.C.D:PORT" to listen on; default: own address, or
                                             0.0.0.0:PORT when that is a host name */
    const char *dir;                      /* raft log directory (created if missing); copied */
    uint64_t applied_index;               /* the state's applied index at start (0 = empty state) */
    unsigned election_timeout_ms;         /* 0 = 1000; randomised per election in [x, 2x) by libraft */
    unsigned heartbeat_ms;                /* 0 = 100; must be < election_timeout_ms */
    unsigned snapshot_threshold;          /* 0 = 8192: entries applied since the last snapshot before a new one */
    unsigned snapshot_trailing;           /* 0 = 1024: entries kept in the log behind a snapshot */
    unsigned connect_retry_ms;            /* 0 = 200: delay between reconnects to a peer */
    unsigned install_snapshot_timeout_ms; /* 0 = 10000: a leader resends a snapshot not acknowledged
                                       within this; keep it above a snapshot's transfer + install time.
                                       A member whose disk was wiped rejoins only after it (libraft
                                       0.15 keeps the wiped member's old match index, see REPLICATION.md) */
    unsigned max_outstanding;             /* 0 = 4096: proposals accepted and not yet ended (queue bound) */
    size_t entry_max;                     /* 0 = REPL_ENTRY_MAX; at most REPL_ENTRY_MAX */
    unsigned stop_timeout_ms;             /* 0 = 30000: repl_stop's bound on waiting for the thread */
    bool snapshot_compression;            /* LZ4 the snapshot files raft_uv writes (costs a copy in memory) */
    repl_callbacks_t cb;
} repl_config_t;

typedef struct repl_member_status {
    uint64_t id;
    char address[REPL_ADDR_MAX];
    uint64_t match_index; /* leader only: highest index known replicated there (self: last stored) */
    bool recent;          /* leader only: heard from within the current election timeout window */
} repl_member_status_t;

typedef struct repl_status {
    int role;   /* enum repl_role (raft's view: LEADER even before `ready`) */
    bool ready; /* leader that applied its term's barrier (see on_role) */
    uint64_t term;
    repl_leader_t leader;
    uint64_t commit_index, last_applied, last_index, snapshot_index;
    uint64_t state_index; /* the owner's state holds every entry through this index */
    unsigned nmembers;
    repl_member_status_t members[REPL_MEMBERS_MAX];
    uint64_t elections;      /* times this member became a candidate */
    uint64_t leader_changes; /* times the known leader changed to another member */
    uint64_t snapshots_taken, snapshots_restored;
    uint64_t committed, rejected; /* this member's proposals: applied with their cookie / ended in on_reject */
    uint64_t outstanding;         /* accepted, not yet ended */
    bool failed;
    char error[REPL_ERR_LEN]; /* why it failed, or the last libraft error met */
} repl_status_t;

/* Start a member: copy the config, create cfg->dir, bootstrap the static membership on a
 * pristine log (raft_bootstrap; a log that has state keeps its own), start libraft (which may
 * call on_restore and on_apply on this thread, see above), then the raft thread. Refuses a state
 * ahead of the log (cfg->applied_index above the log's last index: a raft directory that does not
 * belong to this state, e.g. one wiped alone). Returns REPL_OK and *out (stop and free with
 * repl_stop), or REPL_ERROR with err. Not thread-safe with respect to the same cfg->dir. */
int repl_start(const repl_config_t *cfg, repl_t **out, char *err);

/* Stop the member and free it; sets *r to NULL; accepts NULL. Proposals not yet ended end with
 * on_reject(REPL_SHUTDOWN) on the raft thread before this returns. Waits at most
 * cfg->stop_timeout_ms for the thread (a snapshot copy in progress delays it): returns 0, or -1
 * when the thread did not end in time -- the member is then leaked and may still call callbacks.
 * Must not be called from a callback. */
int repl_stop(repl_t **r);

/* Propose an entry (copied; borrowed only for the call). Thread-safe, never blocks on the
 * network. REPL_OK: accepted; exactly one of on_apply(..., cookie) or on_reject(cookie, ...)
 * follows on the raft thread. Otherwise nothing was queued and no callback follows: REPL_BUSY
 * (max_outstanding reached), REPL_TOOBIG, REPL_SHUTDOWN, or REPL_ERROR (len 0). A member that is
 * not the leader accepts the proposal and rejects it on the raft thread with REPL_NOT_LEADER
 * and the leader it knows (repl_status tells the role beforehand, racily). */
int repl_propose(repl_t *r, const void *data, size_t len, void *cookie);

/* Copy the member's current status into *st (as of the raft thread's last loop turn).
 * Thread-safe. */
void repl_status(repl_t *r, repl_status_t *st);

/* Parse a static membership "ID@HOST:PORT,ID@...": ids 1..2^63-1 unique, addresses unique (HOST an
 * IPv4 dotted quad or a host name), 1..max members. Returns REPL_OK with out[0..*n), or REPL_ERROR
 * with err naming the rule. */
int repl_parse_members(const char *spec, repl_member_t *out, unsigned max, unsigned *n, char *err);

const char *repl_strerror(int rc);
const char *repl_role_name(int role);

#endif
