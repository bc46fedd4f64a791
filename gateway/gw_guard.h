/* gw_guard.h -- who may ask: the checks a route's row asks for, run once, before its handler.
 *
 * A route (gw_routes.c) names a rule: how the caller must authenticate, which rate limit it is
 * charged, and what the request target must carry. gw_guard_admit runs the rule in this order,
 * each step answering on failure (so the status a request gets does not depend on the route):
 *
 *   1. {id}       the path's user id, percent-decoded once and validated        400
 *   2. auth       the token (Authorization: Bearer, or ?access_token= when the
 *                 row allows it) as the rule requires                             401
 *   3. body cap   a body above GW_BODY_MAX                                        413
 *   4. authz      SELF: the token's subject is {id}, or it has presence:admin     403
 *   5. users=     the query's user list, split, decoded, validated               400
 *   6. limit      one token from the rule's rate-limit class                      429
 *
 * A rule whose auth or limit depends on the body (a batch: a read or a write) is finished by its
 * handler with gw_guard_require_token / gw_guard_may_write / gw_guard_limit.
 *
 * What the guard learnt is left in the request's gw_rctx_t (uid, claims, ids) for the handler.
 * Runs on the request's thread; the rate-limit tables are shared and thread-safe.
 */
#ifndef PRESENCE_GW_GUARD_H
#define PRESENCE_GW_GUARD_H

#include "gw_ctx.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

/* How the caller must authenticate. */
enum gw_auth_rule {
    GW_AUTH_NONE = 0,    /* no token looked at (health, metrics) */
    GW_AUTH_READ,        /* public unless AUTH_READS=required; a bad token on a public read is ignored */
    GW_AUTH_TOKEN,       /* any valid token */
    GW_AUTH_SELF,        /* a token for the path's {id}, or a presence:admin token */
    GW_AUTH_SELF_WRITES, /* GET/HEAD as READ; other methods as SELF */
    GW_AUTH_BODY,        /* READ first; the handler requires more when the body is a write */
};

/* Which rate limit a request is charged (one token; RATE_LIMIT_*; per subject, else per client). */
enum gw_limit_class {
    GW_LIMIT_NONE = 0,
    GW_LIMIT_READ,
    GW_LIMIT_WRITE,  /* presence:admin tokens: their own bucket (RATE_LIMIT_ADMIN_WRITES) */
    GW_LIMIT_METHOD, /* GET/HEAD as READ, other methods as WRITE */
    GW_LIMIT_BODY,   /* charged by the handler (a batch: one token per record) */
};

#define GW_RF_BODY_CAP 0x1u    /* a body above GW_BODY_MAX is answered 413 */
#define GW_RF_USERS 0x2u       /* the users= list is required and parsed into rc->ids */
#define GW_RF_QUERY_TOKEN 0x4u /* a token may come as ?access_token= (RFC 6750 2.3: WebSocket clients
                                  cannot set headers); never logged */

typedef struct gw_guard_rule {
    uint8_t auth;  /* enum gw_auth_rule */
    uint8_t limit; /* enum gw_limit_class */
    uint8_t flags; /* GW_RF_* */
} gw_guard_rule_t;

/* Run rule for req (rc->method, rc->seg_id, rc->query set by the router). Returns 0 when the
 * handler may run, -1 after answering the request. */
int gw_guard_admit(h2o_req_t *req, gw_rctx_t *rc, const gw_guard_rule_t *rule);

/* A token is required now (a batch write): 0 if the request has one, else -1 after answering 401. */
int gw_guard_require_token(h2o_req_t *req, gw_rctx_t *rc);
/* The request's token may write uid's record: its subject, or presence:admin. */
bool gw_guard_may_write(const gw_rctx_t *rc, const char *uid, size_t len);
/* Answer 403 naming the rule (a token writes its own subject's record; admin writes anyone's). */
void gw_guard_forbidden(h2o_req_t *req, gw_rctx_t *rc);
/* Charge cost tokens (a legal batch larger than the burst is charged the burst: delayed, never
 * refused forever) of the read or write limit. 0, or -1 after answering 429. */
int gw_guard_limit(h2o_req_t *req, gw_rctx_t *rc, bool write, double cost);
#ifndef GW_CLIENTADDR_LEN
#define GW_CLIENTADDR_LEN 48 /* an address as text (INET6_ADDRSTRLEN) with its NUL */
#endif
/* The client's address as text into out (GW_CLIENTADDR_LEN bytes; "?" when unknown): the peer,
 * or with TRUST_PROXY the first X-Forwarded-For hop (when it is an address). What rate limits
 * and the access log key on. Returns its length. */
size_t gw_guard_client_addr(h2o_req_t *req, char *out);

#endif
