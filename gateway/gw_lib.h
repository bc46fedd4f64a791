/* gw_lib.h -- the gateway's pure logic, kept apart from h2o so unit tests call it directly:
 * JSON rendering of records and envelopes, request-body parsing and validation, JWT checks,
 * CORS decisions, rate limiting, path parsing.
 *
 * Nothing here does I/O. The rate limiter is thread-safe (striped locks); everything else works
 * on caller-owned data and is reentrant.
 */
#ifndef PRESENCE_GW_LIB_H
#define PRESENCE_GW_LIB_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ==== a growable output buffer ============================================================== */

typedef struct gw_buf {
    char *p;
    size_t len, cap;
} gw_buf_t;

void gw_buf_init(gw_buf_t *b);
void gw_buf_free(gw_buf_t *b);
void gw_buf_reset(gw_buf_t *b);
void gw_buf_add(gw_buf_t *b, const void *s, size_t n);
void gw_buf_adds(gw_buf_t *b, const char *s);
void gw_buf_addf(gw_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gw_buf_add_u64(gw_buf_t *b, uint64_t v);
/* A JSON string literal with quotes; the input must be valid UTF-8 (we validate on the way in). */
void gw_buf_add_jstr(gw_buf_t *b, const char *s, size_t n);

/* ==== JSON output =========================================================================== */

/* Who reads: the token's subject and whether it is an admin (presence:admin). A user and admins
 * see the user's own view of the record; everyone else the public view (invisible mode applied,
 * proto_record_public). */
typedef struct gw_viewer {
    const char *sub; /* NULL or "": anonymous */
    size_t sub_len;
    bool admin;
} gw_viewer_t;

/* True when viewer v (NULL = anonymous) sees user uid's own view. */
bool gw_viewer_is_private(const gw_viewer_t *v, const char *uid, size_t len);

/* One record as API.md orders it (docs/API.md "Record"): the 2.0 fields, then sessions, source,
 * preferred_until and message_expires_at for users of sessions. A record whose status is not
 * offline but whose expires_at has passed at `now_us` is shown offline without a message (the
 * store will make that durable). gw_json_record renders the public view (the safe default);
 * gw_json_record_as the user's own when private_view. */
void gw_json_record(gw_buf_t *b, const proto_record_t *r, uint64_t now_us);
void gw_json_record_as(gw_buf_t *b, const proto_record_t *r, uint64_t now_us, bool private_view);
/* {"success":true,"data":{"<id>":<record>,...}}, each record in the view viewer v may see (NULL =
 * anonymous: all public). */
void gw_json_envelope(gw_buf_t *b, const proto_record_t *recs, uint32_t n, uint64_t now_us);
void gw_json_envelope_as(gw_buf_t *b, const proto_record_t *recs, uint32_t n, uint64_t now_us, const gw_viewer_t *v);
/* A user's live sessions (REALTIME.md, GET /api/v2/presence/{id}/sessions):
 * {"success":true,"data":{"<id>":[{"session_id","device","status","connected_at","last_seen",
 * "expires_at","node_id"},...]}} in the order given. Sessions past expires_at at now_us are left
 * out (the store ends them moments later). */
void gw_json_sessions(gw_buf_t *b, const char *uid, size_t uid_len, const proto_session_t *s, uint32_t n,
                      uint64_t now_us);
/* {"success":false,"error":"<msg>"} */
void gw_json_error(gw_buf_t *b, const char *msg);

/* ==== input validation ====================================================================== */

#define GW_BODY_MAX (64u << 10)

/* Error texts: the short code clients already match on ("invalid ttl"), then the rule. */
#define GW_USER_ID_RULE "user ids are 1-128 bytes of A-Z a-z 0-9 . _ ~ @ : = + -, not batch, watch, connect, . or .."
#define GW_ERR_USER_ID "invalid user_id: " GW_USER_ID_RULE
#define GW_ERR_STATUS "invalid status: must be one of online, away, busy, offline"
#define GW_ERR_MESSAGE_TYPE "invalid message: must be a string"
#define GW_ERR_MESSAGE_LEN "invalid message: message is longer than 256 bytes"
#define GW_ERR_MESSAGE_TEXT "invalid message: must be UTF-8 text without control characters"
#define GW_ERR_TTL "invalid ttl: ttl must be an integer from 1 to 604800 (seconds)"
#define GW_ERR_JSON "invalid JSON: the body must be one JSON object"
#define GW_ERR_BATCH_SHAPE                                                                                             \
    "the body holds exactly one of user_ids (a batch read), presences (a batch write) or heartbeats (bulk heartbeats)"
#define GW_ERR_SESSION "invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -"
#define GW_ERR_DEVICE "invalid device: at most 64 bytes of UTF-8 text without control characters"
#define GW_ERR_DEVICE_NO_SESSION "invalid device: a device names a session (give session too)"
#define GW_ERR_MESSAGE_TTL "invalid message_ttl: message_ttl must be an integer from 1 to 604800 (seconds)"
#define GW_ERR_MESSAGE_TTL_ALONE "invalid message_ttl: message_ttl needs a non-empty message"
#define GW_ERR_SESSION_NOT_FOUND "session not found: the user has no live session with that id"
#define GW_ERR_LEN 400 /* room for any of the texts above with a quoted id */

/* A user id the API accepts: util_valid_user_id, and not one of the words reserved for routes
 * ("batch", "watch", "connect": /api/v2/presence/{batch,watch,connect} are routes, never records)
 * nor "." or ".." (unreachable through clients that normalise paths). */
bool gw_valid_user_id(const char *s, size_t len);

/* Decode %XX once into out (size >= len+1). Returns the decoded length, or -1 on a bad escape. */
ssize_t gw_pct_decode(const char *s, size_t len, char *out);

/* A PUT/POST body for one record: {status, message?, ttl?, message_ttl?, session?, device?}
 * (REALTIME.md). default_ttl applies when ttl is absent. Fills out's status, message, ttl_s, and the
 * command inputs: session_id, device, message_ttl_s, cflags (PROTO_CMD_F_MSG when the message is to
 * be set: always without a session, with one only when the body has "message"). Returns 0, or -1
 * with *err set to the API's error text ("invalid JSON: ...", "invalid status: ...", ...). */
int gw_parse_set_body(const char *body, size_t len, uint32_t default_ttl, proto_record_t *out, const char **err);

/* A heartbeat body: empty, or {ttl?, session?, device?}: out->ttl_s (0 when absent: keep the
 * record's or the session's), out->session_id / device (empty when absent). Returns 0, or -1 with
 * *err set. */
int gw_parse_heartbeat(const char *body, size_t len, proto_record_t *out, const char **err);
/* The same, ttl only (no sessions): *ttl = 0 when absent. */
int gw_parse_heartbeat_body(const char *body, size_t len, uint32_t *ttl, const char **err);

/* A batch body. Exactly one of user_ids (a read), presences (a write) or heartbeats (a bulk
 * heartbeat, optional top-level "ttl") must be present.
 * For a read, ids[] are filled (duplicates and empty items dropped) into caller storage of `max`.
 * For a write, recs[] are filled (validated; user_id from each entry).
 * For heartbeats, recs[] get user_id and ttl_s (0 = keep each record's ttl); duplicates collapse.
 * Returns GW_BATCH_READ, GW_BATCH_WRITE or GW_BATCH_HEARTBEAT, or -1 with the error text (naming
 * a bad id where relevant) in errbuf. */
#define GW_BATCH_READ 1
#define GW_BATCH_WRITE 2
#define GW_BATCH_HEARTBEAT 3
int gw_parse_batch_body(const char *body, size_t len, uint32_t max, uint32_t default_ttl, proto_str_t *ids,
                        char *idstore, proto_record_t *recs, uint32_t *n, char *errbuf, size_t errlen);

/* The users= list of a query string: split on ',', trim spaces, skip empty items, collapse
 * duplicates, percent-decode each item once. idstore must hold len bytes. Returns the count,
 * or -1 with errbuf set ("too many user ids", "invalid user_id: <id>", "users parameter is
 * required"). */
int gw_parse_users(const char *query, size_t qlen, uint32_t max, proto_str_t *ids, char *idstore, char *errbuf,
                   size_t errlen);

/* Find a query parameter's raw value. Returns true and sets *v / *vlen. */
bool gw_query_param(const char *query, size_t qlen, const char *name, const char **v, size_t *vlen);

/* ==== JWT =================================================================================== */

typedef struct gw_auth {
    unsigned char *secret;
    size_t secret_len;
    char issuer[128];
    int alg;           /* jwt_alg_t of the configured algorithm (HS256 by default) */
    int64_t leeway_s;  /* 60 */
} gw_auth_t;

typedef struct gw_claims {
    char sub[256];
    size_t sub_len;
    bool admin; /* scope contains presence:admin */
    int64_t exp;
} gw_claims_t;

/* Verify an Authorization header value ("Bearer <token>"). Returns 0 and fills *c, or -1 with
 * *err set to a short reason for the 401 body. A NULL/empty header gives "missing authorization
 * header". Never accepts alg none or an algorithm other than a->alg; exp is required. */
int gw_auth_verify(const gw_auth_t *a, const char *hdr, size_t hdrlen, int64_t now_s, gw_claims_t *c,
                   const char **err);
/* A cache of verified tokens, one per event-loop thread (not thread-safe). A hit requires the
 * exact token bytes (not just a hash: a forged token must never borrow a verified one's claims);
 * exp is re-checked on every hit. `slots` is rounded up to a power of two. */
typedef struct gw_authcache gw_authcache_t;
gw_authcache_t *gw_authcache_new(size_t slots);
void gw_authcache_free(gw_authcache_t *c);
/* gw_auth_verify through the cache. */
int gw_auth_verify_cached(gw_authcache_t *c, const gw_auth_t *a, const char *hdr, size_t hdrlen, int64_t now_s,
                          gw_claims_t *claims, const char **err);
uint64_t gw_authcache_hits(const gw_authcache_t *c);

/* Sign a token (make token, tests). Caller frees the result with free(). NULL on error. */
char *gw_auth_sign(const unsigned char *secret, size_t secret_len, int alg, const char *issuer, const char *sub,
                   const char *scope, int64_t iat, int64_t exp);

/* ==== CORS ================================================================================== */

typedef struct gw_cors {
    bool enabled;
    bool wildcard; /* the origin list is exactly "*" */
    bool credentials;
    char **origins;
    size_t norigins;
    char methods[256], headers[256];
    long max_age;
} gw_cors_t;

enum gw_cors_verdict { GW_CORS_NONE = 0, GW_CORS_ALLOW, GW_CORS_FORBID };

/* Parse the CORS_* environment. Returns 0 or -1 with err (names the variable). */
int gw_cors_config(gw_cors_t *c, char *err);
void gw_cors_free(gw_cors_t *c);
/* Decide for a request with this Origin (NULL = none). With ALLOW, *allow_origin is what to echo
 * ("*" or the origin). */
int gw_cors_check(const gw_cors_t *c, const char *origin, size_t olen, const char **allow_origin,
                  size_t *allow_len);

/* ==== rate limiting ========================================================================= */

typedef struct gw_ratelimit gw_ratelimit_t;

/* A token-bucket table: `rate` tokens per second, at most `burst`, for keys hashed into a bounded
 * table (`slots`, rounded up to a power of two; an idle key's bucket is recycled when the table
 * is full). rate == 0 disables limiting. */
gw_ratelimit_t *gw_ratelimit_new(double rate, double burst, size_t slots);
void gw_ratelimit_free(gw_ratelimit_t *rl);
/* Take `cost` tokens for key at monotonic time now_us. Returns 0 when allowed, else the number of
 * whole seconds to wait (>= 1) for Retry-After. */
unsigned gw_ratelimit_take(gw_ratelimit_t *rl, const void *key, size_t klen, double cost, uint64_t now_us);
/* The table's burst (the most one take can ever be granted). */
double gw_ratelimit_burst(const gw_ratelimit_t *rl);

#endif
