/* gw_wsend.c -- WebSocket sessions ended from outside, closed at once (see gw_wsend.h).
 *
 * The store ends a connection's session without the connection's gateway asking when the user
 * signs the device out (DELETE .../sessions/{sid}), when MAX_SESSIONS evicts it for a newer one,
 * when the user is erased, and it moves it when a connection of another gateway resumes it. Nobody
 * tells the gateway; its next write would be refused (gw_wssess.c), but a client that never writes
 * would keep its socket -- and its watchers' events -- for ever. So every gateway thread follows
 * its watch hub's change stream (an observer: the region's whole stream, already decoded) and, for
 * a change of a user who has connections holding sessions on this thread, asks the store which
 * sessions the user has (SESSIONS, as the refusal path does), then:
 *   - a connection's session is missing -> closed 4001 "session ended";
 *   - held by another lease or connection -> closed 4000 "session resumed elsewhere";
 *   - in its grace: done at once, nothing left to end.
 *
 * Key decisions:
 * - Which changes: every change (set, heartbeat, erase) of such a user. An eviction or a take-over
 *   elsewhere changes neither the status nor the count of sessions (the new session replaces the
 *   old), so no cheaper test on the record finds them. The cost is bounded instead: a user without
 *   connections here costs one hash lookup (ws->sessions is keyed by user); one with connections
 *   has at most one lookup in flight, and changes meanwhile only mark it to be asked once more.
 * - Only what is certain: a connection is judged only if it held its session before the lookup
 *   was sent (the answer cannot be older than its open) and under the lease current then and now
 *   (a lease replaced meanwhile: the re-open is out; gw_ws.c). A missing session under a lease not
 *   known to be live may be the lease's lapse, not a sign-out: the lease is refreshed instead.
 * - Latency: the change reaches the hub a few ms after the store commits it; one read more, then
 *   the close frame -- well under a second on a healthy region.
 *
 * Threading: the thread's event loop; the state and its lookups belong to that thread.
 */
#include "gw_wsend.h"
#include "gw_lease.h"
#include "gw_upstream.h"
#include "gw_watch_hub.h"
#include "gw_wsconn.h"
#include "gw_wssess.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* A lookup of one user's sessions, in flight. */
typedef struct look {
    idtab_link_t link;  /* gw_wsend_t.looks, by the user's key */
    gw_wsend_t *e;
    uint64_t lease;     /* the lease when it was sent */
    uint64_t *held;     /* the connections that held their session then (conn ids) */
    uint32_t nheld, cap;
    bool again;         /* a change came meanwhile: ask once more after the answer */
    uint8_t uid_len;
    char uid[PROTO_USER_ID_MAX + 1];
} look_t;

struct gw_wsend {
    gw_ws_t *ws;
    idtab_t looks;
};

static void s_send(look_t *k);

/* ==== the thread's connections of a user ======================================================= */

/* The first connection of uid on this thread that holds its session, from l on (l: a link of the
 * user's chain in ws->sessions, which may also hold other users with the same key). */
static gw_wsconn_t *s_next_holder(idtab_link_t *l, const char *uid, size_t ulen)
{
    for (; l; l = idtab_find_next(l)) {
        gw_wsconn_t *c = IDTAB_ENTRY(l, gw_wsconn_t, by_session);
        if (c->holds && c->uid_len == ulen && memcmp(c->uid, uid, ulen) == 0)
            return c;
    }
    return NULL;
}

static idtab_link_t *s_chain(const gw_wsend_t *e, const char *uid, size_t ulen)
{
    return idtab_find(&e->ws->sessions, gw_ws_session_key(uid, ulen, "", 0));
}

static bool s_was_holding(const look_t *k, uint64_t conn_id)
{
    for (uint32_t i = 0; i < k->nheld; i++)
        if (k->held[i] == conn_id)
            return true;
    return false;
}

/* ==== the answer =============================================================================== */

/* c held its session when the lookup was sent: judge it by the answer (gw_wssess_judge), except
 * that a missing session under a lease not known live may be the lease's lapse, not an end. */
static void s_judge(gw_wsconn_t *c, const proto_msg_t *m)
{
    if (!gw_lease_known_live() && !gw_wssess_listed(c, m)) {
        gw_lease_suspect(); /* a refresh tells; the re-open follows */
        return;
    }
    gw_wssess_judge(c, m);
}

static void s_apply(look_t *k, const proto_msg_t *m)
{
    uint64_t lease = gw_lease_id();
    if (lease != k->lease) {
        k->again = true; /* the lease changed meanwhile: the answer may predate the re-opens */
        return;
    }
    idtab_link_t *l = s_chain(k->e, k->uid, k->uid_len);
    for (gw_wsconn_t *c = s_next_holder(l, k->uid, k->uid_len), *next; c; c = next) {
        /* Taken first: losing its session unlinks c from the chain. */
        next = s_next_holder(idtab_find_next(&c->by_session), k->uid, k->uid_len);
        if (!s_was_holding(k, c->conn_id) || c->reopening || c->lease_id != lease)
            continue;
        if (c->state != GW_WSCONN_OPENING && c->state != GW_WSCONN_OPEN && c->state != GW_WSCONN_GRACE)
            continue;
        s_judge(c, m);
    }
}

static void on_sessions_reply(gw_call_t *call, const proto_msg_t *m, int status)
{
    (void)status;
    look_t *k = call->arg;
    gw_wsend_t *e = k->e;
    if (m && m->type == PROTO_SESSIONS_REPLY && m->status == PROTO_OK && !e->ws->stopping)
        s_apply(k, m);
    /* A failed lookup is not retried by itself: the next change asks again, and the connection's
     * next write is refused anyway (gw_wssess.c). */
    if (k->again && !e->ws->stopping) {
        k->again = false;
        s_send(k);
        return;
    }
    idtab_remove(&e->looks, &k->link);
    free(k->held);
    free(k);
}

/* ==== asking =================================================================================== */

/* Note which connections hold their session now, and ask. Frees k when nothing could be sent or
 * no connection of the user is left. */
static void s_send(look_t *k)
{
    gw_wsend_t *e = k->e;
    gw_ctx_t *t = e->ws->cx;
    k->nheld = 0;
    k->lease = gw_lease_id();
    idtab_link_t *l = s_chain(e, k->uid, k->uid_len);
    for (gw_wsconn_t *c = s_next_holder(l, k->uid, k->uid_len); c;
         c = s_next_holder(idtab_find_next(&c->by_session), k->uid, k->uid_len)) {
        if (k->nheld == k->cap) {
            k->cap = k->cap ? k->cap * 2 : 4;
            k->held = xrealloc(k->held, k->cap * sizeof *k->held);
        }
        k->held[k->nheld++] = c->conn_id;
    }
    int node = k->nheld && k->lease ? gw_upstream_route(t->up, k->uid, k->uid_len) : -1;
    if (node >= 0) {
        uint64_t rid = gw_upstream_rid(t->up);
        proto_buf_reset(&t->pb);
        proto_enc_get(&t->pb, PROTO_SESSIONS, rid, k->uid, k->uid_len);
        if (gw_upstream_send(t->up, NULL, node, rid, PROTO_SESSIONS, &t->pb, on_sessions_reply, k))
            return;
    }
    idtab_remove(&e->looks, &k->link);
    free(k->held);
    free(k);
}

static look_t *s_find_look(gw_wsend_t *e, uint64_t key, const char *uid, size_t ulen)
{
    for (idtab_link_t *l = idtab_find(&e->looks, key); l; l = idtab_find_next(l)) {
        look_t *k = IDTAB_ENTRY(l, look_t, link);
        if (k->uid_len == ulen && memcmp(k->uid, uid, ulen) == 0)
            return k;
    }
    return NULL;
}

/* The hub's observer: a change of one user (any kind). */
static void on_change(void *ctx, const proto_change_t *ch)
{
    gw_wsend_t *e = ctx;
    const char *uid = ch->rec.user_id;
    size_t ulen = ch->rec.uid_len;
    uint64_t key = gw_ws_session_key(uid, ulen, "", 0);
    if (!s_next_holder(idtab_find(&e->ws->sessions, key), uid, ulen) || e->ws->stopping)
        return; /* the common case: nobody of this user is connected here */
    look_t *k = s_find_look(e, key, uid, ulen);
    if (k) {
        k->again = true;
        return;
    }
    k = xcalloc(1, sizeof *k);
    k->link.id = key;
    k->e = e;
    k->uid_len = (uint8_t)ulen;
    memcpy(k->uid, uid, ulen);
    idtab_add(&e->looks, &k->link);
    s_send(k);
}

gw_wsend_t *gw_wsend_new(gw_ws_t *ws)
{
    if (!ws->cx->watch)
        return NULL;
    gw_wsend_t *e = xcalloc(1, sizeof *e);
    e->ws = ws;
    idtab_init(&e->looks);
    gw_watch_observer_t o = {.ctx = e, .change = on_change};
    gw_watch_hub_observe(ws->cx->watch, &o);
    return e;
}
