/* sesweep.c -- does the sweeper's bulk expiry of many sessions stall writes? Straight to a store-node.
 *
 *   sesweep CMD_ENDPOINT PUB_ENDPOINT conn|rest SESSIONS RATE [DUE_S]
 *
 * 1. Opens SESSIONS sessions, one per user ("sw-<i>"), all due at the same moment D = start + DUE_S
 *    (default 30): `conn` opens them under one gateway lease (LEASE, then PUT with the lease, a
 *    connection id and PROTO_CMD_F_OPEN) refreshed while they open so that it lapses exactly at D;
 *    `rest` opens REST sessions whose ttl (whole seconds) ends them in the second after D.
 * 2. From then until the sweep is over, sends a steady open-loop stream of ordinary 2.0 PUTs (RATE
 *    per second over 10,000 other users "w-<i>", paced by the clock, not by the answers) and times
 *    each acknowledgement.
 * 3. Watches the store's change stream (SUB) for the session users' offline changes: the sweep
 *    starts at D and is over when every opened user was published offline.
 * Prints three lines:
 *
 *   sweep kind K sessions N opened O ended E stream_gaps G open_s X first_ms F sweep_ms S chunks C
 *         max_chunk_gap_ms M
 *   writes before puts N p50_ms X p99_ms Y max_ms Z       (PUTs sent from 1 s after the opens to D)
 *   writes during puts N p50_ms X p99_ms Y max_ms Z       (PUTs sent from D to the last offline change)
 *
 * first_ms and sweep_ms are the first and the last offline change's arrival after D; chunks counts
 * the CHANGES messages that carried them (a sweep transaction of STORE_SWEEP_MAX users is published
 * as a few messages, back to back) and max_chunk_gap_ms is the longest time between two, i.e. the
 * longest time between two sweep transactions' publications; max_ms of the PUTs is the longest write pause a
 * client saw. stream_gaps counts holes in the stream's sequence (a dropped message: the figures
 * are then incomplete). Single-threaded; every wait has a deadline.
 */
#include "cli.h"
#include "proto.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SW_LEASE_ID 0x5e55eeee00000001ull
#define SW_NODE "gw-sweep"
#define SW_OPEN_INFLIGHT 256u
#define SW_STREAM_USERS 10000u
#define SW_RID_OPEN (1ull << 40) /* + slot; stream PUTs use 1..; LEASE above */
#define SW_RID_LEASE (2ull << 40)
#define SW_SWEEP_MAX_S 300 /* give up this long after D */

typedef struct sweep {
    void *cmd, *sub;
    bool conn;
    uint32_t n;
    uint64_t due_us;     /* D, wall clock */
    proto_buf_t buf;
    proto_record_t rec;
    /* opening */
    uint32_t next, inflight, opened, open_errors;
    uint64_t lease_rid;
    /* the stream of PUTs: per request id (1..), when it was sent (wall us) and its latency */
    uint64_t *sent, *lat;
    size_t nput, cap;
    uint64_t put_errors;
    /* the change stream */
    uint32_t ended, chunks;
    uint64_t first_end_us, last_end_us, last_seq, gaps, max_chunk_gap_us;
} sweep_t;

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int s_send(sweep_t *w)
{
    if (zu_send(w->cmd, NULL, 0, w->buf.data, w->buf.len) == 0)
        return 0;
    fprintf(stderr, "sesweep: send: %s\n", zmq_strerror(errno));
    return -1;
}

/* ---- commands --------------------------------------------------------------------------------- */

static void s_lease_refresh(sweep_t *w, uint64_t now)
{
    uint64_t left_ms = w->due_us > now ? (w->due_us - now) / 1000 : 1;
    proto_buf_reset(&w->buf);
    proto_enc_lease(&w->buf, ++w->lease_rid, SW_LEASE_ID, PROTO_LEASE_REFRESH, (uint32_t)(left_ms ? left_ms : 1),
                    SW_NODE, strlen(SW_NODE));
    s_send(w);
}

static void s_open_one(sweep_t *w, uint32_t slot)
{
    uint32_t i = w->next++;
    proto_record_t *r = &w->rec;
    char s[32];
    int n = snprintf(s, sizeof s, "sw-%u", i);
    proto_record_set_uid(r, s, (size_t)n);
    n = snprintf(s, sizeof s, "s%015x", i);
    proto_record_set_sid(r, s, (size_t)n);
    proto_record_set_device(r, "desktop", 7);
    proto_record_set_msg(r, "", 0);
    r->status = PRESENCE_ONLINE;
    if (w->conn) {
        r->lease_id = SW_LEASE_ID;
        r->conn_id = (uint64_t)i + 1;
        r->cflags = PROTO_CMD_F_OPEN;
        r->ttl_s = 3600; /* the horizon: no refresh of it comes due during the run */
    } else {
        uint64_t now = util_now_us();
        uint64_t left = w->due_us > now ? w->due_us - now : 0;
        r->ttl_s = (uint32_t)((left + 999999) / 1000000);
        if (r->ttl_s == 0)
            r->ttl_s = 1;
        r->lease_id = r->conn_id = 0;
        r->cflags = 0;
    }
    proto_buf_reset(&w->buf);
    proto_enc_records_cmd(&w->buf, PROTO_PUT, SW_RID_OPEN + slot, r, 1);
    if (s_send(w) == 0)
        w->inflight++;
    else
        w->open_errors++;
}

static void s_put_one(sweep_t *w, uint64_t *rng)
{
    if (w->nput == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1 << 16;
        w->sent = xrealloc(w->sent, w->cap * sizeof *w->sent);
        w->lat = xrealloc(w->lat, w->cap * sizeof *w->lat);
    }
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    proto_record_t r;
    memset(&r, 0, offsetof(proto_record_t, user_id));
    char s[32];
    int n = snprintf(s, sizeof s, "w-%u", (unsigned)(*rng % SW_STREAM_USERS));
    proto_record_set_uid(&r, s, (size_t)n);
    proto_record_set_node(&r, "node-1", 6);
    proto_record_set_msg(&r, "steady", 6);
    r.session_id[0] = r.device[0] = '\0';
    r.status = PRESENCE_ONLINE;
    r.ttl_s = 3600;
    r.cflags = PROTO_CMD_F_MSG;
    proto_buf_reset(&w->buf);
    proto_enc_records_cmd(&w->buf, PROTO_PUT, (uint64_t)w->nput + 1, &r, 1);
    w->sent[w->nput] = util_now_us();
    w->lat[w->nput] = UINT64_MAX; /* unanswered */
    w->nput++;
    if (s_send(w) < 0)
        w->put_errors++;
}

/* ---- replies and changes ---------------------------------------------------------------------- */

static void s_on_reply(sweep_t *w, const proto_msg_t *m)
{
    if (m->type != PROTO_REPLY)
        return;
    if (m->rid >= SW_RID_LEASE) {
        if (m->status != PROTO_OK)
            fprintf(stderr, "sesweep: LEASE %s\n", proto_status_name(m->status));
    } else if (m->rid >= SW_RID_OPEN) {
        w->inflight--;
        if (m->status == PROTO_OK)
            w->opened++;
        else if (w->open_errors++ < 5)
            fprintf(stderr, "sesweep: open: %s\n", proto_status_name(m->status));
        if (w->next < w->n)
            s_open_one(w, (uint32_t)(m->rid - SW_RID_OPEN));
    } else if (m->rid >= 1 && m->rid <= w->nput) {
        size_t i = (size_t)(m->rid - 1);
        if (m->status == PROTO_OK && w->lat[i] == UINT64_MAX)
            w->lat[i] = util_now_us() - w->sent[i];
        else
            w->put_errors++;
    }
}

static void s_drain_cmd(sweep_t *w)
{
    for (;;) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(w->cmd, f, ZU_FRAMES_MAX, &nf) < 0)
            return;
        proto_msg_t m;
        if (nf == 1 && proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m) == PROTO_DEC_OK) {
            if (m.type == PROTO_BATCH) {
                for (uint32_t i = 0; i < m.n; i++) {
                    proto_msg_t p;
                    if (proto_decode(m.parts[i].p, m.parts[i].len, &p) == PROTO_DEC_OK)
                        s_on_reply(w, &p);
                    proto_msg_fini(&p);
                }
            } else {
                s_on_reply(w, &m);
            }
        }
        if (nf == 1)
            proto_msg_fini(&m);
        zu_close_frames(f, nf);
    }
}

/* Take one message of the change stream, if one is waiting: decoding one (up to 500 records) takes
 * about a millisecond, and the PUT stream must go on being sent on time meanwhile. */
static void s_take_change(sweep_t *w)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int nf;
    if (zu_recv(w->sub, f, ZU_FRAMES_MAX, &nf) < 0)
        return;
    proto_msg_t m;
    if (nf == 2 && proto_decode(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &m) == PROTO_DEC_OK &&
        m.type == PROTO_CHANGES) {
        if (w->last_seq && m.first_seq > w->last_seq + 1)
            w->gaps++;
        w->last_seq = m.seq;
        uint64_t now = util_now_us();
        uint32_t ended = 0;
        for (uint32_t i = 0; i < m.n; i++) {
            const proto_change_t *c = &m.changes[i];
            ended += c->kind == PROTO_CH_SET && c->rec.status == PRESENCE_OFFLINE && c->rec.uid_len > 3 &&
                     memcmp(c->rec.user_id, "sw-", 3) == 0;
        }
        if (ended) {
            /* A sweep transaction is published as a few CHANGES messages back to back: the gaps
             * between messages are what the sweep leaves the writes. */
            if (!w->ended)
                w->first_end_us = now;
            else if (now - w->last_end_us > w->max_chunk_gap_us)
                w->max_chunk_gap_us = now - w->last_end_us;
            w->ended += ended;
            w->chunks++;
            w->last_end_us = now;
        }
    }
    if (nf == 2)
        proto_msg_fini(&m);
    zu_close_frames(f, nf);
}

/* Wait up to ms for either socket, then take everything waiting. */
static void s_poll(sweep_t *w, long ms)
{
    zmq_pollitem_t pi[2] = {{.socket = w->cmd, .events = ZMQ_POLLIN}, {.socket = w->sub, .events = ZMQ_POLLIN}};
    if (zmq_poll(pi, 2, ms) > 0) {
        s_drain_cmd(w);
        s_take_change(w);
    }
}

/* ---- the report ------------------------------------------------------------------------------- */

/* SESWEEP_TRACE=FILE: every PUT as "sent_ms_after_D latency_ms" (-1: unanswered), for plots. */
static void s_trace(const sweep_t *w, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "sesweep: %s: %s\n", path, strerror(errno));
        return;
    }
    for (size_t i = 0; i < w->nput; i++)
        fprintf(f, "%.3f %.3f\n", ((double)w->sent[i] - (double)w->due_us) / 1000.0,
                w->lat[i] == UINT64_MAX ? -1.0 : (double)w->lat[i] / 1000.0);
    fclose(f);
}

static void s_report_window(const sweep_t *w, const char *name, uint64_t from, uint64_t to)
{
    uint64_t *v = xmalloc((w->nput ? w->nput : 1) * sizeof *v);
    size_t n = 0, lost = 0;
    for (size_t i = 0; i < w->nput; i++) {
        if (w->sent[i] < from || w->sent[i] >= to)
            continue;
        if (w->lat[i] == UINT64_MAX)
            lost++;
        else
            v[n++] = w->lat[i];
    }
    qsort(v, n, sizeof *v, s_cmp_u64);
    printf("writes %s puts %zu unanswered %zu p50_ms %.2f p99_ms %.2f max_ms %.2f\n", name, n, lost,
           n ? (double)v[n / 2] / 1000.0 : 0.0, n ? (double)v[n * 99 / 100] / 1000.0 : 0.0,
           n ? (double)v[n - 1] / 1000.0 : 0.0);
    free(v);
}

int main(int argc, char **argv)
{
    const char *usage = "CMD_ENDPOINT PUB_ENDPOINT conn|rest SESSIONS RATE [DUE_S]";
    cli_tool(argc, argv, "sesweep", usage,
             "Open SESSIONS sessions due at one moment, then time a steady stream of PUTs while the store's "
             "sweeper ends them all (the longest write pause, and how long the sweep took).");
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: sesweep %s\n", usage);
        return 2;
    }
    sweep_t w = {0};
    w.conn = strcmp(argv[3], "conn") == 0;
    long n = atol(argv[4]), rate = atol(argv[5]), due_s = argc > 6 ? atol(argv[6]) : 30;
    if ((!w.conn && strcmp(argv[3], "rest") != 0) || n < 1 || n > 10000000 || rate < 1 || rate > 100000 ||
        due_s < 5 || due_s > 600) {
        fprintf(stderr, "sesweep: bad arguments: conn or rest; 1 <= SESSIONS <= 10,000,000; 1 <= RATE <= 100000;"
                        " 5 <= DUE_S <= 600 (a lease lives at most 600 s)\n");
        return 2;
    }
    w.n = (uint32_t)n;
    void *ctx = zmq_ctx_new();
    w.cmd = zu_socket(ctx, ZMQ_DEALER, 1000000, 1000000);
    w.sub = zu_socket(ctx, ZMQ_SUB, 0, 1000000);
    if (!w.cmd || !w.sub || zmq_connect(w.cmd, argv[1]) < 0 || zmq_setsockopt(w.sub, ZMQ_SUBSCRIBE, "C", 1) < 0 ||
        zmq_connect(w.sub, argv[2]) < 0) {
        fprintf(stderr, "sesweep: connect: %s\n", zmq_strerror(errno));
        return 1;
    }
    proto_buf_init(&w.buf);
    memset(&w.rec, 0, sizeof w.rec);
    proto_record_set_node(&w.rec, SW_NODE, strlen(SW_NODE));
    w.lease_rid = SW_RID_LEASE;
    uint64_t start = util_now_us();
    w.due_us = start + (uint64_t)due_s * 1000000u;

    /* 1. open, refreshing the lease every 500 ms so that it lapses at D */
    uint64_t next_refresh = 0;
    for (uint32_t s = 0; s < SW_OPEN_INFLIGHT && w.next < w.n; s++) {
        if (w.conn && s == 0) {
            s_lease_refresh(&w, util_now_us());
            next_refresh = util_now_us() + 500000;
            s_poll(&w, 1000); /* the lease first: an open under an unknown lease is refused */
        }
        s_open_one(&w, s);
    }
    while (w.inflight > 0 && util_now_us() < w.due_us) {
        s_poll(&w, 10);
        if (w.conn && util_now_us() >= next_refresh) {
            s_lease_refresh(&w, util_now_us());
            next_refresh = util_now_us() + 500000;
        }
    }
    uint64_t opened_at = util_now_us();
    if (w.conn)
        s_lease_refresh(&w, opened_at);
    if (opened_at + 2000000 > w.due_us) {
        fprintf(stderr, "sesweep: opening took %.1f s, too close to DUE_S: raise DUE_S\n",
                (double)(opened_at - start) / 1e6);
        return 1;
    }

    /* 2 and 3: the steady stream of PUTs while waiting for the sweep */
    uint64_t rng = util_mono_us() | 1, period = 1000000u / (uint64_t)rate, next_put = util_now_us();
    uint64_t give_up = w.due_us + (uint64_t)SW_SWEEP_MAX_S * 1000000u, stop = 0;
    for (;;) {
        uint64_t now = util_now_us();
        while (next_put <= now) {
            s_put_one(&w, &rng);
            next_put += period;
        }
        if (!stop && (w.ended >= w.opened || now > give_up))
            stop = now + 1000000; /* a second more: the last PUTs get their answers */
        if (stop && now >= stop)
            break;
        s_poll(&w, 1);
    }
    printf("sweep kind %s sessions %u opened %u ended %u stream_gaps %llu open_s %.1f first_ms %.0f sweep_ms %.0f "
           "chunks %u max_chunk_gap_ms %.0f\n",
           w.conn ? "conn" : "rest", w.n, w.opened, w.ended, (unsigned long long)w.gaps,
           (double)(opened_at - start) / 1e6,
           w.ended ? ((double)w.first_end_us - (double)w.due_us) / 1000.0 : -1.0,
           w.ended ? ((double)w.last_end_us - (double)w.due_us) / 1000.0 : -1.0, w.chunks,
           (double)w.max_chunk_gap_us / 1000.0);
    s_report_window(&w, "before", opened_at + 1000000, w.due_us);
    s_report_window(&w, "during", w.due_us, w.ended ? w.last_end_us : w.due_us);
    if (getenv("SESWEEP_TRACE"))
        s_trace(&w, getenv("SESWEEP_TRACE"));
    int rc = w.ended == w.opened && w.opened == w.n ? 0 : 1;
    free(w.sent);
    free(w.lat);
    proto_buf_fini(&w.buf);
    zmq_close(w.cmd);
    zmq_close(w.sub);
    zmq_ctx_term(ctx);
    return rc;
}
