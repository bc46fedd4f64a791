/* cache_int.h -- inside the cache engine: what its three files share. Not a public API: only
 * cache-node/cache*.c (the engine, not the node) and its unit test include it.
 *
 *   cache.c         entries, the index, the regions, admission and eviction, the hill climber, the
 *                   mode switch and the cache.h API; owns struct cache (calls both below)
 *   cache_sketch.c  the frequency sketch: count-min of 4-bit counters with a doorkeeper, ageing
 *   cache_shadow.c  the two keys-only shadows the mode switch scores (calls cache_sketch.c)
 *
 * The sketch and the shadows are self-contained: their state is a struct below, embedded in struct
 * cache, and no function here sees a cache_t. The small helpers the read path runs on every access
 * (the sketch key and its prefetch) are inline here so cache_get keeps them inline.
 *
 * Threading: none. The thread that owns a cache_t owns its sketch and shadows. Nothing here does
 * I/O, logs or fails: allocation failure aborts (xmalloc).
 */
#ifndef PRESENCE_CACHE_INT_H
#define PRESENCE_CACHE_INT_H

#include "cache.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>

/* Regions of an entry (cache.c) and lists of a shadow node (cache_shadow.c). */
enum { R_WINDOW = 0, R_PROBATION = 1, R_PROTECTED = 2, R_NONE = 3 };

/* The W-TinyLFU split, the cache's at creation and the W-TinyLFU shadow's always. */
#define CACHE_WINDOW_PCT 1u     /* initial window: 1% of max_cost */
#define CACHE_PROTECTED_PCT 70u /* protected share of the main region */

/* x * num / den without overflowing for any x */
static inline uint64_t cache_share(uint64_t x, uint64_t num, uint64_t den)
{
    return x / den * num + x % den * num / den;
}

/* The smallest power of two >= n (n >= 1). */
static inline uint64_t cache_pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* ---------------------------------------------------------------------------------------------------
 * Frequency sketch (cache_sketch.c)
 * ------------------------------------------------------------------------------------------------- */

/* Count-min sketch of 4-bit counters with a doorkeeper bit set in front of it. Both are blocked for
 * cache locality (as Caffeine's FrequencySketch): a key's four counters live in one 64-byte block,
 * one in each quarter of it, and its two doorkeeper bits in one 64-bit word. A key is known by the
 * low 32 bits of its hash (all an entry or a shadow node keeps). */
typedef struct sketch {
    uint64_t *table;     /* blocks of 8 words, 16 counters per word; 64-byte aligned */
    void *table_mem;     /* what to free */
    uint64_t words;
    uint64_t block_mask; /* blocks - 1 */
    uint64_t *door;
    uint64_t door_mask;  /* doorkeeper words - 1 */
    uint64_t additions;  /* accesses recorded since the last halving (halved with it) */
    uint64_t sample;     /* halving period */
    uint64_t seed;       /* the cache's seed: keys of different caches spread differently */
} sketch_t;

/* Size the sketch for `entries` expected hot keys (>= 1; the table and the doorkeeper are capped) and
 * zero it. The sketch owns its memory until cache_sketch_fini. Aborts on OOM. */
void cache_sketch_init(sketch_t *sk, uint64_t entries, uint64_t seed);
/* Free the sketch's memory and zero *sk. Accepts a zeroed (never initialised) sketch. */
void cache_sketch_fini(sketch_t *sk);
/* Ageing: halve every counter, forget the doorkeeper, halve the addition count. */
void cache_sketch_reset(sketch_t *sk);
/* Estimated recent frequency of key hash h: the smallest of its four counters, plus one if the
 * doorkeeper has it (0..16). Changes nothing. */
unsigned cache_sketch_estimate(const sketch_t *sk, uint32_t h);
/* Record one access of key hash h: the first sighting in a sample period only sets the doorkeeper,
 * later ones raise the key's counters (saturating at 15). May age the sketch (cache_sketch_reset). */
void cache_sketch_record(sketch_t *sk, uint32_t h);
/* The same for a key already spread (cache_sketch_spread / cache_sketch_prefetch). */
void cache_sketch_record_spread(sketch_t *sk, uint64_t spread);

/* The sketch key of hash h: a remix of the stored 32-bit hash, so that victims (which keep only
 * those 32 bits) and candidates are counted alike. */
static inline uint64_t cache_sketch_spread(const sketch_t *sk, uint32_t h)
{
    return util_mix64(((uint64_t)h << 32 | h) ^ sk->seed);
}

/* The doorkeeper word of a spread key; *mask gets its two bits there. */
static inline uint64_t cache_sketch_door_word(const sketch_t *sk, uint64_t spread, uint64_t *mask)
{
    uint64_t d = util_mix64(spread + 0x9e3779b97f4a7c15ULL);
    *mask = (1ULL << ((d >> 40) & 63)) | (1ULL << ((d >> 52) & 63));
    return d & sk->door_mask;
}

/* Start loading the key's sketch block and doorkeeper word while the index lookup runs. Returns the
 * spread key for cache_sketch_record_spread. */
static inline uint64_t cache_sketch_prefetch(const sketch_t *sk, uint32_t h)
{
    uint64_t spread = cache_sketch_spread(sk, h), mask;
    __builtin_prefetch(&sk->table[(spread & sk->block_mask) * 8], 1);
    __builtin_prefetch(&sk->door[cache_sketch_door_word(sk, spread, &mask)], 1);
    return spread;
}

/* ---------------------------------------------------------------------------------------------------
 * Shadows (cache_shadow.c)
 * ------------------------------------------------------------------------------------------------- */

/* A shadow node: a key known only by its 32-bit hash, with its cost and list. */
typedef struct snode {
    uint32_t hash;
    uint32_t cost;       /* cost (low 30 bits) and list (R_WINDOW, R_PROBATION, R_PROTECTED; high 2 bits) */
    uint32_t prev, next; /* list links by node number, 0 = none; prev points toward the LRU end */
    uint32_t hnext;      /* hash chain, or the free list */
} snode_t;
#define SNODE_LIST_SHIFT 30
#define SNODE_COST_MASK ((1u << SNODE_LIST_SHIFT) - 1)

typedef struct slist {
    uint32_t head, tail;
    uint64_t cost;
} slist_t;

/* A keys-only replay of one policy over the sampled keys: plain LRU (one list) or W-TinyLFU with a fixed
 * window (three lists; admission asks the cache's own frequency sketch). */
typedef struct shadow {
    snode_t *nodes; /* nodes[1..cap + 1]: one more than cap for the insert that precedes an eviction */
    uint32_t *buckets;
    uint32_t bucket_mask, cap, top, free, count;
    slist_t lists[3];
    uint64_t cost, max_cost, window_max, protected_max;
    bool tinylfu;
} shadow_t;

/* Set up an empty shadow of `max_cost` cost units and at most `cap` nodes (0 counts as 1), LRU or
 * (tinylfu) W-TinyLFU with a CACHE_WINDOW_PCT window. Owns its memory until cache_shadow_fini; nothing
 * is allocated after this. Aborts on OOM. */
void cache_shadow_init(shadow_t *s, bool tinylfu, uint64_t max_cost, uint64_t cap);
/* Free the shadow's memory and zero *s. Accepts a zeroed (never initialised) shadow. */
void cache_shadow_fini(shadow_t *s);
/* A read of hash h: returns whether the shadow holds it, and updates its recency. */
bool cache_shadow_get(shadow_t *s, uint32_t h);
/* A put of hash h with this cost: a known key takes the new cost in place (recency unchanged, as an
 * update in the real cache), an unknown one is inserted unless only_update; then the shadow evicts
 * to its limits (a W-TinyLFU shadow's duels ask sk, which is only read). A cost over the shadow's
 * capacity drops the key. */
void cache_shadow_put(shadow_t *s, const sketch_t *sk, uint32_t h, uint64_t cost, bool only_update);
/* Forget hash h if the shadow holds it. */
void cache_shadow_del(shadow_t *s, uint32_t h);
/* Forget every key (a zeroed shadow is left as it is). */
void cache_shadow_clear(shadow_t *s);

#endif
