/* sesbench.c -- session opens and ends per second straight to a store-node (no HTTP).
 *
 *   sesbench ENDPOINT KIND USERS DEVICES WRITERS [both|open|end] [CYCLES]
 *
 * KIND says what a session is (REALTIME.md, DESIGN.md "Sessions"):
 *   rest   a REST client's session: PUT {session, device, ttl 3600}; its end is the same PUT with
 *          status offline (what DELETE .../sessions/{id} sends);
 *   conn   a WebSocket connection's session under one gateway lease: LEASE refresh first, then PUT
 *          with lease_id, conn_id and PROTO_CMD_F_OPEN; its end is PUT offline with the same lease
 *          and connection ids (a gateway's end of a closed connection after the grace);
 *   plain  no session at all: a 2.0 PUT online, and PUT offline as its "end" (the baseline).
 * USERS users ("user-<i>") with DEVICES sessions each, visited in a random order (a new one per
 * phase), WRITERS commands in flight: closed loop, each answered command is replaced at once. Each
 * phase prints one line:
 *
 *   phase open cycle 1 kind rest ... sessions N writers W acked A seconds S rate R/s p50_ms X p99_ms Y
 *     max_ms Z errors E commits C per_commit G commit_busy_pct B
 *
 * `both` runs CYCLES (default 1) cycles of open-then-end. The first opens of a fresh store extend
 * its file; later ones reuse the pages LMDB freed (scattered over the file), which is a store's
 * steady state and costs more: cycle 2 measures that.
 *
 * `open` alone leaves the sessions open (bytes per session, tests/bench/run.sh). Session ids and the
 * lease id are derived from the session's index, so `end` in a later run ends what `open` opened.
 * Latency is per command, from its send to its acknowledgement (the store acknowledges a write once
 * its group commit returned). The store's own counters (STATS) around the phase add: group commits,
 * commands per commit, and the share of the phase the writer spent committing (fsync included).
 * Single-threaded.
 */
#include "cli.h"
#include "proto.h"
#include "stats.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SB_LEASE_ID 0x5e55b0000000017ull /* fixed: a later `end` run finds the sessions under it */
#define SB_LEASE_TTL_MS 600000u          /* PROTO_LEASE_TTL_MAX_MS: outlives any phase */
#define SB_TTL_S 3600u
#define SB_NODE "gw-bench"
#define SB_WAIT_US 30000000ull /* no reply for this long: the store is gone */

enum { K_REST, K_CONN, K_PLAIN };
enum { P_OPEN, P_END };

typedef struct bench {
    void *sock;
    int kind;
    uint32_t users, devices;
    uint32_t n;          /* sessions: users x devices */
    uint32_t *order;     /* the phase's visiting order (a permutation of 0..n-1) */
    uint32_t writers;
    uint64_t *sent_us;   /* per slot: when its command went out */
    uint64_t *lat;       /* latencies of the phase, us */
    uint32_t nlat;
    uint64_t rng;
    proto_buf_t buf;
    proto_record_t rec;
} bench_t;

static const char *const s_kinds[] = {"rest", "conn", "plain"};
static const char *const s_devices[] = {"desktop", "phone", "tablet", "web"};

static uint64_t s_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t s_rand(bench_t *b)
{
    b->rng ^= b->rng << 13, b->rng ^= b->rng >> 7, b->rng ^= b->rng << 17;
    return b->rng;
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The command of phase `phase` for session `i`, encoded into b->buf with request id `rid`. */
static void s_encode(bench_t *b, int phase, uint32_t i, uint64_t rid)
{
    proto_record_t *r = &b->rec;
    uint32_t user = i % b->users, dev = i / b->users;
    char s[40];
    int n = snprintf(s, sizeof s, "user-%u", user);
    proto_record_set_uid(r, s, (size_t)n);
    r->status = phase == P_OPEN ? PRESENCE_ONLINE : PRESENCE_OFFLINE;
    r->ttl_s = SB_TTL_S;
    r->lease_id = r->conn_id = 0;
    r->cflags = 0;
    proto_record_set_msg(r, "", 0);
    if (b->kind == K_PLAIN) {
        r->cflags = PROTO_CMD_F_MSG;
        proto_record_set_sid(r, "", 0);
        proto_record_set_device(r, "", 0);
    } else {
        /* A 16-hex-digit id per session, as a client or a gateway would pick one. */
        n = snprintf(s, sizeof s, "%016llx", (unsigned long long)s_mix(i));
        proto_record_set_sid(r, s, (size_t)n);
        const char *d = s_devices[dev % 4];
        proto_record_set_device(r, d, strlen(d));
        if (b->kind == K_CONN) {
            r->lease_id = SB_LEASE_ID;
            r->conn_id = (uint64_t)i + 1;
            if (phase == P_OPEN)
                r->cflags = PROTO_CMD_F_OPEN;
        }
    }
    proto_buf_reset(&b->buf);
    proto_enc_records_cmd(&b->buf, PROTO_PUT, rid, r, 1);
}

/* Send b->buf, waiting (bounded) while the socket is not ready yet. Returns 0 or -1. */
static int s_send(bench_t *b)
{
    uint64_t until = util_mono_us() + SB_WAIT_US;
    while (zu_send(b->sock, NULL, 0, b->buf.data, b->buf.len) < 0) {
        if (errno != EAGAIN || util_mono_us() > until)
            return -1;
        zmq_pollitem_t pi = {.socket = b->sock, .events = ZMQ_POLLOUT};
        zmq_poll(&pi, 1, 10);
    }
    return 0;
}

/* Receive every waiting reply, calling on_reply for each decoded part (the store answers one
 * peer's acknowledgements of a group in one BATCH frame). Returns the replies seen. */
static uint32_t s_drain(bench_t *b, void (*on_reply)(bench_t *, const proto_msg_t *, void *), void *ctx)
{
    uint32_t seen = 0;
    for (;;) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(b->sock, f, ZU_FRAMES_MAX, &nf) < 0)
            break;
        proto_msg_t outer;
        if (nf != 1 || proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &outer) != PROTO_DEC_OK) {
            fprintf(stderr, "sesbench: undecodable reply (%s)\n", nf == 1 ? outer.err : "frames");
            if (nf == 1)
                proto_msg_fini(&outer);
            zu_close_frames(f, nf);
            continue;
        }
        if (outer.type == PROTO_BATCH) {
            for (uint32_t i = 0; i < outer.n; i++) {
                proto_msg_t m;
                if (proto_decode(outer.parts[i].p, outer.parts[i].len, &m) == PROTO_DEC_OK) {
                    on_reply(b, &m, ctx);
                    seen++;
                }
                proto_msg_fini(&m);
            }
        } else {
            on_reply(b, &outer, ctx);
            seen++;
        }
        proto_msg_fini(&outer);
        zu_close_frames(f, nf);
    }
    return seen;
}

/* ---- the lease (conn) ------------------------------------------------------------------------- */

typedef struct lease_wait {
    uint64_t rid;
    bool answered;
    uint8_t status;
} lease_wait_t;

static void on_lease_reply(bench_t *b, const proto_msg_t *m, void *ctx)
{
    lease_wait_t *w = ctx;
    if (m->rid == w->rid) {
        w->answered = true;
        w->status = m->status;
    }
}

/* Refresh (create) the lease the conn sessions are held by. Returns 0 or -1. */
static int s_lease(bench_t *b)
{
    lease_wait_t w = {.rid = 1ull << 40};
    proto_buf_reset(&b->buf);
    proto_enc_lease(&b->buf, w.rid, SB_LEASE_ID, PROTO_LEASE_REFRESH, SB_LEASE_TTL_MS, SB_NODE, strlen(SB_NODE));
    if (s_send(b) < 0)
        return -1;
    uint64_t until = util_mono_us() + SB_WAIT_US;
    while (!w.answered && util_mono_us() < until) {
        zmq_pollitem_t pi = {.socket = b->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 100) > 0)
            s_drain(b, on_lease_reply, &w);
    }
    if (!w.answered || w.status != PROTO_OK) {
        fprintf(stderr, "sesbench: LEASE %s\n", w.answered ? proto_status_name(w.status) : "unanswered");
        return -1;
    }
    return 0;
}

/* ---- the store's own counters ----------------------------------------------------------------- */

typedef struct store_counters {
    uint64_t rid;
    bool answered;
    uint64_t commits, commit_us; /* group commits, and the time spent in them (fsync included) */
} store_counters_t;

static void on_stats_reply(bench_t *b, const proto_msg_t *m, void *ctx)
{
    store_counters_t *c = ctx;
    if (m->type != PROTO_STATS_REPLY || m->rid != c->rid)
        return;
    c->answered = true;
    stats_find(m->stats, m->n, "store_commits_total", &c->commits);
    stats_find(m->stats, m->n, "store_commit_seconds_sum:us", &c->commit_us);
}

/* Read the store's commit counters (zero when it does not answer within a second). */
static store_counters_t s_counters(bench_t *b)
{
    store_counters_t c = {.rid = 2ull << 40};
    proto_buf_reset(&b->buf);
    proto_enc_simple(&b->buf, PROTO_STATS, c.rid);
    if (s_send(b) < 0)
        return c;
    uint64_t until = util_mono_us() + 1000000;
    while (!c.answered && util_mono_us() < until) {
        zmq_pollitem_t pi = {.socket = b->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 100) > 0)
            s_drain(b, on_stats_reply, &c);
    }
    return c;
}

/* ---- a phase ---------------------------------------------------------------------------------- */

typedef struct phase {
    int phase;
    uint32_t next, inflight;
    uint64_t errors, acked;
} phase_t;

static void on_phase_reply(bench_t *b, const proto_msg_t *m, void *ctx)
{
    phase_t *p = ctx;
    if (m->type != PROTO_REPLY || m->rid == 0 || m->rid > b->writers)
        return; /* not ours (a late LEASE reply) */
    uint32_t slot = (uint32_t)(m->rid - 1);
    uint64_t now = util_mono_us();
    p->inflight--;
    if (m->status == PROTO_OK) {
        p->acked++;
        b->lat[b->nlat++] = now - b->sent_us[slot];
    } else if (p->errors++ < 5) {
        fprintf(stderr, "sesbench: %s\n", proto_status_name(m->status));
    }
    if (p->next < b->n) {
        s_encode(b, p->phase, b->order[p->next++], m->rid);
        if (s_send(b) == 0) {
            b->sent_us[slot] = util_mono_us();
            p->inflight++;
        } else {
            p->errors++;
        }
    }
}

static int s_run_phase(bench_t *b, int phase, int cycle)
{
    for (uint32_t i = 0; i < b->n; i++)
        b->order[i] = i;
    for (uint32_t i = b->n - 1; i > 0; i--) { /* Fisher-Yates */
        uint32_t j = (uint32_t)(s_rand(b) % (i + 1u));
        uint32_t t = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = t;
    }
    phase_t p = {.phase = phase};
    b->nlat = 0;
    store_counters_t c0 = s_counters(b);
    uint64_t start = util_mono_us();
    for (uint32_t s = 0; s < b->writers && p.next < b->n; s++) {
        s_encode(b, phase, b->order[p.next++], (uint64_t)s + 1);
        if (s_send(b) < 0) {
            fprintf(stderr, "sesbench: cannot send\n");
            return -1;
        }
        b->sent_us[s] = util_mono_us();
        p.inflight++;
    }
    uint64_t progress = util_mono_us();
    while (p.inflight > 0) {
        zmq_pollitem_t pi = {.socket = b->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 100) > 0 && s_drain(b, on_phase_reply, &p) > 0)
            progress = util_mono_us();
        if (util_mono_us() - progress > SB_WAIT_US) {
            fprintf(stderr, "sesbench: %u replies missing\n", p.inflight);
            p.errors += p.inflight;
            break;
        }
    }
    double el = (double)(util_mono_us() - start) / 1e6;
    store_counters_t c1 = s_counters(b);
    uint64_t commits = c1.commits - c0.commits;
    qsort(b->lat, b->nlat, sizeof *b->lat, s_cmp_u64);
    double p50 = b->nlat ? (double)b->lat[b->nlat / 2] / 1000.0 : 0;
    double p99 = b->nlat ? (double)b->lat[(uint64_t)b->nlat * 99 / 100] / 1000.0 : 0;
    double mx = b->nlat ? (double)b->lat[b->nlat - 1] / 1000.0 : 0;
    printf("phase %s cycle %d kind %s users %u devices %u sessions %u writers %u acked %llu seconds %.2f rate %.0f/s "
           "p50_ms %.2f p99_ms %.2f max_ms %.2f errors %llu commits %llu per_commit %.0f commit_busy_pct %.0f\n",
           phase == P_OPEN ? "open" : "end", cycle, s_kinds[b->kind], b->users, b->devices, b->n, b->writers,
           (unsigned long long)p.acked, el, (double)p.acked / el, p50, p99, mx, (unsigned long long)p.errors, (unsigned long long)commits,
           commits ? (double)p.acked / (double)commits : 0.0, (double)(c1.commit_us - c0.commit_us) / (el * 1e4));
    fflush(stdout);
    return p.errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *usage = "ENDPOINT rest|conn|plain USERS DEVICES WRITERS [both|open|end] [CYCLES]";
    cli_tool(argc, argv, "sesbench", usage,
             "Session opens and ends per second straight to a store-node (REST sessions, connection sessions under "
             "a lease, or 2.0 PUTs), with ack latency.");
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: sesbench %s\n", usage);
        return 2;
    }
    bench_t b = {0};
    b.kind = -1;
    for (int k = 0; k < 3; k++)
        if (strcmp(argv[2], s_kinds[k]) == 0)
            b.kind = k;
    long users = atol(argv[3]), devices = atol(argv[4]), writers = atol(argv[5]);
    const char *phases = argc > 6 ? argv[6] : "both";
    long cycles = argc > 7 ? atol(argv[7]) : 1;
    if (b.kind < 0 || users < 1 || devices < 1 || devices > 256 || writers < 1 || writers > 100000 ||
        users * devices > 10000000 || (b.kind == K_PLAIN && devices != 1) || cycles < 1 || cycles > 100 ||
        (cycles > 1 && strcmp(phases, "both")) ||
        (strcmp(phases, "both") && strcmp(phases, "open") && strcmp(phases, "end"))) {
        fprintf(stderr, "sesbench: bad arguments: KIND is rest, conn or plain (plain: DEVICES 1); 1 <= DEVICES <= 256;"
                        " USERS x DEVICES <= 10,000,000; 1 <= WRITERS <= 100000; phase both, open or end; 1 <= CYCLES <= 100"
                        " (more than one only with both)\n");
        return 2;
    }
    b.users = (uint32_t)users;
    b.devices = (uint32_t)devices;
    b.n = (uint32_t)(users * devices);
    b.writers = (uint32_t)writers;
    b.order = xmalloc((size_t)b.n * sizeof *b.order);
    b.sent_us = xcalloc(b.writers, sizeof *b.sent_us);
    b.lat = xmalloc((size_t)b.n * sizeof *b.lat);
    b.rng = util_mono_us() | 1;
    proto_buf_init(&b.buf);
    memset(&b.rec, 0, sizeof b.rec);
    proto_record_set_node(&b.rec, SB_NODE, strlen(SB_NODE));

    void *ctx = zmq_ctx_new();
    b.sock = zu_socket(ctx, ZMQ_DEALER, 1000000, 1000000);
    if (!b.sock || zmq_connect(b.sock, argv[1]) < 0) {
        fprintf(stderr, "sesbench: connect %s: %s\n", argv[1], zmq_strerror(errno));
        return 1;
    }
    int rc = 0;
    for (int c = 1; c <= cycles && rc == 0; c++) {
        if (b.kind == K_CONN && s_lease(&b) < 0)
            rc = 1;
        if (rc == 0 && strcmp(phases, "end") != 0)
            rc = s_run_phase(&b, P_OPEN, c);
        if (rc == 0 && strcmp(phases, "open") != 0) {
            if (b.kind == K_CONN && s_lease(&b) < 0)
                rc = 1;
            else
                rc = s_run_phase(&b, P_END, c);
        }
    }
    proto_buf_fini(&b.buf);
    free(b.order);
    free(b.sent_us);
    free(b.lat);
    zmq_close(b.sock);
    zmq_ctx_term(ctx);
    return rc;
}
