/* storebench.c -- acknowledged writes per second straight to a store-node (no HTTP).
 *
 *   storebench ENDPOINT WRITERS SECONDS [USERS] [TYPE]
 *
 * Keeps WRITERS single-record commands in flight on one DEALER (each answered one is replaced at
 * once), for SECONDS, over USERS distinct user ids (default 100000) chosen uniformly; TYPE is put
 * (default) or touch. Prints one line:
 *
 *   writers W acked N seconds S rate R/s p50_ms X p99_ms Y errors E
 *
 * Latency is measured per command from send to acknowledgement (closed loop: the next command of
 * a slot goes out when its previous one is answered). PUTs carry a command id, as a cache-node's do
 * (a replicated store records it in its dedup table).
 *
 * ENDPOINT may list the members of a replicated center (comma-separated): the bench asks each for
 * its STATS until one says it leads (store_repl_leading), and writes to that one.
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

typedef struct slot {
    uint64_t sent_us;
} slot_t;

/* The member of a replicated center that leads, asked with STATS (at most 15 s). Returns its
 * endpoint in out, or -1. */
static int s_find_leader(void *ctx, const char *list, char *out, size_t len)
{
    char copy[2048], *rest = copy, *tok;
    snprintf(copy, sizeof copy, "%s", list);
    char eps[8][512];
    int n = 0;
    while (n < 8 && (tok = strsep(&rest, ",")))
        snprintf(eps[n++], sizeof eps[0], "%s", tok);
    uint64_t until = util_mono_us() + 15000000;
    uint64_t rid = 1;
    while (util_mono_us() < until) {
        for (int i = 0; i < n; i++) {
            void *d = zu_socket(ctx, ZMQ_DEALER, 100, 100);
            zmq_connect(d, eps[i]);
            proto_buf_t b;
            proto_buf_init(&b);
            proto_enc_simple(&b, PROTO_STATS, ++rid);
            zmq_pollitem_t pi = {.socket = d, .events = ZMQ_POLLOUT};
            bool leads = false;
            if (zmq_poll(&pi, 1, 200) > 0 && zu_send(d, NULL, 0, b.data, b.len) == 0) {
                pi.events = ZMQ_POLLIN;
                zmq_msg_t f[ZU_FRAMES_MAX];
                int nf;
                if (zmq_poll(&pi, 1, 500) > 0 && zu_recv(d, f, ZU_FRAMES_MAX, &nf) == 0) {
                    proto_msg_t m;
                    uint64_t v = 0;
                    if (nf == 1 && proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m) == PROTO_DEC_OK)
                        leads = stats_find(m.stats, m.n, "store_repl_leading", &v) && v == 1;
                    if (nf == 1)
                        proto_msg_fini(&m);
                    zu_close_frames(f, nf);
                }
            }
            proto_buf_fini(&b);
            zmq_close(d);
            if (leads) {
                snprintf(out, len, "%s", eps[i]);
                return 0;
            }
        }
        zmq_pollitem_t none = {.socket = NULL, .fd = -1, .events = 0};
        zmq_poll(&none, 0, 50); /* between rounds: the election is under way */
    }
    return -1;
}

static int s_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "storebench", "ENDPOINT WRITERS SECONDS [USERS] [put|touch]", "Durable writes per second straight to a store-node.");
    if (argc < 4) {
        fprintf(stderr, "usage: storebench ENDPOINT WRITERS SECONDS [USERS] [put|touch]\n");
        return 2;
    }
    const char *ep = argv[1];
    char leader[512];
    int writers = atoi(argv[2]);
    double seconds = atof(argv[3]);
    unsigned users = argc > 4 ? (unsigned)atoi(argv[4]) : 100000;
    bool touch = argc > 5 && strcmp(argv[5], "touch") == 0;
    if (writers < 1 || seconds <= 0 || users < 1) {
        fprintf(stderr, "storebench: bad arguments\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    if (strchr(ep, ',')) {
        if (s_find_leader(ctx, ep, leader, sizeof leader) < 0) {
            fprintf(stderr, "storebench: no member of %s leads\n", ep);
            return 1;
        }
        ep = leader;
    }
    void *s = zu_socket(ctx, ZMQ_DEALER, 1000000, 1000000);
    if (zmq_connect(s, ep) < 0) {
        fprintf(stderr, "connect %s: %s\n", ep, zmq_strerror(errno));
        return 1;
    }
    slot_t *slots = xcalloc((size_t)writers, sizeof *slots);
    size_t lat_cap = 1 << 20, nlat = 0;
    uint64_t *lat = xmalloc(lat_cap * sizeof *lat);
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rng = util_mono_us() | 1;
    proto_record_t rec;
    memset(&rec, 0, sizeof rec);
    proto_record_set_node(&rec, "bench", 5);
    proto_record_set_msg(&rec, "benchmarking", 12);
    rec.status = PRESENCE_ONLINE;
    rec.ttl_s = 3600;
    uint8_t id[PROTO_CMD_ID_LEN];
    util_random(id, 8);
    uint64_t next_id = 0;

    uint64_t errors = 0, acked = 0;
    uint64_t start = util_mono_us(), end = start + (uint64_t)(seconds * 1e6);
    int inflight = 0;
    bool stopping = false;
    /* Slot i's request id is i; replies come back on the same DEALER. */
    for (int i = 0; i < writers; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        char uid[32];
        int n = snprintf(uid, sizeof uid, "bench%u", (unsigned)(rng % users));
        proto_record_set_uid(&rec, uid, (size_t)n);
        proto_buf_reset(&b);
        memcpy(id + 8, &(uint64_t){++next_id}, 8);
        proto_enc_records_cmd_id(&b, touch ? PROTO_TOUCH : PROTO_PUT, (uint64_t)i, &rec, 1, 0, touch ? NULL : id);
        /* Wait for the connection before the first send (startup, bounded by the deadline). */
        while (zu_send(s, NULL, 0, b.data, b.len) < 0) {
            if (util_mono_us() > end) {
                fprintf(stderr, "storebench: cannot send to %s\n", ep);
                return 1;
            }
            zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLOUT};
            zmq_poll(&pi, 1, 10);
        }
        slots[i].sent_us = util_mono_us();
        inflight++;
    }
    while (inflight > 0) {
        zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 1000) <= 0) {
            if (util_mono_us() > end + 10000000) {
                fprintf(stderr, "storebench: %d replies missing\n", inflight);
                break;
            }
            continue;
        }
        for (;;) {
            zmq_msg_t f[ZU_FRAMES_MAX];
            int nf;
            if (zu_recv(s, f, ZU_FRAMES_MAX, &nf) < 0)
                break;
            proto_msg_t outer, m;
            uint64_t now = util_mono_us();
            /* The store answers a peer's acknowledgements of one group in one BATCH frame. */
            uint32_t nparts = 1;
            bool batch = false;
            if (nf == 1 && proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &outer) == PROTO_DEC_OK &&
                outer.type == PROTO_BATCH) {
                batch = true;
                nparts = outer.n;
            }
            for (uint32_t part = 0; part < nparts; part++) {
            int drc = batch ? proto_decode(outer.parts[part].p, outer.parts[part].len, &m)
                            : proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m);
            if (nf == 1 && drc == PROTO_DEC_OK && m.rid < (uint64_t)writers) {
                int i = (int)m.rid;
                if (m.status == PROTO_OK) {
                    acked++;
                    if (nlat == lat_cap) {
                        lat_cap *= 2;
                        lat = xrealloc(lat, lat_cap * sizeof *lat);
                    }
                    lat[nlat++] = now - slots[i].sent_us;
                } else {
                    errors++;
                }
                inflight--;
                if (!stopping && now < end) {
                    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                    char uid[32];
                    int n = snprintf(uid, sizeof uid, "bench%u", (unsigned)(rng % users));
                    proto_record_set_uid(&rec, uid, (size_t)n);
                    proto_buf_reset(&b);
                    memcpy(id + 8, &(uint64_t){++next_id}, 8);
                    proto_enc_records_cmd_id(&b, touch ? PROTO_TOUCH : PROTO_PUT, (uint64_t)i, &rec, 1, 0,
                                             touch ? NULL : id);
                    if (zu_send(s, NULL, 0, b.data, b.len) == 0) {
                        slots[i].sent_us = util_mono_us();
                        inflight++;
                    } else {
                        errors++;
                    }
                } else {
                    stopping = true;
                }
            } else {
                errors++;
            }
            proto_msg_fini(&m);
            }
            if (batch || nf == 1)
                proto_msg_fini(&outer);
            zu_close_frames(f, nf);
        }
    }
    double el = (double)(util_mono_us() - start) / 1e6;
    qsort(lat, nlat, sizeof *lat, s_cmp);
    double p50 = nlat ? (double)lat[nlat / 2] / 1000.0 : 0, p99 = nlat ? (double)lat[nlat * 99 / 100] / 1000.0 : 0;
    printf("writers %d acked %llu seconds %.2f rate %.0f/s p50_ms %.2f p99_ms %.2f errors %llu\n", writers,
           (unsigned long long)acked, el, (double)acked / el, p50, p99, (unsigned long long)errors);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
