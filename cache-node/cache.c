/* cache.c -- the cache-node's cache engine: a hash index, three intrusive LRU lists and a TinyLFU
 * frequency sketch behind the cache.h API (policy, version rules and cost model are described there).
 *
 * Memory layout: every entry is a single malloc block holding a 40-byte header, the key and the value.
 * The index is a chained hash table of entry pointers (the chain link lives in the entry) that doubles
 * when the load factor passes 1. The W-TinyLFU regions -- window, probation, protected -- are doubly
 * linked lists threaded through the same header; CACHE_POLICY_LRU uses the window list alone.
 *
 * Key decision: the window/main split is not fixed. A hill climber samples the hit rate and keeps moving
 * the split in the direction that last improved it (Caffeine's idea), so a recency-heavy workload grows
 * the window toward LRU and a looping or frequency-heavy one shrinks it until TinyLFU admission decides
 * almost everything. The constants below were chosen by replaying the LIRS traces (BENCHMARKS.md, cache section).
 *
 * Second decision: a hill climber alone loses to plain LRU on recency-heavy workloads (it follows every
 * phase and pays for each move), so the cache also runs two keys-only shadows over a hash sample of the
 * keys: plain LRU and W-TinyLFU with a fixed 1% window, both of the cache's capacity (scaled to the
 * sample). They are scored on the same reads: whenever one hits and the other misses, that one gains a
 * point. A switch costs a partial refill, so it takes a lead that is statistically clear *and* large:
 * when LRU wins by a clear margin and at least 4 to 1, the cache switches to recency mode (the window
 * becomes the whole cache: LRU, with the least frequent of the few oldest entries evicted first); when
 * W-TinyLFU wins by a clear margin and by more reads than half the entries the cache holds, it switches
 * back to the adaptive W-TinyLFU. Shadow memory is bounded whatever the cache size: each shadow tracks
 * about CACHE_SHADOW_TRACKED_MAX sampled keys (at most twice that plus 64 nodes), 20 bytes per node plus
 * 4 per index bucket -- under 2 MiB for both. Every shadow operation is O(1); a mode switch costs at
 * most what one climber step costs. Per-entry memory is unchanged.
 *
 * Files: this one owns the entries, the index, the regions, admission and eviction, the climber, the
 * mode switch and the API (struct cache); the frequency sketch is cache_sketch.c, the shadows are
 * cache_shadow.c, and cache_int.h holds what the three share.
 *
 * Threading: none. One thread owns a cache_t. The engine does no I/O and never logs.
 */
#include "cache_int.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------------------------------------------------------------------------------------------
 * Tunables
 * ------------------------------------------------------------------------------------------------- */

#define CACHE_DEFAULT_SEED 0x5eed0fca4e5eedULL
#define CACHE_BYTES_PER_ENTRY_GUESS 200u  /* expected entries = max_cost / this when num_counters == 0 */
#define CACHE_INDEX_SHARE 16u             /* bucket-array bytes per entry at the worst load factor (1/2) */
#define CACHE_MIN_BUCKETS 64u

/* The sketch's sizing and ageing are in cache_sketch.c; the window and protected shares
 * (CACHE_WINDOW_PCT, CACHE_PROTECTED_PCT), which the W-TinyLFU shadow uses too, in cache_int.h. */

#define CACHE_CLIMB_SAMPLE_PER_ENTRY 3u   /* climber sample period: 3 x entries requests ... */
#define CACHE_CLIMB_SAMPLE_MIN 4096u      /* ... at least this many */
#define CACHE_CLIMB_STEP 0.20             /* step: share of max_cost */
#define CACHE_CLIMB_DECAY 0.90            /* step multiplier after each sample ... */
#define CACHE_CLIMB_RESTART 0.20          /* ... unless the hit rate moved this much: full step again */

#define CACHE_SHADOW_TRACKED_MAX 16384u /* shadows track a hash sample of at most ~this many entries */
#define CACHE_SWITCH_Z 4.0               /* switch mode when the other shadow leads by z standard deviations ... */
#define CACHE_SWITCH_MIN 8.0             /* ... and by at least this many reads; to recency mode ... */
#define CACHE_SWITCH_EFFECT 0.6          /* ... only if LRU won >= 80% of the reads where they differed; */
#define CACHE_SWITCH_BACK_SHARE 0.5      /* back to W-TinyLFU only by this many reads per tracked entry */
#define CACHE_EVIDENCE_DECAY 0.75        /* share of the shadows' scores kept at each climber sample */
#define CACHE_RECENCY_SAMPLE 4u          /* recency mode evicts the least frequent of the oldest 4 */

#define CACHE_HASHDOS_MIN_FREQ 6u         /* a losing candidate at least this frequent ... */
#define CACHE_HASHDOS_MASK 127u           /* ... is still admitted with probability 1/128 */

/* ---------------------------------------------------------------------------------------------------
 * Entries and lists
 * ------------------------------------------------------------------------------------------------- */

/* entry.bits: value length (17 bits: 0..65536), key length (8 bits), region (2 bits), negative (1 bit) */
#define E_VLEN_MASK 0x1ffffu
#define E_KLEN_SHIFT 17
#define E_REGION_SHIFT 25
#define E_NEGATIVE (1u << 27)

typedef struct entry entry_t;
struct entry {
    entry_t *hnext;       /* hash chain */
    entry_t *prev, *next; /* region list; prev points toward the LRU end */
    uint64_t version;
    uint32_t hash;        /* low 32 bits of the key hash: bucket index, quick compare, sketch key */
    uint32_t bits;
    unsigned char data[]; /* key, then value */
};
_Static_assert(sizeof(struct entry) == 40, "the entry header is part of the cost model: keep it 40 bytes");

typedef struct list {
    entry_t *head, *tail; /* head = LRU end, tail = MRU end */
    uint64_t cost;
} list_t;

static inline size_t s_klen(const entry_t *e)
{
    return (e->bits >> E_KLEN_SHIFT) & 0xffu;
}

static inline size_t s_vlen(const entry_t *e)
{
    return e->bits & E_VLEN_MASK;
}

static inline int s_region(const entry_t *e)
{
    return (int)((e->bits >> E_REGION_SHIFT) & 3u);
}

static inline void s_set_region(entry_t *e, int r)
{
    e->bits = (e->bits & ~(3u << E_REGION_SHIFT)) | ((uint32_t)r << E_REGION_SHIFT);
}

/* What glibc malloc really hands out for a request of n bytes: n plus an 8-byte header, rounded up to
 * 16, at least 32. */
static inline uint64_t s_chunk(size_t n)
{
    uint64_t c = ((uint64_t)n + 8u + 15u) & ~(uint64_t)15u;
    return c < 32u ? 32u : c;
}

uint64_t cache_entry_cost(size_t klen, size_t vlen)
{
    return s_chunk(sizeof(entry_t) + klen + vlen) + CACHE_INDEX_SHARE;
}

/* ---------------------------------------------------------------------------------------------------
 * The cache
 * ------------------------------------------------------------------------------------------------- */

struct cache {
    uint64_t max_cost;
    int policy;
    bool unit_cost;
    uint64_t seed;
    uint64_t rng; /* xorshift64 state for the hash-flooding admission coin */

    entry_t **buckets;
    uint64_t nbuckets; /* power of two */

    list_t lists[3]; /* R_WINDOW, R_PROBATION, R_PROTECTED */
    uint64_t window_max, protected_max;

    sketch_t sk; /* W-TinyLFU only */

    /* Mode switch (W-TinyLFU only): shadows of plain LRU and of fixed-window W-TinyLFU over the sampled
     * keys, and their decayed scores (sampled reads that only that shadow hit). */
    shadow_t sh_lru, sh_tlfu;
    unsigned sh_shift; /* a key is sampled when the top sh_shift bits of its hash are zero */
    double score_lru, score_tlfu;
    bool recency_mode; /* the window is the whole cache */
    bool switched;     /* this climber sample already switched */

    /* hill climber */
    uint64_t climb_hits, climb_misses, climb_sample;
    double climb_prev_rate, climb_step;

    /* Read-through coalescing: the key hash the previous call (a cache_get) missed. A put of that key
     * right after it is the same logical access and is not counted twice in the sketch. */
    uint64_t miss_hash;
    bool miss_pending;

    /* The entry cache_put is inserting, so maintenance can tell "refused at once" from an eviction. */
    entry_t *incoming;
    bool incoming_lost;

    cache_metrics_t m; /* items and cost are kept live here */
};

static inline uint64_t s_hash(const cache_t *c, const void *key, size_t klen)
{
    return util_hash64(key, klen, c->seed);
}

static inline uint64_t s_cost(const cache_t *c, size_t klen, size_t vlen)
{
    return c->unit_cost ? 1u : cache_entry_cost(klen, vlen);
}

static inline uint64_t s_entry_cost(const cache_t *c, const entry_t *e)
{
    return s_cost(c, s_klen(e), s_vlen(e));
}

static inline uint64_t s_rand(cache_t *c)
{
    uint64_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Whether the shadows see key hash h64: the top sh_shift bits are zero (1 key in 2^sh_shift). */
static inline bool s_sampled(const cache_t *c, uint64_t h64)
{
    return c->sh_shift == 0 || (h64 >> (64 - c->sh_shift)) == 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Lists and index
 * ------------------------------------------------------------------------------------------------- */

static void s_list_unlink(cache_t *c, entry_t *e)
{
    list_t *l = &c->lists[s_region(e)];
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
    l->cost -= s_entry_cost(c, e);
    s_set_region(e, R_NONE);
}

static void s_list_push(cache_t *c, int region, entry_t *e)
{
    list_t *l = &c->lists[region];
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->cost += s_entry_cost(c, e);
    s_set_region(e, region);
}

static void s_list_move(cache_t *c, entry_t *e, int region)
{
    if (s_region(e) == region && c->lists[region].tail == e)
        return;
    s_list_unlink(c, e);
    s_list_push(c, region, e);
}

/* The link that points at the entry for key, or at the NULL ending its chain. */
static entry_t **s_find(const cache_t *c, const void *key, size_t klen, uint32_t h)
{
    entry_t **pp = &c->buckets[h & (c->nbuckets - 1)];
    for (entry_t *e; (e = *pp) != NULL; pp = &e->hnext) {
        if (e->hash == h && s_klen(e) == klen && memcmp(e->data, key, klen) == 0)
            return pp;
    }
    return pp;
}

static entry_t **s_link_of(const cache_t *c, const entry_t *e)
{
    entry_t **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    return pp;
}

/* Double the bucket array (all at once: amortised O(1) per insert). */
static void s_grow(cache_t *c)
{
    uint64_t n = c->nbuckets * 2;
    entry_t **nb = xcalloc(n, sizeof(*nb));
    for (uint64_t i = 0; i < c->nbuckets; i++) {
        entry_t *e = c->buckets[i];
        while (e) {
            entry_t *next = e->hnext;
            entry_t **head = &nb[e->hash & (n - 1)];
            e->hnext = *head;
            *head = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->nbuckets = n;
}

/* Unlink e from its chain and region and free it. Counters other than items/cost are the caller's. */
static void s_remove(cache_t *c, entry_t *e)
{
    entry_t **pp = s_link_of(c, e);
    *pp = e->hnext;
    if (s_region(e) != R_NONE)
        s_list_unlink(c, e);
    c->m.items--;
    c->m.cost -= s_entry_cost(c, e);
    if (e == c->incoming) {
        c->incoming = NULL;
        c->incoming_lost = true;
    }
    free(e);
}

/* Remove e for lack of room. The entry the current cache_put is inserting is not counted as an
 * eviction: that put returns CACHE_REJECTED instead. */
static void s_evict(cache_t *c, entry_t *e)
{
    if (e != c->incoming) {
        c->m.keys_evicted++;
        c->m.cost_evicted += s_entry_cost(c, e);
    }
    s_remove(c, e);
}

/* ---------------------------------------------------------------------------------------------------
 * Policy
 * ------------------------------------------------------------------------------------------------- */

/* TinyLFU admission: does the candidate deserve the victim's place? Ties go to the resident victim.
 * A losing candidate that is clearly not cold still gets a small random chance, so an attacker who
 * makes victims look hot through sketch collisions cannot pin the main region forever. */
static bool s_admit(cache_t *c, const entry_t *cand, const entry_t *victim)
{
    unsigned cf = cache_sketch_estimate(&c->sk, cand->hash), vf = cache_sketch_estimate(&c->sk, victim->hash);
    if (cf > vf)
        return true;
    if (cf < CACHE_HASHDOS_MIN_FREQ)
        return false;
    return (s_rand(c) & CACHE_HASHDOS_MASK) == 0;
}

/* In recency mode, once the main region has drained: the window entry to evict, the least frequent of
 * the CACHE_RECENCY_SAMPLE oldest (the oldest on ties), never the entry being inserted. */
static entry_t *s_recency_victim(const cache_t *c)
{
    entry_t *victim = c->lists[R_WINDOW].head, *x = victim->next;
    unsigned vf = cache_sketch_estimate(&c->sk, victim->hash);
    for (unsigned k = 1; k < CACHE_RECENCY_SAMPLE && x; k++, x = x->next) {
        if (x == c->incoming)
            continue;
        unsigned xf = cache_sketch_estimate(&c->sk, x->hash);
        if (xf < vf) {
            victim = x;
            vf = xf;
        }
    }
    return victim;
}

/* Restore the size invariants after an insert, an update or a window resize:
 * 1. window overflow moves, LRU first, to probation; while the cache is over max_cost each such
 *    candidate duels the main region's LRU victim (probation, else protected) and the loser goes
 *    (in recency mode the window is the whole cache, so this happens only once main has drained, and
 *    the candidate is picked by s_recency_victim);
 * 2. whatever is still over max_cost (an update that grew, a main region that must shrink because
 *    the window grew) is evicted in order probation, protected, window.
 * LRU simply evicts from the LRU end. */
static void s_maintain(cache_t *c)
{
    list_t *win = &c->lists[R_WINDOW], *prob = &c->lists[R_PROBATION], *prot = &c->lists[R_PROTECTED];
    if (c->policy == CACHE_POLICY_LRU) {
        while (c->m.cost > c->max_cost && win->head)
            s_evict(c, win->head);
        return;
    }
    while (win->cost > c->window_max && win->head) {
        entry_t *cand = c->recency_mode && !prob->head && !prot->head ? s_recency_victim(c) : win->head;
        s_list_unlink(c, cand);
        bool lost = false;
        while (!lost && c->m.cost > c->max_cost) {
            entry_t *victim = prob->head ? prob->head : prot->head;
            if (!victim) {
                lost = true;
            } else if (s_admit(c, cand, victim)) {
                s_evict(c, victim);
            } else {
                c->m.rejections++;
                lost = true;
            }
        }
        if (lost)
            s_evict(c, cand);
        else
            s_list_push(c, R_PROBATION, cand);
    }
    while (c->m.cost > c->max_cost) {
        entry_t *victim = prob->head ? prob->head : prot->head ? prot->head : win->head;
        if (!victim)
            break;
        s_evict(c, victim);
    }
}

static void s_demote_protected(cache_t *c)
{
    list_t *prot = &c->lists[R_PROTECTED];
    while (prot->cost > c->protected_max && prot->head)
        s_list_move(c, prot->head, R_PROBATION);
}

static void s_set_window(cache_t *c, uint64_t window_max)
{
    c->window_max = window_max;
    c->protected_max = cache_share(c->max_cost - window_max, CACHE_PROTECTED_PCT, 100);
}

/* Enter or leave recency mode. Entries only change region here; nothing is evicted. Entering is O(1):
 * the main region is not demoted in bulk but drains by eviction (it goes first), and its entries move
 * to the window when read. Leaving hands the window's overflow to probation at once, as a climber
 * step does; at most one switch per climber sample keeps that amortised O(1). */
static void s_switch(cache_t *c, bool to_recency)
{
    c->recency_mode = to_recency;
    c->switched = true;
    c->score_lru = c->score_tlfu = 0;
    c->climb_hits = c->climb_misses = 0;
    c->climb_prev_rate = 0;
    c->climb_step = -CACHE_CLIMB_STEP * (double)c->max_cost;
    if (to_recency) {
        c->window_max = c->max_cost;
        c->protected_max = 0;
    } else {
        uint64_t w = cache_share(c->max_cost, CACHE_WINDOW_PCT, 100);
        s_set_window(c, w ? w : 1);
        s_maintain(c);
    }
}

/* Score one sampled read (lru_hit, tlfu_hit: what the shadows did) and switch mode when the other
 * policy's shadow is clearly ahead. "Clearly": among the reads where exactly one shadow hit, the
 * lead is more than CACHE_SWITCH_Z standard deviations of a fair coin (a sign test) and at least
 * CACHE_SWITCH_MIN reads; to enter recency mode the lead must also be CACHE_SWITCH_EFFECT of those
 * reads (a mixed workload where LRU is only somewhat ahead for a while stays with W-TinyLFU), to leave
 * it CACHE_SWITCH_BACK_SHARE reads per tracked entry (rebuilding the frequent set costs up to a miss
 * per entry, so a small lead does not pay). */
static void s_score(cache_t *c, bool lru_hit, bool tlfu_hit)
{
    if (lru_hit == tlfu_hit)
        return;
    if (lru_hit)
        c->score_lru += 1;
    else
        c->score_tlfu += 1;
    double both = c->score_lru + c->score_tlfu;
    double lead = c->recency_mode ? c->score_tlfu - c->score_lru : c->score_lru - c->score_tlfu;
    double min = c->recency_mode ? CACHE_SWITCH_BACK_SHARE * (double)c->sh_lru.count : CACHE_SWITCH_EFFECT * both;
    if (min < CACHE_SWITCH_MIN)
        min = CACHE_SWITCH_MIN;
    if (!c->switched && lead >= min && lead * lead > CACHE_SWITCH_Z * CACHE_SWITCH_Z * both)
        s_switch(c, !c->recency_mode);
}

/* Hill climbing on the hit rate. At the end of each sample period move the window by the current
 * step: keep the direction while the hit rate does not fall, reverse it when it does. A large swing
 * of the hit rate (a new workload) restarts a full-size step; otherwise the step decays so the split
 * settles instead of oscillating. Entries only change region here; nothing is evicted. The period
 * also ages the shadows' scores. In recency mode the window stays the whole cache. */
static void s_climb(cache_t *c)
{
    uint64_t req = c->climb_hits + c->climb_misses;
    if (req < c->climb_sample)
        return;
    c->score_lru *= CACHE_EVIDENCE_DECAY;
    c->score_tlfu *= CACHE_EVIDENCE_DECAY;
    c->switched = false;
    if (c->recency_mode) {
        c->climb_hits = c->climb_misses = 0;
        return;
    }
    double rate = (double)c->climb_hits / (double)req;
    double change = rate - c->climb_prev_rate;
    double amount = change >= 0 ? c->climb_step : -c->climb_step;
    double full = CACHE_CLIMB_STEP * (double)c->max_cost;
    if (change >= CACHE_CLIMB_RESTART || change <= -CACHE_CLIMB_RESTART)
        c->climb_step = amount >= 0 ? full : -full;
    else
        c->climb_step = CACHE_CLIMB_DECAY * amount;
    c->climb_prev_rate = rate;
    c->climb_hits = c->climb_misses = 0;

    double w = (double)c->window_max + amount;
    double lo = c->unit_cost ? 1.0 : 0.0, hi = (double)c->max_cost;
    w = w < lo ? lo : w > hi ? hi : w;
    uint64_t nw = (uint64_t)(w + 0.5);
    if (nw > c->max_cost)
        nw = c->max_cost;
    if (nw == c->window_max)
        return;
    s_set_window(c, nw);
    s_demote_protected(c);
    s_maintain(c); /* a smaller window hands its LRU entries to probation; total cost is unchanged */
}

/* ---------------------------------------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------------------------------------- */

cache_t *cache_new(const cache_config_t *cfg)
{
    if (!cfg || cfg->max_cost == 0 || (cfg->policy != CACHE_POLICY_WTINYLFU && cfg->policy != CACHE_POLICY_LRU))
        return NULL;
    cache_t *c = xcalloc(1, sizeof(*c));
    c->max_cost = cfg->max_cost;
    c->policy = cfg->policy;
    c->unit_cost = cfg->unit_cost;
    c->seed = cfg->seed ? cfg->seed : CACHE_DEFAULT_SEED;
    c->rng = util_mix64(c->seed ^ 0xa0761d6478bd642fULL) | 1u;
    c->nbuckets = CACHE_MIN_BUCKETS;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->m.max_cost = c->max_cost;
    if (c->policy == CACHE_POLICY_LRU) {
        c->window_max = c->max_cost;
        return c;
    }

    uint64_t entries = cfg->num_counters;
    if (!entries)
        entries = c->unit_cost ? c->max_cost : c->max_cost / CACHE_BYTES_PER_ENTRY_GUESS;
    if (entries < 16)
        entries = 16;
    if (entries > (1ULL << 40))
        entries = 1ULL << 40;
    cache_sketch_init(&c->sk, entries, c->seed);
    uint64_t w = cache_share(c->max_cost, CACHE_WINDOW_PCT, 100);
    s_set_window(c, w ? w : 1);
    c->climb_sample = entries * CACHE_CLIMB_SAMPLE_PER_ENTRY;
    if (c->climb_sample < CACHE_CLIMB_SAMPLE_MIN)
        c->climb_sample = CACHE_CLIMB_SAMPLE_MIN;
    /* The first move shrinks the window (as Caffeine does); the next sample says whether that helped. */
    c->climb_step = -CACHE_CLIMB_STEP * (double)c->max_cost;

    /* Shadows: sample 1 key in 2^shift so that about CACHE_SHADOW_TRACKED_MAX entries are tracked, and
     * scale the capacity alike. With unit cost the cache holds exactly max_cost entries and so does a
     * shadow (scaled); with byte costs allow entries of half the expected size (and a little more)
     * before the node limit, rather than the cost, binds. */
    uint64_t held = c->unit_cost ? c->max_cost : entries;
    unsigned shift = 0;
    while ((held >> shift) > CACHE_SHADOW_TRACKED_MAX)
        shift++;
    c->sh_shift = shift;
    uint64_t smax = c->max_cost >> shift, scap = c->unit_cost ? smax : 2 * (entries >> shift) + 64;
    cache_shadow_init(&c->sh_lru, false, smax, scap);
    cache_shadow_init(&c->sh_tlfu, true, smax, scap);
    return c;
}

void cache_destroy(cache_t **cp)
{
    if (!cp || !*cp)
        return;
    cache_t *c = *cp;
    cache_clear(c);
    free(c->buckets);
    cache_sketch_fini(&c->sk);
    cache_shadow_fini(&c->sh_lru);
    cache_shadow_fini(&c->sh_tlfu);
    free(c);
    *cp = NULL;
}

static void s_fill_view(const entry_t *e, cache_view_t *out)
{
    if (!out)
        return;
    out->value = e->data + s_klen(e);
    out->value_len = (uint32_t)s_vlen(e);
    out->version = e->version;
    out->negative = (e->bits & E_NEGATIVE) != 0;
}

bool cache_get(cache_t *c, const void *key, size_t klen, cache_view_t *out)
{
    c->miss_pending = false;
    if (klen == 0 || klen > CACHE_KEY_MAX) {
        c->m.misses++;
        return false;
    }
    uint64_t h64 = s_hash(c, key, klen);
    uint32_t h = (uint32_t)h64;
    bool tinylfu = c->policy == CACHE_POLICY_WTINYLFU;
    uint64_t spread = tinylfu ? cache_sketch_prefetch(&c->sk, h) : 0;
    entry_t *e = *s_find(c, key, klen, h);
    if (tinylfu) {
        cache_sketch_record_spread(&c->sk, spread);
        if (s_sampled(c, h64)) {
            bool lh = cache_shadow_get(&c->sh_lru, h), th = cache_shadow_get(&c->sh_tlfu, h);
            /* A shadow that missed would now get the key put back by the caller; when we hit, no put
             * follows, so insert it here at the cost we know. (When we missed, cache_put does it.) */
            if (e && !lh)
                cache_shadow_put(&c->sh_lru, &c->sk, h, s_entry_cost(c, e), false);
            if (e && !th)
                cache_shadow_put(&c->sh_tlfu, &c->sk, h, s_entry_cost(c, e), false);
            s_score(c, lh, th); /* may switch mode: e stays resident */
        }
        if (e) {
            c->climb_hits++;
            if (s_region(e) == R_WINDOW || c->recency_mode) {
                s_list_move(c, e, R_WINDOW);
            } else {
                s_list_move(c, e, R_PROTECTED); /* probation -> protected, or protected MRU */
                s_demote_protected(c);
            }
        } else {
            c->climb_misses++;
            c->miss_hash = h64;
            c->miss_pending = true;
        }
        s_climb(c); /* only moves entries between regions: e stays resident */
    } else if (e) {
        s_list_move(c, e, R_WINDOW);
    }
    if (!e) {
        c->m.misses++;
        return false;
    }
    c->m.hits++;
    s_fill_view(e, out);
    return true;
}

bool cache_peek(const cache_t *c, const void *key, size_t klen, cache_view_t *out)
{
    if (klen == 0 || klen > CACHE_KEY_MAX)
        return false;
    entry_t *e = *s_find(c, key, klen, (uint32_t)s_hash(c, key, klen));
    if (!e)
        return false;
    s_fill_view(e, out);
    return true;
}

static entry_t *s_entry_new(uint32_t h, const void *key, size_t klen, uint64_t version, const void *val,
                            size_t vlen, unsigned flags)
{
    entry_t *e = xmalloc(sizeof(entry_t) + klen + vlen);
    e->hnext = e->prev = e->next = NULL;
    e->version = version;
    e->hash = h;
    e->bits = (uint32_t)vlen | (uint32_t)klen << E_KLEN_SHIFT | (uint32_t)R_NONE << E_REGION_SHIFT |
              ((flags & CACHE_PUT_NEGATIVE) ? E_NEGATIVE : 0u);
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    return e;
}

/* Replace resident entry e (found at link pp) by a newer version: in place when the allocation can
 * hold it, else in a new block that takes over e's chain link and list position. Recency and
 * frequency are left alone (a change-stream update is not a read). If the new version cannot fit at
 * all, the outdated entry is dropped (counted as an eviction) and the put is CACHE_REJECTED. */
static int s_replace(cache_t *c, entry_t **pp, entry_t *e, uint64_t version, const void *val, size_t vlen,
                     unsigned flags)
{
    size_t klen = s_klen(e);
    uint64_t old_cost = s_entry_cost(c, e), new_cost = s_cost(c, klen, vlen);
    if (new_cost > c->max_cost) {
        c->m.rejections++;
        s_evict(c, e);
        return CACHE_REJECTED;
    }
    int region = s_region(e);
    /* In place only when the block keeps its malloc size class (so the cost model stays exact) and
     * really has the room (malloc_usable_size; under ASan that is the size first requested). */
    size_t need = sizeof(entry_t) + klen + vlen;
    if (s_chunk(need) != s_chunk(sizeof(entry_t) + klen + s_vlen(e)) || malloc_usable_size(e) < need) {
        entry_t *n = xmalloc(sizeof(entry_t) + klen + vlen);
        memcpy(n, e, sizeof(entry_t) + klen);
        *pp = n;
        list_t *l = &c->lists[region];
        if (n->prev)
            n->prev->next = n;
        else
            l->head = n;
        if (n->next)
            n->next->prev = n;
        else
            l->tail = n;
        free(e);
        e = n;
    }
    e->version = version;
    e->bits = (e->bits & ~(E_VLEN_MASK | E_NEGATIVE)) | (uint32_t)vlen | ((flags & CACHE_PUT_NEGATIVE) ? E_NEGATIVE : 0u);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    c->lists[region].cost = c->lists[region].cost - old_cost + new_cost;
    c->m.cost = c->m.cost - old_cost + new_cost;
    c->m.keys_updated++;
    if (new_cost > old_cost)
        s_maintain(c);
    return CACHE_UPDATED;
}

int cache_put(cache_t *c, const void *key, size_t klen, uint64_t version, const void *val, size_t vlen, unsigned flags)
{
    bool read_through = c->miss_pending;
    c->miss_pending = false;
    if (klen == 0 || klen > CACHE_KEY_MAX || vlen > CACHE_VALUE_MAX || (vlen && !val)) {
        c->m.rejections++;
        return CACHE_REJECTED;
    }
    uint64_t h64 = s_hash(c, key, klen);
    uint32_t h = (uint32_t)h64;
    if (c->policy == CACHE_POLICY_WTINYLFU && s_sampled(c, h64)) {
        /* The shadows see the put as a cache of their policy would (versions aside). */
        uint64_t cost = s_cost(c, klen, vlen);
        bool only_update = (flags & CACHE_PUT_IF_PRESENT) != 0;
        cache_shadow_put(&c->sh_lru, &c->sk, h, cost, only_update);
        cache_shadow_put(&c->sh_tlfu, &c->sk, h, cost, only_update);
    }
    entry_t **pp = s_find(c, key, klen, h);
    entry_t *e = *pp;
    if (e) {
        if (e->version > version) {
            c->m.stale_refused++;
            return CACHE_STALE;
        }
        if (e->version == version)
            return CACHE_SAME;
        return s_replace(c, pp, e, version, val, vlen, flags);
    }
    if (flags & CACHE_PUT_IF_PRESENT)
        return CACHE_ABSENT;

    /* A new key: one access for the sketch, unless the get that just missed it already counted it. */
    if (c->policy == CACHE_POLICY_WTINYLFU && !(read_through && c->miss_hash == h64))
        cache_sketch_record(&c->sk, h);
    uint64_t cost = s_cost(c, klen, vlen);
    if (cost > c->max_cost) {
        c->m.rejections++;
        return CACHE_REJECTED;
    }
    e = s_entry_new(h, key, klen, version, val, vlen, flags);
    *pp = e;
    c->m.items++;
    c->m.cost += cost;
    s_list_push(c, R_WINDOW, e);
    c->incoming = e;
    c->incoming_lost = false;
    s_maintain(c);
    c->incoming = NULL;
    if (c->incoming_lost)
        return CACHE_REJECTED; /* bigger than the window and lost its duel at once */
    c->m.keys_added++;
    c->m.cost_added += cost;
    if (c->m.items > c->nbuckets)
        s_grow(c);
    return CACHE_ADDED;
}

bool cache_del(cache_t *c, const void *key, size_t klen)
{
    c->miss_pending = false;
    if (klen == 0 || klen > CACHE_KEY_MAX)
        return false;
    uint64_t h64 = s_hash(c, key, klen);
    if (c->policy == CACHE_POLICY_WTINYLFU && s_sampled(c, h64)) {
        cache_shadow_del(&c->sh_lru, (uint32_t)h64);
        cache_shadow_del(&c->sh_tlfu, (uint32_t)h64);
    }
    entry_t *e = *s_find(c, key, klen, (uint32_t)h64);
    if (!e)
        return false;
    s_remove(c, e);
    return true;
}

void cache_clear(cache_t *c)
{
    c->miss_pending = false;
    for (uint64_t i = 0; i < c->nbuckets; i++) {
        entry_t *e = c->buckets[i];
        while (e) {
            entry_t *next = e->hnext;
            free(e);
            e = next;
        }
        c->buckets[i] = NULL;
    }
    for (int r = 0; r < 3; r++)
        c->lists[r] = (list_t){0};
    c->m.items = 0;
    c->m.cost = 0;
    cache_shadow_clear(&c->sh_lru);
    cache_shadow_clear(&c->sh_tlfu);
}

void cache_get_metrics(const cache_t *c, cache_metrics_t *out)
{
    *out = c->m;
    out->max_cost = c->max_cost;
    out->window_max_cost = c->policy == CACHE_POLICY_LRU ? 0 : c->window_max;
}
