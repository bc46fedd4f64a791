/* seqwin.c -- the byte-bounded window of sequenced items (see seqwin.h).
 *
 * A singly linked FIFO: append at the tail, drop at the head. Each item is one allocation
 * (header and bytes together) and is counted with its header, so max_bytes bounds the memory the
 * window really holds. One owner thread.
 */
#include "seqwin.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

void seqwin_init(seqwin_t *w, size_t max_bytes, uint64_t start)
{
    w->head = w->tail = NULL;
    w->bytes = 0;
    w->max_bytes = max_bytes;
    w->start = start;
}

void seqwin_clear(seqwin_t *w, uint64_t start)
{
    while (w->head) {
        seqwin_item_t *it = w->head;
        w->head = it->next;
        free(it);
    }
    w->tail = NULL;
    w->bytes = 0;
    w->start = start;
}

void seqwin_fini(seqwin_t *w)
{
    seqwin_clear(w, 0);
}

void seqwin_add(seqwin_t *w, uint64_t first, uint64_t last, uint8_t kind, const void *data, size_t len)
{
    seqwin_item_t *it = xmalloc(sizeof *it + len);
    it->next = NULL;
    it->first = first;
    it->last = last;
    it->len = len;
    it->kind = kind;
    if (len)
        memcpy(it->data, data, len);
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    w->bytes += sizeof *it + len;
    while (w->bytes > w->max_bytes && w->head != w->tail) {
        seqwin_item_t *old = w->head;
        w->head = old->next;
        w->bytes -= sizeof *old + old->len;
        w->start = old->last;
        free(old);
    }
}

void seqwin_raise_start(seqwin_t *w, uint64_t seq)
{
    if (seq > w->start)
        w->start = seq;
}

const seqwin_item_t *seqwin_after(const seqwin_t *w, uint64_t seq)
{
    const seqwin_item_t *it = w->head;
    while (it && it->last <= seq)
        it = it->next;
    return it;
}
