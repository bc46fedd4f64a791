/* store.c -- the LMDB presence store (see store.h): the environment, reads and catch-up. Writes,
 * sessions, leases and the sweeper are in store_write.c; the presence model in store_model.c.
 *
 * Layout: one environment, seven named databases, all updated in the same write transaction:
 *
 *   rec   user_id                      -> encoded record (proto_record_encode)
 *   ses   user_id . 0 . session_id     -> encoded session (proto_session_encode)
 *   lease BE64(lease_id)               -> BE64(expires_us) . BE32(ttl_ms) . node   a gateway's lease
 *   lses  BE64(lease_id) . user_id . 0 . session_id -> ""   the sessions a lease holds
 *   due   BE64(due_us) . user_id       -> ""   when the store looks at a user next (its record's due_us:
 *                                               an expiry, a message's, a session's, or the purge)
 *         BE64(due_us) . 0x01 . BE64(lease_id) -> ""   when a lease lapses (0x01 is no user-id byte)
 *   log   BE64(seq)                    -> kind . user_id   the changelog (append-only, pruned at the head)
 *   meta  "epoch" | "last_seq" | "log_floor" | "seq_reserved" -> u64 (native endian, 8 bytes)
 *         replicated: "raft_applied" (the log index applied) | "lease_from" (the last LEAD entry's time)
 *   dedup cmd_id -> status . BE32(flags) . BE64(as_of) . BE64(at_us)   replicated: commands applied
 *   dedt  BE64(at_us) . cmd_id -> ""   the same ids in time order, pruned past the dedup window
 *
 * Big-endian keys make memcmp order equal numeric order, so `due` is scanned from its first key
 * by the sweeper and `log` from after_seq by catch-up.
 *
 * Write cost is what bounds a durable store: each fsynced group writes every page it dirtied. A
 * write therefore touches one randomly placed page (its record) and appends elsewhere: the log
 * only grows at its tail, and a record's new `due` entry lands near the tail of the due index
 * (now + ttl). The previous `due` entry is not deleted on the write; the sweeper drops such stale
 * entries when they come due (it checks every entry against its record), deleting in time order
 * -- sequential pages instead of a random page per write.
 *
 * Catch-up walks the log after S and emits, for each entry, the key's current record only when
 * the record's version is that entry's sequence (later entries carry later versions), and DEL
 * entries as they are. The result is every change after S, compacted to the latest per key, in
 * order. When S is below the floor of the pruned log, the caller sends a snapshot instead.
 *
 * Sequence reservation: a commit that is not fsynced before its changes are published (a
 * heartbeat-only group, or SYNC_MODE nometa/none) can be lost by an OS crash after subscribers saw
 * its sequence numbers; a store that then reused them would hand caches "new" versions they
 * already hold (and would skip). So such commits only use sequences below a durable reservation
 * ("seq_reserved", written and fsynced ahead, SEQ_RESERVE_STEP at a time), and an open that finds
 * a reservation (no clean close) continues after it. A clean close releases the reservation.
 *
 * Map growth: MDB_MAP_FULL aborts the group, the map doubles (readers excluded by resize_lock,
 * since LMDB requires no open transaction in this process), and the group is re-run whole.
 */
#include "store_int.h"
#include "store_model.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ==== small helpers ========================================================================== */

void store_be64(uint64_t v, unsigned char *out)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t store_rd_be64(const void *p)
{
    const unsigned char *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

void store_changes_init(store_changes_t *c)
{
    c->v = NULL;
    c->n = c->cap = 0;
}

void store_changes_reset(store_changes_t *c)
{
    c->n = 0;
}

void store_changes_fini(store_changes_t *c)
{
    free(c->v);
    store_changes_init(c);
}

proto_change_t *store_changes_push(store_changes_t *c)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->v = xrealloc(c->v, c->cap * sizeof *c->v);
    }
    return &c->v[c->n++];
}

const char *store_sync_mode_name(int mode)
{
    switch (mode) {
    case STORE_SYNC_FULL: return "full";
    case STORE_SYNC_NOMETA: return "nometa";
    case STORE_SYNC_NONE: return "none";
    default: return "?";
    }
}

uint64_t store_due_us(const store_t *s, const proto_record_t *r)
{
    if (r->due_us)
        return r->due_us;
    if (r->status == PRESENCE_OFFLINE)
        return r->last_seen_us + s->cfg.retention_us;
    return r->expires_at_us;
}

uint64_t store_epoch(const store_t *s)
{
    return atomic_load(&((store_t *)s)->epoch);
}

int store_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0) {
        if (v.mv_size != 8)
            return MDB_CORRUPTED;
        memcpy(out, v.mv_data, 8);
    }
    return rc;
}

int store_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t val)
{
    MDB_val k = {strlen(name), (void *)name}, v = {8, &val};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* ==== open / close =========================================================================== */

/* Open the environment in s->path and its databases, and read meta. Used at open and after a
 * replicated state was replaced (store_replace). Returns an LMDB code, or -1 with err set. */
static int s_env_open(store_t *s, char *err)
{
    MDB_txn *txn = NULL;
    int rc;
    if ((rc = mdb_env_create(&s->env)) != 0)
        return rc;
    mdb_env_set_maxdbs(s->env, 10);
    mdb_env_set_maxreaders(s->env, 256);
    mdb_env_set_mapsize(s->env, s->map_size);
    unsigned flags = MDB_NOTLS;
    if (s->cfg.replicated || s->cfg.sync_mode == STORE_SYNC_NONE)
        flags |= MDB_NOSYNC; /* replicated: the raft log is the durable record (REPLICATION.md) */
    else if (s->cfg.sync_mode == STORE_SYNC_NOMETA)
        flags |= MDB_NOMETASYNC;
    if ((rc = mdb_env_open(s->env, s->path, flags, 0640)) != 0)
        return rc;
    /* The file may already be larger than the configured initial size: adopt its size. */
    MDB_envinfo ei;
    mdb_env_info(s->env, &ei);
    s->map_size = ei.me_mapsize;
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    s->readers_cleared += (uint64_t)dead;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, "rec", MDB_CREATE, &s->rec)) != 0 ||
        (rc = mdb_dbi_open(txn, "due", MDB_CREATE, &s->due)) != 0 ||
        (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->log)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "ses", MDB_CREATE, &s->ses)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &s->lease)) != 0 ||
        (rc = mdb_dbi_open(txn, "lses", MDB_CREATE, &s->lses)) != 0)
        goto out;
    if (s->cfg.replicated && ((rc = mdb_dbi_open(txn, "dedup", MDB_CREATE, &s->dedup)) != 0 ||
                              (rc = mdb_dbi_open(txn, "dedt", MDB_CREATE, &s->dedt)) != 0))
        goto out;
    uint64_t epoch = 0;
    rc = store_meta_get(txn, s->meta, "epoch", &epoch);
    if (rc == MDB_NOTFOUND && !s->cfg.replicated) {
        do {
            if (util_random(&epoch, sizeof epoch) < 0) {
                snprintf(err, STORE_ERR_LEN, "getrandom: %s", strerror(errno));
                mdb_txn_abort(txn);
                return -1;
            }
            epoch &= 0x7fffffffffffffffULL; /* keep it positive for every consumer */
        } while (epoch == 0);
        rc = store_meta_put(txn, s->meta, "epoch", epoch);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0; /* replicated: the first LEAD entry gives it (store_lead_at) */
    }
    if (rc)
        goto out;
    atomic_store(&s->epoch, epoch);
    s->last_seq = s->log_floor = s->seq_reserved = s->applied = 0;
    if ((rc = store_meta_get(txn, s->meta, "last_seq", &s->last_seq)) != 0 && rc != MDB_NOTFOUND)
        goto out;
    if ((rc = store_meta_get(txn, s->meta, "log_floor", &s->log_floor)) != 0 && rc != MDB_NOTFOUND)
        goto out;
    if (s->cfg.replicated) {
        /* No reservation: nothing is published before a majority has it, and a restart replays
         * the same entries into the same sequences (a jump would diverge from the others). */
        if ((rc = store_meta_get(txn, s->meta, "raft_applied", &s->applied)) != 0 && rc != MDB_NOTFOUND)
            goto out;
        s->opened_us = 0;
        if ((rc = store_meta_get(txn, s->meta, "lease_from", &s->opened_us)) != 0 && rc != MDB_NOTFOUND)
            goto out;
        rc = 0;
    } else {
        if ((rc = store_meta_get(txn, s->meta, "seq_reserved", &s->seq_reserved)) != 0 && rc != MDB_NOTFOUND)
            goto out;
        rc = 0;
        if (s->seq_reserved > s->last_seq) {
            /* Not closed cleanly while unsynced commits were possible: sequences up to the
             * reservation may have been published and lost. Continue after them. */
            s->last_seq = s->seq_reserved;
            rc = store_meta_put(txn, s->meta, "last_seq", s->last_seq);
        }
    }
out:
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

int store_open(const store_config_t *cfg, store_t **out, char *err)
{
    store_t *s = xcalloc(1, sizeof *s);
    int rc;
    s->cfg = *cfg;
    snprintf(s->path, sizeof s->path, "%s", cfg->path);
    s->cfg.path = s->path;
    if (s->cfg.map_size < (1u << 20))
        s->cfg.map_size = 1u << 20;
    if (s->cfg.map_size_max < s->cfg.map_size)
        s->cfg.map_size_max = s->cfg.map_size;
    if (s->cfg.replicated)
        s->cfg.map_size = s->cfg.map_size_max; /* never grows: a snapshot copy may hold a reader */
    if (s->cfg.log_max == 0)
        s->cfg.log_max = 1;
    if (s->cfg.max_sessions == 0 || s->cfg.max_sessions > STORE_SESSIONS_MAX)
        s->cfg.max_sessions = s->cfg.max_sessions ? STORE_SESSIONS_MAX : 32;
    if (s->cfg.replicated && s->cfg.dedup_window_us == 0)
        s->cfg.dedup_window_us = 60000000u;
    s->opened_us = cfg->now_us ? cfg->now_us : util_now_us();
    pthread_rwlock_init(&s->resize_lock, NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    proto_buf_init(&s->enc);
    s->user = xmalloc(sizeof *s->user);
    s->user2 = xmalloc(sizeof *s->user2);

    if (strlen(cfg->path) >= sizeof s->path) { /* never open a silently shortened path */
        snprintf(err, STORE_ERR_LEN, "path too long (%zu bytes, at most %zu)", strlen(cfg->path), sizeof s->path - 1);
        goto fail;
    }
    if (mkdir(s->path, 0750) < 0 && errno != EEXIST) {
        snprintf(err, STORE_ERR_LEN, "mkdir %s: %s", s->path, strerror(errno));
        goto fail;
    }
    s->map_size = s->cfg.map_size;
    if ((rc = s_env_open(s, err)) != 0) {
        if (rc != -1) /* an LMDB code or an errno; -1 wrote err itself */
            snprintf(err, STORE_ERR_LEN, "lmdb %s: %s", s->path, mdb_strerror(rc));
        goto fail;
    }
    *out = s;
    return 0;
fail:
    store_close(&s);
    return -1;
}

void store_close(store_t **sp)
{
    store_t *s = *sp;
    if (!s)
        return;
    while (s->pool) {
        struct store_read *r = s->pool;
        s->pool = r->next;
        mdb_txn_abort(r->txn);
        free(r);
    }
    if (s->env) {
        if (!s->cfg.replicated && s->seq_reserved > s->last_seq) { /* release the reservation: everything is synced below */
            MDB_txn *txn;
            if (mdb_txn_begin(s->env, NULL, 0, &txn) == 0) {
                if (store_meta_put(txn, s->meta, "seq_reserved", s->last_seq) == 0)
                    mdb_txn_commit(txn);
                else
                    mdb_txn_abort(txn);
            }
        }
        mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    proto_buf_fini(&s->enc);
    free(s->user);
    free(s->user2);
    pthread_rwlock_destroy(&s->resize_lock);
    pthread_mutex_destroy(&s->pool_lock);
    free(s);
    *sp = NULL;
}

/* ==== map growth ============================================================================= */

int store_grow(store_t *s, char *err)
{
    if (s->map_size >= s->cfg.map_size_max) {
        snprintf(err, STORE_ERR_LEN, "map full at STORE_MAP_MAX (%llu bytes)", (unsigned long long)s->map_size);
        return -1;
    }
    uint64_t want = s->map_size * 2;
    if (want > s->cfg.map_size_max)
        want = s->cfg.map_size_max;
    pthread_rwlock_wrlock(&s->resize_lock);
    /* Pooled read transactions are reset (not open), but LMDB wants them gone before a resize. */
    pthread_mutex_lock(&s->pool_lock);
    while (s->pool) {
        struct store_read *r = s->pool;
        s->pool = r->next;
        mdb_txn_abort(r->txn);
        free(r);
    }
    s->pool_n = 0;
    pthread_mutex_unlock(&s->pool_lock);
    int rc = mdb_env_set_mapsize(s->env, want);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc != 0) {
        snprintf(err, STORE_ERR_LEN, "mdb_env_set_mapsize: %s", mdb_strerror(rc));
        return -1;
    }
    s->map_size = want;
    s->map_grows++;
    return 0;
}

/* ==== write path ============================================================================= */

store_read_t *store_read_begin(store_t *s, char *err)
{
    pthread_rwlock_rdlock(&s->resize_lock);
    pthread_mutex_lock(&s->pool_lock);
    struct store_read *r = s->pool;
    if (r) {
        s->pool = r->next;
        s->pool_n--;
    }
    pthread_mutex_unlock(&s->pool_lock);
    int rc;
    if (r) {
        rc = mdb_txn_renew(r->txn);
        if (rc) {
            mdb_txn_abort(r->txn);
            r->txn = NULL;
        }
    }
    if (!r || !r->txn) {
        if (!r)
            r = xcalloc(1, sizeof *r);
        r->s = s;
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
        if (rc) {
            snprintf(err, STORE_ERR_LEN, "read transaction: %s", mdb_strerror(rc));
            free(r);
            pthread_rwlock_unlock(&s->resize_lock);
            return NULL;
        }
    }
    r->seq = r->floor = 0;
    store_meta_get(r->txn, s->meta, "last_seq", &r->seq);
    store_meta_get(r->txn, s->meta, "log_floor", &r->floor);
    return r;
}

void store_read_end(store_read_t **rp)
{
    store_read_t *r = *rp;
    if (!r)
        return;
    store_t *s = r->s;
    mdb_txn_reset(r->txn);
    pthread_mutex_lock(&s->pool_lock);
    if (s->pool_n < STORE_READ_POOL) {
        r->next = s->pool;
        s->pool = r;
        s->pool_n++;
        r = NULL;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (r) {
        mdb_txn_abort(r->txn);
        free(r);
    }
    pthread_rwlock_unlock(&s->resize_lock);
    *rp = NULL;
}

uint64_t store_read_seq(const store_read_t *r)
{
    return r->seq;
}

uint64_t store_read_floor(const store_read_t *r)
{
    return r->floor;
}

int store_read_get_raw(store_read_t *r, const char *uid, size_t len, const void **data, size_t *dlen)
{
    MDB_val k = {len, (void *)uid}, v;
    int rc = mdb_get(r->txn, r->s->rec, &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORE_NOTFOUND;
    if (rc)
        return STORE_ERROR;
    *data = v.mv_data;
    *dlen = v.mv_size;
    return STORE_OK;
}

int store_read_get(store_read_t *r, const char *uid, size_t len, proto_record_t *out)
{
    const void *d;
    size_t n;
    int rc = store_read_get_raw(r, uid, len, &d, &n);
    if (rc != STORE_OK)
        return rc;
    return proto_record_decode(d, n, out) == 0 ? STORE_OK : STORE_ERROR;
}

#define SCAN_MAX_FACTOR 8 /* entries walked per change returned, at most */

int store_read_changes(store_read_t *r, uint64_t after_seq, uint32_t max_items, store_changes_t *out,
                       uint64_t *through_seq, bool *done)
{
    store_t *s = r->s;
    MDB_cursor *c = NULL;
    unsigned char kb[8];
    MDB_val k, v;
    if (max_items == 0)
        max_items = 1;
    uint64_t budget = (uint64_t)max_items * SCAN_MAX_FACTOR, last = after_seq;
    uint32_t n = 0;
    *done = true;
    if (after_seq >= r->seq) {
        *through_seq = after_seq > r->seq ? after_seq : r->seq;
        return STORE_OK;
    }
    if (mdb_cursor_open(r->txn, s->log, &c) != 0)
        return STORE_ERROR;
    store_be64(after_seq + 1, kb);
    k.mv_size = 8;
    k.mv_data = kb;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (n == max_items || budget-- == 0) {
            *done = false;
            break;
        }
        uint64_t seq = k.mv_size == 8 ? store_rd_be64(k.mv_data) : 0;
        if (seq > r->seq)
            break; /* committed after our snapshot of meta: not part of this answer */
        if (seq && v.mv_size >= 2 && v.mv_size <= 1 + PROTO_USER_ID_MAX) {
            const unsigned char *val = v.mv_data;
            const char *uid = (const char *)val + 1;
            size_t ulen = v.mv_size - 1;
            if (val[0] == PROTO_CH_DEL) {
                proto_change_t *ch = store_changes_push(out);
                memset(ch, 0, sizeof *ch);
                ch->kind = PROTO_CH_DEL;
                proto_record_set_uid(&ch->rec, uid, ulen);
                ch->rec.version = seq;
                n++;
            } else {
                proto_record_t rec;
                if (store_read_get(r, uid, ulen, &rec) == STORE_OK && rec.version == seq) {
                    proto_change_t *ch = store_changes_push(out);
                    ch->kind = PROTO_CH_SET;
                    ch->rec = rec;
                    n++;
                }
            }
        }
        last = seq;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return STORE_ERROR;
    *through_seq = *done ? r->seq : last;
    return STORE_OK;
}

int store_read_records(store_read_t *r, const char *after_key, size_t after_len, uint32_t max_items,
                       store_changes_t *out, char *next_key, size_t *next_len, bool *done)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    if (max_items == 0)
        max_items = 1;
    if (mdb_cursor_open(r->txn, r->s->rec, &c) != 0)
        return STORE_ERROR;
    int rc;
    if (after_len) {
        k.mv_size = after_len;
        k.mv_data = (void *)after_key;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        /* Strictly after the cursor key. */
        if (rc == 0 && k.mv_size == after_len && memcmp(k.mv_data, after_key, after_len) == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    uint32_t n = 0;
    *done = true;
    *next_len = 0;
    while (rc == 0) {
        if (n == max_items) {
            *done = false;
            break;
        }
        proto_record_t rec;
        if (proto_record_decode(v.mv_data, v.mv_size, &rec) == 0) {
            proto_change_t *ch = store_changes_push(out);
            ch->kind = PROTO_CH_SET;
            ch->rec = rec;
            n++;
        }
        if (k.mv_size <= PROTO_USER_ID_MAX) {
            memcpy(next_key, k.mv_data, k.mv_size);
            *next_len = k.mv_size;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return STORE_ERROR;
    if (*done)
        *next_len = 0;
    return STORE_OK;
}

void store_get_info(store_t *s, store_info_t *info)
{
    memset(info, 0, sizeof *info);
    info->epoch = store_epoch(s);
    info->map_size = s->map_size;
    info->map_grows = s->map_grows;
    info->readers_cleared = s->readers_cleared;
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(s, err);
    if (!r)
        return;
    MDB_stat st;
    if (mdb_stat(r->txn, s->rec, &st) == 0)
        info->records = st.ms_entries;
    if (mdb_stat(r->txn, s->log, &st) == 0)
        info->log_entries = st.ms_entries;
    if (mdb_stat(r->txn, s->due, &st) == 0)
        info->due_entries = st.ms_entries;
    if (s->cfg.replicated && mdb_stat(r->txn, s->dedup, &st) == 0)
        info->dedup_entries = st.ms_entries;
    info->last_seq = r->seq;
    info->log_floor = r->floor;
    MDB_envinfo ei;
    MDB_stat es;
    if (mdb_env_info(s->env, &ei) == 0 && mdb_env_stat(s->env, &es) == 0)
        info->map_used = ((uint64_t)ei.me_last_pgno + 1) * es.ms_psize;
    store_read_end(&r);
}

int store_catchup(store_read_t *r, uint64_t epoch, const proto_msg_t *m, store_changes_t *out, store_catchup_t *res)
{
    uint64_t snap_seq = store_read_seq(r), floor = store_read_floor(r);
    bool cont = (m->flags & PROTO_CATCHUP_F_SNAP_CONT) != 0;
    uint32_t max = (uint32_t)MIN(MAX(m->max_items, 1), STORE_CATCHUP_MAX_ITEMS);
    res->mode = PROTO_CATCHUP_INCREMENTAL;
    res->through = snap_seq;
    res->done = true;
    res->snapshot = false;
    res->clen = 0;
    if (cont && m->epoch == epoch && m->first_seq <= snap_seq) {
        /* More of a snapshot: records after the cursor; the base sequence stays the client's. */
        res->mode = PROTO_CATCHUP_SNAPSHOT_CONT;
        res->through = m->first_seq;
        int rc = store_read_records(r, m->key.p, m->key.len, max, out, res->cursor, &res->clen, &res->done);
        res->done = false; /* the client continues: next chunk, or incremental from the base */
        return rc;
    }
    if (cont || m->epoch != epoch || m->seq > snap_seq || m->seq < floor) {
        /* Another database, a client ahead of us (we lost commits), or history we no longer
         * have: start over. */
        res->mode = PROTO_CATCHUP_SNAPSHOT;
        res->snapshot = true;
        if (m->flags & PROTO_CATCHUP_F_NO_DATA)
            return STORE_OK;
        int rc = store_read_records(r, "", 0, max, out, res->cursor, &res->clen, &res->done);
        res->done = false;
        return rc;
    }
    return store_read_changes(r, m->seq, max, out, &res->through, &res->done);
}

/* ==== replicated mode: snapshots =============================================================== */

/* Open a copy made by store_copy read-only and read its applied index and epoch. */
static int s_copy_meta(const char *path, uint64_t *applied, uint64_t *epoch, char *err)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    int rc = mdb_env_create(&env);
    if (rc == 0) {
        mdb_env_set_maxdbs(env, 10);
        rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0640);
    }
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &meta);
    *applied = *epoch = 0;
    if (rc == 0 && (rc = store_meta_get(txn, meta, "raft_applied", applied)) == 0) {
        rc = store_meta_get(txn, meta, "epoch", epoch);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc)
        snprintf(err, STORE_ERR_LEN, "snapshot copy %s: %s", path, mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    return rc ? -1 : 0;
}

int store_copy(store_t *s, const char *path, uint64_t *applied, char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, STORE_ERR_LEN, "open %s: %s", path, strerror(errno));
        return -1;
    }
    /* Readers hold resize_lock shared: no replace can close the environment under the copy. */
    pthread_rwlock_rdlock(&s->resize_lock);
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->resize_lock);
    close(fd);
    if (rc) {
        snprintf(err, STORE_ERR_LEN, "mdb_env_copyfd2: %s", mdb_strerror(rc));
        return -1;
    }
    uint64_t epoch;
    return s_copy_meta(path, applied, &epoch, err);
}

int store_replace(store_t *s, const char *path, uint64_t applied, char *err)
{
    uint64_t a, epoch;
    if (s_copy_meta(path, &a, &epoch, err) < 0)
        return -1;
    if (a != applied) {
        snprintf(err, STORE_ERR_LEN, "snapshot copy holds index %llu, expected %llu", (unsigned long long)a,
                 (unsigned long long)applied);
        return -1;
    }
    char data[600];
    snprintf(data, sizeof data, "%s/data.mdb", s->path);
    pthread_rwlock_wrlock(&s->resize_lock);
    pthread_mutex_lock(&s->pool_lock);
    while (s->pool) {
        struct store_read *r = s->pool;
        s->pool = r->next;
        mdb_txn_abort(r->txn);
        free(r);
    }
    s->pool_n = 0;
    pthread_mutex_unlock(&s->pool_lock);
    mdb_env_close(s->env);
    s->env = NULL;
    int ren = rename(path, data);
    if (ren < 0)
        snprintf(err, STORE_ERR_LEN, "rename %s: %s", path, strerror(errno));
    s->map_size = s->cfg.map_size;
    int rc = s_env_open(s, err); /* the new state, or the old one when the rename failed */
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc) {
        /* Neither the new state nor the old one opens: this member cannot go on. Its restart
         * rebuilds the state from the raft snapshot and log. */
        fprintf(stderr, "store: cannot reopen %s after a snapshot install: %s\n", s->path,
                rc == -1 ? err : mdb_strerror(rc));
        exit(1);
    }
    return ren < 0 ? -1 : 0;
}
