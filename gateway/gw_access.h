/* gw_access.h -- the access log's line (ACCESS_LOG=true): one JSON object per answered request.
 *
 *   {"ts":"2026-01-15T10:30:00.123456Z","level":"info","proc":"gw","pid":7,"msg":"access",
 *    "method":"PUT","route":"presence.user","target":"/api/v2/presence/alice","code":200,
 *    "ms":0.412,"bytes":301,"client":"10.0.0.7","sub":"alice","user_id":"alice"}
 *
 * Never a token: no header is logged, and the value of every query parameter whose name contains
 * "token" (any case, percent-decoded: access_token=, ?Access%5FToken=) is replaced by "REDACTED".
 * The target is the request target as received, with any byte outside printable ASCII (and '"',
 * '\') percent-encoded and at most GW_ACCESS_TARGET_MAX bytes kept, so a line is always valid JSON
 * of bounded size whatever a client sends.
 *
 * Pure functions on caller data (the h2o glue is gw_reply.c's): reentrant, any thread.
 */
#ifndef PRESENCE_GW_ACCESS_H
#define PRESENCE_GW_ACCESS_H

#include "gw_lib.h"

#include <stddef.h>
#include <stdint.h>

#define GW_ACCESS_TARGET_MAX 1024 /* bytes of the target kept (then "...") */

typedef struct gw_access {
    uint64_t ts_us;           /* when the answer was given (wall clock) */
    const char *proc;         /* the log's component, "gw" */
    int pid;
    const char *method;       /* as received (sanitised like the target, at most 16 bytes) */
    size_t method_len;
    const char *route;        /* the route's metric label */
    const char *target;       /* the request target, query included, as received */
    size_t target_len;
    int code;
    uint64_t dur_us;
    uint64_t bytes;           /* response body bytes (0 for a stream: counted when it starts) */
    const char *client;       /* address after the TRUST_PROXY rule */
    const char *sub;          /* the token's subject; NULL for an anonymous request */
    size_t sub_len;
    const char *user_id;      /* the path's {id}; NULL when none */
    size_t uid_len;
} gw_access_t;

/* Append the line (with its '\n') to b. */
void gw_access_line(gw_buf_t *b, const gw_access_t *a);

/* The target as logged into out (at most outlen - 1 bytes and a NUL; outlen >= 16): sanitised,
 * token parameters redacted, truncated with "...". Returns the length. */
size_t gw_access_target(const char *t, size_t n, char *out, size_t outlen);

#endif
