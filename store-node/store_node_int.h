/* store_node_int.h -- inside the store-node: its state and the calls between its two threads' files.
 * Not for anything outside store-node/store_node*.c and store-node/store_writer.c.
 *
 *   store_node.c    the main thread: sockets, commands, reads, catch-ups, publishing, acks, the loop
 *   store_writer.c  the writer thread: every LMDB write transaction (group commit), the sweeper,
 *                   flushes (replicated: it proposes groups and sweeps instead)
 *   store_repl.c    a replicated member: the raft thread's applies, roles, snapshots (store_repl_*)
 *   store_queue.c   the two queues between the threads
 *
 *   main --(job queue: queue_lock + queue_cond, bounded by queue_max items)--> writer
 *   writer --(completion queue: done_lock + an eventfd the main loop polls)--> main
 *
 * Lock order: queue_lock and done_lock are never held together; store.c's own locks (resize_lock,
 * pool_lock) are taken inside store.c only, never while a queue lock is held.
 */
#ifndef PRESENCE_STORE_NODE_INT_H
#define PRESENCE_STORE_NODE_INT_H

#include "curve.h"
#include "dispatch.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "store_node.h"
#include "zloop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* One write command, from the main thread to the writer and back. */
typedef struct job {
    struct job *next;
    void *router; /* which ROUTER the command came from (answers go back there) */
    uint8_t ident[DISPATCH_IDENT_MAX];
    uint8_t ident_len;
    uint8_t type;
    uint64_t rid;
    store_op_t op;
    proto_record_t *in, *out;
    uint64_t t_recv_us;
    uint64_t deadline_us; /* the sender's deadline (wall clock): not applied after it; 0 = none */
    bool expired;         /* taken by the writer after deadline_us: answered ETIMEOUT, not applied */
} job_t;

/* What one commit (or one sweep) did: its jobs, answered, and its changes, to publish first.
 * Replicated mode also reports role changes this way (kind COMP_ROLE), in order with the groups. */
enum completion_kind { COMP_GROUP = 0, COMP_ROLE = 1 };

typedef struct completion {
    struct completion *next;
    job_t *jobs;
    store_changes_t changes;
    uint8_t kind;   /* enum completion_kind */
    uint8_t entry;  /* replicated: what was proposed with it (store_entry.h kinds) */
    bool leading;   /* COMP_ROLE: this member now serves as the leader (publishes from pub_from) */
    uint32_t leader; /* COMP_ROLE: the leader's member number (0: none known) */
    uint64_t epoch, pub_from, term;
    uint64_t proposed_us; /* replicated GROUP: when it was proposed (commit latency) */
} completion_t;

/* Acknowledgements of one group, one frame per peer (a BATCH when a peer has several). */
#define ACKBOXES 16

typedef struct ackbox {
    void *router;
    uint8_t ident[DISPATCH_IDENT_MAX];
    uint8_t ident_len;
    proto_batch_t batch;
} ackbox_t;

typedef struct store_repl store_repl_t;

struct store_node {
    store_node_config_t cfg;
    store_repl_t *repl; /* store_repl.c; NULL: a single store */
    curve_zap_t *zap;
    store_t *store;
    void *zctx;
    void *routers[2], *pubs[2];
    int nrouters, npubs;
    zloop_t *loop;

    /* store_writer.c: the job queue (main -> writer) */
    pthread_mutex_t queue_lock;
    pthread_cond_t queue_cond;
    job_t *q_head, *q_tail;
    uint64_t q_items; /* items queued or being written */
    bool stopping;
    bool kick; /* replicated: look at the sweeper now (a sweep ended, leadership began) */
    /* store_writer.c: completions (writer -> main) */
    pthread_mutex_t done_lock;
    completion_t *d_head, *d_tail;
    int efd;
    pthread_t writer;
    bool writer_started;
    bool failed; /* main thread: the replicated member failed; the loop returns -1 */
    bool unsynced; /* writer thread only: relaxed commits not yet flushed */

    /* main thread */
    bool leading;    /* replicated: serving as the leader (always true for a single store) */
    uint32_t leader; /* replicated: the leader's member number, 0 = none known */
    uint64_t term;   /* replicated: the raft term of the last role change */
    uint64_t epoch;  /* the epoch the stream carries (replicated: given by the log) */
    uint64_t pub_seq;
    proto_buf_t buf;
    ackbox_t acks[ACKBOXES];
    int nacks;
    uint64_t next_hugz;
    proto_session_t *ses_scratch; /* STORE_SESSIONS_CAP sessions: a SESSIONS answer is built here */

    /* metrics (either thread) */
    _Atomic uint64_t writes_total, write_ops_total, commits_total, commit_errors, expirations_total, purges_total;
    _Atomic uint64_t overload_total, malformed_total, reads_total, catchups_total, snapshots_total, expired_total;
    _Atomic uint64_t pub_msgs_total, pub_drops_total, flushes_total, sweeps_total, relaxed_commits_total;
    _Atomic uint64_t not_leader_total;
    stats_hist_t commit_hist, group_hist; /* writer thread */
    stats_hist_t ack_hist;                /* main thread */
};

/* ---- store_queue.c: the two queues (any thread) ---------------------------------------------- */

/* Make the queues and the eventfd. Returns 0, or -1 (errno) when the eventfd cannot be made. */
int store_queue_init(store_node_t *sn);
/* Free the queues and the eventfd (the writer stopped, every completion taken). */
void store_queue_fini(store_node_t *sn);
/* Room for n more items (STORE_QUEUE_MAX; a lone command larger than the bound still goes when
 * nothing is queued)? If so they are counted as queued until store_queue_release. */
bool store_queue_reserve(store_node_t *sn, uint64_t n);
/* Queue a job (its items reserved) for the writer; ownership passes to the queue. */
void store_queue_push(store_node_t *sn, job_t *j);
/* Take every completion reported (and reset the eventfd). Caller owns the list. Main thread. */
completion_t *store_queue_take(store_node_t *sn);
/* n items left the queue (their jobs were answered). */
void store_queue_release(store_node_t *sn, uint64_t n);
/* Items queued or being written. */
uint64_t store_queue_queued(store_node_t *sn);
/* Report a completion to the main thread (any thread; wakes its loop). Ownership passes. */
void store_queue_complete(store_node_t *sn, completion_t *c);
/* Wake the writer and make it look at the sweeper (a replicated sweep ended, leadership began). */
void store_queue_wake(store_node_t *sn);
/* Wake the writer without a sweep check (a replicated group ended: room in the pipeline). */
void store_queue_signal(store_node_t *sn);

/* ---- store_writer.c: the writer thread (main thread calls) ----------------------------------- */

/* Start the writer thread. Returns 0 or -1. */
int store_writer_start(store_node_t *sn);
/* Let the writer finish what is queued, then stop it (joins). Completions stay to be taken. */
void store_writer_stop(store_node_t *sn);

/* ---- store_repl.c: replication (replicated mode only) ---------------------------------------- */

/* Start the member (after store_writer_init: start-up may already report completions). Returns 0,
 * or -1 with err (CFG_ERR_LEN). */
int store_repl_start(store_node_t *sn, char *err);
/* Stop the member: proposals not yet ended are answered EUNAVAIL. NULL-safe. Main thread. */
void store_repl_stop(store_node_t *sn);
/* Writer thread: propose a group of jobs (their deadlines checked here) as one or more GROUP
 * entries; every job is answered through a completion once its entry applied or failed. */
void store_repl_group(store_node_t *sn, job_t *jobs);
/* Writer thread: true while STORE_REPL_PIPELINE groups are proposed and not ended. The writer then
 * lets jobs queue up (they form the next, bigger group) instead of proposing many small entries:
 * each entry costs a log append and an apply on every member, whatever its size. */
#define STORE_REPL_PIPELINE 4
bool store_repl_pipeline_full(store_node_t *sn);
/* Writer thread: on the leader, propose a SWEEP entry when something is due and none is out.
 * Returns the wall-clock time (us) to look again. */
uint64_t store_repl_sweep(store_node_t *sn, uint64_t now_us);
/* Main thread: the replication stats (role, term, indexes, members' lag, counters). */
void store_repl_stats(store_node_t *sn, stats_list_t *l, bool full);
/* Why the member failed (NULL while it is fine, or not replicated). Any thread. */
const char *store_repl_failed(store_node_t *sn);
/* The Raft member (for repl_status). Borrowed. */
repl_t *store_repl_member(store_node_t *sn);

#endif
