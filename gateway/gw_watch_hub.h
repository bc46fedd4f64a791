/* gw_watch_hub.h -- a gateway thread's watch hub: the region's change stream, handed to the
 * subscribers that watch each user (gateway/gw_watch_hub.c explains it).
 *
 * A subscriber -- an SSE stream (gw_watch.c) or any other kind of watcher -- embeds a
 * gw_watch_sub_t, names its sink (how it takes events) and subscribes to a list of user ids. The
 * hub then calls the sink with every change of a watched user that is newer than what that
 * subscriber was given for the user: live changes, the changes it missed (a resume from the hub's
 * window of recent changes), or the users' current records (a new subscriber, or a resume older
 * than the window). Per subscriber and user, versions only go up.
 *
 * Each subscriber gets the view its viewer may see (gw_json_record_as): the watched user's own and
 * admins' the private view and every change; everyone else the public view, and only the changes
 * that moved it (record.pub_version == record.version): while a user is invisible, nothing about
 * their devices reaches other watchers -- no event, no version.
 *
 * One thread: a hub, its subscribers and their sinks run on the hub's event-loop thread.
 */
#ifndef PRESENCE_GW_WATCH_HUB_H
#define PRESENCE_GW_WATCH_HUB_H

#include "gw_ctx.h"
#include "proto.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_watch_sub gw_watch_sub_t;
typedef struct gw_watch_user gw_watch_user_t; /* a watched user: the hub's, shared by its subscribers */

/* One change as a subscriber is given it. Borrowed: valid during the call. */
typedef struct gw_watch_event {
    uint64_t version; /* the change's sequence number: the record's version */
    const char *uid;
    size_t uid_len;
    bool deleted;
    const char *json; /* the record as REST shows it, or {"user_id":..,"deleted":true,"version":N} */
    size_t json_len;
    uint32_t slot; /* which of the subscriber's users it is (0..nids): lets a sink keep one per user */
    bool replay;   /* a resume's replay from the window: every change after `since` is promised
                    * (API.md), so a sink must not coalesce it away */
} gw_watch_event_t;

/* How a subscriber takes what the hub gives it. */
typedef struct gw_watch_sink {
    /* An event for one of its users (already known to be newer than what it was given). */
    void (*event)(gw_watch_sub_t *s, const gw_watch_event_t *ev);
    /* A notice without an event: "resync" (a resume older than the window: the current records
     * follow instead of every change missed) or "reset" (another database: versions start over;
     * end follows). */
    void (*notice)(gw_watch_sub_t *s, const char *what);
    /* Events were queued: send them. */
    void (*flush)(gw_watch_sub_t *s);
    /* The hub ends the subscriber (a reset, or the thread is stopping). The subscriber ends itself
     * and calls gw_watch_hub_unsubscribe (at once or later). */
    void (*end)(gw_watch_sub_t *s);
} gw_watch_sink_t;

/* One of a subscriber's users: the shared user (its id is stored once per hub, however many
 * subscribers watch it), the last version given, and the subscriber's place in the user's list. */
typedef struct gw_watch_slot {
    gw_watch_user_t *user;
    uint64_t ver;
    uint32_t refpos;
} gw_watch_slot_t;

/* Embedded in a subscriber. The subscriber sets sink, req and viewer before
 * gw_watch_hub_subscribe; the rest is the hub's. Memory per watched id: 24 bytes here, 16 in the
 * user's list of subscribers, and the user itself (about 48 bytes + the id) once per hub. */
struct gw_watch_sub {
    const gw_watch_sink_t *sink;
    h2o_req_t *req;     /* the request the subscriber serves: current records are read for it */
    gw_viewer_t viewer; /* who watches (viewer.sub must outlive the subscription); zero: anonymous */
    gw_watch_hub_t *hub;
    gw_watch_sub_t *prev, *next;
    uint32_t nids;
    gw_watch_slot_t *slots; /* nids of them */
    uint64_t resume_since;  /* != 0: a resume waiting for the hub's stream to reach it */
    uint64_t resume_by_ms;  /* ... until then; after, the current records instead */
    void *fetches;          /* reads of current records in flight for it (detached on unsubscribe) */
};

/* The id of slot i of s (borrowed while s is subscribed). */
const char *gw_watch_hub_slot_id(const gw_watch_sub_t *s, uint32_t i, size_t *len);
/* Something else that follows the hub's change stream (the near cache: gw_nearcall.c). Runs on the
 * hub's thread: change with every applied change (TOUCH included), before the watchers get it;
 * reset when the database changes (versions start over); state with the sync client's new state
 * (enum sync_state) and the sequence applied so far. */
#define GW_WATCH_HUB_OBSERVERS 2 /* the near cache, and the WebSockets' ended sessions (gw_wsend.c) */
typedef struct gw_watch_observer {
    void *ctx;
    void (*change)(void *ctx, const proto_change_t *c);
    void (*reset)(void *ctx);
    void (*state)(void *ctx, int state, uint64_t seq);
} gw_watch_observer_t;

/* Start the thread's hub (*out = NULL when SSE_MAX_STREAMS is 0: no hub). on_live(arg) runs when
 * the hub's stream becomes live (the thread's readiness: gw_thread.c). Returns 0, or -1 with err
 * (256 bytes). */
int gw_watch_hub_new(gw_ctx_t *cx, void *zctx, void (*on_live)(void *arg), void *arg, gw_watch_hub_t **out, char *err);
/* The thread is stopping: end every subscriber (sink->end) and stop following the change stream.
 * NULL-safe. The hub itself is not freed -- subscribers h2o has not released yet still point at
 * it (they unsubscribe when h2o stops them); the thread is about to exit. */
void gw_watch_hub_stop(gw_watch_hub_t *h);
/* Give the hub's stream to o as well (copied; at most GW_WATCH_HUB_OBSERVERS per hub, each called
 * in the order they came; o->ctx must outlive the hub's stream: gw_watch_hub_stop ends it). */
void gw_watch_hub_observe(gw_watch_hub_t *h, const gw_watch_observer_t *o);
/* Catch up again from the last applied change, as after a gap: the thread did not run for a while
 * (stopped, starved), so messages may have been lost with no sign yet. NULL-safe. */
void gw_watch_hub_resync(gw_watch_hub_t *h);
/* The hub's stream has been live at least once (or there is no hub). */
bool gw_watch_hub_live(const gw_watch_hub_t *h);

/* Subscribe s to the users ids[0..n) (copied; distinct, valid ids). since == 0: the current
 * records first (read through the cache tier), then live changes. since > 0 (Last-Event-ID): every
 * change after it from the window when the window has it; when this thread's stream has not
 * reached it yet, wait for it (REQUEST_TIMEOUT_MS at most); else "resync" and the current records. */
void gw_watch_hub_subscribe(gw_watch_hub_t *h, gw_watch_sub_t *s, const proto_str_t *ids, uint32_t n, uint64_t since);
/* Stop giving s anything; frees what the hub allocated for it. s->req may be NULL (a subscriber
 * without an HTTP request, e.g. a WebSocket). Its reads of current records still in flight are
 * detached, so s may be freed right after this returns. Not from inside a sink's event or flush
 * callback (the hub is walking the subscribers of a user then). */
void gw_watch_hub_unsubscribe(gw_watch_sub_t *s);
/* Stop giving s the changes of one user (uid[0..len)); the others stay. Returns the number of
 * users s still watches (0: the caller unsubscribes it). Not from inside a sink callback. */
uint32_t gw_watch_hub_forget(gw_watch_sub_t *s, const char *uid, size_t len);

#endif
