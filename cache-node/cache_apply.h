/* cache_apply.h -- the APPLYs a cache-node holds that the store has not confirmed yet
 * (cache-node/cache_apply.c explains the rule).
 *
 * A gateway that had a write acknowledged through one cache-node sends the resulting records to
 * the other owner nodes (APPLY) so a read there sees the write before the change stream brings
 * it. An APPLY is a claim, not a fact: anything that can reach the cache-node's socket can send
 * one. So each one is remembered here, by key, until the store settles it:
 *
 *   confirmed   the store shows the key at the APPLY's version or later (stream, fill, write
 *               reply): forgotten, the cache entry is real;
 *   refuted     the store has moved past the APPLY's version without that record (a fill or a
 *               write reply as of a sequence >= it shows an older version; the stream passed
 *               it), or the confirmation did not come within the window: the caller drops the
 *               cache entry so the store's data wins.
 *
 * Bounded (max entries; one per key: a later APPLY of a key replaces the earlier one). Pure (no
 * I/O, no clock of its own: times are passed in). One thread: the cache-node's.
 */
#ifndef PRESENCE_CACHE_APPLY_H
#define PRESENCE_CACHE_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_apply cache_apply_t;

/* An empty ledger of at most max keys. Caller owns it: free with cache_apply_destroy. */
cache_apply_t *cache_apply_new(uint32_t max);
/* Free it; sets *ap to NULL. NULL-safe. */
void cache_apply_destroy(cache_apply_t **ap);

/* Remember an APPLY of key[0..klen) (1..128 bytes) at version, to be confirmed by deadline_ms
 * (never earlier than the deadline of the call before: a fixed window after the current time).
 * A key already held keeps the higher version (and that one's deadline). Returns 0, or -1 when
 * the ledger is full and the key is not in it (the caller must not cache the record). */
int cache_apply_add(cache_apply_t *a, const char *key, size_t klen, uint64_t version, uint64_t deadline_ms);

/* What the store says about key: its record at version `version` (0: absent) as of sequence
 * `as_of` (the store's sequence when it said so; >= version). Returns
 *   0          nothing held for key, or the APPLY stays unsettled (as_of below its version);
 *   the APPLY's version, settled and forgotten -- confirmed when version >= it (*refuted
 *              false), refuted otherwise (*refuted true: drop the cache entry at that version). */
uint64_t cache_apply_store_says(cache_apply_t *a, const char *key, size_t klen, uint64_t version, uint64_t as_of,
                                bool *refuted);

/* Take one refuted APPLY: the lowest version <= seq (the stream reached seq without confirming
 * it), else the oldest whose deadline is <= now_ms. Copies its key into key (129 bytes) and
 * *klen; returns its version (forgotten), or 0 when there is none. Call until 0. */
uint64_t cache_apply_take_refuted(cache_apply_t *a, uint64_t seq, uint64_t now_ms, char *key, size_t *klen);

/* The version held for key, or 0. */
uint64_t cache_apply_pending(const cache_apply_t *a, const char *key, size_t klen);
/* Keys held. */
uint32_t cache_apply_count(const cache_apply_t *a);
/* The earliest deadline held (UINT64_MAX when empty). */
uint64_t cache_apply_next_deadline(const cache_apply_t *a);
/* Forget everything (the stream was reset: another database). */
void cache_apply_clear(cache_apply_t *a);

#endif
