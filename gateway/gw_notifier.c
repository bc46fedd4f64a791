/* gw_notifier.c -- the poller of the notifier's STATS (see gw_notifier.h).
 *
 * One thread with one DEALER (ZMQ_IMMEDIATE: nothing queues while the notifier is away). Every
 * GW_NOTIFIER_POLL_MS it sends STATS with a fresh request id and waits at most
 * GW_NOTIFIER_TIMEOUT_MS for the answer, waking every 100 ms to see whether it should stop; an
 * answer to an older request is ignored. The last good answer is copied under a mutex; a reader
 * copies it out under the same mutex (a few hundred short names: microseconds).
 */
#include "gw_notifier.h"
#include "cfg.h"
#include "log.h"
#include "proto.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

static struct {
    pthread_t thread;
    bool started;
    atomic_bool stop;
    void *sock;
    pthread_mutex_t mu;
    stats_list_t last; /* guarded by mu */
    uint64_t last_ok_ms; /* guarded by mu; monotonic, 0 = never */
} s_n = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Wait up to ms for the answer to rid; keep it when it comes. */
static void s_wait_answer(uint64_t rid, uint64_t ms)
{
    uint64_t until = util_mono_ms() + ms;
    while (!atomic_load(&s_n.stop)) {
        uint64_t now = util_mono_ms();
        if (now >= until)
            return;
        zmq_pollitem_t it = {s_n.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)MIN(until - now, 100)) <= 0)
            continue;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n;
        while (zu_recv(s_n.sock, f, ZU_FRAMES_MAX, &n) == 0) {
            proto_msg_t m;
            bool mine = n == 1 && proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m) == PROTO_DEC_OK &&
                        m.type == PROTO_STATS_REPLY && m.rid == rid && m.status == PROTO_OK;
            if (mine) {
                pthread_mutex_lock(&s_n.mu);
                stats_list_reset(&s_n.last);
                for (uint32_t i = 0; i < m.n; i++) {
                    char name[PROTO_STAT_NAME_MAX + 1];
                    memcpy(name, m.stats[i].name.p, m.stats[i].name.len);
                    name[m.stats[i].name.len] = '\0';
                    stats_add(&s_n.last, name, m.stats[i].value);
                }
                s_n.last_ok_ms = util_mono_ms();
                pthread_mutex_unlock(&s_n.mu);
            }
            if (n == 1)
                proto_msg_fini(&m);
            zu_close_frames(f, n);
            if (mine)
                return;
        }
    }
}

static void *s_main(void *arg)
{
    (void)arg;
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = 0;
    while (!atomic_load(&s_n.stop)) {
        uint64_t started = util_mono_ms();
        proto_buf_reset(&b);
        proto_enc_simple(&b, PROTO_STATS, ++rid);
        if (zu_send(s_n.sock, NULL, 0, b.data, b.len) == 0)
            s_wait_answer(rid, GW_NOTIFIER_TIMEOUT_MS);
        /* Sleep out the rest of the period in short steps (stop is seen within 100 ms). */
        while (!atomic_load(&s_n.stop) && util_mono_ms() < started + GW_NOTIFIER_POLL_MS) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    proto_buf_fini(&b);
    return NULL;
}

int gw_notifier_start(void *zctx, const char *endpoint, char *err)
{
    s_n.sock = zu_socket(zctx, ZMQ_DEALER, 16, 16);
    int one = 1;
    if (!s_n.sock || zmq_setsockopt(s_n.sock, ZMQ_IMMEDIATE, &one, sizeof one) < 0 ||
        zmq_connect(s_n.sock, endpoint) < 0) {
        snprintf(err, CFG_ERR_LEN, "NOTIFIER_ENDPOINT: connect %s: %s", endpoint, zmq_strerror(errno));
        if (s_n.sock)
            zmq_close(s_n.sock);
        s_n.sock = NULL;
        return -1;
    }
    stats_list_init(&s_n.last);
    atomic_store(&s_n.stop, false);
    if (pthread_create(&s_n.thread, NULL, s_main, NULL) != 0) {
        snprintf(err, CFG_ERR_LEN, "pthread_create: %s", strerror(errno));
        zmq_close(s_n.sock);
        s_n.sock = NULL;
        stats_list_fini(&s_n.last);
        return -1;
    }
    s_n.started = true;
    return 0;
}

void gw_notifier_stop(void)
{
    if (!s_n.started)
        return;
    atomic_store(&s_n.stop, true);
    pthread_join(s_n.thread, NULL);
    zmq_close(s_n.sock);
    s_n.sock = NULL;
    stats_list_fini(&s_n.last);
    s_n.started = false;
}

bool gw_notifier_snapshot(stats_list_t *out)
{
    if (!s_n.started)
        return false;
    pthread_mutex_lock(&s_n.mu);
    bool fresh = s_n.last_ok_ms && util_mono_ms() - s_n.last_ok_ms <= 2 * GW_NOTIFIER_POLL_MS;
    if (fresh)
        for (uint32_t i = 0; i < s_n.last.n; i++) {
            char name[PROTO_STAT_NAME_MAX + 1];
            memcpy(name, s_n.last.v[i].name.p, s_n.last.v[i].name.len);
            name[s_n.last.v[i].name.len] = '\0';
            stats_add(out, name, s_n.last.v[i].value);
        }
    pthread_mutex_unlock(&s_n.mu);
    return fresh;
}
