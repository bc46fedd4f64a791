/* integ_repl.c -- a replicated center (STORE_REPLICAS=3, docs/REPLICATION.md) with the real
 * binaries: three store-nodes (each its own DATA_DIR, raft on a loopback port), two cache-nodes and
 * a gateway that are given every member's endpoints and follow the leader by themselves.
 *
 *   failover   writes acknowledged, then SIGKILL of the leader: a new leader within 3 s (from the
 *              kill to the first acknowledged write), every acknowledged write readable with its
 *              version through the gateway and on the new leader, no read older than one served
 *              before, the cache-nodes' streams follow the new leader, the killed member rejoins
 *              and catches up
 *   partition  a follower stopped (SIGSTOP) while writes go on; continued, it catches up, and the
 *              leader keeps its term (pre-vote: a member back from a partition deposes no one)
 *   wiped      a member stopped and its data dir removed; the leader snapshots and trims its log;
 *              restarted empty, the member is rebuilt from a snapshot (InstallSnapshot) and the log
 *   minority   2 of 3 stopped: writes answer 503 within the request timeout and none is
 *              acknowledged; continued, the center serves again and nothing acknowledged is lost
 *   single     one member (STORE_REPLICAS with one address): a restart replays nothing twice and
 *              versions continue
 *   leaf       a leaf region whose relay is given every member's CENTER_PORT: its writes go on
 *              after the center's leader is killed, and what it acknowledged is kept
 *   launcher   `STORE_REPLICAS=3 presenced` starts three store-nodes that elect a leader and serve
 *   time       after a SIGKILL of the leader (and of a gateway with it), the new leader's lease
 *              sweep ends the dead gateway's sessions, a live gateway's sessions stay, and a ttl
 *              written before the kill is expired by the new leader's sweeper
 *
 * Every wait polls with a deadline; processes are signalled and stopped by pid (harness.h). The
 * failover time is printed as a grep-able line ("repl: failover ...").
 */
#include "harness.h"
#include "ws_steps.h"

#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define NST 3
#define NCACHE 2

/* Slower builds (ASan: CK_TIMEOUT_MULTIPLIER=3) get proportionally longer bounds. */
static int s_mult(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int v = m ? atoi(m) : 1;
    return v > 0 ? v : 1;
}

/* ==== the cluster ================================================================================ */

typedef struct cluster {
    char dir[256];
    int n;
    th_proc_t *store[NST], *cache[NCACHE], *gw;
    char cmd[NST][300], pub[NST][300];
    char cmd_list[1000], pub_list[1000], replicas[200];
    th_zc_t zc[NST], zcache[NCACHE];
    int port;
    int center_port[NST]; /* CENTER_PORT of each member (0: none) */
    const char *const *extra;    /* more store-node variables ("NAME=value", NULL-terminated) */
    const char *const *gw_extra; /* more gateway variables */
    char cache_eps[700];         /* CACHE_ENDPOINTS */
} cluster_t;

typedef struct mstat {
    bool ok;
    uint64_t leading, term, leader, seq, committed, records, installed, epoch, applied, role;
} mstat_t;

static int s_free_port(void)
{
    return th_free_ports(1);
}

static void s_extra(th_proc_t *p, const char *const *extra)
{
    for (int i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(p, name, "%s", eq + 1);
    }
}

static th_proc_t *s_store_proc(cluster_t *c, int i)
{
    char name[32], dd[300];
    snprintf(name, sizeof name, "store-node-%d", i + 1);
    snprintf(dd, sizeof dd, "%s/s%d", c->dir, i + 1);
    mkdir(dd, 0750);
    th_proc_t *p = th_proc(name, "store-node");
    th_env(p, "DATA_DIR", "%s", dd);
    th_env(p, "LOG_LEVEL", "info");
    th_env(p, "STORE_REPLICAS", "%s", c->replicas);
    th_env(p, "STORE_REPLICA_ID", "%d", i + 1);
    th_env(p, "STORE_CMD_ENDPOINT", "%s", c->cmd[i]);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", c->pub[i]);
    if (c->center_port[i]) {
        th_env(p, "CENTER_PORT", "%d", c->center_port[i]);
        th_env(p, "CENTER_BIND_ADDR", "127.0.0.1");
        th_env(p, "CENTER_INSECURE", "true"); /* loopback only: no CurveZMQ keys in this test */
    }
    s_extra(p, c->extra);
    return p;
}

static void s_common(cluster_t *c, th_proc_t *p)
{
    th_env(p, "DATA_DIR", "%s", c->dir);
    th_env(p, "JWT_SECRET", "%s", TH_SECRET);
    th_env(p, "NODE_ID", "test-node");
    th_env(p, "LOG_LEVEL", "info");
    th_env(p, "STORE_CMD_ENDPOINT", "%s", c->cmd_list);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", c->pub_list);
}

/* A gateway in front of the cluster's cache-nodes (started, ready); its HTTP port in *port. */
static th_proc_t *s_gateway(cluster_t *c, const char *name, int *port)
{
    th_proc_t *gw = th_proc(name, "gateway");
    s_common(c, gw);
    th_env(gw, "SERVICE_PORT", "0");
    th_env(gw, "SERVICE_ADDR", "127.0.0.1");
    th_env(gw, "CACHE_ENDPOINTS", "%s", c->cache_eps);
    th_env(gw, "RATE_LIMIT_WRITES", "0"); /* the tests write fast as one user */
    s_extra(gw, c->gw_extra);
    ck_assert_int_eq(th_start(gw, 20000), 0);
    const char *colon = strrchr(gw->ready, ':');
    *port = colon ? atoi(colon + 1) : 0;
    ck_assert_int_gt(*port, 0);
    return gw;
}

/* n store-nodes (not waiting for a leader; with `center`, each serving leaf relays on its own
 * CENTER_PORT), NCACHE cache-nodes and a gateway (gw_extra: more of its variables, or NULL). */
static void s_start2(cluster_t *c, int n, const char *const *extra, bool center, const char *const *gw_extra)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->extra = extra;
    c->gw_extra = gw_extra;
    for (int i = 0; center && i < n; i++) {
        c->center_port[i] = th_free_port_pair();
        ck_assert_int_gt(c->center_port[i], 0);
    }
    snprintf(c->dir, sizeof c->dir, "%s", th_tmpdir());
    char run[300];
    snprintf(run, sizeof run, "%s/run", c->dir);
    mkdir(run, 0750);
    for (int i = 0; i < n; i++) {
        snprintf(c->cmd[i], sizeof c->cmd[i], "ipc://%s/s%d-cmd.sock", run, i + 1);
        snprintf(c->pub[i], sizeof c->pub[i], "ipc://%s/s%d-pub.sock", run, i + 1);
        size_t l = strlen(c->cmd_list);
        snprintf(c->cmd_list + l, sizeof c->cmd_list - l, "%s%s", i ? "," : "", c->cmd[i]);
        l = strlen(c->pub_list);
        snprintf(c->pub_list + l, sizeof c->pub_list - l, "%s%s", i ? "," : "", c->pub[i]);
        l = strlen(c->replicas);
        int port = s_free_port();
        ck_assert_int_gt(port, 0);
        snprintf(c->replicas + l, sizeof c->replicas - l, "%s127.0.0.1:%d", i ? "," : "", port);
    }
    for (int i = 0; i < n; i++) {
        c->store[i] = s_store_proc(c, i);
        ck_assert_int_eq(th_start(c->store[i], 20000), 0);
        ck_assert_int_eq(th_zc_open(&c->zc[i], c->cmd[i]), 0);
    }
    char *eps = c->cache_eps;
    for (int i = 0; i < NCACHE; i++) {
        char name[32], ep[300];
        snprintf(name, sizeof name, "cache-node-%d", i + 1);
        snprintf(ep, sizeof ep, "ipc://%s/cache-%d.sock", run, i + 1);
        c->cache[i] = th_proc(name, "cache-node");
        s_common(c, c->cache[i]);
        th_env(c->cache[i], "CACHE_ENDPOINT", "%s", ep);
        th_env(c->cache[i], "CACHE_ID", "c%d", i + 1);
        ck_assert_int_eq(th_start(c->cache[i], 20000), 0);
        ck_assert_int_eq(th_zc_open(&c->zcache[i], ep), 0);
        size_t l = strlen(eps);
        snprintf(eps + l, sizeof c->cache_eps - l, "%s%s", i ? "," : "", ep);
    }
    c->gw = s_gateway(c, "gateway", &c->port);
}

static void s_start(cluster_t *c, int n, const char *const *extra)
{
    s_start2(c, n, extra, false, NULL);
}

static void s_stop(cluster_t *c)
{
    for (int i = 0; i < NCACHE; i++)
        th_zc_close(&c->zcache[i]);
    for (int i = 0; i < c->n; i++)
        th_zc_close(&c->zc[i]);
    ck_assert_int_eq(th_stop(c->gw, 15000), 0);
    for (int i = 0; i < NCACHE; i++)
        ck_assert_int_eq(th_stop(c->cache[i], 10000), 0);
    for (int i = 0; i < c->n; i++)
        if (!c->store[i]->reaped)
            ck_assert_int_eq(th_stop(c->store[i], 15000), 0);
}

/* One STATS call with a short deadline (a stopped member does not answer). */
static int s_stats(th_zc_t *z, proto_msg_t *m, int timeout_ms)
{
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_simple(&b, PROTO_STATS, rid);
    int rc = th_zc_call(z, &b, rid, m, timeout_ms);
    proto_buf_fini(&b);
    return rc;
}

static uint64_t s_find(const proto_msg_t *m, const char *name)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < m->n; i++)
        if (m->stats[i].name.len == strlen(name) && memcmp(m->stats[i].name.p, name, m->stats[i].name.len) == 0)
            v = m->stats[i].value;
    return v;
}

static mstat_t s_member(cluster_t *c, int i)
{
    mstat_t st = {0};
    proto_msg_t m;
    if (c->store[i]->reaped || s_stats(&c->zc[i], &m, 300) < 0)
        return st;
    st.ok = true;
    st.leading = s_find(&m, "store_repl_leading");
    st.term = s_find(&m, "store_repl_term");
    st.leader = s_find(&m, "store_repl_leader");
    st.role = s_find(&m, "store_repl_role");
    st.seq = s_find(&m, "store_sequence");
    st.committed = s_find(&m, "store_committed_sequence");
    st.records = s_find(&m, "store_records");
    st.installed = s_find(&m, "store_repl_snapshots_installed_total");
    st.epoch = s_find(&m, "store_epoch");
    st.applied = s_find(&m, "store_repl_applied_index");
    proto_msg_fini(&m);
    return st;
}

/* Both cache-nodes have found the member that leads (their store link is up). */
static bool s_caches_up(cluster_t *c, uint64_t until)
{
    do {
        int up = 0;
        for (int k = 0; k < NCACHE; k++) {
            uint64_t v = 0;
            if (th_zc_stat(&c->zcache[k], "cache_store_up", &v) == 0 && v == 1)
                up++;
        }
        if (up == NCACHE)
            return true;
        usleep(20000);
    } while (th_now_ms() < until);
    return false;
}

/* The member that leads (serves) now, once the cache-nodes follow it too, polled until timeout_ms;
 * -1 if none. `not` is skipped. */
static int s_leader(cluster_t *c, int not, int timeout_ms)
{
    uint64_t until = th_now_ms() + (uint64_t)timeout_ms;
    do {
        for (int i = 0; i < c->n; i++) {
            if (i == not)
                continue;
            mstat_t st = s_member(c, i);
            if (st.ok && st.leading)
                return s_caches_up(c, until) ? i : -1;
        }
        usleep(20000);
    } while (th_now_ms() < until);
    return -1;
}

/* ==== HTTP ======================================================================================= */

static int s_put(cluster_t *c, const char *uid, const char *msg, long *version, int timeout_ms)
{
    char auth[1024], path[256], body[256];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    snprintf(body, sizeof body, "{\"status\":\"busy\",\"message\":\"%s\",\"ttl\":3600}", msg);
    th_resp_t r;
    if (th_http(c->port, "PUT", path, auth, body, strlen(body), &r, timeout_ms) < 0)
        return -1;
    int status = r.status;
    if (status == 200 && version) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
        *version = rec ? (long)json_integer_value(json_object_get(rec, "version")) : -1;
        json_decref(j);
    }
    th_resp_free(&r);
    return status;
}

/* GET through the gateway: status; on 200 the version and message. */
static int s_get(cluster_t *c, const char *uid, long *version, char *msg, size_t mlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    if (th_http(c->port, "GET", path, NULL, NULL, 0, &r, 5000) < 0)
        return -1;
    int status = r.status;
    if (status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
        *version = rec ? (long)json_integer_value(json_object_get(rec, "version")) : -1;
        const char *m = rec ? json_string_value(json_object_get(rec, "message")) : NULL;
        snprintf(msg, mlen, "%s", m ? m : "");
        json_decref(j);
    }
    th_resp_free(&r);
    return status;
}

#define NUSERS 40

typedef struct acked {
    char uid[32], msg[32];
    long version;
} acked_t;

static void s_write_users(cluster_t *c, acked_t *a, int n, const char *prefix, const char *tag)
{
    for (int i = 0; i < n; i++) {
        snprintf(a[i].uid, sizeof a[i].uid, "%s%d", prefix, i);
        snprintf(a[i].msg, sizeof a[i].msg, "%s-%d", tag, i);
        int st = s_put(c, a[i].uid, a[i].msg, &a[i].version, 5000);
        ck_assert_msg(st == 200, "PUT %s answered %d", a[i].uid, st);
        ck_assert_int_gt(a[i].version, 0);
    }
}

/* Every acknowledged write is what the gateway and the serving member show (same version and
 * message: nothing else wrote those users). */
static void s_check_users(cluster_t *c, const acked_t *a, int n, int leader)
{
    for (int i = 0; i < n; i++) {
        long v = 0;
        char msg[64];
        int st = s_get(c, a[i].uid, &v, msg, sizeof msg);
        ck_assert_msg(st == 200, "GET %s answered %d", a[i].uid, st);
        ck_assert_msg(v == a[i].version && strcmp(msg, a[i].msg) == 0, "%s: version %ld '%s', acknowledged %ld '%s'",
                      a[i].uid, v, msg, a[i].version, a[i].msg);
        proto_record_t rec;
        ck_assert_int_eq(th_zc_get(&c->zc[leader], a[i].uid, &rec, NULL), PROTO_OK);
        ck_assert_int_eq((long)rec.version, a[i].version);
        ck_assert_str_eq(rec.message, a[i].msg);
    }
}

/* Poll until member i holds what the leader holds (same last sequence and record count). */
static bool s_caught_up(cluster_t *c, int i, int leader, int timeout_ms, mstat_t *out)
{
    uint64_t until = th_now_ms() + (uint64_t)timeout_ms;
    do {
        mstat_t l = s_member(c, leader), f = s_member(c, i);
        if (l.ok && f.ok && f.committed == l.committed && f.records == l.records && f.epoch == l.epoch) {
            if (out)
                *out = f;
            return true;
        }
        usleep(50000);
    } while (th_now_ms() < until);
    return false;
}

/* Both cache-nodes' streams are live at the leader's published sequence. */
static bool s_caches_follow(cluster_t *c, int leader, int timeout_ms)
{
    uint64_t until = th_now_ms() + (uint64_t)timeout_ms;
    do {
        mstat_t l = s_member(c, leader);
        int ok = 0;
        for (int k = 0; k < NCACHE && l.ok; k++) {
            uint64_t seq = 0, state = 0;
            if (th_zc_stat(&c->zcache[k], "sync_sequence", &seq) == 0 &&
                th_zc_stat(&c->zcache[k], "cache_sync_state", &state) == 0 && seq == l.seq && state == 1)
                ok++;
        }
        if (ok == NCACHE)
            return true;
        usleep(50000);
    } while (th_now_ms() < until);
    return false;
}

/* /health/store's replication object names `leader` (0-based) with three members, and /metrics
 * carries the raft series (polled: cache-nodes poll the leader's stats every second). */
static bool s_health_names_leader(cluster_t *c, int leader, int timeout_ms)
{
    uint64_t until = th_now_ms() + (uint64_t)timeout_ms;
    do {
        th_resp_t r;
        bool ok = false;
        if (th_http(c->port, "GET", "/health/store", NULL, NULL, 0, &r, 3000) == 0) {
            json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
            json_t *rep = j ? json_object_get(j, "replication") : NULL;
            json_t *mem = rep ? json_object_get(rep, "members") : NULL;
            ok = r.status == 200 && rep && json_integer_value(json_object_get(rep, "leader")) == leader + 1 &&
                 json_integer_value(json_object_get(rep, "term")) > 0 && json_array_size(mem) == NST;
            json_decref(j);
            th_resp_free(&r);
        }
        if (ok && th_http(c->port, "GET", "/metrics", NULL, NULL, 0, &r, 3000) == 0) {
            ok = r.status == 200 && r.body && strstr(r.body, "store_repl_term") &&
                 strstr(r.body, "store_repl_member_lag_entries{member=\"1\"}") &&
                 strstr(r.body, "store_repl_commit_seconds_bucket");
            th_resp_free(&r);
            if (ok)
                return true;
        }
        usleep(100000);
    } while (th_now_ms() < until);
    return false;
}

/* ==== tests ===================================================================================== */

START_TEST(test_failover)
{
    cluster_t c;
    s_start(&c, NST, NULL);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    acked_t a[NUSERS];
    s_write_users(&c, a, NUSERS, "u", "before");
    mstat_t before = s_member(&c, leader);
    ck_assert(before.ok && before.epoch != 0);
    /* A hot key read before the kill: no read may show an older version afterwards. */
    long hot_v = 0;
    char msg[64];
    ck_assert_int_eq(s_get(&c, a[0].uid, &hot_v, msg, sizeof msg), 200);

    uint64_t t0 = th_now_ms();
    th_kill(c.store[leader]);
    long v = 0;
    int writes = 0, st = 0;
    char probe_msg[32];
    while (th_now_ms() - t0 < (uint64_t)10000 * s_mult()) {
        snprintf(probe_msg, sizeof probe_msg, "probe-%d", ++writes);
        st = s_put(&c, "probe", probe_msg, &v, 3000);
        if (st == 200)
            break;
        ck_assert_msg(st == 503 || st == 504, "a write during the failover answered %d", st);
        long rv = 0;
        if (s_get(&c, a[0].uid, &rv, msg, sizeof msg) == 200)
            ck_assert_msg(rv >= hot_v, "read version %ld after %ld was served", rv, hot_v);
        usleep(10000);
    }
    uint64_t failover_ms = th_now_ms() - t0;
    ck_assert_int_eq(st, 200);
    int nl = s_leader(&c, leader, 5000);
    ck_assert_int_ge(nl, 0);
    mstat_t after = s_member(&c, nl);
    printf("repl: failover from SIGKILL of the leader to the first acknowledged write: %llu ms (%d attempts; "
           "term %llu -> %llu)\n",
           (unsigned long long)failover_ms, writes, (unsigned long long)before.term, (unsigned long long)after.term);
    ck_assert_msg(failover_ms < (uint64_t)3000 * s_mult(), "failover took %llu ms", (unsigned long long)failover_ms);
    ck_assert_uint_eq(after.epoch, before.epoch);
    ck_assert_uint_gt(after.term, before.term);
    ck_assert_uint_gt((uint64_t)v, before.committed); /* versions continue, never reused */

    /* Every acknowledged write is there, on the gateway's path and on the new leader. */
    s_check_users(&c, a, NUSERS, nl);
    /* Writes after the failover reach both cache-nodes through the new leader's stream. */
    acked_t b[10];
    s_write_users(&c, b, 10, "w", "after");
    ck_assert_msg(s_caches_follow(&c, nl, 10000 * s_mult()), "cache-nodes did not follow the new leader's stream");
    s_check_users(&c, b, 10, nl);

    /* /health/store names the new leader and every member's lag; /metrics has the raft series. */
    ck_assert_msg(s_health_names_leader(&c, nl, 10000), "/health/store does not name member %d", nl + 1);

    /* The killed member comes back and catches up. */
    ck_assert_int_eq(th_restart(c.store[leader], 20000), 0);
    ck_assert_msg(s_caught_up(&c, leader, nl, 15000 * s_mult(), NULL), "the restarted member did not catch up");
    s_stop(&c);
}
END_TEST

START_TEST(test_partitioned_follower)
{
    cluster_t c;
    s_start(&c, NST, NULL);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    mstat_t l0 = s_member(&c, leader);
    int f = (leader + 1) % NST;
    th_signal(c.store[f], SIGSTOP);
    acked_t a[NUSERS];
    s_write_users(&c, a, NUSERS, "p", "cut"); /* a majority without it */
    mstat_t behind = s_member(&c, leader);
    th_signal(c.store[f], SIGCONT);
    mstat_t fs;
    ck_assert_msg(s_caught_up(&c, f, leader, 15000 * s_mult(), &fs), "the follower did not catch up");
    mstat_t l1 = s_member(&c, leader);
    ck_assert(l1.leading);
    ck_assert_uint_eq(l1.term, l0.term); /* pre-vote: it deposed no one */
    ck_assert_uint_ge(fs.committed, behind.committed);
    s_check_users(&c, a, NUSERS, leader);
    s_stop(&c);
}
END_TEST

static void s_rmtree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_wiped_member_rejoins)
{
    static const char *const extra[] = {"STORE_SNAPSHOT_ENTRIES=64", NULL};
    cluster_t c;
    s_start(&c, NST, extra);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    int f = (leader + 2) % NST;
    acked_t a[NUSERS];
    s_write_users(&c, a, NUSERS, "x", "first");
    ck_assert_int_eq(th_stop(c.store[f], 15000), 0);
    char dd[300];
    snprintf(dd, sizeof dd, "%s/s%d", c.dir, f + 1);
    s_rmtree(dd); /* its raft log and its LMDB state */
    mkdir(dd, 0750);
    /* Enough entries for the leader to snapshot (every 64) and drop the log behind it. */
    for (int round = 0; round < 5; round++) {
        acked_t b[NUSERS];
        char tag[16];
        snprintf(tag, sizeof tag, "r%d", round);
        s_write_users(&c, b, NUSERS, "x", tag);
        if (round == 4)
            memcpy(a, b, sizeof a);
    }
    ck_assert_int_eq(th_restart(c.store[f], 20000), 0);
    mstat_t fs;
    ck_assert_msg(s_caught_up(&c, f, leader, 40000 * s_mult(), &fs), "the wiped member was not rebuilt");
    ck_assert_uint_ge(fs.installed, 1); /* from a snapshot: the log no longer starts at 1 */
    s_check_users(&c, a, NUSERS, leader);
    /* The rebuilt member serves once it leads: make it the only candidate but one. */
    th_kill(c.store[leader]);
    int nl = s_leader(&c, leader, 10000 * s_mult());
    ck_assert_int_ge(nl, 0);
    s_check_users(&c, a, NUSERS, nl);
    s_stop(&c);
}
END_TEST

START_TEST(test_minority_cannot_ack)
{
    cluster_t c;
    s_start(&c, NST, NULL);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    acked_t a[NUSERS];
    s_write_users(&c, a, NUSERS, "m", "kept");
    int f1 = (leader + 1) % NST, f2 = (leader + 2) % NST;
    th_signal(c.store[f1], SIGSTOP);
    th_signal(c.store[f2], SIGSTOP);
    uint64_t t0 = th_now_ms();
    int n503 = 0, n504 = 0, nwrites = 0;
    uint64_t worst = 0;
    /* 4 s of writes: none may be acknowledged; each is answered 503 (or, while the cut-off leader
     * still believes it leads, 504) within the request timeout; from 3 s on, only 503. */
    while (th_now_ms() - t0 < 4000) {
        char m[32];
        snprintf(m, sizeof m, "lost-%d", nwrites);
        uint64_t s0 = th_now_ms();
        int st = s_put(&c, "minority", m, NULL, 5000);
        uint64_t took = th_now_ms() - s0;
        worst = took > worst ? took : worst;
        nwrites++;
        ck_assert_msg(st != 200, "a write was acknowledged by a minority (%llu ms after the stop)",
                      (unsigned long long)(s0 - t0));
        ck_assert_msg(st == 503 || (st == 504 && s0 - t0 < 3000), "write answered %d at %llu ms", st,
                      (unsigned long long)(s0 - t0));
        n503 += st == 503;
        n504 += st == 504;
        ck_assert_msg(took <= 2000 + 500 * (uint64_t)s_mult(), "a write took %llu ms", (unsigned long long)took);
    }
    printf("repl: minority: %d writes, %d answered 503, %d 504, slowest %llu ms\n", nwrites, n503, n504,
           (unsigned long long)worst);
    ck_assert_int_gt(n503, 0);
    th_signal(c.store[f1], SIGCONT);
    th_signal(c.store[f2], SIGCONT);
    int nl = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(nl, 0);
    long v;
    uint64_t until = th_now_ms() + 10000 * (uint64_t)s_mult();
    int st = 0;
    while (th_now_ms() < until && (st = s_put(&c, "after", "back", &v, 3000)) != 200)
        usleep(20000);
    ck_assert_int_eq(st, 200);
    s_check_users(&c, a, NUSERS, s_leader(&c, -1, 5000));
    s_stop(&c);
}
END_TEST

START_TEST(test_single_member)
{
    cluster_t c;
    s_start(&c, 1, NULL);
    ck_assert_int_eq(s_leader(&c, -1, 15000 * s_mult()), 0);
    acked_t a[NUSERS];
    s_write_users(&c, a, NUSERS, "s", "one");
    mstat_t m0 = s_member(&c, 0);
    ck_assert_int_eq(th_stop(c.store[0], 15000), 0);
    ck_assert_int_eq(th_restart(c.store[0], 20000), 0);
    ck_assert_int_eq(s_leader(&c, -1, 15000 * s_mult()), 0);
    mstat_t m1 = s_member(&c, 0);
    ck_assert_uint_eq(m1.committed, m0.committed); /* the replay applied nothing twice */
    ck_assert_uint_eq(m1.records, m0.records);
    ck_assert_uint_eq(m1.epoch, m0.epoch);
    long v;
    uint64_t until = th_now_ms() + 10000;
    int st = 0;
    while (th_now_ms() < until && (st = s_put(&c, a[0].uid, "two", &v, 3000)) != 200)
        usleep(20000);
    ck_assert_int_eq(st, 200);
    ck_assert_int_gt(v, (long)m0.committed);
    s_stop(&c);
}
END_TEST

/* PUT through a leaf gateway (port): status. */
static int s_put_at(int port, const char *uid, const char *msg, long *version)
{
    cluster_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.port = port;
    return s_put(&tmp, uid, msg, version, 5000);
}

START_TEST(test_leaf_follows_leader)
{
    cluster_t c;
    s_start2(&c, NST, NULL, true, NULL);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    char center[400] = "";
    for (int i = 0; i < NST; i++) {
        size_t l = strlen(center);
        snprintf(center + l, sizeof center - l, "%stcp://127.0.0.1:%d", i ? "," : "", c.center_port[i]);
    }
    static const char *const leaf_env[] = {"RATE_LIMIT_WRITES=0", NULL};
    th_node_t leaf;
    ck_assert_int_eq(th_leaf_start(&leaf, 1, center, leaf_env), 0);
    /* The leaf is up once its relay follows the center's stream: its first write succeeds. */
    long v = 0;
    int st = 0;
    uint64_t until = th_now_ms() + 15000;
    while (th_now_ms() < until && (st = s_put_at(leaf.port, "leaf0", "hello", &v)) != 200)
        usleep(50000);
    ck_assert_int_eq(st, 200);
    acked_t a[10];
    for (int i = 0; i < 10; i++) {
        snprintf(a[i].uid, sizeof a[i].uid, "leaf%d", i + 1);
        snprintf(a[i].msg, sizeof a[i].msg, "from-leaf-%d", i);
        ck_assert_int_eq(s_put_at(leaf.port, a[i].uid, a[i].msg, &a[i].version), 200);
    }
    uint64_t t0 = th_now_ms();
    th_kill(c.store[leader]);
    until = t0 + 15000 * (uint64_t)s_mult();
    while (th_now_ms() < until && (st = s_put_at(leaf.port, "leaf0", "again", &v)) != 200) {
        ck_assert_msg(st == 503 || st == 504, "a leaf write during the failover answered %d", st);
        usleep(20000);
    }
    ck_assert_int_eq(st, 200);
    printf("repl: leaf region writing again %llu ms after the center's leader was killed\n",
           (unsigned long long)(th_now_ms() - t0));
    int nl = s_leader(&c, leader, 5000);
    ck_assert_int_ge(nl, 0);
    s_check_users(&c, a, 10, nl); /* the leaf's acknowledged writes, at the center */
    ck_assert_int_eq(th_node_stop(&leaf), 0);
    s_stop(&c);
}
END_TEST

/* Three consecutive free loopback ports (raft ports of the launcher's members); the first or -1. */
static int s_free_ports3(void)
{
    return th_free_ports(3);
}

START_TEST(test_launcher_three)
{
    char data[300];
    snprintf(data, sizeof data, "%s/data", th_tmpdir());
    int raft = s_free_ports3();
    ck_assert_int_gt(raft, 0);
    th_proc_t *l = th_proc("presenced", "presenced");
    th_env(l, "DATA_DIR", "%s", data);
    th_env(l, "SERVICE_PORT", "0");
    th_env(l, "SERVICE_ADDR", "127.0.0.1");
    th_env(l, "GATEWAY_THREADS", "1");
    th_env(l, "JWT_SECRET", "%s", TH_SECRET);
    th_env(l, "STORE_REPLICAS", "3");
    th_env(l, "STORE_RAFT_PORT", "%d", raft);
    ck_assert_int_eq(th_start(l, 30000), 0);
    ck_assert_ptr_nonnull(strstr(l->ready, "store_replicas=3"));
    cluster_t c;
    memset(&c, 0, sizeof c);
    c.port = atoi(strrchr(strstr(l->ready, "http="), ':') + 1);
    long v = 0;
    int st = 0;
    uint64_t until = th_now_ms() + 15000 * s_mult();
    while (th_now_ms() < until && (st = s_put(&c, "alice", "three", &v, 3000)) != 200)
        usleep(50000);
    ck_assert_int_eq(st, 200);
    /* Each member has its own state directory under DATA_DIR. */
    for (int i = 1; i <= 3; i++) {
        char p[400];
        struct stat sb;
        snprintf(p, sizeof p, "%s/store-%d/raft", data, i);
        ck_assert_msg(stat(p, &sb) == 0, "%s missing", p);
    }
    ck_assert_int_eq(th_stop(l, 20000 * s_mult()), 0);
}
END_TEST

/* Time acts on the new leader after a failover (docs/REPLICATION.md, "Time acts once, on the
 * leader"): a gateway killed with the leader has its WebSocket sessions ended by the new leader's
 * lease sweep, a gateway that lives on and refreshes its lease keeps its sessions through two
 * lease periods after the takeover, and a record's ttl written before the kill is expired by the
 * new leader's sweeper (a new version, offline, on the new leader itself). */
START_TEST(test_time_after_failover)
{
    int lease_ms = 3000 * s_mult();
    char lease_env[64];
    snprintf(lease_env, sizeof lease_env, "GATEWAY_LEASE_MS=%d", lease_ms);
    const char *const gw_env[] = {lease_env, NULL};
    cluster_t c;
    s_start2(&c, NST, NULL, false, gw_env);
    int leader = s_leader(&c, -1, 15000 * s_mult());
    ck_assert_int_ge(leader, 0);
    int port_b = 0;
    th_proc_t *gw_b = s_gateway(&c, "gateway-b", &port_b);

    ws_client_t keep, gone;
    json_decref(ws_step_connect(&keep, c.port, "keep-1", ""));
    json_decref(ws_step_connect(&gone, port_b, "gone-1", ""));
    ws_step_wait_record(c.port, "keep-1", "online", 1, 10000);
    ws_step_wait_record(c.port, "gone-1", "online", 1, 10000);
    ck_assert_int_eq(ws_step_rest(c.port, "PUT", "ttl-1", "", "{\"status\":\"online\",\"ttl\":4}"), 200);
    proto_record_t rec;
    ck_assert_int_eq(th_zc_get(&c.zc[leader], "ttl-1", &rec, NULL), PROTO_OK);
    uint64_t v0 = rec.version;
    ck_assert_int_eq(rec.status, PRESENCE_ONLINE);

    /* The leader and gateway B die together. */
    th_kill(c.store[leader]);
    th_kill(gw_b);
    int nl = s_leader(&c, leader, 15000 * s_mult());
    ck_assert_int_ge(nl, 0);
    uint64_t t_nl = th_now_ms();

    /* keep-1 online with its session for two lease periods; gone-1 offline within them. */
    uint64_t gone_ms = 0, polls = 0;
    while (th_now_ms() < t_nl + 2 * (uint64_t)lease_ms || !gone_ms) {
        ck_assert_msg(th_now_ms() < t_nl + 15000 * (uint64_t)s_mult(),
                      "gone-1 (its gateway killed with the leader) still online %d ms after the new leader",
                      15000 * s_mult());
        ws_msg_t m;
        int rc = ws_client_recv(&keep, &m, 0); /* answers the gateway's pings */
        if (rc == WS_OK)
            ws_msg_free(&m);
        ck_assert_msg(rc == WS_OK || rc == WS_TIMEOUT, "keep-1's connection ended (%d): %s", rc, keep.err);
        json_t *r = NULL;
        ck_assert_int_eq(ws_step_get(c.port, "keep-1", &r), 200);
        const char *st = json_string_value(json_object_get(r, "status"));
        long long ns = json_integer_value(json_object_get(r, "sessions"));
        ck_assert_msg(st && strcmp(st, "online") == 0 && ns == 1,
                      "keep-1 (its gateway alive, refreshing its lease) is %s with %lld sessions %llu ms after "
                      "the new leader",
                      st ? st : "?", ns, (unsigned long long)(th_now_ms() - t_nl));
        json_decref(r);
        if (!gone_ms) {
            ck_assert_int_eq(ws_step_get(c.port, "gone-1", &r), 200);
            st = json_string_value(json_object_get(r, "status"));
            if (st && strcmp(st, "offline") == 0)
                gone_ms = th_now_ms() - t_nl;
            json_decref(r);
        }
        polls++;
        usleep(200000);
    }
    printf("repl: after the failover gone-1 offline in %llu ms (lease %d ms); keep-1 online for %llu polls\n",
           (unsigned long long)gone_ms, lease_ms, (unsigned long long)polls);

    /* The ttl written before the kill is expired by the new leader's sweeper. */
    uint64_t until = th_now_ms() + 15000 * (uint64_t)s_mult();
    bool expired = false;
    while (!expired && th_now_ms() < until) {
        expired = th_zc_get(&c.zc[nl], "ttl-1", &rec, NULL) == PROTO_OK && rec.version > v0 &&
                  rec.status == PRESENCE_OFFLINE;
        if (!expired)
            usleep(100000);
    }
    ck_assert_msg(expired, "ttl-1 (ttl 4 s, written before the kill) not expired by the new leader: version %llu "
                           "(was %llu), status %d",
                  (unsigned long long)rec.version, (unsigned long long)v0, rec.status);
    ws_client_close(&keep);
    ws_client_close(&gone);
    s_stop(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_repl");
    TCase *tc = tcase_create("replicated_center");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_failover);
    tcase_add_test(tc, test_partitioned_follower);
    tcase_add_test(tc, test_wiped_member_rejoins);
    tcase_add_test(tc, test_minority_cannot_ack);
    tcase_add_test(tc, test_single_member);
    tcase_add_test(tc, test_leaf_follows_leader);
    tcase_add_test(tc, test_time_after_failover);
    tcase_add_test(tc, test_launcher_three);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? 1 : 0;
}
