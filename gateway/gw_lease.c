/* gw_lease.c -- the gateway's lease (see gw_lease.h).
 *
 * Protocol with the store (PROTO_LEASE through any cache-node that is up, which passes it on):
 *   refresh(id, ttl) -> OK             the lease lives ttl from now (the store's clock)
 *                    -> OK + F_LAPSED  the store did not hold it: a new id was just created (our
 *                                      first refresh of it), or a lease we held lapsed and its
 *                                      sessions were (or are being) ended -- never revived
 *   end(id)          -> OK             its sessions end now (a clean stop)
 * Lifecycle: a random 64-bit id is refreshed at once; the first answer makes it the published
 * lease (gw_lease_id), and connections are accepted from then on. Refreshes follow every
 * GATEWAY_LEASE_MS/3; a failed or timed-out refresh is retried within a second, so the lease
 * survives two lost refreshes with a third of its ttl to spare. F_LAPSED on a lease we held means
 * we were cut off longer than its ttl: the id is unpublished, a new random id is refreshed, and
 * once it is held every thread re-opens its connections' sessions under it (F_OPEN: a take-over,
 * so a session the sweeper has not ended yet never flaps).
 *
 * Liveness known to us: a refresh sent at t and answered OK proves the lease live until t + ttl
 * (the store stamped it after t); gw_lease_known_live tells sessions writers whether a refusal can
 * be blamed on the lease.
 *
 * Threads: the owner (event-loop thread 0) alone runs the timer and sends; the published id, the
 * proven deadline, the suspect flag and the count of threads still holding sessions are atomics
 * any thread reads or sets.
 */
#include "gw_lease.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_upstream.h"
#include "log.h"
#include "util.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define LEASE_TICK_MS 100
#define LEASE_RETRY_MS 1000
#define LEASE_FIRST_RETRY_MS 100 /* not held yet: the cache-nodes may still be connecting */
#define LEASE_SUSPECT_GAP_MS 500

static _Atomic uint64_t s_id;          /* published: the lease sessions open under; 0 = none */
static _Atomic uint64_t s_live_until;  /* monotonic ms: the published lease is live at least until then */
static atomic_bool s_suspect;          /* a writer asked for an early refresh */
static atomic_int s_active;            /* threads that may still hold sessions */

/* The owner's state: thread 0 only. */
static struct {
    gw_ctx_t *cx;
    uint64_t id;        /* the lease being refreshed (published once held) */
    bool held;          /* a refresh of id was answered */
    bool out;           /* a LEASE command is in flight */
    bool ending;        /* stopping: no more refreshes */
    uint64_t next_ms;   /* next refresh due (monotonic) */
    uint64_t last_suspect_ms;
    uint64_t started_ms;
    h2o_timeout_t tick_to;
    h2o_timeout_entry_t tick;
} s_own;

static uint64_t s_new_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (util_random(&id, sizeof id) < 0)
            id = util_mix64(util_now_us() ^ ((uint64_t)getpid() << 32) ^ util_mono_us());
    }
    return id;
}

static uint64_t s_interval_ms(void)
{
    return gw_cfg.ws_lease_ms / 3;
}

/* ==== refresh and end ========================================================================== */

static void on_lease_reply(gw_call_t *c, const proto_msg_t *m, int status)
{
    uint8_t op = (uint8_t)(uintptr_t)c->arg;
    uint64_t now = util_mono_ms(), sent_ms = c->start_us / 1000u;
    s_own.out = false;
    if (!m || m->status != PROTO_OK) {
        s_own.next_ms = now + (s_own.held ? MIN(LEASE_RETRY_MS, s_interval_ms()) : LEASE_FIRST_RETRY_MS);
        if (s_own.held || now - s_own.started_ms > 5000)
            LOG_RATELIMITED(LOG_WARN, 1000, "lease %016llx %s failed (%s): retrying", (unsigned long long)s_own.id,
                            op == PROTO_LEASE_END ? "end" : "refresh", proto_status_name(m ? m->status : status));
        return;
    }
    if (op == PROTO_LEASE_END) {
        atomic_store(&s_id, 0);
        atomic_store(&s_live_until, 0);
        s_own.held = false;
        LOG(LOG_NOTICE, "lease %016llx ended: its remaining sessions end now", (unsigned long long)s_own.id);
        return;
    }
    if ((m->flags & PROTO_REPLY_F_LAPSED) && s_own.held) {
        /* Cut off from the store longer than the ttl: the store ended (or is ending) every session
         * of it and never revives it. A new lease; the threads re-open their sessions under it. */
        atomic_fetch_add(&gw_metrics.lease_lapses, 1);
        LOG(LOG_WARN, "lease %016llx lapsed (no refresh reached the store for %llu ms): taking a new one; "
                      "connections re-open their sessions under it",
            (unsigned long long)s_own.id, (unsigned long long)gw_cfg.ws_lease_ms);
        atomic_store(&s_id, 0);
        atomic_store(&s_live_until, 0);
        s_own.held = false;
        s_own.id = s_new_id();
        s_own.next_ms = now;
        return;
    }
    /* Held: a new lease the store just created (F_LAPSED on its first refresh), or a refresh. */
    if (!s_own.held)
        LOG(LOG_NOTICE, "lease %016llx held (ttl %llu ms, refreshed every %llu ms)", (unsigned long long)s_own.id,
            (unsigned long long)gw_cfg.ws_lease_ms, (unsigned long long)s_interval_ms());
    s_own.held = true;
    atomic_fetch_add(&gw_metrics.lease_refreshes, 1);
    atomic_store(&s_live_until, sent_ms + gw_cfg.ws_lease_ms);
    atomic_store(&s_id, s_own.id);
    s_own.next_ms = sent_ms + s_interval_ms();
}

static void s_send(uint8_t op)
{
    gw_ctx_t *cx = s_own.cx;
    int node = gw_upstream_any(cx->up, -1);
    if (node < 0) {
        s_own.next_ms = util_mono_ms() + (s_own.held ? MIN(LEASE_RETRY_MS, s_interval_ms()) : LEASE_FIRST_RETRY_MS);
        if (s_own.held || util_mono_ms() - s_own.started_ms > 5000)
            LOG_RATELIMITED(LOG_WARN, 5000, "lease %016llx: no cache-node is up to carry the %s",
                            (unsigned long long)s_own.id, op == PROTO_LEASE_END ? "end" : "refresh");
        return;
    }
    uint64_t rid = gw_upstream_rid(cx->up);
    proto_buf_reset(&cx->pb);
    proto_enc_lease(&cx->pb, rid, s_own.id, op, (uint32_t)gw_cfg.ws_lease_ms, gw_cfg.node_id, strlen(gw_cfg.node_id));
    if (gw_upstream_send(cx->up, NULL, node, rid, PROTO_LEASE, &cx->pb, on_lease_reply, (void *)(uintptr_t)op))
        s_own.out = true;
}

static void on_tick(h2o_timeout_entry_t *e)
{
    uint64_t now = util_mono_ms();
    if (!s_own.out && !s_own.ending) {
        bool due = now >= s_own.next_ms;
        if (!due && atomic_load(&s_suspect) && now - s_own.last_suspect_ms >= LEASE_SUSPECT_GAP_MS) {
            due = true;
            s_own.last_suspect_ms = now;
        }
        if (due) {
            atomic_store(&s_suspect, false);
            s_send(PROTO_LEASE_REFRESH);
        }
    }
    h2o_timeout_link(s_own.cx->h2o.loop, &s_own.tick_to, &s_own.tick);
}

/* ==== the API ================================================================================== */

void gw_lease_start(gw_ctx_t *cx)
{
    s_own.cx = cx;
    s_own.id = s_new_id();
    s_own.next_ms = 0;
    s_own.started_ms = util_mono_ms();
    h2o_timeout_init(cx->h2o.loop, &s_own.tick_to, LEASE_TICK_MS);
    s_own.tick.cb = on_tick;
    h2o_timeout_link(cx->h2o.loop, &cx->h2o.zero_timeout, &s_own.tick);
}

uint64_t gw_lease_id(void)
{
    return atomic_load(&s_id);
}

bool gw_lease_known_live(void)
{
    return atomic_load(&s_id) != 0 && util_mono_ms() < atomic_load(&s_live_until);
}

void gw_lease_suspect(void)
{
    atomic_store(&s_suspect, true);
}

void gw_lease_thread_begin(void)
{
    atomic_fetch_add(&s_active, 1);
}

void gw_lease_thread_done(void)
{
    atomic_fetch_sub(&s_active, 1);
}

/* Run the owner's loop until cond() or the deadline. */
static void s_run_until(gw_ctx_t *cx, bool (*cond)(void), uint64_t deadline_ms)
{
    while (!cond() && util_mono_ms() < deadline_ms)
        h2o_evloop_run(cx->h2o.loop, 10);
}

static bool s_all_done(void)
{
    return atomic_load(&s_active) <= 0;
}

static bool s_idle(void)
{
    return !s_own.out;
}

void gw_lease_end(gw_ctx_t *cx, uint64_t deadline_ms)
{
    if (s_own.cx != cx)
        return;
    /* Refreshes go on while the other threads close their connections and their graces run out. */
    s_run_until(cx, s_all_done, deadline_ms);
    s_own.ending = true;
    if (h2o_timeout_is_linked(&s_own.tick))
        h2o_timeout_unlink(&s_own.tick);
    uint64_t answer_by = util_mono_ms() + gw_cfg.request_timeout_ms;
    s_run_until(cx, s_idle, answer_by); /* a refresh in flight first */
    if (!s_own.held)
        return; /* never held (or lost): the store holds nothing of ours to end */
    s_send(PROTO_LEASE_END);
    s_run_until(cx, s_idle, answer_by + gw_cfg.request_timeout_ms);
    if (s_own.held)
        LOG(LOG_WARN, "lease %016llx: the end was not confirmed; its sessions end when it lapses (%llu ms)",
            (unsigned long long)s_own.id, (unsigned long long)gw_cfg.ws_lease_ms);
}
