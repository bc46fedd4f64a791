/* integ_hostile.c -- hostile and heavy clients against the real binaries (issue 20).
 *
 *   sse_departed      watch streams whose client closed (FIN), reset (RST) or half-closed are
 *                     released at once: sse_clients and the gateway's fds back within a second,
 *                     and a client at SSE_MAX_PER_IP gets its slot back as soon as one leaves;
 *   sse_limits        SSE_MAX_PER_IP / SSE_MAX_PER_SUBJECT / SSE_MAX_STREAMS: 429 / 429 / 503 with
 *                     the exact rule-naming bodies; the address is the TRUST_PROXY one (rightmost
 *                     X-Forwarded-For hop), so a spoofed left hop changes nothing;
 *   sse_coalesce      a reader that stops reading while 10 batches change 1,000 watched users
 *                     gets, once it reads again, the latest record of every user (fewer events,
 *                     coalesced) and is not dropped; a non-reader is dropped and released at once;
 *   trust_proxy       the read rate limit keys on the rightmost untrusted hop (TRUSTED_PROXIES);
 *   apply_store_wins  a hostile DEALER's APPLY beyond the store's sequence is refused; one within
 *                     the slack is served until the store refutes it, then the acknowledged write
 *                     (and, for a user the store never had, 404) wins;
 *   center_curve      CENTER_PORT without CurveZMQ keys: the store-node and the relay refuse to
 *                     start (exit 2, the rule named) unless CENTER_INSECURE=true, and then the
 *                     store binds loopback and warns.
 *
 * Every process is started by pid and stopped by pid; waits poll with deadlines.
 */
#include "h2_client.h"
#include "harness.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ==== helpers ==================================================================================== */

static long s_metric(int port, const char *name)
{
    th_resp_t r;
    if (th_http(port, "GET", "/metrics", NULL, NULL, 0, &r, 5000) < 0)
        return -1;
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = r.body ? strstr(r.body, pat) : NULL;
    long v = p ? atol(p + strlen(pat)) : -1;
    th_resp_free(&r);
    return v;
}

static int s_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read into buf (NUL-terminated) until `until` appears or timeout; returns the bytes read. */
static size_t s_read_until(int fd, char *buf, size_t cap, const char *until, int timeout_ms)
{
    size_t len = 0;
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    buf[0] = '\0';
    while (len + 1 < cap && !strstr(buf, until) && th_now_ms() < deadline) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
    }
    return len;
}

/* Open a raw HTTP/1.1 watch stream: the status code (200 once ": watching" came), the socket in
 * *fd (closed unless 200), the answer's head and body in out. */
static int s_watch(int port, const char *users, const char *headers, int *fd, char *out, size_t outlen)
{
    *fd = s_connect(port);
    ck_assert_int_ge(*fd, 0);
    char req[16384];
    int n = snprintf(req, sizeof req, "GET /api/v2/presence/watch?users=%s HTTP/1.1\r\nHost: t\r\n%s\r\n", users,
                     headers ? headers : "");
    ck_assert_int_eq(send(*fd, req, (size_t)n, MSG_NOSIGNAL), n);
    char tmp[8192];
    char *buf = out ? out : tmp;
    size_t cap = out ? outlen : sizeof tmp;
    s_read_until(*fd, buf, cap, "\r\n\r\n", 5000);
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    if (status == 200) {
        size_t have = strlen(buf);
        if (!strstr(buf, ": watching"))
            s_read_until(*fd, buf + have, cap - have, ": watching", 5000);
        ck_assert_msg(strstr(buf, ": watching"), "no ': watching' in %s", buf);
    } else {
        size_t have = strlen(buf);
        s_read_until(*fd, buf + have, cap - have, "}", 2000);
        close(*fd);
        *fd = -1;
    }
    return status;
}

typedef struct wait_metric {
    int port;
    const char *name;
    long want;
} wait_metric_t;

static bool s_metric_is(void *arg)
{
    wait_metric_t *w = arg;
    return s_metric(w->port, w->name) == w->want;
}

static void s_expect_metric(int port, const char *name, long want, int timeout_ms)
{
    wait_metric_t w = {port, name, want};
    ck_assert_msg(th_wait_for(s_metric_is, &w, timeout_ms), "%s is %ld, want %ld (within %d ms)", name,
                  s_metric(port, name), want, timeout_ms);
}

static void s_close_rst(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ==== SSE: departed clients ====================================================================== */

START_TEST(test_sse_departed)
{
    th_node_t n;
    const char *env[] = {"SSE_MAX_PER_IP=30", "GATEWAY_THREADS=2", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    int base_fds = s_fds(n.gw->pid);
    int fds[30];
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(s_watch(n.port, "ann,bob", NULL, &fds[i], NULL, 0), 200);
    s_expect_metric(n.port, "sse_clients", 30, 2000);
    ck_assert_int_ge(s_fds(n.gw->pid), base_fds + 30);

    /* At SSE_MAX_PER_IP: the 31st is refused ... */
    int extra;
    char body[8192];
    ck_assert_int_eq(s_watch(n.port, "ann", NULL, &extra, body, sizeof body), 429);
    ck_assert_msg(strstr(body, "{\"success\":false,\"error\":\"too many watch streams: at most 30 per client address "
                               "(SSE_MAX_PER_IP)\"}"),
                  "429 body: %s", body);
    ck_assert_msg(strstr(body, "\r\nretry-after: 5\r\n") || strstr(body, "\r\nRetry-After: 5\r\n"), "%s", body);

    /* ... and gets in as soon as one leaves: 10 close (FIN), 10 reset (RST), 10 half-close. */
    uint64_t t0 = th_now_ms();
    for (int i = 0; i < 10; i++)
        close(fds[i]);
    s_expect_metric(n.port, "sse_clients", 20, 1000);
    uint64_t fin_ms = th_now_ms() - t0;
    ck_assert_int_eq(s_watch(n.port, "ann", NULL, &extra, NULL, 0), 200);
    s_close_rst(extra);
    t0 = th_now_ms();
    for (int i = 10; i < 20; i++)
        s_close_rst(fds[i]);
    s_expect_metric(n.port, "sse_clients", 10, 1000);
    uint64_t rst_ms = th_now_ms() - t0;
    t0 = th_now_ms();
    for (int i = 20; i < 30; i++)
        shutdown(fds[i], SHUT_WR);
    s_expect_metric(n.port, "sse_clients", 0, 1000);
    uint64_t half_ms = th_now_ms() - t0;
    for (int i = 20; i < 30; i++) {
        /* The gateway closed its side: the half-closed client reads the end. */
        char tmp[4096];
        s_read_until(fds[i], tmp, sizeof tmp, "\x01", 2000);
        close(fds[i]);
    }
    s_expect_metric(n.port, "sse_clients_gone_total", 31, 1000);
    ck_assert_int_eq(s_metric(n.port, "sse_clients_dropped_total"), 0);
    /* Every fd of those streams is closed: the gateway's fds are back to where they were, plus
     * each thread's departure set (one epoll fd per thread, made with its first stream). */
    bool back = false;
    for (uint64_t until = th_now_ms() + 2000; !back && th_now_ms() < until;)
        back = s_fds(n.gw->pid) <= base_fds + 2;
    ck_assert_msg(back, "gateway fds %d, before the streams %d (+2 departure sets)", s_fds(n.gw->pid), base_fds);
    fprintf(stderr, "integ_hostile: departed streams released after FIN %llu ms, RST %llu ms, half-close %llu ms\n",
            (unsigned long long)fin_ms, (unsigned long long)rst_ms, (unsigned long long)half_ms);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== SSE: limits ================================================================================ */

static int s_watch_from(int port, const char *xff, const char *token_sub, int *fd, char *body, size_t blen)
{
    char h[2048] = "";
    if (xff)
        snprintf(h, sizeof h, "X-Forwarded-For: %s\r\n", xff);
    if (token_sub)
        th_auth_header(h + strlen(h), sizeof h - strlen(h), token_sub, NULL);
    return s_watch(port, "ann", h, fd, body, blen);
}

START_TEST(test_sse_limits)
{
    th_node_t n;
    const char *env[] = {"SSE_MAX_PER_IP=3", "SSE_MAX_PER_SUBJECT=2", "SSE_MAX_STREAMS=9", "TRUST_PROXY=true", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    int fds[16], k = 0, fd;
    char body[8192];
    /* Per client address: the rightmost hop, whatever the client put on its left. */
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.1", NULL, &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "1.1.1.1, 10.0.0.1", NULL, &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "2.2.2.2, 10.0.0.1", NULL, &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "3.3.3.3, 10.0.0.1", NULL, &fd, body, sizeof body), 429);
    ck_assert_msg(strstr(body, "\r\n\r\n{\"success\":false,\"error\":\"too many watch streams: at most 3 per client "
                               "address (SSE_MAX_PER_IP)\"}"),
                  "%s", body);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.2", NULL, &fds[k++], NULL, 0), 200);
    /* Per token subject, across addresses. */
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.3", "alice", &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.4", "alice", &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.5", "alice", &fd, body, sizeof body), 429);
    ck_assert_msg(strstr(body, "\r\n\r\n{\"success\":false,\"error\":\"too many watch streams: at most 2 per user "
                               "(SSE_MAX_PER_SUBJECT)\"}"),
                  "%s", body);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.5", "bob", &fds[k++], NULL, 0), 200);
    /* Per process. */
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.6", NULL, &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.7", NULL, &fds[k++], NULL, 0), 200);
    ck_assert_int_eq(k, 9);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.8", NULL, &fd, body, sizeof body), 503);
    ck_assert_msg(strstr(body, "\r\n\r\n{\"success\":false,\"error\":\"too many watch streams: at most 9 per gateway "
                               "(SSE_MAX_STREAMS)\"}"),
                  "%s", body);
    ck_assert_int_eq(s_metric(n.port, "sse_streams_limited_total"), 2);
    /* Alice leaves one: she may open one again. */
    s_close_rst(fds[4]);
    s_expect_metric(n.port, "sse_clients", 8, 1000);
    ck_assert_int_eq(s_watch_from(n.port, "10.0.0.9", "alice", &fds[4], NULL, 0), 200);
    for (int i = 0; i < k; i++)
        close(fds[i]);
    s_expect_metric(n.port, "sse_clients", 0, 2000);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== SSE: a reader that falls behind ============================================================ */

#define NU 200 /* users per batch: 200 entries with 250-byte messages stay under the 64 KiB body cap */

/* One admin batch writing users u0..u199, each with a 250-byte message. The versions written (by
 * user index) go to vers. */
static void s_batch_round(int port, int round, uint64_t *vers)
{
    size_t cap = NU * 340 + 64;
    char *body = malloc(cap);
    size_t len = (size_t)snprintf(body, cap, "{\"presences\":[");
    char msg[251];
    memset(msg, 'a' + round % 26, 250);
    msg[250] = '\0';
    for (int i = 0; i < NU; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"user_id\":\"u%d\",\"status\":\"%s\",\"message\":\"%s\"}",
                                i ? "," : "", i, round % 2 ? "busy" : "away", msg);
    len += (size_t)snprintf(body + len, cap - len, "]}");
    char auth[1024];
    th_auth_header(auth, sizeof auth, "backend", "presence:admin");
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "POST", "/api/v2/presence/batch", auth, body, len, &r, 20000), 0);
    ck_assert_msg(r.status == 200, "batch: %d %s", r.status, r.body);
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    ck_assert_ptr_nonnull(j);
    json_t *data = json_object_get(j, "data");
    for (int i = 0; i < NU; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%d", i);
        vers[i] = (uint64_t)json_integer_value(json_object_get(json_object_get(data, uid), "version"));
        ck_assert_uint_gt(vers[i], 0);
    }
    json_decref(j);
    th_resp_free(&r);
    free(body);
}

/* Open a watch of u0..u199 on a socket with a small receive buffer. */
static int s_watch_all(int port)
{
    char users[NU * 6];
    size_t off = 0;
    for (int i = 0; i < NU; i++)
        off += (size_t)snprintf(users + off, sizeof users - off, "%su%d", i ? "," : "", i);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[NU * 6 + 256];
    int rl = snprintf(req, sizeof req, "GET /api/v2/presence/watch?users=%s HTTP/1.1\r\nHost: t\r\n\r\n", users);
    ck_assert_int_eq(send(fd, req, (size_t)rl, 0), rl);
    char head[8192];
    s_read_until(fd, head, sizeof head, ": watching", 5000);
    ck_assert_msg(strstr(head, " 200 "), "%s", head);
    return fd;
}

/* Read events until every user's last event is at vers[user] (or timeout); versions only go up
 * per user. Returns the number of events read. */
static long s_read_to_latest(int fd, const uint64_t *vers)
{
    uint64_t last[NU] = {0};
    long events = 0;
    size_t cap = 1 << 20, have = 0;
    char *buf = malloc(cap + 1);
    int done = 0;
    for (int k = 0; k < NU; k++)
        done += vers[k] == 0;
    uint64_t deadline = th_now_ms() + 20000;
    while (done < NU && th_now_ms() < deadline) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + have, cap - have, 0);
        ck_assert_int_gt(r, 0);
        have += (size_t)r;
        buf[have] = '\0';
        char *p = buf, *idp;
        while ((idp = strstr(p, "\nid: ")) != NULL) {
            char *end = strstr(idp, "\n\n");
            if (!end)
                break;
            uint64_t id = strtoull(idp + 5, NULL, 10);
            char *u = strstr(idp, "\"user_id\":\"u");
            ck_assert_msg(u && u < end, "event without user_id");
            int k = atoi(u + 12);
            ck_assert_int_lt(k, NU);
            ck_assert_uint_gt(id, last[k]); /* versions only go up per user */
            if (last[k] < vers[k] && id >= vers[k])
                done++;
            last[k] = id;
            events++;
            p = end + 2;
        }
        memmove(buf, p, have - (size_t)(p - buf));
        have -= (size_t)(p - buf);
    }
    for (int k = 0; k < NU; k++)
        ck_assert_msg(last[k] == vers[k], "u%d: last event %llu, latest version %llu", k, (unsigned long long)last[k],
                      (unsigned long long)vers[k]);
    free(buf);
    return events;
}

START_TEST(test_sse_coalesce)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_WRITES=0", "SSE_QUEUE_MAX=1073741824", "SSE_PING_MS=60000", "GATEWAY_THREADS=1",
                         "REQUEST_TIMEOUT_MS=10000", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    int fd = s_watch_all(n.port);
    /* 40 rounds over the same 200 users while it does not read: ~4.5 MB of events, more than the
     * sockets hold, so the gateway is behind and coalesces. */
    uint64_t vers[NU];
    for (int round = 0; round < 40; round++)
        s_batch_round(n.port, round, vers);
    ck_assert_int_eq(s_metric(n.port, "sse_clients_dropped_total"), 0);
    long events = s_read_to_latest(fd, vers);
    long coalesced = s_metric(n.port, "sse_events_coalesced_total");
    fprintf(stderr, "integ_hostile: behind reader: %ld events for 40 x %d changes, %ld coalesced, 0 dropped\n", events,
            NU, coalesced);
    ck_assert_int_gt(coalesced, 0);
    ck_assert_int_eq(events + coalesced, 40 * NU);
    ck_assert_int_eq(s_metric(n.port, "sse_clients_dropped_total"), 0);
    close(fd);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A reader that keeps up is not dropped by a burst larger than SSE_QUEUE_MAX in one loop turn
 * (one batch: ~110 KB of events against a 16 KiB queue bound). */
START_TEST(test_sse_burst_not_dropped)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_WRITES=0", "SSE_QUEUE_MAX=16384", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    int fd = s_watch_all(n.port);
    uint64_t vers[NU];
    for (int round = 0; round < 3; round++) {
        s_batch_round(n.port, round, vers);
        s_read_to_latest(fd, vers);
    }
    ck_assert_int_eq(s_metric(n.port, "sse_clients_dropped_total"), 0);
    ck_assert_int_eq(s_metric(n.port, "sse_clients"), 1);
    close(fd);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A client that never reads one user's stream while it changes: dropped, and everything it held
 * released at once (its count, its fd), the connection closed. */
START_TEST(test_sse_nonreader_released)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_WRITES=0", "SSE_QUEUE_MAX=65536", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    int base_fds = s_fds(n.gw->pid);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)n.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *req = "GET /api/v2/presence/watch?users=dan HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    s_expect_metric(n.port, "sse_clients", 1, 2000);
    char body[400], msg[251], auth[1024];
    memset(msg, 'x', 250);
    msg[250] = '\0';
    snprintf(body, sizeof body, "{\"status\":\"busy\",\"message\":\"%s\"}", msg);
    th_auth_header(auth, sizeof auth, "dan", NULL);
    th_conn_t c = {.fd = -1, .port = n.port};
    long dropped = 0;
    /* Writes until the stream is dropped: how many that takes depends on how much the kernel's
     * loopback buffers took first and on how many events coalesced meanwhile (a slow, loaded or
     * sanitized gateway coalesces more), so the bound is time, not a count. */
    uint64_t write_until = th_now_ms() + 90000;
    for (int i = 0; th_now_ms() < write_until && dropped < 1; i++) {
        th_resp_t r;
        ck_assert_int_eq(th_conn_request(&c, "PUT", "/api/v2/presence/dan", auth, body, strlen(body), &r, 5000), 0);
        th_resp_free(&r);
        if (i % 100 == 99)
            dropped = s_metric(n.port, "sse_clients_dropped_total");
    }
    th_conn_close(&c);
    ck_assert_int_eq(dropped, 1);
    /* Released at once: the count, the fd; the client reads the end of its connection. */
    s_expect_metric(n.port, "sse_clients", 0, 1000);
    bool back = false;
    for (uint64_t until = th_now_ms() + 2000; !back && th_now_ms() < until;)
        back = s_fds(n.gw->pid) <= base_fds + 1; /* + the thread's departure set */
    ck_assert_msg(back, "gateway fds %d, before %d (+1 departure set)", s_fds(n.gw->pid), base_fds);
    char tmp[65536];
    ssize_t got;
    uint64_t deadline = th_now_ms() + 5000;
    while ((got = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT)) > 0 || (got < 0 && errno == EAGAIN && th_now_ms() < deadline))
        ;
    ck_assert_msg(got == 0 || (got < 0 && errno != EAGAIN), "the connection stayed open");
    close(fd);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== TRUST_PROXY: the rightmost untrusted hop ================================================= */

static int s_get_from(int port, const char *xff)
{
    char h[256];
    snprintf(h, sizeof h, "X-Forwarded-For: %s\r\n", xff);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", "/api/v2/presence/nobody", h, NULL, 0, &r, 5000), 0);
    int st = r.status;
    if (st == 429)
        ck_assert_msg(strstr(r.body, "rate limit exceeded"), "%s", r.body);
    th_resp_free(&r);
    return st;
}

START_TEST(test_trust_proxy)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_READS=1", "RATE_LIMIT_READ_BURST=2", "TRUST_PROXY=true",
                         "TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    /* The client 198.51.100.7 (appended by our proxy 10.1.1.1) has a burst of 2 ... */
    ck_assert_int_eq(s_get_from(n.port, "1.1.1.1, 198.51.100.7, 10.1.1.1"), 404);
    ck_assert_int_eq(s_get_from(n.port, "2.2.2.2, 198.51.100.7, 10.1.1.1"), 404);
    /* ... whatever it writes on the left: a new first hop is not a new client. */
    ck_assert_int_eq(s_get_from(n.port, "3.3.3.3, 198.51.100.7, 10.1.1.1"), 429);
    ck_assert_int_eq(s_get_from(n.port, "198.51.100.7"), 429);
    /* Another client behind the same proxy has its own bucket. */
    ck_assert_int_eq(s_get_from(n.port, "3.3.3.3, 198.51.100.8, 10.1.1.1"), 404);
    ck_assert_int_eq(th_node_stop(&n), 0);

    /* A peer that is not a trusted proxy: its X-Forwarded-For is not believed at all. */
    const char *env2[] = {"RATE_LIMIT_READS=1", "RATE_LIMIT_READ_BURST=2", "TRUST_PROXY=true",
                          "TRUSTED_PROXIES=10.0.0.0/8", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env2), 0);
    ck_assert_int_eq(s_get_from(n.port, "198.51.100.1"), 404);
    ck_assert_int_eq(s_get_from(n.port, "198.51.100.2"), 404);
    ck_assert_int_eq(s_get_from(n.port, "198.51.100.3"), 429); /* all three are 127.0.0.1 */
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== cache: the store wins over a hostile APPLY ================================================ */

static int s_apply(th_zc_t *z, const proto_record_t *r, char *msg, size_t msglen)
{
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_records_cmd(&b, PROTO_APPLY, rid, r, 1);
    proto_msg_t m;
    ck_assert_int_eq(th_zc_call(z, &b, rid, &m, 5000), 0);
    proto_buf_fini(&b);
    int st = m.status;
    snprintf(msg, msglen, "%.*s", (int)m.key.len, m.key.p ? m.key.p : "");
    proto_msg_fini(&m);
    return st;
}

/* GET through the gateway: the status code; the record's status and version. */
static int s_gw_get(int port, const char *uid, char *status, size_t slen, uint64_t *version)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", path, NULL, NULL, 0, &r, 5000), 0);
    int code = r.status;
    status[0] = '\0';
    *version = 0;
    json_error_t e;
    json_t *j = code == 200 ? json_loadb(r.body, r.body_len, 0, &e) : NULL;
    json_t *d = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
    if (d) {
        snprintf(status, slen, "%s", json_string_value(json_object_get(d, "status")));
        *version = (uint64_t)json_integer_value(json_object_get(d, "version"));
    }
    if (j)
        json_decref(j);
    th_resp_free(&r);
    return code;
}

typedef struct want_get {
    int port;
    const char *uid;
    int code;
    const char *status;
} want_get_t;

static bool s_get_is(void *arg)
{
    want_get_t *w = arg;
    char st[32];
    uint64_t v;
    int code = s_gw_get(w->port, w->uid, st, sizeof st, &v);
    return code == w->code && (!w->status || strcmp(st, w->status) == 0);
}

/* A read that is served from the cache (the read-through counter does not move). */
static bool s_cache_serves(void *arg)
{
    th_zc_t *z = arg;
    uint64_t b0 = 0, b1 = 0;
    proto_record_t r;
    return th_zc_stat(z, "cache_bypass_reads_total", &b0) == 0 && th_zc_get(z, "alice", &r, NULL) == PROTO_OK &&
           th_zc_stat(z, "cache_bypass_reads_total", &b1) == 0 && b1 == b0;
}

START_TEST(test_apply_store_wins)
{
    th_node_t n;
    /* A 1 s confirmation window (SYNC_HEARTBEAT_LIMIT_MS), heartbeats well inside it. The gateway
     * reads through to the cache-node (NEAR_CACHE_BYTES=0): its near cache follows the store's
     * stream and would never show the injected record, which is what this test watches the
     * cache-node hold and then give up. */
    const char *env[] = {"RATE_LIMIT_WRITES=0", "SYNC_HEARTBEAT_LIMIT_MS=1000", "STORE_HUGZ_MS=200",
                         "REQUEST_TIMEOUT_MS=500", "NEAR_CACHE_BYTES=0", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    char auth[1024];
    th_auth_header(auth, sizeof auth, "alice", NULL);
    th_resp_t r;
    ck_assert_int_eq(th_http(n.port, "PUT", "/api/v2/presence/alice", auth, "{\"status\":\"online\"}", 19, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    char st[32];
    uint64_t v1, v;
    ck_assert_int_eq(s_gw_get(n.port, "alice", st, sizeof st, &v1), 200);
    ck_assert_str_eq(st, "online");

    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, n.cache_eps), 0);
    proto_record_t rec;
    ck_assert_int_eq(th_zc_get(&z, "alice", &rec, NULL), PROTO_OK);
    /* A cache-node reads through to the store for 2 x REQUEST_TIMEOUT_MS after it starts: wait
     * until it serves from its cache (what an APPLY feeds). */
    ck_assert_msg(th_wait_for(s_cache_serves, &z, 5000), "the cache-node never served from its cache");
    uint64_t seq = 0;
    ck_assert_int_eq(th_zc_stat(&z, "sync_sequence", &seq), 0);
    ck_assert_uint_eq(seq, v1);

    /* Far beyond what the store has acknowledged: refused, naming the rule; nothing changes. */
    char msg[256], want[256];
    rec.version = seq + 1000000;
    ck_assert_int_eq(s_apply(&z, &rec, msg, sizeof msg), PROTO_EBADREQ);
    snprintf(want, sizeof want, "apply: version %llu is beyond the store's sequence (%llu)",
             (unsigned long long)(seq + 1000000), (unsigned long long)seq);
    ck_assert_str_eq(msg, want);
    ck_assert_int_eq(s_gw_get(n.port, "alice", st, sizeof st, &v), 200);
    ck_assert_str_eq(st, "online");
    ck_assert_uint_eq(v, v1);

    /* Within the slack: taken on trust (read-your-writes) -- until the store says otherwise. */
    rec.version = seq + 50;
    rec.status = PRESENCE_BUSY;
    proto_record_set_msg(&rec, "injected", 8);
    ck_assert_int_eq(s_apply(&z, &rec, msg, sizeof msg), PROTO_OK);
    ck_assert_int_eq(s_gw_get(n.port, "alice", st, sizeof st, &v), 200);
    ck_assert_str_eq(st, "busy");
    ck_assert_uint_eq(v, seq + 50);
    /* An acknowledged admin write: the store's version is below the injected one, and wins. */
    th_auth_header(auth, sizeof auth, "ops", "presence:admin");
    ck_assert_int_eq(th_http(n.port, "PUT", "/api/v2/presence/alice", auth, "{\"status\":\"away\"}", 17, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    want_get_t w = {n.port, "alice", 200, "away"};
    uint64_t t0 = th_now_ms();
    ck_assert_msg(th_wait_for(s_get_is, &w, 5000), "the injected record still hides the acknowledged write");
    uint64_t took = th_now_ms() - t0;
    ck_assert_int_eq(s_gw_get(n.port, "alice", st, sizeof st, &v), 200);
    ck_assert_str_eq(st, "away");
    ck_assert_uint_eq(v, v1 + 1);
    uint64_t refuted = 0;
    ck_assert_int_eq(th_zc_stat(&z, "cache_apply_refuted_total", &refuted), 0);
    ck_assert_uint_eq(refuted, 1);

    /* A user the store never had: gone after the confirmation window (404). */
    ck_assert_int_eq(th_zc_stat(&z, "sync_sequence", &seq), 0);
    proto_record_set_uid(&rec, "ghost", 5);
    rec.version = seq + 10;
    ck_assert_int_eq(s_apply(&z, &rec, msg, sizeof msg), PROTO_OK);
    want_get_t g = {n.port, "ghost", 404, NULL};
    ck_assert_msg(th_wait_for(s_get_is, &g, 5000), "a record the store never had is still served");
    ck_assert_int_eq(th_zc_stat(&z, "cache_apply_refuted_total", &refuted), 0);
    ck_assert_uint_eq(refuted, 2);
    uint64_t rejected = 0;
    ck_assert_int_eq(th_zc_stat(&z, "cache_apply_rejected_total", &rejected), 0);
    ck_assert_uint_eq(rejected, 1);
    fprintf(stderr, "integ_hostile: an injected APPLY hid the acknowledged write for %llu ms (window 1000 ms)\n",
            (unsigned long long)took);
    th_zc_close(&z);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== the leaf link requires CurveZMQ ============================================================ */

static bool s_log_has(const th_proc_t *p, const char *text)
{
    FILE *f = fopen(p->err_path, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

START_TEST(test_center_curve)
{
    const char *dir = th_tmpdir();
    ck_assert_ptr_nonnull(dir);
    int port = th_free_port_pair();
    ck_assert_int_gt(port, 0);
    th_proc_t *s = th_proc("store-node", "store-node");
    th_env(s, "DATA_DIR", "%s", dir);
    th_env(s, "STORE_CMD_ENDPOINT", "ipc://%s/cmd.sock", dir);
    th_env(s, "STORE_PUB_ENDPOINT", "ipc://%s/pub.sock", dir);
    th_env(s, "CENTER_PORT", "%d", port);
    ck_assert_int_eq(th_start(s, 10000), -1);
    ck_assert(WIFEXITED(s->status));
    ck_assert_int_eq(WEXITSTATUS(s->status), 2);
    ck_assert(s_log_has(s, "CENTER_PORT: the leaf link needs CurveZMQ: set CURVE_SERVER_SECRET_KEY and "
                           "CURVE_ALLOWED_CLIENTS (presence-keygen makes keys), or CENTER_INSECURE=true on a network "
                           "you trust"));
    /* Asked for explicitly: a plain link, on loopback, with a warning. */
    th_proc_t *s2 = th_proc("store-node", "store-node");
    for (int i = 0; i < s->nenv; i++)
        s2->env[s2->nenv++] = strdup(s->env[i]);
    th_env(s2, "CENTER_INSECURE", "true");
    ck_assert_int_eq(th_start(s2, 10000), 0);
    char want[160];
    snprintf(want, sizeof want, "CENTER_INSECURE=true: the leaf link tcp://127.0.0.1:%d (and +1) has no CurveZMQ", port);
    ck_assert(s_log_has(s2, want));
    snprintf(want, sizeof want, "center=tcp://127.0.0.1:%d curve=off", port);
    ck_assert(s_log_has(s2, want));
    /* The relay: no keys, no start ... */
    th_proc_t *r = th_proc("sync-relay", "sync-relay");
    th_env(r, "DATA_DIR", "%s", dir);
    th_env(r, "CENTER_ENDPOINT", "tcp://127.0.0.1:%d", port);
    th_env(r, "RELAY_CMD_ENDPOINT", "ipc://%s/rcmd.sock", dir);
    th_env(r, "RELAY_PUB_ENDPOINT", "ipc://%s/rpub.sock", dir);
    ck_assert_int_eq(th_start(r, 10000), -1);
    ck_assert(WIFEXITED(r->status));
    ck_assert_int_eq(WEXITSTATUS(r->status), 2);
    ck_assert(s_log_has(r, "CENTER_ENDPOINT: the link to the center needs CurveZMQ: set CURVE_SERVER_PUBLIC_KEY, "
                           "CURVE_PUBLIC_KEY and CURVE_SECRET_KEY, or CENTER_INSECURE=true on a network you trust"));
    /* ... unless asked for. */
    th_proc_t *r2 = th_proc("sync-relay", "sync-relay");
    for (int i = 0; i < r->nenv; i++)
        r2->env[r2->nenv++] = strdup(r->env[i]);
    th_env(r2, "CENTER_INSECURE", "true");
    ck_assert_int_eq(th_start(r2, 10000), 0);
    ck_assert(s_log_has(r2, "CENTER_INSECURE=true: the link to tcp://127.0.0.1:"));
    ck_assert_int_eq(th_stop(r2, 10000), 0);
    ck_assert_int_eq(th_stop(s2, 10000), 0);
}
END_TEST

/* ==== the front door: heads, bodies, connections, file descriptors ============================= */

/* Send req on a new connection and read the whole answer (until the server closes, or timeout).
 * Returns the status (-1: none); the answer in out; *ms: how long until the status line came. */
static int s_exchange(int port, const char *req, size_t len, char *out, size_t cap, int timeout_ms, uint64_t *ms)
{
    int fd = s_connect(port);
    ck_assert_int_ge(fd, 0);
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    size_t got = 0;
    out[0] = '\0';
    uint64_t deadline = t0 + (uint64_t)timeout_ms, first = 0;
    while (got + 1 < cap && th_now_ms() < deadline) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 20) <= 0)
            continue;
        ssize_t r = recv(fd, out + got, cap - 1 - got, 0);
        if (r <= 0)
            break;
        if (!first)
            first = th_now_ms();
        got += (size_t)r;
        out[got] = '\0';
    }
    close(fd);
    if (ms)
        *ms = first ? first - t0 : 0;
    int st = -1;
    sscanf(out, "HTTP/1.1 %d", &st);
    return st;
}

static const char *s_body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

START_TEST(test_front_heads_and_bodies)
{
    th_node_t n;
    const char *env[] = {"HTTP_HEADER_TIMEOUT_MS=500", "HTTP_HEADER_MAX=8192", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    char out[16384], req[20000];
    uint64_t ms;

    /* Slowloris: a head still incomplete after HTTP_HEADER_TIMEOUT_MS is 408, then closed. */
    int fd = s_connect(n.port);
    uint64_t t0 = th_now_ms();
    const char *start = "GET /health HTTP/1.1\r\nHost: a\r\n";
    ck_assert_int_eq(send(fd, start, strlen(start), 0), (ssize_t)strlen(start));
    size_t got = 0;
    out[0] = '\0';
    for (int i = 0; i < 40 && !strstr(out, "}"); i++) {
        send(fd, "X", 1, MSG_NOSIGNAL);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            ssize_t r = recv(fd, out + got, sizeof out - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            out[got] = '\0';
        }
    }
    uint64_t held = th_now_ms() - t0;
    close(fd);
    ck_assert_msg(strncmp(out, "HTTP/1.1 408 ", 13) == 0, "%s", out);
    ck_assert_str_eq(s_body_of(out), "{\"success\":false,\"error\":\"request header timeout: the request head must arrive "
                                     "within 500 ms (HTTP_HEADER_TIMEOUT_MS)\"}");
    ck_assert_uint_ge(held, 450);
    ck_assert_uint_lt(held, 2500);

    /* A head over HTTP_HEADER_MAX: 431. */
    int k = snprintf(req, sizeof req, "GET /health HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(req + k, 'a', 9000);
    k += 9000;
    k += snprintf(req + k, sizeof req - (size_t)k, "\r\n\r\n");
    ck_assert_int_eq(s_exchange(n.port, req, (size_t)k, out, sizeof out, 5000, NULL), 431);
    ck_assert_str_eq(s_body_of(out),
                     "{\"success\":false,\"error\":\"request header too large: at most 8192 bytes (HTTP_HEADER_MAX)\"}");

    /* A write announcing 1 MB without a token: 401 at once -- the body is never sent. */
    k = snprintf(req, sizeof req, "PUT /api/v2/presence/alice HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
    ck_assert_int_eq(s_exchange(n.port, req, (size_t)k, out, sizeof out, 5000, &ms), 401);
    ck_assert_str_eq(s_body_of(out), "{\"success\":false,\"error\":\"missing authorization header\"}");
    ck_assert_msg(strstr(out, "\r\nwww-authenticate: Bearer realm=\"presence\", error=\"invalid_token\"\r\n"), "%s", out);
    ck_assert_uint_lt(ms, 1000);
    k = snprintf(req, sizeof req,
                 "PUT /api/v2/presence/alice HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x.y.z\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    ck_assert_int_eq(s_exchange(n.port, req, (size_t)k, out, sizeof out, 5000, NULL), 401);
    ck_assert_str_eq(s_body_of(out), "{\"success\":false,\"error\":\"invalid token\"}");
    /* With a token, 1 MB announced: 413 at once. */
    char auth[1024];
    th_auth_header(auth, sizeof auth, "alice", NULL);
    k = snprintf(req, sizeof req, "PUT /api/v2/presence/alice HTTP/1.1\r\nHost: a\r\n%sContent-Length: 1000000\r\n\r\n",
                 auth);
    ck_assert_int_eq(s_exchange(n.port, req, (size_t)k, out, sizeof out, 5000, &ms), 413);
    ck_assert_str_eq(s_body_of(out), "{\"success\":false,\"error\":\"request body too large (at most 65536 bytes)\"}");
    ck_assert_uint_lt(ms, 1000);
    /* An anonymous batch read (no token needed) over the body cap: 413 at once too. */
    k = snprintf(req, sizeof req, "POST /api/v2/presence/batch HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n");
    ck_assert_int_eq(s_exchange(n.port, req, (size_t)k, out, sizeof out, 5000, NULL), 413);
    ck_assert_str_eq(s_body_of(out), "{\"success\":false,\"error\":\"request body too large (at most 65536 bytes)\"}");
    /* A good write, then a second request on the same connection: h2o serves both. */
    th_conn_t c;
    ck_assert_int_eq(th_conn_open(&c, n.port), 0);
    th_resp_t r;
    ck_assert_int_eq(th_conn_request(&c, "PUT", "/api/v2/presence/alice", auth, "{\"status\":\"away\"}", 17, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    ck_assert_int_eq(th_conn_request(&c, "GET", "/api/v2/presence/alice", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"status\":\"away\""), "%s", r.body);
    th_resp_free(&r);
    th_conn_close(&c);
    ck_assert_int_eq(s_metric(n.port, "http_heads_refused_total"), 6);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A raw connection that sends GET /health and reads its 200 (so it is accepted and counted). */
static int s_held_conn(int port)
{
    int fd = s_connect(port);
    const char *q = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(send(fd, q, strlen(q), 0), (ssize_t)strlen(q));
    char buf[4096];
    s_read_until(fd, buf, sizeof buf, "}", 5000);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "%s", buf);
    return fd;
}

static long s_conn_metric(th_conn_t *c, const char *name)
{
    th_resp_t r;
    ck_assert_int_eq(th_conn_request(c, "GET", "/metrics", NULL, NULL, 0, &r, 5000), 0);
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = r.body ? strstr(r.body, pat) : NULL;
    long v = p ? atol(p + strlen(pat)) : -1;
    th_resp_free(&r);
    return v;
}

START_TEST(test_max_connections)
{
    th_node_t n;
    const char *env[] = {"MAX_CONNECTIONS=20", "GATEWAY_THREADS=2", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_conn_t c;
    ck_assert_int_eq(th_conn_open(&c, n.port), 0);
    ck_assert_int_eq(s_conn_metric(&c, "http_connections"), 1);
    int held[19];
    for (int i = 0; i < 19; i++)
        held[i] = s_held_conn(n.port);
    ck_assert_int_eq(s_conn_metric(&c, "http_connections"), 20);
    /* The 21st waits in the backlog: no answer while 20 are open. */
    int fd = s_connect(n.port);
    const char *q = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(send(fd, q, strlen(q), 0), (ssize_t)strlen(q));
    char buf[4096];
    ck_assert_uint_eq(s_read_until(fd, buf, sizeof buf, "}", 1000), 0);
    ck_assert_int_ge(s_conn_metric(&c, "http_connections_refused_total"), 1);
    ck_assert_int_eq(s_conn_metric(&c, "http_connections"), 20);
    ck_assert(s_log_has(n.gw, "MAX_CONNECTIONS=20 reached: accepting paused (new clients wait)"));
    /* One leaves: the waiting one is served. */
    close(held[0]);
    uint64_t t0 = th_now_ms();
    s_read_until(fd, buf, sizeof buf, "}", 3000);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "the waiting client was not served: '%s'", buf);
    fprintf(stderr, "integ_hostile: at MAX_CONNECTIONS a waiting client was served %llu ms after one left\n",
            (unsigned long long)(th_now_ms() - t0));
    close(fd);
    for (int i = 1; i < 19; i++)
        close(held[i]);
    th_conn_close(&c);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

static long s_cpu_ms(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long ut = -1, st = -1;
    if (fgets(line, sizeof line, f)) {
        const char *p = strrchr(line, ')');
        /* after "pid (comm)": state is field 3; utime 14, stime 15 */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
            ut = st = -1;
    }
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return ut < 0 ? -1 : (ut + st) * 1000 / hz;
}

START_TEST(test_emfile_no_spin)
{
    th_node_t n;
    const char *env[] = {"MAX_CONNECTIONS=100000", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_conn_t c;
    ck_assert_int_eq(th_conn_open(&c, n.port), 0);
    ck_assert_int_eq(s_conn_metric(&c, "http_connections"), 1);
    /* Leave the gateway 8 spare descriptors. */
    struct rlimit old, low;
    ck_assert_int_eq(prlimit(n.gw->pid, RLIMIT_NOFILE, NULL, &old), 0);
    low.rlim_cur = (rlim_t)(s_fds(n.gw->pid) + 8);
    low.rlim_max = old.rlim_max;
    ck_assert_int_eq(prlimit(n.gw->pid, RLIMIT_NOFILE, &low, NULL), 0);
    enum { NC = 40 };
    int fds[NC];
    const char *q = "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    for (int i = 0; i < NC; i++) {
        fds[i] = s_connect(n.port);
        ck_assert_int_eq(send(fds[i], q, strlen(q), 0), (ssize_t)strlen(q));
    }
    /* The listener stays readable while accept() fails: the loop must not spin. */
    long cpu0 = s_cpu_ms(n.gw->pid);
    uint64_t t0 = th_now_ms();
    while (th_now_ms() - t0 < 2000)
        poll(NULL, 0, 100); /* the measurement window, not a synchronisation */
    long cpu = s_cpu_ms(n.gw->pid) - cpu0;
    long paused = s_conn_metric(&c, "http_accept_paused_total");
    fprintf(stderr, "integ_hostile: out of fds for 2 s with %d clients waiting: gateway CPU %ld ms, %ld pauses\n", NC,
            cpu, paused);
    ck_assert_int_ge(paused, 1);
    ck_assert_msg(cpu < 400, "the gateway used %ld ms of CPU in 2 s out of descriptors (a spin)", cpu);
    ck_assert(s_log_has(n.gw, "accept: Too many open files: accepting paused for 100 ms"));
    /* Descriptors back: every waiting client is served. */
    ck_assert_int_eq(prlimit(n.gw->pid, RLIMIT_NOFILE, &old, NULL), 0);
    for (int i = 0; i < NC; i++) {
        char buf[4096];
        s_read_until(fds[i], buf, sizeof buf, "}", 5000);
        ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "client %d: '%s'", i, buf);
        close(fds[i]);
    }
    th_conn_close(&c);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== HTTP/2 Rapid Reset ======================================================================== */

/* Reads the cache-node did for gateways: hits, misses and read-throughs. */
static uint64_t s_cache_reads(th_zc_t *z)
{
    uint64_t h = 0, m = 0, b = 0;
    ck_assert_int_eq(th_zc_stat(z, "cache_hits_total", &h), 0);
    ck_assert_int_eq(th_zc_stat(z, "cache_misses_total", &m), 0);
    ck_assert_int_eq(th_zc_stat(z, "cache_bypass_reads_total", &b), 0);
    return h + m + b;
}

START_TEST(test_h2_rapid_reset)
{
    th_node_t n;
    const char *env[] = {"HTTP2_RESET_BUDGET=100", "HTTP2_RESETS_PER_S=20", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, n.cache_eps), 0);
    uint64_t reads0 = s_cache_reads(&z);

    /* A client that cancels 50 streams (a page navigated away): within budget, kept. */
    th_h2_t *h = th_h2_open(n.port);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(th_h2_rapid_reset(h, "/api/v2/presence/ok", 50), 50);
    ck_assert(!th_h2_wait_closed(h, 500));
    th_h2_close(&h);
    s_expect_metric(n.port, "http2_streams_cancelled_total", 50, 2000);
    ck_assert_int_eq(s_metric(n.port, "http2_connections_cut_total"), 0);

    /* The attacker: 20,000 HEADERS+RST_STREAM pairs as fast as it can. Cut; the lookups it
     * caused stay near its budget. */
    h = th_h2_open(n.port);
    ck_assert_ptr_nonnull(h);
    uint64_t t0 = th_now_ms();
    uint64_t sent = th_h2_rapid_reset(h, "/api/v2/presence/rr", 20000);
    ck_assert_msg(th_h2_closed(h) || th_h2_wait_closed(h, 3000), "the attacker's connection was not cut (%llu pairs)",
                  (unsigned long long)sent);
    uint64_t took = th_now_ms() - t0;
    th_h2_close(&h);
    s_expect_metric(n.port, "http2_connections_cut_total", 1, 2000);
    uint64_t reads = s_cache_reads(&z) - reads0;
    long cancelled = s_metric(n.port, "http2_streams_cancelled_total");
    fprintf(stderr, "integ_hostile: rapid reset: %llu pairs sent before the cut (%llu ms), %ld streams cancelled, "
                    "%llu cache reads (50 of them the benign client's)\n",
            (unsigned long long)sent, (unsigned long long)took, cancelled, (unsigned long long)reads);
    ck_assert_uint_le(reads, 50 + 100 + 64); /* budget + one write of pairs at most */
    ck_assert_int_le(cancelled, 50 + 100 + 64);
    char want[200];
    snprintf(want, sizeof want, "HTTP/2 connection from 127.0.0.1 cut (1 this turn): more than HTTP2_RESET_BUDGET=100 "
                                "streams cancelled (refilled at HTTP2_RESETS_PER_S=20): rapid reset");
    ck_assert(s_log_has(n.gw, want));
    /* Its address is in the penalty box: a new HTTP/2 connection is closed at its preface
     * (reconnecting costs the attacker a connection, not the gateway a budget of lookups) ... */
    uint64_t reads1 = s_cache_reads(&z);
    h = th_h2_open(n.port);
    ck_assert_ptr_nonnull(h);
    th_h2_rapid_reset(h, "/api/v2/presence/rr", 1000);
    ck_assert(th_h2_closed(h) || th_h2_wait_closed(h, 2000));
    th_h2_close(&h);
    s_expect_metric(n.port, "http2_connections_refused_total", 1, 2000);
    ck_assert_uint_eq(s_cache_reads(&z) - reads1, 0);
    ck_assert(s_log_has(n.gw, "HTTP/2 connection from 127.0.0.1 refused: its last was cut for rapid reset (10 s penalty)"));
    /* ... while HTTP/1 from it is still served. */
    th_resp_t r;
    ck_assert_int_eq(th_http(n.port, "GET", "/health", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    /* Cancelled requests are counted (499, "other"), not left in flight. */
    s_expect_metric(n.port, "http_requests_inflight", 1, 2000); /* the /metrics request itself */
    th_zc_close(&z);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_hostile");
    TCase *tc = tcase_create("sse");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_sse_departed);
    tcase_add_test(tc, test_sse_limits);
    tcase_add_test(tc, test_sse_coalesce);
    tcase_add_test(tc, test_sse_burst_not_dropped);
    tcase_add_test(tc, test_sse_nonreader_released);
    suite_add_tcase(s, tc);
    tc = tcase_create("trust");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_trust_proxy);
    tcase_add_test(tc, test_apply_store_wins);
    tcase_add_test(tc, test_center_curve);
    suite_add_tcase(s, tc);
    tc = tcase_create("front");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_front_heads_and_bodies);
    tcase_add_test(tc, test_max_connections);
    tcase_add_test(tc, test_emfile_no_spin);
    suite_add_tcase(s, tc);
    tc = tcase_create("h2");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_h2_rapid_reset);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
