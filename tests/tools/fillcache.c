/* fillcache.c -- fill a cache-node with N presence records and report its memory.
 *
 *   fillcache ENDPOINT PID N [PREFIX]
 *
 * Sends PUT commands of 1000 records each to the cache-node at ENDPOINT, which writes them to its
 * store and caches what the store acknowledges (an APPLY would not do: a cache-node holds an
 * APPLY only until the store confirms it): users "user-<i>" (12-ish bytes), status online, a
 * 24-byte message, node id "node-1". Then reads the node's RSS (/proc/PID/status) and its
 * cache_items and cache_cost_bytes. With PREFIX it reads instead: MGETs of 1000 keys
 * PREFIX<0..N-1>, each miss read through to the store and cached as the store holds it (the
 * records of users with sessions, say, written there before). It prints:
 *
 *   records N items I rss_before_kb A rss_after_kb B bytes_per_record X cost_bytes C cost_per_record Y
 */
#include "cli.h"
#include "proto.h"
#include "util.h"
#include "zutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long s_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int s_call(void *s, proto_buf_t *b, uint64_t rid, proto_msg_t *m)
{
    if (zu_send(s, NULL, 0, b->data, b->len) < 0)
        return -1;
    for (;;) {
        zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 10000) <= 0)
            return -1;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(s, f, ZU_FRAMES_MAX, &n) < 0)
            continue;
        int rc = proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), m);
        zu_close_frames(f, n);
        if (rc == PROTO_DEC_OK && m->rid == rid)
            return 0;
        proto_msg_fini(m);
    }
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "fillcache", "ENDPOINT PID N [PREFIX]", "Fill a cache-node with N records (APPLY, or with PREFIX reads through to the store) and report its RSS growth per record (BENCHMARKS.md).");
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: fillcache ENDPOINT PID N [PREFIX]\n");
        return 2;
    }
    const char *prefix = argc > 4 ? argv[4] : NULL;
    if (prefix && strlen(prefix) > 100) {
        fprintf(stderr, "fillcache: PREFIX is at most 100 bytes\n");
        return 2;
    }
    int pid = atoi(argv[2]);
    long n = atol(argv[3]);
    void *ctx = zmq_ctx_new();
    void *s = zu_socket(ctx, ZMQ_DEALER, 100000, 100000);
    zmq_connect(s, argv[1]);
    long before = s_rss_kb(pid);
    proto_record_t *recs = xcalloc(1000, sizeof *recs);
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t now = util_now_us(), rid = 0;
    for (long done = 0; prefix && done < n;) {
        /* Read through: the cache-node fetches every miss from the store and caches it. */
        char (*ids)[128] = xmalloc(1000 * sizeof *ids);
        proto_str_t keys[1000];
        uint32_t k = 0;
        for (; k < 1000 && done < n; k++, done++) {
            keys[k].p = ids[k];
            keys[k].len = (uint32_t)snprintf(ids[k], sizeof ids[k], "%s%ld", prefix, done);
        }
        proto_buf_reset(&b);
        proto_enc_keys(&b, ++rid, keys, k);
        free(ids);
        proto_msg_t m;
        if (s_call(s, &b, rid, &m) < 0) {
            fprintf(stderr, "fillcache: no answer\n");
            return 1;
        }
        proto_msg_fini(&m);
    }
    for (long done = 0; !prefix && done < n;) {
        uint32_t k = 0;
        for (; k < 1000 && done < n; k++, done++) {
            proto_record_t *r = &recs[k];
            char uid[32];
            int ul = snprintf(uid, sizeof uid, "user-%ld", done);
            proto_record_set_uid(r, uid, (size_t)ul);
            proto_record_set_msg(r, "in a meeting until three", 24);
            proto_record_set_node(r, "node-1", 6);
            r->status = PRESENCE_ONLINE;
            r->last_seen_us = r->updated_at_us = now;
            r->expires_at_us = now + 3600000000ull;
            r->ttl_s = 3600;
            r->version = (uint64_t)done + 1;
        }
        proto_buf_reset(&b);
        proto_enc_records_cmd(&b, PROTO_PUT, ++rid, recs, k);
        proto_msg_t m;
        if (s_call(s, &b, rid, &m) < 0) {
            fprintf(stderr, "fillcache: no answer\n");
            return 1;
        }
        int st = m.status;
        proto_msg_fini(&m);
        if (st != PROTO_OK) {
            fprintf(stderr, "fillcache: PUT answered status %d\n", st);
            return 1;
        }
    }
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_STATS, ++rid);
    proto_msg_t m;
    uint64_t items = 0, cost = 0;
    if (s_call(s, &b, rid, &m) == 0) {
        for (uint32_t i = 0; i < m.n; i++) {
            if (m.stats[i].name.len > 11 && memcmp(m.stats[i].name.p, "cache_items", 11) == 0)
                items = m.stats[i].value;
            if (m.stats[i].name.len > 16 && memcmp(m.stats[i].name.p, "cache_cost_bytes", 16) == 0)
                cost = m.stats[i].value;
        }
        proto_msg_fini(&m);
    }
    long after = s_rss_kb(pid);
    printf("records %ld items %llu rss_before_kb %ld rss_after_kb %ld bytes_per_record %.1f cost_bytes %llu "
           "cost_per_record %.1f\n", n, (unsigned long long)items, before, after,
           items ? (double)(after - before) * 1024.0 / (double)items : 0.0, (unsigned long long)cost,
           items ? (double)cost / (double)items : 0.0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
