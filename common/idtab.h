/* idtab.h -- an intrusive hash table keyed by 64-bit ids.
 *
 * Every process keeps tables of things in flight keyed by a number: calls by request id (the
 * gateway, the relay, the cache-node), connections by socket pointer, watched users and pending
 * fetches by a hash of the user id. This is that table, written once.
 *
 * Intrusive: an entry embeds an idtab_link_t and the table only links and unlinks it -- it never
 * allocates, copies or frees an entry (IDTAB_ENTRY gets the entry back from its link). Several
 * entries may share an id (two names with the same hash): idtab_find returns the first,
 * idtab_find_next the others, and the caller compares whatever the id stands for.
 *
 * Buckets are chained; the bucket array starts at IDTAB_MIN_SIZE and doubles when the table is
 * more than half full (it never shrinks: a burst's size is the next burst's). Ids are mixed
 * (util_mix64) before they pick a bucket, so sequential ids and aligned pointers spread well.
 *
 * Not thread-safe: one owner thread per table.
 */
#ifndef PRESENCE_IDTAB_H
#define PRESENCE_IDTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDTAB_MIN_SIZE 1024

typedef struct idtab_link {
    struct idtab_link *next; /* the table's: the bucket chain */
    uint64_t id;             /* set by the caller before idtab_add, unchanged while linked */
} idtab_link_t;

typedef struct idtab {
    idtab_link_t **slots;
    size_t size, count;
} idtab_t;

/* The entry of type `type` whose member `member` is the link `l`. */
#define IDTAB_ENTRY(l, type, member) ((type *)(void *)((char *)(l) - offsetof(type, member)))

/* An empty table (allocates nothing until the first idtab_add). */
void idtab_init(idtab_t *t);
/* Free the buckets. Entries still linked are not touched (they stay the caller's); the table is
 * empty and usable again after. */
void idtab_fini(idtab_t *t);

/* Link `l` (its id set). The entry must not be linked already; an id already present is allowed
 * (the new entry is found first). May grow the table: never call during an iteration. */
void idtab_add(idtab_t *t, idtab_link_t *l);
/* The most recently added entry with this id, or NULL. */
idtab_link_t *idtab_find(const idtab_t *t, uint64_t id);
/* The next entry after `l` (found by idtab_find or idtab_find_next) with the same id, or NULL. */
idtab_link_t *idtab_find_next(const idtab_link_t *l);
/* Unlink and return the entry idtab_find would return, or NULL. */
idtab_link_t *idtab_take(idtab_t *t, uint64_t id);
/* Unlink exactly `l`. Returns false (and changes nothing) when `l` is not in the table. */
bool idtab_remove(idtab_t *t, idtab_link_t *l);
/* Number of linked entries. */
size_t idtab_count(const idtab_t *t);

/* Visit every entry once, in no particular order. The entry returned last may be unlinked
 * (idtab_remove) -- and freed -- before the next call; nothing else may be added or removed
 * meanwhile. (Emptying a table: iterate, remove and free each entry.) */
typedef struct idtab_iter {
    const idtab_t *t;
    size_t slot;
    idtab_link_t *next;
} idtab_iter_t;

void idtab_iter_init(idtab_iter_t *it, const idtab_t *t);
/* The next entry, or NULL when every entry has been visited. */
idtab_link_t *idtab_iter_next(idtab_iter_t *it);

#endif
