/* integ_faults.c -- fault injection under a mixed load, through the real launcher.
 *
 * `presenced` starts the node (store-node or sync-relay, two cache-nodes, the gateway) and restarts
 * any child that dies; the test finds each child by pid (/proc/<launcher>/task/<launcher>/children,
 * then the child's cmdline and, for cache-nodes, its CACHE_ID) and signals only that pid.
 *
 * Load: NWORKERS client threads, each on one keep-alive connection to the gateway, each owning
 * UPW users (so every user's writes are sequential), doing PUT, GET, heartbeat, DELETE and multi-get
 * with JWTs, plus one thread that only reads everyone's users (so reads go on while the writers
 * wait on a hung store). Every answer is checked as it arrives:
 *   - its status is one the route may give (GET 200/404, PUT 200, heartbeat 200, DELETE 200/404,
 *     multi-get 200) or 503/504; any other status fails the test, and so does a transport error
 *     unless the gateway itself was killed (then only until that client's first success);
 *   - no request takes longer than REQUEST_TIMEOUT_MS + a margin;
 *   - an acknowledged write (200) is recorded per user with its version and content. Writes that
 *     got 503/504 have an unknown outcome: they may have happened, possibly later.
 * After each fault, once the service has recovered on its own, and at the end, the load pauses and
 * every user is read through the gateway and straight from the (center's) store-node: the record
 * must be the last acknowledged one (same version and content), or -- only if a write with an
 * unknown outcome could explain it -- a newer one; a user whose last acknowledged write was a
 * DELETE must be absent unless such a write exists. A mismatch is a lost write.
 *
 * Reads must never show a version older than one already acknowledged to the same client
 * ("a following GET returns the same JSON", docs/API.md), through every fault.
 *
 * Faults: SIGKILL the store-node, each cache-node and the gateway; SIGSTOP the store-node for
 * 2 x REQUEST_TIMEOUT_MS (writes must fail, cached reads go on) and one cache-node for 1.5 x (the
 * gateway must route around it after its first deadline; 1.5 x keeps the node's view of the store
 * fresh, so the requests queued at it are still forwarded when it resumes), then SIGCONT; in a
 * leaf region, SIGKILL the leaf's sync-relay and the center's store-node while the load runs at
 * the leaf (cached reads go on). Each fault prints grep-able lines, first:
 *
 *   fault: kill store-node: recovered in 751 ms (disrupted 749 ms from the fault); 2113 requests:
 *          200=.. 404=.. 503=.. 504=.. conn_err=.. other=0; max latency 751 ms; stale=..;
 *          older-than-ack reads=0; lost=0; late-landing failed writes=.. (...)
 *
 * recovered = from the fault (SIGCONT for a hang) until every request type has succeeded again
 * and the last 503/504/transport error is over; "late-landing failed writes" counts records that
 * show a write whose request had failed (504) rather than the last acknowledged one -- allowed
 * (the outcome of a timed-out write is unknown) and counted -- but such a write sent *before* the
 * client's last acknowledged write must never show up (it would undo an acknowledged write): the
 * test fails on it. RELIABILITY.md records the numbers.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NWORKERS 4       /* mixed load, each owning UPW users */
#define NTHREADS (NWORKERS + 1) /* + one reader of everyone's users (it never waits on a write) */
#define UPW 12          /* users per worker */
#define REQ_TIMEOUT 1000 /* REQUEST_TIMEOUT_MS of the node under test */
#define MAX_PHASES 8
#define MAX_UNKNOWN 48
#define MAX_NOTES 6
#define RECOVERY_BOUND_MS 10000 /* from the restart (or SIGCONT) to 1 s without failures */

enum { OP_GET, OP_PUT, OP_HB, OP_DEL, OP_MGET, OP_N };
static const char *const s_opname[OP_N] = {"GET", "PUT", "heartbeat", "DELETE", "multi-get"};
enum { B_200, B_404, B_503, B_504, B_ERR, B_OTHER, B_N };

static uint64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Slower builds (ASan: CK_TIMEOUT_MULTIPLIER=3) get proportionally longer bounds. */
static int s_mult(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int v = m ? atoi(m) : 1;
    return v > 0 ? v : 1;
}

/* ==== the model of one user ==================================================================== */

enum { ACK_NONE, ACK_REC, ACK_GONE };

typedef struct user {
    char id[32];
    char auth[640];
    int ack;                 /* what the last acknowledged write left */
    long ack_version;
    char ack_status[12], ack_msg[48];
    long ack_seq;            /* the client's operation number of that write */
    long unknown_del_seq;    /* the newest DELETE with an unknown outcome */
    long unknown_seq[MAX_UNKNOWN];
    int nunknown;            /* writes with an unknown outcome (503/504/transport), ever */
    bool unknown_del, unknown_overflow;
    char unknown_msgs[MAX_UNKNOWN][48]; /* messages those PUTs carried */
    long acked;              /* acknowledged writes */
} user_t;

typedef struct worker {
    int idx;
    bool reader;
    pthread_t tid;
    th_conn_t conn;
    uint64_t rng;
    long seq;
    user_t users[UPW];
    uint64_t fault_seen;     /* the fault time ok_after refers to */
    uint64_t ok_after;       /* start of this client's first success on a connection opened after it */
    uint64_t conn_opened_us; /* when the connection in use was opened */
} worker_t;

/* ==== per-phase observations =================================================================== */

typedef struct phase {
    char name[64];
    bool tolerate_conn_err;  /* the gateway itself is the victim */
    bool hang;               /* SIGSTOP/SIGCONT rather than SIGKILL */
    uint64_t t_begin, t_fault, t_resume; /* t_resume: SIGCONT of a hang (0 for kills) */
    uint64_t t_fault_us;      /* the signal was sent before this */
    long n[OP_N][B_N];
    int64_t b_first[B_N], b_last[B_N]; /* start of the first/last request per bucket, fault-relative */
    long b_cnt[B_N];                   /* requests per bucket that ended after the fault */
    long total, stale, regress, unexpected, baseline_fail; /* baseline: failures that ended before the fault */
    uint32_t max_lat;
    char max_lat_what[96];
    uint64_t last_fail_end;
    uint64_t first_ok_end[OP_N];   /* first success that started at or after t_fault */
    uint64_t last_ok_start[OP_N];
    /* during a hang: requests started inside [t_fault, t_resume) */
    long hang_write_ok, hang_write_fail, hang_read_ok, hang_read_fail;
    long hang_late_fail;           /* failures that started > REQ_TIMEOUT + margin into the hang */
    long win_read_ok, win_read_fail; /* reads started in the first second after the fault */
    long lost, late, resurrected, resurrected_reads;
    char errs[4][80];              /* distinct 503/504 bodies seen */
    long errs_n[4];
    char notes[MAX_NOTES][320];
    int nnotes;
} phase_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int port;
    bool stop, pause;
    int paused;
    int inited; /* writers done with their first PUTs */
    int phase;
    phase_t ph[MAX_PHASES];
    worker_t *w[NTHREADS];
    uint32_t lat_bound;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void s_note(phase_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_note(phase_t *p, const char *fmt, ...)
{
    if (p->nnotes >= MAX_NOTES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->notes[p->nnotes++], sizeof p->notes[0], fmt, ap);
    va_end(ap);
}

static int s_bucket(int status)
{
    switch (status) {
    case 200: return B_200;
    case 404: return B_404;
    case 503: return B_503;
    case 504: return B_504;
    case -1: return B_ERR;
    default: return B_OTHER;
    }
}

static bool s_expected(int op, int status)
{
    if (status == 503 || status == 504)
        return true;
    switch (op) {
    case OP_GET:
    case OP_DEL:
        return status == 200 || status == 404;
    default:
        return status == 200;
    }
}

static bool s_success(int op, int status)
{
    return status == 200 || (status == 404 && (op == OP_GET || op == OP_DEL));
}

/* Account one finished request (S.mu held). */
static void s_account(worker_t *w, int phase, int op, int status, uint64_t start, uint64_t end, bool stale,
                      const char *what)
{
    phase_t *p = &S.ph[phase];
    uint32_t lat = (uint32_t)(end - start);
    p->total++;
    int bk = s_bucket(status);
    if (p->t_fault && end >= p->t_fault) {
        int64_t rel = (int64_t)start - (int64_t)p->t_fault;
        if (!p->b_cnt[bk]++ || rel < p->b_first[bk])
            p->b_first[bk] = rel;
        if (rel > p->b_last[bk] || p->b_cnt[bk] == 1)
            p->b_last[bk] = rel;
    }
    p->n[op][bk]++;
    if (stale)
        p->stale++;
    if (lat > p->max_lat) {
        p->max_lat = lat;
        snprintf(p->max_lat_what, sizeof p->max_lat_what, "%s -> %d at fault%+lld ms", s_opname[op], status,
                 p->t_fault ? (long long)start - (long long)p->t_fault : 0LL);
    }
    if (lat > S.lat_bound) {
        p->unexpected++;
        s_note(p, "%s took %u ms (status %d, %s)", s_opname[op], lat, status, what);
    }
    bool ok = s_success(op, status);
    bool fault_on = p->t_fault && start >= p->t_fault;
    if (p->t_fault && w->fault_seen != p->t_fault) {
        w->fault_seen = p->t_fault;
        w->ok_after = 0;
    }
    /* A connection opened after the kill is one to the new gateway (or a refused attempt). */
    bool new_conn = p->t_fault_us && w->conn_opened_us > p->t_fault_us;
    if (ok) {
        if (fault_on && !p->first_ok_end[op])
            p->first_ok_end[op] = end;
        if (start > p->last_ok_start[op])
            p->last_ok_start[op] = start;
        if (new_conn && !w->ok_after)
            w->ok_after = start;
    } else if (status != 200 && status != 404) {
        if (!p->t_fault || end < p->t_fault)
            p->baseline_fail++;
        if (end > p->last_fail_end)
            p->last_fail_end = end;
    }
    if (!s_expected(op, status)) {
        /* Connections to the killed gateway break; new ones fail until the new one serves (for
         * this client: until its first success on a new connection). */
        bool tolerated = status == -1 && p->tolerate_conn_err && p->t_fault && end >= p->t_fault &&
                         (!new_conn || !w->ok_after || start < w->ok_after);
        if (!tolerated) {
            p->unexpected++;
            s_note(p, "%s answered %d at fault%+lld ms (%s)", s_opname[op], status,
                   p->t_fault ? (long long)start - (long long)p->t_fault : 0LL, what);
        }
    }
}

/* Hang accounting: requests that started after the SIGSTOP and ended before the SIGCONT (S.mu
 * held: t_resume is set, under it, just before the SIGCONT). */
static bool s_in_hang(const phase_t *p, uint64_t start)
{
    return p->hang && p->t_fault && start >= p->t_fault && !p->t_resume;
}

/* ==== JSON ==================================================================================== */

static const char *const s_status_names[] = {"online", "away", "busy", "offline"};

/* The record of uid in a success envelope, or NULL. */
static json_t *s_rec(json_t *root, const char *uid)
{
    return root ? json_object_get(json_object_get(root, "data"), uid) : NULL;
}

static long s_jver(json_t *rec)
{
    return rec ? (long)json_integer_value(json_object_get(rec, "version")) : -1;
}

static const char *s_jstr(json_t *rec, const char *k)
{
    const char *s = rec ? json_string_value(json_object_get(rec, k)) : NULL;
    return s ? s : "";
}

/* Does an observed record (or absence) agree with what u's acknowledged writes allow?
 * Returns NULL when it does, else a reason (static buffer). `strict_newer`: a newer version than
 * the last ack needs an unknown-outcome write to explain it. */
/* Set by s_judge when it accepted a state that only a write with an unknown outcome explains
 * (late), and when that write was sent before the last acknowledged one (resurrected: a failed
 * request overwrote a newer acknowledged write). */
static __thread bool s_judged_late, s_judged_resurrected;

static const char *s_judge(const user_t *u, bool present, long ver, const char *status, const char *msg)
{
    static __thread char why[240];
    s_judged_late = s_judged_resurrected = false;
    if (!present) {
        if (u->ack == ACK_REC && !u->unknown_del) {
            snprintf(why, sizeof why, "%s absent, but version %ld (%s '%s') was acknowledged", u->id, u->ack_version,
                     u->ack_status, u->ack_msg);
            return why;
        }
        s_judged_late = u->ack == ACK_REC;
        s_judged_resurrected = s_judged_late && u->unknown_del_seq < u->ack_seq;
        return NULL;
    }
    if (u->ack == ACK_REC && ver < u->ack_version) {
        snprintf(why, sizeof why, "%s at version %ld, older than the acknowledged %ld", u->id, ver, u->ack_version);
        return why;
    }
    if (u->ack == ACK_REC && ver == u->ack_version) {
        if (strcmp(status, u->ack_status) != 0 || strcmp(msg, u->ack_msg) != 0) {
            snprintf(why, sizeof why, "%s version %ld shows %s '%s', acknowledged %s '%s'", u->id, ver, status, msg,
                     u->ack_status, u->ack_msg);
            return why;
        }
        return NULL;
    }
    /* Newer than the last ack (or present although the last ack deleted it / nothing was acked):
     * only a write whose outcome the client does not know may explain it. */
    if (u->nunknown == 0) {
        snprintf(why, sizeof why, "%s at version %ld (%s '%s') but the last acknowledged write was %s %ld", u->id,
                 ver, status, msg, u->ack == ACK_REC ? "version" : u->ack == ACK_GONE ? "a delete, after" : "none",
                 u->ack_version);
        return why;
    }
    if (msg[0] && !u->unknown_overflow && !(u->ack == ACK_REC && strcmp(msg, u->ack_msg) == 0)) {
        for (int i = 0; i < u->nunknown && i < MAX_UNKNOWN; i++)
            if (strcmp(msg, u->unknown_msgs[i]) == 0) {
                s_judged_late = true;
                s_judged_resurrected = u->ack != ACK_NONE && u->unknown_seq[i] < u->ack_seq;
                return NULL;
            }
        snprintf(why, sizeof why, "%s shows message '%s' that no write could have left", u->id, msg);
        return why;
    }
    s_judged_late = true;
    return NULL;
}

/* ==== the load ================================================================================ */

static uint64_t s_rand(worker_t *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void s_unknown(user_t *u, int op, const char *msg, long seq)
{
    if (op == OP_DEL) {
        u->unknown_del = true;
        u->unknown_del_seq = seq;
    }
    if (u->nunknown < MAX_UNKNOWN) {
        snprintf(u->unknown_msgs[u->nunknown], sizeof u->unknown_msgs[0], "%s", op == OP_PUT ? msg : "");
        u->unknown_seq[u->nunknown] = seq;
    } else
        u->unknown_overflow = true;
    u->nunknown++;
}

static bool s_pause_point(void)
{
    pthread_mutex_lock(&S.mu);
    if (S.pause && !S.stop) {
        S.paused++;
        pthread_cond_broadcast(&S.cv);
        while (S.pause && !S.stop)
            pthread_cond_wait(&S.cv, &S.mu);
        S.paused--;
    }
    bool stop = S.stop;
    pthread_mutex_unlock(&S.mu);
    return !stop;
}

static void s_one(worker_t *w, int op)
{
    worker_t *owner = w->reader ? S.w[s_rand(w) % NWORKERS] : w;
    user_t *u = &owner->users[s_rand(w) % UPW];
    char path[512], body[160], msg[48] = "";
    const char *method = "GET", *hdr = NULL;
    size_t blen = 0;
    long opseq = ++w->seq;
    body[0] = '\0';
    switch (op) {
    case OP_GET:
        snprintf(path, sizeof path, "/api/v2/presence/%s", u->id);
        break;
    case OP_PUT: {
        snprintf(msg, sizeof msg, "w%d-n%ld", w->idx, opseq);
        const char *st = s_status_names[s_rand(w) % 3];
        blen = (size_t)snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\",\"ttl\":3600}", st, msg);
        snprintf(path, sizeof path, "/api/v2/presence/%s", u->id);
        method = "PUT";
        hdr = u->auth;
        break;
    }
    case OP_HB:
        snprintf(path, sizeof path, "/api/v2/presence/%s/heartbeat", u->id);
        method = "POST";
        hdr = u->auth;
        break;
    case OP_DEL:
        snprintf(path, sizeof path, "/api/v2/presence/%s", u->id);
        method = "DELETE";
        hdr = u->auth;
        break;
    case OP_MGET: {
        /* three of ours (u first) and two of other workers' */
        int n = snprintf(path, sizeof path, "/api/v2/presence?users=%s", u->id);
        for (int k = 0; k < 2; k++)
            n += snprintf(path + n, sizeof path - (size_t)n, ",%s", owner->users[s_rand(w) % UPW].id);
        for (int k = 0; k < 2; k++) {
            worker_t *o = S.w[s_rand(w) % NWORKERS];
            n += snprintf(path + n, sizeof path - (size_t)n, ",%s", o->users[s_rand(w) % UPW].id);
        }
        break;
    }
    }
    int phase = atomic_load_explicit((_Atomic int *)&S.phase, memory_order_acquire);
    th_resp_t r;
    if (w->conn.fd < 0)
        w->conn_opened_us = s_now_us(); /* th_conn_request opens one */
    uint64_t start = th_now_ms();
    int rc = th_conn_request(&w->conn, method, path, hdr, blen ? body : NULL, blen, &r, 10000);
    uint64_t end = th_now_ms();
    int status = rc < 0 ? -1 : r.status;
    char stalebuf[16];
    bool stale = rc == 0 && th_resp_header(&r, "x-presence-stale", stalebuf, sizeof stalebuf) != NULL;
    json_t *root = NULL;
    if (rc == 0 && status == 200) {
        json_error_t e;
        root = json_loadb(r.body, r.body_len, 0, &e);
    }
    char what[200];
    snprintf(what, sizeof what, "%s %s", method, path);
    /* The model: acks, unknown outcomes, and reads checked against acks. */
    const char *bad = NULL;
    bool regress = false, resurrected_read = false;
    char regress_why[240] = "";
    char badbuf[240];
    if (op == OP_PUT || op == OP_HB || op == OP_DEL) {
        if (status == 200 && op != OP_DEL) {
            json_t *rec = s_rec(root, u->id);
            long v = s_jver(rec);
            if (!rec || v <= 0) {
                snprintf(badbuf, sizeof badbuf, "%s: 200 without a record: %.80s", what, rc == 0 ? r.body : "");
                bad = badbuf;
            } else if (u->ack == ACK_REC && v <= u->ack_version) {
                snprintf(badbuf, sizeof badbuf, "%s: acknowledged version %ld after %ld", what, v, u->ack_version);
                bad = badbuf;
            } else {
                if (op == OP_PUT && strcmp(s_jstr(rec, "message"), msg) != 0) {
                    snprintf(badbuf, sizeof badbuf, "%s: stored message '%s', sent '%s'", what,
                             s_jstr(rec, "message"), msg);
                    bad = badbuf;
                }
                u->ack = ACK_REC;
                u->ack_version = v;
                snprintf(u->ack_status, sizeof u->ack_status, "%s", s_jstr(rec, "status"));
                snprintf(u->ack_msg, sizeof u->ack_msg, "%s", s_jstr(rec, "message"));
                u->acked++;
                u->ack_seq = opseq;
            }
        } else if (op == OP_DEL && (status == 200 || status == 404)) {
            if (status == 404 && u->ack == ACK_REC && !u->unknown_del) {
                snprintf(badbuf, sizeof badbuf, "%s: 404 but version %ld was acknowledged", what, u->ack_version);
                bad = badbuf;
            }
            u->ack = ACK_GONE;
            u->acked++;
            u->ack_seq = opseq;
        } else if (status == 503 || status == 504 || status == -1) {
            s_unknown(u, op, msg, opseq);
        }
    } else if ((status == 200 || status == 404) && !w->reader) {
        /* Reads of our own users must not show anything older than what we were acknowledged. */
        int nown = op == OP_GET ? 1 : 3;
        const char *ids = strchr(path, '=');
        for (int k = 0; k < nown; k++) {
            const user_t *x = u;
            if (op == OP_MGET) {
                /* ids: u, then two of ours */
                const char *p = ids + 1;
                for (int s = 0; s < k; s++)
                    p = strchr(p, ',') + 1;
                size_t len = strcspn(p, ",");
                x = NULL;
                for (int j = 0; j < UPW; j++)
                    if (strlen(w->users[j].id) == len && strncmp(w->users[j].id, p, len) == 0)
                        x = &w->users[j];
            }
            if (!x)
                continue;
            json_t *rec = status == 200 ? s_rec(root, x->id) : NULL;
            const char *why = s_judge(x, rec != NULL, s_jver(rec), s_jstr(rec, "status"), s_jstr(rec, "message"));
            if (why) {
                /* Older than an acknowledged write: a read-your-writes miss, counted; anything the
                 * model cannot explain at all (a version nobody wrote) is a failure. */
                if ((rec && x->ack == ACK_REC && s_jver(rec) < x->ack_version) || (!rec && x->ack == ACK_REC)) {
                    regress = true;
                    snprintf(regress_why, sizeof regress_why, "%s%s", why, stale ? " (marked stale)" : "");
                }
                else {
                    snprintf(badbuf, sizeof badbuf, "%s: %s", what, why);
                    bad = badbuf;
                }
            } else if (s_judged_resurrected) {
                resurrected_read = true;
            }
        }
    }
    if (root)
        json_decref(root);
    char errbody[80] = "";
    if (rc == 0 && (status == 503 || status == 504))
        snprintf(errbody, sizeof errbody, "%d %.*s", status, (int)strcspn(r.body, "\r\n"), r.body);
    if (rc == 0)
        th_resp_free(&r);
    pthread_mutex_lock(&S.mu);
    phase_t *p = &S.ph[phase];
    for (int k = 0; errbody[0] && k < 4; k++) {
        if (!p->errs[k][0])
            snprintf(p->errs[k], sizeof p->errs[k], "%s", errbody);
        if (strcmp(p->errs[k], errbody) == 0) {
            p->errs_n[k]++;
            break;
        }
    }
    s_account(w, phase, op, status, start, end, stale, what);
    if (regress) {
        p->regress++;
        if (p->regress <= 2)
            s_note(p, "read older than an acknowledged write at fault%+lld ms: %s: %s",
                   p->t_fault ? (long long)start - (long long)p->t_fault : 0LL, what, regress_why);
    }
    if (resurrected_read) {
        if (!p->resurrected_reads++)
            s_note(p, "read shows a failed write that was sent before the last acknowledged one at fault%+lld ms: %s",
                   p->t_fault ? (long long)start - (long long)p->t_fault : 0LL, what);
    }
    if (bad) {
        p->unexpected++;
        s_note(p, "%s", bad);
    }
    if (p->t_fault && start >= p->t_fault && start < p->t_fault + 1000 && (op == OP_GET || op == OP_MGET))
        s_success(op, status) ? p->win_read_ok++ : p->win_read_fail++;
    if (s_in_hang(p, start)) {
        bool write = op == OP_PUT || op == OP_HB || op == OP_DEL;
        bool ok = s_success(op, status);
        if (write && ok && p->hang_write_ok < 2)
            s_note(p, "%s succeeded during the hang: started at fault%+lld ms, took %llu ms", what,
                   (long long)start - (long long)p->t_fault, (unsigned long long)(end - start));
        if (write)
            ok ? p->hang_write_ok++ : p->hang_write_fail++;
        else
            ok ? p->hang_read_ok++ : p->hang_read_fail++;
        if (!ok && start > p->t_fault + REQ_TIMEOUT + 500u * (unsigned)s_mult())
            p->hang_late_fail++;
    }
    pthread_mutex_unlock(&S.mu);
    if (status == -1) {
        /* The gateway is not there (being restarted): back off a little instead of spinning. */
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void *s_worker(void *arg)
{
    worker_t *w = arg;
    w->conn.fd = -1;
    w->conn.port = S.port;
    if (w->reader) {
        while (s_pause_point())
            s_one(w, s_rand(w) % 5 < 3 ? OP_GET : OP_MGET);
        th_conn_close(&w->conn);
        return NULL;
    }
    /* Every user gets a record first (so later reads are of cached data). */
    for (int i = 0; i < UPW && s_pause_point(); i++) {
        user_t *u = &w->users[i];
        char path[96], body[128], msg[32];
        snprintf(path, sizeof path, "/api/v2/presence/%s", u->id);
        snprintf(msg, sizeof msg, "w%d-init", w->idx);
        int blen = snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\",\"ttl\":3600}", msg);
        th_resp_t r;
        if (th_conn_request(&w->conn, "PUT", path, u->auth, body, (size_t)blen, &r, 10000) == 0) {
            if (r.status == 200) {
                json_error_t e;
                json_t *root = json_loadb(r.body, r.body_len, 0, &e);
                json_t *rec = s_rec(root, u->id);
                if (rec) {
                    u->ack = ACK_REC;
                    u->ack_version = s_jver(rec);
                    snprintf(u->ack_status, sizeof u->ack_status, "%s", s_jstr(rec, "status"));
                    snprintf(u->ack_msg, sizeof u->ack_msg, "%s", s_jstr(rec, "message"));
                    u->acked++;
                }
                if (root)
                    json_decref(root);
            } else {
                s_unknown(u, OP_PUT, msg, 0);
            }
            th_resp_free(&r);
        } else {
            s_unknown(u, OP_PUT, msg, 0);
        }
    }
    pthread_mutex_lock(&S.mu);
    S.inited++;
    pthread_mutex_unlock(&S.mu);
    static const int mix[20] = {OP_GET, OP_GET, OP_GET, OP_GET, OP_GET,  OP_GET, OP_PUT, OP_PUT, OP_PUT, OP_PUT,
                                OP_PUT, OP_PUT, OP_HB,  OP_HB,  OP_HB,   OP_DEL, OP_MGET, OP_MGET, OP_MGET, OP_MGET};
    while (s_pause_point())
        s_one(w, mix[s_rand(w) % 20]);
    th_conn_close(&w->conn);
    return NULL;
}

static void s_load_start(const char *tag)
{
    for (int i = 0; i < NTHREADS; i++) {
        worker_t *w = calloc(1, sizeof *w);
        w->idx = i;
        w->reader = i == NWORKERS;
        w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        for (int k = 0; k < UPW; k++) {
            user_t *u = &w->users[k];
            snprintf(u->id, sizeof u->id, "%s-w%d-u%d", tag, i, k);
            th_auth_header(u->auth, sizeof u->auth, u->id, NULL);
        }
        S.w[i] = w;
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&S.w[i]->tid, NULL, s_worker, S.w[i]);
}

static void s_load_stop(void)
{
    pthread_mutex_lock(&S.mu);
    S.stop = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(S.w[i]->tid, NULL);
}

/* Pause every worker between requests (true once all are parked). */
static bool s_pause(bool on)
{
    pthread_mutex_lock(&S.mu);
    S.pause = on;
    pthread_cond_broadcast(&S.cv);
    bool ok = true;
    if (on) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30 * s_mult();
        while (S.paused < NTHREADS && ok)
            ok = pthread_cond_timedwait(&S.cv, &S.mu, &ts) != ETIMEDOUT;
    }
    pthread_mutex_unlock(&S.mu);
    return ok;
}

/* ==== processes =============================================================================== */

static th_proc_t *s_launcher(const char *name, const char *dir, int port, const char *const *extra)
{
    th_proc_t *p = th_proc(name, "presenced");
    th_env(p, "DATA_DIR", "%s", dir);
    th_env(p, "JWT_SECRET", "%s", TH_SECRET);
    th_env(p, "SERVICE_ADDR", "127.0.0.1");
    th_env(p, "SERVICE_PORT", "%d", port);
    th_env(p, "REQUEST_TIMEOUT_MS", "%d", REQ_TIMEOUT);
    th_env(p, "RATE_LIMIT_WRITES", "0");
    th_env(p, "GATEWAY_THREADS", "2");
    th_env(p, "CACHE_NODES", "2");
    th_env(p, "LOG_LEVEL", "%s", getenv("FAULTS_LOG_LEVEL") ? getenv("FAULTS_LOG_LEVEL") : "notice");
    for (int i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        char n[64];
        snprintf(n, sizeof n, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(p, n, "%s", eq + 1);
    }
    snprintf(p->err_path, sizeof p->err_path, "%s/%s.log", dir, name);
    return p;
}

static bool s_read_file(const char *path, char *buf, size_t len, size_t *got)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    *got = fread(buf, 1, len - 1, f);
    buf[*got] = '\0';
    fclose(f);
    return true;
}

/* The launcher's child running `bin` (and, if given, with CACHE_ID=<cache_id>); 0 if none. */
static pid_t s_child(pid_t launcher, const char *bin, const char *cache_id)
{
    char path[96], list[1024];
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)launcher, (int)launcher);
    if (!s_read_file(path, list, sizeof list, &n))
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        pid_t pid = (pid_t)atoi(tok);
        char cmd[600];
        size_t cl;
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        if (!s_read_file(path, cmd, sizeof cmd, &cl) || cl == 0)
            continue;
        const char *base = strrchr(cmd, '/');
        base = base ? base + 1 : cmd;
        if (strcmp(base, bin) != 0)
            continue;
        if (cache_id) {
            static char env[65536];
            size_t el;
            snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
            if (!s_read_file(path, env, sizeof env, &el))
                continue;
            char want[96];
            snprintf(want, sizeof want, "CACHE_ID=%s", cache_id);
            bool found = false;
            for (size_t off = 0; off < el; off += strlen(env + off) + 1)
                if (strcmp(env + off, want) == 0)
                    found = true;
            if (!found)
                continue;
        }
        return pid;
    }
    return 0;
}

typedef struct childq {
    pid_t launcher, old, now;
    const char *bin, *cache_id;
} childq_t;

static bool s_child_new(void *arg)
{
    childq_t *q = arg;
    q->now = s_child(q->launcher, q->bin, q->cache_id);
    return q->now > 0 && q->now != q->old;
}

/* ==== verification ============================================================================ */

/* Read every user through the gateway and from the store; returns the number of mismatches. */
static long s_verify(phase_t *p, int port, const char *store_ep)
{
    long lost = 0;
    int mult = s_mult();
    th_zc_t z;
    bool zc = store_ep && th_zc_open(&z, store_ep) == 0;
    for (int i = 0; i < NWORKERS; i++) {
        for (int k = 0; k < UPW; k++) {
            const user_t *u = &S.w[i]->users[k];
            char path[96];
            snprintf(path, sizeof path, "/api/v2/presence/%s", u->id);
            th_resp_t r;
            int status = -1;
            uint64_t deadline = th_now_ms() + 5000u * (unsigned)mult;
            for (;;) {
                if (th_http(port, "GET", path, NULL, NULL, 0, &r, 5000) == 0) {
                    status = r.status;
                    if (status == 200 || status == 404)
                        break;
                    th_resp_free(&r);
                }
                if (th_now_ms() > deadline)
                    break;
            }
            const char *why = NULL;
            if (status == 200 || status == 404) {
                json_error_t e;
                json_t *root = status == 200 ? json_loadb(r.body, r.body_len, 0, &e) : NULL;
                json_t *rec = s_rec(root, u->id);
                why = s_judge(u, rec != NULL, s_jver(rec), s_jstr(rec, "status"), s_jstr(rec, "message"));
                if (root)
                    json_decref(root);
                th_resp_free(&r);
            } else {
                why = "unreadable through the gateway after recovery";
            }
            if (why) {
                lost++;
                s_note(p, "verify (gateway): %s", why);
            } else if (s_judged_late) {
                p->late++;
                p->resurrected += s_judged_resurrected;
                s_note(p, "verify: %s: not the last acknowledged write (version %ld '%s') but a later-landing one "
                       "whose request had failed", u->id, u->ack_version, u->ack_msg);
            }
            if (!zc)
                continue;
            proto_record_t rec;
            int st = th_zc_get(&z, u->id, &rec, NULL);
            if (st == PROTO_OK || st == PROTO_NOTFOUND) {
                char msg[PROTO_MESSAGE_MAX + 1];
                if (st == PROTO_OK) {
                    memcpy(msg, rec.message, rec.msg_len);
                    msg[rec.msg_len] = '\0';
                }
                why = s_judge(u, st == PROTO_OK, st == PROTO_OK ? (long)rec.version : -1,
                              st == PROTO_OK && rec.status < 4 ? s_status_names[rec.status] : "", st == PROTO_OK ? msg : "");
            } else {
                why = "unreadable at the store after recovery";
            }
            if (why) {
                lost++;
                s_note(p, "verify (store): %s", why);
            }
        }
    }
    if (zc)
        th_zc_close(&z);
    return lost;
}

/* ==== phases ================================================================================== */

static int s_begin(const char *name, bool tolerate_conn_err, bool hang)
{
    pthread_mutex_lock(&S.mu);
    int i = S.phase + 1;
    phase_t *p = &S.ph[i];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->tolerate_conn_err = tolerate_conn_err;
    p->hang = hang;
    p->t_begin = th_now_ms();
    atomic_store_explicit((_Atomic int *)&S.phase, i, memory_order_release);
    pthread_mutex_unlock(&S.mu);
    return i;
}

typedef struct enough {
    int phase;
    long n;
} enough_t;

/* Enough load in the phase: every writer is past its first writes, and at least n requests of
 * which a quarter are writes (the reader alone would get there at once). */
static bool s_enough(void *arg)
{
    enough_t *e = arg;
    pthread_mutex_lock(&S.mu);
    const phase_t *p = &S.ph[e->phase];
    long writes = 0;
    for (int k = 0; k < B_N; k++)
        writes += p->n[OP_PUT][k] + p->n[OP_HB][k] + p->n[OP_DEL][k];
    bool ok = S.inited == NWORKERS && p->total >= e->n && writes * 4 >= e->n;
    pthread_mutex_unlock(&S.mu);
    return ok;
}

static void s_mark(int phase, uint64_t *field)
{
    pthread_mutex_lock(&S.mu);
    *field = th_now_ms();
    (void)phase;
    pthread_mutex_unlock(&S.mu);
}

typedef struct recovered {
    int phase;
    uint64_t since; /* the fault, or the restart/resume seen */
    uint32_t quiet;
} recovered_t;

/* Recovered: no failure for `quiet` ms and every request type succeeded after the last failure
 * and after `since`. */
static bool s_recovered(void *arg)
{
    recovered_t *r = arg;
    pthread_mutex_lock(&S.mu);
    phase_t *p = &S.ph[r->phase];
    uint64_t now = th_now_ms();
    uint64_t after = p->last_fail_end > r->since ? p->last_fail_end : r->since;
    bool ok = now >= after + r->quiet;
    for (int op = 0; op < OP_N && ok; op++)
        ok = p->last_ok_start[op] > after;
    pthread_mutex_unlock(&S.mu);
    return ok;
}

typedef struct until {
    uint64_t t;
    int phase;
    long want_fail;
} until_t;

/* True at time t once the hang has shown what it does (a write failed in it). */
static bool s_hang_seen(void *arg)
{
    until_t *u = arg;
    pthread_mutex_lock(&S.mu);
    bool seen = S.ph[u->phase].hang_write_fail + S.ph[u->phase].hang_read_fail >= u->want_fail;
    pthread_mutex_unlock(&S.mu);
    return seen && th_now_ms() >= u->t;
}

static uint32_t s_recovery_ms(const phase_t *p, uint64_t from)
{
    uint64_t end = p->last_fail_end > from ? p->last_fail_end : from;
    for (int op = 0; op < OP_N; op++)
        if (p->first_ok_end[op] > end)
            end = p->first_ok_end[op];
    return (uint32_t)(end - from);
}

static void s_report(const phase_t *p)
{
    long b[B_N] = {0};
    for (int op = 0; op < OP_N; op++)
        for (int k = 0; k < B_N; k++)
            b[k] += p->n[op][k];
    uint64_t from = p->t_resume ? p->t_resume : p->t_fault;
    uint32_t disrupted = p->last_fail_end > p->t_fault ? (uint32_t)(p->last_fail_end - p->t_fault) : 0;
    printf("fault: %s: recovered in %u ms (disrupted %u ms from the fault); %ld requests: 200=%ld 404=%ld 503=%ld "
           "504=%ld conn_err=%ld other=%ld (before the fault: %ld failed); max latency %u ms; stale=%ld; older-than-ack reads=%ld; lost=%ld; late-landing failed writes=%ld (older than the last ack: %ld; reads showing one: %ld)\n",
           p->name, s_recovery_ms(p, from), disrupted, p->total, b[B_200], b[B_404], b[B_503], b[B_504], b[B_ERR],
           b[B_OTHER], p->baseline_fail, p->max_lat, p->stale, p->regress, p->lost, p->late, p->resurrected, p->resurrected_reads);
    for (int op = 0; op < OP_N; op++)
        printf("fault: %s:   %-9s 200=%ld 404=%ld 503=%ld 504=%ld conn_err=%ld other=%ld\n", p->name, s_opname[op],
               p->n[op][B_200], p->n[op][B_404], p->n[op][B_503], p->n[op][B_504], p->n[op][B_ERR],
               p->n[op][B_OTHER]);
    static const char *const bn[B_N] = {"200", "404", "503", "504", "conn_err", "other"};
    for (int k = B_503; k < B_N; k++)
        if (p->b_cnt[k])
            printf("fault: %s:   %s from fault%+lld ms to fault%+lld ms (request starts)\n", p->name, bn[k],
                   (long long)p->b_first[k], (long long)p->b_last[k]);
    if (p->t_resume)
        printf("fault: %s:   during the hang: writes ok=%ld failed=%ld, reads ok=%ld failed=%ld, failures after "
               "the first timeout=%ld\n",
               p->name, p->hang_write_ok, p->hang_write_fail, p->hang_read_ok, p->hang_read_fail, p->hang_late_fail);
    printf("fault: %s:   reads started in the first second after the fault: ok=%ld failed=%ld\n", p->name,
           p->win_read_ok, p->win_read_fail);
    printf("fault: %s:   slowest: %s\n", p->name, p->max_lat_what);
    for (int k = 0; k < 4 && p->errs[k][0]; k++)
        printf("fault: %s:   %ld x %s\n", p->name, p->errs_n[k], p->errs[k]);
    for (int i = 0; i < p->nnotes; i++)
        printf("fault: %s:   note: %s\n", p->name, p->notes[i]);
    fflush(stdout);
}

/* After a fault: wait for recovery, pause, verify, resume; then assert on the phase. */
static void s_settle(int phase, uint64_t since, int port, const char *store_ep)
{
    int mult = s_mult();
    recovered_t rq = {phase, since, 1000};
    bool rec = th_wait_for(s_recovered, &rq, RECOVERY_BOUND_MS * mult);
    ck_assert_msg(s_pause(true), "the load did not pause");
    pthread_mutex_lock(&S.mu);
    phase_t *p = &S.ph[phase];
    pthread_mutex_unlock(&S.mu);
    long lost = s_verify(p, port, store_ep);
    pthread_mutex_lock(&S.mu);
    p->lost = lost;
    pthread_mutex_unlock(&S.mu);
    s_report(p);
    s_pause(false);
    ck_assert_msg(rec, "%s: the service did not recover within %d ms", p->name, RECOVERY_BOUND_MS * mult);
    ck_assert_msg(lost == 0, "%s: %ld acknowledged writes lost (%s)", p->name, lost, p->nnotes ? p->notes[0] : "");
    ck_assert_msg(p->unexpected == 0, "%s: %ld unexpected answers (%s)", p->name, p->unexpected,
                  p->nnotes ? p->notes[0] : "");
    ck_assert_msg(p->max_lat <= S.lat_bound, "%s: a request took %u ms", p->name, p->max_lat);
    ck_assert_msg(p->regress == 0, "%s: %ld reads older than an acknowledged write (%s)", p->name, p->regress,
                  p->nnotes ? p->notes[0] : "");
    /* A write that failed (504) may still land, but never after a later write of the same client was
     * acknowledged (writes carry the gateway's deadline; a cache-node drops one it gets to too late). */
    ck_assert_msg(p->resurrected == 0 && p->resurrected_reads == 0,
                  "%s: a failed write landed after a newer acknowledged one (%ld records, %ld reads; %s)", p->name,
                  p->resurrected, p->resurrected_reads, p->nnotes ? p->notes[0] : "");
}

/* Reads of cached records go on through the fault: at most 5% of the reads started in the first
 * second after it fail (those in flight at a killed process, or misses). */
static void s_assert_reads_served(const phase_t *p)
{
    ck_assert_msg(p->win_read_ok > 0 && p->win_read_fail * 20 <= p->win_read_ok + p->win_read_fail,
                  "%s: reads were not served through the fault: ok=%ld failed=%ld", p->name, p->win_read_ok,
                  p->win_read_fail);
}

/* One SIGKILL under load: the launcher restarts the victim; returns after the asserts. */
static void s_kill_phase(const char *name, pid_t launcher, const char *bin, const char *cache_id, int port,
                         const char *store_ep, bool is_gateway)
{
    int ph = s_begin(name, is_gateway, false);
    enough_t e = {ph, 200};
    ck_assert_msg(th_wait_for(s_enough, &e, 20000 * s_mult()), "%s: no load before the fault", name);
    childq_t q = {launcher, 0, 0, bin, cache_id};
    q.old = s_child(launcher, bin, cache_id);
    ck_assert_msg(q.old > 0, "%s: no %s child of the launcher", name, bin);
    s_mark(ph, &S.ph[ph].t_fault);
    ck_assert_int_eq(kill(q.old, SIGKILL), 0);
    pthread_mutex_lock(&S.mu);
    S.ph[ph].t_fault_us = s_now_us();
    pthread_mutex_unlock(&S.mu);
    ck_assert_msg(th_wait_for(s_child_new, &q, 20000 * s_mult()), "%s: the launcher did not restart %s", name, bin);
    s_settle(ph, th_now_ms(), port, store_ep);
}

/* SIGSTOP for 2 x REQUEST_TIMEOUT_MS under load, then SIGCONT. */
static void s_stop_phase(const char *name, pid_t launcher, const char *bin, const char *cache_id, int port,
                         const char *store_ep, uint64_t hold_ms)
{
    int ph = s_begin(name, false, true);
    enough_t e = {ph, 200};
    ck_assert_msg(th_wait_for(s_enough, &e, 20000 * s_mult()), "%s: no load before the fault", name);
    pid_t pid = s_child(launcher, bin, cache_id);
    ck_assert_msg(pid > 0, "%s: no %s child of the launcher", name, bin);
    s_mark(ph, &S.ph[ph].t_fault);
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    until_t u = {S.ph[ph].t_fault + hold_ms, ph, 1};
    bool seen = th_wait_for(s_hang_seen, &u, 20000 * s_mult());
    s_mark(ph, &S.ph[ph].t_resume);
    ck_assert_int_eq(kill(pid, SIGCONT), 0);
    ck_assert_msg(seen, "%s: no request failed during the hang", name);
    s_settle(ph, S.ph[ph].t_resume, port, store_ep);
    /* The process survived its hang (a SIGSTOP is not a crash). */
    ck_assert_msg(s_child(launcher, bin, cache_id) == pid, "%s: %s was restarted after a hang", name, bin);
}

static void s_suite_setup(void)
{
    memset(S.ph, 0, sizeof S.ph);
    S.stop = S.pause = false;
    S.paused = 0;
    S.inited = 0;
    S.phase = 0;
    snprintf(S.ph[0].name, sizeof S.ph[0].name, "warm-up");
    S.lat_bound = REQ_TIMEOUT + 1500u * (unsigned)s_mult();
}

static void s_warm(int port)
{
    (void)port;
    enough_t e = {0, 400};
    ck_assert_msg(th_wait_for(s_enough, &e, 30000 * s_mult()), "the load did not start");
}

/* Stop the load and check every user once more. */
static void s_final(const char *what, int port, const char *store_ep)
{
    s_load_stop();
    int ph = s_begin("final", false, false);
    long lost = s_verify(&S.ph[ph], port, store_ep);
    long acked = 0, unknown = 0;
    for (int i = 0; i < NWORKERS; i++)
        for (int k = 0; k < UPW; k++) {
            acked += S.w[i]->users[k].acked;
            unknown += S.w[i]->users[k].nunknown;
        }
    printf("fault: %s: final check of %d users after %ld acknowledged writes (%ld with an unknown outcome): "
           "lost=%ld\n", what, NWORKERS * UPW, acked, unknown, lost);
    fflush(stdout);
    ck_assert_msg(lost == 0, "final check: %ld acknowledged writes lost (%s)", lost, S.ph[ph].notes[0]);
}

/* ==== tests =================================================================================== */

START_TEST(test_center_kills)
{
    s_suite_setup();
    const char *dir = th_tmpdir();
    ck_assert_ptr_nonnull(dir);
    int port = th_free_port_pair();
    ck_assert_int_gt(port, 0);
    th_proc_t *l = s_launcher("presenced", dir, port, NULL);
    ck_assert_int_eq(th_start(l, 30000 * s_mult()), 0);
    char store_ep[300];
    snprintf(store_ep, sizeof store_ep, "ipc://%s/run/store-cmd.sock", dir);
    S.port = port;
    s_load_start("k");
    s_warm(port);

    s_kill_phase("kill store-node", l->pid, "store-node", NULL, port, store_ep, false);
    s_assert_reads_served(&S.ph[S.phase]);
    s_kill_phase("kill cache-node-1", l->pid, "cache-node", "node-1-c1", port, store_ep, false);
    s_kill_phase("kill cache-node-2", l->pid, "cache-node", "node-1-c2", port, store_ep, false);
    s_kill_phase("kill gateway", l->pid, "gateway", NULL, port, store_ep, true);

    s_final("center kills", port, store_ep);
    ck_assert_int_eq(th_stop(l, 30000 * s_mult()), 0);
}
END_TEST

START_TEST(test_center_hangs)
{
    s_suite_setup();
    const char *dir = th_tmpdir();
    ck_assert_ptr_nonnull(dir);
    int port = th_free_port_pair();
    ck_assert_int_gt(port, 0);
    /* A stream that is silent for 600 ms is not trusted (heartbeats every 200 ms): during the store's
     * hang the cache-nodes stop trusting their stream well before they consider the store down
     * (STORE_DOWN_MS, 2 s), so reads go through to the hung store and must fall back to the cache. */
    const char *env[] = {"STORE_HUGZ_MS=200", "SYNC_HEARTBEAT_LIMIT_MS=600", NULL};
    th_proc_t *l = s_launcher("presenced", dir, port, env);
    ck_assert_int_eq(th_start(l, 30000 * s_mult()), 0);
    char store_ep[300];
    snprintf(store_ep, sizeof store_ep, "ipc://%s/run/store-cmd.sock", dir);
    S.port = port;
    s_load_start("h");
    s_warm(port);

    s_stop_phase("stop store-node", l->pid, "store-node", NULL, port, store_ep, 2 * REQ_TIMEOUT);
    phase_t *p = &S.ph[S.phase];
    /* Writes fail (at the deadline, or fast once the store is known down); every read is of a
     * cached record (all users were written first, nothing was evicted) and is served. */
    ck_assert_msg(p->hang_write_ok == 0, "%ld writes succeeded while the store was stopped", p->hang_write_ok);
    ck_assert_msg(p->hang_read_ok > 0 && p->hang_read_fail == 0,
                  "cached reads were not served while the store was stopped: ok=%ld failed=%ld", p->hang_read_ok,
                  p->hang_read_fail);

    s_stop_phase("stop cache-node-1", l->pid, "cache-node", "node-1-c1", port, store_ep, 3 * REQ_TIMEOUT / 2);
    p = &S.ph[S.phase];
    /* The gateway routes around a hung node once its first call there missed the deadline. */
    ck_assert_msg(p->hang_late_fail == 0, "%ld requests failed after the gateway should have routed around",
                  p->hang_late_fail);

    s_final("center hangs", port, store_ep);
    ck_assert_int_eq(th_stop(l, 30000 * s_mult()), 0);
}
END_TEST

START_TEST(test_leaf_faults)
{
    s_suite_setup();
    const char *cdir = th_tmpdir(), *ldir = th_tmpdir();
    ck_assert(cdir && ldir);
    int cport = th_free_port_pair(), center = th_free_port_pair();
    ck_assert(cport > 0 && center > 0);
    int lport = th_free_port_pair();
    ck_assert_int_gt(lport, 0);
    char cp[32], ce[64];
    snprintf(cp, sizeof cp, "CENTER_PORT=%d", center);
    snprintf(ce, sizeof ce, "CENTER_ENDPOINT=tcp://127.0.0.1:%d", center);
    const char *cenv[] = {cp, "CENTER_BIND_ADDR=127.0.0.1", "CENTER_INSECURE=true", "NODE_ID=center", NULL};
    const char *lenv[] = {ce, "NODE_TYPE=leaf", "NODE_ID=leaf", "CENTER_INSECURE=true", NULL};
    th_proc_t *c = s_launcher("center", cdir, cport, cenv);
    ck_assert_int_eq(th_start(c, 30000 * s_mult()), 0);
    th_proc_t *l = s_launcher("leaf", ldir, lport, lenv);
    ck_assert_int_eq(th_start(l, 30000 * s_mult()), 0);
    char store_ep[300];
    snprintf(store_ep, sizeof store_ep, "ipc://%s/run/store-cmd.sock", cdir);
    S.port = lport;
    s_load_start("l");
    s_warm(lport);

    s_kill_phase("leaf: kill sync-relay", l->pid, "sync-relay", NULL, lport, store_ep, false);
    s_assert_reads_served(&S.ph[S.phase]);
    s_kill_phase("leaf: kill center store-node", c->pid, "store-node", NULL, lport, store_ep, false);
    s_assert_reads_served(&S.ph[S.phase]);

    s_final("leaf faults", lport, store_ep);
    ck_assert_int_eq(th_stop(l, 30000 * s_mult()), 0);
    ck_assert_int_eq(th_stop(c, 30000 * s_mult()), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 60); /* each test takes ~5-10 s; CK_TIMEOUT_MULTIPLIER scales it */
    tcase_add_test(tc, test_center_kills);
    tcase_add_test(tc, test_center_hangs);
    tcase_add_test(tc, test_leaf_faults);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
