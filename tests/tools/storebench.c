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
 * a slot goes out when its previous one is answered).
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

typedef struct slot {
    uint64_t sent_us;
} slot_t;

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
    int writers = atoi(argv[2]);
    double seconds = atof(argv[3]);
    unsigned users = argc > 4 ? (unsigned)atoi(argv[4]) : 100000;
    bool touch = argc > 5 && strcmp(argv[5], "touch") == 0;
    if (writers < 1 || seconds <= 0 || users < 1) {
        fprintf(stderr, "storebench: bad arguments\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
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
        proto_enc_records_cmd(&b, touch ? PROTO_TOUCH : PROTO_PUT, (uint64_t)i, &rec, 1);
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
                    proto_enc_records_cmd(&b, touch ? PROTO_TOUCH : PROTO_PUT, (uint64_t)i, &rec, 1);
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
