/* gw_upstream.h -- a gateway thread's calls to the cache tier: one DEALER per cache-node, inside
 * the thread's h2o event loop (gateway/gw_upstream.c explains it).
 *
 * A call: gw_upstream_rid gives a request id, the caller encodes its command with it, and
 * gw_upstream_send registers the call, queues the command for the node and arms the deadline
 * (REQUEST_TIMEOUT_MS; pings a second at most). The callback runs exactly once: with the reply, or
 * with m == NULL and PROTO_ETIMEOUT / PROTO_EUNAVAIL. The HTTP request may have gone away
 * meanwhile: call->req is then NULL and the callback must not touch anything allocated from that
 * request's pool. Commands queued during one loop turn leave together, one BATCH frame per node.
 *
 * Routing: a key's owner is chosen by rendezvous hashing over the nodes that are up
 * (gw_rendezvous.h), so every gateway and thread agrees without coordination.
 *
 * One upstream per event-loop thread; none of these calls is thread-safe (gw_upstream_configured
 * excepted).
 */
#ifndef PRESENCE_GW_UPSTREAM_H
#define PRESENCE_GW_UPSTREAM_H

#include "gw_config.h"
#include "idtab.h"
#include "proto.h"

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_upstream gw_upstream_t;
typedef struct gw_call gw_call_t;
typedef void (*gw_call_cb)(gw_call_t *call, const proto_msg_t *m, int status);

/* A call in flight. A callback may read req, arg, node and start_us; the rest is the upstream's. */
struct gw_call {
    idtab_link_t link;  /* by request id */
    gw_upstream_t *up;
    int node;           /* the cache-node it was sent to (its slot) */
    uint8_t type;       /* command type (reads may be re-sent to another node) */
    h2o_req_t *req;     /* NULL once the HTTP request was disposed */
    gw_call_t **token;  /* pool-owned back pointer (gw_upstream.c) */
    h2o_timeout_entry_t te;
    gw_call_cb cb;
    void *arg;
    char *msg;          /* encoded command, kept for re-sending */
    size_t msg_len;
    bool sent;          /* left this process (else it is in the node's pending batch) */
    uint64_t start_us;
};

/* Connect to every configured cache-node (or, with CACHE_DNS, to what discovery found) from the
 * loop of h2o (thread_idx names the thread in socket names). on_answer(arg) runs whenever a node
 * answers (the thread's readiness: gw_thread.c). Returns NULL with err (256 bytes) on failure. */
gw_upstream_t *gw_upstream_new(h2o_context_t *h2o, int thread_idx, void *zctx, void (*on_answer)(void *arg), void *arg,
                               char *err);
/* Answer every call still out (PROTO_EUNAVAIL), close the sockets, free. NULL-safe; sets *up NULL. */
void gw_upstream_destroy(gw_upstream_t **up);

/* A fresh request id for a command to encode. */
uint64_t gw_upstream_rid(gw_upstream_t *up);
/* The node that owns key (rendezvous over the nodes that are up), -1 if none is up. */
int gw_upstream_route(gw_upstream_t *up, const char *key, size_t klen);
/* Any node that is up, preferring one other than `avoid`; -1 if none. */
int gw_upstream_any(gw_upstream_t *up, int avoid);
/* How many nodes are up. */
int gw_upstream_up_count(const gw_upstream_t *up);
/* Node slot i's endpoint; "" for a vacant slot (CACHE_DNS). Borrowed: valid until the slot changes. */
const char *gw_upstream_endpoint(const gw_upstream_t *up, int i);
/* Queue the encoded command b (its request id from gw_upstream_rid; copied) for `node` and
 * register the call. If the turn's send fails the node is marked down and its unsent calls go to
 * another node (or fail with PROTO_EUNAVAIL when none is up). req: the HTTP request the call serves
 * (NULL for the gateway's own pings). Returns the call, or NULL when `node` is no node (a vacant
 * slot, or out of range): then cb never runs. */
gw_call_t *gw_upstream_send(gw_upstream_t *up, h2o_req_t *req, int node, uint64_t rid, uint8_t type,
                            const proto_buf_t *b, gw_call_cb cb, void *arg);

/* Optional: fn(arg, type, key, m) runs with every reply to a write (PUT, TOUCH, DEL), before the
 * caller's callback -- the near cache learns this thread's acknowledged writes there
 * (gw_nearcall.c). key: for a DEL, the user it was about (its reply names none; borrowed for the
 * call); NULL for PUT and TOUCH, whose replies carry their records. NULL fn: none. */
typedef void (*gw_write_hook_fn)(void *arg, uint8_t type, const proto_str_t *key, const proto_msg_t *m);
void gw_upstream_on_write(gw_upstream_t *up, gw_write_hook_fn fn, void *arg);

/* The moment this gateway stops waiting for a call made now (wall clock, us: the cache-node may be
 * another host). Writes carry it: a cache-node that only gets to one later -- it was stopped or
 * starved, and the client already has its 504 -- drops it rather than let it land after the
 * client's next write (which went to another node once this one was marked down) and undo that
 * acknowledged write. */
uint64_t gw_upstream_deadline(void);

/* The cache-nodes this gateway is configured with now: CACHE_ENDPOINTS, or the addresses CACHE_DNS
 * resolved to. Any thread. */
int gw_upstream_configured(void);

#endif
