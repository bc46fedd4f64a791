/* repl.c -- one member of the store's Raft cluster, on libraft 0.15 with its libuv I/O (repl.h):
 * the member's life as its owner sees it.
 *
 * repl_start checks and adopts the configuration (repl_config.c), then starts the member in named
 * steps: its struct and rings, its I/O (directory, loop, transport, durable log), libraft over it
 * with our state machine (repl_fsm.c), the boot (static membership, raft_start: the last snapshot
 * restored and the log replayed on this thread), and the raft thread (repl_loop.c). repl_propose
 * frames an entry and puts it in the bounded handoff ring (qlock) that the raft thread drains;
 * repl_status copies the snapshot the raft thread publishes (slock); repl_stop asks the thread to
 * close libraft and joins it with a deadline.
 *
 * Key decision: a start that fails after libraft was initialised closes libraft on this thread,
 * running the loop until it is done, so a failed start leaks nothing. Threads: see repl.h
 * (repl_propose and repl_status from any thread; repl_start and repl_stop by the owner, once).
 */
#include "repl_int.h"
#include "repl_dns.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

/* ==== start ================================================================================= */

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
    repl_loop_close_raft(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

/* Step 1: the member's struct, its own copy of the configuration, and its three rings. */
static repl_t *s_new(const repl_config_t *cfg)
{
    repl_t *s = repl_zalloc(1, sizeof *s);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_mutex_init(&s->slock, NULL);
    repl_config_adopt(s, cfg);
    const repl_config_t *c = &s->cfg;
    s->snap_fd = -1;
    s->state_index = c->applied_index;
    s->q = repl_zalloc(c->max_outstanding, sizeof *s->q);
    s->drain = repl_zalloc(c->max_outstanding, sizeof *s->drain);
    s->pend = repl_zalloc(c->max_outstanding, sizeof *s->pend);
    return s;
}

/* Step 2: the directory, the loop, the transport and the durable log (raft_uv). Returns 0, or -1
 * with err written and what this step opened closed again, but the loop (s->loop_ok says). */
static int s_open_io(repl_t *s, char *err)
{
    const repl_config_t *c = &s->cfg;
    int rv;
    if (s_mkdirs(s->dir) < 0) {
        repl_errf(err, "mkdir %s: %s", s->dir, strerror(errno));
        return -1;
    }
    if ((rv = uv_loop_init(&s->loop)) != 0) {
        repl_errf(err, "uv_loop_init: %s", uv_strerror(rv));
        return -1;
    }
    s->loop_ok = true;
    /* A member named by host name listens on all interfaces unless told otherwise. */
    const char *bind = c->bind_address;
    if (!bind && !repl_config_host_is_ipv4(s->self_addr)) {
        snprintf(s->bind_any, sizeof s->bind_any, "0.0.0.0:%s", strrchr(s->self_addr, ':') + 1);
        bind = s->bind_any;
    }
    if ((rv = repl_dns_init(&s->transport, &s->loop, bind)) != 0) {
        repl_errf(err, "transport (bind %s): %s", bind ? bind : s->self_addr, raft_strerror(rv));
        return -1;
    }
    if ((rv = raft_uv_init(&s->io, &s->loop, s->dir, &s->transport)) != 0) {
        repl_errf(err, "raft_uv_init %s: %s", s->dir, s->io.errmsg[0] ? s->io.errmsg : raft_strerror(rv));
        repl_dns_close(&s->transport);
        return -1;
    }
    /* raft_uv 0.15 implements async_work (v2) but says version 1 (fixed upstream in 269e541). */
    s->io.version = 2;
    raft_uv_set_connect_retry_delay(&s->io, c->connect_retry_ms);
    if (raft_uv_set_snapshot_compression(&s->io, c->snapshot_compression) != 0) {
        repl_errf(err, "snapshot compression is not available in this libraft");
        raft_uv_close(&s->io);
        repl_dns_close(&s->transport);
        return -1;
    }
    return 0;
}

/* Step 3: libraft over that I/O with our state machine and timeouts, and the loop's two handles
 * (the wake-up for proposals and stopping, the check after every turn). Returns 0, or -1 with err
 * written and the I/O of step 2 closed (the loop not). */
static int s_init_raft(repl_t *s, char *err)
{
    const repl_config_t *c = &s->cfg;
    repl_fsm_init(s);
    if (raft_init(&s->raft, &s->io, &s->fsm, c->id, s->self_addr) != 0) {
        repl_errf(err, "raft_init: %s", raft_errmsg(&s->raft));
        raft_uv_close(&s->io);
        repl_dns_close(&s->transport);
        return -1;
    }
    s->raft.data = s;
    raft_set_election_timeout(&s->raft, c->election_timeout_ms);
    raft_set_heartbeat_timeout(&s->raft, c->heartbeat_ms);
    raft_set_snapshot_threshold(&s->raft, c->snapshot_threshold);
    raft_set_snapshot_trailing(&s->raft, c->snapshot_trailing);
    raft_set_install_snapshot_timeout(&s->raft, c->install_snapshot_timeout_ms);
    /* A member that was cut off and comes back must not depose a working leader. */
    raft_set_pre_vote(&s->raft, true);
    uv_async_init(&s->loop, &s->wake, repl_loop_on_wake);
    s->wake.data = s;
    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, repl_loop_on_check);
    return 0;
}

/* Step 4: bootstrap the static membership, then raft_start, which restores the last snapshot and
 * replays the log through the state machine on this thread; the state must not be ahead of the
 * log. Returns 0, or -1 with err written (the caller closes libraft: s_abort_start). */
static int s_boot(repl_t *s, char *err)
{
    const repl_config_t *c = &s->cfg;
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv;
    for (unsigned i = 0; i < c->nmembers; i++) {
        if ((rv = raft_configuration_add(&conf, s->members[i].id, s->members[i].address, RAFT_VOTER)) != 0) {
            repl_errf(err, "configuration: %s", raft_strerror(rv));
            goto fail;
        }
    }
    /* Static membership: every member bootstraps the same configuration as entry 1, once. */
    rv = raft_bootstrap(&s->raft, &conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        repl_errf(err, "raft_bootstrap: %s", raft_errmsg(&s->raft)[0] ? raft_errmsg(&s->raft) : raft_strerror(rv));
        goto fail;
    }
    if ((rv = raft_start(&s->raft)) != 0) {
        repl_errf(err, "raft_start: %s", raft_errmsg(&s->raft)[0] ? raft_errmsg(&s->raft) : raft_strerror(rv));
        goto fail;
    }
    if (s->failed) {
        repl_errf(err, "%s", s->error);
        goto fail;
    }
    if (s->state_index > raft_last_index(&s->raft)) {
        repl_errf(err,
                  "the state's applied index %" PRIu64 " is ahead of the raft log in %s (last index %llu): the log "
                  "does not belong to this state (wipe both, or neither)",
                  s->state_index, s->dir, raft_last_index(&s->raft));
        goto fail;
    }
    raft_configuration_close(&conf);
    return 0;
fail:
    raft_configuration_close(&conf);
    return -1;
}

/* Step 5: publish the first status, then start the raft thread and wake it (its first turn
 * observes the role: a single member leads already). Returns 0, or -1 with err written. */
static int s_run(repl_t *s, char *err)
{
    repl_leader_t none = {0};
    repl_loop_publish(s, raft_state(&s->raft), &none);
    int rv = pthread_create(&s->thread, NULL, repl_loop_thread, s);
    if (rv != 0) {
        repl_errf(err, "pthread_create: %s", strerror(rv));
        return -1;
    }
    s->thread_ok = true;
    uv_async_send(&s->wake);
    return 0;
}

int repl_start(const repl_config_t *cfg, repl_t **out, char *err)
{
    *out = NULL;
    if (repl_config_check(cfg, err) < 0)
        return REPL_ERROR;
    repl_t *s = s_new(cfg);
    if (s_open_io(s, err) < 0 || s_init_raft(s, err) < 0) {
        /* libraft was never initialised: only the loop is left (its handles were never made). */
        if (s->loop_ok)
            uv_loop_close(&s->loop);
        s_free(s);
        return REPL_ERROR;
    }
    if (s_boot(s, err) < 0 || s_run(s, err) < 0) {
        s_abort_start(s);
        s_free(s);
        return REPL_ERROR;
    }
    *out = s;
    return REPL_OK;
}

/* ==== stop / propose / status / members ======================================================= */

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
    size_t total;
    void *buf = repl_fsm_frame(data, len, &total);
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
        repl_errf(err, "members: empty list (want ID@HOST:PORT,...)");
        return REPL_ERROR;
    }
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *at = memchr(p, '@', len);
        if (*n >= max) {
            repl_errf(err, "members: more than %u", max);
            return REPL_ERROR;
        }
        if (!at || at == p || (size_t)(p + len - at - 1) >= REPL_ADDR_MAX) {
            repl_errf(err, "members: entry %u must be ID@HOST:PORT", *n + 1);
            return REPL_ERROR;
        }
        uint64_t id = 0;
        for (const char *d = p; d < at; d++) {
            if (*d < '0' || *d > '9' || id > (uint64_t)INT64_MAX / 10) {
                repl_errf(err, "members: entry %u: id must be a number 1..2^63-1", *n + 1);
                return REPL_ERROR;
            }
            id = id * 10 + (uint64_t)(*d - '0');
        }
        repl_member_t *m = &out[*n];
        m->id = id;
        memcpy(m->address, at + 1, (size_t)(p + len - at - 1));
        m->address[p + len - at - 1] = '\0';
        if (id == 0 || id > (uint64_t)INT64_MAX || !repl_config_valid_address(m->address)) {
            repl_errf(err, "members: entry %u: want ID (1..2^63-1) @ HOST:PORT (IPv4 or host name, port 1..65535)", *n + 1);
            return REPL_ERROR;
        }
        for (unsigned j = 0; j < *n; j++) {
            if (out[j].id == id || strcmp(out[j].address, m->address) == 0) {
                repl_errf(err, "members: entry %u: id and address must be unique", *n + 1);
                return REPL_ERROR;
            }
        }
        (*n)++;
        if (!end)
            break;
        p = end + 1;
        if (!*p) {
            repl_errf(err, "members: trailing comma");
            return REPL_ERROR;
        }
    }
    return REPL_OK;
}
