/* gw_near.h -- the near cache: a gateway thread's bounded copy of hot presence records, kept
 * coherent by the change stream the thread already follows (no I/O, no locks: one thread owns a
 * gw_near_t; gateway/gw_nearcall.c wires it to the thread).
 *
 * Storage is the cache tier's own engine (cache-node/cache.h): W-TinyLFU admission and eviction,
 * bounded by bytes, versioned entries that never move backwards, cached "not found" as negative
 * entries. What this file adds is the rule for when an entry may be served and when an answer of
 * the cache tier may become one. Terms:
 *
 *   latest(k, s)  the state of user k after every change with sequence <= s (a record at some
 *                 version, or absent). Non-decreasing in s: this is what "never older" means.
 *   seq           the last change of the stream this engine applied (gw_near_apply);
 *   as_of A       a cache-node's answer for k is latest(k, A) (REPLY as_of: PROTOCOL.md);
 *   front         a sequence no entry is current beyond: max(seq, every A served);
 *   floor(k)      for a user k that is NOT resident, everything the thread served for it is
 *                 <= latest(k, floor(k)). It is k's ghost when k has one -- front when k was
 *                 evicted or removed, A when an answer was served without becoming an entry --
 *                 else the global floor, which takes the ghosts pushed out of the bounded ghost
 *                 table and rises to front when everything is dropped.
 *
 * Invariants (the argument is DESIGN.md, "Coherence", point 6):
 *   R  a resident entry is latest(k, s) for some s >= every sequence at which the thread served k;
 *      while the stream is live it is latest(k, max(seq, its fill's A, this thread's acknowledged
 *      writes of k)) -- the stream and those writes (gw_near_wrote, gw_near_deleted) update it;
 *   N  a user k that is not resident was never served newer than latest(k, floor(k)).
 * Hence: a hit (live, resident) never shows older than served (R); an answer with A >= floor(k)
 * never shows older than served (N, monotonicity of latest); an answer with A < floor(k) might,
 * and is refused (GW_NEAR_BEHIND: ask again -- the node catches up within its stream's lag).
 *
 * Entries are served only while the stream is live and has reached the caller's min_seq (the
 * writes this process acknowledged: read-your-writes across threads) -- as hits, and in place of
 * an older answer (gw_near_fill). Leaving the live state (a gap, a catch-up, silence) drops every
 * entry; a reset (another database) drops everything and starts the sequences over.
 *
 * Every call is O(1) amortised (gw_near_apply of a TOUCH decodes and re-encodes one entry);
 * gw_near_live(false) and gw_near_reset are O(entries).
 */
#ifndef PRESENCE_GW_NEAR_H
#define PRESENCE_GW_NEAR_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_near gw_near_t;

/* Below this many bytes a near cache is not worth having (gw_near_new refuses). */
#define GW_NEAR_MIN_BYTES (64u << 10)

/* Results of gw_near_get. */
enum gw_near_get_result {
    GW_NEAR_HIT = 0,    /* *out is the record */
    GW_NEAR_ABSENT = 1, /* the user is known not to exist (a cached "not found") */
    GW_NEAR_MISS = 2,   /* not resident: ask the cache tier */
    GW_NEAR_BYPASS = 3, /* the stream is not live, or behind min_seq: ask the cache tier */
};

/* Results of gw_near_fill. */
enum gw_near_fill_result {
    GW_NEAR_SERVE = 0,        /* serve *out */
    GW_NEAR_SERVE_ABSENT = 1, /* serve "not found" */
    GW_NEAR_BEHIND = 2,       /* the answer is older than the floor: do not serve it; ask again */
};

typedef struct gw_near_stats {
    uint64_t hits, misses, bypassed;  /* gw_near_get: HIT or ABSENT / MISS / BYPASS */
    uint64_t fills, fills_kept;       /* answers served through gw_near_fill / that became entries */
    uint64_t behind;                  /* answers refused: older than the floor */
    uint64_t updates;                 /* entries changed by the stream or by writes */
    uint64_t evictions;               /* entries evicted for space (the byte bound) */
    uint64_t drops;                   /* entries dropped because the stream stopped being live */
    uint64_t items, bytes, max_bytes; /* current state */
} gw_near_stats_t;

/* A near cache of at most max_bytes (entries' real memory: cache_entry_cost). Returns NULL when
 * max_bytes < GW_NEAR_MIN_BYTES. The stream starts not live (gw_near_live). Caller owns the
 * result; free with gw_near_destroy. */
gw_near_t *gw_near_new(uint64_t max_bytes);
/* Free; NULL-safe; sets *n NULL. */
void gw_near_destroy(gw_near_t **n);

/* ---- the change stream: call in the order the sync client applies (sync_client.h) ---------- */

/* One applied change (SET: the whole record; DEL; TOUCH: the liveness fields, rebuilt into the
 * resident record). Updates a resident entry (never to an older version); a user that is not
 * resident stays so. */
void gw_near_apply(gw_near_t *n, const proto_change_t *c);
/* The stream's state: live (complete through seq) or not. Leaving live drops every entry. */
void gw_near_live(gw_near_t *n, bool live, uint64_t seq);
/* Another database: versions start over. Drops everything; seq, front and floor go back to 0; the
 * stream is not live until gw_near_live says so. */
void gw_near_reset(gw_near_t *n);

/* ---- reads ----------------------------------------------------------------------------------- */

/* Look key up. min_seq: the stream must have reached it (the writes this process acknowledged),
 * else GW_NEAR_BYPASS. HIT fills *out (a whole record; command-input fields zeroed). Counts the
 * result; a hit is an access for the eviction policy. */
int gw_near_get(gw_near_t *n, const char *key, size_t klen, uint64_t min_seq, proto_record_t *out);

/* The cache tier answered key with r (NULL: not found) as of as_of (> 0; answers without an as_of,
 * or flagged stale, are outside the near cache: do not call). For "not found" pass the key's own
 * as_of: a multi-get's absent entry for it when the reply has one (proto_reply_key_as_of), which
 * is what makes the ghost of a read-through "not found" as high as the store's sequence it was
 * read at. min_seq: as for gw_near_get (the writes this process had acknowledged when the read
 * began). Returns GW_NEAR_BEHIND (nothing changed; counted), or what to serve: the answer, or the
 * resident entry when that is newer (*out filled for GW_NEAR_SERVE). For "not found" newer means
 * newer than as_of, which only bounds the answer from below (a reply's as_of is the oldest of its
 * keys', and a node's is what it knows, not when the user went) -- so a resident record newer
 * than as_of may be older than the absence (a delete). The resident entry stands in
 * for the answer only as a hit could (the stream has reached min_seq), or when both say "not
 * found"; otherwise neither is known to show every acknowledged write: GW_NEAR_BEHIND. An answer
 * older than floor(k) is still served when the stream shows that k did not change in (as_of, seq]
 * and floor(k) <= seq. The answer becomes an entry when the stream is live, nothing the stream
 * applied can be missing from it (as_of >= seq, or no change of k after as_of) and admission takes
 * it; else the key's ghost remembers as_of. */
int gw_near_fill(gw_near_t *n, const char *key, size_t klen, const proto_record_t *r, uint64_t as_of,
                 uint64_t min_seq, proto_record_t *out);

/* A write this process made was acknowledged with record r: a resident entry of r's user moves to
 * it when r is newer. (Users that are not resident are left alone: the caller's min_seq keeps hits
 * away until the stream has the write.) */
void gw_near_wrote(gw_near_t *n, const proto_record_t *r);
/* A delete this process made was acknowledged: key[0..klen) is absent as of as_of (the delete's
 * sequence; for a delete that found nothing, the store's sequence when it looked). A resident
 * entry of key becomes "not found" at as_of when that is newer; others are left alone, as by
 * gw_near_wrote. as_of 0 (not said): nothing changes. */
void gw_near_deleted(gw_near_t *n, const char *key, size_t klen, uint64_t as_of);

/* The stream position (last applied sequence) and whether it is live. */
uint64_t gw_near_seq(const gw_near_t *n);
bool gw_near_is_live(const gw_near_t *n);
/* The global floor (tests and metrics). */
uint64_t gw_near_floor(const gw_near_t *n);

void gw_near_get_stats(const gw_near_t *n, gw_near_stats_t *out);

#endif
