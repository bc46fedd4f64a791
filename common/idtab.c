/* idtab.c -- the intrusive id-keyed hash table (see idtab.h).
 *
 * Chained buckets, a power-of-two bucket array that doubles past half full, new entries at the
 * head of their chain. Growing rehashes every entry once (each chain is walked and its entries
 * pushed onto their new chains); the entries themselves never move, so links and the pointers
 * callers hold stay valid. One owner thread.
 */
#include "idtab.h"
#include "util.h"

#include <stdlib.h>

static size_t s_bucket(const idtab_t *t, uint64_t id)
{
    return util_mix64(id) & (t->size - 1);
}

static void s_grow(idtab_t *t)
{
    size_t nsize = t->size ? t->size * 2 : IDTAB_MIN_SIZE;
    idtab_link_t **ns = xcalloc(nsize, sizeof *ns);
    for (size_t i = 0; i < t->size; i++)
        for (idtab_link_t *l = t->slots[i], *next; l; l = next) {
            next = l->next;
            size_t b = util_mix64(l->id) & (nsize - 1);
            l->next = ns[b];
            ns[b] = l;
        }
    free(t->slots);
    t->slots = ns;
    t->size = nsize;
}

void idtab_init(idtab_t *t)
{
    t->slots = NULL;
    t->size = t->count = 0;
}

void idtab_fini(idtab_t *t)
{
    free(t->slots);
    idtab_init(t);
}

void idtab_add(idtab_t *t, idtab_link_t *l)
{
    if (t->count + 1 > t->size / 2)
        s_grow(t);
    size_t b = s_bucket(t, l->id);
    l->next = t->slots[b];
    t->slots[b] = l;
    t->count++;
}

idtab_link_t *idtab_find(const idtab_t *t, uint64_t id)
{
    if (!t->count)
        return NULL;
    for (idtab_link_t *l = t->slots[s_bucket(t, id)]; l; l = l->next)
        if (l->id == id)
            return l;
    return NULL;
}

idtab_link_t *idtab_find_next(const idtab_link_t *l)
{
    for (idtab_link_t *x = l->next; x; x = x->next)
        if (x->id == l->id)
            return x;
    return NULL;
}

idtab_link_t *idtab_take(idtab_t *t, uint64_t id)
{
    if (!t->count)
        return NULL;
    for (idtab_link_t **pp = &t->slots[s_bucket(t, id)]; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            idtab_link_t *l = *pp;
            *pp = l->next;
            t->count--;
            return l;
        }
    return NULL;
}

bool idtab_remove(idtab_t *t, idtab_link_t *l)
{
    if (!t->count)
        return false;
    for (idtab_link_t **pp = &t->slots[s_bucket(t, l->id)]; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            t->count--;
            return true;
        }
    return false;
}

size_t idtab_count(const idtab_t *t)
{
    return t->count;
}

void idtab_iter_init(idtab_iter_t *it, const idtab_t *t)
{
    it->t = t;
    it->slot = 0;
    it->next = NULL;
}

idtab_link_t *idtab_iter_next(idtab_iter_t *it)
{
    while (!it->next) {
        if (it->slot >= it->t->size)
            return NULL;
        it->next = it->t->slots[it->slot++];
    }
    idtab_link_t *l = it->next;
    it->next = l->next; /* read now: the caller may unlink l before the next call */
    return l;
}
