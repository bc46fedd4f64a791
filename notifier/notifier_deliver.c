/* notifier_deliver.c -- delivery: a batch per target from the committed log (its cursor on, its
 * filter and view applied, stopping at a held entry it wants), signed and POSTed through libcurl;
 * each answer moves the target's cursor, schedules a retry with backoff, splits a 413 or drops a
 * 4xx (notify_target_result). One batch in flight per target, so a slow target delays no other.
 * One thread (the loop's).
 */
#include "notifier_int.h"
#include "log.h"
#include "util.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Did a target that wants offline events take the log entry `seq` (acknowledged, or in flight)?
 * Only a held entry whose hold the wall clock undid (it went back) can have been. */
bool notifier_deliver_taken(const notifier_t *N, uint64_t seq)
{
    for (uint32_t i = 0; i < N->ntargets; i++) {
        const target_rt_t *t = &N->targets[i];
        if (!(t->cfg->mask & (1u << NOTIFY_OFFLINE)))
            continue;
        if (t->st.cursor >= seq || (t->st.phase != NOTIFY_IDLE && t->st.inflight_last >= seq))
            return true;
    }
    return false;
}

/* ==== delivery =============================================================================== */

typedef struct build_ctx {
    notify_batch_t *b;
    uint32_t mask;
    uint64_t now_ms;
    uint64_t scanned, scan_max;
    int stop;            /* NOTIFY_FULL / NOTIFY_HELD / -1 scan bound / 0 end of log */
    uint64_t held_appended_ms;
} build_ctx_t;

static int on_entry(void *ctx, const notify_entry_t *e)
{
    build_ctx_t *bc = ctx;
    int r = notify_batch_offer(bc->b, bc->mask, e, bc->now_ms);
    if (r == NOTIFY_FULL || r == NOTIFY_HELD) {
        bc->stop = r;
        if (r == NOTIFY_HELD)
            bc->held_appended_ms = e->appended_ms;
        return 1;
    }
    if (++bc->scanned >= bc->scan_max) {
        bc->stop = -1;
        return 1;
    }
    return 0;
}

static void s_post(notifier_t *N, uint32_t i)
{
    target_rt_t *t = &N->targets[i];
    char sig[160], attempt[48];
    const char *hdrs[3] = {sig, attempt, NULL};
    snprintf(attempt, sizeof attempt, "X-Presence-Attempt: %u", t->st.attempt + 1);
    uint64_t ts = util_now_us() / 1000000;
    if (notify_sign_header(t->cfg->secret, t->cfg->secret_len, ts, t->batch.body.p, t->batch.body.len, sig,
                           sizeof sig) < 0 ||
        notify_http_post(N->http, i, t->cfg->url, hdrs, t->batch.body.p, t->batch.body.len) < 0) {
        /* Nothing went out: count it as a failed attempt (retried with backoff). */
        notify_target_sent(&t->st, t->batch.last_seq, t->batch.n);
        uint64_t rnd = 0;
        util_random(&rnd, sizeof rnd);
        notify_target_result(&t->st, &N->policy, 0, 0, t->batch.last_id, util_mono_ms(), rnd,
                             (uint32_t)N->cfg.batch_max);
        LOG_RATELIMITED(LOG_ERROR, 10000, "target %u: could not start a request (signing or libcurl failed)", i);
        return;
    }
    notify_target_sent(&t->st, t->batch.last_seq, t->batch.n);
}

/* Start a batch for every target that can take one. */
void notifier_deliver_schedule(notifier_t *N)
{
    uint64_t mono = util_mono_ms(), wall = util_now_us() / 1000;
    uint64_t head = N->meta.next_seq - 1;
    for (uint32_t i = 0; i < N->ntargets; i++) {
        target_rt_t *t = &N->targets[i];
        if (t->st.phase == NOTIFY_INFLIGHT)
            continue;
        bool retry_due = t->st.phase == NOTIFY_BACKOFF && mono >= t->st.retry_at_ms;
        bool held_due = t->held_until_ms && wall >= t->held_until_ms;
        if (t->st.phase == NOTIFY_BACKOFF && !retry_due)
            continue;
        if (!t->stale && !retry_due && !held_due)
            continue;
        t->stale = false;
        t->held_until_ms = 0;
        uint64_t skipped = notify_target_catch_floor(&t->st, N->floor);
        if (skipped)
            LOG(LOG_WARN,
                "target %u (%s): %llu events were dropped from the log (its bound) before it acknowledged them: "
                "gap, continuing at seq %llu",
                i, t->cfg->shown, (unsigned long long)skipped, (unsigned long long)N->floor);
        if (t->st.cursor >= head) {
            t->lag_from_ms = 0;
            t->st.phase = NOTIFY_IDLE;
            continue;
        }
        notify_batch_begin(&t->batch, t->st.cursor, t->st.batch_limit, N->cfg.batch_bytes, N->cfg.debounce_ms);
        build_ctx_t bc = {.b = &t->batch, .mask = t->cfg->mask, .now_ms = wall,
                          .scan_max = t->st.batch_limit + SCAN_MAX_EXTRA};
        int rc = notify_db_log_scan(N->db, t->st.cursor, on_entry, &bc, &N->bad_entries);
        if (rc) {
            notifier_state_fatal(N, rc, "read log");
            return;
        }
        if (bc.stop == -1)
            t->stale = true; /* more to look at next turn */
        if (t->batch.n == 0) {
            notify_target_skip(&t->st, t->batch.last_seq);
            t->st.phase = NOTIFY_IDLE;
            if (bc.stop == NOTIFY_HELD) {
                t->held_until_ms = t->batch.held_until_ms;
                t->lag_from_ms = bc.held_appended_ms;
            } else if (t->st.cursor >= head) {
                t->lag_from_ms = 0;
            }
            continue;
        }
        notify_batch_end(&t->batch);
        if (bc.stop == NOTIFY_HELD)
            t->held_until_ms = t->batch.held_until_ms;
        t->lag_from_ms = t->batch.oldest_ms;
        s_post(N, i);
    }
}

static void s_on_done(notifier_t *N, const notify_http_done_t *d)
{
    target_rt_t *t = &N->targets[d->target];
    if (t->st.phase != NOTIFY_INFLIGHT)
        return;
    uint64_t rnd = 0;
    util_random(&rnd, sizeof rnd);
    uint32_t attempts = t->st.attempt + 1, n = t->st.inflight_n;
    stats_hist_observe(&t->req_hist, d->elapsed_us);
    int out = notify_target_result(&t->st, &N->policy, d->status, d->retry_after_s, t->batch.last_id, util_mono_ms(),
                                   rnd, (uint32_t)N->cfg.batch_max);
    t->stale = true;
    switch (out) {
    case NOTIFY_ACKED:
        if (t->batch.oldest_ms) {
            uint64_t wall = util_now_us() / 1000;
            stats_hist_observe(&t->lag_hist, wall > t->batch.oldest_ms ? (wall - t->batch.oldest_ms) * 1000 : 0);
        }
        if (attempts > 1)
            LOG(LOG_NOTICE, "webhook delivered after retries target=%u url=%s attempts=%u events=%u first_id=%llu last_id=%llu",
                d->target, t->cfg->shown, attempts, n, (unsigned long long)t->batch.first_id,
                (unsigned long long)t->batch.last_id);
        else
            LOG(LOG_DEBUG, "webhook delivered target=%u events=%u first_id=%llu last_id=%llu us=%llu", d->target, n,
                (unsigned long long)t->batch.first_id, (unsigned long long)t->batch.last_id,
                (unsigned long long)d->elapsed_us);
        if (t->st.cursor >= N->meta.next_seq - 1)
            t->lag_from_ms = 0;
        break;
    case NOTIFY_SPLIT:
        LOG(LOG_WARN, "webhook 413: retrying in smaller batches target=%u url=%s code=413 events=%u batch=%u", d->target,
            t->cfg->shown, n, t->st.batch_limit);
        break;
    case NOTIFY_DROPPED:
        LOG_RATELIMITED(LOG_WARN, 1000,
                        "webhook events dropped (a 3xx/4xx answer is not retried: WEBHOOK_ON_4XX=drop) target=%u url=%s "
                        "code=%d events=%u first_id=%llu last_id=%llu",
                        d->target, t->cfg->shown, d->status, n, (unsigned long long)t->batch.first_id,
                        (unsigned long long)t->batch.last_id);
        break;
    default:
        if (d->status)
            LOG_RATELIMITED(LOG_WARN, 1000, "webhook failed, will retry target=%u url=%s code=%d attempt=%u retry_ms=%llu",
                            d->target, t->cfg->shown, d->status, attempts,
                            (unsigned long long)(t->st.retry_at_ms - util_mono_ms()));
        else
            LOG_RATELIMITED(LOG_WARN, 1000, "webhook failed (%s), will retry target=%u url=%s attempt=%u retry_ms=%llu",
                            d->error, d->target, t->cfg->shown, attempts,
                            (unsigned long long)(t->st.retry_at_ms - util_mono_ms()));
        break;
    }
}

/* Drive the transfers and take their answers. Returns the number of answers taken. */
int notifier_deliver_collect(notifier_t *N)
{
    if (notify_http_drive(N->http, util_mono_ms()) < 0)
        LOG_RATELIMITED(LOG_ERROR, 10000, "libcurl: curl_multi_socket_action failed");
    notify_http_done_t d;
    int n = 0;
    while (notify_http_next_done(N->http, &d)) {
        s_on_done(N, &d);
        n++;
    }
    return n;
}

uint64_t notifier_deliver_lag_us(const notifier_t *N, const target_rt_t *t)
{
    uint64_t wall = util_now_us() / 1000;
    (void)N;
    return t->lag_from_ms && wall > t->lag_from_ms ? (wall - t->lag_from_ms) * 1000 : 0;
}

