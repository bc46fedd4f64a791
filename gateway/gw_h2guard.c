/* gw_h2guard.c -- requests that end before their answer, and HTTP/2 Rapid Reset (see
 * gw_h2guard.h).
 *
 * The attack (CVE-2023-44487): a client opens a stream (HEADERS) and resets it at once
 * (RST_STREAM), thousands of times a second on one connection. h2o 2.2.5 runs our handler for
 * each stream before it reads the reset, so each one costs a cache lookup, and the concurrent
 * stream limit never bites (the streams are gone by then). Debian's h2o has no fix.
 *
 * The mitigation: every request carries a small tracker in its pool; when the pool goes with the
 * request unanswered, the request is counted (status 499: the in-flight gauge no longer leaks)
 * and, for an HTTP/2 stream, noted against its connection (gw_conns_note_cancel). At the end of
 * the loop turn the notes are settled: a connection that has closed meanwhile took its streams
 * with it (not resets); one that is still open pays HTTP2_RESET_BUDGET cancels, refilled at
 * HTTP2_RESETS_PER_S, and is cut when it overdraws -- logged with its address, counted. Within the
 * turn, a stream on a connection already over budget (notes included) is answered 429 at once,
 * without a lookup, so one read full of HEADERS+RST_STREAM pairs costs at most the budget.
 * HTTP2_MAX_STREAMS bounds the streams h2o runs at once per connection (gw_main.c).
 *
 * One thread: the request's; the notes and the settling timer are per thread.
 */
#include "gw_h2guard.h"
#include "gw_config.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

typedef struct tracker {
    gw_rctx_t *rc;
    h2o_socket_t *sock;
    uint64_t serial;
} tracker_t;

static __thread h2o_timeout_entry_t s_settle;
static __thread gw_conns_t *s_settle_conns;

/* End of the loop turn: charge the noted cancels to the connections still open. */
static void on_settle(h2o_timeout_entry_t *e)
{
    gw_conns_ref_t cut[8];
    uint32_t n = gw_conns_settle_cancels(s_settle_conns, (double)gw_cfg.h2_resets_per_s, (double)gw_cfg.h2_reset_budget,
                                         util_mono_ms(), cut, 8);
    if (!n)
        return;
    atomic_fetch_add_explicit(&gw_metrics.h2_cut, n, memory_order_relaxed);
    struct sockaddr_storage ss;
    socklen_t sl = h2o_socket_getpeername(cut[0].sock, (struct sockaddr *)&ss);
    char addr[64] = "?";
    if (sl && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof addr);
    else if (sl && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof addr);
    LOG_RATELIMITED(LOG_WARN, 1000,
                    "HTTP/2 connection from %s cut (%u this turn): more than HTTP2_RESET_BUDGET=%llu streams cancelled "
                    "(refilled at HTTP2_RESETS_PER_S=%llu): rapid reset",
                    addr, n, (unsigned long long)gw_cfg.h2_reset_budget, (unsigned long long)gw_cfg.h2_resets_per_s);
}

static void on_dispose(void *p)
{
    tracker_t *t = p;
    gw_rctx_t *rc = t->rc;
    if (rc->counted)
        return;
    gw_reply_count(rc, 499); /* nobody to answer: counted once, out of the in-flight gauge */
    if (!t->sock)
        return; /* HTTP/1 (or a connection we do not know) */
    atomic_fetch_add_explicit(&gw_metrics.h2_cancelled, 1, memory_order_relaxed);
    gw_conns_note_cancel(rc->t->conns, t->sock, t->serial);
    if (!h2o_timeout_is_linked(&s_settle)) {
        s_settle.cb = on_settle;
        s_settle_conns = rc->t->conns;
        h2o_timeout_link(rc->t->h2o.loop, &rc->t->h2o.zero_timeout, &s_settle);
    }
}

int gw_h2guard_begin(h2o_req_t *req, gw_rctx_t *rc)
{
    tracker_t *t = h2o_mem_alloc_shared(&req->pool, sizeof *t, on_dispose);
    memset(t, 0, sizeof *t);
    t->rc = rc;
    if (req->version < 0x200)
        return 0;
    if (gw_conns_over_budget(rc->t->conns, req, (double)gw_cfg.h2_resets_per_s, (double)gw_cfg.h2_reset_budget,
                             util_mono_ms())) {
        gw_reply_error(req, rc, 429, GW_ERR_H2_RESETS);
        return -1;
    }
    t->serial = gw_conns_serial(rc->t->conns, req, &t->sock);
    if (t->sock) { /* h2o keeps the peer's address once asked: the log line still has it after a cut */
        struct sockaddr_storage ss;
        h2o_socket_getpeername(t->sock, (struct sockaddr *)&ss);
    }
    return 0;
}
