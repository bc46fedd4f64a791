/* check_cache.c -- Check suite for the cache engine (cache-node/cache.c).
 *
 * Covers the frequency sketch and doorkeeper, TinyLFU admission, LRU order, the policy shadows and the
 * recency-mode switch, cost accounting, the version rules, del/clear, oversize rejection, a randomized
 * run against a reference model, and the LIRS traces in $TRACES_DIR: LRU (and the LRU shadow) must hit
 * exactly reference_hits.csv's lru_hits, W-TinyLFU never above Belady's OPT, and W-TinyLFU must show
 * the gross, always-expected gains over LRU. The hit-ratio *goals* (within 10 points of OPT, never
 * below LRU) are a benchmark, not a unit test: tests/bench/cache_goals.sh reports them.
 *
 * The suite includes the engine's three files (cache.c, cache_sketch.c, cache_shadow.c) so the tests can
 * reach their internals (struct cache, the sketch's counters and doorkeeper, the shadows' nodes) without
 * widening cache.h; the cache_* symbols then come from this object, not libcache.a.
 * TRACES_DIR must be set and readable: the trace tests fail loudly rather than skip.
 */
#include "cache-node/cache.c"
#include "cache-node/cache_shadow.c"
#include "cache-node/cache_sketch.c"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---------------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------------- */

static cache_t *s_new(uint64_t max_cost, int policy, bool unit_cost, uint64_t seed)
{
    cache_config_t cfg = {.max_cost = max_cost, .policy = policy, .unit_cost = unit_cost, .seed = seed};
    cache_t *c = cache_new(&cfg);
    ck_assert_ptr_nonnull(c);
    return c;
}

static size_t s_key(char *buf, const char *prefix, unsigned i)
{
    return (size_t)snprintf(buf, 64, "%s%u", prefix, i);
}

static bool s_resident(cache_t *c, const char *k)
{
    cache_view_t v;
    return cache_peek(c, k, strlen(k), &v);
}

/* A read-through access, as the cache-node and cachesim do it: get, and on a miss put version 1. */
static bool s_access(cache_t *c, const char *k, size_t klen)
{
    cache_view_t v;
    if (cache_get(c, k, klen, &v))
        return true;
    cache_put(c, k, klen, 1, "v", 1, 0);
    return false;
}

static uint32_t s_h32(const cache_t *c, const char *k)
{
    return (uint32_t)s_hash(c, k, strlen(k));
}

/* White-box: a shadow's lists, costs, counts, chains and free list agree with each other. */
static void s_check_shadow(const cache_t *c, const shadow_t *s)
{
    if (c->policy != CACHE_POLICY_WTINYLFU)
        return;
    uint64_t total = 0, n = 0;
    for (unsigned l = 0; l < 3; l++) {
        uint64_t cost = 0;
        uint32_t prev = 0;
        for (uint32_t i = s->lists[l].head; i; prev = i, i = s->nodes[i].next) {
            const snode_t *nd = &s->nodes[i];
            if (nd->prev != prev || s_snode_list(nd) != l || (!s->tinylfu && l != R_WINDOW))
                ck_abort_msg("shadow list %u: node %u is mislinked", l, i);
            uint32_t j = s->buckets[nd->hash & s->bucket_mask];
            while (j && j != i)
                j = s->nodes[j].hnext;
            if (j != i)
                ck_abort_msg("shadow node %u is not on its hash chain", i);
            cost += s_snode_cost(nd);
            if (++n > s->cap)
                ck_abort_msg("shadow holds more than %u nodes", s->cap);
        }
        if (s->lists[l].tail != prev || s->lists[l].cost != cost)
            ck_abort_msg("shadow list %u: tail or cost is wrong", l);
        total += cost;
    }
    uint64_t nfree = 0;
    for (uint32_t i = s->free; i; i = s->nodes[i].hnext)
        nfree++;
    if (n != s->count || total != s->cost || s->cost > s->max_cost || n + nfree != s->top)
        ck_abort_msg("shadow: count %u (walked %llu), cost %llu (walked %llu, max %llu), free %llu, top %u", s->count,
                     (unsigned long long)n, (unsigned long long)s->cost, (unsigned long long)total,
                     (unsigned long long)s->max_cost, (unsigned long long)nfree, s->top);
    if (s->tinylfu && s->lists[R_PROTECTED].cost > s->protected_max)
        ck_abort_msg("shadow: protected over its share");
}

static void s_check_shadows(const cache_t *c)
{
    s_check_shadow(c, &c->sh_lru);
    s_check_shadow(c, &c->sh_tlfu);
}

/* ---------------------------------------------------------------------------------------------------
 * Sketch and doorkeeper (white-box)
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_sketch_counts)
{
    cache_t *c = s_new(1000, CACHE_POLICY_WTINYLFU, true, 7);
    uint32_t h = s_h32(c, "alpha");
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, h), 0);
    cache_sketch_record(&c->sk, h); /* first sighting: doorkeeper only */
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, h), 1);
    for (unsigned i = 2; i <= 10; i++) {
        cache_sketch_record(&c->sk, h);
        ck_assert_uint_eq(cache_sketch_estimate(&c->sk, h), i);
    }
    /* 4-bit counters saturate at 15, plus the doorkeeper bit */
    for (int i = 0; i < 40; i++)
        cache_sketch_record(&c->sk, h);
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, h), 16);
    /* other keys are (almost surely) untouched in a 4-row sketch this sparse */
    unsigned nonzero = 0;
    char k[64];
    for (unsigned i = 0; i < 200; i++) {
        s_key(k, "other", i);
        nonzero += cache_sketch_estimate(&c->sk, s_h32(c, k)) != 0;
    }
    ck_assert_uint_le(nonzero, 2);
    cache_destroy(&c);
    ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_sketch_halving)
{
    cache_t *c = s_new(1000, CACHE_POLICY_WTINYLFU, true, 7);
    uint32_t a = s_h32(c, "a"), b = s_h32(c, "b");
    for (int i = 0; i < 10; i++)
        cache_sketch_record(&c->sk, a); /* counters 9 + doorkeeper */
    for (int i = 0; i < 4; i++)
        cache_sketch_record(&c->sk, b); /* counters 3 + doorkeeper */
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, a), 10);
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, b), 4);
    cache_sketch_reset(&c->sk);
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, a), 4); /* 9 >> 1, doorkeeper cleared */
    ck_assert_uint_eq(cache_sketch_estimate(&c->sk, b), 1);
    /* the reset also comes by itself after `sample` recorded accesses */
    uint64_t sample = c->sk.sample;
    ck_assert_uint_ge(sample, 10 * 1000);
    cache_t *d = s_new(1000, CACHE_POLICY_WTINYLFU, true, 7);
    uint32_t x = s_h32(d, "x");
    for (int i = 0; i < 9; i++)
        cache_sketch_record(&d->sk, x);
    ck_assert_uint_eq(cache_sketch_estimate(&d->sk, x), 9);
    char k[64];
    uint64_t before = d->sk.additions;
    for (uint64_t i = 0; before + i + 1 < sample; i++) {
        s_key(k, "filler", (unsigned)(i % 64)); /* few distinct keys: they cannot blur x's counters */
        cache_sketch_record(&d->sk, s_h32(d, k));
    }
    ck_assert_uint_ge(cache_sketch_estimate(&d->sk, x), 8); /* not yet halved (collisions can only add) */
    cache_sketch_record(&d->sk, s_h32(d, "last-one"));      /* the sample-th access */
    ck_assert_uint_le(cache_sketch_estimate(&d->sk, x), 5); /* 8 >> 1, plus whatever collisions left */
    ck_assert_uint_lt(d->sk.additions, sample);
    cache_destroy(&c);
    cache_destroy(&d);
}
END_TEST

START_TEST(test_doorkeeper)
{
    cache_t *c = s_new(10000, CACHE_POLICY_WTINYLFU, true, 3);
    char k[64];
    /* one-hit wonders stay out of the counters: only the doorkeeper remembers them */
    for (unsigned i = 0; i < 2000; i++) {
        s_key(k, "once", i);
        uint32_t h = s_h32(c, k);
        cache_sketch_record(&c->sk, h);
        ck_assert(s_door_has(&c->sk, cache_sketch_spread(&c->sk, h)));
    }
    unsigned counted = 0;
    for (unsigned i = 0; i < 2000; i++) {
        s_key(k, "once", i);
        uint64_t idx[4];
        s_sketch_index(&c->sk, cache_sketch_spread(&c->sk, s_h32(c, k)), idx);
        unsigned min = 15;
        for (int r = 0; r < 4; r++)
            min = MIN(min, s_counter(&c->sk, idx[r]));
        counted += min > 0;
    }
    ck_assert_uint_le(counted, 20); /* only doorkeeper false positives reach the counters */
    /* false positives for keys never seen are rare */
    unsigned fp = 0;
    for (unsigned i = 0; i < 2000; i++) {
        s_key(k, "never", i);
        fp += s_door_has(&c->sk, cache_sketch_spread(&c->sk, s_h32(c, k)));
    }
    ck_assert_uint_lt(fp, 200);
    /* and a reset clears it */
    cache_sketch_reset(&c->sk);
    unsigned left = 0;
    for (unsigned i = 0; i < 2000; i++) {
        s_key(k, "once", i);
        left += s_door_has(&c->sk, cache_sketch_spread(&c->sk, s_h32(c, k)));
    }
    ck_assert_uint_eq(left, 0);
    cache_destroy(&c);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Policy
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_admission_frequent_beats_one_hit)
{
    cache_t *c = s_new(100, CACHE_POLICY_WTINYLFU, true, 11);
    char k[64];
    /* 50 hot keys, each read a few times */
    for (int round = 0; round < 5; round++) {
        for (unsigned i = 0; i < 50; i++) {
            size_t n = s_key(k, "hot", i);
            s_access(c, k, n);
        }
    }
    /* a scan of 5000 one-hit wonders must not flush them */
    for (unsigned i = 0; i < 5000; i++) {
        size_t n = s_key(k, "scan", i);
        s_access(c, k, n);
    }
    unsigned kept = 0;
    for (unsigned i = 0; i < 50; i++) {
        s_key(k, "hot", i);
        kept += s_resident(c, k);
    }
    ck_assert_uint_ge(kept, 48);
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_gt(m.rejections, 4000);
    ck_assert_uint_le(m.items, 100);

    /* the same scan through LRU keeps none of them */
    cache_t *l = s_new(100, CACHE_POLICY_LRU, true, 11);
    for (int round = 0; round < 5; round++) {
        for (unsigned i = 0; i < 50; i++) {
            size_t n = s_key(k, "hot", i);
            s_access(l, k, n);
        }
    }
    for (unsigned i = 0; i < 5000; i++) {
        size_t n = s_key(k, "scan", i);
        s_access(l, k, n);
    }
    for (unsigned i = 0; i < 50; i++) {
        s_key(k, "hot", i);
        ck_assert(!s_resident(l, k));
    }
    /* a one-hit candidate against a frequent victim loses, a frequent one wins */
    for (int round = 0; round < 3; round++) {
        size_t n = s_key(k, "hot", 0);
        s_access(c, k, n);
    }
    uint32_t hv = s_h32(c, "hot0");
    entry_t *victim = *s_find(c, "hot0", 4, hv);
    ck_assert_ptr_nonnull(victim);
    entry_t *cold = s_entry_new(s_h32(c, "fresh"), "fresh", 5, 1, NULL, 0, 0);
    cache_sketch_record(&c->sk, cold->hash);
    ck_assert_uint_lt(cache_sketch_estimate(&c->sk, cold->hash), cache_sketch_estimate(&c->sk, hv));
    ck_assert(!s_admit(c, cold, victim));
    for (int i = 0; i < 20; i++)
        cache_sketch_record(&c->sk, cold->hash);
    ck_assert_uint_gt(cache_sketch_estimate(&c->sk, cold->hash), cache_sketch_estimate(&c->sk, hv));
    ck_assert(s_admit(c, cold, victim));
    free(cold);
    cache_destroy(&c);
    cache_destroy(&l);
}
END_TEST

START_TEST(test_lru_order)
{
    cache_t *c = s_new(3, CACHE_POLICY_LRU, true, 0);
    ck_assert_int_eq(cache_put(c, "a", 1, 1, "1", 1, 0), CACHE_ADDED);
    ck_assert_int_eq(cache_put(c, "b", 1, 1, "2", 1, 0), CACHE_ADDED);
    ck_assert_int_eq(cache_put(c, "c", 1, 1, "3", 1, 0), CACHE_ADDED);
    cache_view_t v;
    ck_assert(cache_get(c, "a", 1, &v)); /* order now b, c, a */
    ck_assert_int_eq(cache_put(c, "d", 1, 1, "4", 1, 0), CACHE_ADDED);
    ck_assert(!s_resident(c, "b"));
    ck_assert(s_resident(c, "a") && s_resident(c, "c") && s_resident(c, "d"));
    /* peek does not touch recency: c stays the LRU */
    ck_assert(cache_peek(c, "c", 1, &v));
    ck_assert_int_eq(cache_put(c, "e", 1, 1, "5", 1, 0), CACHE_ADDED);
    ck_assert(!s_resident(c, "c"));
    /* an update does not touch recency either: a is now the LRU */
    ck_assert_int_eq(cache_put(c, "a", 1, 2, "x", 1, 0), CACHE_UPDATED);
    ck_assert_int_eq(cache_put(c, "f", 1, 1, "6", 1, 0), CACHE_ADDED);
    ck_assert(!s_resident(c, "a"));
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.items, 3);
    ck_assert_uint_eq(m.keys_added, 6);
    ck_assert_uint_eq(m.keys_evicted, 3);
    ck_assert_uint_eq(m.keys_updated, 1);
    ck_assert_uint_eq(m.hits, 1);
    ck_assert_uint_eq(m.window_max_cost, 0);
    cache_destroy(&c);
}
END_TEST

/* Replays 400,000 accesses of a synthetic workload through a 1000-entry W-TinyLFU cache.
 * mode 0: a drifting working set (recency wins); mode 1: a loop over 1200 keys (LRU gets nothing). */
static uint64_t s_synthetic(cache_t *c, int mode)
{
    uint64_t r = 88172645463325252ULL, hits = 0;
    char k[32];
    for (unsigned i = 0; i < 400000; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        unsigned key = mode == 0 ? i / 4 + (unsigned)(r % 600) : i % 1200;
        size_t n = s_key(k, "k", key);
        hits += s_access(c, k, n);
    }
    return hits;
}

START_TEST(test_window_adapts)
{
    cache_metrics_t m;
    cache_t *c = s_new(1000, CACHE_POLICY_WTINYLFU, true, 5);
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.window_max_cost, 10); /* starts at 1% */
    uint64_t hits = s_synthetic(c, 0);
    cache_get_metrics(c, &m);
    ck_assert_msg(m.window_max_cost >= 500, "recency workload: window only %llu of 1000",
                  (unsigned long long)m.window_max_cost);
    ck_assert_msg(c->recency_mode, "recency workload: the LRU shadow should have won");
    ck_assert_uint_eq(m.window_max_cost, 1000);
    cache_t *l = s_new(1000, CACHE_POLICY_LRU, true, 5);
    uint64_t lru_hits = s_synthetic(l, 0);
    ck_assert_msg(hits * 100 >= lru_hits * 97, "recency workload: %llu hits against LRU's %llu", (unsigned long long)hits,
                  (unsigned long long)lru_hits);
    cache_destroy(&c);
    cache_destroy(&l);

    c = s_new(1000, CACHE_POLICY_WTINYLFU, true, 5);
    hits = s_synthetic(c, 1);
    cache_get_metrics(c, &m);
    ck_assert_msg(m.window_max_cost <= 50, "loop workload: window %llu of 1000", (unsigned long long)m.window_max_cost);
    ck_assert_msg(!c->recency_mode, "loop workload: in recency mode");
    ck_assert_uint_ge(hits, 400000 * 60 / 100);
    cache_destroy(&c);
}
END_TEST

/* The switch goes both ways: a recency phase puts the cache in recency mode, a long loop larger than
 * the cache (where LRU hits nothing) brings it back to W-TinyLFU, which then holds a fixed part of the
 * loop. Recency mode evicts the least frequent of the oldest entries, never the one being inserted. */
START_TEST(test_mode_switch)
{
    cache_t *c = s_new(1000, CACHE_POLICY_WTINYLFU, true, 5);
    s_synthetic(c, 0);
    ck_assert(c->recency_mode);
    char k[32];
    uint64_t hits = 0;
    unsigned i;
    for (i = 0; i < 200000 && c->recency_mode; i++) {
        size_t n = s_key(k, "loop", i % 1200);
        hits += s_access(c, k, n);
    }
    ck_assert_msg(!c->recency_mode, "still in recency mode after %u loop reads", i);
    hits = 0;
    for (unsigned j = 0; j < 12000; j++) {
        size_t n = s_key(k, "loop", (i + j) % 1200);
        hits += s_access(c, k, n);
    }
    ck_assert_msg(hits > 12000 / 2, "W-TinyLFU after the switch: %llu of 12000 loop reads hit", (unsigned long long)hits);
    s_check_shadows(c);

    /* recency-mode victim choice: among the 4 oldest, the least frequent; oldest on ties */
    cache_t *r = s_new(8, CACHE_POLICY_WTINYLFU, true, 3);
    s_switch(r, true);
    for (unsigned j = 0; j < 8; j++) {
        size_t n = s_key(k, "r", j);
        s_access(r, k, n);
    }
    for (int rep = 0; rep < 4; rep++) { /* r0 and r2 become frequent (recorded, not re-read: order kept) */
        cache_sketch_record(&r->sk, s_h32(r, "r0"));
        cache_sketch_record(&r->sk, s_h32(r, "r2"));
    }
    cache_sketch_record(&r->sk, s_h32(r, "r1"));
    cache_sketch_record(&r->sk, s_h32(r, "r1"));
    s_access(r, "new1", 4); /* candidates r0..r3: r3 is the least frequent */
    ck_assert(!s_resident(r, "r3"));
    ck_assert(s_resident(r, "r0") && s_resident(r, "r1") && s_resident(r, "r2") && s_resident(r, "new1"));
    s_access(r, "new2", 4); /* candidates r0, r1, r2, r4: r4 */
    ck_assert(!s_resident(r, "r4"));
    ck_assert(s_resident(r, "new2"));
    cache_destroy(&r);
    cache_destroy(&c);
}
END_TEST

/* Shadow memory does not grow with the cache: a huge byte-cost cache samples its keys. */
START_TEST(test_shadow_bounded)
{
    cache_t *c = s_new(64ull << 30, CACHE_POLICY_WTINYLFU, false, 7);
    ck_assert_uint_gt(c->sh_shift, 0);
    for (int i = 0; i < 2; i++) {
        const shadow_t *s = i ? &c->sh_tlfu : &c->sh_lru;
        ck_assert_uint_le(s->cap, 2 * CACHE_SHADOW_TRACKED_MAX + 64);
        size_t bytes = ((size_t)s->cap + 2) * sizeof(snode_t) + ((size_t)s->bucket_mask + 1) * sizeof(uint32_t);
        ck_assert_uint_le(bytes, 1u << 20);
    }
    static unsigned char val[100];
    char k[32];
    unsigned sampled = 0;
    for (unsigned i = 0; i < 200000; i++) {
        size_t n = s_key(k, "user:", i);
        sampled += s_sampled(c, s_hash(c, k, n));
        cache_view_t v;
        if (!cache_get(c, k, n, &v))
            cache_put(c, k, n, 1, val, sizeof(val), 0);
    }
    unsigned expect = 200000u >> c->sh_shift;
    ck_assert_msg(sampled > expect / 2 && sampled < expect * 2, "sampled %u of 200000 keys, expected about %u", sampled,
                  expect);
    ck_assert_uint_eq(c->sh_lru.count, sampled);
    s_check_shadows(c);
    cache_destroy(&c);

    /* the sampling follows what the cache can hold, not the sketch-size hint */
    cache_config_t cfg = {.max_cost = 1ull << 30, .num_counters = 100, .policy = CACHE_POLICY_WTINYLFU, .unit_cost = true};
    c = cache_new(&cfg);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_le(c->sh_lru.cap, CACHE_SHADOW_TRACKED_MAX);
    ck_assert_uint_le(c->sh_tlfu.cap, CACHE_SHADOW_TRACKED_MAX);
    cache_destroy(&c);

    /* small caches track every key, with exactly the cache's capacity */
    c = s_new(777, CACHE_POLICY_WTINYLFU, true, 7);
    ck_assert_uint_eq(c->sh_shift, 0);
    ck_assert_uint_eq(c->sh_lru.max_cost, 777);
    ck_assert_uint_eq(c->sh_tlfu.window_max, 7);
    cache_destroy(&c);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Cost accounting, versions, del/clear, oversize
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_entry_cost)
{
    /* 40-byte header + key + value, +8 malloc header, rounded to 16, min 32; + 16 index bytes */
    ck_assert_uint_eq(cache_entry_cost(0, 0), 48 + 16);  /* 40 + 8 -> 48 */
    ck_assert_uint_eq(cache_entry_cost(1, 0), 64 + 16);  /* 41 + 8 -> 64 */
    ck_assert_uint_eq(cache_entry_cost(16, 0), 64 + 16); /* 56 + 8 -> 64 */
    ck_assert_uint_eq(cache_entry_cost(17, 0), 80 + 16); /* 57 + 8 -> 80 */
    ck_assert_uint_eq(cache_entry_cost(8, 8), 64 + 16);
    ck_assert_uint_eq(cache_entry_cost(12, 150), 224 + 16);
    ck_assert_uint_eq(cache_entry_cost(255, CACHE_VALUE_MAX), ((40 + 255 + 65536 + 8 + 15) & ~15u) + 16);
}
END_TEST

static void s_check_invariants(cache_t *c, const char *const *keys, unsigned nkeys, bool unit)
{
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_le(m.cost, m.max_cost);
    uint64_t items = 0, cost = 0;
    for (unsigned i = 0; i < nkeys; i++) {
        cache_view_t v;
        if (cache_peek(c, keys[i], strlen(keys[i]), &v)) {
            items++;
            cost += unit ? 1 : cache_entry_cost(strlen(keys[i]), v.value_len);
        }
    }
    ck_assert_uint_eq(m.items, items);
    ck_assert_uint_eq(m.cost, cost);
    uint64_t lists = c->lists[0].cost + c->lists[1].cost + c->lists[2].cost;
    ck_assert_uint_eq(lists, cost);
}

static void s_random_cost_run(int policy, bool unit, uint64_t max_cost, uint64_t seed)
{
    enum { NKEYS = 300 };
    static char names[NKEYS][32];
    const char *keys[NKEYS];
    for (unsigned i = 0; i < NKEYS; i++) {
        snprintf(names[i], sizeof(names[i]), "key:%u", i * 7919u);
        keys[i] = names[i];
    }
    static unsigned char val[4096];
    memset(val, 'v', sizeof(val));
    uint64_t versions[NKEYS] = {0};
    cache_t *c = s_new(max_cost, policy, unit, seed);
    uint64_t rng = seed | 1;
    /* expected = cost_added - cost_evicted - removed_by_del_or_clear + growth_by_updates */
    int64_t removed = 0, update_delta = 0;
    uint64_t removed_items = 0;
    for (int op = 0; op < 30000; op++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        unsigned i = (unsigned)(rng % NKEYS);
        /* skewed: low keys much more often */
        if ((rng >> 20) % 3)
            i = (unsigned)((rng >> 30) % 40);
        const char *k = keys[i];
        size_t klen = strlen(k);
        unsigned kind = (unsigned)((rng >> 40) % 100);
        size_t vlen = (size_t)((rng >> 48) % 600);
        cache_view_t before;
        bool was = cache_peek(c, k, klen, &before);
        uint64_t before_cost = was ? (unit ? 1 : cache_entry_cost(klen, before.value_len)) : 0;
        if (kind < 50) {
            cache_view_t v;
            bool hit = cache_get(c, k, klen, &v);
            ck_assert(hit == was);
            if (!hit) {
                int r = cache_put(c, k, klen, ++versions[i], val, vlen, 0);
                ck_assert(r == CACHE_ADDED || r == CACHE_REJECTED);
            }
        } else if (kind < 85) {
            uint64_t ver = versions[i] + 1 - (uint64_t)((rng >> 8) % 2); /* sometimes the same version */
            if (ver > versions[i])
                versions[i] = ver;
            int r = cache_put(c, k, klen, ver, val, vlen, (rng >> 12) % 4 == 0 ? CACHE_PUT_IF_PRESENT : 0);
            if (was && r == CACHE_UPDATED) {
                uint64_t now = unit ? 1 : cache_entry_cost(klen, vlen);
                update_delta += (int64_t)now - (int64_t)before_cost;
            }
            if (was && r == CACHE_REJECTED) {
                /* an update too big for the cache drops the old version, counted as an eviction */
                ck_assert(!s_resident(c, k));
            }
        } else if (kind < 99) {
            bool removed_one = cache_del(c, k, klen);
            ck_assert(removed_one == was);
            if (was) {
                removed += (int64_t)before_cost;
                removed_items++;
            }
        } else {
            cache_metrics_t m;
            cache_get_metrics(c, &m);
            removed += (int64_t)m.cost;
            removed_items += m.items;
            cache_clear(c);
        }
        if (op % 97 == 0 || op > 29900) {
            s_check_invariants(c, keys, NKEYS, unit);
            s_check_shadows(c);
        }
        cache_metrics_t m;
        cache_get_metrics(c, &m);
        int64_t expect = (int64_t)m.cost_added - (int64_t)m.cost_evicted - removed + update_delta;
        if (m.cost > max_cost || (int64_t)m.cost != expect || m.items != m.keys_added - m.keys_evicted - removed_items)
            ck_abort_msg("op %d: cost %llu (expected %lld, max %llu), items %llu", op, (unsigned long long)m.cost,
                         (long long)expect, (unsigned long long)max_cost, (unsigned long long)m.items);
    }
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_gt(m.keys_evicted, 100);
    ck_assert_uint_gt(m.hits, 1000);
    cache_destroy(&c);
}

START_TEST(test_cost_accounting_bytes_wtinylfu)
{
    s_random_cost_run(CACHE_POLICY_WTINYLFU, false, 20000, 1 + (uint64_t)_i);
}
END_TEST

START_TEST(test_cost_accounting_bytes_lru)
{
    s_random_cost_run(CACHE_POLICY_LRU, false, 20000, 99);
}
END_TEST

START_TEST(test_cost_accounting_unit)
{
    s_random_cost_run(_i ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, true, 50, 1234);
}
END_TEST

START_TEST(test_versions)
{
    cache_t *c = s_new(100, _i ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, true, 0);
    cache_view_t v;
    cache_metrics_t m;
    ck_assert_int_eq(cache_put(c, "u", 1, 5, "five", 4, 0), CACHE_ADDED);
    ck_assert_int_eq(cache_put(c, "u", 1, 4, "four", 4, 0), CACHE_STALE);
    ck_assert_int_eq(cache_put(c, "u", 1, 5, "FIVE", 4, 0), CACHE_SAME);
    ck_assert(cache_peek(c, "u", 1, &v));
    ck_assert_uint_eq(v.version, 5);
    ck_assert_mem_eq(v.value, "five", 4);
    ck_assert_int_eq(cache_put(c, "u", 1, 9, "nine!", 5, 0), CACHE_UPDATED);
    ck_assert(cache_get(c, "u", 1, &v));
    ck_assert_uint_eq(v.version, 9);
    ck_assert_uint_eq(v.value_len, 5);
    ck_assert_mem_eq(v.value, "nine!", 5);
    ck_assert(!v.negative);

    /* negative entries: a newer positive replaces them, an older one is stale */
    ck_assert_int_eq(cache_put(c, "n", 1, 10, NULL, 0, CACHE_PUT_NEGATIVE), CACHE_ADDED);
    ck_assert(cache_get(c, "n", 1, &v));
    ck_assert(v.negative);
    ck_assert_uint_eq(v.value_len, 0);
    ck_assert_uint_eq(v.version, 10);
    ck_assert_int_eq(cache_put(c, "n", 1, 7, "old", 3, 0), CACHE_STALE);
    ck_assert_int_eq(cache_put(c, "n", 1, 11, "new", 3, 0), CACHE_UPDATED);
    ck_assert(cache_peek(c, "n", 1, &v));
    ck_assert(!v.negative);
    ck_assert_mem_eq(v.value, "new", 3);
    /* and a positive can become negative again (a delete seen later) */
    ck_assert_int_eq(cache_put(c, "n", 1, 12, NULL, 0, CACHE_PUT_NEGATIVE), CACHE_UPDATED);
    ck_assert(cache_peek(c, "n", 1, &v));
    ck_assert(v.negative);
    ck_assert_uint_eq(v.version, 12);

    /* IF_PRESENT: only replaces resident keys, with the same version rules */
    ck_assert_int_eq(cache_put(c, "x", 1, 1, "a", 1, CACHE_PUT_IF_PRESENT), CACHE_ABSENT);
    ck_assert(!cache_peek(c, "x", 1, &v));
    ck_assert_int_eq(cache_put(c, "u", 1, 8, "z", 1, CACHE_PUT_IF_PRESENT), CACHE_STALE);
    ck_assert_int_eq(cache_put(c, "u", 1, 9, "z", 1, CACHE_PUT_IF_PRESENT), CACHE_SAME);
    ck_assert_int_eq(cache_put(c, "u", 1, 20, "twenty", 6, CACHE_PUT_IF_PRESENT), CACHE_UPDATED);
    ck_assert(cache_peek(c, "u", 1, &v));
    ck_assert_uint_eq(v.version, 20);
    ck_assert_mem_eq(v.value, "twenty", 6);

    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.stale_refused, 3);
    ck_assert_uint_eq(m.keys_added, 2);
    ck_assert_uint_eq(m.keys_updated, 4);
    ck_assert_uint_eq(m.items, 2);
    ck_assert_uint_eq(m.cost, 2);
    cache_destroy(&c);
}
END_TEST

START_TEST(test_update_realloc_bytes)
{
    /* byte cost: values that change size move to a new block; neighbours and index must follow */
    cache_t *c = s_new(1 << 20, _i ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, false, 0);
    char k[64], val[2000];
    memset(val, 'q', sizeof(val));
    for (unsigned i = 0; i < 100; i++) {
        size_t n = s_key(k, "key", i);
        ck_assert_int_eq(cache_put(c, k, n, 1, val, 10, 0), CACHE_ADDED);
    }
    for (unsigned ver = 2; ver < 40; ver++) {
        for (unsigned i = 0; i < 100; i += 3) {
            size_t n = s_key(k, "key", i);
            size_t vlen = (ver * 37 + i) % sizeof(val);
            val[0] = (char)ver;
            ck_assert_int_eq(cache_put(c, k, n, ver, val, vlen, 0), CACHE_UPDATED);
            cache_view_t v;
            ck_assert(cache_get(c, k, n, &v));
            ck_assert_uint_eq(v.value_len, vlen);
            ck_assert_uint_eq(v.version, ver);
            if (vlen)
                ck_assert_int_eq(((const char *)v.value)[0], (char)ver);
        }
    }
    const char *keys[100];
    static char names[100][16];
    for (unsigned i = 0; i < 100; i++) {
        s_key(names[i], "key", i);
        keys[i] = names[i];
    }
    s_check_invariants(c, keys, 100, false);
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.items, 100);
    ck_assert_uint_eq(m.keys_evicted, 0);
    cache_destroy(&c);
}
END_TEST

START_TEST(test_del_clear)
{
    cache_t *c = s_new(1000, _i ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, true, 0);
    char k[64];
    for (unsigned i = 0; i < 500; i++) {
        size_t n = s_key(k, "d", i);
        ck_assert_int_eq(cache_put(c, k, n, 1, "v", 1, 0), CACHE_ADDED);
    }
    ck_assert(cache_del(c, "d7", 2));
    ck_assert(!cache_del(c, "d7", 2));
    ck_assert(!cache_del(c, "nope", 4));
    ck_assert(!cache_del(c, "", 0));
    ck_assert(!s_resident(c, "d7"));
    cache_view_t v;
    ck_assert(cache_get(c, "d8", 2, &v));
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.items, 499);
    ck_assert_uint_eq(m.cost, 499);
    ck_assert_uint_eq(m.keys_evicted, 0);
    cache_clear(c);
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.items, 0);
    ck_assert_uint_eq(m.cost, 0);
    ck_assert_uint_eq(m.keys_added, 500);
    ck_assert_uint_eq(m.hits, 1);
    ck_assert_uint_eq(m.keys_evicted, 0);
    for (unsigned i = 0; i < 500; i++) {
        s_key(k, "d", i);
        ck_assert(!s_resident(c, k));
    }
    /* usable after clear */
    ck_assert_int_eq(cache_put(c, "d1", 2, 1, "v", 1, 0), CACHE_ADDED);
    ck_assert(cache_get(c, "d1", 2, &v));
    cache_clear(c);
    cache_clear(c);
    cache_destroy(&c);
    cache_destroy(&c); /* NULL-safe */
    cache_destroy(NULL);
}
END_TEST

START_TEST(test_too_big_and_invalid)
{
    uint64_t max = cache_entry_cost(10, 1000);
    cache_t *c = s_new(max, _i ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, false, 0);
    static char big[CACHE_VALUE_MAX + 1];
    ck_assert_int_eq(cache_put(c, "0123456789", 10, 1, big, 1000, 0), CACHE_ADDED);
    ck_assert_int_eq(cache_put(c, "0123456789", 10, 2, big, 1001 + 16, 0), CACHE_REJECTED);
    ck_assert(!s_resident(c, "0123456789")); /* the outdated version is gone, not served */
    ck_assert_int_eq(cache_put(c, "abc", 3, 1, big, 2000, 0), CACHE_REJECTED);
    ck_assert_int_eq(cache_put(c, "abc", 3, 1, big, CACHE_VALUE_MAX + 1, 0), CACHE_REJECTED);
    ck_assert_int_eq(cache_put(c, "", 0, 1, "v", 1, 0), CACHE_REJECTED);
    char longkey[CACHE_KEY_MAX + 1];
    memset(longkey, 'k', sizeof(longkey));
    ck_assert_int_eq(cache_put(c, longkey, CACHE_KEY_MAX + 1, 1, "v", 1, 0), CACHE_REJECTED);
    cache_view_t v;
    ck_assert(!cache_get(c, longkey, CACHE_KEY_MAX + 1, &v));
    ck_assert(!cache_peek(c, longkey, CACHE_KEY_MAX + 1, &v));
    ck_assert_int_eq(cache_put(c, longkey, CACHE_KEY_MAX, 1, "v", 1, 0), CACHE_ADDED);
    ck_assert(cache_get(c, longkey, CACHE_KEY_MAX, &v));
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.rejections, 5);
    ck_assert_uint_le(m.cost, max);
    ck_assert_uint_eq(m.items, 1);
    cache_destroy(&c);

    cache_config_t bad = {.max_cost = 0};
    ck_assert_ptr_null(cache_new(&bad));
    bad.max_cost = 10;
    bad.policy = 7;
    ck_assert_ptr_null(cache_new(&bad));
    ck_assert_ptr_null(cache_new(NULL));
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Randomized run against a reference model
 * ------------------------------------------------------------------------------------------------- */

enum { MODEL_KEYS = 64 };

typedef struct model {
    bool known[MODEL_KEYS];     /* has the key ever been accepted */
    uint64_t version[MODEL_KEYS];
    bool negative[MODEL_KEYS];
    uint32_t vlen[MODEL_KEYS];
    unsigned char fill[MODEL_KEYS];
    int lru[MODEL_KEYS];        /* LRU only: resident keys, least recent first */
    int nlru;
} model_t;

static void s_model_lru_remove(model_t *md, int k)
{
    for (int i = 0; i < md->nlru; i++) {
        if (md->lru[i] == k) {
            memmove(&md->lru[i], &md->lru[i + 1], (size_t)(md->nlru - i - 1) * sizeof(int));
            md->nlru--;
            return;
        }
    }
}

static bool s_model_lru_has(const model_t *md, int k)
{
    for (int i = 0; i < md->nlru; i++)
        if (md->lru[i] == k)
            return true;
    return false;
}

/* LRU: the model predicts residency exactly. W-TinyLFU: the model checks every answer is consistent
 * (never a stale or wrong value, result codes matching residency, metrics adding up). */
START_TEST(test_random_vs_model)
{
    bool lru = _i == 1;
    enum { CAP = 20 };
    cache_t *c = s_new(CAP, lru ? CACHE_POLICY_LRU : CACHE_POLICY_WTINYLFU, true, 42 + (uint64_t)_i);
    model_t *md = calloc(1, sizeof(*md));
    uint64_t rng = 0x1234567 + (uint64_t)_i;
    uint64_t hits = 0, misses = 0;
    unsigned char buf[300];
    for (int op = 0; op < 200000; op++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        int k = (int)(rng % MODEL_KEYS);
        if ((rng >> 10) % 2)
            k = (int)((rng >> 16) % 24);
        char key[16];
        size_t klen = (size_t)snprintf(key, sizeof(key), "m%d", k);
        unsigned kind = (unsigned)((rng >> 24) % 100);
        cache_view_t v;
        bool resident = cache_peek(c, key, klen, &v);
        if (lru)
            ck_assert_msg(resident == s_model_lru_has(md, k), "op %d key %d", op, k);
        if (resident) {
            /* plain checks in the hot loop: every passing ck_assert costs a write to Check's pipe */
            unsigned char want[sizeof(buf)];
            memset(want, md->fill[k], sizeof(want));
            if (!md->known[k] || v.version != md->version[k] || v.negative != md->negative[k] ||
                v.value_len != md->vlen[k] || (v.value_len && memcmp(v.value, want, v.value_len) != 0))
                ck_abort_msg("op %d key %d: resident entry differs from the model (version %llu, want %llu)", op, k,
                             (unsigned long long)v.version, (unsigned long long)md->version[k]);
        }
        if (kind < 55) {
            bool hit = cache_get(c, key, klen, &v);
            ck_assert(hit == resident);
            hit ? hits++ : misses++;
            if (hit && lru) {
                s_model_lru_remove(md, k);
                md->lru[md->nlru++] = k;
            }
        } else if (kind < 95) {
            uint64_t ver = md->known[k] ? md->version[k] : 0;
            unsigned d = (unsigned)((rng >> 32) % 10);
            ver = d < 2 && ver > 0 ? ver - 1 : d < 4 ? ver : ver + 1 + d; /* older, same or newer */
            if (ver == 0)
                ver = 1;
            unsigned flags = ((rng >> 40) % 5 == 0 ? CACHE_PUT_NEGATIVE : 0) |
                             ((rng >> 44) % 4 == 0 ? CACHE_PUT_IF_PRESENT : 0);
            uint32_t vlen = (flags & CACHE_PUT_NEGATIVE) ? 0 : (uint32_t)((rng >> 48) % sizeof(buf));
            unsigned char fill = (unsigned char)(rng >> 56);
            memset(buf, fill, vlen);
            int r = cache_put(c, key, klen, ver, buf, vlen, flags);
            int expect;
            if (resident)
                expect = ver < md->version[k] ? CACHE_STALE : ver == md->version[k] ? CACHE_SAME : CACHE_UPDATED;
            else
                expect = (flags & CACHE_PUT_IF_PRESENT) ? CACHE_ABSENT : CACHE_ADDED;
            /* unit cost keeps a window of >= 1 entry, so a new key is never refused at once */
            if (r != expect)
                ck_abort_msg("op %d key %d: put returned %d, model expected %d", op, k, r, expect);
            if (r == CACHE_ADDED || r == CACHE_UPDATED) {
                md->known[k] = true;
                md->version[k] = ver;
                md->negative[k] = (flags & CACHE_PUT_NEGATIVE) != 0;
                md->vlen[k] = vlen;
                md->fill[k] = fill;
                if (lru && r == CACHE_ADDED) {
                    md->lru[md->nlru++] = k;
                    if (md->nlru > CAP)
                        s_model_lru_remove(md, md->lru[0]);
                }
            }
        } else if (kind < 99) {
            ck_assert(cache_del(c, key, klen) == resident);
            if (lru)
                s_model_lru_remove(md, k);
        } else if ((rng >> 50) % 20 == 0) {
            cache_clear(c);
            md->nlru = 0;
        }
        if (!lru && op % 251 == 0)
            s_check_shadows(c);
        cache_metrics_t m;
        cache_get_metrics(c, &m);
        if (m.items > CAP || m.items != m.cost || (lru && m.items != (uint64_t)md->nlru))
            ck_abort_msg("op %d: items %llu cost %llu model %d", op, (unsigned long long)m.items,
                         (unsigned long long)m.cost, md->nlru);
    }
    cache_metrics_t m;
    cache_get_metrics(c, &m);
    ck_assert_uint_eq(m.hits, hits);
    ck_assert_uint_eq(m.misses, misses);
    ck_assert_uint_gt(m.keys_evicted, 1000);
    free(md);
    cache_destroy(&c);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Trace oracles
 * ------------------------------------------------------------------------------------------------- */

typedef struct trace {
    char name[64];
    char *blob;     /* keys, NUL-separated */
    char **keys;
    uint32_t *lens;
    size_t n;
} trace_t;

typedef struct ref_row {
    char trace[64];
    uint64_t refs, unique, size, lru_hits, opt_hits;
} ref_row_t;

static const char *s_traces_dir(void)
{
    const char *d = getenv("TRACES_DIR");
    ck_assert_msg(d && *d, "TRACES_DIR is not set: point it at the shared traces directory");
    return d;
}

static void s_trace_load(trace_t *t, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.gz", dir, name);
    gzFile f = gzopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open trace %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, used = 0, ncap = 1 << 14;
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->blob = xmalloc(cap);
    size_t *offs = xmalloc(ncap * sizeof(*offs));
    t->lens = xmalloc(ncap * sizeof(*t->lens));
    char line[512];
    while (gzgets(f, line, (int)sizeof(line))) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0 || (n == 1 && line[0] == '*'))
            continue;
        ck_assert_uint_le(n, CACHE_KEY_MAX);
        if (used + n + 1 > cap) {
            cap *= 2;
            t->blob = xrealloc(t->blob, cap);
        }
        if (t->n == ncap) {
            ncap *= 2;
            offs = xrealloc(offs, ncap * sizeof(*offs));
            t->lens = xrealloc(t->lens, ncap * sizeof(*t->lens));
        }
        memcpy(t->blob + used, line, n);
        t->blob[used + n] = '\0';
        offs[t->n] = used;
        t->lens[t->n] = (uint32_t)n;
        t->n++;
        used += n + 1;
    }
    int zerr;
    gzerror(f, &zerr);
    ck_assert_msg(zerr == Z_OK || zerr == Z_STREAM_END, "read error in %s", path);
    gzclose(f);
    t->keys = xmalloc((t->n ? t->n : 1) * sizeof(*t->keys));
    for (size_t i = 0; i < t->n; i++)
        t->keys[i] = t->blob + offs[i];
    free(offs);
}

static void s_trace_free(trace_t *t)
{
    free(t->blob);
    free(t->keys);
    free(t->lens);
    memset(t, 0, sizeof(*t));
}

static size_t s_read_reference(ref_row_t *rows, size_t max)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/reference_hits.csv", s_traces_dir());
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    char line[512];
    size_t n = 0;
    ck_assert_msg(fgets(line, sizeof(line), f) != NULL, "%s is empty", path);
    ck_assert_msg(strncmp(line, "trace,refs,unique,cache_size,lru_hits,opt_hits", 46) == 0, "unexpected header in %s", path);
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '\n' || line[0] == '\r' || line[0] == '\0')
            continue;
        ck_assert_uint_lt(n, max);
        ref_row_t *r = &rows[n];
        unsigned long long refs, uniq, size, lru, opt;
        int got = sscanf(line, "%63[^,],%llu,%llu,%llu,%llu,%llu", r->trace, &refs, &uniq, &size, &lru, &opt);
        ck_assert_msg(got == 6, "bad line in %s: %s", path, line);
        r->refs = refs, r->unique = uniq, r->size = size, r->lru_hits = lru, r->opt_hits = opt;
        n++;
    }
    fclose(f);
    ck_assert_msg(n > 0, "no rows in %s", path);
    return n;
}

static uint64_t s_replay(const trace_t *t, int policy, uint64_t size, uint64_t seed)
{
    cache_t *c = s_new(size, policy, true, seed);
    uint64_t hits = 0;
    for (size_t i = 0; i < t->n; i++) {
        cache_view_t v;
        if (cache_get(c, t->keys[i], t->lens[i], &v))
            hits++;
        else
            cache_put(c, t->keys[i], t->lens[i], 1, "", 0, 0);
    }
    cache_destroy(&c);
    return hits;
}

/* Replays every reference row; check_row returns NULL or a description of what failed. */
typedef const char *(*row_check_fn)(const ref_row_t *r, const trace_t *t, char *why, size_t whylen);

static void s_run_rows(row_check_fn check)
{
    enum { MAX_ROWS = 256 };
    static ref_row_t rows[MAX_ROWS];
    size_t nrows = s_read_reference(rows, MAX_ROWS);
    const char *dir = s_traces_dir();
    trace_t t = {0};
    static char report[16384];
    size_t rlen = 0, failed = 0;
    report[0] = '\0';
    for (size_t i = 0; i < nrows; i++) {
        if (strcmp(t.name, rows[i].trace) != 0) {
            s_trace_free(&t);
            s_trace_load(&t, dir, rows[i].trace);
        }
        ck_assert_msg(t.n == rows[i].refs, "%s: %zu refs, reference says %llu", rows[i].trace, t.n,
                      (unsigned long long)rows[i].refs);
        char why[256];
        const char *bad = check(&rows[i], &t, why, sizeof(why));
        if (bad) {
            failed++;
            if (rlen < sizeof(report) - 300)
                rlen += (size_t)snprintf(report + rlen, sizeof(report) - rlen, "\n  %s size %llu: %s", rows[i].trace,
                                         (unsigned long long)rows[i].size, bad);
        }
    }
    s_trace_free(&t);
    ck_assert_msg(failed == 0, "%zu of %zu rows failed:%s", failed, nrows, report);
}

static const char *s_check_lru(const ref_row_t *r, const trace_t *t, char *why, size_t whylen)
{
    uint64_t hits = s_replay(t, CACHE_POLICY_LRU, r->size, 0);
    if (hits == r->lru_hits)
        return NULL;
    snprintf(why, whylen, "LRU hits %llu, expected %llu", (unsigned long long)hits, (unsigned long long)r->lru_hits);
    return why;
}

START_TEST(test_lru_oracle)
{
    s_run_rows(s_check_lru);
}
END_TEST

/* W-TinyLFU over the trace; *shadow_lru_hits: how often the LRU shadow held the key (a white-box count:
 * the shadow tracks every key at these sizes, so it must reproduce exact LRU). */
static uint64_t s_replay_wtinylfu(const trace_t *t, uint64_t size, uint64_t *shadow_lru_hits)
{
    cache_t *c = s_new(size, CACHE_POLICY_WTINYLFU, true, 0);
    ck_assert_uint_eq(c->sh_shift, 0);
    uint64_t hits = 0, shadow = 0;
    for (size_t i = 0; i < t->n; i++) {
        shadow += *s_shadow_link(&c->sh_lru, (uint32_t)s_hash(c, t->keys[i], t->lens[i])) != 0;
        cache_view_t v;
        if (cache_get(c, t->keys[i], t->lens[i], &v))
            hits++;
        else
            cache_put(c, t->keys[i], t->lens[i], 1, "", 0, 0);
    }
    s_check_shadows(c);
    cache_destroy(&c);
    *shadow_lru_hits = shadow;
    return hits;
}

static bool s_trace_is(const ref_row_t *r, const char *name)
{
    size_t n = strlen(name);
    return strncmp(r->trace, name, n) == 0 && (r->trace[n] == '.' || r->trace[n] == '\0');
}

/* Properties that hold for any sound W-TinyLFU, with wide margins (the tight goals are a benchmark):
 * - never above OPT (that would be a bug in the cache or in the replay);
 * - the LRU shadow is exact LRU;
 * - looping traces (gli, loop, cs), where LRU collapses and OPT is >= 25 points above it: at least 20
 *   points above LRU (TinyLFU admission keeps a fixed part of the loop);
 * - frequency-heavy traces (multi1, ps, 2_pools) with OPT >= 20 points above LRU: at least 5 above LRU;
 * - the recency-heavy trace (sprite): at most half a point below LRU (the switch to recency mode). */
static const char *s_check_wtinylfu_sane(const ref_row_t *r, const trace_t *t, char *why, size_t whylen)
{
    uint64_t shadow = 0, hits = s_replay_wtinylfu(t, r->size, &shadow);
    double refs = (double)r->refs;
    double pct = 100.0 * (double)hits / refs, lru = 100.0 * (double)r->lru_hits / refs,
           opt = 100.0 * (double)r->opt_hits / refs;
    size_t n = 0;
    why[0] = '\0';
    if (hits > r->opt_hits)
        n += (size_t)snprintf(why + n, whylen - n, "above OPT (%.2f%% > %.2f%%: impossible, a bug); ", pct, opt);
    if (shadow != r->lru_hits)
        n += (size_t)snprintf(why + n, whylen - n, "LRU shadow hit %llu, exact LRU %llu; ", (unsigned long long)shadow,
                              (unsigned long long)r->lru_hits);
    bool looping = s_trace_is(r, "gli") || s_trace_is(r, "loop") || s_trace_is(r, "cs");
    bool frequency = s_trace_is(r, "multi1") || s_trace_is(r, "ps") || s_trace_is(r, "2_pools");
    if (looping && opt - lru >= 25.0 && pct < lru + 20.0)
        n += (size_t)snprintf(why + n, whylen - n, "looping trace: %.2f%%, not 20 points above LRU %.2f%%; ", pct, lru);
    if (frequency && opt - lru >= 20.0 && pct < lru + 5.0)
        n += (size_t)snprintf(why + n, whylen - n, "frequency-heavy: %.2f%%, not 5 points above LRU %.2f%%; ", pct, lru);
    if (s_trace_is(r, "sprite") && pct < lru - 0.5)
        n += (size_t)snprintf(why + n, whylen - n, "recency-heavy: %.2f%%, more than 0.5 below LRU %.2f%%; ", pct, lru);
    return n ? why : NULL;
}

START_TEST(test_wtinylfu_sane)
{
    s_run_rows(s_check_wtinylfu_sane);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */

static Suite *s_suite(void)
{
    Suite *s = suite_create("cache");

    TCase *tc = tcase_create("sketch");
    tcase_add_test(tc, test_sketch_counts);
    tcase_add_test(tc, test_sketch_halving);
    tcase_add_test(tc, test_doorkeeper);
    suite_add_tcase(s, tc);

    tc = tcase_create("policy");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_admission_frequent_beats_one_hit);
    tcase_add_test(tc, test_lru_order);
    tcase_add_test(tc, test_window_adapts);
    tcase_add_test(tc, test_mode_switch);
    tcase_add_test(tc, test_shadow_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("accounting");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_entry_cost);
    tcase_add_loop_test(tc, test_cost_accounting_bytes_wtinylfu, 0, 3);
    tcase_add_test(tc, test_cost_accounting_bytes_lru);
    tcase_add_loop_test(tc, test_cost_accounting_unit, 0, 2);
    tcase_add_loop_test(tc, test_too_big_and_invalid, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("versions");
    tcase_add_loop_test(tc, test_versions, 0, 2);
    tcase_add_loop_test(tc, test_update_realloc_bytes, 0, 2);
    tcase_add_loop_test(tc, test_del_clear, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_random_vs_model, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("traces");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lru_oracle);
    tcase_add_test(tc, test_wtinylfu_sane);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
