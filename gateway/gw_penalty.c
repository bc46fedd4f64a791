/* gw_penalty.c -- the penalty box (see gw_penalty.h).
 *
 * Entries are (hash of the key, end time); 0 marks a free slot. A colliding 64-bit hash would
 * penalise a second key with the first: negligible, and bounded by the penalty's length.
 */
#include "gw_penalty.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>

#define WAYS 4

typedef struct pslot {
    uint64_t hash, until_ms;
} pslot_t;

struct gw_penalty {
    pthread_mutex_t mu;
    size_t nsets;
    pslot_t *slots; /* nsets * WAYS */
};

gw_penalty_t *gw_penalty_new(size_t slots)
{
    gw_penalty_t *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->nsets = slots / WAYS + 1;
    p->slots = xcalloc(p->nsets * WAYS, sizeof *p->slots);
    return p;
}

void gw_penalty_free(gw_penalty_t *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->slots);
    free(p);
}

static uint64_t s_hash(const void *key, size_t len)
{
    uint64_t h = util_hash64(key, len, 0x9e7a17);
    return h ? h : 1;
}

void gw_penalty_add(gw_penalty_t *p, const void *key, size_t len, uint64_t until_ms)
{
    uint64_t h = s_hash(key, len);
    pthread_mutex_lock(&p->mu);
    pslot_t *set = &p->slots[(h % p->nsets) * WAYS], *victim = &set[0];
    for (int i = 0; i < WAYS; i++) {
        if (set[i].hash == h) {
            victim = &set[i];
            break;
        }
        if (set[i].until_ms < victim->until_ms)
            victim = &set[i]; /* free slots (0) and the soonest to end go first */
    }
    if (victim->hash != h || victim->until_ms < until_ms)
        *victim = (pslot_t){h, until_ms};
    pthread_mutex_unlock(&p->mu);
}

bool gw_penalty_check(gw_penalty_t *p, const void *key, size_t len, uint64_t now_ms)
{
    uint64_t h = s_hash(key, len);
    bool in = false;
    pthread_mutex_lock(&p->mu);
    pslot_t *set = &p->slots[(h % p->nsets) * WAYS];
    for (int i = 0; i < WAYS; i++)
        if (set[i].hash == h && set[i].until_ms > now_ms)
            in = true;
    pthread_mutex_unlock(&p->mu);
    return in;
}
