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
 * turn, a stream on a connection already over budget (notes included) gets no work and no answer
 * (the connection is cut at the end of the turn, which ends it), so one read full of
 * HEADERS+RST_STREAM pairs costs at most the budget in lookups and little else. What one read can
 * hold is small: an HTTP/2 connection's receive buffer is 64 KiB (gw_front.c), and a cut discards
 * what the kernel still queues. HTTP2_MAX_STREAMS bounds the streams h2o runs at once per
 * connection (gw_main.c). The address of a cut connection goes to a penalty box for PENALTY_MS:
 * its new HTTP/2 connections are closed at their preface (gw_front.c) -- a reconnecting attacker
 * costs an accept, not a budget of lookups each time; HTTP/1 from it is still served, and our own
 * proxies (TRUST_PROXY) are never penalised.
 *
 * One thread: the request's; the notes and the settling timer are per thread.
 */
#include "gw_h2guard.h"
#include "gw_clientaddr.h"
#include "gw_config.h"
#include "gw_guard.h"
#include "gw_metrics.h"
#include "gw_penalty.h"
#include "gw_reply.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define PENALTY_MS 10000 /* an address whose connection was cut opens no HTTP/2 connection for this long */
#define PENALTY_SLOTS 4096

typedef struct tracker {
    gw_rctx_t *rc;
    h2o_socket_t *sock;
    uint64_t serial;
} tracker_t;

static __thread h2o_timeout_entry_t s_settle;
static __thread gw_conns_t *s_settle_conns;
static pthread_once_t s_penalty_once = PTHREAD_ONCE_INIT;
static gw_penalty_t *s_penalty;

static void s_penalty_init(void)
{
    s_penalty = gw_penalty_new(PENALTY_SLOTS);
}

/* sock's peer as a 16-byte address (IPv4 mapped) and as text; false when unknown. */
static bool s_peer(h2o_socket_t *sock, uint8_t a16[16], char *text, size_t tlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = h2o_socket_getpeername(sock, (struct sockaddr *)&ss);
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sl && ss.ss_family == AF_INET) {
        memcpy(a16, mapped, 12);
        memcpy(a16 + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text, (socklen_t)tlen);
        return true;
    }
    if (sl && ss.ss_family == AF_INET6) {
        memcpy(a16, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, text, (socklen_t)tlen);
        return true;
    }
    snprintf(text, tlen, "?");
    return false;
}

/* A peer that is one of our proxies speaks for many clients: never penalised. */
static bool s_is_our_proxy(const uint8_t a16[16])
{
    return gw_cfg.trust_proxy && (!gw_cfg.trusted.n || gw_clientaddr_is_trusted(&gw_cfg.trusted, a16));
}

bool gw_h2guard_refuse(h2o_socket_t *sock)
{
    pthread_once(&s_penalty_once, s_penalty_init);
    uint8_t a16[16];
    char text[64];
    if (!s_peer(sock, a16, text, sizeof text) || s_is_our_proxy(a16) ||
        !gw_penalty_check(s_penalty, a16, 16, util_mono_ms()))
        return false;
    atomic_fetch_add_explicit(&gw_metrics.h2_refused, 1, memory_order_relaxed);
    LOG_RATELIMITED(LOG_NOTICE, 1000, "HTTP/2 connection from %s refused: its last was cut for rapid reset (%d s penalty)",
                    text, PENALTY_MS / 1000);
    return true;
}

/* End of the loop turn: charge the noted cancels to the connections still open. */
static void on_settle(h2o_timeout_entry_t *e)
{
    gw_conns_ref_t cut[32];
    uint64_t now = util_mono_ms();
    uint32_t n = gw_conns_settle_cancels(s_settle_conns, (double)gw_cfg.h2_resets_per_s, (double)gw_cfg.h2_reset_budget,
                                         now, cut, 32);
    if (!n)
        return;
    atomic_fetch_add_explicit(&gw_metrics.h2_cut, n, memory_order_relaxed);
    pthread_once(&s_penalty_once, s_penalty_init);
    char addr[64] = "?";
    for (uint32_t i = 0; i < n && i < 32; i++) {
        uint8_t a16[16];
        if (s_peer(cut[i].sock, a16, addr, sizeof addr) && !s_is_our_proxy(a16))
            gw_penalty_add(s_penalty, a16, 16, now + PENALTY_MS);
    }
    s_peer(cut[0].sock, (uint8_t[16]){0}, addr, sizeof addr);
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
                             util_mono_ms()))
        return -1; /* taken, never answered: the connection is cut at the end of this turn */
    t->serial = gw_conns_serial(rc->t->conns, req, &t->sock);
    if (t->sock) { /* h2o keeps the peer's address once asked: the log line still has it after a cut */
        struct sockaddr_storage ss;
        h2o_socket_getpeername(t->sock, (struct sockaddr *)&ss);
    }
    return 0;
}
