/* soakload.c -- the mixed load of the soak test (tests/hardening/soak.sh), with exact counting.
 *
 *   soakload --port P [--leaf-port L] --secret S --seconds N [--keys K] [--rate R] [--threads T]
 *            [--watchers W] [--csv FILE] [--interval S] [--only OP]
 *
 * T worker threads share a paced request rate R (req/s) over keep-alive HTTP/1.1 connections to
 * the center gateway (and the leaf gateway when given). The mix, over a bounded key space of K
 * users (ids u0..u{2K-1}; only the first K are ever written, so half the reads are misses):
 *   GET one (hit or miss) 26%, GET ?users= (10 ids) 8%, PUT (self token, random status and
 *   message, 10% with a 2-5 s ttl so the sweeper expires them) 18%, heartbeat 16%, DELETE 4%,
 *   batch read (50 ids) 4%, batch write (admin, 20 records) 2%, bulk heartbeats (admin, 20 ids)
 *   2%, and 20% of all of these through the leaf.
 * One more thread keeps W SSE watch streams (GET /api/v2/presence/watch, 20 ids each, half on the
 * leaf) open for 2-15 s each, then closes and reopens them, half of the time resuming with
 * Last-Event-ID.
 *
 * --only get|mget|put|beat|del|bread|bwrite|bbeat runs one operation alone (diagnosis).
 *
 * Every response is classified: expected (2xx, and 404 where a miss is possible), 429, other 4xx,
 * 5xx, transport errors (connect/reset/timeout), and a 200 whose body is not about the asked user.
 * Every `interval` seconds a CSV line of cumulative counters and the interval's latency
 * percentiles goes to FILE; at the end one summary line goes to stdout:
 *
 *   soakload: requests N expected N s4xx N s429 N s5xx N neterr N badbody N sse_streams N
 *             sse_events N sse_errors N
 *
 * Exit status 0 (the caller judges the numbers), 2 on bad usage.
 */
#include "cli.h"
#include "gw_lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WATCHERS 256
#define HIST_BUCKETS 64

static struct {
    int port, leaf_port;
    const char *secret;
    double seconds;
    int keys, threads, watchers;
    double rate, interval;
    const char *csv;
} O = {.keys = 20000, .threads = 4, .watchers = 20, .rate = 400, .interval = 5};

static _Atomic uint64_t n_requests, n_expected, n_4xx, n_429, n_5xx, n_neterr, n_badbody;
static _Atomic uint64_t n_sse_streams, n_sse_events, n_sse_errors;
static _Atomic uint64_t hist[HIST_BUCKETS]; /* latency, log2 microseconds; reset per interval */
static _Atomic uint64_t by_status[600];
static atomic_int s_stop;
static char *s_admin_hdr;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t s_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static char *s_token(const char *sub, const char *scope)
{
    int64_t now = (int64_t)time(NULL);
    /* Valid for the whole run and then some. */
    return gw_auth_sign((const unsigned char *)O.secret, strlen(O.secret), JWT_ALG_HS256, "presence-service", sub,
                        scope, now, now + (int64_t)O.seconds + 7200);
}

/* ==== a keep-alive HTTP/1.1 connection ======================================================== */

typedef struct hconn {
    int fd, port;
    char buf[1 << 17];
    size_t have;
} hconn_t;

static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void s_hclose(hconn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->have = 0;
}

static int s_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *s_header(const char *head, size_t hlen, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = head, *end = head + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            *vlen = (size_t)(eol - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* One request; *status and the body (borrowed until the next call) on success. Returns 0, or -1
 * on a transport error (the connection is closed; the next call reconnects). */
static int s_request(hconn_t *c, const char *method, const char *path, const char *hdrs, const char *body, size_t blen,
                     int *status, const char **rbody, size_t *rblen)
{
    if (c->fd < 0) {
        c->fd = s_connect(c->port);
        c->have = 0;
        if (c->fd < 0)
            return -1;
    }
    char head[4096];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: soak\r\n%sContent-Length: %zu\r\n\r\n", method, path,
                     hdrs ? hdrs : "", blen);
    if (n < 0 || (size_t)n >= sizeof head || s_send_all(c->fd, head, (size_t)n) < 0 ||
        (blen && s_send_all(c->fd, body, blen) < 0))
        goto fail;
    char *eoh;
    for (;;) {
        c->buf[c->have] = '\0';
        if ((eoh = strstr(c->buf, "\r\n\r\n")))
            break;
        if (c->have + 1 >= sizeof c->buf)
            goto fail;
        ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have, 0);
        if (r <= 0)
            goto fail;
        c->have += (size_t)r;
    }
    size_t hlen = (size_t)(eoh - c->buf) + 4;
    if (sscanf(c->buf, "HTTP/1.%*d %d", status) != 1)
        goto fail;
    size_t vl;
    const char *v = s_header(c->buf, hlen, "content-length", &vl);
    size_t clen = v ? strtoul(v, NULL, 10) : 0;
    bool close_after = (v = s_header(c->buf, hlen, "connection", &vl)) && vl == 5 && strncasecmp(v, "close", 5) == 0;
    if (strcmp(method, "HEAD") == 0)
        clen = 0;
    if (hlen + clen + 1 > sizeof c->buf)
        goto fail;
    while (c->have < hlen + clen) {
        ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have, 0);
        if (r <= 0)
            goto fail;
        c->have += (size_t)r;
    }
    /* Move the body to the front so it stays valid; keep what follows (nothing, normally). */
    static __thread char out[1 << 17];
    memcpy(out, c->buf + hlen, clen);
    out[clen] = '\0';
    memmove(c->buf, c->buf + hlen + clen, c->have - hlen - clen);
    c->have -= hlen + clen;
    *rbody = out;
    *rblen = clen;
    if (close_after)
        s_hclose(c);
    return 0;
fail:
    s_hclose(c);
    return -1;
}

/* ==== workers ================================================================================== */

static void s_observe(double t0)
{
    uint64_t us = (uint64_t)((s_now() - t0) * 1e6);
    int b = 0;
    while (us > 1 && b < HIST_BUCKETS - 1) {
        us >>= 1;
        b++;
    }
    atomic_fetch_add(&hist[b], 1);
}

enum { OP_GET, OP_MGET, OP_PUT, OP_BEAT, OP_DEL, OP_BREAD, OP_BWRITE, OP_BBEAT, OP_N };
static int s_weights[OP_N] = {26, 8, 18, 16, 4, 4, 2, 2};
static const char *const s_opnames[OP_N] = {"get", "mget", "put", "beat", "del", "bread", "bwrite", "bbeat"};

typedef struct worker {
    pthread_t tid;
    int idx;
    uint64_t rng;
    hconn_t center, leaf;
} worker_t;

static void s_uid(char *out, size_t len, uint64_t k)
{
    snprintf(out, len, "u%llu", (unsigned long long)k);
}

static void s_one(worker_t *w)
{
    uint64_t r = s_rand(&w->rng);
    bool via_leaf = O.leaf_port && r % 5 == 0;
    hconn_t *c = via_leaf ? &w->leaf : &w->center;
    int total = 0;
    for (int i = 0; i < OP_N; i++)
        total += s_weights[i];
    int pick = (int)(s_rand(&w->rng) % (uint64_t)total), op = 0;
    for (int acc = 0; op < OP_N; op++) {
        acc += s_weights[op];
        if (pick < acc)
            break;
    }
    char path[1024], uid[32], hdr[1024], body[8192];
    uint64_t key = s_rand(&w->rng) % (uint64_t)O.keys;
    s_uid(uid, sizeof uid, key);
    const char *method = "GET", *h = NULL;
    size_t blen = 0;
    bool miss_ok = false;
    const char *want_uid = NULL;
    char *tok = NULL;
    switch (op) {
    case OP_GET:
        s_uid(uid, sizeof uid, s_rand(&w->rng) % (uint64_t)(2 * O.keys));
        snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
        miss_ok = true;
        want_uid = uid;
        break;
    case OP_MGET: {
        int k = snprintf(path, sizeof path, "/api/v2/presence?users=");
        for (int i = 0; i < 10; i++)
            k += snprintf(path + k, sizeof path - (size_t)k, "%su%llu", i ? "," : "",
                          (unsigned long long)(s_rand(&w->rng) % (uint64_t)(2 * O.keys)));
        break;
    }
    case OP_PUT:
    case OP_BEAT:
    case OP_DEL: {
        tok = s_token(uid, NULL);
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok ? tok : "");
        h = hdr;
        snprintf(path, sizeof path, "/api/v2/presence/%s%s", uid, op == OP_BEAT ? "/heartbeat" : "");
        if (op == OP_PUT) {
            static const char *const st[] = {"online", "away", "busy", "offline"};
            char msg[128];
            int ml = (int)(s_rand(&w->rng) % 100);
            for (int i = 0; i < ml; i++)
                msg[i] = (char)('a' + s_rand(&w->rng) % 26);
            msg[ml] = '\0';
            unsigned ttl = s_rand(&w->rng) % 10 == 0 ? 2 + (unsigned)(s_rand(&w->rng) % 4) : 3600;
            blen = (size_t)snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\",\"ttl\":%u}",
                                    st[s_rand(&w->rng) % 4], msg, ttl);
            method = "PUT";
            want_uid = uid;
        } else if (op == OP_BEAT) {
            method = "POST";
            want_uid = uid;
        } else {
            method = "DELETE";
            miss_ok = true;
        }
        break;
    }
    case OP_BREAD: {
        snprintf(path, sizeof path, "/api/v2/presence/batch");
        int k = snprintf(body, sizeof body, "{\"user_ids\":[");
        for (int i = 0; i < 50; i++)
            k += snprintf(body + k, sizeof body - (size_t)k, "%s\"u%llu\"", i ? "," : "",
                          (unsigned long long)(s_rand(&w->rng) % (uint64_t)(2 * O.keys)));
        k += snprintf(body + k, sizeof body - (size_t)k, "]}");
        blen = (size_t)k;
        method = "POST";
        break;
    }
    case OP_BWRITE:
    case OP_BBEAT: {
        snprintf(path, sizeof path, "/api/v2/presence/batch");
        h = s_admin_hdr;
        int k = snprintf(body, sizeof body, op == OP_BWRITE ? "{\"presences\":[" : "{\"heartbeats\":[");
        for (int i = 0; i < 20; i++) {
            unsigned long long u = s_rand(&w->rng) % (uint64_t)O.keys;
            if (op == OP_BWRITE)
                k += snprintf(body + k, sizeof body - (size_t)k,
                              "%s{\"user_id\":\"u%llu\",\"status\":\"away\",\"message\":\"batch %d\"}", i ? "," : "", u,
                              w->idx);
            else
                k += snprintf(body + k, sizeof body - (size_t)k, "%s\"u%llu\"", i ? "," : "", u);
        }
        k += snprintf(body + k, sizeof body - (size_t)k, "]}");
        blen = (size_t)k;
        method = "POST";
        break;
    }
    }
    int status = 0;
    const char *rb;
    size_t rbl;
    double t0 = s_now();
    int rc = s_request(c, method, path, h, body, blen, &status, &rb, &rbl);
    s_observe(t0);
    free(tok);
    atomic_fetch_add(&n_requests, 1);
    if (rc < 0) {
        atomic_fetch_add(&n_neterr, 1);
        return;
    }
    if (status > 0 && status < 600)
        atomic_fetch_add(&by_status[status], 1);
    if (status >= 500) {
        atomic_fetch_add(&n_5xx, 1);
    } else if (status == 429) {
        atomic_fetch_add(&n_429, 1);
    } else if ((status >= 200 && status < 300) || (status == 404 && miss_ok)) {
        atomic_fetch_add(&n_expected, 1);
        if (status == 200 && want_uid) {
            char pat[64];
            snprintf(pat, sizeof pat, "\"user_id\":\"%s\"", want_uid);
            if (!strstr(rb, pat))
                atomic_fetch_add(&n_badbody, 1);
        }
    } else {
        atomic_fetch_add(&n_4xx, 1);
    }
}

static void *s_worker(void *arg)
{
    worker_t *w = arg;
    w->center.fd = w->leaf.fd = -1;
    w->center.port = O.port;
    w->leaf.port = O.leaf_port;
    double per = (double)O.threads / O.rate, next = s_now(), end = next + O.seconds;
    while (!atomic_load(&s_stop)) {
        double now = s_now();
        if (now >= end)
            break;
        if (now < next) {
            double d = next - now;
            struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
            nanosleep(&ts, NULL); /* pacing to the target rate */
            continue;
        }
        next += per;
        if (next < now - 1)
            next = now; /* fell behind (slow answers): do not burst to catch up */
        s_one(w);
    }
    s_hclose(&w->center);
    s_hclose(&w->leaf);
    return NULL;
}

/* ==== SSE watchers ============================================================================= */

typedef struct watcher {
    int fd, port;
    bool ok; /* got the 200 */
    double until;
    uint64_t last_id;
    char tail[32];
    size_t tlen;
    char line[64];
    size_t llen;
} watcher_t;

static void s_watch_open(watcher_t *wa, uint64_t *rng)
{
    wa->fd = s_connect(wa->port);
    wa->ok = false;
    wa->tlen = wa->llen = 0;
    wa->until = s_now() + 2 + (double)(s_rand(rng) % 13000) / 1000.0;
    if (wa->fd < 0) {
        atomic_fetch_add(&n_sse_errors, 1);
        return;
    }
    char req[2048], resume[64] = "";
    int k = snprintf(req, sizeof req, "GET /api/v2/presence/watch?users=");
    for (int i = 0; i < 20; i++)
        k += snprintf(req + k, sizeof req - (size_t)k, "%su%llu", i ? "," : "",
                      (unsigned long long)(s_rand(rng) % (uint64_t)O.keys));
    if (wa->last_id && s_rand(rng) % 2)
        snprintf(resume, sizeof resume, "Last-Event-ID: %llu\r\n", (unsigned long long)wa->last_id);
    k += snprintf(req + k, sizeof req - (size_t)k, " HTTP/1.1\r\nHost: soak\r\nAccept: text/event-stream\r\n%s\r\n",
                  resume);
    if (s_send_all(wa->fd, req, (size_t)k) < 0) {
        close(wa->fd);
        wa->fd = -1;
        atomic_fetch_add(&n_sse_errors, 1);
    }
}

/* Count "event: presence" lines and remember the last "id: N" across reads. */
static void s_watch_feed(watcher_t *wa, const char *p, size_t n)
{
    size_t i = 0;
    if (!wa->ok) {
        /* The status line comes first. */
        if (n < 12 || strncmp(p, "HTTP/1.1 200", 12) != 0) {
            atomic_fetch_add(&n_sse_errors, 1);
            close(wa->fd);
            wa->fd = -1;
            return;
        }
        wa->ok = true;
        atomic_fetch_add(&n_sse_streams, 1);
    }
    for (; i < n; i++) {
        char ch = p[i];
        if (ch == '\n') {
            wa->line[wa->llen] = '\0';
            if (strncmp(wa->line, "event: presence", 15) == 0)
                atomic_fetch_add(&n_sse_events, 1);
            else if (strncmp(wa->line, "id: ", 4) == 0)
                wa->last_id = strtoull(wa->line + 4, NULL, 10);
            wa->llen = 0;
        } else if (wa->llen + 1 < sizeof wa->line) {
            wa->line[wa->llen++] = ch;
        }
    }
}

static void *s_watchers(void *arg)
{
    (void)arg;
    uint64_t rng = 0x77a7c4e5ull;
    int n = O.watchers > MAX_WATCHERS ? MAX_WATCHERS : O.watchers;
    watcher_t *ws = calloc((size_t)n, sizeof *ws);
    for (int i = 0; i < n; i++) {
        ws[i].port = O.leaf_port && i % 2 ? O.leaf_port : O.port;
        s_watch_open(&ws[i], &rng);
    }
    double end = s_now() + O.seconds;
    struct pollfd pf[MAX_WATCHERS];
    while (!atomic_load(&s_stop) && s_now() < end) {
        int k = 0;
        int map[MAX_WATCHERS];
        double now = s_now();
        for (int i = 0; i < n; i++) {
            if (ws[i].fd >= 0 && now >= ws[i].until) {
                close(ws[i].fd); /* the client goes away */
                ws[i].fd = -1;
            }
            if (ws[i].fd < 0)
                s_watch_open(&ws[i], &rng);
            if (ws[i].fd >= 0) {
                pf[k] = (struct pollfd){.fd = ws[i].fd, .events = POLLIN};
                map[k++] = i;
            }
        }
        if (poll(pf, (nfds_t)k, 200) <= 0)
            continue;
        for (int j = 0; j < k; j++) {
            if (!pf[j].revents)
                continue;
            watcher_t *wa = &ws[map[j]];
            char buf[65536];
            ssize_t r = recv(wa->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                atomic_fetch_add(&n_sse_errors, 1); /* the server ended a stream we still wanted */
                close(wa->fd);
                wa->fd = -1;
                continue;
            }
            if (r > 0)
                s_watch_feed(wa, buf, (size_t)r);
        }
    }
    for (int i = 0; i < n; i++)
        if (ws[i].fd >= 0)
            close(ws[i].fd);
    free(ws);
    return NULL;
}

/* ==== main ===================================================================================== */

static double s_pct(const uint64_t *h, uint64_t total, double q)
{
    if (!total)
        return 0;
    uint64_t want = (uint64_t)((double)total * q), acc = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        acc += h[b];
        if (acc > want)
            return (double)(1ull << b) / 1000.0; /* upper bound of the bucket, ms */
    }
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&s_stop, 1);
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "soakload", "--port P [--leaf-port L] --secret S --seconds N [...]", "Mixed load for make soak (reads, writes, heartbeats, watchers).");
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port"))
            O.port = atoi(v);
        else if (!strcmp(k, "--leaf-port"))
            O.leaf_port = atoi(v);
        else if (!strcmp(k, "--secret"))
            O.secret = v;
        else if (!strcmp(k, "--seconds"))
            O.seconds = atof(v);
        else if (!strcmp(k, "--keys"))
            O.keys = atoi(v);
        else if (!strcmp(k, "--rate"))
            O.rate = atof(v);
        else if (!strcmp(k, "--threads"))
            O.threads = atoi(v);
        else if (!strcmp(k, "--watchers"))
            O.watchers = atoi(v);
        else if (!strcmp(k, "--csv"))
            O.csv = v;
        else if (!strcmp(k, "--interval"))
            O.interval = atof(v);
        else if (!strcmp(k, "--only")) {
            /* one operation only (diagnosis: which part of the mix costs what) */
            int found = -1;
            for (int op = 0; op < OP_N; op++)
                if (!strcmp(v, s_opnames[op]))
                    found = op;
            if (found < 0) {
                fprintf(stderr, "soakload: --only: one of get mget put beat del bread bwrite bbeat\n");
                return 2;
            }
            for (int op = 0; op < OP_N; op++)
                s_weights[op] = op == found ? 1 : 0;
        }
        else {
            fprintf(stderr, "soakload: unknown option %s\n", k);
            return 2;
        }
    }
    if (O.port <= 0 || !O.secret || O.seconds <= 0 || O.keys < 10 || O.threads < 1 || O.threads > 64 || O.rate <= 0) {
        fprintf(stderr, "usage: soakload --port P [--leaf-port L] --secret S --seconds N [--keys K] [--rate R] "
                        "[--threads T] [--watchers W] [--csv FILE] [--interval S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    char *admin = s_token("soak-admin", "presence:admin");
    size_t al = strlen(admin) + 64;
    s_admin_hdr = malloc(al);
    snprintf(s_admin_hdr, al, "Authorization: Bearer %s\r\n", admin);
    free(admin);
    FILE *csv = O.csv ? fopen(O.csv, "w") : NULL;
    if (csv) {
        fprintf(csv, "t_s,requests,expected,s4xx,s429,s5xx,neterr,badbody,sse_streams,sse_events,sse_errors,"
                     "p50_ms,p99_ms\n");
        fflush(csv);
    }
    worker_t *ws = calloc((size_t)O.threads, sizeof *ws);
    for (int i = 0; i < O.threads; i++) {
        ws[i].idx = i;
        ws[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        pthread_create(&ws[i].tid, NULL, s_worker, &ws[i]);
    }
    pthread_t wt;
    pthread_create(&wt, NULL, s_watchers, NULL);
    double t0 = s_now(), next = t0 + O.interval, end = t0 + O.seconds;
    while (!atomic_load(&s_stop)) {
        double now = s_now();
        bool last = now >= end || atomic_load(&s_stop);
        if (now >= next || last) {
            uint64_t h[HIST_BUCKETS], tot = 0;
            for (int b = 0; b < HIST_BUCKETS; b++) {
                h[b] = atomic_exchange(&hist[b], 0);
                tot += h[b];
            }
            if (csv) {
                fprintf(csv, "%.1f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.3f,%.3f\n", now - t0,
                        (unsigned long long)n_requests, (unsigned long long)n_expected, (unsigned long long)n_4xx,
                        (unsigned long long)n_429, (unsigned long long)n_5xx, (unsigned long long)n_neterr,
                        (unsigned long long)n_badbody, (unsigned long long)n_sse_streams,
                        (unsigned long long)n_sse_events, (unsigned long long)n_sse_errors, s_pct(h, tot, 0.5),
                        s_pct(h, tot, 0.99));
                fflush(csv);
            }
            next += O.interval;
            if (last)
                break;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL); /* the reporting tick */
    }
    atomic_store(&s_stop, 1);
    for (int i = 0; i < O.threads; i++)
        pthread_join(ws[i].tid, NULL);
    pthread_join(wt, NULL);
    if (csv)
        fclose(csv);
    printf("soakload: requests %llu expected %llu s4xx %llu s429 %llu s5xx %llu neterr %llu badbody %llu "
           "sse_streams %llu sse_events %llu sse_errors %llu\n",
           (unsigned long long)n_requests, (unsigned long long)n_expected, (unsigned long long)n_4xx,
           (unsigned long long)n_429, (unsigned long long)n_5xx, (unsigned long long)n_neterr,
           (unsigned long long)n_badbody, (unsigned long long)n_sse_streams, (unsigned long long)n_sse_events,
           (unsigned long long)n_sse_errors);
    printf("soakload: statuses");
    for (int s = 0; s < 600; s++)
        if (by_status[s])
            printf(" %d:%llu", s, (unsigned long long)by_status[s]);
    printf("\n");
    free(ws);
    free(s_admin_hdr);
    return 0;
}
