/* gw_wsmsg.h -- the JSON messages of the WebSocket endpoint (REALTIME.md, "WebSocket: connect =
 * online"), without I/O: parse one client text message into a tagged struct, and render the
 * server's messages.
 *
 *   client -> server   {"type":"set", "status"?, "message"?, "message_ttl"?}
 *                      {"type":"activity"}
 *                      {"type":"watch", "users":[...], "since"?}
 *                      {"type":"unwatch", "users":[...]}
 *                      {"type":"ping"}
 *                      {"type":"bye"}      (sign-out: the session ends without the grace)
 *   server -> client   {"type":"welcome","session_id":..,"user_id":..,"record":{..},
 *                       "ping_interval_ms":N,"grace_ms":N}
 *                      {"type":"presence","record":{..}}
 *                      {"type":"pong"}
 *                      {"type":"error","error":".."}
 *
 * Parsing bounds everything before allocating: the text by the configured maximum, the user list
 * by the configured count (after duplicates collapse), each id by the id rules. Fields a type does
 * not define are ignored (newer clients keep working); duplicate keys make the JSON invalid.
 * Every refusal comes with a text naming the rule, sent back to the client in an `error` message.
 *
 * Threading: no shared state; reentrant.
 */
#ifndef PRESENCE_GW_WSMSG_H
#define PRESENCE_GW_WSMSG_H

#include "gw_lib.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_WSMSG_MAX_USERS_DEFAULT 1000u /* REALTIME.md: watch takes at most 1000 users */
#define GW_WSMSG_VERSION_MAX ((1ULL << 62) - 1)

/* Error texts (the short code first, then the rule). Those with a %-conversion are formats. */
#define GW_WSMSG_TYPES "set, activity, watch, unwatch, ping, bye"
#define GW_WSMSG_ERR_JSON "invalid JSON: a message is one JSON object"
#define GW_WSMSG_ERR_TOO_LONG "message too long: at most %u bytes"
#define GW_WSMSG_ERR_TYPE_MISSING "missing type: a message has a type, one of " GW_WSMSG_TYPES
#define GW_WSMSG_ERR_TYPE_INVALID "invalid type: must be a string, one of " GW_WSMSG_TYPES
#define GW_WSMSG_ERR_TYPE_UNKNOWN "unknown type '%s' (" GW_WSMSG_TYPES ")"
#define GW_WSMSG_ERR_SET_EMPTY "invalid set: give at least one of status, message, message_ttl"
#define GW_WSMSG_ERR_STATUS "invalid status: must be one of online, away, busy"
#define GW_WSMSG_ERR_MESSAGE_TYPE "invalid message: must be a string, or null to clear it"
#define GW_WSMSG_ERR_MESSAGE_LEN "invalid message: message is longer than 256 bytes"
#define GW_WSMSG_ERR_MESSAGE_TEXT "invalid message: must be UTF-8 text without control characters"
#define GW_WSMSG_ERR_TTL "invalid message_ttl: must be an integer from 1 to 604800 (seconds)"
#define GW_WSMSG_ERR_TTL_ALONE "invalid message_ttl: it sets the expiry of a non-empty message given in the same set"
#define GW_WSMSG_ERR_USERS "invalid users: must be a non-empty array of user ids"
#define GW_WSMSG_ERR_USER_TYPE "invalid user_id in users[%zu]: must be a string"
#define GW_WSMSG_ERR_USER_ID "invalid user_id: %.*s (" GW_USER_ID_RULE ")"
#define GW_WSMSG_ERR_TOO_MANY "too many users (at most %u)"
#define GW_WSMSG_ERR_SINCE "invalid since: must be a version, an integer from 0 to 2^62-1"
#define GW_WSMSG_ERR_LEN 400 /* room for any of the texts above, with a quoted id or type */

enum gw_wsmsg_type {
    GW_WSMSG_SET = 1,
    GW_WSMSG_ACTIVITY,
    GW_WSMSG_WATCH,
    GW_WSMSG_UNWATCH,
    GW_WSMSG_PING,
    GW_WSMSG_BYE, /* the last: the parser's loop ends here */
};

/* What a set does to the user's message. */
enum gw_wsmsg_message_op {
    GW_WSMSG_MESSAGE_KEEP = 0, /* "message" absent: unchanged */
    GW_WSMSG_MESSAGE_SET,      /* a non-empty string: message/message_len */
    GW_WSMSG_MESSAGE_CLEAR,    /* null or "": clear it */
};

typedef struct gw_wsmsg_limits {
    uint32_t max_len;   /* longest text accepted, in bytes (the frame maximum); 0 = GW_WSFRAME_MAX_DEFAULT */
    uint32_t max_users; /* most distinct users in one watch/unwatch; 0 = GW_WSMSG_MAX_USERS_DEFAULT */
} gw_wsmsg_limits_t;

/* A parsed client message. Which fields mean something depends on `type`. */
typedef struct gw_wsmsg {
    int type; /* enum gw_wsmsg_type */
    /* set */
    int status;                           /* PRESENCE_ONLINE / _AWAY / _BUSY, or -1 when absent */
    int message_op;                       /* enum gw_wsmsg_message_op */
    char message[PROTO_MESSAGE_MAX + 1];  /* GW_WSMSG_MESSAGE_SET: the text, NUL-terminated */
    uint32_t message_len;
    uint32_t message_ttl;                 /* seconds, 1..604800; 0 when absent */
    /* watch, unwatch */
    proto_str_t *users; /* distinct valid user ids in the order first given; borrowed from the
                           message (see gw_wsmsg_parse); NULL for other types */
    uint32_t nusers;
    bool has_since; /* watch: since was given */
    uint64_t since; /* watch: resume after this version, 0..2^62-1 */
    void *priv;     /* private: what users[] points into */
} gw_wsmsg_t;

/* Parse one client text message text[0..len) (not NUL-terminated; any bytes).
 * Returns 0 with *out filled (the caller then calls gw_wsmsg_fini(out)), or -1 with a text naming
 * the rule in err[0..errlen) (GW_WSMSG_ERR_LEN is enough; the caller sends it in an `error`
 * message) and *out left with nothing to free (gw_wsmsg_fini is still safe).
 * The rules, in the order they are checked: len <= max_len; one JSON object (no duplicate keys,
 * nothing after it); "type" a string naming a known type; then per type:
 * - set: at least one of status (online|away|busy, case-sensitive), message (a string of at most
 *   256 bytes of UTF-8 without control characters, or null / "" to clear), message_ttl (integer
 *   seconds 1..604800, an integral JSON real like 60.0 included, and only with a non-empty message);
 * - watch: users (a non-empty array of strings, each a valid user id per gw_valid_user_id,
 *   duplicates collapse, at most max_users distinct), since? (an integer 0..2^62-1);
 * - unwatch: users, as for watch;
 * - activity, ping: nothing more.
 * users[i].p points into memory owned by *out (valid until gw_wsmsg_fini); ids are not
 * NUL-terminated. Memory: the JSON tree of at most max_len bytes of text, and the users array of
 * at most max_users entries. */
int gw_wsmsg_parse(const char *text, size_t len, const gw_wsmsg_limits_t *lim, gw_wsmsg_t *out, char *err,
                   size_t errlen);
/* Free what a parsed message holds; safe on a message whose parse failed, and twice. */
void gw_wsmsg_fini(gw_wsmsg_t *m);

/* The name of a message type ("set", ...), "unknown" out of range. */
const char *gw_wsmsg_type_name(int type);

/* Server messages, appended to b. Ids are from the safe id alphabet; `record` is one record's JSON
 * exactly as the caller rendered it (gw_json_record or a session-aware view) and is copied as is. */
void gw_wsmsg_welcome(gw_buf_t *b, const char *session_id, size_t sid_len, const char *user_id, size_t uid_len,
                      const char *record, size_t record_len, uint64_t ping_interval_ms, uint64_t grace_ms);
void gw_wsmsg_presence(gw_buf_t *b, const char *record, size_t record_len);
void gw_wsmsg_pong(gw_buf_t *b);
/* {"type":"error","error":"<msg>"}; ill-formed UTF-8 in msg becomes U+FFFD so the output is JSON. */
void gw_wsmsg_error(gw_buf_t *b, const char *msg);

#endif
