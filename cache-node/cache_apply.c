/* cache_apply.c -- unconfirmed APPLYs (see cache_apply.h).
 *
 * Why: an APPLY'd record went into the cache on a gateway's word. Before this ledger a forged
 * one (version 2^62, say) stayed forever -- the cache never moves an entry to an older version,
 * so every real write after it was hidden. Now the store has the last word: each APPLY waits
 * here until the store's own data confirms or refutes it, and a refuted one is dropped from the
 * cache (cache_serve.c), so the next read asks the store.
 *
 * Three indexes over one allocation per key: an idtab by a hash of the key (what the store says
 * about a key), a binary min-heap by version (the stream reaching a sequence refutes every APPLY
 * at or below it that it did not confirm), and a list in deadline order (deadlines are the
 * arrival time plus one fixed window, so arrival order is deadline order; a replaced entry moves
 * to the tail). Every operation is O(log n) or better. One thread.
 */
#include "cache_apply.h"
#include "idtab.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define KEY_MAX 128

typedef struct entry {
    idtab_link_t link;          /* by a hash of the key */
    struct entry *prev, *next;  /* deadline order */
    uint32_t hidx;              /* position in the heap */
    uint8_t klen;
    uint64_t version, deadline_ms;
    char key[KEY_MAX];
} entry_t;

struct cache_apply {
    idtab_t keys;
    entry_t **heap; /* min-heap by version */
    uint32_t n, max;
    entry_t *head, *tail;
};

static uint64_t s_hash(const char *k, size_t n)
{
    return util_hash64(k, n, 0xa991e5);
}

static entry_t *s_find(const cache_apply_t *a, const char *k, size_t n)
{
    for (idtab_link_t *l = idtab_find(&a->keys, s_hash(k, n)); l; l = idtab_find_next(l)) {
        entry_t *e = IDTAB_ENTRY(l, entry_t, link);
        if (e->klen == n && memcmp(e->key, k, n) == 0)
            return e;
    }
    return NULL;
}

/* ==== the heap by version ====================================================================== */

static void s_heap_set(cache_apply_t *a, uint32_t i, entry_t *e)
{
    a->heap[i] = e;
    e->hidx = i;
}

static void s_sift_up(cache_apply_t *a, uint32_t i)
{
    entry_t *e = a->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (a->heap[p]->version <= e->version)
            break;
        s_heap_set(a, i, a->heap[p]);
        i = p;
    }
    s_heap_set(a, i, e);
}

static void s_sift_down(cache_apply_t *a, uint32_t i)
{
    entry_t *e = a->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= a->n)
            break;
        if (c + 1 < a->n && a->heap[c + 1]->version < a->heap[c]->version)
            c++;
        if (a->heap[c]->version >= e->version)
            break;
        s_heap_set(a, i, a->heap[c]);
        i = c;
    }
    s_heap_set(a, i, e);
}

/* ==== the deadline list ========================================================================= */

static void s_list_unlink(cache_apply_t *a, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        a->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        a->tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_list_append(cache_apply_t *a, entry_t *e)
{
    e->prev = a->tail;
    e->next = NULL;
    if (a->tail)
        a->tail->next = e;
    else
        a->head = e;
    a->tail = e;
}

/* ==== entries =================================================================================== */

static void s_forget(cache_apply_t *a, entry_t *e)
{
    idtab_remove(&a->keys, &e->link);
    s_list_unlink(a, e);
    uint32_t i = e->hidx;
    entry_t *last = a->heap[--a->n];
    if (i < a->n) {
        s_heap_set(a, i, last);
        s_sift_down(a, i);
        s_sift_up(a, last->hidx);
    }
    free(e);
}

cache_apply_t *cache_apply_new(uint32_t max)
{
    cache_apply_t *a = xcalloc(1, sizeof *a);
    idtab_init(&a->keys);
    a->max = max ? max : 1;
    a->heap = xmalloc(a->max * sizeof *a->heap);
    return a;
}

void cache_apply_clear(cache_apply_t *a)
{
    while (a->head)
        s_forget(a, a->head);
}

void cache_apply_destroy(cache_apply_t **ap)
{
    cache_apply_t *a = *ap;
    if (!a)
        return;
    cache_apply_clear(a);
    idtab_fini(&a->keys);
    free(a->heap);
    free(a);
    *ap = NULL;
}

int cache_apply_add(cache_apply_t *a, const char *key, size_t klen, uint64_t version, uint64_t deadline_ms)
{
    if (klen == 0 || klen > KEY_MAX)
        return -1;
    entry_t *e = s_find(a, key, klen);
    if (e) {
        if (version > e->version) {
            e->version = version;
            e->deadline_ms = deadline_ms;
            s_list_unlink(a, e);
            s_list_append(a, e);
            s_sift_down(a, e->hidx);
        }
        return 0;
    }
    if (a->n >= a->max)
        return -1;
    e = xcalloc(1, sizeof *e);
    e->link.id = s_hash(key, klen);
    e->klen = (uint8_t)klen;
    memcpy(e->key, key, klen);
    e->version = version;
    e->deadline_ms = deadline_ms;
    idtab_add(&a->keys, &e->link);
    s_list_append(a, e);
    s_heap_set(a, a->n++, e);
    s_sift_up(a, e->hidx);
    return 0;
}

uint64_t cache_apply_store_says(cache_apply_t *a, const char *key, size_t klen, uint64_t version, uint64_t as_of,
                                bool *refuted)
{
    *refuted = false;
    if (!a->n)
        return 0;
    entry_t *e = s_find(a, key, klen);
    if (!e)
        return 0;
    uint64_t v = e->version;
    if (version >= v) {
        s_forget(a, e); /* confirmed, or superseded by a later write */
        return v;
    }
    if (as_of >= v) {
        *refuted = true; /* the store, as of a sequence past the APPLY, has an older record */
        s_forget(a, e);
        return v;
    }
    return 0; /* the store has not reached it yet */
}

uint64_t cache_apply_take_refuted(cache_apply_t *a, uint64_t seq, uint64_t now_ms, char *key, size_t *klen)
{
    entry_t *e = NULL;
    if (a->n && a->heap[0]->version <= seq)
        e = a->heap[0];
    else if (a->head && a->head->deadline_ms <= now_ms)
        e = a->head;
    if (!e)
        return 0;
    uint64_t v = e->version;
    memcpy(key, e->key, e->klen);
    key[e->klen] = '\0';
    *klen = e->klen;
    s_forget(a, e);
    return v;
}

uint64_t cache_apply_pending(const cache_apply_t *a, const char *key, size_t klen)
{
    const entry_t *e = a->n ? s_find(a, key, klen) : NULL;
    return e ? e->version : 0;
}

uint32_t cache_apply_count(const cache_apply_t *a)
{
    return a->n;
}

uint64_t cache_apply_next_deadline(const cache_apply_t *a)
{
    return a->head ? a->head->deadline_ms : UINT64_MAX;
}
