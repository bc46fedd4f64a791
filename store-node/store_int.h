/* store_int.h -- what the store's files share (store.c: the environment, reads, catch-up;
 * store_write.c: group commits, users and sessions, leases, the sweeper). Not a public API:
 * only store-node/store*.c include it.
 */
#ifndef PRESENCE_STORE_INT_H
#define PRESENCE_STORE_INT_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#define STORE_READ_POOL 8
#define SEQ_RESERVE_STEP (1u << 20)

struct store_read {
    store_t *s;
    MDB_txn *txn;
    uint64_t seq, floor;
    struct store_read *next;
};

struct store {
    MDB_env *env;
    MDB_dbi rec, due, log, meta, ses, lease, lses;
    MDB_dbi dedup, dedt; /* replicated: cmd_id -> first answer; BE64(at_us) . cmd_id -> "" (pruning) */
    store_config_t cfg;
    char path[512];
    _Atomic uint64_t epoch; /* replicated: set by the applying thread (store_lead_at), read anywhere */
    uint64_t applied;       /* replicated: the log index applied (the applying thread) */
    uint64_t last_seq; /* writer thread only */
    uint64_t seq_reserved; /* writer thread only: durable bound for sequences of unsynced commits */
    uint64_t log_floor;
    uint64_t map_size;
    uint64_t map_grows, readers_cleared;
    uint64_t opened_us; /* leases get their ttl after the store (re)started before they can lapse */
    pthread_rwlock_t resize_lock;
    pthread_mutex_t pool_lock;
    struct store_read *pool;
    int pool_n;
    proto_buf_t enc; /* writer thread scratch */
    struct store_user *user, *user2; /* writer thread scratch (store_model.h) */
};

void store_be64(uint64_t v, unsigned char *out);
uint64_t store_rd_be64(const void *p);
proto_change_t *store_changes_push(store_changes_t *c);
int store_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out);
int store_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t val);
/* Double the map (MDB_MAP_FULL). Writer thread; no read transaction of ours may be open. */
int store_grow(store_t *s, char *err);

/* ---- store_write.c and store_sweep.c, for the replicated mode (store_replica.c) -------------- */

/* One group in one transaction (0 = committed, else an LMDB code). index > 0: replicated (command
 * ids honoured, the index recorded in the same transaction). */
int store_w_apply_once(store_t *s, store_op_t *ops, size_t nops, uint64_t now, store_changes_t *ch, uint64_t index);
/* One sweep transaction; index > 0: it always commits, recording the index. */
int store_w_sweep_once(store_t *s, uint64_t now, uint32_t max, store_changes_t *ch, uint64_t *expired,
                       uint64_t *purged, int *actions, bool *capped, uint64_t index);

/* ---- store_replica.c, for store_w_apply_once: the dedup table --------------------------------- */

/* op's command id was applied before: fill op from the table (deduped) and return 1; 0 when it
 * was not; -(LMDB code) on an error. */
int store_r_dedup_find(store_t *s, MDB_txn *txn, store_op_t *op);
/* Remember op's command id and its answer at time now. 0 or an LMDB code. */
int store_r_dedup_put(store_t *s, MDB_txn *txn, const store_op_t *op, uint64_t now);
/* Forget ids older than the window at `now` (bounded per call). 0 or an LMDB code. */
int store_r_dedup_prune(store_t *s, MDB_txn *txn, uint64_t now);

/* ---- store_write.c, for the sweeper (store_sweep.c); writer thread only ----------------------- */

#define LEASE_DUE_MARK 0x01 /* due-key byte 8 of a lease entry: never a user-id byte */
#define SES_KEY_MAX (PROTO_USER_ID_MAX + 1 + PROTO_SESSION_ID_MAX)

typedef struct lease {
    uint64_t expires_us; /* 0: ended by its gateway */
    uint32_t ttl_ms;
    uint8_t node_len;
    char node[PROTO_NODE_ID_MAX + 1];
} lease_t;

struct store_user;
/* The record of uid (*found false: none). 0 or an LMDB error. */
int store_w_get_rec(store_t *s, MDB_txn *txn, const char *uid, size_t len, proto_record_t *out, bool *found);
/* Load user uid whole (record and sessions) into u for the model. 0 or an LMDB error. */
int store_w_load_user(store_t *s, MDB_txn *txn, const char *uid, size_t len, uint64_t now, struct store_user *u);
/* Commit what the model decided for u: sessions, record, due entry, changelog and stream change
 * (or the purge). *kind_out: the change kind (SM_CH_*). 0 or an LMDB error. */
int store_w_commit_user(store_t *s, MDB_txn *txn, struct store_user *u, bool purge, uint64_t *seq,
                        store_changes_t *ch, int *kind_out);
/* The model's configuration from the store's. */
struct sm_config store_w_model_cfg(const store_t *s);
/* Lease id: read (found false: none), its end (expiry, or when it was ended), set its due entry. */
int store_w_lease_get(store_t *s, MDB_txn *txn, uint64_t id, lease_t *l, bool *found);
uint64_t store_w_lease_end(const store_t *s, const lease_t *l);
/* The model's "is this lease live" question (sm_recompute), asked in one transaction at one time. */
typedef struct lctx {
    store_t *s;
    MDB_txn *txn;
    uint64_t now;
} lctx_t;
bool store_w_lease_live(uint64_t id, void *ctx); /* ctx: an lctx_t */
int store_w_lease_due(store_t *s, MDB_txn *txn, uint64_t id, uint64_t due);
/* Reserve sequence numbers for count changes, growing the map when it is full. 0 or -1 (err). */
int store_w_reserve_or_grow(store_t *s, uint64_t count, char *err);

#endif
