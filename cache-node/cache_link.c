/* cache_link.c -- the cache-node's side of its store link: the DEALER(s) to the store-node (or the
 * region's sync relay) and every request in flight on them.
 *
 * Requests are kept by id (an idtab) and in deadline order (a list: they all share one timeout,
 * store_timeout_ms, so arrival order is deadline order). Commands queued during one loop turn
 * leave together as one BATCH frame (cache_link_flush, from the loop's hooks), early when the
 * batch reaches PROTO_BATCH_SOFT_MAX. A send that fails (ZMQ_IMMEDIATE: not connected; or the
 * HWM) fails every queued request at once, so a store that is down costs a gateway 503 now, not a
 * timeout. Answers, timeouts and failures go to each request's own callback (cache_serve.c sets
 * them); pings and stats polls are the link's own, and tell whether the store is up.
 *
 * A replicated center (STORE_CMD_ENDPOINT lists every member; docs/REPLICATION.md): one DEALER per
 * member, commands to the one that leads (sync/leader.h). Every member is pinged; a PONG says
 * whether its member leads and in which term, a follower's ENOTLEADER names the leader. When the
 * leader changes, what was in flight to the old one is sent again to the new one if that cannot
 * apply it twice -- a read, or a write carrying a command id (the store applies an id once) --
 * and answered EUNAVAIL otherwise (outcome unknown: a heartbeat the client repeats anyway). A
 * command a member refused ENOTLEADER was not applied and always goes to the leader; while no
 * leader is known such commands wait (parked) until their deadline.
 *
 * One thread: the node's loop.
 */
#include "cache_node_int.h"
#include "cfg.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETRIES_MAX 4          /* times one request may be sent again to another member */
#define MEMBER_NONE UINT8_MAX  /* preq.member of a request not sent yet */

/* ==== requests in flight ======================================================================= */

static void s_preq_add(cache_node_t *cn, preq_t *p)
{
    idtab_add(&cn->pending, &p->link);
    p->tprev = cn->t_tail;
    p->tnext = NULL;
    if (cn->t_tail)
        cn->t_tail->tnext = p;
    else
        cn->t_head = p;
    cn->t_tail = p;
}

/* Remove from both the table and the deadline list; returns the request or NULL. */
static preq_t *s_preq_take(cache_node_t *cn, uint64_t rid)
{
    idtab_link_t *l = idtab_take(&cn->pending, rid);
    if (!l)
        return NULL;
    preq_t *p = IDTAB_ENTRY(l, preq_t, link);
    if (p->tprev)
        p->tprev->tnext = p->tnext;
    else
        cn->t_head = p->tnext;
    if (p->tnext)
        p->tnext->tprev = p->tprev;
    else
        cn->t_tail = p->tprev;
    if (p->parked) {
        p->parked = false;
        cn->parked--;
    }
    return p;
}

static preq_t *s_preq_find(cache_node_t *cn, uint64_t rid)
{
    idtab_link_t *l = idtab_find(&cn->pending, rid);
    return l ? IDTAB_ENTRY(l, preq_t, link) : NULL;
}

preq_t *cache_link_request(cache_node_t *cn, uint8_t kind, cache_link_done_fn done)
{
    preq_t *p = xcalloc(1, sizeof *p);
    p->kind = kind;
    p->done = done;
    p->link.id = cn->next_rid++;
    p->deadline = util_mono_ms() + cn->cfg.store_timeout_ms;
    p->sent_us = util_mono_us();
    p->member = MEMBER_NONE; /* set when it leaves (cache_link_flush) */
    return p;
}

static void s_free(preq_t *p)
{
    free(p->fetches);
    free(p->bytes);
    free(p);
}

static void s_fail(cache_node_t *cn, preq_t *p, uint8_t status)
{
    if (p->done) {
        p->done(cn, p, NULL, status);
    } else if (p->kind == PK_PING && leader_replicated(&cn->members)) {
        cn->m_ping_out[p->member] = false;
        if (p->member == cn->members.cur)
            cn->ping_out = false;
        if (!cn->store_answered && status == PROTO_EUNAVAIL)
            cn->m_next_ping_ms[p->member] = util_mono_ms() + 20; /* still connecting at start: ask again soon */
    } else if (p->kind == PK_PING) {
        cn->ping_out = false;
        if (!cn->store_answered && status == PROTO_EUNAVAIL)
            cn->next_ping_ms = util_mono_ms() + 20; /* still connecting at start: ask again soon */
    } else if (p->kind == PK_STATS) {
        cn->stats_out = false;
    }
    s_free(p);
}

/* ==== one BATCH per loop turn =================================================================== */

static void s_queue(cache_node_t *cn, const void *data, size_t len, uint64_t rid)
{
    if (cn->store_batch.n == cn->store_rids_cap) {
        cn->store_rids_cap = cn->store_rids_cap ? cn->store_rids_cap * 2 : 256;
        cn->store_rids = xrealloc(cn->store_rids, cn->store_rids_cap * sizeof *cn->store_rids);
    }
    cn->store_rids[cn->store_batch.n] = rid;
    proto_batch_add(&cn->store_batch, data, len);
    if (proto_batch_full(&cn->store_batch))
        cache_link_flush(cn);
}

void cache_link_send(cache_node_t *cn, preq_t *p, const proto_buf_t *b, uint64_t write_deadline_us)
{
    p->write_deadline_us = write_deadline_us;
    if (write_deadline_us && (!cn->store_batch_deadline || write_deadline_us < cn->store_batch_deadline))
        cn->store_batch_deadline = write_deadline_us;
    if (leader_replicated(&cn->members) && (p->kind == PK_FORWARD || p->kind == PK_FETCH)) {
        p->bytes = xmalloc(b->len); /* to send it again to a new leader */
        memcpy(p->bytes, b->data, b->len);
        p->blen = b->len;
    }
    s_preq_add(cn, p);
    s_queue(cn, b->data, b->len, p->link.id);
}

/* Writes whose gateway deadline passed before they left (the process was stopped between taking
 * them and sending them) are answered ETIMEOUT instead of being sent: see cache_serve.c, s_handle_write. */
static void s_store_drop_expired(cache_node_t *cn, uint64_t now_us)
{
    proto_batch_t keep;
    proto_batch_init(&keep);
    const proto_batch_t *b = &cn->store_batch;
    uint32_t nk = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t start = i ? b->ends[i - 1] : 0;
        preq_t *p = s_preq_find(cn, cn->store_rids[i]);
        if (p && p->kind == PK_FORWARD && p->write_deadline_us && now_us >= p->write_deadline_us) {
            cn->expired_writes++;
            s_fail(cn, s_preq_take(cn, p->link.id), PROTO_ETIMEOUT);
            continue;
        }
        proto_batch_add(&keep, b->data.data + start, b->ends[i] - start);
        cn->store_rids[nk++] = cn->store_rids[i];
    }
    proto_batch_fini(&cn->store_batch);
    cn->store_batch = keep;
}

/* A request that may not apply twice and whose outcome is unknown: sent again only when the
 * store applies it once anyway (a command id) or when it changes nothing (a read). */
static bool s_retry_safe(const preq_t *p)
{
    return p->kind == PK_FETCH || p->has_cmd_id || (p->kind == PK_FORWARD && p->type == PROTO_SESSIONS);
}

static void s_park(cache_node_t *cn, preq_t *p)
{
    if (!p->parked) {
        p->parked = true;
        cn->parked++;
    }
}

void cache_link_flush(cache_node_t *cn)
{
    if (cn->store_batch_deadline && util_now_us() >= cn->store_batch_deadline)
        s_store_drop_expired(cn, util_now_us());
    cn->store_batch_deadline = 0;
    if (!cn->store_batch.n)
        return;
    proto_batch_encode(&cn->store_batch, &cn->link_buf);
    uint32_t n = cn->store_batch.n;
    proto_batch_reset(&cn->store_batch);
    zloop_sent(cn->loop, cn->store);
    bool ok = zu_send(cn->store, NULL, 0, cn->link_buf.data, cn->link_buf.len) == 0;
    bool repl = leader_replicated(&cn->members);
    if (ok && !repl)
        return;
    for (uint32_t i = 0; i < n; i++) {
        if (ok) {
            preq_t *p = s_preq_find(cn, cn->store_rids[i]);
            if (p)
                p->member = (uint8_t)cn->members.cur;
            continue;
        }
        /* Not connected (ZMQ_IMMEDIATE) or at the HWM: everything queued fails now, not at a
         * deadline -- or, with a replicated center, what is safe to send again waits for the
         * leader (this member may be the old one, gone). */
        preq_t *p = s_preq_find(cn, cn->store_rids[i]);
        if (!p)
            continue;
        if (repl && (p->kind == PK_FORWARD || p->kind == PK_FETCH) && s_retry_safe(p) && p->bytes) {
            s_park(cn, p);
            continue;
        }
        p = s_preq_take(cn, cn->store_rids[i]);
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH)
            cn->store_unavailable++;
        s_fail(cn, p, PROTO_EUNAVAIL);
    }
}

void cache_link_expire(cache_node_t *cn, uint64_t now)
{
    while (cn->t_head && cn->t_head->deadline <= now) {
        bool parked = cn->t_head->parked;
        preq_t *p = s_preq_take(cn, cn->t_head->link.id);
        if (p->kind == PK_FORWARD || p->kind == PK_FETCH) {
            if (parked)
                cn->store_unavailable++;
            else
                cn->store_timeouts++;
        }
        /* Parked: no member led before its deadline (a minority, an election): unavailable. */
        s_fail(cn, p, parked ? PROTO_EUNAVAIL : PROTO_ETIMEOUT);
    }
}

/* ==== following the leader (a replicated center) ================================================ */

/* Send a request again, to the member commands go to now (same request id and bytes). */
static void s_resend(cache_node_t *cn, preq_t *p)
{
    if (p->parked) {
        p->parked = false;
        cn->parked--;
    }
    p->retries++;
    p->member = MEMBER_NONE;
    cn->store_retries++;
    s_queue(cn, p->bytes, p->blen, p->link.id);
}

/* Requests waiting for a leader go to the one now known. */
static void s_unpark(cache_node_t *cn)
{
    if (!cn->parked)
        return;
    for (preq_t *p = cn->t_head; p; p = p->tnext)
        if (p->parked)
            s_resend(cn, p);
}

/* Commands now go to member cur (was: `was`). What is in flight to the old member is sent again
 * where that is safe, else answered EUNAVAIL (it may or may not have been applied). */
static void s_switched(cache_node_t *cn, unsigned was, const char *why)
{
    cn->store = cn->stores[cn->members.cur];
    cn->leader_switches++;
    cn->ping_out = cn->m_ping_out[cn->members.cur];
    LOG(LOG_NOTICE, "store link: commands now go to member %u (%s)", cn->members.cur + 1, why);
    /* A request sent again stays in the list (member NONE now: not visited twice), even when the
     * send fails (it parks); one answered EUNAVAIL is freed, so its successor is taken first. */
    for (preq_t *p = cn->t_head; p;) {
        if ((p->kind != PK_FORWARD && p->kind != PK_FETCH) || p->parked || p->member != was) {
            p = p->tnext;
        } else if (s_retry_safe(p) && p->bytes && p->retries < RETRIES_MAX) {
            s_resend(cn, p);
            p = p->tnext;
        } else {
            preq_t *next = p->tnext;
            cn->store_unavailable++;
            s_fail(cn, s_preq_take(cn, p->link.id), PROTO_EUNAVAIL);
            p = next;
        }
    }
    s_unpark(cn);
}

static void s_hint(cache_node_t *cn, uint64_t member, uint64_t term, const char *why)
{
    unsigned was = cn->members.cur;
    if (leader_hint(&cn->members, member, term))
        s_switched(cn, was, why);
}

/* A member of a replicated center that does not lead refused p (not applied): to the leader it
 * names, or wait for one. Returns true when p is taken care of (sent again or parked). */
static bool s_not_leader(cache_node_t *cn, preq_t *p, const proto_msg_t *m, unsigned from)
{
    /* Refused, so no longer in flight to `from`: the switch the hint may cause must leave p to
     * this function (it would send p again, or answer and free it under our feet). */
    p->member = MEMBER_NONE;
    if (m->seq && m->seq - 1 != from)
        s_hint(cn, m->seq, 0, "a follower named it");
    if (!p->bytes || p->retries >= RETRIES_MAX)
        return false;
    if (cn->members.cur != from)
        s_resend(cn, p);
    else
        s_park(cn, p); /* no other leader known yet: sent when one is */
    return true;
}

/* ==== the store's health ======================================================================== */

bool cache_link_up(const cache_node_t *cn)
{
    return cn->link_up && util_mono_ms() - cn->last_store_ok_ms < cn->cfg.store_down_ms;
}

static void s_ping(cache_node_t *cn, unsigned i, uint64_t now)
{
    preq_t *p = cache_link_request(cn, PK_PING, NULL);
    p->member = (uint8_t)i;
    proto_buf_reset(&cn->link_buf);
    proto_enc_simple(&cn->link_buf, PROTO_PING, p->link.id);
    cn->m_ping_out[i] = true;
    if (i == cn->members.cur)
        cn->ping_out = true;
    cn->m_next_ping_ms[i] = now + CACHE_PING_INTERVAL_MS;
    s_preq_add(cn, p);
    zloop_sent(cn->loop, cn->stores[i]);
    if (zu_send(cn->stores[i], NULL, 0, cn->link_buf.data, cn->link_buf.len) < 0)
        s_fail(cn, s_preq_take(cn, p->link.id), PROTO_EUNAVAIL);
}

void cache_link_poll(cache_node_t *cn, uint64_t now)
{
    if (!leader_replicated(&cn->members)) {
        if (now >= cn->next_ping_ms && !cn->ping_out) {
            preq_t *p = cache_link_request(cn, PK_PING, NULL);
            p->member = 0;
            proto_buf_reset(&cn->link_buf);
            proto_enc_simple(&cn->link_buf, PROTO_PING, p->link.id);
            cn->ping_out = true;
            cache_link_send(cn, p, &cn->link_buf, 0);
            cn->next_ping_ms = now + CACHE_PING_INTERVAL_MS;
        }
    } else {
        /* Every member: each PONG says whether its member leads. */
        uint64_t next = UINT64_MAX;
        for (unsigned i = 0; i < cn->members.n; i++) {
            if (now >= cn->m_next_ping_ms[i] && !cn->m_ping_out[i])
                s_ping(cn, i, now);
            next = MIN(next, cn->m_next_ping_ms[i]);
        }
        cn->next_ping_ms = next;
    }
    if (now >= cn->next_stats_ms && !cn->stats_out) {
        preq_t *p = cache_link_request(cn, PK_STATS, NULL);
        proto_buf_reset(&cn->link_buf);
        proto_enc_simple(&cn->link_buf, PROTO_STATS, p->link.id);
        cn->stats_out = true;
        cache_link_send(cn, p, &cn->link_buf, 0);
        cn->next_stats_ms = now + CACHE_STATS_INTERVAL_MS;
    }
}

/* A PONG from member `from` of a replicated center: does it lead, or whom does it name? */
static void s_member_pong(cache_node_t *cn, const proto_msg_t *m, unsigned from, uint64_t now)
{
    uint64_t leading = 0, leader = 0, term = 0;
    if (!stats_find(m->stats, m->n, "store_repl_term", &term))
        LOG_RATELIMITED(LOG_WARN, 10000,
                        "store member %u is not replicated (no store_repl_* in its PONG): STORE_CMD_ENDPOINT lists "
                        "several stores, so each must run with the same STORE_REPLICAS",
                        from + 1);
    stats_find(m->stats, m->n, "store_repl_leading", &leading);
    stats_find(m->stats, m->n, "store_repl_leader", &leader);
    stats_find(m->stats, m->n, "store_repl_term", &term);
    if (leading) {
        s_hint(cn, from + 1, term, "it says it leads");
    } else if (from == cn->members.cur && leader && leader - 1 != from) {
        s_hint(cn, leader, 0, "the member we followed names it");
    }
    if (from != cn->members.cur || !leading)
        return;
    stats_find(m->stats, m->n, "store_epoch", &cn->store_epoch);
    stats_find(m->stats, m->n, "store_sequence", &cn->store_seq);
    cn->link_up = true;
    cn->last_store_ok_ms = now;
    cn->store_answered = true;
    s_unpark(cn);
}

static void s_on_pong(cache_node_t *cn, const proto_msg_t *m, unsigned from, uint64_t now)
{
    cn->m_ping_out[from] = false;
    if (from == cn->members.cur)
        cn->ping_out = false;
    if (m->type != PROTO_PONG)
        return;
    if (leader_replicated(&cn->members)) {
        s_member_pong(cn, m, from, now);
        return;
    }
    uint64_t link = 1, lag = 0;
    stats_find(m->stats, m->n, "store_epoch", &cn->store_epoch);
    stats_find(m->stats, m->n, "store_sequence", &cn->store_seq);
    stats_find(m->stats, m->n, "relay_link_up", &link);
    stats_find(m->stats, m->n, "relay_lag_seconds:us", &lag);
    cn->link_up = link != 0;
    cn->link_lag_us = lag;
    if (cn->link_up) {
        cn->last_store_ok_ms = now;
        cn->store_answered = true;
    }
}

static void s_on_store_stats(cache_node_t *cn, const proto_msg_t *m)
{
    cn->stats_out = false;
    if (m->type != PROTO_STATS_REPLY)
        return;
    stats_list_reset(&cn->store_stats);
    for (uint32_t i = 0; i < m->n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, m->stats[i].name.p, m->stats[i].name.len);
        name[m->stats[i].name.len] = '\0';
        /* The store's (or relay's) numbers, and their process_* and build info, which carry
         * proc="store-node" / proc="sync-relay" labels of their own. */
        if (strncmp(name, "store_", 6) == 0 || strncmp(name, "relay_", 6) == 0 || strncmp(name, "process_", 8) == 0 ||
            strncmp(name, "presence_build_info", 19) == 0)
            stats_add(&cn->store_stats, name, m->stats[i].value);
    }
}

/* ==== answers ================================================================================== */

/* Which member a socket is (0 for a single store). */
static unsigned s_member_of(const cache_node_t *cn, const void *sock)
{
    for (unsigned i = 0; i < cn->members.n; i++)
        if (cn->stores[i] == sock)
            return i;
    return 0;
}

/* Any answer from the store: to the request it answers. */
static void on_store_answer(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    cache_node_t *cn = ctx;
    preq_t *p = s_preq_find(cn, m->rid);
    if (!p)
        return; /* an answer after its deadline: already answered as a timeout */
    unsigned from = s_member_of(cn, in->sock);
    bool repl = leader_replicated(&cn->members);
    if (repl && (p->kind == PK_FORWARD || p->kind == PK_FETCH)) {
        if (p->parked || (p->member != from && (m->status == PROTO_ENOTLEADER || m->status == PROTO_EUNAVAIL)))
            return; /* a member's late refusal of what was sent again elsewhere (or waits for the leader) */
        if (m->status == PROTO_ENOTLEADER && s_not_leader(cn, p, m, from))
            return;
        if (m->status == PROTO_EUNAVAIL && s_retry_safe(p) && p->bytes && p->retries < RETRIES_MAX) {
            /* The leader lost its leadership with it in flight (outcome unknown): the new leader
             * applies it once (its command id), or reads. */
            s_park(cn, p);
            return;
        }
    }
    p = s_preq_take(cn, m->rid);
    uint64_t now = util_mono_ms();
    /* An answer proves the store path works, unless it says it does not (a relay without its
     * center answers EUNAVAIL, and its PONG says relay_link_up 0). */
    if ((p->kind == PK_FORWARD || p->kind == PK_FETCH) && m->status != PROTO_EUNAVAIL && m->status != PROTO_ETIMEOUT &&
        m->status != PROTO_ENOTLEADER) {
        cn->last_store_ok_ms = now;
        cn->store_answered = true;
    }
    uint64_t rtt = util_mono_us() - p->sent_us;
    cn->store_rtt_us = rtt;
    stats_hist_observe(&cn->store_rtt_hist, rtt);
    switch (p->kind) {
    case PK_FORWARD:
    case PK_FETCH:
        if (m->status == PROTO_ENOTLEADER) /* no leader to send it to: the store is unavailable */
            p->done(cn, p, NULL, PROTO_EUNAVAIL);
        else
            p->done(cn, p, m, m->status);
        break;
    case PK_PING:
        s_on_pong(cn, m, repl ? p->member : 0, now);
        break;
    case PK_STATS:
        s_on_store_stats(cn, m);
        break;
    }
    s_free(p);
}

static void on_store_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    ((cache_node_t *)ctx)->malformed_total++;
}

static const dispatch_t s_store = {
    .on_other = on_store_answer,
    .on_malformed = on_store_malformed,
};

void cache_link_frames(void *cn, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_store, cn, sock, frames, n);
}

/* ==== life ======================================================================================= */

void cache_link_init(cache_node_t *cn)
{
    idtab_init(&cn->pending);
    cn->next_rid = 1;
    proto_batch_init(&cn->store_batch);
    proto_buf_init(&cn->link_buf);
    stats_list_init(&cn->store_stats);
    stats_hist_init_latency(&cn->store_rtt_hist);
    cn->last_store_ok_ms = util_mono_ms(); /* optimistic until the first ping says otherwise */
    cn->link_up = true;
    if (util_random(cn->cmd_prefix, sizeof cn->cmd_prefix) < 0) {
        uint64_t t = util_now_us() ^ ((uint64_t)getpid() << 40);
        memcpy(cn->cmd_prefix, &t, sizeof t);
    }
}

int cache_link_open(cache_node_t *cn, char *err)
{
    if (leader_parse(&cn->members, cn->cfg.store_cmd, "STORE_CMD_ENDPOINT", err) < 0)
        return -1;
    int one = 1, ivl_max = 1000;
    for (unsigned i = 0; i < cn->members.n; i++) {
        void *s = zu_socket(cn->zctx, ZMQ_DEALER, 200000, 200000);
        if (!s) {
            snprintf(err, CFG_ERR_LEN, "zmq_socket: %s", zmq_strerror(errno));
            return -1;
        }
        cn->stores[i] = s;
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
        if (zmq_connect(s, cn->members.ep[i]) < 0) {
            snprintf(err, CFG_ERR_LEN, "connect %s: %s", cn->members.ep[i], zmq_strerror(errno));
            return -1;
        }
    }
    cn->store = cn->stores[0];
    if (leader_replicated(&cn->members))
        cn->link_up = false; /* up once a member says it leads */
    return 0;
}

void cache_link_cmd_id(cache_node_t *cn, uint8_t *out)
{
    uint64_t n = ++cn->next_cmd;
    memcpy(out, cn->cmd_prefix, 8);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (uint8_t)(n >> (8 * i));
}

void cache_link_close(cache_node_t *cn)
{
    for (unsigned i = 0; i < PROTO_MEMBERS_MAX; i++) {
        if (cn->stores[i])
            zmq_close(cn->stores[i]);
        cn->stores[i] = NULL;
    }
    cn->store = NULL;
}

void cache_link_fini(cache_node_t *cn)
{
    /* Answer what is still pending so gateways are not left waiting for a deadline. */
    while (cn->t_head)
        s_fail(cn, s_preq_take(cn, cn->t_head->link.id), PROTO_EUNAVAIL);
    idtab_fini(&cn->pending);
    proto_batch_fini(&cn->store_batch);
    proto_buf_fini(&cn->link_buf);
    stats_list_fini(&cn->store_stats);
    free(cn->store_rids);
    cn->store_rids = NULL;
}
