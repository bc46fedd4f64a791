/* gw_promtext.c -- the Prometheus text exposition of /metrics (see gw_promtext.h), and the table
 * of what every family means.
 *
 * Rendering: every series of every list becomes an entry (its printed name, its family, its
 * value); a series already seen is dropped; histogram families are recognised (a _bucket series
 * makes its base a histogram, and the base's _sum and _count join it); entries are sorted by
 * family, keeping the order they came in within one (buckets stay in le order); each family gets
 * its HELP and TYPE lines. The table below is the one place a family is described: docs/METRICS.md
 * says the same for people, and tests/metrics checks that a live /metrics has no family missing
 * from it. Pure; reentrant.
 */
#include "gw_promtext.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== the families ============================================================================ */

typedef struct help {
    const char *family, *text;
} help_t;

static const help_t s_help[] = {
    /* gateway */
    {"http_requests_total", "HTTP requests answered, by method, route (the route table's label) and status code."},
    {"http_request_duration_seconds", "Time from a request's arrival to its answer, by route."},
    {"http_requests_inflight", "HTTP requests received and not yet answered."},
    {"sse_clients", "Open SSE watch streams."},
    {"sse_events_total", "Events written to SSE watch streams."},
    {"sse_clients_dropped_total", "SSE watch streams closed because the client did not keep up (SSE_QUEUE_MAX)."},
    {"sse_events_coalesced_total", "Events replaced in a slow watch stream's queue by a newer event of the same user."},
    {"sse_clients_gone_total", "Watch streams whose client went away (closed, reset, half-closed or vanished): released at once."},
    {"sse_streams_limited_total", "Watch streams refused with 429 by SSE_MAX_PER_IP or SSE_MAX_PER_SUBJECT."},
    {"http_connections", "Open client connections (MAX_CONNECTIONS bounds them)."},
    {"http_connections_refused_total", "Times accepting paused because MAX_CONNECTIONS connections were open."},
    {"http_accept_paused_total", "Times accepting paused because accept() ran out of file descriptors (EMFILE/ENFILE)."},
    {"http2_streams_cancelled_total", "HTTP/2 streams the client cancelled before their answer."},
    {"http2_connections_cut_total", "HTTP/2 connections cut for cancelling more streams than HTTP2_RESET_BUDGET (rapid reset)."},
    {"http2_connections_refused_total", "HTTP/2 connections refused because their address was cut for rapid reset less than 10 s before."},
    {"http_heads_refused_total", "New connections answered before h2o read their request: 408, 431, or 401/413 before a body."},
    {"gateway_upstream_timeouts_total", "Calls to a cache-node that passed REQUEST_TIMEOUT_MS (answered 504)."},
    {"gateway_upstream_unavailable_total", "Calls that found no cache-node up (answered 503)."},
    {"gateway_upstream_retries_total", "Calls sent again to the next cache-node after one failed."},
    {"gateway_node_failovers_total", "Times a cache-node was marked down and its keys moved to the next by the hash."},
    {"gateway_cache_nodes", "Cache-nodes this gateway is configured with."},
    {"gateway_near_hits_total", "Reads the gateway's near cache answered (a record, or a known \"not found\")."},
    {"gateway_near_misses_total", "Reads of users the near cache did not hold (asked of the cache tier)."},
    {"gateway_near_bypassed_total", "Reads that went past the near cache: its stream not live, or behind this gateway's last acknowledged write."},
    {"gateway_near_fills_total", "Cache-node answers that became near cache entries."},
    {"gateway_near_retries_total", "Cache-node answers older than what the thread already served of the user, asked again."},
    {"gateway_near_evictions_total", "Near cache entries evicted to stay within NEAR_CACHE_BYTES."},
    {"gateway_near_drops_total", "Near cache entries dropped because the stream stopped being live (gap, catch-up, silence, a stalled thread)."},
    {"gateway_near_stalls_total", "Times a gateway thread found it had not run for 300 ms and dropped its near cache."},
    {"gateway_near_entries", "Records held by the near caches (all threads)."},
    {"gateway_near_bytes", "Bytes held by the near caches (all threads; bounded by NEAR_CACHE_BYTES)."},
    {"notifier_up", "1 when the webhook notifier (NOTIFIER_ENDPOINT) answered the gateway's last poll of its numbers."},
    {"ws_connections", "Open WebSocket connections (GET /api/v2/presence/connect)."},
    {"ws_connects_total", "WebSocket connections upgraded (each a session live in the store)."},
    {"ws_refused_total", "WebSocket handshakes refused before the upgrade (400, 403, 426, 503)."},
    {"ws_messages_total", "Text messages received on WebSocket connections."},
    {"ws_events_total", "presence frames written to WebSocket connections."},
    {"ws_dropped_slow_total", "WebSocket connections closed because the client did not read (WS_QUEUE_MAX)."},
    {"ws_closed_policy_total", "WebSocket connections closed 1008 for their message rate or ten errors in a row."},
    {"ws_dead_total", "WebSocket connections ended because nothing arrived for two WS_PING_INTERVAL_MS."},
    {"ws_sessions_resumed_total", "WebSocket sessions taken over by a reconnect with session_id=."},
    {"gateway_lease_refreshes_total", "Refreshes of the gateway's lease the store answered (GATEWAY_LEASE_MS)."},
    {"gateway_lease_lapses_total", "Times the gateway's lease had lapsed and was replaced (its sessions re-opened)."},
    /* every process */
    {"process_cpu_seconds_total", "User and system CPU time of the process, by proc."},
    {"process_resident_memory_bytes", "Resident memory of the process, by proc."},
    {"process_virtual_memory_bytes", "Virtual memory of the process, by proc."},
    {"process_open_fds", "Open file descriptors of the process, by proc."},
    {"process_max_fds", "The process's limit of open file descriptors (RLIMIT_NOFILE), by proc."},
    {"process_start_time_seconds", "When the process started, seconds since the Unix epoch, by proc."},
    {"presence_build_info", "Always 1; the labels name each process's version and the commit it was built from."},
    /* cache-node */
    {"cache_items", "Records held by the cache-node."},
    {"cache_hits_total", "Reads answered from the cache."},
    {"cache_misses_total", "Reads not in the cache (fetched from the store)."},
    {"cache_evictions_total", "Records evicted to stay within CACHE_MAX_COST."},
    {"cache_cost_bytes", "Bytes of records held (the cost the cache bounds)."},
    {"cache_max_cost_bytes", "CACHE_MAX_COST: the bound of cache_cost_bytes."},
    {"cache_window_cost_bytes", "Bytes of the admission window of W-TinyLFU."},
    {"cache_keys_added_total", "Records added to the cache."},
    {"cache_keys_updated_total", "Cached records replaced by a newer version."},
    {"cache_cost_added_total", "Bytes added to the cache."},
    {"cache_cost_evicted_total", "Bytes evicted from the cache."},
    {"cache_rejections_total", "Records TinyLFU admission kept out of the cache."},
    {"cache_stale_refused_total", "Updates refused because the cache held a newer version."},
    {"cache_requests_total", "Requests the cache-node answered."},
    {"cache_apply_rejected_total", "APPLY records refused: beyond the store's sequence, or too many unconfirmed."},
    {"cache_apply_refuted_total", "APPLY'd records dropped because the store refuted them or did not confirm them in time."},
    {"cache_apply_unconfirmed", "APPLY'd records held until the store confirms them."},
    {"cache_store_fetches_total", "Fetches (MGET) sent to the store for misses."},
    {"cache_store_fetch_keys_total", "Keys fetched from the store for misses."},
    {"cache_coalesced_misses_total", "Misses that joined a fetch already in flight for the same key."},
    {"cache_store_timeouts_total", "Store calls that passed their deadline."},
    {"cache_store_unavailable_total", "Requests failed fast because the store was down (STORE_DOWN_MS)."},
    {"cache_stale_served_total", "Reads served from the cache while its change stream was not live."},
    {"cache_bypass_reads_total", "Reads sent to the store because the cache could not be trusted."},
    {"cache_fills_dropped_total", "Store answers not cached because the stream moved past them."},
    {"cache_expired_writes_total", "Writes dropped because their sender's deadline had passed."},
    {"cache_stalls_total", "Times the cache-node found it had not run for longer than it can afford."},
    {"cache_store_inflight", "Store calls waiting for their answer."},
    {"cache_malformed_total", "Malformed messages the cache-node dropped or answered with an error."},
    {"cache_sync_state", "The cache-node's change stream: 0 catching up, 1 live, 2 silent, 3 upstream down."},
    {"cache_store_up", "1 when the store (or the region's relay) answers the cache-node."},
    {"cache_store_rtt_seconds", "Round trip of the cache-node's last store poll."},
    {"cache_store_sequence", "The store's sequence as last polled by the cache-node."},
    {"cache_link_up", "1 when the region's link to the center is up (a leaf's relay; 1 at the center)."},
    {"cache_link_lag_seconds", "How far the region's relay is behind the center."},
    {"sync_sequence", "The last change-stream sequence the cache-node applied."},
    {"sync_epoch", "The store database epoch the cache-node follows."},
    {"sync_lag_seconds", "How long since the cache-node's state was last known complete (0 when live)."},
    {"sync_gaps_total", "Gaps found in the change stream (each repaired by a catch-up)."},
    {"sync_resyncs_total", "Catch-ups the cache-node started."},
    {"sync_snapshots_total", "Catch-ups that had to be full snapshots."},
    {"sync_silences_total", "Times the change stream went silent past SYNC_HEARTBEAT_LIMIT_MS."},
    {"sync_changes_applied_total", "Changes the cache-node applied from the stream and catch-ups."},
    {"cache_store_member", "The store member (1..N of STORE_CMD_ENDPOINT) the cache-node sends commands to: the leader of a replicated center."},
    {"cache_store_leader_switches_total", "Times the cache-node moved its commands to another member of a replicated center."},
    {"cache_store_retries_total", "Store calls sent again to a new leader (reads, writes with a command id, ENOTLEADER refusals)."},
    {"sync_leader_switches_total", "Times the cache-node's change stream catch-ups moved to another member of a replicated center."},
    /* store-node */
    {"store_epoch", "The store's database epoch (changes when the database is recreated)."},
    {"store_sequence", "The last sequence the store published."},
    {"store_committed_sequence", "The last sequence committed to LMDB."},
    {"store_records", "Records in the store."},
    {"store_log_entries", "Changelog entries kept for catch-ups."},
    {"store_log_floor", "The oldest sequence a catch-up can still start after."},
    {"store_due_entries", "Entries of the expiry index (records and sessions with a deadline)."},
    {"store_map_size_bytes", "Size of the LMDB map."},
    {"store_map_used_bytes", "Bytes of the LMDB map in use."},
    {"store_map_grows_total", "Times the LMDB map was grown."},
    {"store_queue_items", "Write items queued for the writer thread."},
    {"store_queue_max", "STORE_QUEUE_MAX: the bound of store_queue_items."},
    {"store_writes_total", "Records written."},
    {"store_write_commands_total", "Write commands received."},
    {"store_commits_total", "LMDB write transactions committed (group commits)."},
    {"store_commit_errors_total", "LMDB write transactions that failed."},
    {"store_expirations_total", "Records the sweeper turned offline at expires_at."},
    {"store_purges_total", "Offline records purged after RETENTION."},
    {"store_overload_total", "Commands refused because the write queue was full."},
    {"store_malformed_total", "Malformed commands the store answered with an error."},
    {"store_expired_writes_total", "Writes dropped because their sender's deadline had passed."},
    {"store_reads_total", "Read commands answered."},
    {"store_catchups_total", "Catch-up requests answered."},
    {"store_snapshots_total", "Catch-ups answered with a snapshot."},
    {"store_published_messages_total", "Messages published on the change stream."},
    {"store_publish_drops_total", "Stream messages a subscriber's queue dropped (STORE_PUB_HWM)."},
    {"store_sweeps_total", "Sweeper transactions."},
    {"store_relaxed_commits_total", "Heartbeat-only commits flushed lazily (TOUCH_SYNC_MS)."},
    {"store_flushes_total", "Explicit LMDB flushes."},
    {"store_time_seconds", "The store's clock when it answered, seconds since the Unix epoch."},
    {"store_commit_seconds", "Duration of an LMDB write transaction (a group commit), fsync included."},
    {"store_group_size", "Items per group commit."},
    {"store_ack_seconds", "Time from a write command's arrival at the store to its acknowledgement."},
    {"store_not_leader_total", "Commands a replicated member answered ENOTLEADER (it does not lead)."},
    {"store_dedup_entries", "Command ids a replicated store remembers (STORE_DEDUP_WINDOW)."},
    {"store_repl_member", "This member's number in STORE_REPLICAS."},
    {"store_repl_role", "The member's raft role: 0 stopped, 1 follower, 2 candidate, 3 leader."},
    {"store_repl_leading", "1 on the member that serves: it leads and its first entry of the term applied."},
    {"store_repl_leader", "The leader's member number as this member knows it (0: none)."},
    {"store_repl_term", "The raft term."},
    {"store_repl_members", "Members of the replicated center."},
    {"store_repl_commit_index", "The raft commit index."},
    {"store_repl_applied_index", "The last log index applied to this member's LMDB state."},
    {"store_repl_last_index", "The last index of this member's raft log."},
    {"store_repl_snapshot_index", "The log index of this member's last raft snapshot."},
    {"store_repl_elections_total", "Times this member became a candidate."},
    {"store_repl_leader_changes_total", "Times the leader this member knows changed."},
    {"store_repl_snapshots_taken_total", "Snapshots of the state this member took (compacting LMDB copies)."},
    {"store_repl_snapshots_installed_total", "Snapshots of the leader's state this member installed (a wiped or far-behind member)."},
    {"store_repl_proposals_committed_total", "Entries this member proposed that were committed and applied here."},
    {"store_repl_proposals_rejected_total", "Entries this member proposed that ended without applying here (leadership lost, not leader)."},
    {"store_repl_outstanding", "Entries proposed and not yet ended."},
    {"store_repl_failed", "1 when the member stopped taking part (it exits to be restarted)."},
    {"store_repl_entries_applied_total", "Log entries applied to this member's state."},
    {"store_repl_sweep_entries_total", "SWEEP entries applied (the leader's sweeper, on every member)."},
    {"store_repl_lead_entries_total", "LEAD entries applied (the first entry of every leadership)."},
    {"store_repl_dedup_hits_total", "Writes answered from the dedup table: a retried command id applied once."},
    {"store_repl_member_lag_entries", "Entries a member is behind the leader's log (the leader's view)."},
    {"store_repl_member_up", "1 when a member answered the leader within the election timeout (the leader's view)."},
    {"store_repl_commit_seconds", "Time from proposing a group to applying it on the leader (committed on a majority)."},
    /* sync-relay (a leaf region) */
    {"relay_link_up", "1 while the relay's link to the center is up."},
    {"relay_epoch", "The center's database epoch the relay follows."},
    {"relay_sequence", "The last sequence the relay published to its region."},
    {"relay_center_sequence", "The last center sequence the relay applied."},
    {"relay_lag_seconds", "How far the relay is behind the center."},
    {"relay_sync_state", "The relay's stream from the center: 0 catching up, 1 live, 2 silent, 3 upstream down."},
    {"relay_gaps_total", "Gaps in the center's stream."},
    {"relay_resyncs_total", "Catch-ups the relay started against the center."},
    {"relay_snapshots_total", "Catch-ups from the center that were snapshots."},
    {"relay_silences_total", "Times the center's stream went silent."},
    {"relay_link_downs_total", "Times the link to the center went down."},
    {"relay_changes_total", "Changes relayed to the region."},
    {"relay_window_bytes", "Bytes of recent changes kept for the region's catch-ups."},
    {"relay_window_start", "The oldest sequence the relay's window holds."},
    {"relay_forwarded_total", "Commands forwarded to the center."},
    {"relay_unavailable_total", "Commands answered 'center unreachable'."},
    {"relay_timeouts_total", "Forwarded commands that passed their deadline."},
    {"relay_malformed_total", "Malformed messages the relay dropped."},
    {"relay_local_catchups_total", "Region catch-ups served from the relay's window."},
    {"relay_forwarded_catchups_total", "Region catch-ups forwarded to the center."},
    {"relay_center_rtt_seconds", "Round trip of the relay's last poll of the center."},
    {"relay_center_member", "The center member (1..N of CENTER_ENDPOINT) the relay sends commands to."},
    {"relay_center_leader_switches_total", "Times the relay moved its commands to another member of a replicated center."},
    {"relay_center_retries_total", "Forwarded commands sent again to a new leader of a replicated center."},
    /* notifier (webhooks) */
    {"notifier_live", "1 while the notifier follows the change stream (after its first snapshot)."},
    {"notifier_sync_sequence", "The last change-stream sequence the notifier applied."},
    {"notifier_sync_gaps_total", "Gaps in the notifier's change stream."},
    {"notifier_sync_snapshots_total", "Catch-ups of the notifier that were snapshots (diffed against its stored states)."},
    {"notifier_sync_resumes_total", "Starts that resumed the stream from the committed position."},
    {"notifier_sync_lag_seconds", "How long since the notifier's state was last known complete (0 when live)."},
    {"notifier_changes_total", "Changes the notifier applied."},
    {"notifier_events_total", "Webhook events logged, by type."},
    {"notifier_debounced_total", "Offline/online pairs cancelled by WEBHOOK_DEBOUNCE_MS."},
    {"notifier_log_entries", "Events in the notifier's log."},
    {"notifier_log_bytes", "Bytes of the notifier's log (bounded by WEBHOOK_LOG_MAX_BYTES)."},
    {"notifier_log_pruned_total", "Log entries deleted after every target had them."},
    {"notifier_log_bound_pruned_total", "Log entries deleted by the log's bound before a target had them."},
    {"notifier_commits_total", "LMDB transactions the notifier committed."},
    {"notifier_malformed_total", "Malformed or unsupported messages on the notifier's ROUTER."},
    {"notifier_webhook_delivered_events_total", "Events acknowledged (2xx) by a target, by target index."},
    {"notifier_webhook_delivered_batches_total", "Batches acknowledged (2xx) by a target."},
    {"notifier_webhook_retries_total", "Failed attempts that will be retried."},
    {"notifier_webhook_failures_total", "Failed attempts (timeouts, connection errors, non-2xx answers)."},
    {"notifier_webhook_dropped_events_total", "Events dropped by a 3xx/4xx answer (WEBHOOK_ON_4XX=drop)."},
    {"notifier_webhook_gaps_total", "Times a target skipped events the log's bound had dropped."},
    {"notifier_webhook_gap_events_total", "Events a target never got because the log's bound dropped them."},
    {"notifier_webhook_lag_seconds", "Age of the oldest event a target has not acknowledged (0 when caught up)."},
    {"notifier_webhook_cursor", "A target's durable position in the notifier's log."},
    {"notifier_webhook_pending_entries", "Log entries after a target's cursor."},
    {"notifier_webhook_request_duration_seconds", "Duration of a webhook POST, by target."},
    {"notifier_webhook_delivery_seconds", "Time from an event being logged to its batch's acknowledgement (oldest event of the batch)."},
};

const char *gw_promtext_help(const char *family)
{
    for (size_t i = 0; i < ARRAY_LEN(s_help); i++)
        if (strcmp(s_help[i].family, family) == 0)
            return s_help[i].text;
    return NULL;
}

const char *const *gw_promtext_families(size_t *n)
{
    static const char *names[ARRAY_LEN(s_help)];
    for (size_t i = 0; i < ARRAY_LEN(s_help); i++)
        names[i] = s_help[i].family;
    *n = ARRAY_LEN(s_help);
    return names;
}

/* ==== rendering =============================================================================== */

typedef struct entry {
    char name[PROTO_STAT_NAME_MAX + 1]; /* printed name (":us" removed) */
    char family[PROTO_STAT_NAME_MAX + 1];
    uint64_t value;
    bool us, hist;
    size_t order;
} entry_t;

typedef struct elist {
    entry_t *v;
    size_t n, cap;
} elist_t;

static bool s_has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int s_cmp_name(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void s_push(elist_t *l, const char *name, size_t len, uint64_t value)
{
    if (len > PROTO_STAT_NAME_MAX || len == 0)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    entry_t *e = &l->v[l->n];
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->us = len > 3 && memcmp(name + len - 3, ":us", 3) == 0;
    if (e->us)
        e->name[len - 3] = '\0';
    size_t fl = strcspn(e->name, "{");
    memcpy(e->family, e->name, fl);
    e->family[fl] = '\0';
    e->value = value;
    e->hist = false;
    e->order = l->n;
    l->n++;
}

/* Drop every series whose name an earlier one already had (the store's numbers come through
 * every cache-node). Sorting a copy by name finds them in O(n log n). */
static void s_dedup(elist_t *l)
{
    if (l->n < 2)
        return;
    entry_t *byname = xmalloc(l->n * sizeof *byname);
    memcpy(byname, l->v, l->n * sizeof *byname);
    qsort(byname, l->n, sizeof *byname, s_cmp_name);
    bool *drop = xcalloc(l->n, sizeof *drop);
    /* Sorted by name, then by arrival: in a run of equal names, all but the first go. */
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(byname[i].name, byname[i - 1].name) == 0)
            drop[byname[i].order] = true;
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!drop[i]) {
            l->v[k] = l->v[i];
            l->v[k].order = k;
            k++;
        }
    l->n = k;
    free(drop);
    free(byname);
}

/* Histogram families: those with a _bucket series; their _sum/_count join the family. */
static void s_histograms(elist_t *l)
{
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < l->n; i++) {
        entry_t *e = &l->v[i];
        for (int s = 0; s < 3; s++) {
            if (!s_has_suffix(e->family, sufs[s]))
                continue;
            char base[PROTO_STAT_NAME_MAX + 1], bucket[PROTO_STAT_NAME_MAX + 16];
            size_t bl = strlen(e->family) - strlen(sufs[s]);
            memcpy(base, e->family, bl);
            base[bl] = '\0';
            snprintf(bucket, sizeof bucket, "%s_bucket", base);
            bool hist = s == 0;
            /* The _bucket series may already have been renamed to the base family above. */
            for (size_t j = 0; j < l->n && !hist; j++)
                hist = strcmp(l->v[j].family, bucket) == 0 || (l->v[j].hist && strcmp(l->v[j].family, base) == 0);
            if (hist) {
                snprintf(e->family, sizeof e->family, "%s", base);
                e->hist = true;
            }
            break;
        }
    }
}

static int s_cmp_family(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->family, y->family);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* The prefix applies to every family but the standard process_* ones and those already named
 * for the application (presence_build_info). */
static const char *s_prefix_for(const char *family, const char *prefix)
{
    if (!prefix || !*prefix || strncmp(family, "process_", 8) == 0 || strncmp(family, "presence_", 9) == 0 ||
        strncmp(family, prefix, strlen(prefix)) == 0)
        return "";
    return prefix;
}

void gw_promtext_render(gw_buf_t *b, const stats_list_t *const *lists, int n, const char *prefix)
{
    elist_t l = {0};
    for (int k = 0; k < n; k++)
        for (uint32_t i = 0; lists[k] && i < lists[k]->n; i++)
            s_push(&l, lists[k]->v[i].name.p, lists[k]->v[i].name.len, lists[k]->v[i].value);
    s_dedup(&l);
    s_histograms(&l);
    qsort(l.v, l.n, sizeof *l.v, s_cmp_family);
    const char *last = "";
    for (size_t i = 0; i < l.n; i++) {
        entry_t *e = &l.v[i];
        const char *pfx = s_prefix_for(e->family, prefix);
        if (strcmp(e->family, last) != 0) {
            const char *type = e->hist ? "histogram" : s_has_suffix(e->family, "_total") ? "counter" : "gauge";
            const char *help = gw_promtext_help(e->family);
            gw_buf_addf(b, "# HELP %s%s %s\n", pfx, e->family, help ? help : "undocumented (add it to gateway/gw_promtext.c)");
            gw_buf_addf(b, "# TYPE %s%s %s\n", pfx, e->family, type);
            last = e->family;
        }
        if (e->us)
            gw_buf_addf(b, "%s%s %.6f\n", pfx, e->name, (double)e->value / 1e6);
        else
            gw_buf_addf(b, "%s%s %llu\n", pfx, e->name, (unsigned long long)e->value);
    }
    free(l.v);
}
