/* replbench.c -- what the replicated log (store-node/repl.h) costs on this machine.
 *
 *   replbench throughput MEMBERS INFLIGHT SECONDS ENTRY_BYTES [ELECTION_MS]
 *       MEMBERS (1..5) forked member processes on 127.0.0.1, each with its raft log and LMDB
 *       state machine (tests/unit/repl_harness.c) in a temp dir. The leader keeps INFLIGHT
 *       proposals of ENTRY_BYTES outstanding (closed loop: an ended one is replaced at once);
 *       after one second of warm-up, counts for SECONDS the proposals applied on the leader
 *       with their cookie (= committed on a majority, then applied to LMDB) and their latency
 *       from repl_propose to that apply. One line:
 *         throughput members M inflight I entry B seconds S committed N rate R/s p50_us X p99_us Y candidacies C
 *       (C: times a member became a candidate during the measurement: spurious elections)
 *
 *   replbench direct SECONDS ENTRY_BYTES
 *       The baseline without replication: the same LMDB state machine in this process, one
 *       fsynced transaction per entry (what the store-node's writer does per group today in
 *       SYNC_MODE=full), serially. One line: direct entry B seconds S committed N rate R/s p50_us X p99_us Y
 *
 *   replbench failover KILLS [ELECTION_MS] [INFLIGHT] [ENTRY_BYTES]
 *       Three forked members under load (default 64 in flight, 2048 B). KILLS times: SIGKILL the
 *       leader, measure until the first proposal of a new leader (a higher term) is applied
 *       there, restart the killed member on its own dirs, wait until it caught up. One line per
 *       kill, then: failover kills K median_ms X p90_ms Y max_ms Z
 *
 *   replbench latency MEMBERS COUNT ENTRY_BYTES
 *       MEMBERS members in this process (one raft thread each); COUNT proposals one at a time to
 *       the leader, each waited for (condition variable, 5 s deadline) before the next: the cost
 *       of one commit when nothing else is in flight. One line:
 *         latency members M entry B count N p50_us X p90_us Y p99_us Z max_us W
 *
 *   replbench rejoin STATE_MB [ELECTION_MS]
 *       Three forked members whose state machines keep every entry's bytes (2048 B entries), so
 *       the LMDB state grows to STATE_MB; default snapshot threshold (8192) and trailing (1024).
 *       Then a follower is SIGKILLed and its directories wiped, 2048 more entries commit, and it
 *       restarts empty: it can only rejoin from the leader's snapshot. One line:
 *         rejoin state_mb M fill_s F snapshots_taken T snapshot_file_mb S rejoin_ms R
 *
 * Latencies are quarter-octave histogram upper edges (repl_harness.h). REPL_SNAPSHOT_THRESHOLD
 * and REPL_SNAPSHOT_TRAILING in the environment override repl's defaults (8192 and 1024 entries).
 */
#include "cli.h"
#include "tests/unit/repl_harness.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char s_base[512];

static void s_nap(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int s_leader(rh_shm_t *shm, unsigned n, const pid_t *pids)
{
    int best = -1;
    unsigned long long term = 0;
    for (unsigned i = 0; i < n; i++) {
        if (pids[i] > 0 && atomic_load(&shm->m[i].ready) && atomic_load(&shm->m[i].ready_term) > term) {
            best = (int)i;
            term = atomic_load(&shm->m[i].ready_term);
        }
    }
    return best;
}

static int s_wait_leader(rh_shm_t *shm, unsigned n, const pid_t *pids, unsigned timeout_ms)
{
    uint64_t deadline = util_mono_ms() + timeout_ms;
    int l;
    while ((l = s_leader(shm, n, pids)) < 0 && util_mono_ms() < deadline)
        s_nap(2);
    return l;
}

static void s_stop(rh_shm_t *shm, unsigned n, pid_t *pids)
{
    atomic_store(&shm->load, 0);
    atomic_store(&shm->stop, 1);
    for (unsigned i = 0; i < n; i++) {
        if (pids[i] > 0 && rh_wait_exit(pids[i], 30000) != 0)
            fprintf(stderr, "replbench: member %u did not stop cleanly\n", i + 1);
        pids[i] = 0;
    }
}

static void s_env_knobs(repl_config_t *t)
{
    const char *v;
    if ((v = getenv("REPL_SNAPSHOT_THRESHOLD")) && *v)
        t->snapshot_threshold = (unsigned)strtoul(v, NULL, 10);
    if ((v = getenv("REPL_SNAPSHOT_TRAILING")) && *v)
        t->snapshot_trailing = (unsigned)strtoul(v, NULL, 10);
}

static int s_throughput(unsigned members, unsigned inflight, double seconds, unsigned entry, unsigned et)
{
    rh_node_t nodes[REPL_MEMBERS_MAX];
    repl_config_t t = {0};
    t.election_timeout_ms = et;
    s_env_knobs(&t);
    t.max_outstanding = inflight;
    if (rh_cluster_init(nodes, members, s_base, &t) < 0)
        return 1;
    rh_shm_t *shm = rh_shm_new();
    shm->inflight = inflight;
    shm->entry_bytes = entry;
    pid_t pids[REPL_MEMBERS_MAX] = {0};
    for (unsigned i = 0; i < members; i++)
        pids[i] = rh_fork_member(nodes, i, shm);
    int l = s_wait_leader(shm, members, pids, 15000);
    if (l < 0) {
        fprintf(stderr, "replbench: no leader\n");
        s_stop(shm, members, pids);
        return 1;
    }
    atomic_store(&shm->load, 1);
    s_nap(1000);
    unsigned long long lat0[RH_LAT_BUCKETS], lat[RH_LAT_BUCKETS];
    for (int b = 0; b < RH_LAT_BUCKETS; b++)
        lat0[b] = atomic_load(&shm->m[l].lat[b]);
    unsigned long long a0 = atomic_load(&shm->m[l].acked), term0 = atomic_load(&shm->m[l].ready_term), e0 = 0, e1 = 0;
    for (unsigned i = 0; i < members; i++)
        e0 += atomic_load(&shm->m[i].elections);
    uint64_t t0 = util_mono_us();
    s_nap((unsigned)(seconds * 1000));
    unsigned long long a1 = atomic_load(&shm->m[l].acked);
    uint64_t t1 = util_mono_us();
    for (int b = 0; b < RH_LAT_BUCKETS; b++)
        lat[b] = atomic_load(&shm->m[l].lat[b]) - lat0[b];
    bool same = s_leader(shm, members, pids) == l && atomic_load(&shm->m[l].ready_term) == term0;
    for (unsigned i = 0; i < members; i++)
        e1 += atomic_load(&shm->m[i].elections);
    double secs = (double)(t1 - t0) / 1e6;
    printf("throughput members %u inflight %u entry %u seconds %.1f committed %llu rate %.0f/s p50_us %.0f p99_us %.0f "
           "candidacies %llu%s\n",
           members, inflight, entry, secs, a1 - a0, (double)(a1 - a0) / secs, rh_lat_pct(lat, 0.5), rh_lat_pct(lat, 0.99), e1 - e0,
           same ? "" : " (leadership changed during the run)");
    fflush(stdout);
    s_stop(shm, members, pids);
    rh_shm_destroy(shm);
    return 0;
}

static int s_direct(double seconds, unsigned entry)
{
    rh_fsm_t f = {0};
    char dir[600], err[REPL_ERR_LEN];
    snprintf(dir, sizeof dir, "%s/direct", s_base);
    if (rh_fsm_open(&f, dir, true, err) < 0) {
        fprintf(stderr, "replbench: %s\n", err);
        return 1;
    }
    unsigned char *buf = xmalloc(entry);
    unsigned long long lat[RH_LAT_BUCKETS] = {0}, n = 0;
    uint64_t t0 = util_mono_us(), end = t0 + (uint64_t)(seconds * 1e6), now = t0;
    while (now < end) {
        rh_entry_fill(buf, entry, n);
        uint64_t s = util_mono_us();
        if (rh_fsm_apply(&f, n + 1, buf, entry) < 0) {
            fprintf(stderr, "replbench: apply failed\n");
            return 1;
        }
        now = util_mono_us();
        uint64_t us = now - s;
        int b = us ? (int)(4.0 * __builtin_log2((double)us)) : 0;
        lat[b < RH_LAT_BUCKETS ? b : RH_LAT_BUCKETS - 1]++;
        n++;
    }
    double secs = (double)(now - t0) / 1e6;
    printf("direct entry %u seconds %.1f committed %llu rate %.0f/s p50_us %.0f p99_us %.0f\n", entry, secs, n, (double)n / secs,
           rh_lat_pct(lat, 0.5), rh_lat_pct(lat, 0.99));
    free(buf);
    rh_fsm_close(&f);
    return 0;
}

static pthread_mutex_t s_lat_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_lat_cond = PTHREAD_COND_INITIALIZER;
static uint64_t s_lat_acked;

static void s_lat_ack(void *ctx, void *cookie, uint64_t index)
{
    (void)ctx;
    (void)cookie;
    (void)index;
    pthread_mutex_lock(&s_lat_lock);
    s_lat_acked++;
    pthread_cond_signal(&s_lat_cond);
    pthread_mutex_unlock(&s_lat_lock);
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int s_latency(unsigned members, unsigned count, unsigned entry)
{
    rh_node_t nodes[REPL_MEMBERS_MAX];
    repl_config_t t = {0};
    char err[REPL_ERR_LEN];
    if (rh_cluster_init(nodes, members, s_base, &t) < 0)
        return 1;
    for (unsigned i = 0; i < members; i++) {
        nodes[i].fsm.on_ack = s_lat_ack;
        if (rh_node_start(&nodes[i], err) < 0) {
            fprintf(stderr, "replbench: %s\n", err);
            return 1;
        }
    }
    int l = rh_wait_leader(nodes, members, 15000), rc = 1;
    unsigned char *buf = xmalloc(entry);
    uint64_t *lat = xcalloc(count, sizeof *lat);
    unsigned done = 0;
    for (; l >= 0 && done < count; done++) {
        rh_entry_fill(buf, entry, done);
        pthread_mutex_lock(&s_lat_lock);
        uint64_t want = s_lat_acked + 1;
        pthread_mutex_unlock(&s_lat_lock);
        uint64_t t0 = util_mono_us();
        if (repl_propose(nodes[l].r, buf, entry, &lat[done]) != REPL_OK)
            break;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 5;
        pthread_mutex_lock(&s_lat_lock);
        int w = 0;
        while (s_lat_acked < want && w == 0)
            w = pthread_cond_timedwait(&s_lat_cond, &s_lat_lock, &dl);
        pthread_mutex_unlock(&s_lat_lock);
        if (w != 0)
            break;
        lat[done] = util_mono_us() - t0;
    }
    if (done == count) {
        qsort(lat, count, sizeof *lat, s_cmp_u64);
        printf("latency members %u entry %u count %u p50_us %llu p90_us %llu p99_us %llu max_us %llu\n", members, entry, count,
               (unsigned long long)lat[count / 2], (unsigned long long)lat[count * 9 / 10],
               (unsigned long long)lat[count * 99 / 100], (unsigned long long)lat[count - 1]);
        rc = 0;
    } else {
        fprintf(stderr, "replbench: proposal %u did not commit within 5 s\n", done + 1);
    }
    for (unsigned i = 0; i < members; i++)
        rh_node_stop(&nodes[i]);
    free(buf);
    free(lat);
    return rc;
}

static int s_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int s_failover(unsigned kills, unsigned et, unsigned inflight, unsigned entry)
{
    rh_node_t nodes[3];
    repl_config_t t = {0};
    t.election_timeout_ms = et;
    t.max_outstanding = inflight;
    s_env_knobs(&t);
    if (rh_cluster_init(nodes, 3, s_base, &t) < 0)
        return 1;
    rh_shm_t *shm = rh_shm_new();
    shm->inflight = inflight;
    shm->entry_bytes = entry;
    pid_t pids[3] = {0};
    for (unsigned i = 0; i < 3; i++)
        pids[i] = rh_fork_member(nodes, i, shm);
    double *ms = xcalloc(kills, sizeof *ms);
    unsigned done = 0;
    atomic_store(&shm->load, 1);
    int rc = 0;
    for (unsigned k = 0; k < kills; k++) {
        int l = s_wait_leader(shm, 3, pids, 15000);
        if (l < 0) {
            fprintf(stderr, "replbench: no leader before kill %u\n", k + 1);
            rc = 1;
            break;
        }
        /* Steady load on this leader first. */
        unsigned long long a = atomic_load(&shm->m[l].acked);
        uint64_t deadline = util_mono_ms() + 10000;
        while (atomic_load(&shm->m[l].acked) < a + 500 && util_mono_ms() < deadline)
            s_nap(5);
        unsigned long long old_term = atomic_load(&shm->m[l].ready_term);
        uint64_t kill_us = util_mono_us();
        kill(pids[l], SIGKILL);
        rh_wait_exit(pids[l], 5000);
        pids[l] = 0;
        atomic_store(&shm->m[l].ready, 0);
        unsigned long long first = 0;
        int l2 = -1;
        deadline = util_mono_ms() + 20000;
        while (util_mono_ms() < deadline) {
            l2 = s_leader(shm, 3, pids);
            if (l2 >= 0 && atomic_load(&shm->m[l2].ready_term) > old_term &&
                (first = atomic_load(&shm->m[l2].first_ack_us)) > kill_us)
                break;
            first = 0;
            s_nap(1);
        }
        if (!first) {
            fprintf(stderr, "replbench: no commit on a new leader within 20 s after kill %u\n", k + 1);
            rc = 1;
            break;
        }
        ms[done++] = (double)(first - kill_us) / 1000.0;
        printf("kill %u: member %d -> member %d, first commit after %.0f ms\n", k + 1, l + 1, l2 + 1, ms[done - 1]);
        fflush(stdout);
        /* Restart the killed member and wait until it caught up with the new leader. */
        pids[l] = rh_fork_member(nodes, (unsigned)l, shm);
        unsigned long long target = atomic_load(&shm->m[l2].commit_index);
        deadline = util_mono_ms() + 30000;
        while (atomic_load(&shm->m[l].state_index) < target && util_mono_ms() < deadline)
            s_nap(5);
        if (atomic_load(&shm->m[l].state_index) < target) {
            fprintf(stderr, "replbench: member %d did not catch up\n", l + 1);
            rc = 1;
            break;
        }
    }
    s_stop(shm, 3, pids);
    if (done) {
        qsort(ms, done, sizeof *ms, s_cmp_d);
        printf("failover election_ms %u kills %u median_ms %.0f p90_ms %.0f max_ms %.0f\n", et, done, ms[done / 2],
               ms[(done * 9) / 10 < done ? (done * 9) / 10 : done - 1], ms[done - 1]);
    }
    free(ms);
    rh_shm_destroy(shm);
    return rc;
}

/* Size in MB of the newest snapshot file in a raft directory. */
static double s_snapshot_mb(const char *raft_dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -t %s | grep -v meta | grep '^snapshot-' | head -1", raft_dir);
    FILE *p = popen(cmd, "r");
    char name[256] = "";
    if (!p)
        return 0;
    if (!fgets(name, sizeof name, p))
        name[0] = '\0';
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    if (!name[0])
        return 0;
    char path[1500];
    snprintf(path, sizeof path, "%s/%s", raft_dir, name);
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size / 1048576.0 : 0;
}

static int s_rejoin(unsigned state_mb, unsigned et)
{
    rh_node_t nodes[3];
    repl_config_t t = {0};
    t.election_timeout_ms = et;
    if (rh_cluster_init(nodes, 3, s_base, &t) < 0)
        return 1;
    rh_shm_t *shm = rh_shm_new();
    shm->inflight = 256;
    shm->entry_bytes = 2048;
    shm->keep_data = 1;
    pid_t pids[3] = {0};
    for (unsigned i = 0; i < 3; i++)
        pids[i] = rh_fork_member(nodes, i, shm);
    int rc = 1;
    int l = s_wait_leader(shm, 3, pids, 15000);
    if (l < 0) {
        fprintf(stderr, "replbench: no leader\n");
        goto out;
    }
    unsigned long long want = (unsigned long long)state_mb * 1048576ULL / 2048;
    uint64_t t0 = util_mono_us();
    atomic_store(&shm->load, 1);
    while (atomic_load(&shm->m[l].acked) < want && s_leader(shm, 3, pids) == l)
        s_nap(20);
    double fill_s = (double)(util_mono_us() - t0) / 1e6;
    if (s_leader(shm, 3, pids) != l) {
        fprintf(stderr, "replbench: leadership changed during the fill\n");
        goto out;
    }
    unsigned f = (unsigned)(l + 1) % 3;
    kill(pids[f], SIGKILL);
    rh_wait_exit(pids[f], 5000);
    pids[f] = 0;
    rh_node_wipe(&nodes[f]);
    unsigned long long a = atomic_load(&shm->m[l].acked);
    while (atomic_load(&shm->m[l].acked) < a + 2048)
        s_nap(5);
    atomic_store(&shm->load, 0);
    unsigned long long target = atomic_load(&shm->m[l].commit_index);
    uint64_t r0 = util_mono_us();
    pids[f] = rh_fork_member(nodes, f, shm);
    uint64_t deadline = util_mono_ms() + 600000;
    while (atomic_load(&shm->m[f].state_index) < target && util_mono_ms() < deadline)
        s_nap(5);
    if (atomic_load(&shm->m[f].state_index) < target) {
        fprintf(stderr, "replbench: the wiped member did not rejoin within 600 s\n");
        goto out;
    }
    double rejoin_ms = (double)(util_mono_us() - r0) / 1000.0;
    char rdir[700];
    snprintf(rdir, sizeof rdir, "%s/raft", nodes[l].base);
    printf("rejoin state_mb %u fill_s %.1f snapshots_taken %llu snapshot_file_mb %.1f snapshots_restored %llu "
           "rejoin_ms %.0f\n",
           state_mb, fill_s, atomic_load(&shm->m[l].snapshots_taken), s_snapshot_mb(rdir),
           atomic_load(&shm->m[f].snapshots_restored), rejoin_ms);
    rc = 0;
out:
    s_stop(shm, 3, pids);
    rh_shm_destroy(shm);
    return rc;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "replbench", "throughput|direct|failover|latency|rejoin ARGS (run without arguments)",
             "Replication benchmarks of store-node/repl.c: commits/s, latency, failover and rejoin times.");
    if (argc < 2) {
        fprintf(stderr, "usage: replbench throughput MEMBERS INFLIGHT SECONDS ENTRY_BYTES [ELECTION_MS]\n"
                        "       replbench direct SECONDS ENTRY_BYTES\n"
                        "       replbench failover KILLS [ELECTION_MS] [INFLIGHT] [ENTRY_BYTES]\n"
                        "       replbench latency MEMBERS COUNT ENTRY_BYTES\n"
                        "       replbench rejoin STATE_MB [ELECTION_MS]\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(s_base, sizeof s_base, "%s/replbench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s_base)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = 2;
    if (strcmp(argv[1], "throughput") == 0 && argc >= 6) {
        unsigned m = (unsigned)atoi(argv[2]), in = (unsigned)atoi(argv[3]), e = (unsigned)atoi(argv[5]);
        double secs = atof(argv[4]);
        unsigned et = argc > 6 ? (unsigned)atoi(argv[6]) : 1000;
        if (m >= 1 && m <= 5 && in >= 1 && in <= 65536 && secs > 0 && e >= 8 && e <= REPL_ENTRY_MAX)
            rc = s_throughput(m, in, secs, e, et);
    } else if (strcmp(argv[1], "direct") == 0 && argc >= 4) {
        double secs = atof(argv[2]);
        unsigned e = (unsigned)atoi(argv[3]);
        if (secs > 0 && e >= 8 && e <= REPL_ENTRY_MAX)
            rc = s_direct(secs, e);
    } else if (strcmp(argv[1], "failover") == 0 && argc >= 3) {
        unsigned k = (unsigned)atoi(argv[2]);
        unsigned et = argc > 3 ? (unsigned)atoi(argv[3]) : 1000;
        unsigned in = argc > 4 ? (unsigned)atoi(argv[4]) : 64;
        unsigned e = argc > 5 ? (unsigned)atoi(argv[5]) : 2048;
        if (k >= 1 && k <= 1000 && et >= 200 && in >= 1 && e >= 8 && e <= REPL_ENTRY_MAX)
            rc = s_failover(k, et, in, e);
    } else if (strcmp(argv[1], "latency") == 0 && argc >= 5) {
        unsigned m = (unsigned)atoi(argv[2]), n = (unsigned)atoi(argv[3]), e = (unsigned)atoi(argv[4]);
        if (m >= 1 && m <= 5 && n >= 1 && n <= 1000000 && e >= 8 && e <= REPL_ENTRY_MAX)
            rc = s_latency(m, n, e);
    } else if (strcmp(argv[1], "rejoin") == 0 && argc >= 3) {
        unsigned mb = (unsigned)atoi(argv[2]);
        unsigned et = argc > 3 ? (unsigned)atoi(argv[3]) : 1000;
        if (mb >= 1 && mb <= 4096 && et >= 200)
            rc = s_rejoin(mb, et);
    }
    if (rc == 2)
        fprintf(stderr, "replbench: bad arguments (run without arguments for usage)\n");
    rh_rmtree(s_base);
    return rc;
}
