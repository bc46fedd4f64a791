/* gw_rendezvous.c -- rendezvous hashing of keys over the cache-nodes (see gw_rendezvous.h).
 *
 * A key's score at a node is a mix of the key's hash with the node's seed; the highest score among
 * the nodes that are up wins. No state, no allocation; reentrant.
 */
#include "gw_rendezvous.h"
#include "util.h"

int gw_rendezvous(const char *key, size_t klen, const uint64_t *node_seeds, const bool *up, int n)
{
    uint64_t h = util_hash64(key, klen, 0x4e0de), best = 0;
    int pick = -1;
    for (int i = 0; i < n; i++) {
        if (!up[i])
            continue;
        uint64_t score = util_mix64(h ^ node_seeds[i]);
        if (pick < 0 || score > best) {
            best = score;
            pick = i;
        }
    }
    return pick;
}
