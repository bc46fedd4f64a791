/* check_store_node.c -- Check suite for the store-node's request logic (store-node/store_node.c),
 * without a process.
 *
 * Each test opens a node on a fresh LMDB directory (mkdtemp) and inproc endpoints, talks to it as a
 * cache-node does (a DEALER for commands, a SUB for the change stream) and runs it on a thread of
 * its own (store_node_run, as the process does). The writer thread is the node's own. Real LMDB,
 * real ZeroMQ, the real wire format; waits are polls with deadlines.
 *
 * What is pinned: writes are acknowledged with the stored record and published on the stream;
 * reads (GET, MGET) answer from the store; deletes answer the tombstone's sequence; an empty write
 * is answered at once; a write past its sender's deadline is refused and not applied; a full write
 * queue answers EOVERLOAD; catch-ups are incremental or a snapshot; pings and stats answer; bad
 * input is answered EBADREQ and counted; the sweeper turns an expired record offline on the stream;
 * a stop acknowledges what was queued; a one-member replicated store leads, publishes heartbeats
 * naming it, and applies a command id once.
 */
#include "log.h"
#include "proto.h"
#include "stats.h"
#include "store_node.h"
#include "util.h"
#include "zutil.h"

#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define WAIT_MS 5000

typedef struct env {
    char dir[256];
    void *zctx;
    void *cmd, *sub; /* a cache-node's DEALER and SUB */
    store_node_t *n;
    pthread_t th;
    volatile sig_atomic_t stop;
    proto_buf_t in; /* the last message received (decoded ones borrow from it) */
} env_t;

static void *s_node_thread(void *arg)
{
    env_t *e = arg;
    store_node_run(e->n, &e->stop);
    return NULL;
}

static void s_rmtree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    char p[1024];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            s_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* A node; with raft_port, a one-member replicated store (its raft log in the temp dir). */
static void s_env2(env_t *e, const char *name, uint64_t queue_max, int raft_port)
{
    memset(e, 0, sizeof *e);
    proto_buf_init(&e->in);
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof e->dir, "%s/check_store_node.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(e->dir));
    store_node_config_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.cmd_ep, sizeof c.cmd_ep, "inproc://sn-%s-cmd", name);
    snprintf(c.pub_ep, sizeof c.pub_ep, "inproc://sn-%s-pub", name);
    c.flush_ms = 200;
    c.hugz_ms = 50;
    c.batch_max = 4096;
    c.queue_max = queue_max;
    c.sweep_max = 1000;
    c.pub_hwm = 100000;
    c.touch_sync_ms = 1000;
    snprintf(c.store_path, sizeof c.store_path, "%s/store", e->dir);
    ck_assert_int_eq(mkdir(c.store_path, 0750), 0);
    c.store.sync_mode = STORE_SYNC_NONE; /* no fsync: what is tested here is not durability */
    c.store.map_size = 4u << 20;
    c.store.map_size_max = 64u << 20;
    c.store.retention_us = 3600ull * 1000000;
    c.store.default_ttl_s = 3600;
    c.store.log_max = 100000;
    if (raft_port) {
        c.repl.nmembers = 1;
        c.repl.self = 1;
        c.repl.members[0].id = 1;
        snprintf(c.repl.members[0].address, sizeof c.repl.members[0].address, "127.0.0.1:%d", raft_port);
        snprintf(c.repl.raft_dir, sizeof c.repl.raft_dir, "%s/raft", e->dir);
        c.repl.election_ms = 500;
        c.repl.snapshot_entries = 8192;
        c.store.replicated = true;
        c.store.dedup_window_us = 60000000;
    }
    e->zctx = zmq_ctx_new();
    char err[256];
    ck_assert_msg(store_node_new(e->zctx, &c, &e->n, err) == 0, "%s", err);
    e->cmd = zu_socket(e->zctx, ZMQ_DEALER, 0, 0);
    e->sub = zu_socket(e->zctx, ZMQ_SUB, 0, 0);
    zmq_setsockopt(e->sub, ZMQ_SUBSCRIBE, "", 0);
    ck_assert_int_eq(zmq_connect(e->cmd, c.cmd_ep), 0);
    ck_assert_int_eq(zmq_connect(e->sub, c.pub_ep), 0);
    ck_assert_int_eq(pthread_create(&e->th, NULL, s_node_thread, e), 0);
}

static void s_env(env_t *e, const char *name, uint64_t queue_max)
{
    s_env2(e, name, queue_max, 0);
}

static void s_env_stop(env_t *e)
{
    if (!e->n)
        return;
    e->stop = 1;
    ck_assert_int_eq(zu_send(e->cmd, NULL, 0, "\xc1", 1), 0); /* wake the node's wait */
    pthread_join(e->th, NULL);
    store_node_destroy(&e->n);
    ck_assert_ptr_null(e->n);
}

static void s_env_fini(env_t *e)
{
    s_env_stop(e);
    zmq_close(e->cmd);
    zmq_close(e->sub);
    zmq_ctx_term(e->zctx);
    proto_buf_fini(&e->in);
    s_rmtree(e->dir);
}

/* ---- talking to the node --------------------------------------------------------------------- */

static int s_recv(void *sock, zmq_msg_t *f, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return -1;
    int n;
    ck_assert_int_eq(zu_recv(sock, f, ZU_FRAMES_MAX, &n), 0);
    return n;
}

static void s_send(env_t *e, const proto_buf_t *b)
{
    ck_assert_int_eq(zu_send(e->cmd, NULL, 0, b->data, b->len), 0);
}

/* The node's next answer (it must come). A BATCH of acknowledgements is returned whole. */
static void s_answer(env_t *e, proto_msg_t *m)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = s_recv(e->cmd, f, WAIT_MS);
    ck_assert_msg(n == 1, "no answer from the store-node");
    proto_buf_reset(&e->in);
    proto_buf_append(&e->in, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
    zu_close_frames(f, n);
    ck_assert_int_eq(proto_decode(e->in.data, e->in.len, m), PROTO_DEC_OK);
}

static void s_expect(env_t *e, uint64_t rid, uint8_t type, uint8_t status, proto_msg_t *m)
{
    s_answer(e, m);
    ck_assert_int_eq(m->type, type);
    ck_assert_uint_eq(m->rid, rid);
    ck_assert_int_eq(m->status, status);
}

/* The next stream message of a type (heartbeats skipped unless asked for). */
static void s_stream(env_t *e, uint8_t type, proto_msg_t *m, proto_buf_t *keep)
{
    uint64_t until = util_mono_ms() + WAIT_MS;
    while (util_mono_ms() < until) {
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n = s_recv(e->sub, f, 100);
        if (n != 2)
            continue;
        proto_buf_reset(keep);
        proto_buf_append(keep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
        zu_close_frames(f, n);
        ck_assert_int_eq(proto_decode(keep->data, keep->len, m), PROTO_DEC_OK);
        if (m->type == type)
            return;
        proto_msg_fini(m);
    }
    ck_abort_msg("nothing of type %d on the stream", type);
}

static proto_record_t s_record(const char *uid, const char *msg, uint32_t ttl)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_node(&r, "gw-1", 4);
    proto_record_set_msg(&r, msg, strlen(msg));
    r.status = PRESENCE_BUSY;
    r.ttl_s = ttl;
    return r;
}

static void s_put(env_t *e, uint64_t rid, const char *uid, const char *msg, uint32_t ttl, uint64_t deadline)
{
    proto_record_t r = s_record(uid, msg, ttl);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd_dl(&b, PROTO_PUT, rid, &r, 1, deadline);
    s_send(e, &b);
    proto_buf_fini(&b);
}

static uint64_t s_stat(env_t *e, const char *name)
{
    static uint64_t rid = 900000;
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_STATS, ++rid);
    s_send(e, &b);
    proto_buf_fini(&b);
    proto_msg_t m;
    s_expect(e, rid, PROTO_STATS_REPLY, PROTO_OK, &m);
    uint64_t v = UINT64_MAX;
    ck_assert_msg(stats_find(m.stats, m.n, name, &v), "no stat %s", name);
    proto_msg_fini(&m);
    return v;
}

/* Wait for a heartbeat: the stream's subscription has reached the node. */
static void s_subscribed(env_t *e)
{
    proto_msg_t m;
    proto_buf_t keep;
    proto_buf_init(&keep);
    s_stream(e, PROTO_HUGZ, &m, &keep);
    proto_msg_fini(&m);
    proto_buf_fini(&keep);
}

/* ==== writes and reads ======================================================================= */

START_TEST(test_write_publish_read)
{
    env_t e;
    s_env(&e, "rw", 65536);
    s_subscribed(&e);
    s_put(&e, 1, "alice", "in a meeting", 600, util_now_us() + 60000000ull);
    proto_msg_t m;
    s_expect(&e, 1, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].user_id, "alice");
    ck_assert_str_eq(m.recs[0].message, "in a meeting");
    ck_assert_uint_eq(m.recs[0].version, 1);
    proto_msg_fini(&m);
    /* On the stream: the change, with the range continuing the published sequence. */
    proto_buf_t keep;
    proto_buf_init(&keep);
    s_stream(&e, PROTO_CHANGES, &m, &keep);
    ck_assert_uint_eq(m.first_seq, 1);
    ck_assert_uint_eq(m.seq, 1);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_int_eq(m.changes[0].kind, PROTO_CH_SET);
    ck_assert_str_eq(m.changes[0].rec.user_id, "alice");
    proto_msg_fini(&m);
    /* GET and MGET (found records only, in request order). */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 2, "alice", 5);
    s_send(&e, &b);
    s_expect(&e, 2, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.seq, 1);
    ck_assert_str_eq(m.recs[0].message, "in a meeting");
    proto_msg_fini(&m);
    proto_str_t keys[2] = {{"bob", 3}, {"alice", 5}};
    proto_buf_reset(&b);
    proto_enc_keys(&b, 3, keys, 2);
    s_send(&e, &b);
    s_expect(&e, 3, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.n, 1);
    ck_assert_str_eq(m.recs[0].user_id, "alice");
    proto_msg_fini(&m);
    /* DEL: the tombstone's sequence; then not found. */
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_DEL, 4, "alice", 5);
    s_send(&e, &b);
    s_expect(&e, 4, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.seq, 2);
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 5, "alice", 5);
    s_send(&e, &b);
    s_expect(&e, 5, PROTO_REPLY, PROTO_NOTFOUND, &m);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "store_writes_total"), 2);
    ck_assert_uint_eq(s_stat(&e, "store_sequence"), 2);
    proto_buf_fini(&keep);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_empty_and_expired_writes)
{
    env_t e;
    s_env(&e, "empty", 65536);
    /* A PUT of nothing is answered at once, as of the published sequence. */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, NULL, 0);
    s_send(&e, &b);
    proto_msg_t m;
    s_expect(&e, 1, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.n, 0);
    ck_assert_uint_eq(m.seq, 0);
    proto_msg_fini(&m);
    /* A write its sender gave up on is refused, and nothing is stored. */
    s_put(&e, 2, "bob", "late", 600, util_now_us() - 1000);
    s_expect(&e, 2, PROTO_REPLY, PROTO_ETIMEOUT, &m);
    ck_assert_int_eq(memcmp(m.key.p, "deadline passed before the write was applied", 44), 0);
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 3, "bob", 3);
    s_send(&e, &b);
    s_expect(&e, 3, PROTO_REPLY, PROTO_NOTFOUND, &m);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "store_expired_writes_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "store_writes_total"), 0);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_queue_full_overload)
{
    env_t e;
    s_env(&e, "overload", 1);
    /* Two writes in one frame with room for one item: the second is refused at once. */
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t b, frame;
    proto_buf_init(&b);
    proto_buf_init(&frame);
    proto_record_t r1 = s_record("carol", "", 600), r2 = s_record("dave", "", 600);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, &r1, 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 2, &r2, 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_batch_encode(&bt, &frame);
    s_send(&e, &frame);
    bool ok1 = false, over2 = false;
    for (int i = 0; i < 2; i++) {
        proto_msg_t m;
        s_answer(&e, &m);
        ck_assert_int_eq(m.type, PROTO_REPLY);
        if (m.rid == 1) {
            ck_assert_int_eq(m.status, PROTO_OK);
            ok1 = true;
        } else {
            ck_assert_uint_eq(m.rid, 2);
            ck_assert_int_eq(m.status, PROTO_EOVERLOAD);
            ck_assert_int_eq(memcmp(m.key.p, "store write queue full", 22), 0);
            over2 = true;
        }
        proto_msg_fini(&m);
    }
    ck_assert(ok1 && over2);
    ck_assert_uint_eq(s_stat(&e, "store_overload_total"), 1);
    ck_assert_uint_eq(s_stat(&e, "store_queue_items"), 0);
    proto_batch_fini(&bt);
    proto_buf_fini(&frame);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== catch-ups, pings, bad input ============================================================ */

START_TEST(test_catchup_and_ping)
{
    env_t e;
    s_env(&e, "catchup", 65536);
    proto_msg_t m;
    for (uint64_t i = 1; i <= 3; i++) {
        char uid[8];
        snprintf(uid, sizeof uid, "u%llu", (unsigned long long)i);
        s_put(&e, i, uid, "", 600, 0);
        s_expect(&e, i, PROTO_REPLY, PROTO_OK, &m);
        proto_msg_fini(&m);
    }
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_simple(&b, PROTO_PING, 10);
    s_send(&e, &b);
    s_expect(&e, 10, PROTO_PONG, PROTO_OK, &m);
    uint64_t epoch = 0, seq = 0;
    ck_assert(stats_find(m.stats, m.n, "store_epoch", &epoch));
    ck_assert(stats_find(m.stats, m.n, "store_sequence", &seq));
    ck_assert_uint_ne(epoch, 0);
    ck_assert_uint_eq(seq, 3);
    proto_msg_fini(&m);
    /* Our epoch, after 1: the changes after it. */
    proto_buf_reset(&b);
    proto_enc_catchup(&b, 11, epoch, 1, 100, 0, 0, "", 0);
    s_send(&e, &b);
    s_expect(&e, 11, PROTO_CATCHUP_REPLY, PROTO_OK, &m);
    ck_assert_int_eq(m.mode, PROTO_CATCHUP_INCREMENTAL);
    ck_assert_uint_eq(m.seq, 3);
    ck_assert(m.done);
    ck_assert_uint_eq(m.n, 2);
    ck_assert_str_eq(m.changes[0].rec.user_id, "u2");
    ck_assert_str_eq(m.changes[1].rec.user_id, "u3");
    proto_msg_fini(&m);
    /* Another epoch, no data wanted: a snapshot that is only a flush to the current sequence. */
    proto_buf_reset(&b);
    proto_enc_catchup(&b, 12, epoch + 1, 7, 100, PROTO_CATCHUP_F_NO_DATA, 0, "", 0);
    s_send(&e, &b);
    s_expect(&e, 12, PROTO_CATCHUP_REPLY, PROTO_OK, &m);
    ck_assert_int_eq(m.mode, PROTO_CATCHUP_SNAPSHOT);
    ck_assert_uint_eq(m.epoch, epoch);
    ck_assert_uint_eq(m.seq, 3);
    ck_assert_uint_eq(m.n, 0);
    ck_assert(m.done);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "store_catchups_total"), 2);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_malformed_commands)
{
    env_t e;
    s_env(&e, "malformed", 65536);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t enc;
    proto_enc_init(&enc, &b);
    proto_enc_header(&enc, 4, PROTO_GET, 21);
    proto_enc_u64(&enc, 5);
    s_send(&e, &b);
    proto_msg_t m;
    s_expect(&e, 21, PROTO_REPLY, PROTO_EBADREQ, &m);
    proto_msg_fini(&m);
    proto_buf_reset(&b);
    proto_enc_reply(&b, 22, PROTO_OK, 0, NULL, 0, NULL, 0); /* no cache-node sends a REPLY */
    s_send(&e, &b);
    s_expect(&e, 22, PROTO_REPLY, PROTO_EBADREQ, &m);
    ck_assert_int_eq(memcmp(m.key.p, "unexpected message type", 23), 0);
    proto_msg_fini(&m);
    ck_assert_int_eq(zu_send(e.cmd, NULL, 0, "\xc1\xc1", 2), 0);
    ck_assert_uint_eq(s_stat(&e, "store_malformed_total"), 3);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== the writer's timers and the stop ======================================================= */

START_TEST(test_sweeper_expires)
{
    env_t e;
    s_env(&e, "sweep", 65536);
    s_subscribed(&e);
    s_put(&e, 1, "erin", "brb", 1, 0); /* expires in a second */
    proto_msg_t m;
    s_expect(&e, 1, PROTO_REPLY, PROTO_OK, &m);
    proto_msg_fini(&m);
    /* The sweeper turns it offline as a sequenced change on the stream. */
    proto_buf_t keep;
    proto_buf_init(&keep);
    uint64_t until = util_mono_ms() + WAIT_MS;
    bool offline = false;
    while (!offline && util_mono_ms() < until) {
        s_stream(&e, PROTO_CHANGES, &m, &keep);
        for (uint32_t i = 0; i < m.n; i++)
            if (m.changes[i].kind == PROTO_CH_SET && m.changes[i].rec.status == PRESENCE_OFFLINE)
                offline = true;
        proto_msg_fini(&m);
    }
    ck_assert_msg(offline, "the expired record never went offline");
    ck_assert_uint_eq(s_stat(&e, "store_expirations_total"), 1);
    proto_buf_fini(&keep);
    s_env_fini(&e);
}
END_TEST

START_TEST(test_stop_acknowledges_queued)
{
    env_t e;
    s_env(&e, "stop", 65536);
    /* A write and a ping in one frame: once the PONG is back, the write is queued. */
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t b, frame;
    proto_buf_init(&b);
    proto_buf_init(&frame);
    proto_record_t r = s_record("frank", "", 600);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, &r, 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, 2);
    proto_batch_add(&bt, b.data, b.len);
    proto_batch_encode(&bt, &frame);
    s_send(&e, &frame);
    bool put_ok = false, pong = false;
    proto_msg_t m;
    s_answer(&e, &m);
    if (m.type == PROTO_REPLY)
        put_ok = m.rid == 1 && m.status == PROTO_OK;
    else
        pong = m.type == PROTO_PONG && m.rid == 2;
    proto_msg_fini(&m);
    s_env_stop(&e);
    if (!put_ok) {
        s_expect(&e, 1, PROTO_REPLY, PROTO_OK, &m);
        proto_msg_fini(&m);
    } else {
        s_expect(&e, 2, PROTO_PONG, PROTO_OK, &m);
        proto_msg_fini(&m);
        pong = true;
    }
    ck_assert(pong || put_ok);
    proto_batch_fini(&bt);
    proto_buf_fini(&frame);
    proto_buf_fini(&b);
    s_env_fini(&e);
}
END_TEST

/* ==== a replicated member ==================================================================== */

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof a;
    int p = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &sl) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* A one-member replicated store-node: it leads once its LEAD entry applied (its heartbeats name
 * member 1 and a term, its stats say it leads); a PUT is acknowledged and published; the same
 * command id again changes nothing and answers the first attempt's version; another id is a new
 * write. */
START_TEST(test_replicated_member)
{
    env_t e;
    int port = s_free_port();
    ck_assert_int_gt(port, 0);
    s_env2(&e, "repl", 65536, port);
    proto_msg_t m;
    proto_buf_t keep;
    proto_buf_init(&keep);
    s_stream(&e, PROTO_HUGZ, &m, &keep);
    ck_assert_uint_eq(m.member, 1);
    ck_assert_uint_gt(m.term, 0);
    ck_assert_uint_ne(m.epoch, 0); /* from the log's LEAD entry */
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "store_repl_leading"), 1);
    ck_assert_uint_eq(s_stat(&e, "store_repl_members"), 1);
    uint8_t id[PROTO_CMD_ID_LEN];
    memset(id, 7, sizeof id);
    proto_record_t r = s_record("carol", "first", 600);
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_records_cmd_id(&b, PROTO_PUT, 11, &r, 1, 0, id);
    s_send(&e, &b);
    s_expect(&e, 11, PROTO_REPLY, PROTO_OK, &m);
    uint64_t v1 = m.recs[0].version, as_of = m.seq;
    ck_assert_uint_gt(v1, 0);
    proto_msg_fini(&m);
    s_stream(&e, PROTO_CHANGES, &m, &keep);
    ck_assert_uint_eq(m.seq, v1);
    proto_msg_fini(&m);
    /* The same command again (a retry after a failover): applied once. */
    r = s_record("carol", "first", 600);
    proto_buf_reset(&b);
    proto_enc_records_cmd_id(&b, PROTO_PUT, 12, &r, 1, 0, id);
    s_send(&e, &b);
    s_expect(&e, 12, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.recs[0].version, v1);
    ck_assert_uint_eq(m.seq, as_of);
    proto_msg_fini(&m);
    ck_assert_uint_eq(s_stat(&e, "store_repl_dedup_hits_total"), 1);
    /* Another id: a new version. */
    id[0] = 8;
    proto_buf_reset(&b);
    proto_enc_records_cmd_id(&b, PROTO_PUT, 13, &r, 1, 0, id);
    s_send(&e, &b);
    s_expect(&e, 13, PROTO_REPLY, PROTO_OK, &m);
    ck_assert_uint_eq(m.recs[0].version, v1 + 1);
    proto_msg_fini(&m);
    proto_buf_fini(&b);
    proto_buf_fini(&keep);
    s_env_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("store_node");
    TCase *tc = tcase_create("writes");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_write_publish_read);
    tcase_add_test(tc, test_empty_and_expired_writes);
    tcase_add_test(tc, test_queue_full_overload);
    suite_add_tcase(s, tc);
    tc = tcase_create("protocol");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_catchup_and_ping);
    tcase_add_test(tc, test_malformed_commands);
    suite_add_tcase(s, tc);
    tc = tcase_create("writer");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sweeper_expires);
    tcase_add_test(tc, test_stop_acknowledges_queued);
    tcase_add_test(tc, test_replicated_member);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_min_level = LOG_ERROR;
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
