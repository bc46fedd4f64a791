/* notifier.c -- the webhook notifier: follows the store's change stream and POSTs signed JSON
 * batches of presence events to backend URLs, at least once and in order per target.
 *
 *   store PUB/ROUTER --sync client--> notify_plan (x2 views) --> LMDB (users, log, cursors, position)
 *   target i <-- POST [events] (libcurl multi_socket) <-- batches built from the committed log
 *
 * One thread, one loop (common/zloop.h): the stream's SUB and catch-up DEALER, our PING/STATS
 * ROUTER and the epoll fd of libcurl's sockets. A turn plans the stream's changes into one write
 * transaction, moves cursors by the answers, prunes the log, records the stream position,
 * commits (fsync) -- and only then answers STATS and builds batches from the committed log, so
 * nothing is sent that a crash could take back. A restart resumes the stream from the committed
 * position (sync_client_set_position): the store's catch-up brings the changes after it. A
 * snapshot (the first start, or a position the store can no longer serve) is diffed against the
 * stored per-user states, replayed in version order; users missing from it (a merge walk over
 * both key-ordered sets) were deleted. The first snapshot ever is a silent baseline.
 * This file is the process (configuration, sockets, the loop's hooks, STATS, main); its parts are
 * notifier_stream.c, notifier_state.c and notifier_deliver.c (notifier_int.h). Single-threaded.
 * docs/WEBHOOKS.md: the contract; DESIGN.md: the reasoning.
 */
#include "cfg.h"
#include "cli.h"
#include "dispatch.h"
#include "envreg.h"
#include "log.h"
#include "notifier_int.h"
#include "procstat.h"
#include "stats.h"
#include "sync_client.h"
#include "util.h"
#include "zloop.h"
#include "zutil.h"

#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t s_stop;

/* ==== stats and the ROUTER =================================================================== */

static void s_collect_stats(notifier_t *N, stats_list_t *l, bool full)
{
    stats_add(l, "notifier_live", N->ready && N->live ? 1 : 0);
    stats_add(l, "notifier_sync_sequence", sync_client_seq(N->sync));
    if (!full)
        return;
    sync_stats_t ss;
    sync_client_get_stats(N->sync, &ss);
    stats_add(l, "notifier_sync_gaps_total", ss.gaps);
    stats_add(l, "notifier_sync_snapshots_total", ss.snapshots);
    stats_add(l, "notifier_sync_resumes_total", N->resumes);
    stats_add(l, "notifier_sync_lag_seconds:us", ss.lag_ms * 1000);
    stats_add(l, "notifier_changes_total", N->changes_total);
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        stats_addf(l, N->events_total[i], "notifier_events_total{type=\"%s\"}", notify_type_name(i));
    stats_add(l, "notifier_debounced_total", N->debounced_total);
    stats_add(l, "notifier_log_entries", N->meta.log_entries);
    stats_add(l, "notifier_log_bytes", N->meta.log_bytes);
    stats_add(l, "notifier_log_pruned_total", N->pruned_total);
    stats_add(l, "notifier_log_bound_pruned_total", N->bound_pruned_total);
    stats_add(l, "notifier_commits_total", N->commits);
    stats_add(l, "notifier_malformed_total", N->router_malformed);
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        char lab[48];
        snprintf(lab, sizeof lab, "target=\"%u\"", i);
        stats_addf(l, t->st.delivered_events, "notifier_webhook_delivered_events_total{%s}", lab);
        stats_addf(l, t->st.delivered_batches, "notifier_webhook_delivered_batches_total{%s}", lab);
        stats_addf(l, t->st.retries, "notifier_webhook_retries_total{%s}", lab);
        stats_addf(l, t->st.failures, "notifier_webhook_failures_total{%s}", lab);
        stats_addf(l, t->st.dropped_events, "notifier_webhook_dropped_events_total{%s}", lab);
        stats_addf(l, t->st.gaps, "notifier_webhook_gaps_total{%s}", lab);
        stats_addf(l, t->st.gap_entries, "notifier_webhook_gap_events_total{%s}", lab);
        stats_addf(l, notifier_deliver_lag_us(N, t), "notifier_webhook_lag_seconds{%s}:us", lab);
        stats_addf(l, t->st.cursor, "notifier_webhook_cursor{%s}", lab);
        stats_addf(l, N->meta.next_seq - 1 - MIN(t->st.cursor, N->meta.next_seq - 1),
                   "notifier_webhook_pending_entries{%s}", lab);
        stats_add_hist(l, "notifier_webhook_request_duration_seconds", lab, &t->req_hist);
        stats_add_hist(l, "notifier_webhook_delivery_seconds", lab, &t->lag_hist);
    }
    procstat_t ps;
    procstat_read(&ps);
    stats_add_process(l, "proc=\"notifier\"", &ps);
    stats_add_build_info(l, "proc=\"notifier\"", cli_version(), cli_commit());
}

/* PING and STATS are answered after the turn's commit (what they report is durable): queued
 * here, answered by s_answer_asks. */
static void on_ask(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    notifier_t *N = ctx;
    if (N->nasks == ASKS_MAX || !in->ident) {
        N->asks_dropped++;
        return;
    }
    ask_t *a = &N->asks[N->nasks++];
    memcpy(a->ident, in->ident, in->ident_len);
    a->ident_len = in->ident_len;
    a->rid = m->rid;
    a->type = m->type;
}

static void s_reject(notifier_t *N, const dispatch_in_t *in, uint64_t rid, const char *why)
{
    N->router_malformed++;
    if (!in->ident)
        return;
    proto_buf_reset(&N->buf);
    proto_enc_reply(&N->buf, rid, PROTO_EBADREQ, 0, NULL, 0, why, 0);
    zu_send(N->router, in->ident, in->ident_len, N->buf.data, N->buf.len);
    zloop_sent(N->loop, N->router);
}

static void on_other(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    s_reject(ctx, in, m->rid, "unsupported: the notifier answers PING and STATS only");
}

static void on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    notifier_t *N = ctx;
    if (has_rid) {
        char err[160];
        snprintf(err, sizeof err, "malformed: %s", why);
        s_reject(N, in, rid, err);
    } else {
        N->router_malformed++;
    }
}

static const dispatch_t s_router_dispatch = {
    .routed = true,
    .on = {[PROTO_PING] = on_ask, [PROTO_STATS] = on_ask},
    .on_other = on_other,
    .on_malformed = on_malformed,
};

static void s_on_router_frames(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_frames(&s_router_dispatch, arg, sock, frames, n);
}

static void s_answer_asks(notifier_t *N)
{
    for (uint32_t i = 0; i < N->nasks; i++) {
        const ask_t *a = &N->asks[i];
        stats_list_t l;
        stats_list_init(&l);
        s_collect_stats(N, &l, a->type == PROTO_STATS);
        proto_buf_reset(&N->buf);
        proto_enc_stats(&N->buf, a->type == PROTO_PING ? PROTO_PONG : PROTO_STATS_REPLY, a->rid, PROTO_OK, l.v, l.n);
        stats_list_fini(&l);
        zu_send(N->router, a->ident, a->ident_len, N->buf.data, N->buf.len);
    }
    if (N->nasks)
        zloop_sent(N->loop, N->router);
    N->nasks = 0;
}

static void s_log_stats(notifier_t *N)
{
    LOG(LOG_INFO, "stats seq=%llu changes=%llu log=%llu entries/%llu bytes debounced=%llu pruned=%llu bound_pruned=%llu",
        (unsigned long long)sync_client_seq(N->sync), (unsigned long long)N->changes_total,
        (unsigned long long)N->meta.log_entries, (unsigned long long)N->meta.log_bytes,
        (unsigned long long)N->debounced_total, (unsigned long long)N->pruned_total,
        (unsigned long long)N->bound_pruned_total);
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        LOG(LOG_INFO,
            "stats target=%u url=%s cursor=%llu delivered=%llu batches=%llu retries=%llu failures=%llu dropped=%llu "
            "gaps=%llu lag_ms=%llu",
            i, t->cfg->shown, (unsigned long long)t->st.cursor, (unsigned long long)t->st.delivered_events,
            (unsigned long long)t->st.delivered_batches, (unsigned long long)t->st.retries,
            (unsigned long long)t->st.failures, (unsigned long long)t->st.dropped_events,
            (unsigned long long)t->st.gap_entries, (unsigned long long)(notifier_deliver_lag_us(N, t) / 1000));
    }
}

static void s_fini(notifier_t *N)
{
    sync_client_destroy(&N->sync);
    notify_http_destroy(&N->http);
    zloop_destroy(&N->loop);
    if (N->router)
        zmq_close(N->router);
    if (N->zctx)
        zmq_ctx_term(N->zctx);
    notify_db_close(&N->db);
    for (uint32_t i = 0; i < N->ntargets; i++)
        notify_batch_fini(&N->targets[i].batch);
    gw_buf_free(&N->json);
    gw_buf_free(&N->entry);
    proto_buf_fini(&N->buf);
    proto_buf_fini(&N->rec);
    curl_global_cleanup();
}

/* ==== the loop ================================================================================
 * zloop turn: s_turn (timers: the stream's, libcurl's, retries, holds) -> wait -> the stream
 * (drained by the sync client; changes go into the turn's transaction), libcurl's sockets, the
 * ROUTER (questions queued) -> s_after: answers taken, commit, questions answered, new batches
 * started. */

static uint64_t s_turn(void *arg, uint64_t now)
{
    notifier_t *N = arg;
    uint64_t next = sync_client_tick(N->sync, now);
    if (sync_client_take_sent(N->sync)) {
        zmq_pollitem_t items[2];
        sync_client_poll_items(N->sync, items);
        zloop_sent(N->loop, items[1].socket);
    }
    if (now >= notify_http_deadline(N->http))
        notifier_deliver_collect(N);
    next = MIN(next, notify_http_deadline(N->http));
    uint64_t wall = util_now_us() / 1000;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        if (t->st.phase == NOTIFY_BACKOFF)
            next = MIN(next, t->st.retry_at_ms);
        if (t->held_until_ms)
            next = MIN(next, now + (t->held_until_ms > wall ? t->held_until_ms - wall : 0));
        if (t->stale && t->st.phase == NOTIFY_IDLE)
            next = now; /* a batch to build: no sleep */
    }
    if (N->cfg.stats_log_ms)
        next = MIN(next, N->next_stats_log_ms);
    return next;
}

static bool s_pump_stream(void *arg)
{
    notifier_t *N = arg;
    return sync_client_handle(N->sync) != 0;
}

static void s_on_http(void *arg, int fd)
{
    (void)fd;
    notifier_deliver_collect(arg);
}

static void s_after(void *arg)
{
    notifier_t *N = arg;
    notifier_deliver_collect(N);
    notifier_state_commit(N, util_now_us() / 1000);
    if (N->fatal) {
        zloop_stop(N->loop);
        return;
    }
    /* After the commit: what STATS reports (the applied sequence, cursors) is durable. */
    s_answer_asks(N);
    if (!N->ready && N->live && N->meta.baseline && !N->snap.active) {
        N->ready = true;
        char line[700];
        snprintf(line, sizeof line, "notifier endpoint=%s targets=%u seq=%llu", N->cfg.endpoint, N->ntargets,
                 (unsigned long long)sync_client_seq(N->sync));
        LOG(LOG_NOTICE, "ready %s", line);
        zu_signal_ready(line);
    }
    notifier_deliver_schedule(N);
    uint64_t now = util_mono_ms();
    if (N->cfg.stats_log_ms && now >= N->next_stats_log_ms) {
        s_log_stats(N);
        N->next_stats_log_ms = now + N->cfg.stats_log_ms;
    }
}

/* SIGTERM: no more stream; let requests in flight finish (at most NOTIFIER_STOP_GRACE_MS) so
 * their acknowledgements are kept; what is still out then is sent again after the restart. */
static void s_drain(notifier_t *N)
{
    uint64_t deadline = util_mono_ms() + N->cfg.stop_grace_ms;
    while (!N->fatal && notify_http_inflight(N->http) && util_mono_ms() < deadline) {
        uint64_t left = deadline - util_mono_ms();
        notify_http_wait(N->http, (int)MIN(left, 50));
        notifier_deliver_collect(N);
    }
    for (uint32_t i = 0; i < N->ntargets; i++)
        notify_http_cancel(N->http, i);
    if (!N->fatal)
        notifier_state_commit(N, util_now_us() / 1000);
    if (notify_db_in_txn(N->db))
        notify_db_abort(N->db);
}

/* ==== main ==================================================================================== */

static int s_config(void *arg, char *err)
{
    notifier_t *N = arg;
    if (notify_cfg_load(&N->cfg, err) < 0)
        return -1;
    for (uint32_t i = 0; i < N->cfg.ntargets; i++) {
        char why[CFG_ERR_LEN];
        if (notify_http_check_url(N->cfg.targets[i].url, why) < 0) {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %u: %.200s", i + 1, why);
            return -1;
        }
    }
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "notifier",
    .summary = "Follows the store's change stream and POSTs signed JSON batches of presence events to webhook\n"
               "URLs, at least once and in order per target (docs/WEBHOOKS.md).",
    .usage = "",
    .more = "Targets are given by index: item i of WEBHOOK_SECRETS, WEBHOOK_EVENTS and WEBHOOK_PRIVILEGED\n"
            "belongs to URL i; a list of one item applies to every URL. Event types: online, offline, status,\n"
            "message, session_start, session_end. State (event log, cursors) lives in DATA_DIR/notifier.",
    .procs = ENVREG_NOTIFIER,
};

static int s_sockets(notifier_t *N, char *err)
{
    N->zctx = zmq_ctx_new();
    N->router = zu_socket(N->zctx, ZMQ_ROUTER, 1000, 1000);
    int one = 1;
    if (N->router)
        zmq_setsockopt(N->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (!N->router || zmq_bind(N->router, N->cfg.endpoint) < 0) {
        snprintf(err, CFG_ERR_LEN, "NOTIFIER_ENDPOINT: bind %s: %s", N->cfg.endpoint, zmq_strerror(errno));
        return -1;
    }
    char ua[64];
    snprintf(ua, sizeof ua, "presence-notifier/%s", cli_version());
    notify_http_cfg_t hc = {.connect_timeout_ms = N->cfg.connect_timeout_ms, .timeout_ms = N->cfg.timeout_ms,
                            .ca_file = N->cfg.ca_file, .proxy = N->cfg.proxy, .user_agent = ua};
    if (!(N->http = notify_http_new(&hc, N->ntargets, err)))
        return -1;
    sync_config_t scfg = {.pub_ep = N->cfg.store_pub, .cmd_ep = N->cfg.store_cmd,
                          .heartbeat_limit_ms = N->cfg.hb_limit_ms, .request_timeout_ms = N->cfg.request_timeout_ms,
                          .sub_hwm = (uint32_t)N->cfg.sub_hwm, .want_snapshot_data = true};
    sync_handler_t sh = {.ctx = N, .apply = notifier_stream_change, .reset = notifier_stream_reset, .state = notifier_stream_state};
    if (!(N->sync = sync_client_new(N->zctx, &scfg, &sh, err)))
        return -1;
    /* Resume where the committed state ends (the store's catch-up brings what came after), or
     * take a snapshot when there is no position (first start) or the store cannot serve it. */
    if (N->meta.baseline && N->meta.pos_epoch) {
        sync_client_set_position(N->sync, N->meta.pos_epoch, N->meta.pos_seq);
        N->resumes++;
    }
    zloop_hooks_t hooks = {.arg = N, .turn = s_turn, .after = s_after};
    N->loop = zloop_new(&hooks, WAIT_MAX_MS);
    zmq_pollitem_t items[2];
    sync_client_poll_items(N->sync, items);
    void *socks[2] = {items[0].socket, items[1].socket};
    if (zloop_add_drainer(N->loop, socks, 2, s_pump_stream, N) < 0 ||
        zloop_add_fd(N->loop, notify_http_fd(N->http), s_on_http, N) < 0 ||
        zloop_add_socket(N->loop, N->router, s_on_router_frames, N) < 0) {
        snprintf(err, CFG_ERR_LEN, "cannot poll the notifier's sockets");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static notifier_t n;
    notifier_t *N = &n;
    cli_start(argc, argv, &s_cli, "notifier", s_config, N);
    cli_stop_on_signals(&s_stop);
    N->ntargets = N->cfg.ntargets;
    N->policy = (notify_policy_t){.backoff_min_ms = N->cfg.backoff_min_ms, .backoff_max_ms = N->cfg.backoff_max_ms,
                                  .retry_4xx = N->cfg.retry_4xx};
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        LOG(LOG_ERROR, "libcurl: curl_global_init failed");
        return 1;
    }
    gw_buf_init(&N->json);
    gw_buf_init(&N->entry);
    proto_buf_init(&N->buf);
    proto_buf_init(&N->rec);

    char dir[600], err[CFG_ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/notifier", N->cfg.data_dir);
    int rc = 1;
    if (notify_db_open(&N->db, dir, N->cfg.map_size_mb, N->cfg.map_max_mb, err) < 0 || notifier_state_load(N, err) < 0 ||
        s_sockets(N, err) < 0) {
        LOG(LOG_ERROR, "%s", err);
        goto out;
    }
    for (uint32_t i = 0; i < N->ntargets; i++)
        LOG(LOG_NOTICE, "target %u: %s events=0x%x privileged=%s cursor=%llu", i, N->targets[i].cfg->shown,
            N->targets[i].cfg->mask & NOTIFY_MASK_ALL,
            (N->targets[i].cfg->mask & NOTIFY_MASK_PRIVILEGED) ? "true" : "false",
            (unsigned long long)N->targets[i].st.cursor);
    LOG(LOG_NOTICE,
        "starting: store=%s stream=%s endpoint=%s next_seq=%llu log=%llu entries debounce=%llu ms position=%llu/%llu",
        N->cfg.store_cmd, N->cfg.store_pub, N->cfg.endpoint, (unsigned long long)N->meta.next_seq,
        (unsigned long long)N->meta.log_entries, (unsigned long long)N->cfg.debounce_ms,
        (unsigned long long)N->meta.pos_epoch, (unsigned long long)N->meta.pos_seq);
    N->next_stats_log_ms = util_mono_ms() + N->cfg.stats_log_ms;
    if (zloop_run(N->loop, &s_stop) < 0)
        LOG(LOG_ERROR, "poll failed: %s", strerror(errno));
    if (N->fatal) {
        notify_db_abort(N->db);
        goto out;
    }
    LOG(LOG_NOTICE, "stopping");
    s_drain(N);
    rc = N->fatal ? 1 : 0;
    if (!rc)
        s_log_stats(N);
    LOG(LOG_NOTICE, "stopped");
out:
    s_fini(N);
    return rc;
}
