/* harness.c -- process, HTTP and token helpers for the integration tests (see harness.h). */
#include "harness.h"
#include "gw_lib.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
#define MAX_DIRS 16

static th_proc_t *s_procs[MAX_PROCS];
static int s_nprocs;
static char s_dirs[MAX_DIRS][64];
static int s_ndirs;
static bool s_atexit;

uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void s_rmrf(const char *dir)
{
    /* Only our own mkdtemp dirs under /tmp/pt-*; a fixed, shallow shape: dir/{run,store,...}/file. */
    if (strncmp(dir, "/tmp/pt-", 8) != 0)
        return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not remove %s\n", dir);
}

/* A process that ended on its own while the test still counted on it: say so on stderr, with the
 * first sanitizer report of its log (a test that failed waiting for it then names the cause, not
 * only the symptom -- run-tests.sh shows "harness:" lines). */
static void s_report_dead(th_proc_t *p)
{
    if (waitpid(p->pid, &p->status, WNOHANG) != p->pid)
        return;
    p->reaped = true;
    if (WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0)
        return;
    char how[64];
    if (WIFSIGNALED(p->status))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(p->status));
    else
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(p->status));
    fprintf(stderr, "harness: %s (pid %d) ended on its own before the test did (%s); log %s\n", p->name, (int)p->pid, how,
            p->err_path);
    FILE *f = fopen(p->err_path, "r");
    if (!f)
        return;
    char line[512];
    int shown = -1; /* lines shown of the report, -1 before it */
    while (fgets(line, sizeof line, f) && shown < 8) {
        if (shown < 0 && (strstr(line, "ERROR: AddressSanitizer") || strstr(line, "ERROR: LeakSanitizer") ||
                          strstr(line, "runtime error:")))
            shown = 0;
        if (shown >= 0) {
            fprintf(stderr, "harness:   %s", line);
            shown++;
        }
    }
    fclose(f);
}

void th_cleanup_all(void)
{
    for (int i = 0; i < s_nprocs; i++) {
        th_proc_t *p = s_procs[i];
        if (p->pid > 0 && !p->reaped)
            s_report_dead(p);
        if (p->pid > 0 && !p->reaped) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
            p->reaped = true;
        }
    }
    if (!getenv("TH_KEEP"))
        for (int i = 0; i < s_ndirs; i++)
            s_rmrf(s_dirs[i]);
    s_ndirs = 0;
}

const char *th_tmpdir(void)
{
    if (!s_atexit) {
        atexit(th_cleanup_all);
        s_atexit = true;
    }
    if (s_ndirs == MAX_DIRS)
        return NULL;
    char *d = s_dirs[s_ndirs];
    snprintf(d, 64, "/tmp/pt-XXXXXX");
    if (!mkdtemp(d))
        return NULL;
    s_ndirs++;
    return d;
}

const char *th_bin(const char *name, char *buf, size_t len)
{
    const char *dir = getenv("PRESENCE_BIN");
    snprintf(buf, len, "%s/%s", dir && *dir ? dir : "./build/bin", name);
    return buf;
}

th_proc_t *th_proc(const char *name, const char *bin)
{
    th_proc_t *p = calloc(1, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    th_bin(bin, p->bin, sizeof p->bin);
    if (s_nprocs < MAX_PROCS)
        s_procs[s_nprocs++] = p;
    return p;
}

void th_env(th_proc_t *p, const char *name, const char *fmt, ...)
{
    char val[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    /* Replace an earlier value of the same variable. */
    size_t nl = strlen(name);
    char *kv = malloc(nl + strlen(val) + 2);
    sprintf(kv, "%s=%s", name, val);
    for (int i = 0; i < p->nenv; i++) {
        if (strncmp(p->env[i], name, nl) == 0 && p->env[i][nl] == '=') {
            free(p->env[i]);
            p->env[i] = kv;
            return;
        }
    }
    if (p->nenv < 32)
        p->env[p->nenv++] = kv;
}

static int s_spawn(th_proc_t *p, int *ready_rd)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    const char *dir = s_ndirs ? s_dirs[s_ndirs - 1] : "/tmp";
    if (!p->err_path[0])
        snprintf(p->err_path, sizeof p->err_path, "%s/%s.log", dir, p->name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int out = open(p->err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        int wfd = dup(pfd[1]);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", wfd);
        setenv("READY_FD", fd, 1);
        for (int i = 0; i < p->nenv; i++)
            putenv(p->env[i]);
        char *argv[] = {p->bin, NULL};
        execv(p->bin, argv);
        fprintf(stderr, "exec %s: %s\n", p->bin, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    p->pid = pid;
    p->reaped = false;
    if (ready_rd)
        *ready_rd = pfd[0];
    else
        close(pfd[0]);
    return 0;
}

int th_start_nowait(th_proc_t *p)
{
    return s_spawn(p, NULL);
}

int th_start(th_proc_t *p, int timeout_ms)
{
    int rd;
    if (s_spawn(p, &rd) < 0)
        return -1;
    char buf[512];
    size_t len = 0;
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    int rc = -1;
    for (;;) {
        uint64_t now = th_now_ms();
        if (now >= deadline) {
            fprintf(stderr, "harness: %s not ready within %d ms (log %s)\n", p->name, timeout_ms, p->err_path);
            break;
        }
        struct pollfd pf = {.fd = rd, .events = POLLIN};
        int n = poll(&pf, 1, (int)(deadline - now));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t r = read(rd, buf + len, sizeof buf - 1 - len);
        if (r <= 0) {
            fprintf(stderr, "harness: %s exited before ready (log %s)\n", p->name, p->err_path);
            break;
        }
        len += (size_t)r;
        buf[len] = '\0';
        if (strchr(buf, '\n')) {
            buf[strcspn(buf, "\n")] = '\0';
            snprintf(p->ready, sizeof p->ready, "%s", buf);
            rc = 0;
            break;
        }
    }
    close(rd);
    if (rc < 0)
        th_kill(p);
    return rc;
}

void th_signal(th_proc_t *p, int sig)
{
    if (p->pid > 0 && !p->reaped)
        kill(p->pid, sig);
}

void th_kill(th_proc_t *p)
{
    if (p->pid <= 0 || p->reaped)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &p->status, 0);
    p->reaped = true;
}

bool th_sanitizer_report(const th_proc_t *p)
{
    FILE *f = fopen(p->err_path, "r");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "ERROR: AddressSanitizer") || strstr(line, "runtime error:") ||
            strstr(line, "ERROR: LeakSanitizer") || strstr(line, "ERROR: UndefinedBehaviorSanitizer"))
            found = true;
    fclose(f);
    return found;
}

int th_stop(th_proc_t *p, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    if (!p->reaped) {
        kill(p->pid, SIGTERM);
        uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
        for (;;) {
            pid_t r = waitpid(p->pid, &p->status, WNOHANG);
            if (r == p->pid) {
                p->reaped = true;
                break;
            }
            if (th_now_ms() >= deadline) {
                fprintf(stderr, "harness: %s did not stop within %d ms; SIGKILL\n", p->name, timeout_ms);
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &p->status, 0);
                p->reaped = true;
                return -1;
            }
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    bool clean = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
    if (!clean)
        fprintf(stderr, "harness: %s exit: %s %d (log %s)\n", p->name,
                WIFSIGNALED(p->status) ? "signal" : "status",
                WIFSIGNALED(p->status) ? WTERMSIG(p->status) : WEXITSTATUS(p->status), p->err_path);
    if (th_sanitizer_report(p)) {
        fprintf(stderr, "harness: sanitizer report in %s\n", p->err_path);
        clean = false;
    }
    return clean ? 0 : -1;
}

int th_restart(th_proc_t *p, int timeout_ms)
{
    if (p->pid > 0 && !p->reaped)
        th_kill(p);
    return th_start(p, timeout_ms);
}

/* ==== nodes ================================================================================== */

static void s_common_env(th_proc_t *p, const th_node_t *n, const char *const *extra)
{
    th_env(p, "DATA_DIR", "%s", n->dir);
    th_env(p, "JWT_SECRET", "%s", TH_SECRET);
    th_env(p, "NODE_ID", "test-node");
    th_env(p, "LOG_LEVEL", "info");
    th_env(p, "STORE_CMD_ENDPOINT", "%s", n->store_cmd);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", n->store_pub);
    for (int i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        if (!eq)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(p, name, "%s", eq + 1);
    }
}

static int s_node_start(th_node_t *n, int ncache, const char *center, const char *const *extra);

int th_node_start(th_node_t *n, int ncache, const char *const *extra)
{
    return s_node_start(n, ncache, NULL, extra);
}

int th_leaf_start(th_node_t *n, int ncache, const char *center, const char *const *extra)
{
    return s_node_start(n, ncache, center, extra);
}

/* The kernel's ephemeral range (outgoing connections take their local port from it). */
static void s_ephemeral(int *lo, int *hi)
{
    *lo = 32768;
    *hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", lo, hi) != 2) {
            *lo = 32768;
            *hi = 60999;
        }
        fclose(f);
    }
}

static bool s_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int th_free_ports(int n)
{
    /* Outside the ephemeral range: a port picked inside it could be taken, between the pick and
     * the process's bind, as the local port of some outgoing connection (raft peers, ZeroMQ, the
     * test's own clients) -- rare, but more likely the slower the processes start. */
    int lo, hi;
    s_ephemeral(&lo, &hi);
    int base = 10000, top = lo > 10000 + 1000 ? lo : 65535;
    if (top == 65535)
        base = hi + 1 < 65000 ? hi + 1 : 10000;
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)th_now_ms();
    for (int attempt = 0; attempt < 200; attempt++) {
        int p = base + (int)(rand_r(&seed) % (unsigned)(top - base - n));
        bool ok = true;
        for (int k = 0; k < n && ok; k++)
            ok = s_bindable(p + k);
        if (ok)
            return p;
    }
    return -1;
}

int th_free_port_pair(void)
{
    return th_free_ports(2);
}

static int s_node_start(th_node_t *n, int ncache, const char *center, const char *const *extra)
{
    memset(n, 0, sizeof *n);
    const char *d = th_tmpdir();
    if (!d)
        return -1;
    snprintf(n->dir, sizeof n->dir, "%s", d);
    char run[300];
    snprintf(run, sizeof run, "%s/run", d);
    mkdir(run, 0750);
    snprintf(n->store_cmd, sizeof n->store_cmd, "ipc://%s/store-cmd.sock", run);
    snprintf(n->store_pub, sizeof n->store_pub, "ipc://%s/store-pub.sock", run);
    n->ncache = ncache;
    if (center) {
        n->relay = th_proc("sync-relay", "sync-relay");
        s_common_env(n->relay, n, extra);
        th_env(n->relay, "CENTER_ENDPOINT", "%s", center);
        /* A plain link unless the test gives the relay its CurveZMQ keys (then they are used). */
        th_env(n->relay, "CENTER_INSECURE", "true");
        th_env(n->relay, "RELAY_CMD_ENDPOINT", "%s", n->store_cmd);
        th_env(n->relay, "RELAY_PUB_ENDPOINT", "%s", n->store_pub);
        s_common_env(n->relay, n, extra); /* extras win */
        if (th_start(n->relay, 20000) < 0)
            return -1;
    } else {
        n->store = th_proc("store-node", "store-node");
        s_common_env(n->store, n, extra);
        if (th_start(n->store, 20000) < 0)
            return -1;
    }
    for (int i = 0; i < ncache; i++) {
        char name[32], ep[300];
        snprintf(name, sizeof name, "cache-node-%d", i + 1);
        snprintf(ep, sizeof ep, "ipc://%s/cache-%d.sock", run, i + 1);
        n->cache[i] = th_proc(name, "cache-node");
        s_common_env(n->cache[i], n, extra);
        th_env(n->cache[i], "CACHE_ENDPOINT", "%s", ep);
        th_env(n->cache[i], "CACHE_ID", "c%d", i + 1);
        if (th_start(n->cache[i], 20000) < 0)
            return -1;
        if (i)
            strcat(n->cache_eps, ",");
        strcat(n->cache_eps, ep);
    }
    n->gw = th_proc("gateway", "gateway");
    s_common_env(n->gw, n, extra);
    th_env(n->gw, "SERVICE_PORT", "0");
    th_env(n->gw, "SERVICE_ADDR", "127.0.0.1");
    th_env(n->gw, "CACHE_ENDPOINTS", "%s", n->cache_eps);
    if (center)
        th_env(n->gw, "NODE_TYPE", "leaf");
    /* Re-apply extras so a test can override the defaults above (e.g. SERVICE_ADDR). */
    s_common_env(n->gw, n, extra);
    if (th_start(n->gw, 20000) < 0)
        return -1;
    const char *colon = strrchr(n->gw->ready, ':');
    n->port = colon ? atoi(colon + 1) : 0;
    return n->port > 0 ? 0 : -1;
}

int th_node_stop(th_node_t *n)
{
    int rc = 0;
    if (n->gw && th_stop(n->gw, 15000) < 0)
        rc = -1;
    for (int i = 0; i < n->ncache; i++)
        if (n->cache[i] && th_stop(n->cache[i], 10000) < 0)
            rc = -1;
    if (n->relay && th_stop(n->relay, 10000) < 0)
        rc = -1;
    if (n->store && th_stop(n->store, 15000) < 0)
        rc = -1;
    return rc;
}

/* ==== HTTP =================================================================================== */

static int s_connect(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
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

static int s_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int s_send_request(int fd, const char *method, const char *path, const char *headers, const char *body,
                          size_t blen, bool keepalive)
{
    char head[8192];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sContent-Length: %zu\r\n\r\n",
                     method, path, keepalive ? "" : "Connection: close\r\n", headers ? headers : "", body ? blen : 0);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    if (s_send_all(fd, head, (size_t)n) < 0)
        return -1;
    if (body && blen && s_send_all(fd, body, blen) < 0)
        return -1;
    return 0;
}

/* Read one response from fd using buf/have as carry-over storage. */
static int s_read_response(int fd, char *buf, size_t cap, size_t *have, th_resp_t *r, bool head_only, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    char *end = NULL;
    for (;;) {
        buf[*have] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")))
            break;
        if (*have + 1 >= cap || th_now_ms() > deadline)
            return -1;
        ssize_t got = recv(fd, buf + *have, cap - 1 - *have, 0);
        if (got <= 0)
            return -1;
        *have += (size_t)got;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    if (hlen >= sizeof r->head)
        return -1;
    memcpy(r->head, buf, hlen);
    r->head[hlen] = '\0';
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    memmove(buf, buf + hlen, *have - hlen);
    *have -= hlen;
    char v[64];
    bool chunked = th_resp_header(r, "transfer-encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0;
    long clen = -1;
    if (th_resp_header(r, "content-length", v, sizeof v))
        clen = atol(v);
    if (head_only || r->status == 204 || r->status == 304)
        clen = 0;
    size_t bcap = 65536, blen = 0;
    char *body = malloc(bcap);
    for (;;) {
        if (clen >= 0 && !chunked) {
            if (*have >= (size_t)clen) {
                if ((size_t)clen + 1 > bcap)
                    body = realloc(body, (size_t)clen + 1);
                memcpy(body, buf, (size_t)clen);
                blen = (size_t)clen;
                memmove(buf, buf + clen, *have - (size_t)clen);
                *have -= (size_t)clen;
                break;
            }
            if ((size_t)clen >= cap - 1) {
                /* Large body: drain what we have into body and keep reading. */
                if ((size_t)clen + 1 > bcap)
                    body = realloc(body, bcap = (size_t)clen + 1);
                memcpy(body + blen, buf, *have);
                blen += *have;
                *have = 0;
                while (blen < (size_t)clen) {
                    if (th_now_ms() > deadline)
                        goto fail;
                    ssize_t got = recv(fd, body + blen, (size_t)clen - blen, 0);
                    if (got <= 0)
                        goto fail;
                    blen += (size_t)got;
                }
                break;
            }
        } else if (chunked) {
            /* Parse as many complete chunks as we have. */
            bool done = false;
            for (;;) {
                buf[*have] = '\0';
                char *crlf = strstr(buf, "\r\n");
                if (!crlf)
                    break;
                long sz = strtol(buf, NULL, 16);
                size_t need = (size_t)(crlf - buf) + 2 + (size_t)sz + 2;
                if (*have < need)
                    break;
                if (blen + (size_t)sz + 1 > bcap)
                    body = realloc(body, bcap = (blen + (size_t)sz) * 2 + 1);
                memcpy(body + blen, crlf + 2, (size_t)sz);
                blen += (size_t)sz;
                memmove(buf, buf + need, *have - need);
                *have -= need;
                if (sz == 0) {
                    done = true;
                    break;
                }
            }
            if (done)
                break;
        }
        if (th_now_ms() > deadline || *have + 1 >= cap)
            goto fail;
        ssize_t got = recv(fd, buf + *have, cap - 1 - *have, 0);
        if (got <= 0) {
            if (clen < 0 && !chunked) { /* read to EOF */
                memcpy(body, buf, MIN(*have, bcap - 1));
                blen = MIN(*have, bcap - 1);
                *have = 0;
                break;
            }
            goto fail;
        }
        *have += (size_t)got;
    }
    body[blen] = '\0';
    r->body = body;
    r->body_len = blen;
    return 0;
fail:
    free(body);
    return -1;
}

int th_http(int port, const char *method, const char *path, const char *headers, const char *body, size_t blen,
            th_resp_t *r, int timeout_ms)
{
    int fd = s_connect(port, timeout_ms);
    if (fd < 0)
        return -1;
    static __thread char buf[1 << 20];
    size_t have = 0;
    int rc = -1;
    if (s_send_request(fd, method, path, headers, body, blen, false) == 0)
        rc = s_read_response(fd, buf, sizeof buf, &have, r, strcmp(method, "HEAD") == 0, timeout_ms);
    close(fd);
    return rc;
}

void th_resp_free(th_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

const char *th_resp_header(const th_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= len)
                n = len - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

int th_conn_open(th_conn_t *c, int port)
{
    c->port = port;
    c->have = 0;
    c->fd = s_connect(port, 5000);
    return c->fd < 0 ? -1 : 0;
}

void th_conn_close(th_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

int th_conn_request(th_conn_t *c, const char *method, const char *path, const char *headers, const char *body,
                    size_t blen, th_resp_t *r, int timeout_ms)
{
    if (c->fd < 0 && th_conn_open(c, c->port) < 0)
        return -1;
    if (s_send_request(c->fd, method, path, headers, body, blen, true) < 0 ||
        s_read_response(c->fd, c->buf, sizeof c->buf, &c->have, r, false, timeout_ms) < 0) {
        th_conn_close(c);
        return -1;
    }
    char v[32];
    if (th_resp_header(r, "connection", v, sizeof v) && strcasecmp(v, "close") == 0)
        th_conn_close(c);
    return 0;
}

/* ==== tokens and waiting ===================================================================== */

char *th_token(const char *sub, const char *scope)
{
    int64_t now = (int64_t)time(NULL);
    return gw_auth_sign((const unsigned char *)TH_SECRET, strlen(TH_SECRET), JWT_ALG_HS256, "presence-service", sub,
                        scope, now, now + 3600);
}

void th_auth_header(char *out, size_t len, const char *sub, const char *scope)
{
    char *t = th_token(sub, scope);
    snprintf(out, len, "Authorization: Bearer %s\r\n", t ? t : "");
    free(t);
}

bool th_wait_for(bool (*cond)(void *), void *arg, int timeout_ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (th_now_ms() >= deadline)
            return false;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL); /* polling interval of a condition with a deadline, not a synchronisation */
    }
}

/* ==== ZeroMQ client ========================================================================== */

#include "zutil.h"

int th_zc_open(th_zc_t *z, const char *endpoint)
{
    z->ctx = zmq_ctx_new();
    z->sock = zu_socket(z->ctx, ZMQ_DEALER, 10000, 10000);
    z->rid = 1000;
    return zmq_connect(z->sock, endpoint);
}

void th_zc_close(th_zc_t *z)
{
    zmq_close(z->sock);
    zmq_ctx_term(z->ctx);
}

int th_zc_call(th_zc_t *z, const proto_buf_t *b, uint64_t rid, proto_msg_t *m, int timeout_ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    zmq_pollitem_t pi = {.socket = z->sock, .events = ZMQ_POLLOUT};
    if (zmq_poll(&pi, 1, timeout_ms) <= 0 || zu_send(z->sock, NULL, 0, b->data, b->len) < 0)
        return -1;
    for (;;) {
        uint64_t now = th_now_ms();
        if (now >= deadline)
            return -1;
        pi.events = ZMQ_POLLIN;
        if (zmq_poll(&pi, 1, (long)(deadline - now)) <= 0)
            continue;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(z->sock, f, ZU_FRAMES_MAX, &n) < 0)
            continue;
        int rc = n == 1 ? proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), m) : PROTO_MALFORMED;
        zu_close_frames(f, n);
        if (rc == PROTO_DEC_OK && m->rid == rid)
            return 0;
        if (rc == PROTO_DEC_OK)
            proto_msg_fini(m); /* an answer to an earlier, abandoned request */
    }
}

int th_zc_get(th_zc_t *z, const char *uid, proto_record_t *out, uint32_t *flags)
{
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_get(&b, PROTO_GET, rid, uid, strlen(uid));
    proto_msg_t m;
    int rc = th_zc_call(z, &b, rid, &m, 5000);
    proto_buf_fini(&b);
    if (rc < 0)
        return -1;
    rc = m.status;
    if (flags)
        *flags = m.flags;
    if (rc == PROTO_OK && m.n == 1)
        *out = m.recs[0];
    proto_msg_fini(&m);
    return rc;
}

int th_zc_put(th_zc_t *z, const char *uid, int status, const char *msg, proto_record_t *out)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, "test", 4);
    r.status = (uint8_t)status;
    r.ttl_s = 3600;
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_records_cmd(&b, PROTO_PUT, rid, &r, 1);
    proto_msg_t m;
    int rc = th_zc_call(z, &b, rid, &m, 5000);
    proto_buf_fini(&b);
    if (rc < 0)
        return -1;
    rc = m.status;
    if (rc == PROTO_OK && m.n == 1 && out)
        *out = m.recs[0];
    proto_msg_fini(&m);
    return rc;
}

int th_zc_stat(th_zc_t *z, const char *name, uint64_t *v)
{
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t rid = ++z->rid;
    proto_enc_simple(&b, PROTO_STATS, rid);
    proto_msg_t m;
    int rc = th_zc_call(z, &b, rid, &m, 5000);
    proto_buf_fini(&b);
    if (rc < 0)
        return -1;
    rc = -1;
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < m.n; i++) {
        if (m.stats[i].name.len >= nl && memcmp(m.stats[i].name.p, name, nl) == 0 &&
            (m.stats[i].name.len == nl || m.stats[i].name.p[nl] == '{')) {
            *v = m.stats[i].value;
            rc = 0;
            break;
        }
    }
    proto_msg_fini(&m);
    return rc;
}
