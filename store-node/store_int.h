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

#endif
