/* procstat.h -- what a process reports about itself as Prometheus's process_* series.
 *
 * Every process (gateway, cache-node, store-node, sync-relay, notifier) puts these numbers in its
 * STATS answer, labelled with its own name, and the gateway's /metrics shows them (docs/METRICS.md):
 * CPU seconds, resident and virtual memory, open and maximum file descriptors, start time. They
 * are read from the kernel on each call (getrusage, /proc/self), so a scrape sees them fresh.
 *
 * Thread-safe (no state).
 */
#ifndef PRESENCE_PROCSTAT_H
#define PRESENCE_PROCSTAT_H

#include <stdint.h>

typedef struct procstat {
    uint64_t cpu_us;        /* user + system CPU time of the whole process */
    uint64_t rss_bytes;     /* resident set size */
    uint64_t vsize_bytes;   /* virtual memory size */
    uint64_t open_fds;      /* entries of /proc/self/fd */
    uint64_t max_fds;       /* RLIMIT_NOFILE soft limit */
    uint64_t start_time_us; /* when the process started, Unix epoch */
} procstat_t;

/* Fill *out. A number the kernel does not give (no /proc) is left 0. Returns 0, or -1 when none
 * of /proc could be read (the CPU time and fd limit are still filled). */
int procstat_read(procstat_t *out);

#endif
