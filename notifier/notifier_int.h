/* notifier_int.h -- the notifier process's state, shared by its files (not an API: nothing
 * outside notifier/ includes it).
 *
 *   notifier.c          the process: configuration, sockets, the loop's hooks, STATS, main
 *   notifier_stream.c   the change stream -> events: planning in both views, snapshots
 *   notifier_state.c    the turn's LMDB transaction: commit, prune, the stream position, load
 *   notifier_deliver.c  batches, POSTs and their answers
 *
 * Everything runs on the one thread of the loop; nothing here is locked.
 */
#ifndef PRESENCE_NOTIFIER_INT_H
#define PRESENCE_NOTIFIER_INT_H

#include "dispatch.h"
#include "notify.h"
#include "notify_cfg.h"
#include "notify_db.h"
#include "notify_http.h"
#include "stats.h"
#include "sync_client.h"
#include "zloop.h"

#include <stdbool.h>
#include <stdint.h>

#define PRUNE_MAX 20000          /* log entries deleted per turn */
#define SCAN_MAX_EXTRA 10000     /* entries a batch build may look at beyond its batch size */
#define ASKS_MAX 256             /* PING/STATS questions answered per turn (more: dropped, counted) */
#define WAIT_MAX_MS 500
#define SNAP_DELETED UINT64_MAX  /* staging key of a user the snapshot no longer has */

enum { STAGE_SET = 1, STAGE_DEL = 2 };

typedef struct target_rt {
    const notify_target_cfg_t *cfg;
    unsigned char key[32];
    notify_target_t st;
    notify_batch_t batch;   /* the batch out (its body is libcurl's until the answer) */
    bool stale;             /* the log or the state changed: try to build a batch */
    stats_hist_t req_hist;  /* POST durations */
    stats_hist_t lag_hist;  /* logged -> acknowledged, per batch (its oldest event) */
    uint64_t held_until_ms; /* wall: a held entry it wants stops it until then (0 = none) */
    uint64_t lag_from_ms;   /* wall: appended_ms of the oldest event not yet delivered (0 = none) */
} target_rt_t;

/* A PING or STATS to answer after the turn's commit. */
typedef struct ask {
    uint8_t ident[DISPATCH_IDENT_MAX];
    size_t ident_len;
    uint64_t rid;
    uint8_t type;
} ask_t;

typedef struct notifier {
    notify_cfg_t cfg;
    notify_policy_t policy;
    notify_db_t *db;
    notify_meta_t meta;
    bool meta_dirty;
    uint64_t floor;     /* first seq in the log (meta.next_seq when empty) */
    uint64_t oldest_ms; /* appended_ms of the first entry (0 when empty) */
    void *zctx, *router;
    zloop_t *loop;
    sync_client_t *sync;
    notify_http_t *http;
    ask_t asks[ASKS_MAX];
    uint32_t nasks;
    target_rt_t targets[NOTIFY_TARGETS_MAX];
    uint32_t ntargets;
    struct {
        bool active, keyscan;
        char last[PROTO_USER_ID_MAX + 1];
        size_t last_len;
        uint64_t staged, deleted;
    } snap;
    int fatal;          /* an LMDB error: stop and exit 1 (the state on disk is the last commit) */
    bool live, ready;
    uint64_t next_stats_log_ms;
    gw_buf_t json, entry;
    proto_buf_t buf, rec;
    /* counters */
    uint64_t changes_total, events_total[NOTIFY_TYPE_COUNT], debounced_total, pruned_total, bound_pruned_total;
    uint64_t bad_entries, commits, router_malformed, asks_dropped, resumes;
} notifier_t;

/* ---- notifier_state.c: the turn's transaction -------------------------------------------------- */

/* An LMDB error: log it once, stop the loop (exit 1; the state on disk is the last commit). */
void notifier_state_fatal(notifier_t *N, int rc, const char *what);
/* The turn's write transaction, begun on first use. Returns false after a fatal error. */
bool notifier_state_txn(notifier_t *N);
/* Every target should look at the log again (it grew, or its floor moved). */
void notifier_state_all_stale(notifier_t *N);
/* Write the turn: dirty cursors, the log's pruning, the stream position, meta; commit (fsync). */
void notifier_state_commit(notifier_t *N, uint64_t now_ms);
/* At startup: the stored meta and the targets' cursors (a new target starts at the log's head),
 * forget cursors of targets no longer configured, drop a half-staged snapshot. Returns 0, or -1
 * with err (CFG_ERR_LEN). */
int notifier_state_load(notifier_t *N, char *err);

/* ---- notifier_stream.c: the sync client's handler (sync_handler_t) ------------------------------ */

void notifier_stream_change(void *ctx, const proto_change_t *c);
void notifier_stream_reset(void *ctx);
void notifier_stream_state(void *ctx, int state);

/* ---- notifier_deliver.c: delivery --------------------------------------------------------------- */

/* Start a batch for every target that can take one (after the turn's commit). */
void notifier_deliver_schedule(notifier_t *N);
/* Drive libcurl's transfers and take their answers. Returns the number of answers taken. */
int notifier_deliver_collect(notifier_t *N);
/* Age of the oldest event target t has not acknowledged, in microseconds (0 when caught up). */
uint64_t notifier_deliver_lag_us(const notifier_t *N, const target_rt_t *t);
/* Did a target that wants offline events take log entry seq (acknowledged, or in flight)? */
bool notifier_deliver_taken(const notifier_t *N, uint64_t seq);

#endif
