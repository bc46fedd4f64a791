/* repl.c -- one member of the store's Raft cluster, on libraft 0.15 with its libuv I/O (repl.h).
 *
 * The member owns a thread that runs a libuv loop holding libraft, raft_uv (the durable log) and
 * raft_uv_tcp (the transport). Owners propose from any thread into a bounded ring (mutex) and wake
 * the loop with a uv_async; the loop hands the ring's entries to raft_apply in batches and keeps
 * each accepted proposal in a second ring, ordered by log index, until its entry is applied here
 * (on_apply gets the cookie) or leadership is lost (on_reject). A uv_check handle runs after every
 * loop turn: it notices role changes (libraft 0.15 has no state callback), appends a barrier when
 * this member becomes leader (on_role(LEADER) only once that barrier applied), and publishes the
 * status snapshot that repl_status copies.
 *
 * Key decisions, each forced by a libraft 0.15 behaviour (DESIGN notes in docs/REPLICATION.md):
 *  - fsm->apply is the owner's real, synchronous apply: a failed fsm->apply makes a follower
 *    UNAVAILABLE, and last_applied (where snapshots are taken) advances when apply returns.
 *  - fsm->apply is not told the index; replicationApply() applies last_applied + 1.
 *  - snapshots are FSM version 3 (async): the copy of the state is made on a libuv worker and
 *    handed to raft_uv as two buffers (our header + an mmap of the copy), so the state is never
 *    held in the heap while it is written; raft_uv 0.15 implements async_work but says io
 *    version 1, which raft_init refuses with an async FSM: we set version 2 (upstream 269e541).
 *  - libraft replays its log from the last snapshot at every start and restores that snapshot
 *    first; the state is persistent, so both are skipped up to the state's applied index.
 *  - entries are framed and padded to 8 bytes: raft_uv 0.15 cannot reload any other length.
 *
 * Threads: see repl.h. Lock order: qlock and slock are never held together.
 */
#include "repl.h"
#include "repl_dns.h"

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>
#include <zlib.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* uv.h pulls in <sys/param.h>, whose MIN/MAX clash with util.h's: no util.h here. */
static void *s_zalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "repl: out of memory (%zu bytes)\n", n * size);
        abort();
    }
    return p;
}

#define REPL_BATCH_MAX 256 /* entries handed to one raft_apply call */
#define REPL_DIR_MAX 900   /* raft_uv keeps the directory in a fixed buffer */

/* Snapshot data as libraft stores and ships it: our header, then the owner's copy of the state.
 *
 *   0        8         12        16              24                32          36          40
 *   +--------+---------+---------+---------------+-----------------+-----------+-----------+
 *   | magic  | version | flags=0 | applied (LE)  | content_len(LE) | crc32 of  | crc32 of  | content...
 *   |PRSREPL1| 1 (LE)  |         | index of copy | bytes after hdr | content   | bytes 0-35|
 *   +--------+---------+---------+---------------+-----------------+-----------+-----------+
 */
/* Every entry libraft stores is framed and padded to a multiple of 8 bytes. raft_uv 0.15 requires
 * it (uv_segment.c asserts it, compiled out in release builds): its writer pads each entry to 8
 * bytes but its loader sums the unpadded lengths, so a log holding one entry of another length
 * cannot be loaded after a restart ("entries count in preamble is too high").
 *
 *   0            4            8                 8+len        (multiple of 8)
 *   +------------+------------+-----------------+------------+
 *   | len (LE32) | ENT_MAGIC  | the owner's     | zero       |
 *   |            | (LE32)     | bytes           | padding    |
 *   +------------+------------+-----------------+------------+
 */
#define ENT_HDR_LEN 8
#define ENT_MAGIC 0x31454e52u /* "RNE1" little-endian */

#define SNAP_MAGIC "PRSREPL1"
#define SNAP_VERSION 1
#define SNAP_HDR_LEN 40

typedef struct prop { /* a proposal in the handoff ring */
    void *buf;        /* raft_malloc'd copy; owned by the ring until raft_apply takes it */
    size_t len;
    void *cookie;
} prop_t;

typedef struct pend { /* a proposal libraft accepted, waiting for its entry to be applied here */
    uint64_t index, term;
    void *cookie;
} pend_t;

typedef struct batch { /* one raft_apply request; freed in its callback */
    struct raft_apply req;
    repl_t *s;
} batch_t;

struct repl {
    /* configuration, immutable after repl_start (cfg's pointers point at the copies below) */
    repl_config_t cfg;
    repl_member_t members[REPL_MEMBERS_MAX];
    char dir[REPL_DIR_MAX];
    char bind[REPL_ADDR_MAX];
    char self_addr[REPL_ADDR_MAX];
    char snap_path[REPL_DIR_MAX + 32], restore_path[REPL_DIR_MAX + 32];

    /* libuv and libraft: the raft thread (the starting thread before the raft thread exists) */
    uv_loop_t loop;
    uv_async_t wake;
    uv_check_t check;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    pthread_t thread;
    bool loop_ok, thread_ok;

    /* proposal handoff: any thread -> raft thread */
    pthread_mutex_t qlock;
    prop_t *q; /* ring of cfg.max_outstanding */
    size_t qhead, qn;
    bool stopping;    /* under qlock: repl_stop was called */
    atomic_bool down; /* failed: repl_propose refuses */
    atomic_uint outstanding;
    prop_t *drain; /* raft thread: the ring's contents taken in one turn */

    /* raft thread state */
    pend_t *pend; /* ring of cfg.max_outstanding, increasing index */
    size_t phead, pn;
    uint64_t dead_term; /* proposals of this term or older can no longer be applied with their cookie */
    uint64_t state_index;
    uint64_t lead_term; /* the term libraft says we lead (0: not leader) */
    bool ready, barrier_pending;
    struct raft_barrier barrier;
    int rep_role; /* last role given to on_role */
    uint64_t rep_leader;
    int prev_state;
    uint64_t last_leader;
    bool closing, closed, failed;

    /* the snapshot being taken (libraft takes one at a time) */
    uint64_t snap_target;
    int snap_fd;
    void *snap_map;
    size_t snap_len;
    unsigned char snap_hdr[SNAP_HDR_LEN];
    struct raft_buffer snap_bufs[2];
    char snap_err[REPL_ERR_LEN]; /* written by the worker, read after it completed */

    /* counters (raft thread) */
    uint64_t elections, leader_changes, snapshots_taken, snapshots_restored, committed, rejected;
    char error[REPL_ERR_LEN];

    /* what repl_status copies */
    pthread_mutex_t slock;
    repl_status_t st;
};

/* ==== small helpers ========================================================================== */

__attribute__((format(printf, 2, 3))) static void s_errf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, REPL_ERR_LEN, fmt, ap);
    va_end(ap);
}

static void s_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void s_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t s_get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t s_get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int s_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int s_mkdirs(const char *path)
{
    char tmp[REPL_DIR_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/* "HOST:PORT": HOST an IPv4 dotted quad or a host name (letters, digits, '-', '.'; labels of
 * 1..63 bytes not starting or ending with '-'), PORT 1..65535. */
static bool s_valid_address(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || strlen(a) >= REPL_ADDR_MAX)
        return false;
    char host[REPL_ADDR_MAX];
    memcpy(host, a, (size_t)(colon - a));
    host[colon - a] = '\0';
    if (!repl_dns_is_ipv4(host)) {
        size_t label = 0;
        for (const char *h = host;; h++) {
            if (*h == '.' || *h == '\0') {
                if (label == 0 || h[-1] == '-')
                    return false;
                if (*h == '\0')
                    break;
                label = 0;
                continue;
            }
            bool ok = (*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || (*h == '-' && label > 0);
            if (!ok || ++label > 63)
                return false;
        }
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return false;
    unsigned port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port >= 1 && port <= 65535;
}

/* The HOST of a valid "HOST:PORT" is an IPv4 dotted quad. */
static bool s_host_is_ipv4(const char *address)
{
    char host[REPL_ADDR_MAX];
    snprintf(host, sizeof host, "%s", address);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    return repl_dns_is_ipv4(host);
}

const char *repl_strerror(int rc)
{
    switch (rc) {
    case REPL_OK:
        return "ok";
    case REPL_BUSY:
        return "too many proposals outstanding";
    case REPL_NOT_LEADER:
        return "not the leader";
    case REPL_LEADERSHIP_LOST:
        return "leadership lost before the entry was applied (outcome unknown)";
    case REPL_SHUTDOWN:
        return "member stopped";
    case REPL_TOOBIG:
        return "entry too large";
    case REPL_ERROR:
        return "error";
    default:
        return "unknown result";
    }
}

const char *repl_role_name(int role)
{
    switch (role) {
    case REPL_FOLLOWER:
        return "follower";
    case REPL_CANDIDATE:
        return "candidate";
    case REPL_LEADER:
        return "leader";
    default:
        return "stopped";
    }
}

/* ==== proposal endings (raft thread) ========================================================== */

static void s_leader_hint(repl_t *s, repl_leader_t *out)
{
    memset(out, 0, sizeof *out);
    if (s->closed || s->closing)
        return;
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&s->raft, &id, &addr);
    out->id = id;
    if (id && addr)
        snprintf(out->address, sizeof out->address, "%s", addr);
}

static void s_reject(repl_t *s, void *cookie, int status)
{
    repl_leader_t hint;
    s_leader_hint(s, &hint);
    s->rejected++;
    atomic_fetch_sub(&s->outstanding, 1);
    s->cfg.cb.on_reject(s->cfg.cb.arg, cookie, status, &hint);
}

/* End every accepted proposal that can no longer reach on_apply with its cookie: all of them
 * when this member is not the leader, or leads another term than the one they were proposed
 * in, or a raft_apply request of their term failed. */
static void s_purge_stale(repl_t *s, bool all)
{
    bool leader = !s->closed && !s->closing && raft_state(&s->raft) == RAFT_LEADER;
    uint64_t term = leader ? s->raft.current_term : 0;
    int status = s->closing || s->closed ? REPL_SHUTDOWN : REPL_LEADERSHIP_LOST;
    while (s->pn > 0) {
        pend_t *p = &s->pend[s->phead];
        if (!all && leader && p->term == term && p->term > s->dead_term)
            break; /* terms only grow along the ring: the rest are current too */
        void *cookie = p->cookie;
        s->phead = (s->phead + 1) % s->cfg.max_outstanding;
        s->pn--;
        s_reject(s, cookie, status);
    }
}

static void s_fail(repl_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_fail(repl_t *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
    s->failed = true;
    atomic_store(&s->down, true);
    if (s->cfg.cb.on_fatal)
        s->cfg.cb.on_fatal(s->cfg.cb.arg, s->error);
    /* raft_close may not be called from inside libraft's callbacks: the next loop turn does it. */
    uv_async_send(&s->wake);
}

/* ==== the state machine libraft drives (struct raft_fsm, version 3) =========================== */

static int s_fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    repl_t *s = fsm->data;
    *result = NULL;
    if (s->failed)
        return RAFT_IOERR;
    /* libraft 0.15 does not pass the index: replicationApply() applies last_applied + 1 and
     * advances last_applied only after this returns. */
    uint64_t index = (uint64_t)raft_last_applied(&s->raft) + 1;
    const unsigned char *e = buf->base;
    size_t len = buf->len >= ENT_HDR_LEN ? s_get32(e) : 0;
    if (buf->len < ENT_HDR_LEN || buf->len % 8 != 0 || s_get32(e + 4) != ENT_MAGIC || len > buf->len - ENT_HDR_LEN ||
        buf->len - ENT_HDR_LEN - len >= 8) {
        /* A committed entry we did not frame: the log is not ours, or it is corrupt. */
        s_fail(s, "entry %" PRIu64 " of %zu bytes is not a framed repl entry: member stopped", index, buf->len);
        return RAFT_IOERR;
    }
    s_purge_stale(s, false);
    void *cookie = NULL;
    bool mine = false;
    while (s->pn > 0 && s->pend[s->phead].index <= index) {
        pend_t p = s->pend[s->phead];
        s->phead = (s->phead + 1) % s->cfg.max_outstanding;
        s->pn--;
        if (p.index == index) {
            cookie = p.cookie;
            mine = true;
        } else {
            s_reject(s, p.cookie, REPL_ERROR); /* an index that was never applied: cannot happen */
        }
    }
    if (index <= s->state_index) {
        if (mine)
            s_reject(s, cookie, REPL_ERROR); /* a new proposal below the state: cannot happen */
        return 0;                            /* the state already holds it (replay after start) */
    }
    int rc = s->cfg.cb.on_apply(s->cfg.cb.arg, index, e + ENT_HDR_LEN, len, cookie);
    if (mine) {
        s->committed++;
        atomic_fetch_sub(&s->outstanding, 1);
    }
    if (rc != 0) {
        s_fail(s, "the owner could not apply entry %" PRIu64 ": member stopped", index);
        return RAFT_IOERR;
    }
    s->state_index = index;
    return 0;
}

/* In the loop: remember what the copy must hold; the copy itself is made by s_fsm_snapshot_async. */
static int s_fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    repl_t *s = fsm->data;
    s->snap_target = s->state_index;
    s->snap_err[0] = '\0';
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* On a libuv worker: the owner copies its state into snap_path; we map the copy read-only and
 * give libraft our header plus the mapping (raft_uv writes both into its snapshot file). */
static int s_fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    repl_t *s = fsm->data;
    uint64_t applied = 0;
    struct stat st;
    unlink(s->snap_path);
    if (s->cfg.cb.on_snapshot(s->cfg.cb.arg, s->snap_path, &applied, s->snap_err) != 0)
        goto fail;
    if (applied < s->snap_target) {
        s_errf(s->snap_err, "snapshot copy holds index %" PRIu64 ", below the %" PRIu64 " already applied", applied,
               s->snap_target);
        goto fail;
    }
    s->snap_fd = open(s->snap_path, O_RDONLY | O_CLOEXEC);
    if (s->snap_fd < 0 || fstat(s->snap_fd, &st) < 0 || st.st_size <= 0) {
        s_errf(s->snap_err, "snapshot copy %s: %s", s->snap_path, s->snap_fd < 0 ? strerror(errno) : "empty");
        goto fail;
    }
    s->snap_len = (size_t)st.st_size;
    s->snap_map = mmap(NULL, s->snap_len, PROT_READ, MAP_SHARED, s->snap_fd, 0);
    if (s->snap_map == MAP_FAILED) {
        s->snap_map = NULL;
        s_errf(s->snap_err, "mmap snapshot copy: %s", strerror(errno));
        goto fail;
    }
    madvise(s->snap_map, s->snap_len, MADV_SEQUENTIAL);
    unsigned char *h = s->snap_hdr;
    memcpy(h, SNAP_MAGIC, 8);
    s_put32(h + 8, SNAP_VERSION);
    s_put32(h + 12, 0);
    s_put64(h + 16, applied);
    s_put64(h + 24, s->snap_len);
    s_put32(h + 32, (uint32_t)crc32_z(0, s->snap_map, s->snap_len));
    s_put32(h + 36, (uint32_t)crc32_z(0, h, 36));
    s->snap_bufs[0].base = h;
    s->snap_bufs[0].len = SNAP_HDR_LEN;
    s->snap_bufs[1].base = s->snap_map;
    s->snap_bufs[1].len = s->snap_len;
    *bufs = s->snap_bufs;
    *n_bufs = 2;
    return 0;
fail:
    return RAFT_IOERR; /* libraft calls s_fsm_snapshot_finalize, which cleans up */
}

/* In the loop, after raft_uv wrote the snapshot (or the snapshot failed). */
static int s_fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    repl_t *s = fsm->data;
    if (s->snap_map) {
        munmap(s->snap_map, s->snap_len);
        s->snap_map = NULL;
        s->snapshots_taken++;
    }
    if (s->snap_fd >= 0)
        close(s->snap_fd);
    s->snap_fd = -1;
    unlink(s->snap_path);
    if (s->snap_err[0])
        snprintf(s->error, sizeof s->error, "snapshot: %s", s->snap_err);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* Called by raft_start (the starting thread) with the last snapshot on disk, and on a follower
 * installing the leader's snapshot. Owns buf->base only when returning 0. */
static int s_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    repl_t *s = fsm->data;
    const unsigned char *h = buf->base;
    char err[REPL_ERR_LEN] = "";
    int fd = -1;
    if (buf->len < SNAP_HDR_LEN || memcmp(h, SNAP_MAGIC, 8) != 0 || s_get32(h + 8) != SNAP_VERSION ||
        s_get32(h + 36) != (uint32_t)crc32_z(0, h, 36) || s_get64(h + 24) != buf->len - SNAP_HDR_LEN) {
        snprintf(s->error, sizeof s->error,
                 "restore: snapshot of %zu bytes has no valid header (magic, version, "
                 "length, header crc)",
                 buf->len);
        return RAFT_MALFORMED;
    }
    uint64_t applied = s_get64(h + 16);
    size_t len = buf->len - SNAP_HDR_LEN;
    if (applied <= s->state_index) {
        /* The state is persistent and already holds everything the snapshot has (libraft
         * restores its last snapshot at every start): keep it. */
        raft_free(buf->base);
        return 0;
    }
    if (s_get32(h + 32) != (uint32_t)crc32_z(0, h + SNAP_HDR_LEN, len)) {
        snprintf(s->error, sizeof s->error, "restore: snapshot content crc mismatch (%zu bytes)", len);
        return RAFT_CORRUPT;
    }
    unlink(s->restore_path);
    fd = open(s->restore_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || s_write_all(fd, h + SNAP_HDR_LEN, len) < 0 || fsync(fd) < 0) {
        snprintf(s->error, sizeof s->error, "restore: write %s: %s", s->restore_path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (s->cfg.cb.on_restore(s->cfg.cb.arg, s->restore_path, applied, err) != 0) {
        snprintf(s->error, sizeof s->error, "restore: %s", err);
        goto fail;
    }
    unlink(s->restore_path); /* unless the owner renamed it away */
    raft_free(buf->base);
    s->state_index = applied;
    s->snapshots_restored++;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(s->restore_path);
    return RAFT_IOERR;
}

/* ==== leadership, status ===================================================================== */

static void s_on_barrier(struct raft_barrier *req, int status)
{
    repl_t *s = req->data;
    s->barrier_pending = false;
    /* Applied after every earlier entry: the state now holds all that was committed before this
     * term. (On a step-down libraft fails it from inside convertClear, state still LEADER.) */
    if (status == 0 && !s->closing && raft_state(&s->raft) == RAFT_LEADER && s->raft.current_term == s->lead_term)
        s->ready = true;
}

static void s_barrier(repl_t *s)
{
    if (s->barrier_pending)
        return;
    s->barrier.data = s;
    int rv = raft_barrier(&s->raft, &s->barrier, s_on_barrier);
    if (rv == 0)
        s->barrier_pending = true;
    else
        snprintf(s->error, sizeof s->error, "barrier: %s", raft_strerror(rv)); /* retried next turn */
}

static int s_role_of(int raft_state)
{
    switch (raft_state) {
    case RAFT_FOLLOWER:
        return REPL_FOLLOWER;
    case RAFT_CANDIDATE:
        return REPL_CANDIDATE;
    case RAFT_LEADER:
        return REPL_LEADER;
    default:
        return REPL_STOPPED;
    }
}

static void s_publish(repl_t *s, int state, const repl_leader_t *hint)
{
    repl_status_t st;
    memset(&st, 0, sizeof st);
    st.role = s_role_of(state);
    st.ready = s->ready;
    st.leader = *hint;
    st.state_index = s->state_index;
    st.nmembers = s->cfg.nmembers;
    for (unsigned i = 0; i < s->cfg.nmembers; i++) {
        st.members[i].id = s->members[i].id;
        memcpy(st.members[i].address, s->members[i].address, REPL_ADDR_MAX);
    }
    if (!s->closed) {
        struct raft *r = &s->raft;
        st.term = r->current_term;
        st.commit_index = r->commit_index;
        st.last_applied = raft_last_applied(r);
        st.last_index = raft_last_index(r);
        st.snapshot_index = r->log.snapshot.last_index;
        if (state == RAFT_LEADER && r->leader_state.progress) {
            for (unsigned k = 0; k < r->configuration.n; k++) {
                for (unsigned i = 0; i < st.nmembers; i++) {
                    if (st.members[i].id != r->configuration.servers[k].id)
                        continue;
                    st.members[i].match_index = r->leader_state.progress[k].match_index;
                    st.members[i].recent = r->leader_state.progress[k].recent_recv || st.members[i].id == r->id;
                }
            }
        }
    }
    st.elections = s->elections;
    st.leader_changes = s->leader_changes;
    st.snapshots_taken = s->snapshots_taken;
    st.snapshots_restored = s->snapshots_restored;
    st.committed = s->committed;
    st.rejected = s->rejected;
    st.outstanding = atomic_load(&s->outstanding);
    st.failed = s->failed;
    memcpy(st.error, s->error, sizeof st.error);
    pthread_mutex_lock(&s->slock);
    s->st = st;
    pthread_mutex_unlock(&s->slock);
}

/* After every loop turn (and after our own actions): follow libraft's state. */
static void s_observe(repl_t *s)
{
    int state = s->closed || s->closing ? RAFT_UNAVAILABLE : raft_state(&s->raft);
    if (state == RAFT_UNAVAILABLE && !s->closing && !s->closed)
        s_fail(s, "libraft stopped this member: %s", raft_errmsg(&s->raft));
    uint64_t term = state == RAFT_UNAVAILABLE ? 0 : s->raft.current_term;
    if (state == RAFT_CANDIDATE && s->prev_state != RAFT_CANDIDATE)
        s->elections++;
    s->prev_state = state;
    if (state != RAFT_LEADER || term != s->lead_term)
        s_purge_stale(s, false);
    if (state == RAFT_LEADER) {
        if (term != s->lead_term) {
            s->lead_term = term;
            s->ready = false;
        }
        if (!s->ready)
            s_barrier(s);
    } else {
        s->lead_term = 0;
        s->ready = false;
    }
    repl_leader_t hint;
    s_leader_hint(s, &hint);
    if (hint.id && hint.id != s->last_leader) {
        if (s->last_leader)
            s->leader_changes++;
        s->last_leader = hint.id;
    }
    /* A leader that has not applied its barrier yet reports nothing new: it must not publish. */
    int role = s->failed ? REPL_STOPPED : s_role_of(state);
    if (s->cfg.cb.on_role && !(role == REPL_LEADER && !s->ready) && (role != s->rep_role || hint.id != s->rep_leader)) {
        s->rep_role = role;
        s->rep_leader = hint.id;
        s->cfg.cb.on_role(s->cfg.cb.arg, role, term, &hint);
    }
    s_publish(s, state, &hint);
}

static void s_on_check(uv_check_t *h)
{
    s_observe(h->data);
}

/* ==== proposals into libraft (raft thread) ==================================================== */

static void s_on_applied(struct raft_apply *req, int status, void *result)
{
    (void)result;
    batch_t *b = req->data;
    repl_t *s = b->s;
    free(b);
    if (status != 0) {
        /* Leadership lost (libraft fails requests from convertClear, while it still says
         * LEADER): nothing of this term can be applied with its cookie any more. */
        if (!s->closed && s->raft.current_term > s->dead_term)
            s->dead_term = s->raft.current_term;
        s_purge_stale(s, false);
    }
}

static void s_submit(repl_t *s, prop_t *items, size_t n)
{
    struct raft_buffer bufs[REPL_BATCH_MAX];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < REPL_BATCH_MAX ? n - i : REPL_BATCH_MAX;
        int rv = RAFT_NOTLEADER;
        batch_t *b = NULL;
        if (raft_state(&s->raft) == RAFT_LEADER) {
            b = s_zalloc(1, sizeof *b);
            b->s = s;
            b->req.data = b;
            for (size_t j = 0; j < k; j++) {
                bufs[j].base = items[i + j].buf;
                bufs[j].len = items[i + j].len;
            }
            rv = raft_apply(&s->raft, &b->req, bufs, (unsigned)k, s_on_applied);
        }
        if (rv == 0) {
            uint64_t first = b->req.index;
            for (size_t j = 0; j < k; j++) {
                size_t at = (s->phead + s->pn) % s->cfg.max_outstanding;
                s->pend[at] = (pend_t){.index = first + j, .term = s->raft.current_term, .cookie = items[i + j].cookie};
                s->pn++; /* bounded: pn + queued <= outstanding <= max_outstanding */
            }
        } else {
            free(b);
            if (rv != RAFT_NOTLEADER)
                snprintf(s->error, sizeof s->error, "raft_apply: %s", raft_strerror(rv));
            for (size_t j = 0; j < k; j++) {
                /* On NOTLEADER libraft did not touch the buffers. After other failures it may
                 * already have freed them (logDiscard): leak rather than free twice. */
                if (rv == RAFT_NOTLEADER)
                    raft_free(items[i + j].buf);
                s_reject(s, items[i + j].cookie, rv == RAFT_NOTLEADER ? REPL_NOT_LEADER : REPL_ERROR);
            }
        }
        i += k;
    }
}

static void s_close_handles(repl_t *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->wake))
        uv_close((uv_handle_t *)&s->wake, NULL);
    if (!uv_is_closing((uv_handle_t *)&s->check))
        uv_close((uv_handle_t *)&s->check, NULL);
}

static void s_on_raft_closed(struct raft *r)
{
    repl_t *s = r->data;
    raft_uv_close(&s->io);
    repl_dns_close(&s->transport);
    s->closed = true;
    s_purge_stale(s, true);
    pthread_mutex_lock(&s->qlock);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->qlock);
    repl_leader_t none = {0};
    s_publish(s, RAFT_UNAVAILABLE, &none);
    if (stopping)
        s_close_handles(s);
}

static void s_close_raft(repl_t *s)
{
    if (s->closing || s->closed)
        return;
    s->closing = true;
    s->ready = false;
    if (s->cfg.cb.on_role && s->rep_role != REPL_STOPPED) {
        repl_leader_t none = {0};
        s->rep_role = REPL_STOPPED;
        s->rep_leader = 0;
        s->cfg.cb.on_role(s->cfg.cb.arg, REPL_STOPPED, s->raft.current_term, &none);
    }
    raft_close(&s->raft, s_on_raft_closed);
}

static void s_on_wake(uv_async_t *h)
{
    repl_t *s = h->data;
    size_t n = 0;
    pthread_mutex_lock(&s->qlock);
    bool stopping = s->stopping;
    while (s->qn > 0) {
        s->drain[n++] = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->cfg.max_outstanding;
        s->qn--;
    }
    pthread_mutex_unlock(&s->qlock);
    if (stopping || s->failed || s->closing || s->closed) {
        for (size_t i = 0; i < n; i++) {
            raft_free(s->drain[i].buf);
            s_reject(s, s->drain[i].cookie, REPL_SHUTDOWN);
        }
    } else {
        /* Observe first: a member that just became leader appends its barrier before any
         * proposal, so every entry of its term applies after on_role(LEADER). */
        s_observe(s);
        s_submit(s, s->drain, n);
    }
    if (stopping || s->failed)
        s_close_raft(s);
    if (stopping && s->closed)
        s_close_handles(s);
    if (!s->closed && !s->closing)
        s_observe(s);
}

static void *s_thread(void *arg)
{
    repl_t *s = arg;
    /* raft_uv_tcp writes with write(2): a peer that went away would raise SIGPIPE, which kills
     * the process by default. Blocked in this thread (the only one doing socket I/O) the signal
     * stays pending here and the write fails with EPIPE, whatever the owner's disposition. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ==== start / stop / propose / status ========================================================= */

static int s_check_config(const repl_config_t *c, char *err)
{
    if (c->nmembers < 1 || c->nmembers > REPL_MEMBERS_MAX || !c->members) {
        s_errf(err, "members: 1 to %d required, got %u", REPL_MEMBERS_MAX, c->nmembers);
        return -1;
    }
    bool self = false;
    for (unsigned i = 0; i < c->nmembers; i++) {
        const repl_member_t *m = &c->members[i];
        if (m->id == 0 || m->id > INT64_MAX) {
            s_errf(err, "member %u: id must be 1..2^63-1", i + 1);
            return -1;
        }
        if (!memchr(m->address, '\0', sizeof m->address) || !s_valid_address(m->address)) {
            s_errf(err, "member %" PRIu64 ": address must be HOST:PORT (IPv4 or host name, port 1..65535)", m->id);
            return -1;
        }
        for (unsigned j = 0; j < i; j++) {
            if (c->members[j].id == m->id || strcmp(c->members[j].address, m->address) == 0) {
                s_errf(err, "member %" PRIu64 ": id and address must be unique", m->id);
                return -1;
            }
        }
        self |= m->id == c->id;
    }
    if (!self) {
        s_errf(err, "id %" PRIu64 " is not one of the members", c->id);
        return -1;
    }
    if (c->bind_address && (!s_valid_address(c->bind_address) || !s_host_is_ipv4(c->bind_address))) {
        s_errf(err, "bind_address must be A.B.C.D:PORT");
        return -1;
    }
    if (!c->dir || !*c->dir || strlen(c->dir) >= REPL_DIR_MAX) {
        s_errf(err, "dir must be a path of 1..%d bytes", REPL_DIR_MAX - 1);
        return -1;
    }
    if (!c->cb.on_apply || !c->cb.on_reject || !c->cb.on_restore || (!c->cb.on_snapshot && c->snapshot_threshold != UINT32_MAX)) {
        s_errf(err, "callbacks on_apply, on_reject, on_restore and on_snapshot are required");
        return -1;
    }
    unsigned et = c->election_timeout_ms ? c->election_timeout_ms : 1000;
    unsigned hb = c->heartbeat_ms ? c->heartbeat_ms : 100;
    if (hb >= et || et > 600000) {
        s_errf(err, "heartbeat_ms (%u) must be below election_timeout_ms (%u), which is at most 600000", hb, et);
        return -1;
    }
    if (c->entry_max > REPL_ENTRY_MAX) {
        s_errf(err, "entry_max must be at most %u", REPL_ENTRY_MAX);
        return -1;
    }
    if (c->max_outstanding > (1u << 24)) {
        s_errf(err, "max_outstanding must be at most %u", 1u << 24);
        return -1;
    }
    return 0;
}

static void s_free(repl_t *s)
{
    if (!s)
        return;
    free(s->q);
    free(s->drain);
    free(s->pend);
    pthread_mutex_destroy(&s->qlock);
    pthread_mutex_destroy(&s->slock);
    free(s);
}

/* Close libraft from the starting thread after a failed start, running the loop until done. */
static void s_abort_start(repl_t *s)
{
    pthread_mutex_lock(&s->qlock);
    s->stopping = true;
    pthread_mutex_unlock(&s->qlock);
    s_close_raft(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

int repl_start(const repl_config_t *cfg, repl_t **out, char *err)
{
    *out = NULL;
    if (s_check_config(cfg, err) < 0)
        return REPL_ERROR;
    repl_t *s = s_zalloc(1, sizeof *s);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_mutex_init(&s->slock, NULL);
    s->cfg = *cfg;
    repl_config_t *c = &s->cfg;
    memcpy(s->members, cfg->members, cfg->nmembers * sizeof *s->members);
    c->members = s->members;
    snprintf(s->dir, sizeof s->dir, "%s", cfg->dir);
    c->dir = s->dir;
    if (cfg->bind_address) {
        snprintf(s->bind, sizeof s->bind, "%s", cfg->bind_address);
        c->bind_address = s->bind;
    }
    for (unsigned i = 0; i < c->nmembers; i++)
        if (s->members[i].id == c->id)
            snprintf(s->self_addr, sizeof s->self_addr, "%s", s->members[i].address);
    if (!c->election_timeout_ms)
        c->election_timeout_ms = 1000;
    if (!c->heartbeat_ms)
        c->heartbeat_ms = 100;
    if (!c->snapshot_threshold)
        c->snapshot_threshold = 8192;
    if (!c->snapshot_trailing)
        c->snapshot_trailing = 1024;
    if (!c->connect_retry_ms)
        c->connect_retry_ms = 200;
    if (!c->install_snapshot_timeout_ms)
        c->install_snapshot_timeout_ms = 10000;
    if (!c->max_outstanding)
        c->max_outstanding = 4096;
    if (!c->entry_max)
        c->entry_max = REPL_ENTRY_MAX;
    if (!c->stop_timeout_ms)
        c->stop_timeout_ms = 30000;
    snprintf(s->snap_path, sizeof s->snap_path, "%s/repl-snapshot.tmp", s->dir);
    snprintf(s->restore_path, sizeof s->restore_path, "%s/repl-restore.tmp", s->dir);
    s->snap_fd = -1;
    s->state_index = c->applied_index;
    s->q = s_zalloc(c->max_outstanding, sizeof *s->q);
    s->drain = s_zalloc(c->max_outstanding, sizeof *s->drain);
    s->pend = s_zalloc(c->max_outstanding, sizeof *s->pend);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv;

    if (s_mkdirs(s->dir) < 0) {
        s_errf(err, "mkdir %s: %s", s->dir, strerror(errno));
        goto fail;
    }
    if ((rv = uv_loop_init(&s->loop)) != 0) {
        s_errf(err, "uv_loop_init: %s", uv_strerror(rv));
        goto fail;
    }
    s->loop_ok = true;
    /* A member named by host name listens on all interfaces unless told otherwise. */
    char bind_any[REPL_ADDR_MAX];
    const char *bind = c->bind_address;
    if (!bind && !s_host_is_ipv4(s->self_addr)) {
        snprintf(bind_any, sizeof bind_any, "0.0.0.0:%s", strrchr(s->self_addr, ':') + 1);
        bind = bind_any;
    }
    if ((rv = repl_dns_init(&s->transport, &s->loop, bind)) != 0) {
        s_errf(err, "transport (bind %s): %s", bind ? bind : s->self_addr, raft_strerror(rv));
        goto fail;
    }
    if ((rv = raft_uv_init(&s->io, &s->loop, s->dir, &s->transport)) != 0) {
        s_errf(err, "raft_uv_init %s: %s", s->dir, s->io.errmsg[0] ? s->io.errmsg : raft_strerror(rv));
        repl_dns_close(&s->transport);
        goto fail;
    }
    /* raft_uv 0.15 implements async_work (v2) but says version 1 (fixed upstream in 269e541). */
    s->io.version = 2;
    raft_uv_set_connect_retry_delay(&s->io, c->connect_retry_ms);
    if (raft_uv_set_snapshot_compression(&s->io, c->snapshot_compression) != 0) {
        s_errf(err, "snapshot compression is not available in this libraft");
        raft_uv_close(&s->io);
        repl_dns_close(&s->transport);
        goto fail;
    }
    s->fsm.version = 3;
    s->fsm.data = s;
    s->fsm.apply = s_fsm_apply;
    s->fsm.snapshot = s_fsm_snapshot;
    s->fsm.restore = s_fsm_restore;
    s->fsm.snapshot_finalize = s_fsm_snapshot_finalize;
    s->fsm.snapshot_async = s_fsm_snapshot_async;
    if ((rv = raft_init(&s->raft, &s->io, &s->fsm, c->id, s->self_addr)) != 0) {
        s_errf(err, "raft_init: %s", raft_errmsg(&s->raft));
        raft_uv_close(&s->io);
        repl_dns_close(&s->transport);
        goto fail;
    }
    s->raft.data = s;
    raft_set_election_timeout(&s->raft, c->election_timeout_ms);
    raft_set_heartbeat_timeout(&s->raft, c->heartbeat_ms);
    raft_set_snapshot_threshold(&s->raft, c->snapshot_threshold);
    raft_set_snapshot_trailing(&s->raft, c->snapshot_trailing);
    raft_set_install_snapshot_timeout(&s->raft, c->install_snapshot_timeout_ms);
    /* A member that was cut off and comes back must not depose a working leader. */
    raft_set_pre_vote(&s->raft, true);
    uv_async_init(&s->loop, &s->wake, s_on_wake);
    s->wake.data = s;
    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, s_on_check);

    for (unsigned i = 0; i < c->nmembers; i++) {
        if ((rv = raft_configuration_add(&conf, s->members[i].id, s->members[i].address, RAFT_VOTER)) != 0) {
            s_errf(err, "configuration: %s", raft_strerror(rv));
            goto fail_raft;
        }
    }
    /* Static membership: every member bootstraps the same configuration as entry 1, once. */
    rv = raft_bootstrap(&s->raft, &conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        s_errf(err, "raft_bootstrap: %s", raft_errmsg(&s->raft)[0] ? raft_errmsg(&s->raft) : raft_strerror(rv));
        goto fail_raft;
    }
    if ((rv = raft_start(&s->raft)) != 0) {
        s_errf(err, "raft_start: %s", raft_errmsg(&s->raft)[0] ? raft_errmsg(&s->raft) : raft_strerror(rv));
        goto fail_raft;
    }
    if (s->failed) {
        s_errf(err, "%s", s->error);
        goto fail_raft;
    }
    if (s->state_index > raft_last_index(&s->raft)) {
        s_errf(err,
               "the state's applied index %" PRIu64 " is ahead of the raft log in %s (last index %llu): the log "
               "does not belong to this state (wipe both, or neither)",
               s->state_index, s->dir, raft_last_index(&s->raft));
        goto fail_raft;
    }
    raft_configuration_close(&conf);
    repl_leader_t none = {0};
    s_publish(s, raft_state(&s->raft), &none);
    if ((rv = pthread_create(&s->thread, NULL, s_thread, s)) != 0) {
        s_errf(err, "pthread_create: %s", strerror(rv));
        s_abort_start(s);
        s_free(s);
        return REPL_ERROR;
    }
    s->thread_ok = true;
    uv_async_send(&s->wake); /* the first turn observes the role (a single member leads already) */
    *out = s;
    return REPL_OK;
fail_raft:
    raft_configuration_close(&conf);
    s_abort_start(s);
    s_free(s);
    return REPL_ERROR;
fail:
    raft_configuration_close(&conf);
    if (s->loop_ok)
        uv_loop_close(&s->loop);
    s_free(s);
    return REPL_ERROR;
}

int repl_stop(repl_t **rp)
{
    repl_t *s = *rp;
    if (!s)
        return 0;
    *rp = NULL;
    pthread_mutex_lock(&s->qlock);
    s->stopping = true;
    pthread_mutex_unlock(&s->qlock);
    uv_async_send(&s->wake);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += s->cfg.stop_timeout_ms / 1000;
    dl.tv_nsec += (long)(s->cfg.stop_timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(s->thread, NULL, &dl) != 0)
        return -1; /* leaked on purpose: its thread still uses it */
    uv_loop_close(&s->loop);
    s_free(s);
    return 0;
}

int repl_propose(repl_t *s, const void *data, size_t len, void *cookie)
{
    if (!data || len == 0)
        return REPL_ERROR;
    if (len > s->cfg.entry_max)
        return REPL_TOOBIG;
    if (atomic_load(&s->down))
        return REPL_SHUTDOWN;
    if (atomic_fetch_add(&s->outstanding, 1) >= s->cfg.max_outstanding) {
        atomic_fetch_sub(&s->outstanding, 1);
        return REPL_BUSY;
    }
    size_t total = (ENT_HDR_LEN + len + 7) & ~(size_t)7;
    unsigned char *buf = raft_malloc(total); /* libraft frees entry buffers with raft_free */
    if (!buf)
        abort();
    s_put32(buf, (uint32_t)len);
    s_put32(buf + 4, ENT_MAGIC);
    memcpy(buf + ENT_HDR_LEN, data, len);
    memset(buf + ENT_HDR_LEN + len, 0, total - ENT_HDR_LEN - len);
    pthread_mutex_lock(&s->qlock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->qlock);
        raft_free(buf);
        atomic_fetch_sub(&s->outstanding, 1);
        return REPL_SHUTDOWN;
    }
    /* Never full: queued + pending <= outstanding <= max_outstanding. */
    s->q[(s->qhead + s->qn) % s->cfg.max_outstanding] = (prop_t){.buf = buf, .len = total, .cookie = cookie};
    s->qn++;
    pthread_mutex_unlock(&s->qlock);
    uv_async_send(&s->wake);
    return REPL_OK;
}

void repl_status(repl_t *s, repl_status_t *st)
{
    pthread_mutex_lock(&s->slock);
    *st = s->st;
    pthread_mutex_unlock(&s->slock);
}

int repl_parse_members(const char *spec, repl_member_t *out, unsigned max, unsigned *n, char *err)
{
    *n = 0;
    if (!spec || !*spec) {
        s_errf(err, "members: empty list (want ID@HOST:PORT,...)");
        return REPL_ERROR;
    }
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *at = memchr(p, '@', len);
        if (*n >= max) {
            s_errf(err, "members: more than %u", max);
            return REPL_ERROR;
        }
        if (!at || at == p || (size_t)(p + len - at - 1) >= REPL_ADDR_MAX) {
            s_errf(err, "members: entry %u must be ID@HOST:PORT", *n + 1);
            return REPL_ERROR;
        }
        uint64_t id = 0;
        for (const char *d = p; d < at; d++) {
            if (*d < '0' || *d > '9' || id > (uint64_t)INT64_MAX / 10) {
                s_errf(err, "members: entry %u: id must be a number 1..2^63-1", *n + 1);
                return REPL_ERROR;
            }
            id = id * 10 + (uint64_t)(*d - '0');
        }
        repl_member_t *m = &out[*n];
        m->id = id;
        memcpy(m->address, at + 1, (size_t)(p + len - at - 1));
        m->address[p + len - at - 1] = '\0';
        if (id == 0 || id > (uint64_t)INT64_MAX || !s_valid_address(m->address)) {
            s_errf(err, "members: entry %u: want ID (1..2^63-1) @ HOST:PORT (IPv4 or host name, port 1..65535)", *n + 1);
            return REPL_ERROR;
        }
        for (unsigned j = 0; j < *n; j++) {
            if (out[j].id == id || strcmp(out[j].address, m->address) == 0) {
                s_errf(err, "members: entry %u: id and address must be unique", *n + 1);
                return REPL_ERROR;
            }
        }
        (*n)++;
        if (!end)
            break;
        p = end + 1;
        if (!*p) {
            s_errf(err, "members: trailing comma");
            return REPL_ERROR;
        }
    }
    return REPL_OK;
}
