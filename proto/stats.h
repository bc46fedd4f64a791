/* stats.h -- building and reading the name/value lists that PONG and STATS_REPLY carry.
 *
 * Names are Prometheus series names, labels included (`cache_hits_total{node="c1"}`). Values are
 * unsigned integers; a name ending in ":us" holds microseconds and is rendered in seconds by the
 * gateway (histogram sums). Histograms are exported as cumulative `_bucket{le="..."}` series plus
 * `_sum:us` and `_count`.
 *
 * stats_hist_t is safe to update from one thread while another exports it (relaxed atomics: a
 * scrape may see a sum and a count from slightly different instants, as Prometheus tolerates).
 */
#ifndef PRESENCE_STATS_H
#define PRESENCE_STATS_H

#include "proto.h"

#include <stdatomic.h>
#include <stdint.h>

#define STATS_HIST_MAX_BUCKETS 16

typedef struct stats_hist {
    int nb;
    uint64_t bounds_us[STATS_HIST_MAX_BUCKETS]; /* upper bounds in microseconds (or plain units) */
    _Atomic uint64_t counts[STATS_HIST_MAX_BUCKETS + 1];
    _Atomic uint64_t sum, count;
    int unit_seconds; /* bounds and sum are microseconds rendered as seconds */
} stats_hist_t;

/* Latency histogram with Prometheus-like second buckets (0.0001 .. 10 s). */
void stats_hist_init_latency(stats_hist_t *h);
/* Histogram of plain sizes with power-of-two bounds 1 .. 2^(n-1). */
void stats_hist_init_pow2(stats_hist_t *h, int n);
void stats_hist_observe(stats_hist_t *h, uint64_t v);
/* Value at quantile q (0..1) as the upper bound of the bucket holding it (0 when empty). */
uint64_t stats_hist_quantile(const stats_hist_t *h, double q);

/* A list of stats with its own name storage. */
typedef struct stats_list {
    proto_stat_t *v;
    uint32_t n, cap;
    char *arena;
    size_t arena_len, arena_cap;
} stats_list_t;

void stats_list_init(stats_list_t *l);
void stats_list_reset(stats_list_t *l);
void stats_list_fini(stats_list_t *l);
void stats_add(stats_list_t *l, const char *name, uint64_t value);
void stats_addf(stats_list_t *l, uint64_t value, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Export a histogram as `name_bucket{<labels,>le="..."}`, `name_sum[:us]`, `name_count`.
 * `labels` may be NULL or e.g. `route="get"`. */
void stats_add_hist(stats_list_t *l, const char *name, const char *labels, const stats_hist_t *h);

/* The process_* series of one process (docs/METRICS.md) from what procstat_read() gave, each
 * labelled with `labels` (e.g. `proc="store-node"`): process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_max_fds, process_start_time_seconds. And presence_build_info{<labels>,version,commit} 1.
 * Pure: the caller reads the numbers (common/procstat.h). */
struct procstat;
void stats_add_process(stats_list_t *l, const char *labels, const struct procstat *ps);
void stats_add_build_info(stats_list_t *l, const char *labels, const char *version, const char *commit);

/* Find a stat by exact name in a decoded list; returns 1 and *value, or 0. */
int stats_find(const proto_stat_t *v, uint32_t n, const char *name, uint64_t *value);

#endif
