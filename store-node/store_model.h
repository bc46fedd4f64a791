/* store_model.h -- the presence model: what a user's record says, computed from what the user did.
 *
 * A user has a preferred status (set by hand, REST PUT without a session), a message with its own
 * optional expiry, and sessions: one per connected device or client instance, each with its own
 * status and its holder (a REST client by its own ttl, or a gateway connection under that
 * gateway's lease). The effective status every reader sees (REALTIME.md, "The model"):
 *
 *   1. the preferred status, while it has not expired;
 *   2. else the highest of the live sessions' statuses, busy > online > away;
 *   3. else offline.
 *
 * A preferred `offline` while sessions are live is invisible mode: everyone but the user and
 * admins sees the record as if the user had set offline with no device connected (no session
 * count, no fresher last_seen, no event for what only the user's own view shows).
 *
 * This file is the model alone: pure functions over a loaded user (store_user_t), no LMDB, no
 * clock, no I/O, so every rule is unit-tested directly (tests/unit/check_model.c). store_write.c
 * loads a user, applies these functions in the write transaction, and stores what they decided.
 * Thread-safety: none needed (caller-owned data).
 */
#ifndef PRESENCE_STORE_MODEL_H
#define PRESENCE_STORE_MODEL_H

#include "proto.h"

#include <stdbool.h>
#include <stdint.h>

#define STORE_SESSIONS_CAP 256 /* sessions one user's record can load (rows beyond are not loaded) */
#define STORE_SESSIONS_MAX (STORE_SESSIONS_CAP - 1) /* MAX_SESSIONS is at most this: one slot stays free
                                                       for the session an open adds while the one it
                                                       evicts still awaits its deletion */

enum sm_ses_state { SM_SES_KEEP = 0, SM_SES_PUT = 1, SM_SES_DEL = 2 };

/* A loaded user: the stored record and the user's sessions as the transaction sees them, and the
 * model's working state. The store fills rec, found, nses, ses[] and ses_old_lease[], then calls
 * sm_user_loaded(); the sm_* functions change rec and the sessions (marking ses_state); the store
 * writes back what ses_state says. */
typedef struct store_user {
    proto_record_t rec; /* the stored record; zeroed (except user_id) when !found */
    proto_record_t old; /* the record as loaded (sm_user_loaded copies it) */
    proto_record_t old_view; /* ... as readers see it now (past its expiry: offline, no message) */
    bool found;
    uint32_t nses;
    proto_session_t ses[STORE_SESSIONS_CAP];
    uint8_t ses_state[STORE_SESSIONS_CAP];      /* enum sm_ses_state: what the commit must do */
    uint64_t ses_old_lease[STORE_SESSIONS_CAP]; /* the lease a session was indexed under when loaded */
    /* working state (sm_user_loaded) */
    int pref_status;      /* the preferred status in force, -1 = none */
    uint64_t pref_until;  /* ... until then */
    uint32_t pref_ttl;    /* ... set with this ttl */
    uint8_t pref_node_len;
    char pref_node[PROTO_NODE_ID_MAX + 1]; /* ... through this node */
    int old_status;       /* the effective status as loaded */
    bool pref_written;    /* a preferred write or message change: the public view moves */
    bool force_set;       /* a preferred write (REST PUT): an event even when nothing else changed */
    bool force_touch;     /* a heartbeat without a session: at least a TOUCH (a new version) */
    uint64_t event_us;    /* when a status change happened (an expiry: its deadline) */
} store_user_t;

/* Derive the working state from the loaded record (call once after loading). */
void sm_user_loaded(store_user_t *u, uint64_t now);

typedef struct sm_config {
    uint32_t max_sessions;  /* MAX_SESSIONS: opening one more ends the one that expires first */
    uint64_t retention_us;  /* offline records are purged this long after last_seen */
    uint32_t default_ttl_s; /* PRESENCE_TTL */
} sm_config_t;

/* Why a write was refused (the write changes nothing). */
enum sm_result {
    SM_OK = 0,
    SM_NO_SESSION = 1, /* the session does not exist (or is held by another connection) */
    SM_NO_ROOM = 2,    /* no slot for one more session: the user has STORE_SESSIONS_CAP stored (an older
                          build's MAX_SESSIONS=256); nothing is written */
};

/* Start a user that has no record: user_id set, everything else empty. */
void sm_user_init(store_user_t *u, const char *uid, size_t len);

/* PUT without a session: with PROTO_CMD_F_CLEAR, the preferred status ends (message untouched);
 * otherwise the preferred status for ttl seconds (offline included: appear offline),
 * and the message (every PUT without a session sets it, as before sessions existed; absent =
 * cleared), expiring after message_ttl_s when that is given. */
void sm_put_preferred(store_user_t *u, const proto_record_t *in, uint64_t now);

/* PUT with a session (REST or a connection's `set`): open (or update) session in->session_id with
 * in->status; status offline ends it. A connection (in->lease_id) may only change the session it
 * holds, unless PROTO_CMD_F_OPEN (open, or take over on a resume). The message, when given, is the
 * user's. Returns enum sm_result. *evicted is set when opening ended the session that would have
 * expired first (MAX_SESSIONS). */
int sm_put_session(store_user_t *u, const proto_record_t *in, uint64_t now, const sm_config_t *cfg, bool *evicted);

/* TOUCH (heartbeat). Without a session: as before sessions existed -- the preferred status is
 * refreshed while it lasts; an offline or expired user becomes online; a user the sessions keep
 * present only has last_seen refreshed. With a session: refresh it, or open it online. */
int sm_touch(store_user_t *u, const proto_record_t *in, uint64_t now, const sm_config_t *cfg, bool *evicted);

/* End the sessions held by lease `lease_id` (all of them when conn_id is 0, else only the one of
 * that connection, named by sid). Returns how many ended. */
uint32_t sm_end_lease_sessions(store_user_t *u, uint64_t lease_id, uint64_t conn_id, const char *sid, size_t sid_len,
                               uint64_t now);

/* Everything time decides, as of `now`: REST sessions past their expiry end, a preferred status
 * and a message past theirs are cleared, sessions held by a lease get their horizon moved on
 * (`lease_live(lease_id, ctx)` says whether a lease still lives), and the effective fields are
 * computed: status, source, sessions, expires_at, node/ttl of what sets the status, due_us. An
 * effective status that falls to offline by time (not by an explicit offline) clears the message.
 * Returns true when the record should be purged (offline, no session, past retention). */
bool sm_recompute(store_user_t *u, uint64_t now, const sm_config_t *cfg, bool (*lease_live)(uint64_t, void *),
                  void *ctx);

/* How a new record differs from the old one for readers:
 *   SM_CH_NONE   nothing a reader can see (only internal fields): rewrite, no new version;
 *   SM_CH_TOUCH  only liveness fields (last_seen, expires_at, ttl, node, expiries): a TOUCH change;
 *   SM_CH_SET    what a reader sees changed (status, message, sessions, source): an event.
 * old may be NULL (a new record). */
enum sm_change { SM_CH_NONE = 0, SM_CH_TOUCH = 1, SM_CH_SET = 2 };
int sm_classify(const proto_record_t *old, const proto_record_t *nu);

/* Stamp a new version on `nu` (classified against old): version, and the fields everyone but the
 * user sees -- pub_version moves only when the public view changed, vis_last_seen is frozen while
 * invisible unless `public_write` (a preferred write or message change). updated_at moves when
 * status or message changed (to `event_us`). */
void sm_stamp(const proto_record_t *old, proto_record_t *nu, uint64_t version, uint64_t event_us, bool public_write);

/* The record as everyone but the user and admins see it (invisible mode applied). */
void sm_public_view(const proto_record_t *r, proto_record_t *out);

/* busy > online > away > offline */
int sm_status_rank(int status);

#endif
