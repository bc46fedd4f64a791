/* store_replica.c -- the store as the state machine of a replicated log (store.h, "Replicated
 * mode"; docs/REPLICATION.md): applying committed entries with their index, command ids applied
 * once, the epoch and the lease grace from the log.
 *
 * Every function here is a function of the state and the entry alone: time comes from the entry
 * (the leader's clock when it formed it), limits from the entry or from configuration every
 * member shares, never from this machine's clock. An entry that cannot be applied is fatal to the
 * member (it stops and replays from its applied index): nothing is retried differently here, and
 * no group is split.
 *
 * Command ids: `dedup` maps an id to its first answer (status, flags, as_of, time) and `dedt`
 * orders the same ids by time, so each transaction forgets, first, a bounded number of ids older
 * than the window (by the entry's time: identically on every member).
 *
 * The thread that applies the log only (the raft thread); store_next_due any thread.
 */
#include "store_int.h"

#include <stdio.h>
#include <string.h>

#define DEDUP_VAL_LEN 21    /* status . BE32(flags) . BE64(as_of) . BE64(at_us) */
#define DEDUP_PRUNE_MAX 256 /* ids forgotten per transaction at most */

/* ==== command ids ================================================================================= */

int store_r_dedup_find(store_t *s, MDB_txn *txn, store_op_t *op)
{
    MDB_val k = {PROTO_CMD_ID_LEN, op->cmd_id}, v;
    int rc = mdb_get(txn, s->dedup, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return -rc;
    if (v.mv_size != DEDUP_VAL_LEN)
        return -MDB_CORRUPTED;
    const unsigned char *p = v.mv_data;
    op->deduped = true;
    op->status = p[0];
    op->flags = (uint32_t)(store_rd_be64(p + 1) >> 32);
    op->as_of = store_rd_be64(p + 5);
    if (op->type != PROTO_PUT && op->type != PROTO_TOUCH)
        return 1;
    /* The records as they are now: what the first attempt stored, or something newer. */
    for (uint32_t j = 0; j < op->n; j++) {
        bool found;
        rc = store_w_get_rec(s, txn, op->in[j].user_id, op->in[j].uid_len, &op->out[j], &found);
        if (rc)
            return -rc;
        if (!found && op->status == PROTO_OK)
            op->status = PROTO_NOTFOUND; /* written, then deleted before this retry */
    }
    return 1;
}

int store_r_dedup_put(store_t *s, MDB_txn *txn, const store_op_t *op, uint64_t now)
{
    unsigned char v[DEDUP_VAL_LEN], tk[8 + PROTO_CMD_ID_LEN], b[8];
    v[0] = op->status;
    store_be64((uint64_t)op->flags << 32, b);
    memcpy(v + 1, b, 4);
    store_be64(op->as_of, v + 5);
    store_be64(now, v + 13);
    MDB_val k = {PROTO_CMD_ID_LEN, (void *)op->cmd_id}, val = {sizeof v, v};
    int rc = mdb_put(txn, s->dedup, &k, &val, 0);
    if (rc)
        return rc;
    store_be64(now, tk);
    memcpy(tk + 8, op->cmd_id, PROTO_CMD_ID_LEN);
    MDB_val t = {sizeof tk, tk}, empty = {0, NULL};
    return mdb_put(txn, s->dedt, &t, &empty, 0);
}

int store_r_dedup_prune(store_t *s, MDB_txn *txn, uint64_t now)
{
    if (now <= s->cfg.dedup_window_us)
        return 0;
    uint64_t before = now - s->cfg.dedup_window_us;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dedt, &c);
    if (rc)
        return rc;
    MDB_val k, v;
    for (int i = 0; i < DEDUP_PRUNE_MAX; i++) {
        if ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) != 0)
            break;
        if (k.mv_size != 8 + PROTO_CMD_ID_LEN || store_rd_be64(k.mv_data) >= before)
            break;
        MDB_val id = {PROTO_CMD_ID_LEN, (char *)k.mv_data + 8};
        if ((rc = mdb_del(txn, s->dedup, &id, NULL)) != 0 && rc != MDB_NOTFOUND)
            break;
        if ((rc = mdb_cursor_del(c, 0)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ==== applying entries ============================================================================= */

/* The entry at `index` could not be applied: name it. */
static int s_fatal(const char *what, uint64_t index, int rc, char *err)
{
    snprintf(err, STORE_ERR_LEN, "%s of log entry %llu: %s%s", what, (unsigned long long)index, mdb_strerror(rc),
             rc == MDB_MAP_FULL ? " (raise STORE_MAP_MAX_MB and restart)" : "");
    return -1;
}

uint64_t store_applied_index(store_t *s)
{
    return s->applied;
}

uint64_t store_last_seq(store_t *s)
{
    return s->last_seq;
}

int store_apply_at(store_t *s, uint64_t index, store_op_t *ops, size_t nops, uint64_t now_us, store_changes_t *changes,
                   char *err)
{
    size_t mark = changes->n;
    int rc = store_w_apply_once(s, ops, nops, now_us, changes, index);
    if (rc == 0)
        return 0;
    changes->n = mark;
    for (size_t i = 0; i < nops; i++)
        ops[i].status = PROTO_EINTERNAL;
    return s_fatal("apply", index, rc, err);
}

int store_sweep_at(store_t *s, uint64_t index, uint64_t now_us, uint32_t max, store_changes_t *changes,
                   uint64_t *expired, uint64_t *purged, char *err)
{
    size_t mark = changes->n;
    int actions = 0;
    bool capped = false;
    int rc = store_w_sweep_once(s, now_us, max ? max : 1, changes, expired, purged, &actions, &capped, index);
    if (rc == 0)
        return actions;
    changes->n = mark;
    return s_fatal("sweep", index, rc, err);
}

/* A transaction that writes a few meta values and the index. */
static int s_meta_at(store_t *s, uint64_t index, const char *const *names, const uint64_t *vals, int n)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < n && rc == 0; i++)
        rc = store_meta_put(txn, s->meta, names[i], vals[i]);
    if (rc == 0)
        rc = store_meta_put(txn, s->meta, "raft_applied", index);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (rc == 0)
        s->applied = index;
    return rc;
}

int store_lead_at(store_t *s, uint64_t index, uint64_t epoch, uint64_t now_us, char *err)
{
    bool set = atomic_load(&s->epoch) == 0 && epoch != 0;
    const char *names[2] = {"lease_from", "epoch"};
    uint64_t vals[2] = {now_us, epoch};
    int rc = s_meta_at(s, index, names, vals, set ? 2 : 1);
    if (rc)
        return s_fatal("lead", index, rc, err);
    s->opened_us = now_us; /* leases get their ttl from the failover on (store_w_lease_end) */
    if (set)
        atomic_store(&s->epoch, epoch);
    return 0;
}

int store_skip_at(store_t *s, uint64_t index, char *err)
{
    int rc = s_meta_at(s, index, NULL, NULL, 0);
    return rc ? s_fatal("skip", index, rc, err) : 0;
}

uint64_t store_next_due(store_t *s)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(s, err); /* holds resize_lock: no store_replace under it */
    uint64_t due = UINT64_MAX;
    if (!r)
        return due;
    MDB_cursor *cur;
    if (mdb_cursor_open(r->txn, s->due, &cur) == 0) {
        MDB_val k, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && k.mv_size >= 8)
            due = store_rd_be64(k.mv_data);
        mdb_cursor_close(cur);
    }
    store_read_end(&r);
    return due;
}
