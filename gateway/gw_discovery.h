/* gw_discovery.h -- the cache tier found by DNS (CACHE_DNS=name:port): a resolver thread keeps a
 * table of GW_MAX_NODES endpoint slots that every event-loop thread's upstream follows
 * (gateway/gw_discovery.c explains it).
 *
 * Threads: the resolver thread writes the table under the file's mutex; any thread reads it with
 * gw_discovery_snapshot (the same mutex, held for a copy) or reads the atomics below.
 */
#ifndef PRESENCE_GW_DISCOVERY_H
#define PRESENCE_GW_DISCOVERY_H

#include "gw_config.h"

#include <stddef.h>

/* Resolve once (an empty answer is fine), then start the resolver thread. main() only, before the
 * event-loop threads. Returns 0, or -1 with err. */
int gw_discovery_start(char *err, size_t errlen);
/* Ask the resolver thread to stop (it is detached: a lookup in progress is not waited for). */
void gw_discovery_stop(void);
/* The table's generation: it changes whenever a slot does. Any thread. */
unsigned gw_discovery_gen(void);
/* Slots holding an address now. Any thread. */
int gw_discovery_assigned(void);
/* Copy the slot table (GW_MAX_NODES endpoints, "" = vacant); returns its generation. Any thread. */
unsigned gw_discovery_snapshot(char (*out)[GW_ENDPOINT_MAX]);

#endif
