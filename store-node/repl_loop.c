/* repl_loop.c -- the member's raft thread: a libuv loop holding libraft, raft_uv and the transport.
 *
 * Owners propose into the handoff ring (repl.c); the uv_async wakes this loop, which hands the
 * ring's entries to raft_apply in batches of REPL_BATCH_MAX and keeps each accepted proposal in a
 * second ring, ordered by log index, until its entry is applied here (repl_fsm.c gives on_apply
 * the cookie) or can no longer be (on_reject: leadership lost, shutdown). A uv_check handle runs
 * after every loop turn: it notices role changes (libraft 0.15 has no state callback), appends a
 * barrier when this member becomes leader (on_role(LEADER) only once that barrier applied), and
 * publishes the status snapshot that repl_status copies. Closing: raft_close, then the I/O, then
 * (when repl_stop asked) the two handles, which ends uv_run and the thread.
 *
 * Key decision: raft_close may not be called from inside libraft's callbacks, so a failure only
 * wakes the loop and the next turn closes. Threads: everything here runs on the raft thread (the
 * starting thread while repl_start runs libraft before the thread exists); the rings' handoff
 * takes qlock, the status copy slock, never both.
 */
#include "repl_int.h"
#include "repl_dns.h"

#include <signal.h>
#include <string.h>

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

void repl_loop_reject(repl_t *s, void *cookie, int status)
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
void repl_loop_purge_stale(repl_t *s, bool all)
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
        repl_loop_reject(s, cookie, status);
    }
}

void repl_loop_fail(repl_t *s, const char *fmt, ...)
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

void repl_loop_publish(repl_t *s, int state, const repl_leader_t *hint)
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
        repl_loop_fail(s, "libraft stopped this member: %s", raft_errmsg(&s->raft));
    uint64_t term = state == RAFT_UNAVAILABLE ? 0 : s->raft.current_term;
    if (state == RAFT_CANDIDATE && s->prev_state != RAFT_CANDIDATE)
        s->elections++;
    s->prev_state = state;
    if (state != RAFT_LEADER || term != s->lead_term)
        repl_loop_purge_stale(s, false);
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
    repl_loop_publish(s, state, &hint);
}

void repl_loop_on_check(uv_check_t *h)
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
        repl_loop_purge_stale(s, false);
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
            b = repl_zalloc(1, sizeof *b);
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
                repl_loop_reject(s, items[i + j].cookie, rv == RAFT_NOTLEADER ? REPL_NOT_LEADER : REPL_ERROR);
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
    repl_loop_purge_stale(s, true);
    pthread_mutex_lock(&s->qlock);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->qlock);
    repl_leader_t none = {0};
    repl_loop_publish(s, RAFT_UNAVAILABLE, &none);
    if (stopping)
        s_close_handles(s);
}

void repl_loop_close_raft(repl_t *s)
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

void repl_loop_on_wake(uv_async_t *h)
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
            repl_loop_reject(s, s->drain[i].cookie, REPL_SHUTDOWN);
        }
    } else {
        /* Observe first: a member that just became leader appends its barrier before any
         * proposal, so every entry of its term applies after on_role(LEADER). */
        s_observe(s);
        s_submit(s, s->drain, n);
    }
    if (stopping || s->failed)
        repl_loop_close_raft(s);
    if (stopping && s->closed)
        s_close_handles(s);
    if (!s->closed && !s->closing)
        s_observe(s);
}

void *repl_loop_thread(void *arg)
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
