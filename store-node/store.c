/* store.c -- the LMDB presence store (see store.h).
 *
 * Layout: one environment, four named databases, all updated in the same write transaction:
 *
 *   rec   user_id                      -> encoded record (proto_record_encode)
 *   due   BE64(due_us) . user_id       -> ""        next action time: expiry while live, purge once offline
 *   log   BE64(seq)                    -> kind . user_id   the changelog (append-only, pruned at the head)
 *   meta  "epoch" | "last_seq" | "log_floor" | "seq_reserved" -> u64 (native endian, 8 bytes)
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
#include "store.h"
#include "util.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    MDB_dbi rec, due, log, meta;
    store_config_t cfg;
    char path[512];
    uint64_t epoch;
    uint64_t last_seq; /* writer thread only */
    uint64_t seq_reserved; /* writer thread only: durable bound for sequences of unsynced commits */
    uint64_t log_floor;
    uint64_t map_size;
    uint64_t map_grows, readers_cleared;
    pthread_rwlock_t resize_lock;
    pthread_mutex_t pool_lock;
    struct store_read *pool;
    int pool_n;
    proto_buf_t enc; /* writer thread scratch */
};

/* ==== small helpers ========================================================================== */

static void s_be64(uint64_t v, unsigned char *out)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t s_rd_be64(const void *p)
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

static proto_change_t *s_changes_push(store_changes_t *c)
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
    if (r->status == PRESENCE_OFFLINE)
        return r->last_seen_us + s->cfg.retention_us;
    return r->expires_at_us;
}

uint64_t store_epoch(const store_t *s)
{
    return s->epoch;
}

static int s_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
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

static int s_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t val)
{
    MDB_val k = {strlen(name), (void *)name}, v = {8, &val};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* ==== open / close =========================================================================== */

int store_open(const store_config_t *cfg, store_t **out, char *err)
{
    store_t *s = xcalloc(1, sizeof *s);
    MDB_txn *txn = NULL;
    int rc;
    s->cfg = *cfg;
    snprintf(s->path, sizeof s->path, "%s", cfg->path);
    s->cfg.path = s->path;
    if (s->cfg.map_size < (1u << 20))
        s->cfg.map_size = 1u << 20;
    if (s->cfg.map_size_max < s->cfg.map_size)
        s->cfg.map_size_max = s->cfg.map_size;
    if (s->cfg.log_max == 0)
        s->cfg.log_max = 1;
    pthread_rwlock_init(&s->resize_lock, NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    proto_buf_init(&s->enc);

    if (strlen(cfg->path) >= sizeof s->path) { /* never open a silently shortened path */
        snprintf(err, STORE_ERR_LEN, "path too long (%zu bytes, at most %zu)", strlen(cfg->path), sizeof s->path - 1);
        goto fail;
    }
    if (mkdir(s->path, 0750) < 0 && errno != EEXIST) {
        snprintf(err, STORE_ERR_LEN, "mkdir %s: %s", s->path, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&s->env)) != 0)
        goto lmdb_fail;
    mdb_env_set_maxdbs(s->env, 8);
    mdb_env_set_maxreaders(s->env, 256);
    s->map_size = s->cfg.map_size;
    mdb_env_set_mapsize(s->env, s->map_size);
    unsigned flags = MDB_NOTLS;
    if (cfg->sync_mode == STORE_SYNC_NOMETA)
        flags |= MDB_NOMETASYNC;
    else if (cfg->sync_mode == STORE_SYNC_NONE)
        flags |= MDB_NOSYNC;
    if ((rc = mdb_env_open(s->env, s->path, flags, 0640)) != 0)
        goto lmdb_fail;
    /* The file may already be larger than the configured initial size: adopt its size. */
    MDB_envinfo ei;
    mdb_env_info(s->env, &ei);
    s->map_size = ei.me_mapsize;
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    s->readers_cleared += (uint64_t)dead;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto lmdb_fail;
    if ((rc = mdb_dbi_open(txn, "rec", MDB_CREATE, &s->rec)) != 0 ||
        (rc = mdb_dbi_open(txn, "due", MDB_CREATE, &s->due)) != 0 ||
        (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->log)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0)
        goto lmdb_fail;
    rc = s_meta_get(txn, s->meta, "epoch", &s->epoch);
    if (rc == MDB_NOTFOUND) {
        do {
            if (util_random(&s->epoch, sizeof s->epoch) < 0) {
                snprintf(err, STORE_ERR_LEN, "getrandom: %s", strerror(errno));
                goto fail;
            }
            s->epoch &= 0x7fffffffffffffffULL; /* keep it positive for every consumer */
        } while (s->epoch == 0);
        if ((rc = s_meta_put(txn, s->meta, "epoch", s->epoch)) != 0)
            goto lmdb_fail;
    } else if (rc != 0) {
        goto lmdb_fail;
    }
    if ((rc = s_meta_get(txn, s->meta, "last_seq", &s->last_seq)) != 0 && rc != MDB_NOTFOUND)
        goto lmdb_fail;
    if ((rc = s_meta_get(txn, s->meta, "log_floor", &s->log_floor)) != 0 && rc != MDB_NOTFOUND)
        goto lmdb_fail;
    if ((rc = s_meta_get(txn, s->meta, "seq_reserved", &s->seq_reserved)) != 0 && rc != MDB_NOTFOUND)
        goto lmdb_fail;
    if (s->seq_reserved > s->last_seq) {
        /* Not closed cleanly while unsynced commits were possible: sequences up to the reservation
         * may have been published and lost. Continue after them. */
        s->last_seq = s->seq_reserved;
        if ((rc = s_meta_put(txn, s->meta, "last_seq", s->last_seq)) != 0)
            goto lmdb_fail;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto lmdb_fail;
    *out = s;
    return 0;
lmdb_fail:
    snprintf(err, STORE_ERR_LEN, "lmdb %s: %s", s->path, mdb_strerror(rc));
fail:
    if (txn)
        mdb_txn_abort(txn);
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
        if (s->seq_reserved > s->last_seq) { /* release the reservation: everything is synced below */
            MDB_txn *txn;
            if (mdb_txn_begin(s->env, NULL, 0, &txn) == 0) {
                if (s_meta_put(txn, s->meta, "seq_reserved", s->last_seq) == 0)
                    mdb_txn_commit(txn);
                else
                    mdb_txn_abort(txn);
            }
        }
        mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    proto_buf_fini(&s->enc);
    pthread_rwlock_destroy(&s->resize_lock);
    pthread_mutex_destroy(&s->pool_lock);
    free(s);
    *sp = NULL;
}

/* ==== map growth ============================================================================= */

static int s_grow(store_t *s, char *err)
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

static int s_get_rec(store_t *s, MDB_txn *txn, const char *uid, size_t len, proto_record_t *out, bool *found)
{
    MDB_val k = {len, (void *)uid}, v;
    int rc = mdb_get(txn, s->rec, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *found = false;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (proto_record_decode(v.mv_data, v.mv_size, out) < 0)
        return MDB_CORRUPTED;
    *found = true;
    return 0;
}

static void s_due_key(uint64_t due, const char *uid, size_t len, unsigned char *buf, MDB_val *k)
{
    s_be64(due, buf);
    memcpy(buf + 8, uid, len);
    k->mv_size = 8 + len;
    k->mv_data = buf;
}

/* Write a record and its current expiry-index entry (an older entry, if any, stays until the
 * sweeper finds it stale). */
static int s_store_rec(store_t *s, MDB_txn *txn, const proto_record_t *r)
{
    proto_buf_reset(&s->enc);
    proto_record_encode(&s->enc, r);
    MDB_val k = {r->uid_len, (void *)r->user_id}, v = {s->enc.len, s->enc.data};
    int rc = mdb_put(txn, s->rec, &k, &v, 0);
    if (rc != 0)
        return rc;
    unsigned char kb[8 + PROTO_USER_ID_MAX];
    MDB_val dk, empty = {0, NULL};
    s_due_key(store_due_us(s, r), r->user_id, r->uid_len, kb, &dk);
    return mdb_put(txn, s->due, &dk, &empty, 0);
}

/* Append the change at `seq` to the changelog (sequences only grow: MDB_APPEND). */
static int s_log(store_t *s, MDB_txn *txn, uint64_t seq, uint8_t kind, const char *uid, size_t len)
{
    unsigned char kb[8], vb[1 + PROTO_USER_ID_MAX];
    s_be64(seq, kb);
    vb[0] = kind;
    memcpy(vb + 1, uid, len);
    MDB_val k = {8, kb}, v = {1 + len, vb};
    return mdb_put(txn, s->log, &k, &v, MDB_APPEND);
}

static bool s_effectively_offline(const proto_record_t *r, uint64_t now)
{
    return r->status == PRESENCE_OFFLINE || now >= r->expires_at_us;
}

static int s_apply_put(store_t *s, MDB_txn *txn, const proto_record_t *in, uint64_t now, uint64_t *seq,
                       proto_record_t *out, store_changes_t *ch)
{
    proto_record_t old;
    bool found;
    int rc = s_get_rec(s, txn, in->user_id, in->uid_len, &old, &found);
    if (rc)
        return rc;
    *out = *in;
    out->version = ++*seq;
    out->last_seen_us = now;
    out->expires_at_us = now + (uint64_t)in->ttl_s * 1000000u;
    bool changed = true;
    uint64_t old_updated = 0;
    if (found) {
        bool old_off = s_effectively_offline(&old, now);
        bool old_expired = old_off && old.status != PRESENCE_OFFLINE;
        int old_status = old_off ? PRESENCE_OFFLINE : old.status;
        size_t old_mlen = old_expired ? 0 : old.msg_len;
        changed = old_status != in->status || old_mlen != in->msg_len || memcmp(old.message, in->message, old_mlen) != 0;
        /* An expired record went offline at its expires_at (as readers and the sweeper see it). */
        old_updated = old_expired ? old.expires_at_us : old.updated_at_us;
    }
    out->updated_at_us = changed ? now : old_updated;
    if ((rc = s_store_rec(s, txn, out)) != 0 || (rc = s_log(s, txn, out->version, PROTO_CH_SET, out->user_id, out->uid_len)))
        return rc;
    proto_change_t *c = s_changes_push(ch);
    c->kind = PROTO_CH_SET;
    c->rec = *out;
    return 0;
}

static int s_apply_touch(store_t *s, MDB_txn *txn, const proto_record_t *in, uint64_t now, uint64_t *seq,
                         proto_record_t *out, store_changes_t *ch)
{
    proto_record_t old;
    bool found;
    int rc = s_get_rec(s, txn, in->user_id, in->uid_len, &old, &found);
    if (rc)
        return rc;
    bool status_change;
    if (found) {
        *out = old;
        status_change = s_effectively_offline(&old, now);
        if (in->ttl_s)
            out->ttl_s = in->ttl_s;
        if (status_change) {
            /* An offline or expired user comes back online; the old message belonged to the old status. */
            out->status = PRESENCE_ONLINE;
            proto_record_set_msg(out, "", 0);
            out->updated_at_us = now;
        }
    } else {
        memset(out, 0, sizeof *out);
        proto_record_set_uid(out, in->user_id, in->uid_len);
        out->status = PRESENCE_ONLINE;
        out->ttl_s = in->ttl_s ? in->ttl_s : (uint32_t)s->cfg.default_ttl_s;
        out->updated_at_us = now;
        status_change = true;
    }
    proto_record_set_node(out, in->node_id, in->node_len);
    out->version = ++*seq;
    out->last_seen_us = now;
    out->expires_at_us = now + (uint64_t)out->ttl_s * 1000000u;
    if ((rc = s_store_rec(s, txn, out)) != 0 ||
        (rc = s_log(s, txn, out->version, status_change ? PROTO_CH_SET : PROTO_CH_TOUCH, out->user_id, out->uid_len)))
        return rc;
    proto_change_t *c = s_changes_push(ch);
    if (status_change) {
        c->kind = PROTO_CH_SET;
        c->rec = *out;
    } else {
        c->kind = PROTO_CH_TOUCH;
        memset(&c->rec, 0, offsetof(proto_record_t, user_id));
        proto_record_set_uid(&c->rec, out->user_id, out->uid_len);
        proto_record_set_node(&c->rec, out->node_id, out->node_len);
        c->rec.message[0] = '\0';
        c->rec.version = out->version;
        c->rec.last_seen_us = out->last_seen_us;
        c->rec.expires_at_us = out->expires_at_us;
        c->rec.ttl_s = out->ttl_s;
    }
    return 0;
}

static int s_del_change(store_t *s, MDB_txn *txn, const char *uid, size_t len, uint64_t seq, store_changes_t *ch)
{
    int rc = s_log(s, txn, seq, PROTO_CH_DEL, uid, len);
    if (rc)
        return rc;
    proto_change_t *c = s_changes_push(ch);
    memset(c, 0, sizeof *c);
    c->kind = PROTO_CH_DEL;
    proto_record_set_uid(&c->rec, uid, len);
    c->rec.version = seq;
    return 0;
}

static int s_apply_del(store_t *s, MDB_txn *txn, const proto_record_t *in, uint64_t *seq, uint8_t *status,
                       uint64_t *as_of, store_changes_t *ch)
{
    MDB_val k = {in->uid_len, (void *)in->user_id};
    int rc = mdb_del(txn, s->rec, &k, NULL);
    if (rc == MDB_NOTFOUND) {
        *status = PROTO_NOTFOUND;
        *as_of = *seq;
        return 0;
    }
    if (rc)
        return rc;
    *as_of = ++*seq;
    *status = PROTO_OK;
    return s_del_change(s, txn, in->user_id, in->uid_len, *as_of, ch);
}

/* One attempt at a group: returns an LMDB code (0 = committed). */
static int s_apply_once(store_t *s, store_op_t *ops, size_t nops, uint64_t now, store_changes_t *ch)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint64_t seq = s->last_seq;
    for (size_t i = 0; i < nops && rc == 0; i++) {
        store_op_t *op = &ops[i];
        op->status = PROTO_OK;
        switch (op->type) {
        case PROTO_PUT:
            for (uint32_t j = 0; j < op->n && rc == 0; j++)
                rc = s_apply_put(s, txn, &op->in[j], now, &seq, &op->out[j], ch);
            op->as_of = seq;
            break;
        case PROTO_TOUCH:
            for (uint32_t j = 0; j < op->n && rc == 0; j++)
                rc = s_apply_touch(s, txn, &op->in[j], now, &seq, &op->out[j], ch);
            op->as_of = seq;
            break;
        case PROTO_DEL:
            rc = s_apply_del(s, txn, &op->in[0], &seq, &op->status, &op->as_of, ch);
            break;
        default:
            op->status = PROTO_EBADREQ;
            break;
        }
    }
    if (rc == 0 && seq != s->last_seq)
        rc = s_meta_put(txn, s->meta, "last_seq", seq);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn); /* frees txn even on failure */
    if (rc == 0)
        s->last_seq = seq;
    return rc;
}

/* Make sure the next `count` sequences are below a durable reservation before a commit that will
 * not be fsynced. Returns an LMDB code. */
static int s_reserve(store_t *s, uint64_t count)
{
    if (s->last_seq + count <= s->seq_reserved)
        return 0;
    uint64_t upto = s->last_seq + count + SEQ_RESERVE_STEP;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if ((rc = s_meta_put(txn, s->meta, "seq_reserved", upto)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return rc;
    if ((rc = mdb_env_sync(s->env, 1)) != 0) /* the commit may not have synced (nometa/none) */
        return rc;
    s->seq_reserved = upto;
    return 0;
}

int store_apply(store_t *s, store_op_t *ops, size_t nops, uint64_t now_us, bool relaxed, store_changes_t *changes,
                char *err)
{
    size_t mark = changes->n;
    bool toggled = relaxed && s->cfg.sync_mode != STORE_SYNC_NONE;
    if (relaxed || s->cfg.sync_mode != STORE_SYNC_FULL) {
        uint64_t count = 0;
        for (size_t i = 0; i < nops; i++)
            count += ops[i].n ? ops[i].n : 1;
        int rc = s_reserve(s, count);
        while (rc == MDB_MAP_FULL && s_grow(s, err) == 0)
            rc = s_reserve(s, count);
        if (rc) {
            snprintf(err, STORE_ERR_LEN, "sequence reservation: %s", mdb_strerror(rc));
            for (size_t i = 0; i < nops; i++)
                ops[i].status = PROTO_EINTERNAL;
            return -1;
        }
    }
    if (toggled)
        mdb_env_set_flags(s->env, MDB_NOSYNC, 1); /* the writer thread: no write txn is open */
    for (;;) {
        changes->n = mark;
        int rc = s_apply_once(s, ops, nops, now_us, changes);
        if (rc == 0) {
            if (toggled)
                mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
            return 0;
        }
        changes->n = mark;
        if (rc == MDB_MAP_FULL) {
            if (s_grow(s, err) == 0)
                continue;
        } else if (rc == MDB_TXN_FULL && nops > 1) {
            /* Too many dirty pages for one transaction: commit the group in two halves. */
            if (toggled)
                mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
            size_t half = nops / 2;
            if (store_apply(s, ops, half, now_us, relaxed, changes, err) < 0)
                return -1;
            return store_apply(s, ops + half, nops - half, now_us, relaxed, changes, err);
        } else {
            snprintf(err, STORE_ERR_LEN, "write transaction: %s", mdb_strerror(rc));
        }
        if (toggled)
            mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
        for (size_t i = 0; i < nops; i++)
            ops[i].status = PROTO_EINTERNAL;
        return -1;
    }
}

/* ==== sweeper ================================================================================ */

typedef struct due_item {
    uint64_t due;
    uint8_t len;
    char uid[PROTO_USER_ID_MAX];
} due_item_t;

static int s_sweep_once(store_t *s, uint64_t now, uint32_t max, store_changes_t *ch, uint64_t *expired,
                        uint64_t *purged, int *actions, bool *capped)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint64_t seq = s->last_seq, nexp = 0, npur = 0, floor = s->log_floor;
    due_item_t *items = xmalloc((size_t)max * sizeof *items);
    uint32_t n = 0;
    MDB_val k, v;
    *capped = false;
    if ((rc = mdb_cursor_open(txn, s->due, &cur)) != 0)
        goto out;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (n == max) {
            *capped = true;
            break;
        }
        if (k.mv_size < 9 || k.mv_size > 8 + PROTO_USER_ID_MAX) {
            /* Not a key we write: drop it rather than stall the sweeper on it forever. */
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
                goto out;
            continue;
        }
        uint64_t due = s_rd_be64(k.mv_data);
        if (due > now)
            break;
        items[n].due = due;
        items[n].len = (uint8_t)(k.mv_size - 8);
        memcpy(items[n].uid, (char *)k.mv_data + 8, k.mv_size - 8);
        n++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        goto out;
    rc = 0;
    mdb_cursor_close(cur);
    cur = NULL;

    for (uint32_t i = 0; i < n && rc == 0; i++) {
        proto_record_t r;
        bool found;
        unsigned char kb[8 + PROTO_USER_ID_MAX];
        MDB_val dk;
        s_due_key(items[i].due, items[i].uid, items[i].len, kb, &dk);
        if ((rc = mdb_del(txn, s->due, &dk, NULL)) != 0)
            break;
        if ((rc = s_get_rec(s, txn, items[i].uid, items[i].len, &r, &found)) != 0)
            break;
        if (!found || store_due_us(s, &r) != items[i].due)
            continue; /* left behind by a later write or a delete: nothing else to do */
        if (r.status != PRESENCE_OFFLINE) {
            /* Expired: the store, never a cache, turns the record offline. */
            r.status = PRESENCE_OFFLINE;
            proto_record_set_msg(&r, "", 0);
            r.updated_at_us = r.expires_at_us;
            r.version = ++seq;
            if ((rc = s_store_rec(s, txn, &r)) != 0 || (rc = s_log(s, txn, r.version, PROTO_CH_SET, r.user_id, r.uid_len)))
                break;
            proto_change_t *c = s_changes_push(ch);
            c->kind = PROTO_CH_SET;
            c->rec = r;
            nexp++;
        } else {
            MDB_val rk = {r.uid_len, r.user_id};
            if ((rc = mdb_del(txn, s->rec, &rk, NULL)) != 0)
                break;
            rc = s_del_change(s, txn, r.user_id, r.uid_len, ++seq, ch);
            npur++;
        }
    }
    if (rc)
        goto out;

    /* Prune the oldest changelog entries beyond the bound; the floor says how far back catch-up
     * can still go. Deleting at the head touches sequential pages. */
    MDB_stat st;
    if ((rc = mdb_stat(txn, s->log, &st)) != 0)
        goto out;
    if (st.ms_entries > s->cfg.log_max) {
        size_t extra = st.ms_entries - s->cfg.log_max;
        if (extra > max) {
            extra = max;
            *capped = true;
        }
        if ((rc = mdb_cursor_open(txn, s->log, &cur)) != 0)
            goto out;
        for (size_t i = 0; i < extra; i++) {
            if ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) != 0)
                goto out;
            floor = s_rd_be64(k.mv_data);
            if ((rc = mdb_cursor_del(cur, 0)) != 0)
                goto out;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if ((rc = s_meta_put(txn, s->meta, "log_floor", floor)) != 0)
            goto out;
    }
    if (seq != s->last_seq && (rc = s_meta_put(txn, s->meta, "last_seq", seq)) != 0)
        goto out;
    *actions = (int)(nexp + npur);
out:
    free(items);
    if (cur)
        mdb_cursor_close(cur);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    if (n == 0 && !*capped && floor == s->log_floor) {
        mdb_txn_abort(txn); /* nothing changed: no commit, no fsync */
        return 0;
    }
    rc = mdb_txn_commit(txn);
    if (rc == 0) {
        s->last_seq = seq;
        s->log_floor = floor;
        *expired += nexp;
        *purged += npur;
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
            due = s_rd_be64(k.mv_data);
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
    if (s->cfg.sync_mode != STORE_SYNC_FULL) { /* each due entry makes at most one change */
        int rc = s_reserve(s, max);
        while (rc == MDB_MAP_FULL && s_grow(s, err) == 0)
            rc = s_reserve(s, max);
        if (rc) {
            snprintf(err, STORE_ERR_LEN, "sequence reservation: %s", mdb_strerror(rc));
            *next_due_us = now_us + 1000000u;
            return -1;
        }
    }
    for (;;) {
        int actions = 0;
        bool capped = false;
        changes->n = mark;
        int rc = s_sweep_once(s, now_us, max, changes, expired, purged, &actions, &capped);
        if (rc == 0) {
            *next_due_us = capped ? now_us : s_first_due(s);
            return actions;
        }
        changes->n = mark;
        if (rc == MDB_MAP_FULL && s_grow(s, err) == 0)
            continue;
        if (rc != MDB_MAP_FULL)
            snprintf(err, STORE_ERR_LEN, "sweep: %s", mdb_strerror(rc));
        *next_due_us = now_us + 1000000u;
        return -1;
    }
}

int store_flush(store_t *s, char *err)
{
    int rc = mdb_env_sync(s->env, 1);
    if (rc) {
        snprintf(err, STORE_ERR_LEN, "mdb_env_sync: %s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

int store_reader_check(store_t *s)
{
    int dead = 0;
    if (mdb_reader_check(s->env, &dead) != 0)
        return -1;
    s->readers_cleared += (uint64_t)dead;
    return dead;
}

/* ==== reads ================================================================================== */

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
    s_meta_get(r->txn, s->meta, "last_seq", &r->seq);
    s_meta_get(r->txn, s->meta, "log_floor", &r->floor);
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
    s_be64(after_seq + 1, kb);
    k.mv_size = 8;
    k.mv_data = kb;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (n == max_items || budget-- == 0) {
            *done = false;
            break;
        }
        uint64_t seq = k.mv_size == 8 ? s_rd_be64(k.mv_data) : 0;
        if (seq > r->seq)
            break; /* committed after our snapshot of meta: not part of this answer */
        if (seq && v.mv_size >= 2 && v.mv_size <= 1 + PROTO_USER_ID_MAX) {
            const unsigned char *val = v.mv_data;
            const char *uid = (const char *)val + 1;
            size_t ulen = v.mv_size - 1;
            if (val[0] == PROTO_CH_DEL) {
                proto_change_t *ch = s_changes_push(out);
                memset(ch, 0, sizeof *ch);
                ch->kind = PROTO_CH_DEL;
                proto_record_set_uid(&ch->rec, uid, ulen);
                ch->rec.version = seq;
                n++;
            } else {
                proto_record_t rec;
                if (store_read_get(r, uid, ulen, &rec) == STORE_OK && rec.version == seq) {
                    proto_change_t *ch = s_changes_push(out);
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
            proto_change_t *ch = s_changes_push(out);
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
    info->epoch = s->epoch;
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
