/* repl_int.h -- inside the replication layer: what repl.c, repl_config.c, repl_fsm.c and
 * repl_loop.c share. Not a public API: only those four files include it (the owner uses repl.h).
 *
 *   repl.c         the member's life from the owner's side: repl_start (in named steps), repl_stop,
 *                  repl_propose into the handoff ring, repl_status, repl_parse_members, names
 *   repl_config.c  the configuration: validation, addresses, defaults and the member's own copies
 *   repl_fsm.c     the state machine libraft drives: entry framing, apply, snapshots, restore
 *   repl_loop.c    the raft thread: ring -> raft_apply, proposal endings, leadership (barrier,
 *                  roles), the published status, closing
 *
 * Threads: see repl.h. Lock order: qlock and slock are never held together. Only these files
 * include libraft's and libuv's headers (uv.h pulls in <sys/param.h>, whose MIN/MAX clash with
 * util.h's: no util.h in the replication layer).
 */
#ifndef PRESENCE_REPL_INT_H
#define PRESENCE_REPL_INT_H

#include "repl.h"

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* calloc that aborts on exhaustion (the member cannot run without its rings). */
static inline void *repl_zalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "repl: out of memory (%zu bytes)\n", n * size);
        abort();
    }
    return p;
}

#define SNAP_HDR_LEN 40 /* our header in front of every snapshot (layout: repl_fsm.c) */

#define REPL_BATCH_MAX 256 /* entries handed to one raft_apply call */
#define REPL_DIR_MAX 900   /* raft_uv keeps the directory in a fixed buffer */

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
    char bind_any[REPL_ADDR_MAX]; /* "0.0.0.0:PORT": a member named by host name, no bind_address */
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

/* ---- small helpers ------------------------------------------------------------------------ */

/* Format into a REPL_ERR_LEN buffer. */
__attribute__((format(printf, 2, 3))) static inline void repl_errf(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, REPL_ERR_LEN, fmt, ap);
    va_end(ap);
}


/* Little-endian fixed-width fields of the entry frame and the snapshot header. */
static inline void repl_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void repl_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t repl_get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t repl_get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- repl_config.c: the configuration ------------------------------------------------------ */

/* "HOST:PORT": HOST an IPv4 dotted quad or a host name (letters, digits, '-', '.'; labels of
 * 1..63 bytes not starting or ending with '-'), PORT 1..65535. Any thread; no state. */
bool repl_config_valid_address(const char *a);
/* The HOST of a valid "HOST:PORT" is an IPv4 dotted quad. Any thread; no state. */
bool repl_config_host_is_ipv4(const char *address);
/* Validate a caller's configuration (members, ids, addresses, dir, callbacks, timeouts, bounds).
 * Returns 0, or -1 with the broken rule written to err (REPL_ERR_LEN bytes). No state. */
int repl_config_check(const repl_config_t *c, char *err);
/* Copy a checked configuration into s->cfg, pointing its strings and members at s's own copies,
 * fill every 0 field with its default, and set the member's own address and temp-file paths.
 * The starting thread, before anything else uses s. */
void repl_config_adopt(repl_t *s, const repl_config_t *cfg);

/* ---- repl_fsm.c: the state machine libraft drives ------------------------------------------- */

/* Fill s->fsm (struct raft_fsm version 3: apply, snapshot, snapshot_async, snapshot_finalize,
 * restore) with s as its data. The starting thread, before raft_init. */
void repl_fsm_init(repl_t *s);
/* A raft_malloc'd entry of *total bytes (a multiple of 8) framing len (> 0) bytes of data, as
 * fsm->apply expects; libraft (or the caller, with raft_free) frees it. Aborts when out of
 * memory. Any thread; no state. */
void *repl_fsm_frame(const void *data, size_t len, size_t *total);

/* ---- repl_loop.c: the raft thread ------------------------------------------------------------ */

/* End one accepted proposal without applying it here: counts it, releases its outstanding slot
 * and calls on_reject(cookie, status, leader hint). Raft thread (or the starting thread). */
void repl_loop_reject(repl_t *s, void *cookie, int status);
/* End every accepted proposal that can no longer reach on_apply with its cookie (all of them
 * when `all`): REPL_SHUTDOWN when closing, else REPL_LEADERSHIP_LOST. Raft thread. */
void repl_loop_purge_stale(repl_t *s, bool all);
/* Stop taking part (once): record the error, refuse proposals, call on_fatal and wake the loop,
 * whose next turn closes libraft. Raft thread (or the starting thread inside raft_start). */
void repl_loop_fail(repl_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copy the member's state (libraft's as `state`, leader `hint`, counters) into s->st under
 * slock, for repl_status. Raft thread (or the starting thread before the raft thread exists). */
void repl_loop_publish(repl_t *s, int state, const repl_leader_t *hint);
/* Close libraft (once): on_role(STOPPED) if a role was reported, then raft_close; its callback
 * closes the I/O and, when repl_stop was called, the loop's handles. Raft thread. */
void repl_loop_close_raft(repl_t *s);
/* The uv_async callback (s->wake): drain the handoff ring into raft_apply (or reject it when
 * stopping or failed), close when asked, observe the role. Raft thread. */
void repl_loop_on_wake(uv_async_t *h);
/* The uv_check callback (s->check): after every loop turn, follow libraft's state (roles,
 * the leader's barrier, stale proposals) and publish the status. Raft thread. */
void repl_loop_on_check(uv_check_t *h);
/* The raft thread's body (pthread_create): blocks SIGPIPE, runs the loop until its handles are
 * closed. arg is the repl_t. */
void *repl_loop_thread(void *arg);

#endif
