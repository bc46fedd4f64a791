/* store_sweep.c -- the store's sweeper (see store.h, store_sweep): what time ends, as ordinary
 * sequenced changes.
 *
 * The due index orders users and leases by when they next need looking at (a preferred status or
 * a message that ends, a REST session's expiry, a lease session's horizon, a purge; a lease's
 * expiry). One call walks what is due, at most `max` users per write transaction, so writes
 * interleave between chunks: a user is loaded and committed exactly like a write (store_write.c);
 * a lapsed lease ends its sessions user by user through its index (lses), resuming where the last
 * chunk stopped; the changelog is pruned to STORE_LOG_MAX behind the sweep.
 *
 * Writer thread only.
 */
#include "store_int.h"
#include "store_model.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== sweeper ================================================================================== */

typedef struct due_item {
    uint64_t due;
    uint8_t len; /* key bytes after the time */
    unsigned char key[PROTO_USER_ID_MAX];
} due_item_t;

typedef struct sweep {
    store_t *s;
    MDB_txn *txn;
    uint64_t now, seq;
    uint32_t budget; /* users still to look at in this transaction */
    store_changes_t *ch;
    uint64_t nexp, npur, ended;
    bool capped;
} sweep_t;

/* A user came due: let time decide (sessions, preferred status, message, purge). */
static int s_sweep_user(sweep_t *w, const char *uid, size_t len)
{
    store_t *s = w->s;
    store_user_t *u = s->user;
    int rc = store_w_load_user(s, w->txn, uid, len, w->now, u);
    if (rc || !u->found)
        return rc;
    sm_config_t cfg = store_w_model_cfg(s);
    lctx_t lc = {s, w->txn, w->now};
    bool purge = sm_recompute(u, w->now, &cfg, store_w_lease_live, &lc);
    bool was_live = u->old.status != PRESENCE_OFFLINE;
    int kind;
    if ((rc = store_w_commit_user(s, w->txn, u, purge, &w->seq, w->ch, &kind)) != 0)
        return rc;
    if (purge)
        w->npur++;
    else if (was_live && u->rec.status == PRESENCE_OFFLINE)
        w->nexp++;
    return 0;
}

/* A lease lapsed: end the sessions it holds, at most the budget's worth of users now. Returns 1
 * when every session is ended (the lease is gone), 0 when more remain. */
static int s_sweep_lease(sweep_t *w, uint64_t id, int *done)
{
    store_t *s = w->s;
    unsigned char pk[8];
    store_be64(id, pk);
    /* Collect first (the commits below delete lses entries under the cursor). */
    uint32_t cap = w->budget ? w->budget : 1;
    unsigned char(*keys)[8 + SES_KEY_MAX] = xmalloc((size_t)cap * sizeof *keys);
    size_t *klen = xmalloc((size_t)cap * sizeof *klen);
    uint32_t n = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, s->lses, &c);
    MDB_val k = {8, pk}, v;
    *done = 1;
    for (rc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 10 || memcmp(k.mv_data, pk, 8) != 0)
            break;
        if (n == cap) {
            *done = 0;
            break;
        }
        if (k.mv_size <= sizeof keys[0]) {
            memcpy(keys[n], k.mv_data, k.mv_size);
            klen[n++] = k.mv_size;
        }
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const char *uid = (const char *)keys[i] + 8;
        const char *zero = memchr(uid, 0, klen[i] - 8);
        if (!zero || zero == uid)
            continue;
        size_t ulen = (size_t)(zero - uid);
        store_user_t *u = s->user;
        if ((rc = store_w_load_user(s, w->txn, uid, ulen, w->now, u)) != 0)
            break;
        if (!u->found || sm_end_lease_sessions(u, id, 0, NULL, 0, w->now) == 0) {
            /* An index entry its session no longer has (moved or ended): drop it. */
            MDB_val dk = {klen[i], keys[i]};
            if ((rc = mdb_del(w->txn, s->lses, &dk, NULL)) == MDB_NOTFOUND)
                rc = 0;
            continue;
        }
        sm_config_t cfg = store_w_model_cfg(s);
        lctx_t lc = {s, w->txn, w->now};
        bool purge = sm_recompute(u, w->now, &cfg, store_w_lease_live, &lc);
        int kind;
        rc = store_w_commit_user(s, w->txn, u, purge, &w->seq, w->ch, &kind);
        w->ended++;
        if (w->budget)
            w->budget--;
    }
    free(keys);
    free(klen);
    if (rc == 0 && *done) {
        MDB_val lk = {8, pk};
        if ((rc = mdb_del(w->txn, s->lease, &lk, NULL)) == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

/* The due entries up to now (at most max), collected before acting on them. */
static int s_collect_due(sweep_t *w, due_item_t *items, uint32_t max, uint32_t *n)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(w->txn, w->s->due, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    *n = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (*n == max) {
            w->capped = true;
            break;
        }
        if (k.mv_size < 9 || k.mv_size > 8 + PROTO_USER_ID_MAX) {
            /* Not a key we write: drop it rather than stall the sweeper on it forever. */
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
                break;
            continue;
        }
        uint64_t due = store_rd_be64(k.mv_data);
        if (due > w->now)
            break;
        items[*n].due = due;
        items[*n].len = (uint8_t)(k.mv_size - 8);
        memcpy(items[*n].key, (char *)k.mv_data + 8, k.mv_size - 8);
        (*n)++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int s_sweep_item(sweep_t *w, const due_item_t *it)
{
    store_t *s = w->s;
    unsigned char kb[8 + PROTO_USER_ID_MAX];
    store_be64(it->due, kb);
    memcpy(kb + 8, it->key, it->len);
    MDB_val dk = {8u + it->len, kb};
    if (it->len == 9 && it->key[0] == LEASE_DUE_MARK) {
        uint64_t id = store_rd_be64(it->key + 1);
        lease_t l;
        bool found;
        int rc = store_w_lease_get(s, w->txn, id, &l, &found);
        if (rc)
            return rc;
        if (!found)
            return mdb_del(w->txn, s->due, &dk, NULL); /* gone */
        uint64_t end = store_w_lease_end(s, &l);
        if (end > w->now) {
            /* Refreshed since (its newer entry is there), or given its ttl after a restart: look
             * again when it can lapse. */
            if ((rc = mdb_del(w->txn, s->due, &dk, NULL)) != 0)
                return rc;
            return store_w_lease_due(s, w->txn, id, end);
        }
        int done;
        if ((rc = s_sweep_lease(w, id, &done)) != 0)
            return rc;
        if (!done) {
            w->capped = true;
            return 0; /* the entry stays: the next sweep goes on with this lease */
        }
        return mdb_del(w->txn, s->due, &dk, NULL);
    }
    int rc = mdb_del(w->txn, s->due, &dk, NULL);
    if (rc)
        return rc;
    proto_record_t r;
    bool found;
    if ((rc = store_w_get_rec(s, w->txn, (const char *)it->key, it->len, &r, &found)) != 0)
        return rc;
    if (!found || store_due_us(s, &r) != it->due)
        return 0; /* left behind by a later write or a delete: nothing else to do */
    if (w->budget)
        w->budget--;
    return s_sweep_user(w, (const char *)it->key, it->len);
}

/* Prune the oldest changelog entries beyond the bound; the floor says how far back catch-up can
 * still go. Deleting at the head touches sequential pages. */
static int s_prune_log(sweep_t *w, uint32_t max, uint64_t *floor)
{
    store_t *s = w->s;
    MDB_stat st;
    int rc = mdb_stat(w->txn, s->log, &st);
    if (rc || st.ms_entries <= s->cfg.log_max)
        return rc;
    size_t extra = st.ms_entries - s->cfg.log_max;
    if (extra > max) {
        extra = max;
        w->capped = true;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(w->txn, s->log, &cur)) != 0)
        return rc;
    MDB_val k, v;
    for (size_t i = 0; i < extra; i++) {
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) != 0)
            break;
        *floor = store_rd_be64(k.mv_data); /* before the delete: the key's memory is the page's */
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc ? rc : store_meta_put(w->txn, s->meta, "log_floor", *floor);
}

int store_w_sweep_once(store_t *s, uint64_t now, uint32_t max, store_changes_t *ch, uint64_t *expired,
                       uint64_t *purged, int *actions, bool *capped, uint64_t index)
{
    sweep_t w = {.s = s, .now = now, .seq = s->last_seq, .budget = max, .ch = ch};
    size_t mark = ch->n;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w.txn);
    if (rc)
        return rc;
    uint64_t floor = s->log_floor;
    due_item_t *items = xmalloc((size_t)max * sizeof *items);
    uint32_t n = 0;
    rc = s_collect_due(&w, items, max, &n);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (w.budget == 0) {
            w.capped = true;
            break;
        }
        rc = s_sweep_item(&w, &items[i]);
    }
    if (rc == 0)
        rc = s_prune_log(&w, max, &floor);
    if (rc == 0 && w.seq != s->last_seq)
        rc = store_meta_put(w.txn, s->meta, "last_seq", w.seq);
    if (rc == 0 && index)
        rc = store_meta_put(w.txn, s->meta, "raft_applied", index);
    free(items);
    *capped = w.capped;
    if (rc) {
        mdb_txn_abort(w.txn);
        return rc;
    }
    *actions = (int)(ch->n - mark);
    if (n == 0 && !w.capped && floor == s->log_floor && !index) {
        mdb_txn_abort(w.txn); /* nothing changed: no commit, no fsync */
        return 0;
    }
    rc = mdb_txn_commit(w.txn);
    if (rc == 0) {
        if (index)
            s->applied = index;
        s->last_seq = w.seq;
        s->log_floor = floor;
        *expired += w.nexp;
        *purged += w.npur;
    }
    return rc;
}

static uint64_t s_first_due(store_t *s)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    uint64_t due = UINT64_MAX;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return due;
    if (mdb_cursor_open(txn, s->due, &cur) == 0) {
        MDB_val k, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && k.mv_size >= 8)
            due = store_rd_be64(k.mv_data);
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return due;
}

int store_sweep(store_t *s, uint64_t now_us, uint32_t max, store_changes_t *changes, uint64_t *next_due_us,
                uint64_t *expired, uint64_t *purged, char *err)
{
    size_t mark = changes->n;
    if (max == 0)
        max = 1;
    /* Each user looked at makes at most one change (a purge: one DEL). */
    if (s->cfg.sync_mode != STORE_SYNC_FULL && store_w_reserve_or_grow(s, max, err) < 0) {
        *next_due_us = now_us + 1000000u;
        return -1;
    }
    for (;;) {
        int actions = 0;
        bool capped = false;
        changes->n = mark;
        int rc = store_w_sweep_once(s, now_us, max, changes, expired, purged, &actions, &capped, 0);
        if (rc == 0) {
            *next_due_us = capped ? now_us : s_first_due(s);
            return actions;
        }
        changes->n = mark;
        if (rc == MDB_MAP_FULL && store_grow(s, err) == 0)
            continue;
        if (rc != MDB_MAP_FULL)
            snprintf(err, STORE_ERR_LEN, "sweep: %s", mdb_strerror(rc));
        *next_due_us = now_us + 1000000u;
        return -1;
    }
}
