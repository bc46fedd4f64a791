/* notify_db.c -- the notifier's LMDB environment (see notify_db.h for the layout).
 *
 * One environment, five named databases, default durability (fsync at every commit: a cursor or
 * an event the notifier committed survives a crash or a power loss). MDB_NOTLS because the
 * batch builder's read transaction and the loop's write transaction are different objects used
 * by one thread (never at the same time). The map starts small and doubles on MDB_MAP_FULL up to
 * its maximum (the caller aborts, grows and redoes its turn: mdb_env_set_mapsize needs no
 * transaction active). Single owner thread; no logging (the caller reports errors once).
 */
#include "notify_db.h"
#include "cfg.h"
#include "util.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct notify_db {
    MDB_env *env;
    MDB_txn *txn;  /* the write transaction, when active */
    MDB_txn *rtxn; /* a reset read transaction kept for scans */
    MDB_dbi users, log, targets, snap, meta;
    uint64_t map_bytes, map_max;
};

int notify_db_open(notify_db_t **out, const char *dir, uint64_t map_mb, uint64_t map_max_mb, char *err)
{
    *out = NULL;
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, CFG_ERR_LEN, "DATA_DIR: cannot create %.200s: %s", dir, strerror(errno));
        return -1;
    }
    notify_db_t *db = xcalloc(1, sizeof *db);
    db->map_bytes = map_mb << 20;
    db->map_max = map_max_mb << 20;
    int rc;
    MDB_txn *txn = NULL;
    if ((rc = mdb_env_create(&db->env)) || (rc = mdb_env_set_maxdbs(db->env, 8)) ||
        (rc = mdb_env_set_mapsize(db->env, db->map_bytes)) || (rc = mdb_env_open(db->env, dir, MDB_NOTLS, 0640))) {
        snprintf(err, CFG_ERR_LEN, "LMDB %.200s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* A larger map than ours (an earlier run grew it) is adopted as it is. */
    MDB_envinfo info;
    if (mdb_env_info(db->env, &info) == 0 && info.me_mapsize > db->map_bytes)
        db->map_bytes = info.me_mapsize;
    int dead = 0;
    mdb_reader_check(db->env, &dead);
    if ((rc = mdb_txn_begin(db->env, NULL, 0, &txn)) || (rc = mdb_dbi_open(txn, "users", MDB_CREATE, &db->users)) ||
        (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &db->log)) ||
        (rc = mdb_dbi_open(txn, "targets", MDB_CREATE, &db->targets)) ||
        (rc = mdb_dbi_open(txn, "snap", MDB_CREATE, &db->snap)) ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &db->meta))) {
        snprintf(err, CFG_ERR_LEN, "LMDB %.200s: %s", dir, mdb_strerror(rc));
        if (txn)
            mdb_txn_abort(txn);
        goto fail;
    }
    if ((rc = mdb_txn_commit(txn))) {
        snprintf(err, CFG_ERR_LEN, "LMDB %.200s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    *out = db;
    return 0;
fail:
    notify_db_close(&db);
    return -1;
}

void notify_db_close(notify_db_t **dbp)
{
    notify_db_t *db = *dbp;
    if (!db)
        return;
    if (db->txn)
        mdb_txn_abort(db->txn);
    if (db->rtxn)
        mdb_txn_abort(db->rtxn);
    if (db->env)
        mdb_env_close(db->env);
    free(db);
    *dbp = NULL;
}

/* ==== transactions =========================================================================== */

int notify_db_begin(notify_db_t *db)
{
    if (db->txn)
        return 0;
    return mdb_txn_begin(db->env, NULL, 0, &db->txn);
}

int notify_db_commit(notify_db_t *db)
{
    if (!db->txn)
        return 0;
    int rc = mdb_txn_commit(db->txn);
    db->txn = NULL; /* gone even when the commit failed */
    return rc;
}

void notify_db_abort(notify_db_t *db)
{
    if (db->txn)
        mdb_txn_abort(db->txn);
    db->txn = NULL;
}

bool notify_db_in_txn(const notify_db_t *db)
{
    return db->txn != NULL;
}

int notify_db_grow(notify_db_t *db)
{
    if (db->txn || db->map_bytes >= db->map_max)
        return -1;
    /* The kept read transaction must not be live either (it is only ever reset between scans). */
    uint64_t next = MIN(db->map_bytes * 2, db->map_max);
    if (mdb_env_set_mapsize(db->env, next) != 0)
        return -1;
    db->map_bytes = next;
    return 0;
}

int notify_db_reserve(notify_db_t *db)
{
    MDB_envinfo info;
    MDB_stat st;
    if (db->txn || mdb_env_info(db->env, &info) != 0 || mdb_env_stat(db->env, &st) != 0)
        return 0;
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    while (used * 2 > db->map_bytes) {
        if (notify_db_grow(db) < 0)
            return -1;
    }
    return 0;
}

uint64_t notify_db_map_bytes(const notify_db_t *db)
{
    return db->map_bytes;
}

/* ==== meta =================================================================================== */

int notify_db_meta_get(notify_db_t *db, notify_meta_t *m)
{
    memset(m, 0, sizeof *m);
    m->next_seq = 1;
    MDB_val k = {1, "m"}, v;
    int rc = mdb_get(db->txn, db->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 25 && v.mv_size != 41)
        return MDB_CORRUPTED; /* 25: written before the stream position was kept */
    const unsigned char *p = v.mv_data;
    m->next_seq = notify_be64_get(p);
    m->log_bytes = notify_be64_get(p + 8);
    m->log_entries = notify_be64_get(p + 16);
    m->baseline = p[24] != 0;
    if (v.mv_size == 41) {
        m->pos_epoch = notify_be64_get(p + 25);
        m->pos_seq = notify_be64_get(p + 33);
    }
    if (m->next_seq == 0)
        m->next_seq = 1;
    return 0;
}

int notify_db_meta_put(notify_db_t *db, const notify_meta_t *m)
{
    unsigned char b[41];
    notify_be64_put(b, m->next_seq);
    notify_be64_put(b + 8, m->log_bytes);
    notify_be64_put(b + 16, m->log_entries);
    b[24] = m->baseline ? 1 : 0;
    notify_be64_put(b + 25, m->pos_epoch);
    notify_be64_put(b + 33, m->pos_seq);
    MDB_val k = {1, "m"}, v = {sizeof b, b};
    return mdb_put(db->txn, db->meta, &k, &v, 0);
}

/* ==== users ================================================================================== */

int notify_db_user_get(notify_db_t *db, const char *uid, size_t len, notify_views_t *u, bool *found)
{
    MDB_val k = {len, (void *)uid}, v;
    *found = false;
    int rc = mdb_get(db->txn, db->users, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (notify_views_decode(v.mv_data, v.mv_size, u) < 0)
        return 0; /* unreadable: as if unknown (it is rewritten by the next change) */
    *found = true;
    return 0;
}

int notify_db_user_put(notify_db_t *db, const char *uid, size_t len, const notify_views_t *u)
{
    unsigned char b[NOTIFY_VIEWS_ENC_MAX];
    size_t n = notify_views_encode(u, b);
    MDB_val k = {len, (void *)uid}, v = {n, b};
    return mdb_put(db->txn, db->users, &k, &v, 0);
}

int notify_db_user_del(notify_db_t *db, const char *uid, size_t len)
{
    MDB_val k = {len, (void *)uid};
    int rc = mdb_del(db->txn, db->users, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* LMDB's default order: memcmp over the shorter length, then the shorter key first. */
static int s_keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, MIN(al, bl));
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

int notify_db_user_range(notify_db_t *db, const char *after, size_t alen, const char *before, size_t blen,
                         notify_db_user_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(db->txn, db->users, &cur);
    if (rc)
        return rc;
    MDB_val k = {alen, (void *)after}, v;
    rc = alen ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc == 0 && alen && s_keycmp(k.mv_data, k.mv_size, after, alen) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    while (rc == 0) {
        if (before && s_keycmp(k.mv_data, k.mv_size, before, blen) >= 0)
            break;
        notify_views_t u;
        bool ok = notify_views_decode(v.mv_data, v.mv_size, &u) == 0;
        int act = fn(ctx, k.mv_data, k.mv_size, ok ? &u : NULL);
        if (act == 1) {
            /* MDB_NEXT after a delete yields the item that followed the deleted one. */
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
                break;
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (act != 0) {
            rc = act;
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ==== log ==================================================================================== */

int notify_db_log_append(notify_db_t *db, uint64_t seq, const void *data, size_t len)
{
    unsigned char kb[8];
    notify_be64_put(kb, seq);
    MDB_val k = {8, kb}, v = {len, (void *)data};
    return mdb_put(db->txn, db->log, &k, &v, MDB_APPEND);
}

int notify_db_log_del(notify_db_t *db, uint64_t seq, size_t *len)
{
    unsigned char kb[8];
    notify_be64_put(kb, seq);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(db->txn, db->log, &k, &v);
    if (rc)
        return rc;
    *len = v.mv_size;
    return mdb_del(db->txn, db->log, &k, NULL);
}

int notify_db_log_first(notify_db_t *db, uint64_t *seq, uint64_t *appended_ms, size_t *len)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(db->txn, db->log, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc == 0) {
        if (k.mv_size != 8) {
            rc = MDB_CORRUPTED;
        } else {
            *seq = notify_be64_get(k.mv_data);
            *len = v.mv_size;
            notify_entry_t e;
            *appended_ms = notify_entry_decode(v.mv_data, v.mv_size, &e) == 0 ? e.appended_ms : 0;
        }
    }
    mdb_cursor_close(cur);
    return rc;
}

int notify_db_log_scan(notify_db_t *db, uint64_t after, notify_db_entry_fn fn, void *ctx, uint64_t *bad)
{
    MDB_txn *txn = db->txn;
    int rc;
    if (!txn) {
        if (db->rtxn)
            rc = mdb_txn_renew(db->rtxn);
        else
            rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &db->rtxn);
        if (rc)
            return rc;
        txn = db->rtxn;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, db->log, &cur)) != 0)
        goto out;
    unsigned char kb[8];
    notify_be64_put(kb, after + 1);
    MDB_val k = {8, kb}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        notify_entry_t e;
        if (k.mv_size != 8 || notify_entry_decode(v.mv_data, v.mv_size, &e) < 0) {
            (*bad)++;
        } else {
            e.seq = notify_be64_get(k.mv_data);
            if (fn(ctx, &e))
                break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
out:
    if (txn == db->rtxn)
        mdb_txn_reset(db->rtxn);
    return rc;
}

/* ==== targets ================================================================================ */

int notify_db_cursor_get(notify_db_t *db, const unsigned char key[32], uint64_t *cursor, uint64_t *acked_id,
                         bool *found)
{
    MDB_val k = {32, (void *)key}, v;
    *found = false;
    int rc = mdb_get(db->txn, db->targets, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 16)
        return MDB_CORRUPTED;
    *cursor = notify_be64_get(v.mv_data);
    *acked_id = notify_be64_get((const unsigned char *)v.mv_data + 8);
    *found = true;
    return 0;
}

int notify_db_cursor_put(notify_db_t *db, const unsigned char key[32], uint64_t cursor, uint64_t acked_id)
{
    unsigned char b[16];
    notify_be64_put(b, cursor);
    notify_be64_put(b + 8, acked_id);
    MDB_val k = {32, (void *)key}, v = {16, b};
    return mdb_put(db->txn, db->targets, &k, &v, 0);
}

int notify_db_cursor_keep(notify_db_t *db, const unsigned char (*keys)[32], uint32_t n, uint32_t *removed)
{
    *removed = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(db->txn, db->targets, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        bool keep = false;
        for (uint32_t i = 0; i < n && !keep; i++)
            keep = k.mv_size == 32 && memcmp(k.mv_data, keys[i], 32) == 0;
        if (!keep) {
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
                break;
            (*removed)++;
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ==== snapshot staging ======================================================================= */

int notify_db_snap_clear(notify_db_t *db)
{
    return mdb_drop(db->txn, db->snap, 0);
}

static size_t s_snap_key(uint64_t version, const char *uid, size_t len, unsigned char *kb)
{
    notify_be64_put(kb, version);
    memcpy(kb + 8, uid, len);
    return 8 + len;
}

int notify_db_snap_put(notify_db_t *db, uint64_t version, const char *uid, size_t len, const void *val, size_t vlen)
{
    unsigned char kb[8 + PROTO_USER_ID_MAX];
    if (len > PROTO_USER_ID_MAX)
        return EINVAL;
    MDB_val k = {s_snap_key(version, uid, len, kb), kb}, v = {vlen, (void *)val};
    return mdb_put(db->txn, db->snap, &k, &v, 0);
}

int notify_db_snap_del(notify_db_t *db, uint64_t version, const char *uid, size_t len)
{
    unsigned char kb[8 + PROTO_USER_ID_MAX];
    if (len > PROTO_USER_ID_MAX)
        return EINVAL;
    MDB_val k = {s_snap_key(version, uid, len, kb), kb};
    int rc = mdb_del(db->txn, db->snap, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int notify_db_snap_each(notify_db_t *db, notify_db_snap_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(db->txn, db->snap, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if (k.mv_size > 8 && k.mv_size <= 8 + PROTO_USER_ID_MAX) {
            int r = fn(ctx, notify_be64_get(k.mv_data), (const char *)k.mv_data + 8, k.mv_size - 8, v.mv_data,
                       v.mv_size);
            if (r) {
                rc = r;
                break;
            }
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}
