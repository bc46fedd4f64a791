/* store_write.c -- the store's write side (see store.h): group commits of PUT, TOUCH, DEL and LEASE,
 * users and their sessions, gateway leases; and reading a user's sessions. The sweeper, which
 * ends what time ends with the same user load and commit, is store_sweep.c.
 *
 * Every write to a user loads the user whole -- its record and its sessions (at most
 * MAX_SESSIONS, one cursor range) -- lets the model (store_model.c) apply the command and
 * recompute the effective record, and commits in the same transaction: the sessions that changed,
 * the lease index (lses) of the sessions a lease holds, the record with its due entry, and, when a
 * reader can see the difference, a new version in the changelog and a change for the stream (SET,
 * or a compact TOUCH when only liveness fields moved). A write that changes nothing visible gets
 * no version.
 *
 * Leases: a gateway refreshes its lease with one LEASE command per interval; refreshing writes the
 * lease and a due entry, never a record, so a gateway holding 100,000 connections costs one small
 * write per interval. A lease whose expiry passed (or that its gateway ended) lapses: the sweeper
 * ends its sessions, STORE_SWEEP_MAX at a time, each affected user recomputed and published as an
 * ordinary sequenced change. A store that just (re)started gives every lease its ttl first, so
 * gateways that could not refresh while it was down are not ended by the restart itself.
 *
 * Writer thread only (the store-node's); store_read_sessions runs on any thread.
 */
#include "log.h"
#include "store_int.h"
#include "store_model.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ==== records, due entries, the changelog ===================================================== */

int store_w_get_rec(store_t *s, MDB_txn *txn, const char *uid, size_t len, proto_record_t *out, bool *found)
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
    store_be64(due, buf);
    memcpy(buf + 8, uid, len);
    k->mv_size = 8 + len;
    k->mv_data = buf;
}

/* Write a record, and its due entry when the due time moved (an older entry, if any, stays until
 * the sweeper finds it stale: deleting it would dirty a random page per write). */
static int s_store_rec(store_t *s, MDB_txn *txn, const proto_record_t *r, uint64_t old_due)
{
    proto_buf_reset(&s->enc);
    proto_record_encode(&s->enc, r);
    MDB_val k = {r->uid_len, (void *)r->user_id}, v = {s->enc.len, s->enc.data};
    int rc = mdb_put(txn, s->rec, &k, &v, 0);
    uint64_t due = store_due_us(s, r);
    if (rc != 0 || due == old_due)
        return rc;
    unsigned char kb[8 + PROTO_USER_ID_MAX];
    MDB_val dk, empty = {0, NULL};
    s_due_key(due, r->user_id, r->uid_len, kb, &dk);
    return mdb_put(txn, s->due, &dk, &empty, 0);
}

/* Append the change at `seq` to the changelog (sequences only grow: MDB_APPEND). */
static int s_log(store_t *s, MDB_txn *txn, uint64_t seq, uint8_t kind, const char *uid, size_t len)
{
    unsigned char kb[8], vb[1 + PROTO_USER_ID_MAX];
    store_be64(seq, kb);
    vb[0] = kind;
    memcpy(vb + 1, uid, len);
    MDB_val k = {8, kb}, v = {1 + len, vb};
    return mdb_put(txn, s->log, &k, &v, MDB_APPEND);
}

static int s_del_change(store_t *s, MDB_txn *txn, const char *uid, size_t len, uint64_t seq, store_changes_t *ch)
{
    int rc = s_log(s, txn, seq, PROTO_CH_DEL, uid, len);
    if (rc)
        return rc;
    proto_change_t *c = store_changes_push(ch);
    memset(c, 0, sizeof *c);
    c->kind = PROTO_CH_DEL;
    proto_record_set_uid(&c->rec, uid, len);
    c->rec.version = seq;
    return 0;
}

/* ==== leases ================================================================================== */


int store_w_lease_get(store_t *s, MDB_txn *txn, uint64_t id, lease_t *l, bool *found)
{
    unsigned char kb[8];
    store_be64(id, kb);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, s->lease, &k, &v);
    *found = false;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size < 12 || v.mv_size > 12 + PROTO_NODE_ID_MAX)
        return MDB_CORRUPTED;
    const unsigned char *p = v.mv_data;
    l->expires_us = store_rd_be64(p);
    l->ttl_ms = (uint32_t)(store_rd_be64(p + 4) & 0xffffffffu);
    l->node_len = (uint8_t)(v.mv_size - 12);
    memcpy(l->node, p + 12, l->node_len);
    l->node[l->node_len] = '\0';
    *found = true;
    return 0;
}

static int s_lease_put(store_t *s, MDB_txn *txn, uint64_t id, const lease_t *l)
{
    unsigned char kb[8], vb[12 + PROTO_NODE_ID_MAX], t[8];
    store_be64(id, kb);
    store_be64(l->expires_us, vb);
    store_be64(l->ttl_ms, t);
    memcpy(vb + 8, t + 4, 4);
    memcpy(vb + 12, l->node, l->node_len);
    MDB_val k = {8, kb}, v = {12u + l->node_len, vb};
    return mdb_put(txn, s->lease, &k, &v, 0);
}

/* When a lease lapses: its expiry, but never before its ttl has passed since the store opened. */
uint64_t store_w_lease_end(const store_t *s, const lease_t *l)
{
    if (l->expires_us == 0)
        return 0; /* ended by its gateway */
    uint64_t grace = s->opened_us + (uint64_t)l->ttl_ms * 1000u;
    return l->expires_us > grace ? l->expires_us : grace;
}

int store_w_lease_due(store_t *s, MDB_txn *txn, uint64_t id, uint64_t due)
{
    unsigned char kb[17];
    store_be64(due, kb);
    kb[8] = LEASE_DUE_MARK;
    store_be64(id, kb + 9);
    MDB_val k = {17, kb}, empty = {0, NULL};
    return mdb_put(txn, s->due, &k, &empty, 0);
}


bool store_w_lease_live(uint64_t id, void *ctx)
{
    lctx_t *c = ctx;
    lease_t l;
    bool found;
    if (store_w_lease_get(c->s, c->txn, id, &l, &found) != 0)
        return true; /* a read error must not end anyone's sessions: the next look decides */
    return found && c->now < store_w_lease_end(c->s, &l);
}

/* ==== users: load and commit ================================================================== */

static size_t s_ses_key(const char *uid, size_t ulen, const char *sid, size_t slen, unsigned char *out)
{
    memcpy(out, uid, ulen);
    out[ulen] = 0;
    memcpy(out + ulen + 1, sid, slen);
    return ulen + 1 + slen;
}

static size_t s_lses_key(uint64_t lease, const char *uid, size_t ulen, const char *sid, size_t slen, unsigned char *out)
{
    store_be64(lease, out);
    return 8 + s_ses_key(uid, ulen, sid, slen, out + 8);
}

/* A user's sessions: every ses key with the prefix user_id . 0. */
static int s_load_sessions(store_t *s, MDB_txn *txn, store_user_t *u)
{
    unsigned char kb[SES_KEY_MAX];
    size_t plen = s_ses_key(u->rec.user_id, u->rec.uid_len, "", 0, kb);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->ses, &c);
    if (rc)
        return rc;
    MDB_val k = {plen, kb}, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= plen || memcmp(k.mv_data, kb, plen) != 0)
            break;
        if (u->nses == STORE_SESSIONS_CAP)
            break;
        proto_session_t *ss = &u->ses[u->nses];
        if (proto_session_decode(v.mv_data, v.mv_size, ss) < 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        u->ses_state[u->nses] = SM_SES_KEEP;
        u->ses_old_lease[u->nses] = ss->lease_id;
        u->nses++;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_w_load_user(store_t *s, MDB_txn *txn, const char *uid, size_t len, uint64_t now, store_user_t *u)
{
    sm_user_init(u, uid, len);
    int rc = store_w_get_rec(s, txn, uid, len, &u->rec, &u->found);
    if (rc == 0)
        rc = s_load_sessions(s, txn, u);
    if (!u->found)
        proto_record_set_uid(&u->rec, uid, len);
    sm_user_loaded(u, now);
    return rc;
}

static int s_lses_del(store_t *s, MDB_txn *txn, uint64_t lease, const char *uid, size_t ulen, const proto_session_t *ss)
{
    unsigned char kb[8 + SES_KEY_MAX];
    MDB_val k = {s_lses_key(lease, uid, ulen, ss->session_id, ss->sid_len, kb), kb};
    int rc = mdb_del(txn, s->lses, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Write back the sessions the model changed, keeping the lease index in step. */
static int s_store_sessions(store_t *s, MDB_txn *txn, store_user_t *u)
{
    const char *uid = u->rec.user_id;
    size_t ulen = u->rec.uid_len;
    int rc = 0;
    for (uint32_t i = 0; i < u->nses && rc == 0; i++) {
        const proto_session_t *ss = &u->ses[i];
        uint64_t was = u->ses_old_lease[i]; /* UINT64_MAX: never stored */
        unsigned char kb[8 + SES_KEY_MAX];
        if (u->ses_state[i] == SM_SES_DEL) {
            if (was == UINT64_MAX)
                continue;
            MDB_val k = {s_ses_key(uid, ulen, ss->session_id, ss->sid_len, kb), kb};
            if ((rc = mdb_del(txn, s->ses, &k, NULL)) == MDB_NOTFOUND)
                rc = 0;
            if (rc == 0 && was)
                rc = s_lses_del(s, txn, was, uid, ulen, ss);
        } else if (u->ses_state[i] == SM_SES_PUT) {
            proto_buf_reset(&s->enc);
            proto_session_encode(&s->enc, ss);
            MDB_val k = {s_ses_key(uid, ulen, ss->session_id, ss->sid_len, kb), kb}, v = {s->enc.len, s->enc.data};
            rc = mdb_put(txn, s->ses, &k, &v, 0);
            if (rc == 0 && was != ss->lease_id && was && was != UINT64_MAX)
                rc = s_lses_del(s, txn, was, uid, ulen, ss);
            if (rc == 0 && ss->lease_id && was != ss->lease_id) {
                MDB_val lk = {s_lses_key(ss->lease_id, uid, ulen, ss->session_id, ss->sid_len, kb), kb}, e = {0, NULL};
                rc = mdb_put(txn, s->lses, &lk, &e, 0);
            }
        }
    }
    return rc;
}

/* The stream's compact form of a change no reader sees as an event. */
static void s_push_touch(store_changes_t *ch, const proto_record_t *r)
{
    proto_change_t *c = store_changes_push(ch);
    c->kind = PROTO_CH_TOUCH;
    memset(&c->rec, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(&c->rec, r->user_id, r->uid_len);
    proto_record_set_node(&c->rec, r->node_id, r->node_len);
    c->rec.message[0] = c->rec.session_id[0] = c->rec.device[0] = '\0';
    c->rec.version = r->version;
    c->rec.last_seen_us = r->last_seen_us;
    c->rec.expires_at_us = r->expires_at_us;
    c->rec.ttl_s = r->ttl_s;
    c->rec.preferred_until_us = r->preferred_until_us;
    c->rec.message_expires_at_us = r->message_expires_at_us;
    c->rec.vis_last_seen_us = r->vis_last_seen_us;
    c->rec.pub_version = r->pub_version;
}

/* Commit what the model decided for u: sessions, then the record (or its purge), a version and a
 * change when a reader can tell. *kind_out gets enum sm_change (SM_CH_SET for a purge). */
int store_w_commit_user(store_t *s, MDB_txn *txn, store_user_t *u, bool purge, uint64_t *seq, store_changes_t *ch,
                         int *kind_out)
{
    int rc = s_store_sessions(s, txn, u);
    if (rc)
        return rc;
    const proto_record_t *old = u->found ? &u->old : NULL;
    proto_record_t *r = &u->rec;
    if (purge) {
        *kind_out = SM_CH_SET;
        if (!u->found)
            return 0;
        MDB_val rk = {r->uid_len, r->user_id};
        if ((rc = mdb_del(txn, s->rec, &rk, NULL)) != 0)
            return rc;
        return s_del_change(s, txn, r->user_id, r->uid_len, ++*seq, ch);
    }
    int kind = u->force_set ? SM_CH_SET : sm_classify(old, r);
    if (kind == SM_CH_NONE && u->force_touch)
        kind = SM_CH_TOUCH;
    *kind_out = kind;
    if (kind == SM_CH_NONE) {
        r->version = old->version;
        r->pub_version = old->pub_version;
        r->updated_at_us = old->updated_at_us;
        r->vis_last_seen_us = old->vis_last_seen_us;
    } else {
        sm_stamp(u->found ? &u->old_view : NULL, r, ++*seq, u->event_us, u->pref_written);
    }
    if ((rc = s_store_rec(s, txn, r, old ? store_due_us(s, old) : 0)) != 0)
        return rc;
    if (kind == SM_CH_NONE)
        return 0;
    if ((rc = s_log(s, txn, r->version, kind == SM_CH_SET ? PROTO_CH_SET : PROTO_CH_TOUCH, r->user_id, r->uid_len)))
        return rc;
    if (kind == SM_CH_SET) {
        proto_change_t *c = store_changes_push(ch);
        c->kind = PROTO_CH_SET;
        c->rec = *r;
    } else {
        s_push_touch(ch, r);
    }
    return 0;
}

sm_config_t store_w_model_cfg(const store_t *s)
{
    sm_config_t c = {.max_sessions = s->cfg.max_sessions,
                     .retention_us = s->cfg.retention_us,
                     .default_ttl_s = (uint32_t)(s->cfg.default_ttl_s ? s->cfg.default_ttl_s : 3600)};
    return c;
}

/* ==== commands ================================================================================= */

/* PUT or TOUCH of one user. A refused session command (NO_SESSION) changes nothing: *status says
 * so and *out is the record as it stands. */
static int s_apply_user_cmd(store_t *s, MDB_txn *txn, uint8_t type, const proto_record_t *in, uint64_t now,
                            uint64_t *seq, proto_record_t *out, uint8_t *status, store_changes_t *ch)
{
    store_user_t *u = s->user;
    int rc = store_w_load_user(s, txn, in->user_id, in->uid_len, now, u);
    if (rc)
        return rc;
    sm_config_t cfg = store_w_model_cfg(s);
    bool evicted = false;
    lctx_t lc = {s, txn, now};
    if (in->lease_id && !store_w_lease_live(in->lease_id, &lc)) {
        /* A connection's session under a lease the store does not hold (never refreshed, or lapsed):
         * it would end at once. The gateway refreshes its lease before it opens sessions. */
        *status = PROTO_NOTFOUND;
        *out = u->old;
        return 0;
    }
    if (type == PROTO_PUT && !in->sid_len && (in->cflags & PROTO_CMD_F_CLEAR) && !u->found) {
        *status = PROTO_NOTFOUND; /* nothing to clear: no record is made for it */
        *out = u->old;
        return 0;
    }
    int res;
    if (type == PROTO_PUT)
        res = in->sid_len ? sm_put_session(u, in, now, &cfg, &evicted) : (sm_put_preferred(u, in, now), SM_OK);
    else
        res = sm_touch(u, in, now, &cfg, &evicted);
    if (res != SM_OK) {
        if (res == SM_NO_ROOM)
            LOG_RATELIMITED(LOG_WARN, 10000, "user %.*s has %u stored sessions, more than MAX_SESSIONS allows: a new "
                            "session is refused until some end", (int)in->uid_len, in->user_id, STORE_SESSIONS_CAP);
        *status = res == SM_NO_ROOM ? PROTO_EOVERLOAD : PROTO_NOTFOUND;
        *out = u->old;
        return 0;
    }
    bool purge = sm_recompute(u, now, &cfg, store_w_lease_live, &lc);
    int kind;
    if ((rc = store_w_commit_user(s, txn, u, purge, seq, ch, &kind)) != 0)
        return rc;
    *out = u->rec;
    return 0;
}

/* Erase a user (privacy): the record and every session. */
static int s_apply_del(store_t *s, MDB_txn *txn, const proto_record_t *in, uint64_t now, uint64_t *seq,
                       uint8_t *status, uint64_t *as_of, store_changes_t *ch)
{
    store_user_t *u = s->user;
    int rc = store_w_load_user(s, txn, in->user_id, in->uid_len, now, u);
    if (rc)
        return rc;
    if (!u->found) {
        *status = PROTO_NOTFOUND;
        *as_of = *seq;
        return 0;
    }
    for (uint32_t i = 0; i < u->nses; i++)
        u->ses_state[i] = SM_SES_DEL;
    if ((rc = s_store_sessions(s, txn, u)) != 0)
        return rc;
    MDB_val k = {in->uid_len, (void *)in->user_id};
    if ((rc = mdb_del(txn, s->rec, &k, NULL)) != 0)
        return rc;
    *as_of = ++*seq;
    *status = PROTO_OK;
    return s_del_change(s, txn, in->user_id, in->uid_len, *as_of, ch);
}

/* Refresh (or create) a lease, or end it. A lapsed lease is not revived: its gateway learns it
 * (F_LAPSED), takes a new lease and re-opens its connections' sessions under it. */
static int s_apply_lease(store_t *s, MDB_txn *txn, store_op_t *op, uint64_t now)
{
    lease_t l;
    bool found;
    int rc = store_w_lease_get(s, txn, op->lease_id, &l, &found);
    if (rc)
        return rc;
    op->flags = 0;
    bool live = found && now < store_w_lease_end(s, &l);
    if (op->lease_op == PROTO_LEASE_END) {
        if (!found) {
            op->flags = PROTO_REPLY_F_LAPSED;
            return 0;
        }
        l.expires_us = 0;
        if ((rc = s_lease_put(s, txn, op->lease_id, &l)) != 0)
            return rc;
        return store_w_lease_due(s, txn, op->lease_id, now);
    }
    if (found && !live) {
        op->flags = PROTO_REPLY_F_LAPSED;
        return 0;
    }
    if (!found)
        op->flags = PROTO_REPLY_F_LAPSED; /* new (or ended and gone): nothing of it survives */
    l.expires_us = now + (uint64_t)op->lease_ttl_ms * 1000u;
    l.ttl_ms = op->lease_ttl_ms;
    l.node_len = (uint8_t)strnlen(op->lease_node, PROTO_NODE_ID_MAX);
    memcpy(l.node, op->lease_node, l.node_len);
    if ((rc = s_lease_put(s, txn, op->lease_id, &l)) != 0)
        return rc;
    return store_w_lease_due(s, txn, op->lease_id, l.expires_us);
}

int store_w_apply_once(store_t *s, store_op_t *ops, size_t nops, uint64_t now, store_changes_t *ch, uint64_t index)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint64_t seq = s->last_seq;
    bool dedup = index > 0;
    if (dedup)
        rc = store_r_dedup_prune(s, txn, now); /* first: an id past the window is a new command */
    for (size_t i = 0; i < nops && rc == 0; i++) {
        store_op_t *op = &ops[i];
        op->status = PROTO_OK;
        op->deduped = false;
        if (dedup && op->has_cmd_id) {
            int found = store_r_dedup_find(s, txn, op);
            if (found < 0) {
                rc = -found;
                break;
            }
            if (found)
                continue; /* applied before: answered from the table */
        }
        switch (op->type) {
        case PROTO_PUT:
        case PROTO_TOUCH:
            for (uint32_t j = 0; j < op->n && rc == 0; j++)
                rc = s_apply_user_cmd(s, txn, op->type, &op->in[j], now, &seq, &op->out[j], &op->status, ch);
            op->as_of = seq;
            break;
        case PROTO_DEL:
            rc = s_apply_del(s, txn, &op->in[0], now, &seq, &op->status, &op->as_of, ch);
            break;
        case PROTO_LEASE:
            rc = s_apply_lease(s, txn, op, now);
            op->as_of = seq;
            break;
        default:
            op->status = PROTO_EBADREQ;
            break;
        }
        if (rc == 0 && dedup && op->has_cmd_id)
            rc = store_r_dedup_put(s, txn, op, now);
    }
    if (rc == 0 && seq != s->last_seq)
        rc = store_meta_put(txn, s->meta, "last_seq", seq);
    if (rc == 0 && index)
        rc = store_meta_put(txn, s->meta, "raft_applied", index);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn); /* frees txn even on failure */
    if (rc == 0) {
        s->last_seq = seq;
        if (index)
            s->applied = index;
    }
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
    if ((rc = store_meta_put(txn, s->meta, "seq_reserved", upto)) != 0) {
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

int store_w_reserve_or_grow(store_t *s, uint64_t count, char *err)
{
    int rc = s_reserve(s, count);
    while (rc == MDB_MAP_FULL && store_grow(s, err) == 0)
        rc = s_reserve(s, count);
    if (rc)
        snprintf(err, STORE_ERR_LEN, "sequence reservation: %s", mdb_strerror(rc));
    return rc ? -1 : 0;
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
        if (store_w_reserve_or_grow(s, count, err) < 0) {
            for (size_t i = 0; i < nops; i++)
                ops[i].status = PROTO_EINTERNAL;
            return -1;
        }
    }
    if (toggled)
        mdb_env_set_flags(s->env, MDB_NOSYNC, 1); /* the writer thread: no write txn is open */
    for (;;) {
        changes->n = mark;
        int rc = store_w_apply_once(s, ops, nops, now_us, changes, 0);
        if (rc == 0) {
            if (toggled)
                mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
            return 0;
        }
        changes->n = mark;
        if (rc == MDB_MAP_FULL) {
            if (store_grow(s, err) == 0)
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

int store_flush(store_t *s, char *err)
{
    pthread_rwlock_rdlock(&s->resize_lock); /* replicated: store_replace may swap the environment */
    int rc = mdb_env_sync(s->env, 1);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc) {
        snprintf(err, STORE_ERR_LEN, "mdb_env_sync: %s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

int store_reader_check(store_t *s)
{
    int dead = 0;
    pthread_rwlock_rdlock(&s->resize_lock);
    int rc = mdb_reader_check(s->env, &dead);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc != 0)
        return -1;
    s->readers_cleared += (uint64_t)dead;
    return dead;
}

/* ==== reading a user's sessions =============================================================== */

int store_read_sessions(store_read_t *r, const char *uid, size_t len, uint64_t now, proto_session_t *out, uint32_t max,
                        uint32_t *n)
{
    store_t *s = r->s;
    unsigned char kb[SES_KEY_MAX];
    size_t plen = s_ses_key(uid, len, "", 0, kb);
    MDB_cursor *c;
    *n = 0;
    if (mdb_cursor_open(r->txn, s->ses, &c) != 0)
        return STORE_ERROR;
    MDB_val k = {plen, kb}, v;
    int rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && *n < max; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= plen || memcmp(k.mv_data, kb, plen) != 0)
            break;
        proto_session_t *ss = &out[*n];
        if (proto_session_decode(v.mv_data, v.mv_size, ss) < 0)
            continue;
        if (ss->lease_id) {
            lease_t l;
            bool found;
            if (store_w_lease_get(s, r->txn, ss->lease_id, &l, &found) != 0 || !found || store_w_lease_end(s, &l) <= now)
                continue;
            ss->expires_at_us = store_w_lease_end(s, &l);
        } else if (ss->expires_at_us <= now) {
            continue;
        }
        (*n)++;
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : STORE_ERROR;
}
