/* store.h -- the durable presence store: LMDB records, expiry index, sequence, changelog.
 *
 * The engine does no I/O besides LMDB and never logs. One thread (the store-node's writer) calls
 * the write functions; any thread may call the read functions concurrently with it (LMDB MVCC,
 * MDB_NOTLS). Map growth needs every read transaction of this process closed: reads therefore
 * hold `resize_lock` for reading while their transaction is open and growth takes it for writing.
 *
 * Every change gets the next global sequence number, which is also the record's version. A
 * record, its index entries and the last sequence number commit in one transaction.
 *
 * Replicated mode (store_config.replicated; docs/REPLICATION.md): the writer is the thread that
 * applies committed log entries, through the *_at functions only. Each applies one entry in one
 * transaction that also records the entry's log index ("raft_applied"), is a function of the state
 * and the entry alone (time from the entry, never the clock; no sequence reservation; commands
 * carrying an id already applied within the dedup window are answered from the dedup table, not
 * applied again), and is never split: a failure is fatal to the member, which restarts and
 * re-applies from its applied index. The epoch comes from the log (store_lead_at). The map is
 * opened at map_size_max and never grows (a snapshot copy may be running).
 *
 * Errors: functions return STORE_OK, STORE_NOTFOUND (reads), or STORE_ERROR with a message in
 * the caller's err buffer (STORE_ERR_LEN bytes).
 */
#ifndef PRESENCE_STORE_H
#define PRESENCE_STORE_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ERR_LEN 256

enum store_result { STORE_OK = 0, STORE_NOTFOUND = 1, STORE_ERROR = -1 };

enum store_sync_mode {
    STORE_SYNC_FULL = 0,   /* fsync data and meta at every commit: nothing acknowledged is ever lost */
    STORE_SYNC_NOMETA = 1, /* MDB_NOMETASYNC: a power loss may undo the last commit(s); a process crash loses nothing */
    STORE_SYNC_NONE = 2,   /* MDB_NOSYNC + periodic store_flush(): power loss may undo the last flush interval;
                              a process crash (kill -9) loses nothing, the OS page cache holds the writes */
};

typedef struct store_config {
    const char *path;        /* directory holding data.mdb (created if missing) */
    int sync_mode;           /* enum store_sync_mode */
    uint64_t map_size;       /* initial map size in bytes (grows on MDB_MAP_FULL) */
    uint64_t map_size_max;   /* never grow beyond this */
    uint64_t retention_us;   /* offline records are purged this long after last_seen */
    uint64_t default_ttl_s;  /* TTL for a TOUCH that creates a record with ttl 0 */
    uint64_t log_max;        /* keep at most this many changelog entries (older ones move the floor) */
    uint32_t max_sessions;   /* MAX_SESSIONS per user (default 32, at most STORE_SESSIONS_MAX = 255) */
    uint64_t now_us;         /* the opening time (tests; 0 = the clock): leases get their ttl after it */
    bool replicated;         /* the state machine of a replicated log (see above) */
    uint64_t dedup_window_us; /* replicated: command ids are remembered this long (entry time) */
} store_config_t;

typedef struct store store_t;

/* A write operation inside a group commit. */
typedef struct store_op {
    uint8_t type;              /* PROTO_PUT, PROTO_TOUCH, PROTO_DEL or PROTO_LEASE */
    uint32_t n;                /* items (DEL: 1, LEASE: 0) */
    const proto_record_t *in;  /* borrowed input items (DEL: in[0].user_id) */
    proto_record_t *out;       /* caller-provided, n entries: the stored records (PUT, TOUCH) */
    uint8_t status;            /* out: PROTO_OK, PROTO_NOTFOUND (DEL; a PUT of a session that does not
                                  exist or is held elsewhere), PROTO_EINTERNAL */
    uint64_t as_of;            /* out: the op's last sequence number (DEL: the tombstone's) */
    /* LEASE */
    uint64_t lease_id;
    uint32_t lease_ttl_ms;
    uint8_t lease_op;          /* enum proto_lease_op */
    char lease_node[PROTO_NODE_ID_MAX + 1];
    uint32_t flags;            /* out: PROTO_REPLY_F_LAPSED */
    /* replicated mode: exactly once per command id */
    bool has_cmd_id;
    uint8_t cmd_id[PROTO_CMD_ID_LEN];
    bool deduped;              /* out: applied before (status, flags and as_of are the first
                                  attempt's; out[] the records as they are now) */
} store_op_t;

/* A growable list of changes produced by writes and sweeps, in sequence order. */
typedef struct store_changes {
    proto_change_t *v;
    size_t n, cap;
} store_changes_t;

void store_changes_init(store_changes_t *c);
void store_changes_reset(store_changes_t *c);
void store_changes_fini(store_changes_t *c);

typedef struct store_info {
    uint64_t epoch;        /* random id of this database, fixed at creation */
    uint64_t last_seq;     /* last committed sequence */
    uint64_t log_floor;    /* catch-up from a sequence below this needs a snapshot */
    uint64_t records;      /* live records */
    uint64_t log_entries;  /* changelog entries kept */
    uint64_t due_entries;  /* expiry-index entries (including stale ones not yet swept) */
    uint64_t map_size;     /* current map size in bytes */
    uint64_t map_used;     /* bytes of the map in use (last page number x page size) */
    uint64_t map_grows;    /* times the map grew since open */
    uint64_t readers_cleared; /* stale reader slots cleared since open */
    uint64_t dedup_entries;   /* replicated: command ids remembered */
} store_info_t;

/* Open (creating if needed) the store at cfg->path. Returns 0 and *out, or -1 with err. */
int store_open(const store_config_t *cfg, store_t **out, char *err);
/* Close and free; sets *s to NULL. Accepts NULL. No other thread may use the store. */
void store_close(store_t **s);

/* ---- writer-thread API ---------------------------------------------------------------------- */

/* Apply `nops` operations in one transaction and commit it (group commit). With `relaxed` the
 * commit is not fsynced (MDB_NOSYNC for this transaction only); the caller flushes later with
 * store_flush(). A later synced commit also makes it durable (one fsync covers the file). Each op gets its own
 * status; changes are appended to `changes` in sequence order (only once the commit succeeded).
 * MDB_MAP_FULL grows the map and re-runs the whole group; MDB_TXN_FULL splits it. Returns 0 when
 * the commit succeeded (individual ops may still be NOTFOUND), -1 on a storage error (no op was
 * applied, every op's status is PROTO_EINTERNAL). */
int store_apply(store_t *s, store_op_t *ops, size_t nops, uint64_t now_us, bool relaxed, store_changes_t *changes,
                char *err);

/* Let time act: every user whose due time passed is recomputed (store_model.h: REST sessions past
 * their ttl end, a preferred status and a message past theirs are cleared, lease-held sessions
 * get their horizon moved on; a record that falls offline this way has its message cleared and
 * updated_at set to the deadline), offline records whose last_seen + retention <= now are purged
 * (a DEL change), lapsed leases end the sessions they hold; expiry-index entries left behind by
 * later writes are dropped as they come due; the oldest changelog entries beyond log_max are
 * pruned. At most `max` users per call, one transaction. Returns the number of changes appended
 * (SET, TOUCH or DEL, each a new sequence), or -1. *next_due_us is set to the earliest remaining
 * due time (UINT64_MAX if none; `now_us` when the call stopped at `max`). *expired counts users
 * that went offline, *purged records purged. */
int store_sweep(store_t *s, uint64_t now_us, uint32_t max, store_changes_t *changes, uint64_t *next_due_us,
                uint64_t *expired, uint64_t *purged, char *err);

/* SYNC_MODE=none: force buffered commits to disk. Returns 0 or -1. */
int store_flush(store_t *s, char *err);

/* Clear stale reader slots (dead processes). Returns the number cleared, or -1. */
int store_reader_check(store_t *s);

/* ---- read API (any thread) ------------------------------------------------------------------ */

typedef struct store_read store_read_t;

/* Begin a read snapshot. Returns NULL on error (err set). Keep it short: it pins old pages and
 * blocks map growth. */
store_read_t *store_read_begin(store_t *s, char *err);
void store_read_end(store_read_t **r);
/* The last sequence committed as of this snapshot, and the changelog floor. */
uint64_t store_read_seq(const store_read_t *r);
uint64_t store_read_floor(const store_read_t *r);
/* Look up one record: STORE_OK (copied into *out), STORE_NOTFOUND, or STORE_ERROR. */
int store_read_get(store_read_t *r, const char *uid, size_t len, proto_record_t *out);
/* The raw encoded record (borrowed until store_read_end): STORE_OK / STORE_NOTFOUND / STORE_ERROR. */
int store_read_get_raw(store_read_t *r, const char *uid, size_t len, const void **data, size_t *dlen);

/* Catch-up: walk the changelog after `after_seq` and return, in sequence order, each change that
 * is still the latest for its key -- a SET with the whole current record (its version is that
 * entry's sequence) or a DEL -- at most max_items changes (and a bounded number of entries
 * scanned). *done tells whether the walk reached the end; *through_seq is the sequence up to
 * which the client is then complete: the snapshot's last_seq when done, else the last entry
 * walked. The caller checks after_seq >= store_read_floor() first. */
int store_read_changes(store_read_t *r, uint64_t after_seq, uint32_t max_items, store_changes_t *out,
                       uint64_t *through_seq, bool *done);

/* Snapshot: live records in key order after `after_key` (len 0 = from the start), at most
 * max_items, appended as SET changes. next_key (129 bytes) and next_len say where to continue; *done
 * when the scan reached the end. */
int store_read_records(store_read_t *r, const char *after_key, size_t after_len, uint32_t max_items,
                       store_changes_t *out, char *next_key, size_t *next_len, bool *done);

/* A catch-up request (PROTOCOL.md, CATCHUP) answered from one read snapshot. */
#define STORE_CATCHUP_MAX_ITEMS 2000
typedef struct store_catchup {
    uint8_t mode;     /* PROTO_CATCHUP_INCREMENTAL / _SNAPSHOT / _SNAPSHOT_CONT */
    uint64_t through; /* the client is complete up to this sequence */
    bool done;        /* nothing more to ask for */
    bool snapshot;    /* a new snapshot was started (counted by the store-node) */
    char cursor[PROTO_USER_ID_MAX + 1];
    size_t clen;      /* snapshot cursor: continue after this key */
} store_catchup_t;

/* Decide how to answer catch-up request m (epoch, seq, first_seq, flags, max_items, key) against
 * read snapshot r of a store whose epoch is `epoch`, and read the changes into out: incremental
 * from the changelog when it reaches back far enough, else a snapshot (a flush signal with
 * PROTO_CATCHUP_F_NO_DATA, or live records in key order, in chunks, continued by SNAP_CONT).
 * Returns STORE_OK or STORE_ERROR. */
int store_catchup(store_read_t *r, uint64_t epoch, const proto_msg_t *m, store_changes_t *out, store_catchup_t *res);

void store_get_info(store_t *s, store_info_t *info);
uint64_t store_epoch(const store_t *s);

/* The due time of a record in the expiry index: its due_us (when the store must look at the user
 * next: an expiry, a message's, a session's, the purge); for a record written before sessions
 * existed, expires_at while it shows a live status, last_seen + retention once offline. */
uint64_t store_due_us(const store_t *s, const proto_record_t *r);

/* The live sessions of a user as of read snapshot r at `now` (a REST session past its expiry or
 * one of a lapsed lease is not live; a lease-held session's expires_at is its lease's). At most
 * max into out. Returns STORE_OK (n set, 0 for none), or STORE_ERROR. */
int store_read_sessions(store_read_t *r, const char *uid, size_t len, uint64_t now, proto_session_t *out, uint32_t max,
                        uint32_t *n);

const char *store_sync_mode_name(int mode);

/* ---- replicated mode (the thread that applies the log; any thread before it starts) ---------- */

/* The log index the state holds everything through (0: an empty state). */
uint64_t store_applied_index(store_t *s);
/* The last sequence the state holds (the applying thread's view). */
uint64_t store_last_seq(store_t *s);

/* Apply a GROUP entry committed at `index`, with the leader's time now_us, in one transaction that
 * also stores `index` and the command ids (pruned deterministically: ids older than the window by
 * entry time). Ops whose command id is remembered are not applied (deduped: the first attempt's
 * status and as_of, the current records; NOTFOUND when one no longer exists). Changes are appended
 * in sequence order. Returns 0, or -1 with err: the entry was not applied, and the member must
 * stop (never skip it). */
int store_apply_at(store_t *s, uint64_t index, store_op_t *ops, size_t nops, uint64_t now_us, store_changes_t *changes,
                   char *err);
/* Apply a SWEEP entry: store_sweep's work at the entry's now_us and max, plus the index. Returns
 * the number of changes appended, or -1 (fatal, as above). */
int store_sweep_at(store_t *s, uint64_t index, uint64_t now_us, uint32_t max, store_changes_t *changes,
                   uint64_t *expired, uint64_t *purged, char *err);
/* Apply a LEAD entry (a leader's first entry of its term): the epoch becomes `epoch` unless the
 * state has one (the first LEAD entry's wins, identically on every member), and leases get their
 * ttl after now_us before they can lapse (gateways could not refresh them during the failover).
 * Returns 0 or -1 (fatal). */
int store_lead_at(store_t *s, uint64_t index, uint64_t epoch, uint64_t now_us, char *err);
/* Record that the entry at `index` changed nothing here (an entry this state machine ignores).
 * Returns 0 or -1 (fatal). */
int store_skip_at(store_t *s, uint64_t index, char *err);
/* The earliest due time in the expiry index (UINT64_MAX when none): the leader's sweeper proposes
 * a SWEEP entry once it has passed. Any thread. */
uint64_t store_next_due(store_t *s);
/* Write a compacting copy of the whole state to the new file `path` (mdb_env_copyfd2) and read
 * its applied index back from the copy. Runs concurrently with the *_at functions (a read
 * transaction). Returns 0 or -1 with err. */
int store_copy(store_t *s, const char *path, uint64_t *applied, char *err);
/* Replace the whole state by the copy in file `path` (made by store_copy), whose applied index
 * must be `applied`: checked, renamed into place, reopened; readers wait meanwhile. Returns 0, or
 * -1 with err and the old state intact; on a failure to reopen the process exits (fail-stop). */
int store_replace(store_t *s, const char *path, uint64_t applied, char *err);

#endif
