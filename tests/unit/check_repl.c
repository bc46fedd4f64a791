/* check_repl.c -- Check suite for the replicated log (store-node/repl.h) on real libraft, real
 * TCP on 127.0.0.1 (free ports) and real LMDB state machines (tests/unit/repl_harness.c).
 *
 * Covered:
 *   config   repl_parse_members (every rule, IPv4 and host names), repl_start's refusals (bad membership, timings,
 *            missing callbacks, a state ahead of its log), repl_propose's own refusals.
 *   single   one member: leads at once, applies in order with cookies, skips its replay after a
 *            restart (no entry applied twice), takes snapshots, rebuilds a lost state from the
 *            raft snapshot + log, accepts an entry of REPL_ENTRY_MAX bytes.
 *   cluster  three members in this process (one raft thread each): a leader is elected; 10,000
 *            proposals commit and every member holds the same entries at the same indexes; a
 *            follower answers NOT_LEADER naming the leader; members named by host name work; the
 *            leader stops: a new one takes over,
 *            proposals resume, the old one restarts and catches up; a wiped member rejoins from a
 *            snapshot; a leader cut off from both followers steps down within two election
 *            timeouts and never acknowledges what it cannot commit.
 *   kill     three members in forked processes under load (election timeout 500 ms): the leader is
 *            SIGKILLed, a new leader commits within 5 s, the killed one restarts and catches up, and all three LMDB files
 *            hold the same entries (nothing the dead leader acknowledged is missing).
 *
 * Every wait polls a condition against a deadline; CK_FORK isolates each test.
 */
#include "repl_harness.h"
#include "util.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ET 1000 /* election timeout used by the cluster tests (the default) */
#define HB 100

static char s_dir[512];

static void s_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(s_dir, sizeof s_dir, "%s/check_repl.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(s_dir));
}

static void s_teardown(void)
{
    rh_rmtree(s_dir);
}

static void s_nap(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* polling interval of a condition with a deadline */
}

/* Wait until every running node's state holds `index` (or more). */
static bool s_wait_applied(rh_node_t *nodes, unsigned n, uint64_t index, unsigned timeout_ms)
{
    uint64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        bool all = true;
        for (unsigned i = 0; i < n; i++) {
            if (!nodes[i].r)
                continue;
            rh_counts_t c;
            rh_fsm_counts(&nodes[i].fsm, &c);
            all &= c.applied >= index;
        }
        if (all)
            return true;
        if (util_mono_ms() >= deadline)
            return false;
        s_nap(2);
    }
}

/* Propose `count` entries of `len` bytes to node `leader`, at most `window` in flight; returns
 * how many were applied with their cookie (each rh_prop_t in props[] tells its fate). */
static unsigned s_propose_all(rh_node_t *nd, rh_prop_t *props, unsigned count, size_t len, unsigned window, uint64_t id_base,
                              unsigned timeout_ms)
{
    unsigned char *buf = xmalloc(len);
    unsigned sent = 0, done = 0, acked = 0;
    uint64_t deadline = util_mono_ms() + timeout_ms;
    while (done < count && util_mono_ms() < deadline) {
        while (sent < count && sent - done < window) {
            rh_entry_fill(buf, len, id_base + sent);
            int rc = repl_propose(nd->r, buf, len, &props[sent]);
            if (rc == REPL_BUSY)
                break;
            ck_assert_msg(rc == REPL_OK, "repl_propose: %s", repl_strerror(rc));
            sent++;
        }
        while (done < sent && atomic_load(&props[done].state) != 0) {
            acked += atomic_load(&props[done].state) == 1;
            done++;
        }
        if (done < sent)
            s_nap(1);
    }
    free(buf);
    return acked;
}

/* Every running node holds the same (index, id, hash) triples as node `ref`. Returns the count. */
static long s_compare(rh_node_t *nodes, unsigned n, unsigned ref)
{
    uint64_t *ri, *rid, *rh;
    long rn = rh_fsm_entries(&nodes[ref].fsm, &ri, &rid, &rh);
    ck_assert_int_ge(rn, 0);
    for (unsigned i = 0; i < n; i++) {
        if (i == ref || !nodes[i].r)
            continue;
        uint64_t *xi, *xid, *xh;
        long xn = rh_fsm_entries(&nodes[i].fsm, &xi, &xid, &xh);
        ck_assert_msg(xn == rn, "member %u holds %ld entries, member %u %ld", i + 1, xn, ref + 1, rn);
        for (long k = 0; k < rn; k++) {
            ck_assert_msg(xi[k] == ri[k] && xid[k] == rid[k] && xh[k] == rh[k],
                          "member %u differs from member %u at entry %ld (index %llu vs %llu)", i + 1, ref + 1, k,
                          (unsigned long long)xi[k], (unsigned long long)ri[k]);
        }
        rh_counts_t a, b;
        rh_fsm_counts(&nodes[i].fsm, &a);
        rh_fsm_counts(&nodes[ref].fsm, &b);
        ck_assert_uint_eq(a.chain, b.chain);
        ck_assert_uint_eq(a.early_acks, 0);
        ck_assert_uint_eq(b.early_acks, 0);
        free(xi);
        free(xid);
        free(xh);
    }
    free(ri);
    free(rid);
    free(rh);
    return rn;
}

static repl_config_t s_tmpl(void)
{
    repl_config_t t = {0};
    t.election_timeout_ms = ET;
    t.heartbeat_ms = HB;
    t.connect_retry_ms = 100;
    return t;
}

static void s_start_all(rh_node_t *nodes, unsigned n)
{
    char err[REPL_ERR_LEN];
    for (unsigned i = 0; i < n; i++)
        ck_assert_msg(rh_node_start(&nodes[i], err) == 0, "start member %u: %s", i + 1, err);
}

static void s_stop_all(rh_node_t *nodes, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (nodes[i].r)
            ck_assert_int_eq(rh_node_stop(&nodes[i]), 0);
}

/* ---------------------------------------------------------------------------------------------------
 * config
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_parse_members)
{
    repl_member_t m[REPL_MEMBERS_MAX];
    unsigned n;
    char err[REPL_ERR_LEN];
    ck_assert_int_eq(repl_parse_members("1@127.0.0.1:7001,2@10.0.0.2:7002,3@10.0.0.3:65535", m, 7, &n, err), REPL_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(m[1].id, 2);
    ck_assert_str_eq(m[1].address, "10.0.0.2:7002");
    ck_assert_str_eq(m[2].address, "10.0.0.3:65535");
    ck_assert_int_eq(repl_parse_members("5@127.0.0.1:1", m, 7, &n, err), REPL_OK);
    ck_assert_uint_eq(n, 1);
    /* Host names (a StatefulSet's stable names) are kept as names and resolved when dialing. */
    ck_assert_int_eq(repl_parse_members("1@store-0.store.ns.svc:7001,2@store-1.store.ns.svc:7001", m, 7, &n, err), REPL_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(m[1].address, "store-1.store.ns.svc:7001");
    static const char *bad[] = {
        "",                                  /* empty */
        "1@127.0.0.1",                       /* no port */
        "1@127.0.0.1:0",                     /* port 0 */
        "1@127.0.0.1:65536",                 /* port too big */
        "0@127.0.0.1:7001",                  /* id 0 */
        "x@127.0.0.1:7001",                  /* id not a number */
        "1@bad_host:7001",                   /* '_' is no host name character */
        "1@-a.b:7001",                       /* label starting with '-' */
        "1@a-.b:7001",                       /* label ending with '-' */
        "1@a..b:7001",                       /* empty label */
        "1@a b:7001",                        /* space */
        "1@127.0.0.1:7001,1@127.0.0.2:7001", /* duplicate id */
        "1@127.0.0.1:7001,2@127.0.0.1:7001", /* duplicate address */
        "1@127.0.0.1:7001,",                 /* trailing comma */
        "127.0.0.1:7001",                    /* no id */
        "99999999999999999999@127.0.0.1:1",  /* id overflow */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        ck_assert_msg(repl_parse_members(bad[i], m, 7, &n, err) == REPL_ERROR, "accepted \"%s\"", bad[i]);
        ck_assert_msg(strncmp(err, "members:", 8) == 0, "error for \"%s\" names no rule: %s", bad[i], err);
    }
    ck_assert_int_eq(repl_parse_members("1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3", m, 2, &n, err), REPL_ERROR);
    ck_assert_str_eq(err, "members: more than 2");
}
END_TEST

START_TEST(test_start_refusals)
{
    rh_node_t nodes[1];
    repl_config_t t = s_tmpl();
    ck_assert_int_eq(rh_cluster_init(nodes, 1, s_dir, &t), 0);
    rh_fsm_t f = {0};
    char err[REPL_ERR_LEN], dir[600];
    snprintf(dir, sizeof dir, "%s/lmdb", s_dir);
    ck_assert_int_eq(rh_fsm_open(&f, dir, false, err), 0);
    snprintf(dir, sizeof dir, "%s/raft", s_dir);
    repl_config_t c = t;
    c.members = nodes[0].members;
    c.nmembers = 1;
    c.dir = dir;
    rh_fsm_callbacks(&f, &c.cb);
    repl_t *r = NULL;

    c.id = 2;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_str_eq(err, "id 2 is not one of the members");
    c.id = 1;
    c.heartbeat_ms = 1000;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_msg(strstr(err, "must be below election_timeout_ms") != NULL, "%s", err);
    c.heartbeat_ms = HB;
    c.cb.on_restore = NULL;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_msg(strstr(err, "callbacks") != NULL, "%s", err);
    rh_fsm_callbacks(&f, &c.cb);
    c.entry_max = REPL_ENTRY_MAX + 1;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    c.entry_max = 0;
    repl_member_t bad = {.id = 1};
    snprintf(bad.address, sizeof bad.address, "local host:7001");
    c.members = &bad;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_msg(strstr(err, "HOST:PORT") != NULL, "%s", err);
    c.members = nodes[0].members;
    c.bind_address = "localhost:7001"; /* the listening address must be a literal */
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_str_eq(err, "bind_address must be A.B.C.D:PORT");
    c.bind_address = NULL;
    c.members = nodes[0].members;
    ck_assert_ptr_null(r);

    /* A state that claims entries its (pristine) log does not have: a raft dir wiped alone. */
    c.applied_index = 500;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_ERROR);
    ck_assert_msg(strstr(err, "ahead of the raft log") != NULL, "%s", err);
    ck_assert_ptr_null(r);

    /* The same directory then starts fine with the true (empty) state. */
    c.applied_index = 0;
    ck_assert_int_eq(repl_start(&c, &r, err), REPL_OK);
    unsigned char big[16];
    ck_assert_int_eq(repl_propose(r, big, 0, NULL), REPL_ERROR);
    unsigned char *huge = xcalloc(1, REPL_ENTRY_MAX + 1);
    ck_assert_int_eq(repl_propose(r, huge, REPL_ENTRY_MAX + 1, NULL), REPL_TOOBIG);
    free(huge);
    ck_assert_int_eq(repl_stop(&r), 0);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(repl_stop(&r), 0); /* NULL is accepted */
    rh_fsm_close(&f);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * single member
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_single_member)
{
    rh_node_t nodes[1];
    repl_config_t t = s_tmpl();
    t.snapshot_threshold = 200;
    t.snapshot_trailing = 50;
    ck_assert_int_eq(rh_cluster_init(nodes, 1, s_dir, &t), 0);
    uint64_t t0 = util_mono_ms();
    s_start_all(nodes, 1);
    /* A single voter elects itself inside raft_start: ready after its barrier, no timeout. */
    ck_assert_int_eq(rh_wait_leader(nodes, 1, 2000), 0);
    ck_assert_uint_lt(util_mono_ms() - t0, 500);

    enum { N = 1000 };
    rh_prop_t *props = xcalloc(N, sizeof *props);
    ck_assert_uint_eq(s_propose_all(&nodes[0], props, N, 100, 64, 0, 20000), N);
    for (unsigned i = 1; i < N; i++)
        ck_assert_uint_gt(props[i].index, props[i - 1].index); /* log order = proposal order */
    rh_counts_t c;
    rh_fsm_counts(&nodes[0].fsm, &c);
    ck_assert_uint_eq(c.count, N);
    ck_assert_uint_eq(c.applied, props[N - 1].index);
    /* The status is published after a loop turn (the test may read it before the turn that applied
     * the last entry ends) and a snapshot ends on a libuv worker: poll, with a deadline. */
    repl_status_t st;
    uint64_t until = util_mono_ms() + 5000;
    do {
        repl_status(nodes[0].r, &st);
        if (st.committed == N && st.outstanding == 0 && st.snapshots_taken >= 1)
            break;
        s_nap(2);
    } while (util_mono_ms() < until);
    ck_assert_uint_eq(st.committed, N);
    ck_assert_uint_eq(st.outstanding, 0);
    ck_assert_uint_ge(st.snapshots_taken, 1); /* 1000 entries > threshold 200 */
    ck_assert_uint_eq(st.nmembers, 1);
    ck_assert_uint_eq(st.leader.id, 1);
    ck_assert_str_eq(st.leader.address, nodes[0].members[0].address);
    uint64_t chain = c.chain, applied = c.applied;

    /* Restart: libraft restores its snapshot and replays its log; the state already holds all. */
    ck_assert_int_eq(rh_node_stop(&nodes[0]), 0);
    s_start_all(nodes, 1);
    ck_assert_int_eq(rh_wait_leader(nodes, 1, 2000), 0);
    rh_fsm_counts(&nodes[0].fsm, &c);
    ck_assert_uint_eq(c.apply_calls, 0);
    ck_assert_uint_eq(c.restores, 0);
    ck_assert_uint_eq(c.chain, chain);
    memset(props, 0, N * sizeof *props);
    ck_assert_uint_eq(s_propose_all(&nodes[0], props, 10, 100, 64, N, 5000), 10);
    ck_assert_uint_gt(props[0].index, applied);
    rh_fsm_counts(&nodes[0].fsm, &c);
    ck_assert_uint_eq(c.count, N + 10);
    ck_assert_uint_eq(c.apply_calls, 10);
    chain = c.chain;

    /* An entry of REPL_ENTRY_MAX bytes commits. */
    unsigned char *big = xmalloc(REPL_ENTRY_MAX);
    rh_entry_fill(big, REPL_ENTRY_MAX, 77);
    rh_prop_t bp = {0};
    ck_assert_int_eq(repl_propose(nodes[0].r, big, REPL_ENTRY_MAX, &bp), REPL_OK);
    free(big);
    uint64_t deadline = util_mono_ms() + 10000;
    while (atomic_load(&bp.state) == 0 && util_mono_ms() < deadline)
        s_nap(2);
    ck_assert_int_eq(atomic_load(&bp.state), 1);
    rh_fsm_counts(&nodes[0].fsm, &c);
    chain = c.chain;
    uint64_t count = c.count;

    /* The state is lost (an OS crash under MDB_NOSYNC, say): it is rebuilt from the raft
     * snapshot and the log, identical. */
    ck_assert_int_eq(rh_node_stop(&nodes[0]), 0);
    char lmdb[700];
    snprintf(lmdb, sizeof lmdb, "%s/lmdb", nodes[0].base);
    rh_rmtree(lmdb);
    s_start_all(nodes, 1);
    ck_assert_int_eq(rh_wait_leader(nodes, 1, 5000), 0);
    rh_fsm_counts(&nodes[0].fsm, &c);
    ck_assert_uint_eq(c.restores, 1);
    ck_assert_uint_eq(c.count, count);
    ck_assert_uint_eq(c.chain, chain);
    s_stop_all(nodes, 1);
    free(props);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * three members in this process
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_three_commit_and_not_leader)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    s_start_all(nodes, 3);
    int l = rh_wait_leader(nodes, 3, 10000);
    ck_assert_int_ge(l, 0);

    enum { N = 10000 };
    rh_prop_t *props = xcalloc(N, sizeof *props);
    uint64_t t0 = util_mono_us();
    unsigned acked = s_propose_all(&nodes[l], props, N, 256, 256, 0, 120000);
    uint64_t us = util_mono_us() - t0;
    /* Leadership could in principle move during the run; on a healthy loopback it does not. */
    ck_assert_int_eq(rh_ready_leader(nodes, 3), l);
    ck_assert_uint_eq(acked, N);
    fprintf(stderr, "check_repl: 3 members, %d proposals of 256 B committed in %.0f ms (%.0f/s)\n", N, us / 1000.0, N / (us / 1e6));
    for (unsigned i = 1; i < N; i++)
        ck_assert_uint_gt(props[i].index, props[i - 1].index);
    ck_assert(s_wait_applied(nodes, 3, props[N - 1].index, 10000));
    ck_assert_int_eq(s_compare(nodes, 3, (unsigned)l), N);
    uint64_t *idx, *ids, *h;
    long n = rh_fsm_entries(&nodes[l].fsm, &idx, &ids, &h);
    for (long k = 0; k < n; k++)
        ck_assert_uint_eq(ids[k], (uint64_t)k); /* each proposal once, in proposal order */
    free(idx);
    free(ids);
    free(h);

    /* A follower takes the proposal and rejects it with the leader it knows. */
    unsigned f = (unsigned)(l + 1) % 3;
    rh_prop_t p = {0};
    unsigned char e[16];
    rh_entry_fill(e, sizeof e, 424242);
    ck_assert_int_eq(repl_propose(nodes[f].r, e, sizeof e, &p), REPL_OK);
    uint64_t deadline = util_mono_ms() + 5000;
    while (atomic_load(&p.state) == 0 && util_mono_ms() < deadline)
        s_nap(1);
    ck_assert_int_eq(atomic_load(&p.state), 2);
    ck_assert_int_eq(p.status, REPL_NOT_LEADER);
    ck_assert_uint_eq(p.leader.id, nodes[l].id);
    ck_assert_str_eq(p.leader.address, nodes[l].members[l].address);

    /* The leader's view of its followers: everyone replicated through the commit index. */
    repl_status_t st;
    repl_status(nodes[l].r, &st);
    ck_assert_uint_eq(st.nmembers, 3);
    for (unsigned i = 0; i < 3; i++)
        ck_assert_uint_ge(st.members[i].match_index, props[N - 1].index);
    repl_status(nodes[f].r, &st);
    ck_assert_int_eq(st.role, REPL_FOLLOWER);
    ck_assert_uint_eq(st.leader.id, nodes[l].id);
    s_stop_all(nodes, 3);
    free(props);
}
END_TEST

/* Members named "localhost:PORT": every connection resolves the name (repl_dns.c). */
START_TEST(test_three_named_members)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    static char binds[3][REPL_ADDR_MAX];
    for (unsigned i = 0; i < 3; i++) {
        const char *port = strrchr(nodes[i].members[i].address, ':') + 1;
        snprintf(binds[i], sizeof binds[i], "127.0.0.1:%s", port);
    }
    for (unsigned i = 0; i < 3; i++) {
        for (unsigned j = 0; j < 3; j++)
            snprintf(nodes[i].members[j].address, REPL_ADDR_MAX, "localhost:%s", strrchr(binds[j], ':') + 1);
        nodes[i].tmpl.bind_address = binds[i];
    }
    s_start_all(nodes, 3);
    int l = rh_wait_leader(nodes, 3, 10000);
    ck_assert_int_ge(l, 0);
    rh_prop_t props[200];
    memset(props, 0, sizeof props);
    ck_assert_uint_eq(s_propose_all(&nodes[l], props, 200, 64, 32, 0, 20000), 200);
    ck_assert(s_wait_applied(nodes, 3, props[199].index, 10000));
    ck_assert_int_eq(s_compare(nodes, 3, (unsigned)l), 200);
    repl_status_t st;
    repl_status(nodes[(l + 1) % 3].r, &st);
    ck_assert_str_eq(st.leader.address, nodes[l].members[l].address); /* the name, as configured */
    s_stop_all(nodes, 3);
}
END_TEST

START_TEST(test_three_failover_and_catch_up)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    s_start_all(nodes, 3);
    int l = rh_wait_leader(nodes, 3, 10000);
    ck_assert_int_ge(l, 0);
    enum { N = 2000 };
    rh_prop_t *props = xcalloc(3 * N, sizeof *props);
    ck_assert_uint_eq(s_propose_all(&nodes[l], props, N, 512, 128, 0, 60000), N);
    repl_status_t st;
    repl_status(nodes[l].r, &st);
    uint64_t old_term = st.term;

    /* The leader stops: the other two elect a new one. */
    uint64_t t0 = util_mono_ms();
    ck_assert_int_eq(rh_node_stop(&nodes[l]), 0);
    int l2 = rh_wait_leader(nodes, 3, 4 * ET + 2000);
    ck_assert_int_ge(l2, 0);
    ck_assert_int_ne(l2, l);
    uint64_t took = util_mono_ms() - t0;
    fprintf(stderr, "check_repl: new leader %d ready %llu ms after the leader stopped\n", l2 + 1, (unsigned long long)took);
    ck_assert_uint_le(took, 2 * ET + 2 * HB + 2000);
    repl_status(nodes[l2].r, &st);
    ck_assert_uint_gt(st.term, old_term);
    /* Ready means: everything committed before is applied there. */
    rh_counts_t c;
    rh_fsm_counts(&nodes[l2].fsm, &c);
    ck_assert_uint_ge(c.applied, props[N - 1].index);

    ck_assert_uint_eq(s_propose_all(&nodes[l2], props + N, N, 512, 128, N, 60000), N);
    ck_assert_uint_gt(props[N].index, props[N - 1].index);

    /* The old leader comes back with its state and log, and catches up. */
    char err[REPL_ERR_LEN];
    ck_assert_msg(rh_node_start(&nodes[l], err) == 0, "%s", err);
    ck_assert(s_wait_applied(nodes, 3, props[2 * N - 1].index, 20000));
    ck_assert_int_eq(rh_ready_leader(nodes, 3), l2); /* pre-vote: the returning member deposes no one */
    ck_assert_int_eq(s_compare(nodes, 3, (unsigned)l2), 2 * N);
    rh_fsm_counts(&nodes[l].fsm, &c);
    ck_assert_uint_eq(c.count, 2 * N);
    s_stop_all(nodes, 3);
    free(props);
}
END_TEST

START_TEST(test_wiped_member_rejoins_from_snapshot)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    t.snapshot_threshold = 64;
    t.snapshot_trailing = 16;
    t.install_snapshot_timeout_ms = 1000;
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    s_start_all(nodes, 3);
    int l = rh_wait_leader(nodes, 3, 10000);
    ck_assert_int_ge(l, 0);
    enum { N = 600 };
    rh_prop_t *props = xcalloc(2 * N, sizeof *props);
    ck_assert_uint_eq(s_propose_all(&nodes[l], props, N, 1024, 64, 0, 60000), N);
    unsigned f = (unsigned)(l + 1) % 3;
    ck_assert(s_wait_applied(nodes, 3, props[N - 1].index, 10000));

    /* A follower loses its disk: raft log and state. */
    ck_assert_int_eq(rh_node_stop(&nodes[f]), 0);
    rh_node_wipe(&nodes[f]);
    ck_assert_uint_eq(s_propose_all(&nodes[l], props + N, N, 1024, 64, N, 60000), N);
    repl_status_t st;
    repl_status(nodes[l].r, &st);
    ck_assert_uint_gt(st.snapshot_index, 16); /* the leader no longer has the log's head */
    ck_assert_uint_ge(st.snapshots_taken, 1);

    char err[REPL_ERR_LEN];
    ck_assert_msg(rh_node_start(&nodes[f], err) == 0, "%s", err);
    ck_assert(s_wait_applied(nodes, 3, props[2 * N - 1].index, 20000));
    repl_status(nodes[f].r, &st);
    ck_assert_uint_ge(st.snapshots_restored, 1);
    rh_counts_t c;
    rh_fsm_counts(&nodes[f].fsm, &c);
    ck_assert_uint_ge(c.restores, 1);
    ck_assert_uint_eq(c.count, 2 * N);
    ck_assert_int_eq(s_compare(nodes, 3, (unsigned)l), 2 * N);

    /* Wiped again right away: the leader's newest snapshot is now older than what it last knew
     * the member had (libraft 0.15 keeps that stale match index), so depending on the leader's
     * progress state it may wait for the snapshot timeout (1 s here) before it resends
     * (REPLICATION.md, 7.10); either way the member rejoins. */
    ck_assert_int_eq(rh_node_stop(&nodes[f]), 0);
    rh_node_wipe(&nodes[f]);
    uint64_t t0 = util_mono_ms();
    ck_assert_msg(rh_node_start(&nodes[f], err) == 0, "%s", err);
    ck_assert(s_wait_applied(nodes, 3, props[2 * N - 1].index, 15000));
    fprintf(stderr, "check_repl: wiped member behind its old match index rejoined in %llu ms\n",
            (unsigned long long)(util_mono_ms() - t0));
    ck_assert_int_eq(s_compare(nodes, 3, (unsigned)l), 2 * N);
    s_stop_all(nodes, 3);
    free(props);
}
END_TEST

START_TEST(test_cut_off_leader_steps_down)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    s_start_all(nodes, 3);
    int l = rh_wait_leader(nodes, 3, 10000);
    ck_assert_int_ge(l, 0);
    rh_prop_t props[4] = {0};
    ck_assert_uint_eq(s_propose_all(&nodes[l], props, 2, 64, 2, 0, 10000), 2);

    /* Both followers go away: the leader can commit nothing and must step down. */
    uint64_t t0 = util_mono_ms();
    for (unsigned i = 0; i < 3; i++)
        if ((int)i != l)
            ck_assert_int_eq(rh_node_stop(&nodes[i]), 0);
    unsigned char e[64];
    rh_entry_fill(e, sizeof e, 99);
    ck_assert_int_eq(repl_propose(nodes[l].r, e, sizeof e, &props[2]), REPL_OK);
    repl_status_t st;
    uint64_t deadline = t0 + 3 * ET + 2000;
    for (;;) {
        repl_status(nodes[l].r, &st);
        if (st.role != REPL_LEADER || util_mono_ms() >= deadline)
            break;
        s_nap(5);
    }
    uint64_t took = util_mono_ms() - t0;
    fprintf(stderr, "check_repl: cut-off leader stepped down after %llu ms\n", (unsigned long long)took);
    ck_assert_int_ne(st.role, REPL_LEADER);
    /* libraft checks for a majority's contact once per election timeout: between 1 and 2. */
    ck_assert_uint_le(took, 2 * ET + 2 * HB + 300);
    while (atomic_load(&props[2].state) == 0 && util_mono_ms() < deadline)
        s_nap(2);
    ck_assert_int_eq(atomic_load(&props[2].state), 2); /* never acknowledged */
    ck_assert_int_eq(props[2].status, REPL_LEADERSHIP_LOST);
    /* And a proposal now is refused at once. */
    ck_assert_int_eq(repl_propose(nodes[l].r, e, sizeof e, &props[3]), REPL_OK);
    while (atomic_load(&props[3].state) == 0 && util_mono_ms() < deadline + 2000)
        s_nap(2);
    ck_assert_int_eq(props[3].status, REPL_NOT_LEADER);
    s_stop_all(nodes, 3);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * three members in forked processes: SIGKILL of the leader under load
 * ------------------------------------------------------------------------------------------------- */

static int s_shm_leader(rh_shm_t *shm, unsigned n, pid_t *pids)
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

START_TEST(test_sigkill_leader_under_load)
{
    rh_node_t nodes[3];
    repl_config_t t = s_tmpl();
    t.election_timeout_ms = 500; /* the recommended setting: failover well under 3 s */
    t.snapshot_threshold = 2000;
    t.snapshot_trailing = 200;
    ck_assert_int_eq(rh_cluster_init(nodes, 3, s_dir, &t), 0);
    rh_shm_t *shm = rh_shm_new();
    ck_assert_ptr_nonnull(shm);
    shm->inflight = 64;
    shm->entry_bytes = 2048;
    pid_t pids[3];
    for (unsigned i = 0; i < 3; i++)
        ck_assert_int_gt(pids[i] = rh_fork_member(nodes, i, shm), 0);
    uint64_t deadline = util_mono_ms() + 10000;
    int l;
    while ((l = s_shm_leader(shm, 3, pids)) < 0 && util_mono_ms() < deadline)
        s_nap(5);
    ck_assert_int_ge(l, 0);
    atomic_store(&shm->load, 1);
    deadline = util_mono_ms() + 10000;
    while (atomic_load(&shm->m[l].acked) < 3000 && util_mono_ms() < deadline)
        s_nap(5);
    ck_assert_uint_ge(atomic_load(&shm->m[l].acked), 3000);

    unsigned long long old_term = atomic_load(&shm->m[l].ready_term);
    uint64_t kill_us = util_mono_us();
    ck_assert_int_eq(kill(pids[l], SIGKILL), 0);
    ck_assert_int_eq(rh_wait_exit(pids[l], 5000), 128 + SIGKILL);
    pids[l] = 0;
    atomic_store(&shm->m[l].ready, 0);
    int l2 = -1;
    unsigned long long first = 0;
    deadline = util_mono_ms() + 10000;
    while (util_mono_ms() < deadline) {
        l2 = s_shm_leader(shm, 3, pids);
        if (l2 >= 0 && atomic_load(&shm->m[l2].ready_term) > old_term && (first = atomic_load(&shm->m[l2].first_ack_us)) > kill_us)
            break;
        s_nap(2);
    }
    ck_assert_int_ge(l2, 0);
    ck_assert_uint_gt(first, kill_us);
    double failover_ms = (double)(first - kill_us) / 1000.0;
    fprintf(stderr, "check_repl: SIGKILL of the leader -> first commit on the new leader after %.0f ms\n", failover_ms);
    ck_assert_msg(failover_ms < 5000, "failover took %.0f ms", failover_ms);

    /* The killed member restarts on its own log and state, and catches up. */
    ck_assert_int_gt(pids[l] = rh_fork_member(nodes, (unsigned)l, shm), 0);
    deadline = util_mono_ms() + 20000;
    while (util_mono_ms() < deadline) {
        unsigned long long target = atomic_load(&shm->m[l2].state_index);
        if (atomic_load(&shm->m[l].state_index) >= target && target > 0)
            break;
        s_nap(5);
    }
    ck_assert_uint_ge(atomic_load(&shm->m[l].state_index), 1);
    atomic_store(&shm->load, 0);
    /* Quiesce: every member holds the same last index, then everyone stops cleanly. */
    deadline = util_mono_ms() + 20000;
    bool same = false;
    while (!same && util_mono_ms() < deadline) {
        unsigned long long a = atomic_load(&shm->m[0].state_index);
        same = atomic_load(&shm->m[1].state_index) == a && atomic_load(&shm->m[2].state_index) == a &&
               atomic_load(&shm->m[l2].outstanding) == 0;
        if (!same)
            s_nap(5);
    }
    ck_assert(same);
    atomic_store(&shm->stop, 1);
    for (unsigned i = 0; i < 3; i++)
        ck_assert_int_eq(rh_wait_exit(pids[i], 20000), 0);

    /* Compare the three LMDB files. */
    char err[REPL_ERR_LEN], dir[700];
    for (unsigned i = 0; i < 3; i++) {
        snprintf(dir, sizeof dir, "%s/lmdb", nodes[i].base);
        ck_assert_msg(rh_fsm_open(&nodes[i].fsm, dir, false, err) == 0, "%s", err);
        nodes[i].r = (repl_t *)1; /* s_compare only looks at fsm for "running" nodes */
    }
    long n = s_compare(nodes, 3, (unsigned)l2);
    ck_assert_int_gt(n, 3000);
    for (unsigned i = 0; i < 3; i++) {
        nodes[i].r = NULL;
        rh_fsm_close(&nodes[i].fsm);
    }
    rh_shm_destroy(shm);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("repl");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_parse_members);
    tcase_add_test(tc, test_start_refusals);
    suite_add_tcase(s, tc);

    tc = tcase_create("single");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_single_member);
    suite_add_tcase(s, tc);

    tc = tcase_create("cluster");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_three_commit_and_not_leader);
    tcase_add_test(tc, test_three_named_members);
    tcase_add_test(tc, test_three_failover_and_catch_up);
    tcase_add_test(tc, test_wiped_member_rejoins_from_snapshot);
    tcase_add_test(tc, test_cut_off_leader_steps_down);
    suite_add_tcase(s, tc);

    tc = tcase_create("kill");
    tcase_add_checked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sigkill_leader_under_load);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
