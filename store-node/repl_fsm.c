/* repl_fsm.c -- the state machine libraft drives (struct raft_fsm, version 3), and the entry frame.
 *
 * fsm->apply is the owner's real, synchronous apply (on_apply, one LMDB transaction): a failed
 * fsm->apply makes a libraft 0.15 follower UNAVAILABLE, and last_applied (where snapshots are
 * taken) advances when apply returns. fsm->apply is not told the index: replicationApply()
 * applies last_applied + 1. Snapshots are asynchronous: the copy of the state is made on a libuv
 * worker and handed to raft_uv as two buffers (our header + an mmap of the copy), so the state is
 * never held in the heap while it is written. libraft replays its log from the last snapshot at
 * every start and restores that snapshot first; the state is persistent, so both are skipped up
 * to the state's applied index. Entries are framed and padded to 8 bytes (layout below).
 *
 * Threads: apply, snapshot, snapshot_finalize and restore run on the raft thread (restore and
 * apply also on the starting thread inside raft_start); snapshot_async on a libuv worker,
 * concurrently with apply (it touches only the snap_* fields). repl_fsm_frame: any thread.
 */
#include "repl_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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
/* SNAP_HDR_LEN (40) is in repl_int.h: the member keeps the header being written. */

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
    size_t len = buf->len >= ENT_HDR_LEN ? repl_get32(e) : 0;
    if (buf->len < ENT_HDR_LEN || buf->len % 8 != 0 || repl_get32(e + 4) != ENT_MAGIC || len > buf->len - ENT_HDR_LEN ||
        buf->len - ENT_HDR_LEN - len >= 8) {
        /* A committed entry we did not frame: the log is not ours, or it is corrupt. */
        repl_loop_fail(s, "entry %" PRIu64 " of %zu bytes is not a framed repl entry: member stopped", index, buf->len);
        return RAFT_IOERR;
    }
    repl_loop_purge_stale(s, false);
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
            repl_loop_reject(s, p.cookie, REPL_ERROR); /* an index that was never applied: cannot happen */
        }
    }
    if (index <= s->state_index) {
        if (mine)
            repl_loop_reject(s, cookie, REPL_ERROR); /* a new proposal below the state: cannot happen */
        return 0;                            /* the state already holds it (replay after start) */
    }
    int rc = s->cfg.cb.on_apply(s->cfg.cb.arg, index, e + ENT_HDR_LEN, len, cookie);
    if (mine) {
        s->committed++;
        atomic_fetch_sub(&s->outstanding, 1);
    }
    if (rc != 0) {
        repl_loop_fail(s, "the owner could not apply entry %" PRIu64 ": member stopped", index);
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
        repl_errf(s->snap_err, "snapshot copy holds index %" PRIu64 ", below the %" PRIu64 " already applied", applied,
                  s->snap_target);
        goto fail;
    }
    s->snap_fd = open(s->snap_path, O_RDONLY | O_CLOEXEC);
    if (s->snap_fd < 0 || fstat(s->snap_fd, &st) < 0 || st.st_size <= 0) {
        repl_errf(s->snap_err, "snapshot copy %s: %s", s->snap_path, s->snap_fd < 0 ? strerror(errno) : "empty");
        goto fail;
    }
    s->snap_len = (size_t)st.st_size;
    s->snap_map = mmap(NULL, s->snap_len, PROT_READ, MAP_SHARED, s->snap_fd, 0);
    if (s->snap_map == MAP_FAILED) {
        s->snap_map = NULL;
        repl_errf(s->snap_err, "mmap snapshot copy: %s", strerror(errno));
        goto fail;
    }
    madvise(s->snap_map, s->snap_len, MADV_SEQUENTIAL);
    unsigned char *h = s->snap_hdr;
    memcpy(h, SNAP_MAGIC, 8);
    repl_put32(h + 8, SNAP_VERSION);
    repl_put32(h + 12, 0);
    repl_put64(h + 16, applied);
    repl_put64(h + 24, s->snap_len);
    repl_put32(h + 32, (uint32_t)crc32_z(0, s->snap_map, s->snap_len));
    repl_put32(h + 36, (uint32_t)crc32_z(0, h, 36));
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
    if (buf->len < SNAP_HDR_LEN || memcmp(h, SNAP_MAGIC, 8) != 0 || repl_get32(h + 8) != SNAP_VERSION ||
        repl_get32(h + 36) != (uint32_t)crc32_z(0, h, 36) || repl_get64(h + 24) != buf->len - SNAP_HDR_LEN) {
        snprintf(s->error, sizeof s->error,
                 "restore: snapshot of %zu bytes has no valid header (magic, version, "
                 "length, header crc)",
                 buf->len);
        return RAFT_MALFORMED;
    }
    uint64_t applied = repl_get64(h + 16);
    size_t len = buf->len - SNAP_HDR_LEN;
    if (applied <= s->state_index) {
        /* The state is persistent and already holds everything the snapshot has (libraft
         * restores its last snapshot at every start): keep it. */
        raft_free(buf->base);
        return 0;
    }
    if (repl_get32(h + 32) != (uint32_t)crc32_z(0, h + SNAP_HDR_LEN, len)) {
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

void repl_fsm_init(repl_t *s)
{
    s->fsm.version = 3;
    s->fsm.data = s;
    s->fsm.apply = s_fsm_apply;
    s->fsm.snapshot = s_fsm_snapshot;
    s->fsm.restore = s_fsm_restore;
    s->fsm.snapshot_finalize = s_fsm_snapshot_finalize;
    s->fsm.snapshot_async = s_fsm_snapshot_async;
}

void *repl_fsm_frame(const void *data, size_t len, size_t *total)
{
    size_t n = (ENT_HDR_LEN + len + 7) & ~(size_t)7;
    unsigned char *buf = raft_malloc(n); /* libraft frees entry buffers with raft_free */
    if (!buf)
        abort();
    repl_put32(buf, (uint32_t)len);
    repl_put32(buf + 4, ENT_MAGIC);
    memcpy(buf + ENT_HDR_LEN, data, len);
    memset(buf + ENT_HDR_LEN + len, 0, n - ENT_HDR_LEN - len);
    *total = n;
    return buf;
}
