/* wsload.c -- WebSocket load generator: many connections, connect/disconnect rates, delivery latency.
 *
 *   wsload hold  -p PORT -n CONNS [-r RATE] [-d HOLD_S] [-c CLOSE_RATE] [-u PATH] [-T TOKENS] [-q]
 *                [-P SERVER_PID] [-j 1|2] [-w TIMEOUT_MS] [-f MAX_INFLIGHT]
 *   wsload watch -p PORT -n WATCHERS -U USERS [-k USERS_PER_WATCHER] [-m WRITES] [-R WRITES_PER_S]
 *                [-A WRITER_TOKEN] [...the options above]
 *
 * hold: opens CONNS WebSockets at RATE/s (non-blocking connects from 127.0.0.2..127.0.0.250 so the
 * ephemeral ports of one source address never run out), each upgrade carrying a bearer token (line i
 * mod n of TOKENS; -q puts it in ?access_token= instead); waits for each 101 and first server message
 * (the gateway's `welcome`); reports connects/s, handshake latency p50/p99 and failures by kind; with
 * -P samples the server's VmRSS before and after (RSS growth per connection); holds them HOLD_S
 * seconds answering pings; then closes them at CLOSE_RATE/s and reports disconnects/s.
 * watch: WATCHERS connections each send {"type":"watch","users":[...]} (k users of USERS), then the
 * tool writes PUT /api/v2/presence/{id} (status alternating) on its own HTTP/1 connection, one write
 * in flight, stamps each send, reads the version from the response, and measures each watcher's
 * `presence` frame carrying that record.version: p50/p99/max over all deliveries, and how many never
 * arrived. TOKENS lines are "token" or "user_id token" (tests/tools/mktokens output).
 * Last line of output: `wsload key=value ...` for scripts. Threads: one epoll loop per worker (-j).
 */
#include "cli.h"
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WL_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WL_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* RFC 6455 1.3: the accept value for WL_KEY */
#define WL_RBUF_MAX 65536
#define WL_NSRC 249

enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_HELD, S_CLOSING, S_DONE };
enum { F_CONNECT, F_TIMEOUT, F_STATUS, F_ACCEPT, F_EOF, F_PROTO, F_WRITE, F_COUNT };
static const char *const s_fail_names[F_COUNT] = {"connect", "timeout", "status", "accept", "eof", "proto", "write"};

typedef struct conn {
    int fd;
    uint8_t state;
    uint16_t rlen;
    uint32_t gidx;   /* global connection index (token line, source address, watch set) */
    double t0, tend; /* connect start; time of welcome, failure or close completion */
    uint8_t *rbuf;   /* partial input (only while a message is incomplete) */
} conn_t;

typedef struct opts {
    const char *mode, *path, *tokens_file, *writer_token;
    int port, workers, users, per_watcher, writes, query_token;
    long n, server_pid;
    double rate, hold_s, close_rate, write_rate, timeout_s;
    long max_inflight;
} opts_t;

typedef struct worker {
    int id, ep;
    long first, count; /* global indexes [first, first+count) */
    double rate, close_rate;
    conn_t *c;
    double *hs_lat, *wel_lat; /* ms, per welcomed connection */
    long n_hs, n_wel, fails[F_COUNT], status_hist[6];
    long msgs, pings, dropped, closed_ok, close_timeout, inflight, n_closing;
    double t_first, t_last_welcome, t_close_start, t_close_end;
    pthread_t tid;
} worker_t;

static opts_t O = {.path = "/api/v2/presence/connect", .workers = 1, .rate = 1000, .hold_s = 5, .close_rate = 1000,
                   .timeout_s = 10, .max_inflight = 5000, .users = 100, .per_watcher = 5, .writes = 200, .write_rate = 50};
static char **s_tokens, **s_token_users;
static long s_ntokens;
static atomic_int s_connected; /* workers done connecting */
static atomic_bool s_go;       /* main has sampled the server: go on */

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_pct(double *v, long n, double p)
{
    if (n <= 0)
        return 0;
    long i = (long)ceil(p / 100.0 * (double)n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* ---- tokens ------------------------------------------------------------------------------------ */

static void s_load_tokens(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "wsload: tokens file %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char line[4096];
    long cap = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        if (s_ntokens == cap) {
            cap = cap ? cap * 2 : 1024;
            s_tokens = realloc(s_tokens, (size_t)cap * sizeof *s_tokens);
            s_token_users = realloc(s_token_users, (size_t)cap * sizeof *s_token_users);
        }
        char *sp = strchr(line, ' ');
        s_token_users[s_ntokens] = sp ? strndup(line, (size_t)(sp - line)) : NULL;
        s_tokens[s_ntokens++] = strdup(sp ? sp + 1 : line);
    }
    fclose(f);
    if (s_ntokens == 0) {
        fprintf(stderr, "wsload: tokens file %s has no token\n", path);
        exit(2);
    }
}

/* The user id watched/written as number i: the tokens file's user column, else "u<i>". */
static void s_user_id(long i, char *out, size_t len)
{
    if (s_ntokens && s_token_users[i % s_ntokens])
        snprintf(out, len, "%s", s_token_users[i % s_ntokens]);
    else
        snprintf(out, len, "u%ld", i);
}

/* ---- frames -------------------------------------------------------------------------------------- */

/* Write one masked client frame; small frames only (they go out whole or the connection fails). */
static int s_send_frame(int fd, int opcode, const void *data, size_t len)
{
    uint8_t buf[16 + 8192];
    if (len > 8192)
        return -1;
    size_t hl = 2;
    buf[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        buf[1] = (uint8_t)(0x80 | len);
    } else {
        buf[1] = 0x80 | 126;
        buf[2] = (uint8_t)(len >> 8);
        buf[3] = (uint8_t)len;
        hl = 4;
    }
    uint32_t r = (uint32_t)rand();
    uint8_t *mask = buf + hl;
    memcpy(mask, &r, 4);
    for (size_t i = 0; i < len; i++)
        buf[hl + 4 + i] = ((const uint8_t *)data)[i] ^ mask[i & 3];
    ssize_t w = send(fd, buf, hl + 4 + len, MSG_NOSIGNAL);
    return w == (ssize_t)(hl + 4 + len) ? 0 : -1;
}

typedef void (*msg_cb)(worker_t *w, conn_t *c, int opcode, const uint8_t *p, size_t len);

/* Parse complete server frames from p[0..n); returns bytes consumed, or -1 on a protocol error
 * (a masked server frame, a length beyond WL_RBUF_MAX). */
static long s_parse_frames(worker_t *w, conn_t *c, const uint8_t *p, size_t n, msg_cb cb)
{
    size_t off = 0;
    while (n - off >= 2) {
        const uint8_t *f = p + off;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (f[1] & 0x80)
            return -1;
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (len > WL_RBUF_MAX - 16)
            return -1;
        if (n - off < hl + len)
            break;
        cb(w, c, f[0] & 0x0f, f + hl, (size_t)len);
        off += hl + (size_t)len;
        if (c->state == S_DONE || c->state == S_FREE)
            break;
    }
    return (long)off;
}

/* ---- connection lifecycle ------------------------------------------------------------------------- */

static void s_finish(worker_t *w, conn_t *c, int fail)
{
    if (fail >= 0) {
        w->fails[fail]++;
        if (c->state >= S_HELD)
            w->dropped++;
    }
    if (c->state >= S_CONNECTING && c->state < S_HELD)
        w->inflight--;
    if (c->state == S_CLOSING)
        w->n_closing--;
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
    c->fd = -1;
    c->tend = s_now();
    c->state = S_DONE;
}

static void s_open_one(worker_t *w, conn_t *c)
{
    c->t0 = s_now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    w->inflight++;
    c->state = S_CONNECTING;
    if (c->fd < 0) {
        c->state = S_DONE;
        w->inflight--;
        w->fails[F_CONNECT]++;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(c->gidx % WL_NSRC));
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)) {
        s_finish(w, c, F_CONNECT);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void s_send_upgrade(worker_t *w, conn_t *c)
{
    char req[8192], auth[4200] = "", path[4400];
    const char *tok = s_ntokens ? s_tokens[c->gidx % s_ntokens] : NULL;
    if (tok && O.query_token)
        snprintf(path, sizeof path, "%s%caccess_token=%s", O.path, strchr(O.path, '?') ? '&' : '?', tok);
    else
        snprintf(path, sizeof path, "%s", O.path);
    if (tok && !O.query_token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WL_KEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     path, O.port, auth);
    if (n <= 0 || n >= (int)sizeof req || send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        s_finish(w, c, F_WRITE);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = S_HANDSHAKE;
}

/* Hooks of the watch mode (defined below); NULL in hold mode. */
static void (*s_on_welcome)(worker_t *w, conn_t *c);
static void (*s_on_text)(worker_t *w, conn_t *c, const uint8_t *p, size_t len);

static void s_on_msg(worker_t *w, conn_t *c, int opcode, const uint8_t *p, size_t len)
{
    if (opcode == 9) {
        w->pings++;
        if (s_send_frame(c->fd, 10, p, len) < 0)
            s_finish(w, c, F_WRITE);
        return;
    }
    if (opcode == 8) {
        if (c->state == S_CLOSING) {
            w->closed_ok++;
            s_finish(w, c, -1);
        } else {
            s_send_frame(c->fd, 8, p, len >= 2 ? 2 : 0);
            s_finish(w, c, F_EOF); /* the server ended it */
        }
        return;
    }
    if (opcode == 10)
        return;
    w->msgs++;
    if (c->state == S_OPEN) {
        c->state = S_HELD;
        w->inflight--;
        w->t_last_welcome = s_now();
        w->wel_lat[w->n_wel++] = (w->t_last_welcome - c->t0) * 1000.0;
        if (s_on_welcome)
            s_on_welcome(w, c);
    } else if (s_on_text && opcode == 1) {
        s_on_text(w, c, p, len);
    }
}

/* The 101 (or not) at the head of buf. Returns bytes consumed, 0 for "need more", -1 when the
 * connection was finished. */
static long s_handshake(worker_t *w, conn_t *c, const uint8_t *buf, size_t n)
{
    const uint8_t *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end) {
        if (n >= WL_RBUF_MAX - 1) {
            s_finish(w, c, F_PROTO);
            return -1;
        }
        return 0;
    }
    int status = 0;
    if (n < 12 || sscanf((const char *)buf + 9, "%3d", &status) != 1 || memcmp(buf, "HTTP/1.1 ", 9) != 0) {
        s_finish(w, c, F_PROTO);
        return -1;
    }
    w->status_hist[status / 100 <= 5 ? status / 100 : 0]++;
    if (status != 101) {
        s_finish(w, c, F_STATUS);
        return -1;
    }
    if (!memmem(buf, (size_t)(end - buf), WL_ACCEPT, sizeof WL_ACCEPT - 1)) {
        s_finish(w, c, F_ACCEPT);
        return -1;
    }
    w->hs_lat[w->n_hs++] = (s_now() - c->t0) * 1000.0;
    c->state = S_OPEN;
    return (long)(end + 4 - buf);
}

static void s_on_readable(worker_t *w, conn_t *c)
{
    static __thread uint8_t buf[2 * WL_RBUF_MAX];
    for (;;) {
        size_t have = c->rlen;
        if (have)
            memcpy(buf, c->rbuf, have);
        ssize_t r = recv(c->fd, buf + have, sizeof buf - have - 1, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            if (c->state == S_CLOSING) {
                w->closed_ok++;
                s_finish(w, c, -1);
            } else {
                s_finish(w, c, F_EOF);
            }
            return;
        }
        if (r < 0)
            return;
        size_t n = have + (size_t)r, off = 0;
        if (c->state == S_HANDSHAKE) {
            long k = s_handshake(w, c, buf, n);
            if (k < 0)
                return;
            off = (size_t)k;
        }
        if (c->state >= S_OPEN && c->state != S_DONE) {
            long k = s_parse_frames(w, c, buf + off, n - off, s_on_msg);
            if (k < 0) {
                s_finish(w, c, F_PROTO);
                return;
            }
            off += (size_t)k;
        }
        if (c->state == S_DONE)
            return;
        if (n - off > WL_RBUF_MAX) {
            s_finish(w, c, F_PROTO);
            return;
        }
        if (n - off && !c->rbuf)
            c->rbuf = malloc(WL_RBUF_MAX);
        memcpy(c->rbuf, buf + off, n - off);
        c->rlen = (uint16_t)(n - off);
        if (!c->rlen) {
            free(c->rbuf);
            c->rbuf = NULL;
        }
    }
}

static void s_writer_event(worker_t *w);

static void s_poll(worker_t *w, int timeout_ms)
{
    struct epoll_event ev[256];
    int k = epoll_wait(w->ep, ev, 256, timeout_ms);
    for (int i = 0; i < k; i++) {
        conn_t *c = ev[i].data.ptr;
        if (c == NULL) {
            s_writer_event(w); /* the watch mode's HTTP connection */
            continue;
        }
        if (c->state == S_DONE)
            continue;
        if (c->state == S_CONNECTING) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) {
                s_finish(w, c, F_CONNECT);
                continue;
            }
            if (ev[i].events & EPOLLOUT)
                s_send_upgrade(w, c);
            continue;
        }
        if (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            s_on_readable(w, c);
    }
}

/* ---- watch mode: watch lists, the HTTP writer, delivery matching ---------------------------------- */

typedef struct wwrite {
    int user, prev;             /* prev: the previous write of the same user, or -1 */
    unsigned long long version; /* 0 until the response is read */
    double t_send;
    bool ok;
} wwrite_t;

typedef struct early {
    int user;
    unsigned long long version;
    double t;
} early_t;

static struct {
    wwrite_t *w;
    int nw, *user_last;
    long *watchers;
    char (*uids)[128];
    double *lat;
    long nlat, latcap, other, expected, write_fail;
    early_t *early;
    long nearly, earlycap;
    int fd;
    bool busy;
    char rbuf[65536];
    size_t rlen;
    double next_due;
} W;

static int s_user_index(const char *uid)
{
    for (int i = 0; i < O.users; i++)
        if (strcmp(W.uids[i], uid) == 0)
            return i;
    return -1;
}

static void s_sample(double ms)
{
    if (W.nlat == W.latcap) {
        W.latcap = W.latcap ? W.latcap * 2 : 4096;
        W.lat = realloc(W.lat, (size_t)W.latcap * sizeof *W.lat);
    }
    W.lat[W.nlat++] = ms;
}

static void s_watch_welcome(worker_t *w, conn_t *c)
{
    char msg[8192];
    size_t n = (size_t)snprintf(msg, sizeof msg, "{\"type\":\"watch\",\"users\":[");
    for (int i = 0; i < O.per_watcher && n < sizeof msg - 300; i++) {
        int u = (int)((c->gidx * (uint32_t)O.per_watcher + (uint32_t)i) % (uint32_t)O.users);
        n += (size_t)snprintf(msg + n, sizeof msg - n, "%s\"%s\"", i ? "," : "", W.uids[u]);
        W.watchers[u]++;
    }
    n += (size_t)snprintf(msg + n, sizeof msg - n, "]}");
    if (s_send_frame(c->fd, 1, msg, n) < 0)
        s_finish(w, c, F_WRITE);
}

static void s_watch_text(worker_t *w, conn_t *c, const uint8_t *p, size_t len)
{
    double now = s_now();
    json_t *j = json_loadb((const char *)p, len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    json_t *rec = json_object_get(j, "record");
    const char *uid = json_string_value(json_object_get(rec, "user_id"));
    json_int_t v = json_integer_value(json_object_get(rec, "version"));
    int u = type && strcmp(type, "presence") == 0 && uid ? s_user_index(uid) : -1;
    json_decref(j);
    if (u < 0) {
        W.other++;
        return;
    }
    for (int i = W.user_last[u]; i >= 0; i = W.w[i].prev)
        if (W.w[i].ok && W.w[i].version == (unsigned long long)v) {
            s_sample((now - W.w[i].t_send) * 1000.0);
            return;
        }
    if (W.busy && W.w[W.nw - 1].user == u) { /* the write in flight: its version is not known yet */
        if (W.nearly == W.earlycap) {
            W.earlycap = W.earlycap ? W.earlycap * 2 : 4096;
            W.early = realloc(W.early, (size_t)W.earlycap * sizeof *W.early);
        }
        W.early[W.nearly++] = (early_t){u, (unsigned long long)v, now};
        return;
    }
    W.other++;
}

static void s_writer_kick(worker_t *w)
{
    double now = s_now();
    if (W.busy || W.nw >= O.writes || now < W.next_due)
        return;
    int u = W.nw % O.users;
    const char *st = (W.nw / O.users) % 2 ? "away" : "online";
    const char *tok = O.writer_token ? O.writer_token : s_ntokens ? s_tokens[u % s_ntokens] : NULL;
    char body[64], req[8192], auth[4200] = "";
    int bl = snprintf(body, sizeof body, "{\"status\":\"%s\",\"ttl\":3600}", st);
    if (tok)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    int n = snprintf(req, sizeof req,
                     "PUT /api/v2/presence/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n%s\r\n%s",
                     W.uids[u], bl, auth, body);
    W.w[W.nw] = (wwrite_t){.user = u, .prev = W.user_last[u], .t_send = now};
    W.user_last[u] = W.nw++;
    W.busy = true;
    W.next_due = (W.next_due ? W.next_due : now) + 1.0 / O.write_rate;
    if (send(W.fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        fprintf(stderr, "wsload: writer connection failed: %s\n", strerror(errno));
        exit(1);
    }
}

static void s_writer_open(worker_t *w);

/* The PUT response: status, Content-Length body, data.<uid>.version. */
static void s_writer_event(worker_t *w)
{
    ssize_t r = recv(W.fd, W.rbuf + W.rlen, sizeof W.rbuf - 1 - W.rlen, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        /* The server ended the keep-alive connection (an HTTP timeout while its loop was busy, or
         * a restart): the write in flight counts as failed, and a new connection takes over. */
        if (W.write_fail++ < 3)
            fprintf(stderr, "wsload: writer connection closed by the server (%s): reconnecting\n",
                    r < 0 ? strerror(errno) : "EOF");
        epoll_ctl(w->ep, EPOLL_CTL_DEL, W.fd, NULL);
        close(W.fd);
        W.busy = false;
        W.nearly = 0;
        W.rlen = 0;
        s_writer_open(w);
        return;
    }
    W.rlen += (size_t)r;
    W.rbuf[W.rlen] = '\0';
    char *end = strstr(W.rbuf, "\r\n\r\n");
    const char *cl = end ? strcasestr(W.rbuf, "\r\ncontent-length:") : NULL;
    if (!end || !cl || cl > end)
        return;
    size_t blen = strtoul(cl + 17, NULL, 10), hlen = (size_t)(end + 4 - W.rbuf);
    if (W.rlen < hlen + blen)
        return;
    int status = atoi(W.rbuf + 9);
    wwrite_t *wr = &W.w[W.nw - 1];
    json_t *j = status == 200 ? json_loadb(end + 4, blen, 0, NULL) : NULL;
    json_t *v = json_object_get(json_object_get(json_object_get(j, "data"), W.uids[wr->user]), "version");
    if (json_is_integer(v)) {
        wr->version = (unsigned long long)json_integer_value(v);
        wr->ok = true;
        W.expected += W.watchers[wr->user];
        for (long i = 0; i < W.nearly; i++)
            if (W.early[i].user == wr->user && W.early[i].version == wr->version)
                s_sample((W.early[i].t - wr->t_send) * 1000.0);
            else
                W.other++;
    } else {
        W.write_fail++;
        if (W.write_fail <= 3)
            fprintf(stderr, "wsload: PUT %s answered %d: %.*s\n", W.uids[wr->user], status, (int)blen, end + 4);
    }
    json_decref(j);
    W.nearly = 0;
    memmove(W.rbuf, W.rbuf + hlen + blen, W.rlen - hlen - blen);
    W.rlen -= hlen + blen;
    W.busy = false;
}

static void s_writer_open(worker_t *w)
{
    W.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(W.fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        fprintf(stderr, "wsload: writer connect: %s\n", strerror(errno));
        exit(1);
    }
    int one = 1;
    setsockopt(W.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, W.fd, &ev);
}

/* ---- phases --------------------------------------------------------------------------------------- */

static void s_phase_connect(worker_t *w)
{
    double start = s_now();
    long opened = 0, scan = 0;
    w->t_first = start;
    while (opened < w->count || w->inflight > 0) {
        double now = s_now();
        long due = (long)((now - start) * w->rate) + 1;
        while (opened < due && opened < w->count && w->inflight < O.max_inflight) {
            w->c[opened].gidx = (uint32_t)(w->first + opened);
            s_open_one(w, &w->c[opened++]);
        }
        s_poll(w, opened < w->count ? 1 : 10);
        now = s_now();
        while (scan < opened && w->c[scan].state >= S_HELD)
            scan++;
        for (long i = scan; i < opened && w->c[i].t0 + O.timeout_s <= now; i++)
            if (w->c[i].state < S_HELD)
                s_finish(w, &w->c[i], F_TIMEOUT);
    }
}

static void s_phase_hold(worker_t *w)
{
    double end = s_now() + O.hold_s;
    if (strcmp(O.mode, "watch") == 0) {
        s_writer_open(w);
        double drain_end = 0;
        for (;;) {
            s_writer_kick(w);
            s_poll(w, 1);
            bool writes_done = W.nw >= O.writes && !W.busy;
            if (writes_done && !drain_end)
                drain_end = s_now() + O.timeout_s;
            if (writes_done && (W.nlat >= W.expected || s_now() >= drain_end))
                break;
        }
        end = s_now() + O.hold_s;
    }
    while (s_now() < end)
        s_poll(w, 50);
}

static void s_phase_close(worker_t *w)
{
    double start = s_now(), last_scan = start;
    long idx = 0, sent = 0, scan = 0;
    w->t_close_start = start;
    while (idx < w->count || w->n_closing > 0) {
        double now = s_now();
        long due = (long)((now - start) * w->close_rate) + 1;
        for (; idx < w->count && sent < due; idx++) {
            conn_t *c = &w->c[idx];
            if (c->state != S_HELD)
                continue;
            if (s_send_frame(c->fd, 8, "\x03\xe8", 2) < 0) {
                s_finish(w, c, F_WRITE);
                continue;
            }
            c->state = S_CLOSING;
            c->t0 = now;
            w->n_closing++;
            sent++;
        }
        long before = w->closed_ok;
        s_poll(w, idx < w->count ? 1 : 10);
        if (w->closed_ok != before)
            w->t_close_end = s_now();
        if (now - last_scan >= 0.1) {
            last_scan = now;
            for (; scan < idx && w->c[scan].state != S_CLOSING; scan++)
                ;
            for (long i = scan; i < idx && w->c[i].t0 + O.timeout_s <= now; i++)
                if (w->c[i].state == S_CLOSING) {
                    w->close_timeout++;
                    s_finish(w, &w->c[i], -1);
                }
        }
    }
}

static void *s_worker_main(void *arg)
{
    worker_t *w = arg;
    s_phase_connect(w);
    atomic_fetch_add(&s_connected, 1);
    while (!atomic_load(&s_go)) /* main samples the server's RSS; keep answering pings meanwhile */
        s_poll(w, 10);
    s_phase_hold(w);
    s_phase_close(w);
    return NULL;
}

/* ---- main ----------------------------------------------------------------------------------------- */

static long s_rss_kb(long pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void s_usage(void)
{
    fprintf(stderr, "usage: wsload hold|watch -p PORT -n CONNS [-r RATE] [-d HOLD_S] [-c CLOSE_RATE] [-u PATH]\n"
                    "       [-T TOKENS] [-q] [-P SERVER_PID] [-j 1|2] [-w TIMEOUT_MS] [-f MAX_INFLIGHT]\n"
                    "       watch: [-U USERS] [-k PER_WATCHER] [-m WRITES] [-R WRITES_PER_S] [-A WRITER_TOKEN]\n");
    exit(2);
}

static void s_parse(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "hold") != 0 && strcmp(argv[1], "watch") != 0))
        s_usage();
    O.mode = argv[1];
    optind = 2;
    for (int o; (o = getopt(argc, argv, "p:n:r:d:c:u:T:qP:j:w:f:U:k:m:R:A:")) != -1;) {
        switch (o) {
        case 'p': O.port = atoi(optarg); break;
        case 'n': O.n = atol(optarg); break;
        case 'r': O.rate = atof(optarg); break;
        case 'd': O.hold_s = atof(optarg); break;
        case 'c': O.close_rate = atof(optarg); break;
        case 'u': O.path = optarg; break;
        case 'T': O.tokens_file = optarg; break;
        case 'q': O.query_token = 1; break;
        case 'P': O.server_pid = atol(optarg); break;
        case 'j': O.workers = atoi(optarg); break;
        case 'w': O.timeout_s = atof(optarg) / 1000.0; break;
        case 'f': O.max_inflight = atol(optarg); break;
        case 'U': O.users = atoi(optarg); break;
        case 'k': O.per_watcher = atoi(optarg); break;
        case 'm': O.writes = atoi(optarg); break;
        case 'R': O.write_rate = atof(optarg); break;
        case 'A': O.writer_token = optarg; break;
        default: s_usage();
        }
    }
    if (O.port <= 0 || O.port > 65535 || O.n <= 0 || O.n > 2000000 || O.rate <= 0 || O.close_rate <= 0 ||
        O.workers < 1 || O.workers > 2 || O.users < 1 || O.per_watcher < 1 || O.writes < 0 || O.write_rate <= 0 ||
        O.timeout_s <= 0 || O.max_inflight < 1) {
        fprintf(stderr, "wsload: an option is out of range (port 1..65535, n 1..2000000, rates > 0, -j 1|2)\n");
        s_usage();
    }
    if (strcmp(O.mode, "watch") == 0)
        O.workers = 1; /* the delivery tables are not shared between threads */
}

static void s_watch_setup(void)
{
    W.w = calloc((size_t)O.writes + 1, sizeof *W.w);
    W.user_last = malloc((size_t)O.users * sizeof *W.user_last);
    W.watchers = calloc((size_t)O.users, sizeof *W.watchers);
    W.uids = calloc((size_t)O.users, sizeof *W.uids);
    for (int i = 0; i < O.users; i++) {
        W.user_last[i] = -1;
        s_user_id(i, W.uids[i], sizeof W.uids[i]);
    }
    s_on_welcome = s_watch_welcome;
    s_on_text = s_watch_text;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "wsload", "hold|watch [options] (see the file's header)",
             "A WebSocket load generator: connections spread over 127.0.0.0/8 sources, connect and disconnect\n"
             "rates, change-to-frame delays (make bench).");
    s_parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    /* One fd per connection. Raising the hard limit needs CAP_SYS_RESOURCE; without it take the
     * hard limit and refuse a count that cannot fit (one process then cannot hold them all). */
    struct rlimit rl = {(rlim_t)O.n + 64, (rlim_t)O.n + 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)O.n + 64 > rl.rlim_cur) {
            fprintf(stderr, "wsload: %ld connections need %ld fds but RLIMIT_NOFILE's hard limit is %llu and cannot be "
                            "raised here (no CAP_SYS_RESOURCE): run several wsload processes\n",
                    O.n, O.n + 64, (unsigned long long)rl.rlim_max);
            return 2;
        }
    }
    if (O.tokens_file)
        s_load_tokens(O.tokens_file);
    if (strcmp(O.mode, "watch") == 0)
        s_watch_setup();
    srand((unsigned)getpid());
    worker_t ws[2];
    memset(ws, 0, sizeof ws);
    long rss0 = O.server_pid ? s_rss_kb(O.server_pid) : -1;
    for (int i = 0; i < O.workers; i++) {
        worker_t *w = &ws[i];
        w->id = i;
        w->first = O.n * i / O.workers;
        w->count = O.n * (i + 1) / O.workers - w->first;
        w->rate = O.rate / O.workers;
        w->close_rate = O.close_rate / O.workers;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->c = calloc((size_t)w->count, sizeof *w->c);
        w->hs_lat = calloc((size_t)w->count, sizeof(double));
        w->wel_lat = calloc((size_t)w->count, sizeof(double));
        pthread_create(&w->tid, NULL, s_worker_main, w);
    }
    struct timespec tick = {0, 10 * 1000 * 1000}, settle = {0, 500 * 1000 * 1000};
    while (atomic_load(&s_connected) < O.workers)
        nanosleep(&tick, NULL);
    nanosleep(&settle, NULL); /* let the server finish what the last connects started */
    long rss1 = O.server_pid ? s_rss_kb(O.server_pid) : -1;
    atomic_store(&s_go, true);
    for (int i = 0; i < O.workers; i++)
        pthread_join(ws[i].tid, NULL);

    /* merge */
    worker_t t = {0};
    double *hs = malloc((size_t)O.n * sizeof(double)), *wel = malloc((size_t)O.n * sizeof(double));
    t.t_first = ws[0].t_first;
    for (int i = 0; i < O.workers; i++) {
        worker_t *w = &ws[i];
        memcpy(hs + t.n_hs, w->hs_lat, (size_t)w->n_hs * sizeof(double));
        memcpy(wel + t.n_wel, w->wel_lat, (size_t)w->n_wel * sizeof(double));
        t.n_hs += w->n_hs, t.n_wel += w->n_wel, t.msgs += w->msgs, t.pings += w->pings, t.dropped += w->dropped;
        t.closed_ok += w->closed_ok, t.close_timeout += w->close_timeout;
        for (int f = 0; f < F_COUNT; f++)
            t.fails[f] += w->fails[f];
        for (int s = 0; s < 6; s++)
            t.status_hist[s] += w->status_hist[s];
        t.t_first = w->t_first < t.t_first ? w->t_first : t.t_first;
        t.t_last_welcome = w->t_last_welcome > t.t_last_welcome ? w->t_last_welcome : t.t_last_welcome;
        t.t_close_start = !t.t_close_start || w->t_close_start < t.t_close_start ? w->t_close_start : t.t_close_start;
        t.t_close_end = w->t_close_end > t.t_close_end ? w->t_close_end : t.t_close_end;
    }
    qsort(hs, (size_t)t.n_hs, sizeof *hs, s_cmp_double);
    qsort(wel, (size_t)t.n_wel, sizeof *wel, s_cmp_double);
    double cdur = t.t_last_welcome - t.t_first, ddur = t.t_close_end - t.t_close_start;
    double crate = cdur > 0 ? (double)t.n_wel / cdur : 0, drate = ddur > 0 ? (double)t.closed_ok / ddur : 0;
    long rss_delta = rss0 >= 0 && rss1 >= 0 ? rss1 - rss0 : -1;
    printf("connect: %ld/%ld welcomed in %.2f s = %.0f connects/s; 101 p50 %.2f ms p99 %.2f ms; welcome p50 %.2f ms p99 %.2f ms\n",
           t.n_wel, O.n, cdur, crate, s_pct(hs, t.n_hs, 50), s_pct(hs, t.n_hs, 99), s_pct(wel, t.n_wel, 50),
           s_pct(wel, t.n_wel, 99));
    printf("failures:");
    for (int f = 0; f < F_COUNT; f++)
        printf(" %s=%ld", s_fail_names[f], t.fails[f]);
    printf(" (status classes 1xx=%ld 2xx=%ld 3xx=%ld 4xx=%ld 5xx=%ld)\n", t.status_hist[1], t.status_hist[2],
           t.status_hist[3], t.status_hist[4], t.status_hist[5]);
    if (O.server_pid)
        printf("server rss: %ld kB before, %ld kB with %ld connections: %.0f bytes per connection\n", rss0, rss1, t.n_wel,
               t.n_wel ? (double)rss_delta * 1024.0 / (double)t.n_wel : 0);
    printf("hold: %ld messages, %ld pings answered, %ld dropped by the server\n", t.msgs, t.pings, t.dropped);
    printf("close: %ld closed cleanly in %.2f s = %.0f disconnects/s, %ld timed out\n", t.closed_ok, ddur, drate,
           t.close_timeout);
    printf("wsload mode=%s conns=%ld welcomed=%ld connect_s=%.3f connects_per_s=%.0f hs_p50_ms=%.3f hs_p99_ms=%.3f "
           "welcome_p50_ms=%.3f welcome_p99_ms=%.3f",
           O.mode, O.n, t.n_wel, cdur, crate, s_pct(hs, t.n_hs, 50), s_pct(hs, t.n_hs, 99), s_pct(wel, t.n_wel, 50),
           s_pct(wel, t.n_wel, 99));
    for (int f = 0; f < F_COUNT; f++)
        printf(" fail_%s=%ld", s_fail_names[f], t.fails[f]);
    printf(" msgs=%ld pings=%ld dropped=%ld closed=%ld close_timeout=%ld disconnects_per_s=%.0f", t.msgs, t.pings,
           t.dropped, t.closed_ok, t.close_timeout, drate);
    if (O.server_pid)
        printf(" rss_before_kb=%ld rss_after_kb=%ld rss_per_conn_b=%.0f", rss0, rss1,
               t.n_wel ? (double)rss_delta * 1024.0 / (double)t.n_wel : 0);
    if (strcmp(O.mode, "watch") == 0) {
        qsort(W.lat, (size_t)W.nlat, sizeof *W.lat, s_cmp_double);
        printf(" writes=%d write_fail=%ld deliveries=%ld expected=%ld missing=%ld other_frames=%ld lat_p50_ms=%.3f "
               "lat_p99_ms=%.3f lat_max_ms=%.3f",
               W.nw, W.write_fail, W.nlat, W.expected, W.expected > W.nlat ? W.expected - W.nlat : 0, W.other,
               s_pct(W.lat, W.nlat, 50), s_pct(W.lat, W.nlat, 99), W.nlat ? W.lat[W.nlat - 1] : 0);
    }
    printf("\n");
    return t.n_wel == O.n ? 0 : 1;
}
