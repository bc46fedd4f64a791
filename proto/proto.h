/* proto.h -- the msgpack wire format shared by every process (see proto/PROTOCOL.md).
 *
 * Every message is one ZeroMQ frame holding one msgpack array whose first three elements are
 * [protocol version, message type, request id]. Commands travel DEALER -> ROUTER (gateway ->
 * cache-node -> store-node or sync relay) and are answered with a reply carrying the same request
 * id. The change stream (store-node PUB -> cache-nodes and relays) sends two frames: a one-byte
 * topic ("C" changes, "H" heartbeat) and the message.
 *
 * Decoding is strict: the frame size, every container count (checked against the bytes left
 * before msgpack-c allocates anything), the nesting depth, every type, every string length and
 * every enum value are validated; a malformed frame yields PROTO_MALFORMED with a reason, never a
 * crash. Strings in a decoded message that are not copied into records (keys, error text) point
 * into the frame: keep the frame alive while using them.
 *
 * No I/O, no logging, no global state: thread-safe.
 */
#ifndef PRESENCE_PROTO_H
#define PRESENCE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_FRAME_MAX (16u << 20) /* hard cap on any frame we decode */
#define PROTO_ITEMS_MAX 20000u      /* keys / records / changes in one message */
#define PROTO_ERRMSG_MAX 256u
#define PROTO_STATS_MAX 512u        /* name/value pairs in a stats reply */
#define PROTO_STAT_NAME_MAX 128u

#define PROTO_TOPIC_CHANGES 'C'
#define PROTO_TOPIC_HUGZ 'H'

enum proto_type {
    /* commands */
    PROTO_GET = 1,     /* [V,T,rid, key]                                   -> REPLY */
    PROTO_MGET = 2,    /* [V,T,rid, [key...]]                              -> REPLY (found only) */
    PROTO_PUT = 3,     /* [V,T,rid, [[uid,status,msg,ttl,node]...]]        -> REPLY (stored records) */
    PROTO_TOUCH = 4,   /* [V,T,rid, [[uid,ttl,node]...]]  ttl 0 = keep      -> REPLY (records) */
    PROTO_DEL = 5,     /* [V,T,rid, key]                                   -> REPLY (as_of = tombstone seq) */
    PROTO_STATS = 6,   /* [V,T,rid]                                        -> STATS_REPLY */
    PROTO_CATCHUP = 7, /* [V,T,rid, epoch, after_seq, max_items, flags, snap_start, after_key] -> CATCHUP_REPLY */
    PROTO_PING = 8,    /* [V,T,rid]                                        -> PONG */
    PROTO_APPLY = 9,   /* [V,T,rid, [record...]]  cache fill after a write -> REPLY */
    PROTO_BATCH = 10,  /* [V,T,0, [bin...]] several whole messages in one frame (either way);
                          each part is answered as if it had come alone */
    PROTO_LEASE = 11,    /* [V,T,rid, lease_id, op, ttl_ms, node]            -> REPLY (F_LAPSED) */
    PROTO_SESSIONS = 12, /* [V,T,rid, key]  a user's live sessions           -> SESSIONS_REPLY */
    /* replies */
    PROTO_REPLY = 32,         /* [V,T,rid, status, as_of, [record...], errmsg, flags (, [[index,as_of]...])] */
    PROTO_CATCHUP_REPLY = 33, /* [V,T,rid, status, epoch, mode, through_seq, done, [change...], cursor] */
    PROTO_PONG = 34,          /* [V,T,rid, status, [[name,value]...]] */
    PROTO_STATS_REPLY = 35,   /* [V,T,rid, status, [[name,value]...]] */
    PROTO_SESSIONS_REPLY = 36, /* [V,T,rid, status, [session...]] */
    /* change stream */
    PROTO_CHANGES = 64, /* [V,T,0, epoch, first_seq, last_seq, [change...]] */
    PROTO_HUGZ = 65,    /* [V,T,0, epoch, seq, now_us (, flags)] */
};

/* Reply status codes (PROTO_REPLY and friends). */
enum proto_status {
    PROTO_OK = 0,
    PROTO_NOTFOUND = 1,  /* GET/DEL of an unknown key */
    PROTO_EBADREQ = 2,   /* malformed or invalid command */
    PROTO_EOVERLOAD = 3, /* a bounded queue is full: retry later */
    PROTO_EUNAVAIL = 4,  /* the store (or the link to the center) is unreachable */
    PROTO_EINTERNAL = 5, /* storage error */
    PROTO_ETIMEOUT = 6,  /* an upstream hop missed its deadline */
    PROTO_ENOTLEADER = 7, /* a replicated store-node that does not lead: REPLY as_of = the leader's member
                             number (1..N, 0 = none known yet); the command was not applied */
    PROTO_STATUS_MAX_ = 7
};

/* REPLY flags */
#define PROTO_REPLY_F_STALE 0x1u  /* served from a cache whose change stream is not live (center unreachable) */
#define PROTO_REPLY_F_LAPSED 0x2u /* LEASE: the lease was unknown or had lapsed: its sessions were ended */

/* A key of an MGET that the REPLY does not list (not found) and that is known absent through a
 * later sequence than the reply's as_of: a cache-node read it through to the store, whose
 * sequence was ahead of the other keys' (PROTOCOL.md, "REPLY absent"). */
typedef struct proto_absent {
    uint32_t index; /* the key's position in the MGET, from 0 */
    uint64_t as_of; /* absent through this sequence; > the reply's as_of */
} proto_absent_t;

/* LEASE ops */
enum proto_lease_op { PROTO_LEASE_REFRESH = 0, PROTO_LEASE_END = 1 };

/* HUGZ flags */
#define PROTO_HUGZ_F_UPSTREAM_DOWN 0x1u /* a relay's link to the center is down: its stream is intact
                                           but may be behind the center */

/* Presence statuses, in wire order. */
enum presence_status { PRESENCE_ONLINE = 0, PRESENCE_AWAY = 1, PRESENCE_BUSY = 2, PRESENCE_OFFLINE = 3 };
#define PRESENCE_STATUS_COUNT 4

/* Why a record's status is what it is (REALTIME.md): the preferred status while it lasts, else the
 * highest of the live sessions' statuses (busy > online > away), else offline. */
enum presence_source { PRESENCE_SRC_NONE = 0, PRESENCE_SRC_PREFERRED = 1, PRESENCE_SRC_SESSION = 2 };
#define PRESENCE_SOURCE_COUNT 3

/* Change kinds on the stream and in catch-up replies. */
enum proto_change_kind {
    PROTO_CH_SET = 1,   /* payload: a whole record */
    PROTO_CH_DEL = 2,   /* payload: user id (erased or purged) */
    PROTO_CH_TOUCH = 3, /* payload: [uid, last_seen, expires_at, node_id, ttl] (heartbeat, status unchanged) */
};

/* Catch-up reply modes. */
enum proto_catchup_mode {
    PROTO_CATCHUP_INCREMENTAL = 0,   /* the changes after the requested sequence, compacted, in order */
    PROTO_CATCHUP_SNAPSHOT = 1,      /* the requested sequence cannot be served (another epoch, ahead
                                        of the store, or older than the changelog): drop everything;
                                        live records follow in key order unless NO_DATA was asked */
    PROTO_CATCHUP_SNAPSHOT_CONT = 2, /* more records of a snapshot (request flag SNAP_CONT) */
};
#define PROTO_CATCHUP_F_NO_DATA 0x1u   /* snapshot: send no records, just the sequence to continue from */
#define PROTO_CATCHUP_F_SNAP_CONT 0x2u /* continue a snapshot after `after_key`; snap_start is its base */

#define PROTO_USER_ID_MAX 128
#define PROTO_NODE_ID_MAX 64
#define PROTO_MESSAGE_MAX 256
#define PROTO_TTL_MAX 604800u
#define PROTO_SESSION_ID_MAX 64 /* 1-64 bytes of [A-Za-z0-9._-] */
#define PROTO_DEVICE_MAX 64     /* free label: UTF-8 text without control characters */
#define PROTO_SESSIONS_MAX 1024 /* sessions in one SESSIONS_REPLY (MAX_SESSIONS is at most this) */
#define PROTO_RECORD_FIELDS 17
#define PROTO_TIME_MAX (1ull << 62)    /* no timestamp (us) is later than this (year 148,000) */
#define PROTO_VERSION_MAX (1ull << 62) /* versions are sequences: far below this */
#define PROTO_LEASE_TTL_MAX_MS 600000u
#define PROTO_CMD_ID_LEN 16   /* a write's command id: the sender's random instance id + a counter */
#define PROTO_MEMBERS_MAX 7   /* members of a replicated center (STORE_REPLICAS) */

/* Record flags (proto_record_t.rflags). */
#define PROTO_REC_F_RT 0x1u     /* the user has used sessions or message_ttl: render the real-time fields */
#define PROTO_REC_F_PUB_RT 0x2u /* ... in the view everyone but the user sees (frozen while invisible) */
#define PROTO_REC_F_MASK 0x3u

/* Write-command flags (proto_record_t.cflags, PUT and TOUCH entries; never stored). */
#define PROTO_CMD_F_MSG 0x1u   /* PUT: the message is given (without it a session's PUT keeps the user's) */
#define PROTO_CMD_F_OPEN 0x2u  /* PUT with a lease: open the session, or take it over (a resume) */
#define PROTO_CMD_F_IDLE 0x4u  /* PUT with a session: an automatic status (idle away / back), not the client's */
#define PROTO_CMD_F_CLEAR 0x8u /* PUT without a session: end the preferred status (status ignored) */
#define PROTO_CMD_MASK 0xfu

/* A presence record: the user's effective presence as the store computed it. Strings are
 * NUL-terminated copies (fixed buffers: decoding never mallocs per record). Times are
 * microseconds since the Unix epoch, UTC. Every numeric field comes before user_id, so
 * memset(r, 0, offsetof(proto_record_t, user_id)) clears them all (string lengths included).
 *
 * The same struct carries the inputs of write commands (PUT, TOUCH): the fields after "command
 * inputs" are never stored and mean nothing in a stored record. */
typedef struct proto_record {
    uint64_t version;
    uint64_t last_seen_us, updated_at_us, expires_at_us;
    /* sessions and preferred status (REALTIME.md) */
    uint64_t preferred_until_us;    /* the preferred status (= status) lasts until then; 0 = none in force */
    uint64_t message_expires_at_us; /* the message is cleared then; 0 = it does not expire */
    uint64_t pub_version;           /* the version everyone but the user sees (< version only while invisible) */
    uint64_t vis_last_seen_us;      /* the last_seen everyone but the user sees (frozen while invisible) */
    uint64_t due_us;                /* store-internal: when the store looks at this user next; 0 = legacy rule */
    uint16_t sessions;              /* live sessions */
    uint8_t source;                 /* enum presence_source */
    uint8_t rflags;                 /* PROTO_REC_F_* */
    uint32_t ttl_s;
    uint8_t status; /* enum presence_status */
    uint8_t uid_len, node_len;
    uint16_t msg_len;
    /* command inputs (PUT, TOUCH entries) */
    uint8_t cflags;         /* PROTO_CMD_F_* */
    uint8_t sid_len, device_len;
    uint32_t message_ttl_s; /* PUT: the message expires this long after the write; 0 = never */
    uint64_t lease_id;      /* the session is held by this gateway lease; 0 = by its own ttl (REST) */
    uint64_t conn_id;       /* ... by this connection of that gateway (resume and grace checks) */
    char user_id[PROTO_USER_ID_MAX + 1];
    char node_id[PROTO_NODE_ID_MAX + 1];
    char message[PROTO_MESSAGE_MAX + 1];
    char session_id[PROTO_SESSION_ID_MAX + 1]; /* command input: "" = not about a session */
    char device[PROTO_DEVICE_MAX + 1];         /* command input */
} proto_record_t;

/* One live session of a user (SESSIONS_REPLY; the store keeps them beside the record). */
typedef struct proto_session {
    uint64_t connected_at_us, last_seen_us, expires_at_us;
    uint64_t lease_id, conn_id; /* 0, 0: a REST session held by its own ttl */
    uint32_t ttl_s;
    uint8_t status; /* online, away or busy */
    uint8_t manual_status; /* the status the client chose (an idle session shows away) */
    uint8_t sid_len, device_len, node_len;
    char session_id[PROTO_SESSION_ID_MAX + 1];
    char device[PROTO_DEVICE_MAX + 1];
    char node_id[PROTO_NODE_ID_MAX + 1];
} proto_session_t;

/* A change (stream and catch-up). For DEL only rec.user_id/uid_len are set; for TOUCH user_id,
 * last_seen_us, expires_at_us, node_id, ttl_s, preferred_until_us, message_expires_at_us,
 * vis_last_seen_us and pub_version are set (the fields a change no reader sees as an event can
 * move). rec.version is always the change's seq. */
typedef struct proto_change {
    uint8_t kind; /* enum proto_change_kind */
    proto_record_t rec;
} proto_change_t;

typedef struct proto_str {
    const char *p; /* borrowed: points into the frame */
    uint32_t len;
} proto_str_t;

typedef struct proto_stat {
    proto_str_t name; /* borrowed */
    uint64_t value;
} proto_stat_t;

/* A decoded message. Which fields are meaningful depends on `type` (see enum proto_type):
 *   GET, DEL, SESSIONS: key
 *   LEASE:              lease_id, op, ttl_ms, node
 *   SESSIONS_REPLY:     status, sessions[n]
 *   MGET:               keys[n]
 *   PUT:                recs[n] with user_id, status, message, ttl_s, node_id
 *   TOUCH:              recs[n] with user_id, ttl_s (0 = keep), node_id
 *   APPLY:              recs[n] (whole records)
 *   CATCHUP:            epoch, seq (after_seq), max_items, flags, first_seq (snap_start), key (after_key)
 *   REPLY:              status, seq (as_of), recs[n], key (error text; may be empty), flags,
 *                       absent[nabsent] (optional trailing field; nabsent 0 when it is not there)
 *   CATCHUP_REPLY:      status, epoch, mode, seq (through_seq), done, changes[n], key (cursor)
 *   PONG, STATS_REPLY:  status, stats[n]
 *   CHANGES:            epoch, first_seq, seq (last_seq), changes[n]
 *   HUGZ:               epoch, seq, now_us, flags (0 when the optional field is absent), member, term
 *   PUT, TOUCH, DEL also: deadline_us, has_cmd_id + cmd_id (optional trailing fields)
 *   BATCH:              parts[n] (each a whole encoded message, borrowed from the frame)
 * Allocated arrays are owned by the message: release with proto_msg_fini(). */
typedef struct proto_msg {
    uint8_t type;
    uint64_t rid;
    uint8_t status;
    uint8_t mode;
    bool done;
    uint32_t flags;
    uint64_t epoch, seq, first_seq, now_us, max_items;
    uint64_t deadline_us; /* PUT, TOUCH, DEL: the sender's deadline (wall clock, us); 0 = none */
    bool has_cmd_id;      /* PUT, TOUCH, DEL: a command id follows (a retry carries the same one) */
    uint8_t cmd_id[PROTO_CMD_ID_LEN];
    uint32_t member;      /* HUGZ: the publishing member of a replicated center (1..N; 0 = not said) */
    uint64_t term;        /* HUGZ: that member's raft term (0 = not said) */
    proto_str_t key;
    uint32_t n;
    proto_str_t *keys;
    proto_record_t *recs;
    proto_change_t *changes;
    proto_stat_t *stats;
    proto_str_t *parts;
    proto_session_t *sessions; /* SESSIONS_REPLY */
    proto_absent_t *absent;    /* REPLY: in increasing index order; NULL when nabsent is 0 */
    uint32_t nabsent;
    uint64_t lease_id;         /* LEASE */
    uint32_t ttl_ms;           /* LEASE */
    uint8_t op;                /* LEASE: enum proto_lease_op */
    char node[PROTO_NODE_ID_MAX + 1]; /* LEASE */
    char err[96]; /* why decoding failed */
} proto_msg_t;

enum proto_dec_result { PROTO_DEC_OK = 0, PROTO_MALFORMED = -1, PROTO_EVERSION = -2 };

/* Decode one frame into *m (which is initialised here; call proto_msg_fini even on failure).
 * Returns PROTO_DEC_OK, PROTO_MALFORMED (m->err says why) or PROTO_EVERSION (another protocol
 * version; m->rid and m->type are filled when readable, so the caller may answer with an error). */
int proto_decode(const void *data, size_t len, proto_msg_t *m);
void proto_msg_fini(proto_msg_t *m);

/* Reads only the [version, type, rid] header of a frame without allocating. Returns 0 or -1. */
int proto_peek_header(const void *data, size_t len, uint8_t *type, uint64_t *rid);

/* ---- encoding ------------------------------------------------------------------------------
 * A proto_buf_t is a growable byte buffer. Encoders append one whole message. The buffer may be
 * reused (proto_buf_reset) or handed to ZeroMQ without a copy (proto_buf_steal + free()). */
typedef struct proto_buf {
    char *data;
    size_t len, cap;
} proto_buf_t;

void proto_buf_init(proto_buf_t *b);
void proto_buf_reset(proto_buf_t *b);
void proto_buf_fini(proto_buf_t *b);
/* Take ownership of the bytes (free with free()); the buffer becomes empty. */
char *proto_buf_steal(proto_buf_t *b, size_t *len);
void proto_buf_append(proto_buf_t *b, const void *p, size_t n);

/* Copy a message into out (reset first) with its request id replaced; the rest of the bytes are
 * kept as they are (a relay forwards frames this way). Returns 0, or -1 if the header is not
 * one we emit. */
int proto_rewrite_rid(const void *data, size_t len, uint64_t rid, proto_buf_t *out);

/* A streaming encoder for messages whose item count is known up front. */
typedef struct proto_enc {
    proto_buf_t *b;
} proto_enc_t;

void proto_enc_init(proto_enc_t *e, proto_buf_t *b);
/* Header: array of `nfields` total elements, then V, type, rid. */
void proto_enc_header(proto_enc_t *e, uint32_t nfields, uint8_t type, uint64_t rid);
void proto_enc_array(proto_enc_t *e, uint32_t n);
void proto_enc_u64(proto_enc_t *e, uint64_t v);
void proto_enc_bool(proto_enc_t *e, bool v);
void proto_enc_str(proto_enc_t *e, const char *s, size_t len);
void proto_enc_record(proto_enc_t *e, const proto_record_t *r);
void proto_enc_change(proto_enc_t *e, const proto_change_t *c);
/* Append already-encoded msgpack bytes (e.g. a cached record) as one element. */
void proto_enc_raw(proto_enc_t *e, const void *p, size_t n);

/* Whole-message helpers. */
void proto_enc_get(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen); /* GET or DEL */
void proto_enc_keys(proto_buf_t *b, uint64_t rid, const proto_str_t *keys, uint32_t n);    /* MGET */
/* PUT / TOUCH / APPLY: the fields each type carries are taken from recs. */
void proto_enc_records_cmd(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n);
/* The same for DEL and PUT / TOUCH with the sender's deadline (wall-clock us; 0 = none, which
 * encodes exactly as the functions above): a receiver that has not passed the command on by then
 * answers ETIMEOUT instead (PROTOCOL.md). */
void proto_enc_get_dl(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen, uint64_t deadline_us);
void proto_enc_records_cmd_dl(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n,
                              uint64_t deadline_us);
/* The same with a command id (PROTO_CMD_ID_LEN bytes, or NULL for none): a replicated store applies
 * a command id once, and answers a retry with what the first attempt did (PROTOCOL.md, command
 * ids). With an id the deadline field is always present (0 = none). */
void proto_enc_get_id(proto_buf_t *b, uint8_t type, uint64_t rid, const char *key, size_t klen, uint64_t deadline_us,
                      const uint8_t *cmd_id);
void proto_enc_records_cmd_id(proto_buf_t *b, uint8_t type, uint64_t rid, const proto_record_t *recs, uint32_t n,
                              uint64_t deadline_us, const uint8_t *cmd_id);
void proto_enc_simple(proto_buf_t *b, uint8_t type, uint64_t rid);                          /* STATS, PING */
void proto_enc_catchup(proto_buf_t *b, uint64_t rid, uint64_t epoch, uint64_t after_seq, uint64_t max_items,
                       uint32_t flags, uint64_t snap_start, const char *after_key, size_t klen);
/* CATCHUP_REPLY: header and fixed fields, then the caller appends n changes (proto_enc_change),
 * then ends it with the snapshot cursor (empty when there is none). */
void proto_enc_catchup_reply_begin(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t epoch, uint8_t mode,
                                   uint64_t through_seq, bool done, uint32_t n);
void proto_enc_catchup_reply_end(proto_enc_t *e, const char *cursor, size_t len);
/* CHANGES: header and range, then the caller appends n changes. */
void proto_enc_changes_begin(proto_enc_t *e, uint64_t epoch, uint64_t first_seq, uint64_t last_seq, uint32_t n);
/* REPLY with n records. err may be NULL. */
void proto_enc_reply(proto_buf_t *b, uint64_t rid, uint8_t status, uint64_t as_of, const proto_record_t *recs,
                     uint32_t n, const char *err, uint32_t flags);
/* REPLY whose records are raw msgpack record encodings (from the cache). */
void proto_enc_reply_raw_begin(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t as_of, uint32_t n);
void proto_enc_reply_raw_end(proto_enc_t *e, const char *err, uint32_t flags);
/* The same with the absent list of an OK answer to an MGET (PROTOCOL.md, "REPLY absent"): pass the
 * same nabsent to both; nabsent 0 encodes exactly as the functions above. The caller keeps what the
 * decoder checks: indexes strictly increasing (< PROTO_ITEMS_MAX), each as_of above the reply's,
 * nabsent + n <= PROTO_ITEMS_MAX. */
void proto_enc_reply_raw_begin_abs(proto_enc_t *e, uint64_t rid, uint8_t status, uint64_t as_of, uint32_t n,
                                   uint32_t nabsent);
void proto_enc_reply_raw_end_abs(proto_enc_t *e, const char *err, uint32_t flags, const proto_absent_t *absent,
                                 uint32_t nabsent);
void proto_enc_reply_abs(proto_buf_t *b, uint64_t rid, uint8_t status, uint64_t as_of, const proto_record_t *recs,
                         uint32_t n, const char *err, uint32_t flags, const proto_absent_t *absent, uint32_t nabsent);
/* A decoded REPLY to an MGET: the sequence through which the answer for the key at `index` is
 * current -- its absent entry's as_of when it has one (the reply does not list that key), else the
 * reply's as_of (m->seq). O(log nabsent); thread-safe. */
uint64_t proto_reply_key_as_of(const proto_msg_t *m, uint32_t index);
/* PONG / STATS_REPLY. */
void proto_enc_stats(proto_buf_t *b, uint8_t type, uint64_t rid, uint8_t status, const proto_stat_t *stats,
                     uint32_t n);
void proto_enc_hugz(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us);
/* LEASE: refresh (or create) gateway lease `lease_id` for ttl_ms, or end it (its sessions end now).
 * ttl_ms is 1..PROTO_LEASE_TTL_MAX_MS in both (an END ignores it); lease_id is never 0. */
void proto_enc_lease(proto_buf_t *b, uint64_t rid, uint64_t lease_id, uint8_t op, uint32_t ttl_ms, const char *node,
                     size_t node_len);
/* SESSIONS_REPLY with n sessions. */
void proto_enc_sessions_reply(proto_buf_t *b, uint64_t rid, uint8_t status, const proto_session_t *s, uint32_t n);
/* One session's encoding (the store keeps it in LMDB) and its decoding. */
void proto_session_encode(proto_buf_t *b, const proto_session_t *s);
int proto_session_decode(const void *data, size_t len, proto_session_t *s);
void proto_enc_hugz_flags(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us, uint32_t flags);
/* HUGZ of a member of a replicated center: flags, then the publishing member's number (1..N) and
 * its term, so a subscriber connected to every member learns which one leads (the highest term
 * wins over a cut-off leader that has not stepped down yet). */
void proto_enc_hugz_member(proto_buf_t *b, uint64_t epoch, uint64_t seq, uint64_t now_us, uint32_t flags,
                           uint32_t member, uint64_t term);

/* Batching: collect whole encoded messages, then emit one BATCH frame (or the single message
 * itself when there is only one). Senders flush a batch early once it holds PROTO_BATCH_SOFT_MAX
 * bytes, so a frame stays far below the 16 MiB every socket accepts (ZU_MAXMSGSIZE): one loop
 * turn of large multi-gets would otherwise make a frame the peer refuses (it disconnects). */
#define PROTO_BATCH_SOFT_MAX (1u << 20)
typedef struct proto_batch {
    proto_buf_t data;  /* the messages back to back */
    uint32_t *ends;    /* end offset of each message */
    uint32_t n, cap;
} proto_batch_t;

void proto_batch_init(proto_batch_t *bt);
void proto_batch_fini(proto_batch_t *bt);
void proto_batch_reset(proto_batch_t *bt);
void proto_batch_add(proto_batch_t *bt, const void *msg, size_t len);
/* True once the batch must be sent before another message is added: it holds PROTO_BATCH_SOFT_MAX
 * bytes, or PROTO_ITEMS_MAX messages (the most a BATCH may carry: a receiver refuses more, and a
 * turn of small GETs reaches that count long before the byte bound). Every sender checks it after
 * each add. */
bool proto_batch_full(const proto_batch_t *bt);
/* Encode the collected messages into out (reset first): one BATCH, or the lone message. */
void proto_batch_encode(const proto_batch_t *bt, proto_buf_t *out);

/* The encoded record alone (what the store keeps in LMDB and the cache keeps in memory). */
void proto_record_encode(proto_buf_t *b, const proto_record_t *r);
/* Decode one record encoding (a whole buffer). Returns 0 or -1. */
int proto_record_decode(const void *data, size_t len, proto_record_t *r);

/* Fill the string fields of a record (copies; lengths must be within the limits). */
void proto_record_set_uid(proto_record_t *r, const char *s, size_t len);
void proto_record_set_node(proto_record_t *r, const char *s, size_t len);
void proto_record_set_msg(proto_record_t *r, const char *s, size_t len);
void proto_record_set_sid(proto_record_t *r, const char *s, size_t len);
void proto_record_set_device(proto_record_t *r, const char *s, size_t len);

/* Session ids: 1-64 bytes of [A-Za-z0-9._-]. Device labels: at most 64 bytes of UTF-8 text without
 * control characters (empty allowed). */
bool proto_valid_session_id(const char *s, size_t len);
bool proto_valid_device(const char *s, size_t len);
/* A record is "invisible" to others: preferred offline while sessions are live. */
bool proto_record_invisible(const proto_record_t *r);
/* The record as everyone but the user (and admins) sees it: while invisible, no session count, the
 * last_seen and version of before, and the 2.0 shape if that is what they saw before. */
void proto_record_public(const proto_record_t *r, proto_record_t *out);
const char *proto_source_name(int source); /* "none", "preferred", "session" */

const char *proto_status_name(int status);        /* "ok", "notfound", ... */
const char *proto_presence_name(int presence);    /* "online", ... or NULL */
int proto_presence_parse(const char *s, size_t len); /* enum presence_status, or -1 */
const char *proto_type_name(int type);

#endif
