/* store_model.c -- the presence model (see store_model.h): preferred status, sessions, message
 * expiry, invisible mode, and which changes a reader sees.
 *
 * The record stores the effective result; the preferred status is recovered from it (a record
 * whose source is "preferred" has status = the preferred status and preferred_until = its end),
 * so nothing but the record and the sessions is stored. Sessions held by a gateway lease have no
 * deadline of their own: their expires_at is a horizon (ttl ahead) the model moves on while the
 * lease lives, so the record's expires_at stays an honest upper bound without a write per lease
 * refresh (one write per session per ttl/2 instead).
 *
 * Pure functions over caller-owned data: no clock (every function takes `now`), no I/O.
 */
#include "store_model.h"
#include "util.h"

#include <string.h>

int sm_status_rank(int status)
{
    switch (status) {
    case PRESENCE_BUSY: return 3;
    case PRESENCE_ONLINE: return 2;
    case PRESENCE_AWAY: return 1;
    default: return 0;
    }
}

void sm_user_init(store_user_t *u, const char *uid, size_t len)
{
    memset(&u->rec, 0, offsetof(proto_record_t, user_id));
    u->rec.node_id[0] = u->rec.message[0] = u->rec.session_id[0] = u->rec.device[0] = '\0';
    proto_record_set_uid(&u->rec, uid, len);
    u->rec.status = PRESENCE_OFFLINE;
    u->found = false;
    u->nses = 0;
}

void sm_user_loaded(store_user_t *u, uint64_t now)
{
    const proto_record_t *r = &u->rec;
    u->old = u->old_view = u->rec;
    if (u->found && r->status != PRESENCE_OFFLINE && r->expires_at_us <= now) {
        /* Past its expiry, not yet swept: readers already see it offline without its message
         * since expires_at (the gateway renders it so); updated_at compares against that. */
        u->old_view.status = PRESENCE_OFFLINE;
        proto_record_set_msg(&u->old_view, "", 0);
        u->old_view.updated_at_us = r->expires_at_us;
    }
    u->force_set = u->force_touch = false;
    u->pref_status = -1;
    u->pref_until = 0;
    u->pref_ttl = r->ttl_s;
    u->pref_node_len = r->node_len;
    memcpy(u->pref_node, r->node_id, r->node_len + 1u);
    if (u->found && r->source == PRESENCE_SRC_PREFERRED && r->preferred_until_us) {
        u->pref_status = r->status;
        u->pref_until = r->preferred_until_us;
    }
    u->old_status = u->found ? r->status : PRESENCE_OFFLINE;
    u->pref_written = false;
    u->event_us = 0;
}

/* ==== sessions ================================================================================ */

static int s_find(const store_user_t *u, const char *sid, size_t len)
{
    for (uint32_t i = 0; i < u->nses; i++)
        if (u->ses_state[i] != SM_SES_DEL && u->ses[i].sid_len == len && memcmp(u->ses[i].session_id, sid, len) == 0)
            return (int)i;
    return -1;
}

static uint32_t s_live_count(const store_user_t *u)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < u->nses; i++)
        n += u->ses_state[i] != SM_SES_DEL;
    return n;
}

static void s_end(store_user_t *u, uint32_t i)
{
    u->ses_state[i] = SM_SES_DEL;
}

static void s_set_str(char *dst, uint8_t *dlen, const char *src, size_t len)
{
    memcpy(dst, src, len);
    dst[len] = '\0';
    *dlen = (uint8_t)len;
}

/* Room for one more session: end the one that would expire first (a lease's session expires at its
 * horizon, later than any REST session's deadline in practice). Returns the free index, or
 * UINT32_MAX when every slot holds a stored session: the evicted one's slot cannot be reused, since
 * the commit must still delete its row. With max_sessions < STORE_SESSIONS_CAP a commit leaves at
 * most max_sessions rows, so one command never finds the array full -- only a user stored with
 * STORE_SESSIONS_CAP rows (a database of an older build, which allowed MAX_SESSIONS=256) can. */
static uint32_t s_slot(store_user_t *u, const sm_config_t *cfg, bool *evicted)
{
    uint32_t max = cfg->max_sessions ? cfg->max_sessions : 1;
    if (max > STORE_SESSIONS_MAX)
        max = STORE_SESSIONS_MAX;
    if (s_live_count(u) >= max) {
        int first = -1;
        for (uint32_t i = 0; i < u->nses; i++)
            if (u->ses_state[i] != SM_SES_DEL && (first < 0 || u->ses[i].expires_at_us < u->ses[first].expires_at_us))
                first = (int)i;
        if (first >= 0) {
            s_end(u, (uint32_t)first);
            *evicted = true;
        }
    }
    /* Reuse a slot ended in this transaction only if it was never stored (nothing to delete). */
    if (u->nses < STORE_SESSIONS_CAP)
        return u->nses++;
    for (uint32_t i = 0; i < u->nses; i++)
        if (u->ses_state[i] == SM_SES_DEL && u->ses_old_lease[i] == UINT64_MAX)
            return i;
    return UINT32_MAX;
}

/* Open session in->session_id. Returns SM_OK, or SM_NO_ROOM (nothing changed but the eviction,
 * which the caller's refusal discards: the user is not committed). */
static int s_open(store_user_t *u, const proto_record_t *in, int status, uint32_t ttl, uint64_t now,
                  const sm_config_t *cfg, bool *evicted)
{
    uint32_t i = s_slot(u, cfg, evicted);
    if (i == UINT32_MAX)
        return SM_NO_ROOM;
    proto_session_t *ss = &u->ses[i];
    memset(ss, 0, offsetof(proto_session_t, session_id));
    s_set_str(ss->session_id, &ss->sid_len, in->session_id, in->sid_len);
    s_set_str(ss->device, &ss->device_len, in->device, in->device_len);
    s_set_str(ss->node_id, &ss->node_len, in->node_id, in->node_len);
    ss->status = ss->manual_status = (uint8_t)status;
    ss->connected_at_us = ss->last_seen_us = now;
    ss->ttl_s = ttl;
    ss->expires_at_us = now + (uint64_t)ttl * 1000000u;
    ss->lease_id = in->lease_id;
    ss->conn_id = in->conn_id;
    u->ses_state[i] = SM_SES_PUT;
    u->ses_old_lease[i] = UINT64_MAX; /* never stored */
    return SM_OK;
}

static void s_set_message(store_user_t *u, const proto_record_t *in, uint64_t now, bool always)
{
    if (!always && !(in->cflags & PROTO_CMD_F_MSG))
        return;
    proto_record_set_msg(&u->rec, in->message, in->msg_len);
    u->rec.message_expires_at_us = in->msg_len && in->message_ttl_s ? now + (uint64_t)in->message_ttl_s * 1000000u : 0;
    if (in->message_ttl_s)
        u->rec.rflags |= PROTO_REC_F_RT;
    u->pref_written = true;
}

void sm_put_preferred(store_user_t *u, const proto_record_t *in, uint64_t now)
{
    if (in->cflags & PROTO_CMD_F_CLEAR) {
        /* The user's own choice ends: the sessions decide again (invisible mode off). */
        u->pref_status = -1;
        u->pref_until = 0;
        u->rec.last_seen_us = now;
        u->pref_written = true;
        u->force_set = true;
        return;
    }
    u->pref_status = in->status;
    u->pref_until = now + (uint64_t)in->ttl_s * 1000000u;
    u->pref_ttl = in->ttl_s;
    s_set_str(u->pref_node, &u->pref_node_len, in->node_id, in->node_len);
    s_set_message(u, in, now, true); /* a preferred write sets the message, as every PUT always did */
    u->rec.last_seen_us = now;
    u->pref_written = true;
    u->force_set = true; /* every PUT is an event, as it always was */
}

int sm_put_session(store_user_t *u, const proto_record_t *in, uint64_t now, const sm_config_t *cfg, bool *evicted)
{
    int i = s_find(u, in->session_id, in->sid_len);
    bool conn = in->lease_id != 0;
    proto_session_t *ss = i >= 0 ? &u->ses[i] : NULL;
    bool held_here = ss && ss->lease_id == in->lease_id && ss->conn_id == in->conn_id;
    if (in->status == PRESENCE_OFFLINE) {
        /* A connection's end (after its grace) only ends the session it still holds: one resumed
         * by another connection meanwhile stays. A REST client or an admin ends any session. */
        if (!ss || (conn && !held_here))
            return SM_NO_SESSION;
        s_end(u, (uint32_t)i);
    } else if (ss) {
        if (conn && !held_here) {
            if (!(in->cflags & PROTO_CMD_F_OPEN))
                return SM_NO_SESSION;
            ss->lease_id = in->lease_id; /* a resume: the session moves to this connection */
            ss->conn_id = in->conn_id;
        }
        ss->status = in->status;
        if (!(in->cflags & PROTO_CMD_F_IDLE))
            ss->manual_status = in->status;
        if (in->device_len)
            s_set_str(ss->device, &ss->device_len, in->device, in->device_len);
        s_set_str(ss->node_id, &ss->node_len, in->node_id, in->node_len);
        ss->last_seen_us = now;
        if (!ss->lease_id) {
            ss->ttl_s = in->ttl_s;
            ss->expires_at_us = now + (uint64_t)in->ttl_s * 1000000u;
        }
        u->ses_state[i] = SM_SES_PUT;
    } else {
        if (conn && !(in->cflags & PROTO_CMD_F_OPEN))
            return SM_NO_SESSION;
        int rc = s_open(u, in, in->status, in->ttl_s ? in->ttl_s : cfg->default_ttl_s, now, cfg, evicted);
        if (rc != SM_OK)
            return rc;
    }
    s_set_message(u, in, now, false);
    u->rec.rflags |= PROTO_REC_F_RT;
    if (now > u->rec.last_seen_us)
        u->rec.last_seen_us = now;
    return SM_OK;
}

static bool s_session_live(const store_user_t *u, uint32_t i, uint64_t now)
{
    return u->ses_state[i] != SM_SES_DEL && (u->ses[i].lease_id || u->ses[i].expires_at_us > now);
}

int sm_touch(store_user_t *u, const proto_record_t *in, uint64_t now, const sm_config_t *cfg, bool *evicted)
{
    if (in->sid_len) {
        int i = s_find(u, in->session_id, in->sid_len);
        if (i < 0) {
            int rc = s_open(u, in, PRESENCE_ONLINE, in->ttl_s ? in->ttl_s : cfg->default_ttl_s, now, cfg, evicted);
            if (rc != SM_OK)
                return rc;
        } else {
            proto_session_t *ss = &u->ses[i];
            ss->last_seen_us = now;
            if (in->device_len)
                s_set_str(ss->device, &ss->device_len, in->device, in->device_len);
            if (!ss->lease_id) {
                if (in->ttl_s)
                    ss->ttl_s = in->ttl_s;
                ss->expires_at_us = now + (uint64_t)ss->ttl_s * 1000000u;
                s_set_str(ss->node_id, &ss->node_len, in->node_id, in->node_len);
            }
            u->ses_state[i] = SM_SES_PUT;
        }
        u->rec.rflags |= PROTO_REC_F_RT;
        u->rec.last_seen_us = now;
        return SM_OK;
    }
    /* Without a session: what a heartbeat meant before sessions existed. */
    bool pref_live = u->pref_status >= 0 && u->pref_until > now;
    bool sessions_live = false;
    for (uint32_t i = 0; i < u->nses && !sessions_live; i++)
        sessions_live = s_session_live(u, i, now);
    if (pref_live && u->pref_status != PRESENCE_OFFLINE) {
        uint32_t ttl = in->ttl_s ? in->ttl_s : u->pref_ttl;
        u->pref_until = now + (uint64_t)ttl * 1000000u;
        u->pref_ttl = ttl;
        s_set_str(u->pref_node, &u->pref_node_len, in->node_id, in->node_len);
    } else if (!pref_live && sessions_live) {
        /* The sessions keep the user present: a heartbeat adds no preferred status over them. */
    } else {
        /* Offline, expired or new: online again; the old message belonged to the old status. */
        uint32_t ttl = in->ttl_s ? in->ttl_s : u->rec.ttl_s ? u->rec.ttl_s : cfg->default_ttl_s;
        u->pref_status = PRESENCE_ONLINE;
        u->pref_until = now + (uint64_t)ttl * 1000000u;
        u->pref_ttl = ttl;
        s_set_str(u->pref_node, &u->pref_node_len, in->node_id, in->node_len);
        proto_record_set_msg(&u->rec, "", 0);
        u->rec.message_expires_at_us = 0;
    }
    u->pref_written = true;
    u->force_touch = true; /* every heartbeat is a new version, as it always was */
    u->rec.last_seen_us = now;
    return SM_OK;
}

uint32_t sm_end_lease_sessions(store_user_t *u, uint64_t lease_id, uint64_t conn_id, const char *sid, size_t sid_len,
                               uint64_t now)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < u->nses; i++) {
        proto_session_t *ss = &u->ses[i];
        if (u->ses_state[i] == SM_SES_DEL || ss->lease_id != lease_id)
            continue;
        if (conn_id && (ss->conn_id != conn_id || ss->sid_len != sid_len || memcmp(ss->session_id, sid, sid_len)))
            continue;
        s_end(u, i);
        n++;
    }
    if (n && now > u->rec.last_seen_us)
        u->rec.last_seen_us = now;
    return n;
}

/* ==== the effective record ==================================================================== */

static uint64_t s_min_nz(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* Sessions time ended (REST past expiry, lease lapsed) and horizons moved on. Returns the latest
 * REST deadline that passed (0 = none), for updated_at. */
static uint64_t s_sessions_tick(store_user_t *u, uint64_t now, bool (*lease_live)(uint64_t, void *), void *ctx)
{
    uint64_t passed = 0;
    for (uint32_t i = 0; i < u->nses; i++) {
        proto_session_t *ss = &u->ses[i];
        if (u->ses_state[i] == SM_SES_DEL)
            continue;
        if (!ss->lease_id) {
            if (ss->expires_at_us <= now) {
                s_end(u, i);
                if (ss->expires_at_us > passed)
                    passed = ss->expires_at_us;
            }
        } else if (lease_live && !lease_live(ss->lease_id, ctx)) {
            s_end(u, i);
            if (now > u->rec.last_seen_us)
                u->rec.last_seen_us = now;
        } else if (ss->expires_at_us <= now + (uint64_t)ss->ttl_s * 500000u) {
            /* Half the horizon left: move it on (the connection is alive while its lease is). */
            ss->expires_at_us = now + (uint64_t)ss->ttl_s * 1000000u;
            ss->last_seen_us = now;
            if (now > u->rec.last_seen_us)
                u->rec.last_seen_us = now;
            u->ses_state[i] = SM_SES_PUT;
        }
    }
    return passed;
}

bool sm_recompute(store_user_t *u, uint64_t now, const sm_config_t *cfg, bool (*lease_live)(uint64_t, void *),
                  void *ctx)
{
    proto_record_t *r = &u->rec;
    uint64_t ses_passed = s_sessions_tick(u, now, lease_live, ctx);
    uint64_t pref_passed = 0;
    if (u->pref_status >= 0 && u->pref_until <= now) {
        pref_passed = u->pref_until;
        u->pref_status = -1;
        u->pref_until = 0;
    }
    if (r->message_expires_at_us && r->message_expires_at_us <= now) {
        proto_record_set_msg(r, "", 0);
        r->message_expires_at_us = 0;
        u->pref_written = true; /* the message is public: its end is an event for everyone */
    }
    /* The top live session: status, then the most recently seen. */
    int top = -1;
    uint32_t live = 0;
    uint64_t ses_expiry = 0, due = 0;
    for (uint32_t i = 0; i < u->nses; i++) {
        const proto_session_t *ss = &u->ses[i];
        if (u->ses_state[i] == SM_SES_DEL)
            continue;
        live++;
        if (top < 0 || sm_status_rank(ss->status) > sm_status_rank(u->ses[top].status) ||
            (ss->status == u->ses[top].status && ss->last_seen_us > u->ses[top].last_seen_us))
            top = (int)i;
        if (ss->expires_at_us > ses_expiry)
            ses_expiry = ss->expires_at_us;
        /* REST sessions end at their deadline; a lease's move their horizon on at half of it. */
        due = s_min_nz(due, ss->lease_id ? ss->expires_at_us - (uint64_t)ss->ttl_s * 500000u : ss->expires_at_us);
    }
    r->sessions = (uint16_t)live;
    if (u->pref_status >= 0) {
        r->status = (uint8_t)u->pref_status;
        r->source = PRESENCE_SRC_PREFERRED;
        r->ttl_s = u->pref_ttl;
        proto_record_set_node(r, u->pref_node, u->pref_node_len);
    } else if (top >= 0) {
        r->status = u->ses[top].status;
        r->source = PRESENCE_SRC_SESSION;
        r->ttl_s = u->ses[top].ttl_s;
        proto_record_set_node(r, u->ses[top].node_id, u->ses[top].node_len);
    } else {
        r->status = PRESENCE_OFFLINE;
        r->source = PRESENCE_SRC_NONE;
    }
    r->preferred_until_us = u->pref_status >= 0 ? u->pref_until : 0;
    if (live)
        r->rflags |= PROTO_REC_F_RT;

    /* When the status fell to offline: by a deadline (its moment), or by a session's end (now). An
     * explicit preferred offline keeps the message; falling offline otherwise clears it, as an
     * expired record always did. */
    u->event_us = now;
    if (r->status == PRESENCE_OFFLINE && u->old_status != PRESENCE_OFFLINE) {
        uint64_t deadline = pref_passed > ses_passed ? pref_passed : ses_passed;
        if (deadline && (top < 0 || deadline > u->ses[top].expires_at_us))
            u->event_us = deadline;
        if (r->source != PRESENCE_SRC_PREFERRED) {
            proto_record_set_msg(r, "", 0);
            r->message_expires_at_us = 0;
        }
    }

    /* expires_at: when the record turns offline if nothing refreshes it (an upper bound while a
     * connection holds it); an offline record keeps the moment it went offline. */
    if (r->status != PRESENCE_OFFLINE) {
        r->expires_at_us = r->preferred_until_us > ses_expiry ? r->preferred_until_us : ses_expiry;
    } else if (r->source == PRESENCE_SRC_PREFERRED) {
        r->expires_at_us = r->preferred_until_us;
    } else if (u->old_status != PRESENCE_OFFLINE || !u->found) {
        r->expires_at_us = u->event_us;
    }
    if (!r->ttl_s)
        r->ttl_s = cfg->default_ttl_s ? cfg->default_ttl_s : 1;

    /* An explicit offline that ends changes nothing a reader sees unless sessions are behind it or
     * the record shows its source: no look is needed then (the purge is what comes next). */
    if (r->status != PRESENCE_OFFLINE || live || (r->rflags & PROTO_REC_F_RT))
        due = s_min_nz(due, r->preferred_until_us);
    due = s_min_nz(due, r->message_expires_at_us);
    bool purge = false;
    if (r->status == PRESENCE_OFFLINE && !live) {
        uint64_t purge_at = r->last_seen_us + cfg->retention_us;
        due = s_min_nz(due, purge_at);
        purge = purge_at <= now;
    }
    r->due_us = due;
    return purge;
}

/* ==== what readers see ========================================================================= */

void sm_public_view(const proto_record_t *r, proto_record_t *out)
{
    proto_record_public(r, out);
}

static bool s_same_str(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && memcmp(a, b, al) == 0;
}

int sm_classify(const proto_record_t *old, const proto_record_t *nu)
{
    if (!old)
        return SM_CH_SET;
    bool rt = (nu->rflags & PROTO_REC_F_RT) != 0;
    if (old->status != nu->status || !s_same_str(old->message, old->msg_len, nu->message, nu->msg_len) ||
        (old->rflags & PROTO_REC_F_RT) != (nu->rflags & PROTO_REC_F_RT) ||
        (rt && (old->sessions != nu->sessions || old->source != nu->source)))
        return SM_CH_SET;
    if (old->last_seen_us != nu->last_seen_us || old->expires_at_us != nu->expires_at_us || old->ttl_s != nu->ttl_s ||
        !s_same_str(old->node_id, old->node_len, nu->node_id, nu->node_len) ||
        old->preferred_until_us != nu->preferred_until_us || old->message_expires_at_us != nu->message_expires_at_us)
        return SM_CH_TOUCH;
    return SM_CH_NONE;
}

static bool s_public_differs(const proto_record_t *a, const proto_record_t *b)
{
    proto_record_t pa, pb;
    sm_public_view(a, &pa);
    sm_public_view(b, &pb);
    return pa.status != pb.status || !s_same_str(pa.message, pa.msg_len, pb.message, pb.msg_len) ||
           pa.last_seen_us != pb.last_seen_us || pa.updated_at_us != pb.updated_at_us ||
           pa.expires_at_us != pb.expires_at_us || pa.ttl_s != pb.ttl_s ||
           !s_same_str(pa.node_id, pa.node_len, pb.node_id, pb.node_len) || pa.sessions != pb.sessions ||
           pa.source != pb.source || pa.preferred_until_us != pb.preferred_until_us ||
           pa.message_expires_at_us != pb.message_expires_at_us || pa.rflags != pb.rflags;
}

void sm_stamp(const proto_record_t *old, proto_record_t *nu, uint64_t version, uint64_t event_us, bool public_write)
{
    nu->version = version;
    bool changed = !old || old->status != nu->status ||
                   !s_same_str(old->message, old->msg_len, nu->message, nu->msg_len);
    nu->updated_at_us = changed ? event_us : old->updated_at_us;
    /* While invisible, others keep the last_seen they saw before: sessions connecting, ending or
     * heartbeating must not show. A preferred write -- what a client with no device could also do
     * -- moves it, as it would for anyone. */
    if (!proto_record_invisible(nu) || public_write || !old) {
        nu->vis_last_seen_us = nu->last_seen_us;
        nu->rflags = (uint8_t)((nu->rflags & PROTO_REC_F_RT) ? nu->rflags | PROTO_REC_F_PUB_RT
                                                               : nu->rflags & ~PROTO_REC_F_PUB_RT);
    } else {
        bool was = proto_record_invisible(old);
        nu->vis_last_seen_us = was ? old->vis_last_seen_us : old->last_seen_us;
        bool pub_rt = was ? (old->rflags & PROTO_REC_F_PUB_RT) != 0 : (old->rflags & PROTO_REC_F_RT) != 0;
        nu->rflags = (uint8_t)(pub_rt ? nu->rflags | PROTO_REC_F_PUB_RT : nu->rflags & ~PROTO_REC_F_PUB_RT);
    }
    if (!old || s_public_differs(old, nu))
        nu->pub_version = version;
    else
        nu->pub_version = old->pub_version;
}
