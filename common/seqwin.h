/* seqwin.h -- a byte-bounded window of recent sequenced items (changes, or frames of changes).
 *
 * The relay keeps the CHANGES frames it published so a region cache-node's catch-up is answered
 * without crossing the link; each gateway watch hub keeps the changes it saw so an SSE client
 * that reconnects with Last-Event-ID misses nothing. Both need the same thing: a FIFO of byte
 * strings tagged with the sequence range they carry, bounded by bytes, oldest dropped first.
 *
 * The window holds every item after `start`: an item dropped to make room moves `start` to its
 * last sequence, so "is everything after S still here?" is `S >= seqwin_start(w)` (the owner knows
 * how far it has added). The newest item is never dropped, whatever its size. Items are copied
 * in; their bytes are read back in place (valid until the item is dropped or the window cleared).
 *
 * Not thread-safe: one owner thread.
 */
#ifndef PRESENCE_SEQWIN_H
#define PRESENCE_SEQWIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct seqwin_item {
    struct seqwin_item *next; /* newer */
    uint64_t first, last;     /* the sequence range the item carries (first == last for one change) */
    size_t len;
    uint8_t kind;             /* the owner's tag (e.g. a change kind) */
    char data[];
} seqwin_item_t;

typedef struct seqwin {
    seqwin_item_t *head, *tail; /* oldest, newest */
    size_t bytes, max_bytes;
    uint64_t start;
} seqwin_t;

/* An empty window holding at most max_bytes (items and their headers counted), complete after
 * sequence `start`. */
void seqwin_init(seqwin_t *w, size_t max_bytes, uint64_t start);
/* Drop every item (seqwin_clear(w, 0) without reuse in mind). */
void seqwin_fini(seqwin_t *w);
/* Drop every item; the window is complete after `start` again. */
void seqwin_clear(seqwin_t *w, uint64_t start);
/* Append a copy of data[0..len) carrying sequences first..last (last >= first, and above every
 * item already held), then drop the oldest items while the window holds more than max_bytes. */
void seqwin_add(seqwin_t *w, uint64_t first, uint64_t last, uint8_t kind, const void *data, size_t len);
/* Raise `start` to seq (no effect when it is already there): the owner learnt that what the window
 * holds before seq is not complete (a catch-up compacted it). */
void seqwin_raise_start(seqwin_t *w, uint64_t seq);

/* The oldest item carrying a sequence after `seq` (its last > seq), or NULL. Walk on with ->next. */
const seqwin_item_t *seqwin_after(const seqwin_t *w, uint64_t seq);
/* Every item after this sequence is held (see the header comment). */
static inline uint64_t seqwin_start(const seqwin_t *w)
{
    return w->start;
}
/* Bytes held (items and their headers). */
static inline size_t seqwin_bytes(const seqwin_t *w)
{
    return w->bytes;
}

#endif
