/* cache.h -- the cache-node's in-memory cache engine: a byte-cost-bounded W-TinyLFU cache of
 * versioned entries (no I/O, no locks: one event-loop thread owns a cache_t).
 *
 * Policy: TinyLFU admission (count-min sketch of 4-bit counters with periodic halving and a
 * doorkeeper) in front of W-TinyLFU eviction (a window LRU ahead of a segmented main region,
 * probation + protected), with the window size adapted at runtime by hill climbing on the hit
 * rate. CACHE_POLICY_LRU is a plain exact LRU built from the same table and list code; cachesim
 * and the LRU oracle test use it.
 *
 * Versions: every entry carries a version (the store's sequence number of the change it shows,
 * or for a negative entry the store sequence as of which the key was known absent). An entry
 * never moves to an older version: a put with a lower version than the resident one is refused
 * with CACHE_STALE.
 *
 * Cost: with unit_cost the cost of every entry is 1 (cachesim: capacity in entries). Otherwise an
 * entry's cost is the real memory it holds (its allocation including key and value, plus its share
 * of the index), see cache_entry_cost().
 */
#ifndef PRESENCE_CACHE_H
#define PRESENCE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache cache_t;

enum cache_policy { CACHE_POLICY_WTINYLFU = 0, CACHE_POLICY_LRU = 1 };

#define CACHE_KEY_MAX 255u          /* keys are 1..255 bytes */
#define CACHE_VALUE_MAX (64u << 10) /* values are 0..64 KiB */

typedef struct cache_config {
    uint64_t max_cost;     /* capacity in cost units (bytes, or entries with unit_cost); >= 1 */
    uint64_t num_counters; /* sketch size hint: expected number of distinct hot keys; 0 = derive from max_cost */
    int policy;            /* enum cache_policy */
    bool unit_cost;        /* every entry costs 1 (trace simulation) */
    uint64_t seed;         /* seed for hashing and the admission tie-break randomness; 0 = fixed default */
    /* Optional: told of every entry evicted for room (not cache_del/cache_clear, not a put's own
     * rejected candidate), just before it is freed; key and value are borrowed for the call, which
     * must not call back into the cache. */
    void (*on_evict)(void *ctx, const void *key, size_t klen, uint64_t version);
    void *evict_ctx;
} cache_config_t;

typedef struct cache_view {
    const void *value; /* borrowed: valid until the next call that mutates the cache */
    uint32_t value_len;
    uint64_t version;
    bool negative; /* a cached "not found" */
} cache_view_t;

typedef struct cache_metrics {
    uint64_t hits, misses;                /* counted by cache_get only */
    uint64_t keys_added, keys_updated;    /* new keys admitted / resident keys replaced by a newer version */
    uint64_t keys_evicted;                /* removed by eviction (not by cache_del/cache_clear) */
    uint64_t cost_added, cost_evicted;    /* cost units, same accounting as keys_added / keys_evicted */
    uint64_t rejections;                  /* candidates refused by TinyLFU admission (incl. too-big items) */
    uint64_t stale_refused;               /* puts refused because the resident version was newer */
    uint64_t items, cost, max_cost;       /* current state */
    uint64_t window_max_cost;             /* current (adaptive) window size in cost units */
} cache_metrics_t;

/* Result of cache_put(). */
enum cache_put_result {
    CACHE_ADDED = 0, /* new key inserted (it may still be evicted later by admission) */
    CACHE_UPDATED,   /* resident key replaced by a newer version */
    CACHE_SAME,      /* resident key already at this version; nothing changed */
    CACHE_STALE,     /* resident key has a newer version; nothing changed */
    CACHE_ABSENT,    /* CACHE_PUT_IF_PRESENT and the key is not resident; nothing changed */
    CACHE_REJECTED,  /* new key refused (too big for the cache, or lost admission at once) */
};

/* cache_put() flags */
#define CACHE_PUT_NEGATIVE 0x1u   /* the entry is a cached "not found" (value may be empty) */
#define CACHE_PUT_IF_PRESENT 0x2u /* only replace a resident entry (change-stream updates) */

/* Create a cache. Returns NULL only when cfg is invalid (max_cost == 0, unknown policy).
 * Caller owns the result; free with cache_destroy(). */
cache_t *cache_new(const cache_config_t *cfg);
/* Free the cache and every entry; sets *c to NULL. Accepts NULL and *c == NULL. */
void cache_destroy(cache_t **c);

/* Look up `key`. Counts a hit or a miss and records the access for the policy (frequency sketch,
 * recency). Returns true and fills *out on a hit; *out is borrowed until the next mutating call. */
bool cache_get(cache_t *c, const void *key, size_t klen, cache_view_t *out);
/* Like cache_get but changes nothing: no metrics, no policy update. */
bool cache_peek(const cache_t *c, const void *key, size_t klen, cache_view_t *out);

/* Insert or replace `key` with (version, value, flags). The value is copied.
 * - resident with a newer version: CACHE_STALE; with the same version: CACHE_SAME;
 * - resident with an older version: replaced, CACHE_UPDATED (cost re-accounted, may evict others);
 * - not resident: CACHE_ABSENT with CACHE_PUT_IF_PRESENT, else the key is offered to the policy:
 *   CACHE_ADDED, or CACHE_REJECTED if it cannot be admitted.
 * A put counts as an access of the key for the frequency sketch only when the key is new.
 * klen must be 1..CACHE_KEY_MAX and vlen <= CACHE_VALUE_MAX (else CACHE_REJECTED). */
int cache_put(cache_t *c, const void *key, size_t klen, uint64_t version, const void *val, size_t vlen, unsigned flags);

/* Remove `key` if resident. Returns true if something was removed. Not counted as an eviction. */
bool cache_del(cache_t *c, const void *key, size_t klen);
/* Remove every entry (metrics counters other than items/cost are kept). */
void cache_clear(cache_t *c);

void cache_get_metrics(const cache_t *c, cache_metrics_t *out);

/* Cost of an entry with this key and value length when unit_cost is off: the bytes it really
 * occupies (allocation rounded up as malloc does, plus index overhead). */
uint64_t cache_entry_cost(size_t klen, size_t vlen);

#endif
