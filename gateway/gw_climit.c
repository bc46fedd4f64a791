/* gw_climit.c -- counts per key shared by threads (see gw_climit.h).
 *
 * 64 stripes chosen by the key's hash, each a mutex over its own chained hash table that doubles
 * when more than half full. A key's entry (its count and its bytes, one allocation) exists while
 * its count is > 0: a thousand clients that each held a stream once cost nothing after they
 * leave. The slot handed out is the entry itself, so giving back needs no lookup of the key.
 */
#include "gw_climit.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES 64
#define KEY_MAX 256

struct gw_climit_slot {
    struct gw_climit_slot *next;
    uint64_t hash, count;
    uint16_t klen;
    char key[];
};

typedef struct stripe {
    pthread_mutex_t mu;
    gw_climit_slot_t **buckets;
    size_t nbuckets, n;
} stripe_t;

struct gw_climit {
    stripe_t s[STRIPES];
};

static uint64_t s_hash(const char *k, size_t n)
{
    return util_hash64(k, n, 0xc11317);
}

static stripe_t *s_stripe(gw_climit_t *t, uint64_t h)
{
    return &t->s[h % STRIPES];
}

/* Bucket index inside a stripe (the low bits picked the stripe). */
static size_t s_bucket(const stripe_t *st, uint64_t h)
{
    return (size_t)((h / STRIPES) & (st->nbuckets - 1));
}

gw_climit_t *gw_climit_new(void)
{
    gw_climit_t *t = xcalloc(1, sizeof *t);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->s[i].mu, NULL);
    return t;
}

void gw_climit_free(gw_climit_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < STRIPES; i++) {
        stripe_t *st = &t->s[i];
        for (size_t b = 0; b < st->nbuckets; b++)
            for (gw_climit_slot_t *e = st->buckets[b], *n; e; e = n) {
                n = e->next;
                free(e);
            }
        free(st->buckets);
        pthread_mutex_destroy(&st->mu);
    }
    free(t);
}

static void s_grow(stripe_t *st)
{
    size_t nb = st->nbuckets ? st->nbuckets * 2 : 16;
    gw_climit_slot_t **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < st->nbuckets; i++)
        for (gw_climit_slot_t *e = st->buckets[i], *n; e; e = n) {
            n = e->next;
            size_t k = (size_t)((e->hash / STRIPES) & (nb - 1));
            e->next = b[k];
            b[k] = e;
        }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = nb;
}

static gw_climit_slot_t *s_find(const stripe_t *st, uint64_t h, const char *key, size_t len)
{
    if (!st->nbuckets)
        return NULL;
    for (gw_climit_slot_t *e = st->buckets[s_bucket(st, h)]; e; e = e->next)
        if (e->hash == h && e->klen == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

gw_climit_slot_t *gw_climit_take(gw_climit_t *t, const char *key, size_t len, uint64_t max)
{
    if (len > KEY_MAX)
        len = KEY_MAX;
    uint64_t h = s_hash(key, len);
    stripe_t *st = s_stripe(t, h);
    pthread_mutex_lock(&st->mu);
    gw_climit_slot_t *e = s_find(st, h, key, len);
    if (e && max && e->count >= max) {
        e = NULL;
    } else if (e) {
        e->count++;
    } else {
        if (st->n + 1 > st->nbuckets / 2)
            s_grow(st);
        e = xmalloc(sizeof *e + len);
        e->hash = h;
        e->count = 1;
        e->klen = (uint16_t)len;
        memcpy(e->key, key, len);
        size_t b = s_bucket(st, h);
        e->next = st->buckets[b];
        st->buckets[b] = e;
        st->n++;
    }
    pthread_mutex_unlock(&st->mu);
    return e;
}

void gw_climit_give(gw_climit_t *t, gw_climit_slot_t *slot)
{
    if (!slot)
        return;
    stripe_t *st = s_stripe(t, slot->hash);
    pthread_mutex_lock(&st->mu);
    if (--slot->count == 0) {
        for (gw_climit_slot_t **pp = &st->buckets[s_bucket(st, slot->hash)]; *pp; pp = &(*pp)->next)
            if (*pp == slot) {
                *pp = slot->next;
                break;
            }
        st->n--;
        free(slot);
    }
    pthread_mutex_unlock(&st->mu);
}

uint64_t gw_climit_count(gw_climit_t *t, const char *key, size_t len)
{
    if (len > KEY_MAX)
        len = KEY_MAX;
    uint64_t h = s_hash(key, len);
    stripe_t *st = s_stripe(t, h);
    pthread_mutex_lock(&st->mu);
    gw_climit_slot_t *e = s_find(st, h, key, len);
    uint64_t n = e ? e->count : 0;
    pthread_mutex_unlock(&st->mu);
    return n;
}

uint64_t gw_climit_keys(gw_climit_t *t)
{
    uint64_t n = 0;
    for (int i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&t->s[i].mu);
        n += t->s[i].n;
        pthread_mutex_unlock(&t->s[i].mu);
    }
    return n;
}
