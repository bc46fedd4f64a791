/* cache_stats.c -- the cache-node's numbers for PING/STATS answers: its sync state, store link,
 * cache engine and request counters, its process, and the store's own numbers as last polled.
 *
 * A PONG (full = false) carries what health and routing need (sync state and sequence, store up,
 * items) plus a replicated center's store_repl_* state; STATS (full = true) carries everything,
 * labelled node="CACHE_ID". Names and types: docs/METRICS.md.
 *
 * One thread: the node's loop (it reads the node's state, changes nothing).
 */
#include "cache_node_int.h"
#include "cli.h"
#include "procstat.h"

#include <stdio.h>
#include <string.h>

void cache_stats_collect(const cache_node_t *cn, stats_list_t *l, bool full)
{
    cache_metrics_t cm;
    cache_get_metrics(cn->cache, &cm);
    sync_stats_t ss;
    sync_client_get_stats(cn->sync, &ss);
    const char *id = cn->cfg.id;
    stats_addf(l, ss.state, "cache_sync_state{node=\"%s\"}", id);
    stats_addf(l, ss.seq, "sync_sequence{node=\"%s\"}", id);
    stats_addf(l, ss.epoch, "sync_epoch{node=\"%s\"}", id);
    stats_addf(l, ss.lag_ms * 1000, "sync_lag_seconds{node=\"%s\"}:us", id);
    /* Requests are served optimistically from the start (cache_link_up); readiness and health report
     * the store path only once it has really answered. */
    stats_addf(l, cache_link_up(cn) && cn->store_answered, "cache_store_up{node=\"%s\"}", id);
    stats_addf(l, cn->store_rtt_us, "cache_store_rtt_seconds{node=\"%s\"}:us", id);
    stats_addf(l, cn->store_seq, "cache_store_sequence{node=\"%s\"}", id);
    stats_addf(l, cn->link_up, "cache_link_up{node=\"%s\"}", id);
    stats_addf(l, cn->link_lag_us, "cache_link_lag_seconds{node=\"%s\"}:us", id);
    stats_addf(l, cm.items, "cache_items{node=\"%s\"}", id);
    if (!full) {
        /* A replicated center's state, as last polled from its leader (/health/store shows it). */
        for (uint32_t i = 0; i < cn->store_stats.n; i++) {
            const proto_str_t *nm = &cn->store_stats.v[i].name;
            static const char pre[] = "store_repl_", hist[] = "store_repl_commit_seconds";
            if (nm->len > sizeof pre - 1 && memcmp(nm->p, pre, sizeof pre - 1) == 0 &&
                !(nm->len >= sizeof hist - 1 && memcmp(nm->p, hist, sizeof hist - 1) == 0)) {
                char name[PROTO_STAT_NAME_MAX + 1];
                memcpy(name, nm->p, nm->len);
                name[nm->len] = '\0';
                stats_add(l, name, cn->store_stats.v[i].value);
            }
        }
        return;
    }
    stats_addf(l, ss.gaps, "sync_gaps_total{node=\"%s\"}", id);
    stats_addf(l, ss.resyncs, "sync_resyncs_total{node=\"%s\"}", id);
    stats_addf(l, ss.snapshots, "sync_snapshots_total{node=\"%s\"}", id);
    stats_addf(l, ss.silences, "sync_silences_total{node=\"%s\"}", id);
    stats_addf(l, ss.changes_applied, "sync_changes_applied_total{node=\"%s\"}", id);
    stats_addf(l, (uint64_t)cn->members.cur + 1, "cache_store_member{node=\"%s\"}", id);
    stats_addf(l, cn->leader_switches, "cache_store_leader_switches_total{node=\"%s\"}", id);
    stats_addf(l, cn->store_retries, "cache_store_retries_total{node=\"%s\"}", id);
    stats_addf(l, ss.leader_switches, "sync_leader_switches_total{node=\"%s\"}", id);
    stats_addf(l, ss.malformed + cn->malformed_total, "cache_malformed_total{node=\"%s\"}", id);
    stats_addf(l, cm.hits, "cache_hits_total{node=\"%s\"}", id);
    stats_addf(l, cm.misses, "cache_misses_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_added, "cache_keys_added_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_updated, "cache_keys_updated_total{node=\"%s\"}", id);
    stats_addf(l, cm.keys_evicted, "cache_evictions_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost_added, "cache_cost_added_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost_evicted, "cache_cost_evicted_total{node=\"%s\"}", id);
    stats_addf(l, cm.rejections, "cache_rejections_total{node=\"%s\"}", id);
    stats_addf(l, cm.stale_refused, "cache_stale_refused_total{node=\"%s\"}", id);
    stats_addf(l, cm.cost, "cache_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cm.max_cost, "cache_max_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cm.window_max_cost, "cache_window_cost_bytes{node=\"%s\"}", id);
    stats_addf(l, cn->requests_total, "cache_requests_total{node=\"%s\"}", id);
    stats_addf(l, cn->applies_rejected, "cache_apply_rejected_total{node=\"%s\"}", id);
    stats_addf(l, cn->applies_refuted, "cache_apply_refuted_total{node=\"%s\"}", id);
    stats_addf(l, cache_apply_count(cn->applies), "cache_apply_unconfirmed{node=\"%s\"}", id);
    stats_addf(l, cn->fetches_total, "cache_store_fetches_total{node=\"%s\"}", id);
    stats_addf(l, cn->fetch_keys_total, "cache_store_fetch_keys_total{node=\"%s\"}", id);
    stats_addf(l, cn->coalesced_total, "cache_coalesced_misses_total{node=\"%s\"}", id);
    stats_addf(l, cn->store_timeouts, "cache_store_timeouts_total{node=\"%s\"}", id);
    stats_addf(l, cn->store_unavailable, "cache_store_unavailable_total{node=\"%s\"}", id);
    stats_addf(l, cn->stale_served, "cache_stale_served_total{node=\"%s\"}", id);
    stats_addf(l, cn->bypass_reads, "cache_bypass_reads_total{node=\"%s\"}", id);
    stats_addf(l, cn->fills_dropped, "cache_fills_dropped_total{node=\"%s\"}", id);
    stats_addf(l, cn->expired_writes, "cache_expired_writes_total{node=\"%s\"}", id);
    stats_addf(l, cn->stalls, "cache_stalls_total{node=\"%s\"}", id);
    stats_addf(l, idtab_count(&cn->pending), "cache_store_inflight{node=\"%s\"}", id);
    char lab[PROTO_NODE_ID_MAX + 40];
    snprintf(lab, sizeof lab, "proc=\"cache-node\",node=\"%s\"", id);
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, lab, &ps);
    stats_add_build_info(l, lab, cli_version(), cli_commit());
    /* The store's own numbers, as last polled (the gateway keeps one copy). */
    for (uint32_t i = 0; i < cn->store_stats.n; i++) {
        char name[PROTO_STAT_NAME_MAX + 1];
        memcpy(name, cn->store_stats.v[i].name.p, cn->store_stats.v[i].name.len);
        name[cn->store_stats.v[i].name.len] = '\0';
        stats_add(l, name, cn->store_stats.v[i].value);
    }
}
