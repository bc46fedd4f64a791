/* stats.c -- stats lists and histograms (see stats.h). */
#include "stats.h"
#include "procstat.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void stats_hist_init_latency(stats_hist_t *h)
{
    static const uint64_t b[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
                                 1000000, 2500000, 5000000, 10000000};
    memset(h, 0, sizeof *h);
    h->nb = (int)ARRAY_LEN(b);
    memcpy(h->bounds_us, b, sizeof b);
    h->unit_seconds = 1;
}

void stats_hist_init_pow2(stats_hist_t *h, int n)
{
    memset(h, 0, sizeof *h);
    if (n > STATS_HIST_MAX_BUCKETS)
        n = STATS_HIST_MAX_BUCKETS;
    h->nb = n;
    for (int i = 0; i < n; i++)
        h->bounds_us[i] = 1ull << i;
}

void stats_hist_observe(stats_hist_t *h, uint64_t v)
{
    int i = 0;
    while (i < h->nb && v > h->bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

uint64_t stats_hist_quantile(const stats_hist_t *h, double q)
{
    uint64_t total = 0;
    for (int i = 0; i <= h->nb; i++)
        total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.5), acc = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i <= h->nb; i++) {
        acc += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (acc >= want)
            return i < h->nb ? h->bounds_us[i] : UINT64_MAX;
    }
    return UINT64_MAX;
}

void stats_list_init(stats_list_t *l)
{
    memset(l, 0, sizeof *l);
}

void stats_list_reset(stats_list_t *l)
{
    l->n = 0;
    l->arena_len = 0;
}

void stats_list_fini(stats_list_t *l)
{
    free(l->v);
    free(l->arena);
    stats_list_init(l);
}

static void s_add(stats_list_t *l, const char *name, size_t len, uint64_t value)
{
    if (len > PROTO_STAT_NAME_MAX || l->n >= PROTO_STATS_MAX)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 32;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    if (!l->arena || l->arena_len + len > l->arena_cap) { /* an empty first name still needs storage */
        /* Names are stored as offsets until the arena stops moving; fix pointers after growth. */
        size_t cap = l->arena_cap ? l->arena_cap : 2048;
        while (cap < l->arena_len + len)
            cap *= 2;
        char *old = l->arena;
        l->arena = xrealloc(l->arena, cap);
        l->arena_cap = cap;
        for (uint32_t i = 0; i < l->n; i++)
            l->v[i].name.p = l->arena + (l->v[i].name.p - old);
    }
    memcpy(l->arena + l->arena_len, name, len);
    l->v[l->n].name.p = l->arena + l->arena_len;
    l->v[l->n].name.len = (uint32_t)len;
    l->v[l->n].value = value;
    l->arena_len += len;
    l->n++;
}

void stats_add(stats_list_t *l, const char *name, uint64_t value)
{
    s_add(l, name, strlen(name), value);
}

void stats_addf(stats_list_t *l, uint64_t value, const char *fmt, ...)
{
    char buf[PROTO_STAT_NAME_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && n <= (int)PROTO_STAT_NAME_MAX)
        s_add(l, buf, (size_t)n, value);
}

void stats_add_hist(stats_list_t *l, const char *name, const char *labels, const stats_hist_t *h)
{
    uint64_t acc = 0;
    const char *sep = labels && *labels ? "," : "";
    const char *lab = labels ? labels : "";
    for (int i = 0; i <= h->nb; i++) {
        acc += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        char le[32];
        if (i == h->nb)
            snprintf(le, sizeof le, "+Inf");
        else if (h->unit_seconds)
            snprintf(le, sizeof le, "%g", (double)h->bounds_us[i] / 1e6);
        else
            snprintf(le, sizeof le, "%llu", (unsigned long long)h->bounds_us[i]);
        stats_addf(l, acc, "%s_bucket{%s%sle=\"%s\"}", name, lab, sep, le);
    }
    if (*lab) {
        stats_addf(l, atomic_load_explicit(&h->sum, memory_order_relaxed), "%s_sum{%s}%s", name, lab,
                   h->unit_seconds ? ":us" : "");
        stats_addf(l, atomic_load_explicit(&h->count, memory_order_relaxed), "%s_count{%s}", name, lab);
    } else {
        stats_addf(l, atomic_load_explicit(&h->sum, memory_order_relaxed), "%s_sum%s", name,
                   h->unit_seconds ? ":us" : "");
        stats_addf(l, atomic_load_explicit(&h->count, memory_order_relaxed), "%s_count", name);
    }
}

int stats_find(const proto_stat_t *v, uint32_t n, const char *name, uint64_t *value)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].name.len == len && memcmp(v[i].name.p, name, len) == 0) {
            *value = v[i].value;
            return 1;
        }
    }
    return 0;
}

void stats_add_process(stats_list_t *l, const char *labels, const procstat_t *ps)
{
    stats_addf(l, ps->cpu_us, "process_cpu_seconds_total{%s}:us", labels);
    stats_addf(l, ps->rss_bytes, "process_resident_memory_bytes{%s}", labels);
    stats_addf(l, ps->vsize_bytes, "process_virtual_memory_bytes{%s}", labels);
    stats_addf(l, ps->open_fds, "process_open_fds{%s}", labels);
    stats_addf(l, ps->max_fds, "process_max_fds{%s}", labels);
    stats_addf(l, ps->start_time_us, "process_start_time_seconds{%s}:us", labels);
}

void stats_add_build_info(stats_list_t *l, const char *labels, const char *version, const char *commit)
{
    stats_addf(l, 1, "presence_build_info{%s,version=\"%s\",commit=\"%s\"}", labels, version, commit);
}
