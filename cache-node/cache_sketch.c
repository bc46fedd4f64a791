/* cache_sketch.c -- the cache engine's frequency sketch (TinyLFU): how often was a key asked for
 * lately? Contract and layout: cache_int.h.
 *
 * Why: admission (cache.c) lets a new key into the main region only if it was asked for more often
 * than the entry it would push out, and the W-TinyLFU shadow duels the same way. Counting exactly
 * would cost memory per key ever seen; a count-min sketch of 4-bit counters costs 8 bytes per
 * expected hot key, whatever the traffic.
 *
 * Key decisions: a key's four counters share one 64-byte block and its two doorkeeper bits one word,
 * so an access touches two cache lines, which cache_get prefetches while it walks the index. The
 * doorkeeper (a Bloom-style bit set) absorbs a key's first sighting in each period, so one-hit wonders
 * never reach the counters. Every CACHE_SAMPLE_PER_ENTRY x entries accesses the counters halve and the
 * doorkeeper clears: the sketch forgets old popularity.
 *
 * Threading: none; the cache's thread owns the sketch. No I/O, never logs.
 */
#include "cache_int.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_SKETCH_WORDS_PER_ENTRY 1u   /* 16 counters (8 bytes) per expected entry, as Caffeine ... */
#define CACHE_SKETCH_MAX_WORDS (1u << 20) /* ... at most 8 MiB */
#define CACHE_DOOR_BITS_PER_ENTRY 8u      /* doorkeeper bits per expected entry ... */
#define CACHE_DOOR_MAX_WORDS (1u << 19)   /* ... at most 4 MiB */
#define CACHE_SAMPLE_PER_ENTRY 10u        /* halve the sketch after 10 x entries recorded accesses ... */
#define CACHE_SAMPLE_MIN 8000u            /* ... but not sooner: small caches still need to see loops */

void cache_sketch_init(sketch_t *sk, uint64_t entries, uint64_t seed)
{
    uint64_t words = entries > CACHE_SKETCH_MAX_WORDS ? CACHE_SKETCH_MAX_WORDS : entries * CACHE_SKETCH_WORDS_PER_ENTRY;
    words = cache_pow2_at_least(words < 8 ? 8 : words);
    if (words > CACHE_SKETCH_MAX_WORDS)
        words = CACHE_SKETCH_MAX_WORDS;
    sk->table_mem = xcalloc(words + 8, sizeof(uint64_t));
    sk->table = (uint64_t *)(((uintptr_t)sk->table_mem + 63) & ~(uintptr_t)63);
    sk->words = words;
    sk->block_mask = words / 8 - 1;

    uint64_t dwords = entries > CACHE_DOOR_MAX_WORDS * 8 ? CACHE_DOOR_MAX_WORDS : entries * CACHE_DOOR_BITS_PER_ENTRY / 64;
    dwords = cache_pow2_at_least(dwords < 8 ? 8 : dwords);
    if (dwords > CACHE_DOOR_MAX_WORDS)
        dwords = CACHE_DOOR_MAX_WORDS;
    sk->door_mask = dwords - 1;
    sk->door = xcalloc(dwords, sizeof(uint64_t));

    sk->sample = entries * CACHE_SAMPLE_PER_ENTRY;
    if (sk->sample < CACHE_SAMPLE_MIN)
        sk->sample = CACHE_SAMPLE_MIN;
    sk->additions = 0;
    sk->seed = seed;
}

void cache_sketch_fini(sketch_t *sk)
{
    free(sk->table_mem);
    free(sk->door);
    memset(sk, 0, sizeof(*sk));
}

/* The key's four counters, as absolute counter numbers (word * 16 + nibble): the low bits of spread
 * pick the block, each byte of the high half picks one of the 32 counters of its quarter. */
static inline void s_sketch_index(const sketch_t *sk, uint64_t spread, uint64_t idx[4])
{
    uint64_t base = (spread & sk->block_mask) * 8, hi = spread >> 32;
    for (unsigned i = 0; i < 4; i++) {
        uint64_t sel = hi >> (i * 8);
        idx[i] = (base + i * 2 + (sel & 1)) * 16 + ((sel >> 1) & 15);
    }
}

static inline unsigned s_counter(const sketch_t *sk, uint64_t i)
{
    return (unsigned)(sk->table[i >> 4] >> ((i & 15) << 2)) & 15u;
}

static inline bool s_door_has(const sketch_t *sk, uint64_t spread)
{
    uint64_t mask, w = cache_sketch_door_word(sk, spread, &mask);
    return (sk->door[w] & mask) == mask;
}

/* Sets the key's doorkeeper bits; returns whether they were all set already. */
static inline bool s_door_add(sketch_t *sk, uint64_t spread)
{
    uint64_t mask, w = cache_sketch_door_word(sk, spread, &mask);
    bool had = (sk->door[w] & mask) == mask;
    sk->door[w] |= mask;
    return had;
}

void cache_sketch_reset(sketch_t *sk)
{
    for (uint64_t i = 0; i < sk->words; i++)
        sk->table[i] = (sk->table[i] >> 1) & 0x7777777777777777ULL;
    memset(sk->door, 0, (sk->door_mask + 1) * sizeof(uint64_t));
    sk->additions /= 2;
}

unsigned cache_sketch_estimate(const sketch_t *sk, uint32_t h)
{
    uint64_t spread = cache_sketch_spread(sk, h), idx[4];
    s_sketch_index(sk, spread, idx);
    unsigned min = 15;
    for (int i = 0; i < 4; i++) {
        unsigned v = s_counter(sk, idx[i]);
        if (v < min)
            min = v;
    }
    return min + (s_door_has(sk, spread) ? 1u : 0u);
}

void cache_sketch_record_spread(sketch_t *sk, uint64_t spread)
{
    if (s_door_add(sk, spread)) {
        uint64_t idx[4];
        s_sketch_index(sk, spread, idx);
        for (int i = 0; i < 4; i++) {
            if (s_counter(sk, idx[i]) < 15)
                sk->table[idx[i] >> 4] += 1ULL << ((idx[i] & 15) << 2);
        }
    }
    if (++sk->additions >= sk->sample)
        cache_sketch_reset(sk);
}

void cache_sketch_record(sketch_t *sk, uint32_t h)
{
    cache_sketch_record_spread(sk, cache_sketch_spread(sk, h));
}
