/* gw_discovery.c -- the cache tier found by DNS (CACHE_DNS=name:port).
 *
 * For a cache tier whose members come and go (a Kubernetes Deployment scaled by an HPA, behind a
 * headless Service: the name resolves to the address of every ready pod), the gateway resolves the
 * name every CACHE_DNS_INTERVAL_MS on a thread of its own (getaddrinfo blocks; no event loop ever
 * waits on it) and keeps the answer in GW_MAX_NODES slots:
 *
 *   - an address that stays keeps its slot (its DEALERs stay connected, its keys stay put);
 *   - a new address takes a free slot; an address that is gone frees its slot;
 *   - a name that does not exist or has no address (no ready pod) empties every slot; a lookup
 *     that fails for another reason (the DNS server is unreachable) changes nothing.
 *
 * Each event-loop thread takes the table when its generation changes (gw_upstream.c, on its
 * ping tick) and (re)connects the slots that changed. Keys are placed by rendezvous hashing over
 * the slots' addresses, so every gateway agrees on a key's owner without talking to the others,
 * and a pod that goes or comes moves only its own share of the keys.
 *
 * Threads: the resolver thread writes s_slots under s_lock (a mutex nothing else is taken under,
 * held only for a copy); event-loop threads copy the table under it (gw_discovery_snapshot) and
 * read the generation and count as atomics.
 */
#include "gw_discovery.h"
#include "log.h"
#include "util.h"

#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_wake = PTHREAD_COND_INITIALIZER;
static char s_slots[GW_MAX_NODES][GW_ENDPOINT_MAX]; /* guarded by s_lock */
static atomic_uint s_gen;                          /* bumped (under s_lock) when s_slots change */
static atomic_int s_assigned;                      /* slots holding an address */
static bool s_stop;                                /* guarded by s_lock */
static pthread_t s_thread;

static int s_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Resolve the name into sorted, distinct endpoints. Returns their number, or -1 when the lookup
 * failed for a reason other than "no such name / no address" (keep what we have then). */
static int s_resolve(char (*out)[GW_ENDPOINT_MAX], int max)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(gw_cfg.cache_dns_host, gw_cfg.cache_dns_port, &hints, &res);
    if (rc == EAI_NONAME || rc == EAI_NODATA)
        return 0;
    if (rc != 0) {
        LOG_RATELIMITED(LOG_WARN, 10000, "CACHE_DNS: cannot resolve %s: %s (keeping %d cache-nodes)",
                        gw_cfg.cache_dns_host, gai_strerror(rc), atomic_load(&s_assigned));
        return -1;
    }
    int n = 0;
    bool capped = false;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        char ep[GW_ENDPOINT_MAX];
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *a = (const void *)ai->ai_addr;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            snprintf(ep, sizeof ep, "tcp://%s:%s", ip, gw_cfg.cache_dns_port);
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const void *)ai->ai_addr;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            snprintf(ep, sizeof ep, "tcp://[%s]:%s", ip, gw_cfg.cache_dns_port);
        } else {
            continue;
        }
        bool dup = false;
        for (int i = 0; i < n && !dup; i++)
            dup = strcmp(out[i], ep) == 0;
        if (dup)
            continue;
        if (n == max) {
            capped = true;
            continue;
        }
        memcpy(out[n++], ep, sizeof ep);
    }
    freeaddrinfo(res);
    if (capped)
        LOG_RATELIMITED(LOG_WARN, 60000, "CACHE_DNS: %s has more than %d addresses; using %d", gw_cfg.cache_dns_host,
                        max, max);
    qsort(out, (size_t)n, sizeof out[0], s_cmp);
    return n;
}

/* Fit a new answer into the slots: stayers keep theirs, leavers free theirs, newcomers take free
 * ones. Returns true if anything changed. */
static bool s_assign(char (*now)[GW_ENDPOINT_MAX], int n)
{
    bool changed = false;
    bool taken[GW_MAX_NODES] = {false};
    pthread_mutex_lock(&s_lock);
    for (int s = 0; s < GW_MAX_NODES; s++) {
        if (!s_slots[s][0])
            continue;
        int found = -1;
        for (int i = 0; i < n && found < 0; i++)
            if (strcmp(now[i], s_slots[s]) == 0)
                found = i;
        if (found >= 0) {
            taken[found] = true;
        } else {
            LOG(LOG_NOTICE, "CACHE_DNS: cache-node %s left (slot %d)", s_slots[s], s);
            s_slots[s][0] = '\0';
            changed = true;
        }
    }
    for (int i = 0; i < n; i++) {
        if (taken[i])
            continue;
        for (int s = 0; s < GW_MAX_NODES; s++) {
            if (!s_slots[s][0]) {
                memcpy(s_slots[s], now[i], GW_ENDPOINT_MAX);
                LOG(LOG_NOTICE, "CACHE_DNS: cache-node %s joined (slot %d)", now[i], s);
                changed = true;
                break;
            }
        }
    }
    if (changed) {
        int a = 0;
        for (int s = 0; s < GW_MAX_NODES; s++)
            a += s_slots[s][0] != '\0';
        atomic_store(&s_assigned, a);
        atomic_fetch_add(&s_gen, 1);
    }
    pthread_mutex_unlock(&s_lock);
    return changed;
}

static void s_refresh(void)
{
    char now[GW_MAX_NODES][GW_ENDPOINT_MAX];
    int n = s_resolve(now, GW_MAX_NODES);
    if (n >= 0)
        s_assign(now, n);
}

static void *s_main(void *arg)
{
    pthread_mutex_lock(&s_lock);
    while (!s_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + gw_cfg.cache_dns_interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&s_wake, &s_lock, &ts);
        if (s_stop)
            break;
        pthread_mutex_unlock(&s_lock);
        s_refresh();
        pthread_mutex_lock(&s_lock);
    }
    pthread_mutex_unlock(&s_lock);
    return NULL;
}

int gw_discovery_start(char *err, size_t errlen)
{
    s_refresh(); /* the first answer before the event loops start (an empty one is fine) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&s_thread, NULL, s_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "CACHE_DNS: cannot start the resolver thread");
        return -1;
    }
    /* Detached: a lookup in progress may take the resolver's own timeouts to return, and nothing
     * waits for it at shutdown. */
    pthread_detach(s_thread);
    return 0;
}

void gw_discovery_stop(void)
{
    pthread_mutex_lock(&s_lock);
    s_stop = true;
    pthread_cond_signal(&s_wake);
    pthread_mutex_unlock(&s_lock);
}

unsigned gw_discovery_gen(void)
{
    return atomic_load(&s_gen);
}

int gw_discovery_assigned(void)
{
    return atomic_load(&s_assigned);
}

unsigned gw_discovery_snapshot(char (*out)[GW_ENDPOINT_MAX])
{
    pthread_mutex_lock(&s_lock);
    memcpy(out, s_slots, sizeof s_slots);
    unsigned gen = atomic_load(&s_gen);
    pthread_mutex_unlock(&s_lock);
    return gen;
}
