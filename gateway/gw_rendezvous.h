/* gw_rendezvous.h -- which cache-node owns a key: rendezvous (highest random weight) hashing.
 *
 * Part of the gateway's upstream layer (gw_upstream.c routes every call with it), kept pure and
 * apart so unit tests call it without h2o or ZeroMQ. Every gateway and every thread agrees on a
 * key's owner without talking to the others: a node's seed is a hash of its endpoint, and a node
 * that leaves moves only its own keys. Reentrant.
 */
#ifndef PRESENCE_GW_RENDEZVOUS_H
#define PRESENCE_GW_RENDEZVOUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The node (an index below n) with up[i] true whose seed scores highest for key; -1 if none is up. */
int gw_rendezvous(const char *key, size_t klen, const uint64_t *node_seeds, const bool *up, int n);

#endif
