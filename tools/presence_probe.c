/* presence_probe.c -- health probe for containers: no curl, no shell needed.
 *
 *   presence-probe [-t MS] [-r STAT] TARGET
 *   presence-probe [-t MS] [-r STAT] [--role ROLE]
 *
 * TARGET is one of
 *   tcp://HOST:PORT, ipc://PATH   send a PING over a DEALER; healthy = a PONG with status OK
 *                                 (store-node, cache-node, sync-relay and notifier answer PING)
 *   http://HOST:PORT[/PATH]       GET; healthy = a 2xx status (the gateway's /health/... routes)
 *
 * Without a TARGET the probe works out what to ask from the environment it shares with the
 * process it checks (a Docker HEALTHCHECK runs with the container's environment):
 *   PROBE_TARGET if set; otherwise the role's own endpoint, read exactly as the process reads it:
 *     store-node   STORE_CMD_ENDPOINT   (default ipc://$DATA_DIR/run/store-cmd.sock)
 *     cache-node   CACHE_ENDPOINT       (default ipc://$DATA_DIR/run/cache-1.sock)
 *     sync-relay   RELAY_CMD_ENDPOINT   (default ipc://$DATA_DIR/run/store-cmd.sock)
 *     notifier     NOTIFIER_ENDPOINT    (default ipc://$DATA_DIR/run/notifier.sock; its PONG carries
 *                                       notifier_live: -r notifier_live = following the stream)
 *     gateway, presenced   http://SERVICE_ADDR:SERVICE_PORT/health/readiness
 *   A bind address is turned into one to connect to: a wildcard host (0.0.0.0 or "*") becomes
 *   127.0.0.1, and [::] becomes [::1].
 *   The role is --role ROLE, else PRESENCE_ROLE, else the command name of PID 1 (the container's
 *   main process), else the first process in /proc whose command name is a known role.
 *
 * -r STAT   the PONG must also carry the stat STAT (its name without {labels}) with a non-zero
 *           value (e.g. cache_store_up: the cache-node hears from its store). Ignored for http
 *           targets.
 * -t MS     deadline for the whole probe (default 2000).
 *
 * Exit status: 0 healthy, 1 unhealthy (one line on stderr says why), 2 usage or configuration
 * error. With -v the healthy answer is printed too.
 */
#include "cli.h"
#include "envreg.h"
#include "proto.h"
#include "zutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define EP_MAX 600

static bool s_verbose;

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *s_env(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static const char *const s_roles[] = {"store-node", "cache-node", "sync-relay", "gateway", "presenced", "notifier", NULL};

static bool s_known_role(const char *name)
{
    for (int i = 0; s_roles[i]; i++)
        if (strcmp(name, s_roles[i]) == 0)
            return true;
    return false;
}

/* The command name of process `pid` (/proc/PID/comm), or "" if unreadable. */
static void s_comm(const char *pid, char *out, size_t outlen)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/comm", pid);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(out, (int)outlen, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

static int s_find_role(char *role, size_t len)
{
    s_comm("1", role, len);
    if (s_known_role(role))
        return 0;
    /* PID 1 may be an init (docker run --init, tini): take the lowest-numbered known process. */
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    long best = -1;
    char best_role[32] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid())
            continue;
        char c[32];
        s_comm(e->d_name, c, sizeof c);
        if (s_known_role(c) && (best < 0 || pid < best)) {
            best = pid;
            snprintf(best_role, sizeof best_role, "%s", c);
        }
    }
    closedir(d);
    if (best < 0)
        return -1;
    snprintf(role, len, "%s", best_role);
    return 0;
}

/* A bind endpoint as one to connect to (see the header). */
static void s_bind_to_connect(const char *ep, char *out, size_t outlen)
{
    static const struct {
        const char *from, *to;
    } map[] = {{"tcp://*:", "tcp://127.0.0.1:"},
               {"tcp://0.0.0.0:", "tcp://127.0.0.1:"},
               {"tcp://[::]:", "tcp://[::1]:"},
               {"tcp://[*]:", "tcp://[::1]:"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i].from);
        if (strncmp(ep, map[i].from, n) == 0) {
            snprintf(out, outlen, "%s%s", map[i].to, ep + n);
            return;
        }
    }
    snprintf(out, outlen, "%s", ep);
}

static int s_target_for_role(const char *role, char *out, size_t outlen)
{
    const char *dd = s_env("DATA_DIR", "./data");
    char dflt[EP_MAX];
    const char *ep = NULL;
    if (strcmp(role, "store-node") == 0 || strcmp(role, "sync-relay") == 0) {
        snprintf(dflt, sizeof dflt, "ipc://%s/run/store-cmd.sock", dd);
        ep = s_env(strcmp(role, "store-node") == 0 ? "STORE_CMD_ENDPOINT" : "RELAY_CMD_ENDPOINT", dflt);
    } else if (strcmp(role, "cache-node") == 0) {
        snprintf(dflt, sizeof dflt, "ipc://%s/run/cache-1.sock", dd);
        ep = s_env("CACHE_ENDPOINT", dflt);
    } else if (strcmp(role, "notifier") == 0) {
        snprintf(dflt, sizeof dflt, "ipc://%s/run/notifier.sock", dd);
        ep = s_env("NOTIFIER_ENDPOINT", dflt);
    } else if (strcmp(role, "gateway") == 0 || strcmp(role, "presenced") == 0) {
        const char *addr = s_env("SERVICE_ADDR", "0.0.0.0");
        const char *port = s_env("SERVICE_PORT", "8080");
        if (strcmp(addr, "0.0.0.0") == 0)
            addr = "127.0.0.1";
        else if (strcmp(addr, "::") == 0)
            addr = "::1";
        bool v6 = strchr(addr, ':') != NULL;
        snprintf(out, outlen, "http://%s%s%s:%s/health/readiness", v6 ? "[" : "", addr, v6 ? "]" : "", port);
        return 0;
    } else {
        fprintf(stderr, "presence-probe: unknown role '%s' (want one of store-node, cache-node, sync-relay, "
                        "gateway, presenced, notifier)\n",
                role);
        return -1;
    }
    s_bind_to_connect(ep, out, outlen);
    return 0;
}

/* ==== ZeroMQ PING ============================================================================= */

static int s_probe_zmq(const char *ep, const char *stat, int timeout_ms)
{
    uint64_t deadline = s_now_ms() + (uint64_t)timeout_ms;
    void *ctx = zmq_ctx_new();
    void *sock = zu_socket(ctx, ZMQ_DEALER, 16, 16);
    int rc = 1;
    proto_buf_t b;
    proto_buf_init(&b);
    if (!sock || zmq_connect(sock, ep) < 0) {
        fprintf(stderr, "presence-probe: cannot connect to %s: %s\n", ep, zmq_strerror(errno));
        rc = 2;
        goto out;
    }
    uint64_t rid = ((uint64_t)getpid() << 20) ^ s_now_ms();
    proto_enc_simple(&b, PROTO_PING, rid);
    /* Without ZMQ_IMMEDIATE the PING waits in the queue until the connection is up, so one send
     * covers the whole deadline. */
    if (zu_send(sock, NULL, 0, b.data, b.len) < 0) {
        fprintf(stderr, "presence-probe: send to %s: %s\n", ep, zmq_strerror(errno));
        goto out;
    }
    for (;;) {
        uint64_t now = s_now_ms();
        if (now >= deadline) {
            fprintf(stderr, "presence-probe: no answer from %s within %d ms\n", ep, timeout_ms);
            goto out;
        }
        zmq_pollitem_t pi = {.socket = sock, .events = ZMQ_POLLIN};
        int n = zmq_poll(&pi, 1, (long)(deadline - now));
        if (n < 0 && errno != EINTR)
            goto out;
        if (n <= 0)
            continue;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(sock, f, ZU_FRAMES_MAX, &nf) < 0)
            continue;
        proto_msg_t m;
        int dec = nf == 1 ? proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m) : PROTO_MALFORMED;
        if (nf != 1) {
            zu_close_frames(f, nf);
            continue;
        }
        if (dec != PROTO_DEC_OK || m.rid != rid) {
            proto_msg_fini(&m);
            zu_close_frames(f, nf);
            continue; /* not ours */
        }
        if (m.type != PROTO_PONG || m.status != PROTO_OK) {
            fprintf(stderr, "presence-probe: %s answered type %u status %u, not an OK PONG\n", ep, m.type, m.status);
        } else if (stat) {
            bool found = false;
            uint64_t v = 0;
            size_t sl = strlen(stat);
            for (uint32_t i = 0; i < m.n; i++) {
                /* Stats carry Prometheus labels: cache_store_up{node="..."} is cache_store_up. */
                const proto_str_t *nm = &m.stats[i].name;
                if (nm->len >= sl && memcmp(nm->p, stat, sl) == 0 && (nm->len == sl || nm->p[sl] == '{')) {
                    found = true;
                    v = m.stats[i].value;
                }
            }
            if (!found)
                fprintf(stderr, "presence-probe: %s: the PONG has no stat %s\n", ep, stat);
            else if (!v)
                fprintf(stderr, "presence-probe: %s: %s is 0\n", ep, stat);
            else
                rc = 0;
        } else {
            rc = 0;
        }
        if (rc == 0 && s_verbose)
            printf("ok %s PONG (%u stats)\n", ep, m.n);
        proto_msg_fini(&m);
        zu_close_frames(f, nf);
        goto out;
    }
out:
    proto_buf_fini(&b);
    if (sock)
        zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}

/* ==== HTTP GET ================================================================================ */

/* Wait for fd to be ready for `events` until the deadline. Returns 0, or -1 on timeout/error. */
static int s_wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = s_now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int s_probe_http(const char *url, int timeout_ms)
{
    uint64_t deadline = s_now_ms() + (uint64_t)timeout_ms;
    const char *p = url + strlen("http://");
    char host[256], port[16] = "80";
    const char *path = strchr(p, '/');
    size_t hostport_len = path ? (size_t)(path - p) : strlen(p);
    if (!path)
        path = "/";
    char hp[300];
    if (hostport_len == 0 || hostport_len >= sizeof hp) {
        fprintf(stderr, "presence-probe: bad URL %s\n", url);
        return 2;
    }
    memcpy(hp, p, hostport_len);
    hp[hostport_len] = '\0';
    char *colon;
    if (hp[0] == '[') {
        char *rb = strchr(hp, ']');
        if (!rb) {
            fprintf(stderr, "presence-probe: bad URL %s\n", url);
            return 2;
        }
        *rb = '\0';
        snprintf(host, sizeof host, "%s", hp + 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strrchr(hp, ':');
        if (colon)
            *colon = '\0';
        snprintf(host, sizeof host, "%s", hp);
    }
    if (colon)
        snprintf(port, sizeof port, "%s", colon + 1);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "presence-probe: %s: %s\n", host, gai_strerror(gai));
        return 1;
    }
    int fd = -1, rc = 1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        int err = 0;
        socklen_t el = sizeof err;
        if (s_wait_fd(fd, POLLOUT, deadline) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "presence-probe: cannot connect to %s:%s\n", host, port);
        return 1;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: presence-probe\r\nConnection: close\r\n\r\n", path,
                     hp[0] ? hp : host);
    if (n < 0 || (size_t)n >= sizeof req) {
        close(fd);
        return 2;
    }
    size_t off = 0;
    while (off < (size_t)n) {
        if (s_wait_fd(fd, POLLOUT, deadline) < 0)
            goto timeout;
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            goto fail;
        if (w > 0)
            off += (size_t)w;
    }
    char resp[512];
    size_t got = 0;
    while (got < sizeof resp - 1 && !memchr(resp, '\n', got)) {
        if (s_wait_fd(fd, POLLIN, deadline) < 0)
            goto timeout;
        ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
        if (r == 0)
            break;
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            goto fail;
        if (r > 0)
            got += (size_t)r;
    }
    resp[got] = '\0';
    resp[strcspn(resp, "\r\n")] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/%*d.%*d %d", &status) != 1) {
        fprintf(stderr, "presence-probe: %s: not an HTTP answer\n", url);
    } else if (status < 200 || status > 299) {
        fprintf(stderr, "presence-probe: %s: %s\n", url, resp);
    } else {
        rc = 0;
        if (s_verbose)
            printf("ok %s %s\n", url, resp);
    }
    close(fd);
    return rc;
timeout:
    fprintf(stderr, "presence-probe: %s: no answer within %d ms\n", url, timeout_ms);
    close(fd);
    return 1;
fail:
    fprintf(stderr, "presence-probe: %s: %s\n", url, strerror(errno));
    close(fd);
    return 1;
}

static const cli_desc_t s_cli = {
    .name = "presence-probe",
    .summary = "A container health probe: exit 0 when the target answers, 1 when it does not.",
    .usage = "[-v] [-t MS] [-r STAT] [--role ROLE | TARGET]",
    .more = "  TARGET: tcp://HOST:PORT | ipc://PATH (a ZeroMQ PING) or http://HOST:PORT/PATH (a GET, 2xx)\n"
            "  -t MS    deadline (default 2000)    -r STAT  the PONG must carry a non-zero STAT\n"
            "  without TARGET: PROBE_TARGET, else the role's own endpoint from the environment\n",
    .procs = ENVREG_PROBE,
    .takes_args = true,
};

static void s_usage(void)
{
    cli_usage_error(&s_cli, NULL);
}

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    int timeout_ms = 2000;
    const char *stat = NULL, *role_arg = NULL, *target_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-t") == 0 && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 1 || t > 600000) {
                s_usage();
                return 2;
            }
            timeout_ms = (int)t;
        } else if (strcmp(a, "-r") == 0 && i + 1 < argc) {
            stat = argv[++i];
        } else if (strcmp(a, "--role") == 0 && i + 1 < argc) {
            role_arg = argv[++i];
        } else if (strcmp(a, "-v") == 0) {
            s_verbose = true;
        } else if (a[0] != '-' && !target_arg) {
            target_arg = a;
        } else {
            s_usage();
            return 2;
        }
    }
    char target[EP_MAX];
    if (target_arg) {
        snprintf(target, sizeof target, "%s", target_arg);
    } else if (!role_arg && getenv("PROBE_TARGET") && *getenv("PROBE_TARGET")) {
        snprintf(target, sizeof target, "%s", getenv("PROBE_TARGET"));
    } else {
        char role[64];
        if (role_arg)
            snprintf(role, sizeof role, "%s", role_arg);
        else if (getenv("PRESENCE_ROLE") && *getenv("PRESENCE_ROLE"))
            snprintf(role, sizeof role, "%s", getenv("PRESENCE_ROLE"));
        else if (s_find_role(role, sizeof role) < 0) {
            fprintf(stderr, "presence-probe: no target given and no known process found (use --role or PROBE_TARGET)\n");
            return 2;
        }
        if (s_target_for_role(role, target, sizeof target) < 0)
            return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (strncmp(target, "http://", 7) == 0)
        return s_probe_http(target, timeout_ms);
    if (strncmp(target, "tcp://", 6) == 0 || strncmp(target, "ipc://", 6) == 0)
        return s_probe_zmq(target, stat, timeout_ms);
    fprintf(stderr, "presence-probe: unsupported target '%s'\n", target);
    return 2;
}
