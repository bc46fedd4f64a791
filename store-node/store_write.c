/* store_write.c -- the store's write side (see store.h): group commits of PUT, TOUCH, DEL and LEASE,
 * users and their sessions, gateway leases, the sweeper; and reading a user's sessions.
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
#include "store_int.h"
#include "store_model.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE_DUE_MARK 0x01 /* due-key byte 8 of a lease entry: never a user-id byte */
#define SES_KEY_MAX (PROTO_USER_ID_MAX + 1 + PROTO_SESSION_ID_MAX)

/* ==== records, due entries, the changelog ===================================================== */

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

typedef struct lease {
    uint64_t expires_us; /* 0: ended by its gateway */
    uint32_t ttl_ms;
    uint8_t node_len;
    char node[PROTO_NODE_ID_MAX + 1];
} lease_t;

static int s_lease_get(store_t *s, MDB_txn *txn, uint64_t id, lease_t *l, bool *found)
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
static uint64_t s_lease_end(const store_t *s, const lease_t *l)
{
    if (l->expires_us == 0)
        return 0; /* ended by its gateway */
    uint64_t grace = s->opened_us + (uint64_t)l->ttl_ms * 1000u;
    return l->expires_us > grace ? l->expires_us : grace;
}

static int s_lease_due(store_t *s, MDB_txn *txn, uint64_t id, uint64_t due)
{
    unsigned char kb[17];
    store_be64(due, kb);
    kb[8] = LEASE_DUE_MARK;
    store_be64(id, kb + 9);
    MDB_val k = {17, kb}, empty = {0, NULL};
    return mdb_put(txn, s->due, &k, &empty, 0);
}

typedef struct lctx {
    store_t *s;
    MDB_txn *txn;
    uint64_t now;
} lctx_t;

static bool s_lease_live(uint64_t id, void *ctx)
{
    lctx_t *c = ctx;
    lease_t l;
    bool found;
    if (s_lease_get(c->s, c->txn, id, &l, &found) != 0)
        return true; /* a read error must not end anyone's sessions: the next look decides */
    return found && c->now < s_lease_end(c->s, &l);
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

static int s_load_user(store_t *s, MDB_txn *txn, const char *uid, size_t len, uint64_t now, store_user_t *u)
{
    sm_user_init(u, uid, len);
    int rc = s_get_rec(s, txn, uid, len, &u->rec, &u->found);
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
static int s_commit_user(store_t *s, MDB_txn *txn, store_user_t *u, bool purge, uint64_t *seq, store_changes_t *ch,
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

static sm_config_t s_model_cfg(const store_t *s)
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
    int rc = s_load_user(s, txn, in->user_id, in->uid_len, now, u);
    if (rc)
        return rc;
    sm_config_t cfg = s_model_cfg(s);
    bool evicted = false;
    lctx_t lc = {s, txn, now};
    if (in->lease_id && !s_lease_live(in->lease_id, &lc)) {
        /* A connection's session under a lease the store does not hold (never refreshed, or lapsed):
         * it would end at once. The gateway refreshes its lease before it opens sessions. */
        *status = PROTO_NOTFOUND;
        *out = u->old;
        return 0;
    }
    int res;
    if (type == PROTO_PUT)
        res = in->sid_len ? sm_put_session(u, in, now, &cfg, &evicted) : (sm_put_preferred(u, in, now), SM_OK);
    else
        res = sm_touch(u, in, now, &cfg, &evicted);
    if (res != SM_OK) {
        *status = PROTO_NOTFOUND;
        *out = u->old;
        return 0;
    }
    bool purge = sm_recompute(u, now, &cfg, s_lease_live, &lc);
    int kind;
    if ((rc = s_commit_user(s, txn, u, purge, seq, ch, &kind)) != 0)
        return rc;
    *out = u->rec;
    return 0;
}

/* Erase a user (privacy): the record and every session. */
static int s_apply_del(store_t *s, MDB_txn *txn, const proto_record_t *in, uint64_t now, uint64_t *seq,
                       uint8_t *status, uint64_t *as_of, store_changes_t *ch)
{
    store_user_t *u = s->user;
    int rc = s_load_user(s, txn, in->user_id, in->uid_len, now, u);
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
    int rc = s_lease_get(s, txn, op->lease_id, &l, &found);
    if (rc)
        return rc;
    op->flags = 0;
    bool live = found && now < s_lease_end(s, &l);
    if (op->lease_op == PROTO_LEASE_END) {
        if (!found) {
            op->flags = PROTO_REPLY_F_LAPSED;
            return 0;
        }
        l.expires_us = 0;
        if ((rc = s_lease_put(s, txn, op->lease_id, &l)) != 0)
            return rc;
        return s_lease_due(s, txn, op->lease_id, now);
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
    return s_lease_due(s, txn, op->lease_id, l.expires_us);
}

/* ==== command ids (replicated mode) ============================================================ */

#define DEDUP_VAL_LEN 21   /* status . BE32(flags) . BE64(as_of) . BE64(at_us) */
#define DEDUP_PRUNE_MAX 256 /* ids dropped per transaction at most (deterministic: by entry time) */

/* A command already applied: its first answer, and the records as they are now. */
static int s_dedup_hit(store_t *s, MDB_txn *txn, store_op_t *op, const MDB_val *v)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size != DEDUP_VAL_LEN)
        return MDB_CORRUPTED;
    op->deduped = true;
    op->status = p[0];
    op->flags = (uint32_t)(store_rd_be64(p + 1) >> 32);
    op->as_of = store_rd_be64(p + 5);
    if (op->type != PROTO_PUT && op->type != PROTO_TOUCH)
        return 0;
    for (uint32_t j = 0; j < op->n; j++) {
        bool found;
        int rc = s_get_rec(s, txn, op->in[j].user_id, op->in[j].uid_len, &op->out[j], &found);
        if (rc)
            return rc;
        if (!found && op->status == PROTO_OK)
            op->status = PROTO_NOTFOUND; /* written, then deleted before this retry */
    }
    return 0;
}

static int s_dedup_put(store_t *s, MDB_txn *txn, const store_op_t *op, uint64_t now)
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

/* Forget ids older than the window (by the entry's time: the same on every member). */
static int s_dedup_prune(store_t *s, MDB_txn *txn, uint64_t now)
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

/* ==== group commit ============================================================================= */

/* One attempt at a group: returns an LMDB code (0 = committed). With index > 0 (replicated mode)
 * command ids are honoured and the index is recorded in the same transaction. */
static int s_apply_once(store_t *s, store_op_t *ops, size_t nops, uint64_t now, store_changes_t *ch, uint64_t index)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint64_t seq = s->last_seq;
    bool dedup = index > 0;
    if (dedup)
        rc = s_dedup_prune(s, txn, now); /* first: an id past the window is a new command */
    for (size_t i = 0; i < nops && rc == 0; i++) {
        store_op_t *op = &ops[i];
        op->status = PROTO_OK;
        op->deduped = false;
        if (dedup && op->has_cmd_id) {
            MDB_val k = {PROTO_CMD_ID_LEN, op->cmd_id}, v;
            rc = mdb_get(txn, s->dedup, &k, &v);
            if (rc == 0) {
                rc = s_dedup_hit(s, txn, op, &v);
                continue;
            }
            if (rc != MDB_NOTFOUND)
                break;
            rc = 0;
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
            rc = s_dedup_put(s, txn, op, now);
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

static int s_reserve_or_grow(store_t *s, uint64_t count, char *err)
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
        if (s_reserve_or_grow(s, count, err) < 0) {
            for (size_t i = 0; i < nops; i++)
                ops[i].status = PROTO_EINTERNAL;
            return -1;
        }
    }
    if (toggled)
        mdb_env_set_flags(s->env, MDB_NOSYNC, 1); /* the writer thread: no write txn is open */
    for (;;) {
        changes->n = mark;
        int rc = s_apply_once(s, ops, nops, now_us, changes, 0);
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
    int rc = s_load_user(s, w->txn, uid, len, w->now, u);
    if (rc || !u->found)
        return rc;
    sm_config_t cfg = s_model_cfg(s);
    lctx_t lc = {s, w->txn, w->now};
    bool purge = sm_recompute(u, w->now, &cfg, s_lease_live, &lc);
    bool was_live = u->old.status != PRESENCE_OFFLINE;
    int kind;
    if ((rc = s_commit_user(s, w->txn, u, purge, &w->seq, w->ch, &kind)) != 0)
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
        if ((rc = s_load_user(s, w->txn, uid, ulen, w->now, u)) != 0)
            break;
        if (!u->found || sm_end_lease_sessions(u, id, 0, NULL, 0, w->now) == 0) {
            /* An index entry its session no longer has (moved or ended): drop it. */
            MDB_val dk = {klen[i], keys[i]};
            if ((rc = mdb_del(w->txn, s->lses, &dk, NULL)) == MDB_NOTFOUND)
                rc = 0;
            continue;
        }
        sm_config_t cfg = s_model_cfg(s);
        lctx_t lc = {s, w->txn, w->now};
        bool purge = sm_recompute(u, w->now, &cfg, s_lease_live, &lc);
        int kind;
        rc = s_commit_user(s, w->txn, u, purge, &w->seq, w->ch, &kind);
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
        int rc = s_lease_get(s, w->txn, id, &l, &found);
        if (rc)
            return rc;
        if (!found)
            return mdb_del(w->txn, s->due, &dk, NULL); /* gone */
        uint64_t end = s_lease_end(s, &l);
        if (end > w->now) {
            /* Refreshed since (its newer entry is there), or given its ttl after a restart: look
             * again when it can lapse. */
            if ((rc = mdb_del(w->txn, s->due, &dk, NULL)) != 0)
                return rc;
            return s_lease_due(s, w->txn, id, end);
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
    if ((rc = s_get_rec(s, w->txn, (const char *)it->key, it->len, &r, &found)) != 0)
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

/* One sweep transaction. With index > 0 (replicated mode) it always commits, recording the index. */
static int s_sweep_once(store_t *s, uint64_t now, uint32_t max, store_changes_t *ch, uint64_t *expired,
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
    if (s->cfg.sync_mode != STORE_SYNC_FULL && s_reserve_or_grow(s, max, err) < 0) {
        *next_due_us = now_us + 1000000u;
        return -1;
    }
    for (;;) {
        int actions = 0;
        bool capped = false;
        changes->n = mark;
        int rc = s_sweep_once(s, now_us, max, changes, expired, purged, &actions, &capped, 0);
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
            if (s_lease_get(s, r->txn, ss->lease_id, &l, &found) != 0 || !found || s_lease_end(s, &l) <= now)
                continue;
            ss->expires_at_us = s_lease_end(s, &l);
        } else if (ss->expires_at_us <= now) {
            continue;
        }
        (*n)++;
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : STORE_ERROR;
}

/* ==== replicated mode: applying committed log entries ========================================= */

/* The entry at `index` could not be applied: name it. Never retried here (map growth is off in
 * replicated mode, a split would apply half an entry): the member stops and replays. */
static int s_fatal(store_t *s, const char *what, uint64_t index, int rc, char *err)
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
    int rc = s_apply_once(s, ops, nops, now_us, changes, index);
    if (rc == 0)
        return 0;
    changes->n = mark;
    for (size_t i = 0; i < nops; i++)
        ops[i].status = PROTO_EINTERNAL;
    return s_fatal(s, "apply", index, rc, err);
}

int store_sweep_at(store_t *s, uint64_t index, uint64_t now_us, uint32_t max, store_changes_t *changes,
                   uint64_t *expired, uint64_t *purged, char *err)
{
    size_t mark = changes->n;
    int actions = 0;
    bool capped = false;
    int rc = s_sweep_once(s, now_us, max ? max : 1, changes, expired, purged, &actions, &capped, index);
    if (rc == 0)
        return actions;
    changes->n = mark;
    return s_fatal(s, "sweep", index, rc, err);
}

/* A transaction that writes a few meta values and the index. */
static int s_meta_at(store_t *s, uint64_t index, const char *const *names, const uint64_t *vals, int n)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    for (int i = 0; i < n && rc == 0; i++)
        rc = store_meta_put(txn, s->meta, names[i], vals[i]);
    if (rc == 0)
        rc = store_meta_put(txn, s->meta, "raft_applied", index);
    if (rc) {
        if (txn)
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
    uint64_t cur = atomic_load(&s->epoch);
    bool set = cur == 0 && epoch != 0;
    const char *names[2] = {"lease_from", "epoch"};
    uint64_t vals[2] = {now_us, epoch};
    int rc = s_meta_at(s, index, names, vals, set ? 2 : 1);
    if (rc)
        return s_fatal(s, "lead", index, rc, err);
    s->opened_us = now_us;
    if (set)
        atomic_store(&s->epoch, epoch);
    return 0;
}

int store_skip_at(store_t *s, uint64_t index, char *err)
{
    int rc = s_meta_at(s, index, NULL, NULL, 0);
    return rc ? s_fatal(s, "skip", index, rc, err) : 0;
}

uint64_t store_next_due(store_t *s)
{
    char err[STORE_ERR_LEN];
    store_read_t *r = store_read_begin(s, err);
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
