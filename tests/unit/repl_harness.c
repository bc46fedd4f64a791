/* repl_harness.c -- the LMDB state machine and the member runners of check_repl and replbench
 * (repl_harness.h).
 *
 * The state machine follows the contract of repl.h to the letter, because it is the model for the
 * store-node's: apply = one LMDB transaction that also records the index (MDB_NOSYNC, the raft
 * log being the durable record), snapshot = a compacting copy whose applied index is read back
 * from the copy itself, restore = validate the copy, then swap it in (rename) and reopen.
 *
 * A forked member runs the same code in a child process: its main thread keeps the configured
 * number of proposals in flight while it is a ready leader and the parent asks for load, and
 * publishes its status, latencies and failover timestamps into a MAP_SHARED page every 10 ms at
 * most (a condition-variable wait with that deadline, woken by every acknowledgement).
 */
#include "repl_harness.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ==== helpers ================================================================================= */

uint64_t rh_mono_us(void)
{
    return util_mono_us();
}

static void s_be64(uint64_t v, unsigned char *out)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

static uint64_t s_rd_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

void rh_rmtree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char p[1200];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rh_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* Filler comes from a pool of random bytes made once: the load generator must cost next to
 * nothing next to what it measures. */
static unsigned char s_pool[REPL_ENTRY_MAX];
static pthread_once_t s_pool_once = PTHREAD_ONCE_INIT;

static void s_pool_init(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i + 8 <= sizeof s_pool; i += 8) {
        x = util_mix64(x + i);
        memcpy(s_pool + i, &x, 8);
    }
}

void rh_entry_fill(unsigned char *buf, size_t len, uint64_t pid)
{
    pthread_once(&s_pool_once, s_pool_init);
    size_t off = (size_t)(util_mix64(pid) % 4096) * 8;
    if (len > 8) {
        size_t n = len - 8 < sizeof s_pool - off ? len - 8 : sizeof s_pool - off;
        memcpy(buf + 8, s_pool + off, n);
        if (n < len - 8)
            memcpy(buf + 8 + n, s_pool, len - 8 - n);
    }
    memcpy(buf, &pid, sizeof pid);
}

/* ==== the LMDB state machine ================================================================== */

static int s_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *k, uint64_t *v)
{
    MDB_val key = {strlen(k), (void *)k}, val;
    int rc = mdb_get(txn, dbi, &key, &val);
    if (rc == 0 && val.mv_size == 8)
        memcpy(v, val.mv_data, 8);
    else if (rc == 0)
        rc = MDB_CORRUPTED;
    return rc;
}

static int s_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *k, uint64_t v)
{
    MDB_val key = {strlen(k), (void *)k}, val = {8, &v};
    return mdb_put(txn, dbi, &key, &val, 0);
}

/* Open an environment at path (a directory, or with MDB_NOSUBDIR a file) and read its meta. */
static int s_env_open(const char *path, unsigned flags, MDB_env **envp, MDB_dbi *ent, MDB_dbi *meta, uint64_t *applied,
                      uint64_t *chain, uint64_t *count)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&env);
    if (rc)
        return rc;
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 8ULL << 30);
    if ((rc = mdb_env_open(env, path, flags, 0640)) != 0)
        goto fail;
    bool ro = flags & MDB_RDONLY;
    if ((rc = mdb_txn_begin(env, NULL, ro ? MDB_RDONLY : 0, &txn)) != 0)
        goto fail;
    if ((rc = mdb_dbi_open(txn, "ent", ro ? 0 : MDB_CREATE, ent)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", ro ? 0 : MDB_CREATE, meta)) != 0)
        goto fail;
    *applied = *chain = *count = 0;
    if (((rc = s_meta_get(txn, *meta, "applied", applied)) != 0 && rc != MDB_NOTFOUND) ||
        ((rc = s_meta_get(txn, *meta, "chain", chain)) != 0 && rc != MDB_NOTFOUND) ||
        ((rc = s_meta_get(txn, *meta, "count", count)) != 0 && rc != MDB_NOTFOUND))
        goto fail;
    rc = ro ? (mdb_txn_abort(txn), 0) : mdb_txn_commit(txn);
    txn = NULL;
    if (rc)
        goto fail;
    *envp = env;
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
}

int rh_fsm_open(rh_fsm_t *f, const char *dir, bool sync, char *err)
{
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    f->sync = sync;
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, REPL_ERR_LEN, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    pthread_mutex_init(&f->lock, NULL);
    int rc = s_env_open(dir, MDB_NOTLS | (sync ? 0 : MDB_NOSYNC), &f->env, &f->ent, &f->meta, &f->applied, &f->chain, &f->count);
    if (rc) {
        snprintf(err, REPL_ERR_LEN, "lmdb %s: %s", dir, mdb_strerror(rc));
        pthread_mutex_destroy(&f->lock);
        return -1;
    }
    f->apply_calls = f->restores = f->early_acks = 0;
    f->role = REPL_STOPPED;
    return 0;
}

void rh_fsm_close(rh_fsm_t *f)
{
    if (!f->env)
        return;
    mdb_env_sync(f->env, 1);
    mdb_env_close(f->env);
    f->env = NULL;
    pthread_mutex_destroy(&f->lock);
}

void rh_fsm_counts(rh_fsm_t *f, rh_counts_t *c)
{
    pthread_mutex_lock(&f->lock);
    c->applied = f->applied;
    c->chain = f->chain;
    c->count = f->count;
    c->apply_calls = f->apply_calls;
    c->restores = f->restores;
    c->early_acks = f->early_acks;
    pthread_mutex_unlock(&f->lock);
}

int rh_fsm_apply(rh_fsm_t *f, uint64_t index, const void *data, size_t len)
{
    if (len < 8 || index <= f->applied)
        return -1; /* repl never gives an index twice; the test entries carry an 8-byte id */
    uint64_t pid, h = util_hash64(data, len, 7);
    memcpy(&pid, data, 8);
    uint64_t chain = util_mix64(f->chain ^ util_mix64(index) ^ h);
    unsigned char kb[8], vb[16];
    s_be64(index, kb);
    memcpy(vb, &pid, 8);
    memcpy(vb + 8, &h, 8);
    MDB_txn *txn;
    MDB_val k = {8, kb}, v = {f->keep_data ? 16 + len : 16, NULL};
    int rc = mdb_txn_begin(f->env, NULL, 0, &txn);
    if (rc)
        return -1;
    if ((rc = mdb_put(txn, f->ent, &k, &v, MDB_APPEND | MDB_RESERVE)) == 0) {
        memcpy(v.mv_data, vb, 16);
        if (f->keep_data)
            memcpy((char *)v.mv_data + 16, data, len);
    }
    if (rc != 0 || (rc = s_meta_put(txn, f->meta, "applied", index)) != 0 || (rc = s_meta_put(txn, f->meta, "chain", chain)) != 0 ||
        (rc = s_meta_put(txn, f->meta, "count", f->count + 1)) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    if (mdb_txn_commit(txn) != 0)
        return -1;
    pthread_mutex_lock(&f->lock);
    f->applied = index;
    f->chain = chain;
    f->count++;
    f->apply_calls++;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int s_on_apply(void *arg, uint64_t index, const void *data, size_t len, void *cookie)
{
    rh_fsm_t *f = arg;
    int rc = rh_fsm_apply(f, index, data, len);
    if (rc == 0 && cookie && f->role != REPL_LEADER) {
        pthread_mutex_lock(&f->lock);
        f->early_acks++; /* repl.h: a leader's own entries apply after on_role(LEADER) */
        pthread_mutex_unlock(&f->lock);
    }
    if (rc == 0 && cookie && f->on_ack)
        f->on_ack(f->ctx, cookie, index);
    return rc;
}

static void s_on_reject(void *arg, void *cookie, int status, const repl_leader_t *leader)
{
    rh_fsm_t *f = arg;
    if (f->on_nack)
        f->on_nack(f->ctx, cookie, status, leader);
}

static void s_on_role(void *arg, int role, uint64_t term, const repl_leader_t *leader)
{
    rh_fsm_t *f = arg;
    f->role = role;
    if (f->on_role)
        f->on_role(f->ctx, role, term, leader);
}

/* libuv worker: a compacting copy, then its applied index read from the copy itself. */
static int s_on_snapshot(void *arg, const char *path, uint64_t *applied, char *err)
{
    rh_fsm_t *f = arg;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, REPL_ERR_LEN, "open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = mdb_env_copyfd2(f->env, fd, MDB_CP_COMPACT);
    close(fd);
    if (rc) {
        snprintf(err, REPL_ERR_LEN, "mdb_env_copyfd2: %s", mdb_strerror(rc));
        return -1;
    }
    MDB_env *copy;
    MDB_dbi ent, meta;
    uint64_t chain, count;
    rc = s_env_open(path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, &copy, &ent, &meta, applied, &chain, &count);
    if (rc) {
        snprintf(err, REPL_ERR_LEN, "reading the copy back: %s", mdb_strerror(rc));
        return -1;
    }
    mdb_env_close(copy);
    return 0;
}

/* Raft thread (or the starting thread): validate the copy, then swap it in. */
static int s_on_restore(void *arg, const char *path, uint64_t applied, char *err)
{
    rh_fsm_t *f = arg;
    MDB_env *copy;
    MDB_dbi ent, meta;
    uint64_t a, chain, count;
    int rc = s_env_open(path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, &copy, &ent, &meta, &a, &chain, &count);
    if (rc) {
        snprintf(err, REPL_ERR_LEN, "snapshot is not an LMDB environment: %s", mdb_strerror(rc));
        return -1;
    }
    mdb_env_close(copy);
    if (a != applied) {
        snprintf(err, REPL_ERR_LEN, "snapshot copy holds index %llu, header says %llu", (unsigned long long)a,
                 (unsigned long long)applied);
        return -1;
    }
    char data[700];
    snprintf(data, sizeof data, "%s/data.mdb", f->dir);
    mdb_env_close(f->env);
    f->env = NULL;
    if (rename(path, data) < 0) {
        snprintf(err, REPL_ERR_LEN, "rename %s: %s", path, strerror(errno));
        /* the old environment is intact: reopen it */
    }
    uint64_t na, nc, nn;
    rc = s_env_open(f->dir, MDB_NOTLS | (f->sync ? 0 : MDB_NOSYNC), &f->env, &f->ent, &f->meta, &na, &nc, &nn);
    if (rc) {
        snprintf(err, REPL_ERR_LEN, "reopen %s: %s", f->dir, mdb_strerror(rc));
        abort(); /* a test state machine that lost its environment cannot go on */
    }
    pthread_mutex_lock(&f->lock);
    f->applied = na;
    f->chain = nc;
    f->count = nn;
    f->restores++;
    pthread_mutex_unlock(&f->lock);
    return na == applied ? 0 : -1;
}

void rh_fsm_callbacks(rh_fsm_t *f, repl_callbacks_t *cb)
{
    memset(cb, 0, sizeof *cb);
    cb->arg = f;
    cb->on_apply = s_on_apply;
    cb->on_reject = s_on_reject;
    cb->on_role = s_on_role;
    cb->on_snapshot = s_on_snapshot;
    cb->on_restore = s_on_restore;
}

long rh_fsm_entries(rh_fsm_t *f, uint64_t **idx, uint64_t **ids, uint64_t **hashes)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_stat st;
    if (mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_stat(txn, f->ent, &st) != 0 || mdb_cursor_open(txn, f->ent, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    size_t n = st.ms_entries, i = 0;
    *idx = xmalloc((n + 1) * 8);
    *ids = xmalloc((n + 1) * 8);
    *hashes = xmalloc((n + 1) * 8);
    MDB_val k, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && i < n) {
        (*idx)[i] = s_rd_be64(k.mv_data);
        memcpy(&(*ids)[i], v.mv_data, 8);
        memcpy(&(*hashes)[i], (char *)v.mv_data + 8, 8);
        i++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return (long)i;
}

/* ==== members in this process ================================================================= */

int rh_free_ports(int *ports, unsigned n)
{
    int fds[REPL_MEMBERS_MAX];
    unsigned got = 0;
    int rc = 0;
    for (; got < n; got++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        fds[got] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[got] < 0 || bind(fds[got], (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(fds[got], (struct sockaddr *)&a, &al) < 0) {
            if (fds[got] >= 0)
                close(fds[got]);
            rc = -1;
            break;
        }
        ports[got] = ntohs(a.sin_port);
    }
    for (unsigned i = 0; i < got; i++)
        close(fds[i]);
    return rc;
}

int rh_cluster_init(rh_node_t *nodes, unsigned n, const char *base_dir, const repl_config_t *tmpl)
{
    int ports[REPL_MEMBERS_MAX];
    if (n > REPL_MEMBERS_MAX || rh_free_ports(ports, n) < 0)
        return -1;
    memset(nodes, 0, n * sizeof *nodes);
    for (unsigned i = 0; i < n; i++) {
        rh_node_t *nd = &nodes[i];
        nd->id = i + 1;
        snprintf(nd->base, sizeof nd->base, "%s/m%u", base_dir, i + 1);
        nd->nmembers = n;
        for (unsigned j = 0; j < n; j++) {
            nd->members[j].id = j + 1;
            snprintf(nd->members[j].address, sizeof nd->members[j].address, "127.0.0.1:%d", ports[j]);
        }
        if (tmpl)
            nd->tmpl = *tmpl;
    }
    return 0;
}

int rh_node_start(rh_node_t *nd, char *err)
{
    char dir[600];
    mkdir(nd->base, 0750);
    snprintf(dir, sizeof dir, "%s/lmdb", nd->base);
    void (*ack)(void *, void *, uint64_t) = nd->fsm.on_ack;
    void (*nack)(void *, void *, int, const repl_leader_t *) = nd->fsm.on_nack;
    void (*role)(void *, int, uint64_t, const repl_leader_t *) = nd->fsm.on_role;
    void *ctx = nd->fsm.ctx;
    if (rh_fsm_open(&nd->fsm, dir, false, err) < 0)
        return -1;
    nd->fsm.on_ack = ack ? ack : rh_prop_ack;
    nd->fsm.on_nack = nack ? nack : rh_prop_nack;
    nd->fsm.on_role = role;
    nd->fsm.ctx = ctx;
    char rdir[600];
    snprintf(rdir, sizeof rdir, "%s/raft", nd->base);
    repl_config_t c = nd->tmpl;
    c.id = nd->id;
    c.members = nd->members;
    c.nmembers = nd->nmembers;
    c.dir = rdir;
    c.applied_index = nd->fsm.applied;
    rh_fsm_callbacks(&nd->fsm, &c.cb);
    if (repl_start(&c, &nd->r, err) != REPL_OK) {
        rh_fsm_close(&nd->fsm);
        return -1;
    }
    return 0;
}

int rh_node_stop(rh_node_t *nd)
{
    int rc = repl_stop(&nd->r);
    if (rc == 0)
        rh_fsm_close(&nd->fsm);
    return rc;
}

void rh_node_wipe(rh_node_t *nd)
{
    rh_rmtree(nd->base);
}

int rh_ready_leader(rh_node_t *nodes, unsigned n)
{
    int best = -1;
    uint64_t term = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!nodes[i].r)
            continue;
        repl_status_t st;
        repl_status(nodes[i].r, &st);
        if (st.role == REPL_LEADER && st.ready && st.term > term) {
            best = (int)i;
            term = st.term;
        }
    }
    return best;
}

int rh_wait_leader(rh_node_t *nodes, unsigned n, unsigned timeout_ms)
{
    uint64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        int l = rh_ready_leader(nodes, n);
        if (l >= 0 || util_mono_ms() >= deadline)
            return l;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL); /* polling a condition against a deadline */
    }
}

void rh_prop_ack(void *ctx, void *cookie, uint64_t index)
{
    (void)ctx;
    rh_prop_t *p = cookie;
    p->index = index;
    atomic_store(&p->state, 1);
}

void rh_prop_nack(void *ctx, void *cookie, int status, const repl_leader_t *leader)
{
    (void)ctx;
    rh_prop_t *p = cookie;
    p->status = status;
    p->leader = *leader;
    atomic_store(&p->state, 2);
}

/* ==== members in forked processes ============================================================== */

rh_shm_t *rh_shm_new(void)
{
    void *p = mmap(NULL, sizeof(rh_shm_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, sizeof(rh_shm_t));
    return p;
}

void rh_shm_destroy(rh_shm_t *shm)
{
    if (shm)
        munmap(shm, sizeof *shm);
}

typedef struct child {
    rh_shm_t *shm;
    rh_shm_member_t *me;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned nslots, nfree;
    unsigned *free_slots;
    uint64_t *sent_us;
} child_t;

static void s_child_release(child_t *c, void *cookie)
{
    unsigned slot = (unsigned)((uintptr_t)cookie - 1);
    pthread_mutex_lock(&c->lock);
    c->free_slots[c->nfree++] = slot;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void s_child_ack(void *ctx, void *cookie, uint64_t index)
{
    (void)index;
    child_t *c = ctx;
    unsigned slot = (unsigned)((uintptr_t)cookie - 1);
    uint64_t now = util_mono_us(), lat = now - c->sent_us[slot];
    int b = lat ? (int)(4.0 * log2((double)lat)) : 0;
    if (b >= RH_LAT_BUCKETS)
        b = RH_LAT_BUCKETS - 1;
    atomic_fetch_add(&c->me->lat[b], 1);
    atomic_fetch_add(&c->me->acked, 1);
    unsigned long long zero = 0;
    if (atomic_load(&c->me->ready_us))
        atomic_compare_exchange_strong(&c->me->first_ack_us, &zero, now);
    s_child_release(c, cookie);
}

static void s_child_nack(void *ctx, void *cookie, int status, const repl_leader_t *leader)
{
    (void)status;
    (void)leader;
    child_t *c = ctx;
    atomic_fetch_add(&c->me->rejected, 1);
    s_child_release(c, cookie);
}

static void s_child_role(void *ctx, int role, uint64_t term, const repl_leader_t *leader)
{
    (void)leader;
    child_t *c = ctx;
    if (role == REPL_LEADER) {
        atomic_store(&c->me->first_ack_us, 0);
        atomic_store(&c->me->ready_term, term);
        atomic_store(&c->me->ready_us, util_mono_us());
        atomic_store(&c->me->ready, 1);
    } else {
        atomic_store(&c->me->ready, 0);
    }
    pthread_mutex_lock(&c->lock);
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int s_child_main(rh_node_t *nd, rh_shm_t *shm, rh_shm_member_t *me)
{
    child_t c = {.shm = shm, .me = me};
    pthread_mutex_init(&c.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c.cond, &ca);
    c.nslots = shm->inflight ? shm->inflight : 1;
    c.free_slots = xmalloc(c.nslots * sizeof *c.free_slots);
    c.sent_us = xcalloc(c.nslots, sizeof *c.sent_us);
    for (unsigned i = 0; i < c.nslots; i++)
        c.free_slots[c.nfree++] = i;
    size_t len = shm->entry_bytes >= 8 ? shm->entry_bytes : 8;
    unsigned char *buf = xmalloc(len);
    nd->fsm.on_ack = s_child_ack;
    nd->fsm.on_nack = s_child_nack;
    nd->fsm.on_role = s_child_role;
    nd->fsm.ctx = &c;
    nd->fsm.keep_data = shm->keep_data != 0;
    char err[REPL_ERR_LEN];
    if (nd->tmpl.max_outstanding < c.nslots)
        nd->tmpl.max_outstanding = c.nslots;
    if (rh_node_start(nd, err) < 0) {
        fprintf(stderr, "member %llu: %s\n", (unsigned long long)nd->id, err);
        return 3;
    }
    uint64_t counter = 0, tag = (uint64_t)getpid() << 32;
    pthread_mutex_lock(&c.lock);
    while (!atomic_load(&shm->stop)) {
        while (atomic_load(&shm->load) && atomic_load(&me->ready) && c.nfree > 0 && !atomic_load(&shm->stop)) {
            unsigned slot = c.free_slots[--c.nfree];
            pthread_mutex_unlock(&c.lock);
            rh_entry_fill(buf, len, tag | ++counter);
            c.sent_us[slot] = util_mono_us();
            int rc = repl_propose(nd->r, buf, len, (void *)(uintptr_t)(slot + 1));
            pthread_mutex_lock(&c.lock);
            if (rc != REPL_OK) {
                c.free_slots[c.nfree++] = slot;
                break; /* busy or shutting down: wait for an ending */
            }
        }
        repl_status_t st;
        repl_status(nd->r, &st);
        atomic_store(&me->role, st.role);
        atomic_store(&me->term, st.term);
        atomic_store(&me->commit_index, st.commit_index);
        atomic_store(&me->state_index, st.state_index);
        atomic_store(&me->snapshots_restored, st.snapshots_restored);
        atomic_store(&me->snapshots_taken, st.snapshots_taken);
        atomic_store(&me->elections, st.elections);
        atomic_store(&me->failed, st.failed);
        atomic_store(&me->outstanding, st.outstanding);
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += 10 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c.cond, &c.lock, &dl);
    }
    pthread_mutex_unlock(&c.lock);
    int rc = rh_node_stop(nd) == 0 ? 0 : 4;
    free(buf);
    free(c.free_slots);
    free(c.sent_us);
    return rc;
}

pid_t rh_fork_member(rh_node_t *nodes, unsigned i, rh_shm_t *shm)
{
    rh_shm_member_t *me = &shm->m[i];
    atomic_store(&me->ready, 0);
    atomic_store(&me->ready_us, 0);
    atomic_store(&me->first_ack_us, 0);
    atomic_store(&me->role, 0);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        signal(SIGPIPE, SIG_IGN);
        _exit(s_child_main(&nodes[i], shm, me));
    }
    atomic_store(&me->pid, pid);
    return pid;
}

int rh_wait_exit(pid_t pid, unsigned timeout_ms)
{
    uint64_t deadline = util_mono_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (w < 0 && errno != EINTR)
            return -1;
        if (util_mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL); /* polling for an exit against a deadline */
    }
}

double rh_lat_pct(const unsigned long long *lat, double p)
{
    unsigned long long total = 0, seen = 0;
    for (int b = 0; b < RH_LAT_BUCKETS; b++)
        total += lat[b];
    if (!total)
        return 0;
    unsigned long long want = (unsigned long long)ceil(p * (double)total);
    for (int b = 0; b < RH_LAT_BUCKETS; b++) {
        seen += lat[b];
        if (seen >= want)
            return pow(2.0, (b + 1) / 4.0); /* upper edge of the quarter-octave bucket */
    }
    return pow(2.0, RH_LAT_BUCKETS / 4.0);
}
