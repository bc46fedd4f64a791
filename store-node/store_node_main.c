/* store_node_main.c -- the store-node process: the environment, the store directory's lock, the
 * signals, one node run until SIGTERM/SIGINT (the node itself is store-node/store_node.c).
 *
 * A configuration error names its variable and exits 2 before anything is opened; so does a store
 * directory another store-node holds. The ready line goes out once the store is open and the
 * sockets are bound.
 *
 * Replicated (STORE_REPLICAS = the members' raft addresses): the raft log lives in $DATA_DIR/raft
 * next to the LMDB state in $DATA_DIR/store. The state is not fsynced (the log is the durable
 * record), so a start after an OS crash (another boot id, no clean stop) discards it and rebuilds
 * it from the log: LMDB may not survive a power loss with unsynced commits. A member that failed
 * (it could not apply a committed entry) exits 1 to be restarted.
 */
#include "cfg.h"
#include "cli.h"
#include "curve.h"
#include "envreg.h"
#include "log.h"
#include "store_model.h"
#include "store_node.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static volatile sig_atomic_t s_stop;

typedef struct config {
    store_node_config_t node;
    char data_dir[400];
    bool insecure; /* CENTER_INSECURE: a leaf link without CurveZMQ was asked for */
} config_t;

/* STORE_REPLICAS: HOST:PORT,HOST:PORT,... (member i = the i-th; each may be written tcp://HOST:PORT).
 * STORE_REPLICA_ID names ours, or the host name's StatefulSet ordinal does (store-2 -> member 3). */
static int s_config_repl(store_node_config_t *c, const char *data_dir, char *err)
{
    char list[1024] = "";
    if (cfg_str("STORE_REPLICAS", list, sizeof list, err) < 0)
        return -1;
    if (!list[0])
        return 0;
    if (strspn(list, "0123456789") == strlen(list)) {
        snprintf(err, CFG_ERR_LEN,
                 "STORE_REPLICAS: a store-node needs the members' raft addresses (HOST:PORT,HOST:PORT,...); a count "
                 "is for the launcher");
        return -1;
    }
    store_node_repl_t *r = &c->repl;
    char spec[1400] = "", *p = list, *tok;
    unsigned n = 0;
    while ((tok = strsep(&p, ","))) {
        if (strncmp(tok, "tcp://", 6) == 0)
            tok += 6; /* written as an endpoint (compose, Helm) */
        size_t at = strlen(spec);
        snprintf(spec + at, sizeof spec - at, "%s%u@%s", n ? "," : "", n + 1, tok);
        n++;
    }
    char rerr[REPL_ERR_LEN];
    if (repl_parse_members(spec, r->members, REPL_MEMBERS_MAX, &r->nmembers, rerr) != REPL_OK) {
        snprintf(err, CFG_ERR_LEN, "STORE_REPLICAS: %s", rerr);
        return -1;
    }
    uint64_t self = 0;
    if (cfg_u64("STORE_REPLICA_ID", 1, r->nmembers, &self, err) < 0)
        return -1;
    if (!self) {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        const char *dash = strrchr(host, '-');
        if (dash && dash[1] && strspn(dash + 1, "0123456789") == strlen(dash + 1))
            self = strtoull(dash + 1, NULL, 10) + 1;
        if (!self || self > r->nmembers) {
            snprintf(err, CFG_ERR_LEN,
                     "STORE_REPLICA_ID: required (1..%u) when the host name '%s' has no -ORDINAL suffix below %u",
                     r->nmembers, host, r->nmembers);
            return -1;
        }
    }
    r->self = self;
    r->election_ms = 500;
    r->snapshot_entries = 8192;
    uint64_t dedup_ms = 60000;
    if (cfg_str("STORE_RAFT_BIND", r->bind, sizeof r->bind, err) < 0 ||
        cfg_u64("STORE_ELECTION_MS", 100, 60000, &r->election_ms, err) < 0 ||
        cfg_u64("STORE_SNAPSHOT_ENTRIES", 64, 100000000, &r->snapshot_entries, err) < 0 ||
        cfg_duration_ms("STORE_DEDUP_WINDOW", 1000, 1000, 3600000, &dedup_ms, err) < 0)
        return -1;
    snprintf(r->raft_dir, sizeof r->raft_dir, "%s/raft", data_dir);
    c->store.dedup_window_us = dedup_ms * 1000;
    c->store.replicated = true;
    return 0;
}

static int s_config(void *arg, char *err)
{
    static const char *const modes[] = {"full", "nometa", "none", NULL};
    config_t *cf = arg;
    store_node_config_t *c = &cf->node;
    char *data_dir = cf->data_dir;
    size_t dlen = sizeof cf->data_dir;
    memset(cf, 0, sizeof *cf);
    snprintf(data_dir, dlen, "./data");
    int sync_mode = STORE_SYNC_FULL;
    c->flush_ms = 200;
    c->hugz_ms = 1000;
    c->batch_max = 4096;
    c->queue_max = 65536;
    c->sweep_max = 1000;
    c->pub_hwm = 100000;
    c->touch_sync_ms = 1000;
    uint64_t map_mb = 64, map_max_mb = 65536, retention_ms = 30ull * 86400000, ttl = 3600, log_max = 2000000, max_ses = 32;
    if (cfg_str("DATA_DIR", data_dir, dlen, err) < 0 || cfg_enum("SYNC_MODE", modes, &sync_mode, err) < 0 ||
        cfg_u64("SYNC_FLUSH_MS", 1, 60000, &c->flush_ms, err) < 0 ||
        cfg_u64("STORE_HUGZ_MS", 10, 60000, &c->hugz_ms, err) < 0 ||
        cfg_u64("STORE_BATCH_MAX", 1, 100000, &c->batch_max, err) < 0 ||
        cfg_u64("STORE_QUEUE_MAX", 1, 10000000, &c->queue_max, err) < 0 ||
        cfg_u64("STORE_SWEEP_MAX", 1, 100000, &c->sweep_max, err) < 0 ||
        cfg_u64("STORE_PUB_HWM", 1, 10000000, &c->pub_hwm, err) < 0 ||
        cfg_u64("TOUCH_SYNC_MS", 0, 60000, &c->touch_sync_ms, err) < 0 ||
        cfg_u64("STORE_MAP_SIZE_MB", 1, 1u << 24, &map_mb, err) < 0 ||
        cfg_u64("STORE_MAP_MAX_MB", 1, 1u << 24, &map_max_mb, err) < 0 ||
        cfg_duration_ms("RETENTION", 1000, 1, 3650ull * 86400000, &retention_ms, err) < 0 ||
        cfg_u64("PRESENCE_TTL", 1, PROTO_TTL_MAX, &ttl, err) < 0 ||
        cfg_u64("STORE_LOG_MAX", 1, 1000000000, &log_max, err) < 0 ||
        cfg_u64("MAX_SESSIONS", 1, STORE_SESSIONS_MAX, &max_ses, err) < 0 ||
        cfg_u64("CENTER_PORT", 1, 65534, &c->center_port, err) < 0)
        return -1;
    snprintf(c->cmd_ep, sizeof c->cmd_ep, "ipc://%s/run/store-cmd.sock", data_dir);
    snprintf(c->pub_ep, sizeof c->pub_ep, "ipc://%s/run/store-pub.sock", data_dir);
    if (cfg_str("STORE_CMD_ENDPOINT", c->cmd_ep, sizeof c->cmd_ep, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", c->pub_ep, sizeof c->pub_ep, err) < 0)
        return -1;
    snprintf(c->center_addr, sizeof c->center_addr, "*");
    if (cfg_str("CENTER_BIND_ADDR", c->center_addr, sizeof c->center_addr, err) < 0 ||
        cfg_bool("CENTER_INSECURE", &cf->insecure, err) < 0)
        return -1;
    int k = curve_key_load("CURVE_SERVER_SECRET_KEY", c->curve_sec, err);
    if (k < 0)
        return -1;
    c->curve = k == 1;
    /* The leaf link accepts writes: without CurveZMQ anyone who reaches it writes any record with
     * no token. So it needs keys, or an explicit CENTER_INSECURE=true -- and then it binds
     * loopback unless CENTER_BIND_ADDR says otherwise. */
    if (c->center_port && !c->curve && !cf->insecure) {
        snprintf(err, CFG_ERR_LEN,
                 "CENTER_PORT: the leaf link needs CurveZMQ: set CURVE_SERVER_SECRET_KEY and CURVE_ALLOWED_CLIENTS "
                 "(presence-keygen makes keys), or CENTER_INSECURE=true on a network you trust");
        return -1;
    }
    if (c->center_port && !c->curve && !(getenv("CENTER_BIND_ADDR") && getenv("CENTER_BIND_ADDR")[0]))
        snprintf(c->center_addr, sizeof c->center_addr, "127.0.0.1");
    snprintf(c->store_path, sizeof c->store_path, "%s/store", data_dir);
    c->store.path = c->store_path;
    c->store.sync_mode = sync_mode;
    c->store.map_size = map_mb << 20;
    c->store.map_size_max = MAX(map_max_mb, map_mb) << 20;
    c->store.retention_us = retention_ms * 1000;
    c->store.default_ttl_s = ttl;
    c->store.log_max = log_max;
    c->store.max_sessions = (uint32_t)max_ses;
    return s_config_repl(c, data_dir, err);
}

/* One store-node per database: LMDB itself lets several processes open an environment, and two
 * writers would each continue the sequence from what they read. An exclusive lock held for the
 * process's life (released by the kernel if it dies) makes a second one exit 2 at once. */
static int s_lock_store_dir(const char *store_path)
{
    if (mkdir(store_path, 0750) < 0 && errno != EEXIST) {
        LOG(LOG_ERROR, "DATA_DIR: cannot create %s: %s", store_path, strerror(errno));
        return -1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/store-node.lock", store_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        LOG(LOG_ERROR, "DATA_DIR: the store in %s is in use by another store-node (%s); stop it or choose another DATA_DIR",
            store_path, fd < 0 ? strerror(errno) : "locked");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0; /* the fd stays open (and locked) until exit */
}

/* Replicated: the LMDB state is not fsynced, and LMDB does not promise a NOSYNC environment
 * survives an OS crash. `boot` holds the boot id while the store is open and "clean" after a clean
 * stop; another boot id without a clean stop means the OS went down under us: the state is
 * discarded and rebuilt from the raft snapshot and log (docs/REPLICATION.md, durability). */
static void s_boot_id(char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (fgets(out, (int)len, f))
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

static int s_write_boot(const char *store_path, const char *what)
{
    char path[600];
    snprintf(path, sizeof path, "%s/boot", store_path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    int rc = write(fd, what, strlen(what)) == (ssize_t)strlen(what) && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    return rc;
}

static void s_check_boot(const char *store_path)
{
    char path[600], was[64] = "", now[64];
    snprintf(path, sizeof path, "%s/boot", store_path);
    s_boot_id(now, sizeof now);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(was, sizeof was, f))
            was[strcspn(was, "\n")] = '\0';
        fclose(f);
    }
    if (was[0] && strcmp(was, "clean") != 0 && strcmp(was, now) != 0) {
        LOG(LOG_WARN, "replication: the system restarted since this store was last open and it was not stopped "
                      "cleanly: discarding the local state, rebuilding it from the raft log");
        snprintf(path, sizeof path, "%s/data.mdb", store_path);
        unlink(path);
        snprintf(path, sizeof path, "%s/lock.mdb", store_path);
        unlink(path);
    }
    if (s_write_boot(store_path, now) < 0)
        LOG(LOG_WARN, "cannot record the boot id in %s/boot: %s", store_path, strerror(errno));
}

static const cli_desc_t s_cli = {
    .name = "store-node",
    .summary = "The center's durable store: LMDB with group commit, the TTL sweeper, and the sequenced change\n"
               "stream every cache-node, gateway and leaf relay follows.",
    .usage = "",
    .procs = ENVREG_STORE,
};

int main(int argc, char **argv)
{
    config_t cf;
    cli_start(argc, argv, &s_cli, "store", s_config, &cf);
    cli_stop_on_signals(&s_stop);
    const store_node_config_t cfg = cf.node;
    char err[CFG_ERR_LEN] = "";
    if (s_lock_store_dir(cfg.store_path) < 0)
        return 2;
    char rundir[600];
    snprintf(rundir, sizeof rundir, "%s/run", cf.data_dir);
    mkdir(rundir, 0750);
    bool replicated = cfg.repl.nmembers > 0;
    if (replicated)
        s_check_boot(cfg.store_path);

    void *zctx = zmq_ctx_new();
    store_node_t *n;
    int rc = store_node_new(zctx, &cfg, &n, err);
    if (rc < 0) {
        LOG(LOG_ERROR, "%s", err);
        zmq_ctx_term(zctx);
        return rc == -2 ? 2 : 1;
    }
    char center[160] = "";
    if (cfg.center_port && !cfg.curve)
        LOG(LOG_WARN, "CENTER_INSECURE=true: the leaf link tcp://%s:%llu (and +1) has no CurveZMQ: it is neither "
            "authenticated nor encrypted, and anyone who reaches it can write any record without a token",
            cfg.center_addr, (unsigned long long)cfg.center_port);
    if (cfg.center_port)
        snprintf(center, sizeof center, " center=tcp://%s:%llu curve=%s", cfg.center_addr,
                 (unsigned long long)cfg.center_port, cfg.curve ? "on" : "off");
    store_info_t info;
    store_get_info(store_node_store(n), &info);
    LOG(LOG_NOTICE, "ready cmd=%s pub=%s%s sync=%s epoch=%llu seq=%llu records=%llu", cfg.cmd_ep, cfg.pub_ep, center,
        replicated ? "raft" : store_sync_mode_name(cfg.store.sync_mode), (unsigned long long)info.epoch, (unsigned long long)info.last_seq,
        (unsigned long long)info.records);
    if (replicated)
        LOG(LOG_NOTICE, "replication: member %llu of %u (raft %s, log in %s, election timeout %llu ms)",
            (unsigned long long)cfg.repl.self, cfg.repl.nmembers, cfg.repl.members[cfg.repl.self - 1].address,
            cfg.repl.raft_dir, (unsigned long long)cfg.repl.election_ms);
    char ready[800];
    snprintf(ready, sizeof ready, "store cmd=%s pub=%s%s", cfg.cmd_ep, cfg.pub_ep, replicated ? " replicated=1" : "");
    zu_signal_ready(ready);

    rc = store_node_run(n, &s_stop);
    const char *failed = store_node_failed(n);
    if (failed)
        LOG(LOG_ERROR, "replication failed (%s): exiting to be restarted", failed);
    else
        LOG(LOG_NOTICE, "stopping: draining the write queue");
    store_node_destroy(&n);
    if (replicated && !failed && rc == 0)
        s_write_boot(cfg.store_path, "clean");
    zmq_ctx_term(zctx);
    LOG(LOG_NOTICE, "stopped");
    return rc < 0 ? 1 : 0;
}
