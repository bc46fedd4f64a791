/* notify.h -- the notifier's pure engine: which webhook events a change makes, the per-user
 * debounce, the byte layouts of what the notifier keeps in LMDB, batching, and the delivery state
 * machine of one target (cursor, retries with backoff and jitter, outcomes of an HTTP answer).
 *
 * The process (notifier.c) owns the I/O: it feeds every change of the store's stream to
 * notify_plan() with the user's last known state, writes what the plan says into its LMDB
 * environment (notify_db.h) in one transaction, builds batches from the event log with
 * notify_batch_*(), POSTs them and reports each answer to notify_target_result().
 *
 *   change (SET / DEL)      notify_plan()              LMDB, one transaction
 *   + last known state  --> events, held offline,  --> users[uid] = next state
 *                           cancelled offline,         log[seq]  = entry (rendered JSON)
 *                           next state                 (cancelled entry deleted)
 *
 *   log[cursor+1 ..]  --> notify_batch_offer() per entry --> "[ev,ev,...]"  --> POST
 *   answer            --> notify_target_result()         --> cursor / retry at / dropped
 *
 * Nothing here does I/O, logs, or keeps global state: every function works on caller-owned data
 * and is reentrant. notify_sign() and notify_key() call OpenSSL (pure computations).
 */
#ifndef PRESENCE_NOTIFY_H
#define PRESENCE_NOTIFY_H

#include "gw_lib.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ==== event types ============================================================================ */

enum notify_type {
    NOTIFY_ONLINE = 0,        /* effective status offline -> online|away|busy */
    NOTIFY_OFFLINE = 1,       /* online|away|busy -> offline (or the record was deleted) */
    NOTIFY_STATUS = 2,        /* a change among online, away and busy */
    NOTIFY_MESSAGE = 3,       /* the message changed (set, changed or cleared) */
    NOTIFY_SESSION_START = 4, /* the record's session count went up */
    NOTIFY_SESSION_END = 5,   /* the record's session count went down */
};
#define NOTIFY_TYPE_COUNT 6
#define NOTIFY_MASK_ALL ((1u << NOTIFY_TYPE_COUNT) - 1)
/* A target's mask bit beside the types: it is privileged (takes the user's own view). */
#define NOTIFY_MASK_PRIVILEGED (1u << 31)

/* Which view of a record an event was derived from (docs/WEBHOOKS.md, "Invisible mode").
 * Most events are the same in both views (NOTIFY_VIEW_ALL); while a user is invisible, or until
 * the two views agree again, the public view's events go to ordinary targets and the user's own
 * view's events to privileged ones. */
enum notify_view {
    NOTIFY_VIEW_ALL = 0,     /* both views: every target */
    NOTIFY_VIEW_PUBLIC = 1,  /* proto_record_public(): targets that are not privileged */
    NOTIFY_VIEW_PRIVATE = 2, /* the user's own view: privileged targets */
};

/* "online", "offline", ... or NULL for an unknown value. */
const char *notify_type_name(int type);
/* The type named by s[0..len), or -1. */
int notify_type_parse(const char *s, size_t len);

/* ==== per-user state ========================================================================= */

/* What the notifier last knew of a user: the state its events were computed from. `status` and
 * the message are the *effective* ones, as readers see them (a record past expires_at is offline
 * without its message, exactly as the store and the gateway treat it). */
typedef struct notify_user {
    uint64_t version;       /* store version of the change this state came from */
    uint64_t pend_seq;      /* log seq of an offline event held by the debounce (0 = none) */
    uint64_t pend_until_ms; /* wall-clock ms at which it becomes deliverable */
    uint32_t sessions;      /* session count (REALTIME.md; 0 until the record carries it) */
    uint8_t status;         /* enum presence_status */
    uint8_t pend_prev;      /* the status before the held offline */
    uint16_t msg_len;
    char message[PROTO_MESSAGE_MAX + 1];
} notify_user_t;

/* The number of sessions record r shows (its `sessions`, REALTIME.md). Pass the view: the public
 * view of an invisible user shows none. */
uint32_t notify_record_sessions(const proto_record_t *r);

/* The state readers see in record r at wall time now_us (effective status and message). */
void notify_user_from_record(notify_user_t *u, const proto_record_t *r, uint64_t now_us);

/* Byte layout of one view's state. notify_user_encode writes at most NOTIFY_USER_ENC_MAX bytes
 * into out and returns the length; decode returns 0, or -1 for bytes that are not a state of this
 * layout version. */
#define NOTIFY_USER_ENC_MAX (40 + PROTO_MESSAGE_MAX)
size_t notify_user_encode(const notify_user_t *u, unsigned char *out);
int notify_user_decode(const void *data, size_t len, notify_user_t *u);

/* A user's state in both views: what everyone sees (pub) and what the user sees (own). They are
 * equal unless the user is (or was, until the views agree again) invisible. */
typedef struct notify_views {
    notify_user_t pub, own;
} notify_views_t;

/* The users database's value: a layout byte, a flag "own differs", pub, then own if it differs.
 * A layout-1 value (one state, written before views existed) decodes as both views. Encode
 * writes at most NOTIFY_VIEWS_ENC_MAX bytes and returns the length; decode returns 0 or -1. */
#define NOTIFY_VIEWS_ENC_MAX (2 + 2 * NOTIFY_USER_ENC_MAX)
size_t notify_views_encode(const notify_views_t *v, unsigned char *out);
int notify_views_decode(const void *data, size_t len, notify_views_t *v);
/* True when the two states are the same (the views agree). */
bool notify_user_same(const notify_user_t *a, const notify_user_t *b);

/* ==== planning: what one change does ========================================================= */

typedef struct notify_event {
    uint64_t seq;           /* position in the notifier's log, assigned by notify_plan */
    uint64_t id;            /* the change's store version (the event's "id") */
    uint64_t visible_at_ms; /* 0: deliverable at once; else held by the debounce until then */
    uint8_t type;           /* enum notify_type */
    uint8_t prev_status;    /* enum presence_status before the change ("previous_status") */
    uint8_t view;           /* enum notify_view (set by the caller that merges the views' plans) */
    uint16_t prev_sessions; /* session_start / session_end: the count before the change */
} notify_event_t;

#define NOTIFY_PLAN_EVENTS_MAX 4

typedef struct notify_plan {
    notify_event_t ev[NOTIFY_PLAN_EVENTS_MAX]; /* in the order they go into the log */
    uint32_t n;
    uint64_t cancel_seq;     /* a held offline to delete from the log (0 = none) */
    uint32_t debounced;      /* 1 when an offline/online pair was cancelled */
    bool write_state;        /* store `next` as the user's state */
    bool delete_state;       /* forget the user (a delete of a user with no held event) */
    notify_user_t next;
} notify_plan_t;

/* Work out what a change of one user does.
 *   prev        the user's last known state, or NULL when the notifier does not know the user
 *               (never seen, or forgotten after a delete): treated as offline, no message, no
 *               sessions, so a new user who comes online makes an `online` event whose
 *               previous_status is "offline".
 *   rec         the new record (PROTO_CH_SET), or NULL when the user was deleted (PROTO_CH_DEL).
 *   id          the change's version (rec->version for a SET).
 *   now_us      wall clock, for the effective status (a record past expires_at is offline).
 *   debounce_ms 0 = off. Otherwise an `offline` event is held (visible_at_ms = now + debounce)
 *               and an `online` of the same user while it is still held cancels both: the held
 *               entry is to be deleted (cancel_seq) and the online is not emitted; if the status
 *               the user comes back with differs from the one before the offline, a `status`
 *               event (previous_status = that one) is emitted instead. An offline made by a
 *               delete is never held (there is no state left to cancel it against). A hold whose
 *               time is more than debounce_ms away (a clock that went back) is over.
 *               The caller must clear prev's hold (pend_* fields) when a target already took the
 *               held entry (possible only if the wall clock went back): it is no hold any more.
 *   next_seq    the log seq the first event gets; events take consecutive seqs.
 * A change that changes nothing a reader sees (a SET with the same effective status, message and
 * sessions, or a version not newer than prev->version) makes no event and leaves the state alone
 * (write_state false), except that a held offline whose time has passed is forgotten.
 * Events come in this order: online/offline/status, message, session_start/session_end. */
void notify_plan(const notify_user_t *prev, const proto_record_t *rec, uint64_t id, uint64_t now_us,
                 uint64_t debounce_ms, uint64_t next_seq, notify_plan_t *out);

/* ==== rendering and the log ================================================================== */

/* Append one event as JSON:
 *   {"id":V,"type":"T","user_id":"U","record":{...}|null,"previous_status":"S","at":"RFC 3339"}
 * and, for session_start / session_end, "previous_sessions":N before "at". `record` is the REST
 * API's rendering of rec (gw_json_record_as) in the event's view -- the user's own for
 * NOTIFY_VIEW_PRIVATE, else the public one --, null for a delete. `at` is when the change
 * happened: the record's updated_at (expires_at when it is shown offline because it expired), or
 * at_us for a delete. */
void notify_event_render(gw_buf_t *b, const notify_event_t *e, const char *uid, size_t uid_len,
                         const proto_record_t *rec, uint64_t now_us, uint64_t at_us);

/* A log entry as stored (log database, key = big-endian seq): a fixed header and the rendered
 * JSON. Decoding borrows `json` from the given bytes. */
typedef struct notify_entry {
    uint64_t seq;           /* from the key */
    uint64_t id;
    uint64_t visible_at_ms; /* 0 = deliverable */
    uint64_t appended_ms;   /* wall clock when logged (lag) */
    uint8_t type;
    uint8_t view;           /* enum notify_view */
    const char *json;       /* borrowed */
    uint32_t json_len;
} notify_entry_t;

#define NOTIFY_ENTRY_HDR 32
/* Encode header + json into out (reset first). */
void notify_entry_encode(gw_buf_t *out, const notify_event_t *e, uint64_t appended_ms, const char *json,
                         size_t json_len);
/* Returns 0, or -1 when the bytes are not an entry of this layout (e->seq is left to the caller). */
int notify_entry_decode(const void *data, size_t len, notify_entry_t *e);

/* Big-endian u64 keys (log seq, snapshot keys): memcmp order is numeric order. */
void notify_be64_put(unsigned char *p, uint64_t v);
uint64_t notify_be64_get(const unsigned char *p);

/* ==== batches ================================================================================ */

typedef struct notify_batch {
    gw_buf_t body;          /* "[ev,ev,...]" once ended */
    uint32_t n;             /* events in the body */
    uint32_t max_events;
    size_t max_bytes;       /* bound on the body; a first event larger than this still goes alone */
    uint64_t after;         /* the target's cursor when the batch began */
    uint64_t last_seq;      /* last log seq the batch covers (taken or skipped); == after if none */
    uint64_t first_id, last_id;
    uint64_t oldest_ms;     /* appended_ms of the first entry taken (lag); 0 = none */
    uint64_t held_until_ms; /* set when a held entry stopped the batch */
    uint64_t hold_max_ms;   /* a hold never lasts longer than this from now (the debounce) */
} notify_batch_t;

enum notify_offer {
    NOTIFY_TAKEN = 0, /* the entry is in the batch */
    NOTIFY_SKIPPED,   /* the target does not want this type: covered, not sent */
    NOTIFY_FULL,      /* no room: stop; the entry is not covered */
    NOTIFY_HELD,      /* a held entry (debounce) the target wants: stop until held_until_ms */
};

void notify_batch_init(notify_batch_t *b);
void notify_batch_fini(notify_batch_t *b);
/* Start a batch after log seq `after` (the target's cursor) with these bounds (>= 1 event).
 * hold_max_ms is the debounce: an entry held until more than that after now (the wall clock went
 * back, or the entry comes from a run whose clock was ahead) counts as deliverable, as
 * notify_plan treats it, so a hold can never stall a target for longer than the window. */
void notify_batch_begin(notify_batch_t *b, uint64_t after, uint32_t max_events, size_t max_bytes,
                        uint64_t hold_max_ms);
/* Offer the next log entry (entries must come in seq order, each > last_seq). mask is the
 * target's set of wanted types (1u << type), with NOTIFY_MASK_PRIVILEGED for a privileged target:
 * an entry of the other view is skipped like an unwanted type. Returns enum notify_offer. */
int notify_batch_offer(notify_batch_t *b, uint32_t mask, const notify_entry_t *e, uint64_t now_ms);
/* Close the JSON array (call once, when n > 0). */
void notify_batch_end(notify_batch_t *b);

/* ==== delivery state of one target =========================================================== */

typedef struct notify_policy {
    uint64_t backoff_min_ms;   /* first retry waits up to this (full jitter) */
    uint64_t backoff_max_ms;   /* cap of the exponential */
    bool retry_4xx;            /* false: a 4xx other than 408/413/429 drops the batch */
} notify_policy_t;

enum notify_phase {
    NOTIFY_IDLE = 0,     /* nothing in flight; a batch may start */
    NOTIFY_INFLIGHT = 1, /* a POST is out */
    NOTIFY_BACKOFF = 2,  /* the last attempt failed; the same range is retried at retry_at_ms */
};

typedef struct notify_target {
    uint64_t cursor;        /* last log seq acknowledged (2xx), skipped or dropped; durable */
    uint64_t acked_id;      /* id of the last event acknowledged */
    int phase;
    uint32_t attempt;       /* failed attempts of the current range */
    uint64_t retry_at_ms;   /* monotonic; meaningful in BACKOFF */
    uint32_t batch_limit;   /* events per batch now (halved by 413, back to the max on success) */
    uint64_t inflight_last; /* last seq of the batch in flight / to retry */
    uint32_t inflight_n;    /* its events */
    bool dirty;             /* cursor changed since it was last written */
    /* counters */
    uint64_t delivered_events, delivered_batches, retries, failures, dropped_events, dropped_batches;
    uint64_t gaps, gap_entries;
} notify_target_t;

enum notify_outcome {
    NOTIFY_ACKED = 0, /* 2xx: the cursor moved to the batch's end */
    NOTIFY_RETRY,     /* 5xx, 408, 429, 3xx..4xx with retry_4xx, timeout, connection error */
    NOTIFY_SPLIT,     /* 413 with more than one event: retry with half as many */
    NOTIFY_DROPPED,   /* 4xx (or 413 of a single event): the batch is skipped, counted */
};

/* A target at log seq `cursor` with batches of at most max_events. */
void notify_target_init(notify_target_t *t, uint64_t cursor, uint32_t max_events);
/* A batch covering (cursor, last_seq] with n events went out. */
void notify_target_sent(notify_target_t *t, uint64_t last_seq, uint32_t n);
/* The cursor passes entries the target does not want, without a request (n == 0 batch). */
void notify_target_skip(notify_target_t *t, uint64_t last_seq);
/* The answer to the batch in flight: http_status 100..599, or 0 for a transport failure
 * (timeout, refused, reset, TLS). retry_after_s: a Retry-After the server sent (0 = none); it
 * lengthens the backoff (up to backoff_max_ms). last_id: id of the batch's last event. rnd: a
 * uniform random number (jitter). Returns enum notify_outcome; the target is IDLE or BACKOFF after. */
int notify_target_result(notify_target_t *t, const notify_policy_t *p, int http_status, uint64_t retry_after_s,
                         uint64_t last_id, uint64_t now_ms, uint64_t rnd, uint32_t max_events);
/* Full-jitter exponential backoff: uniform in [1, min(max, min * 2^(attempt-1))] ms. */
uint64_t notify_backoff_ms(const notify_policy_t *p, uint32_t attempt, uint64_t rnd);
/* The log no longer holds seqs below `floor` (pruned by its bound). A target whose cursor is
 * below floor - 1 skips to floor - 1: returns the number of entries skipped (a gap, counted), or
 * 0 when none. Only for a target that is not in flight. */
uint64_t notify_target_catch_floor(notify_target_t *t, uint64_t floor);

/* ==== the log's bound ======================================================================== */

/* True while the oldest entry must go regardless of cursors: the log holds more than max_bytes,
 * or its oldest entry (appended at oldest_ms) is older than max_age_ms (0 = no age bound). */
bool notify_over_bound(uint64_t bytes, uint64_t max_bytes, uint64_t oldest_ms, uint64_t max_age_ms, uint64_t now_ms);

/* ==== signing and keys ======================================================================= */

#define NOTIFY_SIG_HEX 64
/* HMAC-SHA256 of "<t>.<body>" with key, as 64 lowercase hex digits + NUL in out (65 bytes).
 * Returns 0, or -1 if OpenSSL failed. */
int notify_sign(const void *key, size_t key_len, uint64_t t, const void *body, size_t body_len, char *out);
/* "X-Presence-Signature: t=<t>,v1=<hex>" into out (at least 128 bytes). Returns 0 or -1. */
int notify_sign_header(const void *key, size_t key_len, uint64_t t, const void *body, size_t body_len, char *out,
                       size_t outlen);
/* SHA-256 of s as 32 bytes (the durable key of a target: its URL). Returns 0 or -1. */
int notify_key(const char *s, size_t len, unsigned char out[32]);

#endif
