/* gw_climit.h -- how many of something each client holds at once, shared by the event-loop
 * threads: watch streams per client address (SSE_MAX_PER_IP) and per token subject
 * (SSE_MAX_PER_SUBJECT). A client at its bound gets nothing more until it gives one back.
 *
 * Keys are any bytes (an address as text, "sub:<id>"); only keys with a count > 0 take memory.
 * Thread-safe: striped mutexes, one short critical section per call.
 */
#ifndef PRESENCE_GW_CLIMIT_H
#define PRESENCE_GW_CLIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_climit gw_climit_t;
typedef struct gw_climit_slot gw_climit_slot_t; /* one count held under a key (opaque) */

/* An empty table. Caller owns it: free with gw_climit_free (when no thread uses it). */
gw_climit_t *gw_climit_new(void);
/* Free the table and every key still held. NULL-safe. */
void gw_climit_free(gw_climit_t *t);

/* Take one count of key[0..len) (len <= 256) if it holds fewer than max (max 0: no bound).
 * Returns the slot to give back with gw_climit_give, or NULL when the key is at max. */
gw_climit_slot_t *gw_climit_take(gw_climit_t *t, const char *key, size_t len, uint64_t max);
/* Give one count back (the key's memory goes with its last count). NULL-safe. */
void gw_climit_give(gw_climit_t *t, gw_climit_slot_t *slot);
/* The count key holds now. */
uint64_t gw_climit_count(gw_climit_t *t, const char *key, size_t len);
/* Keys held now (for tests and metrics). */
uint64_t gw_climit_keys(gw_climit_t *t);

#endif
