/* h2o_bare.c -- the "bare h2o" yardstick: what libh2o-evloop 2.2.5 alone costs and delivers.
 *
 * A tiny server with no auth, no store and no ZeroMQ, so the gateway's numbers can be read against a
 * ceiling. Routes (one handler, dispatch on the normalized path):
 *   GET /json      a fixed ~250-byte presence envelope with Content-Length (read-benchmark ceiling)
 *   GET /ws        WebSocket through h2o's own support (h2o_upgrade_to_websocket + libwslay)
 *   GET /ws-raw    WebSocket where we take the socket over with h2o_http1_upgrade and frame RFC 6455
 *                  ourselves (bare_raw.c: a few hundred bytes per idle connection, no wslay)
 *   GET /stats     RSS, malloc'd bytes in use and open connection counts, as JSON
 *   PUT /api/v2/presence/{id}   an emulated presence write: bumps a version and sends a `presence`
 *                  frame to every WebSocket on this thread that sent {"type":"watch","users":[...]}
 * Both WebSocket modes send {"type":"welcome"} first, echo text/binary messages, answer {"type":
 * "ping"} with {"type":"pong"}, and (with a ping interval) ping every connection and drop one that
 * sent nothing for two intervals. Threading: N event-loop threads, one SO_REUSEPORT listener each;
 * a connection lives on the thread that accepted it and all its state is touched only there.
 * Config: flags -p PORT -t THREADS -i PING_MS -m MAX_FRAME, or env BARE_PORT/BARE_THREADS/
 * BARE_PING_MS/BARE_MAX_FRAME (the integration harness passes env only). Ready line on READY_FD.
 */
#include "cli.h"
#include "bare_ws.h"
#include "util.h"
#include "zutil.h"

#include <h2o.h>
#include <h2o/http1.h>
#include <h2o/websocket.h>
#include <jansson.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BARE_MAX_THREADS 16

static h2o_globalconf_t s_conf;
static bare_thread_t s_threads[BARE_MAX_THREADS];
static int s_nthreads = 1, s_listen_fds[BARE_MAX_THREADS];
static atomic_bool s_stop;
static atomic_long s_open_ws, s_open_raw;
static atomic_ullong s_version;
bare_cfg_t bare_cfg = {.max_frame = 65536};
__thread bare_thread_t *bare_self;

static const char s_json_body[] =
    "{\"success\":true,\"data\":{\"u1\":{\"user_id\":\"u1\",\"status\":\"online\",\"message\":\"in a meeting\","
    "\"last_seen\":\"2026-01-15T10:30:00.123456Z\",\"updated_at\":\"2026-01-15T10:30:00.123456Z\","
    "\"expires_at\":\"2026-01-15T11:30:00.123456Z\",\"node_id\":\"bare\",\"ttl\":3600,\"version\":42}}}";

/* ---- small HTTP helpers ------------------------------------------------------------------------ */

static void s_send_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

static long s_rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void s_stats(h2o_req_t *req)
{
    struct mallinfo2 mi = mallinfo2();
    char *body = h2o_mem_alloc_pool(&req->pool, 256);
    int n = snprintf(body, 256, "{\"rss_kb\":%ld,\"heap_in_use\":%zu,\"mmap_bytes\":%zu,\"ws\":%ld,\"ws_raw\":%ld,\"threads\":%d}",
                     s_rss_kb(), mi.uordblks, mi.hblkhd, atomic_load(&s_open_ws), atomic_load(&s_open_raw), s_nthreads);
    s_send_json(req, 200, "OK", body, (size_t)n);
}

/* ---- connection bookkeeping shared by both modes --------------------------------------------- */

void bare_conn_opened(bare_conn_t *c, int kind)
{
    c->kind = (uint8_t)kind;
    c->last_rx_ms = h2o_now(bare_self->ctx.loop);
    h2o_linklist_insert(&bare_self->conns, &c->link);
    atomic_fetch_add(kind == BARE_WS ? &s_open_ws : &s_open_raw, 1);
    if (bare_cfg.ping_ms)
        h2o_timeout_link(bare_self->ctx.loop, &bare_self->ping_to, &c->tick);
}

void bare_conn_closed(bare_conn_t *c)
{
    if (h2o_linklist_is_linked(&c->link)) {
        h2o_linklist_unlink(&c->link);
        atomic_fetch_sub(c->kind == BARE_WS ? &s_open_ws : &s_open_raw, 1);
    }
    if (h2o_timeout_is_linked(&c->tick))
        h2o_timeout_unlink(&c->tick);
    if (c->watch) {
        for (size_t i = 0; i < c->watch->n; i++)
            free(c->watch->ids[i]);
        free(c->watch);
        c->watch = NULL;
    }
}

/* The JSON-level behaviour both modes share: watch lists, {"type":"ping"}, echo of the rest. */
void bare_conn_on_text(bare_conn_t *c, const char *data, size_t len)
{
    json_t *j = len && data[0] == '{' ? json_loadb(data, len, 0, NULL) : NULL;
    const char *type = j ? json_string_value(json_object_get(j, "type")) : NULL;
    if (type && strcmp(type, "watch") == 0) {
        json_t *users = json_object_get(j, "users");
        size_t n = json_array_size(users);
        if (n > 1000) {
            bare_conn_send_text(c, "{\"type\":\"error\",\"error\":\"watch: more than 1000 users\"}", false);
        } else {
            bare_watch_t *w = xcalloc(1, sizeof *w + n * sizeof(char *));
            for (size_t i = 0; i < n; i++) {
                const char *u = json_string_value(json_array_get(users, i));
                w->ids[w->n++] = xstrdup(u ? u : "");
            }
            if (c->watch) { /* replace: free the old list through the common path */
                bare_watch_t *old = c->watch;
                for (size_t i = 0; i < old->n; i++)
                    free(old->ids[i]);
                free(old);
            }
            c->watch = w;
        }
    } else if (type && strcmp(type, "ping") == 0) {
        bare_conn_send_text(c, "{\"type\":\"pong\"}", false);
    } else {
        bare_conn_send(c, 1, data, len, false);
    }
    json_decref(j);
}

void bare_conn_send_text(bare_conn_t *c, const char *s, bool from_outside)
{
    bare_conn_send(c, 1, s, strlen(s), from_outside);
}

void bare_conn_send(bare_conn_t *c, int opcode, const void *data, size_t len, bool from_outside)
{
    if (c->kind == BARE_WS)
        bare_wslay_send(c, opcode, data, len, from_outside);
    else
        bare_raw_send(c, opcode, data, len);
}

/* Ping tick: each connection is linked in the thread's ping_to list (fixed duration = interval).
 * One that sent nothing for two intervals is dropped; the others get a ping and are relinked. */
static void on_ping_tick(h2o_timeout_entry_t *e)
{
    bare_conn_t *c = H2O_STRUCT_FROM_MEMBER(bare_conn_t, tick, e);
    uint64_t now = h2o_now(bare_self->ctx.loop);
    if (now - c->last_rx_ms >= 2 * bare_cfg.ping_ms) {
        if (c->kind == BARE_WS)
            bare_wslay_drop(c);
        else
            bare_raw_drop(c);
        return;
    }
    h2o_timeout_link(bare_self->ctx.loop, &bare_self->ping_to, &c->tick);
    if (c->kind == BARE_WS)
        bare_wslay_send(c, 9, "p", 1, true); /* may free c: nothing after this */
    else
        bare_raw_send(c, 9, "p", 1);
}

void bare_conn_init(bare_conn_t *c)
{
    c->tick.cb = on_ping_tick;
}

/* ---- emulated presence write --------------------------------------------------------------------- */

static void s_put(h2o_req_t *req, const char *id, size_t idlen)
{
    json_t *in = json_loadb(req->entity.base, req->entity.len, 0, NULL);
    const char *st = in ? json_string_value(json_object_get(in, "status")) : NULL;
    if (!util_valid_user_id(id, idlen) ||
        (st && strcmp(st, "online") && strcmp(st, "away") && strcmp(st, "busy") && strcmp(st, "offline"))) {
        static const char e[] = "{\"success\":false,\"error\":\"user id must be 1..128 of [A-Za-z0-9._~@:=+-] and "
                                "status one of online, away, busy, offline\"}";
        json_decref(in);
        s_send_json(req, 400, "Bad Request", e, sizeof e - 1);
        return;
    }
    unsigned long long v = atomic_fetch_add(&s_version, 1) + 1;
    char rec[512];
    int rl = snprintf(rec, sizeof rec, "{\"user_id\":\"%.*s\",\"status\":\"%s\",\"node_id\":\"bare\",\"version\":%llu}", (int)idlen,
                      id, st ? st : "online", v);
    json_decref(in);
    char *frame = h2o_mem_alloc_pool(&req->pool, (size_t)rl + 64);
    snprintf(frame, (size_t)rl + 64, "{\"type\":\"presence\",\"record\":%s}", rec);
    /* Fan out on this thread only (the emulation is meant for -t 1). */
    for (h2o_linklist_t *l = bare_self->conns.next, *next; l != &bare_self->conns; l = next) {
        next = l->next;
        bare_conn_t *c = H2O_STRUCT_FROM_MEMBER(bare_conn_t, link, l);
        for (size_t i = 0; c->watch && i < c->watch->n; i++)
            if (strlen(c->watch->ids[i]) == idlen && memcmp(c->watch->ids[i], id, idlen) == 0) {
                bare_conn_send_text(c, frame, true);
                break;
            }
    }
    char *body = h2o_mem_alloc_pool(&req->pool, (size_t)rl + idlen + 64);
    int bl = snprintf(body, (size_t)rl + idlen + 64, "{\"success\":true,\"data\":{\"%.*s\":%s}}", (int)idlen, id, rec);
    s_send_json(req, 200, "OK", body, (size_t)bl);
}

/* ---- routing --------------------------------------------------------------------------------------- */

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    static const char prefix[] = "/api/v2/presence/";
    if (get && h2o_memis(p.base, p.len, H2O_STRLIT("/json"))) {
        s_send_json(req, 200, "OK", s_json_body, sizeof s_json_body - 1);
    } else if (get && h2o_memis(p.base, p.len, H2O_STRLIT("/stats"))) {
        s_stats(req);
    } else if (get && (h2o_memis(p.base, p.len, H2O_STRLIT("/ws")) || h2o_memis(p.base, p.len, H2O_STRLIT("/ws-raw")))) {
        bool raw = p.len == 7;
        const char *key = NULL;
        /* Over HTTP/2 req->upgrade is never set, so key stays NULL and we answer 426: calling
         * h2o_upgrade_to_websocket there would hit assert(req->version < 0x200) and abort. */
        if (h2o_is_websocket_handshake(req, &key) != 0 || key == NULL || req->version >= 0x200) {
            static const char e[] = "{\"success\":false,\"error\":\"upgrade required: send a WebSocket handshake over HTTP/1.1\"}";
            if (req->version < 0x200) /* connection-specific: an HTTP/2 client rejects a response carrying it */
                h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
            s_send_json(req, 426, "Upgrade Required", e, sizeof e - 1);
        } else if (raw) {
            bare_raw_upgrade(req, key);
        } else {
            bare_wslay_upgrade(req, key);
        }
    } else if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT")) && p.len > sizeof prefix - 1 &&
               memcmp(p.base, prefix, sizeof prefix - 1) == 0) {
        s_put(req, p.base + sizeof prefix - 1, p.len - (sizeof prefix - 1));
    } else {
        static const char e[] = "{\"success\":false,\"error\":\"no such route\"}";
        s_send_json(req, 404, "Not Found", e, sizeof e - 1);
    }
    return 0;
}

/* ---- threads, listeners, main ------------------------------------------------------------------- */

static void on_accept(h2o_socket_t *listener, const char *err)
{
    bare_thread_t *t = listener->data;
    if (err)
        return;
    for (int i = 0; i < 64; i++) { /* bounded batch: fairness with the other sockets of the loop */
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock)
            break;
        h2o_accept(&t->accept_ctx, sock);
    }
}

static int s_listen(int port, int *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fd, 65535) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        perror("h2o_bare: listen");
        exit(1);
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static void *s_thread_main(void *arg)
{
    bare_thread_t *t = arg;
    bare_self = t;
    h2o_context_init(&t->ctx, h2o_evloop_create(), &s_conf);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = s_conf.hosts;
    h2o_linklist_init_anchor(&t->conns);
    h2o_timeout_init(t->ctx.loop, &t->ping_to, bare_cfg.ping_ms ? bare_cfg.ping_ms : 1000);
    h2o_timeout_init(t->ctx.loop, &t->linger_to, BARE_LINGER_MS);
    t->listener = h2o_evloop_socket_create(t->ctx.loop, dup(s_listen_fds[t->idx]), H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_socket_read_start(t->listener, on_accept);
    while (!atomic_load(&s_stop))
        h2o_evloop_run(t->ctx.loop, 100);
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    while (!h2o_linklist_is_empty(&t->conns)) {
        bare_conn_t *c = H2O_STRUCT_FROM_MEMBER(bare_conn_t, link, t->conns.next);
        if (c->kind == BARE_WS)
            bare_wslay_drop(c);
        else
            bare_raw_drop(c);
    }
    for (int i = 0; i < 5; i++)
        h2o_evloop_run(t->ctx.loop, 1);
    h2o_timeout_dispose(t->ctx.loop, &t->ping_to);
    h2o_timeout_dispose(t->ctx.loop, &t->linger_to);
    return NULL;
}

static long s_opt(const char *flagval, const char *env, long dflt, long lo, long hi, const char *name)
{
    const char *v = flagval ? flagval : getenv(env);
    if (!v || !*v)
        return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "h2o_bare: %s (%s) must be an integer in %ld..%ld, got '%s'\n", name, env, lo, hi, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "h2o_bare", "[-p PORT] [-t THREADS] [-i PING_MS] [-m MAX_FRAME]",
             "The bare-h2o yardstick of make bench: GET /json (a fixed record envelope), /ws (h2o + wslay)\n"
             "and /ws-raw (our own RFC 6455 framing) on 127.0.0.1.");
    const char *fp = NULL, *ft = NULL, *fi = NULL, *fm = NULL;
    for (int o; (o = getopt(argc, argv, "p:t:i:m:")) != -1;) {
        if (o == 'p')
            fp = optarg;
        else if (o == 't')
            ft = optarg;
        else if (o == 'i')
            fi = optarg;
        else if (o == 'm')
            fm = optarg;
        else {
            fprintf(stderr, "usage: h2o_bare [-p PORT] [-t THREADS] [-i PING_MS] [-m MAX_FRAME]\n");
            return 2;
        }
    }
    int port = (int)s_opt(fp, "BARE_PORT", 0, 0, 65535, "port");
    s_nthreads = (int)s_opt(ft, "BARE_THREADS", 1, 1, BARE_MAX_THREADS, "threads");
    bare_cfg.ping_ms = (uint64_t)s_opt(fi, "BARE_PING_MS", 0, 0, 3600000, "ping interval");
    bare_cfg.max_frame = (size_t)s_opt(fm, "BARE_MAX_FRAME", 65536, 125, 16 << 20, "max frame");
    /* One fd per connection: ask for 1M (works as root, up to fs.nr_open), else take the hard limit. */
    struct rlimit rl = {1 << 20, 1 << 20};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    h2o_config_init(&s_conf);
    s_conf.max_request_entity_size = 65536;
    h2o_hostconf_t *host = h2o_config_register_host(&s_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;

    int bound = 0;
    for (int i = 0; i < s_nthreads; i++) {
        s_listen_fds[i] = s_listen(i == 0 ? port : bound, &bound);
        s_threads[i].idx = i;
    }
    for (int i = 0; i < s_nthreads; i++)
        pthread_create(&s_threads[i].tid, NULL, s_thread_main, &s_threads[i]);
    char line[128];
    snprintf(line, sizeof line, "http=127.0.0.1:%d threads=%d ping_ms=%llu", bound, s_nthreads,
             (unsigned long long)bare_cfg.ping_ms);
    printf("ready %s\n", line);
    fflush(stdout);
    zu_signal_ready(line);
    int sig;
    sigwait(&sigs, &sig);
    atomic_store(&s_stop, true);
    for (int i = 0; i < s_nthreads; i++) {
        pthread_join(s_threads[i].tid, NULL);
        close(s_listen_fds[i]);
    }
    return 0;
}
