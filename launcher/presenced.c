/* presenced.c -- the launcher: one command starts a whole node on one machine.
 *
 *   NODE_TYPE=center (default): store-node, CACHE_NODES cache-nodes (2), gateway
 *                               (+ notifier after the store-node when WEBHOOK_URLS is set)
 *   NODE_TYPE=leaf:             sync-relay (to CENTER_ENDPOINT), cache-nodes, gateway
 *
 * Processes are wired with ipc:// endpoints under $DATA_DIR/run. Each child is started with
 * READY_FD, a pipe it writes one "ready ..." line to once it serves; children start in dependency
 * order, each after the previous one said it was ready (with a deadline). The launcher prints
 * its own ready line when the gateway is ready:
 *
 *   ready http=127.0.0.1:8080 node_id=node-1 node_type=center data_dir=./data
 *
 * A child that exits unexpectedly is restarted with exponential backoff (100 ms .. 5 s; the
 * backoff resets after a child ran for 30 s). SIGINT/SIGTERM stop every child in reverse order
 * (SIGTERM, then SIGKILL after STOP_GRACE_MS) and the launcher exits 0.
 *
 * Without JWT_SECRET a development secret is created in $DATA_DIR/dev-jwt-secret (0600), and the
 * launcher says how to get a token. Every other variable is passed through to the children, which
 * validate their own settings.
 */
#include "cfg.h"
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 12
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
                LOG(LOG_ERROR, "%s exited before it was ready", c->name);
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

static int s_dev_secret(const char *data_dir)
{
    const char *s = getenv("JWT_SECRET");
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
    LOG(LOG_NOTICE, "JWT_SECRET is not set: using the development secret in %s; get a token with: make token SUB=alice",
        path);
    return 0;
}

int main(void)
{
    char err[CFG_ERR_LEN] = "";
    const char *rfd = getenv("READY_FD");
    if (rfd && *rfd)
        fcntl(atoi(rfd), F_SETFD, FD_CLOEXEC); /* our own ready pipe is not the children's */
    if (log_init("launcher", err, sizeof err) < 0) {
        fprintf(stderr, "presenced: %s\n", err);
        return 2;
    }
    static const char *const types[] = {"center", "leaf", NULL};
    int node_type = 0;
    uint64_t ncache = 2, port = 8080;
    char data_dir[400] = "./data", center[512] = "", node_id[65] = "node-1";
    if (cfg_enum("NODE_TYPE", types, &node_type, err) < 0 || cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0 ||
        cfg_u64("CACHE_NODES", 1, 8, &ncache, err) < 0 || cfg_u64("SERVICE_PORT", 0, 65535, &port, err) < 0 ||
        cfg_str("CENTER_ENDPOINT", center, sizeof center, err) < 0 ||
        cfg_str("NODE_ID", node_id, sizeof node_id, err) < 0 ||
        cfg_u64("STOP_GRACE_MS", 100, 600000, &s_stop_grace_ms, err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        return 2;
    }
    if (node_type == 1 && !center[0]) {
        LOG(LOG_ERROR, "CENTER_ENDPOINT: required for NODE_TYPE=leaf (tcp://HOST:PORT of the center's CENTER_PORT)");
        return 2;
    }
    /* Children get absolute paths: they may chdir, and ipc:// paths must be absolute anyway. */
    if (mkdir(data_dir, 0750) < 0 && errno != EEXIST) {
        LOG(LOG_ERROR, "DATA_DIR: cannot create %s: %s", data_dir, strerror(errno));
        return 1;
    }
    char abs_dir[PATH_MAX];
    if (!realpath(data_dir, abs_dir)) {
        LOG(LOG_ERROR, "DATA_DIR: %s: %s", data_dir, strerror(errno));
        return 1;
    }
    char run_dir[PATH_MAX];
    snprintf(run_dir, sizeof run_dir, "%s/run", abs_dir);
    mkdir(run_dir, 0750);
    if (strlen(run_dir) + 32 > 107) {
        LOG(LOG_ERROR, "DATA_DIR: %s is too long for ipc:// socket paths (108 bytes max); use a shorter path", abs_dir);
        return 2;
    }
    setenv("DATA_DIR", abs_dir, 1);
    if (!getenv("NODE_TYPE"))
        setenv("NODE_TYPE", types[node_type], 1);
    if (s_dev_secret(abs_dir) < 0)
        return 1;

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        LOG(LOG_ERROR, "cannot find my own binary: %s", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    snprintf(s_bindir, sizeof s_bindir, "%s", self);
    *strrchr(s_bindir, '/') = '\0';

    char store_cmd[600], store_pub[600];
    snprintf(store_cmd, sizeof store_cmd, "ipc://%s/store-cmd.sock", run_dir);
    snprintf(store_pub, sizeof store_pub, "ipc://%s/store-pub.sock", run_dir);
    if (node_type == 0) {
        child_t *c = s_add("store-node", "store-node");
        s_env(c, "STORE_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "STORE_PUB_ENDPOINT", "%s", store_pub);
        /* Webhooks (docs/WEBHOOKS.md): the notifier follows the center's stream; it validates
         * its own WEBHOOK_* settings (passed through). */
        const char *hooks = getenv("WEBHOOK_URLS");
        if (hooks && *hooks) {
            c = s_add("notifier", "notifier");
            s_env(c, "STORE_CMD_ENDPOINT", "%s", store_cmd);
            s_env(c, "STORE_PUB_ENDPOINT", "%s", store_pub);
        }
    } else {
        child_t *c = s_add("sync-relay", "sync-relay");
        s_env(c, "RELAY_CMD_ENDPOINT", "%s", store_cmd);
        s_env(c, "RELAY_PUB_ENDPOINT", "%s", store_pub);
    }
    char eps[8 * 620] = "";
    for (uint64_t i = 1; i <= ncache; i++) {
        char name[32];
        snprintf(name, sizeof name, "cache-node-%llu", (unsigned long long)i);
        child_t *c = s_add(name, "cache-node");
        char ep[620];
        snprintf(ep, sizeof ep, "ipc://%s/cache-%llu.sock", run_dir, (unsigned long long)i);
        s_env(c, "CACHE_ENDPOINT", "%s", ep);
        s_env(c, "CACHE_ID", "%s-c%llu", node_id, (unsigned long long)i);
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

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char ready[512] = "";
    for (int i = 0; i < s_nchildren; i++) {
        if (s_start(&s_children[i], true, ready, sizeof ready) < 0) {
            s_stop_all();
            return 1;
        }
        LOG(LOG_INFO, "%s (pid %d): %s", s_children[i].name, (int)s_children[i].pid, ready);
    }
    const char *http = strstr(ready, "http=");
    int gw_port = (int)port;
    if (http) {
        const char *colon = strrchr(http, ':');
        if (colon)
            gw_port = atoi(colon + 1);
    }
    char line[700];
    snprintf(line, sizeof line, "http=127.0.0.1:%d node_id=%s node_type=%s data_dir=%s", gw_port, node_id,
             types[node_type], abs_dir);
    printf("ready %s\n", line);
    fflush(stdout);
    zu_signal_ready(line); /* for supervisors and tests that start the launcher itself */

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
    LOG(LOG_NOTICE, "stopping all children");
    s_stop_all();
    LOG(LOG_NOTICE, "stopped");
    return 0;
}
