/* cache_shadow.c -- the two policy shadows of the cache engine's mode switch (cache.c, "second
 * decision"): keys-only replays of plain LRU and of W-TinyLFU with a fixed CACHE_WINDOW_PCT window,
 * run on the same sampled reads as the cache so cache.c can score which policy would have hit.
 * Contract: cache_int.h.
 *
 * Why keys only: a shadow needs to know what its policy would hold, not the values, so a node is the
 * key's 32-bit hash, its cost and three 32-bit links (20 bytes), in one array allocated at creation
 * (cap + 2 nodes: node 0 is "none", one more is in transit between an insert and its eviction).
 * Memory is bounded whatever the cache size, and nothing is allocated after init.
 *
 * Key decision: the W-TinyLFU shadow duels with the cache's own frequency sketch (read only), so the
 * two shadows differ only in their policy, not in what they know. Every operation is O(1), amortised
 * over the evictions a put causes (a key is evicted at most once per insert).
 *
 * Threading: none; the cache's thread owns its shadows. No I/O, never logs.
 */
#include "cache_int.h"

#include <stdlib.h>
#include <string.h>

void cache_shadow_init(shadow_t *s, bool tinylfu, uint64_t max_cost, uint64_t cap)
{
    s->tinylfu = tinylfu;
    s->max_cost = max_cost ? max_cost : 1;
    s->cap = (uint32_t)(cap ? cap : 1);
    s->nodes = xcalloc((size_t)s->cap + 2, sizeof(snode_t)); /* node 0 is "none"; one more in transit */
    uint64_t nb = cache_pow2_at_least(s->cap);
    s->buckets = xcalloc(nb, sizeof(uint32_t));
    s->bucket_mask = (uint32_t)(nb - 1);
    uint64_t w = cache_share(s->max_cost, CACHE_WINDOW_PCT, 100);
    s->window_max = w ? w : 1;
    s->protected_max = cache_share(s->max_cost - s->window_max, CACHE_PROTECTED_PCT, 100);
}

void cache_shadow_fini(shadow_t *s)
{
    free(s->nodes);
    free(s->buckets);
    memset(s, 0, sizeof(*s));
}

static inline unsigned s_snode_list(const snode_t *n)
{
    return n->cost >> SNODE_LIST_SHIFT;
}

static inline uint32_t s_snode_cost(const snode_t *n)
{
    return n->cost & SNODE_COST_MASK;
}

/* The chain link that holds the node of hash h, or the 0 that ends its chain. */
static uint32_t *s_shadow_link(shadow_t *s, uint32_t h)
{
    uint32_t *pp = &s->buckets[h & s->bucket_mask];
    while (*pp && s->nodes[*pp].hash != h)
        pp = &s->nodes[*pp].hnext;
    return pp;
}

static void s_shadow_unlink(shadow_t *s, uint32_t i)
{
    snode_t *n = &s->nodes[i];
    slist_t *l = &s->lists[s_snode_list(n)];
    if (n->prev)
        s->nodes[n->prev].next = n->next;
    else
        l->head = n->next;
    if (n->next)
        s->nodes[n->next].prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = 0;
    l->cost -= s_snode_cost(n);
}

static void s_shadow_push(shadow_t *s, unsigned list, uint32_t i)
{
    snode_t *n = &s->nodes[i];
    slist_t *l = &s->lists[list];
    n->cost = s_snode_cost(n) | (uint32_t)list << SNODE_LIST_SHIFT;
    n->next = 0;
    n->prev = l->tail;
    if (l->tail)
        s->nodes[l->tail].next = i;
    else
        l->head = i;
    l->tail = i;
    l->cost += s_snode_cost(n);
}

/* Forget node i (already unlinked from its list when unlinked is true). */
static void s_shadow_drop(shadow_t *s, uint32_t i, bool unlinked)
{
    snode_t *n = &s->nodes[i];
    uint32_t *pp = s_shadow_link(s, n->hash);
    *pp = n->hnext;
    if (!unlinked)
        s_shadow_unlink(s, i);
    s->cost -= s_snode_cost(n);
    s->count--;
    n->hnext = s->free;
    s->free = i;
}

static inline bool s_shadow_over(const shadow_t *s)
{
    return s->cost > s->max_cost || s->count > s->cap;
}

/* The shadow's own eviction, as cache.c's s_maintain does it for the real cache (without the random
 * admission of hash-flooding defence: the shadow has no adversary to fear). */
static void s_shadow_maintain(shadow_t *s, const sketch_t *sk)
{
    slist_t *win = &s->lists[R_WINDOW], *prob = &s->lists[R_PROBATION], *prot = &s->lists[R_PROTECTED];
    if (s->tinylfu) {
        while (win->cost > s->window_max && win->head) {
            uint32_t cand = win->head;
            s_shadow_unlink(s, cand);
            bool lost = false;
            while (!lost && s_shadow_over(s)) {
                uint32_t victim = prob->head ? prob->head : prot->head;
                if (victim && cache_sketch_estimate(sk, s->nodes[cand].hash) > cache_sketch_estimate(sk, s->nodes[victim].hash))
                    s_shadow_drop(s, victim, false);
                else
                    lost = true;
            }
            if (lost)
                s_shadow_drop(s, cand, true);
            else
                s_shadow_push(s, R_PROBATION, cand);
        }
    }
    while (s_shadow_over(s)) {
        uint32_t victim = prob->head ? prob->head : prot->head ? prot->head : win->head;
        if (!victim)
            break;
        s_shadow_drop(s, victim, false);
    }
}

bool cache_shadow_get(shadow_t *s, uint32_t h)
{
    uint32_t i = *s_shadow_link(s, h);
    if (!i)
        return false;
    unsigned list = s_snode_list(&s->nodes[i]);
    s_shadow_unlink(s, i);
    if (list == R_WINDOW) {
        s_shadow_push(s, R_WINDOW, i);
    } else {
        s_shadow_push(s, R_PROTECTED, i);
        while (s->lists[R_PROTECTED].cost > s->protected_max) {
            uint32_t d = s->lists[R_PROTECTED].head;
            s_shadow_unlink(s, d);
            s_shadow_push(s, R_PROBATION, d);
        }
    }
    return true;
}

void cache_shadow_put(shadow_t *s, const sketch_t *sk, uint32_t h, uint64_t cost, bool only_update)
{
    uint32_t *pp = s_shadow_link(s, h), i = *pp;
    if (cost > s->max_cost || cost > SNODE_COST_MASK) {
        if (i)
            s_shadow_drop(s, i, false);
        return;
    }
    if (i) {
        snode_t *n = &s->nodes[i];
        unsigned list = s_snode_list(n);
        uint32_t old = s_snode_cost(n);
        n->cost = (uint32_t)cost | (uint32_t)list << SNODE_LIST_SHIFT;
        s->lists[list].cost = s->lists[list].cost - old + cost;
        s->cost = s->cost - old + cost;
        s_shadow_maintain(s, sk);
        return;
    }
    if (only_update)
        return;
    if (s->free) {
        i = s->free;
        s->free = s->nodes[i].hnext;
    } else {
        i = ++s->top;
    }
    snode_t *n = &s->nodes[i];
    n->hash = h;
    n->cost = (uint32_t)cost;
    n->hnext = 0;
    *pp = i;
    s->cost += cost;
    s->count++;
    s_shadow_push(s, R_WINDOW, i);
    s_shadow_maintain(s, sk);
}

void cache_shadow_del(shadow_t *s, uint32_t h)
{
    uint32_t i = *s_shadow_link(s, h);
    if (i)
        s_shadow_drop(s, i, false);
}

void cache_shadow_clear(shadow_t *s)
{
    if (!s->nodes)
        return;
    memset(s->buckets, 0, ((size_t)s->bucket_mask + 1) * sizeof(uint32_t));
    memset(s->lists, 0, sizeof(s->lists));
    s->top = s->free = s->count = 0;
    s->cost = 0;
}
