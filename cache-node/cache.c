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
 * the window until the cache behaves like LRU, and a looping or frequency-heavy one shrinks it until
 * TinyLFU admission decides almost everything.
 *
 * Threading: none. One thread owns a cache_t. The engine does no I/O and never logs.
 */
#include "cache.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------------------------------------------------------------------------------------------
 * Tunables
 * ------------------------------------------------------------------------------------------------- */

#define CACHE_DEFAULT_SEED 0x5eed0fca4e5eedULL
#define CACHE_BYTES_PER_ENTRY_GUESS 200u   /* entries ~= max_cost / this when num_counters == 0 */
#define CACHE_INDEX_SHARE 16u              /* bucket-array bytes per entry at the worst load (1/2) */
#define CACHE_MIN_BUCKETS 64u
#define CACHE_SKETCH_MIN_WIDTH 64u         /* counters per row */
#define CACHE_SKETCH_MAX_WIDTH (1u << 22)  /* 4 rows x 2 MiB: 8 MiB of counters at most */
#define CACHE_DOOR_MAX_BITS (1ULL << 25)   /* 4 MiB of doorkeeper at most */

typedef struct tune {
    double sketch_width_per_entry; /* sketch counters per row, per expected entry */
    double sample_per_entry;       /* sketch reset after this many recorded accesses per entry */
    uint64_t sample_min;           /* ... but not before this many */
    double door_bits_per_entry;    /* doorkeeper bits per expected entry */
    int conservative;              /* conservative update: only raise the counters at the minimum */
    double window_pct;             /* initial window share of max_cost */
    double protected_pct;          /* protected share of the main region */
    double climb_sample_per_entry; /* hill-climber sample: requests per expected entry */
    uint64_t climb_sample_min;     /* ... but at least this many requests */
    double climb_step_pct;         /* step size as a share of max_cost */
    double climb_decay;            /* step multiplier when the hit rate moved little */
    double climb_restart;          /* hit-rate change that restarts a full-size step */
    int climb_first_dir;           /* +1: first move grows the window, -1: shrinks it */
    unsigned hashdos_threshold;    /* a losing candidate this frequent may still be admitted ... */
    unsigned hashdos_mask;         /* ... with probability 1 / (mask + 1) */
    int coalesce_read_through;     /* a put right after a get-miss of the same key is one access */
    int tie_mode;                  /* 1: a tie goes to the candidate when the victim was never hit in main */
} tune_t;

static tune_t s_tune = {
    .sketch_width_per_entry = 2.0,
    .sample_per_entry = 10.0,
    .door_bits_per_entry = 16.0,
    .conservative = 0,
    .window_pct = 0.01,
    .protected_pct = 0.80,
    .climb_sample_per_entry = 10.0,
    .climb_sample_min = 0,
    .climb_step_pct = 0.0625,
    .climb_decay = 0.98,
    .climb_restart = 0.05,
    .climb_first_dir = -1,
    .hashdos_threshold = 6,
    .hashdos_mask = 127,
    .coalesce_read_through = 1,
};

#ifdef CACHE_TUNING
#include <stdio.h>
static void s_tune_env(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *v;
#define TD(name)                                                                                                       \
    if ((v = getenv("CT_" #name)))                                                                                     \
        s_tune.name = atof(v);
#define TI(name)                                                                                                       \
    if ((v = getenv("CT_" #name)))                                                                                     \
        s_tune.name = atoi(v);
    TD(sketch_width_per_entry) TD(sample_per_entry) TI(sample_min) TD(door_bits_per_entry) TI(conservative) TD(window_pct)
    TD(protected_pct) TD(climb_sample_per_entry) TI(climb_sample_min) TD(climb_step_pct) TD(climb_decay)
    TD(climb_restart) TI(climb_first_dir) TI(hashdos_threshold) TI(hashdos_mask) TI(coalesce_read_through) TI(tie_mode)
}
#endif

/* ---------------------------------------------------------------------------------------------------
 * Entries
 * ------------------------------------------------------------------------------------------------- */

enum { R_WINDOW = 0, R_PROBATION = 1, R_PROTECTED = 2, R_NONE = 3 };

/* bits: value length (17 bits: 0..65536), key length (8 bits), region (2 bits), negative (1 bit). */
#define E_VLEN_MASK 0x1ffffu
#define E_KLEN_SHIFT 17
#define E_REGION_SHIFT 25
#define E_NEGATIVE (1u << 27)
#define E_HIT (1u << 28)

typedef struct entry entry_t;
struct entry {
    entry_t *hnext;       /* hash chain */
    entry_t *prev, *next; /* region list: prev toward the LRU end (head) */
    uint64_t version;
    uint32_t hash;        /* low 32 bits of the key hash: bucket index, quick compare, sketch key */
    uint32_t bits;
    unsigned char data[]; /* key, then value */
};
_Static_assert(sizeof(struct entry) == 40, "entry header must stay 40 bytes");

static inline size_t s_klen(const entry_t *e) { return (e->bits >> E_KLEN_SHIFT) & 0xffu; }
static inline size_t s_vlen(const entry_t *e) { return e->bits & E_VLEN_MASK; }
static inline int s_region(const entry_t *e) { return (int)((e->bits >> E_REGION_SHIFT) & 3u); }
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
 * Lists (head = LRU end, tail = MRU end)
 * ------------------------------------------------------------------------------------------------- */

typedef struct list {
    entry_t *head, *tail;
    uint64_t cost;
} list_t;

/* ---------------------------------------------------------------------------------------------------
 * Frequency sketch: 4 rows of 4-bit counters + doorkeeper
 * ------------------------------------------------------------------------------------------------- */

typedef struct sketch {
    uint64_t *rows;      /* 4 rows of row_words words, 16 counters per word */
    uint64_t row_words;
    uint64_t width_mask; /* counters per row - 1 */
    uint64_t *door;      /* doorkeeper bit set */
    uint64_t door_mask;  /* bits - 1 */
    uint64_t additions;  /* accesses recorded since the last reset */
    uint64_t sample;     /* reset period */
} sketch_t;

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

    sketch_t sk;

    /* hill climber */
    uint64_t climb_hits, climb_misses, climb_sample;
    double climb_prev_rate, climb_step;

    /* read-through coalescing: the hash of the key the last cache_get missed */
    uint64_t miss_hash;
    bool miss_pending;

    /* the entry a cache_put is inserting, so maintenance can tell "rejected at once" from an eviction */
    entry_t *incoming;
    bool incoming_lost;

    cache_metrics_t m;
};

/* --- sketch ---------------------------------------------------------------------------------------- */

static uint64_t s_pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static void s_sketch_init(sketch_t *sk, uint64_t entries)
{
    double w = (double)entries * s_tune.sketch_width_per_entry;
    uint64_t width = s_pow2_at_least(w < CACHE_SKETCH_MIN_WIDTH ? CACHE_SKETCH_MIN_WIDTH : (uint64_t)w);
    if (width > CACHE_SKETCH_MAX_WIDTH)
        width = CACHE_SKETCH_MAX_WIDTH;
    sk->row_words = width / 16;
    sk->width_mask = width - 1;
    sk->rows = xcalloc(4 * sk->row_words, sizeof(uint64_t));

    double db = (double)entries * s_tune.door_bits_per_entry;
    uint64_t bits = s_pow2_at_least(db < 512 ? 512 : (uint64_t)db);
    if (bits > CACHE_DOOR_MAX_BITS)
        bits = CACHE_DOOR_MAX_BITS;
    sk->door_mask = bits - 1;
    sk->door = xcalloc(bits / 64, sizeof(uint64_t));

    double s = (double)entries * s_tune.sample_per_entry;
    sk->sample = s < (double)s_tune.sample_min ? s_tune.sample_min : (uint64_t)s;
    if (sk->sample < 16)
        sk->sample = 16;
    sk->additions = 0;
}

static void s_sketch_fini(sketch_t *sk)
{
    free(sk->rows);
    free(sk->door);
    memset(sk, 0, sizeof(*sk));
}

/* The sketch key of an entry: a remix of its stored 32-bit hash, so victims (which only keep those 32
 * bits) and candidates are counted alike. */
static inline uint64_t s_spread(const cache_t *c, uint32_t h)
{
    return util_mix64(((uint64_t)h << 32 | h) ^ c->seed);
}

static inline void s_sketch_index(const sketch_t *sk, uint64_t spread, uint64_t idx[4])
{
    uint64_t a = spread & 0xffffffffu, b = (spread >> 32) | 1u;
    for (int i = 0; i < 4; i++)
        idx[i] = ((a + (uint64_t)i * b) & sk->width_mask) + (uint64_t)i * sk->row_words * 16;
}

static inline unsigned s_counter(const sketch_t *sk, uint64_t i)
{
    return (unsigned)(sk->rows[i >> 4] >> ((i & 15) << 2)) & 15u;
}

static inline bool s_door_has(const sketch_t *sk, uint64_t spread)
{
    uint64_t d = util_mix64(spread + 0x9e3779b97f4a7c15ULL);
    uint64_t b1 = d & sk->door_mask, b2 = (d >> 32) & sk->door_mask;
    return (sk->door[b1 >> 6] >> (b1 & 63) & 1u) && (sk->door[b2 >> 6] >> (b2 & 63) & 1u);
}

/* Sets the key's doorkeeper bits; returns whether they were all set already. */
static inline bool s_door_add(sketch_t *sk, uint64_t spread)
{
    uint64_t d = util_mix64(spread + 0x9e3779b97f4a7c15ULL);
    uint64_t b1 = d & sk->door_mask, b2 = (d >> 32) & sk->door_mask;
    uint64_t m1 = 1ULL << (b1 & 63), m2 = 1ULL << (b2 & 63);
    bool had = (sk->door[b1 >> 6] & m1) && (sk->door[b2 >> 6] & m2);
    sk->door[b1 >> 6] |= m1;
    sk->door[b2 >> 6] |= m2;
    return had;
}

static void s_sketch_reset(sketch_t *sk)
{
    for (uint64_t i = 0; i < 4 * sk->row_words; i++)
        sk->rows[i] = (sk->rows[i] >> 1) & 0x7777777777777777ULL;
    memset(sk->door, 0, (sk->door_mask + 1) / 8);
    sk->additions /= 2;
}

static unsigned s_estimate(const cache_t *c, uint32_t h)
{
    const sketch_t *sk = &c->sk;
    uint64_t spread = s_spread(c, h), idx[4];
    s_sketch_index(sk, spread, idx);
    unsigned min = 15;
    for (int i = 0; i < 4; i++) {
        unsigned v = s_counter(sk, idx[i]);
        if (v < min)
            min = v;
    }
    return min + (s_door_has(sk, spread) ? 1u : 0u);
}

/* Record one access of the key: the first sighting in a sample period only sets the doorkeeper, later
 * ones raise the counters (all four, or with conservative update only those at the minimum). */
static void s_record(cache_t *c, uint32_t h)
{
    sketch_t *sk = &c->sk;
    uint64_t spread = s_spread(c, h);
    if (s_door_add(sk, spread)) {
        uint64_t idx[4];
        s_sketch_index(sk, spread, idx);
        unsigned v[4], min = 15;
        for (int i = 0; i < 4; i++) {
            v[i] = s_counter(sk, idx[i]);
            if (v[i] < min)
                min = v[i];
        }
        for (int i = 0; i < 4; i++) {
            if (v[i] < 15 && (!s_tune.conservative || v[i] == min))
                sk->rows[idx[i] >> 4] += 1ULL << ((idx[i] & 15) << 2);
        }
    }
    if (++sk->additions >= sk->sample)
        s_sketch_reset(sk);
}

/* --- helpers ---------------------------------------------------------------------------------------- */

static inline uint64_t s_rand(cache_t *c)
{
    uint64_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static inline uint64_t s_cost(const cache_t *c, size_t klen, size_t vlen)
{
    return c->unit_cost ? 1u : cache_entry_cost(klen, vlen);
}

static inline uint64_t s_entry_cost(const cache_t *c, const entry_t *e)
{
    return s_cost(c, s_klen(e), s_vlen(e));
}

static inline uint64_t s_hash(const cache_t *c, const void *key, size_t klen)
{
    return util_hash64(key, klen, c->seed);
}

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

static void s_list_touch(cache_t *c, entry_t *e)
{
    int r = s_region(e);
    if (c->lists[r].tail == e)
        return;
    s_list_unlink(c, e);
    s_list_push(c, r, e);
}

/* --- index ------------------------------------------------------------------------------------------ */

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

/* Unlink e from its chain and region and free it. Metrics other than items/cost are the caller's. */
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

/* Remove e for lack of room. The entry being inserted by the current cache_put is not counted as an
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

/* TinyLFU admission: does the candidate deserve the victim's place? Ties go to the resident victim. A
 * candidate that loses but is clearly not cold gets a small random chance, so an attacker who makes
 * a victim look hot (hash flooding) cannot pin the main region forever. */
static bool s_admit(cache_t *c, const entry_t *cand, const entry_t *victim)
{
    unsigned cf = s_estimate(c, cand->hash), vf = s_estimate(c, victim->hash);
    if (cf > vf)
        return true;
    if (s_tune.tie_mode == 1 && cf == vf && !(victim->bits & E_HIT))
        return true;
    if (s_tune.tie_mode == 2 && cf + 1 >= vf && !(victim->bits & E_HIT))
        return true;
    if (cf < s_tune.hashdos_threshold)
        return false;
    return (s_rand(c) & s_tune.hashdos_mask) == 0;
}

/* Restore the size invariants after an insert, an update or a window resize:
 * 1. window overflow moves, LRU first, into probation; while the cache is over max_cost each such
 *    candidate duels the main region's LRU victim and the loser is evicted;
 * 2. anything still over max_cost (an update that grew, a shrinking main) is evicted in order
 *    probation, protected, window. */
static void s_maintain(cache_t *c)
{
    if (c->policy == CACHE_POLICY_LRU) {
        while (c->m.cost > c->max_cost && c->lists[R_WINDOW].head)
            s_evict(c, c->lists[R_WINDOW].head);
        return;
    }
    list_t *win = &c->lists[R_WINDOW], *prob = &c->lists[R_PROBATION], *prot = &c->lists[R_PROTECTED];
    while (win->cost > c->window_max && win->head) {
        entry_t *cand = win->head;
        s_list_unlink(c, cand);
        bool lost = false;
        while (c->m.cost > c->max_cost) {
            entry_t *victim = prob->head ? prob->head : prot->head;
            if (!victim) {
                lost = true;
                break;
            }
            if (!s_admit(c, cand, victim)) {
                c->m.rejections++;
                lost = true;
                break;
            }
            s_evict(c, victim);
        }
        if (lost) {
            s_evict(c, cand);
        } else {
            cand->bits &= ~E_HIT;
            s_list_push(c, R_PROBATION, cand);
        }
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
    while (prot->cost > c->protected_max && prot->head) {
        entry_t *e = prot->head;
        s_list_unlink(c, e);
        s_list_push(c, R_PROBATION, e);
    }
}

static void s_set_window(cache_t *c, uint64_t window_max)
{
    c->window_max = window_max;
    c->protected_max = (uint64_t)((double)(c->max_cost - window_max) * s_tune.protected_pct);
}

/* Hill climbing on the hit rate: at the end of each sample period move the window by the current step;
 * keep the direction while the hit rate does not fall, reverse it when it does. Big hit-rate swings
 * restart a full-size step, otherwise the step decays so the split settles. */
static void s_climb(cache_t *c)
{
    uint64_t req = c->climb_hits + c->climb_misses;
    if (req < c->climb_sample)
        return;
    double rate = (double)c->climb_hits / (double)req;
    double change = rate - c->climb_prev_rate;
    double amount = change >= 0 ? c->climb_step : -c->climb_step;
    double full = s_tune.climb_step_pct * (double)c->max_cost;
    double change_abs = change < 0 ? -change : change;
    c->climb_step = change_abs >= s_tune.climb_restart ? (amount >= 0 ? full : -full) : s_tune.climb_decay * amount;
    c->climb_prev_rate = rate;
    c->climb_hits = c->climb_misses = 0;

    double w = (double)c->window_max + amount;
    double lo = c->unit_cost ? 1.0 : 0.0, hi = (double)c->max_cost;
    if (w < lo)
        w = lo;
    if (w > hi)
        w = hi;
    uint64_t nw = (uint64_t)(w + 0.5);
#ifdef CACHE_TUNING
    if (getenv("CT_trace"))
        fprintf(stderr, "climb rate %.4f change %+.4f amount %+.1f window %llu -> %llu\n", rate, change, amount,
                (unsigned long long)c->window_max, (unsigned long long)nw);
#endif
    if (nw == c->window_max)
        return;
    s_set_window(c, nw);
    s_demote_protected(c);
    s_maintain(c);
}

/* ---------------------------------------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------------------------------------- */

cache_t *cache_new(const cache_config_t *cfg)
{
    if (!cfg || cfg->max_cost == 0 || (cfg->policy != CACHE_POLICY_WTINYLFU && cfg->policy != CACHE_POLICY_LRU))
        return NULL;
#ifdef CACHE_TUNING
    s_tune_env();
#endif
    cache_t *c = xcalloc(1, sizeof(*c));
    c->max_cost = cfg->max_cost;
    c->policy = cfg->policy;
    c->unit_cost = cfg->unit_cost;
    c->seed = cfg->seed ? cfg->seed : CACHE_DEFAULT_SEED;
    c->rng = util_mix64(c->seed ^ 0xa0761d6478bd642fULL) | 1u;
    c->nbuckets = CACHE_MIN_BUCKETS;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->m.max_cost = c->max_cost;

    if (c->policy == CACHE_POLICY_WTINYLFU) {
        uint64_t entries = cfg->num_counters;
        if (!entries)
            entries = c->unit_cost ? c->max_cost : c->max_cost / CACHE_BYTES_PER_ENTRY_GUESS;
        if (entries < 16)
            entries = 16;
        s_sketch_init(&c->sk, entries);
        uint64_t w = (uint64_t)((double)c->max_cost * s_tune.window_pct);
        if (w < 1)
            w = 1;
        s_set_window(c, w);
        double cs = (double)entries * s_tune.climb_sample_per_entry;
        c->climb_sample = cs < (double)s_tune.climb_sample_min ? s_tune.climb_sample_min : (uint64_t)cs;
        if (c->climb_sample < 16)
            c->climb_sample = 16;
        c->climb_step = s_tune.climb_first_dir * s_tune.climb_step_pct * (double)c->max_cost;
    } else {
        c->window_max = c->max_cost;
    }
    return c;
}

void cache_destroy(cache_t **cp)
{
    if (!cp || !*cp)
        return;
    cache_t *c = *cp;
    cache_clear(c);
    free(c->buckets);
    s_sketch_fini(&c->sk);
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
    entry_t *e = *s_find(c, key, klen, h);
    if (c->policy == CACHE_POLICY_LRU) {
        if (!e) {
            c->m.misses++;
            return false;
        }
        c->m.hits++;
        s_list_touch(c, e);
        s_fill_view(e, out);
        return true;
    }

    s_record(c, h);
    if (e) {
        c->m.hits++;
        c->climb_hits++;
        if (s_region(e) != R_WINDOW)
            e->bits |= E_HIT;
        if (s_region(e) == R_PROBATION) {
            s_list_unlink(c, e);
            s_list_push(c, R_PROTECTED, e);
            s_demote_protected(c);
        } else {
            s_list_touch(c, e);
        }
    } else {
        c->m.misses++;
        c->climb_misses++;
        c->miss_hash = h64;
        c->miss_pending = true;
    }
    s_climb(c);
    if (!e)
        return false;
    s_fill_view(e, out);
    return true;
}

bool cache_peek(const cache_t *c, const void *key, size_t klen, cache_view_t *out)
{
    if (klen == 0 || klen > CACHE_KEY_MAX)
        return false;
    uint32_t h = (uint32_t)s_hash(c, key, klen);
    entry_t *e = *s_find(c, key, klen, h);
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

/* Replace resident entry e (found at link pp) by a newer version, in place when the allocation size
 * does not change, else by a new block that takes over e's links and list position. */
static int s_replace(cache_t *c, entry_t **pp, entry_t *e, uint64_t version, const void *val, size_t vlen,
                     unsigned flags)
{
    size_t klen = s_klen(e);
    uint64_t old_cost = s_entry_cost(c, e), new_cost = s_cost(c, klen, vlen);
    if (new_cost > c->max_cost) {
        /* The resident version is outdated and the new one cannot fit: drop the old one. */
        c->m.rejections++;
        s_evict(c, e);
        return CACHE_REJECTED;
    }
    int region = s_region(e);
    if (s_chunk(sizeof(entry_t) + klen + vlen) != s_chunk(sizeof(entry_t) + klen + s_vlen(e))) {
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
    c->lists[region].cost += new_cost - old_cost;
    c->m.cost += new_cost - old_cost;
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

    /* A new key. The get that just missed it already counted this access. */
    if (c->policy == CACHE_POLICY_WTINYLFU && !(read_through && s_tune.coalesce_read_through && c->miss_hash == h64))
        s_record(c, h);
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
        return CACHE_REJECTED;
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
    uint32_t h = (uint32_t)s_hash(c, key, klen);
    entry_t *e = *s_find(c, key, klen, h);
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
}

void cache_get_metrics(const cache_t *c, cache_metrics_t *out)
{
    *out = c->m;
    out->max_cost = c->max_cost;
    out->window_max_cost = c->policy == CACHE_POLICY_LRU ? 0 : c->window_max;
}
