/* gw_penalty.h -- client addresses sent to the penalty box for a while: an address whose
 * HTTP/2 connection was cut for rapid reset may not open another HTTP/2 connection until its
 * penalty ends (gateway/gw_h2guard.c, gw_front.c).
 *
 * Bounded by design: a fixed table of 4-way sets chosen by the key's 64-bit hash; a full set
 * gives up the entry that ends first. No allocation after gw_penalty_new. Thread-safe (one mutex:
 * used at HTTP/2 connection starts and cuts only).
 */
#ifndef PRESENCE_GW_PENALTY_H
#define PRESENCE_GW_PENALTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_penalty gw_penalty_t;

/* A table of about `slots` keys (rounded up to a multiple of 4). Caller owns it: free with
 * gw_penalty_free. */
gw_penalty_t *gw_penalty_new(size_t slots);
void gw_penalty_free(gw_penalty_t *p);
/* Penalise key[0..len) until until_ms (monotonic); a later end replaces an earlier one. */
void gw_penalty_add(gw_penalty_t *p, const void *key, size_t len, uint64_t until_ms);
/* Is key penalised at now_ms? */
bool gw_penalty_check(gw_penalty_t *p, const void *key, size_t len, uint64_t now_ms);

#endif
