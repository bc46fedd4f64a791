/* gw_notifier.h -- the webhook notifier's numbers on the gateway's /metrics.
 *
 * The gateway's /metrics is the one place to scrape (API.md, ARCHITECTURE.md). The notifier is not
 * behind a cache-node, so a thread of the gateway polls its STATS on NOTIFIER_ENDPOINT every
 * GW_NOTIFIER_POLL_MS (a DEALER of its own: no event-loop thread ever waits on it), and /metrics
 * shows the last answer with notifier_up. Numbers are at most one poll old, as the store's are
 * through the cache-nodes.
 *
 * start/stop: the main thread, once. snapshot: any thread (a mutex guards the last answer).
 */
#ifndef PRESENCE_GW_NOTIFIER_H
#define PRESENCE_GW_NOTIFIER_H

#include "stats.h"

#include <stdbool.h>

#define GW_NOTIFIER_POLL_MS 2000
#define GW_NOTIFIER_TIMEOUT_MS 1000

/* Start the poller thread on zctx (which must outlive gw_notifier_stop). Returns 0, or -1 with
 * err (CFG_ERR_LEN) when the socket cannot be made or connected. */
int gw_notifier_start(void *zctx, const char *endpoint, char *err);
/* Stop and join the thread (no-op when it was not started). */
void gw_notifier_stop(void);

/* Append the last answer's stats to out (caller-initialised; the caller frees it). Returns true
 * when the notifier answered one of the last two polls, false when it did not (then out gets
 * nothing: stale numbers would look live). */
bool gw_notifier_snapshot(stats_list_t *out);

#endif
