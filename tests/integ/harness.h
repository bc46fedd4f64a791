/* harness.h -- integration-test harness: real processes, real HTTP, real ZeroMQ, real LMDB.
 *
 * Processes are spawned with fork/exec from the test's main thread, with stdout/stderr in files
 * under the test's temp dir and PR_SET_PDEATHSIG(SIGKILL), so a failing test (Check forks one
 * process per test) can never leave daemons behind. Readiness is the READY_FD protocol every
 * process implements: a pipe on which it writes one "ready ..." line once it serves; we wait for
 * it with a deadline, never with a sleep. Processes are stopped by pid: SIGTERM, then SIGKILL
 * after a deadline; th_stop reports whether the exit was clean and whether the stderr log holds a
 * sanitizer report.
 *
 * Binaries come from $PRESENCE_BIN (default ./build/bin), so the same tests run on the normal and
 * the ASan/UBSan build.
 */
#ifndef PRESENCE_HARNESS_H
#define PRESENCE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TH_SECRET "integration-test-secret-0123456789abcdef"

typedef struct th_proc {
    pid_t pid;
    char name[48];
    char bin[512];
    char err_path[512];
    char ready[512];
    char *env[32];
    int nenv;
    int status; /* wait status once reaped */
    bool reaped;
} th_proc_t;

/* A unique temp dir (short path: ipc:// sockets live in it). Removed by th_cleanup_all. */
const char *th_tmpdir(void);
/* Path of a binary of the build under test. */
const char *th_bin(const char *name, char *buf, size_t len);

/* Create a process description; add NAME=value pairs with th_env, then th_start. */
th_proc_t *th_proc(const char *name, const char *bin);
void th_env(th_proc_t *p, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Start and wait (up to timeout_ms) for its ready line. Returns 0, or -1 (the process is killed). */
int th_start(th_proc_t *p, int timeout_ms);
/* Start without waiting (for restarts where readiness is observed otherwise). */
int th_start_nowait(th_proc_t *p);
/* Send a signal by pid. */
void th_signal(th_proc_t *p, int sig);
/* SIGKILL and reap. */
void th_kill(th_proc_t *p);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns 0 when the process exited with status 0
 * and its stderr holds no sanitizer report; -1 otherwise (details on stderr). */
int th_stop(th_proc_t *p, int timeout_ms);
/* True when the stderr log contains a sanitizer report. */
bool th_sanitizer_report(const th_proc_t *p);
/* Kill every process still running and remove temp dirs (atexit). */
void th_cleanup_all(void);

/* ---- a whole node ---------------------------------------------------------------------------- */

typedef struct th_node {
    char dir[256];
    int port;
    int ncache;
    th_proc_t *store, *cache[4], *gw, *relay;
    char cache_eps[1024];
    char store_cmd[300], store_pub[300];
} th_node_t;

/* Start store-node, `ncache` cache-nodes and a gateway directly (each pid known), wired with
 * ipc:// endpoints in a fresh temp dir. `extra` is a NULL-terminated list of NAME=value applied
 * to every process. Returns 0 with n filled, or -1. */
int th_node_start(th_node_t *n, int ncache, const char *const *extra);
/* A leaf region: sync-relay (to center_endpoint, tcp://127.0.0.1:P), `ncache` cache-nodes, gateway. */
int th_leaf_start(th_node_t *n, int ncache, const char *center_endpoint, const char *const *extra);
/* n consecutive free TCP ports on 127.0.0.1 (P .. P+n-1), outside the kernel's ephemeral range
 * (no outgoing connection can take one before the process under test binds it); returns P or -1. */
int th_free_ports(int n);
/* Two consecutive free TCP ports on 127.0.0.1 (P and P+1); returns P or -1. */
int th_free_port_pair(void);
/* Stop every process of the node cleanly; returns 0 if all exits were clean. */
int th_node_stop(th_node_t *n);
/* Restart one process (after th_kill) and wait for its ready line. */
int th_restart(th_proc_t *p, int timeout_ms);

/* ---- HTTP ------------------------------------------------------------------------------------ */

typedef struct th_resp {
    int status;
    char head[16384];
    char *body;
    size_t body_len;
} th_resp_t;

/* One request on a new connection to 127.0.0.1:port. `headers` is "Name: value\r\n"... or NULL.
 * Returns 0 (r filled; free with th_resp_free) or -1 on a transport error / timeout. */
int th_http(int port, const char *method, const char *path, const char *headers, const char *body, size_t blen,
            th_resp_t *r, int timeout_ms);
void th_resp_free(th_resp_t *r);
/* Header value (copied into buf), or NULL. Case-insensitive name. */
const char *th_resp_header(const th_resp_t *r, const char *name, char *buf, size_t len);

/* A keep-alive connection for load loops. */
typedef struct th_conn {
    int fd, port;
    char buf[65536];
    size_t have;
} th_conn_t;

int th_conn_open(th_conn_t *c, int port);
void th_conn_close(th_conn_t *c);
int th_conn_request(th_conn_t *c, const char *method, const char *path, const char *headers, const char *body,
                    size_t blen, th_resp_t *r, int timeout_ms);

/* Tokens signed with TH_SECRET (HS256, iss presence-service, 1 h). Free with free(). */
char *th_token(const char *sub, const char *scope);
/* "Authorization: Bearer <token>\r\n" for sub (static buffer per call site is the caller's). */
void th_auth_header(char *out, size_t len, const char *sub, const char *scope);

/* ---- ZeroMQ: talk to a cache-node or store-node directly (as a gateway would) ------------- */

#include "proto.h"

typedef struct th_zc {
    void *ctx, *sock;
    uint64_t rid;
} th_zc_t;

int th_zc_open(th_zc_t *z, const char *endpoint);
void th_zc_close(th_zc_t *z);
/* Send b (encoded with request id rid) and wait for the reply with that rid; *m must be
 * released with proto_msg_fini. Returns 0 or -1 (timeout / transport). */
int th_zc_call(th_zc_t *z, const proto_buf_t *b, uint64_t rid, proto_msg_t *m, int timeout_ms);
/* GET: returns the reply status (PROTO_OK, PROTO_NOTFOUND, ...) or -1; *out filled on OK. */
int th_zc_get(th_zc_t *z, const char *uid, proto_record_t *out, uint32_t *flags);
/* PUT one record (status, message, ttl 3600, node "test"): reply status or -1; *out on OK. */
int th_zc_put(th_zc_t *z, const char *uid, int status, const char *msg, proto_record_t *out);
/* STATS: the value of the first stat whose name starts with `name` (labels follow). */
int th_zc_stat(th_zc_t *z, const char *name, uint64_t *v);

/* Poll `cond` every few ms until true or timeout_ms; returns true if it became true. */
bool th_wait_for(bool (*cond)(void *), void *arg, int timeout_ms);
uint64_t th_now_ms(void);

#endif
