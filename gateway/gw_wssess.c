/* gw_wssess.c -- a WebSocket connection's session in the store (see gw_wssess.h).
 *
 * Every write is one PUT entry for the user, to the cache-node that owns the user: session_id,
 * device, status, node, ttl (PRESENCE_TTL: the session's horizon, which the store moves on while
 * the lease lives), the lease and the connection id, and flags:
 *   open     F_OPEN             open the session, or take it over (a resume: session_id=)
 *   set      (F_MSG)            the client's status, and the user's message when the set has one
 *   idle     F_IDLE             away, automatically; back: the client's status, F_IDLE too
 *   re-open  F_OPEN             the same session under a new lease (the old one lapsed)
 *   end      status offline     after the grace
 * A write made while the connection's session is still under a lease that has since been replaced
 * goes out under the new lease with F_OPEN (it re-opens and writes in one), so a `set` racing a
 * re-open is never lost.
 *
 * Refusals: the store answers NOTFOUND when the connection does not hold the session (any more) or
 * when it does not hold the lease. Under a lease known to be live (gw_lease_known_live) the first
 * is certain and the store is asked who has the session (SESSIONS): another connection -> the
 * client is told 4000 "session resumed elsewhere" (a resume on another gateway, which nobody else
 * tells us about); nobody -> 4001 "session ended" (signed out with DELETE .../sessions/{sid},
 * evicted by MAX_SESSIONS, or the user erased). Otherwise the lease is suspected and refreshed at
 * once; if it lapsed, the re-open follows. (Usually the thread's change stream has found such a
 * session already and closed its connection -- gw_wsend.c; this is the fallback.)
 *
 * An end that fails (store unreachable) is retried every GW_WS_LINGER_MS until it is answered:
 * while the gateway lives its lease would keep an unended session online for ever.
 *
 * Threading: the connection's thread. Each write allocates a small op (connection, lease, kind)
 * as the call's arg; c->calls counts them and each callback releases the connection last.
 */
#include "gw_wssess.h"
#include "gw_config.h"
#include "gw_lease.h"
#include "gw_upstream.h"
#include "log.h"
#include "util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { W_OPEN = 1, W_SET, W_IDLE, W_REOPEN, W_END };

typedef struct op {
    gw_wsconn_t *c;
    uint64_t lease;  /* the lease the write was made under */
    uint8_t kind;    /* W_* */
    bool opens;      /* F_OPEN was set */
    void (*done)(gw_wsconn_t *c, h2o_req_t *req, const proto_msg_t *m, int status); /* W_OPEN */
} op_t;

static void on_put_reply(gw_call_t *call, const proto_msg_t *m, int status);

/* ==== writing ================================================================================== */

static void s_entry(const gw_wsconn_t *c, proto_record_t *r, int status)
{
    memset(r, 0, offsetof(proto_record_t, user_id));
    proto_record_set_uid(r, c->uid, c->uid_len);
    proto_record_set_node(r, gw_cfg.node_id, strlen(gw_cfg.node_id));
    proto_record_set_msg(r, "", 0);
    proto_record_set_sid(r, c->sid, c->sid_len);
    proto_record_set_device(r, c->device, c->dev_len);
    r->status = (uint8_t)status;
    r->ttl_s = (uint32_t)gw_cfg.default_ttl;
    r->conn_id = c->conn_id;
}

/* Send r for c (its lease chosen here unless given); returns the call or NULL (no node up, or no
 * lease: nothing was sent and no callback will run). */
static gw_call_t *s_put(gw_wsconn_t *c, h2o_req_t *req, proto_record_t *r, uint8_t kind, uint64_t lease,
                        void (*done)(gw_wsconn_t *, h2o_req_t *, const proto_msg_t *, int))
{
    gw_ctx_t *t = c->ws->cx;
    uint64_t cur = gw_lease_id();
    if (!lease) {
        lease = c->lease_id;
        if (cur && lease != cur) { /* the session is under a replaced lease: re-open with this write */
            lease = cur;
            r->cflags |= PROTO_CMD_F_OPEN;
        }
    }
    if (!lease)
        return NULL;
    r->lease_id = lease;
    int node = gw_upstream_route(t->up, c->uid, c->uid_len);
    if (node < 0)
        return NULL;
    op_t *op = xcalloc(1, sizeof *op);
    op->c = c;
    op->lease = lease;
    op->kind = kind;
    op->opens = (r->cflags & PROTO_CMD_F_OPEN) != 0;
    op->done = done;
    uint64_t rid = gw_upstream_rid(t->up);
    proto_buf_reset(&t->pb);
    proto_enc_records_cmd_dl(&t->pb, PROTO_PUT, rid, r, 1, gw_upstream_deadline());
    c->calls++;
    gw_call_t *call = gw_upstream_send(t->up, req, node, rid, PROTO_PUT, &t->pb, on_put_reply, op);
    if (!call) {
        c->calls--;
        free(op);
    }
    return call; /* the callback may already have run (and released c): c is not touched here */
}

/* ==== refusals ================================================================================= */

static const proto_session_t *s_mine(const gw_wsconn_t *c, const proto_msg_t *m)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->sessions[i].sid_len == c->sid_len && memcmp(m->sessions[i].session_id, c->sid, c->sid_len) == 0)
            return &m->sessions[i];
    return NULL;
}

bool gw_wssess_listed(const gw_wsconn_t *c, const proto_msg_t *m)
{
    return s_mine(c, m) != NULL;
}

bool gw_wssess_judge(gw_wsconn_t *c, const proto_msg_t *m)
{
    const proto_session_t *mine = s_mine(c, m);
    if (!mine) {
        LOG_RATELIMITED(LOG_INFO, 1000, "session %.*s of %.*s: ended in the store (signed out, evicted or erased)",
                        (int)c->sid_len, c->sid, (int)c->uid_len, c->uid);
        gw_wsconn_session_lost(c, GW_WSCONN_CLOSE_ENDED);
        return false;
    }
    if (mine->lease_id != c->lease_id || mine->conn_id != c->conn_id) {
        LOG_RATELIMITED(LOG_INFO, 1000, "session %.*s of %.*s: held by lease %016llx connection %llx, not ours (%016llx %llx)",
                        (int)c->sid_len, c->sid, (int)c->uid_len, c->uid, (unsigned long long)mine->lease_id,
                        (unsigned long long)mine->conn_id, (unsigned long long)c->lease_id,
                        (unsigned long long)c->conn_id);
        gw_wsconn_session_lost(c, GW_WSCONN_CLOSE_RESUMED);
        return false;
    }
    return true;
}

static void on_sessions_reply(gw_call_t *call, const proto_msg_t *m, int status)
{
    gw_wsconn_t *c = call->arg;
    if (c->holds && m && m->status == PROTO_OK && gw_wssess_judge(c, m))
        gw_lease_suspect(); /* ours after all: the refusal was about the lease */
    c->calls--; /* only now: what ran above may have moved c to DONE, and c must outlive it */
    gw_wsconn_release(c);
}

/* The store refused a write of c's session made under `lease`. */
static void s_refused(gw_wsconn_t *c, uint64_t lease)
{
    if (!c->holds || c->state != GW_WSCONN_OPEN || lease != gw_lease_id())
        return; /* a write under a lease replaced since: the re-open carries the state */
    if (!gw_lease_known_live()) {
        gw_lease_suspect();
        return;
    }
    gw_ctx_t *t = c->ws->cx;
    int node = gw_upstream_route(t->up, c->uid, c->uid_len);
    if (node < 0)
        return;
    uint64_t rid = gw_upstream_rid(t->up);
    proto_buf_reset(&t->pb);
    proto_enc_get(&t->pb, PROTO_SESSIONS, rid, c->uid, c->uid_len);
    c->calls++;
    if (!gw_upstream_send(t->up, NULL, node, rid, PROTO_SESSIONS, &t->pb, on_sessions_reply, c))
        c->calls--;
}

/* ==== answers ================================================================================== */

static const char *s_failure(const proto_msg_t *m, int status)
{
    switch (m ? m->status : status) {
    case PROTO_ETIMEOUT: return "store timed out: the change may not have been applied; send it again";
    case PROTO_EOVERLOAD: return "store overloaded: the change was not applied; send it again later";
    case PROTO_EBADREQ: return "bad request: the store refused the change";
    case PROTO_EINTERNAL: return "storage error: the change was not applied";
    default: return "store unavailable: the change was not applied; send it again";
    }
}

static void on_end_retry(h2o_timeout_entry_t *e)
{
    gw_wssess_end(H2O_STRUCT_FROM_MEMBER(gw_wsconn_t, timer, e));
}

static void on_put_reply(gw_call_t *call, const proto_msg_t *m, int status)
{
    op_t *op = call->arg;
    gw_wsconn_t *c = op->c;
    bool ok = m && m->status == PROTO_OK;
    if (ok && op->opens && op->kind != W_OPEN)
        c->lease_id = op->lease;
    switch (op->kind) {
    case W_OPEN:
        if (ok)
            gw_wsconn_holds(c, op->lease);
        op->done(c, call->req, m, status);
        break;
    case W_REOPEN:
        c->reopening = false;
        if (!ok && m && m->status == PROTO_NOTFOUND)
            gw_lease_suspect();
        break;
    case W_SET:
    case W_IDLE:
        if (c->state != GW_WSCONN_OPEN || ok)
            break;
        if (m && m->status == PROTO_NOTFOUND)
            s_refused(c, op->lease);
        else if (op->kind == W_SET)
            gw_wsconn_error(c, s_failure(m, status), false);
        gw_wsconn_flush(c);
        break;
    case W_END:
        if (!ok && !(m && m->status == PROTO_NOTFOUND) && c->state == GW_WSCONN_DONE && !c->ws->stopping) {
            /* Not answered: the session would stay online as long as the lease lives. Again. */
            LOG_RATELIMITED(LOG_WARN, 1000, "ending session %.*s of %.*s failed (%s): retrying", (int)c->sid_len,
                            c->sid, (int)c->uid_len, c->uid, proto_status_name(m ? m->status : status));
            c->holds = true;
            c->state = GW_WSCONN_GRACE;
            c->timer.cb = on_end_retry;
            h2o_timeout_link(c->ws->cx->h2o.loop, &c->ws->linger_to, &c->timer);
        }
        break;
    default:
        break;
    }
    free(op);
    c->calls--; /* only now: what ran above may have moved c to DONE, and c must outlive it */
    gw_wsconn_release(c);
}

/* ==== the writes =============================================================================== */

gw_call_t *gw_wssess_open(gw_wsconn_t *c, h2o_req_t *req,
                          void (*done)(gw_wsconn_t *c, h2o_req_t *req, const proto_msg_t *m, int status))
{
    proto_record_t r;
    s_entry(c, &r, c->chosen);
    r.cflags = PROTO_CMD_F_OPEN;
    uint64_t lease = gw_lease_id();
    c->lease_id = lease;
    return s_put(c, req, &r, W_OPEN, lease, done);
}

void gw_wssess_set(gw_wsconn_t *c, const gw_wsmsg_t *m)
{
    if (!c->holds) {
        gw_wsconn_error(c, "session not held: this connection's session was taken over or ended", false);
        return;
    }
    if (m->status >= 0)
        c->chosen = (uint8_t)m->status;
    c->idle = false;
    gw_wsconn_idle_restart(c);
    c->status = c->chosen;
    proto_record_t r;
    s_entry(c, &r, c->status);
    if (m->message_op != GW_WSMSG_MESSAGE_KEEP) {
        r.cflags |= PROTO_CMD_F_MSG;
        if (m->message_op == GW_WSMSG_MESSAGE_SET)
            proto_record_set_msg(&r, m->message, m->message_len);
        r.message_ttl_s = m->message_ttl;
    }
    if (!s_put(c, NULL, &r, W_SET, 0, NULL))
        gw_wsconn_error(c, "store unavailable: no cache-node is up; the change was not applied", false);
}

void gw_wssess_activity(gw_wsconn_t *c)
{
    gw_wsconn_idle_restart(c);
    if (!c->idle)
        return;
    c->idle = false;
    if (!c->holds || c->status == c->chosen)
        return;
    c->status = c->chosen;
    proto_record_t r;
    s_entry(c, &r, c->status);
    r.cflags = PROTO_CMD_F_IDLE;
    s_put(c, NULL, &r, W_IDLE, 0, NULL);
}

void gw_wssess_idle(gw_wsconn_t *c)
{
    if (c->idle)
        return;
    c->idle = true;
    if (!c->holds || c->status == PRESENCE_AWAY)
        return;
    c->status = PRESENCE_AWAY;
    proto_record_t r;
    s_entry(c, &r, PRESENCE_AWAY);
    r.cflags = PROTO_CMD_F_IDLE;
    s_put(c, NULL, &r, W_IDLE, 0, NULL);
}

void gw_wssess_reopen(gw_wsconn_t *c, uint64_t lease_id)
{
    proto_record_t r;
    s_entry(c, &r, c->status);
    r.cflags = PROTO_CMD_F_OPEN | (c->idle ? PROTO_CMD_F_IDLE : 0);
    c->reopening = true;
    if (!s_put(c, NULL, &r, W_REOPEN, lease_id, NULL))
        c->reopening = false; /* the next tick tries again */
}

void gw_wssess_end(gw_wsconn_t *c)
{
    c->state = GW_WSCONN_DONE;
    c->calls++; /* held across the send: its callback may run (and release c) before it returns */
    if (c->holds) {
        c->holds = false;
        proto_record_t r;
        s_entry(c, &r, PRESENCE_OFFLINE);
        /* Under the lease the session is held by: under a new one this would be an open. */
        if (c->lease_id)
            s_put(c, NULL, &r, W_END, c->lease_id, NULL);
    }
    c->calls--;
    gw_wsconn_release(c);
}
