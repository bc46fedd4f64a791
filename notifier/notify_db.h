/* notify_db.h -- the notifier's durable state: one LMDB environment in DATA_DIR/notifier.
 *
 * Databases (all written in the process's one write transaction per loop turn, so a user's new
 * state, the events it made and the cursors acknowledged in that turn commit together, fsynced):
 *
 *   users    user id -> notify_views_t (notify_views_encode): the last known state per user, in
 *            the public view and the user's own
 *   log      big-endian seq -> event entry (notify_entry_encode): the event log, appended in seq
 *            order, pruned at its head
 *   targets  SHA-256 of a target's URL -> cursor (last seq it acknowledged), last acked id
 *   snap     big-endian version . user id -> staged change: what a snapshot of the store brought,
 *            replayed in version order once the snapshot is complete (notifier.c)
 *   meta     "m" -> next seq, log bytes, log entries, baseline flag, and the stream position
 *            (database epoch, sequence) the users' states are complete up to
 *
 * Errors are LMDB return codes (0 = success; mdb_strerror() says what). MDB_MAP_FULL from a put
 * means: abort, notify_db_grow(), redo the turn. Reads hand out data borrowed from the map,
 * valid until the transaction ends. Not thread-safe: one owner thread.
 */
#ifndef PRESENCE_NOTIFY_DB_H
#define PRESENCE_NOTIFY_DB_H

#include "notify.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct notify_db notify_db_t;

typedef struct notify_meta {
    uint64_t next_seq;    /* the seq the next event gets (first is 1) */
    uint64_t log_bytes;   /* sum of the sizes of the log's entries */
    uint64_t log_entries;
    bool baseline;        /* the first snapshot was absorbed (events are computed from then on) */
    uint64_t pos_epoch;   /* the store's database epoch of pos_seq (0 = no position: snapshot) */
    uint64_t pos_seq;     /* every change up to this sequence is in the users' states */
} notify_meta_t;

/* Open (creating dir and the environment). map_mb is the initial map, grown by notify_db_grow up
 * to map_max_mb. Returns 0 with *out set, or -1 with err (CFG_ERR_LEN). */
int notify_db_open(notify_db_t **out, const char *dir, uint64_t map_mb, uint64_t map_max_mb, char *err);
void notify_db_close(notify_db_t **db);

/* The write transaction. begin: 0 or an LMDB code. commit: 0 or an LMDB code (the transaction is
 * gone either way). abort: always safe. */
int notify_db_begin(notify_db_t *db);
int notify_db_commit(notify_db_t *db);
void notify_db_abort(notify_db_t *db);
bool notify_db_in_txn(const notify_db_t *db);
/* Double the map (no transaction may be active). Returns 0, or -1 when it is at its maximum. */
int notify_db_grow(notify_db_t *db);
/* Before a write transaction: grow the map while its used part (the high-water mark of pages;
 * freed pages are reused below it) is more than half of it, so one turn's writes never meet
 * MDB_MAP_FULL. Returns 0, or -1 when the map is at its maximum and more than half used. */
int notify_db_reserve(notify_db_t *db);
uint64_t notify_db_map_bytes(const notify_db_t *db);

/* Inside the write transaction. */
int notify_db_meta_get(notify_db_t *db, notify_meta_t *m); /* zeroes (next_seq 1) when absent */
int notify_db_meta_put(notify_db_t *db, const notify_meta_t *m);

int notify_db_user_get(notify_db_t *db, const char *uid, size_t len, notify_views_t *u, bool *found);
int notify_db_user_put(notify_db_t *db, const char *uid, size_t len, const notify_views_t *u);
int notify_db_user_del(notify_db_t *db, const char *uid, size_t len); /* absent is not an error */

/* Visit the users whose id sorts strictly after `after` (alen 0 = from the first) and strictly
 * before `before` (NULL = to the last), in key order. fn returns 0 to keep the row, 1 to delete
 * it, or an LMDB code to stop with it. A row that does not decode is passed with u == NULL. */
typedef int (*notify_db_user_fn)(void *ctx, const char *uid, size_t len, const notify_views_t *u);
int notify_db_user_range(notify_db_t *db, const char *after, size_t alen, const char *before, size_t blen,
                         notify_db_user_fn fn, void *ctx);

int notify_db_log_append(notify_db_t *db, uint64_t seq, const void *data, size_t len);
/* Delete entry seq; *len = its size. Returns 0, or MDB_NOTFOUND when absent. */
int notify_db_log_del(notify_db_t *db, uint64_t seq, size_t *len);
/* The first entry: its seq, appended_ms and size. Returns 0 or MDB_NOTFOUND (empty log). */
int notify_db_log_first(notify_db_t *db, uint64_t *seq, uint64_t *appended_ms, size_t *len);

/* Visit the entries after seq `after` in order, through the write transaction if one is active,
 * else a read transaction of this call. fn returns 0 to go on, 1 to stop; entries are borrowed
 * (copy what you keep). Entries that do not decode are counted in *bad and not passed. Returns 0
 * or an LMDB code. */
typedef int (*notify_db_entry_fn)(void *ctx, const notify_entry_t *e);
int notify_db_log_scan(notify_db_t *db, uint64_t after, notify_db_entry_fn fn, void *ctx, uint64_t *bad);

/* Target cursors, keyed by the SHA-256 of the URL. */
int notify_db_cursor_get(notify_db_t *db, const unsigned char key[32], uint64_t *cursor, uint64_t *acked_id,
                         bool *found);
int notify_db_cursor_put(notify_db_t *db, const unsigned char key[32], uint64_t cursor, uint64_t acked_id);
/* Delete every cursor whose key is not among keys[0..n); *removed counts them. */
int notify_db_cursor_keep(notify_db_t *db, const unsigned char (*keys)[32], uint32_t n, uint32_t *removed);

/* The snapshot staging area. Keys order by version, then user id. */
int notify_db_snap_clear(notify_db_t *db);
int notify_db_snap_put(notify_db_t *db, uint64_t version, const char *uid, size_t len, const void *val, size_t vlen);
int notify_db_snap_del(notify_db_t *db, uint64_t version, const char *uid, size_t len); /* absent: 0 */
/* Visit every staged change in key order; fn returns 0 to go on or an LMDB code to stop. */
typedef int (*notify_db_snap_fn)(void *ctx, uint64_t version, const char *uid, size_t len, const void *val,
                                 size_t vlen);
int notify_db_snap_each(notify_db_t *db, notify_db_snap_fn fn, void *ctx);

#endif
