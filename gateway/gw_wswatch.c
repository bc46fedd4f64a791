/* gw_wswatch.c -- a WebSocket connection's watches (see gw_wswatch.h).
 *
 * Each `watch` message becomes one subscriber of the thread's watch hub (the same hub, table and
 * window SSE uses), holding the users that message added -- users the connection already watches
 * are left out, so each user's changes reach it once -- with that message's `since`. An `unwatch`
 * takes users out of whichever subscriber has them (gw_watch_hub_forget); an emptied subscriber is
 * dropped. WS_MAX_WATCH bounds the users of a connection over all its subscribers.
 *
 * Per viewer: each subscriber carries the connection's viewer (its token's subject and whether
 * it is presence:admin), and the hub renders and filters for it (gw_watch_hub.c): the user's own
 * changes -- and everyone's, for an admin -- in the private view, every one of them; anyone else's
 * in the public view, and only when the public view moved (pub_version == version), so while a
 * user is invisible, devices coming and going change nothing another watcher can observe.
 *
 * Threading: the connection's thread, which is the hub's.
 */
#include "gw_wswatch.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gw_wswatch_t *s_of(gw_watch_sub_t *s)
{
    return H2O_STRUCT_FROM_MEMBER(gw_wswatch_t, sub, s);
}

/* ==== the hub's sink =========================================================================== */

static void on_event(gw_watch_sub_t *s, const gw_watch_event_t *ev)
{
    gw_wsconn_t *c = s_of(s)->c;
    if (c->state != GW_WSCONN_OPEN)
        return;
    gw_buf_t *b = &c->ws->scratch;
    gw_buf_reset(b);
    gw_buf_adds(b, "{\"type\":\"presence\",\"record\":");
    gw_buf_add(b, ev->json, ev->json_len); /* already in this viewer's view (the hub's) */
    gw_buf_add(b, "}", 1);
    gw_wsconn_send(c, b->p, b->len);
    atomic_fetch_add(&gw_metrics.ws_events, 1);
}

static void on_notice(gw_watch_sub_t *s, const char *what)
{
    gw_wsconn_t *c = s_of(s)->c;
    /* "resync": the current records follow -- nothing to tell. "reset": the store's history started
     * over (another database); the hub ends the subscribers next. */
    if (strcmp(what, "reset") == 0 && !c->reset_told && c->state == GW_WSCONN_OPEN) {
        c->reset_told = true;
        gw_wsconn_error(c, "watch reset: the store's history started over; send watch again", false);
    }
}

static void on_flush(gw_watch_sub_t *s)
{
    gw_wsconn_flush(s_of(s)->c);
}

/* The hub ends this subscriber (a reset, or the thread stopping): drop it alone (the hub walks
 * its list of subscribers with the next one saved, so the others must stay). */
static void on_end(gw_watch_sub_t *s)
{
    gw_wswatch_t *w = s_of(s);
    gw_wsconn_t *c = w->c;
    for (gw_wswatch_t **pp = &c->watches; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    c->nwatched -= MIN(c->nwatched, s->nids);
    gw_watch_hub_unsubscribe(s);
    free(w);
}

static const gw_watch_sink_t s_sink = {.event = on_event, .notice = on_notice, .flush = on_flush, .end = on_end};

/* ==== the users a connection watches =========================================================== */

/* An open-addressing set of the ids the connection watches, built per message (at most
 * WS_MAX_WATCH of them): a watch of n users costs O(watched + n), not O(watched x n). */
typedef struct idset {
    const char **p;
    uint8_t *len;
    size_t mask;
} idset_t;

static size_t s_slot(const idset_t *set, const char *p, size_t n)
{
    size_t i = (size_t)util_hash64(p, n, 0x77a7c4) & set->mask;
    while (set->p[i] && !(set->len[i] == n && memcmp(set->p[i], p, n) == 0))
        i = (i + 1) & set->mask;
    return i;
}

static void s_idset_build(const gw_wsconn_t *c, idset_t *set)
{
    size_t size = 16;
    while (size < (size_t)c->nwatched * 2 + 2)
        size *= 2;
    set->p = xcalloc(size, sizeof *set->p);
    set->len = xcalloc(size, 1);
    set->mask = size - 1;
    for (const gw_wswatch_t *w = c->watches; w; w = w->next)
        for (uint32_t i = 0; i < w->sub.nids; i++) {
            size_t len;
            const char *id = gw_watch_hub_slot_id(&w->sub, i, &len);
            size_t k = s_slot(set, id, len);
            set->p[k] = id;
            set->len[k] = (uint8_t)len;
        }
}

static void s_idset_free(idset_t *set)
{
    free(set->p);
    free(set->len);
}

/* ==== watch, unwatch =========================================================================== */

int gw_wswatch_add(gw_wsconn_t *c, const gw_wsmsg_t *m, char *err, size_t errlen)
{
    gw_watch_hub_t *hub = c->ws->cx->watch;
    if (!hub) {
        snprintf(err, errlen, "watch unavailable: this gateway follows no change stream (SSE_MAX_STREAMS=0)");
        return -1;
    }
    idset_t set;
    s_idset_build(c, &set);
    proto_str_t *fresh = xmalloc((m->nusers ? m->nusers : 1) * sizeof *fresh);
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->nusers; i++)
        if (!set.p[s_slot(&set, m->users[i].p, m->users[i].len)])
            fresh[n++] = m->users[i];
    s_idset_free(&set);
    if ((uint64_t)c->nwatched + n > gw_cfg.ws_max_watch) {
        snprintf(err, errlen, "too many users: a connection watches at most %llu (it watches %u; unwatch some first)",
                 (unsigned long long)gw_cfg.ws_max_watch, c->nwatched);
        free(fresh);
        return -1;
    }
    if (n) {
        gw_wswatch_t *w = xcalloc(1, sizeof *w);
        w->c = c;
        w->sub.sink = &s_sink;
        w->sub.req = NULL;
        w->sub.viewer = (gw_viewer_t){c->uid, c->uid_len, c->admin}; /* c->uid outlives the subscription */
        w->next = c->watches;
        c->watches = w;
        c->nwatched += n;
        c->reset_told = false;
        gw_watch_hub_subscribe(hub, &w->sub, fresh, n, m->has_since ? m->since : 0);
    }
    free(fresh);
    return 0;
}

void gw_wswatch_remove(gw_wsconn_t *c, const gw_wsmsg_t *m)
{
    for (uint32_t i = 0; i < m->nusers; i++) {
        for (gw_wswatch_t **pp = &c->watches; *pp; pp = &(*pp)->next) {
            gw_wswatch_t *w = *pp;
            uint32_t before = w->sub.nids;
            uint32_t left = gw_watch_hub_forget(&w->sub, m->users[i].p, m->users[i].len);
            if (left == before)
                continue;
            c->nwatched--;
            if (!left) {
                *pp = w->next;
                gw_watch_hub_unsubscribe(&w->sub);
                free(w);
            }
            break; /* a user is in one subscriber at most */
        }
    }
}

void gw_wswatch_clear(gw_wsconn_t *c)
{
    while (c->watches) {
        gw_wswatch_t *w = c->watches;
        c->watches = w->next;
        gw_watch_hub_unsubscribe(&w->sub);
        free(w);
    }
    c->nwatched = 0;
}
