/* presenced.c -- the launcher: one command starts a whole node on one machine.
 *
 *   NODE_TYPE=center (default): store-node, CACHE_NODES cache-nodes (2), gateway
 *                               (+ notifier after the store-node when WEBHOOK_URLS is set)
 *   NODE_TYPE=leaf:             sync-relay (to CENTER_ENDPOINT), cache-nodes, gateway
 *   STORE_REPLICAS=3 (or 5):    a replicated center on this machine for trying it: that many
 *                               store-nodes (DATA_DIR/store-N, raft on 127.0.0.1:STORE_RAFT_PORT+N-1),
 *                               every other process given all their endpoints (docs/REPLICATION.md)
 *
 * Processes are wired with ipc:// endpoints under $DATA_DIR/run. Each child is started with
 * READY_FD, a pipe it writes one "ready ..." line to once it serves; children start in dependency
 * order, each after the previous one said it was ready (with a deadline). The launcher prints
 * its own ready line when the gateway is ready, naming the address the gateway actually bound:
 *
 *   ready http=127.0.0.1:8080 node_id=node-1 node_type=center data_dir=/abs/path/data
 *
 * One node per DATA_DIR and per port: the launcher holds an exclusive lock on DATA_DIR/.lock for
 * its lifetime and checks SERVICE_ADDR:SERVICE_PORT before starting anything; either in use is
 * exit status 2 with a message naming it (so is a child that refuses its configuration).
 *
 * A child that exits unexpectedly is restarted with exponential backoff (100 ms .. 5 s; the
 * backoff resets after a child ran for 30 s). SIGINT/SIGTERM stop every child in reverse order
 * (SIGTERM, then SIGKILL after STOP_GRACE_MS) and the launcher exits 0.
 *
 * Without JWT_SECRET a development secret is created in $DATA_DIR/dev-jwt-secret (0600), and the
 * launcher says how to get a token (and tells the gateway, PRESENCE_DEV_SECRET=true, which then
 * signs tokens for the page's "try as" box). Every other variable is passed through to the children, which
 * validate their own settings.
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 16
#define READY_TIMEOUT_MS 30000

typedef struct child {
    char name[32];
    char bin[PATH_MAX];
    char *env[16]; /* extra NAME=value entries */
    int nenv;
    pid_t pid;
    uint64_t started_ms, backoff_ms, restart_at_ms;
    unsigned restarts;
} child_t;

static child_t s_children[MAX_CHILDREN];
static int s_nchildren;
static volatile sig_atomic_t s_stop, s_sigchld;
static char s_bindir[PATH_MAX];
static int s_child_exit = -1; /* exit status of a child that ended before it was ready */
static uint64_t s_stop_grace_ms = 10000;

static void on_signal(int sig)
{
    if (sig == SIGCHLD)
        s_sigchld = 1;
    else
        s_stop = 1;
}

static child_t *s_add(const char *name, const char *bin)
{
    child_t *c = &s_children[s_nchildren++];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->bin, sizeof c->bin, "%s/%s", s_bindir, bin);
    c->backoff_ms = 100;
    return c;
}

static void s_env(child_t *c, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_env(child_t *c, const char *name, const char *fmt, ...)
{
    char val[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    char *kv = xmalloc(strlen(name) + strlen(val) + 2);
    sprintf(kv, "%s=%s", name, val);
    c->env[c->nenv++] = kv;
}

/* Start a child; with wait_ready, block (with a deadline) until its ready line. Returns 0/-1. */
static int s_start(child_t *c, bool wait_ready, char *ready_line, size_t ready_len)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        /* Die with the launcher: a SIGKILLed supervisor must not leave orphans holding the ports. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* The child keeps the write end across exec (dup clears CLOEXEC). */
        int wfd = dup(pfd[1]);
        char fdbuf[16];
        snprintf(fdbuf, sizeof fdbuf, "%d", wfd);
        setenv("READY_FD", fdbuf, 1);
        for (int i = 0; i < c->nenv; i++)
            putenv(c->env[i]);
        char *argv[] = {c->bin, NULL};
        execv(c->bin, argv);
        fprintf(stderr, "presenced: exec %s: %s\n", c->bin, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    c->pid = pid;
    c->started_ms = util_mono_ms();
    int rc = 0;
    if (wait_ready) {
        char buf[512];
        size_t len = 0;
        uint64_t deadline = util_mono_ms() + READY_TIMEOUT_MS;
        rc = -1;
        while (!s_stop) {
            uint64_t now = util_mono_ms();
            if (now >= deadline) {
                LOG(LOG_ERROR, "%s did not become ready within %d ms", c->name, READY_TIMEOUT_MS);
                break;
            }
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            int n = poll(&p, 1, (int)MIN(deadline - now, 200));
            if (n < 0 && errno != EINTR)
                break;
            if (n <= 0)
                continue;
            ssize_t r = read(pfd[0], buf + len, sizeof buf - 1 - len);
            if (r <= 0) {
                int st = 0;
                if (waitpid(c->pid, &st, 0) == c->pid) {
                    c->pid = 0;
                    s_child_exit = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                }
                LOG(LOG_ERROR, "%s exited before it was ready (status %d)", c->name, s_child_exit);
                break;
            }
            len += (size_t)r;
            buf[len] = '\0';
            if (strchr(buf, '\n')) {
                buf[strcspn(buf, "\n")] = '\0';
                if (ready_line)
                    snprintf(ready_line, ready_len, "%s", buf);
                rc = 0;
                break;
            }
        }
    }
    close(pfd[0]);
    return rc;
}

static void s_stop_all(void)
{
    for (int i = s_nchildren - 1; i >= 0; i--) {
        child_t *c = &s_children[i];
        if (c->pid <= 0)
            continue;
        kill(c->pid, SIGTERM);
        uint64_t deadline = util_mono_ms() + s_stop_grace_ms;
        for (;;) {
            int st;
            pid_t r = waitpid(c->pid, &st, WNOHANG);
            if (r == c->pid || (r < 0 && errno == ECHILD))
                break;
            if (util_mono_ms() >= deadline) {
                LOG(LOG_WARN, "%s did not stop within %llu ms: SIGKILL", c->name, (unsigned long long)s_stop_grace_ms);
                kill(c->pid, SIGKILL);
                waitpid(c->pid, &st, 0);
                break;
            }
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL); /* bounded wait for a child we signalled: nothing else to do here */
        }
        c->pid = 0;
    }
}

static int s_dev_secret(const char *data_dir, const char *given)
{
    const char *s = getenv("JWT_SECRET");
    /* PRESENCE_DEV_SECRET tells the gateway the secret is this throwaway one (it then signs tokens
     * for the page's "try as" box): never inherited, only ever set here. */
    unsetenv("PRESENCE_DEV_SECRET");
    if (s && *s)
        return 0;
    char path[PATH_MAX], secret[65];
    snprintf(path, sizeof path, "%s/dev-jwt-secret", data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(secret, sizeof secret, f))
            secret[0] = '\0';
        fclose(f);
        secret[strcspn(secret, "\r\n")] = '\0';
    } else {
        unsigned char raw[32];
        if (util_random(raw, sizeof raw) < 0)
            return -1;
        for (int i = 0; i < 32; i++)
            sprintf(secret + 2 * i, "%02x", raw[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || util_write_all(fd, secret, 64) < 0 || util_write_all(fd, "\n", 1) < 0) {
            LOG(LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    if (strlen(secret) < 32) {
        LOG(LOG_ERROR, "%s is not a usable secret; delete it and restart", path);
        return -1;
    }
    setenv("JWT_SECRET", secret, 1);
    setenv("PRESENCE_DEV_SECRET", "true", 1);
    /* The hint must work as printed: name DATA_DIR when it is not the one `make token` assumes. */
    if (strcmp(given, "./data") != 0 && strcmp(given, "data") != 0)
        LOG(LOG_NOTICE,
            "JWT_SECRET is not set: using the development secret in %s; get a token with: make token SUB=alice "
            "DATA_DIR=%s",
            path, data_dir);
    else
        LOG(LOG_NOTICE, "JWT_SECRET is not set: using the development secret in %s; get a token with: make token SUB=alice",
            path);
    return 0;
}

/* One node per DATA_DIR: an exclusive lock held for the launcher's life (not inherited by the
 * children). Returns the fd, or -1 after logging why. */
static int s_lock_data_dir(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG(LOG_ERROR, "DATA_DIR: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        LOG(LOG_ERROR, "DATA_DIR: %s is in use by another node (launcher pid %s); stop it or choose another DATA_DIR",
            dir, pid[0] ? pid : "?");
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        LOG(LOG_WARN, "DATA_DIR: cannot write my pid to %s", path);
    return fd;
}

/* The gateway's address must be free: a second node on the same port would otherwise start its
 * store and caches before its gateway fails. Returns 0, or -1 after logging why. */
static int s_check_port(uint64_t port)
{
    if (port == 0)
        return 0;
    const char *addr = getenv("SERVICE_ADDR");
    if (!addr || !*addr)
        addr = "0.0.0.0";
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1)
            return 0; /* the gateway names the bad address */
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, addr, &a->sin_addr) != 1)
            return 0;
        sl = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 && errno == EADDRINUSE) {
        LOG(LOG_ERROR,
            "SERVICE_PORT: %s:%llu is already in use (another node or program listens there); stop it or choose "
            "another SERVICE_PORT",
            addr, (unsigned long long)port);
        rc = -1;
    }
    close(fd);
    return rc;
}

static const cli_desc_t s_cli = {
    .name = "presenced",
    .summary = "Start a whole presence node on this machine (what `make run` starts): a center (store-node,\n"
               "cache-nodes, gateway) or a leaf (sync-relay, cache-nodes, gateway), wired over ipc:// in\n"
               "DATA_DIR/run, restarted when they crash, stopped cleanly on SIGINT/SIGTERM.",
    .usage = "",
    .more = "Every variable below (and every other process's, see their --help) is passed to the children.\n",
    .procs = ENVREG_LAUNCHER,
};

/* The node's settings, as the launcher reads them (the children read their own). */
typedef struct node {
    int type; /* 0 center, 1 leaf */
    uint64_t ncache, port;
    uint64_t replicas, raft_port; /* STORE_REPLICAS (1: one store-node, no raft), STORE_RAFT_PORT */
    char data_dir[400], center[512], node_id[65];
    char abs_dir[PATH_MAX], run_dir[PATH_MAX];
} node_t;

static const char *const s_types[] = {"center", "leaf", NULL};

static int s_config(void *arg, char *err)
{
    node_t *n = arg;
    /* Two cache-nodes, or one per 4 cores this process may use when that is more (at most 8): the
     * spec's center node has two (ARCHITECTURE.md, Topologies), so a cache-node that dies costs a
     * move of its keys to the other, not an outage of the tier. With the gateway's near cache
     * answering hot reads, the tier serves misses, writes and cold multi-gets; more than two on a
     * small box compete for the same cores (BENCHMARKS.md, "Reads"). */
    n->ncache = (uint64_t)MIN(MAX(util_cpu_count() / 4, 2), 8);
    n->port = 8080;
    n->replicas = 1;
    n->raft_port = 7100;
    snprintf(n->data_dir, sizeof n->data_dir, "./data");
    snprintf(n->node_id, sizeof n->node_id, "node-1");
    if (cfg_enum("NODE_TYPE", s_types, &n->type, err) < 0 || cfg_str("DATA_DIR", n->data_dir, sizeof n->data_dir, err) < 0 ||
        cfg_u64("CACHE_NODES", 1, 8, &n->ncache, err) < 0 || cfg_u64("SERVICE_PORT", 0, 65535, &n->port, err) < 0 ||
        cfg_str("CENTER_ENDPOINT", n->center, sizeof n->center, err) < 0 ||
        cfg_str("NODE_ID", n->node_id, sizeof n->node_id, err) < 0 ||
        cfg_u64("STOP_GRACE_MS", 100, 600000, &s_stop_grace_ms, err) < 0 ||
        cfg_u64("STORE_RAFT_PORT", 1, 65000, &n->raft_port, err) < 0)
        return -1;
    /* STORE_REPLICAS is a count here (the store-nodes get the members' addresses from us). */
    if (cfg_u64("STORE_REPLICAS", 1, 7, &n->replicas, err) < 0) {
        snprintf(err, CFG_ERR_LEN, "STORE_REPLICAS: the launcher wants how many store-nodes to start (1, 3 or 5)");
        return -1;
    }
    if (n->replicas != 1 && n->replicas != 3 && n->replicas != 5) {
        snprintf(err, CFG_ERR_LEN, "STORE_REPLICAS: 1, 3 or 5 (a majority must survive a member's loss), got %llu",
                 (unsigned long long)n->replicas);
        return -1;
    }
    if (n->type == 1 && !n->center[0]) {
        snprintf(err, CFG_ERR_LEN, "CENTER_ENDPOINT: required for NODE_TYPE=leaf (tcp://HOST:PORT of the center's CENTER_PORT)");
        return -1;
    }
    return 0;
}

/* DATA_DIR made absolute (children may chdir; ipc:// paths must be absolute anyway) with its run/
 * directory; then one node per DATA_DIR and per port. Returns 0, or the exit status. */
static int s_prepare(node_t *n)
{
    if (mkdir(n->data_dir, 0750) < 0 && errno != EEXIST) {
        LOG(LOG_ERROR, "DATA_DIR: cannot create %s: %s", n->data_dir, strerror(errno));
        return 1;
    }
    if (!realpath(n->data_dir, n->abs_dir)) {
        LOG(LOG_ERROR, "DATA_DIR: %s: %s", n->data_dir, strerror(errno));
        return 1;
    }
    snprintf(n->run_dir, sizeof n->run_dir, "%s/run", n->abs_dir);
    mkdir(n->run_dir, 0750);
    if (strlen(n->run_dir) + 32 > 107) {
        LOG(LOG_ERROR, "DATA_DIR: %s is too long for ipc:// socket paths (108 bytes max); use a shorter path", n->abs_dir);
        return 2;
    }
    if (s_lock_data_dir(n->abs_dir) < 0 || s_check_port(n->port) < 0)
        return 2;
    setenv("DATA_DIR", n->abs_dir, 1);
    if (!getenv("NODE_TYPE"))
        setenv("NODE_TYPE", s_types[n->type], 1);
    if (s_dev_secret(n->abs_dir, n->data_dir) < 0)
        return 1;
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        LOG(LOG_ERROR, "cannot find my own binary: %s", strerror(errno));
        return 1;
    }
    self[len] = '\0';
    snprintf(s_bindir, sizeof s_bindir, "%s", self);
    *strrchr(s_bindir, '/') = '\0';
    return 0;
}

/* STORE_REPLICAS=N > 1: N store-nodes, member i in DATA_DIR/store-i with its own sockets, raft on
 * 127.0.0.1:STORE_RAFT_PORT+i-1 (and CENTER_PORT+2(i-1) when the center serves leaves); the lists
 * of their endpoints, in member order, go to every process that talks to the store. */
static void s_plan_replicas(const node_t *n, char *cmds, char *pubs, size_t len)
{
    char members[300] = "";
    for (uint64_t i = 0; i < n->replicas; i++)
        snprintf(members + strlen(members), sizeof members - strlen(members), "%s127.0.0.1:%llu", i ? "," : "",
                 (unsigned long long)(n->raft_port + i));
    const char *cp = getenv("CENTER_PORT");
    unsigned long center = cp && *cp ? strtoul(cp, NULL, 10) : 0;
    for (uint64_t i = 1; i <= n->replicas; i++) {
        char name[32], dir[PATH_MAX];
        snprintf(name, sizeof name, "store-node-%llu", (unsigned long long)i);
        snprintf(dir, sizeof dir, "%s/store-%llu", n->abs_dir, (unsigned long long)i);
        mkdir(dir, 0750);
        child_t *c = s_add(name, "store-node");
        s_env(c, "DATA_DIR", "%s", dir);
        s_env(c, "STORE_REPLICAS", "%s", members);
        s_env(c, "STORE_REPLICA_ID", "%llu", (unsigned long long)i);
        s_env(c, "STORE_CMD_ENDPOINT", "ipc://%s/store-%llu-cmd.sock", n->run_dir, (unsigned long long)i);
        s_env(c, "STORE_PUB_ENDPOINT", "ipc://%s/store-%llu-pub.sock", n->run_dir, (unsigned long long)i);
        if (center)
            s_env(c, "CENTER_PORT", "%lu", center + 2 * (i - 1));
        snprintf(cmds + strlen(cmds), len - strlen(cmds), "%sipc://%s/store-%llu-cmd.sock", i > 1 ? "," : "", n->run_dir,
                 (unsigned long long)i);
        snprintf(pubs + strlen(pubs), len - strlen(pubs), "%sipc://%s/store-%llu-pub.sock", i > 1 ? "," : "", n->run_dir,
                 (unsigned long long)i);
    }
}

/* The children, in the order they start: the store-node (a leaf: the sync-relay), the cache-nodes,
 * the gateway, wired over ipc:// in run/. */
static void s_plan(const node_t *n)
{
    char store_cmd[1000], store_pub[1000], notifier_ep[600] = "";
    const char *hooks_on = getenv("WEBHOOK_URLS");
    if (n->type == 0 && hooks_on && *hooks_on)
        snprintf(notifier_ep, sizeof notifier_ep, "ipc://%s/notifier.sock", n->run_dir);
    snprintf(store_cmd, sizeof store_cmd, "ipc://%s/store-cmd.sock", n->run_dir);
    snprintf(store_pub, sizeof store_pub, "ipc://%s/store-pub.sock", n->run_dir);
    unsetenv("STORE_REPLICAS"); /* a count for us; the store-nodes get addresses (or nothing) */
    if (n->type == 0 && n->replicas > 1) {
        store_cmd[0] = store_pub[0] = '\0';
        s_plan_replicas(n, store_cmd, store_pub, sizeof store_cmd);
    } else if (n->type == 0) {
        child_t *c = s_add("store-node", "store-node");
        s_env(c, "STORE_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "STORE_PUB_ENDPOINT", "%s", store_pub);
    } else {
        child_t *c = s_add("sync-relay", "sync-relay");
        s_env(c, "RELAY_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "RELAY_PUB_ENDPOINT", "%s", store_pub);
    }
    if (notifier_ep[0]) {
        /* Webhooks (docs/WEBHOOKS.md): the notifier follows the center's stream (every member's
         * with replicas); it validates its own WEBHOOK_* settings (passed through). */
        child_t *c = s_add("notifier", "notifier");
        s_env(c, "STORE_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "STORE_PUB_ENDPOINT", "%s", store_pub);
        s_env(c, "NOTIFIER_ENDPOINT", "%s", notifier_ep);
    }
    char eps[8 * 620] = "";
    for (uint64_t i = 1; i <= n->ncache; i++) {
        char name[32];
        snprintf(name, sizeof name, "cache-node-%llu", (unsigned long long)i);
        child_t *c = s_add(name, "cache-node");
        char ep[620];
        snprintf(ep, sizeof ep, "ipc://%s/cache-%llu.sock", n->run_dir, (unsigned long long)i);
        s_env(c, "CACHE_ENDPOINT", "%s", ep);
        s_env(c, "CACHE_ID", "%s-c%llu", n->node_id, (unsigned long long)i);
        s_env(c, "STORE_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "STORE_PUB_ENDPOINT", "%s", store_pub);
        if (i > 1)
            strcat(eps, ",");
        strcat(eps, ep);
    }
    child_t *gw = s_add("gateway", "gateway");
    s_env(gw, "CACHE_ENDPOINTS", "%s", eps);
    /* The gateway follows the change stream too (SSE watch streams). */
    s_env(gw, "STORE_CMD_ENDPOINT", "%s", store_cmd);
    s_env(gw, "STORE_PUB_ENDPOINT", "%s", store_pub);
    /* The gateway's /metrics shows the notifier's numbers (it polls its STATS). */
    if (notifier_ep[0])
        s_env(gw, "NOTIFIER_ENDPOINT", "%s", notifier_ep);
}

/* Start the children in order, each once the previous one is ready; then the launcher's own
 * ready line naming the address the gateway bound. Returns 0, or the exit status. */
static int s_start_all(const node_t *n)
{
    char ready[512] = "";
    for (int i = 0; i < s_nchildren; i++) {
        if (s_start(&s_children[i], true, ready, sizeof ready) < 0) {
            s_stop_all();
            return s_child_exit == 2 ? 2 : 1; /* a configuration the child refused stays a usage error */
        }
        LOG(LOG_INFO, "%s (pid %d): %s", s_children[i].name, (int)s_children[i].pid, ready);
    }
    /* The address the gateway bound, as its own ready line says ("gateway http=ADDR:PORT"). */
    char bound[128] = "?";
    const char *http = strstr(ready, "http=");
    if (http)
        snprintf(bound, sizeof bound, "%.*s", (int)strcspn(http + 5, " \n"), http + 5);
    char line[700];
    snprintf(line, sizeof line, "http=%s node_id=%s node_type=%s data_dir=%s%s", bound, n->node_id, s_types[n->type],
             n->abs_dir, n->replicas > 1 ? (n->replicas == 3 ? " store_replicas=3" : " store_replicas=5") : "");
    printf("ready %s\n", line);
    fflush(stdout);
    zu_signal_ready(line); /* for supervisors and tests that start the launcher itself */
    return 0;
}

/* Restart what exits, with backoff (100 ms doubling to 5 s; back to 100 ms after 30 s of running),
 * until SIGINT/SIGTERM. */
static void s_supervise(void)
{
    while (!s_stop) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL); /* woken early by SIGCHLD/SIGTERM; restarts are timer driven */
        s_sigchld = 0;
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < s_nchildren; i++) {
                child_t *c = &s_children[i];
                if (c->pid != pid)
                    continue;
                c->pid = 0;
                uint64_t now = util_mono_ms();
                if (now - c->started_ms > 30000)
                    c->backoff_ms = 100;
                c->restart_at_ms = now + c->backoff_ms;
                LOG(LOG_WARN, "%s (pid %d) %s %d; restarting in %llu ms", c->name, (int)pid,
                    WIFSIGNALED(st) ? "killed by signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                    (unsigned long long)c->backoff_ms);
                c->backoff_ms = MIN(c->backoff_ms * 2, 5000);
            }
        }
        uint64_t now = util_mono_ms();
        for (int i = 0; i < s_nchildren && !s_stop; i++) {
            child_t *c = &s_children[i];
            if (c->pid == 0 && c->restart_at_ms && now >= c->restart_at_ms) {
                c->restart_at_ms = 0;
                c->restarts++;
                if (s_start(c, false, NULL, 0) == 0)
                    LOG(LOG_NOTICE, "%s restarted (pid %d, restart #%u)", c->name, (int)c->pid, c->restarts);
                else
                    c->restart_at_ms = now + c->backoff_ms;
            }
        }
    }
}

int main(int argc, char **argv)
{
    const char *rfd = getenv("READY_FD");
    if (rfd && *rfd)
        fcntl(atoi(rfd), F_SETFD, FD_CLOEXEC); /* our own ready pipe is not the children's */
    node_t n = {0};
    cli_start(argc, argv, &s_cli, "launcher", s_config, &n);
    setenv("PRESENCE_ENV_CHECKED", "1", 1); /* the children need not warn again */
    int rc = s_prepare(&n);
    if (rc)
        return rc;
    s_plan(&n);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = s_start_all(&n);
    if (rc)
        return rc;
    s_supervise();
    LOG(LOG_NOTICE, "stopping all children");
    s_stop_all();
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
