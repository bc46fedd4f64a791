/* gw_ratelimit.c -- token buckets per key (see gw_lib.h).
 *
 * The bucket table is a fixed array of 4-way sets (no allocation after start, bounded memory):
 * a key's 64-bit hash picks a set; within it the key's slot, or else the slot that has been idle
 * longest (a full bucket is equivalent to a fresh one, so recycling it loses nothing). Each set
 * has its own spinlock; the gateway threads rarely contend on the same set.
 */
#include "gw_lib.h"
#include "util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#define WAYS 4

typedef struct slot {
    uint64_t key;     /* hash of the key; 0 = empty */
    double tokens;
    uint64_t last_us;
} slot_t;

typedef struct set {
    atomic_flag lock;
    slot_t s[WAYS];
} set_t;

struct gw_ratelimit {
    double rate, burst;
    size_t nsets;
    set_t *sets;
};

gw_ratelimit_t *gw_ratelimit_new(double rate, double burst, size_t slots)
{
    gw_ratelimit_t *rl = xcalloc(1, sizeof *rl);
    rl->rate = rate;
    rl->burst = burst < 1 ? 1 : burst;
    size_t n = 1;
    while (n * WAYS < slots)
        n *= 2;
    rl->nsets = n;
    rl->sets = xcalloc(n, sizeof *rl->sets);
    for (size_t i = 0; i < n; i++)
        atomic_flag_clear(&rl->sets[i].lock);
    return rl;
}

void gw_ratelimit_free(gw_ratelimit_t *rl)
{
    if (!rl)
        return;
    free(rl->sets);
    free(rl);
}

double gw_ratelimit_burst(const gw_ratelimit_t *rl)
{
    return rl->burst;
}

unsigned gw_ratelimit_take(gw_ratelimit_t *rl, const void *key, size_t klen, double cost, uint64_t now_us)
{
    if (!rl || rl->rate <= 0)
        return 0;
    uint64_t h = util_hash64(key, klen, 0x7a7e) | 1;
    set_t *set = &rl->sets[(h >> 8) & (rl->nsets - 1)];
    while (atomic_flag_test_and_set_explicit(&set->lock, memory_order_acquire))
        ;
    slot_t *s = NULL, *idle = &set->s[0];
    for (int i = 0; i < WAYS; i++) {
        if (set->s[i].key == h) {
            s = &set->s[i];
            break;
        }
        if (set->s[i].last_us < idle->last_us)
            idle = &set->s[i];
    }
    if (!s) {
        s = idle;
        s->key = h;
        s->tokens = rl->burst;
        s->last_us = now_us;
    }
    if (now_us > s->last_us) {
        s->tokens += (double)(now_us - s->last_us) / 1e6 * rl->rate;
        if (s->tokens > rl->burst)
            s->tokens = rl->burst;
        s->last_us = now_us;
    }
    unsigned wait = 0;
    if (s->tokens >= cost) {
        s->tokens -= cost;
    } else {
        double need = cost - s->tokens;
        wait = (unsigned)ceil(need / rl->rate);
        if (wait < 1)
            wait = 1;
    }
    atomic_flag_clear_explicit(&set->lock, memory_order_release);
    return wait;
}
