/* gw_promtext.h -- the Prometheus text exposition (format 0.0.4) of /metrics, from stats lists.
 *
 * Every process reports name/value pairs (proto/stats.h: a name may carry labels, a trailing
 * ":us" says the value is microseconds, shown in seconds). The gateway merges its own list with
 * what the cache-nodes (and, through them, the store-node or relay), and the notifier reported,
 * and renders them the way Prometheus users expect (docs/METRICS.md):
 *   - series grouped by family; every family preceded by `# HELP` and `# TYPE`;
 *   - the type from the name: `_bucket`/`_sum`/`_count` of one base make a histogram, a name
 *     ending `_total` a counter, anything else a gauge;
 *   - a series reported twice (the store's numbers come through every cache-node) appears once;
 *   - an optional prefix (METRICS_PREFIX) before every family except process_* and presence_*
 *     (the standard process families, and families already named for the application).
 *
 * Pure functions on caller data: reentrant, any thread.
 */
#ifndef PRESENCE_GW_PROMTEXT_H
#define PRESENCE_GW_PROMTEXT_H

#include "gw_lib.h"
#include "stats.h"

/* Append the exposition of lists[0..n) to b (earlier lists win a duplicate series). prefix may
 * be NULL or "". */
void gw_promtext_render(gw_buf_t *b, const stats_list_t *const *lists, int n, const char *prefix);

/* The HELP text of a family (its unprefixed name, histogram base for a histogram), or NULL when
 * the table has none (rendered as "undocumented": tests/metrics fails on it). */
const char *gw_promtext_help(const char *family);

/* Every family the table documents: *n set; for docs checks and tests. */
const char *const *gw_promtext_families(size_t *n);

#endif
