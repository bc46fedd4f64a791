/* repl_config.c -- the replication layer's configuration: validation, addresses and defaults.
 *
 * repl_start checks the caller's repl_config_t here before it allocates anything, then adopts it:
 * the member keeps its own copies of every string and of the member list (the caller's may go
 * away), and every field left 0 gets its default. Addresses are "HOST:PORT" with an IPv4 dotted
 * quad or a host name (repl_dns.c resolves names at every connection attempt). Every rule broken
 * is named in the error text.
 *
 * Key decision: validation is complete and up front, so the start-up steps that follow (repl.c)
 * meet only I/O errors. Threads: pure functions, except repl_config_adopt, which writes the
 * member's struct before any other thread sees it.
 */
#include "repl_int.h"
#include "repl_dns.h"

#include <inttypes.h>
#include <string.h>

/* "HOST:PORT": HOST an IPv4 dotted quad or a host name (letters, digits, '-', '.'; labels of
 * 1..63 bytes not starting or ending with '-'), PORT 1..65535. */
bool repl_config_valid_address(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || strlen(a) >= REPL_ADDR_MAX)
        return false;
    char host[REPL_ADDR_MAX];
    memcpy(host, a, (size_t)(colon - a));
    host[colon - a] = '\0';
    if (!repl_dns_is_ipv4(host)) {
        size_t label = 0;
        for (const char *h = host;; h++) {
            if (*h == '.' || *h == '\0') {
                if (label == 0 || h[-1] == '-')
                    return false;
                if (*h == '\0')
                    break;
                label = 0;
                continue;
            }
            bool ok = (*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || (*h == '-' && label > 0);
            if (!ok || ++label > 63)
                return false;
        }
    }
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return false;
    unsigned port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port >= 1 && port <= 65535;
}

/* The HOST of a valid "HOST:PORT" is an IPv4 dotted quad. */
bool repl_config_host_is_ipv4(const char *address)
{
    char host[REPL_ADDR_MAX];
    snprintf(host, sizeof host, "%s", address);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    return repl_dns_is_ipv4(host);
}

int repl_config_check(const repl_config_t *c, char *err)
{
    if (c->nmembers < 1 || c->nmembers > REPL_MEMBERS_MAX || !c->members) {
        repl_errf(err, "members: 1 to %d required, got %u", REPL_MEMBERS_MAX, c->nmembers);
        return -1;
    }
    bool self = false;
    for (unsigned i = 0; i < c->nmembers; i++) {
        const repl_member_t *m = &c->members[i];
        if (m->id == 0 || m->id > INT64_MAX) {
            repl_errf(err, "member %u: id must be 1..2^63-1", i + 1);
            return -1;
        }
        if (!memchr(m->address, '\0', sizeof m->address) || !repl_config_valid_address(m->address)) {
            repl_errf(err, "member %" PRIu64 ": address must be HOST:PORT (IPv4 or host name, port 1..65535)", m->id);
            return -1;
        }
        for (unsigned j = 0; j < i; j++) {
            if (c->members[j].id == m->id || strcmp(c->members[j].address, m->address) == 0) {
                repl_errf(err, "member %" PRIu64 ": id and address must be unique", m->id);
                return -1;
            }
        }
        self |= m->id == c->id;
    }
    if (!self) {
        repl_errf(err, "id %" PRIu64 " is not one of the members", c->id);
        return -1;
    }
    if (c->bind_address && (!repl_config_valid_address(c->bind_address) || !repl_config_host_is_ipv4(c->bind_address))) {
        repl_errf(err, "bind_address must be A.B.C.D:PORT");
        return -1;
    }
    if (!c->dir || !*c->dir || strlen(c->dir) >= REPL_DIR_MAX) {
        repl_errf(err, "dir must be a path of 1..%d bytes", REPL_DIR_MAX - 1);
        return -1;
    }
    if (!c->cb.on_apply || !c->cb.on_reject || !c->cb.on_restore || (!c->cb.on_snapshot && c->snapshot_threshold != UINT32_MAX)) {
        repl_errf(err, "callbacks on_apply, on_reject, on_restore and on_snapshot are required");
        return -1;
    }
    unsigned et = c->election_timeout_ms ? c->election_timeout_ms : 1000;
    unsigned hb = c->heartbeat_ms ? c->heartbeat_ms : 100;
    if (hb >= et || et > 600000) {
        repl_errf(err, "heartbeat_ms (%u) must be below election_timeout_ms (%u), which is at most 600000", hb, et);
        return -1;
    }
    if (c->entry_max > REPL_ENTRY_MAX) {
        repl_errf(err, "entry_max must be at most %u", REPL_ENTRY_MAX);
        return -1;
    }
    if (c->max_outstanding > (1u << 24)) {
        repl_errf(err, "max_outstanding must be at most %u", 1u << 24);
        return -1;
    }
    return 0;
}

void repl_config_adopt(repl_t *s, const repl_config_t *cfg)
{
    s->cfg = *cfg;
    repl_config_t *c = &s->cfg;
    memcpy(s->members, cfg->members, cfg->nmembers * sizeof *s->members);
    c->members = s->members;
    snprintf(s->dir, sizeof s->dir, "%s", cfg->dir);
    c->dir = s->dir;
    if (cfg->bind_address) {
        snprintf(s->bind, sizeof s->bind, "%s", cfg->bind_address);
        c->bind_address = s->bind;
    }
    for (unsigned i = 0; i < c->nmembers; i++)
        if (s->members[i].id == c->id)
            snprintf(s->self_addr, sizeof s->self_addr, "%s", s->members[i].address);
    if (!c->election_timeout_ms)
        c->election_timeout_ms = 1000;
    if (!c->heartbeat_ms)
        c->heartbeat_ms = 100;
    if (!c->snapshot_threshold)
        c->snapshot_threshold = 8192;
    if (!c->snapshot_trailing)
        c->snapshot_trailing = 1024;
    if (!c->connect_retry_ms)
        c->connect_retry_ms = 200;
    if (!c->install_snapshot_timeout_ms)
        c->install_snapshot_timeout_ms = 10000;
    if (!c->max_outstanding)
        c->max_outstanding = 4096;
    if (!c->entry_max)
        c->entry_max = REPL_ENTRY_MAX;
    if (!c->stop_timeout_ms)
        c->stop_timeout_ms = 30000;
    snprintf(s->snap_path, sizeof s->snap_path, "%s/repl-snapshot.tmp", s->dir);
    snprintf(s->restore_path, sizeof s->restore_path, "%s/repl-restore.tmp", s->dir);
}
