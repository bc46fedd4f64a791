/* leader.h -- following the leader of a replicated center from a client (a cache-node's link, a
 * relay's link, a sync client): which of the store endpoints commands go to.
 *
 * A replicated center (STORE_REPLICAS, docs/REPLICATION.md) is N store-nodes; one leads. A client
 * is configured with every member's endpoint, comma-separated, in member order (member i is the
 * i-th entry), and learns the leader from what the members say: a heartbeat names its member, a
 * follower answers ENOTLEADER naming the leader, a PONG says whether its member leads. Silence
 * (a request that timed out, a send that failed) makes the client try the next member. With one
 * endpoint nothing of this happens: a single store is always "the leader".
 *
 * Pure data and functions (no sockets): the owner moves its sockets when leader_hint/leader_next
 * say the leader changed. One owner thread; not thread-safe.
 */
#ifndef PRESENCE_LEADER_H
#define PRESENCE_LEADER_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LEADER_EP_MAX 600 /* one endpoint's text, NUL included */

typedef struct leader {
    unsigned n;                                 /* endpoints (1..PROTO_MEMBERS_MAX) */
    char ep[PROTO_MEMBERS_MAX][LEADER_EP_MAX];  /* member i+1's endpoint */
    unsigned cur;                               /* index commands go to */
    uint64_t term;                              /* highest term a leading member announced (0: none) */
    uint64_t switches;                          /* times cur changed */
} leader_t;

/* Parse a comma-separated list of 1..PROTO_MEMBERS_MAX endpoints (none empty, each shorter than
 * LEADER_EP_MAX) into l (cur = 0). `what` names the setting in err. Returns 0, or -1 with err
 * (CFG_ERR_LEN). */
int leader_parse(leader_t *l, const char *list, const char *what, char *err);
/* Member `member` (1..n) leads, per something it or another member said; term 0 when unknown.
 * A hint with a term below the highest one seen is stale and ignored; member 0 or out of range is
 * ignored. Returns true when cur changed. */
bool leader_hint(leader_t *l, uint64_t member, uint64_t term);
/* The current member did not answer: try the next one. Returns true when cur changed (n > 1). */
bool leader_next(leader_t *l);
/* The endpoint commands go to now (borrowed). */
const char *leader_endpoint(const leader_t *l);
/* Whether there is more than one member to follow. */
static inline bool leader_replicated(const leader_t *l)
{
    return l->n > 1;
}

#endif
